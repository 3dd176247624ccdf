/*
** libFuzzer target for the NDJSON reader: the input is fed in random chunk
** sizes (taken from the first bytes), and what the reader yields (line
** numbers, good/bad, compact text) must match parsing each line on its own.
*/
/* only what this target needs: each target compiles the amalgamation,
** and make test builds all of them */
#define PGPIPE_OMIT_POOL 1
#define PGPIPE_OMIT_MIGRATE 1
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_DLQ 1
#include "pgpipe.c"

typedef struct fn_rec {
    long long line;
    int rc;
    char *text;
    size_t len;
} fn_rec;

static void fn_add(fn_rec **v, size_t *n, long long line, int rc, const pgpipe_json_val *root)
{
    *v = realloc(*v, (*n + 1) * sizeof **v);
    fn_rec *r = &(*v)[(*n)++];
    r->line = line;
    r->rc = rc;
    r->text = NULL;
    r->len = 0;
    if (rc == PGPIPE_ROW && pgpipe_json_write(root, &r->text, &r->len) != PGPIPE_OK)
        __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint32_t seed;
    memcpy(&seed, data, 4);
    data += 4;
    size -= 4;
    char *buf = malloc(size ? size : 1);
    if (size)
        memcpy(buf, data, size);

    /* the reference: split on '\n' by hand and parse every line alone */
    fn_rec *ref = NULL, *got = NULL;
    size_t nref = 0, ngot = 0;
    pgpipe_json_doc *doc;
    pgpipe_json_doc_open(&doc);
    size_t pos = 0;
    long long line = 1;
    while (pos < size) {
        const char *nl = memchr(buf + pos, '\n', size - pos);
        size_t end = nl ? (size_t)(nl - buf) : size;
        size_t s = pos, e = end;
        if (line == 1 && e - s >= 3 && memcmp(buf + s, "\xEF\xBB\xBF", 3) == 0)
            s += 3;
        if (e > s && buf[e - 1] == '\r')
            e--;
        size_t i = s;
        while (i < e && (buf[i] == ' ' || buf[i] == '\t' || buf[i] == '\r' || buf[i] == '\n'))
            i++;
        if (i < e) {
            int rc = pgpipe_json_parse(doc, buf + s, e - s);
            fn_add(&ref, &nref, line, rc == PGPIPE_OK ? PGPIPE_ROW : rc, pgpipe_json_root(doc));
        }
        line++;
        pos = end + 1;
    }
    pgpipe_json_doc_close(doc);

    /* the reader, fed in pseudo-random chunks */
    pgpipe_ndjson *r;
    pgpipe_ndjson_open(&r);
    pgpipe_ndjson_set_source(r, "fuzz.ndjson");
    size_t off = 0;
    uint32_t st = seed | 1;
    int finished = 0;
    while (!finished) {
        if (off < size) {
            st ^= st << 13;
            st ^= st >> 17;
            st ^= st << 5;
            size_t n = (st % 3 == 0) ? st % 5 : st % 300;
            if (n > size - off)
                n = size - off;
            /* an exact heap copy of the chunk, freed after draining */
            char *chunk = malloc(n ? n : 1);
            if (n)
                memcpy(chunk, buf + off, n);
            off += n;
            pgpipe_ndjson_feed(r, chunk, n);
            const pgpipe_json_val *root;
            long long ln;
            int rc;
            while ((rc = pgpipe_ndjson_next(r, &root, &ln)) != PGPIPE_DONE) {
                if (rc != PGPIPE_ROW) {
                    const pgpipe_error *e = pgpipe_errinfo(r);
                    if (e->line != ln || strcmp(e->source, "fuzz.ndjson"))
                        __builtin_trap();
                }
                fn_add(&got, &ngot, ln, rc, root);
            }
            free(chunk);
        } else {
            pgpipe_ndjson_finish(r);
            finished = 1;
            const pgpipe_json_val *root;
            long long ln;
            int rc;
            while ((rc = pgpipe_ndjson_next(r, &root, &ln)) != PGPIPE_DONE)
                fn_add(&got, &ngot, ln, rc, root);
        }
    }
    if (pgpipe_ndjson_records(r) + pgpipe_ndjson_errors(r) != (long long)ngot)
        __builtin_trap();
    pgpipe_ndjson_close(r);

    if (ngot != nref)
        __builtin_trap();
    for (size_t i = 0; i < nref; i++) {
        if (ref[i].line != got[i].line || ref[i].rc != got[i].rc || ref[i].len != got[i].len ||
            (ref[i].len && memcmp(ref[i].text, got[i].text, ref[i].len)))
            __builtin_trap();
        free(ref[i].text);
        free(got[i].text);
    }
    free(ref);
    free(got);
    free(buf);
    return 0;
}
