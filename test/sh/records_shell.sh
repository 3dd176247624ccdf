#!/bin/sh
# The shell's .records command on a real server: create, get, update, find
# with filters, count, delete, import (NDJSON with a bad line, JSON array) and
# export, piped in as a script and given as arguments.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/records.XXXXXX")
need_pgpipe

$P "$D" "SET client_min_messages = warning" "DROP TABLE IF EXISTS records.rec_sh, records.rec_sh2, records.rec_sh3, records.rec_sh4" >/dev/null || fail "setup"

# create prints the id; get shows the document; no quoting needed
id=$($P "$D" '.records rec_sh create {"name": "Alice", "age": 31, "tags": ["x"]}') || fail "create"
printf '%s\n' "$id" | grep -qE '^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$|^[0-9a-f-]{36}$' || fail "create printed: $id"
out=$($P "$D" ".records rec_sh get $id") || fail "get"
has "$out" "{\"id\":\"$id\",\"fields\":{\"age\": 31, \"name\": \"Alice\", \"tags\": [\"x\"]},\"metadata\":{},"

# a script on stdin: several commands, filters, update, count, delete
out=$(cat <<SCRIPT | $P "$D"
.records rec_sh create {"name": "Bob", "age": 9, "address": {"city": "Lyon"}}
.records rec_sh create '{"name": "Carol", "age": "10", "first.name": "C"}'
.records rec_sh update $id {"age": 32}
.records rec_sh find age > 9
.records rec_sh count age > 9 and name != "Carol"
.records rec_sh find --sort -name --limit 2 age exists
.records rec_sh find address.city = "Lyon"
.records rec_sh find "first.name" = "C"
.records rec_sh count
SCRIPT
) || fail "script exit $?: $out"
has "$out" '"name": "Alice"'
has "$out" '"age": 32'
# age > 9: Alice (32) and Carol ("10", numeric on both sides); not Bob (9)
[ "$(printf '%s\n' "$out" | grep -c '"fields"')" = 6 ] || fail "find results: $out"
has "$out" "
1
"
has "$out" "
3"
first_sorted=$(printf '%s\n' "$out" | grep '"fields"' | sed -n 3p)
has "$first_sorted" '"Carol"'

# options after the FILTER (as .help shows them), a "--" inside a quoted value
# stays in the filter; a word after the options and an unknown option are said
out=$($P "$D" '.records rec_sh find age exists --sort -name --limit 1') || fail "find FILTER --options"
[ "$(printf '%s\n' "$out" | grep -c '"fields"')" = 1 ] || fail "find FILTER --limit 1: $out"
has "$out" '"Carol"'
out=$($P "$D" '.records rec_sh count name = "x --limit 1"') || fail "-- in a quoted value"
[ "$out" = 0 ] || fail "-- in a quoted value: $out"
err=$($P "$D" '.records rec_sh find age exists --limit 1 name = x' 2>&1) && fail "text after options accepted"
has "$err" 'unexpected "name" after the options'
err=$($P "$D" '.records rec_sh find age exists --limt 1' 2>&1) && fail "--limt accepted"
has "$err" "did you mean --limit?"
# reading a collection that is not there is an error and makes no table
err=$($P "$D" '.records rec_sh_typo find' 2>&1) && fail "find in no collection: $err"
has "$err" "no collection rec_sh_typo"
err=$($P "$D" '.records rec_sh_typo count' 2>&1) && fail "count in no collection: $err"
[ "$($P -tA "$D" "SELECT to_regclass('records.rec_sh_typo') IS NULL")" = t ] || fail "a read made the table"

# errors: a bad filter names the column, a missing id is an error, injection is inert
err=$($P "$D" '.records rec_sh find name = Alice' 2>&1) && fail "bad filter accepted"
has "$err" "column 8"
err=$($P "$D" ".records rec_sh get 00000000-0000-4000-8000-000000000000" 2>&1) && fail "missing id exit 0"
has "$err" "no record"
err=$($P "$D" '.records rec_sh"; DROP TABLE records.rec_sh; -- count' 2>&1) && fail "evil name accepted"
has "$err" "bad collection name"
out=$($P "$D" ".records rec_sh count name = \"'; DROP TABLE records.rec_sh; --\"") || fail "evil value"
[ "$out" = 0 ] || fail "evil value count: $out"
out=$($P "$D" '.records rec_sh count') || fail "count after injection"
[ "$out" = 3 ] || fail "count after injection: $out"

# delete
$P "$D" ".records rec_sh delete $id" | grep -q "deleted $id" || fail "delete"
$P "$D" ".records rec_sh delete $id" 2>/dev/null && fail "second delete exit 0"

# import NDJSON with one bad line (skipped, reported with file:line:column), a JSON array, export
printf '{"n": 1}\n{"n": 2,}\n{"n": 3}\n' > "$tmp/in.ndjson"
out=$($P "$D" ".records rec_sh2 import $tmp/in.ndjson" 2>"$tmp/err") || fail "import exit: $out"
has "$out" "imported 2, skipped 1"
has "$(cat "$tmp/err")" "in.ndjson:2:9:"
printf '[\n {"n": 4},\n {"n": 5}\n]\n' > "$tmp/in.json"
out=$($P "$D" ".records rec_sh2 import $tmp/in.json") || fail "array import"
has "$out" "imported 2, skipped 0"
# a JSON file that is one pretty-printed object is one record; another object
# after it stops the import
printf '{\n  "n": 6,\n  "tags": ["a",\n "b"]\n}\n' > "$tmp/one.json"
out=$($P "$D" ".records rec_sh3 import $tmp/one.json") || fail "one-object import: $out"
has "$out" "imported 1, skipped 0"
has "$($P "$D" '.records rec_sh3 find n = 6')" '"tags": ["a", "b"]'
printf '{\n "n": 7\n}\n{"n": 8}\n' > "$tmp/two.json"
out=$($P "$D" ".records rec_sh3 import $tmp/two.json" 2>&1) && fail "two objects: $out"
has "$out" "two.json:4:1: unexpected data after the JSON object"
out=$($P "$D" ".records rec_sh2 import --stop-on-error $tmp/in.ndjson" 2>/dev/null) && fail "stop-on-error exit 0"
has "$out" "nothing kept"
out=$($P "$D" ".records rec_sh2 export $tmp/out.ndjson") || fail "export"
has "$out" "exported 4 records"
[ "$(wc -l < "$tmp/out.ndjson")" = 4 ] || fail "export lines"
out=$($P "$D" ".records rec_sh2 export - --fields" | sort) || fail "export fields"
[ "$out" = '{"n": 1}
{"n": 3}
{"n": 4}
{"n": 5}' ] || fail "export --fields: $out"
# a FILE with a blank, quoted as everywhere in the shell; a quoted
# COLLECTION; an empty one is said (it read before the name's start)
mkdir -p "$tmp/a dir"
cp "$tmp/out.ndjson" "$tmp/a dir/in 2.ndjson"
out=$($P "$D" ".records 'rec_sh4' import '$tmp/a dir/in 2.ndjson'") || fail "import of a quoted FILE: $out"
has "$out" "imported 4"
out=$($P "$D" ".records rec_sh4 export \"$tmp/a dir/out 2.ndjson\"") || fail "export to a quoted FILE: $out"
[ "$(wc -l < "$tmp/a dir/out 2.ndjson")" = 4 ] || fail "export to a quoted FILE wrote no 4 lines"
err=$($P "$D" ".records '' count" 2>&1) && fail "an empty COLLECTION accepted: $err"
has "$err" 'bad collection name ""'
# a FILTER or JSON whose first word is longer than a shell word (1023 bytes)
# is still the FILTER or JSON: not an empty filter that matches every record
long=$(printf '%1100s' '' | tr ' ' k)
out=$($P "$D" ".records rec_sh4 count \"$long\" = 1") || fail "long FILTER: $out"
[ "$out" = 0 ] || fail "a long FILTER word matched every record: $out"
out=$($P "$D" ".records rec_sh4 find $long.x exists --limit 1") || fail "long path: $out"
[ -z "$out" ] || fail "a long path matched: $out"
id4=$($P "$D" ".records rec_sh4 create {\"$long\":1}") || fail "create with a long first word: $id4"
has "$($P "$D" ".records rec_sh4 count \"$long\" = 1")" "1"
out=$($P "$D" ".records rec_sh4 update $id4 {\"$long\":2}") || fail "update with a long first word: $out"
has "$($P "$D" ".records rec_sh4 count \"$long\" = 2")" "1"
err=$($P "$D" ".records rec_sh4 get $long" 2>&1) && fail "a long ID accepted: $err"
has "$err" "argument too long"
# an option's value too long is said so, not "missing value"
err=$($P "$D" ".records rec_sh4 find --sort $long" 2>&1) && fail "a long --sort accepted: $err"
has "$err" ".records find: --sort: value too long (1023 bytes at most)"
case $err in *"missing value"*) fail "a long --sort said: $err" ;; esac
out=$($P "$D" ".help records")
has "$out" "contains"
$P "$D" "DROP TABLE records.rec_sh, records.rec_sh2, records.rec_sh3, records.rec_sh4" >/dev/null
rm -rf "$tmp"
echo ok
