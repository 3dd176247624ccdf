/*
** Fuzz target of the framer (src/parse/framer.c), in its three kinds, with
** a small max_record. Invariants: no crash or sanitizer report; the input
** fed in one chunk, in two chunks cut anywhere, or byte by byte gives the
** same records (bytes, line, column, offset, flags), the same result and the
** same broken-frame error.
*/
/* only what this target needs: each target compiles the amalgamation,
** and make test builds all of them */
#define PGPIPE_OMIT_POOL 1
#define PGPIPE_OMIT_MIGRATE 1
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_DLQ 1
#include "pgpipe.c"

static int fr_fz_dump(void *ud, const pp_frame *r)
{
    pp_buf *out = ud;
    pp_buf_appendf(out, "%lld:%lld:%lld:%d:%zu:", r->line, r->col, r->off, r->flags, r->len);
    pp_buf_append(out, r->raw, r->len);
    return PGPIPE_OK;
}

static void fr_fz_run(const uint8_t *d, size_t n, int kind, size_t cut, size_t step, pp_buf *out)
{
    pp_framer f;
    memset(&f, 0, sizeof f);
    framer_begin(&f, kind, 16, fr_fz_dump, out);
    int rc = framer_feed(&f, (const char *)d, cut);
    for (size_t i = cut; rc == PGPIPE_OK && i < n; i += step)
        rc = framer_feed(&f, (const char *)d + i, n - i < step ? n - i : step);
    if (rc == PGPIPE_OK)
        rc = framer_end(&f);
    pp_buf_appendf(out, "|rc=%d", rc);
    if (rc == PGPIPE_PARSE)
        pp_buf_appendf(out, "|%lld:%lld:%s", f.err.line, f.err.offset, f.err.message);
    pp_buf_appendf(out, "|u%d", f.unclosed);
    framer_free(&f);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n == 0)
        return 0;
    size_t cut = d[0] % n;
    for (int kind = PP_FRAME_NDJSON; kind <= PP_FRAME_ONE; kind++) {
        pp_buf a = { 0 }, b = { 0 }, c = { 0 };
        fr_fz_run(d, n, kind, n, 1, &a);
        fr_fz_run(d, n, kind, cut, n, &b);
        fr_fz_run(d, n, kind, 0, 1, &c);
        if (a.len != b.len || memcmp(a.data, b.data, a.len) || a.len != c.len ||
            memcmp(a.data, c.data, a.len))
            __builtin_trap();
        pp_buf_free(&a);
        pp_buf_free(&b);
        pp_buf_free(&c);
    }
    return 0;
}
