#!/bin/sh
# test/faultproxy.c forwards a PostgreSQL session on loopback, and injects the
# faults it is asked for: a dropped connection shows to the client as a lost
# connection (a transient failure), and the counts are reported.
set -u
cd "${PGPIPE_TOP:-.}"
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/proxy.XXXXXX")
cc -std=c11 -Wall -Wextra -Werror test/faultproxy.c -o "$tmp/faultproxy" || exit 1
sock=$PGPIPE_TEST_PGDIR/.s.PGSQL.$(cat "$PGPIPE_TEST_PGDIR/port")
P=build/test/pgpipe

start_proxy() { # args...; sets $port and $pid
    # emptied here, not only by the child's redirection: the loop below
    # must not read the last proxy's port before the child has started
    : >"$tmp/out"
    "$tmp/faultproxy" --upstream "unix:$sock" --duration 60 "$@" >"$tmp/out" 2>&1 &
    pid=$!
    # wait for the whole line (a loaded machine may take seconds to run it)
    i=0; port=
    while [ -z "$port" ] && [ $i -lt 300 ] && kill -0 $pid 2>/dev/null; do
        port=$(sed -n 's/^listening on 127.0.0.1:\([0-9][0-9]*\)$/\1/p' "$tmp/out")
        [ -n "$port" ] || sleep 0.1
        i=$((i + 1))
    done
    [ -n "$port" ] || { echo "proxy did not start within $((i / 10)) s"; cat "$tmp/out"; exit 1; }
}

# no faults: a session through the proxy works
start_proxy --seed 1
out=$($P -m csv "host=127.0.0.1 port=$port user=postgres dbname=postgres" "SELECT 6 * 7 AS x") || { echo "query via proxy failed"; exit 1; }
[ "$(echo "$out" | tail -n 1)" = 42 ] || { echo "wrong answer: $out"; exit 1; }
kill -TERM $pid; wait $pid
grep -q 'faultproxy: connections=1 bytes=[1-9][0-9]* drops=0 cuts=0 stalls=0' "$tmp/out" || { echo "one clean session expected; the query said: $out"; cat "$tmp/out"; exit 1; }

# drop every chunk once the session is up: the query sees a lost connection
start_proxy --seed 2 --drop 1 --after 1 --max-faults 1
err=$($P "host=127.0.0.1 port=$port user=postgres dbname=postgres" "SELECT 1" 2>&1) && { echo "query survived a dropped connection"; exit 1; }
echo "$err" | grep -qi 'connection\|server closed' || { echo "unexpected error: $err"; exit 1; }
kill -TERM $pid; wait $pid
grep -q 'drops=1 cuts=0' "$tmp/out" || { echo "one drop expected; the query said: $err"; cat "$tmp/out"; exit 1; }
echo "faultproxy ok: $(tail -n 1 "$tmp/out")"
