//! Snapshots, restores and sync metadata on SQLite (see [`crate::snapshot`]).
//!
//! A snapshot is read in one read transaction (WAL: one consistent view of the file).
//! Blob bytes live in content-addressed files that are never rewritten, so reading them
//! after the transaction reads the same bytes. Each table is read as ONE JSON array built
//! by SQLite, and written back the same way (`json_each` over one bound array per chunk).

use inbetweenies_proto::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Row, SqliteConnection};

use super::rows::{key_of, ts};
use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::snapshot::{
    apply_event, check_snapshot, renumber, RestoreMark, RestoreReport, SnapshotBlob,
    SnapshotBlobData, SnapshotConflict, SnapshotDevice, SnapshotEntity, SnapshotRelationship,
    StoreSnapshot, SyncEvent, SyncMetadata, SNAPSHOT_FORMAT,
};

/// Rows per restoring INSERT.
const RESTORE_CHUNK: usize = 5_000;

const ENTITIES_JSON: &str = "SELECT json_group_array(json_object('seq', seq, 'id', id, \
    'version', version, 'entity_type', entity_type, 'name', name, 'content', content, \
    'source_type', source_type, 'user_id', user_id, 'parent_versions', parent_versions, \
    'created_at', created_at, 'updated_at', updated_at, 'received_at', received_at, \
    'is_latest', json(CASE WHEN is_latest THEN 'true' ELSE 'false' END), \
    'became_latest', json(CASE WHEN became_latest THEN 'true' ELSE 'false' END), \
    'is_deleted', json(CASE WHEN is_deleted THEN 'true' ELSE 'false' END)) ORDER BY seq) \
    FROM entities";

const RELATIONSHIPS_JSON: &str = "SELECT json_group_array(json_object('seq', seq, 'id', id, \
    'from_entity_id', from_entity_id, 'from_entity_version', from_entity_version, \
    'to_entity_id', to_entity_id, 'to_entity_version', to_entity_version, \
    'relationship_type', relationship_type, 'properties', properties, 'user_id', user_id, \
    'created_at', created_at, 'updated_at', updated_at, 'received_at', received_at) \
    ORDER BY seq) FROM relationships";

const CONFLICTS_JSON: &str = "SELECT json_group_array(json_object('id', id, \
    'entity_id', entity_id, 'server_version', server_version, 'client_version', client_version, \
    'resolved_version', resolved_version, 'reason', reason, 'strategy', strategy, \
    'status', status, 'device_id', device_id, 'created_at', created_at, \
    'resolved_at', resolved_at) ORDER BY id) FROM conflicts";

const DEVICES_JSON: &str = "SELECT json_group_array(json_object('device_id', device_id, \
    'last_seen', last_seen, 'last_ack', last_ack, 'sync_count', sync_count) \
    ORDER BY device_id) FROM devices";

const BLOBS_JSON: &str = "SELECT json_group_array(json_object('sha256', sha256, \
    'entity_id', entity_id, 'content_type', content_type, 'size', size, \
    'created_at', created_at) ORDER BY sha256, entity_id) FROM blobs";

const SYNC_METADATA_COLS: &str = "id, client_id, server_url, auth_token, last_sync_time, \
    last_sync_success, last_sync_error, sync_failures, total_syncs, total_conflicts, \
    sync_in_progress, next_retry_time, created_at, updated_at";

async fn table_json<T: DeserializeOwned>(conn: &mut SqliteConnection, sql: &str) -> Result<T> {
    let json: String = sqlx::query_scalar(sql)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::database)?;
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("snapshot rows: {e}")))
}

fn sync_metadata_row(row: &sqlx::sqlite::SqliteRow) -> Result<SyncMetadata> {
    let g = |i: usize| {
        row.try_get::<Option<i64>, _>(i)
            .map_err(StoreError::database)
    };
    let opt_ts = |i: usize| -> Result<Option<Timestamp>> { g(i)?.map(ts).transpose() };
    let s = |i: usize| row.try_get::<String, _>(i).map_err(StoreError::database);
    Ok(SyncMetadata {
        id: g(0)?.unwrap_or_default(),
        client_id: s(1)?,
        server_url: s(2)?,
        auth_token: s(3)?,
        last_sync_time: opt_ts(4)?,
        last_sync_success: opt_ts(5)?,
        last_sync_error: row.try_get(6).map_err(StoreError::database)?,
        sync_failures: g(7)?.unwrap_or_default(),
        total_syncs: g(8)?.unwrap_or_default(),
        total_conflicts: g(9)?.unwrap_or_default(),
        sync_in_progress: g(10)?.unwrap_or_default() != 0,
        next_retry_time: opt_ts(11)?,
        created_at: ts(g(12)?.unwrap_or_default())?,
        updated_at: ts(g(13)?.unwrap_or_default())?,
    })
}

async fn sync_metadata_rows(
    conn: &mut SqliteConnection,
    client_id: Option<&str>,
    limit: i64,
) -> Result<Vec<SyncMetadata>> {
    let sql = format!(
        "SELECT {SYNC_METADATA_COLS} FROM sync_metadata WHERE ?1 IS NULL OR client_id = ?1 \
         ORDER BY id LIMIT ?2"
    );
    sqlx::query(&sql)
        .bind(client_id)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::database)?
        .iter()
        .map(sync_metadata_row)
        .collect()
}

/// Inserts rows given as JSON objects: `INSERT INTO table (columns) SELECT value ->> 'column', … FROM json_each(?)`.
async fn insert_json<T: Serialize>(
    conn: &mut SqliteConnection,
    table: &str,
    columns: &[&str],
    rows: &[T],
) -> Result<()> {
    let select: Vec<String> = columns.iter().map(|c| format!("value ->> '{c}'")).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) SELECT {} FROM json_each(?)",
        columns.join(", "),
        select.join(", ")
    );
    for chunk in rows.chunks(RESTORE_CHUNK) {
        let json = serde_json::to_string(chunk)
            .map_err(|e| StoreError::Corrupt(format!("cannot encode rows: {e}")))?;
        sqlx::query(&sql)
            .bind(json)
            .execute(&mut *conn)
            .await
            .map_err(StoreError::database)?;
    }
    Ok(())
}

/// A row with the SQLite-only key columns added.
#[derive(Serialize)]
struct Keyed<'a, T> {
    #[serde(flatten)]
    row: &'a T,
    id_key: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_key: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to_key: Option<i64>,
}

impl SqliteStore {
    pub(crate) async fn export(&self) -> Result<StoreSnapshot> {
        let mut tx = self.pool.begin().await.map_err(StoreError::database)?;
        // The first read starts the snapshot every later read of this transaction sees.
        let (last_seq, last_received_at): (i64, i64) =
            sqlx::query_as("SELECT last_seq, last_received_at FROM store_meta WHERE one = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(StoreError::database)?;
        let entities: Vec<SnapshotEntity> = table_json(&mut tx, ENTITIES_JSON).await?;
        let relationships: Vec<SnapshotRelationship> =
            table_json(&mut tx, RELATIONSHIPS_JSON).await?;
        let conflicts: Vec<SnapshotConflict> = table_json(&mut tx, CONFLICTS_JSON).await?;
        let devices: Vec<SnapshotDevice> = table_json(&mut tx, DEVICES_JSON).await?;
        let blobs: Vec<SnapshotBlob> = table_json(&mut tx, BLOBS_JSON).await?;
        let sync_metadata = sync_metadata_rows(&mut tx, None, -1).await?;
        tx.commit().await.map_err(StoreError::database)?;
        let mut blob_data = Vec::new();
        let mut shas: Vec<(&str, i64)> =
            blobs.iter().map(|b| (b.sha256.as_str(), b.size)).collect();
        shas.dedup_by_key(|(s, _)| *s);
        for (sha, size) in shas {
            let bytes = self
                .read_blob_file(sha, u64::try_from(size).unwrap_or(0))
                .await?;
            blob_data.push(SnapshotBlobData {
                sha256: sha.to_owned(),
                hex: hex::encode(bytes),
            });
        }
        Ok(StoreSnapshot {
            format: SNAPSHOT_FORMAT.to_owned(),
            backend: "sqlite".to_owned(),
            taken_at: self.clock().unix_micros(),
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

    /// Reads a whole blob file (bytes are immutable once their metadata row committed).
    async fn read_blob_file(&self, sha256: &str, size: u64) -> Result<Vec<u8>> {
        let path = self.blobs.path_of(sha256)?;
        let bytes = tokio::fs::read(&path).await?;
        if bytes.len() as u64 != size {
            return Err(StoreError::Corrupt(format!(
                "blob {sha256}: {} bytes on disk, {size} recorded",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    pub(crate) async fn restore(&self, snap: StoreSnapshot) -> Result<RestoreReport> {
        check_snapshot(&snap)?;
        // Blob bytes first: files named by their hash, so writing them changes nothing a
        // reader sees until the metadata rows that name them commit.
        for data in &snap.blob_data {
            let bytes = data.bytes()?;
            self.write_blob_file(&data.sha256, bytes).await?;
        }
        let mut w = self.writer().await?;
        let at = w.now.unix_micros();
        let mark = w.last_seq + 1;
        let first_received = at.max(w.last_received + 1);
        let numbers = renumber(&snap, mark, first_received);
        for table in [
            "entities",
            "relationships",
            "conflicts",
            "devices",
            "blobs",
            "sync_metadata",
        ] {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(w.conn())
                .await
                .map_err(StoreError::database)?;
        }
        let entities = &numbers.entities;
        let keyed: Vec<Keyed<'_, SnapshotEntity>> = entities
            .iter()
            .map(|row| Keyed {
                row,
                id_key: key_of(&row.id),
                from_key: None,
                to_key: None,
            })
            .collect();
        insert_json(
            w.conn(),
            "entities",
            &[
                "seq",
                "id",
                "id_key",
                "version",
                "entity_type",
                "name",
                "content",
                "source_type",
                "user_id",
                "parent_versions",
                "created_at",
                "updated_at",
                "received_at",
                "is_latest",
                "became_latest",
                "is_deleted",
            ],
            &keyed,
        )
        .await?;
        let relationships = &numbers.relationships;
        let keyed: Vec<Keyed<'_, SnapshotRelationship>> = relationships
            .iter()
            .map(|row| Keyed {
                row,
                id_key: key_of(&row.id),
                from_key: Some(key_of(&row.from_entity_id)),
                to_key: Some(key_of(&row.to_entity_id)),
            })
            .collect();
        insert_json(
            w.conn(),
            "relationships",
            &[
                "seq",
                "id",
                "id_key",
                "from_entity_id",
                "from_key",
                "from_entity_version",
                "to_entity_id",
                "to_key",
                "to_entity_version",
                "relationship_type",
                "properties",
                "user_id",
                "created_at",
                "updated_at",
                "received_at",
            ],
            &keyed,
        )
        .await?;
        insert_json(
            w.conn(),
            "conflicts",
            &[
                "id",
                "entity_id",
                "server_version",
                "client_version",
                "resolved_version",
                "reason",
                "strategy",
                "status",
                "device_id",
                "created_at",
                "resolved_at",
            ],
            &snap.conflicts,
        )
        .await?;
        insert_json(
            w.conn(),
            "devices",
            &["device_id", "last_seen", "last_ack", "sync_count"],
            &snap.devices,
        )
        .await?;
        insert_json(
            w.conn(),
            "blobs",
            &["sha256", "entity_id", "content_type", "size", "created_at"],
            &snap.blobs,
        )
        .await?;
        let sync_rows: Vec<serde_json::Value> = snap
            .sync_metadata
            .iter()
            .map(crate::snapshot::sync_metadata_micros)
            .collect();
        insert_json(
            w.conn(),
            "sync_metadata",
            &SYNC_METADATA_COLS
                .split(", ")
                .map(str::trim)
                .collect::<Vec<_>>(),
            &sync_rows,
        )
        .await?;
        sqlx::query("UPDATE store_meta SET restored_seq = ?, restored_at = ? WHERE one = 1")
            .bind(mark)
            .bind(at)
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?;
        w.last_seq = numbers.last_seq;
        w.last_received = numbers.last_received;
        w.graph_changed();
        // Every watermark read after the commit must be at or after the mark's time.
        for _ in 0..1_000 {
            if self.clock().unix_micros() > at {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        w.commit().await?;
        Ok(RestoreReport {
            entities: snap.entities.len() as u64,
            relationships: snap.relationships.len() as u64,
            mark: RestoreMark {
                seq: mark as u64,
                at: ts(at)?,
            },
        })
    }

    async fn write_blob_file(&self, sha256: &str, bytes: Vec<u8>) -> Result<()> {
        use std::io::Write as _;
        let target = self.blobs.path_of(sha256)?;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if target.exists() {
                return Ok(());
            }
            let sub = target
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            std::fs::create_dir_all(&sub)?;
            let mut tmp = tempfile::NamedTempFile::new_in(&sub)?;
            tmp.write_all(&bytes)?;
            tmp.as_file().sync_all()?;
            tmp.persist(&target).map_err(|e| e.error)?;
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    pub(crate) async fn read_restore_mark(&self) -> Result<Option<RestoreMark>> {
        let (seq, at): (i64, i64) =
            sqlx::query_as("SELECT restored_seq, restored_at FROM store_meta WHERE one = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::database)?;
        if seq == 0 {
            return Ok(None);
        }
        Ok(Some(RestoreMark {
            seq: seq as u64,
            at: ts(at)?,
        }))
    }

    pub(crate) async fn list_sync_metadata(&self, limit: usize) -> Result<Vec<SyncMetadata>> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::database)?;
        sync_metadata_rows(&mut conn, None, i64::try_from(limit).unwrap_or(i64::MAX)).await
    }

    pub(crate) async fn get_sync_metadata(&self, client_id: &str) -> Result<Option<SyncMetadata>> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::database)?;
        Ok(sync_metadata_rows(&mut conn, Some(client_id), 1)
            .await?
            .pop())
    }

    pub(crate) async fn put_sync_metadata(
        &self,
        client_id: &str,
        server_url: &str,
        auth_token: &str,
    ) -> Result<SyncMetadata> {
        let mut w = self.writer().await?;
        let now = w.now.unix_micros();
        sqlx::query(
            "INSERT INTO sync_metadata (client_id, server_url, auth_token, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?4) ON CONFLICT (client_id) DO UPDATE SET \
             server_url = excluded.server_url, auth_token = excluded.auth_token, \
             updated_at = excluded.updated_at",
        )
        .bind(client_id)
        .bind(server_url)
        .bind(auth_token)
        .bind(now)
        .execute(w.conn())
        .await
        .map_err(StoreError::database)?;
        let row = sync_metadata_rows(w.conn(), Some(client_id), 1)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("sync metadata row vanished".into()))?;
        w.commit().await?;
        Ok(row)
    }

    pub(crate) async fn sync_event(
        &self,
        client_id: &str,
        event: SyncEvent,
    ) -> Result<Option<SyncMetadata>> {
        let mut w = self.writer().await?;
        let Some(mut row) = sync_metadata_rows(w.conn(), Some(client_id), 1)
            .await?
            .pop()
        else {
            return Ok(None);
        };
        apply_event(&mut row, &event, w.now);
        sqlx::query(
            "UPDATE sync_metadata SET last_sync_time = ?, last_sync_success = ?, \
             last_sync_error = ?, sync_failures = ?, total_syncs = ?, sync_in_progress = ?, \
             next_retry_time = ?, updated_at = ? WHERE id = ?",
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
        .execute(w.conn())
        .await
        .map_err(StoreError::database)?;
        w.commit().await?;
        Ok(Some(row))
    }

    pub(crate) async fn remove_sync_metadata(&self, client_id: &str) -> Result<bool> {
        let mut w = self.writer().await?;
        let done = sqlx::query("DELETE FROM sync_metadata WHERE client_id = ?")
            .bind(client_id)
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?
            .rows_affected();
        w.commit().await?;
        Ok(done > 0)
    }
}
