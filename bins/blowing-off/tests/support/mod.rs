//! What the CLI tests share: a real server on its own thread, and the binary run as a
//! fresh process.

#![allow(dead_code, reason = "each test binary uses part of the support")]

use std::path::Path;
use std::process::{Command, Output};

use funkygibbon_mock::{serve_with_handle, ServerConfig};

/// The admin password of every test server.
pub const PASSWORD: &str = "cli-password";

/// The token secret of every test server.
pub const JWT_SECRET: &str = "cli-secret";

/// Runs a server (settings adjusted by `adjust`) on its own thread until the returned
/// sender is dropped; returns its URL.
pub fn start_server_with(
    dir: &Path,
    adjust: impl FnOnce(ServerConfig) -> ServerConfig + Send + 'static,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let db = format!("sqlite://{}", dir.join("server.db").display());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, is_ready) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let config = adjust(
                ServerConfig::new(db)
                    .with_admin_password(PASSWORD)
                    .with_jwt_secret(JWT_SECRET),
            );
            let _ = serve_with_handle(
                listener,
                config,
                async move {
                    let _ = stopped.await;
                },
                ready,
            )
            .await;
        });
    });
    is_ready.blocking_recv().expect("server ready");
    (url, stop)
}

/// Runs a server with the default settings (see [`start_server_with`]).
pub fn start_server(dir: &Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    start_server_with(dir, |c| c)
}

/// Every environment variable the binary reads its settings from.
pub const SETTINGS_ENV: [&str; 13] = [
    "BLOWING_OFF_DB",
    "BLOWING_OFF_CONFIG",
    "BLOWING_OFF_SERVER_URL",
    "BLOWING_OFF_AUTH_TOKEN",
    "BLOWING_OFF_CLIENT_ID",
    "BLOWING_OFF_PASSWORD",
    "BLOWING_OFF_RETRIES",
    "BLOWING_OFF_TIMEOUT",
    "BLOWING_OFF_CA_FILE",
    "BLOWING_OFF_PIN_SHA256",
    "BLOWING_OFF_SIGNING_KEY",
    "BLOWING_OFF_SIGNING_KEY_FILE",
    "RUST_LOG",
];

/// Gives the process its own home: HOME, XDG_CONFIG_HOME and XDG_DATA_HOME under
/// `home` (created), started in `home`, with none of the binary's settings inherited
/// from the environment running the tests.
pub fn isolate(cmd: &mut Command, home: &Path) {
    std::fs::create_dir_all(home).expect("home dir");
    for v in SETTINGS_ENV {
        cmd.env_remove(v);
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("NO_COLOR")
        .current_dir(home);
}

/// The home [`run`] gives the client of `db`: `<db>.home`, next to it.
pub fn home_of(db: &Path) -> std::path::PathBuf {
    let mut h = db.as_os_str().to_owned();
    h.push(".home");
    h.into()
}

/// `blowing-off --db DB ARGS…` without retries, in the client's own home ([`home_of`]).
pub fn command(db: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_blowing-off"));
    isolate(&mut cmd, &home_of(db));
    cmd.arg("--db")
        .arg(db)
        .args(args)
        .env("BLOWING_OFF_RETRIES", "0")
        .stdin(std::process::Stdio::null());
    cmd
}

/// Runs `blowing-off --db DB ARGS…` as a fresh process, without retries, in the
/// client's own home ([`home_of`]).
pub fn run(db: &Path, args: &[&str]) -> Output {
    command(db, args).output().expect("run blowing-off")
}

/// Runs `blowing-off --db DB ARGS…` ([`run`]), requires exit 0, returns stdout.
pub fn ok(db: &Path, args: &[&str]) -> String {
    let out = run(db, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `blowing-off connect` of the mirror `db` to the test server at `url` with the admin
/// password ([`ok`]).
pub fn connect(db: &Path, url: &str) -> String {
    ok(
        db,
        &["connect", "--server-url", url, "--password", PASSWORD],
    )
}

/// A test server in `dir` and two mirrors there (`a.db`, `b.db`), both connected to it:
/// `(url, stop, a, b)`; the server runs until `stop` is dropped.
pub fn two_clients(
    dir: &Path,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let (url, stop) = start_server(dir);
    let (a, b) = (dir.join("a.db"), dir.join("b.db"));
    connect(&a, &url);
    connect(&b, &url);
    (url, stop, a, b)
}

/// [`ok`] with `--json` first, its stdout read as JSON.
pub fn json(db: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(db, &all)).expect("JSON output")
}

/// The `id` field of a command's JSON output.
pub fn id(v: &serde_json::Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}
