/*
** The base layer's private header: what every component may use (system
** headers, compiler macros, handles, memory, errors, logging, buffers).
**
** Layers, lowest first: base -> parse -> db -> pipeline. Each layer has one
** private header, src/LAYER/pp_LAYER.h, that includes the one below it; a
** source file includes only its own layer's header (test/sh/layers.sh checks
** both rules, and that every src/ file compiles alone against them).
**
** Internal functions shared between files are declared here with
** PGPIPE_PRIVATE. The amalgamation (tool/amalgamate.sh) defines
** PGPIPE_AMALGAMATION, which makes them static, so nothing but pgpipe_* is
** exported; compiled one file at a time they are ordinary external functions.
** Internal names carry the pp_ prefix (or their component's prefix).
**
** The "@components" line of each layer header lists the layer's components
** in data-flow order; pgpipe.h shows their public headers in that order.
**
** @components util exec
*/
#ifndef PP_BASE_H
#define PP_BASE_H
#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200809L
#undef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "pgpipe.h"
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

#ifdef PGPIPE_AMALGAMATION
#define PGPIPE_PRIVATE static PP_UNUSED
#else
#define PGPIPE_PRIVATE extern
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

PGPIPE_PRIVATE void pp_handle_init(pp_handle *h);

/* Allocator (util.c). */
PGPIPE_PRIVATE void *pp_malloc(size_t n);
PGPIPE_PRIVATE void *pp_calloc(size_t count, size_t size);
PGPIPE_PRIVATE void *pp_realloc(void *p, size_t n);
PGPIPE_PRIVATE void pp_free(void *p);
PGPIPE_PRIVATE char *pp_strdup(const char *s);
PGPIPE_PRIVATE char *pp_strndup(const char *s, size_t n);

/* Errors (util.c). Each returns the code it set, so callers can write
** `return pp_err(&h->err, PGPIPE_MISUSE, "...")`. */
PGPIPE_PRIVATE int pp_err(pgpipe_error *e, int code, const char *fmt, ...) PP_PRINTF(3, 4);
PGPIPE_PRIVATE int pp_err_at(pgpipe_error *e, int code, const char *source,
                     long long line, long long column, long long offset,
                     const char *fmt, ...) PP_PRINTF(7, 8);
/* Take the message and SQLSTATE of a failed libpq call (res may be NULL). */
PGPIPE_PRIVATE int pp_err_pq(pgpipe_error *e, const PGconn *conn, const PGresult *res,
                     const char *context);
PGPIPE_PRIVATE int pp_err_nomem(pgpipe_error *e);

/* Logging helpers (util.c). */
PGPIPE_PRIVATE int pp_log_enabled(int level);
PGPIPE_PRIVATE void pp_logf(int level, const char *component, const char *fmt, ...) PP_PRINTF(3, 4);

/* A growable byte buffer. */
typedef struct pp_buf {
    char *data;
    size_t len;
    size_t cap;
} pp_buf;
PGPIPE_PRIVATE int pp_buf_reserve(pp_buf *b, size_t extra);
PGPIPE_PRIVATE int pp_buf_append(pp_buf *b, const void *data, size_t n);
PGPIPE_PRIVATE int pp_buf_appendf(pp_buf *b, const char *fmt, ...) PP_PRINTF(2, 3);
PGPIPE_PRIVATE void pp_buf_free(pp_buf *b);

static inline PP_UNUSED int pp_buf_putc(pp_buf *b, char c)
{
    if (PP_UNLIKELY(b->len + 1 > b->cap) && pp_buf_reserve(b, 1) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    b->data[b->len++] = c;
    return PGPIPE_OK;
}

/* 64-bit FNV-1a of a string (statement names, cache keys; not for security). */
PGPIPE_PRIVATE uint64_t pp_hash64(const char *s);

/* Random numbers for jitter and UUIDs: xorshift64*, seeded per caller. */
PGPIPE_PRIVATE uint64_t pp_rand_next(uint64_t *state);
PGPIPE_PRIVATE uint64_t pp_rand_seed(void);

/* The files of sql/, compiled in by tool/amalgamate.sh (src/base/util.c reads
** them): path relative to sql/ and the text as lines; ends with {NULL, NULL}. */
typedef struct pp_sql_entry {
    const char *path;
    const char *const *lines;
} pp_sql_entry;
#ifndef PGPIPE_AMALGAMATION
extern const pp_sql_entry pp_sql_files[];
#endif

/* ==== exec: running statements, classifying failures (src/base/exec.c) ==== */

/* Each runs one statement and checks its result: success (COMMAND_OK,
** TUPLES_OK or EMPTY_QUERY) returns PGPIPE_OK and hands the result to *res
** (the caller clears it) or clears it when res is NULL; a failure sets err
** ("context: message" and the SQLSTATE, 08006 when the connection broke, as
** pp_err_pq does), clears the result, sets *res to NULL and returns
** PGPIPE_DB. Whether to retry is then pgpipe_sqlstate_class(err->sqlstate).
** err may be NULL (cleanup statements). */
/* sql with parameters (PQexecParams), or, when nparams is 0 and params NULL,
** as simple query text (PQexec: several statements allowed). */
PGPIPE_PRIVATE int pp_exec(PGconn *conn, const char *sql, int nparams,
                           const char *const *params, PGresult **res, pgpipe_error *err,
                           const char *context);
/* A statement prepared on conn, text parameters, text results. */
PGPIPE_PRIVATE int pp_exec_prepared(PGconn *conn, const char *name, int nparams,
                                    const char *const *params, PGresult **res,
                                    pgpipe_error *err, const char *context);
/* The check alone, for a result obtained otherwise (r may be NULL). */
PGPIPE_PRIVATE int pp_exec_check(PGconn *conn, PGresult *r, PGresult **res, pgpipe_error *err,
                                 const char *context);
/* Start "COPY ... FROM STDIN": PGPIPE_OK when the server waits for the
** data, else the failure as above. */
PGPIPE_PRIVATE int pp_copy_in_start(PGconn *conn, const char *sql, pgpipe_error *err,
                                    const char *context);
/* Prepare sql as name (no parameter types); "already prepared" (42P05)
** counts as success, since callers name statements by a hash of the text. */
PGPIPE_PRIVATE int pp_prepare(PGconn *conn, const char *name, const char *sql,
                              pgpipe_error *err, const char *context);
/* After a failure: roll back the transaction conn has open, if any, and
** ignore the outcome (the failure already set the error that matters). */
PGPIPE_PRIVATE void pp_rollback_open(PGconn *conn);

/* A failed connection attempt (no SQLSTATE): PGPIPE_SQLSTATE_GIVE_UP for a
** failure retrying cannot fix (authentication, unknown database or role,
** bad option), PGPIPE_SQLSTATE_RETRY for a server starting, stopping or
** refusing, PP_CONNECT_UNKNOWN otherwise (the caller's policy decides). */
#define PP_CONNECT_UNKNOWN (-1)
PGPIPE_PRIVATE int pp_connect_failure_class(const PGconn *pg);

/* A libpq notice processor that sends server notices to the log at INFO
** under the component named by arg (a const char *), not to stderr. */
PGPIPE_PRIVATE void pp_notice_to_log(void *arg, const char *message);

#endif /* PP_BASE_H */
