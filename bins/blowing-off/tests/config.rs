//! Where settings come from (docs/CLIENT.md, "Configuration"): `.blowing-off.json` in the
//! current directory, else `<config dir>/blowing-off/config.json`; `--config` overrides
//! the place; environment variables override the file; flags override both. The local
//! database defaults to the user's data directory. Every run here has its own HOME,
//! XDG_CONFIG_HOME and XDG_DATA_HOME under a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod support;

use serde_json::{json, Value};
use support::{isolate, start_server, PASSWORD};

/// A user with a home directory of their own, and a working directory in it.
struct User {
    home: PathBuf,
}

impl User {
    fn new(root: &Path) -> User {
        let home = root.join("home");
        std::fs::create_dir_all(home.join("work")).unwrap();
        User { home }
    }

    fn config_file(&self) -> PathBuf {
        self.home.join("config/blowing-off/config.json")
    }

    fn data_db(&self) -> PathBuf {
        self.home.join("data/blowing-off/blowing-off.db")
    }

    fn work(&self) -> PathBuf {
        self.home.join("work")
    }

    /// `blowing-off ARGS…` run in `cwd`, no retries.
    fn cmd(&self, cwd: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_blowing-off"));
        isolate(&mut c, &self.home);
        c.current_dir(cwd)
            .args(args)
            .env("BLOWING_OFF_RETRIES", "0")
            .stdin(std::process::Stdio::null());
        c
    }

    fn status(&self, c: &mut Command) -> Value {
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", err(&out));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }
}

fn err(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn canon(p: &str) -> PathBuf {
    Path::new(p)
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(p))
}

#[test]
fn the_database_defaults_to_the_data_directory_not_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let u = User::new(dir.path());
    let s = u.status(&mut u.cmd(&u.work(), &["--json", "status", "--offline"]));
    assert_eq!(
        canon(s["db_path"].as_str().unwrap()),
        canon(u.data_db().to_str().unwrap())
    );
    assert!(u.data_db().exists());
    assert_eq!(
        std::fs::read_dir(u.work()).unwrap().count(),
        0,
        "the cwd was written to"
    );
}

#[test]
fn connect_writes_the_user_file_and_later_runs_anywhere_use_it() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let u = User::new(dir.path());
    let out = u
        .cmd(
            &u.work(),
            &[
                "connect",
                "--server-url",
                &url,
                "--password",
                PASSWORD,
                "--client-id",
                "tablet-1",
            ],
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
    let file: Value = serde_json::from_slice(&std::fs::read(u.config_file()).unwrap()).unwrap();
    assert_eq!(file["server_url"], url.as_str());
    assert_eq!(file["client_id"], "tablet-1");
    assert!(file["auth_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        canon(file["db_path"].as_str().unwrap()),
        canon(u.data_db().to_str().unwrap())
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(u.config_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the file holding the token is readable by others"
        );
    }
    // From another directory, with no flags: the same client, connected.
    let elsewhere = u.home.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let s = u.status(&mut u.cmd(&elsewhere, &["--json", "status"]));
    assert_eq!(s["server_url"], url.as_str());
    assert_eq!(s["client_id"], "tablet-1");
    assert_eq!(s["token"], "valid");
    let out = u.cmd(&elsewhere, &["sync"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", err(&out));
}

#[test]
fn precedence_is_flag_then_environment_then_file() {
    let dir = tempfile::tempdir().unwrap();
    let u = User::new(dir.path());
    // A user file, and a project file in the working directory that wins over it.
    std::fs::create_dir_all(u.config_file().parent().unwrap()).unwrap();
    std::fs::write(
        u.config_file(),
        json!({"server_url": "http://127.0.0.1:1", "db_path": "user.db"}).to_string(),
    )
    .unwrap();
    std::fs::write(
        u.work().join(".blowing-off.json"),
        json!({"server_url": "http://127.0.0.1:2", "db_path": "project.db", "client_id": "project-client"}).to_string(),
    )
    .unwrap();
    let status = |c: &mut Command| u.status(c.args(["--json", "status", "--offline"]));

    // The project file (in the working directory), its db_path relative to it.
    let s = status(&mut u.cmd(&u.work(), &[]));
    assert_eq!(s["server_url"], "http://127.0.0.1:2");
    assert_eq!(s["client_id"], "project-client");
    assert_eq!(
        canon(s["db_path"].as_str().unwrap()),
        canon(u.work().join("project.db").to_str().unwrap())
    );

    // Elsewhere: the user file; its db_path relative to the file.
    let s = status(&mut u.cmd(&u.home, &[]));
    assert_eq!(s["server_url"], "http://127.0.0.1:1");
    assert!(s["db_path"].as_str().unwrap().ends_with("user.db"), "{s}");

    // --config names another file.
    let other = u.home.join("other.json");
    std::fs::write(
        &other,
        json!({"server_url": "http://127.0.0.1:3", "db_path": "other.db"}).to_string(),
    )
    .unwrap();
    let s = status(&mut u.cmd(&u.work(), &["--config", other.to_str().unwrap()]));
    assert_eq!(s["server_url"], "http://127.0.0.1:3");
    assert!(s["db_path"].as_str().unwrap().ends_with("other.db"), "{s}");

    // The environment overrides the file…
    let s = status(
        u.cmd(&u.work(), &[])
            .env("BLOWING_OFF_SERVER_URL", "http://127.0.0.1:4")
            .env("BLOWING_OFF_DB", u.home.join("env.db"))
            .env("BLOWING_OFF_CLIENT_ID", "env-client"),
    );
    assert_eq!(s["server_url"], "http://127.0.0.1:4");
    assert_eq!(s["client_id"], "env-client");
    assert!(s["db_path"].as_str().unwrap().ends_with("env.db"), "{s}");

    // …and flags override both.
    let s = status(
        u.cmd(
            &u.work(),
            &[
                "--server-url",
                "http://127.0.0.1:5",
                "--db",
                u.home.join("flag.db").to_str().unwrap(),
            ],
        )
        .env("BLOWING_OFF_SERVER_URL", "http://127.0.0.1:4")
        .env("BLOWING_OFF_DB", u.home.join("env.db")),
    );
    assert_eq!(s["server_url"], "http://127.0.0.1:5");
    assert!(s["db_path"].as_str().unwrap().ends_with("flag.db"), "{s}");
    // The file's client id belongs to the file's database: not applied to another one.
    assert_ne!(s["client_id"], "project-client");
}

#[test]
fn a_malformed_configuration_file_is_a_usage_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let u = User::new(dir.path());
    std::fs::write(u.work().join(".blowing-off.json"), "{not json").unwrap();
    let out = u.cmd(&u.work(), &["status", "--offline"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", err(&out));
    assert!(err(&out).contains(".blowing-off.json"), "{}", err(&out));
    // Under --json the error is JSON on stderr too.
    let out = u
        .cmd(&u.work(), &["--json", "status", "--offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e: Value = serde_json::from_slice(&out.stderr).expect("JSON error");
    assert_eq!(e["error"]["exit_code"], 2, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .contains(".blowing-off.json"));
}
