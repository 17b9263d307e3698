-- A name of any length can be stored. A btree entry holds at most about
-- 2.7 kB, so the listing index keys on the name's first 200 characters (at
-- most 800 bytes) instead of the whole name; listings order by that prefix,
-- then the whole name, then the id, which is the same order as by the whole
-- name, then the id (byte order: a prefix orders as its string does).
DROP INDEX entities_latest_name;
CREATE INDEX entities_latest_name ON entities ((left(name, 200) COLLATE "C"), id) WHERE is_latest;
