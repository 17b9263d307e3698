//! The page cache of each pooled connection follows [`StoreOptions::cache_kib`].

use super::*;

async fn cache_sizes(store: &SqliteStore) -> Vec<i64> {
    // Hold every connection of the pool at once, so each one is asked.
    let mut held = Vec::new();
    let mut sizes = Vec::new();
    for _ in 0..store.opts.max_connections.unwrap_or(1) {
        let mut conn = store.pool.acquire().await.expect("connection");
        sizes.push(
            sqlx::query_scalar::<_, i64>("PRAGMA cache_size")
                .fetch_one(&mut *conn)
                .await
                .expect("cache_size"),
        );
        held.push(conn);
    }
    sizes
}

#[tokio::test]
async fn every_connection_takes_the_cache_size_asked_for() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let small = SqliteStore::connect(
        &url,
        StoreOptions {
            max_connections: Some(2),
            cache_kib: Some(2048),
            ..StoreOptions::default()
        },
    )
    .await
    .expect("store");
    assert_eq!(cache_sizes(&small).await, vec![-2048, -2048]);
    let default = SqliteStore::connect(
        &url,
        StoreOptions {
            max_connections: Some(2),
            ..StoreOptions::default()
        },
    )
    .await
    .expect("store");
    assert_eq!(cache_sizes(&default).await, vec![-32768, -32768]);
}
