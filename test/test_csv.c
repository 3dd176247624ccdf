/* Tests of the CSV reader and the COPY text writer (src/parse/csv.c). */
#include <sys/wait.h>

#define csv_t_feed_str(r, s) pgpipe_csv_feed((r), (s), strlen(s))

/* Append one reader result to out in a compact text form:
**   ROW:   "L<record line>" then "|u<text>" or "|q<text>" per field, newline
**   PARSE: "E<record line>@<line>:<col>:f<field> raw=<raw text or (none)>"
**   DONE:  "DONE"; any other code: "F<code>" */
static void csv_t_dump(pgpipe_csv *r, int rc, pp_buf *out)
{
    if (rc == PGPIPE_ROW) {
        int n;
        const pgpipe_csv_span *f = pgpipe_csv_fields(r, &n);
        pp_buf_appendf(out, "L%lld", pgpipe_csv_record_line(r));
        for (int i = 0; i < n; i++) {
            pp_buf_appendf(out, "|%c", f[i].quoted ? 'q' : 'u');
            pp_buf_append(out, f[i].data, f[i].len);
        }
        pp_buf_putc(out, '\n');
    } else if (rc == PGPIPE_PARSE) {
        const pgpipe_error *e = pgpipe_errinfo(r);
        const char *raw;
        size_t rl;
        pp_buf_appendf(out, "E%lld@%lld:%lld:f%d raw=", pgpipe_csv_record_line(r), e->line,
                       e->column, pgpipe_csv_error_field(r));
        if (pgpipe_csv_raw_record(r, &raw, &rl) == PGPIPE_OK)
            pp_buf_append(out, raw, rl);
        else
            pp_buf_appendf(out, "(none)");
        pp_buf_putc(out, '\n');
    } else if (rc == PGPIPE_DONE) {
        pp_buf_appendf(out, "DONE");
    } else {
        pp_buf_appendf(out, "F%d", rc);
    }
}

/* Run a feed reader over in, fed in chunks of `chunk` bytes (0: all at
** once; SIZE_MAX: random sizes from seed), and return the dump (caller frees). */
static char *csv_t_run_seed(const char *in, size_t n, const pgpipe_csv_options *o,
                            size_t chunk, uint64_t seed)
{
    pp_buf out = { 0 };
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, o);
    PGT_CHECK(r != NULL);
    size_t off = 0;
    int rc = PGPIPE_BUSY;
    for (;;) {
        while ((rc = pgpipe_csv_next(r)) == PGPIPE_ROW || rc == PGPIPE_PARSE)
            csv_t_dump(r, rc, &out);
        if (rc != PGPIPE_BUSY)
            break;
        if (off == n) {
            PGT_OK(pgpipe_csv_feed_end(r));
            continue;
        }
        size_t k = chunk == 0 ? n - off : chunk;
        if (chunk == SIZE_MAX)
            k = 1 + (size_t)(pp_rand_next(&seed) % 17);
        if (k > n - off)
            k = n - off;
        PGT_OK(pgpipe_csv_feed(r, in + off, k));
        off += k;
    }
    csv_t_dump(r, rc, &out);
    pgpipe_csv_close(r);
    pp_buf_putc(&out, '\0');
    return out.data;
}

static char *csv_t_run(const char *in, const pgpipe_csv_options *o, size_t chunk)
{
    return csv_t_run_seed(in, strlen(in), o, chunk, 42);
}

/* The reader's paths (PGPIPE_CSV_SIMD, read when a reader opens): the state
** machine alone, then the fast path with each block classifier. A name this
** machine lacks gives its best one, so each is run wherever it exists. */
static const char *const csv_t_paths[] = { "none", "scalar", "sse2", "avx2", "neon" };
#define CSV_T_NPATHS (sizeof csv_t_paths / sizeof csv_t_paths[0])

static void csv_t_path(const char *name)
{
    if (name)
        setenv("PGPIPE_CSV_SIMD", name, 1);
    else
        unsetenv("PGPIPE_CSV_SIMD");
}

/* The dump of in must be want, whatever the chunking, on every path. */
static void csv_t_expect(const char *in, const pgpipe_csv_options *o, const char *want)
{
    static const size_t chunks[] = { 0, 1, 2, 3, 5, 64, SIZE_MAX };
    for (size_t p = 0; p <= CSV_T_NPATHS; p++) {
        csv_t_path(p < CSV_T_NPATHS ? csv_t_paths[p] : NULL);
        for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
            char *got = csv_t_run(in, o, chunks[i]);
            if (strcmp(got, want) != 0)
                fprintf(stderr, "    path %s, chunk size %zu\n",
                        p < CSV_T_NPATHS ? csv_t_paths[p] : "(default)",
                        chunks[i] == SIZE_MAX ? 0 : chunks[i]);
            PGT_EQ_STR(got, want);
            pp_free(got);
        }
    }
    csv_t_path(NULL);
}

PGT_TEST(csv, simple_rows_and_zero_copy)
{
    csv_t_expect("a,b,c\n1,2,3\n", NULL, "L1|ua|ub|uc\nL2|u1|u2|u3\nDONE");
    /* unquoted and plain quoted fields point into the reader's buffer */
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, NULL);
    PGT_OK(csv_t_feed_str(r, "abc,\"quoted\",x\n"));
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_ROW);
    PGT_EQ_INT(pgpipe_csv_field_count(r), 3);
    for (int i = 0; i < 3; i++) {
        const char *d;
        size_t l;
        PGT_OK(pgpipe_csv_field(r, i, &d, &l, NULL));
        PGT_CHECK((const unsigned char *)d >= r->buf && (const unsigned char *)d < r->buf + r->len);
    }
    const char *d;
    size_t l;
    int q;
    PGT_OK(pgpipe_csv_field(r, 1, &d, &l, &q));
    PGT_EQ_MEM(d, l, "quoted", 6);
    PGT_EQ_INT(q, 1);
    PGT_EQ_INT(pgpipe_csv_field(r, 3, &d, &l, &q), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_BUSY);
    PGT_OK(pgpipe_csv_feed_end(r));
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_DONE);
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_DONE);
    pgpipe_csv_close(r);
}

PGT_TEST(csv, rfc4180_quoting)
{
    csv_t_expect("\"a,b\",\"c\"\"d\",\"\",,\"\"\"\"\n", NULL,
                 "L1|qa,b|qc\"d|q|u|q\"\nDONE");
    /* line breaks inside quotes; the next record starts on a later line */
    csv_t_expect("\"line1\nline2\r\nline3\rline4\",x\nnext,y\n", NULL,
                 "L1|qline1\nline2\r\nline3\rline4|ux\nL5|unext|uy\nDONE");
    /* empty unquoted vs empty quoted, also at the end of the line and file */
    csv_t_expect(",\"\",\n\"\",", NULL, "L1|u|q|u\nL2|q|u\nDONE");
    csv_t_expect("\"\"", NULL, "L1|q\nDONE");
    csv_t_expect("x,\"\"\"\"", NULL, "L1|ux|q\"\nDONE");
}

PGT_TEST(csv, line_endings)
{
    csv_t_expect("a\nb\r\nc\rd", NULL, "L1|ua\nL2|ub\nL3|uc\nL4|ud\nDONE");
    csv_t_expect("a,1\r\nb,2\r\n", NULL, "L1|ua|u1\nL2|ub|u2\nDONE");
    csv_t_expect("a,1\rb,2\r", NULL, "L1|ua|u1\nL2|ub|u2\nDONE");
    csv_t_expect("\"q\"\r\n\"r\"\r\"s\"\n\"t\"", NULL, "L1|qq\nL2|qr\nL3|qs\nL4|qt\nDONE");
    /* empty lines are skipped by default, kept as one empty field on request */
    csv_t_expect("a\n\n\r\n\rb\n", NULL, "L1|ua\nL5|ub\nDONE");
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.skip_empty_lines = 0;
    csv_t_expect("a\n\r\nb\n", &o, "L1|ua\nL2|u\nL3|ub\nDONE");
    csv_t_expect("", NULL, "DONE");
    csv_t_expect("\n\n", NULL, "DONE");
}

PGT_TEST(csv, bom_is_skipped)
{
    csv_t_expect("\xEF\xBB\xBFid,name\n1,x\n", NULL, "L1|uid|uname\nL2|u1|ux\nDONE");
    csv_t_expect("\xEF\xBB\xBF", NULL, "DONE");
    csv_t_expect("\xEF\xBB", NULL, "L1|u\xEF\xBB\nDONE");
    /* only at the very start */
    csv_t_expect("a\n\xEF\xBB\xBF" "b\n", NULL, "L1|ua\nL2|u\xEF\xBB\xBF" "b\nDONE");
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.header = 1;
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, &o);
    PGT_OK(csv_t_feed_str(r, "\xEF\xBB\xBF\"id\",name\n7,x\n"));
    PGT_OK(pgpipe_csv_feed_end(r));
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_ROW);
    PGT_EQ_STR(pgpipe_csv_header_name(r, 0), "id");
    PGT_EQ_INT(pgpipe_csv_column_index(r, "id"), 0);
    pgpipe_csv_close(r);
}

PGT_TEST(csv, delimiters_and_quote_char)
{
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    const char dls[] = { ',', '\t', ';', '|' };
    for (size_t i = 0; i < sizeof dls; i++) {
        char in[64], want[64];
        o.delimiter = dls[i];
        snprintf(in, sizeof in, "a%cb%c\"c%cd\"\n1%c%c\"\"\n", dls[i], dls[i], dls[i], dls[i],
                 dls[i]);
        snprintf(want, sizeof want, "L1|ua|ub|qc%cd\nL2|u1|u|q\nDONE", dls[i]);
        csv_t_expect(in, &o, want);
    }
    /* any byte, even NUL */
    o.delimiter = 0;
    char *got = csv_t_run_seed("a\0b\n", 4, &o, 1, 1);
    PGT_EQ_STR(got, "L1|ua|ub\nDONE");
    pp_free(got);
    o.delimiter = ',';
    o.quote = '\'';
    csv_t_expect("'a,b','it''s',\"x\"\n", &o, "L1|qa,b|qit's|u\"x\"\nDONE");
}

PGT_TEST(csv, header_and_column_names)
{
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.header = 1;
    csv_t_expect("id,name,\"e,mail\"\n1,ann,a@x\n2,bob,b@x\n", &o,
                 "L2|u1|uann|ua@x\nL3|u2|ubob|ub@x\nDONE");
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, &o);
    PGT_EQ_INT(pgpipe_csv_header_count(r), 0);
    PGT_OK(csv_t_feed_str(r, "id,name,\"e,mail\",\"a\"\"b\"\n1,ann,a@x,q\n"));
    PGT_OK(pgpipe_csv_feed_end(r));
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_ROW);
    PGT_EQ_INT(pgpipe_csv_header_count(r), 4);
    PGT_EQ_STR(pgpipe_csv_header_name(r, 2), "e,mail");
    PGT_EQ_STR(pgpipe_csv_header_name(r, 3), "a\"b");
    PGT_CHECK(pgpipe_csv_header_name(r, 4) == NULL);
    PGT_EQ_INT(pgpipe_csv_column_index(r, "name"), 1);
    PGT_EQ_INT(pgpipe_csv_column_index(r, "e,mail"), 2);
    PGT_EQ_INT(pgpipe_csv_column_index(r, "nope"), -1);
    const char *d;
    size_t l;
    PGT_OK(pgpipe_csv_field(r, pgpipe_csv_column_index(r, "name"), &d, &l, NULL));
    PGT_EQ_MEM(d, l, "ann", 3);
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_DONE);
    pgpipe_csv_close(r);

    /* only a header */
    csv_t_expect("a,b\n", &o, "DONE");
    /* a broken header stops the reader */
    pgpipe_csv_open_feed(&r, &o);
    PGT_OK(csv_t_feed_str(r, "a,\"b\nc\n"));
    PGT_OK(pgpipe_csv_feed_end(r));
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(r), "header row");
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_ERROR);
    pgpipe_csv_close(r);
}

/* With check_names a header row's names are keys: a name given twice, an
** empty name, a NUL byte or invalid UTF-8 in one fails the header
** (PGPIPE_ERROR, the reader stops) at the line and byte column of the name
** or the byte, chunked or not. */
static void csv_t_bad_header(const char *in, size_t n, long long line, long long col,
                             const char *msg)
{
    static const size_t chunks[] = { 1, 3, SIZE_MAX };
    for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
        pgpipe_csv_options o;
        pgpipe_csv_options_init(&o);
        o.header = 1;
        o.check_names = 1;
        o.source = "h.csv";
        pgpipe_csv *r = NULL;
        PGT_OK(pgpipe_csv_open_feed(&r, &o));
        for (size_t at = 0; at < n; at += chunks[c])
            PGT_OK(pgpipe_csv_feed(r, in + at, n - at < chunks[c] ? n - at : chunks[c]));
        PGT_OK(pgpipe_csv_feed_end(r));
        PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_ERROR);
        const pgpipe_error *e = pgpipe_errinfo(r);
        PGT_EQ_STR(e->source, "h.csv");
        PGT_EQ_INT(e->line, line);
        PGT_EQ_INT(e->column, col);
        PGT_CONTAINS(e->message, msg);
        PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_ERROR); /* no row after a refused header */
        PGT_EQ_INT(pgpipe_csv_record_count(r), 0);
        pgpipe_csv_close(r);
    }
}

#define CSV_T_BAD_HEADER(lit, line, col, msg) csv_t_bad_header(lit, sizeof lit - 1, line, col, msg)

PGT_TEST(csv, header_names_are_checked)
{
    CSV_T_BAD_HEADER("id,kind,id\n1,a,2\n", 1, 9,
                     "header row: column 3 is named \"id\" like column 1");
    /* the first repeat in the row, the names compared after unquoting */
    CSV_T_BAD_HEADER("a,b,\"b\",a\n1,2,3,4\n", 1, 5, "column 3 is named \"b\" like column 2");
    CSV_T_BAD_HEADER("\"x\ny\",z,\"x\ny\"\n1,2,3\n", 2, 6, "column 3 is named \"x\ny\" like column 1");
    CSV_T_BAD_HEADER("id,,kind\n1,2,3\n", 1, 4, "column 2 has no name");
    CSV_T_BAD_HEADER("id,kind,\n1,2,3\n", 1, 9, "column 3 has no name");
    CSV_T_BAD_HEADER("id,\"\"\n1,2\n", 1, 4, "column 2 has no name");
    CSV_T_BAD_HEADER("id,ki\0nd\n1,2\n", 1, 6, "the name of column 2 holds a NUL byte");
    CSV_T_BAD_HEADER("id,caf\xe9\n1,2\n", 1, 7,
                     "the name of column 2 is not valid UTF-8 (byte 0xE9");
    CSV_T_BAD_HEADER("\xEF\xBB\xBF" "id,\"a\nb\xff\"\n1,2\n", 2, 2,
                     "the name of column 2 is not valid UTF-8 (byte 0xFF");
    /* names that differ only in case or length are different names */
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.header = 1;
    o.check_names = 1;
    csv_t_expect("id,ID,i,caf\xc3\xa9\n1,2,3,4\n", &o, "L2|u1|u2|u3|u4\nDONE");
    /* without check_names any names are taken (a name twice: the first is found) */
    o.check_names = 0;
    csv_t_expect("id,,id\n1,2,3\n", &o, "L2|u1|u2|u3\nDONE");
}

PGT_TEST(csv, strict_and_lenient_quotes)
{
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    /* strict (default): a row error naming line, column and field; reading goes on */
    csv_t_expect("ok,1\nab\"c,d\n\"x\"y,z\nlast,2\n", &o,
                 "L1|uok|u1\nE2@2:3:f1 raw=ab\"c,d\nE3@3:4:f1 raw=\"x\"y,z\nL4|ulast|u2\nDONE");
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, &o);
    PGT_OK(csv_t_feed_str(r, "a,b\"c\n"));
    PGT_OK(pgpipe_csv_feed_end(r));
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_PARSE);
    PGT_CONTAINS(pgpipe_errmsg(r), "quote character inside an unquoted field");
    PGT_CONTAINS(pgpipe_errmsg(r), "field 2");
    const pgpipe_error *e = pgpipe_errinfo(r);
    PGT_EQ_INT(e->line, 1);
    PGT_EQ_INT(e->column, 4);
    PGT_EQ_INT(e->offset, 3);
    char buf[256];
    pgpipe_error_format(e, buf, sizeof buf);
    PGT_CONTAINS(buf, "<input>:1:4: ");
    pgpipe_csv_close(r);
    /* lenient: kept literally */
    o.strict = 0;
    csv_t_expect("ok,1\nab\"c,d\n\"x\"y\"z,z\n", &o,
                 "L1|uok|u1\nL2|uab\"c|ud\nL3|qxy\"z|uz\nDONE");
}

PGT_TEST(csv, unterminated_quote_at_eof)
{
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.source = "data.csv";
    csv_t_expect("a,b\nc,\"d\ne,f\n", &o, "L1|ua|ub\nE2@2:3:f2 raw=c,\"d\ne,f\n\nDONE");
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, &o);
    PGT_OK(csv_t_feed_str(r, "x\n\"ab\ncd"));
    PGT_OK(pgpipe_csv_feed_end(r));
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_ROW);
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_PARSE);
    char buf[300];
    pgpipe_error_format(pgpipe_errinfo(r), buf, sizeof buf);
    PGT_EQ_STR(buf, "data.csv:2:1: unterminated quoted field at end of input: field 1 of the "
                    "record starting at line 2 opens a quote here that is never closed");
    PGT_EQ_INT(pgpipe_csv_record_line(r), 2);
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_DONE);
    pgpipe_csv_close(r);
}

PGT_TEST(csv, field_too_large)
{
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.max_field_size = 4;
    csv_t_expect("abcd,\"abcd\"\nabcde,x\nx,\"a\nbcde\"\nok,1\n", &o,
                 "L1|uabcd|qabcd\nE2@2:5:f1 raw=(none)\n"
                 "E3@4:3:f2 raw=(none)\nL5|uok|u1\nDONE");
    /* a field far larger than the buffer: memory stays bounded, the record is
    ** dropped (no raw text), reading goes on */
    o.max_field_size = 1000;
    o.buffer_size = 256;
    size_t big = 1 << 20;
    char *in = pp_malloc(big + 64);
    memcpy(in, "a,", 2);
    memset(in + 2, 'x', big);
    memcpy(in + 2 + big, "\nb,c\n", 6);
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, &o);
    size_t total = big + 7;
    int parse = 0, rows = 0, rc;
    for (size_t off = 0; off <= total; off += 100) {
        if (off < total)
            PGT_OK(pgpipe_csv_feed(r, in + off, total - off < 100 ? total - off : 100));
        else
            PGT_OK(pgpipe_csv_feed_end(r));
        while ((rc = pgpipe_csv_next(r)) == PGPIPE_ROW || rc == PGPIPE_PARSE) {
            if (rc == PGPIPE_PARSE) {
                parse++;
                PGT_CONTAINS(pgpipe_errmsg(r), "field too large");
                PGT_EQ_INT(pgpipe_csv_error_field(r), 2);
                PGT_EQ_INT(pgpipe_csv_raw_record(r, NULL, NULL), PGPIPE_LIMIT);
                PGT_EQ_INT(pgpipe_errinfo(r)->line, 1);
                PGT_EQ_INT(pgpipe_errinfo(r)->column, 1003);
            } else {
                rows++;
                PGT_EQ_INT(pgpipe_csv_record_line(r), 2);
            }
        }
        PGT_EQ_INT(rc, off < total ? PGPIPE_BUSY : PGPIPE_DONE);
        PGT_CHECK_MSG(r->cap <= 4096, "buffer grew to %zu", r->cap);
    }
    PGT_EQ_INT(parse, 1);
    PGT_EQ_INT(rows, 1);
    pgpipe_csv_close(r);
    pp_free(in);
}

PGT_TEST(csv, field_count_differs_from_header)
{
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.header = 1;
    csv_t_expect("a,b,c\n1,2,3\n1,2\n1,2,3,4\n\"x\ny\",2,3\n", &o,
                 "L2|u1|u2|u3\nE3@3:4:f3 raw=1,2\nE4@4:7:f4 raw=1,2,3,4\nL5|qx\ny|u2|u3\nDONE");
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, &o);
    PGT_OK(csv_t_feed_str(r, "a,b\n1,2,\"3\"\n"));
    PGT_OK(pgpipe_csv_feed_end(r));
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_PARSE);
    PGT_CONTAINS(pgpipe_errmsg(r), "has 3 fields, expected 2");
    PGT_EQ_INT(pgpipe_errinfo(r)->column, 5);
    /* the fields are still there for a dead-letter record */
    PGT_EQ_INT(pgpipe_csv_field_count(r), 3);
    PGT_EQ_INT(pgpipe_csv_record_count(r), 1);
    pgpipe_csv_close(r);
    /* expected_fields without a header; < 0 turns the check off */
    o.header = 0;
    o.expected_fields = 2;
    csv_t_expect("1,2\n3\n", &o, "L1|u1|u2\nE2@2:2:f2 raw=3\nDONE");
    o.header = 1;
    o.expected_fields = -1;
    csv_t_expect("a,b\n1\n1,2,3\n", &o, "L2|u1\nL3|u1|u2|u3\nDONE");
}

/* Random CSV-ish text over a small alphabet that hits every special case. */
static size_t csv_t_random(char *buf, size_t cap, uint64_t *seed)
{
    static const char alpha[] = { 'a', 'b', ',', ',', '"', '"', '\n', '\r', ';', ' ', '\t',
                                   (char)0xEF, (char)0xBB, (char)0xBF };
    size_t n = (size_t)(pp_rand_next(seed) % cap);
    for (size_t i = 0; i < n; i++)
        buf[i] = alpha[pp_rand_next(seed) % sizeof alpha];
    return n;
}

PGT_TEST(csv, chunked_equals_one_shot)
{
    uint64_t seed = 12345;
    char in[200];
    for (int iter = 0; iter < 3000; iter++) {
        size_t n = csv_t_random(in, sizeof in, &seed);
        pgpipe_csv_options o;
        pgpipe_csv_options_init(&o);
        o.strict = iter & 1;
        o.header = (iter >> 1) & 1;
        o.skip_empty_lines = (iter >> 2) & 1;
        o.max_field_size = (iter >> 3) & 1 ? 5 : 0;
        o.delimiter = (iter >> 4) & 1 ? ';' : ',';
        o.buffer_size = 1 + (size_t)iter % 64;
        csv_t_path("none");
        char *one = csv_t_run_seed(in, n, &o, 0, 1);
        for (size_t p = 0; p <= CSV_T_NPATHS; p++) {
            csv_t_path(p < CSV_T_NPATHS ? csv_t_paths[p] : NULL);
            char *c0 = csv_t_run_seed(in, n, &o, 0, 1);
            char *c1 = csv_t_run_seed(in, n, &o, 1, 1);
            char *cr = csv_t_run_seed(in, n, &o, SIZE_MAX, (uint64_t)iter + 1);
            if (strcmp(one, c0) != 0 || strcmp(one, c1) != 0 || strcmp(one, cr) != 0)
                fprintf(stderr, "    path %s, input: \"%.*s\"\n",
                        p < CSV_T_NPATHS ? csv_t_paths[p] : "(default)", (int)n, in);
            PGT_EQ_STR(c0, one);
            PGT_EQ_STR(c1, one);
            PGT_EQ_STR(cr, one);
            pp_free(c0);
            pp_free(c1);
            pp_free(cr);
        }
        csv_t_path(NULL);
        pp_free(one);
    }
}

PGT_TEST(csv, simd_path_is_chosen)
{
#if PGPIPE_SMALL
    /* the size build has the state machine alone, whatever is asked */
    static const char *const asks[] = { "none", "scalar", "sse2", "avx2", "neon", "x", NULL };
    for (size_t i = 0; i < sizeof asks / sizeof asks[0]; i++) {
        csv_t_path(asks[i]);
        pgpipe_csv *r = NULL;
        PGT_OK(pgpipe_csv_open_feed(&r, NULL));
        PGT_EQ_STR(r->simd, "none");
        PGT_CHECK(r->cls == NULL);
        pgpipe_csv_close(r);
    }
    csv_t_path(NULL);
#else
    /* each name selects its path where the CPU has it; anything else the best */
    struct { const char *env, *want; } cases[] = {
        { "none", "none" },
        { "scalar", "scalar" },
#if defined(CSV_HAVE_SSE2)
        { "sse2", "sse2" },
#endif
#if defined(CSV_HAVE_NEON)
        { "neon", "neon" },
#endif
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        csv_t_path(cases[i].env);
        pgpipe_csv *r = NULL;
        PGT_OK(pgpipe_csv_open_feed(&r, NULL));
        PGT_EQ_STR(r->simd, cases[i].want);
        PGT_CHECK((r->cls == NULL) == (strcmp(cases[i].want, "none") == 0));
        pgpipe_csv_close(r);
    }
    const char *best = NULL;
    csv_t_path("no-such-path");
    pgpipe_csv *r = NULL;
    PGT_OK(pgpipe_csv_open_feed(&r, NULL));
    best = r->simd;
#if defined(CSV_HAVE_NEON)
    PGT_EQ_STR(best, "neon");
#elif defined(CSV_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("pclmul"))
        PGT_EQ_STR(best, "avx2");
    else
        PGT_EQ_STR(best, "none");
#else
    PGT_EQ_STR(best, "none");
#endif
    pgpipe_csv_close(r);
    csv_t_path("avx2");
    PGT_OK(pgpipe_csv_open_feed(&r, NULL));
#if defined(CSV_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("pclmul"))
        PGT_EQ_STR(r->simd, "avx2");
    else
#endif
        PGT_EQ_STR(r->simd, best);
    pgpipe_csv_close(r);
    csv_t_path(NULL);
    PGT_OK(pgpipe_csv_open_feed(&r, NULL));
    PGT_EQ_STR(r->simd, best);
    pgpipe_csv_close(r);
#endif
}

/* A fuller dump than csv_t_dump: every field with its flag and length, the
** raw record, the record's line and offset, the error's code, line, column,
** offset, field and message. */
static void csv_t_dump_all(pgpipe_csv *r, int rc, pp_buf *out)
{
    pp_buf_appendf(out, "rc=%d line=%lld off=%lld n=%lld\n", rc, pgpipe_csv_record_line(r),
                   pgpipe_csv_record_offset(r), pgpipe_csv_record_count(r));
    if (rc == PGPIPE_ROW || rc == PGPIPE_PARSE) {
        int n;
        const pgpipe_csv_span *f = pgpipe_csv_fields(r, &n);
        for (int i = 0; i < n; i++) {
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
        pp_buf_putc(out, '\n');
    }
    if (rc != PGPIPE_ROW) {
        const pgpipe_error *e = pgpipe_errinfo(r);
        pp_buf_appendf(out, "err %d %lld:%lld@%lld f%d %s\n", e->code, e->line, e->column,
                       e->offset, pgpipe_csv_error_field(r), e->message);
    }
}

/* Feed in (n bytes) in chunks from `chunk` (0: one piece; SIZE_MAX: random
** 1..97 from seed) and return the full dump (caller frees). */
static char *csv_t_run_all(const char *in, size_t n, const pgpipe_csv_options *o, size_t chunk,
                           uint64_t seed)
{
    pp_buf out = { 0 };
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, o);
    PGT_CHECK(r != NULL);
    size_t off = 0;
    int rc;
    for (int guard = 0;; guard++) {
        PGT_CHECK(guard < 10000000);
        while ((rc = pgpipe_csv_next(r)) == PGPIPE_ROW || rc == PGPIPE_PARSE)
            csv_t_dump_all(r, rc, &out);
        if (rc != PGPIPE_BUSY)
            break;
        if (off == n) {
            PGT_OK(pgpipe_csv_feed_end(r));
            continue;
        }
        size_t k = chunk == 0 ? n - off : chunk;
        if (chunk == SIZE_MAX)
            k = 1 + (size_t)(pp_rand_next(&seed) % 97);
        if (k > n - off)
            k = n - off;
        PGT_OK(pgpipe_csv_feed(r, in + off, k));
        off += k;
    }
    csv_t_dump_all(r, rc, &out);
    pgpipe_csv_close(r);
    pp_buf_putc(&out, '\0');
    return out.data;
}

/* Random CSV that is mostly well formed, so the fast path takes most records:
** fields plain or quoted, with "" inside, delimiters and line breaks (LF, CR,
** CRLF) inside quotes, fields from empty to a few hundred bytes (across the
** 64-byte blocks and the reader's buffer), line ends LF, CR or CRLF, empty
** lines, and now and then a flaw (a stray quote, text after a closing quote,
** an unterminated quote at the end). */
static size_t csv_t_random_csv(pp_buf *b, uint64_t *seed, int flaws)
{
    b->len = 0;
    int nrec = 1 + (int)(pp_rand_next(seed) % 40);
    for (int i = 0; i < nrec; i++) {
        int nf = 1 + (int)(pp_rand_next(seed) % 12);
        for (int f = 0; f < nf; f++) {
            if (f)
                pp_buf_putc(b, ',');
            uint64_t k = pp_rand_next(seed);
            size_t flen = (size_t)(k % 8 == 0 ? pp_rand_next(seed) % 300 : pp_rand_next(seed) % 12);
            int quoted = (k >> 8) % 3 != 0;
            if (quoted)
                pp_buf_putc(b, '"');
            for (size_t j = 0; j < flen; j++) {
                uint64_t c = pp_rand_next(seed) % 64;
                if (quoted && c == 0)
                    pp_buf_append(b, "\"\"", 2);
                else if (quoted && c == 1)
                    pp_buf_putc(b, ',');
                else if (quoted && c == 2)
                    pp_buf_putc(b, '\n');
                else if (quoted && c == 3)
                    pp_buf_putc(b, '\r');
                else if (quoted && c == 4)
                    pp_buf_append(b, "\r\n", 2);
                else
                    pp_buf_putc(b, (char)('a' + c % 26));
            }
            if (flaws && pp_rand_next(seed) % 97 == 0)
                pp_buf_putc(b, '"'); /* stray, or closes early */
            if (quoted)
                pp_buf_putc(b, '"');
            if (flaws && quoted && pp_rand_next(seed) % 89 == 0)
                pp_buf_putc(b, 'x'); /* text after the closing quote */
        }
        uint64_t e = pp_rand_next(seed) % 16;
        if (i == nrec - 1 && e < 3)
            break; /* no line break at the end */
        pp_buf_appendf(b, "%s", e < 8 ? "\n" : e < 12 ? "\r\n" : e < 14 ? "\r" : "\n\n");
    }
    if (flaws && pp_rand_next(seed) % 20 == 0)
        pp_buf_append(b, "\"open", 5);
    return b->len;
}

PGT_TEST(csv, simd_paths_differential)
{
    if (PGPIPE_SMALL)
        PGT_SKIP("a size build has one path, the state machine: nothing to compare");
    /* every path must give what the state machine alone gives: fields, flags,
    ** raw records, record lines and offsets, errors with line:column, for
    ** one-piece, bytewise and random chunks and small reader buffers */
    uint64_t seed = 20261205;
    pp_buf in = { 0 };
    for (int iter = 0; iter < 600; iter++) {
        size_t n = csv_t_random_csv(&in, &seed, iter % 3 != 0);
        pgpipe_csv_options o;
        pgpipe_csv_options_init(&o);
        o.strict = (iter >> 1) & 1;
        o.skip_empty_lines = (iter >> 2) & 1;
        o.expected_fields = (iter >> 3) & 1 ? 3 : -1;
        o.header = iter % 11 == 0;
        o.buffer_size = iter % 5 == 0 ? 16 + (size_t)(pp_rand_next(&seed) % 300) : 0;
        if (iter % 7 == 0)
            o.max_field_size = 1 + (size_t)(pp_rand_next(&seed) % 200);
        csv_t_path("none");
        char *want = csv_t_run_all(in.data, n, &o, 0, 1);
        static const size_t chunks[] = { 0, 1, 7, 64, 65, SIZE_MAX };
        for (size_t p = 0; p <= CSV_T_NPATHS; p++) {
            csv_t_path(p < CSV_T_NPATHS ? csv_t_paths[p] : NULL);
            for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
                if (chunks[c] == 1 && n > 3000)
                    continue;
                char *got = csv_t_run_all(in.data, n, &o, chunks[c], (uint64_t)iter);
                if (strcmp(got, want) != 0)
                    fprintf(stderr, "    iter %d path %s chunk %zu input: \"%.*s\"\n", iter,
                            p < CSV_T_NPATHS ? csv_t_paths[p] : "(default)",
                            chunks[c] == SIZE_MAX ? 0 : chunks[c], (int)n, in.data);
                PGT_EQ_STR(got, want);
                pp_free(got);
            }
        }
        if (iter % 60 == 0 && n <= 4000) {
            /* every chunk size from 1 to 70 */
            for (size_t p = 0; p < CSV_T_NPATHS; p++) {
                csv_t_path(csv_t_paths[p]);
                for (size_t c = 1; c <= 70; c++) {
                    char *got = csv_t_run_all(in.data, n, &o, c, (uint64_t)iter);
                    if (strcmp(got, want) != 0)
                        fprintf(stderr, "    iter %d path %s chunk %zu\n", iter, csv_t_paths[p], c);
                    PGT_EQ_STR(got, want);
                    pp_free(got);
                }
            }
        }
        pp_free(want);
        csv_t_path(NULL);
    }
    pp_buf_free(&in);
}

/* A feed reader with a small buffer on path p of csv_t_paths (p ==
** CSV_T_NPATHS: the default path). */
static pgpipe_csv *csv_t_feed_on_path(size_t p, size_t buffer_size)
{
    csv_t_path(p < CSV_T_NPATHS ? csv_t_paths[p] : NULL);
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.buffer_size = buffer_size;
    pgpipe_csv *r = NULL;
    PGT_OK(pgpipe_csv_open_feed(&r, &o));
    return r;
}

/* The fields of the row at hand: four, the first the row's number. */
static const pgpipe_csv_span *csv_t_row_of_four(pgpipe_csv *r, int row)
{
    int n;
    const pgpipe_csv_span *f = pgpipe_csv_fields(r, &n);
    PGT_EQ_INT(n, 4);
    char want[24];
    snprintf(want, sizeof want, "%d", row);
    PGT_EQ_MEM(f[0].data, f[0].len, want, strlen(want));
    return f;
}

PGT_TEST(csv, simd_fast_path_zero_copy_and_decode)
{
    /* on every path a quoted field without "" points into the buffer; one
    ** with "" is decoded; fields longer than a block and records crossing the
    ** buffer's end come out whole */
    pp_buf in = { 0 };
    for (int i = 0; i < 300; i++) {
        pp_buf_appendf(&in, "\"%d\",\"", i);
        for (int j = 0; j < i % 150; j++)
            pp_buf_putc(&in, (char)('a' + j % 26));
        pp_buf_appendf(&in, "\",\"x\"\"%d\"\"y\",plain%d\r\n", i, i);
    }
    for (size_t p = 0; p <= CSV_T_NPATHS; p++) {
        pgpipe_csv *r = csv_t_feed_on_path(p, 200);
        size_t off = 0;
        int rows = 0, rc;
        while (rows < 300) {
            rc = pgpipe_csv_next(r);
            if (rc == PGPIPE_BUSY) {
                if (off == in.len) {
                    PGT_OK(pgpipe_csv_feed_end(r));
                } else {
                    size_t k = in.len - off < 1000 ? in.len - off : 1000;
                    PGT_OK(pgpipe_csv_feed(r, in.data + off, k));
                    off += k;
                }
                continue;
            }
            PGT_EQ_INT(rc, PGPIPE_ROW);
            const pgpipe_csv_span *f = csv_t_row_of_four(r, rows);
            char want[64];
            PGT_EQ_INT(f[1].len, (size_t)(rows % 150));
            for (int k = 0; k < 2; k++)
                PGT_CHECK((const unsigned char *)f[k].data >= r->buf &&
                          (const unsigned char *)f[k].data < r->buf + r->len);
            snprintf(want, sizeof want, "x\"%d\"y", rows);
            PGT_EQ_MEM(f[2].data, f[2].len, want, strlen(want));
            PGT_EQ_INT(f[2].quoted, 1);
            snprintf(want, sizeof want, "plain%d", rows);
            PGT_EQ_MEM(f[3].data, f[3].len, want, strlen(want));
            PGT_EQ_INT(f[3].quoted, 0);
            PGT_EQ_INT(pgpipe_csv_record_line(r), rows + 1);
            rows++;
        }
        /* the fast path took the records but those at the buffer's end */
        if (r->cls)
            PGT_CHECK_MSG(r->nfast >= 200, "fast path took %lld of 300", r->nfast);
        else
            PGT_EQ_INT(r->nfast, 0);
        pgpipe_csv_close(r);
    }
    csv_t_path(NULL);
    pp_buf_free(&in);
}

PGT_TEST(csv, simd_batch_block_edges)
{
    if (PGPIPE_SMALL)
        PGT_SKIP("a size build has one path, the state machine: nothing to compare");
    /* special bytes put at every offset around the 64-byte block edges (a
    ** quote at 63/64, CR at 63 and LF at 64, "" split by the edge, a quote
    ** as the last byte, an unterminated quote at the end, NUL bytes): every
    ** path, one piece and chunked, gives what the state machine gives */
    static const char *const tails[] = {
        "\"x\",y\n",       "\"a\"\"b\",c\r\n", "z\r\nq,\"r\"\n", "\"\"\"\",\"\"\n",
        "w,\"",            "\"open\n,x",       "a\"b,c\n",       "\"a\"b,c\n",
        "v\r",             "\"m\nn\",o\r\n",   "\"\",\n\n\"\"\n", "x,y"
    };
    pp_buf in = { 0 };
    for (size_t t = 0; t < sizeof tails / sizeof tails[0]; t++) {
        for (int off = 52; off <= 132; off++) {
            in.len = 0;
            /* records before the tail: the fast path runs up to it */
            for (int i = 0; i < off; i++)
                pp_buf_putc(&in, i % 9 == 8 ? '\n' : i % 3 == 2 ? ',' : (char)('a' + i % 26));
            if (off % 5 == 0)
                in.data[off / 2] = '\0'; /* a NUL byte in a field */
            pp_buf_append(&in, tails[t], strlen(tails[t]));
            pgpipe_csv_options o;
            pgpipe_csv_options_init(&o);
            o.strict = off & 1;
            o.skip_empty_lines = (off >> 1) & 1;
            o.expected_fields = -1;
            csv_t_path("none");
            char *want = csv_t_run_all(in.data, in.len, &o, 0, 1);
            for (size_t p = 1; p <= CSV_T_NPATHS; p++) {
                csv_t_path(p < CSV_T_NPATHS ? csv_t_paths[p] : NULL);
                static const size_t chunks[] = { 0, 1, 63, 64, 65, SIZE_MAX };
                for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
                    char *got = csv_t_run_all(in.data, in.len, &o, chunks[c], (uint64_t)off);
                    if (strcmp(got, want) != 0)
                        fprintf(stderr, "    tail %zu off %d path %s chunk %zu\n", t, off,
                                p < CSV_T_NPATHS ? csv_t_paths[p] : "(default)", chunks[c]);
                    PGT_EQ_STR(got, want);
                    pp_free(got);
                }
            }
            pp_free(want);
        }
    }
    csv_t_path(NULL);
    pp_buf_free(&in);
}

PGT_TEST(csv, simd_feed_while_records_are_parsed_ahead)
{
    /* a chunk fed between two rows (which may move the buffer under the
    ** fast path's block masks) must not lose, repeat or corrupt any row */
    pp_buf in = { 0 };
    for (int i = 0; i < 500; i++)
        pp_buf_appendf(&in, "%d,\"q%d\",\"a\"\"%d\"\"\",plain\r\n", i, i, i);
    for (size_t p = 0; p <= CSV_T_NPATHS; p++) {
        pgpipe_csv *r = csv_t_feed_on_path(p, 256);
        size_t off = 0;
        int rows = 0;
        for (int guard = 0; guard < 100000 && rows < 500; guard++) {
            int rc = pgpipe_csv_next(r);
            if (rc == PGPIPE_ROW) {
                const pgpipe_csv_span *f = csv_t_row_of_four(r, rows);
                char want[64];
                snprintf(want, sizeof want, "a\"%d\"", rows);
                PGT_EQ_MEM(f[2].data, f[2].len, want, strlen(want));
                PGT_EQ_INT(pgpipe_csv_record_line(r), rows + 1);
                rows++;
            } else {
                PGT_EQ_INT(rc, PGPIPE_BUSY);
                if (off == in.len)
                    PGT_OK(pgpipe_csv_feed_end(r));
            }
            /* feed a little after every call, rows queued or not */
            if (off < in.len) {
                size_t k = in.len - off < 37 ? in.len - off : 37;
                PGT_OK(pgpipe_csv_feed(r, in.data + off, k));
                off += k;
            }
        }
        PGT_EQ_INT(rows, 500);
        int rc = pgpipe_csv_next(r);
        if (rc == PGPIPE_BUSY) {
            PGT_OK(pgpipe_csv_feed_end(r));
            rc = pgpipe_csv_next(r);
        }
        PGT_EQ_INT(rc, PGPIPE_DONE);
        pgpipe_csv_close(r);
    }
    csv_t_path(NULL);
    pp_buf_free(&in);
}

/* Read the whole input through a fd reader (a pipe or file) and dump it. */
static char *csv_t_run_reader(pgpipe_csv *r)
{
    pp_buf out = { 0 };
    int rc;
    while ((rc = pgpipe_csv_next(r)) == PGPIPE_ROW || rc == PGPIPE_PARSE)
        csv_t_dump(r, rc, &out);
    csv_t_dump(r, rc, &out);
    pp_buf_putc(&out, '\0');
    return out.data;
}

PGT_TEST(csv, fd_and_file_readers)
{
    char path[512];
    snprintf(path, sizeof path, "%s/csv_fd_%d.csv", pgt_tmpdir(), (int)getpid());
    /* a file with long and short records, mixed line ends, quotes */
    pp_buf in = { 0 };
    uint64_t seed = 7;
    for (int i = 0; i < 2000; i++) {
        int k = (int)(pp_rand_next(&seed) % 5);
        if (k == 0)
            pp_buf_appendf(&in, "%d,\"multi\nline \"\"%d\"\"\",x\r\n", i, i);
        else if (k == 1) {
            pp_buf_appendf(&in, "%d,", i);
            for (int j = 0; j < 300; j++)
                pp_buf_putc(&in, (char)('a' + j % 26));
            pp_buf_appendf(&in, ",y\r");
        } else
            pp_buf_appendf(&in, "%d,plain,\"q\"\n", i);
    }
    FILE *f = fopen(path, "wb");
    PGT_CHECK(f != NULL);
    fwrite(in.data, 1, in.len, f);
    fclose(f);
    pp_buf_putc(&in, '\0');
    char *want = csv_t_run_seed(in.data, in.len - 1, NULL, 0, 1);
    PGT_CONTAINS(want, "L1|u0|");
    size_t sizes[] = { 1, 7, 64, 0 };
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        pgpipe_csv_options o;
        pgpipe_csv_options_init(&o);
        o.buffer_size = sizes[s];
        int fd = open(path, O_RDONLY);
        PGT_CHECK(fd >= 0);
        pgpipe_csv *r = NULL;
        pgpipe_csv_open_fd(&r, fd, &o);
        char *got = csv_t_run_reader(r);
        PGT_EQ_STR(got, want);
        /* the buffer grows only to hold the longest record */
        PGT_CHECK_MSG(r->cap <= 2048 || r->cap == (sizes[s] ? sizes[s] : CSV_DEFAULT_BUFFER),
                      "cap %zu", r->cap);
        pp_free(got);
        pgpipe_csv_close(r);
        close(fd);
        f = fopen(path, "rb");
        pgpipe_csv_open_file(&r, f, &o);
        got = csv_t_run_reader(r);
        PGT_EQ_STR(got, want);
        pp_free(got);
        pgpipe_csv_close(r);
        fclose(f);
    }
    /* a pipe delivers short reads */
    int pfd[2];
    PGT_CHECK(pipe(pfd) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(pfd[0]);
        for (size_t off = 0; off < in.len - 1; off += 333) {
            size_t k = in.len - 1 - off < 333 ? in.len - 1 - off : 333;
            if (write(pfd[1], in.data + off, k) != (ssize_t)k)
                _exit(1);
        }
        _exit(0);
    }
    close(pfd[1]);
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_fd(&r, pfd[0], NULL);
    char *got = csv_t_run_reader(r);
    PGT_EQ_STR(got, want);
    pp_free(got);
    pgpipe_csv_close(r);
    close(pfd[0]);
    waitpid(pid, NULL, 0);
    pp_free(want);
    pp_buf_free(&in);
    unlink(path);
}

PGT_TEST(csv, memory_is_bounded_by_the_longest_record)
{
    /* 20 MB of short records through a fd reader: the buffer never grows */
    char path[512];
    snprintf(path, sizeof path, "%s/csv_mem_%d.csv", pgt_tmpdir(), (int)getpid());
    FILE *f = fopen(path, "wb");
    PGT_CHECK(f != NULL);
    for (int i = 0; i < 400000; i++)
        fprintf(f, "%d,\"name %d\",some text here,more text there\n", i, i);
    fclose(f);
    int fd = open(path, O_RDONLY);
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.buffer_size = 4096;
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_fd(&r, fd, &o);
    long long rows = 0;
    while (pgpipe_csv_next(r) == PGPIPE_ROW)
        rows++;
    PGT_EQ_INT(rows, 400000);
    PGT_EQ_INT(r->cap, 4096);
    PGT_CHECK(r->fcap <= 64);
    PGT_EQ_INT(pgpipe_csv_record_line(r), 400000);
    pgpipe_csv_close(r);
    close(fd);
    unlink(path);
}

PGT_TEST(csv, errors_and_misuse)
{
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.delimiter = '\n';
    pgpipe_csv *r = NULL;
    /* bad options fail the open, and leave a reader to read the error from */
    PGT_EQ_INT(pgpipe_csv_open_feed(&r, &o), PGPIPE_MISUSE);
    PGT_CHECK(r != NULL);
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(r), "delimiter");
    pgpipe_csv_close(r);
    pgpipe_csv_options_init(&o);
    o.quote = ',';
    PGT_EQ_INT(pgpipe_csv_open_feed(&r, &o), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_MISUSE);
    pgpipe_csv_close(r);
    /* feeding a fd reader, feeding after the end */
    PGT_OK(pgpipe_csv_open_fd(&r, 0, NULL));
    PGT_EQ_INT(csv_t_feed_str(r, "a"), PGPIPE_MISUSE);
    pgpipe_csv_close(r);
    pgpipe_csv_open_feed(&r, NULL);
    PGT_OK(pgpipe_csv_feed_end(r));
    PGT_EQ_INT(csv_t_feed_str(r, "a"), PGPIPE_MISUSE);
    pgpipe_csv_close(r);
    PGT_EQ_INT(pgpipe_csv_next(NULL), PGPIPE_MISUSE);
    /* a read error is an I/O error and sticks */
    int fd = open(pgt_tmpdir(), O_RDONLY);
    PGT_CHECK(fd >= 0);
    pgpipe_csv_open_fd(&r, fd, NULL);
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_IO);
    PGT_CONTAINS(pgpipe_errmsg(r), "read failed");
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_IO);
    pgpipe_csv_close(r);
    close(fd);
}

PGT_TEST(csv, copy_text_escaping)
{
    pgpipe_copy_buf b = { 0 };
    const char *vals[] = { "plain", "tab\there", "nl\nx", "cr\rx", "back\\slash", "\\N",
                           NULL, "", "Zürich ✓" };
    PGT_OK(pgpipe_copy_text_row(&b, 9, vals, NULL));
    const char *want = "plain\ttab\\there\tnl\\nx\tcr\\rx\tback\\\\slash\t\\\\N\t\\N\t\tZürich ✓\n";
    PGT_EQ_MEM(b.data, b.len, want, strlen(want));
    pgpipe_copy_buf_clear(&b);
    /* an empty value into an empty buffer (found by the fuzzer: NULL + 0) */
    PGT_OK(pgpipe_copy_text_field(&b, "", 0));
    PGT_EQ_INT(b.len, 0);
    PGT_OK(pgpipe_copy_text_field(&b, NULL, 0));
    PGT_OK(pgpipe_copy_text_field(&b, "a\tb", 3));
    PGT_EQ_MEM(b.data, b.len, "\\Na\\tb", 6);
    pgpipe_copy_buf_clear(&b);
    PGT_CHECK(b.data == NULL);

    /* a CSV record: empty unquoted is NULL, empty quoted is '' */
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, NULL);
    PGT_OK(csv_t_feed_str(r, "a,,\"\",\"x\ty\\z\"\n"));
    PGT_EQ_INT(pgpipe_csv_next(r), PGPIPE_ROW);
    PGT_OK(pgpipe_csv_copy_row(r, &b));
    want = "a\t\\N\t\tx\\ty\\\\z\n";
    PGT_EQ_MEM(b.data, b.len, want, strlen(want));
    pgpipe_copy_buf_clear(&b);
    pgpipe_csv_close(r);
}

PGT_TEST(csv, copy_round_trip_through_postgres)
{
    PGconn *c = pgt_connect();
    char tbl[64];
    snprintf(tbl, sizeof tbl, "csv_rt_%d", (int)getpid());
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE TABLE %s (id int, a text, b text)", tbl);
    PQclear(PGT_EXEC(c, sql));
    /* values that need escaping, \N-looking text, NULL, empty, UTF-8 */
    const char *vals[] = { "plain", "tab\there", "nl\nx\r\n", "cr\rx", "back\\slash\\",
                           "\\N", "N", NULL, "", "Zürich ✓ 日本", "\\.", "a\\tb", "\t\n\r\\" };
    int nv = (int)(sizeof vals / sizeof vals[0]);
    pgpipe_copy_buf b = { 0 };
    for (int i = 0; i < nv; i++) {
        char id[16];
        snprintf(id, sizeof id, "%d", i);
        const char *row[3] = { id, vals[i], vals[nv - 1 - i] };
        PGT_OK(pgpipe_copy_text_row(&b, 3, row, NULL));
    }
    /* and rows from a CSV file through the loader's path */
    const char *csv = "100,\"q\"\"uote\tand\nnewline\",\n101,,\"\"\n102,\\N,\"\\\\\"\n";
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_feed(&r, NULL);
    PGT_OK(pgpipe_csv_feed(r, csv, strlen(csv)));
    PGT_OK(pgpipe_csv_feed_end(r));
    while (pgpipe_csv_next(r) == PGPIPE_ROW)
        PGT_OK(pgpipe_csv_copy_row(r, &b));
    pgpipe_csv_close(r);

    snprintf(sql, sizeof sql, "COPY %s FROM STDIN", tbl);
    PGresult *res = PQexec(c, sql);
    PGT_EQ_INT(PQresultStatus(res), PGRES_COPY_IN);
    PQclear(res);
    /* in uneven pieces, as a loader would stream it */
    for (size_t off = 0; off < b.len; off += 7) {
        size_t k = b.len - off < 7 ? b.len - off : 7;
        PGT_EQ_INT(PQputCopyData(c, b.data + off, (int)k), 1);
    }
    PGT_EQ_INT(PQputCopyEnd(c, NULL), 1);
    res = PQgetResult(c);
    PGT_CHECK_MSG(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQresultErrorMessage(res));
    PQclear(res);
    while ((res = PQgetResult(c)) != NULL)
        PQclear(res);
    pgpipe_copy_buf_clear(&b);

    snprintf(sql, sizeof sql, "SELECT id, a, b FROM %s ORDER BY id", tbl);
    res = PGT_EXEC(c, sql);
    PGT_EQ_INT(PQntuples(res), nv + 3);
    for (int i = 0; i < nv; i++) {
        const char *want[2] = { vals[i], vals[nv - 1 - i] };
        for (int k = 0; k < 2; k++) {
            if (!want[k]) {
                PGT_CHECK_MSG(PQgetisnull(res, i, k + 1), "row %d col %d not NULL", i, k + 1);
            } else {
                PGT_CHECK_MSG(!PQgetisnull(res, i, k + 1), "row %d col %d NULL", i, k + 1);
                PGT_EQ_STR(PQgetvalue(res, i, k + 1), want[k]);
            }
        }
    }
    PGT_EQ_STR(PQgetvalue(res, nv, 1), "q\"uote\tand\nnewline");
    PGT_CHECK(PQgetisnull(res, nv, 2));
    PGT_CHECK(PQgetisnull(res, nv + 1, 1));
    PGT_CHECK(!PQgetisnull(res, nv + 1, 2));
    PGT_EQ_STR(PQgetvalue(res, nv + 1, 2), "");
    PGT_EQ_STR(PQgetvalue(res, nv + 2, 1), "\\N");
    PGT_EQ_STR(PQgetvalue(res, nv + 2, 2), "\\\\");
    PQclear(res);
    snprintf(sql, sizeof sql, "DROP TABLE %s", tbl);
    PQclear(PGT_EXEC(c, sql));
    PQfinish(c);
}
