#!/bin/sh
# The shell's .serve: option errors (nothing listens), secrets refused on the
# command line, .serve token add|list|revoke, and a real server under curl:
# no token 401, a wrong one 403, the right one 202 with the row committed, a
# GitHub, a Stripe and a Standard Webhooks delivery signed as their senders
# sign them (stale ones refused), SIGHUP after a revoke 403, SIGTERM drains and exits 0,
# a second signal during a drain stops at once without acknowledging.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/httpsh.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
need_pgpipe
for c in curl openssl python3; do
    command -v $c >/dev/null || { echo "$c is not installed (tool/deps.sh --test)"; exit 77; }
done

$P "$PGPIPE_TEST_DSN" "DROP DATABASE IF EXISTS httpsh" "CREATE DATABASE httpsh" >/dev/null ||
    fail "createdb"
D="$PGPIPE_TEST_DSN dbname=httpsh"
q() { $P -m csv "$D" "$1" | tail -n 1; }

# ---- bad options: one line naming the option, non-zero, nothing listens ----
bad() { # COMMAND EXPECTED
    err=$($P "$D" "$1" 2>&1) && fail "accepted: $1"
    has "$err" "$2"
    case "$err" in *"serving on"*) fail "listened: $1" ;; esac
}
bad ".serve --bogus" "--bogus: unknown option"
bad ".serve --max-body x" "--max-body: expected a positive integer"
bad ".serve --committers 0" "--committers: expected an integer from 1 to 64"
bad ".serve --tokens maybe" "--tokens: expected auto, required or off"
bad ".serve --insecure=1" "--insecure: takes no value"
bad ".serve extra" 'unknown sub-command "extra" (token)'
bad ".serve --source 'gh:signature=github,secret=hunter2'" "secret=: a secret on the command line"
err=$($P "$D" ".serve --source 'gh:signature=github,secret=hunter2'" 2>&1)
case "$err" in *hunter2*) fail "the refused secret is echoed: $err" ;; esac
bad ".serve --source 'gh:signature=github'" "signature needs its secret"
bad ".serve --source 'gh:signature=gitlab,secret-env=X'" "expected github, stripe or standard"
bad ".serve --source 'gh:signature=github,secret-env=HSH_UNSET'" '$HSH_UNSET is not set'
bad ".serve --source 'gh:signature=github,secret-file=$tmp/none'" "secret-file: cannot open"
bad ".serve --source 'gh:secret-file=$tmp/none,secret-env=X'" "give one"
bad ".serve --source 'gh:colour=blue'" "colour: unknown key"
bad ".serve --source 'gh:tolerance=soon'" "tolerance: expected"
bad ".serve --source 'gh:window'" '"window": expected key=value'
bad ".serve --source 'bad/name'" "the name must be"
bad ".serve --source 'tilde~name'" "the name must be 1 to 64 characters of A-Z a-z 0-9 . _ -"
bad ".serve token add 'two words'" 'SOURCE "two words": a source is 1 to 64 characters'
bad ".serve token add ''" 'SOURCE "": a source is'
bad ".serve token add .." 'SOURCE "..": a source is 1 to 64 characters of A-Z a-z 0-9 . _ -, other than . and ..'
bad ".serve token add ." 'SOURCE ".": a source is'
bad ".serve --source ." "the name must be"
bad ".serve token revoke 'a/b' 1" 'SOURCE "a/b"'
bad ".serve --source a --source a" "source a is given twice"
bad ".serve --source 'a:event-type=x' --listen ''" "--listen: empty"
bad ".serve --listen 127.0.0.1:0:1" 'more than one '"':'"'; an IPv6 address goes in brackets'
bad ".serve --listen ::1:8080" '"::1:8080" is not HOST:PORT'
bad ".serve --listen '[::1'" 'is not [IPV6]:PORT'
bad ".serve --listen 127.0.0.1:70000" 'bad port in "127.0.0.1:70000"'
bad ".serve token" "missing add SOURCE"
bad ".serve token frob" 'unknown sub-command "frob" (add, list or revoke)'
bad ".serve token revoke hsh x" "ID: expected"
bad ".serve token add" "expected SOURCE [LABEL]"

# ---- tokens ----
out=$($P "$D" ".serve token add hsh 'ci job'" 2>"$tmp/add.err") || fail "token add: $(cat "$tmp/add.err")"
tok=$(printf '%s\n' "$out" | tail -n 1)
case "$tok" in pgp_???????????????????????????????????????????) ;; *) fail "token: $out" ;; esac
has "$(cat "$tmp/add.err")" "store it now, it is not shown again"
hint=$(printf '%s' "$tok" | tail -c 4)
out=$($P "$D" ".serve token list") || fail "token list"
has "$out" "...$hint"
has "$out" "ci job"
case "$out" in *"$tok"*) fail "list shows the token" ;; esac
[ "$(q "SELECT count(*) FROM pgpipe.http_tokens WHERE token_sha256 = '$(printf '%s' "$tok" | sha256sum | cut -c1-64)'")" = 1 ] ||
    fail "the stored hash is not the token's SHA-256"
id=$(q "SELECT id FROM pgpipe.http_tokens WHERE source = 'hsh'")
out=$($P "$D" ".serve token add other") || fail "token add other"
other=$(printf '%s\n' "$out" | tail -n 1)
out=$($P "$D" ".serve token list other") || fail "token list other"
case "$out" in *hsh*) fail "list other shows hsh: $out" ;; esac
bad ".serve token revoke other $id" "no live HTTP token $id of source \"other\""

# ---- a real server ----
printf 'It'"'"'s a Secret to Everybody\n' > "$tmp/gh.secret"
start() { # ARGS...: runs .serve in the background; sets pid and port
    rm -f "$tmp/port"
    $P "$D" ".serve --listen 127.0.0.1:0 --port-file $tmp/port $*" 2>"$tmp/serve.err" &
    pid=$!
    i=0
    while [ ! -s "$tmp/port" ] && kill -0 "$pid" 2>/dev/null && [ $i -lt 300 ]; do
        sleep 0.1; i=$((i + 1))
    done
    if [ ! -s "$tmp/port" ]; then
        if grep -q "not built yet" "$tmp/serve.err"; then
            echo "the HTTP server is not built yet (the option and token checks passed)"; exit 77
        fi
        fail "the server did not start: $(cat "$tmp/serve.err")"
    fi
    port=$(cat "$tmp/port")
}
post() { # SOURCE BODY [CURL ARGS...]: prints the status, the body in $tmp/body
    src=$1 body=$2; shift 2
    curl -s -o "$tmp/body" -w '%{http_code}' --max-time 30 -H 'Content-Type: application/json' \
        --data-binary "$body" "$@" "http://127.0.0.1:$port/v1/events/$src"
}
export HSH_STRIPE=whsec_stripe_shell_secret HSH_SW=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
start "--source 'gh:signature=github,secret-file=$tmp/gh.secret' --trusted-proxies 127.0.0.1" \
      "--source 'st:signature=stripe,secret-env=HSH_STRIPE,tolerance=300'" \
      "--source 'sw:signature=standard,secret-env=HSH_SW'"
has "$(cat "$tmp/serve.err")" "serving on http://127.0.0.1:$port"

[ "$(post hsh '{"n":1}')" = 401 ] || fail "no token: $(cat "$tmp/body")"
has "$(cat "$tmp/body")" '"error"'
[ "$(post hsh '{"n":2}' -H 'Authorization: Bearer pgp_wrong')" = 403 ] || fail "wrong token"
[ "$(post hsh '{"n":3}' -H "Authorization: Bearer $other")" = 403 ] || fail "another source's token"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE source = 'hsh'")" = 0 ] ||
    fail "a refused request wrote"
[ "$(post hsh '{"n":4}' -H "Authorization: Bearer $tok")" = 202 ] || fail "right token: $(cat "$tmp/body")"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE source = 'hsh' AND payload->>'n' = '4'")" = 1 ] ||
    fail "the accepted record is not in staging"

# a GitHub delivery signed as GitHub signs it (HMAC-SHA256 of the raw body,
# here by openssl), the same body tampered, and one unsigned
body='{"zen":"Keep it logically awesome.","hook_id":12345678}'
sig=sha256=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "It's a Secret to Everybody" | sed 's/.*= //')
[ "$(post gh "$body" -H "X-Hub-Signature-256: $sig" -H 'X-GitHub-Event: ping')" = 202 ] ||
    fail "signed delivery: $(cat "$tmp/body")"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE source = 'gh'")" = 1 ] || fail "signed row"
[ "$(post gh '{"zen":"Keep it logically awesome.","hook_id":12345679}' -H "X-Hub-Signature-256: $sig")" = 403 ] ||
    fail "tampered body"
[ "$(post gh "$body")" = 401 ] || fail "unsigned delivery"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE source = 'gh'")" = 1 ] || fail "a refused delivery wrote"

# Stripe and Standard Webhooks deliveries signed as their senders sign them
# (Python's hmac): fresh ones are taken, one an hour old is refused naming the
# tolerance
sign() { # KIND SECRET BODY TIMESTAMP [ID]: the signature header's value
    python3 - "$@" <<'PY'
import base64, hashlib, hmac, sys
kind, secret, body, ts = sys.argv[1:5]
if kind == "stripe":
    mac = hmac.new(secret.encode(), (ts + "." + body).encode(), hashlib.sha256).hexdigest()
    print("t=%s,v1=%s" % (ts, mac))
else:
    key = base64.b64decode(secret[len("whsec_"):])
    mac = hmac.new(key, ("%s.%s.%s" % (sys.argv[5], ts, body)).encode(), hashlib.sha256).digest()
    print("v1," + base64.b64encode(mac).decode())
PY
}
now=$(date +%s)
body='{"id":"evt_shell_1","type":"payment_intent.succeeded"}'
[ "$(post st "$body" -H "Stripe-Signature: $(sign stripe "$HSH_STRIPE" "$body" "$now")")" = 202 ] ||
    fail "stripe delivery: $(cat "$tmp/body")"
[ "$(post st "$body" -H "Stripe-Signature: $(sign stripe "$HSH_STRIPE" "$body" $((now - 3600)))")" = 401 ] ||
    fail "stale stripe delivery"
has "$(cat "$tmp/body")" "tolerance of 300 s"
[ "$(post st "$body" -H "Stripe-Signature: $(sign stripe whsec_other "$body" "$now")")" = 403 ] ||
    fail "stripe delivery with another secret"
body='{"type":"invoice.paid","data":{"n":7}}'
[ "$(post sw "$body" -H "webhook-id: msg_shell_1" -H "webhook-timestamp: $now" \
      -H "webhook-signature: $(sign standard "$HSH_SW" "$body" "$now" msg_shell_1)")" = 202 ] ||
    fail "standard webhooks delivery: $(cat "$tmp/body")"
[ "$(post sw "$body" -H "webhook-id: msg_shell_2" -H "webhook-timestamp: $((now + 3600))" \
      -H "webhook-signature: $(sign standard "$HSH_SW" "$body" $((now + 3600)) msg_shell_2)")" = 401 ] ||
    fail "future standard webhooks delivery"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE source IN ('st', 'sw')")" = 2 ] ||
    fail "the signed deliveries: $(q "SELECT count(*) FROM staging.raw_events WHERE source IN ('st', 'sw')") rows"

# revoke, SIGHUP: the token is refused (the reload happens at the loop's next turn)
$P "$D" ".serve token revoke hsh $id" >/dev/null || fail "revoke"
[ "$(post hsh '{"n":5}' -H "Authorization: Bearer $tok")" = 202 ] || fail "revoked before SIGHUP"
kill -HUP "$pid"
i=0
while [ "$(post hsh '{"n":6}' -H "Authorization: Bearer $tok")" != 403 ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "still accepted 10 s after SIGHUP"
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null || fail "SIGHUP ended the server"

kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
[ $rc = 0 ] || fail "exit $rc after SIGTERM: $(cat "$tmp/serve.err")"
has "$(cat "$tmp/serve.err")" "drained"

# a second signal during the drain stops at once: a request whose commit
# waits on a lock is not answered (and so not acknowledged), exit 1
start "--tokens off"
$P "$D" "SET application_name = 'httpsh_lock'" "BEGIN" \
    "LOCK TABLE staging.raw_events IN ACCESS EXCLUSIVE MODE" "SELECT pg_sleep(60)" >/dev/null 2>&1 &
lpid=$!
i=0
until [ "$(q "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'httpsh_lock' AND l.relation = 'staging.raw_events'::regclass AND l.mode = 'AccessExclusiveLock' AND l.granted")" = 1 ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "the lock was not taken"
    sleep 0.1
done
post hsh '{"n":"stuck"}' > "$tmp/stuck.code" &
cpid=$!
i=0
until [ "$(q "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'staging.raw_events'::regclass")" -ge 1 ]; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "the request's commit never waited on the lock"
    sleep 0.1
done
kill -INT "$pid"
i=0
until grep -q "draining" "$tmp/serve.err"; do
    i=$((i + 1)); [ $i -lt 100 ] || fail "no drain after SIGINT"
    sleep 0.1
done
kill -0 "$pid" 2>/dev/null || fail "the drain did not wait for the request in flight"
kill -TERM "$pid"
wait "$pid"
rc=$?
pid=""
[ $rc = 1 ] || fail "exit $rc after a second signal"
has "$(cat "$tmp/serve.err")" "stopped at once: the requests in flight were not answered"
wait "$cpid"
[ "$(cat "$tmp/stuck.code")" != 202 ] || fail "the stuck request was acknowledged"
q "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'httpsh_lock'" >/dev/null
wait "$lpid"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE payload->>'n' = 'stuck'")" = 0 ] ||
    fail "an unanswered request committed after the server stopped"

# beyond loopback without a live token: refused unless --insecure
$P "$D" "UPDATE pgpipe.http_tokens SET revoked_at = now()" >/dev/null
err=$($P "$D" ".serve --listen 0.0.0.0:0" 2>&1) && fail "listened beyond loopback without tokens"
case "$err" in *"serving on"*) fail "listened: $err" ;; esac
printf '%s\n' "$err" | grep -qi "token\|insecure" || fail "no reason given: $err"
bad ".serve --listen 127.0.0.1:0 --trusted-proxies 10.0.0.1/33" '"10.0.0.1/33" is not'

$P "$PGPIPE_TEST_DSN" "DROP DATABASE IF EXISTS httpsh" >/dev/null 2>&1
echo "ok"
