//! The login limiter under concurrency: 100 wrong logins at once give at most the
//! limit's worth of password checks, and the rest 429. Refreshing a token leaves the
//! old one valid until it expires (docs/SERVER.md "Authentication").

mod support;

use serde_json::{json, Value};
use support::{Backend, TestServer, PASSWORD};

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn metrics(s: &TestServer) -> String {
    s.http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

async fn concurrent_wrong_logins_check_at_most_the_limit(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| {
        c.with_login_limit(5, std::time::Duration::from_secs(300))
    })
    .await
    else {
        return;
    };
    let before = metric(
        &metrics(&s).await,
        "funkygibbon_login_password_checks_total ",
    );
    let mut tasks = Vec::new();
    for i in 0..100 {
        let http = s.http.clone();
        let url = s.url("/api/v1/auth/admin/login");
        tasks.push(tokio::spawn(async move {
            let res = http
                .post(url)
                .json(&json!({"password": format!("wrong-{i}")}))
                .send()
                .await
                .expect("login");
            let status = res.status().as_u16();
            let body: Value = res.json().await.expect("json");
            (status, body)
        }));
    }
    let (mut unauthorized, mut limited) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            401 => unauthorized += 1,
            429 => {
                assert_eq!(body["error"]["code"], "RATE_LIMITED");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(unauthorized, 5, "exactly the limit's worth are checked");
    assert_eq!(limited, 95);
    let checks = metric(
        &metrics(&s).await,
        "funkygibbon_login_password_checks_total ",
    ) - before;
    assert_eq!(checks, 5, "argon2 ran only for the attempts let through");
    // Still locked out: even the right password is not checked now.
    let res = s
        .http
        .post(s.url("/api/v1/auth/admin/login"))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    s.shutdown().await.expect("shutdown");
}

async fn a_refreshed_token_leaves_the_old_one_valid(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let old = s.login().await;
    // Tokens carry whole seconds: wait for the next so the new token differs.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = s.post_json(&old, "/api/v1/auth/refresh", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    let new = body["access_token"].as_str().expect("token").to_owned();
    assert_ne!(new, old);
    assert_eq!(s.get_json(&new, "/api/v1/auth/me").await.0, 200);
    assert_eq!(
        s.get_json(&old, "/api/v1/auth/me").await.0,
        200,
        "the old token is not revoked by a refresh"
    );
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    concurrent_wrong_logins_check_at_most_the_limit,
    a_refreshed_token_leaves_the_old_one_valid,
);
