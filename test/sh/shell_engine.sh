#!/bin/sh
# The shell's engine commands on a database of their own: .install, .health,
# .partitions, .migrate; scripts with $$ bodies and inline COPY data.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/eng.XXXXXX")
line() { printf '%s\n' "$1" | grep -qxF -- "$2" || fail "expected the line '$2' in:
$1"; }
$P "$PGPIPE_TEST_DSN" "DROP DATABASE IF EXISTS shell_eng" "CREATE DATABASE shell_eng" >/dev/null || fail "createdb"
D="$PGPIPE_TEST_DSN dbname=shell_eng"

out=$($P "$D" .health) || fail ".health exit"
has "$out" "cache hit ratio"
has "$out" "built-in schema     not installed (.install)"
out=$($P "$D" .install) || fail ".install: $out"
has "$out" "installed the built-in schema"
out=$($P "$D" ".install --example") || fail ".install --example: $out"
has "$out" "and the example pipeline"
out=$($P "$D" ".partitions ahead 10" ".partitions" ".partitions retain 30") || fail ".partitions: $out"
has "$out" "created 3 partitions (daily, 10 days ahead)"
has "$out" "raw_events_default"
has "$out" "raw_events_p"
has "$out" "dropped 0 partitions older than 30 days"
$P "$D" ".partitions ahead ten" 2>/dev/null && fail "bad .partitions argument accepted"
out=$($P "$D" .health) || fail ".health"
has "$out" "ok    partitions ahead    10 days"
has "$out" "ok    backlog             0 unprocessed"
has "$out" "ok    dead letters        0 dead"

# migrations from a directory
mkdir "$tmp/m"
printf 'CREATE TABLE eng_users(id int PRIMARY KEY, name text);\n' > "$tmp/m/V1__users.sql"
cat > "$tmp/m/V2__func.sql" <<'SQL'
CREATE FUNCTION eng_hello(n text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN 'hello; ' || n || '''s';
END
$$;
COPY eng_users FROM stdin;
1	ann
2	bob
\.
SQL
out=$($P "$D" ".migrate $tmp/m") || fail ".migrate: $out"
has "$out" "applied   1"
has "$out" "applied   2"
out=$($P -m csv "$D" "SELECT eng_hello(name) AS h FROM eng_users ORDER BY id") || fail "function"
has "$out" "hello; ann's"
printf 'SELECT 1;\nSELECT nope FROM eng_users;\n' > "$tmp/m/V3__bad.sql"
err=$($P "$D" ".migrate $tmp/m" 2>&1) && fail "failing migration exited 0"
has "$err" "V3__bad.sql:2:"
has "$err" "[SQLSTATE 42703]"
out=$($P "$D" ".migrate $tmp/m --status")
has "$out" "failed    3"

# a script with a $$ body, BEGIN/COMMIT and inline COPY data
out=$(cat <<'SQL' | $P -m csv "$D"
CREATE TABLE eng_copy(a int, b text);
COPY eng_copy FROM stdin;
1	x
2	y;z
\.
DO $$ BEGIN
  INSERT INTO eng_copy VALUES (3, 'three;');
END $$;
SELECT count(*) AS n, string_agg(b, '|' ORDER BY a) AS b FROM eng_copy;
SQL
) || fail "script: $out"
has "$out" "3,x|y;z|three;"
err=$(printf 'SELECT 1;\n\\crosstabview\n' | $P "$D" 2>&1) && fail "psql meta-command accepted"
has "$err" "<stdin>:2:"
# .work N --sql FILE processes staging rows; .stats shows the numbers
$P "$D" "CREATE TABLE eng_out(id bigint PRIMARY KEY)" \
        "INSERT INTO staging.raw_events (source, event_type, payload) SELECT 'eng', 'tick', jsonb_build_object('n', g) FROM generate_series(1, 120) g" >/dev/null || fail "stage rows"
printf 'INSERT INTO eng_out SELECT (e->>'"'"'id'"'"')::bigint\nFROM jsonb_array_elements($1::jsonb) e;\n' > "$tmp/handler.sql"
out=$($P "$D" ".work 2 --sql $tmp/handler.sql --batch 25 --until-empty") || fail ".work: $out"
out=$($P -m csv "$D" "SELECT count(*) AS n FROM eng_out")
[ "$(echo "$out" | tail -n 1)" = 120 ] || fail ".work did not process every row: $out"
out=$($P "$D" .stats) || fail ".stats: $out"
has "$out" "tick"
has "$out" "oldest_pending"
has "$out" "dead_lettered"
has "$out" "dead_letters"
$P "$D" ".help stats" | grep -q "dead letters by stage" || fail ".help stats"
# dead letters: .health warns when this hour's new ones are more than 10 and
# more than twice the hour before's; .stats counts them by stage and status
$P "$D" "INSERT INTO pgpipe.dead_letters (stage, source_name, raw_text, error_message, first_failed_at) SELECT 'load', 'eng', 'x', 'boom', now() - interval '10 minutes' FROM generate_series(1, 10)" >/dev/null || fail "dead letters"
out=$($P "$D" .health) || fail ".health"
line "$out" "ok    dead letters        10 dead, 10 new in the last hour, 0 in the hour before"
$P "$D" "INSERT INTO pgpipe.dead_letters (stage, source_name, raw_text, error_message) VALUES ('load', 'eng', 'x', 'boom')" >/dev/null || fail "dead letter"
out=$($P "$D" .health) || fail ".health"
line "$out" "WARN  dead letters        11 dead, 11 new in the last hour, 0 in the hour before (growing: see .dlq)"
$P "$D" "INSERT INTO pgpipe.dead_letters (stage, source_name, raw_text, error_message, first_failed_at) SELECT 'load', 'eng', 'x', 'boom', now() - interval '90 minutes' FROM generate_series(1, 6)" >/dev/null || fail "dead letters"
out=$($P "$D" .health) || fail ".health"
line "$out" "ok    dead letters        17 dead, 11 new in the last hour, 6 in the hour before"
out=$($P -m csv "$D" .stats) || fail ".stats: $out"
line "$out" "stage,status,dead_letters,latest"
printf '%s\n' "$out" | grep -q '^load,dead,17,20' || fail ".stats: no load,dead,17 row in:
$out"

$P "$PGPIPE_TEST_DSN" "DROP DATABASE shell_eng" >/dev/null
echo "engine commands ok"
