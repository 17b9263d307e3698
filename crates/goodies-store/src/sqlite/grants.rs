//! Guest grants in the `guest_grants` table (`crate::grants`).

use async_trait::async_trait;
use sqlx::Row;

use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::grants::{GuestGrantRecord, GuestGrants};

#[async_trait]
impl GuestGrants for SqliteStore {
    async fn put_guest_grant(&self, g: &GuestGrantRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO guest_grants \
             (subject, token, created_at_us, expires_at_us, revoked, server_url) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (subject) DO UPDATE SET token = excluded.token, \
             created_at_us = excluded.created_at_us, expires_at_us = excluded.expires_at_us, \
             revoked = excluded.revoked, server_url = excluded.server_url",
        )
        .bind(&g.subject)
        .bind(&g.token)
        .bind(g.created_at_us)
        .bind(g.expires_at_us)
        .bind(g.revoked)
        .bind(&g.server_url)
        .execute(&self.pool)
        .await
        .map_err(StoreError::database)?;
        Ok(())
    }

    async fn guest_grants(&self) -> Result<Vec<GuestGrantRecord>> {
        let rows = sqlx::query(
            "SELECT subject, token, created_at_us, expires_at_us, revoked, server_url \
             FROM guest_grants ORDER BY created_at_us, subject",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::database)?;
        rows.iter().map(grant_row).collect()
    }

    async fn revoke_guest_grant(&self, subject: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE guest_grants SET revoked = TRUE WHERE subject = $1")
            .bind(subject)
            .execute(&self.pool)
            .await
            .map_err(StoreError::database)?;
        Ok(done.rows_affected() > 0)
    }

    async fn guest_grant(&self, subject: &str) -> Result<Option<GuestGrantRecord>> {
        sqlx::query(
            "SELECT subject, token, created_at_us, expires_at_us, revoked, server_url \
             FROM guest_grants WHERE subject = $1",
        )
        .bind(subject)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database)?
        .as_ref()
        .map(grant_row)
        .transpose()
    }

    async fn guest_grant_by_token(&self, token: &str) -> Result<Option<GuestGrantRecord>> {
        sqlx::query(
            "SELECT subject, token, created_at_us, expires_at_us, revoked, server_url \
             FROM guest_grants WHERE token = $1",
        )
        .bind(token)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database)?
        .as_ref()
        .map(grant_row)
        .transpose()
    }
}

fn grant_row(r: &sqlx::sqlite::SqliteRow) -> Result<GuestGrantRecord> {
    Ok(GuestGrantRecord {
        subject: r.try_get("subject").map_err(StoreError::database)?,
        token: r.try_get("token").map_err(StoreError::database)?,
        created_at_us: r.try_get("created_at_us").map_err(StoreError::database)?,
        expires_at_us: r.try_get("expires_at_us").map_err(StoreError::database)?,
        revoked: r.try_get("revoked").map_err(StoreError::database)?,
        server_url: r.try_get("server_url").map_err(StoreError::database)?,
    })
}
