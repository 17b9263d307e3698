//! The server's Merkle tree over the latest `(id, version)` rows, kept in tables.
//!
//! Both backends keep the tree of `inbetweenies_conflict::merkle` (fan-out 16,
//! depth [`MERKLE_DEPTH`]) in three tables: `merkle_rows` (the latest version of
//! every id, by leaf), `merkle_nodes` (every node's hash) and `merkle_dirty`
//! (ids the running write transaction changed, recorded by triggers on
//! `entities`). The tree is turned on the first time a node is asked for: that
//! call builds it from the latest rows under the write lock. From then on every
//! write transaction, before it commits, rehashes only the leaves of the ids it
//! changed and those leaves' ancestors, so a node read is a few indexed reads
//! and the tree always covers exactly the rows the state digest covers.

use std::collections::{BTreeMap, BTreeSet};

use inbetweenies_conflict::{hash_children, hash_leaf, leaf_of, NodeHash, NodeId, FANOUT};
use inbetweenies_proto::{EntityId, Version};

use crate::error::{Result, StoreError};

/// Levels below the root of the server's tree: 16³ = 4096 leaves.
pub const MERKLE_DEPTH: u8 = inbetweenies_conflict::DEFAULT_DEPTH;

/// Most nodes one request may ask about (a whole level below the root's children).
pub const MAX_NODES_PER_REQUEST: usize = 4096;

/// One node of the server's tree as a request for it is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MerkleNode {
    /// Which node.
    pub node: NodeId,
    /// Its hash.
    pub hash: NodeHash,
    /// What lies below it.
    pub below: MerkleBelow,
}

/// Below a node: its children's hashes, or (a leaf) its rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MerkleBelow {
    /// An inner node's 16 children's hashes, in order.
    Children(Vec<NodeHash>),
    /// A leaf's `(id, version)` rows, in id byte order.
    Rows(Vec<(EntityId, Version)>),
}

/// The leaf index of an id in the server's tree.
pub(crate) fn leaf_index(id: &str) -> i64 {
    i64::from(leaf_of(id, MERKLE_DEPTH).index())
}

/// Reads a stored hash (64 lowercase hex digits).
pub(crate) fn parse_hash(hex: &str) -> Result<NodeHash> {
    hex.parse()
        .map_err(|_| StoreError::Corrupt(format!("Merkle hash {hex:?}")))
}

/// A leaf's hash over its rows (any order).
pub(crate) fn leaf_hash(rows: &mut [(String, String)]) -> NodeHash {
    rows.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    hash_leaf(rows.iter().map(|(i, v)| (i.as_str(), v.as_str())))
}

/// Hashes of the parents of `children` (grouped by parent index): each parent's 16
/// children must all be present.
pub(crate) fn parent_hashes(children: &BTreeMap<i64, NodeHash>) -> Result<BTreeMap<i64, NodeHash>> {
    let mut by_parent: BTreeMap<i64, Vec<(i64, NodeHash)>> = BTreeMap::new();
    for (&idx, &h) in children {
        by_parent
            .entry(idx / FANOUT as i64)
            .or_default()
            .push((idx, h));
    }
    let mut out = BTreeMap::new();
    for (parent, mut kids) in by_parent {
        kids.sort_unstable_by_key(|(i, _)| *i);
        if kids.len() != FANOUT {
            return Err(StoreError::Corrupt(format!(
                "Merkle node {parent} has {} children stored",
                kids.len()
            )));
        }
        let hashes: Vec<NodeHash> = kids.into_iter().map(|(_, h)| h).collect();
        out.insert(parent, hash_children(&hashes));
    }
    Ok(out)
}

/// The parent indexes of a set of node indexes.
pub(crate) fn parents_of(indexes: impl IntoIterator<Item = i64>) -> BTreeSet<i64> {
    indexes.into_iter().map(|i| i / FANOUT as i64).collect()
}

/// Checks that every node asked about is of `level` and the level is in the tree.
pub(crate) fn check_request(level: u8, nodes: &[NodeId]) -> Result<()> {
    if level > MERKLE_DEPTH {
        return Err(StoreError::Invalid(format!(
            "level {level} is below the leaves (depth {MERKLE_DEPTH})"
        )));
    }
    if nodes.len() > MAX_NODES_PER_REQUEST {
        return Err(StoreError::Invalid(format!(
            "{} nodes asked at once, at most {MAX_NODES_PER_REQUEST}",
            nodes.len()
        )));
    }
    if let Some(bad) = nodes.iter().find(|n| n.level() != level) {
        return Err(StoreError::Invalid(format!(
            "prefix {:?} is not of level {level}",
            bad.prefix()
        )));
    }
    Ok(())
}
