//! `/api/v1/auth/*`: admin login, token introspection and refresh, guest grants.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use inbetweenies_proto::{ErrorCode, Timestamp};
use serde_json::{json, Value};

use crate::auth::{Caller, GUEST_PERMISSIONS};
use crate::body::RawBody;
use crate::error::ApiError;
use crate::pydantic::{body_loc, item_ctx, Fields};
use crate::qr::{parse_custom_server, qr_png_base64, GuestAddress};
use crate::state::AppState;

/// Default lifetime of a guest grant when `duration_hours` is not given.
const DEFAULT_GUEST_HOURS: f64 = 24.0;

/// The client's address, when the server was started with connection info.
pub(crate) struct PeerIp(Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(a)| a.ip()),
        ))
    }
}

/// `POST /api/v1/auth/admin/login` `{"password"}` → a bearer token.
pub(crate) async fn login(
    State(app): State<AppState>,
    PeerIp(ip): PeerIp,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let value = body.json()?;
    let mut f = Fields::new(&value)?;
    let password = f.req_str(&["password"], 1);
    f.finish()?;
    let password = password.unwrap_or_default();
    // Counted before the password is checked, so concurrent attempts cannot pass together.
    if let Err(wait) = app.auth.begin_attempt(ip) {
        app.metrics.rate_limited("login");
        tracing::warn!(?ip, wait, "login rate limit reached");
        return Err(ApiError::rate_limited(wait));
    }
    app.metrics.password_checked();
    if !app.auth.verify_admin_password(password).await? {
        tracing::warn!(?ip, "failed admin login");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "Invalid password",
        ));
    }
    app.auth.clear_failures(ip);
    token_answer(&app, "admin")
}

fn token_answer(app: &AppState, role: &str) -> Result<Json<Value>, ApiError> {
    let (token, ttl) = app.auth.admin_token()?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": ttl,
        "role": role,
    })))
}

/// `GET /api/v1/auth/me`: what the caller's token says.
pub(crate) async fn me(Caller(c): Caller) -> Json<Value> {
    Json(json!({
        "user_id": c.sub,
        "role": c.role,
        "permissions": c.permissions,
        "expires_at": c.exp,
    }))
}

/// `POST /api/v1/auth/refresh`: a fresh admin token (admins only).
pub(crate) async fn refresh(
    State(app): State<AppState>,
    Caller(c): Caller,
) -> Result<Json<Value>, ApiError> {
    if !c.is_admin() {
        return Err(ApiError::forbidden("Only admin tokens can be refreshed"));
    }
    token_answer(&app, "admin")
}

/// `POST /api/v1/auth/guest/generate-qr` `{"duration_hours"?, "custom_server"?}` (admins only).
///
/// `custom_server` (`host`, `host:port` or `http(s)://host[:port]`) replaces the public
/// host in the QR code, and its port the public port; the grant remembers the URL and
/// verify hands it back as `server_url`.
pub(crate) async fn guest_generate(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let (hours, custom) = match body.json_opt()? {
        None => (DEFAULT_GUEST_HOURS, None),
        Some(v) => {
            let mut f = Fields::new(&v)?;
            let h = f.opt_positive_f64("duration_hours");
            let custom =
                f.opt_str(&["custom_server"])
                    .and_then(|s| match parse_custom_server(&s) {
                        Ok(a) => Some(a),
                        Err(why) => {
                            f.errors.push(item_ctx(
                                "value_error",
                                body_loc(&[Value::from("custom_server")]),
                                format!("Value error, custom_server {why}"),
                                Value::from(s),
                                json!({"error": why}),
                            ));
                            None
                        }
                    });
            f.finish()?;
            (h.unwrap_or(DEFAULT_GUEST_HOURS), custom)
        }
    };
    let public_port = app.public_port;
    let grant = app
        .auth
        .create_guest(hours, custom.as_ref().map(|a| a.url(public_port)));
    // Kept in the store so the grant survives a restart.
    app.store.put_guest_grant(&grant.record()).await?;
    let (server, port) = match &custom {
        Some(a) => (a.host.clone(), a.port_or(public_port)),
        None => (app.config.public_host.clone(), public_port),
    };
    let mut qr_data = json!({
        "version": "1.0",
        "type": "guest_access",
        "server": server,
        "port": port,
        "token": grant.token,
        "expires": grant.expires,
        "permissions": GUEST_PERMISSIONS,
    });
    if let Some(GuestAddress {
        scheme: Some(_), ..
    }) = &custom
    {
        qr_data["url"] = Value::from(grant.server_url.clone());
    }
    let qr_code = qr_png_base64(&qr_data.to_string()).map_err(|e| ApiError::internal(&e))?;
    let expires_in = grant.expires_at - Timestamp::now().unix_micros() / 1_000_000;
    tracing::info!(subject = %grant.subject, hours, server = ?grant.server_url, "guest grant created");
    app.metrics
        .counter("funkygibbon_guest_grants_created", "Guest grants made")
        .inc();
    Ok(Json(json!({
        "qr_code": qr_code,
        "qr_data": qr_data,
        "expires_in": expires_in,
    })))
}

/// `POST /api/v1/auth/guest/verify` `{"token"}` → a guest bearer token (no auth needed).
pub(crate) async fn guest_verify(
    State(app): State<AppState>,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    let value = body.json()?;
    let mut f = Fields::new(&value)?;
    let token = f.req_str(&["token"], 1);
    f.finish()?;
    let login = app
        .auth
        .verify_guest(app.store.as_ref(), &token.unwrap_or_default())
        .await?;
    let mut answer = json!({
        "access_token": login.jwt,
        "token_type": "bearer",
        "expires_in": login.expires_in,
        "role": "guest",
    });
    if let Some(url) = login.server_url {
        answer["server_url"] = Value::from(url);
    }
    Ok(Json(answer))
}

/// `GET /api/v1/auth/guest/list` (admins only).
pub(crate) async fn guest_list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    // Grants made through other server processes sharing the store are listed too.
    app.auth.load_guests(app.store.guest_grants().await?);
    let now = Timestamp::now().unix_micros() / 1_000_000;
    let guests: Vec<Value> = app
        .auth
        .guests()
        .into_iter()
        .map(|g| {
            json!({
                "subject": g.subject,
                "token": g.token,
                "created_at": g.created_at,
                "expires": g.expires,
                "expires_in": (g.expires_at - now).max(0),
                "revoked": g.revoked,
                "active": !g.revoked && g.expires_at > now,
                "permissions": GUEST_PERMISSIONS,
                "server_url": g.server_url,
            })
        })
        .collect();
    Ok(Json(json!({"count": guests.len(), "guests": guests})))
}

/// `POST /api/v1/auth/guest/revoke` `{"token"}` (the grant's token or its `guest_…` subject; admins only).
pub(crate) async fn guest_revoke(
    State(app): State<AppState>,
    caller: Caller,
    body: RawBody,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let value = body.json()?;
    let mut f = Fields::new(&value)?;
    let token = f.req_str(&["token", "subject"], 1);
    f.finish()?;
    let token = token.unwrap_or_default();
    let revoked = app
        .auth
        .revoke_guest_everywhere(app.store.as_ref(), &token)
        .await?;
    if revoked.is_none() {
        return Err(ApiError::not_found("Guest token not found"));
    }
    tracing::info!("guest grant revoked");
    Ok(Json(json!({"revoked": true})))
}
