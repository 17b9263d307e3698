//! Blobs (PROTOCOL §14): attach a file to an entity, upload it in resumable chunks, and
//! fetch it back verified.
//!
//! A file attached to an entity becomes a `note` entity named after the file, linked from
//! the entity by a `has_blob` edge whose properties name the blob (`sha256`, `size`,
//! `content_type`, `filename`); both are ordinary local writes, pushed by the outbox.
//! The bytes travel apart, at `/api/v1/blobs/{sha256}`:
//!
//! - Upload: `HEAD` tells how many bytes the server holds (or that it holds the whole
//!   blob: then nothing is sent), then one `PUT` with `Content-Range` per chunk from that
//!   offset. After an interruption the next attempt asks again, so at most the chunk in
//!   flight is sent twice. Which uploads are still owed is kept in the mirror's settings,
//!   so an attach made offline (or in a process that ended) is finished by the next
//!   [`BlowingOffClient::sync`] or [`BlowingOffClient::upload_pending_blobs`].
//! - Download: ranged `GET`s, chunk by chunk, into a temporary file beside the
//!   destination; the SHA-256 is checked before the file is renamed into place, and a
//!   mismatch leaves nothing behind.
//!
//! At most one chunk ([`crate::ClientConfig::blob_chunk_size`]) is held in memory.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use inbetweenies_proto::{
    EntityId, EntityType, JsonObject, Relationship, RelationshipId, RelationshipType,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::client::BlowingOffClient;
use crate::error::{ClientError, SyncError};
use crate::events::{BlobDirection, ClientEvent};
use crate::http::Http;
use crate::transport::{HttpRequest, HttpResponse, Method};

/// Where blobs live on the server: `{BLOBS_PATH}{sha256}`.
pub const BLOBS_PATH: &str = "/api/v1/blobs/";

/// The settings key under which the uploads still owed are kept (JSON list).
pub const PENDING_BLOB_UPLOADS_KEY: &str = "pending_blob_uploads";

/// Serialises edits of the pending-upload list within a process.
static PENDING_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A blob attached to an entity: what its `has_blob` edge says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BlobRef {
    /// The blob's address: the lowercase hex SHA-256 of its bytes.
    pub sha256: String,
    /// Its size in bytes (advisory: from the edge).
    pub size: Option<u64>,
    /// Its content type (advisory).
    pub content_type: Option<String>,
    /// The file name it was attached from (advisory).
    pub filename: Option<String>,
    /// The entity the blob is attached to (the edge's source).
    pub entity_id: EntityId,
    /// The entity that is the file (the edge's target, a `note`).
    pub blob_entity_id: EntityId,
    /// The `has_blob` edge.
    pub relationship_id: RelationshipId,
}

impl BlobRef {
    fn of_edge(r: &Relationship) -> Option<BlobRef> {
        let sha = r.properties.get("sha256")?.as_str()?;
        if !is_sha256(sha) {
            return None;
        }
        Some(BlobRef {
            sha256: sha.to_owned(),
            size: r.properties.get("size").and_then(Value::as_u64),
            content_type: r
                .properties
                .get("content_type")
                .and_then(Value::as_str)
                .map(str::to_owned),
            filename: r
                .properties
                .get("filename")
                .and_then(Value::as_str)
                .map(str::to_owned),
            entity_id: r.from_entity_id.clone(),
            blob_entity_id: r.to_entity_id.clone(),
            relationship_id: r.id.clone(),
        })
    }
}

/// What [`BlowingOffClient::attach_blob`] did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Attached {
    /// The blob and its edge.
    pub blob: BlobRef,
    /// Whether the server now holds the whole blob (false: the upload is queued and the
    /// next sync finishes it).
    pub uploaded: bool,
    /// Why the upload did not finish, when it did not (and a server was configured).
    pub upload_error: Option<String>,
}

/// How one upload went.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct UploadStats {
    /// The blob.
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Bytes the server held before this upload started.
    pub resumed_from: u64,
    /// Bytes sent in `PUT` bodies.
    pub bytes_sent: u64,
    /// `PUT` requests made.
    pub puts: u32,
}

/// What [`BlowingOffClient::upload_pending_blobs`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BlobUploadReport {
    /// Uploads finished (or found already held).
    pub completed: Vec<UploadStats>,
    /// Uploads that failed, with why; they stay queued unless the error says otherwise.
    pub failed: Vec<(String, String)>,
    /// Uploads still queued afterwards.
    pub pending: u64,
}

/// An upload owed to the server (kept in the settings).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PendingUpload {
    sha256: String,
    path: PathBuf,
    size: u64,
    content_type: String,
}

/// How one upload ended when it did not complete.
enum UploadFailure {
    /// Try again later (no answer, a retryable status, another upload in progress).
    Later(ClientError),
    /// The file is gone or changed, or the server refuses the blob for good: drop it.
    Never(ClientError),
}

impl UploadFailure {
    fn error(&self) -> &ClientError {
        match self {
            UploadFailure::Later(e) | UploadFailure::Never(e) => e,
        }
    }
}

/// A failed upload as a sync reports it.
fn sync_error_of(e: ClientError) -> SyncError {
    match e {
        ClientError::Unreachable { attempts, source } => SyncError::Unreachable {
            attempts,
            source: Arc::new(source),
        },
        ClientError::Server {
            status,
            code,
            message,
        } => SyncError::Server {
            status,
            code,
            message: format!("blob upload: {message}"),
            attempts: 1,
        },
        other => SyncError::InvalidResponse(Arc::new(other)),
    }
}

/// Whether `s` is a blob address: 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A content type for a file name, from its extension.
pub fn content_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "pdf" => "application/pdf",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "svg" => "image/svg+xml",
        "txt" | "md" => "text/plain",
        "json" => "application/json",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

fn file_err(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::File {
        path: path.to_owned(),
        source,
    }
}

/// Hashes a file by streaming it (`buf` bytes at a time): `(sha256, size)`.
pub async fn hash_file(path: &Path) -> Result<(String, u64), ClientError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&owned).map_err(file_err(&owned))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(file_err(&owned))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
        Ok((hex::encode(h.finalize()), size))
    })
    .await
    .map_err(|e| ClientError::Invalid(format!("hashing task failed: {e}")))?
}

/// Reads `len` bytes of `path` at `offset`.
async fn read_chunk(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, ClientError> {
    let owned = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&owned).map_err(file_err(&owned))?;
        f.seek(SeekFrom::Start(offset)).map_err(file_err(&owned))?;
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf).map_err(file_err(&owned))?;
        Ok(buf)
    })
    .await
    .map_err(|e| ClientError::Invalid(format!("file task failed: {e}")))?
}

fn header_u64(resp: &HttpResponse, name: &str) -> Option<u64> {
    resp.header(name).and_then(|v| v.trim().parse().ok())
}

fn header_true(resp: &HttpResponse, name: &str) -> bool {
    resp.header(name)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The connection a blob transfer uses.
struct Conn {
    url: String,
    token: Option<String>,
}

impl BlowingOffClient {
    async fn blob_conn(&self) -> Result<Conn, ClientError> {
        let s = self.inner.settings().await?;
        let url = s.server_url.ok_or(ClientError::NotConnected)?;
        Ok(Conn {
            url: url.trim_end_matches('/').to_owned(),
            token: s.auth_token,
        })
    }

    fn blob_request(&self, conn: &Conn, method: Method, sha: &str) -> HttpRequest {
        let mut headers = vec![(
            "user-agent".to_owned(),
            concat!("blowing-off/", env!("CARGO_PKG_VERSION")).to_owned(),
        )];
        if let Some(t) = &conn.token {
            headers.push(("authorization".to_owned(), format!("Bearer {t}")));
        }
        HttpRequest {
            method,
            url: format!("{}{BLOBS_PATH}{sha}", conn.url),
            headers,
            body: Vec::new(),
        }
    }

    /// Sends one blob request, retrying transport failures and retryable statuses (5xx,
    /// 408, 429) by the retry policy. `Ok` is any other answer.
    async fn blob_send(&self, request: HttpRequest) -> Result<HttpResponse, ClientError> {
        let retry = &self.inner.config.retry;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let last = match self.inner.transport.send(request.clone()).await {
                Ok(r) if !(r.status >= 500 || r.status == 408 || r.status == 429) => return Ok(r),
                Ok(r) => Err(r),
                Err(e) => Ok(e),
            };
            if attempt > retry.max_retries {
                return Err(match last {
                    Ok(source) => ClientError::Unreachable {
                        attempts: attempt,
                        source,
                    },
                    Err(resp) => self.status_error(&resp),
                });
            }
            let delay = retry.delay(attempt - 1);
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }

    /// The error an answer's status and body stand for.
    fn status_error(&self, resp: &HttpResponse) -> ClientError {
        let http = Http {
            transport: self.inner.transport.as_ref(),
            base_url: "",
            token: None,
            config: &self.inner.config,
            compress: &self.inner.compress,
        };
        http.failure_of(resp, 1).into_client_error()
    }

    fn blob_progress(&self, sha: &str, done: u64, total: u64, direction: BlobDirection) {
        if self.inner.events.has_listeners() {
            self.inner.events.emit(ClientEvent::BlobProgress {
                sha256: sha.to_owned(),
                done,
                total,
                direction,
            });
        }
    }

    // ----- attach and list -----------------------------------------------------------

    /// Attaches the file at `path` to the entity `entity_id`: hashes it (streaming), writes
    /// a `note` entity named after the file and a `has_blob` edge from the entity to it
    /// (both queued for the server like any local edit), queues the upload and, when a
    /// server is configured, uploads it now. Works offline: the upload then waits for the
    /// next [`Self::sync`] or [`Self::upload_pending_blobs`]; so does an upload that fails.
    pub async fn attach_blob(
        &self,
        entity_id: &EntityId,
        path: impl AsRef<Path>,
    ) -> Result<Attached, ClientError> {
        let path = path.as_ref();
        let owner = self.entity(entity_id).await?;
        if owner.as_ref().is_none_or(|e| e.is_deleted()) {
            return Err(ClientError::NotFound(format!("entity {entity_id}")));
        }
        let meta = tokio::fs::metadata(path).await.map_err(file_err(path))?;
        if !meta.is_file() {
            return Err(ClientError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let path = tokio::fs::canonicalize(path)
            .await
            .map_err(file_err(path))?;
        let (sha, size) = hash_file(&path).await?;
        let filename = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| sha.clone());
        let content_type = content_type_for(&path).to_owned();
        let mut props = JsonObject::new();
        props.insert("sha256".into(), Value::from(sha.clone()));
        props.insert("size".into(), Value::from(size));
        props.insert("content_type".into(), Value::from(content_type.clone()));
        props.insert("filename".into(), Value::from(filename.clone()));
        let note = self
            .create_entity(EntityType::Note, &filename, props.clone())
            .await?;
        let edge = self
            .relate(entity_id, &note.id, RelationshipType::HasBlob, props)
            .await?;
        self.queue_upload(PendingUpload {
            sha256: sha.clone(),
            path: path.clone(),
            size,
            content_type,
        })
        .await?;
        let blob = BlobRef::of_edge(&edge).ok_or_else(|| {
            ClientError::Invalid("the has_blob edge does not name its blob".into())
        })?;
        let connected = self.inner.settings().await?.server_url.is_some();
        let (uploaded, upload_error) = if connected {
            let report = self.upload_pending_blobs_only(Some(&sha)).await?;
            let err = report
                .failed
                .iter()
                .find(|(s, _)| *s == sha)
                .map(|(_, e)| e.clone());
            (err.is_none() && !report.completed.is_empty(), err)
        } else {
            (false, None)
        };
        Ok(Attached {
            blob,
            uploaded,
            upload_error,
        })
    }

    /// The blobs attached to an entity: its outgoing `has_blob` edges (or, for the entity
    /// that is the file, its incoming one), oldest first.
    pub async fn blobs_of(&self, entity_id: &EntityId) -> Result<Vec<BlobRef>, ClientError> {
        let mut q = goodies_store::RelationshipQuery {
            from_entity_id: Some(entity_id.clone()),
            relationship_type: Some(RelationshipType::HasBlob),
            ..Default::default()
        };
        let mut edges = self.relationships(&q).await?;
        if edges.is_empty() {
            q.from_entity_id = None;
            q.to_entity_id = Some(entity_id.clone());
            edges = self.relationships(&q).await?;
        }
        Ok(edges.iter().filter_map(BlobRef::of_edge).collect())
    }

    // ----- upload ----------------------------------------------------------------------

    async fn pending_uploads(&self) -> Result<Vec<PendingUpload>, ClientError> {
        Ok(self
            .inner
            .get_json(PENDING_BLOB_UPLOADS_KEY)
            .await?
            .unwrap_or_default())
    }

    async fn queue_upload(&self, p: PendingUpload) -> Result<(), ClientError> {
        let _g = PENDING_LOCK.lock().await;
        let mut list = self.pending_uploads().await?;
        list.retain(|q| q.sha256 != p.sha256);
        list.push(p);
        self.inner.set_json(PENDING_BLOB_UPLOADS_KEY, &list).await
    }

    async fn unqueue_upload(&self, sha: &str) -> Result<(), ClientError> {
        let _g = PENDING_LOCK.lock().await;
        let mut list = self.pending_uploads().await?;
        list.retain(|q| q.sha256 != sha);
        self.inner.set_json(PENDING_BLOB_UPLOADS_KEY, &list).await
    }

    /// The addresses of the blobs whose upload is still owed to the server.
    pub async fn pending_blob_uploads(&self) -> Result<Vec<String>, ClientError> {
        Ok(self
            .pending_uploads()
            .await?
            .into_iter()
            .map(|p| p.sha256)
            .collect())
    }

    /// Finishes every queued upload, each from where the server stopped. A failed upload
    /// stays queued (unless it can never succeed: the file is gone or changed, or the
    /// server refuses the blob), and is reported in [`BlobUploadReport::failed`].
    /// `Err` only when there is no server to upload to or the local store fails.
    pub async fn upload_pending_blobs(&self) -> Result<BlobUploadReport, ClientError> {
        self.upload_pending_blobs_only(None).await
    }

    /// Finishes the queued uploads before a sync pushes the edges that name them; their
    /// failures as sync errors (the uploads stay queued).
    pub(crate) async fn upload_blobs_for_sync(&self) -> Vec<SyncError> {
        match self.pending_uploads().await {
            Ok(l) if l.is_empty() => return Vec::new(),
            Ok(_) => {}
            Err(e) => return vec![sync_error_of(e)],
        }
        if self.blob_conn().await.is_err() {
            // Not connected: the sync itself says so.
            return Vec::new();
        }
        match self.upload_pending_blobs_inner(None).await {
            Ok((_, errors)) => errors.into_iter().map(sync_error_of).collect(),
            Err(e) => vec![sync_error_of(e)],
        }
    }

    async fn upload_pending_blobs_only(
        &self,
        only: Option<&str>,
    ) -> Result<BlobUploadReport, ClientError> {
        Ok(self.upload_pending_blobs_inner(only).await?.0)
    }

    async fn upload_pending_blobs_inner(
        &self,
        only: Option<&str>,
    ) -> Result<(BlobUploadReport, Vec<ClientError>), ClientError> {
        let list = self.pending_uploads().await?;
        let mut report = BlobUploadReport::default();
        let mut errors = Vec::new();
        if list.is_empty() {
            return Ok((report, errors));
        }
        let conn = self.blob_conn().await?;
        for p in list {
            if only.is_some_and(|s| s != p.sha256) {
                continue;
            }
            match self.upload_one(&conn, &p).await {
                Ok(stats) => {
                    self.unqueue_upload(&p.sha256).await?;
                    report.completed.push(stats);
                }
                Err(f) => {
                    tracing::warn!(sha256 = %p.sha256, error = %f.error(), "blob upload failed");
                    let message = crate::sync::error_chain(f.error());
                    let e = match f {
                        UploadFailure::Never(e) => {
                            self.unqueue_upload(&p.sha256).await?;
                            e
                        }
                        UploadFailure::Later(e) => e,
                    };
                    report.failed.push((p.sha256.clone(), message));
                    errors.push(e);
                }
            }
        }
        report.pending = self.pending_uploads().await?.len() as u64;
        Ok((report, errors))
    }

    /// Uploads the file of `sha` (it must hash to `sha`) now, from where the server
    /// stopped; nothing is sent when the server already holds it.
    pub async fn upload_blob(
        &self,
        sha: &str,
        path: impl AsRef<Path>,
    ) -> Result<UploadStats, ClientError> {
        let path = path.as_ref();
        let size = tokio::fs::metadata(path)
            .await
            .map_err(file_err(path))?
            .len();
        let conn = self.blob_conn().await?;
        let p = PendingUpload {
            sha256: sha.to_owned(),
            path: path.to_owned(),
            size,
            content_type: content_type_for(path).to_owned(),
        };
        self.upload_one(&conn, &p).await.map_err(|f| match f {
            UploadFailure::Later(e) | UploadFailure::Never(e) => e,
        })
    }

    /// `HEAD`: how many bytes the server holds, and whether the blob is complete.
    async fn blob_status(&self, conn: &Conn, sha: &str) -> Result<(u64, bool), ClientError> {
        let resp = self
            .blob_send(self.blob_request(conn, Method::Head, sha))
            .await?;
        match resp.status {
            404 => Ok((0, false)),
            200 => Ok((
                header_u64(&resp, "upload-offset").unwrap_or(0),
                header_true(&resp, "upload-complete"),
            )),
            _ => Err(self.status_error(&resp)),
        }
    }

    async fn upload_one(
        &self,
        conn: &Conn,
        p: &PendingUpload,
    ) -> Result<UploadStats, UploadFailure> {
        use UploadFailure::{Later, Never};
        let sha = p.sha256.as_str();
        let size = match tokio::fs::metadata(&p.path).await {
            Ok(m) => m.len(),
            Err(e) => return Err(Never(file_err(&p.path)(e))),
        };
        if size != p.size {
            return Err(Never(ClientError::Invalid(format!(
                "{} changed since it was attached ({} bytes, was {})",
                p.path.display(),
                size,
                p.size
            ))));
        }
        let chunk = self.inner.config.blob_chunk_size.max(1) as u64;
        let retry = &self.inner.config.retry;
        let (mut offset, complete) = self.blob_status(conn, sha).await.map_err(Later)?;
        let mut stats = UploadStats {
            sha256: sha.to_owned(),
            size,
            resumed_from: offset,
            ..UploadStats::default()
        };
        self.blob_progress(sha, offset.min(size), size, BlobDirection::Upload);
        if complete {
            return Ok(stats);
        }
        let mut failures: u32 = 0;
        loop {
            // The empty blob is one PUT of zero bytes.
            let end = (offset + chunk).min(size);
            let body = read_chunk(&p.path, offset, (end - offset) as usize)
                .await
                .map_err(Never)?;
            let mut req = self.blob_request(conn, Method::Put, sha);
            req.headers
                .push(("content-type".to_owned(), p.content_type.clone()));
            if size > 0 {
                req.headers.push((
                    "content-range".to_owned(),
                    format!("bytes {offset}-{}/{size}", end - 1),
                ));
            }
            stats.bytes_sent += body.len() as u64;
            stats.puts += 1;
            req.body = body;
            let answer = self.inner.transport.send(req).await;
            let resp = match answer {
                Ok(r) if !(r.status >= 500 || r.status == 408 || r.status == 429) => r,
                other => {
                    // No answer, or a passing one: ask the server what it kept, then go on.
                    failures += 1;
                    if failures > retry.max_retries {
                        return Err(Later(match other {
                            Err(source) => ClientError::Unreachable {
                                attempts: failures,
                                source,
                            },
                            Ok(r) => self.status_error(&r),
                        }));
                    }
                    let delay = retry.delay(failures - 1);
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let (held, complete) = self.blob_status(conn, sha).await.map_err(Later)?;
                    if complete {
                        self.blob_progress(sha, size, size, BlobDirection::Upload);
                        return Ok(stats);
                    }
                    offset = held;
                    continue;
                }
            };
            let held = header_u64(&resp, "upload-offset");
            match resp.status {
                200 | 201 => {
                    self.blob_progress(sha, size, size, BlobDirection::Upload);
                    return Ok(stats);
                }
                202 => {
                    offset = held.unwrap_or(end);
                    self.blob_progress(sha, offset, size, BlobDirection::Upload);
                }
                409 if resp.header("upload-offset").is_some()
                    && !resp.body.windows(20).any(|w| w == b"BLOB_UPLOAD_CONFLICT") =>
                {
                    // BLOB_OFFSET_MISMATCH: the server says where to go on from.
                    offset = held.unwrap_or(0);
                }
                409 | 401 | 403 => return Err(Later(self.status_error(&resp))),
                _ => {
                    // 422 (checksum mismatch), 413 (too large), 400: sending again
                    // cannot help.
                    return Err(Never(self.status_error(&resp)));
                }
            }
        }
    }

    // ----- download --------------------------------------------------------------------

    /// Downloads the blob `sha` to `dest`: ranged `GET`s of one chunk each into a
    /// temporary file beside `dest`, hashed as they arrive; the file is renamed to `dest`
    /// only when its SHA-256 is `sha`. A mismatch is
    /// [`ClientError::BlobChecksumMismatch`] and leaves nothing behind; so does any other
    /// failure. Returns the size.
    pub async fn fetch_blob(&self, sha: &str, dest: impl AsRef<Path>) -> Result<u64, ClientError> {
        if !is_sha256(sha) {
            return Err(ClientError::Invalid(format!(
                "{sha:?} is not a blob address (64 lowercase hex digits)"
            )));
        }
        let dest = dest.as_ref();
        let conn = self.blob_conn().await?;
        let head = self
            .blob_send(self.blob_request(&conn, Method::Head, sha))
            .await?;
        let size = match head.status {
            200 if header_true(&head, "upload-complete") => header_u64(&head, "upload-length")
                .or_else(|| header_u64(&head, "content-length"))
                .ok_or_else(|| {
                    ClientError::InvalidResponse("blob status without its length".into())
                })?,
            200 | 404 => return Err(ClientError::NotFound(format!("blob {sha} on the server"))),
            _ => return Err(self.status_error(&head)),
        };
        let dir = match dest.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| sha.to_owned());
        let temp = dir.join(format!(".{name}.{}.part", uuid::Uuid::new_v4().simple()));
        let result = self.fetch_into(&conn, sha, size, &temp).await;
        match result {
            Ok(()) => match std::fs::rename(&temp, dest) {
                Ok(()) => Ok(size),
                Err(e) => {
                    let _ = std::fs::remove_file(&temp);
                    Err(file_err(dest)(e))
                }
            },
            Err(e) => {
                let _ = std::fs::remove_file(&temp);
                Err(e)
            }
        }
    }

    async fn fetch_into(
        &self,
        conn: &Conn,
        sha: &str,
        size: u64,
        temp: &Path,
    ) -> Result<(), ClientError> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp)
            .map_err(file_err(temp))?;
        let chunk = self.inner.config.blob_chunk_size.max(1) as u64;
        let mut hasher = Sha256::new();
        let mut offset = 0u64;
        self.blob_progress(sha, 0, size, BlobDirection::Download);
        while offset < size {
            let end = (offset + chunk).min(size) - 1;
            let mut req = self.blob_request(conn, Method::Get, sha);
            req.headers
                .push(("range".to_owned(), format!("bytes={offset}-{end}")));
            let resp = self.blob_send(req).await?;
            let want = end - offset + 1;
            let body = match resp.status {
                206 => resp.body,
                // A server that ignores the range sends the whole blob.
                200 if offset == 0 => resp.body,
                404 => return Err(ClientError::NotFound(format!("blob {sha} on the server"))),
                _ => return Err(self.status_error(&resp)),
            };
            if body.is_empty() || (resp.status == 206 && body.len() as u64 != want) {
                return Err(ClientError::InvalidResponse(
                    format!(
                        "asked for bytes {offset}-{end} of blob {sha}, got {} bytes",
                        body.len()
                    )
                    .into(),
                ));
            }
            hasher.update(&body);
            file.write_all(&body).map_err(file_err(temp))?;
            offset += body.len() as u64;
            self.blob_progress(sha, offset.min(size), size, BlobDirection::Download);
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha || offset != size {
            return Err(ClientError::BlobChecksumMismatch {
                expected: sha.to_owned(),
                actual,
            });
        }
        file.sync_all().map_err(file_err(temp))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_content_types() {
        assert!(is_sha256(&"a".repeat(64)));
        assert!(!is_sha256(&"A".repeat(64)));
        assert!(!is_sha256(&"a".repeat(63)));
        assert_eq!(content_type_for(Path::new("x/Oven.PDF")), "application/pdf");
        assert_eq!(
            content_type_for(Path::new("noext")),
            "application/octet-stream"
        );
    }

    #[tokio::test]
    async fn files_are_hashed_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &data).unwrap();
        let (sha, size) = hash_file(&p).await.unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(sha, hex::encode(Sha256::digest(&data)));
        assert!(matches!(
            hash_file(&dir.path().join("missing")).await,
            Err(ClientError::File { .. })
        ));
    }
}
