/*
** libFuzzer target for the record filter text parser and its SQL compiler:
** any input (up to its first NUL) either parses, or fails with PGPIPE_PARSE
** and a column inside the text; a parsed filter compiles to SQL whose length
** does not depend on the input's keys and values (they all travel as
** parameters: at most a fixed number of bytes per condition), and whose
** parameters are as many as the highest $n it names.
*/
/* only what this target needs: each target compiles the amalgamation,
** and make test builds all of them */
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_CDC 1
#define PGPIPE_OMIT_DLQ 1
#include "pgpipe.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = '\0';
    size_t chars = 0;
    for (const char *p = text; *p; p++)
        if (((unsigned char)*p & 0xC0) != 0x80)
            chars++;
    pgpipe_records_filter *f = NULL;
    int rc = pgpipe_records_filter_open(&f, text);
    if (rc == PGPIPE_OK) {
        rec_q q;
        memset(&q, 0, sizeof q);
        rec_q_where(&q, f);
        if (q.nomem)
            __builtin_trap();
        if (q.sql.len > (size_t)f->n * 700 + 16)
            __builtin_trap(); /* input bytes reached the SQL text */
        int maxp = 0;
        for (size_t i = 0; i + 1 < q.sql.len; i++)
            if (q.sql.data[i] == '$' && isdigit((unsigned char)q.sql.data[i + 1])) {
                int v = atoi(q.sql.data + i + 1);
                if (v > maxp)
                    maxp = v;
            }
        if (maxp != q.n)
            __builtin_trap();
        rec_q_free(&q);
    } else if (rc == PGPIPE_PARSE) {
        const pgpipe_error *e = pgpipe_errinfo(f);
        if (e->column < 1 || e->column > (long long)chars + 1)
            __builtin_trap();
    } else if (rc != PGPIPE_NOMEM) {
        __builtin_trap();
    }
    pgpipe_records_filter_close(f);
    free(text);
    return 0;
}
