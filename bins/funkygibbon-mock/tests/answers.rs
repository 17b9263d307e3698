//! What one sync answer may carry where the sync rules meet: pages read ahead, the server's vector clock, the rows behind an acknowledgement, and the five-step endpoints' validation.

mod support;

use inbetweenies_proto::Version;
use serde_json::{json, Value};
use support::{sync_body, Backend, TestServer};

fn entity_change(
    change_type: &str,
    id: &str,
    version: &Version,
    parents: &[&Version],
    content: Value,
) -> Value {
    json!({
        "change_type": change_type,
        "entity": {"id": id, "version": version, "entity_type": "device", "name": id, "content": content,
                   "source_type": "manual", "user_id": "tester", "parent_versions": parents},
        "relationships": [],
    })
}

/// `(id, version)` of every entity row of an answer, in order.
fn rows(body: &Value) -> Vec<(String, String)> {
    body["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["entity"].is_object())
        .map(|c| {
            (
                c["entity"]["id"].as_str().expect("id").to_owned(),
                c["entity"]["version"].as_str().expect("version").to_owned(),
            )
        })
        .collect()
}

fn pull(device: &str, cursor: Option<&Value>) -> Value {
    let mut body = sync_body(device, "delta", json!([]));
    if let Some(c) = cursor {
        body["cursor"] = c.clone();
    }
    body
}

/// A page read ahead for one device's pull is never handed to another device, nor
/// after a write committed since it was read: device b pushes `power=on` (acknowledged)
/// and then pulls the page c's pull had read ahead before that write; b must get its
/// own write and the digest of the state it is in, never c's stale page.
async fn read_ahead_page_does_not_revert_own_acknowledged_write(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_page_size(2)).await else {
        return;
    };
    let token = s.login().await;
    let v1 = Version::now("tester");
    let creates: Vec<Value> = ["e1", "e2", "e3"]
        .iter()
        .map(|id| entity_change("create", id, &v1, &[], json!({"power": "off"})))
        .collect();
    let (status, body) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("a", "delta", json!(creates)),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // c pulls page 1; the server reads page 2 ahead for c, and c goes away.
    let (status, page1) = s.post_json(&token, "/api/v1/sync/", &pull("c", None)).await;
    assert_eq!(status, 200, "{page1}");
    assert_eq!(page1["cursor"], "2");
    s.handle.wait_for_read_ahead(1).await;

    // b pushes power=on for e3 and pulls from the beginning, then asks for page 2.
    let v2 = Version::now("tester");
    let on = entity_change("update", "e3", &v2, &[&v1], json!({"power": "on"}));
    let (status, pushed) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("b", "delta", json!([on])),
        )
        .await;
    assert_eq!(status, 200, "{pushed}");
    assert_eq!(pushed["applied"], json!(["e3"]));
    assert_eq!(pushed["cursor"], "2");
    let (status, page2) = s
        .post_json(&token, "/api/v1/sync/", &pull("b", Some(&pushed["cursor"])))
        .await;
    assert_eq!(status, 200, "{page2}");
    assert_eq!(
        rows(&page2),
        [("e3".to_owned(), v2.as_str().to_owned())],
        "b's page 2 holds its own acknowledged write"
    );
    let digest = s.handle.store().state_digest().await.expect("digest");
    assert_eq!(page2["state_digest"], digest.as_str());
    assert_eq!(page2["cursor"], Value::Null);

    // c comes back for its page 2: read afresh too (the store moved since).
    let (status, c2) = s
        .post_json(&token, "/api/v1/sync/", &pull("c", Some(&page1["cursor"])))
        .await;
    assert_eq!(status, 200, "{c2}");
    assert_eq!(rows(&c2), [("e3".to_owned(), v2.as_str().to_owned())]);
    assert_eq!(c2["state_digest"], digest.as_str());
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(read_ahead_page_does_not_revert_own_acknowledged_write);

/// One request carrying 300,000 vector-clock entries leaves every later answer small;
/// a guest's clock is never merged; a device that syncs with a write token still has
/// its own entry advanced.
async fn vector_clock_is_bounded_whatever_callers_send(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let admin = s.login().await;
    let guest = s.guest_token(&admin).await;
    let with_clock = |device: &str, clocks: Value| {
        let mut body = sync_body(device, "delta", json!([]));
        body["vector_clock"] = json!({"clocks": clocks});
        body
    };
    let (status, body) = s
        .post_json(
            &admin,
            "/api/v1/sync/",
            &with_clock("phone", json!({"phone": "3"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["vector_clock"], json!({"clocks": {"phone": "3"}}));

    let junk: serde_json::Map<String, Value> = (0..300_000)
        .map(|i| (format!("junk-device-{i:07}"), Value::from("1")))
        .collect();
    // 300,000 entries with a token that may write; a thousand of them with a guest's.
    for (token, n) in [(&admin, junk.len()), (&guest, 1_000)] {
        let some: serde_json::Map<String, Value> = junk
            .iter()
            .take(n)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let (status, body) = s
            .post_json(
                token,
                "/api/v1/sync/",
                &with_clock("attacker", Value::Object(some)),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let n = body["vector_clock"]["clocks"]
            .as_object()
            .expect("clocks")
            .len();
        assert_eq!(n, 1, "only the one device that synced with its own entry");
    }
    let (status, body) = s
        .post_json(
            &guest,
            "/api/v1/sync/",
            &with_clock("visitor", json!({"visitor": "9", "phone": "99"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["vector_clock"]["clocks"].get("visitor"),
        None,
        "a guest's own entry is not merged"
    );
    assert_eq!(
        body["vector_clock"]["clocks"]["phone"], "3",
        "nor its view of others"
    );

    let later = s
        .http
        .post(s.url("/api/v1/sync/"))
        .bearer_auth(&admin)
        .header("accept-encoding", "identity")
        .json(&with_clock("phone", json!({"phone": "4"})))
        .send()
        .await
        .expect("request");
    let text = later.text().await.expect("body");
    assert!(text.len() < 2_000, "a later answer is {} bytes", text.len());
    let body: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(
        body["vector_clock"]["clocks"]["phone"], "4",
        "a known device advances"
    );
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(vector_clock_is_bounded_whatever_callers_send);

/// One invalid change, sent once through each push endpoint: the entity fields as the
/// sync endpoint names them, and the same change in the five-step shape.
struct Invalid {
    what: &'static str,
    /// Replaces one field of a valid sync change's `entity` (or `change_type`).
    sync: fn(&mut Value),
    /// Replaces the same field of a valid five-step change.
    flow: fn(&mut Value),
}

const INVALID: &[Invalid] = &[
    Invalid {
        what: "a blank id",
        sync: |c| c["entity"]["id"] = json!(" "),
        flow: |c| c["entity_id"] = json!(" "),
    },
    Invalid {
        what: "an empty id",
        sync: |c| c["entity"]["id"] = json!(""),
        flow: |c| c["entity_id"] = json!(""),
    },
    Invalid {
        what: "a version that does not parse",
        sync: |c| c["entity"]["version"] = json!("garbage"),
        flow: |c| c["client_sync_id"] = json!("garbage"),
    },
    Invalid {
        what: "an unknown entity type",
        sync: |c| c["entity"]["entity_type"] = json!("spaceship"),
        flow: |c| c["entity_type"] = json!("spaceship"),
    },
    Invalid {
        what: "an unknown source type",
        sync: |c| c["entity"]["source_type"] = json!("telepathy"),
        flow: |c| c["data"]["source_type"] = json!("telepathy"),
    },
    Invalid {
        what: "content that is not an object",
        sync: |c| c["entity"]["content"] = json!([1, 2]),
        flow: |c| c["data"]["content"] = json!([1, 2]),
    },
    Invalid {
        what: "a name that is not a string",
        sync: |c| c["entity"]["name"] = json!(5),
        flow: |c| c["data"]["name"] = json!(5),
    },
    Invalid {
        what: "parent versions that are not a list",
        sync: |c| c["entity"]["parent_versions"] = json!("x"),
        flow: |c| c["data"]["parent_versions"] = json!("x"),
    },
    Invalid {
        what: "an unknown change type",
        sync: |c| c["change_type"] = json!("explode"),
        flow: |c| c["operation"] = json!("explode"),
    },
];

/// Every invalid change `POST /api/v1/sync/` refuses is refused by `/api/v1/sync/push`
/// with the same status and error code, and nothing is stored by either. The server is
/// strict (PROTOCOL §12.5), so unknown types and versions without a timestamp are
/// among the refused changes.
async fn five_step_push_validates_as_sync_does(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_strict(true)).await else {
        return;
    };
    let token = s.login().await;
    for case in INVALID {
        let version = Version::now("tester");
        let mut sync = entity_change("create", "x-1", &version, &[], json!({}));
        (case.sync)(&mut sync);
        let (sync_status, sync_body_) = s
            .post_json(
                &token,
                "/api/v1/sync/",
                &sync_body("d", "delta", json!([sync])),
            )
            .await;
        let mut flow = json!({"entity_type": "device", "entity_id": "x-1", "operation": "create",
            "data": {"name": "x", "content": {}}, "client_sync_id": version});
        (case.flow)(&mut flow);
        let (flow_status, flow_body) = s
            .post_json(
                &token,
                "/api/v1/sync/push",
                &json!({"type": "sync_push", "client_id": "d", "changes": [flow]}),
            )
            .await;
        assert!(
            (400..500).contains(&sync_status),
            "{}: the sync endpoint answered {sync_status} {sync_body_}",
            case.what
        );
        assert_eq!(
            (flow_status, &flow_body["error"]["code"]),
            (sync_status, &sync_body_["error"]["code"]),
            "{}: {flow_body} vs {sync_body_}",
            case.what
        );
    }
    // The detail names the five-step message's own fields.
    let cases = [
        (
            json!({"entity_id": " ", "client_sync_id": "garbage", "data": {}}),
            vec![
                json!(["body", "changes", 0, "client_sync_id"]),
                json!(["body", "changes", 0, "entity_id"]),
            ],
        ),
        (
            json!({"entity_id": "x-1", "client_sync_id": Version::now("tester"),
                   "data": {"source_type": "telepathy"}}),
            vec![json!(["body", "changes", 0, "data", "source_type"])],
        ),
    ];
    for (mut change, want) in cases {
        change["entity_type"] = json!("device");
        change["operation"] = json!("create");
        let (status, body) = s
            .post_json(
                &token,
                "/api/v1/sync/push",
                &json!({"type": "sync_push", "client_id": "d", "changes": [change]}),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        let locs: Vec<Value> = body["detail"]
            .as_array()
            .expect("detail")
            .iter()
            .map(|d| d["loc"].clone())
            .collect();
        assert_eq!(locs, want, "{body}");
    }
    let stats = s.handle.store().stats().await.expect("stats");
    assert_eq!(stats.entity_versions, 0, "nothing stored: {stats:?}");
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(five_step_push_validates_as_sync_does);

/// A push with a cursor (so the page holds only rows after it).
fn push_after(device: &str, cursor: u64, changes: Value) -> Value {
    let mut body = sync_body(device, "delta", changes);
    body["cursor"] = json!(cursor.to_string());
    body
}

/// An acknowledgement carries the server's latest row of every acknowledged id whose
/// latest is not the pushed version, before the page's rows and never twice: a delete
/// of an id another device already deleted gets that tombstone; a re-sent version that
/// was superseded, or a losing edit, gets the latest; a plain applied push gets nothing
/// extra.
async fn acknowledgement_carries_the_server_latest_row(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let store = s.handle.store();
    let post = |body: Value| {
        let (s, token) = (&s, &token);
        async move {
            let (status, answer) = s.post_json(token, "/api/v1/sync/", &body).await;
            assert_eq!(status, 200, "{answer}");
            answer
        }
    };
    let v = |tag: &str| Version::now(tag);

    // Both devices delete the same entity: b's delete is acknowledged as already deleted.
    let e1 = v("a");
    post(sync_body(
        "a",
        "delta",
        json!([entity_change("create", "gone", &e1, &[], json!({}))]),
    ))
    .await;
    let ta = v("a");
    post(sync_body(
        "a",
        "delta",
        json!([entity_change("delete", "gone", &ta, &[&e1], json!({}))]),
    ))
    .await;
    let now = store.max_seq().await.expect("seq");
    let tb = v("b");
    let answer = post(push_after(
        "b",
        now,
        json!([entity_change("delete", "gone", &tb, &[&e1], json!({}))]),
    ))
    .await;
    assert_eq!(answer["applied"], json!(["gone"]));
    assert_eq!(rows(&answer), [("gone".to_owned(), ta.as_str().to_owned())]);
    assert_eq!(answer["changes"][0]["change_type"], "delete");
    assert_eq!(answer["cursor"], Value::Null);
    assert_eq!(store.max_seq().await.expect("seq"), now, "nothing stored");

    // b's edit is applied, a's newer edit supersedes it, then b re-sends its edit.
    let h1 = v("a");
    post(sync_body(
        "a",
        "delta",
        json!([entity_change("create", "h", &h1, &[], json!({"x": 1}))]),
    ))
    .await;
    let h2 = v("b");
    let b_edit = entity_change("update", "h", &h2, &[&h1], json!({"x": 2}));
    post(sync_body("b", "delta", json!([b_edit.clone()]))).await;
    let h3 = v("a");
    post(sync_body(
        "a",
        "delta",
        json!([entity_change("update", "h", &h3, &[&h2], json!({"x": 3}))]),
    ))
    .await;
    let before_z = store.max_seq().await.expect("seq");
    let z = v("a");
    post(sync_body(
        "a",
        "delta",
        json!([entity_change("create", "z", &z, &[], json!({}))]),
    ))
    .await;
    let answer = post(push_after("b", before_z, json!([b_edit.clone()]))).await;
    assert_eq!(answer["applied"], json!(["h"]));
    assert_eq!(
        rows(&answer),
        [
            ("h".to_owned(), h3.as_str().to_owned()),
            ("z".to_owned(), z.as_str().to_owned())
        ],
        "the latest of h first, then the page"
    );
    assert_eq!(
        answer["cursor"],
        Value::Null,
        "the page's cursor is unchanged"
    );
    // When the page already holds that row, it is not repeated.
    let answer = post(push_after("b", before_z - 1, json!([b_edit]))).await;
    assert_eq!(
        rows(&answer),
        [
            ("h".to_owned(), h3.as_str().to_owned()),
            ("z".to_owned(), z.as_str().to_owned())
        ]
    );

    // An older edit loses to a newer one: the acknowledgement carries the winner.
    let k1 = v("a");
    post(sync_body(
        "a",
        "delta",
        json!([entity_change("create", "k", &k1, &[], json!({}))]),
    ))
    .await;
    let older = Version::new("2020-01-01T00:00:00.000000+00:00-000001-b");
    let newer = v("a");
    post(sync_body(
        "a",
        "delta",
        json!([entity_change(
            "update",
            "k",
            &newer,
            &[&k1],
            json!({"w": "a"})
        )]),
    ))
    .await;
    let now = store.max_seq().await.expect("seq");
    let answer = post(push_after(
        "b",
        now,
        json!([entity_change(
            "update",
            "k",
            &older,
            &[&k1],
            json!({"w": "b"})
        )]),
    ))
    .await;
    assert_eq!(answer["applied"], json!(["k"]));
    assert_eq!(answer["conflicts"][0]["resolved_version"], newer.as_str());
    assert_eq!(rows(&answer), [("k".to_owned(), newer.as_str().to_owned())]);

    // A plain applied push: the page's own row only.
    let now = store.max_seq().await.expect("seq");
    let p = v("b");
    let answer = post(push_after(
        "b",
        now,
        json!([entity_change("create", "plain", &p, &[], json!({}))]),
    ))
    .await;
    assert_eq!(answer["applied"], json!(["plain"]));
    assert_eq!(rows(&answer), [("plain".to_owned(), p.as_str().to_owned())]);
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(acknowledgement_carries_the_server_latest_row);

/// The five-step `sync_result` carries the same rows: a re-sent version another device
/// has since superseded comes back with the latest version, in the `sync_delta` form;
/// a plain push carries none.
async fn five_step_result_carries_the_server_latest_row(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let push = |client: &str, change: Value| {
        let (s, token) = (&s, &token);
        let body = json!({"type": "sync_push", "client_id": client, "changes": [change]});
        async move {
            let (status, result) = s.post_json(token, "/api/v1/sync/push", &body).await;
            assert_eq!(status, 200, "{result}");
            result
        }
    };
    let v1 = Version::now("b");
    let mine = json!({"entity_type": "device", "entity_id": "f", "operation": "create",
        "data": {"name": "mine"}, "client_sync_id": v1});
    let result = push("b", mine.clone()).await;
    assert_eq!(result["applied"][0]["status"], "applied");
    assert!(result.get("changes").is_none(), "nothing carried: {result}");
    let v2 = Version::now("a");
    push(
        "a",
        json!({"entity_type": "device", "entity_id": "f", "operation": "update",
            "data": {"name": "theirs", "parent_versions": [v1]}, "client_sync_id": v2}),
    )
    .await;
    let result = push("b", mine).await;
    assert_eq!(result["applied"][0]["server_sync_id"], v2.as_str());
    let carried = result["changes"].as_array().expect("changes");
    assert_eq!(carried.len(), 1, "{result}");
    assert_eq!(carried[0]["entity_id"], "f");
    assert_eq!(carried[0]["sync_id"], v2.as_str());
    assert_eq!(carried[0]["data"]["name"], "theirs");
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(five_step_result_carries_the_server_latest_row);

/// Two servers on one database (as server processes sharing PostgreSQL): a page server
/// A read ahead is not handed out once server B has committed a write after it.
async fn read_ahead_page_is_not_served_after_another_server_wrote(backend: Backend) {
    let Some(a) = TestServer::start_with(backend, |c| c.with_page_size(2)).await else {
        return;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let b_url = format!(
        "http://{}/api/v1/sync/",
        listener.local_addr().expect("addr")
    );
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
    handle_b.await.expect("server b started");
    let token = a.login().await;
    let v1 = Version::now("tester");
    let creates: Vec<Value> = ["e1", "e2", "e3"]
        .iter()
        .map(|id| entity_change("create", id, &v1, &[], json!({})))
        .collect();
    let (status, body) = a
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("w", "delta", json!(creates)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, page1) = a.post_json(&token, "/api/v1/sync/", &pull("c", None)).await;
    assert_eq!(page1["cursor"], "2");
    a.handle.wait_for_read_ahead(1).await;

    let v2 = Version::now("tester");
    let res = a
        .http
        .post(&b_url)
        .bearer_auth(&token)
        .json(&sync_body(
            "via-b",
            "delta",
            json!([entity_change("update", "e3", &v2, &[&v1], json!({}))]),
        ))
        .send()
        .await
        .expect("push via b");
    let (status, pushed) = support::read(res).await;
    assert_eq!(status, 200, "{pushed}");
    let (status, page2) = a
        .post_json(&token, "/api/v1/sync/", &pull("c", Some(&page1["cursor"])))
        .await;
    assert_eq!(status, 200, "{page2}");
    assert_eq!(rows(&page2), [("e3".to_owned(), v2.as_str().to_owned())]);
    assert_eq!(page2["state_digest"], pushed["state_digest"]);
    let _ = stop_b.send(());
    server_b.await.expect("join").expect("server b stops");
    a.shutdown().await.expect("shutdown");
}

on_both_backends!(read_ahead_page_is_not_served_after_another_server_wrote);
