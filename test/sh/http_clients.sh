#!/bin/sh
# HTTP ingest (issue 21) with real clients against a real `.serve` on port 0:
# curl (a JSON object, an array, NDJSON with a bad line, CSV, several
# requests on one kept-alive connection, a chunked upload, Expect:
# 100-continue on a large body), Python urllib and http.client (keep-alive;
# an Idempotency-Key retried gets the first answer again and adds no row), a
# few seconds of wrk (no 5xx; the rows are the acknowledged events, give or
# take the requests in flight when wrk stopped), and hostile requests end to
# end (a POST with neither length nor chunks, both Content-Length and
# Transfer-Encoding, an oversized body: refused, nothing written). Ends with
# SIGTERM: the server drains and exits 0.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=${PGPIPE_TEST_DSN:-}
[ -n "$D" ] || { echo "no PGPIPE_TEST_DSN"; exit 77; }
need_pgpipe
for c in curl wrk python3; do
    command -v $c >/dev/null 2>&1 || { echo "$c missing (sh tool/deps.sh --test)"; exit 77; }
done
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/httpcli.XXXXXX")
chmod 755 "$tmp"
spid=""
cleanup() { [ -z "$spid" ] || { kill -9 "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; }; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "-- server log (tail):"; tail -n 20 "$tmp/serve.err" 2>/dev/null; exit 1; }
q() { $P -m csv "$D" "$1" | sed 1d; }
# js JSON EXPR: EXPR (Python, over the answer d) evaluated on the JSON text
js() { printf '%s' "$1" | python3 -c 'import json, sys; d = json.loads(sys.stdin.read()); print(eval(sys.argv[1]))' "$2" 2>&1; }
# ack ANSWER ACCEPTED DEAD: a 202 with these counts, a request id, errors
ack() {
    case "$1" in "202 "*) ;; *) fail "expected a 202, got: $1" ;; esac
    got=$(js "${1#202 }" '"%s %s %s %d" % (d["accepted"], d["dead_lettered"], len(d["request_id"]) > 0, len(d["errors"]))')
    [ "$got" = "$2 $3 True $3" ] || fail "expected accepted $2, dead_lettered $3 (as many errors), a request_id in: $1 ($got)"
}
rows() { q "SELECT count(*) FROM staging.raw_events WHERE source = '$1'"; }
eqrows() { n=$(rows "$1"); [ "$n" = "$2" ] || fail "source $1: $n rows, expected $2"; }

# serve [OPTIONS]: start .serve on a port of its own; $port, $spid. The
# stub the HTTP layer started from is a skip, anything else that fails a failure.
serve() {
    rm -f "$tmp/port"
    $P "$D" ".serve --listen 127.0.0.1:0 --port-file $tmp/port --tokens off $*" 2>>"$tmp/serve.err" &
    spid=$!
    i=0
    while [ ! -s "$tmp/port" ]; do
        if ! kill -0 "$spid" 2>/dev/null; then
            wait "$spid"; spid=""
            grep -q "not built yet\\|unknown command: .serve" "$tmp/serve.err" && { echo "the HTTP server is not built yet"; exit 77; }
            fail ".serve exited before binding"
        fi
        i=$((i + 1)); [ $i -gt 300 ] && fail ".serve wrote no port file in 30 s"
        sleep 0.1
    done
    port=$(cat "$tmp/port")
    i=0
    until grep -q "serving on http://127.0.0.1:$port" "$tmp/serve.err"; do
        i=$((i + 1)); [ $i -gt 100 ] && fail "no 'serving on http://127.0.0.1:$port' on stderr"
        sleep 0.1
    done
}
serve
U=http://127.0.0.1:$port

# post SOURCE CONTENT-TYPE FILE [curl options]: "status body" (one line)
post() {
    s=$1; ct=$2; f=$3; shift 3
    code=$(curl -sS --max-time 60 -o "$tmp/resp" -w '%{http_code}' -H "Content-Type: $ct" \
        --data-binary @"$f" "$@" "$U/v1/events/$s") || fail "curl exit $? posting to $s"
    printf '%s %s\n' "$code" "$(cat "$tmp/resp")"
}

out=$(curl -sS --max-time 10 -w ' %{http_code}' "$U/healthz") || fail "healthz"
has "$out" " 200"
out=$(curl -sS --max-time 10 -w ' %{http_code}' "$U/readyz") || fail "readyz"
has "$out" " 200"

# ---- curl: one object, an array, NDJSON with a bad line, CSV ------------------
printf '{"event_type":"signup","user":"ann","n":1}' >"$tmp/obj.json"
out=$(post cli_obj application/json "$tmp/obj.json")
ack "$out" 1 0
eqrows cli_obj 1
[ "$(q "SELECT event_type || ' ' || (payload->>'user') FROM staging.raw_events WHERE source = 'cli_obj'")" = "signup ann" ] ||
    fail "the object's row: $(q "SELECT event_type, payload FROM staging.raw_events WHERE source = 'cli_obj'")"

printf '[{"event_type":"a","n":1},{"event_type":"a","n":2},{"event_type":"b","n":3}]' >"$tmp/arr.json"
out=$(post cli_arr application/json "$tmp/arr.json")
ack "$out" 3 0
eqrows cli_arr 3
[ "$(q "SELECT sum((payload->>'n')::int) FROM staging.raw_events WHERE source = 'cli_arr'")" = 6 ] || fail "array payloads"

printf '{"event_type":"a","n":1}\nnot json zq17\n{"event_type":"a","n":3}\n' >"$tmp/e.ndjson"
out=$(post cli_nd application/x-ndjson "$tmp/e.ndjson")
ack "$out" 2 1
eqrows cli_nd 2
[ "$(q "SELECT count(*) FROM pgpipe.dead_letters WHERE raw_text LIKE 'not json zq17%'")" = 1 ] || fail "the bad line is not in the DLQ"

printf 'event_type,n,name\nc,1,x\nc,2,"y, z"\n' >"$tmp/e.csv"
out=$(post cli_csv text/csv "$tmp/e.csv")
ack "$out" 2 0
eqrows cli_csv 2
[ "$(q "SELECT payload->>'name' = 'y, z' FROM staging.raw_events WHERE source = 'cli_csv' AND payload->>'n' = '2'")" = t ] ||
    fail "CSV row: $(q "SELECT payload FROM staging.raw_events WHERE source = 'cli_csv'")"

# ---- curl: three requests, one connection -------------------------------------
out=$(curl -sS --max-time 60 -H 'Content-Type: application/x-ndjson' --data-binary @"$tmp/e.ndjson" \
    -w '%{http_code} %{num_connects}\n' -o /dev/null -o /dev/null -o /dev/null \
    "$U/v1/events/cli_ka" "$U/v1/events/cli_ka" "$U/v1/events/cli_ka") || fail "keep-alive curl"
[ "$(echo "$out" | tr '\n' ' ')" = "202 1 202 0 202 0 " ] || fail "three requests on one connection: $out"
eqrows cli_ka 6

# ---- curl: a chunked upload from stdin (several chunks) -------------------------
python3 -c 'import json
for i in range(3000): print(json.dumps({"event_type": "chunk", "i": i, "pad": "x" * 60}))' >"$tmp/big.ndjson"
code=$(curl -sS --max-time 60 -o "$tmp/resp" -w '%{http_code}' -X POST -T - -H 'Transfer-Encoding: chunked' \
    -H 'Content-Type: application/x-ndjson' "$U/v1/events/cli_chunked" <"$tmp/big.ndjson") || fail "chunked curl"
[ "$code" = 202 ] || fail "chunked upload: $code $(cat "$tmp/resp")"
ack "202 $(cat "$tmp/resp")" 3000 0
eqrows cli_chunked 3000
[ "$(q "SELECT count(DISTINCT payload->>'i') FROM staging.raw_events WHERE source = 'cli_chunked'")" = 3000 ] || fail "chunked rows"

# ---- curl: Expect: 100-continue on a 2 MB body ---------------------------------------
python3 -c 'import json
for i in range(1000): print(json.dumps({"event_type": "large", "i": i, "pad": "y" * 2000}))' >"$tmp/large.ndjson"
code=$(curl -sS -v --max-time 60 -o "$tmp/resp" -w '%{http_code}' -H 'Expect: 100-continue' \
    -H 'Content-Type: application/x-ndjson' --data-binary @"$tmp/large.ndjson" \
    "$U/v1/events/cli_expect" 2>"$tmp/trace") || fail "expect curl"
[ "$code" = 202 ] || fail "Expect: 100-continue: $code $(cat "$tmp/resp")"
grep -q '^< HTTP/1.1 100' "$tmp/trace" || fail "no 100 Continue before the body: $(grep '^[<>] ' "$tmp/trace" | head)"
eqrows cli_expect 1000

# ---- Python: urllib, http.client keep-alive, idempotency keys ---------------------------
cat >"$tmp/py.py" <<'PY'
import http.client, json, sys, urllib.request
port = int(sys.argv[1])
def check(cond, what):
    if not cond:
        print("FAIL:", what); sys.exit(1)
# urllib: one object
req = urllib.request.Request("http://127.0.0.1:%d/v1/events/cli_urllib" % port,
                             data=b'{"event_type":"u","n":1}', method="POST",
                             headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=30) as r:
    body = json.loads(r.read())
    check(r.status == 202 and body["accepted"] == 1, "urllib: %s %s" % (r.status, body))
# http.client: five requests on one connection
c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
sock = None
for i in range(5):
    c.request("POST", "/v1/events/cli_hc", body=json.dumps({"event_type": "h", "i": i}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    check(r.status == 202, "http.client request %d: %d %r" % (i, r.status, data))
    check(r.getheader("Connection", "").lower() != "close", "the server closed a keep-alive connection")
    if sock is None:
        sock = c.sock
    check(c.sock is sock, "http.client reconnected at request %d" % i)
# an idempotency key: the retry (on another connection) gets the first answer
def post_key(key, body):
    k = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    k.request("POST", "/v1/events/cli_idem", body=body,
              headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": key})
    r = k.getresponse()
    out = (r.status, r.read())
    k.close()
    return out
body = b'{"event_type":"i","n":1}\n{"event_type":"i","n":2}\n'
def same(again, first):
    """The first answer again: every field of it, equal (a replay may say
    "replayed": true besides)."""
    if again[0] != first[0]:
        return False
    a, f = json.loads(again[1]), json.loads(first[1])
    return a.pop("replayed", True) is True and a == f and "replayed" not in f
first = post_key("cli-key-1", body)
check(first[0] == 202, "first keyed request: %r" % (first,))
again = post_key("cli-key-1", body)
check(same(again, first), "the retry got %r, the first %r" % (again, first))
# the same key on the kept-alive connection too
c.request("POST", "/v1/events/cli_idem", body=body,
          headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": "cli-key-1"})
r = c.getresponse()
check(same((r.status, r.read()), first), "the retry on a kept-alive connection differs")
other = post_key("cli-key-2", body)
check(other[0] == 202 and json.loads(other[1])["request_id"] != json.loads(first[1])["request_id"],
      "another key: %r" % (other,))
print("python ok")
PY
out=$(python3 "$tmp/py.py" "$port" 2>&1) || fail "python clients: $out"
has "$out" "python ok"
eqrows cli_urllib 1
eqrows cli_hc 5
eqrows cli_idem 4

# ---- hostile requests (raw sockets): refused, nothing written ------------------
cat >"$tmp/raw.py" <<'PY'
import socket, sys
port, what = int(sys.argv[1]), sys.argv[2]
head = "POST /v1/events/cli_hostile HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
body = '{"event_type":"evil","n":1}'
if what == "nolength":
    msg = head + "\r\n" + body
elif what == "both":
    msg = head + "Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        len(body), len(body), body)
elif what == "huge":   # only the head: the answer must not wait for 9 MB
    msg = head + "Content-Length: 9000000\r\n\r\n" + body
s = socket.create_connection(("127.0.0.1", port), timeout=20)
s.sendall(msg.encode())
data = b""
try:
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    print("timeout"); sys.exit(0)
print(data.split(b"\r\n", 1)[0].decode("latin-1"))
PY
out=$(python3 "$tmp/raw.py" "$port" nolength) || fail "raw nolength"
case "$out" in "HTTP/1.1 411 "*|"HTTP/1.1 400 "*) ;; *) fail "POST without length: $out" ;; esac
out=$(python3 "$tmp/raw.py" "$port" both) || fail "raw both"
case "$out" in "HTTP/1.1 400 "*) ;; *) fail "Content-Length and Transfer-Encoding: $out" ;; esac
out=$(python3 "$tmp/raw.py" "$port" huge) || fail "raw huge"
case "$out" in "HTTP/1.1 413 "*) ;; *) fail "9 MB Content-Length: $out" ;; esac
# and a real oversized body from curl (9 MiB > the 8 MiB default)
python3 -c 'import sys; sys.stdout.write(("{\"event_type\":\"big\",\"pad\":\"%s\"}\n" % ("z" * 1000)) * 9300)' >"$tmp/huge.ndjson"
code=$(curl -sS --max-time 60 -o "$tmp/resp" -w '%{http_code}' -H 'Content-Type: application/x-ndjson' \
    --data-binary @"$tmp/huge.ndjson" "$U/v1/events/cli_hostile" 2>/dev/null)
[ "$code" = 413 ] || fail "a 9 MiB body: $code $(cat "$tmp/resp")"
eqrows cli_hostile 0

# ---- wrk: a few seconds over 16 connections ----------------------------------------
cat >"$tmp/wrk.lua" <<'LUA'
local threads = {}
function setup(t) table.insert(threads, t) end
function init(args)
    wrk.method = "POST"
    wrk.body = '{"event_type":"wrk","n":1}\n'
    wrk.headers["Content-Type"] = "application/x-ndjson"
    acked, s5xx, other = 0, 0, 0
end
function response(status, headers, body)
    if status == 202 then acked = acked + 1
    elseif status >= 500 then s5xx = s5xx + 1
    else other = other + 1 end
end
function done(summary, latency, requests)
    local a, f, o = 0, 0, 0
    for _, t in ipairs(threads) do a = a + t:get("acked"); f = f + t:get("s5xx"); o = o + t:get("other") end
    local e = summary.errors
    io.write(string.format("acked=%d s5xx=%d other=%d sockerr=%d\n", a, f, o,
        e.connect + e.read + e.write + e.timeout))
end
LUA
out=$(wrk -t2 -c16 -d3s --timeout 10s -s "$tmp/wrk.lua" "$U/v1/events/cli_wrk" 2>&1) || fail "wrk: $out"
line=$(echo "$out" | grep '^acked=') || fail "wrk printed no counts: $out"
echo "wrk: $line"
v() { echo "$line" | sed -n "s/.*$1=\([0-9]*\).*/\1/p"; }
[ "$(v s5xx)" = 0 ] && [ "$(v other)" = 0 ] || fail "wrk got answers other than 202: $line"
n=$(rows cli_wrk)
[ "$(v acked)" -gt 0 ] || fail "wrk: nothing acknowledged"
# every 202 was committed; at most one request per connection was in flight
# when wrk stopped (plus one per socket error) and may have committed unanswered
[ "$n" -ge "$(v acked)" ] || fail "wrk: $(v acked) events acknowledged, $n rows"
[ "$n" -le $(( $(v acked) + 16 + $(v sockerr) )) ] || fail "wrk: $(v acked) acknowledged, $n rows"

# ---- SIGTERM: drain, exit 0 ---------------------------------------------------------
kill -TERM "$spid"
i=0; while kill -0 "$spid" 2>/dev/null; do i=$((i + 1)); [ $i -gt 300 ] && fail "no exit 30 s after SIGTERM"; sleep 0.1; done
wait "$spid"; rc=$?; spid=""
[ $rc = 0 ] || fail ".serve exit $rc after SIGTERM"
echo "ok"
