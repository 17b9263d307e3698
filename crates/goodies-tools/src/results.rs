//! The typed result of each tool. These are the `result` objects the server answers
//! (`{"success": true, "result": …}`) and the structured content the client's MCP server
//! returns; field names follow the reference. They are part of the public interface: add
//! fields, never rename or remove them.

use inbetweenies_proto::{Entity, JsonObject};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An entity named by id and name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NamedRef {
    /// The entity's id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// An entity named by id, name and type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypedRef {
    /// The entity's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its entity type.
    #[serde(rename = "type")]
    pub entity_type: String,
}

/// `get_devices_in_room`: the live devices located in the room, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DevicesInRoom {
    /// The room asked about.
    pub room_id: String,
    /// Latest version of each device.
    pub devices: Vec<Entity>,
    /// `devices.len()`.
    pub count: usize,
}

/// `find_device_controls`: what a device can do and what it controls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceControls {
    /// The device asked about.
    pub device_id: String,
    /// Its name.
    pub device_name: String,
    /// `content.capabilities` when it is a list, else empty.
    pub capabilities: Vec<Value>,
    /// Targets of the device's `controls` edges.
    pub controlled_devices: Vec<TypedRef>,
    /// `content.services` when it is a list, else empty.
    pub services: Vec<Value>,
}

/// One room reachable from another over a `connects_to` edge.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomConnection {
    /// The other room's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// The edge's `via` property (e.g. "door"), or "direct".
    pub connection_type: String,
}

/// `get_room_connections`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomConnections {
    /// The room asked about.
    pub room_id: String,
    /// Its name.
    pub room_name: String,
    /// Rooms joined to it by `connects_to` in either direction, each once.
    pub connections: Vec<RoomConnection>,
    /// `connections.len()`.
    pub connection_count: usize,
}

/// One scored entity of a search or similarity answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredEntity {
    /// The entity's id.
    pub id: String,
    /// Its latest version.
    pub version: String,
    /// Its type.
    pub entity_type: String,
    /// Its name.
    pub name: String,
    /// Higher is better.
    pub score: f64,
    /// Why it matched, per field (`name`, `content`).
    pub highlights: JsonObject,
    /// The first three content entries as `key: value`, then "...", or null for empty content.
    pub content_preview: Option<String>,
}

/// `search_entities`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    /// The query as given.
    pub query: String,
    /// Best first.
    pub results: Vec<ScoredEntity>,
    /// `results.len()`.
    pub count: usize,
}

/// `create_entity`: the stored version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedEntity {
    /// The new entity's first version.
    pub entity: Entity,
    /// Always true.
    pub created: bool,
}

/// The edge `create_relationship` stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelationshipSummary {
    /// The edge's id.
    pub id: String,
    /// The source.
    pub from_entity: NamedRef,
    /// The target.
    pub to_entity: NamedRef,
    /// The relationship type.
    #[serde(rename = "type")]
    pub relationship_type: String,
    /// The properties as given (null when none were).
    pub properties: Option<JsonObject>,
}

/// `create_relationship`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CreatedRelationship {
    /// The stored edge.
    pub relationship: RelationshipSummary,
    /// Always true.
    pub created: bool,
}

/// `find_path`: the shortest path over edges in either direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathResult {
    /// Start id.
    pub from: String,
    /// End id.
    pub to: String,
    /// Every entity on the path, both ends included; empty when none was found.
    pub path: Vec<TypedRef>,
    /// Number of edges (`path.len() - 1`), 0 when none was found.
    pub length: usize,
    /// Whether a path of at most `max_depth` edges exists.
    pub found: bool,
}

/// An edge leaving the entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutgoingEdge {
    /// The target's id.
    pub to: String,
    /// The relationship type.
    #[serde(rename = "type")]
    pub relationship_type: String,
    /// The edge's properties.
    pub properties: JsonObject,
}

/// An edge reaching the entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IncomingEdge {
    /// The source's id.
    pub from: String,
    /// The relationship type.
    #[serde(rename = "type")]
    pub relationship_type: String,
    /// The edge's properties.
    pub properties: JsonObject,
}

/// The entity's edges, both ways.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityEdges {
    /// Edges from the entity.
    pub outgoing: Vec<OutgoingEdge>,
    /// Edges to the entity.
    pub incoming: Vec<IncomingEdge>,
}

/// A live neighbour of the entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectedEntity {
    /// The neighbour's latest version.
    pub entity: Entity,
    /// The type of the edge between them.
    pub relationship_type: String,
    /// "outgoing" (from the entity) or "incoming".
    pub direction: String,
}

/// `get_entity_details`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityDetails {
    /// The latest version.
    pub entity: Entity,
    /// Its edges; absent when `include_relationships` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relationships: Option<EntityEdges>,
    /// How many versions of the id are stored.
    pub version_count: usize,
    /// `entity.version`.
    pub current_version: String,
    /// Its live neighbours; present only when `include_connected` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_entities: Option<Vec<ConnectedEntity>>,
}

/// `find_similar_entities`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SimilarEntities {
    /// The entity compared against.
    pub reference_entity_id: String,
    /// Most similar first, each with `score` from 0 to 1.
    pub similar_entities: Vec<ScoredEntity>,
    /// `similar_entities.len()`.
    pub count: usize,
}

/// A procedure or manual of a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Documentation {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its content.
    pub content: JsonObject,
}

/// `get_procedures_for_device`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceDocumentation {
    /// The device asked about.
    pub device_id: String,
    /// Its name.
    pub device_name: String,
    /// Procedures with a `procedure_for` edge to the device.
    pub procedures: Vec<Documentation>,
    /// Manuals the device is `documented_by`.
    pub manuals: Vec<Documentation>,
    /// `procedures.len() + manuals.len()`.
    pub total_documentation: usize,
}

/// An automation that affects devices of a room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomAutomation {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its content.
    pub content: JsonObject,
    /// The room's devices it `automates`.
    pub affects_devices: Vec<NamedRef>,
}

/// `get_automations_in_room`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoomAutomations {
    /// The room asked about.
    pub room_id: String,
    /// Its name.
    pub room_name: String,
    /// Automations with an `automates` edge to a device of the room.
    pub automations: Vec<RoomAutomation>,
    /// `automations.len()`.
    pub automation_count: usize,
}

/// `update_entity`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityUpdate {
    /// The entity updated.
    pub entity_id: String,
    /// The version written.
    pub new_version: String,
    /// The `changes` argument as given.
    pub changes_applied: JsonObject,
    /// The new version's parents (the version it replaced).
    pub parent_versions: Vec<String>,
}
