#!/bin/sh
# A lost connection (issue 18 §3.5): the shell says so once, reconnects on
# the next command, .conninfo and .health tell the real state, and .connect
# switches servers (keeping the old connection when the new one fails).
set -u
cd "${PGPIPE_TOP:-.}"
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/recon.XXXXXX")
chmod 755 "$tmp"
S=$tmp/s
cleanup() { exec 3>&- 2>/dev/null; [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; sh tool/pgtmp.sh stop "$S" >/dev/null 2>&1; }
fail() { echo "FAIL: $*"; echo "-- out:"; cat "$tmp/out"; echo "-- err:"; cat "$tmp/err"; cleanup; exit 1; }
waitfor() { # FILE TEXT: up to 60 s for TEXT to appear in FILE
    i=0
    while ! grep -qF -- "$2" "$1"; do
        i=$((i + 1)); [ $i -gt 600 ] && fail "timed out waiting for '$2' in $1"; sleep 0.1
    done
}
count() { grep -cF -- "$2" "$1"; }
waitcount() { # FILE TEXT N: up to 60 s for N lines with TEXT
    i=0
    while [ "$(count "$1" "$2")" -lt "$3" ]; do
        i=$((i + 1)); [ $i -gt 600 ] && fail "timed out waiting for $3 of '$2' in $1"; sleep 0.1
    done
}
SI=$(sh tool/pgtmp.sh start "$S" --owner $$) || fail "second server"
mkfifo "$tmp/in"
$P "$SI" <"$tmp/in" >"$tmp/out" 2>"$tmp/err" &
pid=$!
exec 3>"$tmp/in"
say() { printf '%s\n' "$1" >&3; }

say "SELECT 'one' AS a;"
waitfor "$tmp/out" "one"
say ".conninfo"
waitfor "$tmp/out" "database \"postgres\" as user \"postgres\" on socket dir $S"
sh tool/pgtmp.sh restart "$S" || fail "restart"
say "SELECT 'two' AS b;"
waitfor "$tmp/err" "the connection to the server was lost"
waitfor "$tmp/err" "Attempting reset: succeeded."
say "SELECT 'three' AS c;"
waitfor "$tmp/out" "three"
grep -q two "$tmp/out" && fail "the statement on the lost connection printed a result"
say ".conninfo"
waitcount "$tmp/out" "connected to database \"postgres\" as user \"postgres\" on socket dir $S" 2

# the server away: the reset fails, .conninfo and .health say so; back: reconnected
sh tool/pgtmp.sh stop "$S"
say "SELECT 'four' AS d;"
waitfor "$tmp/err" "trying again before the next command"
say ".conninfo"
waitfor "$tmp/out" "not connected: the connection to database"
say ".health"
waitfor "$tmp/out" "unreachable"
grep -q "not installed\|.install" "$tmp/out" && fail ".health gave advice for a dead server"
sh tool/pgtmp.sh start "$S" >/dev/null || fail "start again"
say "SELECT 'five' AS e;"
waitfor "$tmp/out" "five"
waitfor "$tmp/err" "pgpipe: reconnected to database"

# .connect: to the test server and back; a bad one keeps the current
say ".connect $D"
say "SELECT current_setting('unix_socket_directories') AS dir;"
waitfor "$tmp/out" "$PGPIPE_TEST_PGDIR"
say ".connect 'host=$tmp/none port=1 user=x password=sekrit'"
waitfor "$tmp/err" "cannot connect"
grep -q sekrit "$tmp/err" "$tmp/out" && fail "the password was shown"
grep -F "cannot connect" "$tmp/err" | grep -qF "(still connected to database" || fail "failed .connect"
say "\\conninfo"
waitfor "$tmp/out" "connected to database \"postgres\" as user \"postgres\" on socket dir $PGPIPE_TEST_PGDIR"
say "\\c '$SI'"
say "SELECT 'back' || current_setting('port') AS p;"
waitfor "$tmp/out" "back$(cat "$S/port")"
say ".quit"
exec 3>&-
i=0; while kill -0 $pid 2>/dev/null; do i=$((i + 1)); [ $i -gt 600 ] && fail "the shell did not end"; sleep 0.1; done
wait $pid; rc=$?
[ $rc = 1 ] || fail "exit $rc: the failed commands make it 1"
pid=
cleanup
echo "reconnect ok"
