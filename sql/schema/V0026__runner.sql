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

-- Schedules: one row per (pipeline, schedule). last_slot is the latest slot
-- claimed by any instance; an instance fires a slot only after moving
-- last_slot forward to it with a compare-and-set
--   UPDATE ... SET last_slot = $slot WHERE ... AND last_slot < $slot
-- so each slot fires on exactly one instance with no leader to elect: the
-- row lock orders the contenders and the loser's WHERE finds the slot taken.
-- A new schedule starts at the moment its row is made (no backfill).
-- running_* say which instance runs a firing now (cleared at its end, or
-- recorded as lost when that instance's heartbeat stops).
CREATE TABLE IF NOT EXISTS pgpipe.run_schedules (
    pipeline         TEXT NOT NULL,
    schedule         TEXT NOT NULL,
    expr             TEXT NOT NULL,
    tz               TEXT NOT NULL DEFAULT 'UTC',
    last_slot        TIMESTAMPTZ,
    running_instance TEXT,
    running_since    TIMESTAMPTZ,
    running_slot     TIMESTAMPTZ,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, schedule)
);
COMMENT ON TABLE pgpipe.run_schedules IS
    'pgpipe run schedules: the last slot claimed (compare-and-set) and the firing running now';

-- The run history: one row per finished firing or task run (one INSERT
-- each; running state stays in run_schedules). RANGE partitioned by day on
-- expires_on (the started day + the pipeline's keep_ok for ok/skipped rows,
-- + keep_failed for the others), so retention is dropping whole partitions
-- (pgpipe.run_history_maintain), never a DELETE of bulk rows: the table's
-- size is bounded by the runs of the retention window.
CREATE TABLE IF NOT EXISTS pgpipe.run_history (
    id          BIGINT GENERATED ALWAYS AS IDENTITY,
    pipeline    TEXT NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('schedule', 'task')),
    name        TEXT NOT NULL,
    slot        TIMESTAMPTZ,                  -- the scheduled time
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    status      TEXT NOT NULL
                CHECK (status IN ('ok', 'failed', 'skipped', 'missed', 'lost', 'timeout')),
    attempts    INT NOT NULL DEFAULT 1,
    rows        BIGINT,
    error       TEXT,
    sqlstate    TEXT,
    instance    TEXT NOT NULL,
    host        TEXT NOT NULL,
    expires_on  DATE NOT NULL
) PARTITION BY RANGE (expires_on);
CREATE INDEX IF NOT EXISTS run_history_name_idx
    ON pgpipe.run_history (pipeline, kind, name, started_at);
CREATE INDEX IF NOT EXISTS run_history_started_idx ON pgpipe.run_history (started_at);
COMMENT ON TABLE pgpipe.run_history IS
    'pgpipe run history, daily partitions by expiry day (run_history_maintain drops them)';

-- The partition of expiry day d, made when missing (the runner calls it
-- when an INSERT finds no partition). Safe from several sessions at once.
CREATE OR REPLACE FUNCTION pgpipe.run_history_partition(d date)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    part text := 'run_history_p' || to_char(d, 'YYYYMMDD');
BEGIN
    IF to_regclass(format('pgpipe.%I', part)) IS NOT NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pgpipe.run_history partitions'));
    IF to_regclass(format('pgpipe.%I', part)) IS NULL THEN
        EXECUTE format('CREATE TABLE pgpipe.%I PARTITION OF pgpipe.run_history '
                       'FOR VALUES FROM (%L) TO (%L)', part, d, d + 1);
    END IF;
END
$fn$;

-- Retention: drops the partitions whose expiry day is before today, after
-- moving each name's newest keep_last rows out of them (their expires_on
-- becomes today, a live partition), so every task keeps its last keep_last
-- runs however old. Returns the number of partitions dropped. The rows
-- moved are at most keep_last per name; everything else goes with DROP
-- TABLE (no bulk DELETE, no bloat, no long VACUUM).
CREATE OR REPLACE FUNCTION pgpipe.run_history_maintain(keep_last integer,
                                                       today date DEFAULT current_date)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    r     record;
    k     record;
    n     integer := 0;
    thr   timestamptz;
    parts regclass[] := '{}';
BEGIN
    IF keep_last IS NULL OR keep_last < 0 THEN
        RAISE EXCEPTION 'pgpipe.run_history_maintain: keep_last >= 0, got %', keep_last;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pgpipe.run_history partitions'));
    FOR r IN SELECT c.oid::regclass AS part
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'pgpipe.run_history'::regclass
               AND c.relname ~ '^run_history_p[0-9]{8}$'
               AND to_date(substr(c.relname, 14), 'YYYYMMDD') < today LOOP
        parts := parts || r.part;
    END LOOP;
    IF cardinality(parts) = 0 THEN
        RETURN 0;
    END IF;
    IF keep_last > 0 THEN
        PERFORM pgpipe.run_history_partition(today);
        FOR k IN SELECT DISTINCT pipeline, kind, name FROM pgpipe.run_history
                 WHERE expires_on < today LOOP
            -- the newest keep_last rows by the (pipeline, kind, name,
            -- started_at) index: bounded work per name, whatever the size
            SELECT x.started_at INTO thr FROM pgpipe.run_history x
            WHERE x.pipeline = k.pipeline AND x.kind = k.kind AND x.name = k.name
            ORDER BY x.started_at DESC OFFSET keep_last - 1 LIMIT 1;
            UPDATE pgpipe.run_history h SET expires_on = today
            WHERE h.pipeline = k.pipeline AND h.kind = k.kind AND h.name = k.name
              AND h.started_at >= coalesce(thr, '-infinity') AND h.expires_on < today
              AND h.id IN (SELECT x.id FROM pgpipe.run_history x
                           WHERE x.pipeline = k.pipeline AND x.kind = k.kind
                             AND x.name = k.name
                             AND x.started_at >= coalesce(thr, '-infinity')
                           ORDER BY x.started_at DESC, x.id DESC LIMIT keep_last);
        END LOOP;
    END IF;
    FOR i IN 1 .. cardinality(parts) LOOP
        EXECUTE format('DROP TABLE %s', parts[i]);
        n := n + 1;
    END LOOP;
    RETURN n;
END
$fn$;
