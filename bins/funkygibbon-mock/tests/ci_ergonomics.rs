//! The binary as CI runs it (docs/SERVER.md "Using it in CI"): started on port 0, its
//! address read from stdout and from `--ready-file`, stopped by SIGTERM or SIGINT after
//! finishing the request in flight, and a clear message and exit code for every
//! start-up failure; guest grants kept across a restart. Real child processes on loopback.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_funkygibbon-mock");
const PASSWORD: &str = "ci-password";

fn server(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    if !extra.contains(&"--listen") {
        cmd.arg("--listen").arg("127.0.0.1:0");
    }
    if !extra.contains(&"--database-url") {
        cmd.arg("--database-url")
            .arg(format!("sqlite://{}", dir.join("ci.db").display()));
    }
    cmd.arg("--admin-password")
        .arg(PASSWORD)
        .arg("--jwt-secret")
        .arg("ci-secret")
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// The first stdout line, parsed; within 30 s.
async fn listening_line(child: &mut Child) -> Value {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the server announces itself within 30 s")
        .expect("read stdout")
        .expect("a line on stdout");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
}

async fn exit_of(child: &mut Child) -> (i32, String) {
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the server exits within 30 s")
        .expect("wait");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err).await;
    }
    (status.code().unwrap_or(-1), err)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("pid").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Requests being handled, as `/metrics` says (the metrics request itself included).
async fn in_flight(http: &reqwest::Client, base: &str) -> i64 {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix("funkygibbon_http_requests_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the in-flight gauge")
}

async fn stops_after_the_request_in_flight(sig: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let ready = dir.path().join("ready");
    let mut child = server(
        dir.path(),
        &[
            "--ready-file",
            ready.to_str().expect("utf-8 path"),
            "--fault-latency-ms",
            "1500",
        ],
    )
    .spawn()
    .expect("spawn the server");
    let line = listening_line(&mut child).await;
    assert_eq!(line["event"], "listening");
    let addr = line["addr"].as_str().expect("addr").to_owned();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    assert_eq!(line["url"], format!("http://{addr}"));
    let written = std::fs::read_to_string(&ready).expect("the ready file is written");
    assert_eq!(written, format!("{addr}\n"));
    let base = format!("http://{addr}");
    let http = client();
    let health: Value = http
        .get(format!("{base}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("health body");
    assert_eq!(health["status"], "healthy");
    let token = support::admin_login(&http, &base, PASSWORD).await;
    // A sync request held 1.5 s by the injected latency is in flight when the signal comes.
    let slow = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tokio::spawn(async move {
            http.post(format!("{base}/api/v1/sync/"))
                .bearer_auth(token)
                .json(&json!({"device_id": "ci", "user_id": "ci", "sync_type": "full", "changes": []}))
                .send()
                .await
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while in_flight(&http, &base).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sync request never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(&child, sig);
    let res = slow
        .await
        .expect("task")
        .expect("the request in flight is answered");
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("sync answer");
    assert!(body["server_time"].is_string(), "{body}");
    let (code, err) = exit_of(&mut child).await;
    assert_eq!(code, 0, "clean exit on {sig}; stderr: {err}");
    assert!(!ready.exists(), "the ready file is removed on a clean exit");
    assert!(
        http.get(format!("{base}/health")).send().await.is_err(),
        "nothing listens after the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    stops_after_the_request_in_flight("-TERM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_the_request_in_flight_then_exits_0() {
    stops_after_the_request_in_flight("-INT").await;
}

async fn fails_to_start(extra: &[&str], code: i32, message: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = server(dir.path(), extra).spawn().expect("spawn");
    let (got, err) = exit_of(&mut child).await;
    assert_eq!(got, code, "exit code for {extra:?}; stderr: {err}");
    assert!(
        err.contains(message),
        "stderr for {extra:?} should say {message:?}: {err}"
    );
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out).await;
    }
    assert!(
        out.is_empty(),
        "nothing announced on stdout after a failed start: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_start_up_failure_exits_non_zero_with_a_clear_message() {
    fails_to_start(&["--page-size", "0"], 2, "is not a page size").await;
    fails_to_start(&["--no-such-flag"], 2, "--no-such-flag").await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    fails_to_start(&["--listen", &addr], 4, &format!("cannot listen on {addr}")).await;
    fails_to_start(
        &["--database-url", "postgres://nobody@127.0.0.1:1/none"],
        5,
        "cannot open the store",
    )
    .await;
    fails_to_start(
        &["--database-url", "mysql://localhost/db"],
        5,
        "cannot open the store",
    )
    .await;
    fails_to_start(
        &[
            "--tls-cert",
            "/nonexistent/cert.pem",
            "--tls-key",
            "/nonexistent/key.pem",
        ],
        3,
        "cannot read the TLS certificate /nonexistent/cert.pem",
    )
    .await;
    fails_to_start(&["--tls-cert", "/nonexistent/cert.pem"], 2, "--tls-key").await;
    // The test command line gives --admin-password already.
    fails_to_start(&["--admin-password-hash", "x"], 2, "cannot be used with").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_by_flag() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = server(dir.path(), &["--log-format", "json"])
        .spawn()
        .expect("spawn");
    let line = listening_line(&mut child).await;
    let base = line["url"].as_str().expect("url").to_owned();
    let http = client();
    let token = support::admin_login(&http, &base, PASSWORD).await;
    let res = http
        .post(format!("{base}/api/v1/sync/"))
        .bearer_auth(token)
        .json(
            &json!({"device_id": "json-logs", "user_id": "ci", "sync_type": "full", "changes": []}),
        )
        .send()
        .await
        .expect("sync");
    assert_eq!(res.status(), 200);
    signal(&child, "-TERM");
    let (code, err) = exit_of(&mut child).await;
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}")))
        .collect();
    // The one-line summary of the sync, at info.
    let sync = events
        .iter()
        .find(|e| e["fields"]["message"] == "sync")
        .unwrap_or_else(|| panic!("a sync summary line: {err}"));
    assert_eq!(sync["level"], "INFO");
    assert_eq!(sync["fields"]["device_id"], "json-logs");
    assert_eq!(sync["fields"]["pushed"], 0);
}

/// Guest grants are kept in the store: after a restart on the same database a grant
/// still verifies, its guest token still works, and a revocation is kept too.
async fn guest_grants_survive_a_restart(backend: support::Backend) {
    let Some(mut first) = support::TestServer::start(backend).await else {
        return;
    };
    let admin = first.login().await;
    let (status, qr) = first
        .post_json(
            &admin,
            "/api/v1/auth/guest/generate-qr",
            &json!({"duration_hours": 2, "custom_server": "https://home.example:8443"}),
        )
        .await;
    assert_eq!(status, 200, "{qr}");
    let kept = qr["qr_data"]["token"].as_str().expect("token").to_owned();
    let (status, qr) = first
        .post_json(&admin, "/api/v1/auth/guest/generate-qr", &json!({}))
        .await;
    assert_eq!(status, 200);
    let revoked = qr["qr_data"]["token"].as_str().expect("token").to_owned();
    let (status, before) = first
        .post_json("", "/api/v1/auth/guest/verify", &json!({"token": kept}))
        .await;
    assert_eq!(status, 200);
    let guest_jwt = before["access_token"].as_str().expect("jwt").to_owned();
    first.signal_stop();
    first.join().await.expect("first server stops");

    let second = support::TestServer::start_on_url(&first.database_url).await;
    let (status, after) = second
        .post_json("", "/api/v1/auth/guest/verify", &json!({"token": kept}))
        .await;
    assert_eq!(status, 200, "the grant survived the restart: {after}");
    assert_eq!(after["server_url"], "https://home.example:8443");
    let left = after["expires_in"].as_i64().expect("expires_in");
    assert!((7000..=7200).contains(&left), "{left}");
    // The guest token issued before the restart (same JWT secret) still works.
    assert_eq!(second.get_json(&guest_jwt, "/api/v1/auth/me").await.0, 200);
    // A revocation is kept as well.
    let admin = second.login().await;
    let (status, _) = second
        .post_json(
            &admin,
            "/api/v1/auth/guest/revoke",
            &json!({"token": revoked}),
        )
        .await;
    assert_eq!(status, 200);
    second.shutdown().await.expect("second server stops");
    let third = support::TestServer::start_on_url(&first.database_url).await;
    let admin = third.login().await;
    let (_, list) = third.get_json(&admin, "/api/v1/auth/guest/list").await;
    assert_eq!(list["count"], 2, "{list}");
    let revoked_row = list["guests"]
        .as_array()
        .expect("guests")
        .iter()
        .find(|g| g["token"] == revoked.as_str())
        .expect("the revoked grant is listed");
    assert_eq!(revoked_row["revoked"], true);
    assert_eq!(
        third
            .post_json("", "/api/v1/auth/guest/verify", &json!({"token": revoked}))
            .await
            .0,
        401
    );
    third.shutdown().await.expect("third server stops");
}

on_both_backends!(guest_grants_survive_a_restart);

fn ack_body(client_id: &str) -> Value {
    json!({"type": "sync_ack", "client_id": client_id, "sync_completed_at": "2026-03-01T12:00:00+00:00"})
}

/// `POST /api/v1/sync/ack` confirms only the caller's own device: the device a guest
/// token synced as; admin tokens any device.
async fn a_token_acknowledges_only_its_own_device(backend: support::Backend) {
    let Some(s) = support::TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let guest = s.guest_token(&admin).await;
    let other_guest = s.guest_token(&admin).await;
    let request = |c: &str| json!({"type": "sync_request", "client_id": c});
    assert_eq!(
        s.post_json(&guest, "/api/v1/sync/request", &request("guest-phone"))
            .await
            .0,
        200
    );
    let (status, body) = s
        .post_json(
            &admin,
            "/api/v1/sync/",
            &support::sync_body("admin-phone", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Its own device: accepted.
    let (status, body) = s
        .post_json(&guest, "/api/v1/sync/ack", &ack_body("guest-phone"))
        .await;
    assert_eq!(status, 200, "{body}");
    // Another's device, or one it never synced as: 403, nothing recorded.
    for (token, device) in [
        (&guest, "admin-phone"),
        (&guest, "never-seen"),
        (&other_guest, "guest-phone"),
    ] {
        let (status, body) = s
            .post_json(token, "/api/v1/sync/ack", &ack_body(device))
            .await;
        assert_eq!(status, 403, "{device}: {body}");
        assert_eq!(body["error"]["code"], "FORBIDDEN");
    }
    // Admin tokens confirm any device.
    for device in ["admin-phone", "guest-phone"] {
        assert_eq!(
            s.post_json(&admin, "/api/v1/sync/ack", &ack_body(device))
                .await
                .0,
            200
        );
    }
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(a_token_acknowledges_only_its_own_device);
