//! The empty delta's hot path and the server's bounded caches.
//!
//! - A caught-up client's delta is answered from the kept empty page while the store's
//!   head has not moved; the head is read for every request (on SQLite directly on the
//!   request's thread), so a write through another server *process* on the same database
//!   is in the very next delta.
//! - Each sync's device bookkeeping is held and written behind: every sync counts, the
//!   status endpoint shows them at once, another server sees them within the delay, and
//!   a server that stops writes what it holds.
//! - Every cache is capped by its flag: more distinct keys than the cap never make it
//!   hold more, and requests still work.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use funkygibbon_mock::Claims;
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer, PASSWORD, SECRET};

/// A server binary in a process of its own.
struct ServerProcess {
    child: Child,
    base: String,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts the binary on `database_url` (a free loopback port) and waits for its address.
    async fn start(database_url: &str) -> ServerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_funkygibbon-mock"));
        for (key, _) in std::env::vars() {
            if key.starts_with("FUNKYGIBBON_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
            .args(["--admin-password", PASSWORD, "--jwt-secret", SECRET])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start funkygibbon-mock");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = tokio::sync::oneshot::channel::<String>();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let parsed = serde_json::from_str::<Value>(&line).ok();
                if let Some(addr) = parsed.as_ref().and_then(|v| v["addr"].as_str()) {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr.to_owned());
                    }
                }
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the server logs its address")
            .expect("address");
        ServerProcess {
            child,
            base: format!("http://{addr}"),
        }
    }
}

fn delta(device: &str, since: &str) -> Value {
    let mut body = sync_body(device, "delta", json!([]));
    body["filters"] = json!({"since": since});
    body
}

async fn post(http: &reqwest::Client, base: &str, token: &str, body: &Value) -> (u16, Value) {
    support::read(
        http.post(format!("{base}/api/v1/sync/"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request"),
    )
    .await
}

/// A write through another server process on the same database is in the next delta
/// of a caught-up client, even while that client's query has a kept empty page.
async fn a_write_by_another_process_is_in_the_next_quiet_delta(backend: Backend) {
    let Some(a) = TestServer::start(backend).await else {
        return;
    };
    let token = a.login().await;
    let (status, first) = a
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("phone", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    // Two empty deltas: the first keeps its empty page, the second is answered from it.
    let mut watermark = first["server_time"].as_str().expect("watermark").to_owned();
    for _ in 0..2 {
        let (status, d) = a
            .post_json(&token, "/api/v1/sync/", &delta("phone", &watermark))
            .await;
        assert_eq!(status, 200, "{d}");
        assert_eq!(d["changes"], json!([]), "{d}");
        watermark = d["server_time"].as_str().expect("watermark").to_owned();
    }
    assert!(
        a.handle.cached().await.quiet_pages >= 1,
        "a kept empty page"
    );
    let b = ServerProcess::start(&a.database_url).await;
    let http = support::http_client();
    // The same secret: A's token is good on B.
    let b_token = token.clone();
    let (status, pushed) = post(
        &http,
        &b.base,
        &b_token,
        &sync_body(
            "writer",
            "delta",
            json!([create_change("note-from-b", "note", "from b", json!({}))]),
        ),
    )
    .await;
    assert_eq!(status, 200, "{pushed}");
    assert_eq!(pushed["applied"], json!(["note-from-b"]), "{pushed}");
    let (status, d) = a
        .post_json(&token, "/api/v1/sync/", &delta("phone", &watermark))
        .await;
    assert_eq!(status, 200, "{d}");
    let ids: Vec<&str> = d["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["entity"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["note-from-b"], "{d}");
    assert_eq!(d["state_digest"], pushed["state_digest"], "{d}");
}

async fn sync_count(s: &TestServer, token: &str, device: &str) -> Value {
    let (status, body) = s
        .get_json(token, &format!("/api/v1/sync/status?device_id={device}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Syncs held back are each counted: the status endpoint shows them at once, another
/// server on the same database within the delay, and a stopped server wrote them all.
async fn sync_records_written_behind_are_all_counted(backend: Backend) {
    let Some(a) = TestServer::start_with(backend, |c| {
        let mut c = c;
        c.sync_record_delay = Duration::from_millis(200);
        c
    })
    .await
    else {
        return;
    };
    let token = a.login().await;
    for _ in 0..5 {
        let (status, body) = a
            .post_json(
                &token,
                "/api/v1/sync/",
                &sync_body("tablet", "full", json!([])),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let st = sync_count(&a, &token, "tablet").await;
    assert_eq!(st["sync_count"], 5, "{st}");
    assert!(st["last_seen"].is_string(), "{st}");
    // Through a second server: written by the timer within the delay.
    for _ in 0..3 {
        a.post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("tablet", "full", json!([])),
        )
        .await;
    }
    let b = TestServer::start_on_url(&a.database_url).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let st = sync_count(&b, &token, "tablet").await;
        if st["sync_count"] == 8 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not written behind within 10 s: {st}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Held when the server stops: written at shutdown.
    let a = {
        let mut a = a;
        for _ in 0..2 {
            a.post_json(
                &token,
                "/api/v1/sync/",
                &sync_body("tablet", "full", json!([])),
            )
            .await;
        }
        a.signal_stop();
        a.join().await.expect("stopped");
        a
    };
    let recorded = b
        .handle
        .store()
        .client_status("tablet")
        .await
        .expect("read")
        .expect("known");
    assert_eq!(recorded.sync_count, 10);
    drop(a);
}

/// More distinct tokens than `--token-cache`: the cache never holds more, every request works.
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

/// A store with more ids than `--digest-index-ids`: the index is not kept, and the
/// digest answered is still the store's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_index_holds_at_most_its_cap() {
    for (cap, held) in [(5, 0), (100, 8)] {
        let s = TestServer::start_with(Backend::Sqlite, |mut c| {
            c.digest_index_ids = cap;
            c
        })
        .await
        .expect("sqlite");
        let token = s.login().await;
        let changes: Vec<Value> = (0..8)
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
        let (status, whole) = s
            .post_json(
                &token,
                "/api/v1/sync/",
                &sync_body("reader", "full", json!([])),
            )
            .await;
        assert_eq!(status, 200, "{whole}");
        let store_digest = s.handle.store().state_digest().await.expect("digest");
        assert_eq!(whole["state_digest"], json!(store_digest), "cap {cap}");
        assert_eq!(s.handle.cached().await.digest_ids, held, "cap {cap}");
    }
}

on_both_backends!(
    a_write_by_another_process_is_in_the_next_quiet_delta,
    sync_records_written_behind_are_all_counted,
);
