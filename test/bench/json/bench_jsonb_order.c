/*
** pp_jsonb_order_buf on records: instructions per byte (callgrind) and a dump
** of its output (to check that another build writes the same bytes).
**   bench_jsonb_order payloads FILE [REPS]  the "payload" object of each line
**                                           of bench_copy gen-ndjson's NDJSON
**   bench_jsonb_order lines FILE [REPS]     each line of an NDJSON file whole
**   bench_jsonb_order event N               the HTTP bench's event, N times
**   bench_jsonb_order statuses FILE [REPS]  each element of twitter.json's
**                                           "statuses" array, as it is there
**   bench_jsonb_order statuses-compact FILE [REPS]  the same without the
**                                           whitespace (as in NDJSON)
**   bench_jsonb_order whole FILE [REPS]     the file as one text
** Prints "records=N bytes=B". With BJO_DUMP=FILE set, also writes each output
** followed by a newline to FILE. Only bjo_work runs the records: count it
** with valgrind --tool=callgrind --toggle-collect=bjo_work.
*/
#include "pgpipe.c"
#include <stdio.h>

typedef struct { const char *p; size_t n; } bjo_rec;

static bjo_rec *recs;
static size_t nrec, caprec;

static void bjo_add(const char *p, size_t n)
{
    if (nrec == caprec) {
        caprec = caprec ? caprec * 2 : 1024;
        recs = realloc(recs, caprec * sizeof *recs);
        if (!recs)
            exit(1);
    }
    recs[nrec++] = (bjo_rec){ p, n };
}

static char *bjo_read(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    size_t cap = 1 << 20, len = 0;
    char *b = malloc(cap);
    for (;;) {
        if (len == cap && !(b = realloc(b, cap *= 2)))
            exit(1);
        size_t k = fread(b + len, 1, cap - len, f);
        if (!k)
            break;
        len += k;
    }
    fclose(f);
    *n = len;
    return b;
}

/* past the JSON value at s[i] (strings and nesting only; the input is valid) */
static size_t bjo_skip(const char *s, size_t n, size_t i)
{
    int depth = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            for (i++; i < n && s[i] != '"'; i++)
                if (s[i] == '\\')
                    i++;
            if (!depth)
                return i + 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (--depth == 0)
                return i + 1;
        } else if (!depth && (c == ',' || c == ' ' || c == '\n')) {
            return i;
        }
    }
    return i;
}

static __attribute__((noinline)) size_t bjo_work(pp_buf *o, pp_buf *tmp, int reps, FILE *dump)
{
    size_t total = 0;
    for (int r = 0; r < reps; r++)
        for (size_t k = 0; k < nrec; k++) {
            o->len = 0;
            if (pp_jsonb_order_buf(o, tmp, recs[k].p, recs[k].n) != PGPIPE_OK)
                exit(1);
            total += o->len;
            if (dump && !r) {
                fwrite(o->data, 1, o->len, dump);
                fputc('\n', dump);
            }
        }
    return total;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: see the comment at the top of bench_jsonb_order.c\n");
        return 2;
    }
    const char *mode = argv[1];
    int reps = argc >= 4 ? atoi(argv[3]) : 1;
    size_t n = 0;
    char *s = NULL;
    if (!strcmp(mode, "event")) {
        static const char ev[] = "{\"event_type\":\"click\",\"id\":0,\"user_id\":\"u123456\","
                                 "\"path\":\"/products/1234\",\"amount\":12.34,\"ts\":\"2026-01-01T00:00:00Z\"}";
        long count = atol(argv[2]);
        for (long i = 0; i < count; i++)
            bjo_add(ev, sizeof ev - 1);
        reps = 1;
    } else {
        s = bjo_read(argv[2], &n);
        if (!strcmp(mode, "payloads") || !strcmp(mode, "lines")) {
            for (size_t i = 0; i < n;) {
                const char *nl = memchr(s + i, '\n', n - i);
                size_t e = nl ? (size_t)(nl - s) : n;
                if (e > i) {
                    if (mode[0] == 'l') {
                        bjo_add(s + i, e - i);
                    } else {
                        static const char key[] = "\"payload\":";
                        const char *p = strstr(s + i, key);
                        if (!p || p > s + e || s[e - 1] != '}') {
                            fprintf(stderr, "line without a payload at byte %zu\n", i);
                            return 1;
                        }
                        p += sizeof key - 1;
                        bjo_add(p, (size_t)(s + e - 1 - p));
                    }
                }
                i = e + 1;
            }
        } else if (!strncmp(mode, "statuses", 8)) {
            const char *p = strstr(s, "\"statuses\"");
            if (!p || !(p = strchr(p, '[')))
                return 1;
            size_t i = (size_t)(p - s) + 1;
            for (;;) {
                while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t' || s[i] == ','))
                    i++;
                if (i >= n || s[i] == ']')
                    break;
                size_t e = bjo_skip(s, n, i);
                if (mode[8]) { /* compact: whitespace outside strings dropped, in place */
                    size_t w = i;
                    for (size_t k = i; k < e; k++) {
                        if (s[k] == '"') {
                            size_t q = bjo_skip(s, e, k);
                            memmove(s + w, s + k, q - k);
                            w += q - k;
                            k = q - 1;
                        } else if (s[k] != ' ' && s[k] != '\n' && s[k] != '\r' && s[k] != '\t') {
                            s[w++] = s[k];
                        }
                    }
                    bjo_add(s + i, w - i);
                } else {
                    bjo_add(s + i, e - i);
                }
                i = e;
            }
        } else if (!strcmp(mode, "whole")) {
            bjo_add(s, n);
        } else {
            fprintf(stderr, "unknown mode %s\n", mode);
            return 2;
        }
    }
    size_t bytes = 0;
    for (size_t k = 0; k < nrec; k++)
        bytes += recs[k].n;
    FILE *dump = getenv("BJO_DUMP") ? fopen(getenv("BJO_DUMP"), "wb") : NULL;
    pp_buf o = { 0 }, tmp = { 0 };
    size_t out = bjo_work(&o, &tmp, reps, dump);
    if (dump)
        fclose(dump);
    printf("records=%zu bytes=%zu reps=%d out=%zu\n", nrec, bytes * (size_t)reps, reps, out);
    pp_buf_free(&o);
    pp_buf_free(&tmp);
    free(recs);
    free(s);
    return 0;
}
