-- Guest grants, kept across restarts (crate::grants).
CREATE TABLE IF NOT EXISTS guest_grants (
    subject       TEXT PRIMARY KEY,
    token         TEXT NOT NULL UNIQUE,
    created_at_us BIGINT NOT NULL,
    expires_at_us BIGINT NOT NULL,
    revoked       BOOLEAN NOT NULL DEFAULT FALSE,
    server_url    TEXT
);
