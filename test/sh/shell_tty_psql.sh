#!/bin/sh
# The interactive habits of psql, typed on a real terminal (issue 26): the
# prompt shows the transaction state (* inside one, ! after an error in
# it); Tab completes dot commands, backslash commands, a dot command's
# options, file names after .read and table and column names; Ctrl-R
# finds a line of the history; \e edits the statement in $EDITOR; output
# taller than the terminal goes through $PAGER (\pset pager off stops it);
# \x auto expands what is wider than the terminal; a line wider than the
# terminal is edited where it wraps, and a resize redraws it; .top redraws
# the pipeline in place until q, with the CDC slots, schedules and spool
# when those run (one line per refresh without a terminal).
set -u
cd "${PGPIPE_TOP:-.}"
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/ttypsql.XXXXXX")
cc -std=c11 -Wall -Wextra -Werror test/ptydrive.c -o "$tmp/ptydrive" || exit 1
$P "$D" -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS shell_ttypsql" \
    -c "CREATE DATABASE shell_ttypsql" || exit 1
DB="$D dbname=shell_ttypsql"
$P -q "$DB" -c "CREATE SCHEMA staging" -c "CREATE TABLE comp_table (comp_column int)" \
    -c "INSERT INTO comp_table VALUES (7)" || exit 1
# the pipeline: an event type, a source and a dead letter to complete
printf '{"event_type":"signup_done","v":1}\nnot json\n' > "$tmp/ev.ndjson"
$P -q "$DB" ".load $tmp/ev.ndjson --source websrc" >/dev/null || exit 1
# the sources .top shows when they run: a CDC slot, a schedule, a spool
$P -q "$DB" -c "INSERT INTO pgpipe.cdc_slots (slot, system_id, database, publication, applied_lsn,
    commit_time) VALUES ('app_slot', '1', 'app', 'p', '0/16B3748', now() - interval '3 seconds')" \
    -c "INSERT INTO pgpipe.run_schedules (pipeline, schedule, expr, last_slot)
        VALUES ('nightly', 'rollup', '*/5 * * * *', '2030-01-01 00:00:00+00')" || exit 1
echo '{"t":1}' > "$tmp/rec.ndjson"
$P -q "$DB" ".spool add $tmp/spool $tmp/rec.ndjson --device dev1" >/dev/null || exit 1
printf "SELECT 'from the script' AS s;\n" > "$tmp/scriptfile.sql"
# migration versions to complete after .migrate DIR --to
mkdir "$tmp/mig" && : > "$tmp/mig/V20261205__add.sql" && : > "$tmp/mig/V1__first.sql"
# the editor: writes a statement into the file it is given
printf '#!/bin/sh\necho "SELECT '"'"'edited'"'"' AS e;" > "$1"\n' > "$tmp/editor"
chmod +x "$tmp/editor"
long=$(awk 'BEGIN { for (i = 0; i < 110; i++) printf "x" }')
cat > "$tmp/script" <<S
expect pgpipe> 
send BEGIN;\\r
expect pgpipe*> 
send SELEC 1;\\r
expect [42601]
expect pgpipe!> 
send ROLLBACK;\\r
expect ROLLBACK
expect \\rpgpipe> 
# Tab: a dot command, a backslash command, an option, a file, a table, a column
send .ta\\t
expect .tables 
send \\r
expect comp_table
expect pgpipe> 
send \\\\conn\\t
expect \\\\conninfo 
send \\r
expect connected to database
expect pgpipe> 
send .load x --event-t\\t
expect --event-type
send \\x15
send .migrate $tmp/mig --to 2\\t
expect --to 20261205 
send \\x15
send .read $tmp/scriptf\\t
expect scriptfile.sql 
send \\r
expect from the script
expect pgpipe> 
send SELECT comp_c\\t
expect comp_column 
send FROM comp_t\\t
expect comp_table 
send ;\\r
expect  7
expect (1 row)
expect pgpipe> 
send \\\\dt stagi\\t
expect staging.
send \\x15
# a sub-command, a choice, and what the pipeline holds after its options
send .dlq li\\t
expect .dlq list 
send --error inv\\t
expect --error invalid 
send \\x15
send .mode mark\\t
expect .mode markdown 
send \\x15
send .load x --event-type sig\\t
expect --event-type signup_done 
send \\x15
send .work --mark --source web\\t
expect --source websrc 
send \\x15
# Ctrl-R finds the line with the needle; Enter runs it
send SELECT 'needle' AS n;\\r
expect (1 row)
expect pgpipe> 
send SELECT 'hay' AS h;\\r
expect (1 row)
expect pgpipe> 
send \\x12needl
expect (reverse-i-search)\`needl': SELECT 'needle' AS n;
send \\r
expect needle
expect pgpipe> 
# \\e: the statement comes back from the editor and runs
send \\\\e\\r
expect edited
expect (1 row)
expect pgpipe> 
# the pager for output taller than the terminal, and \\pset pager off
send SELECT g FROM generate_series(1, 40) g;\\r
expect PAGED:(40 rows)
expect pgpipe> 
send \\\\pset pager off\\r
expect Pager usage is off.
send SELECT g FROM generate_series(1, 40) g;\\r
expect \\r\\n(40 rows)
expect pgpipe> 
# \\x auto: wider than the terminal (100 columns) is expanded
send \\\\x auto\\r
expect Expanded display is used automatically.
send SELECT repeat('w', 120) AS wide, 1 AS n;\\r
expect -[ RECORD 1 ]
expect n    | 1
expect pgpipe> 
send SELECT 'narrow' AS k;\\r
expect  narrow
expect pgpipe> 
# a line wider than the terminal: edited where it wraps (an insertion 20
# characters from the end, on the second row), redrawn from its first row
send SELECT length('$long') AS len;
send \\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D\\e[D
send y
expect \\e[1A
send \\r
expect  111
expect pgpipe> 
# a resize redraws the line being typed for the new width
send SELECT 'after resize' AS r
resize 24 40
expect \\rpgpipe> SELECT 'after resize' AS r
send ;\\r
expect after resize
expect pgpipe> 
# .top: the pipeline redrawn in place until q
send .top --interval 1\\r
expect Backlog by event type
expect signup_done
expect Dead letters by error
expect invalid literal
expect CDC slots
expect app_slot
expect Schedules
expect 2030-01-01 00:05:00
expect 1 records
send q
expect pgpipe> 
send \\\\q\\r
exit 0
S
PGPIPE_SPOOL_DIR=$tmp/spool HOME=$tmp PGPIPE_HISTORY=$tmp/history EDITOR=$tmp/editor PAGER="sed s/^/PAGED:/" \
    "$tmp/ptydrive" "$tmp/script" -- "$P" "$DB" || exit 1
# not on a terminal, .top prints one line per refresh
out=$($P "$DB" ".top --interval 1 --count 2") || exit 1
[ "$(printf '%s\n' "$out" | grep -c 'backlog 1, oldest [0-9:]*, in [0-9]*/min, processed 0/min, workers 0, dead 1 ')" = 2 ] ||
    { echo ".top lines: $out"; exit 1; }
# .status is .top's line, and \watch runs it again
out=$($P "$DB" .status '\watch 0 c=2') || exit 1
[ "$(printf '%s\n' "$out" | grep -c '^backlog 1, oldest [0-9:]*, in [0-9]*/min, processed 0/min, workers 0, dead 1 ')" = 3 ] ||
    { echo ".status and \\watch: $out"; exit 1; }
$P "$D" -q -c "DROP DATABASE shell_ttypsql" || exit 1
echo "interactive psql habits ok"
