/*
** Tests of the migration runner (src/db/migrate.c): file names, checksums,
** ordering, transactions, drift, baselines and locking, against the real test
** PostgreSQL. The statement splitter is test_sqlsplit.c's, the built-in
** schema and the example pipeline test_schema.c's.
*/
#include <sys/wait.h>

/* ---- helpers ---------------------------------------------------------- */

static const char *mig_t_path(const char *dir, const char *file)
{
    static char p[4][512];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", dir, file);
    return p[k];
}

/* A fresh, empty directory under the test's temp dir. */
static const char *mig_t_dir(const char *name)
{
    static char d[512];
    snprintf(d, sizeof d, "%s/mig-%s-%d", pgt_tmpdir(), name, (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", d, d);
    PGT_CHECK(system(cmd) == 0);
    return d;
}

static void mig_t_write(const char *dir, const char *file, const char *text)
{
    FILE *f = fopen(mig_t_path(dir, file), "wb");
    PGT_CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

static long long mig_t_int(PGconn *c, const char *sql)
{
    PGresult *r = PGT_EXEC(c, sql);
    PGT_CHECK_MSG(PQntuples(r) == 1, "%s gave %d rows", sql, PQntuples(r));
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static char mig_t_strbuf[4096];
static const char *mig_t_str(PGconn *c, const char *sql)
{
    PGresult *r = PGT_EXEC(c, sql);
    PGT_CHECK_MSG(PQntuples(r) == 1, "%s gave %d rows", sql, PQntuples(r));
    snprintf(mig_t_strbuf, sizeof mig_t_strbuf, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return mig_t_strbuf;
}

/* The handle's error as pgpipe_error_format() writes it. */
static char mig_t_errbuf[2048];
static const char *mig_t_err(const void *h)
{
    pgpipe_error_format(pgpipe_errinfo(h), mig_t_errbuf, sizeof mig_t_errbuf);
    return mig_t_errbuf;
}

/* Options for a test: its own history table and scope. */
static pgpipe_migrate_options mig_t_opts(const char *dir, const char *scope)
{
    pgpipe_migrate_options o;
    pgpipe_migrate_options_init(&o);
    o.dir = dir;
    o.scope = scope;
    o.history_table = "mig_test.history";
    o.lock_timeout_ms = 20000;
    return o;
}

/* Runs the migrations; returns the code, leaves the runner open in *out. */
static int mig_t_run(PGconn *c, const pgpipe_migrate_options *o, pgpipe_migrator **out)
{
    pgpipe_migrator *m = NULL;
    PGT_OK(pgpipe_migrator_open(&m, c, o));
    int rc = pgpipe_migrate_run(m);
    if (out)
        *out = m;
    else
        pgpipe_migrator_close(m);
    return rc;
}

static const pgpipe_migration_info *mig_t_find(pgpipe_migrator *m, const char *name)
{
    for (int i = 0; i < pgpipe_migrate_count(m); i++)
        if (strcmp(pgpipe_migrate_entry(m, i)->name, name) == 0)
            return pgpipe_migrate_entry(m, i);
    fprintf(stderr, "    no migration named %s\n", name);
    PGT_CHECK(0);
    return NULL;
}

static char mig_t_fmt[16384];
static const char *mig_t_format(pgpipe_migrator *m)
{
    int n = pgpipe_migrate_format(m, mig_t_fmt, sizeof mig_t_fmt);
    PGT_CHECK(n > 0 && n < (int)sizeof mig_t_fmt);
    return mig_t_fmt;
}

PGT_TEST(migrate, sha256_and_checksum)
{
    char h[65];
    pgpipe_sha256_hex("", 0, h);
    PGT_EQ_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    pgpipe_sha256_hex("abc", 3, h);
    PGT_EQ_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    pgpipe_sha256_hex(two, strlen(two), h);
    PGT_EQ_STR(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* every length around the block boundaries agrees with PostgreSQL's sha256() */
    PGconn *c = pgt_connect();
    char buf[300];
    for (int n = 0; n < 300; n += (n < 130 ? 1 : 37)) {
        for (int i = 0; i < n; i++)
            buf[i] = (char)('a' + (i * 7) % 26);
        pgpipe_sha256_hex(buf, (size_t)n, h);
        char sql[600];
        snprintf(sql, sizeof sql, "SELECT encode(sha256(convert_to('%.*s', 'UTF8')), 'hex')", n,
                 buf);
        PGT_EQ_STR(h, mig_t_str(c, sql));
    }
    PQfinish(c);
    /* line endings and a BOM do not change the migration checksum */
    char a[65], b[65], d[65], x[65];
    PGT_OK(pgpipe_migrate_checksum("SELECT 1;\nSELECT 2;\n", 20, a));
    PGT_OK(pgpipe_migrate_checksum("SELECT 1;\r\nSELECT 2;\r\n", 22, b));
    PGT_OK(pgpipe_migrate_checksum("\xEF\xBB\xBFSELECT 1;\rSELECT 2;\r", 23, d));
    PGT_OK(pgpipe_migrate_checksum("SELECT 1;\nSELECT 3;\n", 20, x));
    PGT_EQ_STR(a, b);
    PGT_EQ_STR(a, d);
    PGT_CHECK(strcmp(a, x) != 0);
    /* two BOMs (found by fuzzing: normalizing was not idempotent) */
    PGT_OK(pgpipe_migrate_checksum("\xEF\xBB\xBF\xEF\xBB\xBFSELECT 1;\nSELECT 2;\n", 26, d));
    PGT_EQ_STR(a, d);
}

/* A migrator whose open failed (no connection, no migrations) refuses run
** and status with PGPIPE_MISUSE naming why (run said PGPIPE_DB for a NULL
** connection). No server needed. */
PGT_TEST(migrate, failed_open_refuses_run_and_status)
{
    pgpipe_migrate_options o;
    pgpipe_migrate_options_init(&o);
    o.dir = "/nonexistent-pgpipe-migrations";
    pgpipe_migrator *m;
    PGT_EQ_INT(pgpipe_migrator_open(&m, NULL, &o), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_migrate_run(m), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(m), "the migrator did not open: no connection given");
    PGT_EQ_INT(pgpipe_migrate_status(m), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(m), "did not open");
    pgpipe_migrator_close(m);
}

PGT_TEST(migrate, file_names)
{
    const char *d = mig_t_dir("names");
    mig_t_write(d, "V1__ok.sql", "SELECT 1;");
    mig_t_write(d, "README.md", "not sql");
    mig_t_write(d, ".hidden.sql", "junk");
    PGconn *c = pgt_connect();
    pgpipe_migrate_options o = mig_t_opts(d, "names");
    pgpipe_migrator *m = NULL;
    PGT_OK(pgpipe_migrator_open(&m, c, &o));
    PGT_OK(pgpipe_migrate_status(m));
    PGT_EQ_INT(pgpipe_migrate_count(m), 1);
    mig_t_write(d, "V2_missing_underscore.sql", "SELECT 2;");
    PGT_EQ_INT(pgpipe_migrate_status(m), PGPIPE_PARSE);
    PGT_CONTAINS(mig_t_err(m), "V2_missing_underscore.sql: not a migration file name");
    PGT_EQ_STR(pgpipe_errinfo(m)->source, "V2_missing_underscore.sql");
    remove(mig_t_path(d, "V2_missing_underscore.sql"));
    /* a misspelt marker is an error, not a silent transaction */
    mig_t_write(d, "V2__typo.sql", "SELECT 1;\n  -- pgpipe:no-transactions\nSELECT 2;\n");
    PGT_EQ_INT(pgpipe_migrate_status(m), PGPIPE_PARSE);
    PGT_CONTAINS(mig_t_err(m), "V2__typo.sql:2:1: unknown marker");
    remove(mig_t_path(d, "V2__typo.sql"));
    mig_t_write(d, "V0001__same.sql", "SELECT 2;");
    PGT_EQ_INT(pgpipe_migrate_status(m), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(m), "have the same version 1");
    pgpipe_migrator_close(m);
    /* bad options */
    o.history_table = "a.b.c";
    PGT_EQ_INT(pgpipe_migrator_open(&m, c, &o), PGPIPE_MISUSE);
    pgpipe_migrator_close(m);
    o = mig_t_opts(d, "names");
    o.baseline_version = "1.5";
    PGT_EQ_INT(pgpipe_migrator_open(&m, c, &o), PGPIPE_MISUSE);
    pgpipe_migrator_close(m);
    PQfinish(c);
}

/* ---- applying --------------------------------------------------------- */

PGT_TEST(migrate, apply_in_version_order)
{
    const char *d = mig_t_dir("order");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_order CASCADE"));
    mig_t_write(d, "V1__schema.sql",
                "-- the first migration\n"
                "CREATE SCHEMA mig_order;\n"
                "CREATE TABLE mig_order.t (id int PRIMARY KEY, note text);\n"
                "CREATE FUNCTION mig_order.f(x text) RETURNS text\n"
                "LANGUAGE plpgsql AS $$\n"
                "DECLARE r text := '';\n"
                "BEGIN\n"
                "  r := x || ';' || 'it''s';   -- semicolons; and quotes\n"
                "  RETURN r || $q$ ;'\" $q$;\n"
                "END;\n"
                "$$;\n");
    mig_t_write(d, "V2__data.sql",
                "COPY mig_order.t (id, note) FROM stdin;\n"
                "1\tfirst; with semicolon\n"
                "2\tit's \\\\ backslash\n"
                "\\.\n"
                "INSERT INTO mig_order.t VALUES (3, E'tab\\there');\n");
    mig_t_write(d, "V10__after_two.sql", "ALTER TABLE mig_order.t ADD COLUMN v10 int DEFAULT 10;\n");
    mig_t_write(d, "V003__three.sql",
                "CREATE FUNCTION mig_order.add(a int, b int) RETURNS int LANGUAGE sql\n"
                "BEGIN ATOMIC\n"
                "  SELECT a + b;\n"
                "END;\n"
                "INSERT INTO mig_order.t VALUES (mig_order.add(2, 2), 'atomic');\n");
    mig_t_write(d, "R__view.sql",
                "CREATE OR REPLACE VIEW mig_order.v AS SELECT id, note, v10 FROM mig_order.t;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "order");
    pgpipe_migrator *m = NULL;
    int rc = mig_t_run(c, &o, &m);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(m));
    PGT_EQ_INT(pgpipe_migrate_count(m), 5);
    const char *order[] = { "1", "2", "3", "10", "" };
    for (int i = 0; i < 5; i++) {
        const pgpipe_migration_info *in = pgpipe_migrate_entry(m, i);
        PGT_EQ_STR(in->version, order[i]);
        PGT_EQ_INT(in->state, PGPIPE_MIGRATION_APPLIED);
        PGT_CHECK(in->ran);
    }
    PGT_EQ_INT(pgpipe_migrate_entry(m, 4)->kind, 'R');
    pgpipe_migrator_close(m);

    PGT_EQ_STR(mig_t_str(c, "SELECT mig_order.f('a')"), "a;it's ;'\" ");
    PGT_EQ_STR(mig_t_str(c, "SELECT note FROM mig_order.t WHERE id = 1"), "first; with semicolon");
    PGT_EQ_STR(mig_t_str(c, "SELECT note FROM mig_order.t WHERE id = 2"), "it's \\ backslash");
    PGT_EQ_STR(mig_t_str(c, "SELECT note FROM mig_order.t WHERE id = 3"), "tab\there");
    PGT_EQ_STR(mig_t_str(c, "SELECT note FROM mig_order.t WHERE id = 4"), "atomic");
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_order.v WHERE v10 = 10"), 4);

    /* the history */
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_test.history WHERE scope = 'order' "
                            "AND status = 'applied' AND checksum_algorithm = 'sha256' "
                            "AND applied_by = current_user AND execution_ms >= 0"), 5);
    PGT_EQ_INT(mig_t_int(c, "SELECT statements_total FROM mig_test.history "
                            "WHERE scope = 'order' AND version = 1"), 3);
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(version::text, ',' ORDER BY applied_at, id) "
                            "FROM mig_test.history WHERE scope = 'order' AND kind = 'V'"),
               "1,2,3,10");
    /* the recorded checksum is the file's SHA-256 */
    char ck[65];
    const char *v10 = "ALTER TABLE mig_order.t ADD COLUMN v10 int DEFAULT 10;\n";
    pgpipe_sha256_hex(v10, strlen(v10), ck);
    PGT_EQ_STR(mig_t_str(c, "SELECT checksum FROM mig_test.history WHERE scope = 'order' "
                            "AND version = 10"), ck);

    /* a second run does nothing */
    rc = mig_t_run(c, &o, &m);
    PGT_OK(rc);
    for (int i = 0; i < pgpipe_migrate_count(m); i++)
        PGT_CHECK(!pgpipe_migrate_entry(m, i)->ran);
    const char *txt = mig_t_format(m);
    PGT_CONTAINS(txt, "5 migrations: 5 applied");
    PGT_CONTAINS(txt, "after_two");
    pgpipe_migrator_close(m);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_order CASCADE"));
    PQfinish(c);
}

PGT_TEST(migrate, no_transaction_concurrently)
{
    const char *d = mig_t_dir("notx");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_notx CASCADE"));
    mig_t_write(d, "V1__table.sql",
                "CREATE SCHEMA mig_notx;\n"
                "CREATE TYPE mig_notx.mood AS ENUM ('sad', 'ok');\n"
                "CREATE TABLE mig_notx.t AS SELECT g AS id FROM generate_series(1, 1000) g;\n");
    mig_t_write(d, "V2__index.sql",
                "-- pgpipe:no-transaction\n"
                "CREATE INDEX CONCURRENTLY mig_notx_t_id ON mig_notx.t (id);\n"
                "ALTER TYPE mig_notx.mood ADD VALUE 'happy';\n"
                "VACUUM mig_notx.t;\n");
    /* the same in a transactional file fails, naming the file and line */
    mig_t_write(d, "V3__bad.sql", "SELECT 1;\n\nCREATE INDEX CONCURRENTLY x3 ON mig_notx.t (id);\n");
    pgpipe_migrate_options o = mig_t_opts(d, "notx");
    pgpipe_migrator *m = NULL;
    int rc = mig_t_run(c, &o, &m);
    PGT_EQ_INT(rc, PGPIPE_DB);
    const pgpipe_error *e = pgpipe_errinfo(m);
    PGT_EQ_STR(e->source, "V3__bad.sql");
    PGT_EQ_INT(e->line, 3);
    PGT_EQ_STR(e->sqlstate, "25001"); /* active_sql_transaction */
    PGT_CONTAINS(mig_t_err(m), "V3__bad.sql:3:1: statement 2 of 2 failed");
    PGT_CONTAINS(e->message, "CREATE INDEX CONCURRENTLY cannot run inside a transaction block");
    PGT_EQ_INT(mig_t_find(m, "index")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_EQ_INT(mig_t_find(m, "index")->transactional, 0);
    PGT_EQ_INT(mig_t_find(m, "bad")->state, PGPIPE_MIGRATION_FAILED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_index WHERE indexrelid = "
                            "'mig_notx.mig_notx_t_id'::regclass AND indisvalid"), 1);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM unnest(enum_range(NULL::mig_notx.mood))"), 3);
    PGT_EQ_INT(mig_t_int(c, "SELECT statements_done FROM mig_test.history WHERE scope = 'notx' "
                            "AND version = 2"), 3);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_notx CASCADE"));
    PQfinish(c);
}

PGT_TEST(migrate, failure_rolls_back_then_fix_continues)
{
    const char *d = mig_t_dir("fail");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_fail CASCADE"));
    mig_t_write(d, "V1__base.sql", "CREATE SCHEMA mig_fail;\n");
    mig_t_write(d, "V2__two.sql",
                "CREATE TABLE mig_fail.a (id int);\n"
                "INSERT INTO mig_fail.a VALUES (1);\n"
                "\n"
                "INSERT INTO mig_fail.a\n"
                "  SELECT id FROM mig_fail.nope;\n");
    mig_t_write(d, "V3__three.sql", "CREATE TABLE mig_fail.c (id int);\n");
    pgpipe_migrate_options o = mig_t_opts(d, "fail");
    pgpipe_migrator *m = NULL;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_DB);
    const pgpipe_error *e = pgpipe_errinfo(m);
    PGT_EQ_STR(e->source, "V2__two.sql");
    PGT_EQ_INT(e->line, 4);
    PGT_EQ_STR(e->sqlstate, "42P01");
    PGT_EQ_STR(mig_t_err(m), "V2__two.sql:4:1: statement 3 of 3 failed: relation "
                             "\"mig_fail.nope\" does not exist (at line 5, column 18) "
                             "[SQLSTATE 42P01]");
    PGT_EQ_INT(mig_t_find(m, "two")->state, PGPIPE_MIGRATION_FAILED);
    PGT_EQ_INT(mig_t_find(m, "two")->error_line, 4);
    PGT_EQ_STR(mig_t_find(m, "two")->sqlstate, "42P01");
    PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_PENDING);
    PGT_CONTAINS(mig_t_format(m), "re-apply (last attempt failed)");
    pgpipe_migrator_close(m);
    /* rolled back: the table of the first statement is not there */
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'mig_fail'"), 0);
    PGT_EQ_STR(mig_t_str(c, "SELECT status FROM mig_test.history WHERE scope = 'fail' "
                            "AND version = 2"), "failed");
    PGT_EQ_INT(PQtransactionStatus(c), PQTRANS_IDLE);
    /* running again without a fix fails the same way, nothing to reset */
    PGT_EQ_INT(mig_t_run(c, &o, NULL), PGPIPE_DB);
    /* fix the file and run again: continues cleanly */
    mig_t_write(d, "V2__two.sql",
                "CREATE TABLE mig_fail.a (id int);\n"
                "INSERT INTO mig_fail.a VALUES (1);\n");
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "two")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_CHECK(mig_t_find(m, "two")->error == NULL);
    PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_fail.a"), 1);
    /* a transaction control statement in a transactional file is refused */
    mig_t_write(d, "V4__commit.sql", "INSERT INTO mig_fail.a VALUES (2);\nCOMMIT;\n");
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_PARSE);
    PGT_CONTAINS(mig_t_err(m), "V4__commit.sql:2:1: transaction control statement (COMMIT)");
    pgpipe_migrator_close(m);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_fail CASCADE"));
    PQfinish(c);
}

PGT_TEST(migrate, no_transaction_failure_resumes)
{
    const char *d = mig_t_dir("resume");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_resume CASCADE"));
    mig_t_write(d, "V1__steps.sql",
                "-- pgpipe:no-transaction\n"
                "CREATE SCHEMA mig_resume;\n"
                "CREATE TABLE mig_resume.a (id int);\n"
                "INSERT INTO mig_resume.a VALUES (1);\n"
                "CREATE INDEX CONCURRENTLY a_id ON mig_resume.missing (id);\n"
                "INSERT INTO mig_resume.a VALUES (2);\n");
    pgpipe_migrate_options o = mig_t_opts(d, "resume");
    pgpipe_migrator *m = NULL;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_DB);
    PGT_EQ_INT(pgpipe_errinfo(m)->line, 5);
    const pgpipe_migration_info *in = mig_t_find(m, "steps");
    PGT_EQ_INT(in->state, PGPIPE_MIGRATION_PARTIAL);
    PGT_EQ_INT(in->statements_done, 3);
    PGT_EQ_INT(in->statements_total, 5);
    PGT_CONTAINS(in->action, "resume at statement 4");
    PGT_CONTAINS(mig_t_format(m), "3/5 statements done; line 5");
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_resume.a"), 1);
    /* changing what already ran is refused */
    mig_t_write(d, "V1__steps.sql",
                "-- pgpipe:no-transaction\n"
                "CREATE SCHEMA mig_resume;\n"
                "CREATE TABLE mig_resume.a (id bigint);\n"
                "INSERT INTO mig_resume.a VALUES (1);\n"
                "CREATE INDEX CONCURRENTLY a_id ON mig_resume.a (id);\n"
                "INSERT INTO mig_resume.a VALUES (2);\n");
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(m), "cannot resume: the first 3 statements");
    pgpipe_migrator_close(m);
    /* fixing the failed statement resumes after the three that ran */
    mig_t_write(d, "V1__steps.sql",
                "-- pgpipe:no-transaction\n"
                "CREATE SCHEMA mig_resume;\n"
                "CREATE TABLE mig_resume.a (id int);\n"
                "INSERT INTO mig_resume.a VALUES (1);\n"
                "CREATE INDEX CONCURRENTLY a_id ON mig_resume.a (id);\n"
                "INSERT INTO mig_resume.a VALUES (2);\n");
    PGT_OK(mig_t_run(c, &o, &m));
    in = mig_t_find(m, "steps");
    PGT_EQ_INT(in->state, PGPIPE_MIGRATION_APPLIED);
    PGT_EQ_INT(in->statements_done, 5);
    pgpipe_migrator_close(m);
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM mig_resume.a"),
               "1,2");
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_resume CASCADE"));
    PQfinish(c);
}

PGT_TEST(migrate, drift_repair_and_missing)
{
    const char *d = mig_t_dir("drift");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_drift CASCADE"));
    mig_t_write(d, "V1__one.sql", "CREATE SCHEMA mig_drift;\nCREATE TABLE mig_drift.a (id int);\n");
    mig_t_write(d, "V2__two.sql", "CREATE TABLE mig_drift.b (id int);\n");
    pgpipe_migrate_options o = mig_t_opts(d, "drift");
    PGT_OK(mig_t_run(c, &o, NULL));
    /* CRLF line endings are not a change */
    mig_t_write(d, "V1__one.sql",
                "CREATE SCHEMA mig_drift;\r\nCREATE TABLE mig_drift.a (id int);\r\n");
    pgpipe_migrator *m = NULL;
    PGT_OK(mig_t_run(c, &o, &m));
    pgpipe_migrator_close(m);
    /* an edit is drift: an error naming the file */
    mig_t_write(d, "V1__one.sql", "CREATE SCHEMA mig_drift;\nCREATE TABLE mig_drift.a (id bigint);\n");
    mig_t_write(d, "V3__three.sql", "CREATE TABLE mig_drift.c (id int);\n");
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    PGT_CONTAINS(mig_t_err(m), "V1__one.sql: applied migration changed on disk");
    PGT_EQ_STR(pgpipe_errinfo(m)->source, "V1__one.sql");
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'mig_drift' "
                            "AND tablename = 'c'"), 0);
    /* status shows it; the file of V2 goes missing too */
    remove(mig_t_path(d, "V2__two.sql"));
    PGT_OK(pgpipe_migrator_open(&m, c, &o));
    PGT_OK(pgpipe_migrate_status(m));
    PGT_EQ_INT(mig_t_find(m, "one")->state, PGPIPE_MIGRATION_CHANGED);
    PGT_EQ_INT(mig_t_find(m, "two")->state, PGPIPE_MIGRATION_MISSING);
    PGT_CHECK(mig_t_find(m, "two")->file == NULL);
    PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_PENDING);
    const char *txt = mig_t_format(m);
    PGT_CONTAINS(txt, "changed");
    PGT_CONTAINS(txt, "missing");
    PGT_CONTAINS(txt, "3 migrations: 1 pending, 1 changed, 1 missing");
    pgpipe_migrator_close(m);
    /* repair records the new checksum and goes on */
    o.flags = PGPIPE_MIGRATE_REPAIR;
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "one")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_EQ_INT(mig_t_find(m, "two")->state, PGPIPE_MIGRATION_MISSING);
    pgpipe_migrator_close(m);
    /* the repaired file did not run again: the column is still int */
    PGT_EQ_STR(mig_t_str(c, "SELECT data_type FROM information_schema.columns WHERE "
                            "table_schema = 'mig_drift' AND table_name = 'a'"), "integer");
    o.flags = 0;
    PGT_OK(mig_t_run(c, &o, NULL));
    o.flags = PGPIPE_MIGRATE_DENY_MISSING;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    PGT_CONTAINS(mig_t_err(m), "V2__two.sql: applied migration is missing on disk");
    pgpipe_migrator_close(m);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_drift CASCADE"));
    PQfinish(c);
}

PGT_TEST(migrate, baseline_dry_run_out_of_order)
{
    const char *d = mig_t_dir("base");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_base CASCADE"));
    PQclear(PGT_EXEC(c, "CREATE SCHEMA mig_base"));
    /* an existing database: V1 and V2 already happened by hand */
    mig_t_write(d, "V1__old.sql", "SELECT 1 / 0;\n");
    mig_t_write(d, "V2__old.sql", "SELECT 1 / 0;\n");
    mig_t_write(d, "V3__new.sql", "CREATE TABLE mig_base.t3 (id int);\n");
    mig_t_write(d, "R__view.sql", "CREATE OR REPLACE VIEW mig_base.v AS SELECT 1 AS one;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "base");
    o.history_table = "mig_base.history"; /* created by the run */

    /* dry run: reports, changes nothing (not even the history table) */
    o.flags = PGPIPE_MIGRATE_DRY_RUN;
    o.baseline_version = "2";
    pgpipe_migrator *m = NULL;
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(pgpipe_migrate_count(m), 4);
    PGT_EQ_STR(mig_t_find(m, "new")->action, "apply");
    PGT_CHECK(mig_t_find(m, "new")->will_run);
    PGT_CHECK(!mig_t_find(m, "new")->ran);
    PGT_EQ_INT(mig_t_find(m, "new")->statements_total, 1);
    PGT_CHECK(mig_t_find(m, "view")->will_run);
    PGT_EQ_STR(pgpipe_migrate_entry(m, 0)->action, "record as baseline");
    PGT_CHECK(!pgpipe_migrate_entry(m, 0)->will_run);
    const char *txt = mig_t_format(m);
    PGT_CONTAINS(txt, "would apply");
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'mig_base'"), 0);

    /* baseline for real: V1 and V2 are recorded, not run (they would fail) */
    o.flags = 0;
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(pgpipe_migrate_entry(m, 0)->state, PGPIPE_MIGRATION_BASELINE);
    PGT_EQ_INT(pgpipe_migrate_entry(m, 1)->state, PGPIPE_MIGRATION_BASELINE);
    PGT_EQ_INT(mig_t_find(m, "new")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_EQ_INT(mig_t_find(m, "view")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_base.history WHERE status = 'baseline'"), 2);
    o.baseline_version = NULL;
    PGT_OK(mig_t_run(c, &o, NULL));

    /* a version added below an applied one is an error unless allowed */
    mig_t_write(d, "V5__five.sql", "CREATE TABLE mig_base.t5 (id int);\n");
    PGT_OK(mig_t_run(c, &o, NULL));
    mig_t_write(d, "V4__four.sql", "CREATE TABLE mig_base.t4 (id int);\n");
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    PGT_CONTAINS(mig_t_err(m), "V4__four.sql: version 4 is pending but a higher version");
    pgpipe_migrator_close(m);
    o.flags = PGPIPE_MIGRATE_OUT_OF_ORDER;
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "four")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);

    /* baseline at a version without a file records a marker; lower files are ignored */
    o.flags = 0;
    o.scope = "base2";
    o.baseline_version = "0010";
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_base.history WHERE scope = 'base2' "
                            "AND status = 'baseline'"), 6);
    pgpipe_migrator_close(m);
    o.baseline_version = NULL;
    mig_t_write(d, "V6__six.sql", "SELECT 1 / 0;\n");
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "six")->state, PGPIPE_MIGRATION_IGNORED);
    PGT_EQ_INT(mig_t_find(m, "baseline")->state, PGPIPE_MIGRATION_BASELINE);
    pgpipe_migrator_close(m);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_base CASCADE"));
    PQfinish(c);
}

PGT_TEST(migrate, target_leaves_later_versions_pending)
{
    const char *d = mig_t_dir("target");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_to CASCADE"));
    PQclear(PGT_EXEC(c, "CREATE SCHEMA mig_to"));
    mig_t_write(d, "V1__one.sql", "CREATE TABLE mig_to.t1 (id int);\n");
    mig_t_write(d, "V2__two.sql", "CREATE TABLE mig_to.t2 (id int);\n");
    mig_t_write(d, "V10__ten.sql", "CREATE TABLE mig_to.t10 (id int);\n");
    mig_t_write(d, "R__view.sql", "CREATE OR REPLACE VIEW mig_to.v AS SELECT 1 AS one;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "target");
    o.history_table = "mig_to.history";
    /* a version is a number, not a name */
    o.target_version = "two";
    pgpipe_migrator *m = NULL;
    PGT_EQ_INT(pgpipe_migrator_open(&m, c, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(mig_t_err(m), "target version \"two\" is not a number");
    pgpipe_migrator_close(m);
    /* up to 2 (written 02: versions compare as numbers): 10 stays pending, the
    ** repeatable one runs as always */
    o.target_version = "02";
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "one")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_EQ_INT(mig_t_find(m, "two")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_EQ_INT(mig_t_find(m, "ten")->state, PGPIPE_MIGRATION_PENDING);
    PGT_CHECK(!mig_t_find(m, "ten")->ran);
    PGT_EQ_STR(mig_t_find(m, "ten")->action, "above the target 2: left pending");
    PGT_EQ_INT(mig_t_find(m, "view")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'mig_to' AND "
                            "tablename = 't10'"), 0);
    /* without a target the rest follows */
    o.target_version = NULL;
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "ten")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE schemaname = 'mig_to' AND "
                            "tablename = 't10'"), 1);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_to CASCADE"));
    PQfinish(c);
}

PGT_TEST(migrate, repeatable_runs_when_changed)
{
    const char *d = mig_t_dir("rep");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_rep CASCADE"));
    mig_t_write(d, "V1__t.sql", "CREATE SCHEMA mig_rep;\nCREATE TABLE mig_rep.runs (n int);\n");
    mig_t_write(d, "R__count.sql",
                "INSERT INTO mig_rep.runs VALUES (1);\n"
                "CREATE OR REPLACE FUNCTION mig_rep.v() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "rep");
    PGT_OK(mig_t_run(c, &o, NULL));
    PGT_OK(mig_t_run(c, &o, NULL));
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_rep.runs"), 1);
    mig_t_write(d, "R__count.sql",
                "INSERT INTO mig_rep.runs VALUES (2);\n"
                "CREATE OR REPLACE FUNCTION mig_rep.v() RETURNS int LANGUAGE sql AS $$ SELECT 2 $$;\n");
    /* a new versioned file runs before the changed repeatable */
    mig_t_write(d, "V2__col.sql", "ALTER TABLE mig_rep.runs ADD COLUMN at timestamptz DEFAULT clock_timestamp();\n");
    pgpipe_migrator *m = NULL;
    PGT_OK(pgpipe_migrator_open(&m, c, &o));
    PGT_OK(pgpipe_migrate_status(m));
    PGT_EQ_INT(mig_t_find(m, "count")->state, PGPIPE_MIGRATION_OUTDATED);
    PGT_OK(pgpipe_migrate_run(m));
    PGT_EQ_INT(mig_t_find(m, "count")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_CHECK(mig_t_find(m, "count")->ran);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT mig_rep.v()"), 2);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_rep.runs WHERE n = 2 AND at IS NOT NULL"), 1);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_test.history WHERE scope = 'rep' AND kind = 'R'"), 1);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_rep CASCADE"));
    PQfinish(c);
}

/* ---- the lock: two processes ------------------------------------------ */

static int mig_t_child_run(const char *dir, int timeout_ms, char *msg, size_t msgsize)
{
    PGconn *c = PQconnectdb(pgt_dsn());
    if (PQstatus(c) != CONNECTION_OK)
        return 99;
    pgpipe_migrate_options o = mig_t_opts(dir, "lock");
    o.lock_timeout_ms = timeout_ms;
    pgpipe_migrator *m = NULL;
    int rc = pgpipe_migrator_open(&m, c, &o);
    if (rc == PGPIPE_OK)
        rc = pgpipe_migrate_run(m);
    if (msg)
        snprintf(msg, msgsize, "%s", pgpipe_errmsg(m));
    pgpipe_migrator_close(m);
    PQfinish(c);
    return rc;
}

PGT_TEST(migrate, two_processes_never_both_apply)
{
    const char *d = mig_t_dir("lock");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_lock CASCADE"));
    PQclear(PGT_EXEC(c, "CREATE SCHEMA mig_lock"));
    PQclear(PGT_EXEC(c, "CREATE TABLE mig_lock.applied (pid int)"));
    mig_t_write(d, "V1__slow.sql",
                "INSERT INTO mig_lock.applied VALUES (pg_backend_pid());\n"
                "SELECT pg_sleep(1);\n");
    mig_t_write(d, "V2__more.sql", "INSERT INTO mig_lock.applied VALUES (pg_backend_pid());\n");
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        PGT_CHECK(kids[k] >= 0);
        if (kids[k] == 0)
            _exit(mig_t_child_run(d, 30000, NULL, 0));
    }
    for (int k = 0; k < 2; k++) {
        int st = 0;
        PGT_CHECK(waitpid(kids[k], &st, 0) == kids[k]);
        PGT_CHECK(WIFEXITED(st));
        PGT_EQ_INT(WEXITSTATUS(st), PGPIPE_OK);
    }
    /* each migration ran exactly once */
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_lock.applied"), 2);

    /* a runner that cannot get the lock in time gives up clearly */
    mig_t_write(d, "V3__blocked.sql", "INSERT INTO mig_lock.applied VALUES (0);\n");
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", (long long)PGPIPE_MIGRATE_LOCK_KEY);
    PQclear(PGT_EXEC(c, sql));
    int pipefd[2];
    PGT_CHECK(pipe(pipefd) == 0);
    pid_t kid = fork();
    PGT_CHECK(kid >= 0);
    if (kid == 0) {
        char msg[1024];
        int rc = mig_t_child_run(d, 300, msg, sizeof msg);
        ssize_t w = write(pipefd[1], msg, strlen(msg) + 1);
        (void)w;
        _exit(rc);
    }
    close(pipefd[1]);
    int st = 0;
    PGT_CHECK(waitpid(kid, &st, 0) == kid);
    char msg[1024] = "";
    ssize_t got = read(pipefd[0], msg, sizeof msg - 1);
    PGT_CHECK(got > 0);
    close(pipefd[0]);
    PGT_CHECK(WIFEXITED(st));
    PGT_EQ_INT(WEXITSTATUS(st), PGPIPE_BUSY);
    PGT_CONTAINS(msg, "another migration runner holds the migration lock (pg_advisory_lock(");
    PGT_CONTAINS(msg, "backend pid");
    PGT_CONTAINS(msg, "gave up after 300 ms");
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%lld)", (long long)PGPIPE_MIGRATE_LOCK_KEY);
    PQclear(PGT_EXEC(c, sql));
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_lock.applied WHERE pid = 0"), 0);
    /* and the lock is released after a run */
    PGT_EQ_INT(mig_t_child_run(d, 1000, NULL, 0), PGPIPE_OK);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_lock CASCADE"));
    PQfinish(c);
}

PGT_TEST(migrate, parse_error_stops_before_anything_runs)
{
    const char *d = mig_t_dir("parse");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS public.mig_parse_t"));
    mig_t_write(d, "V1__ok.sql", "CREATE TABLE public.mig_parse_t (id int);\n");
    mig_t_write(d, "V2__broken.sql", "SELECT 1;\n\nSELECT $x$ never closed;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "parse");
    pgpipe_migrator *m = NULL;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_PARSE);
    PGT_EQ_STR(pgpipe_errinfo(m)->source, "V2__broken.sql");
    PGT_EQ_INT(pgpipe_errinfo(m)->line, 3);
    PGT_CONTAINS(mig_t_err(m), "V2__broken.sql:3:8: unterminated dollar-quoted string");
    PGT_EQ_INT(mig_t_find(m, "ok")->state, PGPIPE_MIGRATION_PENDING);
    /* status still works on the broken directory */
    PGT_OK(pgpipe_migrate_status(m));
    PGT_EQ_INT(pgpipe_migrate_count(m), 2);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'mig_parse_t'"), 0);
    PQfinish(c);
}

/* ---- issue 20: the loader's lock, restarts, unknown outcomes, poolers -- */

/* Polls a query until it returns true; the test fails after 30 s. */
static void mig_t_wait_true(PGconn *c, const char *sql)
{
    for (int i = 0; i < 600; i++) {
        if (strcmp(mig_t_str(c, sql), "t") == 0)
            return;
        pgpipe_sleep_ms(50);
    }
    fprintf(stderr, "    still false after 30 s: %s\n", sql);
    PGresult *r = PQexec(c, "SELECT pid, state, wait_event_type, wait_event, left(query, 80) "
                            "FROM pg_stat_activity WHERE backend_type = 'client backend'");
    for (int i = 0; i < PQntuples(r); i++)
        fprintf(stderr, "      %s %s %s %s %s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
                PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4));
    PQclear(r);
    PGT_CHECK(0);
}

/* Waits until a backend runs a query starting with prefix and waits on a
** lock (a gate the test holds). c must not be in a transaction, which would
** keep seeing the activity of its first look. */
static void mig_t_wait_blocked(PGconn *c, const char *prefix)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE "
             "wait_event_type = 'Lock' AND query LIKE '%s%%' AND pid <> pg_backend_pid())", prefix);
    mig_t_wait_true(c, sql);
}

/* Restarts the test cluster (every connection is lost). */
static void mig_t_restart(void)
{
    const char *dir = getenv("PGPIPE_TEST_PGDIR");
    const char *top = getenv("PGPIPE_TOP");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "sh '%s/tool/pgtmp.sh' restart '%s' >/dev/null",
             top && *top ? top : ".", dir);
    PGT_CHECK_MSG(system(cmd) == 0, "restart failed: %s", cmd);
}

static void mig_t_need_restart(void)
{
    const char *dir = getenv("PGPIPE_TEST_PGDIR");
    if (!dir || !*dir)
        PGT_SKIP("no PGPIPE_TEST_PGDIR: cannot restart the test cluster");
}

/* A migration run on a thread of its own, on its own connection (kept open
** after the run, so the entries can be read). */
typedef struct mig_t_bg {
    pgpipe_migrate_options o;
    PGconn *conn;
    pgpipe_migrator *m;
    int rc;
    pthread_t th;
} mig_t_bg;

static void *mig_t_bg_main(void *arg)
{
    mig_t_bg *b = arg;
    b->rc = pgpipe_migrate_run(b->m);
    return NULL;
}

static void mig_t_bg_start(mig_t_bg *b)
{
    b->conn = pgt_connect();
    PGT_OK(pgpipe_migrator_open(&b->m, b->conn, &b->o));
    PGT_CHECK(pthread_create(&b->th, NULL, mig_t_bg_main, b) == 0);
}

static void mig_t_bg_join(mig_t_bg *b)
{
    pthread_join(b->th, NULL);
}

static void mig_t_bg_close(mig_t_bg *b)
{
    pgpipe_migrator_close(b->m);
    PQfinish(b->conn);
}

/* (a) A loader whose schema is installed loads while a migration holds the
** lock; one that must install still takes it. */
static int mig_t_child_load(const char *dsn)
{
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = dsn;
    o.source_value = "mig_t";
    pgpipe_loader *l = NULL;
    int rc = pgpipe_loader_open(&l, &o);
    if (rc == PGPIPE_OK)
        rc = pgpipe_loader_feed(l, "{\"event_type\":\"a\",\"n\":1}\n", 26);
    if (rc == PGPIPE_OK)
        rc = pgpipe_loader_finish(l);
    if (rc != PGPIPE_OK)
        fprintf(stderr, "    loader: %s\n", pgpipe_errmsg(l));
    pgpipe_loader_close(l);
    return rc;
}

PGT_TEST(migrate, loader_does_not_wait_for_a_migration)
{
    PGconn *c = pgt_db_open();
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", (long long)PGPIPE_MIGRATE_LOCK_KEY);
    PQclear(PGT_EXEC(c, sql)); /* a long migration of someone else */
    PGconn *c2 = pgt_connect();
    pgpipe_migrate_options o;
    pgpipe_migrate_options_init(&o);
    o.lock_timeout_ms = -1; /* one try: waiting would be the bug */
    pgpipe_error err;
    int rc = pgpipe_schema_install(c2, &o, &err);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", err.message);
    PQfinish(c2);
    /* the loader (install_schema on by default) loads at once */
    PGT_OK(mig_t_child_load(pgt_dsn()));
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM staging.raw_events WHERE source = 'mig_t'"), 1);
    PQclear(PGT_EXEC(c, "DELETE FROM staging.raw_events WHERE source = 'mig_t'"));
    PQfinish(c);

    /* a fresh database: the install needs the lock and takes it */
    PGconn *f = pgt_db_fresh("mig_t_fresh");
    char dsn[1024];
    snprintf(dsn, sizeof dsn, "%s dbname=mig_t_fresh", pgt_dsn());
    PGconn *holder = PQconnectdb(dsn);
    PGT_CHECK(PQstatus(holder) == CONNECTION_OK);
    PQclear(PGT_EXEC(holder, sql));
    PGT_EQ_INT(pgpipe_schema_install(f, &o, &err), PGPIPE_BUSY);
    PGT_CONTAINS(err.message, "another migration runner holds the migration lock");
    PQfinish(holder);
    /* two loaders at once on it: both load, the schema is installed once */
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        PGT_CHECK(kids[k] >= 0);
        if (kids[k] == 0)
            _exit(mig_t_child_load(dsn));
    }
    for (int k = 0; k < 2; k++) {
        int st = 0;
        PGT_CHECK(waitpid(kids[k], &st, 0) == kids[k]);
        PGT_CHECK(WIFEXITED(st));
        PGT_EQ_INT(WEXITSTATUS(st), PGPIPE_OK);
    }
    int embedded = 0;
    for (int i = 0; i < pgpipe_sql_file_count(); i++)
        embedded += strncmp(pgpipe_sql_file_path(i), "schema/", 7) == 0;
    PGT_EQ_INT(mig_t_int(f, "SELECT count(*) FROM pgpipe.migrations WHERE scope = 'schema' "
                            "AND status = 'applied'"), embedded);
    PGT_EQ_INT(mig_t_int(f, "SELECT count(*) FROM staging.raw_events"), 2);
    pgt_db_close(f);
}

/* (b) A server restart between files: the failed run reports what
** committed as applied, and the history agrees. */
PGT_TEST(migrate, restart_between_files_reports_what_committed)
{
    mig_t_need_restart();
    const char *d = mig_t_dir("restart");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_rs CASCADE; CREATE SCHEMA mig_rs;"
                        "CREATE TABLE mig_rs.gate (x int);"
                        "DO $$ BEGIN IF to_regclass('mig_test.history') IS NOT NULL THEN "
                        "DELETE FROM mig_test.history WHERE scope = 'restart'; END IF; END $$"));
    mig_t_write(d, "V1__one.sql", "CREATE TABLE mig_rs.one (id int);\n");
    mig_t_write(d, "V2__two.sql", "CREATE TABLE mig_rs.two (id int);\n");
    mig_t_write(d, "V3__gated.sql", "CREATE TABLE mig_rs.three AS SELECT * FROM mig_rs.gate;\n");
    mig_t_write(d, "V4__four.sql", "CREATE TABLE mig_rs.four (id int);\n");
    PGconn *gate = pgt_connect();
    PQclear(PGT_EXEC(gate, "BEGIN; LOCK TABLE mig_rs.gate IN ACCESS EXCLUSIVE MODE"));
    mig_t_bg b;
    memset(&b, 0, sizeof b);
    b.o = mig_t_opts(d, "restart");
    mig_t_bg_start(&b);
    mig_t_wait_blocked(c, "CREATE TABLE mig_rs.three");
    mig_t_restart();
    mig_t_bg_join(&b);
    PQfinish(c);
    PQfinish(gate);
    PGT_CHECK(b.rc != PGPIPE_OK);
    /* V1 and V2 committed: the run says so, not "pending" */
    PGT_EQ_INT(mig_t_find(b.m, "one")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_CHECK(mig_t_find(b.m, "one")->ran && !mig_t_find(b.m, "one")->will_run);
    PGT_EQ_INT(mig_t_find(b.m, "two")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_EQ_INT(mig_t_find(b.m, "gated")->state, PGPIPE_MIGRATION_PENDING);
    PGT_CHECK(!mig_t_find(b.m, "gated")->ran);
    PGT_EQ_INT(mig_t_find(b.m, "four")->state, PGPIPE_MIGRATION_PENDING);
    const char *txt = mig_t_format(b.m);
    PGT_CONTAINS(txt, "4 migrations: 2 applied, 2 pending");
    mig_t_bg_close(&b);
    /* the history says the same, and the next run finishes */
    c = pgt_connect();
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(version::text, ',' ORDER BY version) FROM "
                            "mig_test.history WHERE scope = 'restart' AND status = 'applied'"),
               "1,2");
    pgpipe_migrate_options o = mig_t_opts(d, "restart");
    pgpipe_migrator *m = NULL;
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_CHECK(mig_t_find(m, "gated")->ran && !mig_t_find(m, "one")->ran);
    pgpipe_migrator_close(m);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_rs CASCADE"));
    PQfinish(c);
}

/* (c) A no-transaction file cut off by a server restart between a statement's
** commit and the record of its progress. */
/* Runs b until the statement starting with stmt_prefix waits at the gate
** (gate_sql, held by the test); then holds the file's history row, opens
** the gate, waits until the runner's progress write waits for the row, and
** restarts the server. */
static void mig_t_hold_progress_and_restart(PGconn *c, const char *gate_sql,
                                            const char *stmt_prefix, const char *version,
                                            mig_t_bg *b)
{
    PGconn *gate = pgt_connect();
    char sql[512];
    snprintf(sql, sizeof sql, "BEGIN; %s", gate_sql);
    PQclear(PGT_EXEC(gate, sql));
    mig_t_bg_start(b);
    mig_t_wait_blocked(c, stmt_prefix);
    /* hold the history row, then let the statement go: its progress write waits */
    PGconn *row = pgt_connect();
    snprintf(sql, sizeof sql, "BEGIN; SELECT 1 FROM mig_test.history WHERE scope = 'uo' AND "
             "version = %s FOR UPDATE", version);
    PQclear(PGT_EXEC(row, sql));
    PQclear(PGT_EXEC(gate, "COMMIT"));
    mig_t_wait_blocked(c, "UPDATE \"mig_test\".\"history\" SET statements_done");
    /* End the runner's session first, while its progress write still waits:
    ** in a restart alone the lock holder may die first, and on a loaded
    ** machine the runner's write can then commit before its own SIGTERM. */
    PQclear(PGT_EXEC(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                        "wait_event_type = 'Lock' AND query LIKE 'UPDATE \"mig_test\".\"history\" "
                        "SET statements_done%' AND pid <> pg_backend_pid()"));
    mig_t_wait_true(c, "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query LIKE "
                       "'UPDATE \"mig_test\".\"history\" SET statements_done%' AND state <> 'idle' "
                       "AND pid <> pg_backend_pid())");
    mig_t_restart();
    mig_t_bg_join(b);
    PGT_CHECK(b->rc != PGPIPE_OK);
    mig_t_bg_close(b);
    PQfinish(row);
    PQfinish(gate);
}

PGT_TEST(migrate, unknown_outcome_stops_until_resume_or_redo)
{
    mig_t_need_restart();
    const char *d = mig_t_dir("uo");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_uo CASCADE; CREATE SCHEMA mig_uo;"
                        "CREATE TABLE mig_uo.gate (x int); INSERT INTO mig_uo.gate VALUES (1);"
                        "CREATE TABLE mig_uo.log (x text);"
                        "DO $$ BEGIN IF to_regclass('mig_test.history') IS NOT NULL THEN "
                        "DELETE FROM mig_test.history WHERE scope = 'uo'; END IF; END $$"));
    mig_t_write(d, "V1__rows.sql",
                "-- pgpipe:no-transaction\n"
                "CREATE TABLE mig_uo.t (id int);\n"
                "INSERT INTO mig_uo.t SELECT g FROM generate_series(1, 1000) g;\n"
                "INSERT INTO mig_uo.t SELECT g FROM generate_series(1001, 2000) g, mig_uo.gate;\n"
                "INSERT INTO mig_uo.t SELECT g FROM generate_series(2001, 3000) g;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "uo");
    /* the restart falls between statement 3's work and its progress record */
    mig_t_bg b;
    memset(&b, 0, sizeof b);
    b.o = o;
    mig_t_hold_progress_and_restart(c, "LOCK TABLE mig_uo.gate IN ACCESS EXCLUSIVE MODE",
                                    "INSERT INTO mig_uo.t SELECT g FROM generate_series(1001",
                                    "1", &b);
    PQfinish(c);
    c = pgt_connect();
    /* statement 3 committed with its progress or not at all: it did not */
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_uo.t"), 1000);
    PGT_EQ_STR(mig_t_str(c, "SELECT status || ' ' || statements_done || ' ' || "
                            "COALESCE(statement_started, 0) FROM mig_test.history "
                            "WHERE scope = 'uo' AND version = 1"), "partial 2 0");
    pgpipe_migrator *m = NULL;
    PGT_OK(mig_t_run(c, &o, &m));
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_uo.t"), 3000);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(DISTINCT id) FROM mig_uo.t"), 3000);

    /* a statement that cannot run in a transaction: start and end records */
    mig_t_write(d, "V2__index.sql",
                "-- pgpipe:no-transaction\n"
                "INSERT INTO mig_uo.log VALUES ('first');\n"
                "CREATE INDEX CONCURRENTLY t_id ON mig_uo.t (id);\n"
                "INSERT INTO mig_uo.log VALUES ('third');\n");
    memset(&b, 0, sizeof b);
    b.o = o;
    mig_t_hold_progress_and_restart(c, "LOCK TABLE mig_uo.t IN SHARE UPDATE EXCLUSIVE MODE",
                                    "CREATE INDEX CONCURRENTLY t_id", "2", &b);
    PQfinish(c);
    c = pgt_connect();
    PGT_EQ_STR(mig_t_str(c, "SELECT status || ' ' || statements_done || ' ' || "
                            "COALESCE(statement_started, 0) FROM mig_test.history "
                            "WHERE scope = 'uo' AND version = 2"), "partial 1 2");
    PQclear(PGT_EXEC(c, "CREATE TABLE mig_uo.saved AS SELECT status, statements_done, "
                        "statement_started, progress_checksum FROM mig_test.history "
                        "WHERE scope = 'uo' AND version = 2"));
    /* the next run stops before anything runs, naming the file and the statement */
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    PGT_EQ_STR(pgpipe_errinfo(m)->source, "V2__index.sql");
    PGT_EQ_INT(pgpipe_errinfo(m)->line, 3);
    PGT_CONTAINS(pgpipe_errmsg(m), "statement 2 of 3 (CREATE INDEX CONCURRENTLY t_id ON mig_uo.t");
    PGT_CONTAINS(pgpipe_errmsg(m), "its outcome is unknown");
    PGT_CONTAINS(pgpipe_errmsg(m), "--resume-from 3 if it took effect, or --redo 2");
    PGT_EQ_INT(mig_t_find(m, "index")->statement_unknown, 2);
    PGT_CONTAINS(mig_t_format(m), "outcome is unknown");
    pgpipe_migrator_close(m);
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(x, ',') FROM mig_uo.log"), "first");
    /* the options name the statement in doubt, or they are refused */
    o.redo = 3;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(m), "--redo 3: the statement whose outcome is unknown is statement 2");
    pgpipe_migrator_close(m);
    o.redo = 0;
    o.resume_from = 2;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_MISUSE);
    pgpipe_migrator_close(m);
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(x, ',') FROM mig_uo.log"), "first");
    /* --resume-from 3: the index was built; it is not built again */
    o.resume_from = 3;
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "index")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(x, ',' ORDER BY x) FROM mig_uo.log"), "first,third");
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_index WHERE indexrelid = 'mig_uo.t_id'::regclass "
                            "AND indisvalid"), 1);
    /* nothing in doubt now: the options are refused */
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(m), "no statement's outcome is unknown");
    pgpipe_migrator_close(m);
    /* --redo 2: the same doubt, but the index was not built: it runs again */
    PQclear(PGT_EXEC(c, "DROP INDEX mig_uo.t_id; DELETE FROM mig_uo.log WHERE x = 'third';"
                        "UPDATE mig_test.history h SET (status, statements_done, statement_started, "
                        "progress_checksum) = (SELECT * FROM mig_uo.saved) "
                        "WHERE scope = 'uo' AND version = 2"));
    o.resume_from = 0;
    o.redo = 2;
    PGT_OK(mig_t_run(c, &o, &m));
    pgpipe_migrator_close(m);
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(x, ',' ORDER BY x) FROM mig_uo.log"), "first,third");
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_index WHERE indexrelid = 'mig_uo.t_id'::regclass "
                            "AND indisvalid"), 1);
    /* a history table made before statement_started: a run with nothing to do
    ** leaves it alone; one that has work adds the column (under the lock) */
    o.redo = 0;
    PQclear(PGT_EXEC(c, "ALTER TABLE mig_test.history DROP COLUMN statement_started"));
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "index")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                            "'mig_test' AND table_name = 'history' AND column_name = "
                            "'statement_started'"), 0);
    mig_t_write(d, "V3__more.sql", "-- pgpipe:no-transaction\nVACUUM mig_uo.log;\n");
    PGT_OK(mig_t_run(c, &o, NULL));
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM information_schema.columns WHERE table_schema = "
                            "'mig_test' AND table_name = 'history' AND column_name = "
                            "'statement_started'"), 1);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_uo CASCADE"));
    PQfinish(c);
}

/* (d) Behind a transaction pooler (PGPIPE_POOLER=transaction on a direct
** connection): no session lock, ever; each step takes a transaction lock and
** re-reads the history; concurrent runners still apply each file once. */
static int mig_t_child_px(const char *dir, const char *dsn)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        return 99;
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    int rc;
    if (dir) {
        pgpipe_migrate_options o = mig_t_opts(dir, "px");
        o.pooler = PGPIPE_POOLER_TRANSACTION;
        pgpipe_migrator *m = NULL;
        rc = pgpipe_migrator_open(&m, c, &o);
        if (rc == PGPIPE_OK)
            rc = pgpipe_migrate_run(m);
        if (rc != PGPIPE_OK)
            fprintf(stderr, "    runner %d: %s\n", (int)getpid(), pgpipe_errmsg(m));
        pgpipe_migrator_close(m);
    } else {
        pgpipe_error err;
        rc = pgpipe_schema_install(c, NULL, &err); /* the mode from PGPIPE_POOLER */
        if (rc != PGPIPE_OK)
            fprintf(stderr, "    install %d: %s\n", (int)getpid(), err.message);
    }
    PQfinish(c);
    return rc;
}

static void mig_t_two_px(const char *dir, const char *dsn)
{
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        PGT_CHECK(kids[k] >= 0);
        if (kids[k] == 0)
            _exit(mig_t_child_px(dir, dsn));
    }
    for (int k = 0; k < 2; k++) {
        int st = 0;
        PGT_CHECK(waitpid(kids[k], &st, 0) == kids[k]);
        PGT_CHECK(WIFEXITED(st));
        PGT_EQ_INT(WEXITSTATUS(st), PGPIPE_OK);
    }
}

PGT_TEST(migrate, transaction_pooler_takes_no_session_lock)
{
    setenv("PGPIPE_POOLER", "transaction", 1);
    const char *d = mig_t_dir("px");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_px CASCADE; CREATE SCHEMA mig_px;"
                        "CREATE TABLE mig_px.gate (x int); CREATE TABLE mig_px.log (tag text);"
                        "DO $$ BEGIN IF to_regclass('mig_test.history') IS NOT NULL THEN "
                        "DELETE FROM mig_test.history WHERE scope = 'px'; END IF; END $$"));
    /* while a statement runs outside a transaction, the runner holds no lock */
    mig_t_write(d, "V1__vacuum.sql", "-- pgpipe:no-transaction\n"
                                     "INSERT INTO mig_px.log VALUES ('v1.1');\n"
                                     "VACUUM mig_px.gate;\n");
    PGconn *gate = pgt_connect();
    PQclear(PGT_EXEC(gate, "BEGIN; LOCK TABLE mig_px.gate IN SHARE UPDATE EXCLUSIVE MODE"));
    mig_t_bg b;
    memset(&b, 0, sizeof b);
    b.o = mig_t_opts(d, "px"); /* pooler AUTO: PGPIPE_POOLER decides */
    mig_t_bg_start(&b);
    mig_t_wait_blocked(c, "VACUUM mig_px.gate");
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%lld)", (long long)PGPIPE_MIGRATE_LOCK_KEY);
    PGT_EQ_STR(mig_t_str(c, sql), "t");
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%lld)", (long long)PGPIPE_MIGRATE_LOCK_KEY);
    PGT_EQ_STR(mig_t_str(c, sql), "t");
    PQclear(PGT_EXEC(gate, "COMMIT"));
    mig_t_bg_join(&b);
    PGT_CHECK_MSG(b.rc == PGPIPE_OK, "%s", pgpipe_errmsg(b.m));
    PGT_EQ_INT(mig_t_find(b.m, "vacuum")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_EQ_INT(mig_t_int(b.conn, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                 "AND pid = pg_backend_pid()"), 0);
    mig_t_bg_close(&b);
    PQfinish(gate);

    /* two runners at once: each statement and file exactly once */
    mig_t_write(d, "V2__tx.sql", "INSERT INTO mig_px.log VALUES ('v2');\nSELECT pg_sleep(0.2);\n");
    mig_t_write(d, "V3__notx.sql", "-- pgpipe:no-transaction\n"
                                   "INSERT INTO mig_px.log VALUES ('v3.1');\n"
                                   "INSERT INTO mig_px.log VALUES ('v3.2');\n"
                                   "VACUUM mig_px.log;\n"
                                   "INSERT INTO mig_px.log VALUES ('v3.4');\n");
    mig_t_write(d, "V4__tx.sql", "INSERT INTO mig_px.log VALUES ('v4');\n");
    mig_t_write(d, "R__view.sql", "CREATE OR REPLACE VIEW mig_px.v AS SELECT 1 AS one;\n"
                                  "INSERT INTO mig_px.log VALUES ('r');\n");
    mig_t_two_px(d, pgt_dsn());
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(tag || ':' || n, ',' ORDER BY tag) FROM "
                            "(SELECT tag, count(*) n FROM mig_px.log GROUP BY tag) x"),
               "r:1,v1.1:1,v2:1,v3.1:1,v3.2:1,v3.4:1,v4:1");
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_test.history WHERE scope = 'px' AND "
                            "status = 'applied' AND statement_started IS NULL"), 5);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);

    /* the loader's schema install, on a fresh database, two at once */
    PGconn *f = pgt_db_fresh("mig_t_px");
    char dsn[1024];
    snprintf(dsn, sizeof dsn, "%s dbname=mig_t_px", pgt_dsn());
    mig_t_two_px(NULL, dsn);
    int embedded = 0;
    for (int i = 0; i < pgpipe_sql_file_count(); i++)
        embedded += strncmp(pgpipe_sql_file_path(i), "schema/", 7) == 0;
    PGT_EQ_INT(mig_t_int(f, "SELECT count(*) FROM pgpipe.migrations WHERE scope = 'schema' "
                            "AND status = 'applied'"), embedded);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
    pgt_db_close(f);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_px CASCADE"));
    PQfinish(c);
}

/* A database or role whose default_transaction_isolation is repeatable read
** or serializable: the migrations still run at READ COMMITTED, in either
** pooler mode (behind a transaction pooler a step re-reads the history after
** taking the lock; a snapshot from before the lock's wait would miss what
** another runner committed meanwhile, and apply its file again). */
PGT_TEST(migrate, read_committed_whatever_the_default_isolation)
{
    PGconn *c = pgt_connect();
    for (int mode = PGPIPE_POOLER_SESSION; mode <= PGPIPE_POOLER_TRANSACTION; mode++) {
        const char *scope = mode == PGPIPE_POOLER_SESSION ? "iso-s" : "iso-t";
        const char *d = mig_t_dir(scope);
        PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_iso CASCADE; CREATE SCHEMA mig_iso;"
                            "CREATE TABLE mig_iso.log (f text, iso text);"
                            "DO $$ BEGIN IF to_regclass('mig_test.history') IS NOT NULL THEN "
                            "DELETE FROM mig_test.history WHERE scope IN ('iso-s', 'iso-t'); "
                            "END IF; END $$"));
        mig_t_write(d, "V1__one.sql", "INSERT INTO mig_iso.log "
                                      "SELECT 'v1', current_setting('transaction_isolation');\n");
        mig_t_write(d, "V2__two.sql", "INSERT INTO mig_iso.log "
                                      "SELECT 'v2', current_setting('transaction_isolation');\n");
        PGconn *r = pgt_connect();
        PQclear(PGT_EXEC(r, mode == PGPIPE_POOLER_SESSION
                                ? "SET default_transaction_isolation = 'repeatable read'"
                                : "SET default_transaction_isolation = 'serializable'"));
        pgpipe_migrate_options o = mig_t_opts(d, scope);
        o.pooler = mode;
        pgpipe_migrator *m = NULL;
        int rc = mig_t_run(r, &o, &m);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(m));
        pgpipe_migrator_close(m);
        PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(f || ' ' || iso, ', ' ORDER BY f) FROM mig_iso.log"),
                   "v1 read committed, v2 read committed");
        PQfinish(r);
    }
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_iso CASCADE"));
    PQfinish(c);
}

/* A no-transaction file with a transaction of its own: its progress is
** recorded inside that transaction, just before its COMMIT; in either
** pooler mode. */
PGT_TEST(migrate, no_transaction_file_with_its_own_transaction)
{
    PGconn *c = pgt_connect();
    for (int mode = PGPIPE_POOLER_SESSION; mode <= PGPIPE_POOLER_TRANSACTION; mode++) {
        const char *d = mig_t_dir(mode == PGPIPE_POOLER_SESSION ? "own-s" : "own-t");
        const char *scope = mode == PGPIPE_POOLER_SESSION ? "own-s" : "own-t";
        PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_own CASCADE; CREATE SCHEMA mig_own"));
        mig_t_write(d, "V1__own.sql", "-- pgpipe:no-transaction\n"
                                      "CREATE TABLE mig_own.t (id int);\n"
                                      "BEGIN;\n"
                                      "INSERT INTO mig_own.t VALUES (1);\n"
                                      "INSERT INTO mig_own.t VALUES (2);\n"
                                      "COMMIT;\n"
                                      "CREATE INDEX CONCURRENTLY t_id ON mig_own.t (id);\n"
                                      "INSERT INTO mig_own.t VALUES (3);\n");
        mig_t_write(d, "V2__fails.sql", "-- pgpipe:no-transaction\n"
                                        "BEGIN;\n"
                                        "INSERT INTO mig_own.t VALUES (10);\n"
                                        "SELECT 1 / 0;\n"
                                        "COMMIT;\n");
        pgpipe_migrate_options o = mig_t_opts(d, scope);
        o.pooler = mode;
        pgpipe_migrator *m = NULL;
        PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_DB);
        PGT_EQ_INT(mig_t_find(m, "own")->state, PGPIPE_MIGRATION_APPLIED);
        PGT_EQ_INT(mig_t_find(m, "fails")->state, PGPIPE_MIGRATION_PARTIAL);
        PGT_EQ_INT(mig_t_find(m, "fails")->statements_done, 0);
        pgpipe_migrator_close(m);
        PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM mig_own.t"),
                   "1,2,3");
        mig_t_write(d, "V2__fails.sql", "-- pgpipe:no-transaction\n"
                                        "BEGIN;\n"
                                        "INSERT INTO mig_own.t VALUES (10);\n"
                                        "SELECT 1 / 1;\n"
                                        "COMMIT;\n");
        PGT_OK(mig_t_run(c, &o, &m));
        PGT_EQ_INT(mig_t_find(m, "fails")->state, PGPIPE_MIGRATION_APPLIED);
        pgpipe_migrator_close(m);
        PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(id::text, ',' ORDER BY id) FROM mig_own.t"),
                   "1,2,3,10");
        PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
    }
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_own CASCADE"));
    PQfinish(c);
}

/* A failed file that is then removed left nothing behind: it is not an
** applied migration gone missing (no warning, no error with DENY_MISSING). */
PGT_TEST(migrate, removed_failed_file_is_not_missing)
{
    const char *d = mig_t_dir("rmfail");
    PGconn *c = pgt_connect();
    mig_t_write(d, "V1__ok.sql", "SELECT 1;\n");
    mig_t_write(d, "V2__broken.sql", "SELECT 1 / 0;\n");
    mig_t_write(d, "V3__notx.sql", "-- pgpipe:no-transaction\nSELECT 1 / 0;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "rmfail");
    PGT_EQ_INT(mig_t_run(c, &o, NULL), PGPIPE_DB);
    mig_t_write(d, "V2__broken.sql", "SELECT 2;\n"); /* let V3 run and fail */
    PGT_EQ_INT(mig_t_run(c, &o, NULL), PGPIPE_DB);
    PGT_CHECK(remove(mig_t_path(d, "V2__broken.sql")) == 0);
    PGT_CHECK(remove(mig_t_path(d, "V3__notx.sql")) == 0);
    PGT_OK(mig_t_run(c, &o, NULL)); /* V2 applied since: its removal is a missing file */
    mig_t_write(d, "V2__broken.sql", "SELECT 2;\n");
    o.flags = PGPIPE_MIGRATE_DENY_MISSING;
    pgpipe_migrator *m = NULL;
    PGT_OK(mig_t_run(c, &o, &m));
    const pgpipe_migration_info *in = mig_t_find(m, "notx");
    PGT_EQ_INT(in->state, PGPIPE_MIGRATION_FAILED);
    PGT_EQ_INT(in->will_run, 0);
    PGT_CONTAINS(in->action, "nothing of it was applied");
    PGT_CHECK(strstr(mig_t_format(m), "missing") == NULL);
    pgpipe_migrator_close(m);
    /* an applied file removed is still missing */
    PGT_CHECK(remove(mig_t_path(d, "V1__ok.sql")) == 0);
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(m), "applied migration is missing on disk");
    pgpipe_migrator_close(m);
    PQfinish(c);
}

/* File names go into the history (text) and into messages: a control
** character or bytes that are not UTF-8 are refused up front, naming the file,
** before anything runs. */
PGT_TEST(migrate, file_name_control_character_or_bad_utf8)
{
    const char *bad[] = { "V1__tab\there.sql", "V1__new\nline.sql", "V1__latin\xe9.sql",
                          "V1__upper.SQL" };
    const char *why[] = { "control character", "control character", "not valid UTF-8",
                          "must be .sql in lower case" };
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_badname"));
    for (int i = 0; i < 4; i++) {
        const char *d = mig_t_dir("badname");
        mig_t_write(d, bad[i], "CREATE TABLE mig_badname (x int);\n");
        pgpipe_migrate_options o = mig_t_opts(d, "badname");
        pgpipe_migrator *m = NULL;
        PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_PARSE);
        PGT_EQ_STR(pgpipe_errinfo(m)->source, bad[i]);
        PGT_CONTAINS(pgpipe_errmsg(m), why[i]);
        pgpipe_migrator_close(m);
        PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'mig_badname'"),
                   0);
    }
    PQfinish(c);
}

/* VACUUM in a file run as one transaction: the error says how to run it. */
PGT_TEST(migrate, not_in_transaction_block_hint)
{
    const char *d = mig_t_dir("hint");
    PGconn *c = pgt_connect();
    mig_t_write(d, "V1__vac.sql", "SELECT 1;\nVACUUM pg_catalog.pg_class;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "hint");
    pgpipe_migrator *m = NULL;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_DB);
    PGT_EQ_STR(pgpipe_errinfo(m)->sqlstate, "25001");
    PGT_CONTAINS(mig_t_err(m), "V1__vac.sql:2:1: statement 2 of 2 failed: VACUUM cannot run "
                               "inside a transaction block; hint: a line \"-- "
                               "pgpipe:no-transaction\" in the file");
    pgpipe_migrator_close(m);
    mig_t_write(d, "V1__vac.sql", "-- pgpipe:no-transaction\nSELECT 1;\nVACUUM pg_catalog.pg_class;\n");
    PGT_OK(mig_t_run(c, &o, NULL));
    PQfinish(c);
}

/* A file that switches to a role without rights on the history (SET ROLE,
** SET SESSION AUTHORIZATION) and does not switch back: the history is still
** written, as the run's own user, in either kind of file and pooler mode,
** and the session ends as it began. */
PGT_TEST(migrate, file_switching_role_still_records_history)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
                        "'mig_t_low') THEN CREATE ROLE mig_t_low NOLOGIN; END IF; END$$"));
    int super = mig_t_str(c, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")[0] == 't';
    char me[128];
    snprintf(me, sizeof me, "%s", mig_t_str(c, "SELECT current_user"));
    for (int mode = PGPIPE_POOLER_SESSION; mode <= PGPIPE_POOLER_TRANSACTION; mode++) {
        const char *d = mig_t_dir(mode == PGPIPE_POOLER_SESSION ? "role-s" : "role-t");
        const char *scope = mode == PGPIPE_POOLER_SESSION ? "role-s" : "role-t";
        mig_t_write(d, "V1__tx.sql", "SET ROLE mig_t_low;\nSELECT 1;\n");
        mig_t_write(d, "V2__notx.sql", "-- pgpipe:no-transaction\nSET ROLE mig_t_low;\n"
                                       "SET client_min_messages = error;\nSELECT 1;\n"
                                       "VACUUM pg_catalog.pg_class;\nSELECT 2;\n");
        if (super)
            mig_t_write(d, "V3__auth.sql", "SET SESSION AUTHORIZATION mig_t_low;\nSELECT 1;\n");
        pgpipe_migrate_options o = mig_t_opts(d, scope);
        o.pooler = mode;
        pgpipe_migrator *m = NULL;
        int rc = mig_t_run(c, &o, &m);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", mig_t_err(m));
        pgpipe_migrator_close(m);
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM mig_test.history WHERE scope = '%s' "
                                  "AND status = 'applied' AND applied_by = current_user", scope);
        PGT_EQ_INT(mig_t_int(c, sql), super ? 3 : 2);
        PGT_EQ_STR(mig_t_str(c, "SELECT current_user || ',' || session_user"),
                   (snprintf(sql, sizeof sql, "%s,%s", me, me), sql));
    }
    PQclear(PGT_EXEC(c, "DROP ROLE mig_t_low"));
    PQfinish(c);
}

/* A no-transaction file resumed after a failure runs on a fresh session:
** its SET statements before the resume point run again, so the rest lands
** where one uninterrupted run would have put it. */
PGT_TEST(migrate, resume_replays_the_files_set_statements)
{
    const char *d = mig_t_dir("replay");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS mig_replay CASCADE; DROP TABLE IF EXISTS "
                        "public.mig_replay_b"));
    const char *head = "-- pgpipe:no-transaction\n"
                       "CREATE SCHEMA mig_replay;\n"
                       "SET search_path = mig_replay;\n"
                       "SET LOCAL search_path = nowhere;\n"
                       "CREATE TABLE mig_replay_a (x int);\n";
    char text[512];
    snprintf(text, sizeof text, "%sSELECT 1 / 0;\nCREATE TABLE mig_replay_b (x int);\n", head);
    mig_t_write(d, "V1__sp.sql", text);
    pgpipe_migrate_options o = mig_t_opts(d, "replay");
    PGT_EQ_INT(mig_t_run(c, &o, NULL), PGPIPE_DB);
    snprintf(text, sizeof text, "%sSELECT 1;\nCREATE TABLE mig_replay_b (x int);\n", head);
    mig_t_write(d, "V1__sp.sql", text);
    pgpipe_migrator *m = NULL;
    int rc = mig_t_run(c, &o, &m);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", mig_t_err(m));
    pgpipe_migrator_close(m);
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY "
                            "tablename) FROM pg_tables WHERE tablename LIKE 'mig_replay%'"),
               "mig_replay.mig_replay_a,mig_replay.mig_replay_b");
    PGT_CHECK(strcmp(mig_t_str(c, "SHOW search_path"), "mig_replay") != 0);
    PQclear(PGT_EXEC(c, "DROP SCHEMA mig_replay CASCADE; DROP TABLE IF EXISTS public.mig_replay_b"));
    PQfinish(c);
}

/* A marker line inside a statement (a $$ body, a string) is the statement's
** text, not a marker: the file stays one transaction, and an unknown
** "directive" there is no error. */
PGT_TEST(migrate, marker_inside_a_statement_is_text)
{
    const char *d = mig_t_dir("mkbody");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP FUNCTION IF EXISTS mig_t_mkbody(); "
                        "DROP TABLE IF EXISTS mig_t_mkstr"));
    mig_t_write(d, "V1__body.sql", "CREATE FUNCTION mig_t_mkbody() RETURNS int LANGUAGE sql AS $$\n"
                                   "-- pgpipe:no-transaction\n"
                                   "SELECT 1\n"
                                   "$$;\n"
                                   "SELECT 1 / 0;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "mkbody");
    pgpipe_migrator *m = NULL;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_DB);
    PGT_EQ_INT(mig_t_find(m, "body")->transactional, 1);
    PGT_EQ_INT(mig_t_find(m, "body")->state, PGPIPE_MIGRATION_FAILED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_proc WHERE proname = 'mig_t_mkbody'"), 0);
    mig_t_write(d, "V1__body.sql", "CREATE TABLE mig_t_mkstr (t text);\n"
                                   "INSERT INTO mig_t_mkstr VALUES ('a\n"
                                   "-- pgpipe:anything\n"
                                   "b');\n");
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "body")->transactional, 1);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_t_mkstr"), 1);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_mkstr"));
    PQfinish(c);
}

/* A *.sql name in the directory that is not a readable regular file (a
** dangling symlink, a directory) is an error naming it before anything runs,
** not a migration silently left out. */
PGT_TEST(migrate, sql_name_that_is_no_file_is_an_error)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_nofile"));
    for (int k = 0; k < 2; k++) {
        const char *d = mig_t_dir("nofile");
        mig_t_write(d, "V1__ok.sql", "CREATE TABLE mig_t_nofile (x int);\n");
        if (k == 0)
            PGT_CHECK(symlink("/nonexistent/V2.sql", mig_t_path(d, "V2__gone.sql")) == 0);
        else
            PGT_CHECK(mkdir(mig_t_path(d, "V2__gone.sql"), 0700) == 0);
        pgpipe_migrate_options o = mig_t_opts(d, "nofile");
        pgpipe_migrator *m = NULL;
        PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_IO);
        PGT_EQ_STR(pgpipe_errinfo(m)->source, "V2__gone.sql");
        PGT_CONTAINS(pgpipe_errmsg(m), k == 0 ? "No such file" : "not a regular file");
        pgpipe_migrator_close(m);
        PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'mig_t_nofile'"),
                   0);
    }
    PQfinish(c);
}

/* A CR LF file runs its own bytes: a CR inside a string literal stays a CR
** in the data (and a line break inside a literal stays CR LF, as psql sends
** it), COPY data with CR LF lines loads, the no-transaction marker on a CR LF
** line counts; the checksum is still the one of the file with LF line ends
** (so CR LF files applied before keep their checksums). */
PGT_TEST(migrate, crlf_file_runs_its_own_bytes)
{
    const char *d = mig_t_dir("crlf");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_cr"));
    static const char v1[] = "CREATE TABLE mig_t_cr (k int, t text);\r\n"
                             "INSERT INTO mig_t_cr VALUES (1, 'a\rb');\r\n"
                             "INSERT INTO mig_t_cr VALUES (2, 'c\r\n"
                             "d');\r\n"
                             "COPY mig_t_cr FROM stdin;\r\n"
                             "3\tcopied\r\n"
                             "\\.\r\n";
    static const char v1lf[] = "CREATE TABLE mig_t_cr (k int, t text);\n"
                               "INSERT INTO mig_t_cr VALUES (1, 'a\nb');\n"
                               "INSERT INTO mig_t_cr VALUES (2, 'c\n"
                               "d');\n"
                               "COPY mig_t_cr FROM stdin;\n"
                               "3\tcopied\n"
                               "\\.\n";
    static const char v2[] = "-- pgpipe:no-transaction\r\n"
                             "INSERT INTO mig_t_cr VALUES (4, 'e\rf');\r\n";
    mig_t_write(d, "V1__cr.sql", v1);
    mig_t_write(d, "V2__notx.sql", v2);
    pgpipe_migrate_options o = mig_t_opts(d, "crlf");
    pgpipe_migrator *m = NULL;
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    char want[65];
    PGT_OK(pgpipe_migrate_checksum(v1lf, strlen(v1lf), want));
    PGT_EQ_STR(mig_t_find(m, "cr")->checksum, want);
    PGT_EQ_INT(mig_t_find(m, "notx")->transactional, 0);
    pgpipe_migrator_close(m);
    char q[256];
    snprintf(q, sizeof q, "SELECT checksum FROM mig_test.history WHERE scope = 'crlf'"
                          " AND version = '1'");
    PGT_EQ_STR(mig_t_str(c, q), want);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_t_cr WHERE k = 1 AND t = E'a\\rb'"), 1);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_t_cr WHERE k = 2 AND t = E'c\\r\\nd'"), 1);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_t_cr WHERE k = 3 AND t = 'copied'"), 1);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_t_cr WHERE k = 4 AND t = E'e\\rf'"), 1);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_t_cr"), 4);
    /* the LF version of the file is the same migration: nothing to do */
    mig_t_write(d, "V1__cr.sql", v1lf);
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_find(m, "cr")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_t_cr"), 4);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_cr"));
    PQfinish(c);
}

/* A baseline above the target would record the versions between as applied
** while the target leaves them pending: refused when the runner opens,
** before anything is read or written; one at the target is fine (the files
** up to it are recorded, the later ones stay pending). */
PGT_TEST(migrate, baseline_above_target_is_refused)
{
    const char *d = mig_t_dir("bltarget");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_bl1, mig_t_bl5"));
    mig_t_write(d, "V1__one.sql", "CREATE TABLE mig_t_bl1 (id int);\n");
    mig_t_write(d, "V5__five.sql", "CREATE TABLE mig_t_bl5 (id int);\n");
    pgpipe_migrate_options o = mig_t_opts(d, "bltarget");
    o.baseline_version = "0010";
    o.target_version = "3";
    pgpipe_migrator *m = NULL;
    PGT_EQ_INT(pgpipe_migrator_open(&m, c, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(mig_t_err(m), "baseline version 10 is above the target version 3");
    pgpipe_migrator_close(m);
    o.baseline_version = "3";
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_find(m, "one")->state, PGPIPE_MIGRATION_BASELINE);
    PGT_EQ_INT(mig_t_find(m, "five")->state, PGPIPE_MIGRATION_PENDING);
    pgpipe_migrator_close(m);
    PQfinish(c);
}

/* ---- baselines on a history that is not empty -------------------------- */

/* Rows of the test history table in a scope (of one status, or all). */
static long long mig_t_rows(PGconn *c, const char *scope, const char *status)
{
    char q[512];
    snprintf(q, sizeof q, "SELECT count(*) FROM mig_test.history WHERE scope = '%s'%s%s%s",
             scope, status ? " AND status = '" : "", status ? status : "", status ? "'" : "");
    return mig_t_int(c, q);
}

/* A baseline records versions as applied without running them: next to
** versions that did run it would skip pending files silently (V3 below was
** recorded as baseline, never run, and a baseline 0 or 5 added a row of its
** own). It is refused, naming the highest applied version, and changes
** nothing; the dry run reports the same refusal. */
PGT_TEST(migrate, baseline_on_applied_history_is_refused)
{
    const char *d = mig_t_dir("blapplied");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_bla1, mig_t_bla2, mig_t_bla3"));
    mig_t_write(d, "V1__one.sql", "CREATE TABLE mig_t_bla1 (id int);\n");
    mig_t_write(d, "V2__two.sql", "CREATE TABLE mig_t_bla2 (id int);\n");
    mig_t_write(d, "V3__three.sql", "CREATE TABLE mig_t_bla3 (id int);\n");
    pgpipe_migrate_options o = mig_t_opts(d, "blapplied");
    o.target_version = "2";
    PGT_OK(mig_t_run(c, &o, NULL));
    o.target_version = NULL;
    PGT_EQ_INT(mig_t_rows(c, "blapplied", NULL), 2);

    static const char *const versions[] = { "3", "1", "2", "5", "0", "0003" };
    for (size_t i = 0; i < sizeof versions / sizeof *versions; i++) {
        pgpipe_migrator *m = NULL;
        o.baseline_version = versions[i];
        PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
        PGT_CONTAINS(mig_t_err(m), "refused: the history of scope \"blapplied\" already has "
                                   "versions applied, up to version 2;");
        PGT_CONTAINS(mig_t_err(m), "nothing was changed. Run without the baseline");
        PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_PENDING);
        PGT_CHECK(!mig_t_find(m, "three")->ran);
        pgpipe_migrator_close(m);
        PGT_EQ_INT(mig_t_rows(c, "blapplied", NULL), 2);
    }
    /* refused together with a target too, and in a dry run, which writes nothing */
    o.baseline_version = "3";
    o.target_version = "3";
    pgpipe_migrator *m = NULL;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    PGT_CONTAINS(mig_t_err(m), "baseline version 3 refused");
    pgpipe_migrator_close(m);
    o.target_version = NULL;
    o.flags = PGPIPE_MIGRATE_DRY_RUN;
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    PGT_CONTAINS(mig_t_err(m), "baseline version 3 refused");
    PGT_EQ_INT(pgpipe_migrate_count(m), 3);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_rows(c, "blapplied", NULL), 2);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'mig_t_bla3'"), 0);
    /* what the message says to do: V3 runs */
    o.flags = 0;
    o.baseline_version = NULL;
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_tables WHERE tablename = 'mig_t_bla3'"), 1);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_bla1, mig_t_bla2, mig_t_bla3"));
    PQfinish(c);
}

/* The same baseline again (a deploy script that always passes it) is a run
** without it: nothing recorded twice, later versions applied, also after
** some were; another baseline is refused, naming the history's own. */
PGT_TEST(migrate, baseline_repeated_is_a_plain_run)
{
    const char *d = mig_t_dir("blagain");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_blg3, mig_t_blg4"));
    mig_t_write(d, "V1__old.sql", "SELECT 1 / 0;\n");
    mig_t_write(d, "V2__old.sql", "SELECT 1 / 0;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "blagain");
    o.baseline_version = "2";
    PGT_OK(mig_t_run(c, &o, NULL));
    PGT_EQ_INT(mig_t_rows(c, "blagain", "baseline"), 2);
    pgpipe_migrator *m = NULL;
    o.baseline_version = "002";
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_rows(c, "blagain", NULL), 2);
    mig_t_write(d, "V3__new.sql", "CREATE TABLE mig_t_blg3 (id int);\n");
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_CHECK(mig_t_find(m, "new")->ran);
    pgpipe_migrator_close(m);
    mig_t_write(d, "V4__newer.sql", "CREATE TABLE mig_t_blg4 (id int);\n");
    o.flags = PGPIPE_MIGRATE_DRY_RUN;
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_CHECK(mig_t_find(m, "newer")->will_run);
    pgpipe_migrator_close(m);
    o.flags = 0;
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_CHECK(mig_t_find(m, "newer")->ran);
    PGT_EQ_INT(mig_t_find(m, "new")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_rows(c, "blagain", "baseline"), 2);
    PGT_EQ_INT(mig_t_rows(c, "blagain", "applied"), 2);
    /* another baseline, below or above its own */
    o.baseline_version = "3";
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    PGT_CONTAINS(mig_t_err(m), "up to version 4 (its baseline is version 2)");
    pgpipe_migrator_close(m);
    o.baseline_version = "1";
    PGT_EQ_INT(mig_t_run(c, &o, &m), PGPIPE_ERROR);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_rows(c, "blagain", NULL), 4);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_blg3, mig_t_blg4"));
    PQfinish(c);
}

/* A history whose only rows are failed attempts has nothing applied: the
** baseline is allowed, and the failed rows at or below it become baseline
** rows (the attempt is not run again; its error goes); one of a removed file
** at the baseline version becomes the marker. */
PGT_TEST(migrate, baseline_over_failed_attempts)
{
    const char *d = mig_t_dir("blfailed");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_blf1, mig_t_blf2"));
    PQclear(PGT_EXEC(c, "CREATE TABLE mig_t_blf1 (id int)")); /* made by hand before */
    mig_t_write(d, "V1__one.sql", "CREATE TABLE mig_t_blf1 (id int);\n");
    mig_t_write(d, "V2__two.sql", "CREATE TABLE mig_t_blf2 (id int);\n");
    mig_t_write(d, "V3__gone.sql", "SELECT 1;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "blfailed");
    PGT_EQ_INT(mig_t_run(c, &o, NULL), PGPIPE_DB);
    PGT_EQ_INT(mig_t_rows(c, "blfailed", "failed"), 1);
    o.baseline_version = "1";
    pgpipe_migrator *m = NULL;
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_find(m, "one")->state, PGPIPE_MIGRATION_BASELINE);
    PGT_CHECK(!mig_t_find(m, "one")->ran);
    PGT_EQ_INT(mig_t_find(m, "two")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_test.history WHERE scope = 'blfailed' "
                            "AND version = 1 AND status = 'baseline' AND error_message IS NULL"),
               1);
    /* a failed attempt of a file removed since, at the baseline version */
    o.scope = "blfailed2";
    o.baseline_version = NULL;
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_blf2"));
    mig_t_write(d, "V3__gone.sql", "SELECT 1 / 0;\n");
    PGT_CHECK(remove(mig_t_path(d, "V1__one.sql")) == 0);
    PGT_CHECK(remove(mig_t_path(d, "V2__two.sql")) == 0);
    PGT_EQ_INT(mig_t_run(c, &o, NULL), PGPIPE_DB);
    PGT_CHECK(remove(mig_t_path(d, "V3__gone.sql")) == 0);
    mig_t_write(d, "V4__four.sql", "SELECT 1;\n");
    o.baseline_version = "3";
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_find(m, "baseline")->state, PGPIPE_MIGRATION_BASELINE);
    PGT_EQ_INT(mig_t_find(m, "four")->state, PGPIPE_MIGRATION_APPLIED);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_rows(c, "blfailed2", NULL), 2);
    PGT_EQ_INT(mig_t_rows(c, "blfailed2", "failed"), 0);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_blf1"));
    PQfinish(c);
}

/* A baseline between files records the files below it and a marker at it;
** one above every file records them all and its marker. A file added later
** at or below the baseline is covered by it (shown, never run). */
PGT_TEST(migrate, baseline_between_and_above_files)
{
    const char *d = mig_t_dir("blmarker");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_blm5"));
    mig_t_write(d, "V1__one.sql", "SELECT 1 / 0;\n");
    mig_t_write(d, "V3__three.sql", "SELECT 1 / 0;\n");
    mig_t_write(d, "V5__five.sql", "CREATE TABLE mig_t_blm5 (id int);\n");
    pgpipe_migrate_options o = mig_t_opts(d, "blmarker");
    o.baseline_version = "4";
    pgpipe_migrator *m = NULL;
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_BASELINE);
    PGT_EQ_INT(mig_t_find(m, "baseline")->state, PGPIPE_MIGRATION_BASELINE);
    PGT_EQ_STR(mig_t_find(m, "baseline")->version, "4");
    PGT_CHECK(mig_t_find(m, "five")->ran);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_rows(c, "blmarker", "baseline"), 3);
    /* files added later at the marker's version and below it: covered by
    ** the baseline, not run; the one at the marker is no drift (the marker
    ** has no checksum: it stopped every run as "changed on disk") */
    mig_t_write(d, "V4__four.sql", "SELECT 1 / 0;\n");
    mig_t_write(d, "V2__two.sql", "SELECT 1 / 0;\n");
    o.baseline_version = NULL;
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_find(m, "four")->state, PGPIPE_MIGRATION_BASELINE);
    PGT_CHECK(!mig_t_find(m, "four")->ran);
    PGT_EQ_INT(mig_t_find(m, "two")->state, PGPIPE_MIGRATION_IGNORED);
    pgpipe_migrator_close(m);
    PGT_CHECK(remove(mig_t_path(d, "V4__four.sql")) == 0);
    PGT_CHECK(remove(mig_t_path(d, "V2__two.sql")) == 0);
    o.scope = "blmarker2";
    o.baseline_version = "9";
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_find(m, "five")->state, PGPIPE_MIGRATION_BASELINE);
    PGT_CHECK(!mig_t_find(m, "five")->ran);
    pgpipe_migrator_close(m);
    PGT_EQ_INT(mig_t_rows(c, "blmarker2", "baseline"), 4);
    mig_t_write(d, "V6__six.sql", "SELECT 1 / 0;\n");
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_find(m, "six")->state, PGPIPE_MIGRATION_IGNORED);
    pgpipe_migrator_close(m);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_blm5"));
    PQfinish(c);
}

/* A baseline is digits only ("v3", "3.0", " 3", "-1" are refused when the
** runner opens, before anything is read or written); leading zeros are the
** same version; "" is no baseline, as NULL. */
PGT_TEST(migrate, baseline_version_must_be_digits)
{
    const char *d = mig_t_dir("bldigits");
    PGconn *c = pgt_connect();
    mig_t_write(d, "V3__three.sql", "SELECT 1;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "bldigits");
    static const char *const bad[] = { "v3", "V3", "3.0", " 3", "3 ", "-1", "+3", "3\n" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        pgpipe_migrator *m = NULL;
        o.baseline_version = bad[i];
        PGT_EQ_INT(pgpipe_migrator_open(&m, c, &o), PGPIPE_MISUSE);
        PGT_CONTAINS(mig_t_err(m), "baseline version \"");
        PGT_EQ_INT(pgpipe_migrate_run(m), PGPIPE_MISUSE);
        pgpipe_migrator_close(m);
    }
    pgpipe_migrator *m = NULL;
    o.baseline_version = "";
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_rows(c, "bldigits", NULL), 1);
    PGT_EQ_INT(mig_t_rows(c, "bldigits", "applied"), 1);
    PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_CHECK(mig_t_find(m, "three")->ran);
    pgpipe_migrator_close(m);
    o.scope = "bldigits2";
    o.baseline_version = "0003";
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_BASELINE);
    PGT_EQ_INT(pgpipe_migrate_count(m), 1); /* no marker: 0003 is V3's version */
    pgpipe_migrator_close(m);
    PQfinish(c);
}

/* ---- the baseline's decision under the lock ---------------------------- */

/* The baseline is decided on the history read under the migration lock, in
** the transaction that writes it: behind a transaction pooler (no session
** lock) a runner that applies V1 between another runner's read and its
** writes must not end in a history with V1 applied and V2, V3 recorded as
** baseline. The gate: an ACCESS EXCLUSIVE lock on the history table stops
** the baseline runner in its read of the history; while it waits there the
** test looks whether it holds the migration lock. If not (the decision
** read without it), a real runner applies V1 in that window. */
PGT_TEST(migrate, baseline_decided_under_the_lock)
{
    char d[512];
    snprintf(d, sizeof d, "%s", mig_t_dir("blrace"));
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_blr1"));
    mig_t_write(d, "V1__one.sql", "CREATE TABLE mig_t_blr1 (id int);\n");
    mig_t_write(d, "V2__two.sql", "SELECT 1 / 0;\n");
    mig_t_write(d, "V3__three.sql", "SELECT 1 / 0;\n");
    pgpipe_migrate_options o = mig_t_opts(d, "blrace");
    o.scope = "blrace-setup"; /* the history table exists, the scope is empty */
    o.dir = mig_t_dir("blrace-setup");
    mig_t_write(o.dir, "V1__nothing.sql", "SELECT 1;\n");
    PGT_OK(mig_t_run(c, &o, NULL));
    o.dir = d;
    o.scope = "blrace";
    PQclear(PGT_EXEC(c, "DELETE FROM mig_test.history WHERE scope = 'blrace'"));

    PGconn *gate = pgt_connect();
    PQclear(PGT_EXEC(gate, "BEGIN; LOCK TABLE mig_test.history IN ACCESS EXCLUSIVE MODE"));
    mig_t_bg a;
    memset(&a, 0, sizeof a);
    a.o = o;
    a.o.pooler = PGPIPE_POOLER_TRANSACTION;
    a.o.baseline_version = "3";
    mig_t_bg_start(&a);
    mig_t_wait_blocked(c, "SELECT kind, COALESCE(version::text");
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT pg_try_advisory_lock(%lld)",
             (long long)PGPIPE_MIGRATE_LOCK_KEY);
    int got = strcmp(mig_t_str(gate, sql), "t") == 0;
    PQclear(PGT_EXEC(gate, "COMMIT"));
    if (got) {
        /* the baseline runner read the history without the lock: once it
        ** waits for the lock to write, a runner without a baseline applies
        ** V1 (on the gate's connection: the lock it holds is its own) */
        snprintf(sql, sizeof sql, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = %d "
                 "AND query LIKE 'SELECT pg_try_advisory_xact_lock%%')", PQbackendPID(a.conn));
        mig_t_wait_true(c, sql);
        pgpipe_migrate_options ob = o;
        ob.pooler = PGPIPE_POOLER_SESSION;
        ob.target_version = "1";
        PGT_OK(mig_t_run(gate, &ob, NULL));
        snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%lld)",
                 (long long)PGPIPE_MIGRATE_LOCK_KEY);
        PGT_EQ_STR(mig_t_str(gate, sql), "t");
    }
    mig_t_bg_join(&a);
    long long applied = mig_t_rows(c, "blrace", "applied");
    long long baseline = mig_t_rows(c, "blrace", "baseline");
    PGT_CHECK_MSG(applied == 0 || baseline == 0,
                  "a mixed history: %lld applied and %lld baseline rows (the baseline runner "
                  "returned %d: %s)", applied, baseline, a.rc, pgpipe_errmsg(a.m));
    if (applied) {
        PGT_EQ_INT(a.rc, PGPIPE_ERROR);
        PGT_CONTAINS(pgpipe_errmsg(a.m), "baseline version 3 refused");
    } else {
        PGT_CHECK_MSG(a.rc == PGPIPE_OK, "%s", pgpipe_errmsg(a.m));
        PGT_EQ_INT(baseline, 3);
    }
    mig_t_bg_close(&a);
    /* the other runner after it: nothing to do, or V2 and V3 (V2 fails) */
    PGT_EQ_INT(mig_t_run(c, &o, NULL), applied ? PGPIPE_DB : PGPIPE_OK);
    PGT_EQ_INT(mig_t_rows(c, "blrace", "baseline"), baseline);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"), 0);
    PQfinish(gate);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_blr1"));
    PQfinish(c);
}

/* ---- repair and renamed files ------------------------------------------- */

/* A file renamed with its version and content kept is no drift (the version
** is its identity): a run goes on and status names the recorded file; repair
** records the new name and file, of a renamed changed file too (it recorded
** the new file but kept the old name), and of a baselined file. */
PGT_TEST(migrate, repair_records_a_renamed_file)
{
    const char *d = mig_t_dir("rename");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_ren1, mig_t_ren2, mig_t_ren3"));
    mig_t_write(d, "V1__old_one.sql", "CREATE TABLE mig_t_ren1 (id int);\n");
    mig_t_write(d, "V2__old_two.sql", "CREATE TABLE mig_t_ren2 (id int);\n");
    mig_t_write(d, "V3__old_three.sql", "CREATE TABLE mig_t_ren3 (id int);\n");
    pgpipe_migrate_options o = mig_t_opts(d, "rename");
    o.baseline_version = "1";
    PQclear(PGT_EXEC(c, "CREATE TABLE mig_t_ren1 (id int)"));
    PGT_OK(mig_t_run(c, &o, NULL));
    o.baseline_version = NULL;
    PGT_EQ_INT(mig_t_rows(c, "rename", "baseline"), 1);
    PGT_EQ_INT(mig_t_rows(c, "rename", "applied"), 2);
    PGT_CHECK(rename(mig_t_path(d, "V1__old_one.sql"), mig_t_path(d, "V1__one.sql")) == 0);
    PGT_CHECK(rename(mig_t_path(d, "V2__old_two.sql"), mig_t_path(d, "V2__two.sql")) == 0);
    PGT_CHECK(remove(mig_t_path(d, "V3__old_three.sql")) == 0);
    mig_t_write(d, "V3__three.sql", "CREATE TABLE mig_t_ren3 (id bigint);\n");
    /* status: the renamed ones are as before, naming the recorded file */
    pgpipe_migrator *m = NULL;
    PGT_OK(pgpipe_migrator_open(&m, c, &o));
    PGT_OK(pgpipe_migrate_status(m));
    PGT_EQ_INT(mig_t_find(m, "one")->state, PGPIPE_MIGRATION_BASELINE);
    PGT_EQ_INT(mig_t_find(m, "two")->state, PGPIPE_MIGRATION_APPLIED);
    PGT_CHECK(!mig_t_find(m, "two")->will_run);
    PGT_EQ_STR(mig_t_find(m, "two")->action,
               "none (recorded as V2__old_two.sql; repair records the new name)");
    PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_CHANGED);
    pgpipe_migrator_close(m);
    /* repair: every name and file as on disk now, nothing ran */
    o.flags = PGPIPE_MIGRATE_DRY_RUN | PGPIPE_MIGRATE_REPAIR;
    PGT_OK(mig_t_run(c, &o, &m));
    PGT_EQ_STR(mig_t_find(m, "two")->action, "repair: record the new name (was V2__old_two.sql)");
    pgpipe_migrator_close(m);
    o.flags = PGPIPE_MIGRATE_REPAIR;
    PGT_CHECK_MSG(mig_t_run(c, &o, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    for (int i = 0; i < pgpipe_migrate_count(m); i++)
        PGT_CHECK(!pgpipe_migrate_entry(m, i)->ran);
    pgpipe_migrator_close(m);
    PGT_EQ_STR(mig_t_str(c, "SELECT string_agg(version || ':' || name || ':' || file || ':' || "
                            "status, ' ' ORDER BY version) FROM mig_test.history "
                            "WHERE scope = 'rename'"),
               "1:one:V1__one.sql:baseline 2:two:V2__two.sql:applied "
               "3:three:V3__three.sql:applied");
    o.flags = 0;
    PGT_OK(pgpipe_migrator_open(&m, c, &o));
    PGT_OK(pgpipe_migrate_status(m));
    for (int i = 0; i < pgpipe_migrate_count(m); i++)
        PGT_EQ_STR(pgpipe_migrate_entry(m, i)->action, "");
    pgpipe_migrator_close(m);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_ren1, mig_t_ren2, mig_t_ren3"));
    PQfinish(c);
}

/* ---- status with a baseline a run would refuse --------------------------- */

/* Status (and the dry run) with a baseline that a run refuses reports the
** refusal, as the run does, and no entry as one that will run: the run
** stops before anything. Without the baseline the pending version runs. */
PGT_TEST(migrate, status_with_a_refused_baseline)
{
    const char *d = mig_t_dir("blstatus");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS mig_t_bls1, mig_t_bls3"));
    mig_t_write(d, "V1__one.sql", "CREATE TABLE mig_t_bls1 (id int);\n");
    pgpipe_migrate_options o = mig_t_opts(d, "blstatus");
    PGT_OK(mig_t_run(c, &o, NULL));
    mig_t_write(d, "V3__three.sql", "CREATE TABLE mig_t_bls3 (id int);\n");
    o.baseline_version = "3";
    for (int dry = 0; dry <= 1; dry++) {
        o.flags = dry ? PGPIPE_MIGRATE_DRY_RUN : 0;
        pgpipe_migrator *m = NULL;
        PGT_OK(pgpipe_migrator_open(&m, c, &o));
        PGT_EQ_INT(dry ? pgpipe_migrate_run(m) : pgpipe_migrate_status(m), PGPIPE_ERROR);
        PGT_CONTAINS(mig_t_err(m), "baseline version 3 refused: the history of scope "
                                   "\"blstatus\" already has versions applied, up to version 1");
        PGT_EQ_INT(pgpipe_migrate_count(m), 2);
        PGT_EQ_INT(mig_t_find(m, "one")->state, PGPIPE_MIGRATION_APPLIED);
        PGT_EQ_INT(mig_t_find(m, "three")->state, PGPIPE_MIGRATION_PENDING);
        PGT_CHECK(!mig_t_find(m, "three")->will_run);
        PGT_EQ_STR(mig_t_find(m, "three")->action, "none (baseline 3 refused)");
        const char *txt = mig_t_format(m);
        PGT_CONTAINS(txt, "next run: none (baseline 3 refused)");
        PGT_CHECK_MSG(strstr(txt, "apply") == NULL, "%s", txt);
        pgpipe_migrator_close(m);
    }
    PGT_EQ_INT(mig_t_rows(c, "blstatus", NULL), 1);
    o.flags = 0;
    o.baseline_version = NULL;
    pgpipe_migrator *m = NULL;
    PGT_OK(pgpipe_migrator_open(&m, c, &o));
    PGT_OK(pgpipe_migrate_status(m));
    PGT_CHECK(mig_t_find(m, "three")->will_run);
    PGT_EQ_STR(mig_t_find(m, "three")->action, "apply");
    pgpipe_migrator_close(m);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_bls1"));
    PQfinish(c);
}

/* The two tests below: files V1 (no-transaction) and V2 in a directory for
** scope, each inserting into table ran; the history table made, the scope
** empty. */
static pgpipe_migrate_options mig_t_gap_setup(PGconn *c, char *d, size_t dn, const char *scope,
                                              const char *ran)
{
    snprintf(d, dn, "%s", mig_t_dir(scope));
    char sql[300], v1[200], v2[200], setup[64];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS %s; CREATE TABLE %s (f text)", ran, ran);
    PQclear(PGT_EXEC(c, sql));
    snprintf(v1, sizeof v1, "-- pgpipe:no-transaction\nINSERT INTO %s VALUES ('v1');\n", ran);
    snprintf(v2, sizeof v2, "INSERT INTO %s VALUES ('v2');\n", ran);
    mig_t_write(d, "V1__notx.sql", v1);
    mig_t_write(d, "V2__tx.sql", v2);
    pgpipe_migrate_options o = mig_t_opts(d, scope);
    snprintf(setup, sizeof setup, "%s-setup", scope);
    o.scope = setup; /* the history table exists, the scope is empty */
    o.target_version = "0";
    PGT_OK(mig_t_run(c, &o, NULL));
    o.target_version = NULL;
    o.scope = scope;
    snprintf(sql, sizeof sql, "DELETE FROM mig_test.history WHERE scope = '%s'", scope);
    PQclear(PGT_EXEC(c, sql));
    return o;
}

/* Session other queues for the migration lock (c sees it wait), then gate's
** transaction ends; other has the lock when this returns. */
static void mig_t_queue_then_open(PGconn *c, PGconn *gate, PGconn *other)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_lock(%lld)", (long long)PGPIPE_MIGRATE_LOCK_KEY);
    PGT_CHECK(PQsendQuery(other, sql) == 1);
    mig_t_wait_blocked(c, "SELECT pg_advisory_lock(");
    PQclear(PGT_EXEC(gate, "COMMIT"));
    PGresult *r = PQgetResult(other);
    PGT_CHECK(r && PQresultStatus(r) == PGRES_TUPLES_OK);
    PQclear(r);
    PGT_CHECK(PQgetResult(other) == NULL);
}

/* A baseline of V2 run on other (which holds the lock: a session-mode run
** takes it again as its own), then other's lock let go. */
static void mig_t_baseline_on(PGconn *other, const pgpipe_migrate_options *o)
{
    pgpipe_migrate_options oa = *o;
    oa.pooler = PGPIPE_POOLER_SESSION;
    oa.baseline_version = "2";
    pgpipe_migrator *m = NULL;
    PGT_CHECK_MSG(mig_t_run(other, &oa, &m) == PGPIPE_OK, "%s", mig_t_err(m));
    pgpipe_migrator_close(m);
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT pg_advisory_unlock(%lld)", (long long)PGPIPE_MIGRATE_LOCK_KEY);
    PGT_EQ_STR(mig_t_str(other, sql), "t");
}

/* Behind a transaction pooler a runner decides under the lock, then takes
** it again for each file: a baseline recorded in between (another runner,
** on an empty history) covers a no-transaction file as it covers a
** transactional one; it is not run and its baseline row stays. The gates:
** the history table's lock stops the runner in its decision (holding the
** migration lock); a second session queues for the migration lock, gets it
** when the decision commits, and records the baseline while the runner
** waits to start its first file. */
PGT_TEST(migrate, baseline_between_decision_and_file)
{
    char d[512];
    PGconn *c = pgt_connect();
    pgpipe_migrate_options o = mig_t_gap_setup(c, d, sizeof d, "blgap", "mig_t_blg_ran");
    PGconn *gate = pgt_connect(), *other = pgt_connect();
    PQclear(PGT_EXEC(gate, "BEGIN; LOCK TABLE mig_test.history IN ACCESS EXCLUSIVE MODE"));
    mig_t_bg b;
    memset(&b, 0, sizeof b);
    b.o = o;
    b.o.pooler = PGPIPE_POOLER_TRANSACTION;
    b.o.flags = PGPIPE_MIGRATE_OUT_OF_ORDER; /* (no read before the decision's) */
    mig_t_bg_start(&b);
    mig_t_wait_blocked(c, "SELECT kind, COALESCE(version::text");
    mig_t_queue_then_open(c, gate, other);
    /* the runner decided to apply V1 and V2 and waits for the lock */
    mig_t_baseline_on(other, &o);
    mig_t_bg_join(&b);
    PGT_CHECK_MSG(b.rc == PGPIPE_OK, "%s", pgpipe_errmsg(b.m));
    PGT_CHECK(!mig_t_find(b.m, "notx")->ran);
    PGT_CHECK(!mig_t_find(b.m, "tx")->ran);
    mig_t_bg_close(&b);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_t_blg_ran"), 0);
    PGT_EQ_INT(mig_t_rows(c, "blgap", "baseline"), 2);
    PGT_EQ_INT(mig_t_rows(c, "blgap", NULL), 2);
    PQfinish(other);
    PQfinish(gate);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_blg_ran"));
    PQfinish(c);
}

/* The same behind a transaction pooler, one step later: a runner wrote the
** row of its no-transaction file (nothing of it done yet) when a baseline,
** deciding on a history with nothing applied, records the file as baseline
** over that row. The runner's next step finds the baseline: it stops there
** (the file is not run, the row stays baseline). The gate: a SHARE lock on
** the history table lets the runner read but stops its first write. */
PGT_TEST(migrate, baseline_over_a_started_file)
{
    char d[512];
    PGconn *c = pgt_connect();
    pgpipe_migrate_options o = mig_t_gap_setup(c, d, sizeof d, "blstarted", "mig_t_bls_ran");
    PGconn *gate = pgt_connect(), *other = pgt_connect();
    PQclear(PGT_EXEC(gate, "BEGIN; LOCK TABLE mig_test.history IN SHARE MODE"));
    mig_t_bg b;
    memset(&b, 0, sizeof b);
    b.o = o;
    b.o.pooler = PGPIPE_POOLER_TRANSACTION;
    mig_t_bg_start(&b);
    mig_t_wait_blocked(c, "INSERT INTO \"mig_test\".\"history\"");
    mig_t_queue_then_open(c, gate, other);
    PGT_EQ_INT(mig_t_rows(c, "blstarted", "partial"), 1);
    mig_t_baseline_on(other, &o);
    mig_t_bg_join(&b);
    PGT_CHECK_MSG(b.rc == PGPIPE_OK, "%s", pgpipe_errmsg(b.m));
    PGT_CHECK(!mig_t_find(b.m, "notx")->ran);
    PGT_CHECK(!mig_t_find(b.m, "tx")->ran);
    PGT_EQ_INT(mig_t_find(b.m, "notx")->state, PGPIPE_MIGRATION_BASELINE);
    mig_t_bg_close(&b);
    PGT_EQ_INT(mig_t_int(c, "SELECT count(*) FROM mig_t_bls_ran"), 0);
    PGT_EQ_INT(mig_t_rows(c, "blstarted", "baseline"), 2);
    PGT_EQ_INT(mig_t_rows(c, "blstarted", NULL), 2);
    PQfinish(other);
    PQfinish(gate);
    PQclear(PGT_EXEC(c, "DROP TABLE mig_t_bls_ran"));
    PQfinish(c);
}
