-- Which token subject first synced as each device (crate::owners): `POST /api/v1/sync/ack`
-- confirms a device's watermark only for that subject. Kept apart from `devices`, so a
-- restore of a backup (which replaces `devices`) leaves the owners as they were.
CREATE TABLE IF NOT EXISTS device_owners (
    device_id     TEXT COLLATE "C" PRIMARY KEY,
    subject       TEXT NOT NULL,
    claimed_at_us BIGINT NOT NULL
);
