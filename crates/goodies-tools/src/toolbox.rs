//! Each tool's logic, once, over [`GraphRead`] for reads and [`GraphWrite`] for writes.

use std::collections::HashSet;

use async_trait::async_trait;
use goodies_store::{graph, Direction, EntityQuery, GraphRead, RelationshipQuery};
use inbetweenies_proto::{
    Entity, EntityId, EntityType, JsonObject, Relationship, RelationshipType,
};
use serde::Serialize;
use serde_json::Value;

use crate::args::Args;
use crate::catalog;
use crate::error::ToolError;
use crate::results::*;
use crate::rules;
use crate::text;

/// Most results a search or similarity call returns.
pub const MAX_LIMIT: u64 = 1000;
/// Longest path `find_path` looks for, in edges.
pub const MAX_DEPTH: u64 = 50;

/// The writes the tools make. The server implements it with its push path (one
/// transaction, the conflict rule applied), the client with its outbox-backed local edits.
#[async_trait]
pub trait GraphWrite: Send + Sync {
    /// Stores the first version of a new entity (source type `manual`).
    async fn create_entity(
        &self,
        entity_type: EntityType,
        name: String,
        content: JsonObject,
    ) -> Result<Entity, ToolError>;

    /// Stores a new version of `latest` with this name and whole content, its parent
    /// `latest.version`. `user_id` is the author the caller named; a side whose versions
    /// are always by its own user (the client) may use that instead.
    async fn update_entity(
        &self,
        latest: &Entity,
        name: String,
        content: JsonObject,
        user_id: &str,
    ) -> Result<Entity, ToolError>;

    /// Stores an edge between the latest versions of two live entities.
    async fn create_relationship(
        &self,
        from: &Entity,
        to: &Entity,
        relationship_type: RelationshipType,
        properties: JsonObject,
    ) -> Result<Relationship, ToolError>;
}

/// The tools over one graph, with or without a writer.
#[derive(Clone, Copy)]
pub struct Toolbox<'a> {
    graph: &'a dyn GraphRead,
    writer: Option<&'a dyn GraphWrite>,
}

impl std::fmt::Debug for Toolbox<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolbox")
            .field("graph", &self.graph)
            .field("writes", &self.writer.is_some())
            .finish()
    }
}

fn to_value<T: Serialize>(v: T) -> Result<Value, ToolError> {
    serde_json::to_value(v).map_err(|e| ToolError::Write(Box::new(e)))
}

impl<'a> Toolbox<'a> {
    /// Tools that read `graph` and, when a writer is given, write through it.
    pub fn new(graph: &'a dyn GraphRead, writer: Option<&'a dyn GraphWrite>) -> Self {
        Toolbox { graph, writer }
    }

    /// Calls a tool by name with JSON arguments; the answer is the tool's typed result as
    /// JSON (see [`crate::results`]).
    pub async fn call(&self, name: &str, arguments: &JsonObject) -> Result<Value, ToolError> {
        let spec = catalog::tool(name).ok_or_else(|| ToolError::UnknownTool(name.to_owned()))?;
        let Some(tool) = catalog::WRITE_TOOLS
            .iter()
            .chain(READ_TOOLS)
            .find(|t| **t == name)
            .copied()
        else {
            return Err(ToolError::UnknownTool(name.to_owned()));
        };
        let a = Args::new(tool, spec, arguments)?;
        match tool {
            "get_devices_in_room" => {
                to_value(self.get_devices_in_room(&a.req_str("room_id")?).await?)
            }
            "find_device_controls" => {
                to_value(self.find_device_controls(&a.req_str("device_id")?).await?)
            }
            "get_room_connections" => {
                to_value(self.get_room_connections(&a.req_str("room_id")?).await?)
            }
            "search_entities" => {
                let query = a.req_str("query")?;
                let types = a.opt_str_list("entity_types")?;
                let limit = a.opt_count("limit", 10, MAX_LIMIT)? as usize;
                to_value(
                    self.search_entities(&query, types.as_deref(), limit)
                        .await?,
                )
            }
            "create_entity" => {
                let entity_type = a.req_str("entity_type")?;
                let name = a.req_str("name")?;
                let content = a.opt_obj("content")?.unwrap_or_default();
                to_value(self.create_entity(&entity_type, &name, content).await?)
            }
            "create_relationship" => {
                let from = a.req_str("from_entity_id")?;
                let to = a.req_str("to_entity_id")?;
                let rel = a.req_str("relationship_type")?;
                let properties = a.opt_obj("properties")?;
                to_value(
                    self.create_relationship(&from, &to, &rel, properties)
                        .await?,
                )
            }
            "find_path" => {
                let from = a.req_str("from_entity_id")?;
                let to = a.req_str("to_entity_id")?;
                let depth = a.opt_count("max_depth", 10, MAX_DEPTH)? as usize;
                to_value(self.find_path(&from, &to, depth).await?)
            }
            "get_entity_details" => {
                let id = a.req_str("entity_id")?;
                let rels = a.opt_bool("include_relationships", true)?;
                let connected = a.opt_bool("include_connected", false)?;
                to_value(self.get_entity_details(&id, rels, connected).await?)
            }
            "find_similar_entities" => {
                let id = a.req_str("entity_id")?;
                let threshold = a.opt_fraction("threshold", 0.7)?;
                let limit = a.opt_count("limit", 10, MAX_LIMIT)? as usize;
                to_value(self.find_similar_entities(&id, threshold, limit).await?)
            }
            "get_procedures_for_device" => to_value(
                self.get_procedures_for_device(&a.req_str("device_id")?)
                    .await?,
            ),
            "get_automations_in_room" => {
                to_value(self.get_automations_in_room(&a.req_str("room_id")?).await?)
            }
            "update_entity" => {
                let id = a.req_str("entity_id")?;
                let changes = a.req_obj("changes")?;
                let user_id = a.req_str("user_id")?;
                to_value(self.update_entity(&id, changes, &user_id).await?)
            }
            other => Err(ToolError::UnknownTool(other.to_owned())),
        }
    }

    /// The latest version of a live entity (of `kind` when given), else `NotFound` named
    /// `label`.
    async fn live(
        &self,
        id: &str,
        kind: Option<&EntityType>,
        label: &'static str,
    ) -> Result<Entity, ToolError> {
        match self.graph.entity(&EntityId::new(id)).await? {
            Some(e) if !e.is_deleted() && kind.is_none_or(|k| &e.entity_type == k) => Ok(e),
            _ => Err(ToolError::NotFound {
                kind: label,
                id: id.to_owned(),
            }),
        }
    }

    async fn neighbours_of(
        &self,
        id: &EntityId,
        rel: RelationshipType,
        direction: Direction,
        of_type: &EntityType,
    ) -> Result<Vec<(Relationship, Entity)>, ToolError> {
        Ok(self
            .graph
            .neighbours(id, Some(&rel), direction)
            .await?
            .into_iter()
            .filter(|n| &n.entity.entity_type == of_type && !n.entity.is_deleted())
            .map(|n| (n.relationship, n.entity))
            .collect())
    }

    /// Live devices located in a live room, by name.
    pub async fn get_devices_in_room(&self, room_id: &str) -> Result<DevicesInRoom, ToolError> {
        let room = self.live(room_id, Some(&EntityType::Room), "Room").await?;
        let devices = graph::devices_of_room(self.graph, &room.id).await?;
        Ok(DevicesInRoom {
            room_id: room_id.to_owned(),
            count: devices.len(),
            devices,
        })
    }

    /// A device's capabilities, services and the devices it controls.
    pub async fn find_device_controls(&self, device_id: &str) -> Result<DeviceControls, ToolError> {
        let device = self
            .live(device_id, Some(&EntityType::Device), "Device")
            .await?;
        let list = |key: &str| match device.content.get(key) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        };
        let mut controlled = Vec::new();
        for n in self
            .graph
            .neighbours(
                &device.id,
                Some(&RelationshipType::Controls),
                Direction::Outgoing,
            )
            .await?
        {
            controlled.push(TypedRef {
                id: n.entity.id.to_string(),
                name: n.entity.name.clone(),
                entity_type: n.entity.entity_type.to_string(),
            });
        }
        Ok(DeviceControls {
            device_id: device_id.to_owned(),
            device_name: device.name.clone(),
            capabilities: list("capabilities"),
            controlled_devices: controlled,
            services: list("services"),
        })
    }

    /// Rooms joined to a room by `connects_to` edges either way, each once.
    pub async fn get_room_connections(&self, room_id: &str) -> Result<RoomConnections, ToolError> {
        let room = self.live(room_id, Some(&EntityType::Room), "Room").await?;
        let mut seen = HashSet::new();
        let mut connections = Vec::new();
        for (rel, other) in self
            .neighbours_of(
                &room.id,
                RelationshipType::ConnectsTo,
                Direction::Both,
                &EntityType::Room,
            )
            .await?
        {
            if other.id == room.id || !seen.insert(other.id.clone()) {
                continue;
            }
            let via = match rel.properties.get("via") {
                Some(Value::String(s)) => s.clone(),
                _ => "direct".to_owned(),
            };
            connections.push(RoomConnection {
                id: other.id.to_string(),
                name: other.name,
                connection_type: via,
            });
        }
        Ok(RoomConnections {
            room_id: room_id.to_owned(),
            room_name: room.name,
            connection_count: connections.len(),
            connections,
        })
    }

    /// Live entities scored against the query (see [`crate::text`]), best first; ties keep
    /// name order.
    pub async fn search_entities(
        &self,
        query: &str,
        entity_types: Option<&[String]>,
        limit: usize,
    ) -> Result<SearchResults, ToolError> {
        let types = entity_types.map(parse_entity_types).transpose()?;
        let entities = self
            .graph
            .entities(&EntityQuery {
                entity_types: types.filter(|t| !t.is_empty()),
                ..EntityQuery::default()
            })
            .await?;
        let mut scored: Vec<(f64, Entity, JsonObject)> = entities
            .into_iter()
            .filter(|e| !e.is_deleted())
            .filter_map(|e| {
                let (score, highlights) = text::search_score(&e, query);
                (score > 0.0).then_some((score, e, highlights))
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.truncate(limit);
        let results: Vec<ScoredEntity> = scored
            .into_iter()
            .map(|(score, e, highlights)| scored_entity(&e, score, highlights))
            .collect();
        Ok(SearchResults {
            query: query.to_owned(),
            count: results.len(),
            results,
        })
    }

    /// Creates an entity of a known type.
    pub async fn create_entity(
        &self,
        entity_type: &str,
        name: &str,
        content: JsonObject,
    ) -> Result<CreatedEntity, ToolError> {
        let entity_type = known_entity_type(entity_type)?;
        if name.trim().is_empty() {
            return Err(ToolError::InvalidArgument {
                tool: "create_entity",
                argument: "name",
                problem: "must not be empty".into(),
            });
        }
        let writer = self.writer.ok_or(ToolError::ReadOnly)?;
        let entity = writer
            .create_entity(entity_type, name.to_owned(), content)
            .await?;
        Ok(CreatedEntity {
            entity,
            created: true,
        })
    }

    /// Stores an edge between two live entities when the rules allow the type pair.
    pub async fn create_relationship(
        &self,
        from_entity_id: &str,
        to_entity_id: &str,
        relationship_type: &str,
        properties: Option<JsonObject>,
    ) -> Result<CreatedRelationship, ToolError> {
        let rel = RelationshipType::parse(relationship_type);
        if !rel.is_known() {
            return Err(ToolError::UnknownRelationshipType(
                relationship_type.to_owned(),
            ));
        }
        let from = self.live(from_entity_id, None, "From entity").await?;
        let to = self.live(to_entity_id, None, "To entity").await?;
        if !rules::allowed(&rel, &from.entity_type, &to.entity_type) {
            return Err(ToolError::InvalidRelationship {
                from_type: from.entity_type.to_string(),
                relationship_type: rel.to_string(),
                to_type: to.entity_type.to_string(),
            });
        }
        let writer = self.writer.ok_or(ToolError::ReadOnly)?;
        let stored = writer
            .create_relationship(&from, &to, rel, properties.clone().unwrap_or_default())
            .await?;
        Ok(CreatedRelationship {
            relationship: RelationshipSummary {
                id: stored.id.to_string(),
                from_entity: NamedRef {
                    id: from.id.to_string(),
                    name: from.name,
                },
                to_entity: NamedRef {
                    id: to.id.to_string(),
                    name: to.name,
                },
                relationship_type: stored.relationship_type.to_string(),
                properties,
            },
            created: true,
        })
    }

    /// The shortest path over edges in either direction, at most `max_depth` edges.
    pub async fn find_path(
        &self,
        from_entity_id: &str,
        to_entity_id: &str,
        max_depth: usize,
    ) -> Result<PathResult, ToolError> {
        let (from, to) = (EntityId::new(from_entity_id), EntityId::new(to_entity_id));
        let known = self
            .graph
            .entity(&from)
            .await?
            .is_some_and(|e| !e.is_deleted())
            && self
                .graph
                .entity(&to)
                .await?
                .is_some_and(|e| !e.is_deleted());
        let ids = if known {
            self.graph.path(&from, &to, max_depth).await?
        } else {
            None
        };
        let mut path = Vec::new();
        for id in ids.unwrap_or_default() {
            if let Some(e) = self.graph.entity(&id).await? {
                path.push(TypedRef {
                    id: e.id.to_string(),
                    name: e.name,
                    entity_type: e.entity_type.to_string(),
                });
            }
        }
        Ok(PathResult {
            from: from_entity_id.to_owned(),
            to: to_entity_id.to_owned(),
            length: path.len().saturating_sub(1),
            found: !path.is_empty(),
            path,
        })
    }

    /// A live entity with its edges, version count and (when asked) live neighbours.
    pub async fn get_entity_details(
        &self,
        entity_id: &str,
        include_relationships: bool,
        include_connected: bool,
    ) -> Result<EntityDetails, ToolError> {
        let entity = self.live(entity_id, None, "Entity").await?;
        let relationships = if include_relationships {
            let outgoing = self
                .graph
                .relationships(&RelationshipQuery {
                    from_entity_id: Some(entity.id.clone()),
                    ..RelationshipQuery::default()
                })
                .await?
                .into_iter()
                .map(|r| OutgoingEdge {
                    to: r.to_entity_id.to_string(),
                    relationship_type: r.relationship_type.to_string(),
                    properties: r.properties,
                })
                .collect();
            let incoming = self
                .graph
                .relationships(&RelationshipQuery {
                    to_entity_id: Some(entity.id.clone()),
                    ..RelationshipQuery::default()
                })
                .await?
                .into_iter()
                .map(|r| IncomingEdge {
                    from: r.from_entity_id.to_string(),
                    relationship_type: r.relationship_type.to_string(),
                    properties: r.properties,
                })
                .collect();
            Some(EntityEdges { outgoing, incoming })
        } else {
            None
        };
        let connected_entities = if include_connected {
            let mut out = Vec::new();
            for (direction, word) in [
                (Direction::Outgoing, "outgoing"),
                (Direction::Incoming, "incoming"),
            ] {
                for n in self.graph.neighbours(&entity.id, None, direction).await? {
                    out.push(ConnectedEntity {
                        relationship_type: n.relationship.relationship_type.to_string(),
                        entity: n.entity,
                        direction: word.to_owned(),
                    });
                }
            }
            Some(out)
        } else {
            None
        };
        let version_count = self.graph.history(&entity.id).await?.len().max(1);
        Ok(EntityDetails {
            current_version: entity.version.to_string(),
            entity,
            relationships,
            version_count,
            connected_entities,
        })
    }

    /// Live entities of the same type scored by [`text::similarity`], those at or above
    /// `threshold`, most similar first. An unknown id has no similar entities.
    pub async fn find_similar_entities(
        &self,
        entity_id: &str,
        threshold: f64,
        limit: usize,
    ) -> Result<SimilarEntities, ToolError> {
        let mut scored: Vec<(f64, Entity)> = Vec::new();
        let reference = self
            .graph
            .entity(&EntityId::new(entity_id))
            .await?
            .filter(|e| !e.is_deleted());
        if let Some(reference) = &reference {
            let candidates = self
                .graph
                .entities(&EntityQuery {
                    entity_types: Some(vec![reference.entity_type.clone()]),
                    ..EntityQuery::default()
                })
                .await?;
            scored = candidates
                .into_iter()
                .filter(|c| c.id != reference.id && !c.is_deleted())
                .map(|c| (text::similarity(reference, &c), c))
                .filter(|(s, _)| *s >= threshold)
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            scored.truncate(limit);
        }
        let similar: Vec<ScoredEntity> = scored
            .into_iter()
            .map(|(score, e)| {
                let mut highlights = JsonObject::new();
                if let Some(r) = &reference {
                    highlights.insert(
                        "similarity".into(),
                        Value::from(vec![format!("Similar to {}", r.name)]),
                    );
                }
                scored_entity(&e, (score * 1000.0).round() / 1000.0, highlights)
            })
            .collect();
        Ok(SimilarEntities {
            reference_entity_id: entity_id.to_owned(),
            count: similar.len(),
            similar_entities: similar,
        })
    }

    /// Procedures for a live device and the manuals it is documented by.
    pub async fn get_procedures_for_device(
        &self,
        device_id: &str,
    ) -> Result<DeviceDocumentation, ToolError> {
        let device = self
            .live(device_id, Some(&EntityType::Device), "Device")
            .await?;
        let doc = |(_, e): (Relationship, Entity)| Documentation {
            id: e.id.to_string(),
            name: e.name,
            content: e.content,
        };
        let procedures: Vec<Documentation> = self
            .neighbours_of(
                &device.id,
                RelationshipType::ProcedureFor,
                Direction::Incoming,
                &EntityType::Procedure,
            )
            .await?
            .into_iter()
            .map(doc)
            .collect();
        let manuals: Vec<Documentation> = self
            .neighbours_of(
                &device.id,
                RelationshipType::DocumentedBy,
                Direction::Outgoing,
                &EntityType::Manual,
            )
            .await?
            .into_iter()
            .map(doc)
            .collect();
        Ok(DeviceDocumentation {
            device_id: device_id.to_owned(),
            device_name: device.name,
            total_documentation: procedures.len() + manuals.len(),
            procedures,
            manuals,
        })
    }

    /// Automations that `automates` a device of a live room, each with the room's devices
    /// it affects; in the order first met walking the devices by name.
    pub async fn get_automations_in_room(
        &self,
        room_id: &str,
    ) -> Result<RoomAutomations, ToolError> {
        let room = self.live(room_id, Some(&EntityType::Room), "Room").await?;
        let devices = graph::devices_of_room(self.graph, &room.id).await?;
        let mut automations: Vec<RoomAutomation> = Vec::new();
        for device in &devices {
            for (_, auto) in self
                .neighbours_of(
                    &device.id,
                    RelationshipType::Automates,
                    Direction::Incoming,
                    &EntityType::Automation,
                )
                .await?
            {
                let affected = NamedRef {
                    id: device.id.to_string(),
                    name: device.name.clone(),
                };
                match automations.iter_mut().find(|a| a.id == auto.id.as_str()) {
                    Some(a) => {
                        if !a.affects_devices.contains(&affected) {
                            a.affects_devices.push(affected);
                        }
                    }
                    None => automations.push(RoomAutomation {
                        id: auto.id.to_string(),
                        name: auto.name,
                        content: auto.content,
                        affects_devices: vec![affected],
                    }),
                }
            }
        }
        Ok(RoomAutomations {
            room_id: room_id.to_owned(),
            room_name: room.name,
            automation_count: automations.len(),
            automations,
        })
    }

    /// A new version of a live entity: `changes.name` replaces the name, `changes.content`
    /// is merged into the content key by key.
    pub async fn update_entity(
        &self,
        entity_id: &str,
        changes: JsonObject,
        user_id: &str,
    ) -> Result<EntityUpdate, ToolError> {
        let bad = |problem: String| ToolError::InvalidArgument {
            tool: "update_entity",
            argument: "changes",
            problem,
        };
        if let Some(k) = changes
            .keys()
            .find(|k| !["name", "content"].contains(&k.as_str()))
        {
            return Err(bad(format!("unknown key '{k}' (known: name, content)")));
        }
        let name = match changes.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            Some(_) => return Err(bad("name must be a non-empty string".into())),
        };
        let patch = match changes.get("content") {
            None | Some(Value::Null) => JsonObject::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => return Err(bad("content must be an object".into())),
        };
        let latest = self.live(entity_id, None, "Entity").await?;
        let writer = self.writer.ok_or(ToolError::ReadOnly)?;
        let mut content = latest.content.clone();
        for (k, v) in patch {
            content.insert(k, v);
        }
        let name = name.unwrap_or_else(|| latest.name.clone());
        let written = writer
            .update_entity(&latest, name, content, user_id)
            .await?;
        Ok(EntityUpdate {
            entity_id: entity_id.to_owned(),
            new_version: written.version.to_string(),
            changes_applied: changes,
            parent_versions: written
                .parent_versions
                .iter()
                .map(|v| v.to_string())
                .collect(),
        })
    }
}

/// The read-only tools, in catalog order.
const READ_TOOLS: &[&str] = &[
    "get_devices_in_room",
    "find_device_controls",
    "get_room_connections",
    "search_entities",
    "find_path",
    "get_entity_details",
    "find_similar_entities",
    "get_procedures_for_device",
    "get_automations_in_room",
];

fn known_entity_type(s: &str) -> Result<EntityType, ToolError> {
    let t = EntityType::parse(s);
    // The tools' vocabulary is the reference's (no "app" among the types one may name).
    if t.is_known() && t != EntityType::App {
        Ok(t)
    } else {
        Err(ToolError::UnknownEntityType(s.to_owned()))
    }
}

fn parse_entity_types(types: &[String]) -> Result<Vec<EntityType>, ToolError> {
    types.iter().map(|t| known_entity_type(t)).collect()
}

fn scored_entity(e: &Entity, score: f64, highlights: JsonObject) -> ScoredEntity {
    ScoredEntity {
        id: e.id.to_string(),
        version: e.version.to_string(),
        entity_type: e.entity_type.to_string(),
        name: e.name.clone(),
        score,
        highlights,
        content_preview: text::content_preview(&e.content),
    }
}
