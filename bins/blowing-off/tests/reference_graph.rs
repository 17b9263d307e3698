//! `room list` and `device list` over the graph the Python reference writes: its sample
//! home pushed to the real server by raw HTTP in the reference's shapes (zone `part_of`
//! home, room `located_in` zone and `part_of` home, device `located_in` room, the type in
//! `content.type`), pulled by the CLI, listed as the reference's own tools list it.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::Path;

mod support;

use serde_json::{json, Value};
use support::{connect, run, start_server, PASSWORD};

const SAMPLE: &str = include_str!("../../../tests/vectors/reference-graph/sample_graph.json");

/// One HTTP/1.1 POST of a JSON body over a plain socket; the status and the JSON answer.
fn post(base: &str, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
    let host = base.strip_prefix("http://").expect("an http URL");
    let mut stream = std::net::TcpStream::connect(host).expect("connect");
    let body = body.to_string();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("answer");
    let (head, rest) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, serde_json::from_str(rest).expect("a JSON answer"))
}

/// The sample graph as one reference-shaped push (each edge on its `from` entity's change).
fn reference_push(sample: &Value) -> Value {
    let entities = sample["entities"].as_array().expect("entities");
    let by_name: HashMap<&str, &Value> = entities
        .iter()
        .map(|e| (e["name"].as_str().expect("name"), e))
        .collect();
    let edges = sample["relationships"].as_array().expect("relationships");
    let changes: Vec<Value> = entities
        .iter()
        .map(|e| {
            let rels: Vec<Value> = edges
                .iter()
                .enumerate()
                .filter(|(_, r)| r["from"] == e["name"])
                .map(|(i, r)| {
                    let to = by_name[r["to"].as_str().expect("to")];
                    json!({
                        "id": format!("00000000-0000-4000-8000-{i:012}"),
                        "from_entity_id": e["id"], "from_entity_version": e["version"],
                        "to_entity_id": to["id"], "to_entity_version": to["version"],
                        "relationship_type": r["relationship_type"],
                        "properties": r["properties"],
                    })
                })
                .collect();
            json!({"change_type": "create", "entity": e, "relationships": rels})
        })
        .collect();
    json!({
        "protocol_version": "inbetweenies-v2",
        "device_id": "populate-script",
        "user_id": "populate-script",
        "sync_type": "delta",
        "changes": changes,
        "vector_clock": {"clocks": {}},
    })
}

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

fn json_out(db: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&ok(db, &all)).expect("JSON output")
}

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|x| x["name"].as_str().expect("name").to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn room_and_device_lists_read_the_reference_graph() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let sample: Value = serde_json::from_str(SAMPLE).unwrap();
    let (status, login) = post(
        &url,
        "/api/v1/auth/admin/login",
        None,
        &json!({"password": PASSWORD}),
    );
    assert_eq!(status, 200, "{login}");
    let token = login["access_token"].as_str().unwrap();
    let (status, answer) = post(&url, "/api/v1/sync/", Some(token), &reference_push(&sample));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["applied_relationships"].as_array().map(Vec::len),
        Some(27)
    );

    let db = dir.path().join("cli.db");
    connect(&db, &url);
    assert_eq!(json_out(&db, &["sync"])["ok"], true);
    let expected = &sample["expected"];
    let id_of: HashMap<&str, &str> = sample["entities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["id"].as_str().unwrap()))
        .collect();
    let home_id = id_of[expected["home"].as_str().unwrap()];

    // The rooms of the home, each naming the home.
    let rooms = json_out(&db, &["room", "list", "--home-id", home_id]);
    let want: Vec<String> = serde_json::from_value(expected["rooms_of_home"].clone()).unwrap();
    assert_eq!(names(&rooms), want);
    for r in rooms.as_array().unwrap() {
        assert_eq!(r["home_id"], home_id, "{r}");
    }
    let table = ok(&db, &["room", "list"]);
    for room in &want {
        let line = table
            .lines()
            .find(|l| l.contains(room.as_str()))
            .unwrap_or_else(|| panic!("{room} not listed: {table}"));
        // The home by its name, not its id.
        let home_name = expected["home"].as_str().unwrap();
        assert!(
            line.contains(home_name) && !line.contains(home_id),
            "{line}"
        );
    }

    // The devices of each room, with their types.
    let per_room: BTreeMap<String, Vec<String>> =
        serde_json::from_value(expected["devices_in_room"].clone()).unwrap();
    let types: BTreeMap<String, String> =
        serde_json::from_value(expected["device_types"].clone()).unwrap();
    for (room, devices) in &per_room {
        let listed = json_out(&db, &["device", "list", "--room-id", id_of[room.as_str()]]);
        assert_eq!(&names(&listed), devices, "devices in {room}");
        for d in listed.as_array().unwrap() {
            let name = d["name"].as_str().unwrap();
            assert_eq!(d["device_type"], types[name], "{name}");
            assert_eq!(d["room_id"], id_of[room.as_str()], "{name}");
        }
    }
    let all = json_out(&db, &["device", "list"]);
    assert_eq!(all.as_array().map(Vec::len), Some(types.len()));
    let table = ok(&db, &["device", "list"]);
    for (name, t) in &types {
        let line = table
            .lines()
            .find(|l| l.contains(name.as_str()))
            .unwrap_or_else(|| panic!("{name} not listed: {table}"));
        assert!(line.contains(t.as_str()), "{name}'s type {t}: {line}");
    }
}
