//! Content keeps every number and string exactly as it was sent, through sync push, the five-step push and the graph API, on SQLite and PostgreSQL, and its checksum is the one over the sent text (PROTOCOL §4.6).
//!
//! The content below holds numbers that a 64-bit integer or a double cannot
//! hold or would rewrite: integers past ±2^63 and 2^64, `-0`, `-0.0`, `1.0`
//! beside `1`, `1e2`, `1E+2`, `1e400`, `1e-400` and a decimal with 50 digits.
//! Its keys are sent sorted with no white space, so its canonical form is the
//! sent text with each exponent spelled `e` and a sign (`1E2` → `1e+2`) and
//! the integer `-0` written `0`, and
//! its checksum the SHA-256 of that; the sync push carries it. Every answer
//! that returns the content must hold the canonical text byte for byte.

mod support;

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::{read, Backend, TestServer};

/// Awkward numbers and strings, keys sorted by their bytes, as sent.
const CONTENT: &str = concat!(
    r#"{"arr":[18446744073709551616,0.1,-0,1.0,1],"#,
    r#""big_neg":-9223372036854775809,"big_pos":9223372036854775808,"#,
    r#""digits":3.14159265358979323846264338327950288419716939937510,"#,
    r#""e_upper":1E2,"exp":1e2,"huge":123456789012345678901234567890123456789,"#,
    r#""inf_like":1e400,"neg_zero":-0,"neg_zero_f":-0.0,"one":1,"one_f":1.0,"#,
    r#""str":"é \"q\" \\ \u001f","tiny":1e-400,"u64_max":18446744073709551615}"#
);

/// [`CONTENT`] in canonical form (PROTOCOL §4.6): every exponent as `e` and a
/// sign, and the integer `-0` as `0` (`-0.0` stays).
fn canonical() -> String {
    CONTENT
        .replace(":1E2,", ":1e+2,")
        .replace(":1e2,", ":1e+2,")
        .replace(":1e400,", ":1e+400,")
        .replace(",-0,", ",0,")
        .replace(":-0,", ":0,")
}

fn checksum(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// POSTs a raw JSON text; returns status and the raw answer text.
async fn post_raw(s: &TestServer, token: &str, path: &str, body: String) -> (u16, String) {
    let res = s
        .http
        .post(s.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.text().await.expect("answer text"))
}

async fn get_raw(s: &TestServer, token: &str, path: &str) -> (u16, String) {
    let res = s
        .http
        .get(s.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = res.status().as_u16();
    (status, res.text().await.expect("answer text"))
}

fn entity_json(id: &str, version: &str, checksum: &str) -> String {
    format!(
        r#"{{"id":"{id}","version":"{version}","entity_type":"device","name":"n","content":{CONTENT},"source_type":"manual","user_id":"tester","parent_versions":[],"checksum":"{checksum}"}}"#
    )
}

fn sync_push(changes: &str) -> String {
    format!(
        r#"{{"protocol_version":"inbetweenies-v2","device_id":"numbers","user_id":"tester","sync_type":"full","changes":[{changes}],"vector_clock":{{"clocks":{{}}}}}}"#
    )
}

/// The count of `"content":` followed by the canonical content in an answer.
fn exact_copies(answer: &str) -> usize {
    answer
        .matches(&format!(r#""content":{}"#, canonical()))
        .count()
}

async fn content_round_trips_exactly(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let sum = checksum(&canonical());

    // Sync push with the checksum over the sent text: accepted.
    let v1 = inbetweenies_proto::Version::now("tester");
    let change = format!(
        r#"{{"change_type":"create","entity":{},"relationships":[]}}"#,
        entity_json("num-sync", v1.as_str(), &sum)
    );
    let (status, answer) = post_raw(&s, &token, "/api/v1/sync/", sync_push(&change)).await;
    assert_eq!(status, 200, "{answer}");
    let parsed: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(parsed["applied"][0], "num-sync", "{answer}");
    // A full sync answers with the whole state: the content as sent.
    assert_eq!(exact_copies(&answer), 1, "{answer}");

    // A pull on its own gives it back the same way.
    let (status, pulled) = post_raw(&s, &token, "/api/v1/sync/", sync_push("")).await;
    assert_eq!(status, 200, "{pulled}");
    assert_eq!(exact_copies(&pulled), 1, "{pulled}");

    // The five-step push and its delta.
    let v2 = inbetweenies_proto::Version::now("tester");
    let push = format!(
        r#"{{"type":"sync_push","client_id":"numbers","changes":[{{"entity_type":"device","entity_id":"num-flow","operation":"create","client_sync_id":"{}","data":{{"name":"n","content":{CONTENT}}}}}]}}"#,
        v2.as_str()
    );
    let (status, answer) = post_raw(&s, &token, "/api/v1/sync/push", push).await;
    assert_eq!(status, 200, "{answer}");
    let parsed: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(parsed["applied"][0]["status"], "applied", "{answer}");
    let (status, delta) = post_raw(
        &s,
        &token,
        "/api/v1/sync/request",
        r#"{"type":"sync_request","client_id":"numbers"}"#.to_owned(),
    )
    .await;
    assert_eq!(status, 200, "{delta}");
    assert_eq!(exact_copies(&delta), 2, "{delta}");

    // The graph API: create, read back, list.
    let create =
        format!(r#"{{"id":"num-graph","entity_type":"device","name":"n","content":{CONTENT}}}"#);
    let (status, answer) = post_raw(&s, &token, "/api/v1/graph/entities", create).await;
    assert!(status == 200 || status == 201, "{status} {answer}");
    assert_eq!(exact_copies(&answer), 1, "{answer}");
    let (status, answer) = get_raw(&s, &token, "/api/v1/graph/entities/num-graph").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(exact_copies(&answer), 1, "{answer}");

    // After all of it the store still serves every copy exactly.
    let (_, pulled) = post_raw(&s, &token, "/api/v1/sync/", sync_push("")).await;
    assert_eq!(exact_copies(&pulled), 3, "{pulled}");
    s.shutdown().await.expect("shutdown");
}

/// A checksum over any other spelling of the numbers is refused: `1e2` is not `100`.
async fn checksum_is_over_the_sent_text(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let other = checksum(&canonical().replace("\"exp\":1e+2", "\"exp\":100"));
    let v1 = inbetweenies_proto::Version::now("tester");
    let change = format!(
        r#"{{"change_type":"create","entity":{},"relationships":[]}}"#,
        entity_json("num-bad-sum", v1.as_str(), &other)
    );
    let (status, answer) = post_raw(&s, &token, "/api/v1/sync/", sync_push(&change)).await;
    assert_eq!(status, 422, "{answer}");
    let parsed: Value = serde_json::from_str(&answer).expect("json");
    assert_eq!(
        parsed["error"]["field"], "changes[0].entity.checksum",
        "{answer}"
    );
    let (_, body) = read(
        s.http
            .get(s.url("/api/v1/graph/entities/num-bad-sum"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("request"),
    )
    .await;
    assert!(body.get("content").is_none(), "nothing stored: {body}");
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(content_round_trips_exactly, checksum_is_over_the_sent_text);
