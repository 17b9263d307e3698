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
}

impl Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}
