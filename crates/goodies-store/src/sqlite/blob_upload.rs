//! Resumable blob uploads on SQLite: the row in `blob_uploads` says how many bytes count;
//! the bytes are a file beside the database, synced and renamed into place once complete.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use async_trait::async_trait;
use inbetweenies_proto::Timestamp;
use sqlx::Row;

use super::SqliteStore;
use crate::blob_upload::{is_blob_address, BlobState, BlobUploads};
use crate::error::{Result, StoreError};

fn db(e: sqlx::Error) -> StoreError {
    StoreError::database(e)
}

fn address(sha256: &str) -> Result<()> {
    if is_blob_address(sha256) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "{sha256:?} is not a blob address (64 lowercase hex digits)"
        )))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
        .map_err(StoreError::Io)
}

impl SqliteStore {
    fn part_path(&self, sha256: &str) -> PathBuf {
        self.blobs
            .root()
            .join("uploads")
            .join(format!("{sha256}.part"))
    }
}

#[async_trait]
impl BlobUploads for SqliteStore {
    async fn blob_state(&self, sha256: &str) -> Result<BlobState> {
        address(sha256)?;
        let row = sqlx::query(
            "SELECT total_size, received, content_type, complete FROM blob_uploads WHERE sha256 = ?",
        )
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(BlobState::Absent);
        };
        let total = row.try_get::<i64, _>(0).map_err(db)? as u64;
        let received = row.try_get::<i64, _>(1).map_err(db)? as u64;
        let content_type: String = row.try_get(2).map_err(db)?;
        Ok(if row.try_get::<i64, _>(3).map_err(db)? != 0 {
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
        let now = Timestamp::now().unix_micros();
        sqlx::query(
            "INSERT INTO blob_uploads (sha256, total_size, received, content_type, complete, created_at, updated_at) \
             VALUES (?, ?, 0, ?, 0, ?, ?) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(total_i)
        .bind(content_type)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        let mut state = self.blob_state(sha256).await?;
        if let BlobState::Partial { received, .. } = &mut state {
            // The file holds fewer bytes than the row counts (the machine crashed before
            // they reached the disk): the upload goes on from what the file holds.
            let path = self.part_path(sha256);
            let len = blocking(move || match std::fs::metadata(path) {
                Ok(m) => Ok(m.len()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                Err(e) => Err(e),
            })
            .await?;
            if len < *received {
                tracing::warn!(
                    sha256,
                    held = *received,
                    file = len,
                    "blob upload file shorter than its row: resuming from the file"
                );
                sqlx::query(
                    "UPDATE blob_uploads SET received = ? WHERE sha256 = ? AND received = ? AND complete = 0",
                )
                .bind(len as i64)
                .bind(sha256)
                .bind(*received as i64)
                .execute(&self.pool)
                .await
                .map_err(db)?;
                *received = len;
            }
        }
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
        let (received, total) = match self.blob_state(sha256).await? {
            BlobState::Partial {
                received, total, ..
            } => (received, total),
            BlobState::Complete { .. } => {
                return Err(StoreError::Conflict(format!("blob {sha256} is complete")))
            }
            BlobState::Absent => return Err(StoreError::NotFound(format!("upload {sha256}"))),
        };
        if offset != received {
            return Err(StoreError::Conflict(format!(
                "upload {sha256} holds {received} bytes, not {offset}"
            )));
        }
        let end = received + bytes.len() as u64;
        if end > total {
            return Err(StoreError::Invalid(format!(
                "{end} bytes is more than the declared {total}"
            )));
        }
        let path = self.part_path(sha256);
        // Bytes past the held offset (an append that died before its row moved) are
        // overwritten. The file is synced once, when the blob completes (before the
        // rename): a crash of the machine can leave the row ahead of the file, which
        // `begin_blob` notices and takes back to the file's length.
        blocking(move || {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            f.set_len(offset)?;
            f.seek(SeekFrom::Start(offset))?;
            f.write_all(&bytes)?;
            Ok(())
        })
        .await?;
        let moved = sqlx::query(
            "UPDATE blob_uploads SET received = ?, updated_at = ? WHERE sha256 = ? AND received = ? AND complete = 0",
        )
        .bind(end as i64)
        .bind(Timestamp::now().unix_micros())
        .bind(sha256)
        .bind(offset as i64)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        if moved == 0 {
            return Err(StoreError::Conflict(format!(
                "upload {sha256} moved on while appending at {offset}"
            )));
        }
        Ok(end)
    }

    async fn read_blob_bytes(&self, sha256: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        let (path, held) = match self.blob_state(sha256).await? {
            BlobState::Complete { size, .. } => (self.blobs.path_of(sha256)?, size),
            BlobState::Partial { received, .. } => (self.part_path(sha256), received),
            BlobState::Absent => return Err(StoreError::NotFound(format!("blob {sha256}"))),
        };
        if offset >= held || len == 0 {
            return Ok(Vec::new());
        }
        let want = len.min(held - offset);
        blocking(move || {
            let mut f = std::fs::File::open(path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
            f.take(want).read_to_end(&mut buf)?;
            Ok(buf)
        })
        .await
    }

    async fn complete_blob(&self, sha256: &str) -> Result<()> {
        match self.blob_state(sha256).await? {
            BlobState::Complete { .. } => return Ok(()),
            BlobState::Partial {
                received, total, ..
            } if received == total => {}
            BlobState::Partial {
                received, total, ..
            } => {
                return Err(StoreError::Invalid(format!(
                    "upload {sha256} holds {received} of {total} bytes"
                )))
            }
            BlobState::Absent => return Err(StoreError::NotFound(format!("upload {sha256}"))),
        }
        let part = self.part_path(sha256);
        let target = self.blobs.path_of(sha256)?;
        let total = match self.blob_state(sha256).await? {
            BlobState::Partial { total, .. } => total,
            _ => 0,
        };
        blocking(move || {
            let dir = target.parent().map(PathBuf::from).unwrap_or_default();
            std::fs::create_dir_all(&dir)?;
            if total == 0 && !part.exists() {
                std::fs::File::create(&part)?;
            }
            let f = std::fs::OpenOptions::new().write(true).open(&part)?;
            f.set_len(total)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&part, &target)?;
            // The rename itself survives a crash once the directory is synced.
            std::fs::File::open(&dir)?.sync_all()?;
            Ok(())
        })
        .await?;
        sqlx::query("UPDATE blob_uploads SET complete = 1, updated_at = ? WHERE sha256 = ?")
            .bind(Timestamp::now().unix_micros())
            .bind(sha256)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn discard_blob_upload(&self, sha256: &str) -> Result<()> {
        address(sha256)?;
        sqlx::query("DELETE FROM blob_uploads WHERE sha256 = ? AND complete = 0")
            .bind(sha256)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        let part = self.part_path(sha256);
        blocking(move || match std::fs::remove_file(part) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreOptions;

    /// A machine crash can leave the row counting bytes the file never received (the
    /// file is synced only when the blob completes): the next upload of the blob goes on
    /// from what the file holds, and completes with the right bytes.
    #[tokio::test]
    async fn a_row_ahead_of_its_file_is_taken_back_to_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("s.db").display());
        let store = SqliteStore::connect(&url, StoreOptions::default())
            .await
            .expect("store");
        let data: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&data))
        };
        store.begin_blob(&sha, 3000, "x/y").await.unwrap();
        assert_eq!(
            store
                .append_blob(&sha, 0, data[..1000].to_vec())
                .await
                .unwrap(),
            1000
        );
        assert_eq!(
            store
                .append_blob(&sha, 1000, data[1000..2000].to_vec())
                .await
                .unwrap(),
            2000
        );
        // What a crash before the data reached the disk leaves: the file cut short.
        let part = store.part_path(&sha);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&part)
            .unwrap()
            .set_len(1500)
            .unwrap();
        match store.begin_blob(&sha, 3000, "x/y").await.unwrap() {
            BlobState::Partial { received, .. } => assert_eq!(received, 1500),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            store
                .append_blob(&sha, 1500, data[1500..].to_vec())
                .await
                .unwrap(),
            3000
        );
        store.complete_blob(&sha).await.unwrap();
        assert_eq!(store.read_blob_bytes(&sha, 0, 5000).await.unwrap(), data);
        // A file as long as its row is left alone.
        let other = "ab".repeat(32);
        store.begin_blob(&other, 10, "x/y").await.unwrap();
        store.append_blob(&other, 0, vec![1; 4]).await.unwrap();
        match store.begin_blob(&other, 10, "x/y").await.unwrap() {
            BlobState::Partial { received, .. } => assert_eq!(received, 4),
            other => panic!("{other:?}"),
        }
    }
}
