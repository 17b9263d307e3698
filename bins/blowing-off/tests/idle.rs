//! An idle sync writes nothing to the mirror: not through the library (the database
//! file and its WAL stay byte for byte as they were), not through a fresh `blowing-off
//! sync` process (no transaction, no checkpoint at exit). The time of the last sync is
//! still recorded, beside the mirror, and a change made on the server after an idle sync
//! is pulled by the next one.

mod support;

use std::path::Path;

use goodies_client::{BlowingOffClient, ClientConfig, EntityType, RetryPolicy};
use support::{json, start_server, two_clients, PASSWORD};

/// The bytes of the mirror and of its WAL (`None` when there is no WAL file, or an
/// empty one: opening the mirror creates it, and it holds no frame).
fn files(db: &Path) -> (Vec<u8>, Option<Vec<u8>>) {
    let wal = Path::new(&format!("{}-wal", db.display())).to_owned();
    (
        std::fs::read(db).expect("mirror"),
        std::fs::read(&wal).ok().filter(|b| !b.is_empty()),
    )
}

fn same(before: &(Vec<u8>, Option<Vec<u8>>), after: &(Vec<u8>, Option<Vec<u8>>), what: &str) {
    assert!(before.0 == after.0, "{what}: the database file changed");
    assert!(
        before.1 == after.1,
        "{what}: the WAL changed ({:?} → {:?} bytes)",
        before.1.as_ref().map(Vec::len),
        after.1.as_ref().map(Vec::len)
    );
}

#[test]
fn an_idle_cli_sync_leaves_the_mirror_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (_url, _stop, a, b) = two_clients(dir.path());
    for n in 0..5 {
        json(&b, &["house", "create", "--name", &format!("n{n}")]);
    }
    let pushed = json(&b, &["sync"]);
    assert_eq!(pushed["acknowledged"], 5, "{pushed}");

    let first = json(&a, &["sync"]);
    assert_eq!(first["pulled_entities"], 5, "{first}");
    assert!(
        first["digest"].is_object() && first["digest_mismatch"].is_null(),
        "{first}"
    );
    let status_before = json(&a, &["status"]);

    for round in 0..2 {
        let before = files(&a);
        let idle = json(&a, &["sync"]);
        assert_eq!(idle["ok"], true, "{idle}");
        assert_eq!(idle["pulled_entities"], 0, "{idle}");
        assert!(
            idle["digest"].is_object(),
            "the idle sync checked the digest: {idle}"
        );
        same(&before, &files(&a), &format!("idle sync {round}"));
    }

    // The last sync is still the latest one, as `status` shows it.
    let status = json(&a, &["status"]);
    assert!(
        status["last_sync"]["at"].as_str() > status_before["last_sync"]["at"].as_str(),
        "{status_before}\n{status}"
    );
    let status_again = json(&a, &["status"]);
    assert_eq!(status["last_sync"], status_again["last_sync"]);

    // A change made after the idle syncs is pulled, and the digests agree.
    json(&b, &["house", "create", "--name", "later"]);
    json(&b, &["sync"]);
    let pulled = json(&a, &["sync"]);
    assert_eq!(pulled["pulled_entities"], 1, "{pulled}");
    assert!(pulled["digest_mismatch"].is_null(), "{pulled}");
    let before = files(&a);
    json(&a, &["sync"]);
    same(&before, &files(&a), "idle sync after a pull");
}

#[test]
fn an_idle_library_sync_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _stop) = start_server(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let open = |name: &str| {
            BlowingOffClient::builder(dir.path().join(name))
                .config(ClientConfig::default().with_retry(RetryPolicy::none()))
                .open()
        };
        let writer = open("w.db").await.unwrap();
        writer.login(&url, PASSWORD).await.unwrap();
        for n in 0..3 {
            writer
                .create_entity(EntityType::Note, &format!("n{n}"), Default::default())
                .await
                .unwrap();
        }
        assert!(writer.sync().await.unwrap().is_ok());

        let db = dir.path().join("m.db");
        let mirror = open("m.db").await.unwrap();
        mirror.login(&url, PASSWORD).await.unwrap();
        let r = mirror.sync().await.unwrap();
        assert_eq!(r.pulled_entities, 3);
        assert!(r.is_ok() && r.digest.is_some(), "{r:?}");

        // The client stays open: its connections keep the WAL; nothing may be added.
        for round in 0..3 {
            let before = files(&db);
            let r = mirror.sync().await.unwrap();
            assert!(r.is_ok() && r.digest.is_some(), "{r:?}");
            assert_eq!(r.pulled_entities, 0);
            same(&before, &files(&db), &format!("library idle sync {round}"));
        }
        let status = mirror.status().await.unwrap();
        assert!(status.last_sync.is_some_and(|l| l.ok));

        // Another change: pulled, the digest checked and agreeing.
        writer
            .create_entity(EntityType::Note, "later", Default::default())
            .await
            .unwrap();
        writer.sync().await.unwrap();
        let r = mirror.sync().await.unwrap();
        assert_eq!(r.pulled_entities, 1);
        assert!(
            r.is_ok() && r.digest.as_ref().is_some_and(|d| d.matches()),
            "{r:?}"
        );
        assert_eq!(
            mirror.state_digest().await.unwrap(),
            writer.state_digest().await.unwrap()
        );
    });
}
