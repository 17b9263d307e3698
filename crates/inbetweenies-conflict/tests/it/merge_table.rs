//! Table-driven cases of the strategies: three-way merge (one-sided, two-sided, delete against edit), manual, custom.

use std::sync::Arc;

use inbetweenies_conflict::{
    conflict_info, decide, merge_version, resolve, resolve_manual, Clamped, CustomChoice,
    CustomInput, CustomResolver, Fallback, ManualChoice, MapAncestry, NoAncestry, Reason,
    Resolution, Resolver, ResolverConfig, Side, Strategy, DEFAULT_SKEW_ALLOWANCE,
};
use inbetweenies_proto::{Entity, EntityType, Timestamp, Version};
use serde_json::{json, Value};

use crate::common::{entity, obj, plus, tombstone, ts, ver};

const ID: &str = "room-under-merge";
const SEC: i64 = 1_000_000;

fn t0() -> Timestamp {
    ts("2026-06-15T09:00:00.000000+00:00")
}

fn now() -> Timestamp {
    plus(t0(), 3_600 * SEC)
}

fn merge_config() -> ResolverConfig {
    ResolverConfig::default().with_strategy(EntityType::Room, Strategy::ThreeWayMerge)
}

/// An ancestor, and a server and a client version both parented on it.
struct Fork {
    server: Entity,
    client: Entity,
    ancestry: MapAncestry,
}

fn fork(ancestor: Value, server: (i64, Value), client: (i64, Value)) -> Fork {
    let av = ver(t0(), 1, "origin");
    let sv = ver(plus(t0(), server.0), 2, "tablet");
    let cv = ver(plus(t0(), client.0), 3, "phone");
    let ancestor = entity(ID, &av, &[], ancestor);
    let server = entity(ID, &sv, &[&av], server.1);
    let client = entity(ID, &cv, &[&av], client.1);
    let ancestry: MapAncestry = [ancestor, server.clone(), client.clone()]
        .into_iter()
        .collect();
    Fork {
        server,
        client,
        ancestry,
    }
}

struct MergeCase {
    name: &'static str,
    ancestor: Value,
    server: (i64, Value),
    client: (i64, Value),
    merged: Value,
    conflicting: &'static [&'static str],
}

fn merge_cases() -> Vec<MergeCase> {
    vec![
        MergeCase {
            name: "one-sided changes on both sides merge cleanly",
            ancestor: json!({"floor": 1, "area": 20, "color": "white"}),
            server: (10 * SEC, json!({"floor": 2, "area": 20, "color": "white"})),
            client: (
                20 * SEC,
                json!({"floor": 1, "area": 25, "color": "white", "lamp": true}),
            ),
            merged: json!({"floor": 2, "area": 25, "color": "white", "lamp": true}),
            conflicting: &[],
        },
        MergeCase {
            name: "a key removed on one side stays removed",
            ancestor: json!({"floor": 1, "note": "old"}),
            server: (10 * SEC, json!({"floor": 1})),
            client: (20 * SEC, json!({"floor": 3, "note": "old"})),
            merged: json!({"floor": 3}),
            conflicting: &[],
        },
        MergeCase {
            name: "both changed one key: the newer client's value for that key only",
            ancestor: json!({"floor": 1, "area": 20, "color": "white"}),
            server: (10 * SEC, json!({"floor": 2, "area": 20, "color": "red"})),
            client: (20 * SEC, json!({"floor": 1, "area": 30, "color": "blue"})),
            merged: json!({"floor": 2, "area": 30, "color": "blue"}),
            conflicting: &["color"],
        },
        MergeCase {
            name: "both changed one key: the newer server's value for that key only",
            ancestor: json!({"floor": 1, "area": 20, "color": "white"}),
            server: (20 * SEC, json!({"floor": 2, "area": 20, "color": "red"})),
            client: (10 * SEC, json!({"floor": 1, "area": 30, "color": "blue"})),
            merged: json!({"color": "red", "floor": 2, "area": 30}),
            conflicting: &["color"],
        },
        MergeCase {
            name: "both changed one key within 1 s: the greater version's value",
            ancestor: json!({"color": "white", "floor": 1}),
            server: (10 * SEC, json!({"color": "red", "floor": 1})),
            client: (10 * SEC + 400_000, json!({"color": "blue", "floor": 1})),
            merged: json!({"color": "blue", "floor": 1}),
            conflicting: &["color"],
        },
        MergeCase {
            name: "both made the same change: no conflict",
            ancestor: json!({"floor": 1, "area": 20}),
            server: (10 * SEC, json!({"floor": 5, "area": 20})),
            client: (20 * SEC, json!({"floor": 5, "area": 21})),
            merged: json!({"floor": 5, "area": 21}),
            conflicting: &[],
        },
        MergeCase {
            name: "one side removed a key the other changed: the rule decides",
            ancestor: json!({"floor": 1, "note": "old"}),
            server: (20 * SEC, json!({"floor": 1})),
            client: (10 * SEC, json!({"floor": 1, "note": "new"})),
            merged: json!({"floor": 1}),
            conflicting: &["note"],
        },
        MergeCase {
            name: "nested objects are one value",
            ancestor: json!({"state": {"on": false, "level": 1}}),
            server: (10 * SEC, json!({"state": {"on": true, "level": 1}})),
            client: (20 * SEC, json!({"state": {"on": false, "level": 9}})),
            merged: json!({"state": {"on": false, "level": 9}}),
            conflicting: &["state"],
        },
    ]
}

#[test]
fn three_way_merge_cases() {
    for case in merge_cases() {
        let f = fork(case.ancestor, case.server, case.client);
        let r = resolve(&f.server, &f.client, now(), &merge_config(), &f.ancestry);
        let Resolution::Merged {
            entity,
            reason,
            clamped,
            conflicting_keys,
            strategy,
        } = &r
        else {
            panic!("{}: expected a merge, got {r:?}", case.name);
        };
        assert_eq!(*reason, Reason::Merged, "{}", case.name);
        assert_eq!(*strategy, Strategy::ThreeWayMerge, "{}", case.name);
        assert_eq!(*clamped, Clamped::default(), "{}", case.name);
        assert_eq!(entity.content, obj(case.merged), "{}", case.name);
        assert_eq!(conflicting_keys, case.conflicting, "{}", case.name);

        // The merge version is parented on both sides, sorts after both, and is well formed.
        let mut parents = vec![f.server.version.clone(), f.client.version.clone()];
        parents.sort();
        assert_eq!(entity.parent_versions, parents, "{}", case.name);
        assert_eq!(entity.id, f.server.id);
        let later = f.server.updated_at.max(f.client.updated_at);
        assert_eq!(entity.updated_at, plus(later, 1), "{}", case.name);
        let parts = entity.version.parse().unwrap();
        assert_eq!(parts.timestamp, entity.updated_at);
        assert!(parts.counter.is_some());
        assert!(entity.version > f.server.version && entity.version > f.client.version);
        let rule_winner = decide(&f.server, &f.client, now(), DEFAULT_SKEW_ALLOWANCE)
            .winner
            .pick(&f.server, &f.client);
        assert_eq!(parts.user_id, rule_winner.user_id, "{}", case.name);
        assert_eq!(entity.user_id, rule_winner.user_id, "{}", case.name);
        assert!(!entity.is_deleted());

        // Reported as merged; resolved to the new version.
        let info = conflict_info(&f.server, &f.client, &r).unwrap();
        assert_eq!(info.resolution_strategy, "merged");
        assert_eq!(info.reason.as_deref(), Some("merged"));
        assert_eq!(info.resolved_version, entity.version);

        // Same inputs, byte-identical output, in either argument order.
        let again = resolve(&f.server, &f.client, now(), &merge_config(), &f.ancestry);
        assert_eq!(again, r, "{}", case.name);
        let swapped = resolve(&f.client, &f.server, now(), &merge_config(), &f.ancestry);
        let Resolution::Merged { entity: e2, .. } = swapped else {
            panic!("{}: swapped did not merge", case.name);
        };
        assert_eq!(
            serde_json::to_string(&e2).unwrap(),
            serde_json::to_string(entity).unwrap(),
            "{}",
            case.name
        );
    }
}

#[test]
fn merge_also_merges_the_name_field() {
    let mut f = fork(
        json!({"floor": 1}),
        (10 * SEC, json!({"floor": 2})),
        (20 * SEC, json!({"floor": 1})),
    );
    f.client.name = "Big Kitchen".into();
    f.ancestry.insert(f.client.clone());
    let r = resolve(&f.server, &f.client, now(), &merge_config(), &f.ancestry);
    let Resolution::Merged { entity, .. } = r else {
        panic!("expected a merge, got {r:?}");
    };
    assert_eq!(entity.name, "Big Kitchen");
    assert_eq!(entity.content, obj(json!({"floor": 2})));
}

#[test]
fn delete_against_edit_is_never_resurrected() {
    for (deleted, newer) in [
        (Side::Server, Side::Server),
        (Side::Server, Side::Client),
        (Side::Client, Side::Server),
        (Side::Client, Side::Client),
    ] {
        let av = ver(t0(), 1, "origin");
        let ancestor = entity(ID, &av, &[], json!({"floor": 1}));
        let (st, ct) = match newer {
            Side::Server => (30 * SEC, 10 * SEC),
            Side::Client => (10 * SEC, 30 * SEC),
        };
        let sv = ver(plus(t0(), st), 2, "tablet");
        let cv = ver(plus(t0(), ct), 3, "phone");
        let (server, client) = match deleted {
            Side::Server => (
                tombstone(ID, &sv, &[&av]),
                entity(ID, &cv, &[&av], json!({"floor": 4})),
            ),
            Side::Client => (
                entity(ID, &sv, &[&av], json!({"floor": 4})),
                tombstone(ID, &cv, &[&av]),
            ),
        };
        let ancestry: MapAncestry = [ancestor, server.clone(), client.clone()]
            .into_iter()
            .collect();
        let r = resolve(&server, &client, now(), &merge_config(), &ancestry);
        let label = format!("delete on {deleted}, newer {newer}");
        let Resolution::Winner {
            winner,
            reason,
            strategy,
            fallback,
            ..
        } = r
        else {
            panic!("{label}: expected the tombstone to win, got {r:?}");
        };
        assert_eq!(winner, deleted, "{label}");
        assert_eq!(reason, Reason::DeleteWins, "{label}");
        assert_eq!(strategy, Strategy::ThreeWayMerge, "{label}");
        assert_eq!(fallback, None, "{label}");
        assert!(winner.pick(&server, &client).is_deleted(), "{label}");
        let info = conflict_info(&server, &client, &r).unwrap();
        assert_eq!(
            info.resolution_strategy,
            format!(
                "a merge never undoes a delete, {} is a delete",
                deleted.reference_word()
            )
        );
        assert_eq!(info.reason.as_deref(), Some("delete_wins"));
    }
}

#[test]
fn fallbacks_to_last_write_wins_say_so() {
    // No common ancestor known.
    let f = fork(
        json!({"floor": 1}),
        (10 * SEC, json!({"floor": 2})),
        (20 * SEC, json!({"floor": 3})),
    );
    let r = resolve(&f.server, &f.client, now(), &merge_config(), &NoAncestry);
    assert_eq!(
        r,
        Resolution::Winner {
            winner: Side::Client,
            loser: Side::Server,
            reason: Reason::NewerOnClient,
            clamped: Clamped::default(),
            strategy: Strategy::LastWriteWins,
            fallback: Some(Fallback::NoCommonAncestor),
        }
    );
    // Histories that never meet.
    let lone_s = entity(ID, &ver(t0(), 5, "a"), &[], json!({}));
    let lone_c = entity(ID, &ver(plus(t0(), 1), 6, "b"), &[], json!({}));
    let ancestry: MapAncestry = [lone_s.clone(), lone_c.clone()].into_iter().collect();
    let r = resolve(&lone_s, &lone_c, now(), &merge_config(), &ancestry);
    assert!(matches!(
        r,
        Resolution::Winner {
            fallback: Some(Fallback::NoCommonAncestor),
            reason: Reason::TiebreakVersion,
            ..
        }
    ));
    // Two tombstones: nothing to merge.
    let av = ver(t0(), 1, "origin");
    let s = tombstone(ID, &ver(plus(t0(), SEC), 2, "a"), &[&av]);
    let c = tombstone(ID, &ver(plus(t0(), 5 * SEC), 3, "b"), &[&av]);
    let r = resolve(&s, &c, now(), &merge_config(), &NoAncestry);
    assert!(matches!(
        r,
        Resolution::Winner {
            winner: Side::Client,
            fallback: Some(Fallback::BothDeleted),
            ..
        }
    ));
    // Custom strategy without a resolver.
    let config = ResolverConfig::default().with_default_strategy(Strategy::Custom);
    let r = resolve(&f.server, &f.client, now(), &config, &NoAncestry);
    assert!(matches!(
        r,
        Resolution::Winner {
            winner: Side::Client,
            fallback: Some(Fallback::NoCustomResolver),
            ..
        }
    ));
}

#[test]
fn indirect_descent_under_merge_is_a_fast_forward() {
    let v1 = ver(t0(), 1, "a");
    let v2 = ver(plus(t0(), SEC), 2, "a");
    let v3 = ver(plus(t0(), 2 * SEC), 3, "a");
    let e1 = entity(ID, &v1, &[], json!({"n": 1}));
    let e2 = entity(ID, &v2, &[&v1], json!({"n": 2}));
    let e3 = entity(ID, &v3, &[&v2], json!({"n": 3}));
    let ancestry: MapAncestry = [e1.clone(), e2, e3.clone()].into_iter().collect();
    // The client's version descends from the server's through an intermediate version.
    assert_eq!(
        resolve(&e1, &e3, now(), &merge_config(), &ancestry),
        Resolution::FastForward
    );
    // The pushed version is an ancestor of the server's latest.
    let r = resolve(&e3, &e1, now(), &merge_config(), &ancestry);
    assert_eq!(r.reason(), Reason::FastForward);
    assert_eq!(r.resolved_version(&e3, &e1), &e3.version);
    assert!(conflict_info(&e3, &e1, &r).is_none());
}

#[test]
fn merge_finds_the_most_recent_common_ancestor_in_a_longer_history() {
    // v1 -> v2 -> v3 (server), v2 -> v4 -> v5 (client): the common ancestor is v2.
    let v: Vec<Version> = (1..=5)
        .map(|i| ver(plus(t0(), i64::from(i) * SEC * 10), i, "u"))
        .collect();
    let e1 = entity(ID, &v[0], &[], json!({"a": 0, "b": 0, "c": 0}));
    let e2 = entity(ID, &v[1], &[&v[0]], json!({"a": 1, "b": 1, "c": 1}));
    let e3 = entity(ID, &v[2], &[&v[1]], json!({"a": 2, "b": 1, "c": 1}));
    let e4 = entity(ID, &v[3], &[&v[1]], json!({"a": 1, "b": 2, "c": 1}));
    let e5 = entity(ID, &v[4], &[&v[3]], json!({"a": 1, "b": 2, "c": 3}));
    let ancestry: MapAncestry = [e1, e2, e3.clone(), e4, e5.clone()].into_iter().collect();
    let r = resolve(&e3, &e5, now(), &merge_config(), &ancestry);
    let Resolution::Merged {
        entity,
        conflicting_keys,
        ..
    } = r
    else {
        panic!("expected a merge, got {r:?}");
    };
    assert_eq!(entity.content, obj(json!({"a": 2, "b": 2, "c": 3})));
    assert!(conflicting_keys.is_empty());
}

#[test]
fn strategies_are_chosen_per_entity_type() {
    let f = fork(
        json!({"floor": 1, "area": 1}),
        (10 * SEC, json!({"floor": 2, "area": 1})),
        (20 * SEC, json!({"floor": 1, "area": 2})),
    );
    let config = ResolverConfig::default()
        .with_strategy(EntityType::Device, Strategy::ThreeWayMerge)
        .with_strategy(EntityType::Note, Strategy::Manual);
    assert_eq!(
        config.strategy_for(&EntityType::Room),
        Strategy::LastWriteWins
    );
    // Rooms: last-write-wins (the default).
    let resolver = Resolver::new(config.clone());
    let r = resolver.resolve(&f.server, &f.client, now(), &f.ancestry);
    assert_eq!(r.strategy(), Some(Strategy::LastWriteWins));
    assert_eq!(r.reason(), Reason::NewerOnClient);
    // Devices: three-way merge.
    let mut server = f.server.clone();
    let mut client = f.client.clone();
    server.entity_type = EntityType::Device;
    client.entity_type = EntityType::Device;
    let r = resolver.resolve(&server, &client, now(), &f.ancestry);
    assert_eq!(r.strategy(), Some(Strategy::ThreeWayMerge));
    assert_eq!(r.reason(), Reason::Merged);
    // Notes: manual review, both intact; the server's version stays latest.
    server.entity_type = EntityType::Note;
    client.entity_type = EntityType::Note;
    let r = resolver.resolve(&server, &client, now(), &f.ancestry);
    let Resolution::Manual {
        server: kept_s,
        client: kept_c,
        suggestion,
    } = &r
    else {
        panic!("expected manual review, got {r:?}");
    };
    assert_eq!((kept_s, kept_c), (&server, &client));
    assert_eq!(suggestion.winner, Side::Client);
    let info = conflict_info(&server, &client, &r).unwrap();
    assert_eq!(info.resolution_strategy, "queued for manual review");
    assert_eq!(info.reason.as_deref(), Some("manual"));
    assert_eq!(info.resolved_version, server.version);
    // An unknown type uses the default strategy.
    server.entity_type = EntityType::Other("spaceship".into());
    assert_eq!(
        resolver
            .resolve(&server, &client, now(), &f.ancestry)
            .strategy(),
        Some(Strategy::LastWriteWins)
    );
}

/// Keeps whichever side has the larger `floor`; merges when equal; defers otherwise.
#[derive(Debug)]
struct HighestFloor;

impl CustomResolver for HighestFloor {
    fn resolve(&self, input: &CustomInput<'_>) -> CustomChoice {
        let floor = |e: &Entity| e.content.get("floor").and_then(Value::as_i64);
        match (floor(input.server), floor(input.client)) {
            (Some(s), Some(c)) if s > c => CustomChoice::Keep(Side::Server),
            (Some(s), Some(c)) if s < c => CustomChoice::Keep(Side::Client),
            (Some(s), Some(_)) => CustomChoice::Content(obj(json!({"floor": s, "agreed": true}))),
            (None, None) => CustomChoice::Manual,
            _ => CustomChoice::Rule,
        }
    }
}

#[test]
fn custom_resolver_choices() {
    let config = ResolverConfig::default()
        .with_default_strategy(Strategy::Custom)
        .with_custom(Arc::new(HighestFloor));
    let cases: Vec<(Value, Value, Reason, Option<Side>)> = vec![
        (
            json!({"floor": 9}),
            json!({"floor": 2}),
            Reason::Custom,
            Some(Side::Server),
        ),
        (
            json!({"floor": 1}),
            json!({"floor": 2}),
            Reason::Custom,
            Some(Side::Client),
        ),
        (
            json!({"floor": 3}),
            json!({"floor": 3}),
            Reason::Merged,
            None,
        ),
        (json!({}), json!({}), Reason::Manual, None),
        (
            json!({"floor": 3}),
            json!({}),
            Reason::NewerOnClient,
            Some(Side::Client),
        ),
    ];
    for (s, c, reason, winner) in cases {
        let f = fork(json!({}), (10 * SEC, s), (20 * SEC, c));
        let r = resolve(&f.server, &f.client, now(), &config, &f.ancestry);
        assert_eq!(r.reason(), reason, "{r:?}");
        match &r {
            Resolution::Winner {
                winner: w,
                strategy,
                fallback,
                ..
            } => {
                assert_eq!(Some(*w), winner);
                if reason == Reason::Custom {
                    assert_eq!(*strategy, Strategy::Custom);
                    let info = conflict_info(&f.server, &f.client, &r).unwrap();
                    assert_eq!(
                        info.resolution_strategy,
                        format!("custom resolver chose {}", w.reference_word())
                    );
                } else {
                    assert_eq!(*fallback, Some(Fallback::CustomDeferred));
                }
            }
            Resolution::Merged {
                entity, strategy, ..
            } => {
                assert_eq!(*strategy, Strategy::Custom);
                assert_eq!(entity.content, obj(json!({"floor": 3, "agreed": true})));
                assert_eq!(entity.parent_versions.len(), 2);
            }
            Resolution::Manual { .. } => {}
            Resolution::FastForward => panic!("not a fast-forward"),
        }
    }
}

#[test]
fn manual_resolution_makes_a_version_parented_on_both() {
    let f = fork(
        json!({"floor": 1}),
        (10 * SEC, json!({"floor": 2})),
        (20 * SEC, json!({"floor": 3})),
    );
    let at = now();
    let kept = resolve_manual(
        &f.server,
        &f.client,
        ManualChoice::Keep(Side::Server),
        "reviewer",
        at,
    );
    assert_eq!(kept.content, f.server.content);
    assert_eq!(kept.user_id, "reviewer");
    assert_eq!(kept.updated_at, at);
    assert_eq!(kept.version.parse().unwrap().timestamp, at);
    assert!(kept.parent_versions.contains(&f.server.version));
    assert!(kept.parent_versions.contains(&f.client.version));
    // Deterministic.
    let again = resolve_manual(
        &f.server,
        &f.client,
        ManualChoice::Keep(Side::Server),
        "reviewer",
        at,
    );
    assert_eq!(again, kept);
    // Either side's version fast-forwards to it.
    let config = ResolverConfig::default();
    assert_eq!(
        resolve(&f.server, &kept, at, &config, &NoAncestry),
        Resolution::FastForward
    );
    assert_eq!(
        resolve(&f.client, &kept, at, &config, &NoAncestry),
        Resolution::FastForward
    );
    // Hand-merged content; a reviewer with a slow clock still sorts after both edits.
    let early = t0();
    let edited = resolve_manual(
        &f.server,
        &f.client,
        ManualChoice::Content(obj(json!({"floor": 7}))),
        "reviewer",
        early,
    );
    assert_eq!(edited.content, obj(json!({"floor": 7})));
    assert_eq!(edited.updated_at, plus(f.client.updated_at, 1));
    assert!(edited.version > f.client.version && edited.version > f.server.version);
}

#[test]
fn merge_versions_are_deterministic_and_distinct() {
    let a = Version::new("2026-06-15T09:41:02.581234+00:00-000417-alice");
    let b = Version::new("2026-06-15T09:41:02.900000+00:00-000418-bob");
    let c = Version::new("2026-06-15T09:41:02.900000+00:00-000419-bob");
    let at = ts("2026-06-15T09:41:02.900001+00:00");
    let ab = merge_version(&a, &b, at, "bob");
    assert_eq!(ab, merge_version(&b, &a, at, "bob"));
    assert_ne!(ab, merge_version(&a, &c, at, "bob"));
    let parts = ab.parse().unwrap();
    assert_eq!(parts.timestamp, at);
    assert_eq!(parts.user_id, "bob");
    assert!(ab.as_str().starts_with("2026-06-15T09:41:02.900001+00:00-"));
    assert_eq!(
        ab.as_str().len(),
        "2026-06-15T09:41:02.900001+00:00-000000-bob".len()
    );
}
