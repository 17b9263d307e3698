//! Device owners in the `device_owners` table (`crate::owners`).

use async_trait::async_trait;
use inbetweenies_proto::Timestamp;

use super::PgStore;
use crate::error::{Result, StoreError};
use crate::owners::DeviceOwners;

#[async_trait]
impl DeviceOwners for PgStore {
    async fn claim_device(&self, device_id: &str, subject: &str) -> Result<String> {
        // Inserted only when absent, then read: of two processes claiming at once, one
        // insert wins and both read the winner.
        sqlx::query(
            "INSERT INTO device_owners (device_id, subject, claimed_at_us) VALUES ($1, $2, $3) \
             ON CONFLICT (device_id) DO NOTHING",
        )
        .bind(device_id)
        .bind(subject)
        .bind(Timestamp::now().unix_micros())
        .execute(&self.pool)
        .await
        .map_err(StoreError::database)?;
        self.device_owner(device_id).await?.ok_or_else(|| {
            StoreError::Corrupt(format!("the owner of device {device_id} was not recorded"))
        })
    }

    async fn device_owner(&self, device_id: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT subject FROM device_owners WHERE device_id = $1")
            .bind(device_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::database)
    }
}
