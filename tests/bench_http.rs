//! What the load and whole-pull benches share: one sync request on a kept-alive HTTP/1.1
//! connection of their own (hyper's client connection, no pool, no JSON parsing of the
//! answer). Included by each bench with `#[path]`.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::Value;

/// POSTs `body` to `/api/v1/sync/` on `sender` (a connection to `addr`) with the bearer
/// `token`; the answer's bytes, or an error naming any status other than 200.
pub async fn post_sync(
    sender: &mut SendRequest<Full<Bytes>>,
    addr: &str,
    token: &str,
    body: &Value,
) -> anyhow::Result<Bytes> {
    sender.ready().await?;
    let req = hyper::Request::post("/api/v1/sync/")
        .header(hyper::header::HOST, addr)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_string())))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    anyhow::ensure!(
        status == hyper::StatusCode::OK,
        "status {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(bytes)
}

/// An admin token signed by the server of `handle`, issued now and valid for a day plus
/// `extra_secs` (distinct values give distinct tokens).
pub fn admin_token(handle: &funkygibbon_mock::AppHandle, extra_secs: i64) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    handle.sign(&funkygibbon_mock::Claims {
        sub: "admin".into(),
        role: "admin".into(),
        permissions: funkygibbon_mock::ADMIN_PERMISSIONS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        exp: now + 86_400 + extra_secs,
        iat: now,
    })
}
