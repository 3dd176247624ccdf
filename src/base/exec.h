/* ==== Failures and retries ==== */

/* Says whether a failed statement is worth retrying, is the data's fault, or
** neither, and retries a function with bounded, jittered backoff: the pool,
** the loader and the claimer decide with it. No handle: a pgpipe_retry is a
** plain struct of the caller's.
**
** Thread safety: the classifying functions keep no state and may be called
** from any thread; a pgpipe_retry belongs to the thread that uses it. */


/* What to do about a failure, by its SQLSTATE (pgpipe_sqlstate_class):
**   PGPIPE_SQLSTATE_RETRY        the same statement may succeed later: class 08
**       (connection exception), 57P01 admin shutdown, 57P02 crash shutdown,
**       57P03 cannot connect now, 40001 serialization failure, 40P01
**       deadlock, 53300 too many connections, 55P03 lock not available,
**       58030 I/O error;
**   PGPIPE_SQLSTATE_DEAD_LETTER  the data itself is wrong: class 22 (data
**       exception: bad cast, out of range, invalid text) or class 23
**       (integrity constraint violation: NOT NULL, CHECK, unique, foreign
**       key). Retrying the same record cannot succeed, so the claimer
**       dead-letters it at once;
**   PGPIPE_SQLSTATE_GIVE_UP      everything else, and no SQLSTATE at all. Class
**       42 (undefined table, syntax) is here: it is the statement's fault,
**       not the record's, and heals when the handler or the schema is fixed. */
#define PGPIPE_SQLSTATE_GIVE_UP     0
#define PGPIPE_SQLSTATE_RETRY       1
#define PGPIPE_SQLSTATE_DEAD_LETTER 2
int pgpipe_sqlstate_class(const char *sqlstate);
/* 1 when the class of sqlstate is PGPIPE_SQLSTATE_RETRY, else 0. */
int pgpipe_sqlstate_is_transient(const char *sqlstate);
/* 1 when the class of sqlstate is PGPIPE_SQLSTATE_DEAD_LETTER, else 0. */
int pgpipe_sqlstate_is_data_error(const char *sqlstate);
/* 1 when a failed libpq call is worth retrying: the connection is bad (lost
** connection, server restart) or the result's SQLSTATE is transient.
** conn and res may each be NULL. */
int pgpipe_pq_is_transient(const PGconn *conn, const PGresult *res);

/* Bounded exponential backoff with jitter: the one backoff policy of the
** library. The n-th retry waits a random time in [cap/2, cap] where
** cap = min(max_ms, base_ms * 2^n). */
typedef struct pgpipe_retry {
    int max_attempts;   /* total attempts including the first; default 5 */
    int base_ms;        /* default 100 */
    int max_ms;         /* default 5000 */
    int attempt;        /* attempts made so far (state) */
    uint64_t seed;      /* jitter state; 0 seeds from the clock */
} pgpipe_retry;

void pgpipe_retry_init(pgpipe_retry *r, int max_attempts, int base_ms, int max_ms);
/* The delay before the next attempt in ms, counting the attempt as made;
** -1 when no attempt is left. */
int pgpipe_retry_next_delay(pgpipe_retry *r);

/* Call fn until it succeeds, fails for good, or the attempts run out. fn
** returns a result code and sets *transient to 1 when its failure is worth
** retrying. Sleeps between attempts. Returns fn's last result code. */
typedef int (*pgpipe_retry_fn)(void *ud, int attempt, int *transient);
int pgpipe_retry_call(pgpipe_retry *r, pgpipe_retry_fn fn, void *ud);

/* ---- Connection poolers ------------------------------------------------ */

/* Whether server-session state lasts as long as the connection. Behind a
** transaction-mode pooler (pgbouncer pool_mode = transaction, the common
** production set-up) each transaction may run on a different server session,
** so session state does not last: named prepared statements, session
** advisory locks and LISTEN break. The components then use unnamed
** statements, transaction-scoped advisory locks and polling instead.
**   PGPIPE_POOLER_AUTO         decide by pgpipe_pooler_mode (the default of
**                              every options struct)
**   PGPIPE_POOLER_SESSION      session state lasts: a direct connection, or a
**                              session-mode pooler
**   PGPIPE_POOLER_TRANSACTION  it does not */
#define PGPIPE_POOLER_AUTO        0
#define PGPIPE_POOLER_SESSION     1
#define PGPIPE_POOLER_TRANSACTION 2

/* Resolve a configured mode for an open, idle connection. A mode other than
** AUTO is returned as it is. AUTO reads the environment variable
** PGPIPE_POOLER ("session", "transaction" or "auto", in any case; anything else is an
** error), and when it is unset or "auto" asks the server for its backend
** pid: a pooler answers the client with its own cancel key, so a pid that
** differs from PQbackendPID(conn) means one is in between. The pooler's mode
** cannot be read through it, so a detected pooler counts as TRANSACTION,
** which is correct in session mode too (set PGPIPE_POOLER=session to keep
** LISTEN and named statements there). Returns the mode, or -1 with err set
** (the probe failed, or PGPIPE_POOLER holds an unknown value). */
int pgpipe_pooler_mode(PGconn *conn, int configured, pgpipe_error *err);
/* "auto", "session", "transaction" (NULL for an unknown mode). */
const char *pgpipe_pooler_name(int mode);
