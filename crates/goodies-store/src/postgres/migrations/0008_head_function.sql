-- The store's head and a watermark for it in one statement (crate::head): the shared
-- write lock first, then, in a snapshot taken after it (READ COMMITTED: each statement
-- of a volatile function takes its own), the counters and the clock. No writer is then
-- between taking its sequence numbers and committing, so every row numbered after the
-- sequence number read is received after the time read. Refuses to run at another
-- isolation level, where the snapshot would predate the lock.
CREATE OR REPLACE FUNCTION goodies_head(lock_key BIGINT)
RETURNS TABLE (h_seq BIGINT, h_restored_seq BIGINT, h_restored_at BIGINT,
               h_horizon_at BIGINT, h_horizon_seq BIGINT, h_now BIGINT)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'goodies_head needs READ COMMITTED, not %',
            current_setting('transaction_isolation');
    END IF;
    PERFORM pg_advisory_xact_lock_shared(lock_key);
    RETURN QUERY
        SELECT m.last_seq, m.restored_seq, m.restored_at, m.horizon_at, m.horizon_seq,
               goodies_now_us() - 1
        FROM goodies_meta m;
END
$$;
