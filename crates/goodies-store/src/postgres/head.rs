//! The store's head in one statement under the shared write lock (`crate::head`).

use async_trait::async_trait;

use super::{db, PgStore, WRITE_LOCK};
use crate::error::Result;
use crate::head::{head_from, StoreHead, StoreHeadRead};

#[async_trait]
impl StoreHeadRead for PgStore {
    async fn head(&self) -> Result<StoreHead> {
        // Requests asking while a head read is under way share the next one (which
        // starts after all of them asked, so it is as current as their own would be):
        // under many clients one statement answers many syncs (`crate::batch`).
        self.head_reads.read(|| self.read_head()).await
    }
}

impl PgStore {
    /// The head, read now.
    async fn read_head(&self) -> Result<StoreHead> {
        // One statement (`goodies_head`, migration 0008), as a change page is read: the
        // shared lock, then the counter and the clock in a snapshot taken after it, so no
        // writer is between taking its sequence numbers and receive time and committing
        // and the clock read is a watermark for the counter (`StoreHead::now`). Run
        // outside a transaction on a pooled connection, whose session is READ COMMITTED
        // whatever the database's default (the function refuses any other level); the
        // lock is released when the statement's own transaction ends.
        let (seq, restored_seq, restored_at, horizon_at, horizon_seq, now): (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = sqlx::query_as("SELECT * FROM goodies_head($1)")
            .bind(WRITE_LOCK)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let now = super::rows::ts(now)?;
        head_from(seq, restored_seq, restored_at, horizon_at, horizon_seq, now)
    }
}
