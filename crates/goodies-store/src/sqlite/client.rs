//! `ClientStore` for SQLite: local writes with their outbox entries, atomic pull-apply with the pull-guard.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use inbetweenies_proto::{
    ChangeType, Entity, EntityChange, EntityId, JsonObject, Relationship, RelationshipChange,
    RelationshipId, RelationshipType, SyncChange, Timestamp, Version, DELETED_KEY,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::push::existing_relationships;
use super::rows::*;
use super::{
    clear_latest, existing_pairs, latest_row, latest_summaries, promote, SqliteStore, Writer,
};
use crate::api::ClientStore;
use crate::error::{Result, StoreError};
use crate::logic::entity_apply_order;
use crate::types::*;

const WATERMARK: &str = "watermark";
const CURSOR: &str = "cursor";

/// The live latest version of an id, or `NotFound`.
async fn live_latest(conn: &mut SqliteConnection, id: &EntityId) -> Result<Entity> {
    match latest_row(conn, id.as_str()).await? {
        Some(s) if !s.entity.is_deleted() => Ok(s.entity),
        Some(_) => Err(StoreError::NotFound(format!("entity {id} (deleted)"))),
        None => Err(StoreError::NotFound(format!("entity {id}"))),
    }
}

/// An edit time for a new local version: now, but never before its parent's.
fn edit_time(now: Timestamp, parent: Option<&Entity>) -> Timestamp {
    match parent {
        Some(p) if p.updated_at >= now => p.updated_at.saturating_add_micros(1),
        _ => now,
    }
}

async fn insert_outbox(
    conn: &mut SqliteConnection,
    change: &SyncChange,
    relationship_id: Option<&RelationshipId>,
    now: Timestamp,
) -> Result<()> {
    let (entity_id, version) = match &change.entity {
        Some(e) => (Some(e.id.as_str()), Some(e.version.as_str())),
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO outbox (entity_id, version, relationship_id, change, attempts, created_at) VALUES (?, ?, ?, ?, 0, ?)",
    )
    .bind(entity_id)
    .bind(version)
    .bind(relationship_id.map(RelationshipId::as_str))
    .bind(to_json(change)?)
    .bind(now.unix_micros())
    .execute(&mut *conn)
    .await
    .map_err(StoreError::database)?;
    Ok(())
}

/// Runs `head` (a statement ending in `position IN (`) over `positions`, in chunks;
/// returns the rows it touched.
async fn for_positions(conn: &mut SqliteConnection, head: &str, positions: &[i64]) -> Result<u64> {
    let mut touched = 0;
    for chunk in positions.chunks(IN_CHUNK) {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(head);
        let mut sep = qb.separated(", ");
        for p in chunk {
            sep.push_bind(*p);
        }
        qb.push(")");
        touched += qb
            .build()
            .execute(&mut *conn)
            .await
            .map_err(StoreError::database)?
            .rows_affected();
    }
    Ok(touched)
}

/// An outbox row whose first columns are `position, change, attempts`.
fn outbox_entry(row: &sqlx::sqlite::SqliteRow) -> Result<OutboxEntry> {
    let change: String = row.try_get(1).map_err(StoreError::database)?;
    Ok(OutboxEntry {
        position: row.try_get(0).map_err(StoreError::database)?,
        change: serde_json::from_str(&change)
            .map_err(|e| StoreError::Corrupt(format!("bad outbox change: {e}")))?,
        attempts: row
            .try_get::<i64, _>(2)
            .map_err(StoreError::database)?
            .clamp(0, i64::from(u32::MAX)) as u32,
    })
}

const ATTEMPTED: &str = "UPDATE outbox SET attempts = attempts + 1 WHERE position IN (";

/// Ids with an outbox entry.
async fn pending_set(conn: &mut SqliteConnection) -> Result<HashSet<String>> {
    sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT entity_id FROM outbox WHERE entity_id IS NOT NULL",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::database)
    .map(|v| v.into_iter().collect())
}

async fn set_state(conn: &mut SqliteConnection, key: &str, value: Option<&str>) -> Result<()> {
    match value {
        Some(v) => sqlx::query("INSERT INTO sync_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(v),
        None => sqlx::query("DELETE FROM sync_state WHERE key = ?").bind(key),
    }
    .execute(&mut *conn)
    .await
    .map_err(StoreError::database)?;
    Ok(())
}

impl SqliteStore {
    /// Inserts a local version as latest with its outbox entry.
    async fn insert_local(
        &self,
        w: &mut Writer<'_>,
        entity: Entity,
        change_type: ChangeType,
        replaces: bool,
    ) -> Result<Entity> {
        if replaces {
            clear_latest(w.conn(), &[entity.id.as_str()]).await?;
        }
        // An edit is the user's answer to a refused change of the same id: both go again.
        sqlx::query(
            "UPDATE outbox SET quarantined_at = NULL, quarantine_reason = NULL WHERE entity_id = ? AND quarantined_at IS NOT NULL",
        )
        .bind(entity.id.as_str())
        .execute(w.conn())
        .await
        .map_err(StoreError::database)?;
        let (seq, received_at) = w.next();
        insert_entities(
            w.conn(),
            &[NewEntity {
                entity: (&entity).into(),
                seq,
                received_at,
                is_latest: true,
                became_latest: true,
            }],
        )
        .await?;
        let change = SyncChange {
            change_type,
            entity: Some(EntityChange::from_entity(&entity)),
            relationships: vec![],
        };
        let now = w.now;
        insert_outbox(w.conn(), &change, None, now).await?;
        Ok(entity)
    }

    /// Step 1 of `apply_response`: drop acknowledged sent entries, count an attempt on the others,
    /// and follow the server's decisions on ids left without pending entries.
    async fn apply_acks(&self, w: &mut Writer<'_>, acks: &AckSet) -> Result<()> {
        if !acks.sent_positions.is_empty() {
            let acked_entities: HashSet<&str> =
                acks.entities.iter().map(EntityId::as_str).collect();
            let acked_rels: HashSet<&str> = acks
                .relationships
                .iter()
                .map(RelationshipId::as_str)
                .collect();
            let mut drop_positions = Vec::new();
            let mut retry_positions = Vec::new();
            for chunk in acks.sent_positions.chunks(IN_CHUNK) {
                let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
                    "SELECT position, entity_id, relationship_id FROM outbox WHERE position IN (",
                );
                let mut sep = qb.separated(", ");
                for p in chunk {
                    sep.push_bind(*p);
                }
                qb.push(")");
                for row in qb
                    .build()
                    .fetch_all(w.conn())
                    .await
                    .map_err(StoreError::database)?
                {
                    let position: i64 = row.try_get(0).map_err(StoreError::database)?;
                    let entity_id: Option<String> = row.try_get(1).map_err(StoreError::database)?;
                    let rel_id: Option<String> = row.try_get(2).map_err(StoreError::database)?;
                    let acked = entity_id
                        .as_deref()
                        .is_some_and(|i| acked_entities.contains(i))
                        || rel_id.as_deref().is_some_and(|r| acked_rels.contains(r));
                    if acked {
                        drop_positions.push(position);
                    } else {
                        retry_positions.push(position);
                    }
                }
            }
            for_positions(
                w.conn(),
                "DELETE FROM outbox WHERE position IN (",
                &drop_positions,
            )
            .await?;
            for_positions(w.conn(), ATTEMPTED, &retry_positions).await?;
        }
        if !acks.resolved_versions.is_empty() {
            let pending = pending_set(w.conn()).await?;
            let wanted: Vec<(&str, &str)> = acks
                .resolved_versions
                .iter()
                .filter(|(id, _)| !pending.contains(id.as_str()))
                .map(|(id, v)| (id.as_str(), v.as_str()))
                .collect();
            let stored = existing_pairs(w.conn(), &wanted).await?;
            for (id, v) in wanted {
                if stored.contains(&(id.to_owned(), v.to_owned())) {
                    promote(w.conn(), id, v).await?;
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ClientStore for SqliteStore {
    async fn write_local(&self, edit: LocalEdit, user_id: &str) -> Result<Entity> {
        let mut w = self.writer().await?;
        w.graph_changed();
        let now = w.now;
        let entity = match edit {
            LocalEdit::Create {
                id,
                entity_type,
                name,
                content,
                source_type,
            } => {
                let id = id.unwrap_or_else(EntityId::new_random);
                if latest_row(w.conn(), id.as_str()).await?.is_some() {
                    return Err(StoreError::Invalid(format!("entity {id} already exists")));
                }
                let entity = Entity {
                    id,
                    version: Version::generate(now, user_id),
                    entity_type,
                    name,
                    content,
                    source_type,
                    user_id: user_id.to_owned(),
                    parent_versions: vec![],
                    created_at: now,
                    updated_at: now,
                };
                self.insert_local(&mut w, entity, ChangeType::Create, false)
                    .await?
            }
            LocalEdit::Update { id, name, content } => {
                let prev = live_latest(w.conn(), &id).await?;
                let at = edit_time(now, Some(&prev));
                let mut next = prev.clone();
                if let Some(name) = name {
                    next.name = name;
                }
                if let Some(content) = content {
                    next.content = content;
                }
                let next = new_version(prev, next, at, user_id);
                self.insert_local(&mut w, next, ChangeType::Update, true)
                    .await?
            }
            LocalEdit::MergeContent { id, patch } => {
                let prev = live_latest(w.conn(), &id).await?;
                let at = edit_time(now, Some(&prev));
                let mut next = prev.clone();
                for (k, v) in patch {
                    if v.is_null() {
                        next.content.remove(&k);
                    } else {
                        next.content.insert(k, v);
                    }
                }
                let next = new_version(prev, next, at, user_id);
                self.insert_local(&mut w, next, ChangeType::Update, true)
                    .await?
            }
            LocalEdit::Delete { id } => {
                let prev = live_latest(w.conn(), &id).await?;
                let at = edit_time(now, Some(&prev));
                let mut next = prev.clone();
                next.content
                    .insert(DELETED_KEY.to_owned(), serde_json::Value::Bool(true));
                let next = new_version(prev, next, at, user_id);
                self.insert_local(&mut w, next, ChangeType::Delete, true)
                    .await?
            }
        };
        w.commit().await?;
        Ok(entity)
    }

    async fn write_local_relationship(
        &self,
        from: &EntityId,
        to: &EntityId,
        relationship_type: RelationshipType,
        properties: JsonObject,
        user_id: &str,
    ) -> Result<Relationship> {
        let mut w = self.writer().await?;
        let now = w.now;
        let from_e = live_latest(w.conn(), from).await?;
        let to_e = live_latest(w.conn(), to).await?;
        let rel = Relationship {
            id: RelationshipId::new_random(),
            from_entity_id: from_e.id,
            from_entity_version: from_e.version,
            to_entity_id: to_e.id,
            to_entity_version: to_e.version,
            relationship_type,
            properties,
            user_id: user_id.to_owned(),
            created_at: now,
            updated_at: now,
        };
        let (seq, received_at) = w.next();
        insert_relationships(
            w.conn(),
            &[NewRelationship {
                relationship: (&rel).into(),
                seq,
                received_at,
            }],
        )
        .await?;
        let change = SyncChange {
            change_type: ChangeType::Update,
            entity: None,
            relationships: vec![RelationshipChange::from_relationship(&rel)],
        };
        insert_outbox(w.conn(), &change, Some(&rel.id), now).await?;
        w.commit().await?;
        Ok(rel)
    }

    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        sqlx::query("SELECT position, change, attempts FROM outbox WHERE quarantined_at IS NULL ORDER BY position LIMIT ?")
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::database)?
            .iter()
            .map(outbox_entry)
            .collect()
    }

    async fn pending_count(&self) -> Result<u64> {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox WHERE quarantined_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .map(|n| n as u64)
            .map_err(StoreError::database)
    }

    async fn mark_attempted(&self, positions: &[i64]) -> Result<()> {
        if positions.is_empty() {
            return Ok(());
        }
        let mut w = self.writer().await?;
        for_positions(w.conn(), ATTEMPTED, positions).await?;
        w.commit().await
    }

    async fn pending_ids(&self) -> Result<Vec<EntityId>> {
        sqlx::query_scalar::<_, String>(
            "SELECT entity_id FROM outbox WHERE entity_id IS NOT NULL AND quarantined_at IS NULL GROUP BY entity_id ORDER BY min(position)",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::database)
        .map(|v| v.into_iter().map(EntityId::new).collect())
    }

    async fn quarantine(&self, entries: &[(i64, String)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut w = self.writer().await?;
        let now = w.now.unix_micros();
        for (position, reason) in entries {
            sqlx::query(
                "UPDATE outbox SET quarantined_at = ?, quarantine_reason = ?, attempts = attempts + 1 WHERE position = ?",
            )
            .bind(now)
            .bind(reason)
            .bind(position)
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?;
        }
        w.commit().await
    }

    async fn quarantined(&self) -> Result<Vec<QuarantinedEntry>> {
        sqlx::query(
            "SELECT position, change, attempts, quarantine_reason, quarantined_at FROM outbox WHERE quarantined_at IS NOT NULL ORDER BY position",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::database)?
        .iter()
        .map(|row| {
            Ok(QuarantinedEntry {
                entry: outbox_entry(row)?,
                reason: row
                    .try_get::<Option<String>, _>(3)
                    .map_err(StoreError::database)?
                    .unwrap_or_default(),
                at: ts(row.try_get(4).map_err(StoreError::database)?)?,
            })
        })
        .collect()
    }

    async fn release_quarantined(&self, positions: Option<&[i64]>) -> Result<u64> {
        let mut w = self.writer().await?;
        let released = match positions {
            None => sqlx::query(
                "UPDATE outbox SET quarantined_at = NULL, quarantine_reason = NULL WHERE quarantined_at IS NOT NULL",
            )
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?
            .rows_affected(),
            Some(positions) => {
                for_positions(
                    w.conn(),
                    "UPDATE outbox SET quarantined_at = NULL, quarantine_reason = NULL WHERE quarantined_at IS NOT NULL AND position IN (",
                    positions,
                )
                .await?
            }
        };
        w.commit().await?;
        Ok(released)
    }

    async fn requeue(
        &self,
        entities: &[EntityId],
        relationships: &[RelationshipId],
    ) -> Result<u64> {
        let mut w = self.writer().await?;
        let now = w.now;
        let mut added = 0;
        for id in entities {
            let Some(latest) = latest_row(w.conn(), id.as_str()).await? else {
                continue;
            };
            let e = latest.entity;
            let change_type = if e.is_deleted() {
                ChangeType::Delete
            } else if e.parent_versions.is_empty() {
                ChangeType::Create
            } else {
                ChangeType::Update
            };
            let change = SyncChange {
                change_type,
                entity: Some(EntityChange::from_entity(&e)),
                relationships: vec![],
            };
            insert_outbox(w.conn(), &change, None, now).await?;
            added += 1;
        }
        for id in relationships {
            let row = sqlx::query(
                "SELECT seq, id, from_entity_id, from_entity_version, to_entity_id, to_entity_version, relationship_type, properties, user_id, created_at, updated_at, received_at FROM relationships WHERE id_key = ? AND id = ? LIMIT 1",
            )
            .bind(key_of(id.as_str()))
            .bind(id.as_str())
            .fetch_optional(w.conn())
            .await
            .map_err(StoreError::database)?;
            let Some(row) = row else { continue };
            let rel = stored_relationship(&row)?.relationship;
            let change = SyncChange {
                change_type: ChangeType::Update,
                entity: None,
                relationships: vec![RelationshipChange::from_relationship(&rel)],
            };
            insert_outbox(w.conn(), &change, Some(&rel.id), now).await?;
            added += 1;
        }
        w.commit().await?;
        Ok(added)
    }

    async fn forget_deleted(&self, ids: &[EntityId]) -> Result<Vec<EntityId>> {
        let mut w = self.writer().await?;
        w.graph_changed();
        let pending = pending_set(w.conn()).await?;
        let mut removed = Vec::new();
        for id in ids {
            if pending.contains(id.as_str()) {
                continue;
            }
            match latest_row(w.conn(), id.as_str()).await? {
                Some(latest) if latest.entity.is_deleted() => {}
                _ => continue,
            }
            sqlx::query("DELETE FROM entities WHERE id_key = ? AND id = ?")
                .bind(key_of(id.as_str()))
                .bind(id.as_str())
                .execute(w.conn())
                .await
                .map_err(StoreError::database)?;
            removed.push(id.clone());
        }
        w.commit().await?;
        Ok(removed)
    }

    async fn graph_generation(&self) -> Result<u64> {
        sqlx::query_scalar::<_, i64>("SELECT graph_generation FROM store_meta WHERE one = 1")
            .fetch_one(&self.pool)
            .await
            .map(|g| g.max(0) as u64)
            .map_err(StoreError::database)
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }

    async fn stored_digest(&self) -> Result<Option<String>> {
        sqlx::query_scalar::<_, String>("SELECT digest FROM stored_digest WHERE one = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::database)
    }

    async fn apply_response(&self, acks: &AckSet, page: &PulledPage) -> Result<ApplyReport> {
        let mut w = self.writer().await?;
        w.graph_changed();
        let now = w.now;
        self.apply_acks(&mut w, acks).await?;
        let pending = pending_set(w.conn()).await?;
        let mut report = ApplyReport::default();

        // Entities first, parents before children.
        let entity_changes: Vec<(&SyncChange, &EntityChange)> = entity_apply_order(&page.changes)
            .into_iter()
            .filter_map(|i| {
                page.changes[i]
                    .entity
                    .as_ref()
                    .map(|e| (&page.changes[i], e))
            })
            .collect();
        let mut ids: Vec<&str> = entity_changes.iter().map(|(_, e)| e.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut latest: HashMap<EntityId, (Version, Timestamp)> = latest_summaries(w.conn(), &ids)
            .await?
            .into_iter()
            .map(|(id, s)| (id, (s.version, s.created_at)))
            .collect();
        let pairs: Vec<(&str, &str)> = entity_changes
            .iter()
            .map(|(_, e)| (e.id.as_str(), e.version.as_str()))
            .collect();
        let mut stored = existing_pairs(w.conn(), &pairs).await?;
        let mut new_rows: Vec<PulledRow> = Vec::new();
        // Per id whose latest changes: the row that ends up latest.
        let mut finals: HashMap<EntityId, Final> = HashMap::new();
        for &(change, e) in &entity_changes {
            let guarded = pending.contains(e.id.as_str());
            let key = (e.id.to_string(), e.version.to_string());
            if stored.contains(&key) {
                let is_latest = latest.get(&e.id).is_some_and(|(v, _)| *v == e.version);
                if guarded || is_latest {
                    report.unchanged += 1;
                } else {
                    // Stored already (e.g. kept aside by an earlier pull): it becomes latest now.
                    if let Some(Final::NewRow(row)) =
                        finals.insert(e.id.clone(), Final::Existing(e.version.clone()))
                    {
                        new_rows[row].is_latest = false;
                    }
                    let created = latest.get(&e.id).map(|(_, c)| *c).unwrap_or(now);
                    latest.insert(e.id.clone(), (e.version.clone(), created));
                    report.entities_applied.push(e.id.clone());
                }
                continue;
            }
            let mut entity = e.to_entity(latest.get(&e.id).map(|(_, c)| *c), now);
            if change.change_type == ChangeType::Delete {
                entity
                    .content
                    .insert(DELETED_KEY.to_owned(), serde_json::Value::Bool(true));
            }
            let (seq, received_at) = w.next();
            if guarded {
                new_rows.push(PulledRow {
                    entity,
                    seq,
                    received_at,
                    is_latest: false,
                    became_latest: false,
                });
                report.entities_guarded.push(e.id.clone());
            } else {
                if let Some(Final::NewRow(row)) =
                    finals.insert(e.id.clone(), Final::NewRow(new_rows.len()))
                {
                    new_rows[row].is_latest = false;
                }
                latest.insert(e.id.clone(), (entity.version.clone(), entity.created_at));
                new_rows.push(PulledRow {
                    entity,
                    seq,
                    received_at,
                    is_latest: true,
                    became_latest: true,
                });
                report.entities_applied.push(e.id.clone());
            }
            stored.insert(key);
        }
        let replaced: Vec<&str> = finals
            .iter()
            .filter(|(_, f)| matches!(f, Final::NewRow(_)))
            .map(|(id, _)| id.as_str())
            .collect();
        clear_latest(w.conn(), &replaced).await?;
        let new_rows: Vec<NewEntity<'_>> = new_rows
            .iter()
            .map(|r| NewEntity {
                entity: (&r.entity).into(),
                seq: r.seq,
                received_at: r.received_at,
                is_latest: r.is_latest,
                became_latest: r.became_latest,
            })
            .collect();
        insert_entities(w.conn(), &new_rows).await?;
        for (id, f) in &finals {
            if let Final::Existing(v) = f {
                promote(w.conn(), id.as_str(), v.as_str()).await?;
            }
        }

        // Then relationships: new ids are stored (the server already checked endpoints).
        let rels: Vec<&RelationshipChange> = page
            .changes
            .iter()
            .flat_map(|c| c.relationships.iter())
            .collect();
        let mut rel_ids: Vec<&str> = rels.iter().map(|r| r.id.as_str()).collect();
        rel_ids.sort_unstable();
        rel_ids.dedup();
        let mut known: HashSet<&str> = existing_relationships(w.conn(), &rel_ids)
            .await?
            .into_iter()
            .map(|i| rel_ids[i])
            .collect();
        let mut new_rels = Vec::new();
        for r in rels {
            if known.insert(r.id.as_str()) {
                let (seq, received_at) = w.next();
                new_rels.push((r.to_relationship("", now), seq, received_at));
                report.relationships_applied.push(r.id.clone());
            }
        }
        let new_rels: Vec<NewRelationship<'_>> = new_rels
            .iter()
            .map(|(r, seq, received_at)| NewRelationship {
                relationship: r.into(),
                seq: *seq,
                received_at: *received_at,
            })
            .collect();
        insert_relationships(w.conn(), &new_rels).await?;

        // The cursor of a pull in progress; the watermark once the pull completes.
        match &page.cursor {
            Some(cursor) => set_state(w.conn(), CURSOR, Some(cursor)).await?,
            None => {
                set_state(w.conn(), CURSOR, None).await?;
                set_state(w.conn(), WATERMARK, Some(&page.server_time.to_string())).await?;
            }
        }
        w.commit().await?;
        Ok(report)
    }

    async fn sync_state(&self) -> Result<SyncState> {
        let rows = sqlx::query("SELECT key, value FROM sync_state")
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::database)?;
        let mut state = SyncState::default();
        for row in rows {
            let key: String = row.try_get(0).map_err(StoreError::database)?;
            let value: String = row.try_get(1).map_err(StoreError::database)?;
            match key.as_str() {
                WATERMARK => {
                    state.watermark = Some(Timestamp::parse(&value).map_err(|e| {
                        StoreError::Corrupt(format!("bad watermark {value:?}: {e}"))
                    })?)
                }
                CURSOR => state.cursor = Some(value),
                _ => {}
            }
        }
        Ok(state)
    }

    async fn reset_sync_state(&self) -> Result<()> {
        let mut w = self.writer().await?;
        sqlx::query("DELETE FROM sync_state")
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?;
        w.commit().await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        sqlx::query_scalar::<_, String>("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::database)
    }

    async fn settings_of(&self, keys: &[&str]) -> Result<Vec<Option<String>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "SELECT key, value FROM settings WHERE key IN (",
        );
        let mut list = qb.separated(", ");
        for key in keys {
            list.push_bind(*key);
        }
        qb.push(")");
        let rows: Vec<(String, String)> = qb
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::database)?;
        Ok(keys
            .iter()
            .map(|k| {
                rows.iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            })
            .collect())
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        // A value stored already is not written again: no transaction, nothing in the
        // log (a command that changes nothing leaves the mirror's files as they were).
        if self.setting(key).await?.as_deref() == Some(value) {
            return Ok(());
        }
        let mut w = self.writer().await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(w.conn())
            .await
            .map_err(StoreError::database)?;
        w.commit().await
    }
}

/// A pulled entity version to insert.
struct PulledRow {
    entity: Entity,
    seq: i64,
    received_at: i64,
    /// Latest once the whole page is applied.
    is_latest: bool,
    /// Latest when applied (false when the pull-guard kept it aside).
    became_latest: bool,
}

/// Which row ends up latest for an id touched by a pulled page.
enum Final {
    /// A row this page inserts (index into the new rows).
    NewRow(usize),
    /// A version stored before.
    Existing(Version),
}

/// `next` as a new version of `prev`, made by `user_id` at `at`.
fn new_version(prev: Entity, mut next: Entity, at: Timestamp, user_id: &str) -> Entity {
    next.version = Version::generate(at, user_id);
    next.parent_versions = vec![prev.version];
    next.user_id = user_id.to_owned();
    next.updated_at = at;
    next.created_at = prev.created_at;
    next
}
