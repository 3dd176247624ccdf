-- pgpipe built-in schema: a transactional firing's body no longer runs
-- the rest of pgpipe.run_fire under a role it set.
--
-- A body may change the role or the session authorization for the rest
-- of the session (SELECT set_config('role', 'reporter', false) is plain
-- SQL, so the body fires transactionally). Its subtransaction commits, so
-- the setting stayed for what followed in run_fire: the next bodies, and
-- the history rows, written as that role. A role without INSERT on
-- pgpipe.run_history failed the whole call (then each firing went the
-- one-by-one way), and one with it wrote the history as the body's role.
-- Now run_fire notes the caller's session authorization, role and
-- search_path at entry and puts them back before each body and before the
-- history rows: every body starts as the runner's session does, and the
-- history is the runner's own. (What stays set for the session after the
-- commit, the runner resets: run_session_reset.)
-- pgpipe.run_fire is otherwise as in V0035 (see V0028 for what it does).

CREATE OR REPLACE FUNCTION pgpipe.run_fire(
    p_pipeline text, p_instance text, p_host text,
    p_names text[], p_slots bigint[], p_k1 int, p_k2 int[],
    p_steps text[], p_step_of int[],
    p_keep_ok int, p_keep_failed int, p_failures_only boolean, p_path text,
    p_lock_timeout text)
RETURNS TABLE (o_i int, o_status text, o_prev bigint, o_rows bigint, o_error text,
               o_sqlstate text, o_started_ms bigint, o_finished_ms bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    n       int := coalesce(cardinality(p_names), 0);
    nst     int := coalesce(cardinality(p_steps), 0);
    j       int := 1;
    r       record;
    v_last  timestamptz;
    v_count bigint;
    v_rows  bigint;
    v_err   text;
    v_ss    text;
    v_stat  text;
    t0      timestamptz;
    d       date;
    st      text[];          -- per firing: won, taken, busy, gone, then the outcome
    prev    bigint[];
    nrows   bigint[];
    err     text[];
    ss      text[];
    ts0     timestamptz[];
    ts1     timestamptz[];
    v_auth  text := pg_catalog.current_setting('session_authorization');
    v_role  text := pg_catalog.current_setting('role');
BEGIN
    IF cardinality(p_slots) IS DISTINCT FROM n OR cardinality(p_k2) IS DISTINCT FROM n
       OR coalesce(cardinality(p_step_of), 0) <> nst THEN
        RAISE EXCEPTION 'pgpipe.run_fire: the arrays differ in length';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    st := array_fill(NULL::text, ARRAY[n]);
    prev := array_fill(NULL::bigint, ARRAY[n]);
    nrows := array_fill(NULL::bigint, ARRAY[n]);
    err := array_fill(NULL::text, ARRAY[n]);
    ss := err;
    ts0 := array_fill(NULL::timestamptz, ARRAY[n]);
    ts1 := ts0;

    -- 1. The claims. First every row that is free now, in one statement
    -- (rows locked in name order); then, one by one, those another
    -- transaction holds: wait for it (at most 2 s), then decide.
    FOR r IN SELECT u.k, s.last_slot
             FROM unnest(p_names) WITH ORDINALITY AS u(name, k)
             JOIN pgpipe.run_schedules s ON s.pipeline = p_pipeline AND s.schedule = u.name
             ORDER BY u.name
             FOR UPDATE OF s SKIP LOCKED LOOP
        prev[r.k] := coalesce(floor(extract(epoch FROM r.last_slot))::bigint, 0);
        st[r.k] := CASE WHEN r.last_slot >= to_timestamp(p_slots[r.k]) THEN 'taken'
                        ELSE 'won' END;
    END LOOP;
    PERFORM set_config('lock_timeout', '2s', true);
    FOR k IN 1 .. n LOOP
        CONTINUE WHEN st[k] IS NOT NULL;
        BEGIN
            SELECT s.last_slot INTO v_last FROM pgpipe.run_schedules s
            WHERE s.pipeline = p_pipeline AND s.schedule = p_names[k]
            FOR UPDATE;
            IF NOT FOUND THEN
                st[k] := 'gone';
            ELSE
                prev[k] := coalesce(floor(extract(epoch FROM v_last))::bigint, 0);
                st[k] := CASE WHEN v_last >= to_timestamp(p_slots[k]) THEN 'taken'
                              ELSE 'won' END;
            END IF;
        EXCEPTION WHEN lock_not_available THEN
            st[k] := 'busy';
        END;
    END LOOP;
    PERFORM set_config('lock_timeout', p_lock_timeout, true);
    UPDATE pgpipe.run_schedules s SET last_slot = to_timestamp(u.slot), updated_at = now()
    FROM unnest(p_names, p_slots, st) AS u(name, slot, stat)
    WHERE u.stat = 'won' AND s.pipeline = p_pipeline AND s.schedule = u.name;

    -- 2. The bodies, under the caller's search_path (they are the
    -- caller's SQL); this loop calls built-ins schema-qualified. Each body
    -- in a subtransaction: its error undoes it alone. pgpipe.slot tells a
    -- body its slot (current_setting('pgpipe.slot')::timestamptz).
    FOR k IN 1 .. n LOOP
        IF st[k] = 'won' THEN
            -- the caller's session authorization, role and search_path back (a body may
            -- have set them for the session); the authorization first: it resets the role
            IF pg_catalog.current_setting('session_authorization') IS DISTINCT FROM v_auth THEN
                PERFORM pg_catalog.set_config('session_authorization', v_auth, true);
            END IF;
            IF pg_catalog.current_setting('role') IS DISTINCT FROM v_role THEN
                PERFORM pg_catalog.set_config('role', v_role, true);
            END IF;
            PERFORM pg_catalog.set_config('search_path', p_path, true);
            t0 := pg_catalog.clock_timestamp();
            v_rows := NULL;
            v_err := NULL;
            v_ss := NULL;
            IF NOT pg_catalog.pg_try_advisory_xact_lock(p_k1, p_k2[k])
               AND NOT pgpipe.run_overlap_lock(p_k1, p_k2[k]) THEN
                v_stat := 'skipped';
                v_err := 'the last run still runs';
            ELSE
                v_rows := 0;
                BEGIN
                    PERFORM pg_catalog.set_config('pgpipe.slot',
                                                  pg_catalog.to_timestamp(p_slots[k])::text, true);
                    WHILE j <= nst AND p_step_of[j] = k LOOP
                        EXECUTE p_steps[j];
                        GET DIAGNOSTICS v_count = ROW_COUNT;
                        v_rows := v_rows + v_count;
                        j := j + 1;
                    END LOOP;
                    v_stat := 'ok';
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_err = MESSAGE_TEXT, v_ss = RETURNED_SQLSTATE;
                    v_stat := 'failed';
                    v_rows := NULL;
                END;
            END IF;
            st[k] := v_stat;
            nrows[k] := v_rows;
            err[k] := v_err;
            ss[k] := v_ss;
            ts0[k] := t0;
            ts1[k] := pg_catalog.clock_timestamp();
        END IF;
        -- past this firing's steps, run or not
        WHILE j <= nst AND p_step_of[j] <= k LOOP
            j := j + 1;
        END LOOP;
    END LOOP;
    -- the caller's session authorization, role and search_path back (a body may
    -- have set them for the session); the authorization first: it resets the role
    IF pg_catalog.current_setting('session_authorization') IS DISTINCT FROM v_auth THEN
        PERFORM pg_catalog.set_config('session_authorization', v_auth, true);
    END IF;
    IF pg_catalog.current_setting('role') IS DISTINCT FROM v_role THEN
        PERFORM pg_catalog.set_config('role', v_role, true);
    END IF;
    PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);

    -- 3. The history rows (the partitions of their expiry days first).
    FOR d IN SELECT DISTINCT (u.t AT TIME ZONE 'UTC')::date
                             + CASE WHEN u.stat IN ('ok', 'skipped') THEN p_keep_ok
                                    ELSE p_keep_failed END
             FROM unnest(ts0, st) AS u(t, stat) WHERE u.t IS NOT NULL LOOP
        PERFORM pgpipe.run_history_partition(d);
    END LOOP;
    INSERT INTO pgpipe.run_history (pipeline, kind, name, slot, started_at, finished_at,
                                    status, attempts, rows, error, sqlstate, instance, host,
                                    expires_on)
    SELECT p_pipeline, 'schedule', u.name, to_timestamp(u.slot), u.t0, u.t1, u.stat, 1, u.nrows,
           u.err, u.ss, p_instance, p_host,
           (u.t0 AT TIME ZONE 'UTC')::date
           + CASE WHEN u.stat IN ('ok', 'skipped') THEN p_keep_ok ELSE p_keep_failed END
    FROM unnest(p_names, p_slots, st, nrows, err, ss, ts0, ts1)
         AS u(name, slot, stat, nrows, err, ss, t0, t1)
    WHERE u.t0 IS NOT NULL AND NOT (p_failures_only AND u.stat = 'ok');

    RETURN QUERY
    SELECT u.k::int, u.stat, u.prev, u.nrows, u.err, u.ss,
           floor(extract(epoch FROM u.t0) * 1000)::bigint,
           floor(extract(epoch FROM u.t1) * 1000)::bigint
    FROM unnest(st, prev, nrows, err, ss, ts0, ts1) WITH ORDINALITY
         AS u(stat, prev, nrows, err, ss, t0, t1, k);
END
$fn$;
