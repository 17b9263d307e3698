//! Values outside the known vocabulary that the server accepted (PROTOCOL §4.2, §12.5).
//!
//! Unless the server is strict, an unknown `entity_type`, `source_type` or
//! `relationship_type` (or a filter naming an unknown entity type) is data: it
//! is stored and served back unchanged. Each one is counted here, server-wide,
//! per field and value, and logged at `info` the first time this process sees
//! that field and value (not per row). `GET /api/v1/sync/vocabulary` shows the
//! counts.

use std::collections::BTreeMap;
use std::sync::Mutex;

use inbetweenies_proto::{EntityType, RelationshipType, SourceType, SyncRequest};
use serde_json::{json, Value};

/// The most distinct (field, value) pairs counted one by one; past it, further
/// new values of a field are counted together under [`OVERFLOW`], so a client
/// sending random strings cannot grow the server's memory without bound.
pub(crate) const MAX_DISTINCT: usize = 1_000;

/// The key under which values past [`MAX_DISTINCT`] are counted.
pub(crate) const OVERFLOW: &str = "<other>";

/// The fields whose values are counted, as named in the counters.
pub(crate) mod field {
    /// An entity's `entity_type`.
    pub const ENTITY_TYPE: &str = "entity_type";
    /// An entity's `source_type`.
    pub const SOURCE_TYPE: &str = "source_type";
    /// A relationship's `relationship_type`.
    pub const RELATIONSHIP_TYPE: &str = "relationship_type";
    /// An entry of a filter's `entity_types`.
    pub const FILTER_ENTITY_TYPE: &str = "filters.entity_types";
}

/// Server-wide counts of accepted unknown values.
#[derive(Debug, Default)]
pub(crate) struct UnknownValues {
    counts: Mutex<BTreeMap<(&'static str, String), u64>>,
}

impl UnknownValues {
    /// Counts `n` occurrences of `value` in `field`; logs the pair the first time.
    pub(crate) fn record(&self, field: &'static str, value: &str, n: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let key = (field, value.to_owned());
        if let Some(c) = counts.get_mut(&key) {
            *c += n;
            return;
        }
        if counts.len() >= MAX_DISTINCT {
            *counts.entry((field, OVERFLOW.to_owned())).or_insert(0) += n;
            return;
        }
        tracing::info!(
            field,
            value,
            "accepted a value outside the known vocabulary; it is stored and served unchanged"
        );
        counts.insert(key, n);
    }

    /// Counts the unknown values of a sync request (each entity, relationship
    /// and filter entry once).
    pub(crate) fn record_request(&self, req: &SyncRequest) {
        let mut seen: BTreeMap<(&'static str, &str), u64> = BTreeMap::new();
        for c in &req.changes {
            if let Some(e) = &c.entity {
                if !e.entity_type.is_known() {
                    *seen
                        .entry((field::ENTITY_TYPE, e.entity_type.as_str()))
                        .or_default() += 1;
                }
                if !e.source_type.is_known() {
                    *seen
                        .entry((field::SOURCE_TYPE, e.source_type.as_str()))
                        .or_default() += 1;
                }
            }
            for r in c
                .relationships
                .iter()
                .filter(|r| !r.relationship_type.is_known())
            {
                *seen
                    .entry((field::RELATIONSHIP_TYPE, r.relationship_type.as_str()))
                    .or_default() += 1;
            }
        }
        if let Some(types) = req.filters.as_ref().and_then(|f| f.entity_types.as_ref()) {
            self.record_filter(types);
        }
        for ((f, v), n) in seen {
            self.record(f, v, n);
        }
    }

    /// Counts the unknown entries of a filter's entity types.
    pub(crate) fn record_filter(&self, types: &[EntityType]) {
        for t in types.iter().filter(|t| !t.is_known()) {
            self.record(field::FILTER_ENTITY_TYPE, t.as_str(), 1);
        }
    }

    /// `{field: {value: count}}`, fields and values in byte order.
    pub(crate) fn to_json(&self) -> Value {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
        for ((f, v), n) in counts.iter() {
            out.entry(f).or_default().insert(v.as_str(), *n);
        }
        json!(out)
    }
}

/// The known values of each open enumeration.
pub(crate) fn known_json() -> Value {
    json!({
        field::ENTITY_TYPE: EntityType::KNOWN_STRS,
        field::SOURCE_TYPE: SourceType::KNOWN_STRS,
        field::RELATIONSHIP_TYPE: RelationshipType::KNOWN_STRS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_field_and_value_and_bounds_the_distinct_values() {
        let u = UnknownValues::default();
        u.record(field::SOURCE_TYPE, "None", 2);
        u.record(field::SOURCE_TYPE, "None", 1);
        u.record(field::ENTITY_TYPE, "DEVICE", 1);
        assert_eq!(
            u.to_json(),
            json!({"entity_type": {"DEVICE": 1}, "source_type": {"None": 3}})
        );
        for i in 0..MAX_DISTINCT + 10 {
            u.record(field::ENTITY_TYPE, &format!("t{i}"), 1);
        }
        let counts = u.to_json();
        let entity = counts["entity_type"].as_object().expect("object");
        assert_eq!(
            entity.len(),
            MAX_DISTINCT - 1 + 1,
            "bounded, plus the overflow key"
        );
        assert_eq!(entity[OVERFLOW], 12);
    }
}
