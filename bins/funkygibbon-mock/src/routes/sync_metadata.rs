//! `/api/v1/sync-metadata/*`: per-client sync status as the reference keeps it (admin only).
//!
//! Rows live in the store (migration 0003), so they survive restarts and are part of
//! backups. Create takes its fields as query parameters and updates an existing client's
//! row in place; `auth_token` is stored and never answered. See docs/SERVER.md.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::Json;
use goodies_store::{SyncEvent, SyncMetadata};
use inbetweenies_proto::Timestamp;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pydantic::{bad_query_int, item, validation_items};
use crate::state::AppState;

/// Rows listed when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;

/// The longest client id, server URL, token or error text stored.
const MAX_TEXT: usize = 4096;

fn not_found() -> ApiError {
    ApiError::not_found("Sync metadata not found")
}

/// The row as the reference's `to_dict` answers it (no `auth_token`).
fn row_json(m: &SyncMetadata) -> Value {
    json!({
        "id": m.id,
        "client_id": m.client_id,
        "last_sync_time": m.last_sync_time,
        "last_sync_success": m.last_sync_success,
        "last_sync_error": m.last_sync_error,
        "sync_failures": m.sync_failures,
        "total_syncs": m.total_syncs,
        "total_conflicts": m.total_conflicts,
        "server_url": m.server_url,
        "sync_in_progress": m.sync_in_progress,
        "next_retry_time": m.next_retry_time,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    })
}

/// Required query parameters, in order; every missing one is listed in one 422.
fn required<'q>(q: &'q HashMap<String, String>, names: &[&str]) -> Result<Vec<&'q str>, ApiError> {
    let mut items = Vec::new();
    let mut out = Vec::new();
    for name in names {
        match q.get(*name) {
            Some(v) if v.len() > MAX_TEXT => items.push(item(
                "string_too_long",
                vec![Value::from("query"), Value::from(*name)],
                format!("String should have at most {MAX_TEXT} characters"),
                Value::from(v.as_str()),
            )),
            Some(v) => out.push(v.as_str()),
            None => items.push(item(
                "missing",
                vec![Value::from("query"), Value::from(*name)],
                "Field required",
                Value::Null,
            )),
        }
    }
    if items.is_empty() {
        Ok(out)
    } else {
        Err(validation_items(items))
    }
}

/// `GET /api/v1/sync-metadata/?limit=`: every row in id order, at most `limit` (default 100).
pub(crate) async fn list(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let limit = match q.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .map_err(|_| bad_query_int("limit", raw))?,
    };
    let rows = app.store.sync_metadata_list(limit).await?;
    Ok(Json(Value::Array(rows.iter().map(row_json).collect())))
}

/// `POST /api/v1/sync-metadata/?client_id=&server_url=&auth_token=`: create, or update in place.
pub(crate) async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let fields = required(&q, &["client_id", "server_url", "auth_token"])?;
    let row = app
        .store
        .upsert_sync_metadata(fields[0], fields[1], fields[2])
        .await?;
    Ok(Json(row_json(&row)))
}

/// `GET /api/v1/sync-metadata/{client_id}`.
pub(crate) async fn get(
    State(app): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let row = app
        .store
        .sync_metadata(&client_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(row_json(&row)))
}

/// `DELETE /api/v1/sync-metadata/{client_id}`: 200 `{"status": "deleted", "client_id"}`.
pub(crate) async fn delete(
    State(app): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    if !app.store.delete_sync_metadata(&client_id).await? {
        return Err(not_found());
    }
    Ok(Json(json!({"status": "deleted", "client_id": client_id})))
}

/// `GET /api/v1/sync-metadata/{client_id}/status`: the status under the reference's other
/// field names; a client without a row gets zero defaults and no `next_retry` key.
pub(crate) async fn status(
    State(app): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let Some(m) = app.store.sync_metadata(&client_id).await? else {
        return Ok(Json(json!({
            "client_id": client_id,
            "last_sync": null,
            "last_success": null,
            "sync_failures": 0,
            "total_syncs": 0,
            "total_conflicts": 0,
            "sync_in_progress": false,
            "last_error": null,
        })));
    };
    Ok(Json(json!({
        "client_id": m.client_id,
        "last_sync": m.last_sync_time,
        "last_success": m.last_sync_success,
        "sync_failures": m.sync_failures,
        "total_syncs": m.total_syncs,
        "total_conflicts": m.total_conflicts,
        "sync_in_progress": m.sync_in_progress,
        "last_error": m.last_sync_error,
        "next_retry": m.next_retry_time,
    })))
}

/// `POST /api/v1/sync-metadata/{client_id}/sync-start`.
pub(crate) async fn sync_start(
    State(app): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    record_event(&app, &caller, client_id, SyncEvent::Start, "sync_started").await
}

/// `POST /api/v1/sync-metadata/{client_id}/sync-success`.
pub(crate) async fn sync_success(
    State(app): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    record_event(&app, &caller, client_id, SyncEvent::Success, "sync_success").await
}

/// Records `event` for a known client (404 otherwise) and answers `{status, client_id}`.
async fn record_event(
    app: &AppState,
    caller: &Caller,
    client_id: String,
    event: SyncEvent,
    status: &str,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    app.store
        .record_sync_event(&client_id, event)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!({"status": status, "client_id": client_id})))
}

/// `POST /api/v1/sync-metadata/{client_id}/sync-failure?error=&next_retry=`: an unparseable
/// `next_retry` is a 422 naming it (the reference crashed with a 500) and records nothing.
pub(crate) async fn sync_failure(
    State(app): State<AppState>,
    caller: Caller,
    Path(client_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let error = required(&q, &["error"])?[0].to_owned();
    let next_retry = match q.get("next_retry") {
        None => None,
        Some(raw) => Some(Timestamp::parse(raw).map_err(|_| {
            validation_items(vec![item(
                "datetime_from_date_parsing",
                vec![Value::from("query"), Value::from("next_retry")],
                "Input should be a valid datetime or date",
                Value::from(raw.as_str()),
            )])
        })?),
    };
    let row = app
        .store
        .record_sync_event(&client_id, SyncEvent::Failure { error, next_retry })
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(json!({
        "status": "sync_failure",
        "client_id": client_id,
        "next_retry": row.next_retry_time,
    })))
}
