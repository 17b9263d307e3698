//! The store's head in one statement (`crate::head`), read at once on the calling thread.
//!
//! Every sqlx call on SQLite is handed to the connection's worker thread and woken back,
//! and on a busy server that round trip (two thread switches) was most of the cost of a
//! caught-up client's delta. The head is one row of `store_meta`, so a file database
//! reads it here on a connection of its own, opened read-only (it can never write), with
//! one cached statement: a real read of the committed file, so a commit by any
//! connection, in this process or another one, is seen by the next read exactly as the
//! pool's read would see it. No cache, nothing to keep in step.
//!
//! The read never waits: the connection's busy timeout is zero, and when it cannot
//! answer at once (busy, any error, an in-memory database, which no second connection
//! can open) the caller reads through the pool as before.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};

use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::head::{head_from, StoreHead, StoreHeadRead};

const HEAD_SQL: &str = "SELECT last_seq, restored_seq, restored_at, horizon_at, horizon_seq \
                        FROM store_meta WHERE one = 1";

/// Idle direct connections kept, at most (one is enough on one runtime thread; a few
/// serve a multi-threaded runtime without opening one per read).
const IDLE: usize = 4;

/// Direct, synchronous reads of the head of one database file (see the module doc).
#[derive(Debug)]
pub(super) struct DirectHead {
    /// The database file; `None` for an in-memory database.
    path: Option<PathBuf>,
    idle: Mutex<Vec<Connection>>,
}

impl DirectHead {
    pub(super) fn new(path: Option<&Path>) -> DirectHead {
        DirectHead {
            path: path.map(Path::to_path_buf),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn open(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        // Never sleep on the caller's thread: busy means "read through the pool".
        conn.busy_timeout(std::time::Duration::ZERO)?;
        Ok(conn)
    }

    /// The head, read now on this thread; `None` when it cannot be read at once.
    pub(super) fn read(&self) -> Option<Result<StoreHead>> {
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
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                ))
            })
        });
        match row {
            Ok((seq, restored_seq, restored_at, horizon_at, horizon_seq)) => {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                if idle.len() < IDLE {
                    idle.push(conn);
                }
                Some(head_from(
                    seq,
                    restored_seq,
                    restored_at,
                    horizon_at,
                    horizon_seq,
                ))
            }
            Err(e) => {
                // Busy, or anything else: the pool's read decides (and reports it).
                tracing::debug!(error = %e, "direct head read failed; reading through the pool");
                None
            }
        }
    }
}

impl SqliteStore {
    /// The head through the pool (the worker thread of a pooled connection).
    async fn pooled_head(&self) -> Result<StoreHead> {
        let (seq, restored_seq, restored_at, horizon_at, horizon_seq): (i64, i64, i64, i64, i64) =
            sqlx::query_as(HEAD_SQL)
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::database)?;
        head_from(seq, restored_seq, restored_at, horizon_at, horizon_seq)
    }
}

#[async_trait]
impl StoreHeadRead for SqliteStore {
    async fn head(&self) -> Result<StoreHead> {
        match self.direct_head.read() {
            Some(head) => head,
            None => self.pooled_head().await,
        }
    }

    fn head_now(&self) -> Option<Result<StoreHead>> {
        self.direct_head.read()
    }
}

#[cfg(test)]
mod tests {
    use inbetweenies_proto::{
        ChangeType, EntityChange, EntityId, EntityType, SourceType, SyncChange, Version,
    };

    use super::*;
    use crate::types::{PushBatch, StoreOptions};
    use crate::ServerStore;

    fn create() -> SyncChange {
        SyncChange {
            change_type: ChangeType::Create,
            entity: Some(EntityChange {
                id: EntityId::new_random(),
                version: Version::now("tester"),
                entity_type: EntityType::Note,
                name: "n".into(),
                content: Default::default(),
                source_type: SourceType::Manual,
                user_id: "tester".into(),
                parent_versions: vec![],
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: vec![],
        }
    }

    async fn push(store: &SqliteStore) {
        store
            .apply_push(PushBatch {
                device_id: "d".into(),
                user_id: "tester".into(),
                changes: vec![create()],
            })
            .await
            .expect("push");
    }

    /// The direct read answers for a file and agrees with the pool's read after each
    /// write, including a write through another store on the same file (as another
    /// process would make it: its own pool, its own connections).
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
        assert_eq!(direct, a.pooled_head().await.expect("pooled"));
        assert_eq!(direct.seq, 0);
        push(&a).await;
        assert_eq!(a.head_now().unwrap().unwrap().seq, 1);
        let b = SqliteStore::connect(path.to_str().unwrap(), StoreOptions::default())
            .await
            .expect("b");
        push(&b).await;
        push(&b).await;
        let seen = a.head_now().unwrap().unwrap();
        assert_eq!(seen.seq, 3, "a write through another store is seen at once");
        assert_eq!(seen, a.pooled_head().await.expect("pooled"));
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
}
