#!/bin/sh
# .serve --spool (issue 25): store and forward while the database is away,
# and the per-record device id + sequence at the HTTP source.
# - its own throwaway cluster, stopped under a running server: valid requests
#   are answered 202 {"spooled":N}, /readyz stays 200 (spooling), /metrics
#   counts the spool; a bad body is still 400 and spools nothing;
# - the cluster back: the drainer commits the spooled requests, each once
#   (a keyed request spooled twice adds its records once; a device batch
#   spooled twice too), and the spool is empty;
# - Pgpipe-Device / Pgpipe-Seq: the same batch twice adds nothing the second
#   time, overlapping batches add only the new records, a new spool id starts
#   again, and hostile headers are 400 naming the header, nothing written.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=$(pwd)/build/test/pgpipe
need_pgpipe
command -v curl >/dev/null 2>&1 || { echo "curl missing"; exit 77; }
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/spoolsrv.XXXXXX")
chmod 755 "$tmp"
spid=""
cleanup() {
    [ -z "$spid" ] || { kill "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; }
    sh tool/pgtmp.sh stop "$tmp/pg" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    echo "-- server log (tail):"; tail -n 30 "$tmp/serve.err" 2>/dev/null
    exit 1
}
D=$(sh tool/pgtmp.sh start "$tmp/pg" --owner $$) || fail "no cluster"
q() { $P -m csv "$D" "$1" | sed 1d; }
rows() { q "SELECT count(*) FROM staging.raw_events WHERE source = '$1'"; }

$P "$D" ".serve --listen 127.0.0.1:0 --port-file $tmp/port --tokens off --access-log --spool $tmp/spool --spool-device srv-1" \
    2>"$tmp/serve.err" &
spid=$!
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
[ -s "$tmp/port" ] || fail "the server did not start"
U=http://127.0.0.1:$(cat "$tmp/port")
# post SOURCE BODY [HEADER...]: "STATUS BODY"
post() {
    src=$1 body=$2
    shift 2
    set -- -H "Content-Type: ${CT:-application/x-ndjson}" "$@"
    h=""
    for a in "$@"; do h="$h -H '$a'"; done
    out=$(eval curl -s -m 20 -o "$tmp/body" -w '%{http_code}' -X POST $h --data-binary @- "$U/v1/events/$src" <<EOF
$body
EOF
)
    echo "$out $(cat "$tmp/body")"
}
recs() { # N records numbered from $1
    k=$1
    while [ "$k" -le "$2" ]; do printf '{"event_type":"e","n":%d}\n' "$k"; k=$((k + 1)); done
}

# ---- the database up: straight to staging
r=$(post up '{"event_type":"e"}')
case "$r" in "202 "*'"accepted":1'*) ;; *) fail "up: $r" ;; esac
[ "$(rows up)" = 1 ] || fail "up: not committed"

# ---- device + sequence at the HTTP source
r=$(post dev "$(recs 1 3)" 'Pgpipe-Device: pump-1' 'Pgpipe-Seq: 1')
case "$r" in "202 "*'"accepted":3'*'"duplicate":0'*) ;; *) fail "device batch: $r" ;; esac
r=$(post dev "$(recs 1 3)" 'Pgpipe-Device: pump-1' 'Pgpipe-Seq: 1')
case "$r" in "202 "*'"accepted":0'*'"duplicate":3'*) ;; *) fail "the same device batch again: $r" ;; esac
[ "$(rows dev)" = 3 ] || fail "device batch twice: $(rows dev) rows"
r=$(post ovl "$(recs 1 100)" 'Pgpipe-Device: pump-2' 'Pgpipe-Seq: 1')
case "$r" in "202 "*'"accepted":100'*) ;; *) fail "overlap 1-100: $r" ;; esac
r=$(post ovl "$(recs 50 150)" 'Pgpipe-Device: pump-2' 'Pgpipe-Seq: 50')
case "$r" in "202 "*'"accepted":50,'*'"duplicate":51'*) ;; *) fail "overlap 50-150: $r" ;; esac
[ "$(rows ovl)" = 150 ] || fail "overlap: $(rows ovl) rows, not 150"
[ "$(q "SELECT count(DISTINCT payload->>'n') FROM staging.raw_events WHERE source = 'ovl'")" = 150 ] ||
    fail "overlap: a record twice"
# a device going backwards: the same spool id is a duplicate; a new spool folder (id) starts again
r=$(post back "$(recs 1 2)" 'Pgpipe-Device: pump-3' 'Pgpipe-Seq: 10')
case "$r" in "202 "*'"accepted":2'*) ;; *) fail "back: $r" ;; esac
r=$(post back "$(recs 1 2)" 'Pgpipe-Device: pump-3' 'Pgpipe-Seq: 1')
case "$r" in "202 "*'"accepted":0'*'"duplicate":2'*) ;; *) fail "backwards, same spool: $r" ;; esac
r=$(post back "$(recs 1 2)" 'Pgpipe-Device: pump-3' 'Pgpipe-Seq: 1' 'Pgpipe-Spool: 2f0c6a2e-new-folder')
case "$r" in "202 "*'"accepted":2'*'"duplicate":0'*) ;; *) fail "a new spool id: $r" ;; esac
[ "$(q "SELECT last_seq FROM pgpipe.device_positions WHERE device = 'pump-3' AND spool = ''")" = 11 ] ||
    fail "pump-3's position"
# hostile headers: 400 naming the header, nothing written
for bad in "Pgpipe-Seq|Pgpipe-Device: d|Pgpipe-Seq: abc" "Pgpipe-Seq|Pgpipe-Device: d|Pgpipe-Seq: -5" \
           "Pgpipe-Seq|Pgpipe-Device: d|Pgpipe-Seq: 0" \
           "Pgpipe-Seq|Pgpipe-Device: d|Pgpipe-Seq: 99999999999999999999999" \
           "Pgpipe-Seq|Pgpipe-Device: d|Pgpipe-Seq: 4611686018427387904" \
           "Pgpipe-Seq|Pgpipe-Device: d|Pgpipe-Seq: 1 2" \
           "Pgpipe-Seq|Pgpipe-Device: d|X-Other: 1" "Pgpipe-Device|Pgpipe-Seq: 1|X-Other: 1" \
           "Pgpipe-Device|Pgpipe-Spool: s|X-Other: 1" \
           "Pgpipe-Device|Pgpipe-Device: $(printf 'd%.0s' $(seq 1 60))|Pgpipe-Seq: 1" \
           "Pgpipe-Seq|Pgpipe-Device: d|Pgpipe-Seq: 1|Pgpipe-Seq: 2"; do
    want=${bad%%|*}; rest=${bad#*|}; h1=${rest%%|*}; h2=${rest#*|}
    if [ "$h2" != "${h2#*|}" ]; then
        h3=${h2#*|}; h2=${h2%%|*}
        r=$(post hostile "$(recs 1 2)" "$h1" "$h2" "$h3")
    else
        r=$(post hostile "$(recs 1 2)" "$h1" "$h2")
    fi
    case "$r" in "400 "*"$want"*) ;; *) fail "hostile [$rest]: $r" ;; esac
done
[ "$(rows hostile)" = 0 ] || fail "a hostile request wrote rows"
[ "$(q "SELECT count(*) FROM pgpipe.device_positions WHERE device = 'd'")" = 0 ] ||
    fail "a hostile request moved a position"
echo "device + sequence ok"

# ---- the database away: the spool
sh tool/pgtmp.sh stop "$tmp/pg" >/dev/null || fail "cannot stop the cluster"
i=0
until curl -s -m 5 "$U/readyz" | grep -q spooling; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "readyz never says spooling: $(curl -s "$U/readyz")"; sleep 0.2
done
r=$(post away "$(recs 1 5)")
case "$r" in "202 "*'"spooled":5'*) ;; *) fail "away: $r" ;; esac
r=$(post away "$(recs 6 7)" 'Idempotency-Key: k-1')
case "$r" in "202 "*'"spooled":2'*) ;; *) fail "away, keyed: $r" ;; esac
r=$(post away "$(recs 6 7)" 'Idempotency-Key: k-1')
case "$r" in "202 "*'"spooled":2'*) ;; *) fail "away, keyed again: $r" ;; esac
r=$(post away "$(recs 8 10)" 'Pgpipe-Device: pump-9' 'Pgpipe-Seq: 8')
case "$r" in "202 "*'"spooled":3'*) ;; *) fail "away, device: $r" ;; esac
r=$(post away "$(recs 8 10)" 'Pgpipe-Device: pump-9' 'Pgpipe-Seq: 8')
case "$r" in "202 "*'"spooled":3'*) ;; *) fail "away, device again: $r" ;; esac
r=$(CT=application/json post away '{"event_type":')
case "$r" in "400 "*) ;; *) fail "away, a bad body: $r" ;; esac
r=$(post away "$(recs 1 2)" 'Pgpipe-Device: d' 'Pgpipe-Seq: x')
case "$r" in "400 "*Pgpipe-Seq*) ;; *) fail "away, a bad header: $r" ;; esac
curl -s -m 5 -o "$tmp/ready" -w '%{http_code}' "$U/readyz" | grep -q 200 || fail "readyz not 200 while spooling"
grep -q '"records":5' "$tmp/ready" || fail "readyz: $(cat "$tmp/ready")"
curl -s -m 5 "$U/metrics" >"$tmp/metrics"
grep -q '^pgpipe_spool_records 5$' "$tmp/metrics" || fail "metrics: $(grep spool "$tmp/metrics")"
grep -q '^pgpipe_http_records_spooled_total 15$' "$tmp/metrics" || fail "metrics: spooled total"
grep -q 'spooled=5\|"spooled":"5"' "$tmp/serve.err" || fail "the access log does not say spooled"
echo "spool while away ok"

# ---- back: drained in order, each once
sh tool/pgtmp.sh start "$tmp/pg" --owner $$ >/dev/null || fail "cannot start the cluster again"
i=0
until [ "$(rows away 2>/dev/null)" = 10 ] && curl -s -m 5 "$U/metrics" | grep -q '^pgpipe_spool_records 0$'; do
    i=$((i + 1)); [ $i -lt 150 ] || fail "not drained: $(rows away) rows; $(curl -s "$U/metrics" | grep spool)"
    sleep 0.2
done
[ "$(q "SELECT count(DISTINCT payload->>'n') FROM staging.raw_events WHERE source = 'away'")" = 10 ] ||
    fail "drained: a record twice"
# spool first: a request now goes straight in once the spool is empty
r=$(post after '{"event_type":"e"}')
case "$r" in "202 "*'"accepted":1'*) ;; *) fail "after the drain: $r" ;; esac
[ "$(q "SELECT last_seq FROM pgpipe.device_positions WHERE device = 'srv-1'")" = 5 ] ||
    fail "the server spool's position: $(q "SELECT * FROM pgpipe.device_positions")"
curl -s -m 5 "$U/metrics" >"$tmp/metrics"
grep -q '^pgpipe_spool_drained_records_total 10$' "$tmp/metrics" ||
    fail "drained total: $(grep drain "$tmp/metrics")"
echo "drained once ok"

# ---- kill -9 in the middle of a drain, start again: every record once
# (small groups: the drain of 60 requests takes 12 rounds)
kill "$spid"; wait "$spid"; rc=$?; spid=""
[ $rc = 0 ] || fail "the server exited $rc"
serve() {
    rm -f "$tmp/port"
    $P "$D" ".serve --listen 127.0.0.1:0 --port-file $tmp/port --tokens off --group-records 100 --spool $tmp/spool --spool-device srv-1" \
        2>>"$tmp/serve.err" &
    spid=$!
    i=0
    while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
    [ -s "$tmp/port" ] || fail "the server did not start again"
    U=http://127.0.0.1:$(cat "$tmp/port")
}
serve
sh tool/pgtmp.sh stop "$tmp/pg" >/dev/null || fail "cannot stop the cluster"
i=0
until curl -s -m 5 "$U/readyz" | grep -q 'no connection'; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "readyz never says no connection"; sleep 0.2
done
k=0
while [ $k -lt 60 ]; do
    r=$(post k9 "$(recs $((k * 20 + 1)) $((k * 20 + 20)))")
    case "$r" in "202 "*'"spooled":20'*) ;; *) fail "k9 spool $k: $r" ;; esac
    k=$((k + 1))
done
sh tool/pgtmp.sh start "$tmp/pg" --owner $$ >/dev/null || fail "cannot start the cluster again"
i=0
while [ "$(rows k9 2>/dev/null || echo 0)" = 0 ] && [ $i -lt 200 ]; do i=$((i + 1)); sleep 0.05; done
kill -9 "$spid"; wait "$spid" 2>/dev/null; spid=""
echo "killed with $(rows k9) of 1200 records drained"
serve
i=0
until [ "$(rows k9)" -ge 1200 ] && curl -s -m 5 "$U/metrics" | grep -q '^pgpipe_spool_records 0$'; do
    i=$((i + 1)); [ $i -lt 300 ] || fail "not drained after the kill: $(rows k9) rows"
    sleep 0.2
done
[ "$(rows k9)" = 1200 ] || fail "after kill -9: $(rows k9) rows, not 1200"
[ "$(q "SELECT count(DISTINCT payload->>'n') FROM staging.raw_events WHERE source = 'k9'")" = 1200 ] ||
    fail "after kill -9: a record twice"
echo "kill -9 mid-drain ok"
kill "$spid"; wait "$spid"; rc=$?; spid=""
[ $rc = 0 ] || fail "the server exited $rc"
echo "ok"
