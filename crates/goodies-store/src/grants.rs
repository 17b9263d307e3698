//! Guest grants kept in the store, so that the guest access a server handed out
//! survives its restart: the grant's token, its subject, its lifetime, whether it was
//! revoked and the server URL its QR code named.

use async_trait::async_trait;

use crate::error::Result;

/// One guest grant as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestGrantRecord {
    /// `guest_` and the first 8 characters of the token; unique.
    pub subject: String,
    /// The grant's secret token (exchanged for a guest bearer token); unique.
    pub token: String,
    /// When it was made, microseconds since the Unix epoch.
    pub created_at_us: i64,
    /// When it expires, microseconds since the Unix epoch.
    pub expires_at_us: i64,
    /// Whether an admin revoked it.
    pub revoked: bool,
    /// The base URL the grant's QR code named, when the admin chose one.
    pub server_url: Option<String>,
}

/// Where guest grants are kept.
#[async_trait]
pub trait GuestGrants: Send + Sync {
    /// Stores a new grant (or replaces the one with its subject).
    async fn put_guest_grant(&self, grant: &GuestGrantRecord) -> Result<()>;

    /// Every grant, oldest first.
    async fn guest_grants(&self) -> Result<Vec<GuestGrantRecord>>;

    /// Marks a grant revoked; false when no grant has that subject.
    async fn revoke_guest_grant(&self, subject: &str) -> Result<bool>;

    /// The grant with this subject, as stored now (made or revoked by any process).
    async fn guest_grant(&self, subject: &str) -> Result<Option<GuestGrantRecord>>;

    /// The grant with this secret token, as stored now.
    async fn guest_grant_by_token(&self, token: &str) -> Result<Option<GuestGrantRecord>>;
}
