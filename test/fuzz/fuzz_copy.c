/*
** Fuzz target of the loader's own parsing: the framer's JSON array and NDJSON
** splitting and the records it hands over (every batch "already committed", so
** no database is needed), and the UTF-8 check (src/base/text.c) and raw-text
** escaping of dead letters.
** Invariants: no crash or sanitizer report; feeding the input in two chunks
** gives the same records and the same result as one chunk; escaped raw text
** is valid UTF-8 without NUL bytes.
*/
/* only what this target needs: each target compiles the amalgamation,
** and make test builds all of them */
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_CDC 1
#define PGPIPE_OMIT_CLAIM 1
#define PGPIPE_OMIT_RECORDS 1
#define PGPIPE_OMIT_HTTP 1
#include "pgpipe.c"

static int copy_fz_run(const uint8_t *d, size_t n, size_t cut, int format, long long *records)
{
    pgpipe_loader l;
    memset(&l, 0, sizeof l);
    pp_handle_init(&l.hdr);
    l.max_record = 64;
    l.batch_rows = 3;
    l.batch_bytes = 1 << 20;
    l.format = format;
    copy_framer_begin(&l, format);
    l.source = pp_strdup("fuzz");
    l.nlanes = 1;
    l.lanes[0].l = &l;
    l.ndone = n + 2;
    l.done_seqs = pp_malloc(l.ndone * sizeof *l.done_seqs);
    l.done_rows = pp_malloc(l.ndone * sizeof *l.done_rows);
    for (size_t i = 0; i < l.ndone; i++) {
        l.done_seqs[i] = (long long)i + 1;
        l.done_rows[i] = l.batch_rows; /* each committed batch as full as the rule makes it */
    }
    int rc = copy_feed_known(&l, (const char *)d, cut, 0);
    if (rc == PGPIPE_OK)
        rc = copy_feed_known(&l, (const char *)d + cut, n - cut, (long long)cut);
    if (rc == PGPIPE_OK)
        rc = copy_json_end(&l);
    if (rc == PGPIPE_OK)
        rc = copy_batch_end(&l);
    *records = l.sum.records_read;
    pp_free(l.done_seqs);
    pp_free(l.done_rows);
    pp_free(l.source);
    framer_free(&l.fr);
    pp_buf_free(&l.lanes[0].cbuf);
    pp_buf_free(&l.lanes[0].rbuf);
    pp_buf_free(&l.lanes[0].dbuf);
    pp_free(l.lanes[0].rows);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    pgpipe_log_set_level(PGPIPE_LOG_OFF);
    if (n == 0)
        return 0;
    size_t cut = d[0] % n;
    for (int f = PGPIPE_FORMAT_NDJSON; f <= PGPIPE_FORMAT_JSON; f++) {
        long long r1 = 0, r2 = 0;
        int a = copy_fz_run(d, n, n, f, &r1);
        int b = copy_fz_run(d, n, cut, f, &r2);
        if (a != b || r1 != r2)
            __builtin_trap();
    }
    pp_buf b = { 0 };
    dlq_put_raw(&b, (const char *)d, n);
    /* raw_text part (before the tab that starts raw_bytes) */
    const char *tab = memchr(b.data, '\t', b.len);
    size_t tl = tab ? (size_t)(tab - b.data) : b.len;
    if (pp_utf8_text_prefix((const unsigned char *)b.data, tl) != tl)
        __builtin_trap();
    /* the fast paths stop where stepping sequence by sequence stops */
    size_t i = 0;
    while (i < n && d[i]) {
        size_t k = 1;
        if (d[i] >= 0x80 && pp_utf8_problem(d + i, n - i, &k))
            break;
        i += k;
    }
    if (pp_utf8_text_prefix(d, n) != i)
        __builtin_trap();
    pp_buf_free(&b);
    return 0;
}
