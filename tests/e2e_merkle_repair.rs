//! Repair of a digest mismatch through the server's Merkle tree (PROTOCOL §15.1), on
//! SQLite and PostgreSQL: a row of the client's mirror is corrupted on purpose (raw SQL
//! on the mirror's file, the client closed), and the next sync finds the one differing id
//! in at most depth + 1 tree requests, reads just that id again and converges; against a
//! server that does not announce the tree, or does not serve it, the same mismatch is
//! repaired by a full pull that keeps a change made while it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use goodies_client::proto::codec::gzip_decode;
use goodies_client::{
    BlowingOffClient, ClientEvent, EntityId, EntityType, HttpRequest, HttpResponse, HyperTransport,
    RepairMethod, RepairReason, Transport, TransportError,
};
use goodies_e2e::{corrupt_mirror_row, quiet_sync, seed_devices, Backend, TestServer};
use serde_json::Value;

const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// Entities on the server (small, so the suite stays fast; the 10,000-entity figure is
/// the `merkle_repair` bench's).
const ENTITIES: usize = 2_000;

/// The server's tree depth: a walk makes at most this + 1 requests.
const DEPTH: usize = 3;

/// What the counting transport does besides counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Passes everything through.
    Plain,
    /// Takes `merkle` out of every sync answer's capabilities.
    NoCapability,
    /// Answers `404` to every Merkle request, as a server without the endpoint would.
    NoEndpoint,
}

/// Counts the requests by kind, and makes a local edit when the first full pull starts.
#[derive(Debug)]
struct Counting {
    inner: HyperTransport,
    mode: Mode,
    merkle: Mutex<Vec<String>>,
    entity_reads: Mutex<Vec<String>>,
    /// Sync requests without `filters.since` (a full pull's pages).
    full_pulls: Mutex<usize>,
    /// Set once the test arms it: the next full pull gets a local edit first.
    edit_during_full_pull: AtomicBool,
    client: OnceLock<BlowingOffClient>,
    edited: OnceLock<EntityId>,
}

impl Counting {
    fn new(mode: Mode) -> Arc<Self> {
        Arc::new(Counting {
            inner: HyperTransport::new(),
            mode,
            merkle: Mutex::default(),
            entity_reads: Mutex::default(),
            full_pulls: Mutex::default(),
            edit_during_full_pull: AtomicBool::new(false),
            client: OnceLock::new(),
            edited: OnceLock::new(),
        })
    }
}

fn json_body(body: &[u8], gzipped: bool) -> Option<Value> {
    let plain = if gzipped {
        gzip_decode(body, 64 << 20).ok()?
    } else {
        body.to_vec()
    };
    serde_json::from_slice(&plain).ok()
}

#[async_trait]
impl Transport for Counting {
    async fn send(&self, mut request: HttpRequest) -> Result<HttpResponse, TransportError> {
        let path = request
            .url
            .split_once("/api/")
            .map(|(_, p)| format!("/api/{p}"))
            .unwrap_or_default();
        let is_sync = path == "/api/v1/sync/" || path == "/api/v1/sync";
        if path.starts_with("/api/v1/sync/merkle") {
            self.merkle.lock().unwrap().push(path.clone());
            if self.mode == Mode::NoEndpoint {
                return Ok(HttpResponse {
                    status: 404,
                    headers: vec![("content-type".into(), "application/json".into())],
                    body: br#"{"detail":"Not Found"}"#.to_vec(),
                });
            }
        } else if let Some(id) = path.strip_prefix("/api/v1/graph/entities/") {
            self.entity_reads.lock().unwrap().push(id.to_owned());
        } else if is_sync {
            let gz = request
                .header("content-encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
            let body = json_body(&request.body, gz).unwrap_or(Value::Null);
            if body.pointer("/filters/since").is_none() {
                *self.full_pulls.lock().unwrap() += 1;
                if self.edit_during_full_pull.swap(false, Ordering::SeqCst) {
                    let c = self.client.get().expect("client set");
                    let e = c
                        .create_entity(
                            EntityType::Note,
                            "made during the repair",
                            Default::default(),
                        )
                        .await
                        .map_err(|e| TransportError::Connect(e.to_string().into()))?;
                    let _ = self.edited.set(e.id);
                }
            }
            if self.mode == Mode::NoCapability {
                // Read the answer plain, so it can be rewritten.
                request
                    .headers
                    .retain(|(k, _)| !k.eq_ignore_ascii_case("accept-encoding"));
            }
        }
        let mut response = self.inner.send(request).await?;
        if is_sync && self.mode == Mode::NoCapability && response.status == 200 {
            let mut v: Value = serde_json::from_slice(&response.body)
                .map_err(|e| TransportError::Connect(e.to_string().into()))?;
            if let Some(Value::Array(caps)) = v.get_mut("capabilities") {
                caps.retain(|c| c != "merkle");
            }
            response.body = serde_json::to_vec(&v).expect("JSON");
            response
                .headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
        }
        Ok(response)
    }
}

/// Puts `ENTITIES` devices on the server through its store.
async fn seed(server: &TestServer) -> anyhow::Result<()> {
    let store = server.handle.store();
    seed_devices(store.as_ref(), ENTITIES, 1_000, |i| {
        EntityId::new(format!("device-{i:05}"))
    })
    .await
}

/// A mirror in step with a 2,000-entity server, closed, one row corrupted, reopened
/// through `transport`.
async fn corrupted_mirror(
    server: &TestServer,
    name: &str,
    transport: Arc<Counting>,
) -> anyhow::Result<(BlowingOffClient, EntityId)> {
    seed(server).await?;
    let first = server.client(name).await?;
    quiet_sync(&first).await?;
    assert_eq!(first.state_digest().await?, server.digest().await?);
    drop(first);
    let victim = EntityId::new("device-01234");
    corrupt_mirror_row(
        &server.dir.path().join(format!("{name}.db")),
        victim.as_str(),
    )
    .await?;
    let c = server.client_with_transport(name, transport).await?;
    Ok((c, victim))
}

#[tokio::test]
async fn a_corrupted_row_is_repaired_through_the_merkle_tree_in_depth_plus_one_requests(
) -> anyhow::Result<()> {
    for backend in BACKENDS {
        let Some(server) = TestServer::start_on(backend, |c| c).await? else {
            continue;
        };
        let counting = Counting::new(Mode::Plain);
        let (c, victim) = corrupted_mirror(&server, "m", counting.clone()).await?;
        assert_ne!(c.state_digest().await?, server.digest().await?);
        let mut events = c.observe_changes();

        let r = c.sync().await?;
        assert!(r.errors.is_empty(), "{backend:?}: {:?}", r.errors);
        let repair = r.repair.clone().context("a repair is reported")?;
        assert_eq!(repair.reason, RepairReason::DigestMismatch, "{backend:?}");
        assert_eq!(
            repair.method,
            RepairMethod::Merkle,
            "{backend:?}: {repair:?}"
        );
        assert!(repair.converged, "{backend:?}: {repair:?}");
        assert_eq!(repair.differing_ids, vec![victim.clone()], "{backend:?}");
        assert_eq!(repair.fetched, vec![victim.clone()], "{backend:?}");
        assert_eq!(repair.pulled_entities, 1, "{backend:?}");
        let merkle = counting.merkle.lock().unwrap().clone();
        assert!(
            !merkle.is_empty() && merkle.len() <= DEPTH + 1,
            "{backend:?}: {} Merkle requests: {merkle:?}",
            merkle.len()
        );
        assert_eq!(repair.merkle_requests as usize, merkle.len(), "{backend:?}");
        assert_eq!(
            *counting.entity_reads.lock().unwrap(),
            vec![victim.to_string()],
            "{backend:?}: only the corrupted id is read again"
        );
        assert_eq!(
            *counting.full_pulls.lock().unwrap(),
            0,
            "{backend:?}: no full pull"
        );
        assert!(
            r.digest.as_ref().is_some_and(|d| d.matches()),
            "{backend:?}"
        );
        assert!(r.digest_mismatch.is_none());
        assert_eq!(
            c.state_digest().await?,
            server.digest().await?,
            "{backend:?}"
        );
        let want = server
            .handle
            .store()
            .entity(&victim)
            .await?
            .context("on the server")?;
        assert_eq!(
            c.entity(&victim).await?.context("local")?.version,
            want.version
        );

        // The repair was announced, as Merkle.
        let mut announced = None;
        while let Some(Some(e)) = futures::FutureExt::now_or_never(events.next()) {
            if let ClientEvent::Repaired(rep) = e {
                announced = Some(rep);
            }
        }
        assert_eq!(
            announced.map(|a| a.method),
            Some(RepairMethod::Merkle),
            "{backend:?}"
        );

        let again = quiet_sync(&c).await?;
        assert!(again.repair.is_none(), "{backend:?}");
        drop(c);
        server.stop().await?;
    }
    Ok(())
}

#[tokio::test]
async fn without_the_merkle_tree_a_mismatch_is_repaired_by_a_full_pull_keeping_a_pending_change(
) -> anyhow::Result<()> {
    for backend in BACKENDS {
        for mode in [Mode::NoCapability, Mode::NoEndpoint] {
            let Some(server) = TestServer::start_on(backend, |c| c).await? else {
                continue;
            };
            let counting = Counting::new(mode);
            let (c, victim) = corrupted_mirror(&server, "f", counting.clone()).await?;
            counting.client.set(c.clone()).expect("once");
            counting.edit_during_full_pull.store(true, Ordering::SeqCst);

            let r = c.sync().await?;
            assert!(r.errors.is_empty(), "{backend:?} {mode:?}: {:?}", r.errors);
            let repair = r.repair.clone().context("a repair is reported")?;
            assert_eq!(
                repair.method,
                RepairMethod::FullPull,
                "{backend:?} {mode:?}"
            );
            assert_eq!(repair.reason, RepairReason::DigestMismatch);
            assert!(repair.converged, "{backend:?} {mode:?}: {repair:?}");
            let merkle = counting.merkle.lock().unwrap().len();
            match mode {
                Mode::NoCapability => assert_eq!(merkle, 0, "{backend:?}: not asked"),
                _ => assert!(merkle >= 1, "{backend:?}: asked, refused"),
            }
            assert!(counting.entity_reads.lock().unwrap().is_empty());
            assert!(
                *counting.full_pulls.lock().unwrap() >= 1,
                "{backend:?} {mode:?}"
            );

            // The change made while the full pull ran was kept and pushed.
            let edited = counting.edited.get().context("an edit was made")?.clone();
            let mine = c.entity(&edited).await?.context("kept locally")?;
            let theirs = server
                .handle
                .store()
                .entity(&edited)
                .await?
                .context("pushed to the server")?;
            assert_eq!(mine.version, theirs.version, "{backend:?} {mode:?}");
            assert_eq!(c.store().pending_count().await?, 0);
            assert_eq!(
                c.entity(&victim).await?.context("local")?.version,
                server
                    .handle
                    .store()
                    .entity(&victim)
                    .await?
                    .context("server")?
                    .version
            );
            assert_eq!(
                c.state_digest().await?,
                server.digest().await?,
                "{backend:?} {mode:?}"
            );
            drop(c);
            server.stop().await?;
        }
    }
    Ok(())
}
