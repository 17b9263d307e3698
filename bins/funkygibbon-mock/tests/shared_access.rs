//! What several server processes sharing one database must agree on, and what a restart
//! must keep: which subject owns a device (`POST /api/v1/sync/ack`) and the guest grants
//! (made, exchanged, honoured and revoked through any of them). The second server is
//! another store instance with its own pool and its own memory on the same database, as
//! a second server process has. Also: the five-step push in the metrics.

mod support;

use inbetweenies_proto::Version;
use serde_json::{json, Value};
use support::TestServer;

fn ack_body(client_id: &str) -> Value {
    json!({"type": "sync_ack", "client_id": client_id, "sync_completed_at": "2026-03-01T12:00:00+00:00"})
}

async fn ack(s: &TestServer, token: &str, device: &str) -> u16 {
    s.post_json(token, "/api/v1/sync/ack", &ack_body(device))
        .await
        .0
}

/// A device's owner is recorded in the store: a second server on the same database and a
/// server started after both stopped let only the subject that first synced as it confirm
/// its watermark, and a later sync by another subject does not take it over.
async fn device_owners_are_shared_and_survive_a_restart(backend: support::Backend) {
    let Some(mut a) = TestServer::start(backend).await else {
        return;
    };
    let admin = a.login().await;
    let guest = a.guest_token(&admin).await;
    let other = a.guest_token(&admin).await;
    let (status, body) = a
        .post_json(
            &guest,
            "/api/v1/sync/",
            &support::sync_body("guest-phone", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = a
        .post_json(
            &other,
            "/api/v1/sync/request",
            &json!({"type": "sync_request", "client_id": "other-phone"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut b = TestServer::start_on_url(&a.database_url).await;
    assert_eq!(ack(&b, &guest, "guest-phone").await, 200, "owner, via B");
    assert_eq!(ack(&b, &other, "other-phone").await, 200, "owner, via B");
    assert_eq!(ack(&b, &other, "guest-phone").await, 403);
    // Syncing as someone else's device through B does not make it yours.
    let (status, _) = b
        .post_json(
            &other,
            "/api/v1/sync/",
            &support::sync_body("guest-phone", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ack(&b, &other, "guest-phone").await, 403);
    assert_eq!(ack(&a, &other, "guest-phone").await, 403);
    assert_eq!(ack(&a, &guest, "never-synced").await, 403);

    b.signal_stop();
    b.join().await.expect("B stops");
    a.signal_stop();
    a.join().await.expect("A stops");
    let c = TestServer::start_on_url(&a.database_url).await;
    assert_eq!(ack(&c, &guest, "guest-phone").await, 200, "after a restart");
    assert_eq!(ack(&c, &other, "guest-phone").await, 403, "after a restart");
    assert_eq!(ack(&c, &other, "other-phone").await, 200, "after a restart");
    c.shutdown().await.expect("C stops");
}

on_both_backends!(device_owners_are_shared_and_survive_a_restart);

async fn qr_token(s: &TestServer, admin: &str) -> String {
    let (status, qr) = s
        .post_json(
            admin,
            "/api/v1/auth/guest/generate-qr",
            &json!({"duration_hours": 1}),
        )
        .await;
    assert_eq!(status, 200, "{qr}");
    qr["qr_data"]["token"]
        .as_str()
        .expect("grant token")
        .to_owned()
}

async fn exchange(s: &TestServer, grant: &str) -> (u16, Value) {
    s.post_json("", "/api/v1/auth/guest/verify", &json!({"token": grant}))
        .await
}

/// A grant made through one server is exchanged, honoured, listed and revoked through
/// another on the same database at once, without a restart; a revocation through either
/// is honoured by both at once.
async fn guest_grants_are_live_across_servers(backend: support::Backend) {
    let Some(a) = TestServer::start(backend).await else {
        return;
    };
    let b = TestServer::start_on_url(&a.database_url).await;
    let admin_a = a.login().await;
    let admin_b = b.login().await;

    // Made on A, exchanged on B; the guest token works on both.
    let grant = qr_token(&a, &admin_a).await;
    let (status, body) = exchange(&b, &grant).await;
    assert_eq!(status, 200, "a grant made on A is exchanged on B: {body}");
    let jwt = body["access_token"].as_str().expect("jwt").to_owned();
    assert_eq!(b.get_json(&jwt, "/api/v1/auth/me").await.0, 200);
    assert_eq!(a.get_json(&jwt, "/api/v1/auth/me").await.0, 200);
    let (_, list) = b.get_json(&admin_b, "/api/v1/auth/guest/list").await;
    assert!(
        list["guests"]
            .as_array()
            .expect("guests")
            .iter()
            .any(|g| g["token"] == grant.as_str()),
        "B lists the grant made on A: {list}"
    );

    // Revoked on A: refused on B at once, both the guest token and the grant.
    let (status, _) = a
        .post_json(
            &admin_a,
            "/api/v1/auth/guest/revoke",
            &json!({"token": grant}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(b.get_json(&jwt, "/api/v1/auth/me").await.0, 401);
    assert_eq!(a.get_json(&jwt, "/api/v1/auth/me").await.0, 401);
    assert_eq!(exchange(&b, &grant).await.0, 401);

    // Made on A, revoked on B (by its subject): refused on A at once.
    let grant = qr_token(&a, &admin_a).await;
    let (status, body) = exchange(&a, &grant).await;
    assert_eq!(status, 200, "{body}");
    let jwt = body["access_token"].as_str().expect("jwt").to_owned();
    let (_, me) = a.get_json(&jwt, "/api/v1/auth/me").await;
    let subject = format!("guest_{}", &grant[..8]);
    assert!(me.to_string().contains(&subject), "{me}");
    let (status, body) = b
        .post_json(
            &admin_b,
            "/api/v1/auth/guest/revoke",
            &json!({"token": subject}),
        )
        .await;
    assert_eq!(status, 200, "B revokes a grant made on A: {body}");
    assert_eq!(a.get_json(&jwt, "/api/v1/auth/me").await.0, 401);
    assert_eq!(exchange(&a, &grant).await.0, 401);
    // A grant nobody made is still unknown everywhere.
    let (status, _) = b
        .post_json(
            &admin_b,
            "/api/v1/auth/guest/revoke",
            &json!({"token": "no-such-grant"}),
        )
        .await;
    assert_eq!(status, 404);
    b.shutdown().await.expect("B stops");
    a.shutdown().await.expect("A stops");
}

on_both_backends!(guest_grants_are_live_across_servers);

fn flow_change(id: &str, version: &Version, parents: &[&Version]) -> Value {
    json!({"entity_type": "device", "entity_id": id, "operation": if parents.is_empty() { "create" } else { "update" },
        "data": {"name": id, "content": {}, "parent_versions": parents}, "client_sync_id": version})
}

/// The five-step push (`POST /api/v1/sync/push`) is counted as a sync push is: its batch
/// size, its store time and its conflicts by reason.
async fn five_step_pushes_are_in_the_metrics(backend: support::Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let first = Version::now("flow");
    let changes = json!([
        flow_change("fm-1", &first, &[]),
        flow_change("fm-2", &Version::now("flow"), &[]),
    ]);
    let (status, body) = s
        .post_json(
            &admin,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "flow-a", "changes": changes}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A newer edit, then a stale one from another client: one conflict.
    let newer = Version::now("flow");
    let (status, _) = s
        .post_json(
            &admin,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "flow-a",
                "changes": [flow_change("fm-1", &newer, &[&first])]}),
        )
        .await;
    assert_eq!(status, 200);
    let stale = Version::new("2020-01-01T00:00:00.000000+00:00-000001-flow");
    let (status, body) = s
        .post_json(
            &admin,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "flow-b",
                "changes": [flow_change("fm-1", &stale, &[&first])]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["applied"][0]["status"], "conflict", "{body}");
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let has = |line: &str| assert!(text.contains(line), "missing {line:?} in\n{text}");
    has("funkygibbon_sync_push_batch_size_count 3");
    has("funkygibbon_sync_push_batch_size_sum 4.0");
    has("funkygibbon_store_operation_duration_seconds_count{operation=\"apply_push\"} 3");
    has("funkygibbon_sync_conflicts_total{reason=\"newer_on_server\"} 1");
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(five_step_pushes_are_in_the_metrics);

/// A caught-up client's delta is answered from the last empty page at the head only
/// while nothing was committed: a write through another server on the same database is
/// in the very next delta from the same watermark.
async fn a_quiet_delta_sees_a_write_through_another_server(backend: support::Backend) {
    let Some(a) = TestServer::start(backend).await else {
        return;
    };
    let b = TestServer::start_on_url(&a.database_url).await;
    let admin = a.login().await;
    let delta = |since: &Value| {
        let mut body = support::sync_body("quiet-phone", "delta", json!([]));
        body["filters"] = json!({ "since": since });
        body
    };
    let (status, first) = a
        .post_json(
            &admin,
            "/api/v1/sync/",
            &support::sync_body("quiet-phone", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    // Two empty deltas: the second is answered from the first's page, with the
    // watermark read for it (current, so later than the first's).
    let (_, empty) = a
        .post_json(&admin, "/api/v1/sync/", &delta(&first["server_time"]))
        .await;
    assert_eq!(empty["changes"], json!([]), "{empty}");
    let (_, again) = a
        .post_json(&admin, "/api/v1/sync/", &delta(&empty["server_time"]))
        .await;
    assert_eq!(again["changes"], json!([]), "{again}");
    let time = |v: &Value| {
        inbetweenies_proto::Timestamp::parse(v["server_time"].as_str().expect("server_time"))
            .expect("a time")
    };
    assert!(time(&again) > time(&empty), "{again} after {empty}");
    assert_eq!(again["state_digest"], empty["state_digest"]);
    // A write through B; the same delta through A has it.
    let (status, pushed) = b
        .post_json(
            &admin,
            "/api/v1/sync/",
            &support::sync_body(
                "other-phone",
                "delta",
                json!([support::create_change("q-1", "note", "from B", json!({}))]),
            ),
        )
        .await;
    assert_eq!(status, 200, "{pushed}");
    let (status, after) = a
        .post_json(&admin, "/api/v1/sync/", &delta(&again["server_time"]))
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = after["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["entity"]["id"].as_str())
        .collect();
    assert_eq!(ids, ["q-1"], "{after}");
    assert_ne!(after["state_digest"], again["state_digest"]);
    assert_eq!(after["state_digest"], pushed["state_digest"]);
    b.shutdown().await.expect("B stops");
    a.shutdown().await.expect("A stops");
}

on_both_backends!(a_quiet_delta_sees_a_write_through_another_server);
