//! Validation of request bodies: bad input becomes a typed error naming each field, never a panic.
//!
//! [`parse_sync_request`] checks a body field by field (collecting every
//! problem, in field order) before building the typed [`SyncRequest`], so a
//! server can answer with one precise error per field. The leniencies of the
//! reference server are kept: a missing `protocol_version` defaults to
//! `inbetweenies-v2`, unknown fields are ignored, a naive or `Z` timestamp is
//! read as UTC and a number as Unix seconds.
//!
//! # U+0000
//!
//! A string the server stores or selects by may not contain U+0000: not
//! every store can hold it (PostgreSQL's `text` and `jsonb` cannot), and a
//! request must be accepted or refused the same way whatever the store. So
//! it is refused here, on every server, as [`FieldErrorKind::NulCharacter`]
//! at the exact field: `device_id` and `user_id`; every string field of an
//! entity (id, version, type, name, source type, user, each parent version)
//! and of a relationship (id, endpoint ids and versions, type, user); every
//! key and string value of `content` and `properties` at any depth (a bad
//! key is reported at the key's own path, with the key as the input); and
//! the strings of `filters`. Strings the server neither stores nor selects
//! by keep their own checks (a cursor must be a number, a checksum must
//! match, `protocol_version` must be the one spoken).
//!
//! # Length limits
//!
//! Every string a request hands the store, other than inside `content` and
//! `properties`, has a limit in bytes of UTF-8, the same on every server
//! whatever its store: a longer one is refused here as
//! [`FieldErrorKind::TooLong`] at the exact field, before any store sees it.
//!
//! - [`MAX_KEY_BYTES`] (1,024): the strings a store keys an index on or
//!   compares — `device_id`; an entity's id, version, type and each parent
//!   version; a relationship's id, endpoint ids and endpoint versions — and
//!   the short labels beside them: `source_type`, `relationship_type` and
//!   every `user_id`. Not every store can index a longer key (a PostgreSQL
//!   B-tree entry holds about 2.7 kB, and an entity's key is its id and
//!   version together).
//! - [`MAX_NAME_BYTES`] (4,096): an entity's `name`, text a person reads.
//!
//! `content` and `properties` are bounded only by the body limit.

use serde_json::{Map, Value};

use crate::checksum::verify_content_checksum;
use crate::error::{FieldError, FieldErrorKind, FieldPath, PathSegment, ValidationError};
use crate::model::{EntityType, RelationshipType, SourceType};
use crate::timestamp::Timestamp;
use crate::version::Version;
use crate::wire::{SyncRequest, PROTOCOL_VERSION};

/// The most bytes (UTF-8) a key string may have: an id, a version, a type,
/// a device or user id (see the module docs). Counted in bytes, not
/// characters: a character outside ASCII takes two to four.
pub const MAX_KEY_BYTES: usize = 1024;

/// The most bytes (UTF-8) an entity's `name` may have (see the module docs).
pub const MAX_NAME_BYTES: usize = 4096;

const SYNC_TYPES: &[&str] = &["full", "delta", "entities", "relationships"];
const CHANGE_TYPES: &[&str] = &["create", "update", "delete"];

/// How strictly a request is checked.
///
/// By default (`strict: false`) the values of the open enumerations
/// (`entity_type`, `source_type`, `relationship_type`, a filter's entity
/// types) may be any string, and an entity `version` any non-empty string:
/// they are data, stored and sent back unchanged (PROTOCOL §3.3, §4.2). In
/// strict mode (PROTOCOL §12.5) an unknown enumeration value is a
/// [`FieldErrorKind::UnknownValue`] and a version that does not carry the
/// timestamp form a [`FieldErrorKind::BadVersion`], each at its field, listed
/// with every other problem of the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checks {
    /// Refuse unknown enumeration values and versions without a timestamp.
    pub strict: bool,
}

impl Checks {
    /// The default: unknown values and opaque versions are accepted.
    pub const LENIENT: Checks = Checks { strict: false };
    /// Strict mode.
    pub const STRICT: Checks = Checks { strict: true };
}

/// Parses and validates a `SyncRequest` body (leniently, see [`Checks`]).
pub fn parse_sync_request(body: &[u8]) -> Result<SyncRequest, ValidationError> {
    let value = parse_json(body)?;
    sync_request_from_value(value)
}

/// Parses bytes as JSON, with a typed error for empty or malformed bodies.
pub fn parse_json(body: &[u8]) -> Result<Value, ValidationError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ValidationError::EmptyBody);
    }
    let mut value = serde_json::from_slice(body).map_err(|e| ValidationError::Json {
        // A truncated body fails at its end, where FastAPI's `loc` points too.
        position: if e.is_eof() {
            body.len()
        } else {
            byte_offset(body, e.line(), e.column())
        },
        message: e.to_string(),
    })?;
    integer_zero(&mut value);
    Ok(value)
}

/// Writes the integer `-0` as `0`, the one integer spelling that has another
/// (PROTOCOL §4.6): every other number keeps every digit as it was sent.
/// JSON text nests at most 128 levels here (serde_json's limit), so the
/// recursion is bounded.
fn integer_zero(value: &mut Value) {
    match value {
        Value::Number(n) if n.as_str() == "-0" => *value = Value::from(0u8),
        Value::Array(items) => items.iter_mut().for_each(integer_zero),
        Value::Object(map) => map.values_mut().for_each(integer_zero),
        _ => {}
    }
}

fn byte_offset(body: &[u8], line: usize, column: usize) -> usize {
    let mut off = 0;
    for (n, l) in body.split(|b| *b == b'\n').enumerate() {
        if n + 1 == line {
            return off + column.saturating_sub(1);
        }
        off += l.len() + 1;
    }
    body.len()
}

/// Validates a JSON value as a `SyncRequest` (leniently, see [`Checks`]).
pub fn sync_request_from_value(value: Value) -> Result<SyncRequest, ValidationError> {
    sync_request_checked(value, Checks::LENIENT)
}

/// Validates a JSON value as a `SyncRequest` with the given [`Checks`]; every
/// problem of the request is listed at once, in field order.
pub fn sync_request_checked(value: Value, checks: Checks) -> Result<SyncRequest, ValidationError> {
    let mut errs = Vec::new();
    let root = FieldPath::default();
    let Some(obj) = value.as_object() else {
        return Err(ValidationError::Fields(vec![FieldError {
            path: root,
            kind: FieldErrorKind::NotAnObject,
            input: value,
        }]));
    };
    defaulted_string(obj, &root, "protocol_version", &mut errs);
    req_key(obj, &root, "device_id", &mut errs);
    req_key(obj, &root, "user_id", &mut errs);
    req_choice(obj, &root, "sync_type", SYNC_TYPES, &mut errs);
    // `changes`, `vector_clock` and the lists inside a change may be left out
    // (they default to empty) but not sent as null, as with the reference.
    if let Some(changes) = obj.get("changes") {
        let p = root.key("changes");
        match changes.as_array() {
            Some(items) => {
                for (i, c) in items.iter().enumerate() {
                    check_change(c, &p.index(i), checks, &mut errs);
                }
            }
            None => errs.push(err(p, FieldErrorKind::NotAList, changes)),
        }
    }
    if let Some(f) = present(obj, "filters") {
        check_filters(f, &root.key("filters"), checks, &mut errs);
    }
    if let Some(vc) = obj.get("vector_clock") {
        check_vector_clock(vc, &root.key("vector_clock"), &mut errs);
    }
    opt_string(obj, &root, "cursor", &mut errs);
    if let Some(caps) = present(obj, "capabilities") {
        check_capabilities(caps, &root.key("capabilities"), &mut errs);
    }
    if !errs.is_empty() {
        return Err(ValidationError::Fields(errs));
    }
    if let Some(Value::String(pv)) = obj.get("protocol_version") {
        if pv != PROTOCOL_VERSION {
            return Err(ValidationError::Fields(vec![FieldError {
                path: root.key("protocol_version"),
                kind: FieldErrorKind::UnsupportedProtocolVersion,
                input: Value::String(pv.clone()),
            }]));
        }
    }
    serde_json::from_value(value).map_err(|e| {
        ValidationError::Fields(vec![FieldError {
            path: root,
            kind: FieldErrorKind::BadTimestamp(e.to_string()),
            input: Value::Null,
        }])
    })
}

/// `capabilities`: a list of strings (null is taken as absent; unknown names are ignored).
fn check_capabilities(v: &Value, at: &FieldPath, errs: &mut Vec<FieldError>) {
    let Some(items) = v.as_array() else {
        errs.push(err(at.clone(), FieldErrorKind::NotAList, v));
        return;
    };
    for (i, c) in items.iter().enumerate() {
        if !c.is_string() {
            errs.push(err(at.index(i), FieldErrorKind::NotAString, c));
        }
    }
}

fn err(path: FieldPath, kind: FieldErrorKind, input: &Value) -> FieldError {
    FieldError {
        path,
        kind,
        input: input.clone(),
    }
}

/// A key that is present and not null.
fn present<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

/// A required string the server stores (so it may not contain U+0000).
fn req_string(obj: &Map<String, Value>, at: &FieldPath, key: &str, errs: &mut Vec<FieldError>) {
    match obj.get(key) {
        None => errs.push(err(
            at.key(key),
            FieldErrorKind::Missing,
            &Value::Object(obj.clone()),
        )),
        Some(Value::String(s)) => nul_free(s, || at.key(key), errs),
        Some(v) => errs.push(err(at.key(key), FieldErrorKind::NotAString, v)),
    }
}

/// A required string the server keys an index on: as [`req_string`], and at
/// most [`MAX_KEY_BYTES`] long (one error per field: U+0000 first).
fn req_key(obj: &Map<String, Value>, at: &FieldPath, key: &str, errs: &mut Vec<FieldError>) {
    req_limited(obj, at, key, MAX_KEY_BYTES, errs)
}

/// A required string of at most `max` bytes, free of U+0000.
fn req_limited(
    obj: &Map<String, Value>,
    at: &FieldPath,
    key: &str,
    max: usize,
    errs: &mut Vec<FieldError>,
) {
    match obj.get(key) {
        Some(Value::String(s)) => errs.extend(check_len(s, &at.key(key), max)),
        _ => req_string(obj, at, key, errs),
    }
}

/// The one error, if any, of a key string at `at`: U+0000 first, then a
/// length past [`MAX_KEY_BYTES`] (see the module docs). For any entry point
/// that reads a key string on its own, outside a sync request.
pub fn check_key(s: &str, at: &FieldPath) -> Option<FieldError> {
    check_len(s, at, MAX_KEY_BYTES)
}

/// The one error, if any, of an entity name at `at`: U+0000 first, then a
/// length past [`MAX_NAME_BYTES`].
pub fn check_name(s: &str, at: &FieldPath) -> Option<FieldError> {
    check_len(s, at, MAX_NAME_BYTES)
}

/// The one error, if any, of a string at `at` that may hold no U+0000 and at
/// most `max` bytes (U+0000 is reported first, and alone).
pub fn check_len(s: &str, at: &FieldPath, max: usize) -> Option<FieldError> {
    let mut errs = Vec::new();
    nul_free(s, || at.clone(), &mut errs);
    if errs.is_empty() {
        short(s, max, || at.clone(), &mut errs);
    }
    errs.pop()
}

/// Refuses a key string longer than [`MAX_KEY_BYTES`] (see the module docs).
fn short_key(s: &str, at: impl FnOnce() -> FieldPath, errs: &mut Vec<FieldError>) {
    short(s, MAX_KEY_BYTES, at, errs)
}

/// Refuses a string longer than `max` bytes.
fn short(s: &str, max: usize, at: impl FnOnce() -> FieldPath, errs: &mut Vec<FieldError>) {
    if s.len() > max {
        errs.push(FieldError {
            path: at(),
            kind: FieldErrorKind::TooLong { max_bytes: max },
            input: Value::String(s.to_owned()),
        });
    }
}

/// Refuses a stored string that contains U+0000 (see the module docs).
fn nul_free(s: &str, at: impl FnOnce() -> FieldPath, errs: &mut Vec<FieldError>) {
    if s.contains('\0') {
        errs.push(FieldError {
            path: at(),
            kind: FieldErrorKind::NulCharacter,
            input: Value::String(s.to_owned()),
        });
    }
}

/// Every U+0000 in the keys and strings of a stored JSON value, at any depth,
/// each at its own path (a key at the key's path, with the key as the input),
/// in document order. Walks with a stack of its own, so no depth of input can
/// exhaust the thread's stack, and builds a path only for an error.
pub fn nul_characters(value: &Value, at: &FieldPath) -> Vec<FieldError> {
    /// What is left to look at: a value, or an object key containing U+0000.
    enum Item<'a> {
        Value(&'a Value),
        Key(&'a str),
    }
    let mut errs = Vec::new();
    // The path below `at` of the item being looked at.
    let mut path: Vec<PathSegment> = Vec::new();
    // (item, its depth below `at`, its last path segment).
    let mut stack: Vec<(Item<'_>, usize, Option<PathSegment>)> =
        vec![(Item::Value(value), 0, None)];
    while let Some((item, depth, segment)) = stack.pop() {
        path.truncate(depth.saturating_sub(1));
        path.extend(segment);
        let full = || {
            let mut p = at.clone();
            p.0.extend(path.iter().cloned());
            p
        };
        match item {
            Item::Key(k) => nul_free(k, full, &mut errs),
            Item::Value(Value::String(s)) => nul_free(s, full, &mut errs),
            Item::Value(Value::Array(items)) => {
                // Pushed in reverse, so they are looked at in order.
                for (i, v) in items.iter().enumerate().rev() {
                    if may_hold_nul(v) {
                        stack.push((Item::Value(v), depth + 1, Some(PathSegment::Index(i))));
                    }
                }
            }
            Item::Value(Value::Object(m)) => {
                let start = stack.len();
                for (k, v) in m {
                    if k.contains('\0') {
                        stack.push((Item::Key(k), depth + 1, Some(PathSegment::Key(k.clone()))));
                    }
                    if may_hold_nul(v) {
                        stack.push((Item::Value(v), depth + 1, Some(PathSegment::Key(k.clone()))));
                    }
                }
                stack[start..].reverse();
            }
            Item::Value(Value::Null | Value::Bool(_) | Value::Number(_)) => {}
        }
    }
    errs
}

/// Whether a JSON value may have a string (or key) inside it.
fn may_hold_nul(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Array(_) | Value::Object(_))
}

/// A string that may be left out (it has a default) but not sent as null.
fn defaulted_string(
    obj: &Map<String, Value>,
    at: &FieldPath,
    key: &str,
    errs: &mut Vec<FieldError>,
) {
    match obj.get(key) {
        None | Some(Value::String(_)) => {}
        Some(v) => errs.push(err(at.key(key), FieldErrorKind::NotAString, v)),
    }
}

fn opt_string(obj: &Map<String, Value>, at: &FieldPath, key: &str, errs: &mut Vec<FieldError>) {
    match obj.get(key) {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(v) => errs.push(err(at.key(key), FieldErrorKind::NotAString, v)),
    }
}

fn req_choice(
    obj: &Map<String, Value>,
    at: &FieldPath,
    key: &str,
    allowed: &'static [&'static str],
    errs: &mut Vec<FieldError>,
) {
    match obj.get(key) {
        None => errs.push(err(
            at.key(key),
            FieldErrorKind::Missing,
            &Value::Object(obj.clone()),
        )),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => {}
        Some(v @ Value::String(_)) => {
            errs.push(err(at.key(key), FieldErrorKind::NotAllowed { allowed }, v))
        }
        Some(v) => errs.push(err(at.key(key), FieldErrorKind::NotAString, v)),
    }
}

fn opt_string_list(
    obj: &Map<String, Value>,
    at: &FieldPath,
    key: &str,
    errs: &mut Vec<FieldError>,
) {
    match present(obj, key) {
        None => {}
        Some(Value::Array(items)) => {
            for (i, v) in items.iter().enumerate() {
                match v {
                    Value::String(s) => errs.extend(check_key(s, &at.key(key).index(i))),
                    _ => errs.push(err(at.key(key).index(i), FieldErrorKind::NotAString, v)),
                }
            }
        }
        Some(v) => errs.push(err(at.key(key), FieldErrorKind::NotAList, v)),
    }
}

/// An entity version: any non-empty string within the key cap (PROTOCOL §3.3);
/// in strict mode it must also carry the timestamp form.
fn req_version(
    obj: &Map<String, Value>,
    at: &FieldPath,
    key: &str,
    checks: Checks,
    errs: &mut Vec<FieldError>,
) {
    match obj.get(key) {
        None => errs.push(err(
            at.key(key),
            FieldErrorKind::Missing,
            &Value::Object(obj.clone()),
        )),
        Some(Value::String(s)) if s.contains('\0') => {
            nul_free(s, || at.key(key), errs);
        }
        Some(Value::String(s)) if s.len() > MAX_KEY_BYTES => {
            short_key(s, || at.key(key), errs);
        }
        Some(Value::String(s)) if s.is_empty() => {
            errs.push(err(
                at.key(key),
                FieldErrorKind::Empty,
                &Value::String(s.clone()),
            ));
        }
        Some(Value::String(s)) => {
            if let (true, Err(e)) = (checks.strict, Version::new(s.as_str()).parse()) {
                errs.push(err(
                    at.key(key),
                    FieldErrorKind::BadVersion(e.reason),
                    &Value::String(s.clone()),
                ));
            }
        }
        Some(v) => errs.push(err(at.key(key), FieldErrorKind::NotAString, v)),
    }
}

/// A JSON object the server stores (`content`, `properties`): its keys and
/// strings may not contain U+0000.
fn dict(
    obj: &Map<String, Value>,
    at: &FieldPath,
    key: &str,
    required: bool,
    errs: &mut Vec<FieldError>,
) {
    match obj.get(key) {
        None if required => errs.push(err(
            at.key(key),
            FieldErrorKind::Missing,
            &Value::Object(obj.clone()),
        )),
        None => {}
        Some(v @ Value::Object(_)) => errs.extend(nul_characters(v, &at.key(key))),
        Some(v) => errs.push(err(at.key(key), FieldErrorKind::NotADict, v)),
    }
}

/// In strict mode, an unknown value of an open enumeration at `key`.
fn known_value(
    obj: &Map<String, Value>,
    at: &FieldPath,
    key: &str,
    allowed: &'static [&'static str],
    checks: Checks,
    errs: &mut Vec<FieldError>,
) {
    if let (true, Some(v @ Value::String(s))) = (checks.strict, obj.get(key)) {
        if !allowed.contains(&s.as_str()) {
            errs.push(err(
                at.key(key),
                FieldErrorKind::UnknownValue { allowed },
                v,
            ));
        }
    }
}

fn check_change(c: &Value, at: &FieldPath, checks: Checks, errs: &mut Vec<FieldError>) {
    let Some(obj) = c.as_object() else {
        errs.push(err(at.clone(), FieldErrorKind::NotAnObject, c));
        return;
    };
    req_choice(obj, at, "change_type", CHANGE_TYPES, errs);
    if let Some(e) = present(obj, "entity") {
        check_entity(e, &at.key("entity"), checks, errs);
    }
    if let Some(rels) = obj.get("relationships") {
        let p = at.key("relationships");
        match rels.as_array() {
            Some(items) => {
                for (i, r) in items.iter().enumerate() {
                    check_relationship(r, &p.index(i), checks, errs);
                }
            }
            None => errs.push(err(p, FieldErrorKind::NotAList, rels)),
        }
    }
}

fn check_entity(e: &Value, at: &FieldPath, checks: Checks, errs: &mut Vec<FieldError>) {
    let Some(obj) = e.as_object() else {
        errs.push(err(at.clone(), FieldErrorKind::NotAnObject, e));
        return;
    };
    req_key(obj, at, "id", errs);
    req_version(obj, at, "version", checks, errs);
    req_key(obj, at, "entity_type", errs);
    known_value(obj, at, "entity_type", EntityType::KNOWN_STRS, checks, errs);
    req_limited(obj, at, "name", MAX_NAME_BYTES, errs);
    dict(obj, at, "content", true, errs);
    req_key(obj, at, "source_type", errs);
    known_value(obj, at, "source_type", SourceType::KNOWN_STRS, checks, errs);
    req_key(obj, at, "user_id", errs);
    if obj.get("parent_versions") == Some(&Value::Null) {
        errs.push(err(
            at.key("parent_versions"),
            FieldErrorKind::NotAList,
            &Value::Null,
        ));
    } else {
        opt_string_list(obj, at, "parent_versions", errs);
    }
    opt_string(obj, at, "checksum", errs);
    if let (Some(Value::String(sum)), Some(Value::Object(content))) =
        (obj.get("checksum"), obj.get("content"))
    {
        if let Err(e) = verify_content_checksum(content, sum) {
            errs.push(err(
                at.key("checksum"),
                FieldErrorKind::BadChecksum(e.to_string()),
                &Value::String(sum.clone()),
            ));
        }
    }
    // A timestamp that does not read is ignored by default (the edit time
    // then falls back to the receipt time), refused in strict mode.
    if checks.strict {
        for key in ["created_at", "updated_at"] {
            check_timestamp(obj, at, key, errs);
        }
    }
    if let Some(Value::String(id)) = obj.get("id") {
        if id.trim().is_empty() {
            errs.push(err(
                at.key("id"),
                FieldErrorKind::Empty,
                &Value::String(id.clone()),
            ));
        }
    }
}

fn check_relationship(r: &Value, at: &FieldPath, checks: Checks, errs: &mut Vec<FieldError>) {
    let Some(obj) = r.as_object() else {
        errs.push(err(at.clone(), FieldErrorKind::NotAnObject, r));
        return;
    };
    req_key(obj, at, "id", errs);
    req_key(obj, at, "from_entity_id", errs);
    endpoint_version(obj, at, "from_entity_version", errs);
    req_key(obj, at, "to_entity_id", errs);
    endpoint_version(obj, at, "to_entity_version", errs);
    req_key(obj, at, "relationship_type", errs);
    known_value(
        obj,
        at,
        "relationship_type",
        RelationshipType::KNOWN_STRS,
        checks,
        errs,
    );
    dict(obj, at, "properties", false, errs);
    opt_string(obj, at, "user_id", errs);
    if let Some(Value::String(user)) = obj.get("user_id") {
        errs.extend(check_key(user, &at.key("user_id")));
    }
    for key in ["created_at", "updated_at"] {
        check_timestamp(obj, at, key, errs);
    }
}

/// A relationship endpoint version: a string, or null (any version of the
/// endpoint, PROTOCOL §5.4), as the reference client may send it; required.
fn endpoint_version(
    obj: &Map<String, Value>,
    at: &FieldPath,
    key: &str,
    errs: &mut Vec<FieldError>,
) {
    if obj.get(key) != Some(&Value::Null) {
        req_key(obj, at, key, errs);
    }
}

fn check_timestamp(
    obj: &Map<String, Value>,
    at: &FieldPath,
    key: &str,
    errs: &mut Vec<FieldError>,
) {
    match present(obj, key) {
        None => {}
        Some(Value::String(s)) => {
            if let Err(e) = Timestamp::parse(s) {
                errs.push(err(
                    at.key(key),
                    FieldErrorKind::BadTimestamp(e.to_string()),
                    &Value::String(s.clone()),
                ));
            }
        }
        Some(Value::Number(n)) => {
            let r = n
                .as_f64()
                .ok_or_else(|| "not a number".to_owned())
                .and_then(|f| Timestamp::from_unix_number(f).map_err(|e| e.to_string()));
            if let Err(e) = r {
                errs.push(err(
                    at.key(key),
                    FieldErrorKind::BadTimestamp(e),
                    &Value::Number(n.clone()),
                ));
            }
        }
        Some(v) => errs.push(err(
            at.key(key),
            FieldErrorKind::BadTimestamp("expected a string".into()),
            v,
        )),
    }
}

fn check_filters(f: &Value, at: &FieldPath, checks: Checks, errs: &mut Vec<FieldError>) {
    let Some(obj) = f.as_object() else {
        errs.push(err(at.clone(), FieldErrorKind::NotADict, f));
        return;
    };
    opt_string_list(obj, at, "entity_types", errs);
    if let (true, Some(Value::Array(types))) = (checks.strict, present(obj, "entity_types")) {
        for (i, v) in types.iter().enumerate() {
            if matches!(v, Value::String(t) if !EntityType::KNOWN_STRS.contains(&t.as_str())) {
                errs.push(err(
                    at.key("entity_types").index(i),
                    FieldErrorKind::UnknownValue {
                        allowed: EntityType::KNOWN_STRS,
                    },
                    v,
                ));
            }
        }
    }
    check_timestamp(obj, at, "since", errs);
    opt_string_list(obj, at, "modified_by", errs);
}

fn check_vector_clock(vc: &Value, at: &FieldPath, errs: &mut Vec<FieldError>) {
    let Some(obj) = vc.as_object() else {
        errs.push(err(at.clone(), FieldErrorKind::NotADict, vc));
        return;
    };
    if let Some(clocks) = obj.get("clocks") {
        let p = at.key("clocks");
        match clocks.as_object() {
            Some(m) => {
                for (k, v) in m {
                    if !v.is_string() {
                        errs.push(err(p.key(k), FieldErrorKind::NotAString, v));
                    }
                }
            }
            None => errs.push(err(p, FieldErrorKind::NotADict, clocks)),
        }
    }
}
