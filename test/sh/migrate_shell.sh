#!/bin/sh
# .migrate --resume-from N / --redo N: a statement whose outcome is unknown
# (its start recorded, not its end) stops every run until one of them says
# what to do; they are refused when nothing is in doubt. The runner's own
# behaviour is tested in test/test_migrate.c.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/migsh.XXXXXX")
$P "$PGPIPE_TEST_DSN" "DROP DATABASE IF EXISTS migsh" "CREATE DATABASE migsh" >/dev/null || fail "createdb"
D="$PGPIPE_TEST_DSN dbname=migsh"
q() { $P -m csv "$D" "$1" | tail -n 1; }
$P "$D" "CREATE SCHEMA migsh" "CREATE TABLE migsh.log (x text)" >/dev/null || fail "setup"
mkdir "$tmp/m"
printf -- '-- pgpipe:no-transaction\nINSERT INTO migsh.log VALUES (1);\nINSERT INTO migsh.log VALUES (2);\n' \
    > "$tmp/m/V1__two.sql"

out=$($P "$D" ".help migrate") || fail ".help migrate"
has "$out" "--resume-from N"
has "$out" "--redo N"
err=$($P "$D" ".migrate $tmp/m --resume-from 2" 2>&1) && fail "--resume-from with nothing in doubt"
has "$err" "--resume-from 2: no statement's outcome is unknown"
err=$($P "$D" ".migrate $tmp/m --resume-from 2 --redo 1" 2>&1) && fail "both options accepted"
has "$err" "one or the other"
err=$($P "$D" ".migrate $tmp/m --redo 0" 2>&1) && fail "--redo 0 accepted"
[ "$(q "SELECT count(*) FROM migsh.log")" = 0 ] || fail "a refused run ran something"

# statement 1 started, its end never recorded (as a run cut off leaves it)
$P "$D" ".migrate $tmp/m" >/dev/null || fail "first run"
$P "$D" "DELETE FROM migsh.log" "UPDATE pgpipe.migrations SET status = 'partial',
    statements_done = 0, statement_started = 1, progress_checksum =
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    WHERE scope = 'default' AND version = 1" >/dev/null || fail "forge"
err=$($P "$D" ".migrate $tmp/m" 2>&1) && fail "a statement in doubt ran again"
has "$err" "V1__two.sql:2:1: statement 1 of 2 (INSERT INTO migsh.log VALUES (1)) started but its end was not recorded"
has "$err" "--resume-from 2 if it took effect, or --redo 1"
out=$($P "$D" ".migrate $tmp/m --status") || fail "--status"
has "$out" "outcome is unknown"
err=$($P "$D" ".migrate $tmp/m --redo 2" 2>&1) && fail "--redo of another statement"
has "$err" "--redo 2: the statement whose outcome is unknown is statement 1"
[ "$(q "SELECT count(*) FROM migsh.log")" = 0 ] || fail "a stopped run ran something"
out=$($P "$D" ".migrate $tmp/m --redo 1") || fail "--redo 1: $out"
[ "$(q "SELECT string_agg(x, '+' ORDER BY x) FROM migsh.log")" = "1+2" ] || fail "--redo 1 ran"

# the same doubt settled the other way: statement 1 is taken as done
$P "$D" "DELETE FROM migsh.log WHERE x = '2'" "UPDATE pgpipe.migrations SET status = 'partial',
    statements_done = 0, statement_started = 1, progress_checksum =
    'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855'
    WHERE scope = 'default' AND version = 1" >/dev/null || fail "forge 2"
out=$($P "$D" ".migrate $tmp/m --resume-from 2") || fail "--resume-from 2: $out"
[ "$(q "SELECT string_agg(x, '+' ORDER BY x) FROM migsh.log")" = "1+2" ] || fail "--resume-from 2 ran"
# --to V: the versioned migrations up to V, the later ones left pending (V1
# above is applied in the same history)
mkdir "$tmp/to"
printf 'CREATE TABLE migsh.t1 (x int);\n' > "$tmp/to/V3__one.sql"
printf 'CREATE TABLE migsh.t2 (x int);\n' > "$tmp/to/V4__two.sql"
err=$($P "$D" ".migrate $tmp/to --to v3" 2>&1) && fail "--to v3 accepted"
has "$err" "--to: expected a version number"
out=$($P "$D" ".migrate $tmp/to --to 3") || fail "--to 3: $out"
[ "$(q "SELECT count(*) FROM pg_tables WHERE schemaname = 'migsh' AND tablename IN ('t1', 't2')")" = 1 ] ||
    fail "--to 3 applied more or less than V3"
out=$($P "$D" ".migrate $tmp/to --status") || fail "--status"
has "$out" "two"
out=$($P "$D" ".migrate $tmp/to") || fail "the rest: $out"
[ "$(q "SELECT count(*) FROM pg_tables WHERE schemaname = 'migsh' AND tablename IN ('t1', 't2')")" = 2 ] ||
    fail "V4 not applied after --to 3"
# --baseline on a history with applied versions is refused, also in a dry
# run, and writes nothing (it used to record a row for the baseline)
n=$(q "SELECT count(*) FROM pgpipe.migrations")
err=$($P "$D" ".migrate $tmp/to --baseline 5" 2>&1) && fail "--baseline on an applied history accepted"
has "$err" 'baseline version 5 refused: the history of scope "default" already has versions applied, up to version 4'
printf 'CREATE TABLE migsh.t6 (x int);\n' > "$tmp/to/V6__six.sql"
err=$($P "$D" ".migrate $tmp/to --baseline 5 --dry-run" 2>&1) && fail "--baseline --dry-run accepted"
has "$err" "baseline version 5 refused"
# (the dry run's table does not say V6 would apply: the run stops before it)
has "$err" "next run: none (baseline 5 refused)"
hasnt "$err" "would apply"
rm "$tmp/to/V6__six.sql"
err=$($P "$D" ".migrate $tmp/to --baseline 0" 2>&1) && fail "--baseline 0 accepted"
[ "$(q "SELECT count(*) FROM pgpipe.migrations")" = "$n" ] || fail "a refused baseline wrote"
# a file's SET reaches neither the next file nor the session after the run
mkdir "$tmp/sess"
printf 'CREATE SCHEMA migsh_app;\nSET search_path = migsh_app, public;\nCREATE TABLE migsh_app.s (k text);\n' > "$tmp/sess/V1__app.sql"
printf 'CREATE TABLE migsh_users (id int);\n' > "$tmp/sess/V2__users.sql"
$P "$PGPIPE_TEST_DSN" "DROP DATABASE IF EXISTS migsh_sess" "CREATE DATABASE migsh_sess" >/dev/null 2>&1 || fail "createdb migsh_sess"
out=$($P "$PGPIPE_TEST_DSN dbname=migsh_sess" ".migrate $tmp/sess" "SHOW search_path") || fail "session migrations: $out"
has "$out" '"$user", public'
out=$($P -m csv "$PGPIPE_TEST_DSN dbname=migsh_sess" "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'migsh_users'" | tail -n 1)
[ "$out" = public ] || fail "V2 ran with V1's search_path: $out"
$P "$PGPIPE_TEST_DSN" "DROP DATABASE migsh" "DROP DATABASE migsh_sess" >/dev/null
rm -rf "$tmp"
