#!/bin/sh
# Every dot command with each kind of bad argument (unknown option, bad
# number, unknown choice, missing value, missing file, an argument too many
# or too few): one error line naming the command and the option, a non-zero
# exit status (as an argument and in a script), and nothing changed: the
# database (rows of the pipeline's tables, schemas, relations) and the
# working directory are the same before and after. Run on a database with the
# schema, pending events and dead letters (where a misparse like
# ".work --workers abc --mark" would mark every event processed), and on an
# empty one (where a misparse would install the schema).
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
top=$(pwd)
P=${PGPIPE_SHELL:-$top/build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_args.XXXXXX")
chmod 755 "$tmp"
need_pgpipe

$P "$D" "SET client_min_messages = warning" "DROP DATABASE IF EXISTS shell_args_full" \
    "DROP DATABASE IF EXISTS shell_args_empty" "CREATE DATABASE shell_args_full" \
    "CREATE DATABASE shell_args_empty" >/dev/null || fail "setup: databases"
FULL="$D dbname=shell_args_full"
EMPTY="$D dbname=shell_args_empty"
# (as one word each in the list of databases below)
FULLW=$(printf '%s' "$FULL" | tr ' ' '#')
EMPTYW=$(printf '%s' "$EMPTY" | tr ' ' '#')

# the full one: the schema, 4 pending events, 2 dead letters, a view
printf '%s\n' '{"event_type":"a","v":1}' '{"event_type":"a","v":2}' 'not json' \
    '{"event_type":"b","v":3}' '{"event_type":"b"' '{"event_type":"c","v":4}' >"$tmp/ev.ndjson"
out=$($P "$FULL" ".load $tmp/ev.ndjson --source web --connections 1" \
      "CREATE MATERIALIZED VIEW args_mv AS SELECT 1 AS x" "CREATE UNIQUE INDEX ON args_mv (x)" 2>&1) ||
    fail "setup: $out"
has "$out" "loaded 4, dead-lettered 2"
mkdir "$tmp/mig" "$tmp/cwd"
printf 'CREATE TABLE args_mig (id int);\n' >"$tmp/mig/V1__t.sql"
printf 'SELECT 1 AS x\n' >"$tmp/h.sql"

fingerprint() {
    $P -m csv "$1" "SELECT
      (SELECT CASE WHEN to_regclass('staging.raw_events') IS NULL THEN 'none' ELSE
        (SELECT count(*) FILTER (WHERE processed) || '/' || count(*) FILTER (WHERE NOT processed)
           || '/' || coalesce(sum(attempts), 0) FROM staging.raw_events) END) AS events,
      (SELECT CASE WHEN to_regclass('pgpipe.dead_letters') IS NULL THEN 'none' ELSE
        (SELECT count(*) || '/' || coalesce(sum(attempt_count), 0) || '/' ||
                coalesce(string_agg(status, ',' ORDER BY id), '') FROM pgpipe.dead_letters) END) AS dead,
      (SELECT CASE WHEN to_regclass('pgpipe.loads') IS NULL THEN 'none' ELSE
        (SELECT count(*)::text FROM pgpipe.loads) END) AS loads,
      (SELECT CASE WHEN to_regclass('pgpipe.migrations') IS NULL THEN 'none' ELSE
        (SELECT count(*)::text FROM pgpipe.migrations) END) AS migrations,
      (SELECT string_agg(nspname, ',' ORDER BY nspname) FROM pg_namespace) AS schemas,
      (SELECT count(*) || '/' || md5(string_agg(oid::text || relname, ',' ORDER BY oid))
         FROM pg_class) AS relations" 2>&1
}

# bad COMMAND EXPECTED: COMMAND (one argument of pgpipe) fails with one error
# line naming the command and holding EXPECTED, on both databases; the full
# one is compared after each, the empty one at the end. The lines are then
# run again as one script.
n=0
: >"$tmp/script"
full0=$(fingerprint "$FULL")
empty0=$(fingerprint "$EMPTY")
bad() {
    n=$((n + 1))
    printf '%s\n' "$1" >>"$tmp/script"
    dbs=$FULLW
    case $1 in .install*|.migrate*|.load*|.work*|.dlq*|.records*|.partitions*) dbs="$FULLW $EMPTYW" ;; esac
    for db in $dbs; do
        db=$(printf '%s' "$db" | tr '#' ' ')
        (cd "$tmp/cwd" && "$P" "$db" "$1") >"$tmp/out" 2>"$tmp/err"
        rc=$?
        [ $rc != 0 ] || fail "exit 0 for: $1"
        grep -q "Sanitizer\|runtime error" "$tmp/err" && fail "sanitizer on $1: $(cat "$tmp/err")"
        [ "$(wc -l <"$tmp/err")" = 1 ] || fail "not one error line for: $1
$(cat "$tmp/err")"
        [ -s "$tmp/out" ] && fail "output for: $1: $(cat "$tmp/out")"
        cmd=$(printf '%s' "$1" | cut -d' ' -f1)
        grep -q "^error: $cmd[ :]" "$tmp/err" || fail "the error does not name $cmd: $(cat "$tmp/err")"
        grep -qF -- "$2" "$tmp/err" || fail "expected '$2' in the error of: $1
$(cat "$tmp/err")"
        [ -z "$(ls -A "$tmp/cwd")" ] || fail "files made by: $1: $(ls -A "$tmp/cwd")"
        [ "$db" = "$FULL" ] || continue
        after=$(fingerprint "$db")
        [ "$full0" = "$after" ] || fail "the database changed after: $1
before: $full0
after:  $after"
    done
}

bad ".mode nope" 'MODE: expected aligned, csv, json, line, table, box, markdown, insert or unaligned, got "nope"'
bad ".mode csv json" 'unexpected argument "json"'
bad ".timer maybe" 'expected on or off, got "maybe"'
bad ".timer" 'missing on|off'
bad ".timer on off" 'unexpected argument "off"'
bad ".version --verbose" '--verbose: unknown option'
bad ".conninfo extra" 'unexpected argument "extra"'
bad ".read" 'missing FILE'
bad ".read $tmp/h.sql $tmp/h.sql" 'unexpected argument'
bad ".log loud" 'LEVEL: expected debug, info, notice, warn, error or off, got "loud"'
bad ".quit now" 'unexpected argument "now"'
bad ".exit --now" '--now: unknown option'
bad ".help load extra" 'unexpected argument "extra"'
bad ".help --verbose" '--verbose: unknown option'
bad ".help frobnicate" 'no command .frobnicate'
bad ".refresh" 'missing VIEW'
bad ".refresh args_mv --concurrent" '--concurrent: unknown option (did you mean --concurrently?)'
bad ".refresh args_mv other" 'unexpected argument "other"'
bad ".export SELECT 1 file" 'unexpected argument "file"'
bad ".export 'SELECT 1' f.csv --format xml" '--format: expected csv or ndjson, got "xml"'
bad ".export 'SELECT 1' f.csv --format" '--format: missing value'
bad ".export 'SELECT 1' f.csv --fromat csv" '--fromat: unknown option (did you mean --format?)'
bad ".export 'SELECT 1'" 'missing'
bad ".export 'SELECT 1 f.csv" 'a quote is not closed'
bad ".listen ch --count abc --timeout 1" '--count: expected a positive integer, got "abc"'
bad ".listen ch --count 0 --timeout 1" '--count: expected a positive integer, got "0"'
bad ".listen ch --count 5x --timeout 1" '--count: expected a positive integer, got "5x"'
bad ".listen ch --count 99999999999999999999 --timeout 1" '(too large)'
bad ".listen ch --timeout -1" '--timeout: expected an integer from 0 to'
bad ".listen ch --timeout" '--timeout: missing value'
bad ".listen" 'missing CHANNEL'
bad ".listen a b --timeout 0" 'unexpected argument "b"'
bad ".explain" 'missing SQL'
bad ".install --exmaple" '--exmaple: unknown option (did you mean --example?)'
bad ".install example" 'unexpected argument "example"'
bad ".migrate $tmp/mig --baseline" '--baseline: missing value'
bad ".migrate $tmp/mig --baseline v1" '--baseline: expected a version number'
bad ".migrate $tmp/mig --statuss" '--statuss: unknown option (did you mean --status?)'
bad ".migrate $tmp/mig --status --repair" '--status'
bad ".migrate $tmp/mig $tmp/mig" 'unexpected argument'
bad ".migrate $tmp/nonexistent" "no such directory: \"$tmp/nonexistent\""
bad ".migrate $tmp/h.sql" "not a directory: $tmp/h.sql"
bad ".partitions ahead abc" 'DAYS: expected an integer from 1 to 366, got "abc"'
bad ".partitions ahead 0" 'DAYS: expected an integer from 1 to 366, got "0"'
bad ".partitions ahead 36500" 'DAYS: expected an integer from 1 to 366, got "36500"'
bad ".partitions ahead" 'missing DAYS'
bad ".partitions ahead 3 4" 'unexpected argument "4"'
bad ".partitions retain 30 --detach" '--detach: unknown option (did you mean --detach-only?)'
bad ".partitions retain -3" 'DAYS: expected an integer from 1 to 36500, got "-3"'
bad ".partitions frob" 'unknown sub-command "frob"'
bad ".partitions list 3" 'unexpected argument "3"'
bad ".health now" 'unexpected argument "now"'
bad ".stats --all" '--all: unknown option'
bad ".work --workers abc --mark --until-empty" '--workers: expected an integer from 1 to 256, got "abc"'
bad ".work --workers 0 --mark --until-empty" '--workers: expected an integer from 1 to 256, got "0"'
bad ".work --mark --until-empty --workers" '--workers: missing value'
bad ".work --mark --until-empty --batch -5" '--batch: expected an integer from 1 to'
bad ".work --mark --until-empty --order newest" '--order: expected received or id, got "newest"'
bad ".work --mark --until-empty --lease 10s" '--lease: expected a positive integer, got "10s"'
bad ".work --mark --until-empty --max-attempts 0" '--max-attempts: expected an integer from 1 to'
bad ".work --mark --until-empty --poll 1e3" '--poll: expected a positive integer, got "1e3"'
bad ".work --mark --until-empty --wrokers 2" '--wrokers: unknown option (did you mean --workers?)'
bad ".work --mark --until-empty --quiet=yes" '--quiet: takes no value'
bad ".work --mark --until-empty --batch 5 --batch 6" '--batch: given twice'
bad ".work --sql $tmp/nofile.sql --until-empty" "--sql: cannot open \"$tmp/nofile.sql\""
bad ".work --sql $tmp --until-empty" '--sql: '
bad ".work --mark --sql 'SELECT 1 AS x' --until-empty" '--mark: does not go with --sql'
bad ".work --until-empty" 'needs a handler'
bad ".work 2 3 --mark --until-empty" 'unexpected argument "3"'
bad ".work abc --mark --until-empty" 'N: expected an integer from 1 to 256, got "abc"'
bad ".work 2 --workers 2 --mark --until-empty" '--workers: the number of workers is given twice'
bad ".records args_c frob" 'unknown sub-command "frob"'
bad ".records args_c" 'missing the sub-command'
bad ".records args_c get" 'missing ID'
bad ".records args_c get a b" 'unexpected argument "b"'
bad ".records args_c delete" 'missing ID'
bad ".records args_c create" 'missing JSON'
bad ".records args_c update 00000000-0000-4000-8000-000000000000" 'missing JSON'
bad ".records args_c update --replce x {}" '--replce: unknown option (did you mean --replace?)'
bad ".records args_c find --limit x" '--limit: expected a non-negative integer, got "x"'
bad ".records args_c find --limit -1" '--limit: expected a non-negative integer, got "-1"'
bad ".records args_c find --lmit 5" '--lmit: unknown option (did you mean --limit?)'
bad ".records args_c find --sort" '--sort: missing value'
bad ".records args_c find name ==== 1" '.records'
bad ".records args_c import $tmp/nope.ndjson" "cannot open \"$tmp/nope.ndjson\""
bad ".records args_c import $tmp/ev.ndjson --documnts" '--documnts: unknown option (did you mean --documents?)'
bad ".records args_c export out.ndjson --field" '--field: unknown option (did you mean --fields?)'
bad ".records args_c export" 'missing FILE'
bad ".dlq purge --stage lod" '--stage: expected load or process, got "lod"'
bad ".dlq purge --status deadd" '--status: expected dead, replayed, discarded or any, got "deadd"'
bad ".dlq purge 1 2" 'unexpected argument "2"'
bad ".dlq purge" 'needs an ID, a filter'
bad ".dlq purge --all --stage load" '--all: does not go with an ID or a filter'
bad ".dlq purge --older-than" '--until: missing value'
bad ".dlq list --limit -1" '--limit: expected a positive integer, got "-1"'
bad ".dlq list --limit 0" '--limit: expected a positive integer, got "0"'
bad ".dlq list --stage" '--stage: missing value'
bad ".dlq list --stage --source web" '--stage: missing value'
bad ".dlq show" 'missing ID'
bad ".dlq show abc" 'ID: expected a positive integer, got "abc"'
bad ".dlq show 0" 'ID: expected a positive integer, got "0"'
bad ".dlq replay --stage lod" '--stage: expected load or process, got "lod"'
bad ".dlq replay --tabel t --all" '--tabel: unknown option (did you mean --table?)'
bad ".dlq replay" 'needs an ID, a filter or --all'
bad ".dlq replay --all --status dead" '--status: unknown option'
bad ".dlq counts --limit 5" '--limit: unknown option'
bad ".dlq frob" 'unknown sub-command "frob"'
bad ".load" 'missing FILE'
bad ".load $tmp/ev.ndjson --fromat csv" '--fromat: unknown option (did you mean --format?)'
bad ".load $tmp/ev.ndjson --format xml" '--format: expected csv, ndjson, json or auto, got "xml"'
bad ".load $tmp/ev.ndjson --batch-rows 0" '--batch-rows: expected a positive integer, got "0"'
bad ".load $tmp/ev.ndjson --batch-rows 10k" '--batch-rows: expected a positive integer, got "10k"'
bad ".load $tmp/ev.ndjson --batch-bytes 99999999999999999999" '--batch-bytes: expected a positive integer'
bad ".load $tmp/ev.ndjson --connections 9" '--connections: expected an integer from 1 to 8, got "9"'
bad ".load $tmp/ev.ndjson --connections" '--connections: missing value'
bad ".load $tmp/nope.ndjson --source web" "cannot open \"$tmp/nope.ndjson\""
bad ".load $tmp/mig" "is a directory"
bad ".load $tmp/ev.ndjson other" 'unexpected argument "other"'
bad ".load $tmp/ev.ndjson --map a=b" '--map: needs --table'
bad ".load $tmp/ev.ndjson --table t" '--table: needs --map'
bad ".load $tmp/ev.ndjson --table t --map a=b --source x" '--source: is for staging.raw_events'
bad ".load $tmp/ev.ndjson --table t --map a=b,,c" '--map: an empty entry'
bad ".load $tmp/ev.ndjson --delimiter ab" '--delimiter: expected one character or tab, got "ab"'
bad ".load $tmp/ev.ndjson --source a --source b" '--source: given twice'
bad ".load $tmp/ev.ndjson --source a --source-field s" '--source: does not go with --source-field'
[ "$(fingerprint "$EMPTY")" = "$empty0" ] || fail "the empty database changed: $(fingerprint "$EMPTY")"
# the same lines as a script: one error each, exit status non-zero
(cd "$tmp/cwd" && "$P" -f "$tmp/script" "$FULL") >"$tmp/out" 2>"$tmp/err" && fail "the script exited 0"
[ "$(grep -c '^[^ ]*script:[0-9]*: error: ' "$tmp/err")" = "$n" ] || fail "expected $n errors from the script, got:
$(cat "$tmp/err")"
[ "$(fingerprint "$FULL")" = "$full0" ] || fail "the script changed the database"
[ -z "$(ls -A "$tmp/cwd")" ] || fail "files made by the script: $(ls -A "$tmp/cwd")"
echo "$n bad command lines refused, nothing changed"

# a query that fails leaves no file behind
(cd "$tmp/cwd" && "$P" "$FULL" ".export 'SELECT nope' f.csv") >/dev/null 2>&1 && fail "bad query exported"
[ -z "$(ls -A "$tmp/cwd")" ] || fail "a failed .export left a file: $(ls -A "$tmp/cwd")"

# every option each command's parser knows is listed by .help COMMAND, and
# is known to the parser (it is followed by an unknown option, so that
# nothing runs whatever it is)
for c in cdc conninfo dlq exit explain export health help install listen load log migrate mode \
         partitions quit read records refresh serve stats timer version work; do
    h=$($P ".help $c") || fail ".help $c"
    opts=$($P ".help --options $c") || fail ".help --options $c"
    : >"$tmp/probe"
    printf '%s\n' "$opts" | while read -r a b; do
        [ -n "$a" ] || continue
        if [ -n "$b" ]; then sub=$a; o=$b; else sub=; o=$a; fi
        has "$h" "$o"
        case $c in
        records) echo ".records args_c $sub $o --zz-a --zz-b" ;;
        *) echo ".$c $sub $o --zz-a --zz-b" ;;
        esac >>"$tmp/probe"
    done || exit 1
    [ -s "$tmp/probe" ] || continue
    # one script per command: every line fails (nothing runs), none for an unknown listed option
    (cd "$tmp/cwd" && "$P" -f "$tmp/probe" "$FULL") >"$tmp/out" 2>"$tmp/err" && fail "a probe of .$c ran"
    [ "$(grep -c '^[^ ]*probe:[0-9]*: error: ' "$tmp/err")" = "$(wc -l <"$tmp/probe")" ] ||
        fail "not one error per probe of .$c: $(cat "$tmp/err")"
    for o in $(printf '%s\n' "$opts" | awk '{ print $NF }'); do
        grep -qF -- "$o: unknown option" "$tmp/err" && fail ".$c: $o is listed but unknown: $(cat "$tmp/err")"
    done
done
[ "$(fingerprint "$FULL")" = "$full0" ] || fail "the probes changed the database"
[ "$($P ".help --options load" | wc -l)" -ge 18 ] || fail ".help --options load lists too few"

$P "$D" "SET client_min_messages = warning" "DROP DATABASE shell_args_full" \
    "DROP DATABASE shell_args_empty" >/dev/null
rm -rf "$tmp"
echo "shell_args ok"
