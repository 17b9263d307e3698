//! As-of edges and the history horizon on SQLite (see [`crate::horizon`]).

use inbetweenies_proto::{Relationship, Timestamp};

use super::rows::*;
use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::horizon::{CompactionReport, HistoryHorizon};

/// Deletes what a compaction at `?1` (the horizon, µs) prunes: non-latest versions
/// that stopped being current before the horizon and are no side of a pending conflict.
const PRUNE: &str = "DELETE FROM entities WHERE seq IN (\
     SELECT e.seq FROM entities e WHERE e.is_latest = 0 AND e.received_at < ?1 \
     AND (e.became_latest = 0 OR EXISTS (SELECT 1 FROM entities s \
          WHERE s.id_key = e.id_key AND s.id = e.id AND s.became_latest = 1 \
          AND s.seq > e.seq AND s.received_at < ?1)) \
     AND NOT EXISTS (SELECT 1 FROM conflicts c WHERE c.status = 'pending' \
          AND c.entity_id = e.id AND (c.server_version = e.version OR c.client_version = e.version)))";

impl SqliteStore {
    pub(super) async fn read_relationships_as_of(
        &self,
        at: Timestamp,
    ) -> Result<Vec<Relationship>> {
        sqlx::query(&format!(
            "SELECT {REL_COLS} FROM relationships WHERE received_at <= ? ORDER BY seq"
        ))
        .bind(at.unix_micros())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::database)?
        .iter()
        .map(|r| stored_relationship(r).map(|s| s.relationship))
        .collect()
    }

    pub(super) async fn compact(&self, before: Timestamp) -> Result<CompactionReport> {
        let mut w = self.writer().await?;
        let (old_at, old_seq): (i64, i64) =
            sqlx::query_as("SELECT horizon_at, horizon_seq FROM store_meta WHERE one = 1")
                .fetch_one(w.conn())
                .await
                .map_err(StoreError::database)?;
        let at = before.unix_micros().max(old_at);
        let pruned = sqlx::query(PRUNE)
            .bind(at)
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?
            .rows_affected();
        let seq: i64 = sqlx::query_scalar(
            "SELECT max(coalesce((SELECT max(seq) FROM entities WHERE received_at < ?1), 0), \
             coalesce((SELECT max(seq) FROM relationships WHERE received_at < ?1), 0))",
        )
        .bind(at)
        .fetch_one(w.conn())
        .await
        .map_err(StoreError::database)?;
        let seq = seq.max(old_seq);
        sqlx::query("UPDATE store_meta SET horizon_at = ?, horizon_seq = ? WHERE one = 1")
            .bind(at)
            .bind(seq)
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?;
        if pruned > 0 {
            w.graph_changed();
        }
        w.commit().await?;
        Ok(CompactionReport {
            pruned_versions: pruned,
            horizon: HistoryHorizon {
                at: ts(at)?,
                seq: seq as u64,
            },
        })
    }

    pub(super) async fn read_horizon(&self) -> Result<Option<HistoryHorizon>> {
        let (at, seq): (i64, i64) =
            sqlx::query_as("SELECT horizon_at, horizon_seq FROM store_meta WHERE one = 1")
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::database)?;
        if at == 0 {
            return Ok(None);
        }
        Ok(Some(HistoryHorizon {
            at: ts(at)?,
            seq: seq as u64,
        }))
    }
}
