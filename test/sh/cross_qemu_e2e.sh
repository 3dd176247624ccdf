#!/bin/sh
# The aarch64 device program (test/device_e2e.c, -Os, single-threaded) under
# qemu-aarch64 against the test server over TCP (test/faultproxy.c on
# loopback in front of the server's Unix socket): the loader loads a file, and
# the same records go through a spool (fsync per record) and its drainer.
# test/sh/cross_qemu.sh (the unit tests, beside the C tests) builds the
# program first; run alone, this builds it. Part of make cross-test and of
# make test; skips (77) without the cross tools (tool/deps.sh --cross) or a
# test server.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
. test/sh/lib/cross.sh
cross_setup
[ -n "${PGPIPE_TEST_DSN:-}" ] && [ -n "${PGPIPE_TEST_PGDIR:-}" ] || { echo "no test server (make cross-test starts one)"; exit 77; }
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/crosse2e.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cross_device_program
cc -std=c11 -Wall -Wextra -Werror test/faultproxy.c -o "$tmp/faultproxy" || exit 1
sock=$PGPIPE_TEST_PGDIR/.s.PGSQL.$(cat "$PGPIPE_TEST_PGDIR/port")
"$tmp/faultproxy" --upstream "unix:$sock" --duration 120 >"$tmp/proxy" 2>&1 &
ppid=$!
trap 'kill $ppid 2>/dev/null; rm -rf "$tmp"' EXIT
i=0; port=
while [ -z "$port" ] && [ $i -lt 300 ] && kill -0 $ppid 2>/dev/null; do
    port=$(sed -n 's/^listening on 127.0.0.1:\([0-9][0-9]*\)$/\1/p' "$tmp/proxy")
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || fail "the TCP proxy did not start"
tcp="$PGPIPE_TEST_DSN host=127.0.0.1 port=$port"
src="cross-$$"
i=1
while [ $i -le 500 ]; do printf '{"event_type":"x","i":%d}\n' $i; i=$((i + 1)); done > $tmp/in.ndjson
o=$(cross_run $out/device_e2e-aarch64 "$tcp" $tmp/in.ndjson $tmp/spool "$src" 2>&1) || fail "aarch64 device program: $o"
echo "$o" | grep -q "loaded 500" || fail "the aarch64 load said: $o"
echo "$o" | grep -q "spooled 500, drained 500 records, 500 loaded" || fail "the aarch64 drain said: $o"
n=$(build/test/pgpipe -m csv "$PGPIPE_TEST_DSN" "SELECT count(*) FILTER (WHERE source = '$src-load') AS l, count(DISTINCT payload->>'i') FILTER (WHERE source = '$src-spool') AS s FROM staging.raw_events" | tail -n 1)
[ "$n" = "500,500" ] || fail "staging after the aarch64 load and drain: $n (want 500,500)"
grep -q 'listening' "$tmp/proxy" || fail "no proxy"
echo "aarch64 end to end over TCP: loader 500 rows, spool (fsync per record) + drain 500 records"
