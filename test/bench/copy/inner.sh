#!/bin/sh
# Runs inside `pgtmp.sh run` (PG* variables point at the throwaway cluster).
set -eu
CSV=$B/events-$ROWS.csv
NDJSON=$B/events-$ROWS-v2.ndjson
RES=$B/results.txt
: >"$RES"

psql -qX -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" >/dev/null
# the built-in schema (the loader installs it; a tiny load does it here)
printf '{"source":"s","event_type":"warm","payload":{}}\n' >"$B/one.ndjson"
"$B/bench_copy" pgpipe "$B/one.ndjson" >/dev/null

# the server reads the ceiling's file itself: put a copy where it may read it
SRVCSV=$PGPIPE_TEST_PGDIR/events.csv
cp "$CSV" "$SRVCSV"
chmod 644 "$SRVCSV"

reset_table() {
    psql -qX -v ON_ERROR_STOP=1 -c "TRUNCATE staging.raw_events" \
        -c "VACUUM ANALYZE staging.raw_events" >/dev/null 2>&1
}

now() { date +%s.%N; }

# CONTENDERS="pgpipe_csv_1conn psql_copy server_copy" runs only those (a quick
# interleaved A/B of one row of the table); default: all of them
CONTENDERS=${CONTENDERS:-}

# once NAME ROWS ROUND CMD...: one timed run; rows/s into $RES unless the warm-up
once() {
    name=$1; rows=$2; round=$3; shift 3
    if [ -n "$CONTENDERS" ]; then
        case " $CONTENDERS " in *" $name "*) ;; *) return 0 ;; esac
    fi
    grep -q "^$name missing" "$RES" && return 0
    reset_table
    t0=$(now)
    if ! "$@" >"$B/$name.out" 2>&1; then
        echo "$name: failed: $(tail -n 3 "$B/$name.out")" >&2
        echo "$name missing" >>"$RES"
        return 0
    fi
    t1=$(now)
    got=$(psql -qtAX -c "SELECT count(*) FROM staging.raw_events")
    [ "$got" = "$rows" ] || echo "$name: loaded $got rows, expected $rows" >&2
    rate=$(echo "$t0 $t1 $rows" | awk '{ printf "%.0f", $3 / ($2 - $1) }')
    [ "$round" -gt 0 ] && echo "$name $rate" >>"$RES"
    echo "  round $round $name: $rate rows/s" >&2
}

if command -v pgloader >/dev/null 2>&1; then
    cat >"$B/pgloader.load" <<EOF
LOAD CSV
     FROM '$CSV' (source, event_type, payload)
     INTO postgresql://$PGUSER@unix:$PGHOST:$PGPORT/$PGDATABASE
     TARGET TABLE staging.raw_events
     TARGET COLUMNS (source, event_type, payload)
     WITH skip header = 1,
          fields optionally enclosed by '"',
          fields escaped by double-quote,
          fields terminated by ',',
          batch rows = 10000,
          workers = 2, concurrency = 2
;
EOF
else
    echo "pgloader missing" >>"$RES"
fi

# The machine is shared: contenders take turns, one run each per round (round
# 0 is the warm-up), so a busy minute hits all of them alike.
r=0
while [ $r -le "$RUNS" ]; do
    once pgpipe_csv "$ROWS" $r "$B/bench_copy" pgpipe "$CSV"
    once pgpipe_csv_1conn "$ROWS" $r "$B/bench_copy" pgpipe "$CSV" 1
    once psql_copy "$ROWS" $r psql -qX -v ON_ERROR_STOP=1 -c \
        "\\copy staging.raw_events (source, event_type, payload) FROM '$CSV' WITH (FORMAT csv, HEADER true)"
    once server_copy "$ROWS" $r psql -qX -v ON_ERROR_STOP=1 -c \
        "COPY staging.raw_events (source, event_type, payload) FROM '$SRVCSV' WITH (FORMAT csv, HEADER true)"
    once pgpipe_ndjson "$ROWS" $r "$B/bench_copy" pgpipe "$NDJSON"
    # the INSERT peers get pgpipe's connection count (2)
    once multi_values "$ROWS" $r "$B/bench_copy" multi "$CSV" 1000 2
    once row_insert "$SAMPLE" $r "$B/bench_copy" insert "$CSV" "$SAMPLE" 2
    command -v pgloader >/dev/null 2>&1 && once pgloader "$ROWS" $r pgloader "$B/pgloader.load"
    r=$((r + 1))
done

# peak RSS while streaming ~1 GB of NDJSON through a pipe (not in a CONTENDERS run)
if [ -z "$CONTENDERS" ]; then
    reset_table
    "$B/bench_copy" gen-ndjson - "$RSS_BYTES" | "$B/bench_copy" pgpipe-stdin >"$B/rss.out" 2>&1 || true
    cat "$B/rss.out" >&2
    rss=$(sed -n 's/.*rss_kb=\([0-9]*\).*/\1/p' "$B/rss.out")
    bytes=$(sed -n 's/.*bytes=\([0-9]*\).*/\1/p' "$B/rss.out")
    echo "rss_kb ${rss:-missing} ${bytes:-0}" >>"$RES"
    reset_table
fi

# ---- the table -----------------------------------------------------------------
cluster=$([ "${PGTMP_DURABLE:-0}" = 1 ] && echo durable || echo fast)
awk -v runs="$RUNS" -v rows="$ROWS" -v sample="$SAMPLE" -v cluster="$cluster" '
function median(name,   n, i, j, t, a) {
    n = cnt[name]
    for (i = 1; i <= n; i++) a[i] = v[name, i]
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    lo[name] = a[1]; hi[name] = a[n]
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
$2 == "missing" { miss[$1] = 1; next }
$1 == "rss_kb" { rss = $2; rssbytes = $3; next }
{ cnt[$1]++; v[$1, cnt[$1]] = $2 + 0 }
END {
    for (k in cnt) med[k] = median(k)
    p = med["pgpipe_csv"]
    printf "%-6s | %-42s | %14s | %-30s | %s\n", "component", "workload", "pgpipe", "peer", "ratio"
    line("1M events CSV (JSON validated) rows/s", p, "psql_copy", "psql \\copy", 0)
    line("same, pgpipe on 1 connection", med["pgpipe_csv_1conn"], "psql_copy", "psql \\copy", 0)
    line("1M events CSV rows/s", p, "row_insert", "row-at-a-time INSERT, 2 conns (" sample "-row sample)", 0)
    line("1M events CSV rows/s", p, "multi_values", "1000-row multi-VALUES INSERT, 2 conns", 0)
    line("1M events CSV rows/s", p, "pgloader", "pgloader", 0)
    line("1M events CSV rows/s", p, "server_copy", "server-side COPY FROM file", 1)
    line("same, pgpipe on 1 connection", med["pgpipe_csv_1conn"], "server_copy", "server-side COPY FROM file", 1)
    line("1M events NDJSON vs CSV rows/s", med["pgpipe_ndjson"], "pgpipe_csv", "pgpipe CSV", 0)
    if (rss != "") printf "copy   | %-42s | %11s MB | %-30s | %s\n", "peak RSS, " int(rssbytes / 1048576) " MB NDJSON from a pipe", int(rss / 1024), "target < 32 MB", (rss && rss < 32768) ? "ok" : "over"
    printf "pgpipe CSV runs: min %d median %d max %d rows/s; NDJSON: min %d median %d max %d\n", lo["pgpipe_csv"], p, hi["pgpipe_csv"], lo["pgpipe_ndjson"], med["pgpipe_ndjson"], hi["pgpipe_ndjson"]
    for (k in cnt) if (k != "pgpipe_csv" && k != "pgpipe_ndjson") printf "  %s: min %d median %d max %d rows/s\n", k, lo[k], med[k], hi[k]
    printf "\n"
    mline("csv_vs_psql_copy", p, "psql_copy", "psql_copy", 0)
    mline("csv_vs_row_insert", p, "row_insert", "row_insert", 0)
    mline("csv_vs_multi_values", p, "multi_values", "multi_values_1000", 0)
    mline("csv_vs_pgloader", p, "pgloader", "pgloader", 0)
    mline("csv_vs_server_copy", p, "server_copy", "ceiling", 0)
    mline("csv_1conn_vs_psql_copy", med["pgpipe_csv_1conn"], "psql_copy", "psql_copy", 0)
    mline("csv_1conn_vs_server_copy", med["pgpipe_csv_1conn"], "server_copy", "ceiling", 0)
    mline("ndjson_vs_csv", med["pgpipe_ndjson"], "pgpipe_csv", "pgpipe_csv", 0)
    # the names of issue 27: the one-connection row against psql and the server
    wl = "events-" (rows >= 1000000 && rows % 1000000 == 0 ? rows / 1000000 "M" : rows) "-csv-1conn"
    mline(wl, med["pgpipe_csv_1conn"], "psql_copy", "psql", 0)
    mline(wl, med["pgpipe_csv_1conn"], "server_copy", "server-copy", 0)
    if (rss) printf "bench: component=copy workload=ndjson_1gb_pipe metric=peak_rss_mb pgpipe=%.1f peer=ceiling peer_value=32 ratio=%.2f\n", rss / 1024, 32 / (rss / 1024)
    else if (rss != "") printf "bench: component=copy workload=ndjson_1gb_pipe metric=peak_rss_mb pgpipe=missing peer=ceiling peer_value=32 ratio=missing\n"
}
function line(w, pv, key, label, ceil) {
    if (!pv) { printf "copy   | %-42s | %14s | %-30s | not run\n", w, "-", label; return }
    if (miss[key] || !cnt[key]) { printf "copy   | %-42s | %14d | %-30s | missing\n", w, pv, label; return }
    printf "copy   | %-42s | %14d | %-30s | %.2f (peer %d)\n", w, pv, label, pv / med[key], med[key]
}
function mline(w, pv, key, peer, x) {
    if (miss[key] || !cnt[key] || !pv) { printf "bench: component=copy workload=%s metric=rows/s pgpipe=%s peer=%s peer_value=%s ratio=missing cluster=%s\n", w, pv ? pv : "missing", peer, cnt[key] ? med[key] : "missing", cluster; return }
    printf "bench: component=copy workload=%s metric=rows/s pgpipe=%d peer=%s peer_value=%d ratio=%.2f cluster=%s\n", w, pv, peer, med[key], pv / med[key], cluster
}' "$RES"
