/*
** Request bodies into records, group commit into staging, idempotency keys,
** dead letters, backpressure.
**
** The way of a request. pp_ingest_submit (the event loop's thread) cuts the
** body into records (JSON: the framer for arrays and NDJSON, one document
** otherwise; CSV: the csv reader, each row an object as the loader makes
** it), parses each JSON record once (event_type field, idempotency field)
** and appends its COPY text for staging.raw_events straight to the open
** group's buffer; a record that is not valid goes, as COPY text for
** pgpipe.dead_letters, to the group's dead-letter buffer. A body that
** cannot be cut into records at all is refused with 400 and leaves nothing
** behind. The group closes after group_window_ms or group_records records;
** a committer thread (each with its own connection) takes it and runs one
** transaction: lock the group's idempotency keys (pg_advisory_xact_lock on
** their hashes, sorted), look them up (a key committed before: that request
** gets its stored response and adds nothing; a key repeated inside the
** group: the first applies), COPY the rows, COPY the dead letters, record
** the keys with their responses, COMMIT. Only then is each request answered
** through done(). A row the server refuses (a \u0000 JSONB cannot hold) is
** isolated under savepoints and dead-lettered alone; a lost connection or a
** failed COMMIT answers 503 Retry-After (the outcome is unknown: a client
** retrying with its key is safe), never 202.
**
** Records in = accepted + dead-lettered holds for every request: both are
** written in its group's transaction.
*/

#include "pp_http.h"

#ifndef PGPIPE_OMIT_HTTP
#include <sys/socket.h> /* shutdown: the watchdog */

#define IG_MAX_KEY 255          /* bytes of an idempotency key */
#define IG_MAX_LISTED 100       /* errors listed in one response (the count has all) */
#define IG_SEND_CHUNK (32 * 1024)
#define IG_MAX_COMMITTERS 16
#define IG_MAINTAIN_US (3600LL * 1000000) /* http_keys partitions: hourly */
#define IG_PING_US (1000LL * 1000)           /* an idle connection is checked */
#define IG_WATCH_MS 100                        /* the watchdog looks this often */
#define IG_STUCK_US (5000LL * 1000)           /* /readyz: a committer waiting this long
                                                  (or the commit timeout, if shorter) */
#define IG_NONE UINT32_MAX
/* keyed requests in one group: each holds an advisory lock until COMMIT, and
** the server's lock table has max_locks_per_transaction x max_connections
** slots for everyone (6,400 by default) */
#define IG_GROUP_KEYS 1000

/* what becomes of a request in its group's transaction (IG_SEEN: a request
** drained from the server's spool that an earlier drain committed) */
enum { IG_NEW, IG_REPLAY, IG_EXPIRED, IG_DUP, IG_SEEN };

#define IG_MAX_SEQ 4611686018427387903LL /* 2^62 - 1: seq + records never overflows */

typedef struct ig_row {
    size_t coff;        /* its COPY text in g->cbuf */
    size_t roff, rlen;  /* the record as sent, in g->rbuf */
    uint32_t req;
    uint32_t rec;       /* 1-based record number in its request */
    long long line, col, off;
    int bad;            /* refused by the server: dead-lettered */
    int skip;           /* a duplicate (device position): not written */
} ig_row;

typedef struct ig_err {
    uint32_t next;      /* the request's next error, IG_NONE */
    uint32_t rec;
    long long line, col, off;
    size_t moff, mlen;  /* message in g->mbuf */
    size_t doff, dlen;  /* its dead letter of validation in g->dbuf (dlen 0: the server's) */
} ig_err;

typedef struct ig_req {
    uint64_t ticket;
    char id[37];
    unsigned char id_bin[16]; /* the same for binary COPY */
    int fate;           /* IG_* */
    uint32_t first;     /* IG_DUP: the request of the group it repeats */
    size_t src_off, src_len; /* source name in g->kbuf */
    size_t key_off, key_len; /* "source\nkey" NUL-ended in g->kbuf; key_len 0: none */
    size_t keyonly;     /* offset of the key itself */
    int window_hours;
    size_t row_lo, row_hi;
    size_t d_lo, d_hi;  /* its dead letters of validation in g->dbuf */
    long long nrec, dead;
    uint32_t err_head, err_tail;
    size_t bytes;       /* counted in pending_bytes */
    char *answer;       /* its response body once known */
    size_t answer_len;
    int status;
    /* device positions: Pgpipe-Device / Pgpipe-Seq (per record) and the
    ** server's own spool (the whole request): "device\nspool" in g->kbuf */
    int has_dev;
    size_t dev_off;
    long long seq0;     /* the first record's sequence */
    int from_spool;     /* drained from the server's spool */
    long long spool_seq;
    long long cut;      /* records 1..cut are duplicates */
    long long dup_dead; /* of them, dead letters of validation */
} ig_req;

typedef struct ig_group {
    struct ig_group *next;
    ig_req *reqs;
    size_t nreqs, capreqs;
    ig_row *rows;
    size_t nrows, caprows;
    ig_err *errs;
    size_t nerrs, caperrs;
    pp_copy_w cw;       /* its rows' format (ig->fmt when it opened) */
    pp_buf cbuf;        /* COPY rows of staging.raw_events */
    pp_buf rbuf;        /* the records as sent */
    pp_buf dbuf;        /* COPY text of dead letters */
    pp_buf kbuf;        /* sources and keys */
    pp_buf mbuf;        /* error messages */
    long long nrecords;
    size_t bytes;
    int nkeys;
    int nclaims;        /* requests with a device position to check */
    int64_t t_first;
} ig_group;

/* one device's position in a group's transaction */
typedef struct ig_pos {
    const char *key;    /* "device\nspool" in g->kbuf or ig->sp_claim */
    long long cur;      /* last_seq as the transaction goes */
    int changed;
} ig_pos;

typedef struct ig_committer {
    pp_ingest *ig;
    int idx;
    PGconn *conn;
    int live;           /* counted in ig->live */
    int64_t next_try;   /* reconnect not before (monotonic us) */
    int backoff_ms;
    int64_t maintained; /* last http_keys_maintain, 0 = never */
    int64_t used;       /* the connection last answered (monotonic us) */
    pgpipe_error err;
    pp_buf a[6];        /* array parameters */
    struct ig_pos *pos; /* device positions of the group */
    size_t npos, cappos;
    uint32_t *phash;
    size_t capphash;
    pp_buf scratch;
    uint32_t *hash;     /* in-group key dedup */
    size_t caphash;
    pthread_t tid;
    int started;
    atomic_int recheck; /* another committer lost its connection: check this
                           one's (counted in ig->rechecks) */
    /* the watchdog's view, under ig->wmu: a statement waits for the server
    ** since busy_since (monotonic us, 0: none) on socket fd (-1: none); cut:
    ** the watchdog shut that socket down (the database did not answer) */
    int64_t busy_since;
    int fd;
    int cut;
    char logged[256];   /* the connect failure last logged (not again and again) */
} ig_committer;

/* Prometheus histogram buckets */
static const double ig_size_le[] = { 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000 };
static const double ig_lat_le[] = { 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5 };
#define IG_NSIZE (sizeof ig_size_le / sizeof ig_size_le[0])
#define IG_NLAT (sizeof ig_lat_le / sizeof ig_lat_le[0])

struct pp_ingest {
    struct pgpipe_http *h;
    pp_ingest_done_fn done;
    pp_http_auth *auth;
    const pgpipe_http_options *o;   /* for its sources when there is no auth */
    pgpipe_http_source defaults;
    char *conninfo;
    int max_records;
    size_t max_body;
    int window_ms;
    int group_records;
    size_t budget;
    int keep_hours;     /* http_keys partitions are dropped past this */
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* committers wait for work */
    pthread_cond_t dcv; /* the drain waits for answers */
    ig_group *open;     /* filling */
    ig_group *qhead, *qtail; /* closed, waiting for a committer */
    ig_group *spare;    /* reusable */
    int quit;
    int flush;          /* commit what is open without waiting */
    long long pending;  /* requests queued or committing */
    size_t pending_bytes;
    atomic_int live;    /* committers with a working connection */
    /* the rows' format of new groups (PP_COPY_*): binary when the last
    ** check (ig_maintain) found staging.raw_events' columns as they should
    ** be, the JSON as it came when payload is json (pp_copy_staging_format) */
    atomic_int fmt;
    atomic_int rechecks; /* committers whose connection is to be checked */
    /* the watchdog: a committer whose database does not answer for
    ** commit_us has its socket shut down, so its blocked libpq call fails
    ** and the group's requests are answered 503 in bounded time */
    int64_t commit_us;
    pthread_mutex_t wmu;
    pthread_cond_t wcv;
    pthread_t watchdog;
    int has_watchdog;
    int wquit;
    long long m_timeouts; /* under wmu */
    ig_committer cm[IG_MAX_COMMITTERS];
    int ncm;
    /* the submit's state (event loop's thread only) */
    pgpipe_json_doc *doc;
    pp_framer fr;
    pp_buf etb;         /* the request's row start (its source) and event type header */
    pp_buf jb[2];       /* a record in jsonb's member order (pp_copy_jsonb) */
#ifndef PGPIPE_OMIT_SPOOL
    /* store and forward: the spool, its drainer */
    pgpipe_spool *sp;
    char sp_claim[160];     /* "device\nspool id" of the server's spool */
    pthread_mutex_t spmu;   /* the decision to spool and the append */
    pthread_cond_t scv;     /* the drainer waits for work (not on cv: a committer's
                               signal must not wake it instead) */
    atomic_int spooling;    /* the spool holds records: new requests go there too */
    pthread_t drainer;
    int has_drainer;
    int hold;               /* the drainer fills the open group: not taken yet */
    int dquit;              /* the drainer stops (before the committers) */
    long long m_drain_bad;
    long long d_inflight;   /* drained requests not answered yet (under mu) */
    long long d_failed;     /* ... whose group failed */
    pp_buf env;             /* a spooled request (event loop's thread) */
    long long m_spooled_req, m_spooled_rec, m_spool_refused, m_drained, m_drain_dup, m_drain_seen,
        m_drain_failed;
#endif
    /* metrics, under mu */
    long long m_dup;
    long long m_accepted, m_dead, m_committed, m_replayed, m_refused, m_failed, m_reconnects;
    long long m_groups, m_size_b[IG_NSIZE + 1], m_lat_b[IG_NLAT + 1];
    double m_size_sum, m_lat_sum;
};

/* ---- small helpers ---------------------------------------------------------- */

static int ig_reply(pp_http_reply *r, int status, const char *code, const char *id,
                    int retry_after, const char *msg)
{
    memset(r, 0, sizeof *r);
    if (pp_http_reply_error(r, status, code, id, "%s", msg) != PGPIPE_OK) {
        r->status = status;
        r->content_type = "application/json";
    }
    r->retry_after = retry_after;
    return 1;
}

static int ig_grow(void **p, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return PGPIPE_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = pp_realloc(*p, n * size);
    if (!q)
        return PGPIPE_NOMEM;
    *p = q;
    *cap = n;
    return PGPIPE_OK;
}

static const char *ig_header(const pp_http_request *rq, const char *name, size_t *len)
{
    if (!name || !*name)
        return NULL;
    const char *v = pp_http_header_get(rq, name, len);
    return v && *len ? v : NULL;
}

static const pgpipe_http_source *ig_source(const pp_ingest *ig, const char *name)
{
    if (ig->auth)
        return pp_http_auth_source(ig->auth, name);
    const pgpipe_http_source *star = NULL;
    for (int i = 0; ig->o && i < ig->o->nsources; i++) {
        const pgpipe_http_source *s = &ig->o->sources[i];
        if (s->name && !strcmp(s->name, name))
            return s;
        if (s->name && !strcmp(s->name, "*"))
            star = s;
    }
    return star ? star : &ig->defaults;
}

static int ig_window(const pp_ingest *ig, const pgpipe_http_source *s)
{
    return s->window_hours > 0 ? s->window_hours : ig->defaults.window_hours;
}

/* "text at line 3, column 7" -> "text" (the caller names the position). */
static size_t ig_msg_len(const char *m)
{
    const char *p = strstr(m, " at line ");
    return p ? (size_t)(p - m) : strlen(m);
}

/* ---- groups ---------------------------------------------------------------------- */

static ig_group *ig_group_get(pp_ingest *ig)
{
    ig_group *g = ig->spare;
    if (g) {
        ig->spare = g->next;
    } else if (!(g = pp_calloc(1, sizeof *g))) {
        return NULL;
    }
    g->next = NULL;
    g->nreqs = g->nrows = g->nerrs = 0;
    g->cbuf.len = g->rbuf.len = g->dbuf.len = g->kbuf.len = g->mbuf.len = 0;
    g->nrecords = 0;
    g->bytes = 0;
    g->nkeys = 0;
    g->nclaims = 0;
    g->t_first = 0;
    pp_copy_w_format(&g->cw, atomic_load(&ig->fmt));
    return g;
}

static void ig_group_free(ig_group *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->nreqs; i++)
        pp_free(g->reqs[i].answer);
    pp_free(g->reqs);
    pp_free(g->rows);
    pp_free(g->errs);
    pp_buf_free(&g->cbuf);
    pp_buf_free(&g->rbuf);
    pp_buf_free(&g->dbuf);
    pp_buf_free(&g->kbuf);
    pp_buf_free(&g->mbuf);
    pp_free(g);
}

/* A group back to the spares; a very large one gives its memory back. */
static void ig_group_put(pp_ingest *ig, ig_group *g)
{
    if (g->cbuf.cap + g->rbuf.cap > 8u * 1024 * 1024) {
        ig_group_free(g);
        return;
    }
    g->next = ig->spare;
    ig->spare = g;
}

/* ---- cutting a body into records ------------------------------------------------ */

typedef struct ig_parse {
    pp_ingest *ig;
    ig_group *g;
    ig_req *r;
    uint32_t ri;
    const pgpipe_http_source *s;
    const char *body;
    size_t body_len;
    size_t body_off;         /* of the body in g->rbuf */
    const char *et_hdr;      /* event_type from a header (as a COPY value in et_buf) */
    pp_buf *et_buf;          /* a row's start up to its source, and the event type header */
    size_t et_src;           /* bytes of the row's start in et_buf */
    pp_copy_w cw;            /* the group's format */
    const char *et_field;
    const char *id_field;    /* idempotency field (single-record bodies) */
    char idval[IG_MAX_KEY + 2];
    int idlen;               /* -1 none, -2 too long or not text */
    int single;              /* the body is one document: a bad one is a 400 */
    int status;              /* a refusal: 400 / 413 */
    char why[600];
} ig_parse;

static int ig_add_err(ig_group *g, ig_req *r, uint32_t rec, long long line, long long col,
                      long long off, const char *msg, size_t mlen)
{
    if (ig_grow((void **)&g->errs, &g->caperrs, g->nerrs + 1, sizeof *g->errs) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    uint32_t k = (uint32_t)g->nerrs++;
    ig_err *e = &g->errs[k];
    e->next = IG_NONE;
    e->rec = rec;
    e->line = line;
    e->col = col;
    e->off = off;
    e->moff = g->mbuf.len;
    e->mlen = mlen;
    e->doff = e->dlen = 0;
    if (r->err_tail != IG_NONE)
        g->errs[r->err_tail].next = k;
    else
        r->err_head = k;
    r->err_tail = k;
    return pp_buf_append(&g->mbuf, msg, mlen);
}

/* The current record of the request (raw, at line/col/off) is a dead letter. */
static int ig_dead(ig_parse *p, const char *raw, size_t len, long long line, long long col,
                   long long off, const char *msg, size_t mlen)
{
    ig_group *g = p->g;
    char m[700];
    snprintf(m, sizeof m, "%.*s", (int)(mlen < 600 ? mlen : 600), msg);
    char ctx[64];
    snprintf(ctx, sizeof ctx, "http request %s, record %lld", p->r->id, p->r->nrec);
    pp_dlq_load_letter d = { .source = g->kbuf.data + p->r->src_off, .line = line, .column = col,
                             .offset = off, .load_id = 0, .batch_id = p->r->id, .raw = raw,
                             .rawlen = len, .message = m, .sqlstate = NULL, .context = ctx };
    p->r->dead++;
    size_t doff = g->dbuf.len;
    if (pp_dlq_load_row(&g->dbuf, &d) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    if (ig_add_err(g, p->r, (uint32_t)p->r->nrec, line, col, off, m, strlen(m)) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    g->errs[g->nerrs - 1].doff = doff;
    g->errs[g->nerrs - 1].dlen = g->dbuf.len - doff;
    return PGPIPE_OK;
}

/* A body error that refuses the whole request (400 / 413). */
static int ig_refuse(ig_parse *p, int status, const char *fmt, ...) PP_PRINTF(3, 4);
static int ig_refuse(ig_parse *p, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->why, sizeof p->why, fmt, ap);
    va_end(ap);
    p->status = status;
    return PGPIPE_PARSE;
}

static int ig_count(ig_parse *p)
{
    if (p->ig->max_records > 0 && p->r->nrec >= p->ig->max_records)
        return ig_refuse(p, 413, "the body holds more than %d records (max_records)",
                         p->ig->max_records);
    p->r->nrec++;
    return PGPIPE_OK;
}

/* A row of staging.raw_events: source, event_type, payload, batch_id.
** ig_row_begin writes the source and begins the event type, which the
** caller writes; ig_row_payload begins the payload, which the caller
** writes; ig_row_end writes the batch id (the request's id). */
static int ig_row_begin(ig_parse *p, size_t *coff)
{
    ig_group *g = p->g;
    *coff = g->cbuf.len;
    int rc = pp_buf_append(&g->cbuf, p->et_buf->data, p->et_src);
    return rc | pp_copy_field_begin(&p->cw, &g->cbuf, 1);
}

static int ig_row_payload(ig_parse *p)
{
    pp_copy_field_end(&p->cw, &p->g->cbuf);
    return pp_copy_field_begin(&p->cw, &p->g->cbuf, 2);
}

static int ig_row_end(ig_parse *p, size_t coff, const char *raw, size_t len, long long line,
                      long long col, long long off)
{
    ig_group *g = p->g;
    pp_copy_field_end(&p->cw, &g->cbuf);
    int rc = pp_copy_field_begin(&p->cw, &g->cbuf, 3);
    rc |= pp_copy_put_uuid(&p->cw, &g->cbuf, p->r->id, p->r->id_bin);
    pp_copy_field_end(&p->cw, &g->cbuf);
    rc |= pp_copy_row_end(&p->cw, &g->cbuf);
    if (rc != PGPIPE_OK ||
        ig_grow((void **)&g->rows, &g->caprows, g->nrows + 1, sizeof *g->rows) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    ig_row *w = &g->rows[g->nrows++];
    w->coff = coff;
    uintptr_t a = (uintptr_t)raw, b0 = (uintptr_t)p->body;
    if (raw && a >= b0 && a + len <= b0 + p->body_len) {
        w->roff = p->body_off + (size_t)(a - b0);
    } else {
        w->roff = g->rbuf.len;
        if (pp_buf_append(&g->rbuf, raw ? raw : "", len) != PGPIPE_OK)
            return PGPIPE_NOMEM;
    }
    w->rlen = len;
    w->req = p->ri;
    w->rec = (uint32_t)p->r->nrec;
    w->line = line;
    w->col = col;
    w->off = off;
    w->bad = 0;
    w->skip = 0;
    return PGPIPE_OK;
}

/* The event type from the record's field v, else the header's,
** else NULL (the record is a dead letter). */
static int ig_put_event_type(ig_parse *p, const pgpipe_json_val *v, const char **why)
{
    pp_buf *b = &p->g->cbuf;
    size_t n;
    const char *s;
    switch (pgpipe_json_type(v)) {
    case PGPIPE_JSON_STRING:
        s = pgpipe_json_get_str(v, &n);
        if (memchr(s, '\0', n)) {
            *why = "holds a NUL character";
            return PGPIPE_PARSE;
        }
        return pp_copy_put_text(&p->cw, b, s, n);
    case PGPIPE_JSON_NUMBER:
        s = pgpipe_json_number_text(v, &n);
        return pp_buf_append(b, s, n);
    case PGPIPE_JSON_BOOL:
        return pgpipe_json_get_bool(v) ? pp_buf_append(b, "true", 4) : pp_buf_append(b, "false", 5);
    case PGPIPE_JSON_INVALID:
    case PGPIPE_JSON_NULL:
        if (p->et_hdr)
            return pp_buf_append(b, p->et_buf->data + p->et_src, p->et_buf->len - p->et_src);
        *why = "is missing and the request names no event type (header)";
        return PGPIPE_PARSE;
    default:
        *why = "is not a string";
        return PGPIPE_PARSE;
    }
}

/* The value of the LAST member named key, as jsonb keeps it ({"id":"A","id":"B"}
** is stored as {"id":"B"}): the key and the event type must be what is
** stored. (pgpipe_json_obj_get finds the first.) */
static const pgpipe_json_val *ig_member(const pgpipe_json_val *obj, const char *key)
{
    pgpipe_json_iter it;
    const pgpipe_json_val *k, *v, *found = NULL;
    size_t n = strlen(key), kn;
    if (pgpipe_json_iter_init(&it, obj) != PGPIPE_OK)
        return NULL;
    while ((v = pgpipe_json_iter_next(&it, &k)) != NULL) {
        const char *ks = pgpipe_json_get_str(k, &kn);
        if (ks && kn == n && !memcmp(ks, key, n))
            found = v;
    }
    return found;
}

/* One JSON record: raw starts at line (col characters into it) and byte off. */
static int ig_json_record(ig_parse *p, const char *raw, size_t len, long long line,
                          long long col, long long off)
{
    ig_group *g = p->g;
    int rc = ig_count(p);
    if (rc != PGPIPE_OK)
        return rc;
    rc = pgpipe_json_parse(p->ig->doc, raw, len);
    if (rc == PGPIPE_NOMEM)
        return rc;
    char m[700];
    if (rc != PGPIPE_OK) {
        const pgpipe_error *e = pgpipe_errinfo(p->ig->doc);
        long long eline = line + (e->line > 0 ? e->line - 1 : 0);
        long long ecol = e->column + (e->line <= 1 ? col : 0);
        long long eoff = off + (e->offset > 0 ? e->offset : 0);
        if (p->single)
            return ig_refuse(p, 400, "the body is not valid JSON: %.*s at line %lld, column %lld "
                             "(byte offset %lld)", (int)ig_msg_len(e->message), e->message, eline,
                             ecol, eoff);
        int ml = snprintf(m, sizeof m, "%.*s at line %lld, column %lld",
                          (int)ig_msg_len(e->message), e->message, eline, ecol);
        return ig_dead(p, raw, len, eline, ecol, eoff, m, (size_t)ml);
    }
    const pgpipe_json_val *root = pgpipe_json_root(p->ig->doc);
    if (pgpipe_json_type(root) != PGPIPE_JSON_OBJECT) {
        if (p->single)
            return ig_refuse(p, 400, "the body is a JSON %s, not an object or an array of objects",
                             pgpipe_json_type_name(pgpipe_json_type(root)));
        int ml = snprintf(m, sizeof m, "record is a JSON %s, not an object",
                          pgpipe_json_type_name(pgpipe_json_type(root)));
        return ig_dead(p, raw, len, line, col + 1, off, m, (size_t)ml);
    }
    if (p->id_field && p->r->nrec == 1) {
        const pgpipe_json_val *v = ig_member(root, p->id_field);
        size_t n = 0;
        const char *s = NULL;
        if (pgpipe_json_type(v) == PGPIPE_JSON_STRING)
            s = pgpipe_json_get_str(v, &n);
        else if (pgpipe_json_type(v) == PGPIPE_JSON_NUMBER)
            s = pgpipe_json_number_text(v, &n);
        if (s && n <= IG_MAX_KEY) {
            memcpy(p->idval, s, n);
            p->idlen = (int)n;
        } else if (s) {
            p->idlen = -2;
        }
    }
    size_t coff;
    rc = ig_row_begin(p, &coff);
    const char *why = NULL;
    if (rc == PGPIPE_OK) {
        const pgpipe_json_val *v = p->et_field
            ? ig_member(root, p->et_field) : NULL;
        rc = ig_put_event_type(p, v, &why);
    }
    if (rc == PGPIPE_PARSE) {
        g->cbuf.len = coff;
        int ml = snprintf(m, sizeof m, "field \"%s\" %s", p->et_field ? p->et_field : "event_type",
                          why);
        return ig_dead(p, raw, len, line, col ? col + 1 : 0, off, m, (size_t)ml);
    }
    rc |= ig_row_payload(p);
    /* in jsonb's member order: the server's jsonb input has nothing to sort */
    rc |= pp_copy_put_jsonb(&p->cw, &g->cbuf, p->ig->jb, raw, len);
    if (rc != PGPIPE_OK)
        return PGPIPE_NOMEM;
    return ig_row_end(p, coff, raw, len, line, col, off);
}

static int ig_frame(void *ud, const pp_frame *f)
{
    ig_parse *p = ud;
    if (f->flags & PP_FRAME_CUT)
        return ig_refuse(p, 400, "the body ends inside the array element at line %lld, column %lld "
                         "(byte offset %lld)", f->line, f->col + 1, f->off);
    if (f->flags & PP_FRAME_OVERLONG) {
        int rc = ig_count(p);
        if (rc != PGPIPE_OK)
            return rc;
        static const char m[] = "record longer than the body limit";
        return ig_dead(p, f->raw, f->len, f->line, f->col + 1, f->off, m, sizeof m - 1);
    }
    return ig_json_record(p, f->raw, f->len, f->line, f->col, f->off);
}

static int ig_json_body(ig_parse *p, int ndjson)
{
    const char *b = p->body;
    size_t n = p->body_len;
    size_t i = 0;
    if (n >= 3 && !memcmp(b, "\xEF\xBB\xBF", 3))
        i = 3;
    size_t j = i;
    while (j < n && (b[j] == ' ' || b[j] == '\t' || b[j] == '\r' || b[j] == '\n'))
        j++;
    if (j == n)
        return ig_refuse(p, 400, "the body is empty: no record");
    if (!ndjson && b[j] != '[') {
        /* one document: the whole body is the record (no framer copy) */
        p->single = 1;
        long long line = 1, col = 0;
        return ig_json_record(p, b + i, n - i, line, col, (long long)i);
    }
    if (ndjson) {
        /* one line (a single event, the common post): what the framer would
        ** hand over, without it: the line less a final CR and the BOM, as
        ** line 1 at column 0 */
        const char *nl = memchr(b, '\n', n);
        size_t len = nl ? (size_t)(nl - b) : n;
        if (len + (nl != NULL) == n && len <= (p->ig->max_body ? p->ig->max_body : n + 1)) {
            long long off = 0;
            const char *r = b;
            if (len && r[len - 1] == '\r')
                len--;
            if (len >= 3 && !memcmp(r, "\xEF\xBB\xBF", 3)) {
                r += 3;
                len -= 3;
                off = 3;
            }
            size_t k = 0;
            while (k < len && (r[k] == ' ' || r[k] == '\t' || r[k] == '\r'))
                k++;
            if (k < len) /* (a blank line is no record: the framer's) */
                return ig_json_record(p, r, len, 1, 0, off);
        }
    }
    pp_framer *fr = &p->ig->fr;
    framer_begin(fr, ndjson ? PP_FRAME_NDJSON : PP_FRAME_ARRAY, p->ig->max_body ? p->ig->max_body : n + 1,
                 ig_frame, p);
    int rc = framer_feed(fr, b, n);
    if (rc == PGPIPE_OK)
        rc = framer_end(fr);
    if (rc == PGPIPE_PARSE && fr->err.code == PGPIPE_PARSE) {
        fr->err.code = PGPIPE_OK;
        return ig_refuse(p, 400, "the body is not a JSON array of records: %s", fr->err.message);
    }
    if (rc == PGPIPE_OK && fr->unclosed)
        return ig_refuse(p, 400, "the body's JSON array is not closed with ']' (byte offset %zu)", n);
    return rc;
}

static int ig_csv_body(ig_parse *p)
{
    pgpipe_csv_options co;
    pgpipe_csv_options_init(&co);
    co.header = 1;
    co.source = "<body>";
    pgpipe_csv *csv = NULL;
    copy_csv_head head = { 0 };
    int etk = -1;
    int rc = pgpipe_csv_open_feed(&csv, &co);
    if (rc == PGPIPE_OK)
        rc = pgpipe_csv_feed(csv, p->body, p->body_len);
    if (rc == PGPIPE_OK)
        rc = pgpipe_csv_feed_end(csv);
    if (rc != PGPIPE_OK) {
        pgpipe_csv_close(csv);
        return PGPIPE_NOMEM;
    }
    ig_group *g = p->g;
    char m[1200];
    for (;;) {
        rc = pgpipe_csv_next(csv);
        if (rc == PGPIPE_DONE || rc == PGPIPE_BUSY) {
            rc = PGPIPE_OK;
            break;
        }
        if (rc != PGPIPE_ROW && rc != PGPIPE_PARSE) {
            const pgpipe_error *e = pgpipe_errinfo(csv);
            rc = ig_refuse(p, 400, "the body is not CSV: %s (line %lld)", e->message, e->line);
            break;
        }
        if (!head.keys) {
            if (copy_csv_keys(csv, &head) != PGPIPE_OK) {
                rc = PGPIPE_NOMEM;
                break;
            }
            if (p->et_field)
                etk = pgpipe_csv_column_index(csv, p->et_field);
        }
        int row_error = rc == PGPIPE_PARSE;
        if ((rc = ig_count(p)) != PGPIPE_OK)
            break;
        const char *raw = NULL;
        size_t len = 0;
        if (pgpipe_csv_raw_record(csv, &raw, &len) != PGPIPE_OK)
            raw = NULL, len = 0;
        long long line = pgpipe_csv_record_line(csv), off = pgpipe_csv_record_offset(csv);
        long long eline, ecol;
        if (raw && copy_text_problem(raw, len, line, m, sizeof m, &eline, &ecol)) {
            rc = ig_dead(p, raw, len, eline, ecol, off, m, strlen(m));
        } else if (row_error) {
            const pgpipe_error *e = pgpipe_errinfo(csv);
            rc = ig_dead(p, raw, len, e->line > 0 ? e->line : line, e->column, off, e->message,
                         strlen(e->message));
        } else {
            int nf = 0;
            const pgpipe_csv_span *f = pgpipe_csv_fields(csv, &nf);
            size_t coff;
            rc = ig_row_begin(p, &coff);
            /* a name the header gives twice: the last column, as jsonb
            ** keeps the last of a key (a short row is a dead letter) */
            int ek = -1;
            for (int k = (nf < head.n ? nf : head.n) - 1; etk >= 0 && k >= etk && ek < 0; k--)
                if (k == etk || !strcmp(pgpipe_csv_header_name(csv, k), p->et_field))
                    ek = k;
            if (ek >= 0 && (f[ek].len || f[ek].quoted))
                rc |= pp_copy_put_text(&p->cw, &g->cbuf, f[ek].data, f[ek].len);
            else if (p->et_hdr)
                rc |= pp_buf_append(&g->cbuf, p->et_buf->data + p->et_src,
                                    p->et_buf->len - p->et_src);
            else {
                g->cbuf.len = coff;
                int ml = snprintf(m, sizeof m, "field \"%s\" is missing and the request names no "
                                  "event type (header)", p->et_field ? p->et_field : "event_type");
                rc = ig_dead(p, raw, len, line, 0, off, m, (size_t)ml);
                if (rc != PGPIPE_OK)
                    break;
                continue;
            }
            rc |= ig_row_payload(p);
            if (p->cw.binary)
                rc |= pp_buf_putc(&g->cbuf, 1); /* jsonb's version byte */
            copy_csv_head h = head;
            if (p->cw.verbatim)
                h.order = h.as_read; /* a json payload: the header's order */
            rc |= copy_csv_object(&g->cbuf, &h, f, nf, !p->cw.binary);
            if (rc != PGPIPE_OK) {
                rc = PGPIPE_NOMEM;
                break;
            }
            rc = ig_row_end(p, coff, raw, len, line, 0, off);
        }
        if (rc != PGPIPE_OK)
            break;
    }
    copy_csv_keys_free(&head);
    pgpipe_csv_close(csv);
    return rc;
}

/* ---- submit (the event loop's thread) --------------------------------------------- */

enum { IG_JSON, IG_NDJSON, IG_CSV };

/* The body's format from Content-Type (parameters such as charset ignored). */
static int ig_media(const char *ct, size_t n)
{
    static const struct { const char *name; int kind; } types[] = {
        { "application/json", IG_JSON },       { "application/x-ndjson", IG_NDJSON },
        { "application/jsonl", IG_NDJSON },    { "application/x-jsonlines", IG_NDJSON },
        { "application/jsonlines", IG_NDJSON }, { "text/csv", IG_CSV },
    };
    if (!ct)
        return -1;
    size_t k = 0;
    while (k < n && ct[k] != ';')
        k++;
    while (k > 0 && (ct[k - 1] == ' ' || ct[k - 1] == '\t'))
        k--;
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        if (strlen(types[i].name) == k && !strncasecmp(ct, types[i].name, k))
            return types[i].kind;
    return -1;
}

/* The signed timestamp of a delivery (Unix seconds), 0 when none. */
static long long ig_signed_time(const pp_http_request *rq, const pgpipe_http_source *s)
{
    size_t n;
    const char *v;
    char tmp[32];
    if (s->signature == PGPIPE_HTTP_SIG_STANDARD && (v = ig_header(rq, "webhook-timestamp", &n))) {
        snprintf(tmp, sizeof tmp, "%.*s", (int)(n < 31 ? n : 31), v);
        return atoll(tmp);
    }
    if (s->signature == PGPIPE_HTTP_SIG_STRIPE && (v = ig_header(rq, "Stripe-Signature", &n))) {
        for (size_t i = 0; i + 2 < n; i++)
            if ((i == 0 || v[i - 1] == ',') && v[i] == 't' && v[i + 1] == '=') {
                size_t j = i + 2, k = 0;
                while (j < n && v[j] >= '0' && v[j] <= '9' && k < 20)
                    tmp[k++] = v[j++];
                tmp[k] = '\0';
                return atoll(tmp);
            }
    }
    return 0;
}

static int ig_key_ok(const char *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)k[i] < 0x21 || (unsigned char)k[i] > 0x7E)
            return 0;
    return 1;
}

/* Retry-After for a full budget: 1 s per quarter of the budget queued, 1..5. */
static int ig_retry_after(const pp_ingest *ig)
{
    size_t q = ig->budget / 4 ? ig->budget / 4 : 1;
    size_t s = 1 + ig->pending_bytes / q;
    return s > 5 ? 5 : (int)s;
}

static void ig_refused(pp_ingest *ig)
{
    pthread_mutex_lock(&ig->mu);
    ig->m_refused++;
    pthread_mutex_unlock(&ig->mu);
}

/* Pgpipe-Device / Pgpipe-Seq / Pgpipe-Spool: *claim = "device\nspool" and
** *seq0, or nothing (*seq0 = 0); a bad one answers 400 naming the header.
** One pass over the headers finds the three, and any given twice (a hostile
** or careless sender: which one would count?). */
static int ig_device_headers(const pp_http_request *rq, char *claim, size_t size, long long *seq0,
                             pp_http_reply *now)
{
    static const char *const names[] = { "Pgpipe-Device", "Pgpipe-Seq", "Pgpipe-Spool" };
    static const size_t lens[] = { 13, 10, 12 };
    size_t n[3] = { 0, 0, 0 };
    const char *v[3] = { NULL, NULL, NULL };
    int seen[3] = { 0, 0, 0 };
    *seq0 = 0;
    for (int i = 0; i < rq->nheaders; i++) {
        const pp_http_header *h = &rq->headers[i];
        if (h->name_len < 10 || h->name_len > 13 || (h->name[0] | 0x20) != 'p')
            continue;
        for (int k = 0; k < 3; k++)
            if (h->name_len == lens[k] && !strncasecmp(h->name, names[k], lens[k])) {
                if (seen[k]++ == 0 && h->value_len) {
                    v[k] = h->value;
                    n[k] = h->value_len;
                }
                break;
            }
    }
    for (int i = 0; i < 3; i++)
        if (seen[i] > 1)
            return ig_reply(now, 400, "bad_device_header", rq->id, 0,
                            i == 0 ? "Pgpipe-Device is given more than once"
                            : i == 1 ? "Pgpipe-Seq is given more than once"
                                     : "Pgpipe-Spool is given more than once");
    if (!v[0] && !v[1] && !v[2])
        return 0;
    if (!v[0])
        return ig_reply(now, 400, "bad_device_header", rq->id, 0,
                        "Pgpipe-Device is missing: Pgpipe-Seq and Pgpipe-Spool number a device's "
                        "records and need it");
    if (!v[1])
        return ig_reply(now, 400, "bad_device_header", rq->id, 0,
                        "Pgpipe-Seq is missing: a request with Pgpipe-Device gives the sequence of "
                        "its first record");
    if (n[0] > 51 || !ig_key_ok(v[0], n[0]))
        return ig_reply(now, 400, "bad_device_header", rq->id, 0,
                        "Pgpipe-Device must be 1 to 51 bytes of visible ASCII");
    if (v[2] && (n[2] > 64 || !ig_key_ok(v[2], n[2])))
        return ig_reply(now, 400, "bad_device_header", rq->id, 0,
                        "Pgpipe-Spool must be 1 to 64 bytes of visible ASCII");
    long long q = 0;
    int ok = n[1] <= 19;
    for (size_t i = 0; ok && i < n[1]; i++) {
        if (v[1][i] < '0' || v[1][i] > '9' || q > (IG_MAX_SEQ - (v[1][i] - '0')) / 10)
            ok = 0;
        else
            q = q * 10 + (v[1][i] - '0');
    }
    if (!ok || q < 1)
        return ig_reply(now, 400, "bad_device_header", rq->id, 0,
                        "Pgpipe-Seq must be a whole number from 1 to 4611686018427387903");
    snprintf(claim, size, "%.*s\n%.*s", (int)n[0], v[0], v[2] ? (int)n[2] : 0, v[2] ? v[2] : "");
    *seq0 = q;
    return 0;
}

#ifndef PGPIPE_OMIT_SPOOL
/* A spooled request: "PGPH1\n", then fields "<length>:<bytes>": source,
** request id, the number of headers, each header's name and value
** (credentials left out), the body. */
static int ig_env_field(pp_buf *b, const char *p, size_t n)
{
    return pp_buf_appendf(b, "%zu:", n) | pp_buf_append(b, p ? p : "", n);
}

static int ig_envelope(pp_buf *b, const pp_http_request *rq, const char *source)
{
    static const char *const secret[] = { "Authorization", "Proxy-Authorization", "Cookie" };
    int nh = 0;
    b->len = 0;
    int rc = pp_buf_append(b, "PGPH1\n", 6);
    rc |= ig_env_field(b, source, strlen(source));
    rc |= ig_env_field(b, rq->id, strlen(rq->id));
    for (int i = 0; i < rq->nheaders; i++) {
        int keep = 1;
        for (size_t k = 0; k < sizeof secret / sizeof secret[0]; k++)
            if (rq->headers[i].name_len == strlen(secret[k]) &&
                !strncasecmp(rq->headers[i].name, secret[k], rq->headers[i].name_len))
                keep = 0;
        nh += keep;
    }
    char num[24];
    int nn = snprintf(num, sizeof num, "%d", nh);
    rc |= ig_env_field(b, num, (size_t)nn);
    for (int i = 0; i < rq->nheaders; i++) {
        int keep = 1;
        for (size_t k = 0; k < sizeof secret / sizeof secret[0]; k++)
            if (rq->headers[i].name_len == strlen(secret[k]) &&
                !strncasecmp(rq->headers[i].name, secret[k], rq->headers[i].name_len))
                keep = 0;
        if (!keep)
            continue;
        rc |= ig_env_field(b, rq->headers[i].name, rq->headers[i].name_len);
        rc |= ig_env_field(b, rq->headers[i].value, rq->headers[i].value_len);
    }
    rc |= ig_env_field(b, rq->body, rq->body ? rq->body_len : 0);
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

/* The next field of an envelope at *p (end e): 0 and *f, *n, or -1. */
static int ig_env_next(const char **p, const char *e, const char **f, size_t *n)
{
    size_t v = 0;
    const char *q = *p;
    while (q < e && *q >= '0' && *q <= '9' && v < (SIZE_MAX >> 4))
        v = v * 10 + (size_t)(*q++ - '0');
    if (q == *p || q >= e || *q != ':' || (size_t)(e - q - 1) < v)
        return -1;
    *f = q + 1;
    *n = v;
    *p = q + 1 + v;
    return 0;
}

/* Decode a spooled request into rq (pointing into rec) and source. */
static int ig_env_decode(const char *rec, size_t len, pp_http_request *rq, char *source, size_t size)
{
    const char *p = rec, *e = rec + len, *f;
    size_t n;
    memset(rq, 0, sizeof *rq);
    if (len < 6 || memcmp(rec, "PGPH1\n", 6))
        return -1;
    p += 6;
    if (ig_env_next(&p, e, &f, &n) || n == 0 || n >= size)
        return -1;
    memcpy(source, f, n);
    source[n] = '\0';
    if (ig_env_next(&p, e, &f, &n) || n >= sizeof rq->id)
        return -1;
    memcpy(rq->id, f, n);
    rq->id[n] = '\0';
    if (ig_env_next(&p, e, &f, &n) || n == 0 || n > 4)
        return -1;
    char num[8];
    memcpy(num, f, n);
    num[n] = '\0';
    int nh = atoi(num);
    if (nh < 0 || nh > PP_HTTP_MAX_HEADERS)
        return -1;
    for (int i = 0; i < nh; i++) {
        pp_http_header *h = &rq->headers[i];
        if (ig_env_next(&p, e, &h->name, &h->name_len) || ig_env_next(&p, e, &h->value, &h->value_len))
            return -1;
    }
    rq->nheaders = nh;
    if (ig_env_next(&p, e, &rq->body, &rq->body_len) || p != e)
        return -1;
    rq->method = PP_HTTP_POST;
    snprintf(rq->peer, sizeof rq->peer, "spool");
    rq->t_start_us = pgpipe_now_us();
    return 0;
}
#endif

#ifndef PGPIPE_OMIT_SPOOL
/* Append the request, as it came, to the spool: 202 {"spooled":N}. */
static int ig_spool_request(pp_ingest *ig, const pp_http_request *rq, const char *source,
                            long long nrec, pp_http_reply *now, long long *spooled)
{
    long long seq = 0;
    int rc = ig_envelope(&ig->env, rq, source);
    if (rc == PGPIPE_OK)
        rc = pgpipe_spool_append(ig->sp, ig->env.data, ig->env.len, &seq);
    if (rc == PGPIPE_OK && seq == 0)
        rc = PGPIPE_BUSY;
    if (rc != PGPIPE_OK) {
        pthread_mutex_lock(&ig->mu);
        ig->m_spool_refused++;
        ig->m_refused++;
        pthread_mutex_unlock(&ig->mu);
        if (rc == PGPIPE_BUSY)
            return ig_reply(now, 503, "spool_full", rq->id, 5,
                            "the database is away and the spool is full: try again later");
        pp_logf(PGPIPE_LOG_WARN, "http", "spool: %s", pgpipe_errmsg(ig->sp));
        return ig_reply(now, 503, "spool_failed", rq->id, 2,
                        "the database is away and the spool cannot be written: try again later");
    }
    atomic_store(&ig->spooling, 1);
    pthread_mutex_lock(&ig->mu);
    ig->m_spooled_req++;
    ig->m_spooled_rec += nrec;
    pthread_cond_signal(&ig->scv);
    pthread_mutex_unlock(&ig->mu);
    pp_buf b = { 0 };
    if (pp_buf_appendf(&b, "{\"request_id\":\"%s\",\"spooled\":%lld}", rq->id, nrec) != PGPIPE_OK) {
        pp_buf_free(&b);
        return ig_reply(now, 503, "out_of_memory", rq->id, 1, "out of memory");
    }
    now->status = 202;
    now->content_type = "application/json";
    now->body = b.data;
    now->body_len = b.len;
    now->spooled = nrec;
    *spooled = nrec;
    return 1;
}
#endif

/* The checks a request's head decides (the body need not be here): the
** database (unless the request may go to the spool), the Content-Type, the
** idempotency key's syntax, the device headers. 0 and *kind, *key (NULL:
** none), claim and *seq0 filled; or 1 with *now the answer. */
static int ig_head(pp_ingest *ig, const pp_http_request *rq, const pgpipe_http_source *s,
                   int down, int to_spool, int *kind, const char **key, size_t *kn, char *claim,
                   size_t csize, long long *seq0, pp_http_reply *now)
{
    if (down && !to_spool) {
        ig_refused(ig);
        return ig_reply(now, 503, "database_unavailable", rq->id, 2,
                        "no connection to the database: try again later");
    }
    size_t ctn = 0;
    const char *ct = pp_http_header_get(rq, "Content-Type", &ctn);
    *kind = ig_media(ct, ctn);
    if (*kind < 0) {
        ig_refused(ig);
        return ig_reply(now, 415, "unsupported_media_type", rq->id, 0,
                        "Content-Type must be application/json, application/x-ndjson "
                        "(application/jsonl) or text/csv");
    }
    /* the idempotency key */
    *kn = 0;
    *key = ig_header(rq, "Idempotency-Key", kn);
    if (!*key)
        *key = ig_header(rq, s->idempotency_header, kn);
    if (!*key && s->signature == PGPIPE_HTTP_SIG_STANDARD)
        *key = ig_header(rq, "webhook-id", kn);
    if (*key && (*kn > IG_MAX_KEY || !ig_key_ok(*key, *kn))) {
        ig_refused(ig);
        return ig_reply(now, 400, "bad_idempotency_key", rq->id, 0,
                        *kn > IG_MAX_KEY ? "the idempotency key is longer than 255 bytes"
                                         : "the idempotency key must be visible ASCII");
    }
    if (ig_device_headers(rq, claim, csize, seq0, now)) {
        ig_refused(ig);
        return 1;
    }
    return 0;
}

/* Is the memory budget too full for a request of need bytes (under mu)?
** The one rule of the admission and of /readyz (which asks for the
** smallest request, IG_REQ_MIN): a request is refused when others wait and
** it would take the accepted, uncommitted bytes over the budget. */
#define IG_REQ_MIN 512
static int ig_over_budget(const pp_ingest *ig, size_t need)
{
    return ig->pending > 0 && ig->pending_bytes + need > ig->budget;
}

PGPIPE_PRIVATE int pp_ingest_head(pp_ingest *ig, const pp_http_request *rq, const char *source,
                                  size_t body_len, pp_http_reply *now)
{
    memset(now, 0, sizeof *now);
    int down = atomic_load(&ig->live) == 0;
    int to_spool = 0;
#ifndef PGPIPE_OMIT_SPOOL
    to_spool = ig->sp && (down || atomic_load(&ig->spooling));
#endif
    int kind;
    const char *key;
    size_t kn;
    char claim[128];
    long long seq0;
    if (ig_head(ig, rq, ig_source(ig, source), down, to_spool, &kind, &key, &kn, claim,
                sizeof claim, &seq0, now))
        return 1;
#ifndef PGPIPE_OMIT_SPOOL
    if (ig->sp)
        return 0; /* over the budget, it goes to the spool */
#endif
    pthread_mutex_lock(&ig->mu);
    int over = ig_over_budget(ig, body_len * 2 + IG_REQ_MIN);
    if (over) {
        int ra = ig_retry_after(ig);
        ig->m_refused++;
        pthread_mutex_unlock(&ig->mu);
        return ig_reply(now, 503, "over_memory_budget", rq->id, ra,
                        "too much accepted work is waiting for its commit: try again later");
    }
    pthread_mutex_unlock(&ig->mu);
    return 0;
}

/* Take a request: from the event loop (spool_seq 0; may_spool: it may go to
** the spool instead) or from the spool's drainer (spool_seq: its sequence
** there). *spooled: the records went to the spool (*now says so). */
static int ig_submit(pp_ingest *ig, const pp_http_request *rq, const char *source, uint64_t ticket,
                     pp_http_reply *now, long long spool_seq, int may_spool, long long *spooled)
{
    memset(now, 0, sizeof *now);
    *spooled = 0;
    int down = atomic_load(&ig->live) == 0;
    int to_spool = 0;
#ifndef PGPIPE_OMIT_SPOOL
    to_spool = may_spool && (down || atomic_load(&ig->spooling));
#else
    (void)may_spool;
#endif
    const pgpipe_http_source *s = ig_source(ig, source);
    int kind;
    size_t kn = 0;
    const char *key = NULL;
    char claim[128];
    long long seq0 = 0;
    if (ig_head(ig, rq, s, down, to_spool, &kind, &key, &kn, claim, sizeof claim, &seq0, now))
        return 1;
    int window = ig_window(ig, s);
    /* (a drained request was checked when it came) */
    long long ts = spool_seq ? 0 : ig_signed_time(rq, s);
    if (ts > 0 && (long long)time(NULL) - ts > (long long)window * 3600) {
        ig_refused(ig);
        return ig_reply(now, 409, "idempotency_key_expired", rq->id, 0,
                        "the delivery's signed timestamp is older than the source's idempotency "
                        "window: it cannot be checked for a repeat, so it is not applied");
    }

    pthread_mutex_lock(&ig->mu);
    size_t need = rq->body_len * 2 + IG_REQ_MIN;
    if (ig_over_budget(ig, need) && may_spool)
        to_spool = 1;
    if (ig_over_budget(ig, need) && !to_spool) {
        int ra = ig_retry_after(ig);
        ig->m_refused++;
        pthread_mutex_unlock(&ig->mu);
        return ig_reply(now, 503, "over_memory_budget", rq->id, ra,
                        "too much accepted work is waiting for its commit: try again later");
    }
    if (!ig->open && !(ig->open = ig_group_get(ig))) {
        pthread_mutex_unlock(&ig->mu);
        return ig_reply(now, 503, "out_of_memory", rq->id, 1, "out of memory");
    }
    ig_group *g = ig->open;
    if (ig_grow((void **)&g->reqs, &g->capreqs, g->nreqs + 1, sizeof *g->reqs) != PGPIPE_OK) {
        pthread_mutex_unlock(&ig->mu);
        return ig_reply(now, 503, "out_of_memory", rq->id, 1, "out of memory");
    }
    size_t m_rows = g->nrows, m_errs = g->nerrs, m_c = g->cbuf.len, m_r = g->rbuf.len,
           m_d = g->dbuf.len, m_k = g->kbuf.len, m_m = g->mbuf.len;
    uint32_t ri = (uint32_t)g->nreqs;
    ig_req *r = &g->reqs[ri];
    int rc0 = PGPIPE_OK;
    memset(r, 0, sizeof *r);
    r->ticket = ticket;
    if (strlen(rq->id) == 36)
        memcpy(r->id, rq->id, 37);
    else if (pp_uuid_v7(r->id) != PGPIPE_OK)
        rc0 = PGPIPE_NOMEM;
    if (rc0 == PGPIPE_OK && pp_uuid_bin(r->id, r->id_bin) != 0 &&
        (pp_uuid_v7(r->id) != PGPIPE_OK || pp_uuid_bin(r->id, r->id_bin) != 0))
        rc0 = PGPIPE_NOMEM; /* (a spooled request's id that is no uuid gets a new one) */
    r->fate = IG_NEW;
    r->first = IG_NONE;
    r->window_hours = window;
    r->err_head = r->err_tail = IG_NONE;
    r->row_lo = g->nrows;
    r->d_lo = g->dbuf.len;
    size_t srclen = strlen(source);
    r->src_off = g->kbuf.len;
    r->src_len = srclen;
    int rc = rc0 | pp_buf_append(&g->kbuf, source, srclen + 1);
    ig->etb.len = 0;
    pp_copy_w w = g->cw;
    rc |= pp_copy_row_begin(&w, &ig->etb, 4);
    rc |= pp_copy_text_field(&w, &ig->etb, 0, source, srclen);
    size_t etn = 0;
    const char *eth = ig_header(rq, s->event_type_header ? s->event_type_header : "X-Event-Type", &etn);
    if (!eth && !s->event_type_header)
        eth = ig_header(rq, "X-GitHub-Event", &etn);
    const char *etv = s->event_type_value && *s->event_type_value ? s->event_type_value : NULL;
    ig_parse p; /* (field by field: the message buffers need no zeroing) */
    p.idval[0] = 0;
    p.single = 0;
    p.status = 0;
    p.why[0] = 0;
    p.et_hdr = NULL;
    p.ig = ig;
    p.g = g;
    p.r = r;
    p.ri = ri;
    p.s = s;
    p.body = rq->body ? rq->body : "";
    p.body_len = rq->body_len;
    p.body_off = g->rbuf.len;
    p.et_buf = &ig->etb;
    p.et_src = ig->etb.len;
    p.cw = g->cw;
    p.et_field = s->event_type_field && *s->event_type_field ? s->event_type_field
                 : (s->event_type_header || etv) ? NULL : "event_type";
    p.idlen = -1;
    p.id_field = !key && s->idempotency_field && *s->idempotency_field ? s->idempotency_field : NULL;
    if (eth || etv) {
        p.et_hdr = eth ? eth : etv;
        rc |= pp_copy_put_text(&w, &ig->etb, p.et_hdr, eth ? etn : strlen(etv));
    } else if (!s->event_type_field && !s->event_type_header) {
        /* Nothing configured names the event type and the record has no
        ** "event_type": a sender that says nothing still gets its events
        ** in, typed by the source they were posted to. A source that sets a
        ** field or header makes it required (missing: dead letter). */
        p.et_hdr = source;
        rc |= pp_copy_put_text(&w, &ig->etb, source, srclen);
    }
    rc |= pp_buf_append(&g->rbuf, p.body, p.body_len);
    if (rc == PGPIPE_OK) {
        if (kind == IG_CSV)
            rc = ig_csv_body(&p);
        else
            rc = ig_json_body(&p, kind == IG_NDJSON);
    }
    if (rc == PGPIPE_OK && !key && p.id_field && r->nrec == 1) {
        if (p.idlen == -2 || (p.idlen >= 0 && !ig_key_ok(p.idval, (size_t)p.idlen)))
            rc = ig_refuse(&p, 400, "the idempotency field \"%s\" must be visible ASCII of at most "
                           "255 bytes", p.id_field);
        else if (p.idlen > 0) {
            key = p.idval;
            kn = (size_t)p.idlen;
        }
    }
    if (rc == PGPIPE_OK && seq0) {
        r->has_dev = 1;
        r->seq0 = seq0;
        r->dev_off = g->kbuf.len;
        rc |= pp_buf_append(&g->kbuf, claim, strlen(claim) + 1);
    }
    r->from_spool = spool_seq > 0;
    r->spool_seq = spool_seq;
    if (rc == PGPIPE_OK && key) {
        r->key_off = g->kbuf.len;
        r->keyonly = g->kbuf.len + srclen + 1;
        r->key_len = kn;
        rc |= pp_buf_append(&g->kbuf, source, srclen);
        rc |= pp_buf_putc(&g->kbuf, '\n');
        rc |= pp_buf_append(&g->kbuf, key, kn);
        rc |= pp_buf_putc(&g->kbuf, '\0');
    }
    if (rc != PGPIPE_OK || to_spool) {
        /* nothing of the request stays in the group (spooled: it is written
        ** to the spool as it came, and parsed again when it is drained) */
#ifndef PGPIPE_OMIT_SPOOL
        long long nrec = r->nrec;
#endif
        g->nrows = m_rows;
        g->nerrs = m_errs;
        g->cbuf.len = m_c;
        g->rbuf.len = m_r;
        g->dbuf.len = m_d;
        g->kbuf.len = m_k;
        g->mbuf.len = m_m;
        if (rc != PGPIPE_OK)
            ig->m_refused++;
        int empty = g->nreqs == 0;
        if (empty) {
            ig->open = NULL;
            ig_group_put(ig, g);
        }
        pthread_mutex_unlock(&ig->mu);
#ifndef PGPIPE_OMIT_SPOOL
        if (rc == PGPIPE_OK)
            return ig_spool_request(ig, rq, source, nrec, now, spooled);
#endif
        if (rc == PGPIPE_PARSE && p.status)
            return ig_reply(now, p.status, p.status == 413 ? "too_many_records" : "bad_body", rq->id,
                            0, p.why);
        return ig_reply(now, 503, "out_of_memory", rq->id, 1, "out of memory");
    }
    r->row_hi = g->nrows;
    r->d_hi = g->dbuf.len;
    r->bytes = (g->cbuf.len - m_c) + (g->rbuf.len - m_r) + (g->dbuf.len - m_d) + 256;
    g->nreqs++;
    g->nkeys += key != NULL;
    g->nclaims += r->has_dev || r->from_spool;
    g->nrecords += r->nrec;
    g->bytes += r->bytes;
    ig->pending++;
    ig->pending_bytes += r->bytes;
    if (g->nreqs == 1)
        g->t_first = pgpipe_now_us();
    if (!spool_seq && (g->nrecords >= ig->group_records || g->nkeys >= IG_GROUP_KEYS)) {
        /* full: it waits for the next free committer */
        if (ig->qtail)
            ig->qtail->next = g;
        else
            ig->qhead = g;
        ig->qtail = g;
        ig->open = NULL;
        pthread_cond_signal(&ig->cv);
    } else if (g->nreqs == 1) {
        pthread_cond_signal(&ig->cv);
    }
    *spooled = r->nrec; /* (queued: its records, for the drainer's rounds) */
    pthread_mutex_unlock(&ig->mu);
    return 0;
}

PGPIPE_PRIVATE int pp_ingest_submit(pp_ingest *ig, const pp_http_request *rq,
                                    const char *source, uint64_t ticket, pp_http_reply *now)
{
    long long spooled;
#ifndef PGPIPE_OMIT_SPOOL
    if (ig->sp) {
        /* the decision and the append together: the drainer sees the spool
        ** empty only between two such */
        pthread_mutex_lock(&ig->spmu);
        int rc = ig_submit(ig, rq, source, ticket, now, 0, 1, &spooled);
        pthread_mutex_unlock(&ig->spmu);
        return rc;
    }
#endif
    return ig_submit(ig, rq, source, ticket, now, 0, 0, &spooled);
}

/* ---- the committers ------------------------------------------------------------------ */

static const char ig_rows_copy[] =
    "COPY staging.raw_events (source, event_type, payload, batch_id) FROM STDIN";
static const char ig_rows_copy_bin[] =
    "COPY staging.raw_events (source, event_type, payload, batch_id) FROM STDIN (FORMAT binary)";

/* The statement failed: is the outcome worth a retry by the client (the
** connection is gone, a serialization failure ...)? */
static int ig_transient(ig_committer *c)
{
    return !c->conn || PQstatus(c->conn) != CONNECTION_OK ||
           pgpipe_sqlstate_is_transient(c->err.sqlstate);
}

/* A value the server refuses (a data exception, a constraint): the row's
** fault, not the group's. */
static int ig_data_error(const ig_committer *c)
{
    return c->err.sqlstate[0] &&
           pgpipe_sqlstate_class(c->err.sqlstate) == PGPIPE_SQLSTATE_DEAD_LETTER;
}

static int ig_exec(ig_committer *c, const char *sql, int n, const char *const *v, PGresult **res)
{
    return pp_exec(c->conn, sql, n, n ? v : NULL, res, &c->err, "http ingest");
}

static int ig_send(ig_committer *c, const char *p, size_t n)
{
    for (size_t k; n; p += k, n -= k) {
        k = n < IG_SEND_CHUNK ? n : IG_SEND_CHUNK;
        if (PQputCopyData(c->conn, p, (int)k) != 1)
            return pp_err_pq(&c->err, c->conn, NULL, "http ingest: COPY data");
    }
    return PGPIPE_OK;
}

/* End a COPY; *res keeps a failure's result (the caller clears it). */
static int ig_copy_end(ig_committer *c, PGresult **res)
{
    *res = NULL;
    if (PQputCopyEnd(c->conn, NULL) != 1)
        return pp_err_pq(&c->err, c->conn, NULL, "http ingest: COPY end");
    int rc = PGPIPE_OK, got = 0;
    PGresult *r;
    while ((r = PQgetResult(c->conn)) != NULL) {
        got = 1;
        if (PQresultStatus(r) != PGRES_COMMAND_OK && rc == PGPIPE_OK) {
            rc = pp_err_pq(&c->err, c->conn, r, "http ingest: COPY");
            *res = r;
            continue;
        }
        PQclear(r);
    }
    if (!got || PQstatus(c->conn) != CONNECTION_OK)
        rc = pp_err_pq(&c->err, c->conn, NULL, "http ingest: COPY");
    return rc;
}

/* Is the row part of what this transaction writes? */
static int ig_live(const ig_group *g, size_t i)
{
    return !g->rows[i].bad && !g->rows[i].skip && g->reqs[g->rows[i].req].fate == IG_NEW;
}

static size_t ig_row_end_off(const ig_group *g, size_t i)
{
    return i + 1 < g->nrows ? g->rows[i + 1].coff : g->cbuf.len;
}

/* COPY the live rows of [lo, hi) (runs of them in one piece). *end_sent
** (when not NULL) is set once the end of the COPY goes to the server. */
static int ig_copy_rows(ig_committer *c, ig_group *g, size_t lo, size_t hi, PGresult **res,
                        int *end_sent)
{
    *res = NULL;
    int rc = pp_copy_in_start(c->conn, g->cw.binary ? ig_rows_copy_bin : ig_rows_copy, &c->err,
                              "http ingest: COPY");
    if (rc == PGPIPE_OK && g->cw.binary)
        rc = ig_send(c, PP_COPY_BIN_HEADER, PP_COPY_BIN_HEADER_LEN);
    for (size_t i = lo; i < hi && rc == PGPIPE_OK;) {
        while (i < hi && !ig_live(g, i))
            i++;
        size_t j = i;
        while (j < hi && ig_live(g, j))
            j++;
        if (j > i)
            rc = ig_send(c, g->cbuf.data + g->rows[i].coff,
                         ig_row_end_off(g, j - 1) - g->rows[i].coff);
        i = j;
    }
    if (rc != PGPIPE_OK) {
        if (PQstatus(c->conn) == CONNECTION_OK && PQisBusy(c->conn) == 0)
            PQputCopyEnd(c->conn, "http ingest: send failed");
        return rc;
    }
    if (end_sent)
        *end_sent = 1;
    return ig_copy_end(c, res);
}

/* Row i was refused by the server (r: its error): dead-letter it. */
static int ig_reject(ig_group *g, size_t i, const PGresult *r)
{
    ig_row *w = &g->rows[i];
    ig_req *q = &g->reqs[w->req];
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    char m[700], ctx[96];
    snprintf(m, sizeof m, "%s%s%s%s", msg ? msg : "refused by the server", detail ? " (" : "",
             detail ? detail : "", detail ? ")" : "");
    snprintf(ctx, sizeof ctx, "http request %s, record %u", q->id, w->rec);
    pp_dlq_load_letter d = { .source = g->kbuf.data + q->src_off, .line = w->line,
                             .column = w->col ? w->col + 1 : 0, .offset = w->off, .load_id = 0,
                             .batch_id = q->id, .raw = g->rbuf.data + w->roff, .rawlen = w->rlen,
                             .message = m,
                             .sqlstate = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL,
                             .context = ctx };
    w->bad = 1;
    q->dead++;
    if (pp_dlq_load_row(&g->dbuf, &d) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    return ig_add_err(g, q, w->rec, w->line, d.column, w->off, m, strlen(m));
}

/* "COPY raw_events, line 17, column payload: ..." -> 17; 0 when absent. */
static long long ig_copy_line(const PGresult *r)
{
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    const char *p = ctx && !strncmp(ctx, "COPY ", 5) ? strstr(ctx, ", line ") : NULL;
    return p ? atoll(p + 7) : 0;
}

/* The rows one by one under savepoints, after the COPY of all of them was
** refused: a refused row names its COPY line, so it is dead-lettered and
** the rest sent again; an error without a line falls back to one COPY per
** row. Transient failures end it. */
static int ig_rows_isolate(ig_committer *c, ig_group *g)
{
    for (int per_row = 0;;) {
        size_t live = 0, only = 0;
        for (size_t i = 0; i < g->nrows; i++)
            if (ig_live(g, i))
                live++, only = i;
        if (!live) {
            for (size_t i = 0; i < g->nrows; i++)
                if (g->rows[i].bad == 2)
                    g->rows[i].bad = 0;
            return PGPIPE_OK;
        }
        size_t lo = 0, hi = g->nrows;
        if (per_row) {
            /* the next live row alone */
            while (!ig_live(g, lo))
                lo++;
            hi = lo + 1;
        }
        PGresult *err = NULL;
        int rc = ig_exec(c, "SAVEPOINT ig_rows", 0, NULL, NULL);
        if (rc == PGPIPE_OK)
            rc = ig_copy_rows(c, g, lo, hi, &err, NULL);
        if (rc == PGPIPE_OK) {
            if ((rc = ig_exec(c, "RELEASE SAVEPOINT ig_rows", 0, NULL, NULL)) != PGPIPE_OK)
                return rc;
            if (!per_row)
                return PGPIPE_OK;
            /* done with these: mark them sent by moving on */
            g->rows[lo].bad = 2;
            continue;
        }
        if (ig_transient(c) || !ig_data_error(c)) {
            PQclear(err);
            return PGPIPE_DB;
        }
        if (ig_exec(c, "ROLLBACK TO SAVEPOINT ig_rows", 0, NULL, NULL) != PGPIPE_OK) {
            PQclear(err);
            return PGPIPE_DB;
        }
        size_t k = (size_t)-1;
        long long n = per_row ? 1 : ig_copy_line(err);
        for (size_t i = lo; n > 0 && i < hi; i++)
            if (ig_live(g, i) && --n == 0)
                k = i;
        if (k == (size_t)-1 && live == 1)
            k = only;
        if (k == (size_t)-1) {
            per_row = 1;
            PQclear(err);
            continue;
        }
        rc = ig_reject(g, k, err);
        PQclear(err);
        if (rc != PGPIPE_OK)
            return rc;
    }
}

/* The body of a 202: {"request_id":..,"accepted":N,"dead_lettered":N,"errors":[..]}.
** A replay gets the very same body (the reply's replayed flag adds the
** Idempotent-Replayed header), so a client comparing bodies sees one answer. */
/* v in decimal, ending at end; returns where it starts */
static char *ig_ll(char *end, long long v)
{
    char *p = end;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return p;
}

/* (by hand rather than with a printf: one body per request) */
static int ig_body(pp_buf *b, const char *rid, long long acc, long long dead, const char *errs,
                   size_t elen, long long dup)
{
    static const char k_id[] = "{\"request_id\":\"", k_acc[] = "\",\"accepted\":",
                      k_dead[] = ",\"dead_lettered\":", k_errs[] = ",\"errors\":";
    char na[24], *nae = na + sizeof na, *nas = ig_ll(nae, acc);
    char nd[24], *nde = nd + sizeof nd, *nds = ig_ll(nde, dead);
    size_t nrid = strlen(rid);
    if (!elen) {
        errs = "[]";
        elen = 2;
    }
    /* one reservation, then plain copies */
    if (pp_buf_reserve(b, sizeof k_id + nrid + sizeof k_acc + (size_t)(nae - nas) + sizeof k_dead +
                              (size_t)(nde - nds) + sizeof k_errs + elen + 1) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    char *w = b->data + b->len;
#define IG_W(s, n) (memcpy(w, (s), (n)), w += (n))
    IG_W(k_id, sizeof k_id - 1);
    IG_W(rid, nrid);
    IG_W(k_acc, sizeof k_acc - 1);
    IG_W(nas, (size_t)(nae - nas));
    IG_W(k_dead, sizeof k_dead - 1);
    IG_W(nds, (size_t)(nde - nds));
    IG_W(k_errs, sizeof k_errs - 1);
    IG_W(errs, elen);
#undef IG_W
    b->len = (size_t)(w - b->data);
    int rc = PGPIPE_OK;
    if (dup >= 0)
        rc |= pp_buf_appendf(b, ",\"duplicate\":%lld", dup);
    rc |= pp_buf_putc(b, '}');
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

/* The "errors" array of request q (empty when none). */
static int ig_errors_json(pp_buf *b, const ig_group *g, const ig_req *q)
{
    int rc = PGPIPE_OK, n = 0;
    for (uint32_t k = q->err_head; k != IG_NONE && n < IG_MAX_LISTED; k = g->errs[k].next) {
        const ig_err *e = &g->errs[k];
        if ((long long)e->rec <= q->cut)
            continue; /* a duplicate's: not written */
        n++;
        rc |= pp_buf_appendf(b, "%c{\"record\":%u,\"line\":%lld,\"column\":%lld,\"offset\":%lld,"
                             "\"error\":", n > 1 ? ',' : '[', e->rec, e->line, e->col, e->off);
        rc |= pp_json_str(b, g->mbuf.data + e->moff, e->mlen, 0);
        rc |= pp_buf_putc(b, '}');
    }
    if (n)
        rc |= pp_buf_putc(b, ']');
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

static char *ig_dup(const char *s, size_t n)
{
    char *d = pp_malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Set a request's answer to a copy of b. */
static int ig_answer(ig_req *q, int status, const pp_buf *b)
{
    pp_free(q->answer);
    q->answer = ig_dup(b->data ? b->data : "", b->len);
    q->answer_len = b->len;
    q->status = status;
    return q->answer ? PGPIPE_OK : PGPIPE_NOMEM;
}

/* Build the arrays of the keyed requests of fate (or every keyed one when
** fate < 0) into c->a[]: source, key, window, index / request id ... */
static void ig_arrays_begin(ig_committer *c, int n)
{
    for (int i = 0; i < n; i++) {
        c->a[i].len = 0;
        pp_buf_putc(&c->a[i], '{');
    }
}

static int ig_arrays_end(ig_committer *c, int n, const char **v)
{
    int rc = PGPIPE_OK;
    for (int i = 0; i < n; i++) {
        rc |= pp_buf_putc(&c->a[i], '}');
        rc |= pp_buf_putc(&c->a[i], '\0');
        v[i] = c->a[i].data;
    }
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

static int ig_array_text(pp_buf *b, const char *s, size_t n)
{
    if (b->len > 1 && pp_buf_putc(b, ',') != PGPIPE_OK)
        return PGPIPE_NOMEM;
    return s ? pp_array_elem(b, s, n) : pp_buf_append(b, "NULL", 4);
}

static int ig_array_int(pp_buf *b, long long v)
{
    return pp_buf_appendf(b, "%s%lld", b->len > 1 ? "," : "", v);
}

/* Lock the (a, b) text pairs given in v[0], v[1] (two text arrays) with
** transaction-level advisory locks, in hash order so that two servers never
** wait for each other both ways; prefix ("" for none) keeps one kind of
** pair's locks apart from another's. */
static int ig_lock_pairs(ig_committer *c, const char *prefix, const char *const *v)
{
    const char *pv[3] = { v[0], v[1], prefix };
    return ig_exec(c, "SELECT count(pg_advisory_xact_lock(x.h)) FROM (SELECT DISTINCT "
                      "hashtextextended(CASE WHEN $3 = '' THEN '' ELSE $3 || E'\\n' END "
                      "|| u.a || E'\\n' || u.b, 0) AS h FROM unnest($1::text[], $2::text[]) "
                      "AS u(a, b) ORDER BY 1) AS x", 3, pv, NULL);
}

/* Lock the group's keys, look them up: fates REPLAY / EXPIRED with their
** answers, then IG_DUP for a key repeated inside the group. */
static int ig_keys_check(ig_committer *c, ig_group *g)
{
    const char *v[4];
    ig_arrays_begin(c, 4);
    int rc = PGPIPE_OK;
    for (size_t i = 0; i < g->nreqs; i++) {
        ig_req *q = &g->reqs[i];
        if (!q->key_len)
            continue;
        rc |= ig_array_text(&c->a[0], g->kbuf.data + q->src_off, q->src_len);
        rc |= ig_array_text(&c->a[1], g->kbuf.data + q->keyonly, q->key_len);
        rc |= ig_array_int(&c->a[2], q->window_hours);
        rc |= ig_array_int(&c->a[3], (long long)i);
    }
    if (rc != PGPIPE_OK || ig_arrays_end(c, 4, v) != PGPIPE_OK)
        return pp_err_nomem(&c->err);
    /* two servers on one database: the second waits here for the first's
    ** commit, then finds its key */
    rc = ig_lock_pairs(c, "", v);
    if (rc != PGPIPE_OK)
        return rc;
    PGresult *res = NULL;
    rc = ig_exec(c, "SELECT u.i, h.request_id, h.accepted, h.dead_lettered, h.errors, "
                    "h.first_seen < now() - make_interval(hours => u.w), "
                    "to_char(h.first_seen AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') "
                    "FROM unnest($1::text[], $2::text[], $3::int[], $4::int[]) AS u(s, k, w, i) "
                    "CROSS JOIN LATERAL (SELECT * FROM pgpipe.http_keys AS h WHERE h.key_hash = "
                    "md5(u.s || E'\\n' || u.k)::uuid AND h.source = u.s AND h.key = u.k "
                    "ORDER BY h.first_seen LIMIT 1) AS h", 4, v, &res);
    if (rc != PGPIPE_OK)
        return rc;
    for (int t = 0; t < PQntuples(res) && rc == PGPIPE_OK; t++) {
        size_t i = (size_t)atoll(PQgetvalue(res, t, 0));
        if (i >= g->nreqs)
            continue;
        ig_req *q = &g->reqs[i];
        c->scratch.len = 0;
        if (!strcmp(PQgetvalue(res, t, 5), "t")) {
            pp_http_reply e = { 0 };
            q->fate = IG_EXPIRED;
            if (pp_http_reply_error(&e, 409, "idempotency_key_expired", q->id,
                                    "the idempotency key was first used at %s, longer ago than "
                                    "the source's window of %d hours: it is not applied again",
                                    PQgetvalue(res, t, 6), q->window_hours) != PGPIPE_OK) {
                rc = pp_err_nomem(&c->err);
                break;
            }
            pp_free(q->answer);
            q->answer = e.body;
            q->answer_len = e.body_len;
            q->status = 409;
            continue;
        }
        q->fate = IG_REPLAY;
        const char *errs = PQgetisnull(res, t, 4) ? NULL : PQgetvalue(res, t, 4);
        if (ig_body(&c->scratch, PQgetvalue(res, t, 1), atoll(PQgetvalue(res, t, 2)),
                    atoll(PQgetvalue(res, t, 3)), errs, errs ? strlen(errs) : 0, -1) != PGPIPE_OK ||
            ig_answer(q, 202, &c->scratch) != PGPIPE_OK)
            rc = pp_err_nomem(&c->err);
    }
    PQclear(res);
    if (rc != PGPIPE_OK)
        return rc;
    /* a key repeated inside the group: the first request with it applies */
    size_t cap = 16;
    while (cap < 2 * (size_t)g->nkeys)
        cap *= 2;
    if (ig_grow((void **)&c->hash, &c->caphash, cap, sizeof *c->hash) != PGPIPE_OK)
        return pp_err_nomem(&c->err);
    memset(c->hash, 0xFF, cap * sizeof *c->hash);
    for (size_t i = 0; i < g->nreqs; i++) {
        ig_req *q = &g->reqs[i];
        if (!q->key_len || q->fate != IG_NEW)
            continue;
        const char *k = g->kbuf.data + q->key_off;
        size_t h = (size_t)pp_hash64(k) & (cap - 1);
        for (;; h = (h + 1) & (cap - 1)) {
            uint32_t o = c->hash[h];
            if (o == IG_NONE) {
                c->hash[h] = (uint32_t)i;
                break;
            }
            if (!strcmp(g->kbuf.data + g->reqs[o].key_off, k)) {
                q->fate = IG_DUP;
                q->first = o;
                break;
            }
        }
    }
    return PGPIPE_OK;
}

/* The device positions of the group's new requests: lock them, read them,
** then, request by request in the group's order, skip what is at or below
** (a request drained from the server's spool as a whole: IG_SEEN; a
** device's records one by one: rows marked skip, counted as duplicates)
** and move them on. ig_positions_save writes them back. */
static ig_pos *ig_pos_find(ig_committer *c, const char *key, int add)
{
    size_t cap = c->capphash;
    size_t h = (size_t)pp_hash64(key) & (cap - 1);
    for (;; h = (h + 1) & (cap - 1)) {
        uint32_t o = c->phash[h];
        if (o == IG_NONE)
            break;
        if (!strcmp(c->pos[o].key, key))
            return &c->pos[o];
    }
    if (!add)
        return NULL;
    c->phash[h] = (uint32_t)c->npos;
    ig_pos *p = &c->pos[c->npos++];
    p->key = key;
    p->cur = 0;
    p->changed = 0;
    return p;
}

static const char *ig_claim_key(const pp_ingest *ig, const ig_group *g, const ig_req *q, int spool)
{
#ifndef PGPIPE_OMIT_SPOOL
    if (spool)
        return ig->sp_claim;
#else
    (void)ig;
    (void)spool;
#endif
    return g->kbuf.data + q->dev_off;
}

static int ig_claims_check(ig_committer *c, ig_group *g)
{
    pp_ingest *ig = c->ig;
    for (size_t i = 0; i < g->nrows; i++)
        g->rows[i].skip = 0;
    for (size_t i = 0; i < g->nreqs; i++)
        g->reqs[i].cut = g->reqs[i].dup_dead = 0;
    c->npos = 0;
    size_t need = 2 * (size_t)g->nclaims;
    if (ig_grow((void **)&c->pos, &c->cappos, need ? need : 1, sizeof *c->pos) != PGPIPE_OK)
        return pp_err_nomem(&c->err);
    size_t cap = 16;
    while (cap < 4 * (size_t)g->nclaims)
        cap *= 2;
    if (ig_grow((void **)&c->phash, &c->capphash, cap, sizeof *c->phash) != PGPIPE_OK)
        return pp_err_nomem(&c->err);
    c->capphash = cap; /* a power of two, as ig_pos_find wants */
    memset(c->phash, 0xFF, cap * sizeof *c->phash);
    for (size_t i = 0; i < g->nreqs; i++) {
        ig_req *q = &g->reqs[i];
        if (q->fate != IG_NEW)
            continue;
        if (q->from_spool)
            ig_pos_find(c, ig_claim_key(ig, g, q, 1), 1);
        if (q->has_dev)
            ig_pos_find(c, ig_claim_key(ig, g, q, 0), 1);
    }
    if (!c->npos)
        return PGPIPE_OK;
    const char *v[3];
    ig_arrays_begin(c, 3);
    int rc = PGPIPE_OK;
    for (size_t k = 0; k < c->npos; k++) {
        const char *key = c->pos[k].key, *nl = strchr(key, '\n');
        rc |= ig_array_text(&c->a[0], key, (size_t)(nl - key));
        rc |= ig_array_text(&c->a[1], nl + 1, strlen(nl + 1));
        rc |= ig_array_int(&c->a[2], (long long)k);
    }
    if (rc != PGPIPE_OK || ig_arrays_end(c, 3, v) != PGPIPE_OK)
        return pp_err_nomem(&c->err);
    rc = ig_lock_pairs(c, "pgpipe.device", v);
    if (rc != PGPIPE_OK)
        return rc;
    PGresult *res = NULL;
    rc = ig_exec(c, "SELECT u.i, p.last_seq FROM unnest($1::text[], $2::text[], $3::int[]) AS "
                    "u(d, s, i) JOIN pgpipe.device_positions AS p ON p.device = u.d AND p.spool = u.s",
                 3, v, &res);
    if (rc != PGPIPE_OK)
        return rc;
    for (int t = 0; t < PQntuples(res); t++) {
        size_t k = (size_t)atoll(PQgetvalue(res, t, 0));
        if (k < c->npos)
            c->pos[k].cur = atoll(PQgetvalue(res, t, 1));
    }
    PQclear(res);
    for (size_t i = 0; i < g->nreqs; i++) {
        ig_req *q = &g->reqs[i];
        if (q->fate != IG_NEW)
            continue;
        if (q->from_spool) {
            ig_pos *p = ig_pos_find(c, ig_claim_key(ig, g, q, 1), 0);
            if (q->spool_seq <= p->cur) {
                q->fate = IG_SEEN;
                continue;
            }
            p->cur = q->spool_seq;
            p->changed = 1;
        }
        if (q->has_dev) {
            ig_pos *p = ig_pos_find(c, ig_claim_key(ig, g, q, 0), 0);
            long long last = q->seq0 + q->nrec - 1;
            q->cut = p->cur >= q->seq0 ? p->cur - q->seq0 + 1 : 0;
            if (q->cut > q->nrec)
                q->cut = q->nrec;
            for (size_t k = q->row_lo; k < q->row_hi; k++)
                if ((long long)g->rows[k].rec <= q->cut)
                    g->rows[k].skip = 1;
            for (uint32_t k = q->err_head; k != IG_NONE; k = g->errs[k].next)
                if (g->errs[k].dlen && (long long)g->errs[k].rec <= q->cut)
                    q->dup_dead++;
            if (last > p->cur) {
                p->cur = last;
                p->changed = 1;
            }
        }
    }
    return PGPIPE_OK;
}

static int ig_positions_save(ig_committer *c)
{
    const char *v[3];
    int n = 0, rc = PGPIPE_OK;
    ig_arrays_begin(c, 3);
    for (size_t k = 0; k < c->npos; k++) {
        if (!c->pos[k].changed)
            continue;
        const char *key = c->pos[k].key, *nl = strchr(key, '\n');
        rc |= ig_array_text(&c->a[0], key, (size_t)(nl - key));
        rc |= ig_array_text(&c->a[1], nl + 1, strlen(nl + 1));
        rc |= ig_array_int(&c->a[2], c->pos[k].cur);
        n++;
    }
    if (!n)
        return PGPIPE_OK;
    if (rc != PGPIPE_OK || ig_arrays_end(c, 3, v) != PGPIPE_OK)
        return pp_err_nomem(&c->err);
    return ig_exec(c, "INSERT INTO pgpipe.device_positions (device, spool, last_seq) SELECT u.d, u.s, "
                      "u.q FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(d, s, q) ON CONFLICT "
                      "(device, spool) DO UPDATE SET last_seq = greatest(pgpipe.device_positions.last_seq, "
                      "EXCLUDED.last_seq), updated_at = now()", 3, v, NULL);
}

/* The answers of the group's new requests, and their keys' rows. */
static int ig_finish(ig_committer *c, ig_group *g, long long *acc, long long *dead)
{
    const char *v[6];
    int nkeyed = 0, rc = PGPIPE_OK;
    ig_arrays_begin(c, 6);
    for (size_t i = 0; i < g->nreqs; i++) {
        ig_req *q = &g->reqs[i];
        if (q->fate != IG_NEW)
            continue;
        long long bad = 0;
        for (size_t k = q->row_lo; k < q->row_hi; k++)
            bad += g->rows[k].bad != 0 || g->rows[k].skip;
        long long a = (long long)(q->row_hi - q->row_lo) - bad;
        long long qdead = q->dead - q->dup_dead;
        long long dup = q->has_dev ? (q->cut < q->nrec ? q->cut : q->nrec) : -1;
        *acc += a;
        *dead += qdead;
        pp_buf errs = { 0 };
        rc |= ig_errors_json(&errs, g, q);
        c->scratch.len = 0;
        rc |= ig_body(&c->scratch, q->id, a, qdead, errs.data, errs.len, dup);
        rc |= ig_answer(q, 202, &c->scratch);
        if (q->key_len) {
            rc |= ig_array_text(&c->a[0], g->kbuf.data + q->src_off, q->src_len);
            rc |= ig_array_text(&c->a[1], g->kbuf.data + q->keyonly, q->key_len);
            rc |= ig_array_text(&c->a[2], q->id, 36);
            rc |= ig_array_int(&c->a[3], a);
            rc |= ig_array_int(&c->a[4], qdead);
            rc |= ig_array_text(&c->a[5], errs.len ? errs.data : NULL, errs.len);
            nkeyed++;
        }
        pp_buf_free(&errs);
    }
    if (rc != PGPIPE_OK)
        return pp_err_nomem(&c->err);
    if (!nkeyed)
        return PGPIPE_OK;
    if (ig_arrays_end(c, 6, v) != PGPIPE_OK)
        return pp_err_nomem(&c->err);
    return ig_exec(c, "INSERT INTO pgpipe.http_keys (source, key, key_hash, request_id, accepted, "
                      "dead_lettered, errors) SELECT u.s, u.k, md5(u.s || E'\\n' || u.k)::uuid, "
                      "u.r::uuid, u.a, u.d, u.e FROM unnest($1::text[], $2::text[], $3::text[], "
                      "$4::int[], $5::int[], $6::text[]) AS u(s, k, r, a, d, e)", 6, v, NULL);
}

/* A group of rows alone (no idempotency keys to lock or record, no dead
** letters): the COPY is the whole transaction. Outside a transaction block
** the server commits a statement before it answers it, so the COPY's
** CommandComplete means committed, as COMMIT's would: two round trips
** instead of four (BEGIN, COPY, COPY end, COMMIT). Once the COPY's end is
** sent the outcome is unknown until the answer comes (*commit_sent); an
** error the server reports means rolled back, and a refused row sends the
** group the slow way (ig_commit), in a transaction block. */
static int ig_transaction_rows(ig_committer *c, ig_group *g, long long *acc, long long *dead,
                               int *commit_sent)
{
    /* the answers first (no key rows to write here): nothing can fail
    ** between the commit and them */
    int rc = ig_finish(c, g, acc, dead);
    if (rc != PGPIPE_OK || !g->nrows)
        return rc;
    PGresult *err = NULL;
    rc = ig_copy_rows(c, g, 0, g->nrows, &err, commit_sent);
    PQclear(err);
    if (rc != PGPIPE_OK && *commit_sent && c->err.sqlstate[0] && c->conn &&
        PQstatus(c->conn) == CONNECTION_OK && PQtransactionStatus(c->conn) == PQTRANS_IDLE)
        *commit_sent = 0; /* the server said why, and lives on: nothing was committed */
    return rc;
}

/* The group's transaction. *stage tells how far it got (for the answer). */
static int ig_transaction(ig_committer *c, ig_group *g, int slow, long long *acc, long long *dead,
                          int *commit_sent)
{
    *acc = *dead = 0;
    *commit_sent = 0;
    for (size_t i = 0; i < g->nreqs; i++) {
        g->reqs[i].fate = IG_NEW;
        g->reqs[i].first = IG_NONE;
    }
    c->npos = 0;
    for (size_t i = 0; i < g->nrows; i++)
        g->rows[i].skip = 0;
    for (size_t i = 0; i < g->nreqs; i++)
        g->reqs[i].cut = g->reqs[i].dup_dead = 0;
    if (!slow && !g->nkeys && !g->dbuf.len && !g->nclaims)
        return ig_transaction_rows(c, g, acc, dead, commit_sent);
    int rc = ig_exec(c, PP_BEGIN, 0, NULL, NULL);
    if (rc == PGPIPE_OK && g->nkeys)
        rc = ig_keys_check(c, g);
    if (rc == PGPIPE_OK && g->nclaims)
        rc = ig_claims_check(c, g);
    if (rc != PGPIPE_OK)
        return rc;
    size_t live = 0;
    for (size_t i = 0; i < g->nrows; i++)
        live += ig_live(g, i);
    if (live && !slow) {
        PGresult *err = NULL;
        rc = ig_copy_rows(c, g, 0, g->nrows, &err, NULL);
        PQclear(err);
        if (rc != PGPIPE_OK)
            return rc; /* the caller tries the slow way when the server refused a row */
    } else if (live) {
        rc = ig_rows_isolate(c, g);
        if (rc != PGPIPE_OK)
            return rc;
    }
    /* dead letters: the new requests' ones of validation, then the server's */
    int any = 0;
    for (size_t i = 0; i < g->nreqs && !any; i++)
        any = g->reqs[i].fate == IG_NEW && (g->reqs[i].d_hi > g->reqs[i].d_lo);
    size_t dtail = g->nreqs ? g->reqs[g->nreqs - 1].d_hi : 0;
    if (any || g->dbuf.len > dtail) {
        rc = pp_copy_in_start(c->conn, pp_dlq_load_copy_sql(), &c->err, "http ingest: dead letters");
        for (size_t i = 0; i < g->nreqs && rc == PGPIPE_OK; i++) {
            const ig_req *q = &g->reqs[i];
            size_t from = q->d_lo;
            if (q->cut > 0) {
                /* a duplicate's dead letters are not written: they come first */
                from = q->d_hi;
                for (uint32_t k = q->err_head; k != IG_NONE; k = g->errs[k].next)
                    if (g->errs[k].dlen && (long long)g->errs[k].rec > q->cut) {
                        from = g->errs[k].doff;
                        break;
                    }
            }
            if (q->fate == IG_NEW && q->d_hi > from)
                rc = ig_send(c, g->dbuf.data + from, q->d_hi - from);
        }
        if (rc == PGPIPE_OK && g->dbuf.len > dtail)
            rc = ig_send(c, g->dbuf.data + dtail, g->dbuf.len - dtail);
        if (rc != PGPIPE_OK)
            return rc;
        PGresult *err = NULL;
        rc = ig_copy_end(c, &err);
        PQclear(err);
        if (rc != PGPIPE_OK)
            return rc;
    }
    rc = ig_finish(c, g, acc, dead);
    if (rc == PGPIPE_OK && c->npos)
        rc = ig_positions_save(c);
    if (rc != PGPIPE_OK)
        return rc;
    *commit_sent = 1;
    return ig_exec(c, "COMMIT", 0, NULL, NULL);
}

/* c waits for its database from now on (on): the watchdog may cut its
** socket after the commit timeout; or no more (off). Off returns 1 when the
** watchdog cut it meanwhile (and sets c->err to say so). */
static int ig_busy(ig_committer *c, int on)
{
    pp_ingest *ig = c->ig;
    pthread_mutex_lock(&ig->wmu);
    int cut = c->cut;
    c->cut = 0;
    c->busy_since = on && c->conn ? pgpipe_now_us() : 0;
    c->fd = on && c->conn ? PQsocket(c->conn) : -1;
    pthread_mutex_unlock(&ig->wmu);
    if (cut && !on) {
        pp_err(&c->err, PGPIPE_DB, "http ingest: the database did not answer within %lld ms "
               "(commit_timeout_ms): its connection was closed",
               (long long)(ig->commit_us / 1000));
        snprintf(c->err.sqlstate, sizeof c->err.sqlstate, "08006");
    }
    return cut;
}

static void *ig_watchdog_main(void *arg)
{
    pp_ingest *ig = arg;
    pthread_mutex_lock(&ig->wmu);
    while (!ig->wquit) {
        int64_t t = pgpipe_now_us();
        for (int i = 0; i < ig->ncm; i++) {
            ig_committer *c = &ig->cm[i];
            if (c->busy_since && !c->cut && c->fd >= 0 && t - c->busy_since >= ig->commit_us) {
                /* the blocked call of the committer fails as on a lost
                ** connection; the fd stays open until the committer
                ** closes it, which it does only after ig_busy(c, 0) */
                shutdown(c->fd, SHUT_RDWR);
                c->cut = 1;
                ig->m_timeouts++;
            }
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += IG_WATCH_MS * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&ig->wcv, &ig->wmu, &ts);
    }
    pthread_mutex_unlock(&ig->wmu);
    return NULL;
}

/* Does every committer wait for the database for long (the shorter of
** IG_STUCK_US and the commit timeout)? Then nothing admitted now would
** commit soon. */
static int ig_stuck(pp_ingest *ig)
{
    int64_t t = pgpipe_now_us(), lim = ig->commit_us < IG_STUCK_US ? ig->commit_us : IG_STUCK_US;
    int busy = 0;
    pthread_mutex_lock(&ig->wmu);
    for (int i = 0; i < ig->ncm; i++)
        busy += ig->cm[i].busy_since && t - ig->cm[i].busy_since >= lim;
    pthread_mutex_unlock(&ig->wmu);
    return busy == ig->ncm;
}

static void ig_disconnect(ig_committer *c)
{
    pp_ingest *ig = c->ig;
    /* the watchdog forgets the socket before it is closed (and its number
    ** reused) */
    pthread_mutex_lock(&ig->wmu);
    c->busy_since = 0;
    c->fd = -1;
    pthread_mutex_unlock(&ig->wmu);
    if (c->conn)
        PQfinish(c->conn);
    c->conn = NULL;
    if (c->live) {
        c->live = 0;
        atomic_fetch_sub(&ig->live, 1);
    }
}

/* Create the coming days' key partitions and drop the expired ones; and
** ask again whether staging.raw_events takes binary rows (at each connect
** and hourly: a table altered while the server runs is seen then). */
static void ig_maintain(ig_committer *c)
{
    atomic_store(&c->ig->fmt, pp_copy_staging_format(c->conn, "staging.raw_events"));
    char v[16];
    const char *vals[1] = { v };
    snprintf(v, sizeof v, "%d", c->ig->keep_hours);
    if (ig_exec(c, "SELECT pgpipe.http_keys_maintain($1::int)", 1, vals, NULL) != PGPIPE_OK)
        pp_logf(PGPIPE_LOG_WARN, "http", "idempotency key partitions: %s", c->err.message);
    c->maintained = pgpipe_now_us();
}

/* Connect (when it is time to try). 1 = the committer has a connection. */
static int ig_connect(ig_committer *c, int now_anyway)
{
    pp_ingest *ig = c->ig;
    if (c->conn && PQstatus(c->conn) == CONNECTION_OK)
        return 1;
    ig_disconnect(c);
    int64_t t = pgpipe_now_us();
    if (!now_anyway && t < c->next_try)
        return 0;
    /* a server (or a pooler) that accepts no connection must not hold a
    ** committer, and the request it has, for ever: libpq's connect_timeout
    ** (per host of a multi-host conninfo), unless the conninfo or
    ** PGCONNECT_TIMEOUT sets one (entries before "dbname" are defaults) */
    char ct[16];
    long long cts = ig->commit_us / 1000000;
    snprintf(ct, sizeof ct, "%lld", cts < 2 ? 2 : cts > 10 ? 10 : cts);
    const char *env_ct = getenv("PGCONNECT_TIMEOUT");
    const char *keys[3] = { "connect_timeout", "dbname", NULL };
    const char *vals[3] = { ct, ig->conninfo ? ig->conninfo : "", NULL };
    int k0 = env_ct && *env_ct ? 1 : 0;
    c->conn = PQconnectdbParams(keys + k0, vals + k0, 1);
    if (c->conn)
        PQsetNoticeProcessor(c->conn, pp_notice_to_log, (void *)"http");
    int ok = c->conn && PQstatus(c->conn) == CONNECTION_OK, cut = 0;
    if (ok) {
        ig_busy(c, 1);
        PGresult *r = NULL;
        ok = ig_exec(c, "SET application_name = 'pgpipe http ingest'", 0, NULL, NULL) == PGPIPE_OK &&
             ig_exec(c, "SELECT current_setting('transaction_read_only')", 0, NULL, &r) == PGPIPE_OK;
        int ro = ok && PQntuples(r) == 1 && !strcmp(PQgetvalue(r, 0, 0), "on");
        PQclear(r);
        cut = ig_busy(c, 0);
        if (ro && !cut) {
            /* a standby (or default_transaction_read_only): no group could
            ** commit there, so the committer is not counted ready */
            ok = 0;
            cut = 1; /* c->err says why */
            pp_err(&c->err, PGPIPE_DB, "http ingest: the server is read-only (a standby?): "
                   "records cannot be committed there; with several hosts, add "
                   "target_session_attrs=read-write to the conninfo");
            snprintf(c->err.sqlstate, sizeof c->err.sqlstate, "25006");
        }
    }
    if (!ok) {
        if (c->conn && !cut)
            pp_err_pq(&c->err, c->conn, NULL, "http ingest: connect");
        if (c->conn && strncmp(c->logged, c->err.message, sizeof c->logged - 1)) {
            /* once per new reason: /readyz says "no connection", the log why */
            size_t n = strlen(c->err.message);
            n = n < sizeof c->logged - 1 ? n : sizeof c->logged - 1;
            memcpy(c->logged, c->err.message, n);
            c->logged[n] = '\0';
            pp_logf(PGPIPE_LOG_WARN, "http", "committer %d: %s", c->idx + 1, c->err.message);
        }
        ig_disconnect(c);
        c->backoff_ms = c->backoff_ms ? (c->backoff_ms * 2 > 5000 ? 5000 : c->backoff_ms * 2) : 100;
        c->next_try = pgpipe_now_us() + (int64_t)c->backoff_ms * 1000;
        return 0;
    }
    c->backoff_ms = 0;
    c->logged[0] = '\0';
    c->used = pgpipe_now_us();
    c->live = 1;
    atomic_fetch_add(&ig->live, 1);
    pthread_mutex_lock(&ig->mu);
    ig->m_reconnects++;
    pthread_mutex_unlock(&ig->mu);
    ig_busy(c, 1);
    ig_maintain(c);
    ig_busy(c, 0);
    return 1;
}

/* Did the statement fail because the connection is gone (not the data,
** not a conflict)? */
static int ig_conn_lost(const ig_committer *c)
{
    return !c->conn || PQstatus(c->conn) != CONNECTION_OK || !strncmp(c->err.sqlstate, "08", 2) ||
           !strncmp(c->err.sqlstate, "57P", 3);
}

/* c's connection was checked (or c has none). */
static void ig_rechecked(ig_committer *c)
{
    if (atomic_exchange(&c->recheck, 0))
        atomic_fetch_sub(&c->ig->rechecks, 1);
}

/* A committer lost its connection: the server likely went away, and the
** others' connections, which say CONNECTION_OK until a statement fails,
** likely with it. Each of them checks its own before the spool's drainer
** trusts them, and with a spool new requests go there at once: the retry
** of the group's requests is spooled, not sent to a dead connection. */
static void ig_conn_failed(ig_committer *c)
{
    pp_ingest *ig = c->ig;
    for (int i = 0; i < ig->ncm; i++)
        if (&ig->cm[i] != c && !atomic_exchange(&ig->cm[i].recheck, 1))
            atomic_fetch_add(&ig->rechecks, 1);
#ifndef PGPIPE_OMIT_SPOOL
    if (ig->sp)
        atomic_store(&ig->spooling, 1);
#endif
}

static void ig_histo(long long *b, const double *le, size_t n, double v)
{
    size_t i = 0;
    while (i < n && v > le[i])
        i++;
    b[i]++;
}

/* After a group of binary rows failed (outside a transaction): whether
** staging.raw_events still takes binary rows, asked again; 1 = no longer,
** and the groups opened from now on write text. */
static int ig_binary_gone(ig_committer *c)
{
    if (PQtransactionStatus(c->conn) != PQTRANS_IDLE)
        return 0;
    int f = pp_copy_staging_format(c->conn, "staging.raw_events");
    atomic_store(&c->ig->fmt, f);
    if (f != PP_COPY_BINARY)
        pp_logf(PGPIPE_LOG_WARN, "http", "staging.raw_events no longer takes binary rows (%s); "
                "writing text from here", c->err.message);
    return f != PP_COPY_BINARY;
}

/* Commit group g and answer each of its requests. */
static void ig_commit(ig_committer *c, ig_group *g)
{
    pp_ingest *ig = c->ig;
    int64_t t0 = pgpipe_now_us();
    long long acc = 0, dead = 0;
    int rc = PGPIPE_DB, sent = 0, transient = 1, lost = 1;
    if (ig_connect(c, 1)) {
        ig_busy(c, 1);
        rc = ig_transaction(c, g, 0, &acc, &dead, &sent);
        if (rc != PGPIPE_OK && !sent && !ig_transient(c) && ig_data_error(c)) {
            /* a row refused (a value JSONB cannot hold ...): isolate it;
            ** unless the rows were refused for being binary (staging.raw_events
            ** altered while the server runs): not theirs to dead-letter, the
            ** group is answered 503 and the next groups go as text */
            pp_rollback_open(c->conn);
            if (!g->cw.binary || !ig_binary_gone(c))
                rc = ig_transaction(c, g, 1, &acc, &dead, &sent);
        }
        ig_busy(c, 0); /* cut as COMMIT's answer came: rc says what it was */
        transient = rc != PGPIPE_OK && ig_transient(c);
        lost = rc != PGPIPE_OK && ig_conn_lost(c);
        /* a read-only server (25006: a standby, or a primary that became one;
        ** a conninfo without target_session_attrs=read-write): never acked,
        ** and the next group connects again, to whichever host is writable */
        int read_only = rc != PGPIPE_OK && !strcmp(c->err.sqlstate, "25006");
        if (rc != PGPIPE_OK) {
            pp_logf(PGPIPE_LOG_WARN, "http", "group of %zu requests not committed: %s", g->nreqs,
                    c->err.message);
            if (transient || read_only) {
                ig_disconnect(c);
                /* a new connection at once, then back off (a read-only
                ** server: after the back-off) */
                if (!read_only)
                    c->next_try = 0;
            } else {
                ig_busy(c, 1);
                pp_rollback_open(c->conn);
                if (!strcmp(c->err.sqlstate, "23514"))
                    ig_maintain(c); /* no partition for a key: make them */
                else if (g->cw.binary && atomic_load(&ig->fmt) == PP_COPY_BINARY)
                    ig_binary_gone(c); /* a refusal of binary rows? */
                ig_busy(c, 0);
            }
        }
    }
    ig_rechecked(c);
    if (rc != PGPIPE_OK && lost)
        ig_conn_failed(c); /* before the answers: their retries are spooled */
    c->used = pgpipe_now_us();
    double secs = (double)(c->used - t0) / 1e6;
    long long committed = 0, replayed = 0, seen = 0, dups = 0, drained = 0, dfail = 0, dreq = 0;
    /* a key repeated in the group: the first request's answer */
    for (size_t i = 0; i < g->nreqs && rc == PGPIPE_OK; i++) {
        ig_req *q = &g->reqs[i];
        const ig_req *f = q->fate == IG_DUP ? &g->reqs[q->first] : NULL;
        if (!f || !f->answer)
            continue;
        q->answer = pp_malloc(f->answer_len);
        if (q->answer) {
            memcpy(q->answer, f->answer, f->answer_len);
            q->answer_len = f->answer_len;
        }
        q->status = 202;
    }
    /* answer: after the COMMIT only */
    for (size_t i = 0; i < g->nreqs; i++) {
        ig_req *q = &g->reqs[i];
        pp_http_reply rep = { 0 };
        rep.content_type = "application/json";
        if (rc != PGPIPE_OK) {
            const char *m = sent ? "the commit failed or its outcome is unknown: retry "
                                   "with the same idempotency key"
                                 : "the records could not be committed: retry later";
            ig_reply(&rep, 503, "not_committed", q->id, 1, m);
        } else {
            rep.status = q->status;
            rep.body = q->answer;
            rep.body_len = q->answer_len;
            q->answer = NULL;
            rep.replayed = q->fate == IG_REPLAY || q->fate == IG_DUP;
            committed += q->fate == IG_NEW;
            replayed += q->fate == IG_REPLAY || q->fate == IG_DUP;
            seen += q->fate == IG_SEEN;
            if (q->fate == IG_NEW && q->has_dev)
                dups += q->cut;
        }
        if (q->from_spool) {
            /* the drainer's: no connection waits for it */
            dreq++;
            if (rc != PGPIPE_OK)
                dfail++;
            else if (q->fate == IG_NEW)
                for (size_t k = q->row_lo; k < q->row_hi; k++)
                    drained += !g->rows[k].bad && !g->rows[k].skip;
            pp_http_reply_free(&rep);
            continue;
        }
        ig->done(ig->h, q->ticket, &rep);
    }
    for (size_t i = 0; i < g->nreqs; i++) {
        pp_free(g->reqs[i].answer);
        g->reqs[i].answer = NULL;
    }
    pthread_mutex_lock(&ig->mu);
    ig->pending -= (long long)g->nreqs;
    ig->pending_bytes -= g->bytes;
#ifndef PGPIPE_OMIT_SPOOL
    ig->d_inflight -= dreq;
    ig->d_failed += dfail;
    ig->m_drained += drained;
    ig->m_drain_seen += seen;
    ig->m_drain_failed += dfail;
#else
    (void)dreq, (void)dfail, (void)drained;
#endif
    ig->m_dup += dups;
    if (rc == PGPIPE_OK) {
        ig->m_committed += committed;
        ig->m_replayed += replayed;
        ig->m_refused += (long long)g->nreqs - committed - replayed - seen;
        ig->m_accepted += acc;
        ig->m_dead += dead;
        ig->m_groups++;
        ig_histo(ig->m_size_b, ig_size_le, IG_NSIZE, (double)g->nrecords);
        ig_histo(ig->m_lat_b, ig_lat_le, IG_NLAT, secs);
        ig->m_size_sum += (double)g->nrecords;
        ig->m_lat_sum += secs;
    } else {
        ig->m_failed += (long long)g->nreqs;
    }
    ig_group_put(ig, g);
    pthread_cond_broadcast(&ig->dcv);
    if (rc != PGPIPE_OK && lost)
        pthread_cond_broadcast(&ig->cv); /* the others check their connections */
    pthread_mutex_unlock(&ig->mu);
}

/* The next group to commit (under mu), or NULL; *wait_us how long until the
** open one is due. */
static ig_group *ig_take(pp_ingest *ig, int64_t *wait_us)
{
    ig_group *g = ig->qhead;
    if (g) {
        ig->qhead = g->next;
        if (!ig->qhead)
            ig->qtail = NULL;
        g->next = NULL;
        return g;
    }
    g = ig->open;
    *wait_us = -1;
    if (!g || !g->nreqs)
        return NULL;
#ifndef PGPIPE_OMIT_SPOOL
    if (ig->hold && !ig->quit)
        return NULL; /* the drainer fills it: one group per round, in order */
#endif
    int64_t due = g->t_first + (int64_t)ig->window_ms * 1000;
    int64_t t = pgpipe_now_us();
    if (ig->flush || ig->quit || t >= due || g->nrecords >= ig->group_records) {
        ig->open = NULL;
        return g;
    }
    *wait_us = due - t;
    return NULL;
}

static void ig_wait(pp_ingest *ig, int64_t us)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (us % 1000000) * 1000;
    ts.tv_sec += (time_t)(us / 1000000 + ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    pthread_cond_timedwait(&ig->cv, &ig->mu, &ts);
}

static void *ig_committer_main(void *arg)
{
    ig_committer *c = arg;
    pp_ingest *ig = c->ig;
    pthread_mutex_lock(&ig->mu);
    for (;;) {
        int64_t wait_us = -1;
        ig_group *g = ig_take(ig, &wait_us);
        if (g) {
            pthread_mutex_unlock(&ig->mu);
            ig_commit(c, g);
            pthread_mutex_lock(&ig->mu);
            continue;
        }
        if (ig->quit && !ig->qhead && (!ig->open || !ig->open->nreqs))
            break;
        int64_t t = pgpipe_now_us();
        int need_conn = !c->conn || PQstatus(c->conn) != CONNECTION_OK;
        if (atomic_load(&c->recheck)) {
            /* another committer lost its connection: is this one alive? */
            pthread_mutex_unlock(&ig->mu);
            ig_busy(c, 1);
            int bad = !need_conn && ig_exec(c, "", 0, NULL, NULL) != PGPIPE_OK;
            ig_busy(c, 0);
            if (bad && ig_transient(c)) {
                ig_disconnect(c);
                c->next_try = 0;
            }
            c->used = pgpipe_now_us();
            ig_rechecked(c);
            pthread_mutex_lock(&ig->mu);
            continue;
        }
        if (need_conn && t >= c->next_try) {
            pthread_mutex_unlock(&ig->mu);
            ig_connect(c, 0);
            pthread_mutex_lock(&ig->mu);
            continue;
        }
        if (!need_conn && t - c->used >= IG_PING_US) {
            /* an idle connection is checked, so readiness follows a server
            ** that went away between groups */
            pthread_mutex_unlock(&ig->mu);
            ig_busy(c, 1);
            int bad = ig_exec(c, "", 0, NULL, NULL) != PGPIPE_OK;
            ig_busy(c, 0);
            if (bad && ig_transient(c)) {
                ig_disconnect(c);
                c->next_try = 0;
            }
            c->used = pgpipe_now_us();
            pthread_mutex_lock(&ig->mu);
            continue;
        }
        if (!need_conn && t - c->maintained >= IG_MAINTAIN_US) {
            pthread_mutex_unlock(&ig->mu);
            ig_busy(c, 1);
            ig_maintain(c);
            ig_busy(c, 0);
            pthread_mutex_lock(&ig->mu);
            continue;
        }
        int64_t w = 1000000;
        if (wait_us >= 0 && wait_us < w)
            w = wait_us;
        if (need_conn && c->next_try - t < w)
            w = c->next_try - t > 0 ? c->next_try - t : 0;
        if (!need_conn && c->used + IG_PING_US - t < w)
            w = c->used + IG_PING_US - t > 0 ? c->used + IG_PING_US - t : 0;
        ig_wait(ig, w);
    }
    pthread_mutex_unlock(&ig->mu);
    return NULL;
}

/* ---- the spool's drainer -------------------------------------------------------------- */
#ifndef PGPIPE_OMIT_SPOOL
/* The drainer hands the spooled requests to the group commit in rounds: it
** holds the open group while it fills it (ig_take leaves it), then lets it
** go and waits for every answer before the next round, so the groups of the
** spool commit one after another, in the spool's order, as the position of
** the server's spool in pgpipe.device_positions needs. */
typedef struct ig_dctx {
    pp_ingest *ig;
    long long round_rec, round_req;
} ig_dctx;

/* End the round: commit the open group, wait for its answers. PGPIPE_OK
** when every drained request of the round was committed. */
static int ig_round_end(pp_ingest *ig)
{
    pthread_mutex_lock(&ig->mu);
    ig->hold = 0;
    ig->flush++;
    pthread_cond_broadcast(&ig->cv);
    while (ig->d_inflight > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&ig->dcv, &ig->mu, &ts);
    }
    ig->flush--;
    int failed = ig->d_failed > 0;
    ig->d_failed = 0;
    pthread_mutex_unlock(&ig->mu);
    return failed ? PGPIPE_DB : PGPIPE_OK;
}

/* Commit everything queued now and wait (at most 30 s) until it is
** answered: room under the memory budget for the drain. */
static void ig_flush_all(pp_ingest *ig)
{
    pthread_mutex_lock(&ig->mu);
    ig->flush++;
    pthread_cond_broadcast(&ig->cv);
    for (int i = 0; i < 30 && ig->pending > 0 && !ig->dquit; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&ig->dcv, &ig->mu, &ts);
    }
    ig->flush--;
    pthread_mutex_unlock(&ig->mu);
}

static int ig_drain_rec(void *ud, long long seq, const void *rec, size_t len)
{
    ig_dctx *d = ud;
    pp_ingest *ig = d->ig;
    if (!rec) {
        /* the segment's end: deleted only once all of it is committed */
        d->round_rec = d->round_req = 0;
        return ig_round_end(ig);
    }
    pp_http_request rq;
    char source[128];
    if (ig_env_decode(rec, len, &rq, source, sizeof source)) {
        pp_logf(PGPIPE_LOG_WARN, "http", "spool: record %lld is not a spooled request: skipped", seq);
        pthread_mutex_lock(&ig->mu);
        ig->m_drain_bad++;
        pthread_mutex_unlock(&ig->mu);
        return 0;
    }
    for (int tries = 0;; tries++) {
        pthread_mutex_lock(&ig->mu);
        int quit = ig->dquit;
        pthread_mutex_unlock(&ig->mu);
        if (quit || d->round_req >= IG_GROUP_KEYS / 2 || d->round_rec >= ig->group_records) {
            d->round_rec = d->round_req = 0;
            int rc = ig_round_end(ig);
            if (rc != PGPIPE_OK)
                return rc;
            if (quit)
                return PGPIPE_BUSY;
        }
        pthread_mutex_lock(&ig->mu);
        ig->hold = 1;
        ig->d_inflight++;
        pthread_mutex_unlock(&ig->mu);
        pp_http_reply now;
        long long nrec = 0;
        int answered = ig_submit(ig, &rq, source, 0, &now, seq, 0, &nrec);
        if (!answered) {
            d->round_req++;
            d->round_rec += nrec;
            return 0;
        }
        pthread_mutex_lock(&ig->mu);
        ig->d_inflight--;
        pthread_mutex_unlock(&ig->mu);
        int status = now.status;
        pp_http_reply_free(&now);
        if (status == 503) {
            /* the database went away again, or memory is short: the
            ** segment stays; what this round committed is booked */
            d->round_rec = d->round_req = 0;
            int rc = ig_round_end(ig);
            if (rc != PGPIPE_OK || atomic_load(&ig->live) == 0 || tries >= 50)
                return rc != PGPIPE_OK ? rc : PGPIPE_DB;
            ig_flush_all(ig);
            if (tries)
                pgpipe_sleep_ms(100);
            continue;
        }
        /* refused as it is now (a source's settings changed since it came) */
        pp_logf(PGPIPE_LOG_WARN, "http", "spool: request %s (record %lld) refused when drained "
                "(%d): dropped", rq.id, seq, status);
        pthread_mutex_lock(&ig->mu);
        ig->m_drain_bad++;
        pthread_mutex_unlock(&ig->mu);
        return 0;
    }
}

static void *ig_drainer_main(void *arg)
{
    pp_ingest *ig = arg;
    ig_dctx d = { ig, 0, 0 };
    pthread_mutex_lock(&ig->mu);
    for (;;) {
        /* (not while a committer's connection is in doubt: one lost its
        ** connection, the others check theirs) */
        while (!ig->dquit && !(atomic_load(&ig->spooling) && atomic_load(&ig->live) > 0 &&
                               atomic_load(&ig->rechecks) == 0)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 200 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&ig->scv, &ig->mu, &ts);
        }
        if (ig->dquit)
            break;
        pthread_mutex_unlock(&ig->mu);
        pgpipe_spool_drain_result res;
        d.round_rec = d.round_req = 0;
        int rc = pgpipe_spool_drain_to(ig->sp, ig_drain_rec, &d, &res);
        if (rc == PGPIPE_OK) {
            pthread_mutex_lock(&ig->spmu);
            pgpipe_spool_status st = { 0 };
            if (pgpipe_spool_stats(ig->sp, &st) == PGPIPE_OK && st.records == 0)
                atomic_store(&ig->spooling, 0);
            pthread_mutex_unlock(&ig->spmu);
            if (res.records)
                pp_logf(PGPIPE_LOG_INFO, "http", "spool: %lld spooled requests drained", res.records);
        } else {
            pthread_mutex_lock(&ig->mu);
            int quit = ig->dquit;
            pthread_mutex_unlock(&ig->mu);
            if (!quit)
                pp_logf(PGPIPE_LOG_WARN, "http", "spool: drain stopped, again in a second: %s",
                        pgpipe_errmsg(ig->sp));
            for (int i = 0; i < 10 && !quit; i++) {
                pgpipe_sleep_ms(100);
                pthread_mutex_lock(&ig->mu);
                quit = ig->dquit;
                pthread_mutex_unlock(&ig->mu);
            }
        }
        pthread_mutex_lock(&ig->mu);
    }
    pthread_mutex_unlock(&ig->mu);
    return NULL;
}

PGPIPE_PRIVATE int pp_ingest_spool_stats(pp_ingest *ig, pgpipe_spool_status *st)
{
    if (!ig || !ig->sp)
        return 0;
    return pgpipe_spool_stats(ig->sp, st) == PGPIPE_OK;
}
#endif

/* ---- the interface --------------------------------------------------------------------- */

PGPIPE_PRIVATE int pp_ingest_open(pp_ingest **out, const pgpipe_http_options *o,
                                  pp_http_auth *auth, struct pgpipe_http *h,
                                  pp_ingest_done_fn done, pgpipe_error *err)
{
    pp_ingest *ig = *out = pp_calloc(1, sizeof *ig);
    if (!ig)
        return pp_err_nomem(err);
    ig->h = h;
    ig->done = done;
    ig->auth = auth;
    ig->o = o;
    ig->defaults.window_hours = o->window_hours > 0 ? o->window_hours : 72;
    ig->defaults.tolerance_s = 300;
    ig->max_records = o->max_records;
    ig->max_body = o->max_body_bytes;
    ig->window_ms = o->group_window_ms >= 0 ? o->group_window_ms : 0;
    ig->group_records = o->group_records > 0 ? o->group_records : 5000;
    ig->budget = o->memory_budget ? o->memory_budget : (size_t)64 << 20;
    int maxw = ig->defaults.window_hours;
    for (int i = 0; i < o->nsources && o->sources; i++)
        if (o->sources[i].window_hours > maxw)
            maxw = o->sources[i].window_hours;
    /* a key is reported expired for a day past its window before its
    ** partition goes */
    ig->keep_hours = maxw + 24;
    ig->ncm = o->committers > 0 ? (o->committers < IG_MAX_COMMITTERS ? o->committers
                                                                      : IG_MAX_COMMITTERS) : 2;
    if (o->conninfo && !(ig->conninfo = pp_strdup(o->conninfo)))
        return pp_err_nomem(err);
    if (pgpipe_json_doc_open(&ig->doc) != PGPIPE_OK)
        return pp_err_nomem(err);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&ig->mu, NULL);
#ifndef PGPIPE_OMIT_SPOOL
    pthread_mutex_init(&ig->spmu, NULL);
    pthread_cond_init(&ig->scv, &ca);
    atomic_init(&ig->spooling, 0);
#endif
    pthread_cond_init(&ig->cv, &ca);
    pthread_cond_init(&ig->dcv, &ca);
    pthread_mutex_init(&ig->wmu, NULL);
    pthread_cond_init(&ig->wcv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&ig->live, 0);
    atomic_init(&ig->rechecks, 0);
    ig->commit_us = (int64_t)(o->commit_timeout_ms > 0 ? o->commit_timeout_ms : 30000) * 1000;
    for (int i = 0; i < ig->ncm; i++) {
        ig_committer *c = &ig->cm[i];
        c->ig = ig;
        c->idx = i;
        c->fd = -1;
        atomic_init(&c->recheck, 0);
    }
    /* before the first connection, which it watches too */
    if (pthread_create(&ig->watchdog, NULL, ig_watchdog_main, ig) != 0)
        return pp_err(err, PGPIPE_NOMEM, "http ingest: cannot start the watchdog thread");
    ig->has_watchdog = 1;
    for (int i = 0; i < ig->ncm; i++) {
        ig_committer *c = &ig->cm[i];
        /* connected before the server answers its first request, so it is
        ** ready at once when the database is */
        ig_connect(c, 1);
    }
    for (int i = 0; i < ig->ncm; i++) {
        ig_committer *c = &ig->cm[i];
        if (pthread_create(&c->tid, NULL, ig_committer_main, c) != 0)
            return pp_err(err, PGPIPE_NOMEM, "http ingest: cannot start a committer thread");
        c->started = 1;
    }
#ifndef PGPIPE_OMIT_SPOOL
    if (o->spool) {
        if (!o->spool_dir || !*o->spool_dir)
            return pp_err(err, PGPIPE_MISUSE, "http: spool needs spool_dir (the spool's folder)");
        pgpipe_spool_options so;
        pgpipe_spool_options_init(&so);
        so.device_id = o->spool_device && *o->spool_device ? o->spool_device : NULL;
        so.fsync_policy = o->spool_fsync;
        so.max_bytes = o->spool_max_bytes;
        so.full_policy = PGPIPE_SPOOL_FULL_BLOCK;
        if (pgpipe_spool_open(&ig->sp, o->spool_dir, &so) != PGPIPE_OK) {
            int rc = ig->sp ? pgpipe_errcode(ig->sp) : PGPIPE_NOMEM;
            pp_err(err, rc ? rc : PGPIPE_IO, "http: spool %s: %s", o->spool_dir,
                   ig->sp ? pgpipe_errmsg(ig->sp) : "out of memory");
            pgpipe_spool_close(ig->sp);
            ig->sp = NULL;
            return err->code;
        }
        snprintf(ig->sp_claim, sizeof ig->sp_claim, "%s\n%s", pgpipe_spool_device(ig->sp),
                 pgpipe_spool_uuid(ig->sp));
        pgpipe_spool_status st = { 0 };
        if (pgpipe_spool_stats(ig->sp, &st) == PGPIPE_OK && st.records > 0)
            atomic_store(&ig->spooling, 1); /* left by the last run: first drained */
        if (pthread_create(&ig->drainer, NULL, ig_drainer_main, ig) != 0)
            return pp_err(err, PGPIPE_NOMEM, "http ingest: cannot start the spool's drainer");
        ig->has_drainer = 1;
    }
#endif
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_ingest_ready(pp_ingest *ig, char *why, size_t size)
{
#ifndef PGPIPE_OMIT_SPOOL
    if (ig->sp && (atomic_load(&ig->live) == 0 || atomic_load(&ig->spooling))) {
        /* requests are taken: into the spool */
        if (size)
            snprintf(why, size, atomic_load(&ig->live) == 0
                                    ? "no connection to the database: requests go to the spool"
                                    : "draining the spool: requests go to the spool until it is empty");
        return 1;
    }
#endif
    if (atomic_load(&ig->live) == 0) {
        if (size)
            snprintf(why, size, "no connection to the database");
        return 0;
    }
    if (ig_stuck(ig)) {
        if (size)
            snprintf(why, size, "the database does not answer: every committer has waited "
                                "%lld ms or more", (long long)((ig->commit_us < IG_STUCK_US
                                                                   ? ig->commit_us : IG_STUCK_US) / 1000));
        return 0;
    }
    pthread_mutex_lock(&ig->mu);
    int over = ig_over_budget(ig, IG_REQ_MIN); /* the admission's rule: even the smallest
                                                  request would be refused */
    pthread_mutex_unlock(&ig->mu);
#ifndef PGPIPE_OMIT_SPOOL
    if (over && ig->sp) {
        /* admitted all the same: into the spool */
        if (size)
            snprintf(why, size, "the accepted, uncommitted requests fill the memory budget: "
                                "requests go to the spool");
        return 1;
    }
#endif
    if (over) {
        if (size)
            snprintf(why, size, "the accepted, uncommitted requests fill the memory budget");
        return 0;
    }
    if (size)
        *why = '\0';
    return 1;
}

static int ig_hist(pp_buf *b, const char *name, const char *help, const long long *bk,
                   const double *le, size_t n, double sum, long long count)
{
    int rc = pp_buf_appendf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    long long cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += bk[i];
        rc |= pp_buf_appendf(b, "%s_bucket{le=\"%g\"} %lld\n", name, le[i], cum);
    }
    cum += bk[n];
    rc |= pp_buf_appendf(b, "%s_bucket{le=\"+Inf\"} %lld\n%s_sum %.6f\n%s_count %lld\n", name, cum,
                         name, sum, name, count);
    return rc;
}

PGPIPE_PRIVATE int pp_ingest_metrics(pp_ingest *ig, pp_buf *b)
{
    pthread_mutex_lock(&ig->mu);
    static const char *const ctr[][2] = {
        { "pgpipe_http_records_accepted_total", "records committed to staging" },
        { "pgpipe_http_records_dead_lettered_total", "records sent to the dead-letter queue" },
        { "pgpipe_http_requests_committed_total", "requests whose records were committed" },
        { "pgpipe_http_requests_replayed_total", "requests answered with a stored response (idempotency key)" },
        { "pgpipe_http_requests_refused_total", "requests ingest refused (400, 409, 413, 415, 503)" },
        { "pgpipe_http_requests_failed_total", "requests whose group failed to commit (503)" },
        { "pgpipe_http_committer_connects_total", "committer connections made (reconnects included)" },
    };
    long long v[] = { ig->m_accepted, ig->m_dead, ig->m_committed, ig->m_replayed,
                      ig->m_refused, ig->m_failed, ig->m_reconnects };
    int rc = PGPIPE_OK;
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        rc |= pp_buf_appendf(b, "# HELP %s %s\n# TYPE %s counter\n%s %lld\n", ctr[i][0], ctr[i][1],
                             ctr[i][0], ctr[i][0], v[i]);
    long long queued = 0;
    for (ig_group *g = ig->qhead; g; g = g->next)
        queued += (long long)g->nreqs;
    if (ig->open)
        queued += (long long)ig->open->nreqs;
    rc |= pp_buf_appendf(b, "# HELP pgpipe_http_queue_depth requests waiting for a group commit\n"
                            "# TYPE pgpipe_http_queue_depth gauge\npgpipe_http_queue_depth %lld\n"
                            "# HELP pgpipe_http_pending_requests requests queued or committing\n"
                            "# TYPE pgpipe_http_pending_requests gauge\n"
                            "pgpipe_http_pending_requests %lld\n"
                            "# HELP pgpipe_http_pending_bytes memory of accepted, uncommitted requests\n"
                            "# TYPE pgpipe_http_pending_bytes gauge\npgpipe_http_pending_bytes %zu\n"
                            "# HELP pgpipe_http_committers_connected committers with a working connection\n"
                            "# TYPE pgpipe_http_committers_connected gauge\n"
                            "pgpipe_http_committers_connected %d\n",
                         queued, ig->pending, ig->pending_bytes, atomic_load(&ig->live));
    pthread_mutex_lock(&ig->wmu);
    long long timeouts = ig->m_timeouts;
    pthread_mutex_unlock(&ig->wmu);
    rc |= pp_buf_appendf(b, "# HELP pgpipe_http_commit_timeouts_total connections closed because the "
                            "database did not answer within the commit timeout\n"
                            "# TYPE pgpipe_http_commit_timeouts_total counter\n"
                            "pgpipe_http_commit_timeouts_total %lld\n", timeouts);
    rc |= pp_buf_appendf(b, "# HELP pgpipe_http_records_duplicate_total records a device sent again "
                            "(Pgpipe-Seq at or below its position): skipped\n"
                            "# TYPE pgpipe_http_records_duplicate_total counter\n"
                            "pgpipe_http_records_duplicate_total %lld\n", ig->m_dup);
#ifndef PGPIPE_OMIT_SPOOL
    if (ig->sp) {
        static const char *const sc[][2] = {
            { "pgpipe_http_requests_spooled_total", "requests answered 202 spooled (database away)" },
            { "pgpipe_http_records_spooled_total", "records of the spooled requests" },
            { "pgpipe_http_spool_refused_total", "requests the spool could not take (full, I/O): 503" },
            { "pgpipe_spool_drained_records_total", "spooled records committed to staging by the drainer" },
            { "pgpipe_spool_drained_seen_total", "spooled requests an earlier drain had committed: skipped" },
            { "pgpipe_spool_drain_failed_total", "spooled requests whose group failed (drained again)" },
            { "pgpipe_spool_drain_dropped_total", "spooled records not a request, or refused when drained" },
        };
        long long sv[] = { ig->m_spooled_req, ig->m_spooled_rec, ig->m_spool_refused, ig->m_drained,
                           ig->m_drain_seen, ig->m_drain_failed, ig->m_drain_bad };
        for (size_t i = 0; i < sizeof sv / sizeof sv[0]; i++)
            rc |= pp_buf_appendf(b, "# HELP %s %s\n# TYPE %s counter\n%s %lld\n", sc[i][0], sc[i][1],
                                 sc[i][0], sc[i][0], sv[i]);
        rc |= pp_buf_appendf(b, "# HELP pgpipe_spool_spooling 1 while new requests go to the spool\n"
                                "# TYPE pgpipe_spool_spooling gauge\npgpipe_spool_spooling %d\n",
                             atomic_load(&ig->spooling));
    }
#endif
    rc |= ig_hist(b, "pgpipe_http_group_records", "records per group commit", ig->m_size_b,
                  ig_size_le, IG_NSIZE, ig->m_size_sum, ig->m_groups);
    rc |= ig_hist(b, "pgpipe_http_commit_seconds", "time of a group's transaction", ig->m_lat_b,
                  ig_lat_le, IG_NLAT, ig->m_lat_sum, ig->m_groups);
    pthread_mutex_unlock(&ig->mu);
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

PGPIPE_PRIVATE long long pp_ingest_pending(pp_ingest *ig)
{
    pthread_mutex_lock(&ig->mu);
    long long n = ig->pending;
    pthread_mutex_unlock(&ig->mu);
    return n;
}

/* The spool's drainer ends its round and stops (the server stops; what is
** still spooled is drained by the next run). */
static void ig_drainer_stop(pp_ingest *ig)
{
#ifndef PGPIPE_OMIT_SPOOL
    if (ig->has_drainer) {
        pthread_mutex_lock(&ig->mu);
        ig->dquit = 1;
        pthread_cond_broadcast(&ig->scv);
        pthread_mutex_unlock(&ig->mu);
        pthread_join(ig->drainer, NULL);
        ig->has_drainer = 0;
    }
#else
    (void)ig;
#endif
}

PGPIPE_PRIVATE void pp_ingest_drain(pp_ingest *ig)
{
    ig_drainer_stop(ig);
    pthread_mutex_lock(&ig->mu);
    ig->flush++;
    pthread_cond_broadcast(&ig->cv);
    while (ig->pending > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&ig->dcv, &ig->mu, &ts);
    }
    ig->flush--;
    pthread_mutex_unlock(&ig->mu);
}

PGPIPE_PRIVATE void pp_ingest_close(pp_ingest *ig)
{
    if (!ig)
        return;
    ig_drainer_stop(ig); /* first: it waits for the committers' answers */
    pthread_mutex_lock(&ig->mu);
    ig->quit = 1;
    pthread_cond_broadcast(&ig->cv);
    pthread_mutex_unlock(&ig->mu);
    for (int i = 0; i < ig->ncm; i++) {
        ig_committer *c = &ig->cm[i];
        if (c->started)
            pthread_join(c->tid, NULL);
        ig_disconnect(c);
        for (int k = 0; k < 6; k++)
            pp_buf_free(&c->a[k]);
        pp_buf_free(&c->scratch);
        pp_free(c->hash);
        pp_free(c->pos);
        pp_free(c->phash);
    }
    if (ig->has_watchdog) {
        pthread_mutex_lock(&ig->wmu);
        ig->wquit = 1;
        pthread_cond_broadcast(&ig->wcv);
        pthread_mutex_unlock(&ig->wmu);
        pthread_join(ig->watchdog, NULL);
        ig->has_watchdog = 0;
    }
    pthread_mutex_destroy(&ig->wmu);
    pthread_cond_destroy(&ig->wcv);
#ifndef PGPIPE_OMIT_SPOOL
    pgpipe_spool_close(ig->sp);
    pp_buf_free(&ig->env);
    pthread_mutex_destroy(&ig->spmu);
    pthread_cond_destroy(&ig->scv);
#endif
    ig_group_free(ig->open);
    while (ig->spare) {
        ig_group *g = ig->spare;
        ig->spare = g->next;
        ig_group_free(g);
    }
    pthread_mutex_destroy(&ig->mu);
    pthread_cond_destroy(&ig->cv);
    pthread_cond_destroy(&ig->dcv);
    if (ig->doc)
        pgpipe_json_doc_close(ig->doc);
    framer_free(&ig->fr);
    pp_buf_free(&ig->etb);
    pp_buf_free(&ig->jb[0]);
    pp_buf_free(&ig->jb[1]);
    pp_free(ig->conninfo);
    pp_free(ig);
}

#endif /* PGPIPE_OMIT_HTTP */
