/* ==== Connection pool, checked-out connections, pipeline mode ==== */

/* Hands out libpq connections to the rest of the library and to programs.
** Handles: pgpipe_pool, the pgpipe_conn it lends out (acquire / release),
** and a pgpipe_pipeline opened on a checked-out connection.
**
** Thread safety: a pool's acquire, release, discard and stats functions may
** be called from any number of threads at once (an acquire reports to its
** err argument, not to the shared pool); open and close are called once
** each, by one thread. A checked-out connection, and a pipeline on it,
** belong to the thread that holds it. */

/* ---- Connection pool --------------------------------------------------- */

/* A thread-safe pool of libpq connections (SQLAlchemy-style sizing), with
** health checks, session reset on release, a prepared-statement cache per
** connection, and libpq pipeline mode for many small statements.
**
**   pgpipe_pool_options o;
**   pgpipe_pool_options_init(&o);
**   o.pool_size = 4; o.max_overflow = 4;
**   pgpipe_pool *pool;
**   if (pgpipe_pool_open(&pool, "postgresql://app@db/prod", &o) != PGPIPE_OK) {
**       fprintf(stderr, "%s\n", pgpipe_errmsg(pool));   (pool may be NULL: no memory)
**       pgpipe_pool_close(pool, NULL);
**       return;
**   }
**   pgpipe_conn *c;
**   pgpipe_error err;
**   if (pgpipe_pool_acquire_ex(pool, &c, -1, &err) == PGPIPE_OK) {
**       PGresult *r = pgpipe_conn_exec_cached(c, "SELECT $1::int", 1, vals, NULL, NULL, 0);
**       ...
**       PQclear(r);
**       pgpipe_pool_release(c);
**   }
**   pgpipe_pool_close(pool, NULL);
**
** Under PGPIPE_OMIT_THREADS nothing waits: an acquire that finds no free
** connection and no free slot fails at once with PGPIPE_BUSY. */

typedef struct pgpipe_pool_options {
    int pool_size;          /* connections kept open once made (default 5) */
    int max_overflow;       /* extra connections allowed under load; one is closed
                               when returned while pool_size are idle (default 10) */
    int min_idle;           /* connections opened by pgpipe_pool_open, and the floor
                               the idle timeout does not reap below (default 1) */
    int acquire_timeout_ms; /* longest wait of an acquire, including reconnecting
                               after a server restart (default 30000) */
    int connect_timeout_s;  /* libpq connect_timeout when neither the conninfo nor
                               PGCONNECT_TIMEOUT sets one (default 10) */
    int max_lifetime_ms;    /* close a connection this old when it is returned or
                               found idle; 0 = no limit (default 1800000) */
    int lifetime_jitter_ms; /* each connection's lifetime is shortened by a random
                               0..jitter, so they do not expire together (default
                               60000, at most max_lifetime_ms / 2) */
    int idle_timeout_ms;    /* close connections idle this long, keeping min_idle;
                               0 = never (default 600000) */
    int pre_ping_ms;        /* ping a connection idle longer than this before
                               handing it out; 0 = always, -1 = never (default 500).
                               After any connection of the pool is found broken,
                               every older connection is pinged on its next
                               checkout whatever its idle time. */
    int close_timeout_ms;   /* how long pgpipe_pool_close waits for checked-out
                               connections (default 5000) */
    int stmt_cache_size;    /* prepared statements kept per connection by
                               pgpipe_conn_exec_cached; 0 = no cache (default 100) */
    const char *application_name; /* default "pgpipe"; passed as libpq's
                               fallback_application_name, so an application_name
                               in the conninfo, a service file or PGAPPNAME wins */
    const char *reset_sql;  /* run on every release after the rollback, e.g.
                               "DISCARD ALL" (which also empties the statement
                               cache); NULL = none (default) */
    int pooler;             /* PGPIPE_POOLER_AUTO (default: resolved once, on the
                               pool's first connection, by pgpipe_pooler_mode),
                               _SESSION or _TRANSACTION. Behind a transaction
                               pooler pgpipe_conn_exec_cached runs statements
                               unnamed, and the pool's users (workers) leave out
                               session state (LISTEN, named statements). */
} pgpipe_pool_options;

/* Fill o with the defaults above. */
void pgpipe_pool_options_init(pgpipe_pool_options *o);

/* Open a pool. conninfo is anything libpq accepts: key=value, a postgresql://
** URI, a bare database name, "service=NAME", or NULL/"" for the PG* variables
** alone. It is passed to libpq unchanged (PQconnectdbParams with
** expand_dbname); fallback_application_name and connect_timeout are added as
** defaults the string (or a service file, or PG* variables) can override. opts may be NULL for the defaults. min_idle
** connections are made before it returns. *out receives the handle even when
** opening fails (read the error with pgpipe_errmsg(*out), then close it);
** *out is NULL only when memory ran out. Messages never hold a password. */
int pgpipe_pool_open(pgpipe_pool **out, const char *conninfo, const pgpipe_pool_options *opts);

/* Check out a connection, waiting at most timeout_ms (-1 = the pool's
** acquire_timeout_ms, 0 = do not wait). Waiters are served first come, first
** served. A connection idle longer than pre_ping_ms is pinged first; a dead
** one is replaced transparently; while the server is down (restart) the
** acquire keeps reconnecting with backoff until the timeout. Errors:
** PGPIPE_BUSY on timeout (the message names the pool size and the time
** waited, and the last connect error if any), PGPIPE_DB for a connect error
** that retrying cannot fix (bad password, unknown database), PGPIPE_MISUSE
** when the pool is closing. The error goes to err when it is not NULL -
** race-free, the way to use from many threads - and otherwise to the pool
** handle (pgpipe_errmsg(pool)), which is only meaningful when one thread
** uses the pool. */
int pgpipe_pool_acquire_ex(pgpipe_pool *pool, pgpipe_conn **out, int timeout_ms,
                           pgpipe_error *err);
/* pgpipe_pool_acquire_ex(pool, out, -1, NULL). */
int pgpipe_pool_acquire(pgpipe_pool *pool, pgpipe_conn **out);

/* Return a connection. Its session is reset first: results left unread or a
** pipeline left open close the connection (the pipeline lets go of it: its
** calls then fail with PGPIPE_MISUSE, and pgpipe_pipeline_close, still
** needed, frees the pipeline only); a transaction left open (or
** failed) is rolled back; reset_sql runs; pending notifications are dropped.
** A broken connection, one past its lifetime, or an overflow connection
** returned while pool_size connections are idle is closed instead; a broken
** one makes the pool ping its older connections before handing them out.
** Returns PGPIPE_OK when the connection went back to the pool or was closed
** on purpose, PGPIPE_DB when it was closed because it was broken or its reset
** failed (informational: the pool is fine). */
int pgpipe_pool_release(pgpipe_conn *conn);
/* Return a connection the caller knows is unusable: it is closed, never
** reused, and the pool pings its older connections. */
int pgpipe_pool_discard(pgpipe_conn *conn);

/* Close the pool: waiters are woken with an error, idle connections closed,
** and checked-out ones awaited up to close_timeout_ms. Connections still out
** then are leaked: their count goes to *leaked (may be NULL), a warning is
** logged, and PGPIPE_BUSY is returned; each is closed when it is released,
** and the last one frees the pool. Returns PGPIPE_OK when none leaked. The
** handle must not be used after this call. NULL is a no-op. */
int pgpipe_pool_close(pgpipe_pool *pool, int *leaked);

/* The pool's pooler mode: PGPIPE_POOLER_SESSION or PGPIPE_POOLER_TRANSACTION
** once a connection was made (options.pooler, or what pgpipe_pooler_mode
** found on the first connection), PGPIPE_POOLER_AUTO before that (or for a
** NULL pool). Any thread. */
int pgpipe_pool_pooler(pgpipe_pool *pool);

typedef struct pgpipe_pool_stats {
    int pool_size, max_overflow;
    int size;        /* connections open or being opened */
    int opening;     /* of which being opened (connect in progress or retrying) */
    int idle;        /* in the pool, ready */
    int in_use;      /* checked out */
    int waiters;     /* acquires waiting in the queue */
    long long created;           /* connections opened, ever */
    long long closed;            /* connections closed, ever */
    long long acquired;          /* successful acquires */
    long long timeouts;          /* acquires that timed out */
    long long connect_failures;  /* failed connection attempts */
    long long pings;             /* pre-pings made */
    long long broken;            /* connections found dead (ping, release) */
    long long wait_count;        /* acquires measured below */
    long long wait_p50_us, wait_p95_us, wait_p99_us, wait_max_us; /* acquire wait */
    double wait_mean_us;
} pgpipe_pool_stats;

/* A consistent snapshot of the pool's counters. Percentiles come from a
** log-scale histogram (16 buckets per power of two: within 4.5 %). */
int pgpipe_pool_stats_get(pgpipe_pool *pool, pgpipe_pool_stats *out);

/* ---- Checked-out connections ------------------------------------------ */

/* The libpq connection, for direct use. Do not PQfinish it; leave it idle
** (no unread results) before releasing, or it is closed by the release. */
PGconn *pgpipe_conn_pg(pgpipe_conn *conn);

/* Run sql as a prepared statement cached on this connection: the first call
** prepares it under the name "pgpipe_<16 hex digits of a 64-bit FNV-1a hash of
** the text>", later calls only execute it (one round trip, no parsing). The
** arguments are those of PQexecPrepared; lengths and formats may be NULL.
** Returns the PGresult (check PQresultStatus; the caller PQclears it); on
** failure the error is also on the connection handle (pgpipe_errmsg(conn)).
** Behind a transaction pooler (pgpipe_pool_pooler) nothing is cached: the
** statement runs unnamed (PQexecParams), since the next transaction may run
** on a server session that never saw it. A statement found gone again right
** after it was prepared shows such a pooler where the pool was told
** "session": the pool then switches to unnamed statements, with one warning.
** When the server no longer has the statement (26000, e.g. after DISCARD ALL
** run by hand) or its cached plan changed result type (0A000), it is prepared
** again and run once more - outside a transaction block; inside one the
** error is returned (the transaction is aborted anyway) and the statement is
** prepared afresh next time. NULL only when out of memory or misused. */
PGresult *pgpipe_conn_exec_cached(pgpipe_conn *conn, const char *sql, int nparams,
                                  const char *const *values, const int *lengths,
                                  const int *formats, int result_format);
/* Forget the cached statements (after running DEALLOCATE ALL or DISCARD ALL
** on the connection yourself). Returns the number forgotten. */
int pgpipe_conn_clear_cache(pgpipe_conn *conn);

/* ---- Pipeline mode (PostgreSQL 14+) ----------------------------------- */

/* Send many statements on one connection without waiting for each reply.
**
**   pgpipe_pipeline *p;
**   pgpipe_pipeline_open(&p, conn, PGPIPE_PIPELINE_SYNC_EACH);
**   for (...) pgpipe_pipeline_add(p, "UPDATE t SET done = true WHERE id = $1", 1, vals);
**   int failed; rc = pgpipe_pipeline_run(p, &failed);
**   ... pgpipe_pipeline_result(p, i) ...
**   pgpipe_pipeline_close(p);
**
** Semantics when statement k fails:
**   flags 0 (one Sync at the end): all the statements form one implicit
**     transaction. k gets its error, every statement after k is skipped
**     (PQresultStatus PGRES_PIPELINE_ABORTED) and the work of the statements
**     before k is rolled back: all or nothing.
**   PGPIPE_PIPELINE_SYNC_EACH (a Sync after each statement): each statement is
**     its own transaction, like one-at-a-time autocommit. Only k fails; the
**     others run and commit.
** Inside a transaction the caller opened with BEGIN, the statements join it
** either way, and a failure aborts it. The connection must not be used for
** anything else between open and run. */
#define PGPIPE_PIPELINE_SYNC_EACH 1

/* Put the connection in pipeline mode. A failure (the connection is busy or
** has a pipeline already) is reported on the connection, and *out is NULL. */
int pgpipe_pipeline_open(pgpipe_pipeline **out, pgpipe_conn *conn, int flags);
/* Queue (and start sending) one statement with text parameters. */
int pgpipe_pipeline_add(pgpipe_pipeline *p, const char *sql, int nparams,
                        const char *const *values);
/* Send the rest, collect every result, and leave pipeline mode. *nfailed (may
** be NULL) receives the number of statements that failed or were skipped.
** Returns PGPIPE_OK when none did, PGPIPE_DB otherwise (the pipeline's error,
** pgpipe_errmsg(p), names the first failed statement and its SQLSTATE). A
** pipeline runs once. */
int pgpipe_pipeline_run(pgpipe_pipeline *p, int *nfailed);
/* Number of statements added. */
int pgpipe_pipeline_count(const pgpipe_pipeline *p);
/* The result of statement i (0-based) after run, owned by the pipeline; NULL
** when the connection broke before it arrived. */
PGresult *pgpipe_pipeline_result(const pgpipe_pipeline *p, int i);
/* Close the pipeline (running it first if it was not run). NULL is a no-op. */
void pgpipe_pipeline_close(pgpipe_pipeline *p);
