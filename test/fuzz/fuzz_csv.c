/*
** libFuzzer target for the CSV reader: `make fuzz-csv SECONDS=60`.
**
** The first 6 bytes choose the options (delimiter, quote, header, strict,
** empty lines, expected field count, max field size, buffer size) and the
** chunking seed; the rest is the CSV text. The text is read three ways: fed
** in one piece, fed in random chunks (1..64 bytes), and through a FILE *
** (fmemopen) with a tiny buffer. All three must give the same rows, fields,
** raw records, errors (line, column, offset, field, message) and COPY text;
** any difference or sanitizer report is a crash. The one-piece run uses the
** state machine alone (PGPIPE_CSV_SIMD=none), the chunked one the best fast
** path, the FILE * one the portable classifier, and a fourth run (one piece)
** the best fast path again: every path must agree with the state machine.
*/
/* only what this target needs: each target compiles the amalgamation,
** and make test builds all of them */
#define PGPIPE_OMIT_POOL 1
#define PGPIPE_OMIT_MIGRATE 1
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_DLQ 1
#include "pgpipe.c"

static void fz_dump(pgpipe_csv *r, int rc, pp_buf *out)
{
    pp_buf_appendf(out, "rc=%d line=%lld off=%lld n=%lld\n", rc, pgpipe_csv_record_line(r),
                   pgpipe_csv_record_offset(r), pgpipe_csv_record_count(r));
    if (rc == PGPIPE_ROW || rc == PGPIPE_PARSE) {
        int n;
        const pgpipe_csv_span *f = pgpipe_csv_fields(r, &n);
        for (int i = 0; i < n; i++) {
            if (f[i].len && !f[i].data)
                __builtin_trap();
            pp_buf_appendf(out, "[%d:%zu:", f[i].quoted, f[i].len);
            pp_buf_append(out, f[i].data, f[i].len);
            pp_buf_putc(out, ']');
        }
        const char *raw;
        size_t rl;
        if (pgpipe_csv_raw_record(r, &raw, &rl) == PGPIPE_OK) {
            pp_buf_appendf(out, " raw=%zu:", rl);
            pp_buf_append(out, raw, rl);
        }
        pgpipe_copy_buf cb = { 0 };
        if (pgpipe_csv_copy_row(r, &cb) != PGPIPE_OK)
            __builtin_trap();
        pp_buf_append(out, cb.data, cb.len);
        pgpipe_copy_buf_clear(&cb);
    }
    if (rc != PGPIPE_ROW) {
        const pgpipe_error *e = pgpipe_errinfo(r);
        pp_buf_appendf(out, "err %d %lld:%lld@%lld f%d %s\n", e->code, e->line, e->column,
                       e->offset, pgpipe_csv_error_field(r), e->message);
    }
    if (rc == PGPIPE_ROW && r->expected > 0 && pgpipe_csv_field_count(r) != r->expected)
        __builtin_trap();
}

static void fz_header(pgpipe_csv *r, pp_buf *out)
{
    pp_buf_appendf(out, "header %d:", pgpipe_csv_header_count(r));
    for (int i = 0; i < pgpipe_csv_header_count(r); i++) {
        const char *nm = pgpipe_csv_header_name(r, i);
        if (pgpipe_csv_column_index(r, nm) > i)
            __builtin_trap();
        pp_buf_appendf(out, "<%s>", nm);
    }
}

/* chunk == 0: one piece; otherwise random chunk sizes from seed */
static void fz_feed(const uint8_t *d, size_t n, const pgpipe_csv_options *o, uint64_t seed,
                    int chunked, pp_buf *out)
{
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, o);
    if (!r)
        return;
    size_t off = 0;
    int rc;
    for (;;) {
        while ((rc = pgpipe_csv_next(r)) == PGPIPE_ROW || rc == PGPIPE_PARSE)
            fz_dump(r, rc, out);
        if (rc != PGPIPE_BUSY)
            break;
        if (off == n) {
            pgpipe_csv_feed_end(r);
            continue;
        }
        size_t k = n - off;
        if (chunked) {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            k = 1 + (size_t)(seed % 64);
            if (k > n - off)
                k = n - off;
        }
        if (pgpipe_csv_feed(r, d + off, k) != PGPIPE_OK)
            __builtin_trap();
        off += k;
    }
    fz_dump(r, rc, out);
    fz_header(r, out);
    pgpipe_csv_close(r);
}

static void fz_file(const uint8_t *d, size_t n, const pgpipe_csv_options *o, pp_buf *out)
{
    static char empty[1];
    FILE *f = fmemopen(n ? (void *)(uintptr_t)d : empty, n, "rb");
    if (!f)
        return;
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_file(&r, f, o);
    int rc;
    while ((rc = pgpipe_csv_next(r)) == PGPIPE_ROW || rc == PGPIPE_PARSE)
        fz_dump(r, rc, out);
    fz_dump(r, rc, out);
    fz_header(r, out);
    pgpipe_csv_close(r);
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    if (n < 6)
        return 0;
    static const int dls[] = { ',', '\t', ';', '|' };
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.delimiter = (d[0] & 0x80) ? d[1] : dls[d[0] & 3];
    o.quote = (d[0] & 0x40) ? d[2] : '"';
    o.header = (d[0] >> 2) & 1;
    o.strict = (d[0] >> 3) & 1;
    o.skip_empty_lines = (d[0] >> 4) & 1;
    o.expected_fields = (d[0] & 0x20) ? (int)(d[3] % 6) - 1 : 0;
    o.max_field_size = (d[3] & 0x80) ? (size_t)(d[3] & 0x3f) + 1 : 0;
    o.buffer_size = (size_t)d[4] % 40 + 1;
    uint64_t seed = (uint64_t)d[5] * 0x9E3779B97F4A7C15ull + 1;
    d += 6;
    n -= 6;

    pp_buf a = { 0 }, b = { 0 }, c = { 0 }, e = { 0 };
    setenv("PGPIPE_CSV_SIMD", "none", 1);
    fz_feed(d, n, &o, seed, 0, &a);
    unsetenv("PGPIPE_CSV_SIMD");
    fz_feed(d, n, &o, seed, 1, &b);
    fz_feed(d, n, &o, seed, 0, &e);
    setenv("PGPIPE_CSV_SIMD", "scalar", 1);
    fz_file(d, n, &o, &c);
    unsetenv("PGPIPE_CSV_SIMD");
    if (a.len != b.len || (a.len && memcmp(a.data, b.data, a.len) != 0))
        __builtin_trap();
    if (a.len != c.len || (a.len && memcmp(a.data, c.data, a.len) != 0))
        __builtin_trap();
    if (a.len != e.len || (a.len && memcmp(a.data, e.data, a.len) != 0))
        __builtin_trap();
    pp_buf_free(&a);
    pp_buf_free(&b);
    pp_buf_free(&c);
    pp_buf_free(&e);
    return 0;
}
