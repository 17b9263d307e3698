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
