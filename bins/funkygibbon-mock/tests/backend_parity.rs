//! Both backends accept or refuse the same awkward inputs with the same status and error body, and read back what they accept byte for byte.
//!
//! One server on SQLite and one on PostgreSQL get the very same request
//! bytes for each case of a table: U+0000 where it would be stored, lone
//! surrogates, a 1 MB name, deep content, characters outside the BMP, a
//! 64 KiB string, right-to-left and combining text; and, in a second table,
//! every string the server stores outside content (ids, versions, type
//! strings, user and device ids, names) at and past its length limit
//! (PROTOCOL §5.10). Each case states what both must answer; whatever is
//! accepted is then pulled from both and must come back exactly as it was
//! sent.

mod support;

use std::collections::BTreeMap;

use funkygibbon_mock::ServerConfig;
use serde_json::{json, Value};
use support::{read, Backend, TestServer};

/// A fixed version per case, so both servers get the same bytes.
fn version(case: usize) -> String {
    format!("2026-03-01T12:00:00.{case:06}+00:00-{case:06}-tester")
}

/// A create change as raw JSON text, with `name` and `content` spliced in as
/// written (they may hold escapes no JSON value can, such as lone surrogates).
fn raw_change(id: &str, version: &str, name_json: &str, content_json: &str) -> String {
    format!(
        r#"{{"change_type":"create","entity":{{"id":{id},"version":{version},"entity_type":"note","name":{name_json},"content":{content_json},"source_type":"manual","user_id":"tester","parent_versions":[]}},"relationships":[]}}"#,
        id = json!(id),
        version = json!(version),
    )
}

/// The device id of the pushes, unless a case sets its own.
const PUSHER: &str = "parity-pusher";

/// A sync request body around raw change texts.
fn raw_body(device_id: &str, user_id: &str, changes: &[String]) -> Vec<u8> {
    format!(
        r#"{{"protocol_version":"inbetweenies-v2","device_id":{},"user_id":{},"sync_type":"delta","changes":[{}],"vector_clock":{{"clocks":{{}}}}}}"#,
        json!(device_id),
        json!(user_id),
        changes.join(",")
    )
    .into_bytes()
}

/// `depth` objects nested in one another, with a string at the bottom.
fn nested(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 8 + 16);
    for _ in 0..depth {
        s.push_str(r#"{"k":"#);
    }
    s.push_str(r#""bottom""#);
    for _ in 0..depth {
        s.push('}');
    }
    s
}

/// `len` bytes of letters that do not compress (a fixed pseudo-random sequence).
fn incompressible(len: usize) -> String {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// What both servers must answer for a case.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// 200, and the entity reads back as sent.
    Stored,
    /// 422 whose first detail item has this type and `loc`.
    Refused(&'static str, &'static [LocPart]),
}

/// One part of an expected `loc`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum LocPart {
    K(&'static str),
    I(u64),
}

use LocPart::{I, K};

const NAME: &[LocPart] = &[K("body"), K("changes"), I(0), K("entity"), K("name")];
const ID: &[LocPart] = &[K("body"), K("changes"), I(0), K("entity"), K("id")];
const VERSION: &[LocPart] = &[K("body"), K("changes"), I(0), K("entity"), K("version")];
const SOURCE_TYPE: &[LocPart] = &[K("body"), K("changes"), I(0), K("entity"), K("source_type")];
const USER: &[LocPart] = &[K("body"), K("user_id")];
const PARENT: &[LocPart] = &[
    K("body"),
    K("changes"),
    I(0),
    K("entity"),
    K("parent_versions"),
    I(0),
];
const REL_TYPE: &[LocPart] = &[
    K("body"),
    K("changes"),
    I(0),
    K("relationships"),
    I(0),
    K("relationship_type"),
];
const REL_FROM_VERSION: &[LocPart] = &[
    K("body"),
    K("changes"),
    I(0),
    K("relationships"),
    I(0),
    K("from_entity_version"),
];
const CONTENT_K: &[LocPart] = &[
    K("body"),
    K("changes"),
    I(0),
    K("entity"),
    K("content"),
    K("k"),
];
const CONTENT_KEY: &[LocPart] = &[
    K("body"),
    K("changes"),
    I(0),
    K("entity"),
    K("content"),
    K("a\u{0}b"),
];
const FOURTH_NAME: &[LocPart] = &[K("body"), K("changes"), I(3), K("entity"), K("name")];
const JSON_ANYWHERE: &[LocPart] = &[];
const ENTITY_TYPE: &[LocPart] = &[K("body"), K("changes"), I(0), K("entity"), K("entity_type")];
const DEVICE_ID: &[LocPart] = &[K("body"), K("device_id")];
const REL_ID: &[LocPart] = &[
    K("body"),
    K("changes"),
    I(0),
    K("relationships"),
    I(0),
    K("id"),
];
const REL_FROM: &[LocPart] = &[
    K("body"),
    K("changes"),
    I(0),
    K("relationships"),
    I(0),
    K("from_entity_id"),
];
const REL_TO: &[LocPart] = &[
    K("body"),
    K("changes"),
    I(0),
    K("relationships"),
    I(0),
    K("to_entity_id"),
];

/// One awkward input: a label, the request and what both must answer.
struct Case {
    label: &'static str,
    /// The pushing device's id and the request's user id.
    device_id: String,
    user_id: String,
    /// The changes, as raw JSON texts.
    changes: Vec<String>,
    expect: Expect,
    /// Entity ids the case stores when accepted.
    ids: Vec<String>,
    /// Relationship ids the case stores when accepted.
    relationship_ids: Vec<String>,
}

impl Case {
    /// A case pushed by the usual device and user, storing no relationship.
    fn new(label: &'static str, changes: Vec<String>, expect: Expect, ids: Vec<String>) -> Self {
        Case {
            label,
            device_id: PUSHER.into(),
            user_id: "tester".into(),
            changes,
            expect,
            ids,
            relationship_ids: Vec::new(),
        }
    }
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut one = |label: &'static str, name: String, content: String, expect: Expect| {
        n += 1;
        let id = format!("parity-{n}");
        Case::new(
            label,
            vec![raw_change(&id, &version(n), &name, &content)],
            expect,
            vec![id],
        )
    };
    let refused_nul = |loc| Expect::Refused("value_error", loc);
    let bad_json = Expect::Refused("json_invalid", JSON_ANYWHERE);

    out.push(one(
        "U+0000 in a name",
        json!("a\u{0}b").to_string(),
        "{}".into(),
        refused_nul(NAME),
    ));
    out.push(one(
        "U+0000 in a content value",
        "\"n\"".into(),
        json!({"k": "x\u{0}y"}).to_string(),
        refused_nul(CONTENT_K),
    ));
    out.push(one(
        "U+0000 in a content key",
        "\"n\"".into(),
        json!({"a\u{0}b": 1}).to_string(),
        refused_nul(CONTENT_KEY),
    ));
    out.push(one(
        "a lone leading surrogate in a name",
        r#""a\ud800b""#.into(),
        "{}".into(),
        bad_json,
    ));
    out.push(one(
        "a lone trailing surrogate in a content value",
        "\"n\"".into(),
        r#"{"k":"\udc00"}"#.into(),
        bad_json,
    ));
    out.push(one(
        "content nested 1,000 levels deep",
        "\"n\"".into(),
        nested(1_000),
        bad_json,
    ));
    out.push(one(
        "a 1 MB name that does not compress",
        json!(incompressible(1 << 20)).to_string(),
        "{}".into(),
        Expect::Refused("string_too_long", NAME),
    ));
    out.push(one(
        "a 4,096-byte name that does not compress (the limit)",
        json!(incompressible(4096)).to_string(),
        "{}".into(),
        Expect::Stored,
    ));
    out.push(one(
        "a name of 1,366 three-byte characters (4,098 bytes)",
        json!("\u{20ac}".repeat(1366)).to_string(),
        "{}".into(),
        Expect::Refused("string_too_long", NAME),
    ));
    out.push(one(
        "content nested 100 levels deep",
        "\"n\"".into(),
        nested(100),
        Expect::Stored,
    ));
    out.push(one(
        "characters outside the BMP, raw and as surrogate pairs",
        "\"\u{1f600} \u{1d518} \\ud83d\\ude00\"".into(),
        json!({"emoji": "\u{1f3e0}\u{1f4a1}", "escaped": "placeholder"})
            .to_string()
            .replace("placeholder", "\\ud834\\udd1e"),
        Expect::Stored,
    ));
    out.push(one(
        "a 64 KiB content string",
        "\"n\"".into(),
        json!({"text": incompressible(64 << 10)}).to_string(),
        Expect::Stored,
    ));
    out.push(one(
        "right-to-left and combining characters",
        json!("\u{5e1}\u{5dc}\u{5d5}\u{5df} \u{202e}abc\u{202c} e\u{301}\u{323}").to_string(),
        json!({"\u{627}\u{644}\u{627}\u{633}\u{645}": "n\u{303}\u{308}", "mark": "\u{200f}x\u{200e}"})
            .to_string(),
        Expect::Stored,
    ));
    out.push(one(
        "other control characters and escapes",
        json!("tab\there \u{1}\u{1f}\u{7f}").to_string(),
        json!({"k": "\"quoted\" \\ back / slash \u{8}\u{c}\n\r"}).to_string(),
        Expect::Stored,
    ));

    // Ids and versions, and one bad change among good ones.
    n += 1;
    out.push(Case::new(
        "U+0000 in an id",
        vec![raw_change("bad\u{0}id", &version(n), "\"n\"", "{}")],
        refused_nul(ID),
        vec![],
    ));
    n += 1;
    out.push(Case::new(
        "U+0000 in a version",
        vec![raw_change(
            &format!("parity-{n}"),
            &format!("{}\u{0}x", version(n)),
            "\"n\"",
            "{}",
        )],
        refused_nul(VERSION),
        vec![],
    ));
    n += 1;
    let mut changes = Vec::new();
    for i in 0..5 {
        let name = if i == 3 {
            json!("bad\u{0}")
        } else {
            json!("fine")
        };
        changes.push(raw_change(
            &format!("parity-{n}-{i}"),
            &version(n),
            &name.to_string(),
            "{}",
        ));
    }
    out.push(Case::new(
        "U+0000 in the fourth change of five",
        changes,
        refused_nul(FOURTH_NAME),
        vec![],
    ));
    out
}

/// The cap on a stored key string, in bytes of UTF-8 (PROTOCOL §5.10).
const CAP: usize = 1024;

/// A valid version of exactly `len` bytes (its user part is padded with
/// letters that do not compress).
fn long_version(case: usize, len: usize) -> String {
    let head = format!("2026-03-01T12:00:00.{case:06}+00:00-{case:06}-");
    let tail = incompressible(len - head.len());
    head + &tail
}

/// How a key-length case changes the base request: the change, the device
/// id and the request's user id.
type Edit = dyn Fn(&mut Value, &mut String, &mut String);

/// One key-length case: an entity (and, with `relate`, a relationship from
/// it to itself) whose strings `edit` changes before it is sent.
fn key_case(n: usize, label: &'static str, relate: bool, edit: &Edit, expect: Expect) -> Case {
    let id = format!("key-{n}");
    let v = version(n);
    let rel = json!({
        "id": format!("key-rel-{n}"), "from_entity_id": id, "from_entity_version": v,
        "to_entity_id": id, "to_entity_version": v, "relationship_type": "located_in",
        "properties": {"p": 1}, "user_id": "tester",
    });
    let mut change = json!({
        "change_type": "create",
        "entity": {
            "id": id, "version": v, "entity_type": "note", "name": "n", "content": {},
            "source_type": "manual", "user_id": "tester", "parent_versions": [],
        },
        "relationships": if relate { vec![rel] } else { vec![] },
    });
    let (mut device_id, mut user_id) = (PUSHER.to_owned(), "tester".to_owned());
    edit(&mut change, &mut device_id, &mut user_id);
    let stored = expect == Expect::Stored;
    let entity = &change["entity"];
    let ids = match entity["id"].as_str() {
        Some(id) if stored => vec![id.to_owned()],
        _ => vec![],
    };
    // A relationship is stored when both its endpoints are the stored version.
    let relationship_ids = match change["relationships"].get(0) {
        Some(r)
            if stored
                && r["from_entity_id"] == entity["id"]
                && r["from_entity_version"] == entity["version"]
                && r["to_entity_id"] == entity["id"]
                && r["to_entity_version"] == entity["version"] =>
        {
            vec![r["id"].as_str().expect("relationship id").to_owned()]
        }
        _ => vec![],
    };
    Case {
        label,
        device_id,
        user_id,
        changes: vec![change.to_string()],
        expect,
        ids,
        relationship_ids,
    }
}

/// Sets the string at a JSON pointer of a change.
fn set(change: &mut Value, pointer: &str, s: String) {
    *change.pointer_mut(pointer).expect("field") = Value::String(s);
}

/// 4 KB of letters that do not compress.
/// The length limit of the field at a detail item's `loc` (PROTOCOL §5.10).
fn limit_at(loc: &Value) -> usize {
    let last = loc.as_array().and_then(|l| l.last());
    if last == Some(&json!("name")) {
        4096
    } else {
        CAP
    }
}

fn big() -> String {
    incompressible(4 << 10)
}

/// Every string the server stores outside content, past its limit (refused
/// alike at the field) and at it (accepted alike, read back as sent).
fn key_cases() -> Vec<Case> {
    let too_long = |loc| Expect::Refused("string_too_long", loc);
    let cases: Vec<(&'static str, bool, Box<Edit>, Expect)> = vec![
        // Past the cap.
        (
            "a 4 KB id that does not compress",
            false,
            Box::new(|c, _, _| set(c, "/entity/id", big())),
            too_long(ID),
        ),
        (
            "a 4 KB version",
            false,
            Box::new(|c, _, _| set(c, "/entity/version", long_version(90, 4 << 10))),
            too_long(VERSION),
        ),
        (
            "a 4 KB entity type",
            false,
            Box::new(|c, _, _| set(c, "/entity/entity_type", big())),
            too_long(ENTITY_TYPE),
        ),
        (
            "a 4 KB device id",
            false,
            Box::new(|_, d, _| *d = big()),
            too_long(DEVICE_ID),
        ),
        (
            "a 4 KB relationship id",
            true,
            Box::new(|c, _, _| set(c, "/relationships/0/id", big())),
            too_long(REL_ID),
        ),
        (
            "a 4 KB relationship source id",
            true,
            Box::new(|c, _, _| set(c, "/relationships/0/from_entity_id", big())),
            too_long(REL_FROM),
        ),
        (
            "a 4 KB relationship target id",
            true,
            Box::new(|c, _, _| set(c, "/relationships/0/to_entity_id", big())),
            too_long(REL_TO),
        ),
        (
            "an id one byte past the cap",
            false,
            Box::new(|c, _, _| set(c, "/entity/id", incompressible(CAP + 1))),
            too_long(ID),
        ),
        (
            "an id of 342 three-byte characters (1,026 bytes)",
            false,
            Box::new(|c, _, _| set(c, "/entity/id", "\u{20ac}".repeat(342))),
            too_long(ID),
        ),
        // At the cap.
        (
            "a 1,024-byte id",
            true,
            Box::new(|c, _, _| {
                let id = incompressible(CAP);
                set(c, "/entity/id", id.clone());
                set(c, "/relationships/0/from_entity_id", id.clone());
                set(c, "/relationships/0/to_entity_id", id);
            }),
            Expect::Stored,
        ),
        (
            "a 1,024-byte id with a 1,024-byte version (the widest key)",
            true,
            Box::new(|c, _, _| {
                let (id, v) = (incompressible(CAP), long_version(91, CAP));
                set(c, "/entity/id", id.clone());
                set(c, "/entity/version", v.clone());
                for end in ["from", "to"] {
                    set(c, &format!("/relationships/0/{end}_entity_id"), id.clone());
                    set(
                        c,
                        &format!("/relationships/0/{end}_entity_version"),
                        v.clone(),
                    );
                }
            }),
            Expect::Stored,
        ),
        (
            "a 1,024-byte relationship id",
            true,
            Box::new(|c, _, _| set(c, "/relationships/0/id", incompressible(CAP))),
            Expect::Stored,
        ),
        (
            "a 1,024-byte entity type and device id",
            false,
            Box::new(|c, d, _| {
                set(c, "/entity/entity_type", incompressible(CAP));
                *d = incompressible(CAP);
            }),
            Expect::Stored,
        ),
        // The labels and user ids beside the keys, and the versions they
        // name, have the same limit.
        (
            "a 1,024-byte source type, entity user id and request user id",
            false,
            Box::new(|c, _, u| {
                set(c, "/entity/source_type", incompressible(CAP));
                set(c, "/entity/user_id", incompressible(CAP));
                *u = incompressible(CAP);
            }),
            Expect::Stored,
        ),
        (
            "a 4 KB source type",
            false,
            Box::new(|c, _, _| set(c, "/entity/source_type", big())),
            too_long(SOURCE_TYPE),
        ),
        (
            "a 4 KB request user id",
            false,
            Box::new(|_, _, u| *u = big()),
            too_long(USER),
        ),
        (
            "a 1,024-byte parent version",
            false,
            Box::new(|c, _, _| {
                c["entity"]["parent_versions"] = json!([long_version(92, CAP)]);
            }),
            Expect::Stored,
        ),
        (
            "a 4 KB parent version",
            false,
            Box::new(|c, _, _| {
                c["entity"]["parent_versions"] = json!([long_version(92, 4 << 10)]);
            }),
            too_long(PARENT),
        ),
        (
            "a 1,024-byte relationship type and relationship user id",
            true,
            Box::new(|c, _, _| {
                set(c, "/relationships/0/relationship_type", incompressible(CAP));
                set(c, "/relationships/0/user_id", incompressible(CAP));
            }),
            Expect::Stored,
        ),
        (
            "a 4 KB relationship type",
            true,
            Box::new(|c, _, _| set(c, "/relationships/0/relationship_type", big())),
            too_long(REL_TYPE),
        ),
        (
            "4 KB relationship endpoint versions",
            true,
            Box::new(|c, _, _| {
                set(
                    c,
                    "/relationships/0/from_entity_version",
                    long_version(93, 4 << 10),
                );
                set(
                    c,
                    "/relationships/0/to_entity_version",
                    long_version(94, 4 << 10),
                );
            }),
            too_long(REL_FROM_VERSION),
        ),
    ];
    cases
        .into_iter()
        .enumerate()
        .map(|(n, (label, relate, edit, expect))| key_case(n + 1, label, relate, &*edit, expect))
        .collect()
}

/// What one server answered for one case.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    /// The whole body of an error; the per-change results of a success.
    body: Value,
}

async fn send(server: &TestServer, token: &str, body: Vec<u8>) -> Answer {
    let res = server
        .http
        .post(server.url("/api/v1/sync/"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let (status, body) = read(res).await;
    let body = if status == 200 {
        json!({
            "applied": body["applied"],
            "applied_relationships": body["applied_relationships"],
            "conflicts": body["conflicts"],
        })
    } else {
        body
    };
    Answer { status, body }
}

/// Every latest entity and every relationship of a server, by id, as the raw
/// JSON text it sent.
#[derive(Debug, Default)]
struct Pulled {
    entities: BTreeMap<String, String>,
    relationships: BTreeMap<String, String>,
}

async fn pull_all(server: &TestServer, token: &str) -> Pulled {
    let mut out = Pulled::default();
    let mut cursor = Value::Null;
    for _ in 0..1_000 {
        let body = json!({
            "protocol_version": "inbetweenies-v2", "device_id": "parity-reader",
            "user_id": "tester", "sync_type": "delta", "changes": [], "cursor": cursor,
            "capabilities": ["relationship_rows"],
        });
        let res = server
            .http
            .post(server.url("/api/v1/sync/"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("pull");
        assert_eq!(res.status().as_u16(), 200, "pull");
        let text = res.text().await.expect("pull body");
        let page: Value = serde_json::from_str(&text).expect("pull JSON");
        for c in page["changes"].as_array().expect("changes") {
            let e = &c["entity"];
            if let Some(id) = e["id"].as_str() {
                out.entities.insert(id.to_owned(), e.to_string());
            }
            for r in c["relationships"].as_array().into_iter().flatten() {
                if let Some(id) = r["id"].as_str() {
                    // Without the times the server set (each its own clock).
                    let mut r = r.clone();
                    if let Some(obj) = r.as_object_mut() {
                        obj.remove("created_at");
                        obj.remove("updated_at");
                    }
                    out.relationships.insert(id.to_owned(), r.to_string());
                }
            }
        }
        cursor = page["cursor"].clone();
        if cursor.is_null() {
            return out;
        }
    }
    panic!("the pull did not end in 1,000 pages");
}

fn loc_of(parts: &[LocPart]) -> Value {
    Value::Array(
        parts
            .iter()
            .map(|p| match p {
                K(k) => json!(k),
                I(i) => json!(i),
            })
            .collect(),
    )
}

/// A value as written out (compared so: the same characters in the same order).
fn written(v: &Value) -> String {
    v.to_string()
}

/// How many syncs a server has recorded for a device, read from its store (the status
/// endpoint refuses a device id past the cap, as every other entry point does).
async fn sync_count(server: &TestServer, _token: &str, device_id: &str) -> u64 {
    server
        .handle
        .store()
        .client_status(device_id)
        .await
        .expect("store read")
        .map_or(0, |s| s.sync_count)
}

/// Strings (ids) shortened for a failure message.
fn short<'a>(ids: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    ids.into_iter()
        .map(|id| match id.char_indices().nth(24) {
            Some((i, _)) => format!("{}…", &id[..i]),
            None => id.clone(),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_accept_or_refuse_awkward_inputs_alike_and_read_back_what_they_store() {
    run_table(cases(), |c| c).await;
}

/// The servers accept unknown types (as by default), so that a type string
/// reaches the store and only the length cap can refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_refuse_key_strings_past_the_cap_alike_and_store_them_at_the_cap() {
    run_table(key_cases(), |c| c.with_strict(false)).await;
}

/// Sends every case to a SQLite and a PostgreSQL server configured alike,
/// checks both answer it alike and as the case expects, then pulls both and
/// checks they stored exactly what they accepted, byte for byte as sent.
async fn run_table(cases: Vec<Case>, tweak: impl Fn(ServerConfig) -> ServerConfig) {
    let Some(sqlite) = TestServer::start_with(Backend::Sqlite, &tweak).await else {
        return;
    };
    let Some(postgres) = TestServer::start_with(Backend::Postgres, &tweak).await else {
        return;
    };
    let servers = [&sqlite, &postgres];
    let mut tokens = Vec::new();
    for s in servers {
        tokens.push(s.login().await);
    }

    let mut sent: BTreeMap<String, Value> = BTreeMap::new();
    let mut sent_relationships: BTreeMap<String, Value> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let body = raw_body(&case.device_id, &case.user_id, &case.changes);
        let mut answers = Vec::new();
        for (s, token) in servers.iter().zip(&tokens) {
            answers.push(send(s, token, body.clone()).await);
        }
        let (a, b) = (&answers[0], &answers[1]);
        if a != b {
            failures.push(format!(
                "{}: SQLite answered {} {}, PostgreSQL {} {}",
                case.label,
                a.status,
                truncate(&a.body),
                b.status,
                truncate(&b.body)
            ));
            continue;
        }
        match case.expect {
            Expect::Stored => {
                if a.status != 200 {
                    failures.push(format!(
                        "{}: both answered {} {}, expected 200",
                        case.label,
                        a.status,
                        truncate(&a.body)
                    ));
                    continue;
                }
                let strings = |key: &str| -> Vec<String> {
                    a.body[key]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default()
                };
                assert_eq!(strings("applied"), case.ids, "{}: applied", case.label);
                assert_eq!(
                    strings("applied_relationships"),
                    case.relationship_ids,
                    "{}: applied relationships",
                    case.label
                );
                let change: Value = serde_json::from_str(&case.changes[0]).expect("case JSON");
                sent.insert(case.ids[0].clone(), change["entity"].clone());
                for r in change["relationships"].as_array().into_iter().flatten() {
                    if let Some(id) = case.relationship_ids.iter().find(|id| r["id"] == **id) {
                        sent_relationships.insert(id.clone(), r.clone());
                    }
                }
            }
            Expect::Refused(kind, loc) => {
                let item = &a.body["detail"][0];
                let ok = a.status == 422
                    && item["type"] == json!(kind)
                    && (loc.is_empty() || item["loc"] == loc_of(loc))
                    && (kind != "string_too_long"
                        || item["ctx"]["max_length"] == limit_at(&item["loc"]));
                if !ok {
                    failures.push(format!(
                        "{}: both answered {} {}, expected 422 {kind} at {}",
                        case.label,
                        a.status,
                        truncate(&a.body),
                        loc_of(loc)
                    ));
                }
            }
        }
    }

    // A device a server accepted a push from has its sync recorded, alike.
    for case in cases.iter().filter(|c| c.device_id != PUSHER) {
        let expected = u64::from(case.expect == Expect::Stored);
        for (backend, s, token) in [
            ("SQLite", &sqlite, &tokens[0]),
            ("PostgreSQL", &postgres, &tokens[1]),
        ] {
            let count = sync_count(s, token, &case.device_id).await;
            if count != expected {
                failures.push(format!(
                    "{}: {backend} recorded {count} syncs of the device, expected {expected}",
                    case.label
                ));
            }
        }
    }

    // What was accepted reads back identically from both, exactly as sent;
    // nothing refused was stored.
    let pulled_sqlite = pull_all(&sqlite, &tokens[0]).await;
    let pulled_postgres = pull_all(&postgres, &tokens[1]).await;
    let stored: Vec<&String> = sent.keys().collect();
    let stored_relationships: Vec<&String> = sent_relationships.keys().collect();
    for (backend, pulled) in [("SQLite", &pulled_sqlite), ("PostgreSQL", &pulled_postgres)] {
        let ids: Vec<&String> = pulled.entities.keys().collect();
        if ids != stored {
            failures.push(format!(
                "{backend} stored {:?}, not exactly the accepted {:?}",
                short(ids),
                short(stored.iter().copied())
            ));
        }
        let ids: Vec<&String> = pulled.relationships.keys().collect();
        if ids != stored_relationships {
            failures.push(format!(
                "{backend} stored relationships {:?}, not exactly the accepted {:?}",
                short(ids),
                short(stored_relationships.iter().copied())
            ));
        }
    }
    let fields = [
        "id",
        "version",
        "name",
        "content",
        "entity_type",
        "source_type",
        "user_id",
        "parent_versions",
    ];
    let relationship_fields = [
        "id",
        "from_entity_id",
        "from_entity_version",
        "to_entity_id",
        "to_entity_version",
        "relationship_type",
        "properties",
        "user_id",
    ];
    for (sent, from_sqlite, from_postgres, fields) in [
        (
            &sent,
            &pulled_sqlite.entities,
            &pulled_postgres.entities,
            &fields,
        ),
        (
            &sent_relationships,
            &pulled_sqlite.relationships,
            &pulled_postgres.relationships,
            &relationship_fields,
        ),
    ] {
        for (id, item) in sent {
            let (Some(a), Some(b)) = (from_sqlite.get(id), from_postgres.get(id)) else {
                continue;
            };
            if a != b {
                failures.push(format!(
                    "{:?}: the backends read back different bytes",
                    short([id])
                ));
            }
            let back: Value = serde_json::from_str(a).expect("read back JSON");
            for field in fields.iter() {
                if written(&back[*field]) != written(&item[*field]) {
                    failures.push(format!(
                        "{:?}: {field} did not read back as sent",
                        short([id])
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A body cut short for a failure message.
fn truncate(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
