/* Tests of the record store (src/pipeline/records.c). */

#include <sys/wait.h>

static pgpipe_pool *rec_t_pool(void)
{
    pgpipe_pool_options o;
    pgpipe_pool_options_init(&o);
    o.pool_size = 2;
    o.max_overflow = 2;
    pgpipe_pool *p;
    int rc = pgpipe_pool_open(&p, pgt_dsn(), &o);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", p ? pgpipe_errmsg(p) : "no memory");
    return p;
}

/* A fresh collection (dropped first). */
static pgpipe_records *rec_t_open(pgpipe_pool *p, const char *name)
{
    PGconn *c = pgt_connect();
    char sql[256];
    snprintf(sql, sizeof sql, "DROP TABLE IF EXISTS records.\"%s\"", name);
    PQclear(PQexec(c, sql));
    PQfinish(c);
    pgpipe_records *h;
    int rc = pgpipe_records_open(&h, p, name);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(h));
    return h;
}

static long long rec_t_scalar(const char *sql)
{
    PGconn *c = pgt_connect();
    PGresult *r = PGT_EXEC(c, sql);
    long long v = PQntuples(r) && !PQgetisnull(r, 0, 0) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    PQfinish(c);
    return v;
}

static long long rec_t_count(pgpipe_records *h, const char *where)
{
    pgpipe_records_filter *f;
    int rc = pgpipe_records_filter_open(&f, where);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s: %s", where, pgpipe_errmsg(f));
    long long n = -1;
    rc = pgpipe_records_count(h, f, &n);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s: %s", where, pgpipe_errmsg(h));
    pgpipe_records_filter_close(f);
    return n;
}

/* The ids' "n" fields of a search, joined by commas ("3,1,2"). */
static void rec_t_find(pgpipe_records *h, const char *where, const char *sort, long long limit,
                       long long offset, char *out, size_t size)
{
    pgpipe_records_find_options o;
    pgpipe_records_find_options_init(&o);
    o.where = where;
    o.sort = sort;
    o.limit = limit;
    o.offset = offset;
    pgpipe_records_cursor *cur;
    int rc = pgpipe_records_find(h, &o, &cur);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s: %s", where, pgpipe_errmsg(h));
    out[0] = '\0';
    const char *doc;
    pgpipe_json_doc *d;
    PGT_OK(pgpipe_json_doc_open(&d));
    while (pgpipe_records_cursor_next(cur, &doc, NULL) == PGPIPE_ROW) {
        PGT_CHECK_MSG(pgpipe_json_parse(d, doc, strlen(doc)) == PGPIPE_OK, "%s", doc);
        const pgpipe_json_val *n = pgpipe_json_path(pgpipe_json_root(d), "fields.n");
        size_t len = 0;
        const char *t = pgpipe_json_number_text(n, &len);
        size_t at = strlen(out);
        snprintf(out + at, size - at, "%s%.*s", at ? "," : "", (int)len, t ? t : "?");
    }
    pgpipe_json_doc_close(d);
    pgpipe_records_cursor_close(cur);
}

PGT_TEST(records, open_creates_table_indexes_trigger_idempotent)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_open(p, "rec_t_open");
    PGT_EQ_STR(pgpipe_records_table(h), "\"records\".\"rec_t_open\"");
    pgpipe_records_close(h);
    PGT_OK(pgpipe_records_open(&h, p, "rec_t_open")); /* again: nothing to do */
    pgpipe_records_close(h);
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM pg_indexes WHERE schemaname = 'records' AND "
                            "tablename = 'rec_t_open' AND indexdef LIKE '%USING gin (fields jsonb_path_ops)%'"), 1);
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM pg_indexes WHERE schemaname = 'records' AND "
                            "tablename = 'rec_t_open' AND indexdef LIKE '%USING gin (metadata jsonb_path_ops)%'"), 1);
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM pg_trigger WHERE tgrelid = "
                            "'records.rec_t_open'::regclass AND NOT tgisinternal"), 1);
    /* a table dropped by hand is created again on the next open */
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE records.rec_t_open"));
    PQfinish(c);
    PGT_OK(pgpipe_records_open(&h, p, "rec_t_open"));
    PGT_EQ_INT(rec_t_count(h, ""), 0);
    pgpipe_records_close(h);
    /* schema.name form */
    PGT_OK(pgpipe_records_open(&h, p, "rec_t_schema.things"));
    PGT_EQ_STR(pgpipe_records_table(h), "\"rec_t_schema\".\"things\"");
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

/* A collection never goes in pgpipe's schemas or the system's, and a table
** that exists must have the collection's shape: both refused, nothing made. */
PGT_TEST(records, open_refuses_reserved_schemas_and_other_tables)
{
    pgpipe_pool *p = rec_t_pool();
    const char *names[] = { "pgpipe.load_batches", "pgpipe.rec_t_new", "staging.raw_events",
                            "pg_catalog.pg_class", "pg_toast.x", "information_schema.tables",
                            "PGPIPE.rec_t_new" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        pgpipe_records *h;
        PGT_EQ_INT(pgpipe_records_open(&h, p, names[i]), PGPIPE_MISUSE);
        PGT_CONTAINS(pgpipe_errmsg(h), "reserved");
        pgpipe_records_close(h);
    }
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM pg_class WHERE relname = 'rec_t_new'"), 0);
    /* a table of another shape, and a view, are not collections */
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS records.rec_t_other; DROP VIEW IF EXISTS records.rec_t_view;"
                        "CREATE SCHEMA IF NOT EXISTS records;"
                        "CREATE TABLE records.rec_t_other (id uuid, fields text);"
                        "CREATE VIEW records.rec_t_view AS SELECT gen_random_uuid() AS id"));
    pgpipe_records *h;
    PGT_EQ_INT(pgpipe_records_open(&h, p, "rec_t_other"), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "is not a collection (its columns of those: fields text, id uuid;");
    pgpipe_records_close(h);
    PGT_EQ_INT(pgpipe_records_open(&h, p, "rec_t_view"), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "is not a collection (not a table;");
    pgpipe_records_close(h);
    PQclear(PGT_EXEC(c, "DROP TABLE records.rec_t_other; DROP VIEW records.rec_t_view"));
    PQfinish(c);
    /* a collection made by open opens again */
    h = rec_t_open(p, "rec_t_shape");
    pgpipe_records_close(h);
    PGT_OK(pgpipe_records_open(&h, p, "rec_t_shape"));
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

PGT_TEST(records, concurrent_first_open)
{
    /* four processes open the same new collection at the same moment */
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS records.rec_t_race;"
                        "DROP SCHEMA IF EXISTS rec_t_race_s CASCADE"));
    PQfinish(c);
    int64_t start = pgpipe_now_us() + 300000;
    pid_t kids[4];
    for (int i = 0; i < 4; i++) {
        kids[i] = fork();
        PGT_CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            pgpipe_pool *p;
            if (pgpipe_pool_open(&p, pgt_dsn(), NULL) != PGPIPE_OK)
                _exit(2);
            while (pgpipe_now_us() < start)
                ;
            pgpipe_records *h;
            int rc = pgpipe_records_open(&h, p, i % 2 ? "rec_t_race" : "rec_t_race_s.c");
            if (rc != PGPIPE_OK)
                fprintf(stderr, "    child %d: %s\n", i, pgpipe_errmsg(h));
            char id[37];
            if (rc == PGPIPE_OK)
                rc = pgpipe_records_create(h, "{\"a\":1}", id);
            pgpipe_records_close(h);
            pgpipe_pool_close(p, NULL);
            _exit(rc == PGPIPE_OK ? 0 : 1);
        }
    }
    for (int i = 0; i < 4; i++) {
        int st;
        PGT_CHECK(waitpid(kids[i], &st, 0) == kids[i]);
        PGT_CHECK_MSG(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d failed", i);
    }
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM records.rec_t_race"), 2);
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM rec_t_race_s.c"), 2);
}

PGT_TEST(records, crud)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_open(p, "rec_t_crud");
    char id[37];
    PGT_OK(pgpipe_records_create(h, "{\"name\":\"Alice\",\"age\":31,\"tags\":[\"a\"]}", id));
    PGT_CHECK(rec_is_uuid(id));
    char *doc = NULL;
    PGT_OK(pgpipe_records_get(h, id, &doc));
    PGT_CONTAINS(doc, "\"fields\":{\"age\": 31, \"name\": \"Alice\", \"tags\": [\"a\"]}");
    PGT_CONTAINS(doc, "\"metadata\":{}");
    PGT_CONTAINS(doc, id);
    pgpipe_json_doc *d;
    PGT_OK(pgpipe_json_doc_open(&d));
    PGT_OK(pgpipe_json_parse(d, doc, strlen(doc)));
    const pgpipe_json_val *root = pgpipe_json_root(d);
    PGT_EQ_INT(pgpipe_json_len(root), 5);
    PGT_CHECK(pgpipe_json_type(pgpipe_json_path(root, "created_at")) == PGPIPE_JSON_STRING);
    PGT_CHECK(pgpipe_json_type(pgpipe_json_path(root, "updated_at")) == PGPIPE_JSON_STRING);
    pgpipe_free(doc);

    /* merge keeps other keys; replace drops them; updated_at moves on */
    PGT_OK(pgpipe_records_update(h, id, "{\"age\":32,\"city\":\"Paris\"}", PGPIPE_RECORDS_MERGE));
    PGT_OK(pgpipe_records_get(h, id, &doc));
    PGT_CONTAINS(doc, "{\"age\": 32, \"city\": \"Paris\", \"name\": \"Alice\", \"tags\": [\"a\"]}");
    pgpipe_free(doc);
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM records.rec_t_crud WHERE updated_at > created_at"), 1);
    PGT_OK(pgpipe_records_update(h, id, "{\"only\":true}", PGPIPE_RECORDS_REPLACE));
    PGT_OK(pgpipe_records_update(h, id, "{\"v\":\"2.0\"}", PGPIPE_RECORDS_MERGE | PGPIPE_RECORDS_METADATA));
    PGT_OK(pgpipe_records_get(h, id, &doc));
    PGT_CONTAINS(doc, "\"fields\":{\"only\": true},\"metadata\":{\"v\": \"2.0\"}");
    pgpipe_free(doc);
    /* the trigger also covers UPDATEs made by hand */
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "UPDATE records.rec_t_crud SET updated_at = '2000-01-01'"));
    PQclear(PGT_EXEC(c, "UPDATE records.rec_t_crud SET fields = '{}'"));
    PQfinish(c);
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM records.rec_t_crud WHERE updated_at > '2001-01-01'"), 1);

    /* count, delete, not found */
    char id2[37];
    PGT_OK(pgpipe_records_create_meta(h, "{}", "{\"source\":\"test\"}", id2));
    long long n;
    PGT_OK(pgpipe_records_count(h, NULL, &n));
    PGT_EQ_INT(n, 2);
    PGT_OK(pgpipe_records_delete(h, id));
    PGT_EQ_INT(pgpipe_records_delete(h, id), PGPIPE_DONE);
    PGT_CONTAINS(pgpipe_errmsg(h), id);
    PGT_EQ_INT(pgpipe_records_get(h, id, &doc), PGPIPE_DONE);
    PGT_CHECK(doc == NULL);
    PGT_EQ_INT(pgpipe_records_update(h, id, "{}", 0), PGPIPE_DONE);
    PGT_OK(pgpipe_records_count(h, NULL, &n));
    PGT_EQ_INT(n, 1);

    /* bad input: not a UUID, not JSON, not an object */
    PGT_EQ_INT(pgpipe_records_get(h, "42", &doc), PGPIPE_PARSE);
    PGT_EQ_INT(pgpipe_records_create(h, "{\"a\":1,}", id), PGPIPE_PARSE);
    PGT_EQ_INT(pgpipe_errinfo(h)->column, 8);
    PGT_CONTAINS(pgpipe_errmsg(h), "column 8");
    PGT_EQ_INT(pgpipe_records_create(h, "[1]", id), PGPIPE_PARSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "expected a JSON object");
    PGT_EQ_INT(pgpipe_records_create(h, "{\"a\":\"x\\u0000y\"}", id), PGPIPE_PARSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "\\u0000");
    PGT_EQ_INT(pgpipe_records_create(h, "{\"ok\":\"\\\\u0000 is text\"}", id), PGPIPE_OK);
    /* a cached statement runs prepared */
    PGT_EQ_INT(rec_t_scalar("SELECT 1"), 1);
    pgpipe_records_close(h);

    pgpipe_records *bad;
    PGT_EQ_INT(pgpipe_records_open(&bad, p, "x\"; DROP TABLE t; --"), PGPIPE_MISUSE);
    pgpipe_records_close(bad);
    PGT_EQ_INT(pgpipe_records_open(&bad, p, ""), PGPIPE_MISUSE);
    pgpipe_records_close(bad);
    PGT_EQ_INT(pgpipe_records_open(&bad, p, "a.b.c"), PGPIPE_MISUSE);
    pgpipe_records_close(bad);
    pgpipe_pool_close(p, NULL);
}

PGT_TEST(records, statements_are_prepared_and_cached)
{
    pgpipe_pool_options o;
    pgpipe_pool_options_init(&o);
    o.pool_size = 1;
    o.max_overflow = 0;
    pgpipe_pool *p;
    PGT_OK(pgpipe_pool_open(&p, pgt_dsn(), &o));
    pgpipe_records *h = rec_t_open(p, "rec_t_prep");
    char id[37];
    for (int i = 0; i < 3; i++)
        PGT_OK(pgpipe_records_create(h, "{\"a\":1}", id));
    PGT_EQ_INT(rec_t_count(h, "a = 1"), 3);
    /* the one connection of the pool holds the prepared INSERT, used 3 times */
    pgpipe_conn *c;
    PGT_OK(pgpipe_pool_acquire(p, &c));
    PGresult *r = PQexec(pgpipe_conn_pg(c), "SELECT count(*) FROM pg_prepared_statements "
                                            "WHERE statement LIKE 'INSERT INTO \"records\".\"rec_t_prep\"%'");
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    pgpipe_pool_release(c);
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

PGT_TEST(records, create_batch)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_open(p, "rec_t_batch");
    enum { N = 2000 };
    static char text[N][64];
    const char *docs[N];
    for (int i = 0; i < N; i++) {
        snprintf(text[i], sizeof text[i], "{\"n\":%d,\"s\":\"tab\\there\\\\\"}", i);
        docs[i] = text[i];
    }
    static char ids[N][37];
    PGT_OK(pgpipe_records_create_batch(h, docs, N, ids));
    PGT_EQ_INT(rec_t_count(h, ""), N);
    char *doc;
    PGT_OK(pgpipe_records_get(h, ids[1234], &doc));
    PGT_CONTAINS(doc, "\"n\": 1234");
    PGT_CONTAINS(doc, "\"s\": \"tab\\there\\\\\"");
    pgpipe_free(doc);
    /* without ids: the server makes them */
    PGT_OK(pgpipe_records_create_batch(h, docs, 10, NULL));
    PGT_EQ_INT(rec_t_count(h, "n = 5"), 2);
    /* one bad document: nothing is stored, the error names it */
    docs[7] = "{\"n\": }";
    PGT_EQ_INT(pgpipe_records_create_batch(h, docs, 10, NULL), PGPIPE_PARSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "document 7");
    PGT_EQ_STR(pgpipe_errinfo(h)->source, "document 7");
    PGT_EQ_INT(pgpipe_errinfo(h)->column, 7);
    PGT_EQ_INT(rec_t_count(h, ""), N + 10);
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

static pgpipe_records *rec_t_people(pgpipe_pool *p, const char *name)
{
    pgpipe_records *h = rec_t_open(p, name);
    const char *docs[] = {
        "{\"n\":1,\"name\":\"Alice\",\"age\":30,\"tags\":[\"x\",\"y\"],\"address\":{\"city\":\"Paris\"},\"code\":\"10\"}",
        "{\"n\":2,\"name\":\"Bob\",\"age\":9,\"tags\":[\"y\"],\"address\":{\"city\":\"Lyon\"},\"code\":\"9\"}",
        "{\"n\":3,\"name\":\"alice\",\"age\":\"10\",\"tags\":[],\"address\":{\"city\":\"Paris\",\"zip\":\"75001\"},\"first.name\":\"Al\"}",
        "{\"n\":4,\"name\":\"Carol\",\"age\":100,\"email\":null,\"code\":\"abc\"}",
        "{\"n\":5,\"name\":\"Dan\",\"age\":45.5,\"active\":true,\"tags\":[\"x\"]}",
    };
    for (int i = 0; i < 5; i++) {
        char id[37];
        const char *meta = i < 2 ? "{\"version\":\"2.0\"}" : i < 4 ? "{\"version\":\"10.1\"}" : NULL;
        PGT_OK(pgpipe_records_create_meta(h, docs[i], meta, id));
    }
    return h;
}

PGT_TEST(records, filters)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_people(p, "rec_t_filters");
    char out[256];
#define REC_T_FIND(where, sort, want) do { \
        rec_t_find(h, where, sort, -1, 0, out, sizeof out); \
        PGT_CHECK_MSG(strcmp(out, want) == 0, "%s: got \"%s\", want \"%s\"", where, out, want); \
    } while (0)
    REC_T_FIND("name = \"Alice\"", "n", "1");
    REC_T_FIND("name == \"Alice\"", "n", "1");
    REC_T_FIND("name ilike \"alice\"", "n", "1,3");
    REC_T_FIND("name like \"%li%\"", "n", "1,3");
    REC_T_FIND("name != \"Alice\"", "n", "2,3,4,5");
    /* numbers: numeric when both sides are numbers, so 10 > 9 and "10" > "9" */
    REC_T_FIND("age > 9", "n", "1,3,4,5");
    REC_T_FIND("age >= 30", "n", "1,4,5");
    REC_T_FIND("age < 10", "n", "2");
    REC_T_FIND("age le 10", "n", "2,3");
    REC_T_FIND("age = 10", "n", "3");
    REC_T_FIND("age = 45.50", "n", "5");
    REC_T_FIND("code > \"9\"", "n", "1,4");   /* "10" > "9" numerically; "abc" > "9" as text */
    REC_T_FIND("code < 10", "n", "2");
    REC_T_FIND("name > \"B\"", "n", "2,3,4,5"); /* text, byte order: "alice" > "B" */
    REC_T_FIND("age in [9, 100, \"45.5\"]", "n", "2,4,5");
    REC_T_FIND("name in [\"Bob\", \"Dan\"]", "n", "2,5");
    REC_T_FIND("email exists", "n", "4");
    REC_T_FIND("address.zip exists", "n", "3");
    REC_T_FIND("email = null", "n", "4");
    REC_T_FIND("email != null", "n", "1,2,3,5");
    REC_T_FIND("active = true", "n", "5");
    REC_T_FIND("tags contains [\"x\"]", "n", "1,5");
    REC_T_FIND("tags = [\"y\"]", "n", "2");
    REC_T_FIND("tags.0 = \"x\"", "n", "1,5");
    REC_T_FIND("address contains {\"city\":\"Paris\"}", "n", "1,3");
    REC_T_FIND("address.city = \"Paris\" and age > 20", "n", "1");
    REC_T_FIND("address.city = \"Paris\" && n != 1", "n", "3");
    REC_T_FIND("\"first.name\" = \"Al\"", "n", "3");
    REC_T_FIND("@fields contains {\"name\":\"Bob\"}", "n", "2");
    REC_T_FIND("@metadata.version = \"2.0\"", "n", "1,2");
    REC_T_FIND("@metadata.version > \"9\"", "n", "3,4"); /* 10.1 > 9 numerically */
    REC_T_FIND("@metadata contains {\"version\":\"10.1\"}", "n", "3,4");
    REC_T_FIND("nosuch = 1", "n", "");
    REC_T_FIND("NAME = \"Alice\"", "n", ""); /* keys are case-sensitive, words are not */
    REC_T_FIND("name EQ \"Alice\" AND age GT 1", "n", "1");
    /* sorting, limit, offset */
    REC_T_FIND("", "age", "3,2,1,5,4");  /* jsonb order: strings before numbers */
    REC_T_FIND("", "-n", "5,4,3,2,1");
    REC_T_FIND("", NULL, "1,2,3,4,5");
    REC_T_FIND("", "@created_at", "1,2,3,4,5");
    REC_T_FIND("code exists", "code", "1,2,4");
    REC_T_FIND("code exists", "-code", "4,2,1");
    rec_t_find(h, "", "n", 2, 1, out, sizeof out);
    PGT_EQ_STR(out, "2,3");
    rec_t_find(h, "", "-n", 10, 3, out, sizeof out);
    PGT_EQ_STR(out, "2,1");
    /* the C builder, with raw keys */
    pgpipe_records_filter *f;
    PGT_OK(pgpipe_records_filter_open(&f, NULL));
    const char *keys[] = { "first.name" };
    PGT_OK(pgpipe_records_filter_add_keys(f, 0, keys, 1, PGPIPE_RECORDS_EXISTS, NULL));
    long long n;
    PGT_OK(pgpipe_records_count(h, f, &n));
    PGT_EQ_INT(n, 1);
    PGT_OK(pgpipe_records_filter_add(f, "address.city", PGPIPE_RECORDS_IN, "[\"Paris\"]"));
    PGT_EQ_INT(pgpipe_records_filter_count(f), 2);
    PGT_OK(pgpipe_records_count(h, f, &n));
    PGT_EQ_INT(n, 1);
    PGT_EQ_INT(pgpipe_records_filter_add(f, "age", PGPIPE_RECORDS_GT, "[1]"), PGPIPE_PARSE);
    PGT_EQ_INT(pgpipe_records_filter_add(f, "age", PGPIPE_RECORDS_EXISTS, "1"), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_records_filter_add(f, "age", 99, "1"), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_records_filter_add(f, "age", PGPIPE_RECORDS_EQ, "{bad"), PGPIPE_PARSE);
    pgpipe_records_filter_close(f);
    /* a bad sort path */
    pgpipe_records_find_options o;
    pgpipe_records_find_options_init(&o);
    o.sort = "a b";
    pgpipe_records_cursor *cur;
    PGT_EQ_INT(pgpipe_records_find(h, &o, &cur), PGPIPE_PARSE);
    PGT_CHECK(cur == NULL);
    PGT_CONTAINS(pgpipe_errmsg(h), "column 2");
#undef REC_T_FIND
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

PGT_TEST(records, filter_parse_errors_have_columns)
{
    static const struct { const char *text; long long col; const char *msg; } cases[] = {
        { "name", 5, "expected an operator" },
        { "name = Alice", 8, "expected a JSON value" },
        { "name = \"Alice\" age > 3", 16, "expected \"and\"" },
        { "name = \"Alice\" and", 19, "expected a condition" },
        { "age > [1,2", 11, "bad value" },
        { "age in 3", 8, "in needs a JSON array" },
        { "age > {\"a\":1}", 7, "need a string, number" },
        { "tags contains [1,]", 18, "bad value" },
        { "@other.x = 1", 1, "unknown column" },
        { "\"unterminated = 1", 1, "unterminated" },
        { "a..b = 1", 3, "expected a field name" },
        { "é = 1", 1, "expected a field name" },
        { "\"é\" = 1 and x ~ 2", 15, "expected an operator" },
        { "name like 3", 11, "like needs a string" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pgpipe_records_filter *f;
        int rc = pgpipe_records_filter_open(&f, cases[i].text);
        PGT_CHECK_MSG(rc == PGPIPE_PARSE, "%s: rc %d", cases[i].text, rc);
        const pgpipe_error *e = pgpipe_errinfo(f);
        PGT_CHECK_MSG(e->column == cases[i].col, "%s: column %lld, want %lld (%s)", cases[i].text,
                      e->column, cases[i].col, e->message);
        PGT_CONTAINS(e->message, cases[i].msg);
        PGT_EQ_STR(e->source, "<filter>");
        pgpipe_records_filter_close(f);
    }
    pgpipe_records_filter *f;
    PGT_OK(pgpipe_records_filter_open(&f, "  "));
    PGT_EQ_INT(pgpipe_records_filter_count(f), 0);
    pgpipe_records_filter_close(f);
    PGT_OK(pgpipe_records_filter_open(&f, "a.\"b.c\".d-e = -1.5e3 and x exists and y in []"));
    PGT_EQ_INT(pgpipe_records_filter_count(f), 3);
    PGT_EQ_INT(f->c[0].nkeys, 3);
    PGT_EQ_STR(f->c[0].keys[1], "b.c");
    PGT_EQ_STR(f->c[0].keys[2], "d-e");
    PGT_EQ_INT(f->c[0].vnumeric, 1);
    pgpipe_records_filter_close(f);
}

PGT_TEST(records, containment_uses_gin_index)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_open(p, "rec_t_gin");
    enum { N = 50000, B = 5000 };
    static char text[B][96];
    const char *docs[B];
    for (int base = 0; base < N; base += B) {
        for (int i = 0; i < B; i++) {
            int k = base + i;
            snprintf(text[i], sizeof text[i],
                     "{\"n\":%d,\"kind\":\"k%d\",\"user\":{\"name\":\"u%d\"},\"tags\":[\"t%d\"]%s}",
                     k, k % 1000, k, k % 50, k % 1000 ? "" : ",\"rare\":1");
            docs[i] = text[i];
        }
        PGT_OK(pgpipe_records_create_batch(h, docs, B, NULL));
    }
    PQclear(PGT_EXEC(pgt_connect(), "ANALYZE records.rec_t_gin"));
    pgpipe_records_find_options o;
    pgpipe_records_find_options_init(&o);
    char *plan;
    static const char *const wheres[] = {
        "kind contains \"k7\"", "user contains {\"name\":\"u123\"}", "kind = \"k42\"",
        "user.name = \"u77\"", "@fields contains {\"tags\":[\"t3\"]}",
    };
    for (size_t i = 0; i < sizeof wheres / sizeof wheres[0]; i++) {
        o.where = wheres[i];
        PGT_OK(pgpipe_records_explain(h, &o, &plan));
        PGT_CHECK_MSG(strstr(plan, "Bitmap Index Scan on rec_t_gin_fields_gin") != NULL,
                      "%s:\n%s", wheres[i], plan);
        pgpipe_free(plan);
    }
    PGT_EQ_INT(rec_t_count(h, "kind = \"k42\""), 50);
    PGT_EQ_INT(rec_t_count(h, "user.name = \"u77\""), 1);
    PGT_EQ_INT(rec_t_count(h, "tags contains [\"t3\"]"), 1000);
    PGT_EQ_INT(rec_t_count(h, "n >= 49990"), 10);
    /* exists works (by a scan: jsonb_path_ops does not index key existence) */
    PGT_EQ_INT(rec_t_count(h, "rare exists"), 50);
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM pg_indexes WHERE tablename = 'rec_t_gin' AND "
                            "indexdef LIKE '%jsonb_path_ops%'"), 2);
    /* and the metadata index serves @metadata containment */
    o.where = "@metadata contains {\"v\":1}";
    PGT_OK(pgpipe_records_explain(h, &o, &plan));
    PGT_CHECK_MSG(strstr(plan, "Bitmap Index Scan on rec_t_gin_metadata_gin") != NULL, "%s", plan);
    pgpipe_free(plan);
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

PGT_TEST(records, injection_is_inert)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_people(p, "rec_t_inject");
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS rec_t_canary; CREATE TABLE rec_t_canary (x int);"
                        "INSERT INTO rec_t_canary VALUES (1)"));
    static const char *const evil[] = {
        "'; DROP TABLE rec_t_canary; --",
        "\"); DROP TABLE rec_t_canary; --",
        "x' OR '1'='1",
        "}'::jsonb; DROP TABLE rec_t_canary; --",
        "a\\\",\"b",
        "$1; DROP TABLE rec_t_canary",
        "{\"a\"} = 1; DELETE FROM records.rec_t_inject",
    };
    int ops[] = { PGPIPE_RECORDS_EQ, PGPIPE_RECORDS_NE, PGPIPE_RECORDS_GT, PGPIPE_RECORDS_LIKE,
                  PGPIPE_RECORDS_CONTAINS, PGPIPE_RECORDS_EXISTS, PGPIPE_RECORDS_IN };
    pgpipe_json_doc *jd;
    PGT_OK(pgpipe_json_doc_open(&jd));
    for (size_t i = 0; i < sizeof evil / sizeof evil[0]; i++) {
        /* as a key (raw and quoted in the text form), as a value, as a sort path */
        pp_buf quoted = { 0 }, val = { 0 };
        PGT_OK(pp_json_str(&quoted, evil[i], strlen(evil[i]), 0));
        pp_buf_putc(&quoted, '\0');
        pp_buf_appendf(&val, "[%s]", quoted.data);
        for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
            pgpipe_records_filter *f;
            PGT_OK(pgpipe_records_filter_open(&f, NULL));
            const char *keys[2] = { evil[i], "n" };
            int op = ops[k];
            const char *v = op == PGPIPE_RECORDS_EXISTS ? NULL
                            : op == PGPIPE_RECORDS_IN ? val.data : quoted.data;
            PGT_OK(pgpipe_records_filter_add_keys(f, (int)(k & 1), keys, 2, op, v));
            PGT_OK(pgpipe_records_filter_add(f, "name", op, v));
            long long n = -1;
            PGT_OK(pgpipe_records_count(h, f, &n));
            PGT_EQ_INT(n, op == PGPIPE_RECORDS_NE ? 5 : 0); /* != matches missing fields */
            pgpipe_records_filter_close(f);
        }
        pp_buf text = { 0 };
        pp_buf_appendf(&text, "%s = %s and name in %s", quoted.data, quoted.data, val.data);
        pp_buf_putc(&text, '\0');
        PGT_EQ_INT(rec_t_count(h, text.data), 0);
        char out[64];
        rec_t_find(h, "", quoted.data, -1, 0, out, sizeof out);
        PGT_EQ_INT(strlen(out), 9); /* all five (in id order: the key is missing) */
        /* raw (unquoted) text is a parse error, never SQL */
        pgpipe_records_filter *f;
        PGT_CHECK(pgpipe_records_filter_open(&f, evil[i]) == PGPIPE_PARSE);
        pgpipe_records_filter_close(f);
        /* as an id, and as a collection name */
        char *doc;
        PGT_EQ_INT(pgpipe_records_get(h, evil[i], &doc), PGPIPE_PARSE);
        PGT_EQ_INT(pgpipe_records_delete(h, evil[i]), PGPIPE_PARSE);
        pgpipe_records *bad;
        PGT_EQ_INT(pgpipe_records_open(&bad, p, evil[i]), PGPIPE_MISUSE);
        pgpipe_records_close(bad);
        /* as stored data */
        char id[37];
        pp_buf rec = { 0 };
        pp_buf_appendf(&rec, "{%s:%s}", quoted.data, quoted.data);
        pp_buf_putc(&rec, '\0');
        PGT_OK(pgpipe_records_create(h, rec.data, id));
        pp_buf_free(&rec);
        PGT_OK(pgpipe_records_filter_open(&f, NULL));
        const char *keys[1] = { evil[i] };
        PGT_OK(pgpipe_records_filter_add_keys(f, 0, keys, 1, PGPIPE_RECORDS_EQ, quoted.data));
        long long n = -1;
        PGT_OK(pgpipe_records_count(h, f, &n));
        PGT_EQ_INT(n, 1); /* the evil text is data: it matches itself exactly */
        pgpipe_records_filter_close(f);
        PGT_OK(pgpipe_records_delete(h, id));
        pp_buf_free(&quoted);
        pp_buf_free(&val);
        pp_buf_free(&text);
    }
    pgpipe_json_doc_close(jd);
    PGT_EQ_INT(rec_t_count(h, ""), 5);
    PGresult *r = PGT_EXEC(c, "SELECT x FROM rec_t_canary");
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    PQclear(PGT_EXEC(c, "DROP TABLE rec_t_canary"));
    PQfinish(c);
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

static int rec_t_tx_ok(pgpipe_records *h, void *ud)
{
    char id[37];
    (void)ud;
    int rc = pgpipe_records_create(h, "{\"tx\":\"ok\"}", id);
    return rc ? rc : pgpipe_records_create(h, "{\"tx\":\"ok\"}", id);
}

static int rec_t_tx_fail(pgpipe_records *h, void *ud)
{
    char id[37];
    (void)ud;
    int rc = pgpipe_records_create(h, "{\"tx\":\"fail\"}", id);
    if (rc)
        return rc;
    return PGPIPE_ERROR; /* the callback's own decision */
}

static int rec_t_tx_dberr(pgpipe_records *h, void *ud)
{
    char id[37];
    (void)ud;
    int rc = pgpipe_records_create(h, "{\"tx\":\"dberr\"}", id);
    if (rc)
        return rc;
    /* a statement that fails inside the transaction: a duplicate primary key */
    PGresult *r = PQexec(pgpipe_conn_pg(h->tx), "SELECT 1");
    PQclear(r);
    pgpipe_records_find_options o;
    pgpipe_records_find_options_init(&o);
    o.sort = "@id";
    o.where = "tx = \"dberr\"";
    o.limit = 1;
    pgpipe_records_cursor *cur;
    if ((rc = pgpipe_records_find(h, &o, &cur)) != PGPIPE_OK)
        return rc;
    const char *doc;
    pgpipe_records_cursor_next(cur, &doc, NULL);
    char dup[128];
    snprintf(dup, sizeof dup, "{\"id\":\"%.36s\",\"fields\":{}}", doc + 7);
    pgpipe_records_cursor_close(cur);
    /* COPY of a document with an id that exists */
    const char *path = ud;
    FILE *fp = fopen(path, "w");
    fprintf(fp, "%s\n", dup);
    fclose(fp);
    pgpipe_records_import_options io;
    pgpipe_records_import_options_init(&io);
    io.documents = 1;
    return pgpipe_records_import(h, path, &io, NULL);
}

PGT_TEST(records, transactions)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_open(p, "rec_t_tx");
    char id[37];
    PGT_OK(pgpipe_records_begin(h));
    PGT_EQ_INT(pgpipe_records_in_transaction(h), 1);
    PGT_EQ_INT(pgpipe_records_begin(h), PGPIPE_MISUSE);
    PGT_OK(pgpipe_records_create(h, "{\"a\":1}", id));
    PGT_EQ_INT(rec_t_count(h, ""), 1);  /* visible inside */
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM records.rec_t_tx"), 0); /* not outside */
    PGT_OK(pgpipe_records_rollback(h));
    PGT_EQ_INT(pgpipe_records_in_transaction(h), 0);
    PGT_EQ_INT(rec_t_count(h, ""), 0);
    PGT_EQ_INT(pgpipe_records_commit(h), PGPIPE_MISUSE);

    PGT_OK(pgpipe_records_begin(h));
    PGT_OK(pgpipe_records_create(h, "{\"a\":2}", id));
    PGT_OK(pgpipe_records_update(h, id, "{\"b\":3}", 0));
    const char *docs[2] = { "{\"a\":3}", "{\"a\":4}" };
    PGT_OK(pgpipe_records_create_batch(h, docs, 2, NULL));
    PGT_OK(pgpipe_records_commit(h));
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM records.rec_t_tx"), 3);

    /* a failed statement makes commit roll back */
    PGT_OK(pgpipe_records_begin(h));
    PGT_OK(pgpipe_records_create(h, "{\"a\":5}", id));
    PGT_EQ_INT(pgpipe_records_count(h, NULL, NULL) == PGPIPE_OK, 1);
    PGresult *r = PQexec(pgpipe_conn_pg(h->tx), "SELECT 1/0");
    PQclear(r);
    PGT_EQ_INT(pgpipe_records_create(h, "{\"a\":6}", id), PGPIPE_DB);
    PGT_EQ_STR(pgpipe_errsqlstate(h), "25P02");
    PGT_EQ_INT(pgpipe_records_commit(h), PGPIPE_DB);
    PGT_CONTAINS(pgpipe_errmsg(h), "rolled back");
    PGT_EQ_INT(rec_t_count(h, ""), 3);

    /* the callback helper */
    PGT_OK(pgpipe_records_transaction(h, rec_t_tx_ok, NULL));
    PGT_EQ_INT(rec_t_count(h, "tx = \"ok\""), 2);
    PGT_EQ_INT(pgpipe_records_transaction(h, rec_t_tx_fail, NULL), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(h), "rolled back");
    PGT_EQ_INT(rec_t_count(h, "tx = \"fail\""), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/rec_t_tx_dup.ndjson", pgt_tmpdir());
    PGT_EQ_INT(pgpipe_records_transaction(h, rec_t_tx_dberr, path), PGPIPE_DB);
    PGT_EQ_STR(pgpipe_errsqlstate(h), "23505");
    PGT_EQ_INT(rec_t_count(h, "tx = \"dberr\""), 0);
    PGT_EQ_INT(pgpipe_records_in_transaction(h), 0);
    PGT_EQ_INT(rec_t_count(h, ""), 5);
    unlink(path);

    /* close with an open transaction rolls it back and returns the connection */
    PGT_OK(pgpipe_records_begin(h));
    PGT_OK(pgpipe_records_create(h, "{\"left\":1}", id));
    pgpipe_records_close(h);
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM records.rec_t_tx WHERE fields ? 'left'"), 0);
    int leaked = -1;
    PGT_OK(pgpipe_pool_close(p, &leaked));
    PGT_EQ_INT(leaked, 0);
}

static void rec_t_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

typedef struct rec_t_errs {
    int n;
    char first[1400];
} rec_t_errs;

static int rec_t_on_error(void *ud, const pgpipe_error *e)
{
    rec_t_errs *x = ud;
    if (x->n++ == 0)
        pgpipe_error_format(e, x->first, sizeof x->first);
    return 0;
}

/* A record the database refuses in a documents import (a duplicate id, a
** created_at that is no timestamp) fails the import with an error that
** names the file and the record's line and column (COPY's row mapped back). */
PGT_TEST(records, import_database_error_names_the_record)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_open(p, "rec_t_imperr");
    char path[512];
    snprintf(path, sizeof path, "%s/rec_t_imperr.ndjson", pgt_tmpdir());
    pgpipe_records_import_options o;
    pgpipe_records_import_options_init(&o);
    o.documents = 1;
    pgpipe_records_import_summary s;
    rec_t_write(path, "{\"fields\":{\"a\":0}}\n\n"
                      "{\"id\":\"11111111-1111-4111-8111-111111111111\",\"fields\":{\"a\":1}}\n"
                      "  {\"id\":\"11111111-1111-4111-8111-111111111111\",\"fields\":{\"a\":2}}\n");
    PGT_EQ_INT(pgpipe_records_import(h, path, &o, &s), PGPIPE_DB);
    const pgpipe_error *e = pgpipe_errinfo(h);
    PGT_EQ_STR(e->source, path);
    PGT_EQ_INT(e->line, 4);
    PGT_EQ_INT(e->column, 3);
    PGT_EQ_STR(e->sqlstate, "23505");
    PGT_CONTAINS(e->message, "the record at line 4, column 3");
    rec_t_write(path, "{\"fields\":{\"a\":0}}\n{\"fields\":{\"a\":4},\"created_at\":\"not a date\"}\n");
    PGT_EQ_INT(pgpipe_records_import(h, path, &o, &s), PGPIPE_DB);
    PGT_EQ_STR(e->source, path);
    PGT_EQ_INT(e->line, 2);
    PGT_EQ_INT(e->column, 1);
    PGT_EQ_STR(e->sqlstate, "22007");
    /* a JSON array: the element's line and column */
    rec_t_write(path, "[\n  {\"fields\":{}},\n  {\"fields\":{}}, {\"fields\":{},\"updated_at\":\"x\"}\n]\n");
    PGT_EQ_INT(pgpipe_records_import(h, path, &o, &s), PGPIPE_DB);
    PGT_EQ_INT(e->line, 3);
    PGT_EQ_INT(e->column, 18);
    PGT_EQ_INT(rec_t_count(h, ""), 0);
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

PGT_TEST(records, import_ndjson_and_array)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_open(p, "rec_t_import");
    char nd[512], arr[512], out[512];
    snprintf(nd, sizeof nd, "%s/rec_t_import.ndjson", pgt_tmpdir());
    snprintf(arr, sizeof arr, "%s/rec_t_import.json", pgt_tmpdir());
    snprintf(out, sizeof out, "%s/rec_t_export.ndjson", pgt_tmpdir());
    rec_t_write(nd, "{\"n\":1}\n{\"n\":2,\"s\":\"a\\tb\"}\n\n  {\"n\": 3,}\n[4]\n{\"n\":5}");
    pgpipe_records_import_options o;
    pgpipe_records_import_options_init(&o);
    rec_t_errs errs = { 0, "" };
    o.on_error = rec_t_on_error;
    o.ud = &errs;
    pgpipe_records_import_summary s;
    PGT_OK(pgpipe_records_import(h, nd, &o, &s));
    PGT_EQ_INT(s.records, 5);
    PGT_EQ_INT(s.imported, 3);
    PGT_EQ_INT(s.skipped, 2);
    PGT_EQ_INT(errs.n, 2);
    PGT_CONTAINS(errs.first, "rec_t_import.ndjson:4:11:");
    PGT_EQ_INT(s.first_error.line, 4);
    PGT_EQ_INT(rec_t_count(h, ""), 3);
    PGT_EQ_INT(rec_t_count(h, "s = \"a\\tb\""), 1);

    /* a JSON array over several lines, one bad element */
    rec_t_write(arr, "\xEF\xBB\xBF[\n  {\"n\": 10},\n  {\"n\": 11, \"x\": [1, 2]},\n  {\"n\": 12, \"bad\": tru},\n"
                     "  \"str\", {\"n\": 13, \"s\": \"]}\\\"\"}\n]\n");
    errs.n = 0;
    PGT_OK(pgpipe_records_import(h, arr, &o, &s));
    PGT_EQ_INT(s.records, 5);
    PGT_EQ_INT(s.imported, 3);
    PGT_EQ_INT(s.skipped, 2);
    PGT_CONTAINS(errs.first, "rec_t_import.json:4:20:");
    PGT_EQ_INT(rec_t_count(h, "n >= 10"), 3);
    PGT_EQ_INT(rec_t_count(h, "s = \"]}\\\"\""), 1);

    /* stop_on_error: nothing of the import is kept */
    o.stop_on_error = 1;
    PGT_EQ_INT(pgpipe_records_import(h, arr, &o, &s), PGPIPE_PARSE);
    PGT_EQ_INT(s.imported, 0);
    PGT_EQ_INT(pgpipe_errinfo(h)->line, 4);
    PGT_CONTAINS(pgpipe_errmsg(h), "line 4, column 20");
    PGT_EQ_INT(rec_t_count(h, ""), 6);
    /* not an array and not NDJSON objects */
    rec_t_write(arr, "[{\"n\":1} {\"n\":2}]");
    PGT_EQ_INT(pgpipe_records_import(h, arr, NULL, &s), PGPIPE_PARSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "expected ',' or ']'");
    PGT_EQ_INT(pgpipe_errinfo(h)->column, 10);
    rec_t_write(arr, "[{\"n\":1},");
    PGT_EQ_INT(pgpipe_records_import(h, arr, NULL, &s), PGPIPE_PARSE);
    PGT_EQ_INT(rec_t_count(h, ""), 6);
    PGT_EQ_INT(pgpipe_records_import(h, "/nonexistent/x.json", NULL, &s), PGPIPE_IO);

    /* export (documents) and import them back as documents: same ids */
    long long n = 0;
    PGT_OK(pgpipe_records_export(h, out, NULL, 0, &n));
    PGT_EQ_INT(n, 6);
    pgpipe_records *h2 = rec_t_open(p, "rec_t_import2");
    o.stop_on_error = 1;
    o.documents = 1;
    PGT_OK(pgpipe_records_import(h2, out, &o, &s));
    PGT_EQ_INT(s.imported, 6);
    PGT_EQ_INT(rec_t_scalar("SELECT count(*) FROM records.rec_t_import a JOIN records.rec_t_import2 b "
                            "USING (id) WHERE a.fields = b.fields AND a.created_at = b.created_at"), 6);
    /* export of fields only, filtered, imported as plain records */
    pgpipe_records_filter *f;
    PGT_OK(pgpipe_records_filter_open(&f, "n < 10"));
    PGT_OK(pgpipe_records_export(h, out, f, 1, &n));
    pgpipe_records_filter_close(f);
    PGT_EQ_INT(n, 3);
    FILE *fp = fopen(out, "r");
    char line[256];
    PGT_CHECK(fgets(line, sizeof line, fp) != NULL);
    fclose(fp);
    PGT_CHECK_MSG(!strncmp(line, "{\"n\": ", 6), "%s", line); /* fields only */
    o.documents = 0;
    PGT_OK(pgpipe_records_import(h2, out, &o, &s));
    PGT_EQ_INT(s.imported, 3);
    PGT_EQ_INT(rec_t_count(h2, "n = 2"), 2);
    /* a big NDJSON stream (several read chunks, several COPY chunks) */
    fp = fopen(nd, "w");
    for (int i = 0; i < 20000; i++)
        fprintf(fp, "{\"n\":%d,\"pad\":\"%050d\"}\n", 1000 + i, i);
    fclose(fp);
    o.stop_on_error = 1;
    PGT_OK(pgpipe_records_import(h2, nd, &o, &s));
    PGT_EQ_INT(s.imported, 20000);
    PGT_EQ_INT(rec_t_count(h2, "n >= 1000"), 20000);
    PGT_OK(pgpipe_records_export(h2, out, NULL, 1, &n));
    PGT_EQ_INT(n, 20009);
    unlink(nd);
    unlink(arr);
    unlink(out);
    pgpipe_records_close(h2);
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

/* A document refused for a \u0000 escape (jsonb cannot store it) is reported
** at the escape, as other JSON errors are at their place: in create and
** update, and in an import (NDJSON and an array element mid-line). An
** escaped backslash before "u0000" is text, not the escape. */
PGT_TEST(records, u0000_error_names_its_place)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_open(p, "rec_t_nul");
    char id[37];
    PGT_EQ_INT(pgpipe_records_create(h, "{\"é\\\\u0000\":\"\\\\\",\n \"b\":\"x\\u0000\"}", id),
               PGPIPE_PARSE);
    PGT_EQ_INT(pgpipe_errinfo(h)->line, 2);
    PGT_EQ_INT(pgpipe_errinfo(h)->column, 8);
    PGT_OK(pgpipe_records_create(h, "{\"a\":1}", id));
    PGT_EQ_INT(pgpipe_records_update(h, id, "{\"k\\u0000\":1}", PGPIPE_RECORDS_MERGE),
               PGPIPE_PARSE);
    PGT_EQ_INT(pgpipe_errinfo(h)->line, 1);
    PGT_EQ_INT(pgpipe_errinfo(h)->column, 4);
    char path[512];
    snprintf(path, sizeof path, "%s/rec_t_nul.ndjson", pgt_tmpdir());
    pgpipe_records_import_options o;
    pgpipe_records_import_options_init(&o);
    rec_t_errs errs = { 0, "" };
    o.on_error = rec_t_on_error;
    o.ud = &errs;
    pgpipe_records_import_summary s;
    rec_t_write(path, "{\"a\":1}\n  {\"a\":2, \"s\":\"\\u0000\"}\n");
    PGT_OK(pgpipe_records_import(h, path, &o, &s));
    PGT_EQ_INT(s.skipped, 1);
    PGT_EQ_INT(s.first_error.line, 2);
    PGT_EQ_INT(s.first_error.column, 16);
    rec_t_write(path, "[{\"a\":1}, {\"s\":\"\\u0000\"}]\n");
    PGT_OK(pgpipe_records_import(h, path, &o, &s));
    PGT_EQ_INT(s.skipped, 1);
    PGT_EQ_INT(s.first_error.line, 1);
    PGT_EQ_INT(s.first_error.column, 17);
    rec_t_write(path, "[{\"a\":1},\n {\"s\":\n\"\\u0000\"}]\n");
    PGT_OK(pgpipe_records_import(h, path, &o, &s));
    PGT_EQ_INT(s.skipped, 1);
    PGT_EQ_INT(s.first_error.line, 3);
    PGT_EQ_INT(s.first_error.column, 2);
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}

/* A filter needing more query parameters than one statement takes (65535,
** libpq's and the server's limit; a comparison takes two) is refused before
** anything is sent, with an error naming the limit, by count, find and
** export (which creates no file then). (A filter just under the limit runs,
** but the server takes over a minute to plan it: not run here.) */
PGT_TEST(records, filter_over_the_parameter_limit_is_refused)
{
    pgpipe_pool *p = rec_t_pool();
    pgpipe_records *h = rec_t_people(p, "rec_t_many");
    pgpipe_records_filter *f;
    PGT_OK(pgpipe_records_filter_open(&f, NULL));
    for (int i = 0; i < 32768; i++) /* 65536 parameters */
        PGT_OK(pgpipe_records_filter_add(f, "age", PGPIPE_RECORDS_GE, "0"));
    long long n = -1;
    PGT_EQ_INT(pgpipe_records_count(h, f, &n), PGPIPE_LIMIT);
    PGT_CONTAINS(pgpipe_errmsg(h), "the filter's 32768 conditions need 65536 query parameters");
    PGT_CONTAINS(pgpipe_errmsg(h), "at most 65535 in one statement");
    pgpipe_records_find_options o;
    pgpipe_records_find_options_init(&o);
    o.filter = f;
    pgpipe_records_cursor *cur = NULL;
    PGT_EQ_INT(pgpipe_records_find(h, &o, &cur), PGPIPE_LIMIT);
    PGT_CHECK(cur == NULL);
    PGT_CONTAINS(pgpipe_errmsg(h), "records: find: the filter's 32768 conditions");
    char path[512];
    snprintf(path, sizeof path, "%s/rec_t_many.ndjson", pgt_tmpdir());
    remove(path);
    PGT_EQ_INT(pgpipe_records_export(h, path, f, 0, &n), PGPIPE_LIMIT);
    PGT_CONTAINS(pgpipe_errmsg(h), "65535");
    PGT_CHECK(access(path, F_OK) != 0);
    pgpipe_records_filter_close(f);
    pgpipe_records_close(h);
    pgpipe_pool_close(p, NULL);
}
