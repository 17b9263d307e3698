//! Faults between client and server: a response lost after the server committed, a pull
//! cut between pages, and server errors that clear up; retries converge without
//! duplicates or spurious conflicts.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use goodies_client::{
    HttpRequest, HttpResponse, HyperTransport, Transport, TransportError, SYNC_PATH,
};
use goodies_e2e::{assert_converged, quiet_sync, TestServer};
use serde_json::json;

/// Forwards to the real server, then loses the first answer to a push.
#[derive(Debug, Default)]
struct LoseFirstPushResponse {
    inner: HyperTransport,
    lost: AtomicBool,
}

#[async_trait]
impl Transport for LoseFirstPushResponse {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let is_sync = request.url.ends_with(SYNC_PATH);
        let resp = self.inner.send(request).await?;
        if is_sync && resp.status == 200 && !self.lost.swap(true, Ordering::SeqCst) {
            return Err(TransportError::http(
                "connection reset after the server committed",
            ));
        }
        Ok(resp)
    }
}

/// Answers 503 to the first `n` sync requests without forwarding them.
#[derive(Debug, Default)]
struct Unavailable {
    inner: HyperTransport,
    left: AtomicU32,
}

#[async_trait]
impl Transport for Unavailable {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if request.url.ends_with(SYNC_PATH)
            && self
                .left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            return Ok(HttpResponse {
                status: 503,
                headers: vec![],
                body: br#"{"detail":"busy"}"#.to_vec(),
            });
        }
        self.inner.send(request).await
    }
}

#[tokio::test]
async fn lost_response_retry_converges_without_duplicates() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let lossy = Arc::new(LoseFirstPushResponse::default());
    let a = server.client_with_transport("a", lossy.clone()).await?;
    let home = a.create_home("Home").await?;
    let room = a.create_room(&home.id, "Kitchen", None).await?;
    let lamp = a.create_device(&room.id, "Lamp", "light", None).await?;

    let r = a.sync().await?;
    assert!(lossy.lost.load(Ordering::SeqCst), "a response was lost");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.retries, 1);
    assert_eq!(r.pending, 0);
    assert_eq!(
        r.conflicts_resolved, 0,
        "a re-sent version is not a conflict"
    );
    assert!(r.digest.as_ref().is_some_and(|d| d.matches()));
    for id in [&home.id, &room.id, &lamp.id] {
        assert_eq!(
            server.handle.store().history(id).await?.len(),
            1,
            "no duplicate of {id}"
        );
    }
    assert_eq!(
        server
            .handle
            .store()
            .relationships(&Default::default())
            .await?
            .len(),
        2
    );
    assert_converged(&server, &[&a]).await?;
    server.stop().await
}

#[tokio::test]
async fn lost_response_to_a_conflicting_push() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let lossy = Arc::new(LoseFirstPushResponse::default());
    let a = server.client("a").await?;
    let home = a.create_home("Home").await?;
    quiet_sync(&a).await?;
    let b = server.client_with_transport("b", lossy.clone()).await?;
    // b's first pull loses nothing that matters: it is retried like any other.
    quiet_sync(&b).await?;
    lossy.lost.store(false, Ordering::SeqCst);

    a.update_home(&home.id, Some("Home (a)"), None).await?;
    quiet_sync(&a).await?;
    b.update_home(&home.id, Some("Home (b)"), None).await?;
    let r = b.sync().await?;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.retries, 1);
    assert_eq!(r.pending, 0);
    quiet_sync(&a).await?;
    quiet_sync(&b).await?;
    assert_converged(&server, &[&a, &b]).await?;
    // The server decided once; the re-sent push did not add a second conflict.
    let conflicts = server.handle.store().conflicts(None, 100).await?;
    assert_eq!(conflicts.len(), 1, "{conflicts:?}");
    assert_eq!(server.handle.store().history(&home.id).await?.len(), 3);
    server.stop().await
}

#[tokio::test]
async fn server_errors_are_retried() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let flaky = Arc::new(Unavailable {
        left: AtomicU32::new(2),
        ..Unavailable::default()
    });
    let a = server.client_with_transport("a", flaky.clone()).await?;
    let home = a.create_home("Home").await?;
    a.update_home(
        &home.id,
        None,
        Some(
            json!({"address": "1 Main St"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        ),
    )
    .await?;
    let r = quiet_sync(&a).await?;
    assert_eq!(r.retries, 2);
    assert_eq!(r.acknowledged, 2);

    // More failures than retries: reported, nothing lost, the next sync delivers. The
    // pull after the failed push gets one try, not the retries again.
    flaky.left.store(10, Ordering::SeqCst);
    a.create_home("Second").await?;
    let r = a.sync().await?;
    assert!(
        matches!(
            r.errors.as_slice(),
            [
                goodies_client::SyncError::Server {
                    status: 503,
                    attempts: 4,
                    ..
                },
                goodies_client::SyncError::Server {
                    status: 503,
                    attempts: 1,
                    ..
                }
            ]
        ),
        "{:?}",
        r.errors
    );
    assert_eq!(r.retries, 3, "the pull was not retried");
    assert_eq!(r.pending, 1);
    flaky.left.store(0, Ordering::SeqCst);
    quiet_sync(&a).await?;
    assert_converged(&server, &[&a]).await?;
    server.stop().await
}

/// Forwards to the real server, but refuses sync requests numbered `from` and later
/// (counting from 1) while `down` is set.
#[derive(Debug, Default)]
struct DownFrom {
    inner: HyperTransport,
    from: u32,
    seen: AtomicU32,
    down: AtomicBool,
}

#[async_trait]
impl Transport for DownFrom {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if request.url.ends_with(SYNC_PATH) {
            let n = self.seen.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.from && self.down.load(Ordering::SeqCst) {
                return Err(TransportError::http("connection refused"));
            }
        }
        self.inner.send(request).await
    }
}

#[tokio::test]
async fn a_pull_cut_while_a_page_is_applied_resumes_from_its_cursor() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.with_page_size(3)).await?;
    let a = server.client("a").await?;
    let home = a.create_home("Home").await?;
    for n in 0..6 {
        a.create_room(&home.id, &format!("Room {n}"), Some(n))
            .await?;
    }
    quiet_sync(&a).await?;

    // 7 entities + 6 relationships in pages of 3: the third request is sent while the
    // second page is applied, and fails (retries included).
    let cut = Arc::new(DownFrom {
        from: 3,
        down: AtomicBool::new(true),
        ..DownFrom::default()
    });
    let b = server.client_with_transport("b", cut.clone()).await?;
    let r = b.sync().await?;
    assert!(r.is_unreachable(), "{:?}", r.errors);
    assert_eq!(r.requests, 2);
    assert_eq!(r.pulled_entities + r.pulled_relationships, 6);
    let cursor = b.store().sync_state().await?.cursor;
    assert!(cursor.is_some(), "the second page's cursor is kept");

    cut.down.store(false, Ordering::SeqCst);
    let r = quiet_sync(&b).await?;
    assert_eq!(r.pulled_entities + r.pulled_relationships, 7);
    assert_eq!(r.requests, 3, "pages 3, 4 and the last, short one");
    assert_eq!(b.get_rooms_in_home(&home.id).await?.len(), 6);
    assert_converged(&server, &[&a, &b]).await?;
    server.stop().await
}
