//! Server benchmarks: real HTTP on 127.0.0.1 against a SQLite file, as a client sees it.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use funkygibbon_mock::{serve_with_handle, ServerConfig};
use inbetweenies_proto::Version;
use serde_json::{json, Value};
use tokio::runtime::Runtime;

struct Bench {
    base: String,
    token: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn change(id: &str, n: usize) -> Value {
    json!({"change_type": "create", "entity": {"id": id, "version": Version::now("bench"),
        "entity_type": "device", "name": format!("Device {n}"),
        "content": {"power": "on", "brightness": n % 100, "room": format!("room-{}", n % 6)},
        "source_type": "manual", "user_id": "bench", "parent_versions": []}, "relationships": []})
}

fn body(sync_type: &str, changes: Vec<Value>) -> Value {
    json!({"protocol_version": "inbetweenies-v2", "device_id": "bench", "user_id": "bench",
           "sync_type": sync_type, "changes": changes, "vector_clock": {"clocks": {}}})
}

async fn start(entities: usize) -> Bench {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let config = ServerConfig::new(url)
        .with_admin_password("pw")
        .with_jwt_secret("secret");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, handle) = tokio::sync::oneshot::channel();
    tokio::spawn(serve_with_handle(
        listener,
        config,
        async move {
            let _ = stopped.await;
        },
        ready,
    ));
    let token = handle.await.expect("server started").admin_token();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let b = Bench {
        base,
        token,
        http,
        _dir: dir,
        _stop: stop,
    };
    for chunk in (0..entities).collect::<Vec<_>>().chunks(500) {
        let changes = chunk
            .iter()
            .map(|n| change(&format!("seed-{n}"), *n))
            .collect();
        b.sync(&body("delta", changes)).await;
    }
    b
}

impl Bench {
    async fn sync(&self, body: &Value) -> Value {
        let res = self
            .http
            .post(format!("{}/api/v1/sync/", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("sync");
        assert_eq!(res.status(), 200);
        res.json().await.expect("json")
    }
}

fn benches(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let home = rt.block_on(start(300));
    let watermark = rt.block_on(home.sync(&body("full", vec![])))["server_time"].clone();

    let mut g = c.benchmark_group("funkygibbon");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("full sync of a 300-entity home", |b| {
        b.to_async(&rt)
            .iter(|| async { home.sync(&body("full", vec![])).await })
    });
    let mut delta = body("delta", vec![]);
    delta["filters"] = json!({"since": watermark});
    g.bench_function("empty delta (300-entity home)", |b| {
        b.to_async(&rt).iter(|| async { home.sync(&delta).await })
    });
    g.bench_function("100 concurrent empty deltas", |b| {
        b.to_async(&rt).iter(|| async {
            let calls = (0..100).map(|_| home.sync(&delta));
            futures::future::join_all(calls).await
        })
    });
    let mut n = 0usize;
    g.throughput(Throughput::Elements(1000));
    g.bench_with_input(
        BenchmarkId::new("push of one batch", 1000),
        &1000usize,
        |b, size| {
            b.to_async(&rt).iter(|| {
                n += 1;
                let changes: Vec<Value> = (0..*size)
                    .map(|i| change(&format!("push-{n}-{i}"), i))
                    .collect();
                let req = body("delta", changes);
                let home = &home;
                async move {
                    let mut req = req;
                    req["filters"] = json!({"since": "2999-01-01T00:00:00+00:00"});
                    home.sync(&req).await
                }
            })
        },
    );
    g.finish();
    let big = rt.block_on(start(10_000));
    let watermark = rt.block_on(big.sync(&body("full", vec![])))["server_time"].clone();
    let mut small_delta = body("delta", vec![]);
    small_delta["filters"] = json!({"since": watermark});
    rt.block_on(async {
        let changes = (0..10).map(|i| change(&format!("late-{i}"), i)).collect();
        let mut req = body("delta", changes);
        req["filters"] = json!({"since": "2999-01-01T00:00:00+00:00"});
        big.sync(&req).await
    });
    let mut g = c.benchmark_group("funkygibbon 10k");
    g.measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("10-change delta over 10,000 entities", |b| {
        b.to_async(&rt)
            .iter(|| async { big.sync(&small_delta).await })
    });
    g.bench_function(
        "first page (500) of a full sync over 10,000 entities",
        |b| {
            b.to_async(&rt)
                .iter(|| async { big.sync(&body("full", vec![])).await })
        },
    );
    g.bench_function("every page of a pull over 10,000 entities", |b| {
        b.to_async(&rt).iter(|| async {
            let mut req = body("delta", vec![]);
            let mut pages = 0;
            loop {
                let page = big.sync(&req).await;
                pages += 1;
                match page["cursor"].as_str() {
                    Some(c) if pages < 100 => req["cursor"] = json!(c),
                    _ => break pages,
                }
            }
        })
    });
    let mut pushed = 0usize;
    g.bench_function(
        "push of one new entity over 10,000 entities (answer and digest included)",
        |b| {
            b.to_async(&rt).iter(|| {
                pushed += 1;
                let mut req = body("delta", vec![change(&format!("one-{pushed}"), pushed)]);
                req["filters"] = json!({"since": "2999-01-01T00:00:00+00:00"});
                let big = &big;
                async move { big.sync(&req).await }
            })
        },
    );
    g.finish();
}

criterion_group!(server, benches);
criterion_main!(server);
