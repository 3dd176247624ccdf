/*
** The base layer's private header: what every component may use (system
** headers, compiler macros, handles, memory, errors, logging, buffers, and
** the text layer: escaping, quoting, UTF-8, UUIDs, SHA-256).
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
** @components util text exec copyrow
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
#include <stdatomic.h>

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

/* PGPIPE_SMALL: a build for size (on by default at -Os, the device builds;
** -DPGPIPE_SMALL=0 or 1 overrides). It leaves out code that exists only for
** speed: the SIMD and SWAR scans of the JSON and CSV parsers (their plain
** loops do the same), the CSV fast path, the JSON scanner's forced inlining,
** binary COPY rows and JSON sent in jsonb's member order (COPY text as the
** JSON came: the server's jsonb input sorts it). Results are identical; test/sh/small.sh runs the parser tests built so. */
#ifndef PGPIPE_SMALL
#ifdef __OPTIMIZE_SIZE__
#define PGPIPE_SMALL 1
#else
#define PGPIPE_SMALL 0
#endif
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
/* The first step of every pgpipe_X_open: a zeroed handle of size bytes (its
** struct starts with a pp_handle), header initialised; NULL when out of
** memory. The open stores it in *out at once, so a failed open still hands
** back a handle whose error can be read. */
PGPIPE_PRIVATE void *pp_handle_new(size_t size);

/* Allocator (util.c). */
PGPIPE_PRIVATE void *pp_malloc(size_t n);
PGPIPE_PRIVATE void *pp_calloc(size_t count, size_t size);
PGPIPE_PRIVATE void *pp_realloc(void *p, size_t n);
PGPIPE_PRIVATE void pp_free(void *p);
PGPIPE_PRIVATE char *pp_strdup(const char *s);
/* The index of the first of n option values that is "" (given, but empty),
** or -1. An empty value is never "any" or the default: a script's unset
** variable must not widen a purge or pick another pipeline's slot. */
PGPIPE_PRIVATE int pp_first_empty(const char *const *vals, int n);
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

/* A hex digit's value (either case), -1 for any other byte. */
static inline PP_UNUSED int pp_hex_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static inline PP_UNUSED int pp_buf_putc(pp_buf *b, char c)
{
    if (PP_UNLIKELY(b->len + 1 > b->cap) && pp_buf_reserve(b, 1) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    b->data[b->len++] = c;
    return PGPIPE_OK;
}

/* ---- Text (src/base/text.c): the one place for each escape, check and
** generator. ---- */

/* Append s[0..n) in COPY text format: backslash, tab, LF and CR become \\,
** \t, \n and \r (s may be NULL when n is 0). */
PGPIPE_PRIVATE int pp_copy_escape(pp_buf *b, const char *s, size_t n);
/* A COPY field: NULL is \N, anything else is escaped. */
static inline PP_UNUSED int pp_copy_field(pp_buf *b, const char *s, size_t n)
{
    return s ? pp_copy_escape(b, s, n) : pp_buf_append(b, "\\N", 2);
}
/* The public pgpipe_copy_buf is a pp_buf in the caller's hands: borrow it
** as one, and give it back. */
static inline PP_UNUSED pp_buf pp_buf_of_copy(const pgpipe_copy_buf *o)
{
    pp_buf b = { o->data, o->len, o->cap };
    return b;
}
static inline PP_UNUSED void pp_copy_of_buf(pgpipe_copy_buf *o, const pp_buf *b)
{
    o->data = b->data;
    o->len = b->len;
    o->cap = b->cap;
}

/* JSON string escaping: '"', '\\' and control bytes (\b \f \n \r \t short,
** the rest \u00XX); other bytes, UTF-8 included, stand as they are. With
** PP_JSON_COPY each backslash written is doubled, which is the COPY text
** escape of the JSON text (the JSON escape leaves no tab, LF or CR). */
#define PP_JSON_COPY 1
/* Write the escape of s[0..n) (no quotes) to dst, at most cap bytes (dst may
** be NULL when cap is 0); returns the full length, so a result above cap
** means it was cut. */
PGPIPE_PRIVATE size_t pp_json_escape(char *dst, size_t cap, const char *s, size_t n, int flags);
/* Append s[0..n) as a JSON string literal "..." to b. */
PGPIPE_PRIVATE int pp_json_str(pp_buf *b, const char *s, size_t n, int flags);
/* Append the JSON text s[0..n) with each object's members in the order jsonb
** keeps them (shorter keys first, then bytewise; of equal keys the last still
** wins) and no whitespace between tokens, so jsonb input has nothing to sort.
** Meant for text already validated: an object with a key that holds an
** escape or with more than 32 members keeps its order, values deeper than 16
** levels are copied as they are, text that is not JSON is copied whole. */
PGPIPE_PRIVATE int pp_jsonb_order(pp_buf *o, const char *s, size_t n);
/* The same with tmp, a buffer the caller reuses (no allocation per call). */
PGPIPE_PRIVATE int pp_jsonb_order_buf(pp_buf *o, pp_buf *tmp, const char *s, size_t n);
/* The same, COPY-escaped onto b (scratch: two buffers the caller reuses). */
PGPIPE_PRIVATE int pp_copy_jsonb(pp_buf *b, pp_buf scratch[2], const char *s, size_t n);

/* UTF-8 by Unicode table 3-7 (no overlongs, no surrogates, nothing above
** U+10FFFF). pp_utf8_problem: NULL and *len = the length of the valid
** sequence at p (avail bytes readable), or a printf format with one
** unsigned argument (p[0]) that says what is wrong. Inline so that the JSON
** parser's error path stays a leaf function (its hot caller then saves no
** registers). */
static inline PP_UNUSED const char *pp_utf8_problem(const unsigned char *p, size_t avail,
                                                    size_t *len)
{
    unsigned b0 = p[0];
    size_t need = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
    *len = 0;
    if (b0 < 0x80) {
        *len = 1;
        return NULL;
    }
    if (b0 < 0xC0)
        return "invalid UTF-8 in string: unexpected continuation byte 0x%02X";
    if (b0 < 0xC2)
        return "invalid UTF-8 in string: overlong 2-byte encoding (lead byte 0x%02X)";
    if (b0 >= 0xF8)
        return "invalid UTF-8 in string: byte 0x%02X never appears in UTF-8";
    if (b0 >= 0xF5)
        return "invalid UTF-8 in string: lead byte 0x%02X encodes a code point above U+10FFFF";
    for (size_t i = 1; i < need; i++)
        if (i >= avail || (p[i] & 0xC0) != 0x80)
            return "invalid UTF-8 in string: truncated multi-byte sequence (lead byte 0x%02X)";
    unsigned b1 = p[1];
    if (b0 == 0xE0 && b1 < 0xA0)
        return "invalid UTF-8 in string: overlong 3-byte encoding (lead byte 0x%02X)";
    if (b0 == 0xED && b1 >= 0xA0)
        return "invalid UTF-8 in string: UTF-16 surrogate encoded in UTF-8 (lead byte 0x%02X)";
    if (b0 == 0xF0 && b1 < 0x90)
        return "invalid UTF-8 in string: overlong 4-byte encoding (lead byte 0x%02X)";
    if (b0 == 0xF4 && b1 >= 0x90)
        return "invalid UTF-8 in string: code point above U+10FFFF (lead byte 0x%02X)";
    *len = need;
    return NULL;
}

/* The fast paths of both, for p[0] >= 0x80 with avail bytes readable: 1
** when p starts a 3-byte sequence that needs no check beyond its bytes'
** shapes (leads E0 and ED restrict their second byte and are left out), or
** any valid 2-byte one; otherwise callers ask pp_utf8_problem. */
static inline PP_UNUSED int pp_utf8_is3(const unsigned char *p, size_t avail)
{
    return avail >= 3 && (p[0] & 0xF0) == 0xE0 && (p[1] & 0xC0) == 0x80 &&
           (p[2] & 0xC0) == 0x80 && p[0] != 0xE0 && p[0] != 0xED;
}
static inline PP_UNUSED int pp_utf8_is2(const unsigned char *p, size_t avail)
{
    return avail >= 2 && p[0] - 0xC2u < 30u && (p[1] & 0xC0) == 0x80;
}
/* The length of the longest prefix of s[0..n) that is valid UTF-8 without a
** NUL byte (text PostgreSQL accepts); n when all of it is. */
PGPIPE_PRIVATE size_t pp_utf8_text_prefix(const unsigned char *s, size_t n);

/* Random bytes from /dev/urandom, buffered for the process (fork-safe).
** UUIDs as 36 characters and a NUL: version 4 (random), and version 7
** (Unix ms time, then a counter that starts random each millisecond, so
** ids of one process sort in the order they were made). Failure behaviour,
** the same for all three: when /dev/urandom cannot be read they return
** PGPIPE_IO with errno set and write nothing; they never fall back to a
** weaker generator. */
PGPIPE_PRIVATE int pp_random_bytes(void *out, size_t n);
PGPIPE_PRIVATE int pp_uuid_v4(char out[37]);
PGPIPE_PRIVATE int pp_uuid_v7(char out[37]);

/* Append s[0..n) as a quoted SQL identifier ("" for each "). */
PGPIPE_PRIVATE int pp_quote_ident(pp_buf *b, const char *s, size_t n);
/* Append a dotted name ("schema.table", "table", any number of parts) with
** every part quoted; a part already in double quotes is kept as it is
** written. PGPIPE_MISUSE for an empty name or text after a quoted part. */
PGPIPE_PRIVATE int pp_quote_path(pp_buf *b, const char *name);

/* Append s[0..n) as a double-quoted element of an array literal ({"a","b"}):
** '"' and '\\' get a backslash. */
PGPIPE_PRIVATE int pp_array_elem(pp_buf *b, const char *s, size_t n);

/* SHA-256, streaming (pgpipe_sha256_hex does it in one call). */
typedef struct pp_sha256 {
    uint32_t h[8];
    uint64_t total;
    unsigned char block[64];
    size_t fill;
} pp_sha256;
PGPIPE_PRIVATE void pp_sha256_init(pp_sha256 *s);
PGPIPE_PRIVATE void pp_sha256_update(pp_sha256 *s, const void *data, size_t n);
/* Finish: 64 lowercase hex digits and a NUL; or the 32 bytes of the digest. */
PGPIPE_PRIVATE void pp_sha256_hex(pp_sha256 *s, char out[65]);
PGPIPE_PRIVATE void pp_sha256_final(pp_sha256 *s, unsigned char out[32]);

/* Base64 (RFC 4648). Encode writes like snprintf (returns the length
** without the NUL; >= cap means nothing was written): the standard alphabet
** with '=' padding, or with url set the URL-safe one without padding.
** Decode takes either alphabet, with or without the padding, and returns
** the number of bytes written, or -1 when s[0..n) is not base64 or needs
** more than cap bytes. */
PGPIPE_PRIVATE size_t pp_base64_encode(char *dst, size_t cap, const void *data, size_t n, int url);
PGPIPE_PRIVATE long pp_base64_decode(unsigned char *dst, size_t cap, const char *s, size_t n);

/* 64-bit FNV-1a of a string (statement names, cache keys; not for security). */
PGPIPE_PRIVATE uint64_t pp_hash64(const char *s);

/* Random numbers for jitter: xorshift64*, seeded per caller (not for ids). */
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

/* How pgpipe's own transactions begin (the loader's batches, the claimer's,
** the HTTP ingest's groups, CDC's and the pull's, the runner's slot claims,
** migrations): at READ COMMITTED whatever default_transaction_isolation the
** database or role sets. Their logic (SKIP LOCKED queues, a lock then a
** re-read, a bookkeeping row checked under its lock) needs each statement to
** see what committed before it; under REPEATABLE READ or SERIALIZABLE they
** fail to serialize (40001) against each other instead. */
#define PP_BEGIN "BEGIN ISOLATION LEVEL READ COMMITTED"

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
/* A time filter's value (what names it in errors: "since"): a point in
** time ("2026-11-01", "2026-11-30 08:00+01", "yesterday") or an interval
** back from now ("1 day", "2 hours", "1 day ago" alike), resolved on conn
** to timestamptz text in out (cap bytes; 64 is room). A value that is
** neither: PGPIPE_PARSE naming what and the value, the SQLSTATE kept. */
PGPIPE_PRIVATE int pp_time_arg(PGconn *conn, const char *what, const char *value, char *out,
                               size_t cap, pgpipe_error *err);
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

/* A cancel slot: the PGcancel of a connection, made while nothing can
** interrupt (pp_cancel_arm, on the connection's thread), used from a signal
** handler or another thread (pp_cancel_fire: PQcancel, async-signal-safe).
** arm waits for a fire in progress on another thread before it frees the
** handle it replaces, so fire never uses freed memory. Zeroed = unarmed. */
typedef struct pp_cancel_slot {
    _Atomic(PGcancel *) cancel;
    atomic_int busy;
} pp_cancel_slot;
/* Arm the slot with conn's cancel handle (NULL: disarm), freeing the old. */
PGPIPE_PRIVATE void pp_cancel_arm(pp_cancel_slot *s, PGconn *conn);
/* Ask the server to cancel what the slot's connection runs; 1 when a
** request was sent. Async-signal-safe. */
PGPIPE_PRIVATE int pp_cancel_fire(pp_cancel_slot *s);

/* A failed connection attempt (no SQLSTATE): PGPIPE_SQLSTATE_GIVE_UP for a
** failure retrying cannot fix (authentication, unknown database or role,
** bad option), PGPIPE_SQLSTATE_RETRY for a server starting, stopping or
** refusing, PP_CONNECT_UNKNOWN otherwise (the caller's policy decides). */
#define PP_CONNECT_UNKNOWN (-1)
PGPIPE_PRIVATE int pp_connect_failure_class(const PGconn *pg);

/* A libpq notice processor that sends server notices to the log at INFO
** under the component named by arg (a const char *), not to stderr. */
PGPIPE_PRIVATE void pp_notice_to_log(void *arg, const char *message);

/* ==== copyrow: COPY rows, text or binary (src/base/copyrow.c) ==== */

/* One writer of COPY rows for every source that stages events (the loader,
** the HTTP ingest, the pull, CDC): text rows are fields COPY-escaped with a tab
** between them and a newline after; binary rows (COPY ... (FORMAT binary),
** which the server takes without splitting and unescaping) are the field
** count in 16 bits, then each field's length in 32 bits (-1 for NULL) and its
** bytes: text as it is, jsonb as its version byte 1 and the JSON text, uuid
** as 16 bytes. A binary COPY starts with PP_COPY_BIN_HEADER (no trailer: the
** protocol's end of COPY ends it). */
typedef struct pp_copy_w {
    int binary;
    int verbatim;  /* text: JSON as it came, not in jsonb's member order (a json column) */
    int null;      /* binary: the field being written is NULL */
    size_t at;     /* binary: where its length word is */
} pp_copy_w;
/* the signature, no flags, no header extension */
#define PP_COPY_BIN_HEADER "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0"
#define PP_COPY_BIN_HEADER_LEN 19
PGPIPE_PRIVATE int pp_copy_row_begin(pp_copy_w *w, pp_buf *b, int nfields);
PGPIPE_PRIVATE int pp_copy_row_end(const pp_copy_w *w, pp_buf *b);
/* Before field i (0 first): a tab, or the length word copy_field_end fills. */
PGPIPE_PRIVATE int pp_copy_field_begin(pp_copy_w *w, pp_buf *b, int i);
PGPIPE_PRIVATE void pp_copy_field_end(const pp_copy_w *w, pp_buf *b);
/* The field's value, between begin and end (text and JSON may be appended
** in pieces; raw bytes that need no escape with pp_buf_append). */
PGPIPE_PRIVATE int pp_copy_put_null(pp_copy_w *w, pp_buf *b);
PGPIPE_PRIVATE int pp_copy_put_text(const pp_copy_w *w, pp_buf *b, const char *s, size_t n);
/* Validated JSON text s[0..n) as jsonb, in jsonb's member order (as it came
** when w->verbatim). */
PGPIPE_PRIVATE int pp_copy_put_jsonb(const pp_copy_w *w, pp_buf *b, pp_buf scratch[2],
                                     const char *s, size_t n);
/* A uuid: text is its 36 characters, bin its 16 bytes. */
PGPIPE_PRIVATE int pp_copy_put_uuid(const pp_copy_w *w, pp_buf *b, const char *text,
                                    const unsigned char *bin);
/* A whole text field (begin, text, end). */
PGPIPE_PRIVATE int pp_copy_text_field(pp_copy_w *w, pp_buf *b, int i, const char *s, size_t n);
/* 36 characters of uuid text into 16 bytes; -1 when it is not one. */
PGPIPE_PRIVATE int pp_uuid_bin(const char *text, unsigned char bin[16]);
/* How rows of the staging mapping (source, event_type, payload, batch_id)
** go into table (quoted SQL name) on conn: PP_COPY_BINARY when those four
** columns are still text, text, jsonb and uuid; PP_COPY_VERBATIM (text rows,
** the JSON as it came) when payload is not jsonb (a json column keeps its
** member order); else PP_COPY_TEXT, also when the server refuses the
** question (a role that may not read pg_attribute) or conn is inside a
** transaction (a refusal would abort it). PGPIPE_COPY_FORMAT=text in the
** environment rules binary out. One round trip (none in the size build). */
#define PP_COPY_TEXT     0
#define PP_COPY_BINARY   1
#define PP_COPY_VERBATIM 2
PGPIPE_PRIVATE int pp_copy_staging_format(PGconn *conn, const char *table);
/* w's rows in format fmt (a PP_COPY_* above). */
PGPIPE_PRIVATE void pp_copy_w_format(pp_copy_w *w, int fmt);

#endif /* PP_BASE_H */
