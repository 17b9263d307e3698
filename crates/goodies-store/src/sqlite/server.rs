//! `ServerStore` for SQLite: pushes, the feed, the conflict queue, devices and blobs.

use async_trait::async_trait;
use inbetweenies_proto::{Entity, EntityId, Timestamp, Version};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use super::group::{Done, Work};
use super::rows::*;
use super::{clear_latest, SqliteStore, Writer};
use crate::api::ServerStore;
use crate::error::{Result, StoreError};
use crate::logic::manual_resolution;
use crate::types::*;

const CONFLICT_COLS: &str =
    "id, entity_id, server_version, client_version, resolved_version, reason, \
     strategy, status, device_id, created_at, resolved_at";

fn conflict_record(row: &SqliteRow) -> Result<ConflictRecord> {
    let g = |i: usize| row.try_get::<String, _>(i).map_err(StoreError::database);
    let status = g(7)?;
    Ok(ConflictRecord {
        id: row.try_get(0).map_err(StoreError::database)?,
        entity_id: EntityId::new(g(1)?),
        server_version: Version::new(g(2)?),
        client_version: Version::new(g(3)?),
        resolved_version: Version::new(g(4)?),
        reason: g(5)?,
        strategy: g(6)?,
        status: ConflictStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("conflict status {status:?}")))?,
        device_id: g(8)?,
        created_at: ts(row.try_get(9).map_err(StoreError::database)?)?,
        resolved_at: row
            .try_get::<Option<i64>, _>(10)
            .map_err(StoreError::database)?
            .map(ts)
            .transpose()?,
    })
}

async fn conflict_by_id(conn: &mut SqliteConnection, id: i64) -> Result<ConflictRecord> {
    let row = sqlx::query(&format!(
        "SELECT {CONFLICT_COLS} FROM conflicts WHERE id = ?"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::database)?
    .ok_or_else(|| StoreError::NotFound(format!("conflict {id}")))?;
    conflict_record(&row)
}

async fn version_of(
    conn: &mut SqliteConnection,
    id: &EntityId,
    version: &Version,
) -> Result<Entity> {
    let row = sqlx::query(&format!(
        "SELECT {ENTITY_COLS} FROM entities WHERE id_key = ? AND id = ? AND version = ?"
    ))
    .bind(key_of(id.as_str()))
    .bind(id.as_str())
    .bind(version.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::database)?
    .ok_or_else(|| StoreError::NotFound(format!("entity {id} version {version}")))?;
    entity(&row)
}

fn device_status(row: &SqliteRow) -> Result<ClientSyncStatus> {
    let opt_ts = |i: usize| -> Result<Option<Timestamp>> {
        row.try_get::<Option<i64>, _>(i)
            .map_err(StoreError::database)?
            .map(ts)
            .transpose()
    };
    Ok(ClientSyncStatus {
        device_id: row.try_get(0).map_err(StoreError::database)?,
        last_seen: opt_ts(1)?,
        last_ack: opt_ts(2)?,
        sync_count: row.try_get::<i64, _>(3).map_err(StoreError::database)? as u64,
    })
}

#[async_trait]
impl ServerStore for SqliteStore {
    async fn apply_push(&self, batch: PushBatch) -> Result<PushOutcome> {
        match self.group_write(Work::Push(batch)).await? {
            Done::Push(outcome) => Ok(outcome),
            Done::Seen => Err(StoreError::Corrupt(
                "a push was answered as a sync record".into(),
            )),
        }
    }

    async fn changes(&self, query: &ChangeQuery) -> Result<ChangePage> {
        Ok(self.feed_page(query, None).await?.0)
    }

    async fn changes_with_latest(
        &self,
        query: &ChangeQuery,
        latest_after: Seq,
    ) -> Result<(ChangePage, LatestAfter)> {
        self.feed_page(query, Some(latest_after)).await
    }

    async fn max_seq(&self) -> Result<Seq> {
        Ok(self.last_seq().await? as u64)
    }

    async fn latest_entities(&self, ids: &[EntityId]) -> Result<Vec<Entity>> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::database)?;
        let ids: Vec<&str> = ids.iter().map(EntityId::as_str).collect();
        Ok(super::latest_rows(&mut conn, &ids)
            .await?
            .into_values()
            .map(|s| s.entity)
            .collect())
    }

    async fn conflicts(
        &self,
        statuses: Option<&[ConflictStatus]>,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>> {
        let mut qb = sqlx::QueryBuilder::new(format!("SELECT {CONFLICT_COLS} FROM conflicts"));
        if let Some(statuses) = statuses {
            qb.push(" WHERE status IN ");
            push_in_list(&mut qb, statuses.iter().map(ConflictStatus::as_str));
        }
        qb.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::try_from(limit).unwrap_or(i64::MAX));
        qb.build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::database)?
            .iter()
            .map(conflict_record)
            .collect()
    }

    async fn resolve_conflict(
        &self,
        id: i64,
        resolution: ManualResolution,
        user_id: &str,
    ) -> Result<(ConflictRecord, Entity)> {
        let mut w = self.writer().await?;
        let now = w.now;
        let record = conflict_by_id(w.conn(), id).await?;
        if record.status != ConflictStatus::Pending {
            return Err(StoreError::Invalid(format!(
                "conflict {id} is {}, not pending",
                record.status.as_str()
            )));
        }
        let server = version_of(w.conn(), &record.entity_id, &record.server_version).await?;
        let client = version_of(w.conn(), &record.entity_id, &record.client_version).await?;
        let resolved = manual_resolution(&server, &client, &resolution, user_id, now);
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT seq FROM entities WHERE id_key = ? AND id = ? AND version = ?",
        )
        .bind(key_of(resolved.id.as_str()))
        .bind(resolved.id.as_str())
        .bind(resolved.version.as_str())
        .fetch_optional(w.conn())
        .await
        .map_err(StoreError::database)?;
        if exists.is_some() {
            return Err(StoreError::Invalid(format!(
                "resolution version {} already exists",
                resolved.version
            )));
        }
        clear_latest(w.conn(), &[resolved.id.as_str()]).await?;
        let (seq, received_at) = w.next();
        insert_entities(
            w.conn(),
            &[NewEntity {
                entity: (&resolved).into(),
                seq,
                received_at,
                is_latest: true,
                became_latest: true,
            }],
        )
        .await?;
        sqlx::query("UPDATE conflicts SET status = 'resolved', resolved_version = ?, resolved_at = ? WHERE id = ?")
            .bind(resolved.version.as_str())
            .bind(now.unix_micros())
            .bind(id)
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?;
        let record = conflict_by_id(w.conn(), id).await?;
        w.commit().await?;
        Ok((record, resolved))
    }

    async fn dismiss_conflict(&self, id: i64) -> Result<ConflictRecord> {
        let mut w = self.writer().await?;
        let record = conflict_by_id(w.conn(), id).await?;
        if record.status != ConflictStatus::Pending {
            return Err(StoreError::Invalid(format!(
                "conflict {id} is {}, not pending",
                record.status.as_str()
            )));
        }
        sqlx::query("UPDATE conflicts SET status = 'dismissed', resolved_at = ? WHERE id = ?")
            .bind(w.now.unix_micros())
            .bind(id)
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?;
        let record = conflict_by_id(w.conn(), id).await?;
        w.commit().await?;
        Ok(record)
    }

    async fn record_sync(&self, device_id: &str) -> Result<()> {
        if self.opts.sync_record_delay.is_some() {
            if self.seen.add(device_id, self.clock()) {
                self.write_held_syncs().await?;
            }
            return Ok(());
        }
        self.group_write(Work::Seen(device_id.to_owned()))
            .await
            .map(|_| ())
    }

    fn record_sync_now(&self, device_id: &str) -> Option<Result<()>> {
        self.opts.sync_record_delay?;
        self.seen
            .add_if_room(device_id, self.clock())
            .then_some(Ok(()))
    }

    async fn flush_sync_records(&self) -> Result<()> {
        self.write_held_syncs().await
    }

    async fn record_ack(&self, device_id: &str, watermark: Timestamp) -> Result<()> {
        let mut w = self.writer().await?;
        sqlx::query(
            "INSERT INTO devices (device_id, last_ack, sync_count) VALUES (?, ?, 0) \
             ON CONFLICT (device_id) DO UPDATE SET last_ack = excluded.last_ack",
        )
        .bind(device_id)
        .bind(watermark.unix_micros())
        .execute(w.conn())
        .await
        .map_err(StoreError::database)?;
        w.commit().await
    }

    async fn client_status(&self, device_id: &str) -> Result<Option<ClientSyncStatus>> {
        self.write_held_syncs().await?;
        sqlx::query(
            "SELECT device_id, last_seen, last_ack, sync_count FROM devices WHERE device_id = ?",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database)?
        .as_ref()
        .map(device_status)
        .transpose()
    }

    async fn put_blob(
        &self,
        entity_id: &EntityId,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<BlobMeta> {
        self.store_blob(entity_id, content_type, bytes).await
    }

    async fn blob_meta(&self, sha256: &str) -> Result<Option<BlobMeta>> {
        self.find_blob(sha256).await
    }

    async fn read_blob(&self, sha256: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.read_blob_range(sha256, offset, len).await
    }

    async fn blobs_of(&self, entity_id: &EntityId) -> Result<Vec<BlobMeta>> {
        self.entity_blobs(entity_id).await
    }

    async fn export_snapshot(&self) -> Result<crate::StoreSnapshot> {
        self.write_held_syncs().await?;
        self.export().await
    }

    async fn restore_snapshot(
        &self,
        snapshot: crate::StoreSnapshot,
    ) -> Result<crate::RestoreReport> {
        self.write_held_syncs().await?;
        self.restore(snapshot).await
    }

    async fn restore_mark(&self) -> Result<Option<crate::RestoreMark>> {
        self.read_restore_mark().await
    }

    async fn sync_metadata_list(&self, limit: usize) -> Result<Vec<crate::SyncMetadata>> {
        self.list_sync_metadata(limit).await
    }

    async fn sync_metadata(&self, client_id: &str) -> Result<Option<crate::SyncMetadata>> {
        self.get_sync_metadata(client_id).await
    }

    async fn upsert_sync_metadata(
        &self,
        client_id: &str,
        server_url: &str,
        auth_token: &str,
    ) -> Result<crate::SyncMetadata> {
        self.put_sync_metadata(client_id, server_url, auth_token)
            .await
    }

    async fn record_sync_event(
        &self,
        client_id: &str,
        event: crate::SyncEvent,
    ) -> Result<Option<crate::SyncMetadata>> {
        self.sync_event(client_id, event).await
    }

    async fn delete_sync_metadata(&self, client_id: &str) -> Result<bool> {
        self.remove_sync_metadata(client_id).await
    }

    async fn merkle_nodes(
        &self,
        level: u8,
        nodes: &[inbetweenies_conflict::NodeId],
    ) -> Result<Vec<crate::merkle::MerkleNode>> {
        self.read_merkle(level, nodes).await
    }

    async fn relationships_as_of(
        &self,
        at: inbetweenies_proto::Timestamp,
    ) -> Result<Vec<inbetweenies_proto::Relationship>> {
        self.read_relationships_as_of(at).await
    }

    async fn compact_history(
        &self,
        before: inbetweenies_proto::Timestamp,
    ) -> Result<crate::horizon::CompactionReport> {
        self.compact(before).await
    }

    async fn history_horizon(&self) -> Result<Option<crate::horizon::HistoryHorizon>> {
        self.read_horizon().await
    }
}

impl SqliteStore {
    /// Records one sync of `device_id` in transaction `w` (`super::group`).
    /// Writes the sync records held (`crate::seen`) in one transaction; on failure they
    /// are held again for the next write.
    pub(super) async fn write_held_syncs(&self) -> Result<()> {
        if self.seen.len() == 0 {
            return Ok(());
        }
        let held = self.seen.take();
        let written = async {
            let mut w = self.writer().await?;
            for h in &held {
                sqlx::query(
                    "INSERT INTO devices (device_id, last_seen, sync_count) VALUES (?, ?, ?) \
                     ON CONFLICT (device_id) DO UPDATE SET \
                     last_seen = max(coalesce(last_seen, excluded.last_seen), excluded.last_seen), \
                     sync_count = sync_count + excluded.sync_count",
                )
                .bind(&h.device_id)
                .bind(h.last_seen.unix_micros())
                .bind(i64::try_from(h.syncs).unwrap_or(i64::MAX))
                .execute(w.conn())
                .await
                .map_err(StoreError::database)?;
            }
            w.commit().await
        }
        .await;
        if written.is_err() {
            self.seen.put_back(held);
        }
        written
    }

    pub(super) async fn write_seen(&self, w: &mut Writer<'_>, device_id: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO devices (device_id, last_seen, sync_count) VALUES (?, ?, 1) \
             ON CONFLICT (device_id) DO UPDATE SET last_seen = excluded.last_seen, sync_count = sync_count + 1",
        )
        .bind(device_id)
        .bind(w.now.unix_micros())
        .execute(w.conn())
        .await
        .map_err(StoreError::database)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// Through a detached store (as the server calls it), every sync of more devices
    /// than the buffer holds is counted: those held at once, and the one that fills
    /// the buffer through the write it asks for.
    #[tokio::test]
    async fn a_detached_store_counts_every_sync_past_a_full_buffer() {
        use crate::seen::MAX_HELD;
        use crate::{Detached, ServerStore, SqliteStore, StoreOptions};
        let dir = tempfile::tempdir().expect("dir");
        let opts = StoreOptions {
            sync_record_delay: Some(std::time::Duration::from_secs(3600)),
            ..StoreOptions::default()
        };
        let store = std::sync::Arc::new(
            SqliteStore::connect(dir.path().join("s.db").to_str().unwrap(), opts)
                .await
                .expect("store"),
        );
        let detached = Detached(store.clone());
        let devices = MAX_HELD + 10;
        for i in 0..devices {
            detached
                .record_sync(&format!("d{i}"))
                .await
                .expect("record");
        }
        detached.record_sync("d0").await.expect("record");
        assert!(store.seen.len() < MAX_HELD, "a full buffer was written");
        detached.flush_sync_records().await.expect("flush");
        for (device, syncs) in [
            ("d0", 2),
            ("d1", 1),
            (&*format!("d{}", MAX_HELD - 1), 1),
            (&*format!("d{}", devices - 1), 1),
        ] {
            let status = detached
                .client_status(device)
                .await
                .expect("status")
                .unwrap_or_else(|| panic!("{device} recorded"));
            assert_eq!(status.sync_count, syncs, "{device}");
        }
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM devices")
            .fetch_one(&store.pool)
            .await
            .expect("count");
        assert_eq!(n as usize, devices, "every device recorded once written");
    }
}
