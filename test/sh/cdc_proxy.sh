#!/bin/sh
# CDC through a network that cuts: the source is reached through the fault
# proxy (test/faultproxy.c), which drops connections and cuts them in the
# middle of a message while the stream runs under load. The stream logs each
# loss, connects again and resumes: in the end every source change is staged
# exactly once.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/cdcproxy.XXXXXX")
chmod 755 "$tmp"
pid=""; ppid=""
cleanup() {
    [ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null
    [ -z "$ppid" ] || kill -TERM "$ppid" 2>/dev/null
    sh tool/pgtmp.sh stop "$tmp/src" >/dev/null 2>&1
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; [ -f "$tmp/run.out" ] && tail -n 20 "$tmp/run.out"; exit 1; }
need_pgpipe
cc -std=c11 -Wall -Wextra -Werror test/faultproxy.c -o "$tmp/faultproxy" || exit 1

S0=$(sh tool/pgtmp.sh start "$tmp/src" --logical --owner $$) || fail "source cluster"
$P "$S0" "CREATE TABLE t (id int PRIMARY KEY, v text)" >/dev/null || fail "source table"
$P "$D" "SET client_min_messages = warning" "DROP DATABASE IF EXISTS cdc_proxy WITH (FORCE)" \
    "CREATE DATABASE cdc_proxy" >/dev/null || fail "target db"
T="$D dbname=cdc_proxy"
# the slot and publication, made directly (not through the proxy)
$P "$T" ".cdc start --source '$S0' --slot px --tables t --for 1s" >/dev/null 2>&1 || fail "set-up"

# the proxy: no fault before 4 kB on a connection (its start-up), then a
# drop or a cut on 1 in 40 of the chunks it forwards, at most 8 faults
"$tmp/faultproxy" --upstream "unix:$tmp/src/.s.PGSQL.$(cat "$tmp/src/port")" --duration 120 \
    --seed 7 --drop 0.0125 --cut 0.0125 --after 4096 --max-faults 8 >"$tmp/proxy.out" 2>&1 &
ppid=$!
port=; i=0
while [ -z "$port" ] && [ $i -lt 300 ] && kill -0 $ppid 2>/dev/null; do
    port=$(sed -n 's/^listening on 127.0.0.1:\([0-9][0-9]*\)$/\1/p' "$tmp/proxy.out")
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || fail "proxy did not start"
user=$(sed -n 's/.*user=\([^ ]*\).*/\1/p' "$tmp/src/conninfo" 2>/dev/null)
S="host=127.0.0.1 port=$port dbname=postgres${user:+ user=$user}"

$P "$T" ".cdc start --source '$S' --slot px --for 100s" >"$tmp/run.out" 2>&1 &
pid=$!
# 60 transactions of 100 changes each: inserts, then updates of half of them
k=0
while [ $k -lt 40 ]; do
    $P "$S0" "INSERT INTO t SELECT g, 'v' FROM generate_series($((k * 100 + 1)), $((k * 100 + 100))) g" \
        >/dev/null || fail "source insert"
    k=$((k + 1))
done
k=0
while [ $k -lt 20 ]; do
    $P "$S0" "UPDATE t SET v = 'u' WHERE id BETWEEN $((k * 100 + 1)) AND $((k * 100 + 100))" \
        >/dev/null || fail "source update"
    k=$((k + 1))
done
want=6000
n=0; i=0
while [ $i -lt 900 ]; do
    n=$($P -m csv "$T" "SELECT count(*) FROM staging.raw_events WHERE source = 'px'" 2>/dev/null | tail -n 1)
    [ "$n" = "$want" ] && break
    sleep 0.1
    i=$((i + 1))
done
[ "$n" = "$want" ] || fail "staged $n events, expected $want"
kill -TERM $pid; wait $pid; pid=""
kill -TERM $ppid; wait $ppid; ppid=""
counts=$(tail -n 1 "$tmp/proxy.out")
faults=$(echo "$counts" | sed -n 's/.*drops=\([0-9]*\) cuts=\([0-9]*\).*/\1 \2/p')
set -- $faults
[ $(( ${1:-0} + ${2:-0} )) -gt 0 ] || fail "the proxy injected no fault: $counts"
grep -q "connecting again" "$tmp/run.out" || fail "no reconnect was logged"
dup=$($P -m csv "$T" "SELECT count(*) FROM (SELECT event_type, payload->'row'->>'id' FROM staging.raw_events
      WHERE source = 'px' GROUP BY 1, 2 HAVING count(*) > 1) d" | tail -n 1)
[ "$dup" = 0 ] || fail "$dup changes staged twice"
ins=$($P -m csv "$T" "SELECT count(DISTINCT payload->'row'->>'id') FROM staging.raw_events
      WHERE event_type = 'public.t:insert'" | tail -n 1)
[ "$ins" = 4000 ] || fail "$ins distinct inserts staged, expected 4000"
$P "$T" ".cdc stop --source '$S0' --slot px" >/dev/null 2>&1 || fail "stop"
echo "cdc through the fault proxy ok: $want changes once; $counts"
