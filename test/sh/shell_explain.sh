#!/bin/sh
# .explain never changes data: EXPLAIN ANALYZE of UPDATE, DELETE, INSERT runs
# inside a transaction that is rolled back (a savepoint inside the user's own
# transaction), with the plan's actual rows and a note saying so. SQL typed
# as EXPLAIN ANALYZE still executes, as in psql.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
need_pgpipe
q() { $P -m csv "$D" "$1" | tail -n 1; }

$P "$D" "SET client_min_messages = warning" "DROP TABLE IF EXISTS explain_t" \
    "CREATE TABLE explain_t (id int PRIMARY KEY, x int)" \
    "INSERT INTO explain_t SELECT g, g FROM generate_series(1, 5) g" >/dev/null || fail "setup"
sum0=$(q "SELECT sum(x) || '/' || count(*) FROM explain_t")
[ "$sum0" = "15/5" ] || fail "setup: $sum0"

out=$($P "$D" ".explain UPDATE explain_t SET x = x + 1") || fail ".explain UPDATE: $out"
has "$out" "Update on explain_t"
has "$out" "actual time="
has "$out" "rows=5"
has "$out" "(run inside a transaction that was rolled back: no data changed)"
[ "$(q "SELECT sum(x) || '/' || count(*) FROM explain_t")" = "$sum0" ] || fail ".explain UPDATE changed the table"

out=$($P "$D" ".explain DELETE FROM explain_t WHERE id > 2") || fail ".explain DELETE: $out"
has "$out" "Delete on explain_t"
has "$out" "rolled back"
out=$($P "$D" ".explain INSERT INTO explain_t VALUES (9, 9)") || fail ".explain INSERT: $out"
has "$out" "Insert on explain_t"
out=$($P "$D" ".explain WITH d AS (DELETE FROM explain_t RETURNING id) SELECT count(*) FROM d") ||
    fail ".explain WITH DELETE: $out"
has "$out" "rolled back"
[ "$(q "SELECT sum(x) || '/' || count(*) FROM explain_t")" = "$sum0" ] || fail ".explain DELETE/INSERT changed the table"

# a SELECT: the plan, no note about writes
out=$($P "$D" ".explain SELECT * FROM explain_t") || fail ".explain SELECT: $out"
has "$out" "Seq Scan on explain_t"
printf '%s\n' "$out" | grep -q "rolled back" && fail "a note on a SELECT: $out"

# inside the user's transaction: a savepoint; the transaction goes on and
# its own work stays
out=$(printf '%s\n' "BEGIN;" "UPDATE explain_t SET x = 100 WHERE id = 1;" \
      ".explain UPDATE explain_t SET x = x + 1" "SELECT sum(x) AS s FROM explain_t;" \
      ".explain SELECT nope FROM explain_t" "SELECT 'still in' AS t;" "COMMIT;" | $P "$D" 2>&1)
has "$out" "Update on explain_t"
has "$out" "rolled back"
has "$out" "114"          # 100 + 2 + 3 + 4 + 5: the user's update stays, .explain's is gone
has "$out" "still in"     # a failing .explain does not abort the user's transaction
[ "$(q "SELECT sum(x) FROM explain_t")" = "114" ] || fail "the user's transaction lost its update"

# typed as SQL, EXPLAIN ANALYZE executes (as in psql)
$P "$D" "EXPLAIN ANALYZE UPDATE explain_t SET x = 0" >/dev/null || fail "EXPLAIN ANALYZE as SQL"
[ "$(q "SELECT sum(x) FROM explain_t")" = "0" ] || fail "EXPLAIN ANALYZE typed as SQL did not execute"

$P "$D" "DROP TABLE explain_t" >/dev/null
echo "shell_explain ok"
