#!/bin/sh
# The alert rules the schedules raise (issue 22), end to end through
# `pgpipe run`:
#   - schedule-missed: an every-minute schedule whose last slot is 10 minutes
#     old (what a 10-minute outage leaves in pgpipe.run_schedules) raises
#     one alert, with the count, into the rule's table and to --on-alert's
#     command
#   - task-failures: a task that fails on every firing raises one alert
#     after K failures in a row, not before
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=$PWD/build/test/pgpipe
need_pgpipe
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "needs the test cluster (PGPIPE_TEST_DSN)"; exit 77; }
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/run_alert_rules.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done; exit 1; }
q() { psql "$D" -XAtqc "$1"; }
wait_for() {
    n=$(( $1 * 10 )); shift
    while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.1; n=$((n - 1)); done
    return 1
}
exited() { ! kill -0 "$1" 2>/dev/null; }
rows_ge() { [ "$(q "$1")" -ge "$2" ]; }
stop() {
    kill -TERM "$pid"
    wait_for 40 exited "$pid" || fail "SIGTERM: still running after 40 s"
    wait "$pid"; rc=$?; pid=""
    [ $rc = 0 ] || fail "SIGTERM: exit $rc"
}

"$P" "$D" .install > /dev/null 2>&1 || fail "installing the schema"
q "SET client_min_messages = warning; DROP TABLE IF EXISTS rar_alerts; DELETE FROM pgpipe.run_schedules WHERE pipeline IN ('rar_missed', 'rar_tasks')" >/dev/null

# ---- schedule-missed ---------------------------------------------------------
cat > "$tmp/missed.pgpipe" <<'EOF'
.pipeline rar_missed
CREATE TABLE IF NOT EXISTS rar_alerts (pipeline text, rule text, subject text, message text, detail jsonb, fired_at timestamptz);
.schedule minutely --every 1m --missed skip
SELECT 1;
.end
.alert schedule-missed --schedule minutely --table rar_alerts
EOF
"$P" run --db "$D" --for 2s "$tmp/missed.pgpipe" > "$tmp/m1.out" 2> "$tmp/m1.err" || fail "the first run"
[ "$(q "SELECT count(*) FROM pgpipe.run_schedules WHERE pipeline = 'rar_missed'")" = 1 ] \
    || fail "the schedule has no row after a run"
q "UPDATE pgpipe.run_schedules SET last_slot = date_trunc('minute', now()) - interval '10 minutes' WHERE pipeline = 'rar_missed'" >/dev/null
"$P" run --db "$D" --on-alert "cat >> $tmp/on_alert.json" "$tmp/missed.pgpipe" > "$tmp/m2.out" 2> "$tmp/m2.err" & pid=$!
wait_for 30 rows_ge "SELECT count(*) FROM rar_alerts WHERE rule = 'schedule-missed'" 1 \
    || fail "no schedule-missed alert in the rule's table"
wait_for 15 test -s "$tmp/on_alert.json" || fail "--on-alert's command got nothing"
stop
[ "$(q "SELECT count(*) FROM rar_alerts WHERE rule = 'schedule-missed' AND subject = 'minutely'")" = 1 ] \
    || fail "schedule-missed delivered $(q "SELECT count(*) FROM rar_alerts WHERE rule = 'schedule-missed'") times"
grep -q '"rule":"schedule-missed"' "$tmp/on_alert.json" || fail "--on-alert's JSON: $(cat "$tmp/on_alert.json")"
missed=$(q "SELECT rows FROM pgpipe.run_history WHERE pipeline = 'rar_missed' AND status = 'missed'")
[ "$missed" -ge 9 ] || fail "the history's missed row counts $missed slots"
echo "run alerts: a 10-minute outage raises schedule-missed once ($missed slots), to the table and --on-alert"

# ---- task-failures -------------------------------------------------------------
cat > "$tmp/tasks.pgpipe" <<'EOF'
.pipeline rar_tasks
CREATE TABLE IF NOT EXISTS rar_alerts (pipeline text, rule text, subject text, message text, detail jsonb, fired_at timestamptz);
.schedule src --every 1s
SELECT 1;
.end
.task broken --after src
SELECT 1 / 0;
.end
.alert task-failures --task broken --count 3 --table rar_alerts
EOF
"$P" run --db "$D" "$tmp/tasks.pgpipe" > "$tmp/t.out" 2> "$tmp/t.err" & pid=$!
wait_for 30 rows_ge "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'rar_tasks' AND name = 'broken' AND status = 'failed'" 1 \
    || fail "the task never failed"
early=$(q "SELECT count(*) FROM rar_alerts WHERE rule = 'task-failures'")
fails=$(q "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'rar_tasks' AND name = 'broken' AND status = 'failed'")
[ "$fails" -ge 3 ] || [ "$early" = 0 ] || fail "task-failures raised after $fails failures (K = 3)"
wait_for 30 rows_ge "SELECT count(*) FROM rar_alerts WHERE rule = 'task-failures' AND subject = 'broken'" 1 \
    || fail "no task-failures alert after $(q "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'rar_tasks' AND name = 'broken' AND status = 'failed'") failures"
stop
fails=$(q "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'rar_tasks' AND name = 'broken' AND status = 'failed'")
[ "$fails" -ge 3 ] || fail "task-failures raised after $fails failures (K = 3)"
n=$(q "SELECT count(*) FROM rar_alerts WHERE rule = 'task-failures'")
[ "$n" = 1 ] || fail "task-failures delivered $n times while the condition held"
echo "run alerts: a task failing on every firing raises task-failures once, after 3 failures ($fails by the stop)"
