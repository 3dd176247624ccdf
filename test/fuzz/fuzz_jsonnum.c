/*
** libFuzzer target for JSON numbers (src/parse/json_num.c), differential:
** an input that is one JSON number converts to the same bits as glibc strtod
** in the C locale, with PGPIPE_LIMIT exactly on overflow, by the path for
** its shape (integer, fraction) and by the general one; and the first 8
** bytes taken as a double are written shortest, read back to the same bits.
**   make fuzz-jsonnum SECONDS=60
*/
#define PGPIPE_OMIT_POOL 1
#define PGPIPE_OMIT_MIGRATE 1
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_DLQ 1
#include "pgpipe.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= 8) {
        double d;
        uint64_t b, b2;
        memcpy(&d, data, 8);
        char buf[PGPIPE_JSON_DOUBLE_BUF];
        int n = pgpipe_json_write_double(buf, d);
        if (isfinite(d)) {
            double back;
            if (n <= 0 || n > 24 || pgpipe_json_validate(buf, (size_t)n, NULL) != PGPIPE_OK ||
                json_num_parse(buf, (size_t)n, JSON_NUM_ANY, &back) != PGPIPE_OK)
                __builtin_trap();
            memcpy(&b, &d, 8);
            memcpy(&b2, &back, 8);
            if (b != b2)
                __builtin_trap();
        } else if (n != 0 || buf[0]) {
            __builtin_trap();
        }
    }
    /* the text: one JSON number, nothing around it */
    if (size == 0 || size > 4096)
        return 0;
    for (size_t i = 0; i < size; i++)
        if (!memchr("0123456789+-.eE", data[i], 15))
            return 0;
    if (pgpipe_json_validate((const char *)data, size, NULL) != PGPIPE_OK)
        return 0;
    char *s = malloc(size + 1);
    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    double got, want;
    int shape = JSON_NUM_INT;
    for (size_t i = 0; i < size; i++) {
        if (s[i] == 'e' || s[i] == 'E') {
            shape = JSON_NUM_ANY;
            break;
        }
        if (s[i] == '.')
            shape = JSON_NUM_FRAC;
    }
    double any;
    int rc = json_num_parse(s, size, shape, &got);
    if (json_num_parse(s, size, JSON_NUM_ANY, &any) != rc || memcmp(&any, &got, 8) != 0)
        __builtin_trap();
    errno = 0;
    want = strtod(s, NULL);
    int over = errno == ERANGE && isinf(want);
    uint64_t g, w;
    memcpy(&g, &got, 8);
    memcpy(&w, &want, 8);
    if (g != w || rc != (over ? PGPIPE_LIMIT : PGPIPE_OK))
        __builtin_trap();
    free(s);
    return 0;
}
