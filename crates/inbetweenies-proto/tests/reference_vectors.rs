//! Wire compatibility with the Python reference server, checked against its captured exchanges.
//!
//! `tests/vectors/reference` holds real HTTP exchanges with the reference
//! FunkyGibbon (see its README). Every body it accepted on `POST /api/v1/sync/`
//! must read into our types and write back equal, as JSON values, to what was
//! captured; the few places where our canonical form differs are normalised
//! here explicitly, by name, and each vector asserts exactly which of them it
//! needed. Every body it rejected must be rejected by our validation naming
//! the same field, except where the reference failed with a 500 and we do
//! better. Nothing in the directory is skipped without being named.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use inbetweenies_proto::validate::{self, parse_sync_request};
use inbetweenies_proto::*;
use serde_json::{Map, Value};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/reference");

/// One captured exchange: `NN_name.{meta,request,response}.json`.
#[derive(Debug)]
struct Vector {
    /// `NN_name`, or `client_trace/NN_name`.
    name: String,
    meta: Value,
    request: Option<Value>,
    response: Option<Value>,
}

impl Vector {
    fn status(&self) -> u64 {
        self.meta["status"].as_u64().expect("meta.status")
    }

    fn method(&self) -> &str {
        self.meta["method"].as_str().expect("meta.method")
    }

    fn path(&self) -> &str {
        self.meta["path"].as_str().expect("meta.path")
    }

    /// A `POST /api/v1/sync/` exchange (or its slash-less twin, which the reference redirects).
    fn is_sync_post(&self) -> bool {
        self.method() == "POST" && matches!(self.path(), "/api/v1/sync/" | "/api/v1/sync")
    }

    fn request(&self) -> &Value {
        self.request
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no request body", self.name))
    }

    fn response(&self) -> &Value {
        self.response
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no response body", self.name))
    }

    fn content_type(&self) -> &str {
        self.meta["request_headers"]["Content-Type"]
            .as_str()
            .unwrap_or("application/json")
    }

    /// The request body's bytes exactly as they were sent.
    ///
    /// A body the capture could not store as JSON is kept as
    /// `{"_raw_body": "..."}`. A body sent with a non-JSON content type is not
    /// parsed as JSON by the reference (FastAPI reads it as one string), so it
    /// is fed to our parser as that JSON string — the way our server treats it.
    fn request_bytes(&self) -> Vec<u8> {
        let body = self.request();
        if self.meta["request_body_is_raw"] == Value::Bool(true) {
            let raw = body["_raw_body"].as_str().expect("_raw_body");
            if self.content_type().starts_with("application/json") {
                raw.as_bytes().to_vec()
            } else {
                serde_json::to_vec(&Value::String(raw.to_owned())).expect("string")
            }
        } else {
            serde_json::to_vec(body).expect("re-encode")
        }
    }
}

fn read_json(path: &Path) -> Option<Value> {
    let text = fs::read_to_string(path).ok()?;
    Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn load_dir(dir: &Path, prefix: &str, out: &mut Vec<Vector>) {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("utf-8")
        })
        .filter_map(|f| f.strip_suffix(".meta.json").map(str::to_owned))
        .collect();
    names.sort();
    for n in names {
        out.push(Vector {
            name: format!("{prefix}{n}"),
            meta: read_json(&dir.join(format!("{n}.meta.json"))).expect("meta"),
            request: read_json(&dir.join(format!("{n}.request.json"))),
            response: read_json(&dir.join(format!("{n}.response.json"))),
        });
    }
}

fn vectors() -> Vec<Vector> {
    let root = Path::new(DIR);
    let mut v = Vec::new();
    load_dir(root, "", &mut v);
    load_dir(&root.join("client_trace"), "client_trace/", &mut v);
    v
}

fn vector(name: &str) -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

/// Exchanges whose bodies are not inbetweenies-proto types: health, auth,
/// sync status/conflict endpoints and the reference's graph REST API are
/// server types, and the server crate tests them.
const SERVER_TYPES: &[&str] = &[
    "00_health",
    "01_auth_login_ok",
    "02_auth_login_bad_password",
    "03_auth_login_missing_password",
    "04_auth_login_empty_password",
    "05_auth_me",
    "69_sync_status",
    "70_sync_status_missing_device_id",
    "71_sync_conflicts_list",
    "72_sync_conflict_resolve_404",
    "73_auth_refresh",
    "74_auth_guest_generate_qr",
    "75_auth_guest_verify",
    "77_auth_refresh_guest_forbidden",
    "client_trace/00_POST_api_v1_auth_admin_login",
    "client_trace/01_POST_api_v1_graph_entities",
    "client_trace/02_POST_api_v1_graph_entities",
    "client_trace/03_POST_api_v1_graph_relationships",
    "client_trace/04_GET_health",
    "client_trace/06_GET_health",
    "client_trace/08_GET_health",
    "client_trace/11_POST_api_v1_auth_admin_login",
    "client_trace/12_GET_health",
    "client_trace/14_GET_health",
];

/// Sync requests the reference never read: it answered from routing (307)
/// or authentication (401) first. Their bodies are still checked below.
const NOT_READ_BY_REFERENCE: &[&str] = &[
    "62_sync_no_trailing_slash_redirect",
    "63_sync_no_auth",
    "64_sync_bad_token",
    "65_sync_wrong_scheme",
    "66_sync_token_wrong_secret",
    "67_sync_token_expired",
    "68_sync_no_auth_and_malformed_body",
];

/// Sync requests the reference refused, each with the check our parser must pass.
/// A check run on one rejected vector.
type Check = fn(&Vector);

const REJECTED: &[(&str, Check)] = &[
    (
        "16_sync_full_filter_unknown_entity_type",
        reference_500_unknown_filter_type,
    ),
    ("20_sync_delta_cursor_not_integer", cursor_not_integer),
    (
        "37_sync_relationship_unknown_type",
        unknown_relationship_type,
    ),
    (
        "39_sync_push_invalid_source_type_500",
        reference_500_unknown_value,
    ),
    (
        "40_sync_push_invalid_entity_type_500",
        reference_500_unknown_value,
    ),
    (
        "41_sync_push_uppercase_source_type_500",
        reference_500_unknown_value,
    ),
    (
        "42_sync_push_unknown_change_type_in_enum_422",
        same_fields_as_reference,
    ),
    ("43_sync_bad_protocol_version", bad_protocol_version),
    ("45_sync_missing_device_id", same_fields_as_reference),
    ("46_sync_missing_sync_type", same_fields_as_reference),
    ("47_sync_missing_all_required", same_fields_as_reference),
    ("48_sync_bad_sync_type", same_fields_as_reference),
    (
        "49_sync_wrong_type_changes_not_list",
        same_fields_as_reference,
    ),
    ("50_sync_wrong_type_device_id_int", same_fields_as_reference),
    (
        "51_sync_wrong_type_content_not_object",
        same_fields_as_reference,
    ),
    ("52_sync_entity_missing_version", same_fields_as_reference),
    ("53_sync_bad_timestamp_since", same_fields_as_reference),
    (
        "55_sync_bad_timestamp_since_out_of_range",
        same_fields_as_reference,
    ),
    ("56_sync_bad_vector_clock", same_fields_as_reference),
    ("57_sync_invalid_json_body", same_fields_as_reference),
    ("58_sync_empty_body", same_fields_as_reference),
    ("59_sync_json_array_body", same_fields_as_reference),
    ("60_sync_text_plain_content_type", same_fields_as_reference),
    (
        "client_trace/10_POST_api_v1_sync",
        reference_500_unknown_value,
    ),
];

#[test]
fn every_vector_is_accounted_for() {
    let all = vectors();
    // 00..=81 in the top directory and 00..=16 in client_trace/, per the README.
    assert_eq!(all.iter().filter(|v| !v.name.contains('/')).count(), 82);
    assert_eq!(all.iter().filter(|v| v.name.contains('/')).count(), 17);
    for v in &all {
        let skipped = SERVER_TYPES.contains(&v.name.as_str());
        let rejected = REJECTED.iter().any(|(n, _)| *n == v.name);
        let not_read = NOT_READ_BY_REFERENCE.contains(&v.name.as_str());
        if skipped {
            assert!(
                !v.is_sync_post(),
                "{}: a sync body listed as a server type",
                v.name
            );
        } else {
            assert!(
                v.is_sync_post(),
                "{}: neither a sync POST nor skipped",
                v.name
            );
            let accepted = v.status() == 200;
            let claims = [accepted, rejected, not_read];
            assert_eq!(
                claims.iter().filter(|c| **c).count(),
                1,
                "{} (status {}) must be exactly one of accepted/rejected/not-read",
                v.name,
                v.status()
            );
        }
    }
    let names: Vec<&str> = all.iter().map(|v| v.name.as_str()).collect();
    for n in SERVER_TYPES
        .iter()
        .chain(NOT_READ_BY_REFERENCE)
        .chain(REJECTED.iter().map(|(n, _)| n))
    {
        assert!(names.contains(n), "listed vector {n} does not exist");
    }
}

// ---------------------------------------------------------------------------
// Normalisation: every way our canonical form legitimately differs.

/// What normalising one captured body to our canonical form changed.
#[derive(Debug, Default, PartialEq)]
struct Normalised {
    /// (a) Timestamps re-written canonically: (path, original, canonical).
    timestamps: Vec<(String, Value, String)>,
    /// (b) Request entities without `checksum`, which we write as `null`.
    checksums_added: usize,
    /// (c) `protocol_version` was absent and defaults to `inbetweenies-v2`.
    protocol_version_defaulted: bool,
    /// (d) Unknown keys, which we drop on reading.
    dropped_unknown: Vec<String>,
    /// (d) Optional keys sent as `null`, which we omit on writing (absent and
    /// null mean the same to both servers).
    dropped_null: Vec<String>,
}

const REQUEST_KEYS: &[&str] = &[
    "protocol_version",
    "device_id",
    "user_id",
    "sync_type",
    "changes",
    "filters",
    "vector_clock",
    "cursor",
];
const FILTER_KEYS: &[&str] = &["entity_types", "since", "modified_by"];
const CHANGE_KEYS: &[&str] = &["change_type", "entity", "relationships"];
const ENTITY_KEYS: &[&str] = &[
    "id",
    "version",
    "entity_type",
    "name",
    "content",
    "source_type",
    "user_id",
    "parent_versions",
    "checksum",
];
const RELATIONSHIP_KEYS: &[&str] = &[
    "id",
    "from_entity_id",
    "from_entity_version",
    "to_entity_id",
    "to_entity_version",
    "relationship_type",
    "properties",
    "user_id",
    "created_at",
    "updated_at",
];
const CONFLICT_KEYS: &[&str] = &[
    "entity_id",
    "local_version",
    "remote_version",
    "resolution_strategy",
    "resolved_version",
    "reason",
];
const STATS_KEYS: &[&str] = &[
    "entities_synced",
    "relationships_synced",
    "conflicts_resolved",
    "duration_ms",
];
const RESPONSE_KEYS: &[&str] = &[
    "protocol_version",
    "sync_type",
    "changes",
    "conflicts",
    "vector_clock",
    "cursor",
    "state_digest",
    "sync_stats",
    "server_time",
    "applied",
    "applied_relationships",
];

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

impl Normalised {
    /// (d) Drops keys our types do not know, recording them.
    fn retain_known(&mut self, obj: &mut Map<String, Value>, at: &str, known: &[&str]) {
        let unknown: Vec<String> = obj
            .keys()
            .filter(|k| !known.contains(&k.as_str()))
            .cloned()
            .collect();
        for k in unknown {
            obj.remove(&k);
            self.dropped_unknown.push(join(at, &k));
        }
    }

    /// (d) Drops optional keys sent as `null` that our types omit when unset.
    fn drop_null(&mut self, obj: &mut Map<String, Value>, at: &str, omitted: &[&str]) {
        for k in omitted {
            if obj.get(*k) == Some(&Value::Null) {
                obj.remove(*k);
                self.dropped_null.push(join(at, k));
            }
        }
    }

    /// (a) Re-writes a timestamp canonically: whatever form the reference
    /// accepted (naive, `Z`, another offset, an epoch number) becomes UTC with
    /// `+00:00` and microseconds — exactly what parsing the original gives.
    fn timestamp(&mut self, obj: &mut Map<String, Value>, at: &str, key: &str) {
        let Some(orig) = obj.get(key).filter(|v| !v.is_null()).cloned() else {
            return;
        };
        let parsed = match &orig {
            Value::String(s) => Timestamp::parse(s),
            Value::Number(n) => Timestamp::from_unix_number(n.as_f64().expect("finite")),
            other => panic!("{at}.{key}: not a timestamp: {other}"),
        }
        .unwrap_or_else(|e| panic!("{at}.{key}: accepted by the reference, not by us: {e}"));
        let canonical = parsed.to_string();
        assert_canonical_form(&canonical);
        if orig != Value::String(canonical.clone()) {
            self.timestamps
                .push((join(at, key), orig, canonical.clone()));
            obj.insert(key.to_owned(), Value::String(canonical));
        }
    }

    fn relationship(&mut self, r: &mut Value, at: &str) {
        let obj = r.as_object_mut().expect("relationship object");
        self.retain_known(obj, at, RELATIONSHIP_KEYS);
        self.drop_null(obj, at, &["user_id", "created_at", "updated_at"]);
        for k in ["created_at", "updated_at"] {
            self.timestamp(obj, at, k);
        }
    }

    fn change(&mut self, c: &mut Value, at: &str, is_request: bool) {
        let obj = c.as_object_mut().expect("change object");
        self.retain_known(obj, at, CHANGE_KEYS);
        if let Some(Value::Object(e)) = obj.get_mut("entity") {
            let at = join(at, "entity");
            self.retain_known(e, &at, ENTITY_KEYS);
            // (b) Our EntityChange always writes `checksum` (null when unset), as
            // the reference's own responses do; requests may leave it out.
            if is_request && !e.contains_key("checksum") {
                e.insert("checksum".into(), Value::Null);
                self.checksums_added += 1;
            }
        }
        if let Some(Value::Array(rels)) = obj.get_mut("relationships") {
            for (i, r) in rels.iter_mut().enumerate() {
                self.relationship(r, &format!("{at}.relationships[{i}]"));
            }
        }
    }

    fn request(&mut self, body: &Value) -> Value {
        let mut v = body.clone();
        let obj = v.as_object_mut().expect("request object");
        // (c) The reference defaults a missing protocol_version; so do we, and we write it.
        if !obj.contains_key("protocol_version") {
            obj.insert("protocol_version".into(), PROTOCOL_VERSION.into());
            self.protocol_version_defaulted = true;
        }
        self.retain_known(obj, "", REQUEST_KEYS);
        self.drop_null(obj, "", &["filters", "cursor"]);
        if let Some(Value::Object(f)) = obj.get_mut("filters") {
            self.retain_known(f, "filters", FILTER_KEYS);
            self.drop_null(f, "filters", FILTER_KEYS);
            self.timestamp(f, "filters", "since");
        }
        if let Some(Value::Array(changes)) = obj.get_mut("changes") {
            for (i, c) in changes.iter_mut().enumerate() {
                self.change(c, &format!("changes[{i}]"), true);
            }
        }
        if let Some(Value::Object(vc)) = obj.get_mut("vector_clock") {
            self.retain_known(vc, "vector_clock", &["clocks"]);
        }
        v
    }

    fn response(&mut self, body: &Value) -> Value {
        let mut v = body.clone();
        let obj = v.as_object_mut().expect("response object");
        self.retain_known(obj, "", RESPONSE_KEYS);
        self.timestamp(obj, "", "server_time");
        if let Some(Value::Array(changes)) = obj.get_mut("changes") {
            for (i, c) in changes.iter_mut().enumerate() {
                self.change(c, &format!("changes[{i}]"), false);
            }
        }
        if let Some(Value::Array(conflicts)) = obj.get_mut("conflicts") {
            for (i, c) in conflicts.iter_mut().enumerate() {
                let at = format!("conflicts[{i}]");
                self.retain_known(c.as_object_mut().expect("conflict"), &at, CONFLICT_KEYS);
            }
        }
        if let Some(Value::Object(stats)) = obj.get_mut("sync_stats") {
            self.retain_known(stats, "sync_stats", STATS_KEYS);
        }
        v
    }
}

/// `2026-06-15T09:41:02.581234+00:00`: UTC, explicit offset, six fraction digits.
fn assert_canonical_form(s: &str) {
    let b = s.as_bytes();
    assert_eq!(b.len(), 32, "{s}");
    assert_eq!(&s[19..20], ".", "{s}");
    assert!(b[20..26].iter().all(u8::is_ascii_digit), "{s}");
    assert_eq!(&s[26..], "+00:00", "{s}");
}

/// (e) `sync_stats.duration_ms` is a float on both sides; compare it as an
/// `f64` (the reference may write `2` where we write `2.0`).
fn duration_as_f64(v: &mut Value) {
    if let Some(d) = v.pointer_mut("/sync_stats/duration_ms") {
        let f = d.as_f64().expect("duration_ms is a number");
        *d = Value::from(f);
    }
}

/// Which vectors need which normalisation, beyond (b) and (e), which apply
/// wherever their field occurs. Every vector not listed needs none.
struct Expected {
    name: &'static str,
    /// (a) Request timestamps re-written: (path, original, canonical).
    timestamps: &'static [(&'static str, &'static str, &'static str)],
    /// (c)
    protocol_version_defaulted: bool,
    /// (d)
    dropped_unknown: &'static [&'static str],
    /// (d)
    dropped_null: &'static [&'static str],
}

const EXPECTED: &[Expected] = &[
    Expected {
        name: "17_sync_delta_since_naive_timestamp",
        // A naive `since` is read as UTC, as the reference does.
        timestamps: &[(
            "filters.since",
            "2020-01-01T00:00:00",
            "2020-01-01T00:00:00.000000+00:00",
        )],
        protocol_version_defaulted: false,
        dropped_unknown: &[],
        dropped_null: &[],
    },
    Expected {
        name: "18_sync_delta_since_Z_suffix",
        timestamps: &[(
            "filters.since",
            "2099-01-01T00:00:00Z",
            "2099-01-01T00:00:00.000000+00:00",
        )],
        protocol_version_defaulted: false,
        dropped_unknown: &[],
        dropped_null: &[],
    },
    Expected {
        name: "21_sync_full_ignores_since",
        // `+00:00` without microseconds gains them.
        timestamps: &[(
            "filters.since",
            "2099-01-01T00:00:00+00:00",
            "2099-01-01T00:00:00.000000+00:00",
        )],
        protocol_version_defaulted: false,
        dropped_unknown: &[],
        dropped_null: &[],
    },
    Expected {
        name: "44_sync_missing_protocol_version_accepted",
        timestamps: &[],
        protocol_version_defaulted: true,
        dropped_unknown: &[],
        dropped_null: &[],
    },
    Expected {
        name: "54_sync_bad_timestamp_since_number",
        // Unix seconds, as pydantic reads them in lax mode (the number is
        // stored here as its JSON text).
        timestamps: &[(
            "filters.since",
            "1700000000",
            "2023-11-14T22:13:20.000000+00:00",
        )],
        protocol_version_defaulted: false,
        dropped_unknown: &[],
        dropped_null: &[],
    },
    Expected {
        name: "61_sync_extra_unknown_fields_ignored",
        timestamps: &[],
        protocol_version_defaulted: false,
        dropped_unknown: &["surprise", "filters.bogus"],
        dropped_null: &["filters.since"],
    },
    Expected {
        name: "client_trace/07_POST_api_v1_sync",
        // The reference client sends naive timestamps.
        timestamps: &[(
            "filters.since",
            "2026-11-21T23:10:32.272717",
            "2026-11-21T23:10:32.272717+00:00",
        )],
        protocol_version_defaulted: false,
        dropped_unknown: &[],
        dropped_null: &[],
    },
    Expected {
        name: "client_trace/09_POST_api_v1_sync",
        timestamps: &[(
            "filters.since",
            "2026-11-21T23:10:34.166497",
            "2026-11-21T23:10:34.166497+00:00",
        )],
        protocol_version_defaulted: false,
        dropped_unknown: &[],
        dropped_null: &[],
    },
    Expected {
        name: "client_trace/15_POST_api_v1_sync",
        timestamps: &[(
            "filters.since",
            "2026-11-21T23:10:37.971944",
            "2026-11-21T23:10:37.971944+00:00",
        )],
        protocol_version_defaulted: false,
        dropped_unknown: &[],
        dropped_null: &[],
    },
];

fn original_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn count_request_entities_without_checksum(body: &Value) -> usize {
    body["changes"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| {
                    c["entity"]
                        .as_object()
                        .is_some_and(|e| !e.contains_key("checksum"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// Reads a request, writes it back, and compares with the normalised original.
fn round_trip_request(v: &Vector) -> Normalised {
    let body = v.request();
    let parsed = parse_sync_request(&v.request_bytes())
        .unwrap_or_else(|e| panic!("{}: accepted by the reference, rejected by us: {e}", v.name));
    // The plain serde path reads the same thing as validation.
    let plain: SyncRequest =
        serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{}: serde: {e}", v.name));
    assert_eq!(parsed, plain, "{}", v.name);

    let ours = serde_json::to_value(&parsed).expect("serialize");
    let mut n = Normalised::default();
    let expected = n.request(body);
    assert_eq!(
        ours,
        expected,
        "{}: request does not round-trip\nours:     {}\nexpected: {}",
        v.name,
        serde_json::to_string_pretty(&ours).unwrap_or_default(),
        serde_json::to_string_pretty(&expected).unwrap_or_default(),
    );
    // Re-reading our own output gives the same request.
    let again: SyncRequest = serde_json::from_value(ours).expect("re-read");
    assert_eq!(again, parsed, "{}", v.name);
    n
}

fn check_request_normalisation(v: &Vector, n: &Normalised) {
    let body = v.request();
    assert_eq!(
        n.checksums_added,
        count_request_entities_without_checksum(body),
        "{}",
        v.name
    );
    let exp = EXPECTED.iter().find(|e| e.name == v.name);
    let got_ts: Vec<(String, String, String)> = n
        .timestamps
        .iter()
        .map(|(p, o, c)| (p.clone(), original_text(o), c.clone()))
        .collect();
    let want_ts: Vec<(String, String, String)> = exp
        .map(|e| {
            e.timestamps
                .iter()
                .map(|(p, o, c)| ((*p).to_owned(), (*o).to_owned(), (*c).to_owned()))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(got_ts, want_ts, "{}: timestamps re-written", v.name);
    assert_eq!(
        n.protocol_version_defaulted,
        exp.is_some_and(|e| e.protocol_version_defaulted),
        "{}: protocol_version defaulted",
        v.name
    );
    assert_eq!(
        n.dropped_unknown,
        exp.map(|e| e.dropped_unknown.to_vec()).unwrap_or_default(),
        "{}: unknown keys dropped",
        v.name
    );
    assert_eq!(
        n.dropped_null,
        exp.map(|e| e.dropped_null.to_vec()).unwrap_or_default(),
        "{}: null keys omitted",
        v.name
    );
}

#[test]
fn accepted_sync_requests_round_trip() {
    let mut checked = 0;
    let mut seen_expected = Vec::new();
    for v in vectors()
        .iter()
        .filter(|v| v.is_sync_post() && v.status() == 200)
    {
        let n = round_trip_request(v);
        check_request_normalisation(v, &n);
        seen_expected.extend(EXPECTED.iter().filter(|e| e.name == v.name).map(|e| e.name));
        checked += 1;
    }
    // 06-15, 17-19, 21-36, 38, 44, 54, 61, 76, 78-81 and six client-trace syncs.
    assert_eq!(checked, 44);
    assert_eq!(
        seen_expected.len(),
        EXPECTED.len(),
        "every EXPECTED entry is used"
    );
}

#[test]
fn accepted_sync_responses_round_trip() {
    let mut checked = 0;
    for v in vectors()
        .iter()
        .filter(|v| v.is_sync_post() && v.status() == 200)
    {
        let body = v.response();
        let parsed: SyncResponse = serde_json::from_value(body.clone())
            .unwrap_or_else(|e| panic!("{}: response does not parse: {e}", v.name));
        let mut ours = serde_json::to_value(&parsed).expect("serialize");
        let mut n = Normalised::default();
        let mut expected = n.response(body);
        // Responses need no normalisation but (e): the reference already writes
        // canonical timestamps, `checksum: null`, and no keys we do not know.
        assert_eq!(n, Normalised::default(), "{}", v.name);
        duration_as_f64(&mut ours);
        duration_as_f64(&mut expected);
        assert_eq!(ours, expected, "{}: response does not round-trip", v.name);
        // Keys come out in the reference's order, at every depth.
        assert_same_key_order(&serde_json::to_value(&parsed).expect("ser"), body, &v.name);
        checked += 1;
    }
    assert_eq!(checked, 44);
}

fn assert_same_key_order(ours: &Value, theirs: &Value, at: &str) {
    match (ours, theirs) {
        (Value::Object(a), Value::Object(b)) => {
            let ka: Vec<&String> = a.keys().collect();
            let kb: Vec<&String> = b.keys().collect();
            assert_eq!(ka, kb, "{at}: key order");
            for (k, va) in a {
                assert_same_key_order(va, &b[k], &format!("{at}.{k}"));
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (va, vb)) in a.iter().zip(b).enumerate() {
                assert_same_key_order(va, vb, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

#[test]
fn responses_carry_what_the_readme_promises() {
    // Spot checks on decoded values, so the round trip above is not only
    // "what goes in comes out".
    let v = vector("07_sync_push_create_with_relationship");
    let r: SyncResponse = serde_json::from_value(v.response().clone()).expect("parse");
    assert_eq!(r.protocol_version, PROTOCOL_VERSION);
    assert_eq!(r.sync_type, SyncType::Delta);
    assert_eq!(r.applied.len(), 2);
    assert_eq!(
        r.applied_relationships,
        vec![RelationshipId::new("7a14ada7-d508-4101-816d-1e449823c519")]
    );
    assert_eq!(r.sync_stats.entities_synced, 2);
    assert_eq!(r.sync_stats.relationships_synced, 1);
    assert!((19.0..20.0).contains(&r.sync_stats.duration_ms));
    assert_eq!(
        r.server_time,
        Timestamp::parse("2026-11-21T23:08:52.718522+00:00").expect("ts")
    );
    let first = r.changes[0].entity.as_ref().expect("entity");
    assert_eq!(first.entity_type, EntityType::Room);
    assert_eq!(first.checksum, None);
    assert_eq!(first.version.parse().expect("version").counter, Some(1));

    let empty = vector("06_sync_full_empty_store");
    let r: SyncResponse = serde_json::from_value(empty.response().clone()).expect("parse");
    // The digest of an empty store is SHA-256 of nothing.
    assert_eq!(
        r.state_digest.as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );

    let conflict = vector("25_sync_conflict_client_wins_newer");
    let r: SyncResponse = serde_json::from_value(conflict.response().clone()).expect("parse");
    assert_eq!(r.conflicts.len(), 1);
    let c = &r.conflicts[0];
    assert_eq!(c.resolution_strategy, "remote has newer timestamp");
    assert_eq!(c.resolved_version, c.remote_version);
    assert_eq!(c.reason, None);

    let tombstone = vector("30_sync_full_after_delete");
    let r: SyncResponse = serde_json::from_value(tombstone.response().clone()).expect("parse");
    let deleted: Vec<&SyncChange> = r
        .changes
        .iter()
        .filter(|c| c.change_type == ChangeType::Delete)
        .collect();
    assert!(!deleted.is_empty());
    assert!(deleted
        .iter()
        .all(|c| c.entity.as_ref().is_some_and(EntityChange::is_deleted)));

    let page = vector("79_sync_full_page1_cursor");
    let r: SyncResponse = serde_json::from_value(page.response().clone()).expect("parse");
    assert_eq!(r.changes.len(), 500);
    assert_eq!(r.cursor.as_ref().map(Cursor::seq), Some(Ok(507)));
    let last = vector("80_sync_delta_page2_with_cursor");
    let r: SyncResponse = serde_json::from_value(last.response().clone()).expect("parse");
    assert_eq!(r.cursor, None);
}

// ---------------------------------------------------------------------------
// Requests the reference never read (routing or auth answered first).

#[test]
fn requests_the_reference_did_not_read() {
    for name in NOT_READ_BY_REFERENCE {
        let v = vector(name);
        assert!(matches!(v.status(), 307 | 401), "{name}");
        if *name == "68_sync_no_auth_and_malformed_body" {
            // `{"x": 1}`-style body: the reference said 401 because auth runs
            // first; as a body it lacks every required field.
            let e = parse_sync_request(&v.request_bytes()).expect_err(name);
            let paths: Vec<String> = e.fields().iter().map(|f| f.path.to_string()).collect();
            assert_eq!(paths, ["device_id", "user_id", "sync_type"], "{name}");
            assert!(e.fields().iter().all(|f| f.kind == FieldErrorKind::Missing));
        } else {
            // Well-formed requests: they must read and round-trip like accepted ones.
            let n = round_trip_request(&v);
            check_request_normalisation(&v, &n);
        }
    }
}

// ---------------------------------------------------------------------------
// Requests the reference rejected.

#[test]
fn rejected_sync_requests() {
    for (name, check) in REJECTED {
        let v = vector(name);
        assert!(v.is_sync_post(), "{name}");
        assert!(
            matches!(v.status(), 400 | 422 | 500),
            "{name}: {}",
            v.status()
        );
        check(&v);
    }
}

/// Fields strict mode rejects and the reference does not: (vector, path). The
/// reference carries `version` as an opaque string, and so do we by default;
/// strict mode requires it to parse (`{timestamp}-{counter}-{user}`, legacy
/// forms included). By default every rejected request lists exactly the
/// reference's fields.
const STRICTER_THAN_REFERENCE: &[(&str, &str)] = &[(
    "51_sync_wrong_type_content_not_object",
    "changes[0].entity.version",
)];

/// FastAPI's error `type` for each of our kinds.
fn pydantic_type(kind: &FieldErrorKind) -> &'static str {
    match kind {
        FieldErrorKind::Missing => "missing",
        FieldErrorKind::NotAnObject => "model_attributes_type",
        FieldErrorKind::NotAString => "string_type",
        FieldErrorKind::NotAList => "list_type",
        FieldErrorKind::NotADict => "dict_type",
        FieldErrorKind::NotAllowed { .. } => "string_pattern_mismatch",
        FieldErrorKind::BadTimestamp(_) => "datetime_from_date_parsing",
        other => panic!("no FastAPI counterpart in these vectors: {other:?}"),
    }
}

/// 422: our validation names the same fields, in the same order, as the
/// reference's `detail[..].loc` after its leading `"body"`, with the same kind
/// of error and the same offending input.
fn same_fields_as_reference(v: &Vector) {
    assert_eq!(v.status(), 422, "{}", v.name);
    let detail = v.response()["detail"].as_array().expect("detail list");
    let theirs: Vec<(Vec<Value>, &str, &Value)> = detail
        .iter()
        .map(|d| {
            let loc = d["loc"].as_array().expect("loc");
            assert_eq!(loc[0], "body", "{}", v.name);
            (
                loc[1..].to_vec(),
                d["type"].as_str().expect("type"),
                &d["input"],
            )
        })
        .collect();
    for checks in [validate::Checks::LENIENT, validate::Checks::STRICT] {
        let err = validate::parse_json(&v.request_bytes())
            .and_then(|value| validate::sync_request_checked(value, checks))
            .expect_err(&format!("{}: the reference rejected it", v.name));
        same_fields_in(v, checks, &err, &theirs);
    }
}

fn same_fields_in(
    v: &Vector,
    checks: validate::Checks,
    err: &ValidationError,
    theirs: &[(Vec<Value>, &str, &Value)],
) {
    match err {
        ValidationError::Json { position, .. } => {
            assert_eq!(theirs.len(), 1, "{}", v.name);
            assert_eq!(theirs[0].0, vec![Value::from(*position)], "{}", v.name);
            assert_eq!(theirs[0].1, "json_invalid", "{}", v.name);
        }
        ValidationError::EmptyBody => {
            // FastAPI reports an empty body as the whole body missing.
            assert_eq!(theirs.len(), 1, "{}", v.name);
            assert!(theirs[0].0.is_empty(), "{}", v.name);
            assert_eq!(theirs[0].1, "missing", "{}", v.name);
        }
        ValidationError::Fields(fields) => {
            let (extra, fields): (Vec<&FieldError>, Vec<&FieldError>) =
                fields.iter().partition(|f| {
                    STRICTER_THAN_REFERENCE
                        .iter()
                        .any(|(n, p)| *n == v.name && f.path.to_string() == *p)
                });
            let expected_extra: Vec<&str> = STRICTER_THAN_REFERENCE
                .iter()
                .filter(|(n, _)| checks.strict && *n == v.name)
                .map(|(_, p)| *p)
                .collect();
            let extra_paths: Vec<String> = extra.iter().map(|f| f.path.to_string()).collect();
            assert_eq!(extra_paths, expected_extra, "{}", v.name);
            assert!(extra
                .iter()
                .all(|f| matches!(f.kind, FieldErrorKind::BadVersion(_))));
            let ours: Vec<(Vec<Value>, &str, &Value)> = fields
                .iter()
                .map(|f| (f.path.to_json(), pydantic_type(&f.kind), &f.input))
                .collect();
            assert_eq!(ours, theirs, "{} ({checks:?})", v.name);
        }
        other => panic!("{}: unexpected {other:?}", v.name),
    }
}

/// The reference crashed (500) on an unknown `entity_type`/`source_type`;
/// we read it, keeping the value verbatim so it round-trips.
fn reference_500_unknown_value(v: &Vector) {
    assert_eq!(v.status(), 500, "{}", v.name);
    let req = parse_sync_request(&v.request_bytes())
        .unwrap_or_else(|e| panic!("{}: must parse: {e}", v.name));
    let entity = req.changes[0].entity.as_ref().expect("entity");
    let sent = &v.request()["changes"][0]["entity"];
    assert_eq!(
        entity.entity_type.as_str(),
        sent["entity_type"],
        "{}",
        v.name
    );
    assert_eq!(
        entity.source_type.as_str(),
        sent["source_type"],
        "{}",
        v.name
    );
    assert!(
        !entity.entity_type.is_known() || !entity.source_type.is_known(),
        "{}: one of the two is unknown",
        v.name
    );
    let unknown: Vec<String> = [
        (!entity.entity_type.is_known()).then(|| format!("{:?}", entity.entity_type)),
        (!entity.source_type.is_known()).then(|| format!("{:?}", entity.source_type)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let expected: &[&str] = match v.name.as_str() {
        "39_sync_push_invalid_source_type_500" => &["SourceType::Other(\"None\")"],
        "40_sync_push_invalid_entity_type_500" => &["EntityType::Other(\"spaceship\")"],
        "41_sync_push_uppercase_source_type_500" => &["SourceType::Other(\"MANUAL\")"],
        // The reference CLI's `create` writes source_type "None" and a `+00:00Z` version.
        "client_trace/10_POST_api_v1_sync" => &["SourceType::Other(\"None\")"],
        other => panic!("{other}: not an unknown-value vector"),
    };
    assert_eq!(unknown, expected, "{}", v.name);
    if v.name.starts_with("client_trace/") {
        let parts = entity.version.parse().expect("legacy version parses");
        assert_eq!(parts.user_id, "blowing-off-cli");
        assert_eq!(parts.counter, None);
    }
    let n = round_trip_request(v);
    check_request_normalisation(v, &n);
}

/// 500 on an unknown type in `filters.entity_types`; we read it as `Other`.
fn reference_500_unknown_filter_type(v: &Vector) {
    assert_eq!(v.status(), 500, "{}", v.name);
    let req = parse_sync_request(&v.request_bytes()).expect("must parse");
    let types = req
        .filters
        .as_ref()
        .and_then(|f| f.entity_types.clone())
        .expect("entity_types");
    assert_eq!(types, vec![EntityType::Other("spaceship".into())]);
    let n = round_trip_request(v);
    check_request_normalisation(v, &n);
}

/// 400 for the whole request on an unknown `relationship_type`; we read it as `Other`.
fn unknown_relationship_type(v: &Vector) {
    assert_eq!(v.status(), 400, "{}", v.name);
    let req = parse_sync_request(&v.request_bytes()).expect("must parse");
    let rel = &req.changes[1].relationships[0];
    assert_eq!(
        rel.relationship_type,
        RelationshipType::Other("teleports_to".into())
    );
    assert!(!rel.relationship_type.is_known());
    assert_eq!(
        req.changes[0].entity.as_ref().map(|e| e.id.as_str()),
        Some("rollback-probe")
    );
    let n = round_trip_request(v);
    check_request_normalisation(v, &n);
}

/// 400 on cursor "abc": the body is well-formed; the cursor is not a sequence number.
fn cursor_not_integer(v: &Vector) {
    assert_eq!(v.status(), 400, "{}", v.name);
    let req = parse_sync_request(&v.request_bytes()).expect("must parse");
    let cursor = req.cursor.expect("cursor");
    assert_eq!(cursor, Cursor("abc".into()));
    let err: CursorError = cursor.seq().expect_err("not a sequence number");
    assert_eq!(err, CursorError("abc".into()));
    let detail = v.response()["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("cursor must be a server_seq integer"),
        "{detail}"
    );
    assert!(err
        .to_string()
        .starts_with("cursor must be a server_seq integer"));
}

/// 400 on a protocol version we do not speak.
fn bad_protocol_version(v: &Vector) {
    assert_eq!(v.status(), 400, "{}", v.name);
    let err = parse_sync_request(&v.request_bytes()).expect_err("must fail");
    assert!(err.is_protocol_version(), "{err:?}");
    let f = err.first_field().expect("field");
    assert_eq!(f.path.to_string(), "protocol_version");
    assert_eq!(f.input, v.request()["protocol_version"]);
    assert_eq!(err.fields().len(), 1);
    assert_eq!(v.response()["detail"], "Unsupported protocol version");
}

#[test]
fn raw_bodies_give_json_level_errors() {
    // 57-60 in one place, by kind, so a change of mapping is loud.
    let kinds: BTreeMap<&str, String> = [
        "57_sync_invalid_json_body",
        "58_sync_empty_body",
        "59_sync_json_array_body",
        "60_sync_text_plain_content_type",
    ]
    .into_iter()
    .map(|n| {
        let e = parse_sync_request(&vector(n).request_bytes()).expect_err(n);
        let k = match &e {
            ValidationError::Json { position, .. } => format!("json@{position}"),
            ValidationError::EmptyBody => "empty".to_owned(),
            ValidationError::Fields(f) if f.len() == 1 && f[0].path.0.is_empty() => {
                format!("{:?}", f[0].kind)
            }
            other => format!("unexpected {other:?}"),
        };
        (n, k)
    })
    .collect();
    assert_eq!(kinds["57_sync_invalid_json_body"], "json@40");
    assert_eq!(kinds["58_sync_empty_body"], "empty");
    assert_eq!(kinds["59_sync_json_array_body"], "NotAnObject");
    assert_eq!(kinds["60_sync_text_plain_content_type"], "NotAnObject");
}
