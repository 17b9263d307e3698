//! The sync engine against the Python reference server's recorded answers: a transport
//! that replays `tests/vectors/reference` responses in order, then checks the local state.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use goodies_client::proto::codec::gzip_decode;
use goodies_client::proto::{EntityId, SyncRequest, Version};
use goodies_client::{
    BlowingOffClient, ClientConfig, EntityType, HttpRequest, HttpResponse, JsonObject, Method,
    RetryPolicy, SyncError, Transport, TransportError,
};
use goodies_store::LocalEdit;
use serde_json::{json, Value};

fn vectors() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/vectors/reference")
}

/// One expected exchange: the path the client must call and the recorded answer.
struct Step {
    path: &'static str,
    status: u16,
    body: Vec<u8>,
}

fn step(path: &'static str, file: &str) -> Step {
    let meta: Value = serde_json::from_slice(
        &std::fs::read(vectors().join(file.replace(".response.json", ".meta.json")))
            .unwrap_or_else(|e| panic!("{file}: {e}")),
    )
    .expect("meta json");
    Step {
        path,
        status: meta["status"].as_u64().expect("status") as u16,
        body: std::fs::read(vectors().join(file)).expect("response file"),
    }
}

/// Answers each request with the next recorded response; keeps what was sent.
#[derive(Debug, Default)]
struct Replay {
    steps: Mutex<VecDeque<(String, u16, Vec<u8>)>>,
    sent: Mutex<Vec<HttpRequest>>,
}

impl Replay {
    fn new(steps: Vec<Step>) -> Arc<Self> {
        Arc::new(Replay {
            steps: Mutex::new(
                steps
                    .into_iter()
                    .map(|s| (s.path.to_owned(), s.status, s.body))
                    .collect(),
            ),
            sent: Mutex::new(Vec::new()),
        })
    }

    /// The sync requests sent so far, decoded.
    fn sync_requests(&self) -> Vec<SyncRequest> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.url.ends_with("/api/v1/sync/"))
            .map(|r| {
                let body = if r.header("content-encoding") == Some("gzip") {
                    gzip_decode(&r.body, 1 << 26).expect("gzip body")
                } else {
                    r.body.clone()
                };
                serde_json::from_slice(&body).expect("a sync request")
            })
            .collect()
    }

    fn remaining(&self) -> usize {
        self.steps.lock().unwrap().len()
    }
}

#[async_trait]
impl Transport for Replay {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let (path, status, body) = self
            .steps
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| TransportError::http("no recorded answer left"))?;
        assert_eq!(request.method, Method::Post);
        assert_eq!(
            request.url,
            format!("http://reference.test{path}"),
            "unexpected request"
        );
        self.sent.lock().unwrap().push(request);
        Ok(HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        })
    }
}

async fn client(dir: &tempfile::TempDir, replay: &Arc<Replay>) -> BlowingOffClient {
    BlowingOffClient::builder(dir.path().join("client.db"))
        .config(ClientConfig::default().with_retry(RetryPolicy::none()))
        .transport(replay.clone())
        .open()
        .await
        .expect("open client")
}

fn obj(v: Value) -> JsonObject {
    v.as_object().cloned().expect("an object")
}

/// The reference client's own session (client_trace 11–16): login, a full pull, an empty
/// delta, a push of two creates. Our client pages with delta, sends `since` with an offset,
/// and ends with the server's versions latest and the digest equal to the server's.
#[tokio::test]
async fn reference_client_session() {
    let dir = tempfile::tempdir().unwrap();
    let replay = Replay::new(vec![
        step(
            "/api/v1/auth/admin/login",
            "client_trace/11_POST_api_v1_auth_admin_login.response.json",
        ),
        step(
            "/api/v1/sync/",
            "client_trace/13_POST_api_v1_sync.response.json",
        ),
        step(
            "/api/v1/sync/",
            "client_trace/15_POST_api_v1_sync.response.json",
        ),
        step(
            "/api/v1/sync/",
            "client_trace/16_POST_api_v1_sync.response.json",
        ),
    ]);
    let c = client(&dir, &replay).await;

    let login = c
        .login("http://reference.test/", "RefAdmin#2024!")
        .await
        .unwrap();
    assert_eq!(login.user_id, "admin", "the token's sub names the user");
    assert_eq!(login.role.as_deref(), Some("admin"));

    // First sync: the full state (two entities), digest compared and equal.
    let r1 = c.sync().await.unwrap();
    assert!(r1.is_ok(), "{:?}", r1.errors);
    assert_eq!(r1.pulled_entities, 2);
    assert_eq!(
        r1.watermark.unwrap().to_string(),
        "2026-11-21T23:10:37.971944+00:00"
    );
    let d = r1.digest.as_ref().expect("a digest check");
    assert!(d.matches(), "{d:?}");
    let rooms = c.get_rooms().await.unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].name, "Kitchen");
    assert_eq!(c.get_devices().await.unwrap()[0].name, "Smart Bulb");

    // Second sync: an empty delta from the watermark.
    let r2 = c.sync().await.unwrap();
    assert!(r2.is_ok(), "{:?}", r2.errors);
    assert_eq!(r2.pulled_entities, 0);

    // Two local creates with the ids the reference client used, then a push.
    let hall = c
        .store()
        .write_local(
            LocalEdit::Create {
                id: Some(EntityId::new("578006c6-20c0-40a3-92d2-24c63c3940b4")),
                entity_type: EntityType::Room,
                name: "Hall".into(),
                content: JsonObject::new(),
                source_type: goodies_client::SourceType::Manual,
            },
            "lib-user",
        )
        .await
        .unwrap();
    let lamp = c
        .store()
        .write_local(
            LocalEdit::Create {
                id: Some(EntityId::new("67255881-edcd-42c5-b182-c78898160563")),
                entity_type: EntityType::Device,
                name: "Lib Lamp".into(),
                content: obj(json!({"watts": 7})),
                source_type: goodies_client::SourceType::Manual,
            },
            "lib-user",
        )
        .await
        .unwrap();
    assert_eq!(c.pending_changes().await.unwrap(), 2);
    let r3 = c.sync().await.unwrap();
    assert!(r3.is_ok(), "{:?}", r3.errors);
    assert_eq!(r3.acknowledged, 2);
    assert_eq!(r3.pending, 0);
    assert!(
        r3.digest.as_ref().is_some_and(|d| d.matches()),
        "{:?}",
        r3.digest
    );
    // The server's versions are latest; ours are kept in history.
    let hall_now = c.entity(&hall.id).await.unwrap().unwrap();
    assert_eq!(
        hall_now.version,
        Version::new("2026-11-21T23:10:37.988127+00:00-000001-lib-user")
    );
    let history = c.history(&lamp.id).await.unwrap();
    assert!(history.iter().any(|v| v.entity.version == lamp.version));
    assert_eq!(c.entities_of_type(EntityType::Room).await.unwrap().len(), 2);

    // What went over the wire.
    let sent = replay.sync_requests();
    assert_eq!(sent.len(), 3);
    assert!(sent.iter().all(|r| r.sync_type.as_str() == "delta"));
    assert!(
        sent[0].since().is_none(),
        "the first pull asks for everything"
    );
    assert_eq!(
        sent[1].since().unwrap().to_string(),
        "2026-11-21T23:10:37.971944+00:00"
    );
    assert_eq!(sent[2].changes.len(), 2);
    for ch in &sent[2].changes {
        let e = ch.entity.as_ref().unwrap();
        assert_eq!(
            e.source_type.as_str(),
            "manual",
            "only known enum values are sent"
        );
        assert!(e.version.parse().is_ok());
    }
    assert_eq!(replay.remaining(), 0);
}

/// The reference pages at 500 rows with a string cursor; the client resumes with delta
/// and that cursor until it is null, and keeps all 524 rows.
#[tokio::test]
async fn reference_pagination() {
    let dir = tempfile::tempdir().unwrap();
    let replay = Replay::new(vec![
        step("/api/v1/sync/", "79_sync_full_page1_cursor.response.json"),
        step(
            "/api/v1/sync/",
            "80_sync_delta_page2_with_cursor.response.json",
        ),
    ]);
    let c = client(&dir, &replay).await;
    c.connect("http://reference.test", Some("opaque-token"))
        .await
        .unwrap();
    let r = c.sync().await.unwrap();
    assert!(r.is_ok(), "{:?}", r.errors);
    assert_eq!(r.requests, 2);
    assert_eq!(r.pulled_entities, 524);
    assert!(r.digest.as_ref().is_some_and(|d| d.matches()));
    let sent = replay.sync_requests();
    assert_eq!(sent[1].cursor.as_ref().map(|c| c.0.as_str()), Some("507"));
    assert_eq!(sent[1].sync_type.as_str(), "delta");
    let st = c.status().await.unwrap();
    assert_eq!(st.cursor, None);
    assert_eq!(
        st.watermark.unwrap().to_string(),
        serde_json::from_slice::<Value>(
            &std::fs::read(vectors().join("80_sync_delta_page2_with_cursor.response.json"))
                .unwrap()
        )
        .unwrap()["server_time"]
            .as_str()
            .unwrap()
    );
    assert_eq!(c.stats().await.unwrap().entity_versions, 524);
}

/// A push the reference server decides against us (vector 23): the entry is acked, the
/// conflict is reported, the server's version is latest again locally, digests agree.
#[tokio::test]
async fn reference_conflict_client_loses() {
    let dir = tempfile::tempdir().unwrap();
    let replay = Replay::new(vec![
        step("/api/v1/sync/", "09_sync_full_after_create.response.json"),
        step(
            "/api/v1/sync/",
            "23_sync_conflict_client_loses_older.response.json",
        ),
    ]);
    let c = client(&dir, &replay).await;
    c.connect("http://reference.test", Some("opaque-token"))
        .await
        .unwrap();
    let r1 = c.sync().await.unwrap();
    assert!(r1.is_ok(), "{:?}", r1.errors);
    let room_id = EntityId::new("ae3c6d8b-b160-4f4c-8a43-ccac366bf6cc");
    let v1 = c.entity(&room_id).await.unwrap().unwrap().version;

    let ours = c
        .update_room(&room_id, Some("Kitchen (stale edit)"), None)
        .await
        .unwrap();
    let r2 = c.sync().await.unwrap();
    assert!(r2.is_ok(), "{:?}", r2.errors);
    assert_eq!(r2.conflicts_resolved, 1);
    assert_eq!(r2.conflicts[0].resolved_version, v1);
    assert_eq!(r2.pending, 0, "a lost push is acknowledged, not retried");
    let room = c.get_room(&room_id).await.unwrap();
    assert_eq!(room.version, v1, "the server's version is latest again");
    assert_eq!(room.name, "Kitchen");
    let history = c.history(&room_id).await.unwrap();
    assert!(history
        .iter()
        .any(|v| v.entity.version == ours.version && !v.latest));
    assert!(
        r2.digest.as_ref().is_some_and(|d| d.matches()),
        "{:?}",
        r2.digest
    );
    let recorded = c.recent_conflicts().await.unwrap();
    assert_eq!(recorded.len(), 1);
    let sent = replay.sync_requests();
    assert_eq!(
        sent[1].changes[0].entity.as_ref().unwrap().parent_versions,
        vec![v1]
    );
}

/// The reference answers a push with an unknown source type with a plain-text 500 (vector
/// 39). Our client never sends such values, but a 500 must leave everything pending and
/// be reported (not reported as success, as the reference CLI does). A refused push does
/// not stop the pull: the next request asks for changes without pushing (answered here
/// with the reference's answer to a pull of an empty store).
#[tokio::test]
async fn server_error_keeps_changes_pending() {
    let dir = tempfile::tempdir().unwrap();
    let replay = Replay::new(vec![
        step(
            "/api/v1/sync/",
            "39_sync_push_invalid_source_type_500.response.json",
        ),
        step("/api/v1/sync/", "06_sync_full_empty_store.response.json"),
    ]);
    let c = client(&dir, &replay).await;
    c.connect("http://reference.test", Some("opaque-token"))
        .await
        .unwrap();
    let home = c.create_home("Home").await.unwrap();
    let r = c.sync().await.unwrap();
    assert!(!r.is_ok());
    assert!(
        matches!(r.errors.as_slice(), [SyncError::Server { status: 500, .. }]),
        "{:?}",
        r.errors
    );
    let sent = replay.sync_requests();
    assert_eq!(sent.len(), 2, "the push, then a pull");
    assert_eq!(sent[0].changes.len(), 1);
    assert!(sent[1].changes.is_empty(), "the pull pushes nothing");
    assert_eq!(r.pending, 1);
    assert_eq!(c.pending_changes().await.unwrap(), 1);
    assert!(c.entity(&home.id).await.unwrap().is_some());
    assert!(
        c.status().await.unwrap().watermark.is_some(),
        "the pull completed"
    );
    assert!(
        r.digest.is_none(),
        "no digest check while a change is pending"
    );
}
