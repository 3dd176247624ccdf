#!/bin/sh
# HTTPS: .pull through nginx terminating TLS with a self-signed certificate
# made here, in front of test/pull_server.py. With --ca-file the pages load
# (Link next URLs relative, gzip through the proxy); without it the
# certificate is refused at once (no retry), naming the problem.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=${PGPIPE_TEST_DSN:-}
[ -n "$D" ] || { echo "no PGPIPE_TEST_DSN"; exit 77; }
command -v nginx >/dev/null || NGINX=/usr/sbin/nginx
NGINX=${NGINX:-nginx}
"$NGINX" -v >/dev/null 2>&1 || { echo "nginx is not installed (tool/deps.sh --test)"; exit 77; }
for c in openssl python3; do
    command -v $c >/dev/null || { echo "$c is not installed (tool/deps.sh --test)"; exit 77; }
done
need_pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/pullng.XXXXXX")
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
    for f in server.err pull.err ng/error.log; do
        [ -f "$tmp/$f" ] && { echo "--- $f"; tail -n 20 "$tmp/$f"; }
    done
    exit 1
}
q() { $P -m csv "$D" "$1" | tail -n 1; }

python3 test/pull_server.py --port-file "$tmp/port" 2>"$tmp/server.err" &
spid=$!
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$tmp/port" ] || fail "the test server did not start"
port=$(cat "$tmp/port")

openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" >/dev/null 2>&1 || fail "openssl req"
ngport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/ng"
user=""
[ "$(id -u)" = 0 ] && user="user nobody nogroup;"
cat > "$tmp/ng/nginx.conf" <<NGX
$user
daemon off;
worker_processes 1;
pid $tmp/ng/nginx.pid;
error_log $tmp/ng/error.log info;
events { worker_connections 64; }
http {
    access_log $tmp/ng/access.log;
    client_body_temp_path $tmp/ng/body;
    proxy_temp_path $tmp/ng/proxy;
    fastcgi_temp_path $tmp/ng/fastcgi;
    uwsgi_temp_path $tmp/ng/uwsgi;
    scgi_temp_path $tmp/ng/scgi;
    server {
        listen 127.0.0.1:$ngport ssl;
        server_name localhost;
        ssl_certificate $tmp/cert.pem;
        ssl_certificate_key $tmp/key.pem;
        location / {
            proxy_pass http://127.0.0.1:$port;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
NGX
"$NGINX" -t -p "$tmp/ng" -e "$tmp/ng/error.log" -c "$tmp/ng/nginx.conf" >"$tmp/ng/t.log" 2>&1 ||
    fail "nginx -t: $(cat "$tmp/ng/t.log")"
"$NGINX" -p "$tmp/ng" -e "$tmp/ng/error.log" -c "$tmp/ng/nginx.conf" 2>>"$tmp/ng/error.log" &
npid=$!
i=0
until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $ngport), 1)" 2>/dev/null; do
    i=$((i + 1)); [ $i -lt 100 ] && kill -0 "$npid" 2>/dev/null || fail "nginx did not start"
    sleep 0.1
done

$P "$D" "DELETE FROM staging.raw_events WHERE source = 'plng'" \
    "DELETE FROM pgpipe.pull_state WHERE source = 'plng'" >/dev/null 2>&1
url="https://localhost:$ngport/link?n=120&per=25&gzip=1"
# without the certificate: refused, not retried
err=$($P "$D" ".pull '$url' --source plng --paginate link --retry-budget 60s" 2>&1) &&
    fail "a self-signed certificate was accepted"
case "$err" in *"built without libcurl"*) echo "the shell is built without libcurl"; exit 77 ;; esac
has "$err" "certificate"
has "$err" "https://localhost:$ngport/link"
[ "$(q "SELECT count(*) FROM staging.raw_events WHERE source = 'plng'")" = 0 ] || fail "rows without TLS"
# with it: every page, through TLS
$P "$D" ".pull '$url' --source plng --paginate link --ca-file $tmp/cert.pem" 2>"$tmp/pull.err" ||
    fail ".pull over HTTPS"
has "$(cat "$tmp/pull.err")" "5 pages, 120 records"
[ "$(q "SELECT count(DISTINCT payload->>'id') FROM staging.raw_events WHERE source = 'plng'")" = 120 ] ||
    fail "120 records over HTTPS"
grep -q "GET /link" "$tmp/ng/access.log" || fail "nginx saw no request"
echo "ok: HTTPS through nginx"
