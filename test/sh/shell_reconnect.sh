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
say "\\conninfo"
waitfor "$tmp/out" "connected to database \"postgres\" as user \"postgres\" on socket dir $PGPIPE_TEST_PGDIR"
say "\\c '$SI'"
say "SELECT 'back' || current_setting('port') AS p;"
waitfor "$tmp/out" "back$(cat "$S/port")"
# a .connect that fails keeps the connection; a script (this is one: its
# input is not a terminal) stops there, exit 2, as psql's
say ".connect 'host=$tmp/none port=1 user=x password=sekrit'"
waitfor "$tmp/err" "cannot connect"
# (the shell may have ended already: then this write meets no reader, and a
# SIGPIPE must not end this test; EPIPE is fine)
( trap '' PIPE; say "SELECT 'not run' AS n;" ) 2>/dev/null || true
exec 3>&-
i=0; while kill -0 $pid 2>/dev/null; do i=$((i + 1)); [ $i -gt 600 ] && fail "the shell did not end"; sleep 0.1; done
wait $pid; rc=$?
[ $rc = 2 ] || fail "exit $rc: a script whose .connect failed exits 2"
grep -q sekrit "$tmp/err" "$tmp/out" && fail "the password was shown"
grep -F "cannot connect" "$tmp/err" | grep -qF "(still connected to database" || fail "failed .connect"
grep -qF "the script stops here (its connection did not switch)" "$tmp/err" || fail "no word of the stop"
grep -q "not run" "$tmp/out" && fail "the script went on after the failed .connect"
pid=

# a script whose connection is lost inside a transaction stops there (exit 2,
# as psql): the rest would run outside the transaction the server rolled back
$P "$SI" -q -c "DROP TABLE IF EXISTS recon_tx; CREATE TABLE recon_tx (x int)" || fail "table"
mkfifo "$tmp/in2"
: >"$tmp/out"; : >"$tmp/err"
$P "$SI" -X <"$tmp/in2" >"$tmp/out" 2>"$tmp/err" &
pid=$!
exec 3>"$tmp/in2"
say "BEGIN;"
say "INSERT INTO recon_tx VALUES (1);"
waitfor "$tmp/out" "INSERT 0 1"
sh tool/pgtmp.sh restart "$S" || fail "restart in the transaction"
say "INSERT INTO recon_tx VALUES (2);"
say "COMMIT;"
say "INSERT INTO recon_tx VALUES (3);"
exec 3>&-
i=0; while kill -0 $pid 2>/dev/null; do i=$((i + 1)); [ $i -gt 600 ] && fail "the script did not end"; sleep 0.1; done
wait $pid; rc=$?
pid=
[ $rc = 2 ] || fail "exit $rc after the connection was lost in a transaction (want 2)"
grep -qF "the connection to the server was lost inside a transaction (the server rolled it back); the script stops here" "$tmp/err" || fail "no word of the lost transaction"
n=$($P "$SI" -qtA -c "SELECT count(*) FROM recon_tx") || fail "count"
[ "$n" = 0 ] || fail "$n rows of the lost transaction's script were committed"
# the same outside a transaction goes on (reconnects) unless ON_ERROR_STOP
outside() { # [OPTION]: SELECT, restart, two INSERTs; sets rc
    rm -f "$tmp/in3"; mkfifo "$tmp/in3"
    : >"$tmp/out"; : >"$tmp/err"
    $P "$SI" -X "$@" <"$tmp/in3" >"$tmp/out" 2>"$tmp/err" &
    pid=$!
    exec 3>"$tmp/in3"
    say "SELECT 'up' AS s;"
    waitfor "$tmp/out" "up"
    sh tool/pgtmp.sh restart "$S" 3>&- || fail "restart" # (the server must not hold the fifo)
    say "INSERT INTO recon_tx VALUES (4);"
    say "INSERT INTO recon_tx VALUES (5);"
    exec 3>&-
    i=0; while kill -0 $pid 2>/dev/null; do i=$((i + 1)); [ $i -gt 600 ] && fail "the script did not end"; sleep 0.1; done
    wait $pid; rc=$?
    pid=
}
outside
[ $rc = 1 ] || fail "exit $rc: a lost connection outside a transaction is one failed statement"
[ "$($P "$SI" -qtA -c "SELECT string_agg(x::text, ',' ORDER BY x) FROM recon_tx")" = 5 ] || fail "after the reset"
$P "$SI" -q -c "TRUNCATE recon_tx" || fail "truncate"
outside -v ON_ERROR_STOP=1
[ $rc = 2 ] || fail "exit $rc: ON_ERROR_STOP and a lost connection (want 2)"
grep -qF "the connection to the server was lost; the script stops here" "$tmp/err" || fail "ON_ERROR_STOP stop"
n=$($P "$SI" -qtA -c "SELECT count(*) FROM recon_tx") || fail "count"
[ "$n" = 0 ] || fail "ON_ERROR_STOP went on after the lost connection"
cleanup
echo "reconnect ok"
