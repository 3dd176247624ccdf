-- pgpipe built-in schema, part 1: the staging area.
--
-- staging.raw_events receives every record the COPY loader reads. It is
-- partitioned by day (UTC) on received_at; pgpipe.create_partitions() (in
-- R__pgpipe_maintenance.sql) creates the daily partitions ahead of time, the
-- DEFAULT partition takes any row no daily partition covers, and
-- pgpipe.drop_old_partitions() applies retention.
--
-- The migration history (pgpipe.migrations) is created by the runner itself
-- before this file runs.

CREATE SCHEMA IF NOT EXISTS pgpipe;
CREATE SCHEMA IF NOT EXISTS staging;

CREATE TABLE IF NOT EXISTS staging.raw_events (
    id               BIGSERIAL,
    source           TEXT        NOT NULL,
    event_type       TEXT        NOT NULL,
    payload          JSONB       NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    processed        BOOLEAN     NOT NULL DEFAULT false,
    batch_id         UUID,
    -- what the SKIP LOCKED claimer needs
    attempts         INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at  TIMESTAMPTZ,
    last_error       TEXT,
    claimed_by       TEXT,
    claimed_at       TIMESTAMPTZ,
    claim_token      UUID,
    lease_expires_at TIMESTAMPTZ,
    processed_at     TIMESTAMPTZ,
    -- a primary key of a partitioned table must include the partition key
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);

COMMENT ON TABLE staging.raw_events IS
    'pgpipe staging area: one row per loaded record, partitioned by day (UTC) on received_at';
COMMENT ON COLUMN staging.raw_events.batch_id IS 'the loader batch that inserted the row';
COMMENT ON COLUMN staging.raw_events.attempts IS 'processing attempts so far (claimer)';
COMMENT ON COLUMN staging.raw_events.next_attempt_at IS 'retry backoff: not claimable before';
COMMENT ON COLUMN staging.raw_events.claim_token IS 'set by the claim that holds the row';
COMMENT ON COLUMN staging.raw_events.lease_expires_at IS
    'a claim older than this is abandoned and the row claimable again';

-- no row is ever refused: what no daily partition covers lands here
CREATE TABLE IF NOT EXISTS staging.raw_events_default
    PARTITION OF staging.raw_events DEFAULT;

-- the claimer scans unprocessed rows in arrival order
CREATE INDEX IF NOT EXISTS raw_events_unprocessed_idx
    ON staging.raw_events (received_at, id) WHERE NOT processed;
-- time-range scans over append-only data
CREATE INDEX IF NOT EXISTS raw_events_received_brin
    ON staging.raw_events USING brin (received_at);
-- lookups by a payload key
CREATE INDEX IF NOT EXISTS raw_events_user_id_idx
    ON staging.raw_events ((payload ->> 'user_id'));
CREATE INDEX IF NOT EXISTS raw_events_batch_idx
    ON staging.raw_events (batch_id);
-- the GIN index on payload is optional (it cuts COPY throughput about 3x):
-- SELECT pgpipe.raw_events_payload_gin(true);
