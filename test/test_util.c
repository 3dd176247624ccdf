/* Tests of the shared foundation (src/base/util.c). */

/* "X.Y.Z" -> X*1000000 + Y*1000 + Z, or -1 when the text is not exactly
** three dot-separated numbers with Y and Z below 1000. */
static long util_t_version_number(const char *v)
{
    long part[3];
    const char *p = v;
    for (int i = 0; i < 3; i++) {
        if (i > 0 && *p++ != '.')
            return -1;
        if (!isdigit((unsigned char)*p))
            return -1;
        char *end;
        part[i] = strtol(p, &end, 10);
        p = end;
    }
    if (*p || part[1] > 999 || part[2] > 999)
        return -1;
    return part[0] * 1000000 + part[1] * 1000 + part[2];
}

PGT_TEST(util, version)
{
    /* the rule itself, on known texts */
    PGT_EQ_INT(util_t_version_number("1.2.3"), 1002003);
    PGT_EQ_INT(util_t_version_number("0.1.0"), 1000);
    PGT_EQ_INT(util_t_version_number("12.0.999"), 12000999);
    PGT_EQ_INT(util_t_version_number("1.2"), -1);
    PGT_EQ_INT(util_t_version_number("1.2.3-dev"), -1);
    PGT_EQ_INT(util_t_version_number("1.1000.0"), -1);
    /* the library reports what the header promises, and its number follows
    ** the rule from its text (a bump of one without the other fails here) */
    PGT_EQ_STR(pgpipe_libversion(), PGPIPE_VERSION);
    PGT_EQ_INT(pgpipe_libversion_number(), PGPIPE_VERSION_NUMBER);
    long want = util_t_version_number(pgpipe_libversion());
    PGT_CHECK_MSG(want >= 0, "\"%s\" is not X.Y.Z", pgpipe_libversion());
    PGT_EQ_INT(pgpipe_libversion_number(), want);
}

PGT_TEST(util, errstr_names_every_code)
{
    int codes[] = { PGPIPE_OK, PGPIPE_ERROR, PGPIPE_NOMEM, PGPIPE_MISUSE, PGPIPE_PARSE,
                    PGPIPE_DB, PGPIPE_BUSY, PGPIPE_IO, PGPIPE_LIMIT, PGPIPE_ROW, PGPIPE_DONE };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        PGT_CHECK(strcmp(pgpipe_errstr(codes[i]), "unknown result code") != 0);
        for (size_t j = 0; j < i; j++)
            PGT_CHECK(strcmp(pgpipe_errstr(codes[i]), pgpipe_errstr(codes[j])) != 0);
    }
    PGT_EQ_STR(pgpipe_errstr(12345), "unknown result code");
}

PGT_TEST(util, handle_errors)
{
    pp_handle h;
    pp_handle_init(&h);
    PGT_EQ_INT(pgpipe_errcode(&h), PGPIPE_OK);
    PGT_EQ_STR(pgpipe_errmsg(&h), "");
    PGT_EQ_INT(pp_err_at(&h.err, PGPIPE_PARSE, "events.csv", 3, 17, 120,
                         "expected ',' after field %d", 4), PGPIPE_PARSE);
    const pgpipe_error *e = pgpipe_errinfo(&h);
    PGT_EQ_INT(e->code, PGPIPE_PARSE);
    PGT_EQ_STR(e->source, "events.csv");
    PGT_EQ_INT(e->line, 3);
    PGT_EQ_INT(e->column, 17);
    PGT_EQ_INT(e->offset, 120);
    char buf[256];
    pgpipe_error_format(e, buf, sizeof buf);
    PGT_EQ_STR(buf, "events.csv:3:17: expected ',' after field 4");

    /* a later error replaces every field */
    pp_err(&h.err, PGPIPE_MISUSE, "bad option");
    PGT_EQ_INT(e->line, 0);
    PGT_EQ_STR(e->source, "");
    pgpipe_error_format(e, buf, sizeof buf);
    PGT_EQ_STR(buf, "bad option");

    /* NULL is what an opener leaves when it could not allocate */
    PGT_EQ_INT(pgpipe_errcode(NULL), PGPIPE_NOMEM);
    int not_a_handle[8] = { 0 };
    PGT_EQ_INT(pgpipe_errcode(not_a_handle), PGPIPE_MISUSE);
}

PGT_TEST(util, error_messages_are_one_line_and_masked)
{
    pgpipe_error e;
    pp_err(&e, PGPIPE_DB, "could not connect to \"host=db password=hunter2 user=app\"\n");
    PGT_CHECK(strstr(e.message, "hunter2") == NULL);
    PGT_CONTAINS(e.message, "password=********");
    PGT_CHECK(strchr(e.message, '\n') == NULL);
}

static void mask_case(const char *in, const char *want)
{
    char out[512];
    size_t n = pgpipe_conninfo_mask(in, out, sizeof out);
    PGT_EQ_STR(out, want);
    PGT_EQ_INT(n, strlen(want));
}

/* pgpipe_error_format says each part once: no "fields:1:9: fields: ..." and
** no "... at line 1, column 9" after a prefix that gives it; column 0 (not
** known) is left out */
PGT_TEST(util, error_format_says_the_place_once)
{
    pgpipe_error e;
    char buf[512];
    pgpipe_error_clear(&e);
    pp_err_at(&e, PGPIPE_PARSE, "fields", 1, 9, 8,
              "fields: expected a value after ':', found the end of the input at line 1, column 9");
    pgpipe_error_format(&e, buf, sizeof buf);
    PGT_EQ_STR(buf, "fields:1:9: expected a value after ':', found the end of the input");
    PGT_CONTAINS(e.message, "fields: expected"); /* the message itself keeps both */
    pp_err_at(&e, PGPIPE_PARSE, "a.json", 2, 0, 5, "expected '[' at line 2 (byte offset 5)");
    pgpipe_error_format(&e, buf, sizeof buf);
    PGT_EQ_STR(buf, "a.json:2: expected '[' at line 2 (byte offset 5)");
    /* another place in the message than the error's own stays */
    pp_err_at(&e, PGPIPE_PARSE, "b.csv", 3, 4, 0, "quote opened at line 1, column 2");
    pgpipe_error_format(&e, buf, sizeof buf);
    PGT_EQ_STR(buf, "b.csv:3:4: quote opened at line 1, column 2");
    /* a message that is only the source's name is not emptied of it */
    pp_err_at(&e, PGPIPE_PARSE, "x", 1, 1, 0, "xy: z");
    pgpipe_error_format(&e, buf, sizeof buf);
    PGT_EQ_STR(buf, "x:1:1: xy: z");
}

PGT_TEST(util, conninfo_mask)
{
    mask_case("host=db user=app password=hunter2 dbname=x",
              "host=db user=app password=******** dbname=x");
    mask_case("host=db password = 'hunter 2\\' x' sslmode=require",
              "host=db password = ******** sslmode=require");
    mask_case("PASSWORD=abc", "PASSWORD=********");
    mask_case("postgresql://app:s3cr%40t@db.example:5432/prod?sslmode=require",
              "postgresql://app:********@db.example:5432/prod?sslmode=require");
    mask_case("postgres://db/prod?user=app&password=abc&sslmode=disable",
              "postgres://db/prod?user=app&password=********&sslmode=disable");
    mask_case("postgresql://app@db/prod", "postgresql://app@db/prod");
    mask_case("connect to postgresql://u:pw@h failed", "connect to postgresql://u:********@h failed");
    mask_case("host=db passfile=/x", "host=db passfile=/x");
    /* any keyword ending in "password" (sslpassword: the client key's passphrase) */
    mask_case("mypassword=abc", "mypassword=********");
    mask_case("host=db sslpassword=hunter2 x=1", "host=db sslpassword=******** x=1");
    mask_case("passwords are checked", "passwords are checked");
    mask_case("", "");
    /* bounded output still NUL-terminates and reports the full length */
    char small[8];
    size_t n = pgpipe_conninfo_mask("password=abcdef", small, sizeof small);
    PGT_EQ_INT(n, strlen("password=********"));
    PGT_EQ_STR(small, "passwor");
}

typedef struct log_capture {
    int calls, level;
    char component[32], message[256], key[32], value[256];
} log_capture;

static void capture_log(void *ud, int level, const char *component, const char *message,
                        const pgpipe_log_field *fields, int nfields)
{
    log_capture *c = ud;
    c->calls++;
    c->level = level;
    snprintf(c->component, sizeof c->component, "%s", component);
    snprintf(c->message, sizeof c->message, "%s", message);
    if (nfields > 0) {
        snprintf(c->key, sizeof c->key, "%s", fields[0].key);
        snprintf(c->value, sizeof c->value, "%s", fields[0].value);
    }
}

/* The value is masked whole as libpq's conninfo_parse reads it: double
** quotes are not quoting in keyword=value, '#', '&' and '"' are part of an
** unquoted value, a backslash escapes a blank; checked against libpq's own
** parse: what it reads as a password never shows in the masked text. */
PGT_TEST(util, conninfo_mask_libpq_rules)
{
    mask_case("host=db user=app password=\"hunter2\"", "host=db user=app password=********");
    mask_case("host=db password=abc\"hunter2 x=1", "host=db password=******** x=1");
    mask_case("host=db password=abc#hunter2 x=1", "host=db password=******** x=1");
    mask_case("host=db password=abc&hunter2 x=1", "host=db password=******** x=1");
    mask_case("host=db password=abc\\ hunter2 x=1", "host=db password=******** x=1");
    mask_case("host=db password='a\\'b c' x=1", "host=db password=******** x=1");
    mask_case("host=db SSLPassword = 'hunter 2' x=1", "host=db SSLPassword = ******** x=1");
    mask_case("postgresql://db/p?sslmode=require&sslpassword=hunter2&x=1",
              "postgresql://db/p?sslmode=require&sslpassword=********&x=1");
    mask_case("postgresql://db/p?password=a#hunter2", "postgresql://db/p?password=********");
    mask_case("postgresql://app:ab?hunter2@db/p", "postgresql://app:********@db/p");
    const char *kv[] = {
        "host=db user=app password=\"hunter2\"", "host=db password=abc\"hunter2",
        "host=db password=abc#hunter2", "host=db password=abc&hunter2",
        "host=db password=abc\\ hunter2", "host=db sslpassword=hunter2",
        "host=db password='hunter2\\' x'", "host=db password=\\hunter2\\ \\x",
        "postgresql://app:hun%74er2@db/p", "postgresql://db/p?password=hunter2&sslpassword=hunter2",
        "postgresql://app:hunter2?x@db/p",
    };
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        char out[256];
        pgpipe_conninfo_mask(kv[i], out, sizeof out);
        PQconninfoOption *opts = PQconninfoParse(kv[i], NULL);
        PGT_CHECK_MSG(opts != NULL, "libpq refuses %s", kv[i]);
        for (PQconninfoOption *o = opts; o->keyword; o++)
            if (o->val && *o->val && strstr(o->keyword, "password"))
                PGT_CHECK_MSG(strstr(out, o->val) == NULL && strstr(out, "hunter") == NULL,
                              "%s -> %s shows libpq's %s [%s]", kv[i], out, o->keyword, o->val);
        PQconninfoFree(opts);
    }
}

/* NULL where the API takes a pointer: every options_init is a no-op on
** NULL, and a log line with fields NULL (nfields > 0) has no fields. */
PGT_TEST(util, null_options_init_and_log_fields)
{
    pgpipe_csv_options_init(NULL);
    pgpipe_pool_options_init(NULL);
    pgpipe_spool_options_init(NULL);
    pgpipe_loader_options_init(NULL);
    pgpipe_http_options_init(NULL);
    pgpipe_claim_options_init(NULL);
    pgpipe_workers_options_init(NULL);
    pgpipe_dlq_filter_init(NULL);
    pgpipe_local_options_init(NULL);
    char b[256];
    int n = pgpipe_log_format_line(b, sizeof b, 0, PGPIPE_LOG_ERROR, "c", "m", NULL, 3);
    PGT_EQ_INT(n, (int)strlen(b));
    PGT_CONTAINS(b, "component=c msg=m");
    n = pgpipe_log_format_line(b, sizeof b, 1, PGPIPE_LOG_ERROR, "c", "m", NULL, 3);
    PGT_CHECK(n > 0 && b[n - 1] == '}');
    pgpipe_log(PGPIPE_LOG_DEBUG, "c", "m", NULL, 3);
    PGT_EQ_INT(pgpipe_http_open(NULL, NULL), PGPIPE_MISUSE);
}

PGT_TEST(util, log_callback_level_and_masking)
{
    log_capture cap;
    memset(&cap, 0, sizeof cap);
    pgpipe_config_log(capture_log, &cap);
    pgpipe_log_set_level(PGPIPE_LOG_INFO);
    pgpipe_log(PGPIPE_LOG_DEBUG, "pool", "not shown", NULL, 0);
    PGT_EQ_INT(cap.calls, 0);
    pgpipe_log_field f = { "conninfo", "host=h password=topsecret" };
    pgpipe_log(PGPIPE_LOG_WARN, "pool", "reconnecting to postgresql://u:topsecret@h", &f, 1);
    PGT_EQ_INT(cap.calls, 1);
    PGT_EQ_INT(cap.level, PGPIPE_LOG_WARN);
    PGT_EQ_STR(cap.component, "pool");
    PGT_EQ_STR(cap.message, "reconnecting to postgresql://u:********@h");
    PGT_EQ_STR(cap.key, "conninfo");
    PGT_EQ_STR(cap.value, "host=h password=********");
    pp_logf(PGPIPE_LOG_ERROR, "loader", "batch %d failed", 7);
    PGT_EQ_INT(cap.calls, 2);
    PGT_EQ_STR(cap.message, "batch 7 failed");
    pgpipe_config_log(NULL, NULL);
}

PGT_TEST(util, log_line_formats)
{
    char line[512];
    pgpipe_log_field f[2] = { { "rows", "1000" }, { "file", "my data.csv" } };
    pgpipe_log_format_line(line, sizeof line, 0, PGPIPE_LOG_INFO, "loader", "batch \"3\" done", f, 2);
    PGT_CHECK(strncmp(line, "ts=", 3) == 0);
    PGT_CONTAINS(line, " level=info component=loader msg=\"batch \\\"3\\\" done\" rows=1000 file=\"my data.csv\"");
    PGT_CHECK(strchr(line, '\n') == NULL);
    pgpipe_log_format_line(line, sizeof line, 1, PGPIPE_LOG_ERROR, "pool", "a\nb", f, 1);
    PGT_CHECK(strncmp(line, "{\"ts\":\"", 7) == 0);
    PGT_CONTAINS(line, ",\"level\":\"error\",\"component\":\"pool\",\"msg\":\"a\\nb\",\"rows\":\"1000\"}");
}

/* The default writer, observed on a pipe in place of stderr. */
static void default_writer_case(const char *format, const char *want)
{
    int fds[2];
    PGT_CHECK(pipe(fds) == 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    setenv("PGPIPE_LOG", "info", 1);
    setenv("PGPIPE_LOG_FORMAT", format, 1);
    pgpipe_log_set_level(-1);
    pgpipe_log(PGPIPE_LOG_DEBUG, "t", "hidden", NULL, 0);
    pgpipe_log(PGPIPE_LOG_INFO, "t", "shown password=xyz", NULL, 0);
    dup2(saved, STDERR_FILENO);
    close(fds[1]);
    char buf[1024];
    ssize_t n = read(fds[0], buf, sizeof buf - 1);
    close(fds[0]);
    PGT_CHECK(n > 0);
    buf[n] = '\0';
    PGT_CONTAINS(buf, want);
    PGT_CHECK(strstr(buf, "hidden") == NULL);
    PGT_CHECK(strstr(buf, "xyz") == NULL);
    PGT_CHECK(strchr(buf, '\n') == buf + n - 1); /* exactly one line */
}

PGT_TEST(util, default_log_writer_logfmt)
{
    default_writer_case("text", "level=info component=t msg=\"shown password=********\"");
}

PGT_TEST(util, default_log_writer_json)
{
    default_writer_case("json", "\"level\":\"info\",\"component\":\"t\",\"msg\":\"shown password=********\"}");
}

typedef struct counting_alloc {
    long mallocs, reallocs, frees;
    int fail;
} counting_alloc;

static void *ca_malloc(void *ud, size_t n)
{
    counting_alloc *a = ud;
    if (a->fail)
        return NULL;
    a->mallocs++;
    return malloc(n);
}
static void *ca_realloc(void *ud, void *p, size_t n)
{
    counting_alloc *a = ud;
    if (a->fail)
        return NULL;
    a->reallocs++;
    return realloc(p, n);
}
static void ca_free(void *ud, void *p)
{
    counting_alloc *a = ud;
    a->frees++;
    free(p);
}

PGT_TEST(util, allocator_is_replaceable)
{
    counting_alloc ca = { 0, 0, 0, 0 };
    pgpipe_allocator a = { ca_malloc, ca_realloc, ca_free, &ca };
    PGT_OK(pgpipe_config_allocator(&a));
    char *s = pp_strdup("hello");
    PGT_EQ_STR(s, "hello");
    pp_buf b = { NULL, 0, 0 };
    PGT_OK(pp_buf_appendf(&b, "%s-%d", s, 42));
    PGT_EQ_MEM(b.data, b.len, "hello-42", 8);
    pp_buf_free(&b);
    pp_free(s);
    PGT_EQ_INT(ca.mallocs, 1);
    PGT_CHECK(ca.reallocs >= 1);
    PGT_EQ_INT(ca.frees, 2);

    ca.fail = 1; /* an exhausted allocator gives PGPIPE_NOMEM, not a crash */
    PGT_CHECK(pp_strdup("x") == NULL);
    PGT_EQ_INT(pp_buf_append(&b, "abc", 3), PGPIPE_NOMEM);
    PGT_EQ_INT(b.len, 0);

    pgpipe_allocator bad = { ca_malloc, NULL, ca_free, &ca };
    PGT_EQ_INT(pgpipe_config_allocator(&bad), PGPIPE_MISUSE);
    PGT_OK(pgpipe_config_allocator(NULL));
    s = pp_strdup("system");
    PGT_EQ_STR(s, "system");
    pp_free(s);
}

/* Appends to names[*n] the .sql files under TOP/sql/REL, as paths relative
** to sql/ (the names the index uses). */
static void util_t_sql_files(const char *top, const char *rel, char names[][256], int *n, int max)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/sql%s%s", top, *rel ? "/" : "", rel);
    DIR *d = opendir(dir);
    PGT_CHECK_MSG(d != NULL, "cannot open %s (PGPIPE_TOP names the source tree)", dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char sub[600], full[1700];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", dir, e->d_name);
        struct stat st;
        PGT_CHECK(stat(full, &st) == 0);
        if (S_ISDIR(st.st_mode)) {
            util_t_sql_files(top, sub, names, n, max);
        } else {
            size_t len = strlen(sub);
            if (S_ISREG(st.st_mode) && len > 4 && strcmp(sub + len - 4, ".sql") == 0) {
                PGT_CHECK(*n < max && len < 256);
                memcpy(names[(*n)++], sub, len + 1);
            }
        }
    }
    closedir(d);
}

static int util_t_strcmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The index of embedded SQL is the sql/ folder on disk: the same files, in
** byte order of their paths, each with the same text. */
PGT_TEST(util, embedded_sql_index)
{
    const char *top = getenv("PGPIPE_TOP");
    static char disk[256][256];
    int ndisk = 0;
    util_t_sql_files(top && *top ? top : ".", "", disk, &ndisk, 256);
    qsort(disk, (size_t)ndisk, sizeof disk[0], util_t_strcmp);
    PGT_CHECK(ndisk >= 3);
    int n = pgpipe_sql_file_count();
    PGT_EQ_INT(n, ndisk);
    for (int i = 0; i < n; i++) {
        const char *p = pgpipe_sql_file_path(i);
        PGT_EQ_STR(p, disk[i]);
        if (i > 0)
            PGT_CHECK(strcmp(pgpipe_sql_file_path(i - 1), p) < 0);
        const char *s = pgpipe_sql_file(p);
        PGT_CHECK(s != NULL);
        PGT_CHECK(pgpipe_sql_file(p) == s); /* built once */
        char path[1400];
        snprintf(path, sizeof path, "%s/sql/%s", top && *top ? top : ".", p);
        FILE *f = fopen(path, "rb");
        PGT_CHECK_MSG(f != NULL, "cannot open %s", path);
        pp_buf text = { 0 };
        char chunk[4096];
        size_t got;
        while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
            PGT_OK(pp_buf_append(&text, chunk, got));
        fclose(f);
        PGT_EQ_MEM(s, strlen(s), text.data, text.len);
        pp_buf_free(&text);
    }
    PGT_CHECK(pgpipe_sql_file_path(n) == NULL);
    PGT_CHECK(pgpipe_sql_file_path(-1) == NULL);
    PGT_CHECK(pgpipe_sql_file("no/such/file.sql") == NULL);
    PGT_CHECK(pgpipe_sql_file(NULL) == NULL);
}

PGT_TEST(util, clock_and_sleep)
{
    int64_t t0 = pgpipe_now_us();
    pgpipe_sleep_ms(5);
    PGT_CHECK(pgpipe_now_us() - t0 >= 5000); /* monotonic and slept at least that */
}
