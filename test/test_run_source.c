/* Tests of the runner's sources and workers (src/run/run_source.c) and of
** the steps' dot commands (src/run/run_step.c), against the test cluster:
** watched folders (a file written in two halves is not taken half-written;
** two runners on one folder load each file once; a restart loads nothing
** again), SQL and C (.so) handlers, each dot command in a setup, a failing
** step named FILE:LINE, a step timeout. */
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>

typedef struct rsrc_t_run {
    pgpipe_runner *r;
    pthread_t th;
    int rc;
    int started;
} rsrc_t_run;

static void rsrc_t_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    PGT_CHECK_MSG(f != NULL, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void *rsrc_t_thread(void *arg)
{
    rsrc_t_run *x = arg;
    x->rc = pgpipe_runner_run(x->r);
    return NULL;
}

static void rsrc_t_start(rsrc_t_run *x, const char *file, const char *dsn, const char *instance)
{
    pgpipe_run_options o;
    pgpipe_run_options_init(&o);
    o.conninfo = dsn;
    o.instance = instance;
    o.drain_timeout_ms = 5000;
    o.sd_notify = 0;
    memset(x, 0, sizeof *x);
    int rc = pgpipe_runner_open(&x->r, file, &o);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "runner_open: %s", pgpipe_errmsg(x->r));
    PGT_CHECK(pthread_create(&x->th, NULL, rsrc_t_thread, x) == 0);
    x->started = 1;
}

static int rsrc_t_stop(rsrc_t_run *x)
{
    if (x->started) {
        pgpipe_runner_stop(x->r);
        pthread_join(x->th, NULL);
        x->started = 0;
    }
    int rc = x->rc;
    pgpipe_runner_close(x->r);
    x->r = NULL;
    return rc;
}

/* wait (at most timeout_ms) until the query's one value is want */
static void rsrc_t_nap(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    nanosleep(&ts, NULL);
}

static long long rsrc_t_wait(PGconn *c, const char *sql, long long want, int timeout_ms)
{
    long long v = -1;
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        v = pgt_db_int(c, sql);
        if (v == want)
            return v;
        rsrc_t_nap(100);
    }
    return v;
}

static int rsrc_t_exists(const char *dir, const char *name)
{
    char p[1024];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0;
}

/* n NDJSON lines with ids from first */
static void rsrc_t_lines(FILE *f, int first, int n)
{
    for (int i = first; i < first + n; i++)
        fprintf(f, "{\"id\": %d, \"v\": %d}\n", i, i * 2);
    fflush(f);
}

PGT_TEST(run_source, files_and_workers)
{
    const char *dsn = pgt_dsn();
    PGconn *c = pgt_db_open();
    int pid = (int)getpid();
    char dir[512], in[600], done[700], file[700], path[800], sql[1024], type[64];
    snprintf(type, sizeof type, "rsrc_%d", pid);
    snprintf(dir, sizeof dir, "%s/rsrc_files_%d", pgt_tmpdir(), pid);
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(done, sizeof done, "%s/done", in);
    mkdir(dir, 0777);
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS public.%s_out", type);
    PQclear(PGT_EXEC(c, sql));
    snprintf(path, sizeof path, "%s/handler.sql", dir);
    snprintf(sql, sizeof sql,
             "-- the rows of one batch\n"
             "INSERT INTO public.%s_out (id, v)\n"
             "SELECT (e->'payload'->>'id')::bigint, (e->'payload'->>'v')::int\n"
             "FROM jsonb_array_elements($1::jsonb) e;\n", type);
    rsrc_t_write(path, sql);
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    char text[2048];
    snprintf(text, sizeof text,
             ".pipeline %s\n"
             "CREATE TABLE IF NOT EXISTS public.%s_out (id bigint PRIMARY KEY, v int);\n"
             ".source files drop --dir in --pattern '*.ndjson' --format ndjson --event-type %s "
             "--settle 2s --poll 100ms\n"
             ".workers %s --sql handler.sql --workers 2 --batch 50\n", type, type, type, type);
    rsrc_t_write(file, text);

    /* two runners on the same folder at the same time */
    rsrc_t_run a, b;
    rsrc_t_start(&a, file, dsn, "rsrc-a");
    rsrc_t_start(&b, file, dsn, "rsrc-b");
    /* the runners make the folder */
    for (int i = 0; i < 100 && !rsrc_t_exists(in, "."); i++)
        rsrc_t_nap(50);
    PGT_CHECK(rsrc_t_exists(in, "."));

    /* a whole file, written aside under a hidden name and renamed in */
    char tmp[900], f1[900];
    snprintf(tmp, sizeof tmp, "%s/.f1.ndjson", in);
    snprintf(f1, sizeof f1, "%s/f1.ndjson", in);
    FILE *fp = fopen(tmp, "w");
    PGT_CHECK(fp != NULL);
    rsrc_t_lines(fp, 1, 100);
    fclose(fp);
    PGT_CHECK(rename(tmp, f1) == 0);
    /* partial files are never taken */
    snprintf(tmp, sizeof tmp, "%s/f3.ndjson.part", in);
    fp = fopen(tmp, "w");
    rsrc_t_lines(fp, 5000, 10);
    fclose(fp);
    /* one written slowly, in two halves with a pause shorter than --settle */
    char f2[900];
    snprintf(f2, sizeof f2, "%s/f2.ndjson", in);
    fp = fopen(f2, "w");
    PGT_CHECK(fp != NULL);
    rsrc_t_lines(fp, 101, 50);
    rsrc_t_nap(700);
    rsrc_t_lines(fp, 151, 50);
    fclose(fp);

    char q_out[256], q_staged[256], q_done[256];
    snprintf(q_out, sizeof q_out, "SELECT count(*) FROM public.%s_out", type);
    snprintf(q_staged, sizeof q_staged, "SELECT count(*) FROM staging.raw_events WHERE event_type = '%s'", type);
    snprintf(q_done, sizeof q_done,
             "SELECT count(*) FROM staging.raw_events WHERE event_type = '%s' AND processed", type);
    PGT_EQ_INT(rsrc_t_wait(c, q_out, 200, 30000), 200);
    PGT_EQ_INT(pgt_db_int(c, q_staged), 200);
    PGT_EQ_INT(rsrc_t_wait(c, q_done, 200, 10000), 200);
    /* the moves happen right after the loads */
    for (int i = 0; i < 50 && !(rsrc_t_exists(done, "f1.ndjson") && rsrc_t_exists(done, "f2.ndjson")); i++)
        rsrc_t_nap(100);
    PGT_CHECK(rsrc_t_exists(done, "f1.ndjson"));
    PGT_CHECK(rsrc_t_exists(done, "f2.ndjson"));
    PGT_CHECK(!rsrc_t_exists(in, "f1.ndjson"));
    PGT_CHECK(!rsrc_t_exists(in, "f2.ndjson"));
    PGT_CHECK(rsrc_t_exists(in, "f3.ndjson.part"));
    /* each file is one load: two loads, none loaded twice */
    snprintf(sql, sizeof sql, "SELECT coalesce(sum(rows_loaded), 0) FROM pgpipe.loads WHERE source = 'drop' "
             "AND source_checksum LIKE 'pgpipe-file:drop:%s/%%'", in);
    PGT_EQ_INT(pgt_db_int(c, sql), 200);
    /* the metrics count them: the two runners together loaded both files */
    long long files = 0;
    rsrc_t_run *both[2] = { &a, &b };
    for (int k = 0; k < 2; k++) {
        pp_buf m = { 0 };
        run_sources_metrics(both[k]->r, &m);
        PGT_CHECK(m.data && strstr(m.data, "pgpipe_run_workers_done_total{event_type=\"rsrc_"));
        const char *p = strstr(m.data, "pgpipe_run_source_files_total{source=\"drop\"} ");
        PGT_CHECK(p != NULL);
        files += atoll(p + strlen("pgpipe_run_source_files_total{source=\"drop\"} "));
        pp_buf_free(&m);
    }
    PGT_EQ_INT(files, 2);
    PGT_OK(rsrc_t_stop(&b));
    PGT_OK(rsrc_t_stop(&a));

    /* a restart: a file loaded but not moved (a crash in between: put back
    ** with its size and mtime) is not loaded again, only moved; a new one is */
    char back[900];
    snprintf(back, sizeof back, "%s/f1.ndjson", done);
    PGT_CHECK(rename(back, f1) == 0);
    char f4[900];
    snprintf(f4, sizeof f4, "%s/f4.ndjson", in);
    fp = fopen(f4, "w");
    rsrc_t_lines(fp, 201, 10);
    fclose(fp);
    rsrc_t_start(&a, file, dsn, "rsrc-a");
    PGT_EQ_INT(rsrc_t_wait(c, q_out, 210, 30000), 210);
    for (int i = 0; i < 50 && rsrc_t_exists(in, "f1.ndjson"); i++)
        rsrc_t_nap(100);
    PGT_CHECK(!rsrc_t_exists(in, "f1.ndjson"));
    PGT_CHECK(rsrc_t_exists(done, "f1.ndjson"));
    PGT_EQ_INT(pgt_db_int(c, q_staged), 210);
    PGT_OK(rsrc_t_stop(&a));
    pgt_db_close(c);
}

/* A C handler from a shared library; a missing symbol fails the start. */
PGT_TEST(run_source, so_handler)
{
    const char *dsn = pgt_dsn();
    const char *top = getenv("PGPIPE_TOP") ? getenv("PGPIPE_TOP") : ".";
    int pid = (int)getpid();
    char dir[512], so[700], cmd[2048], type[64];
    snprintf(type, sizeof type, "rsrc_so_%d", pid);
    snprintf(dir, sizeof dir, "%s/rsrc_so_%d", pgt_tmpdir(), pid);
    mkdir(dir, 0777);
    snprintf(so, sizeof so, "%s/handler.so", dir);
    snprintf(cmd, sizeof cmd, "cc -shared -fPIC -I%s -I%s/test $(pkg-config --cflags libpq 2>/dev/null) "
             "-o %s %s/test/run/handler_so.c >%s/cc.log 2>&1", top, top, so, top, dir);
    if (system(cmd) != 0)
        PGT_SKIP("cannot build a shared library here (no cc, or no -shared): the --so handler is not tested");
    PGconn *c = pgt_db_open();
    char sql[512], file[700], text[2048];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS public.%s_out", type);
    PQclear(PGT_EXEC(c, sql));
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);

    /* the symbol is looked up at start */
    snprintf(text, sizeof text, ".pipeline %s\n.workers %s --so handler.so:no_such_symbol\n", type, type);
    rsrc_t_write(file, text);
    rsrc_t_run a;
    rsrc_t_start(&a, file, dsn, "rsrc-so");
    pthread_join(a.th, NULL);
    a.started = 0;
    PGT_CHECK(a.rc != PGPIPE_OK);
    PGT_CHECK_MSG(strstr(pgpipe_errmsg(a.r), "no_such_symbol") != NULL, "%s", pgpipe_errmsg(a.r));
    PGT_CHECK_MSG(strstr(pgpipe_errmsg(a.r), "pipeline.pgpipe:2: .workers") != NULL, "%s", pgpipe_errmsg(a.r));
    rsrc_t_stop(&a);

    snprintf(text, sizeof text,
             ".pipeline %s\n"
             "CREATE TABLE IF NOT EXISTS public.%s_out (id bigint PRIMARY KEY);\n"
             ".workers %s --so handler.so:rsrc_test_handler --workers 1 --batch 10\n", type, type, type);
    rsrc_t_write(file, text);
    rsrc_t_start(&a, file, dsn, "rsrc-so");
    /* the events, staged as the loader or the HTTP source would */
    snprintf(sql, sizeof sql,
             "INSERT INTO staging.raw_events (source, event_type, payload) SELECT 'test', '%s', "
             "jsonb_build_object('id', g) FROM generate_series(1, 25) g", type);
    /* the setup makes the table: wait for it before staging (the workers
    ** would dead-letter events whose table is not there yet) */
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM pg_tables WHERE tablename = '%s_out'", type);
    PGT_EQ_INT(rsrc_t_wait(c, q, 1, 20000), 1);
    PQclear(PGT_EXEC(c, sql));
    PQclear(PGT_EXEC(c, "NOTIFY pgpipe_events"));
    snprintf(q, sizeof q, "SELECT count(*) FROM public.%s_out", type);
    PGT_EQ_INT(rsrc_t_wait(c, q, 25, 20000), 25);
    PGT_OK(rsrc_t_stop(&a));
    pgt_db_close(c);
}

/* Every dot command in a setup, on a database of its own (.migrate keeps
** its history there); a failing step is named FILE:LINE with its SQLSTATE. */
PGT_TEST(run_source, steps_dot_commands)
{
    PGconn *c = pgt_db_fresh("rsrc_steps");
    char dsn[1024];
    snprintf(dsn, sizeof dsn, "%s dbname=rsrc_steps", pgt_dsn());
    int pid = (int)getpid();
    char dir[512], p[800], file[700];
    snprintf(dir, sizeof dir, "%s/rsrc_steps_%d", pgt_tmpdir(), pid);
    mkdir(dir, 0777);
    snprintf(p, sizeof p, "%s/mig", dir);
    mkdir(p, 0777);
    snprintf(p, sizeof p, "%s/mig/V1__t.sql", dir);
    rsrc_t_write(p, "CREATE TABLE public.migrated (id int);\n");
    snprintf(p, sizeof p, "%s/data.csv", dir);
    rsrc_t_write(p, "id,v\n1,10\n2,20\n3,30\n");
    snprintf(p, sizeof p, "%s/events.ndjson", dir);
    rsrc_t_write(p, "{\"event_type\": \"rsrc_steps\", \"n\": 1}\n{\"event_type\": \"rsrc_steps\", \"n\": 2}\n");
    snprintf(p, sizeof p, "%s/more.sql", dir);
    rsrc_t_write(p, "-- SQL and dot commands, as a file\n"
                    "INSERT INTO public.t (id, v) VALUES (4, 40);\n"
                    ".log info 'read: more.sql'\n"
                    "INSERT INTO public.t (id, v) VALUES (5, length('a\n"
                    ".b: a line of a quoted string, not a dot command') + 1);\n"
                    ".read nested.sql\n");
    snprintf(p, sizeof p, "%s/nested.sql", dir);
    rsrc_t_write(p, "INSERT INTO public.t (id, v) VALUES (6, 60);\n");
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    rsrc_t_write(file,
                 ".pipeline rsrc_steps\n"
                 ".install\n"
                 ".migrate mig\n"
                 "CREATE TABLE public.t (id int PRIMARY KEY, v int);\n"
                 ".load data.csv --table public.t --map id,v\n"
                 ".load events.ndjson --format ndjson --name rsrc_steps\n"
                 ".read more.sql\n"
                 "CREATE MATERIALIZED VIEW public.mv AS SELECT count(*) AS n FROM public.t;\n"
                 "INSERT INTO public.t (id, v) VALUES (7, 70);\n"
                 ".refresh public.mv\n"
                 ".partitions ahead 2\n"
                 ".partitions retain 30 --detach-only\n"
                 ".dlq replay --source nobody\n"
                 ".log info \"setup done\"\n");
    pgpipe_run_options o;
    pgpipe_run_options_init(&o);
    o.conninfo = dsn;
    o.sd_notify = 0;
    o.run_for_ms = 1;
    pgpipe_runner *r = NULL;
    PGT_OK(pgpipe_runner_open(&r, file, &o));
    int rc = pgpipe_runner_run(r);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(r));
    pgpipe_runner_close(r);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'migrated'"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM public.t"), 7);
    PGT_EQ_INT(pgt_db_int(c, "SELECT n FROM public.mv"), 7);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events WHERE event_type = 'rsrc_steps'"), 2);

    /* a failing step: FILE:LINE: .cmd: message (SQLSTATE) */
    rsrc_t_write(file, ".pipeline rsrc_steps\n"
                       "SELECT 1;\n"
                       ".dlq replay --since 'not a time'\n");
    PGT_OK(pgpipe_runner_open(&r, file, &o));
    rc = pgpipe_runner_run(r);
    PGT_CHECK(rc != PGPIPE_OK);
    char want[1024];
    snprintf(want, sizeof want, "%s:3: .dlq replay: ", file);
    PGT_CHECK_MSG(strstr(pgpipe_errmsg(r), want) != NULL, "%s", pgpipe_errmsg(r));
    PGT_CHECK_MSG(strstr(pgpipe_errmsg(r), "(SQLSTATE 22007)") != NULL, "%s", pgpipe_errmsg(r));
    pgpipe_runner_close(r);

    /* an empty option value in a step is refused, not taken as "any":
    ** the purge purges nothing; said when the file is read, with its place */
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.dead_letters (stage, source_name, error_message) "
                        "VALUES ('load', 'rsrc_steps_keep', 'kept')"));
    rsrc_t_write(file, ".pipeline rsrc_steps\n"
                       ".dlq purge --status dead --source ''\n");
    PGT_EQ_INT(pgpipe_runner_open(&r, file, &o), PGPIPE_PARSE);
    snprintf(want, sizeof want, "%s:2: .dlq purge: --source is empty", file);
    PGT_CONTAINS(pgpipe_errmsg(r), want);
    pgpipe_runner_close(r);
    /* so is a bad number or option in a step: at the file's reading, not at
    ** every firing */
    rsrc_t_write(file, ".pipeline rsrc_steps\n"
                       ".schedule s --every 1h\n"
                       ".partitions ahead 36500\n"
                       ".end\n");
    PGT_EQ_INT(pgpipe_runner_open(&r, file, &o), PGPIPE_PARSE);
    snprintf(want, sizeof want, "%s:3: .partitions: DAYS: expected a whole number from 1 to 366",
             file);
    PGT_CONTAINS(pgpipe_errmsg(r), want);
    pgpipe_runner_close(r);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = "
                             "'rsrc_steps_keep'"), 1);
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.dead_letters WHERE source_name = 'rsrc_steps_keep'"));

    /* SQL fails with its line, in a .read file with the read file's line */
    snprintf(p, sizeof p, "%s/bad.sql", dir);
    rsrc_t_write(p, "SELECT 1;\n\nSELECT * FROM no_such_table;\n");
    rsrc_t_write(file, ".pipeline rsrc_steps\n.read bad.sql\n");
    PGT_OK(pgpipe_runner_open(&r, file, &o));
    PGT_CHECK(pgpipe_runner_run(r) != PGPIPE_OK);
    snprintf(want, sizeof want, "%s:3: ", p);
    PGT_CHECK_MSG(strstr(pgpipe_errmsg(r), want) != NULL, "%s", pgpipe_errmsg(r));
    PGT_CHECK_MSG(strstr(pgpipe_errmsg(r), "(SQLSTATE 42P01)") != NULL, "%s", pgpipe_errmsg(r));
    pgpipe_runner_close(r);
    pgt_db_close(c);
}

/* A timeout bounds the steps: PGPIPE_BUSY, and the connection's own
** statement_timeout is back afterwards. */
PGT_TEST(run_source, step_timeout)
{
    const char *dsn = pgt_dsn();
    int pid = (int)getpid();
    char dir[512], file[700];
    snprintf(dir, sizeof dir, "%s/rsrc_timeout_%d", pgt_tmpdir(), pid);
    mkdir(dir, 0777);
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    rsrc_t_write(file, ".pipeline rsrc_timeout\n");
    pgpipe_run_options o;
    pgpipe_run_options_init(&o);
    o.conninfo = dsn;
    o.sd_notify = 0;
    pgpipe_runner *r = NULL;
    PGT_OK(pgpipe_runner_open(&r, file, &o));
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "SET statement_timeout = '7min'"));
    pgpipe_pipe_step steps[2] = { { PGPIPE_PIPE_SQL, "SELECT 1", 2 },
                                  { PGPIPE_PIPE_SQL, "SELECT pg_sleep(10)", 3 } };
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    long long rows = -1;
    int rc = run_steps_exec(r, c, steps, 2, 300, &rows, &e);
    PGT_EQ_INT(rc, PGPIPE_BUSY);
    PGT_CHECK_MSG(strstr(e.message, ":3: timed out") != NULL, "%s", e.message);
    PGT_EQ_STR(pgt_db_str(c, "SHOW statement_timeout"), "7min");
    /* with time enough the steps run, and the setting is put back too */
    pgpipe_pipe_step ok[1] = { { PGPIPE_PIPE_SQL, "SELECT 2", 4 } };
    PGT_OK(run_steps_exec(r, c, ok, 1, 5000, &rows, &e));
    PGT_EQ_INT(rows, 1);
    PGT_EQ_STR(pgt_db_str(c, "SHOW statement_timeout"), "7min");
    /* a .load on the pool's connections (no statement_timeout there) is
    ** cancelled at the deadline: a trigger makes every row slow */
    char sql[512], p[800], step[256];
    snprintf(sql, sizeof sql,
             "DROP TABLE IF EXISTS public.rsrc_slow_%d;"
             "CREATE TABLE public.rsrc_slow_%d (id int);"
             "CREATE OR REPLACE FUNCTION public.rsrc_slow_row() RETURNS trigger LANGUAGE plpgsql AS "
             "$$BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END$$;"
             "CREATE TRIGGER slow BEFORE INSERT ON public.rsrc_slow_%d FOR EACH ROW "
             "EXECUTE FUNCTION public.rsrc_slow_row()", pid, pid, pid);
    PQclear(PGT_EXEC(c, sql));
    snprintf(p, sizeof p, "%s/slow.csv", dir);
    FILE *fp = fopen(p, "w");
    PGT_CHECK(fp != NULL);
    fputs("id\n", fp);
    for (int i = 0; i < 40; i++)
        fprintf(fp, "%d\n", i);
    fclose(fp);
    snprintf(step, sizeof step, ".load slow.csv --table public.rsrc_slow_%d --map id --connections 2 "
             "--batch-rows 10", pid);
    pgpipe_pipe_step load[1] = { { PGPIPE_PIPE_DOT, step, 5 } };
    memset(&e, 0, sizeof e);
    rc = run_steps_exec(r, c, load, 1, 800, &rows, &e);
    PGT_EQ_INT(rc, PGPIPE_BUSY);
    PGT_CHECK_MSG(strstr(e.message, ":5: .load: timed out") != NULL, "%s", e.message);
    /* well short of the 12 s the rows take */
    snprintf(sql, sizeof sql, "SELECT count(*) < 40 FROM public.rsrc_slow_%d", pid);
    PGT_EQ_STR(pgt_db_str(c, sql), "t");
    snprintf(sql, sizeof sql, "DROP TABLE public.rsrc_slow_%d", pid);
    PQclear(PGT_EXEC(c, sql));
    PQfinish(c);
    pgpipe_runner_close(r);
}

/* the workers handle of the i-th .workers line (NULL when none) */
static pgpipe_workers *rsrc_t_workers(pgpipe_runner *r, int i, int *n)
{
    run_sources *s = __atomic_load_n(&r->sources, __ATOMIC_ACQUIRE);
    if (!s)
        return NULL;
    pp_mutex_lock(&s->mu);
    pgpipe_workers *w = i < s->nwork && s->work[i] ? s->work[i]->w : NULL;
    *n = s->nwork;
    pp_mutex_unlock(&s->mu);
    return w;
}

/* A reload starts the workers added, keeps those unchanged running, and
** applies a folder's changed settings. */
PGT_TEST(run_source, reload_workers_and_folders)
{
    const char *dsn = pgt_dsn();
    PGconn *c = pgt_db_open();
    int pid = (int)getpid();
    char dir[512], p[800], file[700], sql[1024], text[2048], ta[64], tb[64];
    snprintf(ta, sizeof ta, "rsrc_ra_%d", pid);
    snprintf(tb, sizeof tb, "rsrc_rb_%d", pid);
    snprintf(dir, sizeof dir, "%s/rsrc_reload_%d", pgt_tmpdir(), pid);
    mkdir(dir, 0777);
    const char *types[2] = { ta, tb };
    for (int k = 0; k < 2; k++) {
        snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS public.%s_out; CREATE TABLE public.%s_out (id bigint)",
                 types[k], types[k]);
        PQclear(PGT_EXEC(c, sql));
        snprintf(p, sizeof p, "%s/h%d.sql", dir, k);
        snprintf(sql, sizeof sql, "INSERT INTO public.%s_out (id) SELECT (e->'payload'->>'id')::bigint "
                 "FROM jsonb_array_elements($1::jsonb) e", types[k]);
        rsrc_t_write(p, sql);
    }
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    snprintf(text, sizeof text,
             ".pipeline %s\n"
             ".workers %s --sql h0.sql\n"
             ".source files drop --dir in --pattern '*.ndjson' --event-type %s --settle 0s --poll 1h\n",
             ta, ta, tb);
    rsrc_t_write(file, text);
    rsrc_t_run a;
    rsrc_t_start(&a, file, dsn, "rsrc-reload");
    int n = 0;
    pgpipe_workers *wa = NULL;
    for (int i = 0; i < 200 && !(wa = rsrc_t_workers(a.r, 0, &n)); i++)
        rsrc_t_nap(50);
    PGT_CHECK(wa != NULL);
    PGT_EQ_INT(n, 1);
    /* --poll 1h: the folder is looked at once, at start; a file dropped now waits */
    rsrc_t_nap(300);
    for (int i = 0; i < 200 && !rsrc_t_exists(dir, "in"); i++)
        rsrc_t_nap(50);
    snprintf(p, sizeof p, "%s/in/r1.ndjson", dir);
    FILE *fp = fopen(p, "w");
    PGT_CHECK(fp != NULL);
    rsrc_t_lines(fp, 1, 5);
    fclose(fp);

    snprintf(text, sizeof text,
             ".pipeline %s\n"
             ".workers %s --sql h0.sql\n"
             ".workers %s --sql h1.sql\n"
             ".source files drop --dir in --pattern '*.ndjson' --event-type %s --settle 0s --poll 100ms\n",
             ta, ta, tb, tb);
    rsrc_t_write(file, text);
    PGT_OK(pgpipe_runner_reload(a.r));
    for (int i = 0; i < 200 && n != 2; i++) {
        rsrc_t_workers(a.r, 0, &n);
        rsrc_t_nap(50);
    }
    PGT_EQ_INT(n, 2);
    PGT_CHECK(rsrc_t_workers(a.r, 0, &n) == wa); /* unchanged: kept running */
    /* the folder polls every 100ms now: the file goes in, the new workers take it */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s_out", tb);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 5, 20000), 5);
    /* the kept workers still work */
    snprintf(sql, sizeof sql, "INSERT INTO staging.raw_events (source, event_type, payload) "
             "SELECT 'test', '%s', jsonb_build_object('id', g) FROM generate_series(1, 3) g; "
             "NOTIFY pgpipe_events", ta);
    PQclear(PGT_EXEC(c, sql));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s_out", ta);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 3, 20000), 3);
    PGT_OK(rsrc_t_stop(&a));
    pgt_db_close(c);
}

/* A file whose load fails stays, is retried with backoff, and after
** RSRC_MAX_FAILURES failures is moved into DIR/failed. */
PGT_TEST(run_source, failing_file_moved_aside)
{
    const char *dsn = pgt_dsn();
    PGconn *c = pgt_db_open();
    int pid = (int)getpid();
    char dir[512], in[600], p[800], file[700], sql[512], text[2048], t[64];
    snprintf(t, sizeof t, "public.rsrc_gone_%d", pid);
    snprintf(dir, sizeof dir, "%s/rsrc_fail_%d", pgt_tmpdir(), pid);
    snprintf(in, sizeof in, "%s/in", dir);
    mkdir(dir, 0777);
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    snprintf(text, sizeof text,
             ".pipeline rsrc_fail_%d\n"
             "CREATE TABLE IF NOT EXISTS %s (LIKE staging.raw_events INCLUDING DEFAULTS);\n"
             ".source files bad --dir in --table %s --settle 0s --poll 50ms\n", pid, t, t);
    rsrc_t_write(file, text);
    rsrc_t_run a;
    rsrc_t_start(&a, file, dsn, "rsrc-fail");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_tables WHERE schemaname || '.' || tablename = '%s'", t);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 1, 20000), 1);
    /* the table goes away: every load of the file fails */
    snprintf(sql, sizeof sql, "DROP TABLE %s", t);
    PQclear(PGT_EXEC(c, sql));
    /* the runner makes the folder when its sources start, which may come
    ** after the step that made the table: wait for it (bounded 10 s) */
    for (int i = 0; i < 200 && !rsrc_t_exists(dir, "in"); i++)
        rsrc_t_nap(50);
    PGT_CHECK(rsrc_t_exists(dir, "in"));
    snprintf(p, sizeof p, "%s/x.ndjson", in);
    FILE *fp = fopen(p, "w");
    PGT_CHECK(fp != NULL);
    rsrc_t_lines(fp, 1, 3);
    fclose(fp);
    char failed[700];
    snprintf(failed, sizeof failed, "%s/failed", in);
    for (int i = 0; i < 200 && !rsrc_t_exists(failed, "x.ndjson"); i++)
        rsrc_t_nap(50);
    PGT_CHECK(rsrc_t_exists(failed, "x.ndjson"));
    PGT_CHECK(!rsrc_t_exists(in, "x.ndjson"));
    pp_buf m = { 0 };
    run_sources_metrics(a.r, &m);
    PGT_CHECK_MSG(m.data && strstr(m.data, "pgpipe_run_source_failures_total{source=\"bad\"} 5\n"), "%s",
                  m.data ? m.data : "");
    pp_buf_free(&m);
    PGT_OK(rsrc_t_stop(&a));
    pgt_db_close(c);
}

#ifndef PGPIPE_OMIT_HTTP
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

/* The HTTP source: its own server on its own thread, events into staging
** with the source's event type field; stop drains it. */
PGT_TEST(run_source, http_source)
{
    const char *dsn = pgt_dsn();
    PGconn *c = pgt_db_open();
    int pid = (int)getpid();
    char dir[512], file[700], text[1024], name[64];
    snprintf(name, sizeof name, "rsrc_http_%d", pid);
    snprintf(dir, sizeof dir, "%s/rsrc_http_%d", pgt_tmpdir(), pid);
    mkdir(dir, 0777);
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    /* --spool: the server owns a spool folder there (store and forward) */
    snprintf(text, sizeof text, ".pipeline %s\n.source http %s --listen 127.0.0.1:0 --event-type-field kind "
             "--spool %s/spool\n", name, name, dir);
    rsrc_t_write(file, text);
    rsrc_t_run a;
    rsrc_t_start(&a, file, dsn, "rsrc-http");
    int port = 0;
    for (int i = 0; i < 200 && !port; i++) {
        run_sources *s = __atomic_load_n(&a.r->sources, __ATOMIC_ACQUIRE);
        if (s) {
            pp_mutex_lock(&s->mu);
            if (s->nhttp == 1 && s->http[0]->running)
                port = pgpipe_http_port(s->http[0]->h, 0);
            pp_mutex_unlock(&s->mu);
        }
        if (!port)
            rsrc_t_nap(50);
    }
    PGT_CHECK(port > 0);
    char body[256], req[1024];
    snprintf(body, sizeof body, "[{\"kind\": \"%s\", \"n\": 1}, {\"kind\": \"%s\", \"n\": 2}]", name, name);
    snprintf(req, sizeof req, "POST /v1/events/%s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\nConnection: close\r\n\r\n%s", name, strlen(body), body);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    PGT_CHECK(connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
    PGT_CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
    char resp[2048];
    size_t got = 0;
    ssize_t k;
    while (got < sizeof resp - 1 && (k = read(fd, resp + got, sizeof resp - 1 - got)) > 0)
        got += (size_t)k;
    resp[got] = 0;
    close(fd);
    PGT_CHECK_MSG(!strncmp(resp, "HTTP/1.1 202", 12), "%s", resp);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE event_type = '%s' AND source = '%s'",
             name, name);
    PGT_EQ_INT(pgt_db_int(c, sql), 2);
    char lock[800];
    snprintf(lock, sizeof lock, "%s/spool/lock", dir);
    PGT_CHECK_MSG(access(lock, F_OK) == 0, "%s: the HTTP source did not open its spool", lock);
    PGT_OK(rsrc_t_stop(&a));
    pgt_db_close(c);
}
#endif

/* .source cdc: the runner streams another database's changes into
** staging (the conninfo from an environment variable), shows them in
** /metrics with the slot's lag, and stops with the runner; the file's
** errors are named with their column. */
PGT_TEST(run_source, cdc_source)
{
    pgpipe_pipefile *pf = NULL;
    static const char bad[] =
        ".pipeline p\n"
        ".source cdc a\n"
        ".source cdc b --source-env X --source 'dbname=y'\n"
        ".source cdc Big --source-env X\n"
        ".source cdc c --source-env X --slots s\n"
        ".alert cdc-lag --source nosuch --max-lag 10XB\n";
    pgpipe_pipefile_open(&pf, "t.pgpipe", bad, strlen(bad));
    PGT_CHECK(pf != NULL);
    pp_buf d = { 0 };
    for (int i = 0; i < pgpipe_pipefile_diag_count(pf); i++)
        pp_buf_appendf(&d, "%d:%d %s\n", pgpipe_pipefile_diag(pf, i)->line,
                       pgpipe_pipefile_diag(pf, i)->column, pgpipe_pipefile_diag(pf, i)->message);
    pp_buf_append(&d, "", 1);
    PGT_CONTAINS(d.data, "2:0 .source cdc: give the source database once");
    PGT_CONTAINS(d.data, "3:");
    PGT_CONTAINS(d.data, "4:0 .source cdc: slot \"Big\": a replication slot name has only lower");
    PGT_CONTAINS(d.data, ".source cdc: unknown option --slots (did you mean --slot?)");
    PGT_CONTAINS(d.data, "6:0 .alert cdc-lag: --source: no .source cdc \"nosuch\"");
    PGT_CONTAINS(d.data, ".alert cdc-lag: --max-lag: expected a size like 512MB or 10GB, got \"10XB\"");
    pp_buf_free(&d);
    pgpipe_pipefile_close(pf);

    char src[1200], dir[512], file[700], text[1024], name[64];
    snprintf(name, sizeof name, "rcdc_%d", (int)getpid());
    PGconn *s = cdc_src_fresh("rsrc_cdc", src, sizeof src, NULL);
    PQclear(PGT_EXEC(s, "CREATE TABLE t (id int PRIMARY KEY, v text)"));
    PGconn *c = pgt_db_open();
    snprintf(dir, sizeof dir, "%s/%s", pgt_tmpdir(), name);
    mkdir(dir, 0777);
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    /* the alert: any WAL kept at all is over a 1-byte limit */
    snprintf(text, sizeof text, ".pipeline %s\n"
             "CREATE TABLE IF NOT EXISTS public.%s_alerts (pipeline text, rule text, "
             "subject text, message text, detail jsonb, fired_at timestamptz);\n"
             ".source cdc %s --source-env RSRC_CDC_SOURCE --tables t --heartbeat 1s\n"
             ".alert cdc-lag --source %s --max-retained 1 --table public.%s_alerts\n",
             name, name, name, name, name);
    rsrc_t_write(file, text);
    setenv("RSRC_CDC_SOURCE", src, 1);
    rsrc_t_run a;
    rsrc_t_start(&a, file, pgt_dsn(), "rsrc-cdc");
    char sql[512];
    /* the slot is there once the source streams */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' "
             "AND active", name);
    long long active = 0;
    for (int i = 0; i < 200 && !(active = pgt_db_int(s, sql)); i++)
        rsrc_t_nap(50);
    PGT_CHECK(active == 1);
    PQclear(PGT_EXEC(s, "INSERT INTO t VALUES (1, 'a'), (2, 'b'); UPDATE t SET v = 'c' WHERE id = 2;"
                        "DELETE FROM t WHERE id = 1"));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", name);
    long long n = 0;
    for (int i = 0; i < 200 && (n = pgt_db_int(c, sql)) < 4; i++)
        rsrc_t_nap(50);
    PGT_EQ_INT(n, 4);
    snprintf(sql, sizeof sql, "SELECT string_agg(event_type, ',' ORDER BY id) FROM staging.raw_events "
             "WHERE source = '%s'", name);
    PGT_EQ_STR(pgt_db_str(c, sql), "public.t:insert,public.t:insert,public.t:update,public.t:delete");
    pp_buf m = { 0 };
    run_sources_metrics(a.r, &m);
    pp_buf_append(&m, "", 1);
    char want[160];
    snprintf(want, sizeof want, "pgpipe_cdc_events_total{source=\"%s\"} 4", name);
    PGT_CONTAINS(m.data, want);
    snprintf(want, sizeof want, "pgpipe_cdc_streaming{source=\"%s\"} 1", name);
    PGT_CONTAINS(m.data, want);
    pp_buf_free(&m);
    /* the cdc-lag alert fired once, from the slot's reading */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s_alerts WHERE rule = 'cdc-lag' AND "
             "message LIKE 'CDC source %%: slot lag %% WAL retained %% (limit 1)%%'", name);
    long long fired = 0;
    for (int i = 0; i < 200 && !(fired = pgt_db_int(c, sql)); i++)
        rsrc_t_nap(50);
    PGT_EQ_INT(fired, 1);
    PGT_OK(rsrc_t_stop(&a));
    unsetenv("RSRC_CDC_SOURCE");
    /* stopped: the slot stays (the next start resumes), nobody reads it */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' "
             "AND NOT active", name);
    long long idle = 0;
    for (int i = 0; i < 100 && !(idle = pgt_db_int(s, sql)); i++)
        rsrc_t_nap(50);
    PGT_EQ_INT(idle, 1);
    snprintf(sql, sizeof sql, "SELECT pg_drop_replication_slot('%s')", name);
    PQclear(PGT_EXEC(s, sql));
    PQfinish(s);
    pgt_db_close(c);
}

/* ---- the CDC slot guard ------------------------------------------------- */

/* The guard's options: each mistake is one diagnostic of --check. */
PGT_TEST(run_source, cdc_guard_check)
{
    static const char bad[] =
        ".pipeline p\n"
        ".workers public.t:insert --sql h.sql\n"
        ".source cdc a --source-env X --pause-workers 'public.t:*'\n"
        ".source cdc b --source-env X --pause-at 10MB\n"
        ".source cdc c --source-env X --pause-workers nosuch --pause-at 1XB\n"
        ".source cdc d --source-env X --pause-workers 'public.*' --pause-at 10MB --resume-at 20MB "
        "--drop-slot-at 5MB\n"
        ".source cdc e --source-env X --drop-slot-at 1GB --no-create --slot-check 10ms\n"
        ".source cdc f --source-env X --pause-workers 'public.t:*,,x' --pause-at 1MB\n"
        ".source cdc g --source-env X --resume-at 1MB\n"
        ".source cdc ok --source-env X --pause-workers ' public.t:* , *' --pause-at 1MB "
        "--drop-slot-at 1GB --slot-check 1s\n";
    pgpipe_pipefile *pf = NULL;
    pgpipe_pipefile_open(&pf, "t.pgpipe", bad, strlen(bad));
    PGT_CHECK(pf != NULL);
    pp_buf d = { 0 };
    for (int i = 0; i < pgpipe_pipefile_diag_count(pf); i++)
        pp_buf_appendf(&d, "%d:%d %s\n", pgpipe_pipefile_diag(pf, i)->line,
                       pgpipe_pipefile_diag(pf, i)->column, pgpipe_pipefile_diag(pf, i)->message);
    pp_buf_append(&d, "", 1);
    PGT_CONTAINS(d.data, "3:47 .source cdc: --pause-workers needs --pause-at SIZE");
    PGT_CONTAINS(d.data, "4:41 .source cdc: --pause-at needs --pause-workers \"TYPE[,TYPE...]\"");
    PGT_CONTAINS(d.data, ".source cdc: --pause-at: expected a size like 512MB or 10GB, got \"1XB\"");
    PGT_CONTAINS(d.data, "5:0 .source cdc c: --pause-workers: \"nosuch\" matches no .workers EVENT_TYPE");
    PGT_CONTAINS(d.data, ".source cdc: --resume-at must be below --pause-at");
    PGT_CONTAINS(d.data, ".source cdc: --drop-slot-at must be above --pause-at (pausing comes first)");
    PGT_CONTAINS(d.data, ".source cdc: --drop-slot-at makes a new slot after dropping one: not with "
                         "--no-create");
    PGT_CONTAINS(d.data, ".source cdc: --slot-check: at least 100ms");
    PGT_CONTAINS(d.data, "8:47 .source cdc: --pause-workers: an empty event type in \"public.t:*,,x\"");
    PGT_CONTAINS(d.data, "9:42 .source cdc: --resume-at needs --pause-at");
    PGT_CHECK_MSG(strstr(d.data, "\n10:") == NULL, "the valid line has a diagnostic:\n%s", d.data);
    const pgpipe_pipe_def *def = pgpipe_pipefile_def(pf);
    const pgpipe_pipe_source *ok = NULL;
    for (int i = 0; i < def->nsources; i++)
        if (!strcmp(def->sources[i].name, "ok"))
            ok = &def->sources[i];
    PGT_CHECK(ok != NULL);
    PGT_EQ_INT(ok->pause_at, 1 << 20);
    PGT_EQ_INT(ok->resume_at, 1 << 19); /* half of --pause-at */
    PGT_EQ_INT(ok->drop_slot_at, 1LL << 30);
    PGT_EQ_INT(ok->slot_check_ms, 1000);
    pp_buf_free(&d);
    pgpipe_pipefile_close(pf);
}

/* a metric of a CDC source, as /metrics shows it now; -1 when absent */
static long long rsrc_t_metric(pgpipe_runner *r, const char *metric, const char *source)
{
    pp_buf m = { 0 };
    run_sources_metrics(r, &m);
    pp_buf_append(&m, "", 1);
    char key[256];
    snprintf(key, sizeof key, "%s{source=\"%s\"} ", metric, source);
    const char *p = strstr(m.data, key);
    long long v = p ? atoll(p + strlen(key)) : -1;
    pp_buf_free(&m);
    return v;
}

static long long rsrc_t_wait_metric(pgpipe_runner *r, const char *metric, const char *source,
                                    long long want, int timeout_ms)
{
    long long v = -1;
    for (int waited = 0; waited <= timeout_ms; waited += 100) {
        if ((v = rsrc_t_metric(r, metric, source)) == want)
            return v;
        rsrc_t_nap(100);
    }
    return v;
}

/* A CDC source's directory, pipeline file and tables: items is published,
** filler is not (its WAL only makes the slot retain). */
static PGconn *rsrc_t_guard_setup(const char *db, const char *name, char *src, size_t srcsz,
                                  char *dir, size_t dirsz)
{
    PGconn *s = cdc_src_fresh(db, src, srcsz, NULL);
    PQclear(PGT_EXEC(s, "CREATE TABLE items (id int PRIMARY KEY, v text); "
                        "CREATE TABLE filler (id serial, pad text)"));
    snprintf(dir, dirsz, "%s/%s", pgt_tmpdir(), name);
    mkdir(dir, 0777);
    return s;
}

/* ~10 MB of WAL the slot must keep: an open transaction (hold) stops the
** slot's restart_lsn before it, whatever the stream confirms. */
static PGconn *rsrc_t_hold_wal(PGconn *s, const char *src)
{
    PGconn *hold = cdc_conn(src);
    PQclear(PGT_EXEC(hold, "BEGIN; INSERT INTO filler (pad) VALUES ('hold')"));
    PQclear(PGT_EXEC(s, "INSERT INTO filler (pad) SELECT repeat(md5(g::text), 40) "
                        "FROM generate_series(1, 8000) g"));
    return hold;
}

/* The slot guard pauses the workers it names when the slot retains more
** than --pause-at: they claim nothing while the stream goes on staging, and
** resume once the retained WAL falls below --resume-at; each step is an
** alert and a /metrics count. */
PGT_TEST(run_source, cdc_guard_pauses_workers)
{
    char src[1200], dir[512], file[700], text[2048], name[64], sql[1024];
    snprintf(name, sizeof name, "rgp_%d", (int)getpid());
    PGconn *s = rsrc_t_guard_setup("rsrc_guard", name, src, sizeof src, dir, sizeof dir);
    PGconn *c = pgt_db_open();
    snprintf(sql, sizeof sql, "INSERT INTO public.%s_seen (id) SELECT (e->'payload'->'row'->>'id')::int "
             "FROM jsonb_array_elements($1::jsonb) e;\n", name);
    snprintf(file, sizeof file, "%s/handler.sql", dir);
    rsrc_t_write(file, sql);
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    snprintf(text, sizeof text, ".pipeline %s\n"
             "CREATE TABLE IF NOT EXISTS public.%s_seen (id int);\n"
             "CREATE TABLE IF NOT EXISTS public.%s_alerts (pipeline text, rule text, "
             "subject text, message text, detail jsonb, fired_at timestamptz);\n"
             ".source cdc %s --source-env RSRC_GUARD_SOURCE --tables items --heartbeat 1s "
             "--slot-check 200ms --pause-workers 'public.items:*' --pause-at 4MB\n"
             ".workers public.items:insert --sql handler.sql --batch 10\n"
             ".alert cdc-lag --source %s --table public.%s_alerts\n",
             name, name, name, name, name, name);
    rsrc_t_write(file, text);
    setenv("RSRC_GUARD_SOURCE", src, 1);
    rsrc_t_run a;
    rsrc_t_start(&a, file, pgt_dsn(), "rsrc-guard");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' "
             "AND active", name);
    PGT_EQ_INT(rsrc_t_wait(s, sql, 1, 10000), 1);
    /* not paused: the workers take the changes */
    PQclear(PGT_EXEC(s, "INSERT INTO items SELECT g, 'a' FROM generate_series(1, 5) g"));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s_seen", name);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 5, 10000), 5);
    PGT_EQ_INT(rsrc_t_metric(a.r, "pgpipe_cdc_guard_paused", name), 0);

    PGconn *hold = rsrc_t_hold_wal(s, src);
    PGT_EQ_INT(rsrc_t_wait_metric(a.r, "pgpipe_cdc_guard_pauses_total", name, 1, 15000), 1);
    PGT_EQ_INT(rsrc_t_metric(a.r, "pgpipe_cdc_guard_paused", name), 1);
    /* paused: the stream stages the changes, the workers claim none */
    PQclear(PGT_EXEC(s, "INSERT INTO items SELECT g, 'b' FROM generate_series(6, 10) g"));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", name);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 10, 10000), 10);
    rsrc_t_nap(1500); /* more than the workers' poll interval: they would have claimed */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' AND "
             "NOT processed AND claimed_by IS NULL", name);
    PGT_EQ_INT(pgt_db_int(c, sql), 5);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s_seen", name);
    PGT_EQ_INT(pgt_db_int(c, sql), 5);
    PGT_EQ_INT(rsrc_t_metric(a.r, "pgpipe_cdc_guard_resumes_total", name), 0);
    /* the pause is an alert, delivered by the source's cdc-lag rule, and
    ** firing (the status page lists it) */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s_alerts WHERE rule = 'cdc-guard' AND "
             "subject = '%s' AND message LIKE '%%workers public.items:insert paused%%' AND "
             "detail->>'action' = 'pause' AND (detail->>'retained_bytes')::bigint >= 4194304", name, name);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 1, 10000), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.run_alert_state WHERE pipeline = '%s' AND "
             "rule = 'cdc-guard' AND firing", name);
    PGT_EQ_INT(pgt_db_int(c, sql), 1);

    /* the hold ends; a checkpoint logs the running transactions, from which
    ** the slot's restart_lsn moves on once the stream confirms past it */
    PQclear(PGT_EXEC(hold, "COMMIT"));
    PQfinish(hold);
    long long resumed = 0;
    for (int i = 0; i < 60 && resumed != 1; i++) {
        PQclear(PGT_EXEC(s, "CHECKPOINT"));
        resumed = rsrc_t_wait_metric(a.r, "pgpipe_cdc_guard_resumes_total", name, 1, 500);
    }
    PGT_EQ_INT(resumed, 1);
    PGT_EQ_INT(rsrc_t_metric(a.r, "pgpipe_cdc_guard_paused", name), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s_seen", name);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 10, 10000), 10);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s_alerts WHERE rule = 'cdc-guard' AND "
             "message LIKE '%%workers public.items:insert resumed%%'", name);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 1, 10000), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.run_alert_state WHERE pipeline = '%s' AND "
             "rule = 'cdc-guard' AND firing", name);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 0, 10000), 0);
    PGT_OK(rsrc_t_stop(&a));
    unsetenv("RSRC_GUARD_SOURCE");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' "
             "AND NOT active", name);
    PGT_EQ_INT(rsrc_t_wait(s, sql, 1, 10000), 1);
    snprintf(sql, sizeof sql, "SELECT pg_drop_replication_slot('%s')", name);
    PQclear(PGT_EXEC(s, sql));
    PQfinish(s);
    pgt_db_close(c);
}

/* With --drop-slot-at, a slot that retains that much is dropped and made
** again, and the tables come again as a snapshot: the rows streamed before
** are staged a second time as snapshot events, then streaming goes on. */
PGT_TEST(run_source, cdc_guard_drops_slot_and_resnapshots)
{
    char src[1200], dir[512], file[700], text[2048], name[64], sql[1024];
    snprintf(name, sizeof name, "rgd_%d", (int)getpid());
    PGconn *s = rsrc_t_guard_setup("rsrc_guard_drop", name, src, sizeof src, dir, sizeof dir);
    PGconn *c = pgt_db_open();
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    snprintf(text, sizeof text, ".pipeline %s\n"
             "CREATE TABLE IF NOT EXISTS public.%s_alerts (pipeline text, rule text, "
             "subject text, message text, detail jsonb, fired_at timestamptz);\n"
             ".source cdc %s --source-env RSRC_GUARD_SOURCE --tables items --heartbeat 1s "
             "--slot-check 200ms --drop-slot-at 4MB\n"
             ".alert cdc-lag --source %s --table public.%s_alerts\n",
             name, name, name, name, name);
    rsrc_t_write(file, text);
    setenv("RSRC_GUARD_SOURCE", src, 1);
    rsrc_t_run a;
    rsrc_t_start(&a, file, pgt_dsn(), "rsrc-guard-drop");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' "
             "AND active", name);
    PGT_EQ_INT(rsrc_t_wait(s, sql, 1, 10000), 1);
    PQclear(PGT_EXEC(s, "INSERT INTO items SELECT g, 'a' FROM generate_series(1, 3) g"));
    char staged[256];
    snprintf(staged, sizeof staged, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' "
             "AND event_type = 'public.items:insert'", name);
    PGT_EQ_INT(rsrc_t_wait(c, staged, 3, 10000), 3);
    PGT_EQ_INT(rsrc_t_metric(a.r, "pgpipe_cdc_guard_slot_drops_total", name), 0);

    PGconn *hold = rsrc_t_hold_wal(s, src);
    PGT_EQ_INT(rsrc_t_wait_metric(a.r, "pgpipe_cdc_guard_slot_drops_total", name, 1, 15000), 1);
    /* the target forgot the old slot's position */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.cdc_slots WHERE slot = '%s'", name);
    /* the new slot waits for the hold to end (a consistent start) */
    PQclear(PGT_EXEC(hold, "COMMIT"));
    PQfinish(hold);
    PGT_EQ_INT(rsrc_t_wait(s, "SELECT count(*) FROM pg_replication_slots WHERE NOT temporary AND "
                              "database = 'rsrc_guard_drop' AND active", 1, 15000), 1);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 1, 10000), 1);
    /* the snapshot staged the three rows again, marked as such */
    PGT_EQ_INT(rsrc_t_wait(c, staged, 6, 15000), 6);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' AND "
             "(payload->>'snapshot')::boolean AND payload->>'op' = 'insert'", name);
    PGT_EQ_INT(pgt_db_int(c, sql), 3);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.cdc_snapshot_tables WHERE slot = '%s' AND "
             "done_at IS NOT NULL AND rows = 3", name);
    PGT_EQ_INT(pgt_db_int(c, sql), 1);
    /* and streaming goes on from the new slot */
    PQclear(PGT_EXEC(s, "INSERT INTO items VALUES (4, 'b')"));
    PGT_EQ_INT(rsrc_t_wait(c, staged, 7, 10000), 7);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM public.%s_alerts WHERE rule = 'cdc-guard' AND "
             "message LIKE '%%dropping slot %s%%snapshot%%' AND detail->>'action' = 'drop-slot' AND "
             "(detail->>'retained_bytes')::bigint >= 4194304", name, name);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 1, 10000), 1);
    PGT_EQ_INT(rsrc_t_metric(a.r, "pgpipe_cdc_guard_slot_drops_total", name), 1);
    PGT_OK(rsrc_t_stop(&a));
    unsetenv("RSRC_GUARD_SOURCE");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' "
             "AND NOT active", name);
    PGT_EQ_INT(rsrc_t_wait(s, sql, 1, 10000), 1);
    snprintf(sql, sizeof sql, "SELECT pg_drop_replication_slot('%s')", name);
    PQclear(PGT_EXEC(s, sql));
    PQfinish(s);
    pgt_db_close(c);
}

/* A slot the source invalidates (wal_status lost, past
** max_slot_wal_keep_size): with --drop-slot-at the guard drops it and
** starts again with a snapshot; without, it only pauses the workers and
** leaves the slot as it is. */
PGT_TEST(run_source, cdc_guard_lost_slot)
{
    char src[1200], dir[512], file[700], text[2048], name[64], sql[1024], a_[80], b_[80];
    snprintf(name, sizeof name, "rgl_%d", (int)getpid());
    snprintf(a_, sizeof a_, "%sa", name);
    snprintf(b_, sizeof b_, "%sb", name);
    PGconn *s = rsrc_t_guard_setup("rsrc_guard_lost", name, src, sizeof src, dir, sizeof dir);
    PGconn *c = pgt_db_open();
    snprintf(file, sizeof file, "%s/handler.sql", dir);
    rsrc_t_write(file, "SELECT count(*) FROM jsonb_array_elements($1::jsonb);\n");
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    /* a: drops (1GB is never reached: only the lost slot does it); b: pauses */
    snprintf(text, sizeof text, ".pipeline %s\n"
             ".source cdc %s --source-env RSRC_GUARD_SOURCE --tables items --slot-check 200ms "
             "--drop-slot-at 1GB\n"
             ".source cdc %s --source-env RSRC_GUARD_SOURCE --tables items --slot-check 200ms "
             "--pause-workers 'public.items:*' --pause-at 1GB\n"
             ".workers public.items:insert --sql handler.sql\n", name, a_, b_);
    rsrc_t_write(file, text);
    setenv("RSRC_GUARD_SOURCE", src, 1);
    rsrc_t_run a;
    rsrc_t_start(&a, file, pgt_dsn(), "rsrc-guard-lost");
    PGT_EQ_INT(rsrc_t_wait(s, "SELECT count(*) FROM pg_replication_slots WHERE NOT temporary AND "
                              "database = 'rsrc_guard_lost' AND active", 2, 10000), 2);
    PQclear(PGT_EXEC(s, "INSERT INTO items SELECT g, 'a' FROM generate_series(1, 2) g"));
    char staged[256];
    snprintf(staged, sizeof staged, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", a_);
    PGT_EQ_INT(rsrc_t_wait(c, staged, 2, 10000), 2);

    /* both slots pinned by an open transaction, the source keeps 1 MB */
    PGconn *hold = cdc_conn(src);
    PQclear(PGT_EXEC(hold, "BEGIN; INSERT INTO filler (pad) VALUES ('hold')"));
    PQclear(PGT_EXEC(s, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'"));
    PQclear(PGT_EXEC(s, "SELECT pg_reload_conf()"));
    pgpipe_sleep_ms(200);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' AND "
             "wal_status = 'lost'", b_);
    long long lost = 0;
    for (int i = 0; i < 10 && !(lost = pgt_db_int(s, sql)); i++) {
        PQclear(PGT_EXEC(s, "INSERT INTO filler (pad) SELECT repeat(md5(g::text), 40) "
                            "FROM generate_series(1, 2000) g"));
        PQclear(PGT_EXEC(s, "SELECT pg_switch_wal()"));
        PQclear(PGT_EXEC(s, "CHECKPOINT"));
    }
    /* the setting goes back before anything can fail: later tests share the source */
    PQclear(PGT_EXEC(s, "ALTER SYSTEM RESET max_slot_wal_keep_size"));
    PQclear(PGT_EXEC(s, "SELECT pg_reload_conf()"));
    PGT_EQ_INT(lost, 1);
    PGT_EQ_INT(rsrc_t_wait_metric(a.r, "pgpipe_cdc_guard_slot_drops_total", a_, 1, 15000), 1);
    PGT_EQ_INT(rsrc_t_wait_metric(a.r, "pgpipe_cdc_guard_paused", b_, 1, 15000), 1);
    PQclear(PGT_EXEC(hold, "COMMIT"));
    PQfinish(hold);
    /* a: a new slot, the two rows again from its snapshot */
    PGT_EQ_INT(rsrc_t_wait(c, staged, 4, 15000), 4);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' AND "
             "(payload->>'snapshot')::boolean", a_);
    PGT_EQ_INT(pgt_db_int(c, sql), 2);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '%s' AND "
             "wal_status <> 'lost'", a_);
    PGT_EQ_INT(pgt_db_int(s, sql), 1);
    /* b: never dropped without --drop-slot-at; its workers stay paused */
    snprintf(sql, sizeof sql, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '%s'", b_);
    PGT_EQ_STR(pgt_db_str(s, sql), "lost");
    PGT_EQ_INT(rsrc_t_metric(a.r, "pgpipe_cdc_guard_slot_drops_total", b_), 0);
    PGT_EQ_INT(rsrc_t_metric(a.r, "pgpipe_cdc_guard_paused", b_), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.run_alerts WHERE pipeline = '%s' AND "
             "rule = 'cdc-guard' AND ((subject = '%s' AND message LIKE '%%invalidated%%dropping%%') "
             "OR (subject = '%s' AND message LIKE '%%(wal_status)%%paused%%'))", name, a_, b_);
    PGT_EQ_INT(rsrc_t_wait(c, sql, 2, 10000), 2);
    PGT_OK(rsrc_t_stop(&a));
    unsetenv("RSRC_GUARD_SOURCE");
    PQclear(PGT_EXEC(s, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE database = 'rsrc_guard_lost' AND NOT active"));
    PQfinish(s);
    pgt_db_close(c);
}
