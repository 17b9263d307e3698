//! Pushes, conflicts, devices and blobs on PostgreSQL: every write of rows runs under the exclusive write lock.

use async_trait::async_trait;
use inbetweenies_proto::{Entity, EntityId, Timestamp};
use sha2::{Digest as _, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::Row as _;

use super::rows::{self, entity_cols, CONFLICT_COLS};
use super::{db, PgStore, WriteTxn};
use crate::api::ServerStore;
use crate::error::{Result, StoreError};
use crate::logic::{self, EntityRow, PushPlan, RelationshipRow, StoredLatest, StoredState};
use crate::types::{
    BlobMeta, ChangePage, ChangeQuery, ClientSyncStatus, ConflictRecord, ConflictStatus,
    LatestAfter, ManualResolution, PushBatch, PushOutcome, Seq,
};

/// Rows per multi-row INSERT statement (keeps each statement's arrays bounded).
const INSERT_CHUNK: usize = 5_000;

/// Blobs at least this large are hashed off the async threads.
const HASH_OFFLOAD_BYTES: usize = 1 << 20;

fn json_text<T: serde::Serialize + ?Sized>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(format!("cannot encode json: {e}")))
}

/// Inserts entity rows `(entity, latest, became_latest)` numbered by `numbers` (`(seq, received_at)`).
async fn insert_entities(
    conn: &mut PgConnection,
    entities: &[(EntityRow<'_>, bool, bool)],
    numbers: &[(i64, i64)],
) -> Result<()> {
    for (chunk, nums) in entities
        .chunks(INSERT_CHUNK)
        .zip(numbers.chunks(INSERT_CHUNK))
    {
        let n = chunk.len();
        let mut id = Vec::with_capacity(n);
        let mut version = Vec::with_capacity(n);
        let mut entity_type = Vec::with_capacity(n);
        let mut name = Vec::with_capacity(n);
        let mut content = Vec::with_capacity(n);
        let mut source_type = Vec::with_capacity(n);
        let mut user_id = Vec::with_capacity(n);
        let mut parents = Vec::with_capacity(n);
        let mut created_at = Vec::with_capacity(n);
        let mut updated_at = Vec::with_capacity(n);
        let mut seq = Vec::with_capacity(n);
        let mut received_at = Vec::with_capacity(n);
        let mut latest = Vec::with_capacity(n);
        let mut became = Vec::with_capacity(n);
        let mut deleted = Vec::with_capacity(n);
        for ((e, is_latest, became_latest), (s, r)) in chunk.iter().zip(nums) {
            id.push(e.id.as_str());
            version.push(e.version.as_str());
            entity_type.push(e.entity_type.as_str());
            name.push(e.name);
            content.push(json_text(e.content)?);
            source_type.push(e.source_type.as_str());
            user_id.push(e.user_id);
            parents.push(json_text(e.parent_versions)?);
            created_at.push(e.created_at.unix_micros());
            updated_at.push(e.updated_at.unix_micros());
            seq.push(*s);
            received_at.push(*r);
            latest.push(*is_latest);
            became.push(*became_latest);
            deleted.push(e.is_deleted());
        }
        sqlx::query(
            "INSERT INTO entities (id, version, entity_type, name, content, source_type, user_id, \
               parent_versions, created_at, updated_at, seq, received_at, is_latest, \
               became_latest, is_deleted) \
             SELECT id, version, entity_type, name, content::json, source_type, user_id, \
               parents::json, created_at, updated_at, seq, received_at, is_latest, \
               became_latest, is_deleted \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
               $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], \
               $13::bool[], $14::bool[], $15::bool[]) \
             AS t(id, version, entity_type, name, content, source_type, user_id, parents, \
               created_at, updated_at, seq, received_at, is_latest, became_latest, is_deleted)",
        )
        .bind(&id)
        .bind(&version)
        .bind(&entity_type)
        .bind(&name)
        .bind(&content)
        .bind(&source_type)
        .bind(&user_id)
        .bind(&parents)
        .bind(&created_at)
        .bind(&updated_at)
        .bind(&seq)
        .bind(&received_at)
        .bind(&latest)
        .bind(&became)
        .bind(&deleted)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Inserts relationships numbered by `numbers`.
async fn insert_relationships(
    conn: &mut PgConnection,
    relationships: &[RelationshipRow<'_>],
    numbers: &[(i64, i64)],
) -> Result<()> {
    for (chunk, nums) in relationships
        .chunks(INSERT_CHUNK)
        .zip(numbers.chunks(INSERT_CHUNK))
    {
        let n = chunk.len();
        let mut id = Vec::with_capacity(n);
        let mut from_id = Vec::with_capacity(n);
        let mut from_version = Vec::with_capacity(n);
        let mut to_id = Vec::with_capacity(n);
        let mut to_version = Vec::with_capacity(n);
        let mut rel_type = Vec::with_capacity(n);
        let mut properties = Vec::with_capacity(n);
        let mut user_id = Vec::with_capacity(n);
        let mut created_at = Vec::with_capacity(n);
        let mut updated_at = Vec::with_capacity(n);
        let mut seq = Vec::with_capacity(n);
        let mut received_at = Vec::with_capacity(n);
        for (r, (s, rec)) in chunk.iter().zip(nums) {
            id.push(r.id.as_str());
            from_id.push(r.from_entity_id.as_str());
            from_version.push(r.from_entity_version.as_str());
            to_id.push(r.to_entity_id.as_str());
            to_version.push(r.to_entity_version.as_str());
            rel_type.push(r.relationship_type.as_str());
            properties.push(json_text(r.properties)?);
            user_id.push(r.user_id);
            created_at.push(r.created_at.unix_micros());
            updated_at.push(r.updated_at.unix_micros());
            seq.push(*s);
            received_at.push(*rec);
        }
        sqlx::query(
            "INSERT INTO relationships (id, from_entity_id, from_entity_version, to_entity_id, \
               to_entity_version, relationship_type, properties, user_id, created_at, updated_at, \
               seq, received_at) \
             SELECT id, from_id, from_version, to_id, to_version, rel_type, properties::json, \
               user_id, created_at, updated_at, seq, received_at \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
               $7::text[], $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::int8[]) \
             AS t(id, from_id, from_version, to_id, to_version, rel_type, properties, user_id, \
               created_at, updated_at, seq, received_at)",
        )
        .bind(&id)
        .bind(&from_id)
        .bind(&from_version)
        .bind(&to_id)
        .bind(&to_version)
        .bind(&rel_type)
        .bind(&properties)
        .bind(&user_id)
        .bind(&created_at)
        .bind(&updated_at)
        .bind(&seq)
        .bind(&received_at)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    Ok(())
}

/// Clears the latest flag of these ids' current latest rows.
async fn supersede(conn: &mut PgConnection, ids: &[&str]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("UPDATE entities SET is_latest = FALSE WHERE is_latest AND id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await
        .map_err(db)?;
    Ok(())
}

impl PgStore {
    /// Reads what planning `batch` needs, inside the write transaction.
    async fn load_state(&self, w: &mut WriteTxn, batch: &PushBatch) -> Result<StoredState> {
        let lookups = logic::push_lookups(batch);
        let mut state = StoredState::default();
        if !lookups.entity_ids.is_empty() {
            // What planning needs of each latest row; whole rows only for conflicts (`load_latest`).
            let ids: Vec<&str> = lookups.entity_ids.iter().map(|id| id.as_str()).collect();
            let fetched: Vec<(String, String, i64, bool)> = sqlx::query_as(
                "SELECT id, version, created_at, is_deleted FROM entities \
                 WHERE is_latest AND id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&mut *w.tx)
            .await
            .map_err(db)?;
            for (id, version, created_at, deleted) in fetched {
                state.latest.insert(
                    EntityId::new(id),
                    StoredLatest {
                        version: inbetweenies_proto::Version::new(version),
                        created_at: rows::ts(created_at)?,
                        deleted,
                        entity: None,
                    },
                );
            }
        }
        if !lookups.entity_keys.is_empty() {
            let ids: Vec<&str> = lookups.entity_keys.iter().map(|k| k.0.as_str()).collect();
            let versions: Vec<&str> = lookups.entity_keys.iter().map(|k| k.1.as_str()).collect();
            let found: Vec<(String, String)> = sqlx::query_as(
                "SELECT e.id, e.version FROM UNNEST($1::text[], $2::text[]) AS k(id, version) \
                 JOIN entities e ON e.id = k.id AND e.version = k.version",
            )
            .bind(&ids)
            .bind(&versions)
            .fetch_all(&mut *w.tx)
            .await
            .map_err(db)?;
            state.existing_keys.extend(
                found
                    .into_iter()
                    .map(|(id, v)| (EntityId::new(id), inbetweenies_proto::Version::new(v))),
            );
        }
        if !lookups.relationship_ids.is_empty() {
            let ids: Vec<&str> = lookups
                .relationship_ids
                .iter()
                .map(|r| r.as_str())
                .collect();
            let found: Vec<String> =
                sqlx::query_scalar("SELECT id FROM relationships WHERE id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(&mut *w.tx)
                    .await
                    .map_err(db)?;
            state
                .existing_relationships
                .extend(found.into_iter().map(Into::into));
        }
        Ok(state)
    }

    /// Loads the whole latest rows of these ids into `state.latest`.
    async fn load_latest(
        &self,
        w: &mut WriteTxn,
        state: &mut StoredState,
        ids: &[EntityId],
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = ids.iter().map(EntityId::as_str).collect();
        let sql = format!(
            "SELECT {} FROM entities a WHERE a.is_latest AND a.id = ANY($1)",
            entity_cols("a")
        );
        let fetched = sqlx::query(&sql)
            .bind(&ids)
            .fetch_all(&mut *w.tx)
            .await
            .map_err(db)?;
        for row in &fetched {
            let e = rows::entity(row)?;
            state.latest.insert(e.id.clone(), StoredLatest::from(e));
        }
        Ok(())
    }

    /// Loads every stored version of these ids into `state.histories`.
    async fn load_histories(
        &self,
        w: &mut WriteTxn,
        state: &mut StoredState,
        ids: &[EntityId],
    ) -> Result<()> {
        let ids: Vec<&str> = ids.iter().map(EntityId::as_str).collect();
        let sql = format!(
            "SELECT {} FROM entities a WHERE a.id = ANY($1) ORDER BY a.seq",
            entity_cols("a")
        );
        let fetched = sqlx::query(&sql)
            .bind(&ids)
            .fetch_all(&mut *w.tx)
            .await
            .map_err(db)?;
        for id in &ids {
            state.histories.entry(EntityId::new(*id)).or_default();
        }
        for row in &fetched {
            let e = rows::entity(row)?;
            state.histories.entry(e.id.clone()).or_default().push(e);
        }
        Ok(())
    }

    /// Writes a planned push inside the write transaction.
    async fn write_plan(
        &self,
        w: &mut WriteTxn,
        plan: &PushPlan<'_>,
        device_id: &str,
    ) -> Result<()> {
        w.summary.plan(plan);
        let superseded: Vec<&str> = plan.superseded.iter().map(EntityId::as_str).collect();
        supersede(&mut w.tx, &superseded).await?;
        if !plan.entities.is_empty() {
            let numbers = w.take(plan.entities.len());
            let rows: Vec<(EntityRow<'_>, bool, bool)> = plan
                .entities
                .iter()
                .map(|p| (p.row(), p.latest, p.became_latest))
                .collect();
            insert_entities(&mut w.tx, &rows, &numbers).await?;
        }
        if !plan.relationships.is_empty() {
            let numbers = w.take(plan.relationships.len());
            let rows: Vec<RelationshipRow<'_>> =
                plan.relationships.iter().map(|r| r.row()).collect();
            insert_relationships(&mut w.tx, &rows, &numbers).await?;
        }
        if !plan.conflicts.is_empty() {
            let c = &plan.conflicts;
            let entity_id: Vec<&str> = c.iter().map(|c| c.info.entity_id.as_str()).collect();
            let server: Vec<&str> = c.iter().map(|c| c.info.local_version.as_str()).collect();
            let client: Vec<&str> = c.iter().map(|c| c.info.remote_version.as_str()).collect();
            let resolved: Vec<&str> = c.iter().map(|c| c.info.resolved_version.as_str()).collect();
            let reason: Vec<&str> = c
                .iter()
                .map(|c| c.info.reason.as_deref().unwrap_or(""))
                .collect();
            let strategy: Vec<&str> = c
                .iter()
                .map(|c| c.info.resolution_strategy.as_str())
                .collect();
            let status: Vec<&str> = c.iter().map(|c| c.status.as_str()).collect();
            sqlx::query(
                "INSERT INTO conflicts (entity_id, server_version, client_version, \
                   resolved_version, reason, strategy, status, device_id, created_at) \
                 SELECT entity_id, server_version, client_version, resolved_version, reason, \
                   strategy, status, $8, $9 \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                   $6::text[], $7::text[]) \
                 WITH ORDINALITY AS t(entity_id, server_version, client_version, \
                   resolved_version, reason, strategy, status, n) \
                 ORDER BY n",
            )
            .bind(&entity_id)
            .bind(&server)
            .bind(&client)
            .bind(&resolved)
            .bind(&reason)
            .bind(&strategy)
            .bind(&status)
            .bind(device_id)
            .bind(w.now_us())
            .execute(&mut *w.tx)
            .await
            .map_err(db)?;
        }
        Ok(())
    }

    async fn conflict_for_update(&self, w: &mut WriteTxn, id: i64) -> Result<ConflictRecord> {
        let sql = format!("SELECT {CONFLICT_COLS} FROM conflicts WHERE id = $1 FOR UPDATE");
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&mut *w.tx)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::NotFound(format!("conflict {id}")))?;
        rows::conflict(&row)
    }

    async fn version_in(
        &self,
        w: &mut WriteTxn,
        id: &EntityId,
        version: &inbetweenies_proto::Version,
    ) -> Result<Entity> {
        let sql = format!(
            "SELECT {} FROM entities a WHERE a.id = $1 AND a.version = $2",
            entity_cols("a")
        );
        let row = sqlx::query(&sql)
            .bind(id.as_str())
            .bind(version.as_str())
            .fetch_optional(&mut *w.tx)
            .await
            .map_err(db)?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("conflict names missing version {version} of {id}"))
            })?;
        rows::entity(&row)
    }
}

#[async_trait]
impl ServerStore for PgStore {
    async fn apply_push(&self, batch: PushBatch) -> Result<PushOutcome> {
        let mut w = self.begin_write().await?;
        let now = rows::ts(w.now_us())?;
        let mut state = self.load_state(&mut w, &batch).await?;
        // A conflict needs the whole latest row, a three-way merge the earlier versions:
        // load what planning asks for and plan again (at most twice, see `logic`).
        let mut rounds = 0;
        let plan = loop {
            match logic::plan_push(&batch, &state, now, &self.opts.resolver) {
                Ok(plan) => break plan,
                Err(more) if rounds < 2 => {
                    rounds += 1;
                    self.load_latest(&mut w, &mut state, &more.latest).await?;
                    if !more.history.is_empty() {
                        self.load_histories(&mut w, &mut state, &more.history)
                            .await?;
                    }
                }
                Err(more) => {
                    return Err(StoreError::Corrupt(format!(
                        "planning still needs {} latest rows and {} histories after loading them",
                        more.latest.len(),
                        more.history.len()
                    )))
                }
            }
        };
        self.write_plan(&mut w, &plan, &batch.device_id).await?;
        w.commit(&self.opts).await?;
        tracing::debug!(
            target: "goodies_store::postgres",
            entities = plan.outcome.entities_written,
            relationships = plan.outcome.relationships_written,
            conflicts = plan.conflicts.len(),
            "push applied"
        );
        Ok(plan.outcome)
    }

    async fn changes(&self, query: &ChangeQuery) -> Result<ChangePage> {
        Ok(self.page(query, None).await?.0)
    }

    async fn changes_with_latest(
        &self,
        query: &ChangeQuery,
        latest_after: Seq,
    ) -> Result<(ChangePage, LatestAfter)> {
        self.page(query, Some(latest_after)).await
    }

    async fn max_seq(&self) -> Result<Seq> {
        self.read_max_seq().await
    }

    async fn latest_entities(&self, ids: &[EntityId]) -> Result<Vec<Entity>> {
        let sql = format!(
            "SELECT {} FROM entities a WHERE a.is_latest AND a.id = ANY($1)",
            entity_cols("a")
        );
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(INSERT_CHUNK) {
            let list: Vec<&str> = chunk.iter().map(EntityId::as_str).collect();
            let rows = sqlx::query(&sql)
                .bind(&list)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
            for row in &rows {
                out.push(rows::entity(row)?);
            }
        }
        Ok(out)
    }

    async fn conflicts(
        &self,
        statuses: Option<&[ConflictStatus]>,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let fetched = match statuses {
            Some(statuses) => {
                let statuses: Vec<&str> = statuses.iter().map(ConflictStatus::as_str).collect();
                let sql = format!(
                    "SELECT {CONFLICT_COLS} FROM conflicts WHERE status = ANY($1) \
                     ORDER BY id DESC LIMIT $2"
                );
                sqlx::query(&sql)
                    .bind(&statuses)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await
            }
            None => {
                let sql =
                    format!("SELECT {CONFLICT_COLS} FROM conflicts ORDER BY id DESC LIMIT $1");
                sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await
            }
        }
        .map_err(db)?;
        fetched.iter().map(rows::conflict).collect()
    }

    async fn resolve_conflict(
        &self,
        id: i64,
        resolution: ManualResolution,
        user_id: &str,
    ) -> Result<(ConflictRecord, Entity)> {
        let mut w = self.begin_write().await?;
        let conflict = self.conflict_for_update(&mut w, id).await?;
        if conflict.status != ConflictStatus::Pending {
            return Err(StoreError::Invalid(format!(
                "conflict {id} is {}, not pending",
                conflict.status.as_str()
            )));
        }
        let server = self
            .version_in(&mut w, &conflict.entity_id, &conflict.server_version)
            .await?;
        let client = self
            .version_in(&mut w, &conflict.entity_id, &conflict.client_version)
            .await?;
        let now_us = w.now_us();
        let now = rows::ts(now_us)?;
        let entity = logic::manual_resolution(&server, &client, &resolution, user_id, now);
        supersede(&mut w.tx, &[entity.id.as_str()]).await?;
        let numbers = w.take(1);
        insert_entities(&mut w.tx, &[((&entity).into(), true, true)], &numbers).await?;
        let sql = format!(
            "UPDATE conflicts SET status = 'resolved', resolved_version = $2, resolved_at = $3 \
             WHERE id = $1 RETURNING {CONFLICT_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(entity.version.as_str())
            .bind(now_us)
            .fetch_one(&mut *w.tx)
            .await
            .map_err(db)?;
        let record = rows::conflict(&row)?;
        w.commit(&self.opts).await?;
        Ok((record, entity))
    }

    async fn dismiss_conflict(&self, id: i64) -> Result<ConflictRecord> {
        let sql = format!(
            "UPDATE conflicts SET status = 'dismissed', resolved_at = goodies_now_us() \
             WHERE id = $1 AND status = 'pending' RETURNING {CONFLICT_COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        if let Some(row) = row {
            return rows::conflict(&row);
        }
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM conflicts WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)?;
        match status {
            Some(status) => Err(StoreError::Invalid(format!(
                "conflict {id} is {status}, not pending"
            ))),
            None => Err(StoreError::NotFound(format!("conflict {id}"))),
        }
    }

    async fn record_sync(&self, device_id: &str) -> Result<()> {
        if self.opts.sync_record_delay.is_some() {
            // The time is the database's, as below: its clock minus the record's age
            // when it is written (`write_held_syncs`).
            if self
                .seen
                .add(device_id, inbetweenies_proto::Timestamp::now())
            {
                self.write_held_syncs().await?;
            }
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO client_sync (device_id, last_seen, sync_count) \
             VALUES ($1, goodies_now_us(), 1) \
             ON CONFLICT (device_id) DO UPDATE \
             SET last_seen = EXCLUDED.last_seen, sync_count = client_sync.sync_count + 1",
        )
        .bind(device_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn record_ack(&self, device_id: &str, watermark: Timestamp) -> Result<()> {
        sqlx::query(
            "INSERT INTO client_sync (device_id, last_ack) VALUES ($1, $2) \
             ON CONFLICT (device_id) DO UPDATE SET last_ack = EXCLUDED.last_ack",
        )
        .bind(device_id)
        .bind(watermark.unix_micros())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    fn record_sync_now(&self, device_id: &str) -> Option<Result<()>> {
        self.opts.sync_record_delay?;
        // The time as `record_sync` takes it.
        self.seen
            .add_if_room(device_id, inbetweenies_proto::Timestamp::now())
            .then_some(Ok(()))
    }

    async fn flush_sync_records(&self) -> Result<()> {
        self.write_held_syncs().await
    }

    async fn client_status(&self, device_id: &str) -> Result<Option<ClientSyncStatus>> {
        self.write_held_syncs().await?;
        let row = sqlx::query(
            "SELECT device_id, last_seen, last_ack, sync_count FROM client_sync WHERE device_id = $1",
        )
        .bind(device_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(rows::client_status).transpose()
    }

    async fn put_blob(
        &self,
        entity_id: &EntityId,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<BlobMeta> {
        let sha256 = if bytes.len() >= HASH_OFFLOAD_BYTES {
            let owned = bytes.to_vec();
            tokio::task::spawn_blocking(move || hex::encode(Sha256::digest(&owned)))
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
        } else {
            hex::encode(Sha256::digest(bytes))
        };
        let size =
            i64::try_from(bytes.len()).map_err(|_| StoreError::Invalid("blob too large".into()))?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO blob_data (sha256, size, bytes) VALUES ($1, $2, $3) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&sha256)
        .bind(size)
        .bind(bytes)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO blobs (sha256, entity_id, content_type, created_at) \
             VALUES ($1, $2, $3, goodies_now_us()) ON CONFLICT (sha256, entity_id) DO NOTHING",
        )
        .bind(&sha256)
        .bind(entity_id.as_str())
        .bind(content_type)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let row = sqlx::query(
            "SELECT b.sha256, b.entity_id, b.content_type, d.size, b.created_at \
             FROM blobs b JOIN blob_data d USING (sha256) WHERE b.sha256 = $1 AND b.entity_id = $2",
        )
        .bind(&sha256)
        .bind(entity_id.as_str())
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        rows::blob_meta(&row)
    }

    async fn blob_meta(&self, sha256: &str) -> Result<Option<BlobMeta>> {
        let row = sqlx::query(
            "SELECT b.sha256, b.entity_id, b.content_type, d.size, b.created_at \
             FROM blobs b JOIN blob_data d USING (sha256) WHERE b.sha256 = $1 \
             ORDER BY b.created_at, b.entity_id LIMIT 1",
        )
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(rows::blob_meta).transpose()
    }

    async fn read_blob(&self, sha256: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        // substring() is 1-based and its length an int4: read in pieces of at most 1 GiB - 1.
        let row = sqlx::query(
            "SELECT size, substring(bytes FROM ($2 + 1)::int4 FOR LEAST($3, 1073741823)::int4) \
             FROM blob_data WHERE sha256 = $1",
        )
        .bind(sha256)
        .bind(offset.min(i64::from(i32::MAX) - 1))
        .bind(len)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::NotFound(format!("blob {sha256}")))?;
        let size: i64 = row.try_get(0).map_err(db)?;
        if offset >= size {
            return Ok(Vec::new());
        }
        row.try_get::<Vec<u8>, _>(1).map_err(db)
    }

    async fn blobs_of(&self, entity_id: &EntityId) -> Result<Vec<BlobMeta>> {
        let fetched = sqlx::query(
            "SELECT b.sha256, b.entity_id, b.content_type, d.size, b.created_at \
             FROM blobs b JOIN blob_data d USING (sha256) WHERE b.entity_id = $1 \
             ORDER BY b.created_at, b.sha256",
        )
        .bind(entity_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        fetched.iter().map(rows::blob_meta).collect()
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

impl PgStore {
    /// Writes the sync records held (`crate::seen`) in one statement; on failure they
    /// are held again for the next write. `last_seen` is the database's clock minus
    /// each record's age, as a write at the time of the sync would have read it.
    async fn write_held_syncs(&self) -> Result<()> {
        if self.seen.len() == 0 {
            return Ok(());
        }
        let held = self.seen.take();
        let ids: Vec<&str> = held.iter().map(|h| h.device_id.as_str()).collect();
        let ages: Vec<i64> = held
            .iter()
            .map(|h| i64::try_from(h.at.elapsed().as_micros()).unwrap_or(i64::MAX))
            .collect();
        let syncs: Vec<i64> = held
            .iter()
            .map(|h| i64::try_from(h.syncs).unwrap_or(i64::MAX))
            .collect();
        let written = sqlx::query(
            "INSERT INTO client_sync (device_id, last_seen, sync_count) \
             SELECT d, goodies_now_us() - a, n \
             FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS t(d, a, n) \
             ON CONFLICT (device_id) DO UPDATE \
             SET last_seen = GREATEST(client_sync.last_seen, EXCLUDED.last_seen), \
             sync_count = client_sync.sync_count + EXCLUDED.sync_count",
        )
        .bind(&ids)
        .bind(&ages)
        .bind(&syncs)
        .execute(&self.pool)
        .await
        .map(|_| ())
        .map_err(db);
        if written.is_err() {
            self.seen.put_back(held);
        }
        written
    }
}
