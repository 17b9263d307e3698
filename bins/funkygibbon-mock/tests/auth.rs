//! Auth: login, token introspection and refresh, expiry, guest grants and their read-only permission, the login rate limit.

mod support;

use funkygibbon_mock::Claims;
use inbetweenies_proto::Timestamp;
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer, PASSWORD};

fn now_secs() -> i64 {
    Timestamp::now().unix_micros() / 1_000_000
}

async fn login_me_refresh(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let (status, body) = s
        .post_json(
            "",
            "/api/v1/auth/admin/login",
            &json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 604_800);
    assert_eq!(body["role"], "admin");
    let token = body["access_token"].as_str().expect("token").to_owned();

    let (status, me) = s.get_json(&token, "/api/v1/auth/me").await;
    assert_eq!(status, 200);
    assert_eq!(me["user_id"], "admin");
    assert_eq!(
        me["permissions"],
        json!(["read", "write", "delete", "configure"])
    );
    let exp = me["expires_at"].as_i64().expect("expires_at");
    assert!((exp - now_secs() - 604_800).abs() <= 5);

    let (status, fresh) = s
        .post_json(&token, "/api/v1/auth/refresh", &Value::Null)
        .await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(fresh["role"], "admin");
    let (status, _) = s
        .get_json(
            fresh["access_token"].as_str().expect("token"),
            "/api/v1/auth/me",
        )
        .await;
    assert_eq!(status, 200);

    // Wrong password, missing and empty password.
    let (status, body) = s
        .post_json("", "/api/v1/auth/admin/login", &json!({"password": "nope"}))
        .await;
    assert_eq!(
        (status, body["detail"].clone()),
        (401, json!("Invalid password"))
    );
    let (status, body) = s
        .post_json("", "/api/v1/auth/admin/login", &json!({}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "missing");
    let (status, body) = s
        .post_json("", "/api/v1/auth/admin/login", &json!({"password": ""}))
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["type"], "string_too_short");
    s.shutdown().await.expect("shutdown");
}

async fn every_protected_endpoint_needs_a_token(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let gets = [
        "/api/v1/auth/me",
        "/api/v1/auth/guest/list",
        "/api/v1/sync/status?device_id=d",
        "/api/v1/sync/conflicts",
        "/api/v1/graph/entities",
        "/api/v1/graph/entities/x",
        "/api/v1/graph/entities/x/versions",
        "/api/v1/graph/entities/x/connected",
        "/api/v1/graph/relationships",
        "/api/v1/graph/statistics",
    ];
    for path in gets {
        let (status, body) = s.get_json("", path).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["detail"], "Not authenticated", "{path}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{path}");
    }
    let posts = [
        "/api/v1/auth/refresh",
        "/api/v1/auth/guest/generate-qr",
        "/api/v1/auth/guest/revoke",
        "/api/v1/sync/",
        "/api/v1/sync",
        "/api/v1/sync/request",
        "/api/v1/sync/push",
        "/api/v1/sync/ack",
        "/api/v1/sync/conflicts/1/resolve",
        "/api/v1/graph/entities",
        "/api/v1/graph/relationships",
        "/api/v1/graph/search",
        "/api/v1/graph/path",
    ];
    for path in posts {
        // Auth is checked before the body (reference vector 68).
        let (status, body) = s.post_json("", path, &json!({"x": 1})).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["error"]["code"], "UNAUTHORIZED", "{path}");
    }
    // Open endpoints.
    assert_eq!(s.get_json("", "/").await.0, 200);
    assert_eq!(s.get_json("", "/health").await.0, 200);
    s.shutdown().await.expect("shutdown");
}

async fn bad_and_expired_tokens(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let now = now_secs();
    let expired = s.handle.sign(&Claims {
        sub: "admin".into(),
        role: "admin".into(),
        permissions: vec!["read".into(), "write".into()],
        exp: now - 1,
        iat: now - 100,
    });
    let res = s
        .http
        .get(s.url("/api/v1/auth/me"))
        .bearer_auth(&expired)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "AUTH_EXPIRED");
    assert_eq!(body["detail"], "Invalid or expired token");

    let other = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &Claims {
            sub: "admin".into(),
            role: "admin".into(),
            permissions: vec!["write".into()],
            exp: now + 600,
            iat: now,
        },
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-server-secret"),
    )
    .expect("sign");
    for token in [other.as_str(), "not-a-jwt"] {
        let (status, body) = s.get_json(token, "/api/v1/auth/me").await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    }
    let res = s
        .http
        .get(s.url("/api/v1/auth/me"))
        .header("Authorization", format!("Basic {}", s.handle.admin_token()))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 401, "only the bearer scheme is accepted");
    s.shutdown().await.expect("shutdown");
}

async fn guests_read_but_never_write(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    // Seed one entity as admin.
    let (status, created) = s
        .post_json(
            &admin,
            "/api/v1/graph/entities",
            &json!({"entity_type": "room", "name": "Hall"}),
        )
        .await;
    assert_eq!(status, 200, "{created}");
    let id = created["entity"]["id"].as_str().expect("id").to_owned();

    let (status, qr) = s
        .post_json(
            &admin,
            "/api/v1/auth/guest/generate-qr",
            &json!({"duration_hours": 2}),
        )
        .await;
    assert_eq!(status, 200, "{qr}");
    assert_eq!(qr["qr_data"]["type"], "guest_access");
    assert_eq!(qr["qr_data"]["permissions"], json!(["read"]));
    assert_eq!(qr["qr_data"]["version"], "1.0");
    assert!(qr["qr_code"]
        .as_str()
        .expect("png")
        .starts_with("iVBORw0KGgo"));
    let expires_in = qr["expires_in"].as_i64().expect("expires_in");
    assert!((7190..=7200).contains(&expires_in), "{expires_in}");
    let grant = qr["qr_data"]["token"].as_str().expect("grant").to_owned();

    let (status, verified) = s
        .post_json("", "/api/v1/auth/guest/verify", &json!({"token": grant}))
        .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["role"], "guest");
    let guest = verified["access_token"].as_str().expect("jwt").to_owned();
    let (_, me) = s.get_json(&guest, "/api/v1/auth/me").await;
    assert_eq!(me["permissions"], json!(["read"]));
    assert!(me["user_id"].as_str().expect("sub").starts_with("guest_"));

    // Reads work.
    let (status, pulled) = s
        .post_json(
            &guest,
            "/api/v1/sync/",
            &sync_body("guest-phone", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200, "{pulled}");
    assert_eq!(pulled["changes"].as_array().map(Vec::len), Some(1));
    for path in [
        "/api/v1/graph/entities".to_owned(),
        format!("/api/v1/graph/entities/{id}"),
        "/api/v1/graph/statistics".to_owned(),
        "/api/v1/sync/conflicts".to_owned(),
        "/api/v1/sync/status?device_id=guest-phone".to_owned(),
    ] {
        assert_eq!(s.get_json(&guest, &path).await.0, 200, "{path}");
    }
    assert_eq!(
        s.post_json(&guest, "/api/v1/graph/search", &json!({"query": "Hall"}))
            .await
            .0,
        200
    );
    assert_eq!(
        s.post_json(
            &guest,
            "/api/v1/sync/request",
            &json!({"type": "sync_request", "client_id": "g"})
        )
        .await
        .0,
        200
    );

    // Writes are refused, and nothing is written.
    let digest_before = s.handle.store().state_digest().await.expect("digest");
    let writes: Vec<(&str, Value)> = vec![
        (
            "/api/v1/sync/",
            sync_body(
                "guest-phone",
                "delta",
                json!([create_change("g1", "note", "guest note", json!({}))]),
            ),
        ),
        (
            "/api/v1/sync/push",
            json!({"type": "sync_push", "client_id": "g", "changes": [{
            "entity_type": "note", "entity_id": "g2", "operation": "create",
            "data": {"name": "x", "content": {}}, "client_sync_id": "2026-01-01T00:00:00.000000+00:00-000001-g"}]}),
        ),
        (
            "/api/v1/graph/entities",
            json!({"entity_type": "note", "name": "x"}),
        ),
        (
            "/api/v1/graph/relationships",
            json!({"source_id": id, "target_id": id, "relationship_type": "part_of"}),
        ),
        (
            "/api/v1/sync/conflicts/1/resolve",
            json!({"resolution": "local"}),
        ),
    ];
    for (path, body) in writes {
        let (status, answer) = s.post_json(&guest, path, &body).await;
        assert_eq!(status, 403, "{path}: {answer}");
        assert_eq!(answer["error"]["code"], "FORBIDDEN", "{path}");
    }
    let (status, _) = s
        .put_json(
            &guest,
            &format!("/api/v1/graph/entities/{id}"),
            &json!({"name": "x"}),
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(
        s.handle.store().state_digest().await.expect("digest"),
        digest_before
    );

    // Admin-only endpoints.
    let (status, body) = s
        .post_json(&guest, "/api/v1/auth/refresh", &Value::Null)
        .await;
    assert_eq!(
        (status, body["detail"].clone()),
        (403, json!("Only admin tokens can be refreshed"))
    );
    assert_eq!(
        s.post_json(&guest, "/api/v1/auth/guest/generate-qr", &json!({}))
            .await
            .0,
        403
    );
    assert_eq!(s.get_json(&guest, "/api/v1/auth/guest/list").await.0, 403);
    assert_eq!(
        s.post_json(
            &guest,
            "/api/v1/auth/guest/revoke",
            &json!({"token": grant})
        )
        .await
        .0,
        403
    );

    // List, then revoke: the guest JWT stops working at once.
    let (status, list) = s.get_json(&admin, "/api/v1/auth/guest/list").await;
    assert_eq!(status, 200);
    assert_eq!(list["count"], 1);
    assert_eq!(list["guests"][0]["active"], true);
    let (status, _) = s
        .post_json(
            &admin,
            "/api/v1/auth/guest/revoke",
            &json!({"token": grant}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = s.get_json(&guest, "/api/v1/auth/me").await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = s
        .post_json("", "/api/v1/auth/guest/verify", &json!({"token": grant}))
        .await;
    assert_eq!(status, 401);
    let (status, _) = s
        .post_json(
            &admin,
            "/api/v1/auth/guest/revoke",
            &json!({"token": "unknown"}),
        )
        .await;
    assert_eq!(status, 404);
    s.shutdown().await.expect("shutdown");
}

async fn login_rate_limit(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    for i in 0..5 {
        let (status, _) = s
            .post_json(
                "",
                "/api/v1/auth/admin/login",
                &json!({"password": format!("wrong-{i}")}),
            )
            .await;
        assert_eq!(status, 401, "attempt {i}");
    }
    // The sixth attempt is refused even with the right password.
    let res = s
        .http
        .post(s.url("/api/v1/auth/admin/login"))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    assert!((290..=300).contains(&retry), "{retry}");
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    // Other endpoints are not affected.
    assert_eq!(
        s.get_json(&s.handle.admin_token(), "/api/v1/auth/me")
            .await
            .0,
        200
    );
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    login_me_refresh,
    every_protected_endpoint_needs_a_token,
    bad_and_expired_tokens,
    guests_read_but_never_write,
    login_rate_limit,
);
