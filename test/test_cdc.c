/* CDC (src/cdc): the pgoutput decoder on bytes a real server produced, the
** set-up's refusals, and changes streamed from a second cluster (wal_level =
** logical, started once per test run under the test's temp dir) into
** staging of the test cluster, exactly once, through kill -9. */

#include <sys/file.h>

/* The source cluster: one per test run (its owner is the runner, so it
** stops when the run ends), started by the first test that needs it. */
static const char *cdc_src_base(void)
{
    static char info[1024];
    if (info[0])
        return info;
    char dir[512], lock[560];
    snprintf(dir, sizeof dir, "%s/cdc-source", pgt_tmpdir());
    snprintf(lock, sizeof lock, "%s.lock", dir);
    int fd = open(lock, O_CREAT | O_RDWR, 0644);
    PGT_CHECK(fd >= 0);
    PGT_CHECK(flock(fd, LOCK_EX) == 0);
    pgpipe_local_options opt;
    pgpipe_local_options_init(&opt);
    opt.fast = 1;
    opt.logical = 1;
    opt.owner = (long)getppid();
    pgpipe_error err;
    pgpipe_error_clear(&err);
    int rc = pgpipe_local_start(dir, &opt, info, sizeof info, NULL, &err);
    /* the server's watchdog inherited the descriptor: unlock, not only close */
    flock(fd, LOCK_UN);
    close(fd);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "starting the source cluster: %s", err.message);
    return info;
}

static PGconn *cdc_conn(const char *info)
{
    PGconn *c = PQconnectdb(info);
    PGT_CHECK_MSG(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
    /* the test cluster runs with synchronous_commit = off, and logical
    ** decoding reads only WAL that is flushed: commit durably */
    PQclear(PGT_EXEC(c, "SET client_min_messages = warning; SET synchronous_commit = on"));
    return c;
}

/* A fresh database NAME on the source (its slots dropped first); its
** conninfo in out, with extra (libpq options) appended. */
static PGconn *cdc_src_fresh(const char *name, char *out, size_t size, const char *extra)
{
    PGconn *a = cdc_conn(cdc_src_base());
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
             "WHERE database = '%s'", name);
    PQclear(PGT_EXEC(a, sql));
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
    PQclear(PGT_EXEC(a, sql));
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
    PQclear(PGT_EXEC(a, sql));
    PQfinish(a);
    snprintf(out, size, "%s dbname=%s%s%s", cdc_src_base(), name, extra ? " " : "",
             extra ? extra : "");
    return cdc_conn(out);
}

/* ---- the decoder, on captured bytes ---------------------------------- */

#define CDC_CAP_MAX 20000
typedef struct cdc_cap {
    int n;
    char *msg[CDC_CAP_MAX];
    int len[CDC_CAP_MAX];
    char in_stream[CDC_CAP_MAX];  /* the decoder's state before message i */
} cdc_cap;

/* Every pgoutput message the slot holds (peeked, so it stays). */
static void cdc_capture(PGconn *s, const char *slot, const char *pub, cdc_cap *cap)
{
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT data FROM pg_logical_slot_peek_binary_changes('%s', NULL, NULL, "
             "'proto_version', '2', 'publication_names', '%s', 'streaming', 'on', "
             "'messages', 'true')", slot, pub);
    PGresult *r = PQexecParams(s, sql, 0, NULL, NULL, NULL, NULL, 1);
    PGT_CHECK_MSG(PQresultStatus(r) == PGRES_TUPLES_OK, "%s", PQresultErrorMessage(r));
    cap->n = 0;
    for (int i = 0; i < PQntuples(r) && cap->n < CDC_CAP_MAX; i++) {
        int n = PQgetlength(r, i, 0);
        cap->msg[cap->n] = malloc((size_t)n + 1);
        memcpy(cap->msg[cap->n], PQgetvalue(r, i, 0), (size_t)n);
        cap->len[cap->n++] = n;
    }
    PGT_CHECK(PQntuples(r) < CDC_CAP_MAX);
    PQclear(r);
}

/* The named column's value in a decoded tuple, as text ("<null>", "<unchanged>"). */
static const char *cdc_col(const pp_cdc_msg *m, const pp_cdc_tuple *t, const char *name)
{
    static char buf[64];
    for (int i = 0; i < m->rel->ncols; i++) {
        if (strcmp(m->rel->cols[i].name, name) != 0)
            continue;
        if (t->v[i].kind == 'n')
            return "<null>";
        if (t->v[i].kind == 'u')
            return "<unchanged>";
        snprintf(buf, sizeof buf, "%.*s", (int)(t->v[i].len < 60 ? t->v[i].len : 60), t->v[i].data);
        return buf;
    }
    return "<no such column>";
}

PGT_TEST(cdc, proto_decodes_captured_messages)
{
    char info[1200];
    PGconn *s = cdc_src_fresh("cdc_proto", info, sizeof info, NULL);
    PQclear(PGT_EXEC(s,
        "CREATE TYPE mood AS ENUM ('sad', 'ok');"
        "CREATE TABLE t (id int PRIMARY KEY, name text, big text, m mood);"
        "ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;"
        "CREATE TABLE f (a int, b text); ALTER TABLE f REPLICA IDENTITY FULL;"
        "CREATE TABLE unpublished (x int);"
        "CREATE PUBLICATION p FOR TABLE t, f;"));
    PQclear(PGT_EXEC(s, "SELECT pg_create_logical_replication_slot('cap', 'pgoutput')"));
    /* one transaction each (one PQexec of several statements is one) */
    const char *steps[] = {
        "INSERT INTO t VALUES (1, 'a', repeat('x', 5000), 'ok'), (2, NULL, 'small', NULL)",
        "UPDATE t SET name = 'b' WHERE id = 1",           /* big unchanged: 'u' */
        "UPDATE t SET id = 3 WHERE id = 2",               /* key changed: old key 'K' */
        "DELETE FROM t WHERE id = 3",
        "INSERT INTO f VALUES (7, 'seven')", "UPDATE f SET b = 'sieben'", "DELETE FROM f",
        "SELECT pg_logical_emit_message(true, 'pfx', 'hello')",
        "ALTER TABLE t ADD COLUMN extra int DEFAULT 5",
        "INSERT INTO t (id) VALUES (4)",
        "TRUNCATE t, f",
        /* a transaction replayed from elsewhere carries its origin */
        "SELECT pg_replication_origin_create('o1')",
        "SELECT pg_replication_origin_session_setup('o1')",
        "INSERT INTO t (id) VALUES (6)",
        "SELECT pg_replication_origin_session_reset()",
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        PQclear(PGT_EXEC(s, steps[i]));
    /* a transaction larger than logical_decoding_work_mem is streamed, with
    ** a rolled back subtransaction (Stream Abort of a subxact) */
    PQclear(PGT_EXEC(s, "BEGIN; INSERT INTO t (id, name) SELECT i, repeat('s', 100) FROM generate_series(10, 1009) i;"
                        "SAVEPOINT a; INSERT INTO t (id) SELECT i FROM generate_series(2000, 2999) i;"
                        "ROLLBACK TO a; INSERT INTO t (id) VALUES (5000); COMMIT;"
                        "BEGIN; INSERT INTO t (id) SELECT i FROM generate_series(3000, 4999) i; ROLLBACK;"
                        /* an abort is not flushed at once: a commit after it is */
                        "INSERT INTO unpublished VALUES (1);"));
    PQclear(PGT_EXEC(s, "SET logical_decoding_work_mem = '64kB'"));
    static cdc_cap cap;
    cdc_capture(s, "cap", "p", &cap);

    pp_cdc_decoder d;
    memset(&d, 0, sizeof d);
    pgpipe_error err;
    pgpipe_error_clear(&err);
    int count[128] = { 0 };
    int seen_u = 0, seen_k = 0, seen_o = 0, seen_extra = 0, seen_trunc = 0, seen_msg = 0;
    int seen_type = 0, stream_rows = 0, seen_sub_abort = 0, seen_top_abort = 0;
    int in_stream_changes = 0, plain_checked = 0;
    for (int i = 0; i < cap.n; i++) {
        pp_cdc_msg m;
        cap.in_stream[i] = (char)d.in_stream;
        int rc = pp_cdc_decode(&d, cap.msg[i], (size_t)cap.len[i], &m, &err);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "message %d ('%c'): %s", i, cap.msg[i][0], err.message);
        count[(unsigned char)m.type & 127]++;
        switch (m.type) {
        case 'B':
            PGT_CHECK(m.lsn > 0 && m.ts > 0 && m.xid > 0);
            break;
        case 'C':
            PGT_CHECK(m.end_lsn > m.lsn);
            break;
        case 'Y':
            PGT_EQ_STR(m.name, "mood");
            PGT_EQ_STR(m.nsp, "public");
            seen_type = 1;
            break;
        case 'R':
            if (strcmp(m.rel->name, "t") == 0) {
                PGT_EQ_STR(m.rel->nsp, "public");
                PGT_EQ_INT(m.rel->ident, 'd');
                PGT_EQ_STR(m.rel->cols[0].name, "id");
                PGT_EQ_INT(m.rel->cols[0].key, 1);
                PGT_EQ_INT((int)m.rel->cols[0].type, 23);
                PGT_EQ_INT(m.rel->cols[1].key, 0);
                if (m.rel->ncols == 5) {
                    PGT_EQ_STR(m.rel->cols[4].name, "extra");
                    seen_extra = 1;
                } else {
                    PGT_EQ_INT(m.rel->ncols, 4);
                }
            } else {
                PGT_EQ_STR(m.rel->name, "f");
                PGT_EQ_INT(m.rel->ident, 'f');
            }
            break;
        case 'I':
            if (d.in_stream) {
                in_stream_changes++;
                PGT_CHECK(m.xid > 0);
                if (atoi(cdc_col(&m, m.newt, "id")) >= 10)
                    stream_rows++;
            } else if (strcmp(m.rel->name, "t") == 0 && atoi(cdc_col(&m, m.newt, "id")) == 1) {
                PGT_EQ_STR(cdc_col(&m, m.newt, "name"), "a");
                PGT_EQ_STR(cdc_col(&m, m.newt, "m"), "ok");
                PGT_EQ_INT((int)m.newt->v[2].len, 5000);
                plain_checked++;
            } else if (strcmp(m.rel->name, "t") == 0 && atoi(cdc_col(&m, m.newt, "id")) == 2) {
                PGT_EQ_STR(cdc_col(&m, m.newt, "name"), "<null>");
                plain_checked++;
            } else if (strcmp(m.rel->name, "t") == 0 && atoi(cdc_col(&m, m.newt, "id")) == 4) {
                PGT_EQ_STR(cdc_col(&m, m.newt, "extra"), "5");
                plain_checked++;
            }
            break;
        case 'U':
            if (strcmp(m.rel->name, "f") == 0) {
                PGT_EQ_INT(m.old_kind, 'O');
                PGT_EQ_STR(cdc_col(&m, m.oldt, "b"), "seven");
                PGT_EQ_STR(cdc_col(&m, m.newt, "b"), "sieben");
                seen_o = 1;
            } else if (m.old_kind == 'K') {
                PGT_EQ_STR(cdc_col(&m, m.oldt, "id"), "2");
                PGT_EQ_STR(cdc_col(&m, m.newt, "id"), "3");
                seen_k = 1;
            } else {
                PGT_EQ_INT(m.old_kind, 0);
                PGT_EQ_STR(cdc_col(&m, m.newt, "name"), "b");
                /* an unchanged TOASTed value: sent as 'u', never as NULL */
                PGT_EQ_STR(cdc_col(&m, m.newt, "big"), "<unchanged>");
                seen_u = 1;
            }
            break;
        case 'D':
            PGT_CHECK(m.old_kind == 'K' || m.old_kind == 'O');
            if (m.old_kind == 'K')
                PGT_EQ_STR(cdc_col(&m, m.oldt, "id"), "3");
            break;
        case 'T':
            PGT_EQ_INT(m.nrelids, 2);
            PGT_CHECK(pp_cdc_rel_find(&d, m.relids[0]) != NULL);
            PGT_CHECK(pp_cdc_rel_find(&d, m.relids[1]) != NULL);
            seen_trunc = 1;
            break;
        case 'O':
            PGT_EQ_STR(m.name, "o1");
            break;
        case 'M':
            PGT_EQ_STR(m.name, "pfx");
            PGT_EQ_MEM(m.content, m.content_len, "hello", 5);
            PGT_EQ_INT(m.flags, 1);
            seen_msg = 1;
            break;
        case 'A':
            if (m.subxid != m.xid)
                seen_sub_abort = 1;
            else
                seen_top_abort = 1;
            break;
        default:
            break;
        }
    }
    PGT_CHECK(seen_u && seen_k && seen_o && seen_extra && seen_trunc && seen_msg && seen_type);
    PGT_CHECK_MSG(count['S'] > 0 && count['E'] == count['S'] && count['c'] == 1,
                  "S %d E %d c %d", count['S'], count['E'], count['c']);
    PGT_CHECK(in_stream_changes > 0 && stream_rows > 0);
    PGT_EQ_INT(plain_checked, 3);
    PGT_EQ_INT(count['O'], 1);
    PGT_CHECK_MSG(seen_sub_abort && seen_top_abort, "sub %d top %d", seen_sub_abort, seen_top_abort);
    PGT_EQ_INT(d.in_stream, 0);

    /* a message cut anywhere is refused, never read past its end */
    for (int i = 0; i < cap.n; i++) {
        for (int k = 0; k < cap.len[i]; k++) {
            char *cut = malloc((size_t)k + 1);
            memcpy(cut, cap.msg[i], (size_t)k);
            pp_cdc_msg m;
            int was = d.in_stream = cap.in_stream[i];
            PGT_CHECK_MSG(pp_cdc_decode(&d, cut, (size_t)k, &m, &err) != PGPIPE_OK,
                          "message %d ('%c') cut to %d bytes was accepted", i, cap.msg[i][0], k);
            PGT_EQ_INT(d.in_stream, was);
            free(cut);
            if (cap.len[i] > 200 && k > 64)
                k += 97; /* long rows: a sample of the cuts */
        }
    }
    /* unknown message types and column kinds */
    pp_cdc_msg m;
    PGT_EQ_INT(pp_cdc_decode(&d, "Z", 1, &m, &err), PGPIPE_PARSE);
    PGT_CONTAINS(err.message, "unknown message type");
    PGT_EQ_INT(pp_cdc_decode(&d, "I\0\0\0\1N", 6, &m, &err), PGPIPE_PARSE);
    PGT_CONTAINS(err.message, "not described by a Relation message");

    /* the event payload of the first update of t */
    pp_cdc_decoder d2;
    memset(&d2, 0, sizeof d2);
    pp_buf b = { 0, 0, 0 };
    int done = 0;
    for (int i = 0; i < cap.n && !done; i++) {
        PGT_OK(pp_cdc_decode(&d2, cap.msg[i], (size_t)cap.len[i], &m, &err));
        if (m.type == 'U' && strcmp(m.rel->name, "t") == 0) {
            PGT_OK(pp_cdc_event_json(&b, &d2, &m, 0, 77));
            PGT_OK(pp_cdc_event_end(&b, 0x100000010ULL, 0));
            PGT_OK(pp_buf_putc(&b, '\0'));
            PGT_EQ_STR(b.data, "{\"op\":\"update\",\"row\":{\"id\":1,\"name\":\"b\",\"m\":\"ok\"},"
                               "\"xid\":77,\"table\":\"public.t\",\"unchanged\":[\"big\"],"
                               "\"lsn\":\"1/10\",\"commit_time\":\"2000-01-01T00:00:00.000000Z\"}");
            done = 1;
        }
    }
    PGT_CHECK(done);
    pp_buf_free(&b);
    pp_cdc_decoder_free(&d2);
    pp_cdc_decoder_free(&d);
    for (int i = 0; i < cap.n; i++)
        free(cap.msg[i]);
    PQclear(PGT_EXEC(s, "SELECT pg_drop_replication_slot('cap')"));
    PQfinish(s);
}

PGT_TEST(cdc, lsn_text)
{
    char b[32];
    uint64_t v = 0;
    pp_cdc_lsn_str(0x16B3748ULL, b, sizeof b);
    PGT_EQ_STR(b, "0/16B3748");
    PGT_CHECK(pp_cdc_lsn_parse("1F/A0", &v));
    PGT_CHECK(v == (0x1FULL << 32 | 0xA0));
    PGT_CHECK(!pp_cdc_lsn_parse("1F", &v));
    PGT_CHECK(!pp_cdc_lsn_parse("1/2x", &v));
}

/* ---- set-up ---------------------------------------------------------- */

/* The writer count cdc_open (and so cdc_child) asks for; 0 = the default
** (one), -1 = writers set to 0. The tests of two writers set it to 2 and back. */
static int cdc_t_writers;

static int cdc_open(pgpipe_cdc **c, const char *src, const char *tgt, const char *slot,
                    const char *tables)
{
    pgpipe_cdc_options o;
    pgpipe_cdc_options_init(&o);
    if (cdc_t_writers)
        o.writers = cdc_t_writers < 0 ? 0 : cdc_t_writers;
    o.source = src;
    o.target = tgt;
    o.slot = slot;
    o.publication = slot;
    o.tables = tables;
    o.status_interval_ms = 100;
    return pgpipe_cdc_open(c, &o);
}

PGT_TEST(cdc, setup_refusals_and_adoption)
{
    pgpipe_cdc *c = NULL;
    char tgt[1200];
    PGconn *t = pgt_db_fresh("cdc_setup_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_setup_t", pgt_dsn());

    /* the test cluster has wal_level = replica */
    PGT_EQ_INT(cdc_open(&c, pgt_dsn(), tgt, "s1", NULL), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(c), "wal_level = replica");
    PGT_CONTAINS(pgpipe_errmsg(c), "needs wal_level = logical");
    pgpipe_cdc_close(c);

    char src[1200];
    PGconn *s = cdc_src_fresh("cdc_setup", src, sizeof src, NULL);
    PQclear(PGT_EXEC(s, "DROP ROLE IF EXISTS cdc_norepl; CREATE ROLE cdc_norepl LOGIN;"
                        "CREATE TABLE a (id int PRIMARY KEY)"));
    char norepl[1300];
    snprintf(norepl, sizeof norepl, "%s user=cdc_norepl", src);
    PGT_EQ_INT(cdc_open(&c, norepl, tgt, "s1", NULL), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(c), "role \"cdc_norepl\" lacks the REPLICATION attribute");
    PGT_CONTAINS(pgpipe_errmsg(c), "ALTER ROLE \"cdc_norepl\" REPLICATION");
    pgpipe_cdc_close(c);

    PGT_EQ_INT(cdc_open(&c, src, tgt, "Bad-Name", NULL), PGPIPE_MISUSE);
    pgpipe_cdc_close(c);
    /* "" is not the default slot (an unset $SLOT in a script) */
    PGT_EQ_INT(cdc_open(&c, src, tgt, "", NULL), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(c), "the slot name is empty");
    pgpipe_cdc_close(c);
    PGT_EQ_INT(pgt_db_int(s, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pgpipe_cdc'"), 0);

    /* created, then adopted */
    PGT_EQ_INT(cdc_open(&c, src, tgt, "s1", "a"), PGPIPE_OK);
    pgpipe_cdc_close(c);
    cdc_t_writers = -1; /* writers 0 is the default, one (cdc.h), not two */
    PGT_EQ_INT(cdc_open(&c, src, tgt, "s1", "a"), PGPIPE_OK);
    cdc_t_writers = 0;
    PGT_EQ_INT(c->nlanes, 1);
    pgpipe_cdc_close(c);
    PGT_EQ_INT(pgt_db_int(s, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's1'"), 1);
    PGT_EQ_STR(pgt_db_str(s, "SELECT string_agg(tablename, ',') FROM pg_publication_tables "
                             "WHERE pubname = 's1'"), "a");
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM pgpipe.cdc_slots WHERE slot = 's1'"), 1);
    pgpipe_cdc_slot_info si;
    pgpipe_error err;
    PGT_OK(pgpipe_cdc_slot_info_get(src, "s1", &si, &err));
    PGT_EQ_INT(si.exists, 1);
    PGT_EQ_INT(si.active, 0);
    PGT_EQ_STR(si.wal_status, "reserved");

    /* the slot dropped behind the target's back: refused, not silently new */
    PQclear(PGT_EXEC(s, "SELECT pg_drop_replication_slot('s1')"));
    PGT_EQ_INT(cdc_open(&c, src, tgt, "s1", "a"), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(c), "is gone from the source");
    pgpipe_cdc_close(c);
    /* forgotten on purpose: starts anew */
    PGT_OK(pgpipe_cdc_drop(src, tgt, "s1", "s1", &err));
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM pgpipe.cdc_slots"), 0);
    PGT_EQ_INT(pgt_db_int(s, "SELECT count(*) FROM pg_publication"), 0);
    PGT_EQ_INT(cdc_open(&c, src, tgt, "s1", "a"), PGPIPE_OK);
    pgpipe_cdc_close(c);
    PGT_OK(pgpipe_cdc_drop(src, tgt, "s1", "s1", &err));
    PQfinish(s);
    pgt_db_close(t);
}

/* ---- streaming ------------------------------------------------------- */

/* Run c until the target holds want events of source slot (at most 30 s). */
static void cdc_run_until(pgpipe_cdc *c, PGconn *t, const char *slot, long long want)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", slot);
    long long have = -1;
    for (int i = 0; i < 150; i++) {
        int rc = pgpipe_cdc_run(c, 200);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c));
        if ((have = pgt_db_int(t, sql)) >= want)
            break;
    }
    PGT_CHECK_MSG(have == want, "%lld events staged, expected %lld", have, want);
}

PGT_TEST(cdc, stream_into_staging)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_stream", src, sizeof src,
                              "options='-c logical_decoding_work_mem=64kB'");
    PGconn *t = pgt_db_fresh("cdc_stream_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_stream_t", pgt_dsn());
    PQclear(PGT_EXEC(s,
        "CREATE TABLE t (id int PRIMARY KEY, name text, n numeric, ok bool, doc jsonb, big text);"
        "ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;"
        "CREATE TABLE full_t (a int, b text); ALTER TABLE full_t REPLICA IDENTITY FULL;"
        "CREATE TABLE nothing_t (a int); ALTER TABLE nothing_t REPLICA IDENTITY NOTHING;"
        "CREATE TABLE other (x int)"));
    pgpipe_cdc *c = NULL;
    int rc = cdc_open(&c, src, tgt, "cs", "t, full_t, nothing_t");
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c));

    const char *steps[] = {
        "INSERT INTO t VALUES (1, 'a', 1.50, true, '{\"k\":[1,2]}', repeat('x', 5000)),"
        "                     (2, 'tab\there', 'NaN', false, NULL, 'small')",
        "UPDATE t SET name = 'b' WHERE id = 1",
        "UPDATE t SET id = 3 WHERE id = 2",
        "DELETE FROM t WHERE id = 3",
        "INSERT INTO full_t VALUES (7, 'seven')", "UPDATE full_t SET b = 'sieben'",
        "DELETE FROM full_t",
        "INSERT INTO nothing_t VALUES (1)",
        "INSERT INTO other VALUES (1)",                  /* not published */
        "BEGIN; INSERT INTO t (id) VALUES (50); ROLLBACK",
        /* streamed while in progress (over 64 kB), a subtransaction rolled back */
        "BEGIN; INSERT INTO t (id, name) SELECT i, repeat('s', 100) FROM generate_series(100, 2099) i;"
        "SAVEPOINT a; INSERT INTO t (id) SELECT i FROM generate_series(3000, 3499) i;"
        "ROLLBACK TO a; INSERT INTO t (id) VALUES (5000); COMMIT",
        "TRUNCATE full_t",
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        PQclear(PGT_EXEC(s, steps[i]));
    /* REPLICA IDENTITY NOTHING: the source itself refuses updates and deletes */
    PGresult *r = PQexec(s, "DELETE FROM nothing_t");
    PGT_CHECK(PQresultStatus(r) == PGRES_FATAL_ERROR);
    PGT_CONTAINS(PQresultErrorMessage(r), "replica identity");
    PQclear(r);

    cdc_run_until(c, t, "cs", 2003 + 2 + 1 + 4 + 1);
    PGT_EQ_STR(pgt_db_str(t, "SELECT string_agg(event_type || '=' || n, ' ' ORDER BY event_type) FROM "
                             "(SELECT event_type, count(*) n FROM staging.raw_events GROUP BY 1) x"),
               "public.full_t:delete=1 public.full_t:insert=1 public.full_t:truncate=1 "
               "public.full_t:update=1 public.nothing_t:insert=1 public.t:delete=1 "
               "public.t:insert=2003 public.t:update=2");
    /* types by OID: numbers, booleans, JSON as JSON; NaN and text as strings */
    PGT_EQ_STR(pgt_db_str(t, "SELECT payload->'row' FROM staging.raw_events WHERE "
                             "event_type = 'public.t:insert' AND payload->'row'->>'id' = '2'"),
               "{\"n\": \"NaN\", \"id\": 2, \"ok\": false, \"big\": \"small\", \"doc\": null, "
               "\"name\": \"tab\\there\"}");
    PGT_EQ_STR(pgt_db_str(t, "SELECT payload->'row'->'doc' || jsonb_build_object('n', payload->'row'->'n', 'ok', payload->'row'->'ok') "
                             "FROM staging.raw_events WHERE payload->'row'->>'id' = '1' AND payload->>'op' = 'insert'"),
               "{\"k\": [1, 2], \"n\": 1.50, \"ok\": true}");
    /* the unchanged TOASTed value: filled from the insert's image, named */
    PGT_EQ_STR(pgt_db_str(t, "SELECT ((payload->'row') - 'big') || jsonb_build_object('f', payload->'filled', "
                             "'u', payload->'unchanged', 'big', payload->'row'->>'big' = repeat('x', 5000)) "
                             "FROM staging.raw_events WHERE event_type = 'public.t:update' "
                             "AND payload->'row'->>'id' = '1'"),
               "{\"f\": [\"big\"], \"n\": 1.50, \"u\": null, \"id\": 1, \"ok\": true, \"big\": true, "
               "\"doc\": {\"k\": [1, 2]}, \"name\": \"b\"}");
    /* old keys: the key that changed; REPLICA IDENTITY FULL: the whole row */
    PGT_EQ_STR(pgt_db_str(t, "SELECT payload->'old' FROM staging.raw_events WHERE "
                             "event_type = 'public.t:update' AND payload->'row'->>'id' = '3'"), "{\"id\": 2}");
    PGT_EQ_STR(pgt_db_str(t, "SELECT payload->'old' FROM staging.raw_events WHERE "
                             "event_type = 'public.t:delete'"), "{\"id\": 3}");
    PGT_EQ_STR(pgt_db_str(t, "SELECT payload->'old' FROM staging.raw_events WHERE "
                             "event_type = 'public.full_t:update'"), "{\"a\": 7, \"b\": \"seven\"}");
    PGT_EQ_STR(pgt_db_str(t, "SELECT payload->'old' FROM staging.raw_events WHERE "
                             "event_type = 'public.full_t:delete'"), "{\"a\": 7, \"b\": \"sieben\"}");
    PGT_EQ_STR(pgt_db_str(t, "SELECT payload - 'xid' - 'lsn' - 'commit_time' FROM staging.raw_events "
                             "WHERE event_type = 'public.full_t:truncate'"),
               "{\"op\": \"truncate\", \"table\": \"public.full_t\", \"cascade\": false, "
               "\"restart_identity\": false}");
    /* the streamed transaction: all of it, none of its rolled back savepoint */
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM staging.raw_events WHERE (payload->'row'->>'id')::int "
                             "BETWEEN 3000 AND 3499 OR payload->'row'->>'id' = '50'"), 0);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(DISTINCT payload->>'lsn') FROM staging.raw_events WHERE "
                             "(payload->'row'->>'id')::int BETWEEN 100 AND 5000"), 1);
    /* every event carries its commit's LSN and time; the slot's row holds the last */
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM staging.raw_events WHERE (payload->>'lsn')::pg_lsn "
                             "> '0/0' AND (payload->>'commit_time')::timestamptz > now() - interval '1 hour'"),
               2011);
    PGT_EQ_INT(pgt_db_int(t, "SELECT (applied_lsn = (SELECT max((payload->>'lsn')::pg_lsn) FROM "
                             "staging.raw_events))::int FROM pgpipe.cdc_slots WHERE slot = 'cs'"), 1);
    PGT_EQ_INT(pgt_db_int(t, "SELECT transactions FROM pgpipe.cdc_slots"), 10);
    pgpipe_cdc_stats st;
    pgpipe_cdc_stats_get(c, &st);
    PGT_EQ_INT(st.events, 2011);
    PGT_CHECK(st.confirmed_lsn >= st.applied_lsn && st.applied_lsn > 0);
    char lsn[32];
    pp_cdc_lsn_str(st.applied_lsn, lsn, sizeof lsn);
    PGT_EQ_STR(pgt_db_str(t, "SELECT applied_lsn::text FROM pgpipe.cdc_slots"), lsn);
    /* the flush position reached the source after the commit */
    char q[256];
    snprintf(q, sizeof q, "SELECT (confirmed_flush_lsn >= '%s')::int FROM pg_replication_slots "
             "WHERE slot_name = 'cs'", lsn);
    PGT_EQ_INT(pgt_db_int(s, q), 1);

    /* relation changes mid-stream: each change is described anew before it */
    const char *ddl[] = {
        "ALTER TABLE full_t ADD COLUMN c int DEFAULT 7",
        "INSERT INTO full_t VALUES (1, 'one', 11)",
        "ALTER TABLE full_t DROP COLUMN b",
        "INSERT INTO full_t VALUES (2, 12)",
        "ALTER TABLE full_t RENAME COLUMN c TO cc",
        "INSERT INTO full_t VALUES (3, 13)",
        "ALTER TABLE full_t ALTER COLUMN cc TYPE text",
        "INSERT INTO full_t VALUES (4, 'fourteen')",
    };
    for (size_t i = 0; i < sizeof ddl / sizeof ddl[0]; i++)
        PQclear(PGT_EXEC(s, ddl[i]));
    cdc_run_until(c, t, "cs", 2011 + 4);
    PGT_EQ_STR(pgt_db_str(t, "SELECT string_agg((payload->'row')::text, ' ' ORDER BY id) FROM "
                             "staging.raw_events WHERE event_type = 'public.full_t:insert' AND "
                             "(payload->'row'->>'a')::int < 7"),
               "{\"a\": 1, \"b\": \"one\", \"c\": 11} {\"a\": 2, \"c\": 12} "
               "{\"a\": 3, \"cc\": 13} {\"a\": 4, \"cc\": \"fourteen\"}");
    PQclear(PGT_EXEC(t, "DELETE FROM staging.raw_events WHERE event_type = 'public.full_t:insert' "
                        "AND (payload->'row'->>'a')::int < 7"));
    pgpipe_cdc_close(c);

    /* reopened: resumes after what is staged, stages nothing twice */
    PGT_OK(cdc_open(&c, src, tgt, "cs", NULL));
    PQclear(PGT_EXEC(s, "INSERT INTO t (id) VALUES (6000)"));
    cdc_run_until(c, t, "cs", 2012);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) - count(DISTINCT payload::text) FROM staging.raw_events"), 0);
    pgpipe_cdc_close(c);

    /* idle: heartbeats let the slot advance past WAL written elsewhere */
    pgpipe_cdc_options o;
    pgpipe_cdc_options_init(&o);
    o.source = src;
    o.target = tgt;
    o.slot = o.publication = "cs";
    o.status_interval_ms = 100;
    o.heartbeat_ms = 100;
    PGT_OK(pgpipe_cdc_open(&c, &o));
    PQclear(PGT_EXEC(s, "INSERT INTO other SELECT generate_series(1, 1000)"));
    char before[32];
    snprintf(before, sizeof before, "%s", pgt_db_str(s, "SELECT pg_current_wal_lsn()::text"));
    snprintf(q, sizeof q, "SELECT (confirmed_flush_lsn > '%s')::int FROM pg_replication_slots "
             "WHERE slot_name = 'cs'", before);
    int advanced = 0;
    for (int i = 0; i < 50 && !advanced; i++) {
        PGT_OK(pgpipe_cdc_run(c, 200));
        advanced = pgt_db_int(s, q) == 1;
    }
    PGT_CHECK_MSG(advanced, "the idle slot did not advance past %s", before);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM staging.raw_events"), 2012);
    pgpipe_cdc_close(c);
    pgpipe_error err;
    PGT_OK(pgpipe_cdc_drop(src, tgt, "cs", "cs", &err));
    PQfinish(s);
    pgt_db_close(t);
}

/* ---- exactly once through kill -9 ------------------------------------ */

/* A child that streams slot into the target until it is killed (it opens
** again after a failure, as a supervisor would restart it). */
static pid_t cdc_child(const char *src, const char *tgt, const char *slot)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    PGT_CHECK(pid >= 0);
    if (pid > 0)
        return pid;
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    for (;;) {
        pgpipe_cdc *c = NULL;
        if (cdc_open(&c, src, tgt, slot, NULL) == PGPIPE_OK)
            pgpipe_cdc_run(c, -1);
        pgpipe_cdc_close(c);
        pgpipe_sleep_ms(100);
    }
}

static void cdc_kill(pid_t pid)
{
    kill(pid, SIGKILL);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
}

/* Poll sql on c until it gives 1 (every 5 ms, at most 15 s); 1 when it did. */
static int cdc_until(PGconn *c, const char *sql)
{
    for (int i = 0; i < 3000; i++) {
        if (pgt_db_int(c, sql) == 1)
            return 1;
        pgpipe_sleep_ms(5);
    }
    return 0;
}

PGT_TEST(cdc, kill9_exactly_once)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_kill", src, sizeof src,
                              "options='-c logical_decoding_work_mem=64kB'");
    PGconn *t = pgt_db_fresh("cdc_kill_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_kill_t application_name=cdc_kill", pgt_dsn());
    PQclear(PGT_EXEC(s, "CREATE TABLE k (id bigint PRIMARY KEY, pad text)"));
    pgpipe_cdc *c = NULL;
    PGT_OK(cdc_open(&c, src, tgt, "ck", "k"));
    pgpipe_cdc_close(c);
    long long total = 0;
    char sql[512];

    /* 1: killed while small transactions stream in */
    pid_t pid = cdc_child(src, tgt, "ck");
    for (int i = 0; i < 150; i++) {
        int n = 1 + i % 5;
        snprintf(sql, sizeof sql, "INSERT INTO k SELECT g, 'x' FROM generate_series(%lld, %lld) g",
                 total + 1, total + n);
        PQclear(PGT_EXEC(s, sql));
        total += n;
        if (i == 60)
            cdc_until(t, "SELECT (count(*) > 0)::int FROM staging.raw_events");
        if (i == 61)
            cdc_kill(pid);
        if (i == 62)
            pid = cdc_child(src, tgt, "ck");
    }
    /* 2: killed while it commits a large (streamed) transaction into staging */
    long long before = total;
    snprintf(sql, sizeof sql, "INSERT INTO k SELECT g, repeat('p', 50) FROM generate_series(%lld, %lld) g",
             total + 1, total + 20000);
    PQclear(PGT_EXEC(s, sql));
    total += 20000;
    snprintf(sql, sizeof sql, "SELECT ((SELECT count(*) FROM staging.raw_events) >= %lld AND "
             "EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'cdc_kill' AND "
             "query LIKE '%%COPY staging%%' AND state = 'active'))::int", before);
    int in_copy = cdc_until(t, sql);
    cdc_kill(pid);
    /* 3: killed while a transaction still open on the source streams into its spool */
    pid = cdc_child(src, tgt, "ck");
    PGconn *s2 = cdc_conn(src);
    PQclear(PGT_EXEC(s2, "BEGIN"));
    snprintf(sql, sizeof sql, "INSERT INTO k SELECT g, repeat('q', 50) FROM generate_series(%lld, %lld) g",
             total + 1, total + 5000);
    PQclear(PGT_EXEC(s2, sql));
    total += 5000;
    snprintf(sql, sizeof sql, "SELECT (count(*) >= %lld)::int FROM staging.raw_events", before + 20000);
    PGT_CHECK(cdc_until(t, sql));
    /* the open transaction was sent in streamed blocks by now (it is over
    ** logical_decoding_work_mem); the streamed bytes are read from the source */
    PGT_CHECK(cdc_until(s, "SELECT (sum(stream_txns) > 0)::int FROM pg_stat_replication_slots "
                           "WHERE slot_name = 'ck'"));
    cdc_kill(pid);
    PQclear(PGT_EXEC(s2, "COMMIT"));
    PQfinish(s2);

    /* restarted once more: everything, once */
    PGT_OK(cdc_open(&c, src, tgt, "ck", NULL));
    cdc_run_until(c, t, "ck", total);
    pgpipe_cdc_close(c);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(DISTINCT (payload->'row'->>'id')::bigint) FROM staging.raw_events"),
               total);
    snprintf(sql, sizeof sql, "SELECT (min((payload->'row'->>'id')::bigint) = 1 AND "
             "max((payload->'row'->>'id')::bigint) = %lld)::int FROM staging.raw_events", total);
    PGT_EQ_INT(pgt_db_int(t, sql), 1);
    PGT_EQ_INT(pgt_db_int(s, "SELECT count(*) FROM k"), total);
    fprintf(stderr, "    %lld rows; the second kill %s inside the large COPY\n", total,
            in_copy ? "landed" : "did not land");
    pgpipe_error err;
    PGT_OK(pgpipe_cdc_drop(src, tgt, "ck", "ck", &err));
    PQfinish(s);
    pgt_db_close(t);
}

/* ---- group commit ----------------------------------------------------- */

/* A backlog of small source transactions: staged in fewer target
** transactions, each source transaction once and counted; the source is
** never told more than the target holds, and after a run all of it. */
PGT_TEST(cdc, group_commit_backlog)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_grp", src, sizeof src, NULL);
    PGconn *t = pgt_db_fresh("cdc_grp_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_grp_t", pgt_dsn());
    PQclear(PGT_EXEC(s, "CREATE TABLE g (id int PRIMARY KEY, v text); CREATE TABLE o (id int)"));
    pgpipe_cdc *c = NULL;
    PGT_OK(cdc_open(&c, src, tgt, "cg", "g"));
    pgpipe_cdc_close(c);
    /* 300 transactions of 10 rows, unpublished ones between them */
    PQclear(PGT_EXEC(s, "DO $$ BEGIN FOR b IN 0 .. 299 LOOP "
                        "INSERT INTO g SELECT b * 10 + k, 'v' FROM generate_series(1, 10) k; COMMIT; "
                        "INSERT INTO o VALUES (b); COMMIT; END LOOP; END $$"));
    PGT_OK(cdc_open(&c, src, tgt, "cg", NULL));
    long long have = 0;
    for (int i = 0; i < 150 && have < 3000; i++) {
        PGT_OK(pgpipe_cdc_run(c, 100));
        have = pgt_db_int(t, "SELECT count(*) FROM staging.raw_events");
        /* what the source was told is staged on the target */
        char q[256];
        snprintf(q, sizeof q, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                 "WHERE slot_name = 'cg'");
        char confirmed[32];
        snprintf(confirmed, sizeof confirmed, "%s", pgt_db_str(s, q));
        snprintf(q, sizeof q, "SELECT (applied_lsn >= '%s')::int FROM pgpipe.cdc_slots", confirmed);
        PGT_EQ_INT(pgt_db_int(t, q), 1);
    }
    PGT_EQ_INT(have, 3000);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(DISTINCT (payload->'row'->>'id')::int) FROM staging.raw_events"),
               3000);
    PGT_EQ_INT(pgt_db_int(t, "SELECT transactions FROM pgpipe.cdc_slots"), 300);
    PGT_EQ_INT(pgt_db_int(t, "SELECT events FROM pgpipe.cdc_slots"), 3000);
    /* a run ends with its groups durable on the target and confirmed */
    pgpipe_cdc_stats st;
    pgpipe_cdc_stats_get(c, &st);
    PGT_CHECK(st.applied_lsn > 0 && st.confirmed_lsn >= st.applied_lsn);
    PGT_EQ_INT(st.transactions, 300);
    pgpipe_cdc_close(c);
    pgpipe_error err;
    PGT_OK(pgpipe_cdc_drop(src, tgt, "cg", "cg", &err));
    PQfinish(s);
    pgt_db_close(t);
}

/* The target crashes (an immediate shutdown, its WAL writer slowed so
** that commits sit unwritten in its buffers) while a backlog streams in:
** the source was never told more than the target kept, and the stream
** resumes from what it kept: every change once. */
PGT_TEST(cdc, target_crash_loses_nothing_confirmed)
{
    char dir[512], tgt[1024], src[1200], sql[512];
    snprintf(dir, sizeof dir, "%s/cdc-target-crash", pgt_tmpdir());
    pgpipe_local_options lo;
    pgpipe_local_options_init(&lo);
    lo.fast = 1;
    lo.owner = (long)getppid();
    pgpipe_error err;
    pgpipe_error_clear(&err);
    { int rc_ = pgpipe_local_start(dir, &lo, tgt, sizeof tgt, NULL, &err); PGT_CHECK_MSG(rc_ == PGPIPE_OK, "%s", err.message); }
    PGconn *t = cdc_conn(tgt);
    PQclear(PGT_EXEC(t, "ALTER SYSTEM SET wal_writer_delay = '10s'"));
    PQclear(PGT_EXEC(t, "SELECT pg_reload_conf()"));
    PGconn *s = cdc_src_fresh("cdc_crash", src, sizeof src, NULL);
    PQclear(PGT_EXEC(s, "CREATE TABLE x (id int PRIMARY KEY)"));
    pgpipe_cdc_options o;
    pgpipe_cdc_options_init(&o);
    o.source = src;
    o.target = tgt;
    o.slot = o.publication = "cx";
    o.tables = "x";
    o.install = 1;
    pgpipe_cdc *c = NULL;
    { int rc_ = pgpipe_cdc_open(&c, &o); PGT_CHECK_MSG(rc_ == PGPIPE_OK, "%s", pgpipe_errmsg(c)); }
    pgpipe_cdc_close(c);

    pid_t pid = cdc_child(src, tgt, "cx");
    int total = 0;
    for (int i = 0; i < 200; i++, total += 5) {
        snprintf(sql, sizeof sql, "INSERT INTO x SELECT generate_series(%d, %d)", total + 1, total + 5);
        PQclear(PGT_EXEC(s, sql));
    }
    PGT_CHECK(cdc_until(t, "SELECT (count(*) >= 500)::int FROM staging.raw_events"));
    char before[32];
    snprintf(before, sizeof before, "%s", pgt_db_str(t, "SELECT applied_lsn::text FROM pgpipe.cdc_slots"));
    /* crash: SIGQUIT to the postmaster is PostgreSQL's immediate shutdown */
    char pidfile[600];
    snprintf(pidfile, sizeof pidfile, "%s/data/postmaster.pid", dir);
    FILE *f = fopen(pidfile, "r");
    PGT_CHECK(f != NULL);
    long pm = 0;
    PGT_CHECK(fscanf(f, "%ld", &pm) == 1 && pm > 0);
    fclose(f);
    PQfinish(t);
    PGT_CHECK(kill((pid_t)pm, SIGQUIT) == 0);
    for (int i = 0; i < 300 && pgpipe_local_running(dir); i++)
        pgpipe_sleep_ms(20);
    /* what the source was told, while the target is down */
    char confirmed[32];
    snprintf(confirmed, sizeof confirmed, "%s",
             pgt_db_str(s, "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'cx'"));
    { int rc_ = pgpipe_local_start(dir, &lo, tgt, sizeof tgt, NULL, &err); PGT_CHECK_MSG(rc_ == PGPIPE_OK, "%s", err.message); }
    t = cdc_conn(tgt);
    snprintf(sql, sizeof sql, "SELECT (applied_lsn >= '%s')::int FROM pgpipe.cdc_slots", confirmed);
    PGT_EQ_INT(pgt_db_int(t, sql), 1);
    snprintf(sql, sizeof sql, "SELECT (applied_lsn < '%s')::int FROM pgpipe.cdc_slots", before);
    int lost = pgt_db_int(t, sql);
    for (int i = 0; i < 100; i++, total += 5) {
        snprintf(sql, sizeof sql, "INSERT INTO x SELECT generate_series(%d, %d)", total + 1, total + 5);
        PQclear(PGT_EXEC(s, sql));
    }
    snprintf(sql, sizeof sql, "SELECT (count(*) >= %d)::int FROM staging.raw_events", total);
    PGT_CHECK(cdc_until(t, sql));
    cdc_kill(pid);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM staging.raw_events"), total);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(DISTINCT (payload->'row'->>'id')::int) FROM staging.raw_events"),
               total);
    fprintf(stderr, "    %d rows; the crash %s commits the target had not written\n", total,
            lost ? "lost" : "lost no");
    PGT_OK(pgpipe_cdc_drop(src, tgt, "cx", "cx", &err));
    PQfinish(t);
    PQfinish(s);
    PGT_OK(pgpipe_local_stop(dir, &lo, &err));
}

/* ---- failures that heal ---------------------------------------------- */

PGT_TEST(cdc, source_and_target_session_loss_heal)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_fail", src, sizeof src, NULL);
    PGconn *t = pgt_db_fresh("cdc_fail_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_fail_t application_name=cdc_fail", pgt_dsn());
    PQclear(PGT_EXEC(s, "CREATE TABLE f (id int PRIMARY KEY)"));
    pgpipe_cdc *c = NULL;
    PGT_OK(cdc_open(&c, src, tgt, "cf", "f"));
    PQclear(PGT_EXEC(s, "INSERT INTO f SELECT generate_series(1, 10)"));
    cdc_run_until(c, t, "cf", 10);
    PQfinish(s);

    /* the source ends the stream's session (a network cut, a restart, an
    ** administrator): it connects again and resumes */
    s = cdc_conn(src);
    PQclear(PGT_EXEC(s, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                        "WHERE slot_name = 'cf'"));
    pgpipe_error err;

    PQclear(PGT_EXEC(s, "INSERT INTO f SELECT generate_series(11, 20)"));
    long long have = 0;
    for (int i = 0; i < 100 && have < 20; i++) {
        if (pgpipe_cdc_run(c, 200) != PGPIPE_OK)
            fprintf(stderr, "    run: %s\n", pgpipe_errmsg(c));
        have = pgt_db_int(t, "SELECT count(*) FROM staging.raw_events");
    }
    PGT_EQ_INT(have, 20);
    pgpipe_cdc_stats st;
    pgpipe_cdc_stats_get(c, &st);
    PGT_CHECK_MSG(st.reconnects >= 1, "reconnects %lld", st.reconnects);

    /* the target's session ends: the transaction is not acknowledged, and
    ** after connecting again it is staged once */
    PGconn *a = pgt_connect();
    PQclear(PGT_EXEC(a, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'cdc_fail'"));
    PQclear(PGT_EXEC(s, "INSERT INTO f SELECT generate_series(21, 30)"));
    have = 0;
    for (int i = 0; i < 100 && have < 30; i++) {
        pgpipe_cdc_run(c, 200);
        have = pgt_db_int(t, "SELECT count(*) FROM staging.raw_events");
    }
    PGT_EQ_INT(have, 30);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(DISTINCT payload->'row'->>'id') FROM staging.raw_events"), 30);
    pgpipe_cdc_stats_get(c, &st);
    PGT_CHECK_MSG(st.reconnects >= 2, "reconnects %lld", st.reconnects);
    pgpipe_cdc_close(c);
    PQfinish(a);
    PGT_OK(pgpipe_cdc_drop(src, tgt, "cf", "cf", &err));
    PQfinish(s);
    pgt_db_close(t);
}

/* ---- the initial snapshot -------------------------------------------- */

static pid_t cdc_child_snapshot(const char *src, const char *tgt, const char *slot)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    PGT_CHECK(pid >= 0);
    if (pid > 0)
        return pid;
#ifdef __linux__
    prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
    for (;;) {
        pgpipe_cdc_options o;
        pgpipe_cdc_options_init(&o);
        o.source = src;
        o.target = tgt;
        o.slot = o.publication = slot;
        o.snapshot = 1;
        pgpipe_cdc *c = NULL;
        if (pgpipe_cdc_open(&c, &o) == PGPIPE_OK)
            pgpipe_cdc_run(c, -1);
        pgpipe_cdc_close(c);
        pgpipe_sleep_ms(100);
    }
}

PGT_TEST(cdc, snapshot_resumes_per_table_through_kill9)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_snap", src, sizeof src, NULL);
    PGconn *t = pgt_db_fresh("cdc_snap_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_snap_t", pgt_dsn());
    PQclear(PGT_EXEC(s,
        "CREATE TABLE a (id int PRIMARY KEY, v text);"
        "CREATE TABLE b (id int PRIMARY KEY, v text);"
        "CREATE TABLE c (id int PRIMARY KEY, v numeric);"
        "INSERT INTO a SELECT g, 'a' || g FROM generate_series(1, 30000) g;"
        "INSERT INTO b SELECT g, repeat('b', 40) FROM generate_series(1, 30000) g;"
        "INSERT INTO c VALUES (1, 1.5), (2, 2.5), (3, 3.5);"
        "CREATE PUBLICATION ss FOR TABLE a, b, c"));
    pgt_db_install(t);
    pid_t pid = cdc_child_snapshot(src, tgt, "ss");
    /* changes while the snapshot runs: some before its point, some after */
    PGT_CHECK(cdc_until(t, "SELECT EXISTS (SELECT FROM pgpipe.cdc_slots)::int"));
    PQclear(PGT_EXEC(s, "INSERT INTO a SELECT g, 'new' FROM generate_series(100001, 100100) g"));
    PQclear(PGT_EXEC(s, "DELETE FROM b WHERE id <= 50"));
    PQclear(PGT_EXEC(s, "UPDATE c SET v = v + 10 WHERE id = 3"));
    int killed_mid = cdc_until(t, "SELECT (count(*) >= 1)::int FROM pgpipe.cdc_snapshot_tables "
                                  "WHERE done_at IS NOT NULL");
    killed_mid = killed_mid && pgt_db_int(t, "SELECT count(*) FROM pgpipe.cdc_snapshot_tables "
                                             "WHERE done_at IS NULL") > 0;
    cdc_kill(pid);
    PQclear(PGT_EXEC(s, "INSERT INTO a SELECT g, 'newer' FROM generate_series(100101, 100200) g"));
    PQclear(PGT_EXEC(s, "DELETE FROM a WHERE id BETWEEN 101 AND 200"));
    PQclear(PGT_EXEC(s, "INSERT INTO c VALUES (4, 4.5)"));

    /* resumed: the tables not done, under a new snapshot; then the stream */
    pgpipe_cdc_options o;
    pgpipe_cdc_options_init(&o);
    o.source = src;
    o.target = tgt;
    o.slot = o.publication = "ss";
    o.snapshot = 1;
    o.status_interval_ms = 100;
    pgpipe_cdc *c = NULL;
    int rc = pgpipe_cdc_open(&c, &o);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c));
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM pgpipe.cdc_snapshot_tables WHERE done_at IS NULL"), 0);
    /* the source's rows, rebuilt from the events: every row once, none missing */
    const char *live =
        "WITH ev AS (SELECT payload->>'table' tb, payload->>'op' op, "
        "coalesce(payload->'row'->>'id', payload->'old'->>'id')::int id FROM staging.raw_events), "
        "ins AS (SELECT tb, id FROM ev WHERE op = 'insert'), "
        "del AS (SELECT tb, id FROM ev WHERE op = 'delete') ";
    char sql[1024];
    snprintf(sql, sizeof sql, "%s SELECT (SELECT count(*) FROM ins) - (SELECT count(*) FROM del)", live);
    long long want = pgt_db_int(s, "SELECT (SELECT count(*) FROM a) + (SELECT count(*) FROM b) + "
                                   "(SELECT count(*) FROM c)");
    long long have = -1;
    for (int i = 0; i < 100 && have != want; i++) {
        PGT_OK(pgpipe_cdc_run(c, 200));
        have = pgt_db_int(t, sql);
    }
    PGT_EQ_INT(have, want);
    snprintf(sql, sizeof sql, "%s SELECT count(*) FROM (SELECT tb, id FROM ins GROUP BY 1, 2 "
             "HAVING count(*) > 1) x", live);
    PGT_EQ_INT(pgt_db_int(t, sql), 0);
    snprintf(sql, sizeof sql, "%s SELECT count(*) FROM del WHERE (tb, id) NOT IN (SELECT tb, id FROM ins)",
             live);
    PGT_EQ_INT(pgt_db_int(t, sql), 0);
    snprintf(sql, sizeof sql, "%s SELECT coalesce(sum(id), 0) FROM (SELECT * FROM ins EXCEPT ALL "
             "SELECT * FROM del) x WHERE tb = 'public.a'", live);
    PGT_EQ_INT(pgt_db_int(t, sql), pgt_db_int(s, "SELECT sum(id) FROM a"));
    /* c's row 3 as the snapshot or the update left it: 13.5 either way */
    PGT_EQ_STR(pgt_db_str(t, "SELECT payload->'row'->>'v' FROM staging.raw_events WHERE "
                             "payload->>'table' = 'public.c' AND payload->'row'->>'id' = '3' "
                             "ORDER BY id DESC LIMIT 1"), "13.5");
    /* c's snapshot was taken before or after the kill: with or without row 4,
    ** which is then staged once, by the snapshot or by the stream */
    long long csnap = pgt_db_int(t, "SELECT count(*) FROM staging.raw_events WHERE "
                                    "(payload->>'snapshot')::bool AND event_type = 'public.c:insert'");
    PGT_CHECK_MSG(csnap == 3 || csnap == 4, "%lld snapshot rows of c", csnap);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM staging.raw_events WHERE payload->>'table' = "
                             "'public.c' AND payload->'row'->>'id' = '4'"), 1);
    fprintf(stderr, "    the kill %s between two tables of the snapshot\n",
            killed_mid ? "landed" : "did not land");
    pgpipe_cdc_close(c);
    pgpipe_error err;
    PGT_OK(pgpipe_cdc_drop(src, tgt, "ss", "ss", &err));
    PQfinish(s);
    pgt_db_close(t);
}

/* ---- a slot the source invalidated ------------------------------------ */

PGT_TEST(cdc, invalidated_slot_is_reported)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_lost", src, sizeof src, NULL);
    PGconn *t = pgt_db_fresh("cdc_lost_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_lost_t", pgt_dsn());
    PQclear(PGT_EXEC(s, "CREATE TABLE l (id int PRIMARY KEY, pad text)"));
    pgpipe_cdc *c = NULL;
    PGT_OK(cdc_open(&c, src, tgt, "cl", "l"));
    pgpipe_cdc_close(c);
    /* nobody reads it; the source keeps at most 1 MB of WAL for slots */
    PQclear(PGT_EXEC(s, "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'"));
    PQclear(PGT_EXEC(s, "SELECT pg_reload_conf()"));
    pgpipe_sleep_ms(200);
    for (int i = 0; i < 6; i++) {
        PQclear(PGT_EXEC(s, "INSERT INTO l SELECT g, repeat('w', 500) FROM generate_series(1, 5000) g "
                            "ON CONFLICT (id) DO UPDATE SET pad = excluded.pad || 'x'"));
        PQclear(PGT_EXEC(s, "SELECT pg_switch_wal()"));
        PQclear(PGT_EXEC(s, "CHECKPOINT"));
    }
    PQclear(PGT_EXEC(s, "ALTER SYSTEM RESET max_slot_wal_keep_size"));
    PQclear(PGT_EXEC(s, "SELECT pg_reload_conf()"));
    PGT_EQ_STR(pgt_db_str(s, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'cl'"), "lost");
    PGT_EQ_INT(cdc_open(&c, src, tgt, "cl", "l"), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(c), "slot \"cl\" was invalidated by the source");
    PGT_CONTAINS(pgpipe_errmsg(c), "max_slot_wal_keep_size");
    pgpipe_cdc_close(c);
    pgpipe_cdc_slot_info si;
    pgpipe_error err;
    PGT_OK(pgpipe_cdc_slot_info_get(src, "cl", &si, &err));
    PGT_EQ_STR(si.wal_status, "lost");
    PGT_OK(pgpipe_cdc_drop(src, tgt, "cl", "cl", &err));
    PQfinish(s);
    pgt_db_close(t);
}

/* ---- unchanged TOAST values filled from the row's last image ---------- */

/* big(k): 9,600 characters of md5 hex, distinct per k, that pglz cannot
** shrink, so they are stored out of line. */
#define CDC_BIG_FN "CREATE FUNCTION big(k int) RETURNS text LANGUAGE sql IMMUTABLE AS " \
    "$$ SELECT string_agg(md5(k || '-' || i), '' ORDER BY i) FROM generate_series(1, 300) i $$"

/* Of the update event whose row has name: its "big" is big(k) (k 0: it
** has none), and the columns it names "filled" and "unchanged". */
static void cdc_big_is(PGconn *t, const char *name, int k, const char *filled, const char *unchanged)
{
    char sql[768];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE payload->>'op' = 'update' "
             "AND payload->'row'->>'name' = '%s'", name);
    PGT_EQ_INT(pgt_db_int(t, sql), 1);
    snprintf(sql, sizeof sql, "SELECT concat_ws(' ', CASE WHEN payload->'row' ? 'big' THEN "
             "coalesce((SELECT k FROM generate_series(1, 9) k WHERE big(k) = payload->'row'->>'big'), -1) "
             "ELSE 0 END, coalesce(payload->>'filled', '-'), coalesce(payload->>'unchanged', '-')) "
             "FROM staging.raw_events WHERE payload->>'op' = 'update' AND payload->'row'->>'name' = '%s'",
             name);
    char want[128];
    snprintf(want, sizeof want, "%d %s %s", k, filled, unchanged);
    PGT_EQ_STR(pgt_db_str(t, sql), want);
}

PGT_TEST(cdc, toast_unchanged_filled_from_last_image)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_toast", src, sizeof src,
                              "options='-c logical_decoding_work_mem=64kB'");
    PGconn *t = pgt_db_fresh("cdc_toast_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_toast_t", pgt_dsn());
    PQclear(PGT_EXEC(s, CDC_BIG_FN));
    PQclear(PGT_EXEC(t, CDC_BIG_FN));
    PQclear(PGT_EXEC(s,
        "CREATE TABLE tt (id int PRIMARY KEY, name text, big text);"
        "CREATE TABLE ft (id int, name text, big text); ALTER TABLE ft REPLICA IDENTITY FULL;"
        "CREATE TABLE pad (id int PRIMARY KEY, v text);"
        /* before the slot: no image of row 1 is ever staged */
        "INSERT INTO tt VALUES (1, 'i1', big(1))"));
    pgpipe_cdc *c = NULL;
    int rc = cdc_open(&c, src, tgt, "tx", "tt, ft, pad");
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c));
    const char *steps[] = {
        "UPDATE tt SET name = 'u1' WHERE id = 1",                       /* no image: unchanged */
        "INSERT INTO tt VALUES (2, 'i2', big(2))",
        "UPDATE tt SET name = 'u2' WHERE id = 2",                       /* from the table */
        "BEGIN; UPDATE tt SET big = big(3), name = 'w3' WHERE id = 2;"  /* two in one transaction */
        "UPDATE tt SET name = 'u3' WHERE id = 2; COMMIT",
        "UPDATE tt SET id = 3, name = 'k3' WHERE id = 2",               /* key changed: the old key's */
        "UPDATE tt SET name = 'u4' WHERE id = 3",                       /* the new key's */
        "BEGIN; DELETE FROM tt WHERE id = 3; INSERT INTO tt VALUES (3, 'i3', big(4)); COMMIT",
        "UPDATE tt SET name = 'u5' WHERE id = 3",
        "DELETE FROM tt WHERE id = 3",
        "INSERT INTO tt VALUES (4, 'i4', big(5))",
        /* streamed while in progress (over 64 kB), a savepoint rolled back */
        "BEGIN; UPDATE tt SET big = big(6), name = 'w6' WHERE id = 4; SAVEPOINT a;"
        "UPDATE tt SET big = big(7), name = 'w7' WHERE id = 4;"
        "INSERT INTO pad SELECT g, repeat('p', 100) FROM generate_series(1, 2000) g; ROLLBACK TO a;"
        "INSERT INTO pad SELECT g, repeat('q', 100) FROM generate_series(1, 1000) g;"
        "UPDATE tt SET name = 'u6' WHERE id = 4; COMMIT",
        /* REPLICA IDENTITY FULL: from the old row */
        "INSERT INTO ft VALUES (1, 'i8', big(8))",
        "UPDATE ft SET name = 'u8'",
        "INSERT INTO tt VALUES (5, 'i5', big(9))",
        /* written again, too small to be out of line: forgotten */
        "UPDATE tt SET big = repeat('m', 100), name = 'w9' WHERE id = 4",
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        PQclear(PGT_EXEC(s, steps[i]));
    cdc_run_until(c, t, "tx", 1018);
    cdc_big_is(t, "u1", 0, "-", "[\"big\"]");
    cdc_big_is(t, "u2", 2, "[\"big\"]", "-");
    cdc_big_is(t, "w3", 3, "-", "-");
    cdc_big_is(t, "u3", 3, "[\"big\"]", "-");
    cdc_big_is(t, "k3", 3, "[\"big\"]", "-");
    cdc_big_is(t, "u4", 3, "[\"big\"]", "-");
    cdc_big_is(t, "u5", 4, "[\"big\"]", "-");
    cdc_big_is(t, "u6", 6, "[\"big\"]", "-");
    cdc_big_is(t, "u8", 8, "[\"big\"]", "-");
    /* what the target remembers: row 5's value; 2 moved to 3, 3 deleted,
    ** 4 written small */
    PGT_EQ_STR(pgt_db_str(t, "SELECT string_agg(table_name || key || col || coalesce((SELECT k FROM "
                             "generate_series(1, 9) k WHERE big(k) = value), -1), ' ') "
                             "FROM pgpipe.cdc_toast"), "public.tt{\"id\":5}big9");
    /* staged before: from the table (the ones above may come from the
    ** memory of the open group) */
    PQclear(PGT_EXEC(s, "UPDATE tt SET name = 'u10' WHERE id = 5"));
    cdc_run_until(c, t, "tx", 1019);
    cdc_big_is(t, "u10", 9, "[\"big\"]", "-");
    /* truncated: forgotten */
    PQclear(PGT_EXEC(s, "TRUNCATE tt"));
    cdc_run_until(c, t, "tx", 1020);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM pgpipe.cdc_toast"), 0);
    pgpipe_cdc_close(c);
    pgpipe_error err;
    PGT_OK(pgpipe_cdc_drop(src, tgt, "tx", "tx", &err));
    PQfinish(s);
    pgt_db_close(t);
}

PGT_TEST(cdc, toast_snapshot_rows_are_images)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_toast_snap", src, sizeof src, NULL);
    PGconn *t = pgt_db_fresh("cdc_toast_snap_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_toast_snap_t", pgt_dsn());
    PQclear(PGT_EXEC(s, CDC_BIG_FN));
    PQclear(PGT_EXEC(t, CDC_BIG_FN));
    PQclear(PGT_EXEC(s,
        "CREATE TABLE st (id int PRIMARY KEY, name text, big text);"
        "CREATE TABLE sk (a text, b int, name text, big text, PRIMARY KEY (a, b));"
        "INSERT INTO st VALUES (1, 'i1', big(1)), (2, 'i2', 'small'), (3, 'i3', repeat('z', 9000));"
        "INSERT INTO sk VALUES ('k''1', 7, 'i4', big(2))"));
    pgpipe_cdc_options o;
    pgpipe_cdc_options_init(&o);
    o.source = src;
    o.target = tgt;
    o.slot = o.publication = "tsn";
    o.tables = "st, sk";
    o.snapshot = 1;
    o.status_interval_ms = 100;
    pgpipe_cdc *c = NULL;
    int rc = pgpipe_cdc_open(&c, &o);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c));
    /* the rows whose values may be out of line, keyed as the stream keys
    ** them; repeat('z', 9000) compresses to a few bytes and stays inline */
    PGT_EQ_STR(pgt_db_str(t, "SELECT string_agg(table_name || key || col || coalesce((SELECT k FROM "
                             "generate_series(1, 9) k WHERE big(k) = value), -1), ' ' ORDER BY 1) "
                             "FROM pgpipe.cdc_toast"),
               "public.sk{\"a\":\"k'1\",\"b\":7}big2 public.st{\"id\":1}big1");
    PQclear(PGT_EXEC(s, "UPDATE st SET name = 'u1' WHERE id = 1; UPDATE sk SET name = 'u2'"));
    cdc_run_until(c, t, "tsn", 6);
    cdc_big_is(t, "u1", 1, "[\"big\"]", "-");
    cdc_big_is(t, "u2", 2, "[\"big\"]", "-");
    pgpipe_cdc_close(c);
    pgpipe_error err;
    PGT_OK(pgpipe_cdc_drop(src, tgt, "tsn", "tsn", &err));
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM pgpipe.cdc_toast"), 0);
    PQfinish(s);
    pgt_db_close(t);
}

/* The same changes staged through binary COPY rows (the default when
** staging's columns allow) and COPY text (PGPIPE_COPY_FORMAT=text), with
** one writer and with two (rows with their ids): the same rows, snapshot
** and stream, escapes in values and in table names, "\N" as text, NULLs,
** UTF-8, JSON with escapes, a spooled transaction, an unchanged TOAST
** value filled; and binary was used where it should be, text elsewhere. */
#define CDC_BIN_ROWS "SELECT count(*) || ' ' || md5(string_agg(x, E'\\n' ORDER BY x)) FROM " \
    "(SELECT event_type || ' ' || (CASE WHEN payload ? 'snapshot' THEN payload - 'lsn' " \
    "ELSE payload END)::text x FROM staging.raw_events) e"
PGT_TEST(cdc, binary_rows_read_the_same_as_text)
{
    char src[1200], tgt[4][1200];
    PGconn *s = cdc_src_fresh("cdc_bin", src, sizeof src,
                              "options='-c logical_decoding_work_mem=64kB'");
    PGconn *t[4];
    static const char *const slots[4] = { "cbin1", "ctxt1", "cbin2", "ctxt2" };
    PQclear(PGT_EXEC(s, CDC_BIG_FN));
    PQclear(PGT_EXEC(s,
        "CREATE TABLE t (id int PRIMARY KEY, v text, doc jsonb, big text);"
        "ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL;"
        "CREATE TABLE \"we\\ird\" (a int PRIMARY KEY, b text);"
        "CREATE TABLE \"t\tab\" (a int, b text); ALTER TABLE \"t\tab\" REPLICA IDENTITY FULL;"
        "INSERT INTO t VALUES (1, E'tab\\there\\nnl\\rcr back\\\\slash \\\\N', "
        "  '{\"k\": \"a\\\\b\\\"q\", \"u\": \"\\u00e9\xe2\x82\xac\xf0\x9f\x98\x80\", \"n\": null, "
        "    \"t\": \"x\\\\ty\"}', big(1)),"
        "  (2, '\\N', NULL, NULL), (3, '', '[]', 'h\xc3\xa9llo');"
        "INSERT INTO \"we\\ird\" VALUES (1, E'\\\\\\\\');"
        "INSERT INTO \"t\tab\" VALUES (1, E'a\\tb')"));
    for (int k = 0; k < 4; k++) {
        char q[160];
        snprintf(q, sizeof q, "CREATE PUBLICATION %s FOR TABLE t, \"we\\ird\", \"t\tab\"", slots[k]);
        PQclear(PGT_EXEC(s, q));
    }
    pgpipe_cdc *c[4] = { NULL, NULL, NULL, NULL };
    for (int k = 0; k < 4; k++) {
        char name[32];
        snprintf(name, sizeof name, "cdc_bin_t%d", k);
        t[k] = pgt_db_fresh(name);
        snprintf(tgt[k], sizeof tgt[k], "%s dbname=%s", pgt_dsn(), name);
        if (k % 2)
            setenv("PGPIPE_COPY_FORMAT", "text", 1);
        else
            unsetenv("PGPIPE_COPY_FORMAT");
        pgpipe_cdc_options o;
        pgpipe_cdc_options_init(&o);
        o.source = src;
        o.target = tgt[k];
        o.slot = o.publication = slots[k];
        o.snapshot = 1;
        o.writers = k < 2 ? 1 : 2;
        o.status_interval_ms = 100;
        int rc = pgpipe_cdc_open(&c[k], &o);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c[k]));
        PGT_EQ_INT(pgt_db_int(t[k], "SELECT count(*) FROM staging.raw_events"), 5);
    }
    const char *steps[] = {
        "INSERT INTO t VALUES (10, E'\\\\N\\t\\n\\r\\\\', '{\"a\": \"\\\\\\\\N\", \"b\": [\"\\\\t\", 1.50]}', "
        "  'x'), (11, NULL, 'null', NULL), (12, '\xf0\x9f\x98\x80', '\"s\\\\\\\\\"', big(2))",
        "UPDATE t SET v = 'u1' WHERE id = 1",                   /* big unchanged: filled */
        "UPDATE t SET id = 13 WHERE id = 12",
        "DELETE FROM t WHERE id = 2",
        "INSERT INTO \"we\\ird\" VALUES (2, E'\\t')", "UPDATE \"we\\ird\" SET b = NULL", /* 2 rows */
        "INSERT INTO \"t\tab\" VALUES (2, E'\\n')", "DELETE FROM \"t\tab\" WHERE a = 1",
        /* streamed while in progress (over 64 kB): spooled */
        "BEGIN; INSERT INTO t (id, v) SELECT g, repeat(E'\\\\s\\t', 40) || g FROM "
        "generate_series(100, 1099) g; UPDATE t SET v = E'in\\tstream' WHERE id = 3; COMMIT",
        "TRUNCATE \"t\tab\"",
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        PQclear(PGT_EXEC(s, steps[i]));
    const long long want = 5 + 3 + 1 + 1 + 1 + 1 + 2 + 1 + 1 + 1000 + 1 + 1;
    char rows[4][128];
    for (int k = 0; k < 4; k++) {
        if (k % 2)
            setenv("PGPIPE_COPY_FORMAT", "text", 1);
        else
            unsetenv("PGPIPE_COPY_FORMAT");
        cdc_run_until(c[k], t[k], slots[k], want);
        snprintf(rows[k], sizeof rows[k], "%s", pgt_db_str(t[k], CDC_BIN_ROWS));
        /* binary where the columns allow it, for the snapshot and each group */
        PGT_EQ_INT(atomic_load(&c[k]->n_bin_snapshots) > 0, k % 2 == 0);
        PGT_EQ_INT(atomic_load(&c[k]->n_bin_groups) > 0, k % 2 == 0);
        PGT_EQ_INT(atomic_load(&c[k]->n_bin_groups) == 0, k % 2 == 1);
        /* the values themselves, not only the same in both */
        static const struct { const char *where; int n; } vals[] = {
            { "payload->'row'->>'v' = E'tab\\there\\nnl\\rcr back\\\\slash \\\\N' AND "
              "payload->'row'->'doc'->>'k' = 'a\\b\"q' AND payload->'row'->'doc'->>'t' = 'x\\ty' AND "
              "payload->'row'->'doc'->>'u' = U&'\\00e9\\20ac\\+01f600' AND "
              "payload->'row'->>'big' = (SELECT string_agg(md5(1 || '-' || i), '' ORDER BY i) "
              "FROM generate_series(1, 300) i)", 1 },
            { "payload->'row'->>'v' = '\\N' AND payload->>'snapshot' = 'true'", 1 },
            { "payload->'row'->>'v' = E'\\\\N\\t\\n\\r\\\\'", 1 },
            { "payload->'row'->>'v' = 'u1' AND payload->'filled' = '[\"big\"]' AND "
              "length(payload->'row'->>'big') = 9600", 1 },
            { "payload->'row'->'doc' = '\"s\\\\\\\\\"'::jsonb", 2 },
            { "payload->'row'->'v' = 'null' AND payload->>'op' = 'insert'", 1 },
            { "payload->'row'->>'v' LIKE E'\\\\\\\\s\\t%'", 1000 },
            { "event_type IN (E'public.we\\\\ird:update', E'public.t\\tab:truncate', "
              "E'public.t\\tab:insert', E'public.t\\tab:delete')", 6 },
            { "payload->'row'->>'b' = E'\\\\\\\\' AND payload->>'snapshot' = 'true'", 1 },
        };
        for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
            char q[1024];
            snprintf(q, sizeof q, "SELECT count(*) FROM staging.raw_events WHERE %s", vals[i].where);
            int got = pgt_db_int(t[k], q);
            PGT_CHECK_MSG(got == vals[i].n, "slot %s, %s: %d rows, expected %d", slots[k],
                          vals[i].where, got, vals[i].n);
        }
        pgpipe_cdc_close(c[k]);
    }
    unsetenv("PGPIPE_COPY_FORMAT");
    for (int k = 1; k < 4; k++)
        PGT_EQ_STR(rows[k], rows[0]);
    for (int k = 0; k < 4; k++) {
        pgpipe_error err;
        PGT_OK(pgpipe_cdc_drop(src, tgt[k], slots[k], slots[k], &err));
        pgt_db_close(t[k]);
    }
    PQfinish(s);
}

/* staging.raw_events altered on the target while the stream runs (payload
** made json, so the server refuses the binary rows of the next group): not a
** failure of the run; it asks the format again and goes on in text from the
** applied LSN, one lane and two alike, and every change is staged once. */
PGT_TEST(cdc, staging_altered_to_json_goes_text)
{
    char src[1200], tgt[2][1200];
    PGconn *s = cdc_src_fresh("cdc_alt", src, sizeof src, NULL);
    static const char *const slots[2] = { "calt1", "calt2" };
    PQclear(PGT_EXEC(s, "CREATE TABLE t (id int PRIMARY KEY, v text);"
                        "CREATE PUBLICATION calt1 FOR TABLE t; CREATE PUBLICATION calt2 FOR TABLE t"));
    PGconn *t[2];
    pgpipe_cdc *c[2];
    for (int k = 0; k < 2; k++) {
        char name[32];
        snprintf(name, sizeof name, "cdc_alt_t%d", k);
        t[k] = pgt_db_fresh(name);
        snprintf(tgt[k], sizeof tgt[k], "%s dbname=%s", pgt_dsn(), name);
        pgpipe_cdc_options o;
        pgpipe_cdc_options_init(&o);
        o.source = src;
        o.target = tgt[k];
        o.slot = o.publication = slots[k];
        o.writers = k + 1;
        o.status_interval_ms = 100;
        c[k] = NULL;
        int rc = pgpipe_cdc_open(&c[k], &o);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c[k]));
    }
    PQclear(PGT_EXEC(s, "INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 10) g"));
    for (int k = 0; k < 2; k++) {
        cdc_run_until(c[k], t[k], slots[k], 10);
        PGT_CHECK(atomic_load(&c[k]->n_bin_groups) > 0);
        PQclear(PGT_EXEC(t[k], "ALTER TABLE staging.raw_events ALTER COLUMN payload TYPE json"));
    }
    PQclear(PGT_EXEC(s, "INSERT INTO t SELECT g, 'b' || g FROM generate_series(11, 20) g;"
                        "UPDATE t SET v = 'c' WHERE id <= 5"));
    for (int k = 0; k < 2; k++) {
        cdc_run_until(c[k], t[k], slots[k], 25);
        PGT_EQ_INT(c[k]->bin_ok, 0);
        PGT_EQ_INT(pgt_db_int(t[k], "SELECT count(DISTINCT (payload->>'lsn', payload->'row'->>'id', "
                                    "payload->'row'->>'v')) FROM staging.raw_events"), 25);
        PGT_EQ_INT(pgt_db_int(t[k], "SELECT count(*) FROM staging.raw_events WHERE "
                                    "payload->'row'->>'v' = 'b' || (payload->'row'->>'id')"), 10);
        pgpipe_cdc_close(c[k]);
        pgpipe_error err;
        PGT_OK(pgpipe_cdc_drop(src, tgt[k], slots[k], slots[k], &err));
        pgt_db_close(t[k]);
    }
    PQfinish(s);
}

/* The source is the staging database itself (one database for the app and
** the pipeline, publication for all tables): every event staged and every
** bookkeeping write was captured and staged again, without end (one insert
** gave thousands of events in seconds). pgpipe's own schemas are not
** captured from its own database; the app's tables are. */
PGT_TEST(cdc, source_is_the_staging_database)
{
    char db[1200];
    PGconn *s = cdc_src_fresh("cdc_self", db, sizeof db, NULL);
    pgt_db_install(s);
    PQclear(PGT_EXEC(s, "CREATE TABLE app (id int PRIMARY KEY, v text)"));
    pgpipe_cdc *c = NULL;
    int rc = cdc_open(&c, db, db, "cself", NULL);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c));
    PQclear(PGT_EXEC(s, "INSERT INTO app VALUES (1, 'a'), (2, 'b')"));
    cdc_run_until(c, s, "cself", 2);
    /* a quiet while: nothing of its own comes back */
    for (int i = 0; i < 10; i++)
        PGT_CHECK_MSG(pgpipe_cdc_run(c, 200) == PGPIPE_OK, "%s", pgpipe_errmsg(c));
    PQclear(PGT_EXEC(s, "UPDATE app SET v = 'c' WHERE id = 1"));
    cdc_run_until(c, s, "cself", 3);
    for (int i = 0; i < 5; i++)
        PGT_CHECK_MSG(pgpipe_cdc_run(c, 200) == PGPIPE_OK, "%s", pgpipe_errmsg(c));
    PGT_EQ_INT(pgt_db_int(s, "SELECT count(*) FROM staging.raw_events"), 3);
    PGT_EQ_STR(pgt_db_str(s, "SELECT string_agg(event_type, ',' ORDER BY id)"
                             " FROM staging.raw_events"),
               "public.app:insert,public.app:insert,public.app:update");
    /* a drop while the stream runs: refused, naming who holds the slot;
    ** right after the stream stopped it waits for the walsender to let go */
    pgpipe_error err;
    PGT_EQ_INT(pgpipe_cdc_drop(db, db, "cself", "cself", &err), PGPIPE_BUSY);
    PGT_CONTAINS(err.message, "is in use by the source's process");
    pgpipe_cdc_close(c);
    PGT_OK(pgpipe_cdc_drop(db, db, "cself", "cself", &err));
    PQfinish(s);
}
