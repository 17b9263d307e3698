//! Applying a pushed batch in one transaction: read what the planner needs, plan, write the plan.

use inbetweenies_proto::{EntityId, Timestamp, Version};
use sqlx::SqliteConnection;

use super::rows::*;
use super::{
    all_versions, clear_latest, existing_pairs, latest_rows, latest_summaries, SqliteStore, Writer,
};
use crate::error::{Result, StoreError};
use crate::logic::{plan_push, push_lookups, FastSet, PlannedConflict, StoredLatest, StoredState};
use crate::types::*;

impl SqliteStore {
    /// Plans one pushed batch against what transaction `w` sees and writes the plan in it
    /// (committed with the rest of its group, `super::group`).
    pub(super) async fn write_push(
        &self,
        w: &mut Writer<'_>,
        batch: &PushBatch,
    ) -> Result<PushOutcome> {
        let now = w.now;
        let lookups = push_lookups(batch);

        // The latest row of every pushed id.
        let ids: Vec<&str> = lookups.entity_ids.iter().map(|id| id.as_str()).collect();
        let mut state = StoredState {
            latest: latest_summaries(w.conn(), &ids).await?,
            ..StoredState::default()
        };
        // Which pushed versions and endpoints are stored. A pushed id without a latest
        // row has no rows at all, and a latest version is known: only ask about the rest.
        let pushed: FastSet<&str> = ids.iter().copied().collect();
        let mut ask: Vec<(&str, &str)> = Vec::new();
        for &(id, v) in &lookups.entity_keys {
            match state.latest.get(id) {
                Some(l) if l.version == *v => {
                    state.existing_keys.insert((id.clone(), v.clone()));
                }
                None if pushed.contains(id.as_str()) => {}
                _ => ask.push((id.as_str(), v.as_str())),
            }
        }
        for (id, v) in existing_pairs(w.conn(), &ask).await? {
            state
                .existing_keys
                .insert((EntityId::new(id), Version::new(v)));
        }
        let rel_ids: Vec<&str> = lookups
            .relationship_ids
            .iter()
            .map(|id| id.as_str())
            .collect();
        state.existing_relationships = existing_relationships(w.conn(), &rel_ids)
            .await?
            .into_iter()
            .map(|i| lookups.relationship_ids[i].clone())
            .collect();
        drop(lookups);
        let config = self.opts.resolver.clone();
        // A conflict needs the whole latest row, a three-way merge the earlier versions:
        // load what planning asks for and plan again (at most twice, see `logic`).
        let mut rounds = 0;
        let plan = loop {
            let more = match plan_push(batch, &state, now, &config) {
                Ok(plan) => break plan,
                Err(more) if rounds < 2 => more,
                Err(more) => {
                    return Err(StoreError::Invalid(format!(
                        "push planning still needs rows after loading them: {more:?}"
                    )))
                }
            };
            rounds += 1;
            let ids: Vec<&str> = more.latest.iter().map(EntityId::as_str).collect();
            for (id, s) in latest_rows(w.conn(), &ids).await? {
                state.latest.insert(id, StoredLatest::from(s.entity));
            }
            for id in more.history {
                let rows = all_versions(w.conn(), id.as_str()).await?;
                state
                    .histories
                    .insert(id, rows.into_iter().map(|s| s.entity).collect());
            }
        };
        w.summary.plan(&plan);
        let superseded: Vec<&str> = plan.superseded.iter().map(EntityId::as_str).collect();
        clear_latest(w.conn(), &superseded).await?;
        let mut rows = Vec::with_capacity(plan.entities.len());
        for p in &plan.entities {
            let (seq, received_at) = w.next();
            rows.push(NewEntity {
                entity: p.row(),
                seq,
                received_at,
                is_latest: p.latest,
                became_latest: p.became_latest,
            });
        }
        insert_entities(w.conn(), &rows).await?;
        let mut rels = Vec::with_capacity(plan.relationships.len());
        for r in &plan.relationships {
            let (seq, received_at) = w.next();
            rels.push(NewRelationship {
                relationship: r.row(),
                seq,
                received_at,
            });
        }
        insert_relationships(w.conn(), &rels).await?;
        insert_conflicts(w.conn(), &plan.conflicts, &batch.device_id, now).await?;
        Ok(plan.outcome)
    }
}

/// Which of these relationship ids are stored, as positions in `ids` (one JSON
/// array comes back, no id text).
pub(crate) async fn existing_relationships(
    conn: &mut SqliteConnection,
    ids: &[&str],
) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for (n, chunk) in ids.chunks(JSON_LIST_CHUNK).enumerate() {
        let found: String = sqlx::query_scalar(
            "SELECT json_group_array(w.key) FROM json_each(?) w \
             JOIN relationships r ON r.id_key = w.value ->> 0 AND r.id = w.value ->> 1",
        )
        .bind(json_keyed(chunk.iter().map(|id| [*id]))?)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::database)?;
        let found: Vec<usize> = serde_json::from_str(&found)
            .map_err(|e| StoreError::Corrupt(format!("relationship lookup: {e}")))?;
        for i in found {
            if i >= chunk.len() {
                return Err(StoreError::Corrupt(format!(
                    "lookup position {i} out of range"
                )));
            }
            out.push(n * JSON_LIST_CHUNK + i);
        }
    }
    Ok(out)
}

async fn insert_conflicts(
    conn: &mut SqliteConnection,
    conflicts: &[PlannedConflict],
    device_id: &str,
    now: Timestamp,
) -> Result<()> {
    for c in conflicts {
        sqlx::query(
            "INSERT INTO conflicts (entity_id, server_version, client_version, resolved_version, reason, \
             strategy, status, device_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(c.info.entity_id.as_str())
        .bind(c.info.local_version.as_str())
        .bind(c.info.remote_version.as_str())
        .bind(c.info.resolved_version.as_str())
        .bind(c.info.reason.as_deref().unwrap_or(""))
        .bind(&c.info.resolution_strategy)
        .bind(c.status.as_str())
        .bind(device_id)
        .bind(now.unix_micros())
        .execute(&mut *conn)
        .await
        .map_err(StoreError::database)?;
    }
    Ok(())
}
