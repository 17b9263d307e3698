//! The Goodies graph store: async traits in domain types, with SQLite and PostgreSQL backends.
//!
//! - [`GraphRead`]: graph queries shared by both sides.
//! - [`ServerStore`]: what the server needs — apply a pushed batch in one
//!   transaction (deciding conflicts with `inbetweenies-conflict`), page the
//!   change feed without ever skipping a late commit, conflicts, blobs.
//! - [`ClientStore`]: what the client needs — local writes with an outbox,
//!   atomic pull-apply with the pull-guard, the persisted watermark.
//!
//! Open a store from a URL with [`open_server_store`] or [`open_client_store`]:
//! `sqlite://PATH` (created if missing), `sqlite::memory:`, or
//! `postgres://…` (feature `postgres`). Each backend embeds its migrations and
//! applies them on connect. No sqlx type or error crosses this crate's API.
//!
//! Every backend implements the behaviour set out in `SEMANTICS.md` beside this crate's manifest.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
#[cfg(any(feature = "postgres", feature = "sqlite", test))]
mod batch;
pub mod blob_upload;
mod detached;
pub mod error;
pub mod grants;
pub mod graph;
pub mod head;
pub mod horizon;
pub mod logic;
pub mod merkle;
pub mod notify;
mod open;
pub mod owners;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod seen;
pub mod snapshot;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod types;

pub use api::{ClientStore, GraphRead, ServerStore};
pub use blob_upload::{BlobState, BlobUploads};
pub use detached::Detached;
pub use error::{Result, StoreError};
pub use grants::{GuestGrantRecord, GuestGrants};
pub use head::{StoreHead, StoreHeadRead};
pub use notify::{CommitFeed, CommitGap, CommitNotice, CommitSubscription};
pub use open::{open_client_store, open_server_store};
pub use owners::DeviceOwners;
pub use snapshot::{
    RestoreMark, RestoreReport, StoreSnapshot, SyncEvent, SyncMetadata, SNAPSHOT_FORMAT,
};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use types::*;
