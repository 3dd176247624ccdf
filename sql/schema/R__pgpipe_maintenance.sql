-- pgpipe built-in schema: maintenance functions and views (repeatable: runs
-- again whenever this file changes).

-- Creates the daily partitions of staging.raw_events for start_date ..
-- start_date + ahead_days (UTC days; partitions are named raw_events_pYYYYMMDD).
-- Rows already in the DEFAULT partition for such a day are moved into the new
-- partition. Returns the number of partitions created. Safe to call at any
-- time and from several sessions.
-- Staging partitions are queues: every claimed row is an UPDATE that leaves
-- a dead row version and a dead entry in the unprocessed-rows index, which
-- every later claim has to step over until VACUUM removes it. With the
-- default thresholds (20% of the table) autovacuum comes far too late: a
-- 1M-event run spent more than half its time walking dead entries. So each
-- partition is vacuumed after every 20,000 dead rows, without cost delay.
-- (Also lower autovacuum_naptime on a busy server: the default is 1 min.)
CREATE OR REPLACE FUNCTION pgpipe.tune_partition(part regclass)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    EXECUTE format('ALTER TABLE %s SET (autovacuum_vacuum_scale_factor = 0, '
                   'autovacuum_vacuum_threshold = 20000, autovacuum_vacuum_cost_delay = 0, '
                   'autovacuum_vacuum_insert_scale_factor = 0, '
                   'autovacuum_vacuum_insert_threshold = 100000)', part);
END
$fn$;

CREATE OR REPLACE FUNCTION pgpipe.create_partitions(
    ahead_days integer DEFAULT 7,
    start_date date DEFAULT ((now() AT TIME ZONE 'UTC')::date - 1))
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    d    date;
    lo   timestamptz;
    hi   timestamptz;
    part text;
    made integer := 0;
BEGIN
    IF ahead_days IS NULL OR ahead_days < 0 THEN
        RAISE EXCEPTION 'pgpipe.create_partitions: ahead_days must be >= 0, got %', ahead_days;
    END IF;
    IF ahead_days > 366 THEN -- PGPIPE_PARTITIONS_AHEAD_MAX in pgpipe.h
        RAISE EXCEPTION 'pgpipe.create_partitions: ahead_days is at most 366 (a year of daily '
                        'partitions), got %', ahead_days;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pgpipe.raw_events partitions'));
    FOR i IN 0 .. ahead_days LOOP
        d := start_date + i;
        part := 'raw_events_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(format('staging.%I', part)) IS NOT NULL;
        lo := d::timestamp AT TIME ZONE 'UTC';
        hi := (d + 1)::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (SELECT 1 FROM staging.raw_events_default
                   WHERE received_at >= lo AND received_at < hi) THEN
            -- rows for that day already landed in the DEFAULT partition: move them
            LOCK TABLE staging.raw_events_default IN EXCLUSIVE MODE;
            EXECUTE format('CREATE TABLE staging.%I (LIKE staging.raw_events INCLUDING DEFAULTS)',
                           part);
            EXECUTE format('WITH moved AS (DELETE FROM staging.raw_events_default '
                           'WHERE received_at >= $1 AND received_at < $2 RETURNING *) '
                           'INSERT INTO staging.%I SELECT * FROM moved', part) USING lo, hi;
            EXECUTE format('ALTER TABLE staging.raw_events ATTACH PARTITION staging.%I '
                           'FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        ELSE
            EXECUTE format('CREATE TABLE staging.%I PARTITION OF staging.raw_events '
                           'FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        END IF;
        PERFORM pgpipe.tune_partition(format('staging.%I', part)::regclass);
        made := made + 1;
    END LOOP;
    RETURN made;
END
$fn$;

-- Retention: detaches (and, unless detach_only, drops) the daily partitions
-- of days before today - keep_days (UTC), and deletes such rows from the
-- DEFAULT partition. A partition that still holds unprocessed rows is kept
-- (with a NOTICE) unless include_unprocessed. Returns the number of
-- partitions removed.
CREATE OR REPLACE FUNCTION pgpipe.drop_old_partitions(
    keep_days integer,
    detach_only boolean DEFAULT false,
    include_unprocessed boolean DEFAULT false)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    cutoff  date;
    r       record;
    pending boolean;
    n       integer := 0;
BEGIN
    IF keep_days IS NULL OR keep_days < 0 THEN
        RAISE EXCEPTION 'pgpipe.drop_old_partitions: keep_days must be >= 0, got %', keep_days;
    END IF;
    cutoff := (now() AT TIME ZONE 'UTC')::date - keep_days;
    PERFORM pg_advisory_xact_lock(hashtext('pgpipe.raw_events partitions'));
    FOR r IN
        SELECT c.relname AS part, to_date(substr(c.relname, 13), 'YYYYMMDD') AS day
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'staging.raw_events'::regclass
          AND c.relname ~ '^raw_events_p[0-9]{8}$'
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN r.day >= cutoff;
        IF NOT include_unprocessed THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM staging.%I WHERE NOT processed)', r.part)
                INTO pending;
            IF pending THEN
                RAISE NOTICE 'pgpipe: keeping staging.%: it holds unprocessed rows', r.part;
                CONTINUE;
            END IF;
        END IF;
        EXECUTE format('ALTER TABLE staging.raw_events DETACH PARTITION staging.%I', r.part);
        IF NOT detach_only THEN
            EXECUTE format('DROP TABLE staging.%I', r.part);
        END IF;
        n := n + 1;
    END LOOP;
    DELETE FROM staging.raw_events_default
    WHERE received_at < cutoff::timestamp AT TIME ZONE 'UTC'
      AND (processed OR include_unprocessed);
    RETURN n;
END
$fn$;

-- The optional GIN index on payload (jsonb_path_ops: @>, @?, @@ queries).
-- It slows COPY about 3x, so it is off unless asked for. Returns enable.
CREATE OR REPLACE FUNCTION pgpipe.raw_events_payload_gin(enable boolean DEFAULT true)
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF enable THEN
        CREATE INDEX IF NOT EXISTS raw_events_payload_gin
            ON staging.raw_events USING gin (payload jsonb_path_ops);
    ELSE
        DROP INDEX IF EXISTS staging.raw_events_payload_gin;
    END IF;
    RETURN enable;
END
$fn$;

-- The partitions of staging.raw_events with their bounds and sizes.
CREATE OR REPLACE VIEW pgpipe.raw_events_partitions AS
SELECT c.relname::text                          AS partition,
       pg_get_expr(c.relpartbound, c.oid)       AS bounds,
       GREATEST(c.reltuples, 0)::bigint         AS estimated_rows,
       pg_total_relation_size(c.oid)            AS total_bytes
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'staging.raw_events'::regclass
ORDER BY c.relname;

-- Partitions for yesterday, today and the next week exist after install.
SELECT pgpipe.create_partitions(8);

-- existing partitions (and DEFAULT) get the same settings
DO $do$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT i.inhrelid::regclass AS part FROM pg_inherits i
             WHERE i.inhparent = 'staging.raw_events'::regclass LOOP
        PERFORM pgpipe.tune_partition(r.part);
    END LOOP;
END
$do$;
