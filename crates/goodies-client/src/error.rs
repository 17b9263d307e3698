//! Errors of the client library: what a call can fail with, and what a sync reports.

use std::sync::Arc;
use std::time::Duration;

use goodies_store::StoreError;
use inbetweenies_proto::{EntityId, ErrorCode, RelationshipId};

/// A boxed cause, kept as an error's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A request that never got an HTTP answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The URL cannot be used.
    #[error("invalid url {0:?}")]
    InvalidUrl(String),
    /// The transport cannot do what the request needs (e.g. TLS).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// No connection could be made.
    #[error("cannot connect to the server")]
    Connect(#[source] BoxError),
    /// No complete answer within the request timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The connection failed while the request or answer was in flight.
    #[error("http exchange failed")]
    Http(#[source] BoxError),
    /// TLS with the server failed: its certificate is not trusted or not the pinned
    /// one, or it does not speak TLS. Not retried: it will not pass by itself.
    #[error("TLS with the server failed: {0}")]
    Tls(String),
    /// The answer's signature (PROTOCOL §2.6) is missing or wrong. Not retried.
    #[error("message signature: {0}")]
    Signature(String),
}

impl TransportError {
    /// Wraps any error as a failed exchange.
    pub fn http(e: impl Into<BoxError>) -> Self {
        TransportError::Http(e.into())
    }

    /// Whether retrying cannot help (an untrusted server, a wrong signature): the
    /// request fails at once instead of after the retries.
    pub fn is_permanent(&self) -> bool {
        matches!(self, TransportError::Tls(_) | TransportError::Signature(_))
    }
}

/// What a client call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The local store failed.
    #[error("local store error")]
    Store(#[from] StoreError),
    /// No server is configured yet.
    #[error("not connected: no server url is set (run connect first)")]
    NotConnected,
    /// The server says the bearer token has expired.
    #[error("the auth token has expired; log in again")]
    AuthExpired,
    /// The server refused the credentials.
    #[error("the server refused the credentials: {message}")]
    Unauthorized {
        /// The server's message.
        message: String,
    },
    /// The server could not be reached, even after retrying.
    #[error("server unreachable after {attempts} attempt(s)")]
    Unreachable {
        /// Requests tried.
        attempts: u32,
        /// The last failure.
        #[source]
        source: TransportError,
    },
    /// The server is not the one configured: its TLS certificate is not trusted, or its
    /// answers are not signed with the shared key. Not retried.
    #[error("the server cannot be trusted (not retried)")]
    Untrusted(#[source] TransportError),
    /// The server answered with an error status.
    #[error("server answered {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The error body's code, when it had one.
        code: Option<ErrorCode>,
        /// The error body's message (or the raw body).
        message: String,
    },
    /// The server's answer could not be read.
    #[error("invalid response from the server")]
    InvalidResponse(#[source] BoxError),
    /// The named thing does not exist locally.
    #[error("not found: {0}")]
    NotFound(String),
    /// An argument is not acceptable.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A local file (a blob's source or destination) could not be read or written.
    #[error("file {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// Downloaded blob bytes do not hash to the blob's address: nothing was kept.
    #[error("blob {expected}: the downloaded bytes hash to {actual}; nothing was kept")]
    BlobChecksumMismatch {
        /// The address asked for.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
}

impl ClientError {
    /// Whether the error means the user must connect or log in again.
    pub fn needs_login(&self) -> bool {
        matches!(
            self,
            ClientError::NotConnected | ClientError::AuthExpired | ClientError::Unauthorized { .. }
        )
    }

    /// Whether the error means the server could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }
}

/// A problem a sync ran into and reported in [`crate::SyncResult::errors`].
/// Nothing that was pending is lost: every unacknowledged change stays queued.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The server could not be reached, even after retrying.
    #[error("server unreachable after {attempts} attempt(s)")]
    Unreachable {
        /// Requests tried.
        attempts: u32,
        /// The last failure.
        #[source]
        source: Arc<TransportError>,
    },
    /// The server kept answering with an error status.
    #[error("server answered {status} after {attempts} attempt(s): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The error body's code, when it had one.
        code: Option<ErrorCode>,
        /// The error body's message (or the raw body).
        message: String,
        /// Requests tried.
        attempts: u32,
    },
    /// The server's answer could not be read.
    #[error("invalid response from the server")]
    InvalidResponse(#[source] Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// The server did not acknowledge some changes; they stay queued and are sent again.
    #[error(
        "{} change(s) not acknowledged by the server; they stay queued",
        .entity_ids.len() + .relationship_ids.len()
    )]
    NotAcknowledged {
        /// Entity ids sent but not named in `applied`.
        entity_ids: Vec<EntityId>,
        /// Relationship ids sent but not named in `applied_relationships`.
        relationship_ids: Vec<RelationshipId>,
    },
}

impl SyncError {
    /// Whether the error means the server could not be reached.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, SyncError::Unreachable { .. })
    }
}
