//! Server settings: [`ServerConfig`] for embedding, [`Cli`] for the binary's flags and environment variables.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use goodies_store::ServerStore;
use inbetweenies_conflict::{ResolverConfig, Strategy};

use crate::faults::FaultConfig;

/// The default number of rows in one page of the change feed.
pub const DEFAULT_PAGE_SIZE: usize = 500;
/// The default request body limit (16 MiB); larger bodies get 413.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// The lifetime of admin tokens, as the reference issues them (7 days).
pub const DEFAULT_ADMIN_TOKEN_TTL: Duration = Duration::from_secs(604_800);
/// The default time a connection has to send a whole request head, counted from
/// when it starts waiting for one (accepted, or the previous answer sent).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The default time a handler waits for a whole request body.
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The default time a connection may stay silent while waiting for a request.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// The default cap on client connections open at once; more wait to be accepted.
pub const DEFAULT_MAX_CLIENT_CONNECTIONS: usize = 512;
/// The default number of sync requests handled at once; more wait their turn (`admission`).
pub const DEFAULT_MAX_CONCURRENT_SYNCS: usize = 32;
/// The default time between change-feed heartbeats on a quiet event stream.
pub const DEFAULT_FEED_HEARTBEAT: Duration = Duration::from_secs(15);
/// The default number of commit notices a change-feed listener may fall behind.
pub const DEFAULT_FEED_BUFFER: usize = 256;
/// The default number of rows a change-feed resume (`Last-Event-ID`) may be behind.
pub const DEFAULT_FEED_REPLAY_LIMIT: usize = 10_000;
/// The default largest blob accepted (1 GiB).
pub const DEFAULT_MAX_BLOB_SIZE: u64 = 1024 * 1024 * 1024;

/// The default burst of the per-token sync rate limit (when a rate is set).
pub const DEFAULT_SYNC_RATE_BURST: u32 = 20;

/// How the admin password is given.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdminPassword {
    /// A plain password, hashed with argon2 when the server starts.
    Plain(String),
    /// An argon2 PHC string (`$argon2id$v=19$…`), as produced by any argon2 tool.
    Hash(String),
}

impl fmt::Debug for AdminPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminPassword::Plain(_) => f.write_str("AdminPassword::Plain(<redacted>)"),
            AdminPassword::Hash(h) => write!(f, "AdminPassword::Hash({h:?})"),
        }
    }
}

/// Every setting of the server.
///
/// `Default` suits tests: an in-memory SQLite store, no admin password (set
/// one with [`ServerConfig::with_admin_password`]) and a random JWT secret
/// (set a fixed one with [`ServerConfig::with_jwt_secret`] to mint tokens in tests).
#[derive(Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where the data lives: `sqlite://PATH`, `sqlite::memory:` or `postgres://…`.
    pub database_url: String,
    /// An already-opened store; when set, `database_url` is not used.
    pub store: Option<Arc<dyn ServerStore>>,
    /// Rows per page of the change feed.
    pub page_size: usize,
    /// Largest accepted request body, in bytes (after gzip decompression too).
    pub body_limit: usize,
    /// The admin password; without one, admin login always fails.
    pub admin_password: Option<AdminPassword>,
    /// The HS256 secret for bearer tokens; random per start when absent.
    pub jwt_secret: Option<String>,
    /// Lifetime of admin tokens.
    pub admin_token_ttl: Duration,
    /// Strict mode (PROTOCOL §12.5): refuse unknown entity, source and relationship
    /// types and entity versions without a timestamp (422, every problem listed).
    /// Off by default: they are stored and served back unchanged.
    pub strict: bool,
    /// Failed logins from one client address before it is locked out.
    pub login_max_failures: u32,
    /// The window over which failed logins are counted (and the lockout length).
    pub login_window: Duration,
    /// Load the sample home at start (skipped when a home already exists).
    pub demo_data: bool,
    /// The host name written into guest QR codes.
    pub public_host: String,
    /// The port written into guest QR codes (default: the listener's port).
    pub public_port: Option<u16>,
    /// How conflicts are resolved.
    pub resolver: ResolverConfig,
    /// Maximum database connections (backend default when absent).
    pub max_connections: Option<u32>,
    /// Directory for blob bytes (SQLite; default: beside the database file).
    pub blob_dir: Option<PathBuf>,
    /// Directory for backups (default: `backups` beside the SQLite database file, else
    /// `backups` in the working directory).
    pub backup_dir: Option<PathBuf>,
    /// Shared key for message signatures (`x-inbetweenies-signature`, HMAC-SHA256):
    /// when set, request bodies must be signed and response bodies are.
    pub hmac_key: Option<String>,
    /// How far (either way) a signed request's timestamp may be from the server's
    /// clock (PROTOCOL §2.6).
    pub hmac_window: Duration,
    /// Nonces of signed requests remembered at most (each while its timestamp is in
    /// the window); when full, signed requests are refused 503 until some expire.
    pub hmac_replay_cache: usize,
    /// Sync requests a second allowed per bearer token (0: no limit).
    pub sync_rate_limit: f64,
    /// Sync requests one token may make at once before the rate applies.
    pub sync_rate_burst: u32,
    /// PEM certificate chain to serve HTTPS with (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate.
    pub tls_key: Option<PathBuf>,
    /// Faults to inject on the sync endpoints (all off by default).
    pub faults: FaultConfig,
    /// Origins browsers may call from (CORS); `*` for any; empty: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Time a connection has to send a whole request head, counted from when it
    /// starts waiting for one (accepted, or the previous answer sent); then it is closed.
    pub header_read_timeout: Duration,
    /// Time a handler waits for a whole request body; then 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// Time a connection may send nothing while waiting for a request (a new one, or
    /// a kept-alive one after an answer); then it is closed.
    pub idle_timeout: Duration,
    /// Client connections served at once; further ones wait in the listen queue
    /// until one closes.
    pub max_client_connections: usize,
    /// Sync requests (`POST /api/v1/sync/`) handled at once; more wait, first come first
    /// served, before their body is read. Bounds the memory of pages being answered.
    pub max_concurrent_syncs: usize,
    /// Quiet time (no request in flight, no connection closed) after which the server
    /// gives its free memory back to the system (`Duration::ZERO`: never). See
    /// [`crate::memory`].
    pub idle_trim: Duration,
    /// Time between heartbeats on a quiet change-feed stream (at most half the idle timeout).
    pub feed_heartbeat: Duration,
    /// Commit notices a change-feed listener may fall behind before it is sent `resync`
    /// and its stream ends.
    pub feed_buffer: usize,
    /// Rows a change-feed resume may be behind; further back, `resync`.
    pub feed_replay_limit: usize,
    /// Largest blob accepted, in bytes (a larger one is refused 413 before any byte is read).
    pub max_blob_size: u64,
    /// Superseded history older than this is pruned, every [`crate::horizon::period`]
    /// (`None`: history is kept whole). See `goodies_store::horizon`.
    pub history_horizon: Option<Duration>,
    /// Each sync's device bookkeeping (`last_seen`, `sync_count`) is held in memory
    /// and written for every device at once at least this often
    /// (`goodies_store::seen`); zero writes each sync's record at once.
    pub sync_record_delay: Duration,
    /// Verified bearer tokens cached (their signature not checked again until expiry).
    pub token_cache: usize,
    /// Device owners cached (the store keeps them all).
    pub device_owner_cache: usize,
    /// Pull pages read ahead and held at once (0: no read-ahead).
    pub read_ahead_pages: usize,
    /// Rows held in pages read ahead, about, in all.
    pub read_ahead_rows: usize,
    /// Empty pages kept for quiet deltas, one per query (0: none).
    pub quiet_pages: usize,
    /// Ids the state digest's in-memory index holds; past that the store's digest answers.
    pub digest_index_ids: usize,
}

/// Default of [`ServerConfig::sync_record_delay`].
pub const DEFAULT_SYNC_RECORD_DELAY: Duration = Duration::from_secs(1);

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            database_url: "sqlite::memory:".to_owned(),
            store: None,
            page_size: DEFAULT_PAGE_SIZE,
            body_limit: DEFAULT_BODY_LIMIT,
            admin_password: None,
            jwt_secret: None,
            admin_token_ttl: DEFAULT_ADMIN_TOKEN_TTL,
            strict: false,
            login_max_failures: 5,
            login_window: Duration::from_secs(300),
            demo_data: false,
            public_host: "funkygibbon.local".to_owned(),
            public_port: None,
            resolver: ResolverConfig::default(),
            max_connections: None,
            blob_dir: None,
            backup_dir: None,
            hmac_key: None,
            hmac_window: crate::signing::DEFAULT_WINDOW,
            hmac_replay_cache: crate::signing::DEFAULT_REPLAY_CACHE,
            sync_rate_limit: 0.0,
            sync_rate_burst: DEFAULT_SYNC_RATE_BURST,
            tls_cert: None,
            tls_key: None,
            faults: FaultConfig::default(),
            cors_origins: Vec::new(),
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_client_connections: DEFAULT_MAX_CLIENT_CONNECTIONS,
            max_concurrent_syncs: DEFAULT_MAX_CONCURRENT_SYNCS,
            idle_trim: crate::memory::IDLE_TRIM_DELAY,
            feed_heartbeat: DEFAULT_FEED_HEARTBEAT,
            feed_buffer: DEFAULT_FEED_BUFFER,
            feed_replay_limit: DEFAULT_FEED_REPLAY_LIMIT,
            max_blob_size: DEFAULT_MAX_BLOB_SIZE,
            history_horizon: None,
            sync_record_delay: DEFAULT_SYNC_RECORD_DELAY,
            token_cache: crate::auth::DEFAULT_TOKEN_CACHE,
            device_owner_cache: crate::auth::DEFAULT_DEVICE_OWNER_CACHE,
            read_ahead_pages: crate::readahead::DEFAULT_PAGES,
            read_ahead_rows: crate::readahead::DEFAULT_ROWS,
            quiet_pages: crate::readahead::DEFAULT_QUIET,
            digest_index_ids: crate::digest::DEFAULT_MAX_IDS,
        }
    }
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("store", &self.store.as_ref().map(|_| "<given>"))
            .field("page_size", &self.page_size)
            .field("body_limit", &self.body_limit)
            .field("admin_password", &self.admin_password)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("admin_token_ttl", &self.admin_token_ttl)
            .field("strict", &self.strict)
            .field("login_max_failures", &self.login_max_failures)
            .field("login_window", &self.login_window)
            .field("demo_data", &self.demo_data)
            .field("public_host", &self.public_host)
            .field("public_port", &self.public_port)
            .field("resolver", &self.resolver.default_strategy)
            .field("max_connections", &self.max_connections)
            .field("blob_dir", &self.blob_dir)
            .field("backup_dir", &self.backup_dir)
            .field("hmac_key", &self.hmac_key.as_ref().map(|_| "<redacted>"))
            .field("hmac_window", &self.hmac_window)
            .field("hmac_replay_cache", &self.hmac_replay_cache)
            .field("sync_rate_limit", &self.sync_rate_limit)
            .field("sync_rate_burst", &self.sync_rate_burst)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("faults", &self.faults)
            .field("cors_origins", &self.cors_origins)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_client_connections", &self.max_client_connections)
            .field("max_concurrent_syncs", &self.max_concurrent_syncs)
            .field("idle_trim", &self.idle_trim)
            .field("feed_heartbeat", &self.feed_heartbeat)
            .field("feed_buffer", &self.feed_buffer)
            .field("feed_replay_limit", &self.feed_replay_limit)
            .field("max_blob_size", &self.max_blob_size)
            .field("history_horizon", &self.history_horizon)
            .field("sync_record_delay", &self.sync_record_delay)
            .field("token_cache", &self.token_cache)
            .field("device_owner_cache", &self.device_owner_cache)
            .field("read_ahead_pages", &self.read_ahead_pages)
            .field("read_ahead_rows", &self.read_ahead_rows)
            .field("quiet_pages", &self.quiet_pages)
            .field("digest_index_ids", &self.digest_index_ids)
            .finish()
    }
}

/// A database URL with any password replaced, for logs.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl ServerConfig {
    /// A configuration for the given database URL, other settings default.
    pub fn new(database_url: impl Into<String>) -> Self {
        ServerConfig {
            database_url: database_url.into(),
            ..ServerConfig::default()
        }
    }

    /// Uses an already-opened store.
    pub fn with_store(mut self, store: Arc<dyn ServerStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Sets a plain admin password.
    pub fn with_admin_password(mut self, password: impl Into<String>) -> Self {
        self.admin_password = Some(AdminPassword::Plain(password.into()));
        self
    }

    /// Sets the JWT secret.
    pub fn with_jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// Sets the backup directory.
    pub fn with_backup_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.backup_dir = Some(dir.into());
        self
    }

    /// Sets the page size of the change feed.
    pub fn with_page_size(mut self, page_size: usize) -> Self {
        self.page_size = page_size;
        self
    }

    /// Sets the request body limit.
    pub fn with_body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Turns strict mode (PROTOCOL §12.5) on or off.
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// Deprecated, changes nothing: unknown types are accepted unless the server is
    /// strict ([`Self::with_strict`]). Kept so existing callers still build.
    pub fn with_accept_unknown_types(self, _accept: bool) -> Self {
        self
    }

    /// Sets the conflict resolver configuration.
    pub fn with_resolver(mut self, resolver: ResolverConfig) -> Self {
        self.resolver = resolver;
        self
    }

    /// Requires and produces message signatures with this shared key.
    pub fn with_hmac_key(mut self, key: impl Into<String>) -> Self {
        self.hmac_key = Some(key.into());
        self
    }

    /// Lets browsers call from these origins (`*`: any).
    pub fn with_cors_origins(
        mut self,
        origins: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        self.cors_origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the signed-request window and the number of nonces remembered.
    pub fn with_signing_window(mut self, window: Duration, replay_cache: usize) -> Self {
        self.hmac_window = window;
        self.hmac_replay_cache = replay_cache;
        self
    }

    /// Limits sync requests per bearer token: `per_second` (0: off), `burst` at once.
    pub fn with_sync_rate_limit(mut self, per_second: f64, burst: u32) -> Self {
        self.sync_rate_limit = per_second;
        self.sync_rate_burst = burst;
        self
    }

    /// Serves HTTPS with this PEM certificate chain and key.
    pub fn with_tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
        self
    }

    /// Injects faults on the sync endpoints.
    pub fn with_faults(mut self, faults: FaultConfig) -> Self {
        self.faults = faults;
        self
    }

    /// Loads the sample home at start.
    pub fn with_demo_data(mut self, demo: bool) -> Self {
        self.demo_data = demo;
        self
    }

    /// Sets the connection limits: header read, body read and idle timeouts, and the
    /// number of client connections served at once.
    pub fn with_connection_limits(
        mut self,
        header_read: Duration,
        body_read: Duration,
        idle: Duration,
        max_client_connections: usize,
    ) -> Self {
        self.header_read_timeout = header_read;
        self.body_read_timeout = body_read;
        self.idle_timeout = idle;
        self.max_client_connections = max_client_connections;
        self
    }

    /// Sets the quiet time after which free memory is given back (`Duration::ZERO`: never).
    pub fn with_idle_trim(mut self, quiet: Duration) -> Self {
        self.idle_trim = quiet;
        self
    }

    /// Sets how many sync requests are handled at once (at least one).
    pub fn with_max_concurrent_syncs(mut self, max: usize) -> Self {
        self.max_concurrent_syncs = max.max(1);
        self
    }

    /// Sets the change feed's heartbeat interval, listener buffer and resume limit.
    pub fn with_feed(mut self, heartbeat: Duration, buffer: usize, replay_limit: usize) -> Self {
        self.feed_heartbeat = heartbeat;
        self.feed_buffer = buffer;
        self.feed_replay_limit = replay_limit;
        self
    }

    /// Prunes superseded history older than `horizon`, periodically (see `--history-horizon`).
    pub fn with_history_horizon(mut self, horizon: Duration) -> Self {
        self.history_horizon = Some(horizon);
        self
    }

    /// Sets the largest blob accepted, in bytes.
    pub fn with_max_blob_size(mut self, bytes: u64) -> Self {
        self.max_blob_size = bytes;
        self
    }

    /// Sets the login rate limit.
    pub fn with_login_limit(mut self, max_failures: u32, window: Duration) -> Self {
        self.login_max_failures = max_failures;
        self.login_window = window;
        self
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a share between 0 and 1")),
    }
}

fn parse_client_connections(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a connection count between 1 and 1000000"
        )),
    }
}

fn parse_concurrent_syncs(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a sync count between 1 and 100000")),
    }
}

fn parse_page_size(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a page size between 1 and 100000")),
    }
}

fn parse_per_second(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && (0.0..=1_000_000.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "{s:?} is not a rate between 0 and 1000000 a second"
        )),
    }
}

/// How the binary writes its logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line an event.
    Text,
    /// One JSON object an event.
    Json,
}

/// The conflict strategy chosen on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ConflictStrategyArg {
    /// Last write wins (the reference's rule).
    LastWriteWins,
    /// Three-way merge over the common ancestor, last write wins per key.
    ThreeWayMerge,
    /// Queue every conflict for manual review (`/api/v1/sync/conflicts`).
    Manual,
}

/// The binary's command line; every flag also reads an environment variable.
#[derive(Debug, clap::Parser)]
#[command(
    name = "funkygibbon-mock",
    version,
    about = "FunkyGibbon: a wire-compatible Inbetweenies sync server"
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "FUNKYGIBBON_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// Database: sqlite://PATH (created if missing), sqlite::memory: or postgres://USER@HOST/DB.
    #[arg(
        long,
        env = "FUNKYGIBBON_DATABASE_URL",
        default_value = "sqlite://funkygibbon.db"
    )]
    pub database_url: String,
    /// Rows per page of the change feed.
    #[arg(long, env = "FUNKYGIBBON_PAGE_SIZE", default_value_t = DEFAULT_PAGE_SIZE,
          value_parser = parse_page_size)]
    pub page_size: usize,
    /// Largest accepted request body in bytes (larger: 413).
    #[arg(long, env = "FUNKYGIBBON_MAX_BODY_BYTES", default_value_t = DEFAULT_BODY_LIMIT)]
    pub max_body_bytes: usize,
    /// Admin password (hashed with argon2 at start). Without it or a hash, a random one is generated and logged.
    #[arg(long, env = "FUNKYGIBBON_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,
    /// Admin password as an argon2 PHC hash string.
    #[arg(
        long,
        env = "FUNKYGIBBON_ADMIN_PASSWORD_HASH",
        conflicts_with = "admin_password"
    )]
    pub admin_password_hash: Option<String>,
    /// HS256 secret for bearer tokens; random per start when absent (tokens then die with the process).
    #[arg(long, env = "FUNKYGIBBON_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Lifetime of admin tokens, in seconds.
    #[arg(long, env = "FUNKYGIBBON_TOKEN_TTL_SECS", default_value_t = 604_800)]
    pub token_ttl_secs: u64,
    /// Strict mode: refuse unknown entity/source/relationship types and versions
    /// without a timestamp with one 422 listing every problem (default: store them).
    #[arg(long, env = "FUNKYGIBBON_STRICT",
          value_parser = clap::builder::FalseyValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub strict: bool,
    /// Deprecated, changes nothing: unknown types are accepted unless `--strict`.
    /// Still read so existing scripts keep working.
    #[arg(long, env = "FUNKYGIBBON_ACCEPT_UNKNOWN_TYPES",
          value_parser = clap::builder::FalseyValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub accept_unknown_types: bool,
    /// Failed logins per client address before a lockout (429).
    #[arg(long, env = "FUNKYGIBBON_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u32,
    /// Window for counting failed logins, in seconds.
    #[arg(long, env = "FUNKYGIBBON_LOGIN_WINDOW_SECS", default_value_t = 300)]
    pub login_window_secs: u64,
    /// Load a sample home (1 home, 6 rooms, 30 devices, notes, procedures) if none exists.
    #[arg(long, env = "FUNKYGIBBON_DEMO_DATA",
          value_parser = clap::builder::FalseyValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub demo_data: bool,
    /// Host name written into guest QR codes.
    #[arg(
        long,
        env = "FUNKYGIBBON_PUBLIC_HOST",
        default_value = "funkygibbon.local"
    )]
    pub public_host: String,
    /// Port written into guest QR codes (default: the listening port).
    #[arg(long, env = "FUNKYGIBBON_PUBLIC_PORT")]
    pub public_port: Option<u16>,
    /// How conflicts are resolved.
    #[arg(long, env = "FUNKYGIBBON_CONFLICT_STRATEGY", value_enum,
          default_value_t = ConflictStrategyArg::LastWriteWins)]
    pub conflict_strategy: ConflictStrategyArg,
    /// Maximum database connections.
    #[arg(long, env = "FUNKYGIBBON_MAX_CONNECTIONS")]
    pub max_connections: Option<u32>,
    /// Directory for blob bytes (SQLite).
    #[arg(long, env = "FUNKYGIBBON_BLOB_DIR")]
    pub blob_dir: Option<PathBuf>,
    /// Directory for backups (default: `backups` beside the SQLite database file, else in the working directory).
    #[arg(long, env = "FUNKYGIBBON_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Shared key for HMAC-SHA256 message signatures (x-inbetweenies-signature); off when absent.
    #[arg(long, env = "FUNKYGIBBON_HMAC_KEY", hide_env_values = true)]
    pub hmac_key: Option<String>,
    /// Origins browsers may call from (CORS), comma-separated; `*` for any. Off when absent.
    #[arg(
        long = "cors-origin",
        env = "FUNKYGIBBON_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
    /// Fault injection: milliseconds added to every sync request.
    #[arg(long, env = "FUNKYGIBBON_FAULT_LATENCY_MS", default_value_t = 0)]
    pub fault_latency_ms: u64,
    /// Fault injection: share (0-1) of sync requests refused with 503 before anything is applied.
    #[arg(long, env = "FUNKYGIBBON_FAULT_ERROR_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_error_rate: f64,
    /// Fault injection: share (0-1) of sync requests whose answer is dropped after they were handled (and committed).
    #[arg(long, env = "FUNKYGIBBON_FAULT_DROP_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_drop_rate: f64,
    /// Fault injection: seed of the fault decisions (same seed, same faults).
    #[arg(long, env = "FUNKYGIBBON_FAULT_SEED", default_value_t = 0)]
    pub fault_seed: u64,
    /// Fault injection: share (0-1) of sync requests refused with 401 AUTH_EXPIRED.
    #[arg(long, env = "FUNKYGIBBON_FAULT_AUTH_EXPIRED_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_auth_expired_rate: f64,
    /// Fault injection: share (0-1) of sync requests refused with 429 RATE_LIMITED.
    #[arg(long, env = "FUNKYGIBBON_FAULT_RATE_LIMITED_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_rate_limited_rate: f64,
    /// Fault injection: share (0-1) of sync answers cut off halfway through the body.
    #[arg(long, env = "FUNKYGIBBON_FAULT_RESET_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub fault_reset_rate: f64,
    /// Fault injection: send sync answers in pieces of this many bytes (0: off)…
    #[arg(long, env = "FUNKYGIBBON_FAULT_SLOW_BODY_BYTES", default_value_t = 0)]
    pub fault_slow_body_bytes: usize,
    /// …with this many milliseconds before each piece.
    #[arg(
        long,
        env = "FUNKYGIBBON_FAULT_SLOW_BODY_INTERVAL_MS",
        default_value_t = 100
    )]
    pub fault_slow_body_interval_ms: u64,
    /// Fault injection: milliseconds added to `server_time` in sync answers (negative: behind).
    #[arg(
        long,
        env = "FUNKYGIBBON_FAULT_CLOCK_SKEW_MS",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub fault_clock_skew_ms: i64,
    /// Seconds a signed request's timestamp may be from the server's clock (PROTOCOL §2.6).
    #[arg(long, env = "FUNKYGIBBON_HMAC_WINDOW_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub hmac_window_secs: u64,
    /// Nonces of signed requests remembered at most.
    #[arg(long, env = "FUNKYGIBBON_HMAC_REPLAY_CACHE", default_value_t = crate::signing::DEFAULT_REPLAY_CACHE,
          value_parser = parse_client_connections)]
    pub hmac_replay_cache: usize,
    /// Sync requests a second allowed per bearer token (0: no limit, the default).
    #[arg(long, env = "FUNKYGIBBON_SYNC_RATE_LIMIT", default_value_t = 0.0, value_parser = parse_per_second)]
    pub sync_rate_limit: f64,
    /// Sync requests one token may make at once before the rate applies.
    #[arg(long, env = "FUNKYGIBBON_SYNC_RATE_BURST", default_value_t = DEFAULT_SYNC_RATE_BURST,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub sync_rate_burst: u32,
    /// PEM certificate chain: serve HTTPS (needs --tls-key).
    #[arg(long, env = "FUNKYGIBBON_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FUNKYGIBBON_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Once listening, write the bound address (`127.0.0.1:41234`) and a newline to this file.
    #[arg(long, env = "FUNKYGIBBON_READY_FILE")]
    pub ready_file: Option<PathBuf>,
    /// Log format on stderr: `text` or `json` (one JSON object a line).
    #[arg(long, env = "FUNKYGIBBON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seconds a connection has to send a whole request head, counted from when it
    /// starts waiting for one (accepted, or the previous answer sent).
    #[arg(long, env = "FUNKYGIBBON_HEADER_READ_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,
    /// Seconds a request may take to send its whole body (then 408, connection closed).
    #[arg(long, env = "FUNKYGIBBON_BODY_READ_TIMEOUT_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_secs: u64,
    /// Seconds a connection may stay silent while waiting for a request (then closed).
    #[arg(long, env = "FUNKYGIBBON_IDLE_TIMEOUT_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Client connections served at once; further ones wait to be accepted.
    #[arg(long, env = "FUNKYGIBBON_MAX_CLIENT_CONNECTIONS",
          default_value_t = DEFAULT_MAX_CLIENT_CONNECTIONS,
          value_parser = parse_client_connections)]
    pub max_client_connections: usize,
    /// Sync requests handled at once; further ones wait their turn before their body is read.
    #[arg(long, env = "FUNKYGIBBON_MAX_CONCURRENT_SYNCS",
          default_value_t = DEFAULT_MAX_CONCURRENT_SYNCS,
          value_parser = parse_concurrent_syncs)]
    pub max_concurrent_syncs: usize,
    /// Milliseconds without a request in flight or a connection closing after which free
    /// memory is given back to the system (0: never).
    #[arg(long, env = "FUNKYGIBBON_IDLE_TRIM_MS", default_value_t = 1000)]
    pub idle_trim_ms: u64,
    /// Seconds between heartbeats on a quiet change-feed stream.
    #[arg(long, env = "FUNKYGIBBON_FEED_HEARTBEAT_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub feed_heartbeat_secs: u64,
    /// Commit notices a change-feed listener may fall behind before it is dropped.
    #[arg(long, env = "FUNKYGIBBON_FEED_BUFFER", default_value_t = DEFAULT_FEED_BUFFER,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub feed_buffer: usize,
    /// Rows a change-feed resume (`Last-Event-ID`) may be behind before `resync`.
    #[arg(long, env = "FUNKYGIBBON_FEED_REPLAY_LIMIT", default_value_t = DEFAULT_FEED_REPLAY_LIMIT)]
    pub feed_replay_limit: usize,
    /// Largest blob accepted, in bytes.
    #[arg(long, env = "FUNKYGIBBON_MAX_BLOB_SIZE", default_value_t = DEFAULT_MAX_BLOB_SIZE)]
    pub max_blob_size: u64,
    /// Prune superseded entity versions older than this (e.g. `30d`, `12h`, `90m`,
    /// `45s`, or plain seconds), periodically; off when not given.
    #[arg(long, env = "FUNKYGIBBON_HISTORY_HORIZON", value_parser = crate::horizon::parse_duration)]
    pub history_horizon: Option<Duration>,
    /// Milliseconds a sync's device bookkeeping (`last_seen`, `sync_count`) may be held
    /// before it is written, for every device at once (0: each sync writes its own).
    #[arg(long, env = "FUNKYGIBBON_SYNC_RECORD_DELAY_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub sync_record_delay_ms: u64,
    /// Verified bearer tokens cached, at most (0: each request checks its signature).
    #[arg(long, env = "FUNKYGIBBON_TOKEN_CACHE", default_value_t = crate::auth::DEFAULT_TOKEN_CACHE)]
    pub token_cache: usize,
    /// Device owners cached, at most (0: each `/sync/ack` reads the store).
    #[arg(long, env = "FUNKYGIBBON_DEVICE_OWNER_CACHE", default_value_t = crate::auth::DEFAULT_DEVICE_OWNER_CACHE)]
    pub device_owner_cache: usize,
    /// Pull pages read ahead and held at once, at most (0: no read-ahead).
    #[arg(long, env = "FUNKYGIBBON_READ_AHEAD_PAGES", default_value_t = crate::readahead::DEFAULT_PAGES)]
    pub read_ahead_pages: usize,
    /// Rows held in pages read ahead, about, in all.
    #[arg(long, env = "FUNKYGIBBON_READ_AHEAD_ROWS", default_value_t = crate::readahead::DEFAULT_ROWS)]
    pub read_ahead_rows: usize,
    /// Empty pages kept for quiet deltas, at most (0: none).
    #[arg(long, env = "FUNKYGIBBON_QUIET_PAGES", default_value_t = crate::readahead::DEFAULT_QUIET)]
    pub quiet_pages: usize,
    /// Ids the state digest's in-memory index holds, at most; past that the store's
    /// own digest answers (0: never kept).
    #[arg(long, env = "FUNKYGIBBON_DIGEST_INDEX_IDS", default_value_t = crate::digest::DEFAULT_MAX_IDS)]
    pub digest_index_ids: usize,
}

impl Cli {
    /// The server configuration these flags describe. Without an admin
    /// password or hash, a random password is generated and logged (warning).
    pub fn to_config(&self) -> ServerConfig {
        let admin_password = match (&self.admin_password, &self.admin_password_hash) {
            (_, Some(h)) => AdminPassword::Hash(h.clone()),
            (Some(p), None) => AdminPassword::Plain(p.clone()),
            (None, None) => {
                let bytes: [u8; 12] = rand::random();
                let password: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                tracing::warn!(%password, "no admin password given: generated one for this run");
                AdminPassword::Plain(password)
            }
        };
        let admin_password = Some(admin_password);
        let strategy = match self.conflict_strategy {
            ConflictStrategyArg::LastWriteWins => Strategy::LastWriteWins,
            ConflictStrategyArg::ThreeWayMerge => Strategy::ThreeWayMerge,
            ConflictStrategyArg::Manual => Strategy::Manual,
        };
        ServerConfig {
            database_url: self.database_url.clone(),
            store: None,
            page_size: self.page_size,
            body_limit: self.max_body_bytes,
            admin_password,
            jwt_secret: self.jwt_secret.clone(),
            admin_token_ttl: Duration::from_secs(self.token_ttl_secs),
            strict: self.strict,
            login_max_failures: self.login_max_failures,
            login_window: Duration::from_secs(self.login_window_secs),
            demo_data: self.demo_data,
            public_host: self.public_host.clone(),
            public_port: self.public_port,
            resolver: ResolverConfig::default().with_default_strategy(strategy),
            max_connections: self.max_connections,
            blob_dir: self.blob_dir.clone(),
            backup_dir: self.backup_dir.clone(),
            hmac_key: self.hmac_key.clone(),
            hmac_window: Duration::from_secs(self.hmac_window_secs),
            hmac_replay_cache: self.hmac_replay_cache,
            sync_rate_limit: self.sync_rate_limit,
            sync_rate_burst: self.sync_rate_burst,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            cors_origins: self
                .cors_origins
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            faults: FaultConfig {
                latency: Duration::from_millis(self.fault_latency_ms),
                error_rate: self.fault_error_rate,
                drop_rate: self.fault_drop_rate,
                seed: self.fault_seed,
                auth_expired_rate: self.fault_auth_expired_rate,
                rate_limited_rate: self.fault_rate_limited_rate,
                reset_rate: self.fault_reset_rate,
                slow_body_chunk: self.fault_slow_body_bytes,
                slow_body_interval: Duration::from_millis(self.fault_slow_body_interval_ms),
                clock_skew_ms: self.fault_clock_skew_ms,
            },
            header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
            body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_client_connections: self.max_client_connections,
            max_concurrent_syncs: self.max_concurrent_syncs,
            idle_trim: Duration::from_millis(self.idle_trim_ms),
            feed_heartbeat: Duration::from_secs(self.feed_heartbeat_secs),
            feed_buffer: self.feed_buffer,
            feed_replay_limit: self.feed_replay_limit,
            max_blob_size: self.max_blob_size,
            history_horizon: self.history_horizon,
            sync_record_delay: Duration::from_millis(self.sync_record_delay_ms),
            token_cache: self.token_cache,
            device_owner_cache: self.device_owner_cache,
            read_ahead_pages: self.read_ahead_pages,
            read_ahead_rows: self.read_ahead_rows,
            quiet_pages: self.quiet_pages,
            digest_index_ids: self.digest_index_ids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_documentation() {
        let cli = Cli::try_parse_from(["funkygibbon-mock"]).unwrap();
        let c = cli.to_config();
        assert_eq!(cli.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(c.database_url, "sqlite://funkygibbon.db");
        assert_eq!(c.page_size, 500);
        assert_eq!(c.body_limit, 16 * 1024 * 1024);
        assert!(!c.strict);
        assert_eq!(c.header_read_timeout, Duration::from_secs(30));
        assert_eq!(c.body_read_timeout, Duration::from_secs(60));
        assert_eq!(c.idle_timeout, Duration::from_secs(15));
        assert_eq!(c.max_client_connections, 512);
        assert!(matches!(c.admin_password, Some(AdminPassword::Plain(p)) if p.len() == 24));
    }

    #[test]
    fn flags_override() {
        let cli = Cli::try_parse_from([
            "funkygibbon-mock",
            "--page-size",
            "7",
            "--accept-unknown-types",
            "--strict",
            "--admin-password",
            "pw",
            "--conflict-strategy",
            "manual",
        ])
        .unwrap();
        let c = cli.to_config();
        assert_eq!(c.page_size, 7);
        assert!(c.strict);
        // The deprecated flag is still read, and changes nothing.
        let old = Cli::try_parse_from(["funkygibbon-mock", "--accept-unknown-types"]).unwrap();
        assert!(old.accept_unknown_types && !old.to_config().strict);
        assert_eq!(c.admin_password, Some(AdminPassword::Plain("pw".into())));
        assert_eq!(c.resolver.default_strategy, Strategy::Manual);
        assert!(Cli::try_parse_from(["funkygibbon-mock", "--page-size", "0"]).is_err());
        let faulty = Cli::try_parse_from([
            "funkygibbon-mock",
            "--fault-error-rate",
            "0.25",
            "--fault-drop-rate",
            "1",
            "--fault-latency-ms",
            "20",
            "--admin-password",
            "pw",
        ])
        .unwrap()
        .to_config();
        assert_eq!(faulty.faults.error_rate, 0.25);
        assert_eq!(faulty.faults.drop_rate, 1.0);
        assert_eq!(faulty.faults.latency, Duration::from_millis(20));
        assert!(Cli::try_parse_from(["funkygibbon-mock", "--fault-drop-rate", "1.5"]).is_err());
        let limits = Cli::try_parse_from([
            "funkygibbon-mock",
            "--header-read-timeout-secs",
            "3",
            "--body-read-timeout-secs",
            "4",
            "--idle-timeout-secs",
            "5",
            "--max-client-connections",
            "50",
            "--admin-password",
            "pw",
        ])
        .unwrap()
        .to_config();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(3));
        assert_eq!(limits.body_read_timeout, Duration::from_secs(4));
        assert_eq!(limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(limits.max_client_connections, 50);
        assert!(
            Cli::try_parse_from(["funkygibbon-mock", "--max-client-connections", "0"]).is_err()
        );
        assert!(Cli::try_parse_from(["funkygibbon-mock", "--idle-timeout-secs", "0"]).is_err());
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
