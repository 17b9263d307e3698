//! The store's head in one statement (`crate::head`), read at once on the calling thread
//! when it can be.
//!
//! Every sqlx statement on SQLite is handed to its connection's worker thread and woken
//! back: two thread switches, and on a busy server most of the cost of a caught-up
//! client's sync. The head is one row of `store_meta`, so a file database also reads it
//! here, on a read-only connection of its own with one cached statement. It is a real
//! read of the committed file, so a commit by any connection, in this process or in
//! another one, is seen by the next read exactly as the pool's read would see it: there
//! is no cache to keep in step.
//!
//! Both reads hold the in-process read guard while they read the row and the clock (see
//! the watermark in `StoreHead::now`). The direct read never waits: it takes the guard
//! only if it is free at once (no write holds it or waits for it), the connection's busy
//! timeout is zero, and whenever it cannot answer at once (guard taken, busy, any error,
//! or an in-memory database, which no second connection can open) `head` reads through
//! the pool as before, on a task of its own.
//!
//! `head` is shared by the callers that ask together (`crate::batch`): one read answers
//! every caller that asked before it started, so under many clients one read answers
//! many syncs and none is answered from a read that started before it asked.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};

use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::head::{head_from, StoreHead, StoreHeadRead};

pub(super) const HEAD_SQL: &str =
    "SELECT last_seq, restored_seq, restored_at, horizon_at, horizon_seq \
                        FROM store_meta WHERE one = 1";

/// Idle direct connections kept, at most (a few serve a multi-threaded runtime without
/// opening one per read).
const IDLE: usize = 4;

/// The meta row's columns, as `head_from` takes them.
pub(super) type MetaRow = (i64, i64, i64, i64, i64);

/// Direct, synchronous reads of the head of one database file (see the module doc).
#[derive(Debug, Default)]
pub(super) struct DirectHead {
    /// The database file; `None` for an in-memory database.
    path: Option<PathBuf>,
    idle: Mutex<Vec<Connection>>,
    /// Heads read here, and reads that fell back to the pool.
    direct: AtomicU64,
    fell_back: AtomicU64,
    /// Reads through the pool that ran to their end (read by tests only).
    pooled: std::sync::Arc<AtomicU64>,
}

impl DirectHead {
    pub(super) fn new(path: Option<&Path>) -> DirectHead {
        DirectHead {
            path: path.map(Path::to_path_buf),
            ..DirectHead::default()
        }
    }

    fn open(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Never sleep on the caller's thread: busy means "read through the pool".
        conn.busy_timeout(std::time::Duration::ZERO)?;
        // One row of one page is all it reads.
        conn.pragma_update(None, "cache_size", -64)?;
        Ok(conn)
    }

    /// The meta row, read now on this thread; `None` when it cannot be read at once.
    pub(super) fn read(&self) -> Option<MetaRow> {
        let path = self.path.as_deref()?;
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match idle {
            Some(c) => c,
            None => match Self::open(path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot open a direct head connection");
                    return None;
                }
            },
        };
        let row = conn.prepare_cached(HEAD_SQL).and_then(|mut st| {
            st.query_row([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
        });
        match row {
            Ok(row) => {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < IDLE {
                    idle.push(conn);
                }
                Some(row)
            }
            Err(e) => {
                // Busy, or anything else: the pool's read decides (and reports it).
                tracing::debug!(error = %e, "direct head read failed; reading through the pool");
                None
            }
        }
    }

    /// `(direct, fell_back)`: heads read here, and reads handed to the pool.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.direct.load(Ordering::Relaxed),
            self.fell_back.load(Ordering::Relaxed),
        )
    }
}

impl SqliteStore {
    /// The head through the pool (the worker thread of a pooled connection), under the
    /// read guard, waiting for it; owns what it uses, so it can run on a task of its own.
    fn pooled_head(&self) -> impl std::future::Future<Output = Result<StoreHead>> + Send + 'static {
        let read = pooled_head(
            self.pool.clone(),
            self.shared.clone(),
            self.opts.clock_offset,
        );
        let pooled = self.direct_head.pooled.clone();
        async move {
            let head = read.await;
            pooled.fetch_add(1, Ordering::Relaxed);
            head
        }
    }

    /// The head read on this thread, if the guard is free and the file answers at once.
    fn direct_head(&self) -> Option<Result<StoreHead>> {
        self.direct_head.path.as_ref()?;
        // Under the read guard, as a change page is read: no write is between taking its
        // sequence numbers and receive time and committing, so the clock read here is a
        // watermark for the sequence number read with it (`StoreHead::now`). Taken only
        // if free now: a write holding or waiting for it sends the read to the pool.
        let Ok(_read) = self.shared.lock.try_read() else {
            self.direct_head.fell_back.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let Some((seq, restored_seq, restored_at, horizon_at, horizon_seq)) =
            self.direct_head.read()
        else {
            self.direct_head.fell_back.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let now = self.clock().saturating_add_micros(-1);
        drop(_read);
        self.direct_head.direct.fetch_add(1, Ordering::Relaxed);
        Some(head_from(
            seq,
            restored_seq,
            restored_at,
            horizon_at,
            horizon_seq,
            now,
        ))
    }

    /// One read of the head: directly when it can be, else through the pool on a task of
    /// its own, which runs to its end whoever waits for it (a pooled statement given up
    /// half-way is not left to the next one).
    async fn read_head(&self) -> Result<StoreHead> {
        if let Some(head) = self.direct_head() {
            return head;
        }
        crate::detached::run(self.pooled_head()).await
    }
}

/// The head through `pool`, under the read guard of `shared`, waiting for it; the clock
/// is the system's plus `offset` (`SqliteStore::clock`).
async fn pooled_head(
    pool: sqlx::SqlitePool,
    shared: std::sync::Arc<super::Shared>,
    offset: time::Duration,
) -> Result<StoreHead> {
    let _read = shared.lock.read().await;
    let (seq, restored_seq, restored_at, horizon_at, horizon_seq): MetaRow =
        sqlx::query_as(HEAD_SQL)
            .fetch_one(&pool)
            .await
            .map_err(StoreError::database)?;
    let now = super::clock_at(offset).saturating_add_micros(-1);
    drop(_read);
    head_from(seq, restored_seq, restored_at, horizon_at, horizon_seq, now)
}

#[async_trait]
impl StoreHeadRead for SqliteStore {
    /// Shared by the callers that ask together (`crate::batch`): the read starts after
    /// every caller it answers asked, so it is as current as their own would be, and
    /// under many clients one read answers many syncs.
    async fn head(&self) -> Result<StoreHead> {
        self.head_reads.read(|| self.read_head()).await
    }

    fn head_now(&self) -> Option<Result<StoreHead>> {
        self.direct_head()
    }

    /// The direct read awaits nothing; the pooled one runs on a task of its own; the
    /// shared turn is handed on by a caller dropped while it waits or reads (tests
    /// `a_head_read_given_up_at_any_point_leaves_the_next_one_current` and `crate::batch`).
    fn head_cancel_safe(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::group::tests::{batch, create};
    use crate::types::StoreOptions;
    use crate::ServerStore;

    /// A store on a new file in `dir`.
    async fn file_store(dir: &tempfile::TempDir) -> SqliteStore {
        SqliteStore::connect(
            dir.path().join("s.db").to_str().unwrap(),
            StoreOptions::default(),
        )
        .await
        .expect("store")
    }

    async fn push(store: &SqliteStore) {
        store
            .apply_push(batch(
                "d",
                vec![create(&uuid::Uuid::new_v4().to_string(), "n")],
            ))
            .await
            .expect("push");
    }

    /// The direct read answers for a file, agrees with the pool's read after each write,
    /// and sees a write through another store on the same file (its own pool and
    /// connections, as another process has) at once.
    #[tokio::test]
    async fn the_direct_head_read_sees_every_commit_on_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("s.db");
        let a = SqliteStore::connect(path.to_str().unwrap(), StoreOptions::default())
            .await
            .expect("a");
        let direct = a
            .head_now()
            .expect("a file is read directly")
            .expect("head");
        let pooled = a.pooled_head().await.expect("pooled");
        assert_eq!(
            (direct.seq, direct.restore_mark, direct.horizon),
            (0, None, None)
        );
        assert_eq!(pooled.seq, 0);
        push(&a).await;
        assert_eq!(a.head_now().unwrap().unwrap().seq, 1);
        let b = SqliteStore::connect(path.to_str().unwrap(), StoreOptions::default())
            .await
            .expect("b");
        push(&b).await;
        push(&b).await;
        let seen = a.head_now().unwrap().unwrap();
        assert_eq!(seen.seq, 3, "a write through another store is seen at once");
        assert_eq!(seen.seq, a.pooled_head().await.expect("pooled").seq);
        let (direct, fell_back) = a.direct_head.counts();
        assert_eq!(
            (direct, fell_back),
            (3, 0),
            "every head above was read directly"
        );
        // `head` takes the direct path too when it can.
        assert_eq!(a.head().await.expect("head").seq, 3);
        assert_eq!(a.direct_head.counts(), (4, 0));
    }

    /// A write holding the guard sends the read to the pool, which waits for the write
    /// and then sees it; nothing is read directly while the guard is taken.
    #[tokio::test]
    async fn a_write_in_progress_sends_the_read_to_the_pool() {
        let dir = tempfile::tempdir().expect("dir");
        let a = file_store(&dir).await;
        let guard = a.shared.lock.write().await;
        assert!(a.head_now().is_none(), "no direct read under a write");
        assert_eq!(a.direct_head.counts(), (0, 1));
        drop(guard);
        assert_eq!(a.head_now().unwrap().unwrap().seq, 0);
        assert_eq!(a.direct_head.counts(), (1, 1));
    }

    /// An in-memory database has no second connection: the pool answers.
    #[tokio::test]
    async fn an_in_memory_store_reads_its_head_through_the_pool() {
        let s = SqliteStore::memory(StoreOptions::default())
            .await
            .expect("memory");
        assert!(s.head_now().is_none());
        push(&s).await;
        assert_eq!(s.head().await.expect("head").seq, 1);
    }

    /// Heads asked for together are read once, directly, and each is as current as a
    /// read of its own: a push committed before they ask is in the one read.
    #[tokio::test(flavor = "current_thread")]
    async fn heads_asked_for_together_share_one_read() {
        let dir = tempfile::tempdir().expect("dir");
        let a = file_store(&dir).await;
        push(&a).await;
        let heads = futures::future::join_all((0..5).map(|_| a.head())).await;
        for h in heads {
            assert_eq!(h.expect("head").seq, 1);
        }
        assert_eq!(a.direct_head.counts(), (1, 0), "one read for the five");
        push(&a).await;
        let (x, y) = tokio::join!(a.head(), a.head());
        assert_eq!((x.expect("x").seq, y.expect("y").seq), (2, 2));
        assert_eq!(a.direct_head.counts(), (2, 0));
    }

    /// A head read given up at any point (waiting for its turn, or reading through the
    /// pool behind a write) leaves the next read current and its turn handed on; the
    /// store then reads through the store's `Detached` wrapper on the caller's task.
    #[tokio::test(flavor = "current_thread")]
    async fn a_head_read_given_up_at_any_point_leaves_the_next_one_current() {
        let dir = tempfile::tempdir().expect("dir");
        let a = std::sync::Arc::new(file_store(&dir).await);
        let wait = std::time::Duration::from_millis(50);
        let write = a.shared.lock.write().await;
        // The first reads through the pool (the guard is taken), the second waits for
        // it; both are given up.
        let (r1, r2) = tokio::join!(
            tokio::time::timeout(wait, a.head()),
            tokio::time::timeout(wait, a.head())
        );
        assert!(r1.is_err() && r2.is_err(), "both wait for the write");
        assert_eq!(a.direct_head.pooled.load(Ordering::Relaxed), 0);
        drop(write);
        // The pooled read runs to its end on its own task, though no one waits for it.
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while a.direct_head.pooled.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(ended.is_ok(), "the given-up pooled read ran to its end");
        push(&a).await;
        let next = tokio::time::timeout(std::time::Duration::from_secs(10), a.head())
            .await
            .expect("the turn was handed on")
            .expect("head");
        assert_eq!(next.seq, 1, "the next read sees the push");
        let detached = crate::Detached(a.clone());
        assert!(detached.head_cancel_safe(), "read on the caller's task");
        push(&a).await;
        assert_eq!(detached.head().await.expect("head").seq, 2);
    }
}
