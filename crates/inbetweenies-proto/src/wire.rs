//! The inbetweenies-v2 wire types: one `POST /api/v1/sync/` round trip.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::CursorError;
use crate::ids::{EntityId, RelationshipId};
use crate::model::{
    is_tombstone, Entity, EntityType, JsonObject, Relationship, RelationshipType, SourceType,
};
use crate::timestamp::Timestamp;
use crate::version::Version;

/// The protocol version string this crate speaks.
pub const PROTOCOL_VERSION: &str = "inbetweenies-v2";

fn default_protocol_version() -> String {
    PROTOCOL_VERSION.to_owned()
}

/// What a sync round trip asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncType {
    /// The full current state (paged).
    Full,
    /// Changes after `filters.since` or after `cursor`.
    Delta,
    /// Entities only.
    Entities,
    /// Relationships only.
    Relationships,
}

impl SyncType {
    /// The wire string.
    pub fn as_str(&self) -> &'static str {
        match self {
            SyncType::Full => "full",
            SyncType::Delta => "delta",
            SyncType::Entities => "entities",
            SyncType::Relationships => "relationships",
        }
    }
}

/// What a change does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeType {
    /// A new entity.
    Create,
    /// A new version of an entity.
    Update,
    /// A tombstone version of an entity.
    Delete,
}

impl ChangeType {
    /// The wire string.
    pub fn as_str(&self) -> &'static str {
        match self {
            ChangeType::Create => "create",
            ChangeType::Update => "update",
            ChangeType::Delete => "delete",
        }
    }
}

/// The wire form of a vector clock: device id → that device's latest counter (a string).
///
/// See `inbetweenies-conflict` for the clock operations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorClockWire {
    /// Per-device entries.
    #[serde(default)]
    pub clocks: BTreeMap<String, String>,
}

/// Which rows a pull wants.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncFilters {
    /// Only these entity types (null: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_types: Option<Vec<EntityType>>,
    /// Only rows the server received strictly after this time (null: everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Only rows whose `user_id` is one of these (null: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_by: Option<Vec<String>>,
}

/// An opaque pagination cursor: the server sequence number of the last row of a page.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(pub String);

impl Cursor {
    /// A cursor for a server sequence number.
    pub fn from_seq(seq: u64) -> Self {
        Cursor(seq.to_string())
    }

    /// The server sequence number the cursor names: ASCII digits only, as the
    /// server writes them. Spaces, signs and anything else make it malformed
    /// (`" 5"` and `"+5"` are not cursors this server issued).
    pub fn seq(&self) -> Result<u64, CursorError> {
        let s = self.0.as_str();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CursorError(self.0.clone()));
        }
        s.parse::<u64>().map_err(|_| CursorError(self.0.clone()))
    }
}

/// `POST /api/v1/sync/` request body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Must be [`PROTOCOL_VERSION`]; a missing value defaults to it.
    #[serde(default = "default_protocol_version")]
    pub protocol_version: String,
    /// The sending device.
    pub device_id: String,
    /// The sending user.
    pub user_id: String,
    /// What the request asks for.
    pub sync_type: SyncType,
    /// Local changes to push (may be empty).
    #[serde(default)]
    pub changes: Vec<SyncChange>,
    /// What to pull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<SyncFilters>,
    /// The sender's vector clock.
    #[serde(default)]
    pub vector_clock: VectorClockWire,
    /// Resume a paged pull (honoured with `sync_type: "delta"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Optional protocol features the client understands (PROTOCOL §5.12), e.g.
    /// [`capability::RELATIONSHIP_ROWS`]. Left out, or empty, the server answers as
    /// the reference does; names a server does not know are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
}

/// Names of the optional protocol features a request may declare in
/// [`SyncRequest::capabilities`] and a server lists in [`SyncResponse::capabilities`]
/// (PROTOCOL §5.12).
pub mod capability {
    /// The client understands relationship rows (`entity: null` changes carrying
    /// relationships) in pulled pages, and counts them against the page size.
    pub const RELATIONSHIP_ROWS: &str = "relationship_rows";
    /// The server answers `GET /api/v1/sync/merkle`: nodes of a Merkle tree over the
    /// latest `(id, version)` rows, to find which ids differ from a client's mirror.
    pub const MERKLE: &str = "merkle";
    /// The graph REST API answers `?at=T`: the graph as it was at time T.
    pub const AS_OF: &str = "as_of";
    /// The server streams its change feed at `GET /api/v1/sync/events` (Server-Sent
    /// Events: one event per committed write, carrying the new cursor).
    pub const CHANGE_FEED: &str = "change_feed";
    /// The server keeps blobs at `/api/v1/blobs/{sha256}`: resumable chunked uploads,
    /// ranged downloads, checked against the address.
    pub const BLOBS: &str = "blobs";
}

impl SyncRequest {
    /// A request with no changes and no filters.
    pub fn new(
        device_id: impl Into<String>,
        user_id: impl Into<String>,
        sync_type: SyncType,
    ) -> Self {
        SyncRequest {
            protocol_version: default_protocol_version(),
            device_id: device_id.into(),
            user_id: user_id.into(),
            sync_type,
            changes: Vec::new(),
            filters: None,
            vector_clock: VectorClockWire::default(),
            cursor: None,
            capabilities: Vec::new(),
        }
    }

    /// Whether the request declares the capability `name` ([`capability`]).
    pub fn declares(&self, name: &str) -> bool {
        self.capabilities.iter().any(|c| c == name)
    }

    /// `filters.since`, if any.
    pub fn since(&self) -> Option<Timestamp> {
        self.filters.as_ref().and_then(|f| f.since)
    }
}

/// One change: an entity version and/or relationships.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncChange {
    /// What the change does.
    pub change_type: ChangeType,
    /// The entity version (null for a relationship-only change).
    #[serde(default)]
    pub entity: Option<EntityChange>,
    /// Relationships carried with the change.
    #[serde(default)]
    pub relationships: Vec<RelationshipChange>,
}

/// An entity version on the wire.
///
/// A version's edit time is the timestamp inside its version string. A
/// version written by another client may be any non-empty string (PROTOCOL
/// §3.3); its edit time is then the `updated_at` the change carries, or the
/// server's receipt time ([`EntityChange::edit_time`]). Servers send neither
/// `created_at` nor `updated_at`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityChange {
    /// Stable id.
    pub id: EntityId,
    /// This version.
    pub version: Version,
    /// What the entity is.
    pub entity_type: EntityType,
    /// Display name.
    pub name: String,
    /// Free JSON object.
    pub content: JsonObject,
    /// Where the data came from.
    pub source_type: SourceType,
    /// The user who made this version.
    pub user_id: String,
    /// The versions this one supersedes.
    #[serde(default)]
    pub parent_versions: Vec<Version>,
    /// Optional content checksum (see [`crate::checksum`]); servers send null.
    #[serde(default)]
    pub checksum: Option<String>,
    /// When the entity was first created, as the sending client says (optional
    /// input; read only for a version that carries no timestamp, PROTOCOL §3.3).
    /// A value that does not read as a timestamp is taken as absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_timestamp"
    )]
    pub created_at: Option<Timestamp>,
    /// When this version was made, as the sending client says (optional input;
    /// the edit time of a version that carries no timestamp, PROTOCOL §3.3).
    /// A value that does not read as a timestamp is taken as absent.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_timestamp"
    )]
    pub updated_at: Option<Timestamp>,
}

/// A relationship endpoint version that may be null on the wire: null is read as
/// the empty version, and the empty version is written as null (PROTOCOL §5.4).
mod nullable_version {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::version::Version;

    pub(super) fn serialize<S: Serializer>(v: &Version, s: S) -> Result<S::Ok, S::Error> {
        match v.as_str() {
            "" => s.serialize_none(),
            v => s.serialize_str(v),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        Ok(Version::new(
            Option::<String>::deserialize(d)?.unwrap_or_default(),
        ))
    }
}

/// An optional timestamp that is `None` when absent, null or unreadable.
fn lenient_timestamp<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Timestamp>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value::<Timestamp>(v).ok()))
}

impl EntityChange {
    /// Whether this version is a tombstone.
    pub fn is_deleted(&self) -> bool {
        is_tombstone(&self.content)
    }

    /// The wire form of a stored entity version.
    pub fn from_entity(e: &Entity) -> Self {
        EntityChange {
            id: e.id.clone(),
            version: e.version.clone(),
            entity_type: e.entity_type.clone(),
            name: e.name.clone(),
            content: e.content.clone(),
            source_type: e.source_type.clone(),
            user_id: e.user_id.clone(),
            parent_versions: e.parent_versions.clone(),
            checksum: None,
            created_at: None,
            updated_at: None,
        }
    }

    /// The version's edit time (PROTOCOL §3.3): the timestamp inside the
    /// version string; for a version that carries none (an opaque version
    /// written by another client), the `updated_at` the change carries; else
    /// `receipt`, the time the server (or client) received it.
    pub fn edit_time(&self, receipt: Timestamp) -> Timestamp {
        self.version
            .timestamp()
            .ok()
            .or(self.updated_at)
            .unwrap_or(receipt)
    }

    /// The `created_at` of this version when it is its id's first: the
    /// `created_at` the change carries for a version without a timestamp (read
    /// as [`Self::edit_time`] reads `updated_at`), else `edit_time`.
    pub fn first_created_at(&self, edit_time: Timestamp) -> Timestamp {
        match self.version.timestamp() {
            Ok(_) => edit_time,
            Err(_) => self.created_at.unwrap_or(edit_time),
        }
    }

    /// Builds the stored form. `updated_at` is the [edit time](Self::edit_time)
    /// (`fallback` is the receipt time); `created_at` is given by the caller,
    /// who knows whether the id existed before.
    pub fn to_entity(&self, created_at: Option<Timestamp>, fallback: Timestamp) -> Entity {
        let updated_at = self.edit_time(fallback);
        Entity {
            id: self.id.clone(),
            version: self.version.clone(),
            entity_type: self.entity_type.clone(),
            name: self.name.clone(),
            content: self.content.clone(),
            source_type: self.source_type.clone(),
            user_id: self.user_id.clone(),
            parent_versions: self.parent_versions.clone(),
            created_at: created_at.unwrap_or_else(|| self.first_created_at(updated_at)),
            updated_at,
        }
    }
}

/// A relationship on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RelationshipChange {
    /// The edge's id.
    pub id: RelationshipId,
    /// Source entity.
    pub from_entity_id: EntityId,
    /// The source's version. Null on the wire (as the reference client may send
    /// it) is read as, and kept as, the empty version: "any version of the
    /// source" (PROTOCOL §5.4); it is written back as null.
    #[serde(with = "nullable_version")]
    pub from_entity_version: Version,
    /// Target entity.
    pub to_entity_id: EntityId,
    /// The target's version; null as for [`Self::from_entity_version`].
    #[serde(with = "nullable_version")]
    pub to_entity_version: Version,
    /// What the edge means.
    pub relationship_type: RelationshipType,
    /// Free JSON object.
    #[serde(default)]
    pub properties: JsonObject,
    /// The user who made the edge (sent by this server; optional on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// When the edge was made (sent by this server; optional on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// When the edge last changed (sent by this server; optional on input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

impl RelationshipChange {
    /// The wire form of a stored relationship.
    pub fn from_relationship(r: &Relationship) -> Self {
        RelationshipChange {
            id: r.id.clone(),
            from_entity_id: r.from_entity_id.clone(),
            from_entity_version: r.from_entity_version.clone(),
            to_entity_id: r.to_entity_id.clone(),
            to_entity_version: r.to_entity_version.clone(),
            relationship_type: r.relationship_type.clone(),
            properties: r.properties.clone(),
            user_id: Some(r.user_id.clone()),
            created_at: Some(r.created_at),
            updated_at: Some(r.updated_at),
        }
    }

    /// The stored form; missing `user_id`/times are filled from the arguments.
    pub fn to_relationship(&self, default_user: &str, now: Timestamp) -> Relationship {
        let created_at = self.created_at.unwrap_or(now);
        Relationship {
            id: self.id.clone(),
            from_entity_id: self.from_entity_id.clone(),
            from_entity_version: self.from_entity_version.clone(),
            to_entity_id: self.to_entity_id.clone(),
            to_entity_version: self.to_entity_version.clone(),
            relationship_type: self.relationship_type.clone(),
            properties: self.properties.clone(),
            user_id: self
                .user_id
                .clone()
                .unwrap_or_else(|| default_user.to_owned()),
            created_at,
            updated_at: self.updated_at.unwrap_or(created_at),
        }
    }
}

/// A conflict the server decided.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConflictInfo {
    /// The contested entity.
    pub entity_id: EntityId,
    /// The server's version before the push.
    pub local_version: Version,
    /// The pushed version.
    pub remote_version: Version,
    /// How it was decided, in the reference's words (e.g. `"remote has newer timestamp"`).
    pub resolution_strategy: String,
    /// The version that is now latest.
    pub resolved_version: Version,
    /// Machine-readable reason (this server only): `newer_on_server`, `newer_on_client`,
    /// `tiebreak_version`, `delete_wins`, `merged`, `manual`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Counters of one round trip.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStats {
    /// Entity changes applied from the push.
    pub entities_synced: u64,
    /// Relationships applied from the push.
    pub relationships_synced: u64,
    /// Conflicts decided.
    pub conflicts_resolved: u64,
    /// Server time spent, in milliseconds.
    pub duration_ms: f64,
}

/// `POST /api/v1/sync/` response body. Field order is the wire order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// Always [`PROTOCOL_VERSION`].
    pub protocol_version: String,
    /// Echo of the request's `sync_type`.
    pub sync_type: SyncType,
    /// Server→client changes (one page).
    pub changes: Vec<SyncChange>,
    /// Conflicts decided while applying the push.
    pub conflicts: Vec<ConflictInfo>,
    /// The server's vector clock.
    #[serde(default)]
    pub vector_clock: VectorClockWire,
    /// Next page's cursor; null when drained.
    #[serde(default)]
    pub cursor: Option<Cursor>,
    /// Convergence digest of the server's state (defined in `docs/PROTOCOL.md`, computed by `inbetweenies-conflict`).
    #[serde(default)]
    pub state_digest: Option<String>,
    /// Counters.
    pub sync_stats: SyncStats,
    /// The watermark: the client's next `filters.since`.
    pub server_time: Timestamp,
    /// Entity ids the client may drop from its outbox.
    #[serde(default)]
    pub applied: Vec<EntityId>,
    /// Relationship ids the client may drop from its outbox.
    #[serde(default)]
    pub applied_relationships: Vec<RelationshipId>,
    /// The optional features this server offers ([`capability`]); sent only in
    /// answer to a request that declared capabilities, so older clients see the
    /// reference's keys and nothing else (PROTOCOL §5.12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::Cursor;

    #[test]
    fn cursors_are_plain_digits() {
        assert_eq!(Cursor::from_seq(5).seq().unwrap(), 5);
        assert_eq!(Cursor("0".into()).seq().unwrap(), 0);
        assert_eq!(Cursor("007".into()).seq().unwrap(), 7);
        for bad in [
            "",
            " 5",
            "5 ",
            "\t5",
            "5\n",
            "+5",
            "-5",
            "5.0",
            "abc",
            "1e3",
            "٥",
            "18446744073709551616",
        ] {
            let err = Cursor(bad.into()).seq().unwrap_err();
            assert_eq!(err.0, bad, "{bad:?} must be refused as given");
        }
    }
}
