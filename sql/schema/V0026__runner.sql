-- pgpipe built-in schema: the pipeline runner's state (pgpipe run). Schedule
-- state lives here, not in one instance's memory, so restarts and other
-- instances see it. Idempotent.

-- Instances running a pipeline; heartbeat_at is refreshed every few seconds,
-- and an instance whose heartbeat is older than the runner's
-- instance_timeout is dead (its running firings are recorded as lost).
CREATE TABLE IF NOT EXISTS pgpipe.run_instances (
    pipeline     TEXT NOT NULL,
    instance     TEXT NOT NULL,
    host         TEXT NOT NULL,
    pid          INT NOT NULL,
    version      TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at   TIMESTAMPTZ,                 -- set by a clean stop
    PRIMARY KEY (pipeline, instance)
);
COMMENT ON TABLE pgpipe.run_instances IS
    'instances of pgpipe run, by pipeline: alive while heartbeat_at is recent';
