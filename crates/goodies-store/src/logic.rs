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
//! 3. If a conflict's strategy needs earlier versions of an id (a three-way
//!    merge walks the `parent_versions` DAG) that the state does not hold,
//!    [`plan_push`] answers [`NeedHistory`] with those ids: the backend loads
//!    every stored version of them into [`StoredState::histories`] and plans
//!    again. Ids are independent, so a second plan never needs more.
//! 4. The backend writes the plan: first it clears the latest flag of the
//!    superseded ids, then inserts the entity rows, the relationships and the
//!    conflicts, assigning sequence numbers in plan order.
//!
//! [`manual_resolution`] builds the version a person's decision on a queued
//! conflict writes.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use inbetweenies_conflict::{conflict_info, resolve, Ancestry, Resolution, ResolverConfig, Side};
use inbetweenies_proto::{
    is_tombstone, ChangeType, ConflictInfo, Entity, EntityId, Relationship, RelationshipId,
    SyncChange, Timestamp, Version, DELETED_KEY,
};

use crate::types::{
    ConflictStatus, EntityOutcome, ManualResolution, PushBatch, PushOutcome, RelationshipOutcome,
};

/// The order in which a batch's entity changes are applied: request order,
/// except that a change whose `parent_versions` names the version of another
/// change of the same id in the batch comes after it (a stable topological
/// order; on a cycle the rest follow in request order).
///
/// Returns indices into `changes`; changes without an entity keep their place.
pub fn entity_apply_order(changes: &[SyncChange]) -> Vec<usize> {
    let n = changes.len();
    // (id, version) -> indices of changes pushing it.
    let mut by_key: HashMap<(&EntityId, &Version), Vec<usize>> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        if let Some(e) = &c.entity {
            by_key.entry((&e.id, &e.version)).or_default().push(i);
        }
    }
    let mut indegree = vec![0usize; n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut any_edge = false;
    for (i, c) in changes.iter().enumerate() {
        let Some(e) = &c.entity else { continue };
        let mut parents_seen: HashSet<usize> = HashSet::new();
        for p in &e.parent_versions {
            if p == &e.version {
                continue;
            }
            if let Some(parents) = by_key.get(&(&e.id, p)) {
                for &j in parents {
                    if j != i && parents_seen.insert(j) {
                        children[j].push(i);
                        indegree[i] += 1;
                        any_edge = true;
                    }
                }
            }
        }
    }
    if !any_edge {
        return (0..n).collect();
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
        // A cycle: release the earliest change not yet placed and go on.
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

/// What a backend must read before planning a push.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PushLookups {
    /// Distinct ids of the pushed entity versions: read the latest row of each.
    pub entity_ids: Vec<EntityId>,
    /// Distinct `(id, version)` pairs (pushed versions and relationship
    /// endpoints): read which are stored.
    pub entity_keys: Vec<(EntityId, Version)>,
    /// Distinct pushed relationship ids: read which are stored.
    pub relationship_ids: Vec<RelationshipId>,
}

/// Names what [`plan_push`] needs to know about the store for this batch.
pub fn push_lookups(batch: &PushBatch) -> PushLookups {
    let mut ids = HashSet::new();
    let mut keys = HashSet::new();
    let mut rels = HashSet::new();
    let mut out = PushLookups::default();
    for c in &batch.changes {
        if let Some(e) = &c.entity {
            if ids.insert(&e.id) {
                out.entity_ids.push(e.id.clone());
            }
            if keys.insert((&e.id, &e.version)) {
                out.entity_keys.push((e.id.clone(), e.version.clone()));
            }
        }
    }
    for c in &batch.changes {
        for r in &c.relationships {
            if rels.insert(&r.id) {
                out.relationship_ids.push(r.id.clone());
            }
            for key in [
                (&r.from_entity_id, &r.from_entity_version),
                (&r.to_entity_id, &r.to_entity_version),
            ] {
                if keys.insert(key) {
                    out.entity_keys.push((key.0.clone(), key.1.clone()));
                }
            }
        }
    }
    out
}

/// What the store holds, as far as one batch is concerned (read inside the write transaction).
#[derive(Clone, Debug, Default)]
pub struct StoredState {
    /// The latest row of each looked-up id that exists.
    pub latest: HashMap<EntityId, Entity>,
    /// The looked-up `(id, version)` pairs that are stored.
    pub existing_keys: HashSet<(EntityId, Version)>,
    /// The looked-up relationship ids that are stored.
    pub existing_relationships: HashSet<RelationshipId>,
    /// Every stored version of the ids [`NeedHistory`] named (any order).
    pub histories: HashMap<EntityId, Vec<Entity>>,
}

/// Planning needs every stored version of these ids (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeedHistory(pub Vec<EntityId>);

/// One entity row a push inserts.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedEntity {
    /// The row.
    pub entity: Entity,
    /// Whether the row is the latest of its id once the whole batch is applied.
    pub latest: bool,
    /// Whether the row became latest when it was applied (false for a conflict's loser).
    pub became_latest: bool,
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
pub struct PushPlan {
    /// Entity rows to insert, in sequence order.
    pub entities: Vec<PlannedEntity>,
    /// Ids whose stored latest row stops being latest (clear its flag before inserting).
    pub superseded: Vec<EntityId>,
    /// Relationships to insert, in sequence order (after every entity row).
    pub relationships: Vec<Relationship>,
    /// Conflicts to record, in the order they were decided.
    pub conflicts: Vec<PlannedConflict>,
    /// What to return to the caller.
    pub outcome: PushOutcome,
}

impl PushPlan {
    /// Whether the plan writes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty() && self.relationships.is_empty() && self.conflicts.is_empty()
    }

    /// Number of sequence numbers the plan's rows take.
    pub fn rows(&self) -> usize {
        self.entities.len() + self.relationships.len()
    }
}

/// Earlier versions of one id, for the resolver: rows planned in this batch,
/// then the stored history if it was loaded. Records when it was asked about
/// a version while the stored history was not loaded.
struct IdAncestry<'a> {
    planned: Vec<&'a Entity>,
    stored: Option<&'a [Entity]>,
    missed: RefCell<bool>,
}

impl Ancestry for IdAncestry<'_> {
    fn version(&self, v: &Version) -> Option<Entity> {
        if let Some(e) = self.planned.iter().find(|e| &e.version == v) {
            return Some((*e).clone());
        }
        match self.stored {
            Some(rows) => rows.iter().find(|e| &e.version == v).cloned(),
            None => {
                *self.missed.borrow_mut() = true;
                None
            }
        }
    }
}

/// Plans a pushed batch against the looked-up state (see the module docs).
///
/// `now` is the receipt time: it is the conflict resolver's "now", the
/// fallback edit time of a version string that does not parse, and the time
/// given to relationships that carry none. Deterministic for equal inputs.
pub fn plan_push(
    batch: &PushBatch,
    state: &StoredState,
    now: Timestamp,
    config: &ResolverConfig,
) -> Result<PushPlan, NeedHistory> {
    let changes = &batch.changes;
    let mut plan = PushPlan::default();
    let mut outcomes: Vec<Option<(Option<EntityId>, EntityOutcome)>> = vec![None; changes.len()];
    // The latest version of each id as the batch goes on.
    let mut latest: HashMap<EntityId, Entity> = HashMap::new();
    // Index in plan.entities of the planned row that is currently latest, per id.
    let mut planned_latest: HashMap<EntityId, usize> = HashMap::new();
    // Indices in plan.entities of every planned row, per id.
    let mut planned_by_id: HashMap<EntityId, Vec<usize>> = HashMap::new();
    let mut planned_keys: HashSet<(EntityId, Version)> = HashSet::new();
    let mut superseded: HashSet<EntityId> = HashSet::new();
    let mut need_history: Vec<EntityId> = Vec::new();

    for idx in entity_apply_order(changes) {
        let change = &changes[idx];
        let Some(ec) = &change.entity else {
            outcomes[idx] = Some((None, EntityOutcome::NotAcked("no entity".to_owned())));
            continue;
        };
        let key = (ec.id.clone(), ec.version.clone());
        if state.existing_keys.contains(&key) || planned_keys.contains(&key) {
            outcomes[idx] = Some((Some(ec.id.clone()), EntityOutcome::AlreadyPresent));
            continue;
        }
        let current: Option<&Entity> = latest.get(&ec.id).or_else(|| state.latest.get(&ec.id));
        let is_delete = change.change_type == ChangeType::Delete || is_tombstone(&ec.content);
        if is_delete {
            match current {
                None => {
                    outcomes[idx] = Some((Some(ec.id.clone()), EntityOutcome::DeletedUnknown));
                    continue;
                }
                Some(c) if c.is_deleted() => {
                    outcomes[idx] = Some((Some(ec.id.clone()), EntityOutcome::AlreadyDeleted));
                    continue;
                }
                Some(_) => {}
            }
        }
        let mut entity = ec.to_entity(current.map(|c| c.created_at), now);
        if is_delete {
            entity
                .content
                .insert(DELETED_KEY.to_owned(), serde_json::Value::Bool(true));
        }

        // What to insert: (row, became latest) pairs, the outcome and an optional conflict.
        let (rows, outcome, conflict): (
            Vec<(Entity, bool)>,
            EntityOutcome,
            Option<PlannedConflict>,
        ) = match current {
            None => (vec![(entity, true)], EntityOutcome::Applied, None),
            Some(cur) if entity.parent_versions.contains(&cur.version) => {
                (vec![(entity, true)], EntityOutcome::Applied, None)
            }
            Some(cur) => {
                let cur = cur.clone();
                let ancestry = IdAncestry {
                    planned: planned_by_id
                        .get(&ec.id)
                        .map(|ix| ix.iter().map(|&i| &plan.entities[i].entity).collect())
                        .unwrap_or_default(),
                    stored: state.histories.get(&ec.id).map(Vec::as_slice),
                    missed: RefCell::new(false),
                };
                let resolution = resolve(&cur, &entity, now, config, &ancestry);
                if *ancestry.missed.borrow() {
                    need_history.push(ec.id.clone());
                    outcomes[idx] = Some((Some(ec.id.clone()), EntityOutcome::Applied));
                    continue;
                }
                let info = conflict_info(&cur, &entity, &resolution);
                match resolution {
                    Resolution::FastForward => (vec![(entity, true)], EntityOutcome::Applied, None),
                    Resolution::Winner {
                        winner: Side::Client,
                        ..
                    } => (
                        vec![(entity, true)],
                        EntityOutcome::Won,
                        info.map(|info| PlannedConflict {
                            info,
                            status: ConflictStatus::Auto,
                        }),
                    ),
                    Resolution::Winner {
                        winner: Side::Server,
                        ..
                    } => (
                        vec![(entity, false)],
                        EntityOutcome::Lost,
                        info.map(|info| PlannedConflict {
                            info,
                            status: ConflictStatus::Auto,
                        }),
                    ),
                    Resolution::Merged { entity: merged, .. } => {
                        let v = merged.version.clone();
                        (
                            vec![(entity, false), (merged, true)],
                            EntityOutcome::Merged(v),
                            info.map(|info| PlannedConflict {
                                info,
                                status: ConflictStatus::Auto,
                            }),
                        )
                    }
                    Resolution::Manual { .. } => (
                        vec![(entity, false)],
                        EntityOutcome::Queued,
                        info.map(|info| PlannedConflict {
                            info,
                            status: ConflictStatus::Pending,
                        }),
                    ),
                }
            }
        };

        for (row, became_latest) in rows {
            let id = row.id.clone();
            planned_keys.insert((id.clone(), row.version.clone()));
            let i = plan.entities.len();
            if became_latest {
                match planned_latest.insert(id.clone(), i) {
                    Some(prev) => plan.entities[prev].latest = false,
                    None => {
                        if state.latest.contains_key(&id) && superseded.insert(id.clone()) {
                            plan.superseded.push(id.clone());
                        }
                    }
                }
                latest.insert(id.clone(), row.clone());
            }
            planned_by_id.entry(id).or_default().push(i);
            plan.entities.push(PlannedEntity {
                entity: row,
                latest: became_latest,
                became_latest,
            });
        }
        if let Some(c) = conflict {
            plan.outcome.conflicts.push(c.info.clone());
            plan.conflicts.push(c);
        }
        outcomes[idx] = Some((Some(ec.id.clone()), outcome));
    }

    if !need_history.is_empty() {
        need_history.sort();
        need_history.dedup();
        return Err(NeedHistory(need_history));
    }

    // Relationships, from every change in request order.
    let mut planned_rels: HashSet<RelationshipId> = HashSet::new();
    let mut acked_rels: HashSet<RelationshipId> = HashSet::new();
    let key_exists = |id: &EntityId, v: &Version, planned_keys: &HashSet<(EntityId, Version)>| {
        let k = (id.clone(), v.clone());
        state.existing_keys.contains(&k) || planned_keys.contains(&k)
    };
    for change in changes {
        for rc in &change.relationships {
            let outcome =
                if state.existing_relationships.contains(&rc.id) || planned_rels.contains(&rc.id) {
                    RelationshipOutcome::AlreadyPresent
                } else if key_exists(&rc.from_entity_id, &rc.from_entity_version, &planned_keys)
                    && key_exists(&rc.to_entity_id, &rc.to_entity_version, &planned_keys)
                {
                    planned_rels.insert(rc.id.clone());
                    plan.relationships
                        .push(rc.to_relationship(&batch.user_id, now));
                    RelationshipOutcome::Applied
                } else {
                    RelationshipOutcome::MissingEndpoint
                };
            if outcome != RelationshipOutcome::MissingEndpoint && acked_rels.insert(rc.id.clone()) {
                plan.outcome.applied_relationships.push(rc.id.clone());
            }
            plan.outcome
                .relationship_outcomes
                .push((rc.id.clone(), outcome));
        }
    }

    let mut acked: HashSet<EntityId> = HashSet::new();
    for (id, outcome) in outcomes.into_iter().flatten() {
        if let Some(id) = &id {
            if outcome.is_acked() && acked.insert(id.clone()) {
                plan.outcome.applied.push(id.clone());
            }
        }
        plan.outcome.entity_outcomes.push((id, outcome));
    }
    plan.outcome.entities_written = plan.entities.len() as u64;
    plan.outcome.relationships_written = plan.relationships.len() as u64;
    Ok(plan)
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
            .map(|p| (p.entity.version.as_str(), p.latest, p.became_latest))
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
        state.latest.insert("a".into(), stored);
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
        state.latest.insert("a".into(), server.clone());
        assert_eq!(
            plan_push(&b, &state, now(), &config),
            Err(NeedHistory(vec![EntityId::from("a")]))
        );
        state.histories.insert("a".into(), vec![base, server]);
        let plan = plan_push(&b, &state, now(), &config).unwrap();
        let EntityOutcome::Merged(v) = &plan.outcome.entity_outcomes[0].1 else {
            panic!("not merged: {:?}", plan.outcome.entity_outcomes)
        };
        assert_eq!(plan.entities.len(), 2);
        assert!(!plan.entities[0].latest && plan.entities[1].latest);
        assert_eq!(&plan.entities[1].entity.version, v);
        assert_eq!(
            plan.entities[1].entity.content.get("x"),
            Some(&serde_json::json!(2))
        );
        assert_eq!(
            plan.entities[1].entity.content.get("y"),
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
