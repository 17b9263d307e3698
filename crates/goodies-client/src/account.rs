//! The stored token against the server: check it (`GET /api/v1/auth/me`), read its expiry
//! locally, and exchange it for a fresh one (`POST /api/v1/auth/refresh`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{BlowingOffClient, LoginInfo};
use std::path::{Path, PathBuf};

use crate::config::{ClientConfig, RetryPolicy};
use crate::error::ClientError;
use crate::http::Http;
use crate::transport::Method;

/// The endpoint that names the caller of a token.
pub const ME_PATH: &str = "/api/v1/auth/me";

/// The endpoint that exchanges an admin token for a fresh one.
pub const REFRESH_PATH: &str = "/api/v1/auth/refresh";

/// What the server says about the stored token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenInfo {
    /// The user the token names.
    pub user_id: String,
    /// The role it grants.
    #[serde(default)]
    pub role: Option<String>,
    /// When it expires (seconds since the Unix epoch), as the server read it.
    #[serde(default)]
    pub expires_at: Option<i64>,
}

#[derive(Deserialize)]
struct RefreshResponse {
    access_token: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The `exp` claim of a JWT (seconds since the Unix epoch), read without verifying the
/// token; `None` for a token that is not a JWT or has no expiry.
pub fn token_expires_at(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("exp")?.as_i64()
}

/// A token is refreshed before a sync when less than this many seconds of it remain.
pub const REFRESH_WITHIN_SECS: i64 = 300;

/// Whether a token should be refreshed before a sync at `now` (Unix seconds): it has
/// not expired yet, and less than [`REFRESH_WITHIN_SECS`] or a tenth of its lifetime
/// (`exp - iat`) remains. Tokens that are not JWTs, have no expiry, or name a role other
/// than `admin` (only admin tokens can be refreshed) are never refreshed.
pub fn token_refresh_due(token: &str, now: i64) -> bool {
    let Some(claims) = token_claims(token) else {
        return false;
    };
    let Some(exp) = claims.get("exp").and_then(Value::as_i64) else {
        return false;
    };
    if claims
        .get("role")
        .and_then(Value::as_str)
        .is_some_and(|r| r != "admin")
    {
        return false;
    }
    let remaining = exp - now;
    if remaining <= 0 {
        return false;
    }
    let lifetime = claims
        .get("iat")
        .and_then(Value::as_i64)
        .map(|iat| exp - iat)
        .filter(|l| *l > 0);
    remaining < REFRESH_WITHIN_SECS || lifetime.is_some_and(|l| remaining.saturating_mul(10) < l)
}

fn token_claims(token: &str) -> Option<serde_json::Map<String, Value>> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(o) => Some(o),
        _ => None,
    }
}

/// Makes a local file (the mirror, which holds the token) and its SQLite companions
/// readable and writable by the owner only (Unix mode 0600), whether just created or
/// found with a wider mode. Elsewhere, and for in-memory mirrors, nothing is done.
pub(crate) fn restrict_to_owner(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let text = path.display().to_string();
        if text == ":memory:" || text.starts_with("sqlite:") {
            return;
        }
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let file = PathBuf::from(format!("{text}{suffix}"));
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                if let Err(e) =
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
                {
                    tracing::warn!(file = %file.display(), error = %e, "cannot make the file private");
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

impl BlowingOffClient {
    /// Before a sync: refreshes the stored token when [`token_refresh_due`] says so, with
    /// one request (no retries). A failed refresh is logged and the sync goes on with the
    /// token it has.
    pub(crate) async fn refresh_token_if_due(&self) {
        let Ok(s) = self.inner.settings().await else {
            return;
        };
        let (Some(_), Some(token)) = (s.server_url, s.auth_token) else {
            return;
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if !token_refresh_due(&token, now) {
            return;
        }
        let once = self.inner.config.clone().with_retry(RetryPolicy::none());
        match self.refresh_token_with(&once).await {
            Ok(info) => {
                tracing::info!(expires_in = ?info.expires_in, "auth token refreshed before it expired");
            }
            Err(e) => tracing::warn!(
                error = %crate::sync::error_chain(&e),
                "the auth token expires soon and could not be refreshed; syncing with it"
            ),
        }
    }

    async fn stored_connection(&self) -> Result<(String, String), ClientError> {
        let s = self.inner.settings().await?;
        let url = s.server_url.ok_or(ClientError::NotConnected)?;
        let token = s.auth_token.ok_or_else(|| ClientError::Unauthorized {
            message: "no auth token is stored".into(),
        })?;
        Ok((url, token))
    }

    /// Asks the server whom the stored token names (`GET /api/v1/auth/me`), once: a
    /// check, not worth waiting through retries for. [`ClientError::AuthExpired`] or [`ClientError::Unauthorized`] when the
    /// server refuses it, [`ClientError::Unreachable`] when there is no answer,
    /// [`ClientError::NotConnected`] without a server URL.
    pub async fn verify_token(&self) -> Result<TokenInfo, ClientError> {
        let (url, token) = self.stored_connection().await?;
        let once = self.inner.config.clone().with_retry(RetryPolicy {
            max_retries: 0,
            ..RetryPolicy::default()
        });
        let http = Http {
            transport: self.inner.transport.as_ref(),
            base_url: &url,
            token: Some(&token),
            config: &once,
            compress: &self.inner.compress,
        };
        let mut retries = 0;
        http.call::<(), TokenInfo>(Method::Get, ME_PATH, None, &mut retries)
            .await
            .map_err(|f| f.into_client_error())
    }

    /// Exchanges the stored (admin) token for a fresh one (`POST /api/v1/auth/refresh`)
    /// and stores it. Fails like [`Self::verify_token`]; a token that has already expired
    /// cannot be refreshed (log in again).
    pub async fn refresh_token(&self) -> Result<LoginInfo, ClientError> {
        self.refresh_token_with(&self.inner.config).await
    }

    async fn refresh_token_with(&self, config: &ClientConfig) -> Result<LoginInfo, ClientError> {
        let (url, token) = self.stored_connection().await?;
        let http = Http {
            transport: self.inner.transport.as_ref(),
            base_url: &url,
            token: Some(&token),
            config,
            compress: &self.inner.compress,
        };
        let mut retries = 0;
        let resp: RefreshResponse = http
            .call::<(), _>(
                Method::Post,
                REFRESH_PATH,
                None::<&'static ()>,
                &mut retries,
            )
            .await
            .map_err(|f| f.into_client_error())?;
        self.connect(&url, Some(&resp.access_token)).await?;
        Ok(LoginInfo {
            user_id: self.user_id(),
            role: resp.role,
            expires_in: resp.expires_in,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &Value) -> String {
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        format!(
            "{}.{}.sig",
            enc(br#"{"alg":"HS256","typ":"JWT"}"#),
            enc(claims.to_string().as_bytes())
        )
    }

    #[test]
    fn refresh_is_due_near_the_end_of_a_lifetime() {
        let now = 1_700_000_000;
        let t = |iat: i64, exp: i64| {
            jwt(&serde_json::json!({"sub": "admin", "role": "admin", "iat": iat, "exp": exp}))
        };
        // 7 days: not at 2 days left, but at 16 hours (under a tenth).
        let week = 7 * 86_400;
        assert!(!token_refresh_due(
            &t(now - 5 * 86_400, now - 5 * 86_400 + week),
            now
        ));
        assert!(token_refresh_due(
            &t(now - week + 57_600, now + 57_600),
            now
        ));
        // Short-lived: under 5 minutes left is due whatever the lifetime.
        assert!(token_refresh_due(&t(now - 10, now + 290), now));
        assert!(!token_refresh_due(&t(now - 10, now + 3_600), now));
        // Expired, guest, or no expiry: never.
        assert!(!token_refresh_due(&t(now - 100, now - 1), now));
        let guest = jwt(&serde_json::json!({"sub": "guest_1", "role": "guest", "exp": now + 10}));
        assert!(!token_refresh_due(&guest, now));
        assert!(!token_refresh_due("opaque-token", now));
    }

    #[cfg(unix)]
    #[test]
    fn the_mirror_is_made_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("m.db");
        std::fs::write(&db, b"x").unwrap();
        std::fs::write(dir.path().join("m.db-wal"), b"x").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict_to_owner(&db);
        for f in ["m.db", "m.db-wal"] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
    }

    #[test]
    fn expiry_is_read_from_the_claims() {
        let t = jwt(&serde_json::json!({"sub": "admin", "exp": 1_700_000_000}));
        assert_eq!(token_expires_at(&t), Some(1_700_000_000));
        let t = jwt(&serde_json::json!({"sub": "admin"}));
        assert_eq!(token_expires_at(&t), None);
        assert_eq!(token_expires_at("not-a-jwt"), None);
        assert_eq!(token_expires_at("a.%%%.c"), None);
    }
}
