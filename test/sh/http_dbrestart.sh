#!/bin/sh
# .serve when the database's sessions go under it (its own throwaway cluster):
# - SIGHUP after a restart of the database: the server's token connection
#   says CONNECTION_OK until a query fails, so the reload connects again and
#   reads once more: ONE SIGHUP enforces a revocation and a new token;
# - --spool: a group whose commit fails because the connections are gone
#   (sessions ended, no new ones allowed) answers 503, and its retry, sent at
#   once, is spooled (README: "or a group's commit failed (its retry is
#   spooled)"), not sent to another committer's dead connection; the database
#   back, it is drained once.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=$(pwd)/build/test/pgpipe
need_pgpipe
command -v curl >/dev/null 2>&1 || { echo "curl missing"; exit 77; }
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/httpdbr.XXXXXX")
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
start() { # ARGS...: .serve in the background on a port of its own
    rm -f "$tmp/port"
    $P "$1" ".serve --listen 127.0.0.1:0 --port-file $tmp/port --access-log $2" 2>"$tmp/serve.err" &
    spid=$!
    i=0
    while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
    [ -s "$tmp/port" ] || fail "the server did not start"
    U=http://127.0.0.1:$(cat "$tmp/port")
}
stop() {
    kill -TERM "$spid"
    wait "$spid"
    rc=$?
    spid=""
    [ $rc = 0 ] || fail "exit $rc after SIGTERM"
}
# post SOURCE BODY [curl args...]: the status
post() {
    src=$1 body=$2
    shift 2
    curl -s -m 20 -o "$tmp/body" -w '%{http_code}' -H 'Content-Type: application/json' "$@" \
        --data-binary "$body" "$U/v1/events/$src"
}
reloads() { grep -c 'tokens reloaded' "$tmp/serve.err"; }
outcomes() { grep -c 'tokens reloaded\|reloading the tokens failed' "$tmp/serve.err"; }
hup() { # one SIGHUP; wait until the server logs its outcome
    n=$(outcomes)
    kill -HUP "$spid"
    i=0
    while [ "$(outcomes)" = "$n" ]; do
        i=$((i + 1)); [ $i -lt 100 ] || fail "no reload logged 10 s after SIGHUP"
        sleep 0.1
    done
}

# ---- SIGHUP after a database restart: one is enough ----
start "$D" ""
[ "$(post rs '{"n":1}')" = 202 ] || fail "no token yet: $(cat "$tmp/body")"
tok1=$($P "$D" ".serve token add rs one" 2>/dev/null | tail -n 1)
case "$tok1" in pgp_*) ;; *) fail "token add: $tok1" ;; esac
hup
[ "$(post rs '{"n":2}')" = 401 ] || fail "a token exists: no token must be 401"
[ "$(post rs '{"n":3}' -H "Authorization: Bearer $tok1")" = 202 ] || fail "token one refused"
sh tool/pgtmp.sh restart "$tmp/pg" >/dev/null || fail "cannot restart the cluster"
id1=$(q "SELECT id FROM pgpipe.http_tokens WHERE source = 'rs'")
$P "$D" ".serve token revoke rs $id1" >/dev/null || fail "revoke"
tok2=$($P "$D" ".serve token add rs two" 2>/dev/null | tail -n 1)
before=$(reloads)
hup
[ "$(reloads)" = $((before + 1)) ] || fail "the reload after the restart: $(grep tokens "$tmp/serve.err" | tail -n 2)"
st=$(post rs '{"n":4}' -H "Authorization: Bearer $tok1")
[ "$st" = 403 ] || fail "a revoked token after one SIGHUP: $st (the old tokens stayed)"
# (the committers' sessions went with the restart: a group may fail first, 503)
i=0
while st=$(post rs '{"n":5}' -H "Authorization: Bearer $tok2") && [ "$st" = 503 ] && [ $i -lt 20 ]; do
    i=$((i + 1)); sleep 0.2
done
[ "$st" = 202 ] || fail "the new token after one SIGHUP: $st $(cat "$tmp/body")"
stop
echo "reload after a restart ok"

# ---- --spool: the retry of a group whose commit failed is spooled ----
$P "$D" "CREATE DATABASE sp" >/dev/null || fail "createdb"
start "$D dbname=sp" "--tokens off --committers 4 --spool $tmp/spool --spool-device srv-1"
[ "$(post up '{"n":0}')" = 202 ] || fail "up: $(cat "$tmp/body")"
# the committers' sessions end and no new ones are let in: each committer's
# connection says CONNECTION_OK until it is used
$P "$D" "ALTER DATABASE sp ALLOW_CONNECTIONS false" \
    "SELECT count(pg_terminate_backend(pid, 5000)) FROM pg_stat_activity WHERE datname = 'sp' AND application_name = 'pgpipe http ingest'" \
    >/dev/null || fail "cannot end the sessions"
st1=$(post sp '{"n":1}' -H 'Idempotency-Key: k-1')
b1=$(cat "$tmp/body")
st2=$(post sp '{"n":1}' -H 'Idempotency-Key: k-1')
b2=$(cat "$tmp/body")
case "$st1 $b1" in "503 "*not_committed*|"202 "*'"spooled":1'*) ;; *) fail "the first: $st1 $b1" ;; esac
case "$st2 $b2" in "202 "*'"spooled":1'*) ;; *) fail "the retry after [$st1 $b1]: $st2 $b2" ;; esac
$P "$D" "ALTER DATABASE sp ALLOW_CONNECTIONS true" >/dev/null || fail "cannot let sessions in"
i=0
until [ "$($P -m csv "$D dbname=sp" "SELECT count(*) FROM staging.raw_events WHERE source = 'sp'" | sed 1d)" = 1 ] &&
      curl -s -m 5 "$U/metrics" | grep -q '^pgpipe_spool_records 0$'; do
    i=$((i + 1)); [ $i -lt 150 ] || fail "not drained: $(curl -s "$U/metrics" | grep spool)"
    sleep 0.2
done
[ "$(post sp '{"n":1}' -H 'Idempotency-Key: k-1')" = 202 ] || fail "after the drain"
sleep 0.5
[ "$($P -m csv "$D dbname=sp" "SELECT count(*) FROM staging.raw_events WHERE source = 'sp'" | sed 1d)" = 1 ] ||
    fail "the key's records twice"
stop
echo "spooled retry after a failed commit ok"
