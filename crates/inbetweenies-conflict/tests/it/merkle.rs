//! Merkle tree cases and properties: exactly the differing ids, in at most `depth` round trips.

use std::collections::BTreeMap;
use std::fmt;

use inbetweenies_conflict::{
    diff_rows, diff_trees, differing_leaves, CompareError, MerkleError, MerkleTree, NodeHash,
    NodeId, DEFAULT_DEPTH, EMPTY_DIGEST,
};
use proptest::prelude::*;

/// A tiny deterministic generator for large id sets.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn uuid_like(r: &mut XorShift) -> String {
    let (a, b) = (r.next(), r.next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// `n` rows, then a changed copy: about `pct`% of ids removed, re-versioned or added.
fn two_sides(
    n: usize,
    seed: u64,
    pct: u64,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut r = XorShift(seed | 1);
    let mut a = BTreeMap::new();
    for i in 0..n {
        a.insert(uuid_like(&mut r), format!("v{i}"));
    }
    let mut b = BTreeMap::new();
    for (id, v) in &a {
        match r.next() % 100 {
            x if x < pct => {}                                               // removed on b
            x if x < 2 * pct => drop(b.insert(id.clone(), format!("{v}'"))), // re-versioned
            _ => drop(b.insert(id.clone(), v.clone())),
        }
    }
    for _ in 0..(n as u64 * pct / 100) {
        b.insert(uuid_like(&mut r), "new".into());
    }
    (a, b)
}

fn expected_diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut ids: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .chain(b.keys().filter(|k| !a.contains_key(*k)).cloned())
        .collect();
    ids.sort();
    ids
}

fn tree(rows: &BTreeMap<String, String>) -> MerkleTree {
    MerkleTree::with_default_depth(rows.iter().map(|(i, v)| (i.as_str(), v.as_str())))
}

#[derive(Debug)]
struct Unreachable;
impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the other party is unreachable")
    }
}
impl std::error::Error for Unreachable {}

/// Compares as two parties would: only child hashes cross, then the differing leaves' rows.
fn compare_remotely(local: &MerkleTree, remote: &MerkleTree) -> (Vec<String>, usize) {
    let mut round_trips = 0;
    let leaves = differing_leaves(local, |nodes| {
        round_trips += 1;
        Ok::<_, Unreachable>(
            nodes
                .iter()
                .map(|n| remote.child_hashes(*n).unwrap().to_vec())
                .collect(),
        )
    })
    .unwrap();
    let mut ids = Vec::new();
    for leaf in leaves {
        let mine = local.leaf_rows(leaf).unwrap();
        let theirs = remote.leaf_rows(leaf).unwrap();
        let diff = diff_rows(
            mine.iter().map(|(i, v)| (i.as_str(), v.as_str())),
            theirs.iter().map(|(i, v)| (i.as_str(), v.as_str())),
        );
        assert!(!diff.is_empty(), "leaf {leaf:?} reported but equal");
        ids.extend(diff);
    }
    ids.sort();
    (ids, round_trips)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// For random sets of up to 10,000 ids, the comparison finds exactly the differing ids.
    #[test]
    fn comparison_finds_exactly_the_differing_ids(
        n in 0usize..=10_000,
        seed in any::<u64>(),
        pct in prop_oneof![Just(0u64), 1u64..3, 3u64..30],
    ) {
        let (a, b) = two_sides(n, seed, pct);
        let expected = expected_diff(&a, &b);
        let (ta, tb) = (tree(&a), tree(&b));
        prop_assert_eq!(ta.len(), a.len());
        prop_assert_eq!(ta.differing_ids(&tb).unwrap(), expected.clone());
        prop_assert_eq!(tb.differing_ids(&ta).unwrap(), expected.clone());
        let (ids, round_trips) = compare_remotely(&ta, &tb);
        prop_assert_eq!(ids, expected.clone());
        prop_assert!(round_trips <= usize::from(DEFAULT_DEPTH));
        prop_assert_eq!(ta.root() == tb.root(), expected.is_empty());
    }

    /// Updating a tree in place gives the same tree as building it afresh.
    #[test]
    fn upsert_and_remove_match_a_rebuild(n in 0usize..500, seed in any::<u64>()) {
        let (a, b) = two_sides(n, seed, 10);
        let mut t = tree(&a);
        for id in a.keys().filter(|k| !b.contains_key(*k)) {
            prop_assert!(t.remove(id));
        }
        for (id, v) in &b {
            t.upsert(id, v);
        }
        let fresh = tree(&b);
        prop_assert_eq!(t.root(), fresh.root());
        prop_assert_eq!(t.len(), b.len());
        prop_assert_eq!(t.level(DEFAULT_DEPTH), fresh.level(DEFAULT_DEPTH));
    }
}

#[test]
fn ten_thousand_ids_one_changed() {
    let (a, _) = two_sides(10_000, 42, 0);
    let mut b = a.clone();
    let changed = a.keys().nth(4_321).unwrap().clone();
    b.insert(changed.clone(), "other".into());
    let (ids, round_trips) = compare_remotely(&tree(&a), &tree(&b));
    assert_eq!(ids, vec![changed]);
    assert_eq!(round_trips, 3);
}

#[test]
fn equal_trees_need_one_round_trip_or_none() {
    let (a, _) = two_sides(1_000, 7, 0);
    let (ta, tb) = (tree(&a), tree(&a));
    assert_eq!(ta.root(), tb.root());
    assert_eq!(compare_remotely(&ta, &tb), (vec![], 1));
    assert_eq!(diff_trees(&ta, &tb).unwrap(), vec![]);
}

#[test]
fn empty_tree_hashes() {
    let t = MerkleTree::new(1).unwrap();
    assert!(t.is_empty());
    // Leaves of nothing hash like an empty state_digest.
    assert_eq!(t.level(1).unwrap()[0].to_hex(), EMPTY_DIGEST);
    assert_eq!(t.level(1).unwrap().len(), 16);
    let mut t2 = MerkleTree::new(1).unwrap();
    t2.upsert("x", "v1");
    assert_ne!(t.root(), t2.root());
    assert_eq!(t2.get("x"), Some("v1"));
    assert!(t2.remove("x"));
    assert!(!t2.remove("x"));
    assert_eq!(t.root(), t2.root());
}

#[test]
fn leaves_bucket_by_the_hash_of_the_id() {
    use sha2::Digest as _;
    let t = MerkleTree::from_rows([("kitchen", "v1"), ("hall", "v2")], 2).unwrap();
    let leaf = t.leaf_for("kitchen");
    let h = hex::encode(sha2::Sha256::digest(b"kitchen"));
    assert_eq!(leaf.prefix(), h[..2]);
    assert_eq!(
        t.leaf_rows(leaf).unwrap(),
        &[("kitchen".to_owned(), "v1".to_owned())]
    );
    // The leaf's hash is SHA-256 over its rows, framed as in state_digest.
    assert_eq!(
        t.node(leaf).unwrap().to_hex(),
        inbetweenies_conflict::state_digest([("kitchen", "v1")])
    );
    // An inner node's hash is SHA-256 over its 16 children's hashes.
    let parent = leaf.parent().unwrap();
    let mut bytes = Vec::new();
    for c in t.child_hashes(parent).unwrap() {
        bytes.extend_from_slice(&c.0);
    }
    assert_eq!(
        t.node(parent).unwrap().0,
        <[u8; 32]>::from(sha2::Sha256::digest(&bytes))
    );
    assert_eq!(parent.parent(), Some(NodeId::ROOT));
}

#[test]
fn node_ids_and_hashes_round_trip() {
    let n = NodeId::from_prefix("a3f").unwrap();
    assert_eq!((n.level(), n.index()), (3, 0xa3f));
    assert_eq!(n.prefix(), "a3f");
    assert_eq!(n.parent().unwrap().prefix(), "a3");
    assert_eq!(NodeId::from_prefix("").unwrap(), NodeId::ROOT);
    assert_eq!(NodeId::ROOT.children().count(), 16);
    assert_eq!(NodeId::ROOT.child(15).unwrap().prefix(), "f");
    assert_eq!(serde_json::to_string(&n).unwrap(), r#""a3f""#);
    assert_eq!(serde_json::from_str::<NodeId>(r#""a3f""#).unwrap(), n);
    for bad in ["A", "g", "123456", "-1"] {
        assert!(matches!(
            NodeId::from_prefix(bad),
            Err(MerkleError::BadPrefix(_))
        ));
    }
    let h: NodeHash = EMPTY_DIGEST.parse().unwrap();
    assert_eq!(h.to_string(), EMPTY_DIGEST);
    assert_eq!(
        serde_json::to_string(&h).unwrap(),
        format!("\"{EMPTY_DIGEST}\"")
    );
    assert!("abc".parse::<NodeHash>().is_err());
    assert!(EMPTY_DIGEST.to_uppercase().parse::<NodeHash>().is_err());
}

#[test]
fn bad_depths_and_answers_are_errors() {
    assert!(matches!(
        MerkleTree::new(0),
        Err(MerkleError::BadDepth { depth: 0, .. })
    ));
    assert!(MerkleTree::new(6).is_err());
    let a = MerkleTree::new(2).unwrap();
    let b = MerkleTree::from_rows([("x", "1")], 3).unwrap();
    assert!(matches!(
        diff_trees(&a, &b),
        Err(MerkleError::DepthMismatch {
            local: 2,
            remote: 3
        })
    ));
    let r = differing_leaves(&a, |_| Ok::<_, Unreachable>(vec![]));
    assert!(matches!(
        r,
        Err(CompareError::WrongCount { asked: 1, got: 0 })
    ));
    let r = differing_leaves(&a, |_| Ok::<_, Unreachable>(vec![vec![a.root(); 3]]));
    assert!(matches!(r, Err(CompareError::WrongFanout { got: 3, .. })));
    let r = differing_leaves(&a, |_| Err(Unreachable));
    let err = r.unwrap_err();
    assert!(matches!(err, CompareError::Remote(Unreachable)));
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn duplicate_ids_keep_the_last_row() {
    let t = MerkleTree::from_rows([("x", "1"), ("y", "1"), ("x", "2")], 2).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t.get("x"), Some("2"));
    let u = MerkleTree::from_rows([("y", "1"), ("x", "2")], 2).unwrap();
    assert_eq!(t.root(), u.root());
}
