-- Staging layer: raw records as they arrive, JSONB payloads, nothing refused.
-- staging.raw_events comes from pgpipe's built-in schema.

CREATE TABLE IF NOT EXISTS staging.raw_users (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT        NOT NULL,
    payload     JSONB       NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed   BOOLEAN     NOT NULL DEFAULT false,
    batch_id    UUID
);
CREATE INDEX IF NOT EXISTS raw_users_unprocessed_idx
    ON staging.raw_users (received_at) WHERE NOT processed;

-- Deletes processed staging rows older than days_to_keep days; returns how
-- many rows went. (Whole old partitions of raw_events are better dropped
-- with pgpipe.drop_old_partitions().)
CREATE OR REPLACE FUNCTION staging.cleanup_old_data(days_to_keep integer DEFAULT 30)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
    total bigint := 0;
BEGIN
    IF days_to_keep IS NULL OR days_to_keep < 0 THEN
        RAISE EXCEPTION 'days_to_keep must be >= 0';
    END IF;
    DELETE FROM staging.raw_users
    WHERE processed AND received_at < now() - make_interval(days => days_to_keep);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    DELETE FROM staging.raw_events
    WHERE processed AND received_at < now() - make_interval(days => days_to_keep);
    GET DIAGNOSTICS n = ROW_COUNT;
    total := total + n;
    RAISE NOTICE 'cleanup_old_data: deleted % rows older than % days', total, days_to_keep;
    RETURN total;
END
$$;
