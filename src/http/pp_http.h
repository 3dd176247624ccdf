/*
** The HTTP layer's private header: the ingest server (webhooks and API
** pushes into staging). Layer order and rules: src/base/pp_base.h.
**
**   http_proto   the HTTP/1.1 request parser (incremental, strict: limits,
**                smuggling, chunked bodies) and the response writer
**   http_auth    tokens (stored hashed), HMAC-SHA256 signatures (GitHub,
**                Stripe, Standard Webhooks), trusted proxies
**   http_ingest  request bodies into records, group commit into staging,
**                idempotency keys, dead letters, backpressure
**   http         the server: sockets, event loop, timeouts, routing,
**                /healthz /readyz /metrics, access log, drain; the public API
**
** @components http_proto http_auth http_ingest http
*/
#ifndef PP_HTTP_H
#define PP_HTTP_H
#include "../spool/pp_spool.h"

#ifndef PGPIPE_OMIT_HTTP

/* ==== A request, as the parser hands it over (http_proto.c) ==============
** Every pointer points into the connection's buffers and stays valid until
** the router returns (copy what outlives it). */
typedef struct pp_http_header {
    const char *name;   /* as sent; compare with strncasecmp */
    size_t name_len;
    const char *value;  /* leading/trailing blanks trimmed */
    size_t value_len;
} pp_http_header;

enum { PP_HTTP_GET = 1, PP_HTTP_HEAD, PP_HTTP_POST, PP_HTTP_PUT, PP_HTTP_DELETE,
       PP_HTTP_OPTIONS, PP_HTTP_OTHER };

#define PP_HTTP_MAX_HEADERS 100
/* the largest max_header_bytes: each connection may buffer that much */
#define PP_HTTP_MAX_HEADER_CAP (1 << 20)

typedef struct pp_http_request {
    int method;                 /* PP_HTTP_* */
    const char *target;         /* request target as sent (path?query) */
    size_t target_len;
    const char *path;           /* percent-decoding is the router's */
    size_t path_len;
    const char *query;          /* after '?', or NULL */
    size_t query_len;
    int minor;                  /* HTTP/1.<minor> */
    int keep_alive;             /* the connection stays open after the answer */
    pp_http_header headers[PP_HTTP_MAX_HEADERS];
    int nheaders;
    const char *body;           /* the whole body, chunked encoding removed */
    size_t body_len;
    char id[37];                /* request id (UUIDv7), answered as X-Request-Id */
    char peer[64];              /* client address (X-Forwarded-For when trusted) */
    int64_t t_start_us;         /* pgpipe_now_us() when its first byte arrived */
} pp_http_request;

/* The request parser: strict HTTP/1.1 (and 1.0) over a connection's buffer,
** incremental, no allocation. Call pp_http_parse with the buffer holding the
** request from its first byte (buf may be a new copy between calls, len only
** grows); it returns
**   PP_HTTP_MORE   read more bytes and call again
**   PP_HTTP_GOT_HEAD  the head is complete and valid, the body is still to come
**                  (rq's head fields are set; expect_continue says whether the
**                  client waits for "100 Continue"); call again
**   PP_HTTP_DONE   the request is complete: rq filled, body decoded in place
**                  (chunked framing removed), consumed = its bytes in buf (a
**                  pipelined request may follow); init again for the next
**   PP_HTTP_ERROR  status (400, 413, 417, 431, 501, 505) and why (static
**                  text); answer it and close the connection
** Refused with 400: Content-Length with Transfer-Encoding, duplicate or
** malformed lengths, a Transfer-Encoding other than "chunked", obsolete line
** folding, bare CR or LF, blanks before a colon, control characters, names
** outside RFC 9110 tchar, bad chunk framing, a missing, repeated or malformed
** Host, a target with a fragment or bytes other than visible ASCII. The
** request line is judged as soon as it ends (a line without an HTTP version,
** HTTP/0.9, does not wait for headers), its method as soon as its first
** bytes are in: a method other than RFC 9110's and PATCH is 501 (OTHER
** stands for PATCH, TRACE and CONNECT). HTTP/2 and HTTP/3 in a request line
** are 505; HTTP/1.2 and later 1.x are served as 1.1 (RFC 9110 6.2).
** The request target is origin-form ("/path?query") or absolute-form
** ("http://authority/path?query", RFC 9112 3.2.2; https too): then rq's path
** and query are the part after the authority ("/" when none), and the
** authority stands for Host (which an HTTP/1.1 request still sends once). */
enum { PP_HTTP_ERROR = -1, PP_HTTP_MORE = 0, PP_HTTP_GOT_HEAD = 1, PP_HTTP_DONE = 2 };
typedef struct pp_http_parser {
    size_t max_header_bytes;    /* request line + headers (431 beyond) */
    size_t max_body_bytes;      /* decoded body (413 beyond) */
    int state;
    int chunked;
    int expect_continue;        /* Expect: 100-continue on an HTTP/1.1 request */
    int length_given;           /* Content-Length or Transfer-Encoding was sent (a
                                   POST without either is 411 for the router) */
    int status;                 /* PP_HTTP_ERROR: the answer's status */
    const char *why;            /* PP_HTTP_ERROR: what is wrong */
    size_t scan;                /* head: where the next unterminated line starts */
    size_t head_len;            /* bytes of the head, final CRLF included */
    size_t pos;                 /* body: the next raw byte */
    size_t body_len;            /* body: decoded bytes so far */
    uint64_t left;              /* bytes of the body or of the chunk still to come */
    size_t trailer_bytes;
    size_t consumed;            /* PP_HTTP_DONE: bytes of buf the request used */
} pp_http_parser;
PGPIPE_PRIVATE void pp_http_parser_init(pp_http_parser *p, size_t max_header_bytes,
                                        size_t max_body_bytes);
PGPIPE_PRIVATE int pp_http_parse(pp_http_parser *p, char *buf, size_t len, pp_http_request *rq);

/* The value of header name (case-insensitive), or NULL; *len its length. */
PGPIPE_PRIVATE const char *pp_http_header_get(const pp_http_request *rq, const char *name,
                                              size_t *len);

/* ==== An answer ============================================================
** The router (or ingest, later, from a committer thread) fills one; the
** server writes it. body is owned by the reply (pp_malloc'd, freed by the
** server). */
typedef struct pp_http_reply {
    int status;                 /* 202, 400, 401, 403, 404, 413, 429, 503, ... */
    const char *content_type;   /* static string; "application/json" */
    char *body;
    size_t body_len;
    int retry_after;            /* > 0: a Retry-After header (seconds) */
    long long spooled;          /* > 0: the records went to the spool (access log) */
    int replayed;               /* the stored answer to an idempotency key seen
                                   before: an Idempotent-Replayed: true header */
    int close;                  /* close the connection after it */
    const char *www_authenticate; /* static string: a WWW-Authenticate header
                                     (401 for a bearer token, RFC 6750), or NULL */
} pp_http_reply;

/* A reply with a JSON error body {"error":{"status":..,"code":"..","message":"..",
** "request_id":".."}}; PGPIPE_OK or PGPIPE_NOMEM. */
PGPIPE_PRIVATE int pp_http_reply_error(pp_http_reply *r, int status, const char *code,
                                       const char *request_id, const char *fmt, ...)
    PP_PRINTF(5, 6);
PGPIPE_PRIVATE void pp_http_reply_free(pp_http_reply *r);

struct pgpipe_http;

/* ==== Auth (http_auth.c) =================================================== */
typedef struct pp_http_auth pp_http_auth;
/* Sources and tokens of the server; tokens are read from pgpipe.http_tokens
** with conn (only the SHA-256 of each is kept). */
PGPIPE_PRIVATE int pp_http_auth_open(pp_http_auth **out, const pgpipe_http_options *o,
                                     PGconn *conn, pgpipe_error *err);
PGPIPE_PRIVATE int pp_http_auth_reload(pp_http_auth *a, PGconn *conn, pgpipe_error *err);
/* The statement that reads the tokens, for a reload that sends it itself
** (the server's event loop, without blocking), and the tokens of its
** result r (PQcleared here), replacing those in force when they are read. */
PGPIPE_PRIVATE const char *pp_http_auth_tokens_sql(void);
PGPIPE_PRIVATE int pp_http_auth_reload_result(pp_http_auth *a, PGresult *r, pgpipe_error *err);
/* May this request write to source? 0 = yes; else the status (401/403) with
** *deny filled. now is the Unix time for signed timestamps. */
PGPIPE_PRIVATE int pp_http_auth_check(pp_http_auth *a, const char *source,
                                      const pp_http_request *rq, time_t now,
                                      pp_http_reply *deny);
/* The settings of source (the "*" entry or the defaults when not listed). */
PGPIPE_PRIVATE const pgpipe_http_source *pp_http_auth_source(const pp_http_auth *a,
                                                             const char *source);
/* Is s[0..n) a source name (pgpipe_http_source_valid for a counted string)? */
PGPIPE_PRIVATE int pp_http_source_ok(const char *s, size_t n);
/* Does any token exist (tokens required unless told otherwise)? */
PGPIPE_PRIVATE int pp_http_auth_has_tokens(const pp_http_auth *a);
/* Is addr (text) one of the trusted proxies? */
PGPIPE_PRIVATE int pp_http_auth_trusted_proxy(const pp_http_auth *a, const char *addr);
PGPIPE_PRIVATE void pp_http_auth_close(pp_http_auth *a);
/* HMAC-SHA256 (RFC 2104) and a compare that takes the same time for any
** contents of equal-length inputs. */
PGPIPE_PRIVATE void pp_hmac_sha256(const void *key, size_t key_len, const void *msg,
                                   size_t msg_len, unsigned char out[32]);
PGPIPE_PRIVATE int pp_ct_equal(const void *a, const void *b, size_t n);

/* ==== Ingest (http_ingest.c) =============================================== */
typedef struct pp_ingest pp_ingest;
/* Called by ingest from a committer thread when a queued request's group has
** committed (or failed): the server writes reply to the connection the
** ticket names, if it is still open, and frees reply->body either way.
** Thread-safe; wakes the event loop. */
typedef void (*pp_ingest_done_fn)(struct pgpipe_http *h, uint64_t ticket, pp_http_reply *reply);

PGPIPE_PRIVATE int pp_ingest_open(pp_ingest **out, const pgpipe_http_options *o,
                                  pp_http_auth *auth, struct pgpipe_http *h,
                                  pp_ingest_done_fn done, pgpipe_error *err);
/* Take POST /v1/events/{source} (auth already passed). Returns 1 when it
** answered at once (*now filled: 400, 413, 503 ...; or a stored answer for a
** repeated idempotency key that is already committed) or 0 when the request
** is queued for the next group: done(h, ticket, reply) follows. Runs on the
** event loop's thread; never blocks on the database. */
PGPIPE_PRIVATE int pp_ingest_submit(pp_ingest *ig, const pp_http_request *rq,
                                    const char *source, uint64_t ticket, pp_http_reply *now);
/* The checks of POST /v1/events/{source} that its head decides, for an
** Expect: 100-continue head before its body is read (body_len: its
** Content-Length, 0 when chunked): the database or the spool, the
** Content-Type, the idempotency key's syntax, the device headers, the
** memory budget. 0 = go on (100 Continue); 1 = *now is the final answer. */
PGPIPE_PRIVATE int pp_ingest_head(pp_ingest *ig, const pp_http_request *rq, const char *source,
                                  size_t body_len, pp_http_reply *now);
/* Can records be committed now (database reachable, and room in the memory
** budget for the smallest request, the admission's rule)? 1 = ready; else 0
** with a reason for /readyz. */
PGPIPE_PRIVATE int pp_ingest_ready(pp_ingest *ig, char *why, size_t size);
/* Append ingest's metrics (Prometheus text) to b. */
PGPIPE_PRIVATE int pp_ingest_metrics(pp_ingest *ig, pp_buf *b);
#ifndef PGPIPE_OMIT_SPOOL
/* The server's own spool (options.spool): 1 and *st filled, else 0. */
PGPIPE_PRIVATE int pp_ingest_spool_stats(pp_ingest *ig, pgpipe_spool_status *st);
#endif
/* Requests queued or committing (for metrics and the drain). */
PGPIPE_PRIVATE long long pp_ingest_pending(pp_ingest *ig);
/* Commit what is queued now and wait until every queued request has been
** answered through done (graceful drain). */
PGPIPE_PRIVATE void pp_ingest_drain(pp_ingest *ig);
PGPIPE_PRIVATE void pp_ingest_close(pp_ingest *ig);

#endif /* PGPIPE_OMIT_HTTP */
#endif /* PP_HTTP_H */
