//! Device owners kept in the store: which token subject first synced as each device.
//! `POST /api/v1/sync/ack` confirms a device's watermark only for its owner, so the
//! record must survive a restart and be the same for every server process sharing a
//! database. An owner, once recorded, never changes, which lets a server cache it.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::detached::Detached;
use crate::error::{Result, StoreError};

/// Where device owners are kept.
#[async_trait]
pub trait DeviceOwners: Send + Sync {
    /// Records `subject` as the owner of `device_id` unless an owner is recorded already
    /// (by any process), and returns the device's owner: `subject` when this call
    /// recorded it, the earlier owner otherwise.
    async fn claim_device(&self, device_id: &str, subject: &str) -> Result<String>;

    /// The recorded owner of `device_id`, `None` when no subject has synced as it.
    async fn device_owner(&self, device_id: &str) -> Result<Option<String>>;
}

/// Runs `call` on its own task, as every [`Detached`] call does.
async fn run<T, F>(call: F) -> Result<T>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    match tokio::spawn(call).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(StoreError::Database(Box::new(e))),
    }
}

#[async_trait]
impl<S: DeviceOwners + ?Sized + 'static> DeviceOwners for Detached<S> {
    async fn claim_device(&self, device_id: &str, subject: &str) -> Result<String> {
        let (s, d, sub): (Arc<S>, String, String) =
            (self.0.clone(), device_id.to_owned(), subject.to_owned());
        run(async move { s.claim_device(&d, &sub).await }).await
    }

    async fn device_owner(&self, device_id: &str) -> Result<Option<String>> {
        let (s, d) = (self.0.clone(), device_id.to_owned());
        run(async move { s.device_owner(&d).await }).await
    }
}
