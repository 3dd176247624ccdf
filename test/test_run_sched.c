/* Tests of the runner's schedules (src/run/run_sched.c) on the test
** cluster: each slot fired exactly once by two instances of one pipeline,
** the missed-slot policies after a 10-hour gap, overlap skip, task chains
** with retries and both failure policies, timeouts, lost firings, the run
** history's bound (1M rows, dropped by partition) and pgpipe_runs_list. */
#include <pthread.h>

typedef struct rst_runner {
    pgpipe_runner *r;
    pthread_t th;
    int rc;
} rst_runner;

static void *rst_main(void *arg)
{
    rst_runner *x = arg;
    x->rc = pgpipe_runner_run(x->r);
    return NULL;
}

/* A pipeline file under the test's temp dir; returns its path (static). */
static const char *rst_file(const char *name, const char *text)
{
    static char path[4][512];
    static int k;
    char *p = path[k++ & 3];
    snprintf(p, sizeof path[0], "%s/%s-%ld.pgpipe", pgt_tmpdir(), name, (long)getpid());
    FILE *f = fopen(p, "w");
    PGT_CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
    return p;
}

static void rst_start(rst_runner *x, const char *path, const char *instance)
{
    pgpipe_run_options o;
    pgpipe_run_options_init(&o);
    o.conninfo = pgt_dsn();
    o.instance = instance;
    o.sd_notify = 0;
    o.drain_timeout_ms = 1000;
    memset(x, 0, sizeof *x);
    int rc = pgpipe_runner_open(&x->r, path, &o);
    if (rc)
        fprintf(stderr, "    pgpipe_runner_open: %s\n", pgpipe_errmsg(x->r));
    PGT_OK(rc);
    PGT_CHECK(pthread_create(&x->th, NULL, rst_main, x) == 0);
}

static void rst_stop(rst_runner *x)
{
    pgpipe_runner_stop(x->r);
    pthread_join(x->th, NULL);
    if (x->rc)
        fprintf(stderr, "    pgpipe_runner_run: %s\n", pgpipe_errmsg(x->r));
    PGT_OK(x->rc);
    pgpipe_runner_close(x->r);
}

/* Poll sql (one number) until it reaches want, at most ms. */
static long long rst_wait(PGconn *c, const char *sql, long long want, int ms)
{
    long long v = 0;
    for (int waited = 0; waited <= ms; waited += 100) {
        if ((v = pgt_db_int(c, sql)) >= want)
            break;
        { struct timespec ts_ = { 0, 100000000L }; nanosleep(&ts_, NULL); }
    }
    return v;
}

/* One number from a query formatted like printf. */
static long long rst_int(PGconn *c, const char *fmt, ...) PP_PRINTF(2, 3);
static long long rst_int(PGconn *c, const char *fmt, ...)
{
    char sql[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return pgt_db_int(c, sql);
}

/* The test's pipeline name (PREFIX_PID) and its table public.NAME (COLS),
** made afresh. */
static void rst_names(PGconn *c, const char *prefix, const char *cols, char name[64],
                      char tbl[80])
{
    snprintf(name, 64, "%s_%ld", prefix, (long)getpid());
    snprintf(tbl, 80, "public.%s", name);
    pgt_db_table(c, tbl, cols);
}

PGT_TEST(run_sched, once_across_instances)
{
    PGconn *c = pgt_db_open();
    char name[64], sql[1024], text[1024];
    snprintf(name, sizeof name, "rs_once_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "(slot timestamptz, inst text)");
    char tbl[80];
    snprintf(tbl, sizeof tbl, "public.%s", name);
    pgt_db_table(c, tbl, sql);
    /* the body records the slot it runs for (pgpipe.slot) */
    snprintf(text, sizeof text,
             ".pipeline %s\n"
             ".schedule tick --every 1s\n"
             "INSERT INTO %s VALUES (current_setting('pgpipe.slot')::timestamptz, NULL);\n"
             ".end\n",
             name, tbl);
    const char *path = rst_file(name, text);
    rst_runner a, b;
    rst_start(&a, path, "a");
    rst_start(&b, path, "b");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", tbl);
    rst_wait(c, sql, 4, 8000);
    { struct timespec ts_ = { 0, 500000000L }; nanosleep(&ts_, NULL); }
    rst_stop(&a);
    rst_stop(&b);
    long long n = pgt_db_int(c, sql);
    PGT_CHECK_MSG(n >= 3, "only %lld firings in ~4 s", n);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT slot) FROM %s", tbl);
    PGT_EQ_INT(pgt_db_int(c, sql), n); /* no slot fired twice */
    snprintf(sql, sizeof sql,
             "SELECT extract(epoch FROM max(slot) - min(slot))::bigint + 1 FROM %s", tbl);
    PGT_EQ_INT(pgt_db_int(c, sql), n); /* and none skipped in between */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND status = 'ok'",
             name);
    PGT_EQ_INT(pgt_db_int(c, sql), n); /* one history row each */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND status <> 'ok'",
             name);
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    pgt_db_close(c);
}

PGT_TEST(run_sched, missed_policies)
{
    PGconn *c = pgt_db_open();
    char name[64], sql[2048], text[2048], tbl[80];
    snprintf(name, sizeof name, "rs_missed_%ld", (long)getpid());
    snprintf(tbl, sizeof tbl, "public.%s", name);
    pgt_db_table(c, tbl, "(sched text, slot timestamptz)");
    /* hourly slots: keep away from the top of the hour, where the current
    ** slot would still be on time (bounded: at most ~20 s) */
    for (int i = 0; i < 25; i++) {
        long long s = pgt_db_int(c, "SELECT extract(epoch FROM now())::bigint % 3600");
        if (s >= 10 && s < 3590)
            break;
        sleep(1);
    }
    pp_buf t = { 0 };
    pp_buf_appendf(&t, ".pipeline %s\n", name);
    const char *pol[3] = { "skip", "once", "all" };
    for (int i = 0; i < 3; i++)
        pp_buf_appendf(&t,
                       ".schedule s_%s --every 1h --missed %s\n"
                       "INSERT INTO %s SELECT schedule, running_slot FROM pgpipe.run_schedules "
                       "WHERE pipeline = '%s' AND schedule = 's_%s';\n"
                       ".end\n",
                       pol[i], pol[i], tbl, name, pol[i]);
    const char *path = rst_file(name, t.data);
    pp_buf_free(&t);
    (void)text;
    /* what a 10-hour outage leaves: last_slot 10 slots back; and a firing
    ** of an instance that died (a stale heartbeat) */
    snprintf(sql, sizeof sql,
             "DELETE FROM pgpipe.run_schedules WHERE pipeline = '%s';"
             "INSERT INTO pgpipe.run_schedules (pipeline, schedule, expr, tz, last_slot) "
             "SELECT '%s', 's_' || p, 'every 1h', 'UTC', date_trunc('hour', now()) - "
             "interval '10 hours' FROM unnest(ARRAY['skip','once','all']) p;"
             "INSERT INTO pgpipe.run_schedules (pipeline, schedule, expr, running_instance, "
             "running_since, running_slot) VALUES ('%s', 'ghost', 'every 1h', 'dead', "
             "now() - interval '1 minute', date_trunc('hour', now()));"
             "INSERT INTO pgpipe.run_instances (pipeline, instance, host, pid, version, "
             "heartbeat_at) VALUES ('%s', 'dead', 'h', 1, 'x', now() - interval '1 hour') "
             "ON CONFLICT DO NOTHING",
             name, name, name, name);
    PQclear(PGT_EXEC(c, sql));
    rst_runner a;
    rst_start(&a, path, "a");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE sched = 's_all'", tbl);
    rst_wait(c, sql, 10, 15000);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
             "status IN ('missed', 'lost')", name);
    rst_wait(c, sql, 4, 10000);
    rst_stop(&a);
    for (int i = 0; i < 3; i++) {
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                 "name = 's_%s' AND status = 'missed' AND rows = 10", name, pol[i]);
        PGT_CHECK_MSG(pgt_db_int(c, sql) == 1, "s_%s: no 'missed' row naming 10 slots", pol[i]);
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pgpipe.run_schedules WHERE pipeline = '%s' AND "
                 "schedule = 's_%s' AND last_slot = date_trunc('hour', now())", name, pol[i]);
        PGT_CHECK_MSG(pgt_db_int(c, sql) == 1, "s_%s: last_slot is not the current hour",
                      pol[i]);
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE sched = 's_skip'", tbl);
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM %s WHERE sched = 's_once' AND slot = date_trunc('hour', now())",
             tbl);
    PGT_EQ_INT(pgt_db_int(c, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE sched = 's_once'", tbl);
    PGT_EQ_INT(pgt_db_int(c, sql), 1);
    snprintf(sql, sizeof sql,
             "SELECT count(DISTINCT slot) FROM %s WHERE sched = 's_all' AND slot > "
             "date_trunc('hour', now()) - interval '10 hours'", tbl);
    PGT_EQ_INT(pgt_db_int(c, sql), 10);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE sched = 's_all'", tbl);
    PGT_EQ_INT(pgt_db_int(c, sql), 10);
    /* the dead instance's firing is recorded as lost and cleared */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND name = 'ghost' "
             "AND status = 'lost'", name);
    PGT_EQ_INT(pgt_db_int(c, sql), 1);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_schedules WHERE pipeline = '%s' AND "
             "running_instance IS NOT NULL", name);
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    pgt_db_close(c);
}

PGT_TEST(run_sched, overlap_skip)
{
    PGconn *c = pgt_db_open();
    char name[64], sql[1024], text[1024];
    snprintf(name, sizeof name, "rs_overlap_%ld", (long)getpid());
    snprintf(text, sizeof text,
             ".pipeline %s\n"
             ".schedule slow --every 1s\n"
             "SELECT pg_sleep(2.2);\n"
             ".end\n",
             name);
    const char *path = rst_file(name, text);
    rst_runner a, b;
    rst_start(&a, path, "a");
    rst_start(&b, path, "b");
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND status = 'ok'",
             name);
    rst_wait(c, sql, 2, 10000);
    rst_stop(&a);
    rst_stop(&b);
    PGT_CHECK(pgt_db_int(c, sql) >= 2);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
             "status = 'skipped'", name);
    char hist[1024];
    snprintf(hist, sizeof hist,
             "SELECT string_agg(instance || ' ' || status || ' ' || extract(epoch FROM slot)::bigint "
             "|| ' ' || to_char(started_at, 'SS.MS') || '-' || to_char(finished_at, 'SS.MS'), '; ' ORDER BY id) "
             "FROM pgpipe.run_history WHERE pipeline = '%s'", name);
    if (pgt_db_int(c, sql) < 2) {
        fprintf(stderr, "    history: %s\n", pgt_db_str(c, hist));
        PGT_CHECK(0);
    }
    /* never two bodies at once, on either instance. A firing run by the
    ** runner itself records its times in whole milliseconds (cut down),
    ** one run by pgpipe.run_fire in microseconds: a body that starts within
    ** the millisecond another one ended (its claim waited for that one's
    ** row and went on at its commit) can show a start up to 1 ms early. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history x JOIN pgpipe.run_history y ON "
             "x.id < y.id AND x.started_at + interval '1 ms' < y.finished_at AND "
             "y.started_at + interval '1 ms' < x.finished_at "
             "WHERE x.pipeline = '%s' AND y.pipeline = '%s' AND x.status <> 'skipped' AND "
             "y.status <> 'skipped'", name, name);
    if (pgt_db_int(c, sql) != 0) /* (seen once under ThreadSanitizer: the rows say how) */
        fprintf(stderr, "    history (instance status slot started-finished): %s\n",
                pgt_db_str(c, hist));
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    pgt_db_close(c);
}

PGT_TEST(run_sched, tasks_retries_timeout)
{
    PGconn *c = pgt_db_open();
    char name[64], sql[1024], text[2048];
    snprintf(name, sizeof name, "rs_tasks_%ld", (long)getpid());
    snprintf(text, sizeof text,
             ".pipeline %s\n"
             ".schedule src1 --every 1h\nSELECT 1;\n.end\n"
             ".task a1 --after src1\nSELECT 1;\n.end\n"
             ".task b1 --after a1 --retries 2 --backoff 100ms\nSELECT 1/0;\n.end\n"
             ".task c1 --after b1\nSELECT 1;\n.end\n"
             ".schedule src2 --every 1h\nSELECT 1;\n.end\n"
             ".task a2 --after src2\nSELECT 1;\n.end\n"
             ".task b2 --after a2 --retries 1 --backoff 100ms --on-failure continue\n"
             "SELECT 1/0;\n.end\n"
             ".task c2 --after b2\nSELECT 1;\n.end\n"
             ".schedule slow --every 1h --timeout 300ms\nSELECT pg_sleep(5);\n.end\n",
             name);
    const char *path = rst_file(name, text);
    for (int i = 0; i < 25; i++) { /* no hourly slot comes due meanwhile */
        long long s = pgt_db_int(c, "SELECT extract(epoch FROM now())::bigint % 3600");
        if (s >= 10 && s < 3570)
            break;
        sleep(1);
    }
    /* make every schedule's current slot come due at start: last_slot one
    ** hour back and the slot now on time is missed with --missed once */
    snprintf(sql, sizeof sql,
             "DELETE FROM pgpipe.run_schedules WHERE pipeline = '%s';"
             "INSERT INTO pgpipe.run_schedules (pipeline, schedule, expr, last_slot) SELECT "
             "'%s', s, 'every 1h', date_trunc('hour', now()) - interval '1 hour' FROM "
             "unnest(ARRAY['src1','src2','slow']) s",
             name, name);
    PQclear(PGT_EXEC(c, sql));
    rst_runner a;
    rst_start(&a, path, "a");
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
             "(name IN ('c1', 'c2', 'd') OR status = 'timeout')", name);
    rst_wait(c, sql, 3, 15000);
    rst_stop(&a);
    struct { const char *name, *status; int attempts; } want[] = {
        { "src1", "ok", 1 }, { "a1", "ok", 1 }, { "b1", "failed", 3 }, { "c1", "skipped", 0 },
        { "src2", "ok", 1 }, { "a2", "ok", 1 }, { "b2", "failed", 2 }, { "c2", "ok", 1 },
        { "slow", "timeout", 1 },
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND name = '%s' "
                 "AND status = '%s' AND attempts = %d", name, want[i].name, want[i].status,
                 want[i].attempts);
        PGT_CHECK_MSG(pgt_db_int(c, sql) == 1, "%s: no row with status %s, %d attempts",
                      want[i].name, want[i].status, want[i].attempts);
    }
    /* a task after a1 and a2 (after two schedules) would never run: the
    ** file's check refuses it (test/sh/run_check.sh) */
    snprintf(sql, sizeof sql,
             "SELECT sqlstate FROM pgpipe.run_history WHERE pipeline = '%s' AND name = 'b1'",
             name);
    PGT_EQ_STR(pgt_db_str(c, sql), "22012");
    /* pgpipe_runs_list filters */
    pgpipe_runs_filter f;
    memset(&f, 0, sizeof f);
    f.pipeline = name;
    f.status = "failed";
    f.since = "1 hour";
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    PGT_OK(pgpipe_runs_list(c, &f, &res, &e));
    PGT_EQ_INT(PQntuples(res), 2);
    PGT_EQ_INT(PQnfields(res), 11);
    PGT_EQ_STR(PQfname(res, 2), "name");
    PQclear(res);
    f.status = NULL;
    f.name = "c1";
    f.since = "2000-01-01";
    PGT_OK(pgpipe_runs_list(c, &f, &res, &e));
    PGT_EQ_INT(PQntuples(res), 1);
    PGT_EQ_STR(PQgetvalue(res, 0, 6), "skipped");
    PQclear(res);
    f.name = NULL;
    f.limit = 3;
    PGT_OK(pgpipe_runs_list(c, &f, &res, &e));
    PGT_EQ_INT(PQntuples(res), 3);
    PQclear(res);
    /* a since that is neither a time nor an interval is said, also when no
    ** run would be compared with it; an empty filter is not "any" */
    f.pipeline = "no such pipeline";
    f.since = "garbage";
    PGT_EQ_INT(pgpipe_runs_list(c, &f, &res, &e), PGPIPE_PARSE);
    PGT_CHECK(res == NULL);
    PGT_CONTAINS(e.message, "since \"garbage\" is not a time");
    f.since = "1 day ago";
    PGT_OK(pgpipe_runs_list(c, &f, &res, &e));
    PGT_EQ_INT(PQntuples(res), 0);
    PQclear(res);
    f.pipeline = "";
    PGT_EQ_INT(pgpipe_runs_list(c, &f, &res, &e), PGPIPE_MISUSE);
    PGT_CONTAINS(e.message, "pipeline is empty");
    pgt_db_close(c);
}

PGT_TEST(run_sched, history_bound)
{
    PGconn *c = pgt_db_fresh("pgpipe_t_runhist");
    pgt_db_install(c);
    /* 1M runs of 100 tasks over 40 days, each row expiring on its day */
    PQclear(PGT_EXEC(c, "SELECT pgpipe.run_history_partition(current_date + d) "
                        "FROM generate_series(0, 39) d"));
    PQclear(PGT_EXEC(c,
        "INSERT INTO pgpipe.run_history (pipeline, kind, name, slot, started_at, finished_at, "
        "status, attempts, instance, host, expires_on) "
        "SELECT 'p', 'task', 't' || (g % 100), NULL, now() + (g / 25000) * interval '1 day' + "
        "g * interval '1 ms', now(), CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'ok' END, 1, 'i', "
        "'h', current_date + g / 25000 FROM generate_series(0, 999999) g"));
    /* and a few rows that are still live on that day */
    PQclear(PGT_EXEC(c, "SELECT pgpipe.run_history_partition(current_date + 45)"));
    PQclear(PGT_EXEC(c,
        "INSERT INTO pgpipe.run_history (pipeline, kind, name, started_at, finished_at, status, "
        "instance, host, expires_on) SELECT 'p', 'schedule', 'live', now(), now(), 'ok', 'i', "
        "'h', current_date + 45 FROM generate_series(1, 10)"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.run_history"), 1000010);
    /* newest started_at of each task before: these must survive */
    PQclear(PGT_EXEC(c, "CREATE TEMP TABLE newest AS SELECT name, max(started_at) m "
                        "FROM pgpipe.run_history GROUP BY name"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT pgpipe.run_history_maintain(5, current_date + 40)"), 40);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.run_history"), 100 * 5 + 10);
    PGT_EQ_INT(pgt_db_int(c, "SELECT max(c) FROM (SELECT count(*) c FROM pgpipe.run_history "
                             "WHERE name <> 'live' GROUP BY name) x"), 5);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM newest n WHERE NOT EXISTS (SELECT 1 FROM "
                             "pgpipe.run_history h WHERE h.name = n.name AND h.started_at = n.m)"),
               0);
    /* only the live partition and the one the kept rows moved to remain */
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_inherits WHERE inhparent = "
                             "'pgpipe.run_history'::regclass"), 2);
    /* again the next day: the kept rows move on, nothing else changes */
    PGT_EQ_INT(pgt_db_int(c, "SELECT pgpipe.run_history_maintain(5, current_date + 41)"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.run_history"), 100 * 5 + 10);
    pgt_db_close(c);
}

PGT_TEST(run_sched, overlap_queue_replace)
{
    PGconn *c = pgt_db_open();
    char q[64], rp[64], sql[1024], text[1024];
    snprintf(q, sizeof q, "rs_queue_%ld", (long)getpid());
    snprintf(rp, sizeof rp, "rs_replace_%ld", (long)getpid());
    /* the first firing outlasts the next slot, which must wait for it; the
    ** rest are short, so no backlog builds up however late the stop comes
    ** (queue keeps one waiting firing: a longer backlog skips, by design) */
    snprintf(sql, sizeof sql, "CREATE SEQUENCE %s_n", q);
    PQclear(PGT_EXEC(c, sql));
    snprintf(text, sizeof text,
             ".pipeline %s\n.schedule s --every 1s --overlap queue\n"
             "SELECT pg_sleep(CASE WHEN nextval('%s_n') = 1 THEN 1.5 ELSE 0.1 END);\n.end\n",
             q, q);
    const char *pq = rst_file(q, text);
    snprintf(text, sizeof text,
             ".pipeline %s\n.schedule s --every 1s --overlap replace\nSELECT pg_sleep(30);\n"
             ".end\n", rp);
    const char *pr = rst_file(rp, text);
    rst_runner a, b;
    rst_start(&a, pq, "a");
    rst_start(&b, pr, "b");
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND status = 'ok'",
             q);
    rst_wait(c, sql, 3, 10000);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
             "sqlstate = '57014'", rp);
    rst_wait(c, sql, 2, 10000);
    rst_stop(&a);
    rst_stop(&b);
    /* queue: a firing waits for the running one instead of being skipped */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND status = 'ok'",
             q);
    PGT_CHECK(pgt_db_int(c, sql) >= 3);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
             "status = 'skipped'", q);
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    /* replace: each firing cancels the one before */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
             "sqlstate = '57014'", rp);
    PGT_CHECK(pgt_db_int(c, sql) >= 2);
    for (int i = 0; i < 2; i++) {
        const char *n = i ? rp : q;
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM pgpipe.run_history x JOIN pgpipe.run_history y ON "
                 "x.id < y.id AND x.started_at < y.finished_at AND y.started_at < x.finished_at "
                 "WHERE x.pipeline = '%s' AND y.pipeline = '%s' AND x.status <> 'skipped' AND "
                 "y.status <> 'skipped'", n, n);
        PGT_EQ_INT(pgt_db_int(c, sql), 0);
    }
    pgt_db_close(c);
}

PGT_TEST(run_sched, reload_failures_only)
{
    PGconn *c = pgt_db_open();
    char name[64], sql[1024], text[1024], tbl[80];
    rst_names(c, "rs_reload", "(s text)", name, tbl);
    snprintf(text, sizeof text,
             ".pipeline %s\n.history --failures-only\n"
             ".schedule one --every 1s\nINSERT INTO %s VALUES ('one');\n.end\n"
             ".schedule bad --every 1s\nSELECT 1/0;\n.end\n", name, tbl);
    const char *path = rst_file(name, text);
    rst_runner a;
    rst_start(&a, path, "a");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE s = 'one'", tbl);
    PGT_CHECK(rst_wait(c, sql, 1, 8000) >= 1);
    /* the next firing of each schedule, for the status page */
    pp_buf j = { 0 };
    run_sched_next_json(a.r, &j);
    PGT_CONTAINS(j.data, "{\"schedule\":\"one\",\"next\":\"20");
    PGT_CONTAINS(j.data, "{\"schedule\":\"bad\",\"next\":\"20");
    pp_buf_free(&j);
    /* the file changes: one and bad go, two comes */
    snprintf(text, sizeof text,
             ".pipeline %s\n.history --failures-only\n"
             ".schedule two --every 1s\nINSERT INTO %s VALUES ('two');\n.end\n", name, tbl);
    rst_file(name, text);
    PGT_OK(pgpipe_runner_reload(a.r));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE s = 'two'", tbl);
    PGT_CHECK(rst_wait(c, sql, 1, 8000) >= 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE s = 'one'", tbl);
    long long ones = pgt_db_int(c, sql);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE s = 'two'", tbl);
    rst_wait(c, sql, 3, 8000);
    rst_stop(&a);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE s = 'one'", tbl);
    PGT_CHECK(pgt_db_int(c, sql) <= ones + 1); /* at most one already claimed */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE s = 'two'", tbl);
    PGT_CHECK(pgt_db_int(c, sql) >= 3);
    /* --failures-only: the failures are there, no ok row */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND status = 'ok'",
             name);
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND name = 'bad' "
             "AND status = 'failed' AND sqlstate = '22012'", name);
    PGT_CHECK(pgt_db_int(c, sql) >= 1);
    pgt_db_close(c);
}

/* Transactional firings (pgpipe.run_fire): 60 plain-SQL schedules due at
** the same second fire in shared transactions, each in its own
** subtransaction: a failing body fails alone, and atomically (its first
** statement is undone with it); a schedule that cannot fire that way (a
** --timeout) fires beside them the other way; each slot once, with one
** history row. */
PGT_TEST(run_sched, tx_burst_isolated)
{
    PGconn *c = pgt_db_open();
    char name[64], sql[1024], tbl[80];
    rst_names(c, "rs_txb", "(n int, slot timestamptz)", name, tbl);
    pp_buf t = { 0 };
    pp_buf_appendf(&t, ".pipeline %s\n", name);
    for (int i = 0; i < 60; i++)
        pp_buf_appendf(&t,
                       ".schedule s%02d --every 1s\n"
                       "INSERT INTO %s VALUES (%d, current_setting('pgpipe.slot')::timestamptz);"
                       "\n.end\n",
                       i, tbl, i);
    pp_buf_appendf(&t, ".schedule bad --every 1s\nINSERT INTO %s VALUES (-1, now());\n"
                       "SELECT 1/0;\n.end\n", tbl);
    pp_buf_appendf(&t, ".schedule timed --every 1s --timeout 5s\n"
                       "INSERT INTO %s VALUES (100, now());\n.end\n", tbl);
    pp_buf_append(&t, "", 1);
    const char *path = rst_file(name, t.data);
    pp_buf_free(&t);
    rst_runner a;
    rst_start(&a, path, "a");
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT slot) FROM %s WHERE n = 0", tbl);
    rst_wait(c, sql, 3, 10000);
    rst_stop(&a);
    /* every schedule fired, each slot once */
    PGT_EQ_INT(rst_int(c, "SELECT count(DISTINCT n) FROM %s WHERE n BETWEEN 0 AND 59", tbl), 60);
    PGT_EQ_INT(rst_int(c,
                       "SELECT count(*) FROM (SELECT n, slot FROM %s WHERE n BETWEEN 0 AND 59 "
                       "GROUP BY 1, 2 HAVING count(*) > 1 OR slot IS NULL) d",
                       tbl),
               0);
    PGT_CHECK(rst_int(c, "SELECT count(*) FROM %s WHERE n = 100", tbl) >= 2);
    /* the failing body fails alone and whole: its INSERT is undone */
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM %s WHERE n = -1", tbl), 0);
    PGT_CHECK(rst_int(c,
                      "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                      "name = 'bad' AND status = 'failed' AND sqlstate = '22012' AND "
                      "error LIKE '%%division by zero%%'",
                      name) >= 2);
    /* one ok history row per body run, none lost, no running mark left */
    PGT_EQ_INT(rst_int(c,
                       "SELECT (SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' "
                       "AND status = 'ok') - (SELECT count(*) FROM %s)",
                       name, tbl),
               0);
    PGT_EQ_INT(rst_int(c,
                       "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                       "status NOT IN ('ok', 'failed')",
                       name),
               0);
    PGT_EQ_INT(rst_int(c,
                       "SELECT count(*) FROM pgpipe.run_schedules WHERE pipeline = '%s' AND "
                       "running_instance IS NOT NULL",
                       name),
               0);
    pgt_db_close(c);
}

/* The crash window: a firing whose transaction dies mid-body (its backend
** terminated, as a crash of the server or of the runner's host would end
** it) left nothing, so its slot fires again, once, on one of the two
** instances; no slot twice, none missing, no "lost" row. */
PGT_TEST(run_sched, tx_killed_firing_fires_again)
{
    PGconn *c = pgt_db_open();
    char name[64], sql[1024], text[1024], tbl[80];
    rst_names(c, "rs_txk", "(slot timestamptz, inst text)", name, tbl);
    snprintf(text, sizeof text,
             ".pipeline %s\n"
             ".schedule s --every 2s\n"
             "INSERT INTO %s VALUES (current_setting('pgpipe.slot')::timestamptz, NULL);\n"
             "SELECT pg_sleep(0.6);\n"
             ".end\n",
             name, tbl);
    const char *path = rst_file(name, text);
    rst_runner a, b;
    rst_start(&a, path, "a");
    rst_start(&b, path, "b");
    /* a firing asleep in its body: end its backend */
    snprintf(sql, sizeof sql,
             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
             "wait_event = 'PgSleep' AND query LIKE '%%pgpipe.run_fire(%%' AND "
             "pid <> pg_backend_pid() AND EXISTS (SELECT 1 FROM pgpipe.run_schedules WHERE "
             "pipeline = '%s')", name);
    long long killed = 0;
    for (int i = 0; i < 100 && !killed; i++) {
        killed = pgt_db_int(c, sql);
        if (!killed) {
            struct timespec ts_ = { 0, 50000000L };
            nanosleep(&ts_, NULL);
        }
    }
    PGT_CHECK_MSG(killed == 1, "no firing to kill (%lld)", killed);
    long long at_kill = pgt_db_int(c, "SELECT extract(epoch FROM now())::bigint");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE slot > to_timestamp(%lld)", tbl,
             at_kill);
    rst_wait(c, sql, 2, 12000);
    rst_stop(&a);
    rst_stop(&b);
    long long n = rst_int(c, "SELECT count(*) FROM %s", tbl);
    if (n < 3) { /* what happened, for the failure's report */
        snprintf(sql, sizeof sql,
                 "SELECT string_agg(format('%%s %%s %%s %%s', extract(epoch FROM slot)::bigint, "
                 "instance, status, error), '; ' ORDER BY started_at) FROM pgpipe.run_history "
                 "WHERE pipeline = '%s'", name);
        fprintf(stderr, "    killed at %lld; history: %s\n", at_kill, pgt_db_str(c, sql));
        snprintf(sql, sizeof sql,
                 "SELECT string_agg(extract(epoch FROM slot)::bigint::text, ' ' ORDER BY slot) "
                 "FROM %s", tbl);
        fprintf(stderr, "    rows: %s\n", pgt_db_str(c, sql));
    }
    PGT_CHECK_MSG(n >= 3, "only %lld firings", n);
    PGT_EQ_INT(rst_int(c, "SELECT count(DISTINCT slot) FROM %s", tbl), n); /* none twice */
    /* none missing, the killed one included */
    PGT_EQ_INT(rst_int(c,
                       "SELECT extract(epoch FROM max(slot) - min(slot))::bigint / 2 + 1 FROM %s",
                       tbl),
               n);
    PGT_EQ_INT(rst_int(c,
                       "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                       "status = 'ok'",
                       name),
               n);
    PGT_EQ_INT(rst_int(c,
                       "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                       "status IN ('lost', 'missed')",
                       name),
               0);
    pgt_db_close(c);
}

/* A body that leaves a transaction open (BEGIN without COMMIT) fails, saying
** so: its work is rolled back, its history row is written (not rolled back
** with it) and the schedule is not left marked running. What a body SETs
** (a setting, a role) reaches neither its tasks, the history rows nor the
** next firings on the pooled connection; the tasks still read pgpipe.slot. */
PGT_TEST(run_sched, body_session_cleanup)
{
    PGconn *c = pgt_db_open();
    char name[64], tbl[80], sql[1024], text[2048], role[64];
    rst_names(c, "rs_clean", "(k text, v text, who text)", name, tbl);
    snprintf(role, sizeof role, "rs_clean_r_%ld", (long)getpid());
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s; CREATE ROLE %s NOLOGIN; "
             "GRANT INSERT ON %s TO %s", role, role, tbl, role);
    PQclear(PQexec(c, sql));
    snprintf(text, sizeof text,
             ".pipeline %s\n"
             ".schedule open --every 1s --timeout 5s\n"
             "BEGIN;\nINSERT INTO %s VALUES ('open', NULL, NULL);\n.end\n"
             ".schedule leak --every 1s --timeout 5s\n"
             "INSERT INTO %s VALUES ('leak', current_setting('rs_clean.x', true), current_user);\n"
             "SET rs_clean.x TO 'leaked';\nSET ROLE %s;\n.end\n"
             ".task after --after leak\n"
             "INSERT INTO %s VALUES ('task', current_setting('rs_clean.x', true) || "
             "coalesce(current_setting('pgpipe.slot', true), 'no slot'), current_user);\n.end\n",
             name, tbl, tbl, role, tbl);
    const char *path = rst_file(name, text);
    rst_runner a;
    rst_start(&a, path, "a");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE k = 'leak'", tbl);
    rst_wait(c, sql, 3, 10000);
    rst_stop(&a);
    PGT_CHECK(pgt_db_int(c, sql) >= 3);
    /* the open transaction's work is gone, its firings are failed rows */
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM %s WHERE k = 'open'", tbl), 0);
    PGT_CHECK(rst_int(c, "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                      "name = 'open' AND status = 'failed' AND error LIKE "
                      "'the body left a transaction open%%rolled back'", name) >= 2);
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                       "name = 'open' AND status <> 'failed' AND status <> 'missed'", name), 0);
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM pgpipe.run_schedules WHERE pipeline = '%s' "
                       "AND running_instance IS NOT NULL", name), 0);
    /* nothing the body SET is seen after it; its history rows are written */
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM %s WHERE v LIKE 'leaked%%' OR who = '%s'", tbl,
                       role), 0);
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM %s WHERE k = 'task' AND v LIKE 'no slot%%'",
                       tbl), 0);
    PGT_CHECK(rst_int(c, "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                      "name = 'leak' AND status = 'ok'", name) >= 3);
    PGT_CHECK(rst_int(c, "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                      "name = 'after' AND status = 'ok'", name) >= 3);
    snprintf(sql, sizeof sql, "DROP TABLE %s; DROP ROLE %s", tbl, role);
    PQclear(PQexec(c, sql));
    pgt_db_close(c);
}

/* A schedule a reload removes and a later reload adds back starts then, as
** a new one does: the slots passed while the file did not have it are not
** missed (its row, left from before, still had its old last slot). Two
** schedules: one plain (a transactional firing), one not. */
PGT_TEST(run_sched, reload_readded_starts_fresh)
{
    PGconn *c = pgt_db_open();
    char name[64], sql[1024], text[1024], tbl[80];
    rst_names(c, "rs_readd", "(s text)", name, tbl);
    snprintf(text, sizeof text,
             ".pipeline %s\n"
             ".schedule back --every 1s\nINSERT INTO %s VALUES ('back');\n.end\n"
             ".schedule slow --every 1s --timeout 10s\nINSERT INTO %s VALUES ('slow');\n.end\n"
             ".schedule stay --every 1s\nINSERT INTO %s VALUES ('stay');\n.end\n",
             name, tbl, tbl, tbl);
    char full[1024];
    snprintf(full, sizeof full, "%s", text);
    const char *path = rst_file(name, text);
    rst_runner a;
    rst_start(&a, path, "a");
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT s) FROM %s", tbl);
    PGT_CHECK(rst_wait(c, sql, 3, 8000) >= 3);
    snprintf(text, sizeof text,
             ".pipeline %s\n.schedule stay --every 1s\nINSERT INTO %s VALUES ('stay');\n.end\n",
             name, tbl);
    rst_file(name, text);
    PGT_OK(pgpipe_runner_reload(a.r));
    { struct timespec ts_ = { 8, 0 }; nanosleep(&ts_, NULL); } /* past the 5 s grace */
    rst_file(name, full);
    PGT_OK(pgpipe_runner_reload(a.r));
    long long before = rst_int(c, "SELECT count(*) FROM %s WHERE s = 'back'", tbl);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE s = 'back'", tbl);
    rst_wait(c, sql, before + 2, 8000);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE s = 'slow'", tbl);
    rst_wait(c, sql, 3, 8000);
    rst_stop(&a);
    PGT_CHECK(rst_int(c, "SELECT count(*) FROM %s WHERE s = 'back'", tbl) >= before + 2);
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                       "status = 'missed'", name), 0);
    pgt_db_close(c);
}

/* A firing whose instance died (or whose connection broke) left its
** schedule marked running; the next firing, on a live instance, takes the
** overlap lock the dead session let go and records the cut-short firing as
** lost before marking the row its own. (The dead-instance sweep never saw it
** then: by the time the instance's heartbeat was old, the mark was
** another's.) Here the mark is an instance whose heartbeat is fresh. */
PGT_TEST(run_sched, lost_firing_replaced_by_live_instance)
{
    PGconn *c = pgt_db_open();
    char name[64], sql[1024], text[1024];
    snprintf(name, sizeof name, "rs_lostlive_%ld", (long)getpid());
    snprintf(sql, sizeof sql,
             "DELETE FROM pgpipe.run_schedules WHERE pipeline = '%s';"
             "INSERT INTO pgpipe.run_instances (pipeline, instance, host, pid, version) VALUES "
             "('%s', 'ghost', 'h', 1, 'x') ON CONFLICT (pipeline, instance) DO UPDATE SET "
             "heartbeat_at = now(), stopped_at = NULL;"
             "INSERT INTO pgpipe.run_schedules (pipeline, schedule, expr, last_slot, "
             "running_instance, running_since, running_slot) VALUES ('%s', 'slow', 'every 1s', "
             "now(), 'ghost', now() - interval '3 s', date_trunc('second', now()) - interval "
             "'3 s')", name, name, name);
    PQclear(PGT_EXEC(c, sql));
    snprintf(text, sizeof text,
             ".pipeline %s\n.schedule slow --every 1s --timeout 10s\nSELECT 1;\n.end\n", name);
    const char *path = rst_file(name, text);
    rst_runner a;
    rst_start(&a, path, "a");
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND status = 'ok'",
             name);
    rst_wait(c, sql, 2, 8000);
    rst_stop(&a);
    PGT_CHECK(pgt_db_int(c, sql) >= 2);
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                       "status = 'lost' AND error = 'instance ghost stopped while running it' "
                       "AND slot IS NOT NULL", name), 1);
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                       "status = 'lost'", name), 1);
    pgt_db_close(c);
}

/* A body's rows are counted, not held: a SELECT of 700 MB leaves the
** process's peak memory well below that, and its rows are in the history.
** (Under AddressSanitizer the rows freed one by one still fill its
** quarantine, 256 MB by default, so the result is larger than that.) */
static long long rst_hwm_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6))
            kb = atoll(line + 6);
    if (f)
        fclose(f);
    return kb;
}

PGT_TEST(run_sched, body_rows_not_held)
{
    if (rst_hwm_kb() < 0)
        PGT_SKIP("no /proc/self/status");
    PGconn *c = pgt_db_open();
    char name[64], sql[1024], text[1024];
    snprintf(name, sizeof name, "rs_rows_%ld", (long)getpid());
    snprintf(text, sizeof text,
             ".pipeline %s\n.schedule big --every 1h --timeout 5m\n"
             "SELECT g, repeat('x', 1000) FROM generate_series(1, 700000) g;\n.end\n", name);
    snprintf(sql, sizeof sql,
             "DELETE FROM pgpipe.run_schedules WHERE pipeline = '%s';"
             "INSERT INTO pgpipe.run_schedules (pipeline, schedule, expr, last_slot) VALUES "
             "('%s', 'big', 'every 1h', date_trunc('hour', now()) - interval '1 hour')",
             name, name);
    PQclear(PGT_EXEC(c, sql));
    const char *path = rst_file(name, text);
    long long before = rst_hwm_kb();
    rst_runner a;
    rst_start(&a, path, "a");
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND name = 'big' "
             "AND status <> 'missed'", name);
    rst_wait(c, sql, 1, 60000);
    rst_stop(&a);
    long long grew = rst_hwm_kb() - before;
    PGT_EQ_INT(rst_int(c, "SELECT count(*) FROM pgpipe.run_history WHERE pipeline = '%s' AND "
                       "name = 'big' AND status = 'ok' AND rows = 700000", name), 1);
    PGT_CHECK_MSG(grew < 550 * 1024, "peak memory grew %lld kB for a 700 MB result", grew);
    pgt_db_close(c);
}
