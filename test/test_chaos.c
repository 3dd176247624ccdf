/* Regression tests for bugs the chaos work (test/chaos/, make chaos) found in
** the loader and the claimer, each in the group of the component it guards;
** `T=chaos` selects them and the chaos run itself (test/sh/chaos.sh). */
#include <signal.h>
#include <sys/wait.h>

static long long chaos_t_int(PGconn *c, const char *sql)
{
    PGresult *r = PGT_EXEC(c, sql);
    long long v = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

/* Two runs of the same load that start at the same moment, before either
** has registered it in pgpipe.loads: both looked for the load key, found
** nothing, and both inserted a load of their own, so every record was
** loaded twice (the load_batches key (load_id, seq) never clashed). The
** parent holds pgpipe.loads in EXCLUSIVE mode (reads go on, inserts wait)
** until both runs are waiting on a lock, so the window is wide open. */
PGT_TEST(copy, chaos_same_load_started_twice_at_once_loads_once)
{
    PGconn *c = pgt_db_open();
    char path[512], key[64], src[64], sql[512];
    snprintf(path, sizeof path, "%s/chaos_twice.%d.ndjson", pgt_tmpdir(), (int)getpid());
    snprintf(key, sizeof key, "chaos-twice-%d", (int)getpid());
    snprintf(src, sizeof src, "chaos_twice_%d", (int)getpid());
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    for (int i = 0; i < 250; i++)
        fprintf(f, "{\"event_type\":\"e\",\"n\":%d}\n", i);
    PGT_CHECK(fclose(f) == 0);
    char dsn[1024];
    snprintf(dsn, sizeof dsn, "%s application_name=%s", pgt_dsn(), src);
    PQclear(PGT_EXEC(c, "BEGIN; LOCK TABLE pgpipe.loads IN EXCLUSIVE MODE"));
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        PGT_CHECK(kids[k] >= 0);
        if (kids[k] == 0) {
            pgpipe_loader_options o;
            pgpipe_loader_options_init(&o);
            o.conninfo = dsn;
            o.install_schema = 0;
            o.load_key = key;
            o.source_value = src;
            o.batch_rows = 100;
            pgpipe_loader *l = NULL;
            int rc = pgpipe_loader_open(&l, &o);
            if (rc == PGPIPE_OK)
                rc = pgpipe_loader_load_file(l, path);
            if (rc != PGPIPE_OK)
                fprintf(stderr, "    loader %d: %s\n", k, pgpipe_errmsg(l));
            pgpipe_loader_close(l);
            _exit(rc == PGPIPE_OK ? 0 : 1);
        }
    }
    /* both runs are blocked: on the table lock, or one on the table and the
    ** other on whatever serializes the registration */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'"
             " AND wait_event_type IN ('Lock')", src);
    long long waiting = 0;
    for (int i = 0; i < 300 && waiting < 2; i++) {
        pgpipe_sleep_ms(50);
        PGconn *c2 = pgt_connect();
        waiting = chaos_t_int(c2, sql);
        PQfinish(c2);
    }
    PGT_EQ_INT(waiting, 2);
    PQclear(PGT_EXEC(c, "COMMIT"));
    for (int k = 0; k < 2; k++) {
        int st;
        waitpid(kids[k], &st, 0);
        PGT_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "loader %d status %d", k, st);
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.loads WHERE source_checksum = '%s'", key);
    PGT_EQ_INT(chaos_t_int(c, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", src);
    PGT_EQ_INT(chaos_t_int(c, sql), 250);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT payload->>'n') FROM staging.raw_events WHERE source = '%s'", src);
    PGT_EQ_INT(chaos_t_int(c, sql), 250);
    snprintf(sql, sizeof sql, "SELECT rows_read || '/' || rows_loaded || '/' || status FROM pgpipe.loads"
             " WHERE source_checksum = '%s'", key);
    PGresult *r = PGT_EXEC(c, sql);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "250/250/completed");
    PQclear(r);
    PQfinish(c);
}

/* A batch whose COMMIT was sent, the connection lost, and the commit still
** in flight on the server when the loader reconnects and looks: its
** load_batches row is not visible yet, so the batch is sent again, and the
** retry's load_batches insert waits for the in-flight commit and then fails
** with a duplicate key. That is the loader's own batch (same batch id): it
** must count as committed, not end the load with "duplicate key value"
** (found by make chaos: "loader 2: duplicate key value violates unique
** constraint load_batches_pkey"). Simulated: a child inserts the batch's
** load_batches row (its id taken from the loader) in an open transaction,
** the loader's backend is terminated mid-batch, and the child commits once
** the retry waits on its row. */
PGT_TEST(copy, chaos_own_commit_in_flight_during_retry_is_not_a_duplicate)
{
    PGconn *c = pgt_db_open();
    char app[64], dsn[1024], sql[600];
    snprintf(app, sizeof app, "chaos_inflight_%d", (int)getpid());
    snprintf(dsn, sizeof dsn, "%s application_name=%s", pgt_dsn(), app);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = dsn;
    o.format = PGPIPE_FORMAT_NDJSON;
    o.batch_rows = 100;
    o.source_value = app;
    o.connections = 1; /* batch 2 on the connection pgpipe_loader_conn() names */
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o));
    pp_buf in = { 0 };
    for (int i = 0; i < 150; i++)
        pp_buf_appendf(&in, "{\"event_type\":\"e\",\"n\":%d}\n", i);
    /* batch 1 commits; batch 2 (50 rows) is open */
    PGT_OK(pgpipe_loader_feed(l, in.data, in.len));
    PGT_EQ_INT(l->seq, 2);
    int fds[2];
    PGT_CHECK(pipe(fds) == 0);
    pid_t kid = fork();
    PGT_CHECK(kid >= 0);
    if (kid == 0) {
        close(fds[0]);
        PGconn *k = PQconnectdb(pgt_dsn());
        char q[600];
        snprintf(q, sizeof q, "BEGIN; INSERT INTO pgpipe.load_batches (load_id, seq, batch_id, rows_read,"
                 " rows_loaded) VALUES (%lld, 2, '%s', 50, 50)", l->load_id, l->cur->uuid_text);
        PGresult *r = PQexec(k, q);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok || write(fds[1], "i", 1) != 1)
            _exit(2);
        snprintf(q, sizeof q, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'"
                 " AND wait_event_type = 'Lock'", app);
        PGconn *w = PQconnectdb(pgt_dsn());
        for (int i = 0; i < 400; i++) {
            r = PQexec(w, q);
            int waiting = PQresultStatus(r) == PGRES_TUPLES_OK && atoi(PQgetvalue(r, 0, 0)) > 0;
            PQclear(r);
            if (waiting)
                break;
            pgpipe_sleep_ms(50);
        }
        r = PQexec(k, "COMMIT");
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        PQfinish(w);
        PQfinish(k);
        _exit(ok ? 0 : 3);
    }
    close(fds[1]);
    char ch;
    PGT_EQ_INT(read(fds[0], &ch, 1), 1);
    close(fds[0]);
    /* the connection is lost mid-batch */
    snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(pgpipe_loader_conn(l)));
    PQclear(PGT_EXEC(c, sql));
    int rc = pgpipe_loader_finish(l);
    int st;
    waitpid(kid, &st, 0);
    PGT_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %d", st);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "finish: %s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.records_read, 150);
    PGT_EQ_INT(s.rows_skipped, 0);
    /* batch 2 counts as this load's own (the simulated earlier attempt
    ** committed its bookkeeping row); the retry's rows were rolled back */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", app);
    PGT_EQ_INT(chaos_t_int(c, sql), 100);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.load_batches WHERE load_id = %lld", s.load_id);
    PGT_EQ_INT(chaos_t_int(c, sql), 2);
    pp_buf_free(&in);
    pgpipe_loader_close(l);
    PQfinish(c);
}
