//! The graph REST API: create, list, get, update, delete, versions, relationships, search, path, connected, statistics.

mod support;

use serde_json::{json, Value};
use support::{sync_body, Backend, TestServer};

async fn create(s: &TestServer, token: &str, body: Value) -> Value {
    let (status, answer) = s.post_json(token, "/api/v1/graph/entities", &body).await;
    assert_eq!(status, 200, "{answer}");
    answer["entity"].clone()
}

async fn relate(s: &TestServer, token: &str, body: Value) -> Value {
    let (status, answer) = s
        .post_json(token, "/api/v1/graph/relationships", &body)
        .await;
    assert_eq!(status, 200, "{answer}");
    answer["relationship"].clone()
}

async fn entities_and_versions(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let room = create(&s, &token, json!({"entity_type": "room", "name": "Kitchen", "content": {"area": 25}, "user_id": "admin"})).await;
    let keys: Vec<&str> = room
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "version",
            "entity_type",
            "name",
            "content",
            "source_type",
            "user_id",
            "parent_versions",
            "created_at",
            "updated_at"
        ]
    );
    assert_eq!(room["source_type"], "manual");
    assert!(room["version"]
        .as_str()
        .expect("version")
        .ends_with("-admin"));
    let id = room["id"].as_str().expect("id").to_owned();
    for i in 0..3 {
        create(&s, &token, json!({"entity_type": "device", "name": format!("Bulb {i}"), "content": {"power": "on"}})).await;
    }
    let (status, body) = s
        .post_json(
            &token,
            "/api/v1/graph/entities",
            &json!({"entity_type": "room", "name": "Dup", "id": id}),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    let (_, list) = s
        .get_json(
            &token,
            "/api/v1/graph/entities?entity_type=device&limit=2&offset=1",
        )
        .await;
    assert_eq!(list["total"], 3);
    let names: Vec<&str> = list["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| e["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["Bulb 1", "Bulb 2"], "ordered by name, paged");
    let (_, all) = s.get_json(&token, "/api/v1/graph/entities").await;
    assert_eq!(all["total"], 4);
    let (status, body) = s
        .get_json(&token, "/api/v1/graph/entities?limit=many")
        .await;
    assert_eq!(
        (status, body["detail"][0]["type"].clone()),
        (422, json!("int_parsing"))
    );

    // A new version on top of the latest.
    let (status, updated) = s
        .put_json(
            &token,
            &format!("/api/v1/graph/entities/{id}"),
            &json!({"name": "Kitchen (big)", "content": {"area": 40}}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["outcome"], "applied");
    assert_eq!(
        updated["entity"]["parent_versions"],
        json!([room["version"]])
    );
    let v2 = updated["entity"]["version"].clone();
    let (_, got) = s
        .get_json(&token, &format!("/api/v1/graph/entities/{id}"))
        .await;
    assert_eq!(got["entity"]["name"], "Kitchen (big)");
    assert_eq!(got["entity"]["version"], v2);

    // A stale edit through sync loses and is kept as a non-latest row.
    let loser = json!({"change_type": "update", "entity": {"id": id, "version": "2020-01-01T00:00:00.000000+00:00-000001-old",
        "entity_type": "room", "name": "stale", "content": {}, "source_type": "manual", "user_id": "old", "parent_versions": []}});
    let (_, pushed) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("old-phone", "delta", json!([loser])),
        )
        .await;
    assert_eq!(
        pushed["conflicts"].as_array().map(Vec::len),
        Some(1),
        "{pushed}"
    );

    let res = s
        .http
        .delete(s.url(&format!("/api/v1/graph/entities/{id}")))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    let (status, deleted) = support::read(res).await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["entity"]["content"]["deleted"], true);
    let (_, versions) = s
        .get_json(&token, &format!("/api/v1/graph/entities/{id}/versions"))
        .await;
    let rows = versions["versions"].as_array().expect("versions");
    assert_eq!(versions["count"], 4, "{versions}");
    let flags: Vec<(bool, bool, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["is_latest"].as_bool().unwrap_or(false),
                r["became_latest"].as_bool().unwrap_or(false),
                r["is_deleted"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        flags,
        [
            (false, true, false),
            (false, true, false),
            (false, false, false),
            (true, true, true)
        ],
        "{versions}"
    );
    let seqs: Vec<u64> = rows
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // The tombstone is left out of lists unless asked for.
    let (_, rooms) = s
        .get_json(&token, "/api/v1/graph/entities?entity_type=room")
        .await;
    assert_eq!(rooms["total"], 0);
    let (_, rooms) = s
        .get_json(
            &token,
            "/api/v1/graph/entities?entity_type=room&include_deleted=true",
        )
        .await;
    assert_eq!(rooms["total"], 1);

    for path in [
        "/api/v1/graph/entities/nope".to_owned(),
        "/api/v1/graph/entities/nope/versions".to_owned(),
        "/api/v1/graph/entities/nope/connected".to_owned(),
    ] {
        let (status, body) = s.get_json(&token, &path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    assert_eq!(
        s.put_json(&token, "/api/v1/graph/entities/nope", &json!({"name": "x"}))
            .await
            .0,
        404
    );

    // REST writes are in the sync feed and the digest.
    let (_, full) = s
        .post_json(&token, "/api/v1/sync/", &sync_body("d", "full", json!([])))
        .await;
    assert_eq!(full["changes"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        full["state_digest"],
        json!(s.handle.store().state_digest().await.expect("digest"))
    );
    s.shutdown().await.expect("shutdown");
}

async fn relationships_and_traversal(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let home = create(&s, &token, json!({"entity_type": "home", "name": "Home"})).await;
    let room = create(
        &s,
        &token,
        json!({"entity_type": "room", "name": "Kitchen"}),
    )
    .await;
    let bulb = create(
        &s,
        &token,
        json!({"entity_type": "device", "name": "Smart Bulb"}),
    )
    .await;
    let note = create(
        &s,
        &token,
        json!({"entity_type": "note", "name": "Bulb manual"}),
    )
    .await;
    let id = |e: &Value| e["id"].as_str().expect("id").to_owned();

    let r1 = relate(&s, &token, json!({"source_id": id(&bulb), "target_id": id(&room), "relationship_type": "located_in", "user_id": "admin"})).await;
    let keys: Vec<&str> = r1
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "id",
            "from_entity_id",
            "from_entity_version",
            "to_entity_id",
            "to_entity_version",
            "relationship_type",
            "properties",
            "user_id",
            "created_at",
            "updated_at"
        ]
    );
    assert_eq!(r1["from_entity_version"], bulb["version"]);
    assert_eq!(r1["to_entity_version"], room["version"]);
    relate(&s, &token, json!({"from_entity_id": id(&room), "to_entity_id": id(&home), "relationship_type": "located_in", "properties": {"floor": 1}})).await;
    relate(&s, &token, json!({"source_id": id(&bulb), "target_id": id(&note), "relationship_type": "documented_by"})).await;
    let (status, body) = s.post_json(&token, "/api/v1/graph/relationships", &json!({"source_id": "ghost", "target_id": id(&room), "relationship_type": "located_in"})).await;
    assert_eq!(status, 404, "{body}");
    // Unknown relationship types (accepted by default, refused when strict): legacy_vocabulary.rs.

    let (_, from_bulb) = s
        .get_json(
            &token,
            &format!("/api/v1/graph/relationships?source_id={}", id(&bulb)),
        )
        .await;
    assert_eq!(from_bulb["count"], 2);
    let (_, located) = s
        .get_json(
            &token,
            "/api/v1/graph/relationships?relationship_type=located_in",
        )
        .await;
    assert_eq!(located["count"], 2);

    let (_, got) = s
        .get_json(&token, &format!("/api/v1/graph/entities/{}", id(&room)))
        .await;
    assert_eq!(got["outgoing"].as_array().map(Vec::len), Some(1));
    assert_eq!(got["incoming"].as_array().map(Vec::len), Some(1));
    assert_eq!(got["incoming"][0]["from_entity_id"], bulb["id"]);

    let (_, connected) = s
        .get_json(
            &token,
            &format!("/api/v1/graph/entities/{}/connected", id(&room)),
        )
        .await;
    assert_eq!(connected["count"], 2);
    let mut dirs: Vec<(String, String)> = connected["connected"]
        .as_array()
        .expect("connected")
        .iter()
        .map(|c| {
            (
                c["entity"]["name"].as_str().unwrap_or("").to_owned(),
                c["direction"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    dirs.sort();
    assert_eq!(
        dirs,
        [
            ("Home".to_owned(), "outgoing".to_owned()),
            ("Smart Bulb".to_owned(), "incoming".to_owned())
        ]
    );
    let (_, incoming) = s.get_json(&token, &format!("/api/v1/graph/entities/{}/connected?direction=incoming&relationship_type=located_in", id(&room))).await;
    assert_eq!(incoming["count"], 1);
    assert_eq!(
        s.get_json(
            &token,
            &format!(
                "/api/v1/graph/entities/{}/connected?direction=up",
                id(&room)
            )
        )
        .await
        .0,
        422
    );

    let (status, path) = s
        .post_json(
            &token,
            "/api/v1/graph/path",
            &json!({"from_id": id(&note), "to_id": id(&home)}),
        )
        .await;
    assert_eq!(status, 200, "{path}");
    assert_eq!(path["found"], true);
    assert_eq!(
        path["path"],
        json!([id(&note), id(&bulb), id(&room), id(&home)])
    );
    assert_eq!(path["length"], 3);
    assert_eq!(path["entities"].as_array().map(Vec::len), Some(4));
    let (_, short) = s
        .post_json(
            &token,
            "/api/v1/graph/path",
            &json!({"source_id": id(&note), "target_id": id(&home), "max_depth": 2}),
        )
        .await;
    assert_eq!(short["found"], false);
    let lonely = create(
        &s,
        &token,
        json!({"entity_type": "zone", "name": "Nowhere"}),
    )
    .await;
    let (_, none) = s
        .post_json(
            &token,
            "/api/v1/graph/path",
            &json!({"from_id": id(&lonely), "to_id": id(&home)}),
        )
        .await;
    assert_eq!(
        (none["found"].clone(), none["path"].clone()),
        (json!(false), json!([]))
    );
    assert_eq!(
        s.post_json(
            &token,
            "/api/v1/graph/path",
            &json!({"from_id": "ghost", "to_id": id(&home)})
        )
        .await
        .0,
        404
    );

    let (status, found) = s
        .post_json(&token, "/api/v1/graph/search", &json!({"query": "bulb"}))
        .await;
    assert_eq!(status, 200, "{found}");
    let names: Vec<&str> = found["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["entity"]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        ["Bulb manual", "Smart Bulb"],
        "a prefix match ranks before a substring match"
    );
    let (_, typed) = s
        .post_json(
            &token,
            "/api/v1/graph/search",
            &json!({"query": "bulb", "entity_types": ["note"], "limit": 5}),
        )
        .await;
    assert_eq!(typed["count"], 1);

    let (_, stats) = s.get_json(&token, "/api/v1/graph/statistics").await;
    assert_eq!(stats["total_entities"], 5);
    assert_eq!(stats["total_relationships"], 3);
    assert_eq!(stats["entity_types"]["device"], 1);
    assert_eq!(stats["relationship_types"]["located_in"], 2);
    assert_eq!(stats["pending_conflicts"], 0);
    assert!(stats["state_digest"]
        .as_str()
        .is_some_and(|d| d.len() == 64));
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(entities_and_versions, relationships_and_traversal);
