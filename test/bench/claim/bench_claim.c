/*
** bench_claim: the claimer benchmark driver (run by test/bench/claim/run.sh
** inside a throwaway cluster; conninfo from PGPIPE_TEST_DSN).
**
**   bench_claim setup N            built-in schema; staging.raw_events refilled
**                                  with N pending events; VACUUM ANALYZE
**   bench_claim pending            pending rows of staging.raw_events
**   bench_claim run W B SECS       W worker threads, batch B, trivial handler,
**                                  for SECS seconds (or until empty): events/s
**   bench_claim latency K          one idle worker; K times: commit one event
**                                  + NOTIFY, time until the handler sees it;
**                                  prints p50/p99/max in ms
**   bench_claim e2e N W B          end to end: the loader COPYs N events in 10K-row
**                                  batches (one NOTIFY per batch) while W
**                                  workers claim and process: events/s from
**                                  the first row sent to the last processed
*/
#include "pgpipe.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

static const char *dsn(void)
{
    const char *d = getenv("PGPIPE_TEST_DSN");
    return d ? d : "";
}

static PGconn *connect_or_die(void)
{
    PGconn *c = PQconnectdb(dsn());
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "bench_claim: %s", PQerrorMessage(c));
        exit(1);
    }
    return c;
}

static void exec_or_die(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "bench_claim: %s: %s", sql, PQresultErrorMessage(r));
        exit(1);
    }
    PQclear(r);
}

static long long scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    long long v = PQresultStatus(r) == PGRES_TUPLES_OK ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

static void install(PGconn *c)
{
    pgpipe_error err;
    exec_or_die(c, "SET client_min_messages = warning");
    if (pgpipe_schema_install(c, NULL, &err) != PGPIPE_OK) {
        fprintf(stderr, "bench_claim: schema: %s\n", err.message);
        exit(1);
    }
}

static int noop_batch(void *ud, pgpipe_batch *b, pgpipe_error *err)
{
    (void)ud;
    (void)err;
    volatile long long sum = 0;
    for (int i = 0; i < pgpipe_batch_count(b); i++)
        sum += pgpipe_batch_event(b, i)->id;
    return PGPIPE_OK;
}

static pgpipe_pool *pool_open(int n)
{
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = n;
    po.max_overflow = 2;
    pgpipe_pool *p;
    if (pgpipe_pool_open(&p, dsn(), &po) != PGPIPE_OK) {
        fprintf(stderr, "bench_claim: pool: %s\n", pgpipe_errmsg(p));
        exit(1);
    }
    return p;
}

static int cmd_run(int w, int b, double secs)
{
    pgpipe_pool *pool = pool_open(w + 1);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    wo.threads = w;
    wo.claim.batch_size = b;
    wo.poll_ms = 100;
    pgpipe_handler h = { NULL, noop_batch, NULL, NULL };
    pgpipe_workers *wk;
    if (pgpipe_workers_open(&wk, pool, &h, &wo) != PGPIPE_OK) {
        fprintf(stderr, "bench_claim: workers: %s\n", pgpipe_errmsg(wk));
        return 1;
    }
    int64_t t0 = pgpipe_now_us();
    pgpipe_workers_stats st;
    for (;;) {
        pgpipe_sleep_ms(20);
        pgpipe_workers_stats_get(wk, &st);
        if ((pgpipe_now_us() - t0) / 1e6 >= secs || st.idle == w)
            break;
    }
    pgpipe_workers_stop(wk);
    pgpipe_workers_wait(wk);
    pgpipe_workers_stats_get(wk, &st);
    double el = (pgpipe_now_us() - t0) / 1e6;
    printf("%.0f %lld %.3f\n", st.total.done / el, st.total.done, el);
    pgpipe_workers_close(wk);
    pgpipe_pool_close(pool, NULL);
    return 0;
}

/* ---- latency ---- */
static atomic_llong lat_seen_us;
static atomic_llong lat_want_id;

static int lat_batch(void *ud, pgpipe_batch *b, pgpipe_error *err)
{
    (void)ud;
    (void)err;
    for (int i = 0; i < pgpipe_batch_count(b); i++)
        if (pgpipe_batch_event(b, i)->id == atomic_load(&lat_want_id))
            atomic_store(&lat_seen_us, pgpipe_now_us());
    return PGPIPE_OK;
}

static int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static int cmd_latency(int k)
{
    PGconn *c = connect_or_die();
    install(c);
    exec_or_die(c, "DROP TABLE IF EXISTS public.claim_bench_lat;"
                   " CREATE TABLE public.claim_bench_lat (LIKE staging.raw_events INCLUDING ALL)");
    pgpipe_pool *pool = pool_open(2);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    wo.threads = 1;
    wo.claim.table = "public.claim_bench_lat";
    wo.poll_ms = 10000; /* fallback poll far above the target: NOTIFY does the work */
    pgpipe_handler h = { NULL, lat_batch, NULL, NULL };
    pgpipe_workers *wk;
    if (pgpipe_workers_open(&wk, pool, &h, &wo) != PGPIPE_OK)
        return 1;
    long long *s = calloc((size_t)k, sizeof *s);
    pgpipe_workers_stats st;
    for (int i = 0; i < 200; i++) {
        pgpipe_workers_stats_get(wk, &st);
        if (st.idle == 1)
            break;
        pgpipe_sleep_ms(10);
    }
    for (int i = 0; i < k; i++) {
        pgpipe_sleep_ms(20); /* the worker is asleep on its socket again */
        exec_or_die(c, "BEGIN");
        PGresult *r = PQexec(c, "INSERT INTO public.claim_bench_lat (source, event_type, payload)"
                                " VALUES ('lat', 'ping', '{}') RETURNING id");
        atomic_store(&lat_want_id, strtoll(PQgetvalue(r, 0, 0), NULL, 10));
        PQclear(r);
        atomic_store(&lat_seen_us, 0);
        exec_or_die(c, "NOTIFY pgpipe_events");
        exec_or_die(c, "COMMIT");
        int64_t t0 = pgpipe_now_us();
        while (atomic_load(&lat_seen_us) == 0 && pgpipe_now_us() - t0 < 20000000)
            nanosleep(&(struct timespec){ 0, 100000 }, NULL);
        s[i] = atomic_load(&lat_seen_us) - t0;
        if (s[i] < 0)
            s[i] = 0;
    }
    qsort(s, (size_t)k, sizeof *s, cmp_ll);
    printf("%.3f %.3f %.3f\n", s[k / 2] / 1000.0, s[(k * 99) / 100] / 1000.0, s[k - 1] / 1000.0);
    pgpipe_workers_close(wk);
    pgpipe_pool_close(pool, NULL);
    PQfinish(c);
    free(s);
    return 0;
}

/* ---- end to end ---- */
static int cmd_e2e(long long n, int w, int b)
{
    PGconn *c = connect_or_die();
    install(c);
    exec_or_die(c, "TRUNCATE staging.raw_events");
    pgpipe_pool *pool = pool_open(w + 1);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    wo.threads = w;
    wo.claim.batch_size = b;
    wo.poll_ms = 200;
    pgpipe_handler h = { NULL, noop_batch, NULL, NULL };
    pgpipe_workers *wk;
    if (pgpipe_workers_open(&wk, pool, &h, &wo) != PGPIPE_OK)
        return 1;
    /* the load is pgpipe's COPY loader (every record validated as JSON,
    ** 10K-row batches, one NOTIFY per committed batch) fed NDJSON */
    pgpipe_loader_options lo;
    pgpipe_loader_options_init(&lo);
    lo.format = PGPIPE_FORMAT_NDJSON;
    lo.event_type_value = "click";
    lo.source_value = "bench";
    lo.batch_rows = 10000;
    lo.install_schema = 0;
    char key[64];
    snprintf(key, sizeof key, "e2e-%ld-%lld", (long)getpid(), (long long)pgpipe_now_us());
    lo.load_key = key;
    pgpipe_loader *l;
    int64_t t0 = pgpipe_now_us();
    if (pgpipe_loader_open(&l, &lo) != PGPIPE_OK) {
        fprintf(stderr, "loader: %s\n", pgpipe_errmsg(l));
        return 1;
    }
    char line[96];
    for (long long i = 0; i < n; i++) {
        int len = snprintf(line, sizeof line, "{\"n\": %lld, \"user_id\": %lld}\n", i, i % 1000);
        if (pgpipe_loader_feed(l, line, (size_t)len) != PGPIPE_OK) {
            fprintf(stderr, "loader: %s\n", pgpipe_errmsg(l));
            return 1;
        }
    }
    if (pgpipe_loader_finish(l) != PGPIPE_OK) {
        fprintf(stderr, "loader: %s\n", pgpipe_errmsg(l));
        return 1;
    }
    pgpipe_loader_close(l);
    int64_t t_loaded = pgpipe_now_us();
    int rc = pgpipe_workers_run_until_empty(wk, 600000);
    double el = (pgpipe_now_us() - t0) / 1e6;
    pgpipe_workers_stats st;
    pgpipe_workers_stats_get(wk, &st);
    printf("%.0f %lld %.3f %.3f\n", st.total.done / el, st.total.done, el,
           (t_loaded - t0) / 1e6);
    pgpipe_workers_close(wk);
    pgpipe_pool_close(pool, NULL);
    PQfinish(c);
    return rc == PGPIPE_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    pgpipe_log_set_level(PGPIPE_LOG_ERROR);
    if (argc >= 3 && strcmp(argv[1], "setup") == 0) {
        PGconn *c = connect_or_die();
        install(c);
        char sql[512];
        exec_or_die(c, "TRUNCATE staging.raw_events");
        snprintf(sql, sizeof sql,
                 "INSERT INTO staging.raw_events (source, event_type, payload)"
                 " SELECT 'bench', 'click', jsonb_build_object('n', g, 'user_id', g %% 1000)"
                 " FROM generate_series(1, %lld) g", atoll(argv[2]));
        exec_or_die(c, sql);
        exec_or_die(c, "VACUUM ANALYZE staging.raw_events");
        PQfinish(c);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "pending") == 0) {
        PGconn *c = connect_or_die();
        printf("%lld\n", scalar(c, "SELECT count(*) FROM staging.raw_events WHERE NOT processed"));
        PQfinish(c);
        return 0;
    }
    if (argc >= 5 && strcmp(argv[1], "run") == 0)
        return cmd_run(atoi(argv[2]), atoi(argv[3]), atof(argv[4]));
    if (argc >= 3 && strcmp(argv[1], "latency") == 0)
        return cmd_latency(atoi(argv[2]));
    if (argc >= 5 && strcmp(argv[1], "e2e") == 0)
        return cmd_e2e(atoll(argv[2]), atoi(argv[3]), atoi(argv[4]));
    fprintf(stderr, "usage: bench_claim setup N | pending | run W B SECS | latency K | e2e N W B\n");
    return 2;
}
