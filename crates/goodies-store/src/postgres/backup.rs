//! Snapshots, restores and sync metadata on PostgreSQL (see [`crate::snapshot`]).
//!
//! A snapshot is read in one `REPEATABLE READ, READ ONLY` transaction: every statement
//! sees the snapshot of its first, so each committed push is in it entirely or not at all
//! (a push is one transaction). A restore and every sync-metadata write run under the
//! exclusive write lock, like pushes. Each table is read as ONE JSON array built by the
//! database and written back from one JSON array per chunk.

use inbetweenies_proto::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::Row as _;

use super::rows::ts;
use super::{db, PgStore};
use crate::error::{Result, StoreError};
use crate::snapshot::{
    apply_event, check_snapshot, renumber, RestoreMark, RestoreReport, SnapshotBlob,
    SnapshotBlobData, SnapshotConflict, SnapshotDevice, SnapshotEntity, SnapshotRelationship,
    StoreSnapshot, SyncEvent, SyncMetadata, SNAPSHOT_FORMAT,
};

/// Rows per restoring INSERT.
const RESTORE_CHUNK: usize = 5_000;

const ENTITIES_JSON: &str = "SELECT coalesce(json_agg(json_build_object('seq', seq, 'id', id, \
    'version', version, 'entity_type', entity_type, 'name', name, 'content', content::text, \
    'source_type', source_type, 'user_id', user_id, 'parent_versions', parent_versions::text, \
    'created_at', created_at, 'updated_at', updated_at, 'received_at', received_at, \
    'is_latest', is_latest, 'became_latest', became_latest, 'is_deleted', is_deleted) \
    ORDER BY seq), '[]')::text FROM entities";

const RELATIONSHIPS_JSON: &str = "SELECT coalesce(json_agg(json_build_object('seq', seq, \
    'id', id, 'from_entity_id', from_entity_id, 'from_entity_version', from_entity_version, \
    'to_entity_id', to_entity_id, 'to_entity_version', to_entity_version, \
    'relationship_type', relationship_type, 'properties', properties::text, \
    'user_id', user_id, 'created_at', created_at, 'updated_at', updated_at, \
    'received_at', received_at) ORDER BY seq), '[]')::text FROM relationships";

const CONFLICTS_JSON: &str = "SELECT coalesce(json_agg(json_build_object('id', id, \
    'entity_id', entity_id, 'server_version', server_version, 'client_version', client_version, \
    'resolved_version', resolved_version, 'reason', reason, 'strategy', strategy, \
    'status', status, 'device_id', device_id, 'created_at', created_at, \
    'resolved_at', resolved_at) ORDER BY id), '[]')::text FROM conflicts";

const DEVICES_JSON: &str = "SELECT coalesce(json_agg(json_build_object('device_id', device_id, \
    'last_seen', last_seen, 'last_ack', last_ack, 'sync_count', sync_count) \
    ORDER BY device_id), '[]')::text FROM client_sync";

const BLOBS_JSON: &str = "SELECT coalesce(json_agg(json_build_object('sha256', b.sha256, \
    'entity_id', b.entity_id, 'content_type', b.content_type, 'size', d.size, \
    'created_at', b.created_at) ORDER BY b.sha256, b.entity_id), '[]')::text \
    FROM blobs b JOIN blob_data d ON d.sha256 = b.sha256";

const BLOB_DATA_JSON: &str = "SELECT coalesce(json_agg(json_build_object('sha256', sha256, \
    'hex', encode(bytes, 'hex')) ORDER BY sha256), '[]')::text FROM blob_data";

const SYNC_METADATA_COLS: &str = "id, client_id, server_url, auth_token, last_sync_time, \
    last_sync_success, last_sync_error, sync_failures, total_syncs, total_conflicts, \
    sync_in_progress, next_retry_time, created_at, updated_at";

async fn table_json<T: DeserializeOwned>(conn: &mut PgConnection, sql: &str) -> Result<T> {
    let json: String = sqlx::query_scalar(sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("snapshot rows: {e}")))
}

fn sync_metadata_row(row: &PgRow) -> Result<SyncMetadata> {
    let g = |i: usize| row.try_get::<Option<i64>, _>(i).map_err(db);
    let opt_ts = |i: usize| -> Result<Option<Timestamp>> { g(i)?.map(ts).transpose() };
    let s = |i: usize| row.try_get::<String, _>(i).map_err(db);
    Ok(SyncMetadata {
        id: g(0)?.unwrap_or_default(),
        client_id: s(1)?,
        server_url: s(2)?,
        auth_token: s(3)?,
        last_sync_time: opt_ts(4)?,
        last_sync_success: opt_ts(5)?,
        last_sync_error: row.try_get(6).map_err(db)?,
        sync_failures: g(7)?.unwrap_or_default(),
        total_syncs: g(8)?.unwrap_or_default(),
        total_conflicts: g(9)?.unwrap_or_default(),
        sync_in_progress: row.try_get(10).map_err(db)?,
        next_retry_time: opt_ts(11)?,
        created_at: ts(g(12)?.unwrap_or_default())?,
        updated_at: ts(g(13)?.unwrap_or_default())?,
    })
}

async fn sync_metadata_rows(
    conn: &mut PgConnection,
    client_id: Option<&str>,
    limit: i64,
) -> Result<Vec<SyncMetadata>> {
    let sql = format!(
        "SELECT {SYNC_METADATA_COLS} FROM sync_metadata \
         WHERE $1::text IS NULL OR client_id = $1 ORDER BY id LIMIT $2"
    );
    sqlx::query(&sql)
        .bind(client_id)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .iter()
        .map(sync_metadata_row)
        .collect()
}

/// Inserts rows given as JSON objects; `columns` are `(name, SQL type)`.
async fn insert_json<T: Serialize>(
    conn: &mut PgConnection,
    table: &str,
    overriding: bool,
    columns: &[(&str, &str)],
    rows: &[T],
) -> Result<()> {
    let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
    let select: Vec<String> = columns
        .iter()
        .map(|(n, t)| format!("(r ->> '{n}')::{t}"))
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) {} SELECT {} FROM json_array_elements($1::text::json) r",
        names.join(", "),
        if overriding {
            "OVERRIDING SYSTEM VALUE"
        } else {
            ""
        },
        select.join(", ")
    );
    for chunk in rows.chunks(RESTORE_CHUNK) {
        let json = serde_json::to_string(chunk)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode rows: {e}")))?;
        sqlx::query(&sql)
            .bind(json)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// Moves an identity column's counter to at least the largest id stored (never back).
async fn keep_identity_ahead(conn: &mut PgConnection, table: &str) -> Result<()> {
    sqlx::query(&format!(
        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
         GREATEST((SELECT coalesce(max(id), 0) FROM {table}), \
         nextval(pg_get_serial_sequence('{table}', 'id'))))"
    ))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

impl PgStore {
    pub(super) async fn export(&self) -> Result<StoreSnapshot> {
        let mut tx = self.begin_snapshot_read().await?;
        let (last_seq, last_received_at, now): (i64, i64, i64) =
            sqlx::query_as("SELECT last_seq, last_received_at, goodies_now_us() FROM goodies_meta")
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        let entities: Vec<SnapshotEntity> = table_json(&mut tx, ENTITIES_JSON).await?;
        let relationships: Vec<SnapshotRelationship> =
            table_json(&mut tx, RELATIONSHIPS_JSON).await?;
        let conflicts: Vec<SnapshotConflict> = table_json(&mut tx, CONFLICTS_JSON).await?;
        let devices: Vec<SnapshotDevice> = table_json(&mut tx, DEVICES_JSON).await?;
        let blobs: Vec<SnapshotBlob> = table_json(&mut tx, BLOBS_JSON).await?;
        let blob_data: Vec<SnapshotBlobData> = table_json(&mut tx, BLOB_DATA_JSON).await?;
        let sync_metadata = sync_metadata_rows(&mut tx, None, i64::MAX).await?;
        tx.commit().await.map_err(db)?;
        Ok(StoreSnapshot {
            format: SNAPSHOT_FORMAT.to_owned(),
            backend: "postgres".to_owned(),
            taken_at: now,
            last_seq,
            last_received_at,
            entities,
            relationships,
            conflicts,
            devices,
            blobs,
            blob_data,
            sync_metadata,
        })
    }

    pub(super) async fn restore(&self, snap: StoreSnapshot) -> Result<RestoreReport> {
        check_snapshot(&snap)?;
        let mut decoded = Vec::with_capacity(snap.blob_data.len());
        for d in &snap.blob_data {
            decoded.push((d.sha256.clone(), d.bytes()?));
        }
        let mut w = self.begin_write().await?;
        let (last_seq, last_received, at): (i64, i64, i64) =
            sqlx::query_as("SELECT last_seq, last_received_at, goodies_now_us() FROM goodies_meta")
                .fetch_one(&mut *w.tx)
                .await
                .map_err(db)?;
        let mark = last_seq + 1;
        let numbers = renumber(&snap, mark, at.max(last_received + 1));
        sqlx::query(
            "TRUNCATE entities, relationships, conflicts, client_sync, blobs, blob_data, \
             sync_metadata",
        )
        .execute(&mut *w.tx)
        .await
        .map_err(db)?;
        let entities = &numbers.entities;
        insert_json(
            &mut w.tx,
            "entities",
            false,
            &[
                ("id", "text"),
                ("version", "text"),
                ("entity_type", "text"),
                ("name", "text"),
                ("content", "json"),
                ("source_type", "text"),
                ("user_id", "text"),
                ("parent_versions", "json"),
                ("created_at", "bigint"),
                ("updated_at", "bigint"),
                ("seq", "bigint"),
                ("received_at", "bigint"),
                ("is_latest", "boolean"),
                ("became_latest", "boolean"),
                ("is_deleted", "boolean"),
            ],
            entities,
        )
        .await?;
        let relationships = &numbers.relationships;
        insert_json(
            &mut w.tx,
            "relationships",
            false,
            &[
                ("id", "text"),
                ("from_entity_id", "text"),
                ("from_entity_version", "text"),
                ("to_entity_id", "text"),
                ("to_entity_version", "text"),
                ("relationship_type", "text"),
                ("properties", "json"),
                ("user_id", "text"),
                ("created_at", "bigint"),
                ("updated_at", "bigint"),
                ("seq", "bigint"),
                ("received_at", "bigint"),
            ],
            relationships,
        )
        .await?;
        insert_json(
            &mut w.tx,
            "conflicts",
            true,
            &[
                ("id", "bigint"),
                ("entity_id", "text"),
                ("server_version", "text"),
                ("client_version", "text"),
                ("resolved_version", "text"),
                ("reason", "text"),
                ("strategy", "text"),
                ("status", "text"),
                ("device_id", "text"),
                ("created_at", "bigint"),
                ("resolved_at", "bigint"),
            ],
            &snap.conflicts,
        )
        .await?;
        keep_identity_ahead(&mut w.tx, "conflicts").await?;
        insert_json(
            &mut w.tx,
            "client_sync",
            false,
            &[
                ("device_id", "text"),
                ("last_seen", "bigint"),
                ("last_ack", "bigint"),
                ("sync_count", "bigint"),
            ],
            &snap.devices,
        )
        .await?;
        for (sha, bytes) in &decoded {
            sqlx::query("INSERT INTO blob_data (sha256, size, bytes) VALUES ($1, $2, $3)")
                .bind(sha)
                .bind(bytes.len() as i64)
                .bind(bytes)
                .execute(&mut *w.tx)
                .await
                .map_err(db)?;
        }
        insert_json(
            &mut w.tx,
            "blobs",
            false,
            &[
                ("sha256", "text"),
                ("entity_id", "text"),
                ("content_type", "text"),
                ("created_at", "bigint"),
            ],
            &snap.blobs,
        )
        .await?;
        let sync_rows: Vec<serde_json::Value> = snap
            .sync_metadata
            .iter()
            .map(crate::snapshot::sync_metadata_micros)
            .collect();
        insert_json(
            &mut w.tx,
            "sync_metadata",
            true,
            &[
                ("id", "bigint"),
                ("client_id", "text"),
                ("server_url", "text"),
                ("auth_token", "text"),
                ("last_sync_time", "bigint"),
                ("last_sync_success", "bigint"),
                ("last_sync_error", "text"),
                ("sync_failures", "bigint"),
                ("total_syncs", "bigint"),
                ("total_conflicts", "bigint"),
                ("sync_in_progress", "boolean"),
                ("next_retry_time", "bigint"),
                ("created_at", "bigint"),
                ("updated_at", "bigint"),
            ],
            &sync_rows,
        )
        .await?;
        keep_identity_ahead(&mut w.tx, "sync_metadata").await?;
        sqlx::query(
            "UPDATE goodies_meta SET last_seq = $1, last_received_at = $2, restored_seq = $3, \
             restored_at = $4",
        )
        .bind(numbers.last_seq)
        .bind(numbers.last_received)
        .bind(mark)
        .bind(at)
        .execute(&mut *w.tx)
        .await
        .map_err(db)?;
        // Every watermark read after the commit must be at or after the mark's time.
        for _ in 0..1_000 {
            let now: i64 = sqlx::query_scalar("SELECT goodies_now_us()")
                .fetch_one(&mut *w.tx)
                .await
                .map_err(db)?;
            if now > at {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        w.commit(&self.opts).await?;
        *self.digest.lock().await = None;
        Ok(RestoreReport {
            entities: snap.entities.len() as u64,
            relationships: snap.relationships.len() as u64,
            mark: RestoreMark {
                seq: mark as u64,
                at: ts(at)?,
            },
        })
    }

    pub(super) async fn read_restore_mark(&self) -> Result<Option<RestoreMark>> {
        let (seq, at): (i64, i64) =
            sqlx::query_as("SELECT restored_seq, restored_at FROM goodies_meta")
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        if seq == 0 {
            return Ok(None);
        }
        Ok(Some(RestoreMark {
            seq: seq as u64,
            at: ts(at)?,
        }))
    }

    pub(super) async fn list_sync_metadata(&self, limit: usize) -> Result<Vec<SyncMetadata>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        sync_metadata_rows(&mut conn, None, i64::try_from(limit).unwrap_or(i64::MAX)).await
    }

    pub(super) async fn get_sync_metadata(&self, client_id: &str) -> Result<Option<SyncMetadata>> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        Ok(sync_metadata_rows(&mut conn, Some(client_id), 1)
            .await?
            .pop())
    }

    pub(super) async fn put_sync_metadata(
        &self,
        client_id: &str,
        server_url: &str,
        auth_token: &str,
    ) -> Result<SyncMetadata> {
        let mut w = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO sync_metadata (client_id, server_url, auth_token, created_at, updated_at) \
             VALUES ($1, $2, $3, goodies_now_us(), goodies_now_us()) \
             ON CONFLICT (client_id) DO UPDATE SET server_url = EXCLUDED.server_url, \
             auth_token = EXCLUDED.auth_token, updated_at = EXCLUDED.updated_at",
        )
        .bind(client_id)
        .bind(server_url)
        .bind(auth_token)
        .execute(&mut *w.tx)
        .await
        .map_err(db)?;
        let row = sync_metadata_rows(&mut w.tx, Some(client_id), 1)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("sync metadata row vanished".into()))?;
        w.commit(&self.opts).await?;
        Ok(row)
    }

    pub(super) async fn sync_event(
        &self,
        client_id: &str,
        event: SyncEvent,
    ) -> Result<Option<SyncMetadata>> {
        let mut w = self.begin_write().await?;
        let Some(mut row) = sync_metadata_rows(&mut w.tx, Some(client_id), 1)
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let now: i64 = sqlx::query_scalar("SELECT goodies_now_us()")
            .fetch_one(&mut *w.tx)
            .await
            .map_err(db)?;
        apply_event(&mut row, &event, ts(now)?);
        sqlx::query(
            "UPDATE sync_metadata SET last_sync_time = $1, last_sync_success = $2, \
             last_sync_error = $3, sync_failures = $4, total_syncs = $5, sync_in_progress = $6, \
             next_retry_time = $7, updated_at = $8 WHERE id = $9",
        )
        .bind(row.last_sync_time.map(|t| t.unix_micros()))
        .bind(row.last_sync_success.map(|t| t.unix_micros()))
        .bind(row.last_sync_error.as_deref())
        .bind(row.sync_failures)
        .bind(row.total_syncs)
        .bind(row.sync_in_progress)
        .bind(row.next_retry_time.map(|t| t.unix_micros()))
        .bind(row.updated_at.unix_micros())
        .bind(row.id)
        .execute(&mut *w.tx)
        .await
        .map_err(db)?;
        w.commit(&self.opts).await?;
        Ok(Some(row))
    }

    pub(super) async fn remove_sync_metadata(&self, client_id: &str) -> Result<bool> {
        let mut w = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM sync_metadata WHERE client_id = $1")
            .bind(client_id)
            .execute(&mut *w.tx)
            .await
            .map_err(db)?
            .rows_affected();
        w.commit(&self.opts).await?;
        Ok(done > 0)
    }
}
