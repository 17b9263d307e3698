//! Hostile connections, over raw sockets against the real server on 127.0.0.1:0:
//! slow and idle connections are closed after their timeouts while others are
//! served, connections over the cap wait, every error (the HTTP parser's too)
//! carries the JSON error body, a 413 reaches a client that writes its whole body
//! before reading, and a padded cursor is refused like any malformed one.

mod support;

use std::time::{Duration, Instant};

use funkygibbon_mock::ServerConfig;
use serde_json::{json, Value};
use support::{sync_body, Backend, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short limits so the test runs in seconds.
fn short_limits(cap: usize) -> impl FnOnce(ServerConfig) -> ServerConfig {
    move |c| {
        c.with_connection_limits(
            Duration::from_millis(500),
            Duration::from_millis(500),
            Duration::from_millis(500),
            cap,
        )
    }
}

fn addr(server: &TestServer) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// Reads until the server closes the connection (or `within` passes): the bytes, and
/// whether it closed in time.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (out, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// One answer off a raw socket: status, headers (lower-cased names) and body.
fn parse_answer(raw: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let text = String::from_utf8_lossy(raw);
    let (head, _) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer in {text:?}"));
    let head_len = head.len() + 4;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap_or(raw.len() - head_len);
    let body = raw[head_len..(head_len + len).min(raw.len())].to_vec();
    (status, headers, body)
}

fn assert_json_error(status: u16, headers: &[(String, String)], body: &[u8], what: &str) {
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-type" && v.starts_with("application/json")),
        "{what}: {status} without a JSON content type: {headers:?}"
    );
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {body:?}"));
    assert!(v["detail"].is_string(), "{what}: no detail in {v}");
    assert!(
        v["error"]["code"].is_string(),
        "{what}: no error.code in {v}"
    );
    assert!(
        v["error"]["message"].is_string(),
        "{what}: no error.message in {v}"
    );
}

/// Sends a raw request and reads the whole answer (the server closes after it, or
/// the answer is complete).
async fn raw_exchange(addr: &str, request: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let (raw, _) = read_to_close(&mut s, Duration::from_secs(5)).await;
    parse_answer(&raw)
}

async fn health_latency(addr: &str) -> Duration {
    let started = Instant::now();
    let (status, _, body) = raw_exchange(
        addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    started.elapsed()
}

/// 200 slow connections against a cap of 50 and 500 ms timeouts: those that send
/// nothing, half a head, or 2 bytes of a declared 1 MB body. `/health` still
/// answers within a few timeouts, every slow one is closed, and a slow body gets 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_leaves_service_to_others() {
    let server = TestServer::start_with(Backend::Sqlite, short_limits(50))
        .await
        .unwrap();
    let addr = addr(&server);
    let mut slow = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        match i % 3 {
            0 => {}
            1 => s
                .write_all(b"POST /api/v1/auth/admin/login HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap(),
            _ => s
                .write_all(
                    b"POST /api/v1/auth/admin/login HTTP/1.1\r\nHost: x\r\n\
                      Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{\"",
                )
                .await
                .unwrap(),
        }
        slow.push((i, s));
    }
    let took = health_latency(&addr).await;
    // 200 connections, 50 at a time, each closed after 500 ms: about 2 s, never the
    // minutes a connection could be held before.
    assert!(took < Duration::from_secs(6), "/health took {took:?}");

    let mut bodies_timed_out = 0;
    let closing = futures::future::join_all(slow.into_iter().map(|(i, mut s)| async move {
        let (raw, closed) = read_to_close(&mut s, Duration::from_secs(10)).await;
        (i, raw, closed)
    }))
    .await;
    for (i, raw, closed) in closing {
        assert!(closed, "slow connection {i} was never closed");
        if i % 3 == 2 {
            // Its head arrived; the body did not: 408 with the JSON body.
            let (status, headers, body) = parse_answer(&raw);
            assert_eq!(status, 408, "{}", String::from_utf8_lossy(&raw));
            assert_json_error(status, &headers, &body, "slow body");
            bodies_timed_out += 1;
        } else {
            // Its head never arrived complete: closed without an answer.
            assert!(raw.is_empty(), "{i}: {}", String::from_utf8_lossy(&raw));
        }
    }
    assert_eq!(bodies_timed_out, 66);
    // And the server is still fine.
    assert!(health_latency(&addr).await < Duration::from_secs(1));
    server.shutdown().await.unwrap();
}

/// Over the cap a connection waits to be accepted (its request is not answered, not
/// refused), and is served as soon as a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_waits_for_a_slot() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.with_connection_limits(
            Duration::from_secs(30),
            Duration::from_secs(30),
            Duration::from_secs(30),
            2,
        )
    })
    .await
    .unwrap();
    let addr = addr(&server);
    let mut first = TcpStream::connect(&addr).await.unwrap();
    let _second = TcpStream::connect(&addr).await.unwrap();
    // Let the server accept both.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(&addr).await.unwrap();
    third
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "over the cap yet answered: {early:?}");
    // A slot frees: the waiting connection is served.
    first.shutdown().await.unwrap();
    drop(first);
    let started = Instant::now();
    let (raw, closed) = read_to_close(&mut third, Duration::from_secs(5)).await;
    assert!(closed);
    let (status, _, _) = parse_answer(&raw);
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    server.shutdown().await.unwrap();
}

/// A kept-alive connection is served while it keeps asking, and closed once it
/// stays silent for the idle timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_kept_alive_connections_are_closed() {
    let server = TestServer::start_with(Backend::Sqlite, |c| {
        c.with_connection_limits(
            Duration::from_secs(30),
            Duration::from_secs(30),
            Duration::from_millis(400),
            50,
        )
    })
    .await
    .unwrap();
    let addr = addr(&server);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    for _ in 0..3 {
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let started = Instant::now();
    let (raw, closed) = read_to_close(&mut s, Duration::from_secs(3)).await;
    assert!(closed && raw.is_empty(), "{raw:?}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(2),
        "closed after {waited:?}"
    );
    server.shutdown().await.unwrap();
}

/// Requests the HTTP parser refuses before the router sees them are answered with
/// the JSON error body too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parser_errors_carry_the_json_error_body() {
    let server = TestServer::start(Backend::Sqlite).await.unwrap();
    let addr = addr(&server);
    let many_headers: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "Content-Length: abc",
            b"POST /api/v1/sync/ HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two different Content-Length",
            b"POST /api/v1/sync/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
                .to_vec(),
            400,
        ),
        (
            "500 headers",
            format!("GET /health HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").into_bytes(),
            431,
        ),
        (
            "garbage request line",
            b"\x16\x03\x01 nonsense here\r\n\r\n".to_vec(),
            400,
        ),
        (
            "control character in Content-Type",
            b"POST /api/v1/sync/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/\x01json\r\nContent-Length: 2\r\n\r\n{}"
                .to_vec(),
            400,
        ),
    ];
    for (what, request, want) in cases {
        let (status, headers, body) = raw_exchange(&addr, &request).await;
        assert_eq!(status, want, "{what}: {}", String::from_utf8_lossy(&body));
        assert_json_error(status, &headers, &body, what);
    }
    // Errors of the router keep their own JSON body.
    let (status, headers, body) = raw_exchange(
        &addr,
        b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    assert_json_error(status, &headers, &body, "404");
    server.shutdown().await.unwrap();
}

/// A client that writes its whole body before reading (as Python's http.client
/// does) gets the 413 with the JSON body, whether the body declared its length or
/// came in chunks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_reaches_a_client_that_writes_everything_first() {
    // Bodies this large do not fit in the sockets' buffers: unless the server reads
    // them, the client's writes fail or its read sees a reset instead of the answer.
    const LIMIT: usize = 8 * 1024 * 1024;
    let server = TestServer::start_with(Backend::Sqlite, |c| c.with_body_limit(LIMIT))
        .await
        .unwrap();
    let addr = addr(&server);
    let token = server.login().await;
    let payload = vec![b' '; 12 * 1024 * 1024];

    let mut head = format!(
        "POST /api/v1/sync/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        payload.len()
    )
    .into_bytes();
    head.extend_from_slice(&payload);
    let mut chunked = format!(
        "POST /api/v1/sync/ HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for part in payload.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");

    for (what, request) in [("Content-Length", head), ("chunked", chunked)] {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), s.write_all(&request))
            .await
            .unwrap_or_else(|_| panic!("{what}: the server stopped reading"))
            .unwrap_or_else(|e| panic!("{what}: writing the body failed: {e}"));
        let (raw, closed) = read_to_close(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "{what}: connection left open");
        let (status, headers, body) = parse_answer(&raw);
        assert_eq!(status, 413, "{what}: {}", String::from_utf8_lossy(&raw));
        assert_json_error(status, &headers, &body, what);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "PAYLOAD_TOO_LARGE");
        assert!(headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close")));
    }
    // A body within the limit is still served on the same server.
    let (status, _) = server
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("dev-1", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200);
    server.shutdown().await.unwrap();
}

/// A cursor with spaces or a sign is refused with 400 like any malformed cursor,
/// worded as the reference words a non-integer cursor.
async fn padded_cursors_are_refused(backend: Backend) {
    let Some(server) = TestServer::start(backend).await else {
        return;
    };
    let token = server.login().await;
    for cursor in [" 5", "5 ", "+5", "abc"] {
        let mut body = sync_body("dev-1", "delta", json!([]));
        body["cursor"] = json!(cursor);
        let (status, v) = server.post_json(&token, "/api/v1/sync/", &body).await;
        assert_eq!(status, 400, "{cursor:?}: {v}");
        assert_eq!(
            v["detail"],
            format!("cursor must be a server_seq integer, got '{cursor}'"),
            "{cursor:?}"
        );
        assert_eq!(v["error"]["field"], "cursor");
    }
    let mut body = sync_body("dev-1", "delta", json!([]));
    body["cursor"] = json!("0");
    let (status, v) = server.post_json(&token, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{v}");
    server.shutdown().await.unwrap();
}

on_both_backends!(padded_cursors_are_refused);
