//! Finding the ids on which the local mirror and a server disagree, through the
//! server's Merkle tree (`GET /api/v1/sync/merkle`, PROTOCOL §15.1).
//!
//! [`differing_ids`] builds the same tree over the mirror's latest `(id, version)`
//! rows and walks the server's tree level by level, asking in each request only about
//! the nodes whose hashes differ: at most `depth + 1` requests (4 for the server's
//! depth of 3) whatever the store size and however many ids differ, and only the
//! differing leaves' rows (about `n / 4096` rows each) cross the wire.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use inbetweenies_conflict::merkle::MAX_DEPTH;
use inbetweenies_conflict::{diff_rows, MerkleTree, NodeHash, NodeId, FANOUT};
use inbetweenies_proto::{EntityId, Version};
use serde::Deserialize;

use crate::error::{BoxError, ClientError};
use crate::transport::{HttpRequest, Method, Transport};

/// The server's answer to one request for nodes of one level.
#[derive(Clone, Debug, Deserialize)]
pub struct MerkleAnswer {
    /// Levels below the root of the server's tree.
    pub depth: u8,
    /// The level asked about.
    pub level: u8,
    /// The nodes asked about, in the order asked.
    pub nodes: Vec<MerkleNodeAnswer>,
}

/// One node of a [`MerkleAnswer`].
#[derive(Clone, Debug, Deserialize)]
pub struct MerkleNodeAnswer {
    /// The node's hex prefix (`""` for the root).
    pub prefix: String,
    /// The node's hash.
    pub hash: NodeHash,
    /// An inner node's 16 children's hashes.
    #[serde(default)]
    pub children: Option<Vec<NodeHash>>,
    /// A leaf's rows.
    #[serde(default)]
    pub rows: Option<Vec<MerkleRow>>,
}

/// One `(id, version)` row of a leaf.
#[derive(Clone, Debug, Deserialize)]
pub struct MerkleRow {
    /// The entity id.
    pub id: String,
    /// Its latest version on the server.
    pub version: String,
}

/// Where a server's Merkle nodes come from.
#[async_trait]
pub trait MerkleSource: Send + Sync {
    /// The nodes of `level` named by `prefixes` (all of that level), in one request.
    async fn nodes(&self, level: u8, prefixes: &[String]) -> Result<MerkleAnswer, ClientError>;
}

/// What a walk found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MerkleDiff {
    /// The ids held with another version, or held on one side only, in id order.
    pub ids: Vec<EntityId>,
    /// Requests made.
    pub requests: usize,
    /// Leaves whose rows were compared.
    pub leaves: usize,
}

fn invalid(message: String) -> ClientError {
    ClientError::InvalidResponse(BoxError::from(message))
}

/// The ids on which `local` (the mirror's latest `(id, version)` rows, any order) and the
/// server behind `source` disagree, found in at most `depth + 1` requests.
pub async fn differing_ids<S>(
    local: &[(EntityId, Version)],
    source: &S,
) -> Result<MerkleDiff, ClientError>
where
    S: MerkleSource + ?Sized,
{
    let mut out = MerkleDiff::default();
    let root = source.nodes(0, &[String::new()]).await?;
    out.requests += 1;
    let depth = root.depth;
    if depth == 0 || depth > MAX_DEPTH {
        return Err(invalid(format!("Merkle depth {depth} out of range")));
    }
    let tree = MerkleTree::from_rows(local.iter().map(|(i, v)| (i.as_str(), v.as_str())), depth)
        .map_err(|e| invalid(e.to_string()))?;
    let root = one_node(&root, 0, &[NodeId::ROOT])?;
    if root[0].hash == tree.root() {
        return Ok(out);
    }
    let mut answer = root;
    let mut frontier = vec![NodeId::ROOT];
    for level in 1..=depth {
        let mut next = Vec::new();
        for (node, remote) in frontier.iter().zip(&answer) {
            let theirs = remote
                .children
                .as_deref()
                .ok_or_else(|| invalid(format!("node {node} came without children")))?;
            if theirs.len() != FANOUT {
                return Err(invalid(format!(
                    "node {node} has {} children",
                    theirs.len()
                )));
            }
            let mine = tree.child_hashes(*node).unwrap_or_default();
            for (nibble, (m, r)) in mine.iter().zip(theirs).enumerate() {
                if m != r {
                    next.extend(node.child(nibble as u8));
                }
            }
        }
        if next.is_empty() {
            return Ok(out);
        }
        let prefixes: Vec<String> = next.iter().map(|n| n.prefix()).collect();
        let got = source.nodes(level, &prefixes).await?;
        out.requests += 1;
        answer = one_node(&got, level, &next)?;
        frontier = next;
    }
    // `frontier` now holds the differing leaves and `answer` their rows.
    let mut ids = Vec::new();
    for (leaf, remote) in frontier.iter().zip(&answer) {
        let rows = remote
            .rows
            .as_deref()
            .ok_or_else(|| invalid(format!("leaf {leaf} came without rows")))?;
        let mine = tree.leaf_rows(*leaf).unwrap_or_default();
        ids.extend(diff_rows(
            mine.iter().map(|(i, v)| (i.as_str(), v.as_str())),
            rows.iter().map(|r| (r.id.as_str(), r.version.as_str())),
        ));
        out.leaves += 1;
    }
    ids.sort_unstable();
    ids.dedup();
    out.ids = ids.into_iter().map(EntityId::new).collect();
    Ok(out)
}

/// Checks that an answer names exactly the nodes asked about, in order.
fn one_node(
    answer: &MerkleAnswer,
    level: u8,
    asked: &[NodeId],
) -> Result<Vec<MerkleNodeAnswer>, ClientError> {
    if answer.level != level || answer.nodes.len() != asked.len() {
        return Err(invalid(format!(
            "asked for {} node(s) of level {level}, got {} of level {}",
            asked.len(),
            answer.nodes.len(),
            answer.level
        )));
    }
    let by_prefix: BTreeMap<&str, &MerkleNodeAnswer> = answer
        .nodes
        .iter()
        .map(|n| (n.prefix.as_str(), n))
        .collect();
    asked
        .iter()
        .map(|n| {
            by_prefix
                .get(n.prefix().as_str())
                .map(|a| (*a).clone())
                .ok_or_else(|| invalid(format!("node {n} missing from the answer")))
        })
        .collect()
}

/// A [`MerkleSource`] over HTTP: any [`Transport`], a server URL and a bearer token.
#[derive(Clone, Debug)]
pub struct HttpMerkleSource {
    transport: Arc<dyn Transport>,
    base: String,
    token: String,
}

impl HttpMerkleSource {
    /// A source asking the server at `base` (e.g. `http://127.0.0.1:8000`) with `token`.
    pub fn new(transport: Arc<dyn Transport>, base: &str, token: &str) -> Self {
        HttpMerkleSource {
            transport,
            base: base.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        }
    }
}

#[async_trait]
impl MerkleSource for HttpMerkleSource {
    async fn nodes(&self, level: u8, prefixes: &[String]) -> Result<MerkleAnswer, ClientError> {
        let url = format!(
            "{}/api/v1/sync/merkle?level={level}&prefix={}",
            self.base,
            prefixes.join(",")
        );
        let request = HttpRequest {
            method: Method::Get,
            url,
            headers: vec![
                ("authorization".into(), format!("Bearer {}", self.token)),
                ("accept".into(), "application/json".into()),
            ],
            body: Vec::new(),
        };
        let response =
            self.transport
                .send(request)
                .await
                .map_err(|source| ClientError::Unreachable {
                    attempts: 1,
                    source,
                })?;
        if response.status != 200 {
            return Err(ClientError::Server {
                status: response.status,
                code: None,
                message: String::from_utf8_lossy(&response.body).into_owned(),
            });
        }
        serde_json::from_slice(&response.body)
            .map_err(|e| ClientError::InvalidResponse(Box::new(e)))
    }
}
