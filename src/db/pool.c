/*
** Connection pool: sizing (pool_size + max_overflow), a FIFO queue of
** waiters with direct hand-off, health checks (pre-ping, lifetime, idle
** timeout, invalidation after a broken connection), session reset on
** release, a prepared-statement cache per connection, pipeline mode, and
** acquire-wait statistics.
**
** Locking: one mutex per pool guards every counter and list. Network work
** (connect, ping, rollback, reset, close) is always done outside it, by the
** thread that owns the connection or the slot at that moment. A "slot" is a
** unit of p->total: a connection that is open, or being opened/validated by
** one thread.
**
** Fairness: an acquire that finds no idle connection joins a FIFO queue. A
** healthy connection that comes back (or a new one) goes straight to the
** first waiter. When the pool may grow (or a connection was closed while
** others wait), a short-lived connector thread opens a connection *for the
** pool* and hands it to whoever is first in the queue then - so nobody waits
** for a connect while an existing connection frees up sooner, and nobody
** overtakes a waiter. (Under PGPIPE_OMIT_THREADS, or if a thread cannot be
** started, a queued waiter does that job itself, keeping its place.)
*/

#include "pp_db.h"
#include <poll.h>

#ifndef PGPIPE_OMIT_THREADS
typedef pthread_cond_t pool_cond;
#endif

typedef struct pool_stmt {
    uint64_t hash;
    char *sql;
    uint64_t used; /* LRU tick */
} pool_stmt;

struct pgpipe_conn {
    pp_handle hdr;
    pgpipe_pool *pool;
    PGconn *pg;
    pgpipe_conn *next;        /* idle stack */
    int64_t created_us;
    int64_t expires_us;       /* 0: never */
    int64_t released_us;      /* last time it was returned (or made) */
    int64_t validated_us;     /* last connect or successful ping */
    pool_stmt *stmts;
    int nstmts;
    uint64_t tick;
    int in_pipeline;
    pgpipe_pipeline *pipeline; /* the pipeline opened on it and not yet closed */
    int pooler;               /* the pool's mode, resolved before it was made */
};

typedef struct pool_waiter {
    struct pool_waiter *next;
    pgpipe_conn *conn; /* handed over (the waiter left the queue) */
    int queued;
    unsigned perm_gen; /* p->perm_gen when it queued */
    int job;           /* owns a slot to open a connection in */
    int connecting;    /* opening it now (the lock is released meanwhile) */
#ifndef PGPIPE_OMIT_THREADS
    pool_cond cv;
#endif
} pool_waiter;

/* Acquire waits: values below 16 us exactly, then 16 buckets per power of 2. */
#define POOL_HIST_SUB 16
#define POOL_HIST_N (POOL_HIST_SUB + 44 * POOL_HIST_SUB)

struct pgpipe_pool {
    pp_handle hdr;
    pp_mutex mu;
#ifndef PGPIPE_OMIT_THREADS
    pool_cond close_cv;
    pthread_condattr_t cattr;
#endif
    pgpipe_pool_options opt;
    char *conninfo;
    char *appname;
    char *reset_sql;
    int reset_clears_cache;
    int set_connect_timeout;
    char connect_timeout[16];
    int pooler;               /* PGPIPE_POOLER_SESSION or _TRANSACTION once the
                                 first connection resolved it; AUTO before */
    int said_lost;            /* warned that prepared statements vanish */

    pgpipe_conn *idle;        /* LIFO: the most recently used on top */
    int nidle;
    int total;                /* slots: open connections + ones being opened */
    int in_use;               /* checked out by callers */
    pool_waiter *whead, *wtail;
    int nwaiters;
    int acquirers;            /* threads inside acquire */
    int connectors;           /* connector threads running */
    unsigned perm_gen;        /* bumped by a connect failure retrying cannot fix */
    pgpipe_error perm_err;    /* ... and that failure */
    pgpipe_error connect_err; /* the last connect failure */
    int64_t connect_err_us;   /* when it happened */
    int closing;
    int abandoned;            /* close returned with connections out */
    int64_t invalid_before_us;
    int64_t next_reap_us;
    uint64_t seed;

    long long created, closed, acquired, timeouts, connect_failures, pings, broken;
    uint64_t hist[POOL_HIST_N];
    long long wait_count;
    int64_t wait_sum_us, wait_max_us;
};

/* ---- small helpers ---------------------------------------------------- */

#ifndef PGPIPE_OMIT_THREADS
static int pool_cond_init(pgpipe_pool *p, pool_cond *cv)
{
    return pthread_cond_init(cv, &p->cattr) == 0 ? PGPIPE_OK : PGPIPE_NOMEM;
}

/* Wait on cv until signalled or the monotonic deadline (us) passes;
** returns 1 on timeout. */
static int pool_cond_wait_until(pgpipe_pool *p, pool_cond *cv, int64_t deadline_us)
{
    int64_t now = pgpipe_now_us();
    if (now >= deadline_us)
        return 1;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t ns = (int64_t)ts.tv_nsec + (deadline_us - now) * 1000;
    ts.tv_sec += (time_t)(ns / 1000000000);
    ts.tv_nsec = (long)(ns % 1000000000);
    return pthread_cond_timedwait(cv, &p->mu, &ts) == ETIMEDOUT;
}
#endif

static int pool_max_total(const pgpipe_pool *p)
{
    return p->opt.pool_size + p->opt.max_overflow;
}

static int pool_hist_bucket(int64_t v)
{
    if (v < POOL_HIST_SUB)
        return v < 0 ? 0 : (int)v;
    int e = 4; /* highest set bit, >= 4 here */
    while (e < 62 && (v >> (e + 1)) != 0)
        e++;
    int sub = (int)((v >> (e - 4)) & (POOL_HIST_SUB - 1));
    int b = POOL_HIST_SUB + (e - 4) * POOL_HIST_SUB + sub;
    return b < POOL_HIST_N ? b : POOL_HIST_N - 1;
}

/* The middle of a bucket's range. */
static int64_t pool_hist_value(int b)
{
    if (b < POOL_HIST_SUB)
        return b;
    int e = (b - POOL_HIST_SUB) / POOL_HIST_SUB + 4;
    int sub = (b - POOL_HIST_SUB) % POOL_HIST_SUB;
    int64_t lo = (int64_t)(POOL_HIST_SUB + sub) << (e - 4);
    int64_t width = (int64_t)1 << (e - 4);
    return lo + width / 2;
}

static int64_t pool_hist_percentile(const uint64_t *hist, long long count, double q,
                                    int64_t max)
{
    if (count <= 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < POOL_HIST_N; b++) {
        seen += hist[b];
        if (seen >= rank) {
            int64_t v = pool_hist_value(b);
            return v > max ? max : v;
        }
    }
    return max;
}

static void pool_record_wait_locked(pgpipe_pool *p, int64_t us)
{
    p->hist[pool_hist_bucket(us)]++;
    p->wait_count++;
    p->wait_sum_us += us;
    if (us > p->wait_max_us)
        p->wait_max_us = us;
}

/* Statement text that empties the server's prepared statements. */
static int pool_sql_drops_statements(const char *sql)
{
    char norm[64];
    size_t n = 0;
    int space = 0;
    for (const char *s = sql; *s && n < sizeof norm - 1; s++) {
        if (isspace((unsigned char)*s)) {
            space = n > 0;
            continue;
        }
        if (space && n < sizeof norm - 1)
            norm[n++] = ' ';
        space = 0;
        norm[n++] = (char)toupper((unsigned char)*s);
    }
    norm[n] = '\0';
    return strstr(norm, "DISCARD ALL") != NULL || strstr(norm, "DEALLOCATE") != NULL;
}

/* ---- connections ------------------------------------------------------ */

static void pool_pipeline_detach(pgpipe_conn *c);

static void pool_conn_free(pgpipe_conn *c)
{
    if (!c)
        return;
    pool_pipeline_detach(c);
    if (c->pg)
        PQfinish(c->pg);
    for (int i = 0; i < c->nstmts; i++)
        pp_free(c->stmts[i].sql);
    pp_free(c->stmts);
    pp_free(c);
}

/* Open one connection (no lock held). On failure returns NULL, sets err, and
** *permanent tells whether retrying is pointless. */
static pgpipe_conn *pool_connect(pgpipe_pool *p, pgpipe_error *err, int *permanent)
{
    const char *keys[5], *vals[5];
    int n = 0;
    *permanent = 0;
    /* Entries before "dbname" are defaults the user's string overrides. The
    ** application name is libpq's fallback: an application_name from the
    ** conninfo, a service file or PGAPPNAME wins over it. */
    keys[n] = "fallback_application_name";
    vals[n++] = p->appname ? p->appname : "pgpipe";
    if (p->set_connect_timeout) {
        keys[n] = "connect_timeout";
        vals[n++] = p->connect_timeout;
    }
    if (p->conninfo) {
        keys[n] = "dbname";
        vals[n++] = p->conninfo;
    }
    keys[n] = NULL;
    vals[n] = NULL;

    pgpipe_conn *c = pp_handle_new(sizeof *c);
    if (!c) {
        *permanent = 1;
        pp_err_nomem(err);
        return NULL;
    }
    c->pool = p;
    c->pg = PQconnectdbParams(keys, vals, 1);
    if (!c->pg) {
        pp_free(c);
        *permanent = 1;
        pp_err_nomem(err);
        return NULL;
    }
    if (PQstatus(c->pg) != CONNECTION_OK) {
        /* only a failure known to be final stops the pool's retries:
        ** refused, socket missing, "starting up", "shutting down", too
        ** many clients and the unknown are retried until the deadline */
        *permanent = pp_connect_failure_class(c->pg) == PGPIPE_SQLSTATE_GIVE_UP;
        pp_err_pq(err, c->pg, NULL, "cannot connect");
        pool_conn_free(c);
        return NULL;
    }
    /* server notices go to the log, not to stderr (libpq's default); a
    ** caller can install its own processor on pgpipe_conn_pg() */
    PQsetNoticeProcessor(c->pg, pp_notice_to_log, (void *)"pool");
    /* the pooler mode, once per pool: racing first connections probe alike */
    pp_mutex_lock(&p->mu);
    int pooler = p->pooler;
    pp_mutex_unlock(&p->mu);
    if (pooler == PGPIPE_POOLER_AUTO) {
        pooler = pgpipe_pooler_mode(c->pg, p->opt.pooler, err);
        if (pooler < 0) {
            *permanent = err->code == PGPIPE_MISUSE;
            pool_conn_free(c);
            return NULL;
        }
        pp_mutex_lock(&p->mu);
        if (p->pooler == PGPIPE_POOLER_AUTO) {
            p->pooler = pooler;
            pp_logf(PGPIPE_LOG_DEBUG, "pool", "pooler mode: %s", pgpipe_pooler_name(pooler));
        }
        pp_mutex_unlock(&p->mu);
    }
    c->pooler = pooler;
    int64_t now = pgpipe_now_us();
    c->created_us = c->released_us = c->validated_us = now;
    return c;
}

/* Set the lifetime of a new connection (lock held: uses the pool's seed). */
static void pool_conn_born_locked(pgpipe_pool *p, pgpipe_conn *c)
{
    p->created++;
    if (p->opt.max_lifetime_ms > 0) {
        int64_t life = (int64_t)p->opt.max_lifetime_ms * 1000;
        int jitter = p->opt.lifetime_jitter_ms;
        if (jitter > p->opt.max_lifetime_ms / 2)
            jitter = p->opt.max_lifetime_ms / 2;
        if (jitter > 0)
            life -= (int64_t)(pp_rand_next(&p->seed) % ((uint64_t)jitter * 1000 + 1));
        c->expires_us = c->created_us + life;
    }
}

static int pool_conn_expired(const pgpipe_conn *c, int64_t now)
{
    return c->expires_us != 0 && now >= c->expires_us;
}

/* Empty query: one round trip, proves the server still answers. */
static int pool_ping(pgpipe_conn *c)
{
    if (PQstatus(c->pg) != CONNECTION_OK)
        return 0;
    return pp_exec(c->pg, "", 0, NULL, NULL, NULL, NULL) == PGPIPE_OK &&
           PQstatus(c->pg) == CONNECTION_OK &&
           PQtransactionStatus(c->pg) == PQTRANS_IDLE;
}

/* Bring a returned connection back to a clean session (no lock held).
** Returns 1 when it can be reused. */
static int pool_conn_reset(pgpipe_conn *c)
{
    PGconn *pg = c->pg;
    if (PQstatus(pg) != CONNECTION_OK || c->in_pipeline ||
        PQpipelineStatus(pg) != PQ_PIPELINE_OFF || PQisnonblocking(pg))
        return 0;
    switch (PQtransactionStatus(pg)) {
    case PQTRANS_IDLE:
        break;
    case PQTRANS_INTRANS:
    case PQTRANS_INERROR: {
        if (pp_exec(pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL) != PGPIPE_OK ||
            PQtransactionStatus(pg) != PQTRANS_IDLE)
            return 0;
        break;
    }
    default: /* ACTIVE (results unread, COPY in progress) or UNKNOWN */
        return 0;
    }
    pgpipe_pool *p = c->pool;
    if (p->reset_sql) {
        if (pp_exec(pg, p->reset_sql, 0, NULL, NULL, NULL, NULL) != PGPIPE_OK) {
            pp_logf(PGPIPE_LOG_WARN, "pool", "reset statement failed, closing the connection: %s",
                    PQerrorMessage(pg));
            return 0;
        }
        if (PQtransactionStatus(pg) != PQTRANS_IDLE)
            return 0;
        if (p->reset_clears_cache)
            pgpipe_conn_clear_cache(c);
    }
    PGnotify *n;
    PQconsumeInput(pg);
    while ((n = PQnotifies(pg)) != NULL)
        PQfreemem(n);
    return PQstatus(pg) == CONNECTION_OK;
}

/* ---- waiters and slots (lock held) ------------------------------------ */

static void pool_wake(pool_waiter *w)
{
#ifndef PGPIPE_OMIT_THREADS
    pthread_cond_signal(&w->cv);
#else
    (void)w;
#endif
}

static void pool_enqueue_locked(pgpipe_pool *p, pool_waiter *w, int at_head)
{
    w->queued = 1;
    if (at_head) {
        w->next = p->whead;
        p->whead = w;
        if (!p->wtail)
            p->wtail = w;
    } else {
        w->next = NULL;
        if (p->wtail)
            p->wtail->next = w;
        else
            p->whead = w;
        p->wtail = w;
    }
    p->nwaiters++;
}

static void pool_remove_waiter_locked(pgpipe_pool *p, pool_waiter *w)
{
    pool_waiter **pp = &p->whead, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = w->next;
        if (p->wtail == w)
            p->wtail = prev;
        w->next = NULL;
        w->queued = 0;
        p->nwaiters--;
    }
}

/* A healthy connection nobody holds: to the first waiter, else idle. Returns
** a connection the caller must close unlocked (an extra one while pool_size
** are idle), or NULL. */
static pgpipe_conn *pool_deliver_locked(pgpipe_pool *p, pgpipe_conn *c, int64_t now)
{
    pool_waiter *w = p->whead;
    c->released_us = now;
    if (w) {
        pool_remove_waiter_locked(p, w);
        w->conn = c;
        p->in_use++; /* the waiter owns it from now */
        pool_wake(w);
        return NULL;
    }
    if (p->closing || p->nidle >= p->opt.pool_size) {
        p->closed++;
        p->total--;
        return c;
    }
    c->next = p->idle;
    p->idle = c;
    p->nidle++;
    return NULL;
}

#ifndef PGPIPE_OMIT_THREADS
static void *pool_connector_main(void *arg);
#endif

/* A slot is reserved (counted in p->total) and someone waits: get a
** connection opened in it - by a connector thread, else by the first queued
** waiter that has no such job yet; with neither, drop the slot. */
static void pool_grow_locked(pgpipe_pool *p)
{
#ifndef PGPIPE_OMIT_THREADS
    pthread_attr_t a;
    if (pthread_attr_init(&a) == 0) {
        pthread_t t;
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int ok = pthread_create(&t, &a, pool_connector_main, p) == 0;
        pthread_attr_destroy(&a);
        if (ok) {
            p->connectors++;
            return;
        }
    }
#endif
    for (pool_waiter *w = p->whead; w; w = w->next) {
        if (!w->job && !w->connecting) {
            w->job = 1;
            pool_wake(w);
            return;
        }
    }
    p->total--;
}

/* A slot became free: refill it when someone waits, else drop it. */
static void pool_slot_freed_locked(pgpipe_pool *p)
{
    if (!p->closing && p->whead)
        pool_grow_locked(p);
    else
        p->total--;
}

static void pool_signal_close_locked(pgpipe_pool *p)
{
#ifndef PGPIPE_OMIT_THREADS
    if (p->closing)
        pthread_cond_broadcast(&p->close_cv);
#else
    (void)p;
#endif
}

/* Idle connections past their idle timeout (above min_idle) or lifetime are
** unlinked and returned as a list for the caller to close unlocked. */
static pgpipe_conn *pool_reap_locked(pgpipe_pool *p, int64_t now)
{
    if (now < p->next_reap_us || !p->idle)
        return NULL;
    p->next_reap_us = now + 100000;
    pgpipe_conn *dead = NULL, **pp = &p->idle;
    int64_t idle_limit = (int64_t)p->opt.idle_timeout_ms * 1000;
    while (*pp) {
        pgpipe_conn *c = *pp;
        int old = idle_limit > 0 && now - c->released_us >= idle_limit && p->nidle > p->opt.min_idle;
        if (old || pool_conn_expired(c, now)) {
            *pp = c->next;
            c->next = dead;
            dead = c;
            p->nidle--;
            p->closed++;
            pool_slot_freed_locked(p);
        } else {
            pp = &c->next;
        }
    }
    return dead;
}

static void pool_free_list(pgpipe_conn *c)
{
    while (c) {
        pgpipe_conn *next = c->next;
        pool_conn_free(c);
        c = next;
    }
}

static void pool_destroy(pgpipe_pool *p)
{
    pool_free_list(p->idle);
#ifndef PGPIPE_OMIT_THREADS
    pthread_cond_destroy(&p->close_cv);
    pthread_condattr_destroy(&p->cattr);
    pthread_mutex_destroy(&p->mu);
#endif
    pp_free(p->conninfo);
    pp_free(p->appname);
    pp_free(p->reset_sql);
    p->hdr.magic = 0;
    pp_free(p);
}

/* After close gave up waiting, whoever brings the last count to zero frees. */
static int pool_should_free_locked(const pgpipe_pool *p)
{
    return p->abandoned && p->in_use == 0 && p->acquirers == 0 && p->connectors == 0;
}

static void pool_note_connect_failure_locked(pgpipe_pool *p, const pgpipe_error *ce, int permanent)
{
    p->connect_failures++;
    p->connect_err = *ce;
    p->connect_err_us = pgpipe_now_us();
    if (permanent) {
        p->perm_gen++;
        p->perm_err = *ce;
        for (pool_waiter *w = p->whead; w; w = w->next)
            pool_wake(w);
    }
}

/* The backoff between failed connects, in a connector thread or an
** acquiring caller: short, since someone is waiting, and without a limit on
** attempts (the acquire deadline and the waiters' presence end them). */
static void pool_backoff_init(pgpipe_retry *r)
{
    pgpipe_retry_init(r, INT_MAX, 10, 500);
}

#ifndef PGPIPE_OMIT_THREADS
/* Opens one connection for the pool and hands it to the first waiter.
** Transient failures are retried with backoff while anyone still waits. */
static void *pool_connector_main(void *arg)
{
    pgpipe_pool *p = arg;
    pgpipe_retry backoff;
    pool_backoff_init(&backoff);
    pgpipe_conn *extra = NULL;
    for (;;) {
        int permanent = 0;
        pgpipe_error ce;
        pgpipe_conn *c = pool_connect(p, &ce, &permanent);
        pp_mutex_lock(&p->mu);
        if (c) {
            pool_conn_born_locked(p, c);
            extra = pool_deliver_locked(p, c, pgpipe_now_us());
            break;
        }
        pool_note_connect_failure_locked(p, &ce, permanent);
        if (permanent || p->closing || !p->whead) {
            p->total--;
            break;
        }
        pp_mutex_unlock(&p->mu);
        int d = pgpipe_retry_next_delay(&backoff);
        pp_logf(PGPIPE_LOG_INFO, "pool", "connect failed, retrying in %d ms: %s", d, ce.message);
        pgpipe_sleep_ms(d);
    }
    p->connectors--;
    pool_signal_close_locked(p);
    int free_pool = pool_should_free_locked(p);
    pp_mutex_unlock(&p->mu);
    pool_conn_free(extra);
    if (free_pool)
        pool_destroy(p);
    return NULL;
}
#endif

/* ---- options and open ------------------------------------------------- */

void pgpipe_pool_options_init(pgpipe_pool_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->pool_size = 5;
    o->max_overflow = 10;
    o->min_idle = 1;
    o->acquire_timeout_ms = 30000;
    o->connect_timeout_s = 10;
    o->max_lifetime_ms = 1800000;
    o->lifetime_jitter_ms = 60000;
    o->idle_timeout_ms = 600000;
    o->pre_ping_ms = 500;
    o->close_timeout_ms = 5000;
    o->stmt_cache_size = 100;
    o->application_name = "pgpipe";
    o->reset_sql = NULL;
    o->pooler = PGPIPE_POOLER_AUTO;
}

static int pool_check_options(pgpipe_error *e, const pgpipe_pool_options *o)
{
    if (o->pool_size < 1)
        return pp_err(e, PGPIPE_MISUSE, "pool option pool_size must be at least 1 (got %d)",
                      o->pool_size);
    if (o->max_overflow < 0)
        return pp_err(e, PGPIPE_MISUSE, "pool option max_overflow must not be negative (got %d)",
                      o->max_overflow);
    if (o->pool_size > 100000 || o->max_overflow > 100000)
        return pp_err(e, PGPIPE_MISUSE, "pool options pool_size/max_overflow are too large");
    if (o->min_idle < 0 || o->min_idle > o->pool_size)
        return pp_err(e, PGPIPE_MISUSE,
                      "pool option min_idle must be between 0 and pool_size %d (got %d)",
                      o->pool_size, o->min_idle);
    if (o->acquire_timeout_ms < 0 || o->connect_timeout_s < 0 || o->max_lifetime_ms < 0 ||
        o->lifetime_jitter_ms < 0 || o->idle_timeout_ms < 0 || o->close_timeout_ms < 0 ||
        o->stmt_cache_size < 0)
        return pp_err(e, PGPIPE_MISUSE,
                      "pool options acquire_timeout_ms, connect_timeout_s, max_lifetime_ms, "
                      "lifetime_jitter_ms, idle_timeout_ms, close_timeout_ms and "
                      "stmt_cache_size must not be negative");
    if (o->pooler != PGPIPE_POOLER_AUTO && o->pooler != PGPIPE_POOLER_SESSION &&
        o->pooler != PGPIPE_POOLER_TRANSACTION)
        return pp_err(e, PGPIPE_MISUSE, "pool option pooler must be PGPIPE_POOLER_AUTO, "
                      "_SESSION or _TRANSACTION (got %d)", o->pooler);
    if (o->pre_ping_ms < -1)
        return pp_err(e, PGPIPE_MISUSE, "pool option pre_ping_ms must be -1 (never) or more (got %d)",
                      o->pre_ping_ms);
    return PGPIPE_OK;
}

/* A conninfo that looks like key=value or a URI is parsed now, so a typo is
** reported at open, not at the first acquire. */
static int pool_check_conninfo(pgpipe_error *e, const char *ci)
{
    if (!ci || !*ci)
        return PGPIPE_OK;
    int looks = strchr(ci, '=') != NULL || strncmp(ci, "postgresql://", 13) == 0 ||
                strncmp(ci, "postgres://", 11) == 0;
    if (!looks)
        return PGPIPE_OK; /* a database name */
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(ci, &msg);
    if (!opts) {
        int rc = pp_err(e, PGPIPE_MISUSE, "invalid connection string: %s",
                        msg ? msg : "out of memory");
        if (msg)
            PQfreemem(msg);
        return rc;
    }
    PQconninfoFree(opts);
    return PGPIPE_OK;
}

int pgpipe_pool_open(pgpipe_pool **out, const char *conninfo, const pgpipe_pool_options *opts)
{
    if (!out)
        return PGPIPE_MISUSE;
    *out = NULL;
    pgpipe_pool *p = pp_handle_new(sizeof *p);
    if (!p)
        return PGPIPE_NOMEM;
    if (opts)
        p->opt = *opts;
    else
        pgpipe_pool_options_init(&p->opt);
    p->opt.application_name = NULL;
    p->opt.reset_sql = NULL;
#ifndef PGPIPE_OMIT_THREADS
    int cattr_ok = pthread_condattr_init(&p->cattr) == 0;
    if (cattr_ok)
        pthread_condattr_setclock(&p->cattr, CLOCK_MONOTONIC);
    if (!cattr_ok || pthread_mutex_init(&p->mu, NULL) != 0) {
        if (cattr_ok)
            pthread_condattr_destroy(&p->cattr);
        pp_free(p);
        return PGPIPE_NOMEM;
    }
    if (pthread_cond_init(&p->close_cv, &p->cattr) != 0) {
        pthread_mutex_destroy(&p->mu);
        pthread_condattr_destroy(&p->cattr);
        pp_free(p);
        return PGPIPE_NOMEM;
    }
#endif
    *out = p;
    p->seed = pp_rand_seed();
    int rc = pool_check_options(&p->hdr.err, &p->opt);
    if (rc != PGPIPE_OK)
        return rc;
    if ((rc = pool_check_conninfo(&p->hdr.err, conninfo)) != PGPIPE_OK)
        return rc;
    const char *app = opts ? opts->application_name : "pgpipe";
    const char *reset = opts ? opts->reset_sql : NULL;
    if ((conninfo && *conninfo && !(p->conninfo = pp_strdup(conninfo))) ||
        (app && !(p->appname = pp_strdup(app))) ||
        (reset && *reset && !(p->reset_sql = pp_strdup(reset))))
        return pp_err_nomem(&p->hdr.err);
    p->reset_clears_cache = p->reset_sql && pool_sql_drops_statements(p->reset_sql);
    const char *env_ct = getenv("PGCONNECT_TIMEOUT");
    p->set_connect_timeout = p->opt.connect_timeout_s > 0 && !(env_ct && *env_ct);
    snprintf(p->connect_timeout, sizeof p->connect_timeout, "%d", p->opt.connect_timeout_s);

    if (pp_log_enabled(PGPIPE_LOG_DEBUG)) {
        char masked[512];
        pgpipe_conninfo_mask(conninfo ? conninfo : "", masked, sizeof masked);
        pp_logf(PGPIPE_LOG_DEBUG, "pool", "opening pool (size %d + overflow %d) on \"%s\"",
                p->opt.pool_size, p->opt.max_overflow, masked);
    }
    /* warm connections: fail fast, no retry, so a wrong conninfo shows now */
    for (int i = 0; i < p->opt.min_idle; i++) {
        int permanent;
        pgpipe_conn *c = pool_connect(p, &p->hdr.err, &permanent);
        if (!c)
            return p->hdr.err.code;
        pp_mutex_lock(&p->mu);
        pool_conn_born_locked(p, c);
        c->next = p->idle;
        p->idle = c;
        p->nidle++;
        p->total++;
        pp_mutex_unlock(&p->mu);
    }
    return PGPIPE_OK;
}

/* ---- acquire ---------------------------------------------------------- */

int pgpipe_pool_acquire(pgpipe_pool *pool, pgpipe_conn **out)
{
    return pgpipe_pool_acquire_ex(pool, out, -1, NULL);
}

/* Decide whether a connection about to be handed out must be pinged. */
static int pool_needs_ping(const pgpipe_pool *p, const pgpipe_conn *c, int64_t now,
                           int64_t invalid_before)
{
    if (c->validated_us < invalid_before)
        return 1;
    if (p->opt.pre_ping_ms < 0)
        return 0;
    return now - c->released_us >= (int64_t)p->opt.pre_ping_ms * 1000;
}

/* Check a connection this thread now owns (lock held on entry and exit,
** released meanwhile). Returns 1 when it can be handed out; otherwise it was
** closed and its slot is still counted (the caller owns it). */
static int pool_validate_locked(pgpipe_pool *p, pgpipe_conn *c)
{
    int64_t now = pgpipe_now_us();
    int64_t invalid_before = p->invalid_before_us;
    int expired = pool_conn_expired(c, now);
    int ping = !expired && pool_needs_ping(p, c, now, invalid_before);
    if (!expired && !ping)
        return 1;
    pp_mutex_unlock(&p->mu);
    int ok = 0;
    if (ping) {
        ok = pool_ping(c);
        if (ok)
            c->validated_us = pgpipe_now_us();
        else
            pp_logf(PGPIPE_LOG_INFO, "pool", "pre-ping found a dead connection; replacing it");
    }
    if (!ok)
        pool_conn_free(c);
    pp_mutex_lock(&p->mu);
    if (ping) {
        p->pings++;
        if (!ok) {
            p->broken++;
            p->invalid_before_us = now;
        }
    }
    if (!ok)
        p->closed++;
    return ok;
}

/* One pgpipe_pool_acquire_ex call: its place in the queue, its clock, and
** the backoff between the connects it makes for the pool. */
typedef struct pool_acquire {
    pool_waiter w;
    pgpipe_error *e;
    int64_t start, deadline;
    int64_t retry_at;     /* the next connect of its job may start then */
    pgpipe_retry backoff; /* the delays between its failed connects */
} pool_acquire;

/* What a step of the acquire loop leaves it to do. */
enum { POOL_STEP_NONE, POOL_STEP_AGAIN, POOL_STEP_DONE };

/* Step 1: take a connection handed over, or an idle one when nobody queues,
** and validate it. DONE with *out set; AGAIN when it was dead (its slot is
** refilled and this caller queues first); NONE when there is none to take. */
static int pool_take_locked(pgpipe_pool *p, pool_acquire *a, pgpipe_conn **out)
{
    pool_waiter *w = &a->w;
    pgpipe_conn *c;
    if (w->conn) {
        c = w->conn;
        w->conn = NULL;
        p->in_use--; /* counted again once validated */
        if (w->job) { /* no need to open one any more */
            w->job = 0;
            pool_slot_freed_locked(p);
        }
    } else if (!w->queued && !p->whead && p->idle) {
        c = p->idle;
        p->idle = c->next;
        c->next = NULL;
        p->nidle--;
    } else {
        return POOL_STEP_NONE;
    }
    if (pool_validate_locked(p, c)) {
        p->in_use++;
        p->acquired++;
        pool_record_wait_locked(p, pgpipe_now_us() - a->start);
        *out = c;
        return POOL_STEP_DONE;
    }
    pool_enqueue_locked(p, w, 1);
    w->perm_gen = p->perm_gen;
    if (p->closing)
        p->total--;
    else
        pool_grow_locked(p);
    return POOL_STEP_AGAIN;
}

/* Step 2: join the queue; take the job of growing the pool if it may. */
static void pool_join_locked(pgpipe_pool *p, pool_waiter *w)
{
    if (w->queued)
        return;
    pool_enqueue_locked(p, w, 0);
    w->perm_gen = p->perm_gen;
    if (p->total < pool_max_total(p)) {
        p->total++;
        pool_grow_locked(p);
    }
}

/* Step 3: when this caller holds the job of opening a connection for the
** pool (not necessarily for itself) and its backoff has passed, open one
** (the lock is released meanwhile). AGAIN after an attempt; DONE with *rc
** when a failure ends the acquire; NONE when there was nothing to do. */
static int pool_connect_locked(pgpipe_pool *p, pool_acquire *a, int64_t now, int *rc)
{
    pool_waiter *w = &a->w;
    if (!w->job || w->connecting || now < a->retry_at)
        return POOL_STEP_NONE;
    w->job = 0;
    w->connecting = 1;
    pp_mutex_unlock(&p->mu);
    int permanent = 0;
    pgpipe_error ce;
    pgpipe_conn *nc = pool_connect(p, &ce, &permanent);
    pp_mutex_lock(&p->mu);
    w->connecting = 0;
    if (nc) {
        pool_conn_born_locked(p, nc);
        pgpipe_conn *extra = pool_deliver_locked(p, nc, pgpipe_now_us());
        if (extra) {
            pp_mutex_unlock(&p->mu);
            pool_conn_free(extra);
            pp_mutex_lock(&p->mu);
        }
        return POOL_STEP_AGAIN;
    }
    pool_note_connect_failure_locked(p, &ce, permanent);
    w->perm_gen = p->perm_gen;
    if (permanent || p->closing) {
        if (w->queued)
            pool_remove_waiter_locked(p, w);
        pool_slot_freed_locked(p);
        if (w->conn && !p->closing)
            return POOL_STEP_AGAIN; /* one was handed over meanwhile: take it */
        *a->e = ce;
        *rc = ce.code;
        return POOL_STEP_DONE;
    }
    w->job = 1; /* keep the slot; try again after a backoff */
    int d = pgpipe_retry_next_delay(&a->backoff);
    a->retry_at = pgpipe_now_us() + (int64_t)d * 1000;
    pp_logf(PGPIPE_LOG_INFO, "pool", "connect failed, retrying in %d ms: %s", d, ce.message);
    return POOL_STEP_AGAIN;
}

static int pool_timeout_error(pgpipe_pool *p, pool_acquire *a)
{
    char lasterr[sizeof a->e->message] = "";
    if (p->connect_err_us >= a->start)
        snprintf(lasterr, sizeof lasterr, "%s", p->connect_err.message);
    p->timeouts++;
    long long waited = (long long)((pgpipe_now_us() - a->start) / 1000);
#ifndef PGPIPE_OMIT_THREADS
    return pp_err(a->e, PGPIPE_BUSY,
                  "timed out after %lld ms waiting for a connection "
                  "(pool_size %d + max_overflow %d: %d in use, %d waiting)%s%s",
                  waited, p->opt.pool_size, p->opt.max_overflow, p->in_use, p->nwaiters,
                  lasterr[0] ? "; last connect error: " : "", lasterr);
#else
    return pp_err(a->e, PGPIPE_BUSY,
                  "no connection available after %lld ms (pool_size %d + max_overflow %d: "
                  "%d in use; single-threaded build, so acquire does not wait)%s%s",
                  waited, p->opt.pool_size, p->opt.max_overflow, p->in_use,
                  lasterr[0] ? "; last connect error: " : "", lasterr);
#endif
}

/* Step 4: wait for a hand-over, a job, the end of the backoff or the
** deadline. PGPIPE_OK to go round again, or the timeout's error. */
static int pool_wait_locked(pgpipe_pool *p, pool_acquire *a, int64_t now)
{
    if (now >= a->deadline)
        return pool_timeout_error(p, a);
    int64_t until = a->w.job && a->retry_at < a->deadline ? a->retry_at : a->deadline;
#ifndef PGPIPE_OMIT_THREADS
    pool_cond_wait_until(p, &a->w.cv, until);
#else
    if (!a->w.job) /* nobody else can give one back */
        return pool_timeout_error(p, a);
    pp_mutex_unlock(&p->mu);
    pgpipe_sleep_ms((int)((until - now + 999) / 1000));
    pp_mutex_lock(&p->mu);
#endif
    return PGPIPE_OK;
}

/* Leaving: give up the place in the queue and the job; returns what was
** handed over too late, for the caller to close unlocked (or NULL). */
static pgpipe_conn *pool_leave_locked(pgpipe_pool *p, pool_waiter *w)
{
    pgpipe_conn *late = NULL;
    if (w->queued)
        pool_remove_waiter_locked(p, w);
    if (w->job) {
        w->job = 0;
        pool_slot_freed_locked(p);
    }
    if (w->conn) {
        p->in_use--;
        late = pool_deliver_locked(p, w->conn, pgpipe_now_us());
        w->conn = NULL;
    }
    return late;
}

int pgpipe_pool_acquire_ex(pgpipe_pool *p, pgpipe_conn **out, int timeout_ms, pgpipe_error *err)
{
    if (out)
        *out = NULL;
    if (!p || p->hdr.magic != PP_HANDLE_MAGIC || !out)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_pool_acquire: NULL or invalid pool or output");
    pgpipe_error local;
    pool_acquire a;
    memset(&a, 0, sizeof a);
    a.e = err ? err : &local;
    pgpipe_error_clear(a.e);
    if (timeout_ms < 0)
        timeout_ms = p->opt.acquire_timeout_ms;
    a.start = pgpipe_now_us();
    a.deadline = a.start + (int64_t)timeout_ms * 1000;
    pool_backoff_init(&a.backoff);
    int rc = PGPIPE_OK;
    pgpipe_conn *c = NULL;
#ifndef PGPIPE_OMIT_THREADS
    if (pool_cond_init(p, &a.w.cv) != PGPIPE_OK)
        return pp_err_nomem(a.e);
#endif
    pp_mutex_lock(&p->mu);
    if (p->closing) {
        rc = pp_err(a.e, PGPIPE_MISUSE, "the pool is closed");
        if (!err)
            p->hdr.err = *a.e;
        pp_mutex_unlock(&p->mu);
#ifndef PGPIPE_OMIT_THREADS
        pthread_cond_destroy(&a.w.cv);
#endif
        return rc;
    }
    p->acquirers++;
    pgpipe_conn *reaped = pool_reap_locked(p, a.start);
    for (;;) {
        if (p->closing) {
            rc = pp_err(a.e, PGPIPE_MISUSE, "the pool was closed while waiting for a connection");
            break;
        }
        int step = pool_take_locked(p, &a, &c);
        if (step == POOL_STEP_DONE)
            break;
        if (step == POOL_STEP_AGAIN)
            continue;
        pool_join_locked(p, &a.w);
        if (a.w.perm_gen != p->perm_gen && !a.w.conn) {
            /* a connect failed in a way retrying cannot fix */
            *a.e = p->perm_err;
            rc = a.e->code;
            break;
        }
        int64_t now = pgpipe_now_us();
        step = pool_connect_locked(p, &a, now, &rc);
        if (step == POOL_STEP_DONE)
            break;
        if (step == POOL_STEP_AGAIN)
            continue;
        if ((rc = pool_wait_locked(p, &a, now)) != PGPIPE_OK)
            break;
    }
    pgpipe_conn *late = pool_leave_locked(p, &a.w);
    if (rc == PGPIPE_OK && p->closing) {
        /* closed while we validated it: do not hand it out */
        p->in_use--;
        p->acquired--;
        p->closed++;
        p->total--;
        c->next = reaped;
        reaped = c;
        c = NULL;
        rc = pp_err(a.e, PGPIPE_MISUSE, "the pool was closed while waiting for a connection");
    }
    p->acquirers--;
    if (!err && rc != PGPIPE_OK)
        p->hdr.err = *a.e;
    pool_signal_close_locked(p);
    int free_pool = pool_should_free_locked(p);
    pp_mutex_unlock(&p->mu);
#ifndef PGPIPE_OMIT_THREADS
    pthread_cond_destroy(&a.w.cv);
#endif
    pool_conn_free(late);
    pool_free_list(reaped);
    if (free_pool)
        pool_destroy(p);
    if (rc == PGPIPE_OK) {
        pgpipe_error_clear(&c->hdr.err);
        *out = c;
    }
    return rc;
}

/* ---- release ---------------------------------------------------------- */

static int pool_give_back(pgpipe_conn *c, int healthy)
{
    pool_pipeline_detach(c);
    pgpipe_pool *p = c->pool;
    int64_t now = pgpipe_now_us();
    pgpipe_conn *close_it = NULL;
    pp_mutex_lock(&p->mu);
    p->in_use--;
    if (!healthy) {
        p->broken++;
        p->invalid_before_us = now;
    }
    if (!healthy || p->closing || pool_conn_expired(c, now)) {
        p->closed++;
        pool_slot_freed_locked(p);
        close_it = c;
    } else {
        close_it = pool_deliver_locked(p, c, now);
    }
    pgpipe_conn *reaped = pool_reap_locked(p, now);
    pool_signal_close_locked(p);
    int free_pool = pool_should_free_locked(p);
    pp_mutex_unlock(&p->mu);
    pool_conn_free(close_it);
    pool_free_list(reaped);
    if (free_pool)
        pool_destroy(p);
    return healthy ? PGPIPE_OK : PGPIPE_DB;
}

int pgpipe_pool_release(pgpipe_conn *c)
{
    if (!c || c->hdr.magic != PP_HANDLE_MAGIC || !c->pool)
        return PGPIPE_MISUSE;
    return pool_give_back(c, pool_conn_reset(c));
}

int pgpipe_pool_discard(pgpipe_conn *c)
{
    if (!c || c->hdr.magic != PP_HANDLE_MAGIC || !c->pool)
        return PGPIPE_MISUSE;
    pool_give_back(c, 0);
    return PGPIPE_OK;
}

/* ---- close and stats -------------------------------------------------- */

int pgpipe_pool_close(pgpipe_pool *p, int *leaked)
{
    if (leaked)
        *leaked = 0;
    if (!p)
        return PGPIPE_OK;
    if (p->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    pp_mutex_lock(&p->mu);
    p->closing = 1;
    for (pool_waiter *w = p->whead; w; w = w->next)
        pool_wake(w);
    pgpipe_conn *idle = p->idle;
    p->idle = NULL;
    p->closed += p->nidle;
    p->total -= p->nidle;
    p->nidle = 0;
    pp_mutex_unlock(&p->mu);
    pool_free_list(idle);

    pp_mutex_lock(&p->mu);
    int64_t start = pgpipe_now_us();
    int64_t deadline = start + (int64_t)p->opt.close_timeout_ms * 1000;
#ifndef PGPIPE_OMIT_THREADS
    while ((p->in_use > 0 || p->acquirers > 0 || p->connectors > 0) &&
           !pool_cond_wait_until(p, &p->close_cv, deadline))
        ;
#else
    (void)deadline;
#endif
    int out = p->in_use + p->acquirers;
    if (out == 0 && p->connectors == 0) {
        pp_mutex_unlock(&p->mu);
        pool_destroy(p);
        return PGPIPE_OK;
    }
    p->abandoned = 1; /* the last of them frees the pool */
    if (out == 0) {   /* only connector threads still in a connect: no leak */
        pp_mutex_unlock(&p->mu);
        return PGPIPE_OK;
    }
    int in_use = p->in_use;
    pp_mutex_unlock(&p->mu);
    if (leaked)
        *leaked = in_use;
    pp_logf(PGPIPE_LOG_WARN, "pool",
            "pool closed with %d connection(s) still checked out after waiting %lld ms "
            "(leaked; each is closed when released)",
            out, (long long)((pgpipe_now_us() - start) / 1000));
    return PGPIPE_BUSY;
}

int pgpipe_pool_pooler(pgpipe_pool *p)
{
    if (!p || p->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_POOLER_AUTO;
    pp_mutex_lock(&p->mu);
    int mode = p->pooler;
    pp_mutex_unlock(&p->mu);
    return mode;
}

int pgpipe_pool_stats_get(pgpipe_pool *p, pgpipe_pool_stats *s)
{
    if (!p || p->hdr.magic != PP_HANDLE_MAGIC || !s)
        return PGPIPE_MISUSE;
    memset(s, 0, sizeof *s);
    pp_mutex_lock(&p->mu);
    s->pool_size = p->opt.pool_size;
    s->max_overflow = p->opt.max_overflow;
    s->size = p->total;
    s->opening = p->total - (int)(p->created - p->closed);
    s->idle = p->nidle;
    s->in_use = p->in_use;
    s->waiters = p->nwaiters;
    s->created = p->created;
    s->closed = p->closed;
    s->acquired = p->acquired;
    s->timeouts = p->timeouts;
    s->connect_failures = p->connect_failures;
    s->pings = p->pings;
    s->broken = p->broken;
    s->wait_count = p->wait_count;
    s->wait_max_us = p->wait_max_us;
    s->wait_mean_us = p->wait_count ? (double)p->wait_sum_us / (double)p->wait_count : 0.0;
    s->wait_p50_us = pool_hist_percentile(p->hist, p->wait_count, 0.50, p->wait_max_us);
    s->wait_p95_us = pool_hist_percentile(p->hist, p->wait_count, 0.95, p->wait_max_us);
    s->wait_p99_us = pool_hist_percentile(p->hist, p->wait_count, 0.99, p->wait_max_us);
    pp_mutex_unlock(&p->mu);
    return PGPIPE_OK;
}

/* ---- checked-out connections and the statement cache ------------------ */

PGconn *pgpipe_conn_pg(pgpipe_conn *c)
{
    return c && c->hdr.magic == PP_HANDLE_MAGIC ? c->pg : NULL;
}

int pgpipe_conn_clear_cache(pgpipe_conn *c)
{
    if (!c || c->hdr.magic != PP_HANDLE_MAGIC)
        return 0;
    int n = c->nstmts;
    for (int i = 0; i < n; i++)
        pp_free(c->stmts[i].sql);
    c->nstmts = 0;
    return n;
}

static void pool_stmt_name(char *buf, size_t size, uint64_t h)
{
    snprintf(buf, size, "pgpipe_%016llx", (unsigned long long)h);
}

static void pool_stmt_drop(pgpipe_conn *c, int i)
{
    pp_free(c->stmts[i].sql);
    c->stmts[i] = c->stmts[--c->nstmts];
}

static int pool_result_ok(const PGresult *r)
{
    ExecStatusType st = PQresultStatus(r);
    return r && (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY ||
                 st == PGRES_SINGLE_TUPLE || st == PGRES_COPY_IN || st == PGRES_COPY_OUT);
}

static int pool_result_state_is(const PGresult *r, const char *state)
{
    const char *s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    return s && strcmp(s, state) == 0;
}

/* Prepared statements do not last on this pool's server sessions: run
** unnamed from now on (this connection at once, new ones from the pool's
** mode), and say so once per pool. */
static void pool_conn_lost_statements(pgpipe_conn *c)
{
    pgpipe_pool *p = c->pool;
    c->pooler = PGPIPE_POOLER_TRANSACTION;
    pgpipe_conn_clear_cache(c);
    pp_mutex_lock(&p->mu);
    int say = !p->said_lost;
    p->said_lost = 1;
    p->pooler = PGPIPE_POOLER_TRANSACTION;
    pp_mutex_unlock(&p->mu);
    if (say)
        pp_logf(PGPIPE_LOG_WARN, "pool",
                "a statement prepared on this connection was gone at once (SQLSTATE 26000): a "
                "transaction-mode pooler (pgbouncer pool_mode = transaction) is in between; "
                "running statements unnamed from now on (set the pool's pooler option or "
                "PGPIPE_POOLER=transaction to start so)");
}

PGresult *pgpipe_conn_exec_cached(pgpipe_conn *c, const char *sql, int nparams,
                                  const char *const *values, const int *lengths,
                                  const int *formats, int result_format)
{
    if (!c || c->hdr.magic != PP_HANDLE_MAGIC || !c->pg || !sql || nparams < 0 ||
        (nparams > 0 && !values)) {
        if (c && c->hdr.magic == PP_HANDLE_MAGIC)
            pp_err(&c->hdr.err, PGPIPE_MISUSE, "pgpipe_conn_exec_cached: bad arguments");
        return NULL;
    }
    pgpipe_error_clear(&c->hdr.err);
    int cap = c->pool->opt.stmt_cache_size;
    PGresult *r;
    /* behind a transaction pooler the next transaction may run on another
    ** server session, which does not have the statement: unnamed, one
    ** round trip (Parse, Bind, Execute, Sync) that cannot be split */
    if (cap <= 0 || c->pooler == PGPIPE_POOLER_TRANSACTION) {
        r = PQexecParams(c->pg, sql, nparams, NULL, values, lengths, formats, result_format);
        if (!pool_result_ok(r))
            pp_err_pq(&c->hdr.err, c->pg, r, NULL);
        return r;
    }
    uint64_t h = pp_hash64(sql);
    char name[32];
    pool_stmt_name(name, sizeof name, h);
    int idx = -1;
    for (int i = 0; i < c->nstmts; i++)
        if (c->stmts[i].hash == h) {
            idx = i;
            break;
        }
    if (idx >= 0 && strcmp(c->stmts[idx].sql, sql) != 0) {
        /* two texts with one hash: run the newcomer unnamed */
        r = PQexecParams(c->pg, sql, nparams, NULL, values, lengths, formats, result_format);
        if (!pool_result_ok(r))
            pp_err_pq(&c->hdr.err, c->pg, r, NULL);
        return r;
    }
    for (int attempt = 0;; attempt++) {
        if (idx < 0) {
            if (c->nstmts >= cap) { /* evict the least recently used */
                int lru = 0;
                for (int i = 1; i < c->nstmts; i++)
                    if (c->stmts[i].used < c->stmts[lru].used)
                        lru = i;
                char old[32], dealloc[48];
                pool_stmt_name(old, sizeof old, c->stmts[lru].hash);
                snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", old);
                if (PQtransactionStatus(c->pg) != PQTRANS_INERROR)
                    PQclear(PQexec(c->pg, dealloc));
                pool_stmt_drop(c, lru);
            }
            if (!c->stmts) {
                c->stmts = pp_calloc((size_t)cap, sizeof *c->stmts);
                if (!c->stmts) {
                    pp_err_nomem(&c->hdr.err);
                    return NULL;
                }
            }
            char *copy = pp_strdup(sql);
            if (!copy) {
                pp_err_nomem(&c->hdr.err);
                return NULL;
            }
            r = PQprepare(c->pg, name, sql, nparams, NULL);
            /* 42P05: the server still has it (an eviction's DEALLOCATE failed) */
            if (PQresultStatus(r) != PGRES_COMMAND_OK && !pool_result_state_is(r, "42P05")) {
                pp_free(copy);
                pp_err_pq(&c->hdr.err, c->pg, r, "preparing a statement");
                return r;
            }
            PQclear(r);
            idx = c->nstmts++;
            c->stmts[idx].hash = h;
            c->stmts[idx].sql = copy;
        }
        c->stmts[idx].used = ++c->tick;
        r = PQexecPrepared(c->pg, name, nparams, values, lengths, formats, result_format);
        if (pool_result_ok(r))
            return r;
        int lost = pool_result_state_is(r, "26000");
        int replan = pool_result_state_is(r, "0A000") &&
                     strstr(PQresultErrorMessage(r), "cached plan") != NULL;
        if (attempt == 0 && (lost || replan)) {
            pool_stmt_drop(c, idx);
            idx = -1;
            if (PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
                PQclear(r);
                if (replan) {
                    char dealloc[48];
                    snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", name);
                    PQclear(PQexec(c->pg, dealloc));
                }
                continue;
            }
        }
        if (attempt == 1 && lost && PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
            /* gone again right after it was prepared: the two statements ran
            ** on different server sessions, so a transaction pooler is in
            ** between although the pool was told otherwise */
            PQclear(r);
            pool_conn_lost_statements(c);
            r = PQexecParams(c->pg, sql, nparams, NULL, values, lengths, formats, result_format);
            if (!pool_result_ok(r))
                pp_err_pq(&c->hdr.err, c->pg, r, NULL);
            return r;
        }
        pp_err_pq(&c->hdr.err, c->pg, r, NULL);
        return r;
    }
}

/* ---- pipeline mode ---------------------------------------------------- */

struct pgpipe_pipeline {
    pp_handle hdr;
    pgpipe_conn *conn;
    int flags;
    int n, cap;         /* statements added (and sent) */
    int nsyncs;
    PGresult **res;
    int ran;
    int failed;         /* statements that failed or were skipped */
    int send_failed;    /* a send failed: the connection is unusable */
};

/* The connection goes back to the pool (or is closed) while a pipeline
** opened on it is still open: the pipeline lets go of it (its calls but
** close then fail with PGPIPE_MISUSE; close frees the pipeline only). */
static void pool_pipeline_detach(pgpipe_conn *c)
{
    pgpipe_pipeline *p = c->pipeline;
    if (!p)
        return;
    c->pipeline = NULL;
    p->conn = NULL;
    if (!p->ran) {
        p->ran = 1;
        p->failed = p->n;
    }
}

int pgpipe_pipeline_open(pgpipe_pipeline **out, pgpipe_conn *c, int flags)
{
    if (!out)
        return PGPIPE_MISUSE;
    *out = NULL;
    if (!c || c->hdr.magic != PP_HANDLE_MAGIC || !c->pg)
        return PGPIPE_MISUSE;
    if (c->in_pipeline)
        return pp_err(&c->hdr.err, PGPIPE_MISUSE, "the connection already has a pipeline");
    if (PQtransactionStatus(c->pg) == PQTRANS_ACTIVE)
        return pp_err(&c->hdr.err, PGPIPE_MISUSE,
                      "the connection is busy (results not read) and cannot start a pipeline");
    pgpipe_pipeline *p = pp_handle_new(sizeof *p);
    if (!p)
        return pp_err_nomem(&c->hdr.err);
    p->conn = c;
    p->flags = flags;
    if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
        int rc = pp_err_pq(&c->hdr.err, c->pg, NULL, "cannot enter pipeline mode");
        PQsetnonblocking(c->pg, 0);
        pp_free(p);
        return rc;
    }
    c->in_pipeline = 1;
    c->pipeline = p;
    *out = p;
    return PGPIPE_OK;
}

int pgpipe_pipeline_add(pgpipe_pipeline *p, const char *sql, int nparams, const char *const *values)
{
    if (!p || p->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (!p->conn)
        return pp_err(&p->hdr.err, PGPIPE_MISUSE,
                      "the pipeline's connection was returned to the pool; close the pipeline");
    if (p->ran)
        return pp_err(&p->hdr.err, PGPIPE_MISUSE, "the pipeline has already run");
    if (!sql || nparams < 0 || (nparams > 0 && !values))
        return pp_err(&p->hdr.err, PGPIPE_MISUSE, "pgpipe_pipeline_add: bad arguments");
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        PGresult **res = pp_realloc(p->res, (size_t)cap * sizeof *res);
        if (!res)
            return pp_err_nomem(&p->hdr.err);
        p->res = res;
        p->cap = cap;
    }
    PGconn *pg = p->conn->pg;
    if (p->send_failed)
        return pp_err(&p->hdr.err, PGPIPE_DB, "the pipeline's connection failed earlier");
    if (!PQsendQueryParams(pg, sql, nparams, NULL, values, NULL, NULL, 0)) {
        p->send_failed = 1;
        return pp_err_pq(&p->hdr.err, pg, NULL, "sending a pipeline statement");
    }
    p->res[p->n++] = NULL;
    if (p->flags & PGPIPE_PIPELINE_SYNC_EACH) {
        if (!PQpipelineSync(pg)) {
            p->send_failed = 1;
            return pp_err_pq(&p->hdr.err, pg, NULL, "sending a pipeline sync");
        }
        p->nsyncs++;
    }
    pgpipe_error_clear(&p->hdr.err); /* the handle holds its last call's error */
    return PGPIPE_OK;
}

int pgpipe_pipeline_count(const pgpipe_pipeline *p)
{
    return p && p->hdr.magic == PP_HANDLE_MAGIC ? p->n : 0;
}

PGresult *pgpipe_pipeline_result(const pgpipe_pipeline *p, int i)
{
    if (!p || p->hdr.magic != PP_HANDLE_MAGIC || !p->ran || i < 0 || i >= p->n)
        return NULL;
    return p->res[i];
}

/* Read every result until all our syncs came back (nonblocking socket: flush
** and read interleaved, so neither side can block the other). */
static int pool_pipeline_collect(pgpipe_pipeline *p)
{
    PGconn *pg = p->conn->pg;
    int idx = 0, syncs = 0;
    PGresult *cur = NULL;
    while (syncs < p->nsyncs) {
        int f = PQflush(pg);
        if (f < 0 || !PQconsumeInput(pg))
            break;
        while (syncs < p->nsyncs && !PQisBusy(pg)) {
            PGresult *r = PQgetResult(pg);
            if (!r) { /* end of one statement's results */
                if (idx < p->n) {
                    p->res[idx++] = cur;
                    cur = NULL;
                }
                if (PQstatus(pg) == CONNECTION_BAD)
                    break;
                continue;
            }
            if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) {
                PQclear(r);
                syncs++;
                continue;
            }
            PQclear(cur);
            cur = r;
            if (PQstatus(pg) == CONNECTION_BAD)
                break;
        }
        if (syncs >= p->nsyncs || PQstatus(pg) == CONNECTION_BAD)
            break;
        struct pollfd pfd = { PQsocket(pg), (short)(POLLIN | (f == 1 ? POLLOUT : 0)), 0 };
        if (pfd.fd < 0)
            break;
        if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
            break;
    }
    if (cur && idx < p->n)
        p->res[idx++] = cur;
    else
        PQclear(cur);
    return syncs >= p->nsyncs ? PGPIPE_OK : PGPIPE_DB;
}

int pgpipe_pipeline_run(pgpipe_pipeline *p, int *nfailed)
{
    if (nfailed)
        *nfailed = 0;
    if (!p || p->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (!p->conn)
        return pp_err(&p->hdr.err, PGPIPE_MISUSE,
                      "the pipeline's connection was returned to the pool; close the pipeline");
    if (p->ran)
        return pp_err(&p->hdr.err, PGPIPE_MISUSE, "the pipeline has already run");
    p->ran = 1;
    pgpipe_conn *c = p->conn;
    PGconn *pg = c->pg;
    int complete = 0;
    if (!p->send_failed) {
        if (!(p->flags & PGPIPE_PIPELINE_SYNC_EACH) || p->n == 0) {
            if (PQpipelineSync(pg))
                p->nsyncs++;
            else
                p->send_failed = 1;
        }
        if (!p->send_failed)
            complete = pool_pipeline_collect(p) == PGPIPE_OK;
    }
    if (complete && PQexitPipelineMode(pg) == 1) {
        PQsetnonblocking(pg, 0);
        c->in_pipeline = 0;
    }
    /* else: the connection stays marked, so its release closes it */

    int first = -1;
    for (int i = 0; i < p->n; i++) {
        if (!pool_result_ok(p->res[i])) {
            p->failed++;
            if (first < 0)
                first = i;
        }
    }
    if (nfailed)
        *nfailed = p->failed;
    if (first < 0 && complete)
        return PGPIPE_OK;
    if (first < 0)
        return pp_err_pq(&p->hdr.err, pg, NULL, "pipeline failed");
    char ctx[96];
    PGresult *r = p->res[first];
    if (r && PQresultStatus(r) == PGRES_PIPELINE_ABORTED)
        snprintf(ctx, sizeof ctx, "pipeline statement %d of %d skipped", first + 1, p->n);
    else
        snprintf(ctx, sizeof ctx, "pipeline statement %d of %d", first + 1, p->n);
    return pp_err_pq(&p->hdr.err, pg, r, ctx);
}

void pgpipe_pipeline_close(pgpipe_pipeline *p)
{
    if (!p || p->hdr.magic != PP_HANDLE_MAGIC)
        return;
    if (p->conn && !p->ran)
        pgpipe_pipeline_run(p, NULL);
    if (p->conn && p->conn->pipeline == p)
        p->conn->pipeline = NULL;
    for (int i = 0; i < p->n; i++)
        PQclear(p->res[i]);
    pp_free(p->res);
    p->hdr.magic = 0;
    pp_free(p);
}
