//! The seeds' five-step flow on the same engine: `/api/v1/sync/request`, `/push`, `/ack`.

use std::collections::HashMap;

use axum::extract::State;
use axum::Json;
use goodies_store::{ChangeQuery, ChangeRecord, EntityOutcome, PushBatch};
use inbetweenies_proto::flow::{
    FlowApplied, FlowChange, FlowConflict, FlowData, FlowMessage, FlowSyncAck, FlowSyncDelta,
    FlowSyncPush, FlowSyncRequest, FlowSyncResult,
};
use inbetweenies_proto::{
    ChangeType, Cursor, Entity, EntityId, SyncChange, Version, PROTOCOL_VERSION,
};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::body::RawBody;
use crate::error::ApiError;
use crate::pydantic::{
    body_loc, enum_item, item, item_ctx, string_items, validation_items, Fields, Rule,
};
use crate::routes::sync::{ack_rows, check_types, known_entity_types, parse_sync_request, AckRows};
use crate::snapshot::{Capabilities, PageSpec};
use crate::state::AppState;

/// Checks the `type` tag (optional), the required key strings (`client_id`:
/// present, and as a sync request's `device_id` is, free of U+0000 and within
/// the cap) and the selecting values that may hold no U+0000, then reads the message.
fn parse_flow<T: DeserializeOwned>(
    mut value: Value,
    tag: &str,
    required: &[&str],
    nul_free: &[&str],
) -> Result<T, ApiError> {
    {
        let mut f = Fields::new(&value)?;
        for key in required {
            f.req_str(&[key], 1);
        }
        let checked = required
            .iter()
            .map(|k| (*k, Rule::Key))
            .chain(nul_free.iter().map(|k| (*k, Rule::NulFree)))
            .filter_map(|(k, rule)| value.get(k).filter(|v| !v.is_null()).map(|v| (k, v, rule)));
        f.errors.extend(string_items("body", checked));
        if let Some(t) = value.get("type").filter(|t| !t.is_null()) {
            if t.as_str() != Some(tag) {
                f.errors.push(item_ctx(
                    "literal_error",
                    body_loc(&[Value::from("type")]),
                    format!("Input should be '{tag}'"),
                    t.clone(),
                    json!({"expected": format!("'{tag}'")}),
                ));
            }
        }
        f.finish()?;
    }
    if let Some(obj) = value.as_object_mut() {
        obj.remove("type");
    }
    serde_json::from_value::<T>(value.clone()).map_err(|e| {
        validation_items(vec![item(
            "value_error",
            vec![Value::from("body")],
            format!("Value error, {e}"),
            value,
        )])
    })
}

fn to_value(msg: &FlowMessage) -> Result<Json<Value>, ApiError> {
    serde_json::to_value(msg)
        .map(Json)
        .map_err(|e| ApiError::internal(&e))
}

/// Step 1 → 2: `sync_request` → `sync_delta` (entities changed since `last_sync`, paged).
#[tracing::instrument(name = "sync_request", skip_all, fields(client_id = tracing::field::Empty))]
pub(crate) async fn request(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let req: FlowSyncRequest = parse_flow(
        body.json()?,
        "sync_request",
        &["client_id"],
        &["entity_types"],
    )?;
    tracing::Span::current().record("client_id", req.client_id.as_str());
    app.auth
        .claim_device(app.store.as_ref(), &req.client_id, &caller.0.sub)
        .await?;
    // Unknown entity types are counted and matched verbatim, or refused in strict mode.
    if let (false, Some(types)) = (app.config.strict, &req.entity_types) {
        app.unknown_values.record_filter(types);
    }
    if app.config.strict {
        if let Some(types) = &req.entity_types {
            let ets = known_entity_types();
            let items: Vec<Value> = types
                .iter()
                .enumerate()
                .filter(|(_, t)| !t.is_known())
                .map(|(i, t)| {
                    enum_item(
                        body_loc(&[Value::from("entity_types"), Value::from(i)]),
                        &ets,
                        Value::from(t.as_str()),
                    )
                })
                .collect();
            if !items.is_empty() {
                return Err(validation_items(items));
            }
        }
    }
    let after_seq = req
        .cursor
        .as_ref()
        .map(Cursor::seq)
        .transpose()
        .map_err(|e| crate::routes::sync::bad_cursor(&e.0))?;
    if let Some(seq) = after_seq {
        crate::routes::sync::check_cursor_issued(&app, seq).await?;
    }
    let since = if after_seq.is_none() {
        req.last_sync
    } else {
        None
    };
    crate::routes::backup::refuse_pre_restore_position(&app, after_seq, since).await?;
    let query = ChangeQuery {
        after_seq,
        since: if after_seq.is_none() {
            req.last_sync
        } else {
            None
        },
        entity_types: req.entity_types.clone(),
        modified_by: None,
        include_entities: true,
        include_relationships: false,
        limit: app.config.page_size,
    };
    // Entities only, counted as entities, for every client: the flow has no relationship
    // rows and takes no capability declaration (PROTOCOL §10.1).
    let spec = PageSpec {
        query,
        caps: Capabilities::NONE,
    };
    let snap = crate::snapshot::read(&app, &spec).await?;
    let (page, state_digest) = (snap.page, snap.digest);
    if let Err(e) = app.store.record_sync(&req.client_id).await {
        tracing::warn!(error = %crate::error::error_chain(&e), "cannot record the device's sync");
    }
    let changes = page
        .records
        .iter()
        .filter_map(|r| match r {
            ChangeRecord::Entity(se) => Some(&se.entity),
            ChangeRecord::Relationship(_) => None,
        })
        .filter(|e| req.include_deleted || !e.is_deleted())
        .map(flow_change)
        .collect();
    to_value(&FlowMessage::SyncDelta(FlowSyncDelta {
        server_time: page.server_time,
        changes,
        conflicts: Vec::new(),
        more: page.next_after_seq.is_some(),
        cursor: page.next_after_seq.map(Cursor::from_seq),
        state_digest: Some(state_digest),
    }))
}

/// The five-step form of an entity version (PROTOCOL §10.2).
fn flow_change(e: &Entity) -> FlowChange {
    FlowChange {
        entity_type: e.entity_type.clone(),
        entity_id: e.id.clone(),
        operation: if e.is_deleted() {
            ChangeType::Delete
        } else {
            ChangeType::Update
        },
        data: FlowData {
            name: e.name.clone(),
            content: e.content.clone(),
            source_type: e.source_type.clone(),
            user_id: e.user_id.clone(),
            parent_versions: e.parent_versions.clone(),
            updated_at: Some(e.updated_at),
        },
        updated_at: e.updated_at,
        sync_id: e.version.clone(),
    }
}

/// An entity object with the `sync_id` key the five-step flow reads (PROTOCOL §10.4).
fn with_sync_id(mut v: Value, version: &Version) -> Value {
    if let Some(m) = v.as_object_mut() {
        m.insert("sync_id".into(), Value::from(version.as_str()));
    }
    v
}

fn resolution_word(local: &Version, remote: &Version, resolved: &Version, reason: &str) -> String {
    if reason == "manual" {
        "manual"
    } else if resolved == remote {
        "client_wins"
    } else if resolved == local {
        "server_wins"
    } else {
        "merged"
    }
    .to_owned()
}

/// Validates pushed changes exactly as `POST /api/v1/sync/` does (one path: the same
/// request validation and type checks), answering with the same status and error code;
/// the `loc` of each detail item names the five-step message's own fields.
fn validate_as_sync(
    app: &AppState,
    client_id: &str,
    user_id: &str,
    changes: Vec<SyncChange>,
) -> Result<Vec<SyncChange>, ApiError> {
    let value = json!({
        "protocol_version": PROTOCOL_VERSION,
        "device_id": client_id,
        "user_id": user_id,
        "sync_type": "delta",
        "changes": changes,
    });
    let checked = parse_sync_request(app, value).inspect(|req| check_types(app, req));
    match checked {
        Ok(req) => Ok(req.changes),
        Err(e) if e.status == axum::http::StatusCode::UNPROCESSABLE_ENTITY => {
            match e.body.detail.as_ref().and_then(Value::as_array) {
                Some(items) => Err(validation_items(
                    items.iter().cloned().map(flow_loc).collect(),
                )),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// A detail item's `loc` in a sync request, rewritten to the five-step push's field names.
fn flow_loc(mut item: Value) -> Value {
    let Some(loc) = item.get("loc").and_then(Value::as_array) else {
        return item;
    };
    let name = |v: &Value| v.as_str().map(str::to_owned);
    let mut out: Vec<Value> = Vec::with_capacity(loc.len() + 1);
    match loc.get(1).and_then(name).as_deref() {
        Some("changes") if loc.len() > 3 => {
            out.extend_from_slice(&loc[..3]);
            match (loc[3].as_str(), loc.get(4).and_then(name).as_deref()) {
                (Some("change_type"), _) => out.push(Value::from("operation")),
                (Some("entity"), Some("id")) => out.push(Value::from("entity_id")),
                (Some("entity"), Some("version")) => out.push(Value::from("client_sync_id")),
                (Some("entity"), Some("entity_type")) => out.push(Value::from("entity_type")),
                (Some("entity"), Some(_)) => {
                    out.push(Value::from("data"));
                    out.extend_from_slice(&loc[4..]);
                }
                _ => out.extend_from_slice(&loc[3..]),
            }
            if out.len() == 4 {
                out.extend_from_slice(loc.get(5..).unwrap_or_default());
            }
        }
        Some("device_id") => {
            out.push(loc[0].clone());
            out.push(Value::from("client_id"));
        }
        _ => return item,
    }
    item["loc"] = Value::Array(out);
    item
}

/// Step 3 → 4: `sync_push` → `sync_result` (one transaction, conflicts decided by the server).
#[tracing::instrument(name = "sync_push", skip_all, fields(client_id = tracing::field::Empty, pushed = tracing::field::Empty))]
pub(crate) async fn push(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let req: FlowSyncPush = parse_flow(body.json()?, "sync_push", &["client_id"], &[])?;
    let span = tracing::Span::current();
    span.record("client_id", req.client_id.as_str());
    span.record("pushed", req.changes.len());
    let user_id = req.user_id.clone().unwrap_or_else(|| caller.0.sub.clone());
    let changes: Vec<SyncChange> = req
        .changes
        .iter()
        .map(|c| {
            let mut e = c.to_entity_change();
            if e.user_id.is_empty() {
                e.user_id = user_id.clone();
            }
            SyncChange {
                change_type: c.operation,
                entity: Some(e),
                relationships: Vec::new(),
            }
        })
        .collect();
    let changes = validate_as_sync(&app, &req.client_id, &user_id, changes)?;
    caller.require_write()?;
    let pushed_at = std::time::Instant::now();
    let outcome = app
        .store
        .apply_push(PushBatch {
            device_id: req.client_id.clone(),
            user_id,
            changes: changes.clone(),
        })
        .await?;
    // Counted as a `POST /api/v1/sync/` push is (docs/SERVER.md "Metrics").
    app.metrics.store_time("apply_push", pushed_at);
    app.metrics.push_batch(changes.len());
    for c in &outcome.conflicts {
        app.metrics
            .conflict(crate::metrics::conflict_reason(c.reason.as_deref()));
    }
    // What an acknowledgement carries (PROTOCOL §6.7, §10.4), read after the commit.
    // A five-step client confirms by `applied` (its `client_sync_id`s), so only the
    // superseded ids' rows are carried.
    let superseded = ack_rows(app.store.as_ref(), &changes, &outcome, AckRows::Superseded).await?;
    let latest: HashMap<&EntityId, &Version> = req
        .changes
        .iter()
        .map(|c| (&c.entity_id, &c.client_sync_id))
        .chain(superseded.iter().map(|e| (&e.id, &e.version)))
        .collect();
    let mut applied = Vec::new();
    for (change, (id, result)) in req.changes.iter().zip(&outcome.entity_outcomes) {
        let status = match result {
            EntityOutcome::NotAcked(_) => "rejected",
            EntityOutcome::Won
            | EntityOutcome::Lost
            | EntityOutcome::Merged(_)
            | EntityOutcome::Queued => "conflict",
            _ => "applied",
        };
        let id: &EntityId = id.as_ref().unwrap_or(&change.entity_id);
        let server_sync_id = match (result, latest.get(id)) {
            (EntityOutcome::NotAcked(_), _) | (_, None) => app
                .store
                .entity(id)
                .await?
                .map(|e| e.version)
                .unwrap_or_else(|| change.client_sync_id.clone()),
            (_, Some(v)) => (*v).clone(),
        };
        applied.push(FlowApplied {
            client_sync_id: change.client_sync_id.clone(),
            server_sync_id,
            status: status.to_owned(),
        });
    }
    let mut conflicts = Vec::new();
    for ci in &outcome.conflicts {
        let reason = ci
            .reason
            .clone()
            .unwrap_or_else(|| "newer_on_server".into());
        let server_version = match app
            .store
            .entity_version(&ci.entity_id, &ci.local_version)
            .await?
        {
            Some(e) => with_sync_id(
                serde_json::to_value(&e).map_err(|e| ApiError::internal(&e))?,
                &ci.local_version,
            ),
            None => json!({"sync_id": ci.local_version}),
        };
        let pushed = req
            .changes
            .iter()
            .find(|c| c.entity_id == ci.entity_id && c.client_sync_id == ci.remote_version);
        let client_version = match pushed {
            Some(c) => with_sync_id(
                serde_json::to_value(c.to_entity_change()).map_err(|e| ApiError::internal(&e))?,
                &ci.remote_version,
            ),
            None => json!({"sync_id": ci.remote_version}),
        };
        conflicts.push(FlowConflict {
            entity_type: pushed
                .map(|c| c.entity_type.clone())
                .unwrap_or(inbetweenies_proto::EntityType::Other(String::new())),
            entity_id: ci.entity_id.clone(),
            resolution: resolution_word(
                &ci.local_version,
                &ci.remote_version,
                &ci.resolved_version,
                &reason,
            ),
            reason,
            server_version,
            client_version,
        });
    }
    to_value(&FlowMessage::SyncResult(FlowSyncResult {
        applied,
        conflicts,
        changes: superseded.iter().map(flow_change).collect(),
    }))
}

/// Step 5: `sync_ack` records the client's confirmed watermark (shown by `/api/v1/sync/status`).
pub(crate) async fn ack(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let ack: FlowSyncAck = parse_flow(body.json()?, "sync_ack", &["client_id"], &[])?;
    // A token confirms only its own device's watermark (the device it synced as).
    if !app
        .auth
        .owns_device(app.store.as_ref(), &caller.0, &ack.client_id)
        .await?
    {
        return Err(ApiError::forbidden(
            "This token may only acknowledge its own device's sync",
        ));
    }
    app.store
        .record_ack(&ack.client_id, ack.sync_completed_at)
        .await?;
    tracing::info!(client_id = %ack.client_id, watermark = %ack.sync_completed_at, "sync acknowledged");
    Ok(Json(json!({
        "status": "ok",
        "client_id": ack.client_id,
        "last_ack": ack.sync_completed_at,
    })))
}
