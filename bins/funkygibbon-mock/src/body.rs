//! Request bodies: read under the size limit (after gzip decompression) and the
//! body read timeout, then parsed as the reference does.
//!
//! A body over the limit is answered 413 at once (before reading anything when
//! `Content-Length` already says so), and what the client still sends is read
//! and discarded in the background, up to a bound, so that a client that writes
//! its whole body before reading the answer gets the 413 rather than a reset
//! connection. The answer says `Connection: close`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use inbetweenies_proto::validate::parse_json;
use serde_json::Value;

use crate::error::ApiError;
use crate::pydantic::{item, validation_error, validation_items};
use crate::state::AppState;

/// A request body read in full, at most the configured limit.
#[derive(Debug)]
pub(crate) struct RawBody {
    /// The (decompressed) bytes.
    pub bytes: Bytes,
    /// Whether the content type asks for JSON (absent counts as JSON).
    pub json_content: bool,
}

/// What is read and discarded of a body after its 413, at least (more for limits
/// over 2 MiB: twice the limit), so that a body up to twice the limit still lets
/// the answer through.
const MIN_DISCARD: u64 = 4 * 1024 * 1024;

/// Why a body was refused.
#[derive(Debug)]
pub(crate) enum BodyRejection {
    /// Any refusal but a body too large or too slow.
    Api(ApiError),
    /// 413 or 408: the answer closes the connection.
    Closing(ApiError),
}

impl From<ApiError> for BodyRejection {
    fn from(e: ApiError) -> Self {
        BodyRejection::Api(e)
    }
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> Response {
        match self {
            BodyRejection::Api(e) => e.into_response(),
            BodyRejection::Closing(e) => {
                let mut res = e.into_response();
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                res
            }
        }
    }
}

/// 413, and what the client still sends is read and discarded in the background
/// (at most `max(2 × limit, 4 MiB)` bytes, within the body read timeout) so the
/// answer reaches clients that only read once they have sent everything.
fn too_large(body: Body, limit: usize, timeout: Duration) -> BodyRejection {
    let budget = (limit as u64).saturating_mul(2).max(MIN_DISCARD);
    tokio::spawn(discard(body, budget, timeout));
    BodyRejection::Closing(ApiError::payload_too_large(limit))
}

async fn discard(mut body: Body, budget: u64, timeout: Duration) {
    let mut seen = 0u64;
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len() as u64;
                if seen > budget {
                    break;
                }
            }
        }
    })
    .await;
}

/// 408: the body did not arrive within the body read timeout.
fn too_slow(timeout: Duration) -> BodyRejection {
    let mut e = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        inbetweenies_proto::ErrorCode::InvalidRequest,
        "Request body not received in time",
    );
    e.body.error.message = format!(
        "the request body did not arrive within {} s",
        timeout.as_secs_f64()
    );
    BodyRejection::Closing(e.with_field("body"))
}

/// Reads the whole body, at most `limit` bytes, within `timeout`.
pub(crate) async fn read_limited(
    mut body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, BodyRejection> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(too_slow(timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "cannot read request body");
                return Err(ApiError::bad_request("Invalid request body")
                    .with_field("body")
                    .into());
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(too_large(body, limit, timeout));
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

impl FromRequest<AppState> for RawBody {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, BodyRejection> {
        let limit = state.config.body_limit;
        let timeout = state.config.body_read_timeout;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let compressed = req.headers().contains_key(header::CONTENT_ENCODING);
        if !compressed && declared.is_some_and(|n| n > limit as u64) {
            return Err(too_large(req.into_body(), limit, timeout));
        }
        let json_content = match req.headers().get(header::CONTENT_TYPE) {
            None => true,
            Some(v) => v.to_str().map(is_json_type).unwrap_or(false),
        };
        let bytes = read_limited(req.into_body(), limit, timeout).await?;
        Ok(RawBody {
            bytes,
            json_content,
        })
    }
}

fn is_json_type(ct: &str) -> bool {
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl RawBody {
    /// The body as JSON, with FastAPI's 422 answers for an empty body, invalid JSON
    /// (including invalid UTF-8) and a non-JSON content type.
    pub fn json(&self) -> Result<Value, ApiError> {
        if !self.json_content && !self.bytes.iter().all(u8::is_ascii_whitespace) {
            let text = String::from_utf8_lossy(&self.bytes).into_owned();
            return Err(validation_items(vec![item(
                "model_attributes_type",
                vec![Value::from("body")],
                "Input should be a valid dictionary or object to extract fields from",
                Value::String(text),
            )]));
        }
        parse_json(&self.bytes).map_err(|e| validation_error(&e))
    }

    /// The body as JSON, or `None` when it is empty (for endpoints whose body is optional).
    pub fn json_opt(&self) -> Result<Option<Value>, ApiError> {
        if self.bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(None)
        } else {
            self.json().map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        assert!(is_json_type("application/json"));
        assert!(is_json_type("Application/JSON; charset=utf-8"));
        assert!(is_json_type("application/vnd.api+json"));
        assert!(!is_json_type("text/plain"));
    }
}
