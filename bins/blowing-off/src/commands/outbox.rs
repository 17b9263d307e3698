//! `outbox`: changes the server refused (quarantined), and sending them again.

use goodies_client::BlowingOffClient;
use serde_json::json;
use tabled::Tabled;

use crate::exit::Exit;
use crate::output::Out;

/// Arguments of `outbox`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  blowing-off outbox\n  blowing-off outbox retry")]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
}

/// What to do with the outbox.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// List the changes the server refused, with its reasons (the default).
    #[command(after_help = "Example:\n  blowing-off outbox list")]
    List,
    /// Send refused changes again on the next sync (all, or the given positions).
    #[command(
        after_help = "Examples:\n  blowing-off outbox retry\n  blowing-off outbox retry 12 13"
    )]
    Retry {
        /// Outbox positions (as `outbox list` shows them); all when none are given.
        positions: Vec<i64>,
    },
}

#[derive(Tabled)]
struct Row {
    position: i64,
    change: String,
    reason: String,
}

/// Runs `outbox`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    match a.action.unwrap_or(Action::List) {
        Action::List => {
            let list = client.quarantined().await?;
            let pending = client.pending_changes().await?;
            if out.json {
                out.json(&json!({"pending": pending, "quarantined": list}))?;
                return Ok(Exit::Ok);
            }
            outln!(
                "{pending} change(s) pending, {} refused by the server",
                list.len()
            );
            out.table(
                list.into_iter()
                    .map(|q| Row {
                        position: q.position,
                        change: match (&q.entity_id, &q.version, &q.relationship_id) {
                            (Some(id), Some(v), _) => format!("entity {id} version {v}"),
                            (_, _, Some(r)) => format!("relationship {r}"),
                            _ => "relationships only".to_owned(),
                        },
                        reason: q.reason,
                    })
                    .collect(),
                "no refused changes",
            );
            Ok(Exit::Ok)
        }
        Action::Retry { positions } => {
            let which = (!positions.is_empty()).then_some(positions.as_slice());
            let released = client.retry_quarantined(which).await?;
            if out.json {
                out.json(&json!({"released": released}))?;
            } else {
                outln!("{released} refused change(s) will be sent again on the next sync");
            }
            Ok(Exit::Ok)
        }
    }
}
