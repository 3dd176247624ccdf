/*
** libFuzzer target for the migration statement splitter and the checksum
** normalization: any input either splits or fails with PGPIPE_PARSE naming a
** line; statements lie inside the input, in order, and never overlap.
*/
/* only what this target needs: each target compiles the amalgamation,
** and make test builds all of them */
#define PGPIPE_OMIT_POOL 1
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_CDC 1
#define PGPIPE_OMIT_DLQ 1
#include "pgpipe.c"

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    const char *buf = (const char *)d;
    pgpipe_sql_split *s = NULL;
    if (pgpipe_sql_split_open(&s, buf, n, "fuzz.sql") != PGPIPE_OK) {
        pgpipe_sql_split_close(s);
        return 0;
    }
    pgpipe_sql_stmt st;
    int rc;
    size_t end = 0;
    long long line = 1;
    int count = 0;
    while ((rc = pgpipe_sql_split_next(s, &st)) == PGPIPE_ROW) {
        if (st.offset < end || st.offset + st.len > n || st.sql != buf + st.offset ||
            st.len == 0 || st.line < line || st.index != count)
            __builtin_trap();
        if (st.copy_data && (st.copy_data < buf + st.offset + st.len ||
                             st.copy_data + st.copy_len > buf + n))
            __builtin_trap();
        end = st.copy_data ? (size_t)(st.copy_data - buf) + st.copy_len : st.offset + st.len;
        line = st.line;
        count++;
    }
    if (rc != PGPIPE_DONE && rc != PGPIPE_PARSE)
        __builtin_trap();
    if (rc == PGPIPE_PARSE && (pgpipe_errinfo(s)->line < 1 || pgpipe_errinfo(s)->source[0] == 0))
        __builtin_trap();
    /* once failed, it stays failed */
    if (rc == PGPIPE_PARSE && pgpipe_sql_split_next(s, &st) != PGPIPE_PARSE)
        __builtin_trap();
    pgpipe_sql_split_close(s);

    char a[65], b[65];
    if (pgpipe_migrate_checksum(buf, n, a) == PGPIPE_OK) {
        size_t k = 0;
        char *norm = mig_normalize(buf, n, &k);
        if (norm) {
            /* normalizing twice changes nothing */
            if (pgpipe_migrate_checksum(norm, k, b) != PGPIPE_OK || strcmp(a, b) != 0)
                __builtin_trap();
            pp_free(norm);
        }
    }
    return 0;
}
