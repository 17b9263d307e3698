-- Guest grants, kept across restarts (crate::grants).
CREATE TABLE IF NOT EXISTS guest_grants (
    subject       TEXT PRIMARY KEY NOT NULL,
    token         TEXT NOT NULL UNIQUE,
    created_at_us INTEGER NOT NULL,
    expires_at_us INTEGER NOT NULL,
    revoked       INTEGER NOT NULL DEFAULT 0,
    server_url    TEXT
);
