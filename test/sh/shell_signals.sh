#!/bin/sh
# No run of pgpipe --local DIR leaves its server behind, however it ends
# (issue 18 §3.1): a missing -f file, SIGHUP, SIGTERM at a script read from
# stdin, SIGTERM during a long query, SIGINT ending a script, --bail, and
# SIGKILL (the watchdog). Ctrl-C during .load prints the command that
# resumes it, and that command finishes the load without duplicates (§3.9).
set -u
cd "${PGPIPE_TOP:-.}"
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/sig.XXXXXX")
chmod 755 "$tmp"
L=$tmp/l
cleanup() { exec 3>&- 2>/dev/null; sh tool/pgtmp.sh stop "$L" >/dev/null 2>&1; }
fail() { echo "FAIL: $*"; for f in "$tmp"/err*; do [ -f "$f" ] && sed 's/^/  /' "$f"; done; cleanup; exit 1; }
# wait (up to 60 s) for a condition
waitfor() { i=0; while ! eval "$1"; do i=$((i + 1)); [ $i -gt 600 ] && fail "timed out: $2"; sleep 0.1; done; }
# no server runs in $L: pg_ctl says so and no postmaster of its pid file lives
gone() {
    ! sh tool/pgtmp.sh status "$L" && {
        [ ! -f "$L/data/postmaster.pid" ] || ! kill -0 "$(head -n 1 "$L/data/postmaster.pid")" 2>/dev/null; }
}
alive() { kill -0 "$1" 2>/dev/null; }
# a shell on --local $L reading a fifo; $pid
start() {
    rm -f "$tmp/in"; mkfifo "$tmp/in"
    $P --local "$L" --fast -m csv <"$tmp/in" >"$tmp/out.$1" 2>"$tmp/err.$1" &
    pid=$!
    exec 3>"$tmp/in"
    echo "SELECT 'ready' AS r;" >&3
    waitfor "grep -q ready '$tmp/out.$1'" "$1: the shell did not start"
}
finish() { # $1 = name: the shell ends and no server is left
    waitfor "! alive $pid" "$1: the shell did not end"
    wait $pid 2>/dev/null
    exec 3>&-
    waitfor gone "$1: the server in $L is still running"
}

# a missing -f file: nothing starts
$P --local "$L" --fast -f "$tmp/nosuch.sql" 2>"$tmp/err.missing"; rc=$?
[ $rc != 0 ] || fail "missing -f file: exit 0"
grep -q "cannot open" "$tmp/err.missing" || fail "missing -f file: $(cat "$tmp/err.missing")"
gone || fail "missing -f file left a server in $L"

for s in HUP TERM QUIT; do
    start $s
    kill -$s $pid
    finish $s
done
# SIGINT at a script read from stdin ends the script (as in psql)
start INT
kill -INT $pid
finish INT

# SIGTERM during a long query: cancelled, then stopped
start query
echo "SELECT pg_sleep(60);" >&3
waitfor "$P -m csv \"\$(cat $L/conninfo)\" \"SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'\" 2>/dev/null | tail -n 1 | grep -qx 1" \
    "the long query did not start"
kill -TERM $pid
finish query
grep -q "57014" "$tmp/err.query" || fail "the long query was not cancelled: $(cat "$tmp/err.query")"

# --bail with a failing command
$P --local "$L" --fast --bail "SELECT 1/0" "SELECT 1" >/dev/null 2>&1; rc=$?
[ $rc = 1 ] || fail "--bail: exit $rc"
gone || fail "--bail left a server"

# SIGKILL: only the watchdog can stop it
start KILL
kill -KILL $pid
finish KILL

# ---- Ctrl-C during .load: the resume command --------------------------------
awk 'BEGIN { for (i = 1; i <= 3000; i++) print "{\"n\":" i "}" }' > "$tmp/big.ndjson"
$P "$D" "DROP TABLE IF EXISTS sig_load" "CREATE TABLE sig_load (n int)" \
    "CREATE FUNCTION sig_slow() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN PERFORM pg_sleep(0.005); RETURN NEW; END\$\$" \
    "CREATE TRIGGER sig_slow BEFORE INSERT ON sig_load FOR EACH ROW EXECUTE FUNCTION sig_slow()" \
    ".install" >/dev/null 2>"$tmp/err.setup" || fail "setup: $(cat "$tmp/err.setup")"
$P "$D" ".load $tmp/big.ndjson --table sig_load --map n=n --batch-rows 50 --channel ''" \
    >"$tmp/out.load" 2>"$tmp/err.load" &
pid=$!
waitfor "$P -m csv '$D' 'SELECT count(*) > 0 FROM sig_load' 2>/dev/null | tail -n 1 | grep -qx t" \
    "the load did not commit a batch"
kill -INT $pid
waitfor "! alive $pid" "the interrupted load did not end"
wait $pid
grep -q "interrupted" "$tmp/err.load" || fail "no interrupt message: $(cat "$tmp/out.load" "$tmp/err.load")"
resume=$(grep -A1 "or from a shell:" "$tmp/err.load" | tail -n 1 | sed 's/^ *pgpipe //')
[ -n "$resume" ] || fail "no resume command: $(cat "$tmp/err.load")"
grep -qF ".load $tmp/big.ndjson --table sig_load --map n=n --batch-rows 50 --channel \"\"" "$tmp/err.load" ||
    fail "the dot command to resume: $(cat "$tmp/err.load")"
before=$($P -m csv "$D" "SELECT count(*) FROM sig_load" | tail -n 1)
[ "$before" -lt 3000 ] || fail "the load was not interrupted ($before rows)"
$P "$D" "DROP TRIGGER sig_slow ON sig_load" >/dev/null
eval "$P $resume" >"$tmp/out.resume" 2>"$tmp/err.resume" || fail "the resume command failed: $(cat "$tmp/err.resume")"
out=$($P -m csv "$D" "SELECT count(*), count(DISTINCT n), min(n), max(n) FROM sig_load" | tail -n 1)
[ "$out" = "3000,3000,1,3000" ] || fail "after resuming: $out (count, distinct, min, max)"
$P "$D" "DROP TABLE sig_load" "DROP FUNCTION sig_slow()" >/dev/null
cleanup
echo "signals ok"
