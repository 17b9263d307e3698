//! Retries: a server that never answers is tried once and retried five times with
//! backoff (the default policy's shape, scaled to milliseconds: the real store's pool
//! timers rule out tokio's paused clock here), then the sync reports it and keeps every
//! change pending. The default delays themselves are checked in `config.rs`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use goodies_client::{
    BlowingOffClient, ClientConfig, HttpRequest, HttpResponse, RetryPolicy, SyncError, Transport,
    TransportError,
};

#[derive(Debug, Default)]
struct Refused {
    calls: AtomicU32,
}

#[async_trait]
impl Transport for Refused {
    async fn send(&self, _request: HttpRequest) -> Result<HttpResponse, TransportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(TransportError::Connect("connection refused".into()))
    }
}

#[tokio::test]
async fn backoff_then_report_and_keep_pending() {
    let dir = tempfile::tempdir().unwrap();
    let refused = Arc::new(Refused::default());
    let c = BlowingOffClient::builder(dir.path().join("c.db"))
        .config(
            ClientConfig::default().with_retry(RetryPolicy {
                max_retries: 5,
                delays: [1, 2, 4, 8, 16, 30]
                    .into_iter()
                    .map(Duration::from_millis)
                    .collect(),
            }),
        )
        .transport(refused.clone())
        .open()
        .await
        .unwrap();
    c.connect("http://127.0.0.1:9", Some("t")).await.unwrap();
    c.create_home("Home").await.unwrap();

    let r = c.sync().await.unwrap();
    assert_eq!(
        refused.calls.load(Ordering::SeqCst),
        6,
        "1 attempt + 5 retries"
    );
    assert_eq!(r.retries, 5);
    assert!(r.is_unreachable());
    assert!(matches!(
        r.errors.as_slice(),
        [SyncError::Unreachable { attempts: 6, .. }]
    ));
    assert_eq!(r.pending, 1);
    let entry = c.store().pending(10).await.unwrap();
    assert_eq!(
        entry[0].attempts, 1,
        "the failed send is counted on the entry"
    );
    let status = c.status().await.unwrap();
    assert!(status.last_sync.is_some_and(|l| !l.ok));
}
