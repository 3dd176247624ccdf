#!/bin/sh
# psql's habits, round 2: \errverbose and the VERBOSITY and SHOW_CONTEXT
# variables; \prompt (the terminal, else standard input; a script file's
# standard input under -f); FETCH_COUNT (a result read a page at a time, as
# psql 17 does: every row printed, an error in the middle leaves no open
# transaction; more in shell_fetch.sh); \password (asked twice without echo, encrypted before it is
# sent: the clear text never reaches the server); \lo_import, \lo_export,
# \lo_list, \lo_unlink; \crosstabview. Each with bad arguments, scripts and
# error paths.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_psql2.XXXXXX")
need_pgpipe
export HOME=$tmp
unset PGPIPE_RC PSQL_PAGER PAGER 2>/dev/null
# without a controlling terminal (\prompt and \password read standard input
# then), even when the tests run from one
nt() { setsid "$@"; }

$P "$D" -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS shell_psql2" \
    -c "CREATE DATABASE shell_psql2" -c "DROP ROLE IF EXISTS psql2_pw" \
    -c "CREATE ROLE psql2_pw LOGIN" || fail "setup"
DB="$D dbname=shell_psql2"
$P "$DB" -q -c "CREATE FUNCTION boom() RETURNS int LANGUAGE plpgsql AS \$\$BEGIN
    RAISE EXCEPTION 'boom' USING DETAIL = 'the detail', HINT = 'the hint'; END\$\$" || fail "setup fn"

# ---- \errverbose, VERBOSITY, SHOW_CONTEXT -------------------------------------
out=$($P "$DB" -c '\errverbose' 2>&1) || fail "\\errverbose without an error: exit $?"
same "$out" "There is no previous error." "\\errverbose with none"
out=$($P "$DB" -v VERBOSITY=terse -c 'SELECT boom()' -c 'SELECT 1 AS ok' -c '\errverbose' 2>&1)
has "$out" "boom"
# the error itself as terse said it; \errverbose has all of it, after a success too
first=$(printf '%s\n' "$out" | sed -n '/ok/q;p')
hasnt "$first" "the detail"
has "$out" "P0001: boom"
has "$out" "DETAIL:  the detail"
has "$out" "HINT:  the hint"
has "$out" "CONTEXT:  PL/pgSQL function boom()"
has "$out" "LOCATION:  exec_stmt_raise"
out=$($P "$DB" -c '\set VERBOSITY verbose' -c 'SELECT 1/0' 2>&1)
has "$out" "LOCATION:  int4div"
out=$($P "$DB" -c '\set VERBOSITY sqlstate' -c 'SELECT boom()' 2>&1)
hasnt "$out" "boom"
has "$out" "P0001"
# SHOW_CONTEXT never: no CONTEXT; the default (errors) has it
hasnt "$($P "$DB" -v SHOW_CONTEXT=never -c 'SELECT boom()' 2>&1)" "CONTEXT:"
has "$($P "$DB" -c 'SELECT boom()' 2>&1)" "CONTEXT:"
# a new connection (\c) keeps them
out=$($P "$DB" -c '\set VERBOSITY verbose' -c '\c shell_psql2' -c 'SELECT 1/0' 2>&1)
has "$out" "LOCATION:  int4div"
# bad values refused, the variable unchanged; \unset: the default again
out=$($P "$DB" -c '\set VERBOSITY verbose' -c '\set VERBOSITY loud' -c '\set SHOW_CONTEXT sometimes' \
      -c '\echo :VERBOSITY :SHOW_CONTEXT' -c 'SELECT 1/0' 2>&1)
has "$out" 'unrecognized value "loud" for "VERBOSITY"'
has "$out" "Available values are: default, verbose, terse, sqlstate"
has "$out" 'unrecognized value "sometimes" for "SHOW_CONTEXT"'
has "$out" "verbose errors"
has "$out" "LOCATION:  int4div"
out=$($P "$DB" -c '\set VERBOSITY verbose' -c '\unset VERBOSITY' -c '\echo :VERBOSITY' -c 'SELECT 1/0' 2>&1)
has "$out" "default"
hasnt "$out" "LOCATION"
$P "$DB" -v VERBOSITY=loud -c 'SELECT 1' >/dev/null 2>&1 && fail "-v VERBOSITY=loud accepted"
# extra arguments: said, ignored (as psql)
out=$($P "$DB" -c 'SELECT 1/0' -c '\errverbose x' 2>&1)
has "$out" 'extra argument "x" ignored'
has "$out" "LOCATION:  int4div"
# the connection lost: the last error is the one that said so; after the
# reset, the new connection's errors (with its VERBOSITY)
out=$($P "$DB" -c 'SELECT 1/0' -c 'SELECT pg_terminate_backend(pg_backend_pid())' -c '\errverbose' 2>&1)
has "$(printf '%s\n' "$out" | sed -n '/Attempting reset/,$p')" "server closed the connection"
out=$($P "$DB" -c '\set VERBOSITY terse' -c 'SELECT pg_terminate_backend(pg_backend_pid())' -c 'SELECT boom()' \
      -c '\errverbose' 2>&1)
hasnt "$(printf '%s\n' "$out" | sed -n '/Attempting reset/,/P0001/p')" "the detail"
has "$out" "DETAIL:  the detail"

# ---- \prompt -----------------------------------------------------------------
out=$(printf 'first line\nsecond\n' | nt $P "$DB" -c '\prompt v1' -c "\\prompt 'Say: ' v2" \
      -c '\echo [:v1] [:v2]' 2>&1) || fail "\\prompt: exit $?"
has "$out" "[first line] [second]"
has "$out" "Say: "
# no NAME, a bad name, the end of the input: errors, nothing set
out=$(: | nt $P "$DB" -c '\set v3 kept' -c '\prompt' -c '\prompt "a b"' -c '\prompt v3' -c '\echo :v3' 2>&1)
has "$out" '\prompt: missing required argument'
has "$out" 'invalid variable name: "a b"'
has "$out" 'could not read value for variable "v3"'
has "$out" "kept"
# a script file (-f): the value from standard input, the prompt on standard output
printf "\\\\prompt 'Name: ' who\n\\\\echo hello :who\n" > "$tmp/prompt.sql"
out=$(printf 'Ann\n' | nt $P "$DB" -f "$tmp/prompt.sql" 2>&1) || fail "\\prompt -f: exit $?"
same "$out" "Name: hello Ann" "\\prompt under -f"
# a script on standard input: the line after \prompt is the value (no terminal)
out=$(printf '\\prompt v\nthe value\n\\echo got :v\n' | nt $P "$DB" 2>&1) || fail "\\prompt stdin: exit $?"
has "$out" "got the value"

# ---- FETCH_COUNT ---------------------------------------------------------------
# every row of 200k, 100 at a time; the statement is sent as typed (psql 17: no cursor)
out=$($P "$DB" -tA -v FETCH_COUNT=100 -c 'SELECT g FROM generate_series(1, 200000) g' | awk '
    { n++; s += $1 } END { printf "%d %.0f\n", n, s }') || fail "FETCH_COUNT: exit $?"
same "$out" "200000 20000100000" "FETCH_COUNT every row"
out=$($P "$DB" -tA -v FETCH_COUNT=5 -c 'SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()')
same "$out" "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()" "FETCH_COUNT sent as typed"
# one table: the header on the first page, the total in the footer on the last
out=$($P "$DB" -v FETCH_COUNT=2 -c 'SELECT g FROM generate_series(1, 5) g')
same "$(printf '%s\n' "$out" | grep -c -- '---')" "1" "one header"
has "$out" "(5 rows)"
out=$($P "$DB" -v FETCH_COUNT=2 -c '\x' -c 'SELECT g FROM generate_series(1, 3) g')
has "$out" "-[ RECORD 3 ]"
out=$($P "$DB" -v FETCH_COUNT=2 -c '.mode json' -c 'SELECT g FROM generate_series(1, 3) g')
same "$out" '[{"g":1},
{"g":2},
{"g":3}]' "FETCH_COUNT json"
# an error at row 150000: said (exit 1), the rows before it printed, no transaction left open
$P "$DB" -tA -v FETCH_COUNT=100 -c 'SELECT 1 / (150000 - g) FROM generate_series(1, 200000) g' \
    -c '\echo :ERROR :SQLSTATE :ROW_COUNT' -c '\unset FETCH_COUNT' -c 'BEGIN' -c "SELECT 'alive'" \
    -c 'COMMIT' >"$tmp/fc.out" 2>"$tmp/fc.err" && fail "FETCH_COUNT error: exit 0"
err=$(cat "$tmp/fc.err")
has "$err" "division by zero"
hasnt "$err" "already a transaction in progress"
hasnt "$err" "25P02"
same "$(grep -c '^0$' "$tmp/fc.out")" "149900" "the pages before the error"
has "$(cat "$tmp/fc.out")" "true 22012 0"
has "$(cat "$tmp/fc.out")" "alive"
# inside the user's transaction: it stays open
out=$($P "$DB" -tA -v FETCH_COUNT=2 -c 'BEGIN' -c 'CREATE TABLE fc (x int)' \
      -c 'SELECT g FROM generate_series(1, 3) g' -c 'INSERT INTO fc VALUES (1)' -c 'COMMIT' \
      -c 'SELECT count(*) FROM fc' 2>&1) || fail "FETCH_COUNT in a transaction: exit $?"
has "$out" "COMMIT"
same "$(printf '%s\n' "$out" | tail -1)" "1" "the transaction went on"
# several statements (each result paged), \gset (not paged), WITH
out=$($P "$DB" -tA -v FETCH_COUNT=2 -c 'SELECT 1; SELECT 2' -c 'SELECT 7 AS seven \gset' \
      -c '\echo :seven' -c 'WITH w AS (SELECT 3) SELECT * FROM w' 2>&1) || fail "FETCH_COUNT others: exit $?"
same "$out" "1
2
7
3" "FETCH_COUNT where it does not apply"
# bad values refused; 0 turns it off
out=$($P "$DB" -c '\set FETCH_COUNT 10' -c '\set FETCH_COUNT many' -c '\echo :FETCH_COUNT' 2>&1)
has "$out" 'invalid value "many" for "FETCH_COUNT": integer expected'
has "$out" "10"
out=$($P "$DB" -tA -v FETCH_COUNT=0 -c 'SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()')
hasnt "$out" "FETCH"

# ---- \lo_import, \lo_export, \lo_list, \lo_unlink ----------------------------------
printf 'abc\000def\n' > "$tmp/blob.bin"
out=$($P "$DB" -c "\\lo_import $tmp/blob.bin 'a blob'" -c '\lo_list' -c "\\lo_export :LASTOID $tmp/back.bin" \
      -c '\lo_unlink :LASTOID' -c '\lo_list' 2>&1) || fail "\\lo_*: exit $?
$out"
has "$out" "lo_import "
has "$out" "a blob"
has "$out" "lo_export"
has "$out" "lo_unlink "
has "$out" "(0 rows)"
cmp -s "$tmp/blob.bin" "$tmp/back.bin" || fail "\\lo_export wrote other bytes"
# bad arguments and failures: errors, no large object left behind
out=$($P "$DB" -c "\\lo_import $tmp/none.bin" -c '\lo_import' -c '\lo_export 12x /dev/null' -c '\lo_export 1' \
      -c '\lo_unlink 999999' -c '\lo_unlink' -c '\lo_list extra' -c 'BEGIN' -c 'SELECT 1/0' \
      -c "\\lo_import $tmp/blob.bin" -c 'ROLLBACK' -c "\\lo_import $tmp/blob.bin 'c'" \
      -c "\\lo_export :LASTOID $tmp/nodir/x.bin" -c '\lo_unlink :LASTOID' 2>&1) && fail "\\lo_* errors: exit 0"
has "$out" "could not open file"
has "$out" "usage: \\lo_import FILE [COMMENT]"
has "$out" 'invalid large object OID "12x"'
has "$out" "usage: \\lo_export OID FILE"
has "$out" "large object 999999 does not exist"
has "$out" "usage: \\lo_unlink OID"
has "$out" "\\lo_list: takes no argument"
has "$out" "\\lo_import: current transaction is aborted"
has "$out" "\\lo_export: could not open file"
same "$($P "$DB" -tA -c 'SELECT count(*) FROM pg_largeobject_metadata')" "0" "no large object left"
# in the user's transaction: rolled back with it
$P "$DB" -q -c 'BEGIN' -c "\\lo_import $tmp/blob.bin" -c 'ROLLBACK' >/dev/null || fail "\\lo_import in BEGIN"
same "$($P "$DB" -tA -c 'SELECT count(*) FROM pg_largeobject_metadata')" "0" "rolled back"

# ---- \crosstabview ----------------------------------------------------------------
$P "$DB" -q -c "CREATE TABLE ct (v text, h text, d int, s int)" \
    -c "INSERT INTO ct VALUES ('r1','b',1,2), ('r1','a',2,1), ('r2','a',3,1), ('r3',NULL,4,3), (NULL,'b',NULL,2)" \
    || fail "crosstab setup"
# the values in the order they first appear; a missing cell empty, a NULL as \pset null
out=$($P "$DB" -c '\pset null (null)' -c 'SELECT v, h, d FROM ct \crosstabview') || fail "\\crosstabview: exit $?"
same "$out" 'Null display is "(null)".
   v    |   b    | a | (null)
--------+--------+---+--------
 r1     |      1 | 2 |       
 r2     |        | 3 |       
 r3     |        |   |      4
 (null) | (null) |   |       
(4 rows)' "\\crosstabview"
# columns by name (folded unless quoted) and number; sortcolH orders the headers
out=$($P "$DB" -A -c 'SELECT v AS "V", h, d, s FROM ct WHERE v IS NOT NULL \crosstabview "V" 2 D s') \
    || fail "\\crosstabview sorted: exit $?"
same "$out" "V|a|b|
r1|2|1|
r2|3||
r3|||4
(3 rows)" "\\crosstabview by name, sorted"
# in a script, after a statement over several lines; the script goes on
printf "SELECT v, h, d\n  FROM ct WHERE v = 'r2'\n\\\\crosstabview v h\nSELECT 'after' AS a;\n" > "$tmp/ct.sql"
out=$($P "$DB" -f "$tmp/ct.sql") || fail "\\crosstabview -f: exit $?"
has "$out" " r2 | 3"
has "$out" "after"
# FETCH_COUNT does not split it
same "$($P "$DB" -tA -v FETCH_COUNT=1 -c 'SELECT v, h, d FROM ct WHERE v = $$r1$$ \crosstabview')" "r1|1|2" \
     "\\crosstabview under FETCH_COUNT"
# what does not make a grid: errors, nothing printed
out=$($P "$DB" -c 'SELECT v, h FROM ct \crosstabview' -c 'SELECT v, h, d, s FROM ct \crosstabview' \
      -c 'SELECT * FROM ct \crosstabview 1 1 3' -c 'SELECT * FROM ct \crosstabview 1 5 3' \
      -c 'SELECT * FROM ct \crosstabview v nope d' -c 'SELECT v, h, d, v FROM ct \crosstabview v h d' \
      -c "SELECT 'x', 'y', g FROM generate_series(1, 2) g \\crosstabview" \
      -c 'SELECT * FROM ct \crosstabview v h d v' -c 'SELECT 1, 2, 3 \crosstabview 1 2 3 4 5' \
      -c 'CREATE TEMP TABLE ctt (x int) \crosstabview' 2>&1) && fail "\\crosstabview errors: exit 0"
has "$out" "query must return at least three columns"
has "$out" "data column must be specified when query returns more than three columns"
has "$out" "vertical and horizontal headers must be different columns"
has "$out" "column number 5 is out of range 1..4"
has "$out" 'column name not found: "nope"'
has "$out" 'ambiguous column name: "v"'
has "$out" 'multiple data values for row "x", column "y"'
has "$out" 'sort column "v" must be integers'
has "$out" "usage: \\crosstabview"
has "$out" "statement did not return a result set"
hasnt "$out" "rows)"

# ---- \password without a terminal: standard input --------------------------------
out=$(printf 'pw-one\npw-two\n' | nt $P "$DB" -c '\password psql2_pw' 2>&1) && fail "mismatch accepted"
has "$out" "didn't match"
out=$(printf 'pw-one\n' | nt $P "$DB" -c '\password psql2_pw' 2>&1) && fail "end of input accepted"
has "$out" "could not read the password"
out=$(printf '\n\n' | nt $P "$DB" -c '\password psql2_pw' 2>&1) && fail "empty password accepted"
has "$out" "empty password"
same "$($P "$DB" -tA -c "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'psql2_pw'")" "t" \
     "nothing changed"
out=$($P "$DB" -c '\password psql2_pw extra' 2>&1) && fail "two arguments accepted"
out=$(printf 'x\nx\n' | nt $P "$DB" -c '\password no_such_role_psql2' 2>&1) && fail "no such role"
has "$out" "does not exist"
# the connection lost before it: reconnected, then asked
out=$(printf 'pw-stdin\npw-stdin\n' | nt $P "$DB" -c 'SELECT pg_terminate_backend(pg_backend_pid())' \
      -c '\password psql2_pw' 2>&1)
has "$out" "Attempting reset: succeeded"
has "$out" "Enter it again: "
same "$($P "$DB" -tA -c "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'psql2_pw'")" \
     'SCRAM-SHA-256$' "\\password from standard input"

# ---- on a terminal: \prompt echoes, \password does not; the server sees only the hash
cc -std=c11 -Wall -Wextra -Werror test/ptydrive.c -o "$tmp/ptydrive" || fail "ptydrive"
cat > "$tmp/script" <<S
expect pgpipe> 
send \\\\prompt 'Your name: ' who\\r
expect \\r\\nYour name: 
send Zed\\r
expect Zed
expect pgpipe> 
send \\\\echo hi :who\\r
expect hi Zed
expect pgpipe> 
send \\\\password psql2_pw\\r
# (not echoed: nothing between each prompt and the new line after Enter)
expect Enter new password for user "psql2_pw
send pw-on-tty\\r
expect ": \\r\\nEnter it again
send pw-on-tty\\r
expect : \\r\\n\\rpgpipe> 
send \\\\! $P "$DB" -tA -c "SELECT query FROM pg_stat_activity WHERE query LIKE 'ALTER USER%'" > $tmp/seen\\r
expect pgpipe> 
send \\\\password psql2_pw\\r
expect Enter new password
send one\\r
expect Enter it again: 
send two\\r
expect didn't match
expect pgpipe> 
send \\\\q\\r
exit 0
S
HOME=$tmp PGPIPE_HISTORY=$tmp/history "$tmp/ptydrive" "$tmp/script" -- "$P" "$DB" || fail "on a terminal"
seen=$(cat "$tmp/seen")
has "$seen" "ALTER USER \"psql2_pw\" PASSWORD 'SCRAM-SHA-256\$"
hasnt "$seen" "pw-on-tty"
hasnt "$(cat "$tmp/history" 2>/dev/null)" "pw-on-tty"
$P "$D" -q -c "DROP ROLE psql2_pw" >/dev/null 2>&1
rm -rf "$tmp"
echo "shell_psql2: ok"
