//! `/api/v1/admin/*` (admin token only): the fault injection in force, read and changed
//! while the server runs.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::body::RawBody;
use crate::error::ApiError;
use crate::state::AppState;

fn faults_answer(app: &AppState) -> Json<Value> {
    let f = app.faults.current();
    Json(json!({
        "active": f.is_active(),
        "faults": f.to_json(),
        "injected": app.faults.counts_json(),
    }))
}

/// `GET /api/v1/admin/faults`: the faults in force and how many of each were injected.
pub(crate) async fn get_faults(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    Ok(faults_answer(&app))
}

/// `PUT /api/v1/admin/faults` with some of the settings' keys: those given replace
/// the ones in force from the next request on (a new `seed` starts the decisions
/// over); the others stay. Answers as `GET`.
pub(crate) async fn put_faults(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let v = body.json()?;
    let new = app
        .faults
        .current()
        .apply_json(&v)
        .map_err(|(field, why)| {
            ApiError::validation(
                json!([{"type": "value_error", "loc": ["body", field], "msg": format!("{field} {why}"), "input": v.get(&field)}]),
                format!("{field} {why}"),
                Some(field),
            )
        })?;
    app.faults.set(new);
    Ok(faults_answer(&app))
}
