//! Strategies, resolver configuration, the resolution outcome and its wire report.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use inbetweenies_proto::{ConflictInfo, Entity, EntityType, JsonObject, Timestamp};

use crate::ancestry::{common_ancestor, Ancestry};
use crate::merge::{merge_version, three_way_merge};
use crate::rule::{
    decide, ordering_time, rule_wording, Clamped, Decision, Reason, Side, DEFAULT_SKEW_ALLOWANCE,
};

/// How conflicts on one entity type are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// The canonical rule picks a whole version (the default).
    #[default]
    LastWriteWins,
    /// Merge key by key over the common ancestor; keys both sides changed
    /// follow the rule.
    ThreeWayMerge,
    /// Queue for review; nothing is decided.
    Manual,
    /// Ask the configured [`CustomResolver`].
    Custom,
}

impl Strategy {
    /// The strategy's name, e.g. `last_write_wins`.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LastWriteWins => "last_write_wins",
            Strategy::ThreeWayMerge => "three_way_merge",
            Strategy::Manual => "manual",
            Strategy::Custom => "custom",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the configured strategy handed the decision to last-write-wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Fallback {
    /// A three-way merge found no common ancestor.
    NoCommonAncestor,
    /// A three-way merge of two tombstones: nothing to merge.
    BothDeleted,
    /// The strategy is [`Strategy::Custom`] but no resolver is configured.
    NoCustomResolver,
    /// The custom resolver deferred to the rule ([`CustomChoice::Rule`]).
    CustomDeferred,
}

impl Fallback {
    /// A short lowercase description.
    pub fn as_str(self) -> &'static str {
        match self {
            Fallback::NoCommonAncestor => "no common ancestor",
            Fallback::BothDeleted => "both sides are deletes",
            Fallback::NoCustomResolver => "no custom resolver configured",
            Fallback::CustomDeferred => "custom resolver deferred to the rule",
        }
    }
}

/// What a [`CustomResolver`] sees.
#[derive(Debug)]
pub struct CustomInput<'a> {
    /// The server's current latest version.
    pub server: &'a Entity,
    /// The pushed version.
    pub client: &'a Entity,
    /// What the canonical rule would decide.
    pub rule: Decision,
    /// The caller's "now".
    pub now: Timestamp,
    /// The configuration in force.
    pub config: &'a ResolverConfig,
}

/// What a [`CustomResolver`] decided.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CustomChoice {
    /// Keep this side's version as the latest (reason `custom`).
    Keep(Side),
    /// Make a new version with this content, parented on both sides (reason
    /// `merged`); the other fields come from the rule's winner.
    Content(JsonObject),
    /// Let the canonical rule decide.
    Rule,
    /// Do a three-way merge, as [`Strategy::ThreeWayMerge`] would.
    Merge,
    /// Queue for manual review.
    Manual,
}

/// A user-supplied resolution policy, selected by [`Strategy::Custom`].
///
/// It must be deterministic (same input, same choice) and must not read the
/// clock: use [`CustomInput::now`].
pub trait CustomResolver: fmt::Debug + Send + Sync {
    /// Decides one conflict.
    fn resolve(&self, input: &CustomInput<'_>) -> CustomChoice;
}

/// Which strategy applies to which entity type, and the rule's parameters.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// The strategy for entity types without an entry in `strategies`.
    pub default_strategy: Strategy,
    /// Per-entity-type strategies (looked up by the server's version's type).
    pub strategies: HashMap<EntityType, Strategy>,
    /// How far past "now" an edit time may lie before it is clamped for ordering.
    pub skew_allowance: time::Duration,
    /// The resolver [`Strategy::Custom`] asks.
    pub custom: Option<Arc<dyn CustomResolver>>,
    /// How many versions a three-way merge may walk on each side looking for
    /// the common ancestor.
    pub max_ancestry_visits: usize,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            default_strategy: Strategy::LastWriteWins,
            strategies: HashMap::new(),
            skew_allowance: DEFAULT_SKEW_ALLOWANCE,
            custom: None,
            max_ancestry_visits: 10_000,
        }
    }
}

impl ResolverConfig {
    /// Sets the strategy for types without their own.
    pub fn with_default_strategy(mut self, strategy: Strategy) -> Self {
        self.default_strategy = strategy;
        self
    }

    /// Sets the strategy for one entity type.
    pub fn with_strategy(mut self, entity_type: EntityType, strategy: Strategy) -> Self {
        self.strategies.insert(entity_type, strategy);
        self
    }

    /// Sets the clock-skew allowance.
    pub fn with_skew_allowance(mut self, skew_allowance: time::Duration) -> Self {
        self.skew_allowance = skew_allowance;
        self
    }

    /// Sets the custom resolver.
    pub fn with_custom(mut self, custom: Arc<dyn CustomResolver>) -> Self {
        self.custom = Some(custom);
        self
    }

    /// The strategy for an entity type.
    pub fn strategy_for(&self, entity_type: &EntityType) -> Strategy {
        self.strategies
            .get(entity_type)
            .copied()
            .unwrap_or(self.default_strategy)
    }
}

/// How a pushed version against the server's current latest was resolved.
#[derive(Clone, Debug, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "one value per conflict, matched by callers; boxing would only add noise"
)]
pub enum Resolution {
    /// The pushed version names the current latest as a parent (or, under a
    /// three-way merge, descends from it): store it as the new latest. Not a
    /// conflict.
    FastForward,
    /// One whole version stays or becomes the latest; the other is kept as a
    /// non-latest version.
    ///
    /// `reason` [`Reason::FastForward`] with `winner` [`Side::Server`] means
    /// the pushed version is already an ancestor of the server's latest: not
    /// a conflict, nothing to change.
    Winner {
        /// The side whose version is the latest afterwards.
        winner: Side,
        /// The other side (always `winner.other()`).
        loser: Side,
        /// Why.
        reason: Reason,
        /// Whose edit times were clamped for ordering.
        clamped: Clamped,
        /// The strategy that decided.
        strategy: Strategy,
        /// Set when the configured strategy handed over to last-write-wins.
        fallback: Option<Fallback>,
    },
    /// A new version parented on both sides: store it as the new latest
    /// (both sides are kept as non-latest versions).
    Merged {
        /// The new version.
        entity: Entity,
        /// Always [`Reason::Merged`].
        reason: Reason,
        /// Whose edit times were clamped for ordering.
        clamped: Clamped,
        /// Keys both sides changed differently (decided by the rule).
        conflicting_keys: Vec<String>,
        /// The strategy that merged ([`Strategy::ThreeWayMerge`] or [`Strategy::Custom`]).
        strategy: Strategy,
    },
    /// Queue for manual review with both versions intact; the server's
    /// version stays the latest until someone decides (see [`resolve_manual`]).
    Manual {
        /// The server's version.
        server: Entity,
        /// The pushed version.
        client: Entity,
        /// What the canonical rule would pick.
        suggestion: Decision,
    },
}

impl Resolution {
    /// The reason (`fast_forward` for [`Resolution::FastForward`]).
    pub fn reason(&self) -> Reason {
        match self {
            Resolution::FastForward => Reason::FastForward,
            Resolution::Winner { reason, .. } | Resolution::Merged { reason, .. } => *reason,
            Resolution::Manual { .. } => Reason::Manual,
        }
    }

    /// Whether this outcome is a conflict to report (not a fast-forward).
    pub fn is_conflict(&self) -> bool {
        self.reason() != Reason::FastForward
    }

    /// The strategy that decided; `None` for a fast-forward.
    pub fn strategy(&self) -> Option<Strategy> {
        match self {
            Resolution::FastForward => None,
            Resolution::Winner { strategy, .. } | Resolution::Merged { strategy, .. } => {
                Some(*strategy)
            }
            Resolution::Manual { .. } => Some(Strategy::Manual),
        }
    }

    /// Whose edit times were clamped for ordering.
    pub fn clamped(&self) -> Clamped {
        match self {
            Resolution::FastForward => Clamped::default(),
            Resolution::Winner { clamped, .. } | Resolution::Merged { clamped, .. } => *clamped,
            Resolution::Manual { suggestion, .. } => suggestion.clamped,
        }
    }

    /// The version that is the latest afterwards, given the two inputs.
    pub fn resolved_version<'a>(
        &'a self,
        server: &'a Entity,
        client: &'a Entity,
    ) -> &'a inbetweenies_proto::Version {
        match self {
            Resolution::FastForward => &client.version,
            Resolution::Winner { winner, .. } => &winner.pick(server, client).version,
            Resolution::Merged { entity, .. } => &entity.version,
            Resolution::Manual { .. } => &server.version,
        }
    }

    /// The reference's `resolution_strategy` wording; `None` when there is
    /// no conflict to report.
    pub fn wording(&self) -> Option<&'static str> {
        match self {
            Resolution::FastForward => None,
            Resolution::Winner {
                winner,
                reason: Reason::DeleteWins,
                strategy: Strategy::ThreeWayMerge,
                ..
            } => Some(match winner {
                Side::Server => "a merge never undoes a delete, local is a delete",
                Side::Client => "a merge never undoes a delete, remote is a delete",
            }),
            Resolution::Winner { winner, reason, .. } => rule_wording(*winner, *reason),
            Resolution::Merged { .. } => Some("merged"),
            Resolution::Manual { .. } => Some("queued for manual review"),
        }
    }
}

/// Builds the wire report of a resolved conflict, or `None` when there is
/// nothing to report (a fast-forward either way).
///
/// `local_version` is the server's, `remote_version` the pushed one's,
/// `resolution_strategy` the reference's wording, `reason` the
/// machine-readable reason (e.g. `newer_on_server`).
pub fn conflict_info(
    server: &Entity,
    client: &Entity,
    resolution: &Resolution,
) -> Option<ConflictInfo> {
    let wording = resolution.wording()?;
    Some(ConflictInfo {
        entity_id: server.id.clone(),
        local_version: server.version.clone(),
        remote_version: client.version.clone(),
        resolution_strategy: wording.to_owned(),
        resolved_version: resolution.resolved_version(server, client).clone(),
        reason: Some(resolution.reason().as_str().to_owned()),
    })
}

/// Resolves a pushed version (`incoming`) against the server's current
/// latest version of the same id (`current`).
///
/// `now` is the caller's clock (never read here); `ancestry` looks up
/// earlier versions for a three-way merge. The strategy is the one
/// configured for `current`'s entity type. Deterministic: the same inputs
/// give the same [`Resolution`], byte for byte.
pub fn resolve(
    current: &Entity,
    incoming: &Entity,
    now: Timestamp,
    config: &ResolverConfig,
    ancestry: &dyn Ancestry,
) -> Resolution {
    let rule = decide(current, incoming, now, config.skew_allowance);
    if rule.reason == Reason::FastForward {
        return match rule.winner {
            Side::Client => Resolution::FastForward,
            Side::Server => winner(rule, Strategy::LastWriteWins, None),
        };
    }
    match config.strategy_for(&current.entity_type) {
        Strategy::LastWriteWins => winner(rule, Strategy::LastWriteWins, None),
        Strategy::ThreeWayMerge => merge(current, incoming, rule, now, config, ancestry),
        Strategy::Manual => manual(current, incoming, rule),
        Strategy::Custom => {
            let Some(custom) = config.custom.as_deref() else {
                return winner(
                    rule,
                    Strategy::LastWriteWins,
                    Some(Fallback::NoCustomResolver),
                );
            };
            let input = CustomInput {
                server: current,
                client: incoming,
                rule,
                now,
                config,
            };
            match custom.resolve(&input) {
                CustomChoice::Keep(side) => Resolution::Winner {
                    winner: side,
                    loser: side.other(),
                    reason: Reason::Custom,
                    clamped: rule.clamped,
                    strategy: Strategy::Custom,
                    fallback: None,
                },
                CustomChoice::Content(content) => {
                    let entity = new_version_with(
                        current,
                        incoming,
                        rule.winner,
                        content,
                        None,
                        now,
                        config.skew_allowance,
                    );
                    Resolution::Merged {
                        entity,
                        reason: Reason::Merged,
                        clamped: rule.clamped,
                        conflicting_keys: Vec::new(),
                        strategy: Strategy::Custom,
                    }
                }
                CustomChoice::Rule => winner(
                    rule,
                    Strategy::LastWriteWins,
                    Some(Fallback::CustomDeferred),
                ),
                CustomChoice::Merge => merge(current, incoming, rule, now, config, ancestry),
                CustomChoice::Manual => manual(current, incoming, rule),
            }
        }
    }
}

/// A [`ResolverConfig`] bundled with [`resolve`].
#[derive(Clone, Debug, Default)]
pub struct Resolver {
    config: ResolverConfig,
}

impl Resolver {
    /// A resolver with this configuration.
    pub fn new(config: ResolverConfig) -> Self {
        Resolver { config }
    }

    /// The configuration.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// See [`resolve`].
    pub fn resolve(
        &self,
        current: &Entity,
        incoming: &Entity,
        now: Timestamp,
        ancestry: &dyn Ancestry,
    ) -> Resolution {
        resolve(current, incoming, now, &self.config, ancestry)
    }
}

fn winner(rule: Decision, strategy: Strategy, fallback: Option<Fallback>) -> Resolution {
    Resolution::Winner {
        winner: rule.winner,
        loser: rule.winner.other(),
        reason: rule.reason,
        clamped: rule.clamped,
        strategy,
        fallback,
    }
}

fn manual(current: &Entity, incoming: &Entity, rule: Decision) -> Resolution {
    Resolution::Manual {
        server: current.clone(),
        client: incoming.clone(),
        suggestion: rule,
    }
}

fn merge(
    current: &Entity,
    incoming: &Entity,
    rule: Decision,
    now: Timestamp,
    config: &ResolverConfig,
    ancestry: &dyn Ancestry,
) -> Resolution {
    match (current.is_deleted(), incoming.is_deleted()) {
        (true, true) => {
            return winner(rule, Strategy::LastWriteWins, Some(Fallback::BothDeleted));
        }
        (true, false) | (false, true) => {
            // A merge never resurrects a deletion: the tombstone stays latest.
            let side = if current.is_deleted() {
                Side::Server
            } else {
                Side::Client
            };
            return Resolution::Winner {
                winner: side,
                loser: side.other(),
                reason: Reason::DeleteWins,
                clamped: rule.clamped,
                strategy: Strategy::ThreeWayMerge,
                fallback: None,
            };
        }
        (false, false) => {}
    }
    let Some(ancestor) = common_ancestor(current, incoming, ancestry, config.max_ancestry_visits)
    else {
        return winner(
            rule,
            Strategy::LastWriteWins,
            Some(Fallback::NoCommonAncestor),
        );
    };
    if ancestor.version == current.version {
        return Resolution::FastForward;
    }
    if ancestor.version == incoming.version {
        return Resolution::Winner {
            winner: Side::Server,
            loser: Side::Client,
            reason: Reason::FastForward,
            clamped: rule.clamped,
            strategy: Strategy::ThreeWayMerge,
            fallback: None,
        };
    }
    let out = three_way_merge(
        &ancestor,
        current,
        incoming,
        rule,
        now,
        config.skew_allowance,
    );
    Resolution::Merged {
        entity: out.entity,
        reason: Reason::Merged,
        clamped: rule.clamped,
        conflicting_keys: out.conflicting_keys,
        strategy: Strategy::ThreeWayMerge,
    }
}

/// What a person decided about a conflict queued for manual review.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ManualChoice {
    /// Keep this side's content.
    Keep(Side),
    /// Use this content (e.g. merged by hand).
    Content(JsonObject),
}

/// Turns a person's decision on a queued conflict into a new version
/// parented on both sides, which then fast-forwards either of them.
///
/// The new version is made by `user_id` at `at` (or one microsecond after
/// the later of the two edit times, if that is later, so it sorts after
/// both); its version string is deterministic (see
/// [`crate::merge_version`]). Its other fields come from the kept side, or
/// from the server's version for [`ManualChoice::Content`].
pub fn resolve_manual(
    server: &Entity,
    client: &Entity,
    choice: ManualChoice,
    user_id: &str,
    at: Timestamp,
) -> Entity {
    let (base, content) = match choice {
        ManualChoice::Keep(side) => (side, side.pick(server, client).content.clone()),
        ManualChoice::Content(content) => (Side::Server, content),
    };
    new_version_with(
        server,
        client,
        base,
        content,
        Some(user_id),
        at,
        // No clamping: the new version must sort after both edits.
        time::Duration::MAX,
    )
}

/// A new version of the id parented on both sides, with `content` and the
/// other fields of `base`, stamped one microsecond after the later edit
/// (clamped) or at `now` if `user_id` is given and `now` is later.
fn new_version_with(
    server: &Entity,
    client: &Entity,
    base: Side,
    content: JsonObject,
    user_id: Option<&str>,
    now: Timestamp,
    skew_allowance: time::Duration,
) -> Entity {
    let base_entity = base.pick(server, client);
    let (ts, _) = ordering_time(server.updated_at, now, skew_allowance);
    let (tc, _) = ordering_time(client.updated_at, now, skew_allowance);
    let mut at = ts.max(tc).saturating_add(1);
    if user_id.is_some() {
        at = at.max(now.unix_micros());
    }
    let updated_at = Timestamp::from_unix_micros(at).unwrap_or(now);
    let user = user_id.unwrap_or(&base_entity.user_id).to_owned();
    let mut parents = [server.version.clone(), client.version.clone()];
    parents.sort();
    Entity {
        id: server.id.clone(),
        version: merge_version(&server.version, &client.version, updated_at, &user),
        entity_type: base_entity.entity_type.clone(),
        name: base_entity.name.clone(),
        content,
        source_type: base_entity.source_type.clone(),
        user_id: user,
        parent_versions: parents.to_vec(),
        created_at: server.created_at.min(client.created_at),
        updated_at,
    }
}
