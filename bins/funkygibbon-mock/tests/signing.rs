//! Signed requests and answers (PROTOCOL §2.6) against the real server: the worked
//! example of the document computed, replays refused, stale and tampered requests
//! refused, answers signed over the request's nonce.

mod support;

use funkygibbon_mock::{request_string, response_string, sign_string};
use serde_json::{json, Value};
use support::{read, signed_headers, signed_headers_at, sync_body, Backend, TestServer};

const KEY: &str = "shared-signing-key";

/// The worked example of PROTOCOL §2.6, computed here and found verbatim in the document.
#[test]
fn the_worked_example_of_the_protocol_is_what_the_server_computes() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/PROTOCOL.md"
    ))
    .expect("docs/PROTOCOL.md");
    let key = b"funkygibbon-example-key";
    let body = br#"{"device_id":"phone-1","user_id":"alice","sync_type":"delta","changes":[]}"#;
    let nonce = "4f1c2a9e7b3d4c5a8e6f0b1d2c3a4b5c";
    let string = request_string("POST", "/api/v1/sync/", "", 1_767_225_600, nonce, body);
    let sig = sign_string(key, &string);
    assert_eq!(
        sig,
        "9a85e4d0d0dc73641f563307f7648d11579e6d1b68c967eabbb33b1574ead11a"
    );
    assert!(
        doc.contains(&format!("```text\n{string}\n```")),
        "the signed string is in the document"
    );
    assert!(doc.contains(&format!("x-inbetweenies-signature: {sig}")));
    assert!(doc.contains(std::str::from_utf8(body).expect("utf-8")));
    let answer = response_string(200, nonce, 1_767_225_601, br#"{"status":"ok"}"#);
    let answer_sig = sign_string(key, &answer);
    assert_eq!(
        answer_sig,
        "189d7452e898c8387cf1c39f76b66c3fa65240d8257e6ec95eea4a175029a8ef"
    );
    assert!(doc.contains(&format!("```text\n{answer}\n```")));
    assert!(doc.contains(&format!("giving `{answer_sig}`")));
}

struct Sent {
    status: u16,
    body: Value,
    signature: Option<String>,
    timestamp: Option<i64>,
    bytes: Vec<u8>,
}

async fn send(
    s: &TestServer,
    method: reqwest::Method,
    path_and_query: &str,
    token: &str,
    body: &[u8],
    headers: &[(&'static str, String)],
) -> Sent {
    let mut req = s
        .http
        .request(method, s.url(path_and_query))
        .bearer_auth(token)
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    if !body.is_empty() {
        req = req.body(body.to_vec());
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let signature = header("x-inbetweenies-signature");
    let timestamp = header("x-inbetweenies-timestamp").and_then(|t| t.parse().ok());
    let bytes = res.bytes().await.expect("body").to_vec();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Sent {
        status,
        body,
        signature,
        timestamp,
        bytes,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn a_replayed_signed_request_is_refused(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_hmac_key(KEY)).await else {
        return;
    };
    let token = s.login_signed(KEY).await;
    let body = serde_json::to_vec(&sync_body("signer", "full", json!([]))).expect("json");
    let headers = signed_headers(KEY, "POST", "/api/v1/sync/", "", &body);
    let nonce = headers[2].1.clone();
    let first = send(
        &s,
        reqwest::Method::POST,
        "/api/v1/sync/",
        &token,
        &body,
        &headers,
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.body);
    // The answer is signed over its status, the request's nonce, its timestamp and body.
    let ts = first.timestamp.expect("answer timestamp");
    assert!((ts - now()).abs() <= 5);
    let expected = sign_string(
        KEY.as_bytes(),
        &response_string(200, &nonce, ts, &first.bytes),
    );
    assert_eq!(first.signature.as_deref(), Some(expected.as_str()));

    // The very same bytes again: refused, nothing done.
    let again = send(
        &s,
        reqwest::Method::POST,
        "/api/v1/sync/",
        &token,
        &body,
        &headers,
    )
    .await;
    assert_eq!(again.status, 401, "{}", again.body);
    assert_eq!(again.body["error"]["code"], "REPLAYED_REQUEST");
    assert_eq!(again.body["error"]["field"], "x-inbetweenies-nonce");
    // The refusal is signed too.
    let ts = again.timestamp.expect("timestamp");
    assert_eq!(
        again.signature.expect("signed"),
        sign_string(
            KEY.as_bytes(),
            &response_string(401, &nonce, ts, &again.bytes)
        )
    );
    // Signed again with a new nonce, the same request is accepted.
    let fresh = signed_headers(KEY, "POST", "/api/v1/sync/", "", &body);
    let ok = send(
        &s,
        reqwest::Method::POST,
        "/api/v1/sync/",
        &token,
        &body,
        &fresh,
    )
    .await;
    assert_eq!(ok.status, 200);
    s.shutdown().await.expect("shutdown");
}

async fn stale_tampered_and_unsigned_requests_are_refused(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| {
        c.with_hmac_key(KEY)
            .with_signing_window(std::time::Duration::from_secs(60), 1000)
    })
    .await
    else {
        return;
    };
    let token = s.login_signed(KEY).await;
    let body = serde_json::to_vec(&sync_body("signer", "full", json!([]))).expect("json");
    let post = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let (s, token) = (&s, token.clone());
        async move {
            send(
                s,
                reqwest::Method::POST,
                "/api/v1/sync/",
                &token,
                &body,
                &headers,
            )
            .await
        }
    };
    // Outside the window, either way.
    for skew in [-61, 61] {
        let h = signed_headers_at(
            KEY,
            "POST",
            "/api/v1/sync/",
            "",
            &body,
            now() + skew,
            &format!("stale-nonce-{}-0123456789", skew + 100),
        );
        let r = post(h, body.clone()).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.body["error"]["code"], "SIGNATURE_EXPIRED");
        assert_eq!(r.body["error"]["field"], "x-inbetweenies-timestamp");
    }
    // Inside the window: accepted.
    let h = signed_headers_at(
        KEY,
        "POST",
        "/api/v1/sync/",
        "",
        &body,
        now() - 50,
        "inside-the-window-0001",
    );
    assert_eq!(post(h, body.clone()).await.status, 200);
    // A changed body, a wrong key, another path: the signature does not match.
    let h = signed_headers(KEY, "POST", "/api/v1/sync/", "", &body);
    let mut other = body.clone();
    other.extend_from_slice(b" ");
    let r = post(h, other).await;
    assert_eq!(r.body["error"]["code"], "SIGNATURE_INVALID", "{}", r.body);
    assert_eq!(r.status, 401);
    let h = signed_headers("another-key", "POST", "/api/v1/sync/", "", &body);
    assert_eq!(post(h, body.clone()).await.status, 401);
    let h = signed_headers(KEY, "POST", "/api/v1/sync/request", "", &body);
    assert_eq!(post(h, body.clone()).await.status, 401);
    // Unsigned, or the old body-only signature: refused.
    let r = post(vec![], body.clone()).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "SIGNATURE_INVALID");
    let old = inbetweenies_proto::codec::sign(KEY.as_bytes(), &body);
    let r = post(vec![("x-inbetweenies-signature", old)], body.clone()).await;
    assert_eq!(r.status, 401);
    // A malformed nonce.
    let h = signed_headers_at(KEY, "POST", "/api/v1/sync/", "", &body, now(), "short");
    let r = post(h, body.clone()).await;
    assert_eq!(r.body["error"]["field"], "x-inbetweenies-nonce");
    // Requests without a body sign the empty body, and the query counts.
    let path = "/api/v1/sync/status";
    let h = signed_headers(KEY, "GET", path, "device_id=signer", b"");
    let r = send(
        &s,
        reqwest::Method::GET,
        &format!("{path}?device_id=signer"),
        &token,
        b"",
        &h,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let h = signed_headers(KEY, "GET", path, "device_id=signer", b"");
    let r = send(
        &s,
        reqwest::Method::GET,
        &format!("{path}?device_id=other"),
        &token,
        b"",
        &h,
    )
    .await;
    assert_eq!(r.status, 401);
    // Health and metrics need no signature.
    assert_eq!(s.get_json("", "/health").await.0, 200);
    let res = s.http.get(s.url("/metrics")).send().await.expect("metrics");
    assert_eq!(res.status(), 200);
    let text = res.text().await.expect("text");
    assert!(
        text.contains("funkygibbon_signature_refused_total{reason=\"expired\"} 2"),
        "{text}"
    );
    s.shutdown().await.expect("shutdown");
}

/// Without a key nothing is asked for, and answers carry no signature.
async fn without_a_key_nothing_is_signed(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let res = s
        .http
        .post(s.url("/api/v1/sync/"))
        .bearer_auth(&token)
        .json(&sync_body("plain", "full", json!([])))
        .send()
        .await
        .expect("request");
    assert!(res.headers().get("x-inbetweenies-signature").is_none());
    let (status, _) = read(res).await;
    assert_eq!(status, 200);
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    a_replayed_signed_request_is_refused,
    stale_tampered_and_unsigned_requests_are_refused,
    without_a_key_nothing_is_signed,
);
