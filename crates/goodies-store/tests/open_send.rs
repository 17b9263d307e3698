//! Opening a store can run on any worker thread: the futures of `open_server_store`
//! and `open_client_store` are `Send`, so `tokio::spawn` accepts them.
//!
//! The check is at compile time (this file would not build otherwise); at run
//! time each spawned open must succeed and give a working store.

mod support;

use goodies_store::{open_client_store, open_server_store, StoreOptions};
use support::*;

/// Opens a server store on `url` inside `tokio::spawn` and checks it answers.
async fn spawn_open_server(url: String) {
    let store = tokio::spawn(async move { open_server_store(&url, StoreOptions::default()).await })
        .await
        .expect("the spawned open did not panic")
        .unwrap_or_else(|e| panic!("open server store: {}", error_chain(&e)));
    assert_eq!(store.max_seq().await.expect("max_seq"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_open_sqlite_server_store() {
    let h = Harness::sqlite();
    spawn_open_server(h.url.clone()).await;
    spawn_open_server("sqlite::memory:".to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_open_client_store() {
    let c = ClientHarness::new();
    let path = c.path.to_str().expect("utf-8 temporary path").to_owned();
    let store =
        tokio::spawn(async move { open_client_store(&path, StoreOptions::default()).await })
            .await
            .expect("the spawned open did not panic")
            .unwrap_or_else(|e| panic!("open client store: {}", error_chain(&e)));
    assert_eq!(store.pending_count().await.expect("pending_count"), 0);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_open_postgres_server_store() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    spawn_open_server(h.url.clone()).await;
}
