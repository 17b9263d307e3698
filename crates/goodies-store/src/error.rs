//! The store's error type. No backend (sqlx) type appears in it; causes are chained as sources.

/// A boxed cause from a backend, kept as the error's source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in a store operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL names no backend this crate knows.
    #[error(
        "unsupported database url {0:?}: expected sqlite://PATH, sqlite::memory: or postgres://…"
    )]
    UnsupportedUrl(String),
    /// The URL names a backend that was not compiled in.
    #[error("the {0} backend is not compiled in (enable the `{0}` cargo feature)")]
    BackendDisabled(&'static str),
    /// Connecting to the database failed.
    #[error("cannot connect to the database")]
    Connect(#[source] BoxError),
    /// Applying the schema migrations failed.
    #[error("cannot migrate the database schema")]
    Migration(#[source] BoxError),
    /// A query failed.
    #[error("database error")]
    Database(#[source] BoxError),
    /// Reading or writing blob bytes failed.
    #[error("blob storage error")]
    Io(#[from] std::io::Error),
    /// A row in the database cannot be read back into a domain type.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is not valid for the current state (e.g. resolving a conflict twice).
    #[error("invalid operation: {0}")]
    Invalid(String),
    /// The operation lost a race or contradicts what another one started (a blob append
    /// at an offset the store no longer holds, an upload declared with another size).
    #[error("conflict: {0}")]
    Conflict(String),
}

impl StoreError {
    /// Wraps a backend error as [`StoreError::Database`].
    pub fn database(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        StoreError::Database(Box::new(e))
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
