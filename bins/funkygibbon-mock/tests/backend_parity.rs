//! Both backends accept or refuse the same awkward inputs with the same status and error body, and read back what they accept byte for byte.
//!
//! One server on SQLite and one on PostgreSQL get the very same request
//! bytes for each case of a table: U+0000 where it would be stored, lone
//! surrogates, a 1 MB name, deep content, characters outside the BMP, a
//! 64 KiB string, right-to-left and combining text. Each case states what
//! both must answer; whatever is accepted is then pulled from both and must
//! come back exactly as it was sent.

mod support;

use std::collections::BTreeMap;

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

/// A sync request body around raw change texts.
fn raw_body(changes: &[String]) -> Vec<u8> {
    format!(
        r#"{{"protocol_version":"inbetweenies-v2","device_id":"parity-pusher","user_id":"tester","sync_type":"delta","changes":[{}],"vector_clock":{{"clocks":{{}}}}}}"#,
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

/// One awkward input: a label, the changes (raw JSON texts) and what both must answer.
struct Case {
    label: &'static str,
    changes: Vec<String>,
    expect: Expect,
    /// Ids the case stores when accepted.
    ids: Vec<String>,
}

fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let mut n = 0;
    let mut one = |label: &'static str, name: String, content: String, expect: Expect| {
        n += 1;
        let id = format!("parity-{n}");
        Case {
            label,
            changes: vec![raw_change(&id, &version(n), &name, &content)],
            expect,
            ids: vec![id],
        }
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
        Expect::Stored,
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
    out.push(Case {
        label: "U+0000 in an id",
        changes: vec![raw_change("bad\u{0}id", &version(n), "\"n\"", "{}")],
        expect: refused_nul(ID),
        ids: vec![],
    });
    n += 1;
    out.push(Case {
        label: "U+0000 in a version",
        changes: vec![raw_change(
            &format!("parity-{n}"),
            &format!("{}\u{0}x", version(n)),
            "\"n\"",
            "{}",
        )],
        expect: refused_nul(VERSION),
        ids: vec![],
    });
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
    out.push(Case {
        label: "U+0000 in the fourth change of five",
        changes,
        expect: refused_nul(FOURTH_NAME),
        ids: vec![],
    });
    out
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
        json!({"applied": body["applied"], "conflicts": body["conflicts"]})
    } else {
        body
    };
    Answer { status, body }
}

/// Every latest entity of a server, by id, as the raw JSON text it sent.
async fn pull_all(server: &TestServer, token: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cursor = Value::Null;
    for _ in 0..1_000 {
        let body = json!({
            "protocol_version": "inbetweenies-v2", "device_id": "parity-reader",
            "user_id": "tester", "sync_type": "delta", "changes": [], "cursor": cursor,
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
                out.insert(id.to_owned(), e.to_string());
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_accept_or_refuse_awkward_inputs_alike_and_read_back_what_they_store() {
    let Some(sqlite) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let Some(postgres) = TestServer::start(Backend::Postgres).await else {
        return;
    };
    let servers = [&sqlite, &postgres];
    let mut tokens = Vec::new();
    for s in servers {
        tokens.push(s.login().await);
    }

    let cases = cases();
    let mut sent: BTreeMap<String, Value> = BTreeMap::new();
    let mut failures = Vec::new();
    for case in &cases {
        let body = raw_body(&case.changes);
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
                let applied: Vec<&str> = a.body["applied"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                assert_eq!(applied, case.ids, "{}: applied", case.label);
                let change: Value = serde_json::from_str(&case.changes[0]).expect("case JSON");
                sent.insert(case.ids[0].clone(), change["entity"].clone());
            }
            Expect::Refused(kind, loc) => {
                let item = &a.body["detail"][0];
                let ok = a.status == 422
                    && item["type"] == json!(kind)
                    && (loc.is_empty() || item["loc"] == loc_of(loc));
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

    // What was accepted reads back identically from both, exactly as sent;
    // nothing refused was stored.
    let pulled_sqlite = pull_all(&sqlite, &tokens[0]).await;
    let pulled_postgres = pull_all(&postgres, &tokens[1]).await;
    let stored: Vec<&String> = sent.keys().collect();
    for (backend, pulled) in [("SQLite", &pulled_sqlite), ("PostgreSQL", &pulled_postgres)] {
        let ids: Vec<&String> = pulled.keys().collect();
        if ids != stored {
            failures.push(format!(
                "{backend} stored {ids:?}, not exactly the accepted {stored:?}"
            ));
        }
    }
    for (id, entity) in &sent {
        let (Some(from_sqlite), Some(from_postgres)) =
            (pulled_sqlite.get(id), pulled_postgres.get(id))
        else {
            continue;
        };
        if from_sqlite != from_postgres {
            failures.push(format!("{id}: the backends read back different bytes"));
        }
        let back: Value = serde_json::from_str(from_sqlite).expect("entity JSON");
        for field in ["id", "version", "name", "content", "entity_type", "user_id"] {
            // Compared as written out: the same characters in the same order.
            if back[field].to_string() != entity[field].to_string() {
                failures.push(format!("{id}: {field} did not read back as sent"));
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
