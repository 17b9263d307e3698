//! `conflicts`: what the server decided in recent syncs.

use goodies_client::BlowingOffClient;
use tabled::Tabled;

use crate::exit::Exit;
use crate::output::Out;

/// Arguments of `conflicts`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Show at most this many (the most recent).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Tabled)]
struct ConflictRow {
    received: String,
    entity: String,
    server_version: String,
    our_version: String,
    winner: String,
    strategy: String,
}

/// Runs `conflicts`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    let mut all = client.recent_conflicts().await?;
    let skip = all.len().saturating_sub(a.limit);
    all.drain(..skip);
    if out.json {
        out.json(&all)?;
        return Ok(Exit::Ok);
    }
    out.table(
        all.iter()
            .rev()
            .map(|r| {
                let c = &r.conflict;
                let winner = if c.resolved_version == c.remote_version {
                    "ours"
                } else if c.resolved_version == c.local_version {
                    "server's"
                } else {
                    "merged"
                };
                ConflictRow {
                    received: r.at.to_string(),
                    entity: c.entity_id.to_string(),
                    server_version: c.local_version.to_string(),
                    our_version: c.remote_version.to_string(),
                    winner: winner.to_owned(),
                    strategy: c.resolution_strategy.clone(),
                }
            })
            .collect(),
        "no conflicts recorded",
    );
    Ok(Exit::Ok)
}
