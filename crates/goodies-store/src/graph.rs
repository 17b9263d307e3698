//! Graph queries in the seeds' vocabulary, built on [`GraphRead`].

use inbetweenies_proto::{Entity, EntityId, EntityType, RelationshipType};

use crate::api::GraphRead;
use crate::error::Result;
use crate::types::Direction;

/// Entities of `of_type` located in `container` (edges `x -located_in-> container`).
pub async fn located_in(
    store: &dyn GraphRead,
    container: &EntityId,
    of_type: &EntityType,
) -> Result<Vec<Entity>> {
    let mut out: Vec<Entity> = store
        .neighbours(
            container,
            Some(&RelationshipType::LocatedIn),
            Direction::Incoming,
        )
        .await?
        .into_iter()
        .map(|n| n.entity)
        .filter(|e| &e.entity_type == of_type && !e.is_deleted())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    out.dedup_by(|a, b| a.id == b.id);
    Ok(out)
}

/// The rooms of a home.
pub async fn rooms_of_home(store: &dyn GraphRead, home: &EntityId) -> Result<Vec<Entity>> {
    located_in(store, home, &EntityType::Room).await
}

/// The devices of a room.
pub async fn devices_of_room(store: &dyn GraphRead, room: &EntityId) -> Result<Vec<Entity>> {
    located_in(store, room, &EntityType::Device).await
}

/// The version of `id` that was the graph's at time `at` (by receipt time): the last
/// version that had become latest by then. Losing versions never count; a tombstone
/// counts (the id was deleted then). `None` when the id did not exist yet.
pub async fn entity_as_of(
    store: &dyn GraphRead,
    id: &EntityId,
    at: inbetweenies_proto::Timestamp,
) -> Result<Option<Entity>> {
    Ok(store
        .history(id)
        .await?
        .into_iter()
        .filter(|s| s.became_latest && s.received_at <= at)
        .max_by_key(|s| s.seq)
        .map(|s| s.entity))
}

/// The graph as it was at one time: the entities that existed then (tombstones and
/// losing versions left out) and the edges between them.
#[derive(Clone, Debug, Default)]
pub struct GraphAsOf {
    /// Every entity that existed, at its version then, by id.
    pub entities: std::collections::BTreeMap<EntityId, Entity>,
    /// Every edge stored by then whose endpoints both existed, in sequence order.
    pub relationships: Vec<inbetweenies_proto::Relationship>,
}

impl GraphAsOf {
    /// Reads the graph as of `at` (one pass over the latest-by-then rows and the edges).
    pub async fn read(
        store: &dyn crate::api::ServerStore,
        at: inbetweenies_proto::Timestamp,
    ) -> Result<GraphAsOf> {
        let entities: std::collections::BTreeMap<EntityId, Entity> = store
            .entities_as_of(at, None)
            .await?
            .into_iter()
            .map(|e| (e.id.clone(), e))
            .collect();
        let relationships = store
            .relationships_as_of(at)
            .await?
            .into_iter()
            .filter(|r| {
                entities.contains_key(&r.from_entity_id) && entities.contains_key(&r.to_entity_id)
            })
            .collect();
        Ok(GraphAsOf {
            entities,
            relationships,
        })
    }

    /// The shortest path from `from` to `to` over edges in either direction, at most
    /// `max_depth` edges long (breadth-first, neighbours in id order); `None` when either
    /// end did not exist or no path was that short.
    pub fn path(&self, from: &EntityId, to: &EntityId, max_depth: usize) -> Option<Vec<EntityId>> {
        use std::collections::{BTreeMap, BTreeSet, VecDeque};
        if !self.entities.contains_key(from) || !self.entities.contains_key(to) {
            return None;
        }
        let mut adjacent: BTreeMap<&EntityId, BTreeSet<&EntityId>> = BTreeMap::new();
        for r in &self.relationships {
            adjacent
                .entry(&r.from_entity_id)
                .or_default()
                .insert(&r.to_entity_id);
            adjacent
                .entry(&r.to_entity_id)
                .or_default()
                .insert(&r.from_entity_id);
        }
        let mut came_from: BTreeMap<&EntityId, Option<&EntityId>> = BTreeMap::new();
        came_from.insert(from, None);
        let mut queue = VecDeque::from([(from, 0usize)]);
        while let Some((here, depth)) = queue.pop_front() {
            if here == to {
                let mut path = vec![here.clone()];
                let mut cur = here;
                while let Some(Some(prev)) = came_from.get(cur) {
                    path.push((*prev).clone());
                    cur = prev;
                }
                path.reverse();
                return Some(path);
            }
            if depth == max_depth {
                continue;
            }
            for next in adjacent.get(here).into_iter().flatten() {
                if !came_from.contains_key(next) {
                    came_from.insert(next, Some(here));
                    queue.push_back((next, depth + 1));
                }
            }
        }
        None
    }
}
