#!/bin/sh
# What a careless or hostile pipeline file does to `pgpipe run`, on the test
# cluster:
#   - a .workers SQL handler the server refuses (a missing function) stops
#     the start: exit 1 naming FILE:LINE and the server's error, and nothing
#     ran (not even a schedule)
#   - the function dropped while the runner runs: the workers that stop on
#     it are logged (FILE:LINE) and started again with backoff; once the
#     function is back they process the events, and the stop is a clean one
#   - more worker threads than the server has connections for (or than the
#     role's CONNECTION LIMIT): refused at start, naming the numbers
#   - an alert command that writes megabytes: the log gets the first KiB and
#     a line saying how much was dropped; the command is not blocked
#   - a transactional body that SETs a role without INSERT on the history:
#     the firing stays transactional and its history row is the runner's;
#     the next body does not run as that role either
#   - a setup that SETs a role: the runner's own connection is reset after
#     it (the heartbeat and the history maintenance do not fail)
#   - a slot claim that waits for another transaction holding the schedule's
#     row reads the row as that one left it: taken after its commit, won
#     after its rollback
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=$PWD/build/test/pgpipe
need_pgpipe
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "needs the test cluster (PGPIPE_TEST_DSN)"; exit 77; }
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/run_hostile.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f" | cut -c1-600; }; done; exit 1; }
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
q "SET client_min_messages = warning;
   DROP FUNCTION IF EXISTS rh_handle(jsonb); DROP TABLE IF EXISTS rh_ticks, rh_seen;
   DELETE FROM staging.raw_events WHERE event_type LIKE 'rh_%';
   DELETE FROM pgpipe.run_schedules WHERE pipeline LIKE 'rh_%';
   DELETE FROM pgpipe.run_alert_state WHERE pipeline LIKE 'rh_%';
   DELETE FROM pgpipe.run_history WHERE pipeline LIKE 'rh_%';
   DELETE FROM pgpipe.run_instances WHERE pipeline LIKE 'rh_%';
   DROP ROLE IF EXISTS rh_noins; DROP ROLE IF EXISTS rh_few;
   CREATE ROLE rh_noins NOLOGIN; CREATE ROLE rh_few LOGIN CONNECTION LIMIT 4;
   CREATE TABLE rh_ticks (who text, at timestamptz DEFAULT now());
   CREATE TABLE rh_seen (id bigint);
   GRANT INSERT ON rh_ticks TO rh_noins" >/dev/null || fail "preparing the database"

# ---- a handler the server refuses: the start fails, nothing runs -------------
echo 'SELECT rh_handle(e) FROM jsonb_array_elements($1::jsonb) e;' > "$tmp/h.pgsql"
cat > "$tmp/w.pgpipe" <<'EOF'
.pipeline rh_workers
.schedule tick --every 1s
INSERT INTO rh_ticks (who) VALUES ('tick');
.end
.workers rh_user --sql h.pgsql --workers 2
EOF
"$P" run --db "$D" --for 5s "$tmp/w.pgpipe" > "$tmp/w1.out" 2> "$tmp/w1.err"; rc=$?
[ $rc = 1 ] || fail "a handler calling a missing function: exit $rc"
grep -q 'w.pgpipe:5: .workers rh_user: the server refuses the SQL handler' "$tmp/w1.err" \
    || fail "the refusal does not name the .workers line"
grep -q 'rh_handle(jsonb) does not exist (SQLSTATE 42883)' "$tmp/w1.err" \
    || fail "the refusal does not give the server's error"
[ "$(q "SELECT count(*) FROM rh_ticks WHERE who = 'tick'")" = 0 ] \
    || fail "a schedule fired although the start was refused"
echo "run hostile: a .workers handler the server refuses stops the start (exit 1, FILE:LINE, SQLSTATE)"

# ---- the function dropped while running: restarted with backoff ---------------
q "CREATE FUNCTION rh_handle(e jsonb) RETURNS int LANGUAGE sql AS \$\$INSERT INTO rh_seen VALUES ((e->>'id')::bigint) RETURNING 1\$\$" >/dev/null
"$P" run --db "$D" "$tmp/w.pgpipe" > "$tmp/w2.out" 2> "$tmp/w2.err" & pid=$!
wait_for 30 grep -q 'msg=running' "$tmp/w2.err" || fail "the runner did not start"
# the workers prepared the handler already: their new connections (after
# every connection of the runner is ended) prepare it again
q "DROP FUNCTION rh_handle(jsonb);
   SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
   WHERE application_name = 'pgpipe run'" >/dev/null
wait_for 30 grep -q 'msg="workers stopped on an error; starting them again later".*line=5.*sqlstate=42883' "$tmp/w2.err" \
    || fail "the workers' stop was not reported with the .workers line"
grep -q 'rule=workers-stopped subject=rh_user' "$tmp/w2.err" || fail "no workers-stopped alert"
kill -0 "$pid" || fail "the runner died"
q "CREATE FUNCTION rh_handle(e jsonb) RETURNS int LANGUAGE sql AS \$\$INSERT INTO rh_seen VALUES ((e->>'id')::bigint) RETURNING 1\$\$" >/dev/null
q "INSERT INTO staging.raw_events (source, event_type, payload) VALUES ('rh', 'rh_user', '{\"id\": 7}')" >/dev/null
wait_for 60 rows_ge "SELECT count(*) FROM rh_seen" 1 \
    || fail "the workers did not come back once the function did"
grep -q 'msg="workers started again"' "$tmp/w2.err" || fail "no 'workers started again'"
stop
echo "run hostile: workers stopped by a dropped function are reported and started again once it is back"

# ---- more workers than connections --------------------------------------------
cat > "$tmp/many.pgpipe" <<'EOF'
.pipeline rh_many
.workers rh_user --sql h.pgsql --workers 256
EOF
"$P" run --db "$D" --for 2s "$tmp/many.pgpipe" > "$tmp/m.out" 2> "$tmp/m.err"; rc=$?
[ $rc = 1 ] || fail "--workers 256: exit $rc"
grep -q 'needs 259 connections at once (256 worker threads: line 2 .workers rh_user --workers 256' "$tmp/m.err" \
    || fail "--workers 256: the error does not give the numbers"
grep -q "but the server allows $(q 'SHOW max_connections'): max_connections" "$tmp/m.err" \
    || fail "--workers 256: the error does not name max_connections"
cat > "$tmp/few.pgpipe" <<'EOF'
.pipeline rh_few
.workers rh_user --sql h.pgsql --workers 2
EOF
"$P" run --db "$D user=rh_few" --for 2s "$tmp/few.pgpipe" > "$tmp/f.out" 2> "$tmp/f.err"; rc=$?
[ $rc = 1 ] || fail "2 workers for a role limited to 4 connections: exit $rc"
grep -q "needs 5 connections.*allows 4: the role's CONNECTION LIMIT 4" "$tmp/f.err" \
    || fail "the role's CONNECTION LIMIT is not named"
echo "run hostile: more workers than the server (or the role) allows are refused at start, with the numbers"

# ---- an alert command that writes without end -----------------------------------
cat > "$tmp/alert.pgpipe" <<'EOF'
.pipeline rh_alert
.schedule src --every 1s
SELECT 1;
.end
.task broken --after src
SELECT 1 / 0;
.end
.alert task-failures --task broken --count 1 --command 'echo rh-first-line; head -c 3000000 /dev/zero | tr "\0" x; echo; echo rh-done > rh_alert_done'
EOF
(cd "$tmp" && exec "$P" run --db "$D" "$tmp/alert.pgpipe" > "$tmp/a.out" 2> "$tmp/a.err") & pid=$!
wait_for 30 test -f "$tmp/rh_alert_done" || fail "the alert command did not run to its end"
wait_for 10 grep -q 'alert command output cut' "$tmp/a.err" || fail "no line about the dropped output"
stop
size=$(cat "$tmp/a.out" "$tmp/a.err" | wc -c)
[ "$size" -lt 65536 ] || fail "the alert command's output filled the runner's output: $size bytes"
grep -q 'msg="alert command output".*output=rh-first-line' "$tmp/a.err" || fail "the output's first line is not logged"
grep -q 'kept_bytes=4096 dropped_bytes=' "$tmp/a.err" || fail "the dropped line does not say how much"
echo "run hostile: an alert command's 3 MB of output: the first 4 KiB logged, the rest counted ($size bytes of log)"

# ---- a body that sets a role: the history stays the runner's -------------------
cat > "$tmp/role.pgpipe" <<'EOF'
.pipeline rh_role
.schedule a_role --every 1s --overlap skip --missed skip
SELECT set_config('role', 'rh_noins', false);
INSERT INTO rh_ticks (who) VALUES ('a_role:' || current_user);
.end
.schedule b_next --every 1s --overlap skip --missed skip
INSERT INTO rh_ticks (who) VALUES ('b_next:' || current_user);
.end
EOF
"$P" run --db "$D" "$tmp/role.pgpipe" > "$tmp/r.out" 2> "$tmp/r.err" & pid=$!
wait_for 30 rows_ge "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'rh_role' AND name = 'a_role' AND status = 'ok'" 3 \
    || fail "no history of the body that sets a role"
stop
! grep -q 'transactional firing failed' "$tmp/r.err" \
    || fail "the body's role reached run_fire's history insert: $(grep -m1 'transactional firing failed' "$tmp/r.err" | cut -c1-300)"
[ "$(q "SELECT count(*) FROM rh_ticks WHERE who = 'a_role:rh_noins'")" -ge 3 ] || fail "the body did not run as its role"
[ "$(q "SELECT count(*) FROM rh_ticks WHERE who = 'b_next:rh_noins'")" = 0 ] || fail "the next body ran as the role the first one set"
echo "run hostile: a transactional body's SET ROLE reaches neither its history row nor the next body"

# ---- a setup that sets a role -------------------------------------------------
cat > "$tmp/setup.pgpipe" <<'EOF'
.pipeline rh_setup
SELECT 1;
SET search_path = rh_nowhere;
SET ROLE rh_noins;
EOF
"$P" run --db "$D" --instance rh-setup --for 7s "$tmp/setup.pgpipe" > "$tmp/s.out" 2> "$tmp/s.err"; rc=$?
[ $rc = 0 ] || fail "a setup that sets a role: exit $rc"
! grep -qE 'history maintenance failed|heartbeat failed' "$tmp/s.err" \
    || fail "the setup's role reached the runner's connection: $(grep -m1 -E 'maintenance failed|heartbeat failed' "$tmp/s.err" | cut -c1-300)"
[ "$(q "SELECT count(*) FROM pgpipe.run_instances WHERE pipeline = 'rh_setup' AND instance = 'rh-setup' AND stopped_at IS NOT NULL")" = 1 ] \
    || fail "the clean stop was not recorded"
echo "run hostile: what the setup SETs is reset before the runner uses its connection"

# ---- the slot claim waits for a contender's transaction, then reads its row ----
# (a body with a dot command fires one by one: claimed by rs_claim)
cat > "$tmp/claim.pgpipe" <<'EOF'
.pipeline rh_claim
.schedule tick --every 1s
.log info rh-claim-tick
.end
EOF
hist() { q "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'rh_claim' AND name = 'tick'"; }
"$P" run --db "$D" "$tmp/claim.pgpipe" > "$tmp/c.out" 2> "$tmp/c.err" & pid=$!
wait_for 30 rows_ge "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'rh_claim'" 2 || fail "the schedule did not fire"
# another "instance" takes the row and moves the slot an hour ahead, then
# rolls back 2 s later: the slot stays free, and the claim that waited wins it
n0=$(hist)
q "BEGIN; UPDATE pgpipe.run_schedules SET last_slot = date_trunc('second', now()) + interval '1 hour'
   WHERE pipeline = 'rh_claim'; SELECT pg_sleep(2); ROLLBACK" >/dev/null
wait_for 20 rows_ge "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'rh_claim' AND name = 'tick'" $((n0 + 3)) \
    || fail "no firing after the contender rolled back"
# the same, committed: the claim that waited finds the slot taken (and the
# next an hour away), and fires nothing more
q "BEGIN; UPDATE pgpipe.run_schedules SET last_slot = date_trunc('second', now()) + interval '1 hour'
   WHERE pipeline = 'rh_claim'; SELECT pg_sleep(2); COMMIT" >/dev/null
sleep 1
n1=$(hist); sleep 3; n2=$(hist)
[ "$n1" = "$n2" ] || fail "the claim fired slots another transaction had taken ($n1 then $n2 firings)"
stop
! grep -q 'firing failed: the database' "$tmp/c.err" || fail "the claim failed: $(grep -m1 'firing failed' "$tmp/c.err" | cut -c1-300)"
# (a slot won past its time while the row was held is recorded skipped)
[ "$(q "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'rh_claim' AND status NOT IN ('ok', 'skipped')")" = 0 ] \
    || fail "history rows failed or lost: $(q "SELECT status, count(*) FROM pgpipe.run_history WHERE pipeline = 'rh_claim' GROUP BY 1")"
echo "run hostile: a slot claim waits for a contender: taken when it committed, won when it rolled back"

q "SET client_min_messages = warning; DROP TABLE IF EXISTS rh_ticks, rh_seen; DROP FUNCTION IF EXISTS rh_handle(jsonb);
   DROP ROLE IF EXISTS rh_noins; DROP ROLE IF EXISTS rh_few" >/dev/null
