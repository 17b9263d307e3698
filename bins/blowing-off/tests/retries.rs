//! A sync that cannot reach the server tells each wait on stderr (not a silent pause),
//! then that the client works offline.

mod support;

use support::command;

#[test]
fn retries_are_told_on_stderr_then_offline() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let out = command(
        &db,
        &["connect", "--server-url", &url, "--auth-token", "t.t.t"],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = command(&db, &["house", "create", "--name", "Home"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = command(&db, &["--retries", "2", "sync"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .find("retrying in 1 s (attempt 1 of 2): cannot connect to the server")
        .unwrap_or_else(|| panic!("{stderr}"));
    let second = stderr
        .find("retrying in 2 s (attempt 2 of 2)")
        .unwrap_or_else(|| panic!("{stderr}"));
    let offline = stderr
        .find("offline: the server cannot be reached")
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(first < second && second < offline, "{stderr}");
    assert_ne!(out.status.code(), Some(0));
}
