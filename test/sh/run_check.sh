#!/bin/sh
# pgpipe run --check (issue 22): the seed example's pipeline passes with its
# summary; a file with one of every error kind prints exactly the expected
# FILE:LINE lines and exits 1; nothing connects (PGHOST points nowhere);
# pgpipe run without --check and without a database fails at once (exit 1)
# naming the connection, not the file.
set -u
cd "${PGPIPE_TOP:-.}"
P=build/test/pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/run_check.XXXXXX")
fail() { echo "FAIL: $*"; exit 1; }
export PGHOST=/nonexistent/socket PGPORT=1 PGCONNECT_TIMEOUT=1

out=$("$P" run --check sql/example/pipeline.pgpipe 2>&1); rc=$?
[ $rc = 0 ] || fail "the example pipeline: exit $rc: $out"
[ "$out" = "pipeline example OK: 3 sources, 2 workers, 3 schedules, 2 tasks, 4 alerts" ] || fail "summary: $out"

"$P" run --check test/run/broken.pgpipe > "$tmp/out" 2> "$tmp/err"; rc=$?
[ $rc = 1 ] || fail "the broken pipeline: exit $rc"
diff -u test/run/broken.expected "$tmp/out" || fail "the broken pipeline's lines differ"
[ ! -s "$tmp/err" ] || fail "stderr: $(cat "$tmp/err")"

out=$(timeout 60 "$P" run sql/example/pipeline.pgpipe 2>&1); rc=$?
[ $rc = 1 ] || fail "pgpipe run without a database: exit $rc: $out"
case "$out" in *"pgpipe run: "*nonexistent*) ;; *) fail "pgpipe run without a database: $out" ;; esac
out=$("$P" run --for 5x sql/example/pipeline.pgpipe 2>&1); rc=$?
[ $rc = 2 ] || fail "pgpipe run --for 5x: exit $rc"
case "$out" in *"--for: \"5x\" is not a duration"*) ;; *) fail "pgpipe run --for 5x: $out" ;; esac
"$P" run --db > /dev/null 2>&1; [ $? = 2 ] || fail "pgpipe run --db without a value is not status 2"

"$P" run --check "$tmp/none.pgpipe" > "$tmp/out" 2>&1; rc=$?
[ $rc = 1 ] || fail "a missing file: exit $rc"
grep -q "none.pgpipe" "$tmp/out" || fail "a missing file: $(cat "$tmp/out")"
"$P" run --bogus x > /dev/null 2>&1; [ $? = 2 ] || fail "a bad option is not status 2"
out=$("$P" run --help) || fail "pgpipe run --help is not status 0"
case "$out" in "usage: pgpipe run"*"--token-env VAR "*) ;; *) fail "pgpipe run --help: $out" ;; esac
# names: empty ones, control characters, and schedule or task names that an
# --after list (commas) could not name; a jitter as long as the interval
printf '.pipeline ""\n.schedule "a,b" --every 1h\n.end\n.task "x y" --after a\n.end\n.workers "" --mode lease\n.source files "t\tab" --dir d\n.schedule j --every 1h --jitter 60m\n.end\n' > "$tmp/names.pgpipe"
"$P" run --check "$tmp/names.pgpipe" > "$tmp/out" 2>&1 && fail "bad names passed"
cat > "$tmp/want" <<EOF
$tmp/names.pgpipe:1:11: .pipeline: the name is empty
$tmp/names.pgpipe:2:12: .schedule: name "a,b": no ',' or blanks in a schedule or task name (--after lists names with commas)
$tmp/names.pgpipe:4:8: .task: name "x y": no ',' or blanks in a schedule or task name (--after lists names with commas)
$tmp/names.pgpipe:6:11: .workers: the name is empty
$tmp/names.pgpipe:7:16: .source files: the name has a control character (byte 9)
$tmp/names.pgpipe:8:33: .schedule: --jitter 60m is not shorter than --every 1h: a firing could come after the next slot's
EOF
grep -v "after: no schedule\|--sql\|--so" "$tmp/out" | diff -u "$tmp/want" - || fail "names"

# an empty option value (an unset variable in a generated file) is said, never
# taken as the default
printf ".pipeline e\n.source files drop --dir d --pattern '' --event-type \"\"\n.workers w --mode lease --table ''\n" > "$tmp/empty.pgpipe"
"$P" run --check "$tmp/empty.pgpipe" > "$tmp/out" 2>&1 && fail "empty option values passed"
cat > "$tmp/want" <<EOF
$tmp/empty.pgpipe:2:39: .source files: --pattern is empty (leave the option out for its default)
$tmp/empty.pgpipe:2:55: .source files: --event-type is empty (leave the option out for its default)
$tmp/empty.pgpipe:3:34: .workers: --table is empty (leave the option out for its default)
EOF
grep -v -- "--sql" "$tmp/out" | diff -u "$tmp/want" - || fail "empty option values"

# a dot command step's arguments are read at the check, as the step reads them
# (not found wrong at every firing); a good one passes
printf '.pipeline st\n.log info\n.schedule s --every 1h\n.partitions ahead 36500\n.dlq purge\n.log loud hello\n.load x.ndjson --batch-rows 0\n.dlq purge --source "" --status dead\n.load x.csv --table public.t --map "a=,b"\n.load x.csv --table public.t --map a=b,c,a=d\n.partitions retain 30 --detach-only\n.end\n' > "$tmp/steps.pgpipe"
"$P" run --check "$tmp/steps.pgpipe" > "$tmp/out" 2>&1 && fail "bad step arguments passed"
cat > "$tmp/want" <<EOF
$tmp/steps.pgpipe:4:1: .partitions: DAYS: expected a whole number from 1 to 366, got "36500"
$tmp/steps.pgpipe:5:1: .dlq purge: needs an ID, a filter or --all
$tmp/steps.pgpipe:6:1: .log: expected a level (debug|info|notice|warn|error|off), got "loud"
$tmp/steps.pgpipe:7:1: .load: --batch-rows: expected a whole number from 1 to 2147483647, got "0"
$tmp/steps.pgpipe:8:1: .dlq purge: --source is empty (leave the option out for its default)
$tmp/steps.pgpipe:9:1: .load: --map: "a=": expected col=field, col=json:field or col='text'
$tmp/steps.pgpipe:10:1: .load: --map: column a is mapped twice
EOF
diff -u "$tmp/want" "$tmp/out" || fail "step arguments"

# saved by a Windows editor: a byte order mark and CRLF line ends
printf '\357\273\277.pipeline bom\r\n.schedule a --every 1h\r\nSELECT 1;\r\n.end\r\n' > "$tmp/bom.pgpipe"
out=$("$P" run --check "$tmp/bom.pgpipe" 2>&1) || fail "a file with a BOM and CRLF: $out"
[ "$out" = "pipeline bom OK: 0 sources, 0 workers, 1 schedule, 0 tasks, 0 alerts" ] || fail "BOM: $out"
printf '\357\273\277.schedule a --every 5x\n.end\n' > "$tmp/bomerr.pgpipe"
out=$("$P" run --check "$tmp/bomerr.pgpipe" 2>&1) && fail "a bad file with a BOM passed"
case "$out" in *"bomerr.pgpipe:1:21: .schedule: --every"*) ;; *) fail "BOM: columns after the mark: $out" ;; esac
echo "run --check: the example passes, every error kind reported, no connection"

# the same inside the shell: .run --check FILE (needs the test cluster to start)
if [ -n "${PGPIPE_TEST_DSN:-}" ]; then
    out=$(env -u PGHOST -u PGPORT "$P" "$PGPIPE_TEST_DSN" ".run --check sql/example/pipeline.pgpipe" 2>&1) \
        || fail ".run --check: $out"
    case "$out" in *"pipeline example OK"*) ;; *) fail ".run --check: $out" ;; esac
    env -u PGHOST -u PGPORT "$P" "$PGPIPE_TEST_DSN" ".run --check test/run/broken.pgpipe" > "$tmp/out" 2>&1 \
        && fail ".run --check of the broken file succeeded"
    grep -q '^test/run/broken.pgpipe:1:1: unknown directive .sorce' "$tmp/out" || fail ".run --check: $(cat "$tmp/out")"
    echo ".run --check in the shell: the same"
fi

# a watched folder that cannot be read (a path under a file: no mkdir, no
# opendir, even as root) is said once, not silently skipped and not at every
# poll; one that does not exist is made
if [ -n "${PGPIPE_TEST_DSN:-}" ]; then
    : > "$tmp/afile"
    printf '.pipeline rc_dir\n.source files bad --dir %s/afile/in --poll 50ms\n.source files new --dir %s/made/in --poll 50ms\n' \
        "$tmp" "$tmp" > "$tmp/dir.pgpipe"
    env -u PGHOST -u PGPORT timeout 60 "$P" run --db "$PGPIPE_TEST_DSN" --for 2s "$tmp/dir.pgpipe" \
        > "$tmp/out" 2>&1 || fail "run with a bad folder: $(cat "$tmp/out")"
    n=$(grep -c 'cannot read the folder it watches.*source=bad.*error="Not a directory"' "$tmp/out")
    [ "$n" = 1 ] || fail "the bad folder was said $n times: $(cat "$tmp/out")"
    [ -d "$tmp/made/in" ] || fail "the missing folder was not made"
    grep -q 'cannot read the folder.*source=new' "$tmp/out" && fail "the made folder was reported: $(cat "$tmp/out")"
    echo "run: an unreadable folder is said once; a missing one is made"
fi
