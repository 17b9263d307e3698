//! The `blowing-off` binary when the server refuses what it pushes: an outbox larger
//! than the server's body limit syncs in smaller batches, and a change too large even
//! alone is kept aside (exit code 5, listed by `outbox`, counted by `status`) while the
//! rest of the outbox and the pull go on.

use std::path::Path;

mod support;

use serde_json::Value;
use support::{run, start_server_with, PASSWORD};

fn json(db: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = run(db, &all);
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_owned()
}

/// A state of about `bytes` bytes of text.
fn big_state(bytes: usize) -> String {
    let text: String = (0..bytes)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    serde_json::json!({ "blob": text }).to_string()
}

#[test]
fn an_outbox_over_the_body_limit_is_split_and_a_change_too_large_is_kept_aside() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server_with(dir.path(), |c| c.with_body_limit(250_000));
    let db = dir.path().join("client.db");
    let other = dir.path().join("other.db");
    for d in [&db, &other] {
        let out = run(
            d,
            &["connect", "--server-url", &url, "--password", PASSWORD],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let home = id_of(&json(&other, &["home", "create", "--name", "H"]));
    assert!(run(&other, &["sync"]).status.success());
    assert!(run(&db, &["sync"]).status.success());

    // Twelve devices with 100 kB of state each: about 1.2 MB in one batch, five times
    // the limit.
    let room = id_of(&json(
        &db,
        &["room", "create", "--home-id", &home, "--name", "R"],
    ));
    let state = big_state(100_000);
    for i in 0..12 {
        let dev = id_of(&json(
            &db,
            &[
                "device",
                "create",
                "--room-id",
                &room,
                "--name",
                &format!("d{i}"),
                "--type",
                "light",
            ],
        ));
        let out = run(&db, &["device", "set-state", &dev, &state]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&db, &["--json", "sync"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(r["pending"], 0, "{r}");
    assert_eq!(r["quarantined_total"], 0, "{r}");

    // One change larger than the limit on its own, between two small ones.
    let before = id_of(&json(
        &db,
        &["room", "create", "--home-id", &home, "--name", "before"],
    ));
    let huge = id_of(&json(
        &db,
        &[
            "device",
            "create",
            "--room-id",
            &room,
            "--name",
            "huge",
            "--type",
            "light",
        ],
    ));
    // Three keys of 100 kB each (one command line holds at most about 128 kB): the
    // third version, with all three, is over the limit on its own.
    let chunk = big_state(100_000);
    let chunk = serde_json::from_str::<Value>(&chunk).expect("json")["blob"].to_string();
    for key in ["k1", "k2", "k3"] {
        let out = run(&db, &["device", "set", &huge, key, &chunk]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let after = id_of(&json(
        &db,
        &["room", "create", "--home-id", &home, "--name", "after"],
    ));
    let from_other = id_of(&json(
        &other,
        &["room", "create", "--home-id", &home, "--name", "o"],
    ));
    assert!(run(&other, &["sync"]).status.success());

    let out = run(&db, &["sync"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(5),
        "a refused change is exit 5: {stderr}"
    );
    assert!(
        stderr.contains("refused") && stderr.contains(&huge),
        "{stderr}"
    );
    let status = json(&db, &["status"]);
    assert_eq!(status["pending_changes"], 0, "{status}");
    assert_eq!(status["quarantined_changes"], 1, "{status}");
    let outbox = json(&db, &["outbox"]);
    assert_eq!(
        outbox["quarantined"].as_array().map(Vec::len),
        Some(1),
        "{outbox}"
    );
    assert_eq!(outbox["quarantined"][0]["entity_id"], huge.as_str());
    assert!(
        outbox["quarantined"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("413")),
        "{outbox}"
    );

    // Everything else reached the server (a fresh client sees it), and the pull went on.
    let fresh = dir.path().join("fresh.db");
    assert!(run(
        &fresh,
        &["connect", "--server-url", &url, "--password", PASSWORD]
    )
    .status
    .success());
    assert!(run(&fresh, &["sync"]).status.success());
    for id in [&before, &after] {
        assert!(
            run(&fresh, &["entity", "show", id]).status.success(),
            "{id}"
        );
    }
    assert!(run(&db, &["entity", "show", &from_other]).status.success());

    // `outbox retry` sends it again: still too large, still kept, still exit 5.
    let released = json(&db, &["outbox", "retry"]);
    assert_eq!(released["released"], 1);
    assert_eq!(run(&db, &["sync"]).status.code(), Some(5));
    assert_eq!(json(&db, &["status"])["quarantined_changes"], 1);
}
