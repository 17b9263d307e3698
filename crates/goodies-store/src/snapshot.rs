//! Backups of a whole server store, restores, and the per-client sync metadata.
//!
//! # Snapshots
//!
//! [`ServerStore::export_snapshot`](crate::ServerStore::export_snapshot) reads every table
//! in ONE read snapshot (SQLite: one read transaction; PostgreSQL: one `REPEATABLE READ,
//! READ ONLY` transaction), so a snapshot holds each committed push entirely or not at
//! all. It holds every entity version and relationship with its sequence number and
//! receipt time, the conflicts, per-device sync state, blob metadata and bytes, the sync
//! metadata and the counters. The same [`StoreSnapshot`] restores on either backend; its
//! serialised form (JSON) is what the server writes to a backup file.
//!
//! # Restores
//!
//! [`ServerStore::restore_snapshot`](crate::ServerStore::restore_snapshot) replaces the
//! store's contents in ONE write transaction under the store's write lock (the lock every
//! push takes), so a push is entirely before or entirely after it. Sequence numbers and
//! receipt times never go backwards: the restore skips one sequence number as its *mark*,
//! then numbers the snapshot's rows after it in their original order, with receipt times
//! from the restore's own clock on. Every cursor issued before the restore is at or below
//! the mark and every watermark issued before it is before [`RestoreMark::at`]; the
//! server answers those with `INVALID_SYNC_STATE` so clients pull in full (PROTOCOL §9.2).
//! Conflict and sync-metadata ids keep their values; id counters never move back.

use inbetweenies_proto::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::{Result, StoreError};
use crate::types::Seq;

/// The `format` of snapshots this crate writes and reads.
pub const SNAPSHOT_FORMAT: &str = "goodies-store-snapshot/1";

/// A whole server store at one moment (see the module docs). Times are µs since the epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoreSnapshot {
    /// Always [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// The backend it was read from (`sqlite` or `postgres`).
    pub backend: String,
    /// When it was read (the store's clock).
    pub taken_at: i64,
    /// The highest sequence number assigned when it was read.
    pub last_seq: i64,
    /// The highest receipt time assigned when it was read.
    pub last_received_at: i64,
    /// Every entity version, in sequence order.
    pub entities: Vec<SnapshotEntity>,
    /// Every relationship, in sequence order.
    pub relationships: Vec<SnapshotRelationship>,
    /// Every conflict record, by id.
    pub conflicts: Vec<SnapshotConflict>,
    /// Per-device sync state.
    pub devices: Vec<SnapshotDevice>,
    /// Blob metadata rows.
    pub blobs: Vec<SnapshotBlob>,
    /// Blob bytes, one per address.
    pub blob_data: Vec<SnapshotBlobData>,
    /// The sync metadata rows, by id.
    pub sync_metadata: Vec<SyncMetadata>,
}

/// One entity version as stored (`content` and `parent_versions` are JSON text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SnapshotEntity {
    pub seq: i64,
    pub id: String,
    pub version: String,
    pub entity_type: String,
    pub name: String,
    pub content: String,
    pub source_type: String,
    pub user_id: String,
    pub parent_versions: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub received_at: i64,
    pub is_latest: bool,
    pub became_latest: bool,
    pub is_deleted: bool,
}

/// One relationship as stored (`properties` is JSON text).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SnapshotRelationship {
    pub seq: i64,
    pub id: String,
    pub from_entity_id: String,
    pub from_entity_version: String,
    pub to_entity_id: String,
    pub to_entity_version: String,
    pub relationship_type: String,
    pub properties: String,
    pub user_id: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub received_at: i64,
}

/// One conflict record as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SnapshotConflict {
    pub id: i64,
    pub entity_id: String,
    pub server_version: String,
    pub client_version: String,
    pub resolved_version: String,
    pub reason: String,
    pub strategy: String,
    pub status: String,
    pub device_id: String,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
}

/// One device's sync state as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SnapshotDevice {
    pub device_id: String,
    pub last_seen: Option<i64>,
    pub last_ack: Option<i64>,
    pub sync_count: i64,
}

/// One blob metadata row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SnapshotBlob {
    pub sha256: String,
    pub entity_id: String,
    pub content_type: String,
    pub size: i64,
    pub created_at: i64,
}

/// The bytes of one blob, hex-encoded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotBlobData {
    /// The blob's address.
    pub sha256: String,
    /// Lowercase hex of the bytes.
    pub hex: String,
}

impl SnapshotBlobData {
    /// The bytes, checked against the address.
    pub fn bytes(&self) -> Result<Vec<u8>> {
        use sha2::Digest as _;
        let bytes = hex::decode(&self.hex)
            .map_err(|e| StoreError::Invalid(format!("blob {}: bad hex: {e}", self.sha256)))?;
        if hex::encode(sha2::Sha256::digest(&bytes)) != self.sha256 {
            return Err(StoreError::Invalid(format!(
                "blob {}: bytes do not match their address",
                self.sha256
            )));
        }
        Ok(bytes)
    }
}

/// Where the last restore left the sequence and the clock (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreMark {
    /// The sequence number the restore skipped: every row it wrote is numbered after it,
    /// every cursor issued before it is at or below it.
    pub seq: Seq,
    /// The restore's receipt time: every watermark issued before it is earlier.
    pub at: Timestamp,
}

impl RestoreMark {
    /// Whether a cursor or watermark a client sends was issued before this restore.
    pub fn predates(&self, cursor: Option<Seq>, since: Option<Timestamp>) -> bool {
        cursor.is_some_and(|c| c <= self.seq) || since.is_some_and(|s| s < self.at)
    }
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreReport {
    /// Entity versions written.
    pub entities: u64,
    /// Relationships written.
    pub relationships: u64,
    /// The new restore mark.
    pub mark: RestoreMark,
}

/// One client's sync status, as `/api/v1/sync-metadata` keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct SyncMetadata {
    pub id: i64,
    pub client_id: String,
    pub server_url: String,
    /// Stored, never answered.
    pub auth_token: String,
    pub last_sync_time: Option<Timestamp>,
    pub last_sync_success: Option<Timestamp>,
    pub last_sync_error: Option<String>,
    pub sync_failures: i64,
    pub total_syncs: i64,
    pub total_conflicts: i64,
    pub sync_in_progress: bool,
    pub next_retry_time: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// An event a client reports about its sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    /// A sync started: sets `last_sync_time` and `sync_in_progress`.
    Start,
    /// A sync succeeded: `last_sync_success`, one more `total_syncs`, failures reset,
    /// no retry time, not in progress.
    Success,
    /// A sync failed: one more failure and `total_syncs`, the error, not in progress, and
    /// the retry time given or else [`default_retry`].
    Failure {
        /// What went wrong.
        error: String,
        /// When to retry; `None` for the default backoff.
        next_retry: Option<Timestamp>,
    },
}

/// The longest default backoff: 30 s · 2^10 (about 8.5 hours).
const MAX_BACKOFF_DOUBLINGS: i64 = 10;

/// The default retry time after a failure: `now` to the whole second plus 30 s · 2^(failures
/// before this one), at most 30 s · 2^10. (The reference adds the backoff to `now` with its
/// seconds zeroed, which can answer a time already past.)
pub fn default_retry(now: Timestamp, previous_failures: i64) -> Timestamp {
    let doublings = previous_failures.clamp(0, MAX_BACKOFF_DOUBLINGS);
    let micros = now.unix_micros();
    let whole = micros - micros.rem_euclid(1_000_000);
    let backoff = 30_000_000_i64 << doublings;
    Timestamp::from_unix_micros(whole.saturating_add(backoff)).unwrap_or(now)
}

/// The snapshot's rows renumbered for a restore, each list in the snapshot's order.
pub(crate) struct Renumbered {
    pub entities: Vec<SnapshotEntity>,
    pub relationships: Vec<SnapshotRelationship>,
    /// The last sequence number and receipt time used.
    pub last_seq: i64,
    pub last_received: i64,
}

/// The snapshot's rows numbered after `mark` (in their original sequence order), with
/// receipt times from `first_received` on, one µs apart.
pub(crate) fn renumber(snap: &StoreSnapshot, mark: i64, first_received: i64) -> Renumbered {
    let mut order: Vec<(i64, bool, usize)> = snap
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| (e.seq, true, i))
        .chain(
            snap.relationships
                .iter()
                .enumerate()
                .map(|(i, r)| (r.seq, false, i)),
        )
        .collect();
    order.sort_unstable();
    let mut entities = snap.entities.clone();
    let mut relationships = snap.relationships.clone();
    let (mut seq, mut received) = (mark, first_received - 1);
    for (_, is_entity, i) in order {
        seq += 1;
        received += 1;
        if is_entity {
            (entities[i].seq, entities[i].received_at) = (seq, received);
        } else {
            (relationships[i].seq, relationships[i].received_at) = (seq, received);
        }
    }
    Renumbered {
        entities,
        relationships,
        last_seq: seq,
        last_received: received.max(first_received),
    }
}

/// Checks what a restore relies on before anything is written.
pub(crate) fn check_snapshot(snap: &StoreSnapshot) -> Result<()> {
    if snap.format != SNAPSHOT_FORMAT {
        return Err(StoreError::Invalid(format!(
            "unknown snapshot format {:?} (expected {SNAPSHOT_FORMAT:?})",
            snap.format
        )));
    }
    let mut latest = std::collections::HashSet::new();
    for e in &snap.entities {
        if e.is_latest && !latest.insert(e.id.as_str()) {
            return Err(StoreError::Invalid(format!(
                "snapshot has two latest rows of {}",
                e.id
            )));
        }
    }
    let mut seqs = std::collections::HashSet::new();
    for s in snap
        .entities
        .iter()
        .map(|e| e.seq)
        .chain(snap.relationships.iter().map(|r| r.seq))
    {
        if !seqs.insert(s) {
            return Err(StoreError::Invalid(format!(
                "snapshot has sequence number {s} twice"
            )));
        }
    }
    Ok(())
}

/// The sync-metadata row after an event (`now` is the store's clock).
pub(crate) fn apply_event(row: &mut SyncMetadata, event: &SyncEvent, now: Timestamp) {
    match event {
        SyncEvent::Start => {
            row.last_sync_time = Some(now);
            row.sync_in_progress = true;
        }
        SyncEvent::Success => {
            row.last_sync_success = Some(now);
            row.sync_in_progress = false;
            row.sync_failures = 0;
            row.total_syncs += 1;
            row.next_retry_time = None;
        }
        SyncEvent::Failure { error, next_retry } => {
            row.next_retry_time =
                Some(next_retry.unwrap_or_else(|| default_retry(now, row.sync_failures)));
            row.last_sync_error = Some(error.clone());
            row.sync_in_progress = false;
            row.sync_failures += 1;
            row.total_syncs += 1;
        }
    }
    row.updated_at = now;
}

/// A sync-metadata row as the JSON object the restoring inserts read (times in µs).
pub(crate) fn sync_metadata_micros(m: &SyncMetadata) -> serde_json::Value {
    let us = |t: &Option<Timestamp>| t.map(|t| t.unix_micros());
    serde_json::json!({
        "id": m.id,
        "client_id": m.client_id,
        "server_url": m.server_url,
        "auth_token": m.auth_token,
        "last_sync_time": us(&m.last_sync_time),
        "last_sync_success": us(&m.last_sync_success),
        "last_sync_error": m.last_sync_error,
        "sync_failures": m.sync_failures,
        "total_syncs": m.total_syncs,
        "total_conflicts": m.total_conflicts,
        "sync_in_progress": m.sync_in_progress,
        "next_retry_time": us(&m.next_retry_time),
        "created_at": m.created_at.unix_micros(),
        "updated_at": m.updated_at.unix_micros(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_retry_doubles_from_thirty_seconds_and_is_capped() {
        let now = Timestamp::parse("2026-12-01T10:25:26.5Z").unwrap();
        let at = |n| default_retry(now, n).to_string();
        assert!(at(0).starts_with("2026-12-01T10:25:56"), "{}", at(0));
        assert!(at(1).starts_with("2026-12-01T10:26:26"), "{}", at(1));
        assert_eq!(default_retry(now, 10), default_retry(now, i64::MAX));
        assert!(default_retry(now, 0) > now);
    }

    #[test]
    fn restore_marks_reject_older_cursors_and_watermarks_only() {
        let at = Timestamp::parse("2026-12-01T10:00:00Z").unwrap();
        let mark = RestoreMark { seq: 10, at };
        assert!(mark.predates(Some(10), None));
        assert!(!mark.predates(Some(11), None));
        assert!(mark.predates(None, Some(at.saturating_add_micros(-1))));
        assert!(!mark.predates(None, Some(at)));
        assert!(!mark.predates(None, None));
    }
}
