//! Change-feed latency and blob throughput against the real server binary on loopback.
//!
//! Run with `cargo bench -p funkygibbon-mock --bench feed_blobs`. Starts
//! `funkygibbon-mock` on a SQLite file (and on PostgreSQL when
//! `GOODIES_TEST_POSTGRES_URL` names a server: a fresh database is created and dropped)
//! and prints:
//! - feed: for 300 single-entity pushes, the time from sending the push to receiving its
//!   `change` event, and the push round trip, p50 and p99;
//! - blobs: a 100 MB blob uploaded in one PUT and in 8 MiB chunks, then downloaded, in
//!   MB/s (10^6 bytes), and the server's peak resident memory (VmHWM) before and after.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};

const PASSWORD: &str = "bench-admin-password";
const WRITES: usize = 300;
const BLOB: usize = 100_000_000;
const PIECE: usize = 8 * 1024 * 1024;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(database_url: &str) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_funkygibbon-mock"))
            .args(["--listen", "127.0.0.1:0", "--database-url", database_url])
            .args(["--admin-password", PASSWORD, "--jwt-secret", "bench-secret"])
            .env("RUST_LOG", "warn,funkygibbon_mock=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start funkygibbon-mock");
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        // The address is logged on standard output or standard error, depending on the
        // log settings: both are read (and drained) for the life of the process.
        let out: Box<dyn std::io::Read + Send> = Box::new(child.stdout.take().expect("stdout"));
        let err: Box<dyn std::io::Read + Send> = Box::new(child.stderr.take().expect("stderr"));
        for pipe in [out, err] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(pos) = line.find("addr=") {
                        let addr = line[pos + 5..].split_whitespace().next().unwrap_or("");
                        let _ = tx.send(addr.trim_matches('"').to_owned());
                    }
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server logs its address");
        Server {
            child,
            base: format!("http://{addr}"),
        }
    }

    /// Peak and current resident memory (kB), from /proc.
    fn memory(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn change(i: usize) -> serde_json::Value {
    let version = inbetweenies_proto::Version::now("bench");
    json!({
        "protocol_version": "inbetweenies-v2", "device_id": "bench", "user_id": "bench",
        "sync_type": "delta", "vector_clock": {"clocks": {}},
        "changes": [{"change_type": "create", "relationships": [], "entity": {
            "id": format!("bench-{i}"), "version": version, "entity_type": "device",
            "name": "lamp", "content": {}, "source_type": "manual", "user_id": "bench",
            "parent_versions": []}}],
    })
}

async fn feed(http: &reqwest::Client, base: &str, token: &str) {
    let mut res = http
        .get(format!("{base}/api/v1/sync/events"))
        .bearer_auth(token)
        .send()
        .await
        .expect("events");
    let mut buf = String::new();
    // Reads up to and including the next `change` event.
    async fn next_change(res: &mut reqwest::Response, buf: &mut String) {
        loop {
            while let Some(end) = buf.find("\n\n") {
                let block: String = buf.drain(..end + 2).collect();
                if block.contains("event: change") {
                    return;
                }
            }
            let chunk = res.chunk().await.expect("stream").expect("open");
            buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
    let mut to_event = Vec::with_capacity(WRITES);
    let mut round_trip = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let body = change(i);
        let sent = Instant::now();
        let answer = http
            .post(format!("{base}/api/v1/sync/"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("push");
        assert!(answer.status().is_success());
        let _ = answer.bytes().await;
        round_trip.push(sent.elapsed());
        next_change(&mut res, &mut buf).await;
        to_event.push(sent.elapsed());
    }
    to_event.sort();
    round_trip.sort();
    println!(
        "  feed: push sent -> change event p50 {:.2} ms, p99 {:.2} ms; push round trip p50 {:.2} ms, p99 {:.2} ms ({WRITES} pushes)",
        percentile(&to_event, 0.5).as_secs_f64() * 1e3,
        percentile(&to_event, 0.99).as_secs_f64() * 1e3,
        percentile(&round_trip, 0.5).as_secs_f64() * 1e3,
        percentile(&round_trip, 0.99).as_secs_f64() * 1e3,
    );
}

fn blob_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

async fn blobs(http: &reqwest::Client, server: &Server, token: &str) {
    let base = &server.base;
    let (peak_before, _) = server.memory();
    let mb = BLOB as f64 / 1e6;
    for (label, seed) in [("one PUT", 1u64), ("8 MiB chunks", 2)] {
        let data = blob_bytes(BLOB, seed);
        let sha = hex::encode(Sha256::digest(&data));
        let url = format!("{base}/api/v1/blobs/{sha}");
        let started = Instant::now();
        if seed == 1 {
            let res = http
                .put(&url)
                .bearer_auth(token)
                .body(data.clone())
                .send()
                .await
                .expect("put");
            assert_eq!(res.status(), 201);
        } else {
            let mut at = 0;
            while at < data.len() {
                let end = (at + PIECE).min(data.len());
                let res = http
                    .put(&url)
                    .bearer_auth(token)
                    .header(
                        "content-range",
                        format!("bytes {at}-{}/{}", end - 1, data.len()),
                    )
                    .body(data[at..end].to_vec())
                    .send()
                    .await
                    .expect("put");
                assert!(res.status() == 201 || res.status() == 202);
                at = end;
            }
        }
        let up = started.elapsed();
        let started = Instant::now();
        let mut res = http.get(&url).bearer_auth(token).send().await.expect("get");
        let mut h = Sha256::new();
        let mut n = 0;
        while let Some(chunk) = res.chunk().await.expect("body") {
            n += chunk.len();
            h.update(&chunk);
        }
        let down = started.elapsed();
        assert_eq!(n, BLOB);
        assert_eq!(hex::encode(h.finalize()), sha);
        println!(
            "  blob 100 MB ({label}): upload {:.0} MB/s ({:.2} s), download {:.0} MB/s ({:.2} s)",
            mb / up.as_secs_f64(),
            up.as_secs_f64(),
            mb / down.as_secs_f64(),
            down.as_secs_f64()
        );
    }
    let (peak_after, now) = server.memory();
    println!(
        "  server memory: peak {} MiB before the transfers, peak {} MiB after, {} MiB now",
        peak_before / 1024,
        peak_after / 1024,
        now / 1024
    );
}

async fn run(label: &str, database_url: &str) {
    println!("{label}:");
    let server = Server::start(database_url);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let login = http
        .post(format!("{}/api/v1/auth/admin/login", server.base))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("login");
    let token = login.json::<serde_json::Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    feed(&http, &server.base, &token).await;
    blobs(&http, &server, &token).await;
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    run("SQLite", &url).await;
    if let Ok(admin) = std::env::var("GOODIES_TEST_POSTGRES_URL") {
        use sqlx::Connection as _;
        let name = format!("feed_blobs_bench_{}", std::process::id());
        let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await else {
            println!("PostgreSQL: not reachable, skipped");
            return;
        };
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        run("PostgreSQL", &format!("{base}/{name}")).await;
        let _ = sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}
