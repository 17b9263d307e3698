//! `/`, `/health` and the answer for unknown paths.

use axum::Json;
use inbetweenies_proto::PROTOCOL_VERSION;
use serde_json::{json, Value};

use crate::error::ApiError;

/// `GET /`: what this server is.
pub(crate) async fn root() -> Json<Value> {
    Json(json!({
        "name": "FunkyGibbon",
        "implementation": "funkygibbon-mock",
        "version": env!("CARGO_PKG_VERSION"),
        "protocol_version": PROTOCOL_VERSION,
    }))
}

/// `GET /health`.
pub(crate) async fn health() -> Json<Value> {
    Json(json!({"status": "healthy"}))
}

/// Any unknown path: 404 `{"detail": "Not Found"}`.
pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}
