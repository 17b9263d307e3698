//! `GET /api/v1/sync/merkle` (PROTOCOL §15.1): the server's Merkle tree follows every
//! write, agrees with the state digest about the state, lets a client find the ids it
//! disagrees on in at most depth + 1 requests, refuses malformed requests with a 400,
//! and is the same tree from two server processes on one PostgreSQL database.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use goodies_client::merkle::{differing_ids, MerkleAnswer, MerkleSource};
use goodies_client::ClientError;
use inbetweenies_conflict::{state_digest, MerkleTree, NodeHash, NodeId};
use inbetweenies_proto::{EntityId, Version};
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer};

/// Asks a test server for Merkle nodes over HTTP and counts the requests.
struct Counting<'a> {
    server: &'a TestServer,
    token: String,
    requests: AtomicUsize,
}

#[async_trait]
impl MerkleSource for Counting<'_> {
    async fn nodes(&self, level: u8, prefixes: &[String]) -> Result<MerkleAnswer, ClientError> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let (status, body) = get(self.server, &self.token, level, &prefixes.join(",")).await;
        assert_eq!(status, 200, "{body}");
        Ok(serde_json::from_value(body).expect("a Merkle answer"))
    }
}

async fn get(s: &TestServer, token: &str, level: u8, prefix: &str) -> (u16, Value) {
    s.get_json(
        token,
        &format!("/api/v1/sync/merkle?level={level}&prefix={prefix}"),
    )
    .await
}

fn hash(v: &Value) -> NodeHash {
    v.as_str().expect("hash").parse().expect("64 hex digits")
}

/// Pushes `n` new entities named `{tag}-{i}` in batches; returns their ids.
async fn seed(s: &TestServer, token: &str, tag: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for start in (0..n).step_by(500) {
        let changes: Vec<Value> = (start..n.min(start + 500))
            .map(|i| {
                let id = format!("{tag}-{i:06}");
                ids.push(id.clone());
                create_change(&id, "device", &id, json!({"i": i}))
            })
            .collect();
        let (status, body) = s
            .post_json(
                token,
                "/api/v1/sync/",
                &sync_body("seeder", "delta", Value::Array(changes)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    ids
}

/// An edit of `id` over its latest version, pushed by `device`.
async fn edit(s: &TestServer, token: &str, device: &str, id: &str, parent: &str, v: i64) {
    let version = Version::now(device);
    let change = json!({
        "change_type": "update",
        "entity": {
            "id": id, "version": version, "entity_type": "device", "name": id,
            "content": {"v": v}, "source_type": "manual", "user_id": device,
            "parent_versions": [parent],
        },
        "relationships": [],
    });
    let (status, body) = s
        .post_json(
            token,
            "/api/v1/sync/",
            &sync_body(device, "delta", json!([change])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn latest(s: &TestServer) -> Vec<(EntityId, Version)> {
    s.handle
        .store()
        .latest_versions()
        .await
        .expect("latest versions")
}

fn tree_of(rows: &[(EntityId, Version)]) -> MerkleTree {
    MerkleTree::from_rows(rows.iter().map(|(i, v)| (i.as_str(), v.as_str())), 3).expect("depth 3")
}

/// Compares every node of the server's tree with a tree built from the store's latest
/// rows: the root, all 16 level-1 nodes, all 256 level-2 nodes and all 4096 leaves.
async fn assert_tree_matches_rows(s: &TestServer, token: &str) {
    let tree = tree_of(&latest(s).await);
    for level in 0..=3u8 {
        let width = 1u32 << (4 * level);
        let prefixes: Vec<String> = (0..width)
            .map(|i| NodeId::new(level, i).expect("node").prefix())
            .collect();
        let (status, body) = get(s, token, level, &prefixes.join(",")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["depth"], 3);
        let nodes = body["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), width as usize);
        for (i, n) in nodes.iter().enumerate() {
            let id = NodeId::new(level, i as u32).expect("node");
            assert_eq!(n["prefix"], id.prefix());
            assert_eq!(Some(hash(&n["hash"])), tree.node(id), "node {id}");
            if level < 3 {
                let children: Vec<NodeHash> = n["children"]
                    .as_array()
                    .expect("children")
                    .iter()
                    .map(hash)
                    .collect();
                assert_eq!(Some(children.as_slice()), tree.child_hashes(id));
            } else {
                let rows: Vec<(String, String)> = n["rows"]
                    .as_array()
                    .expect("rows")
                    .iter()
                    .map(|r| {
                        (
                            r["id"].as_str().expect("id").to_owned(),
                            r["version"].as_str().expect("version").to_owned(),
                        )
                    })
                    .collect();
                assert_eq!(rows.as_slice(), tree.leaf_rows(id).expect("leaf"));
            }
        }
    }
}

async fn root(s: &TestServer, token: &str) -> NodeHash {
    let (status, body) = get(s, token, 0, "").await;
    assert_eq!(status, 200, "{body}");
    hash(&body["nodes"][0]["hash"])
}

async fn server_digest(s: &TestServer, token: &str) -> String {
    let (status, body) = s.get_json(token, "/api/v1/graph/statistics").await;
    assert_eq!(status, 200, "{body}");
    body["state_digest"].as_str().expect("digest").to_owned()
}

/// Creates, edits, conflicting edits, deletes: after each, every node of the tree is
/// the tree of the store's latest rows, and the root agrees with the digest.
async fn tree_follows_every_write(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    // Asked before any write: the empty tree.
    assert_eq!(
        root(&s, &token).await,
        MerkleTree::new(3).expect("tree").root()
    );
    let ids = seed(&s, &token, "dev", 600).await;
    assert_tree_matches_rows(&s, &token).await;

    // Edits, and two devices editing one version (a conflict: one side loses).
    let rows = latest(&s).await;
    for (i, (id, v)) in rows.iter().take(20).enumerate() {
        edit(&s, &token, "phone", id.as_str(), v.as_str(), i as i64).await;
    }
    let (contested, parent) = rows[30].clone();
    edit(&s, &token, "phone", contested.as_str(), parent.as_str(), 1).await;
    edit(&s, &token, "tablet", contested.as_str(), parent.as_str(), 2).await;
    // Deletes through the graph API (tombstones count like any version).
    for id in ids.iter().skip(100).take(15) {
        let res = s
            .http
            .delete(s.url(&format!("/api/v1/graph/entities/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .expect("delete");
        assert_eq!(res.status().as_u16(), 200);
    }
    seed(&s, &token, "late", 40).await;
    assert_tree_matches_rows(&s, &token).await;

    // The root and the digest are two views of the same (id, version) set.
    let rows = latest(&s).await;
    assert_eq!(server_digest(&s, &token).await, digest_of(&rows));
    assert_eq!(root(&s, &token).await, tree_of(&rows).root());
    s.shutdown().await.expect("shutdown");
}

fn digest_of(rows: &[(EntityId, Version)]) -> String {
    state_digest(rows.iter().map(|(i, v)| (i.as_str(), v.as_str())))
}

/// For a mirror equal to the server's rows and for mirrors off by one version, one
/// missing id, one extra id, or a version moved to another id: the digests agree
/// exactly when the roots agree.
async fn digests_agree_exactly_when_roots_agree(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    seed(&s, &token, "dev", 300).await;
    let rows = latest(&s).await;
    let (server_root, digest) = (root(&s, &token).await, server_digest(&s, &token).await);
    let mut mirrors: Vec<(&str, Vec<(EntityId, Version)>)> = vec![("same", rows.clone())];
    let mut reversed = rows.clone();
    reversed.reverse();
    mirrors.push(("same rows, other order", reversed));
    let mut changed = rows.clone();
    changed[7].1 = Version::new("2020-01-01T00:00:00.000000Z-other");
    mirrors.push(("one version differs", changed));
    let mut missing = rows.clone();
    missing.remove(11);
    mirrors.push(("one id missing", missing));
    let mut extra = rows.clone();
    extra.push((EntityId::new("extra"), Version::new("v")));
    mirrors.push(("one id extra", extra));
    let mut swapped = rows.clone();
    let v = swapped[3].1.clone();
    swapped[3].1 = swapped[4].1.clone();
    swapped[4].1 = v;
    mirrors.push(("two versions swapped", swapped));
    for (what, mirror) in mirrors {
        let digests_agree = digest_of(&mirror) == digest;
        let roots_agree = tree_of(&mirror).root() == server_root;
        assert_eq!(digests_agree, roots_agree, "{what}");
        assert_eq!(digests_agree, what.starts_with("same"), "{what}");
    }
    s.shutdown().await.expect("shutdown");
}

/// Ten ids differ between a mirror and a 5,000-entity store (changed, missing, extra):
/// the walk finds exactly them in at most depth + 1 = 4 requests. The bound holds for
/// any store size (the benchmark measures 100,000 entities); only the rows of the
/// differing leaves are sent.
async fn differing_ids_in_at_most_four_requests(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    seed(&s, &token, "dev", 5_000).await;
    let server_rows = latest(&s).await;
    let mut mirror = server_rows.clone();
    let mut expected: Vec<EntityId> = Vec::new();
    for i in [5, 500, 1_500, 4_000] {
        mirror[i].1 = Version::new("2020-01-01T00:00:00.000000Z-stale");
        expected.push(mirror[i].0.clone());
    }
    for i in [4_500, 2_500, 900] {
        expected.push(mirror.remove(i).0);
    }
    for i in 0..3 {
        let id = EntityId::new(format!("local-only-{i}"));
        mirror.push((id.clone(), Version::new("v")));
        expected.push(id);
    }
    expected.sort();
    let source = Counting {
        server: &s,
        token: token.clone(),
        requests: AtomicUsize::new(0),
    };
    let found = differing_ids(&mirror, &source).await.expect("walk");
    assert_eq!(found.ids, expected);
    assert!(found.requests <= 4, "{} requests", found.requests);
    assert_eq!(found.requests, source.requests.load(Ordering::SeqCst));
    assert!(found.leaves <= 10, "{} leaves", found.leaves);

    // In step: one request (the root).
    let same = differing_ids(&server_rows, &source).await.expect("walk");
    assert!(same.ids.is_empty());
    assert_eq!(same.requests, 1);
    s.shutdown().await.expect("shutdown");
}

/// Malformed requests: 400 with the JSON error body naming the field.
async fn malformed_requests_are_refused(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    for (query, field) in [
        ("level=4&prefix=abcd", "level"),
        ("level=x", "level"),
        ("level=-1", "level"),
        ("level=2", "prefix"),
        ("level=2&prefix=abc", "prefix"),
        ("level=2&prefix=AB", "prefix"),
        ("level=1&prefix=g", "prefix"),
        ("level=1&prefix=a,,b", "prefix"),
        ("level=0&prefix=a", "prefix"),
    ] {
        let (status, body) = s
            .get_json(&token, &format!("/api/v1/sync/merkle?{query}"))
            .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
        assert!(body["detail"].is_string(), "{query}: {body}");
    }
    let res = s
        .http
        .get(s.url("/api/v1/sync/merkle"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status().as_u16(), 401);
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    tree_follows_every_write,
    digests_agree_exactly_when_roots_agree,
    differing_ids_in_at_most_four_requests,
    malformed_requests_are_refused,
);

/// Two server processes (two servers, each with its own store instance and pool) on
/// one PostgreSQL database: after writes through either, both serve the same tree,
/// the tree of the database's latest rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_postgres_database_agree() {
    let Some(a) = TestServer::start(Backend::Postgres).await else {
        return;
    };
    let b = support::TestServer::start_on_url(&a.database_url).await;
    let (ta, tb) = (a.login().await, b.login().await);
    seed(&a, &ta, "a", 300).await;
    // b builds its view first; then writes go through both.
    assert_eq!(root(&a, &ta).await, root(&b, &tb).await);
    seed(&b, &tb, "b", 300).await;
    let rows = latest(&a).await;
    for (id, v) in rows.iter().take(10) {
        edit(&a, &ta, "phone", id.as_str(), v.as_str(), 1).await;
    }
    for (id, v) in rows.iter().skip(400).take(10) {
        edit(&b, &tb, "tablet", id.as_str(), v.as_str(), 2).await;
    }
    assert_tree_matches_rows(&a, &ta).await;
    assert_tree_matches_rows(&b, &tb).await;
    assert_eq!(root(&a, &ta).await, root(&b, &tb).await);
    b.shutdown().await.expect("shutdown b");
    a.shutdown().await.expect("shutdown a");
}
