//! Benchmark of a client's digest-mismatch repair (`cargo bench -p goodies-e2e --bench
//! client_repair`): a server on a SQLite file holds 10,000 entities; a client mirror in
//! step with it is closed, one row is corrupted with raw SQL, and the reopened client's
//! next `sync()` repairs it — through the Merkle tree (the server announces `merkle`), and
//! again with the capability taken out of the server's answers (a full pull). Prints the
//! requests of each repair and the median, fastest and slowest sync time of `RUNS` runs.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use async_trait::async_trait;
use goodies_client::{
    EntityId, HttpRequest, HttpResponse, HyperTransport, RepairMethod, Transport, TransportError,
};
use goodies_e2e::{corrupt_mirror_row, quiet_sync, seed_devices, TestServer};
use serde_json::Value;

const ENTITIES: usize = 10_000;
const RUNS: usize = 7;

/// Takes `merkle` out of the sync answers' capabilities when `hide` is set.
#[derive(Debug)]
struct Hide {
    inner: HyperTransport,
    hide: bool,
}

#[async_trait]
impl Transport for Hide {
    async fn send(&self, mut request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let is_sync = request.url.ends_with("/api/v1/sync/");
        if !(self.hide && is_sync) {
            return self.inner.send(request).await;
        }
        request
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("accept-encoding"));
        let mut response = self.inner.send(request).await?;
        if response.status == 200 {
            let mut v: Value = serde_json::from_slice(&response.body)
                .map_err(|e| TransportError::Connect(e.to_string().into()))?;
            if let Some(Value::Array(caps)) = v.get_mut("capabilities") {
                caps.retain(|c| c != "merkle");
            }
            response.body = serde_json::to_vec(&v).expect("JSON");
        }
        Ok(response)
    }
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = TestServer::start().await?;
        let store = server.handle.store();
        seed_devices(store.as_ref(), ENTITIES, 5_000, |i| EntityId::new(format!("device-{i:05}"))).await?;
        let first = server.client("bench").await?;
        quiet_sync(&first).await?;
        drop(first);
        let file = server.dir.path().join("bench.db");

        println!("| repair of 1 corrupted row, {ENTITIES} entities, SQLite | requests (Merkle + entity reads + sync) | sync median ms ({RUNS} runs) | fastest | slowest |");
        println!("|---|---|---|---|---|");
        let mut n = 0;
        for hide in [false, true] {
            let mut times = Vec::with_capacity(RUNS);
            let mut requests = String::new();
            for _ in 0..RUNS {
                n += 1;
                corrupt_mirror_row(&file, &format!("device-{:05}", n * 997 % ENTITIES)).await?;
                let c = server
                    .client_with_transport(
                        "bench",
                        Arc::new(Hide {
                            inner: HyperTransport::new(),
                            hide,
                        }),
                    )
                    .await?;
                let t = Instant::now();
                let r = c.sync().await?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                let repair = r.repair.context("a repair")?;
                anyhow::ensure!(repair.converged, "{repair:?}");
                let want = if hide {
                    RepairMethod::FullPull
                } else {
                    RepairMethod::Merkle
                };
                anyhow::ensure!(repair.method == want, "{repair:?}");
                requests = format!(
                    "{} ({} + {} + {})",
                    r.requests,
                    repair.merkle_requests,
                    repair.fetched.len(),
                    r.requests as usize - repair.merkle_requests as usize - repair.fetched.len()
                );
                drop(c);
            }
            times.sort_by(f64::total_cmp);
            println!(
                "| {} | {requests} | {:.1} | {:.1} | {:.1} |",
                if hide {
                    "full pull (capability hidden)"
                } else {
                    "Merkle"
                },
                times[RUNS / 2],
                times[0],
                times[RUNS - 1]
            );
        }
        server.stop().await?;
        anyhow::Ok(())
    })
}
