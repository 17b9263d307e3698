//! Seeded chaos for the convergence test: clients of the real library make random edits
//! against the real server through a faulty network, with skewed clocks and restarts,
//! then sync until quiet; the checks say whether they converged and whether anything
//! written was lost or came back from the dead.
//!
//! Everything random is drawn from generators seeded by the run's seed: the scenario
//! (clients, batch and page sizes, clocks, fault rates), each operation, and each
//! client's network faults (one generator per client, drawn once per request in the
//! order the client sends them). Operations run one at a time, so a seed replays the same
//! run; only the wall clock inside version strings differs between two runs.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use async_trait::async_trait;
use goodies_client::{
    BlowingOffClient, ClientConfig, EntityId, EntityQuery, EntityType, HttpRequest, HttpResponse,
    HyperTransport, JsonObject, RelationshipType, RetryPolicy, StoredEntity, SyncResult, Transport,
    TransportError, Version, SYNC_PATH,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::{Backend, TestServer, PASSWORD};

/// How many sync rounds (every client once) the end of a run may take to become quiet.
pub const QUIET_ROUNDS: usize = 8;

/// The server's clock-skew allowance (PROTOCOL §8.2): later edit times are clamped.
const SKEW_ALLOWANCE_MICROS: i64 = 5 * 60 * 1_000_000;
/// The conflict rule's tiebreak window (PROTOCOL §8.2).
const TIEBREAK_MICROS: i64 = 1_000_000;

// ----- fault switches -------------------------------------------------------------------

/// One kind of trouble a run can meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// A small random delay before a request is sent.
    Latency,
    /// Requests refused before they reach the server (connection refused, or `503`).
    FailedRequests,
    /// Answers lost after the server handled (and committed) the request.
    LostAnswers,
    /// Requests that reach the server twice (the client reads one of the answers).
    DuplicatedRequests,
    /// Clients going offline and coming back, and networks cut in the middle of a sync.
    Offline,
    /// A client's process restarting: the client dropped and its database opened again.
    Restarts,
    /// Clients whose clocks are off: 10 minutes ahead or an hour behind.
    SkewedClocks,
}

impl Fault {
    /// Every kind.
    pub const ALL: [Fault; 7] = [
        Fault::Latency,
        Fault::FailedRequests,
        Fault::LostAnswers,
        Fault::DuplicatedRequests,
        Fault::Offline,
        Fault::Restarts,
        Fault::SkewedClocks,
    ];

    /// The environment variable that switches this kind on (`1`) or off (`0`).
    pub fn env_var(self) -> &'static str {
        match self {
            Fault::Latency => "GOODIES_CHAOS_LATENCY",
            Fault::FailedRequests => "GOODIES_CHAOS_FAILED_REQUESTS",
            Fault::LostAnswers => "GOODIES_CHAOS_LOST_ANSWERS",
            Fault::DuplicatedRequests => "GOODIES_CHAOS_DUPLICATED_REQUESTS",
            Fault::Offline => "GOODIES_CHAOS_OFFLINE",
            Fault::Restarts => "GOODIES_CHAOS_RESTARTS",
            Fault::SkewedClocks => "GOODIES_CHAOS_SKEWED_CLOCKS",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of fault kinds.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Faults(u8);

impl Faults {
    /// No faults.
    pub const NONE: Faults = Faults(0);

    /// Every fault kind.
    pub fn all() -> Faults {
        Fault::ALL
            .into_iter()
            .fold(Faults::NONE, |f, k| f.with(k, true))
    }

    /// This set with one kind switched on or off.
    pub fn with(self, kind: Fault, on: bool) -> Faults {
        if on {
            Faults(self.0 | kind.bit())
        } else {
            Faults(self.0 & !kind.bit())
        }
    }

    /// Whether a kind is on.
    pub fn has(self, kind: Fault) -> bool {
        self.0 & kind.bit() != 0
    }

    /// `defaults`, with each kind's environment variable (`0` or `1`) taking precedence.
    pub fn from_env(defaults: Faults) -> anyhow::Result<Faults> {
        let mut f = defaults;
        for kind in Fault::ALL {
            match std::env::var(kind.env_var()).ok().as_deref() {
                None | Some("") => {}
                Some("1") => f = f.with(kind, true),
                Some("0") => f = f.with(kind, false),
                Some(other) => anyhow::bail!("{}={other:?}: expected 0 or 1", kind.env_var()),
            }
        }
        Ok(f)
    }

    /// The environment that selects exactly this set.
    pub fn env_line(self) -> String {
        Fault::ALL
            .iter()
            .map(|k| format!("{}={}", k.env_var(), u8::from(self.has(*k))))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Fault::ALL.iter().filter(|k| self.has(**k)))
            .finish()
    }
}

// ----- the scenario ---------------------------------------------------------------------

/// What a seed sets up before the first operation.
#[derive(Clone, Debug)]
struct Scenario {
    page_size: usize,
    ops: usize,
    clients: Vec<PeerPlan>,
    net: NetRates,
}

#[derive(Clone, Debug)]
struct PeerPlan {
    batch_size: usize,
    clock_offset_minutes: i64,
}

/// Per-request fault probabilities.
#[derive(Clone, Copy, Debug, Default)]
struct NetRates {
    max_latency_ms: u64,
    fail: f64,
    lose: f64,
    duplicate: f64,
}

impl Scenario {
    fn draw(rng: &mut StdRng, faults: Faults) -> Scenario {
        let n = rng.gen_range(2..=8usize);
        let clients = (0..n)
            .map(|_| {
                let batch_size = rng.gen_range(1..=4usize);
                let skew = rng.gen_range(0..10u32);
                let clock_offset_minutes = match (faults.has(Fault::SkewedClocks), skew) {
                    (true, 0 | 1) => 10,
                    (true, 2 | 3) => -60,
                    _ => 0,
                };
                PeerPlan {
                    batch_size,
                    clock_offset_minutes,
                }
            })
            .collect();
        let mut rate = |on: bool, max: f64| {
            let r = rng.gen_range(0.0..max);
            if on {
                r
            } else {
                0.0
            }
        };
        let fail = rate(faults.has(Fault::FailedRequests), 0.2);
        let lose = rate(faults.has(Fault::LostAnswers), 0.2);
        let duplicate = rate(faults.has(Fault::DuplicatedRequests), 0.15);
        let latency = rng.gen_range(0..=3u64);
        Scenario {
            page_size: rng.gen_range(2..=6),
            ops: rng.gen_range(40..=100),
            clients,
            net: NetRates {
                max_latency_ms: if faults.has(Fault::Latency) {
                    latency
                } else {
                    0
                },
                fail,
                lose,
                duplicate,
            },
        }
    }
}

// ----- the network ----------------------------------------------------------------------

/// Faults injected by one client's network, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Sync requests the client sent.
    pub requests: u64,
    /// Refused before reaching the server.
    pub failed: u64,
    /// Handled by the server, answer lost.
    pub lost: u64,
    /// Sent to the server twice.
    pub duplicated: u64,
    /// Refused because the client was offline.
    pub offline: u64,
}

impl FaultStats {
    fn add(&mut self, o: &FaultStats) {
        self.requests += o.requests;
        self.failed += o.failed;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.offline += o.offline;
    }
}

#[derive(Debug)]
struct NetState {
    rng: StdRng,
    rates: NetRates,
    offline: bool,
    /// Requests still let through before the network goes away.
    cut_after: Option<u32>,
    stats: FaultStats,
}

/// What happens to one request.
enum Fate {
    Refused {
        offline: bool,
        unavailable: bool,
    },
    Deliver {
        latency_ms: u64,
        lose: bool,
        duplicate: Option<bool>,
    },
}

/// A client's network: forwards sync requests to the real server through
/// [`HyperTransport`], with faults drawn from the client's own seeded generator.
#[derive(Debug)]
pub struct ChaosNet {
    inner: HyperTransport,
    state: Mutex<NetState>,
}

impl ChaosNet {
    fn new(seed: u64, rates: NetRates) -> ChaosNet {
        ChaosNet {
            inner: HyperTransport::new(),
            state: Mutex::new(NetState {
                rng: StdRng::seed_from_u64(seed),
                rates,
                offline: false,
                cut_after: None,
                stats: FaultStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_offline(&self, offline: bool) {
        let mut s = self.lock();
        s.offline = offline;
        s.cut_after = None;
    }

    fn is_offline(&self) -> bool {
        self.lock().offline
    }

    /// The network goes away after `n` more sync requests.
    fn cut_after(&self, n: u32) {
        self.lock().cut_after = Some(n);
    }

    /// Online, and no more faults.
    fn heal(&self) {
        let mut s = self.lock();
        s.offline = false;
        s.cut_after = None;
        s.rates = NetRates::default();
    }

    fn stats(&self) -> FaultStats {
        self.lock().stats
    }

    fn fate(&self) -> Fate {
        let mut guard = self.lock();
        let s = &mut *guard;
        // The same draws for every request, whatever the state, so one fault's decisions
        // never shift another's.
        let latency = s.rng.gen_range(0..=s.rates.max_latency_ms);
        let fail = s.rng.gen::<f64>();
        let lose = s.rng.gen::<f64>();
        let dup = s.rng.gen::<f64>();
        let coin = s.rng.gen::<bool>();
        s.stats.requests += 1;
        if let Some(n) = s.cut_after {
            if n == 0 {
                s.cut_after = None;
                s.offline = true;
            } else {
                s.cut_after = Some(n - 1);
            }
        }
        if s.offline {
            s.stats.offline += 1;
            return Fate::Refused {
                offline: true,
                unavailable: false,
            };
        }
        if fail < s.rates.fail {
            s.stats.failed += 1;
            return Fate::Refused {
                offline: false,
                unavailable: coin,
            };
        }
        let lose = lose < s.rates.lose;
        let duplicate = (dup < s.rates.duplicate).then_some(coin);
        s.stats.lost += u64::from(lose);
        s.stats.duplicated += u64::from(duplicate.is_some());
        Fate::Deliver {
            latency_ms: latency,
            lose,
            duplicate,
        }
    }
}

#[async_trait]
impl Transport for ChaosNet {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, TransportError> {
        if !request.url.ends_with(SYNC_PATH) {
            return self.inner.send(request).await;
        }
        match self.fate() {
            Fate::Refused { offline: true, .. } => Err(TransportError::http("offline (chaos)")),
            Fate::Refused {
                unavailable: true, ..
            } => Ok(HttpResponse {
                status: 503,
                headers: vec![],
                body: br#"{"detail":"busy (chaos)"}"#.to_vec(),
            }),
            Fate::Refused { .. } => Err(TransportError::http("connection refused (chaos)")),
            Fate::Deliver {
                latency_ms,
                lose,
                duplicate,
            } => {
                if latency_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(latency_ms)).await;
                }
                let resp = match duplicate {
                    None => self.inner.send(request).await?,
                    Some(answer_first) => {
                        let first = self.inner.send(request.clone()).await;
                        let second = self.inner.send(request).await;
                        if answer_first {
                            first?
                        } else {
                            second?
                        }
                    }
                };
                if lose {
                    return Err(TransportError::http("answer lost after commit (chaos)"));
                }
                Ok(resp)
            }
        }
    }
}

// ----- the run --------------------------------------------------------------------------

/// One client of the run.
struct Peer {
    path: PathBuf,
    config: ClientConfig,
    net: Arc<ChaosNet>,
    client: Option<BlowingOffClient>,
}

impl Peer {
    fn client(&self) -> anyhow::Result<&BlowingOffClient> {
        self.client.as_ref().context("the client is not open")
    }

    async fn open(&mut self) -> anyhow::Result<()> {
        let c = BlowingOffClient::builder(&self.path)
            .config(self.config.clone())
            .transport(self.net.clone())
            .open()
            .await
            .with_context(|| format!("open {}", self.path.display()))?;
        self.client = Some(c);
        Ok(())
    }
}

/// One write a client made, as its write call returned it.
#[derive(Clone, Debug)]
enum Written {
    Entity {
        id: EntityId,
        version: Version,
        tombstone: bool,
    },
    Relationship {
        id: goodies_client::RelationshipId,
    },
}

#[derive(Clone, Debug)]
struct LedgerEntry {
    op: usize,
    client: usize,
    write: Written,
}

/// What a seed's run did.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The seed.
    pub seed: u64,
    /// Clients in the run.
    pub clients: usize,
    /// Operations made.
    pub ops: usize,
    /// Writes (entity versions and relationships) checked against the server.
    pub writes_checked: usize,
    /// Syncs made (the quiet rounds included).
    pub syncs: usize,
    /// Rounds the end needed to become quiet.
    pub quiet_rounds: usize,
    /// Faults injected.
    pub faults: FaultStats,
    /// Syncs that repaired their client's mirror.
    pub repairs: usize,
    /// Conflicts the server decided and reported.
    pub conflicts: u64,
    /// Ids live again after a delete (each checked to be justified by a newer edit).
    pub revived: usize,
    /// The scenario and every operation, in order.
    pub log: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// A seed whose run broke a guarantee, with what it takes to replay it.
#[derive(Clone, Debug)]
pub struct SeedFailure {
    /// The seed.
    pub seed: u64,
    /// The server's store.
    pub backend: Backend,
    /// The fault kinds that were on.
    pub faults: Faults,
    /// What went wrong.
    pub problems: Vec<String>,
    /// The scenario and every operation, in order.
    pub log: Vec<String>,
}

impl SeedFailure {
    /// The command that runs this seed again.
    pub fn replay(&self) -> String {
        format!(
            "GOODIES_CHAOS_SEED={} {} cargo nextest run --workspace --all-features -E 'binary(convergence) & test(=seeds_on_{})'",
            self.seed,
            self.faults.env_line(),
            self.backend.name()
        )
    }
}

impl fmt::Display for SeedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "seed {} on {} failed ({} problem(s)); replay with:",
            self.seed,
            self.backend.name(),
            self.problems.len()
        )?;
        writeln!(f, "  {}", self.replay())?;
        for p in &self.problems {
            writeln!(f, "  problem: {p}")?;
        }
        writeln!(f, "  operation log:")?;
        for l in &self.log {
            writeln!(f, "    {l}")?;
        }
        Ok(())
    }
}

/// The run's state: the server, the clients, the ledger and the log.
struct World<'a> {
    server: &'a TestServer,
    peers: Vec<Peer>,
    /// Entity ids in creation order: an id's alias is its index (`e12`).
    ids: Vec<EntityId>,
    alias: HashMap<EntityId, usize>,
    ledger: Vec<LedgerEntry>,
    log: Vec<String>,
    syncs: usize,
    /// Syncs that repaired the mirror (a full pull after a digest mismatch or an
    /// `INVALID_SYNC_STATE`).
    repairs: usize,
    /// Guarantees broken during the run (checked again at the end).
    problems: Vec<String>,
    /// Conflicts the server reported to the clients.
    conflicts: u64,
    /// The client of the last operation.
    acted: usize,
}

impl World<'_> {
    fn name(&self, id: &EntityId) -> String {
        match self.alias.get(id) {
            Some(n) => format!("e{n}"),
            None => format!("?{id}"),
        }
    }

    /// A version, shortened for the log: its time of day and its user.
    fn short(v: &Version) -> String {
        let s = v.as_str();
        match (s.get(11..26), s.rsplit('-').next()) {
            (Some(t), Some(u)) => format!("{t}/{u}"),
            _ => s.to_owned(),
        }
    }

    /// The live entities a client holds, by alias.
    async fn live(&self, client: usize) -> anyhow::Result<Vec<(usize, EntityId)>> {
        let mut v: Vec<(usize, EntityId)> = self.peers[client]
            .client()?
            .entities(&EntityQuery::default())
            .await?
            .into_iter()
            .map(|e| {
                let n = self.alias.get(&e.id).copied().unwrap_or(usize::MAX);
                (n, e.id)
            })
            .collect();
        v.sort();
        Ok(v)
    }

    fn record(&mut self, op: usize, client: usize, write: Written) {
        self.ledger.push(LedgerEntry { op, client, write });
    }

    fn entity_written(&mut self, op: usize, client: usize, e: &goodies_client::Entity) -> String {
        self.record(
            op,
            client,
            Written::Entity {
                id: e.id.clone(),
                version: e.version.clone(),
                tombstone: e.is_deleted(),
            },
        );
        Self::short(&e.version)
    }

    fn describe_sync(r: &SyncResult) -> String {
        let mut s = format!(
            "req {} retries {} pushed {} acked {} pulled {}+{} deferred {} conflicts {} pending {}",
            r.requests,
            r.retries,
            r.pushed,
            r.acknowledged,
            r.pulled_entities,
            r.pulled_relationships,
            r.deferred,
            r.conflicts_resolved,
            r.pending
        );
        if !r.errors.is_empty() {
            let errs: Vec<String> = r
                .errors
                .iter()
                .map(|e| goodies_client::error_chain(e))
                .collect();
            s.push_str(&format!(" errors {errs:?}"));
        }
        if let Some(repair) = &r.repair {
            s.push_str(&format!(
                " REPAIRED ({:?}: pulled {}, requeued {}, forgotten {}, converged {})",
                repair.reason,
                repair.pulled_entities,
                repair.requeued,
                repair.forgotten,
                repair.converged
            ));
        }
        if !r.quarantined.is_empty() {
            s.push_str(&format!(" QUARANTINED {:?}", r.quarantined));
        }
        match (&r.digest, &r.digest_mismatch) {
            (_, Some(_)) => s.push_str(" DIGEST MISMATCH"),
            (Some(_), None) => s.push_str(" digest ok"),
            (None, None) => {}
        }
        s
    }

    /// One sync of one client. A sync that compared digests must leave them equal:
    /// operations run one at a time, so nothing changed on the server since its answer,
    /// and a mismatch is repaired before the sync returns.
    async fn sync(&mut self, at: &str, client: usize) -> anyhow::Result<SyncResult> {
        self.syncs += 1;
        let r = self.peers[client].client()?.sync().await?;
        self.repairs += usize::from(r.repair.is_some());
        self.conflicts += r.conflicts_resolved;
        if let Some(m) = &r.digest_mismatch {
            self.problems.push(format!(
                "{at} c{client}: the sync left a digest mismatch standing (server {}, local {})",
                m.server, m.local
            ));
        }
        Ok(r)
    }

    /// Every stored entity row of one client, an id's rows together, for a failure's log.
    async fn mirror_rows(&self, client: usize) -> anyhow::Result<Vec<String>> {
        let c = self.peers[client].client()?;
        let mut ids: Vec<EntityId> = c
            .store()
            .latest_versions()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            for s in c.history(&id).await? {
                out.push(format!(
                    "{} seq {} {}{}{}{}",
                    self.name(&id),
                    s.seq,
                    Self::short(&s.entity.version),
                    if s.latest { " LATEST" } else { "" },
                    if s.became_latest { "" } else { " (aside)" },
                    if s.entity.is_deleted() {
                        " deleted"
                    } else {
                        ""
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Checks what a mirror must hold after any operation (run on the client that acted,
    /// the only one an operation changes): one latest row per id, and its listing of live
    /// entities is exactly the ids whose latest row is live.
    async fn mirror_problem(&self, k: usize) -> anyhow::Result<Option<String>> {
        let c = self.peers[k].client()?;
        let latest = c.store().latest_versions().await?;
        let mut by_id: HashMap<&EntityId, usize> = HashMap::new();
        for (id, _) in &latest {
            *by_id.entry(id).or_default() += 1;
        }
        if let Some((id, n)) = by_id.iter().find(|(_, n)| **n > 1) {
            return Ok(Some(format!(
                "c{k} holds {n} latest rows of {}: {:?}",
                self.name(id),
                self.mirror_rows(k).await?
            )));
        }
        let listed: BTreeSet<EntityId> = c
            .entities(&EntityQuery::default())
            .await?
            .into_iter()
            .map(|e| e.id)
            .collect();
        let mut live = BTreeSet::new();
        for (id, _) in &latest {
            if c.entity(id).await?.is_some_and(|e| !e.is_deleted()) {
                live.insert(id.clone());
            }
        }
        if listed != live {
            return Ok(Some(format!(
                "c{k} lists {:?} as live, its latest rows say {:?}; its rows: {:?}",
                listed.iter().map(|i| self.name(i)).collect::<Vec<_>>(),
                live.iter().map(|i| self.name(i)).collect::<Vec<_>>(),
                self.mirror_rows(k).await?
            )));
        }
        Ok(None)
    }

    /// One random operation by one random client.
    async fn step(&mut self, op: usize, rng: &mut StdRng, faults: Faults) -> anyhow::Result<()> {
        let k = rng.gen_range(0..self.peers.len());
        self.acted = k;
        let roll = rng.gen_range(0..100u32);
        let (a, b) = (rng.gen::<u32>() as usize, rng.gen::<u32>() as usize);
        let key = format!("k{}", rng.gen_range(0..4));
        let value = rng.gen_range(0..1000);
        let live = self.live(k).await?;
        let pick = |n: usize| live.get(n % live.len().max(1)).cloned();
        let c = self.peers[k].client()?.clone();
        let line = match roll {
            // Edits of what the client holds (a create when it holds nothing).
            0..=13 if pick(a).is_some() => {
                let (_, id) = pick(a).context("a live entity")?;
                let patch = json!({ key.clone(): if value % 5 == 0 { serde_json::Value::Null } else { json!(value) } });
                let e = c.merge_content(&id, obj(patch)).await?;
                format!(
                    "merge {} {{{key}: {value}}} -> {}",
                    self.name(&id),
                    self.entity_written(op, k, &e)
                )
            }
            14..=21 if pick(a).is_some() => {
                let (_, id) = pick(a).context("a live entity")?;
                let rename = value % 2 == 0;
                let name = format!("{} r{op}", self.name(&id));
                let content = obj(json!({ key.clone(): value, "by": k }));
                let e = c
                    .update_entity(&id, rename.then_some(name.as_str()), Some(content))
                    .await?;
                format!(
                    "update {}{} -> {}",
                    self.name(&id),
                    if rename { " (renamed)" } else { "" },
                    self.entity_written(op, k, &e)
                )
            }
            22..=28 if pick(a).is_some() => {
                let (_, id) = pick(a).context("a live entity")?;
                let e = c.delete_entity(&id).await?;
                format!(
                    "delete {} -> {}",
                    self.name(&id),
                    self.entity_written(op, k, &e)
                )
            }
            29..=36 if live.len() >= 2 => {
                let (_, from) = pick(a).context("a live entity")?;
                let (_, to) = live
                    .iter()
                    .filter(|(_, id)| *id != from)
                    .nth(b % (live.len() - 1))
                    .cloned()
                    .context("another live entity")?;
                let r = c
                    .relate(&from, &to, RelationshipType::ConnectsTo, JsonObject::new())
                    .await?;
                self.record(op, k, Written::Relationship { id: r.id.clone() });
                format!("relate {} -> {}", self.name(&from), self.name(&to))
            }
            60..=63 if faults.has(Fault::Offline) && !self.peers[k].net.is_offline() => {
                let n = (a % 3) as u32;
                self.peers[k].net.cut_after(n);
                let r = self.sync(&format!("#{op:03}"), k).await?;
                format!(
                    "sync cut after {n} request(s), then offline: {}",
                    Self::describe_sync(&r)
                )
            }
            60..=69 if faults.has(Fault::Offline) && self.peers[k].net.is_offline() => {
                self.peers[k].net.set_offline(false);
                "comes back online".to_owned()
            }
            64..=66 if faults.has(Fault::Offline) => {
                self.peers[k].net.set_offline(true);
                "goes offline".to_owned()
            }
            70..=72 if faults.has(Fault::Restarts) => {
                drop(c);
                self.peers[k].client = None;
                self.peers[k].open().await?;
                "restarts (database reopened)".to_owned()
            }
            73 if faults.has(Fault::Restarts) => {
                // What pointing the client at another name of the same server does.
                c.store().reset_sync_state().await?;
                "forgets its sync position (the next pull is a full one)".to_owned()
            }
            37..=69 => {
                let r = self.sync(&format!("#{op:03}"), k).await?;
                format!("sync: {}", Self::describe_sync(&r))
            }
            _ => {
                let alias = self.ids.len();
                let (entity_type, content) = if value % 2 == 0 {
                    (
                        EntityType::Device,
                        obj(json!({ "power": "off", key.clone(): value })),
                    )
                } else {
                    (EntityType::Note, obj(json!({ key.clone(): value })))
                };
                let e = c
                    .create_entity(entity_type.clone(), &format!("e{alias}"), content)
                    .await?;
                self.ids.push(e.id.clone());
                self.alias.insert(e.id.clone(), alias);
                format!(
                    "create e{alias} ({entity_type}) -> {}",
                    self.entity_written(op, k, &e)
                )
            }
        };
        self.log.push(format!("#{op:03} c{k}: {line}"));
        Ok(())
    }

    /// Every client syncs, round after round, with the network healed, until a round
    /// changes nothing on the server and every client reports a clean sync with its digest
    /// matching. Returns the rounds taken, or `None` when it never became quiet.
    async fn sync_until_quiet(&mut self) -> anyhow::Result<Option<usize>> {
        for p in &mut self.peers {
            p.net.heal();
            if p.client.is_none() {
                p.open().await?;
            }
        }
        let store = self.server.handle.store();
        let mut before = store.max_seq().await?;
        for round in 1..=QUIET_ROUNDS {
            let mut clean = true;
            for k in 0..self.peers.len() {
                let r = self.sync(&format!("quiet round {round}"), k).await?;
                let ok = r.errors.is_empty()
                    && r.pending == 0
                    && r.digest.as_ref().is_some_and(|d| d.matches());
                clean &= ok;
                self.log.push(format!(
                    "quiet round {round} c{k}: {}",
                    Self::describe_sync(&r)
                ));
            }
            let after = store.max_seq().await?;
            if clean && after == before {
                return Ok(Some(round));
            }
            before = after;
        }
        Ok(None)
    }

    /// The guarantees, checked after the quiet rounds. Returns the problems found and the
    /// number of writes checked.
    async fn check(&self) -> anyhow::Result<Checked> {
        let mut problems = self.problems.clone();
        let store = self.server.handle.store();
        let server_digest = store.state_digest().await?;
        let server_latest: BTreeMap<EntityId, Version> =
            store.latest_versions().await?.into_iter().collect();

        // 1. Every client's digest is the server's (and so is every latest row).
        for (k, p) in self.peers.iter().enumerate() {
            let c = p.client()?;
            let digest = c.state_digest().await?;
            if digest != server_digest {
                let local: BTreeMap<EntityId, Version> =
                    c.store().latest_versions().await?.into_iter().collect();
                let mut diffs = Vec::new();
                for id in server_latest
                    .keys()
                    .chain(local.keys())
                    .collect::<BTreeSet<_>>()
                {
                    let (s, l) = (server_latest.get(id), local.get(id));
                    if s != l {
                        diffs.push(format!(
                            "{}: server {} client {}",
                            self.name(id),
                            s.map_or("-".into(), Self::short),
                            l.map_or("-".into(), Self::short)
                        ));
                    }
                }
                problems.push(format!(
                    "c{k} digest {digest} != server {server_digest}; latest rows differ: {}",
                    diffs.join("; ")
                ));
            }
        }

        // 2. Every client holds the server's relationships.
        let server_rels: BTreeSet<String> = store
            .relationships(&Default::default())
            .await?
            .into_iter()
            .map(|r| r.id.as_str().to_owned())
            .collect();
        for (k, p) in self.peers.iter().enumerate() {
            let local: BTreeSet<String> = p
                .client()?
                .relationships(&Default::default())
                .await?
                .into_iter()
                .map(|r| r.id.as_str().to_owned())
                .collect();
            if local != server_rels {
                problems.push(format!(
                    "c{k} relationships differ from the server's: {} missing, {} extra",
                    server_rels.difference(&local).count(),
                    local.difference(&server_rels).count()
                ));
            }
        }

        // 3. Nothing pending is left behind: every change acknowledged, none quarantined
        // (every change the run makes is valid).
        for (k, p) in self.peers.iter().enumerate() {
            let c = p.client()?;
            let pending = c.pending_changes().await?;
            if pending != 0 {
                problems.push(format!("c{k} still has {pending} pending change(s)"));
            }
            let quarantined = c.quarantined().await?;
            if !quarantined.is_empty() {
                problems.push(format!(
                    "c{k} quarantined {} valid change(s): {quarantined:?}",
                    quarantined.len()
                ));
            }
        }

        // 4. Every write any client made is on the server: the latest row or history.
        let mut histories: HashMap<EntityId, Vec<StoredEntity>> = HashMap::new();
        for id in &self.ids {
            histories.insert(id.clone(), store.history(id).await?);
        }
        for w in &self.ledger {
            match &w.write {
                Written::Entity {
                    id,
                    version,
                    tombstone,
                } => {
                    let history = histories.get(id).map(Vec::as_slice).unwrap_or_default();
                    let stored = history.iter().any(|s| &s.entity.version == version);
                    // A delete of an id already deleted is acknowledged and not stored
                    // (PROTOCOL §6.2): it is kept when the server holds a tombstone.
                    let deleted_already =
                        *tombstone && history.iter().any(|s| s.entity.is_deleted());
                    if !stored && !deleted_already {
                        problems.push(format!(
                            "#{:03} c{}: {} version {} ({}) is not on the server",
                            w.op,
                            w.client,
                            self.name(id),
                            Self::short(version),
                            if *tombstone { "delete" } else { "edit" }
                        ));
                    }
                }
                Written::Relationship { id } => {
                    if store.relationship(id).await?.is_none() {
                        problems.push(format!(
                            "#{:03} c{}: relationship {id} is not on the server",
                            w.op, w.client
                        ));
                    }
                }
            }
        }

        // 5. Nothing deleted comes back unless a newer edit won.
        let mut revived = 0;
        for (id, history) in &histories {
            match resurrection(history) {
                Revival::None => {}
                Revival::Justified => revived += 1,
                Revival::Unjustified(problem) => {
                    problems.push(format!("{}: {problem}", self.name(id)))
                }
            }
        }
        Ok(Checked {
            problems,
            writes: self.ledger.len(),
            revived,
        })
    }
}

/// What the end-of-run checks found.
struct Checked {
    problems: Vec<String>,
    writes: usize,
    /// Ids live again after a delete, each justified by a newer edit.
    revived: usize,
}

/// Whether an id is live again after a delete, and whether that is justified.
#[derive(Debug, PartialEq, Eq)]
enum Revival {
    /// Its latest is a tombstone, or it was never deleted.
    None,
    /// Live again, by a newer edit or one made after the delete.
    Justified,
    /// Live again without a reason.
    Unjustified(String),
}

/// Checks one id's server history: when its latest version is live but a tombstone is in
/// its history, the latest must descend from that tombstone (an edit made after it was
/// seen) or it, or one of its ancestors, must beat the tombstone by the conflict rule
/// (PROTOCOL §8.2): edit times clamped to the deciding receipt time plus 5 minutes — the
/// later receipt of the two — and at least 1 s newer (within 1 s the tombstone wins).
fn resurrection(history: &[StoredEntity]) -> Revival {
    let Some(latest) = history.iter().find(|s| s.latest) else {
        return Revival::None;
    };
    if latest.entity.is_deleted() || !history.iter().any(|s| s.entity.is_deleted()) {
        return Revival::None;
    }
    let by_version: HashMap<&Version, &StoredEntity> =
        history.iter().map(|s| (&s.entity.version, s)).collect();
    // The latest and every ancestor the server holds.
    let mut line: Vec<&StoredEntity> = vec![latest];
    let mut seen: HashSet<&Version> = HashSet::from([&latest.entity.version]);
    let mut i = 0;
    while i < line.len() {
        for p in &line[i].entity.parent_versions {
            if let Some(s) = by_version.get(p) {
                if seen.insert(&s.entity.version) {
                    line.push(s);
                }
            }
        }
        i += 1;
    }
    for t in history.iter().filter(|s| s.entity.is_deleted()) {
        let descends = seen.contains(&t.entity.version);
        let beaten = line.iter().any(|a| beats(a, t));
        if !descends && !beaten {
            return Revival::Unjustified(format!(
                "deleted by {} (received {}) but back as {} (received {}), which neither descends from the delete nor beats it",
                t.entity.version, t.received_at, latest.entity.version, latest.received_at
            ));
        }
    }
    Revival::Justified
}

/// Whether `a` wins over the tombstone `t` by PROTOCOL §8.2, decided when the later of the
/// two was received.
fn beats(a: &StoredEntity, t: &StoredEntity) -> bool {
    let now = a.received_at.max(t.received_at).unix_micros();
    let edit = |s: &StoredEntity| {
        s.entity
            .version
            .timestamp()
            .unwrap_or(s.entity.updated_at)
            .unix_micros()
            .min(now + SKEW_ALLOWANCE_MICROS)
    };
    edit(a) - edit(t) >= TIEBREAK_MICROS
}

fn obj(v: serde_json::Value) -> JsonObject {
    v.as_object().cloned().unwrap_or_default()
}

/// Runs one seed on a fresh server; `Ok(None)` when the backend is skipped.
pub async fn run_seed(
    seed: u64,
    backend: Backend,
    faults: Faults,
) -> Result<Option<SeedReport>, SeedFailure> {
    let started = Instant::now();
    let mut log = Vec::new();
    let fail = |problems: Vec<String>, log: Vec<String>| SeedFailure {
        seed,
        backend,
        faults,
        problems,
        log,
    };
    let mut rng = StdRng::seed_from_u64(seed);
    let scenario = Scenario::draw(&mut rng, faults);
    log.push(format!(
        "scenario: page size {}, {} ops, network {:?}",
        scenario.page_size, scenario.ops, scenario.net
    ));
    for (k, p) in scenario.clients.iter().enumerate() {
        log.push(format!(
            "client c{k}: batch size {}, clock {:+} min",
            p.batch_size, p.clock_offset_minutes
        ));
    }
    let page_size = scenario.page_size;
    let server = match TestServer::start_on(backend, |mut c| {
        c.max_connections = Some(4);
        c.with_page_size(page_size)
    })
    .await
    {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(e) => return Err(fail(vec![format!("server: {e:#}")], log)),
    };
    let outcome = run_on(&server, seed, faults, &scenario, &mut rng, &mut log).await;
    let stopped = server.stop().await;
    match (outcome, stopped) {
        (Ok(Ok(mut report)), Ok(())) => {
            report.seed = seed;
            report.elapsed = started.elapsed();
            Ok(Some(report))
        }
        (Ok(Err(problems)), _) => Err(fail(problems, log)),
        (Err(e), _) => Err(fail(vec![format!("error: {e:#}")], log)),
        (Ok(Ok(_)), Err(e)) => Err(fail(vec![format!("server stop: {e:#}")], log)),
    }
}

async fn run_on(
    server: &TestServer,
    seed: u64,
    faults: Faults,
    scenario: &Scenario,
    rng: &mut StdRng,
    log: &mut Vec<String>,
) -> anyhow::Result<Result<SeedReport, Vec<String>>> {
    let mut peers = Vec::new();
    for (k, plan) in scenario.clients.iter().enumerate() {
        let config = ClientConfig::default()
            .with_retry(RetryPolicy::immediate(3))
            .with_batch_size(plan.batch_size)
            .with_clock_offset(time::Duration::minutes(plan.clock_offset_minutes))
            // The run's operations are its only syncs. An armed retry timer syncs by
            // itself, between operations and during them (a listing and the edit that
            // follows it), at times that depend on the machine's load, not the seed.
            .with_retry_timer(false);
        let net = Arc::new(ChaosNet::new(
            seed.wrapping_mul(1_000).wrapping_add(k as u64),
            scenario.net,
        ));
        let mut peer = Peer {
            path: server.dir.path().join(format!("c{k}.db")),
            config,
            net,
            client: None,
        };
        peer.open().await?;
        peer.client()?.login(&server.url, PASSWORD).await?;
        peers.push(peer);
    }
    let mut world = World {
        server,
        peers,
        ids: Vec::new(),
        alias: HashMap::new(),
        ledger: Vec::new(),
        log: std::mem::take(log),
        syncs: 0,
        repairs: 0,
        problems: Vec::new(),
        conflicts: 0,
        acted: 0,
    };
    let result = run_world(&mut world, scenario, rng, faults).await;
    *log = std::mem::take(&mut world.log);
    result
}

async fn run_world(
    world: &mut World<'_>,
    scenario: &Scenario,
    rng: &mut StdRng,
    faults: Faults,
) -> anyhow::Result<Result<SeedReport, Vec<String>>> {
    for op in 0..scenario.ops {
        if let Err(e) = world.step(op, rng, faults).await {
            // What every client's mirror held when the operation failed, row by row.
            for k in 0..world.peers.len() {
                for line in world.mirror_rows(k).await.unwrap_or_default() {
                    world.log.push(format!("    after #{op:03}: c{k} {line}"));
                }
            }
            return Err(e.context(format!("operation #{op:03}")));
        }
        if let Some(problem) = world.mirror_problem(world.acted).await? {
            world.problems.push(format!("after #{op:03}: {problem}"));
            return Ok(Err(world.problems.clone()));
        }
    }
    let quiet = world.sync_until_quiet().await?;
    let Checked {
        mut problems,
        writes: writes_checked,
        revived,
    } = world.check().await?;
    if quiet.is_none() {
        problems.insert(
            0,
            format!("not quiet after {QUIET_ROUNDS} rounds of syncs with the network healed"),
        );
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    let mut stats = FaultStats::default();
    for p in &world.peers {
        stats.add(&p.net.stats());
    }
    Ok(Ok(SeedReport {
        seed: 0,
        clients: world.peers.len(),
        ops: scenario.ops,
        writes_checked,
        syncs: world.syncs,
        quiet_rounds: quiet.unwrap_or(QUIET_ROUNDS),
        faults: stats,
        repairs: world.repairs,
        conflicts: world.conflicts,
        revived,
        log: world.log.clone(),
        elapsed: Duration::ZERO,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use goodies_client::{Entity, SourceType, Timestamp};

    const T0: i64 = 1_800_000_000_000_000;

    fn at(micros: i64) -> Timestamp {
        Timestamp::from_unix_micros(T0 + micros).expect("in range")
    }

    /// A version of entity `x` edited at `edit` µs, received at `received` µs.
    fn row(
        edit: i64,
        received: i64,
        parents: &[&StoredEntity],
        deleted: bool,
        latest: bool,
    ) -> StoredEntity {
        let mut content = JsonObject::new();
        if deleted {
            content.insert("deleted".into(), json!(true));
        }
        StoredEntity {
            entity: Entity {
                id: EntityId::from("x"),
                version: Version::generate(at(edit), "u"),
                entity_type: EntityType::Note,
                name: "x".into(),
                content,
                source_type: SourceType::Manual,
                user_id: "u".into(),
                parent_versions: parents.iter().map(|p| p.entity.version.clone()).collect(),
                created_at: at(0),
                updated_at: at(edit),
            },
            seq: 0,
            received_at: at(received),
            latest,
            became_latest: latest,
        }
    }

    #[test]
    fn a_live_latest_over_a_tombstone_needs_a_newer_edit_or_the_tombstone_as_ancestor() {
        let create = row(0, 0, &[], false, false);
        let delete = row(10_000_000, 10_000_000, &[&create], true, false);

        // An edit less than 1 s newer loses to the tombstone: its being latest is a revival.
        let close = row(10_500_000, 11_000_000, &[&create], false, true);
        let h = [create.clone(), delete.clone(), close];
        assert!(matches!(resurrection(&h), Revival::Unjustified(_)), "{h:?}");

        // An older edit pushed later loses too.
        let older = row(5_000_000, 12_000_000, &[&create], false, true);
        let h = [create.clone(), delete.clone(), older];
        assert!(matches!(resurrection(&h), Revival::Unjustified(_)));

        // At least 1 s newer wins.
        let newer = row(11_000_000, 12_000_000, &[&create], false, true);
        let h = [create.clone(), delete.clone(), newer.clone()];
        assert_eq!(resurrection(&h), Revival::Justified);

        // So does a later edit on top of that newer one.
        let mut newer_stored = newer.clone();
        newer_stored.latest = false;
        let child = row(11_000_001, 13_000_000, &[&newer_stored], false, true);
        let h = [create.clone(), delete.clone(), newer_stored, child];
        assert_eq!(resurrection(&h), Revival::Justified);

        // An edit made on top of the tombstone is a deliberate undelete.
        let undelete = row(10_000_001, 12_000_000, &[&delete], false, true);
        let h = [create.clone(), delete.clone(), undelete];
        assert_eq!(resurrection(&h), Revival::Justified);

        // A tombstone that is latest, or no tombstone at all: nothing to check.
        let mut deleted_latest = delete.clone();
        deleted_latest.latest = true;
        assert_eq!(
            resurrection(&[create.clone(), deleted_latest]),
            Revival::None
        );
        let mut live = create.clone();
        live.latest = true;
        assert_eq!(resurrection(&[live]), Revival::None);
    }

    #[test]
    fn edit_times_from_the_future_are_clamped_when_compared() {
        let create = row(0, 0, &[], false, false);
        // A tombstone stamped 299.5 s ahead of its receipt at 100 s.
        let delete = row(399_500_000, 100_000_000, &[&create], true, false);
        // An edit stamped 10 minutes ahead, received at 100 s: clamped to 400 s, within
        // 1 s of the tombstone, which wins the tiebreak (unclamped, the edit would win).
        let edit = row(700_000_000, 100_000_000, &[&create], false, true);
        assert!(!beats(&edit, &delete));
        let h = [create.clone(), delete.clone(), edit];
        assert!(matches!(resurrection(&h), Revival::Unjustified(_)));

        // Received 1 s later, it is clamped to 401 s and wins.
        let edit = row(700_000_000, 101_000_000, &[&create], false, true);
        assert!(beats(&edit, &delete));
        let h = [create.clone(), delete.clone(), edit];
        assert_eq!(resurrection(&h), Revival::Justified);
    }
}
