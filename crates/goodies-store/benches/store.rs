//! Store benchmarks per backend: batch insert, full reads, small deltas, idempotent re-pushes, adversarial parents.
//!
//! Every backend runs the same benchmarks: SQLite always; PostgreSQL with the
//! `postgres` feature when `GOODIES_TEST_POSTGRES_URL` is set (a fresh database
//! is created for the run). Stores are prepared once and reused across
//! iterations, so setup is not measured.
//!
//! The adversarial row pushes about 16 MiB (as JSON on the wire) of the worst
//! case for ordering a batch: many copies of one version and as many
//! children naming it as their parent. Its time is what every other writer
//! waits for the write lock.
//!
//! `cargo bench -p goodies-store --all-features -- --warm-up-time 1 --measurement-time 3`

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use goodies_store::{ChangeQuery, PushBatch, ServerStore, StoreOptions};
use inbetweenies_proto::{
    ChangeType, EntityChange, EntityId, EntityType, RelationshipChange, RelationshipId,
    RelationshipType, SourceType, SyncChange, Timestamp, Version,
};
use serde_json::json;
use tokio::runtime::Runtime;

/// A backend to benchmark: opens fresh, empty server stores.
enum Backend {
    Sqlite,
    #[cfg(feature = "postgres")]
    Postgres,
}

/// Keeps a store's database alive for as long as the store is used.
struct Opened {
    store: Arc<dyn ServerStore>,
    _harness: support::Harness,
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            #[cfg(feature = "postgres")]
            Backend::Postgres => "postgres",
        }
    }

    async fn open(&self) -> Option<Opened> {
        let harness = match self {
            Backend::Sqlite => support::Harness::sqlite(),
            #[cfg(feature = "postgres")]
            Backend::Postgres => support::Harness::postgres().await?,
        };
        let store = harness.server(StoreOptions::default()).await;
        Some(Opened {
            store,
            _harness: harness,
        })
    }
}

fn backends() -> Vec<Backend> {
    #[cfg_attr(
        not(feature = "postgres"),
        expect(unused_mut, reason = "only PostgreSQL adds a backend")
    )]
    let mut out = vec![Backend::Sqlite];
    #[cfg(feature = "postgres")]
    if std::env::var("GOODIES_TEST_POSTGRES_URL").is_ok_and(|u| !u.trim().is_empty()) {
        out.push(Backend::Postgres);
    }
    out
}

/// `n` new devices (fresh UUIDs) and, unless `with_relationships` is false, one
/// `located_in` edge from each to the previous one.
fn batch(n: usize, with_relationships: bool) -> PushBatch {
    let base = Timestamp::parse("2025-01-01T00:00:00+00:00").expect("base time");
    let mut changes = Vec::with_capacity(n);
    let mut prev: Option<(EntityId, Version)> = None;
    for i in 0..n {
        let id = EntityId::new_random();
        let version = Version::generate(base.saturating_add_micros(i as i64), "bench");
        let mut content = serde_json::Map::new();
        content.insert("n".into(), json!(i));
        content.insert("on".into(), json!(i % 2 == 0));
        content.insert("model".into(), json!("Lamp 3000"));
        let mut change = SyncChange {
            change_type: ChangeType::Create,
            entity: Some(EntityChange {
                id: id.clone(),
                version: version.clone(),
                entity_type: EntityType::Device,
                name: format!("Device {i}"),
                content,
                source_type: SourceType::Generated,
                user_id: "bench".into(),
                parent_versions: vec![],
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: vec![],
        };
        if with_relationships {
            if let Some((pid, pv)) = &prev {
                change.relationships.push(RelationshipChange {
                    id: RelationshipId::new_random(),
                    from_entity_id: id.clone(),
                    from_entity_version: version.clone(),
                    to_entity_id: pid.clone(),
                    to_entity_version: pv.clone(),
                    relationship_type: RelationshipType::LocatedIn,
                    properties: serde_json::Map::new(),
                    user_id: None,
                    created_at: None,
                    updated_at: None,
                });
            }
        }
        prev = Some((id, version));
        changes.push(change);
    }
    PushBatch {
        device_id: "bench-device".into(),
        user_id: "bench".into(),
        changes,
    }
}

/// The wire size the adversarial push is built to (as the JSON of its changes).
const ADVERSARIAL_BYTES: usize = 16 << 20;

/// About [`ADVERSARIAL_BYTES`] of worst-case parents for ordering, on a fresh
/// id: half the changes push the same version, the other half push one child
/// version naming it (each child names it twice). Returns the batch and the
/// size of its changes as JSON.
fn adversarial_parents() -> (PushBatch, usize) {
    let id = EntityId::new_random();
    let base = Timestamp::parse("2025-01-01T00:00:00+00:00").expect("base time");
    let parent = Version::generate(base, "bench");
    let child = Version::generate(base.saturating_add_micros(1), "bench");
    let change = |version: &Version, parents: Vec<Version>| SyncChange {
        change_type: if parents.is_empty() {
            ChangeType::Create
        } else {
            ChangeType::Update
        },
        entity: Some(EntityChange {
            id: id.clone(),
            version: version.clone(),
            entity_type: EntityType::Note,
            name: "n".into(),
            content: serde_json::Map::new(),
            source_type: SourceType::Manual,
            user_id: "bench".into(),
            parent_versions: parents,
            checksum: None,
            created_at: None,
            updated_at: None,
        }),
        relationships: vec![],
    };
    let pair = [
        change(&parent, vec![]),
        change(&child, vec![parent.clone(), parent.clone()]),
    ];
    let pair_bytes: usize = pair
        .iter()
        .map(|c| serde_json::to_vec(c).expect("json").len() + 1)
        .sum();
    let n = ADVERSARIAL_BYTES.div_ceil(pair_bytes);
    let mut changes = Vec::with_capacity(2 * n);
    changes.extend(std::iter::repeat_n(pair[0].clone(), n));
    changes.extend(std::iter::repeat_n(pair[1].clone(), n));
    let bytes = serde_json::to_vec(&changes).expect("json").len();
    let batch = PushBatch {
        device_id: "bench-device".into(),
        user_id: "bench".into(),
        changes,
    };
    (batch, bytes)
}

/// Fills a store with `n` latest entities, in batches of 10,000.
async fn fill(store: &Arc<dyn ServerStore>, n: usize) {
    let mut left = n;
    while left > 0 {
        let k = left.min(10_000);
        store.apply_push(batch(k, false)).await.expect("fill");
        left -= k;
    }
}

/// Reads every row of the feed with pages of `limit`, following the cursor.
async fn read_all(store: &Arc<dyn ServerStore>, limit: usize) -> usize {
    let mut q = ChangeQuery {
        limit,
        ..ChangeQuery::default()
    };
    let mut rows = 0;
    loop {
        let page = store.changes(&q).await.expect("page");
        rows += page.records.len();
        match page.next_after_seq {
            Some(s) => q.after_seq = Some(s),
            None => return rows,
        }
    }
}

fn bench_backend(c: &mut Criterion, rt: &Runtime, backend: &Backend) {
    let name = backend.name();
    let Some(insert_store) = rt.block_on(backend.open()) else {
        return;
    };

    // 1. One batch of 10,000 entities + 10,000 relationships (fresh ids every iteration).
    let mut g = c.benchmark_group(format!("{name}/insert"));
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(20_000));
    g.bench_function("10k_entities_10k_relationships", |b| {
        b.to_async(rt).iter_custom(|iters| {
            let store = Arc::clone(&insert_store.store);
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let batch = batch(10_000, true);
                    let t = Instant::now();
                    let out = store.apply_push(batch).await.expect("push");
                    total += t.elapsed();
                    assert_eq!(out.entities_written + out.relationships_written, 19_999);
                }
                total
            }
        });
    });
    g.finish();

    // 2. The same push applied twice: the second application is all "already present".
    let mut g = c.benchmark_group(format!("{name}/idempotent"));
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(20_000));
    let repeat = batch(10_000, true);
    rt.block_on(insert_store.store.apply_push(repeat.clone()))
        .expect("first push");
    g.bench_function("repush_10k_entities_10k_relationships", |b| {
        b.to_async(rt).iter(|| {
            let store = Arc::clone(&insert_store.store);
            let batch = repeat.clone();
            async move {
                let out = store.apply_push(batch).await.expect("push");
                assert_eq!(out.entities_written + out.relationships_written, 0);
            }
        });
    });
    g.finish();

    // 3. About 16 MiB of duplicated parents and children naming them (a fresh id every iteration).
    let mut g = c.benchmark_group(format!("{name}/adversarial"));
    let (probe, bytes) = adversarial_parents();
    assert!(
        bytes >= ADVERSARIAL_BYTES,
        "the adversarial push is {bytes} bytes"
    );
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Bytes(bytes as u64));
    let changes = probe.changes.len();
    drop(probe);
    g.bench_function(
        BenchmarkId::new("16MiB_duplicated_parents_and_children", changes),
        |b| {
            b.to_async(rt).iter_custom(|iters| {
                let store = Arc::clone(&insert_store.store);
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let (batch, _) = adversarial_parents();
                        let t = Instant::now();
                        let out = store.apply_push(batch).await.expect("push");
                        total += t.elapsed();
                        // The parent and the child: every copy is already present.
                        assert_eq!(out.entities_written, 2);
                    }
                    total
                }
            });
        },
    );
    g.finish();
    drop(insert_store);

    // 4. Full reads and 10-change deltas over stores of 10,000 and 100,000 entities.
    for size in [10_000usize, 100_000] {
        let Some(opened) = rt.block_on(backend.open()) else {
            return;
        };
        let store = opened.store;
        rt.block_on(fill(&store, size));
        let watermark = rt
            .block_on(store.changes(&ChangeQuery {
                limit: 1,
                ..ChangeQuery::default()
            }))
            .expect("page")
            .server_time;
        let ten = rt
            .block_on(store.apply_push(batch(10, false)))
            .expect("ten");
        assert_eq!(ten.entities_written, 10);
        let total = size + 10;

        let mut g = c.benchmark_group(format!("{name}/full_read"));
        g.sample_size(10)
            .throughput(Throughput::Elements(total as u64));
        g.bench_function(BenchmarkId::new("pages_of_500", size), |b| {
            b.to_async(rt).iter(|| {
                let store = Arc::clone(&store);
                async move { assert_eq!(read_all(&store, 500).await, total) }
            });
        });
        g.bench_function(BenchmarkId::new("one_page", size), |b| {
            b.to_async(rt).iter(|| {
                let store = Arc::clone(&store);
                async move { assert_eq!(read_all(&store, total + 1).await, total) }
            });
        });
        g.finish();

        let mut g = c.benchmark_group(format!("{name}/delta"));
        g.sample_size(20);
        g.bench_function(BenchmarkId::new("10_changes_since", size), |b| {
            b.to_async(rt).iter(|| {
                let store = Arc::clone(&store);
                async move {
                    let q = ChangeQuery {
                        since: Some(watermark),
                        ..ChangeQuery::default()
                    };
                    assert_eq!(store.changes(&q).await.expect("delta").records.len(), 10);
                }
            });
        });
        g.bench_function(BenchmarkId::new("state_digest_cached", size), |b| {
            b.to_async(rt).iter(|| {
                let store = Arc::clone(&store);
                async move { store.state_digest().await.expect("digest") }
            });
        });
        g.finish();
    }
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for backend in backends() {
        bench_backend(c, &rt, &backend);
    }
}

criterion_group!(store, benches);
criterion_main!(store);
