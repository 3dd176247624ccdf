/* pgpipe behind pgbouncer (session and transaction pool_mode): the pooler
** detection (pgpipe_pooler_mode), the pool's statement cache, the claimer and
** workers with a SQL handler, the loader and the shell, each through a real
** pgbouncer in front of the test cluster (pgt_bouncer_dsn in pgtest.h). In
** transaction mode pgbouncer has 2 server connections shared with another
** client, so consecutive transactions of one connection run on different
** server sessions; "transaction-discard" also resets each session with
** DISCARD ALL after every transaction, so no session state (named
** statements, LISTEN, advisory locks) survives a transaction at all. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>

/* ---- helpers ---------------------------------------------------------------- */

static pgpipe_pool *pooler_t_pool(const char *dsn, int size)
{
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = size;
    po.max_overflow = 2;
    po.acquire_timeout_ms = 20000;
    pgpipe_pool *p;
    if (pgpipe_pool_open(&p, dsn, &po) != PGPIPE_OK) {
        fprintf(stderr, "    pool: %s\n", pgpipe_errmsg(p));
        pgt_end_fail();
    }
    return p;
}

/* Log events captured from every thread: how many, and the info lines. */
static struct {
    pthread_mutex_t mu;
    int notify_off;     /* "NOTIFY wake-ups are off" lines */
    int warnings;
    char last_warning[512];
} pooler_t_log = { PTHREAD_MUTEX_INITIALIZER, 0, 0, "" };

static void pooler_t_log_fn(void *ud, int level, const char *component, const char *message,
                            const pgpipe_log_field *fields, int nfields)
{
    (void)ud;
    (void)component;
    (void)fields;
    (void)nfields;
    pthread_mutex_lock(&pooler_t_log.mu);
    if (level >= PGPIPE_LOG_INFO && strstr(message, "NOTIFY wake-ups are off"))
        pooler_t_log.notify_off++;
    if (level >= PGPIPE_LOG_WARN) {
        pooler_t_log.warnings++;
        snprintf(pooler_t_log.last_warning, sizeof pooler_t_log.last_warning, "%s", message);
    }
    pthread_mutex_unlock(&pooler_t_log.mu);
}

/* Another client of the same pgbouncer: short transactions until told to
** stop, so the test's transactions keep moving between server connections. */
typedef struct pooler_t_noise {
    const char *dsn;
    atomic_int stop;
    atomic_llong txns;
    pthread_t tid;
} pooler_t_noise;

static void *pooler_t_noise_main(void *arg)
{
    pooler_t_noise *n = arg;
    PGconn *c = PQconnectdb(n->dsn);
    while (PQstatus(c) == CONNECTION_OK && !atomic_load(&n->stop)) {
        PQclear(PQexec(c, "BEGIN; SELECT count(*) FROM pg_class; COMMIT"));
        atomic_fetch_add(&n->txns, 1);
    }
    PQfinish(c);
    return NULL;
}

static void pooler_t_noise_start(pooler_t_noise *n, const char *dsn)
{
    n->dsn = dsn;
    atomic_init(&n->stop, 0);
    atomic_init(&n->txns, 0);
    PGT_CHECK(pthread_create(&n->tid, NULL, pooler_t_noise_main, n) == 0);
    /* the noise is running (connected, one transaction done) before the
    ** calls start, however slow the machine: at most 20 s */
    for (int i = 0; i < 2000 && atomic_load(&n->txns) == 0; i++)
        pgpipe_sleep_ms(10);
}

static void pooler_t_noise_stop(pooler_t_noise *n)
{
    atomic_store(&n->stop, 1);
    pthread_join(n->tid, NULL);
}

/* ---- detection ---------------------------------------------------------- */

PGT_TEST(pooler, mode_detect)
{
    pgpipe_error err;
    pgpipe_error_clear(&err);
    unsetenv("PGPIPE_POOLER");
    PGconn *direct = pgt_connect();
    PGT_EQ_INT(pgpipe_pooler_mode(direct, PGPIPE_POOLER_AUTO, &err), PGPIPE_POOLER_SESSION);
    const char *modes[2] = { "session", "transaction" };
    for (int i = 0; i < 2; i++) {
        PGconn *b = PQconnectdb(pgt_bouncer_dsn(modes[i]));
        PGT_CHECK(PQstatus(b) == CONNECTION_OK);
        /* the pooler's mode cannot be read through it: any pooler counts as
        ** transaction unless told otherwise */
        PGT_EQ_INT(pgpipe_pooler_mode(b, PGPIPE_POOLER_AUTO, &err), PGPIPE_POOLER_TRANSACTION);
        PGT_EQ_INT(pgpipe_pooler_mode(b, PGPIPE_POOLER_SESSION, &err), PGPIPE_POOLER_SESSION);
        setenv("PGPIPE_POOLER", "session", 1);
        PGT_EQ_INT(pgpipe_pooler_mode(b, PGPIPE_POOLER_AUTO, &err), PGPIPE_POOLER_SESSION);
        setenv("PGPIPE_POOLER", "auto", 1);
        PGT_EQ_INT(pgpipe_pooler_mode(b, PGPIPE_POOLER_AUTO, &err), PGPIPE_POOLER_TRANSACTION);
        unsetenv("PGPIPE_POOLER");
        PQfinish(b);
    }
    setenv("PGPIPE_POOLER", "transaction", 1);
    PGT_EQ_INT(pgpipe_pooler_mode(direct, PGPIPE_POOLER_AUTO, &err), PGPIPE_POOLER_TRANSACTION);
    setenv("PGPIPE_POOLER", "bogus", 1);
    PGT_EQ_INT(pgpipe_pooler_mode(direct, PGPIPE_POOLER_AUTO, &err), -1);
    PGT_CONTAINS(err.message, "PGPIPE_POOLER=\"bogus\"");
    PGT_CONTAINS(err.message, "session, transaction or auto");
    /* a pool resolves it on its first connection, and reports the error */
    pgpipe_pool *p = NULL;
    PGT_CHECK(pgpipe_pool_open(&p, pgt_dsn(), NULL) != PGPIPE_OK);
    PGT_CONTAINS(pgpipe_errmsg(p), "PGPIPE_POOLER=\"bogus\"");
    pgpipe_pool_close(p, NULL);
    unsetenv("PGPIPE_POOLER");
    PGT_EQ_INT(pgpipe_pooler_mode(direct, 7, &err), -1);
    PQfinish(direct);

    p = pooler_t_pool(pgt_dsn(), 1);
    PGT_EQ_INT(pgpipe_pool_pooler(p), PGPIPE_POOLER_SESSION);
    pgpipe_pool_close(p, NULL);
    p = pooler_t_pool(pgt_bouncer_dsn("transaction"), 1);
    PGT_EQ_INT(pgpipe_pool_pooler(p), PGPIPE_POOLER_TRANSACTION);
    pgpipe_pool_close(p, NULL);
    pgt_bouncer_stop();
}

/* ---- the pool's statement cache ----------------------------------------- */

static void pooler_t_cache(const char *mode, int configured, int want)
{
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = 2;
    po.pooler = configured;
    pgpipe_pool *p;
    PGT_OK(pgpipe_pool_open(&p, pgt_bouncer_dsn(mode), &po));
    PGT_EQ_INT(pgpipe_pool_pooler(p), want);
    pooler_t_noise noise;
    pooler_t_noise_start(&noise, pgt_bouncer_dsn(mode));
    int failures = 0, calls = 200;
    char first[512] = "";
    for (int i = 0; i < calls; i++) {
        pgpipe_conn *c;
        PGT_OK(pgpipe_pool_acquire(p, &c));
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        const char *vals[1] = { v };
        PGresult *r = pgpipe_conn_exec_cached(c, i % 2 ? "SELECT $1::int + 1" : "SELECT $1::int * 2",
                                              1, vals, NULL, NULL, 0);
        if (PQresultStatus(r) != PGRES_TUPLES_OK ||
            atoi(PQgetvalue(r, 0, 0)) != (i % 2 ? i + 1 : i * 2)) {
            if (!failures++)
                snprintf(first, sizeof first, "%s", PQresultErrorMessage(r));
        }
        PQclear(r);
        pgpipe_pool_release(c);
    }
    pooler_t_noise_stop(&noise);
    PGT_CHECK_MSG(failures == 0, "%d of %d calls failed, the first: %s", failures, calls, first);
    PGT_CHECK(atomic_load(&noise.txns) > 0);
    PGT_OK(pgpipe_pool_close(p, NULL));
}

PGT_TEST(pooler, stmt_cache_transaction)
{
    unsetenv("PGPIPE_POOLER");
    pooler_t_cache("transaction-discard", PGPIPE_POOLER_AUTO, PGPIPE_POOLER_TRANSACTION);
    pooler_t_cache("transaction", PGPIPE_POOLER_AUTO, PGPIPE_POOLER_TRANSACTION);
    /* told "session" behind a transaction pooler: no call fails, one warning */
    pgpipe_config_log(pooler_t_log_fn, NULL);
    pooler_t_cache("transaction-discard", PGPIPE_POOLER_SESSION, PGPIPE_POOLER_SESSION);
    pgpipe_config_log(NULL, NULL);
    PGT_EQ_INT(pooler_t_log.warnings, 1);
    PGT_CONTAINS(pooler_t_log.last_warning, "26000");
    pgt_bouncer_stop();
}

/* session mode: the pool may be told so, and then caches */
PGT_TEST(pooler, stmt_cache_session)
{
    unsetenv("PGPIPE_POOLER");
    pooler_t_cache("session", PGPIPE_POOLER_SESSION, PGPIPE_POOLER_SESSION);
    pooler_t_cache("session", PGPIPE_POOLER_AUTO, PGPIPE_POOLER_TRANSACTION);
    pgt_bouncer_stop();
}

/* ---- workers with a SQL handler ----------------------------------------- */

static void pooler_t_workers(const char *mode, const char *table, int events, int lease)
{
    PGconn *c = pgt_db_open();
    char sql[1024], log[64];
    snprintf(log, sizeof log, "%s_log", table);
    pgt_db_table(c, table, "(LIKE staging.raw_events INCLUDING ALL)");
    pgt_db_table(c, log, "(event_id bigint, n int)");
    snprintf(sql, sizeof sql, "DELETE FROM pgpipe.dead_letters WHERE source_table = '%s'", table);
    PQclear(PGT_EXEC(c, sql));
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (source, event_type, payload) SELECT 'src', 'click',"
             " jsonb_build_object('n', g) FROM generate_series(1, %d) g", table, events);
    PQclear(PGT_EXEC(c, sql));
    /* and a few the handler refuses (22P02, a data error): dead-lettered at
    ** once, found by bisecting under savepoints, which must stay on one
    ** server session too */
    snprintf(sql, sizeof sql,
             "INSERT INTO %s (source, event_type, payload) SELECT 'src', 'click',"
             " jsonb_build_object('n', 'bad' || g) FROM generate_series(1, 5) g", table);
    PQclear(PGT_EXEC(c, sql));

    pgpipe_config_log(pooler_t_log_fn, NULL);
    pgpipe_log_set_level(PGPIPE_LOG_INFO);
    const char *dsn = pgt_bouncer_dsn(mode);
    pooler_t_noise noise;
    pooler_t_noise_start(&noise, dsn);
    pgpipe_pool *pool = pooler_t_pool(dsn, 5);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    wo.claim.table = table;
    wo.claim.batch_size = 25;
    wo.claim.max_attempts = 1; /* a lost statement would be dead-lettered at once */
    if (lease) {
        wo.claim.mode = PGPIPE_CLAIM_LEASE;
        wo.claim.lease_ms = 60000;
    }
    wo.threads = 3;
    char handler[256];
    snprintf(handler, sizeof handler,
             "INSERT INTO %s SELECT (e->>'id')::bigint, (e->'payload'->>'n')::int"
             " FROM jsonb_array_elements($1::jsonb) e", log);
    pgpipe_handler h = { NULL, NULL, handler, NULL };
    pgpipe_workers *w;
    PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
    int rc = pgpipe_workers_run_until_empty(w, 60000);
    pgpipe_workers_stats ws;
    pgpipe_workers_stats_get(w, &ws);
    pgpipe_workers_close(w);
    pooler_t_noise_stop(&noise);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    pgpipe_config_log(NULL, NULL);
    PGT_OK(rc);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table = '%s'"
             " AND sqlstate = '22P02' AND payload->>'n' LIKE 'bad%%'", table);
    PGT_EQ_INT(pgt_db_int(c, sql), 5);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table = '%s'",
             table);
    PGT_EQ_INT(pgt_db_int(c, sql), 5);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE processed", table);
    PGT_EQ_INT(pgt_db_int(c, sql), events + 5);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT n) FROM %s", log);
    PGT_EQ_INT(pgt_db_int(c, sql), events);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", log);
    PGT_EQ_INT(pgt_db_int(c, sql), events);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT event_id) FROM %s", log);
    PGT_EQ_INT(pgt_db_int(c, sql), events);
    PGT_EQ_INT(ws.total.done, events);
    PGT_EQ_INT(ws.total.dead, 5);
    PGT_CHECK(atomic_load(&noise.txns) > 0);
    pgt_db_close(c);
}

PGT_TEST(pooler, workers_transaction)
{
    unsetenv("PGPIPE_POOLER");
    pooler_t_workers("transaction", "pooler_t_wtx", 2000, 0);
    pooler_t_workers("transaction", "pooler_t_wtl", 500, 1);
    /* polling instead of LISTEN, said once per workers (not once per worker) */
    PGT_EQ_INT(pooler_t_log.notify_off, 2);
    PGT_CHECK_MSG(pooler_t_log.warnings == 0, "warning: %s", pooler_t_log.last_warning);
    pgt_bouncer_stop();
}

/* Told "session" (PGPIPE_POOLER=session) behind a transaction pooler that
** resets every session: the first statement found gone (26000) is named in
** one warning, the claimers go on unnamed, and no record is failed for it
** (max_attempts 1 would dead-letter it). */
PGT_TEST(pooler, workers_told_session)
{
    setenv("PGPIPE_POOLER", "session", 1);
    pooler_t_workers("transaction-discard", "pooler_t_wts", 500, 0);
    unsetenv("PGPIPE_POOLER");
    PGT_EQ_INT(pooler_t_log.warnings, 1);
    PGT_CONTAINS(pooler_t_log.last_warning, "26000");
    PGT_CONTAINS(pooler_t_log.last_warning, "pool_mode = transaction");
    pgt_bouncer_stop();
}

PGT_TEST(pooler, workers_session)
{
    setenv("PGPIPE_POOLER", "session", 1);
    pooler_t_workers("session", "pooler_t_wse", 2000, 0);
    PGT_EQ_INT(pooler_t_log.notify_off, 0);
    PGT_CHECK_MSG(pooler_t_log.warnings == 0, "warning: %s", pooler_t_log.last_warning);
    unsetenv("PGPIPE_POOLER");
    pgt_bouncer_stop();
}

/* ---- the loader --------------------------------------------------------- */

static void pooler_t_load(const char *mode, const char *source, int records)
{
    PGconn *c = pgt_db_open();
    char path[512], sql[512];
    snprintf(sql, sizeof sql, "DELETE FROM staging.raw_events WHERE source = '%s'", source);
    PQclear(PGT_EXEC(c, sql));
    snprintf(path, sizeof path, "%s/%s.%d.ndjson", pgt_tmpdir(), source, (int)getpid());
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    for (int i = 0; i < records; i++)
        fprintf(f, "{\"event_type\":\"e\",\"n\":%d}\n", i);
    fclose(f);
    pooler_t_noise noise;
    pooler_t_noise_start(&noise, pgt_bouncer_dsn(mode));
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_bouncer_dsn(mode);
    o.source_value = source;
    o.batch_rows = 300;
    o.connections = 2;
    o.load_key = path;
    /* the loader checks the schema pgt_db_open installed, through the pooler */
    pgpipe_loader *l;
    PGT_OK(pgpipe_loader_open(&l, &o));
    int rc = pgpipe_loader_load_file(l, path);
    if (rc != PGPIPE_OK)
        fprintf(stderr, "    load: %s\n", pgpipe_errmsg(l));
    PGT_OK(rc);
    pgpipe_load_summary s;
    PGT_OK(pgpipe_loader_summary(l, &s));
    pgpipe_loader_close(l);
    pooler_t_noise_stop(&noise);
    PGT_EQ_INT(s.records_read, records);
    PGT_EQ_INT(s.rows_loaded, records);
    PGT_EQ_INT(s.rows_dead, 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", source);
    PGT_EQ_INT(pgt_db_int(c, sql), records);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT payload->>'n') FROM staging.raw_events"
                              " WHERE source = '%s'", source);
    PGT_EQ_INT(pgt_db_int(c, sql), records);
    /* a direct loader is not kept waiting by anything left behind */
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.source_value = source;
    char again[600];
    snprintf(again, sizeof again, "%s.direct", path);
    o.load_key = again;
    PGT_OK(pgpipe_loader_open(&l, &o));
    PGT_OK(pgpipe_loader_feed(l, "{\"event_type\":\"e\",\"n\":-1}\n", 26));
    PGT_OK(pgpipe_loader_finish(l));
    pgpipe_loader_close(l);
    PGT_EQ_INT(pgt_db_int(c, sql), records + 1);
    unlink(path);
    pgt_db_close(c);
}

PGT_TEST(pooler, load_transaction)
{
    unsetenv("PGPIPE_POOLER");
    pooler_t_load("transaction", "pooler_t_ltx", 3000);
    pgt_bouncer_stop();
}

PGT_TEST(pooler, load_session)
{
    unsetenv("PGPIPE_POOLER");
    pooler_t_load("session", "pooler_t_lse", 3000);
    pgt_bouncer_stop();
}

/* ---- "prepared statement already exists" ------------------------------------ */

/* The server log from byte `from` on (static buffer, "" when unreadable). */
static const char *pooler_t_server_log(long from)
{
    static char buf[1 << 16];
    char path[1024];
    const char *dir = getenv("PGPIPE_TEST_PGDIR");
    buf[0] = '\0';
    if (!dir)
        return buf;
    snprintf(path, sizeof path, "%s/server.log", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return buf;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static long pooler_t_server_log_size(void)
{
    char path[1024];
    const char *dir = getenv("PGPIPE_TEST_PGDIR");
    if (!dir)
        PGT_SKIP("no PGPIPE_TEST_PGDIR (the server log is needed)");
    snprintf(path, sizeof path, "%s/server.log", dir);
    struct stat st;
    if (stat(path, &st) != 0)
        PGT_SKIP("the server log is not readable");
    return (long)st.st_size;
}

/* A claimer opened again on a connection that still has the statements of
** the last one (a worker that reconnects gets a pooled connection back) does
** not prepare them again: the server would log each 42P05 as an ERROR. */
PGT_TEST(pooler, no_already_exists_on_reopen)
{
    unsetenv("PGPIPE_POOLER");
    PGconn *c = pgt_db_open();
    pgt_db_table(c, "pooler_t_reopen", "(LIKE staging.raw_events INCLUDING ALL)");
    pgt_db_table(c, "pooler_t_reopen_log", "(event_id bigint)");
    PQclear(PGT_EXEC(c, "INSERT INTO pooler_t_reopen (source, event_type, payload)"
                        " SELECT 's', 'e', '{}' FROM generate_series(1, 30)"));
    long from = pooler_t_server_log_size();
    pgpipe_claim_options o;
    pgpipe_claim_options_init(&o);
    o.table = "pooler_t_reopen";
    o.batch_size = 10;
    pgpipe_handler h = { NULL, NULL,
        "INSERT INTO pooler_t_reopen_log SELECT (e->>'id')::bigint"
        " FROM jsonb_array_elements($1::jsonb) e", NULL };
    for (int i = 0; i < 3; i++) {
        pgpipe_claimer *cl;
        PGT_OK(pgpipe_claimer_open(&cl, c, &o));
        int n = 0;
        PGT_OK(pgpipe_claimer_run_batch(cl, &h, &n));
        PGT_EQ_INT(n, 10);
        long long pending = -1;
        PGT_OK(pgpipe_claimer_pending(cl, &pending));
        PGT_EQ_INT(pending, 20 - 10 * i);
        pgpipe_claimer_close(cl);
    }
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(DISTINCT event_id) FROM pooler_t_reopen_log"), 30);
    /* the statements were prepared once: 6 of the claimer and the handler */
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_prepared_statements"
                             " WHERE name LIKE 'pgpipe\\_claim\\_%'"), 7);
    const char *log = pooler_t_server_log(from);
    PGT_CHECK_MSG(strstr(log, "already exists") == NULL, "server log:\n%s", log);
    pgt_db_close(c);
}

/* ---- the shell ------------------------------------------------------------- */

/* pgpipe --pooler transaction through pgbouncer in transaction mode: .load
** loads every record, .work processes each exactly once, none
** dead-lettered, and says once that the workers poll. */
PGT_TEST(pooler, shell_transaction)
{
    unsetenv("PGPIPE_POOLER");
    const char *top = getenv("PGPIPE_TOP");
    char bin[1024];
    snprintf(bin, sizeof bin, "%s/build/test/pgpipe", top ? top : ".");
    if (access(bin, X_OK) != 0)
        PGT_SKIP("build/test/pgpipe is not built (make test-build)");
    PGconn *c = pgt_db_open();
    PQclear(PGT_EXEC(c, "DELETE FROM staging.raw_events WHERE source = 'pooler_t_sh'"));
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.dead_letters WHERE source_name = 'pooler_t_sh'"));
    pgt_db_table(c, "pooler_t_sh_log", "(event_id bigint)");
    char path[512], out[600], cmd[4096];
    snprintf(path, sizeof path, "%s/pooler_t_sh.%d.ndjson", pgt_tmpdir(), (int)getpid());
    snprintf(out, sizeof out, "%s.out", path);
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    for (int i = 0; i < 1500; i++)
        fprintf(f, "{\"event_type\":\"e\",\"n\":%d}\n", i);
    fclose(f);
    pooler_t_noise noise;
    pooler_t_noise_start(&noise, pgt_bouncer_dsn("transaction-discard"));
    char handler[600];
    snprintf(handler, sizeof handler, "%s.sql", path);
    PGT_CHECK((f = fopen(handler, "w")) != NULL);
    fprintf(f, "INSERT INTO pooler_t_sh_log SELECT (e->>'id')::bigint"
               " FROM jsonb_array_elements($1::jsonb) e\n");
    fclose(f);
    snprintf(cmd, sizeof cmd,
             "'%s' --pooler transaction '%s' '.load %s --source pooler_t_sh --batch-rows 200'"
             " '.work 3 --source pooler_t_sh --max-attempts 1 --until-empty --sql %s'"
             " >'%s' 2>&1", bin, pgt_bouncer_dsn("transaction-discard"), path, handler, out);
    int rc = system(cmd);
    pooler_t_noise_stop(&noise);
    char text[8192] = "";
    if ((f = fopen(out, "r"))) {
        size_t n = fread(text, 1, sizeof text - 1, f);
        text[n] = '\0';
        fclose(f);
    }
    PGT_CHECK_MSG(WIFEXITED(rc) && WEXITSTATUS(rc) == 0, "exit %d:\n%s", rc, text);
    PGT_CONTAINS(text, "done 1500, retried 0, dead-lettered 0");
    const char *say = strstr(text, "NOTIFY wake-ups are off behind a transaction pooler");
    PGT_CHECK_MSG(say && !strstr(say + 1, "NOTIFY wake-ups are off"), "said not once:\n%s", text);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events WHERE source = 'pooler_t_sh'"
                             " AND processed"), 1500);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(DISTINCT event_id) FROM pooler_t_sh_log"), 1500);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pooler_t_sh_log"), 1500);
    /* a bad mode is refused before anything runs */
    snprintf(cmd, sizeof cmd, "'%s' --pooler bogus 'SELECT 1' >'%s' 2>&1", bin, out);
    rc = system(cmd);
    PGT_CHECK(WIFEXITED(rc) && WEXITSTATUS(rc) == 2);
    unlink(path);
    unlink(out);
    unlink(handler);
    pgt_db_close(c);
    pgt_bouncer_stop();
}

/* ---- the migrator's lock (migfix's part of issue 20) -------------------------- */

/* The schema install (the migrator, which .load and .migrate run) through
** transaction mode leaves no advisory lock held on a pooled server session:
** a direct run afterwards would wait for it and fail. */
static void pooler_t_quiet(void *ud, const char *message)
{
    (void)ud;
    (void)message;
}

PGT_TEST(pooler, migrate_leaves_no_lock)
{
    unsetenv("PGPIPE_POOLER");
    PGconn *direct = pgt_db_fresh("pooler_t_mig");
    char dsn[512];
    snprintf(dsn, sizeof dsn, "%s dbname=pooler_t_mig", pgt_bouncer_dsn("transaction"));
    /* other clients move the migrator's transactions between the 2 sessions */
    pooler_t_noise noise;
    pooler_t_noise_start(&noise, dsn);
    long long held = 0;
    for (int round = 0; round < 3; round++) {
        PGconn *b = PQconnectdb(dsn);
        PGT_CHECK(PQstatus(b) == CONNECTION_OK);
        PQsetNoticeProcessor(b, pooler_t_quiet, NULL); /* no session SET lasts here */
        pgt_db_install(b);
        PQfinish(b);
        held += pgt_db_int(direct, "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a"
                                   " USING (pid) WHERE l.locktype = 'advisory'"
                                   " AND a.datname = 'pooler_t_mig'");
    }
    pooler_t_noise_stop(&noise);
    pgt_bouncer_stop();
    PGT_EQ_INT(held, 0);
    pgt_db_close(direct);
}

/* pgpipe run holds session advisory locks (each firing's overlap lock for
** as long as it runs, a file source's file, the setup): behind a
** transaction-mode pooler it refuses to start and says what to do; told
** the pooler is in session mode, it starts there. */
PGT_TEST(pooler, runner_refuses_transaction_mode)
{
    unsetenv("PGPIPE_POOLER");
    char path[512];
    snprintf(path, sizeof path, "%s/pooler_run.%d.pgpipe", pgt_tmpdir(), (int)getpid());
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    fprintf(f, ".pipeline pooler_run_%d\n.schedule s --every 1h\nSELECT 1;\n.end\n", (int)getpid());
    PGT_CHECK(fclose(f) == 0);
    pgpipe_run_options o;
    pgpipe_run_options_init(&o);
    o.conninfo = pgt_bouncer_dsn("transaction");
    o.sd_notify = 0;
    pgpipe_runner *r = NULL;
    PGT_EQ_INT(pgpipe_runner_open(&r, path, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(r), "transaction-mode pooler");
    PGT_CONTAINS(pgpipe_errmsg(r), "PGPIPE_POOLER=session");
    pgpipe_runner_close(r);
    /* a session-mode pgbouncer, said so: the runner opens */
    setenv("PGPIPE_POOLER", "session", 1);
    o.conninfo = pgt_bouncer_dsn("session");
    r = NULL;
    int rc = pgpipe_runner_open(&r, path, &o);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(r));
    pgpipe_runner_close(r);
    /* told transaction, even directly */
    setenv("PGPIPE_POOLER", "transaction", 1);
    o.conninfo = pgt_dsn();
    r = NULL;
    PGT_EQ_INT(pgpipe_runner_open(&r, path, &o), PGPIPE_MISUSE);
    pgpipe_runner_close(r);
    unsetenv("PGPIPE_POOLER");
    pgt_bouncer_stop();
}
