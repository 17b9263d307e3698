//! Authentication: the admin password (argon2), HS256 bearer tokens, guest grants and the login rate limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use argon2::password_hash::SaltString;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts};
use base64::Engine as _;
use inbetweenies_proto::Timestamp;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AdminPassword;
use crate::error::{ApiError, ServerError};
use crate::state::AppState;

/// The permissions of an admin token, as the reference grants them.
pub const ADMIN_PERMISSIONS: &[&str] = &["read", "write", "delete", "configure"];
/// Device owners cached, at most, by default (`--device-owner-cache`; the store keeps
/// them all, `goodies_store::owners`).
pub const DEFAULT_DEVICE_OWNER_CACHE: usize = 100_000;
/// Verified bearer tokens cached, at most, by default (`--token-cache`; past that the
/// cache starts over).
pub const DEFAULT_TOKEN_CACHE: usize = 10_000;

/// The permissions of a guest token.
pub const GUEST_PERMISSIONS: &[&str] = &["read"];

/// The payload of a bearer token (the reference's fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who: `admin`, or `guest_` and the first 8 characters of the guest token.
    pub sub: String,
    /// `admin` or `guest`.
    pub role: String,
    /// What the token may do: `read`, `write`, `delete`, `configure`.
    pub permissions: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issue time, seconds since the Unix epoch.
    pub iat: i64,
}

impl Claims {
    /// Whether the token may change data.
    pub fn can_write(&self) -> bool {
        self.permissions.iter().any(|p| p == "write")
    }

    /// Whether this is an admin token.
    pub fn is_admin(&self) -> bool {
        self.role == "admin"
    }
}

/// A guest grant made by `generate-qr`.
#[derive(Clone, Debug)]
pub(crate) struct GuestGrant {
    pub token: String,
    pub subject: String,
    pub created_at: Timestamp,
    /// Expiry.
    pub expires: Timestamp,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: i64,
    pub revoked: bool,
    /// The base URL the grant's QR code names when the admin gave `custom_server`.
    pub server_url: Option<String>,
}

/// What verifying a guest grant gives: the guest JWT, its remaining lifetime in
/// seconds, and the grant's `custom_server` URL, if any.
#[derive(Clone, Debug)]
pub(crate) struct GuestLogin {
    pub jwt: String,
    pub expires_in: i64,
    pub server_url: Option<String>,
}

/// Keys, the admin password hash, guest grants and login failures.
pub(crate) struct AuthService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    admin_hash: Option<Arc<str>>,
    admin_ttl: Duration,
    guests: Mutex<HashMap<String, GuestGrant>>,
    /// Which token subject first synced as each device (for `/sync/ack`), as the store
    /// recorded it: an owner never changes once recorded, so a cached one is never stale.
    devices: Mutex<HashMap<String, String>>,
    /// Tokens whose signature was checked, with their claims: a token seen again is
    /// answered without parsing and hashing it again, until its expiry.
    verified: Mutex<HashMap<Box<str>, Claims>>,
    failures: Mutex<HashMap<Option<IpAddr>, VecDeque<Instant>>>,
    max_failures: u32,
    window: Duration,
    /// At most this many entries in `devices` (0: none cached).
    max_devices: usize,
    /// At most this many entries in `verified` (0: none cached).
    max_tokens: usize,
}

impl std::fmt::Debug for AuthService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthService")
            .field("admin_password_set", &self.admin_hash.is_some())
            .field("admin_ttl", &self.admin_ttl)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned map is still consistent (every update is a single insert/remove).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_secs() -> i64 {
    Timestamp::now().unix_micros() / 1_000_000
}

impl GuestGrant {
    /// The grant as the store keeps it.
    pub fn record(&self) -> goodies_store::GuestGrantRecord {
        goodies_store::GuestGrantRecord {
            subject: self.subject.clone(),
            token: self.token.clone(),
            created_at_us: self.created_at.unix_micros(),
            expires_at_us: self.expires.unix_micros(),
            revoked: self.revoked,
            server_url: self.server_url.clone(),
        }
    }
}

impl AuthService {
    /// Sets up auth: hashes a plain password (off the async threads) or checks a given hash.
    pub async fn new(
        password: Option<AdminPassword>,
        jwt_secret: &str,
        admin_ttl: Duration,
        max_failures: u32,
        window: Duration,
    ) -> Result<Self, ServerError> {
        let admin_hash: Option<Arc<str>> = match password {
            None => None,
            Some(AdminPassword::Hash(h)) => {
                PasswordHash::new(&h).map_err(|e| {
                    ServerError::Config(format!("admin password hash is not a PHC string: {e}"))
                })?;
                Some(h.into())
            }
            Some(AdminPassword::Plain(p)) => {
                let hash = tokio::task::spawn_blocking(move || hash_password(&p)).await??;
                Some(hash.into())
            }
        };
        Ok(AuthService {
            encoding: EncodingKey::from_secret(jwt_secret.as_bytes()),
            decoding: DecodingKey::from_secret(jwt_secret.as_bytes()),
            admin_hash,
            admin_ttl,
            guests: Mutex::new(HashMap::new()),
            devices: Mutex::new(HashMap::new()),
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            max_failures,
            window,
            max_devices: DEFAULT_DEVICE_OWNER_CACHE,
            max_tokens: DEFAULT_TOKEN_CACHE,
        })
    }

    /// Caps the caches of verified tokens and device owners (0: nothing cached).
    pub(crate) fn with_cache_caps(mut self, tokens: usize, devices: usize) -> Self {
        self.max_tokens = tokens;
        self.max_devices = devices;
        self
    }

    /// How many verified tokens and device owners are cached now.
    pub(crate) fn cached(&self) -> (usize, usize) {
        (lock(&self.verified).len(), lock(&self.devices).len())
    }

    /// Checks the admin password (off the async threads).
    pub async fn verify_admin_password(&self, password: String) -> Result<bool, ApiError> {
        let Some(hash) = self.admin_hash.clone() else {
            return Ok(false);
        };
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(|e| ApiError::internal(&e))
    }

    /// Takes one login attempt for this address, counted as a failure until
    /// [`Self::clear_failures`] says it succeeded: the check and the count are one step
    /// under one lock, before any password is checked, so concurrent attempts cannot
    /// all pass the check. `Err(seconds to wait)` when the address has used up its
    /// attempts in the window.
    pub fn begin_attempt(&self, ip: Option<IpAddr>) -> Result<(), u64> {
        let mut map = lock(&self.failures);
        let now = Instant::now();
        let q = map.entry(ip).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.max_failures as usize {
            let oldest = q.front().copied().unwrap_or(now);
            let left = self.window.saturating_sub(now.duration_since(oldest));
            return Err(left.as_secs() + u64::from(left.subsec_nanos() > 0));
        }
        q.push_back(now);
        Ok(())
    }

    /// Records in the store that `subject` syncs as `device`, unless another subject did
    /// first (on any server process sharing the store). Only a device not seen yet costs
    /// a store round trip; at most `--device-owner-cache` owners are cached.
    pub async fn claim_device(
        &self,
        store: &dyn goodies_store::ServerStore,
        device: &str,
        subject: &str,
    ) -> Result<(), goodies_store::StoreError> {
        if lock(&self.devices).contains_key(device) {
            return Ok(());
        }
        let owner = store.claim_device(device, subject).await?;
        self.cache_owner(device, owner);
        Ok(())
    }

    fn cache_owner(&self, device: &str, owner: String) {
        let mut devices = lock(&self.devices);
        if devices.len() < self.max_devices {
            devices.insert(device.to_owned(), owner);
        }
    }

    /// Whether a token may confirm `device`'s watermark: admin tokens may confirm any;
    /// others only a device their subject synced as first (as the store recorded it, so
    /// after a restart and on every server process sharing the store).
    pub async fn owns_device(
        &self,
        store: &dyn goodies_store::ServerStore,
        claims: &Claims,
        device: &str,
    ) -> Result<bool, goodies_store::StoreError> {
        if claims.is_admin() {
            return Ok(true);
        }
        let cached = lock(&self.devices).get(device).cloned();
        let owner = match cached {
            Some(owner) => Some(owner),
            None => {
                let owner = store.device_owner(device).await?;
                if let Some(o) = &owner {
                    self.cache_owner(device, o.clone());
                }
                owner
            }
        };
        Ok(owner.as_deref() == Some(claims.sub.as_str()))
    }

    /// Forgets failed logins after a success.
    pub fn clear_failures(&self, ip: Option<IpAddr>) {
        lock(&self.failures).remove(&ip);
    }

    /// Signs claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, ApiError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| ApiError::internal(&e))
    }

    /// A fresh admin token and its lifetime in seconds.
    pub fn admin_token(&self) -> Result<(String, u64), ApiError> {
        let iat = now_secs();
        let ttl = self.admin_ttl.as_secs();
        let claims = Claims {
            sub: "admin".into(),
            role: "admin".into(),
            permissions: ADMIN_PERMISSIONS.iter().map(|s| (*s).to_owned()).collect(),
            exp: iat.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            iat,
        };
        Ok((self.sign(&claims)?, ttl))
    }

    /// Verifies a bearer token, guest grants as this process knows them (the rate limit's
    /// check; a request's caller is checked against the store, [`Self::verify_caller`]).
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let claims = self.verify_signature(token)?;
        if claims.role == "guest" {
            let guests = lock(&self.guests);
            match guests.get(&claims.sub) {
                Some(g) if !g.revoked => {}
                _ => return Err(ApiError::invalid_token(false)),
            }
        }
        Ok(claims)
    }

    /// Verifies a bearer token; a guest token only while the store holds its grant
    /// unrevoked, read on every request, so a grant made or revoked through any server
    /// process sharing the store counts at once.
    pub async fn verify_caller(
        &self,
        store: &dyn goodies_store::ServerStore,
        token: &str,
    ) -> Result<Claims, ApiError> {
        let claims = self.verify_signature(token)?;
        if claims.role == "guest" {
            let grant = store.guest_grant(&claims.sub).await?;
            let active = grant.as_ref().is_some_and(|g| !g.revoked);
            if let Some(g) = grant {
                self.load_guests(vec![g]);
            }
            if !active {
                return Err(ApiError::invalid_token(false));
            }
        }
        Ok(claims)
    }

    /// Checks a token's signature and expiry (HS256, no leeway). A token verified
    /// before is answered from a cache until its expiry: the key never changes while
    /// the server runs, so the same bytes verify the same way.
    fn verify_signature(&self, token: &str) -> Result<Claims, ApiError> {
        let now = now_secs();
        if let Some(c) = lock(&self.verified).get(token) {
            // Expired (or about to be): decoded again below, which says so.
            if c.exp > now {
                return Ok(c.clone());
            }
        }
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v).map_err(|e| {
            ApiError::invalid_token(matches!(e.kind(), ErrorKind::ExpiredSignature))
        })?;
        let claims = data.claims;
        let mut verified = lock(&self.verified);
        if verified.len() >= self.max_tokens {
            verified.clear();
        }
        if claims.exp > now && self.max_tokens > 0 {
            verified.insert(token.into(), claims.clone());
        } else {
            verified.remove(token);
        }
        Ok(claims)
    }

    /// Makes a guest grant lasting `hours`, naming `server_url` when the admin chose one.
    pub fn create_guest(&self, hours: f64, server_url: Option<String>) -> GuestGrant {
        let bytes: [u8; 32] = rand::random();
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let subject = format!("guest_{}", &token[..8]);
        let secs = (hours * 3600.0).round().clamp(1.0, 10.0 * 365.0 * 86_400.0) as i64;
        let created_at = Timestamp::now();
        let expires = created_at.saturating_add_micros(secs * 1_000_000);
        let grant = GuestGrant {
            token,
            subject: subject.clone(),
            created_at,
            expires,
            expires_at: expires.unix_micros() / 1_000_000,
            revoked: false,
            server_url,
        };
        lock(&self.guests).insert(subject, grant.clone());
        grant
    }

    /// Exchanges a guest grant's token for a guest JWT; the grant is read from the store,
    /// so one made or revoked through any server process sharing it counts.
    pub async fn verify_guest(
        &self,
        store: &dyn goodies_store::ServerStore,
        token: &str,
    ) -> Result<GuestLogin, ApiError> {
        if let Some(g) = store.guest_grant_by_token(token).await? {
            self.load_guests(vec![g]);
        }
        let grant = lock(&self.guests)
            .values()
            .find(|g| g.token == token)
            .cloned();
        let now = now_secs();
        let grant = match grant {
            Some(g) if !g.revoked && g.expires_at > now => g,
            _ => {
                return Err(ApiError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    inbetweenies_proto::ErrorCode::Unauthorized,
                    "Invalid or expired guest token",
                ))
            }
        };
        let claims = Claims {
            sub: grant.subject.clone(),
            role: "guest".into(),
            permissions: GUEST_PERMISSIONS.iter().map(|s| (*s).to_owned()).collect(),
            exp: grant.expires_at,
            iat: now,
        };
        Ok(GuestLogin {
            jwt: self.sign(&claims)?,
            expires_in: grant.expires_at - now,
            server_url: grant.server_url,
        })
    }

    /// Takes in the grants kept in the store (at start).
    pub fn load_guests(&self, grants: Vec<goodies_store::GuestGrantRecord>) {
        let mut guests = lock(&self.guests);
        for g in grants {
            let (Ok(created_at), Ok(expires)) = (
                Timestamp::from_unix_micros(g.created_at_us),
                Timestamp::from_unix_micros(g.expires_at_us),
            ) else {
                continue;
            };
            guests.insert(
                g.subject.clone(),
                GuestGrant {
                    token: g.token,
                    subject: g.subject,
                    created_at,
                    expires,
                    expires_at: g.expires_at_us / 1_000_000,
                    revoked: g.revoked,
                    server_url: g.server_url,
                },
            );
        }
    }

    /// Every guest grant, oldest first.
    pub fn guests(&self) -> Vec<GuestGrant> {
        let mut v: Vec<GuestGrant> = lock(&self.guests).values().cloned().collect();
        v.sort_by_key(|g| g.created_at);
        v
    }

    /// Revokes a grant by its token or its subject, in the store and here; its subject,
    /// `None` when no grant has that token or subject (on any server process).
    pub async fn revoke_guest_everywhere(
        &self,
        store: &dyn goodies_store::ServerStore,
        token_or_subject: &str,
    ) -> Result<Option<String>, ApiError> {
        let stored = match store.guest_grant_by_token(token_or_subject).await? {
            Some(g) => Some(g),
            None => store.guest_grant(token_or_subject).await?,
        };
        if let Some(g) = stored {
            self.load_guests(vec![g]);
        }
        let Some(subject) = self.revoke_guest(token_or_subject) else {
            return Ok(None);
        };
        store.revoke_guest_grant(&subject).await?;
        Ok(Some(subject))
    }

    /// Revokes a grant by its token or its subject; its subject, `None` when unknown.
    pub fn revoke_guest(&self, token_or_subject: &str) -> Option<String> {
        let mut guests = lock(&self.guests);
        let key = guests
            .values()
            .find(|g| g.token == token_or_subject || g.subject == token_or_subject)
            .map(|g| g.subject.clone());
        match key.and_then(|k| guests.get_mut(&k)) {
            Some(g) => {
                g.revoked = true;
                Some(g.subject.clone())
            }
            None => None,
        }
    }
}

fn hash_password(password: &str) -> Result<String, ServerError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|e| ServerError::Config(format!("cannot make a password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServerError::Config(format!("cannot hash the admin password: {e}")))
}

/// The verified caller of a request (any valid bearer token).
#[derive(Clone, Debug)]
pub(crate) struct Caller(pub Claims);

impl Caller {
    /// 403 unless the token may write.
    pub fn require_write(&self) -> Result<(), ApiError> {
        if self.0.can_write() {
            Ok(())
        } else {
            Err(ApiError::forbidden("Write permission required"))
        }
    }

    /// 403 unless this is an admin token.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.0.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("Admin access required"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let (scheme, token) = value.trim().split_once(' ').unwrap_or((value, ""));
        let token = token.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(ApiError::not_authenticated());
        }
        let claims = state
            .auth
            .verify_caller(state.store.as_ref(), token)
            .await?;
        tracing::Span::current().record("user", claims.sub.as_str());
        Ok(Caller(claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn service() -> AuthService {
        AuthService::new(
            Some(AdminPassword::Plain("pw".into())),
            "secret",
            Duration::from_secs(60),
            2,
            Duration::from_secs(300),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn password_and_tokens() {
        let a = service().await;
        assert!(a.verify_admin_password("pw".into()).await.unwrap());
        assert!(!a.verify_admin_password("nope".into()).await.unwrap());
        let (t, ttl) = a.admin_token().unwrap();
        assert_eq!(ttl, 60);
        let c = a.verify(&t).unwrap();
        assert!(c.is_admin() && c.can_write());
        assert!(a.verify("not-a-jwt").is_err());
    }

    #[tokio::test]
    async fn expired_tokens_say_so() {
        let a = service().await;
        let now = now_secs();
        let t = a
            .sign(&Claims {
                sub: "admin".into(),
                role: "admin".into(),
                permissions: vec![],
                exp: now - 10,
                iat: now - 20,
            })
            .unwrap();
        let e = a.verify(&t).unwrap_err();
        assert_eq!(
            e.body.error.code,
            inbetweenies_proto::ErrorCode::AuthExpired
        );
    }

    #[tokio::test]
    async fn guests_are_read_only_and_revocable() {
        let a = service().await;
        let store = goodies_store::open_server_store(
            "sqlite::memory:",
            goodies_store::StoreOptions::default(),
        )
        .await
        .unwrap();
        let store = store.as_ref();
        let g = a.create_guest(1.0, None);
        store.put_guest_grant(&g.record()).await.unwrap();
        let login = a.verify_guest(store, &g.token).await.unwrap();
        assert!((3590..=3600).contains(&login.expires_in));
        assert_eq!(login.server_url, None);
        let jwt = login.jwt;
        let c = a.verify_caller(store, &jwt).await.unwrap();
        assert!(!c.can_write() && !c.is_admin());
        assert!(a.verify(&jwt).is_ok());
        assert!(a
            .revoke_guest_everywhere(store, &g.token)
            .await
            .unwrap()
            .is_some());
        assert!(a.verify(&jwt).is_err());
        assert!(a.verify_caller(store, &jwt).await.is_err());
        assert!(a.verify_guest(store, &g.token).await.is_err());
        let g = a.create_guest(1.0, Some("http://10.0.0.2:8000".into()));
        store.put_guest_grant(&g.record()).await.unwrap();
        let login = a.verify_guest(store, &g.token).await.unwrap();
        assert_eq!(login.server_url.as_deref(), Some("http://10.0.0.2:8000"));
    }

    #[tokio::test]
    async fn a_verified_token_is_cached_until_its_expiry_and_a_forged_one_never() {
        let a = service().await;
        let (t, _) = a.admin_token().unwrap();
        assert!(a.verify(&t).is_ok());
        assert!(a.verify(&t).is_ok(), "from the cache");
        assert_eq!(lock(&a.verified).len(), 1);
        // A token with the same claims but another signature is not in the cache.
        let forged = format!("{}x", &t[..t.len() - 1]);
        assert!(a.verify(&forged).is_err());
        // A cached token past its expiry is not answered from the cache: it is decoded
        // again and refused with the expiry error.
        let now = now_secs();
        let claims = Claims {
            sub: "admin".into(),
            role: "admin".into(),
            permissions: vec![],
            exp: now - 1,
            iat: now - 10,
        };
        let expired = a.sign(&claims).unwrap();
        lock(&a.verified).insert(expired.as_str().into(), claims);
        let e = a.verify(&expired).unwrap_err();
        assert_eq!(
            e.body.error.code,
            inbetweenies_proto::ErrorCode::AuthExpired
        );
    }

    #[tokio::test]
    async fn rate_limit_counts_failures_per_address() {
        let a = service().await;
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        assert!(a.begin_attempt(ip).is_ok());
        assert!(a.begin_attempt(ip).is_ok());
        let wait = a.begin_attempt(ip).unwrap_err();
        assert!((299..=300).contains(&wait));
        assert!(a.begin_attempt(Some(IpAddr::from([127, 0, 0, 2]))).is_ok());
        a.clear_failures(ip);
        assert!(a.begin_attempt(ip).is_ok());
    }
}
