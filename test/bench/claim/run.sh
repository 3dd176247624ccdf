#!/bin/sh
# make bench-claim: the SKIP LOCKED claimer against
#   - pgbench running the bare claim-and-complete statement pgpipe runs (the
#     ceiling: one statement per batch, prepared, no handler, autocommit),
#   - the source articles' Python pattern (psycopg2: BEGIN; SELECT ... FOR
#     UPDATE SKIP LOCKED LIMIT n; UPDATE ... SET processed = true; COMMIT),
#   - graphile-worker and pg-boss (npm, installed into build/bench/npm),
# all with the same worker count and batch size, on 1M pending events in
# staging.raw_events (INSERT ... SELECT generate_series, VACUUM ANALYZE before
# each contender). Each figure: median of 5 timed runs after a warm-up run.
# Also: idle-worker latency from commit (+ NOTIFY) to claim, and end to end
# (pgpipe's loader fed NDJSON, 10K-row batches with one NOTIFY each, while the workers claim).
#   sh test/bench/claim/run.sh
# The cluster has the fast test settings (fsync and synchronous_commit off):
# every contender commits once per batch of the same size, so durable commits
# would add the same WAL flush to each and measure the disk, not the claim
# (PGTMP_DURABLE=1 to see that). bench-copy, whose peers differ in how often
# they commit, runs durable.
# Environment: CLAIM_BENCH_N (default 1000000), CLAIM_BENCH_WORKERS (2),
# CLAIM_BENCH_BATCH (100), CLAIM_BENCH_SECS (3 s per run), CLAIM_BENCH_JOBS
# (queued jobs for the npm peers, default 100000: their enqueue is slow),
# CLAIM_BENCH_E2E (events of the end-to-end run, default 300000),
# CLAIM_BENCH_E2E_BATCH (its claim batch, default 1000: no peer runs there,
# so it uses the batch size a deployment would).
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
out=build/bench/claim
mkdir -p "$out"

if [ "${1:-}" != "--inner" ]; then
    # ---- peers -----------------------------------------------------------
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        /usr/bin/python3 -c 'import psycopg2' 2>/dev/null ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y python3-psycopg2 >/dev/null 2>&1 || true
        [ -x /usr/lib/postgresql/15/bin/pgbench ] || command -v pgbench >/dev/null ||
            DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-contrib >/dev/null 2>&1 || true
        command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y npm >/dev/null 2>&1 || true
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
    PGTMP_DURABLE=${PGTMP_DURABLE:-0} exec nice -n 5 sh tool/pgtmp.sh run -- sh "$0" --inner
fi

# ---- inside the throwaway cluster ------------------------------------------
N=${CLAIM_BENCH_N:-1000000}
W=${CLAIM_BENCH_WORKERS:-2}
B=${CLAIM_BENCH_BATCH:-100}
S=${CLAIM_BENCH_SECS:-3}
J=${CLAIM_BENCH_JOBS:-100000}
E=${CLAIM_BENCH_E2E:-300000}
EB=${CLAIM_BENCH_E2E_BATCH:-1000}
RUNS=5
bc=$out/bench_claim
PY=/usr/bin/python3
PGBENCH=$(command -v pgbench || echo /usr/lib/postgresql/15/bin/pgbench)
export NODE_PATH=$top/build/bench/npm/node_modules
res=$out/results.txt
: > "$res"

# median/min/max of the first field of the lines on stdin: "med min max"
stats() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) { print "missing missing missing"; exit }
    printf "%s %s %s\n", v[int((NR + 1) / 2)], v[1], v[NR] }'; }

# run CMD... RUNS+1 times (first is the warm-up); prints events/s per line
repeat() {
    "$@" >/dev/null 2>&1 || true
    i=0
    while [ $i -lt $RUNS ]; do "$@" 2>/dev/null | tail -n 1 | awk '{ print $1 }'; i=$((i + 1)); done
}

echo "claim bench: $N events, $W workers, batch $B, ${S} s per run, median of $RUNS after a warm-up" >&2

# pgpipe
$bc setup "$N"
repeat $bc run "$W" "$B" "$S" | stats > "$out/pgpipe.txt"

# ceiling: the bare claim-and-complete statement under pgbench
cat > "$out/claim.pgbench" <<SQL
WITH c AS (SELECT id, received_at FROM staging.raw_events WHERE NOT processed AND (next_attempt_at IS NULL OR next_attempt_at <= now()) AND (claim_token IS NULL OR lease_expires_at <= now()) ORDER BY received_at, id LIMIT $B FOR UPDATE SKIP LOCKED) UPDATE staging.raw_events r SET processed = true, processed_at = now(), claimed_by = 'pgbench' FROM c WHERE r.id = c.id AND r.received_at = c.received_at RETURNING r.id, r.source, r.event_type, r.payload::text, r.received_at::text, r.attempts + 1;
SQL
pgb() {
    "$PGBENCH" -n -M prepared -c "$W" -j "$W" -T "$S" -f "$out/claim.pgbench" 2>/dev/null |
        awk -v b="$B" '/^tps = / { printf "%.0f\n", $3 * b }'
}
if [ -x "$PGBENCH" ] || command -v "$PGBENCH" >/dev/null 2>&1; then
    $bc setup "$N"
    repeat pgb | stats > "$out/ceiling.txt"
else
    echo "missing missing missing" > "$out/ceiling.txt"
fi

# the articles' Python pattern
if $PY -c 'import psycopg2' 2>/dev/null; then
    $bc setup "$N"
    repeat $PY test/bench/claim/peer_psycopg2.py "$PGPIPE_TEST_DSN" "$W" "$B" "$S" | stats > "$out/python.txt"
else
    echo "missing missing missing" > "$out/python.txt"
fi

# npm peers (their own job tables; J jobs queued afresh before every run)
repeat_npm() { # script
    node "$1" "$W" "$B" "$S" "$J" setup >/dev/null 2>&1 || return 1
    node "$1" "$W" "$B" "$S" "$J" >/dev/null 2>&1 || return 1
    i=0
    while [ $i -lt $RUNS ]; do
        node "$1" "$W" "$B" "$S" "$J" setup >/dev/null 2>&1 || return 1
        node "$1" "$W" "$B" "$S" "$J" 2>/dev/null | tail -n 1 | awk '{ print $1 }'
        i=$((i + 1))
    done
}
for peer in graphile pgboss; do
    case $peer in graphile) mod=graphile-worker ;; *) mod=pg-boss ;; esac
    if [ -d "$NODE_PATH/$mod" ]; then
        repeat_npm "test/bench/claim/peer_$peer.js" > "$out/$peer.raw" || : > "$out/$peer.raw"
        stats < "$out/$peer.raw" > "$out/$peer.txt"
    else
        echo "missing missing missing" > "$out/$peer.txt"
    fi
done

# idle latency: commit -> claim (ms), 200 samples after a warm-up
$bc latency 20 >/dev/null 2>&1 || true
$bc latency 200 > "$out/latency.txt" 2>/dev/null || echo "missing missing missing" > "$out/latency.txt"

# end to end: load + claim + process
e2e_runs() { $bc e2e "$E" "$W" "$EB" >/dev/null 2>&1 || true  # warm-up
    i=0; while [ $i -lt $RUNS ]; do $bc e2e "$E" "$W" "$EB" 2>/dev/null | awk '{ print $1 }'; i=$((i + 1)); done; }
e2e_runs | stats > "$out/e2e.txt"

# ---- table ---------------------------------------------------------------------
read -r pm pmin pmax < "$out/pgpipe.txt"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "missing" || b == "missing" || b == 0) print "missing"; else printf "%.2f\n", a / b }'; }
printf '\n| component | workload | pgpipe | peer | ratio |\n|---|---|---|---|---|\n'
line() { # workload metric peer pgpipe-value peer-file
    read -r v vmin vmax < "$5"
    r=$(ratio "$4" "$v")
    printf '| claim | %s | %s %s | %s %s (min %s, max %s) | %s |\n' "$1" "$4" "$2" "$3" "$v" "$vmin" "$vmax" "$r"
    echo "bench: component=claim workload=$1 metric=$2 pgpipe=$4 peer=$3 peer_value=$v ratio=$r" >> "$res"
}
wl="1M-pending-w${W}-b${B}"
line "$wl" events/s ceiling "$pm" "$out/ceiling.txt"
line "$wl" events/s psycopg2 "$pm" "$out/python.txt"
line "jobs-w${W}-b${B}" events/s graphile-worker "$pm" "$out/graphile.txt"
line "jobs-w${W}-b${B}" events/s pg-boss "$pm" "$out/pgboss.txt"
read -r l50 l99 lmax < "$out/latency.txt"
printf '| claim | idle commit->claim | p50 %s ms, p99 %s ms, max %s ms | target p99 < 50 ms | - |\n' "$l50" "$l99" "$lmax"
echo "bench: component=claim workload=idle-notify metric=p99_ms pgpipe=$l99 peer=target peer_value=50 ratio=$(ratio 50 "$l99")" >> "$res"
read -r e2e e2emin e2emax < "$out/e2e.txt"
printf '| claim | end to end (loader + claim + process), %s events, batch %s | %s events/s (min %s, max %s) | target 50000 | %s |\n' "$E" "$EB" "$e2e" "$e2emin" "$e2emax" "$(ratio "$e2e" 50000)"
echo "bench: component=claim workload=e2e-$E metric=events/s pgpipe=$e2e peer=target peer_value=50000 ratio=$(ratio "$e2e" 50000)" >> "$res"
printf '(pgpipe: min %s, max %s events/s)\n\n' "$pmin" "$pmax"
cat "$res"
