//! Properties the design claims: a symmetric, deterministic rule; merges keep both sides' disjoint changes; an order-free digest.

use std::collections::BTreeMap;

use inbetweenies_conflict::{
    decide, resolve, state_digest, MapAncestry, Resolution, ResolverConfig, Strategy as Strat,
    DEFAULT_SKEW_ALLOWANCE,
};
use inbetweenies_proto::{Entity, EntityType, Timestamp};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::common::{entity, obj, plus, tombstone, ts, ver};

const SEC: i64 = 1_000_000;
const MIN: i64 = 60 * SEC;

fn t0() -> Timestamp {
    ts("2026-06-15T09:41:02.000000+00:00")
}

/// Edit-time offsets that exercise every branch: far apart, inside the
/// window, exactly on its edge, equal, and beyond the skew allowance.
fn offset() -> impl proptest::strategy::Strategy<Value = i64> {
    prop_oneof![
        -3 * SEC..3 * SEC,
        Just(0),
        Just(SEC),
        Just(-SEC),
        Just(SEC - 1),
        Just(1 - SEC),
        -10 * MIN..-MIN,
        5 * MIN - SEC..5 * MIN + SEC,
        10 * MIN..60 * MIN,
    ]
}

#[derive(Clone, Debug)]
struct Spec {
    offset: i64,
    counter: u32,
    user: &'static str,
    deleted: bool,
}

fn spec() -> impl proptest::strategy::Strategy<Value = Spec> {
    (
        offset(),
        0u32..4,
        prop::sample::select(vec!["a", "b", "zed"]),
        any::<bool>(),
    )
        .prop_map(|(offset, counter, user, deleted)| Spec {
            offset,
            counter,
            user,
            deleted,
        })
}

/// Two versions of one id; `relation` 1 parents the client on the server,
/// 2 the server on the client, else both on a common ancestor.
fn pair(s: &Spec, c: &Spec, relation: u8) -> (Entity, Entity, Entity) {
    let av = ver(plus(t0(), -60 * MIN), 1, "origin");
    let sv = ver(plus(t0(), s.offset), s.counter, s.user);
    let cv = ver(plus(t0(), c.offset), c.counter, c.user);
    let (sp, cp) = match relation {
        1 => (&av, &sv),
        2 => (&cv, &av),
        _ => (&av, &av),
    };
    let make = |spec: &Spec, v, p| {
        if spec.deleted {
            tombstone("e", v, &[p])
        } else {
            entity(
                "e",
                v,
                &[p],
                json!({"floor": spec.counter, "by": spec.user}),
            )
        }
    };
    let ancestor = entity("e", &av, &[], json!({"floor": 0}));
    (ancestor, make(s, &sv, sp), make(c, &cv, cp))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The rule picks the same winning entity whichever order it is given.
    #[test]
    fn rule_is_symmetric(s in spec(), c in spec(), relation in 0u8..3, now in offset()) {
        let (_, server, client) = pair(&s, &c, relation);
        prop_assume!(server.version != client.version);
        let now = plus(t0(), now);
        let d = decide(&server, &client, now, DEFAULT_SKEW_ALLOWANCE);
        let e = decide(&client, &server, now, DEFAULT_SKEW_ALLOWANCE);
        prop_assert_eq!(e, d.swapped());
        prop_assert_eq!(
            d.winner.pick(&server, &client),
            e.winner.pick(&client, &server)
        );
    }

    /// Resolving is deterministic under every strategy: same inputs, byte-identical outcome.
    #[test]
    fn resolving_is_deterministic(
        s in spec(),
        c in spec(),
        relation in 0u8..3,
        now in offset(),
        strategy in prop::sample::select(vec![
            Strat::LastWriteWins,
            Strat::ThreeWayMerge,
            Strat::Manual,
        ]),
    ) {
        let (ancestor, server, client) = pair(&s, &c, relation);
        let ancestry: MapAncestry = [ancestor, server.clone(), client.clone()].into_iter().collect();
        let config = ResolverConfig::default().with_strategy(EntityType::Room, strategy);
        let now = plus(t0(), now);
        let first = resolve(&server, &client, now, &config, &ancestry);
        let second = resolve(&server.clone(), &client.clone(), now, &config.clone(), &ancestry.clone());
        prop_assert_eq!(&first, &second);
        if let (Resolution::Merged { entity: a, .. }, Resolution::Merged { entity: b, .. }) = (&first, &second) {
            prop_assert_eq!(serde_json::to_vec(a).unwrap(), serde_json::to_vec(b).unwrap());
        }
    }
}

/// What each of 20 keys does in a disjoint-change merge.
#[derive(Clone, Copy, Debug)]
enum KeyChange {
    Untouched,
    Server(i64),
    Client(i64),
    ServerRemoves,
    ClientRemoves,
}

fn key_change() -> impl proptest::strategy::Strategy<Value = KeyChange> {
    prop_oneof![
        3 => Just(KeyChange::Untouched),
        3 => any::<i64>().prop_map(KeyChange::Server),
        3 => any::<i64>().prop_map(KeyChange::Client),
        1 => Just(KeyChange::ServerRemoves),
        1 => Just(KeyChange::ClientRemoves),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A three-way merge of disjoint key changes contains both sides' changes.
    #[test]
    fn disjoint_changes_merge_cleanly(
        base in prop::collection::vec(any::<i64>(), 20),
        changes in prop::collection::vec(key_change(), 20),
        server_adds in prop::collection::btree_map("s[a-z]{1,6}", any::<bool>(), 0..4),
        client_adds in prop::collection::btree_map("c[a-z]{1,6}", any::<bool>(), 0..4),
        s_off in offset(),
        c_off in offset(),
        now in offset(),
    ) {
        let ancestor_content: BTreeMap<String, Value> =
            base.iter().enumerate().map(|(i, v)| (format!("k{i:02}"), json!(v))).collect();
        let mut server_content = ancestor_content.clone();
        let mut client_content = ancestor_content.clone();
        let mut expected = ancestor_content.clone();
        for (i, change) in changes.iter().enumerate() {
            let k = format!("k{i:02}");
            match *change {
                KeyChange::Untouched => {}
                KeyChange::Server(v) => {
                    let v = json!(format!("s{v}"));
                    server_content.insert(k.clone(), v.clone());
                    expected.insert(k, v);
                }
                KeyChange::Client(v) => {
                    let v = json!(format!("c{v}"));
                    client_content.insert(k.clone(), v.clone());
                    expected.insert(k, v);
                }
                KeyChange::ServerRemoves => {
                    server_content.remove(&k);
                    expected.remove(&k);
                }
                KeyChange::ClientRemoves => {
                    client_content.remove(&k);
                    expected.remove(&k);
                }
            }
        }
        for (k, v) in &server_adds {
            server_content.insert(k.clone(), json!(v));
            expected.insert(k.clone(), json!(v));
        }
        for (k, v) in &client_adds {
            client_content.insert(k.clone(), json!(v));
            expected.insert(k.clone(), json!(v));
        }
        let av = ver(plus(t0(), -60 * MIN), 1, "origin");
        let sv = ver(plus(t0(), s_off), 2, "tablet");
        let cv = ver(plus(t0(), c_off), 3, "phone");
        let ancestor = entity("e", &av, &[], json!(ancestor_content));
        let server = entity("e", &sv, &[&av], json!(server_content));
        let client = entity("e", &cv, &[&av], json!(client_content));
        let ancestry: MapAncestry = [ancestor, server.clone(), client.clone()].into_iter().collect();
        let config = ResolverConfig::default().with_default_strategy(Strat::ThreeWayMerge);
        let r = resolve(&server, &client, plus(t0(), now), &config, &ancestry);
        let Resolution::Merged { entity: merged, conflicting_keys, .. } = r else {
            return Err(TestCaseError::fail(format!("expected a merge, got {r:?}")));
        };
        prop_assert!(conflicting_keys.is_empty(), "{:?}", conflicting_keys);
        let expected: Value = json!(expected);
        prop_assert_eq!(Value::Object(merged.content), expected);
        prop_assert!(merged.parent_versions.contains(&server.version));
        prop_assert!(merged.parent_versions.contains(&client.version));
    }

    /// The digest does not depend on the order rows come in.
    #[test]
    fn digest_ignores_input_order(
        rows in prop::collection::btree_map("[0-9a-f-]{1,36}", "[0-9A-Za-z:.+-]{1,50}", 0..200),
        rotate in any::<prop::sample::Index>(),
        reverse in any::<bool>(),
    ) {
        let sorted: Vec<(&str, &str)> = rows.iter().map(|(i, v)| (i.as_str(), v.as_str())).collect();
        let mut shuffled = sorted.clone();
        if !shuffled.is_empty() {
            let k = rotate.index(shuffled.len());
            shuffled.rotate_left(k);
        }
        if reverse {
            shuffled.reverse();
        }
        prop_assert_eq!(state_digest(shuffled), state_digest(sorted.clone()));
        // And it is exactly SHA-256 over the rows in id order.
        let mut bytes = Vec::new();
        for (i, v) in &sorted {
            bytes.extend_from_slice(i.as_bytes());
            bytes.push(0x1f);
            bytes.extend_from_slice(v.as_bytes());
            bytes.push(0x1e);
        }
        use sha2::Digest as _;
        prop_assert_eq!(state_digest(sorted), hex::encode(sha2::Sha256::digest(&bytes)));
    }
}

#[test]
fn merge_of_disjoint_changes_keeps_key_order_of_the_rule_winner() {
    let av = ver(plus(t0(), -MIN), 1, "origin");
    let sv = ver(t0(), 2, "tablet");
    let cv = ver(plus(t0(), 5 * SEC), 3, "phone");
    let ancestor = entity("e", &av, &[], json!({"b": 1, "a": 1}));
    let server = entity("e", &sv, &[&av], json!({"b": 2, "a": 1, "z": 0}));
    let client = entity("e", &cv, &[&av], json!({"y": 0, "b": 1, "a": 2}));
    let ancestry: MapAncestry = [ancestor, server.clone(), client.clone()]
        .into_iter()
        .collect();
    let config = ResolverConfig::default().with_default_strategy(Strat::ThreeWayMerge);
    let Resolution::Merged { entity: merged, .. } =
        resolve(&server, &client, t0(), &config, &ancestry)
    else {
        panic!("expected a merge");
    };
    assert_eq!(merged.content, obj(json!({"y": 0, "b": 2, "a": 2, "z": 0})));
    assert_eq!(
        serde_json::to_string(&merged.content).unwrap(),
        r#"{"y":0,"b":2,"a":2,"z":0}"#
    );
}
