//! Resumable blob uploads on PostgreSQL: the row in `blob_uploads` says how many bytes
//! count; each append is one `blob_chunks` row written in the transaction that moves the
//! offset, so every server process sees the same upload and two appenders cannot both win.
//! Appends commit without waiting for the WAL flush (`synchronous_commit = off`, piece and
//! offset atomically); completing a blob waits for it, and so for every append before.

use async_trait::async_trait;
use sqlx::Row;

use super::{db, PgStore};
use crate::blob_upload::{is_blob_address, BlobState, BlobUploads};
use crate::error::{Result, StoreError};

fn address(sha256: &str) -> Result<()> {
    if is_blob_address(sha256) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{sha256:?} is not a blob address (64 lowercase hex digits)"
        )))
    }
}

fn size(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

#[async_trait]
impl BlobUploads for PgStore {
    async fn blob_state(&self, sha256: &str) -> Result<BlobState> {
        address(sha256)?;
        let row = sqlx::query(
            "SELECT total_size, received, content_type, complete FROM blob_uploads WHERE sha256 = $1",
        )
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(BlobState::Absent);
        };
        let total = size(row.try_get(0).map_err(db)?);
        let received = size(row.try_get(1).map_err(db)?);
        let content_type: String = row.try_get(2).map_err(db)?;
        Ok(if row.try_get::<bool, _>(3).map_err(db)? {
            BlobState::Complete {
                size: total,
                content_type,
            }
        } else {
            BlobState::Partial {
                received,
                total,
                content_type,
            }
        })
    }

    async fn begin_blob(&self, sha256: &str, total: u64, content_type: &str) -> Result<BlobState> {
        address(sha256)?;
        let total_i =
            i64::try_from(total).map_err(|_| StoreError::Invalid("blob too large".into()))?;
        sqlx::query(
            "INSERT INTO blob_uploads (sha256, total_size, received, content_type, complete, created_at, updated_at) \
             VALUES ($1, $2, 0, $3, false, goodies_now_us(), goodies_now_us()) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(total_i)
        .bind(content_type)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        let state = self.blob_state(sha256).await?;
        match &state {
            BlobState::Partial { total: t, .. } if *t != total => Err(StoreError::Conflict(
                format!("an upload of {sha256} with {t} bytes is in progress"),
            )),
            BlobState::Complete { size, .. } if *size != total => Err(StoreError::Conflict(
                format!("blob {sha256} is held with {size} bytes"),
            )),
            _ => Ok(state),
        }
    }

    async fn append_blob(&self, sha256: &str, offset: u64, bytes: Vec<u8>) -> Result<u64> {
        address(sha256)?;
        let start = i64::try_from(offset).map_err(|_| StoreError::Invalid("offset".into()))?;
        let end = start + bytes.len() as i64;
        let mut tx = self.begin().await?;
        // The piece and the offset commit together, so a database crash can only take
        // back the last appends with their offset (the client resumes from the offset
        // it is told): no need to wait for the WAL flush of each piece. Completing the
        // blob is a synchronous commit, which flushes every append before it.
        sqlx::query("SET LOCAL synchronous_commit = off")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let moved = sqlx::query(
            "UPDATE blob_uploads SET received = $3, updated_at = goodies_now_us() \
             WHERE sha256 = $1 AND received = $2 AND NOT complete AND total_size >= $3",
        )
        .bind(sha256)
        .bind(start)
        .bind(end)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if moved == 0 {
            drop(tx);
            return Err(match self.blob_state(sha256).await? {
                BlobState::Absent => StoreError::NotFound(format!("upload {sha256}")),
                BlobState::Partial { total, .. } if end as u64 > total => {
                    StoreError::Invalid(format!("{end} bytes is more than the declared {total}"))
                }
                BlobState::Partial { received, .. } => StoreError::Conflict(format!(
                    "upload {sha256} holds {received} bytes, not {offset}"
                )),
                BlobState::Complete { .. } => {
                    StoreError::Conflict(format!("blob {sha256} is complete"))
                }
            });
        }
        // Chunks at or past the offset are what an earlier append left behind unfinished.
        sqlx::query("DELETE FROM blob_chunks WHERE sha256 = $1 AND start_offset >= $2")
            .bind(sha256)
            .bind(start)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if !bytes.is_empty() {
            sqlx::query(
                "INSERT INTO blob_chunks (sha256, start_offset, bytes) VALUES ($1, $2, $3)",
            )
            .bind(sha256)
            .bind(start)
            .bind(bytes)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(end as u64)
    }

    async fn read_blob_bytes(&self, sha256: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let held = match self.blob_state(sha256).await? {
            BlobState::Complete { size, .. } => size,
            BlobState::Partial { received, .. } => received,
            BlobState::Absent => return Err(StoreError::NotFound(format!("blob {sha256}"))),
        };
        if offset >= held || len == 0 {
            return Ok(Vec::new());
        }
        let end = held.min(offset.saturating_add(len));
        let (start_i, end_i) = (offset as i64, end as i64);
        // Only the parts of the chunks in the range are fetched (EXTERNAL storage).
        let rows = sqlx::query(
            "SELECT start_offset, substring(bytes FROM greatest($2 - start_offset, 0)::int + 1 \
                 FOR (least($3, start_offset + length(bytes)) - greatest($2, start_offset))::int) \
             FROM blob_chunks WHERE sha256 = $1 AND start_offset < $3 \
               AND start_offset + length(bytes) > $2 ORDER BY start_offset",
        )
        .bind(sha256)
        .bind(start_i)
        .bind(end_i)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
        for row in rows {
            let part: Vec<u8> = row.try_get(1).map_err(db)?;
            out.extend_from_slice(&part);
        }
        if out.len() as u64 != end - offset {
            return Err(StoreError::Corrupt(format!(
                "blob {sha256}: {} bytes read of {}",
                out.len(),
                end - offset
            )));
        }
        Ok(out)
    }

    async fn complete_blob(&self, sha256: &str) -> Result<()> {
        address(sha256)?;
        let done = sqlx::query(
            "UPDATE blob_uploads SET complete = true, updated_at = goodies_now_us() \
             WHERE sha256 = $1 AND received = total_size",
        )
        .bind(sha256)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if done == 0 {
            return match self.blob_state(sha256).await? {
                BlobState::Absent => Err(StoreError::NotFound(format!("upload {sha256}"))),
                BlobState::Partial {
                    received, total, ..
                } => Err(StoreError::Invalid(format!(
                    "upload {sha256} holds {received} of {total} bytes"
                ))),
                BlobState::Complete { .. } => Ok(()),
            };
        }
        Ok(())
    }

    async fn discard_blob_upload(&self, sha256: &str) -> Result<()> {
        address(sha256)?;
        sqlx::query("DELETE FROM blob_uploads WHERE sha256 = $1 AND NOT complete")
            .bind(sha256)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}
