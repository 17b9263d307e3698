-- The state digest of the latest rows, remembered across processes: a fresh
-- process (a command-line sync) answers it with one read instead of reading and
-- hashing every latest row. At most one row; it holds the digest of the latest
-- rows as they are now. Any change to which (id, version) is latest, by any
-- writer of the file (through the store or not), deletes it in the same
-- transaction, so a stored digest is never stale; the next digest computed is
-- stored again (only if no store write committed in between: `write_generation`
-- is the store's count of committed write transactions when it was computed).
CREATE TABLE stored_digest (
    one              INTEGER PRIMARY KEY CHECK (one = 1),
    write_generation INTEGER NOT NULL,
    digest           TEXT    NOT NULL
);

CREATE TRIGGER entities_digest_insert AFTER INSERT ON entities
WHEN NEW.is_latest = 1
BEGIN
    DELETE FROM stored_digest;
END;

CREATE TRIGGER entities_digest_update AFTER UPDATE ON entities
WHEN OLD.is_latest <> NEW.is_latest OR OLD.version <> NEW.version OR OLD.id <> NEW.id
BEGIN
    DELETE FROM stored_digest;
END;

CREATE TRIGGER entities_digest_delete AFTER DELETE ON entities
WHEN OLD.is_latest = 1
BEGIN
    DELETE FROM stored_digest;
END;
