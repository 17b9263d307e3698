//! FunkyGibbon: a wire-compatible Inbetweenies sync server, as a library that tests and other programs embed.
//!
//! The server speaks the protocol of `docs/PROTOCOL.md` and answers what the
//! Python FunkyGibbon answers (its captured exchanges are replayed by this
//! crate's tests), with the reference's mistakes fixed: unknown enum values
//! get a 422 instead of a 500, relationships reach clients, guests cannot
//! write, the change feed pages without skipping rows that commit late.
//! `docs/SERVER.md` is the user guide.
//!
//! Embed it on an ephemeral port:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use funkygibbon_mock::{serve, ServerConfig};
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let config = ServerConfig::new("sqlite::memory:")
//!     .with_admin_password("test-password")
//!     .with_jwt_secret("test-secret");
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(listener, config, async move {
//!     let _ = stopped.await;
//! }));
//! // … talk to http://{addr}/api/v1/… …
//! let _ = stop.send(());
//! server.await??;
//! # Ok(()) }
//! ```

// Denied, not forbidden: `memory` calls the C allocator (`mallopt`, `malloc_trim`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod admission;
mod auth;
mod body;
mod clock;
mod config;
mod conn;
mod demo;
mod digest;
mod error;
mod faults;
mod horizon;
pub mod memory;
mod metrics;
mod pydantic;
mod qr;
mod ratelimit;
mod readahead;
mod routes;
mod signing;
mod snapshot;
mod state;
mod tls;
mod vocabulary;

use std::future::Future;
use std::sync::Arc;

use goodies_store::{ServerStore, StoreOptions};
use tokio::sync::watch;

pub use auth::{Claims, ADMIN_PERMISSIONS, GUEST_PERMISSIONS};
pub use config::{
    AdminPassword, Cli, ConflictStrategyArg, LogFormat, ServerConfig, DEFAULT_ADMIN_TOKEN_TTL,
    DEFAULT_BODY_LIMIT, DEFAULT_BODY_READ_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CLIENT_CONNECTIONS, DEFAULT_PAGE_SIZE,
};
pub use error::ServerError;
pub use faults::FaultConfig;
pub use signing::{
    request_string, response_string, sign_string, NONCE_HEADER, REQUEST_SCHEME, RESPONSE_SCHEME,
    TIMESTAMP_HEADER,
};

use crate::auth::AuthService;
use crate::state::{AppInner, AppState};

/// A handle on a built server: its store, its token signer, its in-flight count.
#[derive(Clone, Debug)]
pub struct AppHandle {
    state: AppState,
}

impl AppHandle {
    /// The store the server uses.
    pub fn store(&self) -> Arc<dyn ServerStore> {
        self.state.store.clone()
    }

    /// The settings in force.
    pub fn config(&self) -> &ServerConfig {
        &self.state.config
    }

    /// A fresh admin token, as a login would issue.
    pub fn admin_token(&self) -> String {
        self.state
            .auth
            .admin_token()
            .map(|(t, _)| t)
            .unwrap_or_default()
    }

    /// Signs arbitrary claims with the server's secret (e.g. an already expired token for tests).
    pub fn sign(&self, claims: &Claims) -> String {
        self.state.auth.sign(claims).unwrap_or_default()
    }

    /// The number of requests being handled right now.
    pub fn in_flight(&self) -> usize {
        *self.state.in_flight.borrow()
    }

    /// Waits until at least `n` pull pages have been read ahead since the server started
    /// (for tests that need a read ahead to have happened before they go on).
    pub async fn wait_for_read_ahead(&self, n: u64) {
        self.state.read_ahead.wait_for_finished(n).await;
    }

    /// Waits until at least `n` requests are being handled at once.
    pub async fn wait_for_in_flight(&self, n: usize) {
        let mut rx = self.state.in_flight.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    /// What each bounded cache of the server holds right now (docs/SERVER.md, "Caches").
    pub async fn cached(&self) -> CacheCounts {
        let (tokens, device_owners) = self.state.auth.cached();
        let (read_ahead_pages, quiet_pages) = self.state.read_ahead.held();
        CacheCounts {
            tokens,
            device_owners,
            read_ahead_pages,
            quiet_pages,
            digest_ids: self.state.digest.held().await,
        }
    }
}

/// What the server's bounded caches hold ([`AppHandle::cached`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheCounts {
    /// Verified bearer tokens (`--token-cache`).
    pub tokens: usize,
    /// Device owners (`--device-owner-cache`).
    pub device_owners: usize,
    /// Pull pages read ahead (`--read-ahead-pages`).
    pub read_ahead_pages: usize,
    /// Empty pages kept for quiet deltas (`--quiet-pages`).
    pub quiet_pages: usize,
    /// Ids in the state digest's index (`--digest-index-ids`).
    pub digest_ids: usize,
}

/// Builds the router and its state: opens (and migrates) the store, hashes the
/// admin password, loads the demo data when asked. The router expects
/// [`axum::extract::ConnectInfo`] for per-address login limits when served
/// with `into_make_service_with_connect_info::<SocketAddr>()`; without it all
/// callers share one limit.
pub async fn build_app(config: ServerConfig) -> Result<(axum::Router, AppHandle), ServerError> {
    build_with_port(config, 0).await
}

async fn build_with_port(
    mut config: ServerConfig,
    listen_port: u16,
) -> Result<(axum::Router, AppHandle), ServerError> {
    if config.page_size == 0 {
        return Err(ServerError::Config("page size must be at least 1".into()));
    }
    let store = match config.store.take() {
        Some(s) => s,
        None => {
            let opts = StoreOptions {
                resolver: Arc::new(config.resolver.clone()),
                max_connections: config.max_connections,
                blob_dir: config.blob_dir.clone(),
                sync_record_delay: (!config.sync_record_delay.is_zero())
                    .then_some(config.sync_record_delay),
                ..StoreOptions::default()
            };
            open_store(config.database_url.clone(), opts).await?
        }
    };
    let secret = match &config.jwt_secret {
        Some(s) if !s.is_empty() => s.clone(),
        _ => {
            tracing::warn!(
                "no JWT secret given: using a random one, tokens will not survive a restart"
            );
            let bytes: [u8; 32] = rand::random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        }
    };
    let auth = AuthService::new(
        config.admin_password.clone(),
        &secret,
        config.admin_token_ttl,
        config.login_max_failures,
        config.login_window,
    )
    .await?
    .with_cache_caps(config.token_cache, config.device_owner_cache);
    // Guest grants made before a restart.
    auth.load_guests(store.guest_grants().await.map_err(ServerError::Store)?);
    if config.admin_password.is_none() {
        tracing::warn!("no admin password configured: admin login will always fail");
    }
    if config.demo_data {
        demo::load(store.as_ref())
            .await
            .map_err(ServerError::Demo)?;
    }
    let public_port = config.public_port.unwrap_or(listen_port);
    let (in_flight, _) = watch::channel(0usize);
    let feed_buffer = config.feed_buffer;
    let metrics = metrics::Metrics::new();
    let fault_state = faults::FaultState::new(config.faults.clone(), &metrics);
    let replay = signing::ReplayCache::new(config.hmac_replay_cache);
    let sync_limiter = ratelimit::SyncLimiter::new(config.sync_rate_limit, config.sync_rate_burst);
    let admission = admission::SyncAdmission::new(config.max_concurrent_syncs, &metrics);
    if config.faults.is_active() {
        tracing::warn!(faults = ?config.faults, "fault injection is on for the sync endpoints");
    }
    let (digest_index_ids, read_ahead_pages, read_ahead_rows, quiet_pages) = (
        config.digest_index_ids,
        config.read_ahead_pages,
        config.read_ahead_rows,
        config.quiet_pages,
    );
    let state = AppState(Arc::new(AppInner {
        store,
        config,
        auth,
        public_port,
        in_flight,
        faults: fault_state,
        metrics,
        replay,
        sync_limiter,
        admission,
        digest: digest::DigestIndex::new(digest_index_ids),
        read_ahead: readahead::ReadAhead::new(read_ahead_pages, read_ahead_rows, quiet_pages),
        clock: clock::ServerClock::default(),
        unknown_values: vocabulary::UnknownValues::default(),
        feed: routes::events::FeedHub::new(feed_buffer),
        blobs: routes::blobs::BlobTransfers::default(),
    }));
    state::spawn_sync_record_writer(&state);
    horizon::spawn(&state);
    let router = routes::router(state.clone());
    Ok((router, AppHandle { state }))
}

/// Opens the store (the backend is chosen from the URL's scheme).
async fn open_store(url: String, opts: StoreOptions) -> Result<Arc<dyn ServerStore>, ServerError> {
    goodies_store::open_server_store(&url, opts)
        .await
        .map_err(ServerError::Store)
}

/// Completes on ctrl-c or (on Unix) SIGTERM: the shutdown signal the binary uses.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing the requests in flight");
}

/// Serves on an already-bound listener until `shutdown` completes, then
/// finishes the requests in flight (each push is one store transaction, so
/// none is left half-applied) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let port = listener.local_addr()?.port();
    let limits = conn_limits(&config);
    let tls = tls_acceptor(&config)?;
    let (router, handle) = build_with_port(config, port).await?;
    let served = serve_router(listener, router, limits, tls, shutdown).await;
    state::write_sync_records(&handle.state).await;
    served
}

/// Like [`serve`], also handing back the [`AppHandle`] once the server is built
/// (through `ready`), before it accepts connections.
pub async fn serve_with_handle(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: tokio::sync::oneshot::Sender<AppHandle>,
) -> Result<(), ServerError> {
    let port = listener.local_addr()?.port();
    let limits = conn_limits(&config);
    let tls = tls_acceptor(&config)?;
    let (router, handle) = build_with_port(config, port).await?;
    let state = handle.state.clone();
    let _ = ready.send(handle);
    let served = serve_router(listener, router, limits, tls, shutdown).await;
    state::write_sync_records(&state).await;
    served
}

/// The TLS acceptor when a certificate and key are configured (both or neither).
fn tls_acceptor(config: &ServerConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, ServerError> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => tls::acceptor(cert, key).map(Some),
        (None, None) => Ok(None),
        _ => Err(ServerError::Config(
            "a TLS certificate needs its key, and a key its certificate".into(),
        )),
    }
}

fn conn_limits(config: &ServerConfig) -> conn::ConnLimits {
    conn::ConnLimits {
        max_connections: config.max_client_connections,
        header_read_timeout: config.header_read_timeout,
        idle_timeout: config.idle_timeout,
        idle_trim: config.idle_trim,
    }
}

/// Serves with the connection limits of docs/SERVER.md: at most
/// `max_client_connections` at once (more wait to be accepted), header read and
/// idle timeouts, and the JSON error body on answers to requests that do not parse.
async fn serve_router(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    limits: conn::ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%addr, scheme, ?limits, "funkygibbon listening");
    conn::serve(listener, router, limits, tls, shutdown).await?;
    tracing::info!("funkygibbon stopped");
    Ok(())
}
