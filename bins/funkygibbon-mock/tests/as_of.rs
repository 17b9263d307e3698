//! `?at=T` on the graph REST API (PROTOCOL §15.2): entity lists, one entity with its
//! relationships, its connections and a path answer for the graph as it was at T —
//! a losing side of a conflict never shows, a tombstone ends an entity and its edges,
//! an entity or edge stored after T is not there yet (both backends).

mod support;

use serde_json::{json, Value};
use support::{sync_body, Backend, TestServer};

async fn create(s: &TestServer, token: &str, entity_type: &str, name: &str) -> Value {
    let (status, body) = s
        .post_json(
            token,
            "/api/v1/graph/entities",
            &json!({"entity_type": entity_type, "name": name, "content": {"n": name}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body["entity"].clone()
}

async fn relate(s: &TestServer, token: &str, from: &Value, to: &Value, t: &str) {
    let (status, body) = s
        .post_json(
            token,
            "/api/v1/graph/relationships",
            &json!({"from_entity_id": from["id"], "to_entity_id": to["id"], "relationship_type": t}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// The receipt time of an id's latest row: a time at which the graph is exactly as it is now.
async fn now_of(s: &TestServer, token: &str, id: &Value) -> String {
    let (status, body) = s
        .get_json(
            token,
            &format!(
                "/api/v1/graph/entities/{}/versions",
                id.as_str().expect("id")
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let versions = body["versions"].as_array().expect("versions");
    versions
        .iter()
        .map(|v| v["received_at"].as_str().expect("received_at").to_owned())
        .max()
        .expect("a version")
}

fn enc(t: &str) -> String {
    t.replace('+', "%2B").replace(':', "%3A")
}

async fn names_at(s: &TestServer, token: &str, at: &str) -> Vec<(String, String)> {
    let (status, body) = s
        .get_json(
            token,
            &format!("/api/v1/graph/entities?at={}&limit=100", enc(at)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut out: Vec<(String, String)> = body["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").to_owned(),
                e["version"].as_str().expect("version").to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn push_edit(
    s: &TestServer,
    token: &str,
    device: &str,
    version: &inbetweenies_proto::Version,
    e: &Value,
    name: &str,
) {
    let change = json!({
        "change_type": "update",
        "entity": {
            "id": e["id"], "version": version,
            "entity_type": e["entity_type"], "name": name, "content": {"by": device},
            "source_type": "manual", "user_id": device, "parent_versions": [e["version"]],
        },
        "relationships": [],
    });
    let (status, body) = s
        .post_json(
            token,
            "/api/v1/sync/",
            &sync_body(device, "delta", json!([change])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn path_at(s: &TestServer, token: &str, from: &Value, to: &Value, at: &str) -> (u16, Value) {
    s.post_json(
        token,
        "/api/v1/graph/path",
        &json!({"from_id": from["id"], "to_id": to["id"], "at": at}),
    )
    .await
}

async fn graph_as_it_was(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    // Then: a room, a lamp in it, a hub the lamp connects to, a sensor the hub connects to.
    let room = create(&s, &token, "room", "Kitchen").await;
    let lamp = create(&s, &token, "device", "Lamp").await;
    let hub = create(&s, &token, "device", "Hub").await;
    let sensor = create(&s, &token, "device", "Sensor").await;
    relate(&s, &token, &lamp, &room, "located_in").await;
    relate(&s, &token, &lamp, &hub, "connects_to").await;
    relate(&s, &token, &hub, &sensor, "connects_to").await;
    // A write after the edges, so that its receipt time sees all of the above.
    let (status, body) = s
        .put_json(
            &token,
            &format!(
                "/api/v1/graph/entities/{}",
                sensor["id"].as_str().expect("id")
            ),
            &json!({"content": {"battery": 90}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let sensor = body["entity"].clone();
    let then = now_of(&s, &token, &sensor["id"]).await;

    // Afterwards: the lamp is renamed, two devices edit the room from one version (one
    // side loses), the hub is deleted, a new plug appears and connects to the lamp.
    let (status, body) = s
        .put_json(
            &token,
            &format!(
                "/api/v1/graph/entities/{}",
                lamp["id"].as_str().expect("id")
            ),
            &json!({"name": "Lamp 2"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // The tablet's edit is the older one: it arrives second and loses.
    let older = inbetweenies_proto::Version::now("tablet");
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let newer = inbetweenies_proto::Version::now("phone");
    push_edit(&s, &token, "phone", &newer, &room, "Kitchen (phone)").await;
    push_edit(&s, &token, "tablet", &older, &room, "Kitchen (tablet)").await;
    let res = s
        .http
        .delete(s.url(&format!(
            "/api/v1/graph/entities/{}",
            hub["id"].as_str().expect("id")
        )))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status().as_u16(), 200);
    let plug = create(&s, &token, "device", "Plug").await;
    relate(&s, &token, &plug, &lamp, "connects_to").await;
    let (status, body) = s
        .put_json(
            &token,
            &format!(
                "/api/v1/graph/entities/{}",
                plug["id"].as_str().expect("id")
            ),
            &json!({"content": {"watts": 5}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let now = now_of(&s, &token, &plug["id"]).await;

    // Which room edit won, which lost.
    let (_, versions) = s
        .get_json(
            &token,
            &format!(
                "/api/v1/graph/entities/{}/versions",
                room["id"].as_str().expect("id")
            ),
        )
        .await;
    let versions = versions["versions"].as_array().expect("versions").clone();
    let won = versions
        .iter()
        .find(|v| v["is_latest"] == true)
        .expect("a latest version");
    let lost = versions
        .iter()
        .find(|v| v["became_latest"] == false)
        .expect("a losing version");
    let lost_at = lost["received_at"]
        .as_str()
        .expect("received_at")
        .to_owned();

    // The list then and now.
    let v = |e: &Value| e["version"].as_str().expect("version").to_owned();
    let mut expected_then = vec![
        ("Hub".to_owned(), v(&hub)),
        ("Kitchen".to_owned(), v(&room)),
        ("Lamp".to_owned(), v(&lamp)),
        ("Sensor".to_owned(), v(&sensor)),
    ];
    expected_then.sort();
    assert_eq!(names_at(&s, &token, &then).await, expected_then);
    let names_now: Vec<String> = names_at(&s, &token, &now)
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names_now,
        [
            won["name"].as_str().expect("name"),
            "Lamp 2",
            "Plug",
            "Sensor"
        ]
    );
    // The losing side never shows, not even at the moment it was received.
    for (_, version) in names_at(&s, &token, &lost_at).await {
        assert_ne!(Some(version.as_str()), lost["version"].as_str());
    }

    // One entity and its edges, then and now.
    let lamp_path = format!(
        "/api/v1/graph/entities/{}",
        lamp["id"].as_str().expect("id")
    );
    let (status, body) = s
        .get_json(&token, &format!("{lamp_path}?at={}", enc(&then)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entity"]["name"], "Lamp");
    assert_eq!(body["outgoing"].as_array().expect("outgoing").len(), 2);
    assert_eq!(body["incoming"].as_array().expect("incoming").len(), 0);
    let (_, body) = s
        .get_json(&token, &format!("{lamp_path}?at={}", enc(&now)))
        .await;
    assert_eq!(body["entity"]["name"], "Lamp 2");
    // The edge to the deleted hub is gone with it; the plug's edge is there.
    assert_eq!(body["outgoing"].as_array().expect("outgoing").len(), 1);
    assert_eq!(body["incoming"][0]["from_entity_id"], plug["id"]);
    let (status, _) = s
        .get_json(
            &token,
            &format!(
                "/api/v1/graph/entities/{}?at={}",
                hub["id"].as_str().expect("id"),
                enc(&now)
            ),
        )
        .await;
    assert_eq!(status, 404, "a tombstoned entity did not exist then");
    let (status, _) = s
        .get_json(
            &token,
            &format!(
                "/api/v1/graph/entities/{}?at={}",
                plug["id"].as_str().expect("id"),
                enc(&then)
            ),
        )
        .await;
    assert_eq!(status, 404, "the plug did not exist yet");
    let (status, body) = s
        .get_json(&token, &format!("{lamp_path}/connected?at={}", enc(&then)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2);
    let (status, body) = s
        .get_json(
            &token,
            &format!(
                "/api/v1/graph/relationships?at={}&relationship_type=connects_to",
                enc(&then)
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["count"], 2);

    // Paths: lamp → hub → sensor then; with the hub deleted, no path now.
    let (status, body) = path_at(&s, &token, &lamp, &sensor, &then).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["found"], true);
    assert_eq!(body["path"], json!([lamp["id"], hub["id"], sensor["id"]]));
    let (status, body) = path_at(&s, &token, &lamp, &sensor, &now).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["found"], false);
    let (status, _) = path_at(&s, &token, &plug, &lamp, &then).await;
    assert_eq!(status, 404, "the plug did not exist then");
    let (status, body) = path_at(&s, &token, &plug, &room, &now).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], json!([plug["id"], lamp["id"], room["id"]]));

    // A time that is no time: 400 naming `at`.
    let (status, body) = s
        .get_json(&token, "/api/v1/graph/entities?at=yesterday")
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "at");
    let (status, body) = path_at(&s, &token, &lamp, &sensor, "soon").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["field"], "at");
    s.shutdown().await.expect("shutdown");
}

on_both_backends!(graph_as_it_was);
