//! Which entity types each relationship type may join (source type, target type), as the
//! reference server checks before `create_relationship` stores an edge. A type pair not
//! listed is refused; `depends_on` and `contained_in` list no pair.

use inbetweenies_proto::{EntityType, RelationshipType};

/// `(relationship type, from type, to type)` triples that are allowed.
pub const ALLOWED: &[(&str, &str, &str)] = &[
    ("located_in", "device", "room"),
    ("located_in", "device", "zone"),
    ("located_in", "room", "zone"),
    ("located_in", "room", "home"),
    ("located_in", "zone", "home"),
    ("controls", "device", "device"),
    ("controls", "automation", "device"),
    ("controls", "schedule", "device"),
    ("controls", "schedule", "automation"),
    ("connects_to", "room", "room"),
    ("connects_to", "door", "room"),
    ("connects_to", "window", "room"),
    ("connects_to", "zone", "zone"),
    ("part_of", "room", "home"),
    ("part_of", "zone", "home"),
    ("part_of", "device", "zone"),
    ("documented_by", "device", "manual"),
    ("documented_by", "device", "procedure"),
    ("documented_by", "home", "manual"),
    ("documented_by", "room", "note"),
    ("procedure_for", "procedure", "device"),
    ("procedure_for", "procedure", "home"),
    ("triggered_by", "automation", "device"),
    ("triggered_by", "automation", "schedule"),
    ("manages", "automation", "device"),
    ("manages", "schedule", "automation"),
    ("monitors", "device", "room"),
    ("monitors", "device", "zone"),
    ("monitors", "automation", "device"),
    ("automates", "automation", "device"),
    ("automates", "automation", "room"),
    ("automates", "automation", "zone"),
    ("controlled_by_app", "device", "app"),
    ("controlled_by_app", "home", "app"),
    ("controlled_by_app", "automation", "app"),
    ("has_blob", "device", "note"),
    ("has_blob", "manual", "note"),
    ("has_blob", "app", "note"),
    ("has_blob", "home", "note"),
];

/// Whether `relationship_type` may join an entity of type `from` to one of type `to`.
pub fn allowed(relationship_type: &RelationshipType, from: &EntityType, to: &EntityType) -> bool {
    ALLOWED.iter().any(|(r, f, t)| {
        *r == relationship_type.as_str() && *f == from.as_str() && *t == to.as_str()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_matters_and_unlisted_types_join_nothing() {
        assert!(allowed(
            &RelationshipType::LocatedIn,
            &EntityType::Device,
            &EntityType::Room
        ));
        assert!(!allowed(
            &RelationshipType::LocatedIn,
            &EntityType::Room,
            &EntityType::Device
        ));
        assert!(!allowed(
            &RelationshipType::DependsOn,
            &EntityType::Device,
            &EntityType::Device
        ));
        for (r, _, _) in ALLOWED {
            assert!(RelationshipType::parse(r).is_known(), "{r}");
        }
    }
}
