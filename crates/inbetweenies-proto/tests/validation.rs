//! Request validation: each kind of bad input gives its own error at its own path, and nothing panics.

use inbetweenies_proto::validate::{
    parse_json, parse_sync_request, sync_request_checked, sync_request_from_value, Checks,
    MAX_KEY_BYTES, MAX_NAME_BYTES,
};
use inbetweenies_proto::*;
use proptest::prelude::*;
use serde_json::{json, Value};

/// A valid request touching every field: one entity change carrying one relationship.
fn valid() -> Value {
    json!({
        "protocol_version": "inbetweenies-v2",
        "device_id": "phone-1",
        "user_id": "alice",
        "sync_type": "delta",
        "changes": [{
            "change_type": "create",
            "entity": {
                "id": "5f1c7f5e-8f7e-4a57-9d53-3c3f1e0b6c11",
                "version": "2026-06-15T09:41:02.581234+00:00-000417-alice",
                "entity_type": "device",
                "name": "Lamp",
                "content": {"power": "on"},
                "source_type": "manual",
                "user_id": "alice",
                "parent_versions": [],
                "checksum": null
            },
            "relationships": [{
                "id": "0b0e9f6a-3f55-4d1c-9d0c-8b1d3c1e2f00",
                "from_entity_id": "5f1c7f5e-8f7e-4a57-9d53-3c3f1e0b6c11",
                "from_entity_version": "2026-06-15T09:41:02.581234+00:00-000417-alice",
                "to_entity_id": "room-1",
                "to_entity_version": "2026-06-15T09:40:00.000000+00:00-000001-alice",
                "relationship_type": "located_in",
                "properties": {},
                "created_at": "2026-06-15T09:41:02.581234+00:00"
            }]
        }],
        "filters": {"entity_types": ["device"], "since": "2026-06-15T00:00:00+00:00", "modified_by": ["alice"]},
        "vector_clock": {"clocks": {"phone-1": "7"}},
        "cursor": null
    })
}

/// `valid()` with the value at a JSON pointer replaced (`Some`) or removed (`None`).
fn with(pointer: &str, new: Option<Value>) -> Value {
    let mut v = valid();
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).expect("parent exists")
    };
    match (target, new) {
        (Value::Object(m), Some(x)) => {
            m.insert(key.to_owned(), x);
        }
        (Value::Object(m), None) => {
            assert!(m.remove(key).is_some(), "{pointer} exists");
        }
        (Value::Array(a), Some(x)) => {
            let i = key.parse::<usize>().expect("index");
            if i == a.len() {
                a.push(x);
            } else {
                a[i] = x;
            }
        }
        (Value::Array(a), None) => {
            a.remove(key.parse::<usize>().expect("index"));
        }
        (other, _) => panic!("{pointer}: cannot edit {other}"),
    }
    v
}

/// The kinds of [`FieldErrorKind`], without their payloads.
#[derive(Clone, Copy, Debug, PartialEq)]
enum K {
    Missing,
    NotAnObject,
    NotAString,
    NotAList,
    NotADict,
    NotAllowed,
    BadTimestamp,
    BadVersion,
    Protocol,
    Empty,
    Nul,
    TooLong,
    Unknown,
    Checksum,
}

fn kind(k: &FieldErrorKind) -> K {
    match k {
        FieldErrorKind::Missing => K::Missing,
        FieldErrorKind::NotAnObject => K::NotAnObject,
        FieldErrorKind::NotAString => K::NotAString,
        FieldErrorKind::NotAList => K::NotAList,
        FieldErrorKind::NotADict => K::NotADict,
        FieldErrorKind::NotAllowed { .. } => K::NotAllowed,
        FieldErrorKind::BadTimestamp(_) => K::BadTimestamp,
        FieldErrorKind::BadVersion(_) => K::BadVersion,
        FieldErrorKind::UnsupportedProtocolVersion => K::Protocol,
        FieldErrorKind::Empty => K::Empty,
        FieldErrorKind::NulCharacter => K::Nul,
        FieldErrorKind::TooLong { .. } => K::TooLong,
        FieldErrorKind::UnknownValue { .. } => K::Unknown,
        FieldErrorKind::BadChecksum(_) => K::Checksum,
        other => panic!("a kind this test does not know: {other:?}"),
    }
}

/// (JSON pointer to edit, replacement or removal, expected path, expected kind).
type Case = (String, Option<Value>, &'static str, K);

/// A pointer into the entity of the first change.
fn e(key: &str) -> String {
    format!("/changes/0/entity/{key}")
}

/// A pointer into the first relationship of the first change.
fn r(key: &str) -> String {
    format!("/changes/0/relationships/0/{key}")
}

#[rustfmt::skip]
fn cases() -> Vec<Case> {
    vec![
        // Missing required fields.
        ("/device_id".into(), None, "device_id", K::Missing),
        ("/user_id".into(), None, "user_id", K::Missing),
        ("/sync_type".into(), None, "sync_type", K::Missing),
        ("/changes/0/change_type".into(), None, "changes[0].change_type", K::Missing),
        (e("id"), None, "changes[0].entity.id", K::Missing),
        (e("version"), None, "changes[0].entity.version", K::Missing),
        (e("entity_type"), None, "changes[0].entity.entity_type", K::Missing),
        (e("name"), None, "changes[0].entity.name", K::Missing),
        (e("content"), None, "changes[0].entity.content", K::Missing),
        (e("source_type"), None, "changes[0].entity.source_type", K::Missing),
        (e("user_id"), None, "changes[0].entity.user_id", K::Missing),
        (r("id"), None, "changes[0].relationships[0].id", K::Missing),
        (r("from_entity_id"), None, "changes[0].relationships[0].from_entity_id", K::Missing),
        (r("from_entity_version"), None, "changes[0].relationships[0].from_entity_version", K::Missing),
        (r("to_entity_id"), None, "changes[0].relationships[0].to_entity_id", K::Missing),
        (r("to_entity_version"), None, "changes[0].relationships[0].to_entity_version", K::Missing),
        (r("relationship_type"), None, "changes[0].relationships[0].relationship_type", K::Missing),
        // Protocol version.
        ("/protocol_version".into(), Some(json!("inbetweenies-v1")), "protocol_version", K::Protocol),
        ("/protocol_version".into(), Some(json!("")), "protocol_version", K::Protocol),
        ("/protocol_version".into(), Some(json!(2)), "protocol_version", K::NotAString),
        ("/protocol_version".into(), Some(Value::Null), "protocol_version", K::NotAString),
        // Timestamps that do not parse.
        ("/filters/since".into(), Some(json!("not-a-date")), "filters.since", K::BadTimestamp),
        ("/filters/since".into(), Some(json!("2026-13-45T25:61:00+00:00")), "filters.since", K::BadTimestamp),
        ("/filters/since".into(), Some(json!("")), "filters.since", K::BadTimestamp),
        ("/filters/since".into(), Some(json!(true)), "filters.since", K::BadTimestamp),
        ("/filters/since".into(), Some(json!(["2026-01-01"])), "filters.since", K::BadTimestamp),
        ("/filters/since".into(), Some(json!(1e300)), "filters.since", K::BadTimestamp),
        // In range as written, out of range once moved to UTC.
        ("/filters/since".into(), Some(json!("9999-12-31T23:59:59-01:00")), "filters.since", K::BadTimestamp),
        ("/filters/since".into(), Some(json!("0000-01-01T00:30:00+01:00")), "filters.since", K::BadTimestamp),
        (r("created_at"), Some(json!("yesterday")), "changes[0].relationships[0].created_at", K::BadTimestamp),
        (r("updated_at"), Some(json!({})), "changes[0].relationships[0].updated_at", K::BadTimestamp),
        // Versions: any non-empty string (opaque ones: see `opaque_versions_…`).
        (e("version"), Some(json!("")), "changes[0].entity.version", K::Empty),
        (e("version"), Some(json!(417)), "changes[0].entity.version", K::NotAString),
        // Non-object content and other dictionaries.
        (e("content"), Some(json!("str")), "changes[0].entity.content", K::NotADict),
        (e("content"), Some(json!([1])), "changes[0].entity.content", K::NotADict),
        (e("content"), Some(Value::Null), "changes[0].entity.content", K::NotADict),
        (r("properties"), Some(json!("x")), "changes[0].relationships[0].properties", K::NotADict),
        (r("properties"), Some(Value::Null), "changes[0].relationships[0].properties", K::NotADict),
        ("/filters".into(), Some(json!("x")), "filters", K::NotADict),
        // Vector clocks.
        ("/vector_clock".into(), Some(json!([])), "vector_clock", K::NotADict),
        ("/vector_clock".into(), Some(Value::Null), "vector_clock", K::NotADict),
        ("/vector_clock/clocks".into(), Some(json!({"a": 1})), "vector_clock.clocks.a", K::NotAString),
        ("/vector_clock/clocks".into(), Some(json!({"a": null})), "vector_clock.clocks.a", K::NotAString),
        ("/vector_clock/clocks".into(), Some(json!("x")), "vector_clock.clocks", K::NotADict),
        ("/vector_clock/clocks".into(), Some(Value::Null), "vector_clock.clocks", K::NotADict),
        // Wrong types.
        ("/device_id".into(), Some(json!(12345)), "device_id", K::NotAString),
        ("/device_id".into(), Some(Value::Null), "device_id", K::NotAString),
        ("/user_id".into(), Some(json!(["alice"])), "user_id", K::NotAString),
        ("/changes".into(), Some(json!({"oops": 1})), "changes", K::NotAList),
        ("/changes".into(), Some(Value::Null), "changes", K::NotAList),
        ("/changes/0".into(), Some(json!("create")), "changes[0]", K::NotAnObject),
        ("/changes/0/entity".into(), Some(json!("x")), "changes[0].entity", K::NotAnObject),
        ("/changes/0/relationships".into(), Some(json!({})), "changes[0].relationships", K::NotAList),
        ("/changes/0/relationships".into(), Some(Value::Null), "changes[0].relationships", K::NotAList),
        ("/changes/0/relationships/0".into(), Some(json!(3)), "changes[0].relationships[0]", K::NotAnObject),
        (e("id"), Some(json!(7)), "changes[0].entity.id", K::NotAString),
        (e("id"), Some(json!("  ")), "changes[0].entity.id", K::Empty),
        (e("name"), Some(Value::Null), "changes[0].entity.name", K::NotAString),
        (e("parent_versions"), Some(json!("x")), "changes[0].entity.parent_versions", K::NotAList),
        (e("parent_versions"), Some(Value::Null), "changes[0].entity.parent_versions", K::NotAList),
        (e("parent_versions"), Some(json!([1])), "changes[0].entity.parent_versions[0]", K::NotAString),
        (e("checksum"), Some(json!(5)), "changes[0].entity.checksum", K::NotAString),
        (r("user_id"), Some(json!(5)), "changes[0].relationships[0].user_id", K::NotAString),
        (r("to_entity_id"), Some(Value::Null), "changes[0].relationships[0].to_entity_id", K::NotAString),
        ("/filters/entity_types".into(), Some(json!("device")), "filters.entity_types", K::NotAList),
        ("/filters/modified_by".into(), Some(json!(["alice", 1])), "filters.modified_by[1]", K::NotAString),
        ("/cursor".into(), Some(json!(5)), "cursor", K::NotAString),
        // Values outside their set.
        ("/changes/0/change_type".into(), Some(json!("upsert")), "changes[0].change_type", K::NotAllowed),
        ("/changes/0/change_type".into(), Some(json!("CREATE")), "changes[0].change_type", K::NotAllowed),
        ("/changes/0/change_type".into(), Some(json!(1)), "changes[0].change_type", K::NotAString),
        ("/sync_type".into(), Some(json!("partial")), "sync_type", K::NotAllowed),
        ("/sync_type".into(), Some(json!("")), "sync_type", K::NotAllowed),
        ("/sync_type".into(), Some(Value::Null), "sync_type", K::NotAString),
        // U+0000 in a string the server stores or selects by.
        ("/device_id".into(), Some(json!("phone\u{0}1")), "device_id", K::Nul),
        ("/user_id".into(), Some(json!("\u{0}")), "user_id", K::Nul),
        (e("id"), Some(json!("a\u{0}b")), "changes[0].entity.id", K::Nul),
        (e("version"), Some(json!("2026-06-15T09:41:02.581234+00:00-000417-al\u{0}ice")), "changes[0].entity.version", K::Nul),
        (e("version"), Some(json!("\u{0}")), "changes[0].entity.version", K::Nul),
        (e("entity_type"), Some(json!("device\u{0}")), "changes[0].entity.entity_type", K::Nul),
        (e("name"), Some(json!("La\u{0}mp")), "changes[0].entity.name", K::Nul),
        (e("source_type"), Some(json!("\u{0}manual")), "changes[0].entity.source_type", K::Nul),
        (e("user_id"), Some(json!("alice\u{0}")), "changes[0].entity.user_id", K::Nul),
        (e("parent_versions"), Some(json!(["2026-06-15T09:41:02.581234+00:00-000417-alice", "x\u{0}"])), "changes[0].entity.parent_versions[1]", K::Nul),
        (e("content"), Some(json!({"power": "o\u{0}n"})), "changes[0].entity.content.power", K::Nul),
        (e("content"), Some(json!({"a": {"b": [1, {"c": "\u{0}"}]}})), "changes[0].entity.content.a.b[1].c", K::Nul),
        (e("content"), Some(json!({"a": ["x", "\u{0}"]})), "changes[0].entity.content.a[1]", K::Nul),
        (r("id"), Some(json!("r\u{0}")), "changes[0].relationships[0].id", K::Nul),
        (r("from_entity_id"), Some(json!("\u{0}")), "changes[0].relationships[0].from_entity_id", K::Nul),
        (r("from_entity_version"), Some(json!("\u{0}")), "changes[0].relationships[0].from_entity_version", K::Nul),
        (r("to_entity_id"), Some(json!("room\u{0}")), "changes[0].relationships[0].to_entity_id", K::Nul),
        (r("to_entity_version"), Some(json!("v\u{0}")), "changes[0].relationships[0].to_entity_version", K::Nul),
        (r("relationship_type"), Some(json!("located_in\u{0}")), "changes[0].relationships[0].relationship_type", K::Nul),
        (r("user_id"), Some(json!("bob\u{0}")), "changes[0].relationships[0].user_id", K::Nul),
        (r("properties"), Some(json!({"w": {"x": "\u{0}"}})), "changes[0].relationships[0].properties.w.x", K::Nul),
        ("/filters/entity_types".into(), Some(json!(["device\u{0}"])), "filters.entity_types[0]", K::Nul),
        ("/filters/modified_by".into(), Some(json!(["alice", "\u{0}"])), "filters.modified_by[1]", K::Nul),
        // A key string one byte past the cap, in ASCII and in three-byte characters.
        ("/device_id".into(), Some(json!(ascii(MAX_KEY_BYTES + 1))), "device_id", K::TooLong),
        ("/device_id".into(), Some(json!(euros(MAX_KEY_BYTES + 1))), "device_id", K::TooLong),
        (e("id"), Some(json!(ascii(MAX_KEY_BYTES + 1))), "changes[0].entity.id", K::TooLong),
        (e("id"), Some(json!(euros(MAX_KEY_BYTES + 1))), "changes[0].entity.id", K::TooLong),
        (e("version"), Some(json!(long_version(MAX_KEY_BYTES + 1))), "changes[0].entity.version", K::TooLong),
        (e("version"), Some(json!(ascii(4096))), "changes[0].entity.version", K::TooLong),
        (e("entity_type"), Some(json!(ascii(MAX_KEY_BYTES + 1))), "changes[0].entity.entity_type", K::TooLong),
        (e("entity_type"), Some(json!(euros(MAX_KEY_BYTES + 1))), "changes[0].entity.entity_type", K::TooLong),
        (r("id"), Some(json!(ascii(MAX_KEY_BYTES + 1))), "changes[0].relationships[0].id", K::TooLong),
        (r("id"), Some(json!(euros(MAX_KEY_BYTES + 1))), "changes[0].relationships[0].id", K::TooLong),
        (r("from_entity_id"), Some(json!(ascii(MAX_KEY_BYTES + 1))), "changes[0].relationships[0].from_entity_id", K::TooLong),
        (r("from_entity_id"), Some(json!(euros(MAX_KEY_BYTES + 1))), "changes[0].relationships[0].from_entity_id", K::TooLong),
        (r("to_entity_id"), Some(json!(ascii(MAX_KEY_BYTES + 1))), "changes[0].relationships[0].to_entity_id", K::TooLong),
        (r("to_entity_id"), Some(json!(euros(MAX_KEY_BYTES + 1))), "changes[0].relationships[0].to_entity_id", K::TooLong),
        // U+0000 in an overlong key is reported once, as U+0000.
        (e("id"), Some(json!(format!("{}\u{0}", ascii(MAX_KEY_BYTES)))), "changes[0].entity.id", K::Nul),
    ]
}

/// `len` bytes of ASCII.
fn ascii(len: usize) -> String {
    "k".repeat(len)
}

/// `len` bytes of UTF-8, as many of them as fit in three-byte characters
/// (U+20AC), the rest ASCII: far fewer characters than bytes.
fn euros(len: usize) -> String {
    let mut s = "\u{20ac}".repeat(len / 3);
    s.push_str(&ascii(len % 3));
    assert_eq!(s.len(), len);
    s
}

/// A well-formed version of exactly `len` bytes (a long user part).
fn long_version(len: usize) -> String {
    let head = "2026-06-15T09:41:02.581234+00:00-000417-";
    format!("{head}{}", ascii(len - head.len()))
}

/// Every capped key field, as (pointer, a valid value of `len` bytes).
fn key_fields(len: usize) -> Vec<(String, String)> {
    vec![
        ("/device_id".into(), euros(len)),
        ("/user_id".into(), euros(len)),
        (e("id"), euros(len)),
        (e("version"), long_version(len)),
        (e("entity_type"), euros(len)),
        (e("source_type"), euros(len)),
        (e("user_id"), euros(len)),
        (format!("{}/0", e("parent_versions")), long_version(len)),
        (r("id"), euros(len)),
        (r("from_entity_id"), euros(len)),
        (r("from_entity_version"), long_version(len)),
        (r("to_entity_id"), euros(len)),
        (r("to_entity_version"), long_version(len)),
        (r("relationship_type"), euros(len)),
        (r("user_id"), euros(len)),
    ]
}

#[test]
fn the_key_length_cap_is_1024_bytes() {
    assert_eq!(MAX_KEY_BYTES, 1024);
}

#[test]
fn every_key_string_of_exactly_the_cap_is_accepted() {
    for (pointer, value) in key_fields(MAX_KEY_BYTES) {
        assert_eq!(value.len(), MAX_KEY_BYTES);
        let body = with(&pointer, Some(json!(value)));
        let req = sync_request_from_value(body).unwrap_or_else(|e| panic!("{pointer}: {e}"));
        // What was sent is what is kept.
        let (entity, rel) = (
            req.changes[0].entity.as_ref().expect("entity"),
            &req.changes[0].relationships[0],
        );
        let kept = match pointer.as_str() {
            "/device_id" => req.device_id.clone(),
            "/user_id" => req.user_id.clone(),
            "/changes/0/entity/id" => entity.id.as_str().to_owned(),
            "/changes/0/entity/version" => entity.version.as_str().to_owned(),
            "/changes/0/entity/entity_type" => entity.entity_type.as_str().to_owned(),
            "/changes/0/entity/source_type" => entity.source_type.as_str().to_owned(),
            "/changes/0/entity/user_id" => entity.user_id.clone(),
            "/changes/0/entity/parent_versions/0" => entity.parent_versions[0].as_str().to_owned(),
            "/changes/0/relationships/0/id" => rel.id.as_str().to_owned(),
            "/changes/0/relationships/0/from_entity_id" => rel.from_entity_id.as_str().to_owned(),
            "/changes/0/relationships/0/from_entity_version" => {
                rel.from_entity_version.as_str().to_owned()
            }
            "/changes/0/relationships/0/to_entity_id" => rel.to_entity_id.as_str().to_owned(),
            "/changes/0/relationships/0/to_entity_version" => {
                rel.to_entity_version.as_str().to_owned()
            }
            "/changes/0/relationships/0/relationship_type" => {
                rel.relationship_type.as_str().to_owned()
            }
            "/changes/0/relationships/0/user_id" => rel.user_id.clone().unwrap_or_default(),
            other => panic!("a field this test does not know: {other}"),
        };
        assert_eq!(kept, value, "{pointer}");
    }
}

#[test]
fn a_key_string_past_the_cap_is_refused_with_the_cap_at_its_field() {
    for (pointer, value) in key_fields(MAX_KEY_BYTES + 1) {
        // Multi-byte characters are counted in bytes: fewer than the cap in characters.
        assert!(value.chars().count() < MAX_KEY_BYTES || pointer.contains("version"));
        let body = with(&pointer, Some(json!(value)));
        let err = sync_request_from_value(body).expect_err(&pointer);
        let f = err.first_field().expect("a field error");
        assert_eq!(err.fields().len(), 1, "{pointer}: {err}");
        assert_eq!(
            f.kind,
            FieldErrorKind::TooLong {
                max_bytes: MAX_KEY_BYTES
            },
            "{pointer}"
        );
        assert_eq!(f.input, json!(value), "{pointer}: input");
        let path = f.path.to_string();
        assert!(
            err.to_string()
                .contains(&format!("{path}: must be at most 1024 bytes (UTF-8)")),
            "{err}"
        );
    }
}

#[test]
fn every_key_past_the_cap_in_a_batch_is_reported_at_its_own_change() {
    let mut v = valid();
    let change = v["changes"][0].clone();
    let mut changes = vec![change.clone(), change.clone(), change];
    changes[1]["entity"]["id"] = json!(ascii(MAX_KEY_BYTES + 1));
    changes[2]["relationships"][0]["to_entity_id"] = json!(euros(2 * MAX_KEY_BYTES));
    v["changes"] = json!(changes);
    v["device_id"] = json!(ascii(MAX_KEY_BYTES + 1));
    let err = sync_request_from_value(v).expect_err("refused");
    let paths: Vec<String> = err.fields().iter().map(|f| f.path.to_string()).collect();
    assert_eq!(
        paths,
        [
            "device_id",
            "changes[1].entity.id",
            "changes[2].relationships[0].to_entity_id"
        ]
    );
}

#[test]
fn a_name_is_capped_at_4096_bytes() {
    assert_eq!(MAX_NAME_BYTES, 4096);
    let body = with(&e("name"), Some(json!(euros(MAX_NAME_BYTES))));
    let req = sync_request_from_value(body).expect("a name at the cap");
    assert_eq!(
        req.changes[0].entity.as_ref().expect("entity").name,
        euros(MAX_NAME_BYTES)
    );
    let long = euros(MAX_NAME_BYTES + 1);
    let err =
        sync_request_from_value(with(&e("name"), Some(json!(long)))).expect_err("past the cap");
    assert_eq!(err.fields().len(), 1, "{err}");
    let f = err.first_field().expect("a field error");
    assert_eq!(f.path.to_string(), "changes[0].entity.name");
    assert_eq!(
        f.kind,
        FieldErrorKind::TooLong {
            max_bytes: MAX_NAME_BYTES
        }
    );
    assert_eq!(f.input, json!(long));
}

#[test]
fn content_and_properties_have_no_limit_of_their_own() {
    let big = euros(64 << 10);
    let body = with(&e("content"), Some(json!({ big.clone(): big.clone() })));
    sync_request_from_value(body).expect("long content");
    let body = with(&r("properties"), Some(json!({ big.clone(): big })));
    sync_request_from_value(body).expect("long properties");
}

#[test]
fn the_valid_request_is_valid() {
    let body = serde_json::to_vec(&valid()).expect("encode");
    let req = parse_sync_request(&body).expect("valid");
    assert_eq!(req.device_id, "phone-1");
    assert_eq!(req.sync_type, SyncType::Delta);
    let e = req.changes[0].entity.as_ref().expect("entity");
    assert_eq!(e.entity_type, EntityType::Device);
    assert_eq!(
        req.changes[0].relationships[0].relationship_type,
        RelationshipType::LocatedIn
    );
    assert_eq!(
        req.vector_clock.clocks.get("phone-1").map(String::as_str),
        Some("7")
    );
}

#[test]
fn each_bad_input_has_its_own_error() {
    let cases = cases();
    assert!(cases.len() > 70);
    for (pointer, new, path, want) in cases {
        let pointer = pointer.as_str();
        let body = with(pointer, new.clone());
        let err = sync_request_from_value(body.clone())
            .expect_err(&format!("{pointer} = {new:?} must be rejected"));
        let fields = err.fields();
        assert_eq!(
            fields.len(),
            1,
            "{pointer} = {new:?}: exactly one field error, got {err}"
        );
        let f = &fields[0];
        assert_eq!(f.path.to_string(), path, "{pointer} = {new:?}");
        assert_eq!(kind(&f.kind), want, "{pointer} = {new:?}: {err}");
        // The offending input is reported: the value at the path, or for a
        // missing field the object that lacks it (as FastAPI does).
        let mut loc = f.path.to_json();
        if want == K::Missing {
            loc.pop();
        }
        let pointer_to_input: String = loc
            .iter()
            .map(|s| match s {
                Value::String(k) => format!("/{k}"),
                other => format!("/{other}"),
            })
            .collect();
        assert_eq!(
            Some(&f.input),
            body.pointer(&pointer_to_input),
            "{pointer}: input"
        );
        // The error message names the field.
        assert!(err.to_string().contains(path), "{err}");
        // The bytes path agrees with the value path.
        let bytes = serde_json::to_vec(&body).expect("encode");
        assert_eq!(parse_sync_request(&bytes).expect_err("bytes"), err);
        assert_eq!(err.is_protocol_version(), want == K::Protocol);
    }
}

#[test]
fn a_nul_in_an_object_key_is_reported_at_that_key_with_the_key_as_input() {
    for (pointer, loc) in [
        (e("content"), &["changes", "0", "entity", "content"][..]),
        (
            r("properties"),
            &["changes", "0", "relationships", "0", "properties"][..],
        ),
    ] {
        let body = with(&pointer, Some(json!({"ok": 1, "nested": {"k\u{0}": "v"}})));
        let err = sync_request_from_value(body).expect_err("a NUL key is refused");
        let fields = err.fields();
        assert_eq!(fields.len(), 1, "{err}");
        assert_eq!(fields[0].kind, FieldErrorKind::NulCharacter);
        assert_eq!(fields[0].input, json!("k\u{0}"));
        let mut want: Vec<Value> = loc
            .iter()
            .map(|s| match s.parse::<u64>() {
                Ok(i) => json!(i),
                Err(_) => json!(s),
            })
            .collect();
        want.extend([json!("nested"), json!("k\u{0}")]);
        assert_eq!(fields[0].path.to_json(), want);
    }
}

#[test]
fn every_nul_of_a_batch_is_reported_at_its_own_change_in_document_order() {
    let mut body = valid();
    let change = body["changes"][0].clone();
    let changes: Vec<Value> = (0..5)
        .map(|i| {
            let mut c = change.clone();
            c["entity"]["id"] = json!(format!("id-{i}"));
            match i {
                1 => c["entity"]["content"] = json!({"z": "\u{0}", "a\u{0}": ["\u{0}"]}),
                3 => c["entity"]["name"] = json!("bad\u{0}name"),
                _ => {}
            }
            c
        })
        .collect();
    body["changes"] = json!(changes);
    let err = sync_request_from_value(body).expect_err("refused");
    let paths: Vec<String> = err.fields().iter().map(|f| f.path.to_string()).collect();
    assert_eq!(
        paths,
        [
            "changes[1].entity.content.z",
            "changes[1].entity.content.a\u{0}",
            "changes[1].entity.content.a\u{0}[0]",
            "changes[3].entity.name",
        ]
    );
    assert!(err
        .fields()
        .iter()
        .all(|f| f.kind == FieldErrorKind::NulCharacter));
}

#[test]
fn nul_checks_walk_any_depth_without_recursion() {
    // Deeper than any JSON parser here would build, as a value made in code.
    let mut v = json!("\u{0}");
    for _ in 0..100_000 {
        v = Value::Array(vec![v]);
    }
    let errs =
        inbetweenies_proto::validate::nul_characters(&v, &FieldPath::default().key("content"));
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].path.0.len(), 100_001);
    // Dropping a value this deep recurses in serde_json itself: unwrap it by hand.
    let mut v = v;
    while let Value::Array(mut items) = v {
        v = items.pop().unwrap_or(Value::Null);
    }
}

#[test]
fn strings_without_nul_keep_their_other_characters() {
    // Lone surrogates cannot reach a Value; everything else is accepted as sent.
    let body = with(
        &e("content"),
        Some(
            json!({"rtl": "\u{5e9}\u{5dc}\u{5d5}\u{5dd}", "comb": "e\u{301}", "astral": "\u{1f600}", "ctl": "\u{1}\u{7f}"}),
        ),
    );
    let req = sync_request_from_value(body).expect("valid");
    let content = &req.changes[0].entity.as_ref().expect("entity").content;
    assert_eq!(content["comb"], json!("e\u{301}"));
    assert_eq!(content["astral"], json!("\u{1f600}"));
}

#[test]
fn not_allowed_names_the_allowed_values() {
    let err = sync_request_from_value(with("/sync_type", Some(json!("partial")))).expect_err("bad");
    assert_eq!(
        err.fields()[0].kind,
        FieldErrorKind::NotAllowed {
            allowed: &["full", "delta", "entities", "relationships"]
        }
    );
    let err = sync_request_from_value(with("/changes/0/change_type", Some(json!("upsert"))))
        .expect_err("bad");
    assert_eq!(
        err.fields()[0].kind,
        FieldErrorKind::NotAllowed {
            allowed: &["create", "update", "delete"]
        }
    );
    assert!(err.to_string().contains("create, update, delete"), "{err}");
}

#[test]
fn every_bad_field_is_reported_in_field_order() {
    let err = parse_sync_request(b"{}").expect_err("empty object");
    let got: Vec<(String, K)> = err
        .fields()
        .iter()
        .map(|f| (f.path.to_string(), kind(&f.kind)))
        .collect();
    assert_eq!(
        got,
        [
            ("device_id".to_owned(), K::Missing),
            ("user_id".to_owned(), K::Missing),
            ("sync_type".to_owned(), K::Missing),
        ]
    );

    let mut body = valid();
    body["device_id"] = json!(1);
    body["changes"][0]["entity"]["content"] = json!("x");
    body["changes"][0]["relationships"][0]["properties"] = json!([]);
    body["filters"]["since"] = json!("never");
    let err = sync_request_from_value(body).expect_err("four errors");
    let got: Vec<String> = err.fields().iter().map(|f| f.path.to_string()).collect();
    assert_eq!(
        got,
        [
            "device_id",
            "changes[0].entity.content",
            "changes[0].relationships[0].properties",
            "filters.since"
        ]
    );
    assert_eq!(
        err.first_field().map(|f| f.path.to_string()).as_deref(),
        Some("device_id")
    );
}

/// Versions other clients write, that do not carry the timestamp form.
const OPAQUE_VERSIONS: &[&str] = &[
    "v1",
    "v-1796118705966",
    "nope",
    " ",
    "2026-06-15T09:41:02+00:00",
    "2026-06-15T09:41:02+00:00-",
    "2026-99-15T09:41:02+00:00-000001-a",
    "T+aaéé-x",
];

#[test]
fn opaque_versions_are_accepted_by_default_and_refused_in_strict_mode() {
    for v in OPAQUE_VERSIONS {
        let mut body = valid();
        body["changes"][0]["entity"]["version"] = json!(v);
        let req = sync_request_from_value(body.clone()).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let entity = req.changes[0].entity.as_ref().expect("entity");
        assert_eq!(entity.version.as_str(), *v, "carried unchanged");
        let err = sync_request_checked(body, Checks::STRICT).expect_err(v);
        let got: Vec<(String, K)> = err
            .fields()
            .iter()
            .map(|f| (f.path.to_string(), kind(&f.kind)))
            .collect();
        assert_eq!(
            got,
            [("changes[0].entity.version".to_owned(), K::BadVersion)],
            "{v:?}"
        );
    }
}

#[test]
fn unknown_values_are_accepted_by_default_and_refused_in_strict_mode() {
    let mut body = valid();
    body["changes"][0]["entity"]["entity_type"] = json!("DEVICE");
    body["changes"][0]["entity"]["source_type"] = json!("None");
    body["changes"][0]["relationships"][0]["relationship_type"] = json!("lights_up");
    body["filters"]["entity_types"] = json!(["device", "spaceship"]);
    let req = sync_request_from_value(body.clone()).expect("accepted by default");
    let entity = req.changes[0].entity.as_ref().expect("entity");
    assert_eq!(entity.entity_type.as_str(), "DEVICE");
    assert_eq!(entity.source_type.as_str(), "None");
    assert_eq!(
        req.changes[0].relationships[0].relationship_type.as_str(),
        "lights_up"
    );
    let err = sync_request_checked(body, Checks::STRICT).expect_err("strict");
    let got: Vec<(String, K)> = err
        .fields()
        .iter()
        .map(|f| (f.path.to_string(), kind(&f.kind)))
        .collect();
    assert_eq!(
        got,
        [
            ("changes[0].entity.entity_type".to_owned(), K::Unknown),
            ("changes[0].entity.source_type".to_owned(), K::Unknown),
            (
                "changes[0].relationships[0].relationship_type".to_owned(),
                K::Unknown
            ),
            ("filters.entity_types[1]".to_owned(), K::Unknown),
        ]
    );
    // The whole reference vocabulary passes strict mode.
    for t in RelationshipType::KNOWN_STRS {
        let body = with(&r("relationship_type"), Some(json!(t)));
        sync_request_checked(body, Checks::STRICT).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
}

#[test]
fn strict_mode_lists_every_problem_of_the_request_at_once() {
    let mut body = valid();
    body["device_id"] = json!(1);
    body["changes"][0]["entity"]["version"] = json!("v-1796118705966");
    body["changes"][0]["entity"]["entity_type"] = json!("DEVICE");
    body["changes"][0]["entity"]["source_type"] = json!("MANUAL");
    body["changes"][0]["entity"]["checksum"] = json!("00");
    body["changes"][0]["entity"]["updated_at"] = json!("later");
    body["changes"][0]["relationships"][0]["relationship_type"] = json!("glows_at");
    let err = sync_request_checked(body.clone(), Checks::STRICT).expect_err("strict");
    let got: Vec<(String, K)> = err
        .fields()
        .iter()
        .map(|f| (f.path.to_string(), kind(&f.kind)))
        .collect();
    assert_eq!(
        got,
        [
            ("device_id".to_owned(), K::NotAString),
            ("changes[0].entity.version".to_owned(), K::BadVersion),
            ("changes[0].entity.entity_type".to_owned(), K::Unknown),
            ("changes[0].entity.source_type".to_owned(), K::Unknown),
            ("changes[0].entity.checksum".to_owned(), K::Checksum),
            ("changes[0].entity.updated_at".to_owned(), K::BadTimestamp),
            (
                "changes[0].relationships[0].relationship_type".to_owned(),
                K::Unknown
            ),
        ]
    );
    // By default the same request has two problems, both listed (a bad
    // checksum is found with the fields, not in a pass of its own); an
    // unreadable `updated_at` is ignored.
    let err = sync_request_from_value(body).expect_err("lenient");
    let got: Vec<(String, K)> = err
        .fields()
        .iter()
        .map(|f| (f.path.to_string(), kind(&f.kind)))
        .collect();
    assert_eq!(
        got,
        [
            ("device_id".to_owned(), K::NotAString),
            ("changes[0].entity.checksum".to_owned(), K::Checksum),
        ]
    );
}

#[test]
fn an_entity_may_carry_its_edit_time() {
    let mut body = valid();
    body["changes"][0]["entity"]["version"] = json!("v-1796118705966");
    body["changes"][0]["entity"]["updated_at"] = json!("2026-06-15T09:41:02.5Z");
    body["changes"][0]["entity"]["created_at"] = json!("2026-06-01 08:00:00");
    let req = sync_request_checked(body.clone(), Checks::LENIENT).expect("valid");
    let e = req.changes[0].entity.as_ref().expect("entity");
    let receipt = Timestamp::parse("2030-01-01T00:00:00+00:00").expect("ts");
    let stored = e.to_entity(None, receipt);
    assert_eq!(
        stored.updated_at.to_string(),
        "2026-06-15T09:41:02.500000+00:00"
    );
    assert_eq!(
        stored.created_at.to_string(),
        "2026-06-01T08:00:00.000000+00:00"
    );
    // Unreadable: taken as absent, so the receipt time is the edit time.
    body["changes"][0]["entity"]["updated_at"] = json!("later");
    body["changes"][0]["entity"]["created_at"] = json!(null);
    let req = sync_request_checked(body, Checks::LENIENT).expect("valid");
    let stored = req.changes[0]
        .entity
        .as_ref()
        .expect("entity")
        .to_entity(None, receipt);
    assert_eq!((stored.updated_at, stored.created_at), (receipt, receipt));
    // A timestamped version's own time wins over a sent `updated_at`.
    let mut body = valid();
    body["changes"][0]["entity"]["updated_at"] = json!("2020-01-01T00:00:00+00:00");
    let req = sync_request_checked(body, Checks::LENIENT).expect("valid");
    let stored = req.changes[0]
        .entity
        .as_ref()
        .expect("entity")
        .to_entity(None, receipt);
    assert_eq!(
        stored.updated_at.to_string(),
        "2026-06-15T09:41:02.581234+00:00"
    );
}

#[test]
fn protocol_version_is_checked_after_the_fields() {
    // A wrong version alone is a 400 (`is_protocol_version`); with other
    // errors the field errors win (a 422), as with the reference.
    let mut body = with("/protocol_version", Some(json!("inbetweenies-v1")));
    body["device_id"] = json!(1);
    let err = sync_request_from_value(body).expect_err("bad");
    assert!(!err.is_protocol_version());
    assert_eq!(err.fields()[0].path.to_string(), "device_id");
}

#[test]
fn field_paths_as_fastapi_loc() {
    let err = sync_request_from_value(with("/changes/0/entity/content", Some(json!(1))))
        .expect_err("bad");
    assert_eq!(
        err.fields()[0].path.to_json(),
        vec![
            json!("changes"),
            json!(0),
            json!("entity"),
            json!("content")
        ]
    );
    assert_eq!(FieldPath::default().to_string(), "<body>");
}

#[test]
fn timestamps_naive_z_offset_and_epoch_are_read_as_utc() {
    let utc = Timestamp::parse("2026-06-15T09:41:02.500000+00:00").expect("canonical");
    for since in [
        json!("2026-06-15T09:41:02.5"),
        json!("2026-06-15T09:41:02.500Z"),
        json!("2026-06-15T09:41:02.500000z"),
        json!("2026-06-15T11:41:02.5+02:00"),
        json!("2026-06-15T04:41:02.5-05:00"),
        json!("2026-06-15 09:41:02.5"),
        json!(1781516462.5),
        json!(1781516462500_i64),
    ] {
        let req = sync_request_from_value(with("/filters/since", Some(since.clone())))
            .unwrap_or_else(|e| panic!("{since} must be accepted: {e}"));
        assert_eq!(req.since(), Some(utc), "{since}");
    }
    // Sub-microsecond digits are truncated, not rounded.
    let t = Timestamp::parse("2026-06-15T09:41:02.5000009Z").expect("nanos");
    assert_eq!(t, utc);
    assert_eq!(utc.to_string(), "2026-06-15T09:41:02.500000+00:00");
}

#[test]
fn leniencies_of_the_reference_are_kept() {
    // No protocol_version: defaults to ours.
    let req = sync_request_from_value(with("/protocol_version", None)).expect("defaulted");
    assert_eq!(req.protocol_version, PROTOCOL_VERSION);
    // Unknown fields are ignored, at any depth.
    let mut body = valid();
    body["surprise"] = json!(1);
    body["filters"]["bogus"] = json!(true);
    body["changes"][0]["entity"]["colour"] = json!("red");
    body["changes"][0]["relationships"][0]["weight"] = json!(2);
    body["vector_clock"]["epoch"] = json!(3);
    assert_eq!(
        sync_request_from_value(body).expect("extra fields"),
        sync_request_from_value(valid()).expect("valid")
    );
    // Optional parts may be absent or null.
    let minimal = json!({"device_id": "d", "user_id": "u", "sync_type": "full"});
    let req = sync_request_from_value(minimal).expect("minimal");
    assert!(req.changes.is_empty());
    assert_eq!(req.vector_clock, VectorClockWire::default());
    assert_eq!(req.filters, None);
    assert_eq!(req.cursor, None);
    for pointer in [
        "/filters",
        "/cursor",
        "/filters/since",
        "/filters/entity_types",
        "/filters/modified_by",
        "/changes/0/entity",
        "/changes/0/entity/checksum",
        "/changes/0/relationships/0/user_id",
        "/changes/0/relationships/0/created_at",
    ] {
        sync_request_from_value(with(pointer, Some(Value::Null)))
            .unwrap_or_else(|e| panic!("{pointer} = null must be accepted: {e}"));
    }
    for pointer in [
        "/changes/0/entity/parent_versions",
        "/changes/0/entity/checksum",
        "/changes/0/relationships",
        "/changes/0/relationships/0/properties",
        "/vector_clock/clocks",
    ] {
        sync_request_from_value(with(pointer, None))
            .unwrap_or_else(|e| panic!("{pointer} absent must be accepted: {e}"));
    }
    // Unknown enum values are kept, not refused.
    let mut body = valid();
    body["changes"][0]["entity"]["entity_type"] = json!("spaceship");
    body["changes"][0]["entity"]["source_type"] = json!("MANUAL");
    body["changes"][0]["relationships"][0]["relationship_type"] = json!("teleports_to");
    body["filters"]["entity_types"] = json!(["spaceship"]);
    let req = sync_request_from_value(body).expect("unknown values");
    let e = req.changes[0].entity.as_ref().expect("entity");
    assert_eq!(e.entity_type, EntityType::Other("spaceship".into()));
    assert_eq!(e.source_type, SourceType::Other("MANUAL".into()));
    // Legacy version forms parse.
    for v in [
        "2024-01-15T10:30:00.123456Z-alice",
        "2026-11-21T23:10:35.907338+00:00Z-blowing-off-cli",
    ] {
        sync_request_from_value(with("/changes/0/entity/version", Some(json!(v))))
            .unwrap_or_else(|e| panic!("{v}: {e}"));
    }
}

#[test]
fn a_non_numeric_cursor_parses_but_names_no_sequence() {
    let req = sync_request_from_value(with("/cursor", Some(json!("abc")))).expect("parses");
    let err = req.cursor.expect("cursor").seq().expect_err("not a number");
    assert_eq!(err, CursorError("abc".into()));
    let req = sync_request_from_value(with("/cursor", Some(json!("507")))).expect("parses");
    assert_eq!(req.cursor.map(|c| c.seq()), Some(Ok(507)));
}

#[test]
fn body_level_errors() {
    assert_eq!(parse_sync_request(b""), Err(ValidationError::EmptyBody));
    assert_eq!(
        parse_sync_request(b" \r\n\t"),
        Err(ValidationError::EmptyBody)
    );
    match parse_sync_request(b"{\"device_id\": \"d\",\n  \"user_id\" 1}") {
        Err(ValidationError::Json { position, message }) => {
            // Byte offset of the `1` that should have been a `:`.
            assert_eq!(position, 31, "{message}");
            assert!(message.contains("line 2"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match parse_sync_request(b"{\"device_id\": ") {
        Err(ValidationError::Json { position, .. }) => assert_eq!(position, 14),
        other => panic!("{other:?}"),
    }
    match parse_sync_request(b"\xff\xfe") {
        Err(ValidationError::Json { .. }) => {}
        other => panic!("{other:?}"),
    }
    for body in [&b"[1,2,3]"[..], b"\"text\"", b"42", b"null", b"true"] {
        let err = parse_sync_request(body).expect_err("not an object");
        let f = err.first_field().expect("field");
        assert!(f.path.0.is_empty(), "{err}");
        assert_eq!(f.kind, FieldErrorKind::NotAnObject);
        assert_eq!(
            f.input,
            serde_json::from_slice::<Value>(body).expect("json"),
            "the body is the input"
        );
        assert!(err.to_string().contains("<body>"), "{err}");
    }
    assert_eq!(parse_json(b"{}"), Ok(json!({})));
}

// ---------------------------------------------------------------------------
// Never a panic.

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Floats of at most 15 significant digits: serde_json, as the
        // workspace configures it (without `float_roundtrip`), may read longer
        // ones back one ULP off, which the round-trip check would flag.
        (-999_999_999_999_999_i64..=999_999_999_999_999, 0..=22_i32)
            .prop_map(|(m, k)| Value::from(m as f64 / 10f64.powi(k))),
        "\\PC{0,12}".prop_map(Value::from),
        // Strings that look like the fields' real values.
        prop_oneof![
            Just("inbetweenies-v2"),
            Just("delta"),
            Just("create"),
            Just("2026-06-15T09:41:02.581234+00:00"),
            Just("2026-06-15T09:41:02.581234+00:00-000417-alice"),
            Just("9999-12-31T23:59:59-01:00"),
            Just("0000-01-01T00:00:00+01:00"),
            Just("T+aaéé-x"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,8}", inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Every path into `valid()`, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(x, p, out);
            }
        }
        _ => {}
    }
}

/// What must hold of any outcome: a request that is accepted writes out and
/// reads back the same; a rejection names specific fields.
fn check_outcome(r: Result<SyncRequest, ValidationError>) -> Result<(), TestCaseError> {
    match r {
        Ok(req) => {
            let bytes = serde_json::to_vec(&req).expect("an accepted request serializes");
            let again = parse_sync_request(&bytes);
            prop_assert_eq!(
                again.as_ref(),
                Ok(&req),
                "{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Err(ValidationError::Fields(fields)) => {
            prop_assert!(!fields.is_empty());
            for f in &fields {
                // Only "not an object" may blame the whole body: every other
                // error names a field.
                if f.path.0.is_empty() {
                    prop_assert_eq!(&f.kind, &FieldErrorKind::NotAnObject);
                }
                prop_assert!(!f.to_string().is_empty());
            }
        }
        Err(_) => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check_outcome(parse_sync_request(&body))?;
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        let bytes = serde_json::to_vec(&v).expect("encode");
        check_outcome(parse_sync_request(&bytes))?;
        check_outcome(sync_request_from_value(v))?;
    }

    #[test]
    fn any_field_of_a_valid_request_replaced_never_panics(
        pick in any::<prop::sample::Index>(),
        replacement in prop::option::of(arb_json()),
    ) {
        let mut all = Vec::new();
        pointers(&valid(), String::new(), &mut all);
        let pointer = pick.get(&all);
        check_outcome(sync_request_from_value(with(pointer, replacement)))?;
    }

    #[test]
    fn any_byte_of_a_valid_request_changed_never_panics(
        pick in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = serde_json::to_vec(&valid()).expect("encode");
        let i = pick.index(bytes.len());
        bytes[i] = byte;
        check_outcome(parse_sync_request(&bytes))?;
    }
}
