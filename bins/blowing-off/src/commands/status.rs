//! `status`: connection, pending changes, sync position, last sync and digest check.

use goodies_client::BlowingOffClient;

use crate::exit::Exit;
use crate::output::{opt, Out};

/// Runs `status`.
pub async fn run(client: &BlowingOffClient, out: Out) -> anyhow::Result<Exit> {
    let s = client.status().await?;
    if out.json {
        out.json(&s)?;
        return Ok(Exit::Ok);
    }
    let last_sync = s.last_sync.as_ref().map(|l| {
        let how = if l.ok {
            "ok".to_owned()
        } else {
            format!("{} error(s)", l.errors.len())
        };
        format!(
            "{} ({how}, {} entities, {} conflicts, {} ms)",
            l.at, l.synced_entities, l.conflicts_resolved, l.duration_ms
        )
    });
    let digest = s.last_digest_check.as_ref().map(|d| {
        if d.matches() {
            format!("{} match ({})", d.at, short(&d.local))
        } else {
            format!(
                "{} MISMATCH (server {}, local {})",
                d.at,
                short(&d.server),
                short(&d.local)
            )
        }
    });
    out.pairs(vec![
        ("server url", opt(s.server_url.as_deref())),
        (
            "logged in",
            if s.logged_in { "yes" } else { "no" }.to_owned(),
        ),
        ("user", s.user_id.clone()),
        ("client id", s.client_id.clone()),
        ("database", s.db_path.clone()),
        ("pending changes", s.pending_changes.to_string()),
        (
            "refused changes",
            if s.quarantined_changes == 0 {
                "0".to_owned()
            } else {
                format!("{} (see `blowing-off outbox`)", s.quarantined_changes)
            },
        ),
        ("watermark", opt(s.watermark)),
        ("pull in progress", opt(s.cursor.as_deref())),
        ("last sync", opt(last_sync)),
        ("last digest check", opt(digest)),
    ]);
    Ok(Exit::Ok)
}

fn short(d: &str) -> &str {
    d.get(..12).unwrap_or(d)
}
