/*
** Security tests (issue 11, point 3): SQL injection through every name and
** value the library takes (loader target and column mapping, source names,
** event types, load keys, NOTIFY channels, claimer table and filters,
** dead-letter table and filters, replay target, migration history table,
** scope and file names, worker channel) and passwords from connection
** strings in errors and log lines. Each hostile text names a canary table
** that must survive: the text is either refused with a clear error or quoted
** (sent as a parameter) and stored as it was given.
** Each test's group is the component it attacks (copy, claim, dlq, migrate,
** schema, util); `T=security` selects this file's tests.
*/

/* Hostile texts; %s is the canary table. */
static const char *const sec_evil_fmt[] = {
    "x\"; DROP TABLE %s; --",
    "x'); DROP TABLE %s; --",
    "x'; DROP TABLE %s; --",
    "x\\'; DROP TABLE %s; --",
    "$$; DROP TABLE %s; --",
    "x\nDROP TABLE %s;\n--",
    "\"x\".\"y\"; DROP TABLE %s",
    "s\xc3\xbc\xc3\x9f\"; DROP TABLE %s; -- \xe2\x98\x83",
    "x*/; DROP TABLE %s; /*",
    "x\"\"; DROP TABLE %s; --",
};
#define SEC_NEVIL ((int)(sizeof sec_evil_fmt / sizeof sec_evil_fmt[0]))

static void sec_evil(char *out, size_t n, int i, const char *canary)
{
    snprintf(out, n, sec_evil_fmt[i], canary);
}

/* A connection with the built-in schema and a canary table of one row. */
static PGconn *sec_setup(const char *canary)
{
    PGconn *c = pgt_db_open();
    pgt_db_table(c, canary, "(alive int)");
    char sql[300];
    snprintf(sql, sizeof sql, "INSERT INTO %s VALUES (1)", canary);
    PQclear(PGT_EXEC(c, sql));
    return c;
}

static void sec_canary_alive_at(const char *file, int line, PGconn *c, const char *canary)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", canary);
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || strcmp(PQgetvalue(r, 0, 0), "1") != 0) {
        pgt_fail_prefix(file, line);
        fprintf(stderr, "the canary table %s is gone or changed: %s\n", canary,
                PQresultErrorMessage(r));
        PQclear(r);
        pgt_end_fail();
    }
    PQclear(r);
}
#define SEC_CANARY_ALIVE(c, canary) sec_canary_alive_at(__FILE__, __LINE__, (c), (canary))

static long long sec_count(PGconn *c, const char *sql, int n, const char *const *vals)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, vals, NULL, NULL, 0);
    PGT_CHECK_MSG(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static const char sec_rec[] = "{\"event_type\":\"e\",\"k\":1}\n";

/* Loader: the target table, the column names of a mapping. */
PGT_TEST(copy, security_target_and_columns)
{
    const char *canary = "sec_canary_ld";
    PGconn *c = sec_setup(canary);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS sec_ld_t; CREATE TABLE sec_ld_t (a text, b text)"));
    for (int i = 0; i < SEC_NEVIL; i++) {
        char evil[200];
        sec_evil(evil, sizeof evil, i, canary);
        /* as the target table */
        pgpipe_loader_options o;
        pgpipe_loader_options_init(&o);
        o.conninfo = pgt_dsn();
        o.install_schema = 0;
        o.target = evil;
        pgpipe_load_column cols[2] = { { "a", "k", NULL, 0 }, { "b", NULL, "v", 0 } };
        o.columns = cols;
        o.ncolumns = 2;
        pgpipe_loader *l = NULL;
        int rc = pgpipe_loader_open(&l, &o);
        if (rc == PGPIPE_OK)
            rc = pgpipe_loader_feed(l, sec_rec, sizeof sec_rec - 1);
        if (rc == PGPIPE_OK)
            rc = pgpipe_loader_finish(l);
        PGT_CHECK_MSG(rc != PGPIPE_OK, "target %s was accepted", evil);
        PGT_CHECK_MSG(*pgpipe_errmsg(l) != '\0', "no message for target %s", evil);
        pgpipe_loader_close(l);
        SEC_CANARY_ALIVE(c, canary);
        /* as a column name */
        o.target = "sec_ld_t";
        cols[1].column = evil;
        l = NULL;
        rc = pgpipe_loader_open(&l, &o);
        if (rc == PGPIPE_OK)
            rc = pgpipe_loader_feed(l, sec_rec, sizeof sec_rec - 1);
        if (rc == PGPIPE_OK)
            rc = pgpipe_loader_finish(l);
        PGT_CHECK_MSG(rc != PGPIPE_OK, "column %s was accepted", evil);
        /* the server's error: no such column (42703), not a syntax error */
        if (rc == PGPIPE_DB)
            PGT_EQ_STR(pgpipe_errsqlstate(l), "42703");
        pgpipe_loader_close(l);
        SEC_CANARY_ALIVE(c, canary);
    }
    PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM sec_ld_t", 0, NULL), 0);
    PQfinish(c);
}

/* A table whose name really is hostile text is loaded into, quoted right. */
PGT_TEST(copy, security_into_hostile_table_name)
{
    const char *canary = "sec_canary_lq";
    PGconn *c = sec_setup(canary);
    char evil[200];
    sec_evil(evil, sizeof evil, 0, canary); /* x"; DROP TABLE ...; -- */
    char *q = PQescapeIdentifier(c, evil, strlen(evil));
    char sql[400];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS public.%s; CREATE TABLE public.%s (a text, \"b;\"\"c\" text)", q, q);
    PQfreemem(q);
    PQclear(PGT_EXEC(c, sql));
    char target[260];
    snprintf(target, sizeof target, "public.%s", evil);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.install_schema = 0;
    o.target = target;
    pgpipe_load_column cols[2] = { { "a", "k", NULL, 0 }, { "b;\"c", NULL, "x'); DROP TABLE t; --", 0 } };
    o.columns = cols;
    o.ncolumns = 2;
    pgpipe_loader *l = NULL;
    PGT_CHECK(pgpipe_loader_open(&l, &o) == PGPIPE_OK);
    PGT_OK(pgpipe_loader_feed(l, sec_rec, sizeof sec_rec - 1));
    PGT_CHECK_MSG(pgpipe_loader_finish(l) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.rows_loaded, 1);
    pgpipe_loader_close(l);
    q = PQescapeIdentifier(c, evil, strlen(evil));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s WHERE a = '1' AND \"b;\"\"c\" = $1", q);
    const char *v[1] = { cols[1].value };
    PGT_EQ_INT(sec_count(c, sql, 1, v), 1);
    snprintf(sql, sizeof sql, "DROP TABLE public.%s", q);
    PQfreemem(q);
    PQclear(PGT_EXEC(c, sql));
    SEC_CANARY_ALIVE(c, canary);
    PQfinish(c);
}

/* Loader values: source name, source and event type values, load key,
** NOTIFY channel, field names: stored or used exactly as given. */
PGT_TEST(copy, security_values)
{
    const char *canary = "sec_canary_lv";
    PGconn *c = sec_setup(canary);
    for (int i = 0; i < SEC_NEVIL; i++) {
        char evil[200], key[220];
        sec_evil(evil, sizeof evil, i, canary);
        snprintf(key, sizeof key, "%s/%d/%lld", evil, (int)getpid(), (long long)pgpipe_now_us());
        PQclear(PGT_EXEC(c, "DELETE FROM staging.raw_events WHERE source LIKE '%DROP TABLE sec_canary_lv%'"));
        pgpipe_loader_options o;
        pgpipe_loader_options_init(&o);
        o.conninfo = pgt_dsn();
        o.install_schema = 0;
        o.source_name = key;
        o.source_value = evil;
        o.event_type_value = evil;
        o.load_key = key;
        o.notify_channel = evil;
        const char *req[1] = { "k" };
        o.required = req;
        o.nrequired = 1;
        pgpipe_loader *l = NULL;
        PGT_CHECK(pgpipe_loader_open(&l, &o) == PGPIPE_OK);
        static const char recs[] = "{\"k\":1}\n{\"nok\":2}\n";
        PGT_OK(pgpipe_loader_feed(l, recs, sizeof recs - 1));
        PGT_CHECK_MSG(pgpipe_loader_finish(l) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
        pgpipe_load_summary s;
        pgpipe_loader_summary(l, &s);
        PGT_EQ_INT(s.rows_loaded, 1);
        PGT_EQ_INT(s.rows_dead, 1);
        pgpipe_loader_close(l);
        const char *v[2] = { evil, key };
        PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM staging.raw_events WHERE source = $1 AND "
                                "event_type = $1", 1, v), 1);
        PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM pgpipe.loads WHERE source = $1 AND "
                                "source_checksum = $1", 1, v + 1), 1);
        PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = $1",
                             1, v + 1), 1);
        PQclear(PGT_EXEC(c, "DELETE FROM staging.raw_events WHERE source LIKE '%DROP TABLE sec_canary_lv%'"));
        SEC_CANARY_ALIVE(c, canary);
    }
    /* hostile field names are names to look up, nothing more */
    char evil[200];
    sec_evil(evil, sizeof evil, 1, canary);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.install_schema = 0;
    o.event_type_field = evil;
    o.source_field = evil;
    o.payload_field = evil;
    o.notify_channel = "";
    pgpipe_loader *l = NULL;
    PGT_CHECK(pgpipe_loader_open(&l, &o) == PGPIPE_OK);
    PGT_OK(pgpipe_loader_feed(l, sec_rec, sizeof sec_rec - 1));
    PGT_OK(pgpipe_loader_finish(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.rows_dead, 1); /* the fields are missing: a dead letter */
    pgpipe_loader_close(l);
    SEC_CANARY_ALIVE(c, canary);
    PQfinish(c);
}

/* Claimer: the table and the dead-letter table are quoted, the filters are
** parameters. */
PGT_TEST(claim, security_table_and_filters)
{
    const char *canary = "sec_canary_cl";
    PGconn *c = sec_setup(canary);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS sec_cl_t; "
                        "CREATE TABLE sec_cl_t (LIKE staging.raw_events INCLUDING ALL)"));
    for (int i = 0; i < SEC_NEVIL; i++) {
        char evil[200];
        sec_evil(evil, sizeof evil, i, canary);
        pgpipe_claim_options co;
        pgpipe_claim_options_init(&co);
        co.table = evil;
        pgpipe_claimer *cl = NULL;
        int rc = pgpipe_claimer_open(&cl, c, &co);
        if (rc == PGPIPE_OK) {
            pgpipe_batch *b = NULL;
            rc = pgpipe_claim_next(cl, &b);
            if (rc == PGPIPE_ROW)
                pgpipe_claim_release(cl, b);
        }
        PGT_CHECK_MSG(rc != PGPIPE_OK && rc != PGPIPE_ROW && rc != PGPIPE_DONE,
                      "claimer table %s accepted", evil);
        PGT_CHECK(*pgpipe_errmsg(cl) != '\0');
        pgpipe_claimer_close(cl);
        if (PQtransactionStatus(c) != PQTRANS_IDLE)
            PQclear(PQexec(c, "ROLLBACK"));
        SEC_CANARY_ALIVE(c, canary);

        /* the dead-letter table */
        pgpipe_claim_options_init(&co);
        co.table = "sec_cl_t";
        co.dlq_table = evil;
        co.max_attempts = 1;
        cl = NULL;
        rc = pgpipe_claimer_open(&cl, c, &co);
        if (PQtransactionStatus(c) != PQTRANS_IDLE)
            PQclear(PQexec(c, "ROLLBACK"));
        pgpipe_claimer_close(cl);
        SEC_CANARY_ALIVE(c, canary);

        /* source and event_type filters: only rows with exactly that text */
        const char *v[1] = { evil };
        PGresult *r = PQexecParams(c, "INSERT INTO sec_cl_t (source, event_type, payload) VALUES "
                                      "($1, $1, '{}'), ('other', 'other', '{}')",
                                   1, NULL, v, NULL, NULL, 0);
        PGT_CHECK_MSG(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
        PQclear(r);
        pgpipe_claim_options_init(&co);
        co.table = "sec_cl_t";
        co.source = evil;
        co.event_type = evil;
        cl = NULL;
        PGT_CHECK_MSG(pgpipe_claimer_open(&cl, c, &co) == PGPIPE_OK, "%s", pgpipe_errmsg(cl));
        long long pending = -1;
        PGT_OK(pgpipe_claimer_pending(cl, &pending));
        PGT_EQ_INT(pending, 1);
        pgpipe_handler h = { NULL, NULL, "SELECT jsonb_array_length($1::jsonb)", NULL };
        int nrows = 0;
        PGT_CHECK_MSG(pgpipe_claimer_run_batch(cl, &h, &nrows) == PGPIPE_OK, "%s", pgpipe_errmsg(cl));
        PGT_EQ_INT(nrows, 1);
        PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, &nrows), PGPIPE_DONE);
        pgpipe_claimer_close(cl);
        PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM sec_cl_t WHERE processed AND source = $1", 1, v), 1);
        PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM sec_cl_t WHERE NOT processed", 0, NULL), 1);
        PQclear(PGT_EXEC(c, "DELETE FROM sec_cl_t"));
        SEC_CANARY_ALIVE(c, canary);
    }
    PQfinish(c);
}

/* Dead-letter filters and the replay target. */
PGT_TEST(dlq, security_filters_and_replay_target)
{
    const char *canary = "sec_canary_dl";
    PGconn *c = sec_setup(canary);
    for (int i = 0; i < SEC_NEVIL; i++) {
        char evil[200];
        sec_evil(evil, sizeof evil, i, canary);
        const char *v[1] = { evil };
        PGresult *r = PQexecParams(c, "INSERT INTO pgpipe.dead_letters (stage, source_name, "
                                      "raw_text, error_message) VALUES ('load', $1, '{}', $1), "
                                      "('load', $1 || 'x', '{}', 'other')",
                                   1, NULL, v, NULL, NULL, 0);
        PGT_CHECK_MSG(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
        PQclear(r);
        pgpipe_dlq_filter f;
        pgpipe_dlq_filter_init(&f);
        f.source = evil;
        f.error_like = evil;
        f.stage = "load";
        pgpipe_error err;
        PGresult *res = NULL;
        PGT_CHECK_MSG(pgpipe_dlq_list(c, &f, &res, &err) == PGPIPE_OK, "%s", err.message);
        PGT_EQ_INT(PQntuples(res), 1);
        PQclear(res);
        PGT_CHECK_MSG(pgpipe_dlq_counts(c, &f, &res, &err) == PGPIPE_OK, "%s", err.message);
        PQclear(res);
        /* each filter field hostile on its own: no match or a clear refusal */
        const char **fields[] = { &f.stage, &f.source, &f.error_like, &f.since, &f.until, &f.status };
        for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++) {
            pgpipe_dlq_filter_init(&f);
            *fields[k] = evil;
            res = NULL;
            int rc = pgpipe_dlq_list(c, &f, &res, &err);
            if (rc == PGPIPE_OK)
                PQclear(res);
            else
                PGT_CHECK(err.message[0] != '\0');
            SEC_CANARY_ALIVE(c, canary);
        }
        /* since/until are times or intervals: hostile text is refused by the server */
        pgpipe_dlq_filter_init(&f);
        f.since = evil;
        PGT_EQ_INT(pgpipe_dlq_list(c, &f, &res, &err), PGPIPE_PARSE);
        PGT_EQ_STR(err.sqlstate, "22007");
        /* replay into a hostile target: refused (not a table) */
        pgpipe_dlq_filter_init(&f);
        f.source = evil;
        long long ok = 0, bad = 0;
        PGT_CHECK(pgpipe_dlq_replay(c, &f, evil, NULL, &ok, &bad, &err) != PGPIPE_OK);
        PGT_CHECK(err.message[0] != '\0');
        PGT_EQ_INT(ok, 0);
        /* replay with a hostile channel name: a parameter of pg_notify */
        PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS sec_dl_t; "
                            "CREATE TABLE sec_dl_t (LIKE staging.raw_events INCLUDING ALL)"));
        PGT_CHECK_MSG(pgpipe_dlq_replay(c, &f, "sec_dl_t", evil, &ok, &bad, &err) == PGPIPE_OK,
                      "%s", err.message);
        PGT_EQ_INT(ok, 1);
        PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM sec_dl_t WHERE source = $1", 1, v), 1);
        /* purge: exactly the one with that source */
        pgpipe_dlq_filter_init(&f);
        f.source = evil;
        f.status = "any";
        long long purged = 0;
        PGT_OK(pgpipe_dlq_purge(c, &f, &purged, &err));
        PGT_EQ_INT(purged, 1);
        PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.dead_letters WHERE source_name LIKE '%DROP TABLE sec_canary_dl%'"));
        SEC_CANARY_ALIVE(c, canary);
    }
    PQfinish(c);
}

/* Migrations: the history table, the scope, file names and the folder. */
PGT_TEST(migrate, security_names)
{
    const char *canary = "sec_canary_mg";
    PGconn *c = sec_setup(canary);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/sec_mig_%d", pgt_tmpdir(), (int)getpid());
    PGT_CHECK(mkdir(dir, 0755) == 0);
    /* a file name with quotes, a semicolon and a newline-free comment marker */
    char path[900];
    snprintf(path, sizeof path, "%s/V1__x'); DROP TABLE %s; --.sql", dir, canary);
    FILE *fp = fopen(path, "w");
    PGT_CHECK(fp != NULL);
    fputs("CREATE TABLE IF NOT EXISTS sec_mig_made (i int);\n", fp);
    fclose(fp);
    for (int i = 0; i < SEC_NEVIL; i++) {
        char evil[200];
        sec_evil(evil, sizeof evil, i, canary);
        pgpipe_migrate_options mo;
        pgpipe_migrate_options_init(&mo);
        mo.dir = dir;
        mo.history_table = evil;
        pgpipe_migrator *m = NULL;
        int rc = pgpipe_migrator_open(&m, c, &mo);
        if (rc == PGPIPE_OK)
            rc = pgpipe_migrate_run(m);
        /* refused (quotes) or a table of that exact (quoted) name */
        if (rc != PGPIPE_OK)
            PGT_CHECK(*pgpipe_errmsg(m) != '\0');
        pgpipe_migrator_close(m);
        SEC_CANARY_ALIVE(c, canary);
        /* the scope is a value */
        pgpipe_migrate_options_init(&mo);
        mo.dir = dir;
        mo.history_table = "sec_mig.history";
        mo.scope = evil;
        m = NULL;
        rc = pgpipe_migrator_open(&m, c, &mo);
        if (rc == PGPIPE_OK)
            rc = pgpipe_migrate_run(m);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(m));
        pgpipe_migrator_close(m);
        const char *v[1] = { evil };
        PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM sec_mig.history WHERE scope = $1 AND "
                                "name LIKE 'x''); DROP TABLE%'", 1, v), 1);
        SEC_CANARY_ALIVE(c, canary);
    }
    PQclear(PGT_EXEC(c, "DROP SCHEMA sec_mig CASCADE; DROP TABLE sec_mig_made"));
    /* history tables of hostile (unquoted-safe) names that were created */
    PQclear(PGT_EXEC(c, "DO $$ DECLARE r record; BEGIN FOR r IN SELECT c.oid::regclass AS t FROM "
                        "pg_class c WHERE c.relkind = 'r' AND c.relname LIKE '%DROP TABLE sec_canary_mg%' "
                        "LOOP EXECUTE format('DROP TABLE %s', r.t); END LOOP; END $$"));
    SEC_CANARY_ALIVE(c, canary);
    unlink(path);
    rmdir(dir);
    PQfinish(c);
}

#ifndef PGPIPE_OMIT_THREADS
/* Workers: a hostile LISTEN channel is quoted; filters are parameters. */
PGT_TEST(claim, security_workers_channel)
{
    const char *canary = "sec_canary_wk";
    PGconn *c = sec_setup(canary);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS sec_wk_t; "
                        "CREATE TABLE sec_wk_t (LIKE staging.raw_events INCLUDING ALL); "
                        "INSERT INTO sec_wk_t (source, event_type, payload) "
                        "SELECT 's', 'e', '{}' FROM generate_series(1, 20)"));
    char evil[200];
    sec_evil(evil, sizeof evil, 0, canary);
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = 3;
    pgpipe_pool *pool = NULL;
    PGT_OK(pgpipe_pool_open(&pool, pgt_dsn(), &po));
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    wo.threads = 2;
    wo.channel = evil;
    wo.poll_ms = 50;
    wo.claim.table = "sec_wk_t";
    pgpipe_handler h = { NULL, NULL, "SELECT jsonb_array_length($1::jsonb)", NULL };
    pgpipe_workers *w = NULL;
    PGT_CHECK_MSG(pgpipe_workers_open(&w, pool, &h, &wo) == PGPIPE_OK, "%s", pgpipe_errmsg(w));
    PGT_CHECK_MSG(pgpipe_workers_run_until_empty(w, 30000) == PGPIPE_OK, "%s", pgpipe_errmsg(w));
    pgpipe_workers_stats ws;
    pgpipe_workers_stats_get(w, &ws);
    PGT_EQ_INT(ws.total.done, 20);
    pgpipe_workers_close(w);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    SEC_CANARY_ALIVE(c, canary);
    PQclear(PGT_EXEC(c, "DROP TABLE sec_wk_t"));
    PQfinish(c);
}
#endif

/* ---- passwords ------------------------------------------------------------ */

typedef struct sec_logbuf {
    char text[65536];
    size_t len;
} sec_logbuf;

static void sec_log_cb(void *ud, int level, const char *component, const char *message,
                       const pgpipe_log_field *fields, int nfields)
{
    sec_logbuf *b = ud;
    char line[4096];
    int n = pgpipe_log_format_line(line, sizeof line, 0, level, component, message, fields, nfields);
    if (n > 0 && b->len + (size_t)n + 2 < sizeof b->text) {
        memcpy(b->text + b->len, line, strlen(line));
        b->len += strlen(line);
        b->text[b->len++] = '\n';
        b->text[b->len] = '\0';
    }
}

static void sec_no_secret_at(const char *file, int line, const char *text, const char *secret)
{
    if (strstr(text, secret)) {
        pgt_fail_prefix(file, line);
        fprintf(stderr, "the password \"%s\" shows in: %s\n", secret, text);
        pgt_end_fail();
    }
}
#define SEC_NO_SECRET(text, secret) sec_no_secret_at(__FILE__, __LINE__, (text), (secret))

/* The host part of the test conninfo ("host=... port=...") for variants. */
static void sec_dsn_with(char *out, size_t n, const char *extra)
{
    snprintf(out, n, "%s %s", pgt_dsn(), extra);
}

PGT_TEST(util, security_passwords_not_in_errors_or_logs)
{
    static sec_logbuf lb;
    lb.len = 0;
    lb.text[0] = '\0';
    pgpipe_config_log(sec_log_cb, &lb);
    pgpipe_log_set_level(PGPIPE_LOG_DEBUG);
    char ci[1024];
    /* conninfos that fail in different ways, each with its own secret */
    struct { const char *conninfo; const char *secret; } cases[] = {
        { "host=127.0.0.1 port=1 user=u password=Secret1pw connect_timeout=2", "Secret1pw" },
        { "host=127.0.0.1 port=1 user=u password='Secret 2pw' connect_timeout=2", "Secret 2pw" },
        { "postgresql://u:Secret3pw@127.0.0.1:1/db?connect_timeout=2", "Secret3pw" },
        { "postgresql://u@127.0.0.1:1/db?password=Secret4pw&connect_timeout=2", "Secret4pw" },
        /* malformed: libpq echoes the bad part of the URI */
        { "postgresql://u:Secret5%zz@127.0.0.1:1/db", "Secret5" },
        { "postgresql://u:Secret6%00x@127.0.0.1:1/db", "Secret6" },
        { "postgresql://u:Secret7pw@[::1", "Secret7pw" },
        { "host=127.0.0.1 port=1 password=Secret8pw junk", "Secret8pw" },
        { "postgresql://u:Secret9pw@127.0.0.1:1/db?sslmode=bogus", "Secret9pw" },
        { NULL, "Secret10pw" }, /* the test server with a wrong database */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *conninfo = cases[i].conninfo;
        if (!conninfo) {
            sec_dsn_with(ci, sizeof ci, "dbname=sec_no_such_db password=Secret10pw");
            conninfo = ci;
        }
        const char *secret = cases[i].secret;
        /* the loader */
        pgpipe_loader_options o;
        pgpipe_loader_options_init(&o);
        o.conninfo = conninfo;
        o.max_retries = 0;
        pgpipe_loader *l = NULL;
        int rc = pgpipe_loader_open(&l, &o);
        if (rc == PGPIPE_OK)
            rc = pgpipe_loader_feed(l, sec_rec, sizeof sec_rec - 1);
        PGT_CHECK_MSG(rc != PGPIPE_OK, "case %zu connected", i);
        PGT_CHECK(*pgpipe_errmsg(l) != '\0');
        SEC_NO_SECRET(pgpipe_errmsg(l), secret);
        char fmt[2048];
        pgpipe_error_format(pgpipe_errinfo(l), fmt, sizeof fmt);
        SEC_NO_SECRET(fmt, secret);
        pgpipe_loader_close(l);
        /* the pool (opens a connection at once: min_idle 1) */
        pgpipe_pool_options po;
        pgpipe_pool_options_init(&po);
        po.min_idle = 1;
        po.connect_timeout_s = 2;
        pgpipe_pool *pool = NULL;
        rc = pgpipe_pool_open(&pool, conninfo, &po);
        if (rc == PGPIPE_OK) {
            pgpipe_conn *pc = NULL;
            pgpipe_error e;
            rc = pgpipe_pool_acquire_ex(pool, &pc, 2000, &e);
            PGT_CHECK_MSG(rc != PGPIPE_OK, "case %zu: the pool connected", i);
            SEC_NO_SECRET(e.message, secret);
        } else {
            SEC_NO_SECRET(pgpipe_errmsg(pool), secret);
        }
        pgpipe_pool_close(pool, NULL);
        /* the masking function on the raw libpq message */
        PGconn *pg = PQconnectdb(conninfo);
        char masked[2048];
        pgpipe_conninfo_mask(PQerrorMessage(pg), masked, sizeof masked);
        SEC_NO_SECRET(masked, secret);
        pgpipe_conninfo_mask(conninfo, masked, sizeof masked);
        SEC_NO_SECRET(masked, secret);
        PQfinish(pg);
        SEC_NO_SECRET(lb.text, secret);
    }
    PGT_CHECK_MSG(lb.len > 0, "no log line was captured");
    pgpipe_config_log(NULL, NULL);
}

/* Issue 20: every function in schema pgpipe runs with a fixed search_path
** (pg_catalog, pg_temp), so a future function without it fails here. */
PGT_TEST(schema, security_functions_pin_search_path)
{
    PGconn *c = sec_setup("sec_canary_sp");
    PGT_CHECK(sec_count(c, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgpipe'::regnamespace"
                           " AND prokind IN ('f', 'p')", 0, NULL) >= 6);
    PGresult *r = PGT_EXEC(c, "SELECT string_agg(oid::regprocedure::text, ', ') FROM pg_proc"
                              " WHERE pronamespace = 'pgpipe'::regnamespace AND prokind IN ('f', 'p')"
                              " AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (proconfig),"
                              " false)");
    PGT_CHECK_MSG(PQgetisnull(r, 0, 0), "functions without SET search_path: %s",
                  PQgetvalue(r, 0, 0));
    PQclear(r);
    PQfinish(c);
}

/* Issue 20: a hostile search_path does not hijack what pgpipe functions
** call. Schema evil holds functions with closer argument types than the
** built-ins the bodies use (to_char(date, text) in create_partitions,
** format(text, regclass) in dlq_replay); each logs its call. */
PGT_TEST(schema, security_hostile_search_path_not_followed)
{
    PGconn *c = sec_setup("sec_canary_hsp");
    PQclear(PGT_EXEC(c,
        "DROP SCHEMA IF EXISTS sec_evil CASCADE; CREATE SCHEMA sec_evil;"
        " CREATE TABLE sec_evil.calls (fn text);"
        " CREATE FUNCTION sec_evil.to_char(date, text) RETURNS text LANGUAGE sql AS"
        "  $$INSERT INTO sec_evil.calls VALUES ('to_char') RETURNING 'hijacked'$$;"
        " CREATE FUNCTION sec_evil.format(text, regclass) RETURNS text LANGUAGE sql AS"
        "  $$INSERT INTO sec_evil.calls VALUES ('format') RETURNING 'SELECT 1'$$;"
        " DROP TABLE IF EXISTS staging.raw_events_p20010101;"
        " DROP TABLE IF EXISTS sec_hsp_t; CREATE TABLE sec_hsp_t (LIKE staging.raw_events INCLUDING ALL);"
        " INSERT INTO sec_hsp_t (source, event_type, payload, processed) VALUES ('s', 'e', '{}', true);"
        " DELETE FROM pgpipe.dead_letters WHERE source_table = 'sec_hsp_t';"
        " INSERT INTO pgpipe.dead_letters (stage, source_table, row_id, row_received_at, error_message)"
        "  SELECT 'process', 'sec_hsp_t', id, received_at, 'x' FROM sec_hsp_t"));
    /* the evil functions do win name resolution under that search_path */
    PQclear(PGT_EXEC(c, "SET search_path = sec_evil, public"));
    PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM (SELECT to_char(date '2001-01-01', 'YYYY')) x"
                            " WHERE to_char = 'hijacked'", 0, NULL), 1);
    PQclear(PGT_EXEC(c, "TRUNCATE sec_evil.calls"));
    PGT_EQ_INT(sec_count(c, "SELECT pgpipe.create_partitions(0, '2001-01-01')", 0, NULL), 1);
    PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM pg_class WHERE relname = 'raw_events_p20010101'"
                            " AND relnamespace = 'staging'::regnamespace", 0, NULL), 1);
    PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM pgpipe.dlq_replay((SELECT array_agg(id)"
                            " FROM pgpipe.dead_letters WHERE source_table = 'sec_hsp_t'),"
                            " 'sec_hsp_t') WHERE replayed", 0, NULL), 1);
    PGT_EQ_INT(sec_count(c, "SELECT count(*) FROM sec_hsp_t WHERE NOT processed", 0, NULL), 1);
    PGresult *r = PGT_EXEC(c, "SELECT coalesce(string_agg(fn, ', '), '') FROM sec_evil.calls");
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "");
    PQclear(r);
    PQclear(PGT_EXEC(c, "RESET search_path; DROP TABLE staging.raw_events_p20010101;"
                        " DROP SCHEMA sec_evil CASCADE; DROP TABLE sec_hsp_t"));
    SEC_CANARY_ALIVE(c, "sec_canary_hsp");
    PQfinish(c);
}
