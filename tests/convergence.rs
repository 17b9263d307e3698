//! The convergence test: seeded runs of 2–8 clients making random edits through a faulty
//! network, with restarts and skewed clocks, against the real server on SQLite and on
//! PostgreSQL. Every run must end converged, with every write on the server, nothing
//! deleted back without a newer edit, and nothing left pending.
//!
//! - `GOODIES_CHAOS_SEEDS=N` runs seeds `0..N` on each backend (default 50);
//!   `GOODIES_CHAOS_FIRST_SEED=M` starts at `M` instead; `GOODIES_CHAOS_SEED=N` runs one seed.
//! - `GOODIES_CHAOS_JOBS=N` runs N seeds at once (default 8).
//! - Each fault kind is switched with its own variable (`GOODIES_CHAOS_LOST_ANSWERS=0|1`,
//!   …; see `Fault::env_var`); [`default_faults`] says which are on by default.
//! - A failing seed prints the line that replays it and its operation log.
//!
//! The long run (10,000 seeds per backend; `cargo test` because nextest stops a test
//! after four minutes):
//!
//! ```text
//! GOODIES_CHAOS_SEEDS=10000 cargo test --workspace --all-features --test convergence -- --nocapture
//! ```

use std::time::{Duration, Instant};

use goodies_e2e::chaos::{run_seed, FaultStats, Faults, SeedFailure, SeedReport};
use goodies_e2e::Backend;

/// The fault kinds on when no variable says otherwise.
fn default_faults() -> Faults {
    Faults::all()
}

fn env_u64(name: &str) -> anyhow::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => Ok(Some(
            v.trim()
                .parse()
                .map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}"))?,
        )),
        _ => Ok(None),
    }
}

/// The seeds this run covers.
fn seeds() -> anyhow::Result<Vec<u64>> {
    if let Some(seed) = env_u64("GOODIES_CHAOS_SEED")? {
        return Ok(vec![seed]);
    }
    let first = env_u64("GOODIES_CHAOS_FIRST_SEED")?.unwrap_or(0);
    let count = env_u64("GOODIES_CHAOS_SEEDS")?.unwrap_or(50);
    Ok((first..first.saturating_add(count)).collect())
}

/// Runs the seeds on one backend, a few at a time, and fails with every failing seed's
/// replay line and operation log.
async fn run(backend: Backend) -> anyhow::Result<()> {
    let faults = Faults::from_env(default_faults())?;
    let seeds = seeds()?;
    let jobs = env_u64("GOODIES_CHAOS_JOBS")?.unwrap_or(8).max(1) as usize;
    let started = Instant::now();
    let mut reports: Vec<SeedReport> = Vec::new();
    let mut failures: Vec<SeedFailure> = Vec::new();
    let mut skipped = false;
    let mut next = seeds.iter().copied();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < jobs && !skipped {
            match next.next() {
                Some(seed) => {
                    running.spawn(run_seed(seed, backend, faults));
                }
                None => break,
            }
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done? {
            Ok(Some(report)) => reports.push(report),
            Ok(None) => skipped = true,
            Err(failure) => {
                eprintln!("{failure}");
                failures.push(failure);
            }
        }
    }
    if let [report] = reports.as_slice() {
        println!("seed {}: every operation, in order:", report.seed);
        for line in &report.log {
            println!("    {line}");
        }
    }
    if skipped {
        println!(
            "skipping: convergence on {} (backend unavailable)",
            backend.name()
        );
        return Ok(());
    }

    let mut stats = FaultStats::default();
    let mut writes = 0;
    let mut syncs = 0;
    let mut repairs = 0;
    let mut conflicts = 0;
    let mut revived = 0;
    let mut slowest = Duration::ZERO;
    let mut total = Duration::ZERO;
    for r in &reports {
        writes += r.writes_checked;
        syncs += r.syncs;
        repairs += r.repairs;
        conflicts += r.conflicts;
        revived += r.revived;
        slowest = slowest.max(r.elapsed);
        total += r.elapsed;
        stats.requests += r.faults.requests;
        stats.failed += r.faults.failed;
        stats.lost += r.faults.lost;
        stats.duplicated += r.faults.duplicated;
        stats.offline += r.faults.offline;
    }
    let per_seed = total.checked_div(reports.len().max(1) as u32);
    println!(
        "convergence on {}: {} seed(s) passed, {} failed; faults {:?}; {} writes checked, {} syncs ({} repaired a mirror), {} conflicts, {} ids live again after a delete, {} requests ({} refused, {} answers lost, {} duplicated, {} while offline); {:?} per seed (slowest {:?}), {:?} in all with {} at once",
        backend.name(),
        reports.len(),
        failures.len(),
        faults,
        writes,
        syncs,
        repairs,
        conflicts,
        revived,
        stats.requests,
        stats.failed,
        stats.lost,
        stats.duplicated,
        stats.offline,
        per_seed.unwrap_or_default(),
        slowest,
        started.elapsed(),
        jobs
    );
    if !failures.is_empty() {
        let mut ids: Vec<u64> = failures.iter().map(|f| f.seed).collect();
        ids.sort_unstable();
        anyhow::bail!(
            "{} of {} seed(s) failed on {}: {ids:?} (each printed above with its replay line)",
            failures.len(),
            seeds.len(),
            backend.name()
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_on_sqlite() -> anyhow::Result<()> {
    run(Backend::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_on_postgres() -> anyhow::Result<()> {
    run(Backend::Postgres).await
}

/// Fails with the seed's report when it breaks a guarantee.
async fn regression(seed: u64, backend: Backend, faults: Faults) -> anyhow::Result<()> {
    match run_seed(seed, backend, faults).await {
        Ok(_) => Ok(()),
        Err(failure) => anyhow::bail!("{failure}"),
    }
}

// Seeds that found a defect, each kept as a test named after what it caught. A seed replays
// the operations the generator in `chaos.rs` draws from it: a change to the generator
// changes what every seed does, and these seeds must then be found again.

/// A client holds its delete of an entity while offline (pushing one change per request)
/// and another client deletes it too: a pulled page with the other tombstone was applied
/// first, the held delete was acknowledged as already deleted, and the client kept its
/// own tombstone for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_5_a_delete_held_offline_meets_another_delete_converges() -> anyhow::Result<()> {
    regression(5, Backend::Sqlite, Faults::all()).await
}

/// Three clients delete one entity, one with its clock 10 minutes ahead: the server kept
/// the fast clock's tombstone, a client with batch size 1 kept its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_15_deletes_from_a_fast_clock_and_a_slow_push_converge() -> anyhow::Result<()> {
    regression(15, Backend::Sqlite, Faults::all()).await
}

/// A client an hour behind edits an entity offline and deletes it after another client
/// deleted it: its own tombstone stayed latest locally, the server kept the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_16_a_slow_clock_deleting_a_deleted_entity_converges() -> anyhow::Result<()> {
    regression(16, Backend::Sqlite, Faults::all()).await
}

/// An edit loses to a delete made less than a second earlier (the tombstone wins the
/// tiebreak), then its client deletes the entity too: it kept its own tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_34_an_edit_losing_to_a_delete_then_deleting_converges() -> anyhow::Result<()> {
    regression(34, Backend::Sqlite, Faults::all()).await
}

/// A client an hour behind pushes offline edits that all lose to a delete: it kept showing
/// its losing edit instead of the tombstone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_44_slow_clock_edits_losing_to_a_delete_converge() -> anyhow::Result<()> {
    regression(44, Backend::Sqlite, Faults::all()).await
}

/// The baseline every other seed builds on: the same operations with no fault at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_faults_converges() -> anyhow::Result<()> {
    regression(0, Backend::Sqlite, Faults::NONE).await
}
