//! Shared test support for the store: backends to run the story against, test hooks, and data builders.
//!
//! - [`Harness`] opens server stores on one fresh database per test: a SQLite
//!   file in a temporary directory, or (feature `postgres`) a freshly created
//!   PostgreSQL database, dropped again at the end.
//! - PostgreSQL is found through `GOODIES_TEST_POSTGRES_URL` (an admin URL,
//!   e.g. `postgres://postgres@127.0.0.1:5432/test`). When it is unset or
//!   unreachable the test is skipped, unless `GOODIES_REQUIRE_POSTGRES=1`, in
//!   which case it fails.
//! - [`Gate`] drives the hidden `before_commit` hook: hold one write
//!   transaction just before COMMIT, or make one fail.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support module"
)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use goodies_store::{
    open_client_store, open_server_store, BeforeCommitHook, ChangeRecord, ClientStore, PushBatch,
    ServerStore, StoreOptions,
};
use inbetweenies_proto::{
    ChangeType, EntityChange, EntityId, EntityType, RelationshipChange, RelationshipId,
    RelationshipType, SourceType, SyncChange, Timestamp, Version,
};
use tokio::sync::Notify;

/// A fresh database for one test, and a way to open stores on it.
#[derive(Debug)]
pub struct Harness {
    /// Which backend ("sqlite" or "postgres").
    pub backend: &'static str,
    /// The URL stores are opened with.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    #[cfg(feature = "postgres")]
    _pg: Option<FreshPostgres>,
}

impl Harness {
    /// A SQLite file in a fresh temporary directory.
    pub fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite://{}", dir.path().join("server.db").display());
        Harness {
            backend: "sqlite",
            url,
            _dir: Some(dir),
            #[cfg(feature = "postgres")]
            _pg: None,
        }
    }

    /// A fresh PostgreSQL database; `None` when the test should be skipped.
    #[cfg(feature = "postgres")]
    pub async fn postgres() -> Option<Harness> {
        let pg = FreshPostgres::create().await?;
        Some(Harness {
            backend: "postgres",
            url: pg.url.clone(),
            _dir: None,
            _pg: Some(pg),
        })
    }

    /// Opens a server store on this harness's database.
    pub async fn server(&self, opts: StoreOptions) -> Arc<dyn ServerStore> {
        open_server_store(&self.url, opts)
            .await
            .unwrap_or_else(|e| panic!("open {} store: {}", self.backend, error_chain(&e)))
    }

    /// Opens a server store with default options.
    pub async fn default_server(&self) -> Arc<dyn ServerStore> {
        self.server(StoreOptions::default()).await
    }
}

/// A client store on a SQLite file in its own temporary directory.
#[derive(Debug)]
pub struct ClientHarness {
    /// The database file.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ClientHarness {
    /// A fresh directory.
    pub fn new() -> ClientHarness {
        let dir = tempfile::tempdir().expect("temporary directory");
        ClientHarness {
            path: dir.path().join("client.db"),
            _dir: dir,
        }
    }

    /// Opens (or reopens) the client store from its bare path.
    pub async fn open(&self) -> Arc<dyn ClientStore> {
        open_client_store(path_str(&self.path), StoreOptions::default())
            .await
            .unwrap_or_else(|e| panic!("open client store: {}", error_chain(&e)))
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temporary path")
}

/// An error with its sources, for panic messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Whether PostgreSQL tests must run (and fail when the server is missing).
pub fn postgres_required() -> bool {
    std::env::var("GOODIES_REQUIRE_POSTGRES").as_deref() == Ok("1")
}

/// Skips (prints and returns `None`) or, when PostgreSQL is required, fails.
pub fn skip_postgres<T>(why: &str) -> Option<T> {
    if postgres_required() {
        panic!("PostgreSQL is required (GOODIES_REQUIRE_POSTGRES=1) but {why}");
    }
    eprintln!("skipping: PostgreSQL not reachable (set GOODIES_TEST_POSTGRES_URL): {why}");
    None
}

/// A PostgreSQL database created for one test and dropped (best effort) when dropped.
#[cfg(feature = "postgres")]
#[derive(Debug)]
pub struct FreshPostgres {
    /// URL of the fresh database.
    pub url: String,
    admin_url: String,
    name: String,
}

#[cfg(feature = "postgres")]
impl FreshPostgres {
    /// Creates a database with a random name; `None` when PostgreSQL tests are skipped.
    pub async fn create() -> Option<FreshPostgres> {
        use sqlx::Connection as _;
        let admin_url = match std::env::var("GOODIES_TEST_POSTGRES_URL") {
            Ok(u) if !u.trim().is_empty() => u,
            _ => return skip_postgres("GOODIES_TEST_POSTGRES_URL is not set"),
        };
        let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => return skip_postgres(&format!("cannot connect to {admin_url}: {e}")),
        };
        let name = format!("goodies_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = conn.close().await;
        let url = with_database(&admin_url, &name);
        Some(FreshPostgres {
            url,
            admin_url,
            name,
        })
    }
}

#[cfg(feature = "postgres")]
impl Drop for FreshPostgres {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // Best effort, on a thread of its own: Drop cannot await inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                use sqlx::Connection as _;
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

/// The same URL with its database name replaced.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{db}?{q}"),
        None => format!("{host_part}/{db}"),
    }
}

/// Drives the hidden `before_commit` hook of a store.
#[derive(Debug, Default)]
pub struct Gate {
    hold_next: AtomicBool,
    fail_next: AtomicBool,
    entered: Notify,
    release: Notify,
}

impl Gate {
    /// A gate with nothing armed.
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate::default())
    }

    /// Store options whose `before_commit` hook is this gate.
    pub fn options(self: &Arc<Self>) -> StoreOptions {
        StoreOptions {
            before_commit: Some(self.hook()),
            ..StoreOptions::default()
        }
    }

    /// The hook to put in `StoreOptions::before_commit`.
    pub fn hook(self: &Arc<Self>) -> BeforeCommitHook {
        let gate = Arc::clone(self);
        BeforeCommitHook(Arc::new(move || {
            let gate = Arc::clone(&gate);
            Box::pin(async move {
                if gate.hold_next.swap(false, Ordering::SeqCst) {
                    gate.entered.notify_one();
                    gate.release.notified().await;
                }
                if gate.fail_next.swap(false, Ordering::SeqCst) {
                    return Err("the test failed this commit".to_owned());
                }
                Ok(())
            })
        }))
    }

    /// The next write transaction to reach its commit waits there until [`Gate::release`].
    pub fn hold_next_commit(&self) {
        self.hold_next.store(true, Ordering::SeqCst);
    }

    /// Waits until a held transaction has reached its commit.
    pub async fn entered(&self) {
        self.entered.notified().await;
    }

    /// Lets the held transaction commit.
    pub fn release(&self) {
        self.release.notify_one();
    }

    /// The next write transaction to reach its commit fails there (and rolls back).
    pub fn fail_next_commit(&self) {
        self.fail_next.store(true, Ordering::SeqCst);
    }
}

// ---- data builders ----

/// The base of test edit times: 2025-01-01T00:00:00Z.
pub fn base_time() -> Timestamp {
    Timestamp::parse("2025-01-01T00:00:00+00:00").expect("base time")
}

/// A canonical version string `ms` milliseconds after [`base_time`].
pub fn ver(ms: i64, counter: u32, user: &str) -> Version {
    let t = base_time().saturating_add_micros(ms * 1000);
    Version::new(format!("{t}-{counter:06}-{user}"))
}

/// A version stamped `ms` milliseconds from now (negative: in the past).
pub fn ver_from_now(ms: i64, counter: u32, user: &str) -> Version {
    let t = Timestamp::now().saturating_add_micros(ms * 1000);
    Version::new(format!("{t}-{counter:06}-{user}"))
}

/// A JSON object from a `json!` value.
pub fn obj(v: serde_json::Value) -> inbetweenies_proto::JsonObject {
    v.as_object().cloned().expect("a JSON object")
}

/// An entity version on the wire. The user is the version's user part.
pub fn ent(
    id: &str,
    version: &Version,
    parents: &[&Version],
    entity_type: EntityType,
    name: &str,
    content: serde_json::Value,
) -> EntityChange {
    let user = version
        .parse()
        .map(|p| p.user_id)
        .unwrap_or_else(|_| "tester".into());
    EntityChange {
        id: EntityId::new(id),
        version: version.clone(),
        entity_type,
        name: name.to_owned(),
        content: obj(content),
        source_type: SourceType::Manual,
        user_id: user,
        parent_versions: parents.iter().map(|v| (*v).clone()).collect(),
        checksum: None,
        created_at: None,
        updated_at: None,
    }
}

/// A relationship on the wire between two entity versions.
pub fn rel(
    id: &str,
    from: (&str, &Version),
    to: (&str, &Version),
    relationship_type: RelationshipType,
) -> RelationshipChange {
    RelationshipChange {
        id: RelationshipId::new(id),
        from_entity_id: EntityId::new(from.0),
        from_entity_version: from.1.clone(),
        to_entity_id: EntityId::new(to.0),
        to_entity_version: to.1.clone(),
        relationship_type,
        properties: obj(serde_json::json!({})),
        user_id: None,
        created_at: None,
        updated_at: None,
    }
}

/// A create change.
pub fn create(e: EntityChange) -> SyncChange {
    SyncChange {
        change_type: ChangeType::Create,
        entity: Some(e),
        relationships: vec![],
    }
}

/// An update change.
pub fn update(e: EntityChange) -> SyncChange {
    SyncChange {
        change_type: ChangeType::Update,
        entity: Some(e),
        relationships: vec![],
    }
}

/// A delete change (the content is whatever the sender put; the store marks it deleted).
pub fn delete(e: EntityChange) -> SyncChange {
    SyncChange {
        change_type: ChangeType::Delete,
        entity: Some(e),
        relationships: vec![],
    }
}

/// A relationship-only change.
pub fn rels(relationships: Vec<RelationshipChange>) -> SyncChange {
    SyncChange {
        change_type: ChangeType::Update,
        entity: None,
        relationships,
    }
}

/// A pushed batch from `device` by `user`.
pub fn batch(device: &str, user: &str, changes: Vec<SyncChange>) -> PushBatch {
    PushBatch {
        device_id: device.to_owned(),
        user_id: user.to_owned(),
        changes,
    }
}

/// A batch of one create: a room `id` with an empty content, edited `ms` after
/// [`base_time`] by `device` (also its user).
pub fn one_room(device: &str, id: &str, ms: i64) -> PushBatch {
    let v = ver(ms, 1, device);
    batch(
        device,
        device,
        vec![create(ent(
            id,
            &v,
            &[],
            EntityType::Room,
            id,
            serde_json::json!({}),
        ))],
    )
}

/// A change-feed row as the server sends it to a client.
pub fn to_wire(record: &ChangeRecord) -> SyncChange {
    match record {
        ChangeRecord::Entity(e) => SyncChange {
            change_type: if e.entity.is_deleted() {
                ChangeType::Delete
            } else {
                ChangeType::Update
            },
            entity: Some(EntityChange::from_entity(&e.entity)),
            relationships: vec![],
        },
        ChangeRecord::Relationship(r) => SyncChange {
            change_type: ChangeType::Update,
            entity: None,
            relationships: vec![RelationshipChange::from_relationship(&r.relationship)],
        },
    }
}
