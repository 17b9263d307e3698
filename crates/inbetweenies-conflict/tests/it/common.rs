//! Helpers that build entities for the tests.

use inbetweenies_proto::{Entity, EntityType, JsonObject, SourceType, Timestamp, Version};
use serde_json::Value;

/// A timestamp from its wire form.
pub fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

/// `base` plus `micros` microseconds.
pub fn plus(base: Timestamp, micros: i64) -> Timestamp {
    base.saturating_add_micros(micros)
}

/// A canonical version string made at `at` by `user` with `counter`.
pub fn ver(at: Timestamp, counter: u32, user: &str) -> Version {
    Version::new(format!("{at}-{counter:06}-{user}"))
}

/// A JSON object from a `json!` value.
pub fn obj(v: Value) -> JsonObject {
    v.as_object().cloned().unwrap()
}

/// An entity version of id `id` with `content`, edited at the version's timestamp.
pub fn entity(id: &str, version: &Version, parents: &[&Version], content: Value) -> Entity {
    let at = version.timestamp().unwrap();
    Entity {
        id: id.into(),
        version: version.clone(),
        entity_type: EntityType::Room,
        name: "Kitchen".into(),
        content: obj(content),
        source_type: SourceType::Manual,
        user_id: version.parse().unwrap().user_id,
        parent_versions: parents.iter().map(|v| (*v).clone()).collect(),
        created_at: at,
        updated_at: at,
    }
}

/// A tombstone version parented on `parents`.
pub fn tombstone(id: &str, version: &Version, parents: &[&Version]) -> Entity {
    entity(id, version, parents, serde_json::json!({"deleted": true}))
}
