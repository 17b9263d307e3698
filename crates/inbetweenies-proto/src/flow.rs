//! The seeds' five-step flow: `sync_request` → `sync_delta`, `sync_push` → `sync_result`, `sync_ack`.
//!
//! These messages travel on `POST /api/v1/sync/request`, `/push` and `/ack`
//! and are served by the same engine as inbetweenies-v2. Each carries a
//! `type` tag; [`FlowMessage`] reads any of them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::EntityId;
use crate::model::{EntityType, JsonObject, SourceType};
use crate::timestamp::Timestamp;
use crate::version::Version;
use crate::wire::{ChangeType, Cursor, EntityChange};

/// Any five-step message, tagged by its `type` field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FlowMessage {
    /// Step 1, client → server.
    SyncRequest(FlowSyncRequest),
    /// Step 2, server → client.
    SyncDelta(FlowSyncDelta),
    /// Step 3, client → server.
    SyncPush(FlowSyncPush),
    /// Step 4, server → client.
    SyncResult(FlowSyncResult),
    /// Step 5, client → server.
    SyncAck(FlowSyncAck),
}

/// Step 1: ask for changes since the last sync.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSyncRequest {
    /// The client (device) id.
    pub client_id: String,
    /// The watermark of the last completed sync (null: everything).
    #[serde(default)]
    pub last_sync: Option<Timestamp>,
    /// Only these entity types (null: all).
    #[serde(default)]
    pub entity_types: Option<Vec<EntityType>>,
    /// Whether tombstones are included.
    #[serde(default)]
    pub include_deleted: bool,
    /// Resume a paged delta (this server's extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}

/// One changed entity in a `sync_delta`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowChange {
    /// What the entity is.
    pub entity_type: EntityType,
    /// Its id.
    pub entity_id: EntityId,
    /// `create`, `update` or `delete`.
    pub operation: ChangeType,
    /// The entity's fields (see [`FlowData`]).
    pub data: FlowData,
    /// The editor's time of this version.
    pub updated_at: Timestamp,
    /// The version string.
    pub sync_id: Version,
}

/// The entity fields carried in five-step messages' `data`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowData {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Free JSON object.
    #[serde(default)]
    pub content: JsonObject,
    /// Where the data came from.
    #[serde(default = "default_source")]
    pub source_type: SourceType,
    /// The editing user.
    #[serde(default)]
    pub user_id: String,
    /// Superseded versions.
    #[serde(default)]
    pub parent_versions: Vec<Version>,
    /// The editor's clock (optional on input; the version's timestamp wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

fn default_source() -> SourceType {
    SourceType::Manual
}

/// Step 2: changes since `last_sync`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSyncDelta {
    /// The watermark for the next `last_sync`.
    pub server_time: Timestamp,
    /// Changed entities.
    pub changes: Vec<FlowChange>,
    /// Unresolved conflicts (always empty: the server decides every conflict on push).
    #[serde(default)]
    pub conflicts: Vec<Value>,
    /// Whether another page follows (repeat with `cursor`).
    pub more: bool,
    /// The next page's cursor when `more` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Convergence digest of the server's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_digest: Option<String>,
}

/// One local change in a `sync_push`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowPushChange {
    /// What the entity is.
    pub entity_type: EntityType,
    /// Its id.
    pub entity_id: EntityId,
    /// `create`, `update` or `delete`.
    pub operation: ChangeType,
    /// The entity's fields.
    pub data: FlowData,
    /// The version the client made for this edit.
    pub client_sync_id: Version,
}

impl FlowPushChange {
    /// The same change as an inbetweenies-v2 entity change.
    pub fn to_entity_change(&self) -> EntityChange {
        EntityChange {
            id: self.entity_id.clone(),
            version: self.client_sync_id.clone(),
            entity_type: self.entity_type.clone(),
            name: self.data.name.clone(),
            content: self.data.content.clone(),
            source_type: self.data.source_type.clone(),
            user_id: self.data.user_id.clone(),
            parent_versions: self.data.parent_versions.clone(),
            checksum: None,
            created_at: None,
            updated_at: self.data.updated_at,
        }
    }
}

/// Step 3: local changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSyncPush {
    /// The client (device) id.
    pub client_id: String,
    /// The user the changes are made by (defaults to each change's `data.user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The changes.
    #[serde(default)]
    pub changes: Vec<FlowPushChange>,
}

/// Per-change outcome in a `sync_result`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowApplied {
    /// The pushed version.
    pub client_sync_id: Version,
    /// The version now latest on the server for that id.
    pub server_sync_id: Version,
    /// `applied`, `conflict` or `rejected`.
    pub status: String,
}

/// A conflict decided during a push, in the seeds' shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowConflict {
    /// What the entity is.
    pub entity_type: EntityType,
    /// Its id.
    pub entity_id: EntityId,
    /// `newer_on_server`, `newer_on_client`, `tiebreak_version`, `delete_wins`, `merged`, `manual`.
    pub reason: String,
    /// The server's version before the push.
    pub server_version: Value,
    /// The pushed version.
    pub client_version: Value,
    /// `server_wins`, `client_wins`, `merged` or `manual`.
    pub resolution: String,
}

/// Step 4: what the push did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSyncResult {
    /// One entry per acknowledged change.
    pub applied: Vec<FlowApplied>,
    /// Conflicts decided.
    pub conflicts: Vec<FlowConflict>,
    /// The server's latest version of each acknowledged id whose latest is not the
    /// pushed version, in the form of `sync_delta` changes (left out when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FlowChange>,
}

/// Step 5: the client confirms it has applied everything up to a watermark.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlowSyncAck {
    /// The client (device) id.
    pub client_id: String,
    /// The `server_time` of the delta the client applied.
    pub sync_completed_at: Timestamp,
}
