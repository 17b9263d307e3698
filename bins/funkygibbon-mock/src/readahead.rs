//! Page read-ahead for paged pulls: after answering a full page of a pull, the server
//! reads the next page in the background, so the same device's request for it (same
//! filters, the returned cursor, nothing pushed) is answered without waiting for the store.
//!
//! What a page read ahead guarantees, to the request that collects it:
//!
//! - **Only its own device, only its own page.** A page is kept under the `device_id`
//!   of the request that was answered and the exact spec of the next page (the query and
//!   the capabilities the request declared, `crate::snapshot::PageSpec`); a request from
//!   any other device, with any other query, or declaring other capabilities (a page built
//!   for a client of the reference, without relationship rows, and one with them) never
//!   gets it.
//! - **Never stale.** The page is read as an exact snapshot (`crate::snapshot`): page,
//!   `server_time` and digest are the store's state at one sequence number. It is handed
//!   out only while the store's highest committed sequence number is still that number,
//!   read from the store (so a write by any server process on the same database counts).
//!   Once any write has committed since the read, the request reads afresh, so an
//!   answer never predates a write that was acknowledged before the request was sent.
//! - Handed out once; only to a request without changes; dropped after a few seconds
//!   when nobody collects it; at most a few pages (and about 20,000 rows) are held.
//!
//! Collecting a page therefore answers exactly what a fresh read at that moment would
//! have answered, one read of the sequence counter instead of the page read.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use goodies_store::{ServerStore, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::snapshot::{PageSpec, Snapshot};
use crate::state::AppState;

/// At most this many pages are held at once (one per client paging right now)…
const SLOTS: usize = 32;

/// …and at most about this many rows in all (at least two pages, whatever their size).
const ROWS: usize = 20_000;

/// A page nobody collected within this time is dropped.
const KEEP: Duration = Duration::from_secs(10);

struct Slot {
    device: String,
    spec: PageSpec,
    started: Instant,
    task: JoinHandle<Result<Snapshot, StoreError>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pages being read ahead.
pub(crate) struct ReadAhead {
    slots: Mutex<Vec<Slot>>,
    /// How many reads ahead have finished (successfully or not) since the server started.
    finished: watch::Sender<u64>,
}

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead {
            slots: Mutex::new(Vec::new()),
            finished: watch::channel(0).0,
        }
    }
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.slots.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("ReadAhead").field("pages", &n).finish()
    }
}

impl ReadAhead {
    /// Starts reading, for `device`, the page `spec` asks for.
    pub(crate) fn start(&self, app: &AppState, device: &str, spec: PageSpec) {
        let app2 = app.clone();
        let s = spec.clone();
        let task = tokio::spawn(async move {
            let snap = crate::snapshot::read(&app2, &s).await;
            app2.read_ahead.finished.send_modify(|n| *n += 1);
            snap
        });
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|s| s.started.elapsed() < KEEP && !(s.device == device && s.spec == spec));
        let most = (ROWS / spec.query.limit.max(1)).clamp(2, SLOTS);
        while slots.len() >= most {
            slots.remove(0);
        }
        slots.push(Slot {
            device: device.to_owned(),
            spec,
            started: Instant::now(),
            task,
        });
    }

    /// The page read ahead for exactly this device and spec, if there is one, it was
    /// read without error as an exact snapshot, and nothing has been written since.
    pub(crate) async fn take(
        &self,
        store: &dyn ServerStore,
        device: &str,
        spec: &PageSpec,
    ) -> Option<Snapshot> {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let at = slots
                .iter()
                .position(|s| s.device == device && s.spec == *spec)?;
            slots.swap_remove(at)
        };
        if slot.started.elapsed() >= KEEP {
            return None;
        }
        let mut slot = slot;
        let snap = match (&mut slot.task).await {
            Ok(Ok(snap)) => snap,
            Ok(Err(e)) => {
                tracing::debug!(error = %crate::error::error_chain(&e), "page read ahead failed; reading it again");
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "page read ahead did not finish; reading it again");
                return None;
            }
        };
        if !snap.is_exact() {
            return None;
        }
        match store.max_seq().await {
            Ok(now) if now == snap.seq => Some(snap),
            Ok(now) => {
                tracing::debug!(
                    read_at = snap.seq,
                    now,
                    "written since the page was read ahead; reading it again"
                );
                None
            }
            Err(e) => {
                tracing::debug!(error = %crate::error::error_chain(&e), "cannot check the page read ahead; reading it again");
                None
            }
        }
    }

    /// Waits until at least `n` reads ahead have finished since the server started.
    pub(crate) async fn wait_for_finished(&self, n: u64) {
        let mut rx = self.finished.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }
}

#[cfg(test)]
mod tests {
    use goodies_store::{ChangeQuery, ChangeRecord, PushBatch};
    use inbetweenies_proto::{
        ChangeType, EntityChange, EntityId, EntityType, SourceType, SyncChange, Version,
    };

    use super::*;
    use crate::config::ServerConfig;
    use crate::snapshot::Capabilities;

    async fn app() -> AppState {
        let (_router, handle) = crate::build_app(
            ServerConfig::new("sqlite::memory:")
                .with_admin_password("pw")
                .with_jwt_secret("secret"),
        )
        .await
        .expect("app");
        handle.state
    }

    fn create(name: &str) -> SyncChange {
        SyncChange {
            change_type: ChangeType::Create,
            entity: Some(EntityChange {
                id: EntityId::new_random(),
                version: Version::now("tester"),
                entity_type: EntityType::Note,
                name: name.to_owned(),
                content: Default::default(),
                source_type: SourceType::Manual,
                user_id: "tester".into(),
                parent_versions: vec![],
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: vec![],
        }
    }

    async fn push(app: &AppState, changes: Vec<SyncChange>) {
        app.store
            .apply_push(PushBatch {
                device_id: "writer".into(),
                user_id: "tester".into(),
                changes,
            })
            .await
            .expect("push");
    }

    fn query() -> PageSpec {
        PageSpec {
            query: ChangeQuery {
                after_seq: Some(2),
                limit: 3,
                ..ChangeQuery::default()
            },
            caps: Capabilities::declared(&[inbetweenies_proto::capability::RELATIONSHIP_ROWS]),
        }
    }

    /// A page read ahead goes to the first request of its device with exactly its spec,
    /// once; never to another device asking the same, never to another query, never to a
    /// request that declared other capabilities (even with the very same query).
    #[tokio::test]
    async fn a_page_read_ahead_is_handed_out_once_to_its_device_and_query() {
        let app = app().await;
        push(
            &app,
            (0..10).map(|i| create(&format!("note {i}"))).collect(),
        )
        .await;
        app.read_ahead.start(&app, "c", query());
        let store = app.store.as_ref();
        let other = PageSpec {
            query: ChangeQuery {
                limit: 4,
                ..query().query
            },
            ..query()
        };
        assert!(
            app.read_ahead.take(store, "c", &other).await.is_none(),
            "another query"
        );
        let legacy = PageSpec {
            caps: Capabilities::NONE,
            ..query()
        };
        assert!(
            app.read_ahead.take(store, "c", &legacy).await.is_none(),
            "the same query without the capability"
        );
        assert!(
            app.read_ahead.take(store, "b", &query()).await.is_none(),
            "another device with the same query"
        );
        let snap = app
            .read_ahead
            .take(store, "c", &query())
            .await
            .expect("the page");
        let seqs: Vec<u64> = snap.page.records.iter().map(ChangeRecord::seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(snap.page.next_after_seq, Some(5));
        assert_eq!(snap.seq, 10);
        assert_eq!(snap.digest, app.store.state_digest().await.expect("digest"));
        assert!(
            app.read_ahead.take(store, "c", &query()).await.is_none(),
            "handed out once"
        );
    }

    /// A page read before a write committed is never handed out after it, even to its
    /// own device: the request reads afresh.
    #[tokio::test]
    async fn a_page_read_ahead_is_refused_once_a_write_committed_after_its_read() {
        let app = app().await;
        push(
            &app,
            (0..10).map(|i| create(&format!("note {i}"))).collect(),
        )
        .await;
        app.read_ahead.start(&app, "c", query());
        app.read_ahead.wait_for_finished(1).await;
        push(&app, vec![create("later")]).await;
        assert!(
            app.read_ahead
                .take(app.store.as_ref(), "c", &query())
                .await
                .is_none(),
            "read before the write"
        );
        // Read again after the write: handed out, with the digest of the state it saw.
        app.read_ahead.start(&app, "c", query());
        let snap = app
            .read_ahead
            .take(app.store.as_ref(), "c", &query())
            .await
            .expect("the page read after the write");
        assert_eq!(snap.seq, 11);
        assert_eq!(snap.digest, app.store.state_digest().await.expect("digest"));
    }
}
