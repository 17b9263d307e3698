//! The tools over a real SQLite mirror, at the rules' edges: tombstones are never found or
//! listed, arguments are checked by name and type before anything is read, a toolbox
//! without a writer refuses the writing tools, and `update_entity` merges content.

use std::sync::Arc;

use async_trait::async_trait;
use goodies_store::{open_client_store, ClientStore, GraphRead, LocalEdit, StoreOptions};
use goodies_tools::{GraphWrite, ToolError, Toolbox};
use inbetweenies_proto::{
    Entity, EntityId, EntityType, JsonObject, Relationship, RelationshipType, SourceType,
};
use serde_json::{json, Value};

/// Writes as local edits of the mirror (what the client does).
struct Local(Arc<dyn ClientStore>);

#[async_trait]
impl GraphWrite for Local {
    async fn create_entity(
        &self,
        entity_type: EntityType,
        name: String,
        content: JsonObject,
    ) -> Result<Entity, ToolError> {
        Ok(self
            .0
            .write_local(
                LocalEdit::Create {
                    id: None,
                    entity_type,
                    name,
                    content,
                    source_type: SourceType::Manual,
                },
                "tester",
            )
            .await?)
    }

    async fn update_entity(
        &self,
        latest: &Entity,
        name: String,
        content: JsonObject,
        user_id: &str,
    ) -> Result<Entity, ToolError> {
        Ok(self
            .0
            .write_local(
                LocalEdit::Update {
                    id: latest.id.clone(),
                    name: Some(name),
                    content: Some(content),
                },
                user_id,
            )
            .await?)
    }

    async fn create_relationship(
        &self,
        from: &Entity,
        to: &Entity,
        relationship_type: RelationshipType,
        properties: JsonObject,
    ) -> Result<Relationship, ToolError> {
        Ok(self
            .0
            .write_local_relationship(&from.id, &to.id, relationship_type, properties, "tester")
            .await?)
    }
}

fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(o) => o,
        other => panic!("not an object: {other}"),
    }
}

async fn mirror() -> (tempfile_dir::Dir, Arc<dyn ClientStore>) {
    let dir = tempfile_dir::Dir::new();
    let store = open_client_store(&dir.url(), StoreOptions::default())
        .await
        .expect("open the mirror");
    (dir, store)
}

/// A temporary directory for the SQLite file, removed at the end.
mod tempfile_dir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir().join(format!("goodies-tools-{}", uuid_like()));
            std::fs::create_dir_all(&p).expect("temp dir");
            Dir(p)
        }
        pub fn url(&self) -> String {
            format!("sqlite://{}", self.0.join("mirror.db").display())
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn uuid_like() -> String {
        inbetweenies_proto::EntityId::new_random().to_string()
    }
}

#[tokio::test]
async fn tombstones_are_never_found_nor_listed() {
    let (_dir, store) = mirror().await;
    let writer = Local(store.clone());
    let graph: &dyn GraphRead = store.as_ref();
    let tools = Toolbox::new(graph, Some(&writer));
    let call = |name: &'static str, args: Value| async move { tools.call(name, &obj(args)).await };
    let room = call(
        "create_entity",
        json!({"entity_type": "room", "name": "Den"}),
    )
    .await
    .unwrap()["entity"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let lamp = call(
        "create_entity",
        json!({"entity_type": "device", "name": "Lamp"}),
    )
    .await
    .unwrap()["entity"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    call(
        "create_relationship",
        json!({"from_entity_id": lamp, "to_entity_id": room, "relationship_type": "located_in"}),
    )
    .await
    .unwrap();
    let r = call("get_devices_in_room", json!({"room_id": room}))
        .await
        .unwrap();
    assert_eq!(r["count"], 1);
    assert_eq!(
        call("search_entities", json!({"query": "lamp"}))
            .await
            .unwrap()["count"],
        1
    );

    store
        .write_local(
            LocalEdit::Delete {
                id: EntityId::new(&lamp),
            },
            "tester",
        )
        .await
        .unwrap();
    let r = call("get_devices_in_room", json!({"room_id": room}))
        .await
        .unwrap();
    assert_eq!(r["count"], 0, "{r}");
    assert_eq!(
        call("search_entities", json!({"query": "lamp"}))
            .await
            .unwrap()["count"],
        0
    );
    let e = call("get_entity_details", json!({"entity_id": lamp}))
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), format!("Entity {lamp} not found"));
    let e = call(
        "update_entity",
        json!({"entity_id": lamp, "changes": {"name": "x"}, "user_id": "u"}),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, ToolError::NotFound { kind: "Entity", .. }),
        "{e}"
    );
    let r = call(
        "find_path",
        json!({"from_entity_id": lamp, "to_entity_id": room}),
    )
    .await
    .unwrap();
    assert_eq!(r["found"], false);
}

#[tokio::test]
async fn arguments_are_checked_before_anything_is_read() {
    let (_dir, store) = mirror().await;
    let graph: &dyn GraphRead = store.as_ref();
    let tools = Toolbox::new(graph, None);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "turn_on_everything",
            json!({}),
            "Unknown tool: turn_on_everything",
        ),
        (
            "get_devices_in_room",
            json!({"room_id": "r", "floor": 1}),
            "get_devices_in_room() got an unexpected keyword argument 'floor'",
        ),
        (
            "find_path",
            json!({"from_entity_id": "a"}),
            "find_path() missing 1 required argument: 'to_entity_id'",
        ),
        (
            "find_path",
            json!({"from_entity_id": "a", "to_entity_id": "b", "max_depth": 51}),
            "find_path() argument 'max_depth': expected a whole number from 0 to 50",
        ),
        (
            "search_entities",
            json!({"query": 5}),
            "search_entities() argument 'query': expected a string",
        ),
        (
            "find_similar_entities",
            json!({"entity_id": "a", "threshold": 1.5}),
            "find_similar_entities() argument 'threshold': expected a number from 0 to 1",
        ),
        (
            "create_entity",
            json!({"entity_type": "app", "name": "x"}),
            "'app' is not a valid EntityType",
        ),
        (
            "create_relationship",
            json!({"from_entity_id": "a", "to_entity_id": "b", "relationship_type": "likes"}),
            "'likes' is not a valid RelationshipType",
        ),
        (
            "update_entity",
            json!({"entity_id": "a", "changes": {"colour": "red"}, "user_id": "u"}),
            "update_entity() argument 'changes': unknown key 'colour' (known: name, content)",
        ),
    ];
    for (name, args, message) in cases {
        let e = tools.call(name, &obj(args)).await.unwrap_err();
        assert!(e.is_caller_error(), "{name}: {e}");
        assert_eq!(e.to_string(), message, "{name}");
    }
    // A null optional argument is "not given".
    let r = tools
        .call(
            "search_entities",
            &obj(json!({"query": "x", "limit": null})),
        )
        .await
        .unwrap();
    assert_eq!(r["count"], 0);
}

#[tokio::test]
async fn without_a_writer_the_writing_tools_refuse_and_update_merges_content() {
    let (_dir, store) = mirror().await;
    let graph: &dyn GraphRead = store.as_ref();
    let read_only = Toolbox::new(graph, None);
    let e = read_only
        .call(
            "create_entity",
            &obj(json!({"entity_type": "note", "name": "n"})),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ToolError::ReadOnly), "{e}");

    let writer = Local(store.clone());
    let tools = Toolbox::new(graph, Some(&writer));
    let made = tools
        .call(
            "create_entity",
            &obj(json!({"entity_type": "device", "name": "Heater", "content": {"power": "off", "watts": 900}})),
        )
        .await
        .unwrap();
    let id = made["entity"]["id"].as_str().unwrap().to_owned();
    let first = made["entity"]["version"].clone();
    let r = tools
        .call(
            "update_entity",
            &obj(json!({"entity_id": id, "changes": {"content": {"power": "on"}}, "user_id": "assistant"})),
        )
        .await
        .unwrap();
    assert_eq!(r["parent_versions"], json!([first]));
    let latest = store.entity(&EntityId::new(&id)).await.unwrap().unwrap();
    assert_eq!(latest.name, "Heater");
    assert_eq!(
        Value::Object(latest.content),
        json!({"power": "on", "watts": 900})
    );
    assert_eq!(latest.user_id, "assistant");
    let details = tools.get_entity_details(&id, false, false).await.unwrap();
    assert_eq!(details.version_count, 2);
    assert!(details.relationships.is_none());
}
