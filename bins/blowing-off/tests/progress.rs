//! Progress of a sync on stderr: drawn on a terminal (a pseudo-terminal made by
//! `script`), never when stderr is a pipe or a file, nor with `-q`.

use std::path::Path;
use std::process::Command;

mod support;

use support::{command, connect, run, start_server};

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

fn id(v: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(v).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// `blowing-off --db DB ARGS…` on a pseudo-terminal; everything the terminal showed.
fn on_terminal(db: &Path, args: &str) -> String {
    let line = format!(
        "{} --db '{}' {args}",
        env!("CARGO_BIN_EXE_blowing-off"),
        db.display()
    );
    let mut c = Command::new("script");
    support::isolate(&mut c, &support::home_of(db));
    let out = c
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .env("BLOWING_OFF_RETRIES", "0")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run script (util-linux)");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sync_progress_is_shown_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let db = dir.path().join("a.db");
    connect(&db, &url);
    let home = id(&ok(&db, &["--json", "house", "create", "--name", "Home"]));
    let room = id(&ok(
        &db,
        &[
            "--json",
            "room",
            "create",
            "--house-id",
            &home,
            "--name",
            "Hall",
        ],
    ));
    for i in 0..5 {
        ok(
            &db,
            &[
                "device",
                "create",
                "--room-id",
                &room,
                "--name",
                &format!("Lamp {i}"),
                "--type",
                "light",
            ],
        );
    }
    let shown = on_terminal(&db, "sync");
    // 7 entities and 6 relationships waited.
    assert!(shown.contains("pushing changes: 13/13"), "{shown:?}");
    assert!(shown.contains("page(s)"), "{shown:?}");
    assert!(shown.contains("synced "), "{shown:?}");

    // Not a terminal: stderr stays clean.
    ok(
        &db,
        &[
            "device",
            "create",
            "--room-id",
            &room,
            "--name",
            "Fan",
            "--type",
            "fan",
        ],
    );
    let out = command(&db, &["sync"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // -q on a terminal: no progress either.
    ok(
        &db,
        &[
            "device",
            "create",
            "--room-id",
            &room,
            "--name",
            "Heater",
            "--type",
            "heater",
        ],
    );
    let shown = on_terminal(&db, "-q sync");
    assert!(
        !shown.contains("pushing changes") && !shown.contains("page(s)"),
        "{shown:?}"
    );
    assert!(shown.contains("synced "), "{shown:?}");
}
