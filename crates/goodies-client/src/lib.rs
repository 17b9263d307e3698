//! Blowing-Off as a library: an offline-first client of The Goodies knowledge graph.
//!
//! A [`BlowingOffClient`] keeps a local SQLite mirror of the graph. Every read and write
//! works with no server at all; each write is a new immutable version plus an outbox entry,
//! in one transaction. [`BlowingOffClient::sync`] pushes the outbox and pulls the server's
//! changes over the Inbetweenies protocol (`POST /api/v1/sync/`), page by page, each page
//! applied atomically, and reports what happened in a [`SyncResult`].
//!
//! - Typed API in the seeds' vocabulary: [`Home`] (the house), [`Room`], [`Device`] (its
//!   state is its content), `update_device_state`, `update_characteristic`.
//! - Graph API: entities and relationships of any type, search, neighbours, history.
//! - Settings (`server_url`, `auth_token`, `client_id`, `user_id`, `db_path`) persisted in
//!   the mirror; [`BlowingOffClient::login`] obtains a token with a password.
//! - Observers: [`BlowingOffClient::observe_changes`] (a stream of [`ClientEvent`]) and
//!   [`BlowingOffClient::on_change`] (callbacks); background sync with a handle.
//! - The HTTP transport is the [`Transport`] trait; [`HyperTransport`] is the default.
//!
//! Rules the engine keeps (see `docs/PROTOCOL.md`): an outbox entry is dropped only when
//! the server names its id; the watermark is the server's `server_time`, stored with the
//! page that completes a pull; a pulled version never overwrites an id with a pending local
//! edit (the pull-guard); conflicts are the server's to decide, and each is reported.
//!
//! ```no_run
//! # async fn demo() -> Result<(), goodies_client::ClientError> {
//! use goodies_client::{BlowingOffClient, ClientEvent};
//! use futures::StreamExt;
//!
//! let client = BlowingOffClient::open("home.db").await?;
//! let mut events = client.observe_changes();
//! client.connect("http://127.0.0.1:8000", Some("token")).await?;
//! let result = client.sync().await?;
//! println!("synced {} entities, {} errors", result.synced_entities, result.errors.len());
//! if let Some(ClientEvent::SyncStarted) = events.next().await {
//!     // every sync announces itself, then reports progress and how it finished
//! }
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod account;
mod background;
mod blobs;
mod client;
mod config;
mod conflicts;
mod digest;
mod error;
mod events;
mod http;
mod live;
pub mod merkle;
mod model;
mod record;
mod repair;
mod rooms;
mod selection;
mod settings;
mod signals;
mod signing;
mod sync;
mod tls;
mod transfer;
mod transport;

pub use account::{
    token_expires_at, token_refresh_due, TokenInfo, ME_PATH, REFRESH_PATH, REFRESH_WITHIN_SECS,
};
pub use background::{BackgroundStats, BackgroundSync};
pub use blobs::{
    content_type_for, hash_file, is_sha256, Attached, BlobRef, BlobUploadReport, UploadStats,
    BLOBS_PATH, PENDING_BLOB_UPLOADS_KEY,
};
pub use client::{json_object, BlowingOffClient, ClientBuilder, LoginInfo, LOGIN_PATH};
pub use config::{ClientConfig, RetryPolicy};
pub use conflicts::{QueuedConflict, Resolution, AUTHORED_KEPT, CONFLICTS_PATH};
pub use error::{BoxError, ClientError, SyncError, TransportError};
pub use events::{BlobDirection, ClientEvent, SubscriptionHandle, SyncPhase};
pub use live::{
    reconnect_delay, PollSchedule, SyncTrigger, EVENTS_PATH, FEED_SILENCE, MAX_POLL, MIN_POLL,
    RECONNECT_DELAYS,
};
pub use model::{
    Device, Home, Room, DEVICE_TYPE_KEY, FLOOR_KEY, LEGACY_DEVICE_TYPE_KEY, MANUFACTURER_KEY,
};
pub use repair::{RepairMethod, ENTITY_PATH, MAX_MERKLE_REFETCH, MERKLE_PATH};
pub use rooms::ROOM_TYPE_KEY;
pub use selection::{Selection, SELECTION_KEY};
pub use settings::{
    keys, normalize_server_url, ClientStatus, ConflictOrigin, ConflictOutcome, DigestCheck,
    GzipRefusals, LastSync, RecordedConflict, Settings, GZIP_REFUSALS_KEPT, GZIP_RETRY_AFTER_DAYS,
};
pub use signals::{LinkState, CLOCK_SKEW_THRESHOLD_MS, LINK_STATE_KEY, MAX_RETRY_AFTER};
pub use signing::{SigningKey, SigningTransport, NONCE_HEADER, TIMESTAMP_HEADER};
pub use sync::{
    error_chain, DigestMismatch, QuarantinedChange, Repair, RepairReason, SyncResult, SyncSummary,
    SYNC_PATH,
};
pub use tls::{certificate_sha256, TlsConfig};
pub use transfer::{GraphExport, ImportReport, GRAPH_FORMAT, GRAPH_FORMAT_VERSION};
pub use transport::{
    ByteStream, HttpRequest, HttpResponse, HttpStream, HyperTransport, Method, Transport,
};

/// The store types the client API takes and returns.
pub use goodies_store::{
    Direction, EntityQuery, GraphStats, Neighbour, RelationshipQuery, StoreError, StoredEntity,
};
/// The protocol's domain and wire types.
pub use inbetweenies_proto as proto;
pub use inbetweenies_proto::{
    ConflictInfo, Entity, EntityId, EntityType, JsonObject, Relationship, RelationshipId,
    RelationshipType, SourceType, Timestamp, Version,
};
