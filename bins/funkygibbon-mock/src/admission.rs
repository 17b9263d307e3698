//! Admission of sync requests: at most [`ServerConfig::max_concurrent_syncs`] are handled
//! at once; the others wait, first come first served, before their body is read.
//!
//! A sync that is being handled holds its request, the page it read and the answer it
//! builds — up to a page of whole rows, about a megabyte at 500 rows — and under many
//! clients it holds them while it waits for the store (the write lock, the group commit).
//! Without a bound, memory grows with the number of clients syncing at once (a thousand
//! clients pushing and pulling held about a gigabyte). A sync waiting here holds only
//! its request head; its body stays in the connection until it is admitted. The queue is
//! fair (a FIFO semaphore), so a waiting sync is not overtaken, and the store works on
//! no fewer requests than it can use: the pushes admitted together still share a group
//! commit (`goodies_store` SQLite `group`).
//!
//! [`ServerConfig::max_concurrent_syncs`]: crate::ServerConfig::max_concurrent_syncs

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::state::AppState;

/// The sync requests handled now and waiting.
#[derive(Debug)]
pub(crate) struct SyncAdmission {
    permits: Arc<Semaphore>,
    running: Gauge,
    waiting: Gauge,
}

impl SyncAdmission {
    /// At most `max` syncs at once (at least one).
    pub(crate) fn new(max: usize, metrics: &Metrics) -> Self {
        SyncAdmission {
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
            running: metrics.gauge(
                "funkygibbon_syncs_running",
                "Sync requests being handled now (at most --max-concurrent-syncs)",
            ),
            waiting: metrics.gauge(
                "funkygibbon_syncs_waiting",
                "Sync requests waiting for their turn to be handled",
            ),
        }
    }
}

/// Counts one gauge up while alive.
struct Held(Gauge);

impl Held {
    fn new(g: &Gauge) -> Held {
        g.inc();
        Held(g.clone())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `POST /api/v1/sync/` waits for its turn; every other request passes.
pub(crate) async fn admit(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if req.method() != Method::POST || (path != "/api/v1/sync/" && path != "/api/v1/sync") {
        return next.run(req).await;
    }
    let adm = &app.admission;
    let permit = {
        let _waiting = Held::new(&adm.waiting);
        adm.permits.clone().acquire_owned().await
    };
    // The semaphore is never closed; without a permit the request is simply not held back.
    let _running = Held::new(&adm.running);
    let response = next.run(req).await;
    drop(permit);
    response
}
