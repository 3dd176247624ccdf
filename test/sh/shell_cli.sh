#!/bin/sh
# The shell's command line and what it prints: options anywhere before --
# (issue 18 §2), command tags, multi-line values in aligned output, and
# script errors named FILE:LINE (issue 18 §3.8), backslash commands in scripts
# (§3.4).
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/cli.XXXXXX")
exists() { $P -m csv "$D" "SELECT to_regclass('$1') IS NOT NULL AS e" | tail -n 1; }
$P "$D" "DROP TABLE IF EXISTS cli_t, cli_bail, cli_never" >/dev/null 2>&1

# ---- options anywhere before -- ----------------------------------------------
out=$($P "$D" -m csv "SELECT 1 AS a") || fail "option after CONNINFO: exit $?"
[ "$out" = "a
1" ] || fail "option after CONNINFO: $out"
out=$($P "$D" "SELECT 2 AS b" --mode=csv) || fail "option after the command: exit $?"
[ "$out" = "b
2" ] || fail "--mode=csv after the command: $out"
# a script saved with a byte order mark runs (as in psql); only line 1 loses it
printf '\357\273\277SELECT 41 + 1 AS bom;\nSELECT 1 AS \357\273\277x;\n' > "$tmp/bom.sql"
out=$($P "$D" -m csv -f "$tmp/bom.sql" 2>&1) || fail "-f with a BOM: $out"
has "$out" "bom
42"
has "$out" "$(printf '\357\273\277x')"
out=$(cat "$tmp/bom.sql" | $P "$D" -m csv 2>&1) || fail "stdin with a BOM: $out"
has "$out" "bom
42"
printf 'SELECT 1/0;\nCREATE TABLE cli_bail (x int);\n' > "$tmp/bail.sql"
$P "$D" -f "$tmp/bail.sql" --bail >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 1 ] || fail "-f FILE --bail: exit $rc ($(cat "$tmp/err"))"
[ "$(exists cli_bail)" = f ] || fail "--bail after CONNINFO and -f was not applied"
# after --, an argument starting with '-' is a command
out=$($P -m csv "$D" -- "-- a comment
SELECT 3 AS c") || fail "command after --: exit $?"
[ "$out" = "c
3" ] || fail "command after --: $out"
# an unknown option, or one without its value: exit 2, nothing runs
$P "$D" "CREATE TABLE cli_never (x int)" --frobnicate >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 2 ] || fail "unknown option: exit $rc"
has "$(cat "$tmp/err")" "pgpipe: unknown option --frobnicate"
[ "$(wc -l < "$tmp/err")" -le 2 ] || fail "unknown option: $(cat "$tmp/err")"
$P "$D" "CREATE TABLE cli_never (x int)" -f >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 2 ] || fail "-f without a file: exit $rc"
has "$(cat "$tmp/err")" "option -f needs a value"
$P "$D" "CREATE TABLE cli_never (x int)" -m bogus >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 2 ] || fail "-m bogus: exit $rc"
$P "$D" -f "$tmp/bail.sql" "CREATE TABLE cli_never (x int)" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 2 ] || fail "-f and COMMANDs: exit $rc"
[ "$(exists cli_never)" = f ] || fail "a bad command line ran something"
# no connection is made for a bad command line (this host does not exist)
$P "host=/nonexistent" "SELECT 1" --nope 2>"$tmp/err"; rc=$?
[ $rc = 2 ] && ! grep -q "connect" "$tmp/err" || fail "bad option connected first: $(cat "$tmp/err")"
$P --version "$D" | grep -q '^pgpipe ' || fail "--version after CONNINFO"

# ---- command tags ------------------------------------------------------------
out=$($P "$D" "CREATE TABLE cli_t (a int, b text)" "INSERT INTO cli_t VALUES (1, 'x'), (2, 'y'), (3, 'z')" \
      "UPDATE cli_t SET a = a + 10 WHERE a < 3" "DELETE FROM cli_t WHERE a = 3" \
      "INSERT INTO cli_t VALUES (4, 'w') RETURNING a") || fail "tags: exit $?"
[ "$out" = "CREATE TABLE
INSERT 0 3
UPDATE 2
DELETE 1
 a
---
 4
(1 row)
INSERT 0 1" ] || fail "command tags: $out"
# COPY from a script's inline data
printf 'COPY cli_t FROM stdin;\n5\tv\n6\tu\n\\.\n' > "$tmp/copy.sql"
out=$($P "$D" -f "$tmp/copy.sql") || fail "copy: exit $?"
[ "$out" = "COPY 2" ] || fail "COPY tag: $out"
# a dot command's own SQL prints no tags
out=$($P "$D" "CREATE MATERIALIZED VIEW cli_mv AS SELECT 1 AS x" ".refresh cli_mv" ".listen cli_ch --timeout 0" \
      "DROP MATERIALIZED VIEW cli_mv") || fail "dot commands: exit $?"
[ "$out" = "SELECT 1
refreshed cli_mv
listening on \"cli_ch\"
0 notifications
DROP MATERIALIZED VIEW" ] || fail "tags of dot commands: $out"
# csv and json stay data only
out=$($P -m csv "$D" "UPDATE cli_t SET a = a" "SELECT count(*) AS n FROM cli_t") || fail "csv: exit $?"
[ "$out" = "n
5" ] || fail "csv printed a tag: $out"

# ---- multi-line values in aligned output (as psql) ---------------------------
out=$($P "$D" "SELECT 'x' AS k, E'line1\nline22' AS v, 7 AS n UNION ALL SELECT E'a\nb', 'q', 8 ORDER BY n")
[ "$out" = "$(printf '%s\n' \
' k |   v    | n' \
'---+--------+---' \
' x | line1 +| 7' \
'   | line22 |  ' \
' a+| q      | 8' \
' b |        |  ' \
'(2 rows)')" ] || fail "multi-line aligned output:
$out"
out=$($P "$D" "SELECT 1 AS n, E'end\nlast' AS v")
[ "$out" = "$(printf '%s\n' ' n |  v  ' '---+------' ' 1 | end +' '   | last' '(1 row)')" ] ||
    fail "multi-line last column:
$out"

# ---- errors in scripts name FILE:LINE ----------------------------------------
printf 'SELECT 1;\n\nSELECT\n  nosuchcolumn;\n.mode bogus\n\\foo\nSELECT 2;\n' > "$tmp/err.sql"
$P "$D" -f "$tmp/err.sql" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 1 ] || fail "script with errors: exit $rc"
has "$(cat "$tmp/err")" "$tmp/err.sql:3: error: [42703]"
has "$(cat "$tmp/err")" "$tmp/err.sql:5: error: .mode: MODE: expected aligned, csv, json, line, table, box, markdown, insert or unaligned, got \"bogus\""
has "$(cat "$tmp/err")" "$tmp/err.sql:6: error: invalid command \\foo (try .help)"
[ "$(grep -c 'invalid command' "$tmp/err")" = 1 ] || fail "\\foo: $(cat "$tmp/err")"
# the same through .read (the read file's own lines) and from stdin
printf 'SELECT 0;\n.read %s\n' "$tmp/err.sql" | $P "$D" >"$tmp/out" 2>"$tmp/err"
has "$(cat "$tmp/err")" "$tmp/err.sql:3: error: [42703]"
printf 'SELECT 0;\nSELEC 1;\n' | $P "$D" >"$tmp/out" 2>"$tmp/err"
has "$(cat "$tmp/err")" "<stdin>:2: error: [42601]"
# a command-line argument has no line
$P "$D" "SELEC 1" 2>"$tmp/err"
grep -q '^error: \[42601\]' "$tmp/err" || fail "argument error: $(cat "$tmp/err")"

# ---- backslash commands in a script ------------------------------------------
printf 'SELECT 1;\n' > "$tmp/inc.sql"
printf '\\x\nSELECT 1 AS a, 2 AS b;\n\\x off\n\\i %s\n\\timing on\n\\bind\n\\q\nSELECT 99;\n' "$tmp/inc.sql" |
    $P "$D" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 1 ] || fail "backslash script: exit $rc"
has "$(cat "$tmp/out")" "a | 1"
has "$(cat "$tmp/out")" "(1 row)"
has "$(cat "$tmp/out")" "Timing is on."
has "$(cat "$tmp/err")" "<stdin>:6: error: invalid command \\bind"
grep -q 99 "$tmp/out" && fail "\\q did not end the script"
# inside a statement: \g runs it, \r clears it, \q quits; in COPY data \N is data
$P "$D" "CREATE TABLE cli_n (v text)" >/dev/null
printf 'SELECT 1 AS a\n\\g\nSELECT 2 AS nope\n\\r\nCOPY cli_n FROM stdin;\n\\N\nx\n\\.\nSELECT count(*) AS n, count(v) AS v FROM cli_n\n\\g\nSELECT 3 AS gone\n\\q\nSELECT 4;\n' |
    $P -m csv "$D" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 0 ] || fail "backslash inside a statement: exit $rc: $(cat "$tmp/err")"
[ "$(cat "$tmp/out")" = "a
1
Query buffer reset (cleared).
n,v
2,1" ] || fail "backslash inside a statement: $(cat "$tmp/out")"
$P "$D" "DROP TABLE cli_n" >/dev/null
$P "$D" "DROP TABLE cli_t" >/dev/null
echo "shell command line ok"
