#!/bin/sh
# TLS through nginx: the shipped tool/nginx/pgpipe-http.conf (only its EDIT
# lines rewritten) in front of `.serve --trusted-proxies 127.0.0.1`, with a
# self-signed certificate made here; curl --cacert posts through it: 202, the
# row committed, the Authorization header passed on, pgpipe sees the client's
# address from X-Forwarded-For (a forged one from the client is dropped by
# nginx), and nginx reuses its connections to pgpipe (keep-alive upstream).
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
top=$(pwd)
P=$top/build/test/pgpipe
command -v nginx >/dev/null || NGINX=/usr/sbin/nginx
NGINX=${NGINX:-nginx}
"$NGINX" -v >/dev/null 2>&1 || { echo "nginx is not installed (tool/deps.sh --test)"; exit 77; }
for c in curl openssl python3; do
    command -v $c >/dev/null || { echo "$c is not installed (tool/deps.sh --test)"; exit 77; }
done
need_pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/httpng.XXXXXX")
chmod 755 "$tmp"
spid=""; npid=""
cleanup() {
    [ -n "$npid" ] && kill -KILL "$npid" 2>/dev/null
    [ -n "$spid" ] && kill -KILL "$spid" 2>/dev/null
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    for f in serve.err ng/error.log ng/access.log; do
        [ -f "$tmp/$f" ] && { echo "--- $f"; tail -n 20 "$tmp/$f"; }
    done
    exit 1
}

$P "$PGPIPE_TEST_DSN" "DROP DATABASE IF EXISTS httpng" "CREATE DATABASE httpng" >/dev/null ||
    fail "createdb"
D="$PGPIPE_TEST_DSN dbname=httpng"
q() { $P -m csv "$D" "$1" | tail -n 1; }
tok=$($P "$D" ".serve token add ngx nginx-test" 2>/dev/null | tail -n 1)
case "$tok" in pgp_*) ;; *) fail "token add: $tok" ;; esac

# a self-signed certificate for localhost and 127.0.0.1
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || fail "openssl req"

# pgpipe on a port of its own choosing
$P "$D" ".serve --listen 127.0.0.1:0 --port-file $tmp/port --trusted-proxies 127.0.0.1 --access-log" \
    2>"$tmp/serve.err" &
spid=$!
i=0
while [ ! -s "$tmp/port" ] && kill -0 "$spid" 2>/dev/null && [ $i -lt 300 ]; do
    sleep 0.1; i=$((i + 1))
done
if [ ! -s "$tmp/port" ]; then
    grep -q "not built yet" "$tmp/serve.err" && { echo "the HTTP server is not built yet"; exit 77; }
    fail "pgpipe did not start"
fi
port=$(cat "$tmp/port")

# nginx, unprivileged, in a prefix of its own, on a free loopback port
ngport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/ng/conf.d"
sed -e "s|server 127.0.0.1:8080;.*|server 127.0.0.1:$port;|" \
    -e "s|listen 443 ssl;.*|listen 127.0.0.1:$ngport ssl;|" \
    -e "s|server_name ingest.example.com;.*|server_name localhost;|" \
    -e "s|ssl_certificate .*|ssl_certificate $tmp/cert.pem;|" \
    -e "s|ssl_certificate_key .*|ssl_certificate_key $tmp/key.pem;|" \
    tool/nginx/pgpipe-http.conf > "$tmp/ng/conf.d/pgpipe-http.conf"
grep -q "127.0.0.1:$port" "$tmp/ng/conf.d/pgpipe-http.conf" && grep -q "$tmp/key.pem" "$tmp/ng/conf.d/pgpipe-http.conf" ||
    fail "the EDIT lines of tool/nginx/pgpipe-http.conf were not found"
user=""
[ "$(id -u)" = 0 ] && user="user nobody nogroup;"
cat > "$tmp/ng/nginx.conf" <<EOF
$user
daemon off;
worker_processes 1;
pid $tmp/ng/nginx.pid;
error_log $tmp/ng/error.log info;
events { worker_connections 256; }
http {
    access_log $tmp/ng/access.log;
    client_body_temp_path $tmp/ng/body;
    proxy_temp_path $tmp/ng/proxy;
    fastcgi_temp_path $tmp/ng/fastcgi;
    uwsgi_temp_path $tmp/ng/uwsgi;
    scgi_temp_path $tmp/ng/scgi;
    include $tmp/ng/conf.d/pgpipe-http.conf;
}
EOF
"$NGINX" -t -p "$tmp/ng" -e "$tmp/ng/error.log" -c "$tmp/ng/nginx.conf" >"$tmp/ng/t.log" 2>&1 ||
    fail "nginx -t: $(cat "$tmp/ng/t.log")"
"$NGINX" -p "$tmp/ng" -e "$tmp/ng/error.log" -c "$tmp/ng/nginx.conf" 2>>"$tmp/ng/error.log" &
npid=$!
i=0
until curl -s -o /dev/null --cacert "$tmp/cert.pem" "https://localhost:$ngport/healthz"; do
    i=$((i + 1)); [ $i -lt 100 ] && kill -0 "$npid" 2>/dev/null || fail "nginx did not start"
    sleep 0.1
done

# through TLS from 127.0.0.2 (so the client's address differs from nginx's),
# with a forged X-Forwarded-For that nginx must replace
post() { # BODY [CURL ARGS]: the status; the body in $tmp/body
    b=$1; shift
    curl -s -o "$tmp/body" -w '%{http_code}' --max-time 30 --cacert "$tmp/cert.pem" \
        --interface 127.0.0.2 -H 'Content-Type: application/json' -H 'X-Forwarded-For: 203.0.113.7' \
        --data-binary "$b" "$@" "https://localhost:$ngport/v1/events/ngx"
}
[ "$(post '{"via":"nginx","n":1}' -H "Authorization: Bearer $tok")" = 202 ] ||
    fail "POST through nginx: $(cat "$tmp/body")"
has "$(cat "$tmp/body")" '"accepted":1'
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE source = 'ngx' AND payload->>'via' = 'nginx'")" = 1 ] ||
    fail "the row is not in staging"
[ "$(post '{"via":"nginx","n":2}')" = 401 ] || fail "no token through nginx"
# a second request on nginx's kept-alive upstream connection
[ "$(post '{"via":"nginx","n":3}' -H "Authorization: Bearer $tok")" = 202 ] || fail "second POST"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE source = 'ngx'")" = 2 ] || fail "2 rows"

# the client's address reached pgpipe from nginx's X-Forwarded-For; the forged one did not
has "$(cat "$tmp/ng/access.log")" "127.0.0.2"
i=0
until grep -q "127.0.0.2" "$tmp/serve.err"; do
    i=$((i + 1)); [ $i -lt 50 ] || fail "pgpipe's access log does not show the client 127.0.0.2"
    sleep 0.1
done
grep -q "203.0.113.7" "$tmp/serve.err" && fail "pgpipe believed the client's forged X-Forwarded-For"

# nginx kept its upstream connections alive: fewer connections to pgpipe than
# requests through nginx (read straight from pgpipe, one connection more)
through=$(wc -l < "$tmp/ng/access.log")
accepted=$(curl -s "http://127.0.0.1:$port/metrics" | sed -n 's/^pgpipe_http_connections_accepted_total \([0-9]*\).*/\1/p')
[ -n "$accepted" ] || fail "no pgpipe_http_connections_accepted_total in /metrics"
[ $((accepted - 1)) -lt "$through" ] || fail "$through requests through nginx took $((accepted - 1)) connections"

kill -QUIT "$npid"; wait "$npid"; npid=""
kill -TERM "$spid"; wait "$spid"; rc=$?; spid=""
[ $rc = 0 ] || fail "pgpipe exit $rc after SIGTERM"
$P "$PGPIPE_TEST_DSN" "DROP DATABASE IF EXISTS httpng" >/dev/null 2>&1
echo "ok"
