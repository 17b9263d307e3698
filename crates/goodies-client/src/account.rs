//! The stored token against the server: check it (`GET /api/v1/auth/me`), read its expiry
//! locally, and exchange it for a fresh one (`POST /api/v1/auth/refresh`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::client::{BlowingOffClient, LoginInfo};
use crate::config::RetryPolicy;
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

impl BlowingOffClient {
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
        let (url, token) = self.stored_connection().await?;
        let http = Http {
            transport: self.inner.transport.as_ref(),
            base_url: &url,
            token: Some(&token),
            config: &self.inner.config,
            compress: &self.inner.compress,
        };
        let mut retries = 0;
        let resp: RefreshResponse = http
            .call::<(), _>(Method::Post, REFRESH_PATH, None, &mut retries)
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
    fn expiry_is_read_from_the_claims() {
        let t = jwt(&serde_json::json!({"sub": "admin", "exp": 1_700_000_000}));
        assert_eq!(token_expires_at(&t), Some(1_700_000_000));
        let t = jwt(&serde_json::json!({"sub": "admin"}));
        assert_eq!(token_expires_at(&t), None);
        assert_eq!(token_expires_at("not-a-jwt"), None);
        assert_eq!(token_expires_at("a.%%%.c"), None);
    }
}
