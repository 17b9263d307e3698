//! The HTTP routes and the middleware around them.

mod admin;
mod auth;
pub(crate) mod backup;
pub(crate) mod blobs;
pub(crate) mod events;
mod flow;
mod graph;
mod mcp;
mod merkle;
mod misc;
mod sync;
mod sync_metadata;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::Router;
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::error::{code_for_status, ApiError};
use crate::state::AppState;

/// Responses larger than this are gzipped for clients that accept it.
const COMPRESS_ABOVE: u16 = 1024;

/// Registers a route with and without its trailing slash (the reference answers
/// 307 for the missing slash; this server answers both alike).
fn both(r: Router<AppState>, path: &str, m: MethodRouter<AppState>) -> Router<AppState> {
    let alt = match path.strip_suffix('/') {
        Some(p) => p.to_owned(),
        None => format!("{path}/"),
    };
    r.route(path, m.clone()).route(&alt, m)
}

/// Every route of the server, with its middleware.
pub(crate) fn router(state: AppState) -> Router {
    let mut r = Router::new().route("/", get(misc::root));
    let routes: Vec<(&str, MethodRouter<AppState>)> = vec![
        ("/health", get(misc::health)),
        ("/metrics", get(crate::metrics::serve)),
        // Operations (admin).
        (
            "/api/v1/admin/faults",
            get(admin::get_faults).put(admin::put_faults),
        ),
        // Auth.
        ("/api/v1/auth/admin/login", post(auth::login)),
        ("/api/v1/auth/me", get(auth::me)),
        ("/api/v1/auth/refresh", post(auth::refresh)),
        ("/api/v1/auth/guest/generate-qr", post(auth::guest_generate)),
        ("/api/v1/auth/guest/verify", post(auth::guest_verify)),
        ("/api/v1/auth/guest/list", get(auth::guest_list)),
        ("/api/v1/auth/guest/revoke", post(auth::guest_revoke)),
        // Sync (inbetweenies-v2).
        ("/api/v1/sync/", post(sync::sync)),
        ("/api/v1/sync/status", get(sync::status)),
        ("/api/v1/sync/vocabulary", get(sync::vocabulary)),
        ("/api/v1/sync/merkle", get(merkle::nodes)),
        (
            "/api/v1/admin/history/compact",
            post(crate::horizon::compact),
        ),
        ("/api/v1/sync/events", get(events::events)),
        (
            "/api/v1/blobs/{sha256}",
            get(blobs::get).head(blobs::head).put(blobs::put),
        ),
        ("/api/v1/sync/conflicts", get(sync::conflicts)),
        ("/api/v1/sync/conflicts/{id}/resolve", post(sync::resolve)),
        // The seeds' five-step flow.
        ("/api/v1/sync/request", post(flow::request)),
        ("/api/v1/sync/push", post(flow::push)),
        ("/api/v1/sync/ack", post(flow::ack)),
        // Graph REST API.
        (
            "/api/v1/graph/entities",
            get(graph::list_entities).post(graph::create_entity),
        ),
        (
            "/api/v1/graph/entities/{id}",
            get(graph::get_entity)
                .put(graph::update_entity)
                .delete(graph::delete_entity),
        ),
        ("/api/v1/graph/entities/{id}/versions", get(graph::versions)),
        (
            "/api/v1/graph/entities/{id}/connected",
            get(graph::connected),
        ),
        (
            "/api/v1/graph/relationships",
            get(graph::list_relationships).post(graph::create_relationship),
        ),
        ("/api/v1/graph/search", post(graph::search)),
        ("/api/v1/graph/path", post(graph::path)),
        ("/api/v1/graph/statistics", get(graph::statistics)),
        // Assistant tools.
        ("/api/v1/mcp/tools", get(mcp::list)),
        (
            "/api/v1/mcp/tools/{name}",
            get(mcp::describe).post(mcp::execute),
        ),
        // Per-client sync metadata (admin).
        (
            "/api/v1/sync-metadata/",
            get(sync_metadata::list).post(sync_metadata::create),
        ),
        (
            "/api/v1/sync-metadata/{client_id}",
            get(sync_metadata::get).delete(sync_metadata::delete),
        ),
        (
            "/api/v1/sync-metadata/{client_id}/status",
            get(sync_metadata::status),
        ),
        (
            "/api/v1/sync-metadata/{client_id}/sync-start",
            post(sync_metadata::sync_start),
        ),
        (
            "/api/v1/sync-metadata/{client_id}/sync-success",
            post(sync_metadata::sync_success),
        ),
        (
            "/api/v1/sync-metadata/{client_id}/sync-failure",
            post(sync_metadata::sync_failure),
        ),
        // Backups (admin).
        ("/api/v1/backup/create", post(backup::create)),
        ("/api/v1/backup/list", get(backup::list)),
        (
            "/api/v1/backup/scheduler/status",
            get(backup::scheduler_status),
        ),
        (
            "/api/v1/backup/scheduler/trigger",
            post(backup::scheduler_trigger),
        ),
        (
            "/api/v1/backup/{id}",
            get(backup::get).merge(delete(backup::delete)),
        ),
        ("/api/v1/backup/{id}/restore", post(backup::restore)),
    ];
    for (path, m) in routes {
        r = both(r, path, m);
    }
    // The fastest level: on sync pages it compresses several times faster than the
    // default level for a slightly larger body.
    let compress = CompressionLayer::new()
        .gzip(true)
        .quality(CompressionLevel::Fastest)
        .compress_when(
            DefaultPredicate::new()
                .and(SizeAbove::new(COMPRESS_ABOVE))
                .and(not_ranged as fn(_, _, &_, &_) -> bool),
        );
    // The middleware, innermost first (each `layer` wraps what is above it). A layer
    // costs every request a boxed clone of the service below it and a boxed future, so
    // neighbours are run as one where nothing comes between them, and a layer whose
    // setting is off and cannot be turned on while the server runs (signing, the sync
    // rate limit, CORS) is left out rather than passed through: with the defaults a
    // request goes through 8 layers instead of 13. Faults can be set while the server
    // runs, so their layers are always there.
    let signing = state.config.hmac_key.is_some();
    let limiting = state.sync_limiter.is_on();
    let mut r = r
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            crate::metrics::track,
        ))
        .fallback(misc::not_found)
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::faults::skew_server_time,
        ));
    if signing {
        r = r.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::signing::verify_requests,
        ));
    }
    r = r.layer(RequestDecompressionLayer::new().gzip(true));
    if limiting {
        r = r
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::admission::admit,
            ))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::ratelimit::limit,
            ))
            .layer(middleware::map_response(json_errors));
    } else {
        r = r.layer(middleware::from_fn_with_state(
            state.clone(),
            admit_with_json_errors,
        ));
    }
    if signing {
        r = r.layer(middleware::from_fn_with_state(
            state.clone(),
            sign_responses,
        ));
    }
    r = r
        .layer(compress)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_in_flight_and_inject,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        );
    if let Some(cors) = cors_layer(&state.config.cors_origins) {
        r = r.layer(cors);
    }
    r.with_state(state)
}

/// [`json_errors`] around [`crate::admission::admit`]: the two layers as one, where the
/// sync rate limit (which sits between them) is off.
async fn admit_with_json_errors(state: State<AppState>, req: Request, next: Next) -> Response {
    json_errors(crate::admission::admit(state, req, next).await).await
}

/// The in-flight count ([`InFlight`]) around [`crate::faults::inject`], as one layer.
async fn count_in_flight_and_inject(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let _guard = InFlight::enter(state.clone());
    crate::faults::inject(State(state), req, next).await
}

/// CORS for the configured origins (none: no CORS headers at all). Preflight
/// requests are answered before auth; the signature header is exposed.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        AllowOrigin::list(list)
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods(Any)
            .allow_headers(Any)
            .expose_headers([
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
                header::HeaderName::from_static(inbetweenies_proto::codec::SIGNATURE_HEADER),
                header::HeaderName::from_static(crate::signing::TIMESTAMP_HEADER),
            ]),
    )
}

/// Decrements the in-flight count when a request ends (or is dropped).
struct InFlight(AppState);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.send_modify(|n| *n = n.saturating_sub(1));
        self.0.metrics.in_flight.dec();
    }
}

impl InFlight {
    /// Counts a request in until the guard is dropped.
    fn enter(state: AppState) -> InFlight {
        state.in_flight.send_modify(|n| *n += 1);
        state.metrics.in_flight.inc();
        InFlight(state)
    }
}

/// Signs answers (before compression) when a shared key is configured (PROTOCOL §2.6).
async fn sign_responses(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let nonce = match state.config.hmac_key {
        Some(_) => crate::signing::request_nonce(req.headers()),
        None => String::new(),
    };
    let res = next.run(req).await;
    let Some(key) = state.config.hmac_key.clone() else {
        return res;
    };
    if is_streamed(&res) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let (sig, ts) = crate::signing::sign_response(&key, parts.status.as_u16(), &nonce, &bytes);
    parts
        .headers
        .insert(inbetweenies_proto::codec::SIGNATURE_HEADER, sig);
    parts.headers.insert(crate::signing::TIMESTAMP_HEADER, ts);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// Whether an answer is streamed rather than held whole: event streams and blob
/// bytes are not signed (PROTOCOL §2.4), so they never wait for their whole body.
fn is_streamed(res: &Response) -> bool {
    res.headers().contains_key(header::ACCEPT_RANGES)
        || res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.starts_with("text/event-stream") || v.starts_with("application/octet-stream")
            })
}

/// Answers that serve byte ranges (blobs) are never compressed: their `Content-Range`
/// and `Content-Length` count the bytes themselves.
fn not_ranged(
    _: axum::http::StatusCode,
    _: axum::http::Version,
    headers: &axum::http::HeaderMap,
    _: &axum::http::Extensions,
) -> bool {
    !headers.contains_key(header::ACCEPT_RANGES)
}

/// Turns any error answer that is not JSON (405 from routing, 415 from
/// decompression, …) into the JSON error body.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut out = ApiError::new(status, code_for_status(status), reason).into_response();
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}
