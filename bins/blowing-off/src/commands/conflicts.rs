//! `conflicts [list]`, `conflicts show ENTITY`, `conflicts queue`, `conflicts resolve ID`:
//! what recent syncs recorded, and the server's review queue, told from this device's
//! side ("this device's edit", "the other device's edit", "the server's"), with both
//! contents in full.

use std::path::Path;

use goodies_client::{
    BlowingOffClient, ClientError, ConflictOrigin, ConflictOutcome, Entity, JsonObject,
    QueuedConflict, RecordedConflict, Resolution, Version,
};
use serde_json::{json, Value};
use tabled::Tabled;

use crate::commands::id;
use crate::exit::{usage, Exit};
use crate::output::Out;

/// Arguments of `conflicts`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  blowing-off conflicts
  blowing-off conflicts show DEVICE_ID
  blowing-off conflicts queue
  blowing-off conflicts resolve 7 --ours
  blowing-off conflicts resolve 7 --merged '{\"power\": \"on\"}'")]
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
    /// The conflicts recent syncs recorded, newest first (the default): over this
    /// device's pushes, and where another device's edit replaced this device's.
    #[command(after_help = "Example:\n  blowing-off conflicts list --limit 5")]
    List,
    /// The latest recorded conflict over one entity: both edits with their full
    /// contents, and which one the server kept and why.
    #[command(after_help = "Example:\n  blowing-off conflicts show DEVICE_ID --json")]
    Show {
        /// The entity (id).
        entity: String,
    },
    /// The server's review queue (a server that queues conflicts for a person):
    /// each conflict's id, both edits in full, and which is this device's.
    #[command(
        after_help = "Examples:\n  blowing-off conflicts queue\n  blowing-off conflicts queue --status all --json"
    )]
    Queue {
        /// `pending` (the queue), `auto`, `resolved`, `dismissed`, a comma-separated
        /// list, or `all`.
        #[arg(long, default_value = "pending")]
        status: String,
    },
    /// Resolve a queued conflict: keep one edit, or write merged content. The server
    /// writes a new version on top of both edits; this device then syncs to get it.
    #[command(after_help = "Examples:
  blowing-off conflicts resolve 7 --ours
  blowing-off conflicts resolve 7 --theirs
  blowing-off conflicts resolve 7 --merged merged.json
  blowing-off conflicts resolve 7 --merged '{\"text\": \"both\"}'")]
    Resolve {
        /// The conflict's id (from `conflicts queue`).
        id: i64,
        /// Keep this device's edit.
        #[arg(long, group = "choice")]
        ours: bool,
        /// Keep the other device's edit.
        #[arg(long, group = "choice")]
        theirs: bool,
        /// Keep the server's version (the one latest while the conflict waits).
        #[arg(long, group = "choice")]
        server: bool,
        /// Keep the pushed version.
        #[arg(long, group = "choice")]
        pushed: bool,
        /// Write this content instead: a JSON object, or a file holding one.
        #[arg(long, group = "choice", value_name = "FILE_OR_JSON")]
        merged: Option<String>,
        /// Do not sync afterwards.
        #[arg(long)]
        no_sync: bool,
    },
}

/// Which edit is latest, in words.
fn kept(r: &RecordedConflict) -> &'static str {
    match r.outcome() {
        ConflictOutcome::Ours => "this device's edit",
        ConflictOutcome::Theirs if r.origin == ConflictOrigin::OtherDevice => {
            "the other device's edit"
        }
        ConflictOutcome::Theirs => "the server's version",
        ConflictOutcome::Merged => "a merge of both",
        ConflictOutcome::AwaitingReview => "waiting for review",
        _ => "unknown",
    }
}

fn kept_key(r: &RecordedConflict) -> &'static str {
    match r.outcome() {
        ConflictOutcome::Ours => "ours",
        ConflictOutcome::Theirs => "theirs",
        ConflictOutcome::Merged => "merged",
        ConflictOutcome::AwaitingReview => "awaiting_review",
        _ => "unknown",
    }
}

fn origin_key(r: &RecordedConflict) -> &'static str {
    match r.origin {
        ConflictOrigin::OtherDevice => "other_device",
        _ => "this_device",
    }
}

#[derive(Tabled)]
struct ConflictRow {
    received: String,
    entity: String,
    #[tabled(rename = "whose push")]
    origin: String,
    kept: String,
    why: String,
}

#[derive(Tabled)]
struct QueueRow {
    id: i64,
    entity: String,
    status: String,
    #[tabled(rename = "server's version")]
    server: String,
    #[tabled(rename = "pushed version")]
    pushed: String,
}

fn side(v: &Version, e: &Option<Entity>) -> Value {
    match e {
        Some(e) => json!({"version": v, "name": e.name, "content": e.content,
                          "updated_at": e.updated_at, "user_id": e.user_id}),
        None => json!({"version": v, "name": null, "content": null}),
    }
}

fn content_text(e: &Option<Entity>) -> String {
    match e {
        Some(e) => Value::Object(e.content.clone()).to_string(),
        None => "(not known here)".to_owned(),
    }
}

/// The recorded conflict as `--json` shows it.
fn recorded_json(r: &RecordedConflict) -> Value {
    let c = &r.conflict;
    json!({
        "entity_id": c.entity_id,
        "received_at": r.at,
        "origin": origin_key(r),
        "kept": kept_key(r),
        "explanation": r.explain(),
        "reason": c.reason,
        "server_words": c.resolution_strategy,
        "ours": side(r.ours_version(), &r.ours),
        "theirs": side(r.theirs_version(), &r.theirs),
        "resolved_version": c.resolved_version,
    })
}

/// Whose edit each side of a queued conflict is, in words.
fn queue_sides(q: &QueuedConflict) -> (&'static str, &'static str) {
    match q.ours_is_pushed() {
        Some(true) => ("the other device's edit", "this device's edit"),
        Some(false) => ("this device's edit", "the other device's edit"),
        _ => ("the server's", "another device's edit"),
    }
}

fn queued_json(q: &QueuedConflict) -> Value {
    let ours = q
        .ours_is_pushed()
        .map(|p| if p { "pushed" } else { "server" });
    json!({
        "id": q.id,
        "entity_id": q.entity_id,
        "status": q.status,
        "reason": q.reason,
        "created_at": q.created_at,
        "device_id": q.device_id,
        "ours": ours,
        "server": side(&q.server_version, &q.server_side),
        "pushed": side(&q.client_version, &q.pushed_side),
        "resolved_version": q.resolved_version,
    })
}

/// The `--merged` content: a JSON object given inline, or a file holding one.
fn merged_content(arg: &str) -> anyhow::Result<JsonObject> {
    let text = if arg.trim_start().starts_with('{') {
        arg.to_owned()
    } else {
        std::fs::read_to_string(Path::new(arg)).map_err(|e| {
            usage(format!(
                "--merged {arg}: not a JSON object and not a readable file ({e})"
            ))
        })?
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(usage(format!(
            "--merged {arg}: the content must be a JSON object"
        ))),
        Err(e) => Err(usage(format!("--merged {arg}: not valid JSON ({e})"))),
    }
}

/// Runs `conflicts`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    match a.action.unwrap_or(Action::List) {
        Action::List => {
            let mut recent = client.recent_conflicts().await?;
            let skip = recent.len().saturating_sub(a.limit);
            recent.drain(..skip);
            recent.reverse();
            if out.json {
                out.json(&recent.iter().map(recorded_json).collect::<Vec<_>>())?;
                return Ok(Exit::Ok);
            }
            let mut rows = Vec::new();
            for r in &recent {
                let name = match client.entity(&r.conflict.entity_id).await? {
                    Some(e) => format!("{} {} ({})", e.entity_type, e.name, e.id),
                    None => r.conflict.entity_id.to_string(),
                };
                rows.push(ConflictRow {
                    received: r.at.to_string(),
                    entity: name,
                    origin: match r.origin {
                        ConflictOrigin::OtherDevice => "another device's".to_owned(),
                        _ => "this device's".to_owned(),
                    },
                    kept: kept(r).to_owned(),
                    why: r.explain(),
                });
            }
            out.table(rows, "no conflicts recorded");
        }
        Action::Show { entity } => {
            let eid = id(&entity);
            let all = client.recent_conflicts().await?;
            let r = all
                .iter()
                .rev()
                .find(|r| r.conflict.entity_id == eid)
                .ok_or_else(|| ClientError::NotFound(format!("a recent conflict over {eid}")))?;
            // Records made before contents were kept: read them from the mirror.
            let mut r = r.clone();
            if r.ours.is_none() {
                r.ours = client.entity_version(&eid, r.ours_version()).await?;
            }
            if r.theirs.is_none() {
                r.theirs = client.entity_version(&eid, r.theirs_version()).await?;
            }
            if out.json {
                out.json(&recorded_json(&r))?;
                return Ok(Exit::Ok);
            }
            let title = match client.entity(&eid).await? {
                Some(e) => format!("{} {} ({eid})", e.entity_type, e.name),
                None => eid.to_string(),
            };
            outln!("{title}, recorded {}", r.at);
            outln!("{}.", r.explain());
            let theirs_label = match r.origin {
                ConflictOrigin::OtherDevice => "the other device's edit",
                _ => "the server's version",
            };
            let show = |label: &str, v: &Version, e: &Option<Entity>| match e {
                Some(e) => outln!(
                    "  {label} (version {v}, made {}): {}",
                    e.updated_at,
                    content_text(&Some(e.clone()))
                ),
                None => outln!("  {label} (version {v}): not known here"),
            };
            show("this device's edit", r.ours_version(), &r.ours);
            show(theirs_label, r.theirs_version(), &r.theirs);
            outln!("  every version stays in `blowing-off entity history {eid}`");
        }
        Action::Queue { status } => {
            let list = client.server_conflicts(&status).await?;
            if out.json {
                out.json(&list.iter().map(queued_json).collect::<Vec<_>>())?;
                return Ok(Exit::Ok);
            }
            let rows: Vec<QueueRow> = list
                .iter()
                .map(|q| {
                    let (s, p) = queue_sides(q);
                    QueueRow {
                        id: q.id,
                        entity: q.entity_id.to_string(),
                        status: q.status.clone(),
                        server: format!("{s}: {}", content_text(&q.server_side)),
                        pushed: format!("{p}: {}", content_text(&q.pushed_side)),
                    }
                })
                .collect();
            out.table(rows, "no conflicts waiting for review");
        }
        Action::Resolve {
            id: cid,
            ours,
            theirs,
            server,
            pushed,
            merged,
            no_sync,
        } => {
            let resolution =
                match (ours, theirs, server, pushed, merged) {
                    (true, ..) => Resolution::Ours,
                    (_, true, ..) => Resolution::Theirs,
                    (_, _, true, ..) => Resolution::Server,
                    (_, _, _, true, _) => Resolution::Pushed,
                    (_, _, _, _, Some(m)) => Resolution::Merged(merged_content(&m)?),
                    _ => return Err(usage(
                        "choose one: --ours, --theirs, --server, --pushed or --merged FILE_OR_JSON",
                    )),
                };
            let entity = client.resolve_conflict(cid, resolution).await?;
            let synced = if no_sync {
                None
            } else {
                Some(client.sync().await?)
            };
            if out.json {
                out.json(&json!({
                    "conflict": cid,
                    "entity": entity,
                    "synced": synced.as_ref().map(|r| r.is_ok()),
                }))?;
            } else {
                outln!(
                    "conflict {cid} resolved: {} is now version {} (on top of both edits): {}",
                    entity.id,
                    entity.version,
                    Value::Object(entity.content.clone())
                );
                if let Some(r) = &synced {
                    outln!("{}", crate::commands::sync::summary_line(r));
                }
            }
            if let Some(r) = synced {
                if !r.is_ok() {
                    return Ok(if r.is_unreachable() {
                        Exit::Unreachable
                    } else {
                        Exit::SyncErrors
                    });
                }
            }
        }
    }
    Ok(Exit::Ok)
}
