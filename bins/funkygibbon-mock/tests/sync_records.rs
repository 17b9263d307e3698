//! Each sync's device bookkeeping (`last_seen`, `sync_count`) is held and written behind
//! (`--sync-record-delay-ms`, `goodies_store::seen`), so a caught-up client's delta
//! writes nothing to the store — and no sync goes uncounted: the status endpoint of
//! the same server shows every one at once, another server on the same database within
//! the delay, a backup holds them, and a server that stops writes what it holds.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::{sync_body, Backend, TestServer};

async fn status(s: &TestServer, token: &str, device: &str) -> Value {
    let (status, body) = s
        .get_json(token, &format!("/api/v1/sync/status?device_id={device}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn syncs(s: &TestServer, token: &str, device: &str, n: usize) {
    for _ in 0..n {
        let (status, body) = s
            .post_json(
                token,
                "/api/v1/sync/",
                &sync_body(device, "full", json!([])),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn sync_records_written_behind_are_all_counted(backend: Backend) {
    let Some(mut a) = TestServer::start_with(backend, |mut c| {
        c.sync_record_delay = Duration::from_millis(200);
        c
    })
    .await
    else {
        return;
    };
    let token = a.login().await;
    syncs(&a, &token, "tablet", 5).await;
    // The same server: what it holds is written before it answers.
    let st = status(&a, &token, "tablet").await;
    assert_eq!(st["sync_count"], 5, "{st}");
    assert!(st["last_seen"].is_string(), "{st}");
    // Held, not written per sync: the store's table lags until the timer writes it.
    syncs(&a, &token, "tablet", 3).await;
    let b = TestServer::start_on_url(&a.database_url).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = status(&b, &token, "tablet").await;
        if st["sync_count"] == 8 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not written behind within 10 s: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A backup holds every sync counted so far.
    syncs(&a, &token, "phone", 2).await;
    let snapshot = a.handle.store().export_snapshot().await.expect("export");
    let text = serde_json::to_string(&snapshot).expect("json");
    assert!(text.contains("phone"), "the held records are in the backup");
    // Held when the server stops: written at shutdown.
    syncs(&a, &token, "tablet", 2).await;
    a.signal_stop();
    a.join().await.expect("stopped");
    let recorded = b
        .handle
        .store()
        .client_status("tablet")
        .await
        .expect("read")
        .expect("known");
    assert_eq!(recorded.sync_count, 10);
}

/// With the delay at zero each sync writes its own record at once, as before.
async fn a_zero_delay_writes_each_record_at_once(backend: Backend) {
    let Some(a) = TestServer::start_with(backend, |mut c| {
        c.sync_record_delay = Duration::ZERO;
        c
    })
    .await
    else {
        return;
    };
    let token = a.login().await;
    let b = TestServer::start_on_url(&a.database_url).await;
    syncs(&a, &token, "tablet", 3).await;
    let st = status(&b, &token, "tablet").await;
    assert_eq!(st["sync_count"], 3, "{st}");
}

on_both_backends!(
    sync_records_written_behind_are_all_counted,
    a_zero_delay_writes_each_record_at_once,
);
