-- The graph store's SQLite schema (server and client share it).
-- Times are microseconds since the Unix epoch (UTC); booleans are 0/1.

-- One row per entity version. `seq` is the store's sequence number (shared
-- with relationships) and the rowid, so rows are appended in sequence order.
CREATE TABLE entities (
    seq             INTEGER PRIMARY KEY,
    id              TEXT    NOT NULL,
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
-- filtered on is_latest), an id's history, and the id-ordered walk for digests.
-- Ids are random, so every index keyed by them is written all over on a large
-- push: this is the only one on entities (the store keeps one latest row per id
-- itself, in the transaction that inserts the new one).
CREATE UNIQUE INDEX entities_id_version ON entities (id, version);
-- The change feed: latest rows in sequence order (appended at the end).
CREATE INDEX entities_latest_seq ON entities (seq) WHERE is_latest = 1;
-- `since` → sequence bound (received_at grows with seq; appended at the end).
CREATE INDEX entities_received ON entities (received_at);
-- No index on entity_type or name: listing by type or name reads the latest
-- rows (entities_latest_seq) and sorts, cheaper overall than keeping two more
-- indexes up to date on every push.

CREATE TABLE relationships (
    seq                 INTEGER PRIMARY KEY,
    id                  TEXT    NOT NULL UNIQUE,
    from_entity_id      TEXT    NOT NULL,
    from_entity_version TEXT    NOT NULL,
    to_entity_id        TEXT    NOT NULL,
    to_entity_version   TEXT    NOT NULL,
    relationship_type   TEXT    NOT NULL,
    properties          TEXT    NOT NULL,
    user_id             TEXT    NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    received_at         INTEGER NOT NULL
);
-- Graph walks (neighbours, paths, relationships of an entity).
CREATE INDEX relationships_from ON relationships (from_entity_id);
CREATE INDEX relationships_to ON relationships (to_entity_id);
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
