//! Backend-neutral push logic: apply order, what to look up, and the per-change decisions.
//!
//! Every server backend applies a pushed batch the same way (see `SEMANTICS.md`):
//!
//! 1. [`push_lookups`] names what the backend must read inside its write
//!    transaction: the latest row of every pushed id, which pushed versions and
//!    relationship endpoints are already stored, which relationship ids exist.
//! 2. The backend fills a [`StoredState`] from those reads and calls
//!    [`plan_push`] with its receipt time and resolver configuration. The plan
//!    is pure: the rows to insert in sequence order (with their final latest
//!    flags), the ids whose stored latest row stops being latest, the
//!    relationships to insert, the conflicts to record and the
//!    [`PushOutcome`] to return.
//!    The state holds only the version, creation time and tombstone flag of
//!    each latest row ([`StoredLatest`]): that decides every change but a
//!    conflict.
//! 3. If a pushed version conflicts with a stored latest row whose fields the
//!    state does not hold, or a conflict's strategy needs earlier versions of
//!    an id (a three-way merge walks the `parent_versions` DAG) that the state
//!    does not hold, [`plan_push`] answers [`MoreRows`] naming those ids: the
//!    backend loads the whole latest rows into [`StoredLatest::entity`] and
//!    every stored version into [`StoredState::histories`], and plans again.
//!    Ids are independent, so a plan needs at most two more rounds (the latest
//!    row, then the history).
//! 4. The backend writes the plan: first it clears the latest flag of the
//!    superseded ids, then inserts the entity rows, the relationships and the
//!    conflicts, assigning sequence numbers in plan order.
//!
//! A plan borrows the pushed batch: its rows are views ([`EntityRow`],
//! [`RelationshipRow`]) over the pushed changes, so planning copies no
//! pushed entity (only a delete that lacks its tombstone marker and a merged
//! version are owned). Its maps use a fast non-cryptographic hasher.
//!
//! [`manual_resolution`] builds the version a person's decision on a queued
//! conflict writes.

use std::borrow::Cow;
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hash::{Hash, Hasher};

use hashbrown::Equivalent;
use inbetweenies_conflict::{conflict_info, resolve, Ancestry, Resolution, ResolverConfig, Side};
use inbetweenies_proto::{
    is_tombstone, ChangeType, ConflictInfo, Entity, EntityChange, EntityId, EntityType, JsonObject,
    Relationship, RelationshipChange, RelationshipId, RelationshipType, SourceType, SyncChange,
    Timestamp, Version, DELETED_KEY,
};

use crate::types::{
    ConflictStatus, EntityOutcome, ManualResolution, PushBatch, PushOutcome, RelationshipOutcome,
};

/// The hash map planning uses (hashbrown with its default fast hasher).
pub type FastMap<K, V> = hashbrown::HashMap<K, V>;

/// The hash set planning uses (hashbrown with its default fast hasher).
pub type FastSet<K> = hashbrown::HashSet<K>;

/// An `(id, version)` pair of borrowed strings that finds the equal owned
/// `(EntityId, Version)` key in a [`FastSet`] without building one.
///
/// It hashes exactly as the owned pair does: each id type hashes as its one
/// string field, and a tuple hashes its fields in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyRef<'a>(pub &'a str, pub &'a str);

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
        self.1.hash(state);
    }
}

impl Equivalent<(EntityId, Version)> for KeyRef<'_> {
    fn equivalent(&self, key: &(EntityId, Version)) -> bool {
        self.0 == key.0.as_str() && self.1 == key.1.as_str()
    }
}

/// The order in which a batch's entity changes are applied: request order,
/// except that a change whose `parent_versions` names the version of another
/// change of the same id in the batch comes after it (a stable topological
/// order; on a cycle the rest follow in request order).
///
/// Returns indices into `changes`; changes without an entity keep their place.
///
/// The work is O((n + p) log n) for n changes naming p parents in all,
/// whatever the input: see [`apply_order_counted`].
pub fn entity_apply_order(changes: &[SyncChange]) -> Vec<usize> {
    apply_order_counted(changes, &mut 0)
}

/// [`entity_apply_order`], adding the steps it takes to `work` (map lookups,
/// edges made and followed, heap operations, cycle-scan steps), so a test can
/// hold the bound without timing it.
///
/// Each distinct pushed `(id, version)` is a node of its own beside the
/// changes: every change pushing it points to it, and it points once to each
/// change naming it as a parent. It "fires" when the last change pushing it
/// is placed. A child thus becomes ready exactly when every change it names is
/// placed — the rule above — with one edge per (child, named version) instead
/// of one per (child, duplicate of that version), so n duplicates and n
/// children make 2n edges, not n². Ready changes leave a min-heap in request
/// order; a cycle releases the earliest change not yet placed, found by a
/// cursor that only moves forward.
fn apply_order_counted(changes: &[SyncChange], work: &mut u64) -> Vec<usize> {
    let n = changes.len();
    *work += n as u64;
    // Nothing can come after anything when no change names a parent.
    if !changes.iter().any(|c| {
        c.entity
            .as_ref()
            .is_some_and(|e| !e.parent_versions.is_empty())
    }) {
        return (0..n).collect();
    }
    // (id, version) -> its key node; each change's key node.
    let mut keys: FastMap<(&str, &str), usize> = FastMap::with_capacity(n);
    let mut key_of: Vec<Option<usize>> = vec![None; n];
    // Changes pushing each key that are not placed yet.
    let mut key_pending: Vec<usize> = Vec::new();
    for (i, c) in changes.iter().enumerate() {
        if let Some(e) = &c.entity {
            *work += 1;
            let next = key_pending.len();
            let k = *keys
                .entry((e.id.as_str(), e.version.as_str()))
                .or_insert(next);
            if k == next {
                key_pending.push(0);
            }
            key_pending[k] += 1;
            key_of[i] = Some(k);
        }
    }
    // The changes naming each key as a parent, each once; `named_by` marks the
    // last change that named a key, so a parent listed twice counts once.
    let mut key_children: Vec<Vec<usize>> = vec![Vec::new(); key_pending.len()];
    let mut named_by: Vec<usize> = vec![usize::MAX; key_pending.len()];
    let mut indegree = vec![0usize; n];
    let mut any_edge = false;
    for (i, c) in changes.iter().enumerate() {
        let Some(e) = &c.entity else { continue };
        for p in &e.parent_versions {
            *work += 1;
            if p == &e.version {
                continue;
            }
            let Some(&k) = keys.get(&(e.id.as_str(), p.as_str())) else {
                continue;
            };
            if named_by[k] != i {
                named_by[k] = i;
                key_children[k].push(i);
                indegree[i] += 1;
                any_edge = true;
            }
        }
    }
    if !any_edge {
        return (0..n).collect();
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
    *work += n as u64;
    let mut order = Vec::with_capacity(n);
    let mut placed = vec![false; n];
    // Every change before this index is placed.
    let mut first_unplaced = 0;
    loop {
        while let Some(Reverse(i)) = ready.pop() {
            *work += 1 + u64::from(usize::BITS - ready.len().leading_zeros());
            order.push(i);
            placed[i] = true;
            let Some(k) = key_of[i] else { continue };
            key_pending[k] -= 1;
            if key_pending[k] > 0 {
                continue;
            }
            for &c in &key_children[k] {
                *work += 1;
                if placed[c] || indegree[c] == 0 {
                    continue;
                }
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.push(Reverse(c));
                }
            }
        }
        // A cycle: release the earliest change not yet placed and go on.
        while first_unplaced < n && placed[first_unplaced] {
            *work += 1;
            first_unplaced += 1;
        }
        if first_unplaced == n {
            break;
        }
        indegree[first_unplaced] = 0;
        ready.push(Reverse(first_unplaced));
    }
    order
}

/// What a backend must read before planning a push (borrowed from the batch).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PushLookups<'b> {
    /// Distinct ids of the pushed entity versions: read the latest row of each.
    pub entity_ids: Vec<&'b EntityId>,
    /// Distinct `(id, version)` pairs (pushed versions and relationship
    /// endpoints): read which are stored.
    pub entity_keys: Vec<(&'b EntityId, &'b Version)>,
    /// Distinct pushed relationship ids: read which are stored.
    pub relationship_ids: Vec<&'b RelationshipId>,
}

/// Names what [`plan_push`] needs to know about the store for this batch.
pub fn push_lookups(batch: &PushBatch) -> PushLookups<'_> {
    let n = batch.changes.len();
    let mut ids: FastSet<&str> = FastSet::with_capacity(n);
    let mut keys: FastSet<(&str, &str)> = FastSet::with_capacity(n);
    let mut rels: FastSet<&str> = FastSet::new();
    let mut out = PushLookups {
        entity_ids: Vec::with_capacity(n),
        entity_keys: Vec::with_capacity(n),
        relationship_ids: Vec::new(),
    };
    for c in &batch.changes {
        if let Some(e) = &c.entity {
            if ids.insert(e.id.as_str()) {
                out.entity_ids.push(&e.id);
            }
            if keys.insert((e.id.as_str(), e.version.as_str())) {
                out.entity_keys.push((&e.id, &e.version));
            }
        }
    }
    for c in &batch.changes {
        for r in &c.relationships {
            if rels.insert(r.id.as_str()) {
                out.relationship_ids.push(&r.id);
            }
            for (id, v) in [
                (&r.from_entity_id, &r.from_entity_version),
                (&r.to_entity_id, &r.to_entity_version),
            ] {
                // An empty (null) endpoint version names any version of the id:
                // its latest row says whether the id exists.
                if v.as_str().is_empty() {
                    if ids.insert(id.as_str()) {
                        out.entity_ids.push(id);
                    }
                } else if keys.insert((id.as_str(), v.as_str())) {
                    out.entity_keys.push((id, v));
                }
            }
        }
    }
    out
}

/// The latest stored row of an id, as far as planning needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredLatest {
    /// Its version.
    pub version: Version,
    /// When the entity was created.
    pub created_at: Timestamp,
    /// Whether it is a tombstone.
    pub deleted: bool,
    /// The whole row, when loaded: needed only to decide a conflict with it
    /// (planning asks for it through [`MoreRows::latest`]).
    pub entity: Option<Entity>,
}

impl From<Entity> for StoredLatest {
    fn from(e: Entity) -> Self {
        StoredLatest {
            version: e.version.clone(),
            created_at: e.created_at,
            deleted: e.is_deleted(),
            entity: Some(e),
        }
    }
}

/// What the store holds, as far as one batch is concerned (read inside the write transaction).
#[derive(Clone, Debug, Default)]
pub struct StoredState {
    /// The latest row of each looked-up id that exists.
    pub latest: FastMap<EntityId, StoredLatest>,
    /// The looked-up `(id, version)` pairs that are stored.
    pub existing_keys: FastSet<(EntityId, Version)>,
    /// The looked-up relationship ids that are stored.
    pub existing_relationships: FastSet<RelationshipId>,
    /// Every stored version of the ids [`MoreRows::history`] named (any order).
    pub histories: FastMap<EntityId, Vec<Entity>>,
}

/// Planning needs more of the store (see the module docs). Ids are sorted and distinct.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MoreRows {
    /// Load the whole latest row of these ids into [`StoredLatest::entity`].
    pub latest: Vec<EntityId>,
    /// Load every stored version of these ids into [`StoredState::histories`].
    pub history: Vec<EntityId>,
}

/// The current latest row of an id while planning: planned in this batch, or stored.
enum Current<'a> {
    Planned(EntityRow<'a>),
    Stored(&'a StoredLatest),
}

impl Current<'_> {
    fn version(&self) -> &Version {
        match self {
            Current::Planned(r) => r.version,
            Current::Stored(s) => &s.version,
        }
    }

    fn created_at(&self) -> Timestamp {
        match self {
            Current::Planned(r) => r.created_at,
            Current::Stored(s) => s.created_at,
        }
    }

    fn is_deleted(&self) -> bool {
        match self {
            Current::Planned(r) => r.is_deleted(),
            Current::Stored(s) => s.deleted,
        }
    }

    /// The whole row, unless it is stored and not loaded.
    fn entity(&self) -> Option<Entity> {
        match self {
            Current::Planned(r) => Some(r.to_entity()),
            Current::Stored(s) => s.entity.clone(),
        }
    }
}

/// The fields of one entity row, borrowed: what a backend writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EntityRow<'a> {
    /// Stable id.
    pub id: &'a EntityId,
    /// This version.
    pub version: &'a Version,
    /// What the entity is.
    pub entity_type: &'a EntityType,
    /// Display name.
    pub name: &'a str,
    /// Free JSON object (with `deleted: true` on a tombstone).
    pub content: &'a JsonObject,
    /// Where the data came from.
    pub source_type: &'a SourceType,
    /// The user who made this version.
    pub user_id: &'a str,
    /// The versions this one supersedes.
    pub parent_versions: &'a [Version],
    /// When the entity was first created.
    pub created_at: Timestamp,
    /// When this version was made.
    pub updated_at: Timestamp,
}

impl EntityRow<'_> {
    /// Whether the row is a tombstone.
    pub fn is_deleted(&self) -> bool {
        is_tombstone(self.content)
    }

    /// An owned copy.
    pub fn to_entity(&self) -> Entity {
        Entity {
            id: self.id.clone(),
            version: self.version.clone(),
            entity_type: self.entity_type.clone(),
            name: self.name.to_owned(),
            content: self.content.clone(),
            source_type: self.source_type.clone(),
            user_id: self.user_id.to_owned(),
            parent_versions: self.parent_versions.to_vec(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl<'a> From<&'a Entity> for EntityRow<'a> {
    fn from(e: &'a Entity) -> Self {
        EntityRow {
            id: &e.id,
            version: &e.version,
            entity_type: &e.entity_type,
            name: &e.name,
            content: &e.content,
            source_type: &e.source_type,
            user_id: &e.user_id,
            parent_versions: &e.parent_versions,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// The fields of one relationship row, borrowed: what a backend writes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RelationshipRow<'a> {
    /// The edge's id.
    pub id: &'a RelationshipId,
    /// Source entity.
    pub from_entity_id: &'a EntityId,
    /// The source's version.
    pub from_entity_version: &'a Version,
    /// Target entity.
    pub to_entity_id: &'a EntityId,
    /// The target's version.
    pub to_entity_version: &'a Version,
    /// What the edge means.
    pub relationship_type: &'a RelationshipType,
    /// Free JSON object.
    pub properties: &'a JsonObject,
    /// The user who made the edge.
    pub user_id: &'a str,
    /// When the edge was made.
    pub created_at: Timestamp,
    /// When the edge last changed.
    pub updated_at: Timestamp,
}

impl RelationshipRow<'_> {
    /// An owned copy.
    pub fn to_relationship(&self) -> Relationship {
        Relationship {
            id: self.id.clone(),
            from_entity_id: self.from_entity_id.clone(),
            from_entity_version: self.from_entity_version.clone(),
            to_entity_id: self.to_entity_id.clone(),
            to_entity_version: self.to_entity_version.clone(),
            relationship_type: self.relationship_type.clone(),
            properties: self.properties.clone(),
            user_id: self.user_id.to_owned(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

impl<'a> From<&'a Relationship> for RelationshipRow<'a> {
    fn from(r: &'a Relationship) -> Self {
        RelationshipRow {
            id: &r.id,
            from_entity_id: &r.from_entity_id,
            from_entity_version: &r.from_entity_version,
            to_entity_id: &r.to_entity_id,
            to_entity_version: &r.to_entity_version,
            relationship_type: &r.relationship_type,
            properties: &r.properties,
            user_id: &r.user_id,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Where a planned entity row comes from.
#[derive(Clone, Debug, PartialEq)]
enum RowSource<'b> {
    /// A pushed version as it came, with its times and (for a delete) its tombstone content.
    Pushed {
        change: &'b EntityChange,
        content: Cow<'b, JsonObject>,
        created_at: Timestamp,
        updated_at: Timestamp,
    },
    /// A version the store made (a merge).
    Made(Box<Entity>),
}

/// One entity row a push inserts.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEntity<'b> {
    source: RowSource<'b>,
    /// Whether the row is the latest of its id once the whole batch is applied.
    pub latest: bool,
    /// Whether the row became latest when it was applied (false for a conflict's loser).
    pub became_latest: bool,
}

impl RowSource<'_> {
    fn row(&self) -> EntityRow<'_> {
        match self {
            RowSource::Pushed {
                change,
                content,
                created_at,
                updated_at,
            } => EntityRow {
                id: &change.id,
                version: &change.version,
                entity_type: &change.entity_type,
                name: &change.name,
                content,
                source_type: &change.source_type,
                user_id: &change.user_id,
                parent_versions: &change.parent_versions,
                created_at: *created_at,
                updated_at: *updated_at,
            },
            RowSource::Made(e) => EntityRow::from(&**e),
        }
    }
}

impl PlannedEntity<'_> {
    /// The row's fields.
    pub fn row(&self) -> EntityRow<'_> {
        self.source.row()
    }
}

/// One relationship a push inserts.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedRelationship<'b> {
    change: &'b RelationshipChange,
    user_id: &'b str,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl PlannedRelationship<'_> {
    /// The row's fields.
    pub fn row(&self) -> RelationshipRow<'_> {
        let c = self.change;
        RelationshipRow {
            id: &c.id,
            from_entity_id: &c.from_entity_id,
            from_entity_version: &c.from_entity_version,
            to_entity_id: &c.to_entity_id,
            to_entity_version: &c.to_entity_version,
            relationship_type: &c.relationship_type,
            properties: &c.properties,
            user_id: self.user_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// One conflict a push records.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedConflict {
    /// The wire report (also the record's versions, reason and strategy text).
    pub info: ConflictInfo,
    /// `Auto` for a decided conflict, `Pending` for one queued for review.
    pub status: ConflictStatus,
}

/// Everything a push writes, in order, and what it reports.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PushPlan<'b> {
    /// Entity rows to insert, in sequence order.
    pub entities: Vec<PlannedEntity<'b>>,
    /// Ids whose stored latest row stops being latest (clear its flag before inserting).
    pub superseded: Vec<EntityId>,
    /// Relationships to insert, in sequence order (after every entity row).
    pub relationships: Vec<PlannedRelationship<'b>>,
    /// Conflicts to record, in the order they were decided.
    pub conflicts: Vec<PlannedConflict>,
    /// What to return to the caller.
    pub outcome: PushOutcome,
}

impl PushPlan<'_> {
    /// Whether the plan writes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.relationships.is_empty() && self.conflicts.is_empty()
    }

    /// Number of sequence numbers the plan's rows take.
    pub fn rows(&self) -> usize {
        self.entities.len() + self.relationships.len()
    }
}

/// Earlier versions of one id, for the resolver: rows planned in this batch
/// (found by key, so a conflict costs nothing for the rows planned before
/// it), then the stored history if it was loaded. Records when it was asked
/// about a version while the stored history was not loaded.
struct IdAncestry<'a, 'b> {
    id: &'a str,
    planner: &'a Planner<'b, 'a>,
    stored: Option<&'a [Entity]>,
    missed: Cell<bool>,
}

impl Ancestry for IdAncestry<'_, '_> {
    fn version(&self, v: &Version) -> Option<Entity> {
        if let Some(i) = self.planner.planned_row(self.id, v.as_str()) {
            return Some(self.planner.plan.entities[i].row().to_entity());
        }
        match self.stored {
            Some(rows) => rows.iter().find(|e| &e.version == v).cloned(),
            None => {
                self.missed.set(true);
                None
            }
        }
    }
}

/// The planned rows of one id so far.
#[derive(Clone, Copy, Debug)]
struct IdRows {
    /// The planned row that is latest now, if a planned row became latest.
    latest: Option<usize>,
}

/// What [`Planner::decide`] makes of one pushed entity change.
#[expect(
    clippy::large_enum_variant,
    reason = "one short-lived value per change, moved once from decide to emit"
)]
enum Decision<'b> {
    /// Nothing is written; the outcome says why.
    Skip(EntityOutcome),
    /// The change cannot be decided before the store loads more rows of its id.
    NeedsRows(NeedsRows),
    /// The pushed row is written (latest or not), with a merged row and a conflict record if any.
    Write {
        pushed: RowSource<'b>,
        pushed_latest: bool,
        made: Option<Box<Entity>>,
        outcome: EntityOutcome,
        conflict: Option<PlannedConflict>,
    },
}

/// Which rows of an id planning needs loaded (see [`MoreRows`]).
enum NeedsRows {
    /// The whole latest row.
    Latest(EntityId),
    /// Every stored version.
    History(EntityId),
}

/// The state of planning one batch: the plan so far and what it has seen.
struct Planner<'b, 's> {
    batch: &'b PushBatch,
    state: &'s StoredState,
    now: Timestamp,
    config: &'s ResolverConfig,
    plan: PushPlan<'b>,
    /// Per change (request order): its outcome, once decided.
    outcomes: Vec<Option<EntityOutcome>>,
    /// Per id with planned rows: which is latest.
    by_id: FastMap<&'b str, IdRows>,
    /// (id, version) of planned pushed rows -> their row in the plan.
    planned_keys: FastMap<(&'b str, &'b str), usize>,
    /// (id, version) of versions the store made (merges) -> their row in the plan.
    made_keys: FastMap<(EntityId, Version), usize>,
    /// Rows the store must load before the plan can be made.
    more: MoreRows,
}

/// Plans a pushed batch against the looked-up state (see the module docs).
///
/// `now` is the receipt time: it is the conflict resolver's "now", the
/// fallback edit time of a version string that does not parse, and the time
/// given to relationships that carry none. Deterministic for equal inputs.
///
/// The steps: order the entity changes ([`entity_apply_order`]); for each,
/// look up what it meets ([`Planner::look_up`]), decide it
/// ([`Planner::decide`]) and emit its rows ([`Planner::emit`]); stop if the
/// store must load more rows ([`Planner::more_rows`]); plan the
/// relationships ([`Planner::plan_relationships`]); report the outcome
/// ([`Planner::finish`]).
pub fn plan_push<'b>(
    batch: &'b PushBatch,
    state: &StoredState,
    now: Timestamp,
    config: &ResolverConfig,
) -> Result<PushPlan<'b>, MoreRows> {
    let mut planner = Planner::new(batch, state, now, config);
    for idx in entity_apply_order(&batch.changes) {
        let decision = planner.decide(idx);
        planner.emit(idx, decision);
    }
    planner.more_rows()?;
    planner.plan_relationships();
    Ok(planner.finish())
}

impl<'b, 's> Planner<'b, 's> {
    /// An empty plan for `batch`.
    fn new(
        batch: &'b PushBatch,
        state: &'s StoredState,
        now: Timestamp,
        config: &'s ResolverConfig,
    ) -> Self {
        let n = batch.changes.len();
        Planner {
            batch,
            state,
            now,
            config,
            plan: PushPlan {
                entities: Vec::with_capacity(n),
                ..PushPlan::default()
            },
            outcomes: vec![None; n],
            by_id: FastMap::with_capacity(n),
            planned_keys: FastMap::with_capacity(n),
            made_keys: FastMap::new(),
            more: MoreRows::default(),
        }
    }

    /// Look up: whether this version of the id is already stored or planned
    /// (`None`), else the id's current latest row — planned in this batch, or
    /// stored — if it has one.
    fn look_up(&self, ec: &EntityChange) -> Option<Option<Current<'_>>> {
        let (id, version) = (ec.id.as_str(), ec.version.as_str());
        if self.state.existing_keys.contains(&KeyRef(id, version))
            || self.planned_row(id, version).is_some()
        {
            return None;
        }
        let planned = self.by_id.get(id).and_then(|p| p.latest);
        Some(match planned {
            Some(i) => Some(Current::Planned(self.plan.entities[i].row())),
            None => self.state.latest.get(&ec.id).map(Current::Stored),
        })
    }

    /// The planned row (pushed, or made by a merge) with this id and version.
    fn planned_row(&self, id: &str, version: &str) -> Option<usize> {
        self.planned_keys
            .get(&(id, version))
            .or_else(|| self.made_keys.get(&KeyRef(id, version)))
            .copied()
    }

    /// Decide per id: what the change at `idx` does to its id — nothing (with
    /// the reason), a fast-forward, or a conflict decided by the resolver.
    fn decide(&self, idx: usize) -> Decision<'b> {
        let change: &'b SyncChange = &self.batch.changes[idx];
        let Some(ec) = &change.entity else {
            return Decision::Skip(EntityOutcome::NotAcked("no entity".to_owned()));
        };
        let Some(current) = self.look_up(ec) else {
            return Decision::Skip(EntityOutcome::AlreadyPresent);
        };
        let is_delete = change.change_type == ChangeType::Delete || is_tombstone(&ec.content);
        if is_delete {
            match &current {
                None => return Decision::Skip(EntityOutcome::DeletedUnknown),
                Some(c) if c.is_deleted() => return Decision::Skip(EntityOutcome::AlreadyDeleted),
                Some(_) => {}
            }
        }
        // The edit time (PROTOCOL §3.3): the version's timestamp, else the
        // `updated_at` the change carries, else the receipt time.
        let updated_at = ec.edit_time(self.now);
        let created_at = current
            .as_ref()
            .map_or_else(|| ec.first_created_at(updated_at), Current::created_at);
        let content = if is_delete && !is_tombstone(&ec.content) {
            let mut c = ec.content.clone();
            c.insert(DELETED_KEY.to_owned(), serde_json::Value::Bool(true));
            Cow::Owned(c)
        } else {
            Cow::Borrowed(&ec.content)
        };
        let pushed = RowSource::Pushed {
            change: ec,
            content,
            created_at,
            updated_at,
        };
        // Unless the change is a fast-forward, the current latest row it conflicts with.
        let contested = match &current {
            Some(cur) if !ec.parent_versions.contains(cur.version()) => match cur.entity() {
                Some(e) => e,
                None => return Decision::NeedsRows(NeedsRows::Latest(ec.id.clone())),
            },
            _ => {
                return Decision::Write {
                    pushed,
                    pushed_latest: true,
                    made: None,
                    outcome: EntityOutcome::Applied,
                    conflict: None,
                }
            }
        };
        self.decide_conflict(ec, &contested, pushed)
    }

    /// Decide a conflict between the current latest row and a pushed version
    /// that does not name it as a parent, with the id's earlier versions
    /// (planned, then stored) as the resolver's ancestry.
    fn decide_conflict(
        &self,
        ec: &EntityChange,
        current: &Entity,
        pushed: RowSource<'b>,
    ) -> Decision<'b> {
        let entity = pushed.row().to_entity();
        let ancestry = IdAncestry {
            id: ec.id.as_str(),
            planner: self,
            stored: self.state.histories.get(&ec.id).map(Vec::as_slice),
            missed: Cell::new(false),
        };
        let resolution = resolve(current, &entity, self.now, self.config, &ancestry);
        if ancestry.missed.get() {
            return Decision::NeedsRows(NeedsRows::History(ec.id.clone()));
        }
        let info = conflict_info(current, &entity, &resolution);
        let auto = |info: ConflictInfo| PlannedConflict {
            info,
            status: ConflictStatus::Auto,
        };
        let (pushed_latest, made, outcome, conflict) = match resolution {
            Resolution::FastForward => (true, None, EntityOutcome::Applied, None),
            Resolution::Winner {
                winner: Side::Client,
                ..
            } => (true, None, EntityOutcome::Won, info.map(auto)),
            Resolution::Winner {
                winner: Side::Server,
                ..
            } => (false, None, EntityOutcome::Lost, info.map(auto)),
            Resolution::Merged { entity: merged, .. } => {
                let v = merged.version.clone();
                (
                    false,
                    Some(Box::new(merged)),
                    EntityOutcome::Merged(v),
                    info.map(auto),
                )
            }
            Resolution::Manual { .. } => (
                false,
                None,
                EntityOutcome::Queued,
                info.map(|info| PlannedConflict {
                    info,
                    status: ConflictStatus::Pending,
                }),
            ),
        };
        Decision::Write {
            pushed,
            pushed_latest,
            made,
            outcome,
            conflict,
        }
    }

    /// Emit: record the outcome of the change at `idx` and append the rows it
    /// writes, keeping each id's latest row (and the stored one it supersedes).
    fn emit(&mut self, idx: usize, decision: Decision<'b>) {
        let (pushed, pushed_latest, made, outcome, conflict) = match decision {
            Decision::Skip(outcome) => {
                self.outcomes[idx] = Some(outcome);
                return;
            }
            Decision::NeedsRows(needs) => {
                match needs {
                    NeedsRows::Latest(id) => self.more.latest.push(id),
                    NeedsRows::History(id) => self.more.history.push(id),
                }
                self.outcomes[idx] = Some(EntityOutcome::Applied);
                return;
            }
            Decision::Write {
                pushed,
                pushed_latest,
                made,
                outcome,
                conflict,
            } => (pushed, pushed_latest, made, outcome, conflict),
        };
        let Some(ec) = &self.batch.changes[idx].entity else {
            unreachable!("only an entity change writes rows");
        };
        let id = ec.id.as_str();
        let first = self.plan.entities.len();
        self.planned_keys.insert((id, ec.version.as_str()), first);
        let made = made.map(|m| {
            self.made_keys
                .insert((m.id.clone(), m.version.clone()), first + 1);
            (RowSource::Made(m), true)
        });
        for (source, became_latest) in std::iter::once((pushed, pushed_latest)).chain(made) {
            let i = self.plan.entities.len();
            let slot = self.by_id.entry(id).or_insert(IdRows { latest: None });
            if became_latest {
                match slot.latest.replace(i) {
                    Some(prev) => self.plan.entities[prev].latest = false,
                    // The first planned row of this id to become latest supersedes the stored one.
                    None if self.state.latest.contains_key(&ec.id) => {
                        self.plan.superseded.push(ec.id.clone())
                    }
                    None => {}
                }
            }
            self.plan.entities.push(PlannedEntity {
                source,
                latest: became_latest,
                became_latest,
            });
        }
        if let Some(c) = conflict {
            self.plan.outcome.conflicts.push(c.info.clone());
            self.plan.conflicts.push(c);
        }
        self.outcomes[idx] = Some(outcome);
    }

    /// The rows the store must load before planning again, if any (sorted, distinct).
    fn more_rows(&mut self) -> Result<(), MoreRows> {
        if self.more.latest.is_empty() && self.more.history.is_empty() {
            return Ok(());
        }
        let mut more = std::mem::take(&mut self.more);
        for ids in [&mut more.latest, &mut more.history] {
            ids.sort();
            ids.dedup();
        }
        Err(more)
    }

    /// Plans the relationships of every change, in request order: each is
    /// written once, if both endpoint versions are stored or planned.
    fn plan_relationships(&mut self) {
        let batch = self.batch;
        let state = self.state;
        let mut planned_rels: FastSet<&'b str> = FastSet::new();
        let mut acked_rels: FastSet<&'b str> = FastSet::new();
        let (planned_keys, made_keys) = (&self.planned_keys, &self.made_keys);
        // Ids with a version stored or planned in this batch (for null endpoint versions).
        let planned_ids: FastSet<&str> = planned_keys.keys().map(|(id, _)| *id).collect();
        let key_exists = |id: &EntityId, v: &Version| {
            if v.as_str().is_empty() {
                return state.latest.contains_key(id) || planned_ids.contains(id.as_str());
            }
            let key = KeyRef(id.as_str(), v.as_str());
            state.existing_keys.contains(&key)
                || planned_keys.contains_key(&(key.0, key.1))
                || made_keys.contains_key(&key)
        };
        let plan = &mut self.plan;
        for change in &batch.changes {
            for rc in &change.relationships {
                let rel_id = rc.id.as_str();
                let outcome = if state.existing_relationships.contains(&rc.id)
                    || planned_rels.contains(rel_id)
                {
                    RelationshipOutcome::AlreadyPresent
                } else if key_exists(&rc.from_entity_id, &rc.from_entity_version)
                    && key_exists(&rc.to_entity_id, &rc.to_entity_version)
                {
                    planned_rels.insert(rel_id);
                    let created_at = rc.created_at.unwrap_or(self.now);
                    plan.relationships.push(PlannedRelationship {
                        change: rc,
                        user_id: rc.user_id.as_deref().unwrap_or(&batch.user_id),
                        created_at,
                        updated_at: rc.updated_at.unwrap_or(created_at),
                    });
                    RelationshipOutcome::Applied
                } else {
                    RelationshipOutcome::MissingEndpoint
                };
                if outcome != RelationshipOutcome::MissingEndpoint && acked_rels.insert(rel_id) {
                    plan.outcome.applied_relationships.push(rc.id.clone());
                }
                plan.outcome
                    .relationship_outcomes
                    .push((rc.id.clone(), outcome));
            }
        }
    }

    /// Report: the per-change outcomes in request order, the acknowledged ids
    /// (each once) and the row counts.
    fn finish(self) -> PushPlan<'b> {
        let mut plan = self.plan;
        let n = self.batch.changes.len();
        let mut acked: FastSet<&str> = FastSet::with_capacity(n);
        plan.outcome.entity_outcomes.reserve(n);
        for (change, outcome) in self.batch.changes.iter().zip(self.outcomes) {
            let Some(outcome) = outcome else { continue };
            let id = change.entity.as_ref().map(|e| &e.id);
            if let Some(id) = id {
                if outcome.is_acked() && acked.insert(id.as_str()) {
                    plan.outcome.applied.push(id.clone());
                }
            }
            plan.outcome.entity_outcomes.push((id.cloned(), outcome));
        }
        plan.outcome.entities_written = plan.entities.len() as u64;
        plan.outcome.relationships_written = plan.relationships.len() as u64;
        plan
    }
}

/// The version a person's decision on a queued conflict writes: made by
/// `user_id` at `now` (`Version::generate`), parented on
/// `[server_version, client_version]`, with the kept side's fields (the
/// server's for custom content, with the given name and content), the id's
/// first `created_at`, and `updated_at = now`. Insert it as the new latest.
pub fn manual_resolution(
    server: &Entity,
    client: &Entity,
    resolution: &ManualResolution,
    user_id: &str,
    now: Timestamp,
) -> Entity {
    let (base, name, content) = match resolution {
        ManualResolution::KeepServer => (server, server.name.clone(), server.content.clone()),
        ManualResolution::KeepClient => (client, client.name.clone(), client.content.clone()),
        ManualResolution::Custom { name, content } => (server, name.clone(), content.clone()),
    };
    Entity {
        id: server.id.clone(),
        version: Version::generate(now, user_id),
        entity_type: base.entity_type.clone(),
        name,
        content,
        source_type: base.source_type.clone(),
        user_id: user_id.to_owned(),
        parent_versions: vec![server.version.clone(), client.version.clone()],
        created_at: server.created_at.min(client.created_at),
        updated_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use inbetweenies_proto::{
        EntityChange, EntityType, JsonObject, RelationshipChange, RelationshipType, SourceType,
    };

    fn change(id: &str, version: &str, parents: &[&str], ct: ChangeType) -> SyncChange {
        SyncChange {
            change_type: ct,
            entity: Some(EntityChange {
                id: id.into(),
                version: version.into(),
                entity_type: EntityType::Room,
                name: "n".into(),
                content: JsonObject::new(),
                source_type: SourceType::Manual,
                user_id: "u".into(),
                parent_versions: parents.iter().map(|p| Version::new(*p)).collect(),
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: vec![],
        }
    }

    const V1: &str = "2026-01-01T00:00:00.000000+00:00-000001-u";
    const V2: &str = "2026-01-01T00:00:10.000000+00:00-000002-u";
    const V3: &str = "2026-01-01T00:00:20.000000+00:00-000003-u";

    fn now() -> Timestamp {
        Timestamp::parse("2026-01-02T00:00:00+00:00").unwrap()
    }

    fn batch(changes: Vec<SyncChange>) -> PushBatch {
        PushBatch {
            device_id: "d".into(),
            user_id: "u".into(),
            changes,
        }
    }

    #[test]
    fn borrowed_keys_find_owned_ones() {
        let mut set: FastSet<(EntityId, Version)> = FastSet::new();
        for i in 0..100 {
            set.insert((
                EntityId::new(format!("id-{i}")),
                Version::new(format!("v-{i}")),
            ));
        }
        for i in 0..100 {
            let (id, v) = (format!("id-{i}"), format!("v-{i}"));
            assert!(set.contains(&KeyRef(&id, &v)), "{id} {v}");
            assert!(!set.contains(&KeyRef(&id, "v-x")));
        }
        // The split between id and version is part of the key.
        set.insert((EntityId::new("ab"), Version::new("c")));
        assert!(!set.contains(&KeyRef("a", "bc")));
    }

    #[test]
    fn children_follow_parents_stably() {
        let cs = vec![
            change("a", V3, &[V2], ChangeType::Update),
            change("b", V1, &[], ChangeType::Create),
            change("a", V2, &[V1], ChangeType::Update),
            change("a", V1, &[], ChangeType::Create),
        ];
        assert_eq!(entity_apply_order(&cs), vec![1, 3, 2, 0]);
    }

    #[test]
    fn cycles_fall_back_to_request_order() {
        let cs = vec![
            change("a", V1, &[V2], ChangeType::Update),
            change("a", V2, &[V1], ChangeType::Update),
        ];
        assert_eq!(entity_apply_order(&cs), vec![0, 1]);
    }

    /// The ordering as first written (quadratic edges, a linear `contains`, a
    /// rescan per cycle): the reference the bounded one must agree with.
    fn reference_order(changes: &[SyncChange]) -> Vec<usize> {
        let n = changes.len();
        let mut first: FastMap<(&str, &str), usize> = FastMap::with_capacity(n);
        let mut same_key: Vec<Option<usize>> = vec![None; n];
        for (i, c) in changes.iter().enumerate().rev() {
            if let Some(e) = &c.entity {
                if let Some(next) = first.insert((e.id.as_str(), e.version.as_str()), i) {
                    same_key[i] = Some(next);
                }
            }
        }
        let mut indegree = vec![0usize; n];
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut parents_seen: Vec<usize> = Vec::new();
        for (i, c) in changes.iter().enumerate() {
            let Some(e) = &c.entity else { continue };
            parents_seen.clear();
            for p in &e.parent_versions {
                if p == &e.version {
                    continue;
                }
                let mut at = first.get(&(e.id.as_str(), p.as_str())).copied();
                while let Some(j) = at {
                    if j != i && !parents_seen.contains(&j) {
                        parents_seen.push(j);
                        children[j].push(i);
                        indegree[i] += 1;
                    }
                    at = same_key[j];
                }
            }
        }
        let mut ready: BinaryHeap<Reverse<usize>> =
            (0..n).filter(|&i| indegree[i] == 0).map(Reverse).collect();
        let mut order = Vec::with_capacity(n);
        let mut placed = vec![false; n];
        loop {
            while let Some(Reverse(i)) = ready.pop() {
                order.push(i);
                placed[i] = true;
                for &c in &children[i] {
                    if placed[c] || indegree[c] == 0 {
                        continue;
                    }
                    indegree[c] -= 1;
                    if indegree[c] == 0 {
                        ready.push(Reverse(c));
                    }
                }
            }
            match (0..n).find(|&i| !placed[i]) {
                Some(i) => {
                    indegree[i] = 0;
                    ready.push(Reverse(i));
                }
                None => break,
            }
        }
        order
    }

    /// A version string for a small index (so random batches share versions).
    fn small_version(v: u8) -> String {
        format!("2026-01-01T00:00:{v:02}.000000+00:00-{v:06}-u")
    }

    /// A random batch: few ids and versions (many duplicates, chains, cycles,
    /// self-parents and repeated parents), some relationship-only changes.
    fn arb_batch() -> impl proptest::strategy::Strategy<Value = Vec<SyncChange>> {
        use proptest::prelude::*;
        let one = prop_oneof![
            1 => Just(None),
            9 => (0u8..3, 0u8..6, proptest::collection::vec(0u8..6, 0..4)).prop_map(Some),
        ];
        proptest::collection::vec(one, 0..60).prop_map(|items| {
            items
                .into_iter()
                .map(|item| match item {
                    None => SyncChange {
                        change_type: ChangeType::Update,
                        entity: None,
                        relationships: vec![],
                    },
                    Some((id, v, parents)) => {
                        let parents: Vec<String> = parents.into_iter().map(small_version).collect();
                        let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
                        change(
                            ["a", "b", "c"][usize::from(id)],
                            &small_version(v),
                            &parents,
                            ChangeType::Update,
                        )
                    }
                })
                .collect()
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]
        #[test]
        fn the_apply_order_is_the_reference_order_on_random_batches(cs in arb_batch()) {
            proptest::prop_assert_eq!(entity_apply_order(&cs), reference_order(&cs));
        }
    }

    /// The work to order `cs`, checked against a bound linear in its size (times log n).
    fn assert_bounded(cs: &[SyncChange]) -> Vec<usize> {
        let n = cs.len() as u64;
        let parents: u64 = cs
            .iter()
            .filter_map(|c| c.entity.as_ref())
            .map(|e| e.parent_versions.len() as u64)
            .sum();
        let log = u64::from(u64::BITS - n.leading_zeros());
        let mut work = 0;
        let order = apply_order_counted(cs, &mut work);
        let bound = 8 * (n + parents) * log;
        assert!(
            work <= bound,
            "ordering {n} changes naming {parents} parents took {work} steps (bound {bound})"
        );
        order
    }

    #[test]
    fn duplicated_parents_and_their_children_order_in_n_log_n_steps() {
        // 10,000 copies of one version and 10,000 children naming it: the
        // reference makes 10^8 edges and 10^12 comparisons for this batch.
        const N: usize = 10_000;
        let mut cs: Vec<SyncChange> = (0..N)
            .map(|_| change("x", V2, &[V1, V1], ChangeType::Update))
            .collect();
        cs.extend((0..N).map(|_| change("x", V1, &[], ChangeType::Create)));
        let order = assert_bounded(&cs);
        let expected: Vec<usize> = (N..2 * N).chain(0..N).collect();
        assert_eq!(
            order, expected,
            "every parent copy first, then the children"
        );
    }

    #[test]
    fn many_cycles_order_in_n_log_n_steps() {
        // 10,000 two-change cycles, each behind the next: the reference scans
        // from the start for every one of them.
        const PAIRS: usize = 10_000;
        let mut cs = Vec::with_capacity(2 * PAIRS);
        for k in 0..PAIRS {
            let (a, b) = (small_version(1), small_version(2));
            let id = format!("cycle-{k}");
            cs.push(change(&id, &a, &[&b], ChangeType::Update));
            cs.push(change(&id, &b, &[&a], ChangeType::Update));
        }
        let order = assert_bounded(&cs);
        assert_eq!(order, (0..2 * PAIRS).collect::<Vec<_>>());
    }

    #[test]
    fn a_long_chain_and_copies_of_a_child_of_its_ends_order_in_n_log_n_steps() {
        // A chain of 10,000 versions pushed newest first, then 10,000 copies of
        // a version naming the chain's root and its tip.
        const N: usize = 10_000;
        let versions: Vec<String> = (0..N)
            .map(|i| format!("2026-01-01T00:00:00.{i:06}+00:00-{i:06}-u"))
            .collect();
        let mut cs = Vec::with_capacity(2 * N);
        for i in (1..N).rev() {
            cs.push(change(
                "chain",
                &versions[i],
                &[&versions[i - 1]],
                ChangeType::Update,
            ));
        }
        cs.push(change("chain", &versions[0], &[], ChangeType::Create));
        for _ in 0..N {
            cs.push(change(
                "chain",
                "2026-01-02T00:00:00.000000+00:00-000001-u",
                &[&versions[0], &versions[N - 1]],
                ChangeType::Update,
            ));
        }
        let order = assert_bounded(&cs);
        // The chain from its root, then the children in request order.
        let mut expected: Vec<usize> = (0..N).rev().collect();
        expected.extend(N..2 * N);
        assert_eq!(order, expected);
    }

    #[test]
    fn chain_in_one_batch_leaves_one_latest() {
        let b = batch(vec![
            change("a", V2, &[V1], ChangeType::Update),
            change("a", V1, &[], ChangeType::Create),
            change("a", V1, &[], ChangeType::Create),
        ]);
        let plan = plan_push(
            &b,
            &StoredState::default(),
            now(),
            &ResolverConfig::default(),
        )
        .unwrap();
        let flags: Vec<_> = plan
            .entities
            .iter()
            .map(|p| (p.row().version.as_str(), p.latest, p.became_latest))
            .collect();
        assert_eq!(flags, vec![(V1, false, true), (V2, true, true)]);
        assert_eq!(plan.outcome.applied, vec![EntityId::from("a")]);
        assert_eq!(
            plan.outcome.entity_outcomes[2].1,
            EntityOutcome::AlreadyPresent
        );
        assert!(plan.superseded.is_empty());
    }

    #[test]
    fn stale_push_loses_and_is_reported() {
        let b = batch(vec![change("a", V2, &[], ChangeType::Update)]);
        let mut state = StoredState::default();
        let stored = change("a", V3, &[V1], ChangeType::Update)
            .entity
            .unwrap()
            .to_entity(None, now());
        state.latest.insert("a".into(), stored.into());
        let plan = plan_push(&b, &state, now(), &ResolverConfig::default()).unwrap();
        assert_eq!(plan.outcome.entity_outcomes[0].1, EntityOutcome::Lost);
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].info.resolved_version.as_str(), V3);
        assert!(!plan.entities[0].latest && !plan.entities[0].became_latest);
        assert!(plan.superseded.is_empty());
    }

    #[test]
    fn a_merge_asks_for_history_then_merges() {
        use inbetweenies_conflict::Strategy;
        let config =
            ResolverConfig::default().with_strategy(EntityType::Room, Strategy::ThreeWayMerge);
        let with = |v: &str, parents: &[&str], content: serde_json::Value| {
            let mut c = change("a", v, parents, ChangeType::Update).entity.unwrap();
            c.content = content.as_object().unwrap().clone();
            c.to_entity(None, now())
        };
        let base = with(V1, &[], serde_json::json!({"x": 1, "y": 1}));
        let server = with(V2, &[V1], serde_json::json!({"x": 2, "y": 1}));
        let mut push = change("a", V3, &[V1], ChangeType::Update);
        push.entity.as_mut().unwrap().content = serde_json::json!({"x": 1, "y": 3})
            .as_object()
            .unwrap()
            .clone();
        let b = batch(vec![push]);
        let mut state = StoredState::default();
        state.latest.insert(
            "a".into(),
            StoredLatest {
                entity: None,
                ..server.clone().into()
            },
        );
        assert_eq!(
            plan_push(&b, &state, now(), &config),
            Err(MoreRows {
                latest: vec![EntityId::from("a")],
                history: vec![],
            })
        );
        state.latest.insert("a".into(), server.clone().into());
        assert_eq!(
            plan_push(&b, &state, now(), &config),
            Err(MoreRows {
                latest: vec![],
                history: vec![EntityId::from("a")],
            })
        );
        state.histories.insert("a".into(), vec![base, server]);
        let plan = plan_push(&b, &state, now(), &config).unwrap();
        let EntityOutcome::Merged(v) = &plan.outcome.entity_outcomes[0].1 else {
            panic!("not merged: {:?}", plan.outcome.entity_outcomes)
        };
        assert_eq!(plan.entities.len(), 2);
        assert!(!plan.entities[0].latest && plan.entities[1].latest);
        assert_eq!(plan.entities[1].row().version, v);
        assert_eq!(
            plan.entities[1].row().content.get("x"),
            Some(&serde_json::json!(2))
        );
        assert_eq!(
            plan.entities[1].row().content.get("y"),
            Some(&serde_json::json!(3))
        );
        assert_eq!(plan.superseded, vec![EntityId::from("a")]);
        assert_eq!(plan.conflicts[0].status, ConflictStatus::Auto);
    }

    #[test]
    fn deletes_and_relationship_endpoints() {
        let mut del = change("x", V1, &[], ChangeType::Delete);
        del.relationships.push(RelationshipChange {
            id: "r1".into(),
            from_entity_id: "a".into(),
            from_entity_version: V1.into(),
            to_entity_id: "b".into(),
            to_entity_version: V1.into(),
            relationship_type: RelationshipType::LocatedIn,
            properties: JsonObject::new(),
            user_id: None,
            created_at: None,
            updated_at: None,
        });
        let b = batch(vec![del, change("a", V1, &[], ChangeType::Create)]);
        let lookups = push_lookups(&b);
        assert_eq!(lookups.entity_ids.len(), 2);
        assert_eq!(lookups.entity_keys.len(), 3);
        let plan = plan_push(
            &b,
            &StoredState::default(),
            now(),
            &ResolverConfig::default(),
        )
        .unwrap();
        assert_eq!(
            plan.outcome.entity_outcomes[0].1,
            EntityOutcome::DeletedUnknown
        );
        assert_eq!(
            plan.outcome.relationship_outcomes[0].1,
            RelationshipOutcome::MissingEndpoint
        );
        assert!(plan.outcome.applied_relationships.is_empty());
        assert_eq!(
            plan.outcome.applied,
            vec![EntityId::from("x"), EntityId::from("a")]
        );
    }
}
