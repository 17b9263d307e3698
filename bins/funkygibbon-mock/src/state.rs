//! The state every handler shares.

use std::ops::Deref;
use std::sync::Arc;

use goodies_store::ServerStore;
use tokio::sync::watch;

use crate::auth::AuthService;
use crate::config::ServerConfig;

/// Shared state: the store, the settings, auth, and the in-flight request count.
#[derive(Clone, Debug)]
pub(crate) struct AppState(pub Arc<AppInner>);

#[derive(Debug)]
pub(crate) struct AppInner {
    pub store: Arc<dyn ServerStore>,
    pub config: ServerConfig,
    pub auth: AuthService,
    /// The port written into guest QR codes.
    pub public_port: u16,
    /// Requests being handled right now.
    pub in_flight: watch::Sender<usize>,
    /// The faults in force, their decisions and counts.
    pub faults: crate::faults::FaultState,
    /// Counters, gauges and histograms served at `/metrics`.
    pub metrics: crate::metrics::Metrics,
    /// Nonces of signed requests seen (PROTOCOL §2.6).
    pub replay: crate::signing::ReplayCache,
    /// The per-token rate limit of the sync endpoints.
    pub sync_limiter: crate::ratelimit::SyncLimiter,
    /// How many syncs are handled at once (`crate::admission`).
    pub admission: crate::admission::SyncAdmission,
    /// The state digest, kept up to date from the change feed.
    pub digest: crate::digest::DigestIndex,
    /// Pull pages read ahead of the requests that will ask for them.
    pub read_ahead: crate::readahead::ReadAhead,
    /// The server's vector clock, bounded (`crate::clock`).
    pub clock: crate::clock::ServerClock,
    /// Counts of accepted values outside the known vocabulary (`crate::vocabulary`).
    pub unknown_values: crate::vocabulary::UnknownValues,
    /// The change feed's fan-out of commit notices (`routes::events`).
    pub feed: crate::routes::events::FeedHub,
    /// Blob uploads running in this process (`routes::blobs`).
    pub blobs: crate::routes::blobs::BlobTransfers,
}

impl AppInner {
    /// The convergence digest: an index of every id's latest version follows the change
    /// feed (so writes by other server processes on the same database are seen too) and
    /// is re-hashed only after an entity changed.
    pub async fn state_digest(&self) -> Result<String, goodies_store::StoreError> {
        self.digest.digest(self.store.as_ref()).await
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// Writes the device bookkeeping held back (`goodies_store::seen`) every
/// `--sync-record-delay-ms`; the task ends with the server.
pub(crate) fn spawn_sync_record_writer(app: &AppState) {
    let delay = app.config.sync_record_delay;
    if delay.is_zero() {
        return;
    }
    let weak = std::sync::Arc::downgrade(&app.0);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(delay);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(app) = weak.upgrade() else { return };
            write_sync_records(&AppState(app)).await;
        }
    });
}

/// Writes the device bookkeeping held back now (on the timer and at shutdown); a
/// failure keeps it held for the next write.
pub(crate) async fn write_sync_records(app: &AppState) {
    if let Err(e) = app.store.flush_sync_records().await {
        tracing::warn!(
            error = %crate::error::error_chain(&e),
            "cannot write the devices' sync records; kept for the next write"
        );
    }
}
