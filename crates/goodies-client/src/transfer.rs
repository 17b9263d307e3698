//! The whole graph as one JSON document: [`BlowingOffClient::export_graph`] and
//! [`BlowingOffClient::import_graph`].
//!
//! The shape (stable; `format_version` changes if it ever must):
//!
//! ```json
//! {"format": "goodies-graph", "format_version": 1, "exported_at": "…",
//!  "entities": [Entity, …], "relationships": [Relationship, …]}
//! ```
//!
//! `entities` are the latest live versions, ordered by id, each as the protocol's entity
//! object (PROTOCOL §5.2); `relationships` every relationship, ordered by id, as the
//! protocol's relationship object. An import reads of each entity only `id`,
//! `entity_type`, `name` and `content` (and `source_type` when present), and of each
//! relationship `id`, `from_entity_id`, `to_entity_id`, `relationship_type` and
//! `properties`: versions, parents, users and times are made afresh by the local
//! writes, which queue the import for the next sync like any edit.

use std::collections::{HashMap, HashSet};

use goodies_store::{EntityQuery, LocalEdit, RelationshipQuery};
use inbetweenies_proto::{
    Entity, EntityId, EntityType, JsonObject, Relationship, RelationshipId, RelationshipType,
    SourceType, Timestamp,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::BlowingOffClient;
use crate::error::ClientError;

/// The `format` of a graph export.
pub const GRAPH_FORMAT: &str = "goodies-graph";

/// The `format_version` this client writes and reads.
pub const GRAPH_FORMAT_VERSION: u64 = 1;

/// The whole graph as [`BlowingOffClient::export_graph`] writes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GraphExport {
    /// Always [`GRAPH_FORMAT`].
    pub format: String,
    /// Always [`GRAPH_FORMAT_VERSION`].
    pub format_version: u64,
    /// When it was made (local clock).
    pub exported_at: Timestamp,
    /// The latest live version of every entity, by id.
    pub entities: Vec<Entity>,
    /// Every relationship, by id.
    pub relationships: Vec<Relationship>,
}

/// What [`BlowingOffClient::import_graph`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ImportReport {
    /// Entities that did not exist locally, created with their ids.
    pub created: u64,
    /// Entities whose name or content differed, written as a new version.
    pub updated: u64,
    /// Entities already as in the file.
    pub unchanged: u64,
    /// Relationships written.
    pub relationships_created: u64,
    /// Relationships already present (same id, or same ends and type).
    pub relationships_unchanged: u64,
}

/// One problem with an import, with where it is.
fn problem(at: &str, why: impl std::fmt::Display) -> String {
    format!("{at}: {why}")
}

struct ImportEntity {
    id: EntityId,
    entity_type: EntityType,
    name: String,
    content: JsonObject,
    source_type: SourceType,
}

struct ImportRelationship {
    id: Option<RelationshipId>,
    from: EntityId,
    to: EntityId,
    relationship_type: RelationshipType,
    properties: JsonObject,
}

fn str_field(
    o: &serde_json::Map<String, Value>,
    key: &str,
    at: &str,
    errs: &mut Vec<String>,
) -> Option<String> {
    match o.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => {
            errs.push(problem(at, format!("`{key}` is empty")));
            None
        }
        Some(_) => {
            errs.push(problem(at, format!("`{key}` is not a string")));
            None
        }
        None => {
            errs.push(problem(at, format!("`{key}` is missing")));
            None
        }
    }
}

fn obj_field(
    o: &serde_json::Map<String, Value>,
    key: &str,
    at: &str,
    errs: &mut Vec<String>,
) -> JsonObject {
    match o.get(key) {
        None | Some(Value::Null) => JsonObject::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            errs.push(problem(at, format!("`{key}` is not an object")));
            JsonObject::new()
        }
    }
}

/// Reads and checks a whole export; every problem at once.
fn parse(doc: &Value) -> Result<(Vec<ImportEntity>, Vec<ImportRelationship>), Vec<String>> {
    let mut errs = Vec::new();
    let Some(top) = doc.as_object() else {
        return Err(vec!["the document is not a JSON object".to_owned()]);
    };
    match top.get("format") {
        Some(Value::String(f)) if f == GRAPH_FORMAT => {}
        other => errs.push(format!(
            "`format` is {}, expected \"{GRAPH_FORMAT}\"",
            other.map_or("missing".to_owned(), |v| v.to_string())
        )),
    }
    match top.get("format_version").and_then(Value::as_u64) {
        Some(GRAPH_FORMAT_VERSION) => {}
        _ => errs.push(format!(
            "`format_version` is {}, expected {GRAPH_FORMAT_VERSION}",
            top.get("format_version")
                .map_or("missing".to_owned(), |v| v.to_string())
        )),
    }
    let list = |key: &str, errs: &mut Vec<String>| -> Vec<Value> {
        match top.get(key) {
            Some(Value::Array(a)) => a.clone(),
            None => Vec::new(),
            Some(_) => {
                errs.push(format!("`{key}` is not an array"));
                Vec::new()
            }
        }
    };
    let mut entities = Vec::new();
    let mut seen = HashSet::new();
    for (i, v) in list("entities", &mut errs).iter().enumerate() {
        let at = format!("entities[{i}]");
        let Some(o) = v.as_object() else {
            errs.push(problem(&at, "not an object"));
            continue;
        };
        let id = str_field(o, "id", &at, &mut errs);
        let ty = str_field(o, "entity_type", &at, &mut errs);
        let name = str_field(o, "name", &at, &mut errs);
        let content = obj_field(o, "content", &at, &mut errs);
        let source_type = o
            .get("source_type")
            .and_then(Value::as_str)
            .map_or(SourceType::Manual, SourceType::parse);
        if let (Some(id), Some(ty), Some(name)) = (id, ty, name) {
            if !seen.insert(id.clone()) {
                errs.push(problem(&at, format!("the id {id} appears twice")));
                continue;
            }
            entities.push(ImportEntity {
                id: EntityId::new(id),
                entity_type: EntityType::parse(&ty),
                name,
                content,
                source_type,
            });
        }
    }
    let mut rels = Vec::new();
    for (i, v) in list("relationships", &mut errs).iter().enumerate() {
        let at = format!("relationships[{i}]");
        let Some(o) = v.as_object() else {
            errs.push(problem(&at, "not an object"));
            continue;
        };
        let id = o.get("id").and_then(Value::as_str).map(RelationshipId::new);
        let from = str_field(o, "from_entity_id", &at, &mut errs);
        let to = str_field(o, "to_entity_id", &at, &mut errs);
        let ty = str_field(o, "relationship_type", &at, &mut errs);
        let properties = obj_field(o, "properties", &at, &mut errs);
        if let (Some(from), Some(to), Some(ty)) = (from, to, ty) {
            rels.push(ImportRelationship {
                id,
                from: EntityId::new(from),
                to: EntityId::new(to),
                relationship_type: RelationshipType::parse(&ty),
                properties,
            });
        }
    }
    if errs.is_empty() {
        Ok((entities, rels))
    } else {
        Err(errs)
    }
}

impl BlowingOffClient {
    /// The whole local graph (see the module docs for the shape).
    pub async fn export_graph(&self) -> Result<GraphExport, ClientError> {
        let mut entities = self.entities(&EntityQuery::default()).await?;
        entities.sort_by(|a, b| a.id.cmp(&b.id));
        let mut relationships = self.relationships(&RelationshipQuery::default()).await?;
        relationships.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(GraphExport {
            format: GRAPH_FORMAT.to_owned(),
            format_version: GRAPH_FORMAT_VERSION,
            exported_at: Timestamp::now(),
            entities,
            relationships,
        })
    }

    /// Imports a graph export through the local-write path (each write queued for the
    /// next sync). The whole document is checked first: on any problem (not the shape,
    /// a missing or empty field, an id twice, a relationship whose end is neither in the
    /// file nor in the mirror, an entity whose type differs from the mirror's), nothing is
    /// written and [`ClientError::Invalid`] lists every problem. Importing the same file
    /// again writes nothing: an entity already as in the file, and a relationship with
    /// the same id or the same ends and type, are left alone.
    pub async fn import_graph(&self, doc: &Value) -> Result<ImportReport, ClientError> {
        let (entities, rels) = parse(doc).map_err(|errs| {
            ClientError::Invalid(format!("not a graph export: {}", errs.join("; ")))
        })?;
        // Checks against the mirror, still before writing anything.
        let mut errs = Vec::new();
        let mut current: HashMap<EntityId, Option<Entity>> = HashMap::new();
        for (i, e) in entities.iter().enumerate() {
            let local = self.entity(&e.id).await?;
            if let Some(l) = &local {
                if l.entity_type != e.entity_type {
                    errs.push(problem(
                        &format!("entities[{i}]"),
                        format!(
                            "{} is a {} here, not a {}",
                            e.id, l.entity_type, e.entity_type
                        ),
                    ));
                }
            }
            current.insert(e.id.clone(), local);
        }
        for (i, r) in rels.iter().enumerate() {
            for end in [&r.from, &r.to] {
                let known = match current.get(end) {
                    Some(_) => true,
                    None => self.entity(end).await?.is_some_and(|e| !e.is_deleted()),
                };
                if !known {
                    errs.push(problem(
                        &format!("relationships[{i}]"),
                        format!("the entity {end} is neither in the file nor here"),
                    ));
                }
            }
        }
        if !errs.is_empty() {
            return Err(ClientError::Invalid(format!(
                "cannot import: {}",
                errs.join("; ")
            )));
        }
        let mut report = ImportReport::default();
        for e in entities {
            match current.remove(&e.id).flatten() {
                Some(l) if l.name == e.name && l.content == e.content => report.unchanged += 1,
                Some(_) => {
                    self.write(LocalEdit::Update {
                        id: e.id,
                        name: Some(e.name),
                        content: Some(e.content),
                    })
                    .await?;
                    report.updated += 1;
                }
                None => {
                    self.write(LocalEdit::Create {
                        id: Some(e.id),
                        entity_type: e.entity_type,
                        name: e.name,
                        content: e.content,
                        source_type: e.source_type,
                    })
                    .await?;
                    report.created += 1;
                }
            }
        }
        let existing = self.relationships(&RelationshipQuery::default()).await?;
        let ids: HashSet<&RelationshipId> = existing.iter().map(|r| &r.id).collect();
        let mut ends: HashSet<(EntityId, EntityId, RelationshipType)> = existing
            .iter()
            .map(|r| {
                (
                    r.from_entity_id.clone(),
                    r.to_entity_id.clone(),
                    r.relationship_type.clone(),
                )
            })
            .collect();
        for r in rels {
            let key = (r.from.clone(), r.to.clone(), r.relationship_type.clone());
            if r.id.as_ref().is_some_and(|id| ids.contains(id)) || ends.contains(&key) {
                report.relationships_unchanged += 1;
                continue;
            }
            self.relate(&r.from, &r.to, r.relationship_type, r.properties)
                .await?;
            ends.insert(key);
            report.relationships_created += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_problem_is_named_at_once() {
        let errs = parse(&json!({
            "format": "other", "format_version": 2,
            "entities": [{"id": "a", "entity_type": "note", "name": ""},
                         {"id": "b", "entity_type": "note", "name": "B", "content": []},
                         {"id": "c", "entity_type": "note", "name": "C"},
                         {"id": "c", "entity_type": "note", "name": "C again"}, 7],
            "relationships": [{"from_entity_id": "a", "relationship_type": "controls"}]
        }))
        .err()
        .unwrap();
        let all = errs.join("\n");
        for want in [
            "`format` is \"other\"",
            "`format_version` is 2",
            "entities[0]: `name` is empty",
            "entities[1]: `content` is not an object",
            "entities[3]: the id c appears twice",
            "entities[4]: not an object",
            "relationships[0]: `to_entity_id` is missing",
        ] {
            assert!(all.contains(want), "{want} not in {all}");
        }
        assert!(parse(&json!([1])).is_err());
        let (e, r) = parse(&json!({"format": "goodies-graph", "format_version": 1})).unwrap();
        assert!(e.is_empty() && r.is_empty());
    }
}
