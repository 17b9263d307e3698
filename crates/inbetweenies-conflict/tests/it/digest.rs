//! Streaming digest and ancestor-walk edge cases.

use inbetweenies_conflict::{
    common_ancestor, state_digest, DigestBuilder, DigestError, MapAncestry, EMPTY_DIGEST,
};
use inbetweenies_proto::Version;
use serde_json::json;

use crate::common::{entity, plus, ts, ver};

#[test]
fn streaming_rejects_rows_out_of_order() {
    let mut b = DigestBuilder::new();
    b.push("b", "v1").unwrap();
    let err = b.push("a", "v1").unwrap_err();
    assert_eq!(
        err,
        DigestError::OutOfOrder {
            previous: "b".into(),
            id: "a".into()
        }
    );
    assert!(b.push("b", "v2").is_err(), "a repeated id is out of order");
    b.push("c", "v1").unwrap();
    assert_eq!(b.rows(), 2);
    assert_eq!(b.finish(), state_digest([("c", "v1"), ("b", "v1")]));
    assert_eq!(DigestBuilder::new().finish(), EMPTY_DIGEST);
    assert_eq!(state_digest(std::iter::empty()), EMPTY_DIGEST);
}

#[test]
fn digest_sorts_by_bytes_not_by_locale() {
    // Upper case sorts before lower case, and a prefix before its extensions.
    let a = state_digest([("b", "1"), ("B", "1"), ("bb", "1")]);
    let mut bytes = Vec::new();
    for id in ["B", "b", "bb"] {
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(b"\x1f1\x1e");
    }
    use sha2::Digest as _;
    assert_eq!(a, hex::encode(sha2::Sha256::digest(&bytes)));
}

#[test]
fn ancestor_walk_is_bounded() {
    // A linear history of 50 versions; two forks from the first one.
    let t0 = ts("2026-01-01T00:00:00.000000+00:00");
    let mut history = vec![entity("e", &ver(t0, 0, "u"), &[], json!({}))];
    for i in 1..50u32 {
        let v = ver(plus(t0, i64::from(i) * 1_000_000), i, "u");
        let parent = history.last().unwrap().version.clone();
        history.push(entity("e", &v, &[&parent], json!({})));
    }
    let tip = history.last().unwrap().clone();
    let root: Version = history[0].version.clone();
    let other = entity(
        "e",
        &ver(plus(t0, 99_000_000), 99, "w"),
        &[&root],
        json!({}),
    );
    let ancestry: MapAncestry = history.into_iter().collect();
    let found = common_ancestor(&tip, &other, &ancestry, 100).unwrap();
    assert_eq!(found.version, root);
    assert!(common_ancestor(&tip, &other, &ancestry, 10).is_none());
}
