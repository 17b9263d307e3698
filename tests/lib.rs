//! Helpers for the workspace-level end-to-end tests (`e2e_*.rs`): the real server on
//! `127.0.0.1:0`, real clients over real HTTP, and convergence checks.
//!
//! The server runs on a fresh SQLite file, or on a fresh PostgreSQL database
//! ([`TestServer::start_on`]) found through `GOODIES_TEST_POSTGRES_URL` (an admin URL,
//! e.g. `postgres://postgres@127.0.0.1:5432/test`); each server creates its own database
//! and drops it at the end. When the variable is unset or PostgreSQL unreachable, the
//! PostgreSQL variant is skipped with a `skipping:` line, unless
//! `GOODIES_REQUIRE_POSTGRES=1`, which makes it fail.

pub mod chaos;

use std::sync::Arc;

use anyhow::Context;
use funkygibbon_mock::{serve_with_handle, AppHandle, ServerConfig};
use goodies_client::{BlowingOffClient, ClientConfig, RetryPolicy, Transport};
use tokio::sync::oneshot;

/// The admin password of every test server.
pub const PASSWORD: &str = "e2e-password";

/// Which store a test server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A SQLite file in the server's temporary directory.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A server running on an ephemeral loopback port, with its own database.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's handle (its store, token signer).
    pub handle: AppHandle,
    /// Where the server's (SQLite) and the clients' files live.
    pub dir: tempfile::TempDir,
    /// The store the server runs on.
    pub backend: Backend,
    stop: Option<oneshot::Sender<()>>,
    task: Option<std::thread::JoinHandle<Result<(), funkygibbon_mock::ServerError>>>,
    /// Dropped after the server (fields drop in order): the database goes last.
    _postgres: Option<FreshPostgres>,
}

impl TestServer {
    /// Starts a server with the default settings.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|c| c).await
    }

    /// Starts a server with adjusted settings.
    pub async fn start_with(
        adjust: impl FnOnce(ServerConfig) -> ServerConfig,
    ) -> anyhow::Result<Self> {
        Self::start_on(Backend::Sqlite, adjust)
            .await?
            .context("a SQLite server is never skipped")
    }

    /// Starts a server with adjusted settings on `backend`; `None` (after printing a
    /// `skipping:` line) when PostgreSQL is not available and not required.
    pub async fn start_on(
        backend: Backend,
        adjust: impl FnOnce(ServerConfig) -> ServerConfig,
    ) -> anyhow::Result<Option<Self>> {
        let dir = tempfile::tempdir()?;
        let (db, postgres) = match backend {
            Backend::Sqlite => (
                format!("sqlite://{}", dir.path().join("server.db").display()),
                None,
            ),
            Backend::Postgres => match FreshPostgres::create().await? {
                Some(pg) => (pg.url.clone(), Some(pg)),
                None => return Ok(None),
            },
        };
        let config = adjust(
            ServerConfig::new(db)
                .with_admin_password(PASSWORD)
                .with_jwt_secret("e2e-secret")
                .with_backup_dir(dir.path().join("backups")),
        );
        // The server runs on its own thread and runtime, as it would in its own process.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let url = format!("http://{}", std_listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, handle) = oneshot::channel();
        let task = std::thread::Builder::new()
            .name("funkygibbon".into())
            .spawn(move || -> Result<(), funkygibbon_mock::ServerError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    serve_with_handle(
                        listener,
                        config,
                        async move {
                            let _ = stopped.await;
                        },
                        ready,
                    )
                    .await
                })
            })?;
        let handle = match handle.await {
            Ok(h) => h,
            Err(_) => {
                let why = match task.join() {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(())) => "it stopped".to_owned(),
                    Err(_) => "its thread panicked".to_owned(),
                };
                anyhow::bail!("the server did not start: {why}");
            }
        };
        Ok(Some(TestServer {
            url,
            handle,
            dir,
            backend,
            stop: Some(stop),
            task: Some(task),
            _postgres: postgres,
        }))
    }

    /// The server store's digest.
    pub async fn digest(&self) -> anyhow::Result<String> {
        Ok(self.handle.store().state_digest().await?)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::task::spawn_blocking(move || t.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
        }
        Ok(())
    }

    /// Opens a client named `name` (its own database file), logged in to this server.
    pub async fn client(&self, name: &str) -> anyhow::Result<BlowingOffClient> {
        let c = self.offline_client(name).await?;
        c.login(&self.url, PASSWORD).await?;
        Ok(c)
    }

    /// Opens a client that has never talked to any server.
    pub async fn offline_client(&self, name: &str) -> anyhow::Result<BlowingOffClient> {
        Ok(
            BlowingOffClient::builder(self.dir.path().join(format!("{name}.db")))
                .config(test_config())
                .open()
                .await?,
        )
    }

    /// Opens a logged-in client that talks through `transport`.
    pub async fn client_with_transport(
        &self,
        name: &str,
        transport: Arc<dyn Transport>,
    ) -> anyhow::Result<BlowingOffClient> {
        let c = BlowingOffClient::builder(self.dir.path().join(format!("{name}.db")))
            .config(test_config())
            .transport(transport)
            .open()
            .await?;
        c.login(&self.url, PASSWORD).await?;
        Ok(c)
    }
}

/// The client settings tests use: retries without waiting.
pub fn test_config() -> ClientConfig {
    ClientConfig::default().with_retry(RetryPolicy::immediate(3))
}

/// Syncs a client and checks the sync was clean and its digest matched the server's.
pub async fn quiet_sync(c: &BlowingOffClient) -> anyhow::Result<goodies_client::SyncResult> {
    let r = c.sync().await?;
    anyhow::ensure!(r.errors.is_empty(), "sync errors: {:?}", r.errors);
    anyhow::ensure!(r.pending == 0, "{} changes still pending", r.pending);
    let d = r
        .digest
        .as_ref()
        .context("no digest check after a quiet sync")?;
    anyhow::ensure!(d.matches(), "digest mismatch after a quiet sync: {d:?}");
    Ok(r)
}

/// Checks that every client's local digest equals the server's.
pub async fn assert_converged(
    server: &TestServer,
    clients: &[&BlowingOffClient],
) -> anyhow::Result<()> {
    let want = server.digest().await?;
    for (n, c) in clients.iter().enumerate() {
        let got = c.state_digest().await?;
        anyhow::ensure!(got == want, "client {n} digest {got} != server {want}");
    }
    Ok(())
}

/// Whether the PostgreSQL tests must run (`GOODIES_REQUIRE_POSTGRES=1`).
fn postgres_required() -> bool {
    std::env::var("GOODIES_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// A fresh PostgreSQL database, dropped when this value is dropped.
#[derive(Debug)]
struct FreshPostgres {
    url: String,
    admin_url: String,
    name: String,
}

impl FreshPostgres {
    /// Creates a database with a random name; `None` when PostgreSQL tests are skipped.
    async fn create() -> anyhow::Result<Option<FreshPostgres>> {
        use sqlx::Connection as _;
        let skip = |why: String| -> anyhow::Result<Option<FreshPostgres>> {
            anyhow::ensure!(
                !postgres_required(),
                "PostgreSQL is required (GOODIES_REQUIRE_POSTGRES=1) but {why}"
            );
            println!("skipping: PostgreSQL not available ({why}; set GOODIES_TEST_POSTGRES_URL)");
            Ok(None)
        };
        let admin_url = match std::env::var("GOODIES_TEST_POSTGRES_URL") {
            Ok(u) if !u.trim().is_empty() => u,
            _ => return skip("GOODIES_TEST_POSTGRES_URL is not set".into()),
        };
        let mut conn = match sqlx::PgConnection::connect(&admin_url).await {
            Ok(c) => c,
            Err(e) => return skip(format!("cannot connect: {e}")),
        };
        let name = format!("goodies_e2e_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("create database {name}"))?;
        let _ = conn.close().await;
        Ok(Some(FreshPostgres {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        }))
    }
}

impl Drop for FreshPostgres {
    fn drop(&mut self) {
        let admin = self.admin_url.clone();
        let name = self.name.clone();
        // On a thread of its own: Drop cannot await inside the test's runtime.
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
fn with_database(url: &str, db: &str) -> String {
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

/// One HTTP/1.1 request with an optional JSON body over a plain socket, as a script or
/// another language's client would send it: the status and the JSON answer (`Null` for
/// an empty body).
pub fn http_json(
    method: &str,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let host = base.strip_prefix("http://").context("an http URL")?;
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw)?;
    let (head, rest) = text.split_once("\r\n\r\n").context("an HTTP answer")?;
    let status: u16 = head.split(' ').nth(1).context("a status line")?.parse()?;
    anyhow::ensure!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "chunked answer"
    );
    let value = if rest.trim().is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(rest).with_context(|| format!("a JSON answer: {rest}"))?
    };
    Ok((status, value))
}

/// The create of device number `i` (named `device {i:05}`, written by `seed`) that the
/// seeding helpers push.
pub fn seeded_device(
    id: goodies_client::proto::EntityId,
    version: goodies_client::proto::Version,
    i: usize,
    content: serde_json::Map<String, serde_json::Value>,
) -> goodies_client::proto::SyncChange {
    use goodies_client::proto::{ChangeType, EntityChange, EntityType, SourceType, SyncChange};
    SyncChange {
        change_type: ChangeType::Create,
        entity: Some(EntityChange {
            id,
            version,
            entity_type: EntityType::Device,
            name: format!("device {i:05}"),
            content,
            source_type: SourceType::Generated,
            user_id: "seed".into(),
            parent_versions: vec![],
            checksum: None,
            created_at: None,
            updated_at: None,
        }),
        relationships: vec![],
    }
}

/// Seeds a server store with `n` devices, each `connects_to` the previous one (the first
/// to itself): `n` entities and `n` relationships, pushed in batches of 2,000 (what the
/// benchmarks pull). Returns the devices' ids in order; fails unless every relationship
/// of every batch was applied.
pub async fn seed_device_chain(
    store: &dyn goodies_store::ServerStore,
    n: usize,
) -> anyhow::Result<Vec<goodies_client::proto::EntityId>> {
    use goodies_client::proto::{
        ChangeType, EntityId, RelationshipChange, RelationshipId, RelationshipType, SyncChange,
        Version,
    };
    let ids: Vec<EntityId> = (0..n).map(|_| EntityId::new_random()).collect();
    let versions: Vec<Version> = (0..n).map(|_| Version::now("seed")).collect();
    let all: Vec<usize> = (0..n).collect();
    for chunk in all.chunks(2000) {
        let mut changes: Vec<SyncChange> = chunk
            .iter()
            .map(|&i| {
                seeded_device(
                    ids[i].clone(),
                    versions[i].clone(),
                    i,
                    serde_json::json!({"n": i, "power": "off", "manufacturer": "Acme"})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                )
            })
            .collect();
        changes.extend(chunk.iter().map(|&i| {
            let j = i.saturating_sub(1);
            SyncChange {
                change_type: ChangeType::Update,
                entity: None,
                relationships: vec![RelationshipChange {
                    id: RelationshipId::new_random(),
                    from_entity_id: ids[i].clone(),
                    from_entity_version: versions[i].clone(),
                    to_entity_id: ids[j].clone(),
                    to_entity_version: versions[j].clone(),
                    relationship_type: RelationshipType::ConnectsTo,
                    properties: Default::default(),
                    user_id: None,
                    created_at: None,
                    updated_at: None,
                }],
            }
        }));
        let out = store
            .apply_push(goodies_store::PushBatch {
                device_id: "seeder".into(),
                user_id: "seed".into(),
                changes,
            })
            .await?;
        anyhow::ensure!(
            out.applied_relationships.len() == chunk.len(),
            "{} of {} relationships applied",
            out.applied_relationships.len(),
            chunk.len()
        );
    }
    Ok(ids)
}

/// Seeds a server store with `n` devices and no relationships, pushed in batches of
/// `batch`; the `i`th device gets the id `id(i)` and the name `device {i:05}`.
pub async fn seed_devices(
    store: &dyn goodies_store::ServerStore,
    n: usize,
    batch: usize,
    id: impl Fn(usize) -> goodies_client::proto::EntityId,
) -> anyhow::Result<()> {
    use goodies_client::proto::Version;
    for start in (0..n).step_by(batch.max(1)) {
        let changes = (start..n.min(start + batch.max(1)))
            .map(|i| seeded_device(id(i), Version::now("seed"), i, Default::default()))
            .collect();
        store
            .apply_push(goodies_store::PushBatch {
                device_id: "seed".into(),
                user_id: "seed".into(),
                changes,
            })
            .await?;
    }
    Ok(())
}

/// Changes the latest version of entity `id` in a client's SQLite mirror file behind
/// the client's back (the mirror closed), as a damaged disk or a stray tool would.
pub async fn corrupt_mirror_row(path: &std::path::Path, id: &str) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    let done = sqlx::query(
        "UPDATE entities SET version = '2001-01-01T00:00:00.000000+00:00-000001-corrupt' \
         WHERE id = ? AND is_latest = 1",
    )
    .bind(id)
    .execute(&mut conn)
    .await?;
    anyhow::ensure!(done.rows_affected() == 1, "one row corrupted");
    conn.close().await?;
    Ok(())
}
