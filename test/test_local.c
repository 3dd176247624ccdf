/* The private local server (src/local.c): create, start, reuse, stop, keep data. */

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

PGT_TEST(local, clear_errors)
{
    pgpipe_error err;
    char info[256];
    pgpipe_local_options opt;
    pgpipe_local_options_init(&opt);
    PGT_EQ_INT(pgpipe_local_start("", &opt, info, sizeof info, NULL, &err), PGPIPE_MISUSE);
    opt.bindir = "/nonexistent";
    setenv("PATH", "/nonexistent", 1);
    setenv("PGPIPE_PG_BINDIR", "/nonexistent", 1);
    /* bindir, PATH and env are wrong, but pg_config or /usr/lib/postgresql may
    ** still find the server: only check the error when nothing is found */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/local-err-%d", pgt_tmpdir(), (int)getpid());
    int rc = pgpipe_local_start(dir, &opt, info, sizeof info, NULL, &err);
    if (rc != PGPIPE_OK)
        PGT_CONTAINS(err.message, "no PostgreSQL server binaries");
    else
        PGT_OK(pgpipe_local_stop(dir, &opt, &err));
    char longdir[200];
    memset(longdir, 'x', sizeof longdir - 1);
    longdir[0] = '/';
    longdir[sizeof longdir - 1] = '\0';
    PGT_CHECK(pgpipe_local_start(longdir, &opt, info, sizeof info, NULL, &err) != PGPIPE_OK);
}

/* A number read from FILE in DIR (the port file). */
static int local_read_int(const char *dir, const char *file)
{
    char path[600], buf[32] = "";
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            buf[0] = '\0';
        fclose(f);
    }
    return atoi(buf);
}

PGT_TEST(local, tcp_free_port_and_restart)
{
    char dir[512], info[1024], want[64];
    snprintf(dir, sizeof dir, "%s/local-tcp-%d", pgt_tmpdir(), (int)getpid());
    pgpipe_local_options opt;
    pgpipe_local_options_init(&opt);
    opt.fast = 1;
    opt.tcp = 1; /* and no port: the system picks a free one */
    pgpipe_error err;
    PGT_EQ_INT(pgpipe_local_restart(dir, &opt, &err), PGPIPE_MISUSE); /* never started */
    PGT_CONTAINS(err.message, "no server was started");
    int rc = pgpipe_local_start(dir, &opt, info, sizeof info, NULL, &err);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", err.message);
    int port = local_read_int(dir, "port");
    PGT_CHECK_MSG(port > 0 && port != 5432, "port %d", port);
    snprintf(want, sizeof want, "host=127.0.0.1 port=%d ", port);
    PGT_CONTAINS(info, want);
    local_query_one(info, "SHOW listen_addresses", "127.0.0.1");
    local_query_one(info, "CREATE TABLE kept(x int); INSERT INTO kept VALUES (7)", NULL);
    local_query_one(info, "SHOW log_min_messages", "warning");

    /* a restart keeps the port, TCP and the data; the conninfo still works */
    PGT_OK(pgpipe_local_restart(dir, &opt, &err));
    PGT_CHECK(pgpipe_local_running(dir));
    PGT_EQ_INT(local_read_int(dir, "port"), port);
    local_query_one(info, "SHOW listen_addresses", "127.0.0.1");
    local_query_one(info, "SELECT x FROM kept", "7");

    /* restart starts a stopped server too */
    PGT_OK(pgpipe_local_stop(dir, &opt, &err));
    PGT_OK(pgpipe_local_restart(dir, &opt, &err));
    local_query_one(info, "SELECT x FROM kept", "7");
    PGT_OK(pgpipe_local_stop(dir, &opt, &err));
    PGT_CHECK(!pgpipe_local_running(dir));
}

PGT_TEST(local, owner_watchdog_follows_restart)
{
    char dir[512], info[1024];
    snprintf(dir, sizeof dir, "%s/local-owner-%d", pgt_tmpdir(), (int)getpid());
    pid_t owner = fork();
    if (owner == 0) {
        pause();
        _exit(0);
    }
    PGT_CHECK(owner > 0);
    pgpipe_local_options opt;
    pgpipe_local_options_init(&opt);
    opt.fast = 1;
    opt.owner = (long)owner;
    pgpipe_error err;
    int rc = pgpipe_local_start(dir, &opt, info, sizeof info, NULL, &err);
    if (rc != PGPIPE_OK)
        kill(owner, SIGKILL);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", err.message);
    /* the watch survives a restart (the pid file is gone for a moment) */
    PGT_OK(pgpipe_local_restart(dir, &opt, &err));
    local_query_one(info, "SELECT 1", "1");
    PGT_CHECK(pgpipe_local_running(dir));
    kill(owner, SIGKILL);
    waitpid(owner, NULL, 0);
    /* bounded wait: the watchdog polls every second, pg_ctl stop takes a few */
    for (int i = 0; i < 600 && pgpipe_local_running(dir); i++)
        pgpipe_sleep_ms(100);
    int running = pgpipe_local_running(dir);
    if (running)
        pgpipe_local_stop(dir, &opt, &err);
    PGT_CHECK_MSG(!running, "the server in %s outlived its owner", dir);
}
