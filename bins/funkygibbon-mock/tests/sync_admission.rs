//! Admission of sync requests (`--max-concurrent-syncs`): at most that many are handled
//! at once, the others wait their turn, and every one of them is answered in the end.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use goodies_store::{open_server_store, BeforeCommitHook, StoreOptions};
use serde_json::json;
use support::{create_change, sync_body, Backend, TestServer};
use tokio::sync::Notify;

/// Holds the next store commit until released.
#[derive(Default)]
struct Gate {
    hold: AtomicBool,
    entered: Notify,
    release: Notify,
}

impl Gate {
    fn hook(self: &Arc<Self>) -> BeforeCommitHook {
        let gate = self.clone();
        BeforeCommitHook(Arc::new(move || {
            let gate = gate.clone();
            Box::pin(async move {
                if gate.hold.swap(false, Ordering::SeqCst) {
                    gate.entered.notify_one();
                    gate.release.notified().await;
                }
                Ok(())
            })
        }))
    }
}

/// `funkygibbon_syncs_running` and `funkygibbon_syncs_waiting` from `/metrics`.
async fn admission_gauges(s: &TestServer) -> (i64, i64) {
    let text = s
        .http
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let gauge = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(-1)
    };
    (
        gauge("funkygibbon_syncs_running"),
        gauge("funkygibbon_syncs_waiting"),
    )
}

/// With two syncs allowed at once and the first push held at its commit, a second push
/// is admitted and the next three wait (their bodies not read); once the commit goes
/// on, all five are answered and acknowledged, and nothing is left running or waiting.
#[tokio::test]
async fn syncs_past_the_limit_wait_their_turn_and_are_all_answered() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("gated.db").display());
    let gate = Arc::new(Gate::default());
    let store = open_server_store(
        &url,
        StoreOptions {
            before_commit: Some(gate.hook()),
            ..StoreOptions::default()
        },
    )
    .await
    .expect("store");
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.with_store(store).with_max_concurrent_syncs(2)
    })
    .await
    else {
        return;
    };
    let s = Arc::new(s);
    let admin = s.login().await;

    let push = |n: usize| {
        let (s, admin) = (s.clone(), admin.clone());
        tokio::spawn(async move {
            let id = format!("admitted-{n}");
            let body = sync_body(
                &format!("device-{n}"),
                "delta",
                json!([create_change(&id, "note", "n", json!({}))]),
            );
            let (status, answer) = s.post_json(&admin, "/api/v1/sync/", &body).await;
            (id, status, answer)
        })
    };
    gate.hold.store(true, Ordering::SeqCst);
    let mut tasks = vec![push(0)];
    gate.entered.notified().await;
    for n in 1..5 {
        tasks.push(push(n));
    }
    // A safety net only: the state is reached as soon as the requests arrive.
    let mut seen = (0, 0);
    for _ in 0..1_000 {
        seen = admission_gauges(&s).await;
        if seen == (2, 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen, (2, 3), "two syncs running, three waiting");

    gate.release.notify_one();
    for t in tasks {
        let (id, status, answer) = t.await.expect("task");
        assert_eq!(status, 200, "{answer}");
        assert!(
            answer["applied"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == id.as_str())),
            "{id} acknowledged: {answer}"
        );
    }
    assert_eq!(admission_gauges(&s).await, (0, 0));
    match Arc::try_unwrap(s) {
        Ok(s) => s.shutdown().await.expect("shutdown"),
        Err(_) => panic!("the server is still shared"),
    }
}

/// Load with nothing lost, at test size: `clients` devices, each on its own connection,
/// push a change and pull the delta `rounds` times at once through a small admission
/// limit (half new entities, half updates of the device's own last acknowledged
/// version). Every request is answered 200 and acknowledges its change, and a whole
/// pull afterwards holds every acknowledged id at its last acknowledged version.
async fn many_devices_pushing_lose_nothing(backend: Backend) {
    const CLIENTS: usize = 100;
    const ROUNDS: usize = 4;
    let Some(s) = TestServer::start_with(backend, |c| c.with_max_concurrent_syncs(8)).await else {
        return;
    };
    let s = Arc::new(s);
    let admin = s.login().await;
    let mut tasks = Vec::new();
    for n in 0..CLIENTS {
        let (s, admin) = (s.clone(), admin.clone());
        tasks.push(tokio::spawn(async move {
            // Its own connection, as a device has.
            let http = support::http_client();
            let device = format!("load-{n:03}");
            let mut since: Option<String> = None;
            let mut own: Option<(String, String)> = None;
            let mut acked = Vec::new();
            for round in 0..ROUNDS {
                let version = inbetweenies_proto::Version::now(&device);
                let (id, parents) = match (&own, round % 2) {
                    (Some((id, v)), 1) => (id.clone(), vec![v.clone()]),
                    _ => (format!("{device}-{round}"), vec![]),
                };
                let change = json!({
                    "change_type": if parents.is_empty() { "create" } else { "update" },
                    "entity": {
                        "id": id, "version": version, "entity_type": "device",
                        "name": device, "content": {"round": round},
                        "source_type": "manual", "user_id": "tester",
                        "parent_versions": parents,
                    },
                    "relationships": [],
                });
                let mut body = sync_body(&device, "delta", json!([change]));
                if let Some(t) = &since {
                    body["filters"] = json!({"since": t});
                }
                let res = http
                    .post(s.url("/api/v1/sync/"))
                    .bearer_auth(&admin)
                    .json(&body)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .expect("answered");
                let (status, answer) = support::read(res).await;
                assert_eq!(status, 200, "{device} round {round}: {answer}");
                assert!(
                    answer["applied"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == id.as_str())),
                    "{device} round {round}: {id} acknowledged: {answer}"
                );
                since = answer["server_time"].as_str().map(str::to_owned);
                let version = version.into_string();
                acked.push((id.clone(), version.clone()));
                own = Some((id, version));
            }
            acked
        }));
    }
    let mut want = std::collections::HashMap::new();
    for t in tasks {
        for (id, v) in t.await.expect("client task") {
            want.insert(id, v);
        }
    }
    assert_eq!(
        want.len(),
        CLIENTS * ROUNDS.div_ceil(2),
        "a new id every other round"
    );
    // A whole pull, page after page.
    let mut latest = std::collections::HashMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut body = sync_body("load-check", "full", json!([]));
        body["capabilities"] = json!(["relationship_rows"]);
        if let Some(c) = &cursor {
            body["sync_type"] = json!("delta");
            body["cursor"] = json!(c);
        }
        let (status, page) = s.post_json(&admin, "/api/v1/sync/", &body).await;
        assert_eq!(status, 200, "{page}");
        for c in page["changes"].as_array().into_iter().flatten() {
            if let (Some(id), Some(v)) =
                (c["entity"]["id"].as_str(), c["entity"]["version"].as_str())
            {
                latest.insert(id.to_owned(), v.to_owned());
            }
        }
        cursor = page["cursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    assert!(cursor.is_none(), "the whole pull ended");
    for (id, v) in &want {
        assert_eq!(
            latest.get(id),
            Some(v),
            "{id} at its last acknowledged version"
        );
    }
    assert_eq!(admission_gauges(&s).await, (0, 0));
    match Arc::try_unwrap(s) {
        Ok(s) => s.shutdown().await.expect("shutdown"),
        Err(_) => panic!("the server is still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_devices_pushing_lose_nothing_sqlite() {
    many_devices_pushing_lose_nothing(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_devices_pushing_lose_nothing_postgres() {
    many_devices_pushing_lose_nothing(Backend::Postgres).await;
}
