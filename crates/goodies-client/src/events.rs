//! Observers: typed change events as a stream (broadcast) and as callbacks.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};

use futures::{Stream, StreamExt};
use inbetweenies_proto::{ConflictInfo, Entity, EntityId};
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::sync::SyncSummary;

/// Which half of a sync a progress event counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncPhase {
    /// Sending local changes.
    Push,
    /// Receiving the server's changes.
    Pull,
}

/// Which way a blob's bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BlobDirection {
    /// To the server.
    Upload,
    /// From the server.
    Download,
}

/// Something that happened in the client.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ClientEvent {
    /// A local write made a new version (and queued it for the server).
    EntityChangedLocally(Entity),
    /// A sync made a server version the local latest.
    EntityChangedBySync {
        /// The entity.
        id: EntityId,
    },
    /// A sync received a server version of an id with a pending local edit; it was kept
    /// aside (the pull-guard) and the server decides when the edit is pushed.
    RemoteChangeDeferred {
        /// The entity.
        id: EntityId,
    },
    /// The server decided a conflict over one of our pushed changes.
    ConflictDecided(ConflictInfo),
    /// A sync recorded a conflict over an entity this device edited, with both versions'
    /// content: one decided on this device's push, or one decided on another device's push
    /// that replaced this device's edit (learnt when the winner was pulled).
    ConflictRecorded(Box<crate::settings::RecordedConflict>),
    /// A sync started.
    SyncStarted,
    /// Progress of a sync: items done of a total (unknown for pulls: the server does not
    /// say how many pages remain).
    Progress {
        /// Push or pull.
        phase: SyncPhase,
        /// Items done so far in this phase.
        done: u64,
        /// Items in this phase, when known.
        total: Option<u64>,
    },
    /// A sync finished (possibly with errors: see the summary).
    SyncFinished(SyncSummary),
    /// A sync failed before finishing.
    SyncFailed {
        /// What went wrong, with its causes.
        message: String,
    },
    /// After a quiet sync the server's state digest differs from the local one.
    DigestMismatch {
        /// The server's digest.
        server: String,
        /// The local digest.
        local: String,
    },
    /// This subscriber fell behind and missed this many events.
    Lagged(u64),
    /// The server refused a change as invalid (or too large even alone): it is kept in
    /// the outbox, quarantined, and the rest of the outbox goes on.
    ChangeQuarantined(crate::sync::QuarantinedChange),
    /// The mirror was repaired (full pull keeping pending changes), and how.
    Repaired(crate::sync::Repair),
    /// A request failed and is tried again after `delay`: the `attempt`-th retry of at
    /// most `max_attempts` (`reason`: what failed).
    Retrying {
        /// Which retry this is (1-based).
        attempt: u32,
        /// Retries allowed ([`crate::RetryPolicy::max_retries`]).
        max_attempts: u32,
        /// The wait before it (the backoff, or the server's `Retry-After`).
        delay: std::time::Duration,
        /// What failed.
        reason: String,
    },
    /// The server answered after not answering (`online: true`), or could not be reached
    /// even after every retry (`false`: the client works offline, and keeps trying).
    Connectivity {
        /// Whether the server answers.
        online: bool,
    },
    /// The server's clock (its `server_time`) is more than a second from ours:
    /// `offset_ms` = server minus ours; `0` when it is back within a second.
    ClockSkew {
        /// The server's clock minus ours, in milliseconds.
        offset_ms: i64,
    },
    /// The server said the token expired; it was exchanged for a fresh one and the sync
    /// tried again.
    AuthRefreshed,
    /// Background sync started a sync, and why.
    SyncTriggered(crate::live::SyncTrigger),
    /// The change feed was opened (`true`) or lost (`false`; it is reopened with backoff).
    ChangeFeed {
        /// Whether the feed is open.
        connected: bool,
    },
    /// Bytes of a blob transferred so far (the server's held offset counts as done).
    BlobProgress {
        /// The blob's address.
        sha256: String,
        /// Bytes the server holds (upload) or written locally (download).
        done: u64,
        /// The blob's size.
        total: u64,
        /// Upload or download.
        direction: BlobDirection,
    },
}

type Callback = Arc<dyn Fn(&ClientEvent) + Send + Sync + 'static>;

#[derive(Default)]
struct Callbacks {
    next_id: u64,
    map: BTreeMap<u64, Callback>,
}

/// Fan-out of client events to stream subscribers and callbacks (clones share both).
#[derive(Clone)]
pub(crate) struct EventHub {
    sender: broadcast::Sender<ClientEvent>,
    callbacks: Arc<Mutex<Callbacks>>,
}

impl fmt::Debug for EventHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventHub")
            .field("subscribers", &self.sender.receiver_count())
            .finish_non_exhaustive()
    }
}

impl EventHub {
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        EventHub {
            sender,
            callbacks: Arc::new(Mutex::new(Callbacks::default())),
        }
    }

    /// Whether anyone listens (events are only built when someone does).
    pub(crate) fn has_listeners(&self) -> bool {
        self.sender.receiver_count() > 0 || self.callbacks.lock().is_ok_and(|c| !c.map.is_empty())
    }

    pub(crate) fn emit(&self, event: ClientEvent) {
        let callbacks: Vec<Callback> = match self.callbacks.lock() {
            Ok(c) => c.map.values().cloned().collect(),
            Err(_) => Vec::new(),
        };
        for cb in &callbacks {
            cb(&event);
        }
        if self.sender.receiver_count() > 0 {
            // An error only means every receiver went away meanwhile.
            let _ = self.sender.send(event);
        }
    }

    pub(crate) fn subscribe(&self) -> impl Stream<Item = ClientEvent> + Send + Unpin + 'static {
        BroadcastStream::new(self.sender.subscribe()).map(|r| match r {
            Ok(e) => e,
            Err(BroadcastStreamRecvError::Lagged(n)) => ClientEvent::Lagged(n),
        })
    }

    pub(crate) fn register(
        &self,
        cb: impl Fn(&ClientEvent) + Send + Sync + 'static,
    ) -> SubscriptionHandle {
        let id = match self.callbacks.lock() {
            Ok(mut c) => {
                let id = c.next_id;
                c.next_id += 1;
                c.map.insert(id, Arc::new(cb));
                id
            }
            Err(_) => u64::MAX,
        };
        SubscriptionHandle {
            id,
            callbacks: Arc::downgrade(&self.callbacks),
        }
    }
}

/// Keeps a callback registered with [`crate::BlowingOffClient::on_change`]; dropping it
/// (or calling [`SubscriptionHandle::unsubscribe`]) unregisters the callback.
#[must_use = "dropping the handle unsubscribes at once"]
pub struct SubscriptionHandle {
    id: u64,
    callbacks: Weak<Mutex<Callbacks>>,
}

impl fmt::Debug for SubscriptionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionHandle")
            .field("id", &self.id)
            .finish()
    }
}

impl SubscriptionHandle {
    /// Unregisters the callback.
    pub fn unsubscribe(self) {
        drop(self);
    }
}

impl Drop for SubscriptionHandle {
    fn drop(&mut self) {
        if let Some(cbs) = self.callbacks.upgrade() {
            if let Ok(mut c) = cbs.lock() {
                c.map.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn slow_subscriber_sees_lagged() {
        let hub = EventHub::new(2);
        let mut s = hub.subscribe();
        for _ in 0..5 {
            hub.emit(ClientEvent::SyncStarted);
        }
        assert_eq!(s.next().await, Some(ClientEvent::Lagged(3)));
        assert_eq!(s.next().await, Some(ClientEvent::SyncStarted));
    }

    #[test]
    fn dropping_the_handle_unsubscribes() {
        let hub = EventHub::new(4);
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let h = hub.register(move |_| {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        assert!(hub.has_listeners());
        hub.emit(ClientEvent::SyncStarted);
        drop(h);
        hub.emit(ClientEvent::SyncStarted);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(!hub.has_listeners());
    }
}
