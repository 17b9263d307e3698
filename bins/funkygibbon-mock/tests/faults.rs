//! Fault injection: refused requests, answers dropped after commit, deterministic by seed.

mod support;

use std::time::Duration;

use funkygibbon_mock::FaultConfig;
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn faults(error_rate: f64, drop_rate: f64, seed: u64) -> FaultConfig {
    let mut f = FaultConfig::default();
    f.error_rate = error_rate;
    f.drop_rate = drop_rate;
    f.seed = seed;
    f.latency = Duration::from_millis(1);
    f
}

async fn refused_requests_apply_nothing(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_faults(faults(1.0, 0.0, 1))).await
    else {
        return;
    };
    let token = s.login().await;
    let digest = s.handle.store().state_digest().await.expect("digest");
    let res = s
        .http
        .post(s.url("/api/v1/sync/"))
        .bearer_auth(&token)
        .json(&sync_body(
            "d",
            "delta",
            json!([create_change("refused-1", "note", "n", json!({}))]),
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "INTERNAL");
    assert_eq!(
        s.handle.store().state_digest().await.expect("digest"),
        digest,
        "nothing applied"
    );
    for path in [
        "/api/v1/sync/request",
        "/api/v1/sync/push",
        "/api/v1/sync/ack",
    ] {
        assert_eq!(s.post_json(&token, path, &json!({})).await.0, 503, "{path}");
    }
    // Only the sync endpoints are faulted.
    assert_eq!(s.get_json(&token, "/api/v1/graph/statistics").await.0, 200);
    assert_eq!(s.get_json("", "/health").await.0, 200);
    s.shutdown().await.expect("shutdown");
}

async fn dropped_answers_are_committed_and_safe_to_retry(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_faults(faults(0.0, 1.0, 1))).await
    else {
        return;
    };
    let token = s.login().await;
    let body = serde_json::to_vec(&sync_body(
        "d",
        "delta",
        json!([create_change("dropped-1", "note", "n", json!({}))]),
    ))
    .expect("json");
    let addr = s.base.trim_start_matches("http://").to_owned();
    for attempt in 0..2 {
        let mut sock = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /api/v1/sync/ HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await.expect("write");
        sock.write_all(&body).await.expect("write");
        let mut got = Vec::new();
        let _ = sock.read_to_end(&mut got).await;
        assert!(
            got.is_empty(),
            "attempt {attempt}: the connection closes without a byte of answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        // The push was committed all the same, once.
        let history = s
            .handle
            .store()
            .history(&"dropped-1".into())
            .await
            .expect("history");
        assert_eq!(history.len(), 1, "attempt {attempt}: stored exactly once");
    }
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    refused_requests_apply_nothing,
    dropped_answers_are_committed_and_safe_to_retry
);

/// The same seed gives the same faults for the same requests.
#[tokio::test]
async fn faults_follow_the_seed() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let s = TestServer::start_with(Backend::Sqlite, |c| c.with_faults(faults(0.5, 0.0, 42)))
            .await
            .expect("sqlite");
        let token = s.login().await;
        let mut statuses = Vec::new();
        for _ in 0..16 {
            statuses.push(
                s.post_json(&token, "/api/v1/sync/", &sync_body("d", "full", json!([])))
                    .await
                    .0,
            );
        }
        assert!(
            statuses.contains(&200) && statuses.contains(&503),
            "{statuses:?}"
        );
        runs.push(statuses);
        s.shutdown().await.expect("shutdown");
    }
    assert_eq!(runs[0], runs[1]);
}
