/* Regression tests for bugs the chaos work (test/chaos/, make chaos) found in
** the loader and the claimer. The chaos run itself is test/sh/chaos.sh. */
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
PGT_TEST(chaos, same_load_started_twice_at_once_loads_once)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "SET client_min_messages = warning"));
    pgpipe_error err;
    pgpipe_error_clear(&err);
    PGT_OK(pgpipe_schema_install(c, NULL, &err));
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
            int rc = pgpipe_loader_open(&o, &l);
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
