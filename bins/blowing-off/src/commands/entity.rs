//! `entity list|show|history|search`: the graph, any entity type.

use clap::Subcommand;
use goodies_client::{BlowingOffClient, ClientError, Direction, Entity, EntityQuery, EntityType};
use serde_json::json;
use tabled::Tabled;

use crate::commands::id;
use crate::exit::Exit;
use crate::output::{compact, Out};

/// Arguments of `entity`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  blowing-off entity list --type note\n  blowing-off entity history ENTITY_ID"
)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: EntityCommand,
}

/// `entity` subcommands.
#[derive(Debug, Subcommand)]
pub enum EntityCommand {
    /// List live entities.
    #[command(
        after_help = "Examples:\n  blowing-off entity list --type note\n  blowing-off entity list --deleted --json"
    )]
    List {
        /// Only this type (home, room, device, note, …).
        #[arg(long = "type")]
        entity_type: Option<String>,
        /// Include deleted entities.
        #[arg(long)]
        deleted: bool,
    },
    /// Show an entity with its relationships.
    #[command(after_help = "Example:\n  blowing-off entity show ENTITY_ID")]
    Show {
        /// The entity (id).
        id: String,
    },
    /// Every stored version of an entity.
    #[command(after_help = "Example:\n  blowing-off entity history ENTITY_ID --json")]
    History {
        /// The entity (id).
        id: String,
    },
    /// Entities whose name contains TEXT (case-insensitive).
    #[command(after_help = "Example:\n  blowing-off entity search lamp")]
    Search {
        /// The text.
        text: String,
    },
}

#[derive(Tabled)]
struct EntityRow {
    id: String,
    #[tabled(rename = "type")]
    entity_type: String,
    name: String,
    content: String,
    version: String,
}

fn row(e: &Entity) -> EntityRow {
    let mut name = e.name.clone();
    if e.is_deleted() {
        name.push_str(" (deleted)");
    }
    EntityRow {
        id: e.id.to_string(),
        entity_type: e.entity_type.to_string(),
        name,
        content: compact(&e.content, 50),
        version: e.version.to_string(),
    }
}

#[derive(Tabled)]
struct VersionRow {
    version: String,
    name: String,
    content: String,
    parents: String,
    latest: String,
    received: String,
}

/// Runs `entity`.
pub async fn run(client: &BlowingOffClient, out: Out, a: Args) -> anyhow::Result<Exit> {
    match a.command {
        EntityCommand::List {
            entity_type,
            deleted,
        } => {
            let list = client
                .entities(&EntityQuery {
                    entity_types: entity_type.map(|t| vec![EntityType::parse(&t)]),
                    include_deleted: deleted,
                    ..EntityQuery::default()
                })
                .await?;
            if out.json {
                out.json(&list)?;
            } else {
                out.table(list.iter().map(row).collect(), "no entities");
            }
        }
        EntityCommand::Search { text } => {
            let list = client.search(&text).await?;
            if out.json {
                out.json(&list)?;
            } else {
                out.table(list.iter().map(row).collect(), "nothing found");
            }
        }
        EntityCommand::Show { id: eid } => {
            let eid = id(&eid);
            let e = client
                .entity(&eid)
                .await?
                .ok_or_else(|| ClientError::NotFound(format!("entity {eid}")))?;
            let edges = client.neighbours(&eid, None, Direction::Both).await?;
            if out.json {
                let rels: Vec<_> = edges
                    .iter()
                    .map(|n| json!({"relationship": n.relationship, "entity": {"id": n.entity.id, "name": n.entity.name, "entity_type": n.entity.entity_type}}))
                    .collect();
                out.json(&json!({"entity": e, "relationships": rels}))?;
            } else {
                out.pairs(vec![
                    ("id", e.id.to_string()),
                    ("type", e.entity_type.to_string()),
                    ("name", e.name.clone()),
                    ("content", compact(&e.content, 200)),
                    ("deleted", e.is_deleted().to_string()),
                    ("version", e.version.to_string()),
                    (
                        "parents",
                        e.parent_versions
                            .iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    ),
                    ("source", e.source_type.to_string()),
                    ("user", e.user_id.clone()),
                    ("updated", e.updated_at.to_string()),
                ]);
                for n in &edges {
                    let (arrow, other) = if n.relationship.from_entity_id == eid {
                        ("->", &n.relationship.to_entity_id)
                    } else {
                        ("<-", &n.relationship.from_entity_id)
                    };
                    outln!(
                        "{arrow} {} {} ({} {})",
                        n.relationship.relationship_type,
                        other,
                        n.entity.entity_type,
                        n.entity.name
                    );
                }
            }
        }
        EntityCommand::History { id: eid } => {
            let eid = id(&eid);
            let versions = client.history(&eid).await?;
            if versions.is_empty() {
                return Err(ClientError::NotFound(format!("entity {eid}")).into());
            }
            if out.json {
                let list: Vec<_> = versions
                    .iter()
                    .map(|v| json!({"entity": v.entity, "latest": v.latest, "received_at": v.received_at}))
                    .collect();
                out.json(&list)?;
            } else {
                out.table(
                    versions
                        .iter()
                        .map(|v| VersionRow {
                            version: v.entity.version.to_string(),
                            name: v.entity.name.clone(),
                            content: serde_json::Value::Object(v.entity.content.clone())
                                .to_string(),
                            parents: v.entity.parent_versions.len().to_string(),
                            latest: if v.latest { "yes" } else { "" }.to_owned(),
                            received: v.received_at.to_string(),
                        })
                        .collect(),
                    "no versions",
                );
            }
        }
    }
    Ok(Exit::Ok)
}
