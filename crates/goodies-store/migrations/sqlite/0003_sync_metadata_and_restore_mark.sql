-- Per-client sync status as the reference's `/api/v1/sync-metadata` keeps it
-- (one row per client id; `auth_token` is stored, never answered).
CREATE TABLE sync_metadata (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id         TEXT    NOT NULL UNIQUE,
    server_url        TEXT    NOT NULL,
    auth_token        TEXT    NOT NULL,
    last_sync_time    INTEGER,
    last_sync_success INTEGER,
    last_sync_error   TEXT,
    sync_failures     INTEGER NOT NULL DEFAULT 0,
    total_syncs       INTEGER NOT NULL DEFAULT 0,
    total_conflicts   INTEGER NOT NULL DEFAULT 0,
    sync_in_progress  INTEGER NOT NULL DEFAULT 0,
    next_retry_time   INTEGER,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);

-- The last restore of a backup: the sequence number it skipped as its mark
-- (every restored row is numbered after it, every earlier cursor is at or
-- before it) and the receipt time it started at (every earlier watermark is
-- before it). 0 when the store was never restored.
ALTER TABLE store_meta ADD COLUMN restored_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE store_meta ADD COLUMN restored_at INTEGER NOT NULL DEFAULT 0;
