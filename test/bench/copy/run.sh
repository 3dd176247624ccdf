#!/bin/sh
# make bench-copy: the COPY loader against what a user would pick instead, on
# the same 1M-row events file, into the same staging.raw_events (same indexes),
# on a throwaway cluster; TRUNCATE + VACUUM ANALYZE before every run.
#   pgpipe (CSV, every JSON payload validated; its default 2 connections, and
#   1) | psql \copy | row-at-a-time INSERT (libpq, prepared, autocommit; a
#   sample, extrapolated) | 1000-row multi-VALUES INSERT | pgloader |
#   server-side COPY FROM 'file' (ceiling). The peers that can use several
#   connections get pgpipe's 2; \copy and server-side COPY are one stream.
#   pgpipe NDJSON against pgpipe CSV; peak RSS of a ~1 GB NDJSON stream (pipe).
# The cluster is the throwaway one the tests use (fsync and synchronous_commit
# off), the same for every contender. PGTMP_DURABLE=1 keeps PostgreSQL's
# durable defaults instead: then the row-at-a-time peer pays a WAL flush per
# row, and every COPY-based contender converges on what the disk can write.
# The NDJSON file carries the same three fields as the CSV
# ({"source", "event_type", "payload": {...}}), so both load identical rows.
# Env: ROWS (1000000), RUNS (5, after one warm-up), SAMPLE (50000 rows, 5000 when durable, for the
# row-at-a-time INSERT), RSS_BYTES (1073741824), CONTENDERS (a space-separated subset of
# pgpipe_csv pgpipe_csv_1conn psql_copy server_copy pgpipe_ndjson multi_values row_insert
# pgloader; no RSS run then), e.g. the one-connection row on a durable cluster:
#   PGTMP_DURABLE=1 CONTENDERS="pgpipe_csv_1conn psql_copy server_copy" sh test/bench/copy/run.sh
set -eu
top=$(pwd)
B=$top/build/bench/copy
mkdir -p "$B"
ROWS=${ROWS:-1000000}
RUNS=${RUNS:-5}
SAMPLE=${SAMPLE:-$([ "${PGTMP_DURABLE:-0}" = 1 ] && echo 5000 || echo 50000)}
RSS_BYTES=${RSS_BYTES:-1073741824}
export ROWS RUNS SAMPLE RSS_BYTES B top

cc -O2 -std=c11 -Wall -I"$top" $(pkg-config --cflags libpq 2>/dev/null || echo -I$(pg_config --includedir)) \
    "$top/test/bench/copy/bench_copy.c" "$top/pgpipe.c" \
    $(pkg-config --libs libpq 2>/dev/null || echo -lpq) -lpthread -lm -o "$B/bench_copy"

if ! command -v pgloader >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing pgloader (apt-get)..."
    apt-get install -y pgloader >/dev/null 2>&1 || echo "pgloader could not be installed"
fi

if [ ! -s "$B/events-$ROWS.csv" ] || [ ! -s "$B/events-$ROWS-v2.ndjson" ]; then
    echo "generating $ROWS events (fixed seed)..."
    "$B/bench_copy" gen-csv "$B/events-$ROWS.csv" "$ROWS"
    "$B/bench_copy" gen-ndjson "$B/events-$ROWS-v2.ndjson" "$ROWS"
fi

PGTMP_DURABLE=${PGTMP_DURABLE:-0} exec sh "$top/tool/pgtmp.sh" run -- sh "$top/test/bench/copy/inner.sh"
