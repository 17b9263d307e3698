//! Table-driven cases of the canonical rule: every reason, the 1-second boundary, equal times, deletes, clock skew.

use inbetweenies_conflict::{
    conflict_info, decide, resolve, Clamped, NoAncestry, Reason, Resolution, ResolverConfig, Side,
    Strategy, DEFAULT_SKEW_ALLOWANCE,
};
use inbetweenies_proto::{Entity, Timestamp, Version};
use serde_json::json;

use crate::common::{entity, plus, tombstone, ts, ver};

const ID: &str = "3f0c2a52-5d7e-4a47-9a0e-8d1f6c1b2a11";

/// One side of a case: edit time offset from T (µs), counter, user, tombstone?, parent is the other side?
#[derive(Clone, Copy)]
struct SideSpec {
    offset: i64,
    counter: u32,
    user: &'static str,
    deleted: bool,
    parent_is_other: bool,
}

const fn s(offset: i64, counter: u32, user: &'static str) -> SideSpec {
    SideSpec {
        offset,
        counter,
        user,
        deleted: false,
        parent_is_other: false,
    }
}

const fn del(offset: i64, counter: u32, user: &'static str) -> SideSpec {
    SideSpec {
        offset,
        counter,
        user,
        deleted: true,
        parent_is_other: false,
    }
}

const fn child(spec: SideSpec) -> SideSpec {
    SideSpec {
        parent_is_other: true,
        ..spec
    }
}

struct Case {
    name: &'static str,
    server: SideSpec,
    client: SideSpec,
    /// `now` as an offset from T (µs).
    now: i64,
    winner: Side,
    reason: Reason,
    clamped: Clamped,
    /// The reference's wording, or `None` for a fast-forward.
    wording: Option<&'static str>,
}

const SEC: i64 = 1_000_000;
const MIN: i64 = 60 * SEC;
const NONE: Clamped = Clamped {
    server: false,
    client: false,
};

fn t0() -> Timestamp {
    ts("2026-06-15T09:41:02.000000+00:00")
}

/// The base version both sides were edited from (older than either side).
fn base_version() -> Version {
    ver(plus(t0(), -3_600 * SEC), 1, "origin")
}

fn build(spec: SideSpec, other: &Version) -> Entity {
    let v = ver(plus(t0(), spec.offset), spec.counter, spec.user);
    let base = base_version();
    let parent = if spec.parent_is_other { other } else { &base };
    if spec.deleted {
        tombstone(ID, &v, &[parent])
    } else {
        entity(ID, &v, &[parent], json!({"floor": spec.counter}))
    }
}

fn build_pair(case: &Case) -> (Entity, Entity) {
    let sv = ver(
        plus(t0(), case.server.offset),
        case.server.counter,
        case.server.user,
    );
    let cv = ver(
        plus(t0(), case.client.offset),
        case.client.counter,
        case.client.user,
    );
    (build(case.server, &cv), build(case.client, &sv))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "fast-forward: the client's parent is the server's latest",
            server: s(0, 1, "alice"),
            client: child(s(-10 * MIN, 2, "bob")),
            now: MIN,
            winner: Side::Client,
            reason: Reason::FastForward,
            clamped: NONE,
            wording: None,
        },
        Case {
            name: "stale re-send: the server's latest descends from the pushed version",
            server: child(s(0, 2, "alice")),
            client: s(5 * SEC, 1, "bob"),
            now: MIN,
            winner: Side::Server,
            reason: Reason::FastForward,
            clamped: NONE,
            wording: None,
        },
        Case {
            name: "server newer by a minute",
            server: s(0, 1, "alice"),
            client: s(-MIN, 2, "bob"),
            now: MIN,
            winner: Side::Server,
            reason: Reason::NewerOnServer,
            clamped: NONE,
            wording: Some("local has newer timestamp"),
        },
        Case {
            name: "client newer by two seconds",
            server: s(0, 9, "zed"),
            client: s(2 * SEC, 1, "amy"),
            now: MIN,
            winner: Side::Client,
            reason: Reason::NewerOnClient,
            clamped: NONE,
            wording: Some("remote has newer timestamp"),
        },
        Case {
            name: "within 1 s: the server's greater version wins",
            server: s(200_000, 1, "a-device"),
            client: s(0, 2, "b-device"),
            now: MIN,
            winner: Side::Server,
            reason: Reason::TiebreakVersion,
            clamped: NONE,
            wording: Some("timestamps within 1s, local has greater version"),
        },
        Case {
            name: "within 1 s: the client's greater version wins",
            server: s(0, 1, "a-device"),
            client: s(999_999, 2, "b-device"),
            now: MIN,
            winner: Side::Client,
            reason: Reason::TiebreakVersion,
            clamped: NONE,
            wording: Some("timestamps within 1s, remote has greater version"),
        },
        Case {
            name: "exactly 1 s apart is outside the window: newer wins",
            server: s(0, 1, "a-device"),
            client: s(SEC, 2, "b-device"),
            now: MIN,
            winner: Side::Client,
            reason: Reason::NewerOnClient,
            clamped: NONE,
            wording: Some("remote has newer timestamp"),
        },
        Case {
            name: "a tombstone 999 999 µs older still wins (inside the window)",
            server: del(0, 1, "alice"),
            client: s(999_999, 2, "bob"),
            now: MIN,
            winner: Side::Server,
            reason: Reason::DeleteWins,
            clamped: NONE,
            wording: Some("timestamps within 1s, local is a delete"),
        },
        Case {
            name: "a tombstone exactly 1 s older loses to the newer update",
            server: del(0, 1, "alice"),
            client: s(SEC, 2, "bob"),
            now: MIN,
            winner: Side::Client,
            reason: Reason::NewerOnClient,
            clamped: NONE,
            wording: Some("remote has newer timestamp"),
        },
        Case {
            name: "equal timestamps: the greater user id makes the greater version",
            server: s(0, 7, "alice"),
            client: s(0, 7, "bob"),
            now: MIN,
            winner: Side::Client,
            reason: Reason::TiebreakVersion,
            clamped: NONE,
            wording: Some("timestamps within 1s, remote has greater version"),
        },
        Case {
            name: "equal timestamps: the greater counter makes the greater version",
            server: s(0, 8, "alice"),
            client: s(0, 7, "alice"),
            now: MIN,
            winner: Side::Server,
            reason: Reason::TiebreakVersion,
            clamped: NONE,
            wording: Some("timestamps within 1s, local has greater version"),
        },
        Case {
            name: "equal timestamps: a delete beats an update with a greater version",
            server: s(0, 9, "zed"),
            client: del(0, 1, "amy"),
            now: MIN,
            winner: Side::Client,
            reason: Reason::DeleteWins,
            clamped: NONE,
            wording: Some("timestamps within 1s, remote is a delete"),
        },
        Case {
            name: "a delete against a much newer update: the update wins",
            server: del(-30 * SEC, 1, "alice"),
            client: s(0, 2, "bob"),
            now: MIN,
            winner: Side::Client,
            reason: Reason::NewerOnClient,
            clamped: NONE,
            wording: Some("remote has newer timestamp"),
        },
        Case {
            name: "a newer delete against an update: the delete wins as the newer edit",
            server: s(-30 * SEC, 1, "alice"),
            client: del(0, 2, "bob"),
            now: MIN,
            winner: Side::Client,
            reason: Reason::NewerOnClient,
            clamped: NONE,
            wording: Some("remote has newer timestamp"),
        },
        Case {
            name: "two tombstones within 1 s: the greater version",
            server: del(0, 1, "alice"),
            client: del(300_000, 2, "bob"),
            now: MIN,
            winner: Side::Client,
            reason: Reason::TiebreakVersion,
            clamped: NONE,
            wording: Some("timestamps within 1s, remote has greater version"),
        },
        Case {
            name: "clock skew: a client an hour in the future is clamped but still newer",
            server: s(-10 * SEC, 1, "alice"),
            client: s(60 * MIN, 2, "fast-clock"),
            now: 0,
            winner: Side::Client,
            reason: Reason::NewerOnClient,
            clamped: Clamped {
                server: false,
                client: true,
            },
            wording: Some("remote has newer timestamp"),
        },
        Case {
            name: "clock skew: clamping brings a future update within 1 s of a delete, which wins",
            server: del(5 * MIN - 500_000, 1, "alice"),
            client: s(60 * MIN, 2, "fast-clock"),
            now: 0,
            winner: Side::Server,
            reason: Reason::DeleteWins,
            clamped: Clamped {
                server: false,
                client: true,
            },
            wording: Some("timestamps within 1s, local is a delete"),
        },
        Case {
            name: "clock skew: a future server edit is clamped and loses to a client edit made just before the limit",
            server: s(20 * MIN, 1, "fast-clock"),
            client: del(5 * MIN - 1, 2, "bob"),
            now: 0,
            winner: Side::Client,
            reason: Reason::DeleteWins,
            clamped: Clamped {
                server: true,
                client: false,
            },
            wording: Some("timestamps within 1s, remote is a delete"),
        },
        Case {
            name: "clock skew: both in the future, both clamped to the same instant: version decides",
            server: s(90 * MIN, 1, "alice"),
            client: s(60 * MIN, 2, "bob"),
            now: 0,
            winner: Side::Server,
            reason: Reason::TiebreakVersion,
            clamped: Clamped {
                server: true,
                client: true,
            },
            wording: Some("timestamps within 1s, local has greater version"),
        },
        Case {
            name: "exactly at the skew limit is not clamped",
            server: s(0, 1, "alice"),
            client: s(5 * MIN, 2, "bob"),
            now: 0,
            winner: Side::Client,
            reason: Reason::NewerOnClient,
            clamped: NONE,
            wording: Some("remote has newer timestamp"),
        },
    ]
}

#[test]
fn rule_cases() {
    for case in cases() {
        let (server, client) = build_pair(&case);
        let now = plus(t0(), case.now);
        let d = decide(&server, &client, now, DEFAULT_SKEW_ALLOWANCE);
        assert_eq!(d.winner, case.winner, "{}: winner", case.name);
        assert_eq!(d.reason, case.reason, "{}: reason", case.name);
        assert_eq!(d.clamped, case.clamped, "{}: clamped", case.name);
        assert_eq!(d.loser(), case.winner.other(), "{}: loser", case.name);

        // The same entity wins with the arguments swapped; only labels change.
        let swapped = decide(&client, &server, now, DEFAULT_SKEW_ALLOWANCE);
        assert_eq!(swapped, d.swapped(), "{}: swapped", case.name);

        // resolve() under last-write-wins agrees, and reports in the reference's words.
        let r = resolve(
            &server,
            &client,
            now,
            &ResolverConfig::default(),
            &NoAncestry,
        );
        assert_eq!(r.reason(), case.reason, "{}: resolve reason", case.name);
        assert_eq!(r.clamped(), case.clamped, "{}: resolve clamped", case.name);
        assert_eq!(r.wording(), case.wording, "{}: wording", case.name);
        let info = conflict_info(&server, &client, &r);
        match (case.reason, case.winner) {
            (Reason::FastForward, Side::Client) => {
                assert_eq!(r, Resolution::FastForward, "{}", case.name);
                assert!(info.is_none(), "{}", case.name);
            }
            (Reason::FastForward, Side::Server) => {
                assert!(!r.is_conflict(), "{}", case.name);
                assert!(info.is_none(), "{}", case.name);
            }
            _ => {
                let Resolution::Winner {
                    winner,
                    loser,
                    strategy,
                    fallback,
                    ..
                } = r
                else {
                    panic!("{}: expected a winner, got {r:?}", case.name);
                };
                assert_eq!((winner, loser), (case.winner, case.winner.other()));
                assert_eq!(strategy, Strategy::LastWriteWins);
                assert_eq!(fallback, None);
                let info = info.expect("a conflict is reported");
                assert_eq!(info.entity_id.as_str(), ID);
                assert_eq!(info.local_version, server.version);
                assert_eq!(info.remote_version, client.version);
                assert_eq!(
                    info.resolved_version,
                    case.winner.pick(&server, &client).version
                );
                assert_eq!(Some(info.resolution_strategy.as_str()), case.wording);
                assert_eq!(info.reason.as_deref(), Some(case.reason.as_str()));
            }
        }
    }
}

#[test]
fn skew_allowance_is_configurable() {
    let server = entity(ID, &ver(t0(), 1, "alice"), &[], json!({}));
    let client = entity(ID, &ver(plus(t0(), 3 * SEC), 2, "bob"), &[], json!({}));
    let now = plus(t0(), 2 * SEC);
    // Default allowance: the client's edit one second ahead of "now" is not clamped.
    let d = decide(&server, &client, now, DEFAULT_SKEW_ALLOWANCE);
    assert_eq!((d.winner, d.reason), (Side::Client, Reason::NewerOnClient));
    assert!(!d.clamped.any());
    // No allowance: clamped to "now", which is still 2 s after the server's edit.
    let d = decide(&server, &client, now, time::Duration::ZERO);
    assert_eq!((d.winner, d.reason), (Side::Client, Reason::NewerOnClient));
    assert!(d.clamped.client);
    // No allowance and "now" 0.5 s after the server's edit: inside the window.
    let d = decide(&server, &client, plus(t0(), 500_000), time::Duration::ZERO);
    assert_eq!(
        (d.winner, d.reason),
        (Side::Client, Reason::TiebreakVersion)
    );
    let config = ResolverConfig::default().with_skew_allowance(time::Duration::ZERO);
    let r = resolve(&server, &client, plus(t0(), 500_000), &config, &NoAncestry);
    assert_eq!(r.reason(), Reason::TiebreakVersion);
    assert!(r.clamped().client);
}

#[test]
fn clamping_does_not_rewrite_the_stored_values() {
    let server = entity(ID, &ver(t0(), 1, "alice"), &[], json!({}));
    let future = plus(t0(), 24 * 60 * MIN);
    let client = entity(ID, &ver(future, 2, "bob"), &[], json!({}));
    let before = client.clone();
    let r = resolve(
        &server,
        &client,
        t0(),
        &ResolverConfig::default(),
        &NoAncestry,
    );
    assert!(r.clamped().client);
    assert_eq!(client, before);
    assert_eq!(client.updated_at, future);
    // The reported resolved version is the stored one, not a clamped rewrite.
    let info = conflict_info(&server, &client, &r).unwrap();
    assert_eq!(info.resolved_version, before.version);
}
