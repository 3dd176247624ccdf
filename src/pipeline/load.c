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
** With several connections (lanes, below) the batch is not streamed while it
** fills: the caller's thread fills a free lane and hands it to the lane's
** thread, which sends, books and commits it on the lane's connection while
** the next batch is read into another lane.
*/

#include "pp_pipeline.h"

/* CopyData messages stay well under a Unix socket's buffer: the server reads
** a whole message before it parses any of it, so a message larger than the
** buffer keeps it waiting for the rest (256 KiB ones cost a tenth here). */
#define COPY_SEND_CHUNK (32 * 1024)
#define COPY_READ_CHUNK (256 * 1024)

/* where a column value comes from */
enum { COPY_K_FIELD, COPY_K_FIXED, COPY_K_NULL, COPY_K_RECORD, COPY_K_LINE, COPY_K_SOURCE,
       COPY_K_BATCH, COPY_K_LOAD };

typedef struct copy_col {
    char *column;
    int kind;
    char *field;    /* COPY_K_FIELD */
    int is_path;    /* field holds '.' or '[' */
    char *value;    /* COPY_K_FIXED, COPY-escaped */
    char *raw_value;/* COPY_K_FIXED as given (for the load's recorded mapping) */
    int csv_idx;    /* index of the field in the CSV header */
    int json;       /* the value is JSON (validated for CSV) */
} copy_col;

typedef struct copy_row {
    size_t coff;        /* offset of its COPY text in l->cbuf */
    size_t roff;        /* offset of its raw text in l->rbuf */
    long long line;
    long long offset;
    int bad;            /* rejected by the server */
} copy_row;

/* A lane: one connection and the batch on it. The loader's thread fills a
** lane's batch (streaming it into the lane's COPY as it grows), then hands
** the lane over to commit it: with several lanes each has a thread that
** ends the COPY, books and commits while the loader fills the next lane,
** so the server runs one COPY per lane side by side. Everything a commit
** touches is the lane's own; its outcome (counts, error) is folded into the
** loader's summary by the loader's thread. */
enum { COPY_LANE_FREE, COPY_LANE_QUEUED, COPY_LANE_DONE };
#define COPY_MAX_LANES 8

typedef struct copy_lane {
    struct pgpipe_loader *l;
    /* connection */
    PGconn *conn;
    pgpipe_conn *pconn;
    int own_conn;
    int connected_once;
    pgpipe_error err;     /* of this lane's connection and batch */
    /* the batch */
    long long seq;
    int skipping;         /* committed by an earlier run: counted, not sent */
    unsigned char uuid[16];
    char uuid_text[37];
    pp_buf cbuf;          /* COPY text of the batch */
    pp_buf rbuf;          /* raw text of the rows */
    pp_buf dbuf;          /* COPY text of dead letters (pgpipe.dead_letters) */
    size_t dbuf_valid;    /* dead letters of validation (before isolation) */
    copy_row *rows;
    size_t nrows, caprows;
    long long b_read, b_dead_valid, b_dead_srv, b_bytes;
    long long b_first_line, b_last_line, b_start_off, b_end_off;
    int copy_open;        /* streaming COPY of the batch in progress */
    int stream_broken;    /* streaming failed: resend at the end */
    size_t sent;          /* bytes of cbuf sent by the streaming COPY */
    /* the commit's outcome, for the loader's thread to fold */
    int state;            /* COPY_LANE_*, under the loader's mutex */
    int rc;
    long long r_retries, r_loaded, r_dead, r_batches, r_skipped_rows, r_skipped_batches;
#ifndef PGPIPE_OMIT_THREADS
    pthread_t tid;
#endif
} copy_lane;

struct pgpipe_loader {
    pp_handle hdr;
    /* options */
    char *conninfo;
    PGconn *borrowed;
    pgpipe_pool *pool;
    int opt_format;
    char *opt_source_name;
    char *target;         /* as given, for messages and NOTIFY */
    char *target_sql;     /* quoted */
    copy_col *cols;
    int ncols;
    char **required;
    int *req_idx;
    int nrequired;
    int csv_delimiter;
    int csv_delimiter_now;
    size_t max_record;
    int opt_batch_rows;
    size_t opt_batch_bytes;
    char *channel;
    int max_retries;
    char *opt_load_key;
    pgpipe_load_progress_fn progress;
    void *progress_ud;
    char *copy_sql;
    int urandom;
    /* lanes: lanes[0] is also the connection of the load's own bookkeeping */
    copy_lane lanes[COPY_MAX_LANES];
    int nlanes;           /* configured */
    int threaded;         /* the lanes' threads run (this load) */
    int quit;             /* the lanes' threads should end */
    copy_lane *cur;       /* the lane being filled, NULL between batches */
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
    /* the load */
    int active;
    int failed;           /* the load stopped: further feeds return this */
    int format;
    char *source;         /* source name of this load */
    char *load_key;
    long long src_size;   /* -1 unknown */
    long long src_mtime;  /* seconds, -1 unknown */
    long long load_id;
    int batch_rows;
    size_t batch_bytes;
    long long *done_seqs; /* committed by earlier runs, sorted */
    size_t ndone;
    int64_t t0;
    long long in_bytes;   /* input bytes consumed so far */
    long long seq;        /* of the last batch begun */
    pgpipe_load_summary sum;
    /* splitting */
    pp_buf carry;         /* a record straddling chunks */
    long long carry_line, carry_off;
    int carry_over;       /* the record went past max_record */
    long long line_no;    /* lines started (NDJSON) / newlines seen (JSON) */
    int bom_pos;          /* bytes of a UTF-8 BOM matched at the stream start */
    pp_buf sniff;         /* input held until the format is known */
    int js_state;         /* JSON array splitter state */
    int js_depth, js_instr, js_esc, js_scalar;
    long long js_nl_off;  /* JSON array: offset of the current line's first byte */
    long long js_cont;    /* UTF-8 continuation bytes seen on the current line */
    long long carry_col;  /* JSON array: characters before the element on its line */
    pgpipe_csv *csv;
    int csv_ready;
    pp_buf *csv_keys;     /* per header column: "key": JSON + COPY escaped */
    int ncsv_keys;
    pgpipe_json_doc *doc;
    pp_buf scratch;
    pgpipe_error verr;
};

/* ---- small helpers ------------------------------------------------------ */

static int copy_errf(pgpipe_loader *l, int code, const char *fmt, ...) PP_PRINTF(3, 4);
static int copy_errf(pgpipe_loader *l, int code, const char *fmt, ...)
{
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pp_err(&l->hdr.err, code, "%s", msg);
}

/* COPY text escaping: backslash, tab, LF, CR. */
static const unsigned char copy_esc_tab[256] = {
    ['\\'] = '\\', ['\t'] = 't', ['\n'] = 'n', ['\r'] = 'r',
};

static int copy_put_esc(pp_buf *b, const char *s, size_t n)
{
    if (pp_buf_reserve(b, n + 16) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    size_t i = 0, run = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (PP_LIKELY(!copy_esc_tab[c])) {
            i++;
            continue;
        }
        size_t k = i - run;
        if (pp_buf_reserve(b, k + 2 + (n - i)) != PGPIPE_OK)
            return PGPIPE_NOMEM;
        memcpy(b->data + b->len, s + run, k);
        b->len += k;
        b->data[b->len++] = '\\';
        b->data[b->len++] = (char)copy_esc_tab[c];
        run = ++i;
    }
    return pp_buf_append(b, s + run, n - run);
}

/* A string as a JSON string literal ("..."), then COPY-escaped, in one pass. */
static int copy_put_json_str(pp_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (pp_buf_reserve(b, n + 2) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    b->data[b->len++] = '"';
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (PP_LIKELY(c >= 0x20 && c != '"' && c != '\\'))
            continue;
        if (pp_buf_append(b, s + run, i - run) != PGPIPE_OK || pp_buf_reserve(b, 8) != PGPIPE_OK)
            return PGPIPE_NOMEM;
        char *w = b->data + b->len;
        /* JSON escape, with its backslash doubled for COPY */
        *w++ = '\\';
        *w++ = '\\';
        switch (c) {
        case '"': *w++ = '"'; break;
        case '\\': *w++ = '\\'; *w++ = '\\'; break;
        case '\n': *w++ = 'n'; break;
        case '\r': *w++ = 'r'; break;
        case '\t': *w++ = 't'; break;
        default:
            *w++ = 'u'; *w++ = '0'; *w++ = '0';
            *w++ = hex[c >> 4]; *w++ = hex[c & 15];
        }
        b->len = (size_t)(w - b->data);
        run = i + 1;
    }
    if (pp_buf_append(b, s + run, n - run) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    return pp_buf_putc(b, '"');
}

/* 1 when s holds no NUL and is valid UTF-8. */
PGPIPE_PRIVATE int copy_utf8_ok(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            /* all ASCII and no zero byte */
            if (!(w & 0x8080808080808080ull) &&
                !((w - 0x0101010101010101ull) & ~w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        unsigned char c = s[i];
        if (c == 0)
            return 0;
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { k = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { k = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { k = 3; cp = c & 0x07; }
        else return 0;
        if (i + 1 + k > n)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            unsigned char d = s[i + j];
            if ((d & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (d & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += 1 + k;
    }
    return 1;
}

/* Length of a valid UTF-8 sequence at s (n bytes left), 0 when invalid/NUL. */
PGPIPE_PRIVATE size_t copy_utf8_seq(const unsigned char *s, size_t n)
{
    size_t k = s[0] < 0x80 ? 0 : s[0] >= 0xC2 && s[0] <= 0xDF ? 1 : s[0] >= 0xE0 && s[0] <= 0xEF ? 2
             : s[0] >= 0xF0 && s[0] <= 0xF4 ? 3 : 9;
    if (s[0] == 0 || k == 9 || k + 1 > n)
        return 0;
    return copy_utf8_ok(s, k + 1) ? k + 1 : 0;
}

/* Quote "schema.table" or "table" (parts may already be in double quotes). */
static int copy_quote_ident_path(pp_buf *out, const char *name)
{
    const char *p = name;
    int parts = 0;
    while (*p) {
        if (parts++ && pp_buf_putc(out, '.') != PGPIPE_OK)
            return PGPIPE_NOMEM;
        pp_buf_putc(out, '"');
        if (*p == '"') {
            p++;
            while (*p) {
                if (*p == '"') {
                    if (p[1] == '"') { pp_buf_append(out, "\"\"", 2); p += 2; continue; }
                    p++;
                    break;
                }
                pp_buf_putc(out, *p++);
            }
        } else {
            while (*p && *p != '.') {
                if (*p == '"')
                    pp_buf_putc(out, '"');
                pp_buf_putc(out, *p++);
            }
        }
        if (pp_buf_putc(out, '"') != PGPIPE_OK)
            return PGPIPE_NOMEM;
        if (*p == '.')
            p++;
        else if (*p)
            return PGPIPE_MISUSE;
    }
    return parts ? PGPIPE_OK : PGPIPE_MISUSE;
}

static int copy_fill_random(pgpipe_loader *l, unsigned char *out, size_t n)
{
    size_t got = 0;
    if (l->urandom >= 0) {
        while (got < n) {
            ssize_t r = read(l->urandom, out + got, n - got);
            if (r <= 0) {
                if (r < 0 && errno == EINTR)
                    continue;
                break;
            }
            got += (size_t)r;
        }
    }
    if (got < n) { /* no /dev/urandom: the library's seeded generator */
        uint64_t s = pp_rand_seed();
        for (; got < n; got++)
            out[got] = (unsigned char)(pp_rand_next(&s) >> 24);
    }
    return PGPIPE_OK;
}

/* A UUID version 7: 48-bit Unix time in ms, then 74 random bits. */
static void copy_new_uuid(pgpipe_loader *l, copy_lane *ln)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char *u = ln->uuid;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    copy_fill_random(l, u + 6, 10);
    for (int i = 0; i < 6; i++)
        u[i] = (unsigned char)(ms >> (40 - 8 * i));
    u[6] = (unsigned char)(0x70 | (u[6] & 0x0F));
    u[8] = (unsigned char)(0x80 | (u[8] & 0x3F));
    char *w = ln->uuid_text;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *w++ = '-';
        *w++ = hex[u[i] >> 4];
        *w++ = hex[u[i] & 15];
    }
    *w = '\0';
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
    if (copy_put_esc(&b, s, strlen(s)) != PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK) {
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
        for (int i = 0; i < o->ncolumns && rc == PGPIPE_OK; i++) {
            if (!o->columns[i].column || !*o->columns[i].column)
                return copy_errf(l, PGPIPE_MISUSE, "loader: column %d of the mapping has no name", i + 1);
            rc = copy_add_col(l, o->columns[i].column, o->columns[i].field, o->columns[i].value,
                              o->columns[i].json);
        }
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
    if (copy_quote_ident_path(&sql, l->target) != PGPIPE_OK) {
        pp_buf_free(&sql);
        return copy_errf(l, PGPIPE_MISUSE, "loader: bad target table name \"%s\"", l->target);
    }
    pp_buf_append(&sql, " (", 2);
    for (int i = 0; i < l->ncols; i++) {
        if (i)
            pp_buf_append(&sql, ", ", 2);
        if (copy_quote_ident_path(&sql, l->cols[i].column) != PGPIPE_OK || strchr(l->cols[i].column, '.')) {
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
    pp_buf tq = { 0 };
    copy_quote_ident_path(&tq, l->target);
    if (pp_buf_putc(&tq, '\0') != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    l->target_sql = tq.data;
    return PGPIPE_OK;
}

/* ---- connection --------------------------------------------------------- */

static void copy_drop_conn(copy_lane *ln, int broken)
{
    pgpipe_loader *l = ln->l;
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
}

/* (Re)connect the lane. *transient set when trying again may help. */
static void copy_notice_processor(void *arg, const char *message)
{
    (void)arg;
    int n = (int)strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' '))
        n--;
    pp_logf(PGPIPE_LOG_INFO, "loader", "server: %.*s", n, message);
}

static int copy_connect(copy_lane *ln, int *transient)
{
    pgpipe_loader *l = ln->l;
    *transient = 0;
    if (ln->conn && PQstatus(ln->conn) == CONNECTION_OK)
        return PGPIPE_OK;
    if (l->borrowed) {
        ln->conn = l->borrowed;
        if (PQstatus(ln->conn) != CONNECTION_OK) {
            PQreset(ln->conn);
            ln->r_retries++;
        }
        if (PQstatus(ln->conn) != CONNECTION_OK) {
            *transient = 1;
            return pp_err_pq(&ln->err, ln->conn, NULL, "loader: reconnect");
        }
        return PGPIPE_OK;
    }
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
        return PGPIPE_OK;
    }
    ln->conn = PQconnectdb(l->conninfo ? l->conninfo : "");
    ln->own_conn = 1;
    if (!ln->conn)
        return pp_err_nomem(&ln->err);
    /* the server's NOTICEs (the schema install's) go to the log, as on a pool's connections */
    PQsetNoticeProcessor(ln->conn, copy_notice_processor, NULL);
    if (PQstatus(ln->conn) != CONNECTION_OK) {
        pp_err_pq(&ln->err, ln->conn, NULL, "loader: connect");
        /* refused or reset while the server restarts: worth another try */
        const char *m = PQerrorMessage(ln->conn);
        *transient = strstr(m, "starting up") || strstr(m, "shutting down") ||
                     strstr(m, "Connection refused") || strstr(m, "No such file") ||
                     strstr(m, "recovery") || strstr(m, "terminat") || strstr(m, "closed");
        PQfinish(ln->conn);
        ln->conn = NULL;
        return PGPIPE_DB;
    }
    return PGPIPE_OK;
}

/* Run one statement (params optional); sets the lane's error. */
static int copy_exec(copy_lane *ln, const char *sql, int n, const char *const *vals,
                     PGresult **out, int *transient)
{
    *transient = 0;
    if (out)
        *out = NULL;
    PGresult *r = n ? PQexecParams(ln->conn, sql, n, NULL, vals, NULL, NULL, 0) : PQexec(ln->conn, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
        if (out)
            *out = r;
        else
            PQclear(r);
        return PGPIPE_OK;
    }
    *transient = pgpipe_pq_is_transient(ln->conn, r);
    pp_err_pq(&ln->err, ln->conn, r, "loader");
    PQclear(r);
    return PGPIPE_DB;
}

/* Roll back whatever the lane's connection has open (a failed batch). */
static void copy_rollback(copy_lane *ln)
{
    if (ln->conn && PQstatus(ln->conn) == CONNECTION_OK &&
        PQtransactionStatus(ln->conn) != PQTRANS_IDLE)
        PQclear(PQexec(ln->conn, "ROLLBACK"));
}

/* ---- the load record (pgpipe.loads) -------------------------------------- */

static int copy_cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static int copy_seq_done(const pgpipe_loader *l, long long seq)
{
    return l->ndone && bsearch(&seq, l->done_seqs, l->ndone, sizeof seq, copy_cmp_ll) != NULL;
}

static const char *copy_format_name(int f)
{
    return f == PGPIPE_FORMAT_CSV ? "csv" : f == PGPIPE_FORMAT_NDJSON ? "ndjson"
         : f == PGPIPE_FORMAT_JSON ? "json" : "auto";
}

/* Find the earlier run of this load (same key and target) or create the row. */
/* A JSON string literal (for a query parameter, not COPY text). */
static int copy_json_plain(pp_buf *b, const char *s)
{
    int rc = pp_buf_putc(b, '"');
    for (; *s && rc == PGPIPE_OK; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            rc = pp_buf_appendf(b, "\\%c", c);
        else if (c < 0x20)
            rc = pp_buf_appendf(b, "\\u%04x", c);
        else
            rc = pp_buf_putc(b, (char)c);
    }
    return rc == PGPIPE_OK ? pp_buf_putc(b, '"') : rc;
}

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
        rc |= copy_json_plain(&b, c->column);
        if (c->kind == COPY_K_FIELD) {
            rc |= pp_buf_appendf(&b, ", \"field\": ");
            rc |= copy_json_plain(&b, c->field);
        } else if (c->kind == COPY_K_FIXED) {
            rc |= pp_buf_appendf(&b, ", \"value\": ");
            rc |= copy_json_plain(&b, c->raw_value);
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
        rc |= copy_json_plain(&b, l->required[i]);
    }
    rc |= pp_buf_appendf(&b, "]}");
    if (rc != PGPIPE_OK) {
        pp_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int copy_load_register_locked(pgpipe_loader *l, int *transient)
{
    copy_lane *ln = &l->lanes[0];
    char num[4][32];
    PGresult *r = NULL;
    int rc;
    l->ndone = 0;
    if (l->load_key) {
        const char *v[2] = { l->load_key, l->target };
        rc = copy_exec(ln, "SELECT id, coalesce(options->>'batch_rows', ''), "
                          "coalesce(options->>'batch_bytes', '') FROM pgpipe.loads "
                          "WHERE source_checksum = $1 AND target = $2 ORDER BY id DESC LIMIT 1",
                       2, v, &r, transient);
        if (rc != PGPIPE_OK)
            return rc;
        if (PQntuples(r) == 1) {
            l->load_id = atoll(PQgetvalue(r, 0, 0));
            /* the batch boundaries must be those of the earlier run */
            if (*PQgetvalue(r, 0, 1))
                l->batch_rows = atoi(PQgetvalue(r, 0, 1));
            if (*PQgetvalue(r, 0, 2))
                l->batch_bytes = (size_t)atoll(PQgetvalue(r, 0, 2));
            PQclear(r);
            snprintf(num[0], sizeof num[0], "%lld", l->load_id);
            const char *v1[1] = { num[0] };
            rc = copy_exec(ln, "SELECT seq FROM pgpipe.load_batches WHERE load_id = $1::bigint ORDER BY seq",
                           1, v1, &r, transient);
            if (rc != PGPIPE_OK)
                return rc;
            size_t n = (size_t)PQntuples(r);
            pp_free(l->done_seqs);
            l->done_seqs = pp_malloc((n ? n : 1) * sizeof *l->done_seqs);
            if (!l->done_seqs) {
                PQclear(r);
                return pp_err_nomem(&ln->err);
            }
            for (size_t i = 0; i < n; i++)
                l->done_seqs[i] = atoll(PQgetvalue(r, (int)i, 0));
            l->ndone = n;
            PQclear(r);
            return copy_exec(ln, "UPDATE pgpipe.loads SET status = 'running', updated_at = now(), "
                                "finished_at = NULL, error_message = NULL, error_sqlstate = NULL "
                                "WHERE id = $1::bigint", 1, v1, NULL, transient);
        }
        PQclear(r);
    }
    snprintf(num[0], sizeof num[0], "%lld", l->src_size);
    snprintf(num[1], sizeof num[1], "%lld", l->src_mtime);
    snprintf(num[2], sizeof num[2], "%d", l->batch_rows);
    snprintf(num[3], sizeof num[3], "%zu", l->batch_bytes);
    char *mapping = copy_mapping_json(l);
    if (!mapping)
        return pp_err_nomem(&ln->err);
    const char *v[9] = { l->source, l->src_size >= 0 ? num[0] : NULL,
                         l->src_mtime >= 0 ? num[1] : NULL, l->load_key,
                         copy_format_name(l->format), l->target, num[2], num[3], mapping };
    rc = copy_exec(ln, "INSERT INTO pgpipe.loads (source, source_size, source_mtime, source_checksum, "
                      "format, target, options) VALUES ($1, $2::bigint, to_timestamp($3::bigint), $4, "
                      "$5, $6, jsonb_build_object('batch_rows', $7::int, 'batch_bytes', $8::bigint, "
                      "'mapping', $9::jsonb)) "
                      "RETURNING id", 9, v, &r, transient);
    pp_free(mapping);
    if (rc != PGPIPE_OK)
        return rc;
    l->load_id = atoll(PQgetvalue(r, 0, 0));
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
    if (!l->load_key)
        return copy_load_register_locked(l, transient);
    const char *v[2] = { l->load_key, l->target };
    int rc = copy_exec(ln, "BEGIN", 0, NULL, NULL, transient);
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

static int copy_on_main_lane(pgpipe_loader *l, int attempts, copy_lane_op op, const void *arg)
{
    copy_lane *ln = &l->lanes[0];
    pgpipe_retry rt;
    pgpipe_retry_init(&rt, attempts, 100, 2000);
    for (;;) {
        int transient = 0;
        int rc = copy_connect(ln, &transient);
        if (rc == PGPIPE_OK)
            rc = op(l, ln, arg, &transient);
        if (rc == PGPIPE_OK)
            return PGPIPE_OK;
        int d = transient ? pgpipe_retry_next_delay(&rt) : -1;
        if (d < 0) {
            l->hdr.err = ln->err;
            return rc;
        }
        copy_drop_conn(ln, 1);
        pgpipe_sleep_ms(d);
    }
}

static int copy_op_register(pgpipe_loader *l, copy_lane *ln, const void *arg, int *transient)
{
    (void)ln;
    (void)arg;
    return copy_load_register(l, transient);
}

/* ---- dead letters --------------------------------------------------------- */

/* Append one dead letter (its COPY text row, built by the DLQ component) to
** the lane's batch; PGPIPE_NOMEM (the caller sets the error) or PGPIPE_OK. */
static int copy_dead(copy_lane *ln, long long line, long long column, long long offset,
                     const char *raw, size_t rawlen, const char *msg, const char *sqlstate,
                     const char *context)
{
    const pp_dlq_load_letter d = { ln->l->source, line, column, offset, ln->l->load_id,
                                   ln->uuid_text, raw, rawlen, msg, sqlstate, context };
    return pp_dlq_load_row(&ln->dbuf, &d);
}

/* ---- sending ---------------------------------------------------------------- */

/* Start COPY; PGPIPE_OK when the server is in COPY IN. */
static int copy_start(copy_lane *ln, const char *sql, int *transient)
{
    *transient = 0;
    PGresult *r = PQexec(ln->conn, sql);
    if (PQresultStatus(r) == PGRES_COPY_IN) {
        PQclear(r);
        return PGPIPE_OK;
    }
    *transient = pgpipe_pq_is_transient(ln->conn, r);
    pp_err_pq(&ln->err, ln->conn, r, "loader: COPY");
    PQclear(r);
    return PGPIPE_DB;
}

static int copy_put(copy_lane *ln, const char *p, size_t n, int *transient)
{
    while (n) {
        size_t k = n > COPY_SEND_CHUNK ? COPY_SEND_CHUNK : n;
        if (PQputCopyData(ln->conn, p, (int)k) != 1) {
            *transient = 1;
            return pp_err_pq(&ln->err, ln->conn, NULL, "loader: sending COPY data");
        }
        p += k;
        n -= k;
    }
    return PGPIPE_OK;
}

/* End COPY and read its result. *res gets the error result (caller clears). */
static int copy_end(copy_lane *ln, int *transient, PGresult **res)
{
    *transient = 0;
    if (res)
        *res = NULL;
    if (PQputCopyEnd(ln->conn, NULL) != 1) {
        *transient = 1;
        return pp_err_pq(&ln->err, ln->conn, NULL, "loader: ending COPY");
    }
    int rc = PGPIPE_OK;
    PGresult *r;
    int got = 0;
    while ((r = PQgetResult(ln->conn)) != NULL) {
        got = 1;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN) { /* should not happen: end again */
            PQclear(r);
            PQputCopyEnd(ln->conn, "unexpected");
            continue;
        }
        if (st != PGRES_COMMAND_OK && rc == PGPIPE_OK) {
            *transient = pgpipe_pq_is_transient(ln->conn, r);
            rc = pp_err_pq(&ln->err, ln->conn, r, "loader: COPY");
            if (res) {
                *res = r;
                continue;
            }
        }
        PQclear(r);
    }
    if (!got && rc == PGPIPE_OK) {
        *transient = 1;
        rc = pp_err_pq(&ln->err, ln->conn, NULL, "loader: COPY");
    }
    if (PQstatus(ln->conn) != CONNECTION_OK) {
        /* the connection broke after the result: what counts is the loss
        ** (a row's rejection read just before it is stale) */
        *transient = 1;
        if (rc != PGPIPE_OK)
            pp_err_pq(&ln->err, ln->conn, NULL, "loader: COPY");
    }
    return rc;
}

/* Abandon a streamed COPY (the load stopped mid-batch) and its transaction. */
static void copy_abandon(copy_lane *ln)
{
    if (ln->copy_open && ln->conn) {
        PQputCopyEnd(ln->conn, "load stopped");
        PGresult *r;
        while ((r = PQgetResult(ln->conn)) != NULL)
            PQclear(r);
    }
    ln->copy_open = 0;
    copy_rollback(ln);
}

static void copy_row_raw(const copy_lane *ln, size_t i, const char **p, size_t *n)
{
    size_t end = i + 1 < ln->nrows ? ln->rows[i + 1].roff : ln->rbuf.len;
    *p = ln->rbuf.data + ln->rows[i].roff;
    *n = end - ln->rows[i].roff;
}

/* Send rows [lo, hi) not marked bad, runs of good rows in one piece. */
static int copy_send_range(copy_lane *ln, size_t lo, size_t hi, int *transient)
{
    size_t i = lo;
    while (i < hi) {
        while (i < hi && ln->rows[i].bad)
            i++;
        size_t j = i;
        while (j < hi && !ln->rows[j].bad)
            j++;
        if (j > i) {
            size_t a = ln->rows[i].coff;
            size_t b = j < ln->nrows ? ln->rows[j].coff : ln->cbuf.len;
            int rc = copy_put(ln, ln->cbuf.data + a, b - a, transient);
            if (rc != PGPIPE_OK)
                return rc;
        }
        i = j;
    }
    return PGPIPE_OK;
}

/* The row of [lo, hi) that was the n-th (1-based) sent, (size_t)-1 if none. */
static size_t copy_nth_sent(const copy_lane *ln, size_t lo, size_t hi, long long n)
{
    for (size_t i = lo; i < hi; i++)
        if (!ln->rows[i].bad && --n == 0)
            return i;
    return (size_t)-1;
}

/* "COPY t, line 17, column x: ..." -> 17; 0 when absent. */
static long long copy_context_line(const PGresult *r)
{
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    if (!ctx || strncmp(ctx, "COPY ", 5) != 0)
        return 0;
    const char *p = strstr(ctx, ", line ");
    return p ? atoll(p + 7) : 0;
}

/* Mark row i rejected and dead-letter it with the server's error. */
static int copy_reject(copy_lane *ln, size_t i, const PGresult *r)
{
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    const char *detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    char m[1024];
    if (detail && *detail)
        snprintf(m, sizeof m, "%s (%s)", msg ? msg : "rejected by the server", detail);
    else
        snprintf(m, sizeof m, "%s", msg ? msg : "rejected by the server");
    const char *raw;
    size_t rawlen;
    copy_row_raw(ln, i, &raw, &rawlen);
    ln->rows[i].bad = 1;
    ln->b_dead_srv++;
    if (copy_dead(ln, ln->rows[i].line, 0, ln->rows[i].offset, raw, rawlen, m, state, ctx) != PGPIPE_OK)
        return pp_err_nomem(&ln->err);
    return PGPIPE_OK;
}

/* Load rows [lo, hi) inside the open transaction, isolating the rows the
** server rejects: a savepoint per attempt; on an error whose context names
** the row ("COPY t, line N"), that row is dead-lettered, the rows before it
** (accepted already) are loaded again and the attempt goes on after it;
** without such a line the range is halved. After a rejection the next
** attempts send a small window that doubles on success, so a batch of many
** bad rows costs one short COPY per bad row, not one whole batch. */
static int copy_range(copy_lane *ln, size_t lo, size_t hi, int *transient)
{
    int rc;
    size_t win = hi - lo;
    while (lo < hi) {
        size_t end = hi - lo > win ? lo + win : hi;
        size_t live = 0;
        for (size_t i = lo; i < end; i++)
            live += !ln->rows[i].bad;
        if (!live) {
            lo = end;
            continue;
        }
        rc = copy_exec(ln, "SAVEPOINT pgpipe_rows", 0, NULL, NULL, transient);
        if (rc == PGPIPE_OK)
            rc = copy_start(ln, ln->l->copy_sql, transient);
        if (rc != PGPIPE_OK)
            return rc;
        PGresult *err = NULL;
        rc = copy_send_range(ln, lo, end, transient);
        if (rc == PGPIPE_OK)
            rc = copy_end(ln, transient, &err);
        if (rc == PGPIPE_OK) {
            rc = copy_exec(ln, "RELEASE SAVEPOINT pgpipe_rows", 0, NULL, NULL, transient);
            if (rc != PGPIPE_OK)
                return rc;
            lo = end;
            win = win > (SIZE_MAX / 2) ? win : win * 2;
            continue;
        }
        if (*transient) {
            PQclear(err);
            return rc;
        }
        rc = copy_exec(ln, "ROLLBACK TO SAVEPOINT pgpipe_rows; RELEASE SAVEPOINT pgpipe_rows",
                       0, NULL, NULL, transient);
        if (rc != PGPIPE_OK) {
            PQclear(err);
            return rc;
        }
        long long lnum = copy_context_line(err);
        size_t k = lnum > 0 ? copy_nth_sent(ln, lo, end, lnum) : (size_t)-1;
        if (k == (size_t)-1 && live == 1)
            k = copy_nth_sent(ln, lo, end, 1);
        if (k != (size_t)-1) {
            rc = copy_reject(ln, k, err);
            PQclear(err);
            if (rc != PGPIPE_OK)
                return rc;
            if (k > lo && (rc = copy_range(ln, lo, k, transient)) != PGPIPE_OK)
                return rc;
            win = 2 * (k - lo) > 16 ? 2 * (k - lo) : 16;
            lo = k + 1;
            continue;
        }
        PQclear(err);
        size_t mid = lo + (end - lo) / 2;
        if ((rc = copy_range(ln, lo, mid, transient)) != PGPIPE_OK ||
            (rc = copy_range(ln, mid, end, transient)) != PGPIPE_OK)
            return rc;
        lo = end;
    }
    return PGPIPE_OK;
}

/* Dead letters, load_batches row, loads counters, NOTIFY, COMMIT. Batches
** of different lanes commit in any order: the loads row keeps the line and
** offset of its highest committed batch. */
static int copy_bookkeep_commit(copy_lane *ln, int *transient)
{
    const pgpipe_loader *l = ln->l;
    int rc;
    if (ln->dbuf.len) {
        rc = copy_start(ln, pp_dlq_load_copy_sql(), transient);
        if (rc == PGPIPE_OK)
            rc = copy_put(ln, ln->dbuf.data, ln->dbuf.len, transient);
        if (rc == PGPIPE_OK)
            rc = copy_end(ln, transient, NULL);
        if (rc != PGPIPE_OK)
            return rc;
    }
    long long loaded = (long long)ln->nrows - ln->b_dead_srv;
    long long dead = ln->b_dead_valid + ln->b_dead_srv;
    char v[12][64];
    char payload[600];
    snprintf(v[0], 64, "%lld", l->load_id);
    snprintf(v[1], 64, "%lld", ln->seq);
    snprintf(v[2], 64, "%s", ln->uuid_text);
    snprintf(v[3], 64, "%lld", ln->b_first_line);
    snprintf(v[4], 64, "%lld", ln->b_last_line);
    snprintf(v[5], 64, "%lld", ln->b_start_off);
    snprintf(v[6], 64, "%lld", ln->b_end_off);
    snprintf(v[7], 64, "%lld", ln->b_read);
    snprintf(v[8], 64, "%lld", loaded);
    snprintf(v[9], 64, "%lld", dead);
    /* the payload is JSON; the target name is JSON-escaped */
    pp_buf t = { 0 };
    copy_put_json_str(&t, l->target, strlen(l->target));
    snprintf(payload, sizeof payload, "{\"table\":%.*s,\"batch_id\":\"%s\",\"rows\":%lld,"
             "\"load_id\":%lld,\"seq\":%lld}", t.len < 400 ? (int)t.len : 2,
             t.len < 400 ? t.data : "\"\"", ln->uuid_text, loaded, l->load_id, ln->seq);
    pp_buf_free(&t);
    /* copy_put_json_str doubled backslashes for COPY: undo for the payload */
    for (char *s = payload, *w = payload;; s++) {
        if (s[0] == '\\' && s[1] == '\\')
            s++;
        if (!(*w++ = *s))
            break;
    }
    const char *vals[12] = { v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9],
                             l->channel ? l->channel : "", payload };
    rc = copy_exec(ln,
        "WITH b AS (INSERT INTO pgpipe.load_batches (load_id, seq, batch_id, first_line, last_line, "
        "start_offset, end_offset, rows_read, rows_loaded, rows_dead_lettered) VALUES ($1::bigint, "
        "$2::bigint, $3::uuid, $4::bigint, $5::bigint, $6::bigint, $7::bigint, $8::int, $9::int, "
        "$10::int) RETURNING 1), "
        "u AS (UPDATE pgpipe.loads SET rows_read = rows_read + $8::int, rows_loaded = rows_loaded + "
        "$9::int, rows_dead_lettered = rows_dead_lettered + $10::int, batches = batches + 1, "
        "last_batch_seq = greatest(last_batch_seq, $2::bigint), "
        "last_line = CASE WHEN $2::bigint > last_batch_seq THEN $5::bigint ELSE last_line END, "
        "last_offset = CASE WHEN $2::bigint > last_batch_seq THEN $7::bigint ELSE last_offset END, "
        "updated_at = now() WHERE id = $1::bigint RETURNING 1) "
        "SELECT (SELECT count(*) FROM b), (SELECT count(*) FROM u), "
        "(SELECT count(*) FROM (SELECT pg_notify($11::text, $12::text) "
        "WHERE $11::text <> '' AND $9::int > 0) n)", 12, vals, NULL, transient);
    if (rc != PGPIPE_OK)
        return rc;
    return copy_exec(ln, "COMMIT", 0, NULL, NULL, transient);
}

/* The whole batch from its buffer, in one transaction. */
static int copy_batch_slow(copy_lane *ln, int *transient)
{
    /* forget what an earlier attempt isolated */
    ln->dbuf.len = ln->dbuf_valid;
    ln->b_dead_srv = 0;
    for (size_t i = 0; i < ln->nrows; i++)
        ln->rows[i].bad = 0;
    int rc = copy_exec(ln, "BEGIN; SET CONSTRAINTS ALL IMMEDIATE", 0, NULL, NULL, transient);
    if (rc == PGPIPE_OK)
        rc = copy_range(ln, 0, ln->nrows, transient);
    if (rc == PGPIPE_OK)
        rc = copy_bookkeep_commit(ln, transient);
    if (rc != PGPIPE_OK && !*transient)
        copy_rollback(ln);
    return rc;
}

/* The streamed fast path: finish the COPY, book, commit. *fallback is set
** when the batch should go the slow way (a row was rejected). */
static int copy_batch_fast(copy_lane *ln, int *transient, int *fallback)
{
    *fallback = 0;
    int rc = PGPIPE_OK;
    if (ln->nrows) {
        if (!ln->copy_open)
            return *fallback = 1, PGPIPE_OK;
        rc = copy_put(ln, ln->cbuf.data + ln->sent, ln->cbuf.len - ln->sent, transient);
        if (rc == PGPIPE_OK)
            rc = copy_end(ln, transient, NULL);
        ln->copy_open = 0;
        if (rc != PGPIPE_OK) {
            if (*transient)
                return rc;
            copy_rollback(ln);
            *fallback = 1;
            return PGPIPE_OK;
        }
    } else {
        rc = copy_exec(ln, "BEGIN", 0, NULL, NULL, transient);
        if (rc != PGPIPE_OK)
            return rc;
    }
    rc = copy_bookkeep_commit(ln, transient);
    if (rc != PGPIPE_OK && !*transient)
        copy_rollback(ln);
    return rc;
}

/* Was the lane's batch committed (by an attempt whose reply was lost)? */
static int copy_batch_committed(copy_lane *ln, int *yes, int *ours, int *transient)
{
    char a[32], b[32];
    snprintf(a, sizeof a, "%lld", ln->l->load_id);
    snprintf(b, sizeof b, "%lld", ln->seq);
    const char *v[2] = { a, b };
    PGresult *r;
    int rc = copy_exec(ln, "SELECT rows_loaded, batch_id::text FROM pgpipe.load_batches "
                           "WHERE load_id = $1::bigint AND seq = $2::bigint", 2, v, &r, transient);
    if (rc != PGPIPE_OK)
        return rc;
    *yes = PQntuples(r) == 1;
    *ours = *yes && !strcmp(PQgetvalue(r, 0, 1), ln->uuid_text);
    if (*ours) {
        long long loaded = atoll(PQgetvalue(r, 0, 0));
        ln->b_dead_srv = (long long)ln->nrows - loaded;
    }
    PQclear(r);
    return PGPIPE_OK;
}

static void copy_stream_open(copy_lane *ln);

/* Commit the lane's batch, whatever it takes (within max_retries); the
** outcome goes to ln->rc and the ln->r_* counts. Runs on the lane's thread
** (or the loader's, with one lane) and touches nothing but the lane and the
** loader's options. */
static void copy_lane_commit(copy_lane *ln)
{
    pgpipe_retry rt;
    pgpipe_retry_init(&rt, ln->l->max_retries + 1, 100, 2000);
    int transient = 0, fallback = 0, rc, yes = 0, ours = 0;
    if (ln->nrows && !ln->copy_open && !ln->stream_broken)
        copy_stream_open(ln); /* not streamed while it filled */
    int fast = !ln->stream_broken && ln->conn != NULL;
    for (;;) {
        yes = ours = 0;
        if (fast) {
            rc = copy_batch_fast(ln, &transient, &fallback);
            fast = 0;
            if (rc == PGPIPE_OK && fallback)
                rc = copy_batch_slow(ln, &transient);
        } else {
            rc = copy_connect(ln, &transient);
            if (rc == PGPIPE_OK)
                rc = copy_batch_committed(ln, &yes, &ours, &transient);
            if (rc == PGPIPE_OK && !yes)
                rc = copy_batch_slow(ln, &transient);
        }
        if (rc == PGPIPE_OK)
            break;
        if (!transient) {
            /* a duplicate load_batches key: the batch was committed by
            ** another run of the same load (its row won: the batch is
            ** theirs, skip it), or by an earlier attempt of ours whose
            ** COMMIT was still in flight when we looked after reconnecting
            ** (same batch id: it is committed, count it). When looking
            ** fails on a lost connection, reconnect and look again. */
            if (strcmp(ln->err.sqlstate, "23505") != 0) {
                ln->rc = rc;
                return;
            }
            int t = 0;
            if (ln->conn && PQstatus(ln->conn) == CONNECTION_OK &&
                copy_batch_committed(ln, &yes, &ours, &t) == PGPIPE_OK) {
                if (yes)
                    break;
                ln->rc = rc;
                return;
            }
            if (ln->conn && PQstatus(ln->conn) == CONNECTION_OK && !t) {
                ln->rc = rc;
                return;
            }
        }
        int d = pgpipe_retry_next_delay(&rt);
        if (d < 0) {
            ln->rc = rc;
            return;
        }
        pp_logf(PGPIPE_LOG_INFO, "loader", "batch %lld: %s; reconnecting in %d ms", ln->seq,
                ln->err.message, d);
        copy_drop_conn(ln, 1);
        pgpipe_sleep_ms(d);
    }
    ln->rc = PGPIPE_OK;
    pgpipe_error_clear(&ln->err);
    if (yes && !ours) {
        pp_logf(PGPIPE_LOG_WARN, "loader", "load %lld batch %lld was committed by another run: "
                "skipped", ln->l->load_id, ln->seq);
        ln->r_skipped_rows += ln->b_read;
        ln->r_skipped_batches++;
        return;
    }
    ln->r_loaded += (long long)ln->nrows - ln->b_dead_srv;
    ln->r_dead += ln->b_dead_valid + ln->b_dead_srv;
    ln->r_batches++;
}

/* ---- batches and lanes ------------------------------------------------------ */

static void copy_batch_reset(copy_lane *ln)
{
    ln->cbuf.len = ln->rbuf.len = ln->dbuf.len = 0;
    ln->dbuf_valid = 0;
    ln->nrows = 0;
    ln->b_read = ln->b_dead_valid = ln->b_dead_srv = ln->b_bytes = 0;
    ln->copy_open = ln->stream_broken = 0;
    ln->sent = 0;
    ln->skipping = 0;
}

#ifndef PGPIPE_OMIT_THREADS
static void *copy_lane_main(void *arg)
{
    copy_lane *ln = arg;
    pgpipe_loader *l = ln->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (ln->state != COPY_LANE_QUEUED && !l->quit)
            pthread_cond_wait(&l->cv, &l->mu);
        if (ln->state != COPY_LANE_QUEUED)
            break;
        pthread_mutex_unlock(&l->mu);
        copy_lane_commit(ln);
        pthread_mutex_lock(&l->mu);
        ln->state = COPY_LANE_DONE;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}
#endif

/* Start a thread per lane for this load; with one lane, or when a thread
** cannot be started, batches commit on the loader's thread. */
static void copy_lanes_start(pgpipe_loader *l)
{
    l->threaded = 0;
    l->quit = 0;
#ifndef PGPIPE_OMIT_THREADS
    if (l->nlanes < 2)
        return;
    int i;
    for (i = 0; i < l->nlanes; i++)
        if (pthread_create(&l->lanes[i].tid, NULL, copy_lane_main, &l->lanes[i]) != 0)
            break;
    if (i == l->nlanes) {
        l->threaded = 1;
        return;
    }
    pthread_mutex_lock(&l->mu);
    l->quit = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    while (i-- > 0)
        pthread_join(l->lanes[i].tid, NULL);
    pp_logf(PGPIPE_LOG_WARN, "loader", "cannot start the lanes' threads: loading on one connection");
#endif
}

static void copy_lanes_stop(pgpipe_loader *l)
{
#ifndef PGPIPE_OMIT_THREADS
    if (!l->threaded)
        return;
    pthread_mutex_lock(&l->mu);
    l->quit = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nlanes; i++)
        pthread_join(l->lanes[i].tid, NULL);
    l->threaded = 0;
#else
    (void)l;
#endif
}

static int copy_progress(pgpipe_loader *l);

/* Take in a committed lane's outcome (loader's thread, the lane FREE
** again). The first error stops the load; the progress callback hears of
** every batch. */
static int copy_lane_fold(pgpipe_loader *l, copy_lane *ln)
{
    l->sum.retries += ln->r_retries;
    l->sum.rows_loaded += ln->r_loaded;
    l->sum.rows_dead += ln->r_dead;
    l->sum.batches += ln->r_batches;
    l->sum.rows_skipped += ln->r_skipped_rows;
    l->sum.batches_skipped += ln->r_skipped_batches;
    ln->r_retries = ln->r_loaded = ln->r_dead = ln->r_batches = 0;
    ln->r_skipped_rows = ln->r_skipped_batches = 0;
    int rc = ln->rc;
    ln->rc = PGPIPE_OK;
    copy_batch_reset(ln);
    if (rc != PGPIPE_OK) {
        l->hdr.err = ln->err;
        return rc;
    }
    return copy_progress(l);
}

/* A free lane for the next batch: folds what the lanes committed meanwhile
** and, when every lane is busy, waits for one. wait_all: wait for every
** lane (the end of a load). The first error is returned, after the wait. */
static int copy_lanes_collect(pgpipe_loader *l, copy_lane **free_lane, int wait_all)
{
    int rc = PGPIPE_OK;
    if (free_lane)
        *free_lane = NULL;
    if (!l->threaded) { /* lanes[0] commits on this thread: it is free */
        (void)wait_all;
        if (free_lane)
            *free_lane = &l->lanes[0];
        return rc;
    }
#ifndef PGPIPE_OMIT_THREADS
    pgpipe_error first; /* the first error is the one reported */
    int n = l->nlanes;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        int busy = 0;
        copy_lane *done = NULL, *idle = NULL;
        for (int i = 0; i < n; i++) {
            copy_lane *ln = &l->lanes[i];
            if (ln->state == COPY_LANE_DONE && !done)
                done = ln;
            else if (ln->state == COPY_LANE_QUEUED)
                busy++;
            else if (ln->state == COPY_LANE_FREE && !idle)
                idle = ln;
        }
        if (done) {
            done->state = COPY_LANE_FREE;
            pthread_mutex_unlock(&l->mu);
            int frc = copy_lane_fold(l, done);
            if (rc == PGPIPE_OK && frc != PGPIPE_OK) {
                rc = frc;
                first = l->hdr.err;
            }
            pthread_mutex_lock(&l->mu);
            continue;
        }
        if (wait_all ? busy == 0 : (idle != NULL || rc != PGPIPE_OK)) {
            if (free_lane && rc == PGPIPE_OK)
                *free_lane = idle;
            break;
        }
        pthread_cond_wait(&l->cv, &l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    if (rc != PGPIPE_OK)
        l->hdr.err = first;
#endif
    return rc;
}

/* Hand the filled lane over to be committed. */
static int copy_lane_handoff(pgpipe_loader *l, copy_lane *ln)
{
    if (!l->threaded) {
        copy_lane_commit(ln);
        return copy_lane_fold(l, ln);
    }
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_lock(&l->mu);
    ln->state = COPY_LANE_QUEUED;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
#endif
    return PGPIPE_OK;
}

static int copy_batch_begin(pgpipe_loader *l, long long line, long long off)
{
    copy_lane *ln;
    int rc = copy_lanes_collect(l, &ln, 0);
    if (rc != PGPIPE_OK)
        return rc;
    copy_batch_reset(ln);
    l->cur = ln;
    ln->seq = ++l->seq;
    ln->skipping = copy_seq_done(l, ln->seq);
    if (!ln->skipping)
        copy_new_uuid(l, ln);
    ln->b_first_line = line;
    ln->b_start_off = off;
    return PGPIPE_OK;
}

static void copy_report(pgpipe_loader *l)
{
    l->sum.seconds = (double)(pgpipe_now_us() - l->t0) / 1e6;
    l->sum.bytes = l->in_bytes;
    l->sum.rows_per_sec = l->sum.seconds > 0 ? (double)l->sum.records_read / l->sum.seconds : 0;
}

static int copy_progress(pgpipe_loader *l)
{
    copy_report(l);
    if (!l->progress)
        return PGPIPE_OK;
    pgpipe_load_progress p;
    p.bytes_done = l->in_bytes;
    p.bytes_total = l->src_size;
    p.records_read = l->sum.records_read;
    p.rows_loaded = l->sum.rows_loaded;
    p.rows_dead = l->sum.rows_dead;
    p.rows_skipped = l->sum.rows_skipped;
    p.batches = l->sum.batches;
    p.seconds = l->sum.seconds;
    if (l->progress(l->progress_ud, &p))
        return copy_errf(l, PGPIPE_BUSY, "loader: stopped by the progress callback after batch %lld",
                         l->seq);
    return PGPIPE_OK;
}

/* The current batch is complete: commit it (or count it, when an earlier
** run committed it). */
static int copy_batch_end(pgpipe_loader *l)
{
    copy_lane *ln = l->cur;
    if (!ln)
        return PGPIPE_OK;
    l->cur = NULL;
    if (ln->skipping) {
        ln->r_skipped_rows += ln->b_read;
        ln->r_skipped_batches++;
        return copy_lane_fold(l, ln);
    }
    return copy_lane_handoff(l, ln);
}

/* A record was read (loaded or dead-lettered): count it, close a full batch. */
static int copy_record_done(pgpipe_loader *l, long long line, long long off, size_t rawlen)
{
    copy_lane *ln = l->cur;
    ln->b_read++;
    l->sum.records_read++;
    ln->b_bytes += (long long)rawlen + 1;
    ln->b_last_line = line;
    ln->b_end_off = off + (long long)rawlen;
    if (ln->b_read >= l->batch_rows || (size_t)ln->b_bytes >= l->batch_bytes)
        return copy_batch_end(l);
    return PGPIPE_OK;
}

/* Begin the batch's transaction and COPY on the lane (connecting it if it
** never was). A failure only marks the stream broken: the batch then goes
** the slow way when it is committed. */
static void copy_stream_open(copy_lane *ln)
{
    int transient = 0;
    if (!ln->conn && !ln->connected_once)
        copy_connect(ln, &transient);
    if (!ln->conn || PQstatus(ln->conn) != CONNECTION_OK) {
        ln->stream_broken = 1;
        return;
    }
    if (copy_exec(ln, "BEGIN; SET CONSTRAINTS ALL IMMEDIATE", 0, NULL, NULL, &transient) != PGPIPE_OK ||
        copy_start(ln, ln->l->copy_sql, &transient) != PGPIPE_OK) {
        copy_rollback(ln);
        ln->stream_broken = 1;
        return;
    }
    ln->copy_open = 1;
    ln->sent = 0;
}

/* With one lane the batch streams to the server while it fills: the COPY
** begins at the first row and the buffer is sent every COPY_SEND_CHUNK
** bytes. (With several, the lane's thread sends the whole batch: filling
** stays ahead of every server instead of waiting on one.) */
static void copy_stream(copy_lane *ln)
{
    if (ln->stream_broken || ln->l->threaded)
        return;
    if (!ln->copy_open) {
        copy_stream_open(ln);
        if (!ln->copy_open)
            return;
    }
    if (ln->cbuf.len - ln->sent >= COPY_SEND_CHUNK) {
        int transient = 0;
        if (copy_put(ln, ln->cbuf.data + ln->sent, ln->cbuf.len - ln->sent, &transient) != PGPIPE_OK) {
            ln->stream_broken = 1;
            ln->copy_open = 0;
            return;
        }
        ln->sent = ln->cbuf.len;
    }
}

/* ---- building rows --------------------------------------------------------- */

static int copy_row_push(pgpipe_loader *l, size_t coff, const char *raw, size_t rawlen,
                         long long line, long long off)
{
    copy_lane *ln = l->cur;
    if (ln->nrows == ln->caprows) {
        size_t n = ln->caprows ? ln->caprows * 2 : 1024;
        copy_row *r = pp_realloc(ln->rows, n * sizeof *r);
        if (!r)
            return pp_err_nomem(&l->hdr.err);
        ln->rows = r;
        ln->caprows = n;
    }
    copy_row *r = &ln->rows[ln->nrows++];
    r->coff = coff;
    r->roff = ln->rbuf.len;
    r->line = line;
    r->offset = off;
    r->bad = 0;
    if (pp_buf_append(&ln->rbuf, raw, rawlen) != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    copy_stream(ln);
    return PGPIPE_OK;
}

/* A JSON value as a column value (COPY text). */
static int copy_put_json_value(pgpipe_loader *l, const pgpipe_json_val *v, int json, const char **why)
{
    pp_buf *b = &l->cur->cbuf;
    size_t n;
    const char *s;
    switch (pgpipe_json_type(v)) {
    case PGPIPE_JSON_INVALID:
    case PGPIPE_JSON_NULL:
        return pp_buf_append(b, "\\N", 2);
    case PGPIPE_JSON_STRING:
        s = pgpipe_json_get_str(v, &n);
        if (json)
            return copy_put_json_str(b, s, n);
        if (memchr(s, '\0', n)) {
            *why = "holds a NUL character";
            return PGPIPE_PARSE;
        }
        return copy_put_esc(b, s, n);
    case PGPIPE_JSON_NUMBER:
        s = pgpipe_json_number_text(v, &n);
        return pp_buf_append(b, s, n);
    case PGPIPE_JSON_BOOL:
        return pgpipe_json_get_bool(v) ? pp_buf_append(b, "true", 4) : pp_buf_append(b, "false", 5);
    default: {
        size_t cap = l->scratch.cap ? l->scratch.cap : 256;
        for (;;) {
            if (pp_buf_reserve(&l->scratch, cap) != PGPIPE_OK)
                return PGPIPE_NOMEM;
            int rc = pgpipe_json_write_to(v, l->scratch.data, l->scratch.cap, &n);
            if (rc == PGPIPE_OK)
                return copy_put_esc(b, l->scratch.data, n);
            if (rc != PGPIPE_LIMIT)
                return rc;
            cap = n + 1;
        }
    }
    }
}

static int copy_put_common(pgpipe_loader *l, const copy_col *c, long long line)
{
    pp_buf *b = &l->cur->cbuf;
    switch (c->kind) {
    case COPY_K_FIXED: return pp_buf_append(b, c->value, strlen(c->value));
    case COPY_K_NULL: return pp_buf_append(b, "\\N", 2);
    case COPY_K_LINE: return pp_buf_appendf(b, "%lld", line);
    case COPY_K_SOURCE: return copy_put_esc(b, l->source, strlen(l->source));
    case COPY_K_BATCH: return pp_buf_append(b, l->cur->uuid_text, 36);
    case COPY_K_LOAD: return pp_buf_appendf(b, "%lld", l->load_id);
    default: return PGPIPE_MISUSE;
    }
}

static const pgpipe_json_val *copy_json_field(const pgpipe_json_val *root, const char *f, int path)
{
    return path ? pgpipe_json_path(root, f) : pgpipe_json_obj_get(root, f, strlen(f));
}

static int copy_reject_input(pgpipe_loader *l, const char *raw, size_t len, long long line,
                             long long col, long long off, const char *msg)
{
    copy_lane *ln = l->cur;
    ln->b_dead_valid++;
    if (copy_dead(ln, line, col, off, raw, len, msg, NULL, NULL) != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    ln->dbuf_valid = ln->dbuf.len;
    return PGPIPE_OK;
}

/* One JSON record (an NDJSON line or an array element). */
static int copy_json_record(pgpipe_loader *l, const char *raw, size_t len, long long line,
                            long long off, int overlong)
{
    int rc = l->cur ? PGPIPE_OK : copy_batch_begin(l, line, off);
    if (rc != PGPIPE_OK)
        return rc;
    char msg[1100];
    if (l->cur->skipping)
        return copy_record_done(l, line, off, len);
    if (overlong) {
        snprintf(msg, sizeof msg, "record longer than the limit of %zu bytes", l->max_record);
        rc = copy_reject_input(l, raw, len, line, 0, off, msg);
        return rc ? rc : copy_record_done(l, line, off, len);
    }
    rc = pgpipe_json_parse(l->doc, raw, len);
    if (rc == PGPIPE_NOMEM)
        return pp_err_nomem(&l->hdr.err);
    if (rc != PGPIPE_OK) {
        const pgpipe_error *e = pgpipe_errinfo(l->doc);
        long long eline = line + (e->line > 0 ? e->line - 1 : 0);
        /* an array element may start mid-line: the parser's columns on its
        ** first line count from the element */
        long long ecol = e->column + (l->format == PGPIPE_FORMAT_JSON && e->line <= 1 ? l->carry_col : 0);
        /* the parser counts lines from the record's start: name the line of
        ** the input instead ("at line 1" of a record on line 5 misleads) */
        char tail[80];
        size_t ml = strlen(e->message);
        int tl = snprintf(tail, sizeof tail, " at line %lld, column %lld", e->line, e->column);
        if (tl > 0 && ml >= (size_t)tl && !strcmp(e->message + ml - (size_t)tl, tail))
            snprintf(msg, sizeof msg, "%.*s at line %lld, column %lld", (int)(ml - (size_t)tl),
                     e->message, eline, ecol);
        else
            snprintf(msg, sizeof msg, "%s", e->message);
        rc = copy_reject_input(l, raw, len, eline, ecol, off, msg);
        return rc ? rc : copy_record_done(l, line, off, len);
    }
    const pgpipe_json_val *root = pgpipe_json_root(l->doc);
    if (pgpipe_json_type(root) != PGPIPE_JSON_OBJECT) {
        snprintf(msg, sizeof msg, "record is a JSON %s, not an object",
                 pgpipe_json_type_name(pgpipe_json_type(root)));
        rc = copy_reject_input(l, raw, len, line,
                               1 + (l->format == PGPIPE_FORMAT_JSON ? l->carry_col : 0), off, msg);
        return rc ? rc : copy_record_done(l, line, off, len);
    }
    for (int i = 0; i < l->nrequired; i++) {
        const char *f = l->required[i];
        int t = pgpipe_json_type(copy_json_field(root, f, strpbrk(f, ".[") != NULL));
        if (t == PGPIPE_JSON_INVALID || t == PGPIPE_JSON_NULL) {
            snprintf(msg, sizeof msg, "required field \"%s\" is %s", f,
                     t == PGPIPE_JSON_NULL ? "null" : "missing");
            rc = copy_reject_input(l, raw, len, line, 0, off, msg);
            return rc ? rc : copy_record_done(l, line, off, len);
        }
    }
    pp_buf *cb = &l->cur->cbuf;
    size_t coff = cb->len;
    for (int i = 0; i < l->ncols && rc == PGPIPE_OK; i++) {
        const copy_col *c = &l->cols[i];
        if (i)
            rc = pp_buf_putc(cb, '\t');
        if (rc != PGPIPE_OK)
            break;
        if (c->kind == COPY_K_RECORD) {
            rc = copy_put_esc(cb, raw, len);
        } else if (c->kind == COPY_K_FIELD) {
            const pgpipe_json_val *v = copy_json_field(root, c->field, c->is_path);
            const char *why = NULL;
            rc = copy_put_json_value(l, v, c->json, &why);
            if (rc == PGPIPE_PARSE) {
                snprintf(msg, sizeof msg, "field \"%s\" %s", c->field, why);
                cb->len = coff;
                rc = copy_reject_input(l, raw, len, line, 0, off, msg);
                return rc ? rc : copy_record_done(l, line, off, len);
            }
        } else {
            rc = copy_put_common(l, c, line);
        }
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(cb, '\n');
    if (rc != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    rc = copy_row_push(l, coff, raw, len, line, off);
    return rc ? rc : copy_record_done(l, line, off, len);
}

/* ---- CSV ------------------------------------------------------------------ */

static int copy_csv_setup(pgpipe_loader *l)
{
    int n = pgpipe_csv_header_count(l->csv);
    l->csv_keys = pp_calloc((size_t)(n > 0 ? n : 1), sizeof *l->csv_keys);
    if (!l->csv_keys)
        return pp_err_nomem(&l->hdr.err);
    l->ncsv_keys = n;
    for (int i = 0; i < n; i++) {
        const char *h = pgpipe_csv_header_name(l->csv, i);
        if (copy_put_json_str(&l->csv_keys[i], h, strlen(h)) != PGPIPE_OK ||
            pp_buf_putc(&l->csv_keys[i], ':') != PGPIPE_OK)
            return pp_err_nomem(&l->hdr.err);
    }
    for (int i = 0; i < l->ncols; i++) {
        copy_col *c = &l->cols[i];
        if (c->kind != COPY_K_FIELD)
            continue;
        c->csv_idx = pgpipe_csv_column_index(l->csv, c->field);
        if (c->csv_idx < 0)
            return pp_err_at(&l->hdr.err, PGPIPE_MISUSE, l->source, 1, 0, 0,
                             "loader: the CSV header has no column \"%s\" (for %s)", c->field, c->column);
    }
    for (int i = 0; i < l->nrequired; i++) {
        l->req_idx[i] = pgpipe_csv_column_index(l->csv, l->required[i]);
        if (l->req_idx[i] < 0)
            return pp_err_at(&l->hdr.err, PGPIPE_MISUSE, l->source, 1, 0, 0,
                             "loader: the CSV header has no column \"%s\" (a required field)",
                             l->required[i]);
    }
    l->csv_ready = 1;
    return PGPIPE_OK;
}

/* The current CSV record (rc is PGPIPE_ROW or PGPIPE_PARSE). */
static int copy_csv_record(pgpipe_loader *l, int next_rc)
{
    const char *raw = NULL;
    size_t len = 0;
    if (pgpipe_csv_raw_record(l->csv, &raw, &len) != PGPIPE_OK) {
        raw = NULL;
        len = 0;
    }
    long long line = pgpipe_csv_record_line(l->csv);
    long long off = pgpipe_csv_record_offset(l->csv);
    int rc = l->cur ? PGPIPE_OK : copy_batch_begin(l, line, off);
    if (rc != PGPIPE_OK)
        return rc;
    if (l->cur->skipping)
        return copy_record_done(l, line, off, len);
    char msg[1200];
    if (next_rc == PGPIPE_PARSE) {
        const pgpipe_error *e = pgpipe_errinfo(l->csv);
        rc = copy_reject_input(l, raw, len, e->line > 0 ? e->line : line, e->column, off, e->message);
        return rc ? rc : copy_record_done(l, line, off, len);
    }
    if (!copy_utf8_ok((const unsigned char *)raw, len)) {
        size_t i = 0;
        while (i < len && copy_utf8_seq((const unsigned char *)raw + i, len - i))
            i += copy_utf8_seq((const unsigned char *)raw + i, len - i);
        /* line and column (in characters) of the bad byte in the input: a
        ** quoted field may span lines */
        long long eline = line, ecol = 1;
        for (size_t k = 0; k < i; k++) {
            if (raw[k] == '\n' || (raw[k] == '\r' && (k + 1 >= len || raw[k + 1] != '\n'))) {
                eline++;
                ecol = 1;
            } else if (((unsigned char)raw[k] & 0xC0) != 0x80) {
                ecol++;
            }
        }
        snprintf(msg, sizeof msg, "%s at line %lld, column %lld (byte %zu of the record)",
                 i < len && raw[i] == 0 ? "NUL byte" : "invalid UTF-8", eline, ecol, i + 1);
        if (i < len && raw[i] != 0)
            snprintf(msg + strlen(msg), sizeof msg - strlen(msg), ": byte 0x%02X",
                     (unsigned)(unsigned char)raw[i]);
        rc = copy_reject_input(l, raw, len, eline, ecol, off, msg);
        return rc ? rc : copy_record_done(l, line, off, len);
    }
    int nf = 0;
    const pgpipe_csv_span *f = pgpipe_csv_fields(l->csv, &nf);
    for (int i = 0; i < l->nrequired; i++) {
        int k = l->req_idx[i];
        if (k >= nf || f[k].len == 0) {
            snprintf(msg, sizeof msg, "required field \"%s\" is empty", l->required[i]);
            rc = copy_reject_input(l, raw, len, line, 0, off, msg);
            return rc ? rc : copy_record_done(l, line, off, len);
        }
    }
    pp_buf *b = &l->cur->cbuf;
    size_t coff = b->len;
    rc = PGPIPE_OK;
    for (int i = 0; i < l->ncols && rc == PGPIPE_OK; i++) {
        const copy_col *c = &l->cols[i];
        if (i)
            rc |= pp_buf_putc(b, '\t');
        if (c->kind == COPY_K_FIELD) {
            int k = c->csv_idx;
            if (k >= nf || (f[k].len == 0 && !f[k].quoted)) {
                rc |= pp_buf_append(b, "\\N", 2);
                continue;
            }
            if (c->json && pgpipe_json_validate(f[k].data, f[k].len, &l->verr) != PGPIPE_OK) {
                snprintf(msg, sizeof msg, "field \"%s\" is not valid JSON: %s", c->field,
                         l->verr.message);
                b->len = coff;
                rc = copy_reject_input(l, raw, len, line, 0, off, msg);
                return rc ? rc : copy_record_done(l, line, off, len);
            }
            rc |= copy_put_esc(b, f[k].data, f[k].len);
        } else if (c->kind == COPY_K_RECORD) {
            rc |= pp_buf_putc(b, '{');
            int m = nf < l->ncsv_keys ? nf : l->ncsv_keys;
            for (int k = 0; k < m && rc == PGPIPE_OK; k++) {
                if (k)
                    rc |= pp_buf_putc(b, ',');
                rc |= pp_buf_append(b, l->csv_keys[k].data, l->csv_keys[k].len);
                if (f[k].len == 0 && !f[k].quoted)
                    rc |= pp_buf_append(b, "null", 4);
                else
                    rc |= copy_put_json_str(b, f[k].data, f[k].len);
            }
            rc |= pp_buf_putc(b, '}');
        } else {
            rc |= copy_put_common(l, c, line);
        }
    }
    rc |= pp_buf_putc(b, '\n');
    if (rc != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    rc = copy_row_push(l, coff, raw ? raw : "", len, line, off);
    return rc ? rc : copy_record_done(l, line, off, len);
}

static int copy_csv_drain(pgpipe_loader *l)
{
    for (;;) {
        int rc = pgpipe_csv_next(l->csv);
        if (rc == PGPIPE_BUSY || rc == PGPIPE_DONE)
            return PGPIPE_OK;
        if (rc != PGPIPE_ROW && rc != PGPIPE_PARSE) {
            const pgpipe_error *e = pgpipe_errinfo(l->csv);
            l->hdr.err = *e;
            if (!l->hdr.err.source[0])
                snprintf(l->hdr.err.source, sizeof l->hdr.err.source, "%s", l->source);
            return rc;
        }
        int srv;
        if (!l->csv_ready && (srv = copy_csv_setup(l)) != PGPIPE_OK)
            return srv;
        rc = copy_csv_record(l, rc);
        if (rc != PGPIPE_OK)
            return rc;
    }
}

/* ---- NDJSON ------------------------------------------------------------------ */

static int copy_ndjson_line(pgpipe_loader *l, const char *p, size_t n, long long line, long long off,
                            int overlong)
{
    if (n && p[n - 1] == '\r')
        n--;
    if (line == 1 && n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) {
        p += 3;
        n -= 3;
        off += 3;
    }
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r'))
        i++;
    if (i == n && !overlong)
        return PGPIPE_OK; /* blank line: not a record */
    return copy_json_record(l, p, n, line, off, overlong);
}

/* Append to the carry buffer up to max_record bytes; more marks it overlong. */
static int copy_carry(pgpipe_loader *l, const char *p, size_t n)
{
    size_t room = l->max_record > l->carry.len ? l->max_record - l->carry.len : 0;
    if (n > room) {
        l->carry_over = 1;
        n = room;
    }
    return pp_buf_append(&l->carry, p, n) == PGPIPE_OK ? PGPIPE_OK : pp_err_nomem(&l->hdr.err);
}

static int copy_ndjson_feed(pgpipe_loader *l, const char *data, size_t len, long long base)
{
    const char *p = data, *end = data + len;
    int rc;
    if (l->js_state) { /* a line is being carried */
        const char *nl = memchr(p, '\n', len);
        if ((rc = copy_carry(l, p, nl ? (size_t)(nl - p) : len)) != PGPIPE_OK)
            return rc;
        if (!nl)
            return PGPIPE_OK;
        l->js_state = 0;
        rc = copy_ndjson_line(l, l->carry.data, l->carry.len, l->carry_line, l->carry_off, l->carry_over);
        l->carry.len = 0;
        l->carry_over = 0;
        if (rc != PGPIPE_OK)
            return rc;
        p = nl + 1;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            l->js_state = 1;
            l->carry_line = ++l->line_no;
            l->carry_off = base + (p - data);
            return copy_carry(l, p, (size_t)(end - p));
        }
        size_t n = (size_t)(nl - p);
        l->line_no++;
        if (n > l->max_record)
            rc = copy_ndjson_line(l, p, l->max_record, l->line_no, base + (p - data), 1);
        else
            rc = copy_ndjson_line(l, p, n, l->line_no, base + (p - data), 0);
        if (rc != PGPIPE_OK)
            return rc;
        p = nl + 1;
    }
    return PGPIPE_OK;
}

static int copy_ndjson_end(pgpipe_loader *l)
{
    if (!l->js_state)
        return PGPIPE_OK;
    l->js_state = 0;
    int rc = copy_ndjson_line(l, l->carry.data ? l->carry.data : "", l->carry.len, l->carry_line,
                              l->carry_off, l->carry_over);
    l->carry.len = 0;
    l->carry_over = 0;
    return rc;
}

/* ---- JSON array, streamed element by element ----------------------------------- */

enum { COPY_JS_START, COPY_JS_FIRST, COPY_JS_VALUE, COPY_JS_ELEM, COPY_JS_AFTER, COPY_JS_END };

static int copy_js_fatal(pgpipe_loader *l, long long off, const char *what, unsigned char c)
{
    char got[16];
    if (c >= 0x20 && c < 0x7f)
        snprintf(got, sizeof got, "'%c'", c);
    else
        snprintf(got, sizeof got, "byte 0x%02x", c);
    return pp_err_at(&l->hdr.err, PGPIPE_PARSE, l->source, l->line_no + 1, 0, off,
                     "loader: %s, found %s at line %lld (byte offset %lld)", what, got,
                     l->line_no + 1, off);
}

/* An element ended at data[end) (exclusive); it began at data[start) or in
** the carry buffer. */
static int copy_js_element(pgpipe_loader *l, const char *data, size_t start, size_t end, int carried)
{
    int rc;
    if (carried) {
        if ((rc = copy_carry(l, data, end)) != PGPIPE_OK)
            return rc;
        rc = copy_json_record(l, l->carry.data, l->carry.len, l->carry_line, l->carry_off,
                              l->carry_over);
        l->carry.len = 0;
        l->carry_over = 0;
        return rc;
    }
    size_t n = end - start;
    if (n > l->max_record)
        return copy_json_record(l, data + start, l->max_record, l->carry_line, l->carry_off, 1);
    return copy_json_record(l, data + start, n, l->carry_line, l->carry_off, 0);
}

/* a newline at absolute offset pos of a JSON array: the next line starts */
#define COPY_JS_NL(l, pos) ((l)->line_no++, (l)->js_nl_off = (pos) + 1, (l)->js_cont = 0)

static int copy_json_feed(pgpipe_loader *l, const char *data, size_t len, long long base)
{
    size_t i = 0, start = 0;
    int carried = l->js_state == COPY_JS_ELEM; /* an element goes on from the last chunk */
    int rc;
    while (i < len) {
        unsigned char c = (unsigned char)data[i];
        switch (l->js_state) {
        case COPY_JS_START:
            if (base + (long long)i < 3 && l->bom_pos == (int)(base + (long long)i) &&
                c == (unsigned char)"\xEF\xBB\xBF"[l->bom_pos]) {
                l->bom_pos++;
                i++;
                continue;
            }
            if (c == '[') { l->js_state = COPY_JS_FIRST; i++; continue; }
            if (c == '\n') { COPY_JS_NL(l, base + (long long)i); i++; continue; }
            if (c == ' ' || c == '\t' || c == '\r') { i++; continue; }
            return copy_js_fatal(l, base + (long long)i, "expected '[' to start a JSON array", c);
        case COPY_JS_FIRST:
        case COPY_JS_VALUE:
            if (c == '\n') { COPY_JS_NL(l, base + (long long)i); i++; continue; }
            if (c == ' ' || c == '\t' || c == '\r') { i++; continue; }
            if (c == ']' && l->js_state == COPY_JS_FIRST) { l->js_state = COPY_JS_END; i++; continue; }
            if (c == ']' || c == ',')
                return copy_js_fatal(l, base + (long long)i, "expected an array element", c);
            l->js_state = COPY_JS_ELEM;
            l->js_depth = 0;
            l->js_instr = l->js_esc = 0;
            l->js_scalar = c != '{' && c != '[' && c != '"';
            l->carry_line = l->line_no + 1;
            l->carry_off = base + (long long)i;
            l->carry_col = l->carry_off - l->js_nl_off - l->js_cont -
                           (l->line_no == 0 ? l->bom_pos : 0);
            start = i;
            carried = 0;
            if (!l->js_scalar) {
                if (c == '"')
                    l->js_instr = 1;
                else
                    l->js_depth = 1;
                i++;
            }
            continue;
        case COPY_JS_ELEM:
            if (l->js_instr) {
                /* skip plain string bytes quickly */
                while (i < len && data[i] != '"' && data[i] != '\\' && data[i] != '\n') {
                    if (l->js_esc)
                        l->js_esc = 0;
                    l->js_cont += ((unsigned char)data[i] & 0xC0) == 0x80;
                    i++;
                }
                if (i == len)
                    continue;
                c = (unsigned char)data[i];
                if (l->js_esc) {
                    l->js_esc = 0;
                } else if (c == '\\') {
                    l->js_esc = 1;
                } else if (c == '"') {
                    l->js_instr = 0;
                    if (l->js_depth == 0) { /* a string element */
                        i++;
                        if ((rc = copy_js_element(l, data, start, i, carried)) != PGPIPE_OK)
                            return rc;
                        carried = 0;
                        l->js_state = COPY_JS_AFTER;
                        continue;
                    }
                }
                if (c == '\n')
                    COPY_JS_NL(l, base + (long long)i);
                i++;
                continue;
            }
            if (l->js_scalar) {
                if (c == ',' || c == ']' || c == ' ' || c == '\t' || c == '\r' || c == '\n') {
                    if ((rc = copy_js_element(l, data, start, i, carried)) != PGPIPE_OK)
                        return rc;
                    carried = 0;
                    l->js_state = COPY_JS_AFTER;
                    continue; /* the byte is seen again in AFTER */
                }
                i++;
                continue;
            }
            if (c == '"') l->js_instr = 1;
            else if (c == '{' || c == '[') l->js_depth++;
            else if (c == '}' || c == ']') l->js_depth--;
            else if (c == '\n') COPY_JS_NL(l, base + (long long)i);
            i++;
            if (l->js_depth == 0) {
                if ((rc = copy_js_element(l, data, start, i, carried)) != PGPIPE_OK)
                    return rc;
                carried = 0;
                l->js_state = COPY_JS_AFTER;
            }
            continue;
        case COPY_JS_AFTER:
            if (c == '\n') { COPY_JS_NL(l, base + (long long)i); i++; continue; }
            if (c == ' ' || c == '\t' || c == '\r') { i++; continue; }
            if (c == ',') { l->js_state = COPY_JS_VALUE; i++; continue; }
            if (c == ']') { l->js_state = COPY_JS_END; i++; continue; }
            return copy_js_fatal(l, base + (long long)i, "expected ',' or ']' after an array element", c);
        default: /* COPY_JS_END */
            if (c == '\n') { COPY_JS_NL(l, base + (long long)i); i++; continue; }
            if (c == ' ' || c == '\t' || c == '\r') { i++; continue; }
            return copy_js_fatal(l, base + (long long)i, "unexpected data after the end of the array", c);
        }
    }
    if (l->js_state == COPY_JS_ELEM) /* keep the element's bytes of this chunk */
        return copy_carry(l, data + (carried ? 0 : start), len - (carried ? 0 : start));
    return PGPIPE_OK;
}

static int copy_json_end(pgpipe_loader *l)
{
    int rc = PGPIPE_OK;
    if (l->js_state == COPY_JS_ELEM) {
        if (l->js_scalar && !l->js_instr) {
            rc = copy_json_record(l, l->carry.data ? l->carry.data : "", l->carry.len, l->carry_line,
                                  l->carry_off, l->carry_over);
        } else {
            /* the input ended inside an element: dead-letter what there is */
            if (!l->cur)
                rc = copy_batch_begin(l, l->carry_line, l->carry_off);
            if (rc == PGPIPE_OK && !l->cur->skipping)
                rc = copy_reject_input(l, l->carry.data, l->carry.len, l->carry_line, 0, l->carry_off,
                                       "the input ended inside this array element");
            if (rc == PGPIPE_OK)
                rc = copy_record_done(l, l->carry_line, l->carry_off, l->carry.len);
        }
        l->carry.len = 0;
        l->carry_over = 0;
        l->js_state = COPY_JS_AFTER;
    }
    if (rc == PGPIPE_OK && l->js_state != COPY_JS_END && l->js_state != COPY_JS_START)
        pp_logf(PGPIPE_LOG_WARN, "loader", "%s: the JSON array is not closed with ']'", l->source);
    return rc;
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
    co.delimiter = delim;
    co.source = l->source;
    co.max_field_size = l->max_record;
    l->csv = pgpipe_csv_open_feed(&co);
    return l->csv ? PGPIPE_OK : pp_err_nomem(&l->hdr.err);
}

static void copy_load_free_state(pgpipe_loader *l)
{
    if (l->csv)
        pgpipe_csv_close(l->csv);
    l->csv = NULL;
    for (int i = 0; i < l->ncsv_keys; i++)
        pp_buf_free(&l->csv_keys[i]);
    pp_free(l->csv_keys);
    l->csv_keys = NULL;
    l->ncsv_keys = 0;
    l->csv_ready = 0;
    pp_free(l->source);
    pp_free(l->load_key);
    l->source = l->load_key = NULL;
    l->carry.len = l->sniff.len = 0;
}

static int copy_load_begin(pgpipe_loader *l, const char *name, const char *path, int fd)
{
    copy_load_free_state(l);
    memset(&l->sum, 0, sizeof l->sum);
    l->t0 = pgpipe_now_us();
    l->in_bytes = 0;
    l->seq = 0;
    l->line_no = 0;
    l->bom_pos = 0;
    l->js_nl_off = l->js_cont = l->carry_col = 0;
    l->js_state = 0;
    l->carry_over = 0;
    l->failed = 0;
    l->src_size = l->src_mtime = -1;
    l->load_id = 0;
    l->cur = NULL;
    for (int i = 0; i < COPY_MAX_LANES; i++) {
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
    if (l->format == PGPIPE_FORMAT_JSON)
        l->js_state = COPY_JS_START;
    l->csv_delimiter_now = delim;
    int rc = copy_format_ready(l, delim);
    if (rc == PGPIPE_OK)
        rc = copy_on_main_lane(l, l->max_retries + 1, copy_op_register, NULL);
    l->sum.retries += l->lanes[0].r_retries;
    l->lanes[0].r_retries = 0;
    if (rc != PGPIPE_OK)
        return rc;
    copy_lanes_start(l);
    l->active = 1;
    pp_logf(PGPIPE_LOG_INFO, "loader", "load %lld of %s (%s) into %s%s", l->load_id, l->source,
            copy_format_name(l->format), l->target, l->ndone ? ": resuming" : "");
    return PGPIPE_OK;
}

static int copy_feed_known(pgpipe_loader *l, const char *data, size_t len, long long base)
{
    switch (l->format) {
    case PGPIPE_FORMAT_CSV:
        if (pgpipe_csv_feed(l->csv, data, len) != PGPIPE_OK)
            return pp_err_nomem(&l->hdr.err);
        return copy_csv_drain(l);
    case PGPIPE_FORMAT_NDJSON:
        return copy_ndjson_feed(l, data, len, base);
    default:
        return copy_json_feed(l, data, len, base);
    }
}

/* Decide the format from the first bytes that are not whitespace or a BOM. */
static int copy_feed_any(pgpipe_loader *l, const char *data, size_t len)
{
    if (l->format != PGPIPE_FORMAT_AUTO) {
        int rc = copy_feed_known(l, data, len, l->in_bytes);
        l->in_bytes += (long long)len;
        return rc;
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
    l->format = s[i] == '[' ? PGPIPE_FORMAT_JSON : s[i] == '{' ? PGPIPE_FORMAT_NDJSON : PGPIPE_FORMAT_CSV;
    if (l->format == PGPIPE_FORMAT_JSON)
        l->js_state = COPY_JS_START;
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
    return rc;
}

static int copy_op_close(pgpipe_loader *l, copy_lane *ln, const void *arg, int *transient)
{
    (void)l;
    copy_rollback(ln);
    return copy_exec(ln, "UPDATE pgpipe.loads SET status = $2, error_message = $3, "
                         "error_sqlstate = $4, finished_at = CASE WHEN $2 = 'running' THEN NULL "
                         "ELSE now() END, updated_at = now() WHERE id = $1::bigint",
                     4, arg, NULL, transient);
}

/* Record how the load ended in pgpipe.loads (best effort, with retries). */
static void copy_load_close(pgpipe_loader *l, int code)
{
    const char *status = code == PGPIPE_OK ? "completed" : code == PGPIPE_BUSY ? "interrupted" : "failed";
    char id[32];
    snprintf(id, sizeof id, "%lld", l->load_id);
    const char *v[4] = { id, status, code == PGPIPE_OK ? NULL : l->hdr.err.message,
                         code == PGPIPE_OK || !l->hdr.err.sqlstate[0] ? NULL : l->hdr.err.sqlstate };
    pgpipe_error keep = l->hdr.err;
    if (l->load_id > 0)
        copy_on_main_lane(l, code == PGPIPE_OK ? l->max_retries + 1 : 3, copy_op_close, v);
    l->sum.retries += l->lanes[0].r_retries;
    l->lanes[0].r_retries = 0;
    l->hdr.err = keep;
    if (code == PGPIPE_OK)
        pgpipe_error_clear(&l->hdr.err);
}

static int copy_load_fd_named(pgpipe_loader *l, int fd, const char *name, const char *path)
{
    int rc = copy_load_begin(l, name, path, fd);
    if (rc != PGPIPE_OK)
        return rc;
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
        if (n == 0)
            break;
        rc = copy_feed_any(l, buf, (size_t)n);
    }
    pp_free(buf);
    l->failed = rc;
    return pgpipe_loader_finish(l);
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

int pgpipe_loader_open(const pgpipe_loader_options *o, pgpipe_loader **out)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_loader *l = pp_calloc(1, sizeof *l);
    *out = l;
    if (!l)
        return PGPIPE_NOMEM;
    pp_handle_init(&l->hdr);
    l->urandom = -1;
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
    int nreq = o->nrequired > 0 && o->required ? o->nrequired : 0;
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
    if (pgpipe_json_doc_new(&l->doc) != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
#ifdef O_CLOEXEC
    l->urandom = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
#else
    l->urandom = open("/dev/urandom", O_RDONLY);
#endif
    /* connect now (a bad conninfo fails here), installing the schema */
    return copy_on_main_lane(l, l->max_retries + 1, copy_op_install, &o->install_schema);
}

int pgpipe_loader_feed(pgpipe_loader *l, const void *buf, size_t len)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC || (!buf && len))
        return PGPIPE_MISUSE;
    int rc;
    if (!l->active) {
        rc = copy_load_begin(l, "<buffer>", NULL, -1);
        if (rc != PGPIPE_OK) {
            return rc;
        }
    }
    if (l->failed)
        return l->failed;
    rc = copy_feed_any(l, buf, len);
    if (rc != PGPIPE_OK)
        l->failed = rc;
    return rc;
}

int pgpipe_loader_finish(pgpipe_loader *l)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (!l->active)
        return l->failed ? l->failed : copy_errf(l, PGPIPE_MISUSE, "loader: no load to finish");
    int rc = l->failed;
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
        case PGPIPE_FORMAT_NDJSON: rc = copy_ndjson_end(l); break;
        case PGPIPE_FORMAT_JSON: rc = copy_json_end(l); break;
        default: break;
        }
    }
    if (rc == PGPIPE_OK)
        rc = copy_batch_end(l);
    /* every batch handed over is committed (or failed) before the load ends */
    pgpipe_error keep = l->hdr.err;
    int lrc = copy_lanes_collect(l, NULL, 1);
    if (rc != PGPIPE_OK)
        l->hdr.err = keep;
    else
        rc = lrc;
    copy_lanes_stop(l);
    if (l->cur) { /* a batch stopped half-way: its streamed COPY is abandoned */
        copy_abandon(l->cur);
        l->cur = NULL;
    }
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
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC || fd < 0)
        return PGPIPE_MISUSE;
    if (l->active)
        return copy_errf(l, PGPIPE_MISUSE, "loader: a fed load is still open (call pgpipe_loader_finish)");
    return copy_load_fd_named(l, fd, name ? name : "<stdin>", NULL);
}

int pgpipe_loader_load_file(pgpipe_loader *l, const char *path)
{
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC || !path)
        return PGPIPE_MISUSE;
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
    if (!l || l->hdr.magic != PP_HANDLE_MAGIC || !out)
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
    if (n >= 0 && (size_t)n < size)
        snprintf(buf + n, size - (size_t)n, "%s", more);
    return n + m;
}

PGconn *pgpipe_loader_conn(pgpipe_loader *l)
{
    return l && l->hdr.magic == PP_HANDLE_MAGIC ? l->lanes[0].conn : NULL;
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
    pp_free(l->done_seqs);
    pp_buf_free(&l->carry);
    pp_buf_free(&l->sniff);
    pp_buf_free(&l->scratch);
    pgpipe_json_doc_free(l->doc);
    if (l->urandom >= 0)
        close(l->urandom);
    l->hdr.magic = 0;
    pp_free(l);
}
