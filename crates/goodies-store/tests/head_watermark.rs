//! The head's watermark (`StoreHead::now`) meets a write in flight: a write that took its
//! sequence number (and its receive time) before the head was read and commits after it
//! is either counted in the head's sequence number or received after the head's time. So
//! an answer that hands out the head's time as a watermark never hides that write from
//! the next delta — on SQLite, and on PostgreSQL whatever the database's default
//! transaction isolation.

#[cfg(feature = "postgres")]
mod isolation;
mod support;

use std::time::Duration;

use goodies_store::{ChangeQuery, ChangeRecord};
use support::*;

const LIMIT: Duration = Duration::from_secs(20);

/// The head read while a write waits at its commit, then checked against that write.
async fn a_head_read_during_a_write_never_hides_it(h: Harness) {
    let gate = Gate::new();
    let writer = h.server(gate.options()).await;
    let reader = h.default_server().await;
    reader
        .apply_push(one_room("b", "seed", 0))
        .await
        .expect("seed");
    let seed_seq = reader.max_seq().await.expect("max seq");

    // The writer takes its sequence number and receive time, then waits at COMMIT.
    gate.hold_next_commit();
    let write = tokio::spawn({
        let writer = writer.clone();
        async move { writer.apply_push(one_room("a", "late", 1)).await }
    });
    tokio::time::timeout(LIMIT, gate.entered())
        .await
        .expect("the write reached its commit");
    // The head is read meanwhile (it may wait for the write; it must not hide it).
    let head = tokio::spawn({
        let reader = reader.clone();
        async move { reader.head().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.release();
    tokio::time::timeout(LIMIT, write)
        .await
        .expect("the write finished")
        .expect("write task")
        .expect("the write committed");
    let head = tokio::time::timeout(LIMIT, head)
        .await
        .expect("the head read finished")
        .expect("head task")
        .expect("head read");

    let page = reader
        .changes(&ChangeQuery {
            after_seq: Some(seed_seq),
            ..ChangeQuery::default()
        })
        .await
        .expect("page");
    let [ChangeRecord::Entity(late)] = page.records.as_slice() else {
        panic!(
            "{}: expected the one late row, got {:?}",
            h.backend, page.records
        );
    };
    assert!(
        late.seq <= head.seq || late.received_at > head.now,
        "{}: the head (seq {}, watermark {}) hides row {} received at {}: a delta from \
         that watermark would never return it",
        h.backend,
        head.seq,
        head.now,
        late.seq,
        late.received_at
    );
    // And a delta from the head's watermark, paged on from its sequence number, has it
    // exactly when the head did not count it.
    let delta = reader
        .changes(&ChangeQuery {
            since: Some(head.now),
            ..ChangeQuery::default()
        })
        .await
        .expect("delta");
    let returned = delta.records.iter().any(|r| r.seq() == late.seq);
    assert!(
        returned || late.seq <= head.seq,
        "{}: lost from the delta",
        h.backend
    );

    // The watermark is current: a head read now is no older than the last write.
    let later = reader.head().await.expect("head");
    assert!(
        later.seq >= late.seq && later.now >= head.now,
        "{}: {later:?} after {head:?}",
        h.backend
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_head_read_during_a_write_never_hides_it() {
    a_head_read_during_a_write_never_hides_it(Harness::sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_head_read_during_a_write_never_hides_it_under_every_default_isolation() {
    for level in isolation::DEFAULT_ISOLATIONS {
        let Some(h) = Harness::postgres().await else {
            return;
        };
        isolation::set_default_isolation(&h.url, level).await;
        a_head_read_during_a_write_never_hides_it(h).await;
    }
}

/// Bounded: writers and head reads at once, then every head checked against every row.
async fn heads_read_under_concurrent_writes_hide_nothing(h: Harness) {
    let store = h.default_server().await;
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..60 {
                    let id = format!("w{w}-{i}");
                    store
                        .apply_push(one_room(&format!("d{w}"), &id, i))
                        .await
                        .expect("push");
                }
            })
        })
        .collect();
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut heads = Vec::new();
            for _ in 0..200 {
                heads.push(store.head().await.expect("head"));
                tokio::task::yield_now().await;
            }
            heads
        })
    };
    for w in writers {
        tokio::time::timeout(LIMIT, w)
            .await
            .expect("bounded")
            .expect("writer");
    }
    let heads = tokio::time::timeout(LIMIT, reader)
        .await
        .expect("bounded")
        .expect("reader");
    let all = store
        .changes(&ChangeQuery {
            limit: 10_000,
            ..ChangeQuery::default()
        })
        .await
        .expect("all rows");
    assert_eq!(all.records.len(), 120, "{}", h.backend);
    for head in &heads {
        for r in &all.records {
            let ChangeRecord::Entity(e) = r else { continue };
            assert!(
                e.seq <= head.seq || e.received_at > head.now,
                "{}: head (seq {}, watermark {}) hides row {} received at {}",
                h.backend,
                head.seq,
                head.now,
                e.seq,
                e.received_at
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_heads_read_under_concurrent_writes_hide_nothing() {
    heads_read_under_concurrent_writes_hide_nothing(Harness::sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_heads_read_under_concurrent_writes_hide_nothing() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    heads_read_under_concurrent_writes_hide_nothing(h).await;
}

/// Shared head reads meet commits: while readers keep head reads under way, a head asked
/// for after a write returned counts that write — checked after every one of a writer's
/// pushes, on both backends. (On PostgreSQL a read under way when the write committed
/// mostly waited for it at the shared lock; the ordering of shared reads itself is pinned
/// by `batch::tests::callers_waiting_share_the_next_read_never_an_earlier_one`.)
async fn a_head_asked_after_a_commit_counts_it_while_others_read(h: Harness) {
    let store = h.default_server().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..6)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && reads < 100_000 {
                    store.head().await.expect("head");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for i in 0..60u64 {
        store
            .apply_push(one_room("w", &format!("after-{i}"), i as i64))
            .await
            .expect("push");
        // One row per push: the push's own sequence number.
        let committed = i + 1;
        let head = tokio::time::timeout(LIMIT, store.head())
            .await
            .expect("bounded")
            .expect("head");
        assert!(
            head.seq >= committed,
            "{}: push {i}: head {} asked after the commit of {committed}",
            h.backend,
            head.seq
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += tokio::time::timeout(LIMIT, r)
            .await
            .expect("bounded")
            .expect("reader");
    }
    assert!(reads > 0, "{}: the readers read nothing", h.backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_head_asked_after_a_commit_counts_it_while_others_read() {
    a_head_asked_after_a_commit_counts_it_while_others_read(Harness::sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_head_asked_after_a_commit_counts_it_while_others_read() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    a_head_asked_after_a_commit_counts_it_while_others_read(h).await;
}
