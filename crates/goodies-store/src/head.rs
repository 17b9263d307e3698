//! The store's head in one read: the highest committed sequence number, the restore mark,
//! the history horizon and a watermark for that sequence number. A sync answer checks its
//! position against the first three before and after reading its page, and may hand out
//! the watermark with an answer that reads nothing newer (PROTOCOL §6.3).

use std::sync::Arc;

use async_trait::async_trait;

use crate::detached::{run, Detached};
use crate::error::{Result, StoreError};
use crate::horizon::HistoryHorizon;
use crate::snapshot::RestoreMark;
use crate::types::Seq;
use inbetweenies_proto::Timestamp;

/// What [`StoreHeadRead::head`] reads, as of one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreHead {
    /// The highest sequence number assigned so far (as `ServerStore::max_seq`).
    pub seq: Seq,
    /// The store's clock, read with `seq` while no write was between taking its
    /// sequence numbers and committing them (the same guard a change page is read
    /// under), less one microsecond: every row numbered after `seq` is received after
    /// this time. So it is a watermark for an answer that holds everything up to `seq`,
    /// and, read for each request, it is current.
    pub now: Timestamp,
    /// The mark of the last restore (as `ServerStore::restore_mark`).
    pub restore_mark: Option<RestoreMark>,
    /// The horizon of the last compaction (as `ServerStore::history_horizon`).
    pub horizon: Option<HistoryHorizon>,
}

/// Reads the head of a server store.
#[async_trait]
pub trait StoreHeadRead: Send + Sync {
    /// The sequence number, restore mark, history horizon and watermark, as of one moment.
    async fn head(&self) -> Result<StoreHead>;

    /// The head as [`head`](Self::head) reads it, read at once on the calling thread when
    /// that needs no waiting: no write holds or waits for the store's guard, and the
    /// database answers without a lock wait. `None` when it cannot (the caller then calls
    /// `head`). Nothing is awaited, so it cannot be cancelled half-way.
    ///
    /// A backend without such a read keeps the default, `None`.
    fn head_now(&self) -> Option<Result<StoreHead>> {
        None
    }

    /// Whether [`head`](Self::head) leaves nothing half-done when its future is dropped
    /// at any `.await`: no transaction left open, no lock held, no turn left unpassed,
    /// and the next read as current as ever. [`Detached`] then runs it on the caller's
    /// task, without handing it to a task of its own.
    ///
    /// A backend keeps the default, `false`, unless a test drops its reads half-way.
    fn head_cancel_safe(&self) -> bool {
        false
    }
}

/// Decodes the meta row's columns (0 means none, as the backends store them).
pub(crate) fn head_from(
    seq: i64,
    restored_seq: i64,
    restored_at: i64,
    horizon_at: i64,
    horizon_seq: i64,
    now: Timestamp,
) -> Result<StoreHead> {
    let micros = |us: i64| {
        inbetweenies_proto::Timestamp::from_unix_micros(us)
            .map_err(|e| StoreError::Corrupt(format!("bad time {us} in the store's meta row: {e}")))
    };
    let seq_of = |v: i64| {
        Seq::try_from(v).map_err(|_| StoreError::Corrupt(format!("bad sequence number {v}")))
    };
    Ok(StoreHead {
        seq: seq_of(seq)?,
        now,
        restore_mark: match restored_seq {
            0 => None,
            s => Some(RestoreMark {
                seq: seq_of(s)?,
                at: micros(restored_at)?,
            }),
        },
        horizon: match horizon_at {
            0 => None,
            at => Some(HistoryHorizon {
                at: micros(at)?,
                seq: seq_of(horizon_seq)?,
            }),
        },
    })
}

#[async_trait]
impl<S: StoreHeadRead + ?Sized + 'static> StoreHeadRead for Detached<S> {
    async fn head(&self) -> Result<StoreHead> {
        // A read that leaves nothing half-done when dropped runs on the caller's task
        // (and may be shared with the callers asking with it); so does one on this
        // thread with nothing awaited: no task to hand it to (that hand-off is most of a
        // caught-up client's sync).
        if self.0.head_cancel_safe() {
            return self.0.head().await;
        }
        if let Some(head) = self.0.head_now() {
            return head;
        }
        let s: Arc<S> = self.0.clone();
        run(async move { s.head().await }).await
    }

    fn head_now(&self) -> Option<Result<StoreHead>> {
        self.0.head_now()
    }

    fn head_cancel_safe(&self) -> bool {
        self.0.head_cancel_safe()
    }
}
