//! `GET /api/v1/sync/events`: the change feed as Server-Sent Events (PROTOCOL §13).
//!
//! One hub per server subscribes to the store's commit notices
//! (`goodies_store::CommitFeed`: in-process on SQLite, LISTEN/NOTIFY on PostgreSQL, so
//! writes through any server process on a shared database are announced) and fans them
//! out on a bounded `tokio::sync::broadcast` channel of `feed_buffer` notices. Writers
//! never wait for listeners: a listener that falls more than `feed_buffer` notices
//! behind (its socket buffers full, its client not reading) is sent `resync` and its
//! stream ends, and nobody else notices.
//!
//! Heartbeats are SSE comments sent after `feed_heartbeat` without an event, and at least
//! twice per connection idle timeout so that a quiet stream is never closed as idle.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::Stream;
use goodies_store::{
    ChangeQuery, ChangeRecord, CommitGap, CommitNotice, Seq, ServerStore, StoreError,
};
use inbetweenies_proto::ErrorCode;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::auth::Caller;
use crate::conn::ServerClosing;
use crate::error::ApiError;
use crate::state::AppState;

/// The heartbeat comment's text.
const HEARTBEAT: &str = "heartbeat";

/// What the hub hands each listener.
#[derive(Clone, Debug)]
enum HubItem {
    /// A commit.
    Notice(Arc<CommitNotice>),
    /// The hub's own subscription to the store missed notices: every listener resyncs.
    Gap,
}

/// The per-server fan-out of commit notices (see the module doc).
#[derive(Debug)]
pub(crate) struct FeedHub {
    capacity: usize,
    running: tokio::sync::Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    tx: broadcast::Sender<HubItem>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FeedHub {
    /// A hub whose listeners may fall `capacity` notices behind (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        FeedHub {
            capacity: capacity.max(1),
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// A listener's receiver; the hub subscribes to the store first if it has not yet
    /// (or if its subscription ended). Notices of commits after this returns reach it.
    async fn subscribe(
        &self,
        store: &Arc<dyn ServerStore>,
    ) -> Result<broadcast::Receiver<HubItem>, StoreError> {
        let mut slot = self.running.lock().await;
        if let Some(r) = slot.as_ref().filter(|r| !r.task.is_finished()) {
            return Ok(r.tx.subscribe());
        }
        let mut source = store.subscribe_commits().await?;
        let (tx, rx) = broadcast::channel(self.capacity);
        let out = tx.clone();
        let task = tokio::spawn(async move {
            loop {
                match source.recv().await {
                    Ok(n) => {
                        let _ = out.send(HubItem::Notice(Arc::new(n)));
                    }
                    Err(CommitGap::Lagged(_)) => {
                        let _ = out.send(HubItem::Gap);
                    }
                    Err(_) => {
                        let _ = out.send(HubItem::Gap);
                        return;
                    }
                }
            }
        });
        *slot = Some(Running { tx, task });
        Ok(rx)
    }
}

/// Query parameters (for clients that cannot set `Last-Event-ID` on their first request).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct EventsQuery {
    last_event_id: Option<String>,
}

/// Why a `resync` event was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resync {
    /// The listener fell too far behind; the stream ends.
    Lagged,
    /// `Last-Event-ID` is further back than the server replays.
    TooOld,
    /// `Last-Event-ID` is past the end of the feed (another store, or a restore).
    UnknownCursor,
    /// The store was restored from a backup after that position.
    Restored,
    /// Notices were lost between the store and this server (a lost database connection).
    Interrupted,
}

impl Resync {
    fn as_str(self) -> &'static str {
        match self {
            Resync::Lagged => "lagged",
            Resync::TooOld => "too_old",
            Resync::UnknownCursor => "unknown_cursor",
            Resync::Restored => "restored",
            Resync::Interrupted => "interrupted",
        }
    }
}

fn change_event(n: &CommitNotice) -> Event {
    let data = json!({
        "cursor": n.seq.to_string(),
        "entity_types": n.entity_types,
        "relationships": n.relationships,
    });
    Event::default()
        .event("change")
        .id(n.seq.to_string())
        .data(data.to_string())
}

fn ready_event(seq: Seq) -> Event {
    Event::default()
        .event("ready")
        .id(seq.to_string())
        .data(json!({ "cursor": seq.to_string() }).to_string())
}

fn resync_event(seq: Seq, why: Resync) -> Event {
    Event::default()
        .event("resync")
        .id(seq.to_string())
        .data(json!({ "cursor": seq.to_string(), "reason": why.as_str() }).to_string())
}

/// The position a listener resumes from: `Last-Event-ID`, else `?last_event_id=`.
fn resume_position(headers: &HeaderMap, query: &EventsQuery) -> Result<Option<Seq>, ApiError> {
    let (raw, field) = match headers.get("last-event-id") {
        Some(v) => (
            Some(v.to_str().unwrap_or("\u{fffd}").to_owned()),
            "Last-Event-ID",
        ),
        None => (query.last_event_id.clone(), "last_event_id"),
    };
    let Some(raw) = raw else { return Ok(None) };
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_position(field));
    }
    raw.parse::<Seq>()
        .map(Some)
        .map_err(|_| bad_position(field))
}

fn bad_position(field: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest,
        "Invalid event id",
    );
    e.body.error.message = format!("{field} must be a cursor: a decimal integer");
    e.with_field(field)
}

/// What a listener is sent first, for a resume from `from` with the feed at `now`.
async fn first_event(
    store: &dyn ServerStore,
    from: Option<Seq>,
    now: Seq,
    replay_limit: usize,
) -> Result<Event, StoreError> {
    let Some(from) = from else {
        return Ok(ready_event(now));
    };
    if from > now {
        return Ok(resync_event(now, Resync::UnknownCursor));
    }
    if store.restore_mark().await?.is_some_and(|m| m.seq > from) {
        return Ok(resync_event(now, Resync::Restored));
    }
    if from == now {
        return Ok(ready_event(now));
    }
    // One event for everything since `from`, when it is recent enough to read.
    let page = store
        .changes(&ChangeQuery {
            after_seq: Some(from),
            include_entities: true,
            include_relationships: true,
            limit: replay_limit.saturating_add(1),
            ..ChangeQuery::default()
        })
        .await?;
    if page.records.len() > replay_limit {
        return Ok(resync_event(now, Resync::TooOld));
    }
    let mut summary = std::collections::BTreeSet::new();
    let mut relationships = false;
    let mut end = from;
    for r in &page.records {
        end = end.max(r.seq());
        match r {
            ChangeRecord::Entity(e) => {
                summary.insert(e.entity.entity_type.as_str().to_owned());
            }
            ChangeRecord::Relationship(_) => relationships = true,
        }
    }
    let notice = CommitNotice {
        seq: end.max(now),
        entity_types: (summary.len() <= goodies_store::notify::MAX_NOTICE_TYPES)
            .then(|| summary.into_iter().collect()),
        relationships,
    };
    Ok(change_event(&notice))
}

/// One listener's state between events.
struct Listener {
    state: AppState,
    rx: broadcast::Receiver<HubItem>,
    /// The cursor of the last event sent.
    sent: Seq,
    closing: Option<watch::Receiver<bool>>,
    first: Option<Event>,
    done: bool,
}

impl Listener {
    async fn next(&mut self) -> Option<Event> {
        if let Some(e) = self.first.take() {
            return Some(e);
        }
        if self.done {
            return None;
        }
        loop {
            let item = match self.closing.as_mut() {
                Some(c) => tokio::select! {
                    r = self.rx.recv() => r,
                    _ = c.wait_for(|v| *v) => return None,
                },
                None => self.rx.recv().await,
            };
            match item {
                Ok(HubItem::Notice(n)) if n.seq > self.sent => {
                    self.sent = n.seq;
                    return Some(change_event(&n));
                }
                Ok(HubItem::Notice(n)) if n.seq < self.sent => {
                    // The feed went back: the store was restored.
                    self.sent = n.seq;
                    return Some(resync_event(n.seq, Resync::Restored));
                }
                Ok(HubItem::Notice(_)) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::info!(missed, "change feed listener too slow: resync and close");
                    self.done = true;
                    let now = self.state.store.max_seq().await.unwrap_or(self.sent);
                    return Some(resync_event(now, Resync::Lagged));
                }
                Ok(HubItem::Gap) | Err(broadcast::error::RecvError::Closed) => {
                    if let Ok(rx) = self.state.feed.subscribe(&self.state.store).await {
                        self.rx = rx;
                    } else {
                        self.done = true;
                    }
                    let now = self.state.store.max_seq().await.unwrap_or(self.sent);
                    self.sent = now;
                    return Some(resync_event(now, Resync::Interrupted));
                }
            }
        }
    }
}

fn listener_stream(listener: Listener) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(listener, |mut l| async move {
        l.next().await.map(|e| (Ok(e), l))
    })
}

/// The heartbeat interval: the configured one, and at most half the idle timeout.
pub(crate) fn heartbeat_interval(configured: Duration, idle_timeout: Duration) -> Duration {
    configured
        .min(idle_timeout / 2)
        .max(Duration::from_millis(10))
}

/// `GET /api/v1/sync/events`.
pub(crate) async fn events(
    State(state): State<AppState>,
    _caller: Caller,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
    closing: Option<Extension<ServerClosing>>,
) -> Result<Response, ApiError> {
    let from = resume_position(&headers, &query)?;
    let rx = state
        .feed
        .subscribe(&state.store)
        .await
        .map_err(|e| ApiError::internal(&e))?;
    // Subscribed first: a commit from now on is in `rx`, an earlier one is below `now`.
    let now = state
        .store
        .max_seq()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    let first = first_event(
        state.store.as_ref(),
        from,
        now,
        state.config.feed_replay_limit,
    )
    .await
    .map_err(|e| ApiError::internal(&e))?;
    let heartbeat = heartbeat_interval(state.config.feed_heartbeat, state.config.idle_timeout);
    let counted = state.metrics.feed_listener();
    let listener = Listener {
        state,
        rx,
        sent: now,
        closing: closing.map(|Extension(c)| c.0),
        first: Some(first),
        done: false,
    };
    // The listener counts in `funkygibbon_feed_listeners` for as long as its stream lives.
    let stream = futures::StreamExt::map(listener_stream(listener), move |e| {
        let _ = &counted;
        e
    });
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat).text(HEARTBEAT));
    let mut res = sse.into_response();
    res.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_plain_decimal_cursors() {
        let q = EventsQuery::default();
        let mut h = HeaderMap::new();
        assert_eq!(resume_position(&h, &q).unwrap(), None);
        h.insert("last-event-id", "42".parse().unwrap());
        assert_eq!(resume_position(&h, &q).unwrap(), Some(42));
        for bad in ["-1", "+4", "4x", "99999999999999999999999"] {
            h.insert("last-event-id", bad.parse().unwrap());
            let e = resume_position(&h, &q).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        let q = EventsQuery {
            last_event_id: Some("7".into()),
        };
        assert_eq!(resume_position(&HeaderMap::new(), &q).unwrap(), Some(7));
    }

    #[test]
    fn heartbeats_beat_the_idle_timeout() {
        let idle = Duration::from_secs(15);
        assert_eq!(
            heartbeat_interval(Duration::from_secs(60), idle),
            Duration::from_millis(7_500)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(2), idle),
            Duration::from_secs(2)
        );
    }
    use crate::config::ServerConfig;
    use goodies_store::PushBatch;
    use inbetweenies_proto::{
        ChangeType, EntityChange, EntityId, EntityType, SourceType, SyncChange, Version,
    };

    async fn write(store: &Arc<dyn ServerStore>) {
        let change = SyncChange {
            change_type: ChangeType::Create,
            entity: Some(EntityChange {
                id: EntityId::new_random(),
                version: Version::now("tester"),
                entity_type: EntityType::Device,
                name: "lamp".into(),
                content: Default::default(),
                source_type: SourceType::Manual,
                user_id: "tester".into(),
                parent_versions: vec![],
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: vec![],
        };
        store
            .apply_push(PushBatch {
                device_id: "d".into(),
                user_id: "tester".into(),
                changes: vec![change],
            })
            .await
            .expect("push");
    }

    fn event_text(e: Event) -> String {
        format!("{e:?}")
    }

    /// Two listeners on a hub of 4: the one that keeps reading gets every commit; the one
    /// that reads nothing while 10 commits land (writes never wait for it) is then sent
    /// `resync` (lagged) and its stream ends.
    #[tokio::test]
    async fn a_listener_that_falls_behind_is_sent_resync_and_dropped() {
        let config = ServerConfig::default().with_feed(Duration::from_secs(15), 4, 100);
        let (_router, handle) = crate::build_app(config).await.expect("app");
        let state = handle.state.clone();
        let listener = |rx| Listener {
            state: state.clone(),
            rx,
            sent: 0,
            closing: None,
            first: None,
            done: false,
        };
        let mut keeping = listener(state.feed.subscribe(&state.store).await.unwrap());
        let mut lagging = listener(state.feed.subscribe(&state.store).await.unwrap());
        for seq in 1..=10u64 {
            tokio::time::timeout(Duration::from_secs(10), write(&state.store))
                .await
                .expect("a write never waits for listeners");
            let e = event_text(keeping.next().await.expect("event"));
            assert!(
                e.contains("change") && e.contains(&format!("\\\"cursor\\\":\\\"{seq}\\\"")),
                "{e}"
            );
        }
        let e = event_text(lagging.next().await.expect("resync"));
        assert!(e.contains("resync") && e.contains("lagged"), "{e}");
        assert!(e.contains("\\\"cursor\\\":\\\"10\\\""), "{e}");
        assert!(lagging.next().await.is_none(), "the lagging stream ends");
    }
}
