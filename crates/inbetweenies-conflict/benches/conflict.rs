//! Criterion benchmarks: time per conflict (last-write-wins, three-way merge of a 20-key entity) and digest time.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use inbetweenies_conflict::{
    resolve, state_digest, MapAncestry, MerkleTree, NoAncestry, ResolverConfig, Strategy,
};
use inbetweenies_proto::{Entity, EntityType, JsonObject, SourceType, Timestamp, Version};
use serde_json::json;

fn entity(version: &str, parents: &[&str], content: JsonObject) -> Entity {
    let v = Version::new(version);
    let at = v.timestamp().expect("benchmark versions parse");
    Entity {
        id: "6f1d0c8e-8a51-4c3e-9d7b-2b5f1f0e9a42".into(),
        version: v,
        entity_type: EntityType::Device,
        name: "Thermostat".into(),
        content,
        source_type: SourceType::Homekit,
        user_id: "bench".into(),
        parent_versions: parents.iter().map(|p| Version::new(*p)).collect(),
        created_at: at,
        updated_at: at,
    }
}

fn content(keys: usize, f: impl Fn(usize) -> serde_json::Value) -> JsonObject {
    (0..keys).map(|i| (format!("key_{i:02}"), f(i))).collect()
}

fn conflicts(c: &mut Criterion) {
    let now = Timestamp::parse("2026-06-15T10:00:00.000000+00:00").expect("valid");
    let base = "2026-06-15T09:00:00.000000+00:00-000001-origin";
    let sv = "2026-06-15T09:41:00.000000+00:00-000002-tablet";
    let cv = "2026-06-15T09:41:03.000000+00:00-000003-phone";

    // Last-write-wins: two edits of the same base, 3 s apart.
    let small = content(4, |i| json!(i));
    let server = entity(sv, &[base], small.clone());
    let client = entity(cv, &[base], small);
    let lww = ResolverConfig::default();
    c.bench_function("conflict/lww_decision", |b| {
        b.iter(|| {
            resolve(
                black_box(&server),
                black_box(&client),
                now,
                &lww,
                &NoAncestry,
            )
        })
    });

    // Three-way merge of a 20-key entity: 5 keys changed by the server, 5 by
    // the client, 2 by both (decided by the rule), 8 untouched.
    let ancestor = entity(base, &[], content(20, |i| json!({"value": i, "unit": "c"})));
    let server = entity(
        sv,
        &[base],
        content(20, |i| match i {
            0..=4 | 18 | 19 => json!({"value": i + 100, "unit": "c"}),
            _ => json!({"value": i, "unit": "c"}),
        }),
    );
    let client = entity(
        cv,
        &[base],
        content(20, |i| match i {
            5..=9 | 18 | 19 => json!({"value": i + 200, "unit": "c"}),
            _ => json!({"value": i, "unit": "c"}),
        }),
    );
    let ancestry: MapAncestry = [ancestor, server.clone(), client.clone()]
        .into_iter()
        .collect();
    let merge = ResolverConfig::default().with_default_strategy(Strategy::ThreeWayMerge);
    c.bench_function("conflict/three_way_merge_20_keys", |b| {
        b.iter(|| {
            resolve(
                black_box(&server),
                black_box(&client),
                now,
                &merge,
                &ancestry,
            )
        })
    });
}

fn rows(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            // UUID-shaped ids in scrambled order, canonical versions.
            let x = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (
                format!(
                    "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                    x >> 32,
                    (x >> 16) & 0xffff,
                    x & 0xfff,
                    (x >> 4) & 0xfff,
                    i
                ),
                format!(
                    "2026-06-15T09:41:02.{:06}+00:00-{:06}-user",
                    i % 1_000_000,
                    i % 1_000_000
                ),
            )
        })
        .collect()
}

fn digests(c: &mut Criterion) {
    let mut group = c.benchmark_group("digest");
    group.sample_size(20);
    for n in [10_000usize, 100_000] {
        let data = rows(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("state_digest", n), &data, |b, data| {
            b.iter(|| state_digest(data.iter().map(|(i, v)| (i.as_str(), v.as_str()))))
        });
        group.bench_with_input(BenchmarkId::new("merkle_build", n), &data, |b, data| {
            b.iter(|| {
                MerkleTree::with_default_depth(data.iter().map(|(i, v)| (i.as_str(), v.as_str())))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, conflicts, digests);
criterion_main!(benches);
