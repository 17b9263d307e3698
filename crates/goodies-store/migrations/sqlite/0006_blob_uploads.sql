-- Blob uploads (PROTOCOL §14): one row per blob being uploaded or held, by SHA-256.
-- The bytes are files beside the database: `uploads/<sha256>.part` while the upload
-- runs (only the first `received` bytes count), then `<sha256[0..2]>/<sha256>`
-- (renamed in atomically once the checksum is verified, when `complete` turns 1).
CREATE TABLE blob_uploads (
    sha256       TEXT    PRIMARY KEY,
    total_size   INTEGER NOT NULL,
    received     INTEGER NOT NULL DEFAULT 0,
    content_type TEXT    NOT NULL,
    complete     INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
