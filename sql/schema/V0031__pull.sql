-- The API pull source (src/pull): per source, stream and scope, where the
-- puller stands. The row is updated in the same transaction as the page's
-- records and dead letters, so a crash never skips or repeats a page.
--
--   scope      '' for the incremental pull; 'backfill FROM..TO' for a
--              backfill over a range, which keeps its own resume point and
--              never touches the incremental cursor
--   cursor     the incremental cursor: the largest value of the records'
--              cursor field (updated-since timestamp, last id) or the API's
--              own cursor at the end of the listing; the next run starts
--              from it
--   next_url   the next page of an unfinished run (NULL: the last run
--              reached the end); a run resumes from it
--   run_*      the unfinished run so far: pages, records, the cursor value
--              it reached (becomes cursor when the run ends)

CREATE TABLE IF NOT EXISTS pgpipe.pull_state (
    source          TEXT        NOT NULL,
    stream          TEXT        NOT NULL,
    scope           TEXT        NOT NULL DEFAULT '',
    cursor          TEXT,
    next_url        TEXT,
    run_pages       BIGINT      NOT NULL DEFAULT 0,
    run_records     BIGINT      NOT NULL DEFAULT 0,
    run_high        TEXT,
    run_started_at  TIMESTAMPTZ,
    pages           BIGINT      NOT NULL DEFAULT 0,
    records         BIGINT      NOT NULL DEFAULT 0,
    dead_lettered   BIGINT      NOT NULL DEFAULT 0,
    last_status     TEXT,
    last_error      TEXT,
    last_run_at     TIMESTAMPTZ,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (source, stream, scope)
);

COMMENT ON TABLE pgpipe.pull_state IS
    'API pull: cursor and resume point per source, stream and scope, committed with each page';

-- One row per run, for status pages and after-the-fact questions.
CREATE TABLE IF NOT EXISTS pgpipe.pull_runs (
    id              BIGSERIAL   PRIMARY KEY,
    source          TEXT        NOT NULL,
    stream          TEXT        NOT NULL,
    scope           TEXT        NOT NULL DEFAULT '',
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    status          TEXT        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'done', 'paused', 'failed', 'stopped')),
    pages           BIGINT      NOT NULL DEFAULT 0,
    records         BIGINT      NOT NULL DEFAULT 0,
    dead_lettered   BIGINT      NOT NULL DEFAULT 0,
    requests        BIGINT      NOT NULL DEFAULT 0,
    retries         BIGINT      NOT NULL DEFAULT 0,
    error           TEXT
);
CREATE INDEX IF NOT EXISTS pull_runs_source_idx ON pgpipe.pull_runs (source, stream, started_at);
