#!/bin/sh
# Ctrl-C while a COMMIT hangs (issue 20): with synchronous_standby_names
# naming a standby that is not there, every COMMIT waits forever. .load and
# .work used to ignore Ctrl-C then; now it cancels (PQcancel on the loader's
# and the workers' own connections), the shell ends in bounded time with a
# non-zero status and says what is committed and what is not. PostgreSQL
# keeps a COMMIT whose wait for the standby is cancelled committed locally
# (with a WARNING): the report must count those as committed. A second
# Ctrl-C is harmless. A cluster of its own: the setting would hang every
# other test on the shared one.
set -u
cd "${PGPIPE_TOP:-.}"
P=build/test/pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/cancel.XXXXXX")
chmod 755 "$tmp"
C=$tmp/c
cleanup() { sh tool/pgtmp.sh stop "$C" >/dev/null 2>&1; }
pid=
fail() { echo "FAIL: $*"; [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; for f in "$tmp"/err* "$tmp"/out*; do [ -f "$f" ] && { echo "== $f"; sed 's/^/  /' "$f"; }; done; cleanup; exit 1; }
waitfor() { i=0; while ! eval "$1"; do i=$((i + 1)); [ $i -gt 300 ] && fail "timed out: $2"; sleep 0.1; done; }
alive() { kill -0 "$1" 2>/dev/null; }
D=$(sh tool/pgtmp.sh start "$C" --owner $$ 2>"$tmp/err.start") || fail "cluster: $(cat "$tmp/err.start")"
q() { $P -m csv "$D" "$1" 2>>"$tmp/err.q" | tail -n 1; }
sync_on() { # every COMMIT of a transaction that wrote waits for standby "nobody"
    $P "$D" "ALTER SYSTEM SET synchronous_commit = on" \
        "ALTER SYSTEM SET synchronous_standby_names = 'nobody'" "SELECT pg_reload_conf()" \
        >/dev/null 2>>"$tmp/err.q" || fail "sync on"
}
sync_off() {
    $P "$D" "ALTER SYSTEM RESET synchronous_standby_names" "SELECT pg_reload_conf()" \
        >/dev/null 2>>"$tmp/err.q" || fail "sync off"
}
stuck() { [ "$(q "SELECT count(*) >= $1 FROM pg_stat_activity WHERE wait_event = 'SyncRep'")" = t ]; }

awk 'BEGIN { for (i = 1; i <= 2000; i++) print "{\"event_type\":\"c\",\"n\":" i "}" }' > "$tmp/in.ndjson"
$P "$D" ".install" "CREATE TABLE cancel_load (n int)" \
    "CREATE FUNCTION cancel_slow() RETURNS trigger LANGUAGE plpgsql AS \$\$BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END\$\$" \
    "CREATE TRIGGER cancel_slow BEFORE INSERT ON cancel_load FOR EACH ROW EXECUTE FUNCTION cancel_slow()" \
    "CREATE TABLE cancel_out (n int)" >/dev/null 2>"$tmp/err.setup" || fail "setup: $(cat "$tmp/err.setup")"

# ---- .load: the COMMITs of the batches in flight hang -----------------------
$P "$D" ".load $tmp/in.ndjson --table cancel_load --map n=n --batch-rows 100 --channel ''" \
    >"$tmp/out.load" 2>"$tmp/err.load" &
pid=$!
waitfor "[ \"\$(q 'SELECT count(*) > 0 FROM cancel_load')\" = t ]" "the load did not commit a batch"
sync_on
waitfor "stuck 1" "no COMMIT of the load waits for the standby"
kill -INT $pid
sleep 0.2
kill -INT $pid 2>/dev/null   # a second Ctrl-C
waitfor "! alive $pid" "the load did not stop after Ctrl-C"
wait $pid; rc=$?
[ $rc != 0 ] || fail ".load exited 0 after Ctrl-C"
grep -q "interrupted" "$tmp/err.load" || fail "no interrupt message"
grep -q "committed while Ctrl-C cancelled them" "$tmp/err.load" || fail "the hung COMMIT is not reported as committed"
grep -q "not committed:" "$tmp/err.load" || fail "what is not committed is not reported"
loaded=$(sed -n 's/.*: read [0-9]*, loaded \([0-9]*\),.*/\1/p' "$tmp/out.load")
[ -n "$loaded" ] || fail "no summary line"
sync_off
# what the shell says is committed is what the server has
[ "$(q 'SELECT count(*) FROM cancel_load')" = "$loaded" ] || fail "the server has $(q 'SELECT count(*) FROM cancel_load') rows, the shell said $loaded"
[ "$(q "SELECT status FROM pgpipe.loads ORDER BY id DESC LIMIT 1")" = interrupted ] || fail "load status $(q "SELECT status FROM pgpipe.loads ORDER BY id DESC LIMIT 1")"
[ "$(q 'SELECT rows_loaded FROM pgpipe.loads ORDER BY id DESC LIMIT 1')" = "$loaded" ] || fail "pgpipe.loads disagrees"

# ---- .work: the workers' COMMITs hang ---------------------------------------
$P "$D" ".load $tmp/in.ndjson --channel ''" >/dev/null 2>"$tmp/err.load2" || fail "load for .work"
sync_on
$P "$D" ".work 2 --batch 50 --until-empty --sql \"INSERT INTO cancel_out SELECT (e->'payload'->>'n')::int FROM jsonb_array_elements(\$1::jsonb) e\"" \
    >"$tmp/out.work" 2>"$tmp/err.work" &
pid=$!
waitfor "stuck 2" "the workers' COMMITs do not wait for the standby"
kill -INT $pid
sleep 0.2
kill -INT $pid 2>/dev/null
waitfor "! alive $pid" ".work did not stop after Ctrl-C"
wait $pid; rc=$?
[ $rc != 0 ] || fail ".work exited 0 after Ctrl-C with COMMITs in flight"
grep -q "interrupted with work in flight" "$tmp/err.work" || fail "no interrupt report"
done_n=$(sed -n 's/^claimed [0-9]*, done \([0-9]*\),.*stopped$/\1/p' "$tmp/out.work")
[ -n "$done_n" ] || fail "no stats line"
sync_off
out=$(q 'SELECT count(*) FROM cancel_out')
[ "$out" = "$done_n" ] || fail "the handler's rows: $out, the shell said done $done_n"
cleanup
echo "cancel ok: .load committed $loaded rows, .work done $done_n"
