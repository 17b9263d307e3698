//! PostgreSQL-specific behaviour: concurrent migration, state shared between server processes, byte-order ids.
#![cfg(feature = "postgres")]

mod support;

use std::sync::Arc;

use goodies_store::postgres::PgStore;
use goodies_store::{GraphRead, ServerStore, StoreOptions};
use inbetweenies_proto::{EntityId, EntityType};
use sqlx::Connection as _;
use support::*;

/// Opens `n` stores on one database at the same time (n server processes starting together).
async fn connect_many(url: &str, n: usize) -> Vec<PgStore> {
    let opens = (0..n).map(|_| PgStore::connect(url, StoreOptions::default()));
    futures::future::join_all(opens)
        .await
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("connect: {}", error_chain(&e))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_starting_together_migrate_once() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    let stores = connect_many(&h.url, 4).await;
    let mut conn = sqlx::PgConnection::connect(&h.url).await.expect("connect");
    let applied: Vec<(i64, bool)> =
        sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .expect("migrations table");
    assert!(!applied.is_empty());
    assert!(applied.iter().all(|(_, ok)| *ok));
    let distinct: std::collections::HashSet<i64> = applied.iter().map(|(v, _)| *v).collect();
    assert_eq!(distinct.len(), applied.len(), "each migration applied once");

    // Every instance works on the same schema; reconnecting migrates nothing more.
    let v = ver(0, 1, "alice");
    stores[0]
        .apply_push(batch(
            "d",
            "alice",
            vec![create(ent(
                "e1",
                &v,
                &[],
                EntityType::Room,
                "Hall",
                serde_json::json!({}),
            ))],
        ))
        .await
        .expect("push");
    for s in &stores {
        assert_eq!(
            s.entity(&"e1".into())
                .await
                .expect("read")
                .map(|e| e.version),
            Some(v.clone())
        );
    }
    drop(connect_many(&h.url, 1).await);
    let again: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(again as usize, applied.len());
    let _ = conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_and_digests_are_shared_between_processes() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    let one: Arc<dyn ServerStore> = h.default_server().await;
    let two: Arc<dyn ServerStore> = h.default_server().await;

    // A blob stored through one process is read, in ranges, through the other.
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let meta = one
        .put_blob(&"manual-1".into(), "application/pdf", &bytes)
        .await
        .expect("put");
    assert_eq!(meta.size, bytes.len() as u64);
    let seen = two
        .blob_meta(&meta.sha256)
        .await
        .expect("meta")
        .expect("visible to the other process");
    assert_eq!(seen, meta);
    assert_eq!(
        two.read_blob(&meta.sha256, 0, 10).await.expect("head"),
        &bytes[..10]
    );
    assert_eq!(
        two.read_blob(&meta.sha256, 123_456, 1_000)
            .await
            .expect("middle"),
        &bytes[123_456..124_456]
    );
    assert_eq!(
        two.read_blob(&meta.sha256, 299_990, 1_000)
            .await
            .expect("tail"),
        &bytes[299_990..]
    );
    assert!(two
        .read_blob(&meta.sha256, 300_000, 10)
        .await
        .expect("past the end")
        .is_empty());
    assert_eq!(
        two.blobs_of(&"manual-1".into()).await.expect("list"),
        vec![meta.clone()]
    );
    // The same bytes again: nothing new for that entity; another entity gets its own metadata row.
    assert_eq!(
        two.put_blob(&"manual-1".into(), "application/pdf", &bytes)
            .await
            .expect("again"),
        meta
    );
    let other = two
        .put_blob(&"manual-2".into(), "application/pdf", &bytes)
        .await
        .expect("other");
    assert_eq!(
        (other.sha256.as_str(), other.entity_id.as_str()),
        (meta.sha256.as_str(), "manual-2")
    );

    // Each process caches its digest, yet sees the other's writes.
    let empty = two.state_digest().await.expect("digest");
    assert_eq!(empty, inbetweenies_conflict::EMPTY_DIGEST);
    let v = ver(0, 1, "alice");
    one.apply_push(batch(
        "d",
        "alice",
        vec![create(ent(
            "e1",
            &v,
            &[],
            EntityType::Room,
            "Hall",
            serde_json::json!({}),
        ))],
    ))
    .await
    .expect("push");
    let after = two.state_digest().await.expect("digest");
    assert_ne!(after, empty);
    assert_eq!(after, one.state_digest().await.expect("digest"));
    assert_eq!(
        after,
        inbetweenies_conflict::state_digest([("e1", v.as_str())])
    );
}

/// A database whose default collation is not byte order (ICU English), when the server has ICU.
struct IcuDatabase {
    url: String,
    admin: String,
    name: String,
}

impl IcuDatabase {
    async fn create(admin: &str) -> Option<IcuDatabase> {
        let mut conn = sqlx::PgConnection::connect(admin).await.ok()?;
        let name = format!("goodies_icu_{}", uuid::Uuid::new_v4().simple());
        let made = sqlx::query(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        ))
        .execute(&mut conn)
        .await;
        let _ = conn.close().await;
        if let Err(e) = made {
            eprintln!("no ICU database ({e}); checking byte order on the default database only");
            return None;
        }
        Some(IcuDatabase {
            url: with_database(admin, &name),
            admin: admin.to_owned(),
            name,
        })
    }
}

impl Drop for IcuDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_ordered_by_bytes_whatever_the_database_collation() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    let admin = std::env::var("GOODIES_TEST_POSTGRES_URL").expect("admin url");
    let icu = IcuDatabase::create(&admin).await;
    let url = icu.as_ref().map_or(h.url.clone(), |d| d.url.clone());
    let store = PgStore::connect(&url, StoreOptions::default())
        .await
        .expect("connect");

    let ids = [
        "b", "B", "a", "A", "é", "e", "Z", "aa", "a-b", "a_b", "a b", "ä", "10", "9",
    ];
    let mut changes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let v = ver(i as i64, 1, "alice");
        changes.push(create(ent(
            id,
            &v,
            &[],
            EntityType::Note,
            id,
            serde_json::json!({}),
        )));
    }
    store
        .apply_push(batch("d", "alice", changes))
        .await
        .expect("push");

    let latest = store.latest_versions().await.expect("latest versions");
    let got: Vec<&str> = latest.iter().map(|(id, _)| id.as_str()).collect();
    let mut want: Vec<&str> = ids.to_vec();
    want.sort_unstable(); // str ordering is byte ordering
    assert_eq!(got, want);
    let rows: Vec<(&str, &str)> = latest
        .iter()
        .map(|(id, v)| (id.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        store.state_digest().await.expect("digest"),
        inbetweenies_conflict::state_digest(rows)
    );
    // Names sort by bytes too.
    let by_name = store.entities(&Default::default()).await.expect("entities");
    let names: Vec<&str> = by_name.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, want);
    assert_eq!(
        store
            .entity(&EntityId::from("é"))
            .await
            .expect("read")
            .map(|e| e.name),
        Some("é".to_owned())
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_is_exclusive_at_every_row_boundary() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    let store = h.default_server().await;
    // Three pushes; each has entities then relationships, so the two tables interleave in seq.
    let mut n = 0;
    for round in 0..3 {
        let mut changes = Vec::new();
        let mut made = Vec::new();
        for j in 0..3 {
            n += 1;
            let id = format!("e{round}-{j}");
            let v = ver(n, 1, "alice");
            changes.push(create(ent(
                &id,
                &v,
                &[],
                EntityType::Device,
                &id,
                serde_json::json!({}),
            )));
            made.push((id, v));
        }
        changes[2].relationships.push(rel(
            &format!("r{round}-a"),
            (&made[0].0, &made[0].1),
            (&made[1].0, &made[1].1),
            inbetweenies_proto::RelationshipType::ConnectsTo,
        ));
        changes[2].relationships.push(rel(
            &format!("r{round}-b"),
            (&made[1].0, &made[1].1),
            (&made[2].0, &made[2].1),
            inbetweenies_proto::RelationshipType::ConnectsTo,
        ));
        store
            .apply_push(batch("d", "alice", changes))
            .await
            .expect("push");
    }
    let all = store
        .changes(&goodies_store::ChangeQuery::default())
        .await
        .expect("all")
        .records;
    assert_eq!(all.len(), 15);
    let received = |r: &goodies_store::ChangeRecord| match r {
        goodies_store::ChangeRecord::Entity(e) => e.received_at,
        goodies_store::ChangeRecord::Relationship(r) => r.received_at,
    };
    for (i, row) in all.iter().enumerate() {
        for (since, first) in [
            (received(row), i + 1),
            (received(row).saturating_add_micros(-1), i),
        ] {
            let got = store
                .changes(&goodies_store::ChangeQuery {
                    since: Some(since),
                    ..Default::default()
                })
                .await
                .expect("since");
            let want: Vec<u64> = all[first..].iter().map(|r| r.seq()).collect();
            let got: Vec<u64> = got.records.iter().map(|r| r.seq()).collect();
            assert_eq!(got, want, "since {since} (row {i})");
        }
    }
}

/// Connections the database dropped while they sat idle in the pool (a restart, an
/// idle-session timeout, an operator's `pg_terminate_backend`) are found out before
/// they are handed out: the next calls succeed on new connections, none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_dropped_while_idle_are_replaced_not_handed_out() {
    let Some(h) = Harness::postgres().await else {
        return;
    };
    let store = PgStore::connect(&h.url, StoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect: {}", error_chain(&e)));
    // Several connections into the pool: concurrent reads.
    let reads = (0..4).map(|_| store.stats());
    for r in futures::future::join_all(reads).await {
        r.unwrap_or_else(|e| panic!("read: {}", error_chain(&e)));
    }
    let mut admin = sqlx::PgConnection::connect(&h.url).await.expect("connect");
    // Idle long enough to count as idle (`goodies_store::postgres` pings those).
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .expect("terminate the store's connections");
    assert!(!killed.is_empty(), "the store held no connection to drop");
    assert!(killed.iter().all(|k| *k));

    for i in 0..8 {
        store
            .stats()
            .await
            .unwrap_or_else(|e| panic!("call {i} after the drop failed: {}", error_chain(&e)));
    }
    push_room(&store, "e1", 1)
        .await
        .unwrap_or_else(|e| panic!("push after the drop: {}", error_chain(&e)));
}

/// Pushes a new room `id` (version counter `counter`) from device `d`.
async fn push_room(
    store: &PgStore,
    id: &str,
    counter: u32,
) -> goodies_store::Result<goodies_store::PushOutcome> {
    let v = ver(0, counter, "alice");
    store
        .apply_push(batch(
            "d",
            "alice",
            vec![create(ent(
                id,
                &v,
                &[],
                EntityType::Room,
                "Hall",
                serde_json::json!({}),
            ))],
        ))
        .await
}

/// Waits (at most 10 s) until no session but `admin`'s is connected to its database.
async fn wait_for_no_other_sessions(admin: &mut sqlx::PgConnection) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *admin)
        .await
        .expect("count the sessions");
        if others == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{others} terminated sessions still connected after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The key of the store's write lock (`goodies_store::postgres`, `b"goodiesW"`).
const WRITE_LOCK: i64 = 0x676f_6f64_6965_7357;

/// A head read given up while its statement waits in the database (here for the write
/// lock, held by another session) leaves nothing behind: the next head read is answered
/// by its own statement, after a write made meanwhile, not with the abandoned
/// statement's row. Both on the store itself and through [`goodies_store::Detached`]
/// (what `open_server_store` returns), which runs this backend's head reads on the
/// caller's task (`StoreHeadRead::head_cancel_safe`), so the caller's drop reaches the
/// read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_read_given_up_mid_statement_leaves_the_next_one_current() {
    use goodies_store::{Detached, StoreHeadRead};
    let Some(h) = Harness::postgres().await else {
        return;
    };
    let store = Arc::new(
        PgStore::connect(&h.url, StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("connect: {}", error_chain(&e))),
    );
    let detached = Detached(store.clone());
    assert!(detached.head_cancel_safe(), "read on the caller's task");
    let mut locker = sqlx::PgConnection::connect(&h.url).await.expect("connect");
    for (round, reader) in [&*store as &dyn StoreHeadRead, &detached]
        .into_iter()
        .enumerate()
    {
        let before = reader.head().await.expect("head").seq;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut locker)
            .await
            .expect("take the write lock");
        for _ in 0..3 {
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(300), reader.head()).await;
            assert!(
                waited.is_err(),
                "a head read did not wait for the write lock"
            );
        }
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(WRITE_LOCK)
            .execute(&mut locker)
            .await
            .expect("release the write lock");
        push_room(&store, &format!("e{round}"), 1)
            .await
            .unwrap_or_else(|e| panic!("push: {}", error_chain(&e)));
        let after = reader.head().await.expect("head after the given-up reads");
        assert_eq!(
            after.seq,
            before + 1,
            "the head read after the push is stale (round {round})"
        );
        assert_eq!(after.seq, store.max_seq().await.expect("max_seq"));
    }
}

/// Every connection of the store dropped by the database (a restart, an operator's
/// `pg_terminate_backend`), including the one head reads use, just after it was used:
/// the next head read succeeds on a new connection and sees a write made meanwhile
/// through another store (a new one each round, so its own connections are fresh).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_reads_survive_their_connection_being_dropped() {
    use goodies_store::StoreHeadRead;
    let Some(h) = Harness::postgres().await else {
        return;
    };
    let store = PgStore::connect(&h.url, StoreOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect: {}", error_chain(&e)));
    let before = store.head().await.expect("head").seq;
    let mut admin = sqlx::PgConnection::connect(&h.url).await.expect("connect");
    for round in 0..3 {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_all(&mut admin)
        .await
        .expect("terminate the stores' connections");
        assert!(!killed.is_empty(), "the stores held no connection to drop");
        // The terminated sessions gone, so the store's head connection is dead when
        // the read below is handed it (not still alive for a moment).
        wait_for_no_other_sessions(&mut admin).await;
        let other = PgStore::connect(&h.url, StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("connect: {}", error_chain(&e)));
        push_room(&other, &format!("e{round}"), round + 1)
            .await
            .unwrap_or_else(|e| panic!("push after the drop: {}", error_chain(&e)));
        let head = store
            .head()
            .await
            .unwrap_or_else(|e| panic!("head after drop {round}: {}", error_chain(&e)));
        assert_eq!(head.seq, before + round as u64 + 1, "round {round}");
    }
}
