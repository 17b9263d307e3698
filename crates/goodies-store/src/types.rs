//! Domain types the store traits take and return.

use std::sync::Arc;

use inbetweenies_conflict::ResolverConfig;
use inbetweenies_proto::{
    ChangeType, ConflictInfo, Entity, EntityId, EntityType, JsonObject, Relationship,
    RelationshipId, RelationshipType, SyncChange, Timestamp, Version,
};

/// A server sequence number: every inserted row (entity version or relationship) gets the next one.
pub type Seq = u64;

/// An entity version as stored, with its bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEntity {
    /// The version.
    pub entity: Entity,
    /// Sequence number assigned when the row was inserted.
    pub seq: Seq,
    /// When this store received the row (its clock, not the editor's).
    pub received_at: Timestamp,
    /// Whether this row is the latest of its id.
    pub latest: bool,
    /// Whether the row became latest when it was inserted (false for a conflict's loser
    /// and for versions a client recorded aside).
    pub became_latest: bool,
}

/// A relationship as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRelationship {
    /// The relationship.
    pub relationship: Relationship,
    /// Sequence number assigned when the row was inserted.
    pub seq: Seq,
    /// When this store received the row.
    pub received_at: Timestamp,
}

/// One row of a change feed page.
#[derive(Clone, Debug, PartialEq)]
pub enum ChangeRecord {
    /// The latest version of an entity.
    Entity(StoredEntity),
    /// A relationship.
    Relationship(StoredRelationship),
}

impl ChangeRecord {
    /// The row's sequence number.
    pub fn seq(&self) -> Seq {
        match self {
            ChangeRecord::Entity(e) => e.seq,
            ChangeRecord::Relationship(r) => r.seq,
        }
    }
}

/// What a change-feed read asks for (server side).
///
/// Entities: the *latest* row of each id whose latest row matches, ordered by
/// sequence. Relationships: every relationship row that matches. Both share
/// one sequence space and are merged in sequence order.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangeQuery {
    /// Only rows with a sequence number strictly greater than this (a cursor).
    pub after_seq: Option<Seq>,
    /// Only rows received strictly after this time (a watermark).
    pub since: Option<Timestamp>,
    /// Only entities of these types (relationships are not filtered by type).
    pub entity_types: Option<Vec<EntityType>>,
    /// Only rows whose `user_id` is one of these.
    pub modified_by: Option<Vec<String>>,
    /// Include entity rows.
    pub include_entities: bool,
    /// Include relationship rows.
    pub include_relationships: bool,
    /// At most this many rows (at least 1).
    pub limit: usize,
}

impl Default for ChangeQuery {
    fn default() -> Self {
        ChangeQuery {
            after_seq: None,
            since: None,
            entity_types: None,
            modified_by: None,
            include_entities: true,
            include_relationships: true,
            limit: 500,
        }
    }
}

/// One page of the change feed.
#[derive(Clone, Debug, PartialEq)]
pub struct ChangePage {
    /// Rows in sequence order.
    pub records: Vec<ChangeRecord>,
    /// The cursor for the next page (the last row's sequence) when the page is full;
    /// `None` when the feed is drained.
    pub next_after_seq: Option<Seq>,
    /// A watermark safe to use as the next `since`: every row committed later is
    /// received strictly after it, and no row that could still commit is at or before it.
    pub server_time: Timestamp,
    /// The head of the state the page was read from, read with it: the page holds
    /// exactly the rows of the state at `head.seq` that the query selects (up to its
    /// limit), and `head.now` is `server_time`.
    pub head: crate::head::StoreHead,
}

/// What a digest kept in memory at one position needs to reach the state a change page
/// was read from ([`ServerStore::changes_with_latest`](crate::ServerStore::changes_with_latest)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LatestAfter {
    /// `(id, latest version)` of every entity whose latest row in the page's state is
    /// numbered after the position asked, in any order; empty when the page's head is at
    /// that position.
    pub rows: Vec<(EntityId, Version)>,
}

/// A pushed batch: one request's changes, applied in one transaction.
#[derive(Clone, Debug, PartialEq)]
pub struct PushBatch {
    /// The sending device.
    pub device_id: String,
    /// The sending user (used for relationships without a `user_id`).
    pub user_id: String,
    /// The changes, in request order.
    pub changes: Vec<SyncChange>,
}

/// What happened to one pushed entity change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntityOutcome {
    /// New id, or a fast-forward of the latest: stored as latest.
    Applied,
    /// The `(id, version)` was already stored: nothing written.
    AlreadyPresent,
    /// A conflict the pushed version won: stored as latest.
    Won,
    /// A conflict the pushed version lost: stored as a non-latest version.
    Lost,
    /// A conflict resolved by a three-way merge: the pushed version is stored
    /// non-latest and a merge version (named here) is the new latest.
    Merged(Version),
    /// A conflict queued for manual review: the pushed version is stored non-latest.
    Queued,
    /// A delete of an id this store never held: nothing stored.
    DeletedUnknown,
    /// A delete of an id whose latest is already a tombstone: nothing stored.
    AlreadyDeleted,
    /// Not acknowledged (e.g. a delete without an entity): the client must keep it.
    NotAcked(String),
}

impl EntityOutcome {
    /// Whether the id is named in `applied` (retrying cannot improve its state).
    pub fn is_acked(&self) -> bool {
        !matches!(self, EntityOutcome::NotAcked(_))
    }
}

/// What happened to one pushed relationship.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelationshipOutcome {
    /// Stored.
    Applied,
    /// The id was already stored: nothing written.
    AlreadyPresent,
    /// An endpoint `(id, version)` does not exist: not acknowledged.
    MissingEndpoint,
}

/// Everything a pushed batch did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PushOutcome {
    /// Acknowledged entity ids, in request order, without duplicates.
    pub applied: Vec<EntityId>,
    /// Acknowledged relationship ids, in request order, without duplicates.
    pub applied_relationships: Vec<RelationshipId>,
    /// Conflicts decided, in the wire's form.
    pub conflicts: Vec<ConflictInfo>,
    /// Per entity change, in request order: its id (if any) and outcome.
    pub entity_outcomes: Vec<(Option<EntityId>, EntityOutcome)>,
    /// Per relationship, in request order.
    pub relationship_outcomes: Vec<(RelationshipId, RelationshipOutcome)>,
    /// Entity rows inserted (winners, losers and merge versions).
    pub entities_written: u64,
    /// Relationship rows inserted.
    pub relationships_written: u64,
}

/// Status of a conflict record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConflictStatus {
    /// Decided automatically; kept as an audit trail.
    Auto,
    /// Waiting for manual review.
    Pending,
    /// Resolved by a person.
    Resolved,
    /// Dismissed by a person (the automatic outcome stands).
    Dismissed,
}

impl ConflictStatus {
    /// The stored string.
    pub fn as_str(&self) -> &'static str {
        match self {
            ConflictStatus::Auto => "auto",
            ConflictStatus::Pending => "pending",
            ConflictStatus::Resolved => "resolved",
            ConflictStatus::Dismissed => "dismissed",
        }
    }

    /// Reads a stored string.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => ConflictStatus::Auto,
            "pending" => ConflictStatus::Pending,
            "resolved" => ConflictStatus::Resolved,
            "dismissed" => ConflictStatus::Dismissed,
            _ => return None,
        })
    }
}

/// A conflict the store recorded.
#[derive(Clone, Debug, PartialEq)]
pub struct ConflictRecord {
    /// Store-assigned id.
    pub id: i64,
    /// The contested entity.
    pub entity_id: EntityId,
    /// The store's latest version before the push.
    pub server_version: Version,
    /// The pushed version.
    pub client_version: Version,
    /// The version that became latest (for a pending one: the server's, unchanged).
    pub resolved_version: Version,
    /// Machine-readable reason (`newer_on_server`, …, `manual`).
    pub reason: String,
    /// The wire's `resolution_strategy` text.
    pub strategy: String,
    /// Status.
    pub status: ConflictStatus,
    /// The device that pushed.
    pub device_id: String,
    /// When recorded.
    pub created_at: Timestamp,
    /// When resolved or dismissed.
    pub resolved_at: Option<Timestamp>,
}

/// How a person resolves a queued conflict.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ManualResolution {
    /// Keep the store's version (written again as a new version on top of both).
    KeepServer,
    /// Keep the pushed version (written again as a new version on top of both).
    KeepClient,
    /// Write this content and name as the resolution.
    Custom {
        /// New name.
        name: String,
        /// New content.
        content: JsonObject,
    },
}

/// Which way to follow edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Edges from the entity.
    Outgoing,
    /// Edges to the entity.
    Incoming,
    /// Both.
    Both,
}

/// A filter over latest entities.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EntityQuery {
    /// Only these types.
    pub entity_types: Option<Vec<EntityType>>,
    /// Case-insensitive substring of the name.
    pub name_contains: Option<String>,
    /// Include tombstones.
    pub include_deleted: bool,
    /// At most this many (None: all).
    pub limit: Option<usize>,
    /// Skip this many (ordered by name, then id).
    pub offset: usize,
}

/// A filter over relationships.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RelationshipQuery {
    /// From this entity.
    pub from_entity_id: Option<EntityId>,
    /// To this entity.
    pub to_entity_id: Option<EntityId>,
    /// Of this type.
    pub relationship_type: Option<RelationshipType>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Skip this many (ordered by sequence).
    pub offset: usize,
}

/// A neighbour reached over one edge.
#[derive(Clone, Debug, PartialEq)]
pub struct Neighbour {
    /// The edge.
    pub relationship: Relationship,
    /// The entity at its other end (latest version).
    pub entity: Entity,
}

/// Counts for the statistics endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Live (non-tombstoned) latest entities.
    pub entities: u64,
    /// Entity version rows, all of them.
    pub entity_versions: u64,
    /// Relationships.
    pub relationships: u64,
    /// Live entities per type.
    pub entities_by_type: Vec<(EntityType, u64)>,
    /// Relationships per type.
    pub relationships_by_type: Vec<(RelationshipType, u64)>,
    /// Conflicts waiting for review.
    pub pending_conflicts: u64,
}

/// Content-addressed blob metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    /// Lowercase hex SHA-256 of the bytes (the blob's address).
    pub sha256: String,
    /// The entity the blob belongs to.
    pub entity_id: EntityId,
    /// MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size: u64,
    /// When stored.
    pub created_at: Timestamp,
}

/// What a server store knows about one client device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSyncStatus {
    /// The device.
    pub device_id: String,
    /// Last time the device synced.
    pub last_seen: Option<Timestamp>,
    /// The last watermark the device confirmed (five-step `sync_ack`).
    pub last_ack: Option<Timestamp>,
    /// Number of syncs seen.
    pub sync_count: u64,
}

/// A local edit on a client, before it becomes a version.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum LocalEdit {
    /// Create a new entity (a fresh id when `id` is None).
    Create {
        /// Chosen id, or None for a fresh UUID.
        id: Option<EntityId>,
        /// Type.
        entity_type: EntityType,
        /// Name.
        name: String,
        /// Content.
        content: JsonObject,
        /// Source.
        source_type: inbetweenies_proto::SourceType,
    },
    /// New version of an existing entity; `None` fields keep their value.
    Update {
        /// The entity.
        id: EntityId,
        /// New name.
        name: Option<String>,
        /// New content (replaces the whole object).
        content: Option<JsonObject>,
    },
    /// Shallow-merge keys into the content (e.g. a device's state).
    MergeContent {
        /// The entity.
        id: EntityId,
        /// Keys to set (a null value removes the key).
        patch: JsonObject,
    },
    /// Tombstone the entity.
    Delete {
        /// The entity.
        id: EntityId,
    },
}

/// One pending local change in a client's outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxEntry {
    /// Outbox position (increasing).
    pub position: i64,
    /// The change to push: an entity change (with no relationships) or a
    /// relationship-only change (entity null, one relationship).
    pub change: SyncChange,
    /// Times this entry was sent without being acknowledged.
    pub attempts: u32,
}

impl OutboxEntry {
    /// The entity id and version this entry pushes, if it is an entity change.
    pub fn entity_key(&self) -> Option<(&EntityId, &Version)> {
        self.change.entity.as_ref().map(|e| (&e.id, &e.version))
    }

    /// The relationship id this entry pushes, if it is a relationship change.
    pub fn relationship_id(&self) -> Option<&RelationshipId> {
        self.change.relationships.first().map(|r| &r.id)
    }

    /// The change type.
    pub fn change_type(&self) -> ChangeType {
        self.change.change_type
    }
}

/// An outbox entry the server refused as invalid or too large: kept, not sent again
/// until an edit of its id or an explicit retry releases it.
#[derive(Clone, Debug, PartialEq)]
pub struct QuarantinedEntry {
    /// The entry.
    pub entry: OutboxEntry,
    /// Why the server refused it (its status and message).
    pub reason: String,
    /// When it was quarantined.
    pub at: Timestamp,
}

/// Which outbox entries the server acknowledged.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AckSet {
    /// Outbox positions that were sent in the acknowledged request.
    pub sent_positions: Vec<i64>,
    /// Entity ids named in `applied`.
    pub entities: Vec<EntityId>,
    /// Relationship ids named in `applied_relationships`.
    pub relationships: Vec<RelationshipId>,
    /// From the response's `conflicts`: each entity id with its `resolved_version`.
    /// After the acknowledged entries are dropped, an id left without a pending
    /// entry whose resolved version is stored locally is made latest again (so a
    /// push that lost converges without a full pull).
    pub resolved_versions: Vec<(EntityId, Version)>,
}

/// One pulled page, to apply atomically on a client.
#[derive(Clone, Debug, PartialEq)]
pub struct PulledPage {
    /// Server→client changes, as received.
    pub changes: Vec<SyncChange>,
    /// The cursor to resume from (None: the pull is complete).
    pub cursor: Option<String>,
    /// The response's `server_time`; becomes the watermark when the pull completes.
    pub server_time: Timestamp,
}

/// What applying a pulled page did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entity versions that became latest locally.
    pub entities_applied: Vec<EntityId>,
    /// Entity versions kept aside because the id has a pending local change.
    pub entities_guarded: Vec<EntityId>,
    /// Versions already present (nothing written).
    pub unchanged: u64,
    /// Relationships stored.
    pub relationships_applied: Vec<RelationshipId>,
}

/// A client's persisted sync position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// `server_time` of the last completed pull: the next `filters.since`.
    pub watermark: Option<Timestamp>,
    /// Cursor of a pull in progress (resume with it).
    pub cursor: Option<String>,
}

/// Options for opening a store.
#[derive(Clone, Debug, Default)]
pub struct StoreOptions {
    /// How the server resolves conflicts (strategies per entity type, skew allowance).
    pub resolver: Arc<ResolverConfig>,
    /// Maximum connections in the pool (None: backend default). A PostgreSQL store
    /// opens one more, outside the pool, for its head reads.
    pub max_connections: Option<u32>,
    /// Directory for blob bytes (SQLite; default: beside the database file).
    pub blob_dir: Option<std::path::PathBuf>,
    /// SQLite page cache of each pooled connection, in KiB (None: 32 MiB). A client
    /// mirror needs far less than a server; each connection keeps its own.
    pub cache_kib: Option<u32>,
    /// Added to the system clock wherever the store reads it (edit times of local
    /// versions, receipt times, `server_time`): a device whose clock is off. Zero by
    /// default. SQLite only; PostgreSQL reads the database server's clock.
    pub clock_offset: time::Duration,
    /// Server stores: sync records (`ServerStore::record_sync`) are held in memory and
    /// written behind, for every device at once (`crate::seen`); the holder calls
    /// `ServerStore::flush_sync_records` at least this often. `None` (the default):
    /// each is written at once.
    pub sync_record_delay: Option<std::time::Duration>,
    /// Test hook: awaited by every write transaction after its inserts and
    /// before its COMMIT (while it holds its sequence numbers and write lock).
    /// An `Err` rolls the transaction back and fails the write.
    #[doc(hidden)]
    pub before_commit: Option<BeforeCommitHook>,
}

impl StoreOptions {
    /// Runs the [`StoreOptions::before_commit`] hook, if any (backends call
    /// this just before COMMIT).
    #[doc(hidden)]
    pub async fn run_before_commit(&self) -> crate::error::Result<()> {
        match &self.before_commit {
            Some(hook) => (hook.0)()
                .await
                .map_err(|msg| crate::error::StoreError::Database(Box::new(InjectedFailure(msg)))),
            None => Ok(()),
        }
    }
}

/// The future a [`BeforeCommitHook`] returns: `Err(message)` fails the write.
#[doc(hidden)]
pub type HookFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// A test hook run by write transactions before COMMIT (see [`StoreOptions::before_commit`]).
#[doc(hidden)]
#[derive(Clone)]
pub struct BeforeCommitHook(pub Arc<dyn Fn() -> HookFuture + Send + Sync>);

impl std::fmt::Debug for BeforeCommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeCommitHook")
    }
}

/// The error a failing [`BeforeCommitHook`] produces (as the source of `StoreError::Database`).
#[derive(Debug, thiserror::Error)]
#[error("injected failure: {0}")]
struct InjectedFailure(String);
