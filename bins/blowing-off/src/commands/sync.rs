//! `sync` and `sync-daemon`.

use std::time::Duration;

use goodies_client::{error_chain, BlowingOffClient, ClientEvent, SyncResult};
use serde_json::json;

use crate::exit::{usage, Exit};
use crate::output::Out;

/// Arguments of `sync-daemon`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  blowing-off sync-daemon --interval 30
  blowing-off sync-daemon --interval 5 --count 3 --json")]
pub struct DaemonArgs {
    /// Seconds between syncs.
    #[arg(long, default_value_t = 30)]
    pub interval: u64,
    /// Stop after this many syncs (default: run until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
}

fn result_json(r: &SyncResult) -> serde_json::Value {
    json!({
        "ok": r.is_ok(),
        "synced_entities": r.synced_entities,
        "pushed": r.pushed,
        "acknowledged": r.acknowledged,
        "pulled_entities": r.pulled_entities,
        "pulled_relationships": r.pulled_relationships,
        "deferred": r.deferred,
        "conflicts_resolved": r.conflicts_resolved,
        "conflicts": r.conflicts,
        "recorded_conflicts": r.recorded,
        "errors": r.errors.iter().map(|e| error_chain(e)).collect::<Vec<_>>(),
        "pending": r.pending,
        "requests": r.requests,
        "retries": r.retries,
        "duration_ms": r.duration.as_secs_f64() * 1000.0,
        "watermark": r.watermark,
        "digest": r.digest,
        "digest_mismatch": r.digest_mismatch,
        "quarantined": r.quarantined,
        "quarantined_total": r.quarantined_total,
        "repair": r.repair,
    })
}

/// The one-line summary of a sync.
pub fn summary_line(r: &SyncResult) -> String {
    format!(
        "synced {} entities (pushed {}, pulled {} entities and {} relationships), {} conflict(s), {} error(s), {} pending, {:.0} ms",
        r.synced_entities,
        r.pushed,
        r.pulled_entities,
        r.pulled_relationships,
        r.conflicts_resolved,
        r.errors.len(),
        r.pending,
        r.duration.as_secs_f64() * 1000.0
    ) + &if r.quarantined_total > 0 {
        format!(", {} refused (kept aside)", r.quarantined_total)
    } else {
        String::new()
    }
}

fn exit_of(r: &SyncResult) -> Exit {
    if r.is_ok() {
        Exit::Ok
    } else if r.is_unreachable() {
        Exit::Unreachable
    } else {
        Exit::SyncErrors
    }
}

fn print_problems(r: &SyncResult) {
    for e in &r.errors {
        errln!("error: {}", error_chain(e));
    }
    for q in &r.quarantined {
        let what = match (&q.entity_id, &q.relationship_id) {
            (Some(id), _) => format!("entity {id}"),
            (_, Some(rel)) => format!("relationship {rel}"),
            _ => format!("outbox entry {}", q.position),
        };
        errln!(
            "error: the server refused the change to {what}; kept aside (see `blowing-off outbox`): {}",
            q.reason
        );
    }
    if let Some(rep) = &r.repair {
        errln!(
            "note: repaired the local mirror ({}): full pull made {} version(s) latest, gave back {} change(s), dropped {} unknown tombstone(s){}",
            match rep.reason {
                goodies_client::RepairReason::InvalidSyncState => "the server did not know our sync position",
                _ => "the state digests disagreed",
            },
            rep.pulled_entities,
            rep.requeued,
            rep.forgotten,
            if rep.converged { "" } else { "; still not in step" }
        );
    }
    for c in &r.recorded {
        errln!(
            "note: conflict over {}: {} (see `blowing-off conflicts show {}`)",
            c.conflict.entity_id,
            c.explain(),
            c.conflict.entity_id
        );
    }
    if let Some(m) = &r.digest_mismatch {
        errln!(
            "error: state digest mismatch after sync (server {}, local {})",
            m.server,
            m.local
        );
    }
}

/// Runs `sync`.
pub async fn run_once(client: &BlowingOffClient, out: Out) -> anyhow::Result<Exit> {
    let progress = crate::progress::SyncProgress::start(client, out);
    let r = client.sync().await;
    progress.finish();
    let r = r?;
    if out.json {
        out.json(&result_json(&r))?;
    } else {
        outln!("{}", summary_line(&r));
    }
    print_problems(&r);
    Ok(exit_of(&r))
}

/// Refreshes the stored (admin) token before it expires, for as long as it is polled:
/// checked every `interval`, refreshed when less than an hour (or three intervals) is
/// left. A token the server will not refresh (a guest's) is reported once and left to
/// expire; the daemon's syncs then report the expiry.
async fn keep_token_fresh(
    client: BlowingOffClient,
    out: Out,
    resolved: &crate::config::Resolved,
    interval: Duration,
) -> std::convert::Infallible {
    let margin = (interval * 3).max(Duration::from_secs(3600)).as_secs() as i64;
    let mut gave_up = false;
    loop {
        let token = client.settings().await.ok().and_then(|s| s.auth_token);
        let now = goodies_client::Timestamp::now().unix_micros() / 1_000_000;
        let due = token
            .as_deref()
            .and_then(goodies_client::token_expires_at)
            .is_some_and(|exp| exp > now && exp - now < margin);
        if due && !gave_up {
            match client.refresh_token().await {
                Ok(info) => {
                    tracing::debug!(expires_in = ?info.expires_in, "token refreshed");
                    out.note(format_args!(
                        "token refreshed (valid for {} s more)",
                        info.expires_in.map_or("?".to_owned(), |s| s.to_string())
                    ));
                    if let Err(e) = crate::config::remember_token(&client, resolved).await {
                        errln!("error: cannot write the refreshed token to the configuration file: {e}");
                    }
                }
                Err(e) if e.is_unreachable() => {}
                Err(e) => {
                    gave_up = true;
                    errln!("error: the token cannot be refreshed ({e}); it will expire");
                }
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// A future that completes at the first Ctrl-C (SIGINT) or SIGTERM. The handlers are
/// installed here, before the future is first polled, so a signal that arrives as soon
/// as the daemon has said it runs is not missed.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

/// Runs `sync-daemon`.
pub async fn run_daemon(
    client: &BlowingOffClient,
    out: Out,
    resolved: &crate::config::Resolved,
    a: DaemonArgs,
) -> anyhow::Result<Exit> {
    if a.interval == 0 {
        return Err(usage("--interval must be at least 1 second"));
    }
    if client.settings().await?.server_url.is_none() {
        return Err(goodies_client::ClientError::NotConnected.into());
    }
    let json_out = out.json;
    let quiet = out.quiet;
    let _printer = client.on_change(move |e| match e {
        ClientEvent::SyncFinished(s) => {
            if json_out {
                outln!(
                    "{}",
                    json!({"event": "sync_finished", "ok": s.ok, "synced_entities": s.synced_entities,
                           "conflicts_resolved": s.conflicts_resolved, "pending": s.pending,
                           "errors": s.errors, "duration_ms": s.duration.as_secs_f64() * 1000.0})
                );
            } else {
                outln!(
                    "sync: {} entities, {} conflict(s), {} error(s), {} pending, {:.0} ms",
                    s.synced_entities,
                    s.conflicts_resolved,
                    s.errors.len(),
                    s.pending,
                    s.duration.as_secs_f64() * 1000.0
                );
                for err in &s.errors {
                    errln!("error: {err}");
                }
            }
        }
        ClientEvent::SyncFailed { message } => errln!("error: sync failed: {message}"),
        ClientEvent::DigestMismatch { server, local } => {
            errln!("error: state digest mismatch (server {server}, local {local})")
        }
        ClientEvent::ChangeQuarantined(q) => errln!(
            "error: the server refused a change (outbox position {}); kept aside: {}",
            q.position, q.reason
        ),
        ClientEvent::Repaired(r) => errln!(
            "note: repaired the local mirror: {} version(s) pulled, {} given back, {} dropped",
            r.pulled_entities, r.requeued, r.forgotten
        ),
        // Retries, connectivity, clock skew, token refresh, the feed: on stderr, so
        // stdout keeps one line per sync.
        other => {
            if let Some(line) = crate::progress::signal_line(other).filter(|_| !quiet) {
                errln!("{line}");
            }
        }
    });
    let interval = Duration::from_secs(a.interval);
    let signal = shutdown_signal()?;
    out.note(format_args!(
        "syncing now, on each change the server's feed announces, and at least every {} s; Ctrl-C or SIGTERM stops after the sync in progress",
        a.interval
    ));
    let bg = match a.count {
        Some(n) => client.start_background_sync_limited(interval, n),
        None => client.start_background_sync(interval),
    };
    let refresher = keep_token_fresh(client.clone(), out, resolved, interval);
    let (stats, stopped) = tokio::select! {
        r = bg.stop_when(signal) => r,
        never = refresher => match never {},
    };
    let pending = client.pending_changes().await?;
    if json_out {
        outln!(
            "{}",
            json!({"event": "stopped", "syncs": stats.runs, "failures": stats.failures,
                   "pending": pending, "by_signal": stopped})
        );
    } else {
        outln!(
            "{} sync(s), {} with errors; {pending} change(s) pending{}",
            stats.runs,
            stats.failures,
            if stopped { " (stopped by signal)" } else { "" }
        );
    }
    Ok(if stats.failures > 0 {
        Exit::SyncErrors
    } else {
        Exit::Ok
    })
}
