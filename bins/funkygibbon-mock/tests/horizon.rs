//! `--history-horizon` (docs/SERVER.md, PROTOCOL §15.3): the server compacts by itself
//! periodically, keeps the latest row, and answers a cursor or watermark behind the
//! horizon `INVALID_SYNC_STATE`; the admin endpoint checks its input (both backends).

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{sync_body, Backend, TestServer};

async fn versions(s: &TestServer, token: &str, id: &str) -> usize {
    let (status, body) = s
        .get_json(token, &format!("/api/v1/graph/entities/{id}/versions"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["count"].as_u64().expect("count") as usize
}

async fn periodic_compaction_and_positions_behind_it(backend: Backend) {
    let Some(s) =
        TestServer::start_with(backend, |c| c.with_history_horizon(Duration::from_secs(1))).await
    else {
        return;
    };
    let token = s.login().await;
    // An early watermark and cursor: a sync before anything was written.
    let (status, first) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("old", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200, "{first}");
    let early = first["server_time"].clone();
    let (status, e) = s
        .post_json(
            &token,
            "/api/v1/graph/entities",
            &json!({"entity_type": "note", "name": "n", "content": {"v": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{e}");
    let id = e["entity"]["id"].as_str().expect("id").to_owned();
    for v in 2..=3 {
        let (status, body) = s
            .put_json(
                &token,
                &format!("/api/v1/graph/entities/{id}"),
                &json!({"content": {"v": v}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(versions(&s, &token, &id).await, 3);
    // The periodic run (every second for a one-second horizon) prunes the two
    // superseded versions; bounded wait.
    let deadline = Instant::now() + Duration::from_secs(20);
    while versions(&s, &token, &id).await > 1 {
        assert!(
            Instant::now() < deadline,
            "no periodic compaction within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, body) = s
        .get_json(&token, &format!("/api/v1/graph/entities/{id}"))
        .await;
    assert_eq!(body["entity"]["content"]["v"], 3, "the latest row is kept");

    // The early watermark and a low cursor are behind the horizon.
    let mut stale = sync_body("old", "delta", json!([]));
    stale["filters"] = json!({"since": early});
    let (status, body) = s.post_json(&token, "/api/v1/sync/", &stale).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_SYNC_STATE");
    assert_eq!(body["error"]["field"], "filters.since");
    let mut stale = sync_body("old", "delta", json!([]));
    stale["cursor"] = json!("1");
    let (status, body) = s.post_json(&token, "/api/v1/sync/", &stale).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "INVALID_SYNC_STATE");
    assert_eq!(body["error"]["field"], "cursor");
    // A full pull is answered.
    let (status, body) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("old", "full", json!([])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    s.shutdown().await.expect("shutdown");
}

async fn compact_endpoint_checks_its_input(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let path = "/api/v1/admin/history/compact";
    for (body, field) in [
        (Value::Null, "older_than"),
        (json!({"older_than": "soon"}), "older_than"),
        (json!({"older_than": 5}), "older_than"),
        (json!({"before": "yesterday"}), "before"),
        (json!({"before": "2999-01-01T00:00:00Z"}), "before"),
        (
            json!({"before": "2020-01-01T00:00:00Z", "older_than": "1d"}),
            "before",
        ),
    ] {
        let res = s
            .http
            .post(s.url(path))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let (status, answer) = support::read(res).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    let (status, answer) = s
        .post_json(&token, path, &json!({"before": "2020-01-01T00:00:00Z"}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["pruned_versions"], 0);
    // Without a token: 401.
    let res = s.http.post(s.url(path)).send().await.expect("request");
    assert_eq!(res.status().as_u16(), 401);
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    periodic_compaction_and_positions_behind_it,
    compact_endpoint_checks_its_input,
);
