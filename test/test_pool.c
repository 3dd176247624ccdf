/* Tests of the connection pool (src/db/pool.c), against the test cluster. */

#include <pthread.h>

static pgpipe_pool *pool_t_open(int size, int overflow, void (*tweak)(pgpipe_pool_options *))
{
    pgpipe_pool_options o;
    pgpipe_pool_options_init(&o);
    o.pool_size = size;
    o.max_overflow = overflow;
    o.acquire_timeout_ms = 10000;
    if (tweak)
        tweak(&o);
    pgpipe_pool *p = NULL;
    int rc = pgpipe_pool_open(&p, pgt_dsn(), &o);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "open: %s", pgpipe_errmsg(p));
    return p;
}

static void pool_t_close(pgpipe_pool *p)
{
    int leaked = -1;
    PGT_OK(pgpipe_pool_close(p, &leaked));
    PGT_EQ_INT(leaked, 0);
}

static pgpipe_conn *pool_t_get(pgpipe_pool *p)
{
    pgpipe_conn *c = NULL;
    pgpipe_error e;
    int rc = pgpipe_pool_acquire_ex(p, &c, -1, &e);
    PGT_CHECK_MSG(rc == PGPIPE_OK && c, "acquire: %s", e.message);
    return c;
}

/* A single-value query on a connection, as a string (static buffer). */
static const char *pool_t_value(pgpipe_conn *c, const char *sql)
{
    static char buf[256];
    PGresult *r = PQexec(pgpipe_conn_pg(c), sql);
    PGT_CHECK_MSG(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    snprintf(buf, sizeof buf, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return buf;
}

static int pool_t_pid(pgpipe_conn *c)
{
    return PQbackendPID(pgpipe_conn_pg(c));
}

static void pool_t_kill_backend(int pid)
{
    PGconn *k = pgt_connect();
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", pid);
    PQclear(PGT_EXEC(k, sql));
    /* wait until the backend is really gone */
    for (int i = 0; i < 200; i++) {
        snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE pid = %d", pid);
        PGresult *r = PGT_EXEC(k, sql);
        int n = atoi(PQgetvalue(r, 0, 0));
        PQclear(r);
        if (n == 0)
            break;
        pgpipe_sleep_ms(10);
    }
    PQfinish(k);
}

PGT_TEST(pool, options_defaults_and_validation)
{
    pgpipe_pool_options o;
    pgpipe_pool_options_init(&o);
    PGT_EQ_INT(o.pool_size, 5);
    PGT_EQ_INT(o.max_overflow, 10);
    PGT_EQ_INT(o.min_idle, 1);
    PGT_EQ_INT(o.acquire_timeout_ms, 30000);
    PGT_EQ_STR(o.application_name, "pgpipe");
    PGT_CHECK(o.reset_sql == NULL);

    pgpipe_pool *p = NULL;
    o.pool_size = 0;
    PGT_EQ_INT(pgpipe_pool_open(&p, "dbname=x", &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(p), "pool_size must be at least 1");
    PGT_OK(pgpipe_pool_close(p, NULL));

    pgpipe_pool_options_init(&o);
    o.min_idle = 9;
    PGT_EQ_INT(pgpipe_pool_open(&p, "dbname=x", &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(p), "min_idle");
    PGT_OK(pgpipe_pool_close(p, NULL));

    /* a malformed conninfo is reported at open, with the password masked */
    pgpipe_pool_options_init(&o);
    o.min_idle = 0;
    PGT_EQ_INT(pgpipe_pool_open(&p, "host=x password=hunter2 bogus_option=1", &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(p), "invalid connection string");
    PGT_CONTAINS(pgpipe_errmsg(p), "bogus_option");
    PGT_CHECK(strstr(pgpipe_errmsg(p), "hunter2") == NULL);
    PGT_OK(pgpipe_pool_close(p, NULL));
    PGT_OK(pgpipe_pool_close(NULL, NULL));
}

PGT_TEST(pool, connect_failure_is_clear_and_masked)
{
    pgpipe_pool_options o;
    pgpipe_pool_options_init(&o);
    pgpipe_pool *p = NULL;
    /* nothing listens on this socket dir: open fails fast, no password shown */
    int rc = pgpipe_pool_open(&p, "host=/nonexistent-pgpipe port=1 user=u password=hunter2", &o);
    PGT_EQ_INT(rc, PGPIPE_DB);
    PGT_CONTAINS(pgpipe_errmsg(p), "cannot connect");
    PGT_CHECK(strstr(pgpipe_errmsg(p), "hunter2") == NULL);
    PGT_OK(pgpipe_pool_close(p, NULL));

    /* with min_idle 0 the pool opens; an acquire retries until its timeout */
    o.min_idle = 0;
    o.acquire_timeout_ms = 300;
    PGT_OK(pgpipe_pool_open(&p, "postgresql://u:hunter2@/x?host=/nonexistent-pgpipe&port=1", &o));
    pgpipe_conn *c = NULL;
    pgpipe_error e;
    int64_t t0 = pgpipe_now_us();
    PGT_EQ_INT(pgpipe_pool_acquire_ex(p, &c, 300, &e), PGPIPE_BUSY);
    PGT_CHECK(c == NULL);
    PGT_CHECK(pgpipe_now_us() - t0 < 5000000);
    PGT_CONTAINS(e.message, "timed out after");
    PGT_CONTAINS(e.message, "pool_size 5");
    PGT_CONTAINS(e.message, "last connect error");
    PGT_CHECK(strstr(e.message, "hunter2") == NULL);
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_CHECK(s.connect_failures >= 1);
    PGT_EQ_INT(s.size, s.opening); /* nothing open; a connector may still be retrying */
    PGT_CHECK(s.opening <= 1);
    /* the single-threaded form puts the error on the pool handle */
    PGT_EQ_INT(pgpipe_pool_acquire(p, &c) == PGPIPE_OK, 0);
    PGT_CONTAINS(pgpipe_errmsg(p), "timed out after");
    pool_t_close(p);
}

static void pool_t_small_timeout(pgpipe_pool_options *o) { o->acquire_timeout_ms = 200; }

PGT_TEST(pool, acquire_timeout_names_size_and_wait)
{
    pgpipe_pool *p = pool_t_open(1, 1, pool_t_small_timeout);
    pgpipe_conn *a = pool_t_get(p), *b = pool_t_get(p), *c = NULL;
    pgpipe_error e;
    int64_t t0 = pgpipe_now_us();
    PGT_EQ_INT(pgpipe_pool_acquire_ex(p, &c, -1, &e), PGPIPE_BUSY);
    int64_t waited = pgpipe_now_us() - t0;
    PGT_CHECK(c == NULL);
    PGT_CHECK(waited >= 190000 && waited < 5000000);
    PGT_CONTAINS(e.message, "timed out after 2");
    PGT_CONTAINS(e.message, "pool_size 1 + max_overflow 1");
    PGT_CONTAINS(e.message, "2 in use");
    PGT_EQ_INT(e.code, PGPIPE_BUSY);
    /* timeout 0: no wait at all */
    PGT_EQ_INT(pgpipe_pool_acquire_ex(p, &c, 0, &e), PGPIPE_BUSY);
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.timeouts, 2);
    PGT_EQ_INT(s.in_use, 2);
    PGT_OK(pgpipe_pool_release(a));
    PGT_OK(pgpipe_pool_release(b));
    pool_t_close(p);
}

static void pool_t_warm3(pgpipe_pool_options *o) { o->min_idle = 3; }

PGT_TEST(pool, sizing_overflow_and_min_idle)
{
    pgpipe_pool *p = pool_t_open(3, 2, pool_t_warm3);
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.idle, 3);
    PGT_EQ_INT(s.size, 3);
    PGT_EQ_INT(s.created, 3);
    pgpipe_conn *c[5];
    for (int i = 0; i < 5; i++)
        c[i] = pool_t_get(p);
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.in_use, 5);
    PGT_EQ_INT(s.size, 5);
    PGT_EQ_INT(s.created, 5);
    pgpipe_conn *x = NULL;
    pgpipe_error e;
    PGT_EQ_INT(pgpipe_pool_acquire_ex(p, &x, 50, &e), PGPIPE_BUSY);
    for (int i = 0; i < 5; i++)
        PGT_OK(pgpipe_pool_release(c[i]));
    /* the first three returned fill the pool; the two overflow ones close */
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.idle, 3);
    PGT_EQ_INT(s.size, 3);
    PGT_EQ_INT(s.closed, 2);
    PGT_EQ_INT(s.in_use, 0);
    PGT_EQ_INT(s.acquired, 5);
    pool_t_close(p);
}

static void pool_t_app(pgpipe_pool_options *o) { o->application_name = "loader-7"; }

PGT_TEST(pool, application_name_and_conninfo_forms)
{
    pgpipe_pool *p = pool_t_open(1, 0, NULL);
    pgpipe_conn *c = pool_t_get(p);
    PGT_EQ_STR(pool_t_value(c, "SELECT current_setting('application_name')"), "pgpipe");
    pgpipe_pool_release(c);
    pool_t_close(p);

    p = pool_t_open(1, 0, pool_t_app);
    c = pool_t_get(p);
    PGT_EQ_STR(pool_t_value(c, "SELECT current_setting('application_name')"), "loader-7");
    pgpipe_pool_release(c);
    pool_t_close(p);

    /* PGAPPNAME (the user's environment) wins over the program's option */
    setenv("PGAPPNAME", "from-env", 1);
    p = pool_t_open(1, 0, pool_t_app);
    c = pool_t_get(p);
    PGT_EQ_STR(pool_t_value(c, "SELECT current_setting('application_name')"), "from-env");
    pgpipe_pool_release(c);
    pool_t_close(p);
    unsetenv("PGAPPNAME");

    /* the user's string wins over the option; it is not rewritten */
    char ci[600];
    snprintf(ci, sizeof ci, "%s application_name=mine", pgt_dsn());
    PGT_OK(pgpipe_pool_open(&p, ci, NULL));
    c = pool_t_get(p);
    PGT_EQ_STR(pool_t_value(c, "SELECT current_setting('application_name')"), "mine");
    pgpipe_pool_release(c);
    pool_t_close(p);

    /* a URI, with the socket directory as a query parameter */
    const char *host = getenv("PGHOST"), *port = getenv("PGPORT");
    if (host && port) {
        snprintf(ci, sizeof ci, "postgresql:///postgres?host=%s&port=%s&user=postgres", host, port);
        PGT_OK(pgpipe_pool_open(&p, ci, NULL));
        c = pool_t_get(p);
        PGT_EQ_STR(pool_t_value(c, "SELECT current_database()"), "postgres");
        pgpipe_pool_release(c);
        pool_t_close(p);
        /* no conninfo at all: the PG* environment variables */
        PGT_OK(pgpipe_pool_open(&p, NULL, NULL));
        c = pool_t_get(p);
        PGT_EQ_STR(pool_t_value(c, "SELECT 'env'"), "env");
        pgpipe_pool_release(c);
        pool_t_close(p);
    }
}

PGT_TEST(pool, release_rolls_back_open_and_failed_transactions)
{
    pgpipe_pool *p = pool_t_open(1, 0, NULL);
    pgpipe_conn *c = pool_t_get(p);
    PGconn *pg = pgpipe_conn_pg(c);
    PQclear(PGT_EXEC(pg, "DROP TABLE IF EXISTS pool_t_rb; CREATE TABLE pool_t_rb (x int)"));
    int pid = pool_t_pid(c);
    PQclear(PGT_EXEC(pg, "BEGIN"));
    PQclear(PGT_EXEC(pg, "INSERT INTO pool_t_rb VALUES (1)"));
    PGT_EQ_INT(PQtransactionStatus(pg), PQTRANS_INTRANS);
    PGT_OK(pgpipe_pool_release(c));

    c = pool_t_get(p);
    pg = pgpipe_conn_pg(c);
    PGT_EQ_INT(pool_t_pid(c), pid); /* the same connection, cleaned */
    PGT_EQ_INT(PQtransactionStatus(pg), PQTRANS_IDLE);
    PGT_EQ_STR(pool_t_value(c, "SELECT count(*) FROM pool_t_rb"), "0");
    /* a failed transaction */
    PQclear(PGT_EXEC(pg, "BEGIN"));
    PQclear(PQexec(pg, "SELECT 1/0"));
    PGT_EQ_INT(PQtransactionStatus(pg), PQTRANS_INERROR);
    PGT_OK(pgpipe_pool_release(c));
    c = pool_t_get(p);
    pg = pgpipe_conn_pg(c);
    PGT_EQ_INT(pool_t_pid(c), pid);
    PGT_EQ_INT(PQtransactionStatus(pg), PQTRANS_IDLE);
    /* unread results: the connection is closed, not reused */
    PGT_CHECK(PQsendQuery(pg, "SELECT 1"));
    PGT_EQ_INT(pgpipe_pool_release(c), PGPIPE_DB);
    c = pool_t_get(p);
    PGT_CHECK(pool_t_pid(c) != pid);
    PQclear(PGT_EXEC(pgpipe_conn_pg(c), "DROP TABLE pool_t_rb"));
    pgpipe_pool_release(c);
    pool_t_close(p);
}

static void pool_t_discard_all(pgpipe_pool_options *o) { o->reset_sql = "DISCARD ALL"; }

PGT_TEST(pool, reset_statement_discard_all_and_statement_cache)
{
    pgpipe_pool *p = pool_t_open(1, 0, pool_t_discard_all);
    pgpipe_conn *c = pool_t_get(p);
    int pid = pool_t_pid(c);
    PQclear(PGT_EXEC(pgpipe_conn_pg(c), "SET work_mem = '7MB'"));
    const char *v[1] = { "41" };
    PGresult *r = pgpipe_conn_exec_cached(c, "SELECT $1::int + 1", 1, v, NULL, NULL, 0);
    PGT_EQ_INT(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    PGT_EQ_INT(c->nstmts, 1);
    PGT_OK(pgpipe_pool_release(c));
    c = pool_t_get(p);
    PGT_EQ_INT(pool_t_pid(c), pid);
    PGT_EQ_STR(pool_t_value(c, "SHOW work_mem"), "4MB");
    PGT_EQ_INT(c->nstmts, 0); /* DISCARD ALL dropped the statements: cache emptied */
    PGT_EQ_STR(pool_t_value(c, "SELECT count(*) FROM pg_prepared_statements"), "0");
    r = pgpipe_conn_exec_cached(c, "SELECT $1::int + 1", 1, v, NULL, NULL, 0);
    PGT_EQ_INT(PQresultStatus(r), PGRES_TUPLES_OK);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    pgpipe_pool_release(c);
    pool_t_close(p);
}

PGT_TEST(pool, statement_cache_names_reuse_and_lost_statements)
{
    pgpipe_pool *p = pool_t_open(1, 0, NULL);
    pgpipe_conn *c = pool_t_get(p);
    PGconn *pg = pgpipe_conn_pg(c);
    const char *sql = "SELECT $1::int * 2";
    char want[32];
    snprintf(want, sizeof want, "pgpipe_%016llx", (unsigned long long)pp_hash64(sql));
    for (int i = 0; i < 5; i++) {
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        const char *v[1] = { num };
        PGresult *r = pgpipe_conn_exec_cached(c, sql, 1, v, NULL, NULL, 0);
        PGT_EQ_INT(PQresultStatus(r), PGRES_TUPLES_OK);
        PGT_EQ_INT(atoi(PQgetvalue(r, 0, 0)), i * 2);
        PQclear(r);
    }
    PGT_EQ_STR(pool_t_value(c, "SELECT count(*) FROM pg_prepared_statements"), "1");
    PGT_EQ_STR(pool_t_value(c, "SELECT name FROM pg_prepared_statements"), want);
    PGT_EQ_INT((int)strlen(want), 7 + 16);

    /* the server loses it (DEALLOCATE ALL by hand): re-prepared transparently */
    PQclear(PGT_EXEC(pg, "DEALLOCATE ALL"));
    const char *v[1] = { "21" };
    PGresult *r = pgpipe_conn_exec_cached(c, sql, 1, v, NULL, NULL, 0);
    PGT_CHECK_MSG(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "42");
    PQclear(r);

    /* inside a transaction block the loss is reported, then healed */
    PQclear(PGT_EXEC(pg, "DEALLOCATE ALL"));
    PQclear(PGT_EXEC(pg, "BEGIN"));
    r = pgpipe_conn_exec_cached(c, sql, 1, v, NULL, NULL, 0);
    PGT_EQ_INT(PQresultStatus(r), PGRES_FATAL_ERROR);
    PGT_EQ_STR(pgpipe_errsqlstate(c), "26000");
    PQclear(r);
    PQclear(PGT_EXEC(pg, "ROLLBACK"));
    r = pgpipe_conn_exec_cached(c, sql, 1, v, NULL, NULL, 0);
    PGT_EQ_INT(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);

    /* a statement error is on the connection handle, SQLSTATE kept */
    r = pgpipe_conn_exec_cached(c, "SELECT 1/$1::int", 1, (const char *const[]){ "0" }, NULL, NULL, 0);
    PGT_EQ_INT(PQresultStatus(r), PGRES_FATAL_ERROR);
    PGT_EQ_STR(pgpipe_errsqlstate(c), "22012");
    PGT_CONTAINS(pgpipe_errmsg(c), "division by zero");
    PQclear(r);
    /* a plan whose result type changed is re-prepared */
    PQclear(PGT_EXEC(pg, "DROP TABLE IF EXISTS pool_t_plan; CREATE TABLE pool_t_plan (a int)"));
    PQclear(PGT_EXEC(pg, "INSERT INTO pool_t_plan VALUES (1)"));
    r = pgpipe_conn_exec_cached(c, "SELECT * FROM pool_t_plan", 0, NULL, NULL, NULL, 0);
    PGT_EQ_INT(PQresultStatus(r), PGRES_TUPLES_OK);
    PQclear(r);
    PQclear(PGT_EXEC(pg, "ALTER TABLE pool_t_plan ADD COLUMN b text"));
    r = pgpipe_conn_exec_cached(c, "SELECT * FROM pool_t_plan", 0, NULL, NULL, NULL, 0);
    PGT_CHECK_MSG(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    PGT_EQ_INT(PQnfields(r), 2);
    PQclear(r);
    PQclear(PGT_EXEC(pg, "DROP TABLE pool_t_plan"));
    pgpipe_pool_release(c);
    pool_t_close(p);
}

static void pool_t_cache2(pgpipe_pool_options *o) { o->stmt_cache_size = 2; }

PGT_TEST(pool, statement_cache_evicts_least_recently_used)
{
    pgpipe_pool *p = pool_t_open(1, 0, pool_t_cache2);
    pgpipe_conn *c = pool_t_get(p);
    const char *sqls[] = { "SELECT 1", "SELECT 2", "SELECT 1", "SELECT 3", "SELECT 1", "SELECT 4" };
    for (int i = 0; i < 6; i++) {
        PGresult *r = pgpipe_conn_exec_cached(c, sqls[i], 0, NULL, NULL, NULL, 0);
        PGT_EQ_INT(PQresultStatus(r), PGRES_TUPLES_OK);
        PGT_EQ_STR(PQgetvalue(r, 0, 0), sqls[i] + 7);
        PQclear(r);
        PGT_CHECK(c->nstmts <= 2);
    }
    PGT_EQ_STR(pool_t_value(c, "SELECT count(*) FROM pg_prepared_statements"), "2");
    /* "SELECT 1", used most, survived */
    PGT_EQ_STR(pool_t_value(c, "SELECT count(*) FROM pg_prepared_statements WHERE statement = 'SELECT 1'"), "1");
    PGT_EQ_INT(pgpipe_conn_clear_cache(c), 2);
    pgpipe_pool_release(c);
    pool_t_close(p);
}

static void pool_t_always_ping(pgpipe_pool_options *o) { o->pre_ping_ms = 0; }

PGT_TEST(pool, pre_ping_replaces_a_dead_connection)
{
    pgpipe_pool *p = pool_t_open(1, 0, pool_t_always_ping);
    pgpipe_conn *c = pool_t_get(p);
    int pid = pool_t_pid(c);
    pgpipe_pool_release(c);
    pool_t_kill_backend(pid);
    c = pool_t_get(p); /* no error: the dead one was replaced */
    PGT_CHECK(pool_t_pid(c) != pid);
    PGT_EQ_STR(pool_t_value(c, "SELECT 'alive'"), "alive");
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_CHECK(s.pings >= 2);
    PGT_EQ_INT(s.broken, 1);
    PGT_EQ_INT(s.created, 2);
    PGT_EQ_INT(s.closed, 1);
    pgpipe_pool_release(c);
    pool_t_close(p);
}

static void pool_t_lazy_ping(pgpipe_pool_options *o) { o->pre_ping_ms = 60000; }

PGT_TEST(pool, broken_connection_is_closed_and_older_ones_checked)
{
    pgpipe_pool *p = pool_t_open(2, 0, pool_t_lazy_ping);
    pgpipe_conn *a = pool_t_get(p), *b = pool_t_get(p);
    int pa = pool_t_pid(a), pb = pool_t_pid(b);
    pgpipe_pool_release(b);
    /* both backends die (as in a server restart); a is found broken on use */
    pool_t_kill_backend(pa);
    pool_t_kill_backend(pb);
    PGresult *r = PQexec(pgpipe_conn_pg(a), "SELECT 1");
    PGT_CHECK(PQresultStatus(r) != PGRES_TUPLES_OK);
    PGT_CHECK(pgpipe_pq_is_transient(pgpipe_conn_pg(a), r));
    PQclear(r);
    PGT_EQ_INT(pgpipe_pool_release(a), PGPIPE_DB); /* closed, never handed out */
    /* b was idle only briefly (no age ping due), but it is older than the
    ** broken one, so it is pinged and replaced */
    pgpipe_conn *c = pool_t_get(p);
    PGT_CHECK(pool_t_pid(c) != pa && pool_t_pid(c) != pb);
    PGT_EQ_STR(pool_t_value(c, "SELECT 'ok'"), "ok");
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.broken, 2);
    PGT_EQ_INT(s.size, 1);
    /* discard: the caller says it is bad */
    PGT_OK(pgpipe_pool_discard(c));
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.size, 0);
    c = pool_t_get(p);
    pgpipe_pool_release(c);
    pool_t_close(p);
}

static void pool_t_short_life(pgpipe_pool_options *o)
{
    o->max_lifetime_ms = 150;
    o->lifetime_jitter_ms = 50;
    o->pre_ping_ms = -1;
}

PGT_TEST(pool, max_lifetime_with_jitter)
{
    pgpipe_pool *p = pool_t_open(1, 0, pool_t_short_life);
    pgpipe_conn *c = pool_t_get(p);
    int pid = pool_t_pid(c);
    int64_t life = c->expires_us - c->created_us;
    PGT_CHECK_MSG(life >= 100000 && life <= 150000, "lifetime %lld us", (long long)life);
    pgpipe_pool_release(c);
    pgpipe_sleep_ms(200);
    c = pool_t_get(p);
    PGT_CHECK(pool_t_pid(c) != pid);
    pgpipe_sleep_ms(200);
    pid = pool_t_pid(c);
    pgpipe_pool_release(c); /* expired while out: closed on return */
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.size, 0);
    PGT_EQ_INT(s.closed, 2);
    pool_t_close(p);
}

static void pool_t_idle(pgpipe_pool_options *o)
{
    o->idle_timeout_ms = 100;
    o->min_idle = 1;
}

PGT_TEST(pool, idle_timeout_keeps_min_idle)
{
    pgpipe_pool *p = pool_t_open(4, 0, pool_t_idle);
    pgpipe_conn *c[4];
    for (int i = 0; i < 4; i++)
        c[i] = pool_t_get(p);
    for (int i = 0; i < 4; i++)
        pgpipe_pool_release(c[i]);
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.idle, 4);
    pgpipe_sleep_ms(250);
    pgpipe_conn *x = pool_t_get(p); /* acquire reaps the idle ones, keeping min_idle */
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.closed, 3);
    PGT_EQ_INT(s.size, 1);
    pgpipe_pool_release(x);
    pool_t_close(p);
}

/* ---- threads ---------------------------------------------------------- */

typedef struct pool_t_fifo {
    pgpipe_pool *pool;
    pthread_mutex_t mu;
    int order[8];
    int n;
    int id;
} pool_t_fifo;

typedef struct pool_t_fifo_arg {
    pool_t_fifo *f;
    int id;
} pool_t_fifo_arg;

static void *pool_t_fifo_waiter(void *arg)
{
    pool_t_fifo_arg *a = arg;
    pgpipe_conn *c = NULL;
    pgpipe_error e;
    if (pgpipe_pool_acquire_ex(a->f->pool, &c, 10000, &e) != PGPIPE_OK)
        return NULL;
    pthread_mutex_lock(&a->f->mu);
    a->f->order[a->f->n++] = a->id;
    pthread_mutex_unlock(&a->f->mu);
    pgpipe_sleep_ms(5);
    pgpipe_pool_release(c);
    return NULL;
}

static int pool_t_waiters(pgpipe_pool *p)
{
    pgpipe_pool_stats s;
    pgpipe_pool_stats_get(p, &s);
    return s.waiters;
}

PGT_TEST(pool, waiters_are_served_first_come_first_served)
{
    pool_t_fifo f;
    memset(&f, 0, sizeof f);
    pthread_mutex_init(&f.mu, NULL);
    f.pool = pool_t_open(1, 0, NULL);
    pgpipe_conn *held = pool_t_get(f.pool);
    pthread_t th[6];
    pool_t_fifo_arg args[6];
    for (int i = 0; i < 6; i++) {
        args[i].f = &f;
        args[i].id = i;
        pthread_create(&th[i], NULL, pool_t_fifo_waiter, &args[i]);
        /* start the next only once this one queues */
        for (int k = 0; k < 500 && pool_t_waiters(f.pool) < i + 1; k++)
            pgpipe_sleep_ms(2);
        PGT_EQ_INT(pool_t_waiters(f.pool), i + 1);
    }
    pgpipe_pool_release(held);
    for (int i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    PGT_EQ_INT(f.n, 6);
    for (int i = 0; i < 6; i++)
        PGT_EQ_INT(f.order[i], i);
    pool_t_close(f.pool);
    pthread_mutex_destroy(&f.mu);
}

static void *pool_t_release_later(void *arg)
{
    pgpipe_sleep_ms(150);
    pgpipe_pool_release(arg);
    return NULL;
}

typedef struct pool_t_logcap {
    int warns;
    char msg[512];
} pool_t_logcap;

static void pool_t_log(void *ud, int level, const char *component, const char *message,
                       const pgpipe_log_field *fields, int nfields)
{
    (void)fields;
    (void)nfields;
    pool_t_logcap *l = ud;
    if (level >= PGPIPE_LOG_WARN && strcmp(component, "pool") == 0) {
        l->warns++;
        snprintf(l->msg, sizeof l->msg, "%s", message);
    }
}

static void pool_t_close_fast(pgpipe_pool_options *o) { o->close_timeout_ms = 100; }

PGT_TEST(pool, close_waits_then_reports_leaks)
{
    /* a connection returned within the timeout: clean close */
    pgpipe_pool *p = pool_t_open(2, 0, NULL);
    pgpipe_conn *c = pool_t_get(p);
    pthread_t th;
    pthread_create(&th, NULL, pool_t_release_later, c);
    int leaked = -1;
    PGT_OK(pgpipe_pool_close(p, &leaked));
    PGT_EQ_INT(leaked, 0);
    pthread_join(th, NULL);

    /* one never returned in time: counted, logged, PGPIPE_BUSY */
    pool_t_logcap lc;
    memset(&lc, 0, sizeof lc);
    pgpipe_config_log(pool_t_log, &lc);
    p = pool_t_open(2, 0, pool_t_close_fast);
    pgpipe_conn *a = pool_t_get(p), *b = pool_t_get(p);
    pgpipe_pool_release(b);
    int64_t t0 = pgpipe_now_us();
    PGT_EQ_INT(pgpipe_pool_close(p, &leaked), PGPIPE_BUSY);
    PGT_CHECK(pgpipe_now_us() - t0 >= 90000);
    PGT_EQ_INT(leaked, 1);
    PGT_EQ_INT(lc.warns, 1);
    PGT_CONTAINS(lc.msg, "1 connection(s) still checked out");
    /* the leaked handle stays valid; returning it closes it and frees the pool */
    PGT_EQ_STR(pool_t_value(a, "SELECT 'still here'"), "still here");
    PGT_OK(pgpipe_pool_release(a));
    pgpipe_config_log(NULL, NULL);
}

typedef struct pool_t_closer {
    pgpipe_pool *pool;
    int rc;
    char msg[256];
} pool_t_closer;

static void *pool_t_blocked_acquire(void *arg)
{
    pool_t_closer *cl = arg;
    pgpipe_conn *c = NULL;
    pgpipe_error e;
    cl->rc = pgpipe_pool_acquire_ex(cl->pool, &c, 20000, &e);
    snprintf(cl->msg, sizeof cl->msg, "%.200s", e.message);
    if (c)
        pgpipe_pool_release(c);
    return NULL;
}

PGT_TEST(pool, close_wakes_waiters)
{
    pgpipe_pool *p = pool_t_open(1, 0, pool_t_close_fast);
    pgpipe_conn *c = pool_t_get(p);
    pool_t_closer cl = { p, -1, "" };
    pthread_t th;
    pthread_create(&th, NULL, pool_t_blocked_acquire, &cl);
    for (int k = 0; k < 500 && pool_t_waiters(p) < 1; k++)
        pgpipe_sleep_ms(2);
    pthread_t rel;
    pthread_create(&rel, NULL, pool_t_release_later, c);
    int leaked = -1;
    int64_t t0 = pgpipe_now_us();
    int rc = pgpipe_pool_close(p, &leaked);
    pthread_join(th, NULL);
    pthread_join(rel, NULL);
    PGT_CHECK(pgpipe_now_us() - t0 < 5000000); /* the waiter did not sit out 20 s */
    PGT_EQ_INT(cl.rc, PGPIPE_MISUSE);
    PGT_CONTAINS(cl.msg, "closed");
    /* the holder returned it after 150 ms > close_timeout 100 ms: a leak */
    PGT_EQ_INT(rc, PGPIPE_BUSY);
    PGT_EQ_INT(leaked, 1);
}

/* ---- pipeline --------------------------------------------------------- */

static void pool_t_pipeline_case(int flags, const char *table)
{
    pgpipe_pool *p = pool_t_open(1, 0, NULL);
    pgpipe_conn *c = pool_t_get(p);
    PGconn *pg = pgpipe_conn_pg(c);
    char sql[256];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (x int)", table, table);
    PQclear(PGT_EXEC(pg, sql));
    pgpipe_pipeline *pl;
    PGT_OK(pgpipe_pipeline_open(&pl, c, flags));
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES ($1::int)", table);
    for (int i = 1; i <= 5; i++) {
        char num[16];
        snprintf(num, sizeof num, "%d", i);
        const char *v[1] = { num };
        if (i == 3)
            PGT_OK(pgpipe_pipeline_add(pl, "SELECT 1/0", 0, NULL));
        else
            PGT_OK(pgpipe_pipeline_add(pl, sql, 1, v));
    }
    PGT_EQ_INT(pgpipe_pipeline_count(pl), 5);
    int failed = -1;
    PGT_EQ_INT(pgpipe_pipeline_run(pl, &failed), PGPIPE_DB);
    PGT_CONTAINS(pgpipe_errmsg(pl), "pipeline statement 3 of 5");
    PGT_CONTAINS(pgpipe_errmsg(pl), "division by zero");
    PGT_EQ_STR(pgpipe_errsqlstate(pl), "22012");
    PGT_EQ_INT(PQresultStatus(pgpipe_pipeline_result(pl, 0)), PGRES_COMMAND_OK);
    PGT_EQ_INT(PQresultStatus(pgpipe_pipeline_result(pl, 1)), PGRES_COMMAND_OK);
    PGT_EQ_INT(PQresultStatus(pgpipe_pipeline_result(pl, 2)), PGRES_FATAL_ERROR);
    snprintf(sql, sizeof sql, "SELECT coalesce(string_agg(x::text, ',' ORDER BY x), '') FROM %s", table);
    if (flags & PGPIPE_PIPELINE_SYNC_EACH) {
        /* one transaction per statement: only the failing one is lost */
        PGT_EQ_INT(failed, 1);
        PGT_EQ_INT(PQresultStatus(pgpipe_pipeline_result(pl, 3)), PGRES_COMMAND_OK);
        PGT_EQ_INT(PQresultStatus(pgpipe_pipeline_result(pl, 4)), PGRES_COMMAND_OK);
        pgpipe_pipeline_close(pl);
        PGT_EQ_STR(pool_t_value(c, sql), "1,2,4,5");
    } else {
        /* one implicit transaction: the rest skipped, the first two rolled back */
        PGT_EQ_INT(failed, 3);
        PGT_EQ_INT(PQresultStatus(pgpipe_pipeline_result(pl, 3)), PGRES_PIPELINE_ABORTED);
        PGT_EQ_INT(PQresultStatus(pgpipe_pipeline_result(pl, 4)), PGRES_PIPELINE_ABORTED);
        pgpipe_pipeline_close(pl);
        PGT_EQ_STR(pool_t_value(c, sql), "");
    }
    PGT_EQ_INT(PQpipelineStatus(pg), PQ_PIPELINE_OFF);
    PGT_EQ_INT(PQisnonblocking(pg), 0);
    snprintf(sql, sizeof sql, "DROP TABLE %s", table);
    PQclear(PGT_EXEC(pg, sql));
    int pid = pool_t_pid(c);
    PGT_OK(pgpipe_pool_release(c));
    c = pool_t_get(p);
    PGT_EQ_INT(pool_t_pid(c), pid); /* reusable after a pipeline */
    pgpipe_pool_release(c);
    pool_t_close(p);
}

PGT_TEST(pool, pipeline_one_sync_failure_skips_rest_and_rolls_back)
{
    pool_t_pipeline_case(0, "pool_t_pl_one");
}

PGT_TEST(pool, pipeline_sync_each_failure_is_isolated)
{
    pool_t_pipeline_case(PGPIPE_PIPELINE_SYNC_EACH, "pool_t_pl_each");
}

/* A pipeline left open when its connection is released: release closes the
** connection and the pipeline lets go of it; its calls then fail with
** PGPIPE_MISUSE, the error stays on the pipeline after a call that went
** well, and close frees the pipeline only (no use of the freed connection). */
PGT_TEST(pool, pipeline_left_open_at_release_is_detached)
{
    pgpipe_pool *p = pool_t_open(1, 0, NULL);
    for (int ran = 0; ran <= 1; ran++) {
        pgpipe_conn *c = pool_t_get(p);
        pgpipe_pipeline *pl;
        PGT_OK(pgpipe_pipeline_open(&pl, c, PGPIPE_PIPELINE_SYNC_EACH));
        PGT_EQ_INT(pgpipe_pipeline_add(pl, NULL, 0, NULL), PGPIPE_MISUSE);
        PGT_OK(pgpipe_pipeline_add(pl, "SELECT 1", 0, NULL));
        PGT_EQ_INT(pgpipe_errcode(pl), PGPIPE_OK); /* the last call's error: none */
        PGT_EQ_STR(pgpipe_errmsg(pl), "");
        if (ran)
            PGT_OK(pgpipe_pipeline_run(pl, NULL));
        pgpipe_pool_release(c);
        PGT_EQ_INT(pgpipe_pipeline_add(pl, "SELECT 2", 0, NULL), PGPIPE_MISUSE);
        PGT_CONTAINS(pgpipe_errmsg(pl), "returned to the pool");
        PGT_EQ_INT(pgpipe_pipeline_run(pl, NULL), PGPIPE_MISUSE);
        PGT_EQ_INT(pgpipe_pipeline_count(pl), 1);
        pgpipe_pipeline_close(pl); /* under ASan: no use after free */
        /* the pool still works */
        c = pool_t_get(p);
        PGT_EQ_STR(pool_t_value(c, "SELECT 'ok'"), "ok");
        pgpipe_pool_release(c);
    }
    pool_t_close(p);
}

PGT_TEST(pool, pipeline_many_statements_results_in_order)
{
    pgpipe_pool *p = pool_t_open(1, 0, NULL);
    pgpipe_conn *c = pool_t_get(p);
    for (int flags = 0; flags <= PGPIPE_PIPELINE_SYNC_EACH; flags++) {
        pgpipe_pipeline *pl;
        PGT_OK(pgpipe_pipeline_open(&pl, c, flags));
        /* enough to fill the socket buffers both ways */
        enum { N = 5000 };
        for (int i = 0; i < N; i++) {
            char num[16];
            snprintf(num, sizeof num, "%d", i);
            const char *v[1] = { num };
            PGT_OK(pgpipe_pipeline_add(pl, "SELECT $1::int, repeat('x', 200)", 1, v));
        }
        int failed = -1;
        PGT_OK(pgpipe_pipeline_run(pl, &failed));
        PGT_EQ_INT(failed, 0);
        for (int i = 0; i < N; i++) {
            PGresult *r = pgpipe_pipeline_result(pl, i);
            PGT_EQ_INT(PQresultStatus(r), PGRES_TUPLES_OK);
            PGT_EQ_INT(atoi(PQgetvalue(r, 0, 0)), i);
        }
        PGT_CHECK(pgpipe_pipeline_result(pl, N) == NULL);
        PGT_EQ_INT(pgpipe_pipeline_run(pl, NULL), PGPIPE_MISUSE);
        pgpipe_pipeline_close(pl);
    }
    /* an empty pipeline, and one freed without running */
    pgpipe_pipeline *pl;
    PGT_OK(pgpipe_pipeline_open(&pl, c, 0));
    PGT_OK(pgpipe_pipeline_run(pl, NULL));
    pgpipe_pipeline_close(pl);
    PGT_OK(pgpipe_pipeline_open(&pl, c, 0));
    PGT_OK(pgpipe_pipeline_add(pl, "SELECT 1", 0, NULL));
    pgpipe_pipeline_close(pl);
    PGT_EQ_STR(pool_t_value(c, "SELECT 'after'"), "after");
    /* a pipeline left open at release: the connection is closed, not reused */
    int pid = pool_t_pid(c);
    PGT_OK(pgpipe_pipeline_open(&pl, c, 0));
    PGT_OK(pgpipe_pipeline_add(pl, "SELECT 1", 0, NULL));
    PGT_CHECK(!pool_conn_reset(c));
    pgpipe_pipeline_close(pl);
    PGT_OK(pgpipe_pool_release(c));
    c = pool_t_get(p);
    PGT_EQ_INT(pool_t_pid(c), pid);
    pgpipe_pool_release(c);
    pool_t_close(p);
}

PGT_TEST(pool, wait_histogram_percentiles)
{
    uint64_t hist[POOL_HIST_N];
    memset(hist, 0, sizeof hist);
    for (int64_t v = 0; v < 100000; v += 7)
        PGT_CHECK(pool_hist_bucket(v) < POOL_HIST_N);
    /* every value maps into a bucket whose middle is within 1/32 of it */
    for (int64_t v = 16; v < 100000000; v = v * 5 / 4 + 3) {
        int64_t m = pool_hist_value(pool_hist_bucket(v));
        PGT_CHECK_MSG(m >= v - v / 16 && m <= v + v / 16, "v %lld -> %lld", (long long)v, (long long)m);
    }
    for (int i = 1; i <= 1000; i++)
        hist[pool_hist_bucket(i * 100)]++;
    int64_t p50 = pool_hist_percentile(hist, 1000, 0.50, 100000);
    int64_t p99 = pool_hist_percentile(hist, 1000, 0.99, 100000);
    PGT_CHECK_MSG(p50 > 47000 && p50 < 53000, "p50 %lld", (long long)p50);
    PGT_CHECK_MSG(p99 > 95000 && p99 <= 100000, "p99 %lld", (long long)p99);
    PGT_EQ_INT(pool_hist_percentile(hist, 0, 0.5, 0), 0);
}

/* ---- 16 threads: stress (also the ThreadSanitizer run) and a restart ---- */

enum { POOL_T_THREADS = 16 };

typedef struct pool_t_shared {
    pgpipe_pool *pool;
    pthread_mutex_t mu;
    int stop;
    int phase;                 /* 0 before the restart, 1 during, 2 after */
    int ok[POOL_T_THREADS];    /* queries that succeeded */
    int ok_after[POOL_T_THREADS];
    int qfail[POOL_T_THREADS]; /* failed queries */
    int qfail_nontransient[POOL_T_THREADS];
    int afail[POOL_T_THREADS]; /* failed acquires */
    int busy[POOL_T_THREADS];  /* no-wait acquires that found none free */
    int bad[POOL_T_THREADS];   /* wrong answers or unexpected errors */
    char lasterr[POOL_T_THREADS][200];
    int iterations;
} pool_t_shared;

typedef struct pool_t_worker {
    pool_t_shared *sh;
    int id;
} pool_t_worker;

static int pool_t_should_stop(pool_t_shared *sh, int *phase)
{
    pthread_mutex_lock(&sh->mu);
    int stop = sh->stop;
    *phase = sh->phase;
    pthread_mutex_unlock(&sh->mu);
    return stop;
}

static void pool_t_count(pool_t_shared *sh, int *field, int id, const char *err)
{
    pthread_mutex_lock(&sh->mu);
    field[id]++;
    if (err)
        snprintf(sh->lasterr[id], sizeof sh->lasterr[id], "%s", err);
    pthread_mutex_unlock(&sh->mu);
}

/* One unit of work of a stress worker, chosen by k. */
static void pool_t_stress_step(pool_t_shared *sh, int id, int k)
{
    pgpipe_conn *c = NULL;
    pgpipe_error e;
    int kind = k % 20;
    int rc = pgpipe_pool_acquire_ex(sh->pool, &c, kind == 19 ? 0 : -1, &e);
    if (rc == PGPIPE_BUSY && kind == 19) {
        pool_t_count(sh, sh->busy, id, NULL);
        return;
    }
    if (rc != PGPIPE_OK) {
        pool_t_count(sh, sh->afail, id, e.message);
        return;
    }
    PGconn *pg = pgpipe_conn_pg(c);
    char num[16];
    snprintf(num, sizeof num, "%d", k);
    const char *v[1] = { num };
    int good = 1;
    if (kind < 12) { /* the common case: a cached statement */
        PGresult *r = pgpipe_conn_exec_cached(c, "SELECT $1::int + 1", 1, v, NULL, NULL, 0);
        good = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) == k + 1;
        PQclear(r);
    } else if (kind == 12 || kind == 13) { /* left inside a transaction */
        PQclear(PQexec(pg, "BEGIN"));
        PGresult *r = PQexec(pg, "SELECT txid_current()");
        good = PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    } else if (kind == 14) { /* an error inside a transaction */
        PQclear(PQexec(pg, "BEGIN"));
        PQclear(PQexec(pg, "SELECT 1/0"));
        good = PQtransactionStatus(pg) == PQTRANS_INERROR;
    } else if (kind == 15 || kind == 16) { /* a short pipeline */
        pgpipe_pipeline *pl = NULL;
        good = pgpipe_pipeline_open(&pl, c, kind == 16 ? PGPIPE_PIPELINE_SYNC_EACH : 0) == PGPIPE_OK;
        for (int i = 0; good && i < 5; i++)
            good = pgpipe_pipeline_add(pl, "SELECT $1::int", 1, v) == PGPIPE_OK;
        int failed = -1;
        good = good && pgpipe_pipeline_run(pl, &failed) == PGPIPE_OK && failed == 0;
        pgpipe_pipeline_close(pl);
    } else if (kind == 17) { /* the caller throws it away */
        pgpipe_pool_discard(c);
        pool_t_count(sh, sh->ok, id, NULL);
        return;
    } else { /* a plain query, must see a clean session */
        good = PQtransactionStatus(pg) == PQTRANS_IDLE;
        PGresult *r = PQexec(pg, "SELECT 1");
        good = good && PQresultStatus(r) == PGRES_TUPLES_OK;
        PQclear(r);
    }
    pgpipe_pool_release(c);
    pool_t_count(sh, good ? sh->ok : sh->bad, id, good ? NULL : "wrong result");
}

static void *pool_t_stress_worker(void *arg)
{
    pool_t_worker *w = arg;
    int phase;
    for (int k = 0; k < w->sh->iterations && !pool_t_should_stop(w->sh, &phase); k++)
        pool_t_stress_step(w->sh, w->id, k * 7 + w->id);
    return NULL;
}

static void *pool_t_stats_reader(void *arg)
{
    pool_t_shared *sh = arg;
    int phase;
    long long last = 0;
    while (!pool_t_should_stop(sh, &phase)) {
        pgpipe_pool_stats s;
        pgpipe_pool_stats_get(sh->pool, &s);
        if (s.size > s.pool_size + s.max_overflow || s.idle + s.in_use > s.size ||
            s.acquired < last || s.wait_p50_us > s.wait_p99_us || s.wait_p99_us > s.wait_max_us)
            pool_t_count(sh, sh->bad, 0, "inconsistent stats");
        last = s.acquired;
        pgpipe_sleep_ms(1);
    }
    return NULL;
}

static void pool_t_stress_opts(pgpipe_pool_options *o)
{
    o->pre_ping_ms = 0;        /* every checkout pings: more traffic, more races */
    o->max_lifetime_ms = 300;  /* connections keep expiring and being replaced */
    o->lifetime_jitter_ms = 100;
    o->idle_timeout_ms = 50;
    o->min_idle = 2;
    o->reset_sql = "DISCARD ALL";
}

PGT_TEST(pool, stress_16_threads)
{
    pool_t_shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.mu, NULL);
    sh.pool = pool_t_open(4, 4, pool_t_stress_opts);
    sh.iterations = 150;
    pthread_t th[POOL_T_THREADS], reader;
    pool_t_worker w[POOL_T_THREADS];
    pthread_create(&reader, NULL, pool_t_stats_reader, &sh);
    for (int i = 0; i < POOL_T_THREADS; i++) {
        w[i].sh = &sh;
        w[i].id = i;
        pthread_create(&th[i], NULL, pool_t_stress_worker, &w[i]);
    }
    for (int i = 0; i < POOL_T_THREADS; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_lock(&sh.mu);
    sh.stop = 1;
    pthread_mutex_unlock(&sh.mu);
    pthread_join(reader, NULL);
    long long total = 0;
    for (int i = 0; i < POOL_T_THREADS; i++) {
        PGT_CHECK_MSG(sh.afail[i] == 0 && sh.bad[i] == 0, "thread %d: %d acquire failures, %d bad: %s",
                      i, sh.afail[i], sh.bad[i], sh.lasterr[i]);
        PGT_EQ_INT(sh.ok[i] + sh.busy[i], sh.iterations);
        total += sh.ok[i];
    }
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(sh.pool, &s));
    /* a connector started for a waiter served meanwhile may still be opening */
    for (int k = 0; k < 500 && s.opening > 0; k++) {
        pgpipe_sleep_ms(10);
        PGT_OK(pgpipe_pool_stats_get(sh.pool, &s));
    }
    PGT_EQ_INT(s.opening, 0);
    PGT_EQ_INT(s.in_use, 0);
    PGT_EQ_INT(s.waiters, 0);
    PGT_EQ_INT(s.acquired, total);
    PGT_CHECK(s.size <= 8);
    PGT_CHECK(s.created >= 8);
    PGT_EQ_INT(s.created - s.closed, s.size);
    pool_t_close(sh.pool);
    pthread_mutex_destroy(&sh.mu);
}

static void *pool_t_restart_worker(void *arg)
{
    pool_t_worker *w = arg;
    pool_t_shared *sh = w->sh;
    int64_t end = pgpipe_now_us() + 90 * 1000000LL;
    int phase;
    while (!pool_t_should_stop(sh, &phase) && pgpipe_now_us() < end) {
        pgpipe_conn *c = NULL;
        pgpipe_error e;
        if (pgpipe_pool_acquire_ex(sh->pool, &c, -1, &e) != PGPIPE_OK) {
            pool_t_count(sh, sh->afail, w->id, e.message);
            continue;
        }
        const char *v[1] = { "1" };
        PGresult *r = pgpipe_conn_exec_cached(c, "SELECT $1::int", 1, v, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            pool_t_count(sh, phase == 2 ? sh->ok_after : sh->ok, w->id, NULL);
        } else {
            int transient = pgpipe_pq_is_transient(pgpipe_conn_pg(c), r);
            pool_t_count(sh, transient ? sh->qfail : sh->qfail_nontransient, w->id,
                         PQresultErrorMessage(r));
        }
        PQclear(r);
        pgpipe_pool_release(c);
        pgpipe_sleep_ms(2);
    }
    return NULL;
}

/* Wait (bounded) until every thread has n entries in field. */
static int pool_t_wait_all(pool_t_shared *sh, int *field, int n, int seconds)
{
    int64_t end = pgpipe_now_us() + (int64_t)seconds * 1000000;
    while (pgpipe_now_us() < end) {
        int all = 1;
        pthread_mutex_lock(&sh->mu);
        for (int i = 0; i < POOL_T_THREADS; i++)
            all = all && field[i] >= n;
        pthread_mutex_unlock(&sh->mu);
        if (all)
            return 1;
        pgpipe_sleep_ms(20);
    }
    return 0;
}

static void pool_t_restart_opts(pgpipe_pool_options *o)
{
    o->acquire_timeout_ms = 30000;
    o->pre_ping_ms = 1000; /* busy connections are not pinged: the restart bites */
}

PGT_TEST(pool, survives_server_restart_under_16_threads)
{
    const char *dir = getenv("PGPIPE_TEST_PGDIR");
    if (!dir || !*dir)
        PGT_SKIP("no PGPIPE_TEST_PGDIR: cannot restart the test cluster");
    const char *top = getenv("PGPIPE_TOP");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sh '%s/tool/pgtmp.sh' restart '%s'", top && *top ? top : ".", dir);

    pool_t_shared sh;
    memset(&sh, 0, sizeof sh);
    pthread_mutex_init(&sh.mu, NULL);
    sh.pool = pool_t_open(4, 4, pool_t_restart_opts);
    pthread_t th[POOL_T_THREADS];
    pool_t_worker w[POOL_T_THREADS];
    for (int i = 0; i < POOL_T_THREADS; i++) {
        w[i].sh = &sh;
        w[i].id = i;
        pthread_create(&th[i], NULL, pool_t_restart_worker, &w[i]);
    }
    int warm = pool_t_wait_all(&sh, sh.ok, 5, 30);
    pthread_mutex_lock(&sh.mu);
    sh.phase = 1;
    pthread_mutex_unlock(&sh.mu);
    int64_t t0 = pgpipe_now_us();
    int src = system(cmd);
    int64_t restart_ms = (pgpipe_now_us() - t0) / 1000;
    pthread_mutex_lock(&sh.mu);
    sh.phase = 2;
    pthread_mutex_unlock(&sh.mu);
    int after = pool_t_wait_all(&sh, sh.ok_after, 3, 30);
    pthread_mutex_lock(&sh.mu);
    sh.stop = 1;
    pthread_mutex_unlock(&sh.mu);
    for (int i = 0; i < POOL_T_THREADS; i++)
        pthread_join(th[i], NULL);

    PGT_CHECK(warm);
    PGT_CHECK_MSG(src == 0, "restart command failed: %s", cmd);
    int failures = 0;
    for (int i = 0; i < POOL_T_THREADS; i++) {
        fprintf(stderr, "    thread %2d: %d ok before/during, %d failed (in flight), %d ok after\n",
                i, sh.ok[i], sh.qfail[i], sh.ok_after[i]);
        PGT_CHECK_MSG(sh.afail[i] == 0, "thread %d: %d acquires failed: %s", i, sh.afail[i],
                      sh.lasterr[i]);
        PGT_CHECK_MSG(sh.qfail_nontransient[i] == 0, "thread %d: non-transient failure: %s", i,
                      sh.lasterr[i]);
        PGT_CHECK_MSG(sh.ok_after[i] >= 3, "thread %d: %d successes after the restart", i,
                      sh.ok_after[i]);
        failures += sh.qfail[i];
    }
    PGT_CHECK(after);
    /* Only a query on a connection of the old server can fail, and a failed
    ** connection is closed, never handed out again: so there are at most as
    ** many failures as the pool held connections (pool_size + max_overflow).
    ** Not "one per thread": while the postmaster signals its backends one by
    ** one, a ping can succeed on a backend an instant before its SIGTERM
    ** arrives, so a thread may meet two dying connections on a loaded machine. */
    PGT_CHECK_MSG(failures <= 4 + 4, "%d failed queries for a pool of 8 connections", failures);
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(sh.pool, &s));
    fprintf(stderr, "    restart took %lld ms; %d in-flight failures; created %lld closed %lld "
            "broken %lld connect failures %lld; wait p50 %lld us p99 %lld us max %lld us\n",
            (long long)restart_ms, failures, s.created, s.closed, s.broken, s.connect_failures,
            s.wait_p50_us, s.wait_p99_us, s.wait_max_us);
    PGT_EQ_INT(s.in_use, 0);
    PGT_EQ_INT(s.timeouts, 0);
    PGT_CHECK(s.broken >= 1);
    pool_t_close(sh.pool);
    pthread_mutex_destroy(&sh.mu);
}

PGT_TEST(pool, permanent_connect_failure_fails_fast)
{
    char ci[600];
    snprintf(ci, sizeof ci, "%s dbname=pool_t_no_such_db", pgt_dsn());
    pgpipe_pool_options o;
    pgpipe_pool_options_init(&o);
    o.min_idle = 0;
    pgpipe_pool *p = NULL;
    PGT_OK(pgpipe_pool_open(&p, ci, &o));
    pgpipe_conn *c = NULL;
    pgpipe_error e;
    int64_t t0 = pgpipe_now_us();
    PGT_EQ_INT(pgpipe_pool_acquire_ex(p, &c, 20000, &e), PGPIPE_DB);
    PGT_CHECK(pgpipe_now_us() - t0 < 5000000); /* not the 20 s timeout */
    PGT_CONTAINS(e.message, "pool_t_no_such_db");
    PGT_CONTAINS(e.message, "does not exist");
    pool_t_close(p);
}

typedef struct pool_t_many {
    pgpipe_pool *pool;
    int rc;
    pgpipe_error err;
} pool_t_many;

static void *pool_t_many_acquire(void *arg)
{
    pool_t_many *m = arg;
    pgpipe_conn *c = NULL;
    m->rc = pgpipe_pool_acquire_ex(m->pool, &c, 200, &m->err);
    if (c)
        pgpipe_pool_release(c);
    return NULL;
}

PGT_TEST(pool, sixteen_threads_time_out_at_once_each_with_its_error)
{
    pgpipe_pool *p = pool_t_open(1, 0, NULL);
    pgpipe_conn *held = pool_t_get(p);
    pool_t_many m[POOL_T_THREADS];
    pthread_t th[POOL_T_THREADS];
    for (int i = 0; i < POOL_T_THREADS; i++) {
        m[i].pool = p;
        m[i].rc = -1;
        pthread_create(&th[i], NULL, pool_t_many_acquire, &m[i]);
    }
    for (int i = 0; i < POOL_T_THREADS; i++)
        pthread_join(th[i], NULL);
    for (int i = 0; i < POOL_T_THREADS; i++) {
        PGT_EQ_INT(m[i].rc, PGPIPE_BUSY);
        PGT_EQ_INT(m[i].err.code, PGPIPE_BUSY);
        PGT_CONTAINS(m[i].err.message, "timed out after");
        PGT_CONTAINS(m[i].err.message, "pool_size 1 + max_overflow 0");
    }
    pgpipe_pool_stats s;
    PGT_OK(pgpipe_pool_stats_get(p, &s));
    PGT_EQ_INT(s.timeouts, POOL_T_THREADS);
    PGT_EQ_INT(s.waiters, 0);
    pgpipe_pool_release(held);
    pool_t_close(p);
}

PGT_TEST(pool, conninfo_from_a_service_file)
{
    const char *host = getenv("PGHOST"), *port = getenv("PGPORT");
    if (!host || !port)
        PGT_SKIP("PGHOST/PGPORT not set");
    char path[512];
    snprintf(path, sizeof path, "%s/pool_t_services.%d.conf", pgt_tmpdir(), (int)getpid());
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    fprintf(f, "[pool_t_svc]\nhost=%s\nport=%s\nuser=postgres\ndbname=postgres\n"
               "application_name=from-service\n", host, port);
    fclose(f);
    setenv("PGSERVICEFILE", path, 1);
    pgpipe_pool *p = NULL;
    PGT_CHECK_MSG(pgpipe_pool_open(&p, "service=pool_t_svc", NULL) == PGPIPE_OK, "%s",
                  pgpipe_errmsg(p));
    pgpipe_conn *c = pool_t_get(p);
    /* the service file's settings are the user's string: they win */
    PGT_EQ_STR(pool_t_value(c, "SELECT current_setting('application_name')"), "from-service");
    pgpipe_pool_release(c);
    pool_t_close(p);
    unlink(path);
}
