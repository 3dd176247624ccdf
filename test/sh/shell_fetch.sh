#!/bin/sh
# FETCH_COUNT as psql 17 has it: the statement is sent as it is and its rows
# are read in libpq's single-row mode, printed a page at a time. So what a
# cursor cannot take pages too (SELECT INTO, INSERT ... RETURNING, TABLE,
# VALUES, EXPLAIN, several statements on one line), and the client holds one
# page, not the result: a 1M-row SELECT's peak memory (VmHWM) at
# FETCH_COUNT 1000 is a fraction of the same at FETCH_COUNT 0. Ctrl-C on a
# terminal during a paged result cancels the query; the shell goes on.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_fetch.XXXXXX")
need_pgpipe
export HOME=$tmp
unset PGPIPE_RC PSQL_PAGER PAGER 2>/dev/null

$P "$D" -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS shell_fetch" \
    -c "CREATE DATABASE shell_fetch" || fail "setup"
DB="$D dbname=shell_fetch"

# the statement goes to the server as typed (no cursor, no transaction of its own)
same "$($P "$DB" -tA -v FETCH_COUNT=5 -c 'SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()')" \
     "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid()" "sent as typed"
same "$($P "$DB" -tA -v FETCH_COUNT=5 -c 'SELECT now() = statement_timestamp()')" "t" \
     "no transaction around it"

# SELECT INTO: the table made, its tag said
out=$($P "$DB" -v FETCH_COUNT=10 -c 'SELECT g INTO fetch_into FROM generate_series(1, 25) g' \
      -c 'SELECT count(*) FROM fetch_into' 2>&1) || fail "SELECT INTO: exit $?
$out"
has "$out" "SELECT 25"
has "$out" " 25"
hasnt "$out" "ERROR"

# INSERT ... RETURNING at FETCH_COUNT 2: 5 rows in pages of 2 (each page
# aligned on its own widths, as psql's pages are), one header, the total in
# the footer, then the tag
$P "$DB" -q -c 'CREATE TABLE fetch_t (x int)' || fail "fetch_t"
out=$($P "$DB" -v FETCH_COUNT=2 -c 'INSERT INTO fetch_t VALUES (1), (22), (333), (4444), (55555) RETURNING x' 2>&1) ||
    fail "INSERT RETURNING: exit $?
$out"
same "$out" " x 
----
  1
 22
  333
 4444
 55555
(5 rows)
INSERT 0 5" "INSERT ... RETURNING paged"
same "$($P "$DB" -tA -c 'SELECT count(*) FROM fetch_t')" "5" "the rows inserted"
# WITH ... INSERT ... RETURNING, TABLE, VALUES, EXPLAIN, no rows: the same rows as
# without FETCH_COUNT (unaligned: the widths of aligned pages differ)
for q in 'WITH w AS (INSERT INTO fetch_t VALUES (6), (7) RETURNING x) SELECT x FROM w' 'TABLE fetch_t' \
         'VALUES (1, 2), (3, 4), (5, 6)' 'EXPLAIN (COSTS off) SELECT * FROM fetch_t' \
         'SELECT x FROM fetch_t WHERE false' 'SELECT 1 AS a; SELECT g AS b FROM generate_series(1, 3) g'; do
    a=$($P "$DB" -A -v FETCH_COUNT=0 -c 'BEGIN' -c "$q" -c 'ROLLBACK' 2>&1)
    b=$($P "$DB" -A -v FETCH_COUNT=2 -c 'BEGIN' -c "$q" -c 'ROLLBACK' 2>&1)
    same "$b" "$a" "FETCH_COUNT 2 vs 0: $q"
done
has "$($P "$DB" -v FETCH_COUNT=2 -c 'VALUES (1, 2), (3, 4), (5, 6)')" "(3 rows)"
# every result of a line of several statements is paged, and the pages count
# rows of their own result
out=$($P "$DB" -v FETCH_COUNT=2 -c 'SELECT 1 AS a; SELECT (10 ^ g)::int AS b FROM generate_series(0, 2) g')
same "$out" " a
---
 1
(1 row)
 b 
----
  1
 10
 100
(3 rows)" "several statements"
# in a failed transaction: the server's error, as without FETCH_COUNT
out=$($P "$DB" -v FETCH_COUNT=2 -c 'BEGIN' -c 'SELECT 1/0' -c 'SELECT g FROM generate_series(1, 3) g' \
      -c 'ROLLBACK' -c 'SELECT 42 AS after' 2>&1) && fail "failed transaction: exit 0"
has "$out" "25P02"
has "$out" " 42"
# \gset: one row, not paged; \g and \gx are
out=$($P "$DB" -tA -v FETCH_COUNT=1 -c 'SELECT 7 AS seven, 8 AS eight \gset' -c '\echo :seven :eight' \
      -c 'SELECT g FROM generate_series(1, 3) g \gx' 2>&1) || fail "\\gset: exit $?"
same "$out" "7 8
g|1

g|2

g|3" "\\gset and \\gx"

# an error at row 150000 of 200000 (FETCH_COUNT 100): the 1499 pages before it
# printed, the page in progress dropped, the error said; the shell goes on
$P "$DB" -tA -v FETCH_COUNT=100 -c 'SELECT 1 / (150000 - g) FROM generate_series(1, 200000) g' \
    -c '\echo :ERROR :SQLSTATE :ROW_COUNT' -c "SELECT 'alive'" >"$tmp/e.out" 2>"$tmp/e.err" &&
    fail "error at row 150000: exit 0"
has "$(cat "$tmp/e.err")" "division by zero"
same "$(grep -c '^0$' "$tmp/e.out")" "149900" "the pages before the error"
has "$(cat "$tmp/e.out")" "true 22012 0"
has "$(cat "$tmp/e.out")" "alive"

# output that cannot be written (\o /dev/full): the query stopped (cancelled, or
# its rows after the failing page dropped), said, 57014; the next one runs
out=$($P "$DB" -v FETCH_COUNT=2 -c '\o /dev/full' -c 'SELECT g FROM generate_series(1, 5) g' -c '\o' \
      -c '\echo :ERROR :SQLSTATE :ROW_COUNT' -c "SELECT 'next' AS n" 2>&1) && fail "\\o /dev/full: exit 0"
has "$out" "could not write the output"
has "$out" "true 57014 0"
has "$out" " next"

# peak memory: 1M rows at FETCH_COUNT 1000 hold a page; at 0, the result.
# (ASan's quarantine of freed memory would count as held: none here)
hwm() {
    ASAN_OPTIONS=${ASAN_OPTIONS:-}:quarantine_size_mb=0 $P "$DB" -tA -v FETCH_COUNT=$1 \
        -c "SELECT g, repeat('x', 50) FROM generate_series(1, 1000000) g" \
        -c '\! awk "/^VmHWM:/ { print \$2 }" /proc/$PPID/status >&2' 2>&1 >"$tmp/m$1.out"
}
full=$(hwm 0) || fail "FETCH_COUNT 0: exit $?"
paged=$(hwm 1000) || fail "FETCH_COUNT 1000: exit $?"
same "$(wc -l <"$tmp/m1000.out")" "1000000" "every row at FETCH_COUNT 1000"
cmp -s "$tmp/m0.out" "$tmp/m1000.out" || fail "FETCH_COUNT 1000 printed other rows than 0"
case "$full$paged" in *[!0-9]*|'') fail "VmHWM not read: '$full' '$paged'" ;; esac
[ $((paged * 3)) -lt "$full" ] || fail "peak memory at FETCH_COUNT 1000 ($paged kB) not under a third of 0's ($full kB)"

# Ctrl-C on a terminal while a paged result prints: the query cancelled, the shell usable
cc -std=c11 -Wall -Wextra -Werror test/ptydrive.c -o "$tmp/ptydrive" || fail "ptydrive"
cat > "$tmp/script" <<S
expect pgpipe> 
send \\\\set FETCH_COUNT 10\\r
expect pgpipe> 
send SELECT g AS n, pg_sleep(0.002)::text AS s FROM generate_series(1, 1000000) g;\\r
expect \\r\\n 25 |
send \\x03
expect [57014]
expect pgpipe> 
send SELECT 'still' || ' here' AS s, now() = statement_timestamp() AS own_tx;\\r
expect still here | t
expect pgpipe> 
send SELECT g FROM generate_series(1, 3) g;\\r
expect (3 rows)
expect pgpipe> 
send \\\\q\\r
exit 0
S
PGPIPE_HISTORY=$tmp/history "$tmp/ptydrive" "$tmp/script" -- "$P" "$DB" >"$tmp/pty.out" 2>&1 ||
    fail "Ctrl-C on a terminal: $(cat "$tmp/pty.out")"
same "$($P "$DB" -tA -c "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(0.002)%' AND pid <> pg_backend_pid()")" \
     "0" "the cancelled query is not running"

$P "$D" -q -c "DROP DATABASE shell_fetch" >/dev/null 2>&1
rm -rf "$tmp"
echo "shell_fetch: ok"
