//! Benchmark of the client (`cargo bench -p goodies-e2e --bench client_sync`): initial sync
//! of 300 + 300 and 10,000 + 10,000 entities/relationships into an empty client,
//! incremental sync of one change, and the client's peak RSS.
//!
//! The server runs in a child process (this binary with `--role server`), seeded through
//! its store; every measurement runs a fresh client in another child process
//! (`--role client`) so its peak RSS (`VmHWM`) is the client's alone. Prints medians as a
//! Markdown table.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::Context;
use funkygibbon_mock::{serve_with_handle, ServerConfig};
use goodies_client::{BlowingOffClient, ClientConfig, RetryPolicy};
use serde_json::{json, Value};

const PASSWORD: &str = "bench-password";

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    match arg("--role").as_deref() {
        Some("server") => server_role(),
        Some("client") => client_role(),
        _ => driver(),
    }
}

// ----- the server child ---------------------------------------------------------------

fn server_role() -> anyhow::Result<()> {
    let n: usize = arg("--entities").context("--entities")?.parse()?;
    let dir = tempfile::tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let config = ServerConfig::new(format!(
            "sqlite://{}",
            dir.path().join("server.db").display()
        ))
        .with_admin_password(PASSWORD)
        .with_jwt_secret("bench-secret");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, handle) = tokio::sync::oneshot::channel();
        let server = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let listener = listener.into_std()?;
            rt.block_on(async move {
                serve_with_handle(
                    listener.try_into_tokio()?,
                    config,
                    async move {
                        let _ = stopped.await;
                    },
                    ready,
                )
                .await
            })?;
            Ok(())
        });
        let handle = handle.await?;
        goodies_e2e::seed_device_chain(handle.store().as_ref(), n).await?;
        println!("{url}");
        std::io::stdout().flush()?;
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
        let _ = stop.send(());
        server
            .join()
            .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
        anyhow::Ok(())
    })
}

trait IntoTokio {
    fn try_into_tokio(self) -> std::io::Result<tokio::net::TcpListener>;
}

impl IntoTokio for std::net::TcpListener {
    fn try_into_tokio(self) -> std::io::Result<tokio::net::TcpListener> {
        self.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(self)
    }
}

// ----- the client child ---------------------------------------------------------------

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn client_role() -> anyhow::Result<()> {
    let url = arg("--url").context("--url")?;
    let mode = arg("--mode").context("--mode")?;
    let expect: u64 = arg("--entities").context("--entities")?.parse()?;
    let rounds: usize = arg("--rounds").map_or(Ok(1), |r| r.parse())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let dir = tempfile::tempdir()?;
        let client = BlowingOffClient::builder(dir.path().join("client.db"))
            .config(
                ClientConfig::default()
                    .with_retry(RetryPolicy::none())
                    .with_max_connections(
                        std::env::var("BENCH_CLIENT_CONNECTIONS")
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(ClientConfig::default().max_connections),
                    ),
            )
            .open()
            .await?;
        client.login(&url, PASSWORD).await?;
        let started = Instant::now();
        let r = client.sync().await?;
        let initial_ms = started.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(r.errors.is_empty(), "{:?}", r.errors);
        anyhow::ensure!(r.pulled_entities == expect, "pulled {}", r.pulled_entities);
        anyhow::ensure!(r.pulled_relationships == expect);
        anyhow::ensure!(r.digest.as_ref().is_some_and(|d| d.matches()));
        let mut out = json!({
            "initial_ms": initial_ms,
            "requests": r.requests,
            "rss_after_initial_kb": peak_rss_kb(),
        });
        if mode == "incremental" {
            let some = client
                .entities(&goodies_client::EntityQuery {
                    limit: Some(1),
                    ..Default::default()
                })
                .await?;
            let id = some[0].id.clone();
            let mut samples = Vec::new();
            for n in 0..rounds {
                client.update_characteristic(&id, "level", json!(n)).await?;
                let t = Instant::now();
                let r = client.sync().await?;
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
                anyhow::ensure!(r.errors.is_empty() && r.acknowledged == 1);
                anyhow::ensure!(r.digest.as_ref().is_some_and(|d| d.matches()));
            }
            out["incremental_ms"] = json!(median(&mut samples));
        }
        out["peak_rss_kb"] = json!(peak_rss_kb());
        println!("{out}");
        anyhow::Ok(())
    })
}

// ----- the driver ---------------------------------------------------------------------

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

struct ServerChild {
    child: Child,
    url: String,
}

impl ServerChild {
    fn start(entities: usize) -> anyhow::Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--role", "server", "--entities", &entities.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut url = String::new();
        BufReader::new(stdout).read_line(&mut url)?;
        anyhow::ensure!(url.starts_with("http://"), "server said {url:?}");
        Ok(ServerChild {
            child,
            url: url.trim().to_owned(),
        })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        drop(self.child.stdin.take());
        self.child.wait()?;
        Ok(())
    }
}

fn run_client(url: &str, mode: &str, entities: usize, rounds: usize) -> anyhow::Result<Value> {
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--role",
            "client",
            "--url",
            url,
            "--mode",
            mode,
            "--entities",
            &entities.to_string(),
            "--rounds",
            &rounds.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "client child failed");
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn driver() -> anyhow::Result<()> {
    println!("| scenario | median | samples | client peak RSS (median) |");
    println!("|---|---|---|---|");
    for (n, samples) in [(300usize, 15usize), (10_000, 5)] {
        let server = ServerChild::start(n)?;
        let mut ms = Vec::new();
        let mut rss = Vec::new();
        for _ in 0..samples {
            let v = run_client(&server.url, "initial", n, 0)?;
            ms.push(v["initial_ms"].as_f64().unwrap_or(0.0));
            rss.push(v["peak_rss_kb"].as_f64().unwrap_or(0.0));
        }
        println!(
            "| initial sync, {n} entities + {n} relationships, empty client | {:.1} ms | {samples} | {:.1} MB |",
            median(&mut ms),
            median(&mut rss) / 1024.0
        );
        let v = run_client(&server.url, "incremental", n, 51)?;
        println!(
            "| incremental sync of 1 change (push + ack + pull), {n}-entity client | {:.2} ms | 51 | {:.1} MB |",
            v["incremental_ms"].as_f64().unwrap_or(0.0),
            v["peak_rss_kb"].as_f64().unwrap_or(0.0) / 1024.0
        );
        server.stop()?;
    }
    Ok(())
}
