//! Column lists and row decoding for the PostgreSQL backend (sqlx rows stay in here and its siblings).

use inbetweenies_proto::{
    Entity, EntityType, JsonObject, Relationship, RelationshipType, SourceType, Timestamp, Version,
};
use sqlx::postgres::PgRow;
use sqlx::Row as _;

use crate::error::{Result, StoreError};
use crate::types::{
    BlobMeta, ClientSyncStatus, ConflictRecord, ConflictStatus, StoredEntity, StoredRelationship,
};

/// Number of columns [`entity_cols`] selects.
pub(super) const ENTITY_COLS: usize = 14;

/// The entity columns, in the order [`stored_entity_at`] reads them, from table alias `a`.
pub(super) fn entity_cols(a: &str) -> String {
    format!(
        "{a}.id, {a}.version, {a}.entity_type, {a}.name, {a}.content::text, {a}.source_type, \
         {a}.user_id, {a}.parent_versions::text, {a}.created_at, {a}.updated_at, {a}.seq, \
         {a}.received_at, {a}.is_latest, {a}.became_latest"
    )
}

/// The relationship columns, in the order [`stored_relationship_at`] reads them, from alias `a`.
pub(super) fn relationship_cols(a: &str) -> String {
    format!(
        "{a}.id, {a}.from_entity_id, {a}.from_entity_version, {a}.to_entity_id, \
         {a}.to_entity_version, {a}.relationship_type, {a}.properties::text, {a}.user_id, \
         {a}.created_at, {a}.updated_at, {a}.seq, {a}.received_at"
    )
}

/// The conflict columns, in the order [`conflict`] reads them.
pub(super) const CONFLICT_COLS: &str = "id, entity_id, server_version, client_version, \
     resolved_version, reason, strategy, status, device_id, created_at, resolved_at";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

fn get<'r, T>(row: &'r PgRow, i: usize) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(i).map_err(super::db)
}

/// A stored time (µs since the epoch) as a timestamp.
pub(super) fn ts(micros: i64) -> Result<Timestamp> {
    Timestamp::from_unix_micros(micros).map_err(|e| corrupt("time", e))
}

/// A sequence number as stored.
pub(super) fn seq(v: i64) -> Result<u64> {
    u64::try_from(v).map_err(|e| corrupt("sequence number", e))
}

fn json_object(s: &str, what: &str) -> Result<JsonObject> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

/// An entity version from `ENTITY_COLS` columns starting at `at`.
pub(super) fn stored_entity_at(row: &PgRow, at: usize) -> Result<StoredEntity> {
    // Text columns that are parsed are borrowed from the row, not copied first.
    let content: &str = get(row, at + 4)?;
    let parents: &str = get(row, at + 7)?;
    let parent_versions: Vec<Version> = if parents == "[]" {
        Vec::new()
    } else {
        serde_json::from_str(parents).map_err(|e| corrupt("parent_versions", e))?
    };
    let entity = Entity {
        id: get::<String>(row, at)?.into(),
        version: Version::new(get::<String>(row, at + 1)?),
        entity_type: EntityType::parse(get::<&str>(row, at + 2)?),
        name: get(row, at + 3)?,
        content: json_object(content, "content")?,
        source_type: SourceType::parse(get::<&str>(row, at + 5)?),
        user_id: get(row, at + 6)?,
        parent_versions,
        created_at: ts(get(row, at + 8)?)?,
        updated_at: ts(get(row, at + 9)?)?,
    };
    Ok(StoredEntity {
        entity,
        seq: seq(get(row, at + 10)?)?,
        received_at: ts(get(row, at + 11)?)?,
        latest: get(row, at + 12)?,
        became_latest: get(row, at + 13)?,
    })
}

/// An entity version from `ENTITY_COLS` columns starting at 0.
pub(super) fn entity(row: &PgRow) -> Result<Entity> {
    stored_entity_at(row, 0).map(|s| s.entity)
}

/// A relationship from the relationship columns starting at `at`.
pub(super) fn stored_relationship_at(row: &PgRow, at: usize) -> Result<StoredRelationship> {
    let properties: &str = get(row, at + 6)?;
    let relationship = Relationship {
        id: get::<String>(row, at)?.into(),
        from_entity_id: get::<String>(row, at + 1)?.into(),
        from_entity_version: Version::new(get::<String>(row, at + 2)?),
        to_entity_id: get::<String>(row, at + 3)?.into(),
        to_entity_version: Version::new(get::<String>(row, at + 4)?),
        relationship_type: RelationshipType::parse(get::<&str>(row, at + 5)?),
        properties: json_object(properties, "properties")?,
        user_id: get(row, at + 7)?,
        created_at: ts(get(row, at + 8)?)?,
        updated_at: ts(get(row, at + 9)?)?,
    };
    Ok(StoredRelationship {
        relationship,
        seq: seq(get(row, at + 10)?)?,
        received_at: ts(get(row, at + 11)?)?,
    })
}

/// A relationship from the relationship columns starting at 0.
pub(super) fn relationship(row: &PgRow) -> Result<Relationship> {
    stored_relationship_at(row, 0).map(|s| s.relationship)
}

/// A conflict record from [`CONFLICT_COLS`].
pub(super) fn conflict(row: &PgRow) -> Result<ConflictRecord> {
    let status: String = get(row, 7)?;
    Ok(ConflictRecord {
        id: get(row, 0)?,
        entity_id: get::<String>(row, 1)?.into(),
        server_version: Version::new(get::<String>(row, 2)?),
        client_version: Version::new(get::<String>(row, 3)?),
        resolved_version: Version::new(get::<String>(row, 4)?),
        reason: get(row, 5)?,
        strategy: get(row, 6)?,
        status: ConflictStatus::parse(&status)
            .ok_or_else(|| corrupt("conflict status", &status))?,
        device_id: get(row, 8)?,
        created_at: ts(get(row, 9)?)?,
        resolved_at: get::<Option<i64>>(row, 10)?.map(ts).transpose()?,
    })
}

/// Blob metadata from `sha256, entity_id, content_type, size, created_at`.
pub(super) fn blob_meta(row: &PgRow) -> Result<BlobMeta> {
    Ok(BlobMeta {
        sha256: get(row, 0)?,
        entity_id: get::<String>(row, 1)?.into(),
        content_type: get(row, 2)?,
        size: seq(get(row, 3)?)?,
        created_at: ts(get(row, 4)?)?,
    })
}

/// A device's status from `device_id, last_seen, last_ack, sync_count`.
pub(super) fn client_status(row: &PgRow) -> Result<ClientSyncStatus> {
    Ok(ClientSyncStatus {
        device_id: get(row, 0)?,
        last_seen: get::<Option<i64>>(row, 1)?.map(ts).transpose()?,
        last_ack: get::<Option<i64>>(row, 2)?.map(ts).transpose()?,
        sync_count: seq(get(row, 3)?)?,
    })
}
