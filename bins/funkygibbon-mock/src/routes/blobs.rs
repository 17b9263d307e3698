//! `/api/v1/blobs/{sha256}`: content-addressed blobs with resumable chunked uploads and
//! ranged downloads (PROTOCOL §14).
//!
//! - `PUT` (write permission) sends bytes `START-END` of a blob of `TOTAL` bytes
//!   (`Content-Range: bytes START-END/TOTAL`; without it the body is the whole blob).
//!   `START` must be what the server holds (`HEAD` says, in `Upload-Offset`). The body is
//!   streamed to the store in pieces of at most [`CHUNK`] bytes, so memory stays bounded
//!   by that, whatever the blob's size. Once every byte is held the SHA-256 is checked:
//!   a match makes the blob visible, a mismatch discards the upload. A blob already held
//!   is answered at once, without reading the body.
//! - `HEAD` (any token) says how many bytes are held and whether the blob is complete.
//! - `GET` (any token) sends a complete blob, or one `Range` of it (`206`).
//!
//! The SHA-256 of an upload is computed as its bytes arrive, in this process; an upload
//! resumed on another process (or after a restart) is hashed from the store instead.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use goodies_store::{BlobState, StoreError};
use http_body_util::BodyExt;
use inbetweenies_proto::ErrorCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Bytes read from or written to the store at a time (the memory an upload or a
/// download holds).
pub(crate) const CHUNK: usize = 1024 * 1024;

/// Hash states of uploads in progress kept at most (others are hashed from the store).
const MAX_HASHES: usize = 64;

/// The header that says how many bytes of a blob the server holds.
pub(crate) const UPLOAD_OFFSET: &str = "upload-offset";
/// The header that says a blob's declared size.
pub(crate) const UPLOAD_LENGTH: &str = "upload-length";
/// The header that says whether a blob is complete (`true`) or still uploading (`false`).
pub(crate) const UPLOAD_COMPLETE: &str = "upload-complete";

/// Uploads running in this process, and their hash states.
#[derive(Debug, Default)]
pub(crate) struct BlobTransfers {
    /// Blobs with a `PUT` in progress here (a second one is refused).
    active: Mutex<HashSet<String>>,
    /// Per blob: bytes hashed so far and the hash state.
    hashes: Mutex<HashMap<String, (u64, Sha256)>>,
}

/// Removes a blob from the active set when its `PUT` ends, however it ends.
struct Active<'a> {
    transfers: &'a BlobTransfers,
    sha256: String,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.transfers
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.sha256);
    }
}

impl BlobTransfers {
    fn start(&self, sha256: &str) -> Option<Active<'_>> {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        active.insert(sha256.to_owned()).then(|| Active {
            transfers: self,
            sha256: sha256.to_owned(),
        })
    }

    /// The hash state of the first `offset` bytes, when this process has it.
    fn take_hash(&self, sha256: &str, offset: u64) -> Option<Sha256> {
        if offset == 0 {
            return Some(Sha256::new());
        }
        let mut map = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        match map.remove(sha256) {
            Some((at, h)) if at == offset => Some(h),
            _ => None,
        }
    }

    fn keep_hash(&self, sha256: &str, offset: u64, h: Sha256) {
        let mut map = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_HASHES && !map.contains_key(sha256) {
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        map.insert(sha256.to_owned(), (offset, h));
    }

    fn forget_hash(&self, sha256: &str) {
        self.hashes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(sha256);
    }
}

fn bad_request(field: &str, message: impl Into<String>) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidRequest,
        "Invalid blob request",
    );
    e.body.error.message = message.into();
    e.with_field(field)
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::not_found("Blob not found"),
        StoreError::Conflict(why) => {
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::Other("BLOB_UPLOAD_CONFLICT".into()),
                "Blob upload conflict",
            );
            e.body.error.message = why;
            e
        }
        StoreError::Invalid(why) => bad_request("Content-Range", why),
        other => ApiError::internal(&other),
    }
}

/// The path's address: 64 lowercase hex digits.
fn address(sha256: &str) -> Result<(), ApiError> {
    if goodies_store::blob_upload::is_blob_address(sha256) {
        Ok(())
    } else {
        Err(bad_request(
            "sha256",
            "a blob address is its SHA-256 as 64 lowercase hexadecimal digits",
        ))
    }
}

fn with_offsets(mut res: Response, held: u64, total: u64, complete: bool) -> Response {
    let h = res.headers_mut();
    h.insert(UPLOAD_OFFSET, HeaderValue::from(held));
    h.insert(UPLOAD_LENGTH, HeaderValue::from(total));
    h.insert(
        UPLOAD_COMPLETE,
        HeaderValue::from_static(if complete { "true" } else { "false" }),
    );
    res
}

fn status_body(sha256: &str, held: u64, total: u64, content_type: &str) -> serde_json::Value {
    json!({
        "sha256": sha256,
        "size": total,
        "received": held,
        "content_type": content_type,
        "complete": held == total,
    })
}

/// `HEAD /api/v1/blobs/{sha256}`.
pub(crate) async fn head(
    State(state): State<AppState>,
    _caller: Caller,
    Path(sha256): Path<String>,
) -> Result<Response, ApiError> {
    address(&sha256)?;
    let (held, total, complete, content_type) =
        match state.store.blob_state(&sha256).await.map_err(store_error)? {
            BlobState::Absent => return Err(ApiError::not_found("Blob not found")),
            BlobState::Partial {
                received,
                total,
                content_type,
            } => (received, total, false, content_type),
            BlobState::Complete { size, content_type } => (size, size, true, content_type),
        };
    let mut res = StatusCode::OK.into_response();
    if complete {
        let h = res.headers_mut();
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
    }
    Ok(with_offsets(res, held, total, complete))
}

/// One byte range of a blob of `size` bytes: `Ok(None)` for no (or an unreadable)
/// `Range` header (the whole blob), `Err` for a range past the end.
fn requested_range(headers: &HeaderMap, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(raw) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Several ranges: the whole blob (allowed by RFC 9110).
        return Ok(None);
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Ok(None);
    };
    let num = |s: &str| s.trim().parse::<u64>().ok();
    let (start, end) = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, false) => {
            let Some(n) = num(b) else { return Ok(None) };
            if n == 0 || size == 0 {
                return Err(());
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, _) => {
            let Some(start) = num(a) else { return Ok(None) };
            let end = if b.trim().is_empty() {
                size.saturating_sub(1)
            } else {
                match num(b) {
                    Some(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return Ok(None),
                }
            };
            if start >= size {
                return Err(());
            }
            (start, end)
        }
        (true, true) => return Ok(None),
    };
    Ok(Some((start, end)))
}

/// `GET /api/v1/blobs/{sha256}`.
pub(crate) async fn get(
    State(state): State<AppState>,
    _caller: Caller,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    address(&sha256)?;
    let (size, content_type) = match state.store.blob_state(&sha256).await.map_err(store_error)? {
        BlobState::Complete { size, content_type } => (size, content_type),
        _ => return Err(ApiError::not_found("Blob not found")),
    };
    let (status, start, end) = match requested_range(&headers, size) {
        Ok(None) => (StatusCode::OK, 0, size),
        Ok(Some((s, e))) => (StatusCode::PARTIAL_CONTENT, s, e + 1),
        Err(()) => {
            let mut e = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::InvalidRequest,
                "Range Not Satisfiable",
            );
            e.body.error.message = format!("the blob has {size} bytes");
            let mut res = e.with_field("Range").into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                res.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(res);
        }
    };
    let store = state.store.clone();
    let sha = sha256.clone();
    let counter = state.clone();
    let body = futures::stream::try_unfold(start, move |at| {
        let (store, sha, counter) = (store.clone(), sha.clone(), counter.clone());
        async move {
            if at >= end {
                return Ok(None);
            }
            let want = (end - at).min(CHUNK as u64);
            let bytes = store
                .read_blob_bytes(&sha, at, want)
                .await
                .map_err(std::io::Error::other)?;
            if bytes.is_empty() {
                return Err(std::io::Error::other("blob shorter than its size"));
            }
            let next = at + bytes.len() as u64;
            counter.metrics.blob_bytes("out", bytes.len());
            Ok(Some((bytes::Bytes::from(bytes), next)))
        }
    });
    let mut res = Response::new(Body::from_stream(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{sha256}\"")) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(res)
}

/// `Content-Range: bytes START-END/TOTAL` as `(START, END exclusive, TOTAL)`.
fn upload_range(headers: &HeaderMap) -> Result<Option<(u64, u64, u64)>, ApiError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let bad = || {
        bad_request(
            "Content-Range",
            "Content-Range must be `bytes START-END/TOTAL` (END inclusive, END < TOTAL)",
        )
    };
    let s = v.to_str().map_err(|_| bad())?.trim();
    let rest = s.strip_prefix("bytes ").ok_or_else(bad)?;
    let (range, total) = rest.split_once('/').ok_or_else(bad)?;
    let total: u64 = total.trim().parse().map_err(|_| bad())?;
    let digits = |s: &str| -> Result<u64, ApiError> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let (a, b) = range.split_once('-').ok_or_else(bad)?;
    let (start, last) = (digits(a)?, digits(b)?);
    if last < start || last >= total {
        return Err(bad());
    }
    Ok(Some((start, last + 1, total)))
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn closing(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    res
}

/// `PUT /api/v1/blobs/{sha256}`.
pub(crate) async fn put(
    State(state): State<AppState>,
    caller: Caller,
    Path(sha256): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    caller.require_write()?;
    address(&sha256)?;
    let (parts, body) = req.into_parts();
    let headers = &parts.headers;
    let sent_body = declared_length(headers).is_none_or(|n| n > 0);
    // A blob already held is answered at once; its body is never read.
    if let BlobState::Complete { size, content_type } =
        state.store.blob_state(&sha256).await.map_err(store_error)?
    {
        let res = Json(status_body(&sha256, size, size, &content_type)).into_response();
        let res = with_offsets(res, size, size, true);
        return Ok(if sent_body { closing(res) } else { res });
    }
    let (start, end, total) = match upload_range(headers)? {
        Some(r) => r,
        None => {
            let n = declared_length(headers).ok_or_else(|| {
                bad_request(
                    "Content-Length",
                    "a PUT without Content-Range sends the whole blob with its Content-Length",
                )
            })?;
            (0, n, n)
        }
    };
    if let Some(n) = declared_length(headers) {
        if n != end - start {
            return Err(bad_request(
                "Content-Range",
                format!(
                    "Content-Range names {} bytes but Content-Length is {n}",
                    end - start
                ),
            ));
        }
    }
    let limit = state.config.max_blob_size;
    if total > limit {
        let mut e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "Blob too large",
        );
        e.body.error.message = format!("blobs are limited to {limit} bytes");
        return Ok(closing(e.with_field("Content-Range").into_response()));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let Some(_active) = state.blobs.start(&sha256) else {
        return Err(store_error(StoreError::Conflict(format!(
            "another upload of {sha256} is in progress"
        ))));
    };
    let held = match state
        .store
        .begin_blob(&sha256, total, &content_type)
        .await
        .map_err(store_error)?
    {
        BlobState::Partial { received, .. } => received,
        // Completed meanwhile by another process.
        BlobState::Complete { size, content_type } => {
            let res = Json(status_body(&sha256, size, size, &content_type)).into_response();
            return Ok(closing(with_offsets(res, size, size, true)));
        }
        BlobState::Absent => return Err(ApiError::not_found("Blob not found")),
    };
    if start != held {
        let mut e = ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::Other("BLOB_OFFSET_MISMATCH".into()),
            "Upload offset mismatch",
        );
        e.body.error.message = format!("the server holds {held} bytes: send from byte {held}");
        let res = e.with_field("Content-Range").into_response();
        return Ok(closing(with_offsets(res, held, total, false)));
    }
    let mut hasher = state.blobs.take_hash(&sha256, held);
    // Pieces are handed to the store as they fill; while one is written the next is
    // received and hashed (at most one write in flight: memory stays two pieces).
    let mut pipe = Pipeline {
        at: held,
        queued: held,
        writing: None,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK.min((end - start) as usize));
    let mut body = body;
    let stall = state.config.body_read_timeout;
    let mut failure: Option<ApiError> = None;
    loop {
        let frame = match tokio::time::timeout(stall, body.frame()).await {
            Err(_) => {
                failure = Some(bad_request(
                    "body",
                    format!("no bytes for {} s", stall.as_secs_f64()),
                ));
                break;
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "blob upload body ended early");
                failure = Some(bad_request("body", "the body ended early"));
                break;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        if pipe.queued + (buf.len() + data.len()) as u64 > end {
            failure = Some(bad_request(
                "body",
                "the body is longer than its Content-Range",
            ));
            break;
        }
        while !data.is_empty() {
            let take = (CHUNK - buf.len()).min(data.len());
            buf.extend_from_slice(&data.split_to(take));
            if buf.len() == CHUNK {
                let left = (end - pipe.queued - CHUNK as u64).min(CHUNK as u64) as usize;
                let piece = std::mem::replace(&mut buf, Vec::with_capacity(left));
                pipe.hand_over(&state, &sha256, piece, &mut hasher).await?;
            }
        }
    }
    // What did arrive is kept: a resumed upload goes on from there.
    pipe.hand_over(&state, &sha256, buf, &mut hasher).await?;
    let at = pipe.finish().await?;
    if let Some(e) = failure {
        if let Some(h) = hasher {
            state.blobs.keep_hash(&sha256, at, h);
        }
        return Ok(closing(with_offsets(e.into_response(), at, total, false)));
    }
    if at < total {
        if let Some(h) = hasher {
            state.blobs.keep_hash(&sha256, at, h);
        }
        let res = (
            StatusCode::ACCEPTED,
            Json(status_body(&sha256, at, total, &content_type)),
        )
            .into_response();
        return Ok(with_offsets(res, at, total, false));
    }
    // Every byte held: verify, then make it visible (or discard it).
    let digest = match hasher {
        Some(h) => hex::encode(h.finalize()),
        None => hash_from_store(&state, &sha256, total).await?,
    };
    if digest != sha256 {
        state
            .store
            .discard_blob_upload(&sha256)
            .await
            .map_err(store_error)?;
        let mut e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Other("BLOB_CHECKSUM_MISMATCH".into()),
            "Blob checksum mismatch",
        );
        e.body.error.message =
            format!("the bytes hash to {digest}, not to the address; the upload was discarded");
        return Ok(with_offsets(
            e.with_field("sha256").into_response(),
            0,
            total,
            false,
        ));
    }
    state
        .store
        .complete_blob(&sha256)
        .await
        .map_err(store_error)?;
    state.blobs.forget_hash(&sha256);
    let res = (
        StatusCode::CREATED,
        Json(status_body(&sha256, total, total, &content_type)),
    )
        .into_response();
    Ok(with_offsets(res, total, total, true))
}

/// The store writes of one `PUT`, in order, at most one in flight.
struct Pipeline {
    /// Bytes the store holds for sure (every write finished).
    at: u64,
    /// Bytes handed to the store (`at` plus the write in flight).
    queued: u64,
    writing: Option<tokio::task::JoinHandle<Result<u64, StoreError>>>,
}

impl Pipeline {
    /// Hashes `piece`, waits for the write in flight, then starts writing `piece` at
    /// the end of what is held.
    async fn hand_over(
        &mut self,
        state: &AppState,
        sha256: &str,
        piece: Vec<u8>,
        hasher: &mut Option<Sha256>,
    ) -> Result<(), ApiError> {
        if piece.is_empty() {
            return Ok(());
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&piece);
        }
        self.finish().await?;
        let n = piece.len();
        state.metrics.blob_bytes("in", n);
        let (store, sha, at) = (state.store.clone(), sha256.to_owned(), self.at);
        self.queued = at + n as u64;
        self.writing = Some(tokio::spawn(async move {
            store.append_blob(&sha, at, piece).await
        }));
        Ok(())
    }

    /// Waits for the write in flight; returns what the store holds.
    async fn finish(&mut self) -> Result<u64, ApiError> {
        if let Some(w) = self.writing.take() {
            let written = w
                .await
                .map_err(|e| ApiError::internal(&StoreError::Io(std::io::Error::other(e))))?;
            self.at = written.map_err(store_error)?;
        }
        Ok(self.at)
    }
}

/// The SHA-256 of the `total` held bytes, read back from the store chunk by chunk.
async fn hash_from_store(state: &AppState, sha256: &str, total: u64) -> Result<String, ApiError> {
    let mut h = Sha256::new();
    let mut at = 0;
    while at < total {
        let bytes = state
            .store
            .read_blob_bytes(sha256, at, CHUNK as u64)
            .await
            .map_err(store_error)?;
        if bytes.is_empty() {
            return Err(ApiError::internal(&StoreError::Corrupt(format!(
                "upload {sha256} is shorter than it says"
            ))));
        }
        at += bytes.len() as u64;
        h.update(&bytes);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(v: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.parse().unwrap());
        requested_range(&h, size)
    }

    #[test]
    fn ranges_read_as_rfc_9110_says() {
        assert_eq!(range("bytes=0-9", 100), Ok(Some((0, 9))));
        assert_eq!(range("bytes=90-", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=-10", 100), Ok(Some((90, 99))));
        assert_eq!(range("bytes=95-200", 100), Ok(Some((95, 99))));
        assert_eq!(range("bytes=100-", 100), Err(()));
        assert_eq!(range("bytes=-0", 100), Err(()));
        assert_eq!(range("bytes=5-1", 100), Ok(None));
        assert_eq!(range("items=0-1", 100), Ok(None));
        assert_eq!(range("bytes=0-1,5-6", 100), Ok(None));
    }

    #[test]
    fn content_ranges_are_checked() {
        let parse = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_RANGE, v.parse().unwrap());
            upload_range(&h).map_err(|e| e.status)
        };
        assert_eq!(parse("bytes 0-9/100"), Ok(Some((0, 10, 100))));
        assert_eq!(parse("bytes 90-99/100"), Ok(Some((90, 100, 100))));
        for bad in [
            "bytes 0-100/100",
            "bytes 5-4/100",
            "bytes */100",
            "0-9/100",
            "bytes 0-9/x",
            "bytes +1-9/100",
        ] {
            assert_eq!(parse(bad), Err(StatusCode::BAD_REQUEST), "{bad}");
        }
    }
}
