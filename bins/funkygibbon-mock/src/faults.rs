//! Fault injection on the sync endpoints, settable at start (flags) and while the
//! server runs (`GET`/`PUT /api/v1/admin/faults`, admin token only): extra latency,
//! refused requests (503, forced `AUTH_EXPIRED`, forced `RATE_LIMITED`), answers
//! dropped after commit, answers cut off mid-body, answers trickled slowly, and a
//! skewed `server_time`. Every injected fault is logged and counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use inbetweenies_proto::{ErrorCode, Timestamp};
use prometheus_client::metrics::counter::Counter;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::state::AppState;

/// Which faults to inject, on the sync endpoints (`/api/v1/sync/…`).
///
/// Every fault is off by default. Decisions come from a random generator
/// seeded with `seed`, so a run with the same requests in the same order
/// meets the same faults.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct FaultConfig {
    /// Added before every faulted request is handled.
    pub latency: Duration,
    /// Share of requests (0–1) refused with `503` before anything is read or applied.
    pub error_rate: f64,
    /// Share of requests (0–1) handled in full (a push is committed) whose
    /// answer is then dropped: the connection closes without a response.
    pub drop_rate: f64,
    /// Seed of the fault decisions.
    pub seed: u64,
    /// Share of requests (0–1) refused with `401 AUTH_EXPIRED` before anything is applied.
    pub auth_expired_rate: f64,
    /// Share of requests (0–1) refused with `429 RATE_LIMITED` (`Retry-After: 1`)
    /// before anything is applied.
    pub rate_limited_rate: f64,
    /// Share of requests (0–1) handled in full whose answer is cut off halfway
    /// through its body: the connection is closed mid-body.
    pub reset_rate: f64,
    /// When not zero, every answer's body is sent in pieces of this many bytes…
    pub slow_body_chunk: usize,
    /// …with this pause before each piece.
    pub slow_body_interval: Duration,
    /// Added to the top-level `server_time` of sync answers, in milliseconds
    /// (negative: behind). The store's watermark is unchanged.
    pub clock_skew_ms: i64,
}

impl FaultConfig {
    /// Whether any fault is on.
    pub fn is_active(&self) -> bool {
        !self.latency.is_zero()
            || self.error_rate > 0.0
            || self.drop_rate > 0.0
            || self.auth_expired_rate > 0.0
            || self.rate_limited_rate > 0.0
            || self.reset_rate > 0.0
            || self.slow_body_chunk > 0
            || self.clock_skew_ms != 0
    }

    /// The settings as JSON, as `GET /api/v1/admin/faults` shows them.
    pub fn to_json(&self) -> Value {
        json!({
            "latency_ms": self.latency.as_millis() as u64,
            "error_rate": self.error_rate,
            "drop_rate": self.drop_rate,
            "auth_expired_rate": self.auth_expired_rate,
            "rate_limited_rate": self.rate_limited_rate,
            "reset_rate": self.reset_rate,
            "slow_body_chunk_bytes": self.slow_body_chunk,
            "slow_body_interval_ms": self.slow_body_interval.as_millis() as u64,
            "clock_skew_ms": self.clock_skew_ms,
            "seed": self.seed,
        })
    }

    /// Applies the fields present in `v` (an object with the keys of [`Self::to_json`]);
    /// `Err` names the first field that is not valid, and nothing is changed then.
    pub fn apply_json(&self, v: &Value) -> Result<FaultConfig, (String, String)> {
        let obj = v
            .as_object()
            .ok_or_else(|| ("body".to_owned(), "must be a JSON object".to_owned()))?;
        let mut out = self.clone();
        for (k, val) in obj {
            let bad = |why: &str| (k.clone(), why.to_owned());
            let rate = || match val.as_f64() {
                Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => Err(bad("must be a number between 0 and 1")),
            };
            let count = || {
                val.as_u64()
                    .ok_or_else(|| bad("must be a whole number >= 0"))
            };
            match k.as_str() {
                "latency_ms" => out.latency = Duration::from_millis(count()?.min(600_000)),
                "error_rate" => out.error_rate = rate()?,
                "drop_rate" => out.drop_rate = rate()?,
                "auth_expired_rate" => out.auth_expired_rate = rate()?,
                "rate_limited_rate" => out.rate_limited_rate = rate()?,
                "reset_rate" => out.reset_rate = rate()?,
                "slow_body_chunk_bytes" => {
                    out.slow_body_chunk = usize::try_from(count()?).unwrap_or(usize::MAX)
                }
                "slow_body_interval_ms" => {
                    out.slow_body_interval = Duration::from_millis(count()?.min(60_000))
                }
                "clock_skew_ms" => {
                    out.clock_skew_ms = val
                        .as_i64()
                        .filter(|ms| ms.unsigned_abs() <= 10 * 365 * 86_400_000)
                        .ok_or_else(|| bad("must be a whole number of milliseconds"))?
                }
                "seed" => out.seed = count()?,
                _ => return Err(bad("is not a fault setting")),
            }
        }
        Ok(out)
    }
}

/// The kinds of fault, as counted and logged.
pub(crate) const KINDS: [&str; 8] = [
    "latency",
    "error",
    "drop",
    "auth_expired",
    "rate_limited",
    "reset",
    "slow_body",
    "clock_skew",
];

/// The faults in force, their random generator and their counts.
pub(crate) struct FaultState {
    config: RwLock<FaultConfig>,
    active: AtomicBool,
    rng: Mutex<StdRng>,
    counts: [Counter; 8],
    active_gauge: prometheus_client::metrics::gauge::Gauge,
}

impl std::fmt::Debug for FaultState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultState")
            .field("config", &self.current())
            .finish_non_exhaustive()
    }
}

impl FaultState {
    pub fn new(config: FaultConfig, metrics: &Metrics) -> Self {
        let active_gauge = metrics.gauge(
            "funkygibbon_fault_injection_active",
            "1 while any fault is being injected, else 0",
        );
        active_gauge.set(i64::from(config.is_active()));
        FaultState {
            active_gauge,
            active: AtomicBool::new(config.is_active()),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            config: RwLock::new(config),
            counts: KINDS.map(|k| metrics.fault_counter(k)),
        }
    }

    /// The faults in force.
    pub fn current(&self) -> FaultConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the faults in force; the generator is seeded again when the seed changed.
    pub fn set(&self, new: FaultConfig) {
        let mut cfg = self.config.write().unwrap_or_else(|p| p.into_inner());
        if cfg.seed != new.seed {
            *self.rng.lock().unwrap_or_else(|p| p.into_inner()) = StdRng::seed_from_u64(new.seed);
        }
        self.active.store(new.is_active(), Ordering::Release);
        self.active_gauge.set(i64::from(new.is_active()));
        tracing::warn!(faults = ?new, "fault injection settings changed");
        *cfg = new;
    }

    /// How many faults of each kind were injected.
    pub fn counts_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (k, c) in KINDS.iter().zip(&self.counts) {
            m.insert((*k).to_owned(), Value::from(c.get()));
        }
        Value::Object(m)
    }

    fn count(&self, kind: &'static str, path: &str) {
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.counts[i].inc();
        }
        tracing::info!(kind, path, "fault injected");
    }

    /// One roll per kind of decision, always all of them, so the sequence of decisions
    /// depends only on the order of the requests.
    fn rolls(&self) -> [f64; 5] {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        [rng.gen(), rng.gen(), rng.gen(), rng.gen(), rng.gen()]
    }
}

fn faulted(path: &str) -> bool {
    path.starts_with("/api/v1/sync")
}

fn refused(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let mut res = ApiError::new(status, code, message).into_response();
    if status != StatusCode::UNAUTHORIZED {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    res
}

/// The middleware: injects the faults in force on the sync endpoints.
pub(crate) async fn inject(State(app): State<AppState>, req: Request, next: Next) -> Response {
    if !app.faults.active.load(Ordering::Acquire) || !faulted(req.uri().path()) {
        return next.run(req).await;
    }
    let f = app.faults.current();
    let path = req.uri().path().to_owned();
    if !f.latency.is_zero() {
        app.faults.count("latency", &path);
        tokio::time::sleep(f.latency).await;
    }
    let [error, auth, limited, drop, reset] = app.faults.rolls();
    if error < f.error_rate {
        app.faults.count("error", &path);
        return refused(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            "Service Unavailable (injected fault)",
        );
    }
    if auth < f.auth_expired_rate {
        app.faults.count("auth_expired", &path);
        let mut res = ApiError::invalid_token(true).into_response();
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    if limited < f.rate_limited_rate {
        app.faults.count("rate_limited", &path);
        return refused(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "Too many requests (injected fault)",
        );
    }
    let res = next.run(req).await;
    if drop < f.drop_rate {
        app.faults.count("drop", &path);
        // A body that fails before its first byte makes the server close the
        // connection without sending the answer.
        let failing = futures::stream::once(async {
            Err::<Bytes, std::io::Error>(std::io::Error::other("injected fault: answer dropped"))
        });
        let (mut parts, _) = res.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from_stream(failing));
    }
    if reset < f.reset_rate {
        app.faults.count("reset", &path);
        return cut_mid_body(res).await;
    }
    if f.slow_body_chunk > 0 {
        app.faults.count("slow_body", &path);
        return trickle(res, f.slow_body_chunk, f.slow_body_interval).await;
    }
    res
}

/// The inner middleware (under signing and compression): shifts `server_time` when
/// a clock skew is in force.
pub(crate) async fn skew_server_time(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if !app.faults.active.load(Ordering::Acquire) || !faulted(req.uri().path()) {
        return next.run(req).await;
    }
    let ms = app.faults.current().clock_skew_ms;
    if ms == 0 {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    match skew(res, ms).await {
        Ok(res) => {
            app.faults.count("clock_skew", &path);
            res
        }
        Err(res) => res,
    }
}

async fn whole(res: Response) -> Result<(axum::http::response::Parts, Bytes), Response> {
    let (parts, body) = res.into_parts();
    match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => Ok((parts, b)),
        Err(e) => Err(ApiError::internal(&e).into_response()),
    }
}

/// Shifts the top-level `server_time` of a JSON answer; `Err` gives back an answer
/// that has none, unchanged.
async fn skew(res: Response, ms: i64) -> Result<Response, Response> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json || res.headers().contains_key(header::CONTENT_ENCODING) {
        return Err(res);
    }
    let (mut parts, bytes) = whole(res).await?;
    let mut v: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) => return Err(Response::from_parts(parts, Body::from(bytes))),
    };
    let shifted = v
        .get("server_time")
        .and_then(Value::as_str)
        .and_then(|s| Timestamp::parse(s).ok())
        .map(|t| t.saturating_add_micros(ms.saturating_mul(1000)));
    let Some(t) = shifted else {
        return Err(Response::from_parts(parts, Body::from(bytes)));
    };
    v["server_time"] = Value::from(t.to_string());
    let out = serde_json::to_vec(&v).unwrap_or_else(|_| bytes.to_vec());
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Response::from_parts(parts, Body::from(out)))
}

/// Sends the head and the first half of the body, then fails: the connection is
/// closed with the body incomplete (its `Content-Length` says more was coming).
async fn cut_mid_body(res: Response) -> Response {
    let (mut parts, bytes) = match whole(res).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let half = bytes.slice(..bytes.len() / 2);
    parts.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(bytes.len().max(1) as u64),
    );
    // The pause lets the head and the first half go out before the connection is cut.
    let stream = futures::StreamExt::chain(
        futures::stream::iter([Ok(half)]),
        futures::stream::once(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err(std::io::Error::other(
                "injected fault: connection reset mid-body",
            ))
        }),
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Sends the body in pieces of `chunk` bytes with a pause before each.
async fn trickle(res: Response, chunk: usize, interval: Duration) -> Response {
    let (mut parts, bytes) = match whole(res).await {
        Ok(x) => x,
        Err(res) => return res,
    };
    parts.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(bytes.len() as u64),
    );
    let pieces: Vec<Bytes> = (0..bytes.len())
        .step_by(chunk)
        .map(|i| bytes.slice(i..(i + chunk).min(bytes.len())))
        .collect();
    let stream = futures::stream::unfold(pieces.into_iter(), move |mut it| async move {
        let piece = it.next()?;
        tokio::time::sleep(interval).await;
        Some((Ok::<Bytes, std::io::Error>(piece), it))
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_refusals() {
        let f = FaultConfig::default();
        let g = f
            .apply_json(&json!({"error_rate": 0.5, "clock_skew_ms": -3000, "seed": 7}))
            .unwrap();
        assert_eq!(g.error_rate, 0.5);
        assert_eq!(g.clock_skew_ms, -3000);
        assert_eq!(g.seed, 7);
        assert!(g.is_active());
        assert_eq!(g.apply_json(&g.to_json()).unwrap(), g);
        let (field, _) = f.apply_json(&json!({"error_rate": 2})).unwrap_err();
        assert_eq!(field, "error_rate");
        let (field, _) = f.apply_json(&json!({"nonsense": 1})).unwrap_err();
        assert_eq!(field, "nonsense");
        assert!(f.apply_json(&json!([1])).is_err());
    }
}
