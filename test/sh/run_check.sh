#!/bin/sh
# pgpipe run --check (issue 22): the seed example's pipeline passes with its
# summary; a file with one of every error kind prints exactly the expected
# FILE:LINE lines and exits 1; nothing connects (PGHOST points nowhere);
# pgpipe run without --check and without a database fails at once (exit 1)
# naming the connection, not the file.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/run_check.XXXXXX")
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

# a .read step's file is checked as the body's own steps are (not found wrong
# at every firing): a file reading itself, a directive in it, a step the run
# refuses, a NUL byte; each named by the read file's FILE:LINE
printf '.read self.sql\n' > "$tmp/self.sql"
printf 'SELECT 1;\n.schedule x --every 1s\n' > "$tmp/dir.sql"
printf -- '-- retention\n.read inner.sql\n' > "$tmp/outer.sql"
printf 'SELECT 1;\n\n.partitions ahead 36500\n' > "$tmp/inner.sql"
printf 'SELECT 1;\nSELECT\0 2;\n' > "$tmp/nul.sql"
printf 'SELECT 1;\n.partitions ahead 7\n' > "$tmp/good.sql"
printf '.pipeline rd\n.schedule s --every 1s\n.read self.sql\n.end\n.schedule t --every 1s\n.read dir.sql\n.read outer.sql\n.read nul.sql\n.read good.sql\n.end\n' > "$tmp/rd.pgpipe"
"$P" run --check "$tmp/rd.pgpipe" > "$tmp/out" 2>&1 && fail "bad .read files passed"
cat > "$tmp/want" <<EOF2
$tmp/rd.pgpipe:3:1: $tmp/self.sql:1: .read: nested more than 8 deep (does a file read itself?)
$tmp/rd.pgpipe:6:1: $tmp/dir.sql:2: .schedule: not a command a pipeline may run (.install, .migrate, .load, .read, .refresh, .partitions, .dlq, .log)
$tmp/rd.pgpipe:7:1: $tmp/inner.sql:3: .partitions: DAYS: expected a whole number from 1 to 366, got "36500"
$tmp/rd.pgpipe:8:1: $tmp/nul.sql:2: a NUL byte
EOF2
diff -u "$tmp/want" "$tmp/out" || fail ".read files"
printf '.pipeline rd\n.schedule s --every 1s\n.read good.sql\n.end\n' > "$tmp/rdok.pgpipe"
out=$("$P" run --check "$tmp/rdok.pgpipe" 2>&1) || fail "a good .read file: $out"

# a NUL byte in the pipeline file itself
printf '.pipeline nul\n.schedule s --every 1s\nINSERT INTO t\0 VALUES (1);\n.end\n' > "$tmp/nul.pgpipe"
"$P" run --check "$tmp/nul.pgpipe" > "$tmp/out" 2>&1 && fail "a NUL byte passed"
[ "$(cat "$tmp/out")" = "$tmp/nul.pgpipe:3:14: a NUL byte" ] || fail "a NUL byte: $(cat "$tmp/out")"
echo "run --check: .read files checked inside; a NUL byte refused"

# what the run would refuse or never do, refused at the check: a task after two
# schedules (it runs after one firing), a .pipeline given twice, a file source
# whose --done-dir is its --dir (each file loaded again and again), listen
# addresses the HTTP server refuses, two HTTP sources on one port
mkdir -p "$tmp/inc"
printf '.pipeline one\n.pipeline two\n.schedule s --every 1s\n.end\n.schedule u --every 1s\n.end\n.task a --after s,u\n.end\n.task b --after s\n.end\n.task c --after b,u\n.end\n.task d --after a\n.end\n.source files f --dir inc --done-dir ./inc/\n.source files g --dir inc\n.source http h1 --listen nohost\n.source http h2 --listen 127.0.0.1:99999\n.source http h3 --listen "::1:80"\n.source http h4 --listen 127.0.0.1:18081\n.source http h5 --listen "[::1]:18082,0.0.0.0:18081"\n.source http h6\n.source http h7 --listen 127.0.0.1:8080\n.source http h8 --listen 127.0.0.1:0,127.0.0.1:0\n' > "$tmp/never.pgpipe"
"$P" run --check "$tmp/never.pgpipe" > "$tmp/out" 2>&1 && fail "never-running definitions passed"
cat > "$tmp/want" <<EOF2
$tmp/never.pgpipe:2: .pipeline: given twice (first at line 1)
$tmp/never.pgpipe:7: .task a: runs after two schedules, s and u: a task runs after the firing of one schedule, so it would never run
$tmp/never.pgpipe:11: .task c: runs after two schedules, u and s (through the tasks it runs --after): a task runs after the firing of one schedule, so it would never run
$tmp/never.pgpipe:13: .task d: runs after two schedules, s and u (through the tasks it runs --after): a task runs after the firing of one schedule, so it would never run
$tmp/never.pgpipe:15:38: .source files: --done-dir is the folder --dir watches: each loaded file would be found there again and loaded again (leave it out for DIR/done)
$tmp/never.pgpipe:17:26: .source http: --listen: "nohost" is not HOST:PORT
$tmp/never.pgpipe:18:26: .source http: --listen: bad port in "127.0.0.1:99999" (0-65535)
$tmp/never.pgpipe:19:27: .source http: --listen: "::1:80" is not HOST:PORT (more than one ':'; an IPv6 address goes in brackets: [::1]:8080)
$tmp/never.pgpipe:21: .source http h5: listens on port 18081 as source h4 does (line 20): the second could not listen
$tmp/never.pgpipe:23: .source http h7: listens on port 8080 as source h6 does (line 22): the second could not listen
EOF2
diff -u "$tmp/want" "$tmp/out" || fail "never-running definitions"
echo "run --check: tasks after two schedules, .pipeline twice, --done-dir = --dir, bad and shared listen addresses"

# two alert rules for one condition (kind and subject): the second would never
# deliver (the condition's state is shared); the same kind on another subject
# is fine
printf '.pipeline al\n.schedule s --every 1m\n.end\n.task f --after s\n.end\n.task g --after s\n.end\n.alert task-failures --task f --count 1 --command true\n.alert task-failures --task g --count 1\n.alert task-failures --task f --count 3 --notify ch\n.alert backlog-age --older-than 1m\n.alert backlog-age --older-than 5m --event-type x\n.alert backlog-age --older-than 9m\n' > "$tmp/al.pgpipe"
"$P" run --check "$tmp/al.pgpipe" > "$tmp/out" 2>&1 && fail "two rules for one condition passed"
cat > "$tmp/want" <<EOF2
$tmp/al.pgpipe:10: .alert: a second rule for the same condition (first at line 8): a condition is delivered once, by one rule, so this one would never deliver; give one rule all its --notify, --table and --command
$tmp/al.pgpipe:13: .alert: a second rule for the same condition (first at line 11): a condition is delivered once, by one rule, so this one would never deliver; give one rule all its --notify, --table and --command
EOF2
diff -u "$tmp/want" "$tmp/out" || fail "two rules for one condition"
echo "run --check: two alert rules for one condition"
