//! The `blowing-off` binary against the real server on loopback: the README's flow, JSON
//! output, and the documented exit codes.

use std::path::Path;
use std::process::Output;

mod support;

use serde_json::Value;
use support::{connect, run, start_server, PASSWORD};

fn ok(db: &Path, args: &[&str]) -> String {
    let out = run(db, args);
    assert!(
        out.status.success(),
        "{args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(db: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(db, &all)).expect("JSON output")
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn readme_flow_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");

    // Not connected yet: exit 3, with the error on stderr.
    let out = run(&a, &["sync"]);
    assert_eq!(code(&out), 3);
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: not connected"));

    let said = ok(
        &a,
        &["connect", "--server-url", &url, "--password", PASSWORD],
    );
    assert!(said.contains("connected to"), "{said}");
    let home = json(&a, &["home", "create", "--name", "Home"]);
    let home_id = home["id"].as_str().unwrap().to_owned();
    let room = json(
        &a,
        &[
            "room",
            "create",
            "--home-id",
            &home_id,
            "--name",
            "Kitchen",
            "--floor",
            "1",
        ],
    );
    let room_id = room["id"].as_str().unwrap().to_owned();
    let dev = json(
        &a,
        &[
            "device",
            "create",
            "--room-id",
            &room_id,
            "--name",
            "Lamp",
            "--type",
            "light",
        ],
    );
    let dev_id = dev["id"].as_str().unwrap().to_owned();
    ok(
        &a,
        &[
            "device",
            "set-state",
            &dev_id,
            r#"{"power": "on", "brightness": 80}"#,
        ],
    );
    assert_eq!(json(&a, &["status"])["pending_changes"], 6);
    let said = ok(&a, &["sync"]);
    assert!(said.starts_with("synced "), "{said}");

    // A second client, exactly as the README runs it.
    connect(&b, &url);
    let synced = json(&b, &["sync"]);
    assert_eq!(synced["ok"], true);
    assert_eq!(synced["digest"]["server"], synced["digest"]["local"]);
    assert!(ok(&b, &["home", "show"]).contains("Home"));
    let rooms = ok(&b, &["room", "list"]);
    // The room's home by its name, not its id.
    assert!(
        rooms.contains("Kitchen") && rooms.contains("Home") && !rooms.contains(&home_id),
        "{rooms}"
    );
    assert!(ok(&b, &["device", "list"]).contains("Lamp"));
    let state = json(&b, &["device", "state", &dev_id]);
    assert_eq!(state["power"], "on");
    assert_eq!(
        json(&b, &["device", "list", "--room-id", &room_id])[0]["room_id"],
        room_id
    );
    assert_eq!(json(&b, &["entity", "search", "kitch"])[0]["id"], room_id);
    let history = |db| json(db, &["entity", "history", &dev_id]);
    assert_eq!(
        history(&a).as_array().map(Vec::len),
        Some(2),
        "create + state"
    );
    assert_eq!(
        history(&b).as_array().map(Vec::len),
        Some(1),
        "b pulled the latest"
    );
    assert!(ok(&b, &["status"]).contains("match"));
    assert!(ok(&b, &["conflicts"]).contains("no conflicts"));

    // Usage errors: 2.
    assert_eq!(
        code(&run(&b, &["device", "set-state", &dev_id, "not json"])),
        2
    );
    assert_eq!(code(&run(&b, &["room", "frobnicate"])), 2);
    // Unknown ids: 1.
    assert_eq!(code(&run(&b, &["device", "state", "no-such-id"])), 1);
    // A wrong password: 3.
    assert_eq!(code(&run(&b, &["login", "--password", "wrong"])), 3);

    // The server gone: 4, and the change stays queued.
    drop(_stop);
    ok(&a, &["device", "set-state", &dev_id, r#"{"power": "off"}"#]);
    let out = run(&a, &["sync"]);
    assert_eq!(code(&out), 4, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: server unreachable"));
    assert_eq!(json(&a, &["status"])["pending_changes"], 1);
}
