//! `relate FROM TYPE TO`, `search QUERY [--type]` and `stats`: the graph beyond the typed
//! commands.

use goodies_client::{
    BlowingOffClient, ClientError, Entity, EntityQuery, EntityType, JsonObject, RelationshipType,
};
use serde_json::{json, Value};
use tabled::Tabled;

use crate::commands::id;
use crate::exit::{usage, Exit};
use crate::output::{compact, Out};

/// Arguments of `relate`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  blowing-off relate DEVICE_ID controlled_by_app APP_ID
  blowing-off relate NOTE_ID documented_by MANUAL_ID --properties '{\"page\": 4}'")]
pub struct RelateArgs {
    /// The entity the edge starts at (id).
    pub from: String,
    /// What the edge means: located_in, controls, connects_to, part_of, manages,
    /// documented_by, procedure_for, triggered_by, depends_on, contained_in, monitors,
    /// automates, controlled_by_app, has_blob (others are kept as given).
    #[arg(value_name = "TYPE")]
    pub relationship_type: String,
    /// The entity the edge ends at (id).
    pub to: String,
    /// The edge's properties, a JSON object.
    #[arg(long, value_name = "JSON")]
    pub properties: Option<String>,
}

/// Arguments of `search`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  blowing-off search lamp
  blowing-off search kitchen --type room --json")]
pub struct SearchArgs {
    /// Text the name must contain (case-insensitive).
    pub query: String,
    /// Only entities of this type (home, room, device, note, …).
    #[arg(long = "type")]
    pub entity_type: Option<String>,
}

/// A JSON object from the command line.
pub fn json_arg(what: &str, text: &str) -> anyhow::Result<JsonObject> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(usage(format!(
            "{what} must be a JSON object, e.g. '{{\"k\": 1}}'"
        ))),
        Err(e) => Err(usage(format!("{what} is not valid JSON: {e}"))),
    }
}

async fn live(client: &BlowingOffClient, raw: &str) -> anyhow::Result<Entity> {
    let eid = id(raw);
    match client.entity(&eid).await? {
        Some(e) if !e.is_deleted() => Ok(e),
        _ => Err(ClientError::NotFound(format!("entity {eid}")).into()),
    }
}

/// Runs `relate`.
pub async fn relate(client: &BlowingOffClient, out: Out, a: RelateArgs) -> anyhow::Result<Exit> {
    let kind = a.relationship_type.trim();
    if kind.is_empty() {
        return Err(usage("the relationship type must not be empty"));
    }
    let properties = match &a.properties {
        Some(p) => json_arg("--properties", p)?,
        None => JsonObject::new(),
    };
    let from = live(client, &a.from).await?;
    let to = live(client, &a.to).await?;
    let rel = client
        .relate(&from.id, &to.id, RelationshipType::parse(kind), properties)
        .await?;
    if out.json {
        out.json(&rel)?;
    } else {
        outln!(
            "related {} {} -{}-> {} {} ({})",
            from.entity_type,
            from.name,
            rel.relationship_type,
            to.entity_type,
            to.name,
            rel.id
        );
    }
    Ok(Exit::Ok)
}

#[derive(Tabled)]
struct Found {
    #[tabled(rename = "type")]
    entity_type: String,
    name: String,
    content: String,
    id: String,
}

/// Runs `search`.
pub async fn search(client: &BlowingOffClient, out: Out, a: SearchArgs) -> anyhow::Result<Exit> {
    let list = client
        .entities(&EntityQuery {
            name_contains: Some(a.query.clone()),
            entity_types: a.entity_type.as_deref().map(|t| vec![EntityType::parse(t)]),
            ..EntityQuery::default()
        })
        .await?;
    if out.json {
        out.json(&list)?;
    } else {
        out.table(
            list.iter()
                .map(|e| Found {
                    entity_type: e.entity_type.to_string(),
                    name: e.name.clone(),
                    content: compact(&e.content, 60),
                    id: e.id.to_string(),
                })
                .collect(),
            &format!("nothing matches {:?}", a.query),
        );
    }
    Ok(Exit::Ok)
}

/// Runs `stats`.
pub async fn stats(client: &BlowingOffClient, out: Out) -> anyhow::Result<Exit> {
    let s = client.stats().await?;
    let pending = client.pending_changes().await?;
    if out.json {
        let by_type = |v: &[(String, u64)]| {
            Value::Object(v.iter().map(|(k, n)| (k.clone(), json!(n))).collect())
        };
        let entities: Vec<(String, u64)> = s
            .entities_by_type
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect();
        let rels: Vec<(String, u64)> = s
            .relationships_by_type
            .iter()
            .map(|(t, n)| (t.to_string(), *n))
            .collect();
        out.json(&json!({
            "entities": s.entities,
            "entity_versions": s.entity_versions,
            "relationships": s.relationships,
            "entities_by_type": by_type(&entities),
            "relationships_by_type": by_type(&rels),
            "pending_changes": pending,
        }))?;
        return Ok(Exit::Ok);
    }
    let mut pairs = vec![
        ("entities", s.entities.to_string()),
        ("versions", s.entity_versions.to_string()),
        ("relationships", s.relationships.to_string()),
        ("pending changes", pending.to_string()),
    ];
    let entities = s
        .entities_by_type
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let rels = s
        .relationships_by_type
        .iter()
        .map(|(t, n)| format!("{t} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    pairs.push(("entities by type", entities));
    pairs.push(("relationships by type", rels));
    out.pairs(pairs);
    Ok(Exit::Ok)
}
