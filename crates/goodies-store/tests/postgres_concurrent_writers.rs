//! PostgreSQL: eight writers in two "server processes" on one database while a reader pages the feed.
//!
//! Two store instances (two pools: two server processes) take four writers
//! each. Every writer creates entities, fast-forwards its own, pushes edges,
//! and contends with the others over shared ids (conflicts decided under
//! concurrency). A third instance pages the change feed by cursor the whole
//! time. Afterwards the database and what the reader saw are checked against
//! everything that was pushed. The story runs on databases whose
//! `default_transaction_isolation` is each of `read committed`,
//! `repeatable read` and `serializable`: the store sets its own level.
#![cfg(feature = "postgres")]

mod isolation;
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use goodies_store::{
    ChangeQuery, ChangeRecord, EntityOutcome, RelationshipOutcome, ServerStore, StoreOptions,
};
use inbetweenies_proto::{EntityType, RelationshipType, Version};
use sqlx::Connection as _;
use support::*;

const WRITERS: usize = 8;
const ROUNDS: usize = 10;
const SHARED_IDS: usize = 3;
const LIMIT: Duration = Duration::from_secs(60);

/// What one writer pushed: every (id, version) and relationship id.
#[derive(Default)]
struct Pushed {
    versions: Vec<(String, String)>,
    relationships: Vec<String>,
}

async fn writer(store: Arc<dyn ServerStore>, w: usize, shared_v0: Vec<Version>) -> Pushed {
    let user = format!("w{w}");
    let mut pushed = Pushed::default();
    let mut mine: Vec<(String, Version)> = Vec::new();
    for round in 0..ROUNDS {
        let mut changes = Vec::new();
        // Two new entities and an edge between them.
        let mut fresh = Vec::new();
        for j in 0..2 {
            let id = format!("w{w}-r{round}-e{j}");
            let v = Version::now(&user);
            changes.push(create(ent(
                &id,
                &v,
                &[],
                EntityType::Device,
                &id,
                serde_json::json!({ "round": round }),
            )));
            fresh.push((id, v));
        }
        let edge = format!("w{w}-r{round}-edge");
        changes[1].relationships.push(rel(
            &edge,
            (&fresh[1].0, &fresh[1].1),
            (&fresh[0].0, &fresh[0].1),
            RelationshipType::ConnectsTo,
        ));
        // A fast-forward of the first entity of the previous round.
        if let Some((id, parent)) = mine.first().cloned() {
            let v = Version::now(&user);
            changes.push(update(ent(
                &id,
                &v,
                &[&parent],
                EntityType::Device,
                &id,
                serde_json::json!({ "edited": round }),
            )));
            mine[0].1 = v;
        }
        // Every other round: a rival edit of a shared id, from its first version.
        if round % 2 == w % 2 {
            let k = (round + w) % SHARED_IDS;
            let v = Version::now(&user);
            changes.push(update(ent(
                &format!("shared-{k}"),
                &v,
                &[&shared_v0[k]],
                EntityType::Room,
                "shared",
                serde_json::json!({ "by": user }),
            )));
        }
        for c in &changes {
            if let Some(e) = &c.entity {
                pushed
                    .versions
                    .push((e.id.to_string(), e.version.to_string()));
            }
            for r in &c.relationships {
                pushed.relationships.push(r.id.to_string());
            }
        }
        let out = store
            .apply_push(batch(&user, &user, changes))
            .await
            .expect("push");
        for (_, o) in &out.entity_outcomes {
            assert!(
                matches!(
                    o,
                    EntityOutcome::Applied | EntityOutcome::Won | EntityOutcome::Lost
                ),
                "unexpected outcome {o:?}"
            );
        }
        assert!(out
            .relationship_outcomes
            .iter()
            .all(|(_, o)| *o == RelationshipOutcome::Applied));
        if mine.is_empty() {
            mine.push(fresh[0].clone());
        }
    }
    pushed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_in_two_processes_and_a_paging_reader() {
    eight_writers_and_a_paging_reader_when_the_database_defaults_to("read committed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_neither_fail_nor_lose_rows_when_the_database_defaults_to_repeatable_read(
) {
    eight_writers_and_a_paging_reader_when_the_database_defaults_to("repeatable read").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_neither_fail_nor_lose_rows_when_the_database_defaults_to_serializable()
{
    eight_writers_and_a_paging_reader_when_the_database_defaults_to("serializable").await;
}

/// The writers-and-reader story on a fresh database whose sessions default to `isolation`.
async fn eight_writers_and_a_paging_reader_when_the_database_defaults_to(isolation: &str) {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    isolation::set_default_isolation(&h.url, isolation).await;
    let opts = || StoreOptions {
        max_connections: Some(4),
        ..StoreOptions::default()
    };
    let processes = [h.server(opts()).await, h.server(opts()).await];
    let reader = h.server(opts()).await;

    // The shared ids exist before the writers start.
    let mut shared_v0 = Vec::new();
    let mut seed = Vec::new();
    for k in 0..SHARED_IDS {
        let v = Version::now("seed");
        seed.push(create(ent(
            &format!("shared-{k}"),
            &v,
            &[],
            EntityType::Room,
            "shared",
            serde_json::json!({}),
        )));
        shared_v0.push(v);
    }
    processes[0]
        .apply_push(batch("seed", "seed", seed))
        .await
        .expect("seed");

    let done = Arc::new(AtomicBool::new(false));
    let reader_task = tokio::spawn({
        let reader = Arc::clone(&reader);
        let done = Arc::clone(&done);
        async move {
            let mut seen: Vec<ChangeRecord> = Vec::new();
            let mut after = None;
            for _ in 0..200_000 {
                // Read the flag before the page: a drained page read after every
                // writer finished means nothing is left.
                let finished = done.load(Ordering::SeqCst);
                let page = reader
                    .changes(&ChangeQuery {
                        after_seq: after,
                        limit: 7,
                        ..ChangeQuery::default()
                    })
                    .await
                    .expect("page");
                if let Some(last) = page.records.last() {
                    after = Some(last.seq());
                }
                seen.extend(page.records);
                if finished && page.next_after_seq.is_none() {
                    return seen;
                }
                tokio::task::yield_now().await;
            }
            panic!("the reader did not finish in 200,000 pages");
        }
    });

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&processes[w % 2]);
        writers.push(tokio::spawn(writer(store, w, shared_v0.clone())));
    }
    let mut pushed = Pushed::default();
    for (k, v) in shared_v0.iter().enumerate() {
        pushed.versions.push((format!("shared-{k}"), v.to_string()));
    }
    for task in writers {
        let p = tokio::time::timeout(LIMIT, task)
            .await
            .expect("writer in time")
            .expect("writer");
        pushed.versions.extend(p.versions);
        pushed.relationships.extend(p.relationships);
    }
    done.store(true, Ordering::SeqCst);
    let seen = tokio::time::timeout(LIMIT, reader_task)
        .await
        .expect("reader in time")
        .expect("reader");

    let mut db = sqlx::PgConnection::connect(&h.url)
        .await
        .expect("check connection");

    // Every pushed (id, version) is stored exactly once, and nothing else is
    // (no merges under the default strategy).
    let stored: Vec<(String, String)> = sqlx::query_as("SELECT id, version FROM entities")
        .fetch_all(&mut db)
        .await
        .expect("versions");
    let pushed_set: HashSet<(String, String)> = pushed.versions.iter().cloned().collect();
    assert_eq!(
        pushed_set.len(),
        pushed.versions.len(),
        "test bug: a version was pushed twice"
    );
    let mut stored_count: HashMap<(String, String), usize> = HashMap::new();
    for k in stored {
        *stored_count.entry(k).or_default() += 1;
    }
    for k in &pushed_set {
        assert_eq!(stored_count.get(k), Some(&1), "{k:?} stored once");
    }
    assert_eq!(stored_count.len(), pushed_set.len());
    let rel_count: i64 = sqlx::query_scalar("SELECT count(*) FROM relationships")
        .fetch_one(&mut db)
        .await
        .expect("count");
    assert_eq!(rel_count as usize, pushed.relationships.len());

    // Exactly one latest row per id, and it is the last row that became latest.
    let bad_latest: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT id FROM entities GROUP BY id \
         HAVING count(*) FILTER (WHERE is_latest) <> 1) x",
    )
    .fetch_one(&mut db)
    .await
    .expect("latest count");
    assert_eq!(bad_latest, 0, "ids without exactly one latest row");
    let wrong_marker: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM entities e WHERE e.is_latest AND e.seq <> \
         (SELECT max(seq) FROM entities x WHERE x.id = e.id AND x.became_latest)",
    )
    .fetch_one(&mut db)
    .await
    .expect("marker check");
    assert_eq!(
        wrong_marker, 0,
        "latest rows that are not the last to become latest"
    );

    // Sequence numbers: unique across both tables, gap-free, with receipt times strictly increasing.
    let seqs: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT seq, received_at FROM entities UNION ALL SELECT seq, received_at FROM relationships ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await
    .expect("seqs");
    let total = pushed.versions.len() + pushed.relationships.len();
    assert_eq!(seqs.len(), total);
    for (i, (s, _)) in seqs.iter().enumerate() {
        assert_eq!(*s, i as i64 + 1, "sequence numbers are unique and gap-free");
    }
    for w in seqs.windows(2) {
        assert!(w[0].1 < w[1].1, "received_at strictly increases with seq");
    }

    // The reader saw no row twice, in order, and every row still current at the end.
    for w in seen.windows(2) {
        assert!(
            w[0].seq() < w[1].seq(),
            "the reader got {} after {}",
            w[1].seq(),
            w[0].seq()
        );
    }
    let seen_seqs: HashSet<u64> = seen.iter().map(ChangeRecord::seq).collect();
    let current: Vec<i64> = sqlx::query_scalar(
        "SELECT seq FROM entities WHERE is_latest UNION ALL SELECT seq FROM relationships",
    )
    .fetch_all(&mut db)
    .await
    .expect("current rows");
    assert_eq!(
        current.len(),
        pushed.relationships.len()
            + stored_count
                .keys()
                .map(|k| &k.0)
                .collect::<HashSet<_>>()
                .len()
    );
    for s in current {
        assert!(seen_seqs.contains(&(s as u64)), "the reader missed row {s}");
    }
    for r in &seen {
        if let ChangeRecord::Entity(e) = r {
            assert!(
                pushed_set.contains(&(e.entity.id.to_string(), e.entity.version.to_string())),
                "the reader got a version nobody pushed"
            );
        }
    }
    let _ = db.close().await;
}
