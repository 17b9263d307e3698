//! Pagination at scale: 10,000 entities and 10,000 relationships reach an empty client
//! through the cursor, and the digests agree.

use goodies_e2e::{quiet_sync, seed_device_chain, TestServer};

const N: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_across_ten_thousand_entities_with_relationships() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.with_page_size(1000)).await?;
    // Seed the server directly: N devices in a chain of `connects_to` edges (plus one to itself).
    let ids = seed_device_chain(server.handle.store().as_ref(), N).await?;

    let c = server.client("fresh").await?;
    let r = quiet_sync(&c).await?;
    assert_eq!(r.pulled_entities, N as u64);
    assert_eq!(r.pulled_relationships, N as u64);
    assert!(
        r.requests >= (2 * N / 1000) as u32,
        "paged: {} requests",
        r.requests
    );
    let stats = c.stats().await?;
    assert_eq!(stats.entities, N as u64);
    assert_eq!(stats.relationships, N as u64);
    assert_eq!(c.status().await?.cursor, None);

    // Incremental: one change on the server reaches the client in one request.
    let other = server.client("other").await?;
    quiet_sync(&other).await?;
    other
        .update_characteristic(&ids[42], "power", serde_json::json!("on"))
        .await?;
    quiet_sync(&other).await?;
    let r = quiet_sync(&c).await?;
    assert_eq!(r.pulled_entities, 1);
    assert_eq!(r.requests, 1);
    assert_eq!(c.get_device_state(&ids[42]).await?["power"], "on");
    server.stop().await
}
