//! The SQLite backend: one [`SqliteStore`] type serves as the server's store and as a client's mirror.
//!
//! # Sequence numbers, watermarks and late commits
//!
//! Every inserted row (entity version or relationship) takes the next number
//! of one sequence and a receipt time that grows strictly with it. Writes are
//! serialised twice: in the process by a write guard on a
//! `tokio::sync::RwLock` shared by every store opened on the same file, and
//! in the database by `BEGIN IMMEDIATE`. The sequence number is assigned
//! inside that transaction (from the `store_meta` row), so transactions
//! commit in sequence order and a reader never sees sequence N+1 before N:
//! a cursor (`seq > N`) cannot pass a row that commits later.
//!
//! [`ServerStore::changes`](crate::ServerStore::changes) holds the read
//! guard while it reads the page and the clock, so no writer is between
//! taking its numbers and committing; `server_time` is that clock minus 1 µs,
//! and any row committed afterwards is received strictly after it.
//!
//! # Ids and indexes
//!
//! Entity and relationship ids are indexed through 8-byte integer keys
//! (their 64-bit FNV-1a hash, see `rows::key_of`) rather than their text:
//! ids are random, so a large push rewrites nearly every page of an index
//! keyed by them, and integer keys keep those indexes a fraction of the
//! size. Every lookup matches the key and the id. The store, under its write
//! lock, keeps `(id, version)` and relationship ids unique and one latest row
//! per id; the schema (`migrations/sqlite`) lists each index and its users.
//!
//! Pragmas: WAL journal, `synchronous = NORMAL`, foreign keys on, a 5 s busy
//! timeout, 16 KiB pages for new databases, a 32 MiB page cache. `sqlite::memory:` uses one connection (its database lives as long
//! as the store) and keeps blob bytes in a temporary directory.

mod backup;
mod blob_upload;
mod blobs;
#[cfg(test)]
mod cache_tests;
mod client;
mod feed;
mod grants;
mod group;
mod head;
mod history;
mod merkle;
mod notify;
mod owners;
mod push;
mod rows;
mod server;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use inbetweenies_proto::{
    Entity, EntityId, EntityType, Relationship, RelationshipId, RelationshipType, Timestamp,
    Version,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{RwLock, RwLockWriteGuard};

use crate::api::GraphRead;
use crate::error::{Result, StoreError};
use crate::logic::{FastMap, StoredLatest};
use crate::types::*;
use rows::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Page size of new databases, in bytes.
const PAGE_SIZE: u32 = 16_384;

/// State shared by every store opened on one database file in this process.
#[derive(Debug)]
struct Shared {
    /// Write transactions hold the write guard; `changes()` holds a read guard.
    lock: RwLock<()>,
    /// Commit notices of writes through any store on this file (`notify`).
    commits: tokio::sync::broadcast::Sender<crate::notify::CommitNotice>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            lock: RwLock::new(()),
            commits: notify::channel(),
        }
    }
}

fn shared_for(path: Option<&Path>) -> Arc<Shared> {
    static REGISTRY: OnceLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = OnceLock::new();
    let Some(path) = path else {
        return Arc::new(Shared::default());
    };
    let registry = REGISTRY.get_or_init(Default::default);
    let mut map = registry
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(existing) = map.get(path).and_then(Weak::upgrade) {
        return existing;
    }
    let fresh = Arc::new(Shared::default());
    map.insert(path.to_path_buf(), Arc::downgrade(&fresh));
    fresh
}

/// A store on one SQLite database: implements [`GraphRead`],
/// [`ServerStore`](crate::ServerStore) and [`ClientStore`](crate::ClientStore).
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    opts: StoreOptions,
    shared: Arc<Shared>,
    /// `(max_seq, write generation of the file, digest)` of the last digest computed.
    digest_cache: Mutex<Option<(i64, u64, String)>>,
    blobs: blobs::BlobDir,
    /// Pushes and sync records waiting to be written in the next group commit (`group`).
    queue: group::Queue,
    /// Sync records written behind (`crate::seen`).
    seen: crate::seen::SeenBuffer,
    /// The head read on the caller's thread (`head`).
    direct_head: head::DirectHead,
    /// Head reads shared by the callers that ask together (`head`).
    head_reads: crate::batch::Batched<crate::head::StoreHead>,
}

/// The system clock plus `offset`.
fn clock_at(offset: time::Duration) -> Timestamp {
    let offset = offset.whole_microseconds();
    let offset = i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
    Timestamp::now().saturating_add_micros(offset)
}

/// Where a SQLite URL points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SqliteTarget {
    /// `sqlite::memory:`.
    Memory,
    /// A database file.
    File(PathBuf),
}

impl SqliteTarget {
    /// Reads `sqlite::memory:`, `sqlite://PATH`, `sqlite:PATH` (query parameters ignored) or a bare path.
    pub(crate) fn parse(url_or_path: &str) -> SqliteTarget {
        let s = url_or_path.trim();
        let rest = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
            .map(|r| r.split_once('?').map_or(r, |(p, _)| p));
        match rest {
            Some(":memory:") | Some("") => SqliteTarget::Memory,
            Some(path) => SqliteTarget::File(PathBuf::from(path)),
            None => SqliteTarget::File(PathBuf::from(s)),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite:` URL or bare path and migrates it.
    pub async fn connect(url_or_path: &str, opts: StoreOptions) -> Result<SqliteStore> {
        Self::open(SqliteTarget::parse(url_or_path), opts).await
    }

    /// Opens a fresh in-memory database.
    pub async fn memory(opts: StoreOptions) -> Result<SqliteStore> {
        Self::open(SqliteTarget::Memory, opts).await
    }

    /// Closes the pool once the connections in use come back. The last connection to a
    /// file closes by checkpointing the write-ahead log into the database and syncing it,
    /// which makes this process's commits durable after a power loss (with
    /// `synchronous = NORMAL` a commit alone is durable after a crash of the process, not
    /// of the machine). Later calls fail.
    pub async fn close(&self) {
        // The log is copied into the database file, which is synced, by an explicit
        // checkpoint here rather than left to the last connection's close, which is not
        // known to have finished when the caller's process goes on to exit. `TRUNCATE`
        // empties the log; with other processes reading, it waits at most briefly and
        // copies what it can.
        if let Ok(mut conn) = self.pool.acquire().await {
            for pragma in [
                "PRAGMA busy_timeout = 200",
                "PRAGMA wal_checkpoint(TRUNCATE)",
            ] {
                if let Err(e) = sqlx::query(pragma).execute(&mut *conn).await {
                    tracing::debug!(error = %e, pragma, "closing the store");
                }
            }
        }
        self.pool.close().await;
    }

    pub(crate) async fn open(target: SqliteTarget, opts: StoreOptions) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::new()
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // For new databases (an existing one keeps its page size). Larger pages make
            // a large push cheaper: fewer page splits, shallower indexes, fewer WAL frames.
            .page_size(PAGE_SIZE)
            .pragma(
                "cache_size",
                format!("-{}", opts.cache_kib.unwrap_or(32_768).max(64)),
            )
            .pragma("temp_store", "memory")
            // Rows come back from the connection's worker thread in batches this large
            // (fewer thread hand-offs on big pages).
            .row_buffer_size(1024);
        let (pool, path) = match &target {
            SqliteTarget::Memory => {
                let options = SqliteConnectOptions::from_str("sqlite::memory:")
                    .map_err(|e| StoreError::Connect(Box::new(e)))?
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5))
                    .page_size(PAGE_SIZE);
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(options)
                    .await
                    .map_err(|e| StoreError::Connect(Box::new(e)))?;
                (pool, None)
            }
            SqliteTarget::File(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent).await?;
                }
                let options = base
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal);
                let pool = SqlitePoolOptions::new()
                    .max_connections(opts.max_connections.unwrap_or(4).max(1))
                    // A connection to a local file cannot have dropped: no ping (a round
                    // trip to the connection's worker thread) before every statement.
                    .test_before_acquire(false)
                    .connect_with(options)
                    .await
                    .map_err(|e| StoreError::Connect(Box::new(e)))?;
                let canonical = tokio::fs::canonicalize(path).await?;
                (pool, Some(canonical))
            }
        };
        migrate(&pool).await?;
        let blobs = blobs::BlobDir::new(opts.blob_dir.clone(), path.as_deref())?;
        Ok(SqliteStore {
            direct_head: head::DirectHead::new(path.as_deref()),
            head_reads: Default::default(),
            shared: shared_for(path.as_deref()),
            pool,
            opts,
            digest_cache: Mutex::new(None),
            blobs,
            queue: group::Queue::default(),
            seen: Default::default(),
        })
    }

    /// This store's clock: the system clock plus [`StoreOptions::clock_offset`].
    fn clock(&self) -> Timestamp {
        clock_at(self.opts.clock_offset)
    }

    /// Starts a write transaction: takes the write guard, then `BEGIN IMMEDIATE`.
    async fn writer(&self) -> Result<Writer<'_>> {
        let guard = self.shared.lock.write().await;
        self.begin_write(guard).await
    }

    /// Starts a write transaction under a write guard already held: `BEGIN IMMEDIATE`.
    async fn begin_write<'a>(&'a self, guard: RwLockWriteGuard<'a, ()>) -> Result<Writer<'a>> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::database)?;
        let row = sqlx::query("SELECT last_seq, last_received_at FROM store_meta WHERE one = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::database)?;
        let last_seq: i64 = row.try_get(0).map_err(StoreError::database)?;
        let last_received: i64 = row.try_get(1).map_err(StoreError::database)?;
        let now = self.clock();
        Ok(Writer {
            tx,
            _guard: guard,
            store: self,
            now,
            first_seq: last_seq,
            last_seq,
            last_received,
            graph_changed: false,
            summary: crate::notify::ChangeSummary::default(),
        })
    }
}

/// Applies the embedded migrations on one pooled connection.
///
/// `Migrator::run` is generic over `Acquire<'a>`, and the compiler cannot prove
/// such a future `Send` (a higher-ranked lifetime bound), which would make
/// every future that opens a store non-`Send`. Acquiring the connection here
/// and calling `run_direct` keeps the open futures spawnable.
async fn migrate(pool: &SqlitePool) -> Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| StoreError::Migration(Box::new(e)))?;
    MIGRATOR
        .run_direct(&mut *conn)
        .await
        .map_err(|e| StoreError::Migration(Box::new(e)))
}

/// One write transaction with the write guard held; hands out sequence numbers.
struct Writer<'a> {
    tx: sqlx::Transaction<'static, Sqlite>,
    _guard: RwLockWriteGuard<'a, ()>,
    store: &'a SqliteStore,
    /// The clock when the transaction started (the receipt time).
    now: Timestamp,
    /// The highest sequence number before this transaction.
    first_seq: i64,
    last_seq: i64,
    last_received: i64,
    graph_changed: bool,
    /// What the transaction wrote, for its commit notice.
    summary: crate::notify::ChangeSummary,
}

impl Writer<'_> {
    /// The next `(seq, received_at µs)`.
    fn next(&mut self) -> (i64, i64) {
        self.last_seq += 1;
        self.last_received = self.now.unix_micros().max(self.last_received + 1);
        (self.last_seq, self.last_received)
    }

    /// Marks this transaction as one that changes entity rows (counted in
    /// `store_meta.graph_generation` when it commits).
    fn graph_changed(&mut self) {
        self.graph_changed = true;
    }

    fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// Stores the sequence state, runs the test hook, commits.
    async fn commit(mut self) -> Result<()> {
        merkle::apply_dirty(&mut self.tx).await?;
        sqlx::query(
            "UPDATE store_meta SET last_seq = ?, last_received_at = ?, write_generation = write_generation + 1, graph_generation = graph_generation + ? WHERE one = 1",
        )
        .bind(self.last_seq)
        .bind(self.last_received)
        .bind(i64::from(self.graph_changed))
        .execute(&mut *self.tx)
        .await
        .map_err(StoreError::database)?;
        self.store.opts.run_before_commit().await?;
        self.tx.commit().await.map_err(StoreError::database)?;
        if self.last_seq > self.first_seq {
            // Still under the write guard: notices go out in commit order.
            let notice = self.summary.notice(self.last_seq as Seq);
            notify::publish(&self.store.shared.commits, notice);
        }
        Ok(())
    }
}

// ---- shared queries (on any connection, so write transactions can use them) ----

/// The latest row of an id.
async fn latest_row(conn: &mut SqliteConnection, id: &str) -> Result<Option<StoredEntity>> {
    let row = sqlx::query(&format!(
        "SELECT {ENTITY_COLS} FROM entities WHERE id_key = ? AND id = ? AND is_latest = 1"
    ))
    .bind(key_of(id))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(StoreError::database)?;
    row.as_ref().map(stored_entity).transpose()
}

/// The latest rows of many ids.
async fn latest_rows(
    conn: &mut SqliteConnection,
    ids: &[&str],
) -> Result<HashMap<EntityId, StoredEntity>> {
    let mut out = HashMap::new();
    let sql = format!(
        "SELECT {ENTITY_COLS_E} FROM json_each(?) w \
         JOIN entities e ON e.id_key = w.value ->> 0 AND e.id = w.value ->> 1 \
         WHERE e.is_latest = 1"
    );
    for chunk in ids.chunks(JSON_LIST_CHUNK) {
        let rows = sqlx::query(&sql)
            .bind(json_keyed(chunk.iter().map(|id| [*id]))?)
            .fetch_all(&mut *conn)
            .await
            .map_err(StoreError::database)?;
        for row in rows {
            let s = stored_entity(&row)?;
            out.insert(s.entity.id.clone(), s);
        }
    }
    Ok(out)
}

/// Of the latest rows of many ids, what planning needs: version, creation time, tombstone flag.
///
/// The answer is one JSON array of `[position in ids, version, created_at, is_deleted]`
/// (one row back instead of one per id, no id text).
async fn latest_summaries(
    conn: &mut SqliteConnection,
    ids: &[&str],
) -> Result<FastMap<EntityId, StoredLatest>> {
    let mut out = FastMap::with_capacity(ids.len().min(1024));
    for chunk in ids.chunks(JSON_LIST_CHUNK) {
        let found: String = sqlx::query_scalar(
            "SELECT json_group_array(json_array(w.key, e.version, e.created_at, e.is_deleted)) \
             FROM json_each(?) w \
             JOIN entities e ON e.id_key = w.value ->> 0 AND e.id = w.value ->> 1 \
             WHERE e.is_latest = 1",
        )
        .bind(json_keyed(chunk.iter().map(|id| [*id]))?)
        .fetch_one(&mut *conn)
        .await
        .map_err(StoreError::database)?;
        let found: Vec<(usize, String, i64, i64)> = serde_json::from_str(&found)
            .map_err(|e| StoreError::Corrupt(format!("latest row summaries: {e}")))?;
        for (i, version, created_at, deleted) in found {
            let id = chunk
                .get(i)
                .ok_or_else(|| StoreError::Corrupt(format!("lookup position {i} out of range")))?;
            out.insert(
                EntityId::new(*id),
                StoredLatest {
                    version: Version::new(version),
                    created_at: ts(created_at)?,
                    deleted: deleted != 0,
                    entity: None,
                },
            );
        }
    }
    Ok(out)
}

/// `[id, version]` of every latest row in id (byte) order, as ONE JSON array
/// built by SQLite: one row back instead of one per entity.
const LATEST_VERSIONS_JSON: &str =
    "SELECT json_group_array(json_array(id, version) ORDER BY id) FROM entities WHERE is_latest = 1";

/// One `[id, version]` of [`LATEST_VERSIONS_JSON`], borrowed where it has no escapes.
#[derive(serde::Deserialize)]
struct IdVersion<'a>(#[serde(borrow)] Cow<'a, str>, #[serde(borrow)] Cow<'a, str>);

fn parse_latest_versions(json: &str) -> Result<Vec<IdVersion<'_>>> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(format!("latest versions: {e}")))
}

/// Which of these `(id, version)` pairs are stored.
async fn existing_pairs(
    conn: &mut SqliteConnection,
    pairs: &[(&str, &str)],
) -> Result<HashSet<(String, String)>> {
    let mut out = HashSet::new();
    for chunk in pairs.chunks(JSON_LIST_CHUNK) {
        let rows = sqlx::query(
            "SELECT e.id, e.version FROM json_each(?) w \
             JOIN entities e ON e.id_key = w.value ->> 0 AND e.id = w.value ->> 1 \
             AND e.version = w.value ->> 2",
        )
        .bind(json_keyed(chunk.iter().map(|&(id, v)| [id, v]))?)
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::database)?;
        for row in rows {
            out.insert((
                row.try_get::<String, _>(0).map_err(StoreError::database)?,
                row.try_get::<String, _>(1).map_err(StoreError::database)?,
            ));
        }
    }
    Ok(out)
}

/// Every stored version of an id, in sequence order.
async fn all_versions(conn: &mut SqliteConnection, id: &str) -> Result<Vec<StoredEntity>> {
    sqlx::query(&format!(
        "SELECT {ENTITY_COLS} FROM entities WHERE id_key = ? AND id = ? ORDER BY seq"
    ))
    .bind(key_of(id))
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(StoreError::database)?
    .iter()
    .map(stored_entity)
    .collect()
}

/// Makes an already-stored version the latest of its id.
async fn promote(conn: &mut SqliteConnection, id: &str, version: &str) -> Result<()> {
    sqlx::query("UPDATE entities SET is_latest = 0 WHERE id_key = ? AND id = ? AND is_latest = 1")
        .bind(key_of(id))
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::database)?;
    sqlx::query("UPDATE entities SET is_latest = 1 WHERE id_key = ? AND id = ? AND version = ?")
        .bind(key_of(id))
        .bind(id)
        .bind(version)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::database)?;
    Ok(())
}

/// Clears the latest flag of these ids (before their new latest rows are inserted).
async fn clear_latest(conn: &mut SqliteConnection, ids: &[&str]) -> Result<()> {
    for chunk in ids.chunks(JSON_LIST_CHUNK) {
        sqlx::query(
            "UPDATE entities SET is_latest = 0 WHERE seq IN (SELECT e.seq FROM json_each(?) w \
             JOIN entities e ON e.id_key = w.value ->> 0 AND e.id = w.value ->> 1 \
             WHERE e.is_latest = 1)",
        )
        .bind(json_keyed(chunk.iter().map(|id| [*id]))?)
        .execute(&mut *conn)
        .await
        .map_err(StoreError::database)?;
    }
    Ok(())
}

fn type_list<'a>(qb: &mut QueryBuilder<'a, Sqlite>, column: &str, types: &'a [EntityType]) {
    qb.push(format!(" AND {column} IN "));
    push_in_list(qb, types.iter().map(EntityType::as_str));
}

fn limit_offset(qb: &mut QueryBuilder<'_, Sqlite>, limit: Option<usize>, offset: usize) {
    qb.push(" LIMIT ");
    qb.push_bind(limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)));
    qb.push(" OFFSET ");
    qb.push_bind(i64::try_from(offset).unwrap_or(i64::MAX));
}

#[async_trait]
impl GraphRead for SqliteStore {
    async fn entity(&self, id: &EntityId) -> Result<Option<Entity>> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::database)?;
        Ok(latest_row(&mut conn, id.as_str()).await?.map(|s| s.entity))
    }

    async fn entity_version(&self, id: &EntityId, version: &Version) -> Result<Option<Entity>> {
        let row = sqlx::query(&format!(
            "SELECT {ENTITY_COLS} FROM entities WHERE id_key = ? AND id = ? AND version = ?"
        ))
        .bind(key_of(id.as_str()))
        .bind(id.as_str())
        .bind(version.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database)?;
        row.as_ref().map(entity).transpose()
    }

    async fn history(&self, id: &EntityId) -> Result<Vec<StoredEntity>> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::database)?;
        all_versions(&mut conn, id.as_str()).await
    }

    async fn entities(&self, query: &EntityQuery) -> Result<Vec<Entity>> {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
            "SELECT {ENTITY_COLS} FROM entities WHERE is_latest = 1"
        ));
        if !query.include_deleted {
            qb.push(" AND is_deleted = 0");
        }
        if let Some(types) = &query.entity_types {
            type_list(&mut qb, "entity_type", types);
        }
        if let Some(needle) = &query.name_contains {
            // SQLite's lower() folds ASCII only; both sides are folded the same way.
            qb.push(" AND instr(lower(name), lower(");
            qb.push_bind(needle.as_str());
            qb.push(")) > 0");
        }
        qb.push(" ORDER BY name, id");
        limit_offset(&mut qb, query.limit, query.offset);
        qb.build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::database)?
            .iter()
            .map(entity)
            .collect()
    }

    async fn relationship(&self, id: &RelationshipId) -> Result<Option<Relationship>> {
        let row = sqlx::query(&format!(
            "SELECT {REL_COLS} FROM relationships WHERE id_key = ? AND id = ?"
        ))
        .bind(key_of(id.as_str()))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database)?;
        Ok(row
            .as_ref()
            .map(stored_relationship)
            .transpose()?
            .map(|r| r.relationship))
    }

    async fn relationships(&self, query: &RelationshipQuery) -> Result<Vec<Relationship>> {
        let mut qb: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new(format!("SELECT {REL_COLS} FROM relationships WHERE 1 = 1"));
        if let Some(from) = &query.from_entity_id {
            qb.push(" AND from_key = ").push_bind(key_of(from.as_str()));
            qb.push(" AND from_entity_id = ").push_bind(from.as_str());
        }
        if let Some(to) = &query.to_entity_id {
            qb.push(" AND to_key = ").push_bind(key_of(to.as_str()));
            qb.push(" AND to_entity_id = ").push_bind(to.as_str());
        }
        if let Some(t) = &query.relationship_type {
            qb.push(" AND relationship_type = ").push_bind(t.as_str());
        }
        qb.push(" ORDER BY seq");
        limit_offset(&mut qb, query.limit, query.offset);
        qb.build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::database)?
            .iter()
            .map(|r| stored_relationship(r).map(|s| s.relationship))
            .collect()
    }

    async fn neighbours(
        &self,
        id: &EntityId,
        relationship_type: Option<&RelationshipType>,
        direction: Direction,
    ) -> Result<Vec<Neighbour>> {
        // (this end's key and id columns, the other end's)
        const OUT: [&str; 4] = ["from_key", "from_entity_id", "to_key", "to_entity_id"];
        const IN: [&str; 4] = ["to_key", "to_entity_id", "from_key", "from_entity_id"];
        let sides: &[[&str; 4]] = match direction {
            Direction::Outgoing => &[OUT],
            Direction::Incoming => &[IN],
            Direction::Both => &[OUT, IN],
        };
        let mut found: Vec<(u64, Neighbour)> = Vec::new();
        for [this_key, this_end, other_key, other_end] in sides {
            let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
                "SELECT {REL_COLS_R}, {ENTITY_COLS_E} FROM relationships r \
                 JOIN entities e ON e.id_key = r.{other_key} AND e.id = r.{other_end} \
                 AND e.is_latest = 1 WHERE e.is_deleted = 0 AND r.{this_key} = "
            ));
            qb.push_bind(key_of(id.as_str()));
            qb.push(format!(" AND r.{this_end} = "));
            qb.push_bind(id.as_str());
            if let Some(t) = relationship_type {
                qb.push(" AND r.relationship_type = ").push_bind(t.as_str());
            }
            for row in qb
                .build()
                .fetch_all(&self.pool)
                .await
                .map_err(StoreError::database)?
            {
                let rel = stored_relationship_at(&row, 0)?;
                let ent = stored_entity_at(&row, REL_NCOLS)?;
                found.push((
                    rel.seq,
                    Neighbour {
                        relationship: rel.relationship,
                        entity: ent.entity,
                    },
                ));
            }
        }
        found.sort_by_key(|(seq, _)| *seq);
        Ok(found.into_iter().map(|(_, n)| n).collect())
    }

    async fn path(
        &self,
        from: &EntityId,
        to: &EntityId,
        max_depth: usize,
    ) -> Result<Option<Vec<EntityId>>> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::database)?;
        if latest_row(&mut conn, from.as_str()).await?.is_none()
            || latest_row(&mut conn, to.as_str()).await?.is_none()
        {
            return Ok(None);
        }
        if from == to {
            return Ok(Some(vec![from.clone()]));
        }
        let mut came_from: HashMap<String, String> = HashMap::new();
        came_from.insert(from.to_string(), String::new());
        let mut frontier = vec![from.to_string()];
        for _ in 0..max_depth {
            let mut next = Vec::new();
            for chunk in frontier.chunks(JSON_LIST_CHUNK) {
                let list = json_keyed(chunk.iter().map(|id| [id.as_str()]))?;
                for row in sqlx::query(
                    "SELECT r.from_entity_id, r.to_entity_id FROM json_each(?) w JOIN relationships r \
                     ON r.from_key = w.value ->> 0 AND r.from_entity_id = w.value ->> 1 \
                     UNION SELECT r.to_entity_id, r.from_entity_id FROM json_each(?) w JOIN relationships r \
                     ON r.to_key = w.value ->> 0 AND r.to_entity_id = w.value ->> 1 \
                     ORDER BY 1, 2",
                )
                .bind(&list)
                .bind(&list)
                .fetch_all(&mut *conn)
                    .await
                    .map_err(StoreError::database)?
                {
                    let here: String = row.try_get(0).map_err(StoreError::database)?;
                    let there: String = row.try_get(1).map_err(StoreError::database)?;
                    if came_from.contains_key(&there) {
                        continue;
                    }
                    came_from.insert(there.clone(), here);
                    if there == to.as_str() {
                        let mut path = vec![EntityId::new(there)];
                        let mut cur = path[0].to_string();
                        while let Some(prev) = came_from.get(&cur).filter(|p| !p.is_empty()) {
                            path.push(EntityId::new(prev.clone()));
                            cur = prev.clone();
                        }
                        path.reverse();
                        return Ok(Some(path));
                    }
                    next.push(there);
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(None)
    }

    async fn entities_as_of(
        &self,
        at: Timestamp,
        entity_types: Option<&[EntityType]>,
    ) -> Result<Vec<Entity>> {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(format!(
            "SELECT {ENTITY_COLS} FROM entities WHERE seq IN (SELECT max(seq) FROM entities \
             WHERE became_latest = 1 AND received_at <= "
        ));
        qb.push_bind(at.unix_micros());
        qb.push(" GROUP BY id) AND is_deleted = 0");
        if let Some(types) = entity_types {
            type_list(&mut qb, "entity_type", types);
        }
        qb.push(" ORDER BY id");
        qb.build()
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::database)?
            .iter()
            .map(entity)
            .collect()
    }

    async fn stats(&self) -> Result<GraphStats> {
        let mut conn = self.pool.acquire().await.map_err(StoreError::database)?;
        let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql);
        let entities =
            count("SELECT count(*) FROM entities WHERE is_latest = 1 AND is_deleted = 0")
                .fetch_one(&mut *conn)
                .await
                .map_err(StoreError::database)?;
        let entity_versions = count("SELECT count(*) FROM entities")
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::database)?;
        let relationships = count("SELECT count(*) FROM relationships")
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::database)?;
        let pending_conflicts = count("SELECT count(*) FROM conflicts WHERE status = 'pending'")
            .fetch_one(&mut *conn)
            .await
            .map_err(StoreError::database)?;
        let by_type = sqlx::query(
            "SELECT entity_type, count(*) FROM entities WHERE is_latest = 1 AND is_deleted = 0 \
             GROUP BY entity_type ORDER BY entity_type",
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(StoreError::database)?;
        let rel_by_type =
            sqlx::query("SELECT relationship_type, count(*) FROM relationships GROUP BY relationship_type ORDER BY relationship_type")
                .fetch_all(&mut *conn)
                .await
                .map_err(StoreError::database)?;
        let pairs = |rows: Vec<sqlx::sqlite::SqliteRow>| -> Result<Vec<(String, u64)>> {
            rows.iter()
                .map(|r| {
                    Ok((
                        r.try_get::<String, _>(0).map_err(StoreError::database)?,
                        r.try_get::<i64, _>(1).map_err(StoreError::database)? as u64,
                    ))
                })
                .collect()
        };
        Ok(GraphStats {
            entities: entities as u64,
            entity_versions: entity_versions as u64,
            relationships: relationships as u64,
            entities_by_type: pairs(by_type)?
                .into_iter()
                .map(|(t, n)| (EntityType::parse(&t), n))
                .collect(),
            relationships_by_type: pairs(rel_by_type)?
                .into_iter()
                .map(|(t, n)| (RelationshipType::parse(&t), n))
                .collect(),
            pending_conflicts: pending_conflicts as u64,
        })
    }

    async fn state_digest(&self) -> Result<String> {
        self.cached_digest().await
    }

    async fn latest_versions(&self) -> Result<Vec<(EntityId, Version)>> {
        let json: String = sqlx::query_scalar(LATEST_VERSIONS_JSON)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::database)?;
        Ok(parse_latest_versions(&json)?
            .into_iter()
            .map(|IdVersion(id, v)| (EntityId::new(id), Version::new(v)))
            .collect())
    }
}
