//! The store's head in one statement under the shared write lock (`crate::head`), on a
//! connection kept for head reads.

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::ConnectOptions as _;

use super::{db, PgStore, SESSION_READ_COMMITTED, WRITE_LOCK};
use crate::error::{Result, StoreError};
use crate::head::{head_from, StoreHead, StoreHeadRead};

/// The statement a head read runs (migration 0008).
const HEAD: &str = "SELECT * FROM goodies_head($1)";

/// The connection head reads use, outside the pool.
///
/// A pooled connection costs two round trips per statement: sqlx pings every
/// connection as it goes back to the pool (a `Sync` message and its answer, waking the
/// database's backend a second time), and the store's most frequent statement is a
/// caught-up client's head read. This connection is never pooled, so a head read is one
/// round trip. Head reads take turns on it (one is under way at a time: `crate::batch`).
///
/// A read given up half-way (its caller dropped) leaves the statement's answer unread;
/// sqlx reads up to the `ReadyForQuery` of every statement sent before it sends the
/// next, so the next read gets its own row (test
/// `a_head_read_given_up_mid_statement_leaves_the_next_one_current`). A read that fails
/// drops the connection and is tried once more on a new one: a head read writes
/// nothing, and a connection the database dropped while it was idle (a restart, an
/// idle-session timeout, `pg_terminate_backend`) fails only there (test
/// `head_reads_survive_their_connection_being_dropped`).
#[derive(Debug)]
pub(super) struct HeadConnection {
    options: PgConnectOptions,
    conn: tokio::sync::Mutex<Option<PgConnection>>,
}

impl HeadConnection {
    /// A head connection to the database `options` names, opened by the first read.
    pub(super) fn new(options: PgConnectOptions) -> HeadConnection {
        HeadConnection {
            options,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Closes the connection, if open; a later read opens a new one.
    pub(super) async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = sqlx::Connection::close(conn).await;
        }
    }

    /// Opens a connection as the pool's are opened: statements outside a transaction
    /// run at READ COMMITTED whatever the database's default (`goodies_head` refuses
    /// any other level).
    async fn open(&self) -> Result<PgConnection> {
        let mut conn = self
            .options
            .connect()
            .await
            .map_err(|e| StoreError::Connect(Box::new(e)))?;
        sqlx::query(SESSION_READ_COMMITTED)
            .execute(&mut conn)
            .await
            .map_err(db)?;
        Ok(conn)
    }

    /// The head's columns, read now (one retry on a new connection after a failure).
    async fn read(&self) -> Result<(i64, i64, i64, i64, i64, i64)> {
        let mut slot = self.conn.lock().await;
        let mut last_error = None;
        for _ in 0..2 {
            let conn = match slot.as_mut() {
                Some(conn) => conn,
                None => slot.insert(self.open().await?),
            };
            match sqlx::query_as(HEAD)
                .bind(WRITE_LOCK)
                .fetch_one(&mut *conn)
                .await
            {
                Ok(row) => return Ok(row),
                Err(e) => {
                    // Whatever state the connection is in, the next read starts afresh.
                    *slot = None;
                    last_error = Some(e);
                }
            }
        }
        Err(db(last_error.expect("the loop ran and failed")))
    }
}

#[async_trait]
impl StoreHeadRead for PgStore {
    async fn head(&self) -> Result<StoreHead> {
        // Requests asking while a head read is under way share the next one (which
        // starts after all of them asked, so it is as current as their own would be):
        // under many clients one statement answers many syncs (`crate::batch`).
        self.head_reads.read(|| self.read_head()).await
    }

    /// A read dropped at any `.await` leaves the connection's answer to be read off by
    /// the next read and hands its turn on (tests
    /// `a_head_read_given_up_mid_statement_leaves_the_next_one_current` and
    /// `crate::batch`'s `a_reader_dropped_mid_read_hands_the_turn_on`); the statement
    /// runs in its own transaction, which ends with it whoever waits for the answer.
    fn head_cancel_safe(&self) -> bool {
        true
    }
}

impl PgStore {
    /// The head, read now.
    async fn read_head(&self) -> Result<StoreHead> {
        // One statement (`goodies_head`, migration 0008), as a change page is read: the
        // shared lock, then the counter and the clock in a snapshot taken after it, so no
        // writer is between taking its sequence numbers and receive time and committing
        // and the clock read is a watermark for the counter (`StoreHead::now`). Run
        // outside a transaction on the head connection, whose session is READ COMMITTED
        // whatever the database's default (the function refuses any other level); the
        // lock is released when the statement's own transaction ends.
        if self.pool.is_closed() {
            return Err(db(sqlx::Error::PoolClosed));
        }
        let (seq, restored_seq, restored_at, horizon_at, horizon_seq, now) =
            self.head_connection.read().await?;
        let now = super::rows::ts(now)?;
        head_from(seq, restored_seq, restored_at, horizon_at, horizon_seq, now)
    }
}
