#!/bin/sh
# make bench-pull: the API pull (`.pull`, src/pull) against the Python loop
# an ingestion article shows (test/bench/pull/peer_python.py: httpx +
# asyncpg, executemany per page), on the same local API (test/pull_server.py,
# Link pagination, PULL_BENCH_PER records a page) and the same durable
# throwaway cluster. Each round runs every contender once, in an order that
# rotates round by round; staging.raw_events is truncated and vacuumed
# before each run. records/s = records / wall time of the whole run
# (process start to exit); peak RSS from /usr/bin/time. Medians of the
# rounds, min and max beside. pgpipe must stage every record exactly once
# (the bench fails otherwise).
#   sh test/bench/pull/run.sh
# pgpipe runs twice a round: with --concurrency PULL_BENCH_CONCURRENCY (4:
# the next page fetched while pages are written, up to 4 pages written at
# once on 4 target connections, committed in page order) for the main
# line, and with the default --concurrency 1 (one request, one writer).
# Environment: PULL_BENCH_RECORDS (1,000,000), PULL_BENCH_PER (1,000),
# PULL_BENCH_ROUNDS (5), PULL_BENCH_CONCURRENCY (4), PGTMP_DURABLE (1),
# SKIP_DEPS=1 (do not run tool/deps.sh --bench-pull), PULL_BENCH_BEFORE=PATH
# (another pgpipe binary, e.g. one built from an older commit, run beside
# them as the contender "before", with the same .pull and no --concurrency).
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
out=build/bench/pull
mkdir -p "$out"

if [ "${1:-}" != "--inner" ]; then
    [ "${SKIP_DEPS:-0}" = 1 ] || sh tool/deps.sh --bench-pull --quiet || true
    make -s build/pgpipe
    export PGTMP_DURABLE=${PGTMP_DURABLE:-1}
    exec nice -n 5 sh tool/pgtmp.sh run -- sh "$0" --inner
fi

N=${PULL_BENCH_RECORDS:-1000000}
PER=${PULL_BENCH_PER:-1000}
R=${PULL_BENCH_ROUNDS:-5}
C=${PULL_BENCH_CONCURRENCY:-4}
P=$top/build/pgpipe
T=$PGPIPE_TEST_DSN
res=$out/results.txt
: > "$res"
spid=""
cleanup() { [ -z "$spid" ] || { kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; }; }
trap cleanup EXIT
trap 'exit 1' INT TERM
q() { psql "$T" -qAtX -v ON_ERROR_STOP=1 -c "$1"; }
now_ms() { date +%s%3N; }

$P "$T" ".install" >/dev/null
rm -f "$out/port"
python3 test/pull_server.py --port-file "$out/port" 2>"$out/server.log" &
spid=$!
i=0
while [ ! -s "$out/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
url="http://127.0.0.1:$(cat "$out/port")/link?n=$N&per=$PER&cache=1"
peer=1
/usr/bin/python3 -c 'import httpx, asyncpg' 2>/dev/null || { peer=0; echo "pull bench: the peer is missing (python3-httpx, python3-asyncpg)"; }
# warm the server's page cache (both contenders then read the same bytes)
python3 -c "
import urllib.request, sys
u = sys.argv[1]
while u:
    r = urllib.request.urlopen(u); r.read()
    l = r.headers.get('Link', '')
    u = ('http://127.0.0.1:' + sys.argv[2] + l[1:l.index('>')]) if 'rel=\"next\"' in l else None
" "$url" "$(cat "$out/port")"
# the server alone, pages from its cache over one kept-alive connection:
# it must be far above both contenders, or it is what is measured
python3 -c "
import http.client, sys, time
c = http.client.HTTPConnection('127.0.0.1', int(sys.argv[2])); path = sys.argv[1]; n = 0; t = time.time()
while path:
    c.request('GET', path); r = c.getresponse(); n += len(r.read()) and 1
    l = r.getheader('Link') or ''
    path = l[1:l.index('>')] if 'rel=\"next\"' in l else None
print('pull bench: the test server alone serves the %d pages in %.2f s (%.0f records/s)' % (n, time.time() - t, int(sys.argv[3]) / (time.time() - t)))
" "/${url#http://*/}" "$(cat "$out/port")" "$N"

run_one() { # contender round
    q "TRUNCATE staging.raw_events; DELETE FROM pgpipe.pull_state WHERE source LIKE 'bp_%'" >/dev/null
    q "VACUUM ANALYZE staging.raw_events" >/dev/null
    a=$(now_ms)
    case "$1" in
    before)
        /usr/bin/time -f "%M" -o "$out/rss" "$PULL_BENCH_BEFORE" "$T" ".pull '$url' --source bp_pgpipe --paginate link" \
            2>"$out/pp.log" >/dev/null || { echo "pull bench: the before binary failed:"; tail -5 "$out/pp.log"; }
        ;;
    pgpipe|pgpipe-c1)
        cc=$C; [ "$1" = pgpipe ] || cc=1
        /usr/bin/time -f "%M" -o "$out/rss" "$P" "$T" ".pull '$url' --source bp_pgpipe --paginate link --concurrency $cc" \
            2>"$out/pp.log" >/dev/null || { echo "pull bench: pgpipe failed:"; tail -5 "$out/pp.log"; }
        ;;
    python)
        /usr/bin/time -f "%M" -o "$out/rss" /usr/bin/python3 test/bench/pull/peer_python.py "$url" "$T" bp_python \
            >/dev/null 2>"$out/py.log" || { echo "pull bench: the peer failed:"; tail -5 "$out/py.log"; }
        ;;
    esac
    b=$(now_ms)
    got=$(q "SELECT count(*) FROM staging.raw_events")
    dup=$(q "SELECT count(*) - count(DISTINCT payload->>'id') FROM staging.raw_events")
    echo "$1 $2 $((b - a)) $(tail -n 1 "$out/rss") $got $dup" >> "$res"
    echo "round $2: $1 $((b - a)) ms, $got records, peak RSS $(tail -n 1 "$out/rss") kB"
}
before=0
[ -z "${PULL_BENCH_BEFORE:-}" ] || [ ! -x "$PULL_BENCH_BEFORE" ] || before=1
for r in $(seq 1 "$R"); do
    [ $before = 0 ] || run_one before "$r"
    if [ $((r % 2)) = 1 ] || [ $peer = 0 ]; then
        run_one pgpipe "$r"; run_one pgpipe-c1 "$r"; [ $peer = 0 ] || run_one python "$r"
    else
        [ $peer = 0 ] || run_one python "$r"; run_one pgpipe-c1 "$r"; run_one pgpipe "$r"
    fi
done

med() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else print v[int((NR + 1) / 2)] }'; }
col() { awk -v c="$1" -v k="$2" '$1 == c { print $k }' "$res"; }
rate() { awk -v n="$N" -v ms="$1" 'BEGIN { if (ms > 0) printf "%.0f", n * 1000 / ms; else print 0 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "missing" }'; }
echo
echo "| component | workload | contender | records/s (median) | run ms (min, max) | peak RSS MB (median) |"
echo "|---|---|---|---|---|---|"
for c in before pgpipe pgpipe-c1 python; do
    ms=$(col $c 3 | med)
    [ -n "$ms" ] || continue
    name=$c; [ "$c" = before ] && name="pgpipe before (PULL_BENCH_BEFORE)"; [ "$c" = pgpipe ] && name="pgpipe --concurrency $C"; [ "$c" = pgpipe-c1 ] && name="pgpipe --concurrency 1"
    echo "| pull | $N records, $PER a page | $name | $(rate "$ms") | $ms ($(col $c 3 | sort -n | head -1), $(col $c 3 | sort -n | tail -1)) | $(col $c 4 | med | awk '{ printf "%.1f", $1 / 1024 }') |"
done
pp=$(rate "$(col pgpipe 3 | med)")
py_ms=$(col python 3 | med)
py=missing
[ -z "$py_ms" ] || py=$(rate "$py_ms")
rss=$(col pgpipe 4 | med | awk '{ printf "%.1f", $1 / 1024 }')
wl="${N}-records-${PER}-a-page"
echo
echo "bench: component=pull workload=$wl metric=records/s pgpipe=$pp peer=python peer_value=$py ratio=$( [ "$py" = missing ] && echo missing || ratio "$pp" "$py")"
echo "bench: component=pull workload=$wl metric=peak_rss_mb pgpipe=$rss peer=ceiling peer_value=32 ratio=$(ratio 32 "$rss")"
pp1=$(rate "$(col pgpipe-c1 3 | med)")
rss1=$(col pgpipe-c1 4 | med | awk '{ printf "%.1f", $1 / 1024 }')
echo "bench: component=pull workload=$wl-concurrency-1 metric=records/s pgpipe=$pp1 peer=python peer_value=$py ratio=$( [ "$py" = missing ] && echo missing || ratio "$pp1" "$py")"
echo "bench: component=pull workload=$wl-concurrency-1 metric=peak_rss_mb pgpipe=$rss1 peer=ceiling peer_value=32 ratio=$(ratio 32 "$rss1")"
bad=$(awk -v n="$N" '$1 ~ /^pgpipe/ && ($5 != n || $6 != 0) { c++ } END { print c + 0 }' "$res")
if [ $before = 1 ]; then
    pb=$(rate "$(col before 3 | med)")
    echo "bench: component=pull workload=$wl-before metric=records/s pgpipe=$pb peer=python peer_value=$py ratio=$( [ "$py" = missing ] && echo missing || ratio "$pb" "$py")"
fi
if [ "$bad" != 0 ]; then
    echo "pull bench: FAIL: pgpipe did not stage each record exactly once in $bad rounds" >&2
    exit 1
fi
