#!/bin/sh
# A .workers handler's function dropped under workers that already prepared
# it (no reconnect, as in a deploy that drops and creates it): the events
# claimed meanwhile are given back with no attempt counted and nothing is
# dead-lettered; the workers stop (logged with the .workers line and SQLSTATE
# 42883, alert workers-stopped) and are started again with backoff; once the
# function is back every event is processed, exactly once.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=$PWD/build/test/pgpipe
need_pgpipe
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "needs the test cluster (PGPIPE_TEST_DSN)"; exit 77; }
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/run_handler_dropped.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/r.err" ] && tail -20 "$tmp/r.err" | cut -c1-600; exit 1; }
q() { psql "$D" -XAtqc "$1"; }
wait_for() {
    n=$(( $1 * 10 )); shift
    while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.1; n=$((n - 1)); done
    return 1
}
exited() { ! kill -0 "$1" 2>/dev/null; }
rows_eq() { [ "$(q "$1")" = "$2" ]; }
stage() { q "INSERT INTO staging.raw_events (source, event_type, payload) SELECT 'rhd', 'rhd_ev',
             jsonb_build_object('id', g) FROM generate_series($1, $2) g" >/dev/null; }
FN="CREATE FUNCTION rhd_handle(e jsonb) RETURNS int LANGUAGE sql AS
    \$\$INSERT INTO rhd_seen VALUES ((e->'payload'->>'id')::bigint) RETURNING 1\$\$"

"$P" "$D" .install > /dev/null 2>&1 || fail "installing the schema"
q "SET client_min_messages = warning;
   DROP FUNCTION IF EXISTS rhd_handle(jsonb); DROP TABLE IF EXISTS rhd_seen;
   DELETE FROM staging.raw_events WHERE event_type = 'rhd_ev';
   DELETE FROM pgpipe.dead_letters WHERE source_name = 'rhd';
   DELETE FROM pgpipe.run_alert_state WHERE pipeline = 'rhd_p';
   DELETE FROM pgpipe.run_instances WHERE pipeline = 'rhd_p';
   CREATE TABLE rhd_seen (id bigint PRIMARY KEY); $FN" >/dev/null || fail "preparing the database"
echo 'SELECT rhd_handle(e) FROM jsonb_array_elements($1::jsonb) e;' > "$tmp/h.pgsql"
cat > "$tmp/p.pgpipe" <<'EOF'
.pipeline rhd_p
.workers rhd_ev --sql h.pgsql --workers 2 --batch 5 --max-attempts 1
EOF
"$P" run --check "$tmp/p.pgpipe" > /dev/null 2>&1 || fail "the pipeline: $("$P" run --check "$tmp/p.pgpipe" 2>&1)"
"$P" run --db "$D" "$tmp/p.pgpipe" > "$tmp/r.out" 2> "$tmp/r.err" & pid=$!
wait_for 30 grep -q 'msg=running' "$tmp/r.err" || fail "the runner did not start"
stage 1 20
wait_for 30 rows_eq "SELECT count(*) FROM rhd_seen" 20 || fail "the first 20 events were not processed"
# dropped under the prepared statements, no reconnect
q "DROP FUNCTION rhd_handle(jsonb)" >/dev/null
stage 21 50
wait_for 30 grep -q 'msg="workers stopped on an error; starting them again later".*sqlstate=42883' "$tmp/r.err" \
    || fail "the workers' stop was not reported with SQLSTATE 42883"
grep -q 'rule=workers-stopped subject=rhd_ev' "$tmp/r.err" || fail "no workers-stopped alert"
grep -q 'rhd_handle(jsonb) does not exist' "$tmp/r.err" || fail "the stop does not give the server's error"
kill -0 "$pid" || fail "the runner died"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE event_type = 'rhd_ev' AND (attempts > 0 OR last_error IS NOT NULL) AND NOT processed")" = 0 ] \
    || fail "events were charged for the dropped function: $(q "SELECT id, attempts, last_error FROM staging.raw_events WHERE event_type = 'rhd_ev' AND attempts > 0 LIMIT 3")"
[ "$(q "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = 'rhd'")" = 0 ] \
    || fail "events were dead-lettered for the dropped function"
q "$FN" >/dev/null
wait_for 90 rows_eq "SELECT count(*) FROM staging.raw_events WHERE event_type = 'rhd_ev' AND processed" 50 \
    || fail "the workers did not process every event once the function was back"
grep -q 'msg="workers started again"' "$tmp/r.err" || fail "no 'workers started again'"
[ "$(q "SELECT count(*) FROM rhd_seen")" = 50 ] || fail "rhd_seen has $(q "SELECT count(*) FROM rhd_seen") rows, not 50"
[ "$(q "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = 'rhd'")" = 0 ] || fail "dead letters"
kill -TERM "$pid"
wait_for 40 exited "$pid" || fail "SIGTERM: still running after 40 s"
wait "$pid"; rc=$?; pid=""
[ $rc = 0 ] || fail "SIGTERM: exit $rc"
echo "run handler dropped: nothing charged while the function was gone; all 50 events processed once it was back"
