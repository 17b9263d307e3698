//! The history horizon: compaction of superseded versions, and what it leaves for
//! as-of reads and sync positions.
//!
//! [`ServerStore::compact_history`](crate::ServerStore::compact_history) with a
//! horizon `H` deletes, in one write transaction, every entity version that
//!
//! - is not the latest row of its id (the latest row is never pruned, tombstones
//!   included: a kept tombstone is what stops a client holding a stale copy from
//!   giving a deleted entity back), and
//! - stopped being the graph's version before `H`: it never became latest (a losing
//!   version) and was received before `H`, or a later version of its id became latest
//!   before `H`, and
//! - is not a side of a pending conflict (a manual resolution still needs both).
//!
//! So every version that was the latest of its id at some moment at or after `H` is
//! kept, and the graph as of any time at or after `H` reads exactly as before the
//! compaction; reads as of an earlier time are refused. The horizon only moves
//! forward. A cursor at or below [`HistoryHorizon::seq`] or a watermark before
//! [`HistoryHorizon::at`] was issued before history it may depend on was pruned: the
//! server answers it `INVALID_SYNC_STATE` and the client pulls in full.

use inbetweenies_proto::Timestamp;

use crate::types::Seq;

/// Where the last compaction left the history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryHorizon {
    /// History that stopped being current before this time may be pruned.
    pub at: Timestamp,
    /// The highest sequence number received before [`HistoryHorizon::at`].
    pub seq: Seq,
}

impl HistoryHorizon {
    /// Whether a cursor or watermark a client sends is behind the horizon.
    pub fn predates(&self, cursor: Option<Seq>, since: Option<Timestamp>) -> bool {
        cursor.is_some_and(|c| c <= self.seq) || since.is_some_and(|s| s < self.at)
    }

    /// Whether the graph as of `at` can still be read exactly.
    pub fn covers(&self, at: Timestamp) -> bool {
        at >= self.at
    }
}

/// What one compaction did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactionReport {
    /// Entity versions deleted.
    pub pruned_versions: u64,
    /// The horizon in force afterwards.
    pub horizon: HistoryHorizon,
}
