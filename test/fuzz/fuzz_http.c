/*
** Fuzz target of the HTTP request parser (src/http/http_proto.c), over
** pipelined requests. Invariants: no crash or sanitizer report; every
** pointer of a parsed request lies inside the buffer; a decoded body is
** never longer than its limit; the input fed at once, and fed a few bytes
** at a time (cut where the first byte says), gives the same requests
** (method, target, headers, body, bytes used) and the same error status.
*/
/* only what this target needs: each target compiles the amalgamation,
** and make test builds all of them */
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_CDC 1
#define PGPIPE_OMIT_CLAIM 1
#define PGPIPE_OMIT_RECORDS 1
#include "pgpipe.c"

static int hp_fz_inside(const char *buf, size_t len, const char *p, size_t n)
{
    return !p || (p >= buf && p + n <= buf + len);
}

static void hp_fz_run(const uint8_t *d, size_t n, size_t step, pp_buf *out)
{
    char *buf = malloc(n ? n : 1);
    memcpy(buf, d, n);
    static pp_http_request rq;
    size_t off = 0;
    for (int nreq = 0; nreq < 64; nreq++) {
        pp_http_parser p;
        pp_http_parser_init(&p, 512, 1024);
        size_t len = step ? (n - off < step ? n - off : step) : n - off;
        int rc;
        for (;;) {
            rc = pp_http_parse(&p, buf + off, len, &rq);
            if (rc == PP_HTTP_GOT_HEAD)
                continue;
            if (rc == PP_HTTP_MORE && len < n - off) {
                len = n - off - len < step ? n - off : len + step;
                continue;
            }
            break;
        }
        pp_buf_appendf(out, "|rc=%d", rc);
        if (rc == PP_HTTP_ERROR) {
            if (p.status < 400 || p.status > 599 || !p.why)
                __builtin_trap();
            pp_buf_appendf(out, ":%d", p.status);
            break;
        }
        if (rc != PP_HTTP_DONE)
            break;
        char *b = buf + off;
        if (p.consumed == 0 || p.consumed > n - off || rq.body_len > 1024 ||
            !hp_fz_inside(b, p.consumed, rq.target, rq.target_len) ||
            !hp_fz_inside(b, p.consumed, rq.body, rq.body_len) ||
            !hp_fz_inside(b, p.consumed, rq.query, rq.query_len) ||
            rq.nheaders < 0 || rq.nheaders > PP_HTTP_MAX_HEADERS)
            __builtin_trap();
        pp_buf_appendf(out, ":%d:%d:%d:%zu:", rq.method, rq.minor, rq.keep_alive, p.consumed);
        pp_buf_append(out, rq.target, rq.target_len);
        for (int i = 0; i < rq.nheaders; i++) {
            const pp_http_header *h = &rq.headers[i];
            if (!hp_fz_inside(b, p.consumed, h->name, h->name_len) ||
                !hp_fz_inside(b, p.consumed, h->value, h->value_len))
                __builtin_trap();
            pp_buf_append(out, h->name, h->name_len);
            pp_buf_putc(out, '=');
            pp_buf_append(out, h->value, h->value_len);
        }
        pp_buf_putc(out, '#');
        pp_buf_append(out, rq.body, rq.body_len);
        off += p.consumed;
        if (off >= n)
            break;
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n == 0)
        return 0;
    size_t step = 1 + d[0] % 7;
    pp_buf a = { 0 }, b = { 0 };
    hp_fz_run(d, n, 0, &a);
    hp_fz_run(d, n, step, &b);
    if (a.len != b.len || (a.len && memcmp(a.data, b.data, a.len)))
        __builtin_trap();
    pp_buf_free(&a);
    pp_buf_free(&b);
    return 0;
}
