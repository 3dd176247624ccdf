/*
** pgtest: the project's small test framework.
**
** A test file test/test_FILE.c holds functions declared with
**     PGT_TEST(group, name) { ... }
** at the start of a line; test/gen_registry.sh finds them. Every test file is
** compiled into one program together with pgpipe.c (so tests can reach the
** library's static functions). Each test runs in its own forked process, so a
** crash or a sanitizer report fails that test only.
**
** Groups and files. A test's group is the component it tests, named as its
** test file is (test_copy.c: group copy, the loader src/pipeline/load.c;
** test_pool.c: pool; ...). A file may instead gather one concern across
** components (test_security.c, test_chaos.c, test_hostile.c): its tests still
** carry the group of the component they exercise, and their names start with
** the file's word (copy.security_values, claim.security_workers_channel,
** copy.chaos_...). So `make test T=copy` runs every test of the loader,
** wherever it is written, and `T=security` every test of test_security.c: a
** selector without a dot matches a group or a file, one with a dot matches
** GROUP.NAME (shell patterns allowed: T='util.retry*'); test/run.sh also runs
** the script tests test/sh/WORD*.sh.
**
** Assertions print file:line and both values, then end the test:
**     PGT_CHECK(cond)  PGT_EQ_INT(a, b)  PGT_EQ_STR(a, b)  PGT_EQ_MEM(a, alen, b, blen)
**     PGT_OK(rc)       (rc == PGPIPE_OK, else prints the code's name)
** PGT_SKIP("why") ends a test as skipped. pgt_dsn() returns the conninfo of
** the throwaway cluster `make test` starts (PGPIPE_TEST_DSN) or skips the test.
**
** The database fixture. Every test that needs the server starts from one of:
**     pgt_connect()        a connection to the test database (notices quieted)
**     pgt_db_open()        the same with pgpipe's schema installed (idempotent)
**     pgt_db_fresh(NAME)   an empty database NAME of its own, made anew;
**                          pgt_db_install(c) puts pgpipe's schema in it
** and closes it with pgt_db_close(c) (PQfinish, and a fresh database is
** dropped; PQfinish alone does for the others).
** Tests share the test database one after another and keep apart by their
** own names: a table, source name or load key carries the test's name (or
** its pid); pgt_db_table(c, NAME, "(...)") makes such a table anew.
** pgt_db_int(c, SQL) and pgt_db_str(c, SQL) read a query's one value. A test
** that needs a server state of its own (migrations on an empty database)
** takes a fresh database.
**
** pgbouncer. pgt_bouncer_dsn("session"), pgt_bouncer_dsn("transaction") and
** pgt_bouncer_dsn("transaction-discard") return the conninfo of a real
** pgbouncer in front of the test cluster in that pool_mode (any dbname
** passes through: append " dbname=X"), started on first use by this test's
** process: its own ini and userlist in a directory under the test temp dir,
** a free TCP port on 127.0.0.1, default_pool_size 2 in transaction mode (so
** transactions move between server connections), server_reset_query =
** DISCARD ALL; "transaction-discard" also sets server_reset_query_always, so
** every transaction starts on a reset session (no statement, lock or LISTEN
** survives; plain "transaction" is pgbouncer's default, where what one
** client leaves in a session is found by the next). It runs as
** the cluster's user (pgbouncer refuses root) and dies with the test process
** (parent-death signal, so a failed assertion or a timeout stops it too).
** Call it from the test's main thread. No pgbouncer installed: the test is
** skipped (tool/deps.sh --test installs it).
*/
#ifndef PGTEST_H
#define PGTEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <unistd.h>

#define PGT_TEST(group, name) static void pgt_fn_##group##__##name(void)

#define PGT_EXIT_SKIP 77

static void pgt_fail_prefix(const char *file, int line)
{
    fprintf(stderr, "    %s:%d: assertion failed: ", file, line);
}

static void pgt_end_fail(void)
{
    fflush(stdout);
    fflush(stderr);
    _exit(1);
}

#define PGT_CHECK(cond) do { \
    if (!(cond)) { pgt_fail_prefix(__FILE__, __LINE__); \
        fprintf(stderr, "%s\n", #cond); pgt_end_fail(); } } while (0)

#define PGT_CHECK_MSG(cond, ...) do { \
    if (!(cond)) { pgt_fail_prefix(__FILE__, __LINE__); \
        fprintf(stderr, "%s: ", #cond); fprintf(stderr, __VA_ARGS__); \
        fprintf(stderr, "\n"); pgt_end_fail(); } } while (0)

#define PGT_EQ_INT(a, b) do { \
    long long pgt_a_ = (long long)(a), pgt_b_ = (long long)(b); \
    if (pgt_a_ != pgt_b_) { pgt_fail_prefix(__FILE__, __LINE__); \
        fprintf(stderr, "%s == %s\n      left:  %lld\n      right: %lld\n", \
                #a, #b, pgt_a_, pgt_b_); pgt_end_fail(); } } while (0)

#define PGT_EQ_DBL(a, b) do { \
    double pgt_a_ = (double)(a), pgt_b_ = (double)(b); \
    if (!(pgt_a_ == pgt_b_)) { pgt_fail_prefix(__FILE__, __LINE__); \
        fprintf(stderr, "%s == %s\n      left:  %.17g\n      right: %.17g\n", \
                #a, #b, pgt_a_, pgt_b_); pgt_end_fail(); } } while (0)

#define PGT_EQ_STR(a, b) do { \
    const char *pgt_a_ = (a), *pgt_b_ = (b); \
    if (!pgt_a_ || !pgt_b_ || strcmp(pgt_a_, pgt_b_) != 0) { \
        pgt_fail_prefix(__FILE__, __LINE__); \
        fprintf(stderr, "%s == %s\n      left:  \"%s\"\n      right: \"%s\"\n", \
                #a, #b, pgt_a_ ? pgt_a_ : "(null)", pgt_b_ ? pgt_b_ : "(null)"); \
        pgt_end_fail(); } } while (0)

#define PGT_CONTAINS(hay, needle) do { \
    const char *pgt_h_ = (hay), *pgt_n_ = (needle); \
    if (!pgt_h_ || !strstr(pgt_h_, pgt_n_)) { pgt_fail_prefix(__FILE__, __LINE__); \
        fprintf(stderr, "%s contains %s\n      text:   \"%s\"\n      wanted: \"%s\"\n", \
                #hay, #needle, pgt_h_ ? pgt_h_ : "(null)", pgt_n_); pgt_end_fail(); } } while (0)

#define PGT_EQ_MEM(a, alen, b, blen) do { \
    const void *pgt_a_ = (a), *pgt_b_ = (b); size_t pgt_al_ = (alen), pgt_bl_ = (blen); \
    if (pgt_al_ != pgt_bl_ || (pgt_al_ && memcmp(pgt_a_, pgt_b_, pgt_al_) != 0)) { \
        pgt_fail_prefix(__FILE__, __LINE__); \
        fprintf(stderr, "%s == %s\n      left:  (%zu bytes) \"%.*s\"\n      right: (%zu bytes) \"%.*s\"\n", \
                #a, #b, pgt_al_, (int)pgt_al_, (const char *)pgt_a_, pgt_bl_, (int)pgt_bl_, \
                (const char *)pgt_b_); pgt_end_fail(); } } while (0)

#define PGT_OK(expr) do { \
    int pgt_rc_ = (expr); \
    if (pgt_rc_ != PGPIPE_OK) { pgt_fail_prefix(__FILE__, __LINE__); \
        fprintf(stderr, "%s returned %d (%s), expected PGPIPE_OK\n", #expr, pgt_rc_, \
                pgpipe_errstr(pgt_rc_)); pgt_end_fail(); } } while (0)

#define PGT_SKIP(why) do { fprintf(stderr, "    skipped: %s\n", why); \
    fflush(stdout); fflush(stderr); _exit(PGT_EXIT_SKIP); } while (0)

/* The conninfo of the test cluster; skips the test when there is none. */
static const char *pgt_dsn(void)
{
    const char *d = getenv("PGPIPE_TEST_DSN");
    if (!d || !*d)
        PGT_SKIP("no test database (PGPIPE_TEST_DSN unset; `make test` starts one)");
    return d;
}

/* A connection to the test database, or the test fails. Notices below
** WARNING are not sent (DROP ... IF EXISTS and the schema's installers would
** fill the test output with them). */
static PGconn *pgt_connect(void)
{
    PGconn *c = PQconnectdb(pgt_dsn());
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "    cannot connect to the test database: %s", PQerrorMessage(c));
        PQfinish(c);
        pgt_end_fail();
    }
    PGresult *r = PQexec(c, "SET client_min_messages = warning");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "    cannot set up the connection: %s", PQresultErrorMessage(r));
        pgt_end_fail();
    }
    PQclear(r);
    return c;
}

/* Run SQL that must succeed; returns the result (caller clears it). */
#define PGT_EXEC(conn, sql) pgt_exec_at(__FILE__, __LINE__, (conn), (sql))
static PGresult *pgt_exec_at(const char *file, int line, PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        pgt_fail_prefix(file, line);
        fprintf(stderr, "SQL failed: %s\n      %s", sql, PQresultErrorMessage(r));
        PQclear(r);
        pgt_end_fail();
    }
    return r;
}

/* ---- the database fixture ------------------------------------------------ */

/* Installs pgpipe's schema (idempotent), or the test fails. */
static void pgt_db_install(PGconn *c)
{
    pgpipe_error err;
    pgpipe_error_clear(&err);
    if (pgpipe_schema_install(c, NULL, &err) != PGPIPE_OK) {
        fprintf(stderr, "    installing pgpipe's schema: %s\n", err.message);
        pgt_end_fail();
    }
}

/* A connection to the test database with pgpipe's schema installed. */
static PGconn *pgt_db_open(void)
{
    PGconn *c = pgt_connect();
    pgt_db_install(c);
    return c;
}

/* The fresh databases of this test (each test is a process of its own). */
static struct { PGconn *conn; char name[64]; } pgt_db_fresh_list[4];

/* A connection to an empty database NAME made for this test (one left over
** from an earlier run is dropped first); pgt_db_close drops it again. */
static PGconn *pgt_db_fresh(const char *name)
{
    size_t slot = 0;
    while (slot < 4 && pgt_db_fresh_list[slot].conn)
        slot++;
    if (slot == 4 || strlen(name) >= sizeof pgt_db_fresh_list[0].name) {
        fprintf(stderr, "    pgt_db_fresh(%s): too many fresh databases or too long a name\n", name);
        pgt_end_fail();
    }
    PGconn *admin = pgt_connect();
    char sql[256];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    PQclear(PGT_EXEC(admin, sql));
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    PQclear(PGT_EXEC(admin, sql));
    PQfinish(admin);
    char dsn[1024];
    snprintf(dsn, sizeof dsn, "%s dbname=%s", pgt_dsn(), name);
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "    cannot connect to %s: %s", name, PQerrorMessage(c));
        pgt_end_fail();
    }
    PQclear(PGT_EXEC(c, "SET client_min_messages = warning"));
    pgt_db_fresh_list[slot].conn = c;
    snprintf(pgt_db_fresh_list[slot].name, sizeof pgt_db_fresh_list[slot].name, "%s", name);
    return c;
}

/* Closes a connection of pgt_connect, pgt_db_open or pgt_db_fresh; the
** database of pgt_db_fresh is dropped. */
static void pgt_db_close(PGconn *c)
{
    PQfinish(c);
    for (size_t i = 0; c && i < 4; i++) {
        if (pgt_db_fresh_list[i].conn != c)
            continue;
        pgt_db_fresh_list[i].conn = NULL;
        PGconn *admin = pgt_connect();
        char sql[256];
        snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)",
                 pgt_db_fresh_list[i].name);
        PQclear(PGT_EXEC(admin, sql));
        PQfinish(admin);
    }
}

/* The one value of a query that must return one row: as a number, or as
** text (valid until the next call; "(null)" for NULL). */
#define pgt_db_int(conn, sql) pgt_db_int_at(__FILE__, __LINE__, (conn), (sql))
static long long pgt_db_int_at(const char *file, int line, PGconn *c, const char *sql)
{
    PGresult *r = pgt_exec_at(file, line, c, sql);
    if (PQntuples(r) != 1) {
        pgt_fail_prefix(file, line);
        fprintf(stderr, "%s gave %d rows, wanted 1\n", sql, PQntuples(r));
        pgt_end_fail();
    }
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

#define pgt_db_str(conn, sql) pgt_db_str_at(__FILE__, __LINE__, (conn), (sql))
static const char *pgt_db_str_at(const char *file, int line, PGconn *c, const char *sql)
{
    static char buf[4][4096];
    static int k = 0;
    PGresult *r = pgt_exec_at(file, line, c, sql);
    if (PQntuples(r) != 1) {
        pgt_fail_prefix(file, line);
        fprintf(stderr, "%s gave %d rows, wanted 1\n", sql, PQntuples(r));
        pgt_end_fail();
    }
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s", PQgetisnull(r, 0, 0) ? "(null)" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return b;
}

/* After a client process was killed: waits (at most 30 s) until the
** server has no backend left with application_name APP. A backend that
** had a COMMIT in hand when its client died still commits it, after the
** kill; counting rows before it is gone races that commit. The killed
** child sets PGAPPNAME=APP before it connects. */
static void pgt_db_wait_backends_gone(PGconn *c, const char *app)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'",
             app);
    for (int i = 0; i < 3000; i++) {
        if (pgt_db_int(c, sql) == 0)
            return;
        struct timespec ts = { 0, 10000000 };
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "    the backends of '%s' were still there after 30 s\n", app);
    pgt_end_fail();
}

/* Drops table NAME and creates it anew: CREATE TABLE NAME DEFINITION. */
static void pgt_db_table(PGconn *c, const char *name, const char *definition)
{
    char sql[1024];
    int n = snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s; CREATE TABLE %s %s", name, name,
                     definition);
    if (n < 0 || (size_t)n >= sizeof sql) {
        fprintf(stderr, "    pgt_db_table(%s): the statement is too long\n", name);
        pgt_end_fail();
    }
    PQclear(PGT_EXEC(c, sql));
}

/* A fresh scratch path under the test's temp dir (PGPIPE_TEST_TMP or /tmp). */
static const char *pgt_tmpdir(void)
{
    const char *t = getenv("PGPIPE_TEST_TMP");
    return t && *t ? t : "/tmp";
}

/* ---- pgbouncer in front of the test cluster --------------------------------- */

#include <pwd.h>
#include <signal.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

static struct { pid_t pid; char dsn[256]; char dir[512]; } pgt_bouncers[3];

/* The pgbouncer program: PGPIPE_PGBOUNCER, PATH, then /usr/sbin (Debian's
** place, often not on a user's PATH). NULL when there is none. */
static const char *pgt_bouncer_bin(void)
{
    static char path[1024];
    const char *env = getenv("PGPIPE_PGBOUNCER");
    if (env && *env)
        return access(env, X_OK) == 0 ? env : NULL;
    const char *p = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s:/usr/sbin:/usr/local/sbin", p ? p : "/usr/bin:/bin");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        snprintf(path, sizeof path, "%s/pgbouncer", d);
        if (access(path, X_OK) == 0)
            return path;
    }
    return NULL;
}

/* A TCP port on 127.0.0.1 nothing listens on now (0 when none is found). */
static int pgt_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(s);
    return port;
}

static void pgt_bouncer_log(const char *dir)
{
    char path[600], line[512];
    snprintf(path, sizeof path, "%s/pgbouncer.log", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    fprintf(stderr, "    --- %s\n", path);
    while (fgets(line, sizeof line, f))
        fprintf(stderr, "    %s", line);
    fclose(f);
}

static const char *pgt_bouncer_dsn(const char *mode)
{
    int slot = !strcmp(mode, "session") ? 0 : !strcmp(mode, "transaction") ? 1
             : !strcmp(mode, "transaction-discard") ? 2 : -1;
    if (slot < 0) {
        fprintf(stderr, "    pgt_bouncer_dsn(%s): session, transaction or transaction-discard\n",
                mode);
        pgt_end_fail();
    }
    if (pgt_bouncers[slot].pid > 0)
        return pgt_bouncers[slot].dsn;
    const char *dsn = pgt_dsn();
    const char *bin = pgt_bouncer_bin();
    if (!bin)
        PGT_SKIP("pgbouncer is not installed (sh tool/deps.sh --test installs it)");
    /* where the cluster listens, and as whom it runs */
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(dsn, &msg);
    const char *host = NULL, *port = NULL;
    for (PQconninfoOption *o = opts; o && o->keyword; o++) {
        if (!strcmp(o->keyword, "host") && o->val)
            host = o->val;
        if (!strcmp(o->keyword, "port") && o->val)
            port = o->val;
    }
    if (!opts || !host || !port) {
        fprintf(stderr, "    pgbouncer: cannot read host and port of %s\n", dsn);
        pgt_end_fail();
    }
    uid_t uid = geteuid();
    gid_t gid = getegid();
    const char *pgdir = getenv("PGPIPE_TEST_PGDIR");
    struct stat st;
    if (uid == 0) {
        if (!pgdir || stat(pgdir, &st) != 0 || st.st_uid == 0)
            PGT_SKIP("pgbouncer refuses to run as root and the cluster's user is unknown");
        uid = st.st_uid;
        gid = st.st_gid;
    }
    char *dir = pgt_bouncers[slot].dir;
    snprintf(dir, sizeof pgt_bouncers[slot].dir, "%s/bouncer-%s-%d-XXXXXX", pgt_tmpdir(), mode,
             (int)getpid());
    if (!mkdtemp(dir) || chmod(dir, 0700) != 0 || (geteuid() == 0 && chown(dir, uid, gid) != 0)) {
        fprintf(stderr, "    pgbouncer: cannot make %s\n", dir);
        pgt_end_fail();
    }
    char path[700];
    snprintf(path, sizeof path, "%s/userlist.txt", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "    pgbouncer: cannot write %s\n", path);
        pgt_end_fail();
    }
    fprintf(f, "\"postgres\" \"\"\n");
    fclose(f);
    int txn = slot > 0;
    for (int tries = 0; tries < 5; tries++) {
        int lport = pgt_free_port();
        snprintf(path, sizeof path, "%s/pgbouncer.ini", dir);
        f = fopen(path, "w");
        if (!f) {
            fprintf(stderr, "    pgbouncer: cannot write %s\n", path);
            pgt_end_fail();
        }
        fprintf(f,
                "[databases]\n* = host=%s port=%s\n"
                "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
                "auth_type = trust\nauth_file = %s/userlist.txt\n"
                "logfile = %s/pgbouncer.log\npidfile = %s/pgbouncer.pid\n"
                "pool_mode = %s\ndefault_pool_size = %d\nmin_pool_size = 0\n"
                "reserve_pool_size = 0\nmax_client_conn = 400\n"
                "server_reset_query = DISCARD ALL\nserver_reset_query_always = %d\n"
                "server_login_retry = 1\nquery_wait_timeout = 60\n"
                "ignore_startup_parameters = extra_float_digits\n",
                host, port, lport, dir, dir, dir, txn ? "transaction" : "session", txn ? 2 : 40,
                slot == 2);
        fclose(f);
        fflush(NULL);
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            pgt_end_fail();
        }
        if (pid == 0) {
            if (geteuid() == 0 && (setgid(gid) != 0 || setuid(uid) != 0))
                _exit(126);
#ifdef __linux__
            /* after setuid, which clears it: die with the test process */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
            if (getppid() != parent)
                _exit(0);
            char out[700];
            snprintf(out, sizeof out, "%s/stderr.log", dir);
            int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            execl(bin, "pgbouncer", path, (char *)NULL);
            _exit(127);
        }
        snprintf(pgt_bouncers[slot].dsn, sizeof pgt_bouncers[slot].dsn,
                 "host=127.0.0.1 port=%d user=postgres dbname=postgres connect_timeout=5", lport);
        /* ready when a connection through it gets to the server */
        for (int i = 0; i < 200; i++) {
            int status;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                break;
            }
            PGconn *c = PQconnectdb(pgt_bouncers[slot].dsn);
            int ok = PQstatus(c) == CONNECTION_OK;
            PQfinish(c);
            if (ok) {
                pgt_bouncers[slot].pid = pid;
                PQconninfoFree(opts);
                return pgt_bouncers[slot].dsn;
            }
            pgpipe_sleep_ms(50);
        }
        if (pid > 0) {
            kill(pid, SIGTERM);
            waitpid(pid, NULL, 0);
        }
        /* a port taken meanwhile: try another; anything else is final */
        char lp[700], line[512];
        int busy = 0;
        snprintf(lp, sizeof lp, "%s/pgbouncer.log", dir);
        if ((f = fopen(lp, "r"))) {
            while (fgets(line, sizeof line, f))
                busy |= strstr(line, "Address already in use") != NULL;
            fclose(f);
        }
        if (!busy)
            break;
    }
    fprintf(stderr, "    pgbouncer (%s mode) did not start\n", mode);
    pgt_bouncer_log(dir);
    pgt_end_fail();
    return NULL;
}

/* Stop this process's pgbouncers now (they also die with the process). */
static void pgt_bouncer_stop(void)
{
    for (int i = 0; i < 3; i++)
        if (pgt_bouncers[i].pid > 0) {
            kill(pgt_bouncers[i].pid, SIGTERM);
            waitpid(pgt_bouncers[i].pid, NULL, 0);
            pgt_bouncers[i].pid = 0;
        }
}

#endif
