//! Store calls that run to completion whatever happens to their caller.
//!
//! A caller's future can be dropped at any `.await`: a server's request handler when its
//! client disconnects, a client call under a timeout or a `select!`. Dropped inside a
//! store call, it could leave a pooled connection inside a transaction — SQLite's write
//! lock held, or PostgreSQL's write lock (an advisory transaction lock) held until that
//! connection happens to be used again — so every later write would wait and fail.
//!
//! [`Detached`] wraps a store so that each call runs on its own task: the caller awaits
//! the task, and a caller that goes away leaves the task to finish — a write commits or
//! rolls back, a read ends its transaction — exactly as if the caller had stayed. The
//! stores [`crate::open_server_store`] and [`crate::open_client_store`] return are
//! wrapped this way.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use inbetweenies_proto::{
    Entity, EntityId, EntityType, JsonObject, Relationship, RelationshipId, RelationshipType,
    Timestamp, Version,
};

use crate::api::{ClientStore, GraphRead, ServerStore};
use crate::error::{Result, StoreError};
use crate::snapshot::{RestoreMark, RestoreReport, StoreSnapshot, SyncEvent, SyncMetadata};
use crate::types::*;

/// A store whose every call runs to completion on its own task (see the module doc).
#[derive(Debug)]
pub struct Detached<S: ?Sized>(pub Arc<S>);

/// Runs `call` on its own task and waits for it; a panic in the task is re-raised here.
pub(crate) async fn run<T, F>(call: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    match tokio::spawn(call).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Database(Box::new(e))),
    }
}

#[async_trait]
impl<S: GraphRead + ?Sized + 'static> GraphRead for Detached<S> {
    async fn entity(&self, id: &EntityId) -> Result<Option<Entity>> {
        let (s, id) = (self.0.clone(), id.clone());
        run(async move { s.entity(&id).await }).await
    }

    async fn entity_version(&self, id: &EntityId, version: &Version) -> Result<Option<Entity>> {
        let (s, id, version) = (self.0.clone(), id.clone(), version.clone());
        run(async move { s.entity_version(&id, &version).await }).await
    }

    async fn history(&self, id: &EntityId) -> Result<Vec<StoredEntity>> {
        let (s, id) = (self.0.clone(), id.clone());
        run(async move { s.history(&id).await }).await
    }

    async fn entities(&self, query: &EntityQuery) -> Result<Vec<Entity>> {
        let (s, query) = (self.0.clone(), query.clone());
        run(async move { s.entities(&query).await }).await
    }

    async fn relationship(&self, id: &RelationshipId) -> Result<Option<Relationship>> {
        let (s, id) = (self.0.clone(), id.clone());
        run(async move { s.relationship(&id).await }).await
    }

    async fn relationships(&self, query: &RelationshipQuery) -> Result<Vec<Relationship>> {
        let (s, query) = (self.0.clone(), query.clone());
        run(async move { s.relationships(&query).await }).await
    }

    async fn neighbours(
        &self,
        id: &EntityId,
        relationship_type: Option<&RelationshipType>,
        direction: Direction,
    ) -> Result<Vec<Neighbour>> {
        let (s, id, rt) = (self.0.clone(), id.clone(), relationship_type.cloned());
        run(async move { s.neighbours(&id, rt.as_ref(), direction).await }).await
    }

    async fn path(
        &self,
        from: &EntityId,
        to: &EntityId,
        max_depth: usize,
    ) -> Result<Option<Vec<EntityId>>> {
        let (s, from, to) = (self.0.clone(), from.clone(), to.clone());
        run(async move { s.path(&from, &to, max_depth).await }).await
    }

    async fn entities_as_of(
        &self,
        at: Timestamp,
        entity_types: Option<&[EntityType]>,
    ) -> Result<Vec<Entity>> {
        let (s, types) = (self.0.clone(), entity_types.map(<[EntityType]>::to_vec));
        run(async move { s.entities_as_of(at, types.as_deref()).await }).await
    }

    async fn stats(&self) -> Result<GraphStats> {
        let s = self.0.clone();
        run(async move { s.stats().await }).await
    }

    async fn state_digest(&self) -> Result<String> {
        let s = self.0.clone();
        run(async move { s.state_digest().await }).await
    }

    async fn latest_versions(&self) -> Result<Vec<(EntityId, Version)>> {
        let s = self.0.clone();
        run(async move { s.latest_versions().await }).await
    }
}

#[async_trait]
impl<S: crate::notify::CommitFeed + ?Sized + 'static> crate::notify::CommitFeed for Detached<S> {
    async fn subscribe_commits(&self) -> Result<crate::notify::CommitSubscription> {
        let s = self.0.clone();
        run(async move { s.subscribe_commits().await }).await
    }
}

#[async_trait]
impl<S: crate::grants::GuestGrants + ?Sized + 'static> crate::grants::GuestGrants for Detached<S> {
    async fn put_guest_grant(&self, grant: &crate::grants::GuestGrantRecord) -> Result<()> {
        let (s, g) = (self.0.clone(), grant.clone());
        run(async move { s.put_guest_grant(&g).await }).await
    }

    async fn guest_grants(&self) -> Result<Vec<crate::grants::GuestGrantRecord>> {
        let s = self.0.clone();
        run(async move { s.guest_grants().await }).await
    }

    async fn revoke_guest_grant(&self, subject: &str) -> Result<bool> {
        let (s, subject) = (self.0.clone(), subject.to_owned());
        run(async move { s.revoke_guest_grant(&subject).await }).await
    }

    async fn guest_grant(&self, subject: &str) -> Result<Option<crate::grants::GuestGrantRecord>> {
        let (s, subject) = (self.0.clone(), subject.to_owned());
        run(async move { s.guest_grant(&subject).await }).await
    }

    async fn guest_grant_by_token(
        &self,
        token: &str,
    ) -> Result<Option<crate::grants::GuestGrantRecord>> {
        let (s, token) = (self.0.clone(), token.to_owned());
        run(async move { s.guest_grant_by_token(&token).await }).await
    }
}

#[async_trait]
impl<S: crate::blob_upload::BlobUploads + ?Sized + 'static> crate::blob_upload::BlobUploads
    for Detached<S>
{
    async fn blob_state(&self, sha256: &str) -> Result<crate::blob_upload::BlobState> {
        let (s, sha) = (self.0.clone(), sha256.to_owned());
        run(async move { s.blob_state(&sha).await }).await
    }

    async fn begin_blob(
        &self,
        sha256: &str,
        total: u64,
        content_type: &str,
    ) -> Result<crate::blob_upload::BlobState> {
        let (s, sha, ct) = (self.0.clone(), sha256.to_owned(), content_type.to_owned());
        run(async move { s.begin_blob(&sha, total, &ct).await }).await
    }

    async fn append_blob(&self, sha256: &str, offset: u64, bytes: Vec<u8>) -> Result<u64> {
        let (s, sha) = (self.0.clone(), sha256.to_owned());
        run(async move { s.append_blob(&sha, offset, bytes).await }).await
    }

    async fn read_blob_bytes(&self, sha256: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (s, sha) = (self.0.clone(), sha256.to_owned());
        run(async move { s.read_blob_bytes(&sha, offset, len).await }).await
    }

    async fn complete_blob(&self, sha256: &str) -> Result<()> {
        let (s, sha) = (self.0.clone(), sha256.to_owned());
        run(async move { s.complete_blob(&sha).await }).await
    }

    async fn discard_blob_upload(&self, sha256: &str) -> Result<()> {
        let (s, sha) = (self.0.clone(), sha256.to_owned());
        run(async move { s.discard_blob_upload(&sha).await }).await
    }
}

#[async_trait]
impl<S: ServerStore + ?Sized + 'static> ServerStore for Detached<S> {
    async fn apply_push(&self, batch: PushBatch) -> Result<PushOutcome> {
        let s = self.0.clone();
        run(async move { s.apply_push(batch).await }).await
    }

    async fn changes(&self, query: &ChangeQuery) -> Result<ChangePage> {
        let (s, query) = (self.0.clone(), query.clone());
        run(async move { s.changes(&query).await }).await
    }

    async fn changes_with_latest(
        &self,
        query: &ChangeQuery,
        latest_after: Seq,
    ) -> Result<(ChangePage, LatestAfter)> {
        let (s, query) = (self.0.clone(), query.clone());
        run(async move { s.changes_with_latest(&query, latest_after).await }).await
    }

    async fn max_seq(&self) -> Result<Seq> {
        let s = self.0.clone();
        run(async move { s.max_seq().await }).await
    }

    async fn latest_entities(&self, ids: &[EntityId]) -> Result<Vec<Entity>> {
        let (s, ids) = (self.0.clone(), ids.to_vec());
        run(async move { s.latest_entities(&ids).await }).await
    }

    async fn conflicts(
        &self,
        statuses: Option<&[ConflictStatus]>,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>> {
        let (s, statuses) = (self.0.clone(), statuses.map(<[ConflictStatus]>::to_vec));
        run(async move { s.conflicts(statuses.as_deref(), limit).await }).await
    }

    async fn resolve_conflict(
        &self,
        id: i64,
        resolution: ManualResolution,
        user_id: &str,
    ) -> Result<(ConflictRecord, Entity)> {
        let (s, user_id) = (self.0.clone(), user_id.to_owned());
        run(async move { s.resolve_conflict(id, resolution, &user_id).await }).await
    }

    async fn dismiss_conflict(&self, id: i64) -> Result<ConflictRecord> {
        let s = self.0.clone();
        run(async move { s.dismiss_conflict(id).await }).await
    }

    async fn record_sync(&self, device_id: &str) -> Result<()> {
        // Held in memory with nothing awaited: it completes where it is, no task needed.
        if let Some(done) = self.0.record_sync_now(device_id) {
            return done;
        }
        let (s, device_id) = (self.0.clone(), device_id.to_owned());
        run(async move { s.record_sync(&device_id).await }).await
    }

    fn record_sync_now(&self, device_id: &str) -> Option<Result<()>> {
        self.0.record_sync_now(device_id)
    }

    async fn flush_sync_records(&self) -> Result<()> {
        let s = self.0.clone();
        run(async move { s.flush_sync_records().await }).await
    }

    async fn record_ack(&self, device_id: &str, watermark: Timestamp) -> Result<()> {
        let (s, device_id) = (self.0.clone(), device_id.to_owned());
        run(async move { s.record_ack(&device_id, watermark).await }).await
    }

    async fn client_status(&self, device_id: &str) -> Result<Option<ClientSyncStatus>> {
        let (s, device_id) = (self.0.clone(), device_id.to_owned());
        run(async move { s.client_status(&device_id).await }).await
    }

    async fn put_blob(
        &self,
        entity_id: &EntityId,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<BlobMeta> {
        let (s, entity_id, content_type, bytes) = (
            self.0.clone(),
            entity_id.clone(),
            content_type.to_owned(),
            bytes.to_vec(),
        );
        run(async move { s.put_blob(&entity_id, &content_type, &bytes).await }).await
    }

    async fn export_snapshot(&self) -> Result<StoreSnapshot> {
        let s = self.0.clone();
        run(async move { s.export_snapshot().await }).await
    }

    async fn restore_snapshot(&self, snapshot: StoreSnapshot) -> Result<RestoreReport> {
        let s = self.0.clone();
        run(async move { s.restore_snapshot(snapshot).await }).await
    }

    async fn restore_mark(&self) -> Result<Option<RestoreMark>> {
        let s = self.0.clone();
        run(async move { s.restore_mark().await }).await
    }

    async fn sync_metadata_list(&self, limit: usize) -> Result<Vec<SyncMetadata>> {
        let s = self.0.clone();
        run(async move { s.sync_metadata_list(limit).await }).await
    }

    async fn sync_metadata(&self, client_id: &str) -> Result<Option<SyncMetadata>> {
        let (s, client_id) = (self.0.clone(), client_id.to_owned());
        run(async move { s.sync_metadata(&client_id).await }).await
    }

    async fn upsert_sync_metadata(
        &self,
        client_id: &str,
        server_url: &str,
        auth_token: &str,
    ) -> Result<SyncMetadata> {
        let (s, c, u, t) = (
            self.0.clone(),
            client_id.to_owned(),
            server_url.to_owned(),
            auth_token.to_owned(),
        );
        run(async move { s.upsert_sync_metadata(&c, &u, &t).await }).await
    }

    async fn record_sync_event(
        &self,
        client_id: &str,
        event: SyncEvent,
    ) -> Result<Option<SyncMetadata>> {
        let (s, client_id) = (self.0.clone(), client_id.to_owned());
        run(async move { s.record_sync_event(&client_id, event).await }).await
    }

    async fn delete_sync_metadata(&self, client_id: &str) -> Result<bool> {
        let (s, client_id) = (self.0.clone(), client_id.to_owned());
        run(async move { s.delete_sync_metadata(&client_id).await }).await
    }

    async fn merkle_nodes(
        &self,
        level: u8,
        nodes: &[inbetweenies_conflict::NodeId],
    ) -> Result<Vec<crate::merkle::MerkleNode>> {
        let (s, nodes) = (self.0.clone(), nodes.to_vec());
        run(async move { s.merkle_nodes(level, &nodes).await }).await
    }

    async fn relationships_as_of(&self, at: Timestamp) -> Result<Vec<Relationship>> {
        let s = self.0.clone();
        run(async move { s.relationships_as_of(at).await }).await
    }

    async fn compact_history(&self, before: Timestamp) -> Result<crate::horizon::CompactionReport> {
        let s = self.0.clone();
        run(async move { s.compact_history(before).await }).await
    }

    async fn history_horizon(&self) -> Result<Option<crate::horizon::HistoryHorizon>> {
        let s = self.0.clone();
        run(async move { s.history_horizon().await }).await
    }

    async fn blob_meta(&self, sha256: &str) -> Result<Option<BlobMeta>> {
        let (s, sha256) = (self.0.clone(), sha256.to_owned());
        run(async move { s.blob_meta(&sha256).await }).await
    }

    async fn read_blob(&self, sha256: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (s, sha256) = (self.0.clone(), sha256.to_owned());
        run(async move { s.read_blob(&sha256, offset, len).await }).await
    }

    async fn blobs_of(&self, entity_id: &EntityId) -> Result<Vec<BlobMeta>> {
        let (s, entity_id) = (self.0.clone(), entity_id.clone());
        run(async move { s.blobs_of(&entity_id).await }).await
    }
}

#[async_trait]
impl<S: ClientStore + ?Sized + 'static> ClientStore for Detached<S> {
    async fn write_local(&self, edit: LocalEdit, user_id: &str) -> Result<Entity> {
        let (s, user_id) = (self.0.clone(), user_id.to_owned());
        run(async move { s.write_local(edit, &user_id).await }).await
    }

    async fn write_local_relationship(
        &self,
        from: &EntityId,
        to: &EntityId,
        relationship_type: RelationshipType,
        properties: JsonObject,
        user_id: &str,
    ) -> Result<Relationship> {
        let (s, from, to, user_id) = (self.0.clone(), from.clone(), to.clone(), user_id.to_owned());
        run(async move {
            s.write_local_relationship(&from, &to, relationship_type, properties, &user_id)
                .await
        })
        .await
    }

    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let s = self.0.clone();
        run(async move { s.pending(limit).await }).await
    }

    async fn pending_count(&self) -> Result<u64> {
        let s = self.0.clone();
        run(async move { s.pending_count().await }).await
    }

    async fn quarantine(&self, entries: &[(i64, String)]) -> Result<()> {
        let (s, entries) = (self.0.clone(), entries.to_vec());
        run(async move { s.quarantine(&entries).await }).await
    }

    async fn quarantined(&self) -> Result<Vec<QuarantinedEntry>> {
        let s = self.0.clone();
        run(async move { s.quarantined().await }).await
    }

    async fn release_quarantined(&self, positions: Option<&[i64]>) -> Result<u64> {
        let (s, positions) = (self.0.clone(), positions.map(<[i64]>::to_vec));
        run(async move { s.release_quarantined(positions.as_deref()).await }).await
    }

    async fn requeue(
        &self,
        entities: &[EntityId],
        relationships: &[RelationshipId],
    ) -> Result<u64> {
        let (s, entities, relationships) =
            (self.0.clone(), entities.to_vec(), relationships.to_vec());
        run(async move { s.requeue(&entities, &relationships).await }).await
    }

    async fn forget_deleted(&self, ids: &[EntityId]) -> Result<Vec<EntityId>> {
        let (s, ids) = (self.0.clone(), ids.to_vec());
        run(async move { s.forget_deleted(&ids).await }).await
    }

    async fn graph_generation(&self) -> Result<u64> {
        let s = self.0.clone();
        run(async move { s.graph_generation().await }).await
    }

    async fn stored_digest(&self) -> Result<Option<String>> {
        let s = self.0.clone();
        run(async move { s.stored_digest().await }).await
    }

    async fn close(&self) {
        let s = self.0.clone();
        let _ = run(async move {
            ClientStore::close(&*s).await;
            Ok(())
        })
        .await;
    }

    async fn mark_attempted(&self, positions: &[i64]) -> Result<()> {
        let (s, positions) = (self.0.clone(), positions.to_vec());
        run(async move { s.mark_attempted(&positions).await }).await
    }

    async fn pending_ids(&self) -> Result<Vec<EntityId>> {
        let s = self.0.clone();
        run(async move { s.pending_ids().await }).await
    }

    async fn apply_response(&self, acks: &AckSet, page: &PulledPage) -> Result<ApplyReport> {
        let (s, acks, page) = (self.0.clone(), acks.clone(), page.clone());
        run(async move { s.apply_response(&acks, &page).await }).await
    }

    async fn sync_state(&self) -> Result<SyncState> {
        let s = self.0.clone();
        run(async move { s.sync_state().await }).await
    }

    async fn reset_sync_state(&self) -> Result<()> {
        let s = self.0.clone();
        run(async move { s.reset_sync_state().await }).await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>> {
        let (s, key) = (self.0.clone(), key.to_owned());
        run(async move { s.setting(&key).await }).await
    }

    async fn settings_of(&self, keys: &[&str]) -> Result<Vec<Option<String>>> {
        let s = self.0.clone();
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        run(async move {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            s.settings_of(&keys).await
        })
        .await
    }

    async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let (s, key, value) = (self.0.clone(), key.to_owned(), value.to_owned());
        run(async move { s.set_setting(&key, &value).await }).await
    }
}
