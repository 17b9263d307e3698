//! Faults changed while the server runs (`GET`/`PUT /api/v1/admin/faults`, admin only),
//! taking effect on the next request; forced AUTH_EXPIRED and RATE_LIMITED, answers cut
//! mid-body, slow bodies and a skewed `server_time`; every fault counted.

mod support;

use std::time::Duration;

use funkygibbon_mock::FaultConfig;
use inbetweenies_proto::Timestamp;
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

async fn sync(s: &TestServer, token: &str, device: &str) -> (u16, Value) {
    s.post_json(
        token,
        "/api/v1/sync/",
        &sync_body(device, "full", json!([])),
    )
    .await
}

async fn set_faults(s: &TestServer, admin: &str, body: Value) -> Value {
    let (status, v) = s.put_json(admin, "/api/v1/admin/faults", &body).await;
    assert_eq!(status, 200, "{v}");
    v
}

async fn a_fault_changed_at_run_time_applies_to_the_next_request(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let (status, v) = s.get_json(&admin, "/api/v1/admin/faults").await;
    assert_eq!(status, 200);
    assert_eq!(v["active"], false);
    assert_eq!(v["faults"]["error_rate"], 0.0);
    assert_eq!(sync(&s, &admin, "d").await.0, 200);

    // Forced AUTH_EXPIRED from the very next request.
    let v = set_faults(&s, &admin, json!({"auth_expired_rate": 1.0})).await;
    assert_eq!(v["active"], true);
    let (status, body) = sync(&s, &admin, "d").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "AUTH_EXPIRED");
    // Only the sync endpoints: the admin endpoint itself still answers.
    let v = set_faults(
        &s,
        &admin,
        json!({"auth_expired_rate": 0, "rate_limited_rate": 1.0}),
    )
    .await;
    assert_eq!(v["injected"]["auth_expired"], 1);
    let res = s
        .http
        .post(s.url("/api/v1/sync/"))
        .bearer_auth(&admin)
        .json(&sync_body(
            "d",
            "delta",
            json!([create_change("limited-1", "note", "n", json!({}))]),
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "1");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert!(
        s.handle
            .store()
            .entity(&inbetweenies_proto::EntityId::new("limited-1"))
            .await
            .expect("read")
            .is_none(),
        "a refused push applies nothing"
    );

    // Off again: the next request goes through.
    let v = set_faults(&s, &admin, json!({"rate_limited_rate": 0})).await;
    assert_eq!(v["active"], false);
    assert_eq!(v["injected"]["rate_limited"], 1);
    assert_eq!(sync(&s, &admin, "d").await.0, 200);

    // Bad settings are refused whole, and change nothing.
    let (status, body) = s
        .put_json(
            &admin,
            "/api/v1/admin/faults",
            &json!({"error_rate": 0.5, "drop_rate": 7}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "drop_rate");
    let (_, v) = s.get_json(&admin, "/api/v1/admin/faults").await;
    assert_eq!(v["faults"]["error_rate"], 0.0);

    // Admins only.
    let guest = s.guest_token(&admin).await;
    assert_eq!(s.get_json(&guest, "/api/v1/admin/faults").await.0, 403);
    assert_eq!(
        s.put_json(&guest, "/api/v1/admin/faults", &json!({"error_rate": 1}))
            .await
            .0,
        403
    );
    assert_eq!(s.get_json("", "/api/v1/admin/faults").await.0, 401);

    // Every injected fault is counted in /metrics too.
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
        text.contains("funkygibbon_faults_injected_total{kind=\"auth_expired\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("funkygibbon_faults_injected_total{kind=\"rate_limited\"} 1"),
        "{text}"
    );
    s.shutdown().await.expect("shutdown");
}

async fn server_time_is_skewed_by_the_setting(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let (_, before) = sync(&s, &admin, "skew").await;
    let plain = Timestamp::parse(before["server_time"].as_str().expect("time")).expect("ts");
    set_faults(&s, &admin, json!({"clock_skew_ms": 3_600_000})).await;
    let (status, after) = sync(&s, &admin, "skew").await;
    assert_eq!(status, 200);
    let skewed = Timestamp::parse(after["server_time"].as_str().expect("time")).expect("ts");
    // An hour ahead of the unskewed time (which moved on by the time between the calls).
    let ahead = skewed.unix_micros() - plain.unix_micros();
    assert!(
        (3_600_000_000..3_605_000_000).contains(&ahead),
        "{before} / {after}"
    );
    set_faults(&s, &admin, json!({"clock_skew_ms": -60_000})).await;
    let (_, behind) = sync(&s, &admin, "skew").await;
    let behind = Timestamp::parse(behind["server_time"].as_str().expect("time")).expect("ts");
    let back = plain.unix_micros() - behind.unix_micros();
    assert!((55_000_000..=60_000_000).contains(&back), "{back}");
    let (_, v) = s.get_json(&admin, "/api/v1/admin/faults").await;
    assert_eq!(v["injected"]["clock_skew"], 2);
    s.shutdown().await.expect("shutdown");
}

/// Sends one raw HTTP/1.1 request and reads until the server closes.
async fn raw_exchange(s: &TestServer, token: &str, body: &str) -> Vec<u8> {
    let addr = s.base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST /api/v1/sync/ HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut out))
        .await
        .expect("the server closes the connection");
    out
}

fn content_length(raw: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let len = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse::<usize>().expect("length"))
        })
        .expect("content-length");
    (len, body.len())
}

async fn answers_cut_mid_body_and_trickled(backend: Backend) {
    let mut f = FaultConfig::default();
    f.reset_rate = 1.0;
    let Some(s) = TestServer::start_with(backend, |c| c.with_faults(f)).await else {
        return;
    };
    let admin = s.login().await;
    let body = sync_body(
        "cut",
        "delta",
        json!([create_change("cut-1", "note", "n", json!({}))]),
    )
    .to_string();
    let raw = raw_exchange(&s, &admin, &body).await;
    assert!(raw.starts_with(b"HTTP/1.1 200"), "the head is sent");
    let (declared, got) = content_length(&raw);
    assert!(
        got < declared && got > 0,
        "the body stops halfway: {got} of {declared} bytes"
    );
    // The push was committed all the same.
    assert!(s
        .handle
        .store()
        .entity(&inbetweenies_proto::EntityId::new("cut-1"))
        .await
        .expect("read")
        .is_some());

    // Slow bodies: the whole answer arrives, in pieces, over at least the pauses.
    set_faults(
        &s,
        &admin,
        json!({"reset_rate": 0, "slow_body_chunk_bytes": 64, "slow_body_interval_ms": 20}),
    )
    .await;
    let started = tokio::time::Instant::now();
    let raw = raw_exchange(&s, &admin, &sync_body("cut", "full", json!([])).to_string()).await;
    let (declared, got) = content_length(&raw);
    assert_eq!(got, declared, "the whole body arrives");
    let pieces = declared.div_ceil(64) as u32;
    assert!(pieces >= 3, "a body of {declared} bytes");
    assert!(
        started.elapsed() >= Duration::from_millis(20) * pieces,
        "{pieces} pieces took {:?}",
        started.elapsed()
    );
    let (_, v) = s.get_json(&admin, "/api/v1/admin/faults").await;
    assert_eq!(v["injected"]["reset"], 1);
    assert_eq!(v["injected"]["slow_body"], 1);
    s.shutdown().await.expect("shutdown");
}

/// The same seed gives the same decisions, also after a seed set at run time.
async fn seeded_decisions_repeat(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        set_faults(&s, &admin, json!({"error_rate": 0.5, "seed": 42})).await;
        // Re-seeding needs a different seed in between: set another, then 42 again.
        let mut seq = Vec::new();
        for _ in 0..16 {
            seq.push(sync(&s, &admin, "seeded").await.0);
        }
        set_faults(&s, &admin, json!({"error_rate": 0, "seed": 7})).await;
        runs.push(seq);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&503) && runs[0].contains(&200), "{runs:?}");
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    a_fault_changed_at_run_time_applies_to_the_next_request,
    server_time_is_skewed_by_the_setting,
    answers_cut_mid_body_and_trickled,
    seeded_decisions_repeat,
);
