-- pgpipe built-in schema: the HTTP ingest server's idempotency keys (issue 21).
--
-- A request that carries an idempotency key (Idempotency-Key, or a sender's
-- delivery id) is recorded here in the same transaction as its records, with
-- the counts of its first response, so a retry gets that response again and
-- adds nothing. The table is RANGE partitioned by day on first_seen:
-- pgpipe.http_keys_maintain() creates the days ahead and drops whole days
-- past the longest idempotency window (never a row-by-row DELETE), so its
-- size is bounded by the traffic of that window. There is no DEFAULT
-- partition: a key outside every partition fails its transaction (the
-- server then runs the maintenance and tries again) rather than landing
-- where no drop would reach it.
--
-- Uniqueness of (source, key) cannot be a constraint across partitions;
-- the server takes pg_advisory_xact_lock on the key's hash before it looks
-- the key up, so two servers on one database never both accept a key.
CREATE TABLE IF NOT EXISTS pgpipe.http_keys (
    source        TEXT        NOT NULL,
    key           TEXT        NOT NULL,
    -- md5(source || E'\n' || key): the lookup's index holds 16 bytes a key
    key_hash      UUID        NOT NULL,
    first_seen    TIMESTAMPTZ NOT NULL DEFAULT now(),
    request_id    UUID        NOT NULL,  -- the request that was applied
    accepted      INTEGER     NOT NULL,
    dead_lettered INTEGER     NOT NULL,
    errors        TEXT                   -- its response's "errors" array; NULL = []
) PARTITION BY RANGE (first_seen);
CREATE INDEX IF NOT EXISTS http_keys_hash_idx ON pgpipe.http_keys (key_hash);

COMMENT ON TABLE pgpipe.http_keys IS
    'HTTP ingest idempotency keys with their first response, daily partitions (http_keys_maintain)';

-- Creates the daily partitions (UTC) from yesterday to ahead_days ahead and
-- drops the partitions that end more than keep_hours ago. Returns the number
-- of partitions created plus dropped; cheap when there is nothing to do (a
-- catalog lookup per day). Safe from several sessions at once.
CREATE OR REPLACE FUNCTION pgpipe.http_keys_maintain(keep_hours integer DEFAULT 96,
                                                     ahead_days integer DEFAULT 3)
RETURNS integer
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    d     date;
    part  text;
    n     integer := 0;
    r     record;
    today date := (now() AT TIME ZONE 'UTC')::date;
BEGIN
    IF keep_hours IS NULL OR keep_hours < 1 OR ahead_days IS NULL OR ahead_days < 0 THEN
        RAISE EXCEPTION 'pgpipe.http_keys_maintain: keep_hours >= 1 and ahead_days >= 0, got %, %',
            keep_hours, ahead_days;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('pgpipe.http_keys partitions'));
    FOR i IN -1 .. ahead_days LOOP
        d := today + i;
        part := 'http_keys_p' || to_char(d, 'YYYYMMDD');
        CONTINUE WHEN to_regclass(format('pgpipe.%I', part)) IS NOT NULL;
        EXECUTE format('CREATE TABLE pgpipe.%I PARTITION OF pgpipe.http_keys '
                       'FOR VALUES FROM (%L) TO (%L)', part,
                       d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
        n := n + 1;
    END LOOP;
    FOR r IN SELECT c.oid::regclass AS part, c.relname
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'pgpipe.http_keys'::regclass
               AND c.relname ~ '^http_keys_p[0-9]{8}$' LOOP
        IF (to_date(substr(r.relname, 12), 'YYYYMMDD') + 1)::timestamp AT TIME ZONE 'UTC'
           < now() - make_interval(hours => keep_hours) THEN
            EXECUTE format('DROP TABLE %s', r.part);
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$fn$;

SELECT pgpipe.http_keys_maintain();
