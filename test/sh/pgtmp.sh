#!/bin/sh
# tool/pgtmp.sh: start/stop a throwaway cluster, Unix socket only, and no
# server survives its owner: a normal exit, a failing command, SIGTERM, SIGKILL.
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

# the watchdog stops the server when its owner is SIGKILLed
sleep 300 &
owner=$!
sh tool/pgtmp.sh start "$tmp/a" --owner $owner >/dev/null || fail "start with owner failed"
kill -9 $owner
gone "$tmp/a" || fail "server survived its SIGKILLed owner"
echo "watchdog ok"

# run: stops the server after a failing command, keeps its exit status
sh tool/pgtmp.sh run "$tmp/b" -- sh -c 'build/test/pgpipe "$PGPIPE_TEST_DSN" "SELECT 1" >/dev/null && exit 3'
rc=$?
[ $rc = 3 ] || fail "run returned $rc, expected the command's 3"
gone "$tmp/b" || fail "server left running after run"

# run: interrupted by SIGTERM
sh tool/pgtmp.sh run "$tmp/c" -- sh -c 'kill -TERM $PPID; sleep 3' ; rc=$?
[ $rc != 0 ] || fail "interrupted run exited 0"
gone "$tmp/c" || fail "server left running after SIGTERM"
echo "run ok"
