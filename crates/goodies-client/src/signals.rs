//! What the server tells the client besides the data: whether it answers at all
//! (connectivity), how far its clock is from ours (`server_time`), and when to retry
//! (`Retry-After`). The request loop reports here; state changes become events and are
//! kept in the settings so `status` can show them from another process.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use inbetweenies_proto::Timestamp;
use serde::{Deserialize, Serialize};

use crate::events::{ClientEvent, EventHub};

/// A server clock further than this from ours is reported.
pub const CLOCK_SKEW_THRESHOLD_MS: i64 = 1_000;

/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The setting that keeps the last known link state (JSON: [`LinkState`]).
pub const LINK_STATE_KEY: &str = "link_state";

/// What the client last learnt about its link to the server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LinkState {
    /// Whether the server answered the last request (`None`: not tried yet). `false`
    /// means it could not be reached even after every retry: the client works offline.
    pub online: Option<bool>,
    /// The server's clock minus ours, in milliseconds, measured from the last answer's
    /// `server_time` (`None`: no answer carried one yet).
    pub clock_skew_ms: Option<i64>,
}

impl LinkState {
    /// Whether the measured skew is over [`CLOCK_SKEW_THRESHOLD_MS`].
    pub fn clock_skewed(&self) -> bool {
        self.clock_skew_ms
            .is_some_and(|s| s.abs() > CLOCK_SKEW_THRESHOLD_MS)
    }
}

/// A measured skew is stored again when it moved by this much since it was stored.
pub(crate) const SKEW_STORE_STEP_MS: i64 = CLOCK_SKEW_THRESHOLD_MS / 2;

/// Whether `now` says nothing `stored` does not: the same reachability, the same side of
/// the skew threshold, and a skew within [`SKEW_STORE_STEP_MS`] of the stored one.
fn same_enough(stored: &LinkState, now: &LinkState) -> bool {
    stored.online == now.online
        && stored.clock_skewed() == now.clock_skewed()
        && match (stored.clock_skew_ms, now.clock_skew_ms) {
            (Some(a), Some(b)) => (a - b).abs() < SKEW_STORE_STEP_MS,
            (None, None) => true,
            _ => false,
        }
}

/// The client's live link state, shared by its requests.
#[derive(Debug)]
pub(crate) struct Signals {
    events: EventHub,
    clock_offset: time::Duration,
    state: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    link: LinkState,
    /// Whether `link` changed since it was last stored.
    dirty: bool,
    /// The link as stored (or restored from the store): a change is stored again only
    /// when it matters (see [`Signals::take_changed`]).
    stored: Option<LinkState>,
    /// When the request being answered was sent (our clock, microseconds).
    sent_at: Option<i64>,
    /// When its answer arrived.
    answered_at: Option<i64>,
}

tokio::task_local! {
    static CURRENT: Arc<Signals>;
}

/// The signals of the sync running in this task, if any.
pub(crate) fn current() -> Option<Arc<Signals>> {
    CURRENT.try_with(Arc::clone).ok()
}

impl Signals {
    pub(crate) fn new(events: EventHub, clock_offset: time::Duration) -> Self {
        Signals {
            events,
            clock_offset,
            state: Mutex::new(Inner::default()),
        }
    }

    /// Runs `f` with these signals as the task's current ones (what requests report to).
    pub(crate) async fn scope<F: std::future::Future>(self: &Arc<Self>, f: F) -> F::Output {
        CURRENT.scope(Arc::clone(self), f).await
    }

    /// Our clock now (the system clock moved by the configured offset), in microseconds.
    fn now_micros(&self) -> i64 {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0);
        sys + self.clock_offset.whole_microseconds() as i64
    }

    /// The link as last seen.
    pub(crate) fn link(&self) -> LinkState {
        self.state
            .lock()
            .map(|s| s.link.clone())
            .unwrap_or_default()
    }

    /// The link state to store, if it changed since the last call by more than noise:
    /// reachability, whether the clock is skewed, or the skew by
    /// [`SKEW_STORE_STEP_MS`] or more. A sync that finds the link as it was stores
    /// nothing (the skew measured from each answer moves by a few milliseconds).
    pub(crate) fn take_changed(&self) -> Option<LinkState> {
        let mut s = self.state.lock().ok()?;
        if !s.dirty {
            return None;
        }
        s.dirty = false;
        if s.stored
            .as_ref()
            .is_some_and(|stored| same_enough(stored, &s.link))
        {
            return None;
        }
        s.stored = Some(s.link.clone());
        Some(s.link.clone())
    }

    /// Seeds the state from what was stored (no events).
    pub(crate) fn restore(&self, link: LinkState) {
        if let Ok(mut s) = self.state.lock() {
            if s.link == LinkState::default() {
                s.link = link.clone();
                s.stored = Some(link);
            }
        }
    }

    /// A request is about to be sent.
    pub(crate) fn sending(&self) {
        let now = self.now_micros();
        if let Ok(mut s) = self.state.lock() {
            s.sent_at = Some(now);
        }
    }

    /// The server answered (any status): it is online (an event only when it was known
    /// to be offline).
    pub(crate) fn answered(&self) {
        let now = self.now_micros();
        self.set_online(true, Some(now));
    }

    /// Every try went unanswered: the client is offline.
    pub(crate) fn unreachable(&self) {
        self.set_online(false, None);
    }

    fn set_online(&self, online: bool, answered_at: Option<i64>) {
        let changed = match self.state.lock() {
            Ok(mut s) => {
                if answered_at.is_some() {
                    s.answered_at = answered_at;
                }
                let was = s.link.online;
                if was != Some(online) {
                    s.link.online = Some(online);
                    s.dirty = true;
                }
                // Told when it changes; a first answer is not news.
                was != Some(online) && !(was.is_none() && online)
            }
            Err(_) => false,
        };
        if changed {
            self.events.emit(ClientEvent::Connectivity { online });
        }
    }

    /// A request is retried after `delay`: the `attempt`-th retry of `max`.
    pub(crate) fn retrying(&self, attempt: u32, max: u32, delay: Duration, reason: String) {
        self.events.emit(ClientEvent::Retrying {
            attempt,
            max_attempts: max,
            delay,
            reason,
        });
    }

    /// The last answer said the server's time was `server_time`. The offset is measured
    /// against the middle of the exchange; a change past the threshold (or back under
    /// it) is an event.
    pub(crate) fn server_time(&self, server_time: Timestamp) {
        let now = self.now_micros();
        let event = match self.state.lock() {
            Ok(mut s) => {
                let answered = s.answered_at.unwrap_or(now);
                let sent = s.sent_at.filter(|t| *t <= answered).unwrap_or(answered);
                let ours = sent + (answered - sent) / 2;
                let offset_ms = (server_time.unix_micros() - ours) / 1_000;
                let was = s.link.clone();
                s.link.clock_skew_ms = Some(offset_ms);
                if was.clock_skew_ms != Some(offset_ms) {
                    s.dirty = true;
                }
                let skewed = s.link.clock_skewed();
                // Reported when it crosses the threshold, or moves by more than it.
                let report = match (was.clock_skewed(), skewed) {
                    (false, true) | (true, false) => true,
                    (true, true) => was
                        .clock_skew_ms
                        .is_some_and(|w| (w - offset_ms).abs() > CLOCK_SKEW_THRESHOLD_MS),
                    (false, false) => false,
                };
                report.then_some(ClientEvent::ClockSkew {
                    offset_ms: if skewed { offset_ms } else { 0 },
                })
            }
            Err(_) => None,
        };
        if let Some(e) = event {
            self.events.emit(e);
        }
    }
}

/// How long a `Retry-After` header asks to wait: whole seconds (an HTTP date is not
/// read), at most [`MAX_RETRY_AFTER`].
pub(crate) fn retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        assert_eq!(retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(Some(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(Some("86400")), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }

    #[tokio::test]
    async fn skew_is_reported_when_it_crosses_the_threshold() {
        let hub = EventHub::new(16);
        let mut events = hub.subscribe();
        let s = Signals::new(hub.clone(), time::Duration::ZERO);
        let at = |offset_ms: i64| {
            Timestamp::from_unix_micros(s.now_micros() + offset_ms * 1_000).expect("a time")
        };
        s.server_time(at(200));
        assert!(!s.link().clock_skewed());
        s.server_time(at(5_000));
        assert!(s.link().clock_skewed());
        match events.next().await {
            Some(ClientEvent::ClockSkew { offset_ms }) => {
                assert!((4_000..=5_000).contains(&offset_ms), "{offset_ms}")
            }
            other => panic!("{other:?}"),
        }
        s.server_time(at(-20));
        assert_eq!(
            events.next().await,
            Some(ClientEvent::ClockSkew { offset_ms: 0 })
        );
        assert!(s.take_changed().is_some());
        assert!(s.take_changed().is_none());
    }

    #[tokio::test]
    async fn connectivity_changes_are_events_once() {
        let hub = EventHub::new(16);
        let mut events = hub.subscribe();
        let s = Signals::new(hub.clone(), time::Duration::ZERO);
        s.unreachable();
        s.unreachable();
        s.answered();
        s.answered();
        assert_eq!(
            events.next().await,
            Some(ClientEvent::Connectivity { online: false })
        );
        assert_eq!(
            events.next().await,
            Some(ClientEvent::Connectivity { online: true })
        );
        assert_eq!(s.link().online, Some(true));
    }

    /// Answers from a script: each request takes the next answer (`None`: connection
    /// refused); the last one repeats.
    /// A status and headers, or `None` for a refused connection.
    type Answer = Option<(u16, Vec<(String, String)>)>;

    #[derive(Debug)]
    struct Scripted {
        answers: Mutex<Vec<Answer>>,
        sent: std::sync::atomic::AtomicU32,
    }

    impl Scripted {
        fn new(answers: Vec<Answer>) -> Self {
            Scripted {
                answers: Mutex::new(answers),
                sent: Default::default(),
            }
        }
    }

    #[async_trait::async_trait]
    impl crate::transport::Transport for Scripted {
        async fn send(
            &self,
            _request: crate::transport::HttpRequest,
        ) -> Result<crate::transport::HttpResponse, crate::error::TransportError> {
            self.sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = {
                let mut a = self.answers.lock().expect("lock");
                if a.len() > 1 {
                    a.remove(0)
                } else {
                    a[0].clone()
                }
            };
            match next {
                None => Err(crate::error::TransportError::Connect(
                    "connection refused".into(),
                )),
                Some((status, headers)) => Ok(crate::transport::HttpResponse {
                    status,
                    headers,
                    body: if status == 200 {
                        b"{}".to_vec()
                    } else {
                        br#"{"detail":"slow down"}"#.to_vec()
                    },
                }),
            }
        }
    }

    /// Runs one request through the request loop with the default retry policy, on the
    /// task's (paused) clock: the outcome, the time it took, and the events it made.
    async fn call_through(
        transport: &Scripted,
    ) -> (bool, Duration, Vec<ClientEvent>, Arc<Signals>) {
        let hub = EventHub::new(64);
        let mut events = hub.subscribe();
        let signals = Arc::new(Signals::new(hub.clone(), time::Duration::ZERO));
        let config = crate::ClientConfig::default();
        let compress = std::sync::atomic::AtomicBool::new(false);
        let http = crate::http::Http {
            transport,
            base_url: "http://127.0.0.1:9",
            token: None,
            config: &config,
            compress: &compress,
        };
        let started = tokio::time::Instant::now();
        let mut retries = 0;
        let ok = signals
            .scope(http.call::<(), serde_json::Value>(
                crate::transport::Method::Get,
                "/x",
                None,
                &mut retries,
            ))
            .await
            .is_ok();
        let took = started.elapsed();
        drop(hub);
        let mut seen = Vec::new();
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(1), events.next()).await
        {
            seen.push(e);
        }
        (ok, took, seen, signals)
    }

    fn retry_delays(events: &[ClientEvent]) -> Vec<(u32, u32, u64)> {
        events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Retrying {
                    attempt,
                    max_attempts,
                    delay,
                    ..
                } => Some((*attempt, *max_attempts, delay.as_millis() as u64)),
                _ => None,
            })
            .collect()
    }

    /// A 429 waits exactly what `Retry-After` says (3 s here, not the 1 s backoff).
    #[tokio::test(start_paused = true)]
    async fn rate_limited_waits_what_retry_after_says() {
        let t = Scripted::new(vec![
            Some((429, vec![("retry-after".into(), "3".into())])),
            Some((200, vec![])),
        ]);
        let (ok, took, events, _) = call_through(&t).await;
        assert!(ok);
        assert_eq!(took, Duration::from_secs(3));
        assert_eq!(retry_delays(&events), vec![(1, 5, 3_000)]);
    }

    /// Five refused connections then an answer: the waits are 1, 2, 4, 8 and 16 s (31 s
    /// on the clock), each announced, and the sixth request lands.
    #[tokio::test(start_paused = true)]
    async fn five_failures_back_off_then_recover() {
        let t = Scripted::new(vec![None, None, None, None, None, Some((200, vec![]))]);
        let (ok, took, events, signals) = call_through(&t).await;
        assert!(ok);
        assert_eq!(t.sent.load(std::sync::atomic::Ordering::SeqCst), 6);
        assert_eq!(took, Duration::from_secs(31));
        assert_eq!(
            retry_delays(&events),
            vec![
                (1, 5, 1_000),
                (2, 5, 2_000),
                (3, 5, 4_000),
                (4, 5, 8_000),
                (5, 5, 16_000)
            ]
        );
        assert!(matches!(
            events.first(),
            Some(ClientEvent::Retrying { reason, .. }) if reason.contains("connection refused")
        ));
        assert_eq!(signals.link().online, Some(true));
    }

    /// When every try goes unanswered the client is offline (an event and the link
    /// state), after exactly five retries.
    #[tokio::test(start_paused = true)]
    async fn exhausted_tries_report_offline() {
        let t = Scripted::new(vec![None]);
        let (ok, took, events, signals) = call_through(&t).await;
        assert!(!ok);
        assert_eq!(t.sent.load(std::sync::atomic::Ordering::SeqCst), 6);
        assert_eq!(took, Duration::from_secs(31));
        assert_eq!(retry_delays(&events).len(), 5);
        assert_eq!(
            events.last(),
            Some(&ClientEvent::Connectivity { online: false })
        );
        assert_eq!(signals.link().online, Some(false));
    }
}
