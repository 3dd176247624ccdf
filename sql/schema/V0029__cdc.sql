-- pgpipe built-in schema: change data capture (logical replication from
-- another PostgreSQL database into staging.raw_events). Idempotent.

-- One row per replication slot: the end LSN of the last source transaction
-- whose events are staged. It is written in the same transaction as those
-- events, so after a crash the stream resumes right after it and nothing
-- is staged twice; the source is told the slot may advance only after that
-- commit.
CREATE TABLE IF NOT EXISTS pgpipe.cdc_slots (
    slot         TEXT PRIMARY KEY,            -- the slot's name, the events' source
    system_id    TEXT NOT NULL,               -- the source cluster (IDENTIFY_SYSTEM)
    database     TEXT NOT NULL,               -- the source database
    publication  TEXT NOT NULL,
    applied_lsn  PG_LSN NOT NULL,             -- end of the last staged commit
    commit_time  TIMESTAMPTZ,                 -- its commit time on the source
    transactions BIGINT NOT NULL DEFAULT 0,   -- staged so far
    events       BIGINT NOT NULL DEFAULT 0,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
COMMENT ON TABLE pgpipe.cdc_slots IS
    'pgpipe CDC: per replication slot, the source LSN staged so far (exactly once)';

-- The initial snapshot of a slot, one row per published table: its rows are
-- staged in one transaction with done_at, so an interrupted snapshot resumes
-- with the tables not done. snapshot_lsn is the consistent point the rows
-- were read at: the stream skips that table's changes committed before it.
CREATE TABLE IF NOT EXISTS pgpipe.cdc_snapshot_tables (
    slot         TEXT NOT NULL REFERENCES pgpipe.cdc_slots (slot) ON DELETE CASCADE,
    table_name   TEXT NOT NULL,               -- schema.table, as in event_type
    snapshot_lsn PG_LSN,
    rows         BIGINT,
    done_at      TIMESTAMPTZ,
    PRIMARY KEY (slot, table_name)
);
COMMENT ON TABLE pgpipe.cdc_snapshot_tables IS
    'pgpipe CDC: the initial snapshot per table of a slot (resumable per table)';
