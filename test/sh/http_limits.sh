#!/bin/sh
# The shell's .serve against hostile clients on loopback: a request line that
# cannot be HTTP/1.x (HTTP/0.9, HTTP/2 or HTTP/3 written as text, TLS bytes, an
# unknown or endless method) is answered at once and closed, not after the
# header timeout (60 s here; each client waits 10 s at most); with every
# connection held by slow clients (--max-connections 20), /healthz and
# /metrics still answer (then close) and say so, a POST gets 503 Retry-After,
# and once the slow clients go the server serves as before. SIGTERM: exit 0.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=${PGPIPE_TEST_DSN:-}
[ -n "$D" ] || { echo "no PGPIPE_TEST_DSN"; exit 77; }
need_pgpipe
for c in curl python3; do
    command -v $c >/dev/null 2>&1 || { echo "$c missing (sh tool/deps.sh --test)"; exit 77; }
done
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/httplim.XXXXXX")
spid=""
cleanup() { [ -z "$spid" ] || { kill -9 "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; }; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "-- server log (tail):"; tail -n 20 "$tmp/serve.err" 2>/dev/null; exit 1; }

$P "$D" ".serve --listen 127.0.0.1:0 --port-file $tmp/port --tokens off --max-connections 20 \
    --header-timeout 60000" 2>>"$tmp/serve.err" &
spid=$!
i=0
while [ ! -s "$tmp/port" ]; do
    kill -0 "$spid" 2>/dev/null || { wait "$spid"; spid=""; fail ".serve exited before binding"; }
    i=$((i + 1)); [ $i -gt 300 ] && fail ".serve wrote no port file in 30 s"
    sleep 0.1
done
port=$(cat "$tmp/port")
U=http://127.0.0.1:$port
i=0
until curl -sS --max-time 5 -o /dev/null "$U/healthz" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "no answer from $U/healthz"
    sleep 0.1
done

# raw.py BYTES: the status line the server answers with and whether it then
# closed ("closed"), or "timeout" when nothing came within 10 s
cat >"$tmp/raw.py" <<'PY'
import socket, sys
port, msg = int(sys.argv[1]), sys.argv[2].encode("latin-1").decode("unicode_escape").encode("latin-1")
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall(msg)
data = b""
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    print("timeout " + data.split(b"\r\n", 1)[0].decode("latin-1")); sys.exit(0)
except ConnectionResetError:
    pass
print(data.split(b"\r\n", 1)[0].decode("latin-1") + " closed")
PY
raw() { python3 "$tmp/raw.py" "$port" "$1" || fail "raw.py $1"; }
expect() { # BYTES STATUS
    out=$(raw "$1")
    [ "$out" = "HTTP/1.1 $2 closed" ] || fail "$1: expected an immediate $2 and a close, got: $out"
}
expect 'GET /healthz\r\n' "400 Bad Request"
expect 'GET\r\n' "400 Bad Request"
expect 'GET /healthz HTTP/2.0\r\n' "505 HTTP Version Not Supported"
expect 'GET /healthz HTTP/3\r\n' "505 HTTP Version Not Supported"
expect 'GET /a\x01b HTTP/1.1\r\n' "400 Bad Request"
expect '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03' "400 Bad Request"
expect 'PROPFINDX' "501 Not Implemented"
expect 'GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n' "400 Bad Request"
expect 'GET /healthz HTTP/1.1\r\nHost: x\r\nX(y): 1\r\n\r\n' "400 Bad Request"
expect 'GET /healthz HTTP/1.1\r\nHost: a b\r\n\r\n' "400 Bad Request"
out=$(raw 'GET /healthz HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n')
[ "$out" = "HTTP/1.1 200 OK closed" ] || fail "HTTP/1.2 is served as 1.1: $out"

# ---- every connection held by slow clients --------------------------------------
# hold.py: opens 20 connections that send one byte of a head, then waits for
# a line on stdin (at most 60 s) and closes them
cat >"$tmp/hold.py" <<'PY'
import select, socket, sys
port = int(sys.argv[1])
held = []
for i in range(20):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"G")
    held.append(s)
print("held", flush=True)
select.select([sys.stdin], [], [], 60)
for s in held:
    s.close()
PY
mkfifo "$tmp/go"
python3 "$tmp/hold.py" "$port" <"$tmp/go" >"$tmp/hold.out" &
hpid=$!
exec 3>"$tmp/go"
i=0
until grep -q held "$tmp/hold.out" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "the slow clients did not connect"
    sleep 0.1
done
out=$(curl -sS --max-time 10 -D "$tmp/h" "$U/healthz") || fail "healthz at the limit: curl exit $?"
has "$out" '"ok"'
has "$(cat "$tmp/h")" "Connection: close"
out=$(curl -sS --max-time 10 "$U/metrics") || fail "metrics at the limit: curl exit $?"
has "$out" "pgpipe_http_max_connections 20"
has "$out" "pgpipe_http_connections_over_limit_total 2"
code=$(curl -sS --max-time 10 -D "$tmp/h" -o "$tmp/resp" -w '%{http_code}' -H 'Content-Type: application/json' \
    --data-binary '{"event_type":"x"}' "$U/v1/events/lim") || fail "POST at the limit: curl exit $?"
[ "$code" = 503 ] || fail "POST at the limit: $code $(cat "$tmp/resp")"
has "$(cat "$tmp/resp")" '"connection_limit"'
has "$(cat "$tmp/h")" "Retry-After: 1"
echo go >&3
exec 3>&-
wait "$hpid" || fail "hold.py"
# the slow clients are gone: served as before (bounded retries while the
# server sees the closes)
i=0
until [ "$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$U/nope")" = 404 ]; do
    i=$((i + 1)); [ $i -gt 100 ] && fail "no regular slot free after the slow clients left"
    sleep 0.1
done

kill -TERM "$spid"
i=0; while kill -0 "$spid" 2>/dev/null; do i=$((i + 1)); [ $i -gt 300 ] && fail "no exit 30 s after SIGTERM"; sleep 0.1; done
wait "$spid"; rc=$?; spid=""
[ $rc = 0 ] || fail ".serve exit $rc after SIGTERM"
echo "ok"
