//! Reading rows into domain types and writing domain types as rows (SQLite column encodings).

use std::borrow::Cow;
use std::hash::Hasher as _;
use std::sync::OnceLock;

use fnv::FnvHasher;
use inbetweenies_proto::{
    Entity, EntityId, EntityType, JsonObject, Relationship, RelationshipId, RelationshipType,
    SourceType, Timestamp, Version,
};
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{Arguments as _, QueryBuilder, Row, Sqlite, SqliteConnection};

use crate::error::{Result, StoreError};
use crate::logic::{EntityRow, RelationshipRow};
use crate::types::{ChangeRecord, StoredEntity, StoredRelationship};

/// Entity columns, in the order [`stored_entity`] reads them.
pub(crate) const ENTITY_COLS: &str = "seq, id, version, entity_type, name, content, source_type, \
     user_id, parent_versions, created_at, updated_at, received_at, is_latest, became_latest";

/// [`ENTITY_COLS`] qualified with the alias `e`.
pub(crate) const ENTITY_COLS_E: &str = "e.seq, e.id, e.version, e.entity_type, e.name, e.content, \
     e.source_type, e.user_id, e.parent_versions, e.created_at, e.updated_at, e.received_at, \
     e.is_latest, e.became_latest";

/// Relationship columns, in the order [`stored_relationship`] reads them.
pub(crate) const REL_COLS: &str = "seq, id, from_entity_id, from_entity_version, to_entity_id, \
     to_entity_version, relationship_type, properties, user_id, created_at, updated_at, received_at";

/// [`REL_COLS`] qualified with the alias `r`.
pub(crate) const REL_COLS_R: &str = "r.seq, r.id, r.from_entity_id, r.from_entity_version, \
     r.to_entity_id, r.to_entity_version, r.relationship_type, r.properties, r.user_id, \
     r.created_at, r.updated_at, r.received_at";

/// Number of columns in [`REL_COLS`].
pub(crate) const REL_NCOLS: usize = 12;

/// Rows per multi-row INSERT (well under SQLite's 32,766 bound parameters).
pub(crate) const INSERT_CHUNK: usize = 500;

/// Values per `IN (…)` list of bound parameters.
pub(crate) const IN_CHUNK: usize = 500;

/// Values per JSON list (see [`json_keyed`]).
pub(crate) const JSON_LIST_CHUNK: usize = 20_000;

/// The lookup key of an entity or relationship id: the 64-bit FNV-1a hash
/// of its UTF-8 bytes, as a signed integer (the `*_key` columns).
///
/// The indexes on ids are keyed by this 8-byte integer instead of the id
/// text, so a large push rewrites far smaller indexes. Every query matches
/// the key and the id, so ids that share a key cost a row read, never a wrong
/// answer. Stored in every row: it must never change.
pub(crate) fn key_of(id: &str) -> i64 {
    let mut h = FnvHasher::default();
    h.write(id.as_bytes());
    // Bit-for-bit: SQLite integers are signed.
    i64::from_ne_bytes(h.finish().to_ne_bytes())
}

/// A JSON array of `[key_of(first), first, rest…]` arrays: bound as ONE
/// parameter and joined in SQL through `json_each(?)` on `value ->> 0` (the
/// key), `value ->> 1` (the id) and so on; far cheaper than one parameter per value.
pub(crate) fn json_keyed<'a, const N: usize>(
    rows: impl IntoIterator<Item = [&'a str; N]>,
) -> Result<String> {
    let bad = |e: serde_json::Error| StoreError::Corrupt(format!("cannot encode JSON: {e}"));
    let mut out: Vec<u8> = b"[".to_vec();
    for (i, row) in rows.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        serde_json::to_writer(&mut out, &row.first().map_or(0, |id| key_of(id))).map_err(bad)?;
        for value in row {
            out.push(b',');
            serde_json::to_writer(&mut out, value).map_err(bad)?;
        }
        out.push(b']');
    }
    out.push(b']');
    String::from_utf8(out).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

fn get<'r, T>(row: &'r SqliteRow, i: usize) -> Result<T>
where
    T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
{
    row.try_get(i).map_err(StoreError::database)
}

/// A stored time (µs since the epoch).
pub(crate) fn ts(micros: i64) -> Result<Timestamp> {
    Timestamp::from_unix_micros(micros)
        .map_err(|_| StoreError::Corrupt(format!("time out of range: {micros}")))
}

/// A stored JSON object.
pub(crate) fn json_object(s: &str) -> Result<JsonObject> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad JSON object: {e}")))
}

/// JSON text of a value that always serialises (objects, lists of strings).
pub(crate) fn to_json<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode JSON: {e}")))
}

/// Reads [`ENTITY_COLS`] starting at column `at`.
pub(crate) fn stored_entity_at(row: &SqliteRow, at: usize) -> Result<StoredEntity> {
    let seq: i64 = get(row, at)?;
    let parents_json: &str = get(row, at + 8)?;
    let parents: Vec<Version> = if parents_json == "[]" {
        Vec::new()
    } else {
        serde_json::from_str(parents_json)
            .map_err(|e| StoreError::Corrupt(format!("bad parent_versions: {e}")))?
    };
    let entity = Entity {
        id: EntityId::new(get::<String>(row, at + 1)?),
        version: Version::new(get::<String>(row, at + 2)?),
        entity_type: EntityType::parse(get::<&str>(row, at + 3)?),
        name: get(row, at + 4)?,
        content: json_object(get::<&str>(row, at + 5)?)?,
        source_type: SourceType::parse(get::<&str>(row, at + 6)?),
        user_id: get(row, at + 7)?,
        parent_versions: parents,
        created_at: ts(get(row, at + 9)?)?,
        updated_at: ts(get(row, at + 10)?)?,
    };
    Ok(StoredEntity {
        entity,
        seq: seq as u64,
        received_at: ts(get(row, at + 11)?)?,
        latest: get::<bool>(row, at + 12)?,
        became_latest: get::<bool>(row, at + 13)?,
    })
}

/// Reads [`ENTITY_COLS`].
pub(crate) fn stored_entity(row: &SqliteRow) -> Result<StoredEntity> {
    stored_entity_at(row, 0)
}

/// Reads the entity of [`ENTITY_COLS`].
pub(crate) fn entity(row: &SqliteRow) -> Result<Entity> {
    stored_entity_at(row, 0).map(|s| s.entity)
}

/// Reads [`REL_COLS`] starting at column `at`.
pub(crate) fn stored_relationship_at(row: &SqliteRow, at: usize) -> Result<StoredRelationship> {
    let seq: i64 = get(row, at)?;
    let relationship = Relationship {
        id: RelationshipId::new(get::<String>(row, at + 1)?),
        from_entity_id: EntityId::new(get::<String>(row, at + 2)?),
        from_entity_version: Version::new(get::<String>(row, at + 3)?),
        to_entity_id: EntityId::new(get::<String>(row, at + 4)?),
        to_entity_version: Version::new(get::<String>(row, at + 5)?),
        relationship_type: RelationshipType::parse(get::<&str>(row, at + 6)?),
        properties: json_object(get::<&str>(row, at + 7)?)?,
        user_id: get(row, at + 8)?,
        created_at: ts(get(row, at + 9)?)?,
        updated_at: ts(get(row, at + 10)?)?,
    };
    Ok(StoredRelationship {
        relationship,
        seq: seq as u64,
        received_at: ts(get(row, at + 11)?)?,
    })
}

/// Reads [`REL_COLS`].
pub(crate) fn stored_relationship(row: &SqliteRow) -> Result<StoredRelationship> {
    stored_relationship_at(row, 0)
}

/// The entity arm of the change feed's statement: kind 0, then [`ENTITY_COLS`] (14
/// columns); ends with `seq > ` for the bound after which rows are read.
pub(crate) const FEED_ENTITY_ARM: &str = "SELECT 0 AS kind, seq, id, version, entity_type, name, \
     content, source_type, user_id, parent_versions, created_at, updated_at, received_at, \
     is_latest, became_latest FROM entities WHERE is_latest = 1 AND seq > ";

/// The relationship arm of the change feed's statement: kind 1, then [`REL_COLS`] padded
/// to the entity arm's 14 columns; ends with `seq > `.
pub(crate) const FEED_REL_ARM: &str = "SELECT 1 AS kind, seq, id, from_entity_id, \
     from_entity_version, to_entity_id, to_entity_version, relationship_type, properties, \
     user_id, created_at, updated_at, received_at, NULL, NULL FROM relationships WHERE seq > ";

/// One row of the change feed's statement ([`FEED_ENTITY_ARM`] or [`FEED_REL_ARM`]).
pub(crate) fn feed_record(row: &SqliteRow) -> Result<ChangeRecord> {
    match get::<i64>(row, 0)? {
        0 => stored_entity_at(row, 1).map(ChangeRecord::Entity),
        1 => stored_relationship_at(row, 1).map(ChangeRecord::Relationship),
        kind => Err(StoreError::Corrupt(format!(
            "change feed row of kind {kind}"
        ))),
    }
}

/// An entity version to insert.
#[derive(Debug)]
pub(crate) struct NewEntity<'a> {
    pub entity: EntityRow<'a>,
    pub seq: i64,
    pub received_at: i64,
    pub is_latest: bool,
    pub became_latest: bool,
}

/// A relationship to insert.
#[derive(Debug)]
pub(crate) struct NewRelationship<'a> {
    pub relationship: RelationshipRow<'a>,
    pub seq: i64,
    pub received_at: i64,
}

const ENTITY_INSERT: &str = "INSERT OR FAIL INTO entities (seq, id, id_key, version, entity_type, \
     name, content, source_type, user_id, parent_versions, created_at, updated_at, received_at, \
     is_latest, became_latest, is_deleted) VALUES ";

/// Columns of [`ENTITY_INSERT`].
const ENTITY_INSERT_COLS: usize = 16;

const REL_INSERT: &str = "INSERT OR FAIL INTO relationships (seq, id, id_key, from_entity_id, \
     from_key, from_entity_version, to_entity_id, to_key, to_entity_version, relationship_type, \
     properties, user_id, created_at, updated_at, received_at) VALUES ";

/// Columns of [`REL_INSERT`].
const REL_INSERT_COLS: usize = 15;

/// `head` followed by `rows` groups of `columns` placeholders.
fn values_sql(head: &str, columns: usize, rows: usize) -> String {
    let group = format!("({})", vec!["?"; columns].join(", "));
    let mut sql = String::with_capacity(head.len() + rows * (group.len() + 2));
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&group);
    }
    sql
}

/// The INSERT statement for a chunk of `rows` rows: built once for full chunks
/// (`full`), so the statement cache finds it and nothing is formatted per row.
fn insert_sql(
    full: &'static OnceLock<String>,
    head: &str,
    columns: usize,
    rows: usize,
) -> Cow<'static, str> {
    if rows == INSERT_CHUNK {
        Cow::Borrowed(full.get_or_init(|| values_sql(head, columns, INSERT_CHUNK)))
    } else {
        Cow::Owned(values_sql(head, columns, rows))
    }
}

/// Adds one bound value.
fn bind<'q, T>(args: &mut SqliteArguments<'q>, value: T) -> Result<()>
where
    T: 'q + sqlx::Encode<'q, Sqlite> + sqlx::Type<Sqlite>,
{
    args.add(value).map_err(StoreError::Database)
}

/// Inserts entity rows with multi-row INSERTs.
pub(crate) async fn insert_entities(
    conn: &mut SqliteConnection,
    rows: &[NewEntity<'_>],
) -> Result<()> {
    static FULL: OnceLock<String> = OnceLock::new();
    for chunk in rows.chunks(INSERT_CHUNK) {
        let sql = insert_sql(&FULL, ENTITY_INSERT, ENTITY_INSERT_COLS, chunk.len());
        let mut args = SqliteArguments::default();
        args.reserve(chunk.len() * ENTITY_INSERT_COLS, 0);
        for r in chunk {
            let e = &r.entity;
            bind(&mut args, r.seq)?;
            bind(&mut args, e.id.as_str())?;
            bind(&mut args, key_of(e.id.as_str()))?;
            bind(&mut args, e.version.as_str())?;
            bind(&mut args, e.entity_type.as_str())?;
            bind(&mut args, e.name)?;
            bind(&mut args, to_json(e.content)?)?;
            bind(&mut args, e.source_type.as_str())?;
            bind(&mut args, e.user_id)?;
            bind(&mut args, to_json(e.parent_versions)?)?;
            bind(&mut args, e.created_at.unix_micros())?;
            bind(&mut args, e.updated_at.unix_micros())?;
            bind(&mut args, r.received_at)?;
            bind(&mut args, r.is_latest)?;
            bind(&mut args, r.became_latest)?;
            bind(&mut args, e.is_deleted())?;
        }
        sqlx::query_with(&sql, args)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::database)?;
    }
    Ok(())
}

/// Inserts relationship rows with multi-row INSERTs.
pub(crate) async fn insert_relationships(
    conn: &mut SqliteConnection,
    rows: &[NewRelationship<'_>],
) -> Result<()> {
    static FULL: OnceLock<String> = OnceLock::new();
    for chunk in rows.chunks(INSERT_CHUNK) {
        let sql = insert_sql(&FULL, REL_INSERT, REL_INSERT_COLS, chunk.len());
        let mut args = SqliteArguments::default();
        args.reserve(chunk.len() * REL_INSERT_COLS, 0);
        for r in chunk {
            let x = &r.relationship;
            bind(&mut args, r.seq)?;
            bind(&mut args, x.id.as_str())?;
            bind(&mut args, key_of(x.id.as_str()))?;
            bind(&mut args, x.from_entity_id.as_str())?;
            bind(&mut args, key_of(x.from_entity_id.as_str()))?;
            bind(&mut args, x.from_entity_version.as_str())?;
            bind(&mut args, x.to_entity_id.as_str())?;
            bind(&mut args, key_of(x.to_entity_id.as_str()))?;
            bind(&mut args, x.to_entity_version.as_str())?;
            bind(&mut args, x.relationship_type.as_str())?;
            bind(&mut args, to_json(x.properties)?)?;
            bind(&mut args, x.user_id)?;
            bind(&mut args, x.created_at.unix_micros())?;
            bind(&mut args, x.updated_at.unix_micros())?;
            bind(&mut args, r.received_at)?;
        }
        sqlx::query_with(&sql, args)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::database)?;
    }
    Ok(())
}

/// Pushes `(?, ?, …)` binding every string in `values`.
pub(crate) fn push_in_list<'a>(
    qb: &mut QueryBuilder<'a, Sqlite>,
    values: impl IntoIterator<Item = &'a str>,
) {
    qb.push("(");
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v);
    }
    sep.push_unseparated(")");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_keys_are_fnv1a_and_fixed() {
        // Stored in every row: these values must never change.
        assert_eq!(key_of(""), 0xcbf2_9ce4_8422_2325_u64 as i64);
        assert_eq!(key_of("a"), 0xaf63_dc4c_8601_ec8c_u64 as i64);
        assert_eq!(key_of("foobar"), 0x8594_4171_f739_67e8_u64 as i64);
    }

    #[test]
    fn feed_arms_read_the_columns_their_decoders_expect() {
        assert!(FEED_ENTITY_ARM.contains(&format!("SELECT 0 AS kind, {ENTITY_COLS} FROM")));
        assert!(FEED_REL_ARM.contains(&format!("SELECT 1 AS kind, {REL_COLS}, NULL, NULL FROM")));
    }

    #[test]
    fn keyed_lists_are_json() {
        let list = json_keyed([["a", "v\"1"], ["b", "v2"]]).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&list).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([[key_of("a"), "a", "v\"1"], [key_of("b"), "b", "v2"]])
        );
        assert_eq!(json_keyed::<1>([]).unwrap(), "[]");
    }
}
