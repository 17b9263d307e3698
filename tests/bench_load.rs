//! Load generator for the server (`cargo bench -p goodies-e2e --bench server_load`):
//! many concurrent clients, each with its own device id, token and keep-alive HTTP/1.1
//! connection, send `POST /api/v1/sync/` to a real server on loopback. Prints, per
//! scenario, requests/s, p50/p99/p999 latency, errors and server CPU µs per request as
//! a Markdown table, and the server's RSS before, at peak, 2 s and 10 s after the load;
//! the `lost` mode also checks that every acknowledged write is on the server.
//!
//! The server runs in a child process (this binary with `--role server`) so that its
//! CPU time and memory are read from `/proc/<pid>/stat` and `/proc/<pid>/status` alone.
//! It is the test server of the end-to-end tests (`TestServer::start_on`: one runtime
//! thread, a SQLite file or a fresh PostgreSQL database from
//! `GOODIES_TEST_POSTGRES_URL`), with its connection cap raised above the client count.
//!
//! Options (`--name value` after `--`, or the environment variable in brackets):
//! `--scenario` [`LOAD_SCENARIO`]: `table` (default: every table row), `empty`, `push`,
//! `full`, `lost`; `--backend` [`LOAD_BACKEND`]: `sqlite`, `postgres` or `both`
//! (default); `--clients` [`LOAD_CLIENTS`]; `--seconds` [`LOAD_SECONDS`] per
//! measurement (10; 60 for `lost`); `--entities` [`LOAD_ENTITIES`] for `full`.
//! Every client loop is bounded by the duration and by [`MAX_REQUESTS_PER_CLIENT`].

#[path = "bench_http.rs"]
mod bench_http;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use goodies_client::proto::{
    ChangeType, EntityChange, EntityId, EntityType, SourceType, SyncChange, Version,
};
use goodies_e2e::{Backend, TestServer};
use goodies_store::PushBatch;
use http_body_util::Full;
use serde_json::{json, Value};

/// No client sends more than this many requests in one measurement.
const MAX_REQUESTS_PER_CLIENT: usize = 200_000;
/// One request waits at most this long for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

fn opt(name: &str, env: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok().filter(|v| !v.trim().is_empty()))
}

fn opt_num(name: &str, env: &str) -> anyhow::Result<Option<u64>> {
    opt(name, env)
        .map(|v| {
            v.parse()
                .with_context(|| format!("{name}: not a number: {v}"))
        })
        .transpose()
}

// As the server binary (docs/SERVER.md "Memory"); the driver role uses it too.
#[global_allocator]
static GLOBAL: funkygibbon_mock::memory::Allocator = funkygibbon_mock::memory::Allocator;

fn main() -> anyhow::Result<()> {
    if opt("--role", "LOAD_ROLE").as_deref() == Some("server") {
        return server_role();
    }
    driver()
}

// ----- the server child ---------------------------------------------------------------

fn server_role() -> anyhow::Result<()> {
    let backend = parse_backend(&opt("--backend", "LOAD_BACKEND").context("--backend")?)?;
    let entities = opt_num("--entities", "LOAD_ENTITIES")?.unwrap_or(0) as usize;
    let clients = opt_num("--clients", "LOAD_CLIENTS")?.unwrap_or(1) as usize;
    // As the server binary does first thing (docs/SERVER.md "Memory").
    funkygibbon_mock::memory::tune_allocator();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let server = TestServer::start_on(backend, |mut c| {
            c.max_client_connections = clients + 64;
            c
        })
        .await?
        .context("PostgreSQL is not available")?;
        seed(&server, entities).await?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "URL {}", server.url)?;
        for i in 0..clients {
            // Distinct expiry times make every client's token its own.
            let token = bench_http::admin_token(&server.handle, i as i64);
            writeln!(out, "TOKEN {token}")?;
        }
        writeln!(out, "READY")?;
        out.flush()?;
        drop(out);
        // Serve until the driver closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin()
                .read_line(&mut line)
                .map(|r| r > 0)
                .unwrap_or(false)
            {
                line.clear();
            }
        })
        .await?;
        server.stop().await
    })
}

fn entity(id: EntityId, version: Version, parents: Vec<Version>, n: usize) -> EntityChange {
    EntityChange {
        id,
        version,
        entity_type: EntityType::Device,
        name: format!("device {n:05}"),
        content: json!({"n": n, "power": "off", "manufacturer": "Acme"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        source_type: SourceType::Generated,
        user_id: "load".into(),
        parent_versions: parents,
        checksum: None,
        created_at: None,
        updated_at: None,
    }
}

async fn seed(server: &TestServer, n: usize) -> anyhow::Result<()> {
    let store = server.handle.store();
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(2000) {
        let changes = chunk
            .iter()
            .map(|&i| SyncChange {
                change_type: ChangeType::Create,
                entity: Some(entity(
                    EntityId::new_random(),
                    Version::now("seed"),
                    vec![],
                    i,
                )),
                relationships: vec![],
            })
            .collect();
        store
            .apply_push(PushBatch {
                device_id: "seed".into(),
                user_id: "seed".into(),
                changes,
            })
            .await?;
    }
    Ok(())
}

// ----- the driver ---------------------------------------------------------------------

fn parse_backend(s: &str) -> anyhow::Result<Backend> {
    match s {
        "sqlite" => Ok(Backend::Sqlite),
        "postgres" => Ok(Backend::Postgres),
        other => anyhow::bail!("unknown backend {other} (sqlite, postgres)"),
    }
}

/// The server child: its pid, its URL, one token per client.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    url: String,
    tokens: Vec<String>,
}

impl Server {
    fn start(backend: Backend, clients: usize, entities: usize) -> anyhow::Result<Server> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--role", "server", "--backend", backend.name()])
            // The options the server binary sets before its first allocation.
            .envs(funkygibbon_mock::memory::MIMALLOC_ENV)
            .args(["--clients", &clients.to_string()])
            .args(["--entities", &entities.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().context("server stdout")?);
        let mut url = None;
        let mut tokens = Vec::with_capacity(clients);
        for line in out.lines() {
            let line = line?;
            if let Some(u) = line.strip_prefix("URL ") {
                url = Some(u.to_owned());
            } else if let Some(t) = line.strip_prefix("TOKEN ") {
                tokens.push(t.to_owned());
            } else if line == "READY" {
                break;
            }
        }
        let url = url.context("the server child did not start")?;
        anyhow::ensure!(
            tokens.len() == clients,
            "the server child sent too few tokens"
        );
        Ok(Server {
            child,
            stdin,
            url,
            tokens,
        })
    }

    /// User + system CPU time of the whole server process.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit_once(')').context("a stat line")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
        // USER_HZ is 100 on Linux.
        Ok(Duration::from_millis(ticks * 10))
    }

    /// (VmRSS, VmHWM) in KiB.
    fn memory(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| -> anyhow::Result<u64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .with_context(|| format!("{name} in status"))?;
            Ok(line
                .split_whitespace()
                .nth(1)
                .context("a number")?
                .parse()?)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        anyhow::ensure!(status.success(), "the server child failed: {status}");
        Ok(())
    }
}

/// One keep-alive HTTP/1.1 connection of one client.
struct Conn {
    addr: String,
    token: String,
    sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(url: &str, token: String) -> Conn {
        Conn {
            addr: url.trim_start_matches("http://").to_owned(),
            token,
            sender: None,
        }
    }

    async fn sync(&mut self, body: &Value) -> anyhow::Result<Value> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.sync_inner(body))
            .await
            .context("request timed out")?
            .inspect_err(|_| self.sender = None)
    }

    async fn sync_inner(&mut self, body: &Value) -> anyhow::Result<Value> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(&self.addr).await?;
            stream.set_nodelay(true)?;
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().context("a connection")?;
        let bytes = bench_http::post_sync(sender, &self.addr, &self.token, body).await?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

fn request(device: &str, sync_type: &str, since: Option<&str>, cursor: Option<&str>) -> Value {
    let mut r = json!({
        "protocol_version": "inbetweenies-v2",
        "device_id": device,
        "user_id": "load",
        "sync_type": sync_type,
        "changes": [],
        "vector_clock": {"clocks": {}},
        "capabilities": ["relationship_rows"],
    });
    if let Some(s) = since {
        r["filters"] = json!({ "since": s });
    }
    if let Some(c) = cursor {
        r["cursor"] = json!(c);
    }
    r
}

/// What one client measured.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    requests: u64,
    errors: u64,
    first_error: Option<String>,
    /// (id, version) of every write the server acknowledged, last version per id last.
    acked: Vec<(String, String)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Work {
    /// A delta pull from the client's watermark, nothing pushed.
    EmptyDelta,
    /// A delta pull that pushes one new entity.
    PushOne,
    /// A whole pull of the store, page after page.
    Full,
    /// New entities and updates of the client's own entities, with delta pulls.
    PushAndSync,
}

async fn client(
    n: usize,
    url: String,
    token: String,
    work: Work,
    go: Arc<tokio::sync::Barrier>,
    stop: Arc<AtomicBool>,
    mut deadline: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Tally {
    let device = format!("load-device-{n:04}");
    let mut conn = Conn::new(&url, token);
    let mut t = Tally::default();
    // Before the clock starts: connect and take the watermark.
    let mut since = match conn.sync(&request(&device, "delta", None, None)).await {
        Ok(v) => v["server_time"].as_str().map(str::to_owned),
        Err(e) => {
            t.errors += 1;
            t.first_error = Some(format!("{e:#}"));
            None
        }
    };
    go.wait().await;
    let deadline = match deadline.wait_for(Option::is_some).await {
        Ok(d) => (*d).unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    let mut own: Vec<(String, String)> = Vec::new();
    let mut i = 0usize;
    while i < MAX_REQUESTS_PER_CLIENT && Instant::now() < deadline && !stop.load(Ordering::Relaxed)
    {
        i += 1;
        let started = Instant::now();
        let mut pushed = None;
        let result = match work {
            Work::EmptyDelta => conn
                .sync(&request(&device, "delta", since.as_deref(), None))
                .await
                .map(|v| vec![v]),
            Work::PushOne | Work::PushAndSync => {
                let update = work == Work::PushAndSync && i.is_multiple_of(2) && !own.is_empty();
                let (id, parents) = if update {
                    let (id, v) = own[i % own.len()].clone();
                    (id, vec![Version::new(v)])
                } else {
                    (EntityId::new_random().as_str().to_owned(), vec![])
                };
                let version = Version::now(&device);
                let change = SyncChange {
                    change_type: ChangeType::Update,
                    entity: Some(entity(
                        EntityId::new(id.clone()),
                        version.clone(),
                        parents,
                        i,
                    )),
                    relationships: vec![],
                };
                let mut body = request(&device, "delta", since.as_deref(), None);
                body["changes"] = json!([change]);
                pushed = Some((id, version.into_string()));
                conn.sync(&body).await.map(|v| vec![v])
            }
            Work::Full => {
                let mut pages = Vec::new();
                let mut cursor: Option<String> = None;
                let mut r = Ok(());
                for page in 0..10_000 {
                    let kind = if page == 0 { "full" } else { "delta" };
                    t.requests += 1;
                    match conn
                        .sync(&request(&device, kind, None, cursor.as_deref()))
                        .await
                    {
                        Ok(v) => {
                            cursor = v["cursor"].as_str().map(str::to_owned);
                            pages.push(v);
                            if cursor.is_none() {
                                break;
                            }
                        }
                        Err(e) => {
                            r = Err(e);
                            break;
                        }
                    }
                }
                r.map(|()| pages)
            }
        };
        if work != Work::Full {
            t.requests += 1;
        }
        t.latencies_us.push(started.elapsed().as_micros() as u64);
        match result {
            Ok(pages) => {
                let last = pages.last();
                if work != Work::Full {
                    if let Some(s) = last.and_then(|v| v["server_time"].as_str()) {
                        since = Some(s.to_owned());
                    }
                }
                if let (Some((id, version)), Some(v)) = (pushed, last) {
                    let acked = v["applied"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(id.as_str())));
                    if acked {
                        t.acked.push((id.clone(), version.clone()));
                        match own.iter_mut().find(|(o, _)| *o == id) {
                            Some(slot) => slot.1 = version,
                            None => own.push((id, version)),
                        }
                    } else {
                        t.errors += 1;
                        t.first_error
                            .get_or_insert_with(|| format!("{id} not acknowledged"));
                    }
                }
            }
            Err(e) => {
                t.errors += 1;
                t.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
    t
}

/// One measured run's figures.
struct Figures {
    requests: u64,
    ops: usize,
    errors: u64,
    first_error: Option<String>,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    cpu_us_per_request: f64,
    acked: Vec<(String, String)>,
    rss_peak_kib: u64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e3
}

fn run(
    rt: &tokio::runtime::Runtime,
    server: &Server,
    work: Work,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<Figures> {
    rt.block_on(async {
        let go = Arc::new(tokio::sync::Barrier::new(clients + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let (dl_tx, dl_rx) = tokio::sync::watch::channel(None);
        let mut tasks = Vec::with_capacity(clients);
        for n in 0..clients {
            tasks.push(tokio::spawn(client(
                n,
                server.url.clone(),
                server.tokens[n].clone(),
                work,
                go.clone(),
                stop.clone(),
                dl_rx.clone(),
            )));
        }
        go.wait().await;
        let started = Instant::now();
        let cpu0 = server.cpu()?;
        dl_tx.send_replace(Some(started + Duration::from_secs(seconds)));
        let mut peak = 0;
        let watcher = {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let all = futures::future::join_all(tasks);
            tokio::pin!(all);
            loop {
                tokio::select! {
                    r = &mut all => break r,
                    _ = tick.tick() => {
                        peak = peak.max(server.memory()?.0);
                        if started.elapsed() > Duration::from_secs(seconds + 60) {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                }
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = server.cpu()? - cpu0;
        peak = peak.max(server.memory()?.0);
        let mut latencies = Vec::new();
        let mut f = Figures {
            requests: 0,
            ops: 0,
            errors: 0,
            first_error: None,
            seconds: elapsed,
            p50_ms: 0.0,
            p99_ms: 0.0,
            p999_ms: 0.0,
            cpu_us_per_request: 0.0,
            acked: Vec::new(),
            rss_peak_kib: peak,
        };
        for t in watcher {
            let t = t?;
            f.requests += t.requests;
            f.errors += t.errors;
            if f.first_error.is_none() {
                f.first_error = t.first_error;
            }
            latencies.extend(t.latencies_us);
            f.acked.extend(t.acked);
        }
        f.ops = latencies.len();
        latencies.sort_unstable();
        f.p50_ms = percentile(&latencies, 0.50);
        f.p99_ms = percentile(&latencies, 0.99);
        f.p999_ms = percentile(&latencies, 0.999);
        f.cpu_us_per_request = cpu.as_micros() as f64 / f.requests.max(1) as f64;
        anyhow::Ok(f)
    })
}

/// A whole pull over HTTP: the latest version of every entity the server holds.
async fn pull_all(
    url: &str,
    token: &str,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let mut conn = Conn::new(url, token.to_owned());
    let mut latest = std::collections::HashMap::new();
    let mut cursor: Option<String> = None;
    for page in 0..100_000 {
        let kind = if page == 0 { "full" } else { "delta" };
        let v = conn
            .sync(&request("load-check", kind, None, cursor.as_deref()))
            .await?;
        for c in v["changes"].as_array().into_iter().flatten() {
            if let (Some(id), Some(ver)) =
                (c["entity"]["id"].as_str(), c["entity"]["version"].as_str())
            {
                latest.insert(id.to_owned(), ver.to_owned());
            }
        }
        cursor = v["cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            return Ok(latest);
        }
    }
    anyhow::bail!("the pull did not end")
}

/// The server's RSS (KiB) 2 s and 10 s after the load ended at `ended` (the clients'
/// connections are closed by then).
fn rss_after_load(server: &Server, ended: Instant) -> anyhow::Result<(u64, u64)> {
    let at = |s: u64| -> anyhow::Result<u64> {
        let when = ended + Duration::from_secs(s);
        std::thread::sleep(when.saturating_duration_since(Instant::now()));
        Ok(server.memory()?.0)
    };
    Ok((at(2)?, at(10)?))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn table_header() {
    println!("| scenario | backend | clients | requests | req/s | syncs/s | p50 ms | p99 ms | p999 ms | errors | server CPU µs/req | server RSS peak MiB | load avg before |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn row(name: &str, backend: Backend, clients: usize, f: &Figures, load: &str) {
    println!(
        "| {name} | {} | {clients} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.1} | {load} |",
        backend.name(),
        f.requests,
        f.requests as f64 / f.seconds,
        f.ops as f64 / f.seconds,
        f.p50_ms,
        f.p99_ms,
        f.p999_ms,
        f.errors,
        f.cpu_us_per_request,
        f.rss_peak_kib as f64 / 1024.0,
    );
    if let Some(e) = &f.first_error {
        eprintln!("{name} {}: first error: {e}", backend.name());
    }
}

fn check_fds(clients: usize) -> anyhow::Result<()> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let soft: Option<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    if let Some(soft) = soft {
        anyhow::ensure!(
            soft >= clients as u64 + 256,
            "{clients} clients need more than {soft} open files; raise the limit (ulimit -n)"
        );
    }
    Ok(())
}

fn driver() -> anyhow::Result<()> {
    let scenario = opt("--scenario", "LOAD_SCENARIO").unwrap_or_else(|| "table".into());
    let backends = match opt("--backend", "LOAD_BACKEND")
        .as_deref()
        .unwrap_or("both")
    {
        "both" => vec![Backend::Sqlite, Backend::Postgres],
        one => vec![parse_backend(one)?],
    };
    let clients = opt_num("--clients", "LOAD_CLIENTS")?.map(|n| n as usize);
    let seconds = opt_num("--seconds", "LOAD_SECONDS")?;
    let entities = opt_num("--entities", "LOAD_ENTITIES")?.map(|n| n as usize);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load-client")
        .enable_all()
        .build()?;
    println!(
        "machine: {} cores; load average at start {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    if scenario == "lost" {
        // Every backend runs, then any failure is reported.
        let mut failed = Vec::new();
        for backend in backends {
            if let Err(e) = lost(&rt, backend, clients.unwrap_or(1000), seconds.unwrap_or(60)) {
                failed.push(format!("{}: {e:#}", backend.name()));
            }
        }
        anyhow::ensure!(
            failed.is_empty(),
            "load with nothing lost failed: {}",
            failed.join("; ")
        );
        return Ok(());
    }
    // (name, work, clients, entities) rows of the table.
    let mut rows: Vec<(String, Work, usize, usize)> = Vec::new();
    let want = |s: &str| scenario == "table" || scenario == s;
    if want("empty") {
        for n in clients.map_or(vec![10, 100, 1000], |n| vec![n]) {
            rows.push(("empty delta".into(), Work::EmptyDelta, n, 0));
        }
    }
    if want("push") {
        rows.push((
            "push 1 entity".into(),
            Work::PushOne,
            clients.unwrap_or(100),
            0,
        ));
    }
    if want("full") {
        for e in entities.map_or(vec![300, 10_000], |e| vec![e]) {
            rows.push((
                format!("full sync of {e}"),
                Work::Full,
                clients.unwrap_or(100),
                e,
            ));
        }
    }
    anyhow::ensure!(
        !rows.is_empty(),
        "unknown scenario {scenario} (table, empty, push, full, lost)"
    );
    table_header();
    for backend in backends {
        for (name, work, n, e) in &rows {
            check_fds(*n)?;
            let server = Server::start(backend, *n, *e)?;
            let idle = server.memory()?.0;
            let load = load_average();
            let f = run(&rt, &server, *work, *n, seconds.unwrap_or(10))?;
            let ended = Instant::now();
            row(name, backend, *n, &f, &load);
            let (after_2s, after_10s) = rss_after_load(&server, ended)?;
            eprintln!(
                "{name} {}: server RSS before the load {:.1} MiB, peak {:.1} MiB, 2 s after {:.1} MiB, 10 s after {:.1} MiB",
                backend.name(),
                idle as f64 / 1024.0,
                f.rss_peak_kib as f64 / 1024.0,
                after_2s as f64 / 1024.0,
                after_10s as f64 / 1024.0,
            );
            server.stop()?;
        }
    }
    Ok(())
}

/// Load with nothing lost: `clients` push and sync for `seconds`; no errors, and every
/// acknowledged write is the server's latest version of its id afterwards.
fn lost(
    rt: &tokio::runtime::Runtime,
    backend: Backend,
    clients: usize,
    seconds: u64,
) -> anyhow::Result<()> {
    check_fds(clients)?;
    let server = Server::start(backend, clients, 0)?;
    let (rss_before, _) = server.memory()?;
    let load = load_average();
    let f = run(rt, &server, Work::PushAndSync, clients, seconds)?;
    let ended = Instant::now();
    let (_, hwm) = server.memory()?;
    // The last acknowledged version of each id (ids are each client's own).
    let mut want = std::collections::HashMap::new();
    for (id, v) in &f.acked {
        want.insert(id.clone(), v.clone());
    }
    let latest = rt.block_on(pull_all(&server.url, &server.tokens[0]))?;
    let missing = want
        .iter()
        .filter(|(id, v)| latest.get(*id) != Some(*v))
        .count();
    // The check's own pull is part of the "after" (one client, one whole pull).
    let (rss_after, rss_after_10s) = rss_after_load(&server, ended)?;
    table_header();
    row("push and sync (nothing lost)", backend, clients, &f, &load);
    println!();
    println!("| backend | clients | seconds | acknowledged writes | ids | missing or not latest | errors | RSS before MiB | RSS peak (sampled) MiB | VmHWM MiB | RSS 2 s after MiB | RSS 10 s after MiB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {} | {clients} | {:.1} | {} | {} | {missing} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        backend.name(),
        f.seconds,
        f.acked.len(),
        want.len(),
        f.errors,
        rss_before as f64 / 1024.0,
        f.rss_peak_kib as f64 / 1024.0,
        hwm as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after_10s as f64 / 1024.0,
    );
    server.stop()?;
    anyhow::ensure!(
        f.errors == 0,
        "{} errors under load; first: {:?}",
        f.errors,
        f.first_error
    );
    anyhow::ensure!(
        missing == 0,
        "{missing} acknowledged writes are not on the server"
    );
    Ok(())
}
