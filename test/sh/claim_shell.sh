#!/bin/sh
# The shell's .work and .dlq commands on a real server: workers drain a table
# through a SQL handler, a failing record is dead-lettered, listed, counted,
# replayed and purged.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
need_pgpipe

# the built-in schema, installed as the migrations do (feeding its files to
# the shell ran an old version's CREATE OR REPLACE over the newer one: the
# later tests found V0020's dlq_replay)
$P "$D" ".install" >/dev/null || fail "schema install"
$P "$D" "DROP TABLE IF EXISTS claim_sh, claim_sh_out" \
    "CREATE TABLE claim_sh (LIKE staging.raw_events INCLUDING ALL)" \
    "CREATE TABLE claim_sh_out (id bigint PRIMARY KEY, n int CHECK (n <> 13))" \
    "DELETE FROM pgpipe.dead_letters WHERE source_table = 'claim_sh'" \
    "INSERT INTO claim_sh (source, event_type, payload) SELECT 'claim_sh_src', 'e', jsonb_build_object('n', g) FROM generate_series(1, 500) g" \
    >/dev/null || fail "setup"

out=$($P "$D" ".work --table claim_sh --workers 2 --batch 50 --max-attempts 1 --until-empty --sql \"INSERT INTO claim_sh_out SELECT (e->>'id')::bigint, (e->'payload'->>'n')::int FROM jsonb_array_elements(\$1::jsonb) e\"") || fail "work exit $?: $out"
has "$out" "claimed 500, done 499, retried 0, dead-lettered 1, fenced 0, released 0, abandoned 0 in"
out=$($P -m csv "$D" "SELECT count(*) FROM claim_sh_out")
has "$out" "499"

out=$($P "$D" ".dlq list --source claim_sh_src") || fail "dlq list"
has "$out" "check constraint"
has "$out" "(1 row)"
out=$($P "$D" ".dlq counts --source claim_sh_src --stage process") || fail "dlq counts"
has "$out" "23514"
out=$($P "$D" ".dlq stats --source claim_sh_src --stage process") || fail "dlq stats"
has "$out" "23514"
id=$($P -m csv "$D" "SELECT id FROM pgpipe.dead_letters WHERE source_table = 'claim_sh'" | tail -n 1)
out=$($P "$D" ".dlq show $id") || fail "dlq show"
has "$out" "claim_sh_src"
$P "$D" ".dlq replay" 2>/dev/null && fail "replay without a filter accepted"
# a careless script: an unset variable makes an empty filter; refused, nothing
# purged (it purged every dead letter); a time filter that is neither a time
# nor an interval is said, an interval back from now works
dead=$($P -m csv "$D" "SELECT count(*) FROM pgpipe.dead_letters WHERE status = 'dead'" | tail -n 1)
[ "$dead" -ge 1 ] || fail "no dead letters to guard: $dead"
err=$($P "$D" ".dlq purge --source ''" 2>&1) && fail "purge with an empty source accepted: $err"
has "$err" "--source: empty"
err=$($P "$D" ".dlq purge --status dead --source \"${NO_SUCH_VAR_PGPIPE:-}\"" 2>&1) && fail "purge with an empty source accepted: $err"
now=$($P -m csv "$D" "SELECT count(*) FROM pgpipe.dead_letters WHERE status = 'dead'" | tail -n 1)
[ "$now" = "$dead" ] || fail "an empty filter purged: $dead dead letters before, $now after"
err=$($P "$D" ".dlq list --since garbage --source no_such_source" 2>&1) && fail "--since garbage accepted: $err"
has "$err" 'since "garbage" is not a time'
out=$($P "$D" ".dlq list --source claim_sh_src --since '1 hour'") || fail "--since '1 hour'"
has "$out" "(1 row)"
out=$($P "$D" ".dlq purge --source claim_sh_src --older-than '30 days'") || fail "--older-than '30 days'"
has "$out" "purged 0"
err=$($P "$D" ".runs --since garbage" 2>&1) && fail ".runs --since garbage accepted: $err"
has "$err" 'since "garbage" is not a time'
# an empty table name is not staging.raw_events (.work --mark marked all of it)
$P "$D" "INSERT INTO staging.raw_events (source, event_type, payload) VALUES ('claim_sh_empty', 'e', '{}')" >/dev/null
err=$($P "$D" ".work --table '' --mark --until-empty" 2>&1) && fail "an empty --table accepted: $err"
has "$err" "--table: empty"
out=$($P -m csv "$D" "SELECT count(*) FROM staging.raw_events WHERE source = 'claim_sh_empty' AND NOT processed" | tail -n 1)
[ "$out" = 1 ] || fail "an empty --table marked staging rows: $out left"
err=$($P "$D" ".dlq replay --source claim_sh_src --table ''" 2>&1) && fail "replay into an empty --table accepted: $err"
has "$err" "--table: empty"
$P "$D" "DELETE FROM staging.raw_events WHERE source = 'claim_sh_empty'" >/dev/null
$P "$D" ".dlq frobnicate" 2>/dev/null && fail "unknown subcommand accepted"

# a load's dead letters are found by the source the load gave its records
# (not only by the file's name), and a replay that refuses them fails a script
tmpf=${PGPIPE_TEST_TMP:-/tmp}/claim_sh_src2.ndjson
printf '{"event_type":"a","n":1}\n{"n":2}\n' > "$tmpf"
out=$($P "$D" ".load $tmpf --source claim_sh_src2") || fail "load: $out"
has "$out" "loaded 1, dead-lettered 1"
out=$($P "$D" ".dlq list --source claim_sh_src2") || fail "dlq list by the load's --source"
has "$out" 'required field "event_type" is missing'
has "$out" "(1 row)"
out=$($P "$D" ".dlq list --source $tmpf") || fail "dlq list by the file"
has "$out" "(1 row)"
err=$($P "$D" ".dlq replay --source claim_sh_src2" 2>&1) && fail "a refused replay exited 0: $err"
has "$err" "replayed 0, refused 1"
has "$err" ".dlq replay: 1 of 1 dead letters refused"
$P "$D" ".dlq purge --source claim_sh_src2" "DELETE FROM staging.raw_events WHERE source = 'claim_sh_src2'" >/dev/null || fail "cleanup"

# fix the constraint, replay, work again: everything processed
$P "$D" "ALTER TABLE claim_sh_out DROP CONSTRAINT claim_sh_out_n_check" >/dev/null || fail "alter"
out=$($P "$D" ".dlq replay --source claim_sh_src --table claim_sh") || fail "replay"
has "$out" "replayed 1, refused 0"
# the same ID again: there, but replayed already (said; not an error)
err=$($P "$D" ".dlq replay $id --table claim_sh" 2>&1) || fail "replay of a replayed id: $err"
has "$err" "dead letter $id is replayed, not dead"
# an ID that does not exist is an error, not "replayed 0"
err=$($P "$D" ".dlq replay 987654321 --table claim_sh" 2>&1) && fail "replay of no such id accepted: $err"
has "$err" "no dead letter with id 987654321"
case "$err" in *"replayed 0"*) fail "replay of no such id counted: $err" ;; esac
err=$($P "$D" ".dlq purge 987654321" 2>&1) && fail "purge of no such id accepted: $err"
has "$err" ".dlq purge: no dead letter with id 987654321"
out=$($P "$D" ".work --table claim_sh --until-empty --quiet --sql \"INSERT INTO claim_sh_out SELECT (e->>'id')::bigint, (e->'payload'->>'n')::int FROM jsonb_array_elements(\$1::jsonb) e\"") || fail "work 2"
has "$out" "done 1,"
out=$($P -m csv "$D" "SELECT count(*) FROM claim_sh_out")
has "$out" "500"
out=$($P "$D" ".dlq purge --source claim_sh_src --status replayed") || fail "purge"
has "$out" "purged 1"
$P "$D" ".work --table claim_sh" 2>/dev/null && fail ".work without a handler accepted"
# a handler with a syntax error stops the workers with the server's message
# (with and without --until-empty) instead of retrying it forever
$P "$D" "INSERT INTO claim_sh (source, event_type, payload) VALUES ('s', 'e', '{}')" >/dev/null
for mode in --until-empty --quiet; do
    out=$($P "$D" ".work --table claim_sh $mode --sql \"SELEKT \$1::jsonb\"" 2>&1) &&
        fail "broken handler ($mode) succeeded: $out"
    has "$out" "syntax error at or near \"SELEKT\""
    has "$out" "42601"
done
$P "$D" "DROP TABLE claim_sh, claim_sh_out" >/dev/null
echo ok
