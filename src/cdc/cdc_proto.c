/*
** The pgoutput message decoder: one logical replication message (the
** payload of an XLogData message) into a pp_cdc_msg. Protocol versions 1
** and 2 (streamed transactions); the layout of each message is PostgreSQL's
** "Logical Replication Message Formats". No I/O: unit-testable on bytes.
*/
#include "pp_cdc.h"

#ifndef PGPIPE_OMIT_CDC

typedef struct rd {
    const char *p, *end;
    int bad;
} rd;

/* The next n bytes as a big-endian number (the protocol's byte order); a
** message too short for them marks the reader bad and reads 0. */
static uint64_t rd_be(rd *r, int n)
{
    if (r->end - r->p < n) {
        r->bad = 1;
        r->p = r->end;
        return 0;
    }
    const unsigned char *u = (const unsigned char *)r->p;
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | u[i];
    r->p += n;
    return v;
}
static uint8_t rd8(rd *r) { return (uint8_t)rd_be(r, 1); }
static uint16_t rd16(rd *r) { return (uint16_t)rd_be(r, 2); }
static uint32_t rd32(rd *r) { return (uint32_t)rd_be(r, 4); }
static uint64_t rd64(rd *r) { return rd_be(r, 8); }
/* A NUL-terminated string inside the message. */
static const char *rdstr(rd *r)
{
    const char *s = r->p;
    const char *nul = r->p < r->end ? memchr(r->p, '\0', (size_t)(r->end - r->p)) : NULL;
    if (!nul) {
        r->bad = 1;
        r->p = r->end;
        return "";
    }
    r->p = nul + 1;
    return s;
}

PGPIPE_PRIVATE const pp_cdc_rel *pp_cdc_rel_find(const pp_cdc_decoder *d, uint32_t oid)
{
    for (int i = 0; i < d->nrels; i++)
        if (d->rels[i].oid == oid)
            return &d->rels[i];
    return NULL;
}

static void rel_clear(pp_cdc_rel *r)
{
    pp_free(r->nsp);
    pp_free(r->name);
    for (int i = 0; i < r->ncols; i++)
        pp_free(r->cols[i].name);
    pp_free(r->cols);
    memset(r, 0, sizeof *r);
}

PGPIPE_PRIVATE void pp_cdc_decoder_free(pp_cdc_decoder *d)
{
    if (!d)
        return;
    for (int i = 0; i < d->nrels; i++)
        rel_clear(&d->rels[i]);
    pp_free(d->rels);
    pp_free(d->oldt.v);
    pp_free(d->newt.v);
    pp_free(d->relids);
    memset(d, 0, sizeof *d);
}

static int bad(pgpipe_error *err, char type, const char *what)
{
    return pp_err(err, PGPIPE_PARSE, "pgoutput message '%c': %s", type ? type : '?', what);
}

/* A Relation message replaces what the decoder knew of that OID (a column
** added, dropped, renamed or retyped arrives as a new description before
** the first change that needs it). */
static int dec_relation(pp_cdc_decoder *d, rd *r, pp_cdc_msg *m, pgpipe_error *err)
{
    pp_cdc_rel n;
    memset(&n, 0, sizeof n);
    n.oid = rd32(r);
    const char *nsp = rdstr(r), *name = rdstr(r);
    n.ident = (char)rd8(r);
    int ncols = rd16(r);
    if (r->bad)
        return bad(err, 'R', "truncated");
    n.nsp = pp_strdup(*nsp ? nsp : "pg_catalog");
    n.name = pp_strdup(name);
    n.cols = ncols ? pp_calloc((size_t)ncols, sizeof *n.cols) : NULL;
    if (!n.nsp || !n.name || (ncols && !n.cols)) {
        rel_clear(&n);
        return pp_err_nomem(err);
    }
    for (int i = 0; i < ncols; i++) {
        pp_cdc_col *c = &n.cols[i];
        c->key = rd8(r) & 1;
        const char *cn = rdstr(r);
        c->type = rd32(r);
        c->typmod = (int32_t)rd32(r);
        if (r->bad) {
            n.ncols = i;
            rel_clear(&n);
            return bad(err, 'R', "truncated column list");
        }
        n.ncols = i + 1;
        if (!(c->name = pp_strdup(cn))) {
            rel_clear(&n);
            return pp_err_nomem(err);
        }
    }
    pp_cdc_rel *slot = (pp_cdc_rel *)pp_cdc_rel_find(d, n.oid);
    if (slot) {
        rel_clear(slot);
    } else {
        if (d->nrels == d->caprels) {
            int cap = d->caprels ? d->caprels * 2 : 16;
            pp_cdc_rel *nr = pp_realloc(d->rels, (size_t)cap * sizeof *nr);
            if (!nr) {
                rel_clear(&n);
                return pp_err_nomem(err);
            }
            d->rels = nr;
            d->caprels = cap;
        }
        slot = &d->rels[d->nrels++];
    }
    *slot = n;
    m->rel = slot;
    return PGPIPE_OK;
}

static int dec_tuple(rd *r, pp_cdc_tuple *t, char type, pgpipe_error *err)
{
    int n = rd16(r);
    if (r->bad)
        return bad(err, type, "truncated tuple");
    if (n > t->cap) {
        pp_cdc_value *v = pp_realloc(t->v, (size_t)n * sizeof *v);
        if (!v)
            return pp_err_nomem(err);
        t->v = v;
        t->cap = n;
    }
    t->n = n;
    for (int i = 0; i < n; i++) {
        pp_cdc_value *v = &t->v[i];
        v->kind = (char)rd8(r);
        v->data = NULL;
        v->len = 0;
        switch (v->kind) {
        case 'n':
        case 'u':
            break;
        case 't':
        case 'b':
            v->len = rd32(r);
            if (r->bad || (size_t)(r->end - r->p) < v->len)
                return bad(err, type, "truncated column value");
            v->data = r->p;
            r->p += v->len;
            break;
        default:
            return r->bad ? bad(err, type, "truncated tuple")
                          : pp_err(err, PGPIPE_PARSE,
                                   "pgoutput message '%c': unknown column kind 0x%02x", type,
                                   (unsigned char)v->kind);
        }
    }
    return PGPIPE_OK;
}

/* I U D: the relation must be known and the tuple as wide as it says. */
static int dec_rel_of(pp_cdc_decoder *d, rd *r, pp_cdc_msg *m, pgpipe_error *err)
{
    uint32_t oid = rd32(r);
    if (r->bad)
        return bad(err, m->type, "truncated");
    if (!(m->rel = pp_cdc_rel_find(d, oid)))
        return pp_err(err, PGPIPE_PARSE,
                      "pgoutput message '%c': relation %u was not described by a Relation "
                      "message first", m->type, oid);
    return PGPIPE_OK;
}

static int check_width(const pp_cdc_msg *m, const pp_cdc_tuple *t, pgpipe_error *err)
{
    if (t->n != m->rel->ncols)
        return pp_err(err, PGPIPE_PARSE,
                      "pgoutput message '%c': %d columns for %s.%s, its Relation message has %d",
                      m->type, t->n, m->rel->nsp, m->rel->name, m->rel->ncols);
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_cdc_decode(pp_cdc_decoder *d, const char *buf, size_t len,
                                 pp_cdc_msg *m, pgpipe_error *err)
{
    memset(m, 0, sizeof *m);
    rd r = { buf, buf + len, 0 };
    if (len < 1)
        return bad(err, 0, "empty message");
    m->type = (char)rd8(&r);
    int rc;
    /* inside a streamed block, these carry the (sub)transaction's xid */
    switch (m->type) {
    case 'R': case 'Y': case 'I': case 'U': case 'D': case 'T': case 'M':
        if (d->in_stream)
            m->xid = rd32(&r);
        break;
    default:
        break;
    }
    switch (m->type) {
    case 'B':
        m->lsn = rd64(&r);
        m->ts = (int64_t)rd64(&r);
        m->xid = rd32(&r);
        break;
    case 'C':
        m->flags = rd8(&r);
        m->lsn = rd64(&r);
        m->end_lsn = rd64(&r);
        m->ts = (int64_t)rd64(&r);
        break;
    case 'O':
        m->lsn = rd64(&r);
        m->name = rdstr(&r);
        break;
    case 'R':
        if (r.bad)
            return bad(err, m->type, "truncated");
        return dec_relation(d, &r, m, err);
    case 'Y':
        m->oid = rd32(&r);
        m->nsp = rdstr(&r);
        m->name = rdstr(&r);
        break;
    case 'I':
        if ((rc = dec_rel_of(d, &r, m, err)) != PGPIPE_OK)
            return rc;
        if (rd8(&r) != 'N')
            return bad(err, m->type, r.bad ? "truncated" : "expected 'N' before the new tuple");
        if ((rc = dec_tuple(&r, &d->newt, m->type, err)) != PGPIPE_OK ||
            (rc = check_width(m, &d->newt, err)) != PGPIPE_OK)
            return rc;
        m->newt = &d->newt;
        break;
    case 'U':
    case 'D': {
        if ((rc = dec_rel_of(d, &r, m, err)) != PGPIPE_OK)
            return rc;
        uint8_t k = rd8(&r);
        if (k == 'K' || k == 'O') {
            m->old_kind = (char)k;
            if ((rc = dec_tuple(&r, &d->oldt, m->type, err)) != PGPIPE_OK ||
                (rc = check_width(m, &d->oldt, err)) != PGPIPE_OK)
                return rc;
            m->oldt = &d->oldt;
            if (m->type == 'U')
                k = rd8(&r);
        } else if (m->type == 'D') {
            return bad(err, m->type, r.bad ? "truncated" : "expected 'K' or 'O'");
        }
        if (m->type == 'U') {
            if (k != 'N')
                return bad(err, m->type, r.bad ? "truncated" : "expected 'N' before the new tuple");
            if ((rc = dec_tuple(&r, &d->newt, m->type, err)) != PGPIPE_OK ||
                (rc = check_width(m, &d->newt, err)) != PGPIPE_OK)
                return rc;
            m->newt = &d->newt;
        }
        break;
    }
    case 'T': {
        uint32_t n = rd32(&r);
        m->flags = rd8(&r);
        if (r.bad || (size_t)(r.end - r.p) / 4 < n)
            return bad(err, m->type, "truncated");
        if ((int)n > d->caprelids) {
            uint32_t *ids = pp_realloc(d->relids, (size_t)n * sizeof *ids);
            if (!ids)
                return pp_err_nomem(err);
            d->relids = ids;
            d->caprelids = (int)n;
        }
        for (uint32_t i = 0; i < n; i++)
            d->relids[i] = rd32(&r);
        m->relids = d->relids;
        m->nrelids = (int)n;
        break;
    }
    case 'M':
        m->flags = rd8(&r);
        m->lsn = rd64(&r);
        m->name = rdstr(&r);
        m->content_len = rd32(&r);
        if (r.bad || (size_t)(r.end - r.p) < m->content_len)
            return bad(err, m->type, "truncated");
        m->content = r.p;
        r.p += m->content_len;
        break;
    case 'S':
        m->xid = rd32(&r);
        m->first_segment = rd8(&r);
        if (!r.bad)
            d->in_stream = 1;
        break;
    case 'E':
        d->in_stream = 0;
        break;
    case 'c':
        m->xid = rd32(&r);
        m->flags = rd8(&r);
        m->lsn = rd64(&r);
        m->end_lsn = rd64(&r);
        m->ts = (int64_t)rd64(&r);
        break;
    case 'A':
        m->xid = rd32(&r);
        m->subxid = rd32(&r);
        /* protocol 4 adds the abort LSN and time; ignored */
        break;
    default:
        return pp_err(err, PGPIPE_PARSE, "pgoutput: unknown message type 0x%02x",
                      (unsigned char)m->type);
    }
    if (r.bad)
        return bad(err, m->type, "truncated");
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void pp_cdc_lsn_str(uint64_t lsn, char *out, size_t size)
{
    snprintf(out, size, "%X/%X", (unsigned)(lsn >> 32), (unsigned)(lsn & 0xFFFFFFFFu));
}

PGPIPE_PRIVATE int pp_cdc_lsn_parse(const char *s, uint64_t *lsn)
{
    unsigned hi, lo;
    int used = 0;
    if (!s || sscanf(s, "%X/%X%n", &hi, &lo, &used) != 2 || s[used])
        return 0;
    *lsn = (uint64_t)hi << 32 | lo;
    return 1;
}

#endif /* PGPIPE_OMIT_CDC */
