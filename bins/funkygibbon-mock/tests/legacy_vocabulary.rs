//! Older clients' vocabulary and versions (PROTOCOL §3.3, §4.2, §8.2, §12.5), over raw HTTP
//! exactly as the Python Blowing-Off and the TypeScript port send it.
//!
//! By default every value outside the known vocabulary (`source_type: "None"`,
//! `"DEVICE"`, `"MANUAL"`, unknown relationship types) and every non-empty
//! version string (`v-1796118705966`) is stored and read back unchanged, on
//! every entry point, and counted; strict mode refuses them with one 422 that
//! lists every problem of the request. Opaque versions are ordered by their
//! edit time (`updated_at` sent, else receipt), never by sorting after a
//! timestamped version. A graph written by the reference, extended with the
//! whole vocabulary and beyond it, copies into ours over the wire and through
//! the client library with nothing dropped and the digests equal.

mod support;

use std::collections::BTreeMap;

use goodies_client::{BlowingOffClient, ClientConfig, RetryPolicy};
use inbetweenies_proto::{EntityType, RelationshipType, SourceType, Timestamp, Version};
use serde_json::{json, Value};
use support::{Backend, TestServer};

/// A sync request as the reference clients write it: no `capabilities` key.
fn legacy_body(device: &str, sync_type: &str, changes: Value) -> Value {
    json!({
        "protocol_version": "inbetweenies-v2",
        "device_id": device,
        "user_id": "client-user",
        "sync_type": sync_type,
        "vector_clock": {"clocks": {}},
        "changes": changes,
    })
}

/// An entity record as the reference clients send it (no checksum key).
fn entity(id: &str, version: &str, entity_type: &str, source_type: &str) -> Value {
    json!({
        "id": id, "version": version, "entity_type": entity_type, "name": format!("{id} name"),
        "content": {"made_by": id, "n": [1, 2.5, null]}, "source_type": source_type,
        "user_id": "client-user", "parent_versions": [],
    })
}

fn change(change_type: &str, entity: Value, relationships: Value) -> Value {
    json!({"change_type": change_type, "entity": entity, "relationships": relationships})
}

fn edge(id: &str, from: &Value, to: &Value, relationship_type: &str) -> Value {
    json!({
        "id": id, "from_entity_id": from["id"], "from_entity_version": from["version"],
        "to_entity_id": to["id"], "to_entity_version": to["version"],
        "relationship_type": relationship_type, "properties": {"why": relationship_type},
    })
}

/// A TypeScript-port version: `v-` and milliseconds since the epoch.
fn ts_version(ms: i64) -> String {
    format!("v-{ms}")
}

fn now_ms() -> i64 {
    Timestamp::now().unix_micros() / 1000
}

/// Every row of the server's change feed, following the cursor with the
/// `relationship_rows` capability: (latest entity per id, relationship per id).
async fn pull_all(
    s: &TestServer,
    token: &str,
) -> (BTreeMap<String, Value>, BTreeMap<String, Value>, String) {
    let (mut entities, mut rels) = (BTreeMap::new(), BTreeMap::new());
    let mut cursor = Value::Null;
    for _ in 0..1_000 {
        let mut body = legacy_body("puller", "delta", json!([]));
        body["cursor"] = cursor.clone();
        body["capabilities"] = json!(["relationship_rows"]);
        let (status, page) = s.post_json(token, "/api/v1/sync/", &body).await;
        assert_eq!(status, 200, "{page}");
        for c in page["changes"].as_array().expect("changes") {
            if let Some(e) = c["entity"].as_object() {
                entities.insert(
                    e["id"].as_str().expect("id").to_owned(),
                    c["entity"].clone(),
                );
            }
            for r in c["relationships"].as_array().expect("relationships") {
                rels.insert(r["id"].as_str().expect("id").to_owned(), r.clone());
            }
        }
        cursor = page["cursor"].clone();
        if cursor.is_null() {
            let digest = page["state_digest"].as_str().expect("digest").to_owned();
            return (entities, rels, digest);
        }
    }
    panic!("the cursor never came back null");
}

/// The fields a sent entity record must come back with, unchanged.
const ENTITY_FIELDS: [&str; 8] = [
    "id",
    "version",
    "entity_type",
    "name",
    "content",
    "source_type",
    "user_id",
    "parent_versions",
];

fn assert_same_entity(sent: &Value, got: &Value) {
    for f in ENTITY_FIELDS {
        assert_eq!(got[f], sent[f], "{f} of {}: got {got}", sent["id"]);
    }
}

async fn vocabulary(s: &TestServer, token: &str) -> Value {
    let (status, v) = s.get_json(token, "/api/v1/sync/vocabulary").await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Every entry point stores and serves unknown values and opaque versions
/// unchanged by default, and counts them.
async fn unknown_values_round_trip_on_every_entry_point(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let before = vocabulary(&s, &token).await;
    assert_eq!(before["strict"], false);
    assert_eq!(before["unknown"], json!({}));
    assert_eq!(
        before["known"]["relationship_type"],
        json!(RelationshipType::KNOWN_STRS)
    );
    // The Python CLI: `source_type: "None"`, a `+00:00Z` version, a naive since.
    let py = entity(
        "py-1",
        "2026-11-21T23:10:35.907338+00:00Z-blowing-off-cli",
        "device",
        "None",
    );
    // The TypeScript port: upper-case types, `v-<ms>` versions, `updated_at` sent.
    let ms = now_ms();
    let mut ts = entity("ts-1", &ts_version(ms), "DEVICE", "MANUAL");
    ts["updated_at"] = json!(Timestamp::now());
    let ts_room = entity("ts-room", &ts_version(ms + 1), "ROOM", "MANUAL");
    let mut body = legacy_body(
        "legacy",
        "delta",
        json!([
            change("create", py.clone(), json!([])),
            change("create", ts_room.clone(), json!([])),
            change(
                "create",
                ts.clone(),
                json!([
                    edge("r-lights", &ts, &py, "lights_up"),
                    edge("r-app", &ts, &ts_room, "controlled_by_app"),
                    edge("r-blob", &py, &ts_room, "has_blob"),
                    edge("r-upper", &py, &ts_room, "LOCATED_IN"),
                ])
            ),
            // Endpoint versions null, as the Python client may send them: any version
            // of an endpoint that exists (here: pushed in this batch); else not acked.
            change(
                "update",
                Value::Null,
                json!([
                    {"id": "r-null", "from_entity_id": "ts-1", "from_entity_version": null,
                     "to_entity_id": "py-1", "to_entity_version": null,
                     "relationship_type": "located_in", "properties": {}},
                    {"id": "r-ghost", "from_entity_id": "ts-1", "from_entity_version": null,
                     "to_entity_id": "ghost", "to_entity_version": null,
                     "relationship_type": "located_in", "properties": {}},
                ])
            ),
            // The reference client's delete without an entity: accepted, not acknowledged.
            change("delete", Value::Null, json!([])),
        ]),
    );
    body["filters"] = json!({"since": "2026-11-21T23:10:34.166497"});
    let (status, answer) = s.post_json(&token, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], json!(["py-1", "ts-room", "ts-1"]));
    assert_eq!(
        answer["applied_relationships"],
        json!(["r-lights", "r-app", "r-blob", "r-upper", "r-null"])
    );
    assert!(answer.get("capabilities").is_none(), "{answer}");
    // The no-slash form.
    let manual = entity("ts-2", &ts_version(ms + 2), "NOTE", "MANUAL");
    let (status, answer) = s
        .post_json(
            &token,
            "/api/v1/sync",
            &legacy_body(
                "legacy",
                "delta",
                json!([change("create", manual.clone(), json!([]))]),
            ),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"], json!(["ts-2"]));
    // The five-step push.
    let flow_version = ts_version(ms + 3);
    let (status, answer) = s
        .post_json(
            &token,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "seed", "changes": [{
                "entity_type": "DEVICE", "entity_id": "flow-1", "operation": "create",
                "data": {"name": "flow", "content": {}, "source_type": "None", "user_id": "seed"},
                "client_sync_id": flow_version,
            }]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["applied"][0]["client_sync_id"],
        flow_version.as_str()
    );
    // The graph REST API.
    let (status, created) = s
        .post_json(
            &token,
            "/api/v1/graph/entities",
            &json!({"entity_type": "DEVICE", "name": "g", "source_type": "None"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let graph_id = created["entity"]["id"].as_str().expect("id").to_owned();
    assert_eq!(created["entity"]["entity_type"], "DEVICE");
    assert_eq!(created["entity"]["source_type"], "None");
    let (status, rel) = s
        .post_json(
            &token,
            "/api/v1/graph/relationships",
            &json!({"source_id": graph_id, "target_id": "py-1", "relationship_type": "lights_up"}),
        )
        .await;
    assert_eq!(status, 200, "{rel}");
    assert_eq!(rel["relationship"]["relationship_type"], "lights_up");
    let (status, listed) = s
        .get_json(&token, "/api/v1/graph/entities?entity_type=DEVICE")
        .await;
    assert_eq!(status, 200, "{listed}");
    let mut ids: Vec<&str> = listed["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| e["id"].as_str().expect("id"))
        .collect();
    ids.sort_unstable();
    let mut want = vec!["flow-1", "ts-1", graph_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want);

    // Everything reads back unchanged.
    let (entities, rels, _) = pull_all(&s, &token).await;
    for sent in [&py, &ts, &ts_room, &manual] {
        assert_same_entity(sent, &entities[sent["id"].as_str().expect("id")]);
    }
    assert!(
        entities["ts-1"].get("updated_at").is_none(),
        "not sent back"
    );
    assert_eq!(entities["flow-1"]["version"], flow_version.as_str());
    assert_eq!(entities["flow-1"]["entity_type"], "DEVICE");
    assert_eq!(entities["flow-1"]["source_type"], "None");
    for (id, t) in [
        ("r-lights", "lights_up"),
        ("r-app", "controlled_by_app"),
        ("r-blob", "has_blob"),
        ("r-upper", "LOCATED_IN"),
    ] {
        assert_eq!(rels[id]["relationship_type"], t, "{id}");
    }
    assert_eq!(rels["r-lights"]["from_entity_version"], ts["version"]);
    assert_eq!(rels["r-null"]["from_entity_version"], Value::Null);
    assert_eq!(rels["r-null"]["to_entity_version"], Value::Null);
    assert!(!rels.contains_key("r-ghost"));
    // A null endpoint version naming an id stored earlier is acknowledged too.
    let later = legacy_body(
        "legacy",
        "delta",
        json!([change(
            "update",
            Value::Null,
            json!([
                {"id": "r-null-2", "from_entity_id": "py-1", "from_entity_version": null,
                 "to_entity_id": "ts-room", "to_entity_version": ts_room["version"],
                 "relationship_type": "has_blob", "properties": {}},
            ])
        )]),
    );
    let (status, answer) = s.post_json(&token, "/api/v1/sync/", &later).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied_relationships"], json!(["r-null-2"]));
    // Filters match unknown values verbatim, on v2 and the five-step request.
    let mut filtered = legacy_body("legacy", "full", json!([]));
    filtered["filters"] = json!({"entity_types": ["DEVICE"]});
    let (status, page) = s.post_json(&token, "/api/v1/sync/", &filtered).await;
    assert_eq!(status, 200, "{page}");
    let mut got: Vec<&str> = page["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["entity"]["id"].as_str().expect("id"))
        .collect();
    got.sort_unstable();
    assert_eq!(got, want);
    let (status, delta) = s
        .post_json(
            &token,
            "/api/v1/sync/request",
            &json!({"type": "sync_request", "client_id": "seed", "entity_types": ["NOTE"]}),
        )
        .await;
    assert_eq!(status, 200, "{delta}");
    let flow_ids: Vec<&str> = delta["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["entity_id"].as_str().expect("id"))
        .collect();
    assert_eq!(flow_ids, ["ts-2"]);

    // Counted per field and value, server-wide.
    let counts = vocabulary(&s, &token).await["unknown"].clone();
    assert_eq!(
        counts,
        json!({
            "entity_type": {"DEVICE": 3, "NOTE": 1, "ROOM": 1},
            "source_type": {"MANUAL": 3, "None": 3},
            "relationship_type": {"LOCATED_IN": 1, "lights_up": 2},
            "filters.entity_types": {"DEVICE": 2, "NOTE": 1},
        })
    );
    s.shutdown().await.expect("shutdown");
}

/// Strict mode refuses every unknown value and opaque version of a request in one
/// 422, on every entry point, and writes nothing.
async fn strict_mode_lists_every_problem_in_one_422(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_strict(true)).await else {
        return;
    };
    let token = s.login().await;
    let digest = s.handle.store().state_digest().await.expect("digest");
    let ok = entity("ok-1", Version::now("u").as_str(), "device", "manual");
    let bad = entity("bad-1", &ts_version(now_ms()), "DEVICE", "None");
    let mut not_object = entity("bad-2", Version::now("u").as_str(), "device", "manual");
    not_object["content"] = json!("text");
    let body = legacy_body(
        "strict",
        "delta",
        json!([
            change(
                "create",
                ok.clone(),
                json!([edge("r-1", &ok, &ok, "lights_up")])
            ),
            change("create", bad, json!([])),
            change("create", not_object, json!([])),
        ]),
    );
    let (status, answer) = s.post_json(&token, "/api/v1/sync/", &body).await;
    assert_eq!(status, 422, "{answer}");
    let locs: Vec<(Value, Value)> = answer["detail"]
        .as_array()
        .expect("detail")
        .iter()
        .map(|d| (d["loc"].clone(), d["type"].clone()))
        .collect();
    assert_eq!(
        locs,
        [
            (
                json!([
                    "body",
                    "changes",
                    0,
                    "relationships",
                    0,
                    "relationship_type"
                ]),
                json!("enum")
            ),
            (
                json!(["body", "changes", 1, "entity", "version"]),
                json!("value_error")
            ),
            (
                json!(["body", "changes", 1, "entity", "entity_type"]),
                json!("enum")
            ),
            (
                json!(["body", "changes", 1, "entity", "source_type"]),
                json!("enum")
            ),
            (
                json!(["body", "changes", 2, "entity", "content"]),
                json!("dict_type")
            ),
        ]
    );
    assert_eq!(answer["error"]["code"], "INVALID_REQUEST");
    // The five-step push: the same problems, named by its own fields.
    let (status, answer) = s
        .post_json(
            &token,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "seed", "changes": [{
                "entity_type": "DEVICE", "entity_id": "flow-1", "operation": "create",
                "data": {"name": "flow", "content": {}, "source_type": "None"},
                "client_sync_id": "nope",
            }]}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    let locs: Vec<Value> = answer["detail"]
        .as_array()
        .expect("detail")
        .iter()
        .map(|d| d["loc"].clone())
        .collect();
    assert_eq!(
        locs,
        [
            json!(["body", "changes", 0, "client_sync_id"]),
            json!(["body", "changes", 0, "entity_type"]),
            json!(["body", "changes", 0, "data", "source_type"]),
        ]
    );
    // Filters and the graph API.
    let mut filtered = legacy_body("strict", "full", json!([]));
    filtered["filters"] = json!({"entity_types": ["device", "DEVICE"]});
    let (status, answer) = s.post_json(&token, "/api/v1/sync/", &filtered).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["detail"][0]["loc"],
        json!(["body", "filters", "entity_types", 1])
    );
    let (status, answer) = s
        .post_json(
            &token,
            "/api/v1/graph/entities",
            &json!({"entity_type": "DEVICE", "name": "g", "source_type": "None"}),
        )
        .await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["detail"].as_array().map(Vec::len),
        Some(2),
        "{answer}"
    );
    assert_eq!(
        s.get_json(&token, "/api/v1/graph/entities?entity_type=DEVICE")
            .await
            .0,
        422
    );
    assert_eq!(
        s.handle.store().state_digest().await.expect("digest"),
        digest,
        "nothing was written"
    );
    let v = vocabulary(&s, &token).await;
    assert_eq!(
        (v["strict"].clone(), v["unknown"].clone()),
        (json!(true), json!({}))
    );
    s.shutdown().await.expect("shutdown");
}

/// The latest version of `id` on the server.
async fn latest(s: &TestServer, id: &str) -> String {
    s.handle
        .store()
        .entity(&inbetweenies_proto::EntityId::new(id))
        .await
        .expect("read")
        .expect("stored")
        .version
        .into_string()
}

async fn push_v2(s: &TestServer, token: &str, e: &Value) -> Value {
    let (status, answer) = s
        .post_json(
            token,
            "/api/v1/sync/",
            &legacy_body(
                "d",
                "delta",
                json!([change("update", e.clone(), json!([]))]),
            ),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Opaque versions are ordered by their edit time (PROTOCOL §8.2), the same over
/// inbetweenies-v2 and the five-step push.
async fn opaque_versions_are_ordered_by_edit_time(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    // Regression: "nope" through the five-step push, inside the 1-second window of a
    // timestamped version, used to win because it sorts after it. It loses. (The
    // timestamped edit is half a second ahead, so the receipt times of the opaque
    // pushes below fall inside its window however slowly they arrive, up to 1.5 s.)
    let t0 = Timestamp::now();
    let stamped = entity(
        "x",
        Version::generate(t0.saturating_add_micros(500_000), "alice").as_str(),
        "device",
        "manual",
    );
    push_v2(&s, &token, &stamped).await;
    let (status, answer) = s
        .post_json(
            &token,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "seed", "changes": [{
                "entity_type": "device", "entity_id": "x", "operation": "update",
                "data": {"name": "nope", "content": {}}, "client_sync_id": "nope",
            }]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["conflicts"][0]["reason"], "tiebreak_version",
        "{answer}"
    );
    assert_eq!(answer["conflicts"][0]["resolution"], "server_wins");
    assert_eq!(
        latest(&s, "x").await,
        stamped["version"].as_str().expect("v")
    );
    // The same over inbetweenies-v2 with a TypeScript version.
    let opaque = entity("x", &ts_version(now_ms()), "device", "manual");
    let answer = push_v2(&s, &token, &opaque).await;
    assert_eq!(answer["applied"], json!(["x"]), "acknowledged: it lost");
    assert_eq!(answer["conflicts"][0]["reason"], "tiebreak_version");
    assert_eq!(
        answer["conflicts"][0]["resolved_version"],
        stamped["version"]
    );
    assert_eq!(
        latest(&s, "x").await,
        stamped["version"].as_str().expect("v")
    );
    // Its `updated_at`, sent and older by an hour: the server's newer edit wins.
    let mut old = entity("x", &ts_version(now_ms() + 1), "device", "manual");
    old["updated_at"] = json!(Timestamp::now().saturating_add_micros(-3_600_000_000));
    let answer = push_v2(&s, &token, &old).await;
    assert_eq!(
        answer["conflicts"][0]["reason"], "newer_on_server",
        "{answer}"
    );
    // Sent two seconds ahead (within the skew allowance): the opaque edit is newer.
    let mut newer = entity("x", &ts_version(now_ms() + 2), "device", "manual");
    newer["updated_at"] = json!(Timestamp::now().saturating_add_micros(2_000_000));
    let answer = push_v2(&s, &token, &newer).await;
    assert_eq!(
        answer["conflicts"][0]["reason"], "newer_on_client",
        "{answer}"
    );
    assert_eq!(latest(&s, "x").await, newer["version"].as_str().expect("v"));
    // A re-send of an opaque version the server holds: acknowledged, no conflict.
    let answer = push_v2(&s, &token, &opaque).await;
    assert_eq!(
        (answer["applied"].clone(), answer["conflicts"].clone()),
        (json!(["x"]), json!([]))
    );
    // Both opaque, edit times within 1 s: the lexically greater wins, whichever
    // came last.
    let at = |micros: i64| json!(t0.saturating_add_micros(micros));
    let mut first = entity("y", "v-2000", "device", "manual");
    first["updated_at"] = at(0);
    push_v2(&s, &token, &first).await;
    let mut lower = entity("y", "v-1000", "device", "manual");
    lower["updated_at"] = at(300_000);
    let answer = push_v2(&s, &token, &lower).await;
    assert_eq!(
        answer["conflicts"][0]["reason"], "tiebreak_version",
        "{answer}"
    );
    assert_eq!(latest(&s, "y").await, "v-2000");
    let mut higher = entity("y", "v-3000", "device", "manual");
    higher["updated_at"] = at(100_000);
    let answer = push_v2(&s, &token, &higher).await;
    assert_eq!(
        answer["conflicts"][0]["reason"], "tiebreak_version",
        "{answer}"
    );
    assert_eq!(latest(&s, "y").await, "v-3000");
    // The same through the five-step push, its `data.updated_at` read alike.
    let (status, answer) = s
        .post_json(
            &token,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "seed", "changes": [{
                "entity_type": "device", "entity_id": "y", "operation": "update",
                "data": {"name": "y", "content": {}, "updated_at": at(200_000)},
                "client_sync_id": "v-4000",
            }]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["conflicts"][0]["resolution"], "client_wins",
        "{answer}"
    );
    assert_eq!(latest(&s, "y").await, "v-4000");
    // A fast-forward from an opaque parent is no conflict.
    let mut child = entity("y", Version::now("alice").as_str(), "device", "manual");
    child["parent_versions"] = json!(["v-4000"]);
    let answer = push_v2(&s, &token, &child).await;
    assert_eq!(answer["conflicts"], json!([]), "{answer}");
    assert_eq!(latest(&s, "y").await, child["version"].as_str().expect("v"));
    s.shutdown().await.expect("shutdown");
}

fn read_vector(name: &str) -> Value {
    let path = format!(
        "{}/tests/vectors/reference-graph/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("vector")).expect("json")
}

/// A graph in the reference's shapes: the two entities and the edge the reference
/// wrote, then one entity per known entity type and beyond (upper case, unknown),
/// cycling through every source type and beyond, with canonical, legacy and opaque
/// versions; an edge of every relationship type and beyond; an opaque update and a
/// tombstone. Returns the changes, in the order a client pushes them, and the
/// latest version of every id.
fn reference_graph() -> (Vec<Value>, BTreeMap<String, String>) {
    let room = read_vector("room.json")["entity"].clone();
    let device = read_vector("device.json")["entity"].clone();
    let located = read_vector("located_in.json")["relationship"].clone();
    let mut types: Vec<&str> = EntityType::KNOWN_STRS.to_vec();
    types.extend(["DEVICE", "spaceship"]);
    let mut sources: Vec<&str> = SourceType::KNOWN_STRS.to_vec();
    sources.extend(["None", "MANUAL"]);
    let mut rel_types: Vec<&str> = RelationshipType::KNOWN_STRS.to_vec();
    rel_types.extend(["teleports_to", "LOCATED_IN"]);
    let base_ms = 1_796_118_705_966_i64;
    let mut nodes: Vec<Value> = vec![room.clone(), device.clone()];
    for (i, t) in types.iter().enumerate() {
        let version = match i % 3 {
            0 => format!("2026-11-21T23:1{}:35.907338+00:00Z-blowing-off-cli", i % 10),
            1 => ts_version(base_ms + i as i64),
            _ => format!(
                "2026-11-22T0{}:00:00.000001+00:00-00000{}-alice",
                i % 10,
                i % 10
            ),
        };
        let mut e = entity(
            &format!("ref-{i:02}"),
            &version,
            t,
            sources[i % sources.len()],
        );
        e["user_id"] = json!(if i % 2 == 0 { "admin" } else { "lib-user" });
        nodes.push(e);
    }
    let mut changes: Vec<Value> = Vec::new();
    let mut rels_of: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    rels_of
        .entry(located["from_entity_id"].as_str().expect("id").to_owned())
        .or_default()
        .push(located);
    for (i, t) in rel_types.iter().enumerate() {
        let from = &nodes[2 + i % (nodes.len() - 2)];
        let to = &nodes[i % 2];
        let mut r = edge(&format!("ref-rel-{i:02}"), from, to, t);
        // The reference's relationship shape: user and times included.
        r["user_id"] = json!("admin");
        r["created_at"] = json!("2026-11-21T23:10:31.480915+00:00");
        r["updated_at"] = json!("2026-11-21T23:10:31.480922+00:00");
        rels_of
            .entry(from["id"].as_str().expect("id").to_owned())
            .or_default()
            .push(r);
    }
    let mut latest = BTreeMap::new();
    for n in &nodes {
        let id = n["id"].as_str().expect("id").to_owned();
        let mut record = n.clone();
        // The reference's graph rows carry created_at/updated_at; a client sends them on.
        if let Some(m) = record.as_object_mut() {
            m.retain(|k, _| ENTITY_FIELDS.contains(&k.as_str()) || k.ends_with("_at"));
        }
        latest.insert(id.clone(), n["version"].as_str().expect("v").to_owned());
        changes.push(change(
            "create",
            record,
            json!(rels_of.remove(&id).unwrap_or_default()),
        ));
    }
    // An opaque update of the reference's device, and a tombstone of one entity.
    let mut update = device.clone();
    update["version"] = json!(ts_version(base_ms + 1_000));
    update["parent_versions"] = json!([device["version"]]);
    update["content"] = json!({"manufacturer": "Acme", "watts": 7});
    update
        .as_object_mut()
        .expect("object")
        .retain(|k, _| ENTITY_FIELDS.contains(&k.as_str()));
    latest.insert(
        device["id"].as_str().expect("id").to_owned(),
        ts_version(base_ms + 1_000),
    );
    changes.push(change("update", update, json!([])));
    let gone = &nodes[5];
    let mut tomb = entity(
        gone["id"].as_str().expect("id"),
        &ts_version(base_ms + 2_000),
        gone["entity_type"].as_str().expect("t"),
        "None",
    );
    tomb["content"] = json!({"deleted": true});
    tomb["parent_versions"] = json!([gone["version"]]);
    latest.insert(
        gone["id"].as_str().expect("id").to_owned(),
        ts_version(base_ms + 2_000),
    );
    changes.push(change("delete", tomb, json!([])));
    (changes, latest)
}

/// A graph written by the reference copies into ours over the wire and through the
/// client library, with every field kept and the digests equal.
async fn a_reference_graph_copies_with_nothing_dropped(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_page_size(7)).await else {
        return;
    };
    let token = s.login().await;
    // The reference's digest of its own two-entity graph is the one computed here.
    let full = read_vector("full_sync.json");
    let pairs: Vec<(String, String)> = full["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            let e = &c["entity"];
            (
                e["id"].as_str().expect("id").to_owned(),
                e["version"].as_str().expect("v").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        inbetweenies_conflict::state_digest(pairs.iter().map(|(i, v)| (i.as_str(), v.as_str()))),
        full["state_digest"].as_str().expect("digest")
    );
    let (changes, latest) = reference_graph();
    let (status, answer) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &legacy_body("ref", "delta", json!(changes)),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let sent_rels: Vec<&Value> = changes
        .iter()
        .flat_map(|c| c["relationships"].as_array().expect("rels"))
        .collect();
    assert_eq!(
        answer["applied_relationships"].as_array().map(Vec::len),
        Some(sent_rels.len()),
        "{answer}"
    );
    let (entities, rels, digest) = pull_all(&s, &token).await;
    // Every entity: its latest version, with every field as sent.
    assert_eq!(entities.len(), latest.len());
    for c in &changes {
        let sent = &c["entity"];
        let id = sent["id"].as_str().expect("id");
        if latest[id] == sent["version"].as_str().expect("v") {
            assert_same_entity(sent, &entities[id]);
        }
    }
    // Every relationship, with every field as sent.
    assert_eq!(rels.len(), sent_rels.len());
    for r in &sent_rels {
        let got = &rels[r["id"].as_str().expect("id")];
        for (k, v) in r.as_object().expect("object") {
            assert_eq!(&got[k], v, "{k} of {}", r["id"]);
        }
    }
    let expected =
        inbetweenies_conflict::state_digest(latest.iter().map(|(i, v)| (i.as_str(), v.as_str())));
    assert_eq!(
        digest, expected,
        "the server's digest is the source graph's"
    );
    // The client library copies it too, opaque versions and all.
    let dir = tempfile::tempdir().expect("tempdir");
    let client = BlowingOffClient::builder(dir.path().join("client.db"))
        .config(ClientConfig::default().with_retry(RetryPolicy::immediate(3)))
        .open()
        .await
        .expect("open client");
    client
        .connect(&s.base, Some(&token))
        .await
        .expect("connect");
    let result = client.sync().await.expect("sync");
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    let check = result.digest.as_ref().expect("a digest check");
    assert_eq!(
        (check.local.as_str(), check.server.as_str()),
        (expected.as_str(), expected.as_str())
    );
    assert_eq!(client.state_digest().await.expect("digest"), expected);
    s.shutdown().await.expect("shutdown");
}

/// The client library over opaque versions others wrote: its mirror takes them, its
/// pull-guard keeps a pending local edit over a newer opaque version until the server
/// decides, and its digest agrees with the server's.
async fn the_client_library_keeps_working_over_opaque_versions(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let hour_ago = Timestamp::now().saturating_add_micros(-3_600_000_000);
    let mut first = entity("pg", "v-1796118705966", "DEVICE", "MANUAL");
    first["updated_at"] = json!(hour_ago);
    push_v2(&s, &token, &first).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let client = BlowingOffClient::builder(dir.path().join("client.db"))
        .config(ClientConfig::default().with_retry(RetryPolicy::immediate(3)))
        .open()
        .await
        .expect("open client");
    client
        .connect(&s.base, Some(&token))
        .await
        .expect("connect");
    let result = client.sync().await.expect("sync");
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    let id = inbetweenies_proto::EntityId::new("pg");
    let mirrored = client.entity(&id).await.expect("read").expect("mirrored");
    assert_eq!(mirrored.version.as_str(), "v-1796118705966");
    assert_eq!(mirrored.entity_type.as_str(), "DEVICE");
    // A local edit, pending; meanwhile the TypeScript client writes an older opaque edit.
    let mine = client
        .update_entity(&id, Some("mine"), None)
        .await
        .expect("edit");
    let mut theirs = entity("pg", "v-1796118709999", "DEVICE", "MANUAL");
    theirs["parent_versions"] = json!(["v-1796118705966"]);
    theirs["updated_at"] = json!(hour_ago.saturating_add_micros(60_000_000));
    push_v2(&s, &token, &theirs).await;
    assert_eq!(latest(&s, "pg").await, "v-1796118709999");
    let result = client.sync().await.expect("sync");
    assert!(result.errors.is_empty(), "{:?}", result.errors);
    // The server decided: the client's edit is newer than the opaque one's updated_at.
    assert_eq!(latest(&s, "pg").await, mine.version.as_str());
    let local = client.entity(&id).await.expect("read").expect("row");
    assert_eq!(local.version, mine.version);
    let check = result.digest.as_ref().expect("a digest check");
    assert_eq!(check.local, check.server);
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    the_client_library_keeps_working_over_opaque_versions,
    unknown_values_round_trip_on_every_entry_point,
    strict_mode_lists_every_problem_in_one_422,
    opaque_versions_are_ordered_by_edit_time,
    a_reference_graph_copies_with_nothing_dropped,
);
