/* ==== HTTP ingest ==== */

/* The HTTP source: a server that takes webhooks and API pushes straight into
** staging.raw_events, and answers each request only after the transaction
** holding its records has committed. Handle: pgpipe_http.
**
**     POST /v1/events/{source}    one JSON object, a JSON array, NDJSON
**                                 (application/x-ndjson) or CSV (text/csv)
**     GET  /healthz               200 while the process serves
**     GET  /readyz                200 when new records can be committed, else 503
**     GET  /metrics               Prometheus text format
**
** A request is 202 {"request_id":..,"accepted":N,"dead_lettered":N,"errors":[..]}
** once committed; records that are not valid go to pgpipe.dead_letters with
** the request's id, the others are loaded. Requests are grouped into one COPY
** transaction (group commit), so throughput does not depend on one commit per
** request. A retried request with the same idempotency key gets the first
** response again and adds nothing. A device that sends its records with
** Pgpipe-Device: ID and Pgpipe-Seq: N (the body's first record; the others
** numbered from it; Pgpipe-Spool: its spool folder's id, optional) gets
** each record committed once: the records at or below the device's
** position in pgpipe.device_positions are counted as "duplicate" and
** skipped, in the same transaction as the rest.
**
**     pgpipe_http_options o;
**     pgpipe_http_options_init(&o);
**     o.conninfo = "postgresql://app@db/prod";
**     o.listen = "127.0.0.1:8080";
**     pgpipe_http *h;
**     if (pgpipe_http_open(&h, &o) == PGPIPE_OK)
**         pgpipe_http_run(h);          // until pgpipe_http_stop (e.g. on SIGTERM)
**     else fprintf(stderr, "%s\n", pgpipe_errmsg(h));
**     pgpipe_http_close(h);
**
** Thread safety: pgpipe_http_run runs on the caller's thread (the event loop)
** plus the server's own committer threads; pgpipe_http_stop and
** pgpipe_http_reload may be called from a signal handler or any thread. */

/* How a source's senders sign their deliveries (HMAC-SHA256 over the raw body). */
#define PGPIPE_HTTP_SIG_NONE     0  /* no signature: a bearer token (if tokens are required) */
#define PGPIPE_HTTP_SIG_GITHUB   1  /* X-Hub-Signature-256: sha256=<hex> */
#define PGPIPE_HTTP_SIG_STRIPE   2  /* Stripe-Signature: t=<unix>,v1=<hex>[,v1=..] over "t.body" */
#define PGPIPE_HTTP_SIG_STANDARD 3  /* Standard Webhooks: webhook-id, webhook-timestamp,
                                       webhook-signature: v1,<base64> over "id.ts.body" */

/* Settings of one source (the {source} segment of the path). */
typedef struct pgpipe_http_source {
    const char *name;             /* the path segment; "*" = every source not listed */
    int signature;                /* PGPIPE_HTTP_SIG_*; NONE */
    const char *secret;           /* HMAC key for the signature (Standard Webhooks:
                                     "whsec_<base64>"); copied */
    int tolerance_s;              /* signed timestamp tolerance (replay window); 300 */
    int window_hours;             /* idempotency window: keys are kept at least this
                                     long; 72 */
    const char *event_type_field; /* event_type from this payload field ... */
    const char *event_type_header;/* ... else this header ... */
    const char *event_type_value; /* ... else this text ("" = NULL) */
    const char *idempotency_header; /* a delivery id header used as the key when
                                       there is no Idempotency-Key (X-GitHub-Delivery) */
    const char *idempotency_field;  /* or a payload field (single-record bodies) */
} pgpipe_http_source;

/* Pages besides the server's own, for an embedding program (the pipeline
** runner serves its status page at "/"). The page hook is called on the
** event-loop thread for a request to any path the server does not own
** (everything but /v1/events/..., /healthz, /readyz and /metrics), so it
** must not block: serve a snapshot built elsewhere. It sets out->status
** (0 or untouched: no such page, 404), out->content_type (a string that
** outlives the call) and writes the body with pgpipe_http_page_write. The
** metrics hook writes more Prometheus lines at the end of /metrics the
** same way. The server's token check does not apply to these pages: the
** hook applies its own rule to rq->authorization. */
typedef struct pgpipe_http_page_request {
    const char *method;           /* "GET", "HEAD", "POST", ... */
    const char *path;             /* without the query */
    const char *query;            /* after '?'; "" when none */
    const char *authorization;    /* the Authorization header or NULL */
    const char *content_type;     /* the Content-Type header or NULL */
    const char *body;             /* the request body (POST), body_len bytes */
    size_t body_len;
} pgpipe_http_page_request;
typedef struct pgpipe_http_page_reply {
    int status;                   /* 0: no such page */
    const char *content_type;     /* default "text/html; charset=utf-8" */
    const char *headers;          /* more header lines ("Name: v\r\n"), or NULL */
    void *priv;                   /* the server's: the body buffer */
} pgpipe_http_page_reply;
typedef void (*pgpipe_http_page_fn)(void *ud, const pgpipe_http_page_request *rq,
                                    pgpipe_http_page_reply *out);
typedef void (*pgpipe_http_metrics_fn)(void *ud, pgpipe_http_page_reply *out);
/* Append len bytes to a page's body (from a page or metrics hook only).
** PGPIPE_OK or PGPIPE_NOMEM. */
int pgpipe_http_page_write(pgpipe_http_page_reply *out, const void *data, size_t len);

typedef struct pgpipe_http_options {
    /* the database: conninfo (the server opens its own connections) */
    const char *conninfo;         /* anything libpq accepts; NULL/"" = PG* variables */
    const char *listen;           /* "HOST:PORT[,HOST:PORT..]", "[::1]:8080"; port 0
                                     picks one (pgpipe_http_port); "127.0.0.1:8080" */
    int insecure;                 /* 1: listen beyond loopback without tokens */
    const pgpipe_http_source *sources; /* per-source settings; copied */
    int nsources;
    int require_tokens;           /* -1 auto: required when any token exists for
                                     the source or the address is not loopback; 0; 1 */
    const char *trusted_proxies;  /* comma-separated addresses/CIDRs whose
                                     X-Forwarded-For is believed; NULL = none */
    /* limits */
    size_t max_header_bytes;      /* request line + headers; 16 KiB, at most 1 MiB */
    size_t max_body_bytes;        /* 8 MiB */
    int max_records;              /* per request; 10000 */
    int max_connections;          /* open at once; 4096 (fewer when the open-file
                                     limit has no room for them: a warning says so).
                                     Past it, 16 more connections each get one answer
                                     and are closed: /healthz, /readyz and /metrics
                                     are served, anything else is 503 Retry-After;
                                     the oldest of them makes room for a new one */
    int header_timeout_ms;        /* to receive the whole head; 10000 */
    int body_timeout_ms;          /* to receive the whole body; 30000 */
    int idle_timeout_ms;          /* keep-alive connection idle; 60000 */
    /* group commit */
    int group_window_ms;          /* wait at most this long to fill a group; 0: a
                                     free committer takes what has arrived, and
                                     groups form while the others commit */
    int group_records;            /* close a group at this many records; 5000 */
    int committers;               /* connections committing groups side by side; 2 */
    int commit_timeout_ms;        /* a database that does not answer a group's
                                     statements (a hung server, a pooler's queue)
                                     for this long: its connection is closed and the
                                     group's requests get 503 (outcome unknown when
                                     the COMMIT was sent: retry with the same key);
                                     /readyz is 503 while every committer waits that
                                     long; 30000 */
    size_t memory_budget;         /* bytes of accepted, uncommitted requests before
                                     503 Retry-After; 64 MiB */
    int window_hours;             /* idempotency window of unlisted sources; 72 */
    /* observability */
    int access_log;               /* 0 none, 1 one log line per request (pgpipe_log,
                                     component "http"; logfmt or JSON as configured) */
    int install_schema;           /* 1: install/upgrade the built-in schema; 1 */
    /* more pages (the pipeline runner's status page at "/"); see below */
    pgpipe_http_page_fn page;     /* NULL: none */
    pgpipe_http_metrics_fn metrics; /* more /metrics lines; NULL: none */
    void *page_ud;                /* passed to both */
    /* a spool folder (pgpipe.h, spool) whose size, records and age /metrics
    ** reports (pgpipe_spool_bytes, _records, _age_seconds); NULL: none */
    const char *spool_dir;
    /* store and forward (needs spool_dir; the server then owns the folder):
    ** when the database is unreachable, or the accepted, uncommitted
    ** requests fill the memory budget (where the answer is 503 without a
    ** spool), a request whose body is valid is appended to the spool as it
    ** came (source, headers but credentials, body) and answered 202
    ** {"request_id":..,"spooled":N}; a drainer thread sends the spooled
    ** requests through the group commit, oldest first, when the database is
    ** back, and new requests go to the spool while it holds any (order per
    ** source). Each spooled request carries the spool's device id and
    ** sequence: pgpipe.device_positions makes the drain exactly once, and
    ** an idempotency key or Pgpipe-Device/Pgpipe-Seq it came with is checked
    ** when it is drained. */
    int spool;                    /* 1: store and forward into spool_dir; 0 */
    int spool_fsync;              /* PGPIPE_SPOOL_FSYNC_*; RECORD: a 202 "spooled"
                                     survives a power loss */
    long long spool_max_bytes;    /* the spool's size limit (then 503); 0 = none */
    const char *spool_device;     /* the spool's device id; NULL = the host name */
} pgpipe_http_options;

void pgpipe_http_options_init(pgpipe_http_options *o);
/* Can name be the {source} of POST /v1/events/{source}: 1 to 64 characters
** of A-Z a-z 0-9 . _ -, other than "." and ".." (dot-segments, which
** clients and proxies remove from a path: no request could reach them)
** (PGPIPE_HTTP_SOURCE_RULE says so in words)? 1 yes,
** 0 no ("*", the settings of every other source, is not a name). The server,
** pgpipe_http_open's sources and the token functions all hold to it. */
int pgpipe_http_source_valid(const char *name);
#define PGPIPE_HTTP_SOURCE_RULE "1 to 64 characters of A-Z a-z 0-9 . _ -, other than . and .."
/* Check the options, connect, install the schema when asked, load the tokens
** and bind the listening sockets. *out is set even on failure (read
** pgpipe_errmsg(*out), then close it); NULL only when out of memory. */
int pgpipe_http_open(pgpipe_http **out, const pgpipe_http_options *o);
/* The port the i-th listen address is bound to (0 when there is none). */
int pgpipe_http_port(const pgpipe_http *h, int i);
/* Serve until pgpipe_http_stop: then stop accepting, finish and answer the
** requests in flight (their group commits first), close the connections and
** return PGPIPE_OK. */
int pgpipe_http_run(pgpipe_http *h);
/* Ask a running server to drain and return. Async-signal-safe. */
int pgpipe_http_stop(pgpipe_http *h);
/* Reload the tokens at the next turn of the loop. Async-signal-safe. */
int pgpipe_http_reload(pgpipe_http *h);
void pgpipe_http_close(pgpipe_http *h);
