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
use goodies_client::proto::{ChangeType, EntityChange, SourceType, SyncChange};
use goodies_client::{
    EntityId, EntityType, HttpRequest, HttpResponse, HyperTransport, RepairMethod, Transport,
    TransportError, Version,
};
use goodies_e2e::{quiet_sync, TestServer};
use goodies_store::PushBatch;
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

async fn corrupt(path: &std::path::Path, id: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    let done = sqlx::query(
        "UPDATE entities SET version = '2001-01-01T00:00:00.000000+00:00-000001-corrupt' \
         WHERE id = ? AND is_latest = 1",
    )
    .bind(id)
    .execute(&mut conn)
    .await?;
    anyhow::ensure!(done.rows_affected() == 1, "one row corrupted");
    conn.close().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let server = TestServer::start().await?;
        let store = server.handle.store();
        for start in (0..ENTITIES).step_by(5_000) {
            let changes = (start..ENTITIES.min(start + 5_000))
                .map(|i| SyncChange {
                    change_type: ChangeType::Create,
                    entity: Some(EntityChange {
                        id: EntityId::new(format!("device-{i:05}")),
                        version: Version::now("seed"),
                        entity_type: EntityType::Device,
                        name: format!("device {i}"),
                        content: Default::default(),
                        source_type: SourceType::Generated,
                        user_id: "seed".into(),
                        parent_versions: vec![],
                        checksum: None,
                        created_at: None,
                        updated_at: None,
                    }),
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
                corrupt(&file, &format!("device-{:05}", n * 997 % ENTITIES)).await?;
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
