#!/bin/sh
# The shell's .load: a file, stdin, a mapped table, dead letters, exit status,
# and a second run of the same file that loads nothing twice.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/copysh.XXXXXX")

printf '{"event_type":"a","k":1}\n{"event_type":"b","k":2}\nnot json\n' >"$tmp/e.ndjson"
out=$($P "$D" ".load $tmp/e.ndjson --name copysh_ndjson") || fail "exit $?: $out"
has "$out" "read 3, loaded 2, dead-lettered 1"
out=$($P "$D" ".load $tmp/e.ndjson --name copysh_ndjson") || fail "exit $?: $out"
has "$out" "loaded 0, dead-lettered 0, skipped (loaded before) 3"
out=$($P -m csv "$D" "SELECT count(*) FROM staging.raw_events WHERE source = 'copysh_ndjson'")
has "$out" "2"
out=$($P -m csv "$D" "SELECT error_message FROM pgpipe.dead_letters WHERE source_name = 'copysh_ndjson'")
has "$out" "at line 3, column 1"

# a JSON file that is one pretty-printed object (a saved webhook) is one
# record, by --format json and by the format found from the first line;
# NDJSON in a .json file is still NDJSON
printf '{\n  "event_type": "copysh_one",\n  "n": [1,\n 2]\n}\n' > "$tmp/one.json"
out=$($P "$D" ".load $tmp/one.json --name copysh_one") || fail "one object: $out"
has "$out" "read 1, loaded 1, dead-lettered 0"
out=$($P -tA "$D" "SELECT payload->>'n' FROM staging.raw_events WHERE source = 'copysh_one'")
has "$out" "[1, 2]"
printf '{"event_type":"copysh_one2"}' | $P "$D" ".load - --format json --name copysh_one2" >"$tmp/out" 2>&1 ||
    fail "one object on stdin: $(cat "$tmp/out")"
has "$(cat "$tmp/out")" "read 1, loaded 1"
printf '{"event_type":"a","k":1}\n{"event_type":"a","k":2}\n' > "$tmp/nd.json"
out=$($P "$D" ".load $tmp/nd.json --name copysh_ndj") || fail "ndjson in .json: $out"
has "$out" "read 2, loaded 2"
printf '{\n "event_type": "a"\n}\n{"event_type": "b"}\n' > "$tmp/two.json"
out=$($P "$D" ".load $tmp/two.json --name copysh_two" 2>&1) && fail "two objects accepted: $out"
has "$out" "copysh_two:4:1: loader: unexpected data after the JSON object"
# NDJSON whose first record is broken (cut short) is still NDJSON: the next
# line fails at once as that record's continuation, so it starts a record;
# was: the whole file one object, the good records with the bad one
printf '{"event_type":"a","k":1\n{"event_type":"a","k":2}\n{"event_type":"a","k":3}\n' > "$tmp/cut.json"
out=$($P "$D" ".load $tmp/cut.json --name copysh_cut") || fail "broken first record: $out"
has "$out" "read 3, loaded 2, dead-lettered 1"
printf '{"event_type":"a","s":"open\n{"event_type":"a","k":2}\n' > "$tmp/cut2.json"
out=$(cat "$tmp/cut2.json" | $P "$D" ".load - --name copysh_cut2") || fail "broken first record, stdin: $out"
has "$out" "read 2, loaded 1, dead-lettered 1"
# a load that read the file as another format (an earlier version's guess,
# here --format json) is not resumed by one that finds NDJSON: it would skip
# the batches that run committed
printf '{"event_type":"a","k":1\n{"event_type":"a","k":2}\n' > "$tmp/was.json"
out=$($P "$D" ".load $tmp/was.json --format json --name copysh_was") || fail "as one object: $out"
has "$out" "read 1, loaded 0, dead-lettered 1"
out=$($P "$D" ".load $tmp/was.json --name copysh_was" 2>&1) && fail "resumed with another format: $out"
has "$out" "ran with format json; this one reads it as ndjson: resuming it would skip"
out=$($P "$D" ".load $tmp/was.json --name copysh_was --key copysh-was-2") || fail "--key: $out"
has "$out" "read 2, loaded 1, dead-lettered 1"

# a CSV loaded by mistake as NDJSON (every line dead-lettered), then again
# with the right format: not taken as a resume that skips every batch, but
# refused with the way out (another key), which then loads it
printf 'event_type,v\nfix,1\nfix,2\n' > "$tmp/fix.csv"
out=$($P "$D" ".load $tmp/fix.csv --format ndjson --name copysh_fix") || fail "wrong format: $out"
has "$out" "loaded 0, dead-lettered 3"
out=$($P "$D" ".load $tmp/fix.csv --format csv --name copysh_fix" 2>&1) && fail "format changed on resume: $out"
has "$out" "ran with format ndjson; this one csv: resuming it would skip"
case "$out" in *"skipped (loaded before)"*) fail "skipped: $out" ;; esac
out=$($P "$D" ".load $tmp/fix.csv --format ndjson --require v --name copysh_fix" 2>&1) && fail "mapping changed: $out"
has "$out" "another field mapping or --require"
out=$($P "$D" ".load $tmp/fix.csv --format csv --name copysh_fix --key copysh-fix-2") || fail "--key: $out"
has "$out" "read 2, loaded 2, dead-lettered 0"
out=$($P "$D" ".load $tmp/fix.csv --format ndjson --name copysh_fix") || fail "same options again: $out"
has "$out" "skipped (loaded before) 3"

# a named pipe (as <(zcat f.gz) gives): read once, by the loader; the shell's
# check that the file is there must not open it and take the writer's data
mkfifo "$tmp/fifo" || fail "mkfifo"
(printf '{"event_type":"a","k":1}\n{"event_type":"a","k":2}\n' > "$tmp/fifo") &
out=$(timeout 60 $P "$D" ".load $tmp/fifo --name copysh_fifo" 2>&1) || fail "fifo: exit $?: $out"
has "$out" "read 2, loaded 2, dead-lettered 0"
wait
printf '{"event_type":"fd","k":3}\n' > "$tmp/fd.ndjson"
out=$(timeout 60 $P "$D" ".load /dev/fd/3 --name copysh_fd3" 3<"$tmp/fd.ndjson" 2>&1) || fail "fd 3: $out"
has "$out" "read 1, loaded 1, dead-lettered 0"

# stdin, CSV, into a table of its own with a mapping (one value the server rejects)
$P "$D" "CREATE TABLE copysh_t (id int, name text, tag text, doc jsonb)" >/dev/null || fail "create"
out=$(printf 'id,name,doc\n1,ann,{}\nx,bob,[]\n3,,"{""a"":1}"\n' |
      $P "$D" ".load - --format csv --table copysh_t --map id,name,tag='fixed',doc=json:doc --channel ''") ||
    fail "exit $?: $out"
has "$out" "read 3, loaded 2, dead-lettered 1"
out=$($P -m csv "$D" "SELECT id, coalesce(name, 'NULL'), tag, doc FROM copysh_t ORDER BY id")
has "$out" '1,ann,fixed,{}'
has "$out" '3,NULL,fixed,"{""a"": 1}"'
out=$($P -m csv "$D" "SELECT sqlstate, line_number FROM pgpipe.dead_letters WHERE raw_text = 'x,bob,[]'")
has "$out" "22P02,3"

# a bad option and a missing file fail with a message
$P "$D" ".load" 2>"$tmp/err" && fail "no file accepted"
has "$(cat "$tmp/err")" "usage: .load"
$P "$D" ".load $tmp/nope.csv" 2>"$tmp/err" && fail "missing file accepted"
has "$(cat "$tmp/err")" "cannot open"
# an empty value (a script's unset variable) is refused, nothing staged:
# it staged rows with an empty source
printf '{"event_type":"e","copysh_empty":1}\n' > "$tmp/empty.ndjson"
for o in --source --event-type --key --source-field --event-type-field; do
    $P "$D" ".load $tmp/empty.ndjson $o ''" 2>"$tmp/err" && fail ".load $o '' accepted"
    has "$(cat "$tmp/err")" "$o: empty (leave the option out"
done
out=$($P -m csv "$D" "SELECT count(*) FROM staging.raw_events WHERE payload ? 'copysh_empty'" | tail -n 1)
[ "$out" = 0 ] || fail "an empty option staged $out rows"
# the wrong delimiter: a tab-separated file named .csv. Refused at its header
# (nothing committed), the run with --delimiter tab is a new load; with rows
# committed the comma way (a constant event type), the tab run is refused,
# naming the delimiters, instead of skipping them all as "loaded before"
printf 'event_type\tcopysh_delim\nclick\t1\nview\t2\n' > "$tmp/tabs.csv"
$P "$D" ".load $tmp/tabs.csv" 2>"$tmp/err" && fail "a TSV read as CSV found its header"
has "$(cat "$tmp/err")" 'no column "event_type"'
out=$($P "$D" ".load $tmp/tabs.csv --delimiter tab") || fail "the tab run after a refused header: $out"
has "$out" "read 2, loaded 2"
printf 'a\tb\n1\t2\n' > "$tmp/tabs2.csv"
out=$($P "$D" ".load $tmp/tabs2.csv --event-type copysh_delim2") || fail "comma run: $out"
has "$out" "loaded 1"
$P "$D" ".load $tmp/tabs2.csv --event-type copysh_delim2 --delimiter tab" 2>"$tmp/err" && fail "a resume with another delimiter accepted"
has "$(cat "$tmp/err")" "ran with the CSV delimiter ,; this one tab"
# a delimiter means CSV and wins over the name (.tsv that has commas)
printf 'event_type,copysh_delim3\nclick,1\n' > "$tmp/commas.tsv"
out=$($P "$D" ".load $tmp/commas.tsv --delimiter ,") || fail "--delimiter , on a .tsv: $out"
has "$out" "loaded 1"
$P "$D" ".load $tmp/commas.tsv --format ndjson --delimiter tab" 2>"$tmp/err" && fail "--delimiter with ndjson accepted"
has "$(cat "$tmp/err")" "--delimiter: only for --format csv"
out=$($P -m csv "$D" "SELECT count(*) FROM staging.raw_events WHERE payload ? 'copysh_delim' OR payload ? 'copysh_delim3'" | tail -n 1)
[ "$out" = 3 ] || fail "delimiter loads staged $out rows, wanted 3"
# a resumed load whose input has grown since: the last batch the first run
# committed ended with that input (5 records); the records after them load
for i in $(seq 1 95); do echo "{\"event_type\":\"copysh_grow\",\"id\":$i}"; done > "$tmp/grow.ndjson"
out=$($P "$D" ".load $tmp/grow.ndjson --key copysh-grow-$$ --batch-rows 10") || fail "grow first run: $out"
has "$out" "read 95, loaded 95"
for i in $(seq 96 105); do echo "{\"event_type\":\"copysh_grow\",\"id\":$i}"; done >> "$tmp/grow.ndjson"
out=$($P "$D" ".load $tmp/grow.ndjson --key copysh-grow-$$ --batch-rows 10") || fail "grow resume: $out"
has "$out" "read 105, loaded 10, dead-lettered 0, skipped (loaded before) 95"
out=$($P -m csv "$D" "SELECT count(DISTINCT payload->>'id') || '/' || count(*) FROM staging.raw_events WHERE event_type = 'copysh_grow'" | tail -n 1)
[ "$out" = "105/105" ] || fail "grown input: distinct/rows $out, wanted 105/105"
# a resume with another record limit would cut the batches elsewhere: refused
awk 'BEGIN { for (i = 1; i <= 300; i++) { s = ""; if (i % 7 == 0) for (k = 0; k < 60; k++) s = s "x";
      printf "{\"event_type\":\"copysh_max\",\"id\":%d,\"pad\":\"%s\"}\n", i, s } }' > "$tmp/max.ndjson"
out=$($P "$D" ".load $tmp/max.ndjson --batch-bytes 2000 --max-record-bytes 60") || fail "max first run: $out"
$P "$D" ".load $tmp/max.ndjson --batch-bytes 2000" 2>"$tmp/err" && fail "a resume with another --max-record-bytes accepted"
has "$(cat "$tmp/err")" "ran with max_record_bytes 60; this one 67108864"
# a JSON array broken after 2 batches: the error says what stays committed and
# the key to go on with; the fixed file (another size and time, another
# default key) is refused without it, and loads the rest with it: each record once
awk 'BEGIN { print "["; for (i = 1; i <= 30; i++) printf "{\"event_type\":\"copysh_arr\",\"n\":%d}%s\n", i, (i < 30 && i != 25) ? "," : ""; print "]" }' > "$tmp/arr.json"
$P "$D" ".load $tmp/arr.json --batch-rows 10" 2>"$tmp/err" && fail "a broken array loaded"
has "$(cat "$tmp/err")" "arr.json:27:1: loader: expected ',' or ']'"
has "$(cat "$tmp/err")" "has 20 records committed in 2 batches, which stay"
key=$(sed -n 's/.*run it again with --key \([^ ]*\) .*/\1/p' "$tmp/err")
[ -n "$key" ] || fail "no key in: $(cat "$tmp/err")"
sed -i 's/"n":25}$/"n":25},/' "$tmp/arr.json"
$P "$D" ".load $tmp/arr.json --batch-rows 10" 2>"$tmp/err" && fail "the fixed file loaded as a new load"
has "$(cat "$tmp/err")" "has changed since load"
out=$($P "$D" ".load $tmp/arr.json --batch-rows 10 --key $key") || fail "resume with the key: $out"
has "$out" "read 30, loaded 10, dead-lettered 0, skipped (loaded before) 20"
out=$($P -m csv "$D" "SELECT count(DISTINCT payload->>'n') || '/' || count(*) FROM staging.raw_events WHERE event_type = 'copysh_arr'" | tail -n 1)
[ "$out" = "30/30" ] || fail "fixed array: distinct/rows $out, wanted 30/30"
# a CSV header with a name twice is refused before anything is written
printf 'event_type,id,id\ncopysh_dup,1,2\n' > "$tmp/dup.csv"
$P "$D" ".load $tmp/dup.csv" 2>"$tmp/err" && fail "a header with a name twice loaded"
has "$(cat "$tmp/err")" "dup.csv:1:15: header row: column 3 is named \"id\" like column 2"
out=$($P -m csv "$D" "SELECT count(*) FROM staging.raw_events WHERE event_type = 'copysh_dup'" | tail -n 1)
[ "$out" = 0 ] || fail "$out rows of a refused header"
# a dead letter of a --table load is replayed into that table, not staging
$P "$D" "DROP TABLE IF EXISTS copysh_orders; CREATE TABLE copysh_orders (source text, event_type text, payload jsonb)" >/dev/null || fail "orders table"
printf '{"kind":"order","id":1}\n{"kind":"order","id":2,}\n' > "$tmp/orders.ndjson"
out=$($P "$D" ".load $tmp/orders.ndjson --table copysh_orders --map source='copysh_shop',event_type=kind,payload=json:\$record") || fail "orders load: $out"
has "$out" "loaded 1, dead-lettered 1"
$P "$D" "UPDATE pgpipe.dead_letters SET raw_text = '{\"kind\":\"order\",\"id\":2}' WHERE source_name = '$tmp/orders.ndjson' AND status = 'dead'" >/dev/null || fail "fix the dead letter"
out=$($P "$D" ".dlq replay --source $tmp/orders.ndjson") || fail "replay: $out"
has "$out" "replayed 1, refused 0"
out=$($P -m csv "$D" "SELECT string_agg(payload->>'id', ',' ORDER BY payload->>'id') FROM copysh_orders" | tail -n 1)
[ "$out" = '"1,2"' ] || fail "replayed into the load's table: $out, wanted 1,2"
out=$($P -m csv "$D" "SELECT count(*) FROM staging.raw_events WHERE source = 'copysh_shop'" | tail -n 1)
[ "$out" = 0 ] || fail "$out replayed rows went to staging.raw_events"
$P "$D" "DROP TABLE copysh_t, copysh_orders" >/dev/null
rm -rf "$tmp"
exit 0
