//! Test support: a real server on 127.0.0.1:0 over a fresh SQLite file or PostgreSQL database, and an HTTP client.
//!
//! PostgreSQL is found through `GOODIES_TEST_POSTGRES_URL` (an admin URL, e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); each test creates its own
//! database and drops it at the end. When the variable is unset or the server
//! unreachable the PostgreSQL variant is skipped, unless
//! `GOODIES_REQUIRE_POSTGRES=1`, which makes it fail.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the support module"
)]

use funkygibbon_mock::{serve_with_handle, AppHandle, ServerConfig, ServerError};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The admin password every test server uses.
pub const PASSWORD: &str = "test-admin-password";
/// The JWT secret every test server uses.
pub const SECRET: &str = "test-jwt-secret-for-funkygibbon";

/// Which store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// Generates one `sqlite` and one `postgres` test for each named `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::Backend::Postgres).await
            }
        }
    )*};
}

enum Db {
    Sqlite(
        #[allow(dead_code, reason = "kept to delete the directory at the end")] tempfile::TempDir,
    ),
    Postgres(#[allow(dead_code, reason = "kept to drop the database at the end")] FreshPostgres),
    /// A database another server of the test owns.
    Shared,
}

/// A running server.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The server's handle (store, token signer, in-flight count).
    pub handle: AppHandle,
    /// An HTTP client (no proxies; gzip on).
    pub http: reqwest::Client,
    /// Which backend.
    pub backend: Backend,
    /// The database URL.
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServerError>>>,
    _db: Db,
}

/// A database URL for a fresh store; `None` when the test is to be skipped.
async fn fresh_database(backend: Backend) -> Option<(String, Db)> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let url = format!("sqlite://{}", dir.path().join("server.db").display());
            Some((url, Db::Sqlite(dir)))
        }
        Backend::Postgres => {
            if !cfg!(feature = "postgres") {
                skip_postgres("the postgres feature is off")?;
            }
            let pg = FreshPostgres::create().await?;
            Some((pg.url.clone(), Db::Postgres(pg)))
        }
    }
}

/// The headers that sign a request (PROTOCOL §2.6), with a fresh nonce and the current time.
pub fn signed_headers(
    key: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let ts = time::OffsetDateTime::now_utc().unix_timestamp();
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    signed_headers_at(key, method, path, query, body, ts, &nonce)
}

/// The headers that sign a request with a given timestamp and nonce.
pub fn signed_headers_at(
    key: &str,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    ts: i64,
    nonce: &str,
) -> Vec<(&'static str, String)> {
    let string = funkygibbon_mock::request_string(method, path, query, ts, nonce, body);
    vec![
        (
            inbetweenies_proto::codec::SIGNATURE_HEADER,
            funkygibbon_mock::sign_string(key.as_bytes(), &string),
        ),
        (funkygibbon_mock::TIMESTAMP_HEADER, ts.to_string()),
        (funkygibbon_mock::NONCE_HEADER, nonce.to_owned()),
    ]
}

/// An HTTP client for loopback tests.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("http client")
}

impl TestServer {
    /// Starts a server with the test password and secret.
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |c| c).await
    }

    /// Starts a server whose configuration `tweak` adjusts.
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(ServerConfig) -> ServerConfig,
    ) -> Option<TestServer> {
        let (url, db) = fresh_database(backend).await?;
        let config = tweak(
            ServerConfig::new(url.clone())
                .with_admin_password(PASSWORD)
                .with_jwt_secret(SECRET),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(serve_with_handle(
            listener,
            config,
            async move {
                let _ = stop_rx.await;
            },
            ready_tx,
        ));
        let handle = match ready_rx.await {
            Ok(h) => h,
            Err(_) => match task.await {
                Ok(Err(e)) => panic!("server did not start: {}", e.report()),
                other => panic!("server did not start: {other:?}"),
            },
        };
        Some(TestServer {
            base: format!("http://{addr}"),
            handle,
            http: http_client(),
            backend,
            database_url: url,
            stop: Some(stop_tx),
            task: Some(task),
            _db: db,
        })
    }

    /// Starts a second server on a database another test server owns (another store
    /// instance with its own pool, as a second server process would have).
    pub async fn start_on_url(url: &str) -> TestServer {
        let config = ServerConfig::new(url.to_owned())
            .with_admin_password(PASSWORD)
            .with_jwt_secret(SECRET);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(serve_with_handle(
            listener,
            config,
            async move {
                let _ = stop_rx.await;
            },
            ready_tx,
        ));
        let handle = ready_rx.await.expect("second server started");
        TestServer {
            base: format!("http://{addr}"),
            handle,
            http: http_client(),
            backend: if url.starts_with("postgres") {
                Backend::Postgres
            } else {
                Backend::Sqlite
            },
            database_url: url.to_owned(),
            stop: Some(stop_tx),
            task: Some(task),
            _db: Db::Shared,
        }
    }

    /// The full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Logs in over HTTP with the test password and returns the admin token.
    pub async fn login(&self) -> String {
        admin_login(&self.http, &self.base, PASSWORD).await
    }

    /// Logs in with a signed request (servers with a signing key, PROTOCOL §2.6).
    pub async fn login_signed(&self, key: &str) -> String {
        let body = serde_json::to_vec(&serde_json::json!({"password": PASSWORD})).expect("json");
        let path = "/api/v1/auth/admin/login";
        let mut req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json");
        for (name, value) in signed_headers(key, "POST", path, "", &body) {
            req = req.header(name, value);
        }
        let res = req.body(body).send().await.expect("login request");
        let (status, body) = read(res).await;
        assert_eq!(status, 200, "signed login failed: {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// A guest token made through generate-qr and verify.
    pub async fn guest_token(&self, admin: &str) -> String {
        let qr: Value = self
            .post_json(
                admin,
                "/api/v1/auth/guest/generate-qr",
                &serde_json::json!({"duration_hours": 1}),
            )
            .await
            .1;
        let token = qr["qr_data"]["token"]
            .as_str()
            .expect("guest token")
            .to_owned();
        let (status, body) = self
            .post_json(
                "",
                "/api/v1/auth/guest/verify",
                &serde_json::json!({"token": token}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().expect("guest jwt").to_owned()
    }

    /// POSTs JSON with a bearer token (none when empty); returns status and JSON body.
    pub async fn post_json(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let mut req = self.http.post(self.url(path)).json(body);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        read(req.send().await.expect("request")).await
    }

    /// PUTs JSON with a bearer token.
    pub async fn put_json(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let req = self.http.put(self.url(path)).json(body).bearer_auth(token);
        read(req.send().await.expect("request")).await
    }

    /// GETs with a bearer token (none when empty).
    pub async fn get_json(&self, token: &str, path: &str) -> (u16, Value) {
        let mut req = self.http.get(self.url(path));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        read(req.send().await.expect("request")).await
    }

    /// Stops the server and waits for it to finish.
    pub async fn shutdown(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("server task"),
            None => Ok(()),
        }
    }

    /// Sends the stop signal without waiting.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits for the server task to end (after [`Self::signal_stop`]).
    pub async fn join(&mut self) -> Result<(), ServerError> {
        match self.task.take() {
            Some(t) => t.await.expect("server task"),
            None => Ok(()),
        }
    }
}

/// Logs in as the admin with `password` at the server `base` (a URL) and returns the
/// token: for servers this support did not start (the binary as a child process).
pub async fn admin_login(http: &reqwest::Client, base: &str, password: &str) -> String {
    let res = http
        .post(format!("{base}/api/v1/auth/admin/login"))
        .json(&serde_json::json!({ "password": password }))
        .send()
        .await
        .expect("login request");
    assert_eq!(res.status(), 200, "login failed");
    let body: Value = res.json().await.expect("login body");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// Status and JSON body of a response (panics on a non-JSON body).
pub async fn read(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.expect("response body");
    let body = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, body)
}

/// A sync request body.
pub fn sync_body(device: &str, sync_type: &str, changes: Value) -> Value {
    serde_json::json!({
        "protocol_version": "inbetweenies-v2",
        "device_id": device,
        "user_id": "tester",
        "sync_type": sync_type,
        "changes": changes,
        "vector_clock": {"clocks": {}},
    })
}

/// An entity create change with a fresh version.
pub fn create_change(id: &str, entity_type: &str, name: &str, content: Value) -> Value {
    let version = inbetweenies_proto::Version::now("tester");
    serde_json::json!({
        "change_type": "create",
        "entity": {
            "id": id, "version": version, "entity_type": entity_type, "name": name,
            "content": content, "source_type": "manual", "user_id": "tester", "parent_versions": [],
        },
        "relationships": [],
    })
}

/// A fresh PostgreSQL database, dropped (best effort) when this value is dropped.
pub struct FreshPostgres {
    /// URL of the fresh database.
    pub url: String,
    admin_url: String,
    name: String,
}

fn skip_postgres(why: &str) -> Option<FreshPostgres> {
    if std::env::var("GOODIES_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("PostgreSQL is required (GOODIES_REQUIRE_POSTGRES=1) but {why}");
    }
    println!("skipping: {why} (set GOODIES_TEST_POSTGRES_URL and build with the postgres feature)");
    None
}

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
            Err(e) => return skip_postgres(&format!("cannot connect: {e}")),
        };
        let name = format!("funkygibbon_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = conn.close().await;
        Some(FreshPostgres {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        })
    }
}

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
