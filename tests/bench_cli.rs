//! Benchmark of the command-line client as a user meets it
//! (`cargo bench -p goodies-e2e --bench cli_sync`): every sample is a fresh
//! `blowing-off` process against the real `funkygibbon-mock` binary on loopback, timed
//! from spawn to exit (wall clock), with its peak RSS from `wait4`.
//!
//! Build both release binaries first (`cargo build --release -p blowing-off -p
//! funkygibbon-mock`); they are taken from `BLOWING_OFF_BIN` / `FUNKYGIBBON_BIN` or from
//! the directory above this bench's executable (`target/release`).
//!
//! Scenarios, at 300 and 10,000 entities (each with as many relationships), seeded into
//! the server's database file through its store before the server starts:
//! - initial sync into an empty, connected client (`connect` untimed, `sync` timed);
//! - then, interleaved, N rounds of: one change made on the server by another client
//!   (untimed), `sync` of that one change (timed), `sync` with nothing to do (timed).
//!
//! Also `blowing-off --version` (the floor: process start and exit). Counts from
//! `CLI_BENCH_SAMPLES` (rounds of the interleaved pair, 21 by default) and
//! `CLI_BENCH_INITIAL` (initial syncs of the big mirror, 5 by default). Prints one
//! Markdown table: median, spread (min–max), samples, median peak RSS.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use goodies_client::proto::EntityType;
use goodies_client::{BlowingOffClient, ClientConfig, RetryPolicy};
use goodies_store::StoreOptions;
use serde_json::{json, Value};

const PASSWORD: &str = "bench-password";

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn binary(env: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    // target/release/deps/cli_sync-… → target/release/<name>
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("bench executable directory")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it first (cargo build --release -p {name}) or set {env}",
        path.display()
    );
    Ok(path)
}

/// `n` devices, each `connects_to` the previous one, pushed into the server's database
/// file through its store.
async fn seed(db: &Path, n: usize) -> anyhow::Result<()> {
    let store = goodies_store::SqliteStore::connect(
        &format!("sqlite://{}", db.display()),
        StoreOptions::default(),
    )
    .await?;
    goodies_e2e::seed_device_chain(&store, n).await?;
    Ok(())
}

/// The real server binary on 127.0.0.1:0 over a seeded SQLite file.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(bin: &Path, db: &Path) -> anyhow::Result<Server> {
        let mut child = Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--database-url"])
            .arg(format!("sqlite://{}", db.display()))
            .args(["--admin-password", PASSWORD, "--jwt-secret", "bench-secret"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("server stdout")?).read_line(&mut line)?;
        let v: Value = serde_json::from_str(&line).with_context(|| format!("server: {line:?}"))?;
        let url = v["url"].as_str().context("url")?.to_owned();
        Ok(Server { child, url })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One fresh process, run to its end: wall time in ms and stdout.
fn run_timed(cmd: &mut Command) -> anyhow::Result<(f64, String)> {
    let started = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((ms, stdout))
}

/// The same under `/usr/bin/time` (GNU time): stdout and the process's peak RSS in KiB.
/// Kept apart from the timed runs, so that the wrapper's own start is not timed.
fn run_rss(cmd: &Command) -> anyhow::Result<(String, u64)> {
    let file = tempfile::NamedTempFile::new()?;
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped
        .args(["-f", "%M", "-o"])
        .arg(file.path())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    let (_, out) = run_timed(&mut wrapped)?;
    let kb = std::fs::read_to_string(file.path())?
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .context("/usr/bin/time printed no peak RSS")?;
    Ok((out, kb))
}

/// One CLI client: its own configuration file and database.
struct Cli {
    bin: PathBuf,
    config: PathBuf,
    db: PathBuf,
}

impl Cli {
    fn new(bin: &Path, dir: &Path, name: &str) -> Cli {
        Cli {
            bin: bin.to_owned(),
            config: dir.join(format!("{name}.json")),
            db: dir.join(format!("{name}.db")),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--config")
            .arg(&self.config)
            .arg("--db")
            .arg(&self.db)
            .args(args)
            .env("BLOWING_OFF_PASSWORD", PASSWORD)
            .env_remove("RUST_LOG");
        c
    }

    fn connect(&self, url: &str) -> anyhow::Result<()> {
        run_timed(&mut self.command(&["connect", "--server-url", url]))?;
        Ok(())
    }

    /// A timed `sync --json`; checks it succeeded and pulled `pulled` entities.
    fn sync(&self, pulled: u64) -> anyhow::Result<f64> {
        let (ms, out) = run_timed(&mut self.command(&["--json", "sync"]))?;
        check_sync(&out, pulled)?;
        Ok(ms)
    }

    /// The same, untimed, under `/usr/bin/time`: the process's peak RSS in KiB.
    fn sync_rss(&self, pulled: u64) -> anyhow::Result<u64> {
        let (out, kb) = run_rss(&self.command(&["--json", "sync"]))?;
        check_sync(&out, pulled)?;
        Ok(kb)
    }
}

fn check_sync(out: &str, pulled: u64) -> anyhow::Result<()> {
    let v: Value = serde_json::from_str(out.trim()).with_context(|| out.to_owned())?;
    anyhow::ensure!(v["ok"] == json!(true), "sync not ok: {out}");
    anyhow::ensure!(
        v["pulled_entities"] == json!(pulled),
        "expected {pulled} pulled entities: {out}"
    );
    anyhow::ensure!(v["digest_mismatch"].is_null(), "{out}");
    Ok(())
}

#[derive(Default)]
struct Samples {
    ms: Vec<f64>,
    rss_kb: Option<u64>,
}

impl Samples {
    fn row(&mut self, what: &str) {
        let med = median(&mut self.ms);
        let (lo, hi) = (
            self.ms.first().copied().unwrap_or(0.0),
            self.ms.last().copied().unwrap_or(0.0),
        );
        let rss = self.rss_kb.map_or("—".to_owned(), |kb| {
            format!("{:.1} MiB", kb as f64 / 1024.0)
        });
        println!(
            "| {what} | {med:.1} ms | {lo:.1}–{hi:.1} ms | {} | {rss} |",
            self.ms.len(),
        );
    }
}

/// Sorts `v` and returns its median.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is read from the command line.
    let cli_bin = binary("BLOWING_OFF_BIN", "blowing-off")?;
    let server_bin = binary("FUNKYGIBBON_BIN", "funkygibbon-mock")?;
    let rounds = env_count("CLI_BENCH_SAMPLES", 21).max(1);
    let initial_big = env_count("CLI_BENCH_INITIAL", 5).max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    println!("| What (fresh `blowing-off` process, wall clock, loopback) | Median | Spread (min–max) | Samples | Peak RSS (one more run) |");
    println!("|---|---|---|---|---|");
    let dir = tempfile::tempdir()?;
    let mut version = Samples::default();
    for _ in 0..rounds {
        version
            .ms
            .push(run_timed(Command::new(&cli_bin).arg("--version"))?.0);
    }
    version.rss_kb = Some(run_rss(Command::new(&cli_bin).arg("--version"))?.1);
    version.row("`blowing-off --version` (process start and exit only)");

    for (n, initial_samples) in [(300usize, 15usize), (10_000, initial_big)] {
        let db = dir.path().join(format!("server-{n}.db"));
        rt.block_on(seed(&db, n))?;
        let server = Server::start(&server_bin, &db)?;

        let mut initial = Samples::default();
        for i in 0..=initial_samples {
            let client = Cli::new(&cli_bin, dir.path(), &format!("initial-{n}-{i}"));
            client.connect(&server.url)?;
            if i < initial_samples {
                initial.ms.push(client.sync(n as u64)?);
            } else {
                initial.rss_kb = Some(client.sync_rss(n as u64)?);
            }
            let _ = std::fs::remove_file(&client.db);
        }
        initial.row(&format!(
            "`sync` into an empty client: {n} entities + {n} relationships"
        ));

        // The measured mirror, and a writer making one change on the server per round.
        let mirror = Cli::new(&cli_bin, dir.path(), &format!("mirror-{n}"));
        mirror.connect(&server.url)?;
        mirror.sync(n as u64)?;
        let writer = rt.block_on(async {
            let client = BlowingOffClient::builder(dir.path().join(format!("writer-{n}.db")))
                .config(ClientConfig::default().with_retry(RetryPolicy::none()))
                .open()
                .await?;
            client.login(&server.url, PASSWORD).await?;
            anyhow::Ok(client)
        })?;
        let change = |round: usize| {
            rt.block_on(async {
                writer
                    .create_entity(
                        EntityType::Note,
                        &format!("note {round}"),
                        Default::default(),
                    )
                    .await?;
                let r = writer.sync().await?;
                anyhow::ensure!(r.errors.is_empty() && r.acknowledged == 1, "{r:?}");
                anyhow::Ok(())
            })
        };
        let mut incremental = Samples::default();
        let mut idle = Samples::default();
        for round in 0..rounds {
            change(round)?;
            incremental.ms.push(mirror.sync(1)?);
            idle.ms.push(mirror.sync(0)?);
        }
        change(rounds)?;
        incremental.rss_kb = Some(mirror.sync_rss(1)?);
        idle.rss_kb = Some(mirror.sync_rss(0)?);
        incremental.row(&format!(
            "`sync` of 1 change made on the server, {n}-entity mirror"
        ));
        idle.row(&format!("`sync` with nothing to do, {n}-entity mirror"));
        drop(server);
    }
    Ok(())
}
