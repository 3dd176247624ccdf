#!/bin/sh
# pgpipe --local DIR: a private server started for the session, stopped at the
# end unless --keep; reused when already running.
set -u
cd "${PGPIPE_TOP:-.}"
P=build/test/pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/local.XXXXXX")
chmod 755 "$tmp"
fail() { echo "FAIL: $*"; sh tool/pgtmp.sh stop "$tmp/l" >/dev/null 2>&1; exit 1; }
out=$($P --local "$tmp/l" --fast -m csv "SELECT 40 + 2 AS x") || fail "exit $?"
[ "$out" = "x
42" ] || fail "output: $out"
sh tool/pgtmp.sh status "$tmp/l" && fail "server still running without --keep"
$P --local "$tmp/l" --keep "CREATE TABLE t AS SELECT 1 AS one" >/dev/null || fail "--keep run"
sh tool/pgtmp.sh status "$tmp/l" || fail "--keep did not keep the server"
# reused, and left running since this run did not start it
out=$($P --local "$tmp/l" -m csv "SELECT one FROM t") || fail "reuse"
[ "$(echo "$out" | tail -n 1)" = 1 ] || fail "reuse output: $out"
sh tool/pgtmp.sh status "$tmp/l" || fail "a reused server was stopped"
sh tool/pgtmp.sh stop "$tmp/l"
$P --local "$tmp/l" "host=x" "SELECT 1" 2>/dev/null; [ $? = 2 ] || fail "CONNINFO with --local accepted"
echo "--local ok"
