//! Bad input never hurts: oversized and malformed bodies, invalid UTF-8, unknown paths and types, gzip both ways, signatures.

mod support;

use std::io::{Read as _, Write as _};

use serde_json::{json, Value};
use support::{create_change, http_client, read, sync_body, Backend, TestServer};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

async fn raw_post(
    s: &TestServer,
    token: &str,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = s.http.post(s.url(path)).bearer_auth(token).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    read(req.send().await.expect("request")).await
}

async fn malformed_bodies_write_nothing(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_body_limit(64 * 1024)).await else {
        return;
    };
    let token = s.login().await;
    let digest = s.handle.store().state_digest().await.expect("digest");
    let json_ct = [("content-type", "application/json")];
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "/api/v1/sync/",
            b"{\"device_id\": ".to_vec(),
            422,
            "json_invalid",
        ),
        (
            "/api/v1/sync/",
            vec![0xff, 0xfe, b'{', b'}'],
            422,
            "json_invalid",
        ),
        (
            "/api/v1/sync/",
            b"{\"device_id\": \"\xc3\x28\"}".to_vec(),
            422,
            "json_invalid",
        ),
        ("/api/v1/sync/", b"".to_vec(), 422, "missing"),
        (
            "/api/v1/sync/",
            b"[1,2]".to_vec(),
            422,
            "model_attributes_type",
        ),
        (
            "/api/v1/sync/",
            b"42".to_vec(),
            422,
            "model_attributes_type",
        ),
        (
            "/api/v1/sync/",
            serde_json::to_vec(
                &json!({"device_id": 1, "user_id": [], "sync_type": "sideways", "changes": "x"}),
            )
            .expect("json"),
            422,
            "string_type",
        ),
        (
            "/api/v1/sync/",
            serde_json::to_vec(&sync_body(
                "d",
                "delta",
                json!([{"change_type": "create", "entity": {"id": "x"}}]),
            ))
            .expect("json"),
            422,
            "missing",
        ),
        (
            "/api/v1/sync/push",
            b"{\"type\": \"sync_push\"}".to_vec(),
            422,
            "missing",
        ),
        (
            "/api/v1/sync/push",
            b"{\"type\": \"sync_delta\", \"client_id\": \"c\"}".to_vec(),
            422,
            "literal_error",
        ),
        (
            "/api/v1/sync/request",
            b"nope".to_vec(),
            422,
            "json_invalid",
        ),
        (
            "/api/v1/sync/ack",
            b"{\"client_id\": \"c\", \"sync_completed_at\": \"yesterday\"}".to_vec(),
            422,
            "value_error",
        ),
        (
            "/api/v1/graph/entities",
            b"{\"entity_type\": 7}".to_vec(),
            422,
            "string_type",
        ),
        (
            "/api/v1/graph/relationships",
            b"{}".to_vec(),
            422,
            "missing",
        ),
        (
            "/api/v1/graph/search",
            b"{\"query\": \"\"}".to_vec(),
            422,
            "string_too_short",
        ),
        (
            "/api/v1/graph/path",
            b"{\"from_id\": \"a\"}".to_vec(),
            422,
            "missing",
        ),
        (
            "/api/v1/auth/guest/generate-qr",
            b"{\"duration_hours\": -1}".to_vec(),
            422,
            "greater_than",
        ),
    ];
    for (path, body, status, kind) in cases {
        let shown = String::from_utf8_lossy(&body).into_owned();
        let (got, answer) = raw_post(&s, &token, path, body, &json_ct).await;
        assert_eq!(got, status, "{path} {shown:?}: {answer}");
        assert_eq!(
            answer["error"]["code"], "INVALID_REQUEST",
            "{path} {shown:?}"
        );
        assert_eq!(
            answer["detail"][0]["type"], kind,
            "{path} {shown:?}: {answer}"
        );
    }
    // Wrong JSON types deep inside a change.
    let bad_change = json!([{"change_type": "create", "entity": {
        "id": "x", "version": "2026-01-01T00:00:00.000000+00:00-000001-u", "entity_type": "device",
        "name": "N", "content": [], "source_type": "manual", "user_id": "u", "parent_versions": "p"}}]);
    let (status, answer) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("d", "delta", bad_change),
        )
        .await;
    assert_eq!(status, 422);
    let kinds: Vec<&str> = answer["detail"]
        .as_array()
        .expect("detail")
        .iter()
        .map(|d| d["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["dict_type", "list_type"], "{answer}");
    assert_eq!(answer["error"]["field"], "changes[0].entity.content");
    assert_eq!(
        s.handle.store().state_digest().await.expect("digest"),
        digest,
        "nothing was written"
    );
    assert_eq!(s.get_json("", "/health").await.0, 200, "still serving");
    s.shutdown().await.expect("shutdown");
}

async fn oversized_bodies_get_413(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_body_limit(4096)).await else {
        return;
    };
    let token = s.login().await;
    let big = serde_json::to_vec(&sync_body("d", "full", json!([]))).expect("json");
    let mut padded = big.clone();
    padded.truncate(big.len() - 1);
    padded.extend(format!(", \"pad\": \"{}\"}}", "x".repeat(8192)).bytes());
    let (status, body) = raw_post(
        &s,
        &token,
        "/api/v1/sync/",
        padded.clone(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
    // The limit applies after decompression: a small gzip body that inflates past it.
    let bomb = gzip(&padded);
    assert!(bomb.len() < 4096);
    let (status, body) = raw_post(
        &s,
        &token,
        "/api/v1/sync/",
        bomb,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(status, 413, "{body}");
    // Streamed without a content length.
    let res = s
        .http
        .post(s.url("/api/v1/graph/search"))
        .bearer_auth(&token)
        .header("transfer-encoding", "chunked")
        .body(vec![b' '; 10_000])
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 413);
    assert_eq!(s.get_json("", "/health").await.0, 200, "still serving");
    s.shutdown().await.expect("shutdown");
}

async fn unknown_paths_and_methods(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/sync/",
        "/api/v1/graph/entities/a/b/c",
    ] {
        let (status, body) = s.get_json(&token, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(body["detail"], "Not Found");
        assert_eq!(body["error"]["code"], "NOT_FOUND");
    }
    let res = s
        .http
        .delete(s.url("/api/v1/sync/"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("request");
    let (status, body) = read(res).await;
    assert_eq!(status, 405);
    assert_eq!(body["detail"], "Method Not Allowed");
    // An unknown content encoding.
    let (status, body) = raw_post(
        &s,
        &token,
        "/api/v1/sync/",
        b"{}".to_vec(),
        &[("content-encoding", "br")],
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert!(body["error"]["code"].is_string());
    // A corrupt gzip body.
    let (status, body) = raw_post(
        &s,
        &token,
        "/api/v1/sync/",
        b"not gzip at all".to_vec(),
        &[("content-encoding", "gzip")],
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Trailing slashes either way.
    assert_eq!(s.get_json(&token, "/api/v1/graph/statistics/").await.0, 200);
    assert_eq!(s.get_json("", "/health/").await.0, 200);
    s.shutdown().await.expect("shutdown");
}

async fn unknown_types_refused_in_strict_mode(backend: Backend) {
    let Some(s) = TestServer::start_with(backend, |c| c.with_strict(true)).await else {
        return;
    };
    let token = s.login().await;
    let digest = s.handle.store().state_digest().await.expect("digest");
    let good = create_change("ok-1", "device", "fine", json!({}));
    let mut bad = create_change("bad-1", "spaceship", "odd", json!({}));
    bad["entity"]["source_type"] = json!("None");
    let (status, body) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("d", "delta", json!([good.clone(), bad])),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["type"], "enum");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "changes", 1, "entity", "entity_type"])
    );
    assert_eq!(
        body["detail"][1]["loc"],
        json!(["body", "changes", 1, "entity", "source_type"])
    );
    // An unknown relationship type: a 422 like every other problem (the reference: 400).
    let mut with_rel = good.clone();
    with_rel["relationships"] = json!([{"id": "r1", "from_entity_id": "ok-1",
        "from_entity_version": good["entity"]["version"], "to_entity_id": "ok-1",
        "to_entity_version": good["entity"]["version"], "relationship_type": "teleports_to"}]);
    let (status, body) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("d", "delta", json!([with_rel])),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["detail"][0]["type"], "enum");
    assert_eq!(
        body["detail"][0]["loc"],
        json!([
            "body",
            "changes",
            0,
            "relationships",
            0,
            "relationship_type"
        ])
    );
    assert_eq!(body["detail"].as_array().map(Vec::len), Some(1), "{body}");
    let (status, _) = s
        .post_json(
            &token,
            "/api/v1/graph/entities",
            &json!({"entity_type": "spaceship", "name": "x"}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        s.get_json(&token, "/api/v1/graph/entities?entity_type=spaceship")
            .await
            .0,
        422
    );
    assert_eq!(
        s.handle.store().state_digest().await.expect("digest"),
        digest,
        "nothing was written"
    );
    s.shutdown().await.expect("shutdown");
}

async fn unknown_types_round_trip_by_default(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let mut a = create_change("odd-1", "spaceship", "odd", json!({"warp": 9}));
    a["entity"]["source_type"] = json!("None");
    let b = create_change("odd-2", "device", "plain", json!({}));
    let mut change_b = b.clone();
    change_b["relationships"] = json!([{"id": "odd-rel", "from_entity_id": "odd-2",
        "from_entity_version": b["entity"]["version"], "to_entity_id": "odd-1",
        "to_entity_version": a["entity"]["version"], "relationship_type": "teleports_to", "properties": {}}]);
    let (status, body) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("d", "delta", json!([a, change_b])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], json!(["odd-1", "odd-2"]));
    assert_eq!(body["applied_relationships"], json!(["odd-rel"]));
    let mut filter = sync_body("d", "full", json!([]));
    filter["filters"] = json!({"entity_types": ["spaceship"]});
    filter["capabilities"] = json!(["relationship_rows"]);
    let (status, body) = s.post_json(&token, "/api/v1/sync/", &filter).await;
    assert_eq!(status, 200);
    let changes = body["changes"].as_array().expect("changes");
    let entities: Vec<&Value> = changes.iter().filter(|c| !c["entity"].is_null()).collect();
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0]["entity"]["entity_type"], "spaceship");
    assert_eq!(entities[0]["entity"]["source_type"], "None");
    let rels: Vec<&Value> = changes.iter().filter(|c| c["entity"].is_null()).collect();
    assert_eq!(
        rels[0]["relationships"][0]["relationship_type"],
        "teleports_to"
    );
    s.shutdown().await.expect("shutdown");
}

async fn gzip_both_ways(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let changes: Vec<Value> = (0..20)
        .map(|i| {
            create_change(
                &format!("gz-{i}"),
                "device",
                &format!("Device {i}"),
                json!({"watts": i}),
            )
        })
        .collect();
    let body = serde_json::to_vec(&sync_body("gz", "delta", json!(changes))).expect("json");
    let (status, answer) = raw_post(
        &s,
        &token,
        "/api/v1/sync/",
        gzip(&body),
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["applied"].as_array().map(Vec::len), Some(20));
    // A client without automatic decompression sees a gzip body for a large answer…
    let plain = reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .build()
        .expect("client");
    let res = plain
        .post(s.url("/api/v1/sync/"))
        .bearer_auth(&token)
        .header("accept-encoding", "gzip")
        .json(&sync_body("gz", "full", json!([])))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-encoding"], "gzip");
    let bytes = res.bytes().await.expect("body");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut text)
        .expect("gunzip");
    let full: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(full["changes"].as_array().map(Vec::len), Some(20));
    // …and a plain one for a small answer or without Accept-Encoding.
    let res = plain
        .get(s.url("/health"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert!(res.headers().get("content-encoding").is_none());
    let res = plain
        .post(s.url("/api/v1/sync/"))
        .bearer_auth(&token)
        .json(&sync_body("gz", "full", json!([])))
        .send()
        .await
        .expect("request");
    assert!(res.headers().get("content-encoding").is_none());
    s.shutdown().await.expect("shutdown");
}

async fn signed_messages(backend: Backend) {
    let key = "shared-signing-key";
    let Some(s) = TestServer::start_with(backend, |c| c.with_hmac_key(key)).await else {
        return;
    };
    let token = s.login_signed(key).await;
    let body = serde_json::to_vec(&sync_body("sig", "full", json!([]))).expect("json");
    let (status, answer) = raw_post(
        &s,
        &token,
        "/api/v1/sync/",
        body.clone(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(status, 401, "unsigned: {answer}");
    let (status, _) = raw_post(
        &s,
        &token,
        "/api/v1/sync/",
        body.clone(),
        &[
            ("content-type", "application/json"),
            ("x-inbetweenies-signature", "00ff"),
        ],
    )
    .await;
    assert_eq!(status, 401, "wrong signature");
    let headers = support::signed_headers(key, "POST", "/api/v1/sync/", "", &body);
    let nonce = headers[2].1.clone();
    let mut req = http_client()
        .post(s.url("/api/v1/sync/"))
        .bearer_auth(&token)
        .header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(name, value);
    }
    let res = req.body(body).send().await.expect("request");
    assert_eq!(res.status(), 200);
    let got = res.headers()["x-inbetweenies-signature"]
        .to_str()
        .expect("header")
        .to_owned();
    let ts: i64 = res.headers()["x-inbetweenies-timestamp"]
        .to_str()
        .expect("header")
        .parse()
        .expect("seconds");
    let bytes = res.bytes().await.expect("body");
    let string = funkygibbon_mock::response_string(200, &nonce, ts, &bytes);
    assert_eq!(
        funkygibbon_mock::sign_string(key.as_bytes(), &string),
        got,
        "the answer is signed"
    );
    s.shutdown().await.expect("shutdown");
}

async fn content_checksums_are_verified(backend: Backend) {
    let Some(s) = TestServer::start(backend).await else {
        return;
    };
    let token = s.login().await;
    let content = json!({"b": 1, "a": {"y": [1, 2], "x": "é"}});
    let sum = inbetweenies_proto::checksum::content_checksum(content.as_object().expect("object"));
    let mut good = create_change("sum-ok", "device", "ok", content.clone());
    good["entity"]["checksum"] = json!(sum);
    let (status, body) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("d", "delta", json!([good])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], json!(["sum-ok"]));
    let digest = s.handle.store().state_digest().await.expect("digest");
    let mut bad = create_change("sum-bad", "device", "bad", content);
    bad["entity"]["checksum"] = json!("0".repeat(64));
    let (status, body) = s
        .post_json(
            &token,
            "/api/v1/sync/",
            &sync_body("d", "delta", json!([bad])),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "changes", 0, "entity", "checksum"])
    );
    assert_eq!(body["error"]["field"], "changes[0].entity.checksum");
    assert_eq!(
        s.handle.store().state_digest().await.expect("digest"),
        digest,
        "nothing was written"
    );
    s.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn cors_only_when_configured() {
    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.with_cors_origins(["http://app.test"])
    })
    .await
    .expect("sqlite");
    let preflight = s
        .http
        .request(reqwest::Method::OPTIONS, s.url("/api/v1/sync/"))
        .header("origin", "http://app.test")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert_eq!(preflight.status(), 200, "preflight is answered before auth");
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    let res = s
        .http
        .get(s.url("/health"))
        .header("origin", "http://app.test")
        .send()
        .await
        .expect("get");
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "http://app.test"
    );
    let res = s
        .http
        .get(s.url("/health"))
        .header("origin", "http://evil.test")
        .send()
        .await
        .expect("get");
    assert!(res.headers().get("access-control-allow-origin").is_none());
    s.shutdown().await.expect("shutdown");

    let plain = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let res = plain
        .http
        .get(plain.url("/health"))
        .header("origin", "http://app.test")
        .send()
        .await
        .expect("get");
    assert!(
        res.headers().get("access-control-allow-origin").is_none(),
        "no CORS unless asked for"
    );
    plain.shutdown().await.expect("shutdown");
}

on_both_backends!(
    content_checksums_are_verified,
    malformed_bodies_write_nothing,
    oversized_bodies_get_413,
    unknown_paths_and_methods,
    unknown_types_refused_in_strict_mode,
    unknown_types_round_trip_by_default,
    gzip_both_ways,
    signed_messages,
);

mod fuzz {
    //! Random damage to a valid sync body, and random bytes: never a 500, never a panic.

    use funkygibbon_mock::{build_app, ServerConfig};
    use proptest::prelude::*;
    use serde_json::{json, Value};
    use tower::ServiceExt as _;

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            Just(Value::from("2026-01-01T00:00:00+00:00")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    const PATHS: &[&str] = &[
        "/device_id",
        "/user_id",
        "/sync_type",
        "/protocol_version",
        "/changes",
        "/changes/0",
        "/changes/0/change_type",
        "/changes/0/entity",
        "/changes/0/entity/id",
        "/changes/0/entity/version",
        "/changes/0/entity/entity_type",
        "/changes/0/entity/content",
        "/changes/0/entity/parent_versions",
        "/changes/0/relationships",
        "/changes/0/relationships/0",
        "/changes/0/relationships/0/to_entity_version",
        "/changes/0/relationships/0/relationship_type",
        "/changes/0/relationships/0/properties",
        "/filters",
        "/filters/since",
        "/filters/entity_types",
        "/vector_clock",
        "/vector_clock/clocks",
        "/cursor",
    ];

    fn valid_body(n: u64) -> Value {
        let v1 = format!("2026-01-01T00:00:{:02}.000000+00:00-000001-fuzz", n % 60);
        json!({
            "protocol_version": "inbetweenies-v2", "device_id": "fuzz", "user_id": "fuzz", "sync_type": "delta",
            "changes": [{"change_type": "create",
                "entity": {"id": format!("fz-{n}"), "version": v1, "entity_type": "device", "name": "F",
                           "content": {}, "source_type": "manual", "user_id": "fuzz", "parent_versions": []},
                "relationships": [{"id": format!("fr-{n}"), "from_entity_id": format!("fz-{n}"), "from_entity_version": v1,
                                   "to_entity_id": format!("fz-{n}"), "to_entity_version": v1,
                                   "relationship_type": "part_of", "properties": {}}]}],
            "filters": {"since": "2020-01-01T00:00:00+00:00"},
            "vector_clock": {"clocks": {}},
        })
    }

    fn set(body: &mut Value, path: &str, value: Value) {
        let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
        let target = if parent.is_empty() {
            Some(body)
        } else {
            body.pointer_mut(parent)
        };
        match target {
            Some(Value::Object(m)) => {
                m.insert(key.to_owned(), value);
            }
            Some(Value::Array(a)) => {
                if let Some(slot) = key.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                    *slot = value;
                }
            }
            _ => {}
        }
    }

    #[test]
    fn damaged_bodies_never_fail_inside_the_server() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (router, handle) = rt
            .block_on(build_app(
                ServerConfig::default()
                    .with_jwt_secret("fuzz")
                    .with_body_limit(64 * 1024),
            ))
            .expect("build");
        let token = handle.admin_token();
        let post = |bytes: Vec<u8>| {
            let req = axum::http::Request::post("/api/v1/sync/")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(bytes))
                .expect("request");
            let router = router.clone();
            rt.block_on(async move {
                let res = router.oneshot(req).await.expect("answer");
                let status = res.status().as_u16();
                let bytes = axum::body::to_bytes(res.into_body(), 1 << 22)
                    .await
                    .expect("body");
                (
                    status,
                    serde_json::from_slice::<Value>(&bytes).expect("a JSON answer"),
                )
            })
        };
        let config = ProptestConfig {
            cases: 96,
            failure_persistence: None,
            ..ProptestConfig::default()
        };
        let counter = std::sync::atomic::AtomicU64::new(0);
        let accepted = std::sync::atomic::AtomicU64::new(0);
        proptest!(config, |(edits in prop::collection::vec((0..PATHS.len(), arb_json()), 1..3),
                            noise in prop::collection::vec(any::<u8>(), 0..64))| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            let mut body = valid_body(n);
            for (p, v) in edits {
                set(&mut body, PATHS[p], v);
            }
            let (status, answer) = post(serde_json::to_vec(&body).expect("json"));
            prop_assert!(matches!(status, 200 | 400 | 422), "status {} for {}: {}", status, body, answer);
            if status == 200 {
                accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                prop_assert!(answer["error"]["code"].is_string(), "{}", answer);
            }
            let (status, answer) = post(noise);
            prop_assert!(matches!(status, 200 | 422), "status {} for random bytes: {}", status, answer);
        });
        let (cases, ok) = (counter.into_inner(), accepted.into_inner());
        assert!(cases >= 96, "{cases} cases ran");
        assert!(
            ok > 0 && ok < cases,
            "both accepted and refused bodies were tried ({ok} of {cases} accepted)"
        );
        // Still serving, and the store still answers.
        let (status, _) = post(serde_json::to_vec(&valid_body(0)).expect("json"));
        assert_eq!(status, 200);
    }
}
