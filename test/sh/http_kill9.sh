#!/bin/sh
# The kill -9 test of issue 21: a Python client posts 100,000 records (1,000
# NDJSON requests of 100 records, 8 connections), each request with its own
# Idempotency-Key, retrying it until it gets a 202 (refused, reset, timed out
# or 503: again after a backoff). Meanwhile the server is SIGKILLed and
# restarted on the same port 5 times, at random points of the client's
# progress (KILL9_SEED reproduces them). Every tenth request is first sent
# and abandoned (the connection closed before the answer: an answer lost on
# the way), so its retry meets a key that is committed or in flight; at the
# end another tenth is sent again after all the kills and must get the same
# answer as the first time (the keys survive SIGKILL). Proves:
# - on every 202 the client at once counts, on its own database connection,
#   the request's records: all 100 are there (committed before the 202);
# - at the end every record is in staging exactly once (count and count
#   distinct of the record id field).
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=${PGPIPE_TEST_DSN:-}
[ -n "$D" ] || { echo "no PGPIPE_TEST_DSN"; exit 77; }
need_pgpipe
command -v python3 >/dev/null 2>&1 || { echo "python3 missing (sh tool/deps.sh --test)"; exit 77; }
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/httpk9.XXXXXX")
chmod 755 "$tmp"
SEED=${KILL9_SEED:-$$}
KILLS=5
SRC=k9_$$
spid=""; cpid=""
cleanup() {
    [ -z "$spid" ] || { kill -9 "$spid" 2>/dev/null; wait "$spid" 2>/dev/null; }
    [ -z "$cpid" ] || { kill -9 "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null; }
}
trap cleanup EXIT
fail() {
    echo "FAIL: $* (KILL9_SEED=$SEED)"
    echo "-- client (tail):"; tail -n 20 "$tmp/client.out" 2>/dev/null
    echo "-- server log (tail):"; tail -n 20 "$tmp/serve.err" 2>/dev/null
    exit 1
}
q() { $P -m csv "$D" "$1" | sed 1d; }

# a free port below the ephemeral range: no outgoing connection of another
# program can take it while the server is down between a kill and its restart
port=$(python3 -c '
import random, socket
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError):
    low = 32768
for _ in range(200):
    p = random.randrange(10000, max(low, 11000))
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        s.close()
') || fail "no free port"
[ -n "$port" ] || fail "no free port"
# serve: start .serve on $port (the same port after every kill: a restarted
# service must rebind at once); waits for the port file, up to 30 s
serve() {
    rm -f "$tmp/port"
    $P "$D" ".serve --listen 127.0.0.1:$port --port-file $tmp/port --tokens off" 2>>"$tmp/serve.err" &
    spid=$!
    i=0
    while [ ! -s "$tmp/port" ]; do
        if ! kill -0 "$spid" 2>/dev/null; then
            wait "$spid"; spid=""
            grep -q "not built yet\|unknown command: .serve" "$tmp/serve.err" && { echo "the HTTP server is not built yet"; exit 77; }
            fail ".serve exited before binding port $port"
        fi
        i=$((i + 1)); [ $i -gt 300 ] && fail ".serve wrote no port file in 30 s"
        sleep 0.1
    done
    [ "$(cat "$tmp/port")" = "$port" ] || fail "port file says $(cat "$tmp/port"), not $port"
}

cat >"$tmp/client.py" <<'PY'
"""1,000 requests of 100 NDJSON records, 8 threads, each retried until 202;
every 202 checked on the thread's own database connection (libpq through
ctypes: no driver needed). Progress (requests acknowledged) in PROGRESS."""
import ctypes, ctypes.util, http.client, json, os, random, socket, sys, threading, time
port, dsn, src, progress_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
REQUESTS, PER, THREADS, DEADLINE = 1000, 100, 8, time.monotonic() + float(os.environ.get("KILL9_DEADLINE", "80"))

pq = ctypes.CDLL(ctypes.util.find_library("pq") or "libpq.so.5")
pq.PQconnectdb.restype = ctypes.c_void_p; pq.PQconnectdb.argtypes = [ctypes.c_char_p]
pq.PQstatus.argtypes = [ctypes.c_void_p]
pq.PQerrorMessage.restype = ctypes.c_char_p; pq.PQerrorMessage.argtypes = [ctypes.c_void_p]
pq.PQexec.restype = ctypes.c_void_p; pq.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
pq.PQresultStatus.argtypes = [ctypes.c_void_p]
pq.PQgetvalue.restype = ctypes.c_char_p
pq.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
pq.PQclear.argtypes = [ctypes.c_void_p]; pq.PQfinish.argtypes = [ctypes.c_void_p]

def scalar(conn, sql):
    res = pq.PQexec(conn, sql.encode())
    try:
        if pq.PQresultStatus(res) != 2:  # PGRES_TUPLES_OK
            raise RuntimeError(pq.PQerrorMessage(conn).decode())
        return pq.PQgetvalue(res, 0, 0).decode()
    finally:
        pq.PQclear(res)

lock = threading.Lock()
next_req = [0]
acked = [0]
stats = {"attempts": 0, "refused": 0, "reset": 0, "timeout": 0, "503": 0, "other": 0, "abandoned": 0}
answers = {}
failure = []

def body_of(i):
    return "".join(json.dumps({"event_type": "k9", "rid": i * PER + j, "user_id": "%s-%d" % (src, i),
                               "pad": "p" * 40}) + "\n" for j in range(PER)).encode()

def note(k):
    with lock:
        stats[k] += 1

def worker(tid):
    conn = pq.PQconnectdb(dsn.encode())
    if pq.PQstatus(conn) != 0:
        failure.append("database: " + pq.PQerrorMessage(conn).decode()); return
    rnd = random.Random(tid)
    h = None
    while not failure:
        with lock:
            i = next_req[0]; next_req[0] += 1
        if i >= REQUESTS:
            break
        body, key, backoff = body_of(i), "%s-req-%d" % (src, i), 0.05
        if i % 10 == 3:  # sent whole, then the connection closed unanswered
            try:
                a = socket.create_connection(("127.0.0.1", port), timeout=5)
                a.sendall(("POST /v1/events/%s HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-ndjson\r\n"
                           "Idempotency-Key: %s\r\nContent-Length: %d\r\n\r\n" % (src, key, len(body))).encode() + body)
                a.close()
                note("abandoned")
            except OSError:
                pass
        while True:
            if time.monotonic() > DEADLINE:
                failure.append("request %d not acknowledged before the deadline" % i); return
            note("attempts")
            try:
                if h is None:
                    h = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
                h.request("POST", "/v1/events/" + src, body=body,
                          headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": key})
                r = h.getresponse()
                data = r.read()
                status = r.status
                if r.getheader("Connection", "").lower() == "close":
                    h.close(); h = None
            except ConnectionRefusedError:
                note("refused"); status = None
            except (ConnectionError, http.client.HTTPException, BrokenPipeError):
                note("reset"); status = None
            except OSError:  # socket.timeout and the like
                note("timeout"); status = None
            if status == 202:
                break
            if status is None:
                if h is not None:
                    h.close(); h = None
            elif status == 503:
                note("503")
            elif status in (409, 429):
                note("other")
            else:
                failure.append("request %d: %d %r" % (i, status, data[:300])); return
            time.sleep(backoff * (0.5 + rnd.random()))
            backoff = min(backoff * 2, 1.0)
        # the 202: its records must be committed already, all of them, once
        try:
            ans = json.loads(data)
        except ValueError:
            failure.append("request %d: 202 with %r" % (i, data[:300])); return
        if ans.get("accepted") != PER or ans.get("dead_lettered") != 0:
            failure.append("request %d: 202 %r" % (i, ans)); return
        n = scalar(conn, "SELECT count(*) FROM staging.raw_events WHERE payload->>'user_id' = '%s-%d'" % (src, i))
        if n != str(PER):
            failure.append("request %d acknowledged (202 %r) with %s of its %d records committed" % (i, ans, n, PER))
            return
        if i % 10 == 7:
            answers[i] = data
        with lock:
            acked[0] += 1
            with open(progress_path + ".tmp", "w") as f:
                f.write("%d\n" % acked[0])
            os.replace(progress_path + ".tmp", progress_path)
    pq.PQfinish(conn)

threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
for t in threads: t.start()
for t in threads: t.join()
print("acked=%d %s" % (acked[0], " ".join("%s=%d" % kv for kv in sorted(stats.items()))))
# after every kill: the keys are still known, and answered as the first time
if not failure:
    for i, first in sorted(answers.items()):
        h = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        h.request("POST", "/v1/events/" + src, body=body_of(i),
                  headers={"Content-Type": "application/x-ndjson", "Idempotency-Key": "%s-req-%d" % (src, i)})
        r = h.getresponse()
        again = r.read()
        h.close()
        a, f = json.loads(again) if r.status == 202 else None, json.loads(first)
        if a is not None and a.pop("replayed", True) is not True:
            a = None
        if r.status != 202 or a != f:  # the first answer (a replay may say "replayed": true)
            failure.append("request %d sent again: %d %r, the first answer %r" % (i, r.status, again[:200], first[:200]))
            break
    print("%d requests sent again got their first answer" % len(answers))
if failure:
    print("FAIL:", failure[0]); sys.exit(1)
print("client done")
PY

serve
echo 0 >"$tmp/progress"
python3 "$tmp/client.py" "$port" "$D" "$SRC" "$tmp/progress" >"$tmp/client.out" 2>&1 &
cpid=$!
# the kill points: KILLS random progress marks between 5% and 90%, ascending
marks=$(awk -v s="$SEED" -v k=$KILLS 'BEGIN { srand(s); for (i = 0; i < k; i++) print int(50 + rand() * 850) }' | sort -n)
echo "seed $SEED: kills when the client has $(echo $marks | tr ' ' ',') of 1000 requests acknowledged"
kills=0
for m in $marks; do
    while [ "$(cat "$tmp/progress" 2>/dev/null || echo 0)" -lt "$m" ]; do
        kill -0 "$cpid" 2>/dev/null || fail "the client ended before mark $m"
        sleep 0.02
    done
    kill -9 "$spid"; wait "$spid" 2>/dev/null; spid=""
    kills=$((kills + 1))
    echo "kill $kills at $(cat "$tmp/progress") acknowledged"
    sleep "$(awk -v s="$SEED$kills" 'BEGIN { srand(s); printf "%.2f", rand() * 0.5 }')"
    serve
done
i=0
while kill -0 "$cpid" 2>/dev/null; do i=$((i + 1)); [ $i -gt 1200 ] && fail "the client did not end in 120 s"; sleep 0.1; done
wait "$cpid"; rc=$?; cpid=""
cat "$tmp/client.out"
[ $rc = 0 ] || fail "client exit $rc"
grep -q "client done" "$tmp/client.out" || fail "the client did not finish"

# every record exactly once
got=$(q "SELECT count(*) || ' ' || count(DISTINCT (payload->>'rid')::int) || ' ' || min((payload->>'rid')::int) || ' ' || max((payload->>'rid')::int) FROM staging.raw_events WHERE source = '$SRC'")
[ "$got" = "100000 100000 0 99999" ] || fail "rows, distinct record ids, min, max: $got (expected 100000 100000 0 99999)"
[ $kills = $KILLS ] || fail "$kills kills"

kill -TERM "$spid"
i=0; while kill -0 "$spid" 2>/dev/null; do i=$((i + 1)); [ $i -gt 300 ] && fail "no exit 30 s after SIGTERM"; sleep 0.1; done
wait "$spid"; rc=$?; spid=""
[ $rc = 0 ] || fail ".serve exit $rc after SIGTERM"
echo "ok: 100000 records exactly once through $kills SIGKILLs"
