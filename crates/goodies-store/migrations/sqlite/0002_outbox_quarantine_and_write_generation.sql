-- Client side: an outbox entry the server refused as invalid (or too large) is
-- quarantined: kept, shown, not sent again until an edit of its id or an
-- explicit retry releases it. The pull-guard still protects its id.
ALTER TABLE outbox ADD COLUMN quarantined_at INTEGER;
ALTER TABLE outbox ADD COLUMN quarantine_reason TEXT;

-- Bumped by every committed write transaction, whichever process made it, so a
-- cache kept in one process can tell that another process wrote the file.
ALTER TABLE store_meta ADD COLUMN write_generation INTEGER NOT NULL DEFAULT 0;

-- Bumped by every committed client transaction that changes entity rows (a local
-- edit, an applied page, a removal): a cache of latest versions that counts the
-- ones it was told about knows when anything else wrote.
ALTER TABLE store_meta ADD COLUMN graph_generation INTEGER NOT NULL DEFAULT 0;
