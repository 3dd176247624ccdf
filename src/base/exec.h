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
