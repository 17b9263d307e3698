//! Rooms with a type (the seeds' `room create --type living_room`).

use inbetweenies_proto::{EntityId, EntityType, JsonObject, RelationshipType};
use serde_json::Value;

use crate::client::BlowingOffClient;
use crate::error::ClientError;
use crate::model::{Room, FLOOR_KEY};

/// Content key of a room's type (e.g. `living_room`).
pub const ROOM_TYPE_KEY: &str = "room_type";

impl BlowingOffClient {
    /// Creates a room located in a home, with an optional floor and room type, as one
    /// version (`content.floor`, `content.room_type`).
    pub async fn create_room_with_type(
        &self,
        home_id: &EntityId,
        name: &str,
        floor: Option<i64>,
        room_type: Option<&str>,
    ) -> Result<Room, ClientError> {
        match self.entity(home_id).await? {
            Some(h) if h.entity_type == EntityType::Home && !h.is_deleted() => {}
            _ => return Err(ClientError::NotFound(format!("home {home_id}"))),
        }
        let mut content = JsonObject::new();
        if let Some(f) = floor {
            content.insert(FLOOR_KEY.into(), Value::from(f));
        }
        if let Some(t) = room_type.map(str::trim).filter(|t| !t.is_empty()) {
            content.insert(ROOM_TYPE_KEY.into(), Value::from(t));
        }
        let e = self.create_entity(EntityType::Room, name, content).await?;
        self.relate(
            &e.id,
            home_id,
            RelationshipType::LocatedIn,
            JsonObject::new(),
        )
        .await?;
        Ok(Room::from_entity(e, Some(home_id.clone())))
    }
}
