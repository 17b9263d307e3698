//! Crash atomicity of a push: the real `funkygibbon-mock` process is killed with SIGKILL at random points of a 5,000-entity push, on SQLite and on PostgreSQL; after a restart on the same database the batch is all there or not at all, the change feed agrees, and the pushing client's retry converges.
//!
//! Every round pushes one batch in one request — 4,000 fast-forward updates of
//! entities the server holds, 1,000 new entities and 1,000 relationships between
//! versions of the same batch — and kills the server after a random delay drawn
//! from a seeded RNG, anywhere from the start of the request to a little past the
//! measured duration of a whole push. Then, with the process gone, the store is
//! opened directly: its latest rows are exactly the state before the batch or
//! exactly the state after it (and if the client saw a `200`, after it). The
//! server is restarted on the same database and port; the change feed since a
//! watermark taken before the push holds the whole batch or nothing, with
//! increasing cursors and no row twice; the client re-sends the same request and
//! gets every id acknowledged without a conflict, and the answer's digest is the
//! digest of the expected state. At the end a client of the real client library
//! that synced before the first kill catches up from its watermark, and a fresh
//! client's full pull: both reach the server's digest.
//!
//! The seed is printed; `GOODIES_CRASH_SEED=<seed>` replays a run's kill delays.
//! `GOODIES_CRASH_KILLS=<n>` sets the kills per backend (20 by default):
//! `GOODIES_CRASH_KILLS=100 cargo nextest run --workspace --all-features -E 'binary(crash)'`.

#![cfg(unix)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use goodies_client::{BlowingOffClient, ClientConfig, RetryPolicy};
use goodies_store::{ServerStore, StoreOptions};
use inbetweenies_conflict::state_digest;
use inbetweenies_proto::Version;
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use serde_json::{json, Value};
use support::{Backend, FreshPostgres, PASSWORD, SECRET};

/// Entities in every pushed batch.
const BATCH: usize = 5_000;
/// Of which new entities (the rest update entities the server already holds).
const CREATES: usize = 1_000;
/// Rows per page of the change feed.
const PAGE_SIZE: usize = 1_000;
/// The user every version is made by.
const USER: &str = "crasher";

/// Seed and number of kills for this run, printed so that a failure can be replayed.
fn crash_settings(what: &str) -> (u64, usize) {
    let seed = match std::env::var("GOODIES_CRASH_SEED") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("GOODIES_CRASH_SEED={s:?} is not an unsigned integer")),
        _ => rand::random(),
    };
    let kills = match std::env::var("GOODIES_CRASH_KILLS") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("GOODIES_CRASH_KILLS={s:?} is not an unsigned integer")),
        _ => 20,
    };
    println!("{what}: seed {seed}, {kills} kills (replay with GOODIES_CRASH_SEED={seed} GOODIES_CRASH_KILLS={kills})");
    (seed, kills)
}

/// The last lines a server process logged, for failure messages.
type Log = Arc<Mutex<VecDeque<String>>>;

/// A running `funkygibbon-mock` process, killed if the test ends early.
struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// The port it listens on (kept across restarts).
    port: u16,
    log: Log,
}

impl ServerProcess {
    /// Starts the binary on `database_url` and waits until it logs its address and answers `/health`.
    async fn start(database_url: &str, listen: &str) -> ServerProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_funkygibbon-mock"));
        for (key, _) in std::env::vars() {
            if key.starts_with("FUNKYGIBBON_") {
                cmd.env_remove(key);
            }
        }
        let mut child = cmd
            .args(["--listen", listen, "--database-url", database_url])
            .args(["--admin-password", PASSWORD, "--jwt-secret", SECRET])
            .args(["--page-size", &PAGE_SIZE.to_string()])
            .env("RUST_LOG", "warn,funkygibbon_mock=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start funkygibbon-mock");
        let stdout = child.stdout.take().expect("stdout");
        let log: Log = Arc::default();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<String>();
        let lines = log.clone();
        // Drains the pipe for the life of the process (a full pipe would block its logging).
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // The one stdout line: {"event":"listening","addr":"127.0.0.1:PORT",…}.
                let parsed = serde_json::from_str::<serde_json::Value>(&line).ok();
                if let Some(addr) = parsed.as_ref().and_then(|v| v["addr"].as_str()) {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(addr.to_owned());
                    }
                }
                let mut lines = lines.lock().expect("log lock");
                if lines.len() == 50 {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        let mut server = ServerProcess {
            child,
            base: String::new(),
            port: 0,
            log,
        };
        let addr = match tokio::time::timeout(Duration::from_secs(60), addr_rx).await {
            Ok(Ok(addr)) => addr,
            other => {
                let status = server.child.try_wait();
                panic!(
                    "the server did not log its address ({other:?}; status {status:?}):\n{}",
                    server.log_text()
                )
            }
        };
        server.port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {addr:?}"));
        server.base = format!("http://{addr}");
        let http = support::http_client();
        let mut healthy = false;
        for _ in 0..200 {
            if let Ok(res) = http.get(format!("{}/health", server.base)).send().await {
                if res.status() == 200 {
                    healthy = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            healthy,
            "/health did not answer within 2 s:\n{}",
            server.log_text()
        );
        server
    }

    fn log_text(&self) -> String {
        let lines = self.log.lock().expect("log lock");
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Sends SIGKILL and checks the process died of it (not of something else before).
    fn kill(mut self) {
        self.child.kill().expect("send SIGKILL");
        let status = self.child.wait().expect("wait for the server");
        assert_eq!(
            status.signal(),
            Some(9),
            "the server ended before the kill ({status:?}):\n{}",
            self.log_text()
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One round's request and what it must leave behind.
struct Batch {
    /// The request body, built once and sent as it is (first push and retry).
    body: bytes::Bytes,
    /// The version every entity of the batch is written at.
    version: String,
    /// Every entity id of the batch.
    entity_ids: Vec<String>,
    /// Every relationship id of the batch.
    relationship_ids: HashSet<String>,
}

/// The start of a push body from the pushing device (its `changes` follow).
const BODY_HEAD: &str = r#"{"protocol_version":"inbetweenies-v2","device_id":"crash-pusher","user_id":"crasher","sync_type":"delta","vector_clock":{"clocks":{}},"changes":["#;

/// Appends one change to a body being built: an entity version with at most one
/// parent, and at most one relationship `(id, to)` from it to `to` at the same version.
/// Ids and versions are plain ASCII, so they need no escaping.
fn push_change(
    out: &mut String,
    id: &str,
    version: &str,
    parent: Option<&str>,
    round: usize,
    relationship: Option<(&str, &str)>,
) {
    use std::fmt::Write as _;
    if !out.ends_with('[') {
        out.push(',');
    }
    let (change_type, parents) = match parent {
        Some(p) => ("update", format!(r#"["{p}"]"#)),
        None => ("create", "[]".to_owned()),
    };
    let _ = write!(
        out,
        r#"{{"change_type":"{change_type}","entity":{{"id":"{id}","version":"{version}","entity_type":"note","name":"{id} round {round}","content":{{"round":{round},"text":"a note that is rewritten every round"}},"source_type":"manual","user_id":"{USER}","parent_versions":{parents}}},"relationships":["#
    );
    if let Some((rel, to)) = relationship {
        let _ = write!(
            out,
            r#"{{"id":"{rel}","from_entity_id":"{id}","from_entity_version":"{version}","to_entity_id":"{to}","to_entity_version":"{version}","relationship_type":"documented_by","properties":{{"round":{round}}}}}"#
        );
    }
    out.push_str("]}");
}

/// Batch `round`: 4,000 fast-forwards of ids in `model` (a window that moves each
/// round), 1,000 new entities, and one relationship from each new entity to an
/// updated one, at the versions of this batch. Round 0 creates the first 5,000.
fn make_batch(round: usize, model: &BTreeMap<String, String>) -> Batch {
    let version = Version::now(USER).into_string();
    let mut out = String::with_capacity(BATCH * 600);
    out.push_str(BODY_HEAD);
    let mut entity_ids = Vec::with_capacity(BATCH);
    let mut relationship_ids = HashSet::new();
    if round == 0 {
        for i in 0..BATCH {
            let id = format!("base-{i:05}");
            push_change(&mut out, &id, &version, None, round, None);
            entity_ids.push(id);
        }
    } else {
        let base: Vec<&String> = model.keys().filter(|k| k.starts_with("base-")).collect();
        let start = (round * CREATES) % base.len();
        for i in 0..BATCH - CREATES {
            let id = base[(start + i) % base.len()];
            push_change(&mut out, id, &version, Some(&model[id]), round, None);
            entity_ids.push(id.clone());
        }
        for j in 0..CREATES {
            let id = format!("r{round:04}-{j:04}");
            let rel = format!("rel-{round:04}-{j:04}");
            let to = entity_ids[j].clone();
            push_change(&mut out, &id, &version, None, round, Some((&rel, &to)));
            entity_ids.push(id);
            relationship_ids.insert(rel);
        }
    }
    out.push_str("]}");
    Batch {
        body: out.into(),
        version,
        entity_ids,
        relationship_ids,
    }
}

/// The state after `batch` applied to `model`.
fn applied(model: &BTreeMap<String, String>, batch: &Batch) -> BTreeMap<String, String> {
    let mut after = model.clone();
    for id in &batch.entity_ids {
        after.insert(id.clone(), batch.version.clone());
    }
    after
}

fn digest_of(model: &BTreeMap<String, String>) -> String {
    state_digest(model.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// POSTs a sync body; the status and JSON answer, or the transport error as text.
async fn post_sync(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    body: bytes::Bytes,
) -> Result<(u16, Value), String> {
    let res = http
        .post(format!("{base}/api/v1/sync/"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = res.status().as_u16();
    let bytes = res.bytes().await.map_err(|e| format!("{e:?}"))?;
    let value = serde_json::from_slice(&bytes).map_err(|e| format!("status {status}: {e}"))?;
    Ok((status, value))
}

async fn post_value(http: &reqwest::Client, base: &str, token: &str, body: &Value) -> Value {
    let bytes = serde_json::to_vec(body).expect("json").into();
    let (status, answer) = post_sync(http, base, token, bytes)
        .await
        .expect("sync request");
    assert_eq!(status, 200, "{answer}");
    answer
}

/// A watermark: `server_time` of a pull that matches no row.
async fn watermark(http: &reqwest::Client, base: &str, token: &str) -> String {
    let answer = post_value(
        http,
        base,
        token,
        &json!({
            "protocol_version": "inbetweenies-v2", "device_id": "crash-probe", "user_id": USER,
            "sync_type": "entities", "changes": [], "filters": {"entity_types": ["schedule"]},
            "vector_clock": {"clocks": {}},
        }),
    )
    .await;
    answer["server_time"]
        .as_str()
        .expect("server_time")
        .to_owned()
}

/// What the change feed holds after `since`, walked page by page.
struct Feed {
    entities: HashMap<String, String>,
    relationships: HashSet<String>,
    digest: String,
    pages: usize,
}

async fn feed_since(http: &reqwest::Client, base: &str, token: &str, since: &str) -> Feed {
    let mut feed = Feed {
        entities: HashMap::new(),
        relationships: HashSet::new(),
        digest: String::new(),
        pages: 0,
    };
    let mut cursor: Option<u64> = None;
    loop {
        assert!(feed.pages < 100, "the feed does not end");
        let answer = post_value(
            http,
            base,
            token,
            &json!({
                "protocol_version": "inbetweenies-v2", "device_id": "crash-feed", "user_id": USER,
                "sync_type": "delta", "changes": [], "filters": {"since": since},
                "cursor": cursor.map(|c| c.to_string()), "vector_clock": {"clocks": {}},
                "capabilities": ["relationship_rows"],
            }),
        )
        .await;
        feed.pages += 1;
        for change in answer["changes"].as_array().expect("changes") {
            if let Some(e) = change["entity"].as_object() {
                let id = e["id"].as_str().expect("id").to_owned();
                let version = e["version"].as_str().expect("version").to_owned();
                assert!(
                    feed.entities.insert(id.clone(), version).is_none(),
                    "entity {id} twice in the feed"
                );
            }
            for r in change["relationships"].as_array().into_iter().flatten() {
                let id = r["id"].as_str().expect("relationship id").to_owned();
                assert!(
                    feed.relationships.insert(id.clone()),
                    "relationship {id} twice in the feed"
                );
            }
        }
        feed.digest = answer["state_digest"]
            .as_str()
            .expect("state_digest")
            .to_owned();
        match answer["cursor"].as_str() {
            None => return feed,
            Some(c) => {
                let next: u64 = c.parse().expect("numeric cursor");
                assert!(
                    cursor.is_none_or(|prev| next > prev),
                    "cursor went from {cursor:?} to {next}"
                );
                cursor = Some(next);
            }
        }
    }
}

/// What the store of a stopped server holds.
struct Stored {
    /// The latest version of every id.
    latest: BTreeMap<String, String>,
    /// Entity versions stored, latest or not.
    versions: u64,
    /// Relationships stored.
    relationships: u64,
    /// The store's state digest.
    digest: String,
}

/// Opens the store of a stopped server directly and reads it.
/// On PostgreSQL, a killed server's session lives on until the database notices the
/// socket closed, and may still commit what it had sent (a COMMIT already in the socket
/// buffer). Waits (bounded) until no other session of the database is inside a
/// transaction, so what the store holds is final.
async fn wait_for_killed_sessions(url: &str) {
    use sqlx::Connection as _;
    if !url.starts_with("postgres") {
        return;
    }
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect to inspect sessions");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL",
        )
        .fetch_one(&mut conn)
        .await
        .expect("pg_stat_activity");
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} session(s) of the killed server still inside a transaction after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = conn.close().await;
}

async fn inspect_store(url: &str) -> Stored {
    wait_for_killed_sessions(url).await;
    let store: Arc<dyn ServerStore> =
        goodies_store::open_server_store(url, StoreOptions::default())
            .await
            .expect("open the store of the killed server");
    let latest = store
        .latest_versions()
        .await
        .expect("latest versions")
        .into_iter()
        .map(|(id, v)| (id.as_str().to_owned(), v.as_str().to_owned()))
        .collect();
    let stats = store.stats().await.expect("stats");
    Stored {
        latest,
        versions: stats.entity_versions,
        relationships: stats.relationships,
        digest: store.state_digest().await.expect("digest"),
    }
}

/// A client of the real client library.
async fn client_at(path: &std::path::Path, base: &str, token: &str) -> BlowingOffClient {
    let client = BlowingOffClient::builder(path)
        .config(ClientConfig::default().with_retry(RetryPolicy::immediate(3)))
        .open()
        .await
        .expect("open client");
    client.connect(base, Some(token)).await.expect("connect");
    client
}

async fn assert_converges(client: &BlowingOffClient, expected: &str, what: &str) {
    let result = client.sync().await.expect("sync runs");
    assert!(
        result.errors.is_empty(),
        "{what}: sync errors {:?}",
        result.errors
    );
    assert!(
        result.digest_mismatch.is_none(),
        "{what}: {:?}",
        result.digest_mismatch
    );
    let check = result.digest.as_ref().expect("a digest check after a sync");
    assert_eq!(check.server, expected, "{what}: the server's digest");
    assert_eq!(check.local, expected, "{what}: the client's digest");
}

/// The ids an answer lists under `key`.
fn id_set<'a>(answer: &'a Value, key: &str) -> HashSet<&'a str> {
    answer[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in the answer"))
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

async fn server_killed_mid_push(backend: Backend) {
    let pg;
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("server.db").display()),
        Backend::Postgres => {
            if !cfg!(feature = "postgres") {
                println!("skipping: the postgres feature is off");
                return;
            }
            pg = match FreshPostgres::create().await {
                Some(pg) => pg,
                None => return,
            };
            pg.url.clone()
        }
    };
    let (seed, kills) = crash_settings(&format!("server_killed_mid_push {backend:?}"));
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let mut server = ServerProcess::start(&url, "127.0.0.1:0").await;
    let listen = format!("127.0.0.1:{}", server.port);
    let base = server.base.clone();
    let http = support::http_client();
    let res = http
        .post(format!("{base}/api/v1/auth/admin/login"))
        .json(&json!({"password": PASSWORD}))
        .send()
        .await
        .expect("login");
    let token = res.json::<Value>().await.expect("login body")["access_token"]
        .as_str()
        .expect("token")
        .to_owned();

    // Round 0, never killed: the entities later rounds update, and the push's duration.
    let first = make_batch(0, &BTreeMap::new());
    let t0 = Instant::now();
    let (status, answer) = post_sync(&http, &base, &token, first.body.clone())
        .await
        .expect("first push");
    let mut push_time = t0.elapsed();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(id_set(&answer, "applied").len(), BATCH);
    let mut model = applied(&BTreeMap::new(), &first);
    let (mut versions, mut relationships) = (BATCH as u64, 0u64);
    // A client that pulls now and next after every kill: its watermark must stay good.
    let observer = client_at(&dir.path().join("observer.db"), &base, &token).await;
    assert_converges(&observer, &digest_of(&model), "round 0").await;

    let mut outcomes = (0usize, 0usize, 0usize); // (nothing, everything, acknowledged before the kill)
    let mut delays = Vec::with_capacity(kills);
    for round in 1..=kills {
        let batch = make_batch(round, &model);
        let after = applied(&model, &batch);
        let since = watermark(&http, &base, &token).await;

        // Push, and kill the server at a random point of it.
        let window = push_time.mul_f64(1.25).as_micros() as u64;
        let delay = Duration::from_micros(rng.gen_range(0..=window));
        delays.push(delay);
        let pusher = support::http_client();
        let start = tokio::time::Instant::now();
        let request = tokio::spawn({
            let (base, token, body) = (base.clone(), token.clone(), batch.body.clone());
            async move { post_sync(&pusher, &base, &token, body).await }
        });
        tokio::time::sleep_until(start + delay).await;
        server.kill();
        let answer = tokio::time::timeout(Duration::from_secs(30), request)
            .await
            .expect("the request ends once the server is gone")
            .expect("request task");
        let acknowledged = matches!(&answer, Ok((200, _)));
        let context = format!(
            "round {round}, kill {} ms after the request started (seed {seed}); the client saw {}",
            delay.as_millis(),
            match &answer {
                Ok((status, _)) => format!("status {status}"),
                Err(e) => format!("no answer ({})", e.chars().take(120).collect::<String>()),
            }
        );

        // The process is gone: its store holds the state before the batch or after it.
        let stored = inspect_store(&url).await;
        let committed = stored.latest == after;
        if !committed {
            let at_batch = batch
                .entity_ids
                .iter()
                .filter(|id| stored.latest.get(*id) == Some(&batch.version))
                .count();
            assert!(
                stored.latest == model,
                "{context}: a partial batch: {at_batch} of {BATCH} entities at the batch's version, {} ids stored (before: {}, after: {})",
                stored.latest.len(),
                model.len(),
                after.len()
            );
        }
        assert!(
            committed || !acknowledged,
            "{context}: the answer was 200 but the batch is not stored"
        );
        let (batch_versions, batch_relationships) = match committed {
            true => (BATCH as u64, CREATES as u64),
            false => (0, 0),
        };
        assert_eq!(
            (stored.versions, stored.relationships),
            (versions + batch_versions, relationships + batch_relationships),
            "{context}: entity versions and relationships stored (the batch's entities committed: {committed})"
        );
        assert_eq!(
            stored.digest,
            digest_of(&stored.latest),
            "{context}: the stored digest agrees with the stored rows"
        );
        match (committed, acknowledged) {
            (false, _) => outcomes.0 += 1,
            (true, false) => outcomes.1 += 1,
            (true, true) => outcomes.2 += 1,
        }

        // Restarted on the same database: the change feed since before the push holds all of it or none.
        server = ServerProcess::start(&url, &listen).await;
        let feed = feed_since(&http, &base, &token, &since).await;
        let (feed_entities, feed_relationships) = match committed {
            true => (
                batch
                    .entity_ids
                    .iter()
                    .map(|id| (id.clone(), batch.version.clone()))
                    .collect(),
                batch.relationship_ids.clone(),
            ),
            false => (HashMap::new(), HashSet::new()),
        };
        assert!(
            feed.entities == feed_entities,
            "{context}: {} entity rows in the feed since the push, {} expected",
            feed.entities.len(),
            feed_entities.len()
        );
        assert!(
            feed.relationships == feed_relationships,
            "{context}: {} relationship rows in the feed since the push, {} expected",
            feed.relationships.len(),
            feed_relationships.len()
        );
        assert_eq!(
            feed.digest, stored.digest,
            "{context}: the restarted server's digest"
        );

        // The pushing client re-sends the same request: every id is acknowledged, no conflict.
        let t = Instant::now();
        let (status, answer) = post_sync(&http, &base, &token, batch.body.clone())
            .await
            .unwrap_or_else(|e| panic!("{context}: the retry failed: {e}"));
        if !committed {
            push_time = t.elapsed();
        }
        assert_eq!(status, 200, "{context}: the retry answered {answer}");
        let wanted: HashSet<&str> = batch.entity_ids.iter().map(String::as_str).collect();
        let acked = id_set(&answer, "applied");
        assert!(
            acked == wanted,
            "{context}: the retry acknowledged {} of {BATCH} ids",
            acked.intersection(&wanted).count()
        );
        let wanted: HashSet<&str> = batch.relationship_ids.iter().map(String::as_str).collect();
        let acked = id_set(&answer, "applied_relationships");
        assert!(
            acked == wanted,
            "{context}: the retry acknowledged {} of {CREATES} relationships",
            acked.intersection(&wanted).count()
        );
        assert_eq!(
            answer["conflicts"].as_array().map(Vec::len),
            Some(0),
            "{context}: the retry reported conflicts"
        );
        model = after;
        versions += BATCH as u64;
        relationships += CREATES as u64;
        assert_eq!(
            answer["state_digest"].as_str(),
            Some(digest_of(&model).as_str()),
            "{context}: the server's digest after the retry"
        );
    }

    // The client that pulled before the kills catches up from its watermark, and a
    // fresh client's full pull reaches the same digest.
    let expected = digest_of(&model);
    assert_converges(
        &observer,
        &expected,
        "the client that synced before the kills",
    )
    .await;
    let fresh = client_at(&dir.path().join("fresh.db"), &base, &token).await;
    assert_converges(&fresh, &expected, "a fresh client").await;
    for client in [&observer, &fresh] {
        let stats = client.stats().await.expect("stats");
        assert_eq!(stats.entities, model.len() as u64, "{stats:?}");
        assert_eq!(stats.relationships, relationships, "{stats:?}");
    }
    server.kill();
    delays.sort();
    println!(
        "server_killed_mid_push {backend:?}: {kills} kills in {:.1} s; batch absent after {} kills, present after {} (unacknowledged) + {} (acknowledged); kill delays {}..{} ms, last full push {} ms",
        started.elapsed().as_secs_f64(),
        outcomes.0,
        outcomes.1,
        outcomes.2,
        delays.first().map_or(0, Duration::as_millis),
        delays.last().map_or(0, Duration::as_millis),
        push_time.as_millis()
    );
}

on_both_backends!(server_killed_mid_push);
