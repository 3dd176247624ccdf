#!/bin/sh
# tool/pgtmp.sh: start/stop a throwaway cluster, Unix socket only, and no
# server survives its owner: a normal exit, a failing command, SIGTERM, SIGKILL.
# TCP on a free port that a restart keeps; usage errors exit 2.
set -u
cd "${PGPIPE_TOP:-.}"
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/pgtmp.XXXXXX")
chmod 755 "$tmp"
q() { build/test/pgpipe -m csv "$(cat "$1/conninfo")" "$2"; }
fail() { echo "FAIL: $*"; sh tool/pgtmp.sh stop "$tmp/a" >/dev/null 2>&1; exit 1; }
gone() { # wait (bounded) until no server runs in $1
    i=0
    while [ -f "$1/data/postmaster.pid" ] && [ $i -lt 60 ]; do sleep 0.5; i=$((i + 1)); done
    [ ! -f "$1/data/postmaster.pid" ]
}

info=$(sh tool/pgtmp.sh start "$tmp/a") || fail "start failed"
echo "conninfo: $info"
case "$info" in "host=$tmp/a "*) ;; *) fail "conninfo does not name the socket dir: $info" ;; esac
[ "$(q "$tmp/a" "SHOW listen_addresses" | tail -n 1)" = "\"\"" ] || fail "TCP is enabled"
[ "$(q "$tmp/a" "SELECT current_user" | tail -n 1)" = postgres ] || fail "cannot query"
sh tool/pgtmp.sh status "$tmp/a" || fail "status says not running"
sh tool/pgtmp.sh restart "$tmp/a" || fail "restart failed"
[ "$(q "$tmp/a" "SELECT 1" | tail -n 1)" = 1 ] || fail "no server after restart"
sh tool/pgtmp.sh stop "$tmp/a"
if sh tool/pgtmp.sh status "$tmp/a"; then fail "still running after stop"; fi
echo "start/restart/stop ok"

# --tcp without a port: a free one, kept by a restart with TCP still on
info=$(sh tool/pgtmp.sh start "$tmp/a" --tcp) || fail "start --tcp failed"
port=$(cat "$tmp/a/port")
[ "$info" = "host=127.0.0.1 port=$port user=postgres dbname=postgres" ] || fail "tcp conninfo: $info"
[ "$(q "$tmp/a" "SHOW listen_addresses" | tail -n 1)" = 127.0.0.1 ] || fail "TCP is off"
sh tool/pgtmp.sh restart "$tmp/a" || fail "restart (tcp) failed"
[ "$(cat "$tmp/a/port")" = "$port" ] || fail "restart changed the port"
[ "$(sh tool/pgtmp.sh conninfo "$tmp/a")" = "$info" ] || fail "restart changed the conninfo"
[ "$(q "$tmp/a" "SHOW listen_addresses" | tail -n 1)" = 127.0.0.1 ] || fail "TCP is off after restart"
sh tool/pgtmp.sh stop "$tmp/a"
echo "tcp + restart ok"

# the watchdog stops the server when its owner is SIGKILLed
sleep 300 &
owner=$!
sh tool/pgtmp.sh start "$tmp/a" --owner $owner >/dev/null || fail "start with owner failed"
sh tool/pgtmp.sh restart "$tmp/a" || fail "restart with owner failed"
kill -9 $owner
gone "$tmp/a" || fail "server survived its SIGKILLed owner"
echo "watchdog ok (after a restart)"

# run: stops the server after a failing command, keeps its exit status
sh tool/pgtmp.sh run "$tmp/b" -- sh -c 'build/test/pgpipe "$PGPIPE_TEST_DSN" "SELECT 1" >/dev/null && exit 3'
rc=$?
[ $rc = 3 ] || fail "run returned $rc, expected the command's 3"
gone "$tmp/b" || fail "server left running after run"
# the variables it sets, in a directory of its own that it removes after
out=$(sh tool/pgtmp.sh run -- sh -c 'echo "$PGHOST|$PGPORT|$PGUSER|$PGDATABASE|$PGPIPE_TEST_PGDIR|$PGPIPE_TEST_DSN"') ||
    fail "run -- sh failed"
d=${out%%|*}
[ "$out" = "$d|5432|postgres|postgres|$d|host=$d port=5432 user=postgres dbname=postgres" ] ||
    fail "run variables: $out"
[ ! -e "$d" ] || fail "run left its directory $d"

# run: interrupted by SIGTERM
sh tool/pgtmp.sh run "$tmp/c" -- sh -c 'kill -TERM $PPID; sleep 3' ; rc=$?
[ $rc != 0 ] || fail "interrupted run exited 0"
gone "$tmp/c" || fail "server left running after SIGTERM"
echo "run ok"

# usage errors exit 2 and say so
for args in "bogus" "start" "start $tmp/u --bogus" "start $tmp/u --port x" "run $tmp/u" "run --" "stop"; do
    # shellcheck disable=SC2086
    sh tool/pgtmp.sh $args >/dev/null 2>"$tmp/err"; rc=$?
    [ $rc = 2 ] || fail "pgtmp $args: exit $rc, expected 2"
    grep -q "usage\|unknown command" "$tmp/err" || fail "pgtmp $args: no usage error: $(cat "$tmp/err")"
done
[ ! -e "$tmp/u/data" ] || fail "a usage error started a cluster"
sh tool/pgtmp.sh >"$tmp/help" || fail "help exits non-zero"
grep -q "run \[DIR\] -- CMD" "$tmp/help" || fail "no help"
# bindir needs no compiler (tool/deps.sh asks before anything is built)
b=$(PATH=/usr/bin:/bin CC=/nonexistent sh tool/pgtmp.sh bindir) || fail "bindir failed"
[ -x "$b/pg_ctl" ] && [ -x "$b/initdb" ] || fail "bindir: $b has no pg_ctl/initdb"
# tool/pgtmp.c is built without -Werror by the wrapper: hold it to the rules here
# shellcheck disable=SC2046
${CC:-cc} -std=c11 -Wall -Wextra -Wpedantic -Werror -I. $(pkg-config --cflags libpq 2>/dev/null) \
    -fsyntax-only tool/pgtmp.c || fail "tool/pgtmp.c has warnings"
echo "usage errors, help, bindir ok"
rm -rf "$tmp"
