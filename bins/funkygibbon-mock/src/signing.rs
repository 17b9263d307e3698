//! Signed messages (PROTOCOL §2.6): with a shared key configured, every request
//! (but `/`, `/health`, `/metrics` and CORS preflights) carries an HMAC-SHA256 over
//! its method, path, query, a timestamp, a nonce and its body; a request outside
//! the time window, or whose nonce was seen before, is refused. Answers are signed
//! over their status, the request's nonce, a timestamp and their body.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use inbetweenies_proto::codec::SIGNATURE_HEADER;
use inbetweenies_proto::ErrorCode;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// The header with the signing time, whole seconds since the Unix epoch.
pub const TIMESTAMP_HEADER: &str = "x-inbetweenies-timestamp";
/// The header with the request's nonce: 16 to 128 characters of `A-Z a-z 0-9 - _ . ~`.
pub const NONCE_HEADER: &str = "x-inbetweenies-nonce";
/// The first line of a request's signed string.
pub const REQUEST_SCHEME: &str = "INBETWEENIES-HMAC-SHA256";
/// The first line of an answer's signed string.
pub const RESPONSE_SCHEME: &str = "INBETWEENIES-HMAC-SHA256-RESPONSE";
/// The default window: a request signed more than this far from the server's clock
/// (either way) is refused.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// The default number of nonces remembered (each for as long as its request's
/// timestamp stays in the window).
pub const DEFAULT_REPLAY_CACHE: usize = 100_000;

type HmacSha256 = Hmac<Sha256>;

/// The lowercase hex SHA-256 of a body.
pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The string a request's signature covers (PROTOCOL §2.6): seven lines joined by
/// `\n`, no newline at the end.
pub fn request_string(
    method: &str,
    path: &str,
    query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> String {
    format!(
        "{REQUEST_SCHEME}\n{method}\n{path}\n{query}\n{timestamp}\n{nonce}\n{}",
        body_hash(body)
    )
}

/// The string an answer's signature covers (PROTOCOL §2.6).
pub fn response_string(status: u16, nonce: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "{RESPONSE_SCHEME}\n{status}\n{nonce}\n{timestamp}\n{}",
        body_hash(body)
    )
}

/// Lowercase hex HMAC-SHA256 of a signed string.
pub fn sign_string(key: &[u8], string: &str) -> String {
    hex::encode(mac(key, string).finalize().into_bytes())
}

fn mac(key: &[u8], string: &str) -> HmacSha256 {
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC-SHA256 takes keys of any length"),
    };
    m.update(string.as_bytes());
    m
}

fn verify_string(key: &[u8], string: &str, signature_hex: &str) -> bool {
    match hex::decode(signature_hex.trim()) {
        Ok(sig) => mac(key, string).verify_slice(&sig).is_ok(),
        Err(_) => false,
    }
}

fn now_secs() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Nonces seen, each kept until its request's timestamp leaves the window.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    seen: Mutex<Seen>,
    capacity: usize,
}

#[derive(Debug)]
struct Seen {
    expiry: HashMap<String, i64>,
    last_prune: Option<Instant>,
}

/// Why a nonce was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NonceRefusal {
    Replayed,
    Full,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            seen: Mutex::new(Seen {
                expiry: HashMap::new(),
                last_prune: None,
            }),
            capacity: capacity.max(1),
        }
    }

    /// Remembers `nonce` until `expires` (Unix seconds); refuses one seen before, or any
    /// when the cache is full of nonces still in their window.
    pub fn admit(&self, nonce: &str, expires: i64, now: i64) -> Result<(), NonceRefusal> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&exp) = seen.expiry.get(nonce) {
            if exp >= now {
                return Err(NonceRefusal::Replayed);
            }
        }
        if seen.expiry.len() >= self.capacity {
            // At most one sweep a second, so a full cache costs little per refusal.
            let due = seen
                .last_prune
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if due {
                seen.expiry.retain(|_, exp| *exp >= now);
                seen.last_prune = Some(Instant::now());
            }
            if seen.expiry.len() >= self.capacity {
                return Err(NonceRefusal::Full);
            }
        }
        seen.expiry.insert(nonce.to_owned(), expires);
        Ok(())
    }
}

fn exempt(method: &Method, path: &str) -> bool {
    method == Method::OPTIONS || matches!(path, "/" | "/health" | "/metrics")
}

fn valid_nonce(n: &str) -> bool {
    (16..=128).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
}

fn refusal(code: &str, message: String, field: &str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Other(code.to_owned()),
        "Invalid or missing message signature",
    );
    e.body.error.message = message;
    e.with_field(field)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The middleware, under request decompression: verifies signed requests when a key
/// is configured. The body is read here (under the body limit and read timeout) and
/// handed on unchanged.
pub(crate) async fn verify_requests(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(key) = app.config.hmac_key.as_deref() else {
        return next.run(req).await;
    };
    if exempt(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let (Some(sig), Some(ts), Some(nonce)) = (
        header(headers, SIGNATURE_HEADER),
        header(headers, TIMESTAMP_HEADER),
        header(headers, NONCE_HEADER),
    ) else {
        app.metrics.signature_refused("missing");
        return refusal(
            "SIGNATURE_INVALID",
            format!(
                "signed requests carry {SIGNATURE_HEADER}, {TIMESTAMP_HEADER} and {NONCE_HEADER} (PROTOCOL §2.6)"
            ),
            SIGNATURE_HEADER,
        )
        .into_response();
    };
    let Some(ts) = ts
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|_| ts.trim().bytes().all(|b| b.is_ascii_digit()))
    else {
        app.metrics.signature_refused("malformed");
        return refusal(
            "SIGNATURE_INVALID",
            "the timestamp is whole seconds since the Unix epoch, in decimal digits".into(),
            TIMESTAMP_HEADER,
        )
        .into_response();
    };
    if !valid_nonce(nonce) {
        app.metrics.signature_refused("malformed");
        return refusal(
            "SIGNATURE_INVALID",
            "the nonce is 16 to 128 characters of A-Z a-z 0-9 - _ . ~".into(),
            NONCE_HEADER,
        )
        .into_response();
    }
    let window = app.config.hmac_window.as_secs() as i64;
    let now = now_secs();
    if (now - ts).abs() > window {
        app.metrics.signature_refused("expired");
        return refusal(
            "SIGNATURE_EXPIRED",
            format!(
                "the request was signed at {ts}, more than {window} s from the server's clock ({now})"
            ),
            TIMESTAMP_HEADER,
        )
        .into_response();
    }
    let bytes =
        match crate::body::read_limited(body, app.config.body_limit, app.config.body_read_timeout)
            .await
        {
            Ok(b) => b,
            Err(rejection) => return rejection.into_response(),
        };
    let path = parts.uri.path();
    let query = parts.uri.query().unwrap_or("");
    let string = request_string(parts.method.as_str(), path, query, ts, nonce, &bytes);
    if !verify_string(key.as_bytes(), &string, sig) {
        app.metrics.signature_refused("bad_signature");
        return refusal(
            "SIGNATURE_INVALID",
            "the signature does not match the request (PROTOCOL §2.6)".into(),
            SIGNATURE_HEADER,
        )
        .into_response();
    }
    // Checked after the signature, so that nobody without the key can use up nonces.
    match app.replay.admit(nonce, ts + window, now) {
        Ok(()) => {}
        Err(NonceRefusal::Replayed) => {
            app.metrics.signature_refused("replayed");
            tracing::warn!(nonce, "replayed signed request refused");
            return refusal(
                "REPLAYED_REQUEST",
                "this nonce was used before; sign every request with a new one".into(),
                NONCE_HEADER,
            )
            .into_response();
        }
        Err(NonceRefusal::Full) => {
            app.metrics.signature_refused("replay_cache_full");
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Other("REPLAY_CACHE_FULL".into()),
                "Too many signed requests in the window",
            );
            e.retry_after = Some(1);
            return e.into_response();
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The nonce of a request (empty when it has none), for its answer's signature.
pub(crate) fn request_nonce(headers: &HeaderMap) -> String {
    header(headers, NONCE_HEADER)
        .filter(|n| valid_nonce(n))
        .unwrap_or("")
        .to_owned()
}

/// The signature and timestamp headers of an answer.
pub(crate) fn sign_response(
    key: &str,
    status: u16,
    nonce: &str,
    body: &[u8],
) -> (HeaderValue, HeaderValue) {
    let ts = now_secs();
    let sig = sign_string(key.as_bytes(), &response_string(status, nonce, ts, body));
    (
        HeaderValue::from_str(&sig).unwrap_or_else(|_| HeaderValue::from_static("")),
        HeaderValue::from(ts),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_cache_refuses_a_nonce_twice_and_is_bounded() {
        let c = ReplayCache::new(2);
        assert_eq!(c.admit("a", 100, 50), Ok(()));
        assert_eq!(c.admit("a", 100, 60), Err(NonceRefusal::Replayed));
        assert_eq!(c.admit("b", 100, 60), Ok(()));
        assert_eq!(c.admit("c", 100, 60), Err(NonceRefusal::Full));
        // Once the first two leave the window they are forgotten.
        let c = ReplayCache::new(2);
        c.admit("a", 10, 0).unwrap();
        c.admit("b", 10, 0).unwrap();
        assert_eq!(c.admit("c", 100, 11), Ok(()));
    }

    #[test]
    fn nonces() {
        assert!(valid_nonce("0123456789abcdef"));
        assert!(!valid_nonce("short"));
        assert!(!valid_nonce("0123456789abcdef/"));
    }
}
