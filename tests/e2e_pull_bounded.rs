//! A paged pull holds at most two pages: the one being applied and the next one on its
//! way. Checked from the wire, against the real server: the client never has two
//! requests in flight, and when it asks for page `k + 2` every row of pages up to `k`
//! is already committed in its mirror (read from the mirror file by another
//! connection at that moment). A client that gathered pages before applying them, or
//! fetched further ahead, fails one of the two.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use goodies_client::proto::EntityType;
use goodies_client::{
    BlowingOffClient, HttpRequest, HttpResponse, HyperTransport, Transport, TransportError,
    SYNC_PATH,
};
use goodies_e2e::{quiet_sync, test_config, Backend, TestServer, PASSWORD};
use sqlx::Connection as _;

const PAGE: usize = 50;
const ENTITIES: usize = 600;

/// Forwards to the real server; before each pull request, records how many sync
/// requests were sent before it and how many entities the mirror holds.
#[derive(Debug)]
struct Watching {
    inner: HyperTransport,
    mirror: PathBuf,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
    /// (sync requests sent before this one, entities in the mirror when it was sent).
    seen: Mutex<Vec<(usize, i64)>>,
}

#[async_trait]
impl Transport for Watching {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let is_sync = request.url.ends_with(SYNC_PATH);
        if is_sync {
            let body: Option<serde_json::Value> = serde_json::from_slice(&request.body).ok();
            let paging = body.as_ref().is_some_and(|b| !b["cursor"].is_null());
            if paging && self.mirror.exists() {
                let url = format!("sqlite://{}?mode=ro", self.mirror.display());
                let mut conn = sqlx::SqliteConnection::connect(&url)
                    .await
                    .map_err(|e| TransportError::http(format!("read the mirror: {e}")))?;
                let n: i64 = sqlx::query_scalar("SELECT count(DISTINCT id) FROM entities")
                    .fetch_one(&mut conn)
                    .await
                    .map_err(|e| TransportError::http(format!("count: {e}")))?;
                let _ = conn.close().await;
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                let sent = seen.len();
                seen.push((sent, n));
            }
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let answer = self.inner.send(request).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        answer
    }
}

async fn a_paged_pull_holds_at_most_two_pages(backend: Backend) -> anyhow::Result<()> {
    let Some(server) = TestServer::start_on(backend, |mut c| {
        c.page_size = PAGE;
        c
    })
    .await?
    else {
        return Ok(());
    };
    let writer = server.client("writer").await?;
    for i in 0..ENTITIES {
        writer
            .create_entity(
                EntityType::Note,
                &format!("note {i:04}"),
                goodies_client::JsonObject::new(),
            )
            .await?;
    }
    quiet_sync(&writer).await?;

    let mirror = server.dir.path().join("reader.db");
    let watching = Arc::new(Watching {
        inner: HyperTransport::new(),
        mirror: mirror.clone(),
        in_flight: AtomicUsize::new(0),
        most_in_flight: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let reader = BlowingOffClient::builder(&mirror)
        .config(test_config())
        .transport(watching.clone())
        .open()
        .await?;
    reader.login(&server.url, PASSWORD).await?;
    let r = reader.sync().await?;
    anyhow::ensure!(r.errors.is_empty(), "{backend:?}: {:?}", r.errors);
    anyhow::ensure!(
        r.pulled_entities as usize >= ENTITIES,
        "{backend:?}: pulled {}",
        r.pulled_entities
    );
    let most = watching.most_in_flight.load(Ordering::SeqCst);
    anyhow::ensure!(most == 1, "{backend:?}: {most} requests in flight at once");
    let seen = watching
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // The first request has no cursor: `seen[j]` is the request for page j + 2.
    anyhow::ensure!(
        seen.len() + 1 >= ENTITIES / PAGE,
        "{backend:?}: only {} paging requests seen",
        seen.len()
    );
    for (j, &(_, held)) in seen.iter().enumerate() {
        // Asking for page j + 2: pages 1 ..= j are applied.
        let applied_at_least = (j * PAGE) as i64;
        anyhow::ensure!(
            held >= applied_at_least,
            "{backend:?}: asking for page {} with only {held} entities applied (pages up to {j} \
             must be): pages are being held",
            j + 2
        );
    }
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_pull_holds_at_most_two_pages_sqlite() -> anyhow::Result<()> {
    a_paged_pull_holds_at_most_two_pages(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_pull_holds_at_most_two_pages_postgres() -> anyhow::Result<()> {
    a_paged_pull_holds_at_most_two_pages(Backend::Postgres).await
}
