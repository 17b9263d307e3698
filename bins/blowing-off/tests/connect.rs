//! `connect` checks the token (or logs in) against the real server and says so; `status`
//! reports a token that is expired or refused as such, and whether the server answered;
//! the password comes from a flag, an environment variable or a prompt, never required on
//! the command line; `disconnect` forgets the token and keeps pending changes.

use std::path::Path;
use std::process::Output;

mod support;

use funkygibbon_mock::{Claims, ADMIN_PERMISSIONS};
use serde_json::Value;
use support::{command, connect, run, start_server, PASSWORD};

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(db: &Path, args: &[&str]) -> String {
    let out = run(db, args);
    assert_eq!(
        code(&out),
        0,
        "{args:?}: {}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn status_json(db: &Path) -> Value {
    serde_json::from_str(&ok(db, &["--json", "status"])).expect("status JSON")
}

/// A token signed with the test server's secret, `exp` seconds from now (negative: in
/// the past).
fn token_expiring_in(secs: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = Claims {
        sub: "admin".into(),
        role: "admin".into(),
        permissions: ADMIN_PERMISSIONS.iter().map(|s| (*s).to_owned()).collect(),
        exp: now + secs,
        iat: now - 3600,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(support::JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// A loopback URL nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

#[test]
fn connect_verifies_a_token_and_status_says_it_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let db = dir.path().join("a.db");
    let token = token_expiring_in(3600);
    let said = ok(
        &db,
        &["connect", "--server-url", &url, "--auth-token", &token],
    );
    assert!(said.contains("token verified by the server"), "{said}");

    let s = status_json(&db);
    assert_eq!(s["token"], "valid", "{s}");
    assert_eq!(s["online"], true, "{s}");
    assert_eq!(s["logged_in"], true, "{s}");
    let text = ok(&db, &["status"]);
    assert!(
        text.contains("yes (token accepted by the server)"),
        "{text}"
    );
    assert!(text.contains("online"), "{text}");
    // The token is never shown.
    assert!(!text.contains(&token) && !s.to_string().contains(&token));
    let logs = run(&db, &["-vvv", "status"]);
    assert!(!stderr(&logs).contains(&token), "the token is in the log");
}

#[test]
fn connect_refuses_a_token_the_server_refuses_and_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let db = dir.path().join("a.db");
    let out = run(
        &db,
        &[
            "connect",
            "--server-url",
            &url,
            "--auth-token",
            "not-a-token",
        ],
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the server refused the token"),
        "{}",
        stderr(&out)
    );
    let s = status_json(&db);
    assert_eq!(s["token"], "none", "{s}");
    assert_eq!(s["logged_in"], false, "{s}");
    assert!(
        !support::home_of(&db)
            .join("config/blowing-off/config.json")
            .exists(),
        "a refused token was written to the configuration file"
    );
}

#[test]
fn an_expired_token_is_refused_by_connect_and_reported_expired_by_status() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let db = dir.path().join("a.db");
    let expired = token_expiring_in(-60);

    let out = run(
        &db,
        &["connect", "--server-url", &url, "--auth-token", &expired],
    );
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));

    // A token that expires while stored: connect accepts it, status later says expired.
    let short = token_expiring_in(3600);
    ok(
        &db,
        &["connect", "--server-url", &url, "--auth-token", &short],
    );
    let out = command(&db, &["--json", "status"])
        .env("BLOWING_OFF_AUTH_TOKEN", &expired)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["token"], "expired", "{s}");
    assert_eq!(s["online"], true, "{s}");
    assert_eq!(s["logged_in"], false, "{s}");
    let out = command(&db, &["status"])
        .env("BLOWING_OFF_AUTH_TOKEN", &expired)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(text.contains("no: the token has expired"), "{text}");
    assert!(!text.contains("| yes"), "{text}");

    // Offline, the expiry alone decides.
    let out = command(&db, &["--json", "status", "--offline"])
        .env("BLOWING_OFF_AUTH_TOKEN", &expired)
        .output()
        .unwrap();
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["token"], "expired", "{s}");
    assert_eq!(s["online"], Value::Null, "{s}");
}

#[test]
fn a_token_refused_later_is_reported_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_server(dir.path());
    let db = dir.path().join("a.db");
    connect(&db, &url);
    drop(stop);
    // Another server on the same database directory, with another secret: the stored
    // token no longer verifies.
    let other = tempfile::tempdir().unwrap();
    let (url2, _stop2) =
        support::start_server_with(other.path(), |c| c.with_jwt_secret("another-secret"));
    let out = command(&db, &["--json", "status"])
        .env("BLOWING_OFF_SERVER_URL", &url2)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["token"], "refused", "{s}");
    assert_eq!(s["logged_in"], false, "{s}");
}

#[test]
fn password_from_the_environment_and_never_required_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let db = dir.path().join("a.db");

    // No credentials and no terminal to ask on: a usage error, not a hang.
    let out = run(&db, &["connect", "--server-url", &url]);
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("BLOWING_OFF_PASSWORD"),
        "{}",
        stderr(&out)
    );

    let out = command(&db, &["connect", "--server-url", &url])
        .env("BLOWING_OFF_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stdout(&out).contains("token verified"), "{}", stdout(&out));

    // A wrong password: exit 3.
    let out = command(&db, &["login"])
        .env("BLOWING_OFF_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    let file = support::home_of(&db).join("config/blowing-off/config.json");
    let token_in_file = || -> Value {
        serde_json::from_slice::<Value>(&std::fs::read(&file).unwrap()).unwrap()["auth_token"]
            .clone()
    };
    let before = token_in_file();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let out = command(&db, &["login"])
        .env("BLOWING_OFF_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    // The new token replaces the old one in the configuration file too, so the next run
    // does not bring the old one back.
    assert_ne!(token_in_file(), before);
    assert_eq!(status_json(&db)["token"], "valid");
}

#[test]
fn offline_connect_stores_the_token_unverified_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let url = dead_url();
    let token = token_expiring_in(3600);
    let out = run(
        &db,
        &[
            "--json",
            "connect",
            "--server-url",
            &url,
            "--auth-token",
            &token,
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let said: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(said["verified"], false, "{said}");
    assert_eq!(said["online"], false, "{said}");
    let s = status_json(&db);
    assert_eq!(s["token"], "unverified", "{s}");
    assert_eq!(s["online"], false, "{s}");
    let text = ok(&db, &["status"]);
    assert!(text.contains("offline"), "{text}");
}

#[test]
fn disconnect_forgets_the_token_and_keeps_pending_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let db = dir.path().join("a.db");
    connect(&db, &url);
    ok(&db, &["house", "create", "--name", "Home"]);
    let said = ok(&db, &["disconnect"]);
    assert!(said.contains("1 pending change(s) kept"), "{said}");
    let s = status_json(&db);
    assert_eq!(s["token"], "none", "{s}");
    assert_eq!(s["pending_changes"], 1, "{s}");
    let file: Value = serde_json::from_slice(
        &std::fs::read(support::home_of(&db).join("config/blowing-off/config.json")).unwrap(),
    )
    .unwrap();
    assert!(file.get("auth_token").is_none(), "{file}");
    let out = run(&db, &["sync"]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    // Connecting again sends what waited.
    connect(&db, &url);
    ok(&db, &["sync"]);
    assert_eq!(status_json(&db)["pending_changes"], 0);
}
