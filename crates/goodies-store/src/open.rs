//! Choosing and opening a backend from a database URL.

use std::sync::Arc;

use crate::api::{ClientStore, ServerStore};
use crate::detached::Detached;
use crate::error::{Result, StoreError};
use crate::types::StoreOptions;

/// What kind of database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Sqlite,
    Postgres,
}

/// `sqlite:…` and bare paths are SQLite; `postgres://`/`postgresql://` PostgreSQL;
/// any other `scheme://` is unsupported.
fn scheme(url: &str) -> Result<Scheme> {
    let s = url.trim();
    if s.starts_with("sqlite:") {
        return Ok(Scheme::Sqlite);
    }
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        return Ok(Scheme::Postgres);
    }
    if s.is_empty() || s.contains("://") {
        return Err(StoreError::UnsupportedUrl(url.to_owned()));
    }
    Ok(Scheme::Sqlite)
}

/// Opens the server's store: `sqlite://PATH` (created if missing), `sqlite::memory:`,
/// a bare SQLite path, or `postgres://…` (feature `postgres`). Migrations run on connect.
///
/// Every call on the returned store runs to completion on its own task, whatever
/// happens to the caller ([`crate::Detached`]).
pub async fn open_server_store(url: &str, opts: StoreOptions) -> Result<Arc<dyn ServerStore>> {
    let store = match scheme(url)? {
        Scheme::Sqlite => open_sqlite_server(url, opts).await,
        Scheme::Postgres => open_postgres(url, opts).await,
    }?;
    Ok(Arc::new(Detached(store)))
}

/// Opens a client's local store (SQLite only): a bare path, `sqlite://PATH` (created
/// if missing) or `sqlite::memory:`. Migrations run on connect. Every call on the
/// returned store runs to completion on its own task ([`crate::Detached`]).
pub async fn open_client_store(
    url_or_path: &str,
    opts: StoreOptions,
) -> Result<Arc<dyn ClientStore>> {
    let store = match scheme(url_or_path)? {
        Scheme::Sqlite => open_sqlite_client(url_or_path, opts).await,
        Scheme::Postgres => Err(StoreError::UnsupportedUrl(url_or_path.to_owned())),
    }?;
    Ok(Arc::new(Detached(store)))
}

#[cfg(feature = "sqlite")]
async fn open_sqlite_server(url: &str, opts: StoreOptions) -> Result<Arc<dyn ServerStore>> {
    crate::sqlite::SqliteStore::connect(url, opts)
        .await
        .map(|s| Arc::new(s) as Arc<dyn ServerStore>)
}

#[cfg(feature = "sqlite")]
async fn open_sqlite_client(url: &str, opts: StoreOptions) -> Result<Arc<dyn ClientStore>> {
    crate::sqlite::SqliteStore::connect(url, opts)
        .await
        .map(|s| Arc::new(s) as Arc<dyn ClientStore>)
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite_server(_url: &str, _opts: StoreOptions) -> Result<Arc<dyn ServerStore>> {
    Err(StoreError::BackendDisabled("sqlite"))
}

#[cfg(not(feature = "sqlite"))]
async fn open_sqlite_client(_url: &str, _opts: StoreOptions) -> Result<Arc<dyn ClientStore>> {
    Err(StoreError::BackendDisabled("sqlite"))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str, opts: StoreOptions) -> Result<Arc<dyn ServerStore>> {
    crate::postgres::PgStore::connect(url, opts)
        .await
        .map(|s| Arc::new(s) as Arc<dyn ServerStore>)
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_url: &str, _opts: StoreOptions) -> Result<Arc<dyn ServerStore>> {
    Err(StoreError::BackendDisabled("postgres"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(scheme("sqlite::memory:").ok(), Some(Scheme::Sqlite));
        assert_eq!(scheme("sqlite:///tmp/x.db").ok(), Some(Scheme::Sqlite));
        assert_eq!(scheme("data/client.db").ok(), Some(Scheme::Sqlite));
        assert_eq!(scheme("postgresql://u@h/db").ok(), Some(Scheme::Postgres));
        assert!(matches!(
            scheme("mysql://h/db"),
            Err(StoreError::UnsupportedUrl(_))
        ));
        assert!(matches!(scheme(""), Err(StoreError::UnsupportedUrl(_))));
    }
}
