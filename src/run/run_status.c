/*
** The status page and the runner's /metrics lines. A thread rebuilds both
** every few seconds on its own connection (statement_timeout 5 s) and keeps
** them as a snapshot under its mutex: the HTTP loop copies the snapshot and
** never waits for the database.
**
** The page is one HTML document, no script, no external asset (inline CSS
** and SVG; a meta refresh reloads it): backlog per event type with the age
** of the oldest pending event, processed events per minute over the last
** hour, dead letters by error, recent runs (failures first), the next firing
** of each schedule, the instances and the alerts firing. Every number sits
** in an element with a data-metric attribute (and data-event-type,
** data-schedule, data-instance, data-error as fits) so a browser test reads
** them without parsing the text.
**
** Actions: with the runner's bearer token, POST /actions/fire?schedule=NAME
** and POST /actions/replay-dlq are recorded in pgpipe.run_actions (202). A
** replay is done by this thread at once (pgpipe_dlq_replay of every dead
** letter into staging.raw_events; the row is recorded as taken); a firing
** waits there, untaken, for the schedules to act on it. Without a configured token they do not exist (404);
** no or a malformed Authorization is 401, a wrong token 403.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN
#include <time.h>

#define RUN_STATUS_EVERY_MS 3000
#define RUN_STATUS_CHART_MS 30000
#define RUN_STATUS_ACTIONS  32
#define RUN_STATUS_TABLES   8

typedef struct run_status_action {
    char action[16];
    char target[160];
} run_status_action;

struct run_status {
    pthread_t th;
    int started;
    pthread_mutex_t mu;           /* guards what follows */
    pthread_cond_t cv;
    int stop;
    int ready;                    /* a snapshot was built */
    pp_buf page, metrics;         /* the snapshot */
    run_status_action act[RUN_STATUS_ACTIONS];
    int nact;
    /* the thread's own */
    long long chart[60];          /* processed per minute, [0] = 59 minutes ago */
    int chart_ok;
    int64_t next_chart;
};

/* ---- escaping ------------------------------------------------------------ */

static void st_html(pp_buf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&': pp_buf_appendf(b, "&amp;"); break;
        case '<': pp_buf_appendf(b, "&lt;"); break;
        case '>': pp_buf_appendf(b, "&gt;"); break;
        case '"': pp_buf_appendf(b, "&quot;"); break;
        case '\'': pp_buf_appendf(b, "&#39;"); break;
        default: pp_buf_putc(b, *s);
        }
    }
}

/* A Prometheus label value: backslash, double quote and newline escaped. */
static void st_label(pp_buf *b, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            pp_buf_putc(b, '\\'), pp_buf_putc(b, *s);
        else if (*s == '\n')
            pp_buf_appendf(b, "\\n");
        else
            pp_buf_putc(b, *s);
    }
}

static const char *st_val(PGresult *res, int row, int col)
{
    return PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col);
}

static void st_error(pp_buf *h, const char *what, const pgpipe_error *e)
{
    pp_buf_appendf(h, "<p class=\"err\">%s unavailable: ", what);
    st_html(h, e->message);
    pp_buf_appendf(h, "</p>\n");
}

/* ---- the snapshot -------------------------------------------------------- */

typedef struct st_ctx {
    pgpipe_runner *r;
    PGconn *c;
    char *pipeline;
    char *tables[RUN_STATUS_TABLES];
    int ntables;
    pp_buf *h, *m;                /* the page, the metrics */
} st_ctx;

static void st_backlog(st_ctx *x)
{
    pp_buf *h = x->h, *m = x->m;
    pp_buf_appendf(h, "<section id=\"backlog\"><h2>Backlog</h2>\n<table><tr><th>table</th>"
                      "<th>event type</th><th>pending</th><th>oldest pending (s)</th></tr>\n");
    pp_buf_appendf(m, "# HELP pgpipe_run_backlog Unprocessed events, by table and event type "
                      "(counted up to 1000000 per table).\n# TYPE pgpipe_run_backlog gauge\n");
    pp_buf mo = { 0 };
    pp_buf_appendf(&mo, "# HELP pgpipe_run_backlog_oldest_seconds Age of the oldest unprocessed "
                        "event, by table and event type.\n"
                        "# TYPE pgpipe_run_backlog_oldest_seconds gauge\n");
    long long total = 0;
    for (int t = 0; t < x->ntables; t++) {
        pp_buf sql = { 0 };
        /* bounded: at most a million of the oldest pending rows, read in
        ** the order of the partial index on unprocessed rows */
        pp_buf_appendf(&sql, "SELECT event_type, count(*), floor(extract(epoch FROM now() - "
                             "min(received_at)))::bigint FROM (SELECT event_type, received_at "
                             "FROM %s WHERE NOT processed ORDER BY received_at LIMIT 1000000) s "
                             "GROUP BY 1 ORDER BY 1 LIMIT 200", x->tables[t]);
        PGresult *res = NULL;
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        if (!sql.data || pp_exec(x->c, sql.data, 0, NULL, &res, &e, "backlog")) {
            pp_buf_free(&sql);
            pp_buf_appendf(h, "<tr><td colspan=\"4\" class=\"err\">");
            st_html(h, x->tables[t]);
            pp_buf_appendf(h, ": ");
            st_html(h, e.message);
            pp_buf_appendf(h, "</td></tr>\n");
            continue;
        }
        pp_buf_free(&sql);
        for (int i = 0; i < PQntuples(res); i++) {
            const char *et = st_val(res, i, 0), *n = st_val(res, i, 1), *age = st_val(res, i, 2);
            total += atoll(n);
            pp_buf_appendf(h, "<tr><td>");
            st_html(h, x->tables[t]);
            pp_buf_appendf(h, "</td><td>");
            st_html(h, et);
            pp_buf_appendf(h, "</td><td class=\"n\" data-metric=\"backlog\" data-table=\"");
            st_html(h, x->tables[t]);
            pp_buf_appendf(h, "\" data-event-type=\"");
            st_html(h, et);
            pp_buf_appendf(h, "\">%s</td><td class=\"n\" data-metric=\"oldest-pending-s\" "
                              "data-table=\"", n);
            st_html(h, x->tables[t]);
            pp_buf_appendf(h, "\" data-event-type=\"");
            st_html(h, et);
            pp_buf_appendf(h, "\">%s</td></tr>\n", age);
            pp_buf_appendf(m, "pgpipe_run_backlog{pipeline=\"");
            st_label(m, x->pipeline);
            pp_buf_appendf(m, "\",table=\"");
            st_label(m, x->tables[t]);
            pp_buf_appendf(m, "\",event_type=\"");
            st_label(m, et);
            pp_buf_appendf(m, "\"} %s\n", n);
            pp_buf_appendf(&mo, "pgpipe_run_backlog_oldest_seconds{pipeline=\"");
            st_label(&mo, x->pipeline);
            pp_buf_appendf(&mo, "\",table=\"");
            st_label(&mo, x->tables[t]);
            pp_buf_appendf(&mo, "\",event_type=\"");
            st_label(&mo, et);
            pp_buf_appendf(&mo, "\"} %s\n", age);
        }
        PQclear(res);
    }
    pp_buf_appendf(h, "</table>\n<p>pending in all: <span class=\"n\" data-metric=\"backlog-total\">"
                      "%lld</span></p></section>\n", total);
    if (mo.data)
        pp_buf_append(m, mo.data, mo.len);
    pp_buf_free(&mo);
}

/* Processed events per minute over the last hour, as bars. Rows received
** more than 6 hours ago are not counted: that bounds the scan to the recent
** partitions (processed_at has no index). */
static void st_chart_query(st_ctx *x, run_status *s)
{
    long long v[60];
    memset(v, 0, sizeof v);
    int ok = 0;
    for (int t = 0; t < x->ntables; t++) {
        pp_buf sql = { 0 };
        pp_buf_appendf(&sql, "SELECT floor(extract(epoch FROM now() - processed_at) / 60)::int, "
                             "count(*) FROM %s WHERE processed AND processed_at > now() - "
                             "interval '1 hour' AND received_at > now() - interval '6 hours' "
                             "GROUP BY 1", x->tables[t]);
        PGresult *res = NULL;
        if (sql.data && pp_exec(x->c, sql.data, 0, NULL, &res, NULL, NULL) == PGPIPE_OK) {
            ok = 1;
            for (int i = 0; i < PQntuples(res); i++) {
                int ago = atoi(st_val(res, i, 0));
                if (ago >= 0 && ago < 60)
                    v[59 - ago] += atoll(st_val(res, i, 1));
            }
            PQclear(res);
        }
        pp_buf_free(&sql);
    }
    memcpy(s->chart, v, sizeof v);
    s->chart_ok = ok;
}

static void st_chart(st_ctx *x, run_status *s)
{
    pp_buf *h = x->h, *m = x->m;
    long long max = 1, sum = 0;
    for (int i = 0; i < 60; i++) {
        if (s->chart[i] > max)
            max = s->chart[i];
        sum += s->chart[i];
    }
    pp_buf_appendf(h, "<section id=\"throughput\"><h2>Processed per minute, last hour</h2>\n");
    if (!s->chart_ok)
        pp_buf_appendf(h, "<p class=\"err\">throughput unavailable</p>\n");
    pp_buf_appendf(h, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"600\" height=\"130\" "
                      "viewBox=\"0 0 600 130\" role=\"img\" aria-label=\"processed events per "
                      "minute\"><line x1=\"0\" y1=\"120\" x2=\"600\" y2=\"120\" stroke=\"#999\"/>\n");
    for (int i = 0; i < 60; i++) {
        int bh = (int)(s->chart[i] * 110 / max);
        pp_buf_appendf(h, "<rect x=\"%d\" y=\"%d\" width=\"8\" height=\"%d\" fill=\"#4a7\" "
                          "data-minutes-ago=\"%d\" data-count=\"%lld\"><title>%d min ago: %lld"
                          "</title></rect>\n", i * 10 + 1, 120 - bh, bh, 59 - i, s->chart[i],
                       59 - i, s->chart[i]);
    }
    pp_buf_appendf(h, "<text x=\"2\" y=\"10\" font-size=\"10\">max %lld/min</text></svg>\n"
                      "<p>processed in the last hour: <span class=\"n\" data-metric=\"processed-"
                      "last-hour\">%lld</span></p></section>\n", max, sum);
    pp_buf_appendf(m, "# HELP pgpipe_run_processed_last_hour Events processed in the last hour "
                      "(received within 6 hours).\n# TYPE pgpipe_run_processed_last_hour gauge\n"
                      "pgpipe_run_processed_last_hour{pipeline=\"");
    st_label(m, x->pipeline);
    pp_buf_appendf(m, "\"} %lld\n", sum);
}

static void st_dlq(st_ctx *x)
{
    pp_buf *h = x->h, *m = x->m;
    pp_buf_appendf(h, "<section id=\"dlq\"><h2>Dead letters</h2>\n");
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pp_exec(x->c, "SELECT left(error_message, 200), count(*) FROM pgpipe.dead_letters "
                      "WHERE status = 'dead' GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20",
                0, NULL, &res, &e, "dead letters")) {
        st_error(h, "dead letters", &e);
        pp_buf_appendf(h, "</section>\n");
        return;
    }
    PGresult *tot = NULL;
    long long total = 0;
    if (pp_exec(x->c, "SELECT count(*) FROM pgpipe.dead_letters WHERE status = 'dead'", 0, NULL,
                &tot, NULL, NULL) == PGPIPE_OK) {
        total = atoll(st_val(tot, 0, 0));
        PQclear(tot);
    }
    pp_buf_appendf(h, "<p>dead: <span class=\"n\" data-metric=\"dlq-total\">%lld</span></p>\n"
                      "<table><tr><th>error</th><th>count</th></tr>\n", total);
    for (int i = 0; i < PQntuples(res); i++) {
        pp_buf_appendf(h, "<tr><td>");
        st_html(h, st_val(res, i, 0));
        pp_buf_appendf(h, "</td><td class=\"n\" data-metric=\"dlq-count\" data-error=\"");
        st_html(h, st_val(res, i, 0));
        pp_buf_appendf(h, "\">%s</td></tr>\n", st_val(res, i, 1));
    }
    pp_buf_appendf(h, "</table></section>\n");
    PQclear(res);
    pp_buf_appendf(m, "# HELP pgpipe_run_dead_letters Dead letters (status dead).\n"
                      "# TYPE pgpipe_run_dead_letters gauge\npgpipe_run_dead_letters{pipeline=\"");
    st_label(m, x->pipeline);
    pp_buf_appendf(m, "\"} %lld\n", total);
}

static void st_runs(st_ctx *x)
{
    pp_buf *h = x->h;
    pp_buf_appendf(h, "<section id=\"runs\"><h2>Recent runs</h2>\n");
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pp_exec(x->c, "SELECT to_regclass('pgpipe.run_history') IS NOT NULL", 0, NULL, &res, &e,
                "run history") == PGPIPE_OK &&
        PQgetvalue(res, 0, 0)[0] != 't') {
        PQclear(res);
        pp_buf_appendf(h, "<p>no run history yet</p></section>\n");
        return;
    }
    if (res)
        PQclear(res);
    res = NULL;
    const char *p[1] = { x->pipeline };
    /* the last 50 runs, failures first */
    if (pp_exec(x->c,
                "SELECT kind::text, name::text, status::text, started_at::text, "
                "finished_at::text, attempts::text, rows::text, left(error::text, 300), "
                "instance::text FROM (SELECT * FROM pgpipe.run_history WHERE pipeline = $1 "
                "ORDER BY started_at DESC NULLS LAST LIMIT 50) h ORDER BY (status::text IN "
                "('failed', 'timeout', 'lost', 'missed')) DESC, started_at DESC NULLS LAST",
                1, p, &res, &e, "run history")) {
        st_error(h, "run history", &e);
        pp_buf_appendf(h, "</section>\n");
        return;
    }
    pp_buf_appendf(h, "<table><tr><th>kind</th><th>name</th><th>status</th><th>started</th>"
                      "<th>finished</th><th>attempts</th><th>rows</th><th>error</th>"
                      "<th>instance</th></tr>\n");
    int failed = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *st = st_val(res, i, 2);
        int bad = !strcmp(st, "failed") || !strcmp(st, "timeout") || !strcmp(st, "lost") ||
                  !strcmp(st, "missed");
        failed += bad;
        pp_buf_appendf(h, "<tr class=\"%s\" data-run-status=\"", bad ? "bad" : "ok");
        st_html(h, st);
        pp_buf_appendf(h, "\" data-name=\"");
        st_html(h, st_val(res, i, 1));
        pp_buf_appendf(h, "\">");
        for (int col = 0; col < 9; col++) {
            pp_buf_appendf(h, "<td>");
            st_html(h, st_val(res, i, col));
            pp_buf_appendf(h, "</td>");
        }
        pp_buf_appendf(h, "</tr>\n");
    }
    pp_buf_appendf(h, "</table><p>failed among these: <span class=\"n\" data-metric=\"runs-"
                      "failed\">%d</span></p></section>\n", failed);
    PQclear(res);
}

static void st_schedules(st_ctx *x)
{
    pp_buf *h = x->h, *m = x->m;
    pp_buf js = { 0 };
    run_sched_next_json(x->r, &js);
    pp_buf_appendf(h, "<section id=\"schedules\"><h2>Schedules</h2>\n");
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    const char *p[1] = { js.data ? js.data : "[]" };
    int rc = pp_exec(x->c,
                     "SELECT e->>'schedule', e->>'next', coalesce((e->>'running')::boolean, "
                     "false)::int, floor(extract(epoch FROM (e->>'next')::timestamptz))::bigint "
                     "FROM jsonb_array_elements($1::jsonb) e",
                     1, p, &res, &e, "schedules");
    pp_buf_free(&js);
    if (rc) {
        st_error(h, "schedules", &e);
        pp_buf_appendf(h, "</section>\n");
        return;
    }
    pp_buf_appendf(h, "<table><tr><th>schedule</th><th>next firing</th><th>running</th></tr>\n");
    pp_buf_appendf(m, "# HELP pgpipe_run_schedule_next_timestamp_seconds The next firing of "
                      "each schedule (Unix time).\n"
                      "# TYPE pgpipe_run_schedule_next_timestamp_seconds gauge\n");
    pp_buf mr = { 0 };
    pp_buf_appendf(&mr, "# HELP pgpipe_run_schedule_running 1 while a firing of the schedule "
                        "runs.\n# TYPE pgpipe_run_schedule_running gauge\n");
    for (int i = 0; i < PQntuples(res); i++) {
        const char *name = st_val(res, i, 0);
        pp_buf_appendf(h, "<tr><td>");
        st_html(h, name);
        pp_buf_appendf(h, "</td><td data-metric=\"schedule-next\" data-schedule=\"");
        st_html(h, name);
        pp_buf_appendf(h, "\">");
        st_html(h, st_val(res, i, 1));
        pp_buf_appendf(h, "</td><td data-metric=\"schedule-running\" data-schedule=\"");
        st_html(h, name);
        pp_buf_appendf(h, "\">%s</td></tr>\n", st_val(res, i, 2));
        if (!PQgetisnull(res, i, 3)) {
            pp_buf_appendf(m, "pgpipe_run_schedule_next_timestamp_seconds{pipeline=\"");
            st_label(m, x->pipeline);
            pp_buf_appendf(m, "\",schedule=\"");
            st_label(m, name);
            pp_buf_appendf(m, "\"} %s\n", st_val(res, i, 3));
        }
        pp_buf_appendf(&mr, "pgpipe_run_schedule_running{pipeline=\"");
        st_label(&mr, x->pipeline);
        pp_buf_appendf(&mr, "\",schedule=\"");
        st_label(&mr, name);
        pp_buf_appendf(&mr, "\"} %s\n", st_val(res, i, 2));
    }
    pp_buf_appendf(h, "</table></section>\n");
    if (mr.data)
        pp_buf_append(m, mr.data, mr.len);
    pp_buf_free(&mr);
    PQclear(res);
}

static void st_instances(st_ctx *x)
{
    pp_buf *h = x->h, *m = x->m;
    pp_buf_appendf(h, "<section id=\"instances\"><h2>Instances</h2>\n");
    char tmo[24];
    snprintf(tmo, sizeof tmo, "%d", x->r->opt.instance_timeout_ms);
    const char *p[2] = { x->pipeline, tmo };
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pp_exec(x->c,
                "SELECT instance, host, pid::text, floor(extract(epoch FROM now() - "
                "heartbeat_at))::bigint, (stopped_at IS NULL AND heartbeat_at > now() - "
                "$2::int * interval '1 millisecond')::int, started_at::text "
                "FROM pgpipe.run_instances WHERE pipeline = $1 ORDER BY 5 DESC, 1 LIMIT 100",
                2, p, &res, &e, "instances")) {
        st_error(h, "instances", &e);
        pp_buf_appendf(h, "</section>\n");
        return;
    }
    int alive = 0;
    pp_buf_appendf(h, "<table><tr><th>instance</th><th>host</th><th>pid</th><th>heartbeat age "
                      "(s)</th><th>alive</th><th>started</th></tr>\n");
    for (int i = 0; i < PQntuples(res); i++) {
        const char *in = st_val(res, i, 0);
        int ok = atoi(st_val(res, i, 4));
        alive += ok;
        pp_buf_appendf(h, "<tr class=\"%s\"><td>", ok ? "ok" : "bad");
        st_html(h, in);
        pp_buf_appendf(h, "</td><td>");
        st_html(h, st_val(res, i, 1));
        pp_buf_appendf(h, "</td><td>%s</td><td class=\"n\" data-metric=\"heartbeat-age-s\" "
                          "data-instance=\"", st_val(res, i, 2));
        st_html(h, in);
        pp_buf_appendf(h, "\">%s</td><td data-metric=\"instance-alive\" data-instance=\"",
                       st_val(res, i, 3));
        st_html(h, in);
        pp_buf_appendf(h, "\">%d</td><td>", ok);
        st_html(h, st_val(res, i, 5));
        pp_buf_appendf(h, "</td></tr>\n");
    }
    pp_buf_appendf(h, "</table><p>alive: <span class=\"n\" data-metric=\"instances-alive\">%d"
                      "</span></p></section>\n", alive);
    PQclear(res);
    pp_buf_appendf(m, "# HELP pgpipe_run_instances_alive Instances of the pipeline whose "
                      "heartbeat is recent.\n# TYPE pgpipe_run_instances_alive gauge\n"
                      "pgpipe_run_instances_alive{pipeline=\"");
    st_label(m, x->pipeline);
    pp_buf_appendf(m, "\"} %d\n", alive);
}

static void st_alerts(st_ctx *x)
{
    pp_buf *h = x->h, *m = x->m;
    pp_buf_appendf(h, "<section id=\"alerts\"><h2>Alerts firing</h2>\n");
    const char *p[1] = { x->pipeline };
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pp_exec(x->c, "SELECT rule, subject, coalesce(message, ''), fired_at::text FROM "
                      "pgpipe.run_alert_state WHERE pipeline = $1 AND firing ORDER BY fired_at "
                      "DESC LIMIT 50", 1, p, &res, &e, "alerts")) {
        st_error(h, "alerts", &e);
        pp_buf_appendf(h, "</section>\n");
        return;
    }
    pp_buf_appendf(h, "<table><tr><th>rule</th><th>subject</th><th>message</th><th>since</th>"
                      "</tr>\n");
    for (int i = 0; i < PQntuples(res); i++) {
        pp_buf_appendf(h, "<tr class=\"bad\" data-alert-rule=\"");
        st_html(h, st_val(res, i, 0));
        pp_buf_appendf(h, "\" data-alert-subject=\"");
        st_html(h, st_val(res, i, 1));
        pp_buf_appendf(h, "\">");
        for (int col = 0; col < 4; col++) {
            pp_buf_appendf(h, "<td>");
            st_html(h, st_val(res, i, col));
            pp_buf_appendf(h, "</td>");
        }
        pp_buf_appendf(h, "</tr>\n");
    }
    pp_buf_appendf(h, "</table><p>firing: <span class=\"n\" data-metric=\"alerts-firing\">%d"
                      "</span></p></section>\n", PQntuples(res));
    pp_buf_appendf(m, "# HELP pgpipe_run_alerts_firing Alert conditions holding now.\n"
                      "# TYPE pgpipe_run_alerts_firing gauge\npgpipe_run_alerts_firing{pipeline=\"");
    st_label(m, x->pipeline);
    pp_buf_appendf(m, "\"} %d\n", PQntuples(res));
    PQclear(res);
}

/* Copy what the page needs of r->def (a reload closes the old tree under
** r->mu). */
static int st_ctx_load(st_ctx *x, pgpipe_runner *r)
{
    memset(x, 0, sizeof *x);
    x->r = r;
    pp_mutex_lock(&r->mu);
    const pgpipe_pipe_def *d = r->def;
    x->pipeline = pp_strdup(d->name);
    const char *t0 = "staging.raw_events";
    for (int i = -1; i < d->nworkers && x->ntables < RUN_STATUS_TABLES; i++) {
        const char *t = i < 0 ? t0 : d->workers[i].table ? d->workers[i].table : t0;
        int seen = 0;
        for (int j = 0; j < x->ntables; j++)
            seen |= !strcmp(x->tables[j], t);
        if (!seen && (x->tables[x->ntables] = pp_strdup(t)))
            x->ntables++;
    }
    pp_mutex_unlock(&r->mu);
    return x->pipeline ? PGPIPE_OK : PGPIPE_NOMEM;
}

static void st_ctx_free(st_ctx *x)
{
    pp_free(x->pipeline);
    for (int i = 0; i < x->ntables; i++)
        pp_free(x->tables[i]);
}

static void st_build(pgpipe_runner *r, run_status *s, PGconn *c, pp_buf *h, pp_buf *m)
{
    st_ctx x;
    if (st_ctx_load(&x, r))
        return;
    x.c = c;
    x.h = h;
    x.m = m;
    time_t now = time(NULL);
    struct tm tmv;
    char at[40];
    gmtime_r(&now, &tmv);
    strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tmv);
    pp_buf_appendf(h, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                      "<meta http-equiv=\"refresh\" content=\"5\"><title>pgpipe: ");
    st_html(h, x.pipeline);
    pp_buf_appendf(h, "</title>\n<style>body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}"
                      "h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.4em}"
                      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
                      "text-align:left}td.n,.n{text-align:right;font-variant-numeric:tabular-nums}"
                      "tr.bad td{background:#fde8e8}.err{color:#b00}"
                      "section{margin-bottom:1em}</style></head>\n<body>\n<h1>pipeline "
                      "<span id=\"pipeline\">");
    st_html(h, x.pipeline);
    pp_buf_appendf(h, "</span></h1>\n<p>instance <span id=\"instance\">");
    st_html(h, r->instance);
    pp_buf_appendf(h, "</span>, built <span id=\"built-at\" data-epoch=\"%lld\">%s</span></p>\n",
                   (long long)now, at);
    st_backlog(&x);
    if (run_now_ms() >= s->next_chart) {
        st_chart_query(&x, s);
        s->next_chart = run_now_ms() + RUN_STATUS_CHART_MS;
    }
    st_chart(&x, s);
    st_dlq(&x);
    st_runs(&x);
    st_schedules(&x);
    st_instances(&x);
    st_alerts(&x);
    pp_buf_appendf(h, "</body></html>\n");
    st_ctx_free(&x);
}

/* Record the actions the page queued. */
static void st_actions(pgpipe_runner *r, run_status *s, PGconn *c)
{
    run_status_action a[RUN_STATUS_ACTIONS];
    pthread_mutex_lock(&s->mu);
    int n = s->nact;
    memcpy(a, s->act, sizeof a[0] * (size_t)n);
    s->nact = 0;
    pthread_mutex_unlock(&s->mu);
    char *pipeline = NULL;
    if (n) {
        pp_mutex_lock(&r->mu);
        pipeline = pp_strdup(r->def->name);
        pp_mutex_unlock(&r->mu);
    }
    for (int i = 0; i < n && pipeline; i++) {
        /* a replay is done here and now (any instance may replay the dead
        ** letters); a firing is left for the schedules to take */
        int replay = !strcmp(a[i].action, "replay-dlq");
        const char *p[5] = { pipeline, a[i].action, a[i].target[0] ? a[i].target : NULL,
                             r->instance, replay ? "t" : "f" };
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        if (pp_exec(c, "INSERT INTO pgpipe.run_actions (pipeline, action, target, instance, "
                       "taken_at, taken_by) VALUES ($1, $2, $3, $4, CASE WHEN $5::bool THEN "
                       "now() END, CASE WHEN $5::bool THEN $4 END)", 5, p, NULL, &e,
                    "recording an action")) {
            run_log(r, PGPIPE_LOG_WARN, "status page action not recorded", "action",
                    a[i].action, "target", a[i].target, "error", e.message, NULL);
            continue;
        }
        run_log(r, PGPIPE_LOG_INFO, "status page action requested", "action", a[i].action,
                "target", a[i].target, NULL);
        if (!replay)
            continue;
        long long ok = 0, refused = 0;
        pp_exec(c, "SET statement_timeout = '10min'", 0, NULL, NULL, NULL, NULL);
        int rc = pgpipe_dlq_replay(c, NULL, NULL, NULL, &ok, &refused, &e);
        pp_exec(c, "SET statement_timeout = '5s'", 0, NULL, NULL, NULL, NULL);
        char so[24], sr[24];
        snprintf(so, sizeof so, "%lld", ok);
        snprintf(sr, sizeof sr, "%lld", refused);
        run_log(r, rc ? PGPIPE_LOG_WARN : PGPIPE_LOG_INFO,
                rc ? "dead-letter replay failed" : "dead letters replayed", "replayed", so,
                "refused", sr, "error", rc ? e.message : "", NULL);
    }
    pp_free(pipeline);
}

static void *st_main(void *arg)
{
    pgpipe_runner *r = arg;
    run_status *s = r->status;
    pgpipe_conn *cc = NULL;
    int64_t next = 0;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        while (!s->stop && s->nact == 0 && run_now_ms() < next) {
            struct timespec ts = { (time_t)(next / 1000), (long)(next % 1000) * 1000000L };
            pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        }
        int stop = s->stop;
        pthread_mutex_unlock(&s->mu);
        if (stop)
            break;
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        if (!cc) {
            if (pgpipe_pool_acquire_ex(r->pool, &cc, 5000, &e) != PGPIPE_OK) {
                cc = NULL;
                next = run_now_ms() + RUN_STATUS_EVERY_MS;
                continue;
            }
            /* a page must not wait on a stuck query: reset before release */
            pp_exec(pgpipe_conn_pg(cc), "SET statement_timeout = '5s'", 0, NULL, NULL, NULL,
                    NULL);
        }
        PGconn *c = pgpipe_conn_pg(cc);
        st_actions(r, s, c);
        if (run_now_ms() >= next) {
            pp_buf h = { 0 }, m = { 0 };
            st_build(r, s, c, &h, &m);
            if (h.data && m.data) {
                pthread_mutex_lock(&s->mu);
                pp_buf_free(&s->page);
                pp_buf_free(&s->metrics);
                s->page = h;
                s->metrics = m;
                s->ready = 1;
                pthread_mutex_unlock(&s->mu);
            } else {
                pp_buf_free(&h);
                pp_buf_free(&m);
            }
            next = run_now_ms() + RUN_STATUS_EVERY_MS;
        }
        if (PQstatus(c) != CONNECTION_OK) {
            pgpipe_pool_discard(cc);
            cc = NULL;
        }
    }
    if (cc) {
        pp_exec(pgpipe_conn_pg(cc), "RESET statement_timeout", 0, NULL, NULL, NULL, NULL);
        pgpipe_pool_release(cc);
    }
    return NULL;
}

PGPIPE_PRIVATE int run_status_start(pgpipe_runner *r)
{
    if (!r->status) {
        run_status *s = pp_calloc(1, sizeof *s);
        if (!s)
            return pp_err_nomem(&r->h.err);
        pthread_mutex_init(&s->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_REALTIME);
        pthread_cond_init(&s->cv, &ca);
        pthread_condattr_destroy(&ca);
        r->status = s;
    }
    run_status *s = r->status;
    if (s->started)
        return PGPIPE_OK;
    s->stop = 0;
    if (pthread_create(&s->th, NULL, st_main, r))
        return pp_err(&r->h.err, PGPIPE_IO, "status page: cannot start the thread");
    s->started = 1;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void run_status_stop(pgpipe_runner *r)
{
    run_status *s = r->status;
    if (!s || !s->started)
        return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->th, NULL);
    s->started = 0;
}

PGPIPE_PRIVATE void run_status_free(pgpipe_runner *r)
{
    run_status *s = r->status;
    if (!s)
        return;
    run_status_stop(r);
    pp_buf_free(&s->page);
    pp_buf_free(&s->metrics);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pp_free(s);
    r->status = NULL;
}

#ifndef PGPIPE_OMIT_HTTP

/* The value of key in a query string, percent-decoded into out; 0 when
** missing or too long. */
static int st_query_get(const char *q, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > kl && !strncmp(q, key, kl) && q[kl] == '=') {
            size_t o = 0;
            for (size_t i = kl + 1; i < len; i++) {
                char ch = q[i];
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%') {
                    if (i + 2 >= len)
                        return 0;
                    char hx[3] = { q[i + 1], q[i + 2], 0 };
                    char *end;
                    long v = strtol(hx, &end, 16);
                    if (end != hx + 2 || v <= 0)
                        return 0;
                    ch = (char)v;
                    i += 2;
                }
                if (o + 1 >= cap)
                    return 0;
                out[o++] = ch;
            }
            out[o] = 0;
            return o > 0;
        }
        q = amp ? amp + 1 : NULL;
    }
    return 0;
}

static void st_reply(pgpipe_http_page_reply *out, int status, const char *json,
                     const char *headers)
{
    out->status = status;
    out->content_type = "application/json";
    out->headers = headers;
    pgpipe_http_page_write(out, json, strlen(json));
}

/* Constant time whatever the lengths: compare HMACs of both under one key. */
static int st_token_ok(const char *given, size_t n, const char *want)
{
    static const char key[] = "pgpipe status page token";
    unsigned char a[32], b[32];
    pp_hmac_sha256(key, sizeof key - 1, given, n, a);
    pp_hmac_sha256(key, sizeof key - 1, want, strlen(want), b);
    return pp_ct_equal(a, b, 32);
}

static void st_action(pgpipe_runner *r, const pgpipe_http_page_request *rq,
                      pgpipe_http_page_reply *out, const char *action)
{
    if (!r->http_token)
        return; /* no token configured: the page is read-only, these paths do not exist */
    if (strcmp(rq->method, "POST")) {
        st_reply(out, 405, "{\"error\":\"actions are POST requests\"}\n", "Allow: POST\r\n");
        return;
    }
    const char *au = rq->authorization;
    if (!au || strncasecmp(au, "Bearer ", 7) || !au[7]) {
        st_reply(out, 401, "{\"error\":\"a bearer token is required\"}\n",
                 "WWW-Authenticate: Bearer realm=\"pgpipe\"\r\n");
        return;
    }
    if (!st_token_ok(au + 7, strlen(au + 7), r->http_token)) {
        st_reply(out, 403, "{\"error\":\"wrong token\"}\n", NULL);
        return;
    }
    run_status_action a;
    memset(&a, 0, sizeof a);
    snprintf(a.action, sizeof a.action, "%s", action);
    if (!strcmp(action, "fire")) {
        if (!st_query_get(rq->query, "schedule", a.target, sizeof a.target)) {
            st_reply(out, 400, "{\"error\":\"name the schedule: ?schedule=NAME\"}\n", NULL);
            return;
        }
        int known = 0;
        pp_mutex_lock(&r->mu);
        for (int i = 0; i < r->def->nschedules; i++)
            known |= !strcmp(r->def->schedules[i].name, a.target);
        pp_mutex_unlock(&r->mu);
        if (!known) {
            st_reply(out, 400, "{\"error\":\"no such schedule\"}\n", NULL);
            return;
        }
    }
    run_status *s = r->status;
    int queued = 0;
    if (s) {
        pthread_mutex_lock(&s->mu);
        if (s->nact < RUN_STATUS_ACTIONS && s->started) {
            s->act[s->nact++] = a;
            queued = 1;
            pthread_cond_broadcast(&s->cv);
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (!queued) {
        st_reply(out, 503, "{\"error\":\"too many actions pending\"}\n", "Retry-After: 1\r\n");
        return;
    }
    pp_buf b = { 0 };
    pp_buf_appendf(&b, "{\"accepted\":true,\"action\":\"%s\"", action);
    if (a.target[0]) {
        pp_buf_appendf(&b, ",\"schedule\":");
        pp_json_str(&b, a.target, strlen(a.target), 0);
    }
    pp_buf_appendf(&b, "}\n");
    st_reply(out, 202, b.data ? b.data : "{}\n", NULL);
    pp_buf_free(&b);
}

PGPIPE_PRIVATE void run_status_page(void *ud, const pgpipe_http_page_request *rq,
                                    pgpipe_http_page_reply *out)
{
    pgpipe_runner *r = ud;
    if (!strcmp(rq->path, "/actions/fire")) {
        st_action(r, rq, out, "fire");
        return;
    }
    if (!strcmp(rq->path, "/actions/replay-dlq")) {
        st_action(r, rq, out, "replay-dlq");
        return;
    }
    if (strcmp(rq->path, "/") && strcmp(rq->path, "/index.html"))
        return; /* 404 */
    if (strcmp(rq->method, "GET") && strcmp(rq->method, "HEAD")) {
        st_reply(out, 405, "{\"error\":\"the status page answers GET and HEAD\"}\n",
                 "Allow: GET, HEAD\r\n");
        return;
    }
    run_status *s = r->status;
    int ok = 0;
    if (s) {
        pthread_mutex_lock(&s->mu);
        if (s->ready) {
            ok = 1;
            out->status = 200;
            out->content_type = "text/html; charset=utf-8";
            out->headers = "Cache-Control: no-store\r\n";
            pgpipe_http_page_write(out, s->page.data, s->page.len);
        }
        pthread_mutex_unlock(&s->mu);
    }
    if (!ok) {
        out->status = 503;
        out->content_type = "text/html; charset=utf-8";
        out->headers = "Retry-After: 1\r\n";
        static const char wait[] = "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
                                   "<meta http-equiv=\"refresh\" content=\"1\"><title>pgpipe"
                                   "</title></head><body><p>starting...</p></body></html>\n";
        pgpipe_http_page_write(out, wait, sizeof wait - 1);
    }
}

PGPIPE_PRIVATE void run_status_metrics(void *ud, pgpipe_http_page_reply *out)
{
    pgpipe_runner *r = ud;
    run_status *s = r->status;
    if (s) {
        pthread_mutex_lock(&s->mu);
        if (s->ready)
            pgpipe_http_page_write(out, s->metrics.data, s->metrics.len);
        pthread_mutex_unlock(&s->mu);
    }
    pp_buf b = { 0 };
    run_sources_metrics(r, &b);
    if (b.data)
        pgpipe_http_page_write(out, b.data, b.len);
    pp_buf_free(&b);
}
#endif

#endif /* PGPIPE_OMIT_RUN */
