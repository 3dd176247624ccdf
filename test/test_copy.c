/*
** Tests of the COPY loader (src/pipeline/load.c, group copy), against the
** test cluster: formats, targets, validation and dead letters, server-side
** rejections, batches and NOTIFY, resume, lost connections and a server
** restart in the middle of a load (exact counts: every record once in the
** target or the dead letters).
*/
#include <sys/wait.h>
#include <signal.h>

static void copy_t_write(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    PGT_CHECK(f != NULL);
    PGT_EQ_INT(fwrite(data, 1, len, f), len);
    fclose(f);
}

static long long copy_t_int(PGconn *c, const char *sql)
{
    PGresult *r = PGT_EXEC(c, sql);
    PGT_CHECK_MSG(PQntuples(r) == 1, "%s", sql);
    long long v = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static char *copy_t_str(PGconn *c, const char *sql)
{
    static char buf[4][4096];
    static int k = 0;
    PGresult *r = PGT_EXEC(c, sql);
    PGT_CHECK_MSG(PQntuples(r) == 1, "%s", sql);
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "%s", PQgetisnull(r, 0, 0) ? "(null)" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return b;
}

/* rows the load put into staging.raw_events */
static long long copy_t_loaded(PGconn *c, long long load_id)
{
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events e JOIN pgpipe.load_batches b "
             "ON b.batch_id = e.batch_id WHERE b.load_id = %lld", load_id);
    return copy_t_int(c, sql);
}

static long long copy_t_dead(PGconn *c, long long load_id)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE load_id = %lld", load_id);
    return copy_t_int(c, sql);
}

static pgpipe_loader *copy_t_open(pgpipe_loader_options *o)
{
    o->conninfo = pgt_dsn();
    pgpipe_loader *l = NULL;
    int rc = pgpipe_loader_open(&l, o);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    return l;
}

static void copy_t_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/copy_%ld_%s", pgt_tmpdir(), (long)getpid(), name);
}

/* ---- unit tests of the helpers ---------------------------------------------- */

/* 1 when s[0..n) is text the loader passes on as it is (UTF-8, no NUL). */
static int copy_t_utf8(const char *s, size_t n)
{
    return pp_utf8_text_prefix((const unsigned char *)s, n) == n;
}

PGT_TEST(copy, escaping_and_utf8)
{
    pp_buf b = { 0 };
    PGT_OK(pp_copy_escape(&b, "a\tb\\c\nd\re", 9));
    PGT_EQ_MEM(b.data, b.len, "a\\tb\\\\c\\nd\\re", sizeof "a\\tb\\\\c\\nd\\re" - 1);
    b.len = 0;
    PGT_OK(pp_json_str(&b, "q\"\\\n\x01", 5, PP_JSON_COPY));
    /* JSON "q\"\\\n\u0001" with COPY's backslashes doubled */
    PGT_EQ_MEM(b.data, b.len, "\"q\\\\\"\\\\\\\\\\\\n\\\\u0001\"", sizeof "\"q\\\\\"\\\\\\\\\\\\n\\\\u0001\"" - 1);
    PGT_CHECK(copy_t_utf8("plain ascii text, long enough", 29));
    PGT_CHECK(copy_t_utf8("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14));
    PGT_CHECK(!copy_t_utf8("abc\0def", 7));
    PGT_CHECK(!copy_t_utf8("bad \xff byte", 10));
    PGT_CHECK(!copy_t_utf8("\xc3", 1));
    PGT_CHECK(!copy_t_utf8("\xed\xa0\x80", 3)); /* surrogate */
    PGT_CHECK(!copy_t_utf8("\xc0\xaf", 2));     /* overlong */
    b.len = 0;
    PGT_OK(pp_quote_path(&b, "staging.raw_events"));
    PGT_EQ_MEM(b.data, b.len, "\"staging\".\"raw_events\"", sizeof "\"staging\".\"raw_events\"" - 1);
    b.len = 0;
    PGT_OK(pp_quote_path(&b, "\"My.Schema\".x\"y"));
    PGT_EQ_MEM(b.data, b.len, "\"My.Schema\".\"x\"\"y\"", sizeof "\"My.Schema\".\"x\"\"y\"" - 1);
    pp_buf_free(&b);
}

static int copy_t_strcmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

static uint64_t copy_t_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Batch ids are RFC 9562 version 7: the Unix time in milliseconds in the
** first 48 bits, version 7, variant 10, then random bits. So an id made in a
** later millisecond sorts after every earlier one (as text and as a
** PostgreSQL uuid, both byte order); ids of one millisecond are distinct. */
PGT_TEST(copy, uuid_v7)
{
    pgpipe_loader l;
    copy_lane ln;
    memset(&l, 0, sizeof l);
    memset(&ln, 0, sizeof ln);
    char prev[37] = "";
    for (int i = 0; i < 30; i++) {
        uint64_t before = copy_t_now_ms();
        PGT_OK(copy_new_uuid(&l, &ln));
        uint64_t after = copy_t_now_ms();
        const char *t = ln.uuid_text;
        PGT_EQ_INT(strlen(t), 36);
        for (int k = 0; k < 36; k++) {
            if (k == 8 || k == 13 || k == 18 || k == 23)
                PGT_EQ_INT(t[k], '-');
            else
                PGT_CHECK_MSG(strchr("0123456789abcdef", t[k]) != NULL, "%s", t);
        }
        /* the 16 bytes, from the text */
        unsigned char u[16];
        for (int k = 0, at = 0; k < 16; k++, at += 2) {
            if (t[at] == '-')
                at++;
            char two[3] = { t[at], t[at + 1], '\0' };
            u[k] = (unsigned char)strtoul(two, NULL, 16);
        }
        PGT_EQ_INT(u[6] >> 4, 7);    /* version */
        PGT_EQ_INT(u[8] >> 6, 2);    /* variant 10 */
        uint64_t ms = 0;
        for (int k = 0; k < 6; k++)
            ms = ms << 8 | u[k];
        PGT_CHECK_MSG(ms >= before && ms <= after, "%s: %" PRIu64 " not in [%" PRIu64 ", %"
                      PRIu64 "]", t, ms, before, after);
        if (i > 0)
            PGT_CHECK_MSG(strcmp(prev, t) < 0, "made later but sorts first: %s then %s", prev, t);
        memcpy(prev, t, sizeof prev);
        pgpipe_sleep_ms(2); /* the next id's millisecond is a later one */
    }
    /* a burst: the time prefix never goes back, and no id repeats */
    static char burst[2000][37];
    for (int i = 0; i < 2000; i++) {
        PGT_OK(copy_new_uuid(&l, &ln));
        memcpy(burst[i], ln.uuid_text, 37);
        if (i > 0)
            PGT_CHECK_MSG(memcmp(burst[i - 1], burst[i], 13) <= 0, "%s then %s", burst[i - 1],
                          burst[i]);
    }
    qsort(burst, 2000, sizeof burst[0], copy_t_strcmp);
    for (int i = 1; i < 2000; i++)
        PGT_CHECK_MSG(strcmp(burst[i - 1], burst[i]) != 0, "repeated id %s", burst[i]);
}

PGT_TEST(copy, options_are_checked)
{
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.batch_rows = 0;
    pgpipe_loader *l;
    PGT_EQ_INT(pgpipe_loader_open(&l, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(l), "batch_rows");
    pgpipe_loader_close(l);
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    o.target = "public.t";
    PGT_EQ_INT(pgpipe_loader_open(&l, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(l), "column mapping");
    pgpipe_loader_close(l);
    /* a column twice (COPY would refuse it at the server, load by load),
    ** one with neither a field nor a value */
    pgpipe_load_column twice[] = { { "a", "x", NULL, 0 }, { "b", "y", NULL, 0 }, { "a", "z", NULL, 0 } };
    o.columns = twice;
    o.ncolumns = 3;
    PGT_EQ_INT(pgpipe_loader_open(&l, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(l), "column a is mapped twice (entries 1 and 3 of the mapping)");
    pgpipe_loader_close(l);
    pgpipe_load_column empty[] = { { "a", "x", NULL, 0 }, { "b", "", NULL, 0 } };
    o.columns = empty;
    o.ncolumns = 2;
    PGT_EQ_INT(pgpipe_loader_open(&l, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(l), "column b of the mapping has neither a field nor a value");
    pgpipe_loader_close(l);
    empty[1].value = ""; /* an empty text is a value */
    PGT_OK(pgpipe_loader_open(&l, &o));
    pgpipe_loader_close(l);
}

/* A loader whose open failed refuses every call but close and the error
** calls with PGPIPE_MISUSE naming why it did not open (it never connects
** where the PG* environment points); counts of required fields that name
** nothing are refused at open; load_file(NULL) and load_fd(-1) say what is
** wrong. No server needed: every open fails before it connects. */
static void copy_t_conn0(pgpipe_loader_options *o) { o->connections = 0; }
static void copy_t_delim(pgpipe_loader_options *o) { o->csv_delimiter = '\n'; }
static void copy_t_src(pgpipe_loader_options *o) { o->source_value = ""; }
static void copy_t_fmt(pgpipe_loader_options *o) { o->format = 77; }
static void copy_t_req(pgpipe_loader_options *o)
{
    static const char *r[] = { "a", "" };
    o->required = r;
    o->nrequired = 2;
}
static void copy_t_reqnull(pgpipe_loader_options *o) { o->nrequired = 2; }
static void copy_t_reqneg(pgpipe_loader_options *o)
{
    static const char *r[] = { "a" };
    o->required = r;
    o->nrequired = -1;
}

PGT_TEST(copy, failed_open_refuses_every_call)
{
    setenv("PGHOST", "/nonexistent-pgpipe-test", 1);
    setenv("PGCONNECT_TIMEOUT", "1", 1);
    struct { void (*tweak)(pgpipe_loader_options *); const char *why; } cases[] = {
        { copy_t_conn0, "connections must be" }, { copy_t_delim, "bad CSV delimiter" },
        { copy_t_src, "source is empty" },       { copy_t_fmt, "unknown format 77" },
        { copy_t_req, "required field 2 has no name" },
        { copy_t_reqnull, "NULL required list" }, { copy_t_reqneg, "below 0" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pgpipe_loader_options o;
        pgpipe_loader_options_init(&o);
        o.conninfo = "host=/nonexistent-pgpipe-test connect_timeout=1";
        o.format = PGPIPE_FORMAT_NDJSON;
        o.max_retries = 0;
        cases[i].tweak(&o);
        pgpipe_loader *l;
        PGT_EQ_INT(pgpipe_loader_open(&l, &o), PGPIPE_MISUSE);
        PGT_CONTAINS(pgpipe_errmsg(l), cases[i].why);
        PGT_EQ_INT(pgpipe_loader_feed(l, "{\"a\":1}\n", 8), PGPIPE_MISUSE);
        PGT_CONTAINS(pgpipe_errmsg(l), "the loader did not open: ");
        PGT_CONTAINS(pgpipe_errmsg(l), cases[i].why);
        PGT_EQ_INT(pgpipe_loader_finish(l), PGPIPE_MISUSE);
        PGT_CONTAINS(pgpipe_errmsg(l), "the loader did not open: ");
        PGT_EQ_INT(pgpipe_loader_load_file(l, "/dev/null"), PGPIPE_MISUSE);
        PGT_EQ_INT(pgpipe_loader_load_fd(l, 0, "x"), PGPIPE_MISUSE);
        PGT_EQ_INT(pgpipe_loader_cancel(l), PGPIPE_MISUSE);
        pgpipe_load_summary sum;
        PGT_EQ_INT(pgpipe_loader_summary(l, &sum), PGPIPE_MISUSE);
        PGT_CHECK(pgpipe_loader_conn(l) == NULL);
        PGT_CONTAINS(pgpipe_errmsg(l), "the loader did not open: ");
        pgpipe_loader_close(l);
    }
}

PGT_TEST(copy, load_file_and_fd_arguments_are_named)
{
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = pgt_dsn();
    pgpipe_loader *l;
    PGT_OK(pgpipe_loader_open(&l, &o));
    PGT_EQ_INT(pgpipe_loader_load_file(l, NULL), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(l), "load_file needs a path");
    PGT_EQ_INT(pgpipe_loader_load_fd(l, -1, "x"), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(l), "load_fd needs an open file descriptor");
    pgpipe_loader_close(l);
}

/* ---- formats into staging.raw_events ------------------------------------------ */

PGT_TEST(copy, ndjson_into_raw_events_with_bad_lines)
{
    char path[512];
    copy_t_path(path, sizeof path, "events.ndjson");
    const char data[] =
        "\xEF\xBB\xBF{\"event_type\":\"click\",\"user_id\":\"1\",\"n\":1}\n"
        "{\"event_type\":\"view\",\"n\":2,\"tab\":\"a\\tb\"}\r\n"
        "\n"
        "{\"event_type\":\"click\",\"n\":3\n"                 /* broken JSON */
        "[1,2,3]\n"                                          /* not an object */
        "{\"n\":5}\n"                                        /* no event_type */
        "{\"event_type\":\"view\",\"n\":6,\"s\":\"\xff\"}\n" /* invalid UTF-8 */
        "{\"event_type\":\"buy\",\"n\":7,\"nested\":{\"a\":[1,{\"b\":null}]}}"; /* no final newline */
    copy_t_write(path, data, sizeof data - 1);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.batch_rows = 3;
    o.source_name = "copy_t_ndjson";
    pgpipe_loader *l = copy_t_open(&o);
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    PGT_OK(pgpipe_loader_summary(l, &s));
    PGT_EQ_INT(s.records_read, 7);
    PGT_EQ_INT(s.rows_loaded, 3);
    PGT_EQ_INT(s.rows_dead, 4);
    PGT_EQ_INT(s.batches, 3);
    PGconn *c = pgt_connect();
    PGT_EQ_INT(copy_t_loaded(c, s.load_id), 3);
    PGT_EQ_INT(copy_t_dead(c, s.load_id), 4);
    char sql[600];
    snprintf(sql, sizeof sql, "SELECT string_agg(e.event_type || ':' || (e.payload->>'n') || ':' || "
             "e.source, ',' ORDER BY e.payload->>'n') FROM staging.raw_events e JOIN "
             "pgpipe.load_batches b ON b.batch_id = e.batch_id WHERE b.load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "click:1:copy_t_ndjson,view:2:copy_t_ndjson,buy:7:copy_t_ndjson");
    snprintf(sql, sizeof sql, "SELECT e.payload->>'tab' FROM staging.raw_events e JOIN "
             "pgpipe.load_batches b ON b.batch_id = e.batch_id WHERE b.load_id = %lld AND "
             "e.payload->>'n' = '2'", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "a\tb");
    snprintf(sql, sizeof sql, "SELECT string_agg(line_number || ':' || stage || ':' || source_name, ',' "
             "ORDER BY line_number) FROM pgpipe.dead_letters WHERE load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "4:load:copy_t_ndjson,5:load:copy_t_ndjson,6:load:copy_t_ndjson,"
                                   "7:load:copy_t_ndjson");
    snprintf(sql, sizeof sql, "SELECT error_message FROM pgpipe.dead_letters WHERE load_id = %lld "
             "AND line_number = 5", s.load_id);
    PGT_CONTAINS(copy_t_str(c, sql), "not an object");
    snprintf(sql, sizeof sql, "SELECT error_message FROM pgpipe.dead_letters WHERE load_id = %lld "
             "AND line_number = 6", s.load_id);
    PGT_CONTAINS(copy_t_str(c, sql), "event_type");
    /* invalid UTF-8: raw text made storable, exact bytes in raw_bytes */
    snprintf(sql, sizeof sql, "SELECT raw_text || '|' || encode(raw_bytes, 'hex') FROM "
             "pgpipe.dead_letters WHERE load_id = %lld AND line_number = 7", s.load_id);
    PGT_CONTAINS(copy_t_str(c, sql), "\"s\":\"\\xff\"}|");
    PGT_CONTAINS(copy_t_str(c, sql), "22ff227d");
    snprintf(sql, sizeof sql, "SELECT raw_text FROM pgpipe.dead_letters WHERE load_id = %lld "
             "AND line_number = 4", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "{\"event_type\":\"click\",\"n\":3");
    /* the load row */
    snprintf(sql, sizeof sql, "SELECT status || ' ' || rows_read || ' ' || rows_loaded || ' ' || "
             "rows_dead_lettered || ' ' || batches || ' ' || format FROM pgpipe.loads WHERE id = %lld",
             s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "completed 7 3 4 3 ndjson");
    PQfinish(c);
    pgpipe_loader_close(l);
}

/* ---- JSON in jsonb's member order ------------------------------------------- */

static unsigned long long copy_t_rng = 88172645463325252ull;
static unsigned copy_t_rand(unsigned n)
{
    copy_t_rng ^= copy_t_rng << 13;
    copy_t_rng ^= copy_t_rng >> 7;
    copy_t_rng ^= copy_t_rng << 17;
    return (unsigned)(copy_t_rng % n);
}

/* a random JSON value: keys that collide, differ in length or only in bytes,
** UTF-8, escapes; whitespace between tokens; objects above the 32 members
** and deeper than the 16 levels the reordering handles */
static void copy_t_json(pp_buf *b, int depth)
{
    static const char *keys[] = { "", "a", "b", "aa", "ab", "ba", "\xc3\xa9", "z", "k\\u0041",
                                  "k\\\"q", "user_id", "session", "{", "}", ",", ":" };
    static const char *ws[] = { "", "", "", " ", "\n", "\t ", "\r\n" };
    /* containers less likely the deeper, so a document stays small */
    unsigned t = depth > 22 ? 3 + copy_t_rand(5) : copy_t_rand(8 + 3 * (unsigned)depth);
    if (t > 7)
        t = 3 + t % 5;
    if (depth == 0)
        t = 0; /* a document is an object */
    pp_buf_appendf(b, "%s", ws[copy_t_rand(7)]);
    if (t <= 1) {
        pp_buf_putc(b, '{');
        unsigned n = depth < 2 && copy_t_rand(10) == 0 ? 30 + copy_t_rand(12) : copy_t_rand(6);
        for (unsigned i = 0; i < n; i++) {
            if (i)
                pp_buf_putc(b, ',');
            pp_buf_appendf(b, "%s\"%s\"%s:", ws[copy_t_rand(7)], keys[copy_t_rand(16)], ws[copy_t_rand(7)]);
            if (copy_t_rand(4) == 0) /* a string that looks like members */
                pp_buf_appendf(b, "\"\\\"k%u\\\":{\"", copy_t_rand(50));
            else
                copy_t_json(b, depth + 1);
        }
        pp_buf_appendf(b, "%s}", ws[copy_t_rand(7)]);
    } else if (t == 2) {
        pp_buf_putc(b, '[');
        unsigned n = copy_t_rand(5);
        for (unsigned i = 0; i < n; i++) {
            if (i)
                pp_buf_putc(b, ',');
            copy_t_json(b, depth + 1);
        }
        pp_buf_putc(b, ']');
    } else if (t == 3) {
        static const char *s[] = { "\"x\"", "\"}],{\\\"\"", "\"caf\xc3\xa9\"", "\"\\u00e9\\n\"", "\"\"" };
        pp_buf_appendf(b, "%s", s[copy_t_rand(5)]);
    } else if (t == 4) {
        static const char *s[] = { "0", "-1.5e+3", "12345678901234567890", "1E-2", "-0" };
        pp_buf_appendf(b, "%s", s[copy_t_rand(5)]);
    } else {
        static const char *s[] = { "true", "false", "null" };
        pp_buf_appendf(b, "%s", s[copy_t_rand(3)]);
    }
}

/* The reordered text is, for the server's jsonb, the same value as the text
** it came from: 3,000 random documents and the edge cases, each compared by
** PostgreSQL itself (jsonb's output of both). */
PGT_TEST(copy, jsonb_order_reads_the_same)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "CREATE TEMP TABLE jo (n int, a text, b text)"));
    PGresult *r = PQexec(c, "COPY jo FROM STDIN");
    PGT_CHECK_MSG(PQresultStatus(r) == PGRES_COPY_IN, "%s", PQresultErrorMessage(r));
    PQclear(r);
    char deep[1024] = "";
    for (int i = 0; i < 20; i++)
        strcat(deep, "{\"bb\":[1],\"a\":");
    strcat(deep, "{}");
    for (int i = 0; i < 20; i++)
        strcat(deep, ",\"b\":{\"y\":1,\"x\":2}}");
    const char *fixed[] = { deep, "{\"b\":1,\"a\":1,\"b\":2}", "{\"b\":{\"d\":1,\"c\":2},\"a\":[{\"y\":1,\"x\":2}]}",
                            "{\"k\\u0041\":1,\"kA\":2}", "{\"\":1,\" \":2}", "[]", "{}", "\"s\"", "1" };
    pp_buf row = { 0 }, in = { 0 }, out = { 0 };
    int changed = 0;
    for (int i = 0; i < 3000 + (int)(sizeof fixed / sizeof *fixed); i++) {
        in.len = out.len = row.len = 0;
        if (i < (int)(sizeof fixed / sizeof *fixed))
            pp_buf_append(&in, fixed[i], strlen(fixed[i]));
        else
            copy_t_json(&in, 0);
        PGT_OK(pp_jsonb_order(&out, in.data, in.len));
        changed += out.len != in.len || memcmp(out.data, in.data, in.len) != 0;
        pp_buf_appendf(&row, "%d\t", i);
        pp_copy_escape(&row, in.data, in.len);
        pp_buf_putc(&row, '\t');
        pp_copy_escape(&row, out.data, out.len);
        pp_buf_putc(&row, '\n');
        PGT_CHECK(PQputCopyData(c, row.data, (int)row.len) == 1);
    }
    PGT_CHECK(PQputCopyEnd(c, NULL) == 1);
    r = PQgetResult(c);
    PGT_CHECK_MSG(PQresultStatus(r) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(r));
    PQclear(r);
    while ((r = PQgetResult(c)) != NULL)
        PQclear(r);
    PGT_CHECK_MSG(changed > 2000, "%d changed", changed); /* the documents were reordered, not copied */
    PGT_EQ_STR(copy_t_str(c, "SELECT coalesce(min(n || ': ' || a || ' => ' || b), 'none') FROM jo "
                              "WHERE a::jsonb::text IS DISTINCT FROM b::jsonb::text"), "none");
    /* and the server's own output is already in order: nothing moves */
    PGT_EQ_STR(copy_t_str(c, "SELECT count(*) FROM jo"), "3009");
    r = PGT_EXEC(c, "SELECT a::jsonb::text FROM jo");
    for (int i = 0; i < PQntuples(r); i++) {
        const char *t = PQgetvalue(r, i, 0);
        out.len = 0;
        PGT_OK(pp_jsonb_order(&out, t, strlen(t)));
        pp_buf_putc(&out, '\0');
        /* jsonb's text has ", " and ": " between tokens; the order is what counts */
        in.len = 0;
        PGT_OK(pp_jsonb_order(&in, out.data, out.len - 1));
        PGT_EQ_MEM(in.data, in.len, out.data, out.len - 1);
    }
    PQclear(r);
    pp_buf_free(&row);
    pp_buf_free(&in);
    pp_buf_free(&out);
    PQfinish(c);
}

/* A CSV row as a JSON object: the header's columns in jsonb's order of
** their names (a name given twice keeps its order), whatever the header's
** order; a short row leaves its missing columns out. */
PGT_TEST(copy, csv_object_in_jsonb_order)
{
    pgpipe_csv_options co;
    pgpipe_csv_options_init(&co);
    co.header = 1;
    co.expected_fields = -1;
    pgpipe_csv *csv = NULL;
    PGT_OK(pgpipe_csv_open_feed(&csv, &co));
    const char in[] = "kind,bb,a,\xc3\xa9,z,a\nk1,2,,x\ty,5,6\nk2,q\n";
    PGT_OK(pgpipe_csv_feed(csv, in, sizeof in - 1));
    PGT_OK(pgpipe_csv_feed_end(csv));
    copy_csv_head h = { 0 };
    pp_buf b = { 0 };
    PGT_EQ_INT(pgpipe_csv_next(csv), PGPIPE_ROW);
    PGT_OK(copy_csv_keys(csv, &h));
    PGT_EQ_INT(h.n, 6);
    int nf = 0;
    const pgpipe_csv_span *f = pgpipe_csv_fields(csv, &nf);
    PGT_OK(copy_csv_object(&b, &h, f, nf, 1));
    PGT_EQ_MEM(b.data, b.len, "{\"a\":null,\"a\":\"6\",\"z\":\"5\",\"bb\":\"2\",\"\xc3\xa9\":\"x\\\\ty\","
                              "\"kind\":\"k1\"}", 60);
    /* plain JSON for binary COPY: the tab's escape not doubled */
    b.len = 0;
    PGT_OK(copy_csv_object(&b, &h, f, nf, 0));
    PGT_EQ_MEM(b.data, b.len, "{\"a\":null,\"a\":\"6\",\"z\":\"5\",\"bb\":\"2\",\"\xc3\xa9\":\"x\\ty\","
                              "\"kind\":\"k1\"}", 59);
    b.len = 0;
    PGT_EQ_INT(pgpipe_csv_next(csv), PGPIPE_ROW);
    f = pgpipe_csv_fields(csv, &nf);
    PGT_OK(copy_csv_object(&b, &h, f, nf, 1));
    PGT_EQ_MEM(b.data, b.len, "{\"bb\":\"q\",\"kind\":\"k2\"}", 22);
    copy_csv_keys_free(&h);
    copy_csv_keys_free(&h); /* twice: nothing left to free */
    pp_buf_free(&b);
    pgpipe_csv_close(csv);
}

/* The loader sends payloads in jsonb's order: what lands is the record's
** JSON (duplicate keys: the last wins), from NDJSON and from a CSV column. */
PGT_TEST(copy, payload_keys_in_jsonb_order)
{
    char path[512];
    copy_t_path(path, sizeof path, "order.ndjson");
    const char nd[] = "{\"event_type\":\"e\",\"z\":{\"yy\":1,\"x\":[{\"d\":1,\"c\":2}]},\"a\":0,\"a\":5}\n";
    copy_t_write(path, nd, sizeof nd - 1);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.source_value = "copy_t_order";
    pgpipe_loader *l = copy_t_open(&o);
    PGT_CHECK_MSG(pgpipe_loader_load_file(l, path) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    PGT_OK(pgpipe_loader_summary(l, &s));
    pgpipe_loader_close(l);
    PGconn *c = pgt_connect();
    char sql[400];
    snprintf(sql, sizeof sql, "SELECT e.payload::text FROM staging.raw_events e JOIN pgpipe.load_batches b "
             "ON b.batch_id = e.batch_id WHERE b.load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "{\"a\": 5, \"z\": {\"x\": [{\"c\": 2, \"d\": 1}], \"yy\": 1}, "
                                   "\"event_type\": \"e\"}");
    copy_t_path(path, sizeof path, "order.csv");
    const char csv[] = "kind,payload\nk,\"{\"\"bb\"\":1,\"\"a\"\":{\"\"y\"\":2,\"\"x\"\":\"\"\\t\"\"},\"\"a\"\":3}\"\n";
    copy_t_write(path, csv, sizeof csv - 1);
    pgpipe_loader_options_init(&o);
    o.source_value = "copy_t_order";
    o.event_type_field = "kind";
    o.payload_field = "payload";
    l = copy_t_open(&o);
    PGT_CHECK_MSG(pgpipe_loader_load_file(l, path) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_OK(pgpipe_loader_summary(l, &s));
    pgpipe_loader_close(l);
    snprintf(sql, sizeof sql, "SELECT e.payload::text FROM staging.raw_events e JOIN pgpipe.load_batches b "
             "ON b.batch_id = e.batch_id WHERE b.load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "{\"a\": 3, \"bb\": 1}");
    PQfinish(c);
}

/* Load path (NDJSON or CSV, with o's mapping) into the database of dsn
** once as binary COPY (the default target's default) and once as COPY text
** (PGPIPE_COPY_FORMAT=text); *bin gets whether each went binary. The rows
** and dead letters of the two loads must read the same. */
static void copy_t_both_ways(const char *dsn, const char *path, pgpipe_loader_options *o,
                             int want_binary)
{
    static int calls;
    calls++;
    long long id[2];
    int bin[2];
    pgpipe_load_summary s[2];
    for (int k = 0; k < 2; k++) {
        if (k)
            setenv("PGPIPE_COPY_FORMAT", "text", 1);
        char key[64];
        snprintf(key, sizeof key, "both-%d-%d-%ld", calls, k, (long)getpid());
        o->load_key = key;
        o->conninfo = dsn;
        o->batch_rows = 7; /* many batches: chained COPYs, and isolation in several */
        pgpipe_loader *l = NULL;
        PGT_CHECK_MSG(pgpipe_loader_open(&l, o) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
        PGT_CHECK_MSG(pgpipe_loader_load_file(l, path) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
        bin[k] = l->cw.binary;
        PGT_OK(pgpipe_loader_summary(l, &s[k]));
        id[k] = s[k].load_id;
        pgpipe_loader_close(l);
        unsetenv("PGPIPE_COPY_FORMAT");
    }
    PGT_EQ_INT(bin[0], want_binary);
    PGT_EQ_INT(bin[1], 0);
    PGT_EQ_INT(s[0].rows_loaded, s[1].rows_loaded);
    PGT_EQ_INT(s[0].rows_dead, s[1].rows_dead);
    PGT_CHECK(s[0].rows_loaded > 0);
    PGconn *c = PQconnectdb(dsn);
    PGT_CHECK(PQstatus(c) == CONNECTION_OK);
    char sql[2000];
    /* the same rows (as multisets), and the same dead letters (line, error) */
    const char *rows = "SELECT e.source, e.event_type, e.payload FROM staging.raw_events e JOIN "
                       "pgpipe.load_batches b ON b.batch_id = e.batch_id WHERE b.load_id = %lld";
    /* (the server's message may name the row's values, ids included: its
    ** start, up to them) */
    const char *dead = "SELECT line_number, sqlstate, raw_text, split_part(error_message, "
                       "' (Failing row', 1) FROM pgpipe.dead_letters WHERE load_id = %lld";
    for (int q = 0; q < 2; q++) {
        const char *f = q ? dead : rows;
        char a[300], b[300];
        snprintf(a, sizeof a, f, id[0]);
        snprintf(b, sizeof b, f, id[1]);
        snprintf(sql, sizeof sql, "SELECT (SELECT count(*) FROM (%s EXCEPT ALL %s) x) + "
                 "(SELECT count(*) FROM (%s EXCEPT ALL %s) y)", a, b, b, a);
        PGT_EQ_INT(copy_t_int(c, sql), 0);
    }
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events e JOIN pgpipe.load_batches b "
             "ON b.batch_id = e.batch_id WHERE b.load_id = %lld", id[0]);
    PGT_EQ_INT(copy_t_int(c, sql), s[0].rows_loaded);
    PQfinish(c);
}

/* Binary COPY (the default target) stores what COPY text stores: strings
** with tabs, newlines, backslashes, quotes, escapes and UTF-8; numbers,
** booleans and objects as the event type (text); nulls; rows the server
** rejects (a \u0000 in jsonb) dead-lettered at the same lines; CSV rows as
** objects and a CSV JSON column. */
PGT_TEST(copy, binary_rows_read_the_same_as_text)
{
    char path[512];
    copy_t_path(path, sizeof path, "bin.ndjson");
    pp_buf nd = { 0 };
    static const char *const recs[] = {
        "{\"event_type\":\"a\\tb\\nc\\\\d\\\"e\",\"x\":\"tab\\there\",\"k\\\\ey\":1}",
        "{\"event_type\":\"caf\xc3\xa9 \\u00e9 \\ud83d\\ude00\",\"z\":[1,2,{\"b\":1,\"a\":2}]}",
        "{\"event_type\":42,\"n\":-0,\"big\":1e400,\"f\":1.0E+2}",
        "{\"event_type\":true,\"nested\":{\"deep\":{\"deeper\":[[],{}]}}}",
        "{\"event_type\":{\"kind\":\"obj\",\"a\":[1]},\"v\":null}",
        "{\"event_type\":\"bad\",\"p\":\"nul \\u0000 here\"}",   /* jsonb refuses \u0000 */
        "{\"event_type\":null}",                               /* required field: dead letter */
        "{\"event_type\":\"dup\",\"a\":1,\"a\":2}",
        "{\"event_type\":\"\\\\N\",\"s\":\"\\\\.\"}",          /* COPY text's NULL and end marker */
        "{}",
    };
    for (int i = 0; i < 40; i++) {
        const char *r = recs[i % 10];
        pp_buf_append(&nd, r, strlen(r));
        pp_buf_putc(&nd, '\n');
    }
    copy_t_write(path, nd.data, nd.len);
    pp_buf_free(&nd);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.source_value = "copy_t_bin\\src\t";
    copy_t_both_ways(pgt_dsn(), path, &o, 1);
    /* source from a field, payload from a field (a string, a number, an object) */
    pgpipe_loader_options_init(&o);
    o.source_field = "s";
    o.payload_field = "p";
    copy_t_path(path, sizeof path, "bin2.ndjson");
    const char nd2[] = "{\"s\":\"x\\\\y\",\"event_type\":\"e\",\"p\":\"just a string\\t\"}\n"
                       "{\"s\":\"x\",\"event_type\":\"e\",\"p\":12.5}\n"
                       "{\"s\":\"x\",\"event_type\":\"e\",\"p\":{\"bb\":1,\"a\":\"\\\\\"}}\n"
                       "{\"s\":\"x\",\"event_type\":\"e\"}\n"
                       "{\"s\":\"x\",\"event_type\":\"e\",\"p\":[true,false,null]}\n";
    copy_t_write(path, nd2, sizeof nd2 - 1);
    copy_t_both_ways(pgt_dsn(), path, &o, 1);
    /* CSV: rows as objects (empty unquoted -> null), then a JSON column */
    copy_t_path(path, sizeof path, "bin.csv");
    const char csv[] = "event_type,a\\b,note\n"
                       "click,\"x\ty\",\"multi\nline \"\"q\"\"\"\n"
                       "view,,\"\"\n"
                       "view,\\N,\\.\n";
    copy_t_write(path, csv, sizeof csv - 1);
    pgpipe_loader_options_init(&o);
    o.source_value = "copy_t_bin";
    copy_t_both_ways(pgt_dsn(), path, &o, 1);
    copy_t_path(path, sizeof path, "bin2.csv");
    const char csv2[] = "kind,payload\n"
                        "k,\"{\"\"bb\"\":1,\"\"a\"\":\"\"\\\\t\"\"}\"\n"
                        "k,\"{\"\"x\"\":\"\"\\u0000\"\"}\"\n"
                        "k,\"[1,2]\"\n";
    copy_t_write(path, csv2, sizeof csv2 - 1);
    pgpipe_loader_options_init(&o);
    o.source_value = "copy_t_bin";
    o.event_type_field = "kind";
    o.payload_field = "payload";
    copy_t_both_ways(pgt_dsn(), path, &o, 1);
}

/* Binary COPY only where the table's columns are text, text, jsonb and
** uuid, asked at each load: staging.raw_events altered between two loads of
** one loader sends COPY text in the second; a mapping with received_at
** never goes binary. */
PGT_TEST(copy, binary_only_when_the_types_fit)
{
    PGconn *c = pgt_db_fresh("copy_t_bintypes");
    char dsn[1024];
    snprintf(dsn, sizeof dsn, "%s dbname=copy_t_bintypes", pgt_dsn());
    char path[512];
    copy_t_path(path, sizeof path, "types.ndjson");
    const char nd[] = "{\"event_type\":\"e1\",\"v\":1,\"at\":\"2026-01-02T03:04:05Z\"}\n"
                      "{\"event_type\":\"e2\",\"v\":2,\"at\":\"2026-01-02T03:04:05Z\"}\n";
    copy_t_write(path, nd, sizeof nd - 1);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = dsn;
    o.source_value = "types";
    pgpipe_loader *l = NULL;
    PGT_CHECK_MSG(pgpipe_loader_open(&l, &o) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    o.load_key = "k1";
    PGT_CHECK_MSG(pgpipe_loader_load_file(l, path) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_EQ_INT(l->cw.binary, 1);
    PQclear(PGT_EXEC(c, "ALTER TABLE staging.raw_events ALTER COLUMN event_type TYPE varchar(40)"));
    /* the same file again under another key: a second load of the same loader */
    pgpipe_loader_close(l);
    o.load_key = "k2";
    PGT_CHECK_MSG(pgpipe_loader_open(&l, &o) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_CHECK_MSG(pgpipe_loader_load_file(l, path) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_EQ_INT(l->cw.binary, 0);
    pgpipe_load_summary s;
    PGT_OK(pgpipe_loader_summary(l, &s));
    PGT_EQ_INT(s.rows_loaded, 2);
    PGT_EQ_INT(s.rows_dead, 0);
    pgpipe_loader_close(l);
    PQclear(PGT_EXEC(c, "ALTER TABLE staging.raw_events ALTER COLUMN event_type TYPE text"));
    /* received_at from a field: a timestamptz column, always text */
    o.load_key = "k3";
    o.received_at_field = "at";
    PGT_CHECK_MSG(pgpipe_loader_open(&l, &o) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_CHECK_MSG(pgpipe_loader_load_file(l, path) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_EQ_INT(l->cw.binary, 0);
    pgpipe_loader_close(l);
    PGT_EQ_INT(copy_t_int(c, "SELECT count(*) FROM staging.raw_events"), 6);
    PGT_EQ_INT(copy_t_int(c, "SELECT count(*) FROM staging.raw_events WHERE source = 'types' AND "
                             "event_type IN ('e1', 'e2') AND payload ? 'v'"), 6);
    PGT_EQ_INT(copy_t_int(c, "SELECT count(*) FROM staging.raw_events WHERE received_at = "
                             "'2026-01-02T03:04:05Z'"), 2);
    /* a role that may not read pg_attribute: the question is refused, the
    ** load goes as COPY text */
    char role[64], sql[600];
    snprintf(role, sizeof role, "copy_t_nocat_%d", (int)getpid());
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s; CREATE ROLE %s LOGIN; "
             "GRANT USAGE ON SCHEMA staging, pgpipe TO %s; "
             "GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA staging, pgpipe TO %s; "
             "GRANT USAGE ON ALL SEQUENCES IN SCHEMA staging, pgpipe TO %s; "
             "REVOKE SELECT ON pg_catalog.pg_attribute FROM PUBLIC", role, role, role, role, role);
    PQclear(PGT_EXEC(c, sql));
    char rdsn[1200];
    snprintf(rdsn, sizeof rdsn, "%s user=%s", dsn, role);
    pgpipe_loader_options_init(&o);
    o.conninfo = rdsn;
    o.source_value = "types";
    o.install_schema = 0;
    o.load_key = "k4";
    PGT_CHECK_MSG(pgpipe_loader_open(&l, &o) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_CHECK_MSG(pgpipe_loader_load_file(l, path) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_EQ_INT(l->cw.binary, 0);
    PGT_OK(pgpipe_loader_summary(l, &s));
    PGT_EQ_INT(s.rows_loaded, 2);
    pgpipe_loader_close(l);
    PGT_EQ_INT(copy_t_int(c, "SELECT count(*) FROM staging.raw_events"), 8);
    pgt_db_close(c);
    PGconn *a2 = pgt_connect();
    snprintf(sql, sizeof sql, "DROP ROLE IF EXISTS %s", role);
    PQclear(PGT_EXEC(a2, sql));
    PQfinish(a2);
}

PGT_TEST(copy, csv_header_nulls_shape_and_bad_bytes)
{
    char path[512];
    copy_t_path(path, sizeof path, "events.csv");
    const char data[] =
        "\xEF\xBB\xBF" "kind,user,note\r\n"
        "click,u1,\"hello, \"\"world\"\"\"\n"
        "view,,\"\"\n"                     /* empty unquoted -> null; quoted -> "" */
        "click,u3\n"                       /* wrong shape */
        "view,u\0004,x\n"                  /* NUL byte */
        "buy,u5,\"multi\nline\"\n"
        "view,u6,caf\xc3\xa9\n";
    copy_t_write(path, data, sizeof data - 1);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.event_type_field = "kind";
    o.source_value = "copy_t_csv";
    pgpipe_loader *l = copy_t_open(&o);
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.records_read, 6);
    PGT_EQ_INT(s.rows_loaded, 4);
    PGT_EQ_INT(s.rows_dead, 2);
    PGconn *c = pgt_connect();
    char sql[600];
    snprintf(sql, sizeof sql, "SELECT string_agg(e.payload::text, '|' ORDER BY e.id) FROM "
             "staging.raw_events e JOIN pgpipe.load_batches b ON b.batch_id = e.batch_id "
             "WHERE b.load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql),
               "{\"kind\": \"click\", \"note\": \"hello, \\\"world\\\"\", \"user\": \"u1\"}|"
               "{\"kind\": \"view\", \"note\": \"\", \"user\": null}|"
               "{\"kind\": \"buy\", \"note\": \"multi\\nline\", \"user\": \"u5\"}|"
               "{\"kind\": \"view\", \"note\": \"café\", \"user\": \"u6\"}");
    snprintf(sql, sizeof sql, "SELECT string_agg(line_number || ':' || error_message || ':' || "
             "coalesce(encode(raw_bytes, 'hex'), '-'), '|' ORDER BY line_number) FROM "
             "pgpipe.dead_letters WHERE load_id = %lld", s.load_id);
    const char *dl = copy_t_str(c, sql);
    PGT_CONTAINS(dl, "4:");
    PGT_CONTAINS(dl, "5:NUL byte at line 5, column 7 (byte 7 of the record):");
    PGT_CONTAINS(dl, "7669");     /* "vi" in the hex of the record with the NUL */
    snprintf(sql, sizeof sql, "SELECT raw_text FROM pgpipe.dead_letters WHERE load_id = %lld AND "
             "line_number = 5", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "view,u\\x004,x");
    snprintf(sql, sizeof sql, "SELECT string_agg(DISTINCT e.source, ',') FROM staging.raw_events e "
             "JOIN pgpipe.load_batches b ON b.batch_id = e.batch_id WHERE b.load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "copy_t_csv");
    PQfinish(c);
    pgpipe_loader_close(l);
}

/* The same JSON array fed in one piece and byte by byte gives the same rows. */
PGT_TEST(copy, json_array_streamed_any_chunking)
{
    const char data[] =
        "\xEF\xBB\xBF [\n"
        "  {\"event_type\": \"a\", \"n\": 1, \"s\": \"x]},{\\\"y\"},\n"
        "  {\"event_type\": \"b\", \"n\": 2, \"deep\": [[{}], {\"k\": [1, 2]}]},\n"
        "  {\"event_type\": \"c\", \"n\": 3,},\n"     /* trailing comma: bad element */
        "  42,\n"                                   /* not an object */
        "  {\"event_type\": \"d\", \"n\": 5}\n"
        "]\n";
    PGconn *c = pgt_connect();
    char first[2048] = "";
    for (int mode = 0; mode < 2; mode++) {
        pgpipe_loader_options o;
        pgpipe_loader_options_init(&o);
        o.batch_rows = 2;
        o.source_name = "copy_t_array";
        o.format = mode ? PGPIPE_FORMAT_AUTO : PGPIPE_FORMAT_JSON;
        pgpipe_loader *l = copy_t_open(&o);
        if (mode == 0) {
            PGT_OK(pgpipe_loader_feed(l, data, sizeof data - 1));
        } else {
            for (size_t i = 0; i < sizeof data - 1; i++)
                PGT_OK(pgpipe_loader_feed(l, data + i, 1));
        }
        int rc = pgpipe_loader_finish(l);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
        pgpipe_load_summary s;
        pgpipe_loader_summary(l, &s);
        PGT_EQ_INT(s.records_read, 5);
        PGT_EQ_INT(s.rows_loaded, 3);
        PGT_EQ_INT(s.rows_dead, 2);
        char sql[700];
        snprintf(sql, sizeof sql, "SELECT string_agg(e.event_type || '=' || e.payload::text, '|' "
                 "ORDER BY e.payload->>'n') || ' / ' || (SELECT string_agg(line_number::text, ',' "
                 "ORDER BY line_number) FROM pgpipe.dead_letters WHERE load_id = %lld) FROM "
                 "staging.raw_events e JOIN pgpipe.load_batches b ON b.batch_id = e.batch_id "
                 "WHERE b.load_id = %lld", s.load_id, s.load_id);
        const char *got = copy_t_str(c, sql);
        PGT_CONTAINS(got, "a={\"n\": 1, \"s\": \"x]},{\\\"y\", \"event_type\": \"a\"}");
        PGT_CONTAINS(got, " / 4,5");
        if (mode == 0)
            snprintf(first, sizeof first, "%s", got);
        else
            PGT_EQ_STR(got, first);
        pgpipe_loader_close(l);
    }
    /* structure errors outside elements end the load with a clear message */
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.format = PGPIPE_FORMAT_JSON;
    pgpipe_loader *l = copy_t_open(&o);
    pgpipe_loader_feed(l, "[{\"event_type\":\"x\"}\n {\"event_type\":\"y\"}]", 40);
    PGT_EQ_INT(pgpipe_loader_finish(l), PGPIPE_PARSE);
    PGT_CONTAINS(pgpipe_errmsg(l), "expected ',' or ']'");
    PGT_EQ_INT(pgpipe_errinfo(l)->line, 2);
    pgpipe_loader_close(l);
    PQfinish(c);
}

/* ---- another table, with a column mapping; the server rejects some rows ---- */

PGT_TEST(copy, mapped_table_isolates_rejected_rows)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS copy_t_orders; CREATE TABLE copy_t_orders ("
                        "id int PRIMARY KEY, qty int NOT NULL CHECK (qty > 0), who text, "
                        "meta jsonb, line bigint, src text, fixed text)"));
    char path[512];
    copy_t_path(path, sizeof path, "orders.ndjson");
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    int bad = 0;
    for (int i = 1; i <= 500; i++) {
        if (i % 97 == 0) {        /* not an integer: 22P02 */
            fprintf(f, "{\"id\":%d,\"qty\":\"many\",\"who\":{\"name\":\"w%d\"}}\n", i, i);
            bad++;
        } else if (i % 131 == 0) { /* check constraint: 23514 */
            fprintf(f, "{\"id\":%d,\"qty\":-1,\"who\":{\"name\":\"w%d\"}}\n", i, i);
            bad++;
        } else if (i == 250) {     /* duplicate key of row 249: 23505 */
            fprintf(f, "{\"id\":249,\"qty\":1,\"who\":{\"name\":\"dup\"}}\n");
            bad++;
        } else {
            fprintf(f, "{\"id\":%d,\"qty\":%d,\"who\":{\"name\":\"w%d\"},\"meta\":{\"i\":[%d]}}\n",
                    i, i % 7 + 1, i, i);
        }
    }
    fclose(f);
    pgpipe_load_column cols[] = {
        { "id", "id", NULL, 0 }, { "qty", "qty", NULL, 0 }, { "who", "who.name", NULL, 0 },
        { "meta", "meta", NULL, 1 }, { "line", "$line", NULL, 0 }, { "src", "$source", NULL, 0 },
        { "fixed", NULL, "tab\there", 0 },
    };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.target = "public.copy_t_orders";
    o.columns = cols;
    o.ncolumns = 7;
    o.batch_rows = 200;
    o.notify_channel = "";
    pgpipe_loader *l = copy_t_open(&o);
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.records_read, 500);
    PGT_EQ_INT(s.rows_dead, bad);
    PGT_EQ_INT(s.rows_loaded, 500 - bad);
    PGT_EQ_INT(copy_t_int(c, "SELECT count(*) FROM copy_t_orders"), 500 - bad);
    PGT_EQ_INT(copy_t_dead(c, s.load_id), bad);
    char sql[400];
    snprintf(sql, sizeof sql, "SELECT string_agg(DISTINCT sqlstate, ',' ORDER BY sqlstate) FROM "
             "pgpipe.dead_letters WHERE load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "22P02,23505,23514");
    snprintf(sql, sizeof sql, "SELECT line_number || ' ' || raw_text FROM pgpipe.dead_letters "
             "WHERE load_id = %lld AND sqlstate = '23505'", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "250 {\"id\":249,\"qty\":1,\"who\":{\"name\":\"dup\"}}");
    PGT_EQ_STR(copy_t_str(c, "SELECT who || ' ' || meta::text || ' ' || line || ' ' || fixed "
                             "FROM copy_t_orders WHERE id = 10"), "w10 {\"i\": [10]} 10 tab\there");
    PGT_EQ_STR(copy_t_str(c, "SELECT src FROM copy_t_orders WHERE id = 10"), path);
    PQclear(PGT_EXEC(c, "DROP TABLE copy_t_orders"));
    PQfinish(c);
    pgpipe_loader_close(l);
}

/* ---- batches, NOTIFY, progress ------------------------------------------------ */

static int copy_t_progress_count(void *ud, const pgpipe_load_progress *p)
{
    long long *calls = ud;
    calls[0]++;
    calls[1] = p->rows_loaded;
    calls[2] = p->bytes_done;
    calls[3] = p->bytes_total;
    return 0;
}

PGT_TEST(copy, batches_notify_and_progress)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "LISTEN copy_t_chan"));
    char path[512];
    copy_t_path(path, sizeof path, "batches.ndjson");
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 1000; i++)
        fprintf(f, "{\"event_type\":\"e\",\"i\":%d}\n", i);
    fclose(f);
    struct stat st;
    stat(path, &st);
    long long calls[4] = { 0 };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.batch_rows = 300;
    o.notify_channel = "copy_t_chan";
    o.progress = copy_t_progress_count;
    o.progress_ud = calls;
    pgpipe_loader *l = copy_t_open(&o);
    PGT_OK(pgpipe_loader_load_file(l, path));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.batches, 4);
    PGT_EQ_INT(s.rows_loaded, 1000);
    PGT_EQ_INT(calls[0], 4);
    PGT_EQ_INT(calls[1], 1000);
    PGT_EQ_INT(calls[2], st.st_size);
    PGT_EQ_INT(calls[3], st.st_size);
    /* one notification per batch, naming the table and the batch; the last
    ** may still be on its way from a loader connection (bounded wait) */
    PGnotify *n;
    int count = 0;
    long long rows = 0;
    for (int tries = 0; count < 4 && tries < 200; tries++) {
        if (tries)
            pgpipe_sleep_ms(50);
        PQconsumeInput(c);
        while ((n = PQnotifies(c)) != NULL) {
            PGT_EQ_STR(n->relname, "copy_t_chan");
            PGT_CONTAINS(n->extra, "\"table\":\"staging.raw_events\"");
            PGT_CONTAINS(n->extra, "\"batch_id\":\"");
            const char *r = strstr(n->extra, "\"rows\":");
            PGT_CHECK(r != NULL);
            rows += atoll(r + 7);
            count++;
            PQfreemem(n);
        }
    }
    PGT_EQ_INT(count, 4);
    PGT_EQ_INT(rows, 1000);
    /* batch ids are distinct, one per batch, and every row carries its batch's */
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT batch_id) FROM pgpipe.load_batches WHERE "
             "load_id = %lld", s.load_id);
    PGT_EQ_INT(copy_t_int(c, sql), 4);
    snprintf(sql, sizeof sql, "SELECT string_agg(rows_read::text, ',' ORDER BY seq) FROM "
             "pgpipe.load_batches WHERE load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "300,300,300,100");
    PQfinish(c);
    pgpipe_loader_close(l);
}

/* ---- nothing lost, nothing twice --------------------------------------------- */

/* Three connections: the batches commit side by side on three backends,
** rows of one batch that collide with rows of a batch another lane is
** committing at the same moment (duplicate keys) are isolated like any
** other rejected row, and every record is counted exactly once. */
typedef struct copy_t_backends {
    PGconn *c;
    const char *app;
    long long max;
} copy_t_backends;

static int copy_t_count_backends(void *ud, const pgpipe_load_progress *p)
{
    copy_t_backends *b = ud;
    (void)p;
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'",
             b->app);
    long long n = copy_t_int(b->c, sql);
    if (n > b->max)
        b->max = n;
    return 0;
}

PGT_TEST(copy, lanes_commit_side_by_side_exactly_once)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS copy_t_lanes; CREATE TABLE copy_t_lanes ("
                        "id int PRIMARY KEY, qty int NOT NULL CHECK (qty > 0))"));
    char path[512];
    copy_t_path(path, sizeof path, "lanes.ndjson");
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    int invalid = 0, typed = 0, dups = 0;
    for (int i = 1; i <= 3000; i++) {
        if (i % 97 == 0) {          /* not an integer: 22P02 from the server */
            fprintf(f, "{\"id\":%d,\"qty\":\"many\"}\n", i);
            typed++;
        } else if (i % 211 == 0) {  /* not JSON: the loader's own dead letter */
            fprintf(f, "{\"id\":%d,\"qty\":1\n", i);
            invalid++;
        } else if (i % 500 == 0) {  /* the key of a row 2-3 batches back: 23505 */
            fprintf(f, "{\"id\":%d,\"qty\":2}\n", i - 250);
            dups++;
        } else {
            fprintf(f, "{\"id\":%d,\"qty\":%d}\n", i, i % 5 + 1);
        }
    }
    fclose(f);
    char app[64], dsn[1024];
    snprintf(app, sizeof app, "copy_lanes_%d", (int)getpid());
    snprintf(dsn, sizeof dsn, "%s application_name=%s", pgt_dsn(), app);
    copy_t_backends b = { c, app, 0 };
    pgpipe_load_column cols[] = { { "id", "id", NULL, 0 }, { "qty", "qty", NULL, 0 } };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = dsn;
    o.target = "public.copy_t_lanes";
    o.columns = cols;
    o.ncolumns = 2;
    o.batch_rows = 100;
    o.connections = 3;
    o.progress = copy_t_count_backends;
    o.progress_ud = &b;
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o));
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_CHECK(b.max >= 2 && b.max <= 3);  /* batches committed on several backends */
    PGT_EQ_INT(s.records_read, 3000);
    PGT_EQ_INT(s.batches, 30);
    PGT_EQ_INT(s.rows_dead, invalid + typed + dups);
    PGT_EQ_INT(s.rows_loaded, 3000 - invalid - typed - dups);
    PGT_EQ_INT(copy_t_int(c, "SELECT count(*) FROM copy_t_lanes"), s.rows_loaded);
    PGT_EQ_INT(copy_t_dead(c, s.load_id), s.rows_dead);
    char sql[400];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE load_id = %lld "
             "AND sqlstate = '23505'", s.load_id);
    PGT_EQ_INT(copy_t_int(c, sql), dups); /* one of each pair, whichever committed second */
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT batch_id) || ' ' || sum(rows_read) || ' ' || "
             "max(seq) FROM pgpipe.load_batches WHERE load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "30 3000 30");
    snprintf(sql, sizeof sql, "SELECT rows_read || ' ' || rows_loaded || ' ' || rows_dead_lettered "
             "|| ' ' || last_batch_seq || ' ' || last_line FROM pgpipe.loads WHERE id = %lld", s.load_id);
    char want[100];
    snprintf(want, sizeof want, "3000 %lld %lld 30 3000", s.rows_loaded, s.rows_dead);
    PGT_EQ_STR(copy_t_str(c, sql), want);
    pgpipe_loader_close(l);
    PQclear(PGT_EXEC(c, "DROP TABLE copy_t_lanes"));
    PQfinish(c);
}

static void copy_t_gen(const char *path, int n)
{
    FILE *f = fopen(path, "w");
    PGT_CHECK(f != NULL);
    for (int i = 1; i <= n; i++) {
        if (i % 1000 == 0)
            fprintf(f, "{\"event_type\":\"bad\",\"n\":%d,}\n", i);
        else
            fprintf(f, "{\"event_type\":\"e\",\"n\":%d,\"pad\":\"%040d\"}\n", i, i);
    }
    fclose(f);
}

/* each input record exactly once: in the table (distinct n) or dead-lettered */
static void copy_t_exactly_once(PGconn *c, long long load_id, int n)
{
    char sql[500];
    snprintf(sql, sizeof sql, "SELECT count(*) - count(DISTINCT e.payload->>'n') FROM "
             "staging.raw_events e JOIN pgpipe.load_batches b ON b.batch_id = e.batch_id "
             "WHERE b.load_id = %lld", load_id);
    PGT_EQ_INT(copy_t_int(c, sql), 0);
    PGT_EQ_INT(copy_t_loaded(c, load_id), n - n / 1000);
    PGT_EQ_INT(copy_t_dead(c, load_id), n / 1000);
    snprintf(sql, sizeof sql, "SELECT count(*) - count(DISTINCT line_number) FROM pgpipe.dead_letters "
             "WHERE load_id = %lld", load_id);
    PGT_EQ_INT(copy_t_int(c, sql), 0);
    snprintf(sql, sizeof sql, "SELECT rows_read || ' ' || rows_loaded || ' ' || rows_dead_lettered "
             "FROM pgpipe.loads WHERE id = %lld", load_id);
    char want[100];
    snprintf(want, sizeof want, "%d %d %d", n, n - n / 1000, n / 1000);
    PGT_EQ_STR(copy_t_str(c, sql), want);
}

static int copy_t_stop_after(void *ud, const pgpipe_load_progress *p)
{
    return p->batches >= *(int *)ud;
}

/* Stopped by the progress callback after 2 batches: with one connection
** exactly 2 are committed; with two, the batch the other lane was
** committing finishes too. Either way the rerun skips what was committed. */
static void copy_t_interrupt_and_resume(int connections)
{
    char path[512];
    copy_t_path(path, sizeof path, connections == 1 ? "resume1.ndjson" : "resume2.ndjson");
    copy_t_gen(path, 5000);
    int stop = 2;
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.connections = connections;
    o.batch_rows = 700;
    o.progress = copy_t_stop_after;
    o.progress_ud = &stop;
    pgpipe_loader *l = copy_t_open(&o);
    PGT_EQ_INT(pgpipe_loader_load_file(l, path), PGPIPE_BUSY);
    pgpipe_load_summary s1;
    pgpipe_loader_summary(l, &s1);
    if (connections == 1)
        PGT_EQ_INT(s1.batches, 2);
    else
        PGT_CHECK(s1.batches >= 2 && s1.batches <= 1 + connections);
    long long done = 700 * s1.batches; /* one bad record (n % 1000 == 999) per 1000 */
    pgpipe_loader_close(l);
    PGconn *c = pgt_connect();
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT status FROM pgpipe.loads WHERE id = %lld", s1.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "interrupted");
    PGT_EQ_INT(copy_t_loaded(c, s1.load_id), done - done / 1000);

    /* the same file again, with another batch size asked: resumes with the old one */
    stop = 1000;
    o.batch_rows = 300;
    l = copy_t_open(&o);
    PGT_OK(pgpipe_loader_load_file(l, path));
    pgpipe_load_summary s2;
    pgpipe_loader_summary(l, &s2);
    PGT_EQ_INT(s2.load_id, s1.load_id);
    PGT_EQ_INT(s2.rows_skipped, done);
    PGT_EQ_INT(s2.records_read, 5000);
    PGT_EQ_INT(s2.rows_loaded + s2.rows_dead, 5000 - done);
    copy_t_exactly_once(c, s1.load_id, 5000);
    /* and once more: nothing to do */
    PGT_OK(pgpipe_loader_load_file(l, path));
    pgpipe_loader_summary(l, &s2);
    PGT_EQ_INT(s2.rows_loaded, 0);
    PGT_EQ_INT(s2.rows_skipped, 5000);
    copy_t_exactly_once(c, s1.load_id, 5000);
    snprintf(sql, sizeof sql, "SELECT status FROM pgpipe.loads WHERE id = %lld", s1.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "completed");
    pgpipe_loader_close(l);
    PQfinish(c);
}

PGT_TEST(copy, interrupted_load_resumes_without_duplicates)
{
    copy_t_interrupt_and_resume(1);
}

PGT_TEST(copy, interrupted_two_lane_load_resumes_without_duplicates)
{
    copy_t_interrupt_and_resume(2);
}

typedef struct copy_t_killer {
    pgpipe_loader *l;
    int at_batch;
    int done;
    const char *sql; /* copy_t_sql_at_batch: run with the load's id (%lld) */
} copy_t_killer;

/* After batch at_batch is reported, run k->sql (its %lld: the load's id)
** once on a connection of its own, as another process would. */
static int copy_t_sql_at_batch(void *ud, const pgpipe_load_progress *p)
{
    copy_t_killer *k = ud;
    if (p->batches == k->at_batch && !k->done) {
        k->done = 1;
        pgpipe_load_summary s;
        pgpipe_loader_summary(k->l, &s);
        PGconn *c = pgt_connect();
        char sql[300];
        snprintf(sql, sizeof sql, k->sql, s.load_id);
        PQclear(PGT_EXEC(c, sql));
        PQfinish(c);
    }
    return 0;
}

static int copy_t_kill_backend(void *ud, const pgpipe_load_progress *p)
{
    copy_t_killer *k = ud;
    if (p->batches == k->at_batch && !k->done) {
        k->done = 1;
        PGconn *c = pgt_connect();
        char sql[100];
        snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d)", PQbackendPID(pgpipe_loader_conn(k->l)));
        PQclear(PGT_EXEC(c, sql));
        PQfinish(c);
    }
    return 0;
}

PGT_TEST(copy, killed_backend_is_reconnected_exactly_once)
{
    char path[512];
    copy_t_path(path, sizeof path, "kill.ndjson");
    copy_t_gen(path, 6000);
    copy_t_killer k = { NULL, 3, 0, NULL };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.batch_rows = 500;
    o.progress = copy_t_kill_backend;
    o.progress_ud = &k;
    pgpipe_loader *l = copy_t_open(&o);
    k.l = l;
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_CHECK(k.done);
    PGT_CHECK(s.retries >= 1);
    PGT_EQ_INT(s.records_read, 6000);
    PGT_EQ_INT(s.rows_loaded + s.rows_dead, 6000);
    PGconn *c = pgt_connect();
    copy_t_exactly_once(c, s.load_id, 6000);
    PQfinish(c);
    pgpipe_loader_close(l);
}

static int copy_t_restart_once(void *ud, const pgpipe_load_progress *p)
{
    int *state = ud;
    if (p->batches == 2 && !*state) {
        *state = 1;
        /* restart the server from another process while the load goes on */
        pid_t pid = fork();
        if (pid == 0) {
            pgpipe_sleep_ms(30);
            char cmd[1024];
            snprintf(cmd, sizeof cmd, "sh '%s/tool/pgtmp.sh' restart '%s' >/dev/null 2>&1",
                     getenv("PGPIPE_TOP") ? getenv("PGPIPE_TOP") : ".", getenv("PGPIPE_TEST_PGDIR"));
            _exit(system(cmd) == 0 ? 0 : 1);
        }
        state[1] = (int)pid;
    }
    return 0;
}

static void copy_t_restart_load(int connections, int batch_rows)
{
    char path[512];
    copy_t_path(path, sizeof path, connections == 1 ? "restart1.ndjson" : "restart.ndjson");
    copy_t_gen(path, 60000);
    int state[2] = { 0, 0 };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.connections = connections;
    o.batch_rows = batch_rows;
    o.progress = copy_t_restart_once;
    o.progress_ud = state;
    o.max_retries = 20;
    pgpipe_loader *l = copy_t_open(&o);
    int rc = pgpipe_loader_load_file(l, path);
    int wst = 0;
    if (state[1] > 0)
        waitpid((pid_t)state[1], &wst, 0);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    PGT_CHECK(WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_CHECK(s.retries >= 1); /* it did lose the connection */
    PGT_EQ_INT(s.records_read, 60000);
    PGT_EQ_INT(s.rows_loaded + s.rows_dead, 60000);
    PGconn *c = pgt_connect();
    copy_t_exactly_once(c, s.load_id, 60000);
    PQfinish(c);
    pgpipe_loader_close(l);
}

PGT_TEST(copy, server_restart_mid_load_exactly_once)
{
    if (!getenv("PGPIPE_TEST_PGDIR"))
        PGT_SKIP("no cluster directory to restart");
    copy_t_restart_load(2, 2000);
}

/* One connection, small batches: the restart lands in a stream or in a
** boundary's round trip (the booking, COMMIT and the next COPY in flight). */
PGT_TEST(copy, one_lane_server_restart_mid_load_exactly_once)
{
    if (!getenv("PGPIPE_TEST_PGDIR"))
        PGT_SKIP("no cluster directory to restart");
    copy_t_restart_load(1, 300);
}

/* A load from a pipe (fd), memory bounded by the batch, not the input. */
PGT_TEST(copy, fd_pipe_and_feed_csv)
{
    int p[2];
    PGT_CHECK(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        FILE *f = fdopen(p[1], "w");
        fprintf(f, "event_type,source,v\n");
        for (int i = 0; i < 20000; i++)
            fprintf(f, "t%d,src%d,%d\n", i % 3, i % 2, i);
        fclose(f);
        _exit(0);
    }
    close(p[1]);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.format = PGPIPE_FORMAT_CSV;
    o.source_field = "source";
    o.required = (const char *const[]){ "v" };
    o.nrequired = 1;
    o.batch_bytes = 64 * 1024;
    pgpipe_loader *l = copy_t_open(&o);
    int rc = pgpipe_loader_load_fd(l, p[0], NULL);
    close(p[0]);
    waitpid(pid, NULL, 0);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.rows_loaded, 20000);
    PGT_CHECK(s.batches > 3);            /* cut by bytes */
    for (int i = 0; i < COPY_MAX_LANES; i++) /* the batch buffers stayed small */
        PGT_CHECK(l->lanes[i].cbuf.cap < 1024 * 1024);
    PGconn *c = pgt_connect();
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT string_agg(DISTINCT e.source, ',' ORDER BY e.source) FROM "
             "staging.raw_events e JOIN pgpipe.load_batches b ON b.batch_id = e.batch_id "
             "WHERE b.load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "src0,src1");
    snprintf(sql, sizeof sql, "SELECT source FROM pgpipe.loads WHERE id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "<stdin>");
    PQfinish(c);
    /* a fed CSV with a load key resumes like a file */
    o.load_key = "copy_t_feed_key";
    o.source_field = NULL;
    o.nrequired = 0;
    o.format = PGPIPE_FORMAT_AUTO;
    pgpipe_loader_close(l);
    l = copy_t_open(&o);
    for (int round = 0; round < 2; round++) {
        const char *csv = "event_type,x\na,1\nb,2\n";
        PGT_OK(pgpipe_loader_feed(l, csv, strlen(csv)));
        PGT_OK(pgpipe_loader_finish(l));
        pgpipe_loader_summary(l, &s);
        PGT_EQ_INT(s.rows_loaded, round == 0 ? 2 : 0);
        PGT_EQ_INT(s.rows_skipped, round == 0 ? 0 : 2);
    }
    pgpipe_loader_close(l);
}

/* Many rejected rows in one batch: each costs a short COPY, the rest loads. */
PGT_TEST(copy, many_rejected_rows_in_a_batch)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS copy_t_many; CREATE TABLE copy_t_many (n int)"));
    pp_buf in = { 0 };
    int bad = 0;
    for (int i = 0; i < 3000; i++) {
        if (i >= 1000 && i < 1800 && i % 3) {
            pp_buf_appendf(&in, "{\"n\":\"bad%d\"}\n", i);
            bad++;
        } else {
            pp_buf_appendf(&in, "{\"n\":%d}\n", i);
        }
    }
    pgpipe_load_column cols[] = { { "n", "n", NULL, 0 } };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.target = "copy_t_many";
    o.columns = cols;
    o.ncolumns = 1;
    o.format = PGPIPE_FORMAT_NDJSON;
    pgpipe_loader *l = copy_t_open(&o);
    PGT_OK(pgpipe_loader_feed(l, in.data, in.len));
    PGT_OK(pgpipe_loader_finish(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.rows_dead, bad);
    PGT_EQ_INT(s.rows_loaded, 3000 - bad);
    PGT_EQ_INT(copy_t_int(c, "SELECT count(DISTINCT n) FROM copy_t_many"), 3000 - bad);
    PGT_EQ_INT(copy_t_dead(c, s.load_id), bad);
    PQclear(PGT_EXEC(c, "DROP TABLE copy_t_many"));
    pp_buf_free(&in);
    pgpipe_loader_close(l);
    PQfinish(c);
}

/* A loader on the caller's connection (conn), 400-row batches, reporting
** to progress with k; the input, 3,000 generated records, is written to
** path (a file name under the test's folder). */
static pgpipe_loader *copy_t_borrowed(PGconn *conn, char *path, size_t pathsz, const char *file,
                                      int (*progress)(void *, const pgpipe_load_progress *),
                                      copy_t_killer *k)
{
    copy_t_path(path, pathsz, file);
    copy_t_gen(path, 3000);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conn = conn;
    o.batch_rows = 400;
    o.progress = progress;
    o.progress_ud = k;
    pgpipe_loader *l = NULL;
    PGT_OK(pgpipe_loader_open(&l, &o));
    k->l = l;
    return l;
}

/* A borrowed connection (the shell's) is reset after its backend dies. */
PGT_TEST(copy, borrowed_connection_is_reset)
{
    PGconn *mine = pgt_connect();
    char path[512];
    copy_t_killer k = { NULL, 2, 0, NULL };
    pgpipe_loader *l = copy_t_borrowed(mine, path, sizeof path, "borrowed.ndjson", copy_t_kill_backend, &k);
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_CHECK(k.done && s.retries >= 1);
    pgpipe_loader_close(l);
    PGT_EQ_INT(PQstatus(mine), CONNECTION_OK); /* still ours, still usable */
    copy_t_exactly_once(mine, s.load_id, 3000);
    PQfinish(mine);
}

/* Two runs of the same load at once: the one whose load_batches row loses
** (unique key) skips that batch instead of loading it twice. */
PGT_TEST(copy, batch_committed_by_another_run_is_skipped)
{
    pp_buf in = { 0 };
    for (int i = 0; i < 300; i++)
        pp_buf_appendf(&in, "{\"event_type\":\"e\",\"n\":%d}\n", i);
    /* another run takes batch 2 first */
    copy_t_killer k = { NULL, 1, 0, "INSERT INTO pgpipe.load_batches (load_id, seq, batch_id, rows_read) "
                                   "VALUES (%lld, 2, gen_random_uuid(), 100)" };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.batch_rows = 100;
    o.connections = 1; /* batch 2 not yet begun when batch 1 is reported */
    o.format = PGPIPE_FORMAT_NDJSON;
    o.progress = copy_t_sql_at_batch;
    o.progress_ud = &k;
    pgpipe_loader *l = copy_t_open(&o);
    k.l = l;
    PGT_OK(pgpipe_loader_feed(l, in.data, in.len));
    int rc = pgpipe_loader_finish(l);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.rows_loaded, 200);
    PGT_EQ_INT(s.rows_skipped, 100);
    PGT_EQ_INT(s.batches_skipped, 1);
    PGconn *c = pgt_connect();
    PGT_EQ_INT(copy_t_loaded(c, s.load_id), 200);
    PQfinish(c);
    pp_buf_free(&in);
    pgpipe_loader_close(l);
}

/* ---- one connection: the batch boundary in one round trip --------------------- */

/* With one connection a full batch commits when the next record arrives, in
** the round trip that starts the next batch's COPY, or at the end of the
** chunk at hand: a feed returns with every full batch of it committed. */
PGT_TEST(copy, one_lane_feed_commits_full_batches_before_returning)
{
    PGconn *c = pgt_connect();
    char tag[64];
    snprintf(tag, sizeof tag, "feed1_%ld", (long)getpid());
    pp_buf in = { 0 };
    for (int i = 0; i < 31; i++)
        pp_buf_appendf(&in, "{\"event_type\":\"%s\",\"n\":%d}\n", tag, i);
    /* record offsets: 25 records, then 5, then the last split in two feeds */
    size_t at[32];
    size_t k = 0, n = 0;
    at[n++] = 0;
    for (size_t i = 0; i < in.len; i++)
        if (in.data[i] == '\n')
            at[n++] = i + 1;
    PGT_EQ_INT(n, 32);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.batch_rows = 10;
    o.connections = 1;
    o.format = PGPIPE_FORMAT_NDJSON;
    pgpipe_loader *l = copy_t_open(&o);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE event_type = '%s'", tag);
    PGT_OK(pgpipe_loader_feed(l, in.data, at[25]));
    PGT_EQ_INT(copy_t_int(c, sql), 20);   /* two full batches in, the third open */
    PGT_OK(pgpipe_loader_feed(l, in.data + at[25], at[30] - at[25]));
    PGT_EQ_INT(copy_t_int(c, sql), 30);   /* ended exactly at a batch: committed */
    k = at[30] + 3;
    PGT_OK(pgpipe_loader_feed(l, in.data + at[30], k - at[30]));
    PGT_OK(pgpipe_loader_feed(l, in.data + k, in.len - k));
    PGT_EQ_INT(copy_t_int(c, sql), 30);
    PGT_OK(pgpipe_loader_finish(l));
    PGT_EQ_INT(copy_t_int(c, sql), 31);
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.batches, 4);
    PGT_EQ_INT(s.rows_loaded, 31);
    snprintf(sql, sizeof sql, "SELECT string_agg(rows_read::text, ',' ORDER BY seq) FROM "
             "pgpipe.load_batches WHERE load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "10,10,10,1");
    /* the connection is left between transactions, no COPY open */
    PGT_EQ_INT(PQtransactionStatus(pgpipe_loader_conn(l)), PQTRANS_IDLE);
    pp_buf_free(&in);
    pgpipe_loader_close(l);
    PQfinish(c);
}

static int copy_t_cancel_at(void *ud, const pgpipe_load_progress *p)
{
    copy_t_killer *k = ud;
    if (p->batches == k->at_batch && !k->done) {
        k->done = 1;
        pgpipe_loader_cancel(k->l);
    }
    return 0;
}

/* Cancelled at a batch boundary, when the commit has already started the
** next batch's COPY: the committed batches stay, the open COPY ends without
** a row, and the caller's connection is left idle and usable. */
PGT_TEST(copy, one_lane_cancel_at_a_boundary_leaves_the_connection_idle)
{
    PGconn *mine = pgt_connect();
    char path[512];
    copy_t_killer k = { NULL, 2, 0, NULL };
    pgpipe_loader *l = copy_t_borrowed(mine, path, sizeof path, "cancel1.ndjson", copy_t_cancel_at, &k);
    PGT_EQ_INT(pgpipe_loader_load_file(l, path), PGPIPE_BUSY);
    PGT_CONTAINS(pgpipe_errmsg(l), "cancel");
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_CHECK(k.done);
    PGT_EQ_INT(s.batches, 2);
    PGT_EQ_INT(s.rows_loaded + s.rows_dead, 800);
    pgpipe_loader_close(l);
    PGT_EQ_INT(PQstatus(mine), CONNECTION_OK);
    PGT_EQ_INT(PQtransactionStatus(mine), PQTRANS_IDLE);
    PGT_EQ_INT(copy_t_loaded(mine, s.load_id), 800);
    PGT_EQ_INT(copy_t_dead(mine, s.load_id), 0);
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT status FROM pgpipe.loads WHERE id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(mine, sql), "interrupted");
    PQfinish(mine);
}

/* One connection, batches of 5: a batch whose every record is invalid (the
** COPY its predecessor's commit started carries no row), a batch with a row
** the server refuses (isolated; the batch after it starts its own COPY), a
** record split across feeds: every record once, loaded or dead-lettered. */
PGT_TEST(copy, one_lane_dead_and_refused_rows_across_boundaries)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS copy_t_lane1; CREATE TABLE copy_t_lane1 (n int NOT NULL)"));
    pp_buf in = { 0 };
    int want_dead = 0, want_loaded = 0;
    for (int i = 1; i <= 40; i++) {
        if (i >= 6 && i <= 10) { /* batch 2: every record invalid JSON */
            pp_buf_appendf(&in, "{\"n\":%d,}\n", i);
            want_dead++;
        } else if (i == 13 || i == 27) { /* refused by the server */
            pp_buf_appendf(&in, "{\"n\":\"x%d\"}\n", i);
            want_dead++;
        } else {
            pp_buf_appendf(&in, "{\"n\":%d}\n", i);
            want_loaded++;
        }
    }
    pgpipe_load_column cols[1] = { { "n", "n", NULL, 0 } };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.target = "copy_t_lane1";
    o.columns = cols;
    o.ncolumns = 1;
    o.batch_rows = 5;
    o.connections = 1;
    o.format = PGPIPE_FORMAT_NDJSON;
    pgpipe_loader *l = copy_t_open(&o);
    /* odd chunks: batch ends fall inside chunks and at their ends */
    for (size_t off = 0; off < in.len;) {
        size_t n = in.len - off < 23 ? in.len - off : 23;
        PGT_OK(pgpipe_loader_feed(l, in.data + off, n));
        off += n;
    }
    PGT_OK(pgpipe_loader_finish(l));
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_EQ_INT(s.records_read, 40);
    PGT_EQ_INT(s.rows_loaded, want_loaded);
    PGT_EQ_INT(s.rows_dead, want_dead);
    PGT_EQ_INT(s.batches, 8);
    PGT_EQ_INT(copy_t_int(c, "SELECT count(*) FROM copy_t_lane1"), want_loaded);
    PGT_EQ_INT(copy_t_int(c, "SELECT count(DISTINCT n) FROM copy_t_lane1"), want_loaded);
    PGT_EQ_INT(copy_t_dead(c, s.load_id), want_dead);
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT string_agg(line_number::text, ',' ORDER BY line_number) FROM "
             "pgpipe.dead_letters WHERE load_id = %lld", s.load_id);
    PGT_EQ_STR(copy_t_str(c, sql), "6,7,8,9,10,13,27");
    snprintf(sql, sizeof sql, "SELECT rows_read || ' ' || rows_loaded || ' ' || rows_dead_lettered "
             "FROM pgpipe.loads WHERE id = %lld", s.load_id);
    char want[64];
    snprintf(want, sizeof want, "40 %d %d", want_loaded, want_dead);
    PGT_EQ_STR(copy_t_str(c, sql), want);
    PGT_EQ_INT(PQtransactionStatus(pgpipe_loader_conn(l)), PQTRANS_IDLE);
    pgpipe_loader_close(l);
    PQclear(PGT_EXEC(c, "DROP TABLE copy_t_lane1"));
    pp_buf_free(&in);
    PQfinish(c);
}

/* The load's pgpipe.loads row stops being ours between two batches (as after
** a failover): the next batch's booking fails before its COMMIT, in the
** round trip that would have committed it, so none of its rows stay. */
PGT_TEST(copy, one_lane_load_row_not_ours_stops_before_commit)
{
    char tag[64];
    snprintf(tag, sizeof tag, "steal1_%ld", (long)getpid());
    pp_buf in = { 0 };
    for (int i = 0; i < 50; i++)
        pp_buf_appendf(&in, "{\"event_type\":\"%s\",\"n\":%d}\n", tag, i);
    /* after batch 2 the load's row stops being ours */
    copy_t_killer k = { NULL, 2, 0, "UPDATE pgpipe.loads SET started_at = started_at - interval '1 day' "
                                   "WHERE id = %lld" };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.batch_rows = 10;
    o.connections = 1;
    o.max_retries = 0;
    o.format = PGPIPE_FORMAT_NDJSON;
    o.progress = copy_t_sql_at_batch;
    o.progress_ud = &k;
    pgpipe_loader *l = copy_t_open(&o);
    k.l = l;
    int rc = pgpipe_loader_feed(l, in.data, in.len);
    int frc = pgpipe_loader_finish(l);
    PGT_CHECK(rc != PGPIPE_OK || frc != PGPIPE_OK);
    PGT_CHECK(k.done);
    PGT_CONTAINS(pgpipe_errmsg(l), "pgpipe.loads");
    PGconn *c = pgt_connect();
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE event_type = '%s'", tag);
    PGT_EQ_INT(copy_t_int(c, sql), 20);
    PGT_EQ_INT(PQtransactionStatus(pgpipe_loader_conn(l)), PQTRANS_IDLE);
    pgpipe_loader_close(l);
    pp_buf_free(&in);
    PQfinish(c);
}

/* ---- inputs that end or change under the load ------------------------------------ */

/* The source_checksum (the key) of a load. */
static const char *copy_t_key(PGconn *c, long long load_id)
{
    char sql[200];
    snprintf(sql, sizeof sql, "SELECT source_checksum FROM pgpipe.loads WHERE id = %lld", load_id);
    return copy_t_str(c, sql);
}

/* rows of the load in staging, and how many distinct payload n among them */
static void copy_t_once(PGconn *c, long long load_id, long long want)
{
    char sql[400];
    snprintf(sql, sizeof sql, "SELECT count(*) || ' ' || count(DISTINCT e.payload->>'n') FROM "
             "staging.raw_events e JOIN pgpipe.load_batches b ON b.batch_id = e.batch_id "
             "WHERE b.load_id = %lld", load_id);
    char w[64];
    snprintf(w, sizeof w, "%lld %lld", want, want);
    PGT_EQ_STR(copy_t_str(c, sql), w);
}

typedef struct copy_t_cutter {
    const char *path;
    off_t to;
    int done;
} copy_t_cutter;

static int copy_t_truncate_once(void *ud, const pgpipe_load_progress *p)
{
    copy_t_cutter *k = ud;
    (void)p;
    if (!k->done) {
        k->done = 1;
        PGT_CHECK(truncate(k->path, k->to) == 0);
    }
    return 0;
}

/* A file truncated while it is read: the load ends at the short end, fails
** naming the sizes, and commits nothing read after its last full batch. A
** run of the short file (a new default key) is refused, naming the load
** to resume; resumed with that key while still shorter than what was
** committed, it is refused; the whole file back, it loads the rest, every
** record once. */
PGT_TEST(copy, file_truncated_while_loading_fails)
{
    char path[512];
    copy_t_path(path, sizeof path, "trunc.ndjson");
    pp_buf all = { 0 };
    for (int i = 1; i <= 20000; i++)
        pp_buf_appendf(&all, "{\"event_type\":\"trunc\",\"n\":%d,\"pad\":\"%040d\"}\n", i, i);
    copy_t_write(path, all.data, all.len);
    const off_t cut = 300000;
    long long whole = 0; /* records entirely in the first cut bytes */
    for (off_t i = 0; i < cut; i++)
        whole += all.data[i] == '\n';
    copy_t_cutter k = { path, cut, 0 };
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.connections = 1;
    o.batch_rows = 100;
    o.progress = copy_t_truncate_once;
    o.progress_ud = &k;
    pgpipe_loader *l = copy_t_open(&o);
    int rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_IO, "rc %d: %s", rc, pgpipe_errmsg(l));
    PGT_CHECK(k.done);
    char want[400];
    snprintf(want, sizeof want, "shrank while it was read: it had %zu bytes when the load began, "
             "and ended after %lld", all.len, (long long)cut);
    PGT_CONTAINS(pgpipe_errmsg(l), want);
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    PGT_CHECK(s.rows_loaded > 0 && s.rows_loaded <= whole && s.rows_loaded % 100 == 0);
    snprintf(want, sizeof want, "load %lld has %lld records committed in %lld batches",
             s.load_id, s.rows_loaded, s.batches);
    PGT_CONTAINS(pgpipe_errmsg(l), want);
    pgpipe_loader_close(l);
    PGconn *c = pgt_connect();
    char sql[700];
    snprintf(sql, sizeof sql, "SELECT status || ' ' || rows_read || ' ' || (last_offset <= %lld) "
             "FROM pgpipe.loads WHERE id = %lld", (long long)cut, s.load_id);
    snprintf(want, sizeof want, "failed %lld true", s.rows_loaded);
    PGT_EQ_STR(copy_t_str(c, sql), want);
    copy_t_once(c, s.load_id, s.rows_loaded);
    char key[256];
    snprintf(key, sizeof key, "%s", copy_t_key(c, s.load_id));

    /* the short file again, without a key: refused, nothing written */
    o.progress = NULL;
    l = copy_t_open(&o);
    rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_MISUSE, "rc %d: %s", rc, pgpipe_errmsg(l));
    snprintf(want, sizeof want, "has changed since load %lld of it (failed) stopped after "
             "committing %lld records", s.load_id, s.rows_loaded);
    PGT_CONTAINS(pgpipe_errmsg(l), want);
    snprintf(want, sizeof want, "--key %s", key);
    PGT_CONTAINS(pgpipe_errmsg(l), want);
    pgpipe_loader_close(l);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.loads WHERE source = '%s'", path);
    PGT_EQ_INT(copy_t_int(c, sql), 1);

    /* resumed, but shorter than what the load committed: refused */
    PGT_CHECK(truncate(path, 50000) == 0);
    o.load_key = key;
    l = copy_t_open(&o);
    rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_IO, "rc %d: %s", rc, pgpipe_errmsg(l));
    snprintf(want, sizeof want, "inside what load %lld committed of it (%lld records", s.load_id,
             s.rows_loaded);
    PGT_CONTAINS(pgpipe_errmsg(l), want);
    copy_t_once(c, s.load_id, s.rows_loaded);

    /* the whole file back: the rest, every record once */
    copy_t_write(path, all.data, all.len);
    rc = pgpipe_loader_load_file(l, path);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
    pgpipe_load_summary s2;
    pgpipe_loader_summary(l, &s2);
    PGT_EQ_INT(s2.load_id, s.load_id);
    PGT_EQ_INT(s2.rows_skipped, s.rows_loaded);
    PGT_EQ_INT(s2.rows_loaded, 20000 - s.rows_loaded);
    copy_t_once(c, s.load_id, 20000);
    pgpipe_loader_close(l);
    pp_buf_free(&all);
    PQfinish(c);
}

/* A JSON array broken after two batches: the error says what stays committed
** and the key that goes on after it; the fixed file (another size and time,
** so another default key) is refused without the key, and with it loads the
** records after the committed ones: each record once. */
PGT_TEST(copy, broken_json_array_then_fixed_file_loads_each_record_once)
{
    PGconn *c = pgt_connect();
    for (int lanes = 1; lanes <= 2; lanes++) {
        char path[512], name[64];
        snprintf(name, sizeof name, "broken%d.json", lanes);
        copy_t_path(path, sizeof path, name);
        pp_buf good = { 0 }, bad = { 0 };
        pp_buf_appendf(&good, "[\n");
        pp_buf_appendf(&bad, "[\n");
        for (int i = 1; i <= 300; i++) {
            pp_buf_appendf(&good, "{\"event_type\":\"arr\",\"n\":%d}%s\n", i, i < 300 ? "," : "");
            /* the comma after element 251 is missing */
            pp_buf_appendf(&bad, "{\"event_type\":\"arr\",\"n\":%d}%s\n", i,
                           i < 300 && i != 251 ? "," : "");
        }
        pp_buf_appendf(&good, "]\n");
        pp_buf_appendf(&bad, "]\n");
        copy_t_write(path, bad.data, bad.len);
        pgpipe_loader_options o;
        pgpipe_loader_options_init(&o);
        o.connections = lanes;
        o.batch_rows = 100;
        pgpipe_loader *l = copy_t_open(&o);
        int rc = pgpipe_loader_load_file(l, path);
        PGT_CHECK_MSG(rc == PGPIPE_PARSE, "rc %d: %s", rc, pgpipe_errmsg(l));
        PGT_EQ_INT(pgpipe_errinfo(l)->line, 253);
        pgpipe_load_summary s;
        pgpipe_loader_summary(l, &s);
        PGT_EQ_INT(s.rows_loaded, 200);
        char want[400];
        snprintf(want, sizeof want, "load %lld has 200 records committed in 2 batches, which stay",
                 s.load_id);
        PGT_CONTAINS(pgpipe_errmsg(l), want);
        char key[256];
        snprintf(key, sizeof key, "%s", copy_t_key(c, s.load_id));
        snprintf(want, sizeof want, "run it again with --key %s", key);
        PGT_CONTAINS(pgpipe_errmsg(l), want);
        /* the error recorded with the load says it too */
        char sql[700];
        snprintf(sql, sizeof sql, "SELECT error_message FROM pgpipe.loads WHERE id = %lld",
                 s.load_id);
        PGT_CONTAINS(copy_t_str(c, sql), "200 records committed");
        pgpipe_loader_close(l);

        copy_t_write(path, good.data, good.len);
        l = copy_t_open(&o);
        rc = pgpipe_loader_load_file(l, path);
        PGT_CHECK_MSG(rc == PGPIPE_MISUSE, "rc %d: %s", rc, pgpipe_errmsg(l));
        PGT_CONTAINS(pgpipe_errmsg(l), "has changed since load");
        copy_t_once(c, s.load_id, 200);
        pgpipe_loader_close(l);

        o.load_key = key;
        l = copy_t_open(&o);
        rc = pgpipe_loader_load_file(l, path);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(l));
        pgpipe_load_summary s2;
        pgpipe_loader_summary(l, &s2);
        PGT_EQ_INT(s2.load_id, s.load_id);
        PGT_EQ_INT(s2.rows_skipped, 200);
        PGT_EQ_INT(s2.rows_loaded, 100);
        copy_t_once(c, s.load_id, 300);
        snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'",
                 path);
        PGT_EQ_INT(copy_t_int(c, sql), 300);
        pgpipe_loader_close(l);
        pp_buf_free(&good);
        pp_buf_free(&bad);
    }
    PQfinish(c);
}

/* A CSV header with a name twice, an empty name, a NUL byte or a byte that
** is not UTF-8 fails the load at once, naming the place: no row, no dead
** letter, no batch. */
PGT_TEST(copy, csv_header_refused_before_anything_is_written)
{
    static const struct {
        const char *data;
        size_t len;
        long long col;
        const char *msg;
    } cases[] = {
        { "id,kind,id\n1,a,2\n", 17, 9, "column 3 is named \"id\" like column 1" },
        { "id,,kind\n1,a,2\n", 15, 4, "column 2 has no name" },
        { "id,ki\0nd\n1,a\n", 13, 6, "the name of column 2 holds a NUL byte" },
        { "id,caf\xe9\n1,a\n2,b\n", 16, 7, "the name of column 2 is not valid UTF-8" },
    };
    PGconn *c = pgt_connect();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[512], name[32];
        snprintf(name, sizeof name, "head%zu.csv", i);
        copy_t_path(path, sizeof path, name);
        copy_t_write(path, cases[i].data, cases[i].len);
        pgpipe_loader_options o;
        pgpipe_loader_options_init(&o);
        o.event_type_value = "head";
        pgpipe_loader *l = copy_t_open(&o);
        int rc = pgpipe_loader_load_file(l, path);
        PGT_CHECK_MSG(rc == PGPIPE_ERROR, "rc %d: %s", rc, pgpipe_errmsg(l));
        const pgpipe_error *e = pgpipe_errinfo(l);
        PGT_EQ_STR(e->source, path);
        PGT_EQ_INT(e->line, 1);
        PGT_EQ_INT(e->column, cases[i].col);
        PGT_CONTAINS(e->message, cases[i].msg);
        pgpipe_load_summary s;
        pgpipe_loader_summary(l, &s);
        PGT_EQ_INT(s.records_read, 0);
        PGT_EQ_INT(copy_t_dead(c, s.load_id), 0);
        char sql[200];
        snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.load_batches WHERE load_id = %lld",
                 s.load_id);
        PGT_EQ_INT(copy_t_int(c, sql), 0);
        pgpipe_loader_close(l);
    }
    PQfinish(c);
}

/* A JSON value mapped into a json column keeps its members in the order
** they came (json stores the text); into jsonb it goes in jsonb's order
** (the server's input then has nothing to sort): a field's object, the whole
** NDJSON record and a CSV record as an object, in COPY text. */
PGT_TEST(copy, json_column_keeps_member_order)
{
    PGconn *c = pgt_connect();
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS copy_t_jorder; CREATE TABLE copy_t_jorder ("
                        "id int, doc json, docb jsonb, rec json, recb jsonb)"));
    char nd[512], csv[512], sql[300];
    copy_t_path(nd, sizeof nd, "jorder.ndjson");
    copy_t_path(csv, sizeof csv, "jorder.csv");
    FILE *f = fopen(nd, "w");
    PGT_CHECK(f != NULL);
    fprintf(f, "{\"id\":1,\"doc\":{\"zz\":1,\"a\":[1,2],\"m\":{\"y\":1,\"x\":2}}}\n");
    fclose(f);
    f = fopen(csv, "w");
    PGT_CHECK(f != NULL);
    fprintf(f, "id,zz,a\n2,x,y\n");
    fclose(f);
    for (int k = 0; k < 2; k++) {
        pgpipe_load_column nc[] = { { "id", "id", NULL, 0 }, { "doc", "doc", NULL, 1 },
                                    { "docb", "doc", NULL, 1 }, { "rec", "$record", NULL, 1 },
                                    { "recb", "$record", NULL, 1 } };
        pgpipe_loader_options o;
        pgpipe_loader_options_init(&o);
        o.target = "public.copy_t_jorder";
        o.columns = nc;
        o.ncolumns = 5;
        if (k) { /* CSV: the record only */
            nc[1] = nc[3];
            nc[2] = nc[4];
            o.ncolumns = 3;
        }
        pgpipe_loader *l = copy_t_open(&o);
        PGT_CHECK_MSG(pgpipe_loader_load_file(l, k ? csv : nd) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
        pgpipe_loader_close(l);
    }
    PGT_EQ_STR(copy_t_str(c, "SELECT doc::text FROM copy_t_jorder WHERE id = 1"),
               "{\"zz\":1,\"a\":[1,2],\"m\":{\"y\":1,\"x\":2}}");
    PGT_EQ_STR(copy_t_str(c, "SELECT docb::text FROM copy_t_jorder WHERE id = 1"),
               "{\"a\": [1, 2], \"m\": {\"x\": 2, \"y\": 1}, \"zz\": 1}");
    PGT_EQ_STR(copy_t_str(c, "SELECT rec::text FROM copy_t_jorder WHERE id = 1"),
               "{\"id\":1,\"doc\":{\"zz\":1,\"a\":[1,2],\"m\":{\"y\":1,\"x\":2}}}");
    PGT_EQ_STR(copy_t_str(c, "SELECT rec::text FROM copy_t_jorder WHERE id = 2"),
               "{\"id\":\"2\",\"zz\":\"x\",\"a\":\"y\"}");
    PGT_EQ_STR(copy_t_str(c, "SELECT recb::text FROM copy_t_jorder WHERE id = 2"),
               "{\"a\": \"y\", \"id\": \"2\", \"zz\": \"x\"}");
    snprintf(sql, sizeof sql, "SELECT count(*) FROM copy_t_jorder WHERE recb = rec::jsonb");
    PGT_EQ_INT(copy_t_int(c, sql), 2);
    PQclear(PGT_EXEC(c, "DROP TABLE copy_t_jorder"));
    PQfinish(c);
}
