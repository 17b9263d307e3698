//! Benchmark of the server's side of a full pull (`cargo bench -p goodies-e2e --bench
//! full_pull`): 10,000 entities + 10,000 relationships (`seed_device_chain`), pulled whole
//! as the client pulls them — `delta` pages of 500 with `relationship_rows`, the cursor of
//! each page sent with the next, one keep-alive HTTP/1.1 connection — 40 full pages and
//! the last, empty one.
//!
//! The server is the end-to-end test server (`TestServer::start_on`: its own thread and
//! runtime, a SQLite file or a fresh PostgreSQL database from `GOODIES_TEST_POSTGRES_URL`).
//! The client does no JSON work in the timed pulls: it reads each answer's bytes and takes
//! the cursor from the tail, so the time is the server's (request parsing, page read,
//! encoding) and the loopback's. The first pull of each backend is checked in full (every
//! row once, in sequence order) and not timed. Each pull uses its own device id, so no
//! page read ahead for one pull serves another.
//!
//! Options (`--name value` after `--`): `--backend sqlite|postgres|both` (default both;
//! PostgreSQL only when `GOODIES_TEST_POSTGRES_URL` is set), `--entities N` (10,000),
//! `--pulls N` timed pulls per backend (7, at most 100). Prints a Markdown table: median,
//! fastest and slowest pull in ms, the server's CPU time per pull (the process's CPU time
//! less this thread's: the server thread and the store's worker threads; PostgreSQL's own
//! processes are not in it), and the load average.

#[path = "bench_http.rs"]
mod bench_http;

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use goodies_e2e::{Backend, TestServer};
use http_body_util::Full;
use serde_json::{json, Value};

/// No pull takes more than this many requests.
const MAX_PAGES: usize = 10_000;
/// One request waits at most this long for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// One keep-alive HTTP/1.1 connection to the server.
struct Conn {
    addr: String,
    token: String,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(url: &str, token: String) -> anyhow::Result<Conn> {
        let addr = url.trim_start_matches("http://").to_owned();
        let stream = tokio::net::TcpStream::connect(&addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            addr,
            token,
            sender,
        })
    }

    /// The answer's bytes to one sync request.
    async fn sync(&mut self, body: &Value) -> anyhow::Result<Bytes> {
        tokio::time::timeout(
            REQUEST_TIMEOUT,
            bench_http::post_sync(&mut self.sender, &self.addr, &self.token, body),
        )
        .await
        .context("request timed out")?
    }
}

fn request(device: &str, cursor: Option<&str>) -> Value {
    let mut r = json!({
        "protocol_version": "inbetweenies-v2",
        "device_id": device,
        "user_id": "bench",
        "sync_type": "delta",
        "changes": [],
        "vector_clock": {"clocks": {}},
        "capabilities": ["relationship_rows"],
    });
    if let Some(c) = cursor {
        r["cursor"] = json!(c);
    }
    r
}

/// The cursor of an answer, read from its tail without parsing the rows: `"cursor"` is
/// written after `changes` (the answer's keys are in a fixed order), and no row holds
/// the unescaped text `"cursor":`.
fn tail_cursor(page: &[u8]) -> anyhow::Result<Option<String>> {
    const KEY: &[u8] = b"\"cursor\":";
    let at = page
        .windows(KEY.len())
        .rposition(|w| w == KEY)
        .context("an answer without a cursor key")?;
    let rest = &page[at + KEY.len()..];
    if rest.starts_with(b"null") {
        return Ok(None);
    }
    let rest = rest.strip_prefix(b"\"").context("a cursor string")?;
    let end = rest
        .iter()
        .position(|&b| b == b'"')
        .context("an unterminated cursor")?;
    Ok(Some(std::str::from_utf8(&rest[..end])?.to_owned()))
}

/// One whole pull; returns the pages' bytes when `keep`.
async fn pull(conn: &mut Conn, device: &str, keep: bool) -> anyhow::Result<(usize, Vec<Bytes>)> {
    let mut cursor: Option<String> = None;
    let mut kept = Vec::new();
    for page in 1..=MAX_PAGES {
        let bytes = conn.sync(&request(device, cursor.as_deref())).await?;
        cursor = tail_cursor(&bytes)?;
        if keep {
            kept.push(bytes);
        }
        if cursor.is_none() {
            return Ok((page, kept));
        }
    }
    anyhow::bail!("the pull did not end in {MAX_PAGES} pages")
}

/// Checks a pull: every row once, in sequence order across pages, `rows` rows in all.
fn check(pages: &[Bytes], rows: usize) -> anyhow::Result<()> {
    let mut seen = std::collections::HashSet::new();
    let mut entities = 0;
    for bytes in pages {
        let v: Value = serde_json::from_slice(bytes)?;
        let with_serde = v["cursor"].as_str().map(str::to_owned);
        anyhow::ensure!(tail_cursor(bytes)? == with_serde, "the tail cursor differs");
        for c in v["changes"].as_array().context("changes")? {
            let id = match c["entity"]["id"].as_str() {
                Some(id) => {
                    entities += 1;
                    id.to_owned()
                }
                None => c["relationships"][0]["id"]
                    .as_str()
                    .context("a row without an id")?
                    .to_owned(),
            };
            anyhow::ensure!(seen.insert(id.clone()), "{id} pulled twice");
        }
    }
    anyhow::ensure!(
        seen.len() == rows && entities * 2 == rows,
        "pulled {} rows ({entities} entities), expected {rows}",
        seen.len()
    );
    Ok(())
}

/// User + system CPU time of this process, and of this thread.
fn cpu() -> anyhow::Result<(Duration, Duration)> {
    let ticks = |path: &str| -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(path)?;
        let rest = stat.rsplit_once(')').context("a stat line")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
    };
    // USER_HZ is 100 on Linux.
    let d = |t: u64| Duration::from_millis(t * 10);
    Ok((
        d(ticks("/proc/self/stat")?),
        d(ticks("/proc/thread-self/stat")?),
    ))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn bench(backend: Backend, entities: usize, pulls: usize) -> anyhow::Result<()> {
    let Some(server) = TestServer::start_on(backend, |c| c).await? else {
        return Ok(());
    };
    goodies_e2e::seed_device_chain(server.handle.store().as_ref(), entities).await?;
    let token = bench_http::admin_token(&server.handle, 0);
    let mut conn = Conn::open(&server.url, token).await?;
    let (pages, kept) = pull(&mut conn, "bench-check", true).await?;
    check(&kept, entities * 2)?;
    drop(kept);
    let load = load_average();
    let mut times = Vec::with_capacity(pulls);
    let mut server_cpu = Duration::ZERO;
    for i in 0..pulls {
        let (proc0, own0) = cpu()?;
        let started = Instant::now();
        let (n, _) = pull(&mut conn, &format!("bench-{i}"), false).await?;
        times.push(started.elapsed());
        let (proc1, own1) = cpu()?;
        server_cpu += (proc1 - proc0).saturating_sub(own1 - own0);
        anyhow::ensure!(n == pages, "a pull of {n} pages, the first had {pages}");
    }
    times.sort_unstable();
    println!(
        "| {} | {entities} + {entities} | {pages} | {pulls} | {:.1} | {:.1} | {:.1} | {:.1} | {load} |",
        backend.name(),
        ms(times[times.len() / 2]),
        ms(times[0]),
        ms(times[times.len() - 1]),
        ms(server_cpu) / pulls as f64,
    );
    server.stop().await
}

fn main() -> anyhow::Result<()> {
    let backends = match arg("--backend").as_deref().unwrap_or("both") {
        "sqlite" => vec![Backend::Sqlite],
        "postgres" => vec![Backend::Postgres],
        "both" => vec![Backend::Sqlite, Backend::Postgres],
        other => anyhow::bail!("unknown backend {other} (sqlite, postgres, both)"),
    };
    let entities: usize = arg("--entities").map_or(Ok(10_000), |v| v.parse())?;
    let pulls: usize = arg("--pulls").map_or(Ok(7), |v| v.parse())?;
    anyhow::ensure!((1..=100).contains(&pulls), "--pulls: 1 to 100");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!("| backend | entities + relationships | requests per pull | pulls | median ms | fastest ms | slowest ms | server CPU ms per pull | load avg before |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for backend in backends {
        rt.block_on(bench(backend, entities, pulls))?;
    }
    Ok(())
}
