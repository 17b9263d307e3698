//! Server signals and live sync against the real server, its faults switched at run time
//! (`PUT /api/v1/admin/faults`): an expired token refreshed once, `Retry-After` honoured,
//! requests failing then recovering, offline work and the retry timer, clock skew, and
//! background sync woken by the change feed (or polling where there is none).
//!
//! Nothing here waits on the clock for something to happen: each test waits for the
//! client's events, with a generous timeout as a safety net only.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use goodies_client::{
    BlowingOffClient, ClientConfig, ClientEvent, EntityType, HttpRequest, HttpResponse, HttpStream,
    HyperTransport, JsonObject, RetryPolicy, SyncTrigger, Transport, TransportError, EVENTS_PATH,
    REFRESH_PATH,
};
use goodies_e2e::{http_json, TestServer, PASSWORD};
use serde_json::json;

/// The safety net of every wait for an event.
const PATIENCE: Duration = Duration::from_secs(20);

fn set_faults(server: &TestServer, faults: serde_json::Value) -> anyhow::Result<()> {
    let token = server.handle.admin_token();
    let (status, body) = http_json(
        "PUT",
        &server.url,
        "/api/v1/admin/faults",
        Some(&token),
        Some(&faults),
    )?;
    anyhow::ensure!(status == 200, "faults refused: {status} {body}");
    Ok(())
}

/// Waits for the first event `want` accepts.
async fn wait_for(
    events: &mut (impl futures::Stream<Item = ClientEvent> + Unpin),
    what: &str,
    mut want: impl FnMut(&ClientEvent) -> bool,
) -> anyhow::Result<ClientEvent> {
    tokio::time::timeout(PATIENCE, async {
        while let Some(e) = events.next().await {
            if want(&e) {
                return Ok(e);
            }
        }
        anyhow::bail!("the event stream ended before {what}")
    })
    .await
    .with_context(|| format!("no {what} within {PATIENCE:?}"))?
}

/// Forwards to the real server, counting refreshes; `on_refresh` runs as a refresh
/// passes (the test turns the expiry fault off there, as a real refresh would end it).
#[derive(Default)]
struct Watched {
    inner: HyperTransport,
    refreshes: AtomicU32,
    on_refresh: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    /// While set, every request is refused as if the network were down.
    unplugged: AtomicBool,
    /// Answer the change feed with 404, as a server without one.
    no_feed: AtomicBool,
    /// Cut the next change feed opened after its first chunk, as a dropped connection.
    cut_feed: AtomicBool,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").finish_non_exhaustive()
    }
}

#[async_trait]
impl Transport for Watched {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if self.unplugged.load(Ordering::SeqCst) {
            return Err(TransportError::Connect("network unplugged".into()));
        }
        if request.url.ends_with(REFRESH_PATH) {
            self.refreshes.fetch_add(1, Ordering::SeqCst);
            if let Some(f) = self.on_refresh.lock().expect("lock").as_ref() {
                f();
            }
        }
        self.inner.send(request).await
    }

    async fn open_stream(&self, request: HttpRequest) -> Result<HttpStream, TransportError> {
        if self.unplugged.load(Ordering::SeqCst) {
            return Err(TransportError::Connect("network unplugged".into()));
        }
        if self.no_feed.load(Ordering::SeqCst) && request.url.ends_with(EVENTS_PATH) {
            return Ok(HttpStream {
                status: 404,
                headers: vec![],
                body: Box::pin(futures::stream::empty()),
            });
        }
        let mut stream = self.inner.open_stream(request).await?;
        if self.cut_feed.swap(false, Ordering::SeqCst) {
            stream.body = Box::pin(stream.body.take(1));
        }
        Ok(stream)
    }
}

/// Retries quickly (the schedule itself is tested on a paused clock in the library).
fn quick() -> ClientConfig {
    ClientConfig::default().with_retry(RetryPolicy {
        max_retries: 5,
        delays: vec![Duration::from_millis(10)],
    })
}

async fn client_through(
    server: &TestServer,
    name: &str,
    transport: Arc<Watched>,
    config: ClientConfig,
) -> anyhow::Result<BlowingOffClient> {
    let c = BlowingOffClient::builder(server.dir.path().join(format!("{name}.db")))
        .config(config)
        .transport(transport)
        .open()
        .await?;
    c.login(&server.url, PASSWORD).await?;
    Ok(c)
}

fn note(text: &str) -> JsonObject {
    json!({ "text": text })
        .as_object()
        .cloned()
        .unwrap_or_default()
}

/// Every sync request meets `401 AUTH_EXPIRED`: the client refreshes its token once
/// (the refresh ends the expiry), syncs again and lands its change.
#[tokio::test]
async fn expired_token_mid_sync_is_refreshed_once_and_the_sync_retried() -> anyhow::Result<()> {
    let server = Arc::new(TestServer::start().await?);
    let t = Arc::new(Watched::default());
    let a = client_through(&server, "a", t.clone(), quick()).await?;
    let e = a.create_entity(EntityType::Note, "n", note("kept")).await?;
    set_faults(&server, json!({ "auth_expired_rate": 1 }))?;
    let s = server.clone();
    *t.on_refresh.lock().expect("lock") = Some(Box::new(move || {
        set_faults(&s, json!({ "auth_expired_rate": 0 })).expect("faults off");
    }));
    let mut events = a.observe_changes();
    let r = a.sync().await?;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert_eq!(r.pending, 0);
    assert_eq!(t.refreshes.load(Ordering::SeqCst), 1);
    wait_for(&mut events, "AuthRefreshed", |e| {
        *e == ClientEvent::AuthRefreshed
    })
    .await?;
    assert!(server.handle.store().entity(&e.id).await?.is_some());
    Ok(())
}

/// When the refreshed token is refused too, the sync fails with `AuthExpired` after
/// exactly one refresh (no loop), and the change stays pending.
#[tokio::test]
async fn a_token_still_refused_after_the_refresh_fails_the_sync_once() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let t = Arc::new(Watched::default());
    let a = client_through(&server, "a", t.clone(), quick()).await?;
    a.create_entity(EntityType::Note, "n", note("kept")).await?;
    set_faults(&server, json!({ "auth_expired_rate": 1 }))?;
    let err = a.sync().await.expect_err("still expired");
    assert!(
        matches!(err, goodies_client::ClientError::AuthExpired),
        "{err:?}"
    );
    assert_eq!(t.refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(a.pending_changes().await?, 1);
    Ok(())
}

/// Background sync meets an expired token: it refreshes and goes on (before, it failed
/// every interval until someone logged in again).
#[tokio::test]
async fn background_sync_refreshes_an_expired_token() -> anyhow::Result<()> {
    let server = Arc::new(TestServer::start().await?);
    let t = Arc::new(Watched::default());
    let a = client_through(&server, "a", t.clone(), quick()).await?;
    let s = server.clone();
    *t.on_refresh.lock().expect("lock") = Some(Box::new(move || {
        set_faults(&s, json!({ "auth_expired_rate": 0 })).expect("faults off");
    }));
    set_faults(&server, json!({ "auth_expired_rate": 1 }))?;
    let e = a
        .create_entity(EntityType::Note, "n", note("from the background"))
        .await?;
    let mut events = a.observe_changes();
    let bg = a.start_background_sync(Duration::from_millis(20));
    wait_for(&mut events, "AuthRefreshed", |e| {
        *e == ClientEvent::AuthRefreshed
    })
    .await?;
    wait_for(
        &mut events,
        "a clean sync",
        |e| matches!(e, ClientEvent::SyncFinished(s) if s.ok && s.pending == 0),
    )
    .await?;
    let stats = bg.stop().await;
    assert_eq!(stats.failures, 0, "{stats:?}");
    assert_eq!(t.refreshes.load(Ordering::SeqCst), 1);
    assert!(server.handle.store().entity(&e.id).await?.is_some());
    Ok(())
}

/// `429 RATE_LIMITED` with `Retry-After: 1`: the retry waits the second the server
/// asked for, not the client's 10 ms backoff.
#[tokio::test]
async fn rate_limited_sync_waits_retry_after() -> anyhow::Result<()> {
    let server = Arc::new(TestServer::start().await?);
    let a = client_through(&server, "a", Arc::new(Watched::default()), quick()).await?;
    a.create_entity(EntityType::Note, "n", note("later"))
        .await?;
    set_faults(&server, json!({ "rate_limited_rate": 1 }))?;
    let s = server.clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let _h = a.on_change(move |e| {
        if let ClientEvent::Retrying { delay, reason, .. } = e {
            seen2.lock().expect("lock").push((*delay, reason.clone()));
            set_faults(&s, json!({ "rate_limited_rate": 0 })).expect("faults off");
        }
    });
    let r = a.sync().await?;
    assert!(r.is_ok(), "{:?}", r.errors);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, Duration::from_secs(1));
    assert!(seen[0].1.contains("429"), "{}", seen[0].1);
    Ok(())
}

/// Five requests fail (503), each retry announced; the sixth lands.
#[tokio::test]
async fn five_failed_requests_then_recovery() -> anyhow::Result<()> {
    let server = Arc::new(TestServer::start().await?);
    let a = client_through(&server, "a", Arc::new(Watched::default()), quick()).await?;
    let e = a.create_entity(EntityType::Note, "n", note("x")).await?;
    set_faults(&server, json!({ "error_rate": 1 }))?;
    let s = server.clone();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a2 = attempts.clone();
    let _h = a.on_change(move |e| {
        if let ClientEvent::Retrying {
            attempt,
            max_attempts,
            ..
        } = e
        {
            a2.lock().expect("lock").push((*attempt, *max_attempts));
            if *attempt == 5 {
                set_faults(&s, json!({ "error_rate": 0 })).expect("faults off");
            }
        }
    });
    let r = a.sync().await?;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert_eq!(r.retries, 5);
    assert_eq!(
        *attempts.lock().expect("lock"),
        vec![(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    );
    assert!(server.handle.store().entity(&e.id).await?.is_some());
    Ok(())
}

/// The network goes down: after the tries the client reports offline (event and link
/// state), keeps working locally, and its retry timer pushes the change once the
/// network is back, with no further call from the app.
#[tokio::test]
async fn offline_is_reported_and_the_retry_timer_lands_the_push() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let t = Arc::new(Watched::default());
    let a = client_through(&server, "a", t.clone(), quick()).await?;
    let mut events = a.observe_changes();
    t.unplugged.store(true, Ordering::SeqCst);
    let first = a.create_entity(EntityType::Note, "n", note("one")).await?;
    let r = a.sync().await?;
    assert!(r.is_unreachable(), "{:?}", r.errors);
    wait_for(&mut events, "offline", |e| {
        *e == ClientEvent::Connectivity { online: false }
    })
    .await?;
    assert_eq!(a.link_state().await?.online, Some(false));
    assert!(a.retry_timer_armed());
    // Local work goes on.
    let second = a.create_entity(EntityType::Note, "n2", note("two")).await?;
    assert_eq!(a.pending_changes().await?, 2);
    t.unplugged.store(false, Ordering::SeqCst);
    wait_for(&mut events, "the retry timer's sync", |e| {
        *e == ClientEvent::SyncTriggered(SyncTrigger::Retry)
    })
    .await?;
    wait_for(&mut events, "online", |e| {
        *e == ClientEvent::Connectivity { online: true }
    })
    .await?;
    wait_for(
        &mut events,
        "the push landing",
        |e| matches!(e, ClientEvent::SyncFinished(s) if s.ok && s.pending == 0),
    )
    .await?;
    for id in [&first.id, &second.id] {
        assert!(server.handle.store().entity(id).await?.is_some());
    }
    assert_eq!(a.link_state().await?.online, Some(true));
    Ok(())
}

/// With the retry timer off, a sync that could not reach the server arms nothing: no
/// sync runs until the app asks for one, and the change waits in the outbox for it.
#[tokio::test]
async fn with_the_retry_timer_off_only_the_app_syncs() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let t = Arc::new(Watched::default());
    let a = client_through(&server, "a", t.clone(), quick().with_retry_timer(false)).await?;
    t.unplugged.store(true, Ordering::SeqCst);
    let e = a.create_entity(EntityType::Note, "n", note("one")).await?;
    let r = a.sync().await?;
    assert!(r.is_unreachable(), "{:?}", r.errors);
    assert!(!a.retry_timer_armed());
    t.unplugged.store(false, Ordering::SeqCst);
    // Longer than the timer's first wait (1 s): had it been armed, it would have synced.
    let waited = goodies_client::reconnect_delay(0) + Duration::from_millis(500);
    tokio::time::sleep(waited).await;
    assert!(server.handle.store().entity(&e.id).await?.is_none());
    assert_eq!(a.pending_changes().await?, 1);
    let r = a.sync().await?;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert!(server.handle.store().entity(&e.id).await?.is_some());
    Ok(())
}

/// 1,000 edits made offline all land with the next sync; none is lost.
#[tokio::test]
async fn a_thousand_offline_edits_all_land() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.offline_client("a").await?;
    let mut ids = Vec::new();
    for i in 0..1_000 {
        let e = a
            .create_entity(EntityType::Note, &format!("n{i}"), note(&i.to_string()))
            .await?;
        ids.push(e.id);
    }
    assert_eq!(a.pending_changes().await?, 1_000);
    a.login(&server.url, PASSWORD).await?;
    let r = a.sync().await?;
    assert!(r.is_ok(), "{:?}", r.errors);
    assert_eq!(r.pending, 0);
    let store = server.handle.store();
    for id in &ids {
        anyhow::ensure!(store.entity(id).await?.is_some(), "{id} was lost");
    }
    assert_eq!(a.state_digest().await?, server.digest().await?);
    Ok(())
}

/// A server clock 5 s ahead (fault `clock_skew_ms`) is measured from `server_time`,
/// reported as an event and kept in the link state, for another process too.
#[tokio::test]
async fn clock_skew_is_reported() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.client("a").await?;
    set_faults(&server, json!({ "clock_skew_ms": 5_000 }))?;
    let mut events = a.observe_changes();
    let r = a.sync().await?;
    assert!(r.is_ok(), "{:?}", r.errors);
    match wait_for(&mut events, "ClockSkew", |e| {
        matches!(e, ClientEvent::ClockSkew { .. })
    })
    .await?
    {
        ClientEvent::ClockSkew { offset_ms } => {
            assert!((4_000..=6_000).contains(&offset_ms), "{offset_ms}")
        }
        other => anyhow::bail!("{other:?}"),
    }
    let link = a.link_state().await?;
    assert!(link.clock_skewed(), "{link:?}");
    drop(a);
    let again = server.offline_client("a").await?;
    let stored = again.link_state().await?;
    assert!(
        stored.clock_skew_ms.is_some_and(|s| s > 4_000),
        "{stored:?}"
    );
    set_faults(&server, json!({ "clock_skew_ms": 0 }))?;
    let mut events = again.observe_changes();
    again.sync().await?;
    wait_for(&mut events, "skew cleared", |e| {
        *e == ClientEvent::ClockSkew { offset_ms: 0 }
    })
    .await?;
    Ok(())
}

/// Background sync polling every 5 minutes sees another client's change at once: the
/// change feed woke it (the sync is announced as triggered by the feed).
#[tokio::test]
async fn the_change_feed_brings_another_clients_change_at_once() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.client("a").await?;
    let b = server.client("b").await?;
    let mut events = a.observe_changes();
    let bg = a.start_background_sync(Duration::from_secs(300));
    wait_for(&mut events, "the feed open", |e| {
        *e == ClientEvent::ChangeFeed { connected: true }
    })
    .await?;
    wait_for(&mut events, "the first sync", |e| {
        matches!(e, ClientEvent::SyncFinished(_))
    })
    .await?;
    let e = b
        .create_entity(EntityType::Note, "from b", note("hello"))
        .await?;
    let pushed = Instant::now();
    let r = b.sync().await?;
    assert!(r.is_ok(), "{:?}", r.errors);
    let mut trigger = None;
    wait_for(&mut events, "b's change", |ev| match ev {
        ClientEvent::SyncTriggered(t) => {
            trigger = Some(*t);
            false
        }
        ClientEvent::EntityChangedBySync { id } => *id == e.id,
        _ => false,
    })
    .await?;
    let latency = pushed.elapsed();
    assert_eq!(trigger, Some(SyncTrigger::Feed));
    assert!(a.entity(&e.id).await?.is_some());
    let stats = bg.stop().await;
    assert!(stats.feed_syncs >= 1, "{stats:?}");
    println!("change visible through the feed after {latency:?}");
    Ok(())
}

/// Against a server without the feed (404) background sync polls, and still brings
/// another client's change.
#[tokio::test]
async fn without_a_feed_background_sync_polls() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let t = Arc::new(Watched::default());
    t.no_feed.store(true, Ordering::SeqCst);
    let a = client_through(&server, "a", t, quick()).await?;
    let b = server.client("b").await?;
    let mut events = a.observe_changes();
    let bg = a.start_background_sync(Duration::from_millis(20));
    wait_for(&mut events, "the first sync", |e| {
        matches!(e, ClientEvent::SyncFinished(_))
    })
    .await?;
    let e = b
        .create_entity(EntityType::Note, "from b", note("hi"))
        .await?;
    b.sync().await?;
    let mut feed_seen = false;
    let mut triggers = Vec::new();
    wait_for(&mut events, "b's change", |ev| match ev {
        ClientEvent::ChangeFeed { .. } => {
            feed_seen = true;
            false
        }
        ClientEvent::SyncTriggered(t) => {
            triggers.push(*t);
            false
        }
        ClientEvent::EntityChangedBySync { id } => *id == e.id,
        _ => false,
    })
    .await?;
    let stats = bg.stop().await;
    assert!(!feed_seen);
    assert_eq!(triggers.last(), Some(&SyncTrigger::Poll), "{triggers:?}");
    assert!(!triggers.contains(&SyncTrigger::Feed), "{triggers:?}");
    assert_eq!(stats.feed_syncs, 0);
    Ok(())
}

/// A change feed cut off is reported lost, reopened (after the first 1 s wait) and goes
/// on waking background sync.
#[tokio::test]
async fn a_lost_change_feed_is_reopened() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let t = Arc::new(Watched::default());
    t.cut_feed.store(true, Ordering::SeqCst);
    let a = client_through(&server, "a", t, quick()).await?;
    let b = server.client("b").await?;
    let mut events = a.observe_changes();
    let bg = a.start_background_sync(Duration::from_secs(300));
    let mut feed = Vec::new();
    wait_for(&mut events, "the feed reopened", |e| match e {
        ClientEvent::ChangeFeed { connected } => {
            feed.push(*connected);
            feed.len() == 3
        }
        _ => false,
    })
    .await?;
    assert_eq!(feed, vec![true, false, true]);
    let e = b
        .create_entity(EntityType::Note, "from b", note("again"))
        .await?;
    b.sync().await?;
    let mut trigger = None;
    wait_for(&mut events, "b's change", |ev| match ev {
        ClientEvent::SyncTriggered(t) => {
            trigger = Some(*t);
            false
        }
        ClientEvent::EntityChangedBySync { id } => *id == e.id,
        _ => false,
    })
    .await?;
    assert_eq!(trigger, Some(SyncTrigger::Feed));
    bg.stop().await;
    Ok(())
}
