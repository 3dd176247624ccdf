/* API pull (src/pull): the URL, Link and cursor helpers, then pages from a
** real HTTP server (test/pull_server.py, one per test) into staging of the
** test cluster: every pagination style, incremental cursors and backfill,
** dead letters, incomplete pagination, the politeness faults (429/503 with
** Retry-After, 5xx, a dropped connection, a stall, rate-limit headers,
** gzip), secrets, and kill -9 in the middle of a run. */

#include <pthread.h>
#include <sys/prctl.h>
#include <sys/stat.h>

PGT_TEST(pull, url_params)
{
    pp_buf b = { 0 };
    char v[64];
    PGT_OK(pp_pull_param_set(&b, "http://h/x?a=1&cursor=old&b=2#frag", "cursor", "n x/y"));
    PGT_EQ_STR(b.data, "http://h/x?a=1&b=2&cursor=n%20x%2Fy");
    PGT_CHECK(pp_pull_param_get(b.data, "cursor", v, sizeof v));
    PGT_EQ_STR(v, "n x/y");
    PGT_CHECK(!pp_pull_param_get(b.data, "curs", v, sizeof v));
    PGT_OK(pp_pull_param_set(&b, "http://h/x", "page", "2"));
    PGT_EQ_STR(b.data, "http://h/x?page=2");
    PGT_OK(pp_pull_param_set(&b, "http://h/x?page=1", "page", NULL));
    PGT_EQ_STR(b.data, "http://h/x");
    pp_buf_free(&b);

    char t[256];
    PGT_CHECK(pp_pull_link_next("<https://a/p?page=1>; rel=\"first\", <https://a/p?page=3>; rel=\"next\"",
                                t, sizeof t));
    PGT_EQ_STR(t, "https://a/p?page=3");
    PGT_CHECK(pp_pull_link_next("</p?x=1,2>; title=\"a, b\"; rel=\"prev next\"", t, sizeof t));
    PGT_EQ_STR(t, "/p?x=1,2");
    PGT_CHECK(!pp_pull_link_next("<https://a/p?page=1>; rel=\"prev\"", t, sizeof t));
    PGT_CHECK(!pp_pull_link_next("<https://a/p?page=1>; rel=\"nextpage\"", t, sizeof t));

    int num;
    PGT_EQ_INT(pp_pull_cursor_cmp("10", "9", &num), 1);
    PGT_EQ_INT(num, 1);
    PGT_EQ_INT(pp_pull_cursor_cmp("00012", "12", NULL), 0);
    PGT_EQ_INT(pp_pull_cursor_cmp("2026-01-02T00:00:00Z", "2026-01-10T00:00:00Z", &num), -1);
    PGT_EQ_INT(num, 0);
    PGT_EQ_INT(pp_pull_cursor_cmp("1.5", "10", &num), -1);
    PGT_EQ_INT(num, 1);
}

PGT_TEST(pull, mask)
{
    char m[256];
    pgpipe_pull_mask(NULL, "GET https://a/x?page=2&api_key=SECRET1&access_token=T0K&q=1 failed", m,
                     sizeof m);
    PGT_EQ_STR(m, "GET https://a/x?page=2&api_key=***&access_token=***&q=1 failed");
    PGT_CHECK(!strstr(m, "SECRET1"));
    /* the ": " after a URL that ends in a secret stays */
    pgpipe_pull_mask(NULL, "pull: http://h/x?api_key=SEK:RIT: Failed to connect", m, sizeof m);
    PGT_EQ_STR(m, "pull: http://h/x?api_key=***: Failed to connect");
    /* a URL's password, wherever the URL is in the text */
    pgpipe_pull_mask(NULL, "GET https://bob:hunter2@api.x/v1 and \"http://u:p%40ss@h:8/\"", m,
                     sizeof m);
    PGT_EQ_STR(m, "GET https://bob:***@api.x/v1 and \"http://u:***@h:8/\"");
    pgpipe_pull_mask(NULL, "https://bob@api.x/a:b@c", m, sizeof m);
    PGT_EQ_STR(m, "https://bob@api.x/a:b@c");
    size_t n = pgpipe_pull_mask(NULL, "https://a/?sig=abc", m, 8);
    PGT_EQ_INT((long long)n, 18);
    PGT_EQ_STR(m, "https:/");
}

#ifdef PGPIPE_ENABLE_CURL

static void pl_t_budget(void)
{
    pgpipe_pull_budget *b;
    PGT_OK(pgpipe_pull_budget_open(&b, 10, 2));
    PGT_EQ_INT((long long)pull_budget_take(b), 0);
    PGT_EQ_INT((long long)pull_budget_take(b), 0);
    int64_t w = pull_budget_take(b); /* the burst is spent: about 100 ms */
    PGT_CHECK(w > 0 && w <= 100001);
    pull_budget_pause(b, 5000000);
    PGT_CHECK(pull_budget_take(b) > 4000000);
    pgpipe_pull_budget_close(b);
    PGT_OK(pgpipe_pull_budget_open(&b, 0, 1)); /* unlimited */
    for (int i = 0; i < 100; i++)
        PGT_EQ_INT((long long)pull_budget_take(b), 0);
    pgpipe_pull_budget_close(b);
}

/* ---- the test server ------------------------------------------------------ */

static char pl_base[64];

static void pl_server(void)
{
    char pf[600];
    snprintf(pf, sizeof pf, "%s/pull-port.%d", pgt_tmpdir(), (int)getpid());
    unlink(pf);
    const char *top = getenv("PGPIPE_TOP");
    char script[600];
    snprintf(script, sizeof script, "%s/test/pull_server.py", top ? top : ".");
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    PGT_CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execlp("python3", "python3", script, "--port-file", pf, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200; i++) {
        FILE *f = fopen(pf, "r");
        if (f) {
            int port = 0;
            if (fscanf(f, "%d", &port) == 1 && port > 0) {
                fclose(f);
                snprintf(pl_base, sizeof pl_base, "http://127.0.0.1:%d", port);
                return;
            }
            fclose(f);
        }
        pgpipe_sleep_ms(50);
    }
    PGT_CHECK_MSG(0, "the test server did not start (python3 %s)", script);
}

/* A counter of the server's /stats. */
static size_t pl_collect(char *d, size_t s, size_t n, void *ud)
{
    pp_buf_append(ud, d, s * n);
    return s * n;
}
static long long pl_stat(const char *name)
{
    char url[128];
    snprintf(url, sizeof url, "%s/stats", pl_base);
    pp_buf b = { 0 };
    CURL *c = curl_easy_init();
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, pl_collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
    PGT_CHECK(curl_easy_perform(c) == CURLE_OK);
    curl_easy_cleanup(c);
    pgpipe_json_doc *d;
    PGT_OK(pgpipe_json_doc_open(&d));
    PGT_OK(pgpipe_json_parse(d, b.data, b.len));
    int64_t v = -1;
    pgpipe_json_get_int64(pgpipe_json_obj_get(pgpipe_json_root(d), name, strlen(name)), &v);
    pgpipe_json_doc_close(d);
    pp_buf_free(&b);
    return (long long)v;
}

static void pl_clean(PGconn *c, const char *source)
{
    char q[512];
    snprintf(q, sizeof q,
             "DELETE FROM staging.raw_events WHERE source = '%s';"
             "DELETE FROM pgpipe.dead_letters WHERE source_name = '%s';"
             "DELETE FROM pgpipe.pull_state WHERE source = '%s';"
             "DELETE FROM pgpipe.pull_runs WHERE source = '%s'", source, source, source, source);
    PQclear(PGT_EXEC(c, q));
}

static long long pl_count(PGconn *c, const char *source, const char *what)
{
    char q[512];
    snprintf(q, sizeof q, "SELECT %s FROM staging.raw_events WHERE source = '%s'", what, source);
    return pgt_db_int(c, q);
}

/* Options for source name against path (below the server) of the server. */
static char pl_url[512];
static void pl_opts(pgpipe_pull_options *o, const char *source, const char *path)
{
    pgpipe_pull_options_init(o);
    o->conninfo = pgt_dsn();
    o->source = source;
    snprintf(pl_url, sizeof pl_url, "%s%s", pl_base, path);
    o->url = pl_url;
    o->retry_budget_ms = 20000;
    o->timeout_ms = 5000;
}

static int pl_run(const pgpipe_pull_options *o, pgpipe_pull_progress *pr, char *err, size_t errlen)
{
    pgpipe_pull *p = NULL;
    int rc = pgpipe_pull_open(&p, o);
    if (rc == PGPIPE_OK)
        rc = pgpipe_pull_run(p);
    if (err)
        snprintf(err, errlen, "%s", rc == PGPIPE_OK ? "" : pgpipe_errmsg(p));
    if (pr)
        pgpipe_pull_progress_get(p, pr);
    if (rc != PGPIPE_OK && !err)
        fprintf(stderr, "    pull: %s\n", pgpipe_errmsg(p));
    pgpipe_pull_close(p);
    return rc;
}

/* ---- styles, state ---------------------------------------------------------- */

static void pl_t_link_pages(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_link");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_link", "/link?n=95&per=10");
    o.paginate = PGPIPE_PULL_LINK;
    o.stream = "users";
    pgpipe_pull_progress pr;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pr.pages, 10);
    PGT_EQ_INT(pr.records, 95);
    PGT_EQ_INT(pl_count(c, "pl_link", "count(*)"), 95);
    PGT_EQ_INT(pl_count(c, "pl_link", "count(DISTINCT payload->>'id')"), 95);
    PGT_EQ_INT(pl_count(c, "pl_link", "count(*) FILTER (WHERE event_type = 'users')"), 95);
    PGT_EQ_INT(pl_count(c, "pl_link", "count(DISTINCT batch_id)"), 10);
    PGT_EQ_STR(pgt_db_str(c, "SELECT coalesce(next_url, 'none') || ' ' || last_status || ' ' || pages "
                             "FROM pgpipe.pull_state WHERE source = 'pl_link'"), "none done 10");
    PGT_EQ_STR(pgt_db_str(c, "SELECT status || ' ' || records FROM pgpipe.pull_runs WHERE source = 'pl_link'"),
               "done 95");
    pgt_db_close(c);
}

static void pl_t_cursor_incremental(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_cur");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_cur", "/cursor?n=25&per=10&opaque=1");
    o.paginate = PGPIPE_PULL_CURSOR;
    o.records = "$.data.items";
    o.cursor_path = "$.next_cursor";
    o.more_path = "has_more";
    o.event_type_field = "type";
    PGT_OK(pl_run(&o, NULL, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_cur", "count(*)"), 25);
    PGT_EQ_INT(pl_count(c, "pl_cur", "count(DISTINCT event_type)"), 3);
    /* the API's own cursor at the end is kept; the next run starts there */
    PGT_EQ_STR(pgt_db_str(c, "SELECT cursor FROM pgpipe.pull_state WHERE source = 'pl_cur'"), "c25z");
    pl_opts(&o, "pl_cur", "/cursor?n=32&per=10&opaque=1");
    o.paginate = PGPIPE_PULL_CURSOR;
    o.records = "data.items";
    o.cursor_path = "next_cursor";
    o.more_path = "has_more";
    PGT_OK(pl_run(&o, NULL, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_cur", "count(*)"), 32);
    PGT_EQ_INT(pl_count(c, "pl_cur", "count(DISTINCT payload->>'id')"), 32);
    pgt_db_close(c);
}

static void pl_t_since_and_backfill(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_since");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_since", "/offset?n=30");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    o.since_field = "id";
    PGT_OK(pl_run(&o, NULL, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_since", "count(*)"), 30);
    PGT_EQ_STR(pgt_db_str(c, "SELECT cursor FROM pgpipe.pull_state WHERE source = 'pl_since'"), "30");
    /* the next run asks only for what is newer */
    pl_opts(&o, "pl_since", "/offset?n=37");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    o.since_field = "id";
    PGT_OK(pl_run(&o, NULL, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_since", "count(*)"), 37);
    PGT_EQ_INT(pl_count(c, "pl_since", "count(DISTINCT payload->>'id')"), 37);
    PGT_EQ_STR(pgt_db_str(c, "SELECT cursor FROM pgpipe.pull_state WHERE source = 'pl_since' AND scope = ''"), "37");
    /* a backfill loads its range and leaves the incremental cursor alone */
    o.backfill_from = "20";
    o.backfill_to = "37";
    PGT_OK(pl_run(&o, NULL, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_since", "count(*)"), 37 + 17);
    PGT_EQ_STR(pgt_db_str(c, "SELECT cursor FROM pgpipe.pull_state WHERE source = 'pl_since' AND scope = ''"), "37");
    PGT_EQ_STR(pgt_db_str(c, "SELECT scope || ' ' || last_status FROM pgpipe.pull_state "
                             "WHERE source = 'pl_since' AND scope <> ''"), "backfill 20..37 done");
    pgt_db_close(c);
}

static void pl_t_page_numbers(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_page");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_page", "/page?n=23&per_page=5");
    o.paginate = PGPIPE_PULL_PAGE;
    o.records = "results";
    o.pages_path = "total_pages";
    o.total_path = "total";
    pgpipe_pull_progress pr;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pr.pages, 5);
    PGT_EQ_INT(pl_count(c, "pl_page", "count(DISTINCT payload->>'id')"), 23);
    /* max_pages: a run stops after 2 pages, the next one continues */
    pl_clean(c, "pl_page");
    o.max_pages = 2;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_page", "count(*)"), 10);
    PGT_CONTAINS(pgt_db_str(c, "SELECT next_url FROM pgpipe.pull_state WHERE source = 'pl_page'"), "page=3");
    o.max_pages = 0;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_page", "count(*)"), 23);
    PGT_EQ_INT(pl_count(c, "pl_page", "count(DISTINCT payload->>'id')"), 23);
    pgt_db_close(c);
}

/* A record array with elements that are not objects: each is a dead
** letter saying so, the objects are staged, nothing is lost or staged as a
** bare scalar. */
static void pl_t_non_objects(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_nonobj");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_nonobj", "/link?n=5&per=10&nonobj=1");
    o.paginate = PGPIPE_PULL_LINK;
    pgpipe_pull_progress pr;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pr.records, 5);
    PGT_EQ_INT(pr.dead_lettered, 4);
    PGT_EQ_INT(pl_count(c, "pl_nonobj", "count(*)"), 5);
    PGT_EQ_INT(pl_count(c, "pl_nonobj", "count(*) FILTER (WHERE jsonb_typeof(payload) <> 'object')"), 0);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = 'pl_nonobj'"), 4);
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_message FROM pgpipe.dead_letters WHERE source_name = "
                               "'pl_nonobj' AND line_number = 6"), "the record is a JSON number, not an object");
    PGT_EQ_STR(pgt_db_str(c, "SELECT raw_text FROM pgpipe.dead_letters WHERE source_name = "
                             "'pl_nonobj' AND line_number = 7"), "\"x\"");
    pl_clean(c, "pl_nonobj");
    pgt_db_close(c);
}

static void pl_t_dead_letters(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_dlq");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_dlq", "/link?n=30&per=10&bad=13,15");
    o.paginate = PGPIPE_PULL_LINK;
    o.event_type_field = "$.type";
    pgpipe_pull_progress pr;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pr.records, 28);
    PGT_EQ_INT(pr.dead_lettered, 2);
    PGT_EQ_INT(pl_count(c, "pl_dlq", "count(*)"), 28);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = 'pl_dlq'"), 2);
    /* the URL and the position */
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_context FROM pgpipe.dead_letters WHERE source_name = 'pl_dlq' "
                               "AND line_number = 3"), "page 2 record 3: GET http://127.0.0.1:");
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_context FROM pgpipe.dead_letters WHERE source_name = 'pl_dlq' "
                               "AND line_number = 3"), "/link?");
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_message FROM pgpipe.dead_letters WHERE source_name = 'pl_dlq' "
                               "AND line_number = 5"), "\\u0000");
    PGT_EQ_INT(pgt_db_int(c, "SELECT (raw_text::jsonb->>'id')::int FROM pgpipe.dead_letters "
                             "WHERE source_name = 'pl_dlq' AND line_number = 3"), 13);
    PGT_EQ_STR(pgt_db_str(c, "SELECT records || ' ' || dead_lettered FROM pgpipe.pull_state WHERE source = 'pl_dlq'"),
               "28 2");
    pgt_db_close(c);
}

/* ---- incomplete pagination ---------------------------------------------------- */

static void pl_incomplete(PGconn *c, const char *path, int style, const char *expect, long long staged)
{
    pl_clean(c, "pl_inc");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_inc", path);
    o.paginate = style;
    o.records = style == PGPIPE_PULL_CURSOR ? "data.items" : style == PGPIPE_PULL_OFFSET ? "items"
                : style == PGPIPE_PULL_PAGE ? "results" : "";
    o.cursor_path = "next_cursor";
    o.more_path = "has_more";
    o.limit = 10;
    o.total_path = style == PGPIPE_PULL_OFFSET || style == PGPIPE_PULL_PAGE ? "total" : NULL;
    o.pages_path = style == PGPIPE_PULL_PAGE ? "total_pages" : NULL;
    char err[1024];
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_ERROR);
    PGT_CONTAINS(err, "incomplete pagination at page");
    PGT_CONTAINS(err, expect);
    /* the pages before it are staged, the run stands at the failing page */
    PGT_EQ_INT(pl_count(c, "pl_inc", "count(*)"), staged);
    PGT_EQ_STR(pgt_db_str(c, "SELECT status FROM pgpipe.pull_runs WHERE source = 'pl_inc'"), "failed");
}

static void pl_t_incomplete_pagination(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_incomplete(c, "/cursor?n=50&per=10&fault=backwards&at=3", PGPIPE_PULL_CURSOR,
                  "10 goes backwards from 20", 20);
    pl_incomplete(c, "/cursor?n=50&per=10&fault=backwards&at=3&opaque=1", PGPIPE_PULL_CURSOR,
                  "was seen before", 20);
    pl_incomplete(c, "/link?n=50&per=10&fault=repeat&at=2", PGPIPE_PULL_LINK,
                  "was requested before", 10);
    pl_incomplete(c, "/offset?n=25&fault=total", PGPIPE_PULL_OFFSET, "before the total of 30", 25);
    pl_incomplete(c, "/page?n=25&per_page=10&fault=pages", PGPIPE_PULL_PAGE,
                  "ended after 20 records, the API reports a total of 25", 10);
    pgt_db_close(c);
}

/* An API that ignores the cursor sends the first page again and again
** under new cursors: refused at the first repeat, not loaded 10 times. */
static void pl_t_same_records(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_same");
    pgpipe_pull_options o;
    char err[1024];
    pl_opts(&o, "pl_same", "/cursor?n=100&per=10&fault=samerecords");
    o.paginate = PGPIPE_PULL_CURSOR;
    o.records = "data.items";
    o.cursor_path = "next_cursor";
    o.more_path = "has_more";
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_ERROR);
    PGT_CONTAINS(err, "incomplete pagination at page 2 (");
    PGT_CONTAINS(err, "its 10 records are the page before's again");
    PGT_EQ_INT(pl_count(c, "pl_same", "count(*)"), 10);
    PGT_EQ_INT(pl_count(c, "pl_same", "count(DISTINCT payload->>'id')"), 10);
    pl_clean(c, "pl_same");
    pgt_db_close(c);
}

/* The same pages staged through binary COPY rows (the default) and COPY text
** (PGPIPE_COPY_FORMAT=text) are the same rows: escapes, tabs, newlines,
** backslashes, "\\N" and "\\." as data, UTF-8, event types from a field and
** a constant with a tab and a backslash. */
static void pl_t_binary_same_as_text(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    static const char *const src[4] = { "pl_fmt_bin", "pl_fmt_text", "pl_fmtc_bin", "pl_fmtc_text" };
    for (int k = 0; k < 4; k++) {
        pl_clean(c, src[k]);
        if (k % 2)
            setenv("PGPIPE_COPY_FORMAT", "text", 1);
        pgpipe_pull_options o;
        pl_opts(&o, src[k], "/link?n=30&per=10&badrec=3:tricky,14:tricky,15:tricky,30:tricky");
        o.paginate = PGPIPE_PULL_LINK;
        if (k < 2)
            o.event_type_field = "$.name";
        else
            o.event_type = "const\ttype\\N";
        o.concurrency = k < 2 ? 1 : 3;
        pgpipe_pull *p = NULL;
        PGT_OK(pgpipe_pull_open(&p, &o));
        PGT_CHECK_MSG(pgpipe_pull_run(p) == PGPIPE_OK, "%s", pgpipe_errmsg(p));
        PGT_EQ_INT(p->cw.binary, k % 2 == 0);
        pgpipe_pull_close(p);
        unsetenv("PGPIPE_COPY_FORMAT");
        PGT_EQ_INT(pl_count(c, src[k], "count(*)"), 30);
    }
    for (int k = 0; k < 4; k += 2) {
        char q[1200];
        snprintf(q, sizeof q,
                 "SELECT count(*) FROM (SELECT event_type, payload, count(DISTINCT batch_id) AS n "
                 "FROM staging.raw_events WHERE source = '%s' GROUP BY 1, 2) a FULL JOIN "
                 "(SELECT event_type, payload, count(DISTINCT batch_id) AS n FROM staging.raw_events "
                 "WHERE source = '%s' GROUP BY 1, 2) b USING (event_type, payload) "
                 "WHERE a.n IS NULL OR b.n IS NULL OR a.n <> b.n", src[k], src[k + 1]);
        PGT_EQ_INT(pgt_db_int(c, q), 0);
    }
    PGT_EQ_STR(pgt_db_str(c, "SELECT event_type || '|' || (payload->'o'->'b'->>1) FROM "
                             "staging.raw_events WHERE source = 'pl_fmt_bin' AND payload->>'id' = '14'"),
               "n14\t\n\r\\N\\.\xc3\xa9\xc3\xa9\"|2.50");
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events WHERE source = 'pl_fmtc_bin' "
                             "AND event_type = E'const\\ttype\\\\N'"), 30);
    for (int k = 0; k < 4; k++)
        pl_clean(c, src[k]);
    pgt_db_close(c);
}

/* A staging table whose payload is json (altered by its owner, to keep
** each record as the API sent it): the rows go as COPY text with the JSON as
** it came, member order and all, not in jsonb's order. */
static void pl_t_json_payload_as_sent(void)
{
    PGconn *c = pgt_db_fresh("pgpipe_t_pl_json");
    pgt_db_install(c);
    PQclear(PGT_EXEC(c, "ALTER TABLE staging.raw_events ALTER COLUMN payload TYPE json"));
    char dsn[1200];
    snprintf(dsn, sizeof dsn, "%s dbname=pgpipe_t_pl_json", pgt_dsn());
    pl_server();
    for (int k = 0; k < 2; k++) {
        pgpipe_pull_options o;
        pl_opts(&o, k ? "pl_json_c" : "pl_json", "/link?n=30&per=10");
        o.paginate = PGPIPE_PULL_LINK;
        o.conninfo = dsn;
        o.concurrency = k ? 3 : 1;
        pgpipe_pull *p = NULL;
        PGT_OK(pgpipe_pull_open(&p, &o));
        PGT_CHECK_MSG(pgpipe_pull_run(p) == PGPIPE_OK, "%s", pgpipe_errmsg(p));
        PGT_EQ_INT(p->cw.binary, 0);
        PGT_EQ_INT(p->cw.verbatim, 1);
        pgpipe_pull_close(p);
    }
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events WHERE payload::text = "
                             "'{\"id\":' || (payload->>'id') || ',\"type\":\"t' || "
                             "((payload->>'id')::int % 3) || '\",\"updated_at\":\"' || "
                             "(payload->>'updated_at') || '\",\"name\":\"n' || (payload->>'id') || '\"}'"),
               60);
    pgt_db_close(c);
}

static void pl_t_malformed_body(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_bad");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_bad", "/offset?n=40&fault=malformed&at=2");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    char err[1024];
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_PARSE);
    PGT_CONTAINS(err, "offset=10");
    PGT_CONTAINS(err, "not JSON");
    PGT_CONTAINS(err, "(byte offset 30 of the body); the page is not loaded");
    PGT_EQ_INT(pl_count(c, "pl_bad", "count(*)"), 10);
    /* a records path that is not there */
    pl_clean(c, "pl_bad");
    pl_opts(&o, "pl_bad", "/offset?n=40");
    o.records = "data.rows";
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_PARSE);
    PGT_CONTAINS(err, "\"data.rows\" are missing");
    pgt_db_close(c);
}

/* ---- memory: a body over the limit, a gzip bomb, the shared budget ------------ */

static void pl_t_body_limit(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pgpipe_pull_options o;
    char err[1024];
    /* the option's forms */
    pgpipe_pull_options_init(&o);
    PGT_OK(pgpipe_pull_set(&o, "--body-budget", "3MB", NULL));
    PGT_OK(pgpipe_pull_set(&o, "max-body", "1G", NULL));
    pgpipe_error e;
    PGT_EQ_INT(pgpipe_pull_set(&o, "max-body", "0", &e), PGPIPE_MISUSE);
    PGT_CONTAINS(e.message, "--max-body: bytes, or with k, M or G");
    PGT_EQ_INT(pgpipe_pull_set(&o, "max-body", "12X", NULL), PGPIPE_MISUSE);
    /* a budget that cannot hold the largest body */
    pl_clean(c, "pl_big");
    pl_opts(&o, "pl_big", "/offset?n=40");
    PGT_OK(pgpipe_pull_set(&o, "max-body", "1M", NULL));
    PGT_OK(pgpipe_pull_set(&o, "body-budget", "512k", NULL));
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_MISUSE);
    PGT_CONTAINS(err, "the largest body (--max-body, 1 byte to 1024 GB) is 1 MB and the body budget "
                      "(--body-budget, 0: twice the largest body) 512 kB");

    /* page 3 holds a record of 100 kB: over a limit of 64 kB, it fails and
    ** nothing of it is committed; the pages before it are */
    pl_opts(&o, "pl_big", "/offset?n=40&padrec=25:100000");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    PGT_OK(pgpipe_pull_set(&o, "max-body", "64k", NULL));
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_LIMIT);
    PGT_CONTAINS(err, "offset=20");
    PGT_CONTAINS(err, "the response body is over the limit of 64 kB (--max-body;");
    PGT_EQ_INT(pl_count(c, "pl_big", "count(*)"), 20);
    PGT_EQ_INT(pl_count(c, "pl_big", "max((payload->>'id')::int)"), 20);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = 'pl_big'"), 0);
    PGT_EQ_STR(pgt_db_str(c, "SELECT records || ' ' || pages FROM pgpipe.pull_state WHERE source = 'pl_big'"),
               "20 2");
    PGT_CONTAINS(pgt_db_str(c, "SELECT error FROM pgpipe.pull_runs WHERE source = 'pl_big'"),
                 "over the limit of 64 kB");
    /* a larger limit takes it: the run goes on from page 3 */
    PGT_OK(pgpipe_pull_set(&o, "max-body", "1M", NULL));
    PGT_OK(pl_run(&o, NULL, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_big", "count(DISTINCT payload->>'id')"), 40);
    PGT_EQ_INT(pl_count(c, "pl_big", "count(*)"), 40);

    /* a gzip bomb: 32 kB that inflate to 32 MB are refused at the limit */
    pl_clean(c, "pl_big");
    pl_opts(&o, "pl_big", "/offset?n=40&fault=bomb&at=2");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    PGT_OK(pgpipe_pull_set(&o, "max-body", "1M", NULL));
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_LIMIT);
    PGT_CONTAINS(err, "offset=10");
    PGT_CONTAINS(err, "over the limit of 1 MB");
    PGT_EQ_INT(pl_count(c, "pl_big", "count(*)"), 10);
    pl_clean(c, "pl_big");
    PGT_OK(pgpipe_pull_set(&o, "max-body", "16M", NULL));
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_LIMIT);
    PGT_CONTAINS(err, "over the limit of 16 MB");
    pl_clean(c, "pl_big");
    pgt_db_close(c);
}

/* Eight requests in flight, pages of 500 kB and a budget that leaves the
** pages ahead 192 kB beside the page to parse next: a page ahead never
** fits, so each one that began is dropped and asked again at its turn. The
** run completes with every record once; the waits are no failures. */
/* The rows built of pages waiting to be written count in the body budget
** too: with the first page's COMMIT held up (a lock on pgpipe.pull_state),
** eight requests in flight and four target connections, pages of 500 kB
** must not pile up as rows beyond what the budget leaves. The library's
** own count of what it held at once (held_bytes_peak: bodies, the parse
** tree of the page being built, the rows of the pages built) stays within
** the budget and the rows of the one page that may always go through (at
** most --max-body here: records of plain text, a tree of few nodes). */
typedef struct pl_locker {
    PGconn *c;
    atomic_int go;
} pl_locker;

static void *pl_unlock_later(void *arg)
{
    pl_locker *l = arg;
    for (int i = 0; i < 30 && !atomic_load(&l->go); i++)
        pgpipe_sleep_ms(100); /* 3 s: time for every page that may be built to be built */
    PQclear(PQexec(l->c, "COMMIT"));
    return NULL;
}

static void pl_t_rows_in_budget(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_rowsb");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_rowsb", "/offset?n=200&pad=50000");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    o.concurrency = 8;
    PGT_OK(pgpipe_pull_set(&o, "max-body", "1M", NULL));
    PGT_OK(pgpipe_pull_set(&o, "body-budget", "1216k", NULL));
    pl_locker l = { pgt_db_open(), 0 };
    PQclear(PGT_EXEC(l.c, "BEGIN; LOCK TABLE pgpipe.pull_state IN SHARE ROW EXCLUSIVE MODE"));
    pthread_t th;
    PGT_CHECK(pthread_create(&th, NULL, pl_unlock_later, &l) == 0);
    pgpipe_pull_progress pr;
    char err[1024];
    int rc = pl_run(&o, &pr, err, sizeof err);
    atomic_store(&l.go, 1);
    pthread_join(th, NULL);
    pgt_db_close(l.c);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", err);
    PGT_EQ_INT(pr.pages, 20);
    PGT_EQ_INT(pr.records, 200);
    PGT_EQ_INT(pl_count(c, "pl_rowsb", "count(DISTINCT payload->>'id')"), 200);
    PGT_CHECK(pr.held_bytes_peak > 1000000); /* counted: a page's body and rows at least */
    PGT_CHECK_MSG(pr.held_bytes_peak <= 1216 * 1024 + (1 << 20),
                  "held %lld bytes at once: past the body budget (1216 kB) and one page",
                  pr.held_bytes_peak);
    pl_clean(c, "pl_rowsb");
    pgt_db_close(c);
}

static void pl_t_body_budget(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_budget");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_budget", "/offset?n=200&pad=50000");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    o.concurrency = 8;
    PGT_OK(pgpipe_pull_set(&o, "max-body", "1M", NULL));
    PGT_OK(pgpipe_pull_set(&o, "body-budget", "1216k", NULL));
    pgpipe_pull_progress pr;
    char err[1024];
    PGT_EQ_INT(pl_run(&o, &pr, err, sizeof err), PGPIPE_OK);
    PGT_EQ_INT(pr.pages, 20);
    PGT_EQ_INT(pr.records, 200);
    PGT_EQ_INT(pr.dead_lettered, 0);
    PGT_EQ_INT(pr.retries, 0);
    PGT_EQ_INT(pl_count(c, "pl_budget", "count(*)"), 200);
    PGT_EQ_INT(pl_count(c, "pl_budget", "count(DISTINCT payload->>'id')"), 200);
    PGT_EQ_INT(pl_count(c, "pl_budget", "min(length(payload->>'pad'))"), 50000);
    long long asked = pl_stat("requests");
    PGT_CHECK_MSG(asked > 20, "%lld requests for 20 pages: no page ahead waited", asked);
    PGT_EQ_INT(pr.requests, asked);
    /* with room for them, nothing is asked twice */
    pl_clean(c, "pl_budget");
    PGT_OK(pgpipe_pull_set(&o, "body-budget", "16M", NULL));
    PGT_EQ_INT(pl_run(&o, &pr, err, sizeof err), PGPIPE_OK);
    PGT_EQ_INT(pr.records, 200);
    PGT_EQ_INT(pr.requests, 20);
    pl_clean(c, "pl_budget");
    pgt_db_close(c);
}

/* ---- a page that is not JSON only inside records ------------------------------- */

/* The length of test/pull_server.py's record i (i < 60) as it sends it
** without badrec or pad: '{"id":i,"type":"t<i%3>","updated_at":"<ts>","name":"n<i>"}'. */
static size_t pl_rec_len(int i)
{
    char r[160];
    return (size_t)snprintf(r, sizeof r, "{\"id\":%d,\"type\":\"t%d\",\"updated_at\":"
                            "\"2026-01-01T00:00:%02dZ\",\"name\":\"n%d\"}", i, i % 3, i, i);
}

/* The byte offset in an offset page ('{"items":[' then the records from id
** first, ',' between) of record id, with extra[k] bytes more in record first+k. */
static size_t pl_rec_off(int first, int id, const size_t *extra)
{
    size_t off = 10;
    for (int i = first; i < id; i++)
        off += pl_rec_len(i) + extra[i - first] + 1;
    return off;
}

/* A record with more bad bytes than can be listed one by one (80 000 here,
** 1.2 million in the second) goes to the dead letters like any other, with
** its position and bytes as sent (past 1 MiB: the first MiB, saying so);
** the rest of its page is loaded. */
static void pl_t_salvage_long(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_salvl");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_salvl", "/offset?n=30&badrec=5:long,12:huge,18:utf8");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    pgpipe_pull_progress pr;
    char err[1024];
    PGT_EQ_INT(pl_run(&o, &pr, err, sizeof err), PGPIPE_OK);
    PGT_EQ_INT(pr.pages, 3);
    PGT_EQ_INT(pr.records, 27);
    PGT_EQ_INT(pr.dead_lettered, 3);
    PGT_EQ_INT(pl_count(c, "pl_salvl", "count(*) FILTER (WHERE (payload->>'id')::int IN (5,12,18))"), 0);
    const char *q5 = "SELECT %s FROM pgpipe.dead_letters WHERE source_name = 'pl_salvl' "
                     "AND error_context LIKE '%%page 1 record 5:%%'";
    char q[512];
    snprintf(q, sizeof q, q5, "error_message");
    PGT_CONTAINS(pgt_db_str(c, q), "unescaped control character U+0001 in string at byte offset ");
    PGT_CONTAINS(pgt_db_str(c, q), ", 80000 bad bytes in all");
    snprintf(q, sizeof q, q5, "octet_length(raw_bytes) - length(replace(encode(raw_bytes, 'hex'), 'ff', '')) / 2");
    PGT_EQ_INT(pgt_db_int(c, q), 40000); /* the 0xFF bytes as sent */
    snprintf(q, sizeof q, q5, "byte_offset > 0 AND line_number = 5");
    PGT_EQ_STR(pgt_db_str(c, q), "t");
    const char *q12 = "SELECT %s FROM pgpipe.dead_letters WHERE source_name = 'pl_salvl' "
                      "AND error_context LIKE '%%page 2 record 2:%%'";
    snprintf(q, sizeof q, q12, "error_message");
    PGT_CONTAINS(pgt_db_str(c, q), ", 1200000 bad bytes in all");
    PGT_CONTAINS(pgt_db_str(c, q), "its first 1048576 are kept");
    snprintf(q, sizeof q, q12, "octet_length(raw_bytes)");
    PGT_EQ_INT(pgt_db_int(c, q), 1048576);
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_message FROM pgpipe.dead_letters WHERE source_name = "
                               "'pl_salvl' AND error_context LIKE '%page 2 record 8:%'"),
                 "invalid UTF-8 in string");
    /* told by their bytes (the fixes were too many to list): each record's
    ** ordinal, its offset in the page, its first bad byte and its bytes as
    ** sent, exactly */
    static const size_t none[10] = { 0 }, p2[10] = { 0, 1200000 };
    size_t s5 = pl_rec_off(1, 5, none), s12 = pl_rec_off(11, 12, p2), s18 = pl_rec_off(11, 18, p2);
    char want[300];
    snprintf(q, sizeof q, q5, "byte_offset");
    PGT_EQ_INT(pgt_db_int(c, q), (long long)s5);
    snprintf(want, sizeof want, "U+0001 in string at byte offset %zu of the page (byte %zu of the record), "
             "80000 bad bytes in all", s5 + pl_rec_len(5) - 2, pl_rec_len(5) - 1);
    snprintf(q, sizeof q, q5, "error_message");
    PGT_CONTAINS(pgt_db_str(c, q), want);
    snprintf(q, sizeof q, q5, "octet_length(raw_bytes)");
    PGT_EQ_INT(pgt_db_int(c, q), (long long)pl_rec_len(5) + 80000);
    snprintf(q, sizeof q, q12, "byte_offset");
    PGT_EQ_INT(pgt_db_int(c, q), (long long)s12);
    snprintf(want, sizeof want, "at byte offset %zu of the page (byte %zu of the record), 1200000 bad "
             "bytes in all; the record is %zu bytes from byte offset %zu of the page", s12 + pl_rec_len(12) - 2,
             pl_rec_len(12) - 1, pl_rec_len(12) + 1200000, s12);
    snprintf(q, sizeof q, q12, "error_message");
    PGT_CONTAINS(pgt_db_str(c, q), want);
    const char *q18 = "SELECT %s FROM pgpipe.dead_letters WHERE source_name = 'pl_salvl' "
                      "AND error_context LIKE '%%page 2 record 8:%%'";
    snprintf(q, sizeof q, q18, "byte_offset || ' ' || line_number");
    snprintf(want, sizeof want, "%zu 8", s18);
    PGT_EQ_STR(pgt_db_str(c, q), want);
    snprintf(want, sizeof want, "byte 0xFF never appears in UTF-8 at byte offset %zu of the page (byte %zu "
             "of the record), 2 bad bytes in all", s18 + pl_rec_len(18) - 2, pl_rec_len(18) - 1);
    snprintf(q, sizeof q, q18, "error_message");
    PGT_CONTAINS(pgt_db_str(c, q), want);
    snprintf(q, sizeof q, q18, "encode(raw_bytes, 'escape')");
    PGT_EQ_STR(pgt_db_str(c, q), "{\"id\":18,\"type\":\"t0\",\"updated_at\":\"2026-01-01T00:00:18Z\","
                                 "\"name\":\"n18\\377\\376\"}");
    PGT_EQ_STR(pgt_db_str(c, "SELECT string_agg(line_number::text, ',' ORDER BY line_number) FROM "
                             "pgpipe.dead_letters WHERE source_name = 'pl_salvl'"), "2,5,8");
    pl_clean(c, "pl_salvl");
    pgt_db_close(c);
}

/* A record that is a bare NaN, Infinity or -Infinity (not inside an
** object) is told with all of its bytes, the fixes listed or not (before:
** the token's replacement ended in spaces, trimmed as white space: the
** record was its first byte, its dead letter "N", and with the fixes too
** many to list the page failed as "the problem is outside the records"). */
static void pl_t_salvage_tokens(void)
{
    static const char body[] = "{\"items\":[{\"id\":1},NaN,{\"id\":3,\"s\":\"a\xff\"}, -Infinity ,Infinity]}";
    static const char *const want[] = { "NaN", "{\"id\":3,\"s\":\"a\xff\"}", "-Infinity", "Infinity" };
    size_t n = sizeof body - 1;
    for (int listed = 1; listed >= 0; listed--) {
        char t[sizeof body];
        memcpy(t, body, sizeof body);
        pp_buf fixes = { 0 }, bad = { 0 };
        int outside = -1;
        long long cnt;
        PGT_OK(pull_fix_body((unsigned char *)t, n, listed ? &fixes : NULL));
        PGT_OK(pgpipe_json_validate(t, n, NULL));
        if (listed) {
            PGT_EQ_INT((long long)(fixes.len / sizeof(pull_fix)), 4);
            cnt = pull_bad_records(t, n, 1, (const pull_fix *)(void *)fixes.data,
                                   fixes.len / sizeof(pull_fix), &bad, &outside);
        } else {
            cnt = pull_bad_records_diff(t, body, n, 1, &fixes, &bad, &outside);
        }
        PGT_EQ_INT(cnt, 5);
        PGT_EQ_INT(outside, 0);
        PGT_EQ_INT((long long)(bad.len / sizeof(pull_bad)), 4);
        const pull_bad *b = (const pull_bad *)(void *)bad.data;
        for (int k = 0; k < 4 && (size_t)k < bad.len / sizeof(pull_bad); k++) {
            PGT_EQ_INT(b[k].idx, k + 2);
            PGT_EQ_INT((long long)(b[k].end - b[k].start), (long long)strlen(want[k]));
            PGT_CHECK_MSG(memcmp(body + b[k].start, want[k], strlen(want[k])) == 0, "listed %d record %d",
                          listed, k + 2);
        }
        pp_buf_free(&fixes);
        pp_buf_free(&bad);
    }
}

/* A bad record of more than 1 MiB (its dead letter keeps the first MiB)
** whose -Infinity begins at the last byte kept: the dead letter holds the
** bytes as sent up to there (before: the token was written back over the
** kept bytes' end, 8 bytes out of the buffer). */
static void pl_t_salvage_cut_token(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_salvc");
    /* record 3: '{..."name":"n3","pad":"' pad x's '","score":-Infinity}',
    ** its '-' at byte 1048576 (1-based) */
    size_t pad = 1048558 - pl_rec_len(3);
    char path[128], err[1024], q[512], want[200];
    snprintf(path, sizeof path, "/offset?n=5&padrec=3:%zu&badrec=3:ninf", pad);
    pgpipe_pull_options o;
    pl_opts(&o, "pl_salvc", path);
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    pgpipe_pull_progress pr;
    PGT_EQ_INT(pl_run(&o, &pr, err, sizeof err), PGPIPE_OK);
    PGT_EQ_INT(pr.records, 4);
    PGT_EQ_INT(pr.dead_lettered, 1);
    PGT_EQ_INT(pl_count(c, "pl_salvc", "count(*)"), 4);
    const char *q3 = "SELECT %s FROM pgpipe.dead_letters WHERE source_name = 'pl_salvc' "
                     "AND error_context LIKE '%%page 1 record 3:%%'";
    snprintf(q, sizeof q, q3, "octet_length(raw_text) || ' ' || substring(raw_text from 1048560)");
    PGT_EQ_STR(pgt_db_str(c, q), "1048576 xxxxxx\",\"score\":-");
    snprintf(want, sizeof want, "-Infinity is not a JSON value at byte offset %zu of the page (byte 1048576 "
             "of the record); the record is %zu bytes", pl_rec_off(1, 3, (const size_t[10]){ 0 }) + 1048575,
             pl_rec_len(3) + pad + 27);
    snprintf(q, sizeof q, q3, "error_message");
    PGT_CONTAINS(pgt_db_str(c, q), want);
    PGT_CONTAINS(pgt_db_str(c, q), "its first 1048576 are kept");
    pl_clean(c, "pl_salvc");
    pgt_db_close(c);
}

/* --rate: NaN, infinity, negative or so small that a wait overflows its
** count of microseconds are refused, by name (before: NaN was no limit and
** 1e-300 an undefined conversion); --body-budget 0 is the default it is
** documented as (before: refused as "not from 1 byte"). */
static void pl_t_hostile_values(void)
{
    pgpipe_pull_options o;
    pgpipe_pull_options_init(&o);
    pgpipe_error e;
    static const char *const bad[] = { "nan", "NaN", "inf", "-inf", "1e400", "-1", "1e-300",
                                       "0.0000001", "2e6", "", "1x" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        PGT_CHECK_MSG(pgpipe_pull_set(&o, "rate", bad[i], &e) == PGPIPE_MISUSE, "--rate %s accepted",
                      bad[i]);
        PGT_CONTAINS(e.message, "--rate: requests per second");
    }
    PGT_CHECK(o.rate == 0);
    PGT_OK(pgpipe_pull_set(&o, "rate", "0", &e));
    PGT_OK(pgpipe_pull_set(&o, "rate", "0.5", &e));
    PGT_CHECK(o.rate == 0.5);
    PGT_OK(pgpipe_pull_set(&o, "body-budget", "0", &e));
    PGT_EQ_INT(o.body_budget, 0);
    PGT_EQ_INT(pgpipe_pull_set(&o, "max-body", "0", &e), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_pull_set(&o, "body-budget", "-1", &e), PGPIPE_MISUSE);
    /* set directly: refused when the handle opens */
    o.source = "x";
    o.url = "http://127.0.0.1:1/";
    o.conninfo = pgt_dsn();
    o.rate = 1e-300;
    pgpipe_pull *p = NULL;
    PGT_EQ_INT(pgpipe_pull_open(&p, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(p), "the rate is 0 (no limit) or from 0.001");
    pgpipe_pull_close(p);
    /* a shared budget made with one clamps it: its waits stay countable */
    pgpipe_pull_budget *b;
    PGT_OK(pgpipe_pull_budget_open(&b, 1e-300, 1));
    PGT_EQ_INT((long long)pull_budget_take(b), 0);
    int64_t w = pull_budget_take(b);
    PGT_CHECK_MSG(w > 0 && w <= (int64_t)1001 * 1000000, "wait %lld us", (long long)w);
    pgpipe_pull_budget_close(b);

    /* a resume point (set by hand, as the README shows) whose offset the
    ** next ones cannot be counted from (before: a signed overflow,
    ** undefined) is refused, naming it */
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_hostile");
    static const char *const offs[] = { "9223372036854775807", "99999999999999999999", "-5", "1e3" };
    char err[1024];
    pl_opts(&o, "pl_hostile", "/offset?n=30");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.concurrency = 4;
    o.max_pages = 1;
    PGT_OK(pl_run(&o, NULL, err, sizeof err));
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        char sql[512];
        snprintf(sql, sizeof sql, "UPDATE pgpipe.pull_state SET next_url = regexp_replace(next_url, "
                 "'offset=[^&]*', 'offset=%s') WHERE source = 'pl_hostile'", offs[i]);
        PQclear(PGT_EXEC(c, sql));
        PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_MISUSE);
        PGT_CONTAINS(err, "is not a whole number from 0 to 10^15 (the resume point");
        PGT_CONTAINS(err, offs[i]);
    }
    pl_clean(c, "pl_hostile");
    pgt_db_close(c);
}

static void pl_t_salvage(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_salv");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_salv", "/offset?n=30&badrec=3:utf8,12:ctrl,13:esc,17:surr,25:nan,26:ninf");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    o.concurrency = 2;
    pgpipe_pull_progress pr;
    char err[1024];
    PGT_EQ_INT(pl_run(&o, &pr, err, sizeof err), PGPIPE_OK);
    PGT_EQ_INT(pr.pages, 3);
    PGT_EQ_INT(pr.records, 24);
    PGT_EQ_INT(pr.dead_lettered, 6);
    PGT_EQ_INT(pl_count(c, "pl_salv", "count(*)"), 24);
    PGT_EQ_INT(pl_count(c, "pl_salv", "count(*) FILTER (WHERE (payload->>'id')::int IN (3,12,13,17,25,26))"), 0);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = 'pl_salv'"), 6);
    PGT_EQ_STR(pgt_db_str(c, "SELECT records || ' ' || dead_lettered FROM pgpipe.pull_state WHERE source = 'pl_salv'"),
               "24 6");
    /* each with its position, the problem and its byte offset, the bytes as sent */
    PGT_EQ_STR(pgt_db_str(c, "SELECT string_agg(line_number::text, ',' ORDER BY line_number, byte_offset) "
                             "FROM pgpipe.dead_letters WHERE source_name = 'pl_salv'"), "2,3,3,5,6,7");
    const char *q3 = "SELECT %s FROM pgpipe.dead_letters WHERE source_name = 'pl_salv' AND error_context LIKE '%%page 1 record 3:%%'";
    char q[512];
    snprintf(q, sizeof q, q3, "error_message");
    PGT_CONTAINS(pgt_db_str(c, q), "pull: the record is not valid JSON: invalid UTF-8 in string: ");
    PGT_CONTAINS(pgt_db_str(c, q), "byte 0xFF never appears in UTF-8 at byte offset ");
    PGT_CONTAINS(pgt_db_str(c, q), ", and 1 more problem");
    snprintf(q, sizeof q, q3, "encode(raw_bytes, 'escape') LIKE '%%n3\\\\377\\\\376\"}'");
    PGT_EQ_STR(pgt_db_str(c, q), "t");
    snprintf(q, sizeof q, q3, "byte_offset");
    long long off3 = pgt_db_int(c, q);
    PGT_CHECK(off3 > 10);
    snprintf(q, sizeof q, q3, "error_context");
    PGT_CONTAINS(pgt_db_str(c, q), "/offset?");
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_message FROM pgpipe.dead_letters WHERE source_name = 'pl_salv' "
                               "AND error_context LIKE '%page 2 record 2:%'"),
                 "unescaped control character U+0001 in string");
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_message FROM pgpipe.dead_letters WHERE source_name = 'pl_salv' "
                               "AND error_context LIKE '%page 2 record 2:%'"), ", and 1 more problem");
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_message FROM pgpipe.dead_letters WHERE source_name = 'pl_salv' "
                               "AND error_context LIKE '%page 2 record 3:%'"), "invalid escape sequence");
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_message FROM pgpipe.dead_letters WHERE source_name = 'pl_salv' "
                               "AND error_context LIKE '%page 2 record 7:%'"), "lone surrogate");
    PGT_CONTAINS(pgt_db_str(c, "SELECT error_message FROM pgpipe.dead_letters WHERE source_name = 'pl_salv' "
                               "AND error_context LIKE '%page 3 record 5:%'"), "NaN is not a JSON value");
    PGT_CONTAINS(pgt_db_str(c, "SELECT raw_text FROM pgpipe.dead_letters WHERE source_name = 'pl_salv' "
                               "AND error_context LIKE '%page 3 record 6:%'"), "\"score\":-Infinity}");
    pl_clean(c, "pl_salv");

    /* the problem outside the records: the page fails, naming the URL and
    ** the byte; the next run fails at the same page again, nothing skipped */
    pl_opts(&o, "pl_salv", "/offset?n=30&fault=badmeta&at=2&badrec=14:utf8");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_PARSE);
    PGT_CONTAINS(err, "offset=10");
    PGT_CONTAINS(err, "the body is not JSON: invalid UTF-8 in string: byte 0xFF never appears in UTF-8 at line 1, column ");
    PGT_CONTAINS(err, "(byte offset ");
    PGT_CONTAINS(err, "the problem is outside the records; the page is not loaded");
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_PARSE);
    PGT_CONTAINS(err, "offset=10");
    PGT_EQ_INT(pl_count(c, "pl_salv", "count(*)"), 10);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = 'pl_salv'"), 0);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.pull_runs WHERE source = 'pl_salv' AND status = 'failed' "
                             "AND error LIKE '%offset=10%not JSON%'"), 2);
    pl_clean(c, "pl_salv");
    pgt_db_close(c);
}

/* A hostile Link next: another host, another scheme, not HTTP at all. The
** page that names it is refused (not committed: its resume point would be
** that URL) and the source's credentials never go there. */
static void pl_t_link_elsewhere(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    static const char *const faults[] = { "link_host", "link_https", "link_file" };
    static const char *const expect[] = { "goes to another host or port; not followed",
                                          "goes to another scheme; not followed",
                                          "the Link next file:///etc/passwd is not an http(s) URL" };
    for (int i = 0; i < 3; i++) {
        pl_clean(c, "pl_elsewhere");
        pgpipe_pull_options o;
        char path[128], err[1024];
        snprintf(path, sizeof path, "/link?n=30&per=10&fault=%s&at=2", faults[i]);
        pl_opts(&o, "pl_elsewhere", path);
        o.paginate = PGPIPE_PULL_LINK;
        PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_ERROR);
        PGT_CONTAINS(err, expect[i]);
        PGT_CONTAINS(err, "page 2 (");
        PGT_EQ_INT(pl_count(c, "pl_elsewhere", "count(*)"), 10);
        PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.pull_state WHERE source = "
                                 "'pl_elsewhere' AND next_url NOT LIKE '%page=2%'"), 0);
    }
    /* a redirect to file:// is not followed either */
    pl_clean(c, "pl_elsewhere");
    pgpipe_pull_options o;
    char err[1024];
    pl_opts(&o, "pl_elsewhere", "/link?n=30&per=10&fault=redir_file&at=1");
    o.paginate = PGPIPE_PULL_LINK;
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_IO);
    PGT_EQ_INT(pl_count(c, "pl_elsewhere", "count(*)"), 0);
    pl_clean(c, "pl_elsewhere");
    pgt_db_close(c);
}

/* A password in the URL is refused at open, masked in the message. */
static void pl_t_url_credentials(void)
{
    pgpipe_pull_options o;
    pgpipe_pull_options_init(&o);
    o.conninfo = pgt_dsn();
    o.source = "pl_cred";
    o.url = "https://bob:hunter2@127.0.0.1:1/x?page=1";
    pgpipe_pull *p = NULL;
    PGT_EQ_INT(pgpipe_pull_open(&p, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(p), "the URL holds credentials (https://bob:");
    PGT_CONTAINS(pgpipe_errmsg(p), "@127.0.0.1:1/x?page=1)");
    PGT_CONTAINS(pgpipe_errmsg(p), "--basic-env");
    PGT_CHECK(!strstr(pgpipe_errmsg(p), "hunter2"));
    pgpipe_pull_close(p);
}

/* ---- politeness ---------------------------------------------------------------- */

static void pl_fault(PGconn *c, const char *path, long long min_retries)
{
    pl_clean(c, "pl_fault");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_fault", path);
    o.paginate = PGPIPE_PULL_LINK;
    o.timeout_ms = 1500;
    pgpipe_pull_progress pr;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_fault", "count(DISTINCT payload->>'id')"), 30);
    PGT_EQ_INT(pl_count(c, "pl_fault", "count(*)"), 30);
    PGT_CHECK_MSG(pr.retries >= min_retries, "%s: %lld retries", path, pr.retries);
}

static void pl_t_retry_after(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_fault(c, "/link?n=30&per=10&fault=429&ra=1", 1);
    pl_fault(c, "/link?n=30&per=10&fault=503&ra=date&at=3", 1);
    pl_fault(c, "/link?n=30&per=10&fault=ratelimit&at=1", 0);
    /* no request came while the server's wait ran */
    PGT_EQ_INT(pl_stat("early"), 0);
    PGT_EQ_INT(pl_stat("faults"), 3);
    pgt_db_close(c);
}

/* An absurd Retry-After ends the page with a message that says so, and
** does not pause the source's other streams for centuries; an absurd
** X-RateLimit-Reset is waited for at most the retry budget. */
static void pl_t_retry_after_absurd(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_absurd");
    pgpipe_pull_budget *b;
    PGT_OK(pgpipe_pull_budget_open(&b, 0, 1));
    pgpipe_pull_options o;
    char err[1024];
    pl_opts(&o, "pl_absurd", "/link?n=30&per=10&fault=hugera&at=2");
    o.paginate = PGPIPE_PULL_LINK;
    o.budget = b;
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_IO);
    PGT_CONTAINS(err, "HTTP 429; gave up after 1 attempts");
    PGT_CONTAINS(err, "the server's Retry-After asked to wait 1000000000 s");
    PGT_EQ_INT(pl_count(c, "pl_absurd", "count(*)"), 10);
    PGT_EQ_INT((long long)pull_budget_take(b), 0); /* the budget is not paused */
    pull_budget_release(b);
    pgpipe_pull_budget_close(b);

    pl_clean(c, "pl_absurd");
    pl_opts(&o, "pl_absurd", "/link?n=30&per=10&fault=hugereset&at=1");
    o.paginate = PGPIPE_PULL_LINK;
    o.retry_budget_ms = 1000;
    pgpipe_pull_progress pr;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_absurd", "count(*)"), 30);
    PGT_CHECK_MSG(pr.waited_ms < 20000, "waited %lld ms", pr.waited_ms);
    pl_clean(c, "pl_absurd");
    pgt_db_close(c);
}

static void pl_t_backoff(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_fault(c, "/link?n=30&per=10&fault=500", 2);
    pl_fault(c, "/link?n=30&per=10&fault=drop&at=3", 1);
    pl_fault(c, "/link?n=30&per=10&fault=stall", 1); /* the request times out */
    PGT_EQ_INT(pl_stat("faults"), 4);
    /* the time budget, not a count, ends the retries */
    pl_clean(c, "pl_fault");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_fault", "/link?n=30&per=10&fault=500&at=1&since=0");
    o.paginate = PGPIPE_PULL_LINK;
    o.retry_budget_ms = 0;
    char err[1024];
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_IO);
    PGT_CONTAINS(err, "HTTP 500; gave up after 1 attempts");
    pgt_db_close(c);
}

static void pl_t_gzip(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_fault(c, "/link?n=30&per=10&gzip=1", 0);
    PGT_EQ_INT(pl_stat("gzip"), 3);
    pgt_db_close(c);
}

static void pl_t_secrets(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_auth");
    pgpipe_pull_options o;
    char err[1024];
    /* no credentials: 401, not retried */
    pl_opts(&o, "pl_auth", "/link?n=5&per=10&auth=bearer");
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_IO);
    PGT_CONTAINS(err, "HTTP 401");
    /* bearer from the environment */
    setenv("PL_TOKEN", "s3cret-token", 1);
    o.bearer_env = "PL_TOKEN";
    PGT_OK(pl_run(&o, NULL, NULL, 0));
    /* basic from a file */
    char f[600];
    snprintf(f, sizeof f, "%s/pl-basic.%d", pgt_tmpdir(), (int)getpid());
    FILE *fp = fopen(f, "w");
    PGT_CHECK(fp);
    fputs("user:pa55\n", fp);
    fclose(fp);
    pl_opts(&o, "pl_auth", "/link?n=5&per=10&auth=basic");
    o.basic_file = f;
    PGT_OK(pl_run(&o, NULL, NULL, 0));
    /* an API key header */
    setenv("PL_KEY", "k3y-value", 1);
    pl_opts(&o, "pl_auth", "/link?n=5&per=10&auth=key");
    o.api_key_header = "X-Api-Key";
    o.api_key_env = "PL_KEY";
    PGT_OK(pl_run(&o, NULL, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_auth", "count(*)"), 15);
    /* a secret in an error is masked: the server echoes nothing, a URL does */
    setenv("PL_TOKEN", "wrong-token-value", 1);
    pl_opts(&o, "pl_auth", "/link?n=5&per=10&auth=bearer&x=wrong-token-value&token=abc");
    o.bearer_env = "PL_TOKEN";
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_IO);
    PGT_CHECK_MSG(!strstr(err, "wrong-token-value") && !strstr(err, "abc"), "not masked: %s", err);
    PGT_CONTAINS(err, "x=***&token=***");
    /* a missing variable or file */
    o.bearer_env = "PL_NO_SUCH_VARIABLE";
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_IO);
    PGT_CONTAINS(err, "PL_NO_SUCH_VARIABLE is not set");
    unlink(f);
    pgt_db_close(c);
}

/* ---- kill -9 ------------------------------------------------------------------- */

static void pl_kill9(const char *src, const char *path, int style, int concurrency)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, src);
    char q[512];
    pgpipe_pull_options o;
    pl_opts(&o, src, path);
    o.paginate = style;
    o.limit = 10;
    o.records = style == PGPIPE_PULL_OFFSET ? "items" : "";
    o.concurrency = concurrency;
    for (int round = 0; round < 2; round++) {
        snprintf(q, sizeof q, "SELECT coalesce(max(pages), 0) FROM pgpipe.pull_state WHERE source = '%s'", src);
        long long before = pgt_db_int(c, q);
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        PGT_CHECK(pid >= 0);
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            pgpipe_pull *p = NULL;
            if (pgpipe_pull_open(&p, &o) == PGPIPE_OK)
                pgpipe_pull_run(p);
            _exit(0);
        }
        /* a few pages in, kill it wherever it is */
        for (int i = 0; i < 400; i++) {
            if (pgt_db_int(c, q) >= before + 4 + round * 3)
                break;
            pgpipe_sleep_ms(20);
        }
        if (round == 0) { /* while it runs, a second run of the stream is refused */
            char err[512];
            PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_BUSY);
            PGT_CONTAINS(err, "another run");
        }
        pgpipe_sleep_ms(15 + round * 20);
        kill(pid, SIGKILL);
        int st;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        PGT_CHECK(pl_count(c, src, "count(*)") < 400);
    }
    /* the next run resumes at the page after the last commit */
    pgpipe_pull_progress pr;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_CHECK(pr.pages < 40);
    PGT_EQ_INT(pl_count(c, src, "count(*)"), 400);
    PGT_EQ_INT(pl_count(c, src, "count(DISTINCT payload->>'id')"), 400);
    snprintf(q, sizeof q, "SELECT records FROM pgpipe.pull_state WHERE source = '%s'", src);
    PGT_EQ_INT(pgt_db_int(c, q), 400);
    snprintf(q, sizeof q, "SELECT count(*) FROM pgpipe.pull_runs WHERE source = '%s' AND error = 'interrupted'", src);
    PGT_EQ_INT(pgt_db_int(c, q), 2);
    /* every page's records are one batch: no page was staged in part or twice */
    snprintf(q, sizeof q, "SELECT count(*) FROM (SELECT batch_id FROM staging.raw_events WHERE source = '%s' "
                          "GROUP BY batch_id HAVING count(*) <> 10 OR max((payload->>'id')::int) - "
                          "min((payload->>'id')::int) <> 9) x", src);
    PGT_EQ_INT(pgt_db_int(c, q), 0);
    pgt_db_close(c);
}

static void pl_t_kill9_resume(void)
{
    pl_kill9("pl_kill", "/link?n=400&per=10&delay=40", PGPIPE_PULL_LINK, 1);
}

/* the same with 4 requests in flight and 4 pages written at once */
static void pl_t_kill9_concurrent(void)
{
    pl_kill9("pl_kill4", "/link?n=400&per=10&delay=40", PGPIPE_PULL_LINK, 4);
    pl_kill9("pl_kill4o", "/offset?n=400&delay=40", PGPIPE_PULL_OFFSET, 4);
}

/* ---- concurrency -------------------------------------------------------------- */

static void pl_t_concurrency_option(void)
{
    pgpipe_pull_options o;
    pgpipe_pull_options_init(&o);
    PGT_EQ_INT(o.concurrency, 1);
    pgpipe_error e;
    const char *bad[] = { "0", "-1", "abc", "65", "99999999999999999999", "1.5", "", "4x", " 4" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        PGT_EQ_INT(pgpipe_pull_set(&o, "--concurrency", bad[i], &e), PGPIPE_MISUSE);
        PGT_CONTAINS(e.message, "--concurrency: requests in flight at once, a whole number from 1 to 64");
    }
    PGT_EQ_INT(o.concurrency, 1);
    /* durations: NaN, negative, and a timeout of 0 (libcurl: no timeout at all) */
    const char *bad_ms[][2] = { { "timeout", "0" }, { "connect-timeout", "0s" }, { "timeout", "nan" },
                                { "retry-budget", "NaN" }, { "timeout", "-5" }, { "retry-budget", "1e400" } };
    for (size_t i = 0; i < sizeof bad_ms / sizeof bad_ms[0]; i++) {
        memset(&e, 0, sizeof e);
        PGT_EQ_INT(pgpipe_pull_set(&o, bad_ms[i][0], bad_ms[i][1], &e), PGPIPE_MISUSE);
        PGT_CONTAINS(e.message, bad_ms[i][0]);
    }
    PGT_EQ_INT(o.timeout_ms, 60000);
    PGT_EQ_INT(o.retry_budget_ms, 300000);
    memset(&e, 0, sizeof e);
    PGT_EQ_INT(pgpipe_pull_set(&o, "limit", "0", &e), PGPIPE_MISUSE);
    PGT_CONTAINS(e.message, "--limit: records per page, at least 1, not \"0\"");
    PGT_EQ_INT(o.limit, 100);
    PGT_OK(pgpipe_pull_set(&o, "first-page", "0", &e)); /* pages counted from 0: allowed */
    PGT_OK(pgpipe_pull_set(&o, "first-page", "1", &e));
    PGT_OK(pgpipe_pull_set(&o, "retry-budget", "0", &e)); /* no retries: allowed */
    PGT_EQ_INT(o.retry_budget_ms, 0);
    PGT_OK(pgpipe_pull_set(&o, "concurrency", "64", &e));
    PGT_EQ_INT(o.concurrency, 64);
    /* set directly: refused when the handle opens */
    o.source = "x";
    o.url = "http://127.0.0.1:1/";
    o.conninfo = pgt_dsn();
    o.timeout_ms = 0;
    pgpipe_pull *p = NULL;
    PGT_EQ_INT(pgpipe_pull_open(&p, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(p), "the timeouts are at least 1 ms");
    pgpipe_pull_close(p);
    o.timeout_ms = 60000;
    o.concurrency = 0;
    p = NULL;
    PGT_EQ_INT(pgpipe_pull_open(&p, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(p), "concurrency is 1 to 64, not 0");
    pgpipe_pull_close(p);
    /* an empty stream is not the default stream (whose cursor it would move) */
    o.concurrency = 1;
    o.stream = "";
    PGT_EQ_INT(pgpipe_pull_open(&p, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(p), "the stream is empty");
    pgpipe_pull_close(p);
    o.stream = "default";
    /* a backfill range that runs backwards, where its ends say so: ids or
    ** ISO times of one shape; other values are the API's to judge */
    static const struct { const char *from, *to; int bad; } bf[] = {
        { "5", "1", 1 }, { "-1", "-7", 1 }, { "2026-12-31", "2026-01-01", 1 },
        { "2026-02-01T00:00:00Z", "2026-01-31T23:59:59Z", 1 }, { "1", "5", 0 },
        { "7", "7", 0 }, { "2026-01-01", "2026-12-31", 0 }, { "b", "a", 0 },
        { "2026-12-31", "2027-01-01T00:00:00Z", 0 }, { "99999999999999999999", "1", 0 },
    };
    for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++) {
        o.backfill_from = bf[i].from;
        o.backfill_to = bf[i].to;
        int rc = pgpipe_pull_open(&p, &o);
        PGT_EQ_INT(rc, bf[i].bad ? PGPIPE_MISUSE : PGPIPE_OK);
        if (bf[i].bad)
            PGT_CONTAINS(pgpipe_errmsg(p), "the backfill runs backwards");
        pgpipe_pull_close(p);
    }
    o.backfill_from = o.backfill_to = NULL;
    pgpipe_pull_budget *b;
    PGT_OK(pgpipe_pull_budget_open(&b, 0, 1));
    PGT_EQ_INT(pgpipe_pull_budget_set_concurrency(b, -1), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_pull_budget_set_concurrency(b, 65), PGPIPE_MISUSE);
    PGT_OK(pgpipe_pull_budget_set_concurrency(b, 2));
    PGT_EQ_INT((long long)pull_budget_take(b), 0);
    PGT_EQ_INT((long long)pull_budget_take(b), 0);
    PGT_CHECK(pull_budget_take(b) > 0); /* both slots held */
    pull_budget_release(b);
    PGT_EQ_INT((long long)pull_budget_take(b), 0);
    pgpipe_pull_budget_close(b);
}

/* After every commit the stream's staged records are exactly ids 1..N:
** pages commit in order, none twice, none in part. */
typedef struct pl_order {
    PGconn *c;
    const char *source;
    long long checks, bad;
    char why[256];
} pl_order;
static void pl_order_check(void *ud, const pgpipe_pull_progress *pr)
{
    pl_order *x = ud;
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) || ' ' || coalesce(max((payload->>'id')::int), 0) || ' ' || "
                          "count(DISTINCT payload->>'id') FROM staging.raw_events WHERE source = '%s'", x->source);
    PGresult *r = PQexec(x->c, q);
    char want[96];
    snprintf(want, sizeof want, "%lld %lld %lld", pr->records, pr->records, pr->records);
    const char *got = PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "error";
    if (strcmp(got, want) != 0 && !x->bad++)
        snprintf(x->why, sizeof x->why, "after %lld pages: staged %s, expected %s", pr->pages, got, want);
    x->checks++;
    PQclear(r);
}

static void pl_same(PGconn *c, const char *path, int style, int conc, long long records, long long pages)
{
    const char *src = conc == 1 ? "pl_c1" : "pl_c4";
    pl_clean(c, src);
    pgpipe_pull_options o;
    pl_opts(&o, src, path);
    o.paginate = style;
    o.limit = 10;
    o.records = style == PGPIPE_PULL_CURSOR ? "data.items" : style == PGPIPE_PULL_OFFSET ? "items"
                : style == PGPIPE_PULL_PAGE ? "results" : "";
    o.cursor_path = "next_cursor";
    o.more_path = "has_more";
    o.page_param = "page";
    o.limit_param = style == PGPIPE_PULL_PAGE ? "per_page" : NULL;
    o.since_field = "id";
    o.concurrency = conc;
    pl_order ord = { pgt_db_open(), src, 0, 0, "" };
    o.progress = pl_order_check;
    o.progress_ud = &ord;
    pgpipe_pull_progress pr;
    PGT_CHECK_MSG(pl_run(&o, &pr, NULL, 0) == PGPIPE_OK, "%s with concurrency %d", path, conc);
    PGT_CHECK_MSG(!ord.bad, "%s with concurrency %d: %s", path, conc, ord.why);
    PGT_CHECK(ord.checks >= pages);
    PGT_EQ_INT(pr.pages, pages);
    PGT_EQ_INT(pr.records, records);
    PGT_EQ_INT(pl_count(c, src, "count(*)"), records);
    PGT_EQ_INT(pl_count(c, src, "count(DISTINCT payload->>'id')"), records);
    PGT_EQ_INT(pl_count(c, src, "count(DISTINCT batch_id)"), (records + 9) / 10); /* an empty page has none */
    char q[256];
    snprintf(q, sizeof q, "SELECT coalesce(cursor, '-') || ' ' || pages || ' ' || records || ' ' || last_status "
                          "FROM pgpipe.pull_state WHERE source = '%s'", src);
    char want[96];
    snprintf(want, sizeof want, "%lld %lld %lld done", records, pages, records);
    PGT_EQ_STR(pgt_db_str(c, q), want);
    pgt_db_close(ord.c);
}

static void pl_t_concurrency_same(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    static const struct { const char *path; int style; long long records, pages; } cases[] = {
        { "/offset?n=95", PGPIPE_PULL_OFFSET, 95, 10 },        /* a short last page */
        { "/offset?n=90", PGPIPE_PULL_OFFSET, 90, 10 },                /* an empty page ends it */
        { "/page?n=73&per_page=10", PGPIPE_PULL_PAGE, 73, 8 },
        { "/link?n=64&per=10", PGPIPE_PULL_LINK, 64, 7 },
        { "/cursor?n=57&per=10&opaque=1", PGPIPE_PULL_CURSOR, 57, 6 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pl_same(c, cases[i].path, cases[i].style, 1, cases[i].records, cases[i].pages);
        pl_same(c, cases[i].path, cases[i].style, 4, cases[i].records, cases[i].pages);
        /* the same records */
        PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM ((SELECT payload FROM staging.raw_events WHERE source = 'pl_c1' "
                                 "EXCEPT SELECT payload FROM staging.raw_events WHERE source = 'pl_c4') UNION ALL "
                                 "(SELECT payload FROM staging.raw_events WHERE source = 'pl_c4' EXCEPT "
                                 "SELECT payload FROM staging.raw_events WHERE source = 'pl_c1')) x"), 0);
    }
    /* an API that gives 7 records a page whatever the limit: the pages asked
    ** for ahead at offsets 10, 20, ... are not the ones the listing names next
    ** (7, 14, ...): dropped and asked for again, never staged */
    for (int conc = 1; conc <= 4; conc += 3) {
        const char *src = conc == 1 ? "pl_c1" : "pl_c4";
        pl_clean(c, src);
        pgpipe_pull_options o;
        pl_opts(&o, src, "/offset?n=50&cap=7");
        o.paginate = PGPIPE_PULL_OFFSET;
        o.limit = 10;
        o.records = "items";
        o.total_path = "total";
        o.concurrency = conc;
        pl_order ord = { pgt_db_open(), src, 0, 0, "" };
        o.progress = pl_order_check;
        o.progress_ud = &ord;
        pgpipe_pull_progress pr;
        PGT_OK(pl_run(&o, &pr, NULL, 0));
        PGT_CHECK_MSG(!ord.bad, "concurrency %d: %s", conc, ord.why);
        PGT_EQ_INT(pr.pages, 8);
        PGT_EQ_INT(pl_count(c, src, "count(*)"), 50);
        PGT_EQ_INT(pl_count(c, src, "count(DISTINCT payload->>'id')"), 50);
        pgt_db_close(ord.c);
    }
    /* one short page: the 3 pages asked for beside it are dropped, never staged */
    pl_same(c, "/offset?n=5", PGPIPE_PULL_OFFSET, 4, 5, 1);
    PGT_EQ_INT(pl_count(c, "pl_c4", "count(DISTINCT batch_id)"), 1);
    /* max_pages with pages fetched ahead: the run stops there, the next goes on */
    pl_clean(c, "pl_c4");
    pgpipe_pull_options o;
    pl_opts(&o, "pl_c4", "/offset?n=95");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.concurrency = 4;
    o.max_pages = 3;
    pgpipe_pull_progress pr;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pr.pages, 3);
    PGT_EQ_INT(pl_count(c, "pl_c4", "count(*)"), 30);
    PGT_CONTAINS(pgt_db_str(c, "SELECT next_url FROM pgpipe.pull_state WHERE source = 'pl_c4'"), "offset=30");
    o.max_pages = 0;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_c4", "count(*)"), 95);
    PGT_EQ_INT(pl_count(c, "pl_c4", "count(DISTINCT payload->>'id')"), 95);
    pgt_db_close(c);
}

/* Faults while several requests are in flight. */
static void pl_t_concurrency_faults(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pgpipe_pull_progress pr;
    pgpipe_pull_options o;
    /* a 429 with Retry-After, answered after the pages beside it: no
    ** request of the source comes before the wait is over */
    pl_clean(c, "pl_cf");
    pl_opts(&o, "pl_cf", "/offset?n=120&fault=429&ra=1&at=3&hold=300");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.limit = 10;
    o.records = "items";
    o.total_path = "total";
    o.concurrency = 4;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_CHECK_MSG(pr.retries >= 1, "%lld retries", pr.retries);
    PGT_EQ_INT(pl_count(c, "pl_cf", "count(*)"), 120);
    PGT_EQ_INT(pl_count(c, "pl_cf", "count(DISTINCT payload->>'id')"), 120);
    PGT_EQ_INT(pl_stat("early"), 0);
    PGT_EQ_INT(pl_stat("faults"), 1);
    /* one page stalls (the request times out, is asked again) while the
    ** pages after it come in: they wait for it, in order */
    pl_clean(c, "pl_cf");
    pl_opts(&o, "pl_cf", "/page?n=80&per_page=10&fault=stall&at=2");
    o.paginate = PGPIPE_PULL_PAGE;
    o.records = "results";
    o.pages_path = "total_pages";
    o.limit = 10;
    o.limit_param = "per_page";
    o.timeout_ms = 1500;
    o.concurrency = 4;
    pl_order ord = { pgt_db_open(), "pl_cf", 0, 0, "" };
    o.progress = pl_order_check;
    o.progress_ud = &ord;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_CHECK_MSG(!ord.bad, "%s", ord.why);
    PGT_CHECK(pr.retries >= 1);
    PGT_EQ_INT(pr.pages, 8);
    PGT_EQ_INT(pl_count(c, "pl_cf", "count(DISTINCT payload->>'id')"), 80);
    PGT_EQ_INT(pl_count(c, "pl_cf", "count(*)"), 80);
    pgt_db_close(ord.c);
    /* a page that fails for good: the pages before it commit, none after */
    pl_clean(c, "pl_cf");
    pl_opts(&o, "pl_cf", "/offset?n=80&fault=malformed&at=4");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.records = "items";
    o.limit = 10;
    o.concurrency = 4;
    char err[1024];
    PGT_EQ_INT(pl_run(&o, NULL, err, sizeof err), PGPIPE_PARSE);
    PGT_CONTAINS(err, "offset=30");
    PGT_EQ_INT(pl_count(c, "pl_cf", "count(*)"), 30);
    PGT_CONTAINS(pgt_db_str(c, "SELECT next_url FROM pgpipe.pull_state WHERE source = 'pl_cf'"), "offset=30");
    /* two streams of one source share a budget of one request at a time */
    pgpipe_pull_budget *b;
    PGT_OK(pgpipe_pull_budget_open(&b, 0, 1));
    PGT_OK(pgpipe_pull_budget_set_concurrency(b, 1));
    pl_clean(c, "pl_cf");
    pl_opts(&o, "pl_cf", "/offset?n=50");
    o.paginate = PGPIPE_PULL_OFFSET;
    o.records = "items";
    o.limit = 10;
    o.concurrency = 4;
    o.budget = b;
    PGT_OK(pl_run(&o, &pr, NULL, 0));
    PGT_EQ_INT(pl_count(c, "pl_cf", "count(DISTINCT payload->>'id')"), 50);
    PGT_EQ_INT(b->inflight, 0);
    pgpipe_pull_budget_close(b);
    pgt_db_close(c);
}


/* ---- the pipeline file's pull source ------------------------------------------- */

typedef struct pl_runner {
    pgpipe_runner *r;
    pthread_t th;
    int rc;
} pl_runner;
static void *pl_runner_main(void *arg)
{
    pl_runner *x = arg;
    x->rc = pgpipe_runner_run(x->r);
    return NULL;
}

static void pl_t_run_source(void)
{
    PGconn *c = pgt_db_open();
    pl_server();
    pl_clean(c, "pl_run");
    char dir[512], file[600], text[2048];
    snprintf(dir, sizeof dir, "%s/pl_run_%d", pgt_tmpdir(), (int)getpid());
    mkdir(dir, 0777);
    snprintf(file, sizeof file, "%s/pipeline.pgpipe", dir);
    /* two streams of one API: one budget, each on its schedule */
    snprintf(text, sizeof text,
             ".pipeline pl_run_%d\n"
             ".source pull users --source pl_run --stream users --url '%s/offset?n=35' --paginate offset "
             "--limit 10 --records items --total-path total --since-field id --every 1s --rate 50\n"
             ".source pull orders --source pl_run --stream orders --url %s/link?n=12&per=5 "
             "--paginate link --event-type order --every 1h --concurrency 2\n", (int)getpid(), pl_base, pl_base);
    FILE *f = fopen(file, "w");
    PGT_CHECK(f);
    fputs(text, f);
    fclose(f);
    /* the file checks */
    pgpipe_pipefile *pf = NULL;
    PGT_OK(pgpipe_pipefile_open(&pf, file, NULL, 0));
    pgpipe_pipefile_close(pf);

    pgpipe_run_options o;
    pgpipe_run_options_init(&o);
    o.conninfo = pgt_dsn();
    o.instance = "pl";
    o.drain_timeout_ms = 2000;
    o.sd_notify = 0;
    pl_runner x;
    memset(&x, 0, sizeof x);
    PGT_CHECK_MSG(pgpipe_runner_open(&x.r, file, &o) == PGPIPE_OK, "%s", pgpipe_errmsg(x.r));
    PGT_CHECK(pthread_create(&x.th, NULL, pl_runner_main, &x) == 0);
    /* users ran at least twice (every second), orders once */
    long long runs = 0;
    for (int i = 0; i < 150 && runs < 2; i++) {
        pgpipe_sleep_ms(100);
        runs = pgt_db_int(c, "SELECT count(*) FROM pgpipe.pull_runs WHERE source = 'pl_run' "
                             "AND stream = 'users' AND status = 'done'");
    }
    pgpipe_runner_stop(x.r);
    pthread_join(x.th, NULL);
    pgpipe_runner_close(x.r);
    PGT_CHECK_MSG(runs >= 2, "users ran %lld times", runs);
    PGT_EQ_INT(pl_count(c, "pl_run", "count(*) FILTER (WHERE event_type = 'users')"), 35);
    PGT_EQ_INT(pl_count(c, "pl_run", "count(*) FILTER (WHERE event_type = 'order')"), 12);
    PGT_EQ_STR(pgt_db_str(c, "SELECT cursor FROM pgpipe.pull_state WHERE source = 'pl_run' AND stream = 'users'"),
               "35");
    pgt_db_close(c);
}

static void pl_t_run_file_check(void)
{
    char dir[512], file[600];
    snprintf(dir, sizeof dir, "%s/pl_chk_%d", pgt_tmpdir(), (int)getpid());
    mkdir(dir, 0777);
    snprintf(file, sizeof file, "%s/p.pgpipe", dir);
    FILE *f = fopen(file, "w");
    PGT_CHECK(f);
    fputs(".source pull a --url http://x/ --paginate sideways --token s3cret --every 5x\n"
          ".source pull b --paginate cursor\n"
          ".source pull c --url http://x/ --concurrency 0\n", f);
    fclose(f);
    pgpipe_pipefile *pf = NULL;
    PGT_CHECK(pgpipe_pipefile_open(&pf, file, NULL, 0) != PGPIPE_OK);
    pp_buf all = { 0 };
    for (int i = 0; i < pgpipe_pipefile_diag_count(pf); i++) {
        const pgpipe_pipe_diag *d = pgpipe_pipefile_diag(pf, i);
        pp_buf_appendf(&all, "%d: %s\n", d->line, d->message);
    }
    pp_buf_putc(&all, 0);
    PGT_CONTAINS(all.data, "1: .source pull: --paginate: none, link, cursor, offset or page");
    PGT_CONTAINS(all.data, "1: .source pull: --token: a secret is never given as a value");
    PGT_CONTAINS(all.data, "1: .source pull: --every: expected a duration");
    PGT_CONTAINS(all.data, "2: .source pull: --url is required");
    PGT_CONTAINS(all.data, "2: .source pull: --paginate cursor needs --cursor-path");
    PGT_CONTAINS(all.data, "3: .source pull: --concurrency: requests in flight at once, a whole number from 1 to 64, not \"0\"");
    PGT_CHECK(!strstr(all.data, "s3cret"));
    pp_buf_free(&all);
    pgpipe_pipefile_close(pf);
}

#define PL_CALL(f) f()
#else
#define PL_CALL(f) PGT_SKIP("built without libcurl")
#endif /* PGPIPE_ENABLE_CURL */

PGT_TEST(pull, budget) { PL_CALL(pl_t_budget); }
PGT_TEST(pull, link_pages) { PL_CALL(pl_t_link_pages); }
PGT_TEST(pull, cursor_incremental) { PL_CALL(pl_t_cursor_incremental); }
PGT_TEST(pull, since_and_backfill) { PL_CALL(pl_t_since_and_backfill); }
PGT_TEST(pull, page_numbers) { PL_CALL(pl_t_page_numbers); }
PGT_TEST(pull, dead_letters) { PL_CALL(pl_t_dead_letters); }
PGT_TEST(pull, non_objects) { PL_CALL(pl_t_non_objects); }
PGT_TEST(pull, incomplete_pagination) { PL_CALL(pl_t_incomplete_pagination); }
PGT_TEST(pull, malformed_body) { PL_CALL(pl_t_malformed_body); }
PGT_TEST(pull, same_records) { PL_CALL(pl_t_same_records); }
PGT_TEST(pull, binary_rows_read_the_same_as_text) { PL_CALL(pl_t_binary_same_as_text); }
PGT_TEST(pull, json_payload_as_sent) { PL_CALL(pl_t_json_payload_as_sent); }
PGT_TEST(pull, retry_after) { PL_CALL(pl_t_retry_after); }
PGT_TEST(pull, backoff) { PL_CALL(pl_t_backoff); }
PGT_TEST(pull, retry_after_absurd) { PL_CALL(pl_t_retry_after_absurd); }
PGT_TEST(pull, link_elsewhere) { PL_CALL(pl_t_link_elsewhere); }
PGT_TEST(pull, url_credentials) { PL_CALL(pl_t_url_credentials); }
PGT_TEST(pull, gzip) { PL_CALL(pl_t_gzip); }
PGT_TEST(pull, body_limit) { PL_CALL(pl_t_body_limit); }
PGT_TEST(pull, body_budget) { PL_CALL(pl_t_body_budget); }
PGT_TEST(pull, salvage) { PL_CALL(pl_t_salvage); }
PGT_TEST(pull, hostile_rate_and_budget_values) { PL_CALL(pl_t_hostile_values); }
PGT_TEST(pull, rows_in_body_budget) { PL_CALL(pl_t_rows_in_budget); }
PGT_TEST(pull, salvage_long_bad_record) { PL_CALL(pl_t_salvage_long); }
PGT_TEST(pull, salvage_bare_tokens) { PL_CALL(pl_t_salvage_tokens); }
PGT_TEST(pull, salvage_token_past_kept_bytes) { PL_CALL(pl_t_salvage_cut_token); }
PGT_TEST(pull, secrets) { PL_CALL(pl_t_secrets); }
PGT_TEST(pull, kill9_resume) { PL_CALL(pl_t_kill9_resume); }
PGT_TEST(pull, kill9_concurrent) { PL_CALL(pl_t_kill9_concurrent); }
PGT_TEST(pull, concurrency_option) { PL_CALL(pl_t_concurrency_option); }
PGT_TEST(pull, concurrency_same) { PL_CALL(pl_t_concurrency_same); }
PGT_TEST(pull, concurrency_faults) { PL_CALL(pl_t_concurrency_faults); }
PGT_TEST(pull, run_source) { PL_CALL(pl_t_run_source); }
PGT_TEST(pull, run_file_check) { PL_CALL(pl_t_run_file_check); }

PGT_TEST(pull, without_curl)
{
#ifdef PGPIPE_ENABLE_CURL
    PGT_SKIP("built with libcurl");
#else
    pgpipe_pull_options o;
    pgpipe_pull_options_init(&o);
    o.source = "x";
    o.url = "http://127.0.0.1/";
    pgpipe_pull *p = NULL;
    PGT_EQ_INT(pgpipe_pull_open(&p, &o), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(p), "built without libcurl");
    pgpipe_pull_close(p);
#endif
}
