//! The store's head in one statement (`crate::head`).

use async_trait::async_trait;

use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::head::{head_from, StoreHead, StoreHeadRead};

#[async_trait]
impl StoreHeadRead for SqliteStore {
    async fn head(&self) -> Result<StoreHead> {
        // Under the read guard, as a change page is read: no write is between taking its
        // sequence numbers and receive time and committing, so the clock read here is a
        // watermark for the sequence number read with it (`StoreHead::now`).
        let _read = self.shared.lock.read().await;
        let (seq, restored_seq, restored_at, horizon_at, horizon_seq): (i64, i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT last_seq, restored_seq, restored_at, horizon_at, horizon_seq \
                 FROM store_meta WHERE one = 1",
            )
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::database)?;
        let now = self.clock().saturating_add_micros(-1);
        drop(_read);
        head_from(seq, restored_seq, restored_at, horizon_at, horizon_seq, now)
    }
}
