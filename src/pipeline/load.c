/*
** COPY loader: CSV, NDJSON and JSON arrays into PostgreSQL through COPY FROM
** STDIN, batch by batch, validated, dead-lettered, resumable.
**
** Flow: input chunks -> record splitter (csv reader / NDJSON lines / JSON
** array elements) -> validation and one COPY text row per record into the
** batch buffer, which is streamed to the server while it fills -> at the end
** of the batch: COPY end, dead letters, load_batches row, loads counters and
** pg_notify in the same transaction, COMMIT. The batch text stays in memory
** until the commit, so a failed batch can be sent again: row by row isolation
** (the server's "line N" context, else bisection under savepoints) for
** records the server rejects, reconnect-and-resend for lost connections.
**
** A failover to an asynchronous replica can lose batches that were
** committed: whenever a lane reconnects to another server (system
** identifier and timeline, copy_server_id) and at the end of every load,
** the batches the load counts as committed are looked up in
** pgpipe.load_batches; a file's missing batches are loaded again by
** resuming the load, for other inputs the load fails naming them.
** pgpipe_loader_cancel cancels the statements in flight on every lane (a
** COMMIT stuck waiting for a synchronous standby) and nothing is retried.
**
** With several connections (lanes, in load_lanes.c) the batch is not
** streamed while it fills: the caller's thread fills a free lane and hands
** it to the lane's thread, which sends, books and commits it on the lane's
** connection while the next batch is read into another lane.
**
** The loader is three files sharing the structs and declarations of
** src/pipeline/pp_pipeline.h: this one (options, column mapping,
** connections, the pgpipe.loads record, the public API), load_input.c
** (records into COPY rows; the CSV, NDJSON and JSON-array framers) and
** load_lanes.c (sending, isolating the rows the server rejects, committing
** batches, lanes and their threads).
*/

#include "pp_pipeline.h"

#define COPY_READ_CHUNK (256 * 1024)

/* ---- small helpers ------------------------------------------------------ */

PGPIPE_PRIVATE int copy_errf(pgpipe_loader *l, int code, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pp_err(&l->hdr.err, code, "%s", msg);
}

/* A new batch id: a version 7 UUID (time-ordered, so the ids of one loader
** sort in batch order). */
PGPIPE_PRIVATE int copy_new_uuid(pgpipe_loader *l, copy_lane *ln)
{
    if (pp_uuid_v7(ln->uuid_text) != PGPIPE_OK)
        return copy_errf(l, PGPIPE_IO, "cannot read /dev/urandom for a batch id: %s",
                         strerror(errno));
    pp_uuid_bin(ln->uuid_text, ln->uuid_bin); /* its 16 bytes, for binary COPY */
    return PGPIPE_OK;
}

/* ---- options ------------------------------------------------------------ */

void pgpipe_loader_options_init(pgpipe_loader_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->format = PGPIPE_FORMAT_AUTO;
    o->csv_delimiter = ',';
    o->max_record_bytes = (size_t)64 << 20;
    o->batch_rows = 10000;
    o->batch_bytes = (size_t)4 << 20;
    o->connections = 2;
    o->notify_channel = "pgpipe_events";
    o->max_retries = 10;
    o->install_schema = 1;
}

static char *copy_dup_esc(const char *s)
{
    pp_buf b = { 0 };
    if (pp_copy_escape(&b, s, strlen(s)) != PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK) {
        pp_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int copy_add_col(pgpipe_loader *l, const char *column, const char *field, const char *value,
                        int json)
{
    copy_col *c = &l->cols[l->ncols++];
    memset(c, 0, sizeof *c);
    c->csv_idx = -1;
    c->json = json;
    c->column = pp_strdup(column);
    if (!c->column)
        return PGPIPE_NOMEM;
    if (field && *field) {
        if (!strcmp(field, "$record")) c->kind = COPY_K_RECORD;
        else if (!strcmp(field, "$line")) c->kind = COPY_K_LINE;
        else if (!strcmp(field, "$source")) c->kind = COPY_K_SOURCE;
        else if (!strcmp(field, "$batch_id")) c->kind = COPY_K_BATCH;
        else if (!strcmp(field, "$load_id")) c->kind = COPY_K_LOAD;
        else {
            c->kind = COPY_K_FIELD;
            c->field = pp_strdup(field);
            if (!c->field)
                return PGPIPE_NOMEM;
            c->is_path = strpbrk(field, ".[") != NULL;
        }
    } else if (value) {
        c->kind = COPY_K_FIXED;
        c->value = copy_dup_esc(value);
        c->raw_value = pp_strdup(value);
        if (!c->value || !c->raw_value)
            return PGPIPE_NOMEM;
    } else {
        c->kind = COPY_K_NULL;
    }
    return PGPIPE_OK;
}

int copy_mapping_twice(const pgpipe_load_column *cols, int n, int *first, int *second)
{
    for (int i = 1; i < n; i++)
        for (int j = 0; j < i; j++)
            if (cols[i].column && cols[j].column && !strcmp(cols[i].column, cols[j].column)) {
                *first = j;
                *second = i;
                return 1;
            }
    return 0;
}

static int copy_build_mapping(pgpipe_loader *l, const pgpipe_loader_options *o)
{
    int n = o->target ? o->ncolumns : 5;
    l->cols = pp_calloc((size_t)n + 1, sizeof *l->cols);
    if (!l->cols)
        return pp_err_nomem(&l->hdr.err);
    int rc = PGPIPE_OK;
    if (o->target) {
        if (!o->columns || o->ncolumns <= 0)
            return copy_errf(l, PGPIPE_MISUSE, "loader: target %s needs a column mapping", o->target);
        for (int i = 0; i < o->ncolumns; i++) {
            const pgpipe_load_column *c = &o->columns[i];
            if (!c->column || !*c->column)
                return copy_errf(l, PGPIPE_MISUSE, "loader: column %d of the mapping has no name", i + 1);
            if (!c->value && (!c->field || !*c->field))
                return copy_errf(l, PGPIPE_MISUSE, "loader: column %s of the mapping has neither a "
                                 "field nor a value", c->column);
        }
        int j, k;
        if (copy_mapping_twice(o->columns, o->ncolumns, &j, &k))
            return copy_errf(l, PGPIPE_MISUSE, "loader: column %s is mapped twice (entries %d and %d "
                             "of the mapping)", o->columns[k].column, j + 1, k + 1);
        for (int i = 0; i < o->ncolumns && rc == PGPIPE_OK; i++)
            rc = copy_add_col(l, o->columns[i].column, o->columns[i].field, o->columns[i].value,
                              o->columns[i].json);
    } else {
        if (o->source_field)
            rc = copy_add_col(l, "source", o->source_field, NULL, 0);
        else if (o->source_value)
            rc = copy_add_col(l, "source", NULL, o->source_value, 0);
        else
            rc = copy_add_col(l, "source", "$source", NULL, 0);
        if (rc == PGPIPE_OK) {
            if (o->event_type_field || !o->event_type_value)
                rc = copy_add_col(l, "event_type",
                                  o->event_type_field ? o->event_type_field : "event_type", NULL, 0);
            else
                rc = copy_add_col(l, "event_type", NULL, o->event_type_value, 0);
        }
        if (rc == PGPIPE_OK)
            rc = copy_add_col(l, "payload", o->payload_field ? o->payload_field : "$record", NULL, 1);
        if (rc == PGPIPE_OK)
            rc = copy_add_col(l, "batch_id", "$batch_id", NULL, 0);
        if (rc == PGPIPE_OK && o->received_at_field)
            rc = copy_add_col(l, "received_at", o->received_at_field, NULL, 0);
    }
    if (rc == PGPIPE_NOMEM)
        return pp_err_nomem(&l->hdr.err);
    if (rc != PGPIPE_OK)
        return copy_errf(l, PGPIPE_MISUSE, "loader: bad column mapping");
    /* raw_events fields taken from the record are required (NOT NULL columns) */
    pp_buf sql = { 0 };
    pp_buf_append(&sql, "COPY ", 5);
    if (pp_quote_path(&sql, l->target) != PGPIPE_OK) {
        pp_buf_free(&sql);
        return copy_errf(l, PGPIPE_MISUSE, "loader: bad target table name \"%s\"", l->target);
    }
    pp_buf_append(&sql, " (", 2);
    for (int i = 0; i < l->ncols; i++) {
        if (i)
            pp_buf_append(&sql, ", ", 2);
        if (pp_quote_path(&sql, l->cols[i].column) != PGPIPE_OK || strchr(l->cols[i].column, '.')) {
            pp_buf_free(&sql);
            return copy_errf(l, PGPIPE_MISUSE, "loader: bad column name \"%s\"", l->cols[i].column);
        }
    }
    pp_buf_append(&sql, ") FROM STDIN", 12);
    if (pp_buf_putc(&sql, '\0') != PGPIPE_OK) {
        pp_buf_free(&sql);
        return pp_err_nomem(&l->hdr.err);
    }
    l->copy_sql = sql.data;
    /* the default mapping without received_at may go binary (copy_rows_sql) */
    if (!PGPIPE_SMALL && !o->target && !o->received_at_field) {
        size_t n = strlen(l->copy_sql);
        if (!(l->copy_sql_bin = pp_malloc(n + 17)))
            return pp_err_nomem(&l->hdr.err);
        memcpy(l->copy_sql_bin, l->copy_sql, n);
        memcpy(l->copy_sql_bin + n, " (FORMAT binary)", 17);
    }
    pp_buf tq = { 0 };
    pp_quote_path(&tq, l->target);
    if (pp_buf_putc(&tq, '\0') != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    l->target_sql = tq.data;
    return PGPIPE_OK;
}

/* ---- connection --------------------------------------------------------- */

PGPIPE_PRIVATE void copy_drop_conn(copy_lane *ln, int broken)
{
    pgpipe_loader *l = ln->l;
    pp_cancel_arm(&ln->cancel, NULL);
    if (ln->pconn) {
        if (broken)
            pgpipe_pool_discard(ln->pconn);
        else
            pgpipe_pool_release(ln->pconn);
        ln->pconn = NULL;
    } else if (ln->own_conn && ln->conn && ln->conn != l->borrowed) {
        PQfinish(ln->conn);
    }
    ln->conn = NULL;
    ln->copy_open = 0;
    ln->chained = 0;
}

/* Which server conn talks to: "SYSID/TIMELINE" (the system identifier
** and the timeline of its WAL now). A promoted replica keeps the system
** identifier and starts a new timeline, so a failover shows as another
** id. When the role may not read pg_control_system() the timeline alone
** ("?/TIMELINE"); "" when neither can be read. Run outside a transaction. */
static void copy_server_id(PGconn *conn, char *out, size_t size)
{
    static const char *const q[2] = {
        "SELECT system_identifier::text || '/' || substr(pg_walfile_name(pg_current_wal_lsn()), "
        "1, 8) FROM pg_control_system()",
        "SELECT '?/' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)" };
    out[0] = '\0';
    /* a borrowed connection may be inside its owner's transaction, which a
    ** refused function would abort */
    if (PQtransactionStatus(conn) != PQTRANS_IDLE)
        return;
    for (int i = 0; i < 2 && !out[0]; i++) {
        PGresult *r = NULL;
        if (pp_exec(conn, q[i], 0, NULL, &r, NULL, "loader") == PGPIPE_OK) {
            if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0))
                snprintf(out, size, "%s", PQgetvalue(r, 0, 0));
            PQclear(r);
        }
    }
}

/* A lane's connection is new: the handle pgpipe_loader_cancel uses, and
** which server it reached (a reconnect may land on another one). */
static int copy_connected(copy_lane *ln, int again)
{
    pp_cancel_arm(&ln->cancel, ln->conn);
    copy_server_id(ln->conn, ln->server_id, sizeof ln->server_id);
    ln->reconnected |= again;
    return PGPIPE_OK;
}

/* (Re)connect the lane. *transient set when trying again may help. */
PGPIPE_PRIVATE int copy_connect(copy_lane *ln, int *transient)
{
    pgpipe_loader *l = ln->l;
    *transient = 0;
    if (ln->conn && PQstatus(ln->conn) == CONNECTION_OK)
        return PGPIPE_OK;
    if (copy_cancelled(l))
        return pp_err(&ln->err, PGPIPE_BUSY, "loader: cancelled");
    if (l->borrowed) {
        int again = ln->conn != NULL;
        ln->conn = l->borrowed;
        if (PQstatus(ln->conn) != CONNECTION_OK) {
            PQreset(ln->conn);
            ln->r_retries++;
            again = 1;
        }
        if (PQstatus(ln->conn) != CONNECTION_OK) {
            *transient = 1;
            return pp_err_pq(&ln->err, ln->conn, NULL, "loader: reconnect");
        }
        return copy_connected(ln, again);
    }
    int again = ln->connected_once;
    if (ln->connected_once)
        ln->r_retries++;
    ln->connected_once = 1;
    copy_drop_conn(ln, 1);
    if (l->pool) {
        pgpipe_error e;
        pgpipe_error_clear(&e);
        int rc = pgpipe_pool_acquire_ex(l->pool, &ln->pconn, -1, &e);
        if (rc != PGPIPE_OK) {
            ln->err = e;
            *transient = rc == PGPIPE_BUSY;
            ln->pconn = NULL;
            return rc;
        }
        ln->conn = pgpipe_conn_pg(ln->pconn);
        return copy_connected(ln, again);
    }
    ln->conn = PQconnectdb(l->conninfo ? l->conninfo : "");
    ln->own_conn = 1;
    if (!ln->conn)
        return pp_err_nomem(&ln->err);
    /* the server's NOTICEs (the schema install's) go to the log, as on a pool's connections */
    PQsetNoticeProcessor(ln->conn, pp_notice_to_log, (void *)"loader");
    if (PQstatus(ln->conn) != CONNECTION_OK) {
        pp_err_pq(&ln->err, ln->conn, NULL, "loader: connect");
        /* only a server known to be starting, stopping or refusing is worth
        ** another try: the load has a bounded number of attempts */
        *transient = pp_connect_failure_class(ln->conn) == PGPIPE_SQLSTATE_RETRY;
        PQfinish(ln->conn);
        ln->conn = NULL;
        return PGPIPE_DB;
    }
    return copy_connected(ln, again);
}

/* Run one statement (params optional); sets the lane's error. */
PGPIPE_PRIVATE int copy_exec(copy_lane *ln, const char *sql, int n, const char *const *vals,
                     PGresult **out, int *transient)
{
    int rc = pp_exec(ln->conn, sql, n, n ? vals : NULL, out, &ln->err, "loader");
    *transient = rc != PGPIPE_OK && pgpipe_sqlstate_is_transient(ln->err.sqlstate);
    return rc;
}

/* Roll back whatever the lane's connection has open (a failed batch). */
PGPIPE_PRIVATE void copy_rollback(copy_lane *ln)
{
    pp_rollback_open(ln->conn);
}

/* ---- the load record (pgpipe.loads) -------------------------------------- */

static int copy_cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

PGPIPE_PRIVATE int copy_seq_done(const pgpipe_loader *l, long long seq)
{
    return copy_seq_rows(l, seq) >= 0;
}

PGPIPE_PRIVATE long long copy_seq_rows(const pgpipe_loader *l, long long seq)
{
    const long long *at = l->ndone ? bsearch(&seq, l->done_seqs, l->ndone, sizeof seq, copy_cmp_ll)
                                   : NULL;
    return at ? l->done_rows[at - l->done_seqs] : -1;
}

static const char *copy_format_name(int f)
{
    return f == PGPIPE_FORMAT_CSV ? "csv" : f == PGPIPE_FORMAT_NDJSON ? "ndjson"
         : f == PGPIPE_FORMAT_JSON ? "json" : "auto";
}

/* Find the earlier run of this load (same key and target) or create the row. */
/* The load's field mapping and required fields as JSON, recorded in
** pgpipe.loads.options: a replay of its dead letters (pgpipe.dlq_replay)
** validates and maps them the same way.
**   {"columns": [{"column": C, "field": F | "value": V, "json": true}, ...],
**    "required": [F, ...]} */
static char *copy_mapping_json(const pgpipe_loader *l)
{
    pp_buf b = { 0 };
    int rc = pp_buf_appendf(&b, "{\"columns\": [");
    for (int i = 0; i < l->ncols && rc == PGPIPE_OK; i++) {
        const copy_col *c = &l->cols[i];
        rc |= pp_buf_appendf(&b, "%s{\"column\": ", i ? ", " : "");
        rc |= pp_json_str(&b, c->column, strlen(c->column), 0);
        if (c->kind == COPY_K_FIELD) {
            rc |= pp_buf_appendf(&b, ", \"field\": ");
            rc |= pp_json_str(&b, c->field, strlen(c->field), 0);
        } else if (c->kind == COPY_K_FIXED) {
            rc |= pp_buf_appendf(&b, ", \"value\": ");
            rc |= pp_json_str(&b, c->raw_value, strlen(c->raw_value), 0);
        } else if (c->kind != COPY_K_NULL) {
            const char *sp = c->kind == COPY_K_RECORD ? "$record" : c->kind == COPY_K_LINE ? "$line"
                           : c->kind == COPY_K_SOURCE ? "$source" : c->kind == COPY_K_BATCH
                           ? "$batch_id" : "$load_id";
            rc |= pp_buf_appendf(&b, ", \"field\": \"%s\"", sp);
        }
        rc |= pp_buf_appendf(&b, "%s}", c->json ? ", \"json\": true" : "");
    }
    rc |= pp_buf_appendf(&b, "], \"required\": [");
    for (int i = 0; i < l->nrequired && rc == PGPIPE_OK; i++) {
        rc |= pp_buf_appendf(&b, "%s", i ? ", " : "");
        rc |= pp_json_str(&b, l->required[i], strlen(l->required[i]), 0);
    }
    rc |= pp_buf_appendf(&b, "]}");
    if (rc != PGPIPE_OK) {
        pp_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* A file loaded with its default key (path, size, mtime), no load of that
** key: is the last load of the same file into the same target one that
** stopped (failed, interrupted, killed) after committing batches? Then the
** file has changed since (a JSON array fixed, a truncated file), and a new
** load would load again the records that load committed. Refused, naming
** that load's key: with it the load resumes after what it committed. */
static int copy_changed_file(pgpipe_loader *l, copy_lane *ln, int *transient)
{
    /* the same file: the same path (unless a source name stands for it,
    ** which other files may share), or the same device and inode (a file
    ** truncated or edited in place): the key's "file:DEV:INO:" */
    char same[96];
    const char *c = l->load_key;
    for (int colons = 0; *c && colons < 3; c++)
        colons += *c == ':';
    snprintf(same, sizeof same, "%.*s%%", (int)(c - l->load_key), l->load_key);
    const char *v[4] = { l->source, l->target, l->opt_source_name ? "f" : "t", same };
    PGresult *r = NULL;
    int rc = copy_exec(ln, "SELECT id, status, source_checksum, coalesce(source_size::text, '?'), "
                          "rows_read, batches FROM pgpipe.loads WHERE target = $2 AND "
                          "source_checksum LIKE 'file:%' AND (($3::boolean AND source = $1) OR "
                          "source_checksum LIKE $4) ORDER BY id DESC LIMIT 1",
                       4, v, &r, transient);
    if (rc != PGPIPE_OK)
        return rc;
    if (PQntuples(r) == 1 && strcmp(PQgetvalue(r, 0, 1), "completed") != 0 &&
        atoll(PQgetvalue(r, 0, 5)) > 0) {
        const char *key = PQgetvalue(r, 0, 2);
        rc = pp_err(&ln->err, PGPIPE_MISUSE, "loader: %s has changed since load %s of it (%s) "
                    "stopped after committing %s records in %s batches: it had %s bytes, it has "
                    "%lld now. A new load would load those records again. If the file was fixed "
                    "after them (the records they hold unchanged), resume that load: --key %s "
                    "(pgpipe_loader_options.load_key); to load all of it as a new load, give it "
                    "a new key (--key NAME)", l->source, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1),
                    PQgetvalue(r, 0, 4), PQgetvalue(r, 0, 5), PQgetvalue(r, 0, 3), l->src_size,
                    key);
    }
    PQclear(r);
    return rc;
}

/* May this load send binary rows (copy_sql_bin)? Asked at each load, so a
** table altered since the last one gets COPY text (pp_copy_staging_format:
** also text inside a borrowed connection's transaction, for a role that may
** not read pg_attribute, and with PGPIPE_COPY_FORMAT=text). */
static void copy_binary_ask(pgpipe_loader *l)
{
    l->cw.binary = l->copy_sql_bin &&
                   pp_copy_staging_format(l->lanes[0].conn, l->target_sql) == PP_COPY_BINARY;
}

/* Which JSON columns are jsonb (copy_col.order: their values go in jsonb's
** member order)? A json column keeps its text as it is sent, so it gets the
** value as it came. Binary rows went to a checked jsonb payload; otherwise
** one question at each load; unasked (inside a borrowed connection's
** transaction) or refused, nothing is reordered (jsonb sorts on its own). */
static void copy_json_order_ask(pgpipe_loader *l)
{
    int any = 0;
    for (int i = 0; i < l->ncols; i++) {
        l->cols[i].order = l->cols[i].json && COPY_BINARY(l);
        any |= l->cols[i].json;
    }
    PGconn *conn = l->lanes[0].conn;
    if (PGPIPE_SMALL || !any || COPY_BINARY(l) || PQtransactionStatus(conn) != PQTRANS_IDLE)
        return; /* (a size build sends JSON as it came: jsonb sorts it) */
    const char *v[1] = { l->target_sql };
    PGresult *r = NULL;
    if (pp_exec(conn, "SELECT a.attname::text FROM pg_catalog.pg_attribute a WHERE a.attrelid = "
                      "pg_catalog.to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped "
                      "AND a.atttypid = 'pg_catalog.jsonb'::pg_catalog.regtype",
                1, v, &r, NULL, "loader") != PGPIPE_OK)
        return;
    for (int k = 0; k < PQntuples(r); k++)
        for (int i = 0; i < l->ncols; i++)
            if (l->cols[i].json && !strcmp(l->cols[i].column, PQgetvalue(r, k, 0)))
                l->cols[i].order = 1;
    PQclear(r);
}

PGPIPE_PRIVATE const char *copy_rows_sql(const pgpipe_loader *l)
{
    return COPY_BINARY(l) ? l->copy_sql_bin : l->copy_sql;
}

static int copy_load_register_locked(pgpipe_loader *l, int *transient)
{
    copy_lane *ln = &l->lanes[0];
    char num[5][32];
    PGresult *r = NULL;
    int rc;
    l->ndone = 0;
    if (l->load_key) {
        char *mapping = copy_mapping_json(l);
        if (!mapping)
            return pp_err_nomem(&ln->err);
        char delim[2] = { (char)l->csv_delimiter_now, 0 };
        const char *v[4] = { l->load_key, l->target, mapping, delim };
        rc = copy_exec(ln, "SELECT id, coalesce(options->>'batch_rows', ''), "
                          "coalesce(options->>'batch_bytes', ''), " COPY_LOAD_STARTED ", format, "
                          "coalesce(options->'mapping' = $3::jsonb, true), "
                          "coalesce(options->>'delimiter', $4), (SELECT count(*) FROM "
                          "pgpipe.load_batches b WHERE b.load_id = loads.id), "
                          "coalesce(options->>'max_record_bytes', '') FROM pgpipe.loads "
                          "WHERE source_checksum = $1 AND target = $2 ORDER BY id DESC LIMIT 1",
                       4, v, &r, transient);
        pp_free(mapping);
        if (rc != PGPIPE_OK)
            return rc;
        /* a resume skips the batches the earlier run committed: only right
        ** when it reads the file the same way. A run with another format,
        ** delimiter or mapping (the first one's mistake fixed) would skip
        ** records it never loaded; when that run committed nothing (its
        ** CSV header was refused, say) there is nothing to skip, and this
        ** run is a new load. */
        int fresh = 0;
        if (PQntuples(r) == 1) {
            const char *was = PQgetvalue(r, 0, 4), *was_delim = PQgetvalue(r, 0, 6);
            int other_format = l->format != PGPIPE_FORMAT_AUTO && strcmp(was, "auto") &&
                               strcmp(was, copy_format_name(l->format));
            /* a CSV read with another delimiter: a TSV first loaded as
            ** comma-separated (every row one odd field) */
            int other_delim = !strcmp(was, "csv") &&
                              (l->format == PGPIPE_FORMAT_CSV || l->format == PGPIPE_FORMAT_AUTO) &&
                              strcmp(was_delim, delim) != 0;
            /* another record limit: an over-long record counts its first
            ** max_record_bytes towards the batch, so the batches would be
            ** cut elsewhere */
            const char *was_max = PQgetvalue(r, 0, 8);
            int other_max = *was_max && (size_t)strtoull(was_max, NULL, 10) != l->max_record;
            int other = other_format || other_delim || other_max || PQgetvalue(r, 0, 5)[0] != 't';
            if (other && atoll(PQgetvalue(r, 0, 7)) == 0)
                fresh = 1;
            else if (other) {
                char what[96];
                if (other_format)
                    snprintf(what, sizeof what, "format %s; this one %s", was,
                             copy_format_name(l->format));
                else if (other_delim)
                    snprintf(what, sizeof what, "the CSV delimiter %s; this one %s",
                             was_delim[0] == '\t' ? "tab" : was_delim,
                             delim[0] == '\t' ? "tab" : delim);
                else if (other_max)
                    snprintf(what, sizeof what, "max_record_bytes %s; this one %zu", was_max,
                             l->max_record);
                else
                    snprintf(what, sizeof what, "another field mapping or --require");
                rc = pp_err(&ln->err, PGPIPE_MISUSE, "loader: load %s of %s ran with %s: resuming "
                            "it would skip the batches that run committed. To load the file again "
                            "as a new load, give the load another key (.load --key NAME; "
                            "pgpipe_loader_options.load_key)", PQgetvalue(r, 0, 0), l->source, what);
                PQclear(r);
                return rc;
            }
        }
        if (PQntuples(r) == 1 && !fresh) {
            l->load_id = atoll(PQgetvalue(r, 0, 0));
            snprintf(l->was_format, sizeof l->was_format, "%s", PQgetvalue(r, 0, 4));
            snprintf(l->load_started, sizeof l->load_started, "%s", PQgetvalue(r, 0, 3));
            /* the batch boundaries must be those of the earlier run */
            if (*PQgetvalue(r, 0, 1))
                l->batch_rows = atoi(PQgetvalue(r, 0, 1));
            if (*PQgetvalue(r, 0, 2))
                l->batch_bytes = (size_t)atoll(PQgetvalue(r, 0, 2));
            PQclear(r);
            snprintf(num[0], sizeof num[0], "%lld", l->load_id);
            const char *v1[1] = { num[0] };
            rc = copy_exec(ln, "SELECT seq, rows_read FROM pgpipe.load_batches "
                              "WHERE load_id = $1::bigint ORDER BY seq", 1, v1, &r, transient);
            if (rc != PGPIPE_OK)
                return rc;
            size_t n = (size_t)PQntuples(r);
            pp_free(l->done_seqs);
            pp_free(l->done_rows);
            l->done_seqs = pp_malloc((n ? n : 1) * sizeof *l->done_seqs);
            l->done_rows = pp_malloc((n ? n : 1) * sizeof *l->done_rows);
            if (!l->done_seqs || !l->done_rows) {
                PQclear(r);
                return pp_err_nomem(&ln->err);
            }
            for (size_t i = 0; i < n; i++) {
                l->done_seqs[i] = atoll(PQgetvalue(r, (int)i, 0));
                l->done_rows[i] = atoll(PQgetvalue(r, (int)i, 1));
            }
            l->ndone = n;
            PQclear(r);
            return copy_exec(ln, "UPDATE pgpipe.loads SET status = 'running', updated_at = now(), "
                                "finished_at = NULL, error_message = NULL, error_sqlstate = NULL "
                                "WHERE id = $1::bigint", 1, v1, NULL, transient);
        }
        PQclear(r);
        if (!fresh && !l->opt_load_key && (rc = copy_changed_file(l, ln, transient)) != PGPIPE_OK)
            return rc;
    }
    snprintf(num[0], sizeof num[0], "%lld", l->src_size);
    snprintf(num[1], sizeof num[1], "%lld", l->src_mtime);
    snprintf(num[2], sizeof num[2], "%d", l->batch_rows);
    snprintf(num[3], sizeof num[3], "%zu", l->batch_bytes);
    char *mapping = copy_mapping_json(l);
    if (!mapping)
        return pp_err_nomem(&ln->err);
    char delim[2] = { (char)l->csv_delimiter_now, 0 };
    snprintf(num[4], sizeof num[4], "%zu", l->max_record);
    const char *v[11] = { l->source, l->src_size >= 0 ? num[0] : NULL,
                          l->src_mtime >= 0 ? num[1] : NULL, l->load_key,
                          copy_format_name(l->format), l->target, num[2], num[3], mapping, delim,
                          num[4] };
    rc = copy_exec(ln, "INSERT INTO pgpipe.loads (source, source_size, source_mtime, source_checksum, "
                      "format, target, options) VALUES ($1, $2::bigint, to_timestamp($3::bigint), $4, "
                      "$5, $6, jsonb_build_object('batch_rows', $7::int, 'batch_bytes', $8::bigint, "
                      "'mapping', $9::jsonb, 'delimiter', $10::text, "
                      "'max_record_bytes', $11::bigint)) "
                      "RETURNING id, " COPY_LOAD_STARTED, 11, v, &r, transient);
    pp_free(mapping);
    if (rc != PGPIPE_OK)
        return rc;
    l->load_id = atoll(PQgetvalue(r, 0, 0));
    snprintf(l->load_started, sizeof l->load_started, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    return PGPIPE_OK;
}

/* The lookup and the insert run in one transaction under an advisory lock
** on the key and the target: two runs of the same load starting at once
** would otherwise both find nothing and both insert a load of their own,
** and load every record twice. */
static int copy_load_register(pgpipe_loader *l, int *transient)
{
    copy_lane *ln = &l->lanes[0];
    copy_binary_ask(l);
    copy_json_order_ask(l);
    if (!l->load_key)
        return copy_load_register_locked(l, transient);
    const char *v[2] = { l->load_key, l->target };
    int rc = copy_exec(ln, PP_BEGIN, 0, NULL, NULL, transient);
    if (rc == PGPIPE_OK)
        rc = copy_exec(ln, "SELECT pg_advisory_xact_lock(hashtextextended($1 || chr(1) || $2, 7077))",
                       2, v, NULL, transient);
    if (rc == PGPIPE_OK)
        rc = copy_load_register_locked(l, transient);
    if (rc == PGPIPE_OK)
        rc = copy_exec(ln, "COMMIT", 0, NULL, NULL, transient);
    if (rc != PGPIPE_OK)
        copy_rollback(ln);
    return rc;
}

/* Run op on lanes[0], the connection of the load's own bookkeeping:
** (re)connect, run it, and try again while what fails is transient, up to
** `attempts` times. A failure leaves its error in the loader's. */
typedef int (*copy_lane_op)(pgpipe_loader *l, copy_lane *ln, const void *arg, int *transient);

typedef struct copy_main_call {
    pgpipe_loader *l;
    copy_lane_op op;
    const void *arg;
} copy_main_call;

static int copy_main_attempt(void *ud, int attempt, int *transient)
{
    copy_main_call *m = ud;
    copy_lane *ln = &m->l->lanes[0];
    if (attempt > 1 && copy_cancelled(m->l)) {
        *transient = 0;
        return pp_err(&ln->err, PGPIPE_BUSY, "loader: cancelled");
    }
    if (attempt > 1)
        copy_drop_conn(ln, 1); /* the failed attempt's connection may be broken */
    int rc = copy_connect(ln, transient);
    if (rc == PGPIPE_OK)
        rc = m->op(m->l, ln, m->arg, transient);
    return rc;
}

static int copy_on_main_lane(pgpipe_loader *l, int attempts, copy_lane_op op, const void *arg)
{
    pgpipe_retry rt;
    pgpipe_retry_init(&rt, attempts, 100, 2000);
    copy_main_call m = { l, op, arg };
    int rc = pgpipe_retry_call(&rt, copy_main_attempt, &m);
    if (rc != PGPIPE_OK)
        l->hdr.err = l->lanes[0].err;
    return rc;
}

static int copy_op_register(pgpipe_loader *l, copy_lane *ln, const void *arg, int *transient)
{
    (void)ln;
    (void)arg;
    return copy_load_register(l, transient);
}

/* ---- is what was committed still there? ------------------------------------ */

PGPIPE_PRIVATE int copy_cancelled(const pgpipe_loader *l)
{
    return atomic_load(&((pgpipe_loader *)l)->cancel_req) != 0;
}

/* A loader whose open failed refuses every call but close (and the
** error calls): it holds no usable options (no conninfo: a connection would
** go where the PG* environment points). */
static int copy_refuse_unopened(pgpipe_loader *l)
{
    return copy_errf(l, PGPIPE_MISUSE, "the loader did not open: %s", l->open_msg);
}

int pgpipe_loader_cancel(pgpipe_loader *l)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (l->not_open)
        return copy_refuse_unopened(l);
    atomic_store(&l->cancel_req, 1);
    for (int i = 0; i < COPY_MAX_LANES; i++)
        pp_cancel_fire(&l->lanes[i].cancel);
    return PGPIPE_OK;
}

/* Remember a batch the lane committed (the loader's thread, at the fold). */
PGPIPE_PRIVATE int copy_book(pgpipe_loader *l, const copy_lane *ln)
{
    if (l->nbooked == l->capbooked) {
        size_t cap = l->capbooked ? 2 * l->capbooked : 64;
        copy_booked *b = pp_realloc(l->booked, cap * sizeof *b);
        if (!b)
            return pp_err_nomem(&l->hdr.err);
        l->booked = b;
        l->capbooked = cap;
    }
    copy_booked *b = &l->booked[l->nbooked++];
    b->seq = ln->seq;
    b->theirs = ln->r_batches == 0;
    b->loaded = b->theirs ? 0 : ln->r_loaded;
    b->dead = b->theirs ? 0 : ln->r_dead;
    b->theirs_rows = b->theirs ? ln->r_skipped_rows : 0;
    b->missing = 0;
    memcpy(b->uuid, ln->uuid_text, sizeof b->uuid);
    return PGPIPE_OK;
}

typedef struct copy_seen {
    long long seq;
    const char *uuid;
} copy_seen;

static int copy_cmp_seen(const void *a, const void *b)
{
    long long x = ((const copy_seen *)a)->seq, y = ((const copy_seen *)b)->seq;
    return x < y ? -1 : x > y;
}

/* The outcome of a check: what is missing of what was committed. */
typedef struct copy_check {
    long long batches, rows;          /* missing, all runs */
    long long ours, ours_loaded, ours_dead;  /* missing, committed by this run */
    long long theirs_rows;            /* missing records of earlier runs' batches */
    int gone;                         /* the load's own pgpipe.loads row is not there */
    char seqs[160];                   /* "6, 7, 9-12" (the first ones) */
} copy_check;

static void copy_check_seq(copy_check *c, long long seq)
{
    size_t n = strlen(c->seqs);
    if (n + 24 < sizeof c->seqs)
        snprintf(c->seqs + n, sizeof c->seqs - n, "%s%lld", n ? ", " : "", seq);
    else if (n + 5 < sizeof c->seqs && strcmp(c->seqs + n - 3, "...") != 0)
        snprintf(c->seqs + n, sizeof c->seqs - n, ", ...");
}

/* Compare the batches this load counts as committed (l->booked of this run,
** done_seqs of earlier runs) with the load's pgpipe.load_batches rows on the
** lane's server: a batch of ours must be there with its batch id (the loads
** row may be gone too, and its id reused by another load: c->gone, and then
** every batch is missing). Marks the missing ones. Read-only: it never waits for a synchronous standby. */
static int copy_verify(pgpipe_loader *l, copy_lane *ln, copy_check *c, int *transient)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < l->nbooked; i++)
        l->booked[i].missing = 0;
    char id[32];
    snprintf(id, sizeof id, "%lld", l->load_id);
    const char *v[2] = { id, l->load_started };
    PGresult *r = NULL;
    int rc = copy_exec(ln, "SELECT count(*) FROM pgpipe.loads WHERE id = $1::bigint AND "
                           COPY_LOAD_STARTED " = $2::bigint", 2, v, &r, transient);
    if (rc != PGPIPE_OK)
        return rc;
    c->gone = atoll(PQgetvalue(r, 0, 0)) == 0;
    PQclear(r);
    rc = copy_exec(ln, "SELECT seq, batch_id::text FROM pgpipe.load_batches "
                       "WHERE load_id = $1::bigint ORDER BY seq", 1, v, &r, transient);
    if (rc != PGPIPE_OK)
        return rc;
    /* without its loads row, what has the id is another load's */
    size_t n = c->gone ? 0 : (size_t)PQntuples(r);
    copy_seen *seen = pp_malloc((n ? n : 1) * sizeof *seen);
    if (!seen) {
        PQclear(r);
        return pp_err_nomem(&ln->err);
    }
    for (size_t i = 0; i < n; i++) {
        seen[i].seq = atoll(PQgetvalue(r, (int)i, 0));
        seen[i].uuid = PQgetvalue(r, (int)i, 1);
    }
    for (size_t i = 0; i < l->ndone; i++) {
        copy_seen key = { l->done_seqs[i], NULL };
        if (!bsearch(&key, seen, n, sizeof *seen, copy_cmp_seen)) {
            c->batches++;
            c->rows += l->done_rows[i];
            c->theirs_rows += l->done_rows[i];
            copy_check_seq(c, l->done_seqs[i]);
        }
    }
    for (size_t i = 0; i < l->nbooked; i++) {
        copy_booked *b = &l->booked[i];
        copy_seen key = { b->seq, NULL };
        const copy_seen *s = bsearch(&key, seen, n, sizeof *seen, copy_cmp_seen);
        /* another run's batch: whichever run's it is now */
        if (s && (b->theirs || !strcmp(s->uuid, b->uuid)))
            continue;
        b->missing = 1;
        c->batches++;
        if (b->theirs) {
            c->rows += b->theirs_rows;
            c->theirs_rows += b->theirs_rows;
            copy_check_seq(c, b->seq);
            continue;
        }
        c->ours++;
        c->ours_loaded += b->loaded;
        c->ours_dead += b->dead;
        c->rows += b->loaded + b->dead;
        copy_check_seq(c, b->seq);
    }
    pp_free(seen);
    PQclear(r);
    return PGPIPE_OK;
}

static int copy_op_verify(pgpipe_loader *l, copy_lane *ln, const void *arg, int *transient)
{
    return copy_verify(l, ln, (copy_check *)arg, transient);
}

/* After a lane reconnected (the loader's thread, the lane free): on another
** server than the load began on (a failover), check at once what is still
** there; the end of the load checks again and fills the gap or fails. */
PGPIPE_PRIVATE void copy_after_reconnect(pgpipe_loader *l, copy_lane *ln)
{
    ln->reconnected = 0;
    if (!ln->conn || PQstatus(ln->conn) != CONNECTION_OK ||
        (l->server_id[0] && !strcmp(ln->server_id, l->server_id)))
        return;
    /* the other lanes reconnecting to the same server need not say it again */
    if (ln->server_id[0] && !strcmp(ln->server_id, l->checked_id))
        return;
    snprintf(l->checked_id, sizeof l->checked_id, "%s", ln->server_id);
    copy_check c;
    int t;
    if (copy_verify(l, ln, &c, &t) != PGPIPE_OK)
        return; /* the end of the load checks again */
    if (c.gone)
        pp_logf(PGPIPE_LOG_WARN, "loader", "load %lld: reconnected to another server (%s, the load "
                "began on %s): the load's own pgpipe.loads row is not there (the commit that "
                "registered it was lost), nor %lld committed batch%s (%lld records)", l->load_id,
                ln->server_id[0] ? ln->server_id : "unknown",
                l->server_id[0] ? l->server_id : "unknown", c.batches, c.batches == 1 ? "" : "es",
                c.rows);
    else if (c.batches)
        pp_logf(PGPIPE_LOG_WARN, "loader", "load %lld: reconnected to another server (%s, the load "
                "began on %s): %lld committed batch%s (%lld records) missing there: %s",
                l->load_id, ln->server_id[0] ? ln->server_id : "unknown",
                l->server_id[0] ? l->server_id : "unknown", c.batches, c.batches == 1 ? "" : "es",
                c.rows, c.seqs);
    else
        pp_logf(PGPIPE_LOG_INFO, "loader", "load %lld: reconnected to %s; every committed batch "
                "is there", l->load_id, ln->server_id[0] ? ln->server_id : "a server");
}

/* ---- dead letters --------------------------------------------------------- */

/* Append one dead letter (its COPY text row, built by the DLQ component) to
** the lane's batch; PGPIPE_NOMEM (the caller sets the error) or PGPIPE_OK. */
PGPIPE_PRIVATE int copy_dead(copy_lane *ln, long long line, long long column, long long offset,
                             const char *raw, size_t rawlen, const char *msg, const char *sqlstate,
                             const char *context)
{
    const pp_dlq_load_letter d = { ln->l->source, line, column, offset, ln->l->load_id,
                                   ln->uuid_text, raw, rawlen, msg, sqlstate, context };
    return pp_dlq_load_row(&ln->dbuf, &d);
}

/* ---- loads --------------------------------------------------------------------- */

static int copy_ext_format(const char *name, int *delim)
{
    const char *dot = name ? strrchr(name, '.') : NULL;
    if (!dot)
        return PGPIPE_FORMAT_AUTO;
    if (!strcasecmp(dot, ".csv"))
        return PGPIPE_FORMAT_CSV;
    if (!strcasecmp(dot, ".tsv")) {
        *delim = '\t';
        return PGPIPE_FORMAT_CSV;
    }
    if (!strcasecmp(dot, ".ndjson") || !strcasecmp(dot, ".jsonl"))
        return PGPIPE_FORMAT_NDJSON;
    return PGPIPE_FORMAT_AUTO; /* .json: an array or NDJSON, by the first byte */
}

static int copy_format_ready(pgpipe_loader *l, int delim)
{
    if (l->format != PGPIPE_FORMAT_CSV)
        return PGPIPE_OK;
    pgpipe_csv_options co;
    pgpipe_csv_options_init(&co);
    co.header = 1;
    co.check_names = 1; /* the names are the keys of the record's object */
    co.delimiter = delim;
    co.source = l->source;
    co.max_field_size = l->max_record;
    pgpipe_csv_open_feed(&l->csv, &co);
    return l->csv ? PGPIPE_OK : pp_err_nomem(&l->hdr.err);
}

static void copy_load_free_state(pgpipe_loader *l)
{
    if (l->csv)
        pgpipe_csv_close(l->csv);
    l->csv = NULL;
    copy_csv_keys_free(&l->csv_head);
    l->csv_ready = 0;
    pp_free(l->source);
    pp_free(l->load_key);
    l->source = l->load_key = NULL;
    l->sniff.len = 0;
}

static int copy_load_begin(pgpipe_loader *l, const char *name, const char *path, int fd)
{
    copy_load_free_state(l);
    l->nbooked = 0;
    l->need_reload = 0;
    l->rereadable = 0;
    memset(&l->sum, 0, sizeof l->sum);
    l->t0 = pgpipe_now_us();
    l->in_bytes = 0;
    l->seq = 0;
    copy_framer_begin(l, PGPIPE_FORMAT_NDJSON);
    l->failed = 0;
    l->src_size = l->src_mtime = -1;
    l->load_id = 0;
    l->load_started[0] = '\0';
    l->was_format[0] = '\0';
    l->cur = NULL;
    l->pending = NULL;
    for (int i = 0; i < COPY_MAX_LANES; i++) {
        l->lanes[i].chained = 0;
        copy_batch_reset(&l->lanes[i]);
        l->lanes[i].state = COPY_LANE_FREE;
        l->lanes[i].rc = PGPIPE_OK;
    }
    l->source = pp_strdup(l->opt_source_name ? l->opt_source_name : name);
    if (!l->source)
        return pp_err_nomem(&l->hdr.err);
    struct stat st;
    char key[160];
    key[0] = '\0';
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        l->src_size = (long long)st.st_size;
        l->src_mtime = (long long)st.st_mtime;
        /* the file itself (device, inode), its size and modification time */
        if (path)
            snprintf(key, sizeof key, "file:%llu:%llu:%lld:%lld.%09ld",
                     (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
                     (long long)st.st_size, (long long)st.st_mtime, (long)st.st_mtim.tv_nsec);
    }
    if (l->opt_load_key)
        l->load_key = pp_strdup(l->opt_load_key);
    else if (key[0])
        l->load_key = pp_strdup(key);
    if ((l->opt_load_key || key[0]) && !l->load_key)
        return pp_err_nomem(&l->hdr.err);
    l->batch_rows = l->opt_batch_rows;
    l->batch_bytes = l->opt_batch_bytes;
    int delim = l->csv_delimiter;
    l->format = l->opt_format;
    if (l->format == PGPIPE_FORMAT_AUTO)
        l->format = copy_ext_format(path ? path : name, &delim);
    copy_framer_begin(l, l->format);
    l->csv_delimiter_now = delim;
    int rc = copy_format_ready(l, delim);
    if (rc == PGPIPE_OK && copy_cancelled(l))
        rc = copy_errf(l, PGPIPE_BUSY, "loader: cancelled");
    if (rc == PGPIPE_OK)
        rc = copy_on_main_lane(l, l->max_retries + 1, copy_op_register, NULL);
    l->sum.retries += l->lanes[0].r_retries;
    l->lanes[0].r_retries = 0;
    if (rc != PGPIPE_OK)
        return rc;
    /* the server the load begins on: a lane that reconnects elsewhere checks */
    snprintf(l->server_id, sizeof l->server_id, "%s", l->lanes[0].server_id);
    l->checked_id[0] = '\0';
    l->lanes[0].reconnected = 0;
    l->rereadable = path && fd >= 0 && l->src_size >= 0 && l->load_key;
    copy_lanes_start(l);
    l->active = 1;
    pp_logf(PGPIPE_LOG_INFO, "loader", "load %lld of %s (%s) into %s%s", l->load_id, l->source,
            copy_format_name(l->format), l->target, l->ndone ? ": resuming" : "");
    return PGPIPE_OK;
}

/* The end of an input chunk: a full batch waiting for the next record is
** committed now (a feed returns with its full batches committed). Its
** failure is the chunk's, unless the chunk failed first. */
static int copy_chunk_done(pgpipe_loader *l, int rc)
{
    if (!l->pending)
        return rc;
    pgpipe_error keep = l->hdr.err;
    int prc = copy_batch_close_pending(l, 0);
    if (rc != PGPIPE_OK) {
        l->hdr.err = keep;
        return rc;
    }
    return prc;
}

/* Decide the format from the first bytes that are not whitespace or a BOM:
** '[' a JSON array, '{' NDJSON, unless its first line is only the start of
** one object over several lines (then that object is the one record),
** anything else CSV. at_end: the input is all here. */
static int copy_feed_any(pgpipe_loader *l, const char *data, size_t len, int at_end)
{
    if (l->format != PGPIPE_FORMAT_AUTO) {
        int rc = copy_feed_known(l, data, len, l->in_bytes);
        l->in_bytes += (long long)len;
        return copy_chunk_done(l, rc);
    }
    if (pp_buf_append(&l->sniff, data, len) != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    size_t i = 0;
    const unsigned char *s = (const unsigned char *)l->sniff.data;
    if (l->sniff.len >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3))
        i = 3;
    else if (l->sniff.len < 3 && !memcmp(s, "\xEF\xBB\xBF", l->sniff.len))
        return PGPIPE_OK;
    while (i < l->sniff.len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    if (i == l->sniff.len)
        return l->sniff.len > l->max_record ? copy_errf(l, PGPIPE_PARSE, "loader: %s: no data",
                                                        l->source) : PGPIPE_OK;
    int fmt = s[i] == '[' ? PGPIPE_FORMAT_JSON : s[i] == '{' ? PGPIPE_FORMAT_NDJSON : PGPIPE_FORMAT_CSV;
    if (s[i] == '{') {
        const unsigned char *nl = memchr(s + i, '\n', l->sniff.len - i);
        if (!nl && !at_end && l->sniff.len - i <= l->max_record)
            return PGPIPE_OK; /* the first line's end decides */
        if (nl) {
            const char *f = (const char *)s + i;
            size_t n1 = (size_t)(nl - (s + i));
            const unsigned char *nl2 = memchr(nl + 1, '\n', l->sniff.len - (size_t)(nl + 1 - s));
            if (!nl2 && !at_end && l->sniff.len - i <= l->max_record && json_line_goes_on(f, n1, n1))
                return PGPIPE_OK; /* the second line's end decides */
            size_t n2 = nl2 ? (size_t)(nl2 - (s + i)) : at_end ? l->sniff.len - i : n1;
            if (json_line_goes_on(f, n1, n2))
                fmt = PGPIPE_FORMAT_JSON;
        }
    }
    /* a resumed load skips the batches of the earlier run: only right when
    ** this run reads the input the same way (an earlier version may have
    ** taken it for another format) */
    if (l->ndone && l->was_format[0] && strcmp(l->was_format, "auto") &&
        strcmp(l->was_format, copy_format_name(fmt)))
        return copy_errf(l, PGPIPE_MISUSE, "loader: load %lld of %s ran with format %s; this one "
                         "reads it as %s: resuming it would skip the batches that run committed. To "
                         "load the file again as a new load, give the load another key (.load --key "
                         "NAME; pgpipe_loader_options.load_key)",
                         l->load_id, l->source, l->was_format, copy_format_name(fmt));
    l->format = fmt;
    copy_framer_begin(l, l->format);
    int rc = copy_format_ready(l, l->csv_delimiter_now);
    if (rc != PGPIPE_OK)
        return rc;
    /* the format recorded with the load */
    if (l->lanes[0].conn && !l->cur) {
        char id[32];
        snprintf(id, sizeof id, "%lld", l->load_id);
        const char *v[2] = { id, copy_format_name(l->format) };
        int t;
        copy_exec(&l->lanes[0], "UPDATE pgpipe.loads SET format = $2 WHERE id = $1::bigint", 2, v, NULL, &t);
    }
    pp_buf held = l->sniff;
    memset(&l->sniff, 0, sizeof l->sniff);
    rc = copy_feed_known(l, held.data, held.len, 0);
    l->in_bytes = (long long)held.len;
    pp_buf_free(&held);
    return copy_chunk_done(l, rc);
}

static int copy_op_close(pgpipe_loader *l, copy_lane *ln, const void *arg, int *transient)
{
    copy_rollback(ln);
    /* cancelled (a COMMIT hung waiting for a synchronous standby, say): the
    ** status must not wait for that standby too */
    int cancelled = copy_cancelled(l);
    int rc = cancelled ? copy_exec(ln, PP_BEGIN "; SET LOCAL synchronous_commit = local", 0, NULL,
                                   NULL, transient) : PGPIPE_OK;
    if (rc == PGPIPE_OK)
        rc = copy_exec(ln, "UPDATE pgpipe.loads SET status = $2, error_message = $3, "
                           "error_sqlstate = $4, finished_at = CASE WHEN $2 = 'running' THEN NULL "
                           "ELSE now() END, updated_at = now() WHERE id = $1::bigint AND "
                           COPY_LOAD_STARTED " = $5::bigint", 5, arg, NULL, transient);
    if (rc == PGPIPE_OK && cancelled)
        rc = copy_exec(ln, "COMMIT", 0, NULL, NULL, transient);
    if (rc != PGPIPE_OK)
        copy_rollback(ln);
    return rc;
}

/* Record how the load ended in pgpipe.loads (best effort, with retries). */
static void copy_load_close(pgpipe_loader *l, int code)
{
    const char *status = code == PGPIPE_OK ? "completed" : code == PGPIPE_BUSY ? "interrupted" : "failed";
    char id[32];
    snprintf(id, sizeof id, "%lld", l->load_id);
    /* never the row of another load that has the id now */
    const char *v[5] = { id, status, code == PGPIPE_OK ? NULL : l->hdr.err.message,
                         code == PGPIPE_OK || !l->hdr.err.sqlstate[0] ? NULL : l->hdr.err.sqlstate,
                         l->load_started };
    pgpipe_error keep = l->hdr.err;
    if (l->load_id > 0)
        copy_on_main_lane(l, code == PGPIPE_OK ? l->max_retries + 1 : 3, copy_op_close, v);
    l->sum.retries += l->lanes[0].r_retries;
    l->lanes[0].r_retries = 0;
    l->hdr.err = keep;
    if (code == PGPIPE_OK)
        pgpipe_error_clear(&l->hdr.err);
}

/* The end of a load: are the batches it counts as committed on the server
** it talks to now? Missing ones leave the counts (rows_missing) and fail
** the load with a message naming them; need_reload is set when the input
** can be read again to fill the gap (copy_load_fd_named does). */
static int copy_load_check(pgpipe_loader *l, int rc)
{
    l->need_reload = 0;
    /* a batch hit a foreign key to pgpipe.loads: is the load's own row there? */
    int fk = rc != PGPIPE_OK && !strcmp(l->hdr.err.sqlstate, "23503");
    if (l->load_id <= 0 || (!l->nbooked && !l->ndone && !fk))
        return rc;
    pgpipe_error keep = l->hdr.err;
    copy_check c;
    /* after a failure the check only makes the message better (one try),
    ** unless it decides whether the load can go on: a foreign key to a
    ** loads row a failover may have lost (the connection it runs on may be
    ** one the failover broke while it was idle: a first try can fail) */
    int vrc = copy_on_main_lane(l, rc == PGPIPE_OK || fk ? l->max_retries + 1 : 1, copy_op_verify, &c);
    l->sum.retries += l->lanes[0].r_retries;
    l->lanes[0].r_retries = 0;
    if (vrc != PGPIPE_OK) {
        if (rc != PGPIPE_OK) {
            l->hdr.err = keep;
            return rc;
        }
        /* not known to be there is not a success */
        return copy_errf(l, vrc, "loader: load %lld: cannot check that its committed batches "
                         "are on the server: %s", l->load_id, l->lanes[0].err.message);
    }
    l->hdr.err = keep;
    if (!c.batches && !c.gone)
        return rc;
    l->sum.rows_loaded -= c.ours_loaded;
    l->sum.rows_dead -= c.ours_dead;
    l->sum.batches -= c.ours;
    l->sum.rows_skipped -= c.theirs_rows;
    l->sum.batches_skipped -= c.batches - c.ours;
    l->sum.batches_missing = c.batches;
    l->sum.rows_missing = c.rows;
    const char *now_id = l->lanes[0].server_id;
    char moved[300] = "";
    if (strcmp(now_id, l->server_id) != 0)
        snprintf(moved, sizeof moved, " (the load began on server %s, it is on %s now: a "
                 "failover to a replica that had not received them)",
                 l->server_id[0] ? l->server_id : "unknown", now_id[0] ? now_id : "unknown");
    if (c.gone && (rc == PGPIPE_OK || fk)) {
        /* the row was committed before any batch of the load: what lost it
        ** lost them all (or they were refused), so nothing of the load is
        ** there and a new load reads everything again */
        l->need_reload = l->rereadable && !l->reloading;
        rc = copy_errf(l, PGPIPE_DB, "loader: load %lld of %s: its row in pgpipe.loads is not on "
                       "the server now, nor the %lld batch%s (%lld records) it had committed: the "
                       "commit that registered the load was lost%s; run the same load again: it "
                       "registers the load anew and loads every record", l->load_id, l->source,
                       c.batches, c.batches == 1 ? "" : "es", c.rows,
                       moved[0] ? moved : " (a crash of a server with synchronous_commit off, or "
                       "a failover to a replica that had not received it)");
        if (l->need_reload)
            pp_logf(PGPIPE_LOG_WARN, "loader", "%s; reading %s again as a new load",
                    l->hdr.err.message, l->source);
        return rc;
    }
    char how[400];
    if (l->opt_load_key)
        snprintf(how, sizeof how, "run the same load again with the same key (--key %.200s): it "
                 "loads exactly the missing batches", l->opt_load_key);
    else if (l->load_key)
        snprintf(how, sizeof how, "run the same load of the unchanged file again: it loads "
                 "exactly the missing batches");
    else
        snprintf(how, sizeof how, "this load has no key, so a new run cannot skip the batches "
                 "that are there: give a key (--key) to loads from streams");
    if (rc != PGPIPE_OK) {
        pp_logf(PGPIPE_LOG_WARN, "loader", "load %lld: %lld committed batch%s (%lld records) "
                "missing on the server%s: batch%s %s%s", l->load_id, c.batches,
                c.batches == 1 ? "" : "es", c.rows, moved, c.batches == 1 ? "" : "es", c.seqs,
                c.gone ? "; its pgpipe.loads row is not there either" : "");
        l->hdr.err = keep;
        return rc;
    }
    l->need_reload = l->rereadable && !l->reloading;
    rc = copy_errf(l, PGPIPE_DB, "loader: load %lld of %s: %lld committed batch%s (%lld "
                   "records) %s not on the server now%s: batch%s %s; %s", l->load_id, l->source,
                   c.batches, c.batches == 1 ? "" : "es", c.rows, c.batches == 1 ? "is" : "are",
                   moved, c.batches == 1 ? "" : "es", c.seqs, how);
    if (l->need_reload)
        pp_logf(PGPIPE_LOG_WARN, "loader", "%s; reading %s again to load them", l->hdr.err.message,
                l->source);
    return rc;
}

/* A regular file ended before the size it had when the load began: it was
** truncated (or replaced) while it was read. Its end is not the end of the
** data, so the load fails before the records read last are committed: the
** last record may be cut, and what followed it is not known. */
static int copy_shrank(pgpipe_loader *l, int fd, long long ended, long long size)
{
    struct stat st;
    char now[64] = "";
    if (fstat(fd, &st) == 0)
        snprintf(now, sizeof now, "; it has %lld bytes now", (long long)st.st_size);
    return pp_err_at(&l->hdr.err, PGPIPE_IO, l->source, 0, 0, ended,
                     "loader: %s shrank while it was read: it had %lld bytes when the load began, "
                     "and ended after %lld%s (truncated or rewritten during the load); the records "
                     "read since the last committed batch are not loaded", l->source, size, ended,
                     now);
}

static int copy_load_pass(pgpipe_loader *l, int fd, const char *name, const char *path)
{
    int rc = copy_load_begin(l, name, path, fd);
    if (rc != PGPIPE_OK)
        return rc;
    /* a regular file holds, from where it is read, the size it had at the
    ** start of the load (fstat, recorded as the load's source_size) */
    long long at = l->src_size >= 0 ? (long long)lseek(fd, 0, SEEK_CUR) : -1;
    long long expect = at >= 0 && at <= l->src_size ? l->src_size - at : -1, got = 0;
    char *buf = pp_malloc(COPY_READ_CHUNK);
    if (!buf)
        rc = pp_err_nomem(&l->hdr.err);
    while (rc == PGPIPE_OK) {
        ssize_t n = read(fd, buf, COPY_READ_CHUNK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = pp_err_at(&l->hdr.err, PGPIPE_IO, l->source, 0, 0, l->in_bytes,
                           "loader: reading %s: %s", l->source, strerror(errno));
            break;
        }
        if (n == 0) {
            if (got < expect)
                rc = copy_shrank(l, fd, at + got, at + expect);
            break;
        }
        got += n;
        rc = copy_feed_any(l, buf, (size_t)n, 0);
    }
    pp_free(buf);
    l->failed = rc;
    return pgpipe_loader_finish(l);
}

/* A load of a file whose committed batches a failover lost is resumed at
** once, on the same file (unchanged: same size and time): the resume skips
** the batches the server has and loads exactly the missing ones. The
** summary is that of the whole: the first pass's batches that stayed, and
** the second's (batches_reloaded). */
static int copy_load_fd_named(pgpipe_loader *l, int fd, const char *name, const char *path)
{
    int rc = copy_load_pass(l, fd, name, path);
    if (!l->need_reload)
        return rc;
    l->need_reload = 0;
    pgpipe_load_summary a = l->sum;
    struct stat st;
    if (lseek(fd, 0, SEEK_SET) != 0 || fstat(fd, &st) != 0 || (long long)st.st_size != l->src_size ||
        (long long)st.st_mtime != l->src_mtime) {
        pp_logf(PGPIPE_LOG_WARN, "loader", "%s changed or cannot be read again: its missing "
                "batches are not reloaded", l->source);
        return rc;
    }
    l->reloading = 1;
    rc = copy_load_pass(l, fd, name, path);
    l->reloading = 0;
    pgpipe_load_summary b = l->sum;
    l->sum.rows_loaded = b.rows_loaded + a.rows_loaded;
    l->sum.rows_dead = b.rows_dead + a.rows_dead;
    l->sum.rows_skipped = b.rows_skipped - (a.rows_loaded + a.rows_dead);
    l->sum.batches = b.batches + a.batches;
    l->sum.batches_skipped = b.batches_skipped - a.batches;
    l->sum.batches_reloaded = b.batches;
    l->sum.retries = a.retries + b.retries;
    l->sum.batches_at_cancel = a.batches_at_cancel + b.batches_at_cancel;
    l->sum.seconds = a.seconds + b.seconds;
    l->sum.rows_per_sec = l->sum.seconds > 0 ? (double)l->sum.records_read / l->sum.seconds : 0;
    if (rc == PGPIPE_OK)
        pp_logf(PGPIPE_LOG_WARN, "loader", "load %lld: the %lld missing batch%s loaded again",
                l->load_id, b.batches, b.batches == 1 ? "" : "es");
    return rc;
}

/* ---- public API ------------------------------------------------------------- */

/* arg: the install_schema option */
static int copy_op_install(pgpipe_loader *l, copy_lane *ln, const void *arg, int *transient)
{
    (void)l;
    if (!*(const int *)arg)
        return PGPIPE_OK;
    int rc = pgpipe_schema_install(ln->conn, NULL, &ln->err);
    if (rc != PGPIPE_OK)
        *transient = pgpipe_sqlstate_is_transient(ln->err.sqlstate) ||
                     PQstatus(ln->conn) != CONNECTION_OK;
    return rc;
}

static int copy_loader_open(pgpipe_loader *l, const pgpipe_loader_options *o);

int pgpipe_loader_open(pgpipe_loader **out, const pgpipe_loader_options *o)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_loader *l = *out = pp_handle_new(sizeof *l);
    if (!l)
        return PGPIPE_NOMEM;
    int rc = copy_loader_open(l, o);
    if (rc != PGPIPE_OK) {
        l->not_open = 1;
        snprintf(l->open_msg, sizeof l->open_msg, "%.500s",
                 l->hdr.err.message[0] ? l->hdr.err.message : pgpipe_errstr(rc));
    }
    return rc;
}

static int copy_loader_open(pgpipe_loader *l, const pgpipe_loader_options *o)
{
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
#endif
    for (int i = 0; i < COPY_MAX_LANES; i++)
        l->lanes[i].l = l;
    l->nlanes = 1;
    if (!o)
        return copy_errf(l, PGPIPE_MISUSE, "loader: no options");
    if (o->connections < 1 || o->connections > COPY_MAX_LANES)
        return copy_errf(l, PGPIPE_MISUSE, "loader: connections must be 1 to %d, not %d",
                         COPY_MAX_LANES, o->connections);
    if (o->batch_rows <= 0 || o->batch_bytes == 0 || o->max_record_bytes == 0 || o->max_retries < 0)
        return copy_errf(l, PGPIPE_MISUSE, "loader: batch_rows, batch_bytes and max_record_bytes must "
                         "be positive (did you call pgpipe_loader_options_init?)");
    if (o->format < PGPIPE_FORMAT_AUTO || o->format > PGPIPE_FORMAT_JSON)
        return copy_errf(l, PGPIPE_MISUSE, "loader: unknown format %d", o->format);
    /* "" is no value and no field: a script's unset $SOURCE must not stage
    ** rows with an empty source (or make a load key of nothing) */
    {
        const char *const vals[] = { o->source_value, o->event_type_value, o->source_field,
                                     o->event_type_field, o->payload_field, o->received_at_field,
                                     o->load_key, o->target };
        static const char *const names[] = { "source", "event type", "source field",
                                             "event type field", "payload field",
                                             "received_at field", "load key", "target table" };
        int i = pp_first_empty(vals, (int)(sizeof vals / sizeof vals[0]));
        if (i >= 0)
            return copy_errf(l, PGPIPE_MISUSE, "loader: the %s is empty; leave it out (NULL) for "
                             "the default", names[i]);
    }
    if (o->nrequired < 0 || (o->nrequired > 0 && !o->required))
        return copy_errf(l, PGPIPE_MISUSE, "loader: %d required fields%s", o->nrequired,
                         o->nrequired < 0 ? " (a count below 0)" : " named by a NULL required list");
    if (o->csv_delimiter <= 0 || o->csv_delimiter > 255 || o->csv_delimiter == '"' ||
        o->csv_delimiter == '\n' || o->csv_delimiter == '\r')
        return copy_errf(l, PGPIPE_MISUSE, "loader: bad CSV delimiter");
    l->opt_format = o->format;
    l->csv_delimiter = o->csv_delimiter;
    l->max_record = o->max_record_bytes;
    l->opt_batch_rows = o->batch_rows;
    l->opt_batch_bytes = o->batch_bytes;
    l->max_retries = o->max_retries;
    l->progress = o->progress;
    l->progress_ud = o->progress_ud;
    l->borrowed = o->conn;
    l->pool = o->pool;
    /* a borrowed connection is one lane; without threads there is one */
#ifndef PGPIPE_OMIT_THREADS
    l->nlanes = o->conn ? 1 : o->connections;
#endif
    int nomem = 0;
#define COPY_DUP(dst, src) do { if (src) { dst = pp_strdup(src); nomem |= !dst; } } while (0)
    COPY_DUP(l->conninfo, o->conninfo);
    COPY_DUP(l->opt_source_name, o->source_name);
    COPY_DUP(l->channel, o->notify_channel ? o->notify_channel : "");
    COPY_DUP(l->opt_load_key, o->load_key);
    COPY_DUP(l->target, o->target ? o->target : "staging.raw_events");
#undef COPY_DUP
    if (nomem)
        return pp_err_nomem(&l->hdr.err);
    int rc = copy_build_mapping(l, o);
    if (rc != PGPIPE_OK)
        return rc;
    /* required fields; for staging.raw_events the record fields that feed the
    ** NOT NULL columns source and event_type are required too */
    int nreq = o->nrequired;
    l->required = pp_calloc((size_t)nreq + 3, sizeof *l->required);
    l->req_idx = pp_calloc((size_t)nreq + 3, sizeof *l->req_idx);
    if (!l->required || !l->req_idx)
        return pp_err_nomem(&l->hdr.err);
    for (int i = 0; i < nreq; i++) {
        if (!o->required[i] || !*o->required[i])
            return copy_errf(l, PGPIPE_MISUSE, "loader: required field %d has no name", i + 1);
        if (!(l->required[l->nrequired++] = pp_strdup(o->required[i])))
            return pp_err_nomem(&l->hdr.err);
    }
    if (!o->target)
        for (int i = 0; i < 2; i++)
            if (l->cols[i].kind == COPY_K_FIELD &&
                !(l->required[l->nrequired++] = pp_strdup(l->cols[i].field)))
                return pp_err_nomem(&l->hdr.err);
    if (pgpipe_json_doc_open(&l->doc) != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    /* connect now (a bad conninfo fails here), installing the schema */
    return copy_on_main_lane(l, l->max_retries + 1, copy_op_install, &o->install_schema);
}

int pgpipe_loader_feed(pgpipe_loader *l, const void *buf, size_t len)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (l->not_open)
        return copy_refuse_unopened(l);
    if (!buf && len)
        return copy_errf(l, PGPIPE_MISUSE, "loader: feed of %zu bytes from NULL", len);
    int rc;
    if (!l->active) {
        rc = copy_load_begin(l, "<buffer>", NULL, -1);
        if (rc != PGPIPE_OK) {
            return rc;
        }
    }
    if (l->failed)
        return l->failed;
    rc = copy_feed_any(l, buf, len, 0);
    if (rc != PGPIPE_OK)
        l->failed = rc;
    return rc;
}

/* A load stopped by its input (a broken JSON array, a truncated file) after
** batches were committed: they stay, and the error says so, and how to go
** on after them once the input is fixed. A fixed file has another size and
** time, so its default key is another: a run without --key would be a new
** load of every record (copy_load_register_locked refuses it). */
static void copy_fail_note(pgpipe_loader *l)
{
    long long batches = l->sum.batches + (long long)l->ndone;
    long long records = l->sum.rows_loaded + l->sum.rows_dead;
    for (size_t i = 0; i < l->ndone; i++)
        records += l->done_rows[i];
    if (batches <= 0 || l->load_id <= 0)
        return;
    char note[700];
    if (l->load_key)
        snprintf(note, sizeof note, "; load %lld has %lld record%s committed in %lld batch%s, "
                 "which stay: once the input is fixed (the records before the error unchanged), "
                 "run it again with --key %.300s (pgpipe_loader_options.load_key) to go on after "
                 "them", l->load_id, records, records == 1 ? "" : "s", batches,
                 batches == 1 ? "" : "es", l->load_key);
    else
        snprintf(note, sizeof note, "; load %lld has %lld record%s committed in %lld batch%s, which "
                 "stay; it has no key (a stream), so running it again loads them again: give "
                 "streams a key (--key NAME) to resume them", l->load_id, records,
                 records == 1 ? "" : "s", batches, batches == 1 ? "" : "es");
    size_t n = strlen(l->hdr.err.message);
    snprintf(l->hdr.err.message + n, sizeof l->hdr.err.message - n, "%s", note);
}

/* A resumed load whose input ended before the end of the batches an
** earlier run committed: inside one (fewer records than it held) or before
** the last one. The input is shorter than the one loaded then (truncated,
** or another input under the same key): the load fails, and the batch read
** last is not committed. (An input that ends exactly where the earlier run
** ended, or goes on past it, is fine: its new records are loaded.) */
static int copy_ended_short(pgpipe_loader *l)
{
    if (!l->ndone)
        return PGPIPE_OK;
    long long last = l->done_seqs[l->ndone - 1], records = 0;
    const copy_lane *ln = l->cur;
    if (!(ln && ln->skipping && ln->b_read < ln->skip_rows) && l->seq >= last)
        return PGPIPE_OK;
    for (size_t i = 0; i < l->ndone; i++)
        records += l->done_rows[i];
    return pp_err_at(&l->hdr.err, PGPIPE_IO, l->source, 0, 0, l->in_bytes,
                     "loader: %s ends after %lld records, inside what load %lld committed of it "
                     "(%lld records in %zu batches, up to batch %lld): the input is shorter than "
                     "the one loaded then (truncated, or another input under the same key); "
                     "nothing more is loaded", l->source, l->sum.records_read, l->load_id, records,
                     l->ndone, last);
}

int pgpipe_loader_finish(pgpipe_loader *l)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (l->not_open)
        return copy_refuse_unopened(l);
    if (!l->active)
        return l->failed ? l->failed : copy_errf(l, PGPIPE_MISUSE, "loader: no load to finish");
    int rc = l->failed;
    if (rc == PGPIPE_OK && l->format == PGPIPE_FORMAT_AUTO && l->sniff.len)
        rc = copy_feed_any(l, "", 0, 1); /* one line that waited for its end decides now */
    if (rc == PGPIPE_OK && l->format == PGPIPE_FORMAT_AUTO && l->sniff.len) {
        /* only whitespace so far: nothing to load */
        l->sniff.len = 0;
    }
    if (rc == PGPIPE_OK) {
        switch (l->format) {
        case PGPIPE_FORMAT_CSV:
            if (pgpipe_csv_feed_end(l->csv) != PGPIPE_OK)
                rc = pp_err_nomem(&l->hdr.err);
            else
                rc = copy_csv_drain(l);
            break;
        case PGPIPE_FORMAT_NDJSON:
        case PGPIPE_FORMAT_JSON: rc = copy_json_end(l); break;
        default: break;
        }
    }
    if (rc == PGPIPE_OK)
        rc = copy_ended_short(l);
    if (rc == PGPIPE_OK)
        rc = copy_batch_end(l);
    rc = copy_chunk_done(l, rc);
    /* every batch handed over is committed (or failed) before the load ends */
    pgpipe_error keep = l->hdr.err;
    int lrc = copy_lanes_collect(l, NULL, 1);
    if (rc != PGPIPE_OK)
        l->hdr.err = keep;
    else
        rc = lrc;
    copy_lanes_stop(l);
    /* a batch stopped half-way: its streamed COPY is abandoned; a COPY the
    ** last commit began for a batch that never came ends empty */
    copy_stream_close(l);
    rc = copy_load_check(l, rc);
    if (rc == PGPIPE_PARSE || rc == PGPIPE_IO)
        copy_fail_note(l);
    copy_load_close(l, rc);
    copy_report(l);
    l->sum.load_id = l->load_id;
    l->sum.status = rc;
    l->active = 0;
    l->failed = 0;
    for (int i = 0; i < COPY_MAX_LANES; i++)
        copy_batch_reset(&l->lanes[i]);
    if (rc == PGPIPE_OK)
        pp_logf(PGPIPE_LOG_INFO, "loader", "load %lld done: %lld read, %lld loaded, %lld dead-lettered",
                l->load_id, l->sum.records_read, l->sum.rows_loaded, l->sum.rows_dead);
    return rc;
}

int pgpipe_loader_load_fd(pgpipe_loader *l, int fd, const char *name)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (l->not_open)
        return copy_refuse_unopened(l);
    if (fd < 0)
        return copy_errf(l, PGPIPE_MISUSE, "loader: load_fd needs an open file descriptor, not %d", fd);
    if (l->active)
        return copy_errf(l, PGPIPE_MISUSE, "loader: a fed load is still open (call pgpipe_loader_finish)");
    return copy_load_fd_named(l, fd, name ? name : "<stdin>", NULL);
}

int pgpipe_loader_load_file(pgpipe_loader *l, const char *path)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (l->not_open)
        return copy_refuse_unopened(l);
    if (!path)
        return copy_errf(l, PGPIPE_MISUSE, "loader: load_file needs a path, not NULL");
    if (l->active)
        return copy_errf(l, PGPIPE_MISUSE, "loader: a fed load is still open (call pgpipe_loader_finish)");
    if (!strcmp(path, "-"))
        return copy_load_fd_named(l, 0, "<stdin>", NULL);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return pp_err_at(&l->hdr.err, PGPIPE_IO, path, 0, 0, 0, "loader: cannot open %s: %s", path,
                         strerror(errno));
    int rc = copy_load_fd_named(l, fd, path, path);
    close(fd);
    return rc;
}

int pgpipe_loader_summary(const pgpipe_loader *l, pgpipe_load_summary *out)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC || !out || l->not_open)
        return PGPIPE_MISUSE;
    *out = l->sum;
    out->load_id = l->load_id;
    if (l->active) {
        out->seconds = (double)(pgpipe_now_us() - l->t0) / 1e6;
        out->bytes = l->in_bytes;
        out->rows_per_sec = out->seconds > 0 ? (double)out->records_read / out->seconds : 0;
    }
    return PGPIPE_OK;
}

int pgpipe_load_summary_format(const pgpipe_load_summary *s, char *buf, size_t size)
{
    if (!s)
        return snprintf(buf, size, "no load");
    int n = snprintf(buf, size, "read %lld, loaded %lld, dead-lettered %lld", s->records_read,
                     s->rows_loaded, s->rows_dead);
    char more[256];
    int m = snprintf(more, sizeof more, "%s%lld%s, %lld batches, %.2f s, %.0f rows/s",
                     s->rows_skipped ? ", skipped (loaded before) " : "",
                     s->rows_skipped, "", s->batches, s->seconds, s->rows_per_sec);
    if (!s->rows_skipped) {
        m = snprintf(more, sizeof more, ", %lld batches, %.2f s, %.0f rows/s", s->batches,
                     s->seconds, s->rows_per_sec);
    }
    if (s->batches_reloaded || s->batches_missing)
    {
        size_t k = m >= 0 && (size_t)m < sizeof more ? (size_t)m : sizeof more - 1;
        if (s->batches_missing)
            m += snprintf(more + k, sizeof more - k, ", MISSING %lld (in %lld committed batches)",
                          s->rows_missing, s->batches_missing);
        else
            m += snprintf(more + k, sizeof more - k, ", %lld batches lost in a failover loaded again",
                          s->batches_reloaded);
    }
    if (n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, "%s", more);
    return n + m;
}

PGconn *pgpipe_loader_conn(pgpipe_loader *l)
{
    return l && l->hdr.magic == PP_HANDLE_MAGIC && !l->not_open ? l->lanes[0].conn : NULL;
}

void pgpipe_loader_close(pgpipe_loader *l)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC)
        return;
    if (l->active)
        pgpipe_loader_finish(l);
    copy_load_free_state(l);
    for (int i = 0; i < COPY_MAX_LANES; i++) {
        copy_lane *ln = &l->lanes[i];
        if (ln->copy_open)
            copy_abandon(ln);
        if (l->borrowed)
            ln->conn = NULL;
        else
            copy_drop_conn(ln, 0);
        pp_cancel_arm(&ln->cancel, NULL);
        pp_free(ln->rows);
        pp_buf_free(&ln->cbuf);
        pp_buf_free(&ln->rbuf);
        pp_buf_free(&ln->dbuf);
    }
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
#endif
    for (int i = 0; i < l->ncols; i++) {
        pp_free(l->cols[i].column);
        pp_free(l->cols[i].field);
        pp_free(l->cols[i].value);
        pp_free(l->cols[i].raw_value);
    }
    pp_free(l->cols);
    for (int i = 0; i < l->nrequired; i++)
        pp_free(l->required[i]);
    pp_free(l->required);
    pp_free(l->req_idx);
    pp_free(l->conninfo);
    pp_free(l->opt_source_name);
    pp_free(l->target);
    pp_free(l->target_sql);
    pp_free(l->channel);
    pp_free(l->opt_load_key);
    pp_free(l->copy_sql);
    pp_free(l->copy_sql_bin);
    pp_free(l->done_seqs);
    pp_free(l->done_rows);
    pp_free(l->booked);
    framer_free(&l->fr);
    pp_buf_free(&l->sniff);
    pp_buf_free(&l->scratch);
    pp_buf_free(&l->jscratch[0]);
    pp_buf_free(&l->jscratch[1]);
    pgpipe_json_doc_close(l->doc);
    l->hdr.magic = 0;
    pp_free(l);
}
