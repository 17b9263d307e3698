//! Every cache of the server is capped by its flag, whatever the store holds: more
//! distinct keys than the cap never make a cache hold more, and requests still work —
//! verified tokens (`--token-cache`), device owners (`--device-owner-cache`), pages read
//! ahead (`--read-ahead-pages`), empty pages kept for quiet deltas (`--quiet-pages`) and
//! the state digest's index (`--digest-index-ids`, past which the store's own digest
//! answers, still the store's).

mod support;

use funkygibbon_mock::Claims;
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer};

/// A delta from `since` by `device`, pushing nothing.
fn delta(device: &str, since: &str) -> Value {
    let mut b = sync_body(device, "delta", json!([]));
    b["filters"] = json!({ "since": since });
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_cache_holds_at_most_its_cap() {
    let s = TestServer::start_with(Backend::Sqlite, |mut c| {
        c.token_cache = 5;
        c
    })
    .await
    .expect("sqlite");
    let now = inbetweenies_proto::Timestamp::now().unix_micros() / 1_000_000;
    for i in 0..20 {
        let token = s.handle.sign(&Claims {
            sub: format!("admin-{i}"),
            role: "admin".into(),
            permissions: vec!["read".into(), "write".into()],
            exp: now + 3_600,
            iat: now,
        });
        let (status, body) = s
            .post_json(
                &token,
                "/api/v1/sync/",
                &sync_body(&format!("d{i}"), "full", json!([])),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(s.handle.cached().await.tokens <= 5);
    }
    assert!(s.handle.cached().await.tokens >= 1, "tokens are cached");
}

/// More devices than `--device-owner-cache`: at most that many owners are cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_owner_cache_holds_at_most_its_cap() {
    let s = TestServer::start_with(Backend::Sqlite, |mut c| {
        c.device_owner_cache = 3;
        c
    })
    .await
    .expect("sqlite");
    let token = s.login().await;
    for i in 0..10 {
        let (status, body) = s
            .post_json(
                &token,
                "/api/v1/sync/",
                &sync_body(&format!("dev-{i}"), "full", json!([])),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(s.handle.cached().await.device_owners <= 3);
    }
    assert_eq!(s.handle.cached().await.device_owners, 3);
}

/// More paging devices than `--read-ahead-pages` and more queries than `--quiet-pages`:
/// neither holds more than its cap, and every page still comes whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_ahead_and_quiet_pages_hold_at_most_their_caps() {
    let s = TestServer::start_with(Backend::Sqlite, |mut c| {
        c.read_ahead_pages = 2;
        c.quiet_pages = 2;
        c.page_size = 2;
        c
    })
    .await
    .expect("sqlite");
    let token = s.login().await;
    let changes: Vec<Value> = (0..6)
        .map(|i| create_change(&format!("n{i}"), "note", "n", json!({})))
        .collect();
    let (status, body) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("writer", "delta", json!(changes)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Five devices each take the first page of a paged pull: each starts a read ahead.
    let mut cursors = Vec::new();
    for i in 0..5 {
        let (status, page) = s
            .post_json(&token, "/api/v1/sync/", &{
                let mut b = sync_body(&format!("pager-{i}"), "delta", json!([]));
                b["cursor"] = json!("0");
                b
            })
            .await;
        assert_eq!(status, 200, "{page}");
        assert!(s.handle.cached().await.read_ahead_pages <= 2);
        cursors.push(page["cursor"].as_str().expect("more pages").to_owned());
    }
    // Each device still gets its next page (read afresh when its read ahead was dropped).
    for (i, cursor) in cursors.iter().enumerate() {
        let mut b = sync_body(&format!("pager-{i}"), "delta", json!([]));
        b["cursor"] = json!(cursor);
        let (status, page) = s.post_json(&token, "/api/v1/sync/", &b).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["changes"].as_array().map(Vec::len), Some(2), "{page}");
        assert!(s.handle.cached().await.read_ahead_pages <= 2);
    }
    // Five distinct queries, each caught up: at most two empty pages kept.
    let (_, whole) = s
        .post_json(&token, "/api/v1/sync/", &sync_body("q", "full", json!([])))
        .await;
    let at = whole["server_time"].as_str().expect("watermark").to_owned();
    for t in ["note", "device", "room", "user", "automation"] {
        let mut b = delta("q", &at);
        b["filters"]["entity_types"] = json!([t]);
        let (status, d) = s.post_json(&token, "/api/v1/sync/", &b).await;
        assert_eq!(status, 200, "{d}");
        assert!(s.handle.cached().await.quiet_pages <= 2);
    }
    assert_eq!(s.handle.cached().await.quiet_pages, 2);
}

/// A sync through `s` that must be answered 200; its answer.
async fn synced(s: &TestServer, token: &str, body: &Value) -> Value {
    let (status, answer) = s.post_json(token, "/api/v1/sync/", body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// A store with more ids than `--digest-index-ids`: the index is not kept, and the
/// digest answered is still the store's — on each backend, whose own digest answers
/// past the cap.
async fn the_digest_index_holds_at_most_its_cap(backend: Backend) {
    for (cap, held) in [(5, 0), (100, 8)] {
        let Some(s) = TestServer::start_with(backend, |mut c| {
            c.digest_index_ids = cap;
            c
        })
        .await
        else {
            return;
        };
        let token = s.login().await;
        let changes: Vec<Value> = (0..8)
            .map(|i| create_change(&format!("n{i}"), "note", "n", json!({})))
            .collect();
        synced(&s, &token, &sync_body("writer", "delta", json!(changes))).await;
        let whole = synced(&s, &token, &sync_body("reader", "full", json!([]))).await;
        let store_digest = s.handle.store().state_digest().await.expect("digest");
        assert_eq!(whole["state_digest"], json!(store_digest), "cap {cap}");
        assert_eq!(s.handle.cached().await.digest_ids, held, "cap {cap}");
        // After another write the answer's digest is still the store's.
        let one = json!([create_change("n8", "note", "n", json!({}))]);
        synced(&s, &token, &sync_body("writer", "delta", one)).await;
        let at = whole["server_time"].as_str().expect("watermark");
        let later = synced(&s, &token, &delta("reader", at)).await;
        assert_eq!(
            later["changes"].as_array().map(Vec::len),
            Some(1),
            "{later}"
        );
        let store_digest = s.handle.store().state_digest().await.expect("digest");
        assert_ne!(later["state_digest"], whole["state_digest"], "cap {cap}");
        assert_eq!(later["state_digest"], json!(store_digest), "cap {cap}");
        let held_now = if held == 0 { 0 } else { held + 1 };
        assert_eq!(s.handle.cached().await.digest_ids, held_now, "cap {cap}");
    }
}

on_both_backends!(the_digest_index_holds_at_most_its_cap);
