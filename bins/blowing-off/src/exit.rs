//! Exit codes, in one place, and how errors map to them.

use goodies_client::ClientError;

/// The process exit codes (documented in docs/CLIENT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: success.
    Ok = 0,
    /// 1: any other error.
    Error = 1,
    /// 2: bad usage (arguments clap accepted but the command cannot use).
    Usage = 2,
    /// 3: not connected, credentials refused, or the token expired.
    NotConnected = 3,
    /// 4: the server could not be reached.
    Unreachable = 4,
    /// 5: a sync ran but finished with errors (everything unsent stays queued).
    SyncErrors = 5,
    /// 141 (128 + SIGPIPE, what a shell shows for a command a closed pipe stopped):
    /// stdout or stderr was closed while the command wrote to it (`… | head -1`).
    ClosedPipe = 141,
}

/// Ends the process at once, silently, because stdout or stderr was closed (the reader
/// went away). Callable from any thread; nothing more is written.
pub fn closed_pipe() -> ! {
    std::process::exit(Exit::ClosedPipe as i32)
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}

/// An argument the command cannot use (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error as an `anyhow` error.
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// The exit code for an error: the first recognised error in its chain decides.
pub fn code_for(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        if cause.downcast_ref::<UsageError>().is_some() {
            return Exit::Usage;
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return match c {
                e if e.needs_login() => Exit::NotConnected,
                e if e.is_unreachable() => Exit::Unreachable,
                ClientError::Invalid(_) => Exit::Usage,
                _ => Exit::Error,
            };
        }
    }
    Exit::Error
}

/// Prints `error: <message>` and its causes to stderr (under `--json`, one JSON object:
/// `{"error": {"message", "causes", "exit_code"}}`); returns the exit code.
pub fn report(err: &anyhow::Error, json: bool) -> Exit {
    let code = code_for(err);
    if json {
        let causes: Vec<String> = err.chain().skip(1).map(|c| c.to_string()).collect();
        errln!(
            "{}",
            serde_json::json!({"error": {"message": err.to_string(), "causes": causes, "exit_code": code as u8}})
        );
        return code;
    }
    errln!("error: {err}");
    for cause in err.chain().skip(1) {
        errln!("  caused by: {cause}");
    }
    if code == Exit::NotConnected {
        errln!("hint: run `blowing-off connect --server-url URL` (it asks for the password) or `login`");
    }
    code
}
