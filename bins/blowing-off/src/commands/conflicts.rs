//! `conflicts [list]` and `conflicts show ENTITY`: what the server decided in recent
//! syncs, told from this client's side ("your edit" and "the server's"), with both
//! contents.

use goodies_client::{BlowingOffClient, ClientError, Entity, RecordedConflict, Version};
use serde_json::{json, Value};
use tabled::Tabled;

use crate::commands::id;
use crate::exit::Exit;
use crate::output::Out;

/// Arguments of `conflicts`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  blowing-off conflicts
  blowing-off conflicts show DEVICE_ID
  blowing-off conflicts list --limit 5 --json")]
pub struct Args {
    /// What to do (default: list).
    #[command(subcommand)]
    pub action: Option<Action>,
    /// Show at most this many (the most recent).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

/// `conflicts` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// The recent conflicts, newest first (the default).
    #[command(after_help = "Example:\n  blowing-off conflicts list --limit 5")]
    List,
    /// The latest conflict over one entity: both edits with their contents, and which
    /// one the server kept and why.
    #[command(after_help = "Example:\n  blowing-off conflicts show DEVICE_ID --json")]
    Show {
        /// The entity (id).
        entity: String,
    },
}

/// Whose edit the server kept, from this client's side.
fn kept(r: &RecordedConflict) -> &'static str {
    let c = &r.conflict;
    if c.resolved_version == c.remote_version {
        "yours"
    } else if c.resolved_version == c.local_version {
        "the server's"
    } else {
        "a merge"
    }
}

#[derive(Tabled)]
struct ConflictRow {
    received: String,
    entity: String,
    kept: String,
    why: String,
}

async fn version(
    client: &BlowingOffClient,
    entity: &goodies_client::EntityId,
    v: &Version,
) -> anyhow::Result<Option<Entity>> {
    Ok(client.entity_version(entity, v).await?)
}

fn side(v: &Version, e: &Option<Entity>) -> Value {
    match e {
        Some(e) => json!({"version": v, "name": e.name, "content": e.content,
                          "updated_at": e.updated_at, "user_id": e.user_id}),
        None => json!({"version": v, "name": null, "content": null}),
    }
}

/// Runs `conflicts`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    let all = client.recent_conflicts().await?;
    match a.action.unwrap_or(Action::List) {
        Action::List => {
            let mut recent = all;
            let skip = recent.len().saturating_sub(a.limit);
            recent.drain(..skip);
            if out.json {
                out.json(&recent)?;
                return Ok(Exit::Ok);
            }
            let mut rows = Vec::new();
            for r in recent.iter().rev() {
                let name = match client.entity(&r.conflict.entity_id).await? {
                    Some(e) => format!("{} {}", e.entity_type, e.name),
                    None => r.conflict.entity_id.to_string(),
                };
                rows.push(ConflictRow {
                    received: r.at.to_string(),
                    entity: name,
                    kept: kept(r).to_owned(),
                    why: r.conflict.resolution_strategy.clone(),
                });
            }
            out.table(rows, "no conflicts recorded");
        }
        Action::Show { entity } => {
            let eid = id(&entity);
            let r = all
                .iter()
                .rev()
                .find(|r| r.conflict.entity_id == eid)
                .ok_or_else(|| ClientError::NotFound(format!("a recent conflict over {eid}")))?;
            let c = &r.conflict;
            let yours = version(client, &eid, &c.remote_version).await?;
            let theirs = version(client, &eid, &c.local_version).await?;
            let now = client.entity(&eid).await?;
            if out.json {
                out.json(&json!({
                    "entity_id": eid,
                    "received_at": r.at,
                    "kept": match kept(r) { "yours" => "yours", "the server's" => "server", _ => "merged" },
                    "why": c.resolution_strategy,
                    "reason": c.reason,
                    "yours": side(&c.remote_version, &yours),
                    "server": side(&c.local_version, &theirs),
                    "resolved_version": c.resolved_version,
                }))?;
                return Ok(Exit::Ok);
            }
            let title = now.as_ref().map_or_else(
                || eid.to_string(),
                |e| format!("{} {}", e.entity_type, e.name),
            );
            outln!(
                "{title}: the server kept {} ({}), at {}",
                kept(r),
                c.resolution_strategy,
                r.at
            );
            let show = |label: &str, v: &Version, e: &Option<Entity>| match e {
                Some(e) => outln!(
                    "  {label} (version {v}, {}): {}",
                    e.updated_at,
                    Value::Object(e.content.clone())
                ),
                None => outln!("  {label} (version {v}): not in the local mirror"),
            };
            show("your edit     ", &c.remote_version, &yours);
            show("server's edit ", &c.local_version, &theirs);
            outln!("  the other version stays in `blowing-off entity history {eid}`");
        }
    }
    Ok(Exit::Ok)
}
