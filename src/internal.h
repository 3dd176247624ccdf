/*
** Private declarations shared by every component of the amalgamation. Nothing
** here is exported: every function is static, and the whole library is one
** translation unit, so a component may use the helpers of those before it.
** Internal names carry a component prefix (pp_ for these shared helpers).
*/
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/types.h>
#include <sys/stat.h>
#include <sys/time.h>
#ifndef PGPIPE_OMIT_THREADS
#include <pthread.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define PP_LIKELY(x)   __builtin_expect(!!(x), 1)
#define PP_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PP_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define PP_UNUSED __attribute__((unused))
#else
#define PP_LIKELY(x)   (x)
#define PP_UNLIKELY(x) (x)
#define PP_PRINTF(f, a)
#define PP_UNUSED
#endif

/* A mutex that disappears under PGPIPE_OMIT_THREADS. */
#ifndef PGPIPE_OMIT_THREADS
typedef pthread_mutex_t pp_mutex;
#define PP_MUTEX_INIT PTHREAD_MUTEX_INITIALIZER
#define pp_mutex_lock(m)   pthread_mutex_lock(m)
#define pp_mutex_unlock(m) pthread_mutex_unlock(m)
#else
typedef int pp_mutex;
#define PP_MUTEX_INIT 0
#define pp_mutex_lock(m)   ((void)(m))
#define pp_mutex_unlock(m) ((void)(m))
#endif

/* Every handle type starts with this header, so pgpipe_errmsg() and friends
** can read the error of any handle. */
#define PP_HANDLE_MAGIC 0x70677069u /* "pgpi" */
typedef struct pp_handle {
    uint32_t magic;
    pgpipe_error err;
} pp_handle;

static PP_UNUSED void pp_handle_init(pp_handle *h);

/* Allocator (src/util.c). */
static PP_UNUSED void *pp_malloc(size_t n);
static PP_UNUSED void *pp_calloc(size_t count, size_t size);
static PP_UNUSED void *pp_realloc(void *p, size_t n);
static PP_UNUSED void pp_free(void *p);
static PP_UNUSED char *pp_strdup(const char *s);
static PP_UNUSED char *pp_strndup(const char *s, size_t n);

/* Errors (src/util.c). Each returns the code it set, so callers can write
** `return pp_err(&h->err, PGPIPE_MISUSE, "...")`. */
static PP_UNUSED int pp_err(pgpipe_error *e, int code, const char *fmt, ...) PP_PRINTF(3, 4);
static PP_UNUSED int pp_err_at(pgpipe_error *e, int code, const char *source,
                     long long line, long long column, long long offset,
                     const char *fmt, ...) PP_PRINTF(7, 8);
/* Take the message and SQLSTATE of a failed libpq call (res may be NULL). */
static PP_UNUSED int pp_err_pq(pgpipe_error *e, const PGconn *conn, const PGresult *res,
                     const char *context);
static PP_UNUSED int pp_err_nomem(pgpipe_error *e);

/* Logging helpers (src/util.c). */
static PP_UNUSED int pp_log_enabled(int level);
static PP_UNUSED void pp_logf(int level, const char *component, const char *fmt, ...) PP_PRINTF(3, 4);

/* A growable byte buffer. */
typedef struct pp_buf {
    char *data;
    size_t len;
    size_t cap;
} pp_buf;
static PP_UNUSED int pp_buf_reserve(pp_buf *b, size_t extra);
static PP_UNUSED int pp_buf_append(pp_buf *b, const void *data, size_t n);
static PP_UNUSED int pp_buf_appendf(pp_buf *b, const char *fmt, ...) PP_PRINTF(2, 3);
static PP_UNUSED void pp_buf_free(pp_buf *b);

static inline PP_UNUSED int pp_buf_putc(pp_buf *b, char c)
{
    if (PP_UNLIKELY(b->len + 1 > b->cap) && pp_buf_reserve(b, 1) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    b->data[b->len++] = c;
    return PGPIPE_OK;
}

/* 64-bit FNV-1a of a string (statement names, cache keys; not for security). */
static PP_UNUSED uint64_t pp_hash64(const char *s);

/* Random numbers for jitter and UUIDs: xorshift64*, seeded per caller. */
static PP_UNUSED uint64_t pp_rand_next(uint64_t *state);
static PP_UNUSED uint64_t pp_rand_seed(void);
