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
*/
#ifndef PGTEST_H
#define PGTEST_H

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
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

#endif
