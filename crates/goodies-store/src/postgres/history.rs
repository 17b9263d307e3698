//! As-of edges and the history horizon on PostgreSQL (see [`crate::horizon`]).

use inbetweenies_proto::{Relationship, Timestamp};

use super::rows::{self, relationship_cols};
use super::{db, PgStore};
use crate::error::Result;
use crate::horizon::{CompactionReport, HistoryHorizon};

/// Deletes what a compaction at `$1` (the horizon, µs) prunes: non-latest versions
/// that stopped being current before the horizon and are no side of a pending conflict.
const PRUNE: &str = "DELETE FROM entities e WHERE NOT e.is_latest AND e.received_at < $1 \
     AND (NOT e.became_latest OR EXISTS (SELECT 1 FROM entities s \
          WHERE s.id = e.id AND s.became_latest AND s.seq > e.seq AND s.received_at < $1)) \
     AND NOT EXISTS (SELECT 1 FROM conflicts c WHERE c.status = 'pending' \
          AND c.entity_id = e.id AND (c.server_version = e.version OR c.client_version = e.version))";

impl PgStore {
    pub(super) async fn read_relationships_as_of(
        &self,
        at: Timestamp,
    ) -> Result<Vec<Relationship>> {
        let fetched = sqlx::query(&format!(
            "SELECT {} FROM relationships r WHERE r.received_at <= $1 ORDER BY r.seq",
            relationship_cols("r")
        ))
        .bind(at.unix_micros())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        fetched.iter().map(rows::relationship).collect()
    }

    pub(super) async fn compact(&self, before: Timestamp) -> Result<CompactionReport> {
        let mut w = self.begin_write().await?;
        let (old_at, old_seq): (i64, i64) =
            sqlx::query_as("SELECT horizon_at, horizon_seq FROM goodies_meta")
                .fetch_one(&mut *w.tx)
                .await
                .map_err(db)?;
        let at = before.unix_micros().max(old_at);
        let pruned = sqlx::query(PRUNE)
            .bind(at)
            .execute(&mut *w.tx)
            .await
            .map_err(db)?
            .rows_affected();
        let seq: i64 = sqlx::query_scalar(
            "SELECT GREATEST(COALESCE((SELECT max(seq) FROM entities WHERE received_at < $1), 0), \
             COALESCE((SELECT max(seq) FROM relationships WHERE received_at < $1), 0))",
        )
        .bind(at)
        .fetch_one(&mut *w.tx)
        .await
        .map_err(db)?;
        let seq = seq.max(old_seq);
        sqlx::query("UPDATE goodies_meta SET horizon_at = $1, horizon_seq = $2")
            .bind(at)
            .bind(seq)
            .execute(&mut *w.tx)
            .await
            .map_err(db)?;
        w.commit(&self.opts).await?;
        Ok(CompactionReport {
            pruned_versions: pruned,
            horizon: HistoryHorizon {
                at: rows::ts(at)?,
                seq: seq as u64,
            },
        })
    }

    pub(super) async fn read_horizon(&self) -> Result<Option<HistoryHorizon>> {
        let (at, seq): (i64, i64) =
            sqlx::query_as("SELECT horizon_at, horizon_seq FROM goodies_meta")
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        if at == 0 {
            return Ok(None);
        }
        Ok(Some(HistoryHorizon {
            at: rows::ts(at)?,
            seq: seq as u64,
        }))
    }
}
