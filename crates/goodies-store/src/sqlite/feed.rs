//! The change feed (`changes`, `max_seq`) and the cached convergence digest.

use futures::TryStreamExt as _;
use inbetweenies_conflict::DigestBuilder;
use sqlx::{QueryBuilder, Sqlite};

use super::rows::*;
use super::{parse_latest_versions, IdVersion, SqliteStore, LATEST_VERSIONS_JSON};
use crate::error::{Result, StoreError};
use crate::types::*;
use inbetweenies_proto::{EntityId, Version};

impl SqliteStore {
    /// The highest sequence number handed out.
    pub(crate) async fn last_seq(&self) -> Result<i64> {
        sqlx::query_scalar::<_, i64>("SELECT last_seq FROM store_meta WHERE one = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::database)
    }

    /// One page of the change feed (see `ServerStore::changes`), and with `latest_after`
    /// the latest entity rows after it (`ServerStore::changes_with_latest`).
    pub(crate) async fn feed_page(
        &self,
        query: &ChangeQuery,
        latest_after: Option<Seq>,
    ) -> Result<(ChangePage, LatestAfter)> {
        let limit = query.limit.max(1);
        let limit_i64 = i64::try_from(limit).unwrap_or(i64::MAX);
        // No writer is between taking its sequence numbers and committing while we hold
        // this: the head read here, the page and the latest rows are one state.
        let _read = self.shared.lock.read().await;
        let mut conn = self.pool.acquire().await.map_err(StoreError::database)?;
        let (seq, restored_seq, restored_at, horizon_at, horizon_seq) =
            match self.direct_head.read() {
                Some(row) => row,
                None => sqlx::query_as(super::head::HEAD_SQL)
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(StoreError::database)?,
            };

        let mut after = query
            .after_seq
            .map_or(0, |s| i64::try_from(s).unwrap_or(i64::MAX));
        if let Some(since) = query.since {
            // received_at grows with seq: every row at or before `since` has a seq at or
            // below the last such row's, so `since` becomes a sequence bound (index lookups).
            for table in ["entities", "relationships"] {
                let bound: Option<i64> = sqlx::query_scalar(&format!(
                    "SELECT seq FROM {table} WHERE received_at <= ? ORDER BY received_at DESC LIMIT 1"
                ))
                .bind(since.unix_micros())
                .fetch_optional(&mut *conn)
                .await
                .map_err(StoreError::database)?;
                after = after.max(bound.unwrap_or(0));
            }
        }

        // One statement: the entity and relationship rows merged in sequence order and
        // cut at the limit inside SQLite (a compound SELECT with ORDER BY is a merge of
        // the two arms, each walked in seq order through its index), so only the rows the
        // page keeps are read, decoded and moved; neither list is materialised whole.
        // Every arm has the kind column and then 14 columns, a relationship's 12 padded.
        let mut records: Vec<ChangeRecord> = Vec::with_capacity(limit.min(4096));
        if query.include_entities || query.include_relationships {
            let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("");
            if query.include_entities {
                qb.push(FEED_ENTITY_ARM).push_bind(after);
                if let Some(since) = query.since {
                    qb.push(" AND received_at > ")
                        .push_bind(since.unix_micros());
                }
                if let Some(types) = &query.entity_types {
                    qb.push(" AND entity_type IN ");
                    push_in_list(&mut qb, types.iter().map(|t| t.as_str()));
                }
                if let Some(users) = &query.modified_by {
                    qb.push(" AND user_id IN ");
                    push_in_list(&mut qb, users.iter().map(String::as_str));
                }
            }
            if query.include_relationships {
                if query.include_entities {
                    qb.push(" UNION ALL ");
                }
                qb.push(FEED_REL_ARM).push_bind(after);
                if let Some(since) = query.since {
                    qb.push(" AND received_at > ")
                        .push_bind(since.unix_micros());
                }
                if let Some(users) = &query.modified_by {
                    qb.push(" AND user_id IN ");
                    push_in_list(&mut qb, users.iter().map(String::as_str));
                }
            }
            qb.push(" ORDER BY seq LIMIT ").push_bind(limit_i64);
            // Decode as rows arrive rather than holding a whole page of raw rows.
            let mut rows = qb.build().fetch(&mut *conn);
            while let Some(row) = rows.try_next().await.map_err(StoreError::database)? {
                records.push(feed_record(&row)?);
            }
        }
        let mut latest = LatestAfter::default();
        if let Some(after) = latest_after.map(|a| i64::try_from(a).unwrap_or(i64::MAX)) {
            if seq > after {
                let json: String = sqlx::query_scalar(
                    "SELECT json_group_array(json_array(id, version)) FROM entities \
                     WHERE is_latest = 1 AND seq > ?",
                )
                .bind(after)
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::database)?;
                latest.rows = parse_latest_versions(&json)?
                    .into_iter()
                    .map(|IdVersion(id, v)| (EntityId::new(id), Version::new(v)))
                    .collect();
            }
        }
        let server_time = self.clock().saturating_add_micros(-1);
        drop(conn);
        drop(_read);
        let head = crate::head::head_from(
            seq,
            restored_seq,
            restored_at,
            horizon_at,
            horizon_seq,
            server_time,
        )?;

        debug_assert!(records.windows(2).all(|w| w[0].seq() < w[1].seq()));
        let next_after_seq = if records.len() == limit {
            records.last().map(ChangeRecord::seq)
        } else {
            None
        };
        Ok((
            ChangePage {
                records,
                next_after_seq,
                server_time,
                head,
            },
            latest,
        ))
    }

    /// The digest over every id's latest row, recomputed only when the store changed.
    pub(crate) async fn cached_digest(&self) -> Result<String> {
        let mut tx = self.pool.begin().await.map_err(StoreError::database)?;
        // Read in the same snapshot as the rows: any process's write moves one of them
        // (some writes change which row is latest without a new sequence number, e.g. a
        // client's pull).
        let (seq, generation) = sqlx::query_as::<_, (i64, i64)>(
            "SELECT last_seq, write_generation FROM store_meta WHERE one = 1",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::database)?;
        let generation = generation as u64;
        if let Some((s, g, d)) = self
            .digest_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            if *s == seq && *g == generation {
                return Ok(d.clone());
            }
        }
        // Remembered by this or an earlier process (migration 0008: any change of a latest
        // row deletes it in its own transaction, so a stored digest is never stale).
        let stored: Option<String> =
            sqlx::query_scalar("SELECT digest FROM stored_digest WHERE one = 1")
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::database)?;
        let digest = match stored {
            Some(digest) => {
                tx.commit().await.map_err(StoreError::database)?;
                digest
            }
            None => {
                let json: String = sqlx::query_scalar(LATEST_VERSIONS_JSON)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StoreError::database)?;
                tx.commit().await.map_err(StoreError::database)?;
                let mut builder = DigestBuilder::new();
                for IdVersion(id, version) in parse_latest_versions(&json)? {
                    builder.push(&id, &version).map_err(|e| {
                        StoreError::Corrupt(format!("latest rows out of id order: {e}"))
                    })?;
                }
                let digest = builder.finish();
                self.store_digest(generation, &digest).await?;
                digest
            }
        };
        *self.digest_cache.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((seq, generation, digest.clone()));
        Ok(digest)
    }

    /// Remembers `digest`, computed from the latest rows as they were when the store had
    /// committed `generation` write transactions, for later processes, unless a write
    /// committed since (then it may no longer be the digest of the rows).
    async fn store_digest(&self, generation: u64, digest: &str) -> Result<()> {
        let written = sqlx::query(
            "INSERT OR REPLACE INTO stored_digest (one, write_generation, digest) \
             SELECT 1, ?1, ?2 FROM store_meta WHERE one = 1 AND write_generation = ?1",
        )
        .bind(generation as i64)
        .bind(digest)
        .execute(&self.pool)
        .await;
        match written {
            Ok(_) => Ok(()),
            // Remembering is an optimisation: a busy or read-only file only costs the
            // next process a recomputation.
            Err(e) => {
                tracing::debug!(error = %e, "state digest not stored");
                Ok(())
            }
        }
    }
}
