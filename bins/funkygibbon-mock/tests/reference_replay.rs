//! Replays the 82 exchanges captured from the Python reference server against a fresh server of ours.
//!
//! The vectors (`tests/vectors/reference/`) run in their order against one
//! fresh store, with the reference's request bodies and headers. Only what
//! cannot be the same is rewritten, as the vectors' README lists:
//!
//! - bearer tokens: the reference's admin/guest tokens become ours (login,
//!   refresh and guest verify answers are paired as they come); the
//!   wrong-secret vector is signed with another secret and the expired-token
//!   vector is minted already expired with our secret;
//! - `filters.since` values that are the reference's own watermarks become
//!   ours (a since inside the capture window maps to our `server_time` of the
//!   last exchange at or before it), and cursors become ours;
//! - in answers, `server_time`, `duration_ms`, JWTs, guest tokens, expiry
//!   times, the QR image and the port are normalised. Ids, versions and
//!   `state_digest` are compared exactly: the store holds the same rows as the
//!   reference did, so the digest is the same.
//!
//! The requests declare no capability (PROTOCOL §5.12), as the reference's
//! clients send them, so sync answers are built as the reference builds them
//! (PROTOCOL §12.4): entity rows only, pages of 500 entities, the reference's
//! keys in the reference's order. Our error bodies carry an `error` object the
//! reference does not send: it is removed before comparing, and its `code` is
//! asserted. Where the reference behaved wrongly, the vector is named below and
//! our better answer is asserted instead; every vector ends in exactly one
//! verdict and the verdicts are counted. The pushes the reference refused for
//! values outside its vocabulary (37, 39–41) are stored by ours, so they go to
//! a second fresh server, keeping this one's rows the reference's.

mod support;

use std::collections::{BTreeMap, HashMap};

use inbetweenies_proto::{EntityId, Timestamp};
use serde_json::{json, Value};
use support::{Backend, TestServer};

const VECTOR_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/vectors/reference");

struct Vector {
    num: usize,
    name: String,
    meta: Value,
    request: Option<Value>,
    response: Value,
}

fn load_vectors() -> Vec<Vector> {
    let mut names: Vec<String> = std::fs::read_dir(VECTOR_DIR)
        .expect("vector directory")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|f| f.strip_suffix(".meta.json").map(str::to_owned))
        .collect();
    names.sort();
    let read = |path: String| -> Option<Value> {
        std::fs::read_to_string(&path)
            .ok()
            .map(|s| serde_json::from_str(&s).unwrap_or_else(|e| panic!("{path}: {e}")))
    };
    names
        .into_iter()
        .map(|name| Vector {
            num: name[..2].parse().expect("vector number"),
            meta: read(format!("{VECTOR_DIR}/{name}.meta.json")).expect("meta"),
            request: read(format!("{VECTOR_DIR}/{name}.request.json")),
            response: read(format!("{VECTOR_DIR}/{name}.response.json")).expect("response"),
            name,
        })
        .collect()
}

/// How one vector ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Same status and equal (normalised) body.
    Same,
    /// The reference behaved wrongly; our answer differs on purpose (why).
    Better(&'static str),
}

/// What the replay carries from one exchange to the next.
#[derive(Default)]
struct Replay {
    /// Reference token → our token.
    tokens: HashMap<String, String>,
    /// (reference server_time, our server_time), in order.
    times: Vec<(Timestamp, Timestamp)>,
    /// Reference cursor → our cursor.
    cursors: HashMap<String, String>,
    /// Reference guest grant token → ours.
    guest_grants: HashMap<String, String>,
    /// Our admin token (from vector 01).
    admin: Option<String>,
    /// The last `server_time` any reference answer carries: the end of the capture.
    capture_end: Option<Timestamp>,
}

impl Replay {
    fn map_since(&self, since: &str) -> String {
        let Ok(t) = Timestamp::parse(since) else {
            return since.to_owned();
        };
        let (Some(first), Some(end)) = (self.times.first(), self.capture_end) else {
            return since.to_owned();
        };
        if t < first.0 || t > end {
            return since.to_owned();
        }
        self.times
            .iter()
            .rev()
            .find(|(r, _)| *r <= t)
            .map_or_else(|| since.to_owned(), |(_, o)| o.to_string())
    }

    fn record_time(&mut self, reference: &Value, ours: &Value) {
        if let (Some(r), Some(o)) = (
            reference["server_time"].as_str(),
            ours["server_time"].as_str(),
        ) {
            let r = Timestamp::parse(r).expect("reference server_time");
            let o = Timestamp::parse(o).expect("our server_time");
            self.times.push((r, o));
        }
    }
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

fn b64_json(part: &str) -> Value {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .expect("jwt part");
    serde_json::from_slice(&bytes).expect("jwt json")
}

async fn send(
    server: &TestServer,
    replay: &Replay,
    v: &Vector,
    auth_override: Option<String>,
) -> Answer {
    let method = v.meta["method"].as_str().expect("method");
    let path = v.meta["path"].as_str().expect("path");
    let mut url = server.url(path);
    if let Some(q) = v.meta["query"].as_object().filter(|q| !q.is_empty()) {
        let qs: Vec<String> = q
            .iter()
            .map(|(k, val)| format!("{k}={}", val.as_str().unwrap_or_default()))
            .collect();
        url = format!("{url}?{}", qs.join("&"));
    }
    let mut req = match method {
        "GET" => server.http.get(&url),
        "POST" => server.http.post(&url),
        other => panic!("{}: method {other}", v.name),
    };
    let headers = v.meta["request_headers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, val) in &headers {
        let val = val.as_str().unwrap_or_default();
        if k.eq_ignore_ascii_case("authorization") {
            let (scheme, token) = val.split_once(' ').unwrap_or((val, ""));
            let ours = match &auth_override {
                Some(t) => t.clone(),
                None => replay
                    .tokens
                    .get(token)
                    .cloned()
                    .unwrap_or_else(|| token.to_owned()),
            };
            req = req.header("Authorization", format!("{scheme} {ours}"));
        } else {
            req = req.header(k.as_str(), val);
        }
    }
    if !v.meta["request_body_absent"].as_bool().unwrap_or(false) {
        let body = v.request.clone().expect("request body");
        let bytes = if v.meta["request_body_is_raw"].as_bool().unwrap_or(false) {
            body["_raw_body"]
                .as_str()
                .expect("raw body")
                .as_bytes()
                .to_vec()
        } else {
            let mut body = body;
            if let Some(since) = body.pointer("/filters/since").and_then(Value::as_str) {
                let mapped = replay.map_since(since);
                body["filters"]["since"] = Value::String(mapped);
            }
            if let Some(c) = body.get("cursor").and_then(Value::as_str) {
                if let Some(ours) = replay.cursors.get(c) {
                    body["cursor"] = Value::String(ours.clone());
                }
            }
            if let Some(t) = body.get("token").and_then(Value::as_str) {
                if let Some(ours) = replay.guest_grants.get(t) {
                    body["token"] = Value::String(ours.clone());
                }
            }
            serde_json::to_vec(&body).expect("serialise body")
        };
        req = req.body(bytes);
    }
    let res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", v.name));
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: our answer is not JSON ({e}): {text:?}", v.name));
    Answer {
        status,
        headers,
        body,
    }
}

/// Replaces the values that differ from run to run.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                match k.as_str() {
                    "server_time" => *val = json!("<server_time>"),
                    "duration_ms" => *val = json!("<duration_ms>"),
                    "access_token" => *val = json!("<jwt>"),
                    _ => normalise(val),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// Takes our `error` object off an error body, checking its code.
fn strip_error(v: &Vector, body: &mut Value, code: &str) {
    let err = body
        .as_object_mut()
        .and_then(|m| m.remove("error"))
        .unwrap_or_else(|| panic!("{}: error body without `error`: {body}", v.name));
    assert_eq!(err["code"], code, "{}: error code in {err}", v.name);
    assert!(err["message"].is_string(), "{}: error message", v.name);
}

/// A sync answer has the reference's keys in the reference's order (no `capabilities`:
/// the request declared none), and no relationship row or attached relationship.
fn assert_reference_shape(v: &Vector, ours: &Value, reference: &Value) {
    let keys = |b: &Value| -> Vec<String> {
        b.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(ours), keys(reference), "{}: keys in order", v.name);
    for c in ours["changes"].as_array().expect("changes") {
        assert!(
            c["entity"].is_object(),
            "{}: a relationship row: {c}",
            v.name
        );
        assert_eq!(c["relationships"], json!([]), "{}: {c}", v.name);
    }
}

/// Our `reason` field on conflicts is an addition; the rest must match.
fn strip_conflict_reasons(body: &mut Value) {
    if let Some(cs) = body.get_mut("conflicts").and_then(Value::as_array_mut) {
        for c in cs {
            if let Some(m) = c.as_object_mut() {
                let reason = m.remove("reason");
                assert!(
                    reason.as_ref().is_none_or(Value::is_string),
                    "conflict reason"
                );
            }
        }
    }
}

fn assert_same_json(v: &Vector, ours: &Value, reference: &Value) {
    let mut o = ours.clone();
    let mut r = reference.clone();
    normalise(&mut o);
    normalise(&mut r);
    assert_eq!(
        o,
        r,
        "{}: our answer differs from the reference's\nours:      {}\nreference: {}",
        v.name,
        serde_json::to_string(&o).unwrap_or_default(),
        serde_json::to_string(&r).unwrap_or_default()
    );
}

fn expected_code(status: u16) -> &'static str {
    match status {
        400 | 422 => "INVALID_REQUEST",
        401 => "UNAUTHORIZED",
        403 => "FORBIDDEN",
        404 => "NOT_FOUND",
        _ => "INTERNAL",
    }
}

/// The detail items compared on `type`, `loc` and `input` only: Python's
/// datetime and JSON parsers word `msg` and `ctx` in their own way.
fn assert_same_items_loosely(v: &Vector, ours: &Value, reference: &Value, check_msg: bool) {
    let (o, r) = (
        ours["detail"].as_array().expect("our detail"),
        reference["detail"].as_array().expect("reference detail"),
    );
    assert_eq!(
        o.len(),
        r.len(),
        "{}: detail items {ours} vs {reference}",
        v.name
    );
    for (a, b) in o.iter().zip(r) {
        for key in ["type", "loc", "input"] {
            assert_eq!(a[key], b[key], "{}: detail {key}: {a} vs {b}", v.name);
        }
        if check_msg {
            assert_eq!(a["msg"], b["msg"], "{}: detail msg", v.name);
        }
        assert!(a["ctx"].is_object(), "{}: detail ctx", v.name);
    }
}

/// The seq of an entity's latest row.
async fn latest_seq(server: &TestServer, id: &str) -> u64 {
    let history = server
        .handle
        .store()
        .history(&EntityId::new(id))
        .await
        .expect("history");
    history
        .iter()
        .find(|r| r.latest)
        .map(|r| r.seq)
        .unwrap_or_else(|| panic!("no latest row for {id}"))
}

fn entity_ids(body: &Value) -> Vec<String> {
    body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| c["entity"]["id"].as_str().expect("entity id").to_owned())
        .collect()
}

async fn replay(backend: Backend) {
    // The password the reference's login vectors send.
    let Some(server) =
        TestServer::start_with(backend, |c| c.with_admin_password("RefAdmin#2024!")).await
    else {
        return;
    };
    // Values outside the vocabulary are stored (PROTOCOL §4.2), where the reference
    // wrote nothing: those pushes go to a second server, so this one's state stays the
    // reference's for the vectors after them. Same password and secret: tokens work on both.
    let Some(side) =
        TestServer::start_with(backend, |c| c.with_admin_password("RefAdmin#2024!")).await
    else {
        return;
    };
    let vectors = load_vectors();
    assert_eq!(vectors.len(), 82, "the reference set has 82 exchanges");
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(v.num, i, "vectors are numbered 00..81 without gaps");
    }
    let mut replay = Replay {
        capture_end: vectors
            .iter()
            .filter_map(|v| v.response["server_time"].as_str())
            .filter_map(|t| Timestamp::parse(t).ok())
            .max(),
        ..Replay::default()
    };
    let mut verdicts: BTreeMap<usize, Verdict> = BTreeMap::new();
    let mut ours62: Option<Value> = None;

    for v in &vectors {
        let ref_status = v.meta["status"].as_u64().expect("status") as u16;
        let auth_override = match v.num {
            // Signed with a secret that is not the server's.
            66 => {
                let claims = b64_json(
                    v.meta["request_headers"]["Authorization"]
                        .as_str()
                        .and_then(|a| a.split('.').nth(1))
                        .expect("jwt payload"),
                );
                let now = Timestamp::now().unix_micros() / 1_000_000;
                let mut claims = claims;
                claims["exp"] = json!(now + 3600);
                claims["iat"] = json!(now);
                let key = jsonwebtoken::EncodingKey::from_secret(b"some-other-secret");
                Some(
                    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
                        .expect("sign"),
                )
            }
            // Expired an hour ago, signed with our secret.
            67 => {
                let now = Timestamp::now().unix_micros() / 1_000_000;
                Some(server.handle.sign(&funkygibbon_mock::Claims {
                    sub: "admin".into(),
                    role: "admin".into(),
                    permissions: vec!["read".into()],
                    exp: now - 3600,
                    iat: now - 7200,
                }))
            }
            _ => None,
        };
        let mut ans = match v.num {
            37 | 39 | 40 | 41 => send(&side, &replay, v, auth_override).await,
            _ => send(&server, &replay, v, auth_override).await,
        };
        let reference = &v.response;
        let verdict = match v.num {
            // 500 in the reference (unknown entity type in a filter, an unhandled
            // ValueError): ours matches it verbatim, and no entity has that type.
            16 => {
                assert_eq!(ans.status, 200, "{}: {}", v.name, ans.body);
                assert_eq!(ans.body["changes"], json!([]), "{}", v.name);
                assert_eq!(ans.body["cursor"], Value::Null);
                Verdict::Better("unknown filter value matched verbatim (200) instead of a 500")
            }
            // 500 in the reference (unknown enum value): ours stores it and serves it
            // back unchanged (PROTOCOL §4.2).
            39..=41 => {
                assert_eq!(ans.status, 200, "{}: {}", v.name, ans.body);
                let sent = &v.request.as_ref().expect("request")["changes"][0]["entity"];
                let id = sent["id"].as_str().expect("id");
                assert_eq!(ans.body["applied"], json!([id]), "{}", v.name);
                let stored = side
                    .handle
                    .store()
                    .entity(&EntityId::new(id))
                    .await
                    .expect("read")
                    .expect("stored");
                assert_eq!(
                    stored.entity_type.as_str(),
                    sent["entity_type"],
                    "{}",
                    v.name
                );
                assert_eq!(
                    stored.source_type.as_str(),
                    sent["source_type"],
                    "{}",
                    v.name
                );
                assert_eq!(stored.version.as_str(), sent["version"], "{}", v.name);
                Verdict::Better("unknown enum value stored and served verbatim instead of a 500")
            }
            // 400 in the reference for the whole request (unknown relationship type):
            // ours accepts it; the edge's endpoints are not on this server, so only the
            // entity is acknowledged.
            37 => {
                assert_eq!(ans.status, 200, "{}: {}", v.name, ans.body);
                assert_eq!(ans.body["applied"], json!(["rollback-probe"]));
                assert_eq!(ans.body["applied_relationships"], json!([]));
                Verdict::Better("unknown relationship type accepted instead of a 400")
            }
            // A re-send of a superseded version: the reference reports a spurious conflict; ours acks it as-is (rule 6).
            22 => {
                assert_eq!(ans.status, 200);
                assert_reference_shape(v, &ans.body, reference);
                assert_eq!(
                    ans.body["conflicts"],
                    json!([]),
                    "{}: no spurious conflict",
                    v.name
                );
                assert_eq!(ans.body["sync_stats"]["conflicts_resolved"], 0);
                let mut r = reference.clone();
                r["conflicts"] = json!([]);
                r["sync_stats"]["conflicts_resolved"] = json!(0);
                assert_same_json(v, &ans.body, &r);
                Verdict::Better("re-sent older version acked without a spurious conflict (rule 6)")
            }
            // A losing edit: its acknowledgement carries the server's latest row of that id
            // before the page's rows (PROTOCOL §6.7), which the reference does not send.
            23 => {
                assert_eq!(ans.status, 200);
                assert_reference_shape(v, &ans.body, reference);
                strip_conflict_reasons(&mut ans.body);
                replay.record_time(reference, &ans.body);
                let conflict = ans.body["conflicts"][0].clone();
                let changes = ans.body["changes"].as_array_mut().expect("changes");
                let carried = changes.remove(0);
                assert_eq!(carried["entity"]["id"], conflict["entity_id"], "{}", v.name);
                assert_eq!(
                    carried["entity"]["version"], conflict["resolved_version"],
                    "{}: the winner, carried with the acknowledgement",
                    v.name
                );
                assert_same_json(v, &ans.body, reference);
                Verdict::Better(
                    "a losing edit's acknowledgement carries the winning row (PROTOCOL §6.7)",
                )
            }
            // Python's date parser words msg/ctx its own way: compare type, loc and input.
            53 | 55 => {
                assert_eq!(ans.status, 422);
                strip_error(v, &mut ans.body, "INVALID_REQUEST");
                assert_same_items_loosely(v, &ans.body, reference, false);
                Verdict::Same
            }
            // Python's JSON parser words ctx.error its own way: compare type, loc, input and msg.
            57 => {
                assert_eq!(ans.status, 422);
                strip_error(v, &mut ans.body, "INVALID_REQUEST");
                assert_same_items_loosely(v, &ans.body, reference, true);
                Verdict::Same
            }
            // No trailing slash: the reference answers 307; ours serves the route (the same full sync as vector 61).
            62 => {
                assert_eq!(ans.status, 200, "{}: {}", v.name, ans.body);
                let full61 = &vectors[61].response;
                assert_reference_shape(v, &ans.body, full61);
                ours62 = Some(ans.body.clone());
                Verdict::Better("no trailing slash: served (200) instead of a 307 redirect")
            }
            // The reference has no review queue; ours does, and an unknown id is 404 "Conflict not found".
            72 => {
                assert_eq!(ans.status, 404);
                strip_error(v, &mut ans.body, "NOT_FOUND");
                assert_eq!(ans.body, json!({"detail": "Conflict not found"}));
                Verdict::Better("real conflict queue: unknown id is 'Conflict not found'")
            }
            // A guest (read permission) pushing: the reference writes; ours answers 403. The same push
            // with the admin token then gets the reference's answer, so the stores stay in step.
            76 => {
                assert_eq!(ans.status, 403, "{}: {}", v.name, ans.body);
                strip_error(v, &mut ans.body, "FORBIDDEN");
                assert_eq!(ans.body, json!({"detail": "Write permission required"}));
                let admin = replay.admin.clone().expect("admin token from vector 01");
                let again = send(&server, &replay, v, Some(admin)).await;
                assert_eq!(
                    again.status, 200,
                    "{}: admin re-send: {}",
                    v.name, again.body
                );
                assert_same_json(v, &again.body, reference);
                replay.record_time(reference, &again.body);
                Verdict::Better(
                    "guest write forbidden (403); the admin re-send matches the reference",
                )
            }
            // The 520-entity push: the acknowledged ids the page does not reach (the last
            // 20) come first as the server's latest rows, so a client that confirms a push
            // by finding its ids in `changes` confirms all 520 (PROTOCOL §12.4); then the
            // reference's page of 500 rows and its cursor (ours: the last row's seq).
            78 => {
                assert_eq!(ans.status, 200);
                assert_reference_shape(v, &ans.body, reference);
                let ours_cursor = ans.body["cursor"].as_str().expect("cursor").to_owned();
                let ids = entity_ids(&ans.body);
                let ref_ids = entity_ids(reference);
                let pushed: Vec<&str> = v.request.as_ref().expect("request")["changes"]
                    .as_array()
                    .expect("changes")
                    .iter()
                    .map(|c| c["entity"]["id"].as_str().expect("id"))
                    .collect();
                assert_eq!(pushed.len(), 520);
                assert_eq!(ids.len(), 520, "{}: 20 carried rows and the page", v.name);
                assert_eq!(
                    ids[..20],
                    pushed[500..],
                    "{}: the ids past the page",
                    v.name
                );
                assert_eq!(ids[20..], ref_ids[..], "{}: the reference's page", v.name);
                let all: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
                assert!(
                    pushed.iter().all(|id| all.contains(id)),
                    "{}: every acknowledged id is in changes",
                    v.name
                );
                assert_eq!(
                    ours_cursor,
                    latest_seq(&server, ids.last().expect("rows"))
                        .await
                        .to_string(),
                    "{}: cursor = the page's last row's seq",
                    v.name
                );
                replay.cursors.insert(
                    reference["cursor"].as_str().expect("cursor").to_owned(),
                    ours_cursor,
                );
                replay.record_time(reference, &ans.body);
                let mut o = ans.body.clone();
                o["changes"] =
                    Value::Array(o["changes"].as_array().expect("changes")[20..].to_vec());
                o["cursor"] = reference["cursor"].clone();
                assert_same_json(v, &o, reference);
                Verdict::Better(
                    "every acknowledged id is in changes, past the page too (PROTOCOL §12.4)",
                )
            }
            // Full sync over 524 entities: the reference's 500 entities, in its order; the
            // cursor is the last row's seq (ours). With `full` the cursor is ignored (81).
            79 | 81 => {
                assert_eq!(ans.status, 200);
                assert_reference_shape(v, &ans.body, reference);
                let ours_cursor = ans.body["cursor"].as_str().expect("cursor").to_owned();
                let last = entity_ids(&ans.body).last().cloned().expect("rows");
                assert_eq!(
                    ours_cursor,
                    latest_seq(&server, &last).await.to_string(),
                    "{}: cursor = last row's seq",
                    v.name
                );
                if v.num == 79 {
                    replay.cursors.insert(
                        reference["cursor"].as_str().expect("cursor").to_owned(),
                        ours_cursor,
                    );
                }
                replay.record_time(reference, &ans.body);
                let mut o = ans.body.clone();
                o["cursor"] = reference["cursor"].clone();
                assert_same_json(v, &o, reference);
                Verdict::Same
            }
            _ => {
                assert_eq!(
                    ans.status, ref_status,
                    "{}: status; our body: {}",
                    v.name, ans.body
                );
                if ans.status >= 400 {
                    let code = if v.num == 67 {
                        "AUTH_EXPIRED"
                    } else {
                        expected_code(ans.status)
                    };
                    strip_error(v, &mut ans.body, code);
                }
                if reference.get("sync_stats").is_some() {
                    assert_reference_shape(v, &ans.body, reference);
                    strip_conflict_reasons(&mut ans.body);
                    replay.record_time(reference, &ans.body);
                }
                match v.num {
                    // Login, refresh and guest verify: pair the tokens.
                    1 | 73 | 75 => {
                        let r = reference["access_token"]
                            .as_str()
                            .expect("token")
                            .to_owned();
                        let o = ans.body["access_token"].as_str().expect("token").to_owned();
                        if v.num == 1 {
                            replay.admin = Some(o.clone());
                        }
                        replay.tokens.insert(r, o);
                        if v.num == 75 {
                            let left = ans.body["expires_in"].as_i64().expect("expires_in");
                            assert!((3590..=3600).contains(&left), "{}: {left}", v.name);
                            ans.body["expires_in"] = reference["expires_in"].clone();
                        }
                    }
                    5 => ans.body["expires_at"] = reference["expires_at"].clone(),
                    69 => {
                        // The reference's keys, plus ours.
                        let o = ans.body.as_object_mut().expect("object");
                        for extra in [
                            "last_seen",
                            "last_ack",
                            "sync_count",
                            "pending_conflicts",
                            "state_digest",
                        ] {
                            assert!(
                                o.remove(extra).is_some(),
                                "{}: our extra field {extra}",
                                v.name
                            );
                        }
                        replay.record_time(reference, &ans.body);
                    }
                    74 => {
                        let r = reference["qr_data"]["token"]
                            .as_str()
                            .expect("grant")
                            .to_owned();
                        let o = ans.body["qr_data"]["token"]
                            .as_str()
                            .expect("grant")
                            .to_owned();
                        assert_eq!(o.len(), r.len(), "guest tokens have the reference's length");
                        replay.guest_grants.insert(r, o);
                        assert!(
                            ans.body["qr_code"]
                                .as_str()
                                .is_some_and(|q| q.starts_with("iVBORw0KGgo")),
                            "a base64 PNG"
                        );
                        assert_eq!(
                            ans.body["qr_data"]["port"],
                            json!(server
                                .url("")
                                .rsplit(':')
                                .next()
                                .and_then(|p| p.parse::<u16>().ok()))
                        );
                        for k in ["qr_code", "expires_in"] {
                            ans.body[k] = reference[k].clone();
                        }
                        for k in ["token", "expires", "port"] {
                            ans.body["qr_data"][k] = reference["qr_data"][k].clone();
                        }
                    }
                    63..=68 => {
                        assert_eq!(
                            ans.headers.get("www-authenticate").map(|h| h.as_bytes()),
                            Some(&b"Bearer"[..]),
                            "{}",
                            v.name
                        );
                    }
                    _ => {}
                }
                assert_same_json(v, &ans.body, reference);
                Verdict::Same
            }
        };
        verdicts.insert(v.num, verdict);
    }

    // Vector 62 served the same full state as vector 61 (which the reference answered).
    let full61 = vectors.iter().find(|x| x.num == 61).expect("vector 61");
    assert_same_json(
        &vectors[62],
        ours62.as_ref().expect("62 answered"),
        &full61.response,
    );

    assert_eq!(verdicts.len(), 82, "every vector has a verdict");
    let better: Vec<usize> = verdicts
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Better(_)))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(
        better,
        vec![16, 22, 23, 37, 39, 40, 41, 62, 72, 76, 78],
        "vectors answered better on purpose"
    );
    let same = verdicts.values().filter(|v| **v == Verdict::Same).count();
    assert_eq!(same + better.len(), 82);
    assert_eq!(same, 71);
    server.shutdown().await.expect("clean shutdown");
    side.shutdown().await.expect("clean shutdown");
}

on_both_backends!(replay);
