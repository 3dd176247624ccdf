/*
** The COPY loader's input side: a record (a CSV row or a JSON object) into
** one COPY text row of the batch, validated against the column mapping, or
** a dead letter; and the framers that cut the input into records: CSV
** (through the csv reader), NDJSON lines, and JSON arrays streamed element
** by element. The overview is in src/pipeline/load.c.
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

PGPIPE_PRIVATE int copy_ndjson_end(pgpipe_loader *l)
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

/* An element ended at data[end): hand it over; the array goes on after it. */
static int copy_js_close(pgpipe_loader *l, const char *data, size_t start, size_t end, int *carried)
{
    int rc = copy_js_element(l, data, start, end, *carried);
    if (rc != PGPIPE_OK)
        return rc;
    *carried = 0;
    l->js_state = COPY_JS_AFTER;
    return PGPIPE_OK;
}

/* An element starts with byte c at absolute offset at. Returns the bytes
** taken: a string's quote or a container's bracket; a scalar's first byte
** is read again inside the element. */
static inline size_t copy_js_begin(pgpipe_loader *l, unsigned char c, long long at)
{
    l->js_state = COPY_JS_ELEM;
    l->js_depth = 0;
    l->js_instr = l->js_esc = 0;
    l->js_scalar = c != '{' && c != '[' && c != '"';
    l->carry_line = l->line_no + 1;
    l->carry_off = at;
    l->carry_col = l->carry_off - l->js_nl_off - l->js_cont -
                   (l->line_no == 0 ? l->bom_pos : 0);
    if (l->js_scalar)
        return 0;
    if (c == '"')
        l->js_instr = 1;
    else
        l->js_depth = 1;
    return 1;
}

/* Inside an element (it began at data[start), or in the carry buffer when
** *carried): reads on from data[*pos] towards its end, a string's closing
** quote, a scalar's delimiter or the bracket that closes a container, and
** hands the element over there. Advances *pos. */
static inline int copy_js_in_element(pgpipe_loader *l, const char *data, size_t len,
                                     long long base, size_t *pos, size_t start, int *carried)
{
    size_t i = *pos;
    unsigned char c = (unsigned char)data[i];
    int rc = PGPIPE_OK;
    if (l->js_instr) {
        /* skip plain string bytes quickly */
        while (i < len && data[i] != '"' && data[i] != '\\' && data[i] != '\n') {
            if (l->js_esc)
                l->js_esc = 0;
            l->js_cont += ((unsigned char)data[i] & 0xC0) == 0x80;
            i++;
        }
        if (i < len) {
            c = (unsigned char)data[i];
            if (l->js_esc) {
                l->js_esc = 0;
            } else if (c == '\\') {
                l->js_esc = 1;
            } else if (c == '"') {
                l->js_instr = 0;
                if (l->js_depth == 0) { /* a string element */
                    *pos = i + 1;
                    return copy_js_close(l, data, start, i + 1, carried);
                }
            }
            if (c == '\n')
                COPY_JS_NL(l, base + (long long)i);
            i++;
        }
    } else if (l->js_scalar) {
        if (c == ',' || c == ']' || c == ' ' || c == '\t' || c == '\r' || c == '\n')
            rc = copy_js_close(l, data, start, i, carried); /* the byte is seen again in AFTER */
        else
            i++;
    } else {
        if (c == '"') l->js_instr = 1;
        else if (c == '{' || c == '[') l->js_depth++;
        else if (c == '}' || c == ']') l->js_depth--;
        else if (c == '\n') COPY_JS_NL(l, base + (long long)i);
        i++;
        if (l->js_depth == 0)
            rc = copy_js_close(l, data, start, i, carried);
    }
    *pos = i;
    return rc;
}

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
            start = i;
            carried = 0;
            i += copy_js_begin(l, c, base + (long long)i);
            continue;
        case COPY_JS_ELEM:
            if ((rc = copy_js_in_element(l, data, len, base, &i, start, &carried)) != PGPIPE_OK)
                return rc;
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

PGPIPE_PRIVATE int copy_json_end(pgpipe_loader *l)
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

/* ---- a chunk to the framer of the load's format ----------------------------- */

PGPIPE_PRIVATE int copy_feed_known(pgpipe_loader *l, const char *data, size_t len, long long base)
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
