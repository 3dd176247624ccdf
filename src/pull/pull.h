/* ==== PULL: records from HTTP(S) JSON APIs into staging ==== */

/* A pgpipe_pull requests the pages of one stream of an HTTP(S) JSON API
** and writes each record as an event into staging.raw_events:
**
**     source      options.source (the API)
**     event_type  the record's field options.event_type_field, else
**                 options.event_type, else the stream's name
**     payload     the record as the API sent it (an element of the record
**                 array that is not an object is dead-lettered)
**
** Needs libcurl: compiled in only when pgpipe.c is built with
** -DPGPIPE_ENABLE_CURL and linked with -lcurl. Without it the functions
** exist and pgpipe_pull_open fails with PGPIPE_ERROR, "built without
** libcurl".
**
** Exactly once: each page is one target transaction holding its records,
** its dead letters and the stream's new state (pgpipe.pull_state: the next
** page and the incremental cursor). The pages after it are requested while
** it is written, but a page's COMMIT is sent only once the page before it
** committed (a failed COMMIT drops the pages after it). A run killed at any
** point resumes, on the next run, from the page after the last committed
** one: no page skipped, none loaded twice. Two runs of the same stream
** exclude each other (an advisory lock).
**
** JSON paths (records, cursor, total, event type, cursor field): members by
** name separated by '.', elements by [N], optionally after "$" or "$.":
** "$.data.items", "data.items", "meta.next[0]", "" or "$" = the root.
**
** Pagination (options.paginate):
**   NONE    one request
**   LINK    the Link header's rel="next" URL (relative URLs resolved)
**   CURSOR  the body's next cursor (options.cursor_path) is sent as the
**           query parameter options.cursor_param; options.more_path (a
**           boolean, e.g. "has_more") may say when the listing ends
**   OFFSET  options.offset_param advances by the records of each page,
**           options.limit_param = options.limit
**   PAGE    options.page_param counts from options.first_page
** A run stops at an empty page, when there is no next page (no Link next,
** no cursor, more = false, a short OFFSET/PAGE page) or after
** options.max_pages (the next run then continues where it stopped).
** A Link next that leaves the first page's scheme, host and port (or is not
** http(s)) is refused, the page naming it not committed: the source's
** credentials would go with it. Redirects follow http(s) only, never from
** https to http. A URL holding "user:password@" is refused at open.
** Incomplete pagination is an error naming the page, never a silent end: a
** Link next or a cursor already seen in the run, a numeric cursor that goes
** backwards, a listing that ends with a record count other than the total
** the API reported (options.total_path), a page number past the
** reported page count (options.pages_path) while records still come, or a
** page of two or more records that are the page before's again (an API
** that ignores the next-page parameter).
**
** Incremental state: with options.since_field the largest value of that
** record field (numbers compared as numbers, other values as text: ISO
** timestamps in one format, ids) becomes the stream's cursor when a run
** reaches the end; the next run sends it as options.since_param on the
** first request. With CURSOR pagination and options.more_path, the API's
** own cursor at the end of the listing is kept instead and sent as
** options.cursor_param. Backfill (options.backfill_from/_to, sent as
** since_param/until_param) loads a range under its own resume point and
** never touches the incremental cursor.
**
** Politeness: one budget per source (pgpipe_pull_budget) is shared by all
** its streams: a token bucket of options.rate requests per second, paused
** for every stream by a 429 or 503 Retry-After (seconds or an HTTP date)
** and by X-RateLimit-Remaining: 0 until X-RateLimit-Reset (epoch seconds or
** seconds from now). Network errors, 408, 429 and 5xx are retried with
** exponential backoff and full jitter (250 ms doubling to 30 s) within a
** time budget (options.retry_budget_ms) instead of a retry count; a
** Retry-After longer than that budget fails the page at once (saying so)
** and an X-RateLimit-Reset is waited for at most that long. Timeouts
** for the connection and the whole request; gzip and deflate accepted.
**
** Concurrency: options.concurrency (1 to 64, default 1) is the most
** requests of the stream in flight at once; the budget's own limit
** (pgpipe_pull_budget_set_concurrency) holds for all streams of the source
** together, a stream waiting for a free slot. Fetching overlaps writing:
** the next page is requested as soon as its URL is known (from the page
** before, parsed as soon as it arrives), and with OFFSET and PAGE
** pagination up to concurrency pages ahead are requested at once (never
** past a reported total). Pages are parsed and committed strictly in
** order, each with its cursor; a page fetched ahead that turns out not to
** be needed (the listing ended, max_pages, a different next URL) is
** dropped, never staged. With concurrency > 1 up to min(concurrency, 4)
** pages are written at once, each on its own target connection: their
** COPYs run side by side (so staging ids of neighbouring pages may
** interleave), their COMMITs one after the other in page order, a page's
** COMMIT sent only once the page before it committed; the next page's rows
** are built meanwhile. At most concurrency responses are held, plus
** min(concurrency, 4) + 1 pages' rows.
**
** Memory: a response body (decoded: gzip and deflate are counted as they
** inflate, so a small compressed bomb stops at the limit) over
** options.max_body fails its page (PGPIPE_LIMIT, naming the URL and the
** limit; nothing of it is committed). The bodies held at once, of the page
** to parse next and of the pages fetched ahead, stay within
** options.body_budget: the page to parse next may always grow to max_body,
** the pages ahead share the rest, and a page ahead that finds no room is
** dropped and requested again once it is the next to parse (a wait, not a
** failure).
**
** A page whose body is not JSON only inside records (invalid UTF-8 or an
** unescaped control character in a string, an invalid escape or a lone
** surrogate \uD800, NaN or Infinity) is salvaged: those records are
** dead-lettered (their bytes as sent, the position and the byte offset of
** the problem in the page), the others staged. A body whose structure is
** broken (cut off, a syntax error between values) or whose problem lies
** outside the records fails the run (PGPIPE_PARSE, naming the URL and the
** byte offset); the next run fails at the same page until it parses.
**
** Secrets (bearer token, basic "user:password", API key) are read from an
** environment variable or a file, never given as values, and are masked in
** every error, log line and stored text (so are query parameters whose
** name says key, token, secret, password, signature or auth).
**
** Thread safety: one thread runs a handle; pgpipe_pull_stop may be called
** from a signal handler or another thread. A budget is shared by any number
** of handles in any threads. */

typedef struct pgpipe_pull pgpipe_pull;
typedef struct pgpipe_pull_budget pgpipe_pull_budget;

#define PGPIPE_PULL_NONE   0
#define PGPIPE_PULL_LINK   1
#define PGPIPE_PULL_CURSOR 2
#define PGPIPE_PULL_OFFSET 3
#define PGPIPE_PULL_PAGE   4

/* What pgpipe_pull_run reports after each committed page and at the end. */
typedef struct pgpipe_pull_progress {
    long long pages;            /* pages committed by this run */
    long long records;          /* records staged by this run */
    long long dead_lettered;    /* records dead-lettered by this run */
    long long requests;         /* HTTP requests, retries included */
    long long retries;          /* requests repeated after a failure */
    long long waited_ms;        /* time spent waiting for the budget or a Retry-After */
    long long bytes;            /* response bytes, as received (compressed) */
    long long held_bytes_peak;  /* the most bytes held at once: bodies, the parse tree
                                   of the page being built, the rows of pages built
                                   and being written (see --body-budget) */
    double seconds;             /* since the run started */
    double records_per_s;       /* records / seconds */
    int done;                   /* 1 at the last call */
} pgpipe_pull_progress;
typedef void (*pgpipe_pull_progress_fn)(void *ud, const pgpipe_pull_progress *p);

typedef struct pgpipe_pull_options {
    const char *conninfo;       /* the staging database; NULL/"" = PG* variables */
    const char *source;         /* the API's name: events' source, state key; required */
    const char *stream;         /* the stream's name: state key, default event type; "default" */
    const char *url;            /* the first page (with its query); required */
    const char *method;         /* "GET" or "POST"; "GET" */
    const char *body;           /* request body (POST); NULL = none */
    const char *const *headers; /* NULL-terminated "Name: value" list; NULL = none */
    const char *records;        /* JSON path of the record array; "" = the body itself */
    const char *event_type;     /* constant event type; NULL = the stream's name */
    const char *event_type_field; /* record path of the event type; NULL = constant */
    int paginate;               /* PGPIPE_PULL_*; NONE */
    const char *cursor_path;    /* CURSOR: body path of the next cursor */
    const char *cursor_param;   /* CURSOR: query parameter; "cursor" */
    const char *more_path;      /* CURSOR: body path of a "more pages" boolean; NULL */
    const char *offset_param;   /* OFFSET: "offset" */
    const char *limit_param;    /* OFFSET (and PAGE when set): "limit" for OFFSET */
    int limit;                  /* records per page sent as limit_param; 100 */
    const char *page_param;     /* PAGE: "page" */
    int first_page;             /* PAGE: 1 */
    const char *total_path;     /* body path of the total record count; NULL */
    const char *pages_path;     /* body path of the total page count; NULL */
    long long max_pages;        /* pages per run; 0 = no limit */
    int stop_on_empty;          /* an empty page ends the run; 1 */
    const char *since_field;    /* record path of the incremental cursor; NULL */
    const char *since_param;    /* query parameter that receives it; "since" */
    const char *since_initial;  /* the cursor before the first run; NULL = none */
    const char *backfill_from;  /* backfill: since_param value; NULL = incremental run */
    const char *backfill_to;    /* backfill: until_param value; NULL = open end */
    const char *until_param;    /* "until" */
    /* secrets: from an environment variable (NAME) or a file (PATH) */
    const char *bearer_env, *bearer_file;   /* Authorization: Bearer ... */
    const char *basic_env, *basic_file;     /* "user:password": Authorization: Basic */
    const char *api_key_header;             /* header name for the API key, e.g. "X-Api-Key" */
    const char *api_key_env, *api_key_file;
    /* politeness */
    pgpipe_pull_budget *budget; /* shared by the source's streams; NULL = own, from rate */
    double rate;                /* requests per second of the own budget; 0 = unlimited */
    int concurrency;            /* requests in flight at once (1 to 64); 1. With a shared
                                   budget the budget's limit holds for the whole source
                                   and this one for the stream */
    long long max_body;         /* the largest response body, decoded (bytes); 64 MiB */
    long long body_budget;      /* the decoded bodies of all the stream's requests in
                                   flight and pages held, together (bytes); 0 = twice
                                   max_body. Not below max_body */
    int connect_timeout_ms;     /* 10000 */
    int timeout_ms;             /* whole request; 60000 */
    int retry_budget_ms;        /* retrying one page gives up after this long (0: no
                                   retries); 300000 */
    const char *ca_file;        /* CA bundle for HTTPS; NULL = the system's */
    int install;                /* install or upgrade the pgpipe schema; 1 */
    pgpipe_pull_progress_fn progress;
    void *progress_ud;
    const char *header_slots[17]; /* pgpipe_pull_set's --header values (headers points here) */
    char backfill_text[256];    /* pgpipe_pull_set's --backfill, cut in two */
} pgpipe_pull_options;

/* Defaults as above (everything else NULL/0). */
void pgpipe_pull_options_init(pgpipe_pull_options *opt);

/* Set one option by its name as the shell (.pull --NAME VALUE) and the
** pipeline file (.source pull ... --NAME VALUE) write it, with or without
** the leading "--": url, source, stream, method, body, header (repeatable,
** up to 16), records, event-type, event-type-field, paginate
** (none|link|cursor|offset|page), cursor-path, cursor-param, more-path,
** offset-param, limit-param, limit, page-param, first-page, total-path,
** pages-path, max-pages, since-field, since-param, since-initial, backfill
** (FROM..TO, either end may be empty after the ".."), until-param,
** token-env, token-file, basic-env, basic-file, api-key-header, api-key-env,
** api-key-file, rate (requests/s), concurrency (1 to 64), connect-timeout,
** timeout, retry-budget
** (ms, or a duration: 500ms, 30s, 5m, 1h), max-body, body-budget (bytes, or
** with k, M or G: 512k, 64M, 1G; powers of 1024), ca-file. value is referenced,
** not copied: keep it until pgpipe_pull_open. There are no options for a
** secret's value (--token, --password): secrets come from the environment
** or a file. PGPIPE_OK, or PGPIPE_MISUSE with err (may be NULL) naming the
** option and the problem. */
int pgpipe_pull_set(pgpipe_pull_options *opt, const char *name, const char *value,
                    pgpipe_error *err);

/* A rate budget: rate requests per second (0 = unlimited) in bursts of up
** to burst (< 1: 1). Shared by every stream of a source (set
** options.budget); it outlives the handles that use it. */
int pgpipe_pull_budget_open(pgpipe_pull_budget **out, double rate, double burst);
void pgpipe_pull_budget_close(pgpipe_pull_budget *b);

/* The most requests in flight at once of all the handles using budget b
** (1 to 64; 0 = no limit but each handle's own concurrency, the default).
** Set it before the handles run. PGPIPE_OK or PGPIPE_MISUSE. */
int pgpipe_pull_budget_set_concurrency(pgpipe_pull_budget *b, int concurrency);

/* Check the options, read the secrets, connect to the target (schema
** installed when options.install). The options' strings are copied.
** PGPIPE_MISUSE for bad options, PGPIPE_IO for an unreadable secret file
** or a missing variable, PGPIPE_DB for the target, PGPIPE_ERROR when built
** without libcurl. */
int pgpipe_pull_open(pgpipe_pull **out, const pgpipe_pull_options *opt);
void pgpipe_pull_close(pgpipe_pull *p);

/* One run: from the resume point (or the first page with the incremental
** cursor) until the listing ends, max_pages, or pgpipe_pull_stop. Each page
** commits with the state; progress is called after each. PGPIPE_OK when
** the listing ended or max_pages was reached; PGPIPE_BUSY when stopped or
** another run holds the stream; PGPIPE_IO for HTTP failures that outlasted
** the retry budget or that retrying cannot fix (4xx); PGPIPE_LIMIT for a
** body over options.max_body; PGPIPE_PARSE for a body that is not JSON
** (beyond the bad records set aside, above) or has no record array;
** PGPIPE_ERROR for incomplete pagination; PGPIPE_DB for the target. The
** error names the page (its masked URL). What was committed stays; the next run resumes
** after it. */
int pgpipe_pull_run(pgpipe_pull *p);

/* Ask a running pgpipe_pull_run to return soon: the requests in flight are
** aborted, a COMMIT already sent is waited for, the pages not yet
** committed are rolled back (never a partial page). Async-signal-safe. */
void pgpipe_pull_stop(pgpipe_pull *p);

/* The progress of the last (or current) run. */
void pgpipe_pull_progress_get(pgpipe_pull *p, pgpipe_pull_progress *out);

/* Copy text to buf (size > 0: NUL-terminated, like snprintf) with the
** handle's secrets and the values of secret-looking query parameters
** replaced by "***". p may be NULL (only the parameters are masked).
** Returns the length of the whole masked text. */
size_t pgpipe_pull_mask(const pgpipe_pull *p, const char *text, char *buf, size_t size);
