//! A Merkle tree over entity ids (fan-out 16) to find exactly which ids two parties disagree on.
//!
//! Ids are bucketed into leaves by the first `depth` hex digits of
//! SHA-256(id), which spreads any id strings evenly. A leaf's hash is
//! SHA-256 over its rows in id order, each fed as `{id}\x1f{version}\x1e`
//! (as [`crate::state_digest`] does); an inner node's hash is SHA-256 over
//! its 16 children's hashes (32 bytes each, in order). Two parties with
//! trees of the same depth compare them level by level
//! ([`differing_leaves`]): one round trip per level, each carrying only the
//! nodes that differ, so finding the differing leaves takes at most
//! `depth` round trips (3 by default), whatever the number of ids. The
//! differing leaves' rows are then exchanged and diffed ([`diff_rows`]).

use std::convert::Infallible;
use std::error::Error as StdError;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::digest::feed_row;
use crate::error::{CompareError, MerkleError};

/// Children per inner node.
pub const FANOUT: usize = 16;
/// The default depth: 16³ = 4096 leaves.
pub const DEFAULT_DEPTH: u8 = 3;
/// The largest supported depth: 16⁵ = 1,048,576 leaves.
pub const MAX_DEPTH: u8 = 5;

/// A node's hash (SHA-256). Written as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeHash(pub [u8; 32]);

impl NodeHash {
    /// The lowercase hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for NodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for NodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeHash({})", self.to_hex())
    }
}

impl FromStr for NodeHash {
    type Err = MerkleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 32];
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(MerkleError::BadHash(s.to_owned()));
        }
        hex::decode_to_slice(s, &mut out).map_err(|_| MerkleError::BadHash(s.to_owned()))?;
        Ok(NodeHash(out))
    }
}

impl Serialize for NodeHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A node of the tree: its level (0 = root) and its index within the level.
///
/// Its prefix is the index written as `level` hex digits: the root is `""`,
/// its children `"0"`…`"f"`, a leaf of a depth-3 tree e.g. `"a3f"`. A leaf
/// holds the ids whose SHA-256 starts with its prefix.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    level: u8,
    index: u32,
}

impl NodeId {
    /// The root.
    pub const ROOT: NodeId = NodeId { level: 0, index: 0 };

    /// The node at `level` with `index` (`index < 16^level`), if valid.
    pub fn new(level: u8, index: u32) -> Option<NodeId> {
        (level <= MAX_DEPTH && u64::from(index) < level_width(level) as u64)
            .then_some(NodeId { level, index })
    }

    /// The level (0 = root).
    pub fn level(self) -> u8 {
        self.level
    }

    /// The index within the level.
    pub fn index(self) -> u32 {
        self.index
    }

    /// The hex prefix naming this node.
    pub fn prefix(self) -> String {
        if self.level == 0 {
            String::new()
        } else {
            format!("{:0width$x}", self.index, width = usize::from(self.level))
        }
    }

    /// Reads a hex prefix (lowercase, at most [`MAX_DEPTH`] digits).
    pub fn from_prefix(prefix: &str) -> Result<NodeId, MerkleError> {
        let bad = || MerkleError::BadPrefix(prefix.to_owned());
        if prefix.len() > usize::from(MAX_DEPTH)
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad());
        }
        let index = if prefix.is_empty() {
            0
        } else {
            u32::from_str_radix(prefix, 16).map_err(|_| bad())?
        };
        Ok(NodeId {
            level: prefix.len() as u8,
            index,
        })
    }

    /// The `nibble`-th child (`nibble < 16`), if within [`MAX_DEPTH`].
    pub fn child(self, nibble: u8) -> Option<NodeId> {
        if nibble as usize >= FANOUT || self.level >= MAX_DEPTH {
            return None;
        }
        Some(NodeId {
            level: self.level + 1,
            index: self.index * FANOUT as u32 + u32::from(nibble),
        })
    }

    /// The 16 children, in order (empty at [`MAX_DEPTH`]).
    pub fn children(self) -> impl Iterator<Item = NodeId> {
        (0..FANOUT as u8).filter_map(move |n| self.child(n))
    }

    /// The parent (`None` for the root).
    pub fn parent(self) -> Option<NodeId> {
        (self.level > 0).then(|| NodeId {
            level: self.level - 1,
            index: self.index / FANOUT as u32,
        })
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.prefix())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({:?})", self.prefix())
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.prefix())
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        NodeId::from_prefix(&s).map_err(serde::de::Error::custom)
    }
}

fn level_width(level: u8) -> usize {
    1usize << (4 * u32::from(level))
}

/// The leaf index of an id in a tree of `depth`.
fn leaf_index(id: &str, depth: u8) -> u32 {
    let h = Sha256::digest(id.as_bytes());
    let top = u32::from_be_bytes([0, h[0], h[1], h[2]]);
    top >> (24 - 4 * u32::from(depth))
}

fn leaf_hash(rows: &[(String, String)]) -> NodeHash {
    let mut h = Sha256::new();
    for (id, version) in rows {
        feed_row(&mut h, id, version);
    }
    NodeHash(h.finalize().into())
}

fn node_hash(children: &[NodeHash]) -> NodeHash {
    let mut h = Sha256::new();
    for c in children {
        h.update(c.0);
    }
    NodeHash(h.finalize().into())
}

/// The leaf an id belongs to in a tree of `depth` (1..=[`MAX_DEPTH`]; larger
/// depths are clamped): what a store keeping its tree in tables buckets by.
pub fn leaf_of(id: &str, depth: u8) -> NodeId {
    let depth = depth.clamp(1, MAX_DEPTH);
    NodeId {
        level: depth,
        index: leaf_index(id, depth),
    }
}

/// A leaf's hash over its rows, which must come sorted by id (byte order),
/// each id once: SHA-256 over `{id}\x1f{version}\x1e` per row.
pub fn hash_leaf<'a, I>(rows: I) -> NodeHash
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut h = Sha256::new();
    for (id, version) in rows {
        feed_row(&mut h, id, version);
    }
    NodeHash(h.finalize().into())
}

/// An inner node's hash over its 16 children's hashes, in order.
pub fn hash_children(children: &[NodeHash]) -> NodeHash {
    node_hash(children)
}

/// The hash of an empty subtree whose root is `height` levels above the
/// leaves (0: an empty leaf).
pub fn empty_hash(height: u8) -> NodeHash {
    let mut h = hash_leaf(std::iter::empty());
    for _ in 0..height {
        h = node_hash(&[h; FANOUT]);
    }
    h
}

/// A Merkle tree over `(id, version)` rows (the latest version of each id).
#[derive(Clone, Debug)]
pub struct MerkleTree {
    depth: u8,
    /// `levels[l]` holds the `16^l` hashes of level `l`; `levels[depth]` are the leaves.
    levels: Vec<Vec<NodeHash>>,
    /// Each leaf's rows, sorted by id.
    leaves: Vec<Vec<(String, String)>>,
    rows: usize,
}

impl MerkleTree {
    /// An empty tree of `depth` levels below the root (1..=[`MAX_DEPTH`]).
    pub fn new(depth: u8) -> Result<MerkleTree, MerkleError> {
        Self::from_rows(std::iter::empty::<(String, String)>(), depth)
    }

    /// A tree over `rows` (any order). If an id appears more than once,
    /// its last row counts.
    pub fn from_rows<I, A, B>(rows: I, depth: u8) -> Result<MerkleTree, MerkleError>
    where
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        if depth == 0 || depth > MAX_DEPTH {
            return Err(MerkleError::BadDepth {
                depth,
                max: MAX_DEPTH,
            });
        }
        let width = level_width(depth);
        let mut leaves: Vec<Vec<(String, String)>> = vec![Vec::new(); width];
        for (id, version) in rows {
            let id = id.into();
            leaves[leaf_index(&id, depth) as usize].push((id, version.into()));
        }
        let mut count = 0;
        for leaf in &mut leaves {
            if leaf.len() > 1 {
                // Last row wins: reverse, stable sort, keep the first of each id.
                leaf.reverse();
                leaf.sort_by(|a, b| a.0.cmp(&b.0));
                leaf.dedup_by(|later, earlier| later.0 == earlier.0);
            }
            count += leaf.len();
        }
        let mut levels: Vec<Vec<NodeHash>> = Vec::with_capacity(usize::from(depth) + 1);
        levels.push(leaves.iter().map(|l| leaf_hash(l)).collect());
        for _ in 0..depth {
            let below = levels.last().map(Vec::as_slice).unwrap_or_default();
            let above: Vec<NodeHash> = below.chunks(FANOUT).map(node_hash).collect();
            levels.push(above);
        }
        levels.reverse();
        Ok(MerkleTree {
            depth,
            levels,
            leaves,
            rows: count,
        })
    }

    /// A tree of [`DEFAULT_DEPTH`] over `rows`.
    pub fn with_default_depth<I, A, B>(rows: I) -> MerkleTree
    where
        I: IntoIterator<Item = (A, B)>,
        A: Into<String>,
        B: Into<String>,
    {
        match Self::from_rows(rows, DEFAULT_DEPTH) {
            Ok(t) => t,
            Err(_) => unreachable!("the default depth is valid"),
        }
    }

    /// Levels below the root.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// How many rows (ids) the tree holds.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether the tree holds no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The root hash.
    pub fn root(&self) -> NodeHash {
        self.levels[0][0]
    }

    /// All hashes of one level, in index order (`None` past the leaves).
    pub fn level(&self, level: u8) -> Option<&[NodeHash]> {
        self.levels.get(usize::from(level)).map(Vec::as_slice)
    }

    /// One node's hash (`None` if the node is not in this tree).
    pub fn node(&self, node: NodeId) -> Option<NodeHash> {
        self.level(node.level)?.get(node.index as usize).copied()
    }

    /// A node's 16 children's hashes (`None` for a leaf or a node not in this tree).
    ///
    /// This is what a party answers when the other asks about `node`.
    pub fn child_hashes(&self, node: NodeId) -> Option<&[NodeHash]> {
        if node.level >= self.depth {
            return None;
        }
        let start = node.index as usize * FANOUT;
        self.level(node.level + 1)?.get(start..start + FANOUT)
    }

    /// The leaf an id belongs to.
    pub fn leaf_for(&self, id: &str) -> NodeId {
        NodeId {
            level: self.depth,
            index: leaf_index(id, self.depth),
        }
    }

    /// A leaf's rows, sorted by id (`None` if `leaf` is not a leaf of this tree).
    pub fn leaf_rows(&self, leaf: NodeId) -> Option<&[(String, String)]> {
        if leaf.level != self.depth {
            return None;
        }
        self.leaves.get(leaf.index as usize).map(Vec::as_slice)
    }

    /// The version held for an id.
    pub fn get(&self, id: &str) -> Option<&str> {
        let leaf = &self.leaves[leaf_index(id, self.depth) as usize];
        leaf.binary_search_by(|(i, _)| i.as_str().cmp(id))
            .ok()
            .map(|i| leaf[i].1.as_str())
    }

    /// Sets an id's version (inserting the id if new) and rehashes its path:
    /// O(rows in the leaf + 16 × depth) work.
    pub fn upsert(&mut self, id: &str, version: &str) {
        let index = leaf_index(id, self.depth) as usize;
        let leaf = &mut self.leaves[index];
        match leaf.binary_search_by(|(i, _)| i.as_str().cmp(id)) {
            Ok(i) => {
                if leaf[i].1 == version {
                    return;
                }
                leaf[i].1 = version.to_owned();
            }
            Err(i) => {
                leaf.insert(i, (id.to_owned(), version.to_owned()));
                self.rows += 1;
            }
        }
        self.rehash(index);
    }

    /// Removes an id; returns whether it was present.
    pub fn remove(&mut self, id: &str) -> bool {
        let index = leaf_index(id, self.depth) as usize;
        let leaf = &mut self.leaves[index];
        match leaf.binary_search_by(|(i, _)| i.as_str().cmp(id)) {
            Ok(i) => {
                leaf.remove(i);
                self.rows -= 1;
                self.rehash(index);
                true
            }
            Err(_) => false,
        }
    }

    fn rehash(&mut self, leaf: usize) {
        let depth = usize::from(self.depth);
        self.levels[depth][leaf] = leaf_hash(&self.leaves[leaf]);
        let mut index = leaf;
        for level in (0..depth).rev() {
            index /= FANOUT;
            let start = index * FANOUT;
            let h = node_hash(&self.levels[level + 1][start..start + FANOUT]);
            self.levels[level][index] = h;
        }
    }

    /// The ids whose versions differ between this tree and `other` (present
    /// on one side only, or with different versions), in id order.
    pub fn differing_ids(&self, other: &MerkleTree) -> Result<Vec<String>, MerkleError> {
        let mut out = Vec::new();
        for leaf in diff_trees(self, other)? {
            let mine = self.leaf_rows(leaf).unwrap_or_default();
            let theirs = other.leaf_rows(leaf).unwrap_or_default();
            out.extend(diff_rows(
                mine.iter().map(|(i, v)| (i.as_str(), v.as_str())),
                theirs.iter().map(|(i, v)| (i.as_str(), v.as_str())),
            ));
        }
        out.sort_unstable();
        Ok(out)
    }
}

/// Finds the leaves where `local` and another party's tree (of the same
/// depth) differ, asking the other party only about nodes that differ.
///
/// `ask` is given the nodes of one level whose hashes differ and must return,
/// for each in order, that node's 16 children's hashes on the other side
/// (what [`MerkleTree::child_hashes`] returns there). It is called once per
/// level, starting with the root, and not at all further down once nothing
/// differs: at most `depth` round trips. Compare root hashes first to skip
/// the first round trip when the trees agree.
///
/// Returns the differing leaves in index order; exchange their rows
/// ([`MerkleTree::leaf_rows`]) and [`diff_rows`] them to get the ids.
pub fn differing_leaves<F, E>(
    local: &MerkleTree,
    mut ask: F,
) -> Result<Vec<NodeId>, CompareError<E>>
where
    F: FnMut(&[NodeId]) -> Result<Vec<Vec<NodeHash>>, E>,
    E: StdError + 'static,
{
    let mut frontier = vec![NodeId::ROOT];
    for _ in 0..local.depth {
        let answers = ask(&frontier).map_err(CompareError::Remote)?;
        if answers.len() != frontier.len() {
            return Err(CompareError::WrongCount {
                asked: frontier.len(),
                got: answers.len(),
            });
        }
        let mut next = Vec::new();
        for (node, remote) in frontier.iter().zip(&answers) {
            if remote.len() != FANOUT {
                return Err(CompareError::WrongFanout {
                    node: node.prefix(),
                    got: remote.len(),
                });
            }
            let mine = local.child_hashes(*node).unwrap_or_default();
            for (nibble, (m, r)) in mine.iter().zip(remote).enumerate() {
                if m != r {
                    next.extend(node.child(nibble as u8));
                }
            }
        }
        if next.is_empty() {
            return Ok(next);
        }
        frontier = next;
    }
    Ok(frontier)
}

/// The leaves where two local trees differ (see [`differing_leaves`]).
pub fn diff_trees(a: &MerkleTree, b: &MerkleTree) -> Result<Vec<NodeId>, MerkleError> {
    if a.depth != b.depth {
        return Err(MerkleError::DepthMismatch {
            local: a.depth,
            remote: b.depth,
        });
    }
    if a.root() == b.root() {
        return Ok(Vec::new());
    }
    let result = differing_leaves(a, |nodes| {
        Ok::<_, Infallible>(
            nodes
                .iter()
                .map(|n| b.child_hashes(*n).unwrap_or_default().to_vec())
                .collect(),
        )
    });
    match result {
        Ok(leaves) => Ok(leaves),
        Err(CompareError::Remote(never)) => match never {},
        Err(_) => unreachable!("both trees have the same depth"),
    }
}

/// The ids on which two row sets (e.g. one leaf's rows on each side)
/// disagree: present on one side only, or with different versions. Rows
/// may come in any order; the result is in id order, each id once.
pub fn diff_rows<'a, L, R>(local: L, remote: R) -> Vec<String>
where
    L: IntoIterator<Item = (&'a str, &'a str)>,
    R: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut l: Vec<(&str, &str)> = local.into_iter().collect();
    let mut r: Vec<(&str, &str)> = remote.into_iter().collect();
    l.sort_unstable();
    r.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut push = |id: &str| {
        if out.last().map(String::as_str) != Some(id) {
            out.push(id.to_owned());
        }
    };
    let (mut i, mut j) = (0, 0);
    while i < l.len() && j < r.len() {
        match l[i].0.cmp(r[j].0) {
            std::cmp::Ordering::Less => {
                push(l[i].0);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                push(r[j].0);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                if l[i].1 != r[j].1 {
                    push(l[i].0);
                }
                i += 1;
                j += 1;
            }
        }
    }
    for row in &l[i..] {
        push(row.0);
    }
    for row in &r[j..] {
        push(row.0);
    }
    out
}

#[cfg(test)]
mod table_helpers {
    use super::*;

    /// The helpers a store uses to keep the tree in tables give the tree's own hashes.
    #[test]
    fn helpers_rebuild_the_same_tree() {
        let rows: Vec<(String, String)> = (0..500)
            .map(|i| (format!("id-{i}"), format!("v{}", i % 7)))
            .collect();
        let tree = MerkleTree::from_rows(rows.clone(), 2).expect("depth 2");
        let mut leaves: Vec<Vec<(&str, &str)>> = vec![Vec::new(); 256];
        for (id, v) in &rows {
            let leaf = leaf_of(id, 2);
            assert_eq!(leaf, tree.leaf_for(id));
            leaves[leaf.index() as usize].push((id, v));
        }
        let mut hashes = Vec::new();
        for (i, leaf) in leaves.iter_mut().enumerate() {
            leaf.sort_unstable();
            let h = hash_leaf(leaf.iter().copied());
            assert_eq!(Some(h), tree.node(NodeId::new(2, i as u32).expect("leaf")));
            hashes.push(h);
        }
        let level1: Vec<NodeHash> = hashes.chunks(FANOUT).map(hash_children).collect();
        assert_eq!(hash_children(&level1), tree.root());
        assert_eq!(MerkleTree::new(3).expect("depth 3").root(), empty_hash(3));
        assert_ne!(empty_hash(2), empty_hash(3));
    }
}
