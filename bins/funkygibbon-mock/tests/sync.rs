//! Sync: push and pull, paging under concurrent writes, cursors, sync types, status, the conflict queue, the five-step flow.

mod support;

use std::collections::HashSet;

use inbetweenies_conflict::{ResolverConfig, Strategy};
use inbetweenies_proto::Version;
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer};

fn entity_change(
    change_type: &str,
    id: &str,
    version: &str,
    parents: &[&str],
    name: &str,
    content: Value,
) -> Value {
    json!({
        "change_type": change_type,
        "entity": {"id": id, "version": version, "entity_type": "device", "name": name, "content": content,
                   "source_type": "manual", "user_id": "tester", "parent_versions": parents},
        "relationships": [],
    })
}

fn ids_of(body: &Value) -> Vec<String> {
    body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(|c| c["entity"]["id"].as_str().map(str::to_owned))
        .collect()
}

async fn push_pull_and_status(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let room = create_change("room-1", "room", "Kitchen", json!({"floor": 1}));
    let mut lamp = create_change("lamp-1", "device", "Lamp", json!({"power": "on"}));
    lamp["relationships"] = json!([{"id": "rel-1", "from_entity_id": "lamp-1",
        "from_entity_version": lamp["entity"]["version"], "to_entity_id": "room-1",
        "to_entity_version": room["entity"]["version"], "relationship_type": "located_in", "properties": {}}]);
    // A client of this protocol: it declares relationship rows (PROTOCOL §5.12).
    let mut body = sync_body("phone", "delta", json!([room, lamp]));
    body["capabilities"] = json!(["relationship_rows"]);
    let (status, pushed) = s.post_json(&token, "/api/v1/sync/", &body).await;
    assert_eq!(status, 200, "{pushed}");
    assert_eq!(pushed["applied"], json!(["room-1", "lamp-1"]));
    assert_eq!(pushed["applied_relationships"], json!(["rel-1"]));
    assert_eq!(pushed["sync_stats"]["entities_synced"], 2);
    assert_eq!(pushed["sync_stats"]["relationships_synced"], 1);
    // Without since: the full current state, relationships included, in sequence order.
    let kinds: Vec<&str> = pushed["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            if c["entity"].is_null() {
                "rel"
            } else {
                "entity"
            }
        })
        .collect();
    assert_eq!(kinds, ["entity", "entity", "rel"]);
    let digest = pushed["state_digest"].as_str().expect("digest").to_owned();
    assert_eq!(
        digest,
        s.handle.store().state_digest().await.expect("digest")
    );
    let watermark = pushed["server_time"].clone();

    // Nothing new since the watermark.
    let mut delta = sync_body("tablet", "delta", json!([]));
    delta["filters"] = json!({"since": watermark});
    let (_, empty) = s.post_json(&token, "/api/v1/sync/", &delta).await;
    assert_eq!(empty["changes"], json!([]));
    assert_eq!(
        empty["state_digest"],
        digest.as_str(),
        "the digest is in every answer"
    );

    // An edit after the watermark is what the next delta returns.
    let v2 = Version::now("tester");
    let edit = entity_change(
        "update",
        "lamp-1",
        v2.as_str(),
        &[pushed["changes"][1]["entity"]["version"]
            .as_str()
            .expect("v")],
        "Lamp",
        json!({"power": "off"}),
    );
    let (status, _) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("phone", "delta", json!([edit])),
        )
        .await;
    assert_eq!(status, 200);
    let (_, after) = s.post_json(&token, "/api/v1/sync/", &delta).await;
    assert_eq!(ids_of(&after), ["lamp-1"]);
    assert_eq!(after["changes"][0]["entity"]["version"], v2.as_str());
    assert_ne!(after["state_digest"], digest.as_str());

    // entities / relationships sync types.
    let (_, only_entities) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("x", "entities", json!([])),
        )
        .await;
    assert!(only_entities["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .all(|c| !c["entity"].is_null()));
    let mut body = sync_body("x", "relationships", json!([]));
    body["capabilities"] = json!(["relationship_rows"]);
    let (_, only_rels) = s.post_json(&token, "/api/v1/sync/", &body).await;
    let rels = only_rels["changes"].as_array().expect("changes");
    assert_eq!(rels.len(), 1);
    assert!(rels[0]["entity"].is_null());
    assert_eq!(rels[0]["relationships"][0]["id"], "rel-1");

    let (status, st) = s
        .get_json(&token, "/api/v1/sync/status?device_id=phone")
        .await;
    assert_eq!(status, 200);
    assert_eq!(st["device_id"], "phone");
    assert_eq!(st["protocol_version"], "inbetweenies-v2");
    assert_eq!(st["sync_count"], 2, "{st}");
    assert!(st["last_seen"].is_string());
    assert!(st["last_ack"].is_null());
    assert_eq!(st["pending_conflicts"], 0);
    assert_eq!(st["state_digest"], after["state_digest"]);
    let (status, st) = s
        .get_json(&token, "/api/v1/sync/status?device_id=never-seen")
        .await;
    assert_eq!((status, st["sync_count"].clone()), (200, json!(0)));
    let (status, body) = s.get_json(&token, "/api/v1/sync/status").await;
    assert_eq!(status, 422);
    assert_eq!(body["detail"][0]["loc"], json!(["query", "device_id"]));
    s.shutdown().await.expect("shutdown");
}

async fn cursors(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_page_size(3)).await else {
        return;
    };
    let token = s.login().await;
    let changes: Vec<Value> = (0..7)
        .map(|i| create_change(&format!("c-{i}"), "note", &format!("n{i}"), json!({})))
        .collect();
    // Declaring a capability: the answer carries no acknowledged id past the page (§12.4).
    let mut body = sync_body("d", "full", json!(changes));
    body["capabilities"] = json!(["relationship_rows"]);
    let (_, first) = s.post_json(&token, "/api/v1/sync/", &body).await;
    assert_eq!(ids_of(&first), ["c-0", "c-1", "c-2"]);
    let cursor = first["cursor"]
        .as_str()
        .expect("a full page has a cursor")
        .to_owned();
    // Full ignores the cursor; delta honours it.
    let mut full = sync_body("d", "full", json!([]));
    full["cursor"] = json!(cursor);
    let (_, again) = s.post_json(&token, "/api/v1/sync/", &full).await;
    assert_eq!(ids_of(&again), ["c-0", "c-1", "c-2"]);
    let mut seen = ids_of(&first);
    let mut next = Some(cursor);
    let mut rounds = 0;
    while let Some(c) = next {
        rounds += 1;
        assert!(rounds < 10, "paging must end");
        let mut delta = sync_body("d", "delta", json!([]));
        delta["cursor"] = json!(c);
        let (status, page) = s.post_json(&token, "/api/v1/sync/", &delta).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids_of(&page));
        next = page["cursor"].as_str().map(str::to_owned);
    }
    assert_eq!(seen, (0..7).map(|i| format!("c-{i}")).collect::<Vec<_>>());
    for (cursor, status, code) in [
        ("abc", 400, "INVALID_REQUEST"),
        ("999999", 400, "INVALID_SYNC_STATE"),
    ] {
        let mut delta = sync_body("d", "delta", json!([]));
        delta["cursor"] = json!(cursor);
        let (got, body) = s.post_json(&token, "/api/v1/sync/", &delta).await;
        assert_eq!(got, status, "{cursor}: {body}");
        assert_eq!(body["error"]["code"], code);
        assert_eq!(body["error"]["field"], "cursor");
    }
    s.shutdown().await.expect("shutdown");
}

/// Paging (page size 7) while writers keep pushing: every entity is seen exactly once.
async fn paging_under_concurrent_writes(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_page_size(7)).await else {
        return;
    };
    let token = s.login().await;
    let seed: Vec<Value> = (0..30)
        .map(|i| create_change(&format!("seed-{i}"), "note", "seed", json!({})))
        .collect();
    assert_eq!(
        s.post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("w", "delta", json!(seed))
        )
        .await
        .0,
        200
    );

    let mut expected: HashSet<String> = (0..30).map(|i| format!("seed-{i}")).collect();
    // The writers start once the reader holds its first page, so they write while it pages.
    let (go, started) = tokio::sync::watch::channel(false);
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (http, url, token) = (s.http.clone(), s.url("/api/v1/sync/"), token.clone());
            let mut started = started.clone();
            tokio::spawn(async move {
                started.wait_for(|go| *go).await.expect("start signal");
                let mut ids = Vec::new();
                for batch in 0..15 {
                    let changes: Vec<Value> = (0..4)
                        .map(|i| {
                            let id = format!("w{w}-{batch}-{i}");
                            ids.push(id.clone());
                            create_change(
                                &id,
                                "device",
                                "written meanwhile",
                                json!({"batch": batch}),
                            )
                        })
                        .collect();
                    let res = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&sync_body(&format!("writer-{w}"), "delta", json!(changes)))
                        .send()
                        .await
                        .expect("push");
                    assert_eq!(res.status(), 200);
                }
                ids
            })
        })
        .collect();

    let mut seen: Vec<String> = Vec::new();
    let mut request = sync_body("reader", "full", json!([]));
    let mut watermark = Value::Null;
    for _ in 0..500 {
        let (status, page) = s.post_json(&token, "/api/v1/sync/", &request).await;
        assert_eq!(status, 200, "{page}");
        seen.extend(ids_of(&page));
        let _ = go.send(true);
        match page["cursor"].as_str() {
            Some(c) => {
                request = sync_body("reader", "delta", json!([]));
                request["cursor"] = json!(c);
            }
            None => {
                watermark = page["server_time"].clone();
                break;
            }
        }
    }
    assert!(watermark.is_string(), "the pass ended");
    for w in writers {
        expected.extend(w.await.expect("writer"));
    }
    // Catch up from the watermark once the writers are done.
    let mut request = sync_body("reader", "delta", json!([]));
    request["filters"] = json!({"since": watermark});
    for round in 0.. {
        assert!(round < 500, "catch-up must end");
        let (_, page) = s.post_json(&token, "/api/v1/sync/", &request).await;
        seen.extend(ids_of(&page));
        match page["cursor"].as_str() {
            Some(c) => request["cursor"] = json!(c),
            None => break,
        }
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no entity row was sent twice");
    assert_eq!(unique, expected, "no entity was skipped");
    s.shutdown().await.expect("shutdown");
}

async fn manual_conflict_queue(backend: Backend) {
    let manual = ResolverConfig::default().with_default_strategy(Strategy::Manual);
    let Some(s) = TestServer::start_with(backend, |c| c.with_resolver(manual)).await else {
        return;
    };
    let token = s.login().await;
    let v1 = "2026-01-01T10:00:00.000000+00:00-000001-alice";
    let base = entity_change("create", "dev-1", v1, &[], "Lamp", json!({"power": "on"}));
    assert_eq!(
        s.post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("a", "delta", json!([base]))
        )
        .await
        .0,
        200
    );

    // Two edits from the same parent: the second is queued for review.
    let queue_one = |n: u32| {
        let a = format!("2026-01-01T10:0{n}:00.000000+00:00-00000{n}-alice");
        let b = format!("2026-01-01T10:0{n}:30.000000+00:00-00000{n}-bob");
        (a, b)
    };
    let mut parent = v1.to_owned();
    let mut ids = Vec::new();
    for n in 1..=3 {
        let (va, vb) = queue_one(n);
        let a = entity_change(
            "update",
            "dev-1",
            &va,
            &[&parent],
            "Lamp",
            json!({"power": format!("a{n}")}),
        );
        assert_eq!(
            s.post_json(
                &token,
                "/api/v1/sync/",
                &sync_body("a", "delta", json!([a]))
            )
            .await
            .0,
            200
        );
        let b = entity_change(
            "update",
            "dev-1",
            &vb,
            &[&parent],
            "Lamp (bob)",
            json!({"power": format!("b{n}")}),
        );
        let (status, answer) = s
            .post_json(
                &token,
                "/api/v1/sync/",
                &sync_body("b", "delta", json!([b])),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["applied"],
            json!(["dev-1"]),
            "a queued change is acknowledged"
        );
        assert_eq!(answer["conflicts"][0]["reason"], "manual", "{answer}");
        let (_, list) = s.get_json(&token, "/api/v1/sync/conflicts").await;
        let pending = list["conflicts"].as_array().expect("conflicts");
        assert_eq!(pending.len(), 1, "{list}");
        assert_eq!(pending[0]["status"], "pending");
        assert_eq!(pending[0]["server_version"], va.as_str());
        assert_eq!(pending[0]["client_version"], vb.as_str());
        assert_eq!(pending[0]["device_id"], "b");
        let (_, st) = s.get_json(&token, "/api/v1/sync/status?device_id=b").await;
        assert_eq!(st["pending_conflicts"], 1);
        let id = pending[0]["id"].as_i64().expect("id");
        ids.push(id);
        let (status, resolved) = match n {
            1 => s.post_json(&token, &format!("/api/v1/sync/conflicts/{id}/resolve"), &json!({"resolution": "remote"})).await,
            2 => s.post_json(&token, &format!("/api/v1/sync/conflicts/{id}/resolve"), &json!({"resolution": "custom", "content": {"power": "merged"}, "name": "Lamp (merged)"})).await,
            _ => s.post_json(&token, &format!("/api/v1/sync/conflicts/{id}/resolve"), &json!({"resolution": "dismiss"})).await,
        };
        assert_eq!(status, 200, "{resolved}");
        let latest = s
            .handle
            .store()
            .entity(&"dev-1".into())
            .await
            .expect("read")
            .expect("entity");
        match n {
            1 => {
                assert_eq!(resolved["conflict"]["status"], "resolved");
                assert_eq!(latest.content["power"], "b1");
                let parents: Vec<&str> =
                    latest.parent_versions.iter().map(Version::as_str).collect();
                assert_eq!(
                    parents,
                    [va.as_str(), vb.as_str()],
                    "the resolution supersedes both sides"
                );
            }
            2 => {
                assert_eq!(latest.content["power"], "merged");
                assert_eq!(latest.name, "Lamp (merged)");
            }
            _ => {
                assert_eq!(resolved["conflict"]["status"], "dismissed");
                assert_eq!(
                    latest.version.as_str(),
                    va,
                    "dismissing keeps the automatic outcome"
                );
            }
        }
        parent = latest.version.as_str().to_owned();
        // Deciding the same conflict twice is refused.
        let (status, again) = s
            .post_json(
                &token,
                &format!("/api/v1/sync/conflicts/{id}/resolve"),
                &json!({"resolution": "local"}),
            )
            .await;
        assert_eq!(status, 409, "{again}");
        assert_eq!(again["error"]["code"], "SYNC_CONFLICT");
    }
    let (_, none) = s.get_json(&token, "/api/v1/sync/conflicts").await;
    assert_eq!(none, json!({"conflicts": []}));
    let (_, all) = s
        .get_json(&token, "/api/v1/sync/conflicts?status=all")
        .await;
    assert_eq!(all["conflicts"].as_array().map(Vec::len), Some(3));
    let (status, _) = s
        .get_json(&token, "/api/v1/sync/conflicts?status=weird")
        .await;
    assert_eq!(status, 422);
    for path in [
        "/api/v1/sync/conflicts/abc/resolve",
        "/api/v1/sync/conflicts/424242/resolve",
    ] {
        let (status, body) = s
            .post_json(&token, path, &json!({"resolution": "local"}))
            .await;
        assert_eq!(
            (status, body["detail"].clone()),
            (404, json!("Conflict not found")),
            "{path}"
        );
    }
    let (status, body) = s
        .post_json(
            &token,
            &format!("/api/v1/sync/conflicts/{}/resolve", ids[0]),
            &json!({"resolution": "sideways"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    s.shutdown().await.expect("shutdown");
}

async fn five_step_flow(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_page_size(2)).await else {
        return;
    };
    let token = s.login().await;
    let (status, delta) = s
        .post_json(
            &token,
            "/api/v1/sync/request",
            &json!({"type": "sync_request", "client_id": "seed-client"}),
        )
        .await;
    assert_eq!(status, 200, "{delta}");
    assert_eq!(delta["type"], "sync_delta");
    assert_eq!(delta["changes"], json!([]));
    assert_eq!(delta["more"], false);
    let watermark = delta["server_time"].clone();

    let versions: Vec<Version> = (0..3).map(|_| Version::now("seed-user")).collect();
    let changes: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"entity_type": "device", "entity_id": format!("f-{i}"), "operation": "create",
            "data": {"name": format!("Flow {i}"), "content": {"n": i}, "user_id": "seed-user"}, "client_sync_id": v}))
        .collect();
    let (status, result) = s
        .post_json(
            &token,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "seed-client", "changes": changes}),
        )
        .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["type"], "sync_result");
    let applied = result["applied"].as_array().expect("applied");
    assert_eq!(applied.len(), 3);
    for (a, v) in applied.iter().zip(&versions) {
        assert_eq!(a["status"], "applied");
        assert_eq!(a["client_sync_id"], v.as_str());
        assert_eq!(a["server_sync_id"], v.as_str());
    }

    // Pull since the watermark, two per page.
    let mut got = Vec::new();
    let mut req = json!({"type": "sync_request", "client_id": "seed-client", "last_sync": watermark, "include_deleted": true});
    let mut last_time = Value::Null;
    for round in 0.. {
        assert!(round < 10, "paging must end");
        let (status, page) = s.post_json(&token, "/api/v1/sync/request", &req).await;
        assert_eq!(status, 200, "{page}");
        for c in page["changes"].as_array().expect("changes") {
            assert_eq!(c["operation"], "update");
            assert!(c["data"]["content"].is_object());
            got.push(c["entity_id"].as_str().expect("id").to_owned());
        }
        last_time = page["server_time"].clone();
        if page["more"] == true {
            req["cursor"] = page["cursor"].clone();
        } else {
            assert!(page.get("cursor").is_none());
            break;
        }
    }
    assert_eq!(got, ["f-0", "f-1", "f-2"]);

    // A stale edit loses to a newer one: reported as a conflict, still acknowledged.
    let newer = Version::now("other");
    let ff = json!({"entity_type": "device", "entity_id": "f-0", "operation": "update",
        "data": {"name": "newer", "parent_versions": [versions[0]]}, "client_sync_id": newer});
    assert_eq!(
        s.post_json(
            &token,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "other", "changes": [ff]})
        )
        .await
        .0,
        200
    );
    let stale = json!({"entity_type": "device", "entity_id": "f-0", "operation": "update",
        "data": {"name": "stale", "parent_versions": [versions[0]]}, "client_sync_id": "2020-01-01T00:00:00.000000+00:00-000001-seed-user"});
    let (_, result) = s
        .post_json(
            &token,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "seed-client", "changes": [stale]}),
        )
        .await;
    assert_eq!(result["applied"][0]["status"], "conflict", "{result}");
    assert_eq!(result["applied"][0]["server_sync_id"], newer.as_str());
    let conflict = &result["conflicts"][0];
    assert_eq!(conflict["resolution"], "server_wins");
    assert_eq!(conflict["reason"], "newer_on_server");
    assert_eq!(conflict["server_version"]["sync_id"], newer.as_str());
    assert_eq!(
        conflict["client_version"]["sync_id"],
        "2020-01-01T00:00:00.000000+00:00-000001-seed-user"
    );

    // Delete, then the tombstone shows only with include_deleted.
    let del = json!({"entity_type": "device", "entity_id": "f-1", "operation": "delete",
        "data": {"parent_versions": [versions[1]]}, "client_sync_id": Version::now("seed-user")});
    assert_eq!(
        s.post_json(
            &token,
            "/api/v1/sync/push",
            &json!({"type": "sync_push", "client_id": "seed-client", "changes": [del]})
        )
        .await
        .0,
        200
    );
    let (_, hidden) = s
        .post_json(
            &token,
            "/api/v1/sync/request",
            &json!({"type": "sync_request", "client_id": "c", "last_sync": last_time}),
        )
        .await;
    assert!(hidden["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .all(|c| c["entity_id"] != "f-1"));
    let (_, shown) = s.post_json(&token, "/api/v1/sync/request", &json!({"type": "sync_request", "client_id": "c", "last_sync": last_time, "include_deleted": true})).await;
    assert!(
        shown["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .any(|c| c["entity_id"] == "f-1" && c["operation"] == "delete"),
        "{shown}"
    );

    // The ack records the confirmed watermark, shown by status.
    let (status, ack) = s.post_json(&token, "/api/v1/sync/ack", &json!({"type": "sync_ack", "client_id": "seed-client", "sync_completed_at": last_time})).await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["status"], "ok");
    let (_, st) = s
        .get_json(&token, "/api/v1/sync/status?device_id=seed-client")
        .await;
    assert_eq!(st["last_ack"], last_time);
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(
    push_pull_and_status,
    cursors,
    paging_under_concurrent_writes,
    manual_conflict_queue,
    five_step_flow,
);

/// Two servers on one database (as several server processes share PostgreSQL):
/// a write through one is in the other's pages and digest at once.
async fn two_servers_share_one_database(backend: Backend) {
    let Some(a) = TestServer::start(backend).await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let b_base = format!("http://{}", listener.local_addr().expect("addr"));
    let config = funkygibbon_mock::ServerConfig::new(a.database_url.clone())
        .with_admin_password(support::PASSWORD)
        .with_jwt_secret(support::SECRET);
    let (stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
    let (ready, handle_b) = tokio::sync::oneshot::channel();
    let server_b = tokio::spawn(funkygibbon_mock::serve_with_handle(
        listener,
        config,
        async move {
            let _ = stopped_b.await;
        },
        ready,
    ));
    let handle_b = handle_b.await.expect("server b started");
    let token = a.login().await;

    let (_, before) = a
        .post_json(&token, "/api/v1/sync/", &sync_body("x", "full", json!([])))
        .await;
    let res = a
        .http
        .post(format!("{b_base}/api/v1/sync/"))
        .bearer_auth(handle_b.admin_token())
        .json(&sync_body(
            "via-b",
            "delta",
            json!([create_change(
                "shared-1",
                "room",
                "Written via B",
                json!({})
            )]),
        ))
        .send()
        .await
        .expect("push via b");
    let (status, pushed) = support::read(res).await;
    assert_eq!(status, 200, "{pushed}");
    let (_, after) = a
        .post_json(&token, "/api/v1/sync/", &sync_body("x", "full", json!([])))
        .await;
    assert_eq!(
        ids_of(&after),
        ["shared-1"],
        "server A pages the row server B wrote"
    );
    assert_ne!(
        after["state_digest"], before["state_digest"],
        "A's cached digest follows B's write"
    );
    assert_eq!(after["state_digest"], pushed["state_digest"]);
    let _ = stop_b.send(());
    server_b
        .await
        .expect("join")
        .expect("server b stops cleanly");
    a.shutdown().await.expect("shutdown");
}

on_both_backends!(two_servers_share_one_database);
