#!/bin/sh
# `make load-test`: LOAD_EVENTS (10M) NDJSON events through the COPY loader
# while LOAD_WORKERS (4) SKIP LOCKED workers process them (SQL handler: an
# INSERT into loadtest.production), on a throwaway cluster, -O2 build. Samples
# VmRSS of the loader and the worker process every second and reports
# events/s (load, process, end to end), peak RSS, and whether RSS grew after
# warm-up (max of the first 20% of samples against the max of the last 20%,
# skipping the first 10 s). Not part of make test (about 10 minutes here).
#   LOAD_EVENTS=1000000 sh test/load/run.sh
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
B=$top/build/load
mkdir -p "$B"
N=${LOAD_EVENTS:-10000000}
W=${LOAD_WORKERS:-4}
export N W B top

if [ "${1:-}" != "--inner" ]; then
    make -s pgpipe.c pgpipe.h >/dev/null
    ${CC:-cc} -std=c11 -O2 -g -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L \
        $(pkg-config --cflags libpq 2>/dev/null || echo -I"$(pg_config --includedir)") -I. \
        test/load/loadtest.c pgpipe.c \
        $(pkg-config --libs libpq 2>/dev/null || echo -lpq) -lpthread -lm -o "$B/loadtest"
    if [ ! -s "$B/events-$N.ndjson" ]; then
        echo "generating $N events (fixed seed)..."
        "$B/loadtest" gen "$N" "$B/events-$N.ndjson.tmp" && mv "$B/events-$N.ndjson.tmp" "$B/events-$N.ndjson"
    fi
    echo "input: $(wc -c < "$B/events-$N.ndjson") bytes, $N events"
    exec sh tool/pgtmp.sh run -- sh "$0" --inner
fi

# ---- inside the throwaway cluster ---------------------------------------------
export PGOPTIONS="-c client_min_messages=warning"
psql -q -X -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
    -c "CREATE SCHEMA IF NOT EXISTS loadtest" \
    -c "CREATE TABLE loadtest.production (event_id bigint PRIMARY KEY, event_type text, user_id int, amount numeric)" >/dev/null
# the schema first (the loader installs it too, but the workers start before)
"$B/loadtest" load /dev/null >/dev/null
rm -f "$B/load.done" "$B/rss.csv"
t0=$(date +%s.%N)
"$B/loadtest" work "$W" "$B/load.done" >"$B/work.out" 2>"$B/work.err" &
wpid=$!
"$B/loadtest" load "$B/events-$N.ndjson" >"$B/load.out" 2>"$B/load.err" &
lpid=$!
rss() { awk '/^VmRSS/ { print $2 }' /proc/$1/status 2>/dev/null || echo; }
# sampler: one line per second: seconds, loader RSS kB, worker RSS kB
(
    start=$(date +%s)
    while kill -0 $wpid 2>/dev/null; do
        echo "$(( $(date +%s) - start )),$(rss $lpid),$(rss $wpid)" >>"$B/rss.csv"
        sleep 1
    done
) &
spid=$!
lrc=0; wait $lpid || lrc=$?
t_load=$(date +%s.%N)
touch "$B/load.done"
wrc=0; wait $wpid || wrc=$?
t_end=$(date +%s.%N)
wait $spid 2>/dev/null || true
cat "$B/load.out" "$B/work.out"
[ -s "$B/load.err" ] && { echo "loader stderr:"; tail -n 5 "$B/load.err"; }
[ -s "$B/work.err" ] && { echo "worker stderr:"; tail -n 5 "$B/work.err"; }
prod=$(psql -X -At -c "SELECT count(*) FROM loadtest.production")
pending=$(psql -X -At -c "SELECT count(*) FROM staging.raw_events WHERE NOT processed")
dlq=$(psql -X -At -c "SELECT count(*) FROM pgpipe.dead_letters")
awk -F, -v n="$N" -v t0="$t0" -v tl="$t_load" -v te="$t_end" -v prod="$prod" -v pending="$pending" \
    -v dlq="$dlq" -v lrc="$lrc" -v wrc="$wrc" '
{ s[NR] = $1; l[NR] = $2; w[NR] = $3 }
END {
    load_s = tl - t0; e2e_s = te - t0
    printf "events %d: loaded in %.1f s (%.0f events/s), processed end to end in %.1f s (%.0f events/s)\n", n, load_s, n / load_s, e2e_s, n / e2e_s
    printf "production rows %d, still pending %d, dead letters %d, loader exit %d, workers exit %d\n", prod, pending, dlq, lrc, wrc
    # loader samples: while it ran; worker samples: all
    nl = 0; for (i = 1; i <= NR; i++) if (l[i] != "") { nl++; L[nl] = l[i] }
    nw = NR; pl = 0; pw = 0
    for (i = 1; i <= nl; i++) if (L[i] + 0 > pl) pl = L[i] + 0
    for (i = 1; i <= nw; i++) if (w[i] + 0 > pw) pw = w[i] + 0
    printf "RSS samples: loader %d, workers %d (every second or so, over %d s)\n", nl, nw, s[NR]
    printf "peak RSS: loader %.1f MB, worker process (%s threads) %.1f MB\n", pl / 1024, ENVIRON["W"], pw / 1024
    verdict("loader", L, nl); verdict("workers", w, nw)
}
function verdict(name, a, n,    k, skip, m1, m2, i, lo, hi) {
    skip = 10; if (n - skip < 10) { printf "%s: too few samples for a verdict\n", name; return }
    k = int((n - skip) / 5); if (k < 1) k = 1
    m1 = 0; m2 = 0
    for (i = skip + 1; i <= skip + k; i++) if (a[i] + 0 > m1) m1 = a[i] + 0
    for (i = n - k + 1; i <= n; i++) if (a[i] + 0 > m2) m2 = a[i] + 0
    printf "%s RSS after warm-up: max of the first 20%% %.1f MB, max of the last 20%% %.1f MB: %s\n", name, m1 / 1024, m2 / 1024, (m2 <= m1 * 1.10 + 1024) ? "steady (no growth)" : "GREW"
}' "$B/rss.csv" | tee "$B/summary.txt"
[ "$lrc" = 0 ] && [ "$wrc" = 0 ] && [ "$pending" = 0 ] && [ "$prod" = "$N" ]
