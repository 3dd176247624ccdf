/*
** loadtest: the pieces of test/load/run.sh (10M events through the COPY
** loader and 4 workers, RSS sampled).
**
**   loadtest gen N FILE          N NDJSON events, deterministic (fixed seed)
**   loadtest load FILE           load FILE into staging.raw_events (conninfo
**                                from PG* / PGPIPE_TEST_DSN); prints the summary
**   loadtest work THREADS DONEFILE
**                                THREADS workers (SQL handler inserting into
**                                loadtest.production) until DONEFILE exists
**                                and the queue is empty; prints the stats
*/
#include "pgpipe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long long lt_state = 0x243f6a8885a308d3ull;

static unsigned long long lt_next(void)
{
    unsigned long long x = (lt_state += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static int lt_gen(long long n, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        perror(path);
        return 1;
    }
    static const char *const types[] = { "click", "view", "purchase", "signup", "logout" };
    static char buf[1 << 20];
    setvbuf(f, buf, _IOFBF, sizeof buf);
    for (long long i = 1; i <= n; i++) {
        unsigned long long r = lt_next();
        fprintf(f, "{\"event_type\":\"%s\",\"seq\":%lld,\"user_id\":%llu,\"amount\":%llu.%02llu,"
                   "\"session\":\"s%016llx\",\"tags\":[\"a\",\"b%llu\"],\"ok\":%s}\n",
                types[r % 5], i, (r >> 8) % 100000, (r >> 24) % 1000, (r >> 34) % 100,
                lt_next(), (r >> 40) % 10, (r >> 50) & 1 ? "true" : "false");
    }
    return fclose(f) != 0;
}

static int lt_load(const char *path)
{
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = getenv("PGPIPE_TEST_DSN");
    pgpipe_loader *l = NULL;
    int rc = pgpipe_loader_open(&l, &o);
    if (rc == PGPIPE_OK)
        rc = pgpipe_loader_load_file(l, path);
    pgpipe_load_summary s;
    memset(&s, 0, sizeof s);
    if (l)
        pgpipe_loader_summary(l, &s);
    printf("load: rc=%d records=%lld loaded=%lld dead=%lld seconds=%.2f rows_per_s=%.0f retries=%lld%s%s\n",
           rc, s.records_read, s.rows_loaded, s.rows_dead, s.seconds, s.rows_per_sec, s.retries,
           rc ? " error=" : "", rc ? pgpipe_errmsg(l) : "");
    pgpipe_loader_close(l);
    return rc != PGPIPE_OK;
}

static int lt_work(int threads, const char *donefile)
{
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = threads + 1;
    pgpipe_pool *pool;
    if (pgpipe_pool_open(&pool, getenv("PGPIPE_TEST_DSN"), &po) != PGPIPE_OK) {
        fprintf(stderr, "pool: %s\n", pgpipe_errmsg(pool));
        return 1;
    }
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    wo.threads = threads;
    wo.claim.batch_size = 1000;
    wo.poll_ms = 200;
    pgpipe_handler h = { NULL, NULL,
        "INSERT INTO loadtest.production (event_id, event_type, user_id, amount)"
        " SELECT (e->>'id')::bigint, e->>'event_type', (e->'payload'->>'user_id')::int,"
        " (e->'payload'->>'amount')::numeric FROM jsonb_array_elements($1::jsonb) e", NULL };
    pgpipe_workers *w;
    if (pgpipe_workers_open(&w, pool, &h, &wo) != PGPIPE_OK) {
        fprintf(stderr, "workers: %s\n", pgpipe_errmsg(w));
        return 1;
    }
    while (access(donefile, F_OK) != 0)
        pgpipe_sleep_ms(200);
    int rc = pgpipe_workers_run_until_empty(w, -1);
    pgpipe_workers_stats st;
    pgpipe_workers_stats_get(w, &st);
    printf("work: rc=%d done=%lld batches=%lld retried=%lld dead=%lld reconnects=%lld seconds=%.2f"
           " events_per_s=%.0f\n", rc, st.total.done, st.total.batches, st.total.retried,
           st.total.dead, st.reconnects, st.elapsed_s, st.events_per_s);
    pgpipe_workers_close(w);
    pgpipe_pool_close(pool, NULL);
    return rc != PGPIPE_OK;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "gen"))
        return lt_gen(atoll(argv[2]), argv[3]);
    if (argc == 3 && !strcmp(argv[1], "load"))
        return lt_load(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "work"))
        return lt_work(atoi(argv[2]), argv[3]);
    fprintf(stderr, "usage: loadtest gen N FILE | load FILE | work THREADS DONEFILE\n");
    return 2;
}
