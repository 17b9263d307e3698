//! The writing tools on the server, where they meet sync and auth (SQLite and PostgreSQL):
//! a tool's write and a client's offline edit of the same entity meet the conflict rule
//! when the client syncs, and both sides end on the same version; guests read with the
//! tools but every writing tool answers them 403, and nothing is written.

mod support;

use goodies_client::{BlowingOffClient, EntityId};
use serde_json::{json, Value};
use support::{Backend, TestServer};

async fn tool(server: &TestServer, token: &str, name: &str, args: Value) -> (u16, Value) {
    server
        .post_json(
            token,
            &format!("/api/v1/mcp/tools/{name}"),
            &json!({ "arguments": args }),
        )
        .await
}

async fn a_tool_write_meets_an_offline_edit(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let admin = server.login().await;
    let (s, made) = tool(
        &server,
        &admin,
        "create_entity",
        json!({"entity_type": "device", "name": "Heater", "content": {"power": "off"}}),
    )
    .await;
    assert_eq!(s, 200, "{made}");
    let id = made["result"]["entity"]["id"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let client = BlowingOffClient::open(dir.path().join("a.db"))
        .await
        .unwrap();
    client.connect(&server.base, Some(&admin)).await.unwrap();
    let first = client.sync().await.unwrap();
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let eid = EntityId::new(&id);
    assert_eq!(client.entity(&eid).await.unwrap().unwrap().name, "Heater");

    // The client edits offline; then an assistant edits the same device on the server.
    client
        .update_entity(&eid, Some("Client Heater"), None)
        .await
        .unwrap();
    let (s, updated) = tool(
        &server,
        &admin,
        "update_entity",
        json!({"entity_id": id, "changes": {"content": {"power": "on"}}, "user_id": "assistant"}),
    )
    .await;
    assert_eq!(s, 200, "{updated}");

    // The client's push meets the tool's version: the server decides, both converge.
    let second = client.sync().await.unwrap();
    assert!(second.errors.is_empty(), "{:?}", second.errors);
    assert_eq!(second.conflicts.len(), 1, "{second:?}");
    assert_eq!(second.conflicts[0].entity_id, eid);
    let latest = server.handle.store().entity(&eid).await.unwrap().unwrap();
    let mirrored = client.entity(&eid).await.unwrap().unwrap();
    assert_eq!(mirrored.version, latest.version);
    assert_eq!(mirrored.content, latest.content);
    assert_eq!(client.pending_changes().await.unwrap(), 0);
    let (s, details) = tool(
        &server,
        &admin,
        "get_entity_details",
        json!({"entity_id": id}),
    )
    .await;
    assert_eq!(s, 200, "{details}");
    assert_eq!(details["result"]["current_version"], json!(latest.version));
    assert!(details["result"]["version_count"].as_u64().unwrap() >= 3);
}

async fn guests_read_but_do_not_write(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let admin = server.login().await;
    let guest = server.guest_token(&admin).await;
    let room = tool(
        &server,
        &admin,
        "create_entity",
        json!({"entity_type": "room", "name": "Hall"}),
    )
    .await
    .1["result"]["entity"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lamp = tool(
        &server,
        &admin,
        "create_entity",
        json!({"entity_type": "device", "name": "Lamp"}),
    )
    .await
    .1["result"]["entity"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = server.handle.store().max_seq().await.unwrap();

    let (s, body) = server.get_json(&guest, "/api/v1/mcp/tools").await;
    assert_eq!((s, body["count"].clone()), (200, json!(12)));
    let (s, body) = tool(&server, &guest, "search_entities", json!({"query": "lamp"})).await;
    assert_eq!(
        (s, body["result"]["count"].clone()),
        (200, json!(1)),
        "{body}"
    );
    for (name, args) in [
        ("create_entity", json!({"entity_type": "note", "name": "n"})),
        (
            "create_relationship",
            json!({"from_entity_id": lamp, "to_entity_id": room, "relationship_type": "located_in"}),
        ),
        (
            "update_entity",
            json!({"entity_id": lamp, "changes": {"name": "x"}, "user_id": "guest"}),
        ),
    ] {
        let (s, body) = tool(&server, &guest, name, args).await;
        assert_eq!(s, 403, "{name}: {body}");
        assert_eq!(body["detail"], "Write permission required");
        assert_eq!(body["error"]["code"], "FORBIDDEN");
    }
    let (s, body) = tool(&server, "", "search_entities", json!({"query": "lamp"})).await;
    assert_eq!(
        (s, body["detail"].clone()),
        (401, json!("Not authenticated"))
    );
    assert_eq!(server.handle.store().max_seq().await.unwrap(), before);
}

on_both_backends!(
    a_tool_write_meets_an_offline_edit,
    guests_read_but_do_not_write
);
