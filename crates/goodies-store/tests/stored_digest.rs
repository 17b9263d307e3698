//! The state digest remembered in the SQLite file (migration 0008): a fresh store on the
//! file answers it with one read instead of reading every latest row, and any change of
//! a latest row — through the store or by another writer of the file — forgets it, so a
//! remembered digest is never stale.

mod support;

use goodies_store::{ClientStore, GraphRead, ServerStore, SqliteStore, StoreOptions};
use inbetweenies_proto::EntityType;
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::SqlitePool;
use support::*;

async fn seeded(url: &str) -> SqliteStore {
    let store = SqliteStore::connect(url, StoreOptions::default())
        .await
        .expect("store");
    let changes = (0..50)
        .map(|i| {
            let id = format!("e{i:03}");
            create(ent(
                &id,
                &ver(1_000 + i, 1, "a"),
                &[],
                EntityType::Device,
                &id,
                serde_json::json!({"i": i}),
            ))
        })
        .collect();
    store
        .apply_push(batch("a", "a", changes))
        .await
        .expect("push");
    store
}

/// The digest of the latest rows, from the rows themselves.
async fn from_rows(store: &SqliteStore) -> String {
    let rows = store.latest_versions().await.expect("latest");
    inbetweenies_conflict::state_digest(rows.iter().map(|(i, v)| (i.as_str(), v.as_str())))
}

async fn raw(url: &str) -> SqlitePool {
    SqlitePoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("raw connection")
}

async fn remembered(pool: &SqlitePool) -> Option<String> {
    sqlx::query_scalar("SELECT digest FROM stored_digest WHERE one = 1")
        .fetch_optional(pool)
        .await
        .expect("read stored digest")
}

/// A digest computed by one store is read, not recomputed, by a fresh store on the file:
/// replacing the remembered value by hand shows through the fresh store's digest.
#[tokio::test]
async fn a_fresh_store_reads_the_remembered_digest() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let first = seeded(&url).await;
    assert_eq!(
        ClientStore::stored_digest(&first).await.expect("stored"),
        None
    );
    let digest = first.state_digest().await.expect("digest");
    assert_eq!(digest, from_rows(&first).await);
    assert_eq!(
        ClientStore::stored_digest(&first).await.expect("stored"),
        Some(digest.clone())
    );
    drop(first);

    let pool = raw(&url).await;
    assert_eq!(remembered(&pool).await, Some(digest));
    sqlx::query("UPDATE stored_digest SET digest = 'remembered'")
        .execute(&pool)
        .await
        .expect("replace");
    let fresh = SqliteStore::connect(&url, StoreOptions::default())
        .await
        .expect("fresh store");
    assert_eq!(fresh.state_digest().await.expect("digest"), "remembered");
    assert_eq!(
        ClientStore::stored_digest(&fresh).await.expect("stored"),
        Some("remembered".to_owned())
    );
}

/// A push, and writes that bypass the store (an insert of a new latest row, a changed
/// version, a deleted latest row), each forget the remembered digest in their own
/// transaction; the next digest is computed from the rows and remembered again.
#[tokio::test]
async fn any_change_of_a_latest_row_forgets_it() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = seeded(&url).await;
    let pool = raw(&url).await;
    let mut seen = vec![store.state_digest().await.expect("digest")];

    // Through the store.
    store
        .apply_push(batch(
            "a",
            "a",
            vec![update(ent(
                "e001",
                &ver(9_000, 1, "a"),
                &[&ver(1_001, 1, "a")],
                EntityType::Device,
                "e001",
                serde_json::json!({"i": "changed"}),
            ))],
        ))
        .await
        .expect("push");
    assert_eq!(remembered(&pool).await, None, "a push forgets it");

    let bypassing = [
        "UPDATE entities SET version = version || '-x' WHERE id = 'e002' AND is_latest = 1",
        "DELETE FROM entities WHERE id = 'e003' AND is_latest = 1",
        "INSERT INTO entities (seq, id, id_key, version, entity_type, name, content, \
         source_type, user_id, parent_versions, created_at, updated_at, received_at, \
         is_latest, became_latest, is_deleted) \
         SELECT seq + 100000, 'zz-new', id_key + 1, version, entity_type, name, content, \
         source_type, user_id, parent_versions, created_at, updated_at, received_at, 1, \
         became_latest, 0 FROM entities WHERE id = 'e004'",
    ];
    for (i, sql) in std::iter::once(None).chain(bypassing.map(Some)).enumerate() {
        if let Some(sql) = sql {
            // Remembered again first, so that forgetting it is this write's doing.
            let fresh = SqliteStore::connect(&url, StoreOptions::default())
                .await
                .expect("fresh");
            fresh.state_digest().await.expect("digest");
            assert!(remembered(&pool).await.is_some(), "step {i}: remembered");
            sqlx::query(sql).execute(&pool).await.expect(sql);
            assert_eq!(remembered(&pool).await, None, "{sql}");
        }
        // A fresh store (no in-process cache) computes it from the rows.
        let fresh = SqliteStore::connect(&url, StoreOptions::default())
            .await
            .expect("fresh");
        let digest = fresh.state_digest().await.expect("digest");
        assert_eq!(digest, from_rows(&fresh).await, "step {i}");
        assert!(!seen.contains(&digest), "step {i}: the digest moved");
        assert_eq!(remembered(&pool).await, Some(digest.clone()), "step {i}");
        seen.push(digest);
    }
}
