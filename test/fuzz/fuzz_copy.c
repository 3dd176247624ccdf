/*
** Fuzz target of the loader's own parsing: the streaming JSON array splitter
** and NDJSON line splitter (every batch "already committed", so no database
** is needed), and the UTF-8 check and raw-text escaping of dead letters.
** Invariants: no crash or sanitizer report; feeding the input in two chunks
** gives the same records and the same result as one chunk; escaped raw text
** is valid UTF-8 without NUL bytes.
*/
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
    l.js_state = format == PGPIPE_FORMAT_JSON ? COPY_JS_START : 0;
    l.source = pp_strdup("fuzz");
    l.urandom = -1;
    l.nlanes = 1;
    l.lanes[0].l = &l;
    l.ndone = n + 2;
    l.done_seqs = pp_malloc(l.ndone * sizeof *l.done_seqs);
    for (size_t i = 0; i < l.ndone; i++)
        l.done_seqs[i] = (long long)i + 1;
    int rc = copy_feed_known(&l, (const char *)d, cut, 0);
    if (rc == PGPIPE_OK)
        rc = copy_feed_known(&l, (const char *)d + cut, n - cut, (long long)cut);
    if (rc == PGPIPE_OK)
        rc = format == PGPIPE_FORMAT_JSON ? copy_json_end(&l) : copy_ndjson_end(&l);
    if (rc == PGPIPE_OK)
        rc = copy_batch_end(&l);
    *records = l.sum.records_read;
    pp_free(l.done_seqs);
    pp_free(l.source);
    pp_buf_free(&l.carry);
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
    if (!copy_utf8_ok((const unsigned char *)b.data, tl))
        __builtin_trap();
    int ok = copy_utf8_ok(d, n);
    size_t i = 0;
    while (i < n) {
        size_t k = copy_utf8_seq(d + i, n - i);
        if (!k)
            break;
        i += k;
    }
    if (ok != (i == n))
        __builtin_trap();
    pp_buf_free(&b);
    return 0;
}
