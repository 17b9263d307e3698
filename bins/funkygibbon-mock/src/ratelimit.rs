//! The per-token rate limit on the sync endpoints (`/api/v1/sync…`), apart from
//! the login limiter: each bearer token has a bucket of `burst` requests, refilled
//! at `per_second`; a request finding it empty is answered `429 RATE_LIMITED`
//! with `Retry-After`. Off unless a rate is configured.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use inbetweenies_proto::ErrorCode;

use crate::error::ApiError;
use crate::state::AppState;

/// Buckets kept at most; full (idle) buckets are dropped first when the map is full.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The buckets, by token.
#[derive(Debug)]
pub(crate) struct SyncLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl SyncLimiter {
    /// A limiter of `per_second` requests a second per token (0: off), `burst` at once.
    pub fn new(per_second: f64, burst: u32) -> Self {
        SyncLimiter {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn is_on(&self) -> bool {
        self.per_second > 0.0
    }

    /// Takes one request from the token's bucket; `Err(seconds to wait)` when empty.
    pub fn take(&self, token: u64, now: Instant) -> Result<(), u64> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(&token) {
            let (rate, burst) = (self.per_second, self.burst);
            map.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = map.entry(token).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refill = now.duration_since(b.at).as_secs_f64() * self.per_second;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / self.per_second;
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

/// The key of a bearer token: a hash of it (tokens themselves are not kept).
fn token_key(token: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(token.as_bytes());
    h.finish()
}

/// The middleware: limits the sync endpoints per verified bearer token. Requests
/// without a valid token pass on (and are refused 401 by the endpoint).
pub(crate) async fn limit(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if !app.sync_limiter.is_on() || !req.uri().path().starts_with("/api/v1/sync") {
        return next.run(req).await;
    }
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    // Only verified tokens get a bucket, so made-up tokens cannot fill the map.
    let Some(token) = token.filter(|t| app.auth.verify(t).is_ok()) else {
        return next.run(req).await;
    };
    if let Err(wait) = app.sync_limiter.take(token_key(token), Instant::now()) {
        app.metrics.rate_limited("sync");
        tracing::info!(path = req.uri().path(), wait, "sync rate limit reached");
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "Too many sync requests for this token. Try again later.",
        );
        e.retry_after = Some(wait);
        return e.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_refill_at_the_rate() {
        let l = SyncLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take(1, t0).is_ok());
        }
        assert_eq!(l.take(1, t0), Err(1));
        // Another token has its own bucket.
        assert!(l.take(2, t0).is_ok());
        // Half a second later one request is back.
        let t1 = t0 + Duration::from_millis(500);
        assert!(l.take(1, t1).is_ok());
        assert!(l.take(1, t1).is_err());
    }
}
