//! `GET /api/v1/sync/merkle?level=L&prefix=P[,P…]`: nodes of the Merkle tree over the
//! latest `(id, version)` rows (PROTOCOL §15.1), for finding which ids differ from a
//! client's mirror in one request per level.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use goodies_store::merkle::{MerkleBelow, MERKLE_DEPTH};
use inbetweenies_conflict::NodeId;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

fn bad(field: &str, message: String) -> ApiError {
    ApiError::bad_request(message).with_field(field)
}

/// The level and the nodes a request names.
fn parse(q: &HashMap<String, String>) -> Result<(u8, Vec<NodeId>), ApiError> {
    let level = match q.get("level").map(|s| s.as_str()) {
        None | Some("") => 0,
        Some(s) => s
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= MERKLE_DEPTH)
            .ok_or_else(|| {
                bad(
                    "level",
                    format!("level must be an integer from 0 to {MERKLE_DEPTH}, got {s:?}"),
                )
            })?,
    };
    let prefixes: Vec<&str> = match q.get("prefix") {
        None if level == 0 => vec![""],
        None => return Err(bad("prefix", format!("level {level} needs a prefix"))),
        Some(p) if level == 0 => vec![p.as_str()],
        Some(p) => p.split(',').collect(),
    };
    if prefixes.len() > goodies_store::merkle::MAX_NODES_PER_REQUEST {
        return Err(bad(
            "prefix",
            format!(
                "at most {} prefixes a request",
                goodies_store::merkle::MAX_NODES_PER_REQUEST
            ),
        ));
    }
    let mut nodes = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        let node = NodeId::from_prefix(p)
            .ok()
            .filter(|n| n.level() == level)
            .ok_or_else(|| {
                bad(
                    "prefix",
                    format!(
                        "prefix {p:?} is not {level} lowercase hex digit(s) naming a node of level {level}"
                    ),
                )
            })?;
        nodes.push(node);
    }
    Ok((level, nodes))
}

/// `GET /api/v1/sync/merkle`.
pub(crate) async fn nodes(
    State(app): State<AppState>,
    _caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (level, nodes) = parse(&q)?;
    let found = app.store.merkle_nodes(level, &nodes).await?;
    let nodes: Vec<Value> = found
        .into_iter()
        .map(|n| match n.below {
            MerkleBelow::Children(children) => json!({
                "prefix": n.node.prefix(),
                "hash": n.hash.to_hex(),
                "children": children.iter().map(|h| h.to_hex()).collect::<Vec<_>>(),
            }),
            MerkleBelow::Rows(rows) => json!({
                "prefix": n.node.prefix(),
                "hash": n.hash.to_hex(),
                "rows": rows
                    .iter()
                    .map(|(id, v)| json!({"id": id, "version": v}))
                    .collect::<Vec<_>>(),
            }),
        })
        .collect();
    Ok(Json(json!({
        "depth": MERKLE_DEPTH,
        "level": level,
        "nodes": nodes,
    })))
}
