/* The private local server (src/db/local.c): create, start, reuse, stop, keep data. */

static void local_query_one(const char *conninfo, const char *sql, const char *want)
{
    PGconn *c = PQconnectdb(conninfo);
    PGT_CHECK_MSG(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    PGresult *r = PGT_EXEC(c, sql);
    if (want)
        PGT_EQ_STR(PQgetvalue(r, 0, 0), want);
    PQclear(r);
    PQfinish(c);
}

PGT_TEST(local, start_reuse_stop_keeps_data)
{
    char dir[512], info[1024], info2[1024];
    snprintf(dir, sizeof dir, "%s/local-%d", pgt_tmpdir(), (int)getpid());
    pgpipe_local_options opt;
    pgpipe_local_options_init(&opt);
    opt.fast = 1;
    pgpipe_error err;
    int started = -1;
    PGT_CHECK(!pgpipe_local_running(dir));
    int rc = pgpipe_local_start(dir, &opt, info, sizeof info, &started, &err);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", err.message);
    PGT_EQ_INT(started, 1);
    PGT_CHECK(pgpipe_local_running(dir));
    PGT_CONTAINS(info, "host=");
    PGT_CONTAINS(info, "user=postgres");
    local_query_one(info, "CREATE TABLE kept(x int); INSERT INTO kept VALUES (42)", NULL);
    local_query_one(info, "SHOW listen_addresses", "");

    /* a second start reuses the running server */
    PGT_OK(pgpipe_local_start(dir, &opt, info2, sizeof info2, &started, &err));
    PGT_EQ_INT(started, 0);
    PGT_EQ_STR(info2, info);

    PGT_OK(pgpipe_local_stop(dir, &opt, &err));
    PGT_CHECK(!pgpipe_local_running(dir));
    PGT_OK(pgpipe_local_stop(dir, &opt, &err)); /* stopping a stopped server is fine */

    /* started again, the data is still there */
    PGT_OK(pgpipe_local_start(dir, &opt, info2, sizeof info2, &started, &err));
    PGT_EQ_INT(started, 1);
    local_query_one(info2, "SELECT x FROM kept", "42");
    PGT_OK(pgpipe_local_stop(dir, &opt, &err));
}

/* A new empty directory under the test's temp dir, in buf. */
static void local_t_mkdtemp(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s-XXXXXX", pgt_tmpdir(), name);
    PGT_CHECK_MSG(mkdtemp(buf) != NULL, "%s: %s", buf, strerror(errno));
    PGT_CHECK(chmod(buf, 0755) == 0); /* the server's user runs the scripts in it */
}

/* Writes an executable shell script DIR/NAME with the given body. */
static void local_t_script(const char *dir, const char *name, const char *body)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    fprintf(f, "#!/bin/sh\n%s\n", body);
    PGT_CHECK(fclose(f) == 0);
    PGT_CHECK(chmod(path, 0755) == 0);
}

/* The text of a file ("" when it cannot be read). */
static const char *local_t_file(const char *path)
{
    static char buf[2048];
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f) {
        buf[fread(buf, 1, sizeof buf - 1, f)] = '\0';
        fclose(f);
    }
    return buf;
}

/* Each failure returns its code and a message that names the cause and the
** log to read; the message of an earlier error never survives into a later
** one (err is filled with a stale text before each call). Fake initdb and
** pg_ctl scripts make the server's failures happen on any machine. */
PGT_TEST(local, clear_errors)
{
    pgpipe_error err;
    char info[256], dir[512], bin[512], want[1400];
    pgpipe_local_options opt;
    pgpipe_local_options_init(&opt);
#define LOCAL_T_STALE() (snprintf(err.message, sizeof err.message, "stale"), err.code = 0)

    LOCAL_T_STALE();
    PGT_EQ_INT(pgpipe_local_start("", &opt, info, sizeof info, NULL, &err), PGPIPE_MISUSE);
    PGT_EQ_INT(err.code, PGPIPE_MISUSE);
    PGT_EQ_STR(err.message, "pgpipe_local_start: a directory and a buffer are required");
    LOCAL_T_STALE();
    PGT_EQ_INT(pgpipe_local_start("/tmp/x", &opt, NULL, 0, NULL, &err), PGPIPE_MISUSE);
    PGT_EQ_STR(err.message, "pgpipe_local_start: a directory and a buffer are required");
    LOCAL_T_STALE();
    PGT_EQ_INT(pgpipe_local_stop("", &opt, &err), PGPIPE_MISUSE);
    PGT_EQ_STR(err.message, "pgpipe_local_stop: a directory is required");

    /* a socket path the server cannot use */
    char longdir[200];
    memset(longdir, 'x', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = '\0';
    LOCAL_T_STALE();
    PGT_EQ_INT(pgpipe_local_start(longdir, &opt, info, sizeof info, NULL, &err), PGPIPE_MISUSE);
    PGT_CONTAINS(err.message, "cannot hold a Unix socket");
    PGT_CONTAINS(err.message, longdir);
    LOCAL_T_STALE();
    PGT_EQ_INT(pgpipe_local_start("/tmp/it's", &opt, info, sizeof info, NULL, &err), PGPIPE_MISUSE);
    PGT_EQ_STR(err.message, "/tmp/it's cannot hold a Unix socket (a quote in the path, or longer "
                            "than 90 bytes)");

    local_t_mkdtemp(bin, sizeof bin, "local-bin");
    opt.bindir = bin;
    if (geteuid() == 0) { /* root runs the server as another user, who must exist */
        opt.user = "pgpipe_t_no_such_user";
        local_t_mkdtemp(dir, sizeof dir, "local-user");
        LOCAL_T_STALE();
        PGT_EQ_INT(pgpipe_local_start(dir, &opt, info, sizeof info, NULL, &err), PGPIPE_MISUSE);
        PGT_CONTAINS(err.message, "no user 'pgpipe_t_no_such_user' to run the server as");
        opt.user = NULL;
    }

    /* initdb fails: the error names the data folder and initdb's log */
    local_t_script(bin, "initdb", "echo 'initdb: the disk is on fire' >&2; exit 1");
    local_t_script(bin, "pg_ctl", "exit 1");
    local_t_mkdtemp(dir, sizeof dir, "local-err");
    LOCAL_T_STALE();
    PGT_EQ_INT(pgpipe_local_start(dir, &opt, info, sizeof info, NULL, &err), PGPIPE_ERROR);
    snprintf(want, sizeof want, "initdb failed for %s/data (see %s/initdb.log)", dir, dir);
    PGT_EQ_STR(err.message, want);
    snprintf(want, sizeof want, "%s/initdb.log", dir);
    PGT_CONTAINS(local_t_file(want), "the disk is on fire");

    /* initdb works, the server does not start: the error names the server log */
    local_t_script(bin, "initdb", "mkdir -p \"$2\" && echo 16 > \"$2/PG_VERSION\"");
    LOCAL_T_STALE();
    PGT_EQ_INT(pgpipe_local_start(dir, &opt, info, sizeof info, NULL, &err), PGPIPE_ERROR);
    snprintf(want, sizeof want, "the server in %s did not start (see %s/server.log)", dir, dir);
    PGT_EQ_STR(err.message, want);

    /* a server that runs (this process's pid) but will not stop */
    snprintf(want, sizeof want, "%s/data/postmaster.pid", dir);
    FILE *f = fopen(want, "w");
    PGT_CHECK(f != NULL);
    fprintf(f, "%d\n", (int)getpid());
    PGT_CHECK(fclose(f) == 0);
    PGT_CHECK(pgpipe_local_running(dir));
    LOCAL_T_STALE();
    PGT_EQ_INT(pgpipe_local_stop(dir, &opt, &err), PGPIPE_ERROR);
    snprintf(want, sizeof want, "could not stop the server in %s (see %s/pg_ctl.log)", dir, dir);
    PGT_EQ_STR(err.message, want);
    /* running, but its conninfo file is gone */
    LOCAL_T_STALE();
    PGT_EQ_INT(pgpipe_local_start(dir, &opt, info, sizeof info, NULL, &err), PGPIPE_ERROR);
    snprintf(want, sizeof want, "a server runs in %s but %s/conninfo is missing", dir, dir);
    PGT_EQ_STR(err.message, want);
#undef LOCAL_T_STALE
}
