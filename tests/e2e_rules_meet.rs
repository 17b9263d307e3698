//! Where the sync rules meet: per-id acknowledgements × the pull-guard, refused pushes ×
//! the pull, a forgotten sync position × pending changes. Each test is named after the
//! divergence or wedge it catches, and runs on SQLite and PostgreSQL where the server's
//! store matters.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use goodies_client::proto::{ChangeType, EntityChange, SyncChange};
use goodies_client::{
    BlowingOffClient, ClientConfig, EntityId, EntityType, HttpRequest, HttpResponse,
    HyperTransport, RepairReason, SourceType, Timestamp, Transport, TransportError, Version,
};
use goodies_e2e::{quiet_sync, test_config, Backend, TestServer, PASSWORD};
use goodies_store::{AckSet, PulledPage};
use serde_json::json;

fn obj(v: serde_json::Value) -> goodies_client::JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// Lets `budget` requests through, then fails every request at the transport (as if
/// the network went away) until the budget is raised again.
#[derive(Debug)]
struct Budget {
    inner: HyperTransport,
    budget: AtomicUsize,
}

#[async_trait]
impl Transport for Budget {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let ok = self
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
            .is_ok();
        if !ok {
            return Err(TransportError::http("network cut (test)"));
        }
        self.inner.send(request).await
    }
}

/// Forwards every request; the first time a request body contains the marker, the
/// server's answer is thrown away after the server handled (and committed) it.
#[derive(Debug)]
struct LoseAnswer {
    inner: HyperTransport,
    marker: Mutex<Option<String>>,
}

#[async_trait]
impl Transport for LoseAnswer {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let hit = {
            let mut m = self.marker.lock().expect("marker");
            let hit = m
                .as_deref()
                .is_some_and(|s| String::from_utf8_lossy(&request.body).contains(s));
            if hit {
                *m = None;
            }
            hit
        };
        let resp = self.inner.send(request).await?;
        if hit {
            return Err(TransportError::http("answer lost (test)"));
        }
        Ok(resp)
    }
}

async fn client_with(
    server: &TestServer,
    name: &str,
    config: ClientConfig,
    transport: Option<Arc<dyn Transport>>,
) -> anyhow::Result<BlowingOffClient> {
    let mut b =
        BlowingOffClient::builder(server.dir.path().join(format!("{name}.db"))).config(config);
    if let Some(t) = transport {
        b = b.transport(t);
    }
    let c = b.open().await?;
    c.login(&server.url, PASSWORD).await?;
    Ok(c)
}

/// A delete acknowledged as "already deleted" while the other device's tombstone sat
/// aside under the pull-guard: the client must end on the server's tombstone, with
/// matching digests, not keep its own for ever.
#[tokio::test]
async fn concurrent_deletes_converge_on_the_servers_tombstone() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let Some(server) = TestServer::start_on(backend, |c| c).await? else {
            continue;
        };
        let a = server.client("a").await?;
        let b = client_with(&server, "b", test_config().with_batch_size(1), None).await?;
        let h = a
            .create_entity(EntityType::Note, "shared", obj(json!({"x": 1})))
            .await?;
        quiet_sync(&a).await?;
        quiet_sync(&b).await?;

        let ta = a.delete_entity(&h.id).await?;
        quiet_sync(&a).await?;

        // b, offline: another edit first (so a page arrives before its delete is
        // pushed), then its own delete of the same entity.
        b.create_entity(EntityType::Note, "unrelated", obj(json!({})))
            .await?;
        b.delete_entity(&h.id).await?;
        let r1 = b.sync().await?;
        assert!(r1.errors.is_empty(), "{backend:?}: {:?}", r1.errors);
        let on_server = server.handle.store().entity(&h.id).await?.expect("row");
        let on_b = b.entity(&h.id).await?.expect("row");
        assert_eq!(on_server.version, ta.version, "{backend:?}");
        assert_eq!(
            on_b.version, on_server.version,
            "{backend:?}: b follows the server"
        );
        assert!(r1.digest_mismatch.is_none(), "{backend:?}: {r1:?}");
        assert!(
            r1.repair.is_none(),
            "{backend:?}: the acknowledgement carried the server's tombstone: {r1:?}"
        );
        let r2 = quiet_sync(&b).await?;
        assert!(r2.repair.is_none(), "{backend:?}: nothing left to repair");
        assert_eq!(b.state_digest().await?, server.digest().await?);
        server.stop().await?;
    }
    Ok(())
}

/// A push that lost a conflict, whose answer was lost: the re-send is acknowledged as
/// already held. The client must show the winner afterwards, not its losing edit.
#[tokio::test]
async fn resent_loser_after_a_lost_answer_shows_the_winner() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let Some(server) = TestServer::start_on(backend, |c| c).await? else {
            continue;
        };
        let a = server.client("a").await?;
        let lose = Arc::new(LoseAnswer {
            inner: HyperTransport::new(),
            marker: Mutex::new(None),
        });
        let b = client_with(
            &server,
            "b",
            test_config().with_batch_size(1).with_compression(false),
            Some(lose.clone()),
        )
        .await?;
        let h = a
            .create_entity(EntityType::Note, "h", obj(json!({"x": 1})))
            .await?;
        quiet_sync(&a).await?;
        quiet_sync(&b).await?;

        b.create_entity(EntityType::Note, "unrelated", obj(json!({})))
            .await?;
        let v2 = b.merge_content(&h.id, obj(json!({"x": 3}))).await?; // the older edit
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let s1 = a.merge_content(&h.id, obj(json!({"x": 2}))).await?; // the newer edit
        quiet_sync(&a).await?;

        *lose.marker.lock().expect("marker") = Some(v2.version.as_str().to_owned());
        let r = b.sync().await?;
        assert_eq!(r.pending, 0, "{backend:?}: {:?}", r.errors);
        let on_server = server.handle.store().entity(&h.id).await?.expect("row");
        let on_b = b.entity(&h.id).await?.expect("row");
        assert_eq!(on_server.version, s1.version, "{backend:?}");
        assert_eq!(on_b.version, s1.version, "{backend:?}: b shows the winner");
        assert_eq!(on_b.content["x"], 2);
        assert!(
            r.repair.is_none(),
            "{backend:?}: the acknowledgement carried the winner: {r:?}"
        );
        assert!(
            b.history(&h.id)
                .await?
                .iter()
                .any(|v| v.entity.version == v2.version && !v.latest),
            "{backend:?}: b's losing edit is kept as history"
        );
        let r2 = quiet_sync(&b).await?;
        assert!(r2.repair.is_none(), "{backend:?}");
        server.stop().await?;
    }
    Ok(())
}

/// A batch larger than the server's body limit is split until it fits; the pull goes
/// on meanwhile. Nothing stays pending.
#[tokio::test]
async fn an_oversized_batch_is_split_and_the_pull_goes_on() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.with_body_limit(20_000)).await?;
    let a = client_with(&server, "a", test_config().with_compression(false), None).await?;
    let b = server.client("b").await?;
    let big = "x".repeat(3_000);
    let mut mine = Vec::new();
    for i in 0..10 {
        mine.push(
            a.create_entity(
                EntityType::Note,
                &format!("n{i}"),
                obj(json!({"text": big})),
            )
            .await?,
        );
    }
    let from_b = b
        .create_entity(EntityType::Note, "from b", obj(json!({})))
        .await?;
    quiet_sync(&b).await?;
    let r = a.sync().await?;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.pending, 0);
    assert!(r.quarantined.is_empty());
    assert!(a.entity(&from_b.id).await?.is_some(), "a pulled b's note");
    for e in &mine {
        assert!(server.handle.store().entity(&e.id).await?.is_some());
    }
    quiet_sync(&a).await?;
    server.stop().await
}

/// A change too large for the server even alone is quarantined (kept, shown, counted);
/// the rest of the outbox is pushed and the pull goes on. An edit of the entity
/// releases it; the edit that makes it fit reaches the server.
#[tokio::test]
async fn a_change_too_large_alone_is_quarantined_and_the_rest_goes_on() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.with_body_limit(20_000)).await?;
    let a = client_with(&server, "a", test_config().with_compression(false), None).await?;
    let b = server.client("b").await?;
    let before = a
        .create_entity(EntityType::Note, "before", obj(json!({})))
        .await?;
    let huge = a
        .create_entity(
            EntityType::Note,
            "huge",
            obj(json!({"text": "y".repeat(30_000)})),
        )
        .await?;
    let after = a
        .create_entity(EntityType::Note, "after", obj(json!({})))
        .await?;
    let from_b = b
        .create_entity(EntityType::Note, "from b", obj(json!({})))
        .await?;
    quiet_sync(&b).await?;

    let r = a.sync().await?;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.quarantined.len(), 1, "{:?}", r.quarantined);
    assert_eq!(r.quarantined[0].entity_id.as_ref(), Some(&huge.id));
    assert!(
        r.quarantined[0].reason.starts_with("413"),
        "{:?}",
        r.quarantined
    );
    assert!(!r.is_ok(), "a refused change is not a clean sync");
    assert_eq!((r.pending, r.quarantined_total), (0, 1));
    let store = server.handle.store();
    assert!(store.entity(&before.id).await?.is_some());
    assert!(store.entity(&after.id).await?.is_some());
    assert!(store.entity(&huge.id).await?.is_none());
    assert!(a.entity(&from_b.id).await?.is_some(), "the pull went on");
    let status = a.status().await?;
    assert_eq!((status.pending_changes, status.quarantined_changes), (0, 1));
    assert_eq!(a.quarantined().await?.len(), 1);

    // A later sync does not send it again, and is not an error.
    let r = a.sync().await?;
    assert!(r.errors.is_empty() && r.quarantined.is_empty(), "{r:?}");
    assert_eq!(r.quarantined_total, 1);

    // The user trims it: the edit releases the quarantined version; the server gets
    // the new one (the oversized one is refused again and stays quarantined).
    let trimmed = a
        .update_entity(&huge.id, None, Some(obj(json!({"text": "short"}))))
        .await?;
    let r = a.sync().await?;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let on_server = store
        .entity(&huge.id)
        .await?
        .expect("it reached the server");
    assert_eq!(on_server.version, trimmed.version);
    assert_eq!(
        a.entity(&huge.id).await?.expect("row").version,
        trimmed.version
    );
    assert_eq!(r.quarantined_total, 1, "{r:?}");
    server.stop().await
}

/// A change the server refuses as invalid (a strict server and an entity type it does
/// not know) is quarantined with the server's reason; the valid changes of the same
/// batch are pushed, the pull goes on, and an explicit retry sends it again.
#[tokio::test]
async fn an_invalid_change_is_quarantined_and_the_rest_goes_on() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let Some(server) = TestServer::start_on(backend, |c| c.with_strict(true)).await? else {
            continue;
        };
        let a = server.client("a").await?;
        let b = server.client("b").await?;
        let good1 = a
            .create_entity(EntityType::Note, "good 1", obj(json!({})))
            .await?;
        let bad = a
            .create_entity(
                EntityType::Other("gizmo".into()),
                "unknown type",
                obj(json!({})),
            )
            .await?;
        let good2 = a
            .create_entity(EntityType::Device, "good 2", obj(json!({})))
            .await?;
        let from_b = b
            .create_entity(EntityType::Note, "from b", obj(json!({})))
            .await?;
        quiet_sync(&b).await?;

        let r = a.sync().await?;
        assert!(r.errors.is_empty(), "{backend:?}: {:?}", r.errors);
        assert_eq!(r.quarantined.len(), 1, "{backend:?}: {:?}", r.quarantined);
        assert_eq!(r.quarantined[0].entity_id.as_ref(), Some(&bad.id));
        assert!(
            r.quarantined[0].reason.starts_with("422")
                && r.quarantined[0].reason.contains("entity_type"),
            "{backend:?}: {:?}",
            r.quarantined[0].reason
        );
        let store = server.handle.store();
        assert!(store.entity(&good1.id).await?.is_some(), "{backend:?}");
        assert!(store.entity(&good2.id).await?.is_some(), "{backend:?}");
        assert!(store.entity(&bad.id).await?.is_none(), "{backend:?}");
        assert!(a.entity(&from_b.id).await?.is_some(), "{backend:?}: pulled");
        assert!(
            a.entity(&bad.id).await?.is_some(),
            "{backend:?}: the refused change is kept locally"
        );

        // An explicit retry sends it again; still refused, still kept.
        assert_eq!(a.retry_quarantined(None).await?, 1);
        assert_eq!(a.pending_changes().await?, 1);
        let r = a.sync().await?;
        assert_eq!(r.quarantined.len(), 1, "{backend:?}");
        assert_eq!((r.pending, r.quarantined_total), (0, 1));
        server.stop().await?;
    }
    Ok(())
}

/// Starts a server on a given address (to restart "the same server" on a new database).
struct Fixed {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start_at(addr: std::net::SocketAddr, page_size: usize) -> anyhow::Result<Fixed> {
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("server.db").display());
    let config = funkygibbon_mock::ServerConfig::new(db)
        .with_admin_password(PASSWORD)
        .with_jwt_secret("e2e-secret")
        .with_page_size(page_size);
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, handle) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            let _ = funkygibbon_mock::serve_with_handle(
                listener,
                config,
                async move {
                    let _ = stopped.await;
                },
                ready,
            )
            .await;
        })
    });
    drop(handle.await?);
    Ok(Fixed {
        stop,
        thread,
        _dir: dir,
    })
}

impl Fixed {
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::task::spawn_blocking(move || self.thread.join())
            .await?
            .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
        Ok(())
    }
}

/// A pull cut mid-cursor, then the server restarted on a fresh database at the same
/// URL: the server answers `INVALID_SYNC_STATE`; the client forgets cursor and
/// watermark, pulls in full, keeps its pending change, gives the new server what it
/// lacks, and ends with matching digests in the same sync.
#[tokio::test]
async fn invalid_sync_state_resyncs_in_full_and_keeps_pending_changes() -> anyhow::Result<()> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = probe.local_addr()?;
    drop(probe);
    let url = format!("http://{addr}");
    let s1 = start_at(addr, 2).await?;
    let dir = tempfile::tempdir()?;
    let a = BlowingOffClient::builder(dir.path().join("a.db"))
        .config(test_config())
        .open()
        .await?;
    a.login(&url, PASSWORD).await?;
    for i in 0..6 {
        a.create_entity(EntityType::Note, &format!("n{i}"), obj(json!({})))
            .await?;
    }
    a.sync().await?;

    let budget = Arc::new(Budget {
        inner: HyperTransport::new(),
        budget: AtomicUsize::new(2),
    });
    let c = BlowingOffClient::builder(dir.path().join("c.db"))
        .config(test_config())
        .transport(budget.clone())
        .open()
        .await?;
    c.login(&url, PASSWORD).await?;
    let r = c.sync().await?; // page 1 arrives, then the network dies while paging
    assert!(!r.errors.is_empty());
    let held = c.status().await?;
    assert!(held.cursor.is_some(), "a pull left unfinished");

    s1.stop().await?;
    let s2 = start_at(addr, 2).await?; // the same URL, a fresh database
    budget.budget.store(usize::MAX, Ordering::SeqCst);
    let mine = c
        .create_entity(EntityType::Note, "made while away", obj(json!({})))
        .await?;
    let r = c.sync().await?;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let repair = r.repair.as_ref().expect("a repair was made and reported");
    assert_eq!(repair.reason, RepairReason::InvalidSyncState);
    assert!(repair.converged, "{repair:?}");
    assert!(r.digest.as_ref().is_some_and(|d| d.matches()), "{r:?}");
    assert_eq!(r.pending, 0, "the pending change was pushed, not dropped");
    let status = c.status().await?;
    assert!(status.cursor.is_none());

    // A fresh client of the new server sees the change made while away, and what c
    // held from the old server (given back, not lost).
    let d = BlowingOffClient::builder(dir.path().join("d.db"))
        .config(test_config())
        .open()
        .await?;
    d.login(&url, PASSWORD).await?;
    quiet_sync(&d).await?;
    assert!(d.entity(&mine.id).await?.is_some());
    assert_eq!(d.state_digest().await?, c.state_digest().await?);
    let again = quiet_sync(&c).await?;
    assert!(again.repair.is_none());
    s2.stop().await
}

/// A mirror that differs from the server with nothing pending (here: pages the server
/// never sent, applied behind the sync's back — what a restored or hand-edited mirror
/// looks like) is repaired by the next sync, which says so: the server's versions
/// become latest again, an entity only the mirror holds is given back to the server,
/// and a tombstone of an id the server never held is dropped.
#[tokio::test]
async fn a_digest_mismatch_is_repaired_and_reported() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let Some(server) = TestServer::start_on(backend, |c| c).await? else {
            continue;
        };
        let a = server.client("a").await?;
        let b = server.client("b").await?;
        let e = a
            .create_entity(EntityType::Note, "n", obj(json!({"v": 1})))
            .await?;
        quiet_sync(&a).await?;
        quiet_sync(&b).await?;

        let fake = |id: &EntityId, version: &str, parents: Vec<Version>, deleted: bool| {
            let mut content = obj(json!({"v": 99}));
            if deleted {
                content.insert("deleted".into(), json!(true));
            }
            SyncChange {
                change_type: if deleted {
                    ChangeType::Delete
                } else {
                    ChangeType::Update
                },
                entity: Some(EntityChange {
                    id: id.clone(),
                    version: Version::new(version),
                    entity_type: EntityType::Note,
                    name: "not from the server".into(),
                    content,
                    source_type: SourceType::Manual,
                    user_id: "elsewhere".into(),
                    parent_versions: parents,
                    checksum: None,
                    created_at: None,
                    updated_at: None,
                }),
                relationships: vec![],
            }
        };
        let only_here = EntityId::new_random();
        let deleted_here = EntityId::new_random();
        b.store()
            .apply_response(
                &AckSet::default(),
                &PulledPage {
                    changes: vec![
                        fake(
                            &e.id,
                            "2030-01-01T00:00:00.000000+00:00-000001-elsewhere",
                            vec![e.version.clone()],
                            false,
                        ),
                        fake(
                            &only_here,
                            "2030-01-01T00:00:00.000000+00:00-000002-elsewhere",
                            vec![],
                            false,
                        ),
                        fake(
                            &deleted_here,
                            "2030-01-01T00:00:00.000000+00:00-000003-elsewhere",
                            vec![],
                            true,
                        ),
                    ],
                    cursor: None,
                    server_time: Timestamp::now(),
                },
            )
            .await?;

        let r = b.sync().await?;
        assert!(r.errors.is_empty(), "{backend:?}: {:?}", r.errors);
        let repair = r
            .repair
            .as_ref()
            .expect("the mismatch was repaired and reported");
        assert_eq!(repair.reason, RepairReason::DigestMismatch);
        assert!(repair.converged, "{backend:?}: {repair:?}");
        assert_eq!((repair.requeued, repair.forgotten), (1, 1), "{backend:?}");
        assert!(r.digest_mismatch.is_none(), "{backend:?}");
        assert!(r.digest.as_ref().is_some_and(|d| d.matches()));
        assert_eq!(b.entity(&e.id).await?.expect("row").version, e.version);
        assert!(b.entity(&deleted_here).await?.is_none());
        assert!(
            server.handle.store().entity(&only_here).await?.is_some(),
            "{backend:?}: given back to the server"
        );
        let again = quiet_sync(&b).await?;
        assert!(again.repair.is_none());
        quiet_sync(&a).await?;
        assert_eq!(a.state_digest().await?, server.digest().await?);
        server.stop().await?;
    }
    Ok(())
}

/// A page read ahead for one client is never handed to another: client C's connection
/// dies after its first page (its page 2 is read ahead); B, whose sync position was
/// forgotten, pushes `power=on` (acknowledged) and then pulls from the start with the
/// same query. B must keep its own acknowledged write, and its next edit must build on
/// it, on SQLite and PostgreSQL.
#[tokio::test]
async fn a_page_read_ahead_for_another_client_never_reverts_an_acknowledged_write(
) -> anyhow::Result<()> {
    for backend in BACKENDS {
        let Some(server) = TestServer::start_on(backend, |c| c.with_page_size(2)).await? else {
            continue;
        };
        let a = server.client("a").await?;
        a.create_entity(EntityType::Note, "e1", obj(json!({})))
            .await?;
        a.create_entity(EntityType::Note, "e2", obj(json!({})))
            .await?;
        let e3 = a
            .create_entity(EntityType::Note, "e3", obj(json!({"power": "off"})))
            .await?;
        quiet_sync(&a).await?;

        let b = server.client("b").await?;
        quiet_sync(&b).await?;
        // b forgets its sync position (what connect() to another URL spelling does).
        b.store().reset_sync_state().await?;
        let v2 = b.merge_content(&e3.id, obj(json!({"power": "on"}))).await?;

        // c: a fresh client whose connection dies after its first page (login + page 1).
        let c_transport = Arc::new(Budget {
            inner: HyperTransport::new(),
            budget: AtomicUsize::new(2),
        });
        let c = client_with(&server, "c", test_config(), Some(c_transport)).await?;
        let _ = c.sync().await?;
        // c's page 2 has been read ahead (and is never collected by c).
        server.handle.wait_for_read_ahead(1).await;

        let rb = b.sync().await?;
        assert!(rb.errors.is_empty(), "{backend:?}: {:?}", rb.errors);
        let on_server = server.handle.store().entity(&e3.id).await?.expect("row");
        let on_b = b.entity(&e3.id).await?.expect("row");
        assert_eq!(
            on_server.version, v2.version,
            "{backend:?}: server holds b's write"
        );
        assert_eq!(
            on_b.version, v2.version,
            "{backend:?}: b keeps its acknowledged write"
        );
        assert_eq!(on_b.content["power"], "on");
        assert!(
            rb.digest.as_ref().is_some_and(|d| d.matches()),
            "{backend:?}: {rb:?}"
        );
        assert!(rb.repair.is_none(), "{backend:?}: nothing to repair");

        // b's next edit builds on its own write: power stays on.
        b.merge_content(&e3.id, obj(json!({"brightness": 50})))
            .await?;
        quiet_sync(&b).await?;
        let after = server.handle.store().entity(&e3.id).await?.expect("row");
        assert_eq!(after.content["power"], "on", "{backend:?}");
        assert_eq!(after.content["brightness"], 50, "{backend:?}");
        server.stop().await?;
    }
    Ok(())
}
