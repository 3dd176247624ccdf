#!/bin/sh
# make bench-claim: the SKIP LOCKED claimer against
#   - pgbench running the bare claim-and-complete statement pgpipe runs (the
#     ceiling: one statement per batch, prepared, no handler, autocommit),
#   - the source articles' Python pattern (psycopg2: BEGIN; SELECT ... FOR
#     UPDATE SKIP LOCKED LIMIT n; UPDATE ... SET processed = true; COMMIT),
#   - graphile-worker and pg-boss (npm, installed into build/bench/npm),
# all with the same worker count and batch size.
#
# How (BENCH.md): the contenders run INTERLEAVED, round by round: round 0 is
# the warm-up, rounds 1..RUNS each run every contender once, in an order
# rotated by one every round, and each figure is the median over the rounds
# (min and max printed beside it). At the start of a round staging.raw_events
# is refilled with N pending events (INSERT ... SELECT generate_series, VACUUM
# ANALYZE); the SQL contenders (pgpipe, ceiling, psycopg2) then each take
# events from it for SECS seconds, with a VACUUM ANALYZE before each of them
# (so none steps over the dead rows another one left), and the table is
# refilled whenever fewer than N/2 events are left. The npm peers use their own
# job tables, refilled with JOBS jobs before each of their runs.
# Also: idle-worker latency from commit (+ NOTIFY) to claim, and end to end
# (pgpipe's loader fed NDJSON, 10K-row batches with one NOTIFY each, while the
# workers claim), RUNS times after a warm-up.
#
# Clusters: the headline is the DURABLE cluster (fsync on, synchronous_commit
# on: PostgreSQL's defaults, PGTMP_DURABLE=1); the fast cluster (fsync and
# synchronous_commit off, the tests' settings) can be run beside it.
# CLAIM_BENCH_CLUSTERS="durable fast" runs both (one after the other, each on a
# throwaway cluster of its own); the default is durable only: one cluster
# took 11 minutes at full sizes on the 2-core machine, both take twice that.
#
# Wall-clock figures on a shared, loaded machine are noise between minutes;
# the interleaving makes the ratios comparable, not the absolute rates.
#
#   sh test/bench/claim/run.sh          (or make bench-claim)
#
# Environment: CLAIM_BENCH_CLUSTERS ("durable"), CLAIM_BENCH_N (default
# 1000000), CLAIM_BENCH_WORKERS (2), CLAIM_BENCH_BATCH (100),
# CLAIM_BENCH_SECS (3 s per run), CLAIM_BENCH_RUNS (5 rounds after the
# warm-up), CLAIM_BENCH_JOBS (queued jobs for the npm peers, default 100000:
# their enqueue is slow), CLAIM_BENCH_LAT (latency samples, 200),
# CLAIM_BENCH_E2E (events of the end-to-end run, default 300000),
# CLAIM_BENCH_E2E_BATCH (its claim batch, default 1000: no peer runs there,
# so it uses the batch size a deployment would). A smoke run:
#   CLAIM_BENCH_N=50000 CLAIM_BENCH_JOBS=5000 CLAIM_BENCH_E2E=20000 \
#   CLAIM_BENCH_RUNS=2 CLAIM_BENCH_SECS=1 CLAIM_BENCH_LAT=20 \
#   CLAIM_BENCH_CLUSTERS="durable fast" make bench-claim
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
out=build/bench/claim
mkdir -p "$out"

if [ "${1:-}" != "--inner" ]; then
    # ---- peers -----------------------------------------------------------
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt_get() { DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1 ||
            { apt-get update >/dev/null 2>&1 &&
              DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null 2>&1; } || true; }
        /usr/bin/python3 -c 'import psycopg2' 2>/dev/null || apt_get python3-psycopg2
        [ -x /usr/lib/postgresql/15/bin/pgbench ] || command -v pgbench >/dev/null ||
            apt_get postgresql-contrib
        command -v npm >/dev/null || apt_get npm
    fi
    if command -v npm >/dev/null && { [ ! -d build/bench/npm/node_modules/graphile-worker ] ||
       [ ! -d build/bench/npm/node_modules/pg-boss ]; }; then
        mkdir -p build/bench/npm
        [ -f build/bench/npm/package.json ] || echo '{"name":"claim-bench-peers","private":true}' > build/bench/npm/package.json
        (cd build/bench/npm && npm install --no-audit --no-fund graphile-worker pg-boss >npm.log 2>&1) || true
    fi
    cflags=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
    libs=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
    ${CC:-cc} -std=c11 -O2 -Wall -Wextra -D_POSIX_C_SOURCE=200809L $cflags -I. \
        test/bench/claim/bench_claim.c pgpipe.c $libs -lpthread -lm -o "$out/bench_claim"
    clusters=${CLAIM_BENCH_CLUSTERS:-durable}
    for cl in $clusters; do
        case $cl in
            durable) d=1 ;;
            fast) d=0 ;;
            *) echo "bench-claim: unknown cluster \"$cl\" in CLAIM_BENCH_CLUSTERS (durable, fast)" >&2
               exit 2 ;;
        esac
        mkdir -p "$out/$cl"
        : > "$out/$cl/results.txt"
        PGTMP_DURABLE=$d nice -n 5 sh tool/pgtmp.sh run -- sh "$0" --inner "$cl" ||
            echo "bench-claim: the $cl run failed" >&2
    done
    echo
    for cl in $clusters; do
        [ -s "$out/$cl/table.txt" ] && cat "$out/$cl/table.txt"
    done
    echo
    for cl in $clusters; do
        cat "$out/$cl/results.txt"
    done
    exit 0
fi

# ---- inside the throwaway cluster ------------------------------------------
CL=$2
N=${CLAIM_BENCH_N:-1000000}
W=${CLAIM_BENCH_WORKERS:-2}
B=${CLAIM_BENCH_BATCH:-100}
S=${CLAIM_BENCH_SECS:-3}
J=${CLAIM_BENCH_JOBS:-100000}
E=${CLAIM_BENCH_E2E:-300000}
EB=${CLAIM_BENCH_E2E_BATCH:-1000}
RUNS=${CLAIM_BENCH_RUNS:-5}
LAT=${CLAIM_BENCH_LAT:-200}
bc=$out/bench_claim
d=$out/$CL
PY=/usr/bin/python3
PGBENCH=$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)
export NODE_PATH=$top/build/bench/npm/node_modules
res=$d/results.txt
: > "$res"
echo "claim bench ($CL cluster): $N events, $W workers, batch $B, ${S} s per run," \
     "$RUNS interleaved rounds after a warm-up round" >&2

# median/min/max of the first field of the lines on stdin: "med min max"
stats() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "missing missing missing"; exit }
    m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.0f %s %s\n", m, v[1], v[NR] }'; }

pending() { $bc pending 2>/dev/null || echo 0; }
# the SQL contenders share staging.raw_events: refilled when half of it is
# gone, else vacuumed (the dead rows the previous contender left)
fresh() {
    if [ "$(pending)" -lt $((N / 2)) ]; then
        $bc setup "$N"
    else
        psql -qX -c "VACUUM ANALYZE staging.raw_events" >/dev/null
    fi
}

# the ceiling: the bare claim-and-complete statement under pgbench; events/s
# = pgbench's tps (connections excluded) x the rows a transaction completed
# (counted, so a table emptied before the end does not count empty claims)
cat > "$d/claim.pgbench" <<SQL
WITH c AS (SELECT id, received_at FROM staging.raw_events WHERE NOT processed AND (next_attempt_at IS NULL OR next_attempt_at <= now()) AND (claim_token IS NULL OR lease_expires_at <= now()) ORDER BY received_at, id LIMIT $B FOR UPDATE SKIP LOCKED) UPDATE staging.raw_events r SET processed = true, processed_at = now(), claimed_by = 'pgbench' FROM c WHERE r.id = c.id AND r.received_at = c.received_at RETURNING r.id, r.source, r.event_type, r.payload::text, r.received_at::text, r.attempts + 1;
SQL
ceiling() {
    before=$(pending)
    "$PGBENCH" -n -M prepared -c "$W" -j "$W" -T "$S" -f "$d/claim.pgbench" > "$d/pgbench.out" 2>&1 || return 1
    after=$(pending)
    awk -v rows=$((before - after)) '/^number of transactions actually processed:/ { split($0, a, ": "); split(a[2], b, "/"); tx = b[1] }
        /^tps = / { tps = $3 } END { if (tx > 0) printf "%.0f\n", tps * rows / tx }' "$d/pgbench.out"
}

# probes (CLAIM_BENCH_PROBES=1, the default; they measure what a different
# completion could reach, not a peer): "rangeread" is a PgQ-style range claim's
# read path under pgbench (advance a cursor row by B, record the batch as one
# row, read the B rows of that id range by primary key; one durable commit per
# batch; nothing flagged), "bulkflag" sets processed = true on 10 contiguous
# id ranges of pending rows in one statement each (the work a range claim
# would still owe every row, in bulk)
cat > "$d/range.pgbench" <<SQL
BEGIN;
UPDATE public.claim_bench_cur SET pos = CASE WHEN pos + $B > hi THEN lo ELSE pos + $B END RETURNING pos \\gset
INSERT INTO public.claim_bench_batches (lo, hi) VALUES (:pos, :pos + $B);
SELECT id, source, event_type, payload::text, received_at::text FROM staging.raw_events WHERE id > :pos AND id <= :pos + $B;
COMMIT;
SQL
psql -qX -c "SET client_min_messages = warning" \
    -c "DROP TABLE IF EXISTS public.claim_bench_cur, public.claim_bench_batches" \
    -c "CREATE TABLE public.claim_bench_cur (pos bigint, lo bigint, hi bigint)" \
    -c "CREATE TABLE public.claim_bench_batches (lo bigint, hi bigint)" >/dev/null
rangeread() {
    psql -qX -c "TRUNCATE public.claim_bench_cur, public.claim_bench_batches" \
        -c "INSERT INTO public.claim_bench_cur SELECT min(id) - 1, min(id) - 1, max(id) - $B FROM staging.raw_events" >/dev/null
    "$PGBENCH" -n -M prepared -c "$W" -j "$W" -T "$S" -f "$d/range.pgbench" > "$d/range.out" 2>&1 || return 1
    awk -v b="$B" '/^tps = / { printf "%.0f\n", $3 * b }' "$d/range.out"
}
bulkflag() {
    p=$(pending)
    sz=$((p / 40)); [ $sz -le 10000 ] || sz=10000
    [ $sz -gt 0 ] || return 1
    hi=$(psql -qtAX -c "SELECT max(id) FROM staging.raw_events WHERE NOT processed")
    lo=$((hi - 10 * sz))
    t0=$(date +%s.%N)
    i=0
    while [ $i -lt 10 ]; do
        psql -qX -c "UPDATE staging.raw_events SET processed = true, processed_at = now() WHERE id > $((lo + i * sz)) AND id <= $((lo + (i + 1) * sz)) AND NOT processed" >/dev/null || return 1
        i=$((i + 1))
    done
    t1=$(date +%s.%N)
    echo "$t0 $t1 $((10 * sz))" | awk '{ printf "%.0f\n", $3 / ($2 - $1) }'
}

have_pgbench=0
{ [ -x "$PGBENCH" ] || command -v "$PGBENCH" >/dev/null 2>&1; } && have_pgbench=1
have_py=0
$PY -c 'import psycopg2' 2>/dev/null && have_py=1
have_graphile=0
[ -d "$NODE_PATH/graphile-worker" ] && have_graphile=1
have_pgboss=0
[ -d "$NODE_PATH/pg-boss" ] && have_pgboss=1

# once NAME ROUND: one run of contender NAME; its events/s appended to
# $d/NAME.raw (not for the warm-up round 0)
once() {
    name=$1; round=$2; v=
    case $name in
        pgpipe) fresh; v=$($bc run "$W" "$B" "$S" 2>/dev/null | awk '{ print $1 }') ;;
        ceiling) [ $have_pgbench = 1 ] || return 0
                 fresh; v=$(ceiling 2>/dev/null) ;;
        psycopg2) [ $have_py = 1 ] || return 0
                  fresh; v=$($PY test/bench/claim/peer_psycopg2.py "$PGPIPE_TEST_DSN" "$W" "$B" "$S" \
                            2>/dev/null | tail -n 1 | awk '{ print $1 }') ;;
        rangeread) [ $have_pgbench = 1 ] || return 0
                   fresh; v=$(rangeread 2>/dev/null) ;;
        bulkflag) fresh; v=$(bulkflag 2>/dev/null) ;;
        graphile|pgboss)
            eval "[ \$have_$name = 1 ]" || return 0
            if node "test/bench/claim/peer_$name.js" "$W" "$B" "$S" "$J" setup >/dev/null 2>"$d/$name.err"; then
                v=$(node "test/bench/claim/peer_$name.js" "$W" "$B" "$S" "$J" 2>>"$d/$name.err" |
                    tail -n 1 | awk '{ print $1 }')
            fi ;;
    esac
    echo "  round $round $name: ${v:-failed} events/s" >&2
    [ "$round" -gt 0 ] && [ -n "$v" ] && echo "$v" >> "$d/$name.raw"
    return 0
}

contenders="pgpipe ceiling psycopg2 graphile pgboss"
[ "${CLAIM_BENCH_PROBES:-1}" = 1 ] && contenders="$contenders rangeread bulkflag"
nc=$(echo $contenders | wc -w)
for c in $contenders; do : > "$d/$c.raw"; done
$bc setup "$N"
r=0
while [ $r -le "$RUNS" ]; do
    # rotate the order by one each round
    set -- $contenders
    k=0
    while [ $k -lt $((r % nc)) ]; do x=$1; shift; set -- "$@" "$x"; k=$((k + 1)); done
    for c in "$@"; do once "$c" $r; done
    r=$((r + 1))
done
for c in $contenders; do stats < "$d/$c.raw" > "$d/$c.txt"; done
[ $have_pgbench = 1 ] || echo "missing missing missing" > "$d/ceiling.txt"
[ $have_py = 1 ] || echo "missing missing missing" > "$d/psycopg2.txt"
[ $have_graphile = 1 ] || echo "missing missing missing" > "$d/graphile.txt"
[ $have_pgboss = 1 ] || echo "missing missing missing" > "$d/pgboss.txt"

# idle latency: commit -> claim (ms), LAT samples after a warm-up
$bc latency 20 >/dev/null 2>&1 || true
$bc latency "$LAT" > "$d/latency.txt" 2>/dev/null || echo "missing missing missing" > "$d/latency.txt"

# end to end: load + claim + process
e2e_runs() { $bc e2e "$E" "$W" "$EB" >/dev/null 2>&1 || true  # warm-up
    i=0; while [ $i -lt "$RUNS" ]; do $bc e2e "$E" "$W" "$EB" 2>/dev/null | awk '{ print $1 }'; i=$((i + 1)); done; }
e2e_runs | stats > "$d/e2e.txt"

# ---- table ---------------------------------------------------------------------
read -r pm pmin pmax < "$d/pgpipe.txt"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "missing" || b == "missing" || b == 0) print "missing"; else printf "%.2f\n", a / b }'; }
tab=$d/table.txt
{
    printf '%s cluster (%s): %s pending, %s workers, batch %s, %s s per run, median of %s interleaved rounds\n' \
        "$CL" "$([ "$CL" = durable ] && echo 'fsync on, synchronous_commit on' || echo 'fsync off, synchronous_commit off')" \
        "$N" "$W" "$B" "$S" "$RUNS"
    printf '| component | workload | pgpipe | peer | ratio |\n|---|---|---|---|---|\n'
} > "$tab"
line() { # workload metric peer peer-file
    read -r v vmin vmax < "$4"
    rr=$(ratio "$pm" "$v")
    printf '| claim | %s (%s) | %s %s (min %s, max %s) | %s %s (min %s, max %s) | %s |\n' \
        "$1" "$CL" "$pm" "$2" "$pmin" "$pmax" "$3" "$v" "$vmin" "$vmax" "$rr" >> "$tab"
    echo "bench: component=claim workload=$1 metric=$2 pgpipe=$pm peer=$3 peer_value=$v ratio=$rr cluster=$CL" >> "$res"
}
wl="1M-pending-w${W}-b${B}"
[ "$N" = 1000000 ] || wl="${N}-pending-w${W}-b${B}"
line "$wl" events/s psycopg2 "$d/psycopg2.txt"
line "jobs-w${W}-b${B}" events/s graphile-worker "$d/graphile.txt"
line "jobs-w${W}-b${B}" events/s pg-boss "$d/pgboss.txt"
line "$wl" events/s ceiling "$d/ceiling.txt"
if [ "${CLAIM_BENCH_PROBES:-1}" = 1 ]; then
    read -r cv cmin cmax < "$d/ceiling.txt"
    for p in rangeread bulkflag; do
        read -r v vmin vmax < "$d/$p.txt"
        case $p in
            rangeread) what="probe: range claim's read path (cursor + batch row + PK range read), rows/s" ;;
            *) what="probe: processed = true in bulk, 10 id ranges of pending rows, rows/s" ;;
        esac
        printf '| claim | %s (%s) | %s (min %s, max %s) | ceiling %s | %s |\n' \
            "$what" "$CL" "$v" "$vmin" "$vmax" "$cv" "$(ratio "$v" "$cv")" >> "$tab"
        echo "bench: component=claim workload=probe-$p metric=rows/s pgpipe=$v peer=ceiling peer_value=$cv ratio=$(ratio "$v" "$cv") cluster=$CL" >> "$res"
    done
fi
read -r l50 l99 lmax < "$d/latency.txt"
printf '| claim | idle commit->claim (%s) | p50 %s ms, p99 %s ms, max %s ms | target p99 < 50 ms | %s |\n' \
    "$CL" "$l50" "$l99" "$lmax" "$(ratio 50 "$l99")" >> "$tab"
echo "bench: component=claim workload=idle-notify metric=p99_ms pgpipe=$l99 peer=target peer_value=50 ratio=$(ratio 50 "$l99") cluster=$CL" >> "$res"
read -r e2e e2emin e2emax < "$d/e2e.txt"
printf '| claim | end to end (loader + claim + process), %s events, batch %s (%s) | %s events/s (min %s, max %s) | target 100000 | %s |\n' \
    "$E" "$EB" "$CL" "$e2e" "$e2emin" "$e2emax" "$(ratio "$e2e" 100000)" >> "$tab"
echo "bench: component=claim workload=e2e metric=events/s pgpipe=$e2e peer=target peer_value=100000 ratio=$(ratio "$e2e" 100000) cluster=$CL" >> "$res"
echo >> "$tab"
