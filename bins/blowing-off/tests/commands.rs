//! The seeds' commands as written, and the ones added around them, against the real
//! server: each in table and `--json` form. Tables name homes and rooms rather than
//! showing ids, fit `$COLUMNS`, and are plain ASCII when not on a terminal; `entity
//! history` shows whole contents.

mod support;

use serde_json::Value;
use support::{command, connect, id, json, ok, run, start_server, two_clients, PASSWORD};

#[test]
fn the_seeds_commands_in_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    ok(
        &a,
        &[
            "connect",
            "--server-url",
            &url,
            "--password",
            PASSWORD,
            "--client-id",
            "alice",
        ],
    );
    connect(&b, &url);

    let home = json(&a, &["house", "create", "--name", "Home"]);
    assert_eq!(home["name"], "Home");
    let room = json(
        &a,
        &[
            "room",
            "create",
            "--house-id",
            &id(&home),
            "--name",
            "Living Room",
            "--floor",
            "0",
            "--type",
            "living_room",
        ],
    );
    assert_eq!(room["content"]["room_type"], "living_room", "{room}");
    assert_eq!(room["floor"], 0);
    assert_eq!(room["home_id"], id(&home).as_str());
    let lamp = json(
        &a,
        &[
            "device",
            "create",
            "--room-id",
            &id(&room),
            "--name",
            "Ceiling Light",
            "--type",
            "light",
            "--manufacturer",
            "Philips",
        ],
    );
    let app = json(&a, &["entity", "list", "--type", "app"]);
    assert_eq!(app, Value::Array(vec![]));
    ok(
        &a,
        &[
            "device",
            "set-state",
            &id(&lamp),
            r#"{"power": "on", "brightness": 80}"#,
        ],
    );

    // house show --json: one object for one home.
    let shown = json(&a, &["house", "show"]);
    assert!(shown.is_object(), "{shown}");
    assert_eq!(shown["id"], id(&home).as_str());

    // Tables: names, not ids; plain ASCII off a terminal.
    let rooms = ok(&a, &["room", "list"]);
    assert!(
        rooms.contains("Living Room") && rooms.contains("living_room"),
        "{rooms}"
    );
    assert!(
        rooms.contains("| Home") || rooms.contains(" Home "),
        "{rooms}"
    );
    assert!(!rooms.contains(&id(&home)), "{rooms}");
    assert!(rooms.is_ascii(), "{rooms}");
    let devices = ok(&a, &["device", "list"]);
    assert!(
        devices.contains("Living Room") && !devices.contains(&id(&room)),
        "{devices}"
    );

    // relate FROM TYPE TO, in both forms.
    let note = json(&a, &["entity", "list", "--type", "note"]);
    assert_eq!(note, Value::Array(vec![]));
    let rel = json(&a, &["relate", &id(&lamp), "controls", &id(&room)]);
    assert_eq!(rel["relationship_type"], "controls", "{rel}");
    assert_eq!(rel["from_entity_id"], id(&lamp).as_str());
    let said = ok(
        &a,
        &[
            "relate",
            &id(&lamp),
            "monitors",
            &id(&room),
            "--properties",
            r#"{"every": 5}"#,
        ],
    );
    assert!(
        said.contains("device Ceiling Light -monitors-> room Living Room"),
        "{said}"
    );
    let out = run(&a, &["relate", &id(&lamp), "controls", "no-such-id"]);
    assert_eq!(out.status.code(), Some(1));
    let out = run(
        &a,
        &[
            "relate",
            &id(&lamp),
            "controls",
            &id(&room),
            "--properties",
            "[1]",
        ],
    );
    assert_eq!(out.status.code(), Some(2));

    // search QUERY [--type].
    let found = json(&a, &["search", "light"]);
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(
        json(&a, &["search", "living", "--type", "device"]),
        Value::Array(vec![])
    );
    assert_eq!(
        json(&a, &["search", "living", "--type", "room"])[0]["id"],
        id(&room).as_str()
    );
    assert!(ok(&a, &["search", "nothing-like-this"]).contains("nothing matches"));

    // stats.
    let stats = json(&a, &["stats"]);
    assert_eq!(stats["entities"], 3, "{stats}");
    assert_eq!(stats["entities_by_type"]["device"], 1, "{stats}");
    assert_eq!(stats["relationships_by_type"]["controls"], 1, "{stats}");
    assert!(ok(&a, &["stats"]).contains("relationships by type"));

    // Sync, and everything on the other client.
    ok(&a, &["sync"]);
    ok(&b, &["sync"]);
    let state = json(&b, &["device", "state", &id(&lamp)]);
    assert_eq!(state["power"], "on");
    assert_eq!(state["brightness"], 80);
    assert_eq!(
        json(&b, &["stats"])["relationships"],
        stats["relationships"]
    );
    let status = json(&a, &["status"]);
    assert_eq!(status["client_id"], "alice");
    assert_eq!(status["pending_changes"], 0);
    assert_eq!(status["online"], true);

    // device delete, shown on the other side.
    ok(&a, &["device", "delete", &id(&lamp)]);
    ok(&a, &["sync"]);
    ok(&b, &["sync"]);
    assert_eq!(json(&b, &["device", "list"]), Value::Array(vec![]));
}

#[test]
fn tables_fit_columns_and_history_keeps_whole_contents() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let home = json(&a, &["house", "create", "--name", "Home"]);
    let room = json(
        &a,
        &["room", "create", "--house-id", &id(&home), "--name", "Hall"],
    );
    let lamp = json(
        &a,
        &[
            "device",
            "create",
            "--room-id",
            &id(&room),
            "--name",
            "Lamp",
            "--type",
            "light",
        ],
    );
    let long = "x".repeat(120);
    ok(
        &a,
        &[
            "device",
            "set-state",
            &id(&lamp),
            &format!(r#"{{"note": "{long}", "end": "tail-marker"}}"#),
        ],
    );
    // The whole content of every version, however long.
    let history = ok(&a, &["entity", "history", &id(&lamp)]);
    assert!(
        history.contains(&long) && history.contains("tail-marker"),
        "{history}"
    );

    // COLUMNS=60: no line of the table is wider.
    let out = command(&a, &["device", "list"])
        .env("COLUMNS", "60")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Lamp"), "{text}");
    for line in text.lines() {
        assert!(
            line.chars().count() <= 60,
            "{} wide: {line:?}",
            line.chars().count()
        );
    }
}

#[test]
fn an_offline_conflict_is_explained_from_this_clients_side_and_both_converge() {
    let dir = tempfile::tempdir().unwrap();
    let (_url, _stop, a, b) = two_clients(dir.path());
    let home = json(&a, &["house", "create", "--name", "Home"]);
    let room = json(
        &a,
        &["room", "create", "--house-id", &id(&home), "--name", "Hall"],
    );
    let lamp = json(
        &a,
        &[
            "device",
            "create",
            "--room-id",
            &id(&room),
            "--name",
            "Lamp",
            "--type",
            "light",
        ],
    );
    ok(&a, &["sync"]);
    ok(&b, &["sync"]);

    // a edits while offline (a process that ends before any sync), then b edits later
    // and syncs first: b's edit is newer, so the server keeps it.
    ok(
        &a,
        &["device", "set-state", &id(&lamp), r#"{"power": "on"}"#],
    );
    std::thread::sleep(std::time::Duration::from_millis(20));
    ok(
        &b,
        &["device", "set-state", &id(&lamp), r#"{"power": "off"}"#],
    );
    ok(&b, &["sync"]);
    let synced = json(&a, &["sync"]);
    assert_eq!(synced["conflicts_resolved"], 1, "{synced}");

    let shown = json(&a, &["conflicts", "show", &id(&lamp)]);
    assert_eq!(shown["kept"], "theirs", "{shown}");
    assert_eq!(shown["ours"]["content"]["power"], "on", "{shown}");
    assert_eq!(shown["theirs"]["content"]["power"], "off", "{shown}");
    let text = ok(&a, &["conflicts", "show", &id(&lamp)]);
    assert!(text.contains("the server kept the server's"), "{text}");
    assert!(
        text.contains(r#""power":"on""#) && text.contains(r#""power":"off""#),
        "{text}"
    );
    let list = ok(&a, &["conflicts"]);
    assert!(
        list.contains("device Lamp") && list.contains("the server's"),
        "{list}"
    );
    // The losing edit is kept in history.
    let history = json(&a, &["entity", "history", &id(&lamp)]);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["entity"]["content"]["power"] == "on"),
        "{history}"
    );
    // Both clients converged: same state, digests equal to the server's.
    let a_sync = json(&a, &["sync"]);
    let b_sync = json(&b, &["sync"]);
    assert_eq!(
        a_sync["digest"]["server"], a_sync["digest"]["local"],
        "{a_sync}"
    );
    assert_eq!(
        b_sync["digest"]["local"], a_sync["digest"]["local"],
        "{b_sync}"
    );
    assert_eq!(json(&a, &["device", "state", &id(&lamp)])["power"], "off");
    let out = run(&a, &["conflicts", "show", "no-such-id"]);
    assert_eq!(out.status.code(), Some(1));
}
