-- Blob uploads (PROTOCOL §14): one row per blob being uploaded or held, by SHA-256,
-- and its bytes as chunks in the database so every server process sees them. Only
-- chunks below `received` count; the blob is visible once `complete`, which is set
-- after its checksum was verified.
CREATE TABLE blob_uploads (
    sha256       TEXT COLLATE "C" PRIMARY KEY,
    total_size   BIGINT  NOT NULL,
    received     BIGINT  NOT NULL DEFAULT 0,
    content_type TEXT    NOT NULL,
    complete     BOOLEAN NOT NULL DEFAULT false,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

CREATE TABLE blob_chunks (
    sha256       TEXT COLLATE "C" NOT NULL REFERENCES blob_uploads (sha256) ON DELETE CASCADE,
    start_offset BIGINT NOT NULL,
    bytes        BYTEA  NOT NULL,
    PRIMARY KEY (sha256, start_offset)
);
-- Uncompressed out-of-line storage: blobs are mostly compressed media already.
ALTER TABLE blob_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
