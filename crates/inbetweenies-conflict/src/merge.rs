//! Three-way merge of two versions over their common ancestor, and deterministic merge versions.

use inbetweenies_proto::{Entity, JsonObject, Timestamp, Version};
use sha2::{Digest as _, Sha256};

use crate::rule::{ordering_time, Decision, Side};

/// The outcome of merging two live versions over their common ancestor.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeOutcome {
    /// The new version, parented on both sides.
    pub entity: Entity,
    /// Keys (of `content`, plus the pseudo-keys `name`, `entity_type` and
    /// `source_type` for those fields) that both sides changed differently;
    /// each took the value of the side the rule picks.
    pub conflicting_keys: Vec<String>,
}

/// Merges two live (non-tombstone) versions of one id over their common `ancestor`.
///
/// Key by key over `content` (and over the fields `name`, `entity_type`,
/// `source_type`): a key changed on one side only takes that side's value
/// (a removed key stays removed); a key both sides changed to the same value
/// takes it; a key both sides changed differently takes the value of the
/// side `rule` picks. Only top-level keys are compared; a nested object is
/// one value.
///
/// The result is deterministic and does not depend on which side is which
/// beyond `rule`: see [`merge_version`] for its version; its
/// `parent_versions` are both sides' versions in lexical order; its
/// `user_id` is the rule winner's; its `created_at` the earlier of both.
/// Key order follows the rule winner's content, then the loser's extra keys.
///
/// Tombstones are the caller's business: a merge never resurrects a delete,
/// so the resolver lets a lone tombstone win before merging.
pub fn three_way_merge(
    ancestor: &Entity,
    server: &Entity,
    client: &Entity,
    rule: Decision,
    now: Timestamp,
    skew_allowance: time::Duration,
) -> MergeOutcome {
    let (winner, loser) = match rule.winner {
        Side::Server => (server, client),
        Side::Client => (client, server),
    };
    let mut conflicting_keys = Vec::new();
    let mut content = JsonObject::new();
    let keys = winner
        .content
        .keys()
        .chain(
            loser
                .content
                .keys()
                .filter(|k| !winner.content.contains_key(*k)),
        )
        .chain(
            ancestor
                .content
                .keys()
                .filter(|k| !winner.content.contains_key(*k) && !loser.content.contains_key(*k)),
        );
    for key in keys {
        let w = winner.content.get(key);
        let l = loser.content.get(key);
        let a = ancestor.content.get(key);
        let (value, conflict) = merge_value(a, w, l);
        if conflict {
            conflicting_keys.push(key.clone());
        }
        if let Some(v) = value {
            content.insert(key.clone(), v.clone());
        }
    }
    let name = merge_field(
        "name",
        &ancestor.name,
        &winner.name,
        &loser.name,
        &mut conflicting_keys,
    );
    let entity_type = merge_field(
        "entity_type",
        &ancestor.entity_type,
        &winner.entity_type,
        &loser.entity_type,
        &mut conflicting_keys,
    );
    let source_type = merge_field(
        "source_type",
        &ancestor.source_type,
        &winner.source_type,
        &loser.source_type,
        &mut conflicting_keys,
    );

    let (ts, _) = ordering_time(server.updated_at, now, skew_allowance);
    let (tc, _) = ordering_time(client.updated_at, now, skew_allowance);
    let updated_at = merge_timestamp(ts.max(tc));
    let version = merge_version(
        &server.version,
        &client.version,
        updated_at,
        &winner.user_id,
    );
    let mut parents = [server.version.clone(), client.version.clone()];
    parents.sort();
    let entity = Entity {
        id: server.id.clone(),
        version,
        entity_type,
        name,
        content,
        source_type,
        user_id: winner.user_id.clone(),
        parent_versions: parents.to_vec(),
        created_at: server.created_at.min(client.created_at),
        updated_at,
    };
    MergeOutcome {
        entity,
        conflicting_keys,
    }
}

/// Three-way choice for one key: `(value, both changed differently)`.
/// `w` is the rule winner's value and takes precedence on a conflict.
fn merge_value<'a, T: PartialEq>(
    a: Option<&'a T>,
    w: Option<&'a T>,
    l: Option<&'a T>,
) -> (Option<&'a T>, bool) {
    if w == l || l == a {
        (w, false)
    } else if w == a {
        (l, false)
    } else {
        (w, true)
    }
}

/// Three-way choice for one whole field, noting a conflict under `name`.
fn merge_field<T: PartialEq + Clone>(
    name: &str,
    a: &T,
    w: &T,
    l: &T,
    conflicting_keys: &mut Vec<String>,
) -> T {
    let (v, conflict) = merge_value(Some(a), Some(w), Some(l));
    if conflict {
        conflicting_keys.push(name.to_owned());
    }
    v.unwrap_or(w).clone()
}

/// The edit time of a merge version: one microsecond after the later
/// (clamped) edit time of the two sides.
fn merge_timestamp(later_micros: i64) -> Timestamp {
    let micros = later_micros.saturating_add(1);
    Timestamp::from_unix_micros(micros)
        .or_else(|_| Timestamp::from_unix_micros(later_micros))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A deterministic version string for a new version parented on `a` and `b`.
///
/// `{at}-{counter}-{user_id}`, where the six-digit counter is derived from
/// SHA-256 over both parent versions in lexical order, so the same inputs
/// always give byte-identical output, whichever order they come in, and two
/// different merges made in the same microsecond are told apart. No clock is
/// read and no process-wide counter is used.
pub fn merge_version(a: &Version, b: &Version, at: Timestamp, user_id: &str) -> Version {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut h = Sha256::new();
    h.update(first.as_str().as_bytes());
    h.update([0x1f]);
    h.update(second.as_str().as_bytes());
    let d = h.finalize();
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&d[..8]);
    let counter = u64::from_be_bytes(eight) % 1_000_000;
    Version::new(format!("{at}-{counter:06}-{user_id}"))
}
