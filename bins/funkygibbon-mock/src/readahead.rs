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
//!
//! **Quiet deltas.** The same holds for the commonest request of all, a delta from a
//! watermark with nothing new: the first empty page read at the store's head is kept per
//! query (filters and capabilities, without the watermark), with the watermark `X` it was
//! read from, its sequence number `S` and its digest. It was empty: no row of the query
//! numbered up to `S` was received after `X`. So a later request of the same query from
//! any watermark at or after `X`, while the store's highest committed sequence number
//! (read for that request, from the store, so a write by any server process counts) is
//! still `S`, has an empty page, with the digest at `S`, without a page read (of the
//! empty pages read at one head, the one from the earliest watermark is kept: it answers
//! the most requests; a client that keeps an older watermark while idle is answered too).
//! The answer's watermark is not the kept page's but the
//! one read with the head for this request (`goodies_store::StoreHead::now`, read under
//! the guard a page is read under, so every row numbered after `S` is received after
//! it): the answer's `server_time` is current, however long the store has been quiet,
//! so a client measures its clock skew from a real reading and an idle client's
//! watermark follows the clock (a compaction's horizon behind the clock does not catch
//! it). A page read ahead carries the watermark of the head read that hands it out, for
//! the same reasons. A restore of a backup raises that number too; the history horizon
//! is checked against the head read for the request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use goodies_store::{ChangePage, Seq, ServerStore, StoreError, StoreHead};
use inbetweenies_proto::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::snapshot::{PageSpec, Snapshot};
use crate::state::AppState;

/// At most this many pages are held at once by default (one per client paging right
/// now; `--read-ahead-pages`)…
pub const DEFAULT_PAGES: usize = 32;

/// …and at most about this many rows in all (`--read-ahead-rows`; at least two pages,
/// whatever their size, unless pages are off).
pub const DEFAULT_ROWS: usize = 20_000;

/// A page nobody collected within this time is dropped.
const KEEP: Duration = Duration::from_secs(10);

/// Empty pages kept for quiet deltas, at most, by default (one per query; the oldest
/// goes first; `--quiet-pages`).
pub const DEFAULT_QUIET: usize = 16;

/// The last empty page read at the store's head for one query (see the module doc).
struct Quiet {
    /// The query without its watermark.
    spec: PageSpec,
    /// The watermark the page was read from: nothing numbered up to `seq` was received
    /// after it, so a delta from it or any later watermark is empty at `seq`.
    since: Timestamp,
    /// The store's highest committed sequence number when the page was read.
    seq: Seq,
    /// The digest of the store at `seq`.
    digest: String,
}

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
    /// Empty pages at the head, for quiet deltas.
    quiet: Mutex<Vec<Quiet>>,
    /// Pages held at most (0: no read-ahead).
    max_pages: usize,
    /// Rows held at most, about.
    max_rows: usize,
    /// Empty pages kept for quiet deltas at most (0: none).
    max_quiet: usize,
}

impl Default for ReadAhead {
    fn default() -> Self {
        ReadAhead::new(DEFAULT_PAGES, DEFAULT_ROWS, DEFAULT_QUIET)
    }
}

/// A delta from a watermark, without a cursor, and the same query without the watermark.
fn quiet_key(spec: &PageSpec) -> Option<(Timestamp, PageSpec)> {
    let since = spec.query.since?;
    if spec.query.after_seq.is_some() {
        return None;
    }
    let mut key = spec.clone();
    key.query.since = None;
    Some((since, key))
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.slots.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("ReadAhead").field("pages", &n).finish()
    }
}

impl ReadAhead {
    /// Holding at most `pages` pages read ahead and about `rows` rows in all, and
    /// `quiet` empty pages for quiet deltas.
    pub(crate) fn new(pages: usize, rows: usize, quiet: usize) -> ReadAhead {
        ReadAhead {
            slots: Mutex::new(Vec::new()),
            finished: watch::channel(0).0,
            quiet: Mutex::new(Vec::new()),
            max_pages: pages,
            max_rows: rows,
            max_quiet: quiet,
        }
    }

    /// How many pages read ahead and empty pages for quiet deltas are held now.
    pub(crate) fn held(&self) -> (usize, usize) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner()).len();
        let quiet = self.quiet.lock().unwrap_or_else(|p| p.into_inner()).len();
        (slots, quiet)
    }

    /// Starts reading, for `device`, the page `spec` asks for.
    pub(crate) fn start(&self, app: &AppState, device: &str, spec: PageSpec) {
        if self.max_pages == 0 {
            return;
        }
        let app2 = app.clone();
        let s = spec.clone();
        let task = tokio::spawn(async move {
            let snap = crate::snapshot::read(&app2, &s).await;
            app2.read_ahead.finished.send_modify(|n| *n += 1);
            snap
        });
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|s| s.started.elapsed() < KEEP && !(s.device == device && s.spec == spec));
        let most =
            (self.max_rows / spec.query.limit.max(1)).clamp(2.min(self.max_pages), self.max_pages);
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
    /// read without error as an exact snapshot, and nothing has been written since; its
    /// head and watermark are the ones read to check that (after the page).
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
        match store.head().await {
            Ok(head) if head.seq == snap.seq => {
                // The head's watermark, read now, holds for the page as much as the
                // one read with it did (nothing was written in between), and is current.
                let mut snap = snap;
                snap.page.server_time = snap.page.server_time.max(head.now);
                snap.page.head = head;
                Some(snap)
            }
            Ok(head) => {
                tracing::debug!(
                    read_at = snap.seq,
                    now = head.seq,
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

    /// Keeps `snap` for quiet deltas when it is an exact, empty, last page of a delta
    /// from a watermark, unless a page of the same query at the same head, read from the
    /// same or an earlier watermark (so answering at least as many requests), is kept
    /// already.
    pub(crate) fn remember_empty(&self, spec: &PageSpec, snap: &Snapshot) {
        let Some((since, key)) = quiet_key(spec) else {
            return;
        };
        if !snap.is_exact() || !snap.page.records.is_empty() || snap.page.next_after_seq.is_some() {
            return;
        }
        if self.max_quiet == 0 {
            return;
        }
        let mut quiet = self.quiet.lock().unwrap_or_else(|p| p.into_inner());
        if quiet
            .iter()
            .any(|q| q.spec == key && q.seq == snap.seq && q.since <= since)
        {
            return;
        }
        quiet.retain(|q| q.spec != key);
        while quiet.len() >= self.max_quiet {
            quiet.remove(0);
        }
        quiet.push(Quiet {
            spec: key,
            since,
            seq: snap.seq,
            digest: snap.digest.clone(),
        });
    }

    /// The empty page kept for the query of `spec`, for a delta from its watermark or
    /// later, while the store's highest committed sequence number is still `head.seq`
    /// (`head` read from the store for this request). It carries the head's watermark,
    /// read for this request: the answer's `server_time` is current however long the
    /// store has been quiet.
    pub(crate) fn quiet_page(&self, spec: &PageSpec, head: &StoreHead) -> Option<Snapshot> {
        let (since, key) = quiet_key(spec)?;
        let quiet = self.quiet.lock().unwrap_or_else(|p| p.into_inner());
        let q = quiet
            .iter()
            .find(|q| q.spec == key && since >= q.since && q.seq == head.seq)?;
        Some(Snapshot {
            page: ChangePage {
                records: Vec::new(),
                next_after_seq: None,
                // Never behind the request's own watermark (were the clock stepped back).
                server_time: since.max(head.now),
                head: *head,
            },
            digest: q.digest.clone(),
            digest_seq: q.seq,
            seq: q.seq,
        })
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
        let read_before = app.store.head().await.expect("head").now;
        let snap = app
            .read_ahead
            .take(store, "c", &query())
            .await
            .expect("the page");
        let head = snap.page.head;
        assert_eq!(head.seq, snap.seq);
        // It carries the watermark read when it was handed out, not when it was read.
        assert!(snap.page.server_time >= read_before && snap.page.server_time == head.now);
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

    /// An empty page at the head is kept per query and answered again only to a request
    /// from its watermark or later while nothing was committed; never to another query,
    /// an earlier watermark or a cursor, and never after a write.
    #[tokio::test]
    async fn a_quiet_delta_is_answered_from_the_last_empty_page_only_while_nothing_was_written() {
        let app = app().await;
        push(&app, (0..3).map(|i| create(&format!("note {i}"))).collect()).await;
        let first = crate::snapshot::read(
            &app,
            &PageSpec {
                query: ChangeQuery {
                    limit: 10,
                    ..ChangeQuery::default()
                },
                caps: Capabilities::NONE,
            },
        )
        .await
        .expect("whole pull");
        let watermark = first.page.server_time;
        let spec = |since: Timestamp, caps: Capabilities| PageSpec {
            query: ChangeQuery {
                since: Some(since),
                limit: 10,
                ..ChangeQuery::default()
            },
            caps,
        };
        let delta = spec(watermark, Capabilities::NONE);
        let empty = crate::snapshot::read(&app, &delta).await.expect("delta");
        assert!(empty.page.records.is_empty() && empty.is_exact());
        app.read_ahead.remember_empty(&delta, &empty);
        let at = empty.page.server_time;
        let next = spec(at, Capabilities::NONE);
        let head = app.store.head().await.expect("head");
        assert_eq!(head.seq, empty.seq);
        let quiet = app
            .read_ahead
            .quiet_page(&next, &head)
            .expect("the same query from its watermark, nothing written");
        // The watermark of the head read for the request: current, not the kept page's.
        assert!(head.now > at);
        assert_eq!(quiet.page.server_time, head.now);
        assert_eq!(
            quiet.digest,
            app.store.state_digest().await.expect("digest")
        );
        assert!(quiet.page.records.is_empty() && quiet.page.next_after_seq.is_none());
        // A fresh read answers the same page.
        let fresh = crate::snapshot::read(&app, &next).await.expect("fresh");
        assert!(fresh.page.records.is_empty());
        assert_eq!(fresh.digest, quiet.digest);
        // Its own watermark and any later one get the kept page; an earlier one may
        // miss rows, and reads the feed.
        assert!(app.read_ahead.quiet_page(&delta, &head).is_some());
        let later = spec(at.saturating_add_micros(5), Capabilities::NONE);
        let kept = app.read_ahead.quiet_page(&later, &head).expect("later");
        assert_eq!(kept.page.server_time, head.now);
        let early = spec(watermark.saturating_add_micros(-1), Capabilities::NONE);
        assert!(app.read_ahead.quiet_page(&early, &head).is_none());
        // Another empty page at the same head, from a later watermark, does not replace it.
        let other = crate::snapshot::read(&app, &later)
            .await
            .expect("later read");
        assert!(other.page.records.is_empty());
        app.read_ahead.remember_empty(&later, &other);
        assert!(app.read_ahead.quiet_page(&delta, &head).is_some());
        // A later head read (nothing written) answers with its own, later watermark.
        let again = app.store.head().await.expect("head");
        let kept = app.read_ahead.quiet_page(&next, &again).expect("again");
        assert!(again.now > head.now && kept.page.server_time == again.now);
        // One from an earlier watermark, empty too, replaces it: it answers more requests.
        let earlier = crate::snapshot::read(&app, &early)
            .await
            .expect("earlier read");
        assert!(
            earlier.page.records.is_empty(),
            "{:?}",
            earlier.page.records
        );
        app.read_ahead.remember_empty(&early, &earlier);
        assert!(app.read_ahead.quiet_page(&early, &again).is_some());
        assert!(app.read_ahead.quiet_page(&delta, &again).is_some());
        let caps = Capabilities::declared(&[inbetweenies_proto::capability::RELATIONSHIP_ROWS]);
        assert!(app.read_ahead.quiet_page(&spec(at, caps), &head).is_none());
        let mut cursor = next.clone();
        cursor.query.after_seq = Some(empty.seq);
        assert!(app.read_ahead.quiet_page(&cursor, &head).is_none());
        // A write commits: its sequence number moves, and the next request reads afresh.
        push(&app, vec![create("later")]).await;
        let head = app.store.head().await.expect("head");
        assert_eq!(head.seq, empty.seq + 1);
        assert!(app.read_ahead.quiet_page(&next, &head).is_none());
        let fresh = crate::snapshot::read(&app, &next).await.expect("fresh");
        assert_eq!(fresh.page.records.len(), 1, "the write is in the page");
        // A page that is not empty is never kept.
        app.read_ahead.remember_empty(&next, &fresh);
        assert!(app.read_ahead.quiet_page(&next, &head).is_none());
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
