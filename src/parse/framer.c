/*
** The framer: a stream of NDJSON lines, of one JSON array (streamed element
** by element; PP_FRAME_ARRAY also takes one object as the one record) or of
** one JSON document, fed in chunks that may cut a record
** anywhere, into records handed to a callback with their line, column and
** byte offset. The array scan reads every byte of the input, so its steps
** are static inline in one loop and touch nothing but the framer.
*/

#include "pp_parse.h"

PGPIPE_PRIVATE void framer_begin(pp_framer *f, int kind, size_t max_record, pp_frame_fn fn, void *ud)
{
    pp_buf carry = f->carry;
    memset(f, 0, sizeof *f);
    f->carry = carry;
    f->carry.len = 0;
    f->kind = kind;
    f->max_record = max_record;
    f->fn = fn;
    f->ud = ud;
    f->state = kind == PP_FRAME_ARRAY ? PP_FR_START : 0;
}

PGPIPE_PRIVATE void framer_free(pp_framer *f)
{
    pp_buf_free(&f->carry);
}

static int framer_emit(pp_framer *f, const char *p, size_t n, long long line, long long col,
                       long long off, int flags)
{
    pp_frame r;
    r.raw = p;
    r.len = n;
    r.line = line;
    r.col = col;
    r.off = off;
    r.flags = flags;
    return f->fn(f->ud, &r);
}

/* Append to the carry buffer up to max_record bytes; more marks it overlong. */
static int framer_carry(pp_framer *f, const char *p, size_t n)
{
    size_t room = f->max_record > f->carry.len ? f->max_record - f->carry.len : 0;
    if (n > room) {
        f->carry_over = 1;
        n = room;
    }
    return pp_buf_append(&f->carry, p, n);
}

/* The carried record went out: the buffer is free for the next. */
static void framer_carry_done(pp_framer *f)
{
    f->carry.len = 0;
    f->carry_over = 0;
}

/* ---- NDJSON ------------------------------------------------------------------ */

static int framer_line(pp_framer *f, const char *p, size_t n, long long line, long long off, int overlong)
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
    return framer_emit(f, p, n, line, 0, off, overlong ? PP_FRAME_OVERLONG : 0);
}

static int framer_ndjson_feed(pp_framer *f, const char *data, size_t len, long long base)
{
    const char *p = data, *end = data + len;
    int rc;
    if (f->state) { /* a line is being carried */
        const char *nl = memchr(p, '\n', len);
        if ((rc = framer_carry(f, p, nl ? (size_t)(nl - p) : len)) != PGPIPE_OK)
            return rc;
        if (!nl)
            return PGPIPE_OK;
        f->state = 0;
        rc = framer_line(f, f->carry.data, f->carry.len, f->carry_line, f->carry_off, f->carry_over);
        framer_carry_done(f);
        if (rc != PGPIPE_OK)
            return rc;
        p = nl + 1;
    }
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) {
            f->state = 1;
            f->carry_line = ++f->line_no;
            f->carry_off = base + (p - data);
            return framer_carry(f, p, (size_t)(end - p));
        }
        size_t n = (size_t)(nl - p);
        f->line_no++;
        if (n > f->max_record)
            rc = framer_line(f, p, f->max_record, f->line_no, base + (p - data), 1);
        else
            rc = framer_line(f, p, n, f->line_no, base + (p - data), 0);
        if (rc != PGPIPE_OK)
            return rc;
        p = nl + 1;
    }
    return PGPIPE_OK;
}

/* ---- JSON array, streamed element by element ----------------------------------- */

PGPIPE_PRIVATE long long framer_column(const pp_framer *f, long long off)
{
    return off - f->nl_off - f->cont - (f->line_no == 0 ? f->bom_pos : 0) + 1;
}

/* The array's frame is broken at absolute offset off, by byte c. */
static int framer_fatal(pp_framer *f, long long off, const char *what, unsigned char c)
{
    char got[16];
    if (c >= 0x20 && c < 0x7f)
        snprintf(got, sizeof got, "'%c'", c);
    else
        snprintf(got, sizeof got, "byte 0x%02x", c);
    long long col = framer_column(f, off);
    return pp_err_at(&f->err, PGPIPE_PARSE, "", f->line_no + 1, col, off,
                     "%s, found %s at line %lld, column %lld (byte offset %lld)", what, got,
                     f->line_no + 1, col, off);
}

/* An element ended at data[end) (exclusive); it began at data[start) or in
** the carry buffer. */
static int framer_element(pp_framer *f, const char *data, size_t start, size_t end, int carried)
{
    int rc;
    if (carried) {
        if ((rc = framer_carry(f, data, end)) != PGPIPE_OK)
            return rc;
        rc = framer_emit(f, f->carry.data, f->carry.len, f->carry_line, f->carry_col, f->carry_off,
                         f->carry_over ? PP_FRAME_OVERLONG : 0);
        framer_carry_done(f);
        return rc;
    }
    size_t n = end - start;
    if (n > f->max_record)
        return framer_emit(f, data + start, f->max_record, f->carry_line, f->carry_col, f->carry_off,
                           PP_FRAME_OVERLONG);
    return framer_emit(f, data + start, n, f->carry_line, f->carry_col, f->carry_off, 0);
}

/* a newline at absolute offset pos of a JSON array: the next line starts */
#define FRAMER_NL(f, pos) ((f)->line_no++, (f)->nl_off = (pos) + 1, (f)->cont = 0)

/* An element ended at data[end): hand it over; the array goes on after it. */
static int framer_close(pp_framer *f, const char *data, size_t start, size_t end, int *carried)
{
    int rc = framer_element(f, data, start, end, *carried);
    if (rc != PGPIPE_OK)
        return rc;
    *carried = 0;
    f->state = PP_FR_AFTER;
    return PGPIPE_OK;
}

/* An element starts with byte c at absolute offset at. Returns the bytes
** taken: a string's quote or a container's bracket; a scalar's first byte
** is read again inside the element. */
static inline size_t framer_begin_element(pp_framer *f, unsigned char c, long long at)
{
    f->state = PP_FR_ELEM;
    f->depth = 0;
    f->instr = f->esc = 0;
    f->scalar = c != '{' && c != '[' && c != '"';
    f->carry_line = f->line_no + 1;
    f->carry_off = at;
    f->carry_col = f->carry_off - f->nl_off - f->cont - (f->line_no == 0 ? f->bom_pos : 0);
    if (f->scalar)
        return 0;
    if (c == '"')
        f->instr = 1;
    else
        f->depth = 1;
    return 1;
}

/* Inside an element (it began at data[start), or in the carry buffer when
** *carried): reads on from data[*pos] towards its end, a string's closing
** quote, a scalar's delimiter or the bracket that closes a container, and
** hands the element over there. Advances *pos. */
static inline int framer_in_element(pp_framer *f, const char *data, size_t len, long long base,
                                    size_t *pos, size_t start, int *carried)
{
    size_t i = *pos;
    unsigned char c = (unsigned char)data[i];
    int rc = PGPIPE_OK;
    if (f->instr) {
        /* skip plain string bytes quickly */
        while (i < len && data[i] != '"' && data[i] != '\\' && data[i] != '\n') {
            if (f->esc)
                f->esc = 0;
            f->cont += ((unsigned char)data[i] & 0xC0) == 0x80;
            i++;
        }
        if (i < len) {
            c = (unsigned char)data[i];
            if (f->esc) {
                f->esc = 0;
            } else if (c == '\\') {
                f->esc = 1;
            } else if (c == '"') {
                f->instr = 0;
                if (f->depth == 0) { /* a string element */
                    *pos = i + 1;
                    return framer_close(f, data, start, i + 1, carried);
                }
            }
            if (c == '\n')
                FRAMER_NL(f, base + (long long)i);
            i++;
        }
    } else if (f->scalar) {
        if (c == ',' || c == ']' || c == ' ' || c == '\t' || c == '\r' || c == '\n')
            rc = framer_close(f, data, start, i, carried); /* the byte is seen again in AFTER */
        else
            f->cont += (c & 0xC0) == 0x80, i++;
    } else {
        if (c == '"') f->instr = 1;
        else if (c == '{' || c == '[') f->depth++;
        else if (c == '}' || c == ']') f->depth--;
        else if (c == '\n') FRAMER_NL(f, base + (long long)i);
        else f->cont += (c & 0xC0) == 0x80;
        i++;
        if (f->depth == 0)
            rc = framer_close(f, data, start, i, carried);
    }
    *pos = i;
    return rc;
}

static int framer_array_feed(pp_framer *f, const char *data, size_t len, long long base)
{
    size_t i = 0, start = 0;
    int carried = f->state == PP_FR_ELEM; /* an element goes on from the last chunk */
    int rc;
    while (i < len) {
        unsigned char c = (unsigned char)data[i];
        switch (f->state) {
        case PP_FR_START:
            if (base + (long long)i < 3 && f->bom_pos == (int)(base + (long long)i) &&
                c == (unsigned char)"\xEF\xBB\xBF"[f->bom_pos]) {
                f->bom_pos++;
                i++;
                continue;
            }
            if (c == '[') { f->state = PP_FR_FIRST; i++; continue; }
            if (c == '\n') { FRAMER_NL(f, base + (long long)i); i++; continue; }
            if (c == ' ' || c == '\t' || c == '\r') { i++; continue; }
            if (c == '{') { /* one object (a pretty-printed document): the one record */
                f->single = 1;
                start = i;
                carried = 0;
                i += framer_begin_element(f, c, base + (long long)i);
                continue;
            }
            return framer_fatal(f, base + (long long)i,
                                "expected '[' to start a JSON array or '{' to start one object", c);
        case PP_FR_FIRST:
        case PP_FR_VALUE:
            if (c == '\n') { FRAMER_NL(f, base + (long long)i); i++; continue; }
            if (c == ' ' || c == '\t' || c == '\r') { i++; continue; }
            if (c == ']' && f->state == PP_FR_FIRST) { f->state = PP_FR_END; i++; continue; }
            if (c == ']' || c == ',')
                return framer_fatal(f, base + (long long)i, "expected an array element", c);
            start = i;
            carried = 0;
            i += framer_begin_element(f, c, base + (long long)i);
            continue;
        case PP_FR_ELEM:
            if ((rc = framer_in_element(f, data, len, base, &i, start, &carried)) != PGPIPE_OK)
                return rc;
            continue;
        case PP_FR_AFTER:
            if (c == '\n') { FRAMER_NL(f, base + (long long)i); i++; continue; }
            if (c == ' ' || c == '\t' || c == '\r') { i++; continue; }
            if (f->single)
                return framer_fatal(f, base + (long long)i, "unexpected data after the JSON object "
                                    "(a JSON file is one object or an array; one object a line "
                                    "is NDJSON)", c);
            if (c == ',') { f->state = PP_FR_VALUE; i++; continue; }
            if (c == ']') { f->state = PP_FR_END; i++; continue; }
            return framer_fatal(f, base + (long long)i, "expected ',' or ']' after an array element", c);
        default: /* PP_FR_END */
            if (c == '\n') { FRAMER_NL(f, base + (long long)i); i++; continue; }
            if (c == ' ' || c == '\t' || c == '\r') { i++; continue; }
            return framer_fatal(f, base + (long long)i, "unexpected data after the end of the array", c);
        }
    }
    if (f->state == PP_FR_ELEM) /* keep the element's bytes of this chunk */
        return framer_carry(f, data + (carried ? 0 : start), len - (carried ? 0 : start));
    return PGPIPE_OK;
}

static int framer_array_end(pp_framer *f)
{
    int rc = PGPIPE_OK;
    if (f->state == PP_FR_ELEM) {
        /* a scalar ends with the input; anything else was cut off */
        int cut = !(f->scalar && !f->instr);
        rc = framer_emit(f, f->carry.data ? f->carry.data : "", f->carry.len, f->carry_line,
                         f->carry_col, f->carry_off,
                         cut ? PP_FRAME_CUT : f->carry_over ? PP_FRAME_OVERLONG : 0);
        framer_carry_done(f);
        f->state = PP_FR_AFTER;
    }
    if (rc == PGPIPE_OK && f->state != PP_FR_END && f->state != PP_FR_START && !f->single)
        f->unclosed = 1;
    return rc;
}

/* ---- one document: the whole input is the record ------------------------------ */

static int framer_one_end(pp_framer *f)
{
    const char *p = f->carry.data ? f->carry.data : "";
    size_t n = f->carry.len;
    long long off = 0;
    if (n >= 3 && !memcmp(p, "\xEF\xBB\xBF", 3)) {
        p += 3;
        n -= 3;
        off = 3;
    }
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    int rc = PGPIPE_OK;
    if (i < n || f->carry_over)
        rc = framer_emit(f, p, n, 1, 0, off, f->carry_over ? PP_FRAME_OVERLONG : 0);
    framer_carry_done(f);
    return rc;
}

/* ---- entry points --------------------------------------------------------------- */

PGPIPE_PRIVATE int framer_feed(pp_framer *f, const char *data, size_t len)
{
    long long base = f->fed;
    f->fed += (long long)len;
    switch (f->kind) {
    case PP_FRAME_NDJSON: return framer_ndjson_feed(f, data, len, base);
    case PP_FRAME_ARRAY: return framer_array_feed(f, data, len, base);
    default: return framer_carry(f, data, len);
    }
}

PGPIPE_PRIVATE int framer_end(pp_framer *f)
{
    int rc;
    switch (f->kind) {
    case PP_FRAME_NDJSON:
        if (!f->state)
            return PGPIPE_OK;
        f->state = 0;
        rc = framer_line(f, f->carry.data ? f->carry.data : "", f->carry.len, f->carry_line,
                         f->carry_off, f->carry_over);
        framer_carry_done(f);
        return rc;
    case PP_FRAME_ARRAY:
        return framer_array_end(f);
    default:
        return framer_one_end(f);
    }
}
