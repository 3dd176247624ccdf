/*
** Running statements and deciding what a failure means: one exec-and-check
** family (the server's message and SQLSTATE go into a pgpipe_error with the
** caller's context), one classification of SQLSTATEs into retry / give up /
** dead-letter, one reading of failed connection attempts, and the one
** backoff policy (pgpipe_retry) every retry loop of the library waits with.
*/

#include "pp_base.h"

/* ---- Classification ---------------------------------------------------- */

int pgpipe_sqlstate_class(const char *st)
{
    if (!st || strlen(st) != 5)
        return PGPIPE_SQLSTATE_GIVE_UP;
    static const char *const retry[] = {
        "57P01", /* admin_shutdown */
        "57P02", /* crash_shutdown */
        "57P03", /* cannot_connect_now */
        "40001", /* serialization_failure */
        "40P01", /* deadlock_detected */
        "53300", /* too_many_connections */
        "55P03", /* lock_not_available */
        "58030", /* io_error */
    };
    if (st[0] == '0' && st[1] == '8') /* connection_exception class */
        return PGPIPE_SQLSTATE_RETRY;
    for (size_t i = 0; i < sizeof retry / sizeof retry[0]; i++)
        if (memcmp(st, retry[i], 5) == 0)
            return PGPIPE_SQLSTATE_RETRY;
    /* class 22 data exception, class 23 integrity constraint violation */
    if (st[0] == '2' && (st[1] == '2' || st[1] == '3'))
        return PGPIPE_SQLSTATE_DEAD_LETTER;
    return PGPIPE_SQLSTATE_GIVE_UP;
}

int pgpipe_sqlstate_is_transient(const char *st)
{
    return pgpipe_sqlstate_class(st) == PGPIPE_SQLSTATE_RETRY;
}

int pgpipe_sqlstate_is_data_error(const char *st)
{
    return pgpipe_sqlstate_class(st) == PGPIPE_SQLSTATE_DEAD_LETTER;
}

int pgpipe_pq_is_transient(const PGconn *conn, const PGresult *res)
{
    if (res) {
        const char *st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (st && *st)
            return pgpipe_sqlstate_is_transient(st);
    }
    /* no SQLSTATE: a client-side failure; worth retrying if the link broke */
    return conn != NULL && PQstatus(conn) == CONNECTION_BAD;
}

/* A failed connection attempt carries no SQLSTATE, only libpq's or the
** server's (English) message. */
PGPIPE_PRIVATE int pp_connect_failure_class(const PGconn *pg)
{
    /* retrying cannot fix these */
    static const char *const give_up[] = {
        "authentication failed", "does not exist", "no pg_hba.conf entry",
        "no password supplied", "not permitted to log in", "permission denied",
        "invalid connection option", "invalid sslmode", "invalid port",
    };
    /* refused or reset while the server starts, stops or recovers */
    static const char *const retry[] = {
        "starting up", "shutting down", "Connection refused", "No such file",
        "recovery", "terminat", "closed",
    };
    if (!pg)
        return PP_CONNECT_UNKNOWN;
    if (PQconnectionNeedsPassword(pg))
        return PGPIPE_SQLSTATE_GIVE_UP;
    const char *m = PQerrorMessage(pg);
    for (size_t i = 0; i < sizeof give_up / sizeof give_up[0]; i++)
        if (strstr(m, give_up[i]))
            return PGPIPE_SQLSTATE_GIVE_UP;
    for (size_t i = 0; i < sizeof retry / sizeof retry[0]; i++)
        if (strstr(m, retry[i]))
            return PGPIPE_SQLSTATE_RETRY;
    return PP_CONNECT_UNKNOWN;
}

/* ---- Running statements ------------------------------------------------ */

PGPIPE_PRIVATE int pp_exec_check(PGconn *conn, PGresult *r, PGresult **res, pgpipe_error *err,
                                 const char *context)
{
    ExecStatusType st = PQresultStatus(r); /* PGRES_FATAL_ERROR when r is NULL */
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) {
        if (res)
            *res = r;
        else
            PQclear(r);
        return PGPIPE_OK;
    }
    if (res)
        *res = NULL;
    pp_err_pq(err, conn, r, context);
    PQclear(r);
    return PGPIPE_DB;
}

PGPIPE_PRIVATE int pp_exec(PGconn *conn, const char *sql, int nparams,
                           const char *const *params, PGresult **res, pgpipe_error *err,
                           const char *context)
{
    PGresult *r = nparams > 0 || params
                      ? PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0)
                      : PQexec(conn, sql);
    return pp_exec_check(conn, r, res, err, context);
}

/* Is a time filter's value a point in time (else an interval back from
** now)? A point has a year (four digits then '-', '/', '.', 'T' or the
** end: "2026-11-01", "Nov 1 2026") or is one of PostgreSQL's special
** words; "1 day", "90 minutes", "P1000D", "01:30" are intervals. */
static int pp_time_is_point(const char *v)
{
    static const char *const words[] = { "now",   "today",     "yesterday", "tomorrow",
                                         "epoch", "infinity", "-infinity", "+infinity" };
    while (isspace((unsigned char)*v))
        v++;
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i]);
        if (!strncasecmp(v, words[i], n) && (!v[n] || isspace((unsigned char)v[n])))
            return 1;
    }
    for (const char *p = v; *p; p++) {
        if (!isdigit((unsigned char)*p) || (p > v && isdigit((unsigned char)p[-1])))
            continue;
        size_t n = 0;
        while (isdigit((unsigned char)p[n]))
            n++;
        if (n == 4 && (!p[4] || strchr("-/.T", p[4])))
            return 1;
    }
    return 0;
}

PGPIPE_PRIVATE int pp_time_arg(PGconn *conn, const char *what, const char *value, char *out,
                               size_t cap, pgpipe_error *err)
{
    if (!value || !*value)
        return pp_err(err, PGPIPE_MISUSE, "%s: empty: give a time (such as 2026-11-01 08:00 or "
                      "yesterday) or an interval back from now (such as '1 day')", what);
    /* one statement without a FROM: evaluated even when the query it
    ** serves would find no rows (a bad value is said, never ignored) */
    const char *sql = pp_time_is_point(value)
        ? "SELECT $1::timestamptz::text"
        : "SELECT (now() - CASE WHEN $1::interval < interval '0' THEN -$1::interval "
          "ELSE $1::interval END)::text";
    const char *v[1] = { value };
    PGresult *r = NULL;
    pgpipe_error e;
    pgpipe_error_clear(&e);
    if (pp_exec(conn, sql, 1, v, &r, &e, what) != PGPIPE_OK) {
        if (e.sqlstate[0] != '2' || e.sqlstate[1] != '2') { /* not a data exception */
            if (err)
                *err = e;
            return e.code;
        }
        int rc = pp_err(err, PGPIPE_PARSE, "%s \"%s\" is not a time (such as 2026-11-01 08:00 or "
                        "yesterday) or an interval back from now (such as '1 day' or '2 hours')",
                        what, value);
        if (err)
            memcpy(err->sqlstate, e.sqlstate, sizeof err->sqlstate);
        return rc;
    }
    int rc = PGPIPE_OK;
    if (PQntuples(r) != 1 || PQgetisnull(r, 0, 0) || strlen(PQgetvalue(r, 0, 0)) >= cap)
        rc = pp_err(err, PGPIPE_DB, "%s: no time came back for \"%s\"", what, value);
    else
        strcpy(out, PQgetvalue(r, 0, 0));
    PQclear(r);
    return rc;
}

PGPIPE_PRIVATE int pp_exec_prepared(PGconn *conn, const char *name, int nparams,
                                    const char *const *params, PGresult **res,
                                    pgpipe_error *err, const char *context)
{
    return pp_exec_check(conn, PQexecPrepared(conn, name, nparams, params, NULL, NULL, 0), res,
                         err, context);
}

PGPIPE_PRIVATE int pp_copy_in_start(PGconn *conn, const char *sql, pgpipe_error *err,
                                    const char *context)
{
    PGresult *r = PQexec(conn, sql);
    int rc = PGPIPE_OK;
    if (PQresultStatus(r) != PGRES_COPY_IN)
        rc = pp_err_pq(err, conn, r, context);
    PQclear(r);
    return rc;
}

PGPIPE_PRIVATE int pp_prepare(PGconn *conn, const char *name, const char *sql,
                              pgpipe_error *err, const char *context)
{
    PGresult *r = PQprepare(conn, name, sql, 0, NULL);
    int rc = PGPIPE_OK;
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        /* 42P05: already prepared on this connection (the names are hashes
        ** of the text, so it is the same statement) */
        if (!st || strcmp(st, "42P05") != 0)
            rc = pp_err_pq(err, conn, r, context);
    }
    PQclear(r);
    return rc;
}

PGPIPE_PRIVATE void pp_rollback_open(PGconn *conn)
{
    if (!conn || PQstatus(conn) != CONNECTION_OK)
        return;
    PGTransactionStatusType t = PQtransactionStatus(conn);
    if (t == PQTRANS_INTRANS || t == PQTRANS_INERROR)
        PQclear(PQexec(conn, "ROLLBACK"));
}

PGPIPE_PRIVATE void pp_cancel_arm(pp_cancel_slot *s, PGconn *conn)
{
    PGcancel *c = conn && PQstatus(conn) == CONNECTION_OK ? PQgetCancel(conn) : NULL;
    PGcancel *old = atomic_exchange(&s->cancel, c);
    /* a fire that loaded old before the exchange holds busy up until done */
    while (atomic_load(&s->busy))
        pgpipe_sleep_ms(1);
    if (old)
        PQfreeCancel(old);
}

PGPIPE_PRIVATE int pp_cancel_fire(pp_cancel_slot *s)
{
    atomic_fetch_add(&s->busy, 1);
    PGcancel *c = atomic_load(&s->cancel);
    int sent = 0;
    if (c) {
        char err[256];
        sent = PQcancel(c, err, sizeof err);
    }
    atomic_fetch_sub(&s->busy, 1);
    return sent;
}

PGPIPE_PRIVATE void pp_notice_to_log(void *component, const char *message)
{
    int n = (int)strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' '))
        n--;
    pp_logf(PGPIPE_LOG_INFO, component ? (const char *)component : "pgpipe", "server: %.*s", n,
            message);
}

/* ---- Backoff ----------------------------------------------------------- */

void pgpipe_retry_init(pgpipe_retry *r, int max_attempts, int base_ms, int max_ms)
{
    r->max_attempts = max_attempts > 0 ? max_attempts : 5;
    r->base_ms = base_ms > 0 ? base_ms : 100;
    r->max_ms = max_ms > 0 ? max_ms : 5000;
    if (r->max_ms < r->base_ms)
        r->max_ms = r->base_ms;
    r->attempt = 0;
    r->seed = 0;
}

int pgpipe_retry_next_delay(pgpipe_retry *r)
{
    if (r->max_attempts <= 0)
        pgpipe_retry_init(r, r->max_attempts, r->base_ms, r->max_ms);
    r->attempt++;
    if (r->attempt >= r->max_attempts)
        return -1;
    if (r->seed == 0)
        r->seed = pp_rand_seed();
    int n = r->attempt - 1;
    long long cap = r->base_ms;
    while (n-- > 0 && cap < r->max_ms)
        cap *= 2;
    if (cap > r->max_ms)
        cap = r->max_ms;
    long long half = cap / 2;
    return (int)(half + (long long)(pp_rand_next(&r->seed) % (uint64_t)(cap - half + 1)));
}

int pgpipe_retry_call(pgpipe_retry *r, pgpipe_retry_fn fn, void *ud)
{
    if (!r || !fn)
        return PGPIPE_MISUSE;
    for (;;) {
        int transient = 0;
        int rc = fn(ud, r->attempt + 1, &transient);
        if (rc == PGPIPE_OK || !transient)
            return rc;
        int delay = pgpipe_retry_next_delay(r);
        if (delay < 0)
            return rc;
        pp_logf(PGPIPE_LOG_INFO, "retry", "attempt %d failed (%s), retrying in %d ms",
                r->attempt, pgpipe_errstr(rc), delay);
        pgpipe_sleep_ms(delay);
    }
}

/* ---- Connection poolers ------------------------------------------------ */

const char *pgpipe_pooler_name(int mode)
{
    switch (mode) {
    case PGPIPE_POOLER_AUTO: return "auto";
    case PGPIPE_POOLER_SESSION: return "session";
    case PGPIPE_POOLER_TRANSACTION: return "transaction";
    default: return NULL;
    }
}

int pgpipe_pooler_mode(PGconn *conn, int configured, pgpipe_error *err)
{
    if (configured == PGPIPE_POOLER_SESSION || configured == PGPIPE_POOLER_TRANSACTION)
        return configured;
    if (configured != PGPIPE_POOLER_AUTO) {
        pp_err(err, PGPIPE_MISUSE, "pooler mode %d is not one of PGPIPE_POOLER_AUTO, "
               "PGPIPE_POOLER_SESSION, PGPIPE_POOLER_TRANSACTION", configured);
        return -1;
    }
    const char *env = getenv("PGPIPE_POOLER");
    if (env && *env && strcasecmp(env, "auto") != 0) {
        if (strcasecmp(env, "session") == 0)
            return PGPIPE_POOLER_SESSION;
        if (strcasecmp(env, "transaction") == 0)
            return PGPIPE_POOLER_TRANSACTION;
        pp_err(err, PGPIPE_MISUSE, "PGPIPE_POOLER=\"%.40s\": expected session, transaction "
               "or auto", env);
        return -1;
    }
    if (!conn) {
        pp_err(err, PGPIPE_MISUSE, "pgpipe_pooler_mode: no connection");
        return -1;
    }
    PGresult *r = NULL;
    if (pp_exec(conn, "SELECT pg_backend_pid()", 0, NULL, &r, err,
                "probing for a connection pooler") != PGPIPE_OK)
        return -1;
    long server_pid = PQntuples(r) == 1 ? strtol(PQgetvalue(r, 0, 0), NULL, 10) : 0;
    PQclear(r);
    return server_pid == PQbackendPID(conn) ? PGPIPE_POOLER_SESSION : PGPIPE_POOLER_TRANSACTION;
}
