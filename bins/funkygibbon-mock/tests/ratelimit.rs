//! The per-token rate limit of the sync endpoints: 429 RATE_LIMITED with Retry-After
//! once a token's burst is used, other tokens unaffected, apart from the login limiter.

mod support;

use serde_json::json;
use support::{sync_body, Backend, TestServer};

async fn a_token_over_its_rate_gets_429_with_retry_after(backend: Backend) {
    // One request a minute after a burst of three: the fourth in a row is refused.
    let Some(s) = TestServer::start_with(backend, |c| c.with_sync_rate_limit(1.0 / 60.0, 3)).await
    else {
        return;
    };
    let admin = s.login().await;
    let other = s.guest_token(&admin).await;
    for i in 0..3 {
        let (status, body) = s
            .post_json(&admin, "/api/v1/sync/", &sync_body("rl", "full", json!([])))
            .await;
        assert_eq!(status, 200, "request {i}: {body}");
    }
    let res = s
        .http
        .post(s.url("/api/v1/sync/"))
        .bearer_auth(&admin)
        .json(&sync_body("rl", "full", json!([])))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&wait), "{wait}");
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    // Every sync endpoint shares the token's bucket.
    assert_eq!(
        s.get_json(&admin, "/api/v1/sync/status?device_id=rl")
            .await
            .0,
        429
    );
    // Another token has its own bucket; the graph API and login are not limited by it.
    assert_eq!(
        s.post_json(
            &other,
            "/api/v1/sync/",
            &sync_body("rl2", "full", json!([]))
        )
        .await
        .0,
        200
    );
    assert_eq!(s.get_json(&admin, "/api/v1/graph/statistics").await.0, 200);
    let _ = s.login().await;
    // An unknown token is refused as before (401), and gets no bucket.
    assert_eq!(
        s.post_json(
            "not-a-token",
            "/api/v1/sync/",
            &sync_body("x", "full", json!([]))
        )
        .await
        .0,
        401
    );
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("funkygibbon_rate_limited_total{kind=\"sync\"} 2"),
        "{text}"
    );
    s.shutdown().await.expect("shutdown");
}

/// Off by default: many requests in a row all pass.
async fn off_by_default(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    for _ in 0..40 {
        assert_eq!(
            s.get_json(&admin, "/api/v1/sync/status?device_id=x")
                .await
                .0,
            200
        );
    }
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    a_token_over_its_rate_gets_429_with_retry_after,
    off_by_default
);
