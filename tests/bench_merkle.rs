//! Benchmark of Merkle repair (`cargo bench -p goodies-e2e --bench merkle_repair`): a
//! client mirror that differs from a 100,000-entity server store in 10 ids (4 versions
//! changed, 3 ids missing, 3 extra) finds them through `GET /api/v1/sync/merkle` over
//! loopback HTTP. Prints the requests made, the rows transferred and the median time of
//! 20 walks (after one walk that builds the tree), and the first walk's time.
//!
//! The server runs in this process on its own runtime and threads, over a SQLite file,
//! seeded through its store; the walk runs on another runtime.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use funkygibbon_mock::{serve_with_handle, ServerConfig};
use goodies_client::merkle::{differing_ids, HttpMerkleSource};
use goodies_client::proto::{EntityId, Version};
use goodies_client::HyperTransport;
use goodies_e2e::seed_devices;

const ENTITIES: usize = 100_000;
const WALKS: usize = 20;

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}", std_listener.local_addr()?);
    std_listener.set_nonblocking(true)?;
    let config = ServerConfig::new(format!(
        "sqlite://{}",
        dir.path().join("server.db").display()
    ))
    .with_admin_password("bench-password")
    .with_jwt_secret("bench-secret");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, handle) = tokio::sync::oneshot::channel();
    let server = std::thread::spawn(move || -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener)?;
            serve_with_handle(
                listener,
                config,
                async move {
                    let _ = stopped.await;
                },
                ready,
            )
            .await?;
            anyhow::Ok(())
        })
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let handle = handle.await.context("server did not start")?;
        let store = handle.store();
        let t = Instant::now();
        seed_devices(store.as_ref(), ENTITIES, 5_000, |_| EntityId::new_random()).await?;
        eprintln!("seeded {ENTITIES} entities in {:?}", t.elapsed());
        let server_rows = store.latest_versions().await?;
        let mut mirror = server_rows.clone();
        for i in [5, 20_000, 40_000, 60_000] {
            mirror[i].1 = Version::new("2020-01-01T00:00:00.000000Z-stale");
        }
        for i in [90_000, 70_000, 30_000] {
            mirror.remove(i);
        }
        for i in 0..3 {
            mirror.push((EntityId::new(format!("local-only-{i}")), Version::new("v")));
        }
        let source = HttpMerkleSource::new(
            Arc::new(HyperTransport::new()),
            &url,
            &handle.admin_token(),
        );
        let t = Instant::now();
        let first = differing_ids(&mirror, &source).await?;
        let first_ms = t.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(first.ids.len() == 10, "found {:?}", first.ids);
        let mut times = Vec::with_capacity(WALKS);
        let mut requests = 0;
        for _ in 0..WALKS {
            let t = Instant::now();
            let found = differing_ids(&mirror, &source).await?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            anyhow::ensure!(found.ids.len() == 10, "found {:?}", found.ids);
            requests = found.requests;
        }
        times.sort_by(f64::total_cmp);
        let median = times[WALKS / 2];
        println!("| case | requests | leaves fetched | median ms ({WALKS} walks) | first walk ms (builds the tree) |");
        println!("|---|---|---|---|---|");
        println!(
            "| 10 differing ids, {ENTITIES} entities, SQLite | {requests} | {} | {median:.1} | {first_ms:.1} |",
            first.leaves
        );
        let _ = stop.send(());
        anyhow::Ok(())
    })?;
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))??;
    Ok(())
}
