#!/bin/sh
# sslmode=require (issue 11, point 3): a throwaway cluster on TCP loopback,
# first without SSL (a client that requires SSL must fail with a clear
# error), then with ssl = on and a self-signed certificate made here with
# openssl: the loader (.load) and the workers (.work) run with
# sslmode=require, and pg_stat_ssl shows ssl = true for their connections;
# sslmode=verify-ca with the certificate as root works too.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
command -v openssl >/dev/null 2>&1 || { echo "openssl missing"; exit 77; }
P=build/test/pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/ssl.XXXXXX")
chmod 755 "$tmp"
d=$tmp/pg
cleanup() { sh tool/pgtmp.sh stop "$d" >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { printf 'FAIL: %s\n' "$*"; [ -f "$d/server.log" ] && tail -n 5 "$d/server.log"; exit 1; }

sh tool/pgtmp.sh start "$d" --tcp --owner $$ >"$tmp/start.log" 2>&1 || fail "cluster: $(cat "$tmp/start.log")"
port=$(cat "$d/port")
TCP="host=127.0.0.1 port=$port user=postgres dbname=postgres"

# 1. the server has no SSL: sslmode=require fails, clearly
$P "$TCP sslmode=require" "SELECT 1" >"$tmp/out" 2>&1 && fail "sslmode=require connected to a server without SSL"
has "$(cat "$tmp/out")" "cannot connect"
has "$(cat "$tmp/out")" "server does not support SSL, but SSL was required"
$P "postgresql://postgres@127.0.0.1:$port/postgres?sslmode=require" ".load -" </dev/null >"$tmp/out" 2>&1 &&
    fail "sslmode=require (URI) connected to a server without SSL"
has "$(cat "$tmp/out")" "server does not support SSL, but SSL was required"
echo "ok: sslmode=require against a server without SSL: $(grep -o 'server does not support SSL.*' "$tmp/out" | head -n 1)"

# 2. a self-signed certificate for 127.0.0.1 in the data directory, ssl = on
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$d/data/server.key" -out "$d/data/server.crt" >"$tmp/openssl.log" 2>&1 ||
    fail "openssl: $(cat "$tmp/openssl.log")"
chmod 600 "$d/data/server.key"
if [ "$(id -u)" = 0 ]; then
    u=$(stat -c %U "$d/data")
    chown "$u" "$d/data/server.key" "$d/data/server.crt"
fi
cp "$d/data/server.crt" "$tmp/root.crt"
$P "$TCP" "ALTER SYSTEM SET ssl = on" "ALTER SYSTEM SET ssl_cert_file = 'server.crt'" \
    "ALTER SYSTEM SET ssl_key_file = 'server.key'" "SELECT pg_reload_conf()" >"$tmp/out" 2>&1 ||
    fail "enabling ssl: $(cat "$tmp/out")"
i=0
until $P "$TCP sslmode=require" "SELECT 1" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 50 ] || fail "the server did not take ssl = on: $(cat "$tmp/out")"; sleep 0.1
done

# 3. loader and workers with sslmode=require: each records what pg_stat_ssl
# says about its own connection
S="$TCP sslmode=require"
printf '{"event_type":"e","n":%d}\n' 1 2 3 4 5 6 7 8 9 10 >"$tmp/e.ndjson"
$P -b "$S" ".install" \
    "CREATE TABLE ssl_seen (who text, pid int, ssl boolean, version text)" \
    "INSERT INTO ssl_seen SELECT 'loader', pid, ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()" \
    ".load $tmp/e.ndjson --name ssl_test" \
    ".work 2 --batch 2 --until-empty --quiet --sql \"INSERT INTO ssl_seen SELECT 'worker', pid, ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND jsonb_array_length(\$1::jsonb) > 0\"" \
    >"$tmp/out" 2>&1 || fail "load and work with sslmode=require: $(cat "$tmp/out")"
has "$(cat "$tmp/out")" "read 10, loaded 10, dead-lettered 0"
has "$(cat "$tmp/out")" "done 10"
got=$($P -m csv "$S" "SELECT who, bool_and(ssl), count(*) > 0, min(version) FROM ssl_seen GROUP BY who ORDER BY who" | tail -n +2)
echo "pg_stat_ssl of the connections (who, all ssl, seen, version):"
echo "$got"
has "$got" "loader,t,t,TLS"
has "$got" "worker,t,t,TLS"
[ "$($P -m csv "$S" "SELECT count(*) FROM ssl_seen WHERE NOT ssl OR ssl IS NULL" | tail -n 1)" = 0 ] ||
    fail "a connection without SSL"
[ "$($P -m csv "$S" "SELECT count(*) FROM staging.raw_events WHERE source = 'ssl_test' AND processed" | tail -n 1)" = 10 ] ||
    fail "not all 10 events processed"

# 4. verify-ca / verify-full with the self-signed certificate as the root
$P "$TCP sslmode=verify-full sslrootcert=$tmp/root.crt" \
    "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()" >"$tmp/out" 2>&1 ||
    fail "verify-full: $(cat "$tmp/out")"
has "$(cat "$tmp/out")" " t"
# and a wrong root is refused
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=other" \
    -keyout "$tmp/other.key" -out "$tmp/other.crt" >/dev/null 2>&1
$P "$TCP sslmode=verify-ca sslrootcert=$tmp/other.crt" "SELECT 1" >"$tmp/out" 2>&1 &&
    fail "verify-ca accepted a certificate of another root"
has "$(cat "$tmp/out")" "certificate verify failed"
echo "ssl ok"
