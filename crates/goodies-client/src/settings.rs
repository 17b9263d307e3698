//! Connection settings and sync records persisted in the local store's settings table.

use inbetweenies_proto::{ConflictInfo, Timestamp};
use serde::{Deserialize, Serialize};

/// Setting keys.
pub mod keys {
    /// The server's base URL.
    pub const SERVER_URL: &str = "server_url";
    /// The bearer token.
    pub const AUTH_TOKEN: &str = "auth_token";
    /// This client's id (a UUID made on first open; sent as `device_id`).
    pub const CLIENT_ID: &str = "client_id";
    /// The user edits are made by.
    pub const USER_ID: &str = "user_id";
    /// Where the local database lives.
    pub const DB_PATH: &str = "db_path";
    /// The last sync's summary (JSON).
    pub const LAST_SYNC: &str = "last_sync";
    /// The last digest comparison (JSON).
    pub const LAST_DIGEST_CHECK: &str = "last_digest_check";
    /// Conflicts recent syncs reported (JSON list).
    pub const RECENT_CONFLICTS: &str = "recent_conflicts";
}

/// How many decided conflicts are kept for [`crate::BlowingOffClient::recent_conflicts`].
pub const RECENT_CONFLICTS_KEPT: usize = 200;

/// The connection settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Settings {
    /// The server's base URL (e.g. `http://127.0.0.1:8000`).
    pub server_url: Option<String>,
    /// The bearer token.
    pub auth_token: Option<String>,
    /// This client's id, sent as `device_id`.
    pub client_id: String,
    /// The user edits are made by.
    pub user_id: String,
    /// Where the local database lives.
    pub db_path: String,
}

/// The outcome of comparing the server's `state_digest` with the local one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DigestCheck {
    /// When it was made (local clock).
    pub at: Timestamp,
    /// The server's digest.
    pub server: String,
    /// The local digest.
    pub local: String,
}

impl DigestCheck {
    /// Whether both sides agree.
    pub fn matches(&self) -> bool {
        self.server == self.local
    }
}

/// A short record of the last sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LastSync {
    /// When it finished (local clock).
    pub at: Timestamp,
    /// Whether it finished without errors.
    pub ok: bool,
    /// Entities pushed and pulled.
    pub synced_entities: u64,
    /// Conflicts the server decided.
    pub conflicts_resolved: u64,
    /// The errors, as messages.
    pub errors: Vec<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: u64,
}

/// A conflict a sync reported, with when it was received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RecordedConflict {
    /// When the sync received it (local clock).
    pub at: Timestamp,
    /// The server's decision.
    pub conflict: ConflictInfo,
}

/// Everything `status` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ClientStatus {
    /// The connection settings (the token is not included).
    pub server_url: Option<String>,
    /// Whether a token is stored.
    pub logged_in: bool,
    /// This client's id.
    pub client_id: String,
    /// The user edits are made by.
    pub user_id: String,
    /// Where the local database lives.
    pub db_path: String,
    /// Pending outbox entries (quarantined ones not counted).
    pub pending_changes: u64,
    /// Outbox entries the server refused, kept aside until an edit or a retry.
    pub quarantined_changes: u64,
    /// The watermark (the next `filters.since`).
    pub watermark: Option<Timestamp>,
    /// The cursor of an unfinished pull.
    pub cursor: Option<String>,
    /// The last sync.
    pub last_sync: Option<LastSync>,
    /// The last digest comparison.
    pub last_digest_check: Option<DigestCheck>,
}
