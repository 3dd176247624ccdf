#!/bin/sh
# Benchmark of the migration runner (make bench-migrate, from the repo top).
#  1. apply: one migration of 20,000 INSERTs, 20 plpgsql functions with $$
#     bodies and a 20,000-row COPY FROM stdin block, in one transaction:
#     pgpipe's runner vs `psql -1 -f` (what CI scripts use); statements/s.
#  2. split: the statement splitter alone on a 24 MB script; MB/s (no peer
#     splits without executing, so the peer is reported missing).
# Median of 5 runs after a warm-up; min and max printed too.
set -eu
top=$(pwd)
B=$top/build/bench/migrate
mkdir -p "$B"
PGCF=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
cc -std=c11 -O2 $PGCF -I"$top" test/bench/migrate/bench_migrate.c -lpq -lpthread -lm \
   -o "$B/bench_migrate"

# deterministic input
mkdir -p "$B/dir"
rm -f "$B/dir/"*.sql
awk 'BEGIN {
    print "-- benchmark migration"
    print "CREATE SCHEMA bench;"
    print "CREATE TABLE bench.t (id int PRIMARY KEY, name text, amount numeric);"
    print "CREATE TABLE bench.c (id int, note text);"
    for (i = 1; i <= 20000; i++) {
        printf "INSERT INTO bench.t VALUES (%d, %cit%c%cs; row %d%c, %d.25);\n", i, 39, 39, 39, i, 39, i
        if (i % 1000 == 0) {
            printf "CREATE FUNCTION bench.f%d(x int) RETURNS text LANGUAGE plpgsql AS $$\n", i
            print "BEGIN"
            print "  -- a comment; with a semicolon"
            print "  RETURN x::text || $q$;$q$ || E'\''\\t'\'';"
            print "END;"
            print "$$;"
        }
    }
    print "COPY bench.c (id, note) FROM stdin;"
    for (i = 1; i <= 20000; i++) printf "%d\tnote %d; with text\n", i, i
    print "\\."
}' > "$B/dir/V1__bench.sql"
nstmt=$(( 4 + 20000 + 20 + 1 ))
: > "$B/big.sql"
for i in 1 2 3 4 5 6 7 8 9 10 11 12; do cat "$B/dir/V1__bench.sql" >> "$B/big.sql"; done

# a throwaway cluster with the same settings for both contenders
pg=$B/pg
sh tool/pgtmp.sh stop "$pg" >/dev/null 2>&1 || true
rm -rf "$pg"
dsn=$(sh tool/pgtmp.sh start "$pg" --owner $$)
trap 'sh "$top/tool/pgtmp.sh" stop "$pg" >/dev/null 2>&1 || true' EXIT
reset_db() {
    psql -X -q "$dsn" -c "DROP SCHEMA IF EXISTS bench CASCADE; DROP SCHEMA IF EXISTS bench_hist CASCADE;" \
        -c "VACUUM ANALYZE" >/dev/null 2>&1
}
now_us() { date +%s%N | awk '{ printf "%.0f", $1 / 1000 }'; }

stats() { # values on stdin -> "median min max"
    sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
                     printf "%.0f %.0f %.0f\n", m, v[1], v[NR] }'
}

runs=5
: > "$B/pgpipe.txt"; : > "$B/psql.txt"
have_psql=1
command -v psql >/dev/null 2>&1 || have_psql=0
for r in 0 1 2 3 4 5; do
    reset_db
    t0=$(now_us); "$B/bench_migrate" apply "$dsn" "$B/dir"; t1=$(now_us)
    [ $r -gt 0 ] && echo "$nstmt $t0 $t1" | awk '{ printf "%.0f\n", $1 / (($3 - $2) / 1e6) }' >> "$B/pgpipe.txt"
    if [ $have_psql = 1 ]; then
        reset_db
        t0=$(now_us); psql -X -q -1 -v ON_ERROR_STOP=1 -f "$B/dir/V1__bench.sql" "$dsn" >/dev/null; t1=$(now_us)
        [ $r -gt 0 ] && echo "$nstmt $t0 $t1" | awk '{ printf "%.0f\n", $1 / (($3 - $2) / 1e6) }' >> "$B/psql.txt"
    fi
done
set -- $(stats < "$B/pgpipe.txt"); pm=$1 pmin=$2 pmax=$3
if [ $have_psql = 1 ]; then
    set -- $(stats < "$B/psql.txt"); qm=$1 qmin=$2 qmax=$3
    ratio=$(awk -v a="$pm" -v b="$qm" 'BEGIN { printf "%.2f", a / b }')
else
    qm=missing qmin=- qmax=- ratio=missing
fi

"$B/bench_migrate" split "$B/big.sql" 1 >/dev/null
"$B/bench_migrate" split "$B/big.sql" $runs | awk '{ print $1 }' > "$B/split.txt"
set -- $(sort -g "$B/split.txt" | awk '{ v[NR] = $1 } END { printf "%.0f %.0f %.0f\n", v[3], v[1], v[NR] }')
sm=$1 smin=$2 smax=$3

printf '%-9s | %-34s | %-24s | %-24s | %s\n' component workload pgpipe peer ratio
printf '%-9s | %-34s | %-24s | %-24s | %s\n' migrate "apply 20k stmts+COPY (stmts/s)" \
    "$pm ($pmin-$pmax)" "psql -1 -f: $qm ($qmin-$qmax)" "$ratio"
printf '%-9s | %-34s | %-24s | %-24s | %s\n' migrate "split 24 MB script (MB/s)" \
    "$sm ($smin-$smax)" "missing" "missing"
echo "bench: component=migrate workload=apply_20k_statements metric=statements/s pgpipe=$pm peer=psql peer_value=$qm ratio=$ratio"
echo "bench: component=migrate workload=split_24MB metric=MB/s pgpipe=$sm peer=none peer_value=missing ratio=missing"
