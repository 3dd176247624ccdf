/* Failover and hung servers (issue 20), in the loader's group: a load whose
** committed batches a failover to an asynchronous replica lost, and
** pgpipe_loader_cancel (the shell's Ctrl-C, test/sh/shell_cancel.sh, covers
** a COMMIT stuck on a synchronous standby, in .load and .work).
** The failover tests run their own primary and streaming replica
** (tool/pgtmp.sh, pg_basebackup -R), never the shared test cluster: the
** primary is stopped (immediate) and the replica promoted in the middle of
** the load. The replica is made to lag on purpose: after the first batches
** reached it, its primary_conninfo is emptied (the WAL receiver stops), the
** loader commits more batches on the primary alone, then the primary dies
** and the loader's multi-host conninfo reaches the promoted replica. */
#include <limits.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>

typedef struct fo_pair {
    char dir[300], bindir[300], runas[64];
    int pport, rport;
    char dsn[512];    /* both hosts, read-write one */
} fo_pair;

static int fo_sh(const char *fmt, ...) PP_PRINTF(1, 2);
static int fo_sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128;
}

static int fo_read_int(const char *path)
{
    FILE *f = fopen(path, "r");
    int v = 0;
    if (f) {
        if (fscanf(f, "%d", &v) != 1)
            v = 0;
        fclose(f);
    }
    return v;
}

static PGconn *fo_conn(int port)
{
    char ci[128];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d user=postgres dbname=postgres", port);
    PGconn *c = PQconnectdb(ci);
    PGT_CHECK_MSG(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static long long fo_int(PGconn *c, const char *sql)
{
    PGresult *r = PGT_EXEC(c, sql);
    long long v = PQntuples(r) == 1 && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

/* Poll until sql on c gives 1 (every 20 ms, at most 30 s). */
static void fo_until(PGconn *c, const char *sql)
{
    for (int i = 0; i < 1500; i++) {
        if (fo_int(c, sql) == 1)
            return;
        pgpipe_sleep_ms(20);
    }
    PGT_CHECK_MSG(0, "still not true after 30 s: %s", sql);
}

/* A primary and its streaming replica, each stopped when this test ends. */
static void fo_start(fo_pair *p, const char *name)
{
    const char *top = getenv("PGPIPE_TOP");
    if (!top || !*top)
        top = ".";
    FILE *b = popen("sh tool/pgtmp.sh bindir 2>/dev/null", "r");
    PGT_CHECK(b != NULL);
    if (!fgets(p->bindir, sizeof p->bindir, b))
        p->bindir[0] = '\0';
    pclose(b);
    p->bindir[strcspn(p->bindir, "\n")] = '\0';
    /* the directory may hold links to initdb and pg_ctl alone: the one
    ** pg_ctl really is in has pg_basebackup too */
    char tool[400], real[300];
    snprintf(tool, sizeof tool, "%s/pg_ctl", p->bindir);
    ssize_t len = readlink(tool, real, sizeof real - 1);
    if (len > 0 && real[0] == '/') {
        real[len] = '\0';
        char *slash = strrchr(real, '/');
        *slash = '\0';
        snprintf(p->bindir, sizeof p->bindir, "%s", real);
    }
    snprintf(tool, sizeof tool, "%s/pg_basebackup", p->bindir);
    if (!p->bindir[0] || access(tool, X_OK) != 0)
        PGT_SKIP("no pg_basebackup");
    /* pgtmp runs the servers as postgres when we are root: so do the tools */
    snprintf(p->runas, sizeof p->runas, "%s", geteuid() == 0 ? "runuser -u postgres --" : "");
    snprintf(p->dir, sizeof p->dir, "%s/%s.%d", pgt_tmpdir(), name, (int)getpid());
    PGT_CHECK(mkdir(p->dir, 0755) == 0);
    PGT_EQ_INT(fo_sh("cd '%s' && sh tool/pgtmp.sh start '%s/p' --tcp --owner %d >/dev/null", top,
                     p->dir, (int)getpid()), 0);
    char path[400];
    snprintf(path, sizeof path, "%s/p/port", p->dir);
    p->pport = fo_read_int(path);
    PGT_CHECK(p->pport > 0);
    PGT_EQ_INT(fo_sh("mkdir '%s/r' && chmod 755 '%s/r'", p->dir, p->dir), 0);
    if (geteuid() == 0)
        PGT_EQ_INT(fo_sh("chown postgres '%s/r'", p->dir), 0);
    PGT_EQ_INT(fo_sh("%s '%s' -h 127.0.0.1 -p %d -U postgres -D '%s/r/data' -R -X stream -c fast "
                     "--no-sync >'%s/basebackup.log' 2>&1", p->runas, tool, p->pport, p->dir,
                     p->dir), 0);
    PGT_EQ_INT(fo_sh("cd '%s' && sh tool/pgtmp.sh start '%s/r' --tcp --owner %d >/dev/null", top,
                     p->dir, (int)getpid()), 0);
    snprintf(path, sizeof path, "%s/r/port", p->dir);
    p->rport = fo_read_int(path);
    PGT_CHECK(p->rport > 0);
    snprintf(p->dsn, sizeof p->dsn, "host=127.0.0.1,127.0.0.1 port=%d,%d user=postgres "
             "dbname=postgres target_session_attrs=read-write connect_timeout=5",
             p->pport, p->rport);
    PGconn *c = fo_conn(p->pport);
    fo_until(c, "SELECT (count(*) = 1)::int FROM pg_stat_replication WHERE state = 'streaming'");
    pgt_db_install(c);
    PQfinish(c);
}

static void fo_stop(fo_pair *p)
{
    const char *top = getenv("PGPIPE_TOP");
    fo_sh("cd '%s' && sh tool/pgtmp.sh stop '%s/r' >/dev/null 2>&1; sh tool/pgtmp.sh stop '%s/p' "
          ">/dev/null 2>&1", top && *top ? top : ".", p->dir, p->dir);
}

/* The replica has replayed everything the primary wrote; then it stops
** receiving (its WAL receiver goes when primary_conninfo is emptied). */
static void fo_cut_replication(fo_pair *p)
{
    PGconn *pc = fo_conn(p->pport), *rc = fo_conn(p->rport);
    char sql[256];
    char *lsn = NULL;
    PGresult *r = PGT_EXEC(pc, "SELECT pg_current_wal_lsn()::text");
    lsn = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    snprintf(sql, sizeof sql, "SELECT (pg_last_wal_replay_lsn() >= '%s'::pg_lsn)::int", lsn);
    free(lsn);
    fo_until(rc, sql);
    PQclear(PGT_EXEC(rc, "ALTER SYSTEM SET primary_conninfo = ''"));
    PQclear(PGT_EXEC(rc, "SELECT pg_reload_conf()"));
    fo_until(rc, "SELECT (count(*) = 0)::int FROM pg_stat_wal_receiver");
    PQfinish(pc);
    PQfinish(rc);
}

/* The primary dies (immediate: no shutdown checkpoint, no last WAL sent)
** and the replica becomes the primary. */
static void fo_failover(fo_pair *p)
{
    PGT_EQ_INT(fo_sh("%s '%s/pg_ctl' -D '%s/p/data' -m immediate -w stop >/dev/null 2>&1", p->runas,
                     p->bindir, p->dir), 0);
    PGT_EQ_INT(fo_sh("%s '%s/pg_ctl' -D '%s/r/data' -w promote >/dev/null 2>&1", p->runas, p->bindir,
                     p->dir), 0);
}

typedef struct fo_run {
    fo_pair *p;
    long long cut_after, fail_after;
} fo_run;

static int fo_progress(void *ud, const pgpipe_load_progress *pr)
{
    fo_run *f = ud;
    if (pr->batches == f->cut_after) {
        f->cut_after = -1;
        fo_cut_replication(f->p);
    }
    if (pr->batches == f->fail_after) {
        f->fail_after = -1; /* once: the reload counts its batches anew */
        fo_failover(f->p);
    }
    return 0;
}

/* 2,000 records, every 250th not JSON (dead-lettered: 8). */
static void fo_write(const char *path, int from, int to)
{
    FILE *f = fopen(path, from ? "a" : "w");
    PGT_CHECK(f != NULL);
    for (int i = from; i < to; i++) {
        if (i % 250 == 249)
            fprintf(f, "{not json %d\n", i);
        else
            fprintf(f, "{\"event_type\":\"fo\",\"n\":%d}\n", i);
    }
    PGT_CHECK(fclose(f) == 0);
}

/* What the new primary holds of the load: every record once, and the
** invariant records in = loaded + dead-lettered in its pgpipe.loads row. */
static void fo_check_server(fo_pair *p, long long load_id, const char *src, long long expect_rows)
{
    PGconn *c = fo_conn(p->rport);
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", src);
    PGT_EQ_INT(fo_int(c, sql), expect_rows);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT payload->>'n') FROM staging.raw_events "
             "WHERE source = '%s'", src);
    PGT_EQ_INT(fo_int(c, sql), expect_rows);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = '%s'", src);
    PGT_EQ_INT(fo_int(c, sql), 2000 - expect_rows);
    snprintf(sql, sizeof sql, "SELECT rows_read FROM pgpipe.loads WHERE id = %lld", load_id);
    PGT_EQ_INT(fo_int(c, sql), 2000);
    snprintf(sql, sizeof sql, "SELECT rows_loaded FROM pgpipe.loads WHERE id = %lld", load_id);
    PGT_EQ_INT(fo_int(c, sql), expect_rows);
    snprintf(sql, sizeof sql, "SELECT rows_dead_lettered FROM pgpipe.loads WHERE id = %lld", load_id);
    PGT_EQ_INT(fo_int(c, sql), 2000 - expect_rows);
    snprintf(sql, sizeof sql, "SELECT status FROM pgpipe.loads WHERE id = %lld", load_id);
    PGresult *r = PGT_EXEC(c, sql);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "completed");
    PQclear(r);
    PQfinish(c);
}

/* A file, on two lanes: the loader finds the batches committed after the
** cut missing on the promoted replica and loads them again from the file,
** so the load ends with every record on the new primary exactly once (it
** printed success with about 500 missing). */
PGT_TEST(copy, failover_file_batches_lost_are_reloaded)
{
    fo_pair p;
    fo_start(&p, "fo_file");
    char path[512], src[64];
    snprintf(path, sizeof path, "%s/fo_file.%d.ndjson", pgt_tmpdir(), (int)getpid());
    snprintf(src, sizeof src, "fo_file_%d", (int)getpid());
    fo_write(path, 0, 2000);
    fo_run f = { &p, 5, 10 };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = p.dsn;
    o.connections = 2; /* which batches are in flight at the cut varies: about 5 are lost */
    o.batch_rows = 100;
    o.source_name = src;
    o.progress = fo_progress;
    o.progress_ud = &f;
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o));
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.records_read, 2000);
    PGT_EQ_INT(s.rows_loaded, 1992);
    PGT_EQ_INT(s.rows_dead, 8);
    PGT_EQ_INT(s.rows_skipped, 0);
    PGT_CHECK_MSG(s.batches_reloaded >= 3 && s.batches_reloaded <= 7, "%lld reloaded",
                  s.batches_reloaded);
    PGT_EQ_INT(s.batches, 20);
    PGT_EQ_INT(s.rows_missing, 0);
    char line[512];
    pgpipe_load_summary_format(&s, line, sizeof line);
    PGT_CONTAINS(line, "batches lost in a failover loaded again");
    pgpipe_loader_close(l);
    fo_check_server(&p, s.load_id, src, 1992);
    fo_stop(&p);
}

/* The replica stops receiving before the load begins: the commit that
** registered the load (its pgpipe.loads row) is on the old primary alone,
** as are the first batches. After the failover the loader's next batch
** hit the foreign key of its load_batches / dead_letters rows (23503) and
** the load failed; it must find its loads row gone and load the file again
** under a new one. */
static void fo_loads_row_lost(const char *name, int connections)
{
    fo_pair p;
    fo_start(&p, name);
    char path[512], src[64];
    snprintf(path, sizeof path, "%s/%s.%d.ndjson", pgt_tmpdir(), name, (int)getpid());
    snprintf(src, sizeof src, "%s_%d", name, (int)getpid());
    fo_write(path, 0, 2000);
    fo_run f = { &p, -1, 3 };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = p.dsn;
    o.connections = connections;
    o.batch_rows = 100;
    o.source_name = src;
    o.progress = fo_progress;
    o.progress_ud = &f;
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o)); /* the schema, on both */
    fo_cut_replication(&p);
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_EQ_INT(f.fail_after, -1); /* the failover happened */
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.records_read, 2000);
    PGT_EQ_INT(s.rows_loaded, 1992);
    PGT_EQ_INT(s.rows_dead, 8);
    PGT_EQ_INT(s.rows_missing, 0);
    pgpipe_loader_close(l);
    fo_check_server(&p, s.load_id, src, 1992);
    PGconn *c = fo_conn(p.rport);
    PGT_EQ_INT(fo_int(c, "SELECT count(*) FROM pgpipe.loads"), 1);
    PGT_EQ_INT(fo_int(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE load_id IS NULL"), 0);
    PQfinish(c);
    fo_stop(&p);
}

PGT_TEST(copy, failover_loads_row_lost_is_registered_again)
{
    fo_loads_row_lost("fo_reg", 1);
}

/* The same on two lanes: the batch that hits the foreign key may be on
** either, and the check whether the loads row is there runs on the first,
** whose connection the failover may have broken while it was idle (the
** chaos run saw such a load give up on the 23503 instead of loading the
** file again: the check had one attempt). Which lane is idle varies, so
** this covers the two-lane path; the one attempt is fixed in
** copy_load_check. */
PGT_TEST(copy, failover_loads_row_lost_two_lanes_is_registered_again)
{
    fo_loads_row_lost("fo_reg2", 2);
}

/* What a lost registration leaves when another load registered since and
** got the same id (the sequence's advance was lost too): the load's rows
** are gone, an impostor has its id. Made by hand, on the shared cluster,
** between batches 2 and 3: the loader must not count its batches in the
** impostor's row (the foreign key holds), but register anew and load the
** file again. */
typedef struct fo_impostor {
    pgpipe_loader *l;
    char src[64];
    int done;
} fo_impostor;

static int fo_impostor_progress(void *ud, const pgpipe_load_progress *pr)
{
    fo_impostor *m = ud;
    if (pr->batches != 2 || m->done)
        return 0;
    m->done = 1;
    pgpipe_load_summary s;
    pgpipe_loader_summary(m->l, &s);
    PGconn *c = pgt_connect();
    char sql[1024];
    snprintf(sql, sizeof sql, "BEGIN; "
             "DELETE FROM staging.raw_events WHERE batch_id IN (SELECT batch_id FROM "
             "pgpipe.load_batches WHERE load_id = %lld); "
             "DELETE FROM pgpipe.dead_letters WHERE load_id = %lld; "
             "DELETE FROM pgpipe.loads WHERE id = %lld; "
             "INSERT INTO pgpipe.loads (id, source, format, started_at) VALUES "
             "(%lld, '%s_impostor', 'csv', now() - interval '1 hour'); COMMIT",
             s.load_id, s.load_id, s.load_id, s.load_id, m->src);
    PQclear(PGT_EXEC(c, sql));
    PQfinish(c);
    return 0;
}

PGT_TEST(copy, failover_loads_id_of_another_load_is_not_ours)
{
    char path[512];
    fo_impostor m;
    memset(&m, 0, sizeof m);
    snprintf(path, sizeof path, "%s/fo_imp.%d.ndjson", pgt_tmpdir(), (int)getpid());
    snprintf(m.src, sizeof m.src, "fo_imp_%d", (int)getpid());
    fo_write(path, 0, 2000);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.connections = 1;
    o.batch_rows = 100;
    o.source_name = m.src;
    o.progress = fo_impostor_progress;
    o.progress_ud = &m;
    PGT_OK(pgpipe_loader_open(&m.l, &o));
    int rc = pgpipe_loader_load_file(m.l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(m.l));
    PGT_EQ_INT(m.done, 1);
    pgpipe_load_summary s;
    pgpipe_loader_summary(m.l, &s);
    PGT_EQ_INT(s.records_read, 2000);
    PGT_EQ_INT(s.rows_loaded, 1992);
    PGT_EQ_INT(s.rows_dead, 8);
    pgpipe_loader_close(m.l);
    PGconn *c = pgt_connect();
    char sql[512];
    /* the impostor's row is untouched, and nothing of the file is in its name */
    snprintf(sql, sizeof sql, "SELECT batches + rows_read + (status = 'running')::int FROM "
             "pgpipe.loads WHERE source = '%s_impostor'", m.src);
    PGT_EQ_INT(fo_int(c, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.load_batches b JOIN pgpipe.loads l ON "
             "l.id = b.load_id WHERE l.source = '%s_impostor'", m.src);
    PGT_EQ_INT(fo_int(c, sql), 0);
    /* the new load holds every record once */
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", m.src);
    PGT_EQ_INT(fo_int(c, sql), 1992);
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT payload->>'n') FROM staging.raw_events "
             "WHERE source = '%s'", m.src);
    PGT_EQ_INT(fo_int(c, sql), 1992);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = '%s'",
             m.src);
    PGT_EQ_INT(fo_int(c, sql), 8);
    snprintf(sql, sizeof sql, "SELECT rows_read || ' ' || rows_loaded || ' ' || rows_dead_lettered "
             "|| ' ' || status FROM pgpipe.loads WHERE id = %lld", s.load_id);
    PGresult *r = PGT_EXEC(c, sql);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "2000 1992 8 completed");
    PQclear(r);
    PQfinish(c);
}

/* The same, fed in chunks (it cannot be read again): the load fails and
** says what happened; running it again with its key loads everything. */
PGT_TEST(copy, failover_loads_row_lost_stream_fails_loudly)
{
    char path[512], key[64];
    fo_impostor m;
    memset(&m, 0, sizeof m);
    snprintf(path, sizeof path, "%s/fo_imps.%d.ndjson", pgt_tmpdir(), (int)getpid());
    snprintf(m.src, sizeof m.src, "fo_imps_%d", (int)getpid());
    snprintf(key, sizeof key, "fo-imps-%d", (int)getpid());
    fo_write(path, 0, 2000);
    FILE *in = fopen(path, "r");
    PGT_CHECK(in != NULL);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, in);
    fclose(in);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.connections = 1;
    o.batch_rows = 100;
    o.source_name = m.src;
    o.load_key = key;
    o.progress = fo_impostor_progress;
    o.progress_ud = &m;
    for (int run = 0; run < 2; run++) {
        PGT_OK(pgpipe_loader_open(&m.l, &o));
        pgpipe_loader_feed(m.l, buf, n); /* fails at batch 3 in the first run */
        int rc = pgpipe_loader_finish(m.l);
        pgpipe_load_summary s;
        pgpipe_loader_summary(m.l, &s);
        if (run == 0) {
            PGT_EQ_INT(m.done, 1);
            PGT_EQ_INT(rc, PGPIPE_DB);
            const char *msg = pgpipe_errmsg(m.l);
            PGT_CONTAINS(msg, "its row in pgpipe.loads is not on the server now");
            PGT_CONTAINS(msg, "the 2 batches (200 records)");
            PGT_CONTAINS(msg, "run the same load again");
            PGT_EQ_INT(s.rows_loaded + s.rows_dead, 0);
            PGT_EQ_INT(s.rows_missing, 200);
        } else {
            PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(m.l));
            PGT_EQ_INT(s.rows_loaded, 1992);
            PGT_EQ_INT(s.rows_dead, 8);
            PGT_EQ_INT(s.rows_skipped, 0);
        }
        pgpipe_loader_close(m.l);
    }
    PGconn *c = pgt_connect();
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) || ' ' || count(DISTINCT payload->>'n') FROM "
             "staging.raw_events WHERE source = '%s'", m.src);
    PGresult *r = PGT_EXEC(c, sql);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "1992 1992");
    PQclear(r);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = '%s'",
             m.src);
    PGT_EQ_INT(fo_int(c, sql), 8);
    PQfinish(c);
}

/* Two runs of the same load side by side (a second start, or a restart
** while the first still ran): the second skips the batches the first
** committed. A failover may lose those as much as its own, and the first
** run may have ended before it (the chaos run found a load completed
** without its last batch: the run that committed it had ended, the one
** that skipped it never checked it). Made by hand on the shared cluster:
** run B commits batch 1; from B's progress callback run A loads the rest
** and completes; B skips batches 2-20 as A's; then batch 20 is taken away
** as a failover would (its rows and its share of the loads row). B must
** find it missing at its end and load it again. */
typedef struct fo_beside {
    const char *path, *src;
    int a_ran, lost;
    long long a_rc;
} fo_beside;

static int fo_beside_progress(void *ud, const pgpipe_load_progress *pr)
{
    fo_beside *m = ud;
    if (!m->a_ran && pr->batches == 1) {
        m->a_ran = 1;
        pgpipe_loader_options o;
        pgpipe_loader_options_init(&o);
        o.conninfo = pgt_dsn();
        o.connections = 1;
        o.batch_rows = 100;
        o.source_name = m->src;
        pgpipe_loader *a = NULL;
        m->a_rc = pgpipe_loader_open(&a, &o);
        if (m->a_rc == PGPIPE_OK)
            m->a_rc = pgpipe_loader_load_file(a, m->path);
        pgpipe_loader_close(a);
    }
    if (!m->lost && pr->rows_skipped == 1900) {
        m->lost = 1;
        PGconn *c = pgt_connect();
        char sql[1400];
        snprintf(sql, sizeof sql, "BEGIN; "
                 "CREATE TEMP TABLE gone ON COMMIT DROP AS SELECT b.* FROM pgpipe.load_batches b "
                 "JOIN pgpipe.loads l ON l.id = b.load_id WHERE l.source = '%s' AND b.seq = 20; "
                 "DELETE FROM staging.raw_events WHERE batch_id IN (SELECT batch_id FROM gone); "
                 "DELETE FROM pgpipe.dead_letters WHERE batch_id IN (SELECT batch_id FROM gone); "
                 "DELETE FROM pgpipe.load_batches WHERE batch_id IN (SELECT batch_id FROM gone); "
                 "UPDATE pgpipe.loads l SET rows_read = l.rows_read - g.rows_read, rows_loaded = "
                 "l.rows_loaded - g.rows_loaded, rows_dead_lettered = l.rows_dead_lettered - "
                 "g.rows_dead_lettered, batches = l.batches - 1 FROM gone g WHERE l.id = g.load_id; "
                 "COMMIT", m->src);
        PQclear(PGT_EXEC(c, sql));
        snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'",
                 m->src);
        m->lost = fo_int(c, sql) == 1992 - 99 ? 1 : -1;
        PQfinish(c);
    }
    return 0;
}

PGT_TEST(copy, failover_batch_of_the_run_beside_lost_is_reloaded)
{
    char path[512], src[64];
    snprintf(path, sizeof path, "%s/fo_beside.%d.ndjson", pgt_tmpdir(), (int)getpid());
    snprintf(src, sizeof src, "fo_beside_%d", (int)getpid());
    fo_write(path, 0, 2000);
    fo_beside m = { path, src, 0, 0, -1 };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.connections = 1;
    o.batch_rows = 100;
    o.source_name = src;
    o.progress = fo_beside_progress;
    o.progress_ud = &m;
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o));
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_EQ_INT(m.a_rc, PGPIPE_OK);
    PGT_EQ_INT(m.lost, 1); /* batch 20 (99 records and a dead letter) was taken away */
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.records_read, 2000);
    PGT_EQ_INT(s.batches_reloaded, 1);
    PGT_EQ_INT(s.rows_missing, 0);
    PGT_EQ_INT(s.rows_loaded + s.rows_dead + s.rows_skipped, 2000);
    pgpipe_loader_close(l);
    PGconn *c = pgt_connect();
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) || ' ' || count(DISTINCT payload->>'n') FROM "
             "staging.raw_events WHERE source = '%s'", src);
    PGresult *r = PGT_EXEC(c, sql);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "1992 1992");
    PQclear(r);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = '%s'", src);
    PGT_EQ_INT(fo_int(c, sql), 8);
    snprintf(sql, sizeof sql, "SELECT count(*) || ' ' || min(rows_read) || ' ' || min(rows_loaded) "
             "|| ' ' || min(rows_dead_lettered) || ' ' || min(batches) || ' ' || min(status) FROM "
             "pgpipe.loads WHERE source = '%s'", src);
    r = PGT_EXEC(c, sql);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "1 2000 1992 8 20 completed");
    PQclear(r);
    PQfinish(c);
}

/* Input that cannot be read again (fed in chunks): the load fails, names
** the missing batches and says how to fill them; running it again with the
** same key then loads exactly those. */
PGT_TEST(copy, failover_stream_batches_lost_fail_loudly)
{
    fo_pair p;
    fo_start(&p, "fo_stream");
    char path[512], src[64], key[64];
    snprintf(path, sizeof path, "%s/fo_stream.%d.ndjson", pgt_tmpdir(), (int)getpid());
    snprintf(src, sizeof src, "fo_stream_%d", (int)getpid());
    snprintf(key, sizeof key, "fo-stream-%d", (int)getpid());
    fo_write(path, 0, 2000);
    FILE *in = fopen(path, "r");
    PGT_CHECK(in != NULL);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf, in);
    fclose(in);
    /* the offsets of lines 500 and 1000: batches 1-5, 6-10, 11-20 */
    size_t cut[2] = { 0, 0 };
    int lines = 0;
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\n' && (++lines == 500 || lines == 1000))
            cut[lines == 1000] = i + 1;
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = p.dsn;
    o.connections = 1;
    o.batch_rows = 100;
    o.source_name = src;
    o.load_key = key;
    int kept = 0; /* batches on the replica when it is cut off */
    for (int run = 0; run < 2; run++) {
        pgpipe_loader *l = NULL;
        PGT_OK(pgpipe_loader_open(&l, &o));
        PGT_OK(pgpipe_loader_feed(l, buf, cut[0]));
        if (run == 0) {
            /* batches 1-4 committed on the primary; the 5th may still wait
            ** for more input; the replica gets what is committed, then the cut */
            PGconn *pc = fo_conn(p.pport);
            char q[256];
            snprintf(q, sizeof q, "SELECT (count(*) >= 400)::int FROM staging.raw_events "
                     "WHERE source = '%s'", src);
            fo_until(pc, q);
            PQfinish(pc);
            fo_cut_replication(&p);
        }
        PGT_OK(pgpipe_loader_feed(l, buf + cut[0], cut[1] - cut[0]));
        if (run == 0)
            fo_failover(&p);
        PGT_OK(pgpipe_loader_feed(l, buf + cut[1], n - cut[1]));
        int rc = pgpipe_loader_finish(l);
        pgpipe_load_summary s;
        pgpipe_loader_summary(l, &s);
        PGT_EQ_INT(s.records_read, 2000);
        if (run == 0) {
            PGT_EQ_INT(rc, PGPIPE_DB);
            const char *m = pgpipe_errmsg(l);
            /* the replica had batches 1-4 or 1-5 (the 5th may have been in
            ** flight at the cut) */
            const char *k = strstr(m, "committed batches");
            PGT_CHECK_MSG(k && k - m >= 2 && (k[-2] == '5' || k[-2] == '6'), "%s", m);
            kept = 10 - (k[-2] - '0');
            PGT_CONTAINS(m, kept == 5 ? "5 committed batches (500 records) are not on the server now"
                                      : "6 committed batches (600 records) are not on the server now");
            PGT_CONTAINS(m, kept == 5 ? "batches 6, 7, 8, 9, 10" : "batches 5, 6, 7, 8, 9, 10");
            PGT_CONTAINS(m, "failover");
            PGT_CONTAINS(m, key);
            PGT_EQ_INT(s.rows_missing, 1000 - kept * 100);
            PGT_EQ_INT(s.batches_missing, 10 - kept);
            PGT_EQ_INT(s.rows_loaded + s.rows_dead, 1000 + kept * 100);
            /* the new primary says so too */
            PGconn *c = fo_conn(p.rport);
            char sql[256];
            snprintf(sql, sizeof sql, "SELECT status FROM pgpipe.loads WHERE id = %lld", s.load_id);
            PGresult *r = PGT_EXEC(c, sql);
            PGT_EQ_STR(PQgetvalue(r, 0, 0), "failed");
            PQclear(r);
            PQfinish(c);
        } else {
            PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
            PGT_EQ_INT(s.rows_loaded + s.rows_dead, 1000 - kept * 100);
            PGT_EQ_INT(s.rows_skipped, 1000 + kept * 100);
            PGT_EQ_INT(s.rows_missing, 0);
            fo_check_server(&p, s.load_id, src, 1992);
        }
        pgpipe_loader_close(l);
    }
    fo_stop(&p);
}

/* Which server a connection reached, as the loader compares it: the system
** identifier and the timeline, the timeline alone when the role may not run
** pg_control_system() (revoked here, in a database of its own), nothing
** inside a transaction (a refused call would abort the caller's). */
PGT_TEST(copy, failover_server_id_falls_back)
{
    PGconn *admin = pgt_db_fresh("fo_serverid");
    char role[64], sql[256], dsn[1024], id[64];
    snprintf(role, sizeof role, "fo_serverid_%d", (int)getpid());
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN", role, role);
    PQclear(PGT_EXEC(admin, sql));
    copy_server_id(admin, id, sizeof id);
    PGT_CHECK_MSG(strchr(id, '/') && id[0] != '?' && strlen(id) > 10, "id %s", id);
    char tl[16];
    snprintf(tl, sizeof tl, "%s", strchr(id, '/') + 1);
    PQclear(PGT_EXEC(admin, "REVOKE EXECUTE ON FUNCTION pg_control_system() FROM PUBLIC"));
    snprintf(dsn, sizeof dsn, "%s dbname=fo_serverid user=%s", pgt_dsn(), role);
    PGconn *c = PQconnectdb(dsn);
    PGT_CHECK_MSG(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    copy_server_id(c, id, sizeof id);
    PGT_CHECK_MSG(id[0] == '?' && id[1] == '/' && !strcmp(id + 2, tl), "id %s, timeline %s", id, tl);
    PQclear(PQexec(c, "BEGIN"));
    copy_server_id(c, id, sizeof id);
    PGT_EQ_STR(id, "");
    PGT_EQ_INT(PQtransactionStatus(c), PQTRANS_INTRANS); /* not aborted */
    PQfinish(c);
    pgt_db_close(admin);
    PGconn *a2 = pgt_connect();
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", role);
    PQclear(PGT_EXEC(a2, sql));
    PQfinish(a2);
}

/* pgpipe_loader_cancel from another thread while every lane's COPY waits on
** a lock nobody will release: the load ends (it waited forever before, and
** retried the cancelled statement), as 'interrupted', with nothing counted
** that the server does not have. */
typedef struct fo_canceller {
    pgpipe_loader *l;
    char table[64];
    int sent;
    int slow;       /* a slow trigger instead of a lock */
} fo_canceller;

static void *fo_cancel_main(void *arg)
{
    fo_canceller *k = arg;
    PGconn *c = pgt_connect();
    char sql[512];
    if (k->slow) /* the streamed COPY is running rows through the slow trigger */
        snprintf(sql, sizeof sql, "SELECT (is_called AND last_value >= 20)::int FROM %s_q",
                 k->table);
    else
        snprintf(sql, sizeof sql, "SELECT (count(*) >= 2)::int FROM pg_stat_activity WHERE "
                 "wait_event_type = 'Lock' AND query LIKE '%%COPY %%%s%%'", k->table);
    fo_until(c, sql);
    PQfinish(c);
    k->sent = pgpipe_loader_cancel(k->l) == PGPIPE_OK;
    return NULL;
}

PGT_TEST(copy, failover_cancel_from_another_thread)
{
    PGconn *c = pgt_db_open();
    fo_canceller k;
    memset(&k, 0, sizeof k);
    snprintf(k.table, sizeof k.table, "fo_cancel_%d", (int)getpid());
    pgt_db_table(c, k.table, "(n int)");
    char path[512], sql[256];
    snprintf(path, sizeof path, "%s/fo_cancel.%d.ndjson", pgt_tmpdir(), (int)getpid());
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    for (int i = 0; i < 1000; i++)
        fprintf(f, "{\"n\":%d}\n", i);
    PGT_CHECK(fclose(f) == 0);
    snprintf(sql, sizeof sql, "BEGIN; LOCK TABLE %s IN ACCESS EXCLUSIVE MODE", k.table);
    PQclear(PGT_EXEC(c, sql));
    pgpipe_load_column cols[1] = { { "n", "n", NULL, 0 } };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.install_schema = 0;
    o.target = k.table;
    o.columns = cols;
    o.ncolumns = 1;
    o.batch_rows = 100;
    o.connections = 2;
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o));
    k.l = l;
    pthread_t t;
    PGT_CHECK(pthread_create(&t, NULL, fo_cancel_main, &k) == 0);
    int rc = pgpipe_loader_load_file(l, path);
    pthread_join(t, NULL);
    PGT_CHECK(k.sent);
    PGT_EQ_INT(rc, PGPIPE_BUSY);
    PGT_CONTAINS(pgpipe_errmsg(l), "cancelled");
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.batches, 0);
    PGT_EQ_INT(s.rows_loaded, 0);
    /* a cancelled loader stays cancelled */
    PGT_EQ_INT(pgpipe_loader_load_file(l, path), PGPIPE_BUSY);
    pgpipe_loader_close(l);
    PQclear(PGT_EXEC(c, "COMMIT"));
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", k.table);
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    snprintf(sql, sizeof sql, "SELECT status FROM pgpipe.loads WHERE id = %lld", s.load_id);
    PGT_EQ_STR(pgt_db_str(c, sql), "interrupted");
    PQfinish(c);
}

/* One streamed lane, cancelled while its COPY runs rows (a slow trigger):
** the cancelled COPY is not a rejected row (nothing is dead-lettered) and
** the batch is not sent again the slow way (it was, and committed, after
** the cancel). */
PGT_TEST(copy, failover_cancel_mid_copy_blames_no_row)
{
    PGconn *c = pgt_db_open();
    fo_canceller k;
    memset(&k, 0, sizeof k);
    k.slow = 1;
    snprintf(k.table, sizeof k.table, "fo_cancel_mid_%d", (int)getpid());
    pgt_db_table(c, k.table, "(n int)");
    char sql[1024];
    /* the trigger counts the rows it sees in a sequence (not rolled back,
    ** so visible at once), then sleeps on each */
    snprintf(sql, sizeof sql, "DROP SEQUENCE IF EXISTS %s_q; CREATE SEQUENCE %s_q; "
             "CREATE OR REPLACE FUNCTION %s_f() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
             "PERFORM nextval('%s_q'); PERFORM pg_sleep(0.01); RETURN NEW; END$$; "
             "CREATE TRIGGER %s_t BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION %s_f()",
             k.table, k.table, k.table, k.table, k.table, k.table, k.table);
    PQclear(PGT_EXEC(c, sql));
    char path[512];
    snprintf(path, sizeof path, "%s/fo_cancel_mid.%d.ndjson", pgt_tmpdir(), (int)getpid());
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    for (int i = 0; i < 3000; i++)
        fprintf(f, "{\"n\":%d}\n", i);
    PGT_CHECK(fclose(f) == 0);
    pgpipe_load_column cols[1] = { { "n", "n", NULL, 0 } };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.install_schema = 0;
    o.target = k.table;
    o.columns = cols;
    o.ncolumns = 1;
    o.batch_rows = 3000;
    o.connections = 1;
    o.source_name = k.table;
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o));
    k.l = l;
    pthread_t t;
    PGT_CHECK(pthread_create(&t, NULL, fo_cancel_main, &k) == 0);
    int rc = pgpipe_loader_load_file(l, path);
    pthread_join(t, NULL);
    PGT_CHECK(k.sent);
    PGT_EQ_INT(rc, PGPIPE_BUSY);
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.batches, 0);
    PGT_EQ_INT(s.rows_dead, 0);
    pgpipe_loader_close(l);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", k.table);
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = '%s'",
             k.table);
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    snprintf(sql, sizeof sql, "DROP TABLE %s; DROP SEQUENCE %s_q; DROP FUNCTION %s_f()", k.table,
             k.table, k.table);
    PQclear(PGT_EXEC(c, sql));
    PQfinish(c);
}
