//! The Merkle tree kept in tables: after creates, edits, conflicts, deletes and a
//! restore, every node a store serves is the node of the tree built from its latest
//! rows (SQLite, and PostgreSQL when reachable).

mod support;

use std::sync::Arc;

use goodies_store::merkle::{MerkleBelow, MERKLE_DEPTH};
use goodies_store::ServerStore;
use inbetweenies_conflict::{MerkleTree, NodeId};
use inbetweenies_proto::EntityType;
use support::*;

async fn assert_tree(store: &Arc<dyn ServerStore>) {
    let rows = store.latest_versions().await.expect("latest");
    let tree = MerkleTree::from_rows(
        rows.iter().map(|(i, v)| (i.as_str(), v.as_str())),
        MERKLE_DEPTH,
    )
    .expect("tree");
    for level in 0..=MERKLE_DEPTH {
        let nodes: Vec<NodeId> = (0..1u32 << (4 * level))
            .map(|i| NodeId::new(level, i).expect("node"))
            .collect();
        let got = store.merkle_nodes(level, &nodes).await.expect("nodes");
        assert_eq!(got.len(), nodes.len());
        for n in got {
            assert_eq!(Some(n.hash), tree.node(n.node), "node {}", n.node);
            match n.below {
                MerkleBelow::Children(c) => {
                    assert_eq!(Some(c.as_slice()), tree.child_hashes(n.node))
                }
                MerkleBelow::Rows(r) => {
                    let r: Vec<(String, String)> = r
                        .into_iter()
                        .map(|(i, v)| (i.to_string(), v.to_string()))
                        .collect();
                    assert_eq!(Some(r.as_slice()), tree.leaf_rows(n.node));
                }
            }
        }
    }
}

async fn story(store: Arc<dyn ServerStore>) {
    assert_tree(&store).await;
    let mut changes = Vec::new();
    for i in 0..300 {
        let id = format!("e{i}");
        changes.push(create(ent(
            &id,
            &ver(1_000 + i, 1, "a"),
            &[],
            EntityType::Device,
            &id,
            serde_json::json!({"i": i}),
        )));
    }
    store
        .apply_push(batch("a", "a", changes))
        .await
        .expect("push");
    assert_tree(&store).await;
    let snapshot = store.export_snapshot().await.expect("export");
    // Edits, a conflict, a delete.
    let mut changes = Vec::new();
    for i in 0..10 {
        let id = format!("e{i}");
        changes.push(update(ent(
            &id,
            &ver(5_000 + i, 1, "a"),
            &[&ver(1_000 + i, 1, "a")],
            EntityType::Device,
            &id,
            serde_json::json!({"v": 2}),
        )));
    }
    store
        .apply_push(batch("a", "a", changes))
        .await
        .expect("edits");
    let contested = update(ent(
        "e0",
        &ver(6_000, 1, "b"),
        &[&ver(1_000, 1, "a")],
        EntityType::Device,
        "e0",
        serde_json::json!({"v": 3}),
    ));
    store
        .apply_push(batch("b", "b", vec![contested]))
        .await
        .expect("conflict");
    let gone = delete(ent(
        "e20",
        &ver(7_000, 1, "a"),
        &[&ver(1_020, 1, "a")],
        EntityType::Device,
        "e20",
        serde_json::json!({"_deleted": true}),
    ));
    store
        .apply_push(batch("a", "a", vec![gone]))
        .await
        .expect("delete");
    assert_tree(&store).await;
    store.restore_snapshot(snapshot).await.expect("restore");
    assert_tree(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_tree_follows_writes() {
    let h = Harness::sqlite();
    story(h.default_server().await).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tree_follows_writes() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    story(h.default_server().await).await;
}
