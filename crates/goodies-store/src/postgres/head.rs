//! The store's head in one statement under the shared write lock (`crate::head`).

use async_trait::async_trait;

use super::{db, PgStore, WRITE_LOCK};
use crate::error::Result;
use crate::head::{head_from, StoreHead, StoreHeadRead};

#[async_trait]
impl StoreHeadRead for PgStore {
    async fn head(&self) -> Result<StoreHead> {
        // As a change page is read (READ COMMITTED; the shared lock in its own statement,
        // then one statement): no writer is between taking its sequence numbers and
        // receive time and committing, so the clock read with the counter is a watermark
        // for it (`StoreHead::now`).
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(WRITE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let (seq, restored_seq, restored_at, horizon_at, horizon_seq, now): (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = sqlx::query_as(
            "SELECT last_seq, restored_seq, restored_at, horizon_at, horizon_seq, \
             goodies_now_us() - 1 FROM goodies_meta",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let now = super::rows::ts(now)?;
        head_from(seq, restored_seq, restored_at, horizon_at, horizon_seq, now)
    }
}
