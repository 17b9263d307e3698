//! The state every handler shares.

use std::ops::Deref;
use std::sync::{Arc, Mutex};

use goodies_store::ServerStore;
use inbetweenies_conflict::VectorClock;
use inbetweenies_proto::VectorClockWire;
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
    /// Fault decisions.
    pub faults: crate::faults::FaultState,
    /// The last state digest and the highest sequence number it covers.
    pub digest_cache: Mutex<Option<(u64, String)>>,
    /// The server's vector clock: the merge of every clock clients have sent.
    pub clock: Mutex<VectorClock>,
}

impl AppInner {
    /// The convergence digest, recomputed only when a write has happened since
    /// the cached one (keyed by the store's highest sequence number, so writes
    /// by other server processes on the same database are seen too).
    pub async fn state_digest(&self) -> Result<String, goodies_store::StoreError> {
        let seq = self.store.max_seq().await?;
        if let Some((cached_seq, digest)) = self.cached_digest() {
            if cached_seq == seq {
                return Ok(digest);
            }
        }
        let digest = self.store.state_digest().await?;
        // Cache only when no write landed while computing (else the key would be stale).
        if self.store.max_seq().await? == seq {
            let mut cache = self.digest_cache.lock().unwrap_or_else(|p| p.into_inner());
            *cache = Some((seq, digest.clone()));
        }
        Ok(digest)
    }

    /// Merges a client's clock into the server's and returns the server's (PROTOCOL §5.6).
    /// A clock whose counters are not integers is ignored.
    pub fn merge_clock(&self, client: &VectorClockWire) -> VectorClockWire {
        let mut clock = self.clock.lock().unwrap_or_else(|p| p.into_inner());
        match VectorClock::from_wire(client) {
            Ok(c) => clock.merge(&c),
            Err(e) => tracing::debug!(error = %e, "ignoring a vector clock that does not read"),
        }
        clock.to_wire()
    }

    fn cached_digest(&self) -> Option<(u64, String)> {
        self.digest_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
