/* Tests of running statements, classifying failures and backing off
** (src/base/exec.c). */

PGT_TEST(exec, transient_sqlstates)
{
    const char *yes[] = { "08000", "08003", "08006", "08001", "08P01", "57P01", "57P02",
                          "57P03", "40001", "40P01", "53300", "55P03", "58030" };
    const char *no[] = { "23505", "42601", "22P02", "42P01", "57014", "XX000", "", "0800", NULL };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        PGT_CHECK_MSG(pgpipe_sqlstate_is_transient(yes[i]), "%s should be transient", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        PGT_CHECK_MSG(!pgpipe_sqlstate_is_transient(no[i]), "%s should not be transient",
                      no[i] ? no[i] : "NULL");
}

PGT_TEST(exec, transient_from_real_server)
{
    PGconn *c = pgt_connect();
    /* a syntax error is final */
    PGresult *r = PQexec(c, "SELEC 1");
    PGT_EQ_INT(PQresultStatus(r), PGRES_FATAL_ERROR);
    PGT_CHECK(!pgpipe_pq_is_transient(c, r));
    pgpipe_error e;
    pp_err_pq(&e, c, r, "running a query");
    PGT_EQ_STR(e.sqlstate, "42601");
    PGT_CONTAINS(e.message, "running a query: syntax error");
    PQclear(r);

    /* a terminated backend (what a server restart looks like) is transient */
    PGconn *killer = pgt_connect();
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(c));
    PQclear(PGT_EXEC(killer, sql));
    PQfinish(killer);
    r = PQexec(c, "SELECT 1");
    PGT_CHECK(PQresultStatus(r) != PGRES_TUPLES_OK);
    PGT_CHECK(pgpipe_pq_is_transient(c, r));
    pp_err_pq(&e, c, r, NULL);
    PGT_CHECK(pgpipe_sqlstate_is_transient(e.sqlstate));
    PQclear(r);
    PQfinish(c);
}

PGT_TEST(exec, retry_delays_are_bounded_and_grow)
{
    pgpipe_retry r;
    pgpipe_retry_init(&r, 8, 100, 1000);
    int caps[] = { 100, 200, 400, 800, 1000, 1000, 1000 };
    for (int i = 0; i < 7; i++) {
        int d = pgpipe_retry_next_delay(&r);
        PGT_CHECK_MSG(d >= caps[i] / 2 && d <= caps[i], "delay %d = %d, cap %d", i, d, caps[i]);
    }
    PGT_EQ_INT(pgpipe_retry_next_delay(&r), -1);
    PGT_EQ_INT(r.attempt, 8);

    /* jitter: two retriers seeded differently do not march in step */
    int same = 0;
    for (int k = 0; k < 20; k++) {
        pgpipe_retry a, b;
        pgpipe_retry_init(&a, 3, 1000, 10000);
        pgpipe_retry_init(&b, 3, 1000, 10000);
        a.seed = 1 + (uint64_t)k;
        b.seed = 1000 + (uint64_t)k;
        same += pgpipe_retry_next_delay(&a) == pgpipe_retry_next_delay(&b);
    }
    PGT_CHECK(same < 5);
}

typedef struct flaky {
    int calls, fail_times, transient;
} flaky;

static int flaky_fn(void *ud, int attempt, int *transient)
{
    flaky *f = ud;
    f->calls++;
    PGT_EQ_INT(attempt, f->calls);
    if (f->calls <= f->fail_times) {
        *transient = f->transient;
        return PGPIPE_DB;
    }
    return PGPIPE_OK;
}

PGT_TEST(exec, retry_call)
{
    pgpipe_retry r;
    flaky f = { 0, 2, 1 };
    pgpipe_retry_init(&r, 5, 1, 2);
    PGT_OK(pgpipe_retry_call(&r, flaky_fn, &f));
    PGT_EQ_INT(f.calls, 3);

    flaky g = { 0, 2, 0 }; /* a final failure is not retried */
    pgpipe_retry_init(&r, 5, 1, 2);
    PGT_EQ_INT(pgpipe_retry_call(&r, flaky_fn, &g), PGPIPE_DB);
    PGT_EQ_INT(g.calls, 1);

    flaky h = { 0, 100, 1 }; /* attempts run out */
    pgpipe_retry_init(&r, 4, 1, 2);
    PGT_EQ_INT(pgpipe_retry_call(&r, flaky_fn, &h), PGPIPE_DB);
    PGT_EQ_INT(h.calls, 4);
}

PGT_TEST(exec, sqlstate_classes)
{
    static const struct { const char *st; int cls; } cases[] = {
        { "08006", PGPIPE_SQLSTATE_RETRY },       /* connection failure */
        { "08000", PGPIPE_SQLSTATE_RETRY },
        { "08P01", PGPIPE_SQLSTATE_RETRY },       /* protocol violation: class 08 */
        { "40001", PGPIPE_SQLSTATE_RETRY },       /* serialization failure */
        { "40P01", PGPIPE_SQLSTATE_RETRY },       /* deadlock */
        { "57P01", PGPIPE_SQLSTATE_RETRY },       /* admin shutdown */
        { "57P02", PGPIPE_SQLSTATE_RETRY },
        { "57P03", PGPIPE_SQLSTATE_RETRY },
        { "53300", PGPIPE_SQLSTATE_RETRY },
        { "55P03", PGPIPE_SQLSTATE_RETRY },
        { "58030", PGPIPE_SQLSTATE_RETRY },
        { "22P02", PGPIPE_SQLSTATE_DEAD_LETTER }, /* invalid text representation */
        { "22003", PGPIPE_SQLSTATE_DEAD_LETTER }, /* numeric out of range */
        { "23505", PGPIPE_SQLSTATE_DEAD_LETTER }, /* unique violation */
        { "23502", PGPIPE_SQLSTATE_DEAD_LETTER }, /* not null violation */
        { "23503", PGPIPE_SQLSTATE_DEAD_LETTER }, /* foreign key violation */
        { "42P01", PGPIPE_SQLSTATE_GIVE_UP },     /* undefined table */
        { "42601", PGPIPE_SQLSTATE_GIVE_UP },     /* syntax error */
        { "42501", PGPIPE_SQLSTATE_GIVE_UP },     /* insufficient privilege */
        { "57014", PGPIPE_SQLSTATE_GIVE_UP },     /* query canceled */
        { "40002", PGPIPE_SQLSTATE_GIVE_UP },     /* class 40 is not all transient */
        { "53100", PGPIPE_SQLSTATE_GIVE_UP },     /* disk full */
        { "P0001", PGPIPE_SQLSTATE_GIVE_UP },     /* raise_exception */
        { "XX000", PGPIPE_SQLSTATE_GIVE_UP },
        { "", PGPIPE_SQLSTATE_GIVE_UP },
        { "0800", PGPIPE_SQLSTATE_GIVE_UP },
        { "225", PGPIPE_SQLSTATE_GIVE_UP },
        { "080060", PGPIPE_SQLSTATE_GIVE_UP },
        { NULL, PGPIPE_SQLSTATE_GIVE_UP },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *st = cases[i].st;
        int cls = pgpipe_sqlstate_class(st);
        PGT_CHECK_MSG(cls == cases[i].cls, "%s: class %d, want %d", st ? st : "NULL", cls,
                      cases[i].cls);
        /* the two predicates are views of the one classification */
        PGT_EQ_INT(pgpipe_sqlstate_is_transient(st), cases[i].cls == PGPIPE_SQLSTATE_RETRY);
        PGT_EQ_INT(pgpipe_sqlstate_is_data_error(st),
                   cases[i].cls == PGPIPE_SQLSTATE_DEAD_LETTER);
    }
}

PGT_TEST(exec, backoff_stays_in_bounds_over_many_draws)
{
    /* the shapes the library uses: pool connects, loader and claim workers,
    ** the migration lock wait, and a tiny one where cap/2 rounds */
    static const int shapes[][2] = { { 10, 500 }, { 100, 2000 }, { 20, 320 }, { 3, 7 } };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int base = shapes[s][0], max = shapes[s][1];
        for (int run = 0; run < 200; run++) {
            pgpipe_retry r;
            pgpipe_retry_init(&r, 40, base, max);
            int lo_seen = 0, hi_seen = 0;
            long long cap = base;
            for (int n = 0; n < 39; n++) {
                int d = pgpipe_retry_next_delay(&r);
                PGT_CHECK_MSG(d >= cap / 2 && d <= cap, "base %d max %d retry %d: %d not in [%lld, %lld]",
                              base, max, n + 1, d, cap / 2, cap);
                if (cap == max) {
                    lo_seen |= d < max * 3 / 4;
                    hi_seen |= d > max * 3 / 4;
                }
                cap = cap * 2 > max ? max : cap * 2;
            }
            PGT_EQ_INT(pgpipe_retry_next_delay(&r), -1);
            /* the jitter spreads over the range, not one end of it */
            if (max >= 100)
                PGT_CHECK_MSG(lo_seen && hi_seen, "base %d max %d: jitter stuck at one end", base,
                              max);
        }
    }
    /* no limit on attempts: the delay settles at max and stays there */
    pgpipe_retry r;
    pgpipe_retry_init(&r, INT_MAX, 10, 500);
    for (int n = 0; n < 10000; n++) {
        int d = pgpipe_retry_next_delay(&r);
        PGT_CHECK(d >= 5 && d <= 500);
        if (n > 10)
            PGT_CHECK(d >= 250);
    }
}

PGT_TEST(exec, exec_reports_sqlstate_and_context)
{
    PGconn *c = pgt_connect();
    pgpipe_error e;
    PGresult *r = (PGresult *)1;

    /* success hands the result over */
    PGT_OK(pp_exec(c, "SELECT 41 + 1", 0, NULL, &r, &e, "adding"));
    PGT_CHECK(r != NULL);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    const char *v[1] = { "7" };
    PGT_OK(pp_exec(c, "SELECT $1::int * 6", 1, v, &r, &e, "multiplying"));
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "42");
    PQclear(r);
    PGT_OK(pp_exec(c, "SET application_name = 'exec_t'; SELECT 1", 0, NULL, NULL, &e, "two"));

    /* an unknown table: message with context, SQLSTATE, class give-up */
    PGT_EQ_INT(pp_exec(c, "SELECT * FROM exec_t_no_such_table", 0, NULL, &r, &e,
                       "reading the thing"), PGPIPE_DB);
    PGT_CHECK(r == NULL);
    PGT_EQ_INT(e.code, PGPIPE_DB);
    PGT_EQ_STR(e.sqlstate, "42P01");
    PGT_CONTAINS(e.message, "reading the thing: relation \"exec_t_no_such_table\" does not exist");
    PGT_EQ_INT(pgpipe_sqlstate_class(e.sqlstate), PGPIPE_SQLSTATE_GIVE_UP);

    /* bad data in a parameter: dead-letter */
    v[0] = "not a number";
    PGT_EQ_INT(pp_exec(c, "SELECT $1::int", 1, v, NULL, &e, "casting"), PGPIPE_DB);
    PGT_EQ_STR(e.sqlstate, "22P02");
    PGT_CONTAINS(e.message, "casting: invalid input syntax for type integer");
    PGT_EQ_INT(pgpipe_sqlstate_class(e.sqlstate), PGPIPE_SQLSTATE_DEAD_LETTER);

    /* prepared statements: preparing twice is fine, running reports errors */
    PGT_OK(pp_prepare(c, "exec_t_div", "SELECT 10 / $1::int", &e, "preparing"));
    PGT_OK(pp_prepare(c, "exec_t_div", "SELECT 10 / $1::int", &e, "preparing"));
    v[0] = "5";
    PGT_OK(pp_exec_prepared(c, "exec_t_div", 1, v, &r, &e, "dividing"));
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "2");
    PQclear(r);
    v[0] = "0";
    PGT_EQ_INT(pp_exec_prepared(c, "exec_t_div", 1, v, &r, &e, "dividing"), PGPIPE_DB);
    PGT_EQ_STR(e.sqlstate, "22012");
    PGT_CONTAINS(e.message, "dividing: division by zero");
    PGT_EQ_INT(pp_prepare(c, "exec_t_bad", "SELEC 1", &e, "preparing the handler"), PGPIPE_DB);
    PGT_EQ_STR(e.sqlstate, "42601");
    PGT_CONTAINS(e.message, "preparing the handler: syntax error");

    /* COPY FROM STDIN: started, or the reason it could not be */
    PGT_OK(pp_exec(c, "CREATE TEMP TABLE exec_t_copy (x int)", 0, NULL, NULL, &e, "create"));
    PGT_OK(pp_copy_in_start(c, "COPY exec_t_copy FROM STDIN", &e, "copying"));
    PGT_EQ_INT(PQputCopyData(c, "7\n", 2), 1);
    PGT_EQ_INT(PQputCopyEnd(c, NULL), 1);
    PGT_OK(pp_exec_check(c, PQgetResult(c), NULL, &e, "ending the copy"));
    PGT_CHECK(PQgetResult(c) == NULL);
    PGT_OK(pp_exec(c, "SELECT sum(x) FROM exec_t_copy", 0, NULL, &r, &e, "sum"));
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "7");
    PQclear(r);
    PGT_EQ_INT(pp_copy_in_start(c, "COPY exec_t_no_such_table FROM STDIN", &e, "copying"),
               PGPIPE_DB);
    PGT_EQ_STR(e.sqlstate, "42P01");
    PGT_CONTAINS(e.message, "copying: relation");

    /* a failed statement inside a transaction: rolled back after */
    PGT_OK(pp_exec(c, "BEGIN", 0, NULL, NULL, &e, "begin"));
    PGT_EQ_INT(pp_exec(c, "SELECT 1/0", 0, NULL, NULL, &e, "in a transaction"), PGPIPE_DB);
    PGT_EQ_INT(PQtransactionStatus(c), PQTRANS_INERROR);
    pp_rollback_open(c);
    PGT_EQ_INT(PQtransactionStatus(c), PQTRANS_IDLE);
    pp_rollback_open(c); /* nothing open: nothing sent */
    PGT_EQ_INT(PQtransactionStatus(c), PQTRANS_IDLE);

    /* a lost connection is retry (08006), however the server said it */
    PGconn *killer = pgt_connect();
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(c));
    PQclear(PGT_EXEC(killer, sql));
    PQfinish(killer);
    PGT_EQ_INT(pp_exec(c, "SELECT 1", 0, NULL, NULL, &e, "after the kill"), PGPIPE_DB);
    PGT_CONTAINS(e.message, "after the kill: ");
    PGT_EQ_INT(pgpipe_sqlstate_class(e.sqlstate), PGPIPE_SQLSTATE_RETRY);
    /* err may be NULL: nothing to report, still a failure */
    PGT_EQ_INT(pp_exec(c, "SELECT 1", 0, NULL, NULL, NULL, NULL), PGPIPE_DB);
    PQfinish(c);
}

PGT_TEST(exec, connect_failure_classes)
{
    /* nobody listens on this port: the server may be starting, so retry */
    PGconn *c = PQconnectdb("host=127.0.0.1 port=1 dbname=x connect_timeout=5");
    PGT_CHECK(PQstatus(c) != CONNECTION_OK);
    PGT_EQ_INT(pp_connect_failure_class(c), PGPIPE_SQLSTATE_RETRY);
    PQfinish(c);

    /* a database that does not exist will not appear by waiting */
    char dsn[1024];
    snprintf(dsn, sizeof dsn, "%s dbname=exec_t_no_such_database", pgt_dsn());
    c = PQconnectdb(dsn);
    PGT_CHECK(PQstatus(c) != CONNECTION_OK);
    PGT_EQ_INT(pp_connect_failure_class(c), PGPIPE_SQLSTATE_GIVE_UP);
    PQfinish(c);

    c = PQconnectdb("bogus_option=1");
    PGT_EQ_INT(pp_connect_failure_class(c), PGPIPE_SQLSTATE_GIVE_UP);
    PQfinish(c);
    PGT_EQ_INT(pp_connect_failure_class(NULL), PP_CONNECT_UNKNOWN);
}

