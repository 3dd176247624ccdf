#!/bin/sh
# Quiet and honest by default: pgpipe's own schema installs print no server
# NOTICEs unless asked (.log notice), a user's own NOTICEs are shown as psql
# shows them; .migrate names a missing directory once; .help is never cut:
# the overview has every command's whole usage, .help CMD every option.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_quiet.XXXXXX")
chmod 755 "$tmp"
need_pgpipe

fresh() {
    $P "$D" "SET client_min_messages = warning" "DROP DATABASE IF EXISTS $1" "CREATE DATABASE $1" \
        >/dev/null || fail "setup: $1"
}

# .install on a fresh database: no NOTICE lines (the schema's IF NOT EXISTS
# statements raise some); with .log notice they are shown
fresh quiet_a
$P "$D dbname=quiet_a" ".install" >"$tmp/out" 2>"$tmp/err" || fail ".install: $(cat "$tmp/err")"
has "$(cat "$tmp/out")" "installed the built-in schema"
grep -q NOTICE "$tmp/err" && fail ".install printed NOTICEs: $(cat "$tmp/err")"
[ -s "$tmp/err" ] && fail ".install printed on stderr: $(cat "$tmp/err")"
fresh quiet_b
$P "$D dbname=quiet_b" ".log notice" ".install" >"$tmp/out" 2>"$tmp/err" || fail ".log notice .install"
has "$(cat "$tmp/err")" "NOTICE"
# the automatic install of .load, on the shell's connection and on the loader's own
printf '{"event_type":"e"}\n' >"$tmp/e.ndjson"
for c in 1 2; do
    fresh quiet_c
    $P "$D dbname=quiet_c" ".load $tmp/e.ndjson --connections $c" >"$tmp/out" 2>"$tmp/err" ||
        fail ".load: $(cat "$tmp/err")"
    has "$(cat "$tmp/out")" "loaded 1"
    grep -q NOTICE "$tmp/err" && fail ".load --connections $c printed NOTICEs: $(cat "$tmp/err")"
done
# a user's own NOTICE is shown, as psql shows it
$P "$D dbname=quiet_c" 'DO $$ BEGIN RAISE NOTICE $n$hello from the user$n$; END $$' >"$tmp/out" 2>"$tmp/err" ||
    fail "DO: $(cat "$tmp/err")"
has "$(cat "$tmp/err")" "NOTICE:  hello from the user"
$P "$D" "SET client_min_messages = warning" "DROP DATABASE quiet_a" "DROP DATABASE quiet_b" \
    "DROP DATABASE quiet_c" >/dev/null

# .migrate: a directory that is not there is said once; a file; an empty one
$P "$D" ".migrate $tmp/nonexistent" >"$tmp/out" 2>"$tmp/err" && fail "missing directory accepted"
[ "$(cat "$tmp/err")" = "error: .migrate: no such directory: \"$tmp/nonexistent\"" ] ||
    fail "missing directory: $(cat "$tmp/err")"
[ -s "$tmp/out" ] && fail "missing directory printed: $(cat "$tmp/out")"
$P "$D" ".migrate $tmp/e.ndjson" >"$tmp/out" 2>"$tmp/err" && fail "a file taken for a directory"
[ "$(cat "$tmp/err")" = "error: .migrate: not a directory: $tmp/e.ndjson" ] || fail "file: $(cat "$tmp/err")"
mkdir "$tmp/empty"
out=$($P "$D" ".migrate $tmp/empty" 2>&1) || fail "empty directory: $out"
[ "$out" = "no migrations in $tmp/empty" ] || fail "empty directory: $out"

# .help: every command's whole usage in the overview, the command's name at
# column 0; every option there and in .help CMD
all=$($P ".help") || fail ".help"
for c in cdc conninfo dlq exit explain export health help install listen load log migrate mode \
         partitions quit read records refresh stats timer version work; do
    printf '%s\n' "$all" | grep -q "^\.$c\( \|\$\)" || fail "no line starting with .$c in .help"
    one=$($P ".help $c") || fail ".help $c"
    printf '%s\n' "$one" | awk 'length > 79 { bad = 1 } END { exit bad }' || fail ".help $c: lines over 79 columns"
    [ "$c" = records ] && continue   # its sub-commands take the rest of the line
    for o in $($P ".help --options $c" | awk '{ print $NF }'); do
        printf '%s\n' "$all" | grep -qE -- "[[|]$o[] |]" || fail "$o of .$c is not in .help"
        has "$one" "$o"
    done
done
has "$all" "[--until-empty]"
has "$all" "[--max-record-bytes N]"
# nothing is cut: no line longer than 79 columns but its words are all there
awk 'length > 79 { print; bad = 1 } END { exit bad }' <<EOT || fail ".help has lines over 79 columns"
$all
EOT
one=$($P ".help load")
has "$one" "--connections N"
has "$one" "default 2"
has "$one" "--source TEXT"
rm -rf "$tmp"
echo "shell_quiet ok"
