-- Server side: the Merkle tree (depth 3, fan-out 16) over the latest (id, version)
-- of every entity, kept in tables and updated inside each write transaction.
-- A store turns it on the first time it is asked for a node (`merkle_on`), builds
-- it from the latest rows, and from then on these triggers record every id whose
-- latest row may have changed; the write transaction rehashes just those ids'
-- leaves and their ancestors before it commits, and empties `merkle_dirty`.

-- The latest (id, version) of every id, by leaf (the first 3 hex digits of SHA-256(id)).
CREATE TABLE merkle_rows (
    leaf    INTEGER NOT NULL,
    id      TEXT    NOT NULL,
    version TEXT    NOT NULL,
    PRIMARY KEY (leaf, id)
) WITHOUT ROWID;

-- Every node's hash: level 0 is the root, level 3 the 4096 leaves.
CREATE TABLE merkle_nodes (
    level INTEGER NOT NULL,
    idx   INTEGER NOT NULL,
    hash  TEXT    NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

-- Ids changed by the running write transaction (empty between transactions). An id
-- may be listed more than once: no uniqueness to check, whatever conflict policy the
-- statement that fired the trigger carries.
CREATE TABLE merkle_dirty (
    id TEXT NOT NULL
);

ALTER TABLE store_meta ADD COLUMN merkle_on INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER entities_merkle_insert AFTER INSERT ON entities
WHEN NEW.is_latest = 1 AND (SELECT merkle_on FROM store_meta WHERE one = 1) = 1
BEGIN
    INSERT INTO merkle_dirty (id) VALUES (NEW.id);
END;

CREATE TRIGGER entities_merkle_update AFTER UPDATE ON entities
WHEN (OLD.is_latest <> NEW.is_latest OR OLD.version <> NEW.version OR OLD.id <> NEW.id)
    AND (SELECT merkle_on FROM store_meta WHERE one = 1) = 1
BEGIN
    INSERT INTO merkle_dirty (id) VALUES (OLD.id);
    INSERT INTO merkle_dirty (id) VALUES (NEW.id);
END;

CREATE TRIGGER entities_merkle_delete AFTER DELETE ON entities
WHEN OLD.is_latest = 1 AND (SELECT merkle_on FROM store_meta WHERE one = 1) = 1
BEGIN
    INSERT INTO merkle_dirty (id) VALUES (OLD.id);
END;

-- The history horizon: the last compaction pruned history received before
-- `horizon_at` (µs), and no row numbered at or below `horizon_seq` that a
-- cursor could still point past is left to page. 0 when nothing was pruned.
ALTER TABLE store_meta ADD COLUMN horizon_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE store_meta ADD COLUMN horizon_seq INTEGER NOT NULL DEFAULT 0;
