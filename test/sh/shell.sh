#!/bin/sh
# The shell through pipes and arguments: output modes, exit status, scripts,
# errors, and the dot commands that stand on their own.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell.XXXXXX")

# .help needs no server (no CONNINFO, no PG* pointing anywhere useful)
out=$(PGHOST=/nonexistent $P ".help load") || fail ".help without a server: exit $?"
has "$out" "--format csv|ndjson|json"
PGHOST=/nonexistent $P ".help frobnicate" >/dev/null 2>&1 && fail ".help of an unknown command succeeded"

# aligned (default): header, separator, right-aligned numbers, row count
out=$($P "$D" "SELECT 1 AS a, 'xy' AS b UNION ALL SELECT 10, NULL ORDER BY 1") || fail "exit $?"
has "$out" " a  | b"
has "$out" "----+----"
has "$out" "  1 | xy"
has "$out" " 10 |"
has "$out" "(2 rows)"

out=$($P -m csv "$D" "SELECT 1 AS a, 'x,y' AS b, '' AS c, NULL AS d")
[ "$out" = 'a,b,c,d
1,"x,y","",' ] || fail "csv mode: $out"
out=$($P "$D" ".mode json" "SELECT 1 AS n, 'q\"' AS s, true AS t, NULL AS z, '{\"k\":[1]}'::jsonb AS j, 1.5::numeric AS x")
[ "$out" = '[{"n":1,"s":"q\"","t":true,"z":null,"j":{"k": [1]},"x":1.5}]' ] || fail "json mode: $out"
out=$($P "$D" ".mode line" "SELECT 1 AS id, 'bob' AS name")
[ "$out" = '  id = 1
name = bob' ] || fail "line mode: $out"
$P "$D" ".mode nope" 2>/dev/null && fail "bad mode accepted"

out=$($P "$D" ".timer on" "SELECT 1")
printf '%s\n' "$out" | grep -q '^Time: [0-9.]* ms$' || fail "timer: $out"
out=$($P "$D" ".version")
has "$out" "pgpipe $(sed -n 's/^#define PGPIPE_VERSION *"\(.*\)"/\1/p' pgpipe.h), libpq"

# help for every command, and for one
out=$($P "$D" ".help")
for c in .conninfo .explain .export .help .listen .mode .quit .read .refresh .timer .version; do has "$out" "$c"; done
out=$($P "$D" ".help export")
has "$out" 'COPY TO STDOUT'
$P "$D" ".help nosuch" 2>/dev/null && fail ".help of an unknown command exited 0"
$P "$D" ".nosuch" 2>/dev/null && fail "unknown command exited 0"

# errors: SQLSTATE shown, non-zero exit; scripts go on unless --bail
err=$($P "$D" "SELEC 1" 2>&1) && fail "bad SQL exited 0"
has "$err" "[42601]"
out=$(printf 'SELECT 2\n  + 3 AS five;\n.mode csv\nSELECT $$a;b$$ AS s; -- comment\nSELECT 7 AS seven;\n' | $P "$D") || fail "script failed"
has "$out" "    5"
has "$out" "a;b"
has "$out" "seven
7"
out=$(printf 'SELEC 1;\nSELECT 8;\n' | $P "$D" 2>/dev/null) && fail "failing script exited 0"
has "$out" "8"
out=$(printf 'SELEC 1;\nSELECT 8;\n' | $P --bail "$D" 2>/dev/null) && fail "--bail script exited 0"
printf '%s\n' "$out" | grep -q 8 && fail "--bail did not stop at the first error"
printf '.mode csv\nSELECT 41 + 1 AS x;\n' > "$tmp/s.sql"
out=$($P -f "$tmp/s.sql" "$D") || fail "-f failed"
[ "$out" = "x
42" ] || fail "-f output: $out"
out=$($P "$D" ".read $tmp/s.sql")
has "$out" "42"

# .export through COPY TO STDOUT, csv and ndjson
$P "$D" "CREATE TABLE shell_exp(id int, name text, note text)" \
       "INSERT INTO shell_exp VALUES (1, 'a,b', E'tab\\there'), (2, 'q\"uote', E'back\\\\slash'), (3, NULL, E'new\\nline')" >/dev/null || fail "setup"
out=$($P "$D" ".export \"SELECT * FROM shell_exp ORDER BY id\" $tmp/e.csv") || fail "export csv"
has "$out" "exported 3 rows to $tmp/e.csv (csv)"
[ "$(head -n 2 "$tmp/e.csv")" = 'id,name,note
1,"a,b",tab	here' ] || fail "csv file: $(cat "$tmp/e.csv")"
$P "$D" ".export \"SELECT * FROM shell_exp ORDER BY id\" $tmp/e.ndjson --format ndjson" >/dev/null || fail "export ndjson"
[ "$(cat "$tmp/e.ndjson")" = '{"id":1,"name":"a,b","note":"tab\there"}
{"id":2,"name":"q\"uote","note":"back\\slash"}
{"id":3,"name":null,"note":"new\nline"}' ] || fail "ndjson file: $(cat "$tmp/e.ndjson")"
$P "$D" ".export \"SELECT nope\" $tmp/x.csv" 2>/dev/null && fail "bad export exited 0"
# a query failing half way leaves the file as it was (not half the rows); a
# symbolic link is written through, and stays one
printf 'the old file\n' >"$tmp/keep.csv"
$P "$D" ".export \"SELECT 1 / (g - 3000) AS v FROM generate_series(1, 6000) g\" $tmp/keep.csv" \
    2>"$tmp/err" && fail "export failing half way exited 0"
has "$(cat "$tmp/err")" "division by zero"
[ "$(cat "$tmp/keep.csv")" = "the old file" ] || fail "failed export changed the file: $(head -3 "$tmp/keep.csv")"
[ "$(ls "$tmp" | grep -c 'keep.csv.pgpipe-')" = 0 ] || fail "failed export left its temporary file"
ln -s keep.csv "$tmp/link.csv"
$P "$D" ".export \"SELECT 5 AS v\" $tmp/link.csv" >/dev/null || fail "export through a link"
[ -L "$tmp/link.csv" ] && [ "$(cat "$tmp/keep.csv")" = "v
5" ] || fail "export through a link: $(ls -l "$tmp/link.csv"; cat "$tmp/keep.csv")"

# .refresh, with a hostile name quoted safely
$P "$D" "CREATE MATERIALIZED VIEW shell_mv AS SELECT id FROM shell_exp" "CREATE UNIQUE INDEX ON shell_mv(id)" >/dev/null
out=$($P "$D" ".refresh shell_mv --concurrently") || fail "refresh"
has "$out" "refreshed shell_mv concurrently"
$P "$D" '.refresh "public.shell_mv; DROP TABLE shell_exp"' 2>/dev/null && fail "injection refreshed something"
$P "$D" "SELECT count(*) FROM shell_exp" >/dev/null || fail "table dropped by an injection"

# .listen prints notifications sent by another session
( sleep 1; $P "$D" "NOTIFY shell_ch, 'hello 1'" "NOTIFY shell_ch, 'hello 2'" >/dev/null ) &
out=$($P "$D" ".listen shell_ch --count 2 --timeout 20") || fail "listen"
wait
has "$out" 'notification on "shell_ch" from pid'
has "$out" ': hello 2'
has "$out" '2 notifications'

# .explain: plan plus a note on a large sequential scan with a bad estimate
$P "$D" "CREATE TABLE shell_big AS SELECT g AS id, g % 7 AS k FROM generate_series(1, 50000) g" >/dev/null
out=$($P "$D" ".explain SELECT * FROM shell_big WHERE k = 3 AND id > 0") || fail "explain"
has "$out" "Seq Scan on shell_big"
has "$out" "note: sequential scan on shell_big"
$P "$D" "DROP TABLE shell_exp CASCADE" "DROP TABLE shell_big" >/dev/null

# without CONNINFO the PG* variables apply, and SQL holding '=' is not taken for one
out=$($P -m csv "SELECT 1 = 1 AS t" "SELECT 'a=b' AS kv") || fail "PG* variables: $out"
[ "$out" = "t
t
kv
a=b" ] || fail "SQL with '=' taken for a conninfo: $out"

# no password from a connection string is printed
err=$($P "host=/nonexistent password=sekrit123" "SELECT 1" 2>&1) && fail "bad conninfo exited 0"
printf '%s\n' "$err" | grep -q sekrit123 && fail "password printed: $err"
echo "shell ok"
