/*
** COPY rows, text or binary: the one writer of the rows every source stages
** (the loader, the HTTP ingest, the pull, CDC), and the one question whether the
** staging table's columns still allow binary rows. The formats are in
** src/base/pp_base.h ("copyrow").
*/

#include "pp_base.h"

/* Binary rows and jsonb's member order are for speed only: a size build
** (PGPIPE_SMALL) sends COPY text as the JSON came, and the server's jsonb
** input sorts it. */
#define PP_COPY_BIN(w) (!PGPIPE_SMALL && (w)->binary)

static void copy_be(char *p, uint32_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xFF);
}

PGPIPE_PRIVATE int pp_copy_row_begin(pp_copy_w *w, pp_buf *b, int nfields)
{
    if (!PP_COPY_BIN(w))
        return PGPIPE_OK;
    if (pp_buf_reserve(b, 2) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    copy_be(b->data + b->len, (uint32_t)nfields, 2);
    b->len += 2;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_copy_row_end(const pp_copy_w *w, pp_buf *b)
{
    return PP_COPY_BIN(w) ? PGPIPE_OK : pp_buf_putc(b, '\n');
}

PGPIPE_PRIVATE int pp_copy_field_begin(pp_copy_w *w, pp_buf *b, int i)
{
    if (!PP_COPY_BIN(w))
        return i ? pp_buf_putc(b, '\t') : PGPIPE_OK;
    w->at = b->len;
    w->null = 0;
    return pp_buf_append(b, "\0\0\0\0", 4);
}

PGPIPE_PRIVATE void pp_copy_field_end(const pp_copy_w *w, pp_buf *b)
{
    if (PP_COPY_BIN(w))
        copy_be(b->data + w->at, w->null ? 0xFFFFFFFFu : (uint32_t)(b->len - w->at - 4), 4);
}

PGPIPE_PRIVATE int pp_copy_put_null(pp_copy_w *w, pp_buf *b)
{
    if (PP_COPY_BIN(w)) {
        w->null = 1;
        return PGPIPE_OK;
    }
    return pp_buf_append(b, "\\N", 2);
}

PGPIPE_PRIVATE int pp_copy_put_text(const pp_copy_w *w, pp_buf *b, const char *s, size_t n)
{
    return PP_COPY_BIN(w) ? pp_buf_append(b, s, n) : pp_copy_escape(b, s, n);
}

PGPIPE_PRIVATE int pp_copy_put_jsonb(const pp_copy_w *w, pp_buf *b, pp_buf scratch[2],
                                     const char *s, size_t n)
{
    if (PGPIPE_SMALL)
        return pp_copy_escape(b, s, n);
    if (!PP_COPY_BIN(w))
        return w->verbatim ? pp_copy_escape(b, s, n) : pp_copy_jsonb(b, scratch, s, n);
    int rc = pp_buf_putc(b, 1);
    return rc ? rc : pp_jsonb_order_buf(b, &scratch[1], s, n);
}

PGPIPE_PRIVATE int pp_copy_put_uuid(const pp_copy_w *w, pp_buf *b, const char *text,
                                    const unsigned char *bin)
{
    return PP_COPY_BIN(w) ? pp_buf_append(b, (const char *)bin, 16) : pp_buf_append(b, text, 36);
}

PGPIPE_PRIVATE int pp_copy_text_field(pp_copy_w *w, pp_buf *b, int i, const char *s, size_t n)
{
    int rc = pp_copy_field_begin(w, b, i);
    rc |= pp_copy_put_text(w, b, s, n);
    pp_copy_field_end(w, b);
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_uuid_bin(const char *text, unsigned char bin[16])
{
    int k = 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text[i] != '-')
                return -1;
            continue;
        }
        int hi = pp_hex_value(text[i]), lo = pp_hex_value(text[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        bin[k++] = (unsigned char)(hi << 4 | lo);
        i++;
    }
    return 0;
}

PGPIPE_PRIVATE int pp_copy_staging_format(PGconn *conn, const char *table)
{
    if (PGPIPE_SMALL || PQtransactionStatus(conn) != PQTRANS_IDLE)
        return PP_COPY_TEXT;
    const char *v[1] = { table };
    PGresult *r = NULL;
    if (pp_exec(conn, "SELECT count(*) FILTER (WHERE (a.attname::text, a.atttypid) IN "
                      "(('source', 'pg_catalog.text'::pg_catalog.regtype::oid), "
                      "('event_type', 'pg_catalog.text'::pg_catalog.regtype::oid), "
                      "('payload', 'pg_catalog.jsonb'::pg_catalog.regtype::oid), "
                      "('batch_id', 'pg_catalog.uuid'::pg_catalog.regtype::oid))) = 4, "
                      "coalesce(bool_or(a.attname = 'payload' AND a.atttypid <> "
                      "'pg_catalog.jsonb'::pg_catalog.regtype::oid), false) "
                      "FROM pg_catalog.pg_attribute a WHERE a.attrelid = "
                      "pg_catalog.to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped",
                1, v, &r, NULL, "copy") != PGPIPE_OK)
        return PP_COPY_TEXT;
    const char *fmt = getenv("PGPIPE_COPY_FORMAT");
    int fmt_text = fmt && !strcmp(fmt, "text");
    int f = PQntuples(r) != 1 ? PP_COPY_TEXT
          : PQgetvalue(r, 0, 1)[0] == 't' ? PP_COPY_VERBATIM
          : PQgetvalue(r, 0, 0)[0] == 't' && !fmt_text ? PP_COPY_BINARY : PP_COPY_TEXT;
    PQclear(r);
    return f;
}

PGPIPE_PRIVATE void pp_copy_w_format(pp_copy_w *w, int fmt)
{
    w->binary = fmt == PP_COPY_BINARY;
    w->verbatim = fmt == PP_COPY_VERBATIM;
}
