#!/bin/sh
# The shell's .cdc command against a second cluster with wal_level = logical:
# the refusals (no --source, a source without wal_level = logical), start
# (creates the publication and slot, streams until --for or SIGTERM), status
# (applied LSN here; lag, retained WAL and the warnings from the source) and
# stop (drops the slot: the source keeps no WAL for it).
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/cdc.XXXXXX")
chmod 755 "$tmp"
cleanup() { sh tool/pgtmp.sh stop "$tmp/src" >/dev/null 2>&1; }
trap cleanup EXIT
need_pgpipe

S0=$(sh tool/pgtmp.sh start "$tmp/src" --logical --owner $$) || fail "source cluster"
$P "$S0" "CREATE DATABASE cdc_sh_src" >/dev/null || fail "source db"
S="$S0 dbname=cdc_sh_src"
$P "$S" "SET synchronous_commit = on" "CREATE TABLE t (id int PRIMARY KEY, v text)" >/dev/null || fail "source table"
$P "$D" "SET client_min_messages = warning" "DROP DATABASE IF EXISTS cdc_sh WITH (FORCE)" \
    "CREATE DATABASE cdc_sh" >/dev/null || fail "target db"
T="$D dbname=cdc_sh"

out=$($P "$T" ".cdc start" 2>&1) && fail "start without --source succeeded"
has "$out" ".cdc start: --source CONNINFO is required"
out=$($P "$T" ".cdc start --source '$D' --for 1s" 2>&1) && fail "a replica-level source was accepted"
has "$out" "needs wal_level = logical"

out=$($P "$T" ".cdc start --source '$S' --slot sh --tables t --for 1s" 2>&1) || fail "first start: $out"
has "$out" "cdc: stopped: 0 transactions, 0 events staged"
$P "$S" "SET synchronous_commit = on" "INSERT INTO t VALUES (1, 'a'), (2, 'b')" \
    "UPDATE t SET v = 'c' WHERE id = 1" "DELETE FROM t WHERE id = 2" >/dev/null || fail "source changes"

# streams until SIGTERM
$P "$T" ".cdc start --source '$S' --slot sh --for 60s" >"$tmp/run.out" 2>&1 &
pid=$!
n=0
i=0
while [ $i -lt 150 ]; do
    n=$($P -m csv "$T" "SELECT count(*) FROM staging.raw_events" 2>/dev/null | tail -n 1)
    [ "$n" = 4 ] && break
    sleep 0.1
    i=$((i + 1))
done
[ "$n" = 4 ] || fail "staged $n events, expected 4"
kill -TERM $pid
wait $pid || fail "SIGTERM: exit $? $(cat "$tmp/run.out")"
has "$(cat "$tmp/run.out")" "cdc: stopped: 3 transactions, 4 events staged"
out=$($P -m csv "$T" "SELECT event_type, payload->'row'->>'v', payload->'old'->>'id' FROM staging.raw_events ORDER BY id")
has "$out" "public.t:insert,a,"
has "$out" "public.t:update,c,"
has "$out" "public.t:delete,,2"

out=$($P "$T" ".cdc status --source '$S' --slot sh") || fail "status: $out"
has "$out" " sh   | sh          |"
has "$out" "slot sh: INACTIVE (no consumer), wal_status reserved"
has "$out" "retained WAL"
has "$out" "max_slot_wal_keep_size is unlimited on the source"

out=$($P "$T" ".cdc status --source '$S' --slot sh --max-retained 1") && fail "no alert over --max-retained"
has "$out" "ALERT slot sh keeps"
has "$out" "(over --max-retained 1)"

# .health on the source shows the slot nobody reads as the risk it is
out=$($P "$S" .health) || fail ".health: $out"
has "$out" "WARN  replication slots   1 of 1 unread: sh inactive, retains"

out=$($P "$T" ".cdc stop --source '$S' --slot sh") || fail "stop: $out"
has "$out" "cdc: slot sh dropped with publication sh, forgotten here"
out=$($P -m csv "$S" "SELECT count(*) FROM pg_replication_slots") || fail "slots"
has "$out" "0"
out=$($P "$T" ".cdc status --source '$S' --slot sh")
has "$out" "slot sh: not on the source"
out=$($P "$S" .health) || fail ".health: $out"
has "$out" "ok    replication slots   0, none unread"
$P "$D" "DROP DATABASE IF EXISTS cdc_sh WITH (FORCE)" >/dev/null 2>&1
echo "ok"
