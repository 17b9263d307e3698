//! Fault injection: extra latency, refused requests and answers dropped after commit, so clients can be tested against a bad network.

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use inbetweenies_proto::ErrorCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::error::ApiError;
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
}

impl FaultConfig {
    /// Whether any fault is on.
    pub fn is_active(&self) -> bool {
        !self.latency.is_zero() || self.error_rate > 0.0 || self.drop_rate > 0.0
    }
}

/// The fault decisions' random generator.
#[derive(Debug)]
pub(crate) struct FaultState {
    rng: Mutex<StdRng>,
}

impl FaultState {
    pub fn new(seed: u64) -> Self {
        FaultState {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    fn roll(&self) -> f64 {
        self.rng
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .gen::<f64>()
    }
}

fn faulted(path: &str) -> bool {
    path.starts_with("/api/v1/sync")
}

/// The middleware: injects the configured faults on the sync endpoints.
pub(crate) async fn inject(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let f = &app.config.faults;
    if !f.is_active() || !faulted(req.uri().path()) {
        return next.run(req).await;
    }
    if !f.latency.is_zero() {
        tokio::time::sleep(f.latency).await;
    }
    // Both rolls are taken up front so the sequence of decisions does not depend on timing.
    let (refuse, drop) = (
        app.faults.roll() < f.error_rate,
        app.faults.roll() < f.drop_rate,
    );
    if refuse {
        tracing::info!(
            path = req.uri().path(),
            "fault injected: request refused (503)"
        );
        let mut res = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            "Service Unavailable (injected fault)",
        )
        .into_response();
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return res;
    }
    let res = next.run(req).await;
    if drop {
        tracing::info!(status = %res.status(), "fault injected: answer dropped after the request was handled");
        // A body that fails before its first byte makes the server close the
        // connection without sending the answer.
        let failing = futures::stream::once(async {
            Err::<bytes::Bytes, std::io::Error>(std::io::Error::other(
                "injected fault: answer dropped",
            ))
        });
        let (mut parts, _) = res.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from_stream(failing));
    }
    res
}
