//! PostgreSQL: a transaction that takes its sequence number and commits late is never skipped by the change feed.
//!
//! Three store instances on one database stand for three server processes
//! (each has its own pool). Process A takes sequence number N and stops just
//! before COMMIT (the hidden `before_commit` hook); meanwhile process B
//! pushes and a reader pages on from a cursor and from a watermark past
//! everything visible. Only then does A commit. The reader must still get
//! A's row, every row exactly once, in sequence order — whatever the
//! database's `default_transaction_isolation` is (the store sets its own).
#![cfg(feature = "postgres")]

mod isolation;
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use goodies_store::{ChangePage, ChangeQuery, ChangeRecord, EntityOutcome, Seq, ServerStore};
use inbetweenies_proto::Timestamp;
use sqlx::Connection as _;
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

fn record_id(r: &ChangeRecord) -> String {
    match r {
        ChangeRecord::Entity(e) => e.entity.id.to_string(),
        ChangeRecord::Relationship(r) => r.relationship.id.to_string(),
    }
}

/// Pages from `after` with `limit` rows per page until the feed is drained.
async fn drain_after(
    store: &dyn ServerStore,
    mut after: Option<Seq>,
    limit: usize,
) -> (Vec<ChangeRecord>, Option<Seq>) {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = store
            .changes(&ChangeQuery {
                after_seq: after,
                limit,
                ..ChangeQuery::default()
            })
            .await
            .expect("page");
        if let Some(last) = page.records.last() {
            after = Some(last.seq());
        }
        out.extend(page.records);
        if page.next_after_seq.is_none() {
            return (out, after);
        }
    }
    panic!("the feed did not drain in 10,000 pages");
}

/// Pulls by watermark until a pull comes back empty.
async fn drain_since(store: &dyn ServerStore, mut since: Timestamp) -> Vec<ChangeRecord> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        let page = store
            .changes(&ChangeQuery {
                since: Some(since),
                limit: 1_000,
                ..ChangeQuery::default()
            })
            .await
            .expect("pull");
        since = page.server_time;
        if page.records.is_empty() {
            return out;
        }
        out.extend(page.records);
    }
    panic!("the pulls did not drain in 10,000 rounds");
}

/// Waits until `n` sessions of this database wait for an advisory lock (observed in `pg_locks`).
async fn wait_for_lock_waiters(url: &str, n: i64) {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("observer connection");
    let start = Instant::now();
    for _ in 0..200_000 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&mut conn)
        .await
        .expect("read pg_locks");
        if waiting >= n {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "only {waiting} of {n} sessions ever waited for the write lock"
        );
        tokio::task::yield_now().await;
    }
    panic!("fewer than {n} sessions waited for the write lock");
}

fn assert_strictly_increasing(records: &[ChangeRecord]) {
    for w in records.windows(2) {
        assert!(
            w[0].seq() < w[1].seq(),
            "feed out of order or duplicated: {} then {}",
            w[0].seq(),
            w[1].seq()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_that_commits_late_still_reaches_the_reader() {
    a_row_that_commits_late_reaches_the_reader_when_the_database_defaults_to("read committed")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_during_a_push_skips_nothing_when_the_database_defaults_to_repeatable_read() {
    a_row_that_commits_late_reaches_the_reader_when_the_database_defaults_to("repeatable read")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pull_during_a_push_skips_nothing_when_the_database_defaults_to_serializable() {
    a_row_that_commits_late_reaches_the_reader_when_the_database_defaults_to("serializable").await;
}

/// The late-commit story on a fresh database whose sessions default to `isolation`.
async fn a_row_that_commits_late_reaches_the_reader_when_the_database_defaults_to(isolation: &str) {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    isolation::set_default_isolation(&h.url, isolation).await;
    let gate = Gate::new();
    let a: Arc<dyn ServerStore> = h.server(gate.options()).await;
    let b = h.default_server().await;
    let reader = h.default_server().await;

    // Some history, read to the end by cursor and by watermark.
    b.apply_push(one_room("b", "seed-1", 0))
        .await
        .expect("seed 1");
    b.apply_push(one_room("b", "seed-2", 1))
        .await
        .expect("seed 2");
    let (seen, cursor) = drain_after(reader.as_ref(), None, 1).await;
    assert_eq!(
        seen.iter().map(record_id).collect::<Vec<_>>(),
        ["seed-1", "seed-2"]
    );
    let watermark = reader
        .changes(&ChangeQuery::default())
        .await
        .expect("pull")
        .server_time;
    let seq_before = reader.max_seq().await.expect("max seq");

    // A takes sequence N and stops before COMMIT.
    gate.hold_next_commit();
    let a_task = tokio::spawn({
        let a = Arc::clone(&a);
        async move { a.apply_push(one_room("a", "late-a", 2)).await }
    });
    tokio::time::timeout(LIMIT, gate.entered())
        .await
        .expect("A reached its commit");

    // B writes and the reader pages on, both while A is in flight.
    let b_task = tokio::spawn({
        let b = Arc::clone(&b);
        async move { b.apply_push(one_room("b", "after-b", 3)).await }
    });
    let page_task = tokio::spawn({
        let reader = Arc::clone(&reader);
        async move {
            reader
                .changes(&ChangeQuery {
                    after_seq: cursor,
                    limit: 1,
                    ..ChangeQuery::default()
                })
                .await
        }
    });
    let pull_task = tokio::spawn({
        let reader = Arc::clone(&reader);
        async move {
            reader
                .changes(&ChangeQuery {
                    since: Some(watermark),
                    ..ChangeQuery::default()
                })
                .await
        }
    });
    // All three wait for A: none of them can pass row N while it is uncommitted.
    tokio::time::timeout(LIMIT, wait_for_lock_waiters(&h.url, 3))
        .await
        .expect("waiters");
    assert!(!b_task.is_finished() && !page_task.is_finished() && !pull_task.is_finished());

    gate.release();
    let a_out = tokio::time::timeout(LIMIT, a_task)
        .await
        .expect("A finished")
        .expect("join")
        .expect("A push");
    assert_eq!(a_out.entity_outcomes[0].1, EntityOutcome::Applied);
    let b_out = tokio::time::timeout(LIMIT, b_task)
        .await
        .expect("B finished")
        .expect("join")
        .expect("B push");
    assert_eq!(b_out.entity_outcomes[0].1, EntityOutcome::Applied);

    // The cursor reader's next page starts with A's row (sequence N), then B's.
    let first: ChangePage = tokio::time::timeout(LIMIT, page_task)
        .await
        .expect("page")
        .expect("join")
        .expect("page");
    assert_eq!(first.records.len(), 1);
    assert_eq!(record_id(&first.records[0]), "late-a");
    assert_eq!(first.records[0].seq(), seq_before + 1);
    let (rest, _) = drain_after(reader.as_ref(), first.next_after_seq, 1).await;
    let mut by_cursor = first.records.clone();
    by_cursor.extend(rest);
    assert_strictly_increasing(&by_cursor);
    assert_eq!(
        by_cursor.iter().map(record_id).collect::<Vec<_>>(),
        ["late-a", "after-b"]
    );

    // The watermark reader gets both rows exactly once too.
    let pulled = tokio::time::timeout(LIMIT, pull_task)
        .await
        .expect("pull")
        .expect("join")
        .expect("pull");
    assert!(
        pulled.records.iter().any(|r| record_id(r) == "late-a"),
        "the late row reached the watermark reader"
    );
    let mut by_since = pulled.records.clone();
    by_since.extend(drain_since(reader.as_ref(), pulled.server_time).await);
    assert_strictly_increasing(&by_since);
    let ids: Vec<String> = by_since.iter().map(record_id).collect();
    assert_eq!(ids, ["late-a", "after-b"]);

    // Nothing else changed, and a complete pull from scratch has every row once.
    let (all, _) = drain_after(reader.as_ref(), None, 2).await;
    assert_strictly_increasing(&all);
    let all_ids: HashSet<String> = all.iter().map(record_id).collect();
    assert_eq!(all.len(), 4);
    assert_eq!(
        all_ids,
        HashSet::from(["seed-1", "seed-2", "late-a", "after-b"].map(String::from))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_push_leaves_no_row_and_no_gap() {
    for isolation in isolation::DEFAULT_ISOLATIONS {
        a_rolled_back_push_leaves_no_row_and_no_gap_when_the_database_defaults_to(isolation).await;
    }
}

/// The rollback story on a fresh database whose sessions default to `isolation`.
async fn a_rolled_back_push_leaves_no_row_and_no_gap_when_the_database_defaults_to(
    isolation: &str,
) {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    isolation::set_default_isolation(&h.url, isolation).await;
    let gate = Gate::new();
    let a = h.server(gate.options()).await;
    let b = h.default_server().await;
    a.apply_push(one_room("a", "first", 0))
        .await
        .expect("first");

    gate.fail_next_commit();
    let err = a
        .apply_push(one_room("a", "failed", 1))
        .await
        .expect_err("the hook fails the commit");
    assert!(
        matches!(err, goodies_store::StoreError::Database(_)),
        "{err:?}"
    );
    assert!(a.entity(&"failed".into()).await.expect("read").is_none());
    assert_eq!(b.max_seq().await.expect("max seq"), 1);

    b.apply_push(one_room("b", "second", 2))
        .await
        .expect("second");
    let (all, _) = drain_after(b.as_ref(), None, 10).await;
    assert_eq!(
        all.iter().map(record_id).collect::<Vec<_>>(),
        ["first", "second"]
    );
    assert_eq!(
        all.iter().map(ChangeRecord::seq).collect::<Vec<_>>(),
        [1, 2]
    );
}
