#!/bin/sh
# The spool from the command line: `pgpipe spool add|check|status|drain` and
# `.spool` in the shell, on a real server: a torn tail is found by check,
# cut off and reported by the next open, and the drain sends every whole
# record once (a second drain adds nothing).
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/spoolsh.XXXXXX")
need_pgpipe
src="spool-sh-$$"
i=1
while [ $i -le 200 ]; do printf '{"event_type":"t","i":%d}\n' $i; i=$((i + 1)); done > "$tmp/in.ndjson"

# a line that is not JSON: refused with FILE:LINE:COLUMN before anything is
# spooled (no folder made), from a file and from stdin; status and drain of a
# spool that is not there say so and make none
printf '{"event_type":"t","i":1}\n{"event_type":\n' > "$tmp/bad.ndjson"
out=$($P spool add "$tmp/sp" "$tmp/bad.ndjson" 2>&1) && fail "add of a bad file: $out"
has "$out" "bad.ndjson:2:15: expected a value after ':'"
has "$out" "nothing was spooled"
out=$($P "$D" ".spool add $tmp/sp -" < "$tmp/bad.ndjson" 2>&1) && fail "add of bad stdin: $out"
has "$out" "<stdin>:2:15:"
[ ! -e "$tmp/sp" ] || fail "a refused add made the spool"
out=$($P "$D" ".spool status $tmp/sp" 2>&1) && fail "status of no spool: $out"
has "$out" "no spool at \"$tmp/sp\""
out=$($P "$D" ".spool drain $tmp/sp" 2>&1) && fail "drain of no spool: $out"
[ ! -e "$tmp/sp" ] || fail "status or drain made a spool"
out=$(head -n 3 "$tmp/in.ndjson" | $P "$D" ".spool add $tmp/sp0 -") || fail "add from stdin: $out"
has "$out" "spooled 3 records"

out=$($P spool add "$tmp/sp" "$tmp/in.ndjson" --device shdev) || fail "add: $out"
has "$out" "spooled 200 records (last sequence 200)"
out=$($P spool check "$tmp/sp") || fail "check: $out"
has "$out" "whole, 200 records (1..200)"
has "$out" "device shdev"
has "$out" "every segment is whole"

# tear the last record: check says where, status (an open) cuts it off
seg=$tmp/sp/seg-0000000000000001.pps
size=$(wc -c < "$seg")
head -c $((size - 7)) "$seg" > "$tmp/cut" && cat "$tmp/cut" > "$seg"
out=$($P spool check "$tmp/sp"); rc=$?
[ $rc = 1 ] || fail "check of a torn spool exited $rc: $out"
has "$out" "199 whole records, 1 damaged"
out=$($P spool status "$tmp/sp") || fail "status: $out"
has "$out" "199 records"
has "$out" "recovery dropped 1 damaged record"
out=$($P spool check "$tmp/sp") || fail "check after recovery: $out"

# drain from the shell and as a program; nothing twice
out=$($P "$D" ".spool drain $tmp/sp --source $src --batch 50") || fail "drain: $out"
has "$out" "199 records, 199 loaded"
out=$($P spool drain "$tmp/sp" --db "$D" --source "$src") || fail "drain again: $out"
has "$out" "drained 0 segments"
n=$($P "$D" -m csv "SELECT count(*), count(DISTINCT payload->>'i') FROM staging.raw_events WHERE source = '$src'" | tail -n 1)
[ "$n" = "199,199" ] || fail "staging holds $n"
out=$($P spool bogus 2>&1); [ $? = 2 ] || fail "a bad sub-command is status 2"
has "$out" "usage: pgpipe spool"
out=$($P spool --help) || fail "spool --help is not status 0"
has "$out" "usage: pgpipe spool"
out=$($P spool status --devise x "$tmp/sp" 2>&1); [ $? = 2 ] || fail "an unknown option is not status 2"
has "$out" "unknown option --devise"
# .health names the spool of $PGPIPE_SPOOL_DIR
$P spool add "$tmp/sp" "$tmp/in.ndjson" >/dev/null || fail "add again"
out=$(PGPIPE_SPOOL_DIR=$tmp/sp $P "$D" .health)
has "$out" "WARN  spool               200 records"
rm -rf "$tmp"
echo "spool from the command line: ok"
