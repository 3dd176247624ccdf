#!/bin/sh
# make bench-records: the record store on a throwaway cluster.
#   1. create_batch (one COPY) against one-at-a-time pgpipe_records_create
#      (a cached prepared INSERT per record, autocommit), 100K records each
#      into a fresh collection (GIN indexes on fields and metadata in place);
#      metric records/s; target >= 10x. Also against the ceiling: the same
#      documents by a bare libpq COPY into a table with the same columns and
#      no index, check or trigger (what the GIN maintenance costs).
#   2. a filtered search (kind = "kX": 100 hits out of 100K records; compiled
#      to fields @> '{"kind":"kX"}' AND a recheck) with the GIN index on
#      fields, against the same search after DROP INDEX (a sequential scan);
#      metric searches/s. The index is dropped, not disabled by a setting, so
#      the planner's other choices stay as they are.
#   3. (1) again on a durable server (fsync, synchronous_commit on: ALTER
#      SYSTEM + reload in the same cluster); the one-at-a-time side on a
#      sample of RECORDS_BENCH_DURABLE_SAMPLE (2000) records.
# Each figure: median of 5 runs after a warm-up run; min and max printed too.
# Environment: RECORDS_BENCH_N (default 100000), RECORDS_BENCH_Q (searches
# per run with the index, default 2000; without it Q/100, at least 5).
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
out=build/bench/records
mkdir -p "$out"

if [ "${1:-}" != "--inner" ]; then
    cflags=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
    libs=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
    ${CC:-cc} -std=c11 -O2 -Wall -Wextra -D_POSIX_C_SOURCE=200809L $cflags -I. \
        test/bench/records/bench_records.c pgpipe.c $libs -lpthread -lm -o "$out/bench_records"
    exec nice -n 5 sh tool/pgtmp.sh run -- sh "$0" --inner
fi

N=${RECORDS_BENCH_N:-100000}
Q=${RECORDS_BENCH_Q:-2000}
QS=$((Q / 100)); [ $QS -ge 5 ] || QS=5
RUNS=5
b=$out/bench_records
res=$out/results.txt
: > "$res"

stats() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "missing missing missing"; exit }
    printf "%s %s %s\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }
repeat() { # the first run is the warm-up
    "$@" >/dev/null
    i=0
    while [ $i -lt $RUNS ]; do "$@" | awk '{ print $1 }'; i=$((i + 1)); done
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "missing" || b == "missing" || b == 0) print "missing"; else printf "%.2f\n", a / b }'; }

echo "records bench: $N records, median of $RUNS runs after a warm-up" >&2
repeat $b batch "$N" | stats > "$out/batch.txt"
repeat $b single "$N" | stats > "$out/single.txt"
repeat $b ceiling "$N" | stats > "$out/ceiling.txt"

# the same on a durable server (fsync, synchronous_commit and full_page_writes
# on, as PostgreSQL ships): every one-at-a-time create then waits for its WAL
# flush; that one runs on a sample of DS records
DS=${RECORDS_BENCH_DURABLE_SAMPLE:-2000}
psql -qX -c "ALTER SYSTEM SET fsync = on" -c "ALTER SYSTEM SET synchronous_commit = on" \
    -c "ALTER SYSTEM SET full_page_writes = on" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
repeat $b batch "$N" | stats > "$out/batch_durable.txt"
repeat $b single "$DS" | stats > "$out/single_durable.txt"
psql -qX -c "ALTER SYSTEM RESET fsync" -c "ALTER SYSTEM RESET synchronous_commit" \
    -c "ALTER SYSTEM RESET full_page_writes" -c "SELECT pg_reload_conf()" >/dev/null
sleep 1

$b fill "$N"
$b index on
$b plan 1 > "$out/plan_index.txt"
repeat $b search "$Q" | stats > "$out/search_index.txt"
$b index off
$b plan 1 > "$out/plan_noindex.txt"
repeat $b search "$QS" | stats > "$out/search_noindex.txt"
$b index on

printf '\n| component | workload | pgpipe | peer | ratio |\n|---|---|---|---|---|\n'
line() { # workload metric peer pgpipe-file peer-file
    read -r v vmin vmax < "$4"
    read -r pv pmin pmax < "$5"
    r=$(ratio "$v" "$pv")
    printf '| records | %s | %s %s (min %s, max %s) | %s %s (min %s, max %s) | %s |\n' \
        "$1" "$v" "$2" "$vmin" "$vmax" "$3" "$pv" "$pmin" "$pmax" "$r"
    echo "bench: component=records workload=$1 metric=$2 pgpipe=$v peer=$3 peer_value=$pv ratio=$r" >> "$res"
}
line "create-${N}" records/s one-at-a-time-create "$out/batch.txt" "$out/single.txt"
line "create-${N}" records/s ceiling "$out/batch.txt" "$out/ceiling.txt"
line "create-${N}-durable" records/s one-at-a-time-create-durable-${DS} "$out/batch_durable.txt" "$out/single_durable.txt"
line "search-eq-${N}" searches/s no-gin-index "$out/search_index.txt" "$out/search_noindex.txt"
echo
cat "$res"
echo
echo "plan with the index:"; grep -E "Scan|Cond" "$out/plan_index.txt" | sed 's/^/  /'
echo "plan without it:"; grep -E "Scan|Filter" "$out/plan_noindex.txt" | sed 's/^/  /'
