#!/bin/sh
# Many instances, one pipeline (issue 22): three `pgpipe run` of the same
# pipeline on the test cluster share its workers and its schedules; one is
# killed with SIGKILL while it works. Then:
#   - every slot of the every-second schedule between the first and the last
#     fired exactly once (run history: no slot twice, none missing; the body's
#     own rows agree), also across the kill
#   - every staged event was processed exactly once (the handler's rows:
#     count = distinct = staged), the dead instance's claimed batch included
#   - the two survivors drain on SIGTERM (exit 0); the killed one is not
#     left "alive" (its heartbeat stops)
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=$PWD/build/test/pgpipe
need_pgpipe
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "needs the test cluster (PGPIPE_TEST_DSN)"; exit 77; }
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/run_multi.XXXXXX")
p1=""; p2=""; p3=""
cleanup() {
    for p in $p1 $p2 $p3; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done; exit 1; }
q() { psql "$D" -XAtqc "$1"; }
wait_for() {
    n=$(( $1 * 10 )); shift
    while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.1; n=$((n - 1)); done
    return 1
}
exited() { ! kill -0 "$1" 2>/dev/null; }
fired_since() { [ "$(q "SELECT count(*) FROM multi_fired WHERE at > '$1'")" -ge "$2" ]; }
done_ge() { [ "$(q "SELECT count(*) FROM multi_done")" -ge "$1" ]; }
backlog_done() { [ "$(q "SELECT count(*) FROM staging.raw_events WHERE event_type = 'multi' AND NOT processed")" = 0 ]; }
alive() { [ "$(q "SELECT count(*) FROM pgpipe.run_instances WHERE pipeline = 'multi' AND stopped_at IS NULL AND heartbeat_at > now() - interval '5 s'")" = "$1" ]; }

N=3000
"$P" "$D" .install > /dev/null 2>&1 || fail "installing the schema"
q "DROP TABLE IF EXISTS multi_done, multi_fired; DELETE FROM pgpipe.run_schedules WHERE pipeline = 'multi'" >/dev/null 2>&1
q "DELETE FROM pgpipe.run_history WHERE pipeline = 'multi'" >/dev/null 2>&1
q "DELETE FROM pgpipe.run_instances WHERE pipeline = 'multi'" >/dev/null 2>&1
cat > "$tmp/handler.pgsql" <<'EOF'
INSERT INTO multi_done (event_id, worker)
SELECT (e->>'id')::bigint, current_setting('application_name')
FROM jsonb_array_elements($1::jsonb) e, pg_sleep(0.1) WHERE true
EOF
cat > "$tmp/multi.pgpipe" <<'EOF'
.pipeline multi
CREATE TABLE IF NOT EXISTS multi_done (event_id bigint NOT NULL, worker text, at timestamptz DEFAULT clock_timestamp());
CREATE TABLE IF NOT EXISTS multi_fired (at timestamptz DEFAULT clock_timestamp());
.workers multi --sql handler.pgsql --workers 2 --batch 20
.schedule tick --every 1s
INSERT INTO multi_fired DEFAULT VALUES;
.end
EOF
"$P" run --check "$tmp/multi.pgpipe" > "$tmp/check.out" 2>&1 || fail "the pipeline does not check: $(cat "$tmp/check.out")"

# the events first, so the three instances start on a backlog
q "INSERT INTO staging.raw_events (source, event_type, payload)
   SELECT 'multi', 'multi', jsonb_build_object('n', g, 'pad', repeat('x', 200)) FROM generate_series(1, $N) g" >/dev/null \
    || fail "seeding staging"
for i in 1 2 3; do
    "$P" run --db "$D" --instance "m$i" "$tmp/multi.pgpipe" > "$tmp/m$i.out" 2> "$tmp/m$i.err" &
    eval "p$i=\$!"
done
wait_for 30 alive 3 || fail "three instances did not come up"
# let the schedule fire a few slots and the workers get going (each batch
# takes 0.1 s, so the backlog lasts a few seconds), then kill one mid-work
wait_for 30 fired_since -infinity 2 || fail "the schedule does not fire"
wait_for 30 done_ge 300 || fail "the workers do not work"
kill -9 "$p1"; wait "$p1" 2>/dev/null; p1=""
killed_at=$(q "SELECT now()")
left=$(q "SELECT count(*) FROM staging.raw_events WHERE event_type = 'multi' AND NOT processed")
[ "$left" -gt 0 ] || fail "the backlog was done before the kill: the test proves nothing"
# the survivors go on: at least 5 more slots after the kill, and the backlog done
wait_for 60 fired_since "$killed_at" 5 \
    || fail "the schedule stopped firing after the kill"
wait_for 90 backlog_done \
    || fail "the backlog was not worked off: $(q "SELECT count(*) FROM staging.raw_events WHERE event_type = 'multi' AND NOT processed") left"
for p in $p2 $p3; do kill -TERM "$p"; done
for p in $p2 $p3; do
    wait_for 40 exited "$p" || fail "SIGTERM: instance still running after 40 s"
    wait "$p"; rc=$?
    [ $rc = 0 ] || fail "SIGTERM: exit $rc"
done
p2=""; p3=""

# ---- slots: each fired once, none missing ------------------------------------
dup=$(q "SELECT count(*) FROM (SELECT slot FROM pgpipe.run_history WHERE pipeline = 'multi' AND name = 'tick' AND status = 'ok' GROUP BY slot HAVING count(*) > 1) d")
[ "$dup" = 0 ] || fail "$dup slots fired twice"
read first last n <<EOF
$(q "SELECT extract(epoch FROM min(slot))::bigint, extract(epoch FROM max(slot))::bigint, count(*) FROM pgpipe.run_history WHERE pipeline = 'multi' AND name = 'tick' AND status = 'ok'" | tr '|' ' ')
EOF
[ "$n" -ge 6 ] || fail "only $n slots fired"
[ $((last - first + 1)) = "$n" ] || fail "slots missing: $n fired between $first and $last ($((last - first + 1)) slots); history: $(q "SELECT string_agg(status || ' ' || extract(epoch FROM slot)::bigint, ', ' ORDER BY slot) FROM pgpipe.run_history WHERE pipeline = 'multi' AND name = 'tick'")"
bodies=$(q "SELECT count(*) FROM multi_fired")
[ "$bodies" = "$n" ] || fail "the body ran $bodies times for $n slots"
inst=$(q "SELECT count(DISTINCT instance) FROM pgpipe.run_history WHERE pipeline = 'multi' AND name = 'tick' AND status = 'ok'")
echo "run 3 instances: $n slots each fired once across a SIGKILL (by $inst instances), none missing"

# ---- events: each processed once -----------------------------------------------
read cnt dist <<EOF
$(q "SELECT count(*), count(DISTINCT event_id) FROM multi_done" | tr '|' ' ')
EOF
[ "$dist" = "$N" ] || fail "$dist of $N events processed"
[ "$cnt" = "$N" ] || fail "$cnt handler rows for $N events: processed twice"
dl=$(q "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = 'multi'")
[ "$dl" = 0 ] || fail "$dl dead letters"
alive 0 || fail "instances still shown alive: $(q "SELECT instance, stopped_at, heartbeat_at FROM pgpipe.run_instances WHERE pipeline = 'multi'")"
echo "run 3 instances: $N events processed once each across the kill ($left were pending at the kill)"
