//! The graph REST API and the five-step flow refuse a key string past the cap or any string with U+0000 alike on SQLite and PostgreSQL, store nothing of it, and keep a key at the cap.
//!
//! One server on SQLite and one on PostgreSQL (both accepting unknown types,
//! so a type string reaches the store) get the very same requests: a 4 KB
//! incompressible key string and a string holding U+0000 at every field of
//! the graph API's writes (entity create and update, relationship create),
//! at its selecting path and query parameters, and at the five-step flow's
//! `client_id` (request, push, ack). Each must be a 422 with the JSON error
//! body naming the field, the same on both, and leave both stores as they
//! were. A key exactly 1,024 bytes long is then accepted by every one of
//! those entry points and reads back identically from both.

mod support;

use serde_json::{json, Value};
use support::{read, Backend, TestServer};

/// The cap on a key string, in bytes (PROTOCOL §5.10).
const CAP: usize = 1024;

/// `len` bytes of letters that do not compress (a fixed pseudo-random sequence).
fn incompressible(len: usize, seed: u64) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// A 4 KB key string, past the cap.
fn long() -> String {
    incompressible(4096, 1)
}

/// A string with U+0000 in it.
const NUL: &str = "a\u{0}b";

/// The ids of the two entities every server holds before the table runs.
const A: &str = "key-strings-a";
const B: &str = "key-strings-b";

#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
}

/// One request both servers must refuse alike.
struct Case {
    label: &'static str,
    method: Method,
    path: String,
    body: Value,
    /// The expected first detail item's `type` and `loc`.
    kind: &'static str,
    loc: Value,
}

fn case(
    label: &'static str,
    method: Method,
    path: &str,
    body: Value,
    kind: &'static str,
    loc: Value,
) -> Case {
    Case {
        label,
        method,
        path: path.to_owned(),
        body,
        kind,
        loc,
    }
}

const TOO_LONG: &str = "string_too_long";
const NUL_KIND: &str = "value_error";
const ENTITIES: &str = "/api/v1/graph/entities";
const RELATIONSHIPS: &str = "/api/v1/graph/relationships";

fn entity(with: Value) -> Value {
    let mut body = json!({"entity_type": "note", "name": "n", "content": {"k": "v"}});
    for (k, v) in with.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

fn relationship(with: Value) -> Value {
    let mut body = json!({"source_id": A, "target_id": B, "relationship_type": "located_in"});
    for (k, v) in with.as_object().expect("object") {
        body[k] = v.clone();
    }
    body
}

fn ack(client_id: &str) -> Value {
    json!({"type": "sync_ack", "client_id": client_id, "sync_completed_at": "2026-03-01T12:00:00+00:00"})
}

fn flow_request(client_id: &str) -> Value {
    json!({"type": "sync_request", "client_id": client_id})
}

fn flow_push(client_id: &str) -> Value {
    json!({"type": "sync_push", "client_id": client_id, "changes": []})
}

fn cases() -> Vec<Case> {
    use Method::{Get, Post, Put};
    let long = long();
    let a = format!("{ENTITIES}/{A}");
    vec![
        // Graph entity create: key strings past the cap.
        case(
            "entity id 4 KB",
            Post,
            ENTITIES,
            entity(json!({"id": long})),
            TOO_LONG,
            json!(["body", "id"]),
        ),
        case(
            "entity type 4 KB",
            Post,
            ENTITIES,
            entity(json!({"entity_type": long})),
            TOO_LONG,
            json!(["body", "entity_type"]),
        ),
        // Graph entity create: U+0000 anywhere stored.
        case(
            "entity id U+0000",
            Post,
            ENTITIES,
            entity(json!({"id": NUL})),
            NUL_KIND,
            json!(["body", "id"]),
        ),
        case(
            "entity type U+0000",
            Post,
            ENTITIES,
            entity(json!({"entity_type": NUL})),
            NUL_KIND,
            json!(["body", "entity_type"]),
        ),
        case(
            "entity name U+0000",
            Post,
            ENTITIES,
            entity(json!({"name": NUL})),
            NUL_KIND,
            json!(["body", "name"]),
        ),
        case(
            "content key U+0000",
            Post,
            ENTITIES,
            entity(json!({"content": {NUL: 1}})),
            NUL_KIND,
            json!(["body", "content", NUL]),
        ),
        case(
            "content value U+0000",
            Post,
            ENTITIES,
            entity(json!({"content": {"k": [NUL]}})),
            NUL_KIND,
            json!(["body", "content", "k", 0]),
        ),
        case(
            "entity source type U+0000",
            Post,
            ENTITIES,
            entity(json!({"source_type": NUL})),
            NUL_KIND,
            json!(["body", "source_type"]),
        ),
        case(
            "entity user U+0000",
            Post,
            ENTITIES,
            entity(json!({"user_id": NUL})),
            NUL_KIND,
            json!(["body", "user_id"]),
        ),
        case(
            "parent version U+0000",
            Post,
            ENTITIES,
            entity(json!({"parent_versions": [NUL]})),
            NUL_KIND,
            json!(["body", "parent_versions", 0]),
        ),
        // Graph entity update.
        case(
            "update name U+0000",
            Put,
            &a,
            json!({"name": NUL}),
            NUL_KIND,
            json!(["body", "name"]),
        ),
        case(
            "update content U+0000",
            Put,
            &a,
            json!({"content": {"k": NUL}}),
            NUL_KIND,
            json!(["body", "content", "k"]),
        ),
        case(
            "update type 4 KB",
            Put,
            &a,
            json!({"entity_type": long}),
            TOO_LONG,
            json!(["body", "entity_type"]),
        ),
        case(
            "update type U+0000",
            Put,
            &a,
            json!({"entity_type": NUL}),
            NUL_KIND,
            json!(["body", "entity_type"]),
        ),
        case(
            "update path id U+0000",
            Put,
            &format!("{ENTITIES}/a%00b"),
            json!({"name": "x"}),
            NUL_KIND,
            json!(["path", "id"]),
        ),
        // Graph relationship create.
        case(
            "relationship id 4 KB",
            Post,
            RELATIONSHIPS,
            relationship(json!({"id": long})),
            TOO_LONG,
            json!(["body", "id"]),
        ),
        case(
            "relationship id U+0000",
            Post,
            RELATIONSHIPS,
            relationship(json!({"id": NUL})),
            NUL_KIND,
            json!(["body", "id"]),
        ),
        case(
            "source id 4 KB",
            Post,
            RELATIONSHIPS,
            relationship(json!({"source_id": long})),
            TOO_LONG,
            json!(["body", "source_id"]),
        ),
        case(
            "target id U+0000",
            Post,
            RELATIONSHIPS,
            relationship(json!({"target_id": NUL})),
            NUL_KIND,
            json!(["body", "target_id"]),
        ),
        case(
            "from entity id U+0000",
            Post,
            RELATIONSHIPS,
            json!({"from_entity_id": NUL, "to_entity_id": B, "relationship_type": "located_in"}),
            NUL_KIND,
            json!(["body", "from_entity_id"]),
        ),
        case(
            "relationship type U+0000",
            Post,
            RELATIONSHIPS,
            relationship(json!({"relationship_type": NUL})),
            NUL_KIND,
            json!(["body", "relationship_type"]),
        ),
        case(
            "properties value U+0000",
            Post,
            RELATIONSHIPS,
            relationship(json!({"properties": {"k": NUL}})),
            NUL_KIND,
            json!(["body", "properties", "k"]),
        ),
        case(
            "properties key U+0000",
            Post,
            RELATIONSHIPS,
            relationship(json!({"properties": {NUL: true}})),
            NUL_KIND,
            json!(["body", "properties", NUL]),
        ),
        // Selecting parameters.
        case(
            "listing name U+0000",
            Get,
            &format!("{ENTITIES}?name=a%00b"),
            Value::Null,
            NUL_KIND,
            json!(["query", "name"]),
        ),
        case(
            "listing type U+0000",
            Get,
            &format!("{ENTITIES}?entity_type=a%00b"),
            Value::Null,
            NUL_KIND,
            json!(["query", "entity_type"]),
        ),
        case(
            "relationship listing source U+0000",
            Get,
            &format!("{RELATIONSHIPS}?source_id=a%00b"),
            Value::Null,
            NUL_KIND,
            json!(["query", "source_id"]),
        ),
        case(
            "entity path id U+0000",
            Get,
            &format!("{ENTITIES}/a%00b"),
            Value::Null,
            NUL_KIND,
            json!(["path", "id"]),
        ),
        case(
            "entity path id 4 KB",
            Get,
            &format!("{ENTITIES}/{long}"),
            Value::Null,
            TOO_LONG,
            json!(["path", "id"]),
        ),
        case(
            "relationship listing target 4 KB",
            Get,
            &format!("{RELATIONSHIPS}?target_id={long}"),
            Value::Null,
            TOO_LONG,
            json!(["query", "target_id"]),
        ),
        case(
            "versions path id U+0000",
            Get,
            &format!("{ENTITIES}/a%00b/versions"),
            Value::Null,
            NUL_KIND,
            json!(["path", "id"]),
        ),
        case(
            "search query U+0000",
            Post,
            "/api/v1/graph/search",
            json!({"query": NUL}),
            NUL_KIND,
            json!(["body", "query"]),
        ),
        // The five-step flow's client id.
        case(
            "ack client id 4 KB",
            Post,
            "/api/v1/sync/ack",
            ack(&long),
            TOO_LONG,
            json!(["body", "client_id"]),
        ),
        case(
            "ack client id U+0000",
            Post,
            "/api/v1/sync/ack",
            ack(NUL),
            NUL_KIND,
            json!(["body", "client_id"]),
        ),
        case(
            "request client id 4 KB",
            Post,
            "/api/v1/sync/request",
            flow_request(&long),
            TOO_LONG,
            json!(["body", "client_id"]),
        ),
        case(
            "request client id U+0000",
            Post,
            "/api/v1/sync/request",
            flow_request(NUL),
            NUL_KIND,
            json!(["body", "client_id"]),
        ),
        case(
            "request entity type U+0000",
            Post,
            "/api/v1/sync/request",
            json!({"type": "sync_request", "client_id": "c", "entity_types": [NUL]}),
            NUL_KIND,
            json!(["body", "entity_types", 0]),
        ),
        case(
            "push client id 4 KB",
            Post,
            "/api/v1/sync/push",
            flow_push(&long),
            TOO_LONG,
            json!(["body", "client_id"]),
        ),
        case(
            "push client id U+0000",
            Post,
            "/api/v1/sync/push",
            flow_push(NUL),
            NUL_KIND,
            json!(["body", "client_id"]),
        ),
    ]
}

async fn send(
    server: &TestServer,
    token: &str,
    method: Method,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    let url = server.url(path);
    let req = match method {
        Method::Get => server.http.get(url),
        Method::Post => server.http.post(url).json(body),
        Method::Put => server.http.put(url).json(body),
    };
    read(req.bearer_auth(token).send().await.expect("request")).await
}

/// What a store holds, as the graph API counts it.
async fn counts(server: &TestServer, token: &str) -> Value {
    let (status, body) = send(
        server,
        token,
        Method::Get,
        "/api/v1/graph/statistics",
        &Value::Null,
    )
    .await;
    assert_eq!(status, 200, "statistics: {body}");
    json!({
        "entities": body["total_entities"],
        "versions": body["total_versions"],
        "relationships": body["total_relationships"],
        "digest": body["state_digest"],
    })
}

/// A device's recorded syncs and acknowledgement.
async fn client_status(server: &TestServer, token: &str, device_id: &str) -> (u64, Value) {
    let res = server
        .http
        .get(server.url("/api/v1/sync/status"))
        .bearer_auth(token)
        .query(&[("device_id", device_id)])
        .send()
        .await
        .expect("status");
    let (status, body) = read(res).await;
    assert_eq!(status, 200, "status");
    (
        body["sync_count"].as_u64().expect("sync_count"),
        body["last_ack"].clone(),
    )
}

/// A body cut short for a failure message.
fn truncate(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// The fields of an entity or relationship a client chose (not the server's version or times).
fn chosen(v: &Value, fields: &[&str]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|f| ((*f).to_owned(), v[*f].clone()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_api_and_five_step_flow_refuse_long_or_nul_key_strings_alike_and_keep_keys_at_the_cap(
) {
    let tweak = |c: funkygibbon_mock::ServerConfig| c.with_strict(false);
    let Some(sqlite) = TestServer::start_with(Backend::Sqlite, tweak).await else {
        return;
    };
    let Some(postgres) = TestServer::start_with(Backend::Postgres, tweak).await else {
        return;
    };
    let servers = [("SQLite", &sqlite), ("PostgreSQL", &postgres)];
    let mut tokens = Vec::new();
    for (_, s) in servers {
        let token = s.login().await;
        for id in [A, B] {
            let (status, body) = send(
                s,
                &token,
                Method::Post,
                ENTITIES,
                &entity(json!({"id": id})),
            )
            .await;
            assert_eq!(status, 200, "seed {id}: {body}");
        }
        tokens.push(token);
    }
    let mut before = Vec::new();
    for ((_, s), token) in servers.iter().zip(&tokens) {
        before.push(counts(s, token).await);
    }

    let mut failures = Vec::new();
    for c in cases() {
        let mut answers = Vec::new();
        for ((_, s), token) in servers.iter().zip(&tokens) {
            answers.push(send(s, token, c.method, &c.path, &c.body).await);
        }
        let ((sa, a), (sb, b)) = (&answers[0], &answers[1]);
        if answers[0] != answers[1] {
            failures.push(format!(
                "{}: SQLite answered {sa} {}, PostgreSQL {sb} {}",
                c.label,
                truncate(a),
                truncate(b)
            ));
            continue;
        }
        let item = &a["detail"][0];
        let ok = *sa == 422
            && a["error"]["code"].is_string()
            && a["error"]["field"].is_string()
            && item["type"] == json!(c.kind)
            && item["loc"] == c.loc
            && (c.kind != TOO_LONG || item["ctx"]["max_length"] == CAP);
        if !ok {
            failures.push(format!(
                "{}: both answered {sa} {}, expected 422 {} at {}",
                c.label,
                truncate(a),
                c.kind,
                c.loc
            ));
        }
    }

    // Nothing refused was stored: no entity, version or relationship, no sync or ack of a long client id.
    for (((backend, s), token), before) in servers.iter().zip(&tokens).zip(&before) {
        let after = counts(s, token).await;
        if after != *before {
            failures.push(format!(
                "{backend}: the store changed from {before} to {after}"
            ));
        }
        // The status endpoint refuses such an id now; ask the store itself.
        let recorded = s
            .handle
            .store()
            .client_status(&long())
            .await
            .expect("store read");
        if recorded.is_some() {
            failures.push(format!(
                "{backend}: recorded {recorded:?} for the refused client id"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Keys exactly at the cap are accepted everywhere and read back identically.
    let id = incompressible(CAP, 2);
    let target = incompressible(CAP, 3);
    let rel_id = incompressible(CAP, 4);
    let entity_type = incompressible(CAP, 5);
    let client = incompressible(CAP, 6);
    let entity_fields = [
        "id",
        "entity_type",
        "name",
        "content",
        "source_type",
        "user_id",
    ];
    let rel_fields = [
        "id",
        "from_entity_id",
        "to_entity_id",
        "relationship_type",
        "properties",
    ];
    let mut read_back = Vec::new();
    for ((backend, s), token) in servers.iter().zip(&tokens) {
        for (eid, etype) in [(&id, &entity_type), (&target, &"note".to_owned())] {
            let sent = entity(json!({"id": eid, "entity_type": etype, "content": {"k": "v"}}));
            let (status, body) = send(s, token, Method::Post, ENTITIES, &sent).await;
            assert_eq!(
                status,
                200,
                "{backend}: entity at the cap: {}",
                truncate(&body)
            );
        }
        let sent = json!({"id": rel_id, "source_id": id, "target_id": target, "relationship_type": "located_in", "properties": {"p": 1}});
        let (status, body) = send(s, token, Method::Post, RELATIONSHIPS, &sent).await;
        assert_eq!(
            status,
            200,
            "{backend}: relationship at the cap: {}",
            truncate(&body)
        );
        let (status, body) = send(
            s,
            token,
            Method::Put,
            &format!("{ENTITIES}/{id}"),
            &json!({"name": "renamed"}),
        )
        .await;
        assert_eq!(
            status,
            200,
            "{backend}: update at the cap: {}",
            truncate(&body)
        );
        for (path, body) in [
            ("/api/v1/sync/request", flow_request(&client)),
            ("/api/v1/sync/push", flow_push(&client)),
            ("/api/v1/sync/ack", ack(&client)),
        ] {
            let (status, answer) = send(s, token, Method::Post, path, &body).await;
            assert_eq!(
                status,
                200,
                "{backend}: {path} at the cap: {}",
                truncate(&answer)
            );
        }
        let (status, got) = send(
            s,
            token,
            Method::Get,
            &format!("{ENTITIES}/{id}"),
            &Value::Null,
        )
        .await;
        assert_eq!(status, 200, "{backend}: read back: {}", truncate(&got));
        let (syncs, last_ack) = client_status(s, token, &client).await;
        let relationships: Vec<Value> = got["outgoing"]
            .as_array()
            .expect("outgoing")
            .iter()
            .map(|r| chosen(r, &rel_fields))
            .collect();
        read_back.push(json!({
            "entity": chosen(&got["entity"], &entity_fields),
            "relationships": relationships,
            "syncs": syncs,
            "last_ack": last_ack,
        }));
    }
    let expected = json!({
        "entity": {"id": id, "entity_type": entity_type, "name": "renamed", "content": {"k": "v"}, "source_type": "manual", "user_id": read_back[0]["entity"]["user_id"]},
        "relationships": [{"id": rel_id, "from_entity_id": id, "to_entity_id": target, "relationship_type": "located_in", "properties": {"p": 1}}],
        "syncs": 1,
        "last_ack": "2026-03-01T12:00:00.000000+00:00",
    });
    assert_eq!(
        read_back[0], read_back[1],
        "the backends read back differently"
    );
    assert_eq!(read_back[0], expected, "not read back as sent");
}

/// A device's sync status asked for by a device id no store can key on (U+0000, or past
/// the cap) is the same 422 naming the query parameter on both backends (it was a 500 on
/// PostgreSQL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_status_refuses_a_device_id_no_store_can_key_on_alike() {
    let Some(sqlite) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let Some(postgres) = TestServer::start(Backend::Postgres).await else {
        return;
    };
    let long = "d".repeat(1_025);
    for device_id in ["a\u{0}b", long.as_str()] {
        let mut answers = Vec::new();
        for s in [&sqlite, &postgres] {
            let token = s.login().await;
            let res = s
                .http
                .get(s.url("/api/v1/sync/status"))
                .bearer_auth(&token)
                .query(&[("device_id", device_id)])
                .send()
                .await
                .expect("status");
            answers.push(read(res).await);
        }
        assert_eq!(answers[0], answers[1], "both backends alike");
        let (status, body) = &answers[0];
        assert_eq!(*status, 422, "{body}");
        assert_eq!(
            body["detail"][0]["loc"],
            json!(["query", "device_id"]),
            "{body}"
        );
    }
    let token = sqlite.login().await;
    assert_eq!(
        client_status(&sqlite, &token, &"d".repeat(1_024)).await.0,
        0
    );
}
