#!/bin/sh
# `make demo`: the main job, end to end, on a private local PostgreSQL server.
#
#   DEMO_ROWS=1000000 sh tool/demo.sh        (make demo builds first; 1M
#                                             transactions is the default)
#
# 1. starts a private server (pgpipe --local) and installs the built-in schema
#    and the three-layer example (staging -> production -> analytics);
# 2. generates sample data with a fixed seed: users as CSV, DEMO_ROWS
#    transactions as NDJSON, a few percent deliberately bad (malformed JSON,
#    invalid emails, negative amounts, unknown status);
# 3. loads the users with the COPY loader and moves them to production.users
#    with SKIP LOCKED workers (the email CHECK refuses the bad ones);
# 4. loads the transactions while workers, woken by the loader's NOTIFY,
#    transform them into production.transactions; bad records of either step
#    go to the dead-letter queue;
# 5. refreshes analytics.daily_user_metrics concurrently and prints the load
#    and worker summaries, the dead letters by error with an example of each,
#    the top rows of the view, .health, and a check that the counts add up.
# The server is stopped and its directory removed at the end (DEMO_KEEP=1
# keeps both and prints how to connect).
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

step "1. a private PostgreSQL server in $dir/pg, the built-in schema and the example pipeline"
pg .version ".install --example"

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

# The transaction handler checks what it can itself and returns the records
# it refuses as failed_id + error (they are dead-lettered without bisecting
# the batch); the constraints still catch anything else.
cat > "$dir/transactions.sql" <<'SQL'
WITH r AS (
  SELECT (e->>'id')::bigint AS id, e->'payload' AS p, u.id AS user_id
  FROM jsonb_array_elements($1::jsonb) e
  LEFT JOIN production.users u ON u.email = lower(e->'payload'->>'email')),
chk AS (
  SELECT r.*, CASE
    WHEN user_id IS NULL THEN 'no such user: ' || coalesce(p->>'email', '(none)')
    WHEN NOT staging.valid_amount(p) THEN 'amount must be positive: ' || coalesce(p->>'amount', '(none)')
    WHEN coalesce(p->>'status', '') NOT IN ('pending', 'completed', 'failed', 'refunded')
      THEN 'unknown status: ' || coalesce(p->>'status', '(none)')
    END AS error
  FROM r),
ins AS (
  INSERT INTO production.transactions (user_id, amount, status, external_ref, created_at)
  SELECT user_id, (p->>'amount')::numeric, p->>'status', p->>'ref', to_timestamp((p->>'ts')::bigint)
  FROM chk WHERE error IS NULL
  ON CONFLICT (external_ref) DO NOTHING)
SELECT id AS failed_id, error FROM chk WHERE error IS NOT NULL
SQL

step "3. load the users with the COPY loader; SKIP LOCKED workers move them to production.users"
pg ".load $dir/users.csv --event-type user --source demo"
pg ".work --event-type user --workers 2 --batch 500 --max-attempts 1 --until-empty --sql \"
  INSERT INTO production.users (email, full_name, country)
  SELECT lower(e->'payload'->>'email'), e->'payload'->>'full_name', nullif(e->'payload'->>'country', '')
  FROM jsonb_array_elements(\$1::jsonb) e
  ON CONFLICT (email) DO UPDATE SET full_name = EXCLUDED.full_name, country = EXCLUDED.country\""

step "4. load the transactions while workers transform them (each committed batch NOTIFYs the workers)"
work=".work --event-type transaction --workers 2 --batch 1000 --max-attempts 1 --sql $dir/transactions.sql"
"$P" --local "$dir/pg" --keep "$work --quiet" > "$dir/work-bg.out" 2>&1 &
bg=$!
pg ".load $dir/events.ndjson --format ndjson --event-type-field event_type --source demo"
# the load is done: drain what is left, then stop the workers that ran during the load
pg "$work --until-empty"
kill -TERM $bg 2>/dev/null || true
wait $bg || true
printf 'during the load: '; cat "$dir/work-bg.out"

step "5. analytics: REFRESH MATERIALIZED VIEW CONCURRENTLY"
pg ".refresh analytics.daily_user_metrics --concurrently"

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

step "the counts add up: records in = loaded + dead-lettered; staged = in production + dead-lettered"
pg -m line "SELECT $users + $rows AS records_in,
       (SELECT sum(rows_loaded) FROM pgpipe.loads) AS loaded_to_staging,
       (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'load') AS dead_at_load,
       (SELECT count(*) FROM production.users) + (SELECT count(*) FROM production.transactions) AS in_production,
       (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'process') AS dead_at_process,
       (SELECT count(*) FROM staging.raw_events WHERE NOT processed) AS still_pending" \
   "SELECT CASE WHEN $users + $rows = (SELECT sum(rows_loaded) FROM pgpipe.loads)
                     + (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'load')
             AND (SELECT sum(rows_loaded) FROM pgpipe.loads)
                 = (SELECT count(*) FROM production.users) + (SELECT count(*) FROM production.transactions)
                   + (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'process')
            THEN 'yes: nothing lost, nothing twice' ELSE 'NO: the counts do not add up' END AS adds_up"
echo
echo "demo finished in $(( $(date +%s) - t0 )) s"
