/* Tests of the dead-letter operations (src/pipeline/dlq.c). */

static PGconn *dlq_t_setup(const char *target)
{
    PGconn *c = pgt_db_open();
    pgt_db_table(c, target, "(LIKE staging.raw_events INCLUDING ALL)");
    return c;
}

static long long dlq_t_scalar(PGconn *c, const char *sql)
{
    PGresult *r = PGT_EXEC(c, sql);
    long long v = PQntuples(r) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

/* Dead letters of stage 'load' from source name src: a full record object,
** a bare JSON value, and a CSV line (not JSON). */
static void dlq_t_load_letters(PGconn *c, const char *src)
{
    const char *v[1] = { src };
    PGresult *r = PQexecParams(c,
        "INSERT INTO pgpipe.dead_letters (stage, source_name, line_number, raw_text,"
        " error_message, sqlstate, event_type, last_failed_at) VALUES"
        " ('load', $1, 1, '{\"source\":\"web\",\"event_type\":\"click\",\"payload\":{\"a\":1}}',"
        "  'missing field', NULL, NULL, now()),"
        " ('load', $1, 2, '{\"b\":2}', 'bad event type', NULL, 'view', now() - interval '2 hours'),"
        " ('load', $1, 3, 'web,click,{oops', 'invalid JSON at column 11', '22P02', NULL,"
        "  now() - interval '3 days')",
        1, NULL, v, NULL, NULL, 0);
    PGT_CHECK_MSG(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
}

PGT_TEST(dlq, list_filter_get_counts)
{
    PGconn *c = dlq_t_setup("dlq_t_list");
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.dead_letters WHERE source_name = 'dlq_t_list.csv'"));
    dlq_t_load_letters(c, "dlq_t_list.csv");
    pgpipe_dlq_filter f;
    pgpipe_dlq_filter_init(&f);
    f.source = "dlq_t_list.csv";
    pgpipe_error err;
    PGresult *r;
    PGT_OK(pgpipe_dlq_list(c, &f, &r, &err));
    PGT_EQ_INT(PQntuples(r), 3);
    PGT_EQ_STR(PQfname(r, 7), "error_message");
    PGT_EQ_STR(PQgetvalue(r, 0, 7), "missing field"); /* newest first */
    long long id_json = strtoll(PQgetvalue(r, 2, 0), NULL, 10);
    PQclear(r);
    f.error_like = "INVALID json";
    PGT_OK(pgpipe_dlq_list(c, &f, &r, &err));
    PGT_EQ_INT(PQntuples(r), 1);
    PGT_EQ_STR(PQgetvalue(r, 0, 8), "22P02");
    PQclear(r);
    f.error_like = "'; DROP TABLE pgpipe.dead_letters; --"; /* a value, never SQL */
    PGT_OK(pgpipe_dlq_list(c, &f, &r, &err));
    PGT_EQ_INT(PQntuples(r), 0);
    PQclear(r);
    f.error_like = NULL;
    f.since = "-infinity";
    f.until = "now";
    f.stage = "load";
    f.limit = 2;
    PGT_OK(pgpipe_dlq_list(c, &f, &r, &err));
    PGT_EQ_INT(PQntuples(r), 2);
    PQclear(r);
    f.limit = 100;
    f.since = "2000-01-01";
    f.until = "yesterday";
    PGT_OK(pgpipe_dlq_list(c, &f, &r, &err)); /* only the 3-day-old one */
    PGT_EQ_INT(PQntuples(r), 1);
    PGT_EQ_STR(PQgetvalue(r, 0, 4), "3");
    PQclear(r);
    f.since = "not a time";
    PGT_EQ_INT(pgpipe_dlq_list(c, &f, &r, &err), PGPIPE_PARSE);
    PGT_EQ_STR(err.sqlstate, "22007");
    /* inspect one */
    PGT_OK(pgpipe_dlq_get(c, id_json, &r, &err));
    PGT_EQ_INT(PQntuples(r), 1);
    PGT_EQ_STR(PQgetvalue(r, 0, PQfnumber(r, "raw_text")), "web,click,{oops");
    PQclear(r);
    PGT_EQ_INT(pgpipe_dlq_get(c, -5, &r, &err), PGPIPE_DONE);
    /* counts by error */
    pgpipe_dlq_filter_init(&f);
    f.source = "dlq_t_list.csv";
    PGT_OK(pgpipe_dlq_counts(c, &f, &r, &err));
    PGT_EQ_INT(PQntuples(r), 3);
    PGT_EQ_STR(PQgetvalue(r, 0, 3), "1");
    PQclear(r);
    PQfinish(c);
}

PGT_TEST(dlq, replay_load_stage)
{
    PGconn *c = dlq_t_setup("dlq_t_rl");
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.dead_letters WHERE source_name = 'dlq_t_rl.ndjson'"));
    dlq_t_load_letters(c, "dlq_t_rl.ndjson");
    pgpipe_dlq_filter f;
    pgpipe_dlq_filter_init(&f);
    f.source = "dlq_t_rl.ndjson";
    long long ok = -1, bad = -1;
    pgpipe_error err;
    PGT_OK(pgpipe_dlq_replay(c, &f, "dlq_t_rl", NULL, &ok, &bad, &err));
    PGT_EQ_INT(ok, 2);
    PGT_EQ_INT(bad, 1);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM dlq_t_rl WHERE source = 'web' AND"
                               " event_type = 'click' AND payload = '{\"a\":1}' AND NOT processed"
                               " AND attempts = 0"), 1);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM dlq_t_rl WHERE source = 'dlq_t_rl.ndjson'"
                               " AND event_type = 'view' AND payload = '{\"b\":2}'"), 1);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name ="
                               " 'dlq_t_rl.ndjson' AND status = 'replayed' AND replay_count = 1"), 2);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name ="
                               " 'dlq_t_rl.ndjson' AND status = 'dead'"), 1);
    /* again: only the refused one is still dead, and it is refused again */
    PGT_OK(pgpipe_dlq_replay(c, &f, "dlq_t_rl", NULL, &ok, &bad, &err));
    PGT_EQ_INT(ok, 0);
    PGT_EQ_INT(bad, 1);
    PGT_EQ_INT(pgpipe_dlq_replay(c, &f, "no_such_table_dlq", NULL, &ok, &bad, &err), PGPIPE_DB);
    PGT_EQ_STR(err.sqlstate, "42P01");
    PQfinish(c);
}

static int dlq_t_fail_odd(void *ud, PGconn *conn, const pgpipe_event *ev, pgpipe_error *err)
{
    int *fail = ud;
    (void)conn;
    if (*fail && ev->id % 2)
        return pp_err(err, PGPIPE_ERROR, "odd %lld", ev->id);
    return PGPIPE_OK;
}

PGT_TEST(dlq, replay_process_stage_and_purge)
{
    PGconn *c = dlq_t_setup("dlq_t_rp");
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.dead_letters WHERE source_table = 'dlq_t_rp';"
                        " INSERT INTO dlq_t_rp (source, event_type, payload)"
                        " SELECT 'dlq_t_rp_src', 'e', jsonb_build_object('g', g)"
                        " FROM generate_series(1, 10) g"));
    pgpipe_claim_options o;
    pgpipe_claim_options_init(&o);
    o.table = "dlq_t_rp";
    o.max_attempts = 1;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    int fail = 1;
    pgpipe_handler h = { dlq_t_fail_odd, NULL, NULL, &fail };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table ="
                               " 'dlq_t_rp' AND stage = 'process' AND status = 'dead'"), 5);
    /* replay one */
    long long one = dlq_t_scalar(c, "SELECT min(id) FROM pgpipe.dead_letters WHERE"
                                    " source_table = 'dlq_t_rp'");
    pgpipe_dlq_filter f;
    pgpipe_dlq_filter_init(&f);
    f.id = one;
    long long ok, bad;
    pgpipe_error err;
    PGT_OK(pgpipe_dlq_replay(c, &f, "dlq_t_rp", NULL, &ok, &bad, &err));
    PGT_EQ_INT(ok, 1);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM dlq_t_rp WHERE NOT processed AND"
                               " attempts = 0 AND last_error IS NULL"), 1);
    /* replay the rest by filter (the event's source) */
    pgpipe_dlq_filter_init(&f);
    f.source = "dlq_t_rp_src";
    f.stage = "process";
    PGT_OK(pgpipe_dlq_replay(c, &f, "dlq_t_rp", NULL, &ok, &bad, &err));
    PGT_EQ_INT(ok, 4);
    PGT_EQ_INT(bad, 0);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM dlq_t_rp WHERE NOT processed"), 5);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM dlq_t_rp"), 10); /* same rows, no copies */
    fail = 0;
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM dlq_t_rp WHERE processed"), 10);
    pgpipe_claimer_close(cl);
    /* purge: an empty filter is refused; older-than keeps the new ones */
    pgpipe_dlq_filter_init(&f);
    f.status = NULL;
    long long n = -1;
    PGT_EQ_INT(pgpipe_dlq_purge(c, &f, &n, &err), PGPIPE_MISUSE);
    PGT_CONTAINS(err.message, "empty filter");
    f.source = "dlq_t_rp_src";
    f.until = "yesterday";
    PGT_OK(pgpipe_dlq_purge(c, &f, &n, &err));
    PGT_EQ_INT(n, 0);
    f.until = NULL;
    f.status = "replayed";
    PGT_OK(pgpipe_dlq_purge(c, &f, &n, &err));
    PGT_EQ_INT(n, 5);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                               " source_table = 'dlq_t_rp'"), 0);
    PQfinish(c);
}

typedef struct dlq_t_log {
    int warns;
    char msg[256];
    char count[32];
} dlq_t_log;

static void dlq_t_logfn(void *ud, int level, const char *component, const char *message,
                        const pgpipe_log_field *fields, int nfields)
{
    dlq_t_log *l = ud;
    if (level >= PGPIPE_LOG_WARN && strcmp(component, "dlq") == 0) {
        l->warns++;
        snprintf(l->msg, sizeof l->msg, "%s", message);
        for (int i = 0; i < nfields; i++)
            if (strcmp(fields[i].key, "new_dead_letters") == 0)
                snprintf(l->count, sizeof l->count, "%s", fields[i].value);
    }
}

PGT_TEST(dlq, growth_alert_logs_and_notifies)
{
    PGconn *c = dlq_t_setup("dlq_t_growth");
    PGconn *listener = pgt_connect();
    PQclear(PGT_EXEC(listener, "LISTEN dlq_t_alert"));
    /* a private window: age every other dead letter out of it first */
    PQclear(PGT_EXEC(c, "UPDATE pgpipe.dead_letters SET last_failed_at = now() - interval '1 day'"
                        " WHERE last_failed_at > now() - interval '1 hour'"));
    dlq_t_log lg = { 0 };
    pgpipe_config_log(dlq_t_logfn, &lg);
    pgpipe_log_set_level(PGPIPE_LOG_DEBUG);
    long long n = -1;
    pgpipe_error err;
    PGT_OK(pgpipe_dlq_check_growth(c, 3, 60, "dlq_t_alert", &n, &err));
    PGT_EQ_INT(n, 0);
    PGT_EQ_INT(lg.warns, 0);
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.dead_letters (stage, source_name, raw_text,"
                        " error_message) SELECT 'load', 'dlq_t_growth', 'x', 'boom'"
                        " FROM generate_series(1, 5)"));
    PGT_EQ_INT(pgpipe_dlq_check_growth(c, 3, 60, "dlq_t_alert", &n, &err), PGPIPE_BUSY);
    PGT_EQ_INT(n, 5);
    PGT_EQ_INT(lg.warns, 1);
    PGT_CONTAINS(lg.msg, "growing");
    PGT_EQ_STR(lg.count, "5");
    PGT_CONTAINS(err.message, "5 new dead letters");
    /* the NOTIFY reached the listener */
    PGnotify *nt = NULL;
    for (int i = 0; i < 100 && !nt; i++) {
        PQconsumeInput(listener);
        nt = PQnotifies(listener);
        if (!nt)
            pgpipe_sleep_ms(10);
    }
    PGT_CHECK(nt != NULL);
    PGT_EQ_STR(nt->relname, "dlq_t_alert");
    PGT_CONTAINS(nt->extra, "\"new_dead_letters\": 5");
    PQfreemem(nt);
    pgpipe_config_log(NULL, NULL);
    PQfinish(listener);
    PQfinish(c);
}

/* A replay of stage 'load' goes through the checks and the mapping of its
** load again: the record lands with the load's --source (not the file path),
** a record still bad stays dead with attempt_count + 1 and is refused, and
** records in = loaded + dead-lettered holds. */
PGT_TEST(dlq, replay_load_revalidates_keeps_source)
{
    PGconn *c = dlq_t_setup("dlq_t_rv_unused");
    PQclear(PGT_EXEC(c, "DELETE FROM staging.raw_events WHERE source = 'dlq_t_web'"));
    char path[512];
    snprintf(path, sizeof path, "%s/dlq_rv_%ld.ndjson", pgt_tmpdir(), (long)getpid());
    FILE *fp = fopen(path, "w");
    PGT_CHECK(fp != NULL);
    fputs("{\"event_type\":\"a\",\"v\":1}\n"
          "{\"event_type\":\"b\"\n"             /* malformed JSON */
          "{\"v\":2}\n"                         /* no event_type: fixed in place below */
          "{\"event_type\":\"c\",\"v\":3}\n", fp);
    fclose(fp);
    const char *pv[1] = { path };
    PGresult *r = PQexecParams(c, "DELETE FROM pgpipe.dead_letters WHERE source_name = $1", 1, NULL,
                               pv, NULL, NULL, 0);
    PQclear(r);

    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conn = c;
    o.source_value = "dlq_t_web";
    o.format = PGPIPE_FORMAT_NDJSON;
    char key[64];
    snprintf(key, sizeof key, "dlq_rv_%ld_%lld", (long)getpid(), (long long)pgpipe_now_us());
    o.load_key = key;
    o.notify_channel = "";
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o));
    PGT_OK(pgpipe_loader_load_file(l, path));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    pgpipe_loader_close(l);
    PGT_EQ_INT(s.records_read, 4);
    PGT_EQ_INT(s.rows_loaded, 2);
    PGT_EQ_INT(s.rows_dead, 2);
    char sql[1024];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE load_id = %lld AND"
                              " status = 'dead' AND attempt_count = 1", s.load_id);
    PGT_EQ_INT(dlq_t_scalar(c, sql), 2);

    /* fix one in place, as an operator would */
    snprintf(sql, sizeof sql, "UPDATE pgpipe.dead_letters SET raw_text = '{\"event_type\":\"fixed\",\"v\":2}'"
                              " WHERE load_id = %lld AND raw_text = '{\"v\":2}'", s.load_id);
    PQclear(PGT_EXEC(c, sql));

    pgpipe_dlq_filter f;
    pgpipe_dlq_filter_init(&f);
    f.stage = "load";
    f.source = path;
    long long ok = -1, bad = -1;
    pgpipe_error err;
    PGT_OK(pgpipe_dlq_replay(c, &f, NULL, NULL, &ok, &bad, &err));
    PGT_EQ_INT(ok, 1);
    PGT_EQ_INT(bad, 1);
    /* the fixed one with the load's source, mapped as the load did */
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM staging.raw_events WHERE source = 'dlq_t_web'"
                               " AND event_type = 'fixed' AND payload = '{\"event_type\":\"fixed\",\"v\":2}'"
                               " AND NOT processed"), 1);
    r = PQexecParams(c, "SELECT count(*) FROM staging.raw_events WHERE source = $1", 1, NULL, pv,
                     NULL, NULL, 0);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "0"); /* never the file path */
    PQclear(r);
    /* the still-bad one: dead, second attempt, the replay's error */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE load_id = %lld AND"
                              " status = 'dead' AND attempt_count = 2 AND last_failed_at > first_failed_at"
                              " AND error_message LIKE 'replay: raw text is not valid JSON%%'", s.load_id);
    PGT_EQ_INT(dlq_t_scalar(c, sql), 1);
    /* records in = loaded + dead-lettered, after the replay too */
    snprintf(sql, sizeof sql, "SELECT (SELECT count(*) FROM staging.raw_events WHERE source = 'dlq_t_web')"
                              " + (SELECT count(*) FROM pgpipe.dead_letters WHERE load_id = %lld AND"
                              " status = 'dead')", s.load_id);
    PGT_EQ_INT(dlq_t_scalar(c, sql), 4);

    /* valid JSON that the load's checks refuse (no event_type) is not let in either */
    snprintf(sql, sizeof sql, "UPDATE pgpipe.dead_letters SET raw_text = '{\"v\":9}'"
                              " WHERE load_id = %lld AND status = 'dead'", s.load_id);
    PQclear(PGT_EXEC(c, sql));
    PGT_OK(pgpipe_dlq_replay(c, &f, NULL, NULL, &ok, &bad, &err));
    PGT_EQ_INT(ok, 0);
    PGT_EQ_INT(bad, 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE load_id = %lld AND"
                              " status = 'dead' AND attempt_count = 3 AND error_message ="
                              " 'replay: required field \"event_type\" is missing'", s.load_id);
    PGT_EQ_INT(dlq_t_scalar(c, sql), 1);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM staging.raw_events WHERE source = 'dlq_t_web'"), 3);
    unlink(path);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS dlq_t_rv_unused"));
    PQfinish(c);
}

/* ---- writes: the same row shape from every write path ---------------------- */

/* The loader's dead letter as a COPY text row of pp_dlq_load_copy_sql: the
** columns in its order, NULLs as \N, text COPY-escaped, raw text that is not
** valid UTF-8 in raw_text with \xHH and in raw_bytes as bytea hex. */
PGT_TEST(dlq, load_row_shape)
{
    pp_buf b = { 0 };
    pp_dlq_load_letter d = { "in\tput.ndjson", 7, 0, 120, 42, "0190a1b2-0000-7000-8000-000000000001",
                             "{\"a\":\"x\\y\"}", 11, "bad\nvalue", NULL, "" };
    PGT_OK(pp_dlq_load_row(&b, &d));
    static const char want1[] = "load\tin\\tput.ndjson\t7\t\\N\t120\t42\t"
        "0190a1b2-0000-7000-8000-000000000001\t{\"a\":\"x\\\\y\"}\t\\N\tbad\\nvalue\t\\N\t\\N\n";
    PGT_EQ_MEM(b.data, b.len, want1, sizeof want1 - 1);
    b.len = 0;
    d.column = 3;
    d.raw = "a\0b\xff";
    d.rawlen = 4;
    d.sqlstate = "23514";
    d.context = "COPY t, line 1";
    PGT_OK(pp_dlq_load_row(&b, &d));
    static const char want2[] = "load\tin\\tput.ndjson\t7\t3\t120\t42\t"
        "0190a1b2-0000-7000-8000-000000000001\ta\\\\x00b\\\\xff\t\\\\x610062ff\tbad\\nvalue\t23514"
        "\tCOPY t, line 1\n";
    PGT_EQ_MEM(b.data, b.len, want2, sizeof want2 - 1);
    b.len = 0;
    d.raw = NULL; /* no text at all: an empty raw_text */
    d.sqlstate = NULL;
    d.context = NULL;
    PGT_OK(pp_dlq_load_row(&b, &d));
    PGT_CONTAINS(b.data, "000000000001\t\t\\N\tbad");
    pp_buf_free(&b);
    /* the claimer's INSERT, for its data-modifying WITH */
    PGT_OK(pp_dlq_process_insert(&b, "\"pgpipe\".\"dead_letters\"", "u", 7, 8));
    PGT_OK(pp_buf_putc(&b, '\0'));
    PGT_CONTAINS(b.data, "INSERT INTO \"pgpipe\".\"dead_letters\" (stage, source_table, row_id,");
    PGT_CONTAINS(b.data, "SELECT 'process', $7, id,");
    PGT_CONTAINS(b.data, "nullif(st, ''), $8, attempts,");
    PGT_CONTAINS(b.data, "FROM u WHERE dead RETURNING 1");
    pp_buf_free(&b);
}

static int dlq_t_fail_some(void *ud, PGconn *conn, const pgpipe_event *ev, pgpipe_error *err)
{
    (void)ud;
    (void)conn;
    if (strstr(ev->payload, "\"g\": 1")) { /* a data error: dead at once */
        pp_err(err, PGPIPE_ERROR, "division by zero in g=1");
        memcpy(err->sqlstate, "22012", 6);
        return PGPIPE_ERROR;
    }
    if (strstr(ev->payload, "\"g\": 2"))
        return pp_err(err, PGPIPE_ERROR, "handler refused g=2");
    return PGPIPE_OK;
}

/* A load's dead letters (checked by the loader, rejected by the server, not
** valid UTF-8) and a claimer's (a data error, attempts used up) land in one
** table with the columns of their stage; records in = loaded +
** dead-lettered holds in pgpipe.loads. */
PGT_TEST(dlq, write_paths_land_their_row_shape)
{
    PGconn *c = dlq_t_setup("dlq_t_shape_ev");
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS dlq_t_shape;"
                        " CREATE TABLE dlq_t_shape (id int PRIMARY KEY, qty int CHECK (qty > 0))"));
    char path[512];
    snprintf(path, sizeof path, "%s/dlq_shape_%ld.ndjson", pgt_tmpdir(), (long)getpid());
    FILE *fp = fopen(path, "w");
    PGT_CHECK(fp != NULL);
    fputs("{\"id\":1,\"qty\":1}\n"
          "{\"id\":2,\"qty\":\n"              /* malformed: the loader's check */
          "{\"id\":3,\"qty\":-1}\n"           /* CHECK: the server's 23514 */
          "{\"id\":4,\"qty\":1,\"x\":\"\xff\"}\n", fp); /* not UTF-8 */
    fclose(fp);
    pgpipe_load_column cols[] = { { "id", "id", NULL, 0 }, { "qty", "qty", NULL, 0 } };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conn = c;
    o.target = "public.dlq_t_shape";
    o.columns = cols;
    o.ncolumns = 2;
    o.source_name = "dlq_t_shape.ndjson";
    o.notify_channel = "";
    char key[64];
    snprintf(key, sizeof key, "dlq_shape_%ld_%lld", (long)getpid(), (long long)pgpipe_now_us());
    o.load_key = key;
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o));
    PGT_OK(pgpipe_loader_load_file(l, path));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    pgpipe_loader_close(l);
    unlink(path);
    PGT_EQ_INT(s.records_read, 4);
    PGT_EQ_INT(s.rows_loaded, 1);
    PGT_EQ_INT(s.rows_dead, 3);
    char sql[1600];
    snprintf(sql, sizeof sql, "SELECT rows_read = rows_loaded + rows_dead_lettered"
             " AND rows_dead_lettered = (SELECT count(*) FROM pgpipe.dead_letters WHERE load_id = %lld)"
             " FROM pgpipe.loads WHERE id = %lld", s.load_id, s.load_id);
    PGresult *r = PGT_EXEC(c, sql);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "t");
    PQclear(r);
    /* one line per dead letter: what every stage 'load' row holds */
    snprintf(sql, sizeof sql,
             "SELECT string_agg(concat_ws('|', stage, source_name, line_number,"
             " coalesce(column_number::text, '-'), byte_offset, coalesce(sqlstate, '-'),"
             " error_context IS NOT NULL, raw_text, coalesce(encode(raw_bytes, 'hex'), '-'),"
             " batch_id = (SELECT batch_id FROM pgpipe.load_batches WHERE load_id = %lld),"
             " payload IS NULL AND row_id IS NULL AND source_table IS NULL, attempt_count, status,"
             " error_message <> ''), E'\\n' ORDER BY line_number)"
             " FROM pgpipe.dead_letters WHERE load_id = %lld", s.load_id, s.load_id);
    r = PGT_EXEC(c, sql);
    PGT_EQ_STR(PQgetvalue(r, 0, 0),
               "load|dlq_t_shape.ndjson|2|15|17|-|f|{\"id\":2,\"qty\":|-|t|t|1|dead|t\n"
               "load|dlq_t_shape.ndjson|3|-|32|23514|t|{\"id\":3,\"qty\":-1}|-|t|t|1|dead|t\n"
               "load|dlq_t_shape.ndjson|4|22|50|-|f|{\"id\":4,\"qty\":1,\"x\":\"\\xff\"}|"
               "7b226964223a342c22717479223a312c2278223a22ff227d|t|t|1|dead|t");
    PQclear(r);

    /* the claimer: a data error and a record out of attempts */
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.dead_letters WHERE source_table = 'dlq_t_shape_ev';"
                        " INSERT INTO dlq_t_shape_ev (source, event_type, payload, batch_id)"
                        " SELECT 'dlq_t_src', 'e', jsonb_build_object('g', g),"
                        " '0190a1b2-0000-7000-8000-00000000000a' FROM generate_series(1, 3) g"));
    pgpipe_claim_options co;
    pgpipe_claim_options_init(&co);
    co.table = "dlq_t_shape_ev";
    co.max_attempts = 1;
    co.worker_id = "dlq_t_worker";
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &co));
    pgpipe_handler h = { dlq_t_fail_some, NULL, NULL, NULL };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    pgpipe_claimer_close(cl);
    r = PGT_EXEC(c,
        "SELECT string_agg(concat_ws('|', d.stage, d.source_table, d.source_name, d.event_type,"
        " d.row_id = e.id AND d.row_received_at = e.received_at, d.batch_id, d.raw_text,"
        " d.payload::text, coalesce(d.sqlstate, '-'), d.error_message, d.error_context,"
        " d.attempt_count, d.status, d.line_number IS NULL AND d.load_id IS NULL,"
        " d.first_failed_at IS NOT NULL AND d.last_failed_at >= d.first_failed_at),"
        " E'\\n' ORDER BY e.id)"
        " FROM pgpipe.dead_letters d JOIN dlq_t_shape_ev e ON e.id = d.row_id"
        " WHERE d.source_table = 'dlq_t_shape_ev'");
    PGT_EQ_STR(PQgetvalue(r, 0, 0),
               "process|dlq_t_shape_ev|dlq_t_src|e|t|0190a1b2-0000-7000-8000-00000000000a|{\"g\": 1}"
               "|{\"g\": 1}|22012|division by zero in g=1|dlq_t_worker|1|dead|t|t\n"
               "process|dlq_t_shape_ev|dlq_t_src|e|t|0190a1b2-0000-7000-8000-00000000000a|{\"g\": 2}"
               "|{\"g\": 2}|-|handler refused g=2|dlq_t_worker|1|dead|t|t");
    PQclear(r);
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM dlq_t_shape_ev WHERE processed"), 3);
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.dead_letters WHERE source_table = 'dlq_t_shape_ev';"
                        " DROP TABLE dlq_t_shape_ev; DROP TABLE dlq_t_shape"));
    PQfinish(c);
}

/* ---- the growth rule and what .health and .stats read ----------------------- */

PGT_TEST(dlq, growth_rule_boundaries)
{
    /* more than the threshold and more than twice the window before */
    PGT_EQ_INT(pgpipe_dlq_growing(10, 0, 10), 0);
    PGT_EQ_INT(pgpipe_dlq_growing(11, 0, 10), 1);
    PGT_EQ_INT(pgpipe_dlq_growing(11, 5, 10), 1);
    PGT_EQ_INT(pgpipe_dlq_growing(12, 6, 10), 0);
    PGT_EQ_INT(pgpipe_dlq_growing(13, 6, 10), 1);
    PGT_EQ_INT(pgpipe_dlq_growing(0, 0, 0), 0);
    PGT_EQ_INT(pgpipe_dlq_growing(1, 0, 0), 1);
    PGT_EQ_INT(pgpipe_dlq_growing(LLONG_MAX, LLONG_MAX, 0), 0);
    PGT_EQ_INT(pgpipe_dlq_growing(LLONG_MAX, LLONG_MAX / 2, 0), 1);

    /* the alert applies it with no window before: threshold n is quiet */
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "SET client_min_messages = warning"));
    pgpipe_error err;
    PGT_OK(pgpipe_schema_install(c, NULL, &err));
    /* one transaction, rolled back: the counts are of this test's rows only */
    PQclear(PGT_EXEC(c, "BEGIN; DELETE FROM pgpipe.dead_letters;"
                        " INSERT INTO pgpipe.dead_letters (stage, source_name, raw_text,"
                        " error_message, first_failed_at, last_failed_at)"
                        " SELECT 'load', 'dlq_t_health', 'x', 'boom', now() - interval '30 minutes',"
                        " now() FROM generate_series(1, 10)"));
    long long n = -1;
    PGT_OK(pgpipe_dlq_check_growth(c, 10, 60, NULL, &n, &err));
    PGT_EQ_INT(n, 10);
    int level = pgpipe_log_get_level();
    pgpipe_log_set_level(PGPIPE_LOG_ERROR); /* the alert's warning is expected */
    PGT_EQ_INT(pgpipe_dlq_check_growth(c, 9, 60, NULL, &n, &err), PGPIPE_BUSY);
    pgpipe_log_set_level(level);
    /* .health: 10 new in the last hour is not growing, 11 is */
    pgpipe_dlq_health hh;
    PGT_OK(pgpipe_dlq_health_get(c, &hh, &err));
    PGT_EQ_INT(hh.dead, 10);
    PGT_EQ_INT(hh.last_hour, 10);
    PGT_EQ_INT(hh.hour_before, 0);
    PGT_EQ_INT(hh.growing, 0);
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.dead_letters (stage, source_name, raw_text,"
                        " error_message, first_failed_at) VALUES"
                        " ('load', 'dlq_t_health', 'x', 'boom', now() - interval '59 minutes')"));
    PGT_OK(pgpipe_dlq_health_get(c, &hh, &err));
    PGT_EQ_INT(hh.last_hour, 11);
    PGT_EQ_INT(hh.growing, 1);
    /* 11 against 6 in the hour before (12 and more) is not growing; replayed
    ** ones and older ones do not count */
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.dead_letters (stage, source_name, raw_text,"
                        " error_message, first_failed_at, status) SELECT 'load', 'dlq_t_health',"
                        " 'x', 'boom', now() - interval '90 minutes', 'dead'"
                        " FROM generate_series(1, 6);"
                        " INSERT INTO pgpipe.dead_letters (stage, source_name, raw_text,"
                        " error_message, first_failed_at, status) VALUES"
                        " ('load', 'dlq_t_health', 'x', 'boom', now(), 'replayed'),"
                        " ('load', 'dlq_t_health', 'x', 'boom', now() - interval '3 hours', 'dead')"));
    PGT_OK(pgpipe_dlq_health_get(c, &hh, &err));
    PGT_EQ_INT(hh.dead, 18);
    PGT_EQ_INT(hh.last_hour, 11);
    PGT_EQ_INT(hh.hour_before, 6);
    PGT_EQ_INT(hh.growing, 0);
    /* .stats: per stage and status */
    PGresult *r = NULL;
    PGT_OK(pgpipe_dlq_totals(c, &r, &err));
    PGT_EQ_INT(PQntuples(r), 2);
    PGT_EQ_STR(PQfname(r, 2), "dead_letters");
    PGT_EQ_STR(PQfname(r, 3), "latest");
    PGT_EQ_STR(PQgetvalue(r, 0, 1), "dead");
    PGT_EQ_STR(PQgetvalue(r, 0, 2), "18");
    PGT_EQ_STR(PQgetvalue(r, 1, 1), "replayed");
    PGT_EQ_STR(PQgetvalue(r, 1, 2), "1");
    PQclear(r);
    PQclear(PGT_EXEC(c, "ROLLBACK"));
    PGT_EQ_INT(pgpipe_dlq_health_get(NULL, &hh, &err), PGPIPE_MISUSE);
    PQfinish(c);
}

/* time filters take a time or an interval back from now ('1 day' and
** '1 day ago' alike); a value that is neither is an error even where no
** row would be compared with it; an empty filter value is refused, never
** taken as "any" (a purge with an unset shell variable purged everything) */
PGT_TEST(dlq, time_filters_and_empty_values)
{
    PGconn *c = pgt_db_open();
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.dead_letters WHERE source_name = 'dlq_t_time.csv'"));
    dlq_t_load_letters(c, "dlq_t_time.csv"); /* failed now, 2 hours and 3 days ago */
    pgpipe_dlq_filter f;
    pgpipe_dlq_filter_init(&f);
    f.source = "dlq_t_time.csv";
    pgpipe_error err;
    PGresult *r;
    const char *since[] = { "1 day", "1 day ago", "P1D", "24:00:00" };
    for (size_t i = 0; i < sizeof since / sizeof since[0]; i++) {
        f.since = since[i];
        PGT_OK(pgpipe_dlq_list(c, &f, &r, &err));
        PGT_CHECK_MSG(PQntuples(r) == 2, "since %s: %d rows", since[i], PQntuples(r));
        PQclear(r);
    }
    f.since = "1000 days"; /* four digits, still an interval */
    PGT_OK(pgpipe_dlq_list(c, &f, &r, &err));
    PGT_EQ_INT(PQntuples(r), 3);
    PQclear(r);
    f.since = "yesterday";
    PGT_OK(pgpipe_dlq_list(c, &f, &r, &err));
    PGT_CHECK(PQntuples(r) >= 2);
    PQclear(r);
    f.since = NULL;
    f.until = "1 hour";
    PGT_OK(pgpipe_dlq_list(c, &f, &r, &err));
    PGT_EQ_INT(PQntuples(r), 2);
    PQclear(r);
    f.until = NULL;
    /* counts with a timestamp as the server writes one */
    const char *ts = pgt_db_str(c, "SELECT (now() - interval '1 hour')::text");
    f.since = ts;
    PGT_OK(pgpipe_dlq_counts(c, &f, &r, &err));
    PGT_EQ_INT(PQntuples(r), 1);
    PQclear(r);
    /* neither a time nor an interval: said, naming the filter and value */
    f.since = "garbage";
    PGT_EQ_INT(pgpipe_dlq_list(c, &f, &r, &err), PGPIPE_PARSE);
    PGT_CONTAINS(err.message, "since \"garbage\" is not a time");
    PGT_EQ_STR(err.sqlstate, "22007");
    f.source = "no such source"; /* no row to compare it with: still said */
    PGT_EQ_INT(pgpipe_dlq_purge(c, &f, NULL, &err), PGPIPE_PARSE);
    f.since = NULL;
    f.until = "2026-13-45";
    PGT_EQ_INT(pgpipe_dlq_counts(c, &f, &r, &err), PGPIPE_PARSE);
    PGT_CONTAINS(err.message, "until \"2026-13-45\"");
    f.until = NULL;
    /* empty values */
    const char **fields[] = { &f.stage, &f.source, &f.error_like, &f.since, &f.until, &f.status };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        pgpipe_dlq_filter_init(&f);
        *fields[i] = "";
        long long purged = -1;
        PGT_EQ_INT(pgpipe_dlq_purge(c, &f, &purged, &err), PGPIPE_MISUSE);
        PGT_CONTAINS(err.message, "is empty");
        PGT_EQ_INT(purged, 0);
        if (fields[i] == &f.status)
            continue; /* replay sets its own status (and would replay everything) */
        long long ok = -1, bad = -1;
        PGT_EQ_INT(pgpipe_dlq_replay(c, &f, NULL, NULL, &ok, &bad, &err), PGPIPE_MISUSE);
        PGT_EQ_INT(ok, 0);
    }
    PGT_EQ_INT(dlq_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = "
                               "'dlq_t_time.csv' AND status = 'dead'"), 3);
    pgt_db_close(c);
}
