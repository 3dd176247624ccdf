/* Tests of the runner's alerts (src/run/run_alert.c), status page
** (src/run/run_status.c) and the HTTP server's page and metrics hooks
** (src/http/http.c), against the test cluster: real runners on threads,
** real dead letters and events, a LISTEN on a second connection, a real
** command, a real socket. Uses the socket helpers of test_http.c (one
** program holds every test file). */

#include <pthread.h>

/* ---- the page hook over a real socket ------------------------------------ */

static void ra_t_page(void *ud, const pgpipe_http_page_request *rq, pgpipe_http_page_reply *out)
{
    (void)ud;
    if (!strcmp(rq->path, "/hello")) {
        out->status = 200;
        out->content_type = "text/plain";
        out->headers = "X-Page: yes\r\n";
        char b[256];
        int n = snprintf(b, sizeof b, "hello %s q=%s auth=%s body=%.*s", rq->method, rq->query,
                         rq->authorization ? rq->authorization : "-", (int)rq->body_len,
                         rq->body);
        pgpipe_http_page_write(out, b, (size_t)n);
    }
}

static void ra_t_metrics(void *ud, pgpipe_http_page_reply *out)
{
    (void)ud;
    const char *s = "ra_t_extra_metric 42\n";
    pgpipe_http_page_write(out, s, strlen(s));
}

static void ra_t_hooks(pgpipe_http_options *o)
{
    o->listen = "127.0.0.1:0";
    o->page = ra_t_page;
    o->metrics = ra_t_metrics;
}

PGT_TEST(run_alert, http_page_hook)
{
    http_t_srv s;
    http_t_start(&s, ra_t_hooks);
    http_t_resp r;
    PGT_EQ_INT(http_t_ask(s.port, "GET /hello?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer t\r\n"
                                  "Connection: close\r\n\r\n", &r), 200);
    PGT_CONTAINS(r.head, "Content-Type: text/plain\r\n");
    PGT_CONTAINS(r.head, "X-Page: yes\r\n");
    PGT_EQ_STR(r.body, "hello GET q=x=1 auth=Bearer t body=");
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "POST /hello HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                                  "Connection: close\r\n\r\nabcde", &r), 200);
    PGT_EQ_STR(r.body, "hello POST q= auth=- body=abcde");
    free(r.body);
    http_t_head_only = 1;
    PGT_EQ_INT(http_t_ask(s.port, "HEAD /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                          &r), 200);
    http_t_head_only = 0;
    PGT_CONTAINS(r.head, "Content-Length: 26\r\n"); /* "hello HEAD q= auth=- body=" */
    free(r.body);
    /* a path the hook does not serve, and the server's own paths */
    PGT_EQ_INT(http_t_ask(s.port, "GET /nope HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                          &r), 404);
    PGT_CONTAINS(r.body, "not_found");
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET /v1/events/x HTTP/1.1\r\nHost: a\r\n"
                                  "Connection: close\r\n\r\n", &r), 405);
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                          &r), 200);
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                          &r), 200);
    PGT_CONTAINS(r.body, "pgpipe_http_open_connections");
    PGT_CONTAINS(r.body, "\nra_t_extra_metric 42\n");
    free(r.body);
    http_t_stop(&s);
}

/* ---- runners on threads ---------------------------------------------------- */

typedef struct ra_t_runner {
    pgpipe_runner *r;
    pthread_t th;
    int rc;
} ra_t_runner;

static void *ra_t_main(void *arg)
{
    ra_t_runner *x = arg;
    x->rc = pgpipe_runner_run(x->r);
    return NULL;
}

static char ra_t_dsn[1024];

static void ra_t_sleep_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    nanosleep(&ts, NULL);
}

static void ra_t_start(ra_t_runner *x, const char *file, const char *instance,
                       const char *on_alert, const char *token)
{
    memset(x, 0, sizeof *x);
    pgpipe_run_options o;
    pgpipe_run_options_init(&o);
    o.conninfo = ra_t_dsn;
    o.instance = instance;
    o.on_alert = on_alert;
    o.http_token = token;
    o.drain_timeout_ms = 2000;
    o.sd_notify = 0;
    int rc = pgpipe_runner_open(&x->r, file, &o);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "runner open: %s", pgpipe_errmsg(x->r));
    PGT_CHECK(pthread_create(&x->th, NULL, ra_t_main, x) == 0);
}

static void ra_t_stop(ra_t_runner *x)
{
    PGT_OK(pgpipe_runner_stop(x->r));
    PGT_CHECK(pthread_join(x->th, NULL) == 0);
    PGT_CHECK_MSG(x->rc == PGPIPE_OK, "runner: %s", pgpipe_errmsg(x->r));
    pgpipe_runner_close(x->r);
}

static PGconn *ra_t_db(const char *name)
{
    PGconn *c = pgt_db_fresh(name);
    snprintf(ra_t_dsn, sizeof ra_t_dsn, "%s dbname=%s", pgt_dsn(), name);
    return c;
}

static void ra_t_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    PGT_CHECK(f);
    fputs(text, f);
    fclose(f);
}

/* How many times needle occurs in the file (0 when it is missing). */
static int ra_t_count_in_file(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    int k = 0;
    for (char *p = buf; (p = strstr(p, needle)); p += strlen(needle))
        k++;
    return k;
}

/* Poll sql (one number) until it equals want; 20 s at most. */
static long long ra_t_wait_int(PGconn *c, const char *sql, long long want)
{
    long long v = -1;
    for (int i = 0; i < 200; i++) {
        v = pgt_db_int(c, sql);
        if (v == want)
            return v;
        ra_t_sleep_us(100 * 1000);
    }
    return v;
}

static int ra_t_wait_file(const char *path, const char *needle, int want)
{
    int k = 0;
    for (int i = 0; i < 200; i++) {
        if ((k = ra_t_count_in_file(path, needle)) >= want)
            return k;
        ra_t_sleep_us(100 * 1000);
    }
    return k;
}

/* The log lines of alerts, counted by rule. */
static pthread_mutex_t ra_t_log_mu = PTHREAD_MUTEX_INITIALIZER;
static int ra_t_log_dlq, ra_t_log_backlog;
static void ra_t_log(void *ud, int level, const char *component, const char *message,
                     const pgpipe_log_field *f, int nf)
{
    (void)ud, (void)message;
    if (level != PGPIPE_LOG_WARN || strcmp(component, "run"))
        return;
    int subject = 0, pipeline = 0, instance = 0;
    const char *rule = NULL;
    for (int i = 0; i < nf; i++) {
        if (!strcmp(f[i].key, "rule"))
            rule = f[i].value;
        subject |= !strcmp(f[i].key, "subject");
        pipeline |= !strcmp(f[i].key, "pipeline") && !strcmp(f[i].value, "ra_alerts");
        instance |= !strcmp(f[i].key, "instance");
    }
    if (!rule || !subject || !pipeline || !instance)
        return;
    pthread_mutex_lock(&ra_t_log_mu);
    if (!strcmp(rule, "dlq-growth") && !strstr(message, "not "))
        ra_t_log_dlq++;
    if (!strcmp(rule, "backlog-age") && !strstr(message, "not "))
        ra_t_log_backlog++;
    pthread_mutex_unlock(&ra_t_log_mu);
}

static int ra_t_notifies(PGconn *l, const char *channel, int *dlq)
{
    int n = 0;
    PQconsumeInput(l);
    PGnotify *nt;
    while ((nt = PQnotifies(l))) {
        if (!strcmp(nt->relname, channel)) {
            n++;
            if (strstr(nt->extra, "\"rule\":\"dlq-growth\"") &&
                strstr(nt->extra, "\"pipeline\":\"ra_alerts\"") &&
                strstr(nt->extra, "\"subject\":\"dead_letters\"") &&
                strstr(nt->extra, "\"detail\":{\"new_dead_letters\":3") &&
                strstr(nt->extra, "\"fired_at\":\"") && strstr(nt->extra, "\"instance\":\"ra"))
                (*dlq)++;
        }
        PQfreemem(nt);
    }
    return n;
}

PGT_TEST(run_alert, delivered_once_across_instances_and_again_after_clear)
{
    PGconn *c = ra_t_db("pgpipe_t_run_alert");
    char dir[512], file[600], out[600], all[600], text[4096];
    snprintf(dir, sizeof dir, "%s/ra_t_%d", pgt_tmpdir(), (int)getpid());
    mkdir(dir, 0700);
    snprintf(file, sizeof file, "%s/alerts.pgpipe", dir);
    snprintf(out, sizeof out, "%s/command.out", dir);
    snprintf(all, sizeof all, "%s/on_alert.out", dir);
    unlink(out);
    unlink(all);
    snprintf(text, sizeof text,
             ".pipeline ra_alerts\n"
             "CREATE TABLE IF NOT EXISTS public.ra_alert_rows (pipeline text, rule text, "
             "subject text, message text, detail jsonb, fired_at timestamptz);\n"
             ".alert dlq-growth --threshold 2 --table public.ra_alert_rows --notify ra_alert_ch "
             "--command 'cat >> %s; echo >> %s'\n"
             ".alert backlog-age --older-than 30m --event-type ra_t_old\n",
             out, out);
    ra_t_write(file, text);
    char on_alert[1300];
    snprintf(on_alert, sizeof on_alert, "cat >> %s; echo >> %s", all, all);
    pgpipe_config_log(ra_t_log, NULL);

    ra_t_runner a, b;
    ra_t_start(&a, file, "ra_one", on_alert, NULL);
    ra_t_start(&b, file, "ra_two", on_alert, NULL);
    PGconn *l = PQconnectdb(ra_t_dsn);
    PGT_CHECK(PQstatus(l) == CONNECTION_OK);
    PQclear(PGT_EXEC(l, "LISTEN ra_alert_ch"));
    /* the table of the rule's --table exists once the setup ran */
    ra_t_wait_int(c, "SELECT count(*) FROM pgpipe.run_instances WHERE pipeline = 'ra_alerts' "
                     "AND stopped_at IS NULL", 2);

    /* 3 new dead letters: more than the threshold of 2 */
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.dead_letters (stage, error_message) "
                        "SELECT 'load', 'ra bad ' || g FROM generate_series(1, 3) g"));
    PGT_EQ_INT(ra_t_wait_int(c, "SELECT count(*) FROM pgpipe.run_alerts WHERE rule = "
                                "'dlq-growth'", 1), 1);
    PGT_EQ_INT(ra_t_wait_file(out, "\"rule\":\"dlq-growth\"", 1), 1);
    /* a backlog alert next: the turn that delivers it evaluated dlq-growth
    ** again on that instance, so a second delivery would have happened */
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload, "
                        "received_at) VALUES ('ra', 'ra_t_old', '{}', now() - interval '2 hours'),"
                        " ('ra', 'ra_t_new', '{}', now() - interval '3 hours')"));
    PGT_EQ_INT(ra_t_wait_int(c, "SELECT count(*) FROM pgpipe.run_alerts WHERE rule = "
                                "'backlog-age'", 1), 1);
    PGT_EQ_INT(ra_t_wait_file(all, "\"rule\":\"backlog-age\"", 1), 1);
    ra_t_sleep_us(2500 * 1000); /* one more turn of each instance */
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.run_alerts WHERE rule = 'dlq-growth'"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.run_alerts WHERE rule = 'backlog-age'"
                             " AND subject = 'ra_t_old'"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM public.ra_alert_rows WHERE rule = "
                             "'dlq-growth' AND subject = 'dead_letters' AND pipeline = "
                             "'ra_alerts' AND (detail->>'new_dead_letters')::int = 3 AND "
                             "fired_at IS NOT NULL"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM public.ra_alert_rows"), 1); /* backlog-age has no --table */
    PGT_EQ_INT(ra_t_count_in_file(out, "\"rule\":\"dlq-growth\""), 1);
    PGT_EQ_INT(ra_t_count_in_file(out, "\"rule\":\"backlog-age\""), 0);
    PGT_EQ_INT(ra_t_count_in_file(all, "\"rule\":\"dlq-growth\""), 1);
    PGT_EQ_INT(ra_t_count_in_file(all, "\"rule\":\"backlog-age\""), 1);
    PGT_EQ_INT(ra_t_count_in_file(all, "\"subject\":\"ra_t_old\""), 1);
    int dlq = 0;
    PGT_EQ_INT(ra_t_notifies(l, "ra_alert_ch", &dlq), 1);
    PGT_EQ_INT(dlq, 1);
    pthread_mutex_lock(&ra_t_log_mu);
    PGT_EQ_INT(ra_t_log_dlq, 1);
    PGT_EQ_INT(ra_t_log_backlog, 1);
    pthread_mutex_unlock(&ra_t_log_mu);

    /* the condition clears, then holds again: delivered again, once */
    PQclear(PGT_EXEC(c, "UPDATE pgpipe.dead_letters SET status = 'discarded'"));
    PGT_EQ_INT(ra_t_wait_int(c, "SELECT count(*) FROM pgpipe.run_alert_state WHERE rule = "
                                "'dlq-growth' AND NOT firing AND cleared_at IS NOT NULL", 1), 1);
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.dead_letters (stage, error_message) "
                        "SELECT 'load', 'ra bad again ' || g FROM generate_series(1, 3) g"));
    PGT_EQ_INT(ra_t_wait_int(c, "SELECT count(*) FROM pgpipe.run_alerts WHERE rule = "
                                "'dlq-growth'", 2), 2);
    PGT_EQ_INT(ra_t_wait_file(out, "\"rule\":\"dlq-growth\"", 2), 2);
    PGT_EQ_INT(ra_t_wait_file(all, "\"rule\":\"dlq-growth\"", 2), 2);
    ra_t_sleep_us(2500 * 1000);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.run_alerts WHERE rule = 'dlq-growth'"), 2);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM public.ra_alert_rows"), 2);
    PGT_EQ_INT(ra_t_count_in_file(out, "\"rule\":\"dlq-growth\""), 2);
    dlq = 0;
    PGT_EQ_INT(ra_t_notifies(l, "ra_alert_ch", &dlq), 1);
    PGT_EQ_INT(dlq, 1);

    /* raised by another component (as run_sched does): once per subject */
    run_alert_raise(a.r, "schedule-missed", "ra_nightly", "schedule ra_nightly missed a slot",
                    "{\"slot\":\"2026-01-01T00:00:00Z\"}");
    run_alert_raise(b.r, "schedule-missed", "ra_nightly", "schedule ra_nightly missed a slot",
                    NULL);
    PGT_EQ_INT(ra_t_wait_file(all, "\"rule\":\"schedule-missed\"", 1), 1);
    ra_t_sleep_us(500 * 1000);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.run_alerts WHERE rule = "
                             "'schedule-missed' AND subject = 'ra_nightly'"), 1);
    PGT_EQ_INT(ra_t_count_in_file(all, "\"rule\":\"schedule-missed\""), 1);

    ra_t_stop(&a);
    ra_t_stop(&b);
    pgpipe_config_log(NULL, NULL);
    PQfinish(l);
    pgt_db_close(c);
}

static volatile int ra_t_killed;
static void ra_t_log_killed(void *ud, int level, const char *component, const char *message,
                            const pgpipe_log_field *f, int nf)
{
    (void)ud, (void)level, (void)component, (void)f, (void)nf;
    if (strstr(message, "alert command killed"))
        ra_t_killed = 1;
}

PGT_TEST(run_alert, command_killed_after_bound)
{
    /* a command that never ends nor reads does not hold the alerts for
    ** more than the 10 s bound, and is reaped */
    PGconn *c = ra_t_db("pgpipe_t_run_alert_cmd");
    char dir[512], file[600], text[1024];
    snprintf(dir, sizeof dir, "%s/ra_t_cmd_%d", pgt_tmpdir(), (int)getpid());
    mkdir(dir, 0700);
    snprintf(file, sizeof file, "%s/cmd.pgpipe", dir);
    snprintf(text, sizeof text, ".pipeline ra_cmd\n.alert dlq-growth --threshold 1 --command "
                                "'sleep 60'\n");
    ra_t_write(file, text);
    ra_t_runner a;
    ra_t_start(&a, file, "ra_cmd_one", NULL, NULL);
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.dead_letters (stage, error_message) VALUES "
                        "('load', 'x'), ('load', 'y')"));
    PGT_EQ_INT(ra_t_wait_int(c, "SELECT count(*) FROM pgpipe.run_alerts", 1), 1);
    pgpipe_config_log(ra_t_log_killed, NULL);
    for (int i = 0; i < 300 && !ra_t_killed; i++)
        ra_t_sleep_us(100 * 1000);
    PGT_EQ_INT(ra_t_killed, 1);
    ra_t_stop(&a); /* joins the alert thread */
    pgpipe_config_log(NULL, NULL);
    pgt_db_close(c);
}

/* ---- the status page -------------------------------------------------------- */

typedef struct ra_t_page_out {
    int status;
    const char *headers;
    pp_buf body;
} ra_t_page_out;

/* One request to the page hook, as the HTTP loop makes it. */
static void ra_t_ask_page(pgpipe_runner *r, const char *method, const char *path,
                          const char *query, const char *auth, ra_t_page_out *o)
{
    memset(o, 0, sizeof *o);
    pgpipe_http_page_request rq;
    memset(&rq, 0, sizeof rq);
    rq.method = method;
    rq.path = path;
    rq.query = query ? query : "";
    rq.authorization = auth;
    rq.body = "";
    pgpipe_http_page_reply out;
    memset(&out, 0, sizeof out);
    out.priv = &o->body;
    run_status_page(r, &rq, &out);
    o->status = out.status;
    o->headers = out.headers;
    pp_buf_putc(&o->body, 0);
}

/* The text of the element with attributes attrs (a data-metric="..." ...
** prefix), up to '<'. */
static const char *ra_t_metric(const char *html, const char *attrs)
{
    static char v[128];
    const char *p = strstr(html, attrs);
    if (!p)
        return "(missing)";
    p = strchr(p, '>');
    if (!p)
        return "(missing)";
    size_t n = strcspn(p + 1, "<");
    if (n >= sizeof v)
        n = sizeof v - 1;
    memcpy(v, p + 1, n);
    v[n] = 0;
    return v;
}

PGT_TEST(run_alert, status_page_numbers_and_actions)
{
    PGconn *c = ra_t_db("pgpipe_t_run_status");
    pgt_db_install(c);
    char dir[512], file[600];
    snprintf(dir, sizeof dir, "%s/ra_t_st_%d", pgt_tmpdir(), (int)getpid());
    mkdir(dir, 0700);
    snprintf(file, sizeof file, "%s/status.pgpipe", dir);
    ra_t_write(file, ".pipeline ra_status\n"
                     ".schedule ra_hourly --cron '0 * * * *'\n  SELECT 1;\n.end\n");
    /* 3 pending of one type, 1 of another, 5 processed a minute ago, 3
    ** dead letters under two errors */
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload, "
                        "received_at) SELECT 'ra', 'ra<user>', '{}', now() - interval '2 minutes' "
                        "FROM generate_series(1, 3)"));
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload) VALUES "
                        "('ra', 'ra_order', '{}')"));
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload, "
                        "received_at, processed, processed_at) SELECT 'ra', 'ra_done', '{}', "
                        "now() - interval '3 minutes', true, now() - interval '90 seconds' "
                        "FROM generate_series(1, 5)"));
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.dead_letters (stage, error_message, raw_text, "
                        "source_name, event_type) SELECT 'load', e, '{\"n\":1}', 'ra', "
                        "'ra_replayed' FROM unnest(ARRAY['ra boom', 'ra boom', 'ra \"bang\"']) e"));
    ra_t_runner a;
    ra_t_start(&a, file, "ra_st_one", NULL, "ra-secret-token");

    ra_t_page_out o;
    for (int i = 0; i < 200; i++) {
        ra_t_ask_page(a.r, "GET", "/", NULL, NULL, &o);
        if (o.status == 200 && strstr(o.body.data, "data-metric=\"instances-alive\">1<"))
            break;
        pp_buf_free(&o.body);
        ra_t_sleep_us(100 * 1000);
    }
    PGT_EQ_INT(o.status, 200);
    const char *h = o.body.data;
    PGT_CONTAINS(h, "<!DOCTYPE html>");
    PGT_CONTAINS(h, "<svg");
    /* the numbers, each against the database */
    char want[64];
    snprintf(want, sizeof want, "%lld", pgt_db_int(c, "SELECT count(*) FROM staging.raw_events "
                                                      "WHERE NOT processed AND event_type = 'ra<user>'"));
    PGT_EQ_STR(want, "3");
    PGT_EQ_STR(ra_t_metric(h, "data-metric=\"backlog\" data-table=\"staging.raw_events\" "
                              "data-event-type=\"ra&lt;user&gt;\""), want);
    PGT_EQ_STR(ra_t_metric(h, "data-metric=\"backlog\" data-table=\"staging.raw_events\" "
                              "data-event-type=\"ra_order\""), "1");
    long long age = atoll(ra_t_metric(h, "data-metric=\"oldest-pending-s\" data-table=\"staging"
                                         ".raw_events\" data-event-type=\"ra&lt;user&gt;\""));
    PGT_CHECK_MSG(age >= 120 && age < 600, "oldest pending age %lld", age);
    PGT_EQ_STR(ra_t_metric(h, "data-metric=\"backlog-total\""), "4");
    PGT_EQ_STR(ra_t_metric(h, "data-metric=\"processed-last-hour\""), "5");
    PGT_CONTAINS(h, "data-minutes-ago=\"1\" data-count=\"5\"");
    snprintf(want, sizeof want, "%lld", pgt_db_int(c, "SELECT count(*) FROM pgpipe.dead_letters "
                                                      "WHERE status = 'dead'"));
    PGT_EQ_STR(ra_t_metric(h, "data-metric=\"dlq-total\""), want);
    PGT_EQ_STR(ra_t_metric(h, "data-metric=\"dlq-count\" data-error=\"ra boom\""), "2");
    PGT_EQ_STR(ra_t_metric(h, "data-metric=\"dlq-count\" data-error=\"ra &quot;bang&quot;\""), "1");
    PGT_EQ_STR(ra_t_metric(h, "data-metric=\"instances-alive\""), "1");
    PGT_CONTAINS(h, "data-metric=\"heartbeat-age-s\" data-instance=\"ra_st_one\"");
    PGT_CONTAINS(h, "id=\"schedules\"");
    PGT_EQ_STR(ra_t_metric(h, "data-metric=\"alerts-firing\""), "0");
    pp_buf_free(&o.body);

    /* HEAD too; other paths are not the page's */
    ra_t_ask_page(a.r, "HEAD", "/", NULL, NULL, &o);
    PGT_EQ_INT(o.status, 200);
    pp_buf_free(&o.body);
    ra_t_ask_page(a.r, "GET", "/nope", NULL, NULL, &o);
    PGT_EQ_INT(o.status, 0);
    pp_buf_free(&o.body);

    /* the metrics lines */
    pp_buf mb = { 0 };
    pgpipe_http_page_reply mo;
    memset(&mo, 0, sizeof mo);
    mo.priv = &mb;
    run_status_metrics(a.r, &mo);
    pp_buf_putc(&mb, 0);
    PGT_CONTAINS(mb.data, "pgpipe_run_backlog{pipeline=\"ra_status\",table=\"staging.raw_events\","
                          "event_type=\"ra<user>\"} 3\n");
    PGT_CONTAINS(mb.data, "pgpipe_run_dead_letters{pipeline=\"ra_status\"} 3\n");
    PGT_CONTAINS(mb.data, "pgpipe_run_instances_alive{pipeline=\"ra_status\"} 1\n");
    PGT_CONTAINS(mb.data, "# TYPE pgpipe_run_backlog_oldest_seconds gauge\n");
    pp_buf_free(&mb);

    /* actions: the token decides */
    ra_t_ask_page(a.r, "POST", "/actions/replay-dlq", NULL, NULL, &o);
    PGT_EQ_INT(o.status, 401);
    PGT_CHECK(o.headers && strstr(o.headers, "WWW-Authenticate: Bearer"));
    pp_buf_free(&o.body);
    ra_t_ask_page(a.r, "POST", "/actions/replay-dlq", NULL, "Bearer ra-wrong", &o);
    PGT_EQ_INT(o.status, 403);
    pp_buf_free(&o.body);
    ra_t_ask_page(a.r, "POST", "/actions/replay-dlq", NULL, "Bearer ra-secret-tokenX", &o);
    PGT_EQ_INT(o.status, 403);
    pp_buf_free(&o.body);
    ra_t_ask_page(a.r, "GET", "/actions/replay-dlq", NULL, "Bearer ra-secret-token", &o);
    PGT_EQ_INT(o.status, 405);
    pp_buf_free(&o.body);
    ra_t_ask_page(a.r, "POST", "/actions/fire", "schedule=nope", "Bearer ra-secret-token", &o);
    PGT_EQ_INT(o.status, 400);
    pp_buf_free(&o.body);
    ra_t_ask_page(a.r, "POST", "/actions/replay-dlq", NULL, "Bearer ra-secret-token", &o);
    PGT_EQ_INT(o.status, 202);
    pp_buf_free(&o.body);
    ra_t_ask_page(a.r, "POST", "/actions/fire", "x=1&schedule=ra%5fhourly", "bearer ra-secret-token",
                  &o);
    PGT_EQ_INT(o.status, 202);
    PGT_CONTAINS(o.body.data, "\"schedule\":\"ra_hourly\"");
    pp_buf_free(&o.body);
    PGT_EQ_INT(ra_t_wait_int(c, "SELECT count(*) FROM pgpipe.run_actions WHERE pipeline = "
                                "'ra_status' AND instance = 'ra_st_one' AND ((action = "
                                "'replay-dlq' AND target IS NULL AND taken_by = 'ra_st_one' "
                                "AND taken_at IS NOT NULL) OR (action = 'fire' AND target = "
                                "'ra_hourly' AND taken_at IS NULL))", 2), 2);
    /* the replay ran: the dead letters are back as pending events */
    PGT_EQ_INT(ra_t_wait_int(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE status = "
                                "'replayed'", 3), 3);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events WHERE event_type = "
                             "'ra_replayed' AND NOT processed"), 3);
    /* without a token the actions do not exist */
    char *tok = a.r->http_token;
    a.r->http_token = NULL;
    ra_t_ask_page(a.r, "POST", "/actions/replay-dlq", NULL, "Bearer ra-secret-token", &o);
    PGT_EQ_INT(o.status, 0);
    pp_buf_free(&o.body);
    a.r->http_token = tok;

    ra_t_stop(&a);
    pgt_db_close(c);
}
