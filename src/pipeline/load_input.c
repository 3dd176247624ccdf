/*
** The COPY loader's input side: a record (a CSV row or a JSON object) into
** one COPY text row of the batch, validated against the column mapping, or
** a dead letter; and the input cut into records: CSV by the csv reader,
** NDJSON lines and JSON arrays by the framer (src/parse/framer.c). The overview is in src/pipeline/load.c.
*/

#include "pp_pipeline.h"

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

/* ---- a row's fields, COPY text or binary: l->cw (src/base/copyrow.c) ------ */

/* JSON text into column c: in jsonb's member order when the column is
** jsonb (its input then has nothing to sort), as it is into json (which
** keeps the text). */
static int copy_put_json_text(pgpipe_loader *l, const copy_col *c, pp_buf *b, const char *s, size_t n)
{
    return c->order ? pp_copy_put_jsonb(&l->cw, b, l->jscratch, s, n)
                    : pp_copy_put_text(&l->cw, b, s, n);
}

/* A JSON value as the value of column c. */
static int copy_put_json_value(pgpipe_loader *l, const pgpipe_json_val *v, const copy_col *c,
                               const char **why)
{
    int json = c->json;
    pp_buf *b = &l->cur->cbuf;
    size_t n;
    const char *s;
    int t = pgpipe_json_type(v);
    if (t == PGPIPE_JSON_INVALID || t == PGPIPE_JSON_NULL)
        return pp_copy_put_null(&l->cw, b);
    if (json && COPY_BINARY(l) && t != PGPIPE_JSON_OBJECT && t != PGPIPE_JSON_ARRAY &&
        pp_buf_putc(b, 1) != PGPIPE_OK) /* jsonb's version byte (pp_copy_put_jsonb's own below) */
        return PGPIPE_NOMEM;
    switch (t) {
    case PGPIPE_JSON_STRING:
        s = pgpipe_json_get_str(v, &n);
        if (json)
            return pp_json_str(b, s, n, COPY_BINARY(l) ? 0 : PP_JSON_COPY);
        if (memchr(s, '\0', n)) {
            *why = "holds a NUL character";
            return PGPIPE_PARSE;
        }
        return pp_copy_put_text(&l->cw, b, s, n);
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
                return json ? copy_put_json_text(l, c, b, l->scratch.data, n)
                            : pp_copy_put_text(&l->cw, b, l->scratch.data, n);
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
    case COPY_K_FIXED:
        return COPY_BINARY(l) ? pp_buf_append(b, c->raw_value, strlen(c->raw_value))
                         : pp_buf_append(b, c->value, strlen(c->value));
    case COPY_K_NULL: return pp_copy_put_null(&l->cw, b);
    case COPY_K_LINE: return pp_buf_appendf(b, "%lld", line);
    case COPY_K_SOURCE: return pp_copy_put_text(&l->cw, b, l->source, strlen(l->source));
    case COPY_K_BATCH:
        return pp_copy_put_uuid(&l->cw, b, l->cur->uuid_text, l->cur->uuid_bin);
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

/* One JSON record (an NDJSON line or an array element that starts after col
** characters of its line). */
static int copy_json_record(pgpipe_loader *l, const char *raw, size_t len, long long line,
                            long long col, long long off, int overlong)
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
        long long ecol = e->column + (e->line <= 1 ? col : 0);
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
        rc = copy_reject_input(l, raw, len, line, 1 + col, off, msg);
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
    rc = pp_copy_row_begin(&l->cw, cb, l->ncols);
    for (int i = 0; i < l->ncols && rc == PGPIPE_OK; i++) {
        const copy_col *c = &l->cols[i];
        rc = pp_copy_field_begin(&l->cw, cb, i);
        if (rc != PGPIPE_OK)
            break;
        if (c->kind == COPY_K_RECORD) {
            rc = copy_put_json_text(l, c, cb, raw, len);
        } else if (c->kind == COPY_K_FIELD) {
            const pgpipe_json_val *v = copy_json_field(root, c->field, c->is_path);
            const char *why = NULL;
            rc = copy_put_json_value(l, v, c, &why);
            if (rc == PGPIPE_PARSE) {
                snprintf(msg, sizeof msg, "field \"%s\" %s", c->field, why);
                cb->len = coff;
                rc = copy_reject_input(l, raw, len, line, 0, off, msg);
                return rc ? rc : copy_record_done(l, line, off, len);
            }
        } else {
            rc = copy_put_common(l, c, line);
        }
        if (rc == PGPIPE_OK)
            pp_copy_field_end(&l->cw, cb);
    }
    if (rc == PGPIPE_OK)
        rc = pp_copy_row_end(&l->cw, cb);
    if (rc != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    rc = copy_row_push(l, coff, raw, len, line, off);
    return rc ? rc : copy_record_done(l, line, off, len);
}

/* ---- CSV ------------------------------------------------------------------ */

/* A header name while the columns are put in jsonb's order of their names
** (shorter first, then bytewise; between equal names, the column's position). */
typedef struct copy_csv_name {
    const char *name;
    size_t len;
    int col;
} copy_csv_name;

static int copy_csv_cmp(const void *x, const void *y)
{
    const copy_csv_name *a = x, *b = y;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    int c = memcmp(a->name, b->name, a->len);
    return c ? c : (a->col > b->col) - (a->col < b->col);
}

PGPIPE_PRIVATE int copy_csv_keys(pgpipe_csv *csv, copy_csv_head *h)
{
    int n = pgpipe_csv_header_count(csv);
    size_t cap = (size_t)(n > 0 ? n : 1);
    h->n = 0;
    h->keys = pp_calloc(cap, sizeof *h->keys);
    h->pkeys = pp_calloc(cap, sizeof *h->pkeys);
    h->order = pp_calloc(cap, sizeof *h->order);
    h->as_read = pp_calloc(cap, sizeof *h->as_read);
    copy_csv_name *names = pp_calloc(cap, sizeof *names);
    if (!h->keys || !h->pkeys || !h->order || !h->as_read || !names) {
        pp_free(names);
        return PGPIPE_NOMEM;
    }
    h->n = n;
    for (int i = 0; i < n; i++) {
        const char *name = pgpipe_csv_header_name(csv, i);
        names[i] = (copy_csv_name){ name, strlen(name), i };
        h->as_read[i] = i;
        if (pp_json_str(&h->keys[i], name, names[i].len, PP_JSON_COPY) != PGPIPE_OK ||
            pp_buf_putc(&h->keys[i], ':') != PGPIPE_OK ||
            (!PGPIPE_SMALL && /* (no binary rows in a size build) */
             (pp_json_str(&h->pkeys[i], name, names[i].len, 0) != PGPIPE_OK ||
              pp_buf_putc(&h->pkeys[i], ':') != PGPIPE_OK))) {
            pp_free(names);
            return PGPIPE_NOMEM;
        }
    }
    if (!PGPIPE_SMALL) /* (a size build: the header's order; jsonb sorts it) */
        qsort(names, (size_t)n, sizeof *names, copy_csv_cmp);
    for (int i = 0; i < n; i++)
        h->order[i] = names[i].col;
    pp_free(names);
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void copy_csv_keys_free(copy_csv_head *h)
{
    for (int i = 0; h->keys && i < h->n; i++)
        pp_buf_free(&h->keys[i]);
    for (int i = 0; h->pkeys && i < h->n; i++)
        pp_buf_free(&h->pkeys[i]);
    pp_free(h->keys);
    pp_free(h->pkeys);
    h->pkeys = NULL;
    pp_free(h->order);
    pp_free(h->as_read);
    h->keys = NULL;
    h->order = NULL;
    h->as_read = NULL;
    h->n = 0;
}

PGPIPE_PRIVATE int copy_csv_object(pp_buf *b, const copy_csv_head *h, const pgpipe_csv_span *f, int nf,
                                   int copy)
{
    copy |= PGPIPE_SMALL; /* (no binary rows in a size build) */
    const pp_buf *keys = copy ? h->keys : h->pkeys;
    int flags = copy ? PP_JSON_COPY : 0;
    int rc = pp_buf_putc(b, '{');
    int m = nf < h->n ? nf : h->n, first = 1;
    for (int a = 0; a < h->n && rc == PGPIPE_OK; a++) {
        int k = h->order[a];
        if (k >= m)
            continue;
        if (!first)
            rc |= pp_buf_putc(b, ',');
        first = 0;
        rc |= pp_buf_append(b, keys[k].data, keys[k].len);
        if (f[k].len == 0 && !f[k].quoted)
            rc |= pp_buf_append(b, "null", 4);
        else
            rc |= pp_json_str(b, f[k].data, f[k].len, flags);
    }
    rc |= pp_buf_putc(b, '}');
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

PGPIPE_PRIVATE int copy_text_problem(const char *raw, size_t len, long long line, char *msg,
                                     size_t size, long long *eline, long long *ecol)
{
    size_t i = pp_utf8_text_prefix((const unsigned char *)raw, len);
    if (i >= len)
        return 0;
    /* line and column (in characters) of the bad byte in the input: a
    ** quoted field may span lines */
    *eline = line;
    *ecol = 1;
    for (size_t k = 0; k < i; k++) {
        if (raw[k] == '\n' || (raw[k] == '\r' && (k + 1 >= len || raw[k + 1] != '\n'))) {
            ++*eline;
            *ecol = 1;
        } else if (((unsigned char)raw[k] & 0xC0) != 0x80) {
            ++*ecol;
        }
    }
    snprintf(msg, size, "%s at line %lld, column %lld (byte %zu of the record)",
             raw[i] == 0 ? "NUL byte" : "invalid UTF-8", *eline, *ecol, i + 1);
    if (raw[i] != 0)
        snprintf(msg + strlen(msg), size - strlen(msg), ": byte 0x%02X",
                 (unsigned)(unsigned char)raw[i]);
    return 1;
}

static int copy_csv_setup(pgpipe_loader *l)
{
    if (copy_csv_keys(l->csv, &l->csv_head) != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
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
    long long eline, ecol;
    if (copy_text_problem(raw, len, line, msg, sizeof msg, &eline, &ecol)) {
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
    rc = pp_copy_row_begin(&l->cw, b, l->ncols);
    for (int i = 0; i < l->ncols && rc == PGPIPE_OK; i++) {
        const copy_col *c = &l->cols[i];
        rc |= pp_copy_field_begin(&l->cw, b, i);
        if (c->kind == COPY_K_FIELD) {
            int k = c->csv_idx;
            if (k >= nf || (f[k].len == 0 && !f[k].quoted)) {
                rc |= pp_copy_put_null(&l->cw, b);
                pp_copy_field_end(&l->cw, b);
                continue;
            }
            if (c->json && pgpipe_json_validate(f[k].data, f[k].len, &l->verr) != PGPIPE_OK) {
                snprintf(msg, sizeof msg, "field \"%s\" is not valid JSON: %s", c->field,
                         l->verr.message);
                b->len = coff;
                rc = copy_reject_input(l, raw, len, line, 0, off, msg);
                return rc ? rc : copy_record_done(l, line, off, len);
            }
            rc |= c->json ? copy_put_json_text(l, c, b, f[k].data, f[k].len)
                          : pp_copy_put_text(&l->cw, b, f[k].data, f[k].len);
        } else if (c->kind == COPY_K_RECORD) {
            if (COPY_BINARY(l))
                rc |= pp_buf_putc(b, 1); /* jsonb's version byte */
            copy_csv_head h = l->csv_head;
            if (!c->order)
                h.order = h.as_read; /* a json column: the header's order */
            rc |= copy_csv_object(b, &h, f, nf, !COPY_BINARY(l));
        } else {
            rc |= copy_put_common(l, c, line);
        }
        if (rc == PGPIPE_OK)
            pp_copy_field_end(&l->cw, b);
    }
    rc |= pp_copy_row_end(&l->cw, b);
    if (rc != PGPIPE_OK)
        return pp_err_nomem(&l->hdr.err);
    rc = copy_row_push(l, coff, raw ? raw : "", len, line, off);
    return rc ? rc : copy_record_done(l, line, off, len);
}

PGPIPE_PRIVATE int copy_csv_drain(pgpipe_loader *l)
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

/* ---- NDJSON and JSON arrays: records from the framer ---------------------------- */

/* A record the framer cut from the input (pp_framer callback). */
static int copy_json_frame(void *ud, const pp_frame *r)
{
    pgpipe_loader *l = ud;
    if (!(r->flags & PP_FRAME_CUT))
        return copy_json_record(l, r->raw, r->len, r->line, r->col, r->off,
                                (r->flags & PP_FRAME_OVERLONG) != 0);
    /* the input ended inside an array element: dead-letter what there is */
    int rc = PGPIPE_OK;
    if (!l->cur)
        rc = copy_batch_begin(l, r->line, r->off);
    if (rc == PGPIPE_OK && !l->cur->skipping)
        rc = copy_reject_input(l, r->raw, r->len, r->line, 0, r->off,
                               "the input ended inside this array element");
    return rc ? rc : copy_record_done(l, r->line, r->off, r->len);
}

/* Start framing the input of a load in format (NDJSON or a JSON array). */
PGPIPE_PRIVATE void copy_framer_begin(pgpipe_loader *l, int format)
{
    framer_begin(&l->fr, format == PGPIPE_FORMAT_JSON ? PP_FRAME_ARRAY : PP_FRAME_NDJSON,
                 l->max_record, copy_json_frame, l);
}

/* A framer's result as the loader's: a broken frame names the source. */
static int copy_framer_rc(pgpipe_loader *l, int rc)
{
    if (rc == PGPIPE_NOMEM)
        return pp_err_nomem(&l->hdr.err);
    if (rc == PGPIPE_PARSE && l->fr.err.code == PGPIPE_PARSE) {
        l->fr.err.code = PGPIPE_OK;
        return pp_err_at(&l->hdr.err, PGPIPE_PARSE, l->source, l->fr.err.line, l->fr.err.column,
                         l->fr.err.offset,
                         "loader: %s", l->fr.err.message);
    }
    return rc;
}

PGPIPE_PRIVATE int copy_json_end(pgpipe_loader *l)
{
    int rc = copy_framer_rc(l, framer_end(&l->fr));
    if (l->fr.unclosed)
        pp_logf(PGPIPE_LOG_WARN, "loader", "%s: the JSON array is not closed with ']'", l->source);
    return rc;
}

/* ---- a chunk to the framer of the load's format ----------------------------- */

PGPIPE_PRIVATE int copy_feed_known(pgpipe_loader *l, const char *data, size_t len, long long base)
{
    switch (l->format) {
    case PGPIPE_FORMAT_CSV:
        if (pgpipe_csv_feed(l->csv, data, len) != PGPIPE_OK)
            return pp_err_nomem(&l->hdr.err);
        return copy_csv_drain(l);
    default: /* the framer counts the bytes itself */
        (void)base;
        return copy_framer_rc(l, framer_feed(&l->fr, data, len));
    }
}
