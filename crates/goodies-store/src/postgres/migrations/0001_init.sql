-- The Goodies server store on PostgreSQL: immutable entity versions, relationships,
-- conflicts, devices and blobs. Times are microseconds since the Unix epoch (UTC).
-- Ids and versions use the "C" collation so that ordering is byte order.

-- One row: the last sequence number and receipt time handed out. Only a
-- transaction holding the exclusive write lock (an advisory lock) updates it.
CREATE TABLE goodies_meta (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last_seq BIGINT NOT NULL DEFAULT 0,
    last_received_at BIGINT NOT NULL DEFAULT 0
);
INSERT INTO goodies_meta DEFAULT VALUES;

-- The database clock in microseconds (one clock for every server process).
CREATE FUNCTION goodies_now_us() RETURNS BIGINT
    LANGUAGE SQL VOLATILE
    AS $$ SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT $$;

CREATE TABLE entities (
    id TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    entity_type TEXT NOT NULL,
    name TEXT NOT NULL,
    content JSON NOT NULL,
    source_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    parent_versions JSON NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    received_at BIGINT NOT NULL,
    is_latest BOOLEAN NOT NULL,
    became_latest BOOLEAN NOT NULL,
    is_deleted BOOLEAN NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE UNIQUE INDEX entities_seq ON entities (seq);
-- Exactly one latest row per id; also the id-ordered scan for digests.
CREATE UNIQUE INDEX entities_latest_id ON entities (id) WHERE is_latest;
-- The change feed: latest rows in sequence order.
CREATE INDEX entities_latest_seq ON entities (seq) WHERE is_latest;
-- `since` -> sequence bound (received_at grows with seq).
CREATE INDEX entities_received_at ON entities (received_at);
CREATE INDEX entities_latest_type ON entities (entity_type) WHERE is_latest;
CREATE INDEX entities_latest_name ON entities ((name COLLATE "C"), id) WHERE is_latest;
-- As-of queries: versions that became latest, by receipt time.
CREATE INDEX entities_became_latest ON entities (id, seq) WHERE became_latest;

CREATE TABLE relationships (
    id TEXT COLLATE "C" PRIMARY KEY,
    from_entity_id TEXT COLLATE "C" NOT NULL,
    from_entity_version TEXT COLLATE "C" NOT NULL,
    to_entity_id TEXT COLLATE "C" NOT NULL,
    to_entity_version TEXT COLLATE "C" NOT NULL,
    relationship_type TEXT NOT NULL,
    properties JSON NOT NULL,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX relationships_seq ON relationships (seq);
CREATE INDEX relationships_from ON relationships (from_entity_id);
CREATE INDEX relationships_to ON relationships (to_entity_id);
CREATE INDEX relationships_received_at ON relationships (received_at);

CREATE TABLE conflicts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity_id TEXT COLLATE "C" NOT NULL,
    server_version TEXT COLLATE "C" NOT NULL,
    client_version TEXT COLLATE "C" NOT NULL,
    resolved_version TEXT COLLATE "C" NOT NULL,
    reason TEXT NOT NULL,
    strategy TEXT NOT NULL,
    status TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    resolved_at BIGINT
);
CREATE INDEX conflicts_status ON conflicts (status, id);
CREATE INDEX conflicts_entity ON conflicts (entity_id);

CREATE TABLE client_sync (
    device_id TEXT PRIMARY KEY,
    last_seen BIGINT,
    last_ack BIGINT,
    sync_count BIGINT NOT NULL DEFAULT 0
);

-- Blob bytes live in the database so every server process sees them,
-- addressed by SHA-256. EXTERNAL storage (uncompressed TOAST) lets a ranged
-- read fetch only the chunks it needs.
CREATE TABLE blob_data (
    sha256 TEXT COLLATE "C" PRIMARY KEY,
    size BIGINT NOT NULL,
    bytes BYTEA NOT NULL
);
ALTER TABLE blob_data ALTER COLUMN bytes SET STORAGE EXTERNAL;

CREATE TABLE blobs (
    sha256 TEXT COLLATE "C" NOT NULL REFERENCES blob_data (sha256),
    entity_id TEXT COLLATE "C" NOT NULL,
    content_type TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (sha256, entity_id)
);
CREATE INDEX blobs_entity ON blobs (entity_id, created_at);
