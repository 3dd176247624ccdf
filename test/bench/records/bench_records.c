/*
** Record store benchmark driver (test/bench/records/run.sh runs it inside a
** throwaway cluster; PGPIPE_TEST_DSN names it).
**   bench_records batch N      create_batch of N records (one COPY); prints records/s
**   bench_records single N     N one-at-a-time pgpipe_records_create; prints records/s
**   bench_records ceiling N    the same N documents by COPY straight through libpq into a
**                              table with the same columns and no index, check or trigger
**                              (what COPY costs without the GIN work); prints records/s
**   bench_records fill N       fresh collection of N records (create_batch), ANALYZE
**   bench_records search Q     Q searches kind = "kX" (X varies; 100 hits each out of
**                              100K); prints searches/s
**   bench_records index on|off create or drop the GIN index on fields
**   bench_records plan         EXPLAIN of one search (to show which scan runs)
** Records are generated deterministically (fixed seed).
*/
#include "pgpipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pgpipe_pool *pool;

static void die(const char *what, const void *h)
{
    fprintf(stderr, "bench_records: %s: %s\n", what, h ? pgpipe_errmsg(h) : "out of memory");
    exit(1);
}

static char **make_docs(long n)
{
    char **docs = malloc((size_t)n * sizeof *docs);
    unsigned long long s = 0x9E3779B97F4A7C15ull;
    for (long i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        char buf[256];
        snprintf(buf, sizeof buf,
                 "{\"n\":%ld,\"kind\":\"k%ld\",\"score\":%llu,\"user\":{\"name\":\"user%llu\","
                 "\"city\":\"c%llu\"},\"tags\":[\"t%llu\",\"t%llu\"],\"active\":%s}",
                 i, i % 1000, s % 100000, s % 50000, s % 300, s % 40, (s >> 8) % 40,
                 (s & 1) ? "true" : "false");
        docs[i] = strdup(buf);
    }
    return docs;
}

static void sql(const char *q)
{
    pgpipe_conn *c;
    if (pgpipe_pool_acquire(pool, &c) != PGPIPE_OK)
        die("acquire", pool);
    PGresult *r = PQexec(pgpipe_conn_pg(c), q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_records: %s: %s", q, PQresultErrorMessage(r));
        exit(1);
    }
    PQclear(r);
    pgpipe_pool_release(c);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    const char *dsn = getenv("PGPIPE_TEST_DSN");
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = 1;
    if (pgpipe_pool_open(&pool, dsn, &po) != PGPIPE_OK)
        die("pool", pool);
    const char *mode = argv[1];
    long n = atol(argv[2]);
    const char *coll = !strcmp(mode, "batch") || !strcmp(mode, "single") ? "bench_ins" : "bench_search";
    sql("SET client_min_messages = warning");
    if (!strcmp(mode, "batch") || !strcmp(mode, "single") || !strcmp(mode, "fill"))
        sql(!strcmp(coll, "bench_ins") ? "DROP TABLE IF EXISTS records.bench_ins"
                                       : "DROP TABLE IF EXISTS records.bench_search");
    if (!strcmp(mode, "ceiling")) {
        char **docs = make_docs(n);
        sql("DROP TABLE IF EXISTS bench_plain");
        sql("CREATE TABLE bench_plain (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), fields jsonb NOT NULL,"
            " metadata jsonb NOT NULL DEFAULT '{}', created_at timestamptz NOT NULL DEFAULT now(),"
            " updated_at timestamptz NOT NULL DEFAULT now())");
        sql("CHECKPOINT");
        pgpipe_conn *c;
        if (pgpipe_pool_acquire(pool, &c) != PGPIPE_OK)
            die("acquire", pool);
        PGconn *pg = pgpipe_conn_pg(c);
        int64_t t0 = pgpipe_now_us();
        PGresult *r = PQexec(pg, "COPY bench_plain (fields) FROM STDIN");
        PQclear(r);
        pgpipe_copy_buf b = { 0 };
        for (long i = 0; i < n; i++) {
            pgpipe_copy_text_row(&b, 1, (const char *const *)&docs[i], NULL);
            if (b.len > 256 * 1024 || i == n - 1) {
                PQputCopyData(pg, b.data, (int)b.len);
                b.len = 0;
            }
        }
        PQputCopyEnd(pg, NULL);
        while ((r = PQgetResult(pg)) != NULL) {
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                die("ceiling COPY", NULL);
            PQclear(r);
        }
        double secs = (double)(pgpipe_now_us() - t0) / 1e6;
        printf("%.0f records/s (%ld in %.3f s)\n", (double)n / secs, n, secs);
        pgpipe_copy_buf_clear(&b);
        pgpipe_pool_release(c);
        sql("DROP TABLE bench_plain");
        for (long i = 0; i < n; i++)
            free(docs[i]);
        free(docs);
        pgpipe_pool_close(pool, NULL);
        return 0;
    }
    pgpipe_records *h;
    if (pgpipe_records_open(&h, pool, coll) != PGPIPE_OK)
        die("open", h);
    if (!strcmp(mode, "batch") || !strcmp(mode, "single") || !strcmp(mode, "fill")) {
        char **docs = make_docs(n);
        sql("CHECKPOINT");
        int64_t t0 = pgpipe_now_us();
        if (!strcmp(mode, "single")) {
            char id[37];
            for (long i = 0; i < n; i++)
                if (pgpipe_records_create(h, docs[i], id) != PGPIPE_OK)
                    die("create", h);
        } else if (pgpipe_records_create_batch(h, (const char *const *)docs, (size_t)n, NULL) != PGPIPE_OK) {
            die("create_batch", h);
        }
        double secs = (double)(pgpipe_now_us() - t0) / 1e6;
        if (!strcmp(mode, "fill"))
            sql("VACUUM ANALYZE records.bench_search");
        else
            printf("%.0f records/s (%ld in %.3f s)\n", (double)n / secs, n, secs);
        for (long i = 0; i < n; i++)
            free(docs[i]);
        free(docs);
    } else if (!strcmp(mode, "search") || !strcmp(mode, "plan")) {
        pgpipe_records_find_options o;
        pgpipe_records_find_options_init(&o);
        char where[64];
        long rows = 0;
        int64_t t0 = pgpipe_now_us();
        for (long i = 0; i < (!strcmp(mode, "plan") ? 1 : n); i++) {
            snprintf(where, sizeof where, "kind = \"k%ld\"", (i * 7919) % 1000);
            o.where = where;
            if (!strcmp(mode, "plan")) {
                char *plan;
                if (pgpipe_records_explain(h, &o, &plan) != PGPIPE_OK)
                    die("explain", h);
                fputs(plan, stdout);
                pgpipe_free(plan);
                break;
            }
            pgpipe_records_cursor *cur;
            if (pgpipe_records_find(h, &o, &cur) != PGPIPE_OK)
                die("find", h);
            rows += pgpipe_records_cursor_count(cur);
            pgpipe_records_cursor_close(cur);
        }
        double secs = (double)(pgpipe_now_us() - t0) / 1e6;
        if (!strcmp(mode, "search")) {
            if (rows != n * 100)
                fprintf(stderr, "bench_records: %ld rows, expected %ld\n", rows, n * 100);
            printf("%.1f searches/s (%ld in %.3f s, %ld rows)\n", (double)n / secs, n, secs, rows);
        }
    } else if (!strcmp(mode, "index")) {
        sql(argv[2][1] == 'n' ? "CREATE INDEX IF NOT EXISTS bench_search_fields_gin ON records.bench_search "
                                "USING gin (fields)"
                              : "DROP INDEX IF EXISTS records.bench_search_fields_gin");
        sql("ANALYZE records.bench_search");
    }
    pgpipe_records_close(h);
    pgpipe_pool_close(pool, NULL);
    return 0;
}
