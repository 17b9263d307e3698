//! Crash safety of the client: the real `blowing-off` process is killed with SIGKILL in the middle of a push and in the middle of a pull; no local edit made before the kill is lost, and the next sync converges on the server's digest.
//!
//! Two clients of one real server (on 127.0.0.1:0, SQLite). Every round, client B
//! edits a few entities offline (updates, deletes, creates — some on entities A
//! is about to change, so B's pushes meet conflicts), then client A makes about
//! 1,500 edits (creates, updates, deletes, relationships: two push batches) and
//! runs `blowing-off sync`, killed after a random delay; then B's `sync` (a small
//! push, then a pull of all of A's changes over many pages) is killed the same
//! way. After each kill, with the process gone: the database opens, and every
//! edit the client made is stored on the server or still in its outbox. Then a
//! `sync` run to its end exits 0 with nothing pending and the client's digest
//! equal to the server's, and every edit of the round is stored on the server
//! (latest or in history; a delete may instead meet an id the server already
//! shows deleted, which the server acknowledges without storing it).
//!
//! Kill points come from a seeded RNG, spread over the estimated duration of the
//! whole sync with a density rising towards its end, so that many land in the
//! pull; the test prints where they landed (before any acknowledgement, after the
//! server stored a batch whose answer was lost, between push batches, between
//! pull pages, after the last page). The seed is printed;
//! `GOODIES_CRASH_SEED=<seed>` replays a run's kill delays, `GOODIES_CRASH_KILLS=<n>`
//! sets the kills per client (10 by default; a sync that finishes before its kill
//! does not count, another round is run):
//! `GOODIES_CRASH_KILLS=100 cargo nextest run --workspace --all-features -E 'binary(crash)'`.

#![cfg(unix)]

use std::collections::HashSet;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use funkygibbon_mock::{serve_with_handle, ServerConfig};
use goodies_client::{
    json_object, BlowingOffClient, Entity, EntityId, EntityQuery, EntityType, RelationshipId,
    RelationshipType, Version,
};
use goodies_store::ServerStore;
use rand::{rngs::StdRng, seq::SliceRandom as _, Rng as _, SeedableRng as _};
use serde_json::{json, Value};

/// Rows per page of the server's change feed (a pull of one round is many pages).
const PAGE_SIZE: usize = 100;
/// Client A's edits per round: creates, updates, deletes, relationships.
const A_EDITS: (usize, usize, usize, usize) = (700, 500, 100, 200);
/// Client B's offline edits per round: updates (half on entities A changes too), deletes, creates.
const B_EDITS: (usize, usize, usize) = (20, 5, 10);

/// Seed and number of kills for this run, printed so that a failure can be replayed.
fn crash_settings(what: &str) -> (u64, usize) {
    let read = |name: &str| match std::env::var(name) {
        Ok(s) if !s.trim().is_empty() => Some(
            s.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={s:?} is not an unsigned integer")),
        ),
        _ => None,
    };
    let seed = read("GOODIES_CRASH_SEED").unwrap_or_else(rand::random);
    let kills = read("GOODIES_CRASH_KILLS").unwrap_or(10) as usize;
    println!("{what}: seed {seed}, {kills} kills per client (replay with GOODIES_CRASH_SEED={seed} GOODIES_CRASH_KILLS={kills})");
    (seed, kills)
}

/// One local edit: an entity version (a tombstone when `deleted`) or a relationship.
#[derive(Clone, Debug)]
enum Edit {
    Entity {
        id: EntityId,
        version: Version,
        deleted: bool,
    },
    Relationship(RelationshipId),
}

impl Edit {
    fn of(e: Entity) -> Edit {
        Edit::Entity {
            deleted: e.content.get("deleted") == Some(&Value::Bool(true)),
            id: e.id,
            version: e.version,
        }
    }
}

/// A client: its database file and every edit it ever made.
struct Client {
    name: &'static str,
    db: PathBuf,
    ledger: Vec<Edit>,
}

impl Client {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_blowing-off"));
        let mut home = self.db.as_os_str().to_owned();
        home.push(".home");
        let home = std::path::PathBuf::from(home);
        std::fs::create_dir_all(&home).expect("home");
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("XDG_DATA_HOME", home.join("data"))
            .env_remove("BLOWING_OFF_CONFIG")
            .env_remove("BLOWING_OFF_SERVER_URL")
            .env_remove("BLOWING_OFF_AUTH_TOKEN")
            .env_remove("BLOWING_OFF_CLIENT_ID")
            .current_dir(&home);
        cmd.arg("--db")
            .arg(&self.db)
            .args(args)
            .env_remove("BLOWING_OFF_DB")
            .env("BLOWING_OFF_RETRIES", "0")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs a command to its end; its JSON output.
    fn json(&self, args: &[&str], context: &str) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.command(&all).output().expect("run blowing-off");
        assert!(
            out.status.success(),
            "{context}: {} {args:?}: {:?}\n{}\n{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    /// Opens the client's database in this process (no `blowing-off` process is running).
    async fn open(&self) -> BlowingOffClient {
        BlowingOffClient::open(&self.db)
            .await
            .unwrap_or_else(|e| panic!("{}: the database does not open: {e:?}", self.name))
    }
}

/// What became of a client's edits.
struct Fate {
    /// Edits neither stored on the server nor pending in the outbox, each with what
    /// the server and the client hold for its id.
    lost: Vec<String>,
    /// Entity edits still pending that the server has stored all the same (its answer
    /// never reached the client's database).
    pending_but_stored: usize,
}

/// Checks every edit: stored on the server (latest or not), or still pending. A
/// tombstone also counts as kept when the server's latest version of its id is a
/// tombstone: the server acknowledges a delete of an entity already deleted
/// without storing it (PROTOCOL §6.2).
async fn fate(server: &dyn ServerStore, client: &BlowingOffClient, edits: &[Edit]) -> Fate {
    let pending = client
        .store()
        .pending(usize::MAX)
        .await
        .expect("pending changes");
    let pending_entities: HashSet<(&str, &str)> = pending
        .iter()
        .filter_map(|e| e.entity_key())
        .map(|(id, v)| (id.as_str(), v.as_str()))
        .collect();
    let pending_relationships: HashSet<&str> = pending
        .iter()
        .filter_map(|e| e.relationship_id())
        .map(RelationshipId::as_str)
        .collect();
    let mut lost = Vec::new();
    let mut pending_but_stored = 0;
    for edit in edits {
        match edit {
            Edit::Entity {
                id,
                version,
                deleted,
            } => {
                let pending = pending_entities.contains(&(id.as_str(), version.as_str()));
                let stored = server
                    .entity_version(id, version)
                    .await
                    .expect("server lookup")
                    .is_some();
                pending_but_stored += usize::from(pending && stored);
                if pending || stored {
                    continue;
                }
                let latest = server.entity(id).await.expect("server lookup");
                let latest_deleted = latest
                    .as_ref()
                    .is_some_and(|e| e.content.get("deleted") == Some(&Value::Bool(true)));
                if *deleted && latest_deleted {
                    continue;
                }
                let local = client.entity(id).await.expect("local lookup");
                lost.push(format!(
                    "{} {id:?} {version:?}: the server's latest is {:?} (deleted: {latest_deleted}), the client's {:?}",
                    if *deleted { "delete of" } else { "edit of" },
                    latest.map(|e| e.version),
                    local.map(|e| e.version),
                ));
            }
            Edit::Relationship(id) => {
                if !pending_relationships.contains(id.as_str())
                    && server
                        .relationship(id)
                        .await
                        .expect("server lookup")
                        .is_none()
                {
                    lost.push(format!("relationship {id:?}"));
                }
            }
        }
    }
    Fate {
        lost,
        pending_but_stored,
    }
}

/// Live (not deleted) entity ids of a client, in a stable order.
async fn live_ids(client: &BlowingOffClient) -> Vec<EntityId> {
    let mut ids: Vec<EntityId> = client
        .entities(&EntityQuery::default())
        .await
        .expect("entities")
        .into_iter()
        .map(|e| e.id)
        .collect();
    ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    ids
}

/// Client A's round: creates, updates, deletes and relationships on its live entities.
async fn edit_a(
    c: &BlowingOffClient,
    rng: &mut StdRng,
    round: usize,
    targets: &[EntityId],
    doomed: &[EntityId],
) -> Vec<Edit> {
    let (creates, _, _, relationships) = A_EDITS;
    let mut edits = Vec::new();
    let mut made = Vec::new();
    for i in 0..creates {
        let e = c
            .create_entity(
                EntityType::Device,
                &format!("a{round}-{i}"),
                json_object(json!({"power": "off", "round": round})),
            )
            .await
            .expect("create");
        made.push(e.id.clone());
        edits.push(Edit::of(e));
    }
    for id in targets.iter().chain(made.iter().take(50)) {
        let patch = json_object(json!({"power": "on", "by": "a", "round": round}));
        let e = c.merge_content(id, patch).await.expect("update");
        edits.push(Edit::of(e));
    }
    for id in doomed {
        let e = c.delete_entity(id).await.expect("delete");
        edits.push(Edit::of(e));
    }
    for _ in 0..relationships {
        let from = made.choose(rng).expect("a new entity");
        let to = targets.choose(rng).expect("a target");
        let r = c
            .relate(from, to, RelationshipType::ConnectsTo, Default::default())
            .await
            .expect("relate");
        edits.push(Edit::Relationship(r.id));
    }
    edits
}

/// Client B's offline round: updates and deletes of entities it holds, a few creates.
async fn edit_b(
    c: &BlowingOffClient,
    round: usize,
    updates: &[EntityId],
    deletes: &[EntityId],
) -> Vec<Edit> {
    let mut edits = Vec::new();
    for id in updates {
        let patch = json_object(json!({"power": "standby", "by": "b", "round": round}));
        let e = c.merge_content(id, patch).await.expect("update");
        edits.push(Edit::of(e));
    }
    for id in deletes {
        let e = c.delete_entity(id).await.expect("delete");
        edits.push(Edit::of(e));
    }
    for i in 0..B_EDITS.2 {
        let e = c
            .create_entity(
                EntityType::Note,
                &format!("b{round}-{i}"),
                json_object(json!({"text": "written offline"})),
            )
            .await
            .expect("create");
        edits.push(Edit::of(e));
    }
    edits
}

/// Where the kills landed, read from the client's database afterwards.
#[derive(Debug, Default)]
struct Stages {
    /// The sync ended before its kill (not counted as a kill).
    finished_first: usize,
    /// Nothing acknowledged yet (starting up, or the first request in flight).
    before_any_ack: usize,
    /// Nothing acknowledged, but the server had stored some of it: its answer was lost.
    answer_lost: usize,
    /// Some push batches acknowledged, others not.
    mid_push: usize,
    /// Everything acknowledged, the pull stopped between pages.
    mid_pull: usize,
    /// Everything acknowledged and the last page applied (the digest check or the exit left).
    after_last_page: usize,
}

/// `sync` killed after `delay`; true when the kill hit a running process.
async fn killed_sync(client: &Client, delay: Duration) -> bool {
    let started = tokio::time::Instant::now();
    let mut child = client
        .command(&["sync"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start blowing-off sync");
    tokio::time::sleep_until(started + delay).await;
    if child.try_wait().expect("poll the client").is_some() {
        return false;
    }
    child.kill().expect("send SIGKILL");
    let status = child.wait().expect("wait for the client");
    status.signal() == Some(9)
}

/// A `sync` run to its end: exit 0, nothing pending, the digest the server has.
async fn completed_sync(client: &Client, server: &dyn ServerStore, context: &str) -> Duration {
    let started = std::time::Instant::now();
    let out = client.json(&["sync"], context);
    let took = started.elapsed();
    assert_eq!(out["ok"], true, "{context}: {out}");
    assert_eq!(out["pending"], 0, "{context}: {out}");
    let server_digest = server.state_digest().await.expect("server digest");
    assert_eq!(
        out["digest"]["server"], server_digest,
        "{context}: the digest the server answered"
    );
    assert_eq!(
        out["digest"]["local"], server_digest,
        "{context}: the client's digest after the sync ({out})"
    );
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_push_and_mid_pull_loses_nothing() {
    // The server's warnings and errors go to the test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_test_writer()
        .try_init();
    let (seed, kills) = crash_settings("client_killed_mid_push_and_mid_pull_loses_nothing");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().expect("temporary directory");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let config = ServerConfig::new(format!(
        "sqlite://{}",
        dir.path().join("server.db").display()
    ))
    .with_admin_password("crash-password")
    .with_jwt_secret("crash-secret")
    .with_page_size(PAGE_SIZE);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, is_ready) = tokio::sync::oneshot::channel();
    let serving = tokio::spawn(serve_with_handle(
        listener,
        config,
        async move {
            let _ = stopped.await;
        },
        ready,
    ));
    let handle = is_ready.await.expect("server ready");
    let server: Arc<dyn ServerStore> = handle.store();
    let token = handle.admin_token();

    let mut a = Client {
        name: "A",
        db: dir.path().join("a.db"),
        ledger: Vec::new(),
    };
    let mut b = Client {
        name: "B",
        db: dir.path().join("b.db"),
        ledger: Vec::new(),
    };
    for c in [&a, &b] {
        c.json(
            &["connect", "--server-url", &url, "--auth-token", &token],
            "connect",
        );
    }

    // Round 0, never killed: A's first entities, and how long each client's sync takes.
    let first = {
        let c = a.open().await;
        let mut edits = Vec::new();
        for i in 0..A_EDITS.0 + A_EDITS.1 {
            let e = c
                .create_entity(
                    EntityType::Device,
                    &format!("a0-{i}"),
                    json_object(json!({"power": "off"})),
                )
                .await
                .expect("create");
            edits.push(Edit::of(e));
        }
        edits
    };
    a.ledger.extend(first);
    let mut a_time = completed_sync(&a, server.as_ref(), "A, round 0").await;
    let mut b_time = completed_sync(&b, server.as_ref(), "B, round 0").await;

    let mut stages = [Stages::default(), Stages::default()];
    let mut done = [0usize; 2];
    let mut round = 0;
    while done[0] < kills || done[1] < kills {
        round += 1;
        assert!(
            round <= 3 * kills + 3,
            "too many syncs finished before their kill ({done:?} kills in {round} rounds)"
        );

        // Who edits what: A changes `targets` and deletes `doomed`; B, offline and
        // before A, changes some of A's targets too, and some of its own picks.
        let a_live = live_ids(&a.open().await).await;
        let mut pool = a_live.clone();
        pool.shuffle(&mut rng);
        let (_, updates, deletes, _) = A_EDITS;
        let targets: Vec<EntityId> = pool[..updates].to_vec();
        let doomed: Vec<EntityId> = pool[updates..updates + deletes].to_vec();
        let b_client = b.open().await;
        let b_live = live_ids(&b_client).await;
        let mut b_pool: Vec<EntityId> = b_live.clone();
        b_pool.shuffle(&mut rng);
        let shared: Vec<EntityId> = targets
            .iter()
            .filter(|id| {
                b_live
                    .binary_search_by(|x| x.as_str().cmp(id.as_str()))
                    .is_ok()
            })
            .take(B_EDITS.0 / 2)
            .cloned()
            .collect();
        let mut b_updates = shared.clone();
        b_updates.extend(
            b_pool
                .iter()
                .filter(|id| !shared.contains(id))
                .take(B_EDITS.0 - shared.len())
                .cloned(),
        );
        let b_deletes: Vec<EntityId> = b_pool
            .iter()
            .filter(|id| !b_updates.contains(id))
            .take(B_EDITS.1)
            .cloned()
            .collect();
        let b_edits = edit_b(&b_client, round, &b_updates, &b_deletes).await;
        drop(b_client);
        let a_edits = edit_a(&a.open().await, &mut rng, round, &targets, &doomed).await;

        for (i, (client, edits, time)) in [
            (&mut a, a_edits, &mut a_time),
            (&mut b, b_edits, &mut b_time),
        ]
        .into_iter()
        .enumerate()
        {
            client.ledger.extend(edits.iter().cloned());
            let pending_before = client
                .open()
                .await
                .pending_changes()
                .await
                .expect("pending");
            // A density rising over the sync: more kills land in its later part (the pull).
            let delay = time.mul_f64(rng.gen::<f64>().sqrt());
            let context = format!(
                "{}, round {round}, sync killed {} ms after it started (seed {seed})",
                client.name,
                delay.as_millis()
            );
            if done[i] >= kills {
                *time = completed_sync(client, server.as_ref(), &context).await;
                continue;
            }
            let killed = killed_sync(client, delay).await;

            // The process is gone: every edit is on the server or still pending.
            let c = client.open().await;
            let after_kill = fate(server.as_ref(), &c, &edits).await;
            assert!(
                after_kill.lost.is_empty(),
                "{context}: {} edits neither on the server nor pending:\n{}",
                after_kill.lost.len(),
                after_kill.lost.join("\n")
            );
            let pending_after = c.pending_changes().await.expect("pending");
            let cursor = c.store().sync_state().await.expect("sync state").cursor;
            drop(c);
            let stage = &mut stages[i];
            match (killed, pending_after, cursor) {
                (false, _, _) => stage.finished_first += 1,
                (true, p, _) if p == pending_before && after_kill.pending_but_stored > 0 => {
                    stage.answer_lost += 1
                }
                (true, p, _) if p == pending_before => stage.before_any_ack += 1,
                (true, p, _) if p > 0 => stage.mid_push += 1,
                (true, _, Some(_)) => stage.mid_pull += 1,
                (true, _, None) => stage.after_last_page += 1,
            }
            done[i] += usize::from(killed);

            // The next sync converges and every edit is on the server. The next kill's
            // window is this sync's whole duration, as well as it is known.
            let took = completed_sync(client, server.as_ref(), &context).await;
            *time = if killed { delay + took } else { took };
            let c = client.open().await;
            let missing = fate(server.as_ref(), &c, &edits).await.lost;
            drop(c);
            assert!(
                missing.is_empty(),
                "{context}: {} edits not on the server after the sync:\n{}",
                missing.len(),
                missing.join("\n")
            );
        }
    }

    // Both clients end on the server's state.
    for client in [&a, &b] {
        completed_sync(client, server.as_ref(), "the final sync").await;
    }
    println!(
        "client kills in {round} rounds, {:.1} s: A (mid-push) {:?}; B (mid-pull) {:?}; {} + {} edits checked",
        started.elapsed().as_secs_f64(),
        stages[0],
        stages[1],
        a.ledger.len(),
        b.ledger.len()
    );
    let _ = stop.send(());
    serving.await.expect("server task").expect("server stops");
}
