#!/bin/sh
# Hostile input through the COPY loader (the shell's .load): a 10 MB line,
# a 50 MB field, 100K levels of nesting, invalid UTF-8, NUL bytes, truncated
# files, Latin-1, a CSV with 10,000 columns, a BOM, CRLF/CR line ends, an empty
# file, a header only. Each load must end with a clear message, the bad records
# in pgpipe.dead_letters (with line and column), the good ones loaded, counts
# adding up (read = loaded + dead-lettered), no sanitizer report, and the
# -O2 shell's peak RSS under a bound (batch_bytes + a few times the record
# limit).
#
#   sh test/sh/hostile.sh                 the test (needs PGPIPE_TEST_DSN)
#   sh test/sh/hostile.sh --generate DIR  only write the corpus into DIR
#
# The corpus is generated (deterministic: fixed bytes, no randomness) into a
# temp dir each run; nothing big is committed.
set -u

gen() {
    d=$1
    mkdir -p "$d"
    # big runs of one byte, deterministic
    run() { head -c "$1" /dev/zero | tr '\0' "$2"; }

    # (HOSTILE_SMALL=1: only the small files)
    if [ -z "${HOSTILE_SMALL:-}" ]; then
        # -- a 10 MB line: NDJSON and CSV (loads: under the 64 MiB record limit)
        { printf '{"event_type":"small","n":1}\n{"event_type":"big","s":"'; run 10485760 a
          printf '"}\n{"event_type":"small","n":3}\n'; } >"$d/long_line.ndjson"
        { printf 'event_type,s\nsmall,1\nbig,'; run 10485760 b; printf '\nsmall,3\n'; } >"$d/long_line.csv"
        # -- a 50 MB string field
        { printf '{"event_type":"huge","s":"'; run 52428800 c; printf '"}\n{"event_type":"after","n":2}\n'; } \
            >"$d/huge_field.ndjson"
    fi
    # -- 100K levels of [ and of {"a": (then a good line)
    { run 100000 '['; printf '\n'; printf '{"event_type":"ok","n":2}\n'; } >"$d/deep_array.ndjson"
    { i=0; while [ $i -lt 10000 ]; do printf '{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":'; i=$((i + 1)); done
      printf '1\n{"event_type":"ok","n":2}\n'; } >"$d/deep_object.ndjson"
    { printf '[{"event_type":"ok","n":1},\n'; run 100000 '['; run 100000 ']'; printf '\n,{"event_type":"ok","n":3}]\n'; } \
        >"$d/deep_array.json"
    # -- a JSON array with a BOM, elements mid-line: columns count from the line
    printf '\357\273\277[{"event_type":"\303\251"}, {"event_type":"b","s":"\377"},\n  {"event_type":"c","s":"\300"}, 5]\n' \
        >"$d/array_cols.json"
    # -- invalid UTF-8 inside JSON strings: overlong '/', overlong 3-byte,
    #    surrogate, truncated sequence, 0xFF, a lone continuation byte; then a
    #    valid line (4-byte emoji)
    { printf '{"event_type":"ok","s":"fine"}\n'
      printf '{"event_type":"bad","s":"\300\257"}\n'
      printf '{"event_type":"bad","s":"\340\200\257"}\n'
      printf '{"event_type":"bad","s":"\355\240\200"}\n'
      printf '{"event_type":"bad","s":"\342\202"}\n'
      printf '{"event_type":"bad","s":"\377"}\n'
      printf '{"event_type":"bad","s":"a\200b"}\n'
      printf '{"event_type":"bad","s":"\364\220\200\200"}\n'
      printf '{"event_type":"ok","s":"\360\237\230\200 \303\251"}\n'; } >"$d/bad_utf8.ndjson"
    { printf 'event_type,s\nok,fine\nbad,\300\257\nbad,"\355\240\200"\nbad,x\342\202\nbad,\377\n'
      printf 'ok,"\360\237\230\200"\n'; } >"$d/bad_utf8.csv"
    # -- NUL bytes: inside a string, between values, a whole line of NULs
    { printf '{"event_type":"ok","n":1}\n'
      printf '{"event_type":"bad","s":"a\000b"}\n'
      printf '{"event_type":"bad",\000"n":1}\n'
      printf '\000\000\000\000\n'
      printf '{"event_type":"ok","n":5}\n'; } >"$d/nul.ndjson"
    { printf 'event_type,s\nok,1\nbad,a\000b\nbad,"q\000q"\nok,4\n'; } >"$d/nul.csv"
    # -- truncated files
    printf '{"event_type":"ok","n":1}\n{"event_type":"cut","s":"abc' >"$d/trunc_string.ndjson"
    printf '{"event_type":"ok","n":1}\n{"event_type":"cut","s":"ab\\' >"$d/trunc_escape.ndjson"
    printf '{"event_type":"ok","n":1}\n{"event_type":"cut","s":"\\u12' >"$d/trunc_uescape.ndjson"
    printf '{"event_type":"ok","n":1}\n{"event_type":"cut","s":"\342\202' >"$d/trunc_utf8.ndjson"
    printf '{"event_type":"ok","n":1}\n{"event_type":"cut","n":12' >"$d/trunc_number.ndjson"
    printf 'event_type,s\nok,1\ncut,"abc\ndef' >"$d/trunc_quoted.csv"
    printf 'event_type,s\nok,1\ncut,\342\202' >"$d/trunc_utf8.csv"
    printf '[{"event_type":"ok","n":1},{"event_type":"cut","s":"ab' >"$d/trunc.json"
    # -- Latin-1 text (not UTF-8): e-acute, u-umlaut
    printf '{"event_type":"ok","s":"plain"}\n{"event_type":"latin1","s":"caf\351 M\374nchen"}\n' \
        >"$d/latin1.ndjson"
    printf 'event_type,s\nok,plain\nlatin1,caf\351 M\374nchen\n' >"$d/latin1.csv"
    # -- a CSV with 10,000 columns (event_type first), 3 rows, one short row
    awk 'BEGIN {
        printf "event_type"; for (i = 1; i < 10000; i++) printf ",c%d", i; printf "\n";
        for (r = 1; r <= 3; r++) { printf "wide"; for (i = 1; i < 10000; i++) printf ",%d", r * i; printf "\n" }
        printf "short,1,2\n" }' >"$d/wide.csv"
    # -- UTF-8 BOM
    printf '\357\273\277event_type,s\nok,1\nok,2\n' >"$d/bom.csv"
    printf '\357\273\277{"event_type":"ok","n":1}\n{"event_type":"ok","n":2}\n' >"$d/bom.ndjson"
    # -- CRLF and CR-only line ends
    printf 'event_type,s\r\nok,1\r\nok,"two\r\nlines"\r\nok,3\r\n' >"$d/crlf.csv"
    printf '{"event_type":"ok","n":1}\r\n{"event_type":"ok","n":2}\r\n' >"$d/crlf.ndjson"
    printf 'event_type,s\rok,1\rok,2\r' >"$d/cr.csv"
    printf '{"event_type":"ok","n":1}\r{"event_type":"ok","n":2}\r' >"$d/cr.ndjson"
    # -- empty, a header only, whitespace only
    : >"$d/empty.csv"
    : >"$d/empty.ndjson"
    printf 'event_type,s\n' >"$d/header_only.csv"
    printf '\n\n   \n' >"$d/blank.ndjson"
}

if [ "${1:-}" = "--generate" ]; then
    [ $# -eq 2 ] || { echo "usage: $0 --generate DIR" >&2; exit 2; }
    gen "$2"
    exit 0
fi

[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "no PGPIPE_TEST_DSN"; exit 77; }
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/hostile.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
gen "$tmp/c"
rid=$$
q() { $P -m csv "$D" "$1" | tail -n +2; }

# load FILE EXPECT_READ EXPECT_LOADED EXPECT_DEAD [extra .load options]
# queues a .load (all run in one shell process below, then checked together):
# the summary line, pgpipe.loads, the rows in staging and the dead letters
# (each with a line number and a message) must all agree.
n=0
: >"$tmp/cmds"; : >"$tmp/expect"
load() {
    f=$1; r=$2; ld=$3; dd=$4; shift 4
    n=$((n + 1))
    name="h${rid}_${n}_$f"
    [ $r -eq $((ld + dd)) ] || fail "$f: test expectation does not add up"
    echo ".load $tmp/c/$f --name $name --key $name $*" >>"$tmp/cmds"
    echo "$name,$r,$ld,$dd,$ld,$dd,$dd,$dd" >>"$tmp/expect"
}
# after the loads: the dead letter of FILE at LINE has a message containing
# TEXT (and that column when COL is given)
: >"$tmp/dead"
dead() { printf '%s|%s|%s|%s\n' "$1" "$2" "${4:-}" "$3" >>"$tmp/dead"; }

load long_line.ndjson 3 3 0
load long_line.csv 3 3 0 --format csv
# over the record limit: dead-lettered (its first max-record-bytes kept), the load goes on
load long_line.ndjson 3 2 1 --max-record-bytes 1048576 
dead long_line.ndjson 2 "record longer than the limit of 1048576 bytes"
load long_line.csv 3 2 1 --format csv --max-record-bytes 1048576 
dead long_line.csv 3 "longer than 1048576 bytes"
load huge_field.ndjson 2 1 1 --max-record-bytes 16777216
dead huge_field.ndjson 1 "record longer than the limit of 16777216 bytes"

load deep_array.ndjson 2 1 1
dead deep_array.ndjson 1 "nesting too deep: more than 512 levels of arrays and objects at line 1, column 513" 513
load deep_object.ndjson 2 1 1
dead deep_object.ndjson 1 "nesting too deep" 2561
load deep_array.json 3 2 1
dead deep_array.json 2 "nesting too deep"

load array_cols.json 4 1 3
dead array_cols.json 1 "byte 0xFF never appears in UTF-8 at line 1, column 45" 45
dead array_cols.json 2 "overlong 2-byte encoding (lead byte 0xC0) at line 2, column 26" 26
dead array_cols.json 2 "record is a JSON number, not an object" 31

load bad_utf8.ndjson 9 2 7
for l in 2 3 4 5 6 7 8; do dead bad_utf8.ndjson $l "UTF-8"; done
dead bad_utf8.ndjson 2 "at line 2, column 26" 26
load bad_utf8.csv 6 2 4 --format csv
dead bad_utf8.csv 3 "invalid UTF-8 at line 3, column 5 (byte 5 of the record): byte 0xC0" 5
dead bad_utf8.csv 4 "invalid UTF-8 at line 4, column 6 (byte 6 of the record): byte 0xED" 6
dead bad_utf8.csv 5 "invalid UTF-8 at line 5, column 6" 6
dead bad_utf8.csv 6 "byte 0xFF" 5
# the raw bytes of a bad record are kept exactly (raw_bytes), raw_text shows them as \xHH

load nul.ndjson 5 2 3
dead nul.ndjson 2 "U+0000"; dead nul.ndjson 3 "byte 0x00"; dead nul.ndjson 4 "byte 0x00"
load nul.csv 4 2 2 --format csv
dead nul.csv 3 "NUL byte at line 3, column 6" 6
dead nul.csv 4 "NUL byte at line 4, column 7" 7

load trunc_string.ndjson 2 1 1
dead trunc_string.ndjson 2 "unterminated string"
load trunc_escape.ndjson 2 1 1
dead trunc_escape.ndjson 2 "unterminated string"
load trunc_uescape.ndjson 2 1 1
dead trunc_uescape.ndjson 2 "invalid \\u escape"
load trunc_utf8.ndjson 2 1 1
dead trunc_utf8.ndjson 2 "UTF-8"
load trunc_number.ndjson 2 1 1
dead trunc_number.ndjson 2 "found the end of the input at line 2, column 27" 27
load trunc_quoted.csv 2 1 1 --format csv
dead trunc_quoted.csv 3 "unterminated quoted field at end of input" 5
load trunc_utf8.csv 2 1 1 --format csv
dead trunc_utf8.csv 3 "invalid UTF-8 at line 3, column 5"
load trunc.json 2 1 1
dead trunc.json 1 "the input ended inside this array element"

load latin1.ndjson 2 1 1
dead latin1.ndjson 2 "invalid UTF-8 in string: truncated multi-byte sequence (lead byte 0xE9) at line 2, column 32" 32
load latin1.csv 2 1 1 --format csv
dead latin1.csv 3 "invalid UTF-8 at line 3, column 11 (byte 11 of the record): byte 0xE9" 11

load wide.csv 4 3 1
dead wide.csv 5 "record starting at line 5 has 3 fields, expected 10000"

load bom.csv 2 2 0
load bom.ndjson 2 2 0
load crlf.csv 3 3 0
load crlf.ndjson 2 2 0
load cr.csv 2 2 0
# NDJSON lines end with LF (CRLF accepted): a CR-only file is one line, whose
# second object is refused as trailing content
load cr.ndjson 1 0 1
dead cr.ndjson 1 "line 1"

load empty.csv 0 0 0
load empty.ndjson 0 0 0
load header_only.csv 0 0 0
load blank.ndjson 0 0 0

# run every load in one shell process (the sanitizers watch all of it)
$P -f "$tmp/cmds" "$D" >"$tmp/out" 2>"$tmp/err"
rc=$?
grep -q "Sanitizer\|runtime error" "$tmp/err" && fail "sanitizer report: $(cat "$tmp/err")"
[ $rc -le 1 ] || fail "the shell exited with $rc: $(cat "$tmp/out" "$tmp/err")"
while IFS=, read -r name r ld dd rest; do
    f=${name#h${rid}_*_}
    grep -F "/$f: read $r, loaded $ld, dead-lettered $dd" "$tmp/out" >/dev/null ||
        fail "$f: expected 'read $r, loaded $ld, dead-lettered $dd' in: $(cat "$tmp/out" "$tmp/err")"
    echo "ok $f: read $r, loaded $ld, dead-lettered $dd"
done <"$tmp/expect"
# the books: pgpipe.loads counters, rows in staging, dead letters with a line and a message
q "SELECT l.source, l.rows_read, l.rows_loaded, l.rows_dead_lettered,
          (SELECT count(*) FROM staging.raw_events e WHERE e.source = l.source),
          (SELECT count(*) FROM pgpipe.dead_letters d WHERE d.source_name = l.source AND d.stage = 'load'),
          (SELECT count(line_number) FROM pgpipe.dead_letters d WHERE d.source_name = l.source AND d.stage = 'load'),
          (SELECT count(*) FILTER (WHERE error_message <> '') FROM pgpipe.dead_letters d
            WHERE d.source_name = l.source AND d.stage = 'load')
   FROM pgpipe.loads l WHERE l.source LIKE 'h${rid}\_%' ORDER BY l.id" >"$tmp/books"
sort "$tmp/expect" >"$tmp/e.sorted"; sort "$tmp/books" >"$tmp/b.sorted"
cmp -s "$tmp/e.sorted" "$tmp/b.sorted" ||
    fail "the books disagree (name,read,loaded,dead,staging,dead letters,with line,with message): $(diff "$tmp/e.sorted" "$tmp/b.sorted")"
echo "ok: pgpipe.loads, staging and pgpipe.dead_letters agree for $n loads"
q "SELECT regexp_replace(source_name, '^h${rid}_[0-9]+_', '') || '|' || line_number || '|' ||
          coalesce(column_number::text, '') || '|' || error_message
   FROM pgpipe.dead_letters WHERE source_name LIKE 'h${rid}\_%' AND stage = 'load'" >"$tmp/dl"
while IFS='|' read -r f line col text; do
    grep -F "$f|$line|$col" "$tmp/dl" | grep -F -- "$text" >/dev/null ||
        fail "$f: no dead letter at line $line${col:+, column $col} with '$text'; there are: $(grep -F "$f|" "$tmp/dl")"
done <"$tmp/dead"
echo "ok: $(wc -l <"$tmp/dead") dead letters name their line, column and problem"

# what the loaded rows and dead letters hold
got=$(q "SELECT length(payload->>'s') FROM staging.raw_events WHERE source LIKE 'h${rid}\_%\_long_line.csv' AND event_type = 'big'")
[ "$got" = 10485760 ] || fail "the 10 MB CSV field came out $got bytes long"
got=$(q "SELECT payload->>'s' FROM staging.raw_events WHERE source LIKE 'h${rid}\_%\_bad_utf8.ndjson' AND event_type = 'ok' ORDER BY id")
has "$got" "$(printf '\360\237\230\200 \303\251')"
got=$(q "SELECT encode(raw_bytes, 'hex'), raw_text FROM pgpipe.dead_letters WHERE source_name LIKE 'h${rid}\_%\_bad_utf8.ndjson' AND line_number = 6")
has "$got" '22ff22'
has "$got" '\xff'
got=$(q "SELECT payload->>'c9999', (SELECT count(*) FROM jsonb_object_keys(payload)) FROM staging.raw_events WHERE source LIKE 'h${rid}\_%\_wide.csv' ORDER BY id LIMIT 1")
[ "$got" = "9999,10000" ] || fail "wide.csv: first row came out as $got"
got=$(q "SELECT string_agg(DISTINCT event_type, ',') FROM staging.raw_events WHERE source LIKE 'h${rid}\_%\_bom.csv'")
[ "$got" = ok ] || fail "bom.csv: the BOM leaked into the header: $got"
got=$(q "SELECT payload->>'s' FROM staging.raw_events WHERE source LIKE 'h${rid}\_%\_crlf.csv' ORDER BY id")
has "$got" "$(printf '"two\r\nlines"')"

# bounded memory, measured on an -O2 build without sanitizers (built here from
# the generated amalgamation when missing or older than it): peak RSS loading
# a 50 MB field with the default record limit (64 MiB) stays under
# batch_bytes (8 MiB) + 4 x the record + 64 MB (libpq, the binary); a 100 MB
# line over a 4 MiB limit is dead-lettered with memory bounded by the limit,
# not the line.
O2=build/test/pgpipe-O2
if [ ! -x $O2 ] || [ pgpipe.c -nt $O2 ] || [ shell.c -nt $O2 ]; then
    nice cc -std=c11 -O2 $(pkg-config --cflags libpq 2>/dev/null || echo -I$(pg_config --includedir)) \
        -I. shell.c pgpipe.c -lpq -lpthread -lm -o $O2 || fail "cannot build $O2"
fi
if [ -x /usr/bin/time ]; then
    /usr/bin/time -f '%M' -o "$tmp/rss" $O2 "$D" \
        ".load $tmp/c/huge_field.ndjson --name h${rid}_rss_huge --key h${rid}_rss_huge" >"$tmp/out" 2>&1 ||
        fail "rss load: $(cat "$tmp/out")"
    has "$(cat "$tmp/out")" "read 2, loaded 2, dead-lettered 0"
    kb=$(tail -n 1 "$tmp/rss")
    echo "peak RSS loading a 50 MB field: $kb KB"
    [ "$kb" -lt $(( (8 + 4 * 50 + 64) * 1024 )) ] || fail "peak RSS $kb KB for a 50 MB record"
    { printf '{"event_type":"huge","s":"'; head -c 104857600 /dev/zero | tr '\0' d
      printf '"}\n{"event_type":"after"}\n'; } >"$tmp/c/line100.ndjson"
    /usr/bin/time -f '%M' -o "$tmp/rss" $O2 "$D" ".load $tmp/c/line100.ndjson --name h${rid}_rss_limit \
        --key h${rid}_rss_limit --max-record-bytes 4194304" >"$tmp/out" 2>&1 || fail "rss load: $(cat "$tmp/out")"
    has "$(cat "$tmp/out")" "read 2, loaded 1, dead-lettered 1"
    kb=$(tail -n 1 "$tmp/rss")
    echo "peak RSS for a 100 MB line over a 4 MiB limit: $kb KB"
    [ "$kb" -lt $(( (8 + 4 * 4 + 64) * 1024 )) ] || fail "peak RSS $kb KB for a 100 MB line over a 4 MiB limit"
    rm -f "$tmp/c/line100.ndjson"
else
    echo "note: /usr/bin/time missing: peak RSS not measured"
fi
echo "hostile corpus ok"
