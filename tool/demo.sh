#!/bin/sh
# `make demo`: the main job, end to end, on a private local PostgreSQL server.
#
#   DEMO_ROWS=1000000 sh tool/demo.sh        (make demo builds first; 1M
#                                             transactions is the default)
#
# 1. starts a private server (pgpipe --local);
# 2. generates sample data with a fixed seed: users as CSV, DEMO_ROWS
#    transactions as NDJSON, a few percent deliberately bad (malformed JSON,
#    invalid emails, negative amounts, unknown status);
# 3. runs the example pipeline, sql/example/pipeline.pgpipe, with `.run` (the
#    pipeline runner): its setup installs the built-in schema and the
#    three-layer example (staging -> production -> analytics), its folder
#    sources watch incoming/, its workers transform each event type into
#    production, its schedules refresh the analytics view (every 10 s here
#    instead of every minute) and keep partitions ahead;
# 4. drops the users into incoming/, then the transactions once the users
#    are in production (a transaction names its user); bad records of every
#    step go to the dead-letter queue;
# 5. waits for a refresh of analytics.daily_user_metrics after the last
#    event, stops the runner with SIGTERM (it drains) and prints the run
#    history, the dead letters by error with an example of each, the top
#    rows of the view, .health, and a check that the counts add up.
# Every wait is bounded (DEMO_WAIT seconds each, 600 by default).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
rows=${DEMO_ROWS:-1000000}
users=$((rows / 100)); [ $users -ge 50 ] || users=50
P=${PGPIPE_SHELL:-build/pgpipe}
dir=$(mktemp -d /tmp/pgpipe-demo.XXXXXX)
chmod 755 "$dir"
bg=
cleanup() {
    [ -z "$bg" ] || kill -TERM "$bg" 2>/dev/null || true
    if [ "${DEMO_KEEP:-0}" = 1 ]; then
        echo "server kept: build/pgpipe --local $dir/pg    (stop: sh tool/pgtmp.sh stop $dir/pg)"
    else
        sh tool/pgtmp.sh stop "$dir/pg" >/dev/null 2>&1 || true
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
t0=$(date +%s)
step() { printf '\n== %s   [%d s]\n' "$*" $(( $(date +%s) - t0 )); }
pg() { "$P" --local "$dir/pg" --fast --keep "$@"; }

step "1. a private PostgreSQL server in $dir/pg"
pg .version

step "2. sample data: $users users (CSV), $rows transactions (NDJSON), a few percent bad on purpose"
awk -v n="$users" 'BEGIN {
    srand(42); print "email,full_name,country"
    split("US DE FR GB NL SE JP BR IN CA", cc, " ")
    for (i = 1; i <= n; i++) {
        email = "user" i "@example.com"
        if (i % 50 == 0) email = "user" i "-at-example.com"          # invalid email (2%)
        printf "%s,User %d,%s\n", email, i, cc[1 + int(rand() * 10)]
    }
}' > "$dir/users.csv"
awk -v n="$rows" -v users="$users" -v now="$(date +%s)" 'BEGIN {
    srand(7)
    split("completed completed completed pending failed refunded", st, " ")
    for (i = 1; i <= n; i++) {
        u = 1 + int(rand() * users)
        amount = sprintf("%.2f", 1 + rand() * 250)
        status = st[1 + int(rand() * 6)]
        ts = now - int(rand() * 30 * 86400)
        r = rand()
        if (r < 0.01) amount = "-" amount                            # negative amount (1%)
        else if (r < 0.015) status = "lost"                          # unknown status (0.5%)
        line = sprintf("{\"event_type\":\"transaction\",\"ref\":\"t%d\",\"email\":\"user%d@example.com\",\"amount\":%s,\"status\":\"%s\",\"ts\":%d}", i, u, amount, status, ts)
        if (r >= 0.015 && r < 0.025) line = substr(line, 1, length(line) - 1)  # malformed JSON (1%)
        print line
    }
}' > "$dir/events.ndjson"
ls -l "$dir/users.csv" "$dir/events.ndjson" | awk '{ printf "%12d bytes  %s\n", $5, $NF }'

# the example pipeline, as shipped, in a folder of its own (its paths are
# relative to the file): analytics refreshed every 10 s rather than every
# minute, and the HTTP source on a free port
mkdir -p "$dir/run/incoming"
cp -R sql/example/pipeline "$dir/run/pipeline"
sed -e 's/--cron "\* \* \* \* \*"/--every 10s/' -e 's/127\.0\.0\.1:8080/127.0.0.1:0/' \
    sql/example/pipeline.pgpipe > "$dir/run/pipeline.pgpipe"
W=${DEMO_WAIT:-600}
# wait_for WHAT SQL: until the query's single value is t (every DEMO_WAIT s at most)
wait_for() {
    i=0
    while [ "$("$P" --local "$dir/pg" --keep -m csv "$2" 2>/dev/null | tail -n 1)" != t ]; do
        i=$((i + 1))
        if [ $i -gt $((W * 5)) ] || ! kill -0 "$bg" 2>/dev/null; then
            echo "demo: gave up waiting for $1; the runner's log:"; tail -n 20 "$dir/run.log"; exit 1
        fi
        sleep 0.2
    done
}

step "3. pgpipe run: the example pipeline (sql/example/pipeline.pgpipe) as a service"
grep -E '^\.(pipeline|install|source|workers|schedule|task|alert|history)' "$dir/run/pipeline.pgpipe"
"$P" --local "$dir/pg" --keep ".run $dir/run/pipeline.pgpipe --for 30m" > "$dir/run.log" 2>&1 &
bg=$!
wait_for "the runner to start" "SELECT count(*) = 1 FROM pgpipe.run_instances WHERE pipeline = 'example' AND stopped_at IS NULL" 

step "4. users.csv into incoming/: loaded by the folder source, moved to production.users by the user workers"
mv "$dir/users.csv" "$dir/run/incoming/users.csv"
wait_for "the users" "SELECT EXISTS (SELECT 1 FROM pgpipe.loads WHERE status = 'completed' AND source = 'drop')
                        AND NOT EXISTS (SELECT 1 FROM staging.raw_events WHERE event_type = 'user' AND NOT processed)"

sed -n 's/.*msg="HTTP source listening".*port=\([0-9]*\).*/the status page and the HTTP source: http:\/\/127.0.0.1:\1\//p' "$dir/run.log"

step "5. events.ndjson into incoming/: loaded while the transaction workers transform it"
mv "$dir/events.ndjson" "$dir/run/incoming/events.ndjson"
wait_for "the transactions" "SELECT EXISTS (SELECT 1 FROM pgpipe.loads WHERE status = 'completed' AND source = 'events')
                               AND NOT EXISTS (SELECT 1 FROM staging.raw_events WHERE NOT processed)"
done_at=$("$P" --local "$dir/pg" --keep -m csv "SELECT now()" | tail -n 1)
wait_for "a refresh of the analytics view" "SELECT EXISTS (SELECT 1 FROM pgpipe.run_history
    WHERE pipeline = 'example' AND name = 'analytics' AND status = 'ok' AND started_at > '$done_at')"
kill -TERM "$bg"
wait "$bg" || { echo "demo: the runner did not stop cleanly:"; tail -n 20 "$dir/run.log"; exit 1; }
bg=
grep -E 'msg="file loaded"|drained' "$dir/run.log" | sed 's/^ts=[^ ]* //'
ls "$dir/run/incoming/done"

step "the run history (.runs): each schedule firing and task run"
pg ".runs --pipeline example --limit 8"

step "dead letters by error, with an example of each"
pg "SELECT stage, count(*) AS n, left(regexp_replace(error_message, '[0-9]+', 'N', 'g'), 70) AS error
      FROM pgpipe.dead_letters GROUP BY 1, 3 ORDER BY n DESC" \
   "SELECT DISTINCT ON (e) stage, coalesce(line_number::text, '') AS line,
           left(coalesce(raw_text, payload::text), 70) AS example
      FROM (SELECT *, regexp_replace(error_message, '[0-9]+', 'N', 'g') AS e
              FROM pgpipe.dead_letters) d ORDER BY e, id"

step "top days of analytics.daily_user_metrics"
pg "SELECT metric_date, active_users, transactions, completed_transactions, revenue, avg_amount
      FROM analytics.daily_user_metrics ORDER BY revenue DESC LIMIT 5"

step ".health"
pg .health

# A process-stage dead letter that the dlq-replay schedule (every 15 minutes, on
# the quarter hour) sent back to staging while the demo ran is pending or in
# production again, not dead: it counts once, where it is now.
step "the counts add up: records in = loaded + dead-lettered; staged = in production + dead-lettered + pending"
pg -m line "SELECT $users + $rows AS records_in,
       (SELECT sum(rows_loaded) FROM pgpipe.loads) AS loaded_to_staging,
       (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'load') AS dead_at_load,
       (SELECT count(*) FROM production.users) + (SELECT count(*) FROM production.transactions) AS in_production,
       (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'process' AND replayed_at IS NULL) AS dead_at_process,
       (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'process' AND replayed_at IS NOT NULL) AS replayed,
       (SELECT count(*) FROM staging.raw_events WHERE NOT processed) AS still_pending" \
   "SELECT CASE WHEN $users + $rows = (SELECT sum(rows_loaded) FROM pgpipe.loads)
                     + (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'load')
             AND (SELECT sum(rows_loaded) FROM pgpipe.loads)
                 = (SELECT count(*) FROM production.users) + (SELECT count(*) FROM production.transactions)
                   + (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'process' AND replayed_at IS NULL)
                   + (SELECT count(*) FROM staging.raw_events WHERE NOT processed)
            THEN 'yes: nothing lost, nothing twice' ELSE 'NO: the counts do not add up' END AS adds_up"
echo
echo "demo finished in $(( $(date +%s) - t0 )) s"
