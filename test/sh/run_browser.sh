#!/bin/sh
# The runner's status page (issue 22) in a real headless browser: `pgpipe
# run` with an HTTP source on a free port serves the page at /; the test
# seeds a backlog of two event types, processed events, dead letters with
# two errors and a run history, loads the page in Debian's chromium through
# Selenium (test/sh/run_browser.py), checks the figures the page marks
# (data-metric with data-event-type, data-error, data-instance,
# data-schedule; the runs listed, failures first) against the database,
# saves a screenshot as build/test/run_browser.png, and stops the runner
# with SIGTERM (exit 0).
set -u
cd "${PGPIPE_TOP:-.}" || exit 1
. test/sh/lib/common.sh
P=build/test/pgpipe
D=${PGPIPE_TEST_DSN:-}
PY=/usr/bin/python3
[ -n "$D" ] || { echo "no PGPIPE_TEST_DSN"; exit 77; }
need_pgpipe
for c in curl psql chromium chromedriver; do
    command -v $c >/dev/null 2>&1 || { echo "$c missing (sh tool/deps.sh --test)"; exit 77; }
done
"$PY" -c 'import selenium' 2>/dev/null || { echo "python3-selenium missing (sh tool/deps.sh --test)"; exit 77; }
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/runbrowser.XXXXXX")
chmod 755 "$tmp"
rpid=""
q() { psql -qAtX -v ON_ERROR_STOP=1 -d "$D" -c "$1"; }
# the rows seeded here go at the end, so no later test sees them
unseed() {
    q "DELETE FROM staging.raw_events WHERE event_type LIKE 'browser\\_%';
       DELETE FROM pgpipe.dead_letters WHERE error_message LIKE 'browser: %'" >/dev/null 2>&1
    # the history and schedule state of this pipeline, where the runner has them
    # (a schedule left from an earlier run would fire its missed slot)
    q "DELETE FROM pgpipe.run_history WHERE pipeline = 'browser'" >/dev/null 2>&1
    q "DELETE FROM pgpipe.run_schedules WHERE pipeline = 'browser'" >/dev/null 2>&1
}
cleanup() {
    [ -z "$rpid" ] || { kill -9 "$rpid" 2>/dev/null; wait "$rpid" 2>/dev/null; }
    unseed
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "-- runner log (tail):"; tail -n 20 "$tmp/run.err" 2>/dev/null; exit 1; }

# ---- the database: the schema, then a backlog, processed events and dead letters -----
$P "$D" ".install" >/dev/null 2>"$tmp/install.err" || fail "install: $(cat "$tmp/install.err")"
unseed
q "INSERT INTO staging.raw_events (source, event_type, payload, received_at)
   SELECT 'browser', 'browser_user', jsonb_build_object('i', i), now() - i * interval '1 minute'
   FROM generate_series(1, 7) i;
   INSERT INTO staging.raw_events (source, event_type, payload, received_at)
   SELECT 'browser', 'browser_order', jsonb_build_object('i', i), now() - i * interval '10 second'
   FROM generate_series(1, 3) i;
   INSERT INTO staging.raw_events (source, event_type, payload, received_at, processed, processed_at)
   SELECT 'browser', 'browser_done', jsonb_build_object('i', i), now() - interval '3 minutes', true,
          now() - interval '2 minutes'
   FROM generate_series(1, 5) i;
   INSERT INTO pgpipe.dead_letters (stage, event_type, raw_text, error_message)
   SELECT 'load', 'browser_user', '{bad', 'browser: bad json' FROM generate_series(1, 4);
   INSERT INTO pgpipe.dead_letters (stage, event_type, raw_text, error_message)
   SELECT 'process', 'browser_order', '{}', 'browser: missing user_id' FROM generate_series(1, 2)" >/dev/null ||
    fail "seeding"
# The page lists the 20 most frequent errors: the dead letters earlier tests
# left could push ours out, so ours get more than the most frequent other
q "WITH m AS (SELECT coalesce(max(n), 0) AS m FROM (SELECT count(*) AS n FROM pgpipe.dead_letters
              WHERE status = 'dead' GROUP BY left(error_message, 200)) c)
   INSERT INTO pgpipe.dead_letters (stage, event_type, raw_text, error_message)
   SELECT 'load', 'browser_user', '{bad', e FROM m,
          LATERAL (SELECT 'browser: bad json' FROM generate_series(1, m.m)
                   UNION ALL SELECT 'browser: missing user_id' FROM generate_series(1, m.m - 1)) x(e)" >/dev/null ||
    fail "seeding more dead letters"
# recent runs: two failures older than three successes, to be listed first
history=$(q "SELECT to_regclass('pgpipe.run_history') IS NOT NULL")
if [ "$history" = t ]; then
    q "SELECT pgpipe.run_history_partition(current_date + 30);
       INSERT INTO pgpipe.run_history (pipeline, kind, name, slot, started_at, finished_at, status,
                                       error, instance, host, expires_on)
       SELECT 'browser', 'schedule', 'tick', now() - i * interval '1 hour', now() - i * interval '1 hour',
              now() - i * interval '1 hour' + interval '1 s', CASE WHEN i > 3 THEN 'failed' ELSE 'ok' END,
              CASE WHEN i > 3 THEN 'browser: division by zero' END, 'browser-old', 'vm', current_date + 30
       FROM generate_series(1, 5) i" >/dev/null || fail "seeding the run history"
fi

# ---- the runner: an HTTP source on a free port (the file names the port) -----------
port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/browser.pgpipe" <<EOF
.pipeline browser
.source http web --listen 127.0.0.1:$port
.schedule tick --every 1h
SELECT 1;
.end
EOF
$P run --db "$D" --for 60s --instance browser-test "$tmp/browser.pgpipe" 2>"$tmp/run.err" &
rpid=$!
U=http://127.0.0.1:$port
# the sources have started once the runner logs "running": its HTTP server
# gets 5 s more to answer
i=0; ran=0
until curl -fsS -o /dev/null --max-time 2 "$U/healthz" 2>/dev/null; do
    kill -0 "$rpid" 2>/dev/null || { wait "$rpid"; rpid=""; fail "pgpipe run exited before serving"; }
    i=$((i + 1))
    [ $i -le 300 ] || fail "pgpipe run: not running after 30 s"
    if [ $ran = 0 ] && grep -q "msg=running" "$tmp/run.err"; then ran=$i; fi
    if [ $ran -gt 0 ] && [ $((i - ran)) -gt 50 ]; then
        fail "pgpipe run serves nothing on 127.0.0.1:$port 5 s after it runs: $(grep -i 'http' "$tmp/run.err" | tail -n 3)"
    fi
    sleep 0.1
done
# 503 while the first snapshot is being built
i=0
while :; do
    code=$(curl -sS -o "$tmp/page.html" -w '%{http_code}' --max-time 10 "$U/") || fail "GET / failed"
    [ "$code" = 503 ] || break
    i=$((i + 1)); [ $i -le 100 ] || fail "GET / still answers 503 after 10 s"
    sleep 0.1
done
[ "$code" = 200 ] || fail "GET / answered $code"

# ---- what the page must show, from the database ---------------------------------------
# The page is a snapshot rebuilt every few seconds: the seeded rows were
# there before the runner started, and nothing here changes them. The ages
# are checked against the page's own build time; the schedule "every 1h"
# fires next at the coming whole hour.
q "SELECT json_agg(c) FROM (
     SELECT json_build_object('metric', 'backlog', 'attrs', json_build_object('event-type', event_type,
                'table', 'staging.raw_events'), 'value', count(*)) AS c
     FROM staging.raw_events WHERE NOT processed AND event_type LIKE 'browser\\_%' GROUP BY event_type
     UNION ALL
     SELECT json_build_object('metric', 'oldest-pending-s', 'attrs', json_build_object('event-type', event_type),
                'age_of', extract(epoch FROM min(received_at)))
     FROM staging.raw_events WHERE NOT processed AND event_type LIKE 'browser\\_%' GROUP BY event_type
     UNION ALL
     SELECT json_build_object('metric', 'backlog-total', 'attrs', '{}'::json, 'value', count(*))
     FROM staging.raw_events WHERE NOT processed
     UNION ALL
     SELECT json_build_object('metric', 'dlq-count', 'attrs', json_build_object('error', error_message), 'value', count(*))
     FROM pgpipe.dead_letters WHERE status = 'dead' AND error_message LIKE 'browser: %' GROUP BY error_message
     UNION ALL
     SELECT json_build_object('metric', 'dlq-total', 'attrs', '{}'::json, 'value', count(*))
     FROM pgpipe.dead_letters WHERE status = 'dead'
     UNION ALL
     SELECT json_build_object('metric', 'instances-alive', 'attrs', '{}'::json, 'value', count(*))
     FROM pgpipe.run_instances WHERE pipeline = 'browser' AND stopped_at IS NULL
                                 AND heartbeat_at > now() - interval '15 s'
     UNION ALL
     SELECT json_build_object('metric', 'instance-alive', 'attrs', json_build_object('instance', 'browser-test'), 'value', 1)
     UNION ALL
     SELECT json_build_object('metric', 'processed-last-hour', 'attrs', '{}'::json, 'min', 5)
     UNION ALL
     SELECT json_build_object('metric', 'schedule-next', 'attrs', json_build_object('schedule', 'tick'),
                'epoch_in', json_build_array(h, h + 3600), 'optional', true)
     FROM (SELECT floor(extract(epoch FROM now()) / 3600) * 3600 AS h) n
   ) s" >"$tmp/checks.json" || fail "reading the expected figures"
if [ "$history" = t ]; then
    # the runs the page lists (the last 50), failures first
    q "SELECT json_agg(c) FROM (
         SELECT json_build_object('metric', 'runs-failed', 'attrs', '{}'::json,
                    'value', count(*) FILTER (WHERE status IN ('failed', 'timeout', 'lost', 'missed'))) AS c
         FROM (SELECT status FROM pgpipe.run_history WHERE pipeline = 'browser'
               ORDER BY started_at DESC LIMIT 50) h
         UNION ALL
         SELECT json_build_object('runs', count(*)) FROM (SELECT 1 FROM pgpipe.run_history
               WHERE pipeline = 'browser' ORDER BY started_at DESC LIMIT 50) h
       ) s" >"$tmp/runs.json" || fail "reading the run history"
    "$PY" -c 'import json, sys; a = json.load(open(sys.argv[1])); a += json.load(open(sys.argv[2])); json.dump(a, open(sys.argv[1], "w"))' \
        "$tmp/checks.json" "$tmp/runs.json" || fail "merging the checks"
fi
cat "$tmp/checks.json"; echo
mkdir -p build/test
timeout 60 "$PY" test/sh/run_browser.py "$U/" "$tmp/checks.json" build/test/run_browser.png >"$tmp/browser.out" 2>&1
rc=$?
cat "$tmp/browser.out"
[ $rc = 0 ] || fail "the status page in chromium (exit $rc)"
[ -s build/test/run_browser.png ] || fail "no screenshot build/test/run_browser.png"
echo "screenshot: build/test/run_browser.png"

# ---- SIGTERM drains and exits 0 -------------------------------------------------------
kill -TERM "$rpid"
i=0
while kill -0 "$rpid" 2>/dev/null; do
    i=$((i + 1)); [ $i -le 300 ] || fail "pgpipe run still running 30 s after SIGTERM"
    sleep 0.1
done
wait "$rpid"; rc=$?; rpid=""
[ $rc = 0 ] || fail "pgpipe run exited $rc after SIGTERM"
echo "ok"
