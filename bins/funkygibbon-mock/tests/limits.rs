//! Every length limit of PROTOCOL §5.10 holds at its limit and refuses one byte past it, alike on the sync push, the five-step push and the graph API, on SQLite and PostgreSQL.
//!
//! For each field of each entry point the test sends a value of exactly the
//! limit (in bytes of UTF-8, mostly three-byte characters) and expects it
//! accepted, then a value one byte longer and expects a 422 with the JSON
//! error body whose `error.field` names the field, a `string_too_long` detail
//! item carrying the limit, and the store's state digest unchanged.

mod support;

use inbetweenies_proto::validate::{MAX_KEY_BYTES, MAX_NAME_BYTES};
use serde_json::{json, Value};
use support::{Backend, TestServer};

/// `len` bytes of UTF-8: three-byte characters, then ASCII to make up the rest.
fn text(len: usize, tag: char) -> String {
    let mut s = String::from(tag);
    s.push_str(&"\u{20ac}".repeat((len - 1) / 3));
    s.push_str(&"k".repeat((len - 1) % 3));
    assert_eq!(s.len(), len);
    s
}

/// A well-formed version of exactly `len` bytes.
fn version(len: usize, n: u32) -> String {
    let head = format!("2026-06-15T09:41:02.{n:06}+00:00-{n:06}-");
    format!("{head}{}", text(len - head.len(), 'v'))
}

#[derive(Clone, Copy, Debug)]
enum Method {
    Post,
    Put,
}

/// Where a value goes: a request built around it.
struct Field {
    label: &'static str,
    limit: usize,
    /// `error.field` of the refusal.
    field: &'static str,
    /// The request for a value (the second argument makes ids unique per call).
    build: fn(String, u32) -> (Method, String, Value),
}

fn sync_entity(id: &str, n: u32) -> Value {
    json!({"id": id, "version": version(60, n), "entity_type": "note", "name": "n",
           "content": {}, "source_type": "manual", "user_id": "tester", "parent_versions": []})
}

fn sync_body(device: &str, user: &str, changes: Value) -> Value {
    json!({"protocol_version": "inbetweenies-v2", "device_id": device, "user_id": user,
           "sync_type": "delta", "changes": changes, "vector_clock": {"clocks": {}}})
}

fn sync_entity_with(key: &str, v: String, n: u32) -> (Method, String, Value) {
    let mut e = sync_entity(&format!("lim-{n}"), n);
    if key == "parent_versions" {
        e[key] = json!([v]);
    } else {
        e[key] = json!(v);
    }
    let change = json!({"change_type": "create", "entity": e, "relationships": []});
    (
        Method::Post,
        "/api/v1/sync/".into(),
        sync_body("lim-device", "tester", json!([change])),
    )
}

fn sync_relationship_with(key: &str, v: String, n: u32) -> (Method, String, Value) {
    let e = sync_entity(&format!("lim-{n}"), n);
    let mut rel = json!({"id": format!("lim-rel-{n}"), "from_entity_id": e["id"],
        "from_entity_version": e["version"], "to_entity_id": "lim-b", "to_entity_version": null,
        "relationship_type": "located_in", "properties": {}, "user_id": "tester"});
    rel[key] = json!(v);
    let change = json!({"change_type": "create", "entity": e, "relationships": [rel]});
    (
        Method::Post,
        "/api/v1/sync/".into(),
        sync_body("lim-device", "tester", json!([change])),
    )
}

fn flow_with(key: &str, v: String, n: u32) -> (Method, String, Value) {
    let mut change = json!({"entity_type": "note", "entity_id": format!("lim-flow-{n}"),
        "operation": "create", "client_sync_id": version(60, n),
        "data": {"name": "n", "content": {}, "source_type": "manual", "user_id": "tester",
                 "parent_versions": []}});
    let mut body = json!({"type": "sync_push", "client_id": "lim-flow", "changes": []});
    match key {
        "client_id" | "user_id" => body[key] = json!(v),
        "user_id_data" => change["data"]["user_id"] = json!(v),
        "entity_type" | "entity_id" | "client_sync_id" => change[key] = json!(v),
        "parent_versions" => change["data"][key] = json!([v]),
        _ => change["data"][key] = json!(v),
    }
    body["changes"] = json!([change]);
    (Method::Post, "/api/v1/sync/push".into(), body)
}

fn graph_create_with(key: &str, v: String, n: u32) -> (Method, String, Value) {
    let mut body = json!({"id": format!("lim-graph-{n}"), "entity_type": "note", "name": "n",
                          "content": {}});
    body[key] = if key == "parent_versions" {
        json!([v])
    } else {
        json!(v)
    };
    (Method::Post, "/api/v1/graph/entities".into(), body)
}

fn graph_update_with(key: &str, v: String, _n: u32) -> (Method, String, Value) {
    let mut body = json!({"name": "n"});
    body[key] = json!(v);
    (Method::Put, "/api/v1/graph/entities/lim-a".into(), body)
}

fn graph_relationship_with(key: &str, v: String, n: u32) -> (Method, String, Value) {
    let mut body = json!({"id": format!("lim-grel-{n}"), "source_id": "lim-a",
                          "target_id": "lim-b", "relationship_type": "located_in"});
    body[key] = json!(v);
    (Method::Post, "/api/v1/graph/relationships".into(), body)
}

macro_rules! field {
    ($label:expr, $limit:expr, $field:expr, $f:ident, $key:expr) => {
        Field {
            label: $label,
            limit: $limit,
            field: $field,
            build: |v, n| $f($key, v, n),
        }
    };
}

fn fields() -> Vec<Field> {
    const K: usize = MAX_KEY_BYTES;
    const N: usize = MAX_NAME_BYTES;
    vec![
        // Sync push (PROTOCOL §5).
        Field {
            label: "sync device_id",
            limit: K,
            field: "device_id",
            build: |v, n| {
                let (m, p, mut b) = sync_entity_with("name", "n".into(), n);
                b["device_id"] = json!(v);
                (m, p, b)
            },
        },
        Field {
            label: "sync user_id",
            limit: K,
            field: "user_id",
            build: |v, n| {
                let (m, p, mut b) = sync_entity_with("name", "n".into(), n);
                b["user_id"] = json!(v);
                (m, p, b)
            },
        },
        field!(
            "sync entity id",
            K,
            "changes[0].entity.id",
            sync_entity_with,
            "id"
        ),
        Field {
            label: "sync entity version",
            limit: K,
            field: "changes[0].entity.version",
            build: |v, n| sync_entity_with("version", v, n),
        },
        field!(
            "sync entity_type",
            K,
            "changes[0].entity.entity_type",
            sync_entity_with,
            "entity_type"
        ),
        field!(
            "sync name",
            N,
            "changes[0].entity.name",
            sync_entity_with,
            "name"
        ),
        field!(
            "sync source_type",
            K,
            "changes[0].entity.source_type",
            sync_entity_with,
            "source_type"
        ),
        field!(
            "sync entity user_id",
            K,
            "changes[0].entity.user_id",
            sync_entity_with,
            "user_id"
        ),
        field!(
            "sync parent version",
            K,
            "changes[0].entity.parent_versions[0]",
            sync_entity_with,
            "parent_versions"
        ),
        field!(
            "sync relationship id",
            K,
            "changes[0].relationships[0].id",
            sync_relationship_with,
            "id"
        ),
        field!(
            "sync from_entity_id",
            K,
            "changes[0].relationships[0].from_entity_id",
            sync_relationship_with,
            "from_entity_id"
        ),
        field!(
            "sync to_entity_id",
            K,
            "changes[0].relationships[0].to_entity_id",
            sync_relationship_with,
            "to_entity_id"
        ),
        field!(
            "sync to_entity_version",
            K,
            "changes[0].relationships[0].to_entity_version",
            sync_relationship_with,
            "to_entity_version"
        ),
        field!(
            "sync relationship_type",
            K,
            "changes[0].relationships[0].relationship_type",
            sync_relationship_with,
            "relationship_type"
        ),
        field!(
            "sync relationship user_id",
            K,
            "changes[0].relationships[0].user_id",
            sync_relationship_with,
            "user_id"
        ),
        // Five-step push (PROTOCOL §10.3).
        field!("flow client_id", K, "client_id", flow_with, "client_id"),
        field!("flow user_id", K, "user_id", flow_with, "user_id"),
        field!(
            "flow entity_id",
            K,
            "changes[0].entity_id",
            flow_with,
            "entity_id"
        ),
        field!(
            "flow client_sync_id",
            K,
            "changes[0].client_sync_id",
            flow_with,
            "client_sync_id"
        ),
        field!(
            "flow entity_type",
            K,
            "changes[0].entity_type",
            flow_with,
            "entity_type"
        ),
        field!("flow name", N, "changes[0].data.name", flow_with, "name"),
        field!(
            "flow source_type",
            K,
            "changes[0].data.source_type",
            flow_with,
            "source_type"
        ),
        field!(
            "flow data user_id",
            K,
            "changes[0].data.user_id",
            flow_with,
            "user_id_data"
        ),
        field!(
            "flow parent version",
            K,
            "changes[0].data.parent_versions[0]",
            flow_with,
            "parent_versions"
        ),
        // Graph API (SERVER.md).
        field!("graph create id", K, "id", graph_create_with, "id"),
        field!(
            "graph create entity_type",
            K,
            "entity_type",
            graph_create_with,
            "entity_type"
        ),
        field!("graph create name", N, "name", graph_create_with, "name"),
        field!(
            "graph create source_type",
            K,
            "source_type",
            graph_create_with,
            "source_type"
        ),
        field!(
            "graph create user_id",
            K,
            "user_id",
            graph_create_with,
            "user_id"
        ),
        field!(
            "graph create parent version",
            K,
            "parent_versions[0]",
            graph_create_with,
            "parent_versions"
        ),
        field!("graph update name", N, "name", graph_update_with, "name"),
        field!(
            "graph update entity_type",
            K,
            "entity_type",
            graph_update_with,
            "entity_type"
        ),
        field!(
            "graph update source_type",
            K,
            "source_type",
            graph_update_with,
            "source_type"
        ),
        field!(
            "graph update user_id",
            K,
            "user_id",
            graph_update_with,
            "user_id"
        ),
        field!(
            "graph relationship id",
            K,
            "id",
            graph_relationship_with,
            "id"
        ),
        field!(
            "graph relationship relationship_type",
            K,
            "relationship_type",
            graph_relationship_with,
            "relationship_type"
        ),
        field!(
            "graph relationship user_id",
            K,
            "user_id",
            graph_relationship_with,
            "user_id"
        ),
    ]
}

async fn send(
    s: &TestServer,
    token: &str,
    (method, path, body): (Method, String, Value),
) -> (u16, Value) {
    match method {
        Method::Post => s.post_json(token, &path, &body).await,
        Method::Put => s.put_json(token, &path, &body).await,
    }
}

async fn every_limit_holds_at_the_limit_and_refuses_one_byte_past(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    for id in ["lim-a", "lim-b"] {
        let (status, body) = s
            .post_json(
                &token,
                "/api/v1/graph/entities",
                &json!({"id": id, "entity_type": "room", "name": id, "content": {}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let mut failures = Vec::new();
    for (n, f) in (1u32..).zip(fields()) {
        let value = |len: usize| {
            if f.label.contains("version") || f.label.contains("client_sync_id") {
                version(len, n)
            } else {
                text(len, char::from(b'a' + (n % 26) as u8))
            }
        };
        // One byte past: refused at the field, nothing stored.
        let before = s.handle.store().state_digest().await.expect("digest");
        let (status, body) = send(&s, &token, (f.build)(value(f.limit + 1), n)).await;
        let item = &body["detail"][0];
        let ok = status == 422
            && body["error"]["code"] == "INVALID_REQUEST"
            && body["error"]["field"] == f.field
            && item["type"] == "string_too_long"
            && item["ctx"]["max_length"] == f.limit;
        if !ok {
            failures.push(format!(
                "{}: past the limit answered {status} {body:.300}",
                f.label
            ));
        }
        let after = s.handle.store().state_digest().await.expect("digest");
        if before != after {
            failures.push(format!("{}: a refused request changed the store", f.label));
        }
        // At the limit: accepted.
        let (status, body) = send(&s, &token, (f.build)(value(f.limit), n)).await;
        if status != 200 {
            failures.push(format!(
                "{}: at the limit answered {status} {body:.300}",
                f.label
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(every_limit_holds_at_the_limit_and_refuses_one_byte_past);
