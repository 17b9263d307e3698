//! The canonical rule (DESIGN rule 4): fast-forward, 1-second tiebreak, newer wins, clamp.

use std::fmt;

use inbetweenies_proto::{Entity, Timestamp};

/// The 1-second tiebreak window, in microseconds. Two edit times whose
/// difference is *strictly less* than this are "within 1 s"; exactly one
/// second apart is outside the window and the newer edit wins.
pub const TIEBREAK_WINDOW_MICROS: i64 = 1_000_000;

/// The default clock-skew allowance: 5 minutes.
pub const DEFAULT_SKEW_ALLOWANCE: time::Duration = time::Duration::minutes(5);

/// One side of a conflict.
///
/// The server's current latest version is [`Side::Server`] (the Python
/// reference calls it "local"); the pushed version is [`Side::Client`]
/// ("remote").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The server's current latest version ("local" in the reference).
    Server,
    /// The pushed version ("remote" in the reference).
    Client,
}

impl Side {
    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Server => Side::Client,
            Side::Client => Side::Server,
        }
    }

    /// The reference's word for this side: `local` (server) or `remote` (client).
    pub fn reference_word(self) -> &'static str {
        match self {
            Side::Server => "local",
            Side::Client => "remote",
        }
    }

    /// Picks this side's value out of a `(server, client)` pair.
    pub fn pick<T>(self, server: T, client: T) -> T {
        match self {
            Side::Server => server,
            Side::Client => client,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Server => "server",
            Side::Client => "client",
        })
    }
}

/// Why a conflict ended the way it did. [`Reason::as_str`] is the
/// machine-readable `reason` of [`inbetweenies_proto::ConflictInfo`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The server's edit is newer by at least 1 s (`newer_on_server`).
    NewerOnServer,
    /// The client's edit is newer by at least 1 s (`newer_on_client`).
    NewerOnClient,
    /// The edits are within 1 s and neither is a lone tombstone: the only
    /// version carrying a timestamp won, or (both or neither carrying one) the
    /// lexically greater (`tiebreak_version`).
    TiebreakVersion,
    /// Exactly one side is a tombstone and it won (`delete_wins`): within 1 s
    /// under the rule, or at any distance under a three-way merge, which never
    /// resurrects a deletion.
    DeleteWins,
    /// One version descends directly from the other: no conflict (`fast_forward`).
    FastForward,
    /// A three-way merge made a new version parented on both (`merged`).
    Merged,
    /// Queued for manual review, both versions intact (`manual`).
    Manual,
    /// A user-supplied [`crate::CustomResolver`] chose (`custom`).
    Custom,
}

impl Reason {
    /// The machine-readable name, e.g. `newer_on_server`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NewerOnServer => "newer_on_server",
            Reason::NewerOnClient => "newer_on_client",
            Reason::TiebreakVersion => "tiebreak_version",
            Reason::DeleteWins => "delete_wins",
            Reason::FastForward => "fast_forward",
            Reason::Merged => "merged",
            Reason::Manual => "manual",
            Reason::Custom => "custom",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which sides' edit times were clamped to `now + skew_allowance` for ordering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Clamped {
    /// The server's edit time lay beyond `now + skew_allowance`.
    pub server: bool,
    /// The client's edit time lay beyond `now + skew_allowance`.
    pub client: bool,
}

impl Clamped {
    /// Whether either side was clamped.
    pub fn any(self) -> bool {
        self.server || self.client
    }

    /// The same flags with the sides' labels swapped.
    pub fn swapped(self) -> Clamped {
        Clamped {
            server: self.client,
            client: self.server,
        }
    }
}

/// What the canonical rule decided between two versions of one id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// The side whose version is (or stays) the latest.
    pub winner: Side,
    /// Why.
    pub reason: Reason,
    /// Whose edit times were clamped for ordering.
    pub clamped: Clamped,
}

impl Decision {
    /// The losing side.
    pub fn loser(&self) -> Side {
        self.winner.other()
    }

    /// The same decision seen with the arguments swapped: only the labels change.
    pub fn swapped(self) -> Decision {
        Decision {
            winner: self.winner.other(),
            reason: match self.reason {
                Reason::NewerOnServer => Reason::NewerOnClient,
                Reason::NewerOnClient => Reason::NewerOnServer,
                other => other,
            },
            clamped: self.clamped.swapped(),
        }
    }
}

/// An edit time as used for ordering: clamped to `now + skew_allowance`.
///
/// Returns the microseconds since the epoch to order by and whether the
/// value was clamped. The entity itself is never changed.
pub fn ordering_time(
    updated_at: Timestamp,
    now: Timestamp,
    skew_allowance: time::Duration,
) -> (i64, bool) {
    let limit = now
        .unix_micros()
        .saturating_add(duration_micros(skew_allowance));
    let t = updated_at.unix_micros();
    if t > limit {
        (limit, true)
    } else {
        (t, false)
    }
}

fn duration_micros(d: time::Duration) -> i64 {
    i64::try_from(d.whole_microseconds()).unwrap_or(if d.is_negative() {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// Whether `child` names `parent`'s version among its `parent_versions`.
pub fn is_fast_forward(parent: &Entity, child: &Entity) -> bool {
    child.parent_versions.contains(&parent.version)
}

/// The canonical rule over two versions of the same id.
///
/// In order:
/// 1. if `client` names `server`'s version as a parent, it is a
///    fast-forward and the client wins (and, symmetrically, if `server`
///    names `client`'s version, the server wins: the pushed version is
///    already superseded);
/// 2. both edit times are clamped to `now + skew_allowance`;
/// 3. if they differ by less than 1 s ([`TIEBREAK_WINDOW_MICROS`]): a lone
///    tombstone wins (`delete_wins`); else, if exactly one `version` carries
///    the timestamp form ([`is_timestamped`]), it wins; else (both or
///    neither do) the lexically greater `version` wins (`tiebreak_version`);
/// 4. otherwise the newer edit wins (`newer_on_server` / `newer_on_client`).
///
/// An edit time is the entity's `updated_at`: the timestamp inside its
/// version, or for an opaque version (one written by another client, e.g.
/// `v-1796118705966`) the `updated_at` its change carried, else the server's
/// receipt time (see `EntityChange::edit_time`). So an opaque version is
/// ordered by when it was made or received, never merely because its string
/// sorts after a timestamped one.
///
/// Swapping the arguments only swaps the labels (see [`Decision::swapped`]):
/// the same entity wins either way. Two identical version strings name the
/// same immutable row; the server's copy is kept.
pub fn decide(
    server: &Entity,
    client: &Entity,
    now: Timestamp,
    skew_allowance: time::Duration,
) -> Decision {
    let (ts, cs) = ordering_time(server.updated_at, now, skew_allowance);
    let (tc, cc) = ordering_time(client.updated_at, now, skew_allowance);
    let clamped = Clamped {
        server: cs,
        client: cc,
    };
    let client_ff = is_fast_forward(server, client);
    let server_ff = is_fast_forward(client, server);
    if client_ff != server_ff {
        return Decision {
            winner: if client_ff {
                Side::Client
            } else {
                Side::Server
            },
            reason: Reason::FastForward,
            clamped,
        };
    }
    let (winner, reason) = decide_times(
        EditSide {
            time: ts,
            deleted: server.is_deleted(),
            timestamped: is_timestamped(server),
            version: server.version.as_str(),
        },
        EditSide {
            time: tc,
            deleted: client.is_deleted(),
            timestamped: is_timestamped(client),
            version: client.version.as_str(),
        },
    );
    Decision {
        winner,
        reason,
        clamped,
    }
}

/// Whether an entity's version carries the timestamp form (PROTOCOL §3.3);
/// a version that does not is *opaque*.
pub fn is_timestamped(e: &Entity) -> bool {
    e.version.parse().is_ok()
}

/// One side of the time part of the rule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EditSide<'a> {
    /// The ordering time (clamped edit time), in microseconds.
    pub(crate) time: i64,
    /// Whether the version is a tombstone.
    pub(crate) deleted: bool,
    /// Whether the version carries the timestamp form.
    pub(crate) timestamped: bool,
    /// The version string.
    pub(crate) version: &'a str,
}

/// The time part of the rule.
pub(crate) fn decide_times(server: EditSide<'_>, client: EditSide<'_>) -> (Side, Reason) {
    let (ts, ds, vs) = (server.time, server.deleted, server.version);
    let (tc, dc, vc) = (client.time, client.deleted, client.version);
    if ts.abs_diff(tc) < TIEBREAK_WINDOW_MICROS as u64 {
        if ds != dc {
            let winner = if ds { Side::Server } else { Side::Client };
            (winner, Reason::DeleteWins)
        } else if server.timestamped != client.timestamped {
            let winner = if client.timestamped {
                Side::Client
            } else {
                Side::Server
            };
            (winner, Reason::TiebreakVersion)
        } else if vc > vs {
            (Side::Client, Reason::TiebreakVersion)
        } else {
            (Side::Server, Reason::TiebreakVersion)
        }
    } else if tc > ts {
        (Side::Client, Reason::NewerOnClient)
    } else {
        (Side::Server, Reason::NewerOnServer)
    }
}

/// The reference's `resolution_strategy` wording for a decision by the rule.
///
/// `fast_forward` is not a conflict and has no wording (the reference never
/// reports one); it returns `None`. See [`crate::Resolution::wording`] for
/// every outcome.
pub fn rule_wording(winner: Side, reason: Reason) -> Option<&'static str> {
    Some(match (reason, winner) {
        (Reason::NewerOnServer, _) => "local has newer timestamp",
        (Reason::NewerOnClient, _) => "remote has newer timestamp",
        (Reason::TiebreakVersion, Side::Server) => {
            "timestamps within 1s, local has greater version"
        }
        (Reason::TiebreakVersion, Side::Client) => {
            "timestamps within 1s, remote has greater version"
        }
        (Reason::DeleteWins, Side::Server) => "timestamps within 1s, local is a delete",
        (Reason::DeleteWins, Side::Client) => "timestamps within 1s, remote is a delete",
        (Reason::Merged, _) => "merged",
        (Reason::Manual, _) => "queued for manual review",
        (Reason::Custom, Side::Server) => "custom resolver chose local",
        (Reason::Custom, Side::Client) => "custom resolver chose remote",
        (Reason::FastForward, _) => return None,
    })
}

#[cfg(test)]
mod tests {
    //! The ordering rule for every combination of timestamped and opaque
    //! versions, edit time sent or not, inside and outside the 1-second
    //! window, and tombstones (PROTOCOL §8.2).

    use inbetweenies_proto::{EntityChange, EntityType, JsonObject, SourceType, Version};
    use serde_json::Value;

    use super::*;

    /// How a side's version names its edit time.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        /// Our timestamp form: the edit time is inside the version.
        Stamped,
        /// Opaque, with `updated_at` sent on the change.
        OpaqueSent,
        /// Opaque, no `updated_at`: the edit time is the receipt time.
        OpaqueReceived,
    }

    const KINDS: [Kind; 3] = [Kind::Stamped, Kind::OpaqueSent, Kind::OpaqueReceived];

    fn at(micros: i64) -> Timestamp {
        Timestamp::from_unix_micros(micros).expect("in range")
    }

    /// 2026-06-15T09:41:02+00:00.
    const T0: i64 = 1_781_516_462_000_000;

    /// One side's stored form, made as a server makes it from the wire.
    fn side(kind: Kind, edit: i64, deleted: bool, tag: &str) -> Entity {
        let mut content = JsonObject::new();
        if deleted {
            content.insert("deleted".into(), Value::Bool(true));
        }
        let (version, updated_at, receipt) = match kind {
            Kind::Stamped => (
                Version::generate(at(edit), tag),
                None,
                at(edit - 3_600_000_000),
            ),
            Kind::OpaqueSent => (
                Version::new(format!("v-{tag}")),
                Some(at(edit)),
                at(edit - 3_600_000_000),
            ),
            Kind::OpaqueReceived => (Version::new(format!("v-{tag}")), None, at(edit)),
        };
        let change = EntityChange {
            id: "e".into(),
            version,
            entity_type: EntityType::Device,
            name: "lamp".into(),
            content,
            source_type: SourceType::Manual,
            user_id: "u".into(),
            parent_versions: Vec::new(),
            checksum: None,
            created_at: None,
            updated_at,
        };
        let e = change.to_entity(None, receipt);
        assert_eq!(e.updated_at, at(edit), "{kind:?}: the edit time's source");
        e
    }

    #[test]
    fn every_combination_orders_as_documented() {
        let now = at(T0 + 10_000_000);
        let mut checked = 0;
        for sk in KINDS {
            for ck in KINDS {
                // (client edit - server edit) in µs: inside the window either
                // way, and outside it either way.
                for gap in [300_000_i64, -300_000, 5_000_000, -5_000_000] {
                    for (sd, cd) in [(false, false), (true, false), (false, true), (true, true)] {
                        // The client's tag sorts after the server's unless the
                        // gap is negative, so both lexical orders are seen.
                        let (stag, ctag) = if gap > 0 { ("a", "b") } else { ("b", "a") };
                        let server = side(sk, T0, sd, stag);
                        let client = side(ck, T0 + gap, cd, ctag);
                        let d = decide(&server, &client, now, DEFAULT_SKEW_ALLOWANCE);
                        let within = gap.abs() < TIEBREAK_WINDOW_MICROS;
                        let (winner, reason) = if !within {
                            if gap > 0 {
                                (Side::Client, Reason::NewerOnClient)
                            } else {
                                (Side::Server, Reason::NewerOnServer)
                            }
                        } else if sd != cd {
                            (
                                if sd { Side::Server } else { Side::Client },
                                Reason::DeleteWins,
                            )
                        } else if (sk == Kind::Stamped) != (ck == Kind::Stamped) {
                            let w = if ck == Kind::Stamped {
                                Side::Client
                            } else {
                                Side::Server
                            };
                            (w, Reason::TiebreakVersion)
                        } else if client.version > server.version {
                            (Side::Client, Reason::TiebreakVersion)
                        } else {
                            (Side::Server, Reason::TiebreakVersion)
                        };
                        let case = format!("{sk:?} vs {ck:?}, gap {gap}, deleted {sd}/{cd}");
                        assert_eq!((d.winner, d.reason), (winner, reason), "{case}");
                        // Swapping the sides only swaps the labels.
                        let back = decide(&client, &server, now, DEFAULT_SKEW_ALLOWANCE);
                        assert_eq!(back, d.swapped(), "{case} (swapped)");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 3 * 3 * 4 * 4);
    }

    #[test]
    fn an_opaque_version_never_wins_by_sorting_after_a_timestamped_one() {
        // "nope" and "v-…" sort after every "2026-…" version; inside the window
        // the timestamped side wins all the same, whichever side it is on.
        let now = at(T0 + 1_000_000);
        let stamped = side(Kind::Stamped, T0, false, "alice");
        for opaque in [
            side(Kind::OpaqueReceived, T0 + 400_000, false, "1796118705966"),
            side(Kind::OpaqueSent, T0 + 400_000, false, "1796118705966"),
        ] {
            assert!(opaque.version > stamped.version);
            let d = decide(&stamped, &opaque, now, DEFAULT_SKEW_ALLOWANCE);
            assert_eq!(
                (d.winner, d.reason),
                (Side::Server, Reason::TiebreakVersion)
            );
            let d = decide(&opaque, &stamped, now, DEFAULT_SKEW_ALLOWANCE);
            assert_eq!(
                (d.winner, d.reason),
                (Side::Client, Reason::TiebreakVersion)
            );
        }
        let mut nope = side(Kind::OpaqueReceived, T0 + 200_000, false, "x");
        nope.version = Version::new("nope");
        let d = decide(&stamped, &nope, now, DEFAULT_SKEW_ALLOWANCE);
        assert_eq!(d.winner, Side::Server);
        // Outside the window the newer edit time wins, opaque or not.
        let late = side(Kind::OpaqueReceived, T0 + 2_000_000, false, "late");
        let d = decide(&stamped, &late, at(T0 + 3_000_000), DEFAULT_SKEW_ALLOWANCE);
        assert_eq!((d.winner, d.reason), (Side::Client, Reason::NewerOnClient));
    }

    #[test]
    fn an_opaque_edit_time_from_the_future_is_clamped() {
        let now = at(T0);
        let stamped = side(Kind::Stamped, T0, false, "alice");
        // Sent an hour ahead: clamped to now + 5 min, so it still wins, but
        // flagged; a stamped edit at the clamp limit would tie in the window.
        let ahead = side(Kind::OpaqueSent, T0 + 3_600_000_000, false, "ahead");
        let d = decide(&stamped, &ahead, now, DEFAULT_SKEW_ALLOWANCE);
        assert_eq!(d.winner, Side::Client);
        assert!(d.clamped.client && !d.clamped.server);
        assert!(is_timestamped(&stamped) && !is_timestamped(&ahead));
    }
}
