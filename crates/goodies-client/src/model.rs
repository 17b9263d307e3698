//! Typed views in the seeds' vocabulary (house/home, room, device) over graph entities.
//!
//! A home is a `home` entity; a room is a `room` entity placed in a home; a device is a
//! `device` entity placed in a room, and its state is its `content`.
//!
//! What this client writes is `room located_in home` and `device located_in room`. What
//! it reads is any containment edge — `located_in`, `part_of`, `contained_in`, or
//! `contains` — in either direction, since the types of the two ends say which is
//! inside the other: the Python reference draws `room located_in zone`, `zone part_of
//! home`, `room part_of home` and `device located_in room`. A room placed only in a
//! zone is in the zone's home. When an entity has several such edges, the one with the
//! latest `updated_at` wins. A device's type is `content.device_type`, or the
//! reference's `content.type`.

use inbetweenies_proto::{Entity, EntityId, JsonObject, Timestamp, Version};
use serde::Serialize;
use serde_json::Value;

/// Content key of a room's floor.
pub const FLOOR_KEY: &str = "floor";
/// Content key of a device's type (e.g. `light`).
pub const DEVICE_TYPE_KEY: &str = "device_type";
/// Content key the Python reference keeps a device's type under; read when
/// [`DEVICE_TYPE_KEY`] is absent.
pub const LEGACY_DEVICE_TYPE_KEY: &str = "type";
/// Content key of a device's manufacturer.
pub const MANUFACTURER_KEY: &str = "manufacturer";

/// A home (the seeds' "house").
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Home {
    /// Entity id.
    pub id: EntityId,
    /// Name.
    pub name: String,
    /// Free content.
    pub content: JsonObject,
    /// Latest version.
    pub version: Version,
    /// Edit time of the latest version.
    pub updated_at: Timestamp,
}

impl From<Entity> for Home {
    fn from(e: Entity) -> Self {
        Home {
            id: e.id,
            name: e.name,
            content: e.content,
            version: e.version,
            updated_at: e.updated_at,
        }
    }
}

/// A room of a home.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Room {
    /// Entity id.
    pub id: EntityId,
    /// Name.
    pub name: String,
    /// The home it is located in, if any.
    pub home_id: Option<EntityId>,
    /// Floor number, if set.
    pub floor: Option<i64>,
    /// Free content.
    pub content: JsonObject,
    /// Latest version.
    pub version: Version,
    /// Edit time of the latest version.
    pub updated_at: Timestamp,
}

impl Room {
    pub(crate) fn from_entity(e: Entity, home_id: Option<EntityId>) -> Self {
        Room {
            floor: e.content.get(FLOOR_KEY).and_then(Value::as_i64),
            id: e.id,
            name: e.name,
            home_id,
            content: e.content,
            version: e.version,
            updated_at: e.updated_at,
        }
    }
}

/// A device; its state is its content.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Device {
    /// Entity id.
    pub id: EntityId,
    /// Name.
    pub name: String,
    /// The room it is located in, if any.
    pub room_id: Option<EntityId>,
    /// Device type (e.g. `light`), if set.
    pub device_type: Option<String>,
    /// Manufacturer, if set.
    pub manufacturer: Option<String>,
    /// The device's state: its whole content.
    pub state: JsonObject,
    /// Latest version.
    pub version: Version,
    /// Edit time of the latest version.
    pub updated_at: Timestamp,
}

impl Device {
    pub(crate) fn from_entity(e: Entity, room_id: Option<EntityId>) -> Self {
        let text = |k: &str| e.content.get(k).and_then(Value::as_str).map(str::to_owned);
        Device {
            device_type: text(DEVICE_TYPE_KEY).or_else(|| text(LEGACY_DEVICE_TYPE_KEY)),
            manufacturer: text(MANUFACTURER_KEY),
            id: e.id,
            name: e.name,
            room_id,
            state: e.content,
            version: e.version,
            updated_at: e.updated_at,
        }
    }
}
