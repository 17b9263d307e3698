//! `--demo-data`: a sample home (1 home, 6 rooms, 30 devices with state, notes, procedures and their edges).

use goodies_store::{EntityQuery, PushBatch, ServerStore, StoreError};
use inbetweenies_proto::{
    ChangeType, EntityChange, EntityId, EntityType, JsonObject, RelationshipChange, RelationshipId,
    RelationshipType, SourceType, SyncChange, Timestamp, Version,
};
use serde_json::{json, Value};

const USER: &str = "demo";

const ROOMS: [(&str, i64, i64); 6] = [
    ("Living Room", 1, 32),
    ("Kitchen", 1, 18),
    ("Master Bedroom", 2, 20),
    ("Guest Bedroom", 2, 14),
    ("Bathroom", 2, 8),
    ("Garage", 1, 30),
];

/// Five devices per room: name, kind, state.
fn devices_for(room: &str) -> Vec<(String, &'static str, Value)> {
    vec![
        (
            format!("{room} Ceiling Light"),
            "light",
            json!({"power": "on", "brightness": 80}),
        ),
        (
            format!("{room} Lamp"),
            "light",
            json!({"power": "off", "brightness": 0}),
        ),
        (
            format!("{room} Thermostat"),
            "thermostat",
            json!({"target_c": 21.0, "current_c": 20.5, "mode": "heat"}),
        ),
        (
            format!("{room} Motion Sensor"),
            "sensor",
            json!({"motion": false, "battery": 87}),
        ),
        (
            format!("{room} Smart Plug"),
            "plug",
            json!({"power": "on", "watts": 12.5}),
        ),
    ]
}

fn obj(v: Value) -> JsonObject {
    match v {
        Value::Object(m) => m,
        _ => JsonObject::new(),
    }
}

struct Builder {
    changes: Vec<SyncChange>,
    now: Timestamp,
}

impl Builder {
    fn entity(
        &mut self,
        entity_type: EntityType,
        name: &str,
        content: Value,
    ) -> (EntityId, Version) {
        let id = EntityId::new_random();
        let version = Version::generate(self.now, USER);
        self.changes.push(SyncChange {
            change_type: ChangeType::Create,
            entity: Some(EntityChange {
                id: id.clone(),
                version: version.clone(),
                entity_type,
                name: name.to_owned(),
                content: obj(content),
                source_type: SourceType::Generated,
                user_id: USER.to_owned(),
                parent_versions: Vec::new(),
                checksum: None,
                created_at: None,
                updated_at: None,
            }),
            relationships: Vec::new(),
        });
        (id, version)
    }

    fn edge(&mut self, from: &(EntityId, Version), to: &(EntityId, Version), t: RelationshipType) {
        self.changes.push(SyncChange {
            change_type: ChangeType::Update,
            entity: None,
            relationships: vec![RelationshipChange {
                id: RelationshipId::new_random(),
                from_entity_id: from.0.clone(),
                from_entity_version: from.1.clone(),
                to_entity_id: to.0.clone(),
                to_entity_version: to.1.clone(),
                relationship_type: t,
                properties: JsonObject::new(),
                user_id: Some(USER.to_owned()),
                created_at: None,
                updated_at: None,
            }],
        });
    }
}

/// Loads the sample home in one transaction, unless a home already exists.
pub(crate) async fn load(store: &dyn ServerStore) -> Result<(), StoreError> {
    let homes = store
        .entities(&EntityQuery {
            entity_types: Some(vec![EntityType::Home]),
            limit: Some(1),
            ..EntityQuery::default()
        })
        .await?;
    if !homes.is_empty() {
        tracing::info!("demo data skipped: a home already exists");
        return Ok(());
    }
    let mut b = Builder {
        changes: Vec::new(),
        now: Timestamp::now(),
    };
    let home = b.entity(
        EntityType::Home,
        "Demo Home",
        json!({"address": "1 Example Street", "timezone": "UTC"}),
    );
    let mut devices = Vec::new();
    for (room_name, floor, area) in ROOMS {
        let room = b.entity(
            EntityType::Room,
            room_name,
            json!({"floor": floor, "area": area}),
        );
        b.edge(&room, &home, RelationshipType::LocatedIn);
        for (name, kind, state) in devices_for(room_name) {
            // The state lives in the content, beside the device's type and maker.
            let mut content = obj(state);
            content.insert("device_type".into(), Value::from(kind));
            content.insert("manufacturer".into(), Value::from("Acme"));
            let device = b.entity(EntityType::Device, &name, Value::Object(content));
            b.edge(&device, &room, RelationshipType::LocatedIn);
            devices.push((kind, device));
        }
    }
    let note = b.entity(
        EntityType::Note,
        "Wi-Fi and hub notes",
        json!({"text": "The hub is in the garage; reboot it by unplugging for 10 s."}),
    );
    let manual = b.entity(
        EntityType::Note,
        "Thermostat manual notes",
        json!({"text": "Hold the mode button for 3 s to switch between heat and cool."}),
    );
    let reset = b.entity(
        EntityType::Procedure,
        "Reset a smart plug",
        json!({"steps": ["Hold the button for 10 s", "Wait for the blue light", "Re-pair in the app"]}),
    );
    let away = b.entity(
        EntityType::Procedure,
        "Set thermostats to away",
        json!({"steps": ["Open each thermostat", "Set the target to 16 C", "Confirm"]}),
    );
    for (kind, device) in &devices {
        match *kind {
            "thermostat" => {
                b.edge(device, &manual, RelationshipType::DocumentedBy);
                b.edge(&away, device, RelationshipType::ProcedureFor);
            }
            "plug" => b.edge(&reset, device, RelationshipType::ProcedureFor),
            _ => {}
        }
    }
    b.edge(&home, &note, RelationshipType::DocumentedBy);
    let count = b.changes.len();
    let outcome = store
        .apply_push(PushBatch {
            device_id: "demo-data".to_owned(),
            user_id: USER.to_owned(),
            changes: b.changes,
        })
        .await?;
    tracing::info!(
        changes = count,
        entities = outcome.applied.len(),
        relationships = outcome.applied_relationships.len(),
        "demo data loaded"
    );
    Ok(())
}
