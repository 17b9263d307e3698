//! The bad-input corpus: every malformed request of `corpus/bad_requests.json` gets its 4xx with the JSON error body, the server keeps serving, and the store is unchanged, on SQLite and PostgreSQL.
//!
//! Each case is sent as raw bytes over its own TCP connection (so headers
//! can be anything), to a server with a 1 MiB body limit, or to a strict one
//! (PROTOCOL §12.5) when the case says `"server": "strict"`. A case names
//! its method, path, headers, body (`body` as text, `body_hex` as bytes, or
//! `generate` for bodies too large to keep in the file: `nest`, `oversized`,
//! `gzip_bomb`, `huge_string`), header lines written verbatim
//! (`raw_header_lines`, for headers no HTTP client would send), how it
//! authenticates (`admin`, `none`, or `raw` headers only) and the status it
//! must get. After every case the
//! store's state digest must be the one before the corpus ran.

mod support;

use std::io::Write as _;

use serde_json::{json, Value};
use support::{Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The body limit of the corpus servers.
const LIMIT: usize = 1 << 20;

fn corpus() -> Vec<Value> {
    let text = include_str!("corpus/bad_requests.json");
    let v: Value = serde_json::from_str(text).expect("corpus is JSON");
    v["cases"].as_array().expect("cases").clone()
}

/// The body bytes of a case and whether to send it chunked.
fn body_of(case: &Value) -> (Vec<u8>, bool) {
    if let Some(t) = case["body"].as_str() {
        return (t.as_bytes().to_vec(), false);
    }
    if let Some(h) = case["body_hex"].as_str() {
        return (hex::decode(h).expect("body_hex"), false);
    }
    let g = &case["generate"];
    if let Some(n) = g["nest"].as_u64() {
        let n = n as usize;
        return (
            format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes(),
            false,
        );
    }
    if g["oversized"] == true {
        return (
            format!(r#"{{"a":"{}"}}"#, "x".repeat(LIMIT)).into_bytes(),
            false,
        );
    }
    if g["gzip_bomb"] == true {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 16 * LIMIT]).expect("gzip");
        return (enc.finish().expect("gzip"), false);
    }
    if g["huge_string"] == true {
        return (
            format!(r#"{{"device_id":"{}"}}"#, "d".repeat(2 * LIMIT)).into_bytes(),
            true,
        );
    }
    (Vec::new(), false)
}

/// The request bytes of a case.
fn request_bytes(case: &Value, addr: &str, token: &str) -> Vec<u8> {
    let method = case["method"].as_str().expect("method");
    let path = case["path"].as_str().expect("path");
    let (body, chunked) = body_of(case);
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    match case["auth"].as_str() {
        Some("admin") => head.push_str(&format!("authorization: Bearer {token}\r\n")),
        Some("none") | Some("raw") => {}
        other => panic!("{}: unknown auth {other:?}", case["name"]),
    }
    let mut has_type = false;
    if let Some(h) = case["headers"].as_object() {
        for (k, v) in h {
            has_type |= k == "content-type";
            head.push_str(&format!("{k}: {}\r\n", v.as_str().expect("header value")));
        }
    }
    if let Some(lines) = case["raw_header_lines"].as_str() {
        head.push_str(lines);
        head.push_str("\r\n");
    }
    let mut out = Vec::new();
    let has_body = !body.is_empty() || case.get("body").is_some();
    if has_body && !has_type {
        head.push_str("content-type: application/json\r\n");
    }
    if chunked {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
        out.extend_from_slice(head.as_bytes());
        for part in body.chunks(64 * 1024) {
            out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            out.extend_from_slice(part);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        if (has_body || method != "GET") && !head.contains("content-length") {
            head.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// Sends raw bytes and reads the whole answer: status and body (chunks joined).
async fn exchange(addr: &str, bytes: &[u8]) -> (u16, Vec<u8>) {
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer (413) and close before reading everything.
    let _ = sock.write_all(bytes).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        sock.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "no answer within 20 s");
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {:?}", String::from_utf8_lossy(&answer)));
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let mut body = answer[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&raw[..eol])
                .split(';')
                .next()
                .unwrap_or("")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[eol + 2..eol + 2 + size]);
        raw = &raw[eol + 2 + size + 2..];
    }
    out
}

async fn seed(s: &TestServer, token: &str) {
    for id in ["corpus-a", "corpus-b"] {
        let (status, body) = s
            .post_json(
                token,
                "/api/v1/graph/entities",
                &json!({"id": id, "entity_type": "room", "name": id, "content": {"n": 1}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

async fn every_bad_request_is_refused_and_changes_nothing(backend: Backend) {
    let Some(plain) = TestServer::start_with(backend, |c| c.with_body_limit(LIMIT)).await else {
        return;
    };
    let Some(strict) =
        TestServer::start_with(backend, |c| c.with_body_limit(LIMIT).with_strict(true)).await
    else {
        return;
    };
    let cases = corpus();
    assert!(cases.len() >= 200, "the corpus holds {} cases", cases.len());
    let mut servers = Vec::new();
    for s in [&plain, &strict] {
        let token = s.login().await;
        seed(s, &token).await;
        let digest = s.handle.store().state_digest().await.expect("digest");
        servers.push((s, token, digest));
    }
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let (s, token, digest) = if case["server"] == "strict" {
            &servers[1]
        } else {
            &servers[0]
        };
        let addr = s.base.trim_start_matches("http://");
        let want = case["status"].as_u64().expect("status") as u16;
        assert!(
            (400..500).contains(&want),
            "{name}: a corpus case expects a 4xx"
        );
        let (status, body) = exchange(addr, &request_bytes(case, addr, token)).await;
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let shaped = parsed.as_ref().is_some_and(|b| {
            b.get("detail").is_some()
                && b["error"]["code"].is_string()
                && b["error"]["message"].is_string()
        });
        if status != want || !shaped {
            failures.push(format!(
                "{name}: {status} {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        let now = s.handle.store().state_digest().await.expect("digest");
        if &now != digest {
            failures.push(format!("{name}: the store changed"));
        }
    }
    // Still serving.
    for (s, _, _) in &servers {
        let addr = s.base.trim_start_matches("http://");
        let req = format!("GET /health HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        assert_eq!(exchange(addr, req.as_bytes()).await.0, 200);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!("{} cases in {:?}", cases.len(), started.elapsed());
    strict.shutdown().await.expect("shutdown");
    plain.shutdown().await.expect("shutdown");
}

on_both_backends!(every_bad_request_is_refused_and_changes_nothing);
