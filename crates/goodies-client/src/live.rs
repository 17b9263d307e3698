//! Live sync: the background loop (adaptive polling, the change feed, its reconnects),
//! the retry timer of a push that found the server unreachable, and the one refresh of an
//! expired token.
//!
//! Every timer is a tokio timer, so the schedules run on a paused clock in tests.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;

use crate::account::REFRESH_PATH;
use crate::background::BackgroundStats;
use crate::client::{BlowingOffClient, Inner};
use crate::error::{ClientError, TransportError};
use crate::events::ClientEvent;
use crate::http::Http;
use crate::signals::LINK_STATE_KEY;
use crate::sync::{error_chain, SyncResult};
use crate::transport::{HttpRequest, Method};

/// The change feed's endpoint (PROTOCOL §13).
pub const EVENTS_PATH: &str = "/api/v1/sync/events";

/// Waits between attempts when the server is unreachable (the retry timer of pending
/// changes) or the change feed is lost: 1, 2, 4, 8, 16, then 30 s.
pub const RECONNECT_DELAYS: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(30),
];

/// The shortest poll interval of background sync (after activity).
pub const MIN_POLL: Duration = Duration::from_secs(5);

/// The longest poll interval of background sync (after quiet syncs).
pub const MAX_POLL: Duration = Duration::from_secs(300);

/// A feed silent this long (no event, no heartbeat) is taken as broken and reopened:
/// three of the server's 15 s heartbeats.
pub const FEED_SILENCE: Duration = Duration::from_secs(45);

/// The `n`-th wait (0-based) of [`RECONNECT_DELAYS`]; the last repeats.
pub fn reconnect_delay(n: u32) -> Duration {
    RECONNECT_DELAYS[(n as usize).min(RECONNECT_DELAYS.len() - 1)]
}

/// Why background sync started a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncTrigger {
    /// The first sync, when background sync starts.
    Start,
    /// The poll interval elapsed.
    Poll,
    /// The change feed announced a write on the server.
    Feed,
    /// The retry timer of changes that found the server unreachable.
    Retry,
}

/// The poll interval of background sync: the shortest after a sync that moved
/// something, doubling after each quiet one up to the longest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PollSchedule {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl PollSchedule {
    /// Between `min` and `max` (`min` is cut to `max`), starting at `min`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(Duration::from_millis(1));
        let min = min.min(max).max(Duration::from_millis(1));
        PollSchedule {
            min,
            max,
            current: min,
        }
    }

    /// The schedule of [`BlowingOffClient::start_background_sync`] with `interval`: from
    /// [`MIN_POLL`] (or `interval`, when shorter) up to `interval`.
    pub fn for_interval(interval: Duration) -> Self {
        Self::new(MIN_POLL, interval)
    }

    /// The wait before the next poll.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// A sync finished: `active` when it pushed or pulled anything. Returns the next wait.
    pub fn after_sync(&mut self, active: bool) -> Duration {
        self.current = if active {
            self.min
        } else {
            (self.current * 2).min(self.max)
        };
        self.current
    }
}

/// One Server-Sent Event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SseEvent {
    pub(crate) event: String,
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

/// Reads Server-Sent Events from chunks as they arrive (W3C format; comments ignored).
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_field: bool,
}

impl SseParser {
    /// Adds a chunk; returns the events it completed.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if self.has_field {
                    let mut e = std::mem::take(&mut self.current);
                    if e.event.is_empty() {
                        e.event = "message".to_owned();
                    }
                    out.push(e);
                    self.has_field = false;
                }
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (&*line, ""),
            };
            match field {
                "event" => self.current.event = value.to_owned(),
                "id" => self.current.id = Some(value.to_owned()),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                _ => continue,
            }
            self.has_field = true;
        }
        out
    }
}

#[derive(Deserialize)]
struct Refreshed {
    access_token: String,
}

impl Inner {
    /// The sync's rounds with the link signals on, and one token refresh and one more
    /// try when the server says the token expired. The link state is stored when it
    /// changed.
    pub(crate) async fn signalled_rounds(&self, res: &mut SyncResult) -> Result<(), ClientError> {
        let signals = Arc::clone(&self.signals);
        if signals.link() == crate::signals::LinkState::default() {
            if let Ok(Some(stored)) = self.get_json(LINK_STATE_KEY).await {
                signals.restore(stored);
            }
        }
        let mut outcome = signals.scope(self.sync_rounds(res)).await;
        if matches!(outcome, Err(ClientError::AuthExpired)) {
            match self.refresh_expired_token().await {
                Ok(()) => {
                    tracing::info!("the token expired; refreshed it, syncing again");
                    self.events.emit(ClientEvent::AuthRefreshed);
                    outcome = signals.scope(self.sync_rounds(res)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %error_chain(&e), "the token expired and could not be refreshed");
                }
            }
        }
        if let Some(link) = signals.take_changed() {
            if let Ok(json) = serde_json::to_string(&link) {
                let _ = self.store.set_setting(LINK_STATE_KEY, &json).await;
            }
        }
        outcome
    }

    /// Exchanges the stored token for a fresh one (`POST /api/v1/auth/refresh`), once,
    /// and stores it.
    async fn refresh_expired_token(&self) -> Result<(), ClientError> {
        let settings = self.settings().await?;
        let url = settings.server_url.ok_or(ClientError::NotConnected)?;
        let token = settings
            .auth_token
            .ok_or_else(|| ClientError::Unauthorized {
                message: "no auth token is stored".into(),
            })?;
        let http = Http {
            transport: self.transport.as_ref(),
            base_url: &url,
            token: Some(&token),
            config: &self.config,
            compress: &self.compress,
        };
        let mut retries = 0;
        let fresh: Refreshed = http
            .call::<(), _>(Method::Post, REFRESH_PATH, None, &mut retries)
            .await
            .map_err(|f| f.into_client_error())?;
        self.store
            .set_setting(crate::settings::keys::AUTH_TOKEN, &fresh.access_token)
            .await?;
        Ok(())
    }
}

/// The retry timer of changes a sync could not push because the server was unreachable:
/// it syncs again after 1, 2, 4, 8, 16, then every 30 s, until the changes land or none
/// are left. One per client; it holds the client weakly (a dropped client stops it).
#[derive(Debug, Default)]
pub(crate) struct RetryTimer {
    task: Mutex<Option<JoinHandle<()>>>,
}

impl RetryTimer {
    /// After a sync: arms the timer when the server was unreachable and changes are
    /// pending (unless [`ClientConfig::retry_timer`] is off); a sync that reached the
    /// server disarms it.
    ///
    /// [`ClientConfig::retry_timer`]: crate::ClientConfig::retry_timer
    pub(crate) fn after_sync(
        &self,
        client: &BlowingOffClient,
        outcome: &Result<SyncResult, ClientError>,
    ) {
        let failed = client.inner.config.retry_timer
            && match outcome {
                Ok(r) => r.is_unreachable() && r.pending > 0,
                Err(ClientError::Unreachable { .. }) => true,
                Err(_) => false,
            };
        let Ok(mut slot) = self.task.lock() else {
            return;
        };
        let running = slot.as_ref().is_some_and(|t| !t.is_finished());
        if !failed {
            // The timer's own sync reports here too: only a sync that reached the server
            // (and so is not the timer's failing one) stops it.
            if running && outcome.is_ok() {
                if let Some(t) = slot.take() {
                    t.abort();
                }
            }
            return;
        }
        if running {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&client.inner);
        *slot = Some(tokio::spawn(async move {
            let mut n = 0;
            loop {
                tokio::time::sleep(reconnect_delay(n)).await;
                n += 1;
                let Some(inner) = weak.upgrade() else { return };
                let client = BlowingOffClient { inner };
                client
                    .inner
                    .events
                    .emit(ClientEvent::SyncTriggered(SyncTrigger::Retry));
                match client.inner.sync().await {
                    Ok(r) if r.is_unreachable() && r.pending > 0 => {}
                    Err(ClientError::Unreachable { .. }) => {}
                    Ok(r) => {
                        tracing::info!(
                            pending = r.pending,
                            "the retry timer's sync reached the server"
                        );
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "the retry timer's sync failed");
                        return;
                    }
                }
            }
        }));
    }

    /// Whether the timer is armed.
    pub(crate) fn is_armed(&self) -> bool {
        self.task
            .lock()
            .is_ok_and(|t| t.as_ref().is_some_and(|t| !t.is_finished()))
    }
}

impl Drop for RetryTimer {
    fn drop(&mut self) {
        if let Ok(mut t) = self.task.lock() {
            if let Some(t) = t.take() {
                t.abort();
            }
        }
    }
}

impl BlowingOffClient {
    /// What the client last learnt about its link to the server: whether it answers
    /// (`online`; `false` after every retry went unanswered) and how far its clock is from
    /// ours. Kept in the settings, so another process sees the last sync's.
    pub async fn link_state(&self) -> Result<crate::signals::LinkState, ClientError> {
        let live = self.inner.signals.link();
        if live != crate::signals::LinkState::default() {
            return Ok(live);
        }
        Ok(self
            .inner
            .get_json(LINK_STATE_KEY)
            .await?
            .unwrap_or_default())
    }

    /// Whether the retry timer is armed: changes are pending and the last sync found the
    /// server unreachable, so the client will sync again by itself.
    pub fn retry_timer_armed(&self) -> bool {
        self.inner.retry_timer.is_armed()
    }
}

/// What the feed task reports to the loop.
struct FeedShared {
    notify: Notify,
}

/// Runs background sync until `stop` fires or `runs` syncs were made.
pub(crate) async fn run(
    client: BlowingOffClient,
    mut schedule: PollSchedule,
    runs: Option<u64>,
    mut stop: oneshot::Receiver<()>,
) -> BackgroundStats {
    let mut stats = BackgroundStats::default();
    let shared = Arc::new(FeedShared {
        notify: Notify::new(),
    });
    let feed = tokio::spawn(feed_task(client.clone(), Arc::clone(&shared)));
    let mut trigger = SyncTrigger::Start;
    loop {
        if runs.is_some_and(|n| stats.runs >= n) {
            break;
        }
        if trigger != SyncTrigger::Start {
            let wait = schedule.current();
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep(wait) => trigger = SyncTrigger::Poll,
                () = shared.notify.notified() => trigger = SyncTrigger::Feed,
            }
        }
        client
            .inner
            .events
            .emit(ClientEvent::SyncTriggered(trigger));
        // A sync in progress is finished before a stop is honoured.
        stats.runs += 1;
        if trigger == SyncTrigger::Feed {
            stats.feed_syncs += 1;
        }
        let active = match client.sync().await {
            Ok(r) if r.is_ok() => r.pushed > 0 || r.synced_entities > 0 || r.pulled_entities > 0,
            Ok(r) => {
                stats.failures += 1;
                tracing::warn!(
                    errors = r.errors.len(),
                    "background sync finished with errors"
                );
                false
            }
            Err(e) => {
                stats.failures += 1;
                tracing::warn!(error = %error_chain(&e), "background sync failed");
                false
            }
        };
        schedule.after_sync(active);
        trigger = SyncTrigger::Poll;
    }
    feed.abort();
    stats
}

/// Why the feed ended.
enum FeedEnd {
    /// The server has no feed (404) or the transport cannot stream: poll only.
    Unavailable,
    /// Lost; reopen after a wait (`connected`: it had delivered events).
    Lost { connected: bool },
}

/// Keeps the change feed open, reopening it with backoff, and wakes the loop on each
/// `change` or `resync` event.
async fn feed_task(client: BlowingOffClient, shared: Arc<FeedShared>) {
    let mut last_id: Option<String> = None;
    let mut failures: u32 = 0;
    loop {
        match open_feed(&client, &shared, &mut last_id).await {
            FeedEnd::Unavailable => return,
            FeedEnd::Lost { connected } => {
                if connected {
                    failures = 0;
                    client
                        .inner
                        .events
                        .emit(ClientEvent::ChangeFeed { connected: false });
                }
                let wait = reconnect_delay(failures);
                failures += 1;
                tokio::time::sleep(wait).await;
            }
        }
    }
}

async fn open_feed(
    client: &BlowingOffClient,
    shared: &FeedShared,
    last_id: &mut Option<String>,
) -> FeedEnd {
    let Ok(settings) = client.inner.settings().await else {
        return FeedEnd::Lost { connected: false };
    };
    let Some(url) = settings.server_url else {
        return FeedEnd::Lost { connected: false };
    };
    let mut headers = vec![("accept".to_owned(), "text/event-stream".to_owned())];
    if let Some(t) = &settings.auth_token {
        headers.push(("authorization".to_owned(), format!("Bearer {t}")));
    }
    if let Some(id) = last_id.as_deref() {
        headers.push(("last-event-id".to_owned(), id.to_owned()));
    }
    let request = HttpRequest {
        method: Method::Get,
        url: format!("{}{EVENTS_PATH}", url.trim_end_matches('/')),
        headers,
        body: Vec::new(),
    };
    let mut stream = match client.inner.transport.open_stream(request).await {
        Ok(s) => s,
        Err(TransportError::Unsupported(why)) => {
            tracing::info!(%why, "the transport cannot stream: background sync polls");
            return FeedEnd::Unavailable;
        }
        Err(e) => {
            tracing::debug!(error = %error_chain(&e), "the change feed cannot be opened");
            return FeedEnd::Lost { connected: false };
        }
    };
    match stream.status {
        200 => {}
        404 | 405 | 501 => {
            tracing::info!(
                status = stream.status,
                "the server has no change feed: background sync polls"
            );
            return FeedEnd::Unavailable;
        }
        status => {
            tracing::debug!(status, "the change feed was refused");
            if status == 400 {
                // A resume position the server cannot read: start afresh.
                *last_id = None;
            }
            return FeedEnd::Lost { connected: false };
        }
    }
    let mut parser = SseParser::default();
    let mut connected = false;
    loop {
        let chunk = match tokio::time::timeout(FEED_SILENCE, stream.body.next()).await {
            Ok(Some(Ok(chunk))) => chunk,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %error_chain(&e), "the change feed broke");
                return FeedEnd::Lost { connected };
            }
            Ok(None) => return FeedEnd::Lost { connected },
            Err(_) => {
                tracing::debug!("the change feed went silent; reopening it");
                return FeedEnd::Lost { connected };
            }
        };
        for event in parser.push(&chunk) {
            if let Some(id) = event.id {
                *last_id = Some(id);
            }
            if !connected {
                connected = true;
                client
                    .inner
                    .events
                    .emit(ClientEvent::ChangeFeed { connected: true });
            }
            match event.event.as_str() {
                "change" | "resync" => shared.notify.notify_one(),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_are_read_across_chunks() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: ready\nid: 4").is_empty());
        let e = p.push(b"2\ndata: {\"cursor\":\"42\"}\n\n:heartbeat\n\n");
        assert_eq!(
            e,
            vec![SseEvent {
                event: "ready".into(),
                id: Some("42".into()),
                data: "{\"cursor\":\"42\"}".into()
            }]
        );
        let e = p.push(b"event: change\r\nid: 45\r\ndata: a\r\ndata: b\r\n\r\ndata: x\n\n");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].event, "change");
        assert_eq!(e[0].data, "a\nb");
        assert_eq!(e[1].event, "message");
    }

    #[test]
    fn polling_adapts_between_its_bounds() {
        let mut s = PollSchedule::for_interval(MAX_POLL);
        assert_eq!(s.current(), MIN_POLL);
        let quiet: Vec<u64> = (0..8).map(|_| s.after_sync(false).as_secs()).collect();
        assert_eq!(quiet, vec![10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(s.after_sync(true), MIN_POLL);
        let mut short = PollSchedule::for_interval(Duration::from_millis(50));
        assert_eq!(short.current(), Duration::from_millis(50));
        assert_eq!(short.after_sync(false), Duration::from_millis(50));
    }

    #[test]
    fn reconnects_back_off_then_cap() {
        let secs: Vec<u64> = (0..8).map(|n| reconnect_delay(n).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 30, 30, 30]);
    }
}
