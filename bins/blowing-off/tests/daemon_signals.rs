//! `sync-daemon` stops cleanly on SIGTERM as on Ctrl-C (SIGINT): it finishes the sync in
//! progress, prints a summary and exits 0; every change made while it ran is either on
//! the server or still pending, never lost.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;

use serde_json::Value;
use support::{command, connect, run, start_server, two_clients};

const BOUND: Duration = Duration::from_secs(20);

fn ok(db: &Path, args: &[&str]) -> String {
    let out = run(db, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lines of the child's stdout, as they come.
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(BOUND)
        .unwrap_or_else(|_| panic!("no {what} within {BOUND:?}"))
}

fn wait(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > BOUND {
            let _ = child.kill();
            panic!("sync-daemon did not stop within {BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn homes(db: &Path) -> Vec<String> {
    let v: Value = serde_json::from_str(&ok(db, &["--json", "entity", "list", "--type", "home"]))
        .expect("JSON");
    let mut names: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

fn stops_cleanly_on(signal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (_url, _stop, a, b) = two_clients(dir.path());
    ok(&a, &["house", "create", "--name", "Before"]);

    let mut daemon = command(&a, &["--json", "sync-daemon", "--interval", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start sync-daemon");
    let rx = lines(&mut daemon);
    let first: Value = serde_json::from_str(&next_line(&rx, "first sync")).unwrap();
    assert_eq!(first["event"], "sync_finished", "{first}");
    assert_eq!(first["ok"], true, "{first}");

    // An edit while the daemon runs, then the signal at once.
    ok(&a, &["house", "create", "--name", "During"]);
    let sent = std::process::Command::new("kill")
        .args([signal, &daemon.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = wait(&mut daemon);
    assert_eq!(status.code(), Some(0), "{signal}: {status:?}");
    let mut last = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(5)) {
        last = Some(line);
    }
    let last: Value = serde_json::from_str(&last.expect("a summary")).unwrap();
    assert_eq!(last["event"], "stopped", "{last}");
    assert_eq!(last["by_signal"], true, "{last}");
    let pending = last["pending"].as_u64().unwrap();
    let s: Value = serde_json::from_str(&ok(&a, &["--json", "status", "--offline"])).unwrap();
    assert_eq!(s["pending_changes"].as_u64(), Some(pending), "{s}");

    // Nothing lost: one more sync, and the other client sees both homes.
    ok(&a, &["sync"]);
    ok(&b, &["sync"]);
    assert_eq!(homes(&b), vec!["Before".to_owned(), "During".to_owned()]);
}

#[test]
fn sigterm_stops_the_daemon_cleanly_with_nothing_lost() {
    stops_cleanly_on("-TERM");
}

#[test]
fn sigint_stops_the_daemon_cleanly_with_nothing_lost() {
    stops_cleanly_on("-INT");
}

#[test]
fn the_daemon_says_it_runs_and_how_to_stop_it() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let a = dir.path().join("a.db");
    connect(&a, &url);
    let out = run(&a, &["sync-daemon", "--interval", "1", "--count", "2"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Ctrl-C or SIGTERM"), "{stderr}");
    assert_eq!(stdout.matches("sync: ").count(), 2, "{stdout}");
    assert!(
        stdout.contains("2 sync(s), 0 with errors; 0 change(s) pending"),
        "{stdout}"
    );
    // -q: no notes.
    let out = run(
        &a,
        &["-q", "sync-daemon", "--interval", "1", "--count", "1"],
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_daemon_refreshes_a_token_before_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    // Tokens live 4 s: syncs for 7 s only succeed if the daemon refreshes.
    let (url, _stop) = support::start_server_with(dir.path(), |mut c| {
        c.admin_token_ttl = Duration::from_secs(4);
        c
    });
    let a = dir.path().join("a.db");
    connect(&a, &url);
    let file = support::home_of(&a).join("config/blowing-off/config.json");
    let token_in_file = || -> String {
        let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        v["auth_token"].as_str().unwrap().to_owned()
    };
    let first = token_in_file();
    let out = run(&a, &["sync-daemon", "--interval", "1", "--count", "8"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("token refreshed"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("8 sync(s), 0 with errors"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The fresh token is in the configuration file too, and the server accepts it.
    assert_ne!(token_in_file(), first);
    let s: Value = serde_json::from_str(&ok(&a, &["--json", "status"])).unwrap();
    assert_eq!(s["token"], "valid", "{s}");
}
