//! Memory is given back after a load (docs/SERVER.md "Memory"): the server binary, a
//! real child process on loopback, is driven by a burst of concurrent full syncs that
//! grows its heap by tens of MiB; once the burst is over and the server has been quiet
//! for a moment, its resident size must fall back near where it started (with the
//! burst's devices already known to it, as they are to a running server). Read from
//! `/proc/<pid>/status`, so Linux only.

#![cfg(target_os = "linux")]

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{create_change, sync_body};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_funkygibbon-mock");
const PASSWORD: &str = "memory-password";
/// Entities stored: a full sync answers pages of them.
const ENTITIES: usize = 2_000;
/// Concurrent connections in the burst, each asking for `ROUNDS` full syncs.
const CONNECTIONS: usize = 200;
const ROUNDS: usize = 1;

/// Resident and peak resident size of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn start(dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(BIN)
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--database-url")
        .arg(format!("sqlite://{}", dir.join("memory.db").display()))
        .arg("--admin-password")
        .arg(PASSWORD)
        .arg("--jwt-secret")
        .arg("memory-secret")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the server");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).lines().next_line(),
    )
    .await
    .expect("the server announces itself within 30 s")
    .expect("read stdout")
    .expect("a line on stdout");
    let v: Value = serde_json::from_str(&line).expect("the listening line is JSON");
    let url = v["url"].as_str().expect("url").to_owned();
    (child, url)
}

async fn sync(http: &reqwest::Client, base: &str, token: &str, body: &Value) -> Value {
    let res = http
        .post(format!("{base}/api/v1/sync/"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("sync");
    let status = res.status();
    let v: Value = res.json().await.expect("sync answer is JSON");
    assert!(status.is_success(), "sync answered {status}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_grown_by_a_burst_is_given_back_once_quiet() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut child, base) = start(dir.path()).await;
    let pid = child.id().expect("pid");
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONNECTIONS)
        .build()
        .expect("client");
    let token = support::admin_login(&http, &base, PASSWORD).await;

    // A store whose full sync answers pages of some size (each entity ~1 KiB).
    let filler = "x".repeat(900);
    for batch in 0..ENTITIES / 250 {
        let changes: Vec<Value> = (0..250)
            .map(|i| {
                let n = batch * 250 + i;
                create_change(
                    &format!("mem-{n:05}"),
                    "note",
                    &format!("note {n}"),
                    json!({"n": n, "text": filler}),
                )
            })
            .collect();
        let v = sync(
            &http,
            &base,
            &token,
            &sync_body("seed", "delta", json!(changes)),
        )
        .await;
        assert_eq!(v["applied"].as_array().map(Vec::len), Some(250), "{v}");
    }
    // The burst's devices are known to the server before it, as a running server knows
    // its clients: what it keeps per device (owner, bookkeeping, clock) is its steady
    // state, not memory the burst took. Each asks for one page.
    let warm: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            tokio::spawn(async move {
                let v = sync(
                    &http,
                    &base,
                    &token,
                    &sync_body(&format!("burst-{c}"), "full", json!([])),
                )
                .await;
                assert!(
                    v["changes"].as_array().is_some_and(|c| !c.is_empty()),
                    "{v}"
                );
            })
        })
        .collect();
    for w in warm {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the devices are known within 120 s")
            .expect("a device");
    }
    // Settle, then the starting point.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (before, _) = rss_kib(pid);

    // The burst: every connection asks for whole full syncs (every page), ROUNDS times.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        let base = base.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let device = format!("burst-{c}");
            let mut rows = 0usize;
            for _ in 0..ROUNDS {
                // A full sync's first page, then the rest by cursor.
                let mut body = sync_body(&device, "full", json!([]));
                loop {
                    let v = sync(&http, &base, &token, &body).await;
                    rows += v["changes"].as_array().map_or(0, Vec::len);
                    match v["cursor"].as_str() {
                        Some(cursor) => {
                            body = sync_body(&device, "delta", json!([]));
                            body["cursor"] = json!(cursor);
                        }
                        None => break,
                    }
                }
            }
            rows
        }));
    }
    let mut rows = 0;
    for t in tasks {
        rows += tokio::time::timeout(Duration::from_secs(300), t)
            .await
            .expect("the burst ends within 300 s")
            .expect("a burst task");
    }
    let burst = started.elapsed();
    assert!(
        rows >= CONNECTIONS * ROUNDS * ENTITIES,
        "every full sync saw every entity ({rows} rows)"
    );
    let (_, peak) = rss_kib(pid);
    let grew = peak.saturating_sub(before);
    assert!(
        grew >= 30 * 1024,
        "the burst must grow the heap for this test to tell anything: \
         {:.1} MiB before, peak {:.1} MiB",
        mib(before),
        mib(peak)
    );

    // Quiet: the clients' connections are closed (their clients dropped) and the server
    // has nothing in flight. Within 10 s at least three quarters of the growth is back.
    let limit = before + grew / 4;
    let waited = Instant::now();
    let mut after = rss_kib(pid).0;
    while after > limit && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = rss_kib(pid).0;
    }
    println!(
        "burst of {CONNECTIONS} connections x {ROUNDS} full syncs of {ENTITIES} entities in {:.1} s: \
         RSS {:.1} MiB before, peak {:.1} MiB, {:.1} MiB {:.1} s after",
        burst.as_secs_f64(),
        mib(before),
        mib(peak),
        mib(after),
        waited.elapsed().as_secs_f64()
    );
    assert!(
        after <= limit,
        "memory not given back: {:.1} MiB before the burst, peak {:.1} MiB, still {:.1} MiB \
         10 s after (limit {:.1} MiB)",
        mib(before),
        mib(peak),
        mib(after),
        mib(limit)
    );
    // Still serving.
    let health = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health");
    assert!(health.status().is_success());
    child.kill().await.expect("kill");
}

/// The binary's allocator options are in force from its start (docs/SERVER.md
/// "Memory"): set from its `.init_array`, before the first allocation, they win over
/// the environment, and mimalloc's own report of its options at start-up shows them.
#[test]
fn the_allocator_options_are_set_before_the_first_allocation() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .env("MIMALLOC_VERBOSE", "1")
        .env("MIMALLOC_ARENA_EAGER_COMMIT", "1")
        .env("MIMALLOC_PURGE_DELAY", "1000")
        .output()
        .expect("run the binary");
    assert!(out.status.success(), "--version: {:?}", out.status);
    let report = String::from_utf8_lossy(&out.stderr);
    for want in ["option 'arena_eager_commit': 0", "option 'purge_delay': 0"] {
        assert!(
            report.lines().any(|l| l.trim_end() == want),
            "{want:?} not in mimalloc's report:\n{report}"
        );
    }
}
