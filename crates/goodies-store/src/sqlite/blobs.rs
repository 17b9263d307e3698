//! Content-addressed blob bytes in a directory (files named by SHA-256), metadata in the database.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use inbetweenies_proto::{EntityId, Timestamp};
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use super::rows::ts;
use super::SqliteStore;
use crate::error::{Result, StoreError};
use crate::types::BlobMeta;

/// Where blob bytes live: a directory, removed on drop when it is a temporary one.
#[derive(Debug)]
pub(crate) struct BlobDir {
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl BlobDir {
    /// `configured`, else `<database file>.blobs`, else (in memory) a temporary directory.
    pub(crate) fn new(configured: Option<PathBuf>, db_path: Option<&Path>) -> Result<BlobDir> {
        if let Some(dir) = configured {
            return Ok(BlobDir { dir, _temp: None });
        }
        if let Some(db) = db_path {
            let mut name = db.as_os_str().to_owned();
            name.push(".blobs");
            return Ok(BlobDir {
                dir: PathBuf::from(name),
                _temp: None,
            });
        }
        let temp = tempfile::Builder::new()
            .prefix("goodies-blobs-")
            .tempdir()?;
        Ok(BlobDir {
            dir: temp.path().to_path_buf(),
            _temp: Some(temp),
        })
    }

    /// The directory itself.
    pub(crate) fn root(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn path_of(&self, sha256: &str) -> Result<PathBuf> {
        if sha256.len() != 64
            || !sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(StoreError::NotFound(format!("blob {sha256:?}")));
        }
        Ok(self.dir.join(&sha256[..2]).join(sha256))
    }
}

const BLOB_COLS: &str = "sha256, entity_id, content_type, size, created_at";

fn blob_meta(row: &SqliteRow) -> Result<BlobMeta> {
    Ok(BlobMeta {
        sha256: row.try_get(0).map_err(StoreError::database)?,
        entity_id: EntityId::new(row.try_get::<String, _>(1).map_err(StoreError::database)?),
        content_type: row.try_get(2).map_err(StoreError::database)?,
        size: row.try_get::<i64, _>(3).map_err(StoreError::database)? as u64,
        created_at: ts(row.try_get(4).map_err(StoreError::database)?)?,
    })
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
    pub(crate) async fn store_blob(
        &self,
        entity_id: &EntityId,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<BlobMeta> {
        let data = bytes.to_vec();
        let dir = self.blobs.dir.clone();
        // Hash and write off the async threads; a file already there is the same bytes.
        let sha = blocking(move || {
            let sha = hex::encode(Sha256::digest(&data));
            let sub = dir.join(&sha[..2]);
            let target = sub.join(&sha);
            if !target.exists() {
                std::fs::create_dir_all(&sub)?;
                let mut tmp = tempfile::NamedTempFile::new_in(&sub)?;
                tmp.write_all(&data)?;
                tmp.as_file().sync_all()?;
                tmp.persist(&target).map_err(|e| e.error)?;
            }
            Ok(sha)
        })
        .await?;
        let mut w = self.writer().await?;
        sqlx::query(
            "INSERT INTO blobs (sha256, entity_id, content_type, size, created_at) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (sha256, entity_id) DO NOTHING",
        )
        .bind(&sha)
        .bind(entity_id.as_str())
        .bind(content_type)
        .bind(bytes.len() as i64)
        .bind(Timestamp::now().unix_micros())
        .execute(w.conn())
        .await
        .map_err(StoreError::database)?;
        let row = sqlx::query(&format!(
            "SELECT {BLOB_COLS} FROM blobs WHERE sha256 = ? AND entity_id = ?"
        ))
        .bind(&sha)
        .bind(entity_id.as_str())
        .fetch_one(w.conn())
        .await
        .map_err(StoreError::database)?;
        let meta = blob_meta(&row)?;
        w.commit().await?;
        Ok(meta)
    }

    pub(crate) async fn find_blob(&self, sha256: &str) -> Result<Option<BlobMeta>> {
        sqlx::query(&format!(
            "SELECT {BLOB_COLS} FROM blobs WHERE sha256 = ? ORDER BY created_at, entity_id LIMIT 1"
        ))
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::database)?
        .as_ref()
        .map(blob_meta)
        .transpose()
    }

    pub(crate) async fn entity_blobs(&self, entity_id: &EntityId) -> Result<Vec<BlobMeta>> {
        sqlx::query(&format!(
            "SELECT {BLOB_COLS} FROM blobs WHERE entity_id = ? ORDER BY created_at, sha256"
        ))
        .bind(entity_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::database)?
        .iter()
        .map(blob_meta)
        .collect()
    }

    pub(crate) async fn read_blob_range(
        &self,
        sha256: &str,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>> {
        let meta = self
            .find_blob(sha256)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("blob {sha256}")))?;
        let path = self.blobs.path_of(sha256)?;
        if offset >= meta.size || len == 0 {
            return Ok(Vec::new());
        }
        let want = len.min(meta.size - offset);
        blocking(move || {
            let mut f = std::fs::File::open(path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
            f.take(want).read_to_end(&mut buf)?;
            Ok(buf)
        })
        .await
    }
}
