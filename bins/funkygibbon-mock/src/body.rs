//! Request bodies: read under the size limit (after gzip decompression), then parsed as the reference does.

use axum::extract::{FromRequest, Request};
use axum::http::header;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use inbetweenies_proto::codec::{self, SIGNATURE_HEADER};
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

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.config.body_limit;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let compressed = req.headers().contains_key(header::CONTENT_ENCODING);
        if !compressed && declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::payload_too_large(limit));
        }
        let signature = req
            .headers()
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let json_content = match req.headers().get(header::CONTENT_TYPE) {
            None => true,
            Some(v) => v.to_str().map(is_json_type).unwrap_or(false),
        };
        let bytes = Limited::new(req.into_body(), limit)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    ApiError::payload_too_large(limit)
                } else {
                    tracing::debug!(error = %e, "cannot read request body");
                    ApiError::bad_request("Invalid request body").with_field("body")
                }
            })?
            .to_bytes();
        if let Some(key) = &state.config.hmac_key {
            verify_signature(key, &signature, &bytes)?;
        }
        Ok(RawBody {
            bytes,
            json_content,
        })
    }
}

/// 401 unless a non-empty body carries a valid signature (PROTOCOL §2.4).
fn verify_signature(key: &str, signature: &Option<String>, body: &[u8]) -> Result<(), ApiError> {
    if body.is_empty() {
        return Ok(());
    }
    let ok = signature
        .as_deref()
        .is_some_and(|sig| codec::verify(key.as_bytes(), body, sig.trim()).is_ok());
    if ok {
        Ok(())
    } else {
        let mut e = ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            inbetweenies_proto::ErrorCode::Unauthorized,
            "Invalid or missing message signature",
        );
        e.body.error.field = Some(SIGNATURE_HEADER.to_owned());
        Err(e)
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
