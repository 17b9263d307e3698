//! A change page is one state of the store: its head, its rows and the latest rows read
//! with it (`ServerStore::changes_with_latest`) all describe the state at the head's
//! sequence number, while writers keep committing — on SQLite, and on PostgreSQL whatever
//! the database's default transaction isolation. A server's digest index relies on it to
//! answer every page with the digest of exactly the state the page shows.

#[cfg(feature = "postgres")]
mod isolation;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use goodies_store::{ChangeQuery, ChangeRecord, Seq};
use support::*;

const LIMIT: Duration = Duration::from_secs(30);
const WRITERS: usize = 2;
const PUSHES: usize = 60;

/// Every push creates one entity, so the state at sequence number `s` is exactly the rows
/// numbered 1..=s: a page of everything read at head `s` has those and no other, and the
/// latest rows after `from` are those numbered from+1..=s.
async fn a_page_its_head_and_its_latest_rows_are_one_state(h: Harness) {
    let store = h.default_server().await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..PUSHES {
                    store
                        .apply_push(one_room(&format!("d{w}"), &format!("w{w}-{i}"), i as i64))
                        .await
                        .expect("push");
                }
            })
        })
        .collect();
    let everything = ChangeQuery {
        limit: 10_000,
        include_relationships: false,
        ..ChangeQuery::default()
    };
    let (mut reads, mut moved, mut from): (usize, usize, Seq) = (0, 0, 0);
    let started = std::time::Instant::now();
    while reads < 400 && started.elapsed() < LIMIT {
        let done = writers.iter().all(|w| w.is_finished());
        reads += 1;
        let (page, latest) = store
            .changes_with_latest(&everything, from)
            .await
            .expect("page");
        let at = page.head.seq;
        let seqs: Vec<Seq> = page.records.iter().map(ChangeRecord::seq).collect();
        assert_eq!(
            seqs,
            (1..=at).collect::<Vec<_>>(),
            "{}: read {reads}: the page is not the state at its head {at}",
            h.backend
        );
        assert_eq!(page.head.now, page.server_time, "{}", h.backend);
        let after: BTreeSet<(String, String)> = page
            .records
            .iter()
            .filter(|r| r.seq() > from)
            .map(|r| match r {
                ChangeRecord::Entity(se) => (
                    se.entity.id.as_str().to_owned(),
                    se.entity.version.as_str().to_owned(),
                ),
                ChangeRecord::Relationship(_) => unreachable!("entity rows only"),
            })
            .collect();
        let rows: BTreeSet<(String, String)> = latest
            .rows
            .iter()
            .map(|(i, v)| (i.as_str().to_owned(), v.as_str().to_owned()))
            .collect();
        assert_eq!(
            rows.len(),
            latest.rows.len(),
            "{}: an id twice in the latest rows",
            h.backend
        );
        assert_eq!(
            rows, after,
            "{}: read {reads}: the latest rows after {from} are not the page's state {at}",
            h.backend
        );
        if at > from {
            moved += 1;
        }
        // Alternate between everything and the rows since the last read.
        from = if reads % 3 == 0 { 0 } else { at };
        if done {
            break;
        }
        tokio::task::yield_now().await;
    }
    for w in writers {
        tokio::time::timeout(LIMIT, w)
            .await
            .expect("bounded")
            .expect("writer");
    }
    let (last, _) = store
        .changes_with_latest(&everything, 0)
        .await
        .expect("last page");
    assert_eq!(last.head.seq, (WRITERS * PUSHES) as Seq, "{}", h.backend);
    assert!(
        moved >= 2,
        "{}: only {moved} of {reads} reads saw the store move: the writers did not overlap the reads",
        h.backend
    );
    eprintln!("{}: {reads} reads, {moved} at a new state", h.backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_a_page_its_head_and_its_latest_rows_are_one_state() {
    a_page_its_head_and_its_latest_rows_are_one_state(Harness::sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_page_its_head_and_its_latest_rows_are_one_state_under_every_default_isolation()
{
    for level in isolation::DEFAULT_ISOLATIONS {
        let Some(h) = Harness::postgres().await else {
            return;
        };
        isolation::set_default_isolation(&h.url, level).await;
        a_page_its_head_and_its_latest_rows_are_one_state(h).await;
    }
}

/// Rows numbered after the page's head never reach the latest rows: asked after the
/// head itself, there are none, and a later write shows up only in a later page.
async fn nothing_after_the_head_is_in_the_latest_rows(h: Harness) {
    let store = h.default_server().await;
    store
        .apply_push(one_room("a", "first", 0))
        .await
        .expect("push");
    let query = ChangeQuery {
        include_entities: false,
        include_relationships: false,
        ..ChangeQuery::default()
    };
    let (page, latest) = store.changes_with_latest(&query, 0).await.expect("read");
    assert!(page.records.is_empty(), "{}", h.backend);
    assert_eq!(latest.rows.len(), 1, "{}", h.backend);
    let (_, none) = store
        .changes_with_latest(&query, page.head.seq)
        .await
        .expect("read");
    assert!(none.rows.is_empty(), "{}: {:?}", h.backend, none.rows);
    store
        .apply_push(one_room("a", "second", 1))
        .await
        .expect("push");
    let (next, one) = store
        .changes_with_latest(&query, page.head.seq)
        .await
        .expect("read");
    assert_eq!(next.head.seq, page.head.seq + 1, "{}", h.backend);
    assert_eq!(
        one.rows.iter().map(|(i, _)| i.as_str()).collect::<Vec<_>>(),
        ["second"],
        "{}",
        h.backend
    );
}

#[tokio::test]
async fn sqlite_nothing_after_the_head_is_in_the_latest_rows() {
    nothing_after_the_head_is_in_the_latest_rows(Harness::sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_nothing_after_the_head_is_in_the_latest_rows() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    nothing_after_the_head_is_in_the_latest_rows(h).await;
}
