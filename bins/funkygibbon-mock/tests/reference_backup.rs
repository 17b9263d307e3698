//! Replays the 32 backup exchanges captured from the Python reference, in order, on SQLite
//! and on PostgreSQL (structural comparison; backup ids mapped to ours as they are made),
//! naming every deliberate difference; then checks that a backup taken during a stream of
//! pushes holds each push entirely or not at all, that a restore during pushes is atomic
//! and loses nothing accepted after it, and that positions from before a restore are
//! answered `INVALID_SYNC_STATE` while a full pull converges on the restored state.

mod reference_more;
mod support;

use std::collections::HashMap;

use reference_more::{load, same_shape, send, strip_error};
use serde_json::{json, Value};
use support::{create_change, sync_body, Backend, TestServer};

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Same,
    Better(&'static str),
}

/// Replaces the reference's backup ids in a path with ours.
fn map_path(path: &str, ids: &HashMap<String, String>) -> String {
    let mut out = path.to_owned();
    for (r, o) in ids {
        out = out.replace(&format!("/{r}"), &format!("/{o}"));
    }
    out
}

async fn replay(backend: Backend) {
    let dir = tempfile::tempdir().expect("backup dir");
    let backup_dir = dir.path().to_path_buf();
    let Some(server) =
        TestServer::start_with(backend, |c| c.with_backup_dir(backup_dir.clone())).await
    else {
        return;
    };
    let admin = server.login().await;
    let guest = server.guest_token(&admin).await;
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut verdicts = Vec::new();
    for x in load("backup") {
        if x.num == 17 {
            // The reference's backup was destroyed by a colliding create; ours cannot be,
            // so the file is damaged by hand to show a refused restore changes nothing.
            let ours = &ids["20261201_102529"];
            let path = dir.path().join(format!("{ours}.snapshot.json"));
            let mut bytes = std::fs::read(&path).expect("backup file");
            bytes.truncate(bytes.len() / 2);
            std::fs::write(&path, bytes).expect("damage");
        }
        let token = match x.num {
            1 => None,
            3 => Some(guest.as_str()),
            _ => Some(admin.as_str()),
        };
        let digest_before = server.handle.store().state_digest().await.expect("digest");
        let path = map_path(&x.path, &ids);
        let (status, body) = send(&server.http, &server.base, &x, &path, token).await;
        let len = |b: &Value| b.as_array().map(Vec::len);
        let verdict = match x.num {
            5 | 6 | 12 | 13 | 14 => {
                assert_eq!(status, 201, "{}: {body}", x.name);
                let ours = body["backup_id"].as_str().expect("backup_id").to_owned();
                assert!(
                    !ids.values().any(|v| *v == ours),
                    "{}: id {ours} reused",
                    x.name
                );
                if let Some(r) = x.response["backup_id"].as_str() {
                    ids.entry(r.to_owned()).or_insert(ours.clone());
                }
                if x.num == 13 {
                    assert_eq!(body["message"], "Backup triggered successfully");
                    Verdict::Better("a second backup in the same second gets its own id")
                } else if x.num == 14 {
                    assert_eq!(body["message"], "Backup created successfully");
                    ids.insert("collision".into(), ours);
                    Verdict::Better("a create in the same second makes a new backup (the reference failed and destroyed one)")
                } else {
                    let o = strip_error(&x.name, status, body);
                    same_shape(&x.response, &o, "").unwrap_or_else(|e| panic!("{}: {e}", x.name));
                    Verdict::Same
                }
            }
            11 => {
                assert_eq!(status, 404, "{}", x.name);
                assert!(body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("scheduler/status"));
                Verdict::Better("GET /backup/scheduler is not taken as a backup id")
            }
            15 => {
                assert_eq!(status, 200, "{}", x.name);
                assert_eq!(
                    (body["integrity_ok"].clone(), body["error"].clone()),
                    (json!(true), Value::Null)
                );
                Verdict::Better("the triggered backup is intact: nothing overwrote it")
            }
            16 => {
                assert_eq!((status, len(&body)), (200, Some(5)), "{}: {body}", x.name);
                assert!(body
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|b| b["integrity_ok"] == true));
                Verdict::Better("every backup taken is listed and intact")
            }
            17 => {
                assert_eq!(status, 400, "{}: {body}", x.name);
                assert_eq!(body["detail"], "Cannot restore: Checksum mismatch");
                let after = server.handle.store().state_digest().await.unwrap();
                assert_eq!(after, digest_before, "a refused restore changed the store");
                Verdict::Better("a damaged file (checksum mismatch) is refused and changes nothing")
            }
            18 => {
                assert_eq!(status, 404, "{}: {body}", x.name);
                assert_eq!(body["detail"], x.response["detail"]);
                Verdict::Better("an unknown id on restore is a 404, as on get and delete")
            }
            21 => {
                assert_eq!(status, 200, "{}: {body}", x.name);
                assert!(body.get("warning").is_none());
                assert_eq!(body["message"], x.response["message"]);
                Verdict::Better("the restore takes effect at once: no restart warning")
            }
            22 | 28 => {
                assert_eq!(status, 404, "{}: {body}", x.name);
                Verdict::Better("the row written after the backup is gone at once")
            }
            24 | 32 => {
                let n = if x.num == 24 { 5 } else { 4 };
                assert_eq!((status, len(&body)), (200, Some(n)), "{}: {body}", x.name);
                let damaged: Vec<&Value> = body
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|b| b["integrity_ok"] == false)
                    .collect();
                assert_eq!(damaged.len(), 1, "{}: {body}", x.name);
                assert_eq!(damaged[0]["error"], "Checksum mismatch");
                Verdict::Better("all backups listed; the damaged one says why")
            }
            29 => {
                assert_eq!(status, 200, "{}: {body}", x.name);
                Verdict::Better("a write accepted after the restore is kept")
            }
            30 => {
                assert_eq!((status, len(&body)), (200, Some(1)), "{}: {body}", x.name);
                Verdict::Better("the sync metadata holds the write accepted after the restore")
            }
            31 => {
                // MCP is not part of this server; the entity is read through the graph API.
                let (s, e) = server
                    .get_json(
                        &admin,
                        "/api/v1/graph/entities/0ac718ed-4bec-4c4c-9093-2b66f89c09c1",
                    )
                    .await;
                assert_eq!(s, 404, "{e}");
                Verdict::Better("not served here (MCP); the graph API answers for the store")
            }
            _ => {
                assert_eq!(status, x.status, "{}: {body}", x.name);
                let mut text = body.to_string();
                for (r, o) in &ids {
                    text = text.replace(o.as_str(), r);
                }
                let body: Value = serde_json::from_str(&text).unwrap();
                let o = if status == 204 {
                    body
                } else {
                    strip_error(&x.name, status, body)
                };
                same_shape(&x.response, &o, "").unwrap_or_else(|e| {
                    panic!("{}: {e}\nreference {}\nours {o}", x.name, x.response)
                });
                Verdict::Same
            }
        };
        verdicts.push((x.num, verdict));
    }
    assert_eq!(verdicts.len(), 32);
    let better: Vec<usize> = verdicts
        .iter()
        .filter(|(_, v)| matches!(v, Verdict::Better(_)))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(
        better,
        vec![11, 13, 14, 15, 16, 17, 18, 21, 22, 24, 28, 29, 30, 31, 32]
    );
}

/// Pushes `n` entities of one batch named after it.
fn batch(tag: usize, n: usize) -> Value {
    let changes: Vec<Value> = (0..n)
        .map(|i| {
            create_change(
                &uuid::Uuid::new_v4().to_string(),
                "note",
                &format!("batch-{tag}-{i}"),
                json!({"batch": tag}),
            )
        })
        .collect();
    sync_body("pusher", "delta", Value::Array(changes))
}

/// Batch numbers and their entity counts in a snapshot.
fn batches_in(snapshot: &goodies_store::StoreSnapshot) -> HashMap<usize, usize> {
    let mut out: HashMap<usize, usize> = HashMap::new();
    for e in &snapshot.entities {
        if let Some(tag) = e
            .name
            .strip_prefix("batch-")
            .and_then(|r| r.split('-').next())
        {
            *out.entry(tag.parse().unwrap()).or_default() += 1;
        }
    }
    out
}

async fn consistency(backend: Backend) {
    let dir = tempfile::tempdir().expect("backup dir");
    let bd = dir.path().to_path_buf();
    let Some(server) = TestServer::start_with(backend, |c| c.with_backup_dir(bd.clone())).await
    else {
        return;
    };
    let admin = server.login().await;
    const PER_BATCH: usize = 40;
    const BATCHES: usize = 30;
    // A stream of pushes while backups are taken.
    let pusher = {
        let (http, url, token) = (
            server.http.clone(),
            server.url("/api/v1/sync/"),
            admin.clone(),
        );
        tokio::spawn(async move {
            for b in 0..BATCHES {
                let res = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&batch(b, PER_BATCH))
                    .send()
                    .await
                    .expect("push");
                assert_eq!(res.status(), 200);
            }
        })
    };
    let mut taken = Vec::new();
    for _ in 0..6 {
        let (s, body) = server
            .post_json(&admin, "/api/v1/backup/create", &json!({}))
            .await;
        assert_eq!(s, 201, "{body}");
        taken.push(body["backup_id"].as_str().unwrap().to_owned());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    pusher.await.expect("pusher");
    for id in &taken {
        let bytes = std::fs::read(dir.path().join(format!("{id}.snapshot.json"))).unwrap();
        let snap: goodies_store::StoreSnapshot = serde_json::from_slice(&bytes).unwrap();
        for (b, n) in batches_in(&snap) {
            assert_eq!(
                n, PER_BATCH,
                "backup {id} holds {n} of batch {b}'s entities"
            );
        }
    }
    assert_eq!(taken.len(), 6);

    // Restore while pushing: every push is entirely before or after; all after it stay.
    let (s, body) = server
        .post_json(
            &admin,
            "/api/v1/backup/create",
            &json!({"description": "base"}),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    let base = body["backup_id"].as_str().unwrap().to_owned();
    let base_batches = BATCHES;
    let pusher = {
        let (http, url, token) = (
            server.http.clone(),
            server.url("/api/v1/sync/"),
            admin.clone(),
        );
        tokio::spawn(async move {
            let mut answered = Vec::new();
            for b in 100..120 {
                let sent = std::time::Instant::now();
                let res = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&batch(b, PER_BATCH))
                    .send()
                    .await
                    .expect("push");
                assert_eq!(res.status(), 200);
                answered.push((b, sent));
            }
            answered
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    let (s, body) = server
        .post_json(
            &admin,
            &format!("/api/v1/backup/{base}/restore"),
            &json!({"verify_checksum": true}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let restored_at = std::time::Instant::now();
    let answered = pusher.await.expect("pusher");
    let after = server.handle.store().export_snapshot().await.unwrap();
    let counts = batches_in(&after);
    for (b, n) in &counts {
        assert_eq!(*n, PER_BATCH, "batch {b} is half there after the restore");
    }
    for (b, sent) in answered {
        if sent > restored_at {
            assert!(
                counts.contains_key(&b),
                "batch {b} sent after the restore answered was lost"
            );
        }
    }
    assert!((0..base_batches).all(|b| counts.contains_key(&b)));
    // Sequence numbers went forward.
    assert!(after.last_seq as u64 > 0);
}

async fn positions_before_a_restore(backend: Backend) {
    let dir = tempfile::tempdir().expect("backup dir");
    let bd = dir.path().to_path_buf();
    let Some(server) = TestServer::start_with(backend, |c| c.with_backup_dir(bd.clone())).await
    else {
        return;
    };
    let admin = server.login().await;
    let (s, _) = server
        .post_json(&admin, "/api/v1/sync/", &batch(1, 3))
        .await;
    assert_eq!(s, 200);
    let (s, body) = server
        .post_json(&admin, "/api/v1/backup/create", &json!({}))
        .await;
    assert_eq!(s, 201);
    let id = body["backup_id"].as_str().unwrap().to_owned();
    let (s, _) = server
        .post_json(&admin, "/api/v1/sync/", &batch(2, 3))
        .await;
    assert_eq!(s, 200);
    let (s, pulled) = server
        .post_json(
            &admin,
            "/api/v1/sync/",
            &sync_body("reader", "full", json!([])),
        )
        .await;
    assert_eq!(s, 200);
    let watermark = pulled["server_time"].as_str().unwrap().to_owned();
    let max_before = server.handle.store().max_seq().await.unwrap();
    let (s, body) = server
        .post_json(
            &admin,
            &format!("/api/v1/backup/{id}/restore"),
            &json!({"verify_checksum": true}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert!(
        server.handle.store().max_seq().await.unwrap() > max_before,
        "sequence went back"
    );
    // The old watermark and an old cursor are refused.
    let mut delta = sync_body("reader", "delta", json!([]));
    delta["filters"] = json!({"since": watermark});
    let (s, body) = server.post_json(&admin, "/api/v1/sync/", &delta).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("INVALID_SYNC_STATE")),
        "{body}"
    );
    let mut cursor = sync_body("reader", "delta", json!([]));
    cursor["cursor"] = json!(max_before.to_string());
    let (s, body) = server.post_json(&admin, "/api/v1/sync/", &cursor).await;
    assert_eq!(
        (s, body["error"]["code"].as_str()),
        (400, Some("INVALID_SYNC_STATE")),
        "{body}"
    );
    // A full pull converges on the restored state: batch 1 only.
    let (s, full) = server
        .post_json(
            &admin,
            "/api/v1/sync/",
            &sync_body("reader", "full", json!([])),
        )
        .await;
    assert_eq!(s, 200);
    let names: Vec<&str> = full["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["entity"]["name"].as_str())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("batch-1-")));
    let digest = server.handle.store().state_digest().await.unwrap();
    assert_eq!(full["state_digest"].as_str(), Some(digest.as_str()));
    // The new watermark is accepted.
    let mut delta = sync_body("reader", "delta", json!([]));
    delta["filters"] = json!({"since": full["server_time"]});
    let (s, body) = server.post_json(&admin, "/api/v1/sync/", &delta).await;
    assert_eq!(s, 200, "{body}");
}

on_both_backends!(replay, consistency, positions_before_a_restore);
