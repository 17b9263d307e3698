-- The graph store's SQLite schema (server and client share it).
-- Times are microseconds since the Unix epoch (UTC); booleans are 0/1.

-- Ids (entity and relationship ids) are looked up through `*_key` columns:
-- the 64-bit FNV-1a hash of the id as a signed integer, computed by the store. Ids are long random strings, so every index keyed by them is
-- rewritten almost whole by a large push; keyed by 8-byte integers, those
-- indexes are a fraction of the size. Every lookup matches the key AND the id
-- itself, so two ids with one key cost a row read, never a wrong answer.
-- Uniqueness of (id, version) and of relationship ids, and the one latest row
-- per id, are kept by the store inside its write transactions.

-- One row per entity version. `seq` is the store's sequence number (shared
-- with relationships) and the rowid, so rows are appended in sequence order.
CREATE TABLE entities (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL,
    id_key          INTEGER NOT NULL,
    version         TEXT    NOT NULL,
    entity_type     TEXT    NOT NULL,
    name            TEXT    NOT NULL,
    content         TEXT    NOT NULL,
    source_type     TEXT    NOT NULL,
    user_id         TEXT    NOT NULL,
    parent_versions TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    is_latest       INTEGER NOT NULL,
    became_latest   INTEGER NOT NULL,
    is_deleted      INTEGER NOT NULL
);
-- Every lookup by id: a version, the latest row (the few versions of an id,
-- filtered on is_latest), an id's history.
CREATE INDEX entities_id ON entities (id_key);
-- The change feed: latest rows in sequence order (appended at the end). Also
-- the latest rows for digests and listings (sorted by id, name… as asked).
CREATE INDEX entities_latest_seq ON entities (seq) WHERE is_latest = 1;
-- `since` → sequence bound (received_at grows with seq; appended at the end).
CREATE INDEX entities_received ON entities (received_at);

CREATE TABLE relationships (
    seq                 INTEGER PRIMARY KEY,
    id                  TEXT    NOT NULL,
    id_key              INTEGER NOT NULL,
    from_entity_id      TEXT    NOT NULL,
    from_key            INTEGER NOT NULL,
    from_entity_version TEXT    NOT NULL,
    to_entity_id        TEXT    NOT NULL,
    to_key              INTEGER NOT NULL,
    to_entity_version   TEXT    NOT NULL,
    relationship_type   TEXT    NOT NULL,
    properties          TEXT    NOT NULL,
    user_id             TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    received_at         INTEGER NOT NULL
);
CREATE INDEX relationships_id ON relationships (id_key);
-- Graph walks (neighbours, paths, relationships of an entity).
CREATE INDEX relationships_from ON relationships (from_key);
CREATE INDEX relationships_to ON relationships (to_key);
CREATE INDEX relationships_received ON relationships (received_at);

-- The last sequence number and receipt time handed out (one row).
CREATE TABLE store_meta (
    one              INTEGER PRIMARY KEY CHECK (one = 1),
    last_seq         INTEGER NOT NULL,
    last_received_at INTEGER NOT NULL
);
INSERT INTO store_meta (one, last_seq, last_received_at) VALUES (1, 0, 0);

CREATE TABLE conflicts (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id        TEXT    NOT NULL,
    server_version   TEXT    NOT NULL,
    client_version   TEXT    NOT NULL,
    resolved_version TEXT    NOT NULL,
    reason           TEXT    NOT NULL,
    strategy         TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    device_id        TEXT    NOT NULL,
    created_at       INTEGER NOT NULL,
    resolved_at      INTEGER
);
CREATE INDEX conflicts_status ON conflicts (status, id);

CREATE TABLE devices (
    device_id  TEXT PRIMARY KEY,
    last_seen  INTEGER,
    last_ack   INTEGER,
    sync_count INTEGER NOT NULL DEFAULT 0
);

-- Blob metadata; the bytes live in files named by their SHA-256.
CREATE TABLE blobs (
    sha256       TEXT    NOT NULL,
    entity_id    TEXT    NOT NULL,
    content_type TEXT    NOT NULL,
    size         INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (sha256, entity_id)
);
CREATE INDEX blobs_entity ON blobs (entity_id);

-- Client side: local changes waiting to be pushed, in order.
CREATE TABLE outbox (
    position        INTEGER PRIMARY KEY AUTOINCREMENT,
    entity_id       TEXT,
    version         TEXT,
    relationship_id TEXT,
    change          TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL
);
CREATE INDEX outbox_entity ON outbox (entity_id);

CREATE TABLE sync_state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
