//! Pagination at scale: 10,000 entities and 10,000 relationships reach an empty client
//! through the cursor, and the digests agree.

use goodies_client::proto::{
    ChangeType, EntityId, RelationshipChange, RelationshipId, RelationshipType, SyncChange, Version,
};
use goodies_e2e::{quiet_sync, seeded_device, TestServer};
use goodies_store::PushBatch;

const N: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_across_ten_thousand_entities_with_relationships() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.with_page_size(1000)).await?;
    // Seed the server directly: N devices in a chain of `connects_to` edges (plus one to itself).
    let ids: Vec<EntityId> = (0..N).map(|_| EntityId::new_random()).collect();
    let versions: Vec<Version> = (0..N).map(|_| Version::now("seed")).collect();
    let store = server.handle.store();
    for chunk in (0..N).collect::<Vec<_>>().chunks(2000) {
        let mut changes: Vec<SyncChange> = chunk
            .iter()
            .map(|&i| {
                seeded_device(
                    ids[i].clone(),
                    versions[i].clone(),
                    i,
                    serde_json::json!({"n": i})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        changes.extend(chunk.iter().map(|&i| {
            let j = if i == 0 { 0 } else { i - 1 };
            SyncChange {
                change_type: ChangeType::Update,
                entity: None,
                relationships: vec![RelationshipChange {
                    id: RelationshipId::new_random(),
                    from_entity_id: ids[i].clone(),
                    from_entity_version: versions[i].clone(),
                    to_entity_id: ids[j].clone(),
                    to_entity_version: versions[j].clone(),
                    relationship_type: RelationshipType::ConnectsTo,
                    properties: Default::default(),
                    user_id: None,
                    created_at: None,
                    updated_at: None,
                }],
            }
        }));
        let out = store
            .apply_push(PushBatch {
                device_id: "seeder".into(),
                user_id: "seed".into(),
                changes,
            })
            .await?;
        assert_eq!(out.applied_relationships.len(), chunk.len());
    }

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
