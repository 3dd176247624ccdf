#!/bin/sh
# make bench-http: the HTTP ingest server (`pgpipe CONNINFO '.serve ...'`)
# against the stacks its users would write instead, all taking
# POST /v1/events/{source} into the same staging.raw_events (source,
# event_type, payload jsonb) of the same throwaway cluster:
#   fastapi-insert   FastAPI + uvicorn (2 workers) + asyncpg pool, one INSERT
#                    per request
#   fastapi-batch    the same, requests batched for 2 ms (or 5000 rows) into
#                    one executemany per transaction
#   fastify-insert   fastify (node:cluster, 2 processes) + pg.Pool, one INSERT
#                    per request
#   fastify-batch    the same, batched into one INSERT ... SELECT FROM unnest()
# wrk posts single-event and 100-event NDJSON bodies over 64 and 256
# keep-alive connections; each contender's peak is the better of the two.
# 100-event bodies are compared with the loader's own COPY rate (`.load` of
# the same events, the rate it reports). Latency (p50/p99 from request sent to 202 received) is
# taken at half of each contender's own peak: wrk has no constant-rate mode
# (Debian has no wrk2), so post.lua makes every connection wait a fixed delay
# after each answer, with the connection count set from the rate wanted.
# Finally pgpipe's RSS is sampled every second under load for SOAK_SECONDS.
# Contenders run interleaved (every contender once per round; round 0 is the
# warm-up), the table emptied and checkpointed before each run; figures are
# medians of RUNS rounds (min and max beside them).
#   sh test/bench/http/run.sh
# Environment: HTTP_BENCH_SECS (seconds per wrk run, 5), RUNS (5),
# SOAK_SECONDS (20; 600 for the real soak), PGTMP_DURABLE (1: fsync and
# synchronous_commit on, as in production; 0 for the fast cluster),
# HTTP_BENCH_LOAD_EVENTS (events of the loader run, 200000), SKIP_DEPS=1.
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
out=build/bench/http
mkdir -p "$out"

if [ "${1:-}" != "--inner" ]; then
    # the peers (Debian packages, npm into build/bench/http/npm); a peer that
    # cannot be had is reported missing below
    [ "${SKIP_DEPS:-0}" = 1 ] || sh tool/deps.sh --bench-http --quiet || true
    make -s build/pgpipe
    PGTMP_DURABLE=${PGTMP_DURABLE:-1} exec nice -n 5 sh tool/pgtmp.sh run -- sh "$0" --inner
fi

# ---- inside the throwaway cluster ------------------------------------------
S=${HTTP_BENCH_SECS:-5}
RUNS=${RUNS:-5}
SOAK=${SOAK_SECONDS:-20}
LOADN=${HTTP_BENCH_LOAD_EVENTS:-200000}
P=$top/build/pgpipe
D=$PGPIPE_TEST_DSN
PY=/usr/bin/python3
here=$top/test/bench/http
export NODE_PATH=$top/build/bench/http/npm/node_modules
res=$out/results.txt
raw=$out/raw.txt
: >"$raw"
pids=""
cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 1' INT TERM
psql -qX -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" >/dev/null
"$P" "$D" ".install" >/dev/null

freeport() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# waitport PORT PID NAME: up to 60 s for GET /healthz to answer
waitport() {
    i=0
    until curl -fsS -o /dev/null "http://127.0.0.1:$1/healthz" 2>/dev/null; do
        kill -0 "$2" 2>/dev/null || { echo "$3: exited before serving" >&2; return 1; }
        i=$((i + 1)); [ $i -gt 600 ] && { echo "$3: not serving after 60 s" >&2; return 1; }
        sleep 0.1
    done
}

# ---- the bodies --------------------------------------------------------------
"$PY" - "$out" "$LOADN" <<'PY'
import json, random, sys
out, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(21)
def ev(i):
    return json.dumps({"event_type": rnd.choice(["page_view", "click", "purchase", "signup"]),
                       "id": i, "user_id": "u%06d" % rnd.randrange(1000000),
                       "path": "/products/%d" % rnd.randrange(10000),
                       "amount": round(rnd.random() * 100, 2), "ts": "2026-01-01T00:00:00Z"},
                      separators=(",", ":"))
open(out + "/body1.ndjson", "w").write(ev(0) + "\n")
lines = [ev(i) for i in range(100)]
open(out + "/body100.ndjson", "w").write("\n".join(lines) + "\n")
with open(out + "/load.ndjson", "w") as f:
    for r in range(n // 100):
        f.write("\n".join(lines) + "\n")
PY

# ---- the contenders: all serving at once, taking turns under load -----------
port_pgpipe=""; pid_pgpipe=""
start_pgpipe() {
    rm -f "$out/pgpipe.port"
    "$P" "$D" ".serve --listen 127.0.0.1:0 --port-file $out/pgpipe.port" 2>"$out/pgpipe.log" &
    pid_pgpipe=$!; pids="$pids $pid_pgpipe"
    i=0
    while [ ! -s "$out/pgpipe.port" ]; do
        kill -0 "$pid_pgpipe" 2>/dev/null || { echo "pgpipe .serve: $(tail -n 3 "$out/pgpipe.log")" >&2; return 1; }
        i=$((i + 1)); [ $i -gt 300 ] && { echo "pgpipe .serve: no port after 30 s" >&2; return 1; }
        sleep 0.1
    done
    port_pgpipe=$(cat "$out/pgpipe.port")
    waitport "$port_pgpipe" "$pid_pgpipe" pgpipe
}
start_fastapi() { # mode
    port=$(freeport)
    PEER_MODE=$1 "$PY" -m uvicorn peer_fastapi:app --app-dir "$here" --host 127.0.0.1 \
        --port "$port" --workers 2 --no-access-log --log-level warning >"$out/fastapi-$1.log" 2>&1 &
    pid=$!; pids="$pids $pid"
    waitport "$port" "$pid" "fastapi-$1" && eval "port_fastapi_$1=$port"
}
start_fastify() { # mode
    port=$(freeport)
    PEER_MODE=$1 PEER_PORT=$port node "$here/peer_fastify.js" >"$out/fastify-$1.log" 2>&1 &
    pid=$!; pids="$pids $pid"
    waitport "$port" "$pid" "fastify-$1" && eval "port_fastify_$1=$port"
}
contenders=""
start_pgpipe && contenders="pgpipe"
if "$PY" -c 'import fastapi, uvicorn, asyncpg' 2>/dev/null; then
    for m in insert batch; do start_fastapi $m && contenders="$contenders fastapi-$m" || true; done
else
    echo "fastapi peers missing: /usr/bin/python3 lacks fastapi, uvicorn or asyncpg (sh tool/deps.sh --bench-http)" >&2
fi
if command -v node >/dev/null && [ -d "$NODE_PATH/fastify" ] && [ -d "$NODE_PATH/pg" ]; then
    for m in insert batch; do start_fastify $m && contenders="$contenders fastify-$m" || true; done
else
    echo "fastify peers missing: node, or fastify and pg in $NODE_PATH (sh tool/deps.sh --bench-http)" >&2
fi
portof() { case $1 in pgpipe) echo "$port_pgpipe" ;; fastapi-insert) echo "$port_fastapi_insert" ;;
    fastapi-batch) echo "$port_fastapi_batch" ;; fastify-insert) echo "$port_fastify_insert" ;;
    fastify-batch) echo "$port_fastify_batch" ;; esac; }
echo "http bench: ${S} s per wrk run, median of $RUNS rounds after a warm-up; contenders:$contenders;" \
     "PGTMP_DURABLE=${PGTMP_DURABLE:-1}; $(nproc) cores" >&2

reset_table() {
    psql -qX -c "TRUNCATE staging.raw_events" -c "CHECKPOINT" >/dev/null 2>&1 || true
}
# wrkrun NAME BODY CONNS [DELAY_MS]: one wrk run; prints its result line
wrkrun() {
    per=1; [ "$2" = body100 ] && per=100
    reset_table
    WRK_EVENTS_PER_BODY=$per WRK_DELAY_MS=${4:-} wrk -t1 -c"$3" -d"${S}s" --timeout 10s \
        -s "$here/post.lua" "http://127.0.0.1:$(portof "$1")/v1/events/bench" -- "$out/$2.ndjson" 2>&1 |
        grep '^result ' || echo "result failed"
}
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
# a run that lost requests or got errors is reported, and its figure kept out
record() { # round key line
    line=$3
    case "$line" in *failed*) echo "  round $1 $2: wrk failed" >&2; return ;; esac
    n5=$(echo "$line" | field non2xx); ne=$(echo "$line" | field errors)
    echo "  round $1 $2: $(echo "$line" | sed 's/^result //')" >&2
    [ "$1" -gt 0 ] || return 0
    if [ "$n5" != 0 ] || [ "$ne" != 0 ]; then echo "  ($2: $n5 non-2xx, $ne socket errors: not counted)" >&2; return; fi
    echo "$2 $(echo "$line" | field events_per_s) $(echo "$line" | field p50_ms) $(echo "$line" | field p99_ms)" >>"$raw"
}
loadrun() { # round: its own load key (a key loaded before would be skipped)
    reset_table
    "$P" "$D" ".load $out/load.ndjson --name loader --key loader-$1-$$" >"$out/load.out" 2>&1 || { echo "result failed"; return; }
    # the loader's own rate (its summary line: "..., N rows/s")
    rate=$(sed -n 's/.* \([0-9][0-9]*\) rows\/s.*/\1/p' "$out/load.out" | tail -n 1)
    [ -n "$rate" ] || { echo "result failed"; return; }
    echo "result non2xx=0 errors=0 events_per_s=$rate p50_ms=0 p99_ms=0"
}

# ---- peaks: 1-event and 100-event bodies, 64 and 256 connections --------------
r=0
while [ $r -le "$RUNS" ]; do
    for c in $contenders; do
        for n in 64 256; do record $r "$c:1:$n" "$(wrkrun "$c" body1 $n)"; done
    done
    case " $contenders " in *" pgpipe "*)
        for n in 64 256; do record $r "pgpipe:100:$n" "$(wrkrun pgpipe body100 $n)"; done ;;
    esac
    record $r "loader:100:1" "$(loadrun $r)"
    r=$((r + 1))
done

# median min max of column COL of the raw lines with KEY
stats() { # key col
    awk -v k="$1" -v c="$2" '$1 == k { print $c }' "$raw" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "missing missing missing"; exit }
            printf "%s %s %s\n", v[int((NR + 1) / 2)], v[1], v[NR] }'
}
# peak KIND BODY: the better connection count's median; "value min max conns"
peak() {
    best="missing missing missing"; bc=""
    for n in 64 256; do
        s=$(stats "$1:$2:$n" 2)
        set -- "$1" "$2" $s
        if [ "$3" != missing ] && { [ "$best" = "missing missing missing" ] ||
            awk -v a="$3" -v b="${best%% *}" 'BEGIN { exit !(a > b) }'; }; then
            best="$3 $4 $5"; bc=$n
        fi
        set -- "$1" "$2"
    done
    echo "$best $bc"
}

# ---- latency at half of each contender's own peak (1-event bodies) -------------
# Each connection waits 20 ms after each answer, so the rate is about
# conns x 1000 / (20 + latency): the first guess takes latency as 1 ms, and
# after every round the connection count is scaled by wanted / reached (round
# 0, the warm-up, calibrates). The rate reached is printed beside the latency.
r=0
while [ $r -le "$RUNS" ]; do
    for c in $contenders; do
        set -- $(peak "$c" 1)
        [ "$1" != missing ] || continue
        want=$(awk -v p="$1" 'BEGIN { print p / 2 }')
        [ -s "$out/half-$c.conns" ] && [ $r -gt 0 ] ||
            awk -v w="$want" 'BEGIN { c = int(w * 21 / 1000 + 0.5); print (c < 2 ? 2 : c) }' >"$out/half-$c.conns"
        conns=$(cat "$out/half-$c.conns")
        line=$(wrkrun "$c" body1 "$conns" 20)
        record $r "$c:half" "$line"
        got=$(echo "$line" | field events_per_s)
        [ -z "$got" ] || awk -v c="$conns" -v w="$want" -v g="$got" 'BEGIN { if (g > 0) c = int(c * w / g + 0.5)
            if (c < 2) c = 2; if (c > 4000) c = 4000; print c }' >"$out/half-$c.conns"
    done
    r=$((r + 1))
done

# ---- soak: pgpipe's RSS under load -------------------------------------------------
rss_start=missing; rss_end=missing; rss_max=missing
case " $contenders " in *" pgpipe "*) soak=$SOAK ;; *) soak=0 ;; esac
if [ "$soak" -gt 0 ]; then
    rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$pid_pgpipe/status" 2>/dev/null || echo 0; }
    reset_table
    WRK_EVENTS_PER_BODY=1 wrk -t1 -c64 -d"${SOAK}s" --timeout 10s -s "$here/post.lua" \
        "http://127.0.0.1:$port_pgpipe/v1/events/soak" -- "$out/body1.ndjson" >"$out/soak.wrk" 2>&1 &
    wpid=$!
    : >"$out/soak.rss"
    while kill -0 $wpid 2>/dev/null; do rss >>"$out/soak.rss"; sleep 1; done
    wait $wpid || true
    rss_start=$(awk 'NR == 2 { print int($1 / 1024) }' "$out/soak.rss")  # after the first second
    [ -n "$rss_start" ] || rss_start=missing
    rss_end=$(tail -n 1 "$out/soak.rss" | awk '{ print int($1 / 1024) }')
    rss_max=$(sort -n "$out/soak.rss" | tail -n 1 | awk '{ print int($1 / 1024) }')
    echo "soak ${SOAK} s: $(grep '^result' "$out/soak.wrk" | sed 's/^result //')" >&2
fi

# ---- table and bench: lines -----------------------------------------------------------
: >"$res"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "missing" || b == "missing" || b == 0) print "missing"; else printf "%.2f\n", a / b }'; }
set -- $(peak pgpipe 1); pg1=$1
printf '\n| component | workload | contender | events/s (min, max) | conns | p50 / p99 ms at half peak | ratio pgpipe/contender |\n|---|---|---|---|---|---|---|\n'
for c in pgpipe fastapi-insert fastapi-batch fastify-insert fastify-batch; do
    set -- $(peak "$c" 1)
    v=$1; lo=$2; hi=$3; cn=${4:-}
    set -- $(stats "$c:half" 2); hr=$1
    set -- $(stats "$c:half" 3); p50=$1
    set -- $(stats "$c:half" 4); p99=$1
    lat="$p50 / $p99 (at $hr events/s)"
    [ "$c" != pgpipe ] || pg99=$p99
    if [ "$v" = missing ]; then
        printf '| http | 1-event | %s | missing | | | missing |\n' "$c"
    else
        printf '| http | 1-event | %s | %s (%s, %s) | %s | %s | %s |\n' "$c" "$v" "$lo" "$hi" "$cn" "$lat" "$(ratio "$pg1" "$v")"
    fi
    [ "$c" = pgpipe ] || echo "bench: component=http workload=1-event metric=events/s pgpipe=$pg1 peer=$c peer_value=$v ratio=$(ratio "$pg1" "$v")" >>"$res"
done
echo "bench: component=http workload=1-event metric=events/s pgpipe=$pg1 peer=target peer_value=30000 ratio=$(ratio "$pg1" 30000)" >>"$res"
set -- $(peak pgpipe 100); pg100=$1; lo=$2; hi=$3; cn=${4:-}
set -- $(stats loader:100:1 2); ld=$1
if [ "$pg100" = missing ]; then
    printf '| http | 100-event | pgpipe | missing | | | |\n'
else
    printf '| http | 100-event | pgpipe | %s (%s, %s) | %s | | |\n' "$pg100" "$lo" "$hi" "$cn"
fi
printf '| http | 100-event | loader (.load, COPY) | %s (%s, %s) | | | %s |\n' "$ld" "$2" "$3" "$(ratio "$pg100" "$ld")"
echo "bench: component=http workload=100-event metric=events/s pgpipe=$pg100 peer=loader peer_value=$ld ratio=$(ratio "$pg100" "$ld")" >>"$res"
echo "bench: component=http workload=1-event-half-load metric=p99_ack_ms pgpipe=${pg99:-missing} peer=target peer_value=50 ratio=$(ratio 50 "${pg99:-missing}")" >>"$res"
printf '| http | soak %s s, 1-event, 64 conns | pgpipe RSS MB | start %s, end %s, max %s | | | |\n' "$SOAK" "$rss_start" "$rss_end" "$rss_max"
echo "bench: component=http workload=soak-${SOAK}s metric=rss_MB pgpipe=$rss_end peer=start peer_value=$rss_start ratio=$(ratio "$rss_start" "$rss_end")" >>"$res"
echo
cat "$res"
