//! Resumable blob uploads, content-addressed by SHA-256 (PROTOCOL §14).
//!
//! An upload declares its total size once and then appends its bytes in order, each
//! append at exactly the offset the store already holds (so a resumed upload continues
//! where the last one stopped, and two uploaders of one blob never interleave). The
//! caller verifies the checksum over the held bytes and then completes the upload: only
//! then is the blob visible ([`BlobState::Complete`]). A failed verification discards
//! the upload.
//!
//! - SQLite (`sqlite::blob_upload`): a file `uploads/<sha256>.part` beside the
//!   database, written at the held offset before the offset moves; completing syncs it
//!   and renames it to `<sha256[0..2]>/<sha256>` (atomically). A row found ahead of its
//!   file (a machine crash before the bytes reached the disk) is taken back to the file.
//! - PostgreSQL (`postgres::blob_upload`): each append is one row of `blob_chunks`,
//!   inserted in the same transaction that moves the offset, so every server process
//!   sees the same upload; appends do not wait for the WAL flush, completing does.
//!
//! So a crash can take back the latest appends of an upload in progress, never without
//! their offset: the uploader resumes from the offset it is told. A complete blob is
//! durable.

use async_trait::async_trait;

use crate::error::Result;

/// What a store holds of one blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobState {
    /// Nothing.
    Absent,
    /// An upload in progress: `received` of `total` bytes held.
    Partial {
        /// Bytes held (the offset the next append must start at).
        received: u64,
        /// The declared size.
        total: u64,
        /// The declared content type.
        content_type: String,
    },
    /// The whole blob, verified and visible.
    Complete {
        /// Its size.
        size: u64,
        /// Its content type.
        content_type: String,
    },
}

/// Whether `s` is a blob address: 64 lowercase hexadecimal digits.
pub fn is_blob_address(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Resumable, content-addressed blob uploads (see the module doc). Every
/// [`crate::ServerStore`] implements it.
#[async_trait]
pub trait BlobUploads: Send + Sync + std::fmt::Debug {
    /// What is held of the blob `sha256`.
    async fn blob_state(&self, sha256: &str) -> Result<BlobState>;

    /// Starts an upload of `total` bytes, or finds the one in progress (or the complete
    /// blob). An upload in progress with another total is
    /// [`StoreError::Conflict`](crate::StoreError::Conflict).
    async fn begin_blob(&self, sha256: &str, total: u64, content_type: &str) -> Result<BlobState>;

    /// Appends `bytes` at `offset`, which must be the held offset (else
    /// [`StoreError::Conflict`](crate::StoreError::Conflict)); returns the new offset.
    /// The bytes are held when this returns (durable once the blob completes: see the
    /// module doc).
    async fn append_blob(&self, sha256: &str, offset: u64, bytes: Vec<u8>) -> Result<u64>;

    /// Reads at most `len` held bytes from `offset`, of a complete blob or an upload in
    /// progress (fewer at the end).
    async fn read_blob_bytes(&self, sha256: &str, offset: u64, len: u64) -> Result<Vec<u8>>;

    /// Makes a whole upload (every declared byte held, checksum verified by the caller)
    /// visible.
    async fn complete_blob(&self, sha256: &str) -> Result<()>;

    /// Forgets an upload in progress and its bytes (a complete blob is kept).
    async fn discard_blob_upload(&self, sha256: &str) -> Result<()>;
}
