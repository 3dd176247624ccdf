/* ==== Claimer and workers: processing staged rows ==== */

/* Takes the rows the loader staged, runs a handler on them (C or SQL), and
** marks them processed, retried or dead-lettered. Handles: pgpipe_claimer
** (claims batches on one connection), the pgpipe_batch it hands out, and
** pgpipe_workers (threads running claimers on a pool).
**
** Thread safety: a claimer, and the batches it hands out, are used by one
** thread at a time (its connection is theirs). Any number of claimers, in
** threads or processes, may work on the same table: they never take the
** same row. A workers handle is driven by the thread that opened it (wait,
** run_until_empty, close); pgpipe_workers_stop and pgpipe_workers_stopping
** may be called from any thread, stop also from a signal handler, and
** pgpipe_workers_stats_get from any thread. Handlers run on the worker
** threads at once: their ud is shared. */

/* ---- Claimer: parallel processing with FOR UPDATE SKIP LOCKED ---------- */

/* A claimer takes batches of unprocessed rows of staging.raw_events (or any
** table with the same columns: id, source, event_type, payload, received_at,
** processed, attempts, next_attempt_at, last_error, claimed_by, claimed_at, claim_token,
** lease_expires_at, processed_at, first_failed_at) with FOR UPDATE SKIP
** LOCKED, so any number of claimers on any number of connections never take
** the same row twice and never wait for each other.
**
** Two modes:
**   PGPIPE_CLAIM_TRANSACTIONAL  claim, process and mark processed in one
**       transaction. The handler gets the PGconn: its writes commit together
**       with the "processed" mark, so database effects happen exactly once. A
**       crash or lost connection rolls everything back and the rows are
**       claimable again at once.
**   PGPIPE_CLAIM_LEASE  the claim commits at once: the rows get a lease
**       (lease_expires_at), a fencing token (claim_token, a UUID per batch)
**       and attempts + 1. The handler runs outside any transaction;
**       completion succeeds only for rows whose token still matches. A lease
**       that expires (crashed or stalled worker) is reclaimed by another
**       claimer with a new token, so the old holder's late completion is
**       refused and counted (stats.fenced). A row whose lease expired
**       max_attempts times (its worker crashed or stalled on it each time)
**       is dead-lettered at its next claim instead of being handed out.
**
** Failures: a record whose handler fails is retried with exponential backoff
** (attempts, next_attempt_at = now + min(max, base * 2^(attempt-1)) with
** jitter, last_error) until max_attempts; a record that failed with a data
** error (SQLSTATE class 22 or 23: bad cast, NOT NULL, CHECK, unique, foreign
** key; pgpipe_sqlstate_is_data_error) is not retried, since no retry can
** heal it: it goes to the dead letters at once. Then it is copied to
** pgpipe.dead_letters (stage 'process', source_name = the event's source,
** payload, raw_text, error message, SQLSTATE, attempt_count, first and last
** failure time) and marked processed (it leaves the pending set; the staging
** row stays, so a replay sets it back to unprocessed). A batch handler (SQL
** or C) that fails in a transaction is bisected under savepoints until the
** failing records are isolated; the others commit.
**
** A batch that fails as a whole after its claim (its COMMIT fails, or the
** server ends its session, for instance by idle_in_transaction_session_timeout
** while a slow handler runs, 25P03) counts one attempt for each of its rows,
** with the server's message and SQLSTATE as last_error, so it reaches the
** dead letters after max_attempts like any failing record. A connection cut
** without a reason from the server (class 08: network, proxy), a server
** restart, the crash of another session (57P02), a prepared statement gone
** behind a pooler (26000) or a cancel (57014) is not the batch's doing and is
** not charged: the rows are pending again (lease mode releases them:
** stats.released; else stats.abandoned). The attempt is recorded outside the
** failed transaction: at once when the connection still works, else by the
** worker on its next connection before it claims again (a plain claimer
** cannot reach a new connection: its caller re-opens one, and the rows come
** back after their lease in lease mode, at once in transactional mode,
** without the attempt). The happy path pays nothing for this. Each such
** failure is logged at warning level.
**
** A handler that cannot run at all is not charged: when a batch fails with
** a SQLSTATE of class 42 (42883 undefined function, 42501 no privilege,
** 42P01, ...), 3F000 or 0A000 and the SQL handler fails with one of them on
** an empty batch too (run under a savepoint and undone), or when every row
** of a batch of two or more failed alone with one of them, the batch is
** rolled back and given back (attempts unchanged; stats.released) and
** pgpipe_claimer_run_batch returns PGPIPE_DB naming the handler and the
** SQLSTATE; the workers stop on it (pgpipe_workers_wait gives the error). A
** prepared SQL handler failing with 0A000 ("cached plan must not change
** result type": its function changed) is prepared again once first.
**
** Lock order: every statement that locks staging rows it does not hold yet
** locks them in primary-key order, and in lease mode with a SQL handler the
** batch's staging rows are locked before the handler runs, the order of the
** plain SKIP LOCKED pattern (lock the rows, then write), so lease-mode
** workers do not deadlock with other clients of that pattern. */

#define PGPIPE_CLAIM_TRANSACTIONAL 0
#define PGPIPE_CLAIM_LEASE         1

#define PGPIPE_CLAIM_ORDER_RECEIVED 0  /* ORDER BY received_at, id (default) */
#define PGPIPE_CLAIM_ORDER_ID       1  /* ORDER BY id: walks the primary key past
                                          processed rows; on a big table prefer
                                          the default, which uses the partial
                                          index on unprocessed rows */

typedef struct pgpipe_claim_options {
    const char *table;        /* "schema.table" or "table"; default
                                 "staging.raw_events". Each part is quoted as
                                 an identifier. */
    int mode;                 /* PGPIPE_CLAIM_TRANSACTIONAL (default) or _LEASE */
    int batch_size;           /* rows per claim (default 100; 0 or less: the default) */
    int order;                /* PGPIPE_CLAIM_ORDER_* */
    const char *source;       /* only rows of this source (NULL = any); sent as a
                                 parameter, never spliced into SQL */
    const char *event_type;   /* only rows of this event_type (NULL = any) */
    int lease_ms;             /* lease length in lease mode (default 30000; 0 or
                                 less: the default) */
    int max_attempts;         /* attempts before dead-lettering (default 5; 0 or
                                 less: the default) */
    int backoff_base_ms;      /* first retry delay (default 1000) */
    int backoff_max_ms;       /* retry delay cap (default 300000) */
    const char *worker_id;    /* claimed_by; default "pgpipe-<pid>" */
    const char *dlq_table;    /* default "pgpipe.dead_letters" */
    int pooler;               /* PGPIPE_POOLER_AUTO (default: pgpipe_pooler_mode
                                 on the connection at open), _SESSION or
                                 _TRANSACTION: behind a transaction pooler every
                                 statement (the claim's and the SQL handler) runs
                                 unnamed (PQexecParams) instead of prepared. A
                                 prepared statement found gone (26000) switches
                                 the claimer to unnamed statements with one
                                 warning. The workers pass on their pool's mode. */
} pgpipe_claim_options;

void pgpipe_claim_options_init(pgpipe_claim_options *o);

/* One claimed row. Strings live as long as the batch. */
typedef struct pgpipe_event {
    long long id;
    const char *source;
    const char *event_type;
    const char *payload;      /* JSON text of the JSONB payload */
    size_t payload_len;
    const char *received_at;  /* timestamptz as text (ISO, the session's zone) */
    int attempt;              /* this processing is attempt number N (1 = first) */
} pgpipe_event;

/* A claimed batch (opaque). Valid until completed or released. */

int pgpipe_batch_count(const pgpipe_batch *b);
const pgpipe_event *pgpipe_batch_event(const pgpipe_batch *b, int i);
/* The connection of the claim's transaction (transactional mode), or NULL in
** lease mode (the handler runs outside any transaction). */
PGconn *pgpipe_batch_conn(const pgpipe_batch *b);
/* The fencing token of the batch (lease mode), "" in transactional mode. */
const char *pgpipe_batch_token(const pgpipe_batch *b);
/* Mark record i as failed (message and SQLSTATE may be NULL). */
int pgpipe_batch_fail(pgpipe_batch *b, int i, const char *message, const char *sqlstate);
/* 1 when record i is marked failed. */
int pgpipe_batch_failed(const pgpipe_batch *b, int i);
/* The payload of record i parsed (on first use, then kept with the batch),
** or NULL with the parse error in err (may be NULL). */
const pgpipe_json_doc *pgpipe_batch_doc(pgpipe_batch *b, int i, pgpipe_error *err);
/* The claimed rows as a JSON array of objects {id, source, event_type,
** payload, received_at, attempt}: what a SQL handler sees as $1 (records
** already marked failed are left out). The string lives as long as the
** batch. */
const char *pgpipe_batch_json(pgpipe_batch *b);

/* Handlers. Exactly one of record, batch, sql is set (more than one is
** refused with PGPIPE_MISUSE).
**   record(ud, conn, ev, err): process one event; return PGPIPE_OK, or an
**     error code with err filled (message, SQLSTATE) to fail that record.
**     conn is the claim's transaction in transactional mode, NULL in lease.
**   batch(ud, b, err): process the batch; mark single records failed with
**     pgpipe_batch_fail and return PGPIPE_OK, or return an error for the
**     whole batch (transactional mode then bisects it under savepoints,
**     calling batch again on halves; in lease mode every record fails).
**   sql: one statement run per batch with $1 = the rows as a JSONB array
**     (see pgpipe_batch_json), e.g.
**       INSERT INTO production.events (id, user_id)
**       SELECT (e->>'id')::bigint, (e->'payload'->>'user_id')::int
**       FROM jsonb_array_elements($1::jsonb) e
**     A failing statement is bisected under savepoints; records that fail
**     alone get the server's message and SQLSTATE. A statement can also
**     refuse records itself, without failing: when it returns rows with a
**     column named failed_id (and optionally error and sqlstate), those
**     records are marked failed with that message (retried, then
**     dead-lettered) and its other writes stand, e.g.
**       WITH r AS (SELECT (e->>'id')::bigint AS id, e->'payload' AS p
**                  FROM jsonb_array_elements($1::jsonb) e),
**            ok AS (INSERT INTO production.t (v) SELECT (p->>'v')::int FROM r
**                   WHERE p ? 'v')
**       SELECT id AS failed_id, 'no field v' AS error FROM r WHERE NOT p ? 'v' In lease mode the
**     statement runs in a transaction together with the token-checked
**     completion, so a fenced batch's writes are rolled back. */
typedef int (*pgpipe_record_fn)(void *ud, PGconn *conn, const pgpipe_event *ev,
                                pgpipe_error *err);
typedef int (*pgpipe_batch_fn)(void *ud, pgpipe_batch *b, pgpipe_error *err);

typedef struct pgpipe_handler {
    pgpipe_record_fn record;
    pgpipe_batch_fn batch;
    const char *sql;
    void *ud;
} pgpipe_handler;

typedef struct pgpipe_claim_stats {
    long long batches;        /* batches claimed */
    long long claimed;        /* rows claimed */
    long long done;           /* rows completed */
    long long retried;        /* failed rows scheduled for another attempt */
    long long dead;           /* rows moved to the dead-letter queue */
    long long fenced;         /* completions refused: the lease was lost */
    long long released;       /* rows given back without an attempt counted */
    long long abandoned;      /* rows of a batch that ended on an error whose
                                 outcome could not be recorded (their attempt
                                 count stands; they are claimable again) */
} pgpipe_claim_stats;
/* Every claimed row ends in exactly one counter: once no batch is in flight,
** claimed == done + retried + dead + fenced + released + abandoned. A batch
** whose connection was lost stays in flight until a worker records its
** attempt on its next connection (see "Failures" above). */

/* Open a claimer on a connection (not taken over). Prepares its statements
** on the connection (names "pgpipe_claim_<hash>"). *out is set even on
** failure (read the error, then close). */
int pgpipe_claimer_open(pgpipe_claimer **out, PGconn *conn, const pgpipe_claim_options *opt);
/* Claim the next batch: PGPIPE_ROW with *out set, PGPIPE_DONE when no row is
** claimable, or an error. In transactional mode this opens the transaction;
** it ends with pgpipe_claim_complete or pgpipe_claim_release. */
int pgpipe_claim_next(pgpipe_claimer *c, pgpipe_batch **out);
/* Finish a batch: rows not marked failed become processed, failed ones are
** retried or dead-lettered; commits (transactional mode). In lease mode rows
** whose token no longer matches are refused and counted in stats.fenced
** (PGPIPE_BUSY when every row was refused). Frees the batch. When this fails
** (the COMMIT, or the connection), the batch's rows are charged an attempt
** after the rollback, as said under "Failures" above, and the error is
** returned. */
int pgpipe_claim_complete(pgpipe_claimer *c, pgpipe_batch *b);
/* Give a batch back untouched: transactional mode rolls back; lease mode
** clears the lease (token-checked) and takes back the attempt. Frees it. */
int pgpipe_claim_release(pgpipe_claimer *c, pgpipe_batch *b);
/* Claim one batch, run the handler on it, complete it. PGPIPE_OK when a
** batch was processed (*nrows = its size, may be NULL), PGPIPE_DONE when none
** was claimable, an error otherwise (the batch is released). */
int pgpipe_claimer_run_batch(pgpipe_claimer *c, const pgpipe_handler *h, int *nrows);
int pgpipe_claimer_stats(const pgpipe_claimer *c, pgpipe_claim_stats *out);
/* Rows of the table still pending (not processed, matching the filters). */
int pgpipe_claimer_pending(pgpipe_claimer *c, long long *count);
void pgpipe_claimer_close(pgpipe_claimer *c);

/* ---- Worker pool -------------------------------------------------------- */

/* N threads, each holding one connection of a pgpipe_pool for its lifetime,
** each running a claimer. Idle workers LISTEN on the loader's channel and
** sleep on the socket (poll on PQsocket) until a NOTIFY arrives or the
** fallback poll interval passes: no polling load while the queue is empty.
** Behind a transaction pooler (the pool's pgpipe_pool_pooler, or
** claim.pooler) a LISTEN would be lost with its server session: the workers
** do not listen, poll every poll_ms, and say so once at info.
** A worker that lost its connection (server restart) gives it back and
** acquires a new one with backoff. Not available under PGPIPE_OMIT_THREADS. */
#ifndef PGPIPE_OMIT_THREADS

typedef struct pgpipe_workers_options {
    pgpipe_claim_options claim;
    int threads;               /* default 2 */
    const char *channel;       /* LISTEN channel; default "pgpipe_events" (the
                                  COPY loader's), "" = do not listen */
    int poll_ms;               /* fallback poll interval when idle (default 1000) */
    int dlq_alert_threshold;   /* > this many new dead letters within the window
                                  raise an alert (pgpipe_dlq_check_growth); 0 = off */
    int dlq_alert_window_s;    /* default 300 */
} pgpipe_workers_options;

void pgpipe_workers_options_init(pgpipe_workers_options *o);

typedef struct pgpipe_workers_stats {
    pgpipe_claim_stats total;   /* summed over the workers */
    int threads;
    int idle;                   /* workers waiting for work */
    long long wakeups;          /* notifications received */
    long long reconnects;       /* connections replaced after a failure */
    double elapsed_s;           /* since start */
    double events_per_s;        /* done / elapsed */
    double recent_per_s;        /* done over the last stats call interval */
} pgpipe_workers_stats;

/* Start the workers. The pool must have room for opts->threads connections
** (plus one for run_until_empty). The handler is copied (its ud shared by
** every thread: make it thread-safe). opts may be NULL (defaults). *out is
** set even on failure. */
int pgpipe_workers_open(pgpipe_workers **out, pgpipe_pool *pool, const pgpipe_handler *h,
                        const pgpipe_workers_options *opts);
/* Ask the workers to stop: they finish (or release) their current batch and
** return their connections. Only sets an atomic flag and writes one byte to a
** pipe, so it is async-signal-safe: call it from a SIGINT/SIGTERM handler. */
void pgpipe_workers_stop(pgpipe_workers *w);
/* Pause (paused 1) or resume (0) the workers: a paused worker finishes
** the batch it has, then claims nothing (it keeps its connection and looks
** again every 100 ms) until resumed, so pgpipe_workers_run_until_empty
** waits (up to its timeout) while rows wait. Any thread; async-signal-safe.
** pgpipe_workers_paused: 1 while paused. */
void pgpipe_workers_pause(pgpipe_workers *w, int paused);
int pgpipe_workers_paused(const pgpipe_workers *w);
/* 1 once the workers were asked to stop (pgpipe_workers_stop, a signal, or
** an error that stops them all, such as a SQL handler the server refuses to
** prepare); pgpipe_workers_wait then gives the error. */
int pgpipe_workers_stopping(const pgpipe_workers *w);
/* Stop the workers now: pgpipe_workers_stop, and the statement each worker
** runs at this moment is cancelled (PQcancel on a handle made when its
** connection was set up), so a worker stuck in a statement, such as a
** COMMIT waiting for a synchronous standby that is gone, returns. What a
** cancelled statement did is rolled back, except a COMMIT cancelled while
** waiting for a standby: PostgreSQL keeps it committed locally (with a
** WARNING), so it counts as done. Async-signal-safe; call it again when a
** worker still runs (pgpipe_workers_running) and is stuck in another
** statement. */
int pgpipe_workers_cancel(pgpipe_workers *w);
/* How many worker threads have not ended yet (0 once all are done). */
int pgpipe_workers_running(const pgpipe_workers *w);
/* Install SIGINT and SIGTERM handlers that call pgpipe_workers_stop(w). */
int pgpipe_workers_handle_signals(pgpipe_workers *w);
/* Wait until every pending row (matching the filters) is processed or
** dead-lettered, then stop the workers and wait for them. timeout_ms < 0:
** no limit. PGPIPE_BUSY on timeout (the workers keep running). */
int pgpipe_workers_run_until_empty(pgpipe_workers *w, int timeout_ms);
/* Wait for the threads to end (after a stop); returns PGPIPE_OK or the first
** worker's fatal error. */
int pgpipe_workers_wait(pgpipe_workers *w);
int pgpipe_workers_stats_get(pgpipe_workers *w, pgpipe_workers_stats *out);
/* Stop, wait and release everything. NULL is a no-op. */
void pgpipe_workers_close(pgpipe_workers *w);

#endif /* PGPIPE_OMIT_THREADS */
