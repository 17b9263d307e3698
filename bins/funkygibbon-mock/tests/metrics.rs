//! `GET /metrics`: the Prometheus text format, requests and latency by route template
//! (never the raw path) and status, push batch sizes, conflicts by reason, pages
//! served, store time.

mod support;

use serde_json::json;
use support::{create_change, sync_body, Backend, TestServer};

async fn counts_follow_the_traffic(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let changes = json!([
        create_change("m-1", "note", "one", json!({})),
        create_change("m-2", "note", "two", json!({})),
        create_change("m-3", "note", "three", json!({})),
    ]);
    let (status, _) = s
        .post_json(
            &admin,
            "/api/v1/sync/",
            &sync_body("metrics", "delta", changes),
        )
        .await;
    assert_eq!(status, 200);
    for id in ["m-1", "m-2", "nope"] {
        s.get_json(&admin, &format!("/api/v1/graph/entities/{id}"))
            .await;
    }
    let res = s.http.get(s.url("/metrics")).send().await.expect("metrics");
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .expect("type")
        .starts_with("application/openmetrics-text"));
    let text = res.text().await.expect("text");
    let has = |line: &str| assert!(text.contains(line), "missing {line:?} in\n{text}");
    has("# TYPE funkygibbon_http_requests counter");
    has(
        "funkygibbon_http_requests_total{method=\"POST\",route=\"/api/v1/sync/\",status=\"200\"} 1",
    );
    // By template: the three ids are one route, by status.
    has("funkygibbon_http_requests_total{method=\"GET\",route=\"/api/v1/graph/entities/{id}\",status=\"200\"} 2");
    has("funkygibbon_http_requests_total{method=\"GET\",route=\"/api/v1/graph/entities/{id}\",status=\"404\"} 1");
    assert!(!text.contains("m-1"), "no raw paths in labels");
    has("# TYPE funkygibbon_http_request_duration_seconds histogram");
    has("funkygibbon_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/sync/\",status=\"200\"} 1");
    has("funkygibbon_sync_push_batch_size_count 1");
    has("funkygibbon_sync_push_batch_size_sum 3.0");
    has("funkygibbon_sync_pages_served_total 1");
    has("funkygibbon_store_operation_duration_seconds_count{operation=\"apply_push\"} 1");
    has("funkygibbon_login_password_checks_total 1");
    has("funkygibbon_http_requests_in_flight 1");
    has("# EOF");
    s.shutdown().await.expect("shutdown");
}

async fn conflicts_are_counted_by_reason(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let first = create_change("c-1", "note", "first", json!({}));
    let (status, _) = s
        .post_json(
            &admin,
            "/api/v1/sync/",
            &sync_body("a", "delta", json!([first])),
        )
        .await;
    assert_eq!(status, 200);
    // Another device writes the same id without having seen the first: a conflict.
    let second = create_change("c-1", "note", "second", json!({"x": 1}));
    let (status, body) = s
        .post_json(
            &admin,
            "/api/v1/sync/",
            &sync_body("b", "delta", json!([second])),
        )
        .await;
    assert_eq!(status, 200);
    let conflicts = body["conflicts"].as_array().expect("conflicts");
    assert_eq!(conflicts.len(), 1, "{body}");
    let reason = conflicts[0]["reason"].as_str().expect("reason");
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let line = format!("funkygibbon_sync_conflicts_total{{reason=\"{reason}\"}} 1");
    assert!(text.contains(&line), "missing {line:?} in\n{text}");
    s.shutdown().await.expect("shutdown");
}

async fn metric_text(s: &TestServer) -> String {
    s.http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Change-feed listeners open, and blob bytes in and out.
async fn feed_listeners_and_blob_bytes(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let stream = s
        .http
        .get(s.url("/api/v1/sync/events"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("events");
    assert_eq!(stream.status(), 200);
    assert!(metric_text(&s)
        .await
        .contains("funkygibbon_feed_listeners 1"));
    drop(stream);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !metric_text(&s)
        .await
        .contains("funkygibbon_feed_listeners 0")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener is counted out when its stream closes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let blob = vec![7u8; 3000];
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&blob))
    };
    let res = s
        .http
        .put(s.url(&format!("/api/v1/blobs/{sha}")))
        .bearer_auth(&admin)
        .header("content-type", "application/octet-stream")
        .body(blob.clone())
        .send()
        .await
        .expect("put");
    assert!(res.status().is_success(), "{}", res.status());
    let got = s
        .http
        .get(s.url(&format!("/api/v1/blobs/{sha}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    assert_eq!(got.len(), 3000);
    let text = metric_text(&s).await;
    assert!(
        text.contains("funkygibbon_blob_bytes_total{direction=\"in\"} 3000"),
        "{text}"
    );
    assert!(
        text.contains("funkygibbon_blob_bytes_total{direction=\"out\"} 3000"),
        "{text}"
    );
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    counts_follow_the_traffic,
    conflicts_are_counted_by_reason,
    feed_listeners_and_blob_bytes,
);
