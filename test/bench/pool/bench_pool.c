/*
** make bench-pool: the connection pool against a new connection per use, and
** pipeline mode against the same statements one at a time.
**
** Workloads (each: a warm-up run, then RUNS measured runs; median, min, max):
**  1. THREADS threads for SECONDS each doing  get a connection + SELECT 1 +
**     give it back.  pgpipe: pgpipe_pool_acquire_ex / PQexec / release over a
**     pool of 4 + 4 overflow.  peer: PQconnectdb / PQexec / PQfinish.
**     Reported: operations/s, errors, and the time to get a connection
**     (acquire wait for the pool, connect time for the peer): p50, p99, max.
**  2. Batches of NSTMT small UPDATEs on one connection: a pipeline with a Sync
**     after each statement (same autocommit semantics as one at a time) and
**     with one Sync at the end, against PQexecParams one at a time.
**  3. NSTMT parameterized SELECTs one at a time (a primary-key lookup, and a
**     4-way self-join whose planning costs more): pgpipe_conn_exec_cached
**     (prepared once) against PQexecParams (parsed and planned each time).
**  In 2 the methods alternate batch by batch (ROUNDS each per run), in 3
**  statement by statement, so a load change on the shared machine hits them
**  alike.
** Needs PGPIPE_TEST_DSN (run.sh starts a throwaway cluster).
*/
#include "pgpipe.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RUNS 5
#define THREADS 16
#define NSTMT 1000 /* statements per batch */
#define ROUNDS 4  /* batches per method per run, methods interleaved */

static const char *dsn;
static double seconds = 2.0;

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct samples {
    int64_t *v;
    size_t n, cap;
} samples;

static void samples_add(samples *s, int64_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (!s->v) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    s->v[s->n++] = x;
}

static int64_t pct(const samples *s, double q)
{
    if (!s->n)
        return 0;
    size_t i = (size_t)(q * (double)(s->n - 1) + 0.5);
    return s->v[i];
}

/* ---- workload 1 --------------------------------------------------------- */

typedef struct run_ctx {
    pgpipe_pool *pool; /* NULL: new connection per use */
    int64_t start_us, end_us;
} run_ctx;

typedef struct thr {
    run_ctx *ctx;
    long ops, errors;
    samples wait;
    samples when; /* start time of each wait, us since the run began */
    char err[256];
} thr;

static void *worker(void *arg)
{
    thr *t = arg;
    run_ctx *ctx = t->ctx;
    while (pgpipe_now_us() < ctx->end_us) {
        int64_t t0 = pgpipe_now_us();
        PGconn *pg = NULL;
        pgpipe_conn *c = NULL;
        if (ctx->pool) {
            pgpipe_error e;
            if (pgpipe_pool_acquire_ex(ctx->pool, &c, 30000, &e) != PGPIPE_OK) {
                t->errors++;
                snprintf(t->err, sizeof t->err, "%.200s", e.message);
                continue;
            }
            pg = pgpipe_conn_pg(c);
        } else {
            pg = PQconnectdb(dsn);
            if (PQstatus(pg) != CONNECTION_OK) {
                t->errors++;
                snprintf(t->err, sizeof t->err, "%.200s", PQerrorMessage(pg));
                PQfinish(pg);
                continue;
            }
        }
        samples_add(&t->wait, pgpipe_now_us() - t0);
        samples_add(&t->when, t0 - ctx->start_us);
        PGresult *r = PQexec(pg, "SELECT 1");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
            t->ops++;
        else {
            t->errors++;
            snprintf(t->err, sizeof t->err, "%.200s", PQresultErrorMessage(r));
        }
        PQclear(r);
        if (c)
            pgpipe_pool_release(c);
        else
            PQfinish(pg);
    }
    return NULL;
}

typedef struct run_result {
    double ops_s;
    long errors;
    int64_t p50, p99, max, max_at, max_late;
    double fair;      /* worst thread's mean wait / median thread's mean wait */
    long over10, nwaits; /* waits longer than 10x the median, of all */
    long ops_min, ops_max;
    pgpipe_pool_stats st;
} run_result;

static run_result run_conn(int use_pool)
{
    run_result res;
    memset(&res, 0, sizeof res);
    run_ctx ctx = { NULL, 0, 0 };
    if (use_pool) {
        pgpipe_pool_options o;
        pgpipe_pool_options_init(&o);
        o.pool_size = 4;
        o.max_overflow = 4;
        o.min_idle = 4;
        if (pgpipe_pool_open(&ctx.pool, dsn, &o) != PGPIPE_OK) {
            fprintf(stderr, "pool open failed: %s\n", pgpipe_errmsg(ctx.pool));
            exit(2);
        }
    }
    thr t[THREADS];
    pthread_t th[THREADS];
    memset(t, 0, sizeof t);
    int64_t start = pgpipe_now_us();
    ctx.start_us = start;
    ctx.end_us = start + (int64_t)(seconds * 1e6);
    for (int i = 0; i < THREADS; i++) {
        t[i].ctx = &ctx;
        pthread_create(&th[i], NULL, worker, &t[i]);
    }
    samples all = { NULL, 0, 0 };
    long ops = 0;
    double means[THREADS];
    res.ops_min = -1;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        ops += t[i].ops;
        res.errors += t[i].errors;
        if (res.ops_min < 0 || t[i].ops < res.ops_min)
            res.ops_min = t[i].ops;
        if (t[i].ops > res.ops_max)
            res.ops_max = t[i].ops;
        double sum = 0;
        for (size_t k = 0; k < t[i].wait.n; k++)
            sum += (double)t[i].wait.v[k];
        means[i] = t[i].wait.n ? sum / (double)t[i].wait.n : 0;
        if (t[i].errors)
            fprintf(stderr, "  error: %s\n", t[i].err);
        for (size_t k = 0; k < t[i].wait.n; k++) {
            samples_add(&all, t[i].wait.v[k]);
            if (t[i].wait.v[k] > res.max) {
                res.max = t[i].wait.v[k];
                res.max_at = t[i].when.v[k];
            }
            if (t[i].when.v[k] > 300000 && t[i].wait.v[k] > res.max_late)
                res.max_late = t[i].wait.v[k];
        }
        free(t[i].wait.v);
        free(t[i].when.v);
    }
    qsort(means, THREADS, sizeof means[0], cmp_dbl);
    res.fair = means[THREADS / 2] > 0 ? means[THREADS - 1] / means[THREADS / 2] : 0;
    double el = (double)(pgpipe_now_us() - start) / 1e6;
    res.ops_s = (double)ops / el;
    qsort(all.v, all.n, sizeof *all.v, cmp_i64);
    res.p50 = pct(&all, 0.50);
    res.nwaits = (long)all.n;
    for (size_t k = 0; k < all.n; k++)
        res.over10 += all.v[k] > 10 * res.p50;
    res.p99 = pct(&all, 0.99);
    free(all.v);
    if (ctx.pool) {
        pgpipe_pool_stats_get(ctx.pool, &res.st);
        int leaked = 0;
        if (pgpipe_pool_close(ctx.pool, &leaked) != PGPIPE_OK)
            fprintf(stderr, "  pool close: %d leaked\n", leaked);
    }
    return res;
}

/* ---- workloads 2 and 3 -------------------------------------------------- */

static PGconn *must_connect(void)
{
    PGconn *pg = PQconnectdb(dsn);
    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(pg));
        exit(2);
    }
    return pg;
}

static void must_exec(PGconn *pg, const char *sql)
{
    PGresult *r = PQexec(pg, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK) {
        fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
        exit(2);
    }
    PQclear(r);
}

static const char *UPD = "UPDATE pool_bench SET n = n + 1 WHERE id = $1";

/* mode 0: one at a time, 1: pipeline sync each, 2: pipeline one sync */
static int64_t run_updates(pgpipe_conn *c, int mode, long *errors)
{
    PGconn *pg = pgpipe_conn_pg(c);
    char ids[NSTMT][12];
    for (int i = 0; i < NSTMT; i++)
        snprintf(ids[i], sizeof ids[i], "%d", i % 1000 + 1);
    int64_t t0 = pgpipe_now_us();
    if (mode == 0) {
        for (int i = 0; i < NSTMT; i++) {
            const char *v[1] = { ids[i] };
            PGresult *r = PQexecParams(pg, UPD, 1, NULL, v, NULL, NULL, 0);
            if (PQresultStatus(r) != PGRES_COMMAND_OK)
                (*errors)++;
            PQclear(r);
        }
    } else {
        pgpipe_pipeline *p;
        if (pgpipe_pipeline_open(&p, c, mode == 1 ? PGPIPE_PIPELINE_SYNC_EACH : 0) != PGPIPE_OK) {
            fprintf(stderr, "pipeline: %s\n", pgpipe_errmsg(c));
            exit(2);
        }
        for (int i = 0; i < NSTMT; i++) {
            const char *v[1] = { ids[i] };
            if (pgpipe_pipeline_add(p, UPD, 1, v) != PGPIPE_OK)
                (*errors)++;
        }
        int failed = 0;
        if (pgpipe_pipeline_run(p, &failed) != PGPIPE_OK)
            fprintf(stderr, "pipeline: %s\n", pgpipe_errmsg(p));
        *errors += failed;
        pgpipe_pipeline_close(p);
    }
    return pgpipe_now_us() - t0;
}

static const char *SEL = "SELECT id, n FROM pool_bench WHERE id = $1";
static const char *JOIN4 = "SELECT b1.id, b2.n + b3.n + b4.n FROM pool_bench b1 "
                           "JOIN pool_bench b2 ON b2.id = b1.id JOIN pool_bench b3 ON b3.id = b2.id "
                           "JOIN pool_bench b4 ON b4.id = b3.id WHERE b1.id = $1";

/* Both methods statement by statement (order alternating), each timed on
** its own, so machine noise falls on both alike. t[0]: cached, t[1]: plain. */
static void run_selects(pgpipe_conn *c, const char *sql, int64_t t[2], long *errors)
{
    PGconn *pg = pgpipe_conn_pg(c);
    for (int i = 0; i < 2 * NSTMT; i++) {
        char id[12];
        snprintf(id, sizeof id, "%d", (i / 2) % 1000 + 1);
        const char *v[1] = { id };
        int cached = (i & 1) ^ ((i / 2) & 1);
        int64_t t0 = pgpipe_now_us();
        PGresult *r = cached ? pgpipe_conn_exec_cached(c, sql, 1, v, NULL, NULL, 0)
                             : PQexecParams(pg, sql, 1, NULL, v, NULL, NULL, 0);
        t[cached ? 0 : 1] += pgpipe_now_us() - t0;
        if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
            (*errors)++;
        PQclear(r);
    }
}

/* ---- reporting ---------------------------------------------------------- */

typedef struct fig {
    double v[RUNS];
} fig;

static double med(const fig *f, double *mn, double *mx)
{
    double s[RUNS];
    memcpy(s, f->v, sizeof s);
    qsort(s, RUNS, sizeof s[0], cmp_dbl);
    *mn = s[0];
    *mx = s[RUNS - 1];
    return s[RUNS / 2];
}

/* higher: 1 when higher is better (ratio = pgpipe / peer), else peer / pgpipe */
static void report(const char *workload, const char *metric, const fig *a, const char *peer,
                   const fig *b, int higher)
{
    double amin, amax, bmin, bmax;
    double am = med(a, &amin, &amax), bm = med(b, &bmin, &bmax);
    double ratio = higher ? (bm > 0 ? am / bm : 0) : (am > 0 ? bm / am : 0);
    printf("pool       | %-34s | %10.0f %-7s (min %.0f max %.0f) | %-24s %10.0f (min %.0f max %.0f) | %.2f\n",
           workload, am, metric, amin, amax, peer, bm, bmin, bmax, ratio);
    printf("bench: component=pool workload=%s metric=%s pgpipe=%.0f peer=%s peer_value=%.0f ratio=%.2f\n",
           workload, metric, am, peer, bm, ratio);
}

int main(int argc, char **argv)
{
    dsn = getenv("PGPIPE_TEST_DSN");
    if (!dsn || !*dsn) {
        fprintf(stderr, "PGPIPE_TEST_DSN is not set (run through test/bench/pool/run.sh)\n");
        return 2;
    }
    if (argc > 1)
        seconds = atof(argv[1]);
    pgpipe_log_set_level(PGPIPE_LOG_ERROR);

    printf("== pool: %d threads, acquire + SELECT 1 + release, pool 4 + 4 overflow vs a new "
           "connection per use, %.1f s per run, median of %d after a warm-up\n",
           THREADS, seconds, RUNS);
    run_conn(1);
    run_conn(0);
    fig ops_p, ops_n, p50_p, p50_n, p99_p, p99_n, max_p, max_n;
    long err_p = 0, err_n = 0;
    double worst_ratio = 0;
    fig fair, late;
    for (int i = 0; i < RUNS; i++) {
        run_result a = run_conn(1);
        run_result b = run_conn(0);
        ops_p.v[i] = a.ops_s;
        ops_n.v[i] = b.ops_s;
        p50_p.v[i] = (double)a.p50;
        p50_n.v[i] = (double)b.p50;
        p99_p.v[i] = (double)a.p99;
        p99_n.v[i] = (double)b.p99;
        max_p.v[i] = (double)a.max;
        max_n.v[i] = (double)b.max;
        err_p += a.errors;
        err_n += b.errors;
        fair.v[i] = a.fair;
        late.v[i] = (double)a.max_late;
        double r = a.p50 > 0 ? (double)a.max / (double)a.p50 : 0;
        if (r > worst_ratio)
            worst_ratio = r;
        printf("  run %d: pool %.0f ops/s (wait p50 %lld us, p99 %lld us, max %lld us; pool stats "
               "p50 %lld p95 %lld p99 %lld max %lld us; created %lld), new-conn %.0f ops/s "
               "(connect p50 %lld us, max %lld us); pool max wait began at %lld ms, max after 300 ms %lld us; per thread: ops %ld..%ld, worst mean wait / median mean wait %.2f; waits > 10x median: %ld of %ld\n",
               i + 1, a.ops_s, (long long)a.p50, (long long)a.p99, (long long)a.max,
               a.st.wait_p50_us, a.st.wait_p95_us, a.st.wait_p99_us, a.st.wait_max_us,
               a.st.created, b.ops_s, (long long)b.p50, (long long)b.max, (long long)a.max_at / 1000, (long long)a.max_late, a.ops_min, a.ops_max, a.fair, a.over10, a.nwaits);
    }
    printf("\ncomponent  | workload                           | pgpipe                                    | peer                                                         | ratio\n");
    report("16thr-pool4+4-select1", "ops/s", &ops_p, "new-connection-per-use", &ops_n, 1);
    report("16thr-get-connection-p50", "us", &p50_p, "new-connection-per-use", &p50_n, 0);
    report("16thr-get-connection-p99", "us", &p99_p, "new-connection-per-use", &p99_n, 0);
    report("16thr-get-connection-max", "us", &max_p, "new-connection-per-use", &max_n, 0);
    double mn, mx;
    double wmax = med(&max_p, &mn, &mx), w50 = med(&p50_p, &mn, &mx);
    double wr = w50 > 0 ? wmax / w50 : 0;
    printf("errors: pool %ld, new-connection-per-use %ld\n", err_p, err_n);
    printf("worst wait / median wait (pool): %.1f (median of runs), %.1f (worst run); target < 10\n",
           wr, worst_ratio);
    printf("bench: component=pool workload=16thr-pool4+4-select1 metric=errors pgpipe=%ld "
           "peer=new-connection-per-use peer_value=%ld ratio=missing\n", err_p, err_n);
    printf("bench: component=pool workload=16thr-pool4+4-select1 metric=max_wait_over_p50 "
           "pgpipe=%.1f peer=target peer_value=10 ratio=%.2f\n", wr, wr > 0 ? 10.0 / wr : 0);
    double p99m = med(&p99_p, &mn, &mx), fm = med(&fair, &mn, &mx), lm = med(&late, &mn, &mx);
    printf("p99 wait / median wait (pool): %.1f; max wait after the first 300 ms: %.0f us (%.1f x median); "
           "worst thread's mean wait / median thread's: %.2f\n", w50 > 0 ? p99m / w50 : 0, lm,
           w50 > 0 ? lm / w50 : 0, fm);
    printf("bench: component=pool workload=16thr-pool4+4-select1 metric=p99_wait_over_p50 "
           "pgpipe=%.1f peer=target peer_value=10 ratio=%.2f\n", w50 > 0 ? p99m / w50 : 0,
           p99m > 0 ? 10.0 * w50 / p99m : 0);
    printf("bench: component=pool workload=16thr-pool4+4-select1 metric=thread_mean_wait_worst_over_median "
           "pgpipe=%.2f peer=target peer_value=10 ratio=%.2f\n", fm, fm > 0 ? 10.0 / fm : 0);

    /* ---- pipeline and statement cache on one pooled connection ---- */
    PGconn *setup = must_connect();
    must_exec(setup, "SET client_min_messages = warning");
    must_exec(setup, "DROP TABLE IF EXISTS pool_bench");
    must_exec(setup, "CREATE TABLE pool_bench (id int PRIMARY KEY, n bigint NOT NULL DEFAULT 0)");
    must_exec(setup, "INSERT INTO pool_bench SELECT g, 0 FROM generate_series(1, 1000) g");
    must_exec(setup, "VACUUM ANALYZE pool_bench");
    PQfinish(setup);
    pgpipe_pool *pool;
    pgpipe_pool_options o;
    pgpipe_pool_options_init(&o);
    o.pool_size = 1;
    o.max_overflow = 0;
    if (pgpipe_pool_open(&pool, dsn, &o) != PGPIPE_OK) {
        fprintf(stderr, "pool: %s\n", pgpipe_errmsg(pool));
        return 2;
    }
    pgpipe_conn *c;
    if (pgpipe_pool_acquire(pool, &c) != PGPIPE_OK) {
        fprintf(stderr, "acquire: %s\n", pgpipe_errmsg(pool));
        return 2;
    }
    printf("\n== pipeline: batches of %d single-row UPDATEs on one connection, %d batches per "
           "method per run, interleaved; statement cache: %d x %d single-row SELECTs per method "
           "per run, alternating statement by statement; median of %d after a warm-up\n",
           NSTMT, ROUNDS, ROUNDS, NSTMT, RUNS);
    long perr = 0;
    fig one, each, single, cached, params, cached4, params4;
    for (int i = -1; i < RUNS; i++) {
        int64_t t[7] = { 0, 0, 0, 0, 0, 0, 0 };
        for (int k = 0; k < ROUNDS; k++) {
            t[0] += run_updates(c, 0, &perr);
            t[1] += run_updates(c, 1, &perr);
            t[2] += run_updates(c, 2, &perr);
            run_selects(c, SEL, t + 3, &perr);
            run_selects(c, JOIN4, t + 5, &perr);
        }
        if (i >= 0) {
            double n = (double)NSTMT * ROUNDS * 1e6;
            one.v[i] = n / (double)t[0];
            each.v[i] = n / (double)t[1];
            single.v[i] = n / (double)t[2];
            cached.v[i] = n / (double)t[3];
            params.v[i] = n / (double)t[4];
            cached4.v[i] = n / (double)t[5];
            params4.v[i] = n / (double)t[6];
        }
    }
    printf("\ncomponent  | workload                           | pgpipe                                    | peer                                                         | ratio\n");
    report("pipeline-sync-each-1000-updates", "stmt/s", &each, "one-at-a-time", &one, 1);
    report("pipeline-one-sync-1000-updates", "stmt/s", &single, "one-at-a-time", &one, 1);
    report("exec-cached-1000-selects", "stmt/s", &cached, "PQexecParams", &params, 1);
    report("exec-cached-1000-4way-joins", "stmt/s", &cached4, "PQexecParams", &params4, 1);
    printf("errors: %ld\n", perr);
    pgpipe_pool_release(c);
    pgpipe_pool_close(pool, NULL);
    return err_p || perr ? 1 : 0;
}
