-- The input of a client mirror's state digest, kept up to date in the database, so
-- the digest after a pull that changed a few rows re-reads a few small blobs instead
-- of reading and sorting every latest row (`sqlite::mirror_digest`).
--
-- The digest is SHA-256 over `{id}\x1f{version}\x1e` of every latest row in id (byte)
-- order. `digest_chunks` holds that byte string cut at id boundaries: the chunk keyed
-- `first_id` holds the rows whose id is at or after `first_id` and before the next
-- chunk's key (the first chunk's key is ''), so the chunks' bodies in key order are the
-- whole input.
--
-- Only a client mirror keeps them: the tables stay empty and the triggers do nothing
-- while `digest_chunks_on` is empty (a server's database). Once on, every change to
-- which (id, version) is latest, by any writer of the file (through the store or not),
-- records its id in `digest_dirty` in the same transaction; the next digest patches the
-- chunks holding those ids from the latest rows before it hashes them.
CREATE TABLE digest_chunks (
    first_id TEXT PRIMARY KEY,
    body     BLOB NOT NULL
) WITHOUT ROWID;

-- One row per change (an id may appear more than once; the reader deduplicates):
-- a conflict clause inside a trigger gives way to the firing statement's, so the
-- triggers cannot rely on `INSERT OR IGNORE`.
CREATE TABLE digest_dirty (
    id TEXT NOT NULL
);

CREATE TABLE digest_chunks_on (
    one INTEGER PRIMARY KEY CHECK (one = 1)
);

CREATE TRIGGER entities_chunks_insert AFTER INSERT ON entities
WHEN NEW.is_latest = 1 AND EXISTS (SELECT 1 FROM digest_chunks_on)
BEGIN
    INSERT INTO digest_dirty (id) VALUES (NEW.id);
END;

CREATE TRIGGER entities_chunks_update AFTER UPDATE ON entities
WHEN (OLD.is_latest <> NEW.is_latest OR OLD.version <> NEW.version OR OLD.id <> NEW.id)
    AND EXISTS (SELECT 1 FROM digest_chunks_on)
BEGIN
    INSERT INTO digest_dirty (id) VALUES (OLD.id), (NEW.id);
END;

CREATE TRIGGER entities_chunks_delete AFTER DELETE ON entities
WHEN OLD.is_latest = 1 AND EXISTS (SELECT 1 FROM digest_chunks_on)
BEGIN
    INSERT INTO digest_dirty (id) VALUES (OLD.id);
END;
