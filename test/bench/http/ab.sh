#!/bin/sh
# A/B of two pgpipe binaries on the HTTP ingest 1-event workload, interleaved
# round by round (order rotated), with CPU per request of the server and of
# the PostgreSQL cluster (postmaster's children, /proc ticks).
#   PGTMP_DURABLE=1 sh tool/pgtmp.sh run -- sh test/bench/http/ab.sh BIN_A BIN_B
# (or with PGPIPE_TEST_DSN and PGHOST... of a cluster already running).
# Each run starts the server afresh on an emptied, checkpointed table, warms
# it with one request, then runs wrk; a line per run: label conns round
# events/s server_us_per_request pg_us_per_request rows groups errors
# (CPU from utime + stime in /proc: the server's process, and the
# postmaster's children, live and reaped, so WAL writer, checkpointer and
# autovacuum count too). Then medians (min-max) per label and connection
# count. The two binaries see the same cluster, in alternating order.
# Environment: S (seconds per wrk run, 5), RUNS (5), CONNS ("64 256"),
# ARGS_A, ARGS_B (more .serve options of each), BODY (body file, default a 1-event NDJSON line), OUT (results directory).
set -eu
A=$1; B=$2
here=$(cd "$(dirname "$0")" && pwd)
S=${S:-5}; RUNS=${RUNS:-5}; CONNS=${CONNS:-"64 256"}
out=${OUT:-/tmp/httpab}; mkdir -p "$out"
D=$PGPIPE_TEST_DSN
body=${BODY:-$out/body1.ndjson}
[ -s "$body" ] || printf '%s\n' '{"event_type":"click","id":0,"user_id":"u123456","path":"/products/1234","amount":12.34,"ts":"2026-01-01T00:00:00Z"}' >"$body"
"$A" "$D" ".install" >/dev/null
pm=$(psql -AtX -c "select pid from pg_stat_activity where backend_type = 'checkpointer'")
pm=$(awk '{print $4}' /proc/$pm/stat)
ticks() { awk '{print $14 + $15}' /proc/$1/stat 2>/dev/null || echo 0; }
pgticks() { # live children + reaped children of the postmaster
    t=$(awk '{print $16 + $17}' /proc/$pm/stat)
    for p in $(cat /proc/$pm/task/$pm/children); do t=$((t + $(ticks $p))); done
    echo $t
}
raw=$out/raw.txt; : >"$raw"
run() { # label bin conns round
    psql -qX -c "TRUNCATE staging.raw_events" -c "CHECKPOINT" >/dev/null
    rm -f "$out/port"
    eval "xa=\${ARGS_$1:-}"
    "$2" "$D" ".serve --listen 127.0.0.1:0 --port-file $out/port $xa" 2>"$out/serve.log" &
    sp=$!
    while [ ! -s "$out/port" ]; do sleep 0.05; done
    port=$(cat "$out/port")
    until curl -fsS -o /dev/null "http://127.0.0.1:$port/healthz"; do sleep 0.05; done
    # warm the committers' connections
    curl -fsS -o /dev/null -H 'Content-Type: application/x-ndjson' --data-binary @"$body" "http://127.0.0.1:$port/v1/events/bench"
    s0=$(ticks $sp); p0=$(pgticks)
    line=$(WRK_EVENTS_PER_BODY=1 wrk -t1 -c"$3" -d"${S}s" --timeout 10s -s "$here/post.lua" \
        "http://127.0.0.1:$port/v1/events/bench" -- "$body" 2>&1 | grep '^result ' || echo "result failed")
    s1=$(ticks $sp); p1=$(pgticks)
    groups=$(curl -fsS "http://127.0.0.1:$port/metrics" | awk '/^pgpipe_http_group_records_count/ {print $2}')
    kill $sp; wait $sp || true
    rows=$(psql -AtX -c "select count(*) from staging.raw_events")
    req=$(echo "$line" | sed -n 's/.*requests=\([0-9]*\).*/\1/p')
    eps=$(echo "$line" | sed -n 's/.*events_per_s=\([0-9]*\).*/\1/p')
    bad=$(echo "$line" | sed -n 's/.*non2xx=\([0-9]*\) errors=\([0-9]*\).*/\1+\2/p')
    # CPU us per request (ticks are 10 ms)
    echo "$1 $3 $4 $eps $(awk -v a=$s0 -v b=$s1 -v n=$rows 'BEGIN{printf "%.2f", (b-a)*10000/n}') $(awk -v a=$p0 -v b=$p1 -v n=$rows 'BEGIN{printf "%.2f", (b-a)*10000/n}') $rows ${groups:-?} $bad" | tee -a "$raw"
}
r=0
while [ $r -lt "$RUNS" ]; do
    for c in $CONNS; do
        if [ $((r % 2)) = 0 ]; then run A "$A" $c $r; run B "$B" $c $r; else run B "$B" $c $r; run A "$A" $c $r; fi
    done
    r=$((r + 1))
done
echo "label conns: median events/s (min-max) | server us/req | pg us/req"
for l in A B; do for c in $CONNS; do
    awk -v l=$l -v c=$c '$1 == l && $2 == c' "$raw" >"$out/sel"
    med() { sort -g | awk '{v[NR]=$1} END {printf "%s (%s-%s)", v[int((NR+1)/2)], v[1], v[NR]}'; }
    echo "$l $c: $(awk '{print $4}' "$out/sel" | med) | $(awk '{print $5}' "$out/sel" | med) | $(awk '{print $6}' "$out/sel" | med)"
done; done
