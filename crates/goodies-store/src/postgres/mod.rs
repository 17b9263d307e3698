//! The PostgreSQL server store (feature `postgres`): one database shared by any number of server processes.
//!
//! [`PgStore`] implements [`GraphRead`](crate::GraphRead) and
//! [`ServerStore`](crate::ServerStore) with the behaviour set out in
//! `SEMANTICS.md`. Open it with [`PgStore::connect`] (or through
//! `open_server_store` with a `postgres://` URL); the embedded schema
//! migrations are applied on connect, under a session advisory lock so that
//! several processes starting at once migrate exactly once.
//!
//! # Sequence numbers and the late-commit trap
//!
//! Every inserted row (entity version or relationship) gets the next number
//! of one sequence space, and the change feed pages by it (`seq > cursor`)
//! or by receipt time (`received_at > since`). With several writers a plain
//! read of that kind is wrong: transaction A takes sequence N, transaction B
//! takes N+1 and commits, a reader pages past N+1, then A commits — and the
//! reader never sees row N. This store rules that out by making commits
//! happen in sequence order:
//!
//! - Every write transaction (a push, a manual resolution) first takes
//!   `pg_advisory_xact_lock(WRITE_LOCK)`, exclusive and held until COMMIT or
//!   ROLLBACK. Only then does it read the counters in the one-row
//!   `goodies_meta` table and hand out sequence numbers (last + 1, …) and
//!   receipt times (`max(database clock, last + 1 µs)`, then + 1 µs per row,
//!   so `received_at` grows strictly with `seq`). Since the lock is the
//!   database's, this holds across every pool and every server process.
//! - A change-feed read runs in a READ COMMITTED transaction that first
//!   takes `pg_advisory_xact_lock_shared(WRITE_LOCK)` and then runs ONE
//!   statement that reads the page and the database clock. While the shared
//!   lock is held no writer sits between taking its numbers and committing,
//!   so the rows the statement sees are a prefix of the sequence order, and
//!   any row committed later gets a larger sequence number and a later
//!   receipt time than anything the page saw. `server_time` is that clock
//!   minus 1 µs, so a row committed later is received strictly after it.
//!
//! # Isolation is set, never inherited
//!
//! All of the above needs READ COMMITTED: a statement's snapshot is taken
//! when the statement starts, after the lock it waited for was granted. Under
//! REPEATABLE READ or SERIALIZABLE the snapshot is the transaction's first
//! statement's — the lock request itself — so a reader that waited for a
//! writer would still not see its rows (and answer a `server_time` after
//! them), and a writer would read stale counters. PostgreSQL starts each
//! transaction at the session's `default_transaction_isolation`, which a
//! database or role can change (`ALTER DATABASE … SET …`), so this store
//! never relies on it:
//!
//! - every transaction it opens starts with
//!   `BEGIN ISOLATION LEVEL READ COMMITTED` ([`BEGIN_READ_COMMITTED`]; the
//!   one-snapshot digest read asks for REPEATABLE READ the same way). The
//!   level travels with the `BEGIN` itself: it costs no extra round trip,
//!   cannot be undone by anything a pooled connection did before, and holds
//!   behind a transaction-pooling proxy, where session settings do not;
//! - every pooled connection also sets its session default to READ COMMITTED
//!   when it connects, so a single statement run outside a transaction does
//!   not run as SERIALIZABLE (which would take predicate locks and could
//!   fail with serialization errors) when the database defaults to it. A
//!   single statement sees one snapshot at any level, so nothing depends on
//!   this for correctness; the `BEGIN` is what the guarantees rest on.
//!
//! Readers wait only for writers (running, or queued before them: PostgreSQL
//! grants lock requests in order), and writers wait only for readers in the
//! middle of their one page read. A transaction that rolls back leaves no
//! trace: the counters live in a table row, so the next writer reuses its
//! numbers and the sequence stays gap-free.
//!
//! # Blobs
//!
//! Blob bytes are stored in the database (`bytea`, uncompressed out-of-line
//! storage so a ranged read fetches only the chunks it needs), so every
//! server process sees every blob. A blob is addressed by the lowercase hex
//! SHA-256 of its bytes; metadata rows tie it to entities.
//!
//! # Other notes
//!
//! - Times are stored as microseconds since the Unix epoch; ids and versions
//!   use the `"C"` collation, so ordering by id (digests,
//!   [`latest_versions`](crate::GraphRead::latest_versions)) is byte order.
//! - Pushes are written with multi-row `INSERT … SELECT FROM UNNEST(…)`
//!   statements (one per table and 5,000 rows); the lookups before planning
//!   are batched the same way, and the decisions themselves are the
//!   backend-neutral [`crate::logic`].
//! - The state digest is cached in memory keyed by the store's highest
//!   sequence number, read in the same snapshot as the rows it covers, so an
//!   unchanged store costs one indexed read and every process sees the
//!   others' writes.
//! - No sqlx type leaves this module: errors become [`StoreError`] with the
//!   sqlx error as their source.

mod backup;
mod blob_upload;
mod grants;
mod head;
mod history;
mod merkle;
mod notify;
mod owners;
mod read;
mod rows;
mod write;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, Connection as _, PgPool, Postgres, Transaction};

use crate::error::{Result, StoreError};
use crate::types::{Seq, StoreOptions};

/// The advisory lock key every write transaction takes exclusively and every
/// change-feed read takes shared (`b"goodiesW"`).
const WRITE_LOCK: i64 = 0x676f_6f64_6965_7357;

/// The advisory lock key held while migrating (`b"goodiesM"`).
const MIGRATION_LOCK: i64 = 0x676f_6f64_6965_734d;

/// How every transaction of this store starts (see "Isolation is set, never inherited").
const BEGIN_READ_COMMITTED: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// How the one-snapshot digest read starts.
const BEGIN_SNAPSHOT_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// Run on every pooled connection as it connects: statements outside a
/// transaction run at READ COMMITTED whatever the database's default is.
const SESSION_READ_COMMITTED: &str =
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// A pooled connection idle at least this long is pinged before it is used (test
/// `connections_dropped_while_idle_are_replaced_not_handed_out`).
const PING_IDLE_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Default pool size when the options name none.
const DEFAULT_MAX_CONNECTIONS: u32 = 10;

static MIGRATOR: Migrator = sqlx::migrate!("src/postgres/migrations");

/// A server store on PostgreSQL. Cheap to share behind an `Arc`; several
/// instances (in one process or many) may use the same database at once.
#[derive(Debug)]
pub struct PgStore {
    pool: PgPool,
    opts: StoreOptions,
    /// The last computed state digest and the highest sequence number it covers.
    digest: tokio::sync::Mutex<Option<(Seq, String)>>,
    /// The LISTEN task forwarding commit notices, started by the first subscriber.
    listening: tokio::sync::Mutex<Option<notify::Listening>>,
    /// Sync records written behind (`crate::seen`).
    seen: crate::seen::SeenBuffer,
    /// Head reads shared by the requests waiting for one (`head`).
    head_reads: crate::batch::Batched<crate::head::StoreHead>,
    /// The connection head reads use, outside the pool (`head::HeadConnection`).
    head_connection: head::HeadConnection,
}

/// Wraps a sqlx error as a database error (sqlx stays the source, never the type).
fn db(e: sqlx::Error) -> StoreError {
    StoreError::database(e)
}

impl PgStore {
    /// Connects to `url` (`postgres://…`), applies the embedded migrations and
    /// returns the store.
    pub async fn connect(url: &str, opts: StoreOptions) -> Result<PgStore> {
        let connect_opts: PgConnectOptions = url
            .parse()
            .map_err(|e: sqlx::Error| StoreError::Connect(Box::new(e)))?;
        migrate(&connect_opts).await?;
        let head_connection = head::HeadConnection::new(connect_opts.clone());
        let pool = PgPoolOptions::new()
            .max_connections(
                opts.max_connections
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                    .max(1),
            )
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query(SESSION_READ_COMMITTED).execute(conn).await?;
                    Ok(())
                })
            })
            // sqlx pings every connection as it goes back to the pool (a broken one is
            // closed there) and, by default, again as it is taken out: a round trip to
            // the database before every statement. Only a connection that sat idle
            // long enough to have been dropped meanwhile is pinged before use.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect_opts)
            .await
            .map_err(|e| StoreError::Connect(Box::new(e)))?;
        tracing::debug!(target: "goodies_store::postgres", "connected and migrated");
        Ok(PgStore {
            pool,
            opts,
            digest: tokio::sync::Mutex::new(None),
            listening: tokio::sync::Mutex::new(None),
            seen: Default::default(),
            head_reads: Default::default(),
            head_connection,
        })
    }

    /// Closes the pool (waits for connections in use to come back) and the connection
    /// head reads use.
    pub async fn close(&self) {
        self.pool.close().await;
        self.head_connection.close().await;
    }

    /// Starts a READ COMMITTED transaction, whatever the database's default level.
    async fn begin(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin_with(BEGIN_READ_COMMITTED).await.map_err(db)
    }

    /// Starts a read-only transaction that sees one snapshot throughout.
    async fn begin_snapshot_read(&self) -> Result<Transaction<'static, Postgres>> {
        self.pool.begin_with(BEGIN_SNAPSHOT_READ).await.map_err(db)
    }

    /// Starts a write transaction: takes the exclusive write lock, then reads
    /// the counters (only valid while the lock is held).
    async fn begin_write(&self) -> Result<WriteTxn> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let (last_seq, last_received, now): (i64, i64, i64) =
            sqlx::query_as("SELECT last_seq, last_received_at, goodies_now_us() FROM goodies_meta")
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        let base_received = now.max(last_received.saturating_add(1));
        Ok(WriteTxn {
            tx,
            last_seq,
            base_received,
            used: 0,
            summary: crate::notify::ChangeSummary::default(),
        })
    }
}

/// A write transaction holding the exclusive write lock, handing out
/// sequence numbers and receipt times in order.
struct WriteTxn {
    tx: Transaction<'static, Postgres>,
    /// The highest sequence number committed before this transaction.
    last_seq: i64,
    /// The receipt time of this transaction's first row (µs); also its "now".
    base_received: i64,
    /// Rows numbered so far.
    used: i64,
    /// What the transaction wrote, for its commit notice.
    summary: crate::notify::ChangeSummary,
}

impl WriteTxn {
    /// Takes `n` consecutive `(seq, received_at)` pairs.
    fn take(&mut self, n: usize) -> Vec<(i64, i64)> {
        let start = self.used;
        self.used += n as i64;
        (start..self.used)
            .map(|i| (self.last_seq + 1 + i, self.base_received + i))
            .collect()
    }

    /// The transaction's receipt time, in µs.
    fn now_us(&self) -> i64 {
        self.base_received
    }

    /// Stores the counters, runs the test hook and commits.
    async fn commit(mut self, opts: &StoreOptions) -> Result<()> {
        merkle::apply_dirty(&mut self.tx).await?;
        if self.used > 0 {
            sqlx::query("UPDATE goodies_meta SET last_seq = $1, last_received_at = $2")
                .bind(self.last_seq + self.used)
                .bind(self.base_received + self.used - 1)
                .execute(&mut *self.tx)
                .await
                .map_err(db)?;
            let notice = self.summary.notice(rows::seq(self.last_seq + self.used)?);
            notify::notify_in(&mut self.tx, notice).await?;
        }
        opts.run_before_commit().await?;
        self.tx.commit().await.map_err(db)
    }
}

/// Applies the embedded migrations on a connection of its own, holding a
/// session advisory lock so that concurrent connects migrate one at a time.
async fn migrate(connect_opts: &PgConnectOptions) -> Result<()> {
    let mut conn = connect_opts
        .connect()
        .await
        .map_err(|e| StoreError::Connect(Box::new(e)))?;
    let migration = async {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut conn)
            .await
            .map_err(|e| StoreError::Migration(Box::new(e)))?;
        // `run_direct` rather than `run`: the latter's `Acquire<'a>` bound makes
        // the future non-`Send` (see the SQLite backend's `migrate`).
        let run = MIGRATOR
            .run_direct(&mut conn)
            .await
            .map_err(|e| StoreError::Migration(Box::new(e)));
        let unlock = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut conn)
            .await
            .map_err(|e| StoreError::Migration(Box::new(e)));
        run.and(unlock.map(|_| ()))
    }
    .await;
    // Closing the connection also releases the lock if unlocking failed.
    let _ = conn.close().await;
    migration
}
