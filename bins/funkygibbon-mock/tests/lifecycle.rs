//! Operations: graceful shutdown with a push in flight, demo data, the in-process router, start-up errors, the binary itself.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use funkygibbon_mock::{build_app, AdminPassword, ServerConfig};
use goodies_store::EntityQuery;
use inbetweenies_proto::EntityType;
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

async fn graceful_shutdown_finishes_the_push_in_flight(backend: Backend) {
    let Some(mut s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let changes: Vec<Value> = (0..300)
        .map(|i| create_change(&format!("late-{i}"), "note", "in flight", json!({"i": i})))
        .collect();
    let body = serde_json::to_vec(&sync_body("shutdown", "delta", json!(changes))).expect("json");
    let addr = s.base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/sync/ HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.expect("write head");
    sock.write_all(&body[..body.len() / 2])
        .await
        .expect("write half");
    // The request is being handled (its body half read) when shutdown is asked for.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.handle.wait_for_in_flight(1),
    )
    .await
    .expect("the request reaches the server");
    s.signal_stop();
    sock.write_all(&body[body.len() / 2..])
        .await
        .expect("write rest");
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).await.expect("read answer");
    let text = String::from_utf8(raw).expect("utf-8 answer");
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(300)]
    );
    let json_start = text.find("\r\n\r\n").expect("head end") + 4;
    let answer: Value = serde_json::from_str(&text[json_start..]).expect("json answer");
    assert_eq!(answer["applied"].as_array().map(Vec::len), Some(300));
    s.join()
        .await
        .expect("serve returns Ok after a graceful shutdown");
    let stored = s.handle.store().stats().await.expect("stats");
    assert_eq!(stored.entities, 300, "the whole push was committed");
}

async fn demo_data_is_loaded_once(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_demo_data(true)).await else {
        return;
    };
    let store = s.handle.store();
    let stats = store.stats().await.expect("stats");
    let count = |t: EntityType| {
        stats
            .entities_by_type
            .iter()
            .find(|(k, _)| *k == t)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count(EntityType::Home), 1);
    assert_eq!(count(EntityType::Room), 6);
    assert_eq!(count(EntityType::Device), 30);
    assert!(count(EntityType::Note) >= 1 && count(EntityType::Procedure) >= 1);
    let rels: Vec<&str> = stats
        .relationships_by_type
        .iter()
        .map(|(t, _)| t.as_str())
        .collect();
    for t in ["located_in", "documented_by", "procedure_for"] {
        assert!(rels.contains(&t), "{t} in {rels:?}");
    }
    let devices = store
        .entities(&EntityQuery {
            entity_types: Some(vec![EntityType::Device]),
            ..EntityQuery::default()
        })
        .await
        .expect("devices");
    assert!(
        devices.iter().all(|d| {
            d.content.get("device_type").is_some_and(Value::is_string)
                && d.content.get("power").is_some()
                    | d.content.get("motion").is_some()
                    | d.content.get("target_c").is_some()
        }),
        "devices carry their type and state in content"
    );

    // A second server on the same database with --demo-data adds nothing; the in-process router serves it.
    let again = ServerConfig::new(s.database_url.clone())
        .with_admin_password("pw")
        .with_jwt_secret("secret")
        .with_demo_data(true);
    let (router, handle) = build_app(again).await.expect("build");
    assert_eq!(
        handle.store().stats().await.expect("stats"),
        stats,
        "loading is idempotent"
    );
    let req = axum::http::Request::builder()
        .uri("/api/v1/graph/statistics")
        .header("authorization", format!("Bearer {}", handle.admin_token()))
        .body(axum::body::Body::empty())
        .expect("request");
    let res = router
        .clone()
        .oneshot(req)
        .await
        .expect("in-process answer");
    assert_eq!(res.status(), 200);
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(body["total_entities"], stats.entities);
    let req = axum::http::Request::builder()
        .uri("/nowhere")
        .body(axum::body::Body::empty())
        .expect("request");
    assert_eq!(router.oneshot(req).await.expect("answer").status(), 404);
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    graceful_shutdown_finishes_the_push_in_flight,
    demo_data_is_loaded_once
);

#[tokio::test]
async fn start_up_errors_have_exit_codes() {
    let e = build_app(ServerConfig::default().with_page_size(0))
        .await
        .expect_err("page size 0");
    assert_eq!(e.exit_code(), 3);
    let mut bad_hash = ServerConfig::default();
    bad_hash.admin_password = Some(AdminPassword::Hash("not-a-phc-string".into()));
    assert_eq!(
        build_app(bad_hash).await.expect_err("bad hash").exit_code(),
        3
    );
    let e = build_app(ServerConfig::new("mysql://nowhere/db"))
        .await
        .expect_err("unsupported url");
    assert_eq!(e.exit_code(), 5);
    assert!(
        e.report().contains("unsupported database url"),
        "{}",
        e.report()
    );
}

#[tokio::test]
async fn a_phc_hash_works_as_the_admin_password() {
    use argon2::password_hash::{PasswordHasher as _, SaltString};
    let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
    let hash = argon2::Argon2::default()
        .hash_password(b"hashed-pw", &salt)
        .expect("hash")
        .to_string();
    let mut config = ServerConfig::default().with_jwt_secret("s");
    config.admin_password = Some(AdminPassword::Hash(hash));
    let (router, _) = build_app(config).await.expect("build");
    for (pw, status) in [("hashed-pw", 200), ("other", 401)] {
        let req = axum::http::Request::post("/api/v1/auth/admin/login")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(json!({"password": pw}).to_string()))
            .expect("request");
        assert_eq!(
            router.clone().oneshot(req).await.expect("answer").status(),
            status,
            "{pw}"
        );
    }
}

/// The binary starts with no set-up but the listen address (taken from the
/// environment), serves, and stops cleanly on SIGTERM; a taken port is exit code 4.
#[cfg(unix)]
#[tokio::test]
async fn the_binary_runs_with_no_set_up() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_funkygibbon-mock"))
            .current_dir(dir.path())
            .env("FUNKYGIBBON_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the binary"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let stderr = child.0.stderr.take().expect("stderr");
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    // Stdout has the one "listening" line: {"event":"listening","addr":…}.
    std::thread::spawn(move || {
        let mut addr_tx = Some(addr_tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let parsed = serde_json::from_str::<Value>(&line).ok();
            if let Some(addr) = parsed.as_ref().and_then(|v| v["addr"].as_str()) {
                if let Some(tx) = addr_tx.take() {
                    let _ = tx.send(addr.to_owned());
                }
            }
        }
    });
    // The logs are on stderr.
    let reader = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), addr_rx)
        .await
        .expect("the binary starts within 30 s")
        .expect("the binary logs its address");
    let http = support::http_client();
    let health: Value = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .expect("health")
        .json()
        .await
        .expect("json");
    assert_eq!(health, json!({"status": "healthy"}));
    let res = http
        .post(format!("http://{addr}/api/v1/auth/admin/login"))
        .json(&json!({"password": "guess"}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 401);
    assert!(
        dir.path().join("funkygibbon.db").exists(),
        "the default SQLite file is in the working directory"
    );

    // A second instance on the same port cannot listen: exit code 4.
    let taken = Command::new(env!("CARGO_BIN_EXE_funkygibbon-mock"))
        .current_dir(dir.path())
        .args([
            "--listen",
            &addr,
            "--database-url",
            "sqlite::memory:",
            "--admin-password",
            "x",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert_eq!(taken.code(), Some(4));
    // A bad flag is clap's exit code 2.
    let bad = Command::new(env!("CARGO_BIN_EXE_funkygibbon-mock"))
        .arg("--page-size=0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run");
    assert_eq!(bad.code(), Some(2));

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = child.0.wait().expect("wait");
    assert_eq!(status.code(), Some(0), "a clean shutdown exits 0");
    let lines = reader.join().expect("reader");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("generated one for this run")),
        "the generated password is logged"
    );
    assert!(lines.iter().any(|l| l.contains("funkygibbon stopped")));
}

/// The default configuration (an in-memory SQLite store) keeps what is written across requests.
#[tokio::test]
async fn the_default_in_memory_store_works() {
    let (router, handle) = build_app(ServerConfig::default().with_jwt_secret("s"))
        .await
        .expect("build");
    let token = handle.admin_token();
    let call = |method: &str, uri: &str, body: Option<Value>| {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"));
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        req.body(axum::body::Body::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        ))
        .expect("request")
    };
    for i in 0..5 {
        let res = router
            .clone()
            .oneshot(call(
                "POST",
                "/api/v1/graph/entities",
                Some(json!({"entity_type": "device", "name": format!("d{i}")})),
            ))
            .await
            .expect("answer");
        assert_eq!(res.status(), 200);
    }
    let res = router
        .oneshot(call("GET", "/api/v1/graph/entities", None))
        .await
        .expect("answer");
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(body["total"], 5, "{body}");
}

/// Kills the child process if a test fails before stopping it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
