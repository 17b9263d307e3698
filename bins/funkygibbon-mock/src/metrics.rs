//! Metrics: counters, gauges and histograms kept in atomics, served at `GET /metrics`
//! in the Prometheus text format (OpenMetrics flavour, which Prometheus reads).
//!
//! Every metric name is listed in docs/SERVER.md. Other parts of the server add
//! their own through [`Metrics::counter`] and [`Metrics::gauge`]: the first call
//! registers the name, later calls hand back the same atomic.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::state::AppState;

/// The content type of `GET /metrics`.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms … about 8 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

fn batch_histogram() -> Histogram {
    // 1 … 4096 changes.
    Histogram::new(exponential_buckets(1.0, 2.0, 13))
}

/// The server's metrics. Cheap to update: every metric is an atomic, found by its
/// labels under a read lock.
pub(crate) struct Metrics {
    registry: Mutex<Registry>,
    named: Mutex<HashMap<String, Named>>,
    routes: RwLock<HashMap<String, &'static str>>,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RequestLabels>,
    push_batch: Histogram,
    conflicts: Family<ReasonLabels, Counter>,
    pages: Counter,
    faults: Family<KindLabels, Counter>,
    store_latency: HistogramFamily<OperationLabels>,
    rate_limited: Family<KindLabels, Counter>,
    signature_refused: Family<ReasonLabels, Counter>,
    password_checks: Counter,
    /// Requests being handled right now.
    pub in_flight: Gauge,
    feed_listeners: Gauge,
    blob_bytes: Family<DirectionLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// Holds one change-feed listener in `funkygibbon_feed_listeners` until dropped.
#[derive(Debug)]
pub(crate) struct ListenerGuard(Gauge);

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Clone)]
enum Named {
    Counter(Counter),
    Gauge(Gauge),
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "funkygibbon_http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let latency: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "funkygibbon_http_request_duration_seconds",
            "Time to the answer's head, by method, route template and status",
            latency.clone(),
        );
        let push_batch = batch_histogram();
        registry.register(
            "funkygibbon_sync_push_batch_size",
            "Changes per sync request that carried changes",
            push_batch.clone(),
        );
        let conflicts = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "funkygibbon_sync_conflicts",
            "Conflicts met by pushes, by resolution",
            conflicts.clone(),
        );
        let pages = Counter::default();
        registry.register(
            "funkygibbon_sync_pages_served",
            "Pages of the change feed served",
            pages.clone(),
        );
        let faults = Family::<KindLabels, Counter>::default();
        registry.register(
            "funkygibbon_faults_injected",
            "Faults injected, by kind",
            faults.clone(),
        );
        let store_latency: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "funkygibbon_store_operation_duration_seconds",
            "Time spent in the store, by operation",
            store_latency.clone(),
        );
        let rate_limited = Family::<KindLabels, Counter>::default();
        registry.register(
            "funkygibbon_rate_limited",
            "Requests refused with 429, by limiter (login, sync)",
            rate_limited.clone(),
        );
        let signature_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "funkygibbon_signature_refused",
            "Requests refused by message signing, by reason",
            signature_refused.clone(),
        );
        let password_checks = Counter::default();
        registry.register(
            "funkygibbon_login_password_checks",
            "Admin passwords checked against the hash (argon2 runs)",
            password_checks.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "funkygibbon_http_requests_in_flight",
            "Requests being handled right now",
            in_flight.clone(),
        );
        let feed_listeners = Gauge::default();
        registry.register(
            "funkygibbon_feed_listeners",
            "Change-feed event streams open",
            feed_listeners.clone(),
        );
        let blob_bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "funkygibbon_blob_bytes",
            "Blob bytes received (in: uploads stored) and sent (out: downloads)",
            blob_bytes.clone(),
        );
        Metrics {
            in_flight,
            feed_listeners,
            blob_bytes,
            registry: Mutex::new(registry),
            named: Mutex::new(HashMap::new()),
            routes: RwLock::new(HashMap::new()),
            requests,
            latency,
            push_batch,
            conflicts,
            pages,
            faults,
            store_latency,
            rate_limited,
            signature_refused,
            password_checks,
        }
    }

    /// A counter by name (without `_total`), registered on first use; the same
    /// counter for every later call with that name. A name already used for a
    /// gauge gets a detached counter (counted, never served).
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = named.get(name) {
            return match found {
                Named::Counter(c) => c.clone(),
                Named::Gauge(_) => Counter::default(),
            };
        }
        let c = Counter::default();
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, c.clone());
        named.insert(name.to_owned(), Named::Counter(c.clone()));
        c
    }

    /// A gauge by name, registered on first use; the same gauge for every later
    /// call with that name.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = named.get(name) {
            return match found {
                Named::Gauge(g) => g.clone(),
                Named::Counter(_) => Gauge::default(),
            };
        }
        let g = Gauge::default();
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .register(name, help, g.clone());
        named.insert(name.to_owned(), Named::Gauge(g.clone()));
        g
    }

    /// Counts one push of `changes` changes.
    pub fn push_batch(&self, changes: usize) {
        self.push_batch.observe(changes as f64);
    }

    /// Counts a conflict by how it was resolved.
    pub fn conflict(&self, reason: &'static str) {
        self.conflicts.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts one change-feed listener for as long as the guard lives.
    pub fn feed_listener(&self) -> ListenerGuard {
        self.feed_listeners.inc();
        ListenerGuard(self.feed_listeners.clone())
    }

    /// Counts blob bytes stored (`in`) or sent (`out`).
    pub fn blob_bytes(&self, direction: &'static str, n: usize) {
        self.blob_bytes
            .get_or_create(&DirectionLabels { direction })
            .inc_by(n as u64);
    }

    /// Counts one page of the change feed served.
    pub fn page_served(&self) {
        self.pages.inc();
    }

    /// The counter of injected faults of one kind.
    pub fn fault_counter(&self, kind: &'static str) -> Counter {
        self.faults.get_or_create_owned(&KindLabels { kind })
    }

    /// Records time spent in one store operation.
    pub fn store_time(&self, operation: &'static str, started: Instant) {
        self.store_latency
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
    }

    /// Counts a 429 from a limiter (`login` or `sync`).
    pub fn rate_limited(&self, kind: &'static str) {
        self.rate_limited.get_or_create(&KindLabels { kind }).inc();
    }

    /// Counts a request refused by message signing.
    pub fn signature_refused(&self, reason: &'static str) {
        self.signature_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one argon2 password check.
    pub fn password_checked(&self) {
        self.password_checks.inc();
    }

    /// The route template as a `'static` label: templates are a fixed set, so each
    /// is kept once for the life of the process.
    fn route_label(&self, template: &str) -> &'static str {
        if let Some(s) = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(template)
        {
            return s;
        }
        let mut w = self.routes.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = w.get(template) {
            return s;
        }
        let leaked: &'static str = Box::leak(template.to_owned().into_boxed_str());
        w.insert(template.to_owned(), leaked);
        leaked
    }

    /// Renders every metric in the text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
            tracing::error!(error = %e, "cannot render the metrics");
        }
        out
    }
}

/// The label of a conflict's machine-readable reason (PROTOCOL §8).
pub(crate) fn conflict_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("newer_on_server") => "newer_on_server",
        Some("newer_on_client") => "newer_on_client",
        Some("tiebreak_version") => "tiebreak_version",
        Some("delete_wins") => "delete_wins",
        Some("merged") => "merged",
        Some("manual") => "manual",
        Some(_) => "other",
        None => "unspecified",
    }
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The middleware (a route layer): counts each request and times it to its answer's
/// head, by route template (`/api/v1/graph/entities/{id}`, never the raw path).
pub(crate) async fn track(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) => app.metrics.route_label(p.as_str()),
        None => "unmatched",
    };
    let res = next.run(req).await;
    let labels = RequestLabels {
        method,
        route,
        status: res.status().as_u16(),
    };
    app.metrics.requests.get_or_create(&labels).inc();
    app.metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(
        method,
        route,
        status = labels.status,
        micros = started.elapsed().as_micros() as u64,
        "request answered"
    );
    res
}

/// `GET /metrics`: every metric, no auth (bind the server to a private address, or
/// keep `/metrics` behind the proxy that fronts it).
pub(crate) async fn serve(State(app): State<AppState>) -> Response {
    let body = app.metrics.render();
    let mut res = body.into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_metrics_are_registered_once_and_rendered() {
        let m = Metrics::new();
        m.counter("funkygibbon_example_events", "Example").inc();
        m.counter("funkygibbon_example_events", "Example").inc();
        m.gauge("funkygibbon_example_listeners", "Example").set(3);
        m.conflict("last_write_wins");
        let text = m.render();
        assert!(
            text.contains("funkygibbon_example_events_total 2"),
            "{text}"
        );
        assert!(text.contains("funkygibbon_example_listeners 3"), "{text}");
        assert!(
            text.contains("funkygibbon_sync_conflicts_total{reason=\"last_write_wins\"} 1"),
            "{text}"
        );
    }
}
