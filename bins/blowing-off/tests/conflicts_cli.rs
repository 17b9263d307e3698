//! `conflicts queue|resolve`, the overwritten device told by `sync` and `status`, and
//! `export`/`import`, run as the real binary against a real server, in table and
//! `--json` form, with their documented exit codes.

use std::path::Path;

mod support;

use inbetweenies_conflict::{ResolverConfig, Strategy};
use serde_json::Value;
use support::{connect, id, json, ok, run, start_server, start_server_with, PASSWORD};

/// Exit code and stderr of a command expected to fail.
fn fails(db: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = run(db, args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Two connected clients sharing a lamp; returns (a, b, lamp id).
fn two_clients(dir: &Path, url: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let a = dir.join("a.db");
    let b = dir.join("b.db");
    for db in [&a, &b] {
        ok(
            db,
            &["connect", "--server-url", url, "--password", PASSWORD],
        );
    }
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
    (a, b, id(&lamp))
}

/// A sets the lamp and syncs; then B, not having pulled it, sets it and syncs.
fn both_edit(a: &Path, b: &Path, lamp: &str, by_a: &str, by_b: &str) {
    ok(a, &["device", "set-state", lamp, by_a]);
    ok(a, &["sync"]);
    ok(b, &["device", "set-state", lamp, by_b]);
    ok(b, &["sync"]);
}

#[test]
fn the_review_queue_is_listed_and_resolved_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server_with(dir.path(), |c| {
        c.with_resolver(ResolverConfig {
            default_strategy: Strategy::Manual,
            ..ResolverConfig::default()
        })
    });
    let (a, b, lamp) = two_clients(dir.path(), &url);
    assert_eq!(
        ok(&a, &["conflicts", "queue"]).trim(),
        "no conflicts waiting for review"
    );
    both_edit(
        &a,
        &b,
        &lamp,
        r#"{"power": "on", "by": "a"}"#,
        r#"{"power": "off", "by": "b"}"#,
    );

    // Each device sees which side is its own, with both contents in full.
    let table = ok(&a, &["conflicts", "queue"]);
    assert!(
        table.contains(r#"this device's edit: {"device_type":"light","power":"on","by":"a"}"#)
            && table.contains(
                r#"the other device's edit: {"device_type":"light","power":"off","by":"b"}"#
            ),
        "{table}"
    );
    let queue = json(&b, &["conflicts", "queue"]);
    let q = &queue.as_array().unwrap()[0];
    assert_eq!(q["ours"], "pushed", "{q}");
    assert_eq!(q["status"], "pending");
    assert_eq!(q["server"]["content"]["by"], "a", "{q}");
    assert_eq!(q["pushed"]["content"]["by"], "b", "{q}");
    let cid = q["id"].as_i64().unwrap().to_string();

    // Bad choices are usage errors (exit 2); nothing is resolved.
    assert_eq!(fails(&b, &["conflicts", "resolve", &cid]).0, Some(2));
    let (code, err) = fails(&b, &["conflicts", "resolve", &cid, "--merged", "{oops"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
    let (code, _) = fails(&b, &["conflicts", "resolve", &cid, "--ours", "--theirs"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        json(&b, &["conflicts", "queue"]).as_array().unwrap().len(),
        1
    );

    // Merged content from a file; the resolving device syncs at once.
    let merged = dir.path().join("merged.json");
    std::fs::write(&merged, r#"{"power": "dim", "by": "a and b"}"#).unwrap();
    let done = json(
        &b,
        &[
            "conflicts",
            "resolve",
            &cid,
            "--merged",
            merged.to_str().unwrap(),
        ],
    );
    assert_eq!(done["entity"]["content"]["power"], "dim", "{done}");
    assert_eq!(
        done["entity"]["parent_versions"].as_array().unwrap().len(),
        2
    );
    assert_eq!(done["synced"], true);
    ok(&a, &["sync"]);
    assert_eq!(json(&a, &["device", "state", &lamp])["power"], "dim");
    assert_eq!(json(&b, &["device", "state", &lamp])["power"], "dim");
    // Already resolved: the server refuses (exit 1), and says why.
    let (code, err) = fails(&a, &["conflicts", "resolve", &cid, "--theirs"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("409"), "{err}");

    // Choosing a side: A keeps the other device's edit.
    both_edit(&a, &b, &lamp, r#"{"power": "a2"}"#, r#"{"power": "b2"}"#);
    let q = json(&a, &["conflicts", "queue"]);
    let cid = q[0]["id"].as_i64().unwrap().to_string();
    let text = ok(&a, &["conflicts", "resolve", &cid, "--theirs"]);
    assert!(text.contains(&format!("conflict {cid} resolved")), "{text}");
    ok(&b, &["sync"]);
    assert_eq!(json(&a, &["device", "state", &lamp])["power"], "b2");
    assert_eq!(json(&b, &["device", "state", &lamp])["power"], "b2");
    let all = json(&a, &["conflicts", "queue", "--status", "all"]);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
}

#[test]
fn the_device_whose_edit_was_replaced_is_told_in_its_own_words() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let (a, b, lamp) = two_clients(dir.path(), &url);
    // A's edit reaches the server first; B's later edit replaces it.
    both_edit(&a, &b, &lamp, r#"{"power": "on"}"#, r#"{"power": "off"}"#);

    let out = run(&a, &["sync"]);
    assert_eq!(out.status.code(), Some(0));
    let note = String::from_utf8_lossy(&out.stderr);
    assert!(
        note.contains(&format!("conflict over {lamp}"))
            && note.contains("the other device's edit, which replaced this device's edit"),
        "{note}"
    );
    let status = json(&a, &["status", "--offline"]);
    assert_eq!(status["conflicts_from_other_devices"], 1, "{status}");
    assert_eq!(
        status["last_conflict"]["ours"]["content"]["power"], "on",
        "{status}"
    );
    let text = ok(&a, &["status", "--offline"]);
    assert!(
        text.contains("1 where another device's edit replaced this device's"),
        "{text}"
    );
    let shown = json(&a, &["conflicts", "show", &lamp]);
    assert_eq!(shown["origin"], "other_device", "{shown}");
    assert_eq!(shown["kept"], "theirs", "{shown}");
    assert_eq!(shown["ours"]["content"]["power"], "on");
    assert_eq!(shown["theirs"]["content"]["power"], "off");
    let text = ok(&a, &["conflicts", "show", &lamp]);
    assert!(
        text.contains(r#"this device's edit (version"#)
            && text.contains(r#""power":"on""#)
            && text.contains(r#"the other device's edit (version"#)
            && text.contains(r#""power":"off""#),
        "{text}"
    );
    // No "local"/"remote" in what a person reads.
    for words in [
        text.as_str(),
        &ok(&a, &["conflicts"]),
        &ok(&b, &["conflicts"]),
    ] {
        assert!(
            !words.contains("local") && !words.contains("remote"),
            "{words}"
        );
    }
    let b_view = json(&b, &["conflicts", "show", &lamp]);
    assert_eq!(b_view["origin"], "this_device");
    assert_eq!(b_view["kept"], "ours", "{b_view}");
}

#[test]
fn the_graph_is_exported_and_imported_once_however_often() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let (a, b, lamp) = two_clients(dir.path(), &url);
    ok(&a, &["device", "set-state", &lamp, r#"{"power": "on"}"#]);
    let file = dir.path().join("graph.json");
    let written = json(&a, &["export", "-o", file.to_str().unwrap()]);
    assert_eq!(written["entities"], 3, "{written}");
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(doc["format"], "goodies-graph");
    assert_eq!(doc["format_version"], 1);
    assert_eq!(doc["entities"].as_array().unwrap().len(), 3);
    assert_eq!(doc["relationships"].as_array().unwrap().len(), 2);
    let to_stdout: Value = serde_json::from_str(&ok(&a, &["export"])).unwrap();
    assert_eq!(to_stdout["entities"], doc["entities"]);

    // Bad input: a readable error, exit 2, nothing imported.
    let c = dir.path().join("c.db");
    let bad = dir.path().join("bad.json");
    for (text, says) in [
        ("not json", "not JSON"),
        (r#"{"format": "other", "format_version": 1}"#, "`format`"),
        (
            r#"{"format": "goodies-graph", "format_version": 1,
                "entities": [{"id": "n1", "entity_type": "note", "name": "N"}],
                "relationships": [{"from_entity_id": "n1", "to_entity_id": "nowhere",
                                   "relationship_type": "located_in"}]}"#,
            "nowhere",
        ),
    ] {
        std::fs::write(&bad, text).unwrap();
        let (code, err) = fails(&c, &["import", bad.to_str().unwrap()]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(says), "{says}: {err}");
        assert_eq!(json(&c, &["entity", "list"]), Value::Array(vec![]));
    }

    // Imported into a fresh client, again (nothing changes), then synced.
    let first = json(&c, &["import", file.to_str().unwrap()]);
    assert_eq!(first["created"], 3, "{first}");
    assert_eq!(first["relationships_created"], 2, "{first}");
    let again = json(&c, &["import", file.to_str().unwrap()]);
    assert_eq!(again["created"], 0, "{again}");
    assert_eq!(again["updated"], 0, "{again}");
    assert_eq!(again["unchanged"], 3, "{again}");
    assert_eq!(again["relationships_unchanged"], 2, "{again}");
    let text = ok(&c, &["import", file.to_str().unwrap()]);
    assert!(text.contains("0 created, 0 updated, 3 unchanged"), "{text}");
    assert_eq!(json(&c, &["device", "state", &lamp])["power"], "on");
    let ids = |db: &Path| {
        let mut v: Vec<String> = json(db, &["entity", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(id)
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&c), ids(&a));
    // The import goes out like any edit: a's state reaches b through c's sync.
    connect(&c, &url);
    ok(&c, &["sync"]);
    ok(&b, &["sync"]);
    assert_eq!(json(&b, &["device", "state", &lamp])["power"], "on");
}
