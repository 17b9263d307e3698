//! The storage traits, in domain terms. Backends implement them; callers hold `Arc<dyn …>`.

use async_trait::async_trait;
use inbetweenies_proto::{
    Entity, EntityId, EntityType, Relationship, RelationshipId, RelationshipType, Timestamp,
    Version,
};

use crate::error::Result;
use crate::snapshot::{RestoreMark, RestoreReport, StoreSnapshot, SyncEvent, SyncMetadata};
use crate::types::*;

/// Reads of the graph, shared by server and client stores.
#[async_trait]
pub trait GraphRead: Send + Sync + std::fmt::Debug {
    /// The latest version of an entity (tombstones included), if the id exists.
    async fn entity(&self, id: &EntityId) -> Result<Option<Entity>>;

    /// One version of an entity, latest or not.
    async fn entity_version(&self, id: &EntityId, version: &Version) -> Result<Option<Entity>>;

    /// Every stored version of an id (winners, losers, tombstones, merges), in sequence order.
    async fn history(&self, id: &EntityId) -> Result<Vec<StoredEntity>>;

    /// Latest entities matching a filter, ordered by name then id.
    async fn entities(&self, query: &EntityQuery) -> Result<Vec<Entity>>;

    /// A relationship by id.
    async fn relationship(&self, id: &RelationshipId) -> Result<Option<Relationship>>;

    /// Relationships matching a filter, in sequence order.
    async fn relationships(&self, query: &RelationshipQuery) -> Result<Vec<Relationship>>;

    /// Entities one edge away (latest versions; tombstoned neighbours left out), optionally
    /// only over edges of one type.
    async fn neighbours(
        &self,
        id: &EntityId,
        relationship_type: Option<&RelationshipType>,
        direction: Direction,
    ) -> Result<Vec<Neighbour>>;

    /// The shortest path of entity ids from `from` to `to` over edges in either
    /// direction, at most `max_depth` edges long (breadth-first).
    async fn path(
        &self,
        from: &EntityId,
        to: &EntityId,
        max_depth: usize,
    ) -> Result<Option<Vec<EntityId>>>;

    /// The graph as it was at time `at`: per id, the last version that had become
    /// latest by then (by receipt time), tombstones left out.
    async fn entities_as_of(
        &self,
        at: Timestamp,
        entity_types: Option<&[EntityType]>,
    ) -> Result<Vec<Entity>>;

    /// Counts for statistics.
    async fn stats(&self) -> Result<GraphStats>;

    /// The convergence digest over the latest row of every id (see `inbetweenies_conflict`).
    async fn state_digest(&self) -> Result<String>;

    /// `(id, latest version)` of every id, in id byte order (for digests and Merkle trees).
    async fn latest_versions(&self) -> Result<Vec<(EntityId, Version)>>;
}

/// The server's store: applies pushes, serves the change feed, keeps conflicts and blobs.
#[async_trait]
pub trait ServerStore:
    GraphRead
    + crate::notify::CommitFeed
    + crate::blob_upload::BlobUploads
    + crate::grants::GuestGrants
    + crate::owners::DeviceOwners
    + crate::head::StoreHeadRead
{
    /// Applies a pushed batch in ONE transaction: entities before relationships, parents
    /// before children, each contested id decided by the conflict crate. On error nothing
    /// is applied.
    async fn apply_push(&self, batch: PushBatch) -> Result<PushOutcome>;

    /// One page of the change feed.
    async fn changes(&self, query: &ChangeQuery) -> Result<ChangePage>;

    /// [`changes`](Self::changes), and read in the same state of the store (the page's
    /// [`head`](ChangePage::head)) the id and latest version of every entity whose latest
    /// row is numbered after `latest_after`: what an index of every id's latest version
    /// kept at position `latest_after` needs to be the page's state exactly. With
    /// `latest_after` 0 that is every id; rows numbered after the page's head are never
    /// included.
    async fn changes_with_latest(
        &self,
        query: &ChangeQuery,
        latest_after: Seq,
    ) -> Result<(ChangePage, LatestAfter)>;

    /// The highest sequence number assigned so far (0 for an empty store).
    async fn max_seq(&self) -> Result<Seq>;

    /// The latest row (tombstones included) of each of these ids the store holds, in any
    /// order; ids it does not hold are left out. Backends answer in a few queries.
    async fn latest_entities(&self, ids: &[EntityId]) -> Result<Vec<Entity>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.entity(id).await?);
        }
        Ok(out)
    }

    /// Conflicts, newest first; only those with one of `statuses` when given.
    async fn conflicts(
        &self,
        statuses: Option<&[ConflictStatus]>,
        limit: usize,
    ) -> Result<Vec<ConflictRecord>>;

    /// Resolves a pending conflict by writing a new latest version whose parents are both sides.
    async fn resolve_conflict(
        &self,
        id: i64,
        resolution: ManualResolution,
        user_id: &str,
    ) -> Result<(ConflictRecord, Entity)>;

    /// Dismisses a pending conflict: the automatic outcome stands.
    async fn dismiss_conflict(&self, id: i64) -> Result<ConflictRecord>;

    /// Records that a device synced (called on every sync round trip). With
    /// `StoreOptions::sync_record_delay` the record is held and written behind
    /// (`crate::seen`).
    async fn record_sync(&self, device_id: &str) -> Result<()>;

    /// Records a sync as [`record_sync`](Self::record_sync) does, at once on the calling
    /// thread, when that needs nothing awaited (the record is held to be written behind
    /// and the holding buffer has room). `None` when nothing was recorded: the caller
    /// calls `record_sync`. A backend without held records keeps the default, `None`.
    fn record_sync_now(&self, device_id: &str) -> Option<Result<()>> {
        let _ = device_id;
        None
    }

    /// Writes the sync records held (`crate::seen`) now; nothing when none are held.
    /// A failed write keeps them for the next one.
    async fn flush_sync_records(&self) -> Result<()> {
        Ok(())
    }

    /// Records a device's confirmed watermark (five-step `sync_ack`).
    async fn record_ack(&self, device_id: &str, watermark: Timestamp) -> Result<()>;

    /// What the store knows about a device.
    async fn client_status(&self, device_id: &str) -> Result<Option<ClientSyncStatus>>;

    /// Stores blob bytes for an entity, content-addressed; storing the same bytes again is a no-op.
    async fn put_blob(
        &self,
        entity_id: &EntityId,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<BlobMeta>;

    /// Blob metadata by address.
    async fn blob_meta(&self, sha256: &str) -> Result<Option<BlobMeta>>;

    /// Reads `len` bytes of a blob from `offset` (fewer at the end).
    async fn read_blob(&self, sha256: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// Blobs of an entity.
    async fn blobs_of(&self, entity_id: &EntityId) -> Result<Vec<BlobMeta>>;

    /// The whole store read in ONE read snapshot (see [`crate::snapshot`]).
    async fn export_snapshot(&self) -> Result<StoreSnapshot>;

    /// Replaces the whole store with a snapshot in ONE write transaction under the write
    /// lock, numbering its rows after a new restore mark (see [`crate::snapshot`]). On
    /// error nothing changes.
    async fn restore_snapshot(&self, snapshot: StoreSnapshot) -> Result<RestoreReport>;

    /// The mark of the last restore, `None` when the store was never restored.
    async fn restore_mark(&self) -> Result<Option<RestoreMark>>;

    /// Sync metadata rows in id order, at most `limit`.
    async fn sync_metadata_list(&self, limit: usize) -> Result<Vec<SyncMetadata>>;

    /// One client's sync metadata.
    async fn sync_metadata(&self, client_id: &str) -> Result<Option<SyncMetadata>>;

    /// Creates a client's row, or updates `server_url` and `auth_token` of the existing one
    /// (same id).
    async fn upsert_sync_metadata(
        &self,
        client_id: &str,
        server_url: &str,
        auth_token: &str,
    ) -> Result<SyncMetadata>;

    /// Records a sync event of a client; `None` when the client has no row.
    async fn record_sync_event(
        &self,
        client_id: &str,
        event: SyncEvent,
    ) -> Result<Option<SyncMetadata>>;

    /// Deletes a client's row; whether there was one.
    async fn delete_sync_metadata(&self, client_id: &str) -> Result<bool>;

    /// Nodes of the Merkle tree over the latest rows ([`crate::merkle`]), all of `level`,
    /// read in one snapshot. The first call builds the tree; every write keeps it current.
    async fn merkle_nodes(
        &self,
        level: u8,
        nodes: &[inbetweenies_conflict::NodeId],
    ) -> Result<Vec<crate::merkle::MerkleNode>>;

    /// Relationships received at or before `at`, in sequence order (the edges of the
    /// graph as of `at`; callers drop those whose endpoints did not exist then).
    async fn relationships_as_of(&self, at: Timestamp) -> Result<Vec<Relationship>>;

    /// Prunes superseded history older than `before` in one write transaction (see
    /// [`crate::horizon`]); the horizon never moves back.
    async fn compact_history(&self, before: Timestamp) -> Result<crate::horizon::CompactionReport>;

    /// The horizon of the last compaction, `None` when history was never pruned.
    async fn history_horizon(&self) -> Result<Option<crate::horizon::HistoryHorizon>>;
}

/// A client's local mirror: local writes with an outbox, atomic pull-apply with the pull-guard.
#[async_trait]
pub trait ClientStore: GraphRead {
    /// Writes a new version for a local edit and its outbox entry in one transaction.
    /// The version is made by `user_id` with the local clock; `parent_versions` names the
    /// previous latest.
    async fn write_local(&self, edit: LocalEdit, user_id: &str) -> Result<Entity>;

    /// Stores a local relationship (endpoints at their latest versions) and its outbox entry.
    async fn write_local_relationship(
        &self,
        from: &EntityId,
        to: &EntityId,
        relationship_type: RelationshipType,
        properties: inbetweenies_proto::JsonObject,
        user_id: &str,
    ) -> Result<Relationship>;

    /// Pending outbox entries in order, at most `limit` (quarantined entries left out).
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>>;

    /// Number of pending outbox entries (quarantined entries left out).
    async fn pending_count(&self) -> Result<u64>;

    /// Sets outbox entries aside that the server refused, each with its reason: they
    /// stay in the outbox (and their ids keep the pull-guard) but are not pending
    /// until released. A later local edit of the same id releases them.
    async fn quarantine(&self, entries: &[(i64, String)]) -> Result<()>;

    /// The quarantined outbox entries, in outbox order.
    async fn quarantined(&self) -> Result<Vec<QuarantinedEntry>>;

    /// Makes quarantined entries pending again (all of them when `positions` is None);
    /// returns how many were released.
    async fn release_quarantined(&self, positions: Option<&[i64]>) -> Result<u64>;

    /// Adds an outbox entry for the latest local version of each entity id and for each
    /// relationship id, as stored (same version): what a server that lost them needs to
    /// get them back. Ids that do not exist locally are skipped. Returns the number of
    /// entries added.
    async fn requeue(&self, entities: &[EntityId], relationships: &[RelationshipId])
        -> Result<u64>;

    /// Removes every stored version of these entity ids (and the relationships that
    /// touch them) from the mirror: ids whose latest version is a tombstone the server
    /// never held. Ids with an outbox entry are left alone. Returns the ids removed.
    async fn forget_deleted(&self, ids: &[EntityId]) -> Result<Vec<EntityId>>;

    /// How many committed transactions changed entity rows (a local write,
    /// [`ClientStore::apply_response`], [`ClientStore::forget_deleted`]), in any process:
    /// a cache of latest versions that counts the calls it made knows, when this moves
    /// by more, that something else wrote.
    async fn graph_generation(&self) -> Result<u64>;

    /// The state digest when the store can answer it without reading the latest rows
    /// (SQLite remembers the last digest computed, across processes, until a latest row
    /// changes); `None` when it would have to compute it.
    async fn stored_digest(&self) -> Result<Option<String>> {
        Ok(None)
    }

    /// Counts one more failed send for these outbox positions.
    async fn mark_attempted(&self, positions: &[i64]) -> Result<()>;

    /// Closes the store once the calls in progress are done; later calls fail. On SQLite
    /// the last connection to close writes the write-ahead log into the database file and
    /// syncs it to disk: until then the commits of a process survive the process ending
    /// but not a power loss (`synchronous = NORMAL`), so a program that exits after a
    /// local write (a command-line tool) closes the store first. Nothing to do by default.
    async fn close(&self) {}

    /// Ids with a pending outbox entry.
    async fn pending_ids(&self) -> Result<Vec<EntityId>>;

    /// Applies a server response in ONE transaction: first drops the sent outbox entries
    /// whose id was acknowledged, then applies the pulled changes (entities before
    /// relationships, parents before children) without overwriting any id that still has a
    /// pending entry (the incoming version is stored aside as non-latest), then stores the
    /// cursor, and the watermark when the page completes the pull.
    async fn apply_response(&self, acks: &AckSet, page: &PulledPage) -> Result<ApplyReport>;

    /// The persisted sync position.
    async fn sync_state(&self) -> Result<SyncState>;

    /// Forgets the watermark and cursor (the next pull is a full one).
    async fn reset_sync_state(&self) -> Result<()>;

    /// A persisted setting.
    async fn setting(&self, key: &str) -> Result<Option<String>>;

    /// Several persisted settings, in the order of `keys`, read together (one statement
    /// on SQLite, so they come from one snapshot).
    async fn settings_of(&self, keys: &[&str]) -> Result<Vec<Option<String>>> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            out.push(self.setting(key).await?);
        }
        Ok(out)
    }

    /// Persists a setting.
    async fn set_setting(&self, key: &str, value: &str) -> Result<()>;
}
