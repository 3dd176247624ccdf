/*
** JSON benchmark driver: pgpipe (parse to a document, validate only, NDJSON
** reader) against cJSON, json-c and jansson on the same bytes in memory.
**   bench_json FILE WORKLOAD [ndjson]   -> "result WORKLOAD LIB METRIC median min max"
**   bench_json --stream-rss FILE        -> NDJSON read from disk in 64 KB chunks,
**                                          prints records and peak RSS (MB)
** Each figure: one warm-up, then RUNS timed runs (median, min, max in MB/s);
** a run repeats the work until it lasts at least 60 ms. Time is the CPU time
** of this thread (the machine is shared, so wall time mostly measures the
** neighbours), and the contenders built into one binary (pgpipe parse,
** pgpipe validate, cJSON) take turns run by run so that load changes hit
** them alike.
*/
#include "pgpipe.c"
/* json-c and jansson both define json_type: one peer per binary
** (-DBJ_PEER_JSONC, -DBJ_PEER_JANSSON; neither = pgpipe and cJSON) */
#if defined(BJ_PEER_JSONC)
#include <json-c/json.h>
#elif defined(BJ_PEER_JANSSON)
#include <jansson.h>
#elif !defined(BJ_PEER_NONE)
#define BJ_PEER_CJSON 1
#include <cjson/cJSON.h>
#endif
#include <sys/resource.h>
#include <math.h>

#define RUNS 7

static char *bj_buf;
static size_t bj_len;
static int bj_ndjson;

typedef long (*bj_fn)(void); /* returns a checksum so nothing is optimised away */

static double bj_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int bj_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct bj_case {
    const char *lib, *metric;
    bj_fn fn;
    double r[RUNS];
} bj_case;

/* Time the cases in turns: run i of every case before run i + 1 of any. */
static void bj_measure_all(const char *workload, bj_case *cs, int n)
{
    long sink = 0;
    for (int k = 0; k < n; k++)
        sink += cs[k].fn(); /* warm-up */
    for (int i = 0; i < RUNS; i++) {
        for (int k = 0; k < n; k++) {
            double t0 = bj_now(), t;
            long reps = 0;
            do {
                sink += cs[k].fn();
                reps++;
                t = bj_now() - t0;
            } while (t < 0.06);
            cs[k].r[i] = (double)bj_len * (double)reps / t / 1e6;
        }
    }
    for (int k = 0; k < n; k++) {
        double *r = cs[k].r;
        qsort(r, RUNS, sizeof r[0], bj_cmp);
        printf("result %s %s %s %.1f %.1f %.1f\n", workload, cs[k].lib, cs[k].metric, r[RUNS / 2],
               r[0], r[RUNS - 1]);
        fprintf(stderr, "  %s %s %s: median %.1f MB/s (checksum %ld)\n", workload, cs[k].lib,
                cs[k].metric, r[RUNS / 2], sink);
    }
    fflush(stdout);
}

/* ---- pgpipe ---- */
static pgpipe_json_doc *bj_doc;
static pgpipe_ndjson *bj_nd;

static long bj_pgpipe_parse(void)
{
    if (bj_ndjson) {
        long n = 0;
        const size_t chunk = 1 << 20;
        for (size_t off = 0; off < bj_len; off += chunk) {
            size_t m = bj_len - off < chunk ? bj_len - off : chunk;
            pgpipe_ndjson_feed(bj_nd, bj_buf + off, m);
            const pgpipe_json_val *v;
            long long line;
            int rc;
            while ((rc = pgpipe_ndjson_next(bj_nd, &v, &line)) != PGPIPE_DONE)
                n += rc == PGPIPE_ROW ? (long)pgpipe_json_len(v) : -1000000;
        }
        return n;
    }
    if (pgpipe_json_parse(bj_doc, bj_buf, bj_len) != PGPIPE_OK) {
        fprintf(stderr, "pgpipe: %s\n", pgpipe_errmsg(bj_doc));
        exit(1);
    }
    return (long)pgpipe_json_len(pgpipe_json_root(bj_doc));
}

static long bj_pgpipe_validate(void)
{
    if (bj_ndjson) {
        long n = 0;
        const char *p = bj_buf, *e = bj_buf + bj_len;
        while (p < e) {
            const char *nl = memchr(p, '\n', (size_t)(e - p));
            if (!nl)
                nl = e;
            n += pgpipe_json_validate(p, (size_t)(nl - p), NULL) == PGPIPE_OK;
            p = nl + 1;
        }
        return n;
    }
    return pgpipe_json_validate(bj_buf, bj_len, NULL) == PGPIPE_OK;
}

/* Parse, then read every value: numbers as doubles, strings' bytes, keys. */
static long bj_visit(const pgpipe_json_val *root)
{
    enum { BJ_DEPTH = 1024 };
    pgpipe_json_iter st[BJ_DEPTH];
    int sp = 0;
    long sum = 0;
    double dsum = 0;
    const pgpipe_json_val *v = root;
    for (;;) {
        if (v) {
            switch (pgpipe_json_type(v)) {
            case PGPIPE_JSON_NUMBER: {
                double x;
                pgpipe_json_get_double(v, &x);
                dsum += x;
                break;
            }
            case PGPIPE_JSON_STRING: {
                size_t n;
                const char *p = pgpipe_json_get_str(v, &n);
                sum += (long)n + (n ? p[0] : 0);
                break;
            }
            case PGPIPE_JSON_BOOL: sum += pgpipe_json_get_bool(v); break;
            case PGPIPE_JSON_ARRAY:
            case PGPIPE_JSON_OBJECT:
                if (sp == BJ_DEPTH) {
                    fprintf(stderr, "too deep\n");
                    exit(1);
                }
                pgpipe_json_iter_init(&st[sp++], v);
                break;
            default: sum++; break;
            }
        }
        if (!sp)
            break;
        const pgpipe_json_val *key = NULL;
        v = pgpipe_json_iter_next(&st[sp - 1], &key);
        if (!v) {
            sp--;
            if (!sp)
                break;
            continue;
        }
        if (key) {
            size_t n;
            pgpipe_json_get_str(key, &n);
            sum += (long)n;
        }
    }
    return sum + (long)dsum;
}

static long bj_pgpipe_read_all(void)
{
    if (pgpipe_json_parse(bj_doc, bj_buf, bj_len) != PGPIPE_OK) {
        fprintf(stderr, "pgpipe: %s\n", pgpipe_errmsg(bj_doc));
        exit(1);
    }
    return bj_visit(pgpipe_json_root(bj_doc));
}

/* ---- doubles to text: pgpipe's shortest writer against printf ---- */
#define BJ_NDBL 200000
static double bj_dbl[BJ_NDBL];
static char bj_out[BJ_NDBL * 26];
static size_t bj_out_len;

static void bj_make_doubles(void)
{
    uint64_t r = 42;
    for (int i = 0; i < BJ_NDBL; i++) {
        r ^= r >> 12; r ^= r << 25; r ^= r >> 27;
        uint64_t x = r * 0x2545F4914F6CDD1Dull;
        if (i & 1) { /* coordinates as in canada.json */
            bj_dbl[i] = -141.0 + (double)(x >> 11) / 9007199254740992.0 * 100.0;
        } else { /* any finite double */
            double d;
            memcpy(&d, &x, sizeof d);
            bj_dbl[i] = isfinite(d) ? d : (double)(x >> 11);
        }
    }
}

static long bj_write_pgpipe(void)
{
    char *o = bj_out;
#ifdef PGPIPE_JSON_DOUBLE_BUF
    for (int i = 0; i < BJ_NDBL; i++) {
        o += pgpipe_json_write_double(o, bj_dbl[i]);
        *o++ = ',';
    }
#endif
    bj_out_len = (size_t)(o - bj_out);
    return (long)bj_out_len;
}

static long bj_write_g17(void)
{
    char *o = bj_out;
    for (int i = 0; i < BJ_NDBL; i++) {
        o += snprintf(o, 26, "%.17g", bj_dbl[i]);
        *o++ = ',';
    }
    bj_out_len = (size_t)(o - bj_out);
    return (long)bj_out_len;
}

/* what cJSON and many C libraries do: %.15g, and %.17g when that does not
** read back */
static long bj_write_g15_17(void)
{
    char *o = bj_out;
    for (int i = 0; i < BJ_NDBL; i++) {
        int n = snprintf(o, 26, "%.15g", bj_dbl[i]);
        if (strtod(o, NULL) != bj_dbl[i])
            n = snprintf(o, 26, "%.17g", bj_dbl[i]);
        o += n;
        *o++ = ',';
    }
    bj_out_len = (size_t)(o - bj_out);
    return (long)bj_out_len;
}

/* a canada.json-like file: GeoJSON polygons, coordinates with 15 to 17
** significant digits, from a fixed seed */
static int bj_gen_canada(const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 1;
    }
    uint64_t r = 20260101;
#define BJ_NEXT() (r ^= r >> 12, r ^= r << 25, r ^= r >> 27, r * 0x2545F4914F6CDD1Dull)
    fputs("{\"type\":\"FeatureCollection\",\"features\":[{\"type\":\"Feature\",\"properties\":"
          "{\"name\":\"Canada\"},\"geometry\":{\"type\":\"Polygon\",\"coordinates\":[", f);
    long total = 0;
    for (int ring = 0; total < 2200000; ring++) {
        fputs(ring ? ",[" : "[", f);
        int pts = 50 + (int)(BJ_NEXT() % 2000);
        double lon = -141.0 + (double)(BJ_NEXT() >> 11) / 9007199254740992.0 * 89.0;
        double lat = 41.0 + (double)(BJ_NEXT() >> 11) / 9007199254740992.0 * 42.0;
        for (int i = 0; i < pts; i++) {
            lon += ((double)(BJ_NEXT() >> 11) / 9007199254740992.0 - 0.5) * 0.01;
            lat += ((double)(BJ_NEXT() >> 11) / 9007199254740992.0 - 0.5) * 0.01;
            int p1 = 15 + (int)(BJ_NEXT() % 3), p2 = 15 + (int)(BJ_NEXT() % 3);
            int n = fprintf(f, "%s[%.*g,%.*g]", i ? "," : "", p1, lon, p2, lat);
            total += n;
        }
        fputc(']', f);
    }
    fputs("]}}]}\n", f);
#undef BJ_NEXT
    return fclose(f) ? 1 : 0;
}

/* ---- peers, line by line for NDJSON ---- */
typedef long (*bj_one)(const char *p, size_t n);

static long bj_each(bj_one one)
{
    if (!bj_ndjson)
        return one(bj_buf, bj_len);
    long n = 0;
    const char *p = bj_buf, *e = bj_buf + bj_len;
    while (p < e) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        if (!nl)
            nl = e;
        if (nl > p)
            n += one(p, (size_t)(nl - p));
        p = nl + 1;
    }
    return n;
}

#ifdef BJ_PEER_CJSON
static long bj_cjson_one(const char *p, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(p, n);
    if (!j) {
        fprintf(stderr, "cJSON failed\n");
        exit(1);
    }
    long r = cJSON_GetArraySize(j);
    cJSON_Delete(j);
    return r;
}
static long bj_cjson(void) { return bj_each(bj_cjson_one); }
#endif

#ifdef BJ_PEER_JSONC

static json_tokener *bj_tok;
static long bj_jsonc_one(const char *p, size_t n)
{
    json_tokener_reset(bj_tok);
    json_object *o = json_tokener_parse_ex(bj_tok, p, (int)n);
    if (!o) {
        fprintf(stderr, "json-c failed\n");
        exit(1);
    }
    long r = json_object_get_type(o);
    json_object_put(o);
    return r;
}
static long bj_jsonc(void) { return bj_each(bj_jsonc_one); }
#endif

#ifdef BJ_PEER_JANSSON

static long bj_jansson_one(const char *p, size_t n)
{
    json_error_t err;
    json_t *j = json_loadb(p, n, 0, &err);
    if (!j) {
        fprintf(stderr, "jansson failed: %s\n", err.text);
        exit(1);
    }
    long r = (long)json_object_size(j);
    json_decref(j);
    return r;
}
static long bj_jansson(void) { return bj_each(bj_jansson_one); }
#endif

static char *bj_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int bj_stream_rss(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    pgpipe_ndjson *r;
    pgpipe_ndjson_open(&r);
    static char chunk[65536];
    long long recs = 0, bad = 0;
    double t0 = bj_now();
    size_t total = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n <= 0)
            pgpipe_ndjson_finish(r);
        else {
            pgpipe_ndjson_feed(r, chunk, (size_t)n);
            total += (size_t)n;
        }
        const pgpipe_json_val *v;
        long long line;
        int rc;
        while ((rc = pgpipe_ndjson_next(r, &v, &line)) != PGPIPE_DONE)
            rc == PGPIPE_ROW ? recs++ : bad++;
        if (n <= 0)
            break;
    }
    double t = bj_now() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("stream %lld %lld %.1f %.1f\n", recs, bad, (double)ru.ru_maxrss / 1024.0, (double)total / t / 1e6);
    pgpipe_ndjson_close(r);
    close(fd);
    return 0;
}

/* One run of one contender, for callgrind (--toggle-collect=bj_cg_once):
**   bench_json --once parse|read-all|write-pgpipe|write-17g|write-15g-17g [FILE] */
static long __attribute__((noinline)) bj_cg_once(bj_fn fn) { return fn(); }

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--stream-rss") == 0)
        return bj_stream_rss(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--gen-canada") == 0)
        return bj_gen_canada(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "--once") == 0) {
        bj_fn fn = NULL;
        if (strncmp(argv[2], "write-", 6) == 0) {
            bj_make_doubles();
            fn = strcmp(argv[2], "write-pgpipe") == 0 ? bj_write_pgpipe
               : strcmp(argv[2], "write-17g") == 0   ? bj_write_g17 : bj_write_g15_17;
        } else if (argc == 4) {
            bj_buf = bj_read(argv[3], &bj_len);
            pgpipe_json_doc_open(&bj_doc);
            fn = strcmp(argv[2], "parse") == 0 ? bj_pgpipe_parse : bj_pgpipe_read_all;
        } else {
            return 2;
        }
        long r = bj_cg_once(fn);
        printf("%ld %zu\n", r, bj_out_len ? bj_out_len : bj_len);
        return 0;
    }
    if (argc == 2 && strcmp(argv[1], "--write-doubles") == 0) {
        bj_make_doubles();
        bj_len = 0;
        bj_write_g17(); /* MB/s of %.17g's output, the same bytes for everyone */
        bj_len = bj_out_len;
        bj_case wc[3] = { { "pgpipe", "write", bj_write_pgpipe, { 0 } },
                          { "printf-17g", "write", bj_write_g17, { 0 } },
                          { "printf-15g-17g", "write", bj_write_g15_17, { 0 } } };
        bj_measure_all("doubles-200k", wc, 3);
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: bench_json FILE WORKLOAD [ndjson]\n");
        return 2;
    }
    bj_buf = bj_read(argv[1], &bj_len);
    bj_ndjson = argc > 3 && strcmp(argv[3], "ndjson") == 0;
    const char *w = argv[2];
    pgpipe_json_doc_open(&bj_doc);
    pgpipe_ndjson_open(&bj_nd);
    bj_case cs[4];
    int n = 0;
#if defined(BJ_PEER_JSONC)
    bj_tok = json_tokener_new();
    cs[n++] = (bj_case){ "json-c", "parse", bj_jsonc, { 0 } };
    bj_measure_all(w, cs, n);
    json_tokener_free(bj_tok);
#elif defined(BJ_PEER_JANSSON)
    cs[n++] = (bj_case){ "jansson", "parse", bj_jansson, { 0 } };
    bj_measure_all(w, cs, n);
#else
    cs[n++] = (bj_case){ "pgpipe", "parse", bj_pgpipe_parse, { 0 } };
    cs[n++] = (bj_case){ "pgpipe", "validate", bj_pgpipe_validate, { 0 } };
    if (!bj_ndjson)
        cs[n++] = (bj_case){ "pgpipe", "read-all", bj_pgpipe_read_all, { 0 } };
#ifdef BJ_PEER_CJSON
    cs[n++] = (bj_case){ "cjson", "parse", bj_cjson, { 0 } };
#endif
    bj_measure_all(w, cs, n);
#endif
    pgpipe_json_doc_close(bj_doc);
    pgpipe_ndjson_close(bj_nd);
    free(bj_buf);
    return 0;
}
