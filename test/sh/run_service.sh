#!/bin/sh
# pgpipe run as a service (issue 22, "Service behaviour"), on the test cluster:
#   - the setup runs once; the instance is registered in pgpipe.run_instances
#     and marked stopped by a clean stop
#   - SIGTERM drains and exits 0 within a bound; --for stops by itself
#   - SIGHUP with a broken file keeps the running pipeline (one log line
#     naming FILE:LINE), with a good file reloads it
#   - systemd's notify protocol: READY=1 then STOPPING=1 on $NOTIFY_SOCKET
#   - a failing setup step exits 1 naming FILE:LINE and the server's error
#   - a pipeline file that does not check exits 1 before connecting
#   - the status page's "fire now" action: 401 without the token given by
#     --token-env, 403 with a wrong one, 202 with it, and the body runs once
#   - SIGTERM waits for a running body; a second one stops at once (exit 1)
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=$PWD/build/test/pgpipe
need_pgpipe
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "needs the test cluster (PGPIPE_TEST_DSN)"; exit 77; }
command -v python3 >/dev/null || { echo "python3 is not installed (tool/deps.sh --test)"; exit 77; }
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/run_service.XXXXXX")
pid=""; lpid=""
cleanup() {
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
    [ -n "$lpid" ] && kill "$lpid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; for f in "$tmp"/*.err; do [ -f "$f" ] && { echo "--- $f"; tail -20 "$f"; }; done; exit 1; }
q() { psql "$D" -XAtqc "$1"; }
# wait_for SECONDS COMMAND...: poll until the command succeeds
wait_for() {
    n=$(( $1 * 10 )); shift
    while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.1; n=$((n - 1)); done
    return 1
}
registered() { [ "$(q "SELECT count(*) FROM pgpipe.run_instances WHERE pipeline = 'svc' AND instance = '$1' AND stopped_at IS NULL" 2>/dev/null)" = 1 ]; }
exited() { ! kill -0 "$1" 2>/dev/null; }

q "DROP TABLE IF EXISTS run_svc_setup" >/dev/null
cat > "$tmp/svc.pgpipe" <<'EOF'
.pipeline svc
CREATE TABLE IF NOT EXISTS run_svc_setup (n int);
INSERT INTO run_svc_setup VALUES (1);
EOF

# ---- systemd notify listener, then the run ----------------------------------
cat > "$tmp/notify.py" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
with open(sys.argv[2], "a") as out:
    while True:
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            break
        out.write(msg.replace("\n", " ") + "\n")
        out.flush()
EOF
python3 "$tmp/notify.py" "$tmp/notify.sock" "$tmp/notify.log" & lpid=$!
wait_for 10 test -S "$tmp/notify.sock" || fail "the notify listener did not start"

NOTIFY_SOCKET=$tmp/notify.sock "$P" run --db "$D" --instance svc-a "$tmp/svc.pgpipe" \
    > "$tmp/a.out" 2> "$tmp/a.err" & pid=$!
wait_for 30 registered svc-a || fail "the instance was not registered"
wait_for 10 grep -q 'READY=1' "$tmp/notify.log" || fail "no READY=1 on NOTIFY_SOCKET"
[ "$(q 'SELECT count(*) FROM run_svc_setup')" = 1 ] || fail "the setup did not run once"

# ---- SIGHUP: a broken file is refused, a good one applied --------------------
cp "$tmp/svc.pgpipe" "$tmp/good.pgpipe"
printf '.pipeline svc\n.sorce files x --dir .\n' > "$tmp/svc.pgpipe"
kill -HUP "$pid"
wait_for 10 grep -q 'reload refused' "$tmp/a.err" || fail "a broken file on SIGHUP: no 'reload refused'"
grep 'reload refused' "$tmp/a.err" | grep -q 'svc.pgpipe:2' || fail "the refusal does not name FILE:LINE"
kill -0 "$pid" 2>/dev/null || fail "the runner died on a broken reload"
cp "$tmp/good.pgpipe" "$tmp/svc.pgpipe"
kill -HUP "$pid"
wait_for 10 grep -q 'msg=reloaded' "$tmp/a.err" || fail "a good file on SIGHUP: no 'reloaded'"

# ---- SIGTERM drains and exits 0 ---------------------------------------------
kill -TERM "$pid"
wait_for 40 exited "$pid" || fail "SIGTERM: still running after 40 s"
wait "$pid"; rc=$?; pid=""
[ $rc = 0 ] || fail "SIGTERM: exit $rc"
grep -q 'drained and stopped' "$tmp/a.err" || fail "SIGTERM: no 'drained and stopped'"
[ "$(q "SELECT stopped_at IS NOT NULL FROM pgpipe.run_instances WHERE pipeline = 'svc' AND instance = 'svc-a'")" = t ] \
    || fail "a clean stop did not set stopped_at"
wait_for 10 grep -q 'STOPPING=1' "$tmp/notify.log" || fail "no STOPPING=1 on NOTIFY_SOCKET"
echo "run: registered, SIGHUP refuses a broken file and applies a good one, SIGTERM drains (exit 0), sd_notify READY/STOPPING"

# ---- --for: a bounded run; the setup runs again on each start ---------------
"$P" run --db "$D" --for 2s --instance svc-b "$tmp/svc.pgpipe" > "$tmp/b.out" 2> "$tmp/b.err" & pid=$!
wait_for 40 exited "$pid" || fail "--for 2s: still running after 40 s"
wait "$pid"; rc=$?; pid=""
[ $rc = 0 ] || fail "--for 2s: exit $rc"
[ "$(q 'SELECT count(*) FROM run_svc_setup')" = 2 ] || fail "the second start did not run the setup"
echo "run --for 2s: stopped by itself, exit 0"

# ---- a failing setup step: exit 1, FILE:LINE and the server's message --------
cat > "$tmp/bad.pgpipe" <<'EOF'
.pipeline svcbad
CREATE TABLE IF NOT EXISTS run_svc_setup (n int);
INSERT INTO run_svc_nosuch VALUES (1);
EOF
timeout 60 "$P" run --db "$D" "$tmp/bad.pgpipe" > "$tmp/c.out" 2> "$tmp/c.err"; rc=$?
[ $rc = 1 ] || fail "a failing setup: exit $rc"
grep -q 'bad.pgpipe:3' "$tmp/c.err" || fail "a failing setup: no FILE:LINE: $(cat "$tmp/c.err")"
grep -q 'run_svc_nosuch' "$tmp/c.err" || fail "a failing setup: no server message"

# ---- a file that does not check: exit 1 before connecting --------------------
timeout 60 env PGCONNECT_TIMEOUT=1 "$P" run --db "host=/nonexistent/socket port=1" "$tmp/svc.pgpipe.none" \
    > "$tmp/d.out" 2> "$tmp/d.err"; rc=$?
[ $rc = 1 ] || fail "a missing file: exit $rc"
grep -q 'svc.pgpipe.none' "$tmp/d.err" || fail "a missing file: $(cat "$tmp/d.err")"
echo "run: a failing setup names FILE:LINE (exit 1); a missing file fails before connecting"

# ---- the status page: fire a schedule now, with the token from --token-env ---
if command -v curl >/dev/null; then
    q "DROP TABLE IF EXISTS run_svc_fired" >/dev/null
    cat > "$tmp/web.pgpipe" <<'EOF'
.pipeline svcweb
CREATE TABLE IF NOT EXISTS run_svc_fired (at timestamptz DEFAULT now());
.source http web --listen 127.0.0.1:0
.schedule yearly --cron "0 0 1 1 *"
INSERT INTO run_svc_fired DEFAULT VALUES;
.end
EOF
    RUN_SVC_TOKEN=s3cret-token "$P" run --db "$D" --token-env RUN_SVC_TOKEN "$tmp/web.pgpipe" \
        > "$tmp/e.out" 2> "$tmp/e.err" & pid=$!
    wait_for 30 grep -q 'HTTP source listening' "$tmp/e.err" || fail "the HTTP source did not start"
    port=$(sed -n 's/.*HTTP source listening.*port=\([0-9]*\).*/\1/p' "$tmp/e.err" | head -n 1)
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/actions/fire?schedule=yearly")
    [ "$code" = 401 ] || fail "fire without the token: HTTP $code"
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer wrong' \
        "http://127.0.0.1:$port/actions/fire?schedule=yearly")
    [ "$code" = 403 ] || fail "fire with a wrong token: HTTP $code"
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Authorization: Bearer s3cret-token' \
        "http://127.0.0.1:$port/actions/fire?schedule=yearly")
    [ "$code" = 202 ] || fail "fire with the token: HTTP $code"
    fired() { [ "$(q 'SELECT count(*) FROM run_svc_fired')" = 1 ]; }
    wait_for 30 fired || fail "the fire request did not run the body"
    curl -sf "http://127.0.0.1:$port/" | grep -q 'yearly' || fail "the status page does not name the schedule"
    kill -TERM "$pid"
    wait_for 40 exited "$pid" || fail "SIGTERM: still running after 40 s"
    wait "$pid"; rc=$?; pid=""
    [ $rc = 0 ] || fail "SIGTERM with the HTTP source: exit $rc"
    [ "$(q "SELECT count(*) FROM pgpipe.run_actions WHERE pipeline = 'svcweb' AND taken_at IS NOT NULL")" = 1 ] \
        || fail "the fire request was not marked taken"
    [ "$(q "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = 'svcweb' AND name = 'yearly' AND status = 'ok'")" = 1 ] \
        || fail "the requested firing is not in the history"
    echo "run: the status page fires a schedule with the token (401 without, 403 wrong, 202 right), once"
else
    echo "curl is not installed: the status page's fire action is not tested"
fi

# ---- a second SIGTERM while a body runs stops at once (exit 1) ---------------
cat > "$tmp/slow.pgpipe" <<'EOF'
.pipeline svcslow
.schedule slow --every 1s
SELECT pg_sleep(59.5);
.end
EOF
"$P" run --db "$D" "$tmp/slow.pgpipe" > "$tmp/f.out" 2> "$tmp/f.err" & pid=$!
# (a plain SQL body runs inside a pgpipe.run_fire call: the sleep shows as
# the backend's wait event, not in its query text)
slow_body="wait_event = 'PgSleep' AND (query LIKE 'SELECT pg_sleep(59.5)%' OR query LIKE '%pgpipe.run_fire(%') AND pid <> pg_backend_pid()"
sleeping() { [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE $slow_body")" -ge 1 ]; }
wait_for 30 sleeping || fail "the slow body did not start"
kill -TERM "$pid"
wait_for 10 grep -q 'draining' "$tmp/f.err" || fail "the first SIGTERM did not start the drain"
kill -0 "$pid" 2>/dev/null || fail "the first SIGTERM did not wait for the running body"
kill -TERM "$pid"
wait_for 10 exited "$pid" || fail "a second SIGTERM did not stop at once"
wait "$pid"; rc=$?; pid=""
[ $rc = 1 ] || fail "a second SIGTERM: exit $rc"
grep -q 'stopped at once' "$tmp/f.err" || fail "a second SIGTERM: no 'stopped at once'"
# the server does not notice the client gone while pg_sleep runs: end that
# backend, so later tests that count sleeping backends see only theirs
q "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE $slow_body" >/dev/null
echo "run: SIGTERM waits for a running body; a second one stops at once (exit 1)"

# one SIGTERM during a long setup cancels it and exits as a drain does (exit
# 0), without starting anything (it used to wait for the whole setup, then
# start everything, then drain)
printf '.pipeline svc_setup\nSELECT pg_sleep(58.5);\n.schedule h --every 1s\nSELECT 1;\n.end\n' > "$tmp/slowsetup.pgpipe"
"$P" run --db "$D" --instance ss --for 60s "$tmp/slowsetup.pgpipe" > "$tmp/ss.out" 2> "$tmp/ss.err" &
pid=$!
setup_sleeping() { [ "$(q "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE 'SELECT pg_sleep(58.5)%'")" -ge 1 ]; }
wait_for 30 setup_sleeping || fail "the slow setup did not start"
kill -TERM "$pid"
wait_for 10 exited "$pid" || fail "SIGTERM during the setup did not stop the runner"
wait "$pid"; rc=$?; pid=""
[ $rc = 0 ] || fail "SIGTERM during the setup: exit $rc"
grep -q 'setup was cancelled; nothing started' "$tmp/ss.err" || fail "SIGTERM during the setup: $(cat "$tmp/ss.err")"
grep -q 'msg=running' "$tmp/ss.err" && fail "SIGTERM during the setup: it started: $(cat "$tmp/ss.err")"
[ "$(q "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(58.5)%' AND state = 'active' AND pid <> pg_backend_pid()")" = 0 ] \
    || fail "SIGTERM during the setup: the setup still runs on the server"
[ "$(q "SELECT count(*) FROM pgpipe.run_instances WHERE pipeline = 'svc_setup' AND instance = 'ss' AND stopped_at IS NOT NULL")" = 1 ] \
    || fail "SIGTERM during the setup: the instance is not marked stopped"
echo "run: SIGTERM during the setup cancels it and exits 0"
