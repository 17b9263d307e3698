//! Client against the real server on loopback: basic and bidirectional sync, several
//! clients on the same and different entities, offline edits, the pull-guard, observers.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;
use goodies_client::{ClientError, ClientEvent, EntityType, RelationshipQuery, SyncError};
use goodies_e2e::{assert_converged, quiet_sync, TestServer};
use serde_json::json;

fn obj(v: serde_json::Value) -> goodies_client::JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

#[tokio::test]
async fn basic_sync() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.client("a").await?;
    let home = a.create_home("Home").await?;
    let kitchen = a.create_room(&home.id, "Kitchen", Some(0)).await?;
    let lamp = a
        .create_device(&kitchen.id, "Lamp", "light", Some("Acme"))
        .await?;
    a.update_device_state(&lamp.id, obj(json!({"power": "on", "brightness": 80})))
        .await?;
    assert_eq!(a.pending_changes().await?, 6, "3 creates, 2 edges, 1 state");

    let r = quiet_sync(&a).await?;
    assert_eq!(r.acknowledged, 6);
    assert_eq!(r.conflicts_resolved, 0);
    let on_server = server.handle.store().entity(&lamp.id).await?.unwrap();
    assert_eq!(on_server.content["power"], "on");
    assert_eq!(
        server
            .handle
            .store()
            .relationships(&RelationshipQuery::default())
            .await?
            .len(),
        2
    );
    assert_converged(&server, &[&a]).await?;

    // A second sync with nothing to do is quiet too, and cheap.
    let r2 = quiet_sync(&a).await?;
    assert_eq!(r2.pushed, 0);
    assert_eq!(r2.requests, 1);
    server.stop().await
}

#[tokio::test]
async fn bidirectional_sync_with_relationships() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.client("a").await?;
    let b = server.client("b").await?;
    let home = a.create_home("Home").await?;
    let hall = a.create_room(&home.id, "Hall", None).await?;
    quiet_sync(&a).await?;

    let r = quiet_sync(&b).await?;
    assert_eq!(r.pulled_entities, 2);
    assert_eq!(
        r.pulled_relationships, 1,
        "relationships reach other clients"
    );
    assert_eq!(b.get_home().await?.unwrap().id, home.id);
    let rooms = b.get_rooms_in_home(&home.id).await?;
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0].id, hall.id);

    // b adds a device in a's room; a sees it with its room.
    let fan = b.create_device(&hall.id, "Fan", "fan", None).await?;
    quiet_sync(&b).await?;
    quiet_sync(&a).await?;
    let in_hall = a.get_devices_in_room(&hall.id).await?;
    assert_eq!(in_hall.len(), 1);
    assert_eq!(in_hall[0].id, fan.id);
    assert_eq!(in_hall[0].device_type.as_deref(), Some("fan"));
    assert_converged(&server, &[&a, &b]).await?;
    server.stop().await
}

#[tokio::test]
async fn two_clients_same_and_different_entities() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.client("a").await?;
    let b = server.client("b").await?;
    let home = a.create_home("Home").await?;
    let room = a.create_room(&home.id, "Den", None).await?;
    let tv = a.create_device(&room.id, "TV", "tv", None).await?;
    let lamp = a.create_device(&room.id, "Lamp", "light", None).await?;
    quiet_sync(&a).await?;
    quiet_sync(&b).await?;

    // Different entities: no conflict. Same entity: the server decides.
    a.update_characteristic(&tv.id, "power", json!("on"))
        .await?;
    b.update_characteristic(&lamp.id, "power", json!("on"))
        .await?;
    let va = a
        .update_characteristic(&room.id.clone(), "x", json!(1))
        .await;
    assert!(
        matches!(va, Err(ClientError::NotFound(_))),
        "a room is not a device"
    );
    let a_edit = a.update_room(&room.id, Some("Den (a)"), None).await?;
    let b_edit = b.update_room(&room.id, Some("Den (b)"), None).await?;

    let ra = a.sync().await?;
    assert!(ra.errors.is_empty(), "{:?}", ra.errors);
    let rb = b.sync().await?;
    assert!(rb.errors.is_empty(), "{:?}", rb.errors);
    assert_eq!(ra.conflicts_resolved, 0, "a pushed first: fast-forward");
    assert_eq!(
        rb.conflicts_resolved, 1,
        "b's edit of the same room conflicts"
    );
    quiet_sync(&a).await?;
    quiet_sync(&b).await?;
    assert_converged(&server, &[&a, &b]).await?;

    // Both edits are on the server; exactly one is latest; both clients agree on which.
    let history = server.handle.store().history(&room.id).await?;
    let versions: HashSet<_> = history.iter().map(|v| v.entity.version.clone()).collect();
    assert!(versions.contains(&a_edit.version) && versions.contains(&b_edit.version));
    let winner = server.handle.store().entity(&room.id).await?.unwrap();
    assert_eq!(a.get_room(&room.id).await?.version, winner.version);
    assert_eq!(b.get_room(&room.id).await?.version, winner.version);
    assert_eq!(rb.conflicts[0].resolved_version, winner.version);
    assert_eq!(b.recent_conflicts().await?.len(), 1);
    // The independent edits both survived.
    assert_eq!(a.get_device_state(&lamp.id).await?["power"], "on");
    assert_eq!(b.get_device_state(&tv.id).await?["power"], "on");
    server.stop().await
}

#[tokio::test]
async fn five_clients_converge() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = Vec::new();
    for n in 0..5 {
        clients.push(server.client(&format!("c{n}")).await?);
    }
    let home = clients[0].create_home("Home").await?;
    let room = clients[0].create_room(&home.id, "Shared", None).await?;
    let shared = clients[0]
        .create_device(&room.id, "Thermostat", "thermostat", None)
        .await?;
    quiet_sync(&clients[0]).await?;
    for c in &clients[1..] {
        quiet_sync(c).await?;
    }

    // Everyone edits the shared device and creates a device of their own.
    let mut own = Vec::new();
    for (n, c) in clients.iter().enumerate() {
        c.update_characteristic(&shared.id, "target", json!(18 + n))
            .await?;
        own.push(
            c.create_device(&room.id, &format!("Device {n}"), "sensor", None)
                .await?,
        );
    }
    for c in &clients {
        let r = c.sync().await?;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    for c in &clients {
        quiet_sync(c).await?;
    }
    let refs: Vec<_> = clients.iter().collect();
    assert_converged(&server, &refs).await?;
    for c in &clients {
        let devices = c.get_devices_in_room(&room.id).await?;
        assert_eq!(devices.len(), 6, "the shared device and five own devices");
    }
    // Five edits of the shared device, none lost: all are versions on the server.
    let history = server.handle.store().history(&shared.id).await?;
    assert!(
        history.len() >= 6,
        "create + 5 edits, got {}",
        history.len()
    );
    assert_eq!(history.iter().filter(|v| v.latest).count(), 1);
    server.stop().await
}

#[tokio::test]
async fn offline_edits_sync_later() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.offline_client("a").await?;
    // Everything works with no server configured at all.
    let home = a.create_home("Cabin").await?;
    let room = a.create_room(&home.id, "Porch", Some(0)).await?;
    let light = a
        .create_device(&room.id, "Porch light", "light", None)
        .await?;
    a.update_device_state(&light.id, obj(json!({"power": "off"})))
        .await?;
    assert!(matches!(a.sync().await, Err(ClientError::NotConnected)));

    // A server that is down: reported, nothing lost.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead_url = format!("http://{}", dead.local_addr()?);
    drop(dead);
    a.connect(&dead_url, Some("token")).await?;
    let r = a.sync().await?;
    assert!(r.is_unreachable(), "{:?}", r.errors);
    assert!(matches!(
        r.errors.as_slice(),
        [SyncError::Unreachable { attempts: 4, .. }]
    ));
    assert_eq!(r.pending, 6);
    assert_eq!(r.retries, 3);

    // Back online: all pushed, once.
    a.login(&server.url, goodies_e2e::PASSWORD).await?;
    let r = quiet_sync(&a).await?;
    assert_eq!(r.acknowledged, 6);
    let b = server.client("b").await?;
    quiet_sync(&b).await?;
    assert_eq!(b.get_device_state(&light.id).await?["power"], "off");
    assert_converged(&server, &[&a, &b]).await?;
    server.stop().await
}

/// The pull-guard: a edits two devices offline; b edits one of them and syncs; a syncs
/// one change per request, so the server's version of the second arrives while a's edit
/// of it is still pending. Nothing is lost: the server decides, the loser stays in the
/// server's history, and everyone converges.
#[tokio::test]
async fn pull_guard_keeps_pending_edits() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = goodies_client::BlowingOffClient::builder(server.dir.path().join("a.db"))
        .config(goodies_e2e::test_config().with_batch_size(1))
        .open()
        .await?;
    a.login(&server.url, goodies_e2e::PASSWORD).await?;
    let b = server.client("b").await?;
    let home = a.create_home("Home").await?;
    let room = a.create_room(&home.id, "Office", None).await?;
    let x = a.create_device(&room.id, "X", "light", None).await?;
    let y = a.create_device(&room.id, "Y", "light", None).await?;
    quiet_sync(&a).await?;
    quiet_sync(&b).await?;

    let a_x = a.update_characteristic(&x.id, "by", json!("a")).await?;
    let a_y = a.update_characteristic(&y.id, "by", json!("a")).await?;
    let b_y = b.update_characteristic(&y.id, "by", json!("b")).await?;
    quiet_sync(&b).await?;

    let r = a.sync().await?;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(
        r.deferred, 1,
        "b's version of y arrived while a's edit was pending"
    );
    assert_eq!(r.conflicts_resolved, 1);
    assert_eq!(r.pending, 0);
    quiet_sync(&a).await?;
    quiet_sync(&b).await?;
    assert_converged(&server, &[&a, &b]).await?;

    let history = server.handle.store().history(&y.id).await?;
    let versions: HashSet<_> = history.iter().map(|v| v.entity.version.clone()).collect();
    assert!(versions.contains(&a_y.version), "a's edit is on the server");
    assert!(versions.contains(&b_y.version), "b's edit is on the server");
    let latest = server.handle.store().entity(&y.id).await?.unwrap();
    let loser = if latest.version == a_y.version {
        &b_y
    } else {
        &a_y
    };
    assert!(history
        .iter()
        .any(|v| v.entity.version == loser.version && !v.latest));
    assert_eq!(a.get_device(&y.id).await?.version, latest.version);
    assert_eq!(a.get_device(&x.id).await?.version, a_x.version);
    server.stop().await
}

#[tokio::test]
async fn observers_and_background_sync() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.client("a").await?;
    let b = server.client("b").await?;
    let home = a.create_home("Home").await?;
    quiet_sync(&a).await?;

    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let handle = b.on_change(move |e| {
        if let Ok(mut s) = seen2.lock() {
            s.push(e.clone());
        }
    });
    let mut stream = b.observe_changes();
    let bg = b.start_background_sync_limited(Duration::from_millis(1), 2);
    let stats = bg.wait().await;
    assert_eq!(stats.runs, 2);
    assert_eq!(stats.failures, 0);
    drop(handle);

    let events = seen.lock().map(|s| s.clone()).unwrap_or_default();
    let started = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::SyncStarted))
        .count();
    let finished = events
        .iter()
        .filter(|e| matches!(e, ClientEvent::SyncFinished(s) if s.ok))
        .count();
    assert_eq!((started, finished), (2, 2));
    assert!(events
        .iter()
        .any(|e| matches!(e, ClientEvent::EntityChangedBySync { id } if *id == home.id)));
    assert!(events
        .iter()
        .any(|e| matches!(e, ClientEvent::Progress { done: 1, .. })));

    // The stream saw the same, in order (after what background sync says of itself:
    // why it syncs, and the change feed).
    let first = loop {
        match stream.next().await {
            Some(ClientEvent::SyncTriggered(_) | ClientEvent::ChangeFeed { .. }) => continue,
            other => break other,
        }
    };
    assert_eq!(first, Some(ClientEvent::SyncStarted));

    // A local write is an event; after dropping the handle the callback is not called.
    let before = seen.lock().map(|s| s.len()).unwrap_or_default();
    b.create_home("Second").await?;
    let next = loop {
        match stream.next().await {
            Some(ClientEvent::EntityChangedLocally(e)) => break e,
            Some(_) => continue,
            None => anyhow::bail!("stream ended"),
        }
    };
    assert_eq!(next.entity_type, EntityType::Home);
    assert_eq!(seen.lock().map(|s| s.len()).unwrap_or_default(), before);

    // Stopping an unlimited background sync.
    let bg = a.start_background_sync(Duration::from_secs(3600));
    let stats = bg.stop().await;
    assert!(stats.runs <= 1);
    server.stop().await
}

#[tokio::test]
async fn expired_token_is_a_typed_error() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.offline_client("a").await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs() as i64;
    let expired = server.handle.sign(&funkygibbon_mock::Claims {
        sub: "admin".into(),
        role: "admin".into(),
        permissions: vec!["read".into(), "write".into()],
        exp: now - 3600,
        iat: now - 7200,
    });
    a.connect(&server.url, Some(&expired)).await?;
    a.create_home("Home").await?;
    let err = a.sync().await.expect_err("an expired token cannot sync");
    assert!(matches!(err, ClientError::AuthExpired), "{err:?}");
    assert_eq!(a.pending_changes().await?, 1);
    // A wrong password is refused, and says so.
    let err = a
        .login(&server.url, "wrong")
        .await
        .expect_err("bad password");
    assert!(err.needs_login(), "{err:?}");
    // Log in again and everything goes through.
    a.login(&server.url, goodies_e2e::PASSWORD).await?;
    quiet_sync(&a).await?;
    server.stop().await
}

#[tokio::test]
async fn digest_check_trusts_the_store_over_its_index() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let a = server.client("a").await?;
    let home = a.create_home("Home").await?;
    quiet_sync(&a).await?;

    // A write straight through the store: the client's in-memory digest index never
    // hears of it, so after the sync it disagrees with the server; the store decides.
    let user = a.user_id();
    a.store()
        .write_local(
            goodies_store::LocalEdit::Update {
                id: home.id.clone(),
                name: Some("Renamed behind the client's back".into()),
                content: None,
            },
            &user,
        )
        .await?;
    let r = quiet_sync(&a).await?;
    assert_eq!(r.acknowledged, 1);
    assert!(r.digest_mismatch.is_none());
    assert_converged(&server, &[&a]).await?;
    server.stop().await
}

#[tokio::test]
async fn paged_pull_fetches_the_next_page_while_applying() -> anyhow::Result<()> {
    let server = TestServer::start_with(|c| c.with_page_size(4)).await?;
    let a = server.client("a").await?;
    let home = a.create_home("Home").await?;
    let hall = a.create_room(&home.id, "Hall", None).await?;
    for n in 0..8 {
        a.create_device(&hall.id, &format!("Lamp {n}"), "light", None)
            .await?;
    }
    quiet_sync(&a).await?;

    // 10 entities + 9 relationships in pages of 4: 5 pages, the last one short.
    let b = server.client("b").await?;
    let r = quiet_sync(&b).await?;
    assert_eq!((r.pulled_entities, r.pulled_relationships), (10, 9));
    assert_eq!(r.requests, 5);
    assert!(b.store().sync_state().await?.cursor.is_none());
    assert_eq!(b.get_devices_in_room(&hall.id).await?.len(), 8);
    assert_converged(&server, &[&a, &b]).await?;

    // Edits on both sides, then another paged pull: still converged, nothing left over.
    let extra = b.create_device(&hall.id, "Fan", "fan", None).await?;
    for n in 0..5 {
        a.create_device(&hall.id, &format!("Heater {n}"), "heater", None)
            .await?;
    }
    quiet_sync(&a).await?;
    let r = quiet_sync(&b).await?;
    assert_eq!(r.acknowledged, 2, "the fan and its room edge");
    assert_eq!(r.pulled_entities, 5);
    let r = quiet_sync(&a).await?;
    assert!(a.entity(&extra.id).await?.is_some(), "{r:?}");
    assert_converged(&server, &[&a, &b]).await?;
    server.stop().await
}
