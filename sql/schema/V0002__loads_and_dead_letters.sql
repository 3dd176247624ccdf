-- pgpipe built-in schema, part 2: load bookkeeping and the dead-letter queue.

-- One row per load run. A load commits its rows batch by batch; every
-- committed batch is a row of pgpipe.load_batches in the same transaction, so
-- a resumed load skips what is committed and records in = loaded +
-- dead-lettered holds across crashes.
CREATE TABLE IF NOT EXISTS pgpipe.loads (
    id                 BIGSERIAL PRIMARY KEY,
    source             TEXT        NOT NULL,          -- file path, '<stdin>', a stream name
    source_size        BIGINT,                        -- bytes, when known
    source_mtime       TIMESTAMPTZ,
    source_checksum    TEXT,                          -- recognizes the same input on resume
    format             TEXT        NOT NULL,          -- 'csv', 'ndjson', 'json', ...
    target             TEXT        NOT NULL DEFAULT 'staging.raw_events',
    status             TEXT        NOT NULL DEFAULT 'running'
                       CHECK (status IN ('running', 'completed', 'failed', 'interrupted',
                                         'cancelled')),
    rows_read          BIGINT      NOT NULL DEFAULT 0,
    rows_loaded        BIGINT      NOT NULL DEFAULT 0,
    rows_dead_lettered BIGINT      NOT NULL DEFAULT 0,
    batches            BIGINT      NOT NULL DEFAULT 0,
    last_batch_seq     BIGINT      NOT NULL DEFAULT 0, -- last committed batch
    last_line          BIGINT      NOT NULL DEFAULT 0, -- input line after that batch
    last_offset        BIGINT      NOT NULL DEFAULT 0, -- input byte offset after that batch
    options            JSONB,
    error_message      TEXT,
    error_sqlstate     TEXT,
    loaded_by          TEXT        NOT NULL DEFAULT current_user,
    started_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at        TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS loads_source_idx ON pgpipe.loads (source, started_at);
CREATE INDEX IF NOT EXISTS loads_running_idx ON pgpipe.loads (status) WHERE status = 'running';

CREATE TABLE IF NOT EXISTS pgpipe.load_batches (
    load_id            BIGINT      NOT NULL REFERENCES pgpipe.loads (id) ON DELETE CASCADE,
    seq                BIGINT      NOT NULL,          -- 1, 2, ... within the load
    batch_id           UUID        NOT NULL UNIQUE,   -- staging.raw_events.batch_id
    first_line         BIGINT,
    last_line          BIGINT,
    start_offset       BIGINT,
    end_offset         BIGINT,
    rows_read          INTEGER     NOT NULL DEFAULT 0,
    rows_loaded        INTEGER     NOT NULL DEFAULT 0,
    rows_dead_lettered INTEGER     NOT NULL DEFAULT 0,
    committed_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (load_id, seq)
);

-- Every record that could not be loaded (stage 'load': the raw text as read)
-- or processed (stage 'process': the staging row), with the error, and replay
-- bookkeeping.
CREATE TABLE IF NOT EXISTS pgpipe.dead_letters (
    id              BIGSERIAL PRIMARY KEY,
    stage           TEXT        NOT NULL CHECK (stage IN ('load', 'process')),
    source_table    TEXT,                   -- 'staging.raw_events' for stage 'process'
    row_id          BIGINT,                 -- id of the row in source_table
    row_received_at TIMESTAMPTZ,            -- with row_id, the key of a raw_events row
    source_name     TEXT,                   -- input file or stream
    line_number     BIGINT,                 -- 1-based line in the input
    column_number   BIGINT,
    byte_offset     BIGINT,
    load_id         BIGINT REFERENCES pgpipe.loads (id) ON DELETE SET NULL,
    batch_id        UUID,
    event_type      TEXT,
    raw_text        TEXT,                   -- the record as received (valid UTF-8)
    raw_bytes       BYTEA,                  -- the record when it was not valid UTF-8
    payload         JSONB,                  -- parsed payload, when it parsed
    error_message   TEXT        NOT NULL,
    sqlstate        TEXT,
    error_context   TEXT,                   -- handler name, column, constraint ...
    attempt_count   INTEGER     NOT NULL DEFAULT 1,
    first_failed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_failed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    status          TEXT        NOT NULL DEFAULT 'dead'
                    CHECK (status IN ('dead', 'replayed', 'discarded')),
    replay_count    INTEGER     NOT NULL DEFAULT 0,
    replayed_at     TIMESTAMPTZ,
    replayed_by     TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_open_idx
    ON pgpipe.dead_letters (stage, last_failed_at) WHERE status = 'dead';
CREATE INDEX IF NOT EXISTS dead_letters_row_idx
    ON pgpipe.dead_letters (source_table, row_id) WHERE row_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS dead_letters_load_idx
    ON pgpipe.dead_letters (load_id) WHERE load_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS dead_letters_batch_idx
    ON pgpipe.dead_letters (batch_id) WHERE batch_id IS NOT NULL;
