#!/bin/sh
# CDC in a single-threaded build (-DPGPIPE_OMIT_THREADS, no -lpthread): the
# stream reads and writes on one thread (no writer thread) and still stages
# each change once: inserts, updates and deletes of 30 source transactions
# from a second cluster (wal_level = logical), through two runs (the second
# resumes after what the first staged).
set -eu
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "no test database"; exit 77; }
top=${PGPIPE_TOP:-$(pwd)}
cd "$top"
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/cdc_nt.XXXXXX")
chmod 755 "$tmp"
cleanup() { sh tool/pgtmp.sh stop "$tmp/src" >/dev/null 2>&1; rm -rf "$tmp"; }
trap cleanup EXIT
cflags=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
libs=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
cat > "$tmp/t.c" <<'C'
#include "pgpipe.c"
#define CHECK(c) do { if (!(c)) { fprintf(stderr, "line %d: %s\n", __LINE__, #c); return 1; } } while (0)
static long long one(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long long v = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 ? atoll(PQgetvalue(r, 0, 0)) : -1;
    if (PQresultStatus(r) != PGRES_TUPLES_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
        fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
    return v;
}
static int run(const char *src, const char *tgt, PGconn *t, long long want)
{
    pgpipe_cdc_options o;
    pgpipe_cdc_options_init(&o);
    o.source = src;
    o.target = tgt;
    o.slot = o.publication = "nt";
    o.tables = "r";
    o.status_interval_ms = 100;
    pgpipe_cdc *c = NULL;
    if (pgpipe_cdc_open(&c, &o) != PGPIPE_OK) {
        fprintf(stderr, "open: %s\n", pgpipe_errmsg(c));
        pgpipe_cdc_close(c);
        return 1;
    }
    long long have = 0;
    for (int i = 0; i < 150; i++) {
        if (pgpipe_cdc_run(c, 200) != PGPIPE_OK) {
            fprintf(stderr, "run: %s\n", pgpipe_errmsg(c));
            pgpipe_cdc_close(c);
            return 1;
        }
        if ((have = one(t, "SELECT count(*) FROM staging.raw_events WHERE source = 'nt'")) >= want)
            break;
    }
    pgpipe_cdc_stats st;
    pgpipe_cdc_stats_get(c, &st);
    pgpipe_cdc_close(c);
    CHECK(have == want);
    CHECK(st.confirmed_lsn >= st.applied_lsn && st.applied_lsn > 0);
    return 0;
}
int main(int argc, char **argv)
{
    CHECK(argc == 3);
    PGconn *s = PQconnectdb(argv[1]), *t = PQconnectdb(argv[2]);
    CHECK(PQstatus(s) == CONNECTION_OK && PQstatus(t) == CONNECTION_OK);
    one(s, "SET synchronous_commit = on");
    one(s, "CREATE TABLE r (id int PRIMARY KEY, v text)");
    /* the set-up: publication, slot, the target's schema */
    CHECK(run(argv[1], argv[2], t, 0) == 0);
    one(s, "DO $$ BEGIN FOR b IN 0 .. 19 LOOP INSERT INTO r SELECT b * 50 + k, 'v' "
           "FROM generate_series(1, 50) k; COMMIT; END LOOP; END $$");
    CHECK(run(argv[1], argv[2], t, 1000) == 0);
    one(s, "DO $$ BEGIN FOR b IN 0 .. 9 LOOP UPDATE r SET v = 'u' WHERE id > b * 50 AND "
           "id <= b * 50 + 50; COMMIT; END LOOP; END $$");
    one(s, "DELETE FROM r WHERE id > 900");
    CHECK(run(argv[1], argv[2], t, 1600) == 0);
    CHECK(one(t, "SELECT count(*) FROM (SELECT payload->>'lsn', event_type, coalesce(payload->'row'->>'id', "
                 "payload->'old'->>'id') FROM staging.raw_events GROUP BY 1, 2, 3 HAVING count(*) > 1) d") == 0);
    CHECK(one(t, "SELECT count(*) FROM staging.raw_events WHERE event_type = 'public.r:update'") == 500);
    CHECK(one(t, "SELECT count(*) FROM staging.raw_events WHERE event_type = 'public.r:delete'") == 100);
    pgpipe_error err;
    CHECK(pgpipe_cdc_drop(argv[1], argv[2], "nt", "nt", &err) == PGPIPE_OK);
    PQfinish(s);
    PQfinish(t);
    puts("single-threaded cdc ok: 1,600 changes once");
    return 0;
}
C
cp pgpipe.c pgpipe.h "$tmp/"
gcc -std=c11 -Wall -Wextra -Wpedantic -Werror -Wno-unused-function -DPGPIPE_OMIT_THREADS $cflags -I"$tmp" \
    "$tmp/t.c" $libs -lm -o "$tmp/t"
if nm "$tmp/t" | grep -q ' U pthread_create'; then
    echo "single-threaded build still starts threads"; exit 1
fi
S0=$(sh tool/pgtmp.sh start "$tmp/src" --logical --owner $$)
D=$PGPIPE_TEST_DSN
psql "$D" -qAtX -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS cdc_nt WITH (FORCE)" \
    -c "CREATE DATABASE cdc_nt" >/dev/null
"$tmp/t" "$S0" "$D dbname=cdc_nt"
psql "$D" -qAtX -c "DROP DATABASE IF EXISTS cdc_nt WITH (FORCE)" >/dev/null 2>&1 || true
