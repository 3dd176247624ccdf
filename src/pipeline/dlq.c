/*
** The dead-letter queue, pgpipe.dead_letters: every write (the loader's
** rows of stage 'load', the claimer's rows of stage 'process'), list,
** inspect, counts, replay (pgpipe.dlq_replay in
** sql/schema/V0022__dlq_replay_revalidates.sql), purge, the growth rule and
** the numbers .health and .stats show. Filters become a WHERE clause of
** fixed text with numbered parameters; no value is ever spliced into SQL.
*/

#include "pp_pipeline.h"

/* ---- writes ---------------------------------------------------------------- */

PGPIPE_PRIVATE const char *pp_dlq_load_copy_sql(void)
{
    return "COPY pgpipe.dead_letters (stage, source_name, line_number, column_number, byte_offset, "
           "load_id, batch_id, raw_text, raw_bytes, error_message, sqlstate, error_context) FROM STDIN";
}

/* The raw text of a dead letter, COPY-escaped, as raw_text and raw_bytes:
** valid text goes to raw_text as it is (raw_bytes NULL); text with NUL bytes
** or invalid UTF-8 goes to raw_text with those bytes written \xHH, and as it
** was to raw_bytes (bytea hex). */
static int dlq_put_raw(pp_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *u = (const unsigned char *)s;
    size_t i = pp_utf8_text_prefix(u, n);
    if (pp_copy_escape(b, s, i) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    if (i == n)
        return pp_buf_append(b, "\t\\N", 3);
    while (i < n) {
        unsigned char c = u[i++];
        char e[6] = { '\\', '\\', 'x', hex[c >> 4], hex[c & 15], 0 };
        size_t k = pp_utf8_text_prefix(u + i, n - i);
        if (pp_buf_append(b, e, 5) != PGPIPE_OK || pp_copy_escape(b, s + i, k) != PGPIPE_OK)
            return PGPIPE_NOMEM;
        i += k;
    }
    if (pp_buf_append(b, "\t\\\\x", 4) != PGPIPE_OK || pp_buf_reserve(b, 2 * n) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    for (i = 0; i < n; i++) {
        unsigned char c = u[i];
        b->data[b->len++] = hex[c >> 4];
        b->data[b->len++] = hex[c & 15];
    }
    return PGPIPE_OK;
}

/* A text column: its COPY escape, or \N when NULL or empty. */
static int dlq_put_opt(pp_buf *b, const char *s)
{
    return pp_copy_field(b, s && *s ? s : NULL, s ? strlen(s) : 0);
}

PGPIPE_PRIVATE int pp_dlq_load_row(pp_buf *b, const pp_dlq_load_letter *d)
{
    int rc = pp_buf_append(b, "load\t", 5);
    rc |= pp_copy_escape(b, d->source, strlen(d->source));
    rc |= pp_buf_appendf(b, "\t%lld\t", d->line);
    if (d->column > 0)
        rc |= pp_buf_appendf(b, "%lld", d->column);
    else
        rc |= pp_buf_append(b, "\\N", 2);
    rc |= pp_buf_appendf(b, "\t%lld\t", d->offset);
    if (d->load_id > 0)
        rc |= pp_buf_appendf(b, "%lld", d->load_id);
    else
        rc |= pp_buf_append(b, "\\N", 2);
    rc |= pp_buf_appendf(b, "\t%s\t", d->batch_id);
    rc |= dlq_put_raw(b, d->raw ? d->raw : "", d->raw ? d->rawlen : 0);
    rc |= pp_buf_putc(b, '\t');
    rc |= pp_copy_escape(b, d->message, strlen(d->message));
    rc |= pp_buf_putc(b, '\t');
    rc |= dlq_put_opt(b, d->sqlstate);
    rc |= pp_buf_putc(b, '\t');
    rc |= dlq_put_opt(b, d->context);
    rc |= pp_buf_putc(b, '\n');
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_dlq_process_insert(pp_buf *b, const char *qtable, const char *rows,
                                         int source_table, int context)
{
    return pp_buf_appendf(b,
        "INSERT INTO %s (stage, source_table, row_id, row_received_at, source_name,"
        " batch_id, event_type, raw_text, payload, error_message, sqlstate, error_context,"
        " attempt_count, first_failed_at, last_failed_at)"
        " SELECT 'process', $%d, id, received_at, source, batch_id, event_type, payload::text,"
        " payload, coalesce(msg, 'handler failed'), nullif(st, ''), $%d, attempts,"
        " first_failed_at, now() FROM %s WHERE dead RETURNING 1",
        qtable, source_table, context, rows);
}

/* ---- reading --------------------------------------------------------------- */

void pgpipe_dlq_filter_init(pgpipe_dlq_filter *f)
{
    if (!f)
        return;
    memset(f, 0, sizeof *f);
    f->status = "dead";
    f->limit = 100;
}

typedef struct dlq_where {
    pp_buf sql;
    const char *v[12];
    char idbuf[24];
    char since[64], until[64]; /* the time filters resolved (pp_time_arg) */
    int n;
} dlq_where;

static int dlq_add(dlq_where *w, const char *cond, const char *value)
{
    w->v[w->n++] = value;
    return pp_buf_appendf(&w->sql, " AND %s $%d", cond, w->n);
}

/* An empty value is not "any": `.dlq purge --source "$SRC"` with SRC
** unset must not purge every source's dead letters. */
static int dlq_check_empty(const pgpipe_dlq_filter *f, pgpipe_error *err)
{
    if (!f)
        return PGPIPE_OK;
    const char *const vals[] = { f->stage, f->source, f->error_like, f->since, f->until, f->status };
    static const char *const names[] = { "stage", "source", "error", "since", "until", "status" };
    int i = pp_first_empty(vals, 6);
    if (i >= 0)
        return pp_err(err, PGPIPE_MISUSE, "dlq filter: %s is empty; leave it out (NULL) for no "
                      "%s filter", names[i], names[i]);
    return PGPIPE_OK;
}

/* WHERE clause of a filter (purge: status any unless set). The time
** filters are resolved on conn first, so a bad one is an error even where
** no row would be compared with it. */
static int dlq_build_where(PGconn *conn, dlq_where *w, const pgpipe_dlq_filter *f, int purge,
                           pgpipe_error *err)
{
    memset(w, 0, sizeof *w);
    int rc = dlq_check_empty(f, err);
    if (rc != PGPIPE_OK)
        return rc;
    if (f && f->since && *f->since) {
        int trc = pp_time_arg(conn, "since", f->since, w->since, sizeof w->since, err);
        if (trc != PGPIPE_OK)
            return trc;
    }
    if (f && f->until && *f->until) {
        int trc = pp_time_arg(conn, "until", f->until, w->until, sizeof w->until, err);
        if (trc != PGPIPE_OK)
            return trc;
    }
    rc = pp_buf_appendf(&w->sql, " WHERE true");
    const char *status = f ? f->status : NULL;
    if (!status && !purge)
        status = "dead";
    if (f && f->id > 0) {
        snprintf(w->idbuf, sizeof w->idbuf, "%lld", f->id);
        rc |= dlq_add(w, "id =", w->idbuf);
    }
    if (f && f->stage && *f->stage)
        rc |= dlq_add(w, "stage =", f->stage);
    if (f && f->source && *f->source) {
        /* a load's dead letter names its input (the file); the source its
        ** records were given (.load --source shop) is in the load's mapping */
        w->v[w->n++] = f->source;
        rc |= pp_buf_appendf(&w->sql, " AND (source_name = $%d OR load_id IN (SELECT l.id FROM"
                             " pgpipe.loads l WHERE l.options -> 'mapping' -> 'columns' @>"
                             " jsonb_build_array(jsonb_build_object('column', 'source',"
                             " 'value', $%d::text))))", w->n, w->n);
    }
    if (f && f->error_like && *f->error_like) {
        w->v[w->n++] = f->error_like;
        rc |= pp_buf_appendf(&w->sql, " AND strpos(lower(error_message), lower($%d)) > 0", w->n);
    }
    if (w->since[0])
        rc |= dlq_add(w, "last_failed_at >=", w->since);
    if (w->until[0])
        rc |= dlq_add(w, "last_failed_at <", w->until);
    if (status && *status && strcmp(status, "any") != 0)
        rc |= dlq_add(w, "status =", status);
    if (rc != PGPIPE_OK) {
        pp_buf_free(&w->sql);
        return pp_err_nomem(err);
    }
    return PGPIPE_OK;
}

/* Run the statement q built on w (rc: how building it went), then free both. */
static int dlq_run(PGconn *conn, int rc, pp_buf *q, dlq_where *w, PGresult **out,
                   pgpipe_error *err, const char *what)
{
    if (rc == PGPIPE_OK)
        rc = pp_exec(conn, q->data, w->n, w->v, out, err, what);
    else
        rc = pp_err_nomem(err);
    pp_buf_free(q);
    pp_buf_free(&w->sql);
    return rc;
}

#define DLQ_LIST_COLS "id, stage, status, source_name, line_number, row_id, event_type," \
    " error_message, sqlstate, attempt_count, first_failed_at, last_failed_at, replay_count"

int pgpipe_dlq_list(PGconn *conn, const pgpipe_dlq_filter *f, PGresult **out, pgpipe_error *err)
{
    if (!conn || !out)
        return pp_err(err, PGPIPE_MISUSE, "dlq list: no connection or output");
    dlq_where w;
    pp_buf q = { 0 };
    int rc = dlq_build_where(conn, &w, f, 0, err);
    if (rc != PGPIPE_OK)
        return rc;
    int limit = f ? f->limit : 100;
    if (limit == 0)
        limit = 100;
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&q, "SELECT " DLQ_LIST_COLS " FROM pgpipe.dead_letters%s"
                            " ORDER BY last_failed_at DESC, id DESC", w.sql.data);
    if (rc == PGPIPE_OK && limit > 0)
        rc = pp_buf_appendf(&q, " LIMIT %d", limit);
    return dlq_run(conn, rc, &q, &w, out, err, "listing dead letters");
}

int pgpipe_dlq_get(PGconn *conn, long long id, PGresult **out, pgpipe_error *err)
{
    if (!conn || !out)
        return pp_err(err, PGPIPE_MISUSE, "dlq get: no connection or output");
    char idb[24];
    snprintf(idb, sizeof idb, "%lld", id);
    const char *v[1] = { idb };
    PGresult *r;
    int rc = pp_exec(conn,
        "SELECT " DLQ_LIST_COLS ", raw_text, payload, error_context, source_table,"
        " row_received_at, batch_id, load_id, column_number, byte_offset, replayed_at,"
        " replayed_by FROM pgpipe.dead_letters WHERE id = $1", 1, v, &r, err,
        "reading a dead letter");
    *out = NULL;
    if (rc != PGPIPE_OK)
        return rc;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return pp_err(err, PGPIPE_DONE, "no dead letter with id %lld", id);
    }
    *out = r;
    return PGPIPE_OK;
}

int pgpipe_dlq_counts(PGconn *conn, const pgpipe_dlq_filter *f, PGresult **out,
                      pgpipe_error *err)
{
    if (!conn || !out)
        return pp_err(err, PGPIPE_MISUSE, "dlq counts: no connection or output");
    dlq_where w;
    pp_buf q = { 0 };
    int rc = dlq_build_where(conn, &w, f, 0, err);
    if (rc != PGPIPE_OK)
        return rc;
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&q, "SELECT stage, sqlstate, error, count(*) AS count,"
                            " min(error_message) AS example,"
                            " max(last_failed_at) AS last_failed_at FROM"
                            " (SELECT *, regexp_replace(error_message, '[0-9]+', 'N', 'g')"
                            " AS error FROM pgpipe.dead_letters%s) d"
                            " GROUP BY stage, sqlstate, error"
                            " ORDER BY count(*) DESC, stage, error", w.sql.data);
    return dlq_run(conn, rc, &q, &w, out, err, "counting dead letters");
}

static int dlq_notify(PGconn *conn, const char *channel, const char *payload, pgpipe_error *err)
{
    const char *v[2] = { channel, payload };
    return pp_exec(conn, "SELECT pg_notify($1, $2)", 2, v, NULL, err, "NOTIFY");
}

int pgpipe_dlq_replay(PGconn *conn, const pgpipe_dlq_filter *f, const char *target_table,
                      const char *channel, long long *replayed, long long *refused,
                      pgpipe_error *err)
{
    if (replayed)
        *replayed = 0;
    if (refused)
        *refused = 0;
    if (!conn)
        return pp_err(err, PGPIPE_MISUSE, "dlq replay: no connection");
    pgpipe_dlq_filter ff;
    if (f)
        ff = *f;
    else
        pgpipe_dlq_filter_init(&ff);
    ff.status = "dead";
    if (target_table && !*target_table)
        return pp_err(err, PGPIPE_MISUSE, "dlq replay: the target table name is empty; leave it "
                      "out (NULL) for staging.raw_events");
    dlq_where w;
    pp_buf q = { 0 };
    int rc = dlq_build_where(conn, &w, &ff, 0, err);
    if (rc != PGPIPE_OK)
        return rc;
    if (rc == PGPIPE_OK && target_table) {
        w.v[w.n++] = target_table;
        rc = pp_buf_appendf(&q, "SELECT dead_letter_id, replayed, reason FROM pgpipe.dlq_replay("
                            "ARRAY(SELECT id FROM pgpipe.dead_letters%s), $%d::regclass)",
                            w.sql.data, w.n);
    } else if (rc == PGPIPE_OK) {
        /* no table given: a load's dead letter goes back to the table that
        ** load wrote (.load --table), the others to staging.raw_events */
        rc = pp_buf_appendf(&q, "SELECT r.dead_letter_id, r.replayed, r.reason FROM (SELECT "
                            "coalesce(l.target, 'staging.raw_events') AS target, "
                            "array_agg(d.id ORDER BY d.id) AS ids FROM (SELECT * FROM "
                            "pgpipe.dead_letters%s) d LEFT JOIN pgpipe.loads l ON l.id = d.load_id "
                            "AND d.stage = 'load' GROUP BY 1) g, LATERAL pgpipe.dlq_replay(g.ids, "
                            "g.target::regclass) r", w.sql.data);
    }
    PGresult *r = NULL;
    rc = dlq_run(conn, rc, &q, &w, &r, err, "replaying dead letters");
    if (rc != PGPIPE_OK)
        return rc;
    long long ok = 0, bad = 0;
    for (int i = 0; i < PQntuples(r); i++) {
        if (PQgetvalue(r, i, 1)[0] == 't') {
            ok++;
        } else {
            bad++;
            pgpipe_log_field fl[2] = { { "dead_letter_id", PQgetvalue(r, i, 0) },
                                       { "reason", PQgetvalue(r, i, 2) } };
            pgpipe_log(PGPIPE_LOG_WARN, "dlq", "replay refused", fl, 2);
        }
    }
    PQclear(r);
    if (replayed)
        *replayed = ok;
    if (refused)
        *refused = bad;
    if (ok > 0) {
        char payload[64];
        snprintf(payload, sizeof payload, "{\"replayed\":%lld}", ok);
        rc = dlq_notify(conn, channel && *channel ? channel : "pgpipe_events", payload, err);
    }
    return rc;
}

int pgpipe_dlq_purge(PGconn *conn, const pgpipe_dlq_filter *f, long long *purged,
                     pgpipe_error *err)
{
    if (purged)
        *purged = 0;
    if (!conn || !f)
        return pp_err(err, PGPIPE_MISUSE, "dlq purge: no connection or filter");
    if (dlq_check_empty(f, err) != PGPIPE_OK)
        return PGPIPE_MISUSE;
    int any = f->id > 0 || (f->stage && *f->stage) || (f->source && *f->source) ||
              (f->error_like && *f->error_like) || (f->since && *f->since) ||
              (f->until && *f->until) || (f->status && *f->status);
    if (!any)
        return pp_err(err, PGPIPE_MISUSE,
                      "dlq purge: an empty filter purges nothing (status \"any\" purges all)");
    dlq_where w;
    pp_buf q = { 0 };
    int rc = dlq_build_where(conn, &w, f, 1, err);
    if (rc != PGPIPE_OK)
        return rc;
    rc = pp_buf_appendf(&q, "DELETE FROM pgpipe.dead_letters%s", w.sql.data);
    PGresult *r = NULL;
    rc = dlq_run(conn, rc, &q, &w, &r, err, "purging dead letters");
    if (rc == PGPIPE_OK && purged)
        *purged = strtoll(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return rc;
}

int pgpipe_dlq_growing(long long recent, long long before, long long threshold)
{
    return recent > threshold && (before > LLONG_MAX / 2 ? 0 : recent > 2 * before);
}

/* The first value of a one-row result as a number. */
static long long dlq_num(const PGresult *r, int col)
{
    return strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

int pgpipe_dlq_health_get(PGconn *conn, pgpipe_dlq_health *out, pgpipe_error *err)
{
    if (!conn || !out)
        return pp_err(err, PGPIPE_MISUSE, "dlq health: no connection or output");
    memset(out, 0, sizeof *out);
    PGresult *r;
    int rc = pp_exec(conn,
        "SELECT count(*), count(*) FILTER (WHERE first_failed_at > now() - interval '1 hour'),"
        " count(*) FILTER (WHERE first_failed_at > now() - interval '2 hours'"
        " AND first_failed_at <= now() - interval '1 hour')"
        " FROM pgpipe.dead_letters WHERE status = 'dead'", 0, NULL, &r, err,
        "reading the dead letters' health");
    if (rc != PGPIPE_OK)
        return rc;
    out->dead = dlq_num(r, 0);
    out->last_hour = dlq_num(r, 1);
    out->hour_before = dlq_num(r, 2);
    PQclear(r);
    out->growing = pgpipe_dlq_growing(out->last_hour, out->hour_before,
                                      PGPIPE_DLQ_HEALTH_THRESHOLD);
    return PGPIPE_OK;
}

int pgpipe_dlq_totals(PGconn *conn, PGresult **out, pgpipe_error *err)
{
    if (!conn || !out)
        return pp_err(err, PGPIPE_MISUSE, "dlq totals: no connection or output");
    return pp_exec(conn,
        "SELECT stage, status, count(*) AS dead_letters, max(last_failed_at) AS latest"
        " FROM pgpipe.dead_letters GROUP BY stage, status ORDER BY stage, status",
        0, NULL, out, err, "counting dead letters by stage and status");
}

int pgpipe_dlq_check_growth(PGconn *conn, int threshold, int window_s, const char *channel,
                            long long *count, pgpipe_error *err)
{
    if (count)
        *count = 0;
    if (!conn || threshold < 0 || window_s <= 0)
        return pp_err(err, PGPIPE_MISUSE, "dlq growth: bad arguments");
    char ws[16];
    snprintf(ws, sizeof ws, "%d", window_s);
    const char *v[1] = { ws };
    PGresult *r;
    int rc = pp_exec(conn,
        "SELECT count(*) FROM pgpipe.dead_letters WHERE status = 'dead'"
        " AND last_failed_at >= now() - $1::int * interval '1 second'", 1, v, &r, err,
        "counting new dead letters");
    if (rc != PGPIPE_OK)
        return rc;
    long long n = dlq_num(r, 0);
    PQclear(r);
    if (count)
        *count = n;
    if (!pgpipe_dlq_growing(n, 0, threshold))
        return PGPIPE_OK;
    char cnt[24], thr[16], payload[128];
    snprintf(cnt, sizeof cnt, "%lld", n);
    snprintf(thr, sizeof thr, "%d", threshold);
    pgpipe_log_field fl[3] = { { "new_dead_letters", cnt }, { "window_s", ws },
                               { "threshold", thr } };
    pgpipe_log(PGPIPE_LOG_WARN, "dlq", "dead letters are growing", fl, 3);
    snprintf(payload, sizeof payload,
             "{\"new_dead_letters\": %lld, \"window_s\": %d, \"threshold\": %d}", n, window_s,
             threshold);
    rc = dlq_notify(conn, channel && *channel ? channel : "pgpipe_dlq_alert", payload, err);
    if (rc != PGPIPE_OK)
        return rc;
    return pp_err(err, PGPIPE_BUSY, "%lld new dead letters within %d s (threshold %d)", n,
                  window_s, threshold);
}
