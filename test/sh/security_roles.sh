#!/bin/sh
# Least-privilege roles (issue 11, point 3): pgpipe.grant_roles (sql/schema/
# R__pgpipe_roles.sql) on two LOGIN roles with passwords; a real load runs as
# the loader role and real workers as the worker role; what each must not do
# fails with SQLSTATE 42501 (insufficient privilege).
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "no PGPIPE_TEST_DSN"; exit 77; }
P=build/test/pgpipe
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/roles.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# the test cluster trusts local connections, so the password is not checked
# here; the roles are created as they would be in production
src=sec_roles_$$
L="$D user=sec_loader password=LoaderPw1"
W="$D user=sec_worker password=WorkerPw1"

$P -b "$D" ".install" \
    "DROP TABLE IF EXISTS production.sec_role_events" \
    "DO \$\$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sec_loader') THEN
        DROP OWNED BY sec_loader; DROP ROLE sec_loader; END IF;
      IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sec_worker') THEN
        DROP OWNED BY sec_worker; DROP ROLE sec_worker; END IF; END \$\$" \
    "CREATE ROLE sec_loader LOGIN PASSWORD 'LoaderPw1'" \
    "CREATE ROLE sec_worker LOGIN PASSWORD 'WorkerPw1'" \
    "CREATE SCHEMA IF NOT EXISTS production" \
    "CREATE TABLE production.sec_role_events (id bigint PRIMARY KEY, n int, source text)" \
    "SELECT pgpipe.grant_roles('sec_loader', 'sec_worker')" >"$tmp/out" 2>&1 ||
    fail "setup: $(cat "$tmp/out")"
# refusals of the function itself
$P "$D" "SELECT pgpipe.grant_roles('sec_loader', 'sec_loader')" >"$tmp/out" 2>&1 && fail "same role twice accepted"
has "$(cat "$tmp/out")" "use two roles"
$P "$D" "SELECT pgpipe.grant_roles('sec_nobody\"; DROP TABLE x; --', 'sec_worker')" >"$tmp/out" 2>&1 &&
    fail "a missing role accepted"
has "$(cat "$tmp/out")" "42704"

# a real load as the loader: good rows, a bad record (dead letter), a value
# the server rejects (isolated, dead-lettered), twice (resume skips)
{ printf '{"event_type":"e","n":%d,"received_at":"2026-01-02T03:04:05Z"}\n' 1 2 3 4 5; printf 'not json\n'
  printf '{"event_type":"e","n":6,"received_at":"not a time"}\n'; } >"$tmp/e.ndjson"
$P "$L" ".load $tmp/e.ndjson --name $src --received-at-field received_at --batch-rows 3" \
    >"$tmp/out" 2>&1
has "$(cat "$tmp/out")" "read 7, loaded 5, dead-lettered 2"
$P "$L" ".load $tmp/e.ndjson --name $src --received-at-field received_at --batch-rows 3" \
    >"$tmp/out" 2>&1
has "$(cat "$tmp/out")" "skipped (loaded before) 7"
grep -q "42501\|permission denied" "$tmp/out" && fail "the loader lacked a privilege: $(cat "$tmp/out")"

# real workers as the worker role: an upsert into production, one record that
# fails every time (dead-lettered by the worker)
$P "$W" ".work 2 --batch 2 --max-attempts 1 --source $src --until-empty --quiet --sql \
\"INSERT INTO production.sec_role_events (id, n, source) SELECT (e->>'id')::bigint, (e->'payload'->>'n')::int, e->>'source' FROM jsonb_array_elements(\$1::jsonb) e WHERE 1 / ((e->'payload'->>'n')::int - 3) IS NOT NULL ON CONFLICT (id) DO UPDATE SET n = excluded.n\"" \
    >"$tmp/out" 2>&1 || fail "workers as sec_worker: $(cat "$tmp/out")"
has "$(cat "$tmp/out")" "done 4"
has "$(cat "$tmp/out")" "dead-lettered 1"
got=$($P -m csv "$D" "SELECT (SELECT count(*) FROM production.sec_role_events WHERE source = '$src'),
    (SELECT count(*) FROM staging.raw_events WHERE source = '$src' AND processed),
    (SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = '$src'),
    (SELECT string_agg(DISTINCT sqlstate, ',') FROM pgpipe.dead_letters WHERE source_name = '$src' AND stage = 'process')" | tail -n 1)
[ "$got" = "4,5,3,22012" ] || fail "after load and work: production, processed, dead letters, sqlstate = $got"
echo "ok: a load as sec_loader and workers as sec_worker (production 4, dead letters 3)"

# forbidden: each must fail with 42501
forbid() {
    who=$1; conn=$2; sql=$3
    $P "$conn" "$sql" >"$tmp/out" 2>&1 && fail "$who could: $sql"
    has "$(cat "$tmp/out")" "42501"
    echo "ok: $who cannot: $sql"
}
forbid loader "$L" "SELECT count(*) FROM staging.raw_events"
forbid loader "$L" "DELETE FROM staging.raw_events"
forbid loader "$L" "UPDATE staging.raw_events SET processed = true"
forbid loader "$L" "TRUNCATE staging.raw_events"
forbid loader "$L" "SELECT count(*) FROM production.sec_role_events"
forbid loader "$L" "INSERT INTO production.sec_role_events (id) VALUES (-1)"
forbid loader "$L" "SELECT count(*) FROM pgpipe.dead_letters"
forbid loader "$L" "DELETE FROM pgpipe.loads"
forbid loader "$L" "DROP TABLE staging.raw_events"
forbid loader "$L" "CREATE TABLE staging.sec_loader_made (i int)"
forbid worker "$W" "DROP TABLE staging.raw_events"
forbid worker "$W" "TRUNCATE staging.raw_events"
forbid worker "$W" "DELETE FROM staging.raw_events"
forbid worker "$W" "INSERT INTO staging.raw_events (source, event_type, payload) VALUES ('x', 'x', '{}')"
forbid worker "$W" "INSERT INTO pgpipe.loads (source, format, target) VALUES ('x', 'csv', 'x')"
forbid worker "$W" "UPDATE pgpipe.loads SET status = 'failed'"
forbid worker "$W" "SELECT count(*) FROM pgpipe.dead_letters"
forbid worker "$W" "DELETE FROM pgpipe.dead_letters"
forbid worker "$W" "TRUNCATE production.sec_role_events"
forbid worker "$W" "DROP TABLE production.sec_role_events"
forbid worker "$W" "ALTER TABLE staging.raw_events ADD COLUMN x int"
forbid worker "$W" "CREATE TABLE production.sec_worker_made (i int)"

$P "$D" "DROP TABLE production.sec_role_events" "DROP OWNED BY sec_loader" "DROP OWNED BY sec_worker" \
    "DROP ROLE sec_loader" "DROP ROLE sec_worker" >/dev/null 2>&1
echo "roles ok"
