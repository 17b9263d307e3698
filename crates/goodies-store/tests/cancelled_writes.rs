//! A write whose caller goes away (a server request handler dropped because its client
//! disconnected) leaves the store usable: it commits or rolls back, and never leaves a
//! pooled connection inside a transaction holding the database's write lock.
//!
//! Each round cancels a write after a growing delay (a thread timer: tokio's timer has
//! 1 ms granularity, and the gaps that matter are microseconds wide), then checks that
//! the next write, read and client-store write succeed at once.

mod support;

use std::time::Duration;

use anyhow::ensure;
use goodies_store::{ChangeQuery, LocalEdit};
use inbetweenies_proto::{EntityType, SourceType};
use support::*;

/// A future that resolves after `micros` µs of wall time.
fn after_micros(micros: u64) -> tokio::sync::oneshot::Receiver<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_micros(micros));
        let _ = tx.send(());
    });
    rx
}

async fn cancelled_writes_leave_the_store_usable(h: &Harness) -> anyhow::Result<()> {
    let store = h.default_server().await;
    let page = ChangeQuery {
        limit: 10,
        ..ChangeQuery::default()
    };
    for i in 0..300u64 {
        tokio::select! {
            _ = store.record_sync("cancelled") => {}
            _ = after_micros(i) => {}
        }
        tokio::select! {
            _ = store.changes(&page) => {}
            _ = after_micros(i) => {}
        }
        let next = tokio::time::timeout(Duration::from_secs(3), store.record_sync("next")).await;
        ensure!(
            matches!(next, Ok(Ok(()))),
            "a write after one cancelled at {i} µs: {next:?}"
        );
        let read = tokio::time::timeout(Duration::from_secs(3), store.state_digest()).await;
        ensure!(
            matches!(read, Ok(Ok(_))),
            "a read after one cancelled at {i} µs: {read:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_cancelled_writes_leave_the_store_usable() -> anyhow::Result<()> {
    cancelled_writes_leave_the_store_usable(&Harness::sqlite()).await
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cancelled_writes_leave_the_store_usable() -> anyhow::Result<()> {
    let Some(h) = Harness::postgres().await else {
        return Ok(());
    };
    cancelled_writes_leave_the_store_usable(&h).await
}

/// The same on a client's mirror: a local write cancelled part-way never blocks the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_local_writes_leave_the_mirror_usable() -> anyhow::Result<()> {
    let h = ClientHarness::new();
    let store = h.open().await;
    let edit = |name: &str| LocalEdit::Create {
        id: None,
        entity_type: EntityType::Note,
        name: name.to_owned(),
        content: Default::default(),
        source_type: SourceType::Manual,
    };
    for i in 0..300u64 {
        tokio::select! {
            _ = store.write_local(edit("cancelled"), "me") => {}
            _ = after_micros(i) => {}
        }
        let next = tokio::time::timeout(
            Duration::from_secs(3),
            store.write_local(edit("next"), "me"),
        )
        .await;
        ensure!(
            matches!(next, Ok(Ok(_))),
            "a local write after one cancelled at {i} µs: {next:?}"
        );
    }
    Ok(())
}
