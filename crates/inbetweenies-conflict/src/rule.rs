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
    /// The edits are within 1 s; the lexically greater version won (`tiebreak_version`).
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
///    tombstone wins (`delete_wins`), else the lexically greater `version`
///    wins (`tiebreak_version`);
/// 4. otherwise the newer edit wins (`newer_on_server` / `newer_on_client`).
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
        (ts, server.is_deleted(), server.version.as_str()),
        (tc, client.is_deleted(), client.version.as_str()),
    );
    Decision {
        winner,
        reason,
        clamped,
    }
}

/// The time part of the rule over `(ordering time, is tombstone, version)` triples.
pub(crate) fn decide_times(server: (i64, bool, &str), client: (i64, bool, &str)) -> (Side, Reason) {
    let (ts, ds, vs) = server;
    let (tc, dc, vc) = client;
    if ts.abs_diff(tc) < TIEBREAK_WINDOW_MICROS as u64 {
        if ds != dc {
            let winner = if ds { Side::Server } else { Side::Client };
            (winner, Reason::DeleteWins)
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
