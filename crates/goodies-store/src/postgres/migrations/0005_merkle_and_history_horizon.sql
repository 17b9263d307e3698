-- The Merkle tree (depth 3, fan-out 16) over the latest (id, version) of every
-- entity, kept in tables and updated inside each write transaction. A store
-- turns it on the first time it is asked for a node (`merkle_on`), builds it
-- from the latest rows, and from then on these triggers record every id whose
-- latest row may have changed; the write transaction (which holds the write
-- lock) rehashes just those ids' leaves and their ancestors before it commits
-- and empties `merkle_dirty`. A TRUNCATE (a restore) turns the tree off; the
-- next request builds it again.

-- The latest (id, version) of every id, by leaf (the first 3 hex digits of SHA-256(id)).
CREATE TABLE merkle_rows (
    leaf INTEGER NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (leaf, id)
);

-- Every node's hash: level 0 is the root, level 3 the 4096 leaves.
CREATE TABLE merkle_nodes (
    level SMALLINT NOT NULL,
    idx INTEGER NOT NULL,
    hash TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (level, idx)
);

-- Ids changed by the running write transaction (empty between transactions). A row
-- counts when it is latest after an insert or update or was latest before an update
-- or delete: pruning superseded versions marks nothing.
CREATE TABLE merkle_dirty (
    id TEXT COLLATE "C" PRIMARY KEY
);

ALTER TABLE goodies_meta ADD COLUMN merkle_on BOOLEAN NOT NULL DEFAULT FALSE;

CREATE FUNCTION goodies_merkle_mark() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF (SELECT merkle_on FROM goodies_meta) THEN
        INSERT INTO merkle_dirty (id) SELECT DISTINCT id FROM changed_rows WHERE is_latest
            ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER entities_merkle_insert AFTER INSERT ON entities
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION goodies_merkle_mark();
CREATE TRIGGER entities_merkle_update_new AFTER UPDATE ON entities
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION goodies_merkle_mark();
CREATE TRIGGER entities_merkle_update_old AFTER UPDATE ON entities
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION goodies_merkle_mark();
CREATE TRIGGER entities_merkle_delete AFTER DELETE ON entities
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION goodies_merkle_mark();

CREATE FUNCTION goodies_merkle_off() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE goodies_meta SET merkle_on = FALSE;
    DELETE FROM merkle_rows;
    DELETE FROM merkle_nodes;
    DELETE FROM merkle_dirty;
    RETURN NULL;
END
$$;

CREATE TRIGGER entities_merkle_truncate AFTER TRUNCATE ON entities
    FOR EACH STATEMENT EXECUTE FUNCTION goodies_merkle_off();

-- The history horizon: the last compaction pruned history received before
-- `horizon_at` (µs), and no row numbered at or below `horizon_seq` that a
-- cursor could still point past is left to page. 0 when nothing was pruned.
ALTER TABLE goodies_meta
    ADD COLUMN horizon_at BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN horizon_seq BIGINT NOT NULL DEFAULT 0;
