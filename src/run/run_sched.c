/*
** Schedules, the tasks after them, and the run history.
**
** Exactly once without a leader: every instance computes each schedule's
** next slot and, when it comes, claims it with a compare-and-set on
** pgpipe.run_schedules.last_slot (the UPDATE moves last_slot forward only
** if it is still before the slot). The row lock orders the contenders; the
** loser's WHERE finds the slot taken and it computes the next one. No
** lease to renew, no fencing token, nothing to fail over: an instance that
** dies simply stops claiming, and the others go on.
**
** One timer thread sleeps until the nearest slot (a condition variable, so
** stop and reload wake it) and hands the due firings to a few executor
** threads, so a long body never delays another schedule's slot. A firing
** goes one of two ways:
**
** - Transactional (most schedules: plain SQL bodies; rs_tx_eligible says
**   which): the timer does no database work; every schedule due at that
**   moment goes, in name order, into a few pgpipe.run_fire calls (one per
**   executor), each ONE transaction that claims each slot, runs each body
**   in a subtransaction and writes each history row. A burst of thousands
**   of schedules due at the same second costs a few commits, and a firing
**   cut short (kill -9, a lost server) leaves its slot unclaimed for the
**   next contender: exactly once with no crash window.
** - Claimed, then run: the timer claims the slot (its own commit) and an
**   executor holds a session advisory lock on (pipeline, schedule) for the
**   whole firing (the overlap rule across instances: the lock dies with a
**   dead instance's session), runs the body step by step (dot commands,
**   timeouts, VACUUM and the like), then the tasks that follow it, and
**   writes one history row per run. A firing cut short is recorded "lost"
**   by another instance once the heartbeat of its own stops.
**
** The timer thread also fires the cancels of bodies past their timeout
** and, on stop, past the drain time.
**
** Threads never read r->def after start/reload returned: each keeps a
** reference to a copy of what it needs (rs_cfg), freed with its last user.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN
#include <math.h>
#include <strings.h>
#include <time.h>

#define RS_MAX_EXECUTORS 4
#define RS_GRACE_MS      5000   /* a slot fired later than this was missed */
#define RS_ALL_MAX       1000   /* --missed all runs at most this many slots */
#define RS_COUNT_MAX     100000 /* missed cron slots counted at most */
#define RS_MAINTAIN_MS   3600000
/* Transactional firings (pgpipe.run_fire): a firing whose last run took
** RS_TX_SHORT_MS or more gets a transaction of its own instead of sharing
** one with others; RS_TX_LONG_MS or more, it leaves the transactional path
** (its row lock would hold the other instances' firings of it that long). */
#define RS_TX_SHORT_MS   100
#define RS_TX_LONG_MS    1000
#define RS_TX_CHUNK_MIN  32     /* firings per shared transaction, at least */

/* ---- the copied configuration ------------------------------------------ */

typedef struct rs_schedule {
    char *name, *expr, *tz;
    pgpipe_cron cron;
    int64_t jitter_ms, timeout_ms;
    int overlap, missed;
    pgpipe_pipe_step *steps;
    int nsteps;
    int tx;               /* fires by pgpipe.run_fire: see rs_tx_eligible */
    /* guarded by run_sched.mu */
    int64_t last_ms;      /* the last transactional firing's duration, -1 none */
    int gone;             /* run_fire found no row: the timer makes it again */
    int64_t skipped_through; /* slots to this one were skipped as busy: not missed */
} rs_schedule;

typedef struct rs_task {
    char *name;
    char **after;
    int nafter;
    int retries;
    int64_t backoff_ms, backoff_max_ms, timeout_ms;
    int on_failure;
    int alert_k;          /* task-failures --count, 0: no rule */
    pgpipe_pipe_step *steps;
    int nsteps;
} rs_task;

typedef struct rs_cfg {
    int refs;             /* guarded by run_sched.mu */
    char *pipeline;
    rs_schedule *s;
    int ns;
    rs_task *t;
    int nt;
    pgpipe_pipe_history hist;
    int *rank;            /* rank[i]: schedule i's place in name order */
} rs_cfg;

static pgpipe_pipe_step *rs_steps_copy(const pgpipe_pipe_step *st, int n, int *ok)
{
    if (n <= 0)
        return NULL;
    pgpipe_pipe_step *c = pp_calloc((size_t)n, sizeof *c);
    if (!c) {
        *ok = 0;
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        c[i] = st[i];
        if (!(c[i].text = pp_strdup(st[i].text ? st[i].text : "")))
            *ok = 0;
    }
    return c;
}

static void rs_steps_free(pgpipe_pipe_step *st, int n)
{
    for (int i = 0; st && i < n; i++)
        pp_free((char *)st[i].text);
    pp_free(st);
}

static void rs_cfg_free(rs_cfg *c)
{
    if (!c)
        return;
    for (int i = 0; c->s && i < c->ns; i++) {
        pp_free(c->s[i].name), pp_free(c->s[i].expr), pp_free(c->s[i].tz);
        rs_steps_free(c->s[i].steps, c->s[i].nsteps);
    }
    for (int i = 0; c->t && i < c->nt; i++) {
        pp_free(c->t[i].name);
        for (int j = 0; c->t[i].after && j < c->t[i].nafter; j++)
            pp_free(c->t[i].after[j]);
        pp_free(c->t[i].after);
        rs_steps_free(c->t[i].steps, c->t[i].nsteps);
    }
    pp_free(c->s);
    pp_free(c->t);
    pp_free(c->rank);
    pp_free(c->pipeline);
    pp_free(c);
}

/* The first keyword of a statement, past blanks and comments, lower case
** into kw; "" when none. */
static void rs_first_word(const char *q, char *kw, size_t n)
{
    for (;;) {
        while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r' || *q == '(')
            q++;
        if (q[0] == '-' && q[1] == '-') {
            q += strcspn(q, "\n");
        } else if (q[0] == '/' && q[1] == '*') {
            const char *e = strstr(q + 2, "*/");
            q = e ? e + 2 : q + strlen(q);
        } else {
            break;
        }
    }
    size_t i = 0;
    while (i + 1 < n && ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z')))
        kw[i++] = (char)(*q >= 'A' && *q <= 'Z' ? *q - 'A' + 'a' : *q), q++;
    kw[i] = 0;
}

/* A schedule fires transactionally (pgpipe.run_fire: its claim, its body
** and its history row commit together, so it fires exactly once even when
** an instance is killed mid-firing) when its body can run inside a
** transaction block and inside a function, and nothing of the schedule
** needs the executor's own handling: every step is a statement that starts
** with INSERT, UPDATE, DELETE, MERGE, SELECT (not SELECT ... INTO), WITH,
** VALUES, TABLE or NOTIFY (no dot command, no VACUUM, no CONCURRENTLY, no
** transaction control, no SET); no --timeout (a function's statements
** cannot each have one); --overlap skip; --missed once or skip; no task
** after it. The others fire as before: claim, then the body statement by
** statement, then the history row (a firing cut short there is recorded
** "lost"). */
static int rs_tx_eligible(const rs_cfg *c, const rs_schedule *sc)
{
    static const char *const ok[] = { "insert", "update", "delete", "merge", "select",
                                      "with",   "values", "table",  "notify" };
    if (sc->nsteps < 1 || sc->timeout_ms > 0 || sc->overlap != PGPIPE_PIPE_OVERLAP_SKIP ||
        sc->missed == PGPIPE_PIPE_MISSED_ALL)
        return 0;
    for (int i = 0; i < c->nt; i++)
        for (int k = 0; k < c->t[i].nafter; k++)
            if (!strcmp(c->t[i].after[k], sc->name))
                return 0;
    for (int i = 0; i < sc->nsteps; i++) {
        const pgpipe_pipe_step *st = &sc->steps[i];
        if (st->kind != PGPIPE_PIPE_SQL || !st->text)
            return 0;
        char kw[16];
        rs_first_word(st->text, kw, sizeof kw);
        size_t k = 0;
        while (k < sizeof ok / sizeof ok[0] && strcmp(kw, ok[k]))
            k++;
        if (k == sizeof ok / sizeof ok[0])
            return 0;
        /* EXECUTE cannot run SELECT ... INTO (it makes a table); a word
        ** "into" anywhere in a SELECT or WITH sends it the other way */
        if (!strcmp(kw, "select") || !strcmp(kw, "with")) {
            const char *t = st->text;
            for (size_t q = 0; t[q]; q++) {
                if (strncasecmp(t + q, "into", 4))
                    continue;
                int before = q > 0 && (isalnum((unsigned char)t[q - 1]) || t[q - 1] == '_');
                int after = isalnum((unsigned char)t[q + 4]) || t[q + 4] == '_';
                if (!before && !after)
                    return 0;
            }
        }
    }
    return 1;
}

typedef struct rs_named {
    const char *name;
    int i;
} rs_named;

static int rs_named_cmp(const void *a, const void *b)
{
    return strcmp(((const rs_named *)a)->name, ((const rs_named *)b)->name);
}

static rs_cfg *rs_cfg_new(const pgpipe_pipe_def *d, pgpipe_error *err)
{
    rs_cfg *c = pp_calloc(1, sizeof *c);
    if (!c) {
        pp_err_nomem(err);
        return NULL;
    }
    int ok = 1;
    c->refs = 1;
    c->pipeline = pp_strdup(d->name);
    c->hist = d->history;
    c->ns = d->nschedules;
    c->nt = d->ntasks;
    if (!c->pipeline || (c->ns && !(c->s = pp_calloc((size_t)c->ns, sizeof *c->s))) ||
        (c->nt && !(c->t = pp_calloc((size_t)c->nt, sizeof *c->t)))) {
        c->ns = c->s ? c->ns : 0, c->nt = c->t ? c->nt : 0;
        rs_cfg_free(c);
        pp_err_nomem(err);
        return NULL;
    }
    for (int i = 0; i < c->ns; i++) {
        const pgpipe_pipe_schedule *ps = &d->schedules[i];
        rs_schedule *s = &c->s[i];
        s->name = pp_strdup(ps->name);
        s->expr = pp_strdup(ps->expr);
        s->tz = pp_strdup(ps->tz && *ps->tz ? ps->tz : "UTC");
        s->jitter_ms = ps->jitter_ms, s->timeout_ms = ps->timeout_ms;
        s->overlap = ps->overlap, s->missed = ps->missed;
        s->steps = rs_steps_copy(ps->steps, ps->nsteps, &ok);
        s->nsteps = ps->nsteps;
        if (!s->name || !s->expr || !s->tz)
            ok = 0;
        else if (pgpipe_cron_parse(&s->cron, s->expr, err) != PGPIPE_OK) {
            rs_cfg_free(c);
            return NULL;
        }
    }
    for (int i = 0; i < c->nt; i++) {
        const pgpipe_pipe_task *pt = &d->tasks[i];
        rs_task *t = &c->t[i];
        t->name = pp_strdup(pt->name);
        t->retries = pt->retries;
        t->backoff_ms = pt->backoff_ms, t->backoff_max_ms = pt->backoff_max_ms;
        t->timeout_ms = pt->timeout_ms, t->on_failure = pt->on_failure;
        t->steps = rs_steps_copy(pt->steps, pt->nsteps, &ok);
        t->nsteps = pt->nsteps;
        if (pt->nafter > 0 && (t->after = pp_calloc((size_t)pt->nafter, sizeof *t->after))) {
            t->nafter = pt->nafter;
            for (int j = 0; j < pt->nafter; j++)
                if (!(t->after[j] = pp_strdup(pt->after[j])))
                    ok = 0;
        } else if (pt->nafter > 0) {
            ok = 0;
        }
        for (int a = 0; a < d->nalerts; a++)
            if (d->alerts[a].kind == PGPIPE_PIPE_ALERT_TASK_FAILURES && d->alerts[a].target &&
                !strcmp(d->alerts[a].target, pt->name))
                t->alert_k = (int)(d->alerts[a].threshold > 0 ? d->alerts[a].threshold : 3);
        if (!t->name)
            ok = 0;
    }
    rs_named *by = ok && c->ns ? pp_calloc((size_t)c->ns, sizeof *by) : NULL;
    if (ok && c->ns && (!by || !(c->rank = pp_calloc((size_t)c->ns, sizeof *c->rank))))
        ok = 0;
    if (!ok) {
        pp_free(by);
        rs_cfg_free(c);
        pp_err_nomem(err);
        return NULL;
    }
    for (int i = 0; i < c->ns; i++) {
        c->s[i].tx = rs_tx_eligible(c, &c->s[i]);
        c->s[i].last_ms = -1;
        by[i].name = c->s[i].name, by[i].i = i;
    }
    if (c->ns)
        qsort(by, (size_t)c->ns, sizeof *by, rs_named_cmp);
    for (int k = 0; k < c->ns; k++)
        c->rank[by[k].i] = k;
    pp_free(by);
    return c;
}

/* ---- state ------------------------------------------------------------- */

/* One firing handed to an executor: slots[0..nslots) of schedule si, run
** in order (several only for --missed all); claim: the slot is not claimed
** yet (a transactional firing that fell back to this path). Or, with sis,
** transactional firings: slot slots[k] of schedule sis[k], in name order,
** all in one pgpipe.run_fire call. */
typedef struct rs_job {
    struct rs_job *next;
    rs_cfg *cfg;
    int si;
    int64_t *slots;       /* Unix seconds */
    int nslots;
    int claim;
    int *sis;
} rs_job;

typedef struct rs_exec {
    pthread_t th;
    int started;
    pgpipe_runner *r;
    pp_cancel_slot cancel;
    /* guarded by run_sched.mu */
    int busy;
    int64_t deadline_ms;  /* 0: none; past it the timer cancels */
    int timed_out, cancelled;
    int unclean;          /* a body's session could not be reset: discard the connection */
    const char *sched;    /* the schedule or task running now */
    char job[128];        /* the schedule whose firing it runs, "" idle */
} rs_exec;

/* The timer's view of one schedule of the current cfg. */
typedef struct rs_state {
    int ready;            /* row made and next computed */
    int64_t next;         /* the next slot, Unix seconds */
    int64_t fire_ms;      /* next * 1000 + jitter */
    int64_t jitter_ms;    /* the jitter drawn for next */
    int64_t planned_ms;   /* when next was computed */
    int64_t tx_slot;      /* the slot a transactional firing is due for */
    int fresh;            /* added by a reload: starts now, whatever its row says */
} rs_state;

/* Consecutive failures of a task, for the task-failures alert. */
typedef struct rs_fails {
    char name[128];
    int n;
} rs_fails;

struct run_sched {
    pthread_mutex_t mu;
    pthread_cond_t cv;    /* the timer and the executors wait on it */
    rs_cfg *cfg;          /* current; guarded by mu */
    int gen;              /* bumped by reload */
    int stopping;
    int64_t drain_until;  /* after stop: cancels fire past it */
    pthread_t timer;
    int timer_started;
    rs_exec ex[RS_MAX_EXECUTORS];
    int nex;
    rs_job *head, *tail;
    rs_state *st;         /* per schedule of cfg; the timer's own */
    int nst;
    int64_t last_maint_ms;
    int actions_ok;       /* pgpipe.run_actions was found (run.c's thread only) */
    int tx_off;           /* pgpipe.run_fire is missing (an older schema); mu */
    int *txq;             /* the timer's: schedules due for a transactional firing */
    rs_fails fails[32];
    uint64_t rnd;         /* backoff jitter; guarded by mu */
    uint64_t trnd;        /* slot jitter; the timer's own */
};

static void rs_cfg_unref(run_sched *s, rs_cfg *c)
{
    pthread_mutex_lock(&s->mu);
    int last = --c->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last)
        rs_cfg_free(c);
}

static void rs_wait_until(run_sched *s, int64_t until_ms)
{
    struct timespec ts;
    ts.tv_sec = (time_t)(until_ms / 1000);
    ts.tv_nsec = (long)(until_ms % 1000) * 1000000L;
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
}

/* ---- small helpers ----------------------------------------------------- */

static void rs_i64(char *b, size_t n, int64_t v)
{
    snprintf(b, n, "%lld", (long long)v);
}

static void rs_iso(char *b, size_t n, int64_t sec)
{
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(b, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The advisory lock keys of a schedule: (class, object), positive int4s.
** queue: the second lock a queued firing holds while it waits. */
static void rs_keys(const char *pipeline, const char *sched, int queue, char k1[16], char k2[16])
{
    char buf[600];
    snprintf(buf, sizeof buf, "%s\n%s", pipeline, sched);
    snprintf(k1, 16, "%ld", (long)((pp_hash64(queue ? "pgpipe.run.queue" : "pgpipe.run") >> 33)));
    snprintf(k2, 16, "%ld", (long)(pp_hash64(buf) >> 33));
}

static int rs_next(const rs_schedule *sc, int64_t after, int64_t *out)
{
    return pgpipe_cron_next(&sc->cron, after, sc->tz, out, NULL);
}

static int64_t rs_keep_days(const rs_cfg *c, const char *status)
{
    int64_t ms = !strcmp(status, "ok") || !strcmp(status, "skipped") ? c->hist.keep_ok_ms
                                                                     : c->hist.keep_failed_ms;
    int64_t d = (ms + 86399999) / 86400000;
    return d < 1 ? 1 : d;
}

/* One history row: one INSERT (the partition of its expiry day is made
** when missing). Failures are logged, never fatal to the firing. */
static void rs_history(pgpipe_runner *r, PGconn *c, const rs_cfg *cfg, const char *kind,
                       const char *name, int64_t slot, int64_t started_ms, int64_t finished_ms,
                       const char *status, int attempts, long long rows, const char *error,
                       const char *sqlstate)
{
    if (cfg->hist.failures_only && !strcmp(status, "ok"))
        return;
    char sl[24], st[24], fi[24], at[16], rw[24], kd[16];
    rs_i64(sl, sizeof sl, slot);
    rs_i64(st, sizeof st, started_ms);
    rs_i64(fi, sizeof fi, finished_ms);
    snprintf(at, sizeof at, "%d", attempts);
    snprintf(rw, sizeof rw, "%lld", rows);
    rs_i64(kd, sizeof kd, rs_keep_days(cfg, status));
    const char *p[14] = { cfg->pipeline, kind, name, slot ? sl : NULL, st, fi, status, at,
                          rows >= 0 ? rw : NULL, error && *error ? error : NULL,
                          sqlstate && *sqlstate ? sqlstate : NULL, r->instance, r->host, kd };
    static const char *sql =
        "INSERT INTO pgpipe.run_history (pipeline, kind, name, slot, started_at, finished_at, "
        "status, attempts, rows, error, sqlstate, instance, host, expires_on) VALUES ($1, $2, "
        "$3, to_timestamp($4::bigint), to_timestamp($5::float8 / 1000), "
        "to_timestamp($6::float8 / 1000), $7, $8::int, $9::bigint, $10, $11, $12, $13, "
        "(to_timestamp($5::float8 / 1000) AT TIME ZONE 'UTC')::date + $14::int)";
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    for (int tries = 0; tries < 2; tries++) {
        if (pp_exec(c, sql, 14, p, NULL, &e, "recording the run") == PGPIPE_OK)
            return;
        if (strcmp(e.sqlstate, "23514")) /* not "no partition of relation found" */
            break;
        const char *q[2] = { st, kd };
        if (pp_exec(c,
                    "SELECT pgpipe.run_history_partition((to_timestamp($1::float8 / 1000) AT "
                    "TIME ZONE 'UTC')::date + $2::int)",
                    2, q, NULL, &e, "making the history partition"))
            break;
    }
    run_log(r, PGPIPE_LOG_WARN, "run history: the row was not written", "name", name, "status",
            status, "error", e.message, NULL);
}

/* ---- the executors ----------------------------------------------------- */

static int rs_claim(PGconn *c, const rs_cfg *cfg, const rs_schedule *sc, int64_t slot,
                    int64_t *prev, pgpipe_error *e);
static int rs_enqueue(run_sched *s, rs_cfg *cfg, int si, int64_t *slots, int n, int claim);
static void rs_tx_run(rs_exec *x, run_sched *s, rs_job *j);

static int rs_sleep(run_sched *s, int64_t ms)
{
    int64_t until = run_now_ms() + ms;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping && run_now_ms() < until)
        rs_wait_until(s, until);
    int stop = s->stopping;
    pthread_mutex_unlock(&s->mu);
    return stop ? -1 : 0;
}

/* Run steps with a deadline the timer thread enforces (cancel) besides
** the step runner's own. Returns the rc; *status gets the outcome. */
/* After a body, before its connection writes history, runs a task or goes
** back to the pool:
** - a transaction the body left open (BEGIN without COMMIT, or aborted in
**   one) is rolled back, and the firing fails saying so: left open, its
**   work and the history row written after it would vanish together when
**   the connection ends, and the schedule would stay marked running;
** - the session is reset (run_session_reset), so what the body SET (a
**   role, a search_path, a setting) reaches neither the history row, the
**   tasks nor the other schedules sharing the pool. pgpipe.slot, which
**   RESET ALL clears, is set again for the tasks after the body.
** A reset that fails on a live connection marks the executor's connection
** unclean: the caller discards it instead of pooling it. */
static int rs_body_end(rs_exec *x, PGconn *c, int rc, pgpipe_error *e, int64_t slot)
{
    if (PQstatus(c) != CONNECTION_OK)
        return rc;
    PGTransactionStatusType ts = PQtransactionStatus(c);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        pgpipe_error re;
        memset(&re, 0, sizeof re);
        if (pp_exec(c, "ROLLBACK", 0, NULL, NULL, &re, "rolling back the body's transaction"))
            x->unclean = 1;
        if (rc == PGPIPE_OK) {
            rc = pp_err(e, PGPIPE_ERROR,
                        "the body left a transaction open (BEGIN without COMMIT): it was rolled "
                        "back");
        } else {
            size_t l = strlen(e->message);
            snprintf(e->message + l, sizeof e->message - l,
                     " (the transaction the body left open was rolled back)");
        }
    }
    char sl[24];
    rs_i64(sl, sizeof sl, slot);
    const char *p[1] = { sl };
    if (run_session_reset(c, NULL) ||
        pp_exec(c, "SELECT set_config('pgpipe.slot', to_timestamp($1::bigint)::text, false)",
                1, p, NULL, NULL, NULL)) {
        x->unclean = 1;
        run_log(x->r, PGPIPE_LOG_WARN, "the session could not be reset after a body",
                "schedule", x->sched, NULL);
    }
    return rc;
}

static int rs_exec_steps(rs_exec *x, run_sched *s, PGconn *c, const char *name,
                         const pgpipe_pipe_step *steps, int n, int64_t timeout_ms, int64_t slot,
                         long long *rows, pgpipe_error *e, const char **status)
{
    pthread_mutex_lock(&s->mu);
    x->deadline_ms = timeout_ms > 0 ? run_now_ms() + timeout_ms : 0;
    x->timed_out = 0;
    x->sched = name;
    pthread_mutex_unlock(&s->mu);
    memset(e, 0, sizeof *e);
    *rows = 0;
    int rc = run_steps_exec(x->r, c, steps, n, timeout_ms, rows, e);
    pthread_mutex_lock(&s->mu);
    int to = x->timed_out;
    x->deadline_ms = 0;
    pthread_mutex_unlock(&s->mu);
    rc = rs_body_end(x, c, rc, e, slot);
    if (rc == PGPIPE_OK)
        *status = "ok";
    else if (rc == PGPIPE_BUSY || to)
        *status = "timeout";
    else
        *status = "failed";
    return rc;
}

static rs_fails *rs_fails_of(run_sched *s, const char *name)
{
    rs_fails *free_slot = NULL;
    for (size_t i = 0; i < sizeof s->fails / sizeof s->fails[0]; i++) {
        if (!strcmp(s->fails[i].name, name))
            return &s->fails[i];
        if (!free_slot && !s->fails[i].name[0])
            free_slot = &s->fails[i];
    }
    if (free_slot)
        snprintf(free_slot->name, sizeof free_slot->name, "%s", name);
    return free_slot;
}

enum { RS_T_NONE = 0, RS_T_OK, RS_T_FAILED_STOP, RS_T_FAILED_CONT, RS_T_SKIPPED };

/* The tasks after a successful firing of schedule sname, in dependency
** order (cfg->t is sorted so), on the same connection. */
static void rs_run_tasks(rs_exec *x, run_sched *s, PGconn *c, rs_cfg *cfg, const char *sname,
                         int64_t slot)
{
    pgpipe_runner *r = x->r;
    if (!cfg->nt)
        return;
    int *res = pp_calloc((size_t)cfg->nt, sizeof *res);
    if (!res)
        return;
    for (int i = 0; i < cfg->nt; i++) {
        rs_task *t = &cfg->t[i];
        int involved = 0, all_ok = 1, blocked = 0;
        for (int j = 0; j < t->nafter; j++) {
            int st = RS_T_NONE;
            if (!strcmp(t->after[j], sname))
                st = RS_T_OK;
            else
                for (int k = 0; k < i; k++)
                    if (!strcmp(cfg->t[k].name, t->after[j]))
                        st = res[k];
            if (st != RS_T_NONE)
                involved = 1;
            if (st == RS_T_FAILED_STOP || st == RS_T_SKIPPED)
                blocked = 1;
            if (st != RS_T_OK && st != RS_T_FAILED_CONT)
                all_ok = 0;
        }
        if (!involved)
            continue;
        int64_t t0 = run_now_ms();
        if (blocked || !all_ok || run_stopping(r)) {
            if (blocked || run_stopping(r)) {
                res[i] = RS_T_SKIPPED;
                rs_history(r, c, cfg, "task", t->name, slot, t0, t0, "skipped", 0, -1,
                           run_stopping(r) ? "the runner is stopping"
                                           : "a task it runs after failed",
                           NULL);
            }
            continue;
        }
        pgpipe_error e;
        const char *status = "failed";
        long long rows = 0;
        int attempts = 0;
        int64_t backoff = t->backoff_ms > 0 ? t->backoff_ms : 1000;
        for (;;) {
            attempts++;
            rs_exec_steps(x, s, c, t->name, t->steps, t->nsteps, t->timeout_ms, slot, &rows,
                          &e, &status);
            if (!strcmp(status, "ok") || attempts > t->retries || run_stopping(r))
                break;
            /* exponential backoff with jitter: a delay in [b/2, b] */
            int64_t b = backoff;
            pthread_mutex_lock(&s->mu);
            uint64_t rv = pp_rand_next(&s->rnd);
            pthread_mutex_unlock(&s->mu);
            int64_t d = b / 2 + (b > 1 ? (int64_t)(rv % (uint64_t)(b - b / 2 + 1)) : 0);
            run_log(r, PGPIPE_LOG_WARN, "task failed; retrying", "task", t->name, "error",
                    e.message, NULL);
            if (rs_sleep(s, d))
                break;
            backoff = backoff * 2;
            if (t->backoff_max_ms > 0 && backoff > t->backoff_max_ms)
                backoff = t->backoff_max_ms;
        }
        int ok = !strcmp(status, "ok");
        res[i] = ok ? RS_T_OK : t->on_failure == PGPIPE_PIPE_FAIL_CONTINUE ? RS_T_FAILED_CONT
                                                                          : RS_T_FAILED_STOP;
        rs_history(r, c, cfg, "task", t->name, slot, t0, run_now_ms(), status, attempts,
                   ok ? rows : -1, ok ? NULL : e.message, ok ? NULL : e.sqlstate);
        pthread_mutex_lock(&s->mu);
        rs_fails *f = rs_fails_of(s, t->name);
        int nfail = 0;
        if (f)
            nfail = f->n = ok ? 0 : f->n + 1;
        pthread_mutex_unlock(&s->mu);
        if (!ok) {
            run_log(r, PGPIPE_LOG_ERROR, "task failed", "task", t->name, "status", status,
                    "error", e.message, NULL);
            if (t->alert_k > 0 && nfail == t->alert_k) {
                pp_buf d = { 0 };
                char msg[256];
                snprintf(msg, sizeof msg, "task %s failed %d times in a row", t->name, nfail);
                pp_buf_appendf(&d, "{\"task\":");
                pp_json_str(&d, t->name, strlen(t->name), 0);
                pp_buf_appendf(&d, ",\"failures\":%d,\"error\":", nfail);
                pp_json_str(&d, e.message, strlen(e.message), 0);
                pp_buf_appendf(&d, "}");
                run_alert_raise(r, "task-failures", t->name, msg, d.data);
                pp_buf_free(&d);
            }
        }
    }
    pp_free(res);
}

static int rs_try_lock(PGconn *c, const char *k1, const char *k2, int *got, pgpipe_error *e)
{
    const char *p[2] = { k1, k2 };
    PGresult *res = NULL;
    int rc = pp_exec(c, "SELECT pg_try_advisory_lock($1::int, $2::int)", 2, p, &res, e,
                     "the overlap lock");
    if (rc)
        return rc;
    *got = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return PGPIPE_OK;
}

static void rs_unlock(PGconn *c, const char *k1, const char *k2)
{
    const char *p[2] = { k1, k2 };
    pp_exec(c, "SELECT pg_advisory_unlock($1::int, $2::int)", 2, p, NULL, NULL, NULL);
}

/* Take the overlap lock by the schedule's rule: 1 taken, 0 not (recorded
** as skipped by the caller), -1 the connection failed. */
static int rs_overlap(rs_exec *x, run_sched *s, PGconn *c, const rs_cfg *cfg,
                      const rs_schedule *sc, pgpipe_error *e)
{
    char k1[16], k2[16], q1[16], q2[16];
    rs_keys(cfg->pipeline, sc->name, 0, k1, k2);
    int got = 0;
    if (rs_try_lock(c, k1, k2, &got, e))
        return -1;
    /* A transactional firing that just ended (committed, or its backend
    ** terminated) released the schedule row this firing's claim waited
    ** for a moment before its advisory lock: look again for a quarter of
    ** a second before taking the lock as held by a firing that runs (as
    ** pgpipe.run_overlap_lock does in run_fire). */
    for (int i = 0; !got && i < 5 && !run_stopping(x->r); i++) {
        if (rs_sleep(s, 50))
            break;
        if (rs_try_lock(c, k1, k2, &got, e))
            return -1;
    }
    if (got || sc->overlap == PGPIPE_PIPE_OVERLAP_SKIP)
        return got;
    int queued = 0;
    if (sc->overlap == PGPIPE_PIPE_OVERLAP_QUEUE) {
        /* at most one firing waits, across instances: the one holding the
        ** queue lock */
        rs_keys(cfg->pipeline, sc->name, 1, q1, q2);
        if (rs_try_lock(c, q1, q2, &queued, e))
            return -1;
        if (!queued)
            return 0;
    } else {
        const char *p[2] = { k1, k2 };
        pp_exec(c,
                "SELECT pg_cancel_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND "
                "classid = $1::int::oid AND objid = $2::int::oid AND objsubid = 2 AND granted "
                "AND pid <> pg_backend_pid()",
                2, p, NULL, NULL, NULL);
        run_log(x->r, PGPIPE_LOG_WARN, "overlap replace: cancelled the running firing",
                "schedule", sc->name, NULL);
    }
    /* wait for the running firing to end (replace: for the cancel to land) */
    int64_t until = sc->overlap == PGPIPE_PIPE_OVERLAP_REPLACE ? run_now_ms() + 30000 : 0;
    while (!got && !run_stopping(x->r) && (!until || run_now_ms() < until)) {
        if (rs_sleep(s, 50))
            break;
        if (rs_try_lock(c, k1, k2, &got, e))
            return -1;
    }
    if (queued)
        rs_unlock(c, q1, q2);
    return got;
}

static void rs_running(pgpipe_runner *r, PGconn *c, const rs_cfg *cfg, const char *sched,
                       int64_t slot, int set)
{
    char sl[24];
    rs_i64(sl, sizeof sl, slot);
    const char *p[4] = { cfg->pipeline, sched, r->instance, sl };
    if (set) { /* and pgpipe.slot tells the body its slot, as run_fire does */
        /* The caller holds the schedule's overlap lock, which every firing
        ** holds from before it marks the row running until after it clears
        ** the mark: a mark found here is a firing that never finished (its
        ** instance died, or its connection broke) and whose lock went with
        ** its session. Recorded as lost now: this mark replaces it, so the
        ** dead-instance sweep (run_sched_maintain) would never see it. */
        PGresult *res = NULL;
        if (pp_exec(c,
                    "WITH u AS (UPDATE pgpipe.run_schedules s SET running_instance = $3, "
                    "running_since = now(), running_slot = to_timestamp($4::bigint), "
                    "updated_at = now() FROM (SELECT running_instance AS inst, floor(extract("
                    "epoch FROM running_since) * 1000)::bigint AS since, coalesce(floor(extract("
                    "epoch FROM running_slot))::bigint, 0) AS slot FROM pgpipe.run_schedules "
                    "WHERE pipeline = $1 AND schedule = $2 FOR UPDATE) o WHERE s.pipeline = $1 "
                    "AND s.schedule = $2 RETURNING o.inst, o.since, o.slot) "
                    "SELECT set_config('pgpipe.slot', to_timestamp($4::bigint)::text, false), "
                    "u.inst, u.since, u.slot FROM (SELECT 1) x LEFT JOIN u ON true",
                    4, p, &res, NULL, NULL) == PGPIPE_OK) {
            if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 1)) {
                const char *inst = PQgetvalue(res, 0, 1);
                char msg[300];
                if (!strcmp(inst, r->instance))
                    snprintf(msg, sizeof msg, "its connection was lost while running it");
                else
                    snprintf(msg, sizeof msg, "instance %s stopped while running it", inst);
                rs_history(r, c, cfg, "schedule", sched, atoll(PQgetvalue(res, 0, 3)),
                           atoll(PQgetvalue(res, 0, 2)), run_now_ms(), "lost", 1, -1, msg, NULL);
                run_log(r, PGPIPE_LOG_WARN, "a firing was lost with its instance", "schedule",
                        sched, "lost_instance", inst, NULL);
            }
            PQclear(res);
        }
    } else
        pp_exec(c,
                "UPDATE pgpipe.run_schedules SET running_instance = NULL, running_since = NULL, "
                "running_slot = NULL, updated_at = now() "
                "WHERE pipeline = $1 AND schedule = $2 AND running_instance = $3",
                3, p, NULL, NULL, NULL);
}

static void rs_job_run(rs_exec *x, run_sched *s, rs_job *j)
{
    pgpipe_runner *r = x->r;
    rs_cfg *cfg = j->cfg;
    const rs_schedule *sc = &cfg->s[j->si];
    int64_t last = j->slots[j->nslots - 1];
    pgpipe_conn *cc = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    int64_t t0 = run_now_ms();
    x->unclean = 0;
    if (pgpipe_pool_acquire_ex(r->pool, &cc, 10000, &e)) {
        run_log(r, PGPIPE_LOG_ERROR, "no connection for a firing", "schedule", sc->name, "error",
                e.message, NULL);
        return;
    }
    PGconn *c = pgpipe_conn_pg(cc);
    if (j->claim) { /* a transactional firing that fell back: claim it here */
        int64_t prev = 0;
        int won = rs_claim(c, cfg, sc, j->slots[0], &prev, &e);
        /* The claim waited for the row while a firing of the schedule ran
        ** in its transaction: a slot it won only past the grace came while
        ** that firing still ran, and the overlap rule skips it. */
        int late = won > 0 && run_now_ms() - j->slots[0] * 1000 > RS_GRACE_MS;
        if (late) {
            rs_history(r, c, cfg, "schedule", sc->name, j->slots[0], t0, run_now_ms(),
                       "skipped", 0, -1, "the last run still ran at the slot's time", NULL);
            run_log(r, PGPIPE_LOG_INFO, "firing skipped: the last run still ran", "schedule",
                    sc->name, NULL);
        }
        if (won <= 0 || late) {
            if (won < 0)
                run_log(r, PGPIPE_LOG_ERROR, "firing failed: the database", "schedule",
                        sc->name, "error", e.message, NULL);
            if (PQstatus(c) != CONNECTION_OK)
                pgpipe_pool_discard(cc);
            else
                pgpipe_pool_release(cc);
            return;
        }
    }
    pp_cancel_arm(&x->cancel, c);
    int broken = 0;
    int lk = rs_overlap(x, s, c, cfg, sc, &e);
    if (lk < 0) {
        broken = 1;
        run_log(r, PGPIPE_LOG_ERROR, "firing failed: the database", "schedule", sc->name,
                "error", e.message, NULL);
    } else if (lk == 0) {
        rs_history(r, c, cfg, "schedule", sc->name, last, t0, run_now_ms(), "skipped", 0, -1,
                   run_stopping(r) ? "the runner is stopping" : "the last run still runs",
                   NULL);
        run_log(r, PGPIPE_LOG_INFO, "firing skipped: the last run still runs", "schedule",
                sc->name, NULL);
    } else {
        for (int i = 0; i < j->nslots && !run_stopping(r); i++) {
            int64_t slot = j->slots[i];
            int64_t st = run_now_ms();
            rs_running(r, c, cfg, sc->name, slot, 1);
            long long rows = 0;
            const char *status;
            rs_exec_steps(x, s, c, sc->name, sc->steps, sc->nsteps, sc->timeout_ms, slot, &rows,
                          &e, &status);
            int ok = !strcmp(status, "ok");
            if (PQstatus(c) != CONNECTION_OK) {
                broken = 1;
                break;
            }
            rs_history(r, c, cfg, "schedule", sc->name, slot, st, run_now_ms(), status, 1,
                       ok ? rows : -1, ok ? NULL : e.message, ok ? NULL : e.sqlstate);
            if (!ok)
                run_log(r, PGPIPE_LOG_ERROR, "firing failed", "schedule", sc->name, "status",
                        status, "error", e.message, NULL);
            else
                rs_run_tasks(x, s, c, cfg, sc->name, slot);
            rs_running(r, c, cfg, sc->name, slot, 0);
        }
        char k1[16], k2[16];
        rs_keys(cfg->pipeline, sc->name, 0, k1, k2);
        if (!broken)
            rs_unlock(c, k1, k2);
    }
    pp_cancel_arm(&x->cancel, NULL);
    if (broken || x->unclean || PQstatus(c) != CONNECTION_OK)
        pgpipe_pool_discard(cc); /* the session lock goes with it */
    else
        pgpipe_pool_release(cc);
}

static void *rs_exec_main(void *arg)
{
    rs_exec *x = arg;
    run_sched *s = x->r->sched;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->stopping)
            pthread_cond_wait(&s->cv, &s->mu);
        if (s->stopping)
            break;
        rs_job *j = s->head;
        s->head = j->next;
        if (!s->head)
            s->tail = NULL;
        x->busy = 1;
        x->cancelled = 0;
        /* a transactional job has no one schedule: its overlap rule is the
        ** advisory lock run_fire takes */
        snprintf(x->job, sizeof x->job, "%s", j->sis ? "" : j->cfg->s[j->si].name);
        pthread_mutex_unlock(&s->mu);
        if (j->sis)
            rs_tx_run(x, s, j);
        else
            rs_job_run(x, s, j);
        pp_free(j->sis);
        pp_free(j->slots);
        rs_cfg_unref(s, j->cfg);
        pp_free(j);
        pthread_mutex_lock(&s->mu);
        x->busy = 0;
        x->job[0] = 0;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* ---- the timer --------------------------------------------------------- */

/* Make the schedule's row (a new one starts now: no backfill) and read its
** last slot (Unix seconds) into *last. fresh: the schedule was just added
** by a reload, so it starts now too, though a row remains from when the file
** had it before (removed by an earlier reload): its last slot is moved up
** to now (never back: an instance running the old file may claim it
** meanwhile), or the slots passed while it was out of the file would count
** as missed. */
static int rs_row(PGconn *c, const rs_cfg *cfg, const rs_schedule *sc, int fresh, int64_t *last,
                  pgpipe_error *e)
{
    const char *p[5] = { cfg->pipeline, sc->name, sc->expr, sc->tz, fresh ? "t" : "f" };
    PGresult *res = NULL;
    int rc = pp_exec(c,
                     "INSERT INTO pgpipe.run_schedules AS s (pipeline, schedule, expr, tz, "
                     "last_slot) VALUES ($1, $2, $3, $4, now()) ON CONFLICT (pipeline, schedule) "
                     "DO UPDATE SET expr = EXCLUDED.expr, tz = EXCLUDED.tz, updated_at = now(), "
                     "last_slot = CASE WHEN $5::bool THEN greatest(s.last_slot, now()) "
                     "ELSE coalesce(s.last_slot, now()) END "
                     "RETURNING floor(extract(epoch FROM last_slot))::bigint",
                     5, p, &res, e, "the schedule's row");
    if (rc)
        return rc;
    *last = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return PGPIPE_OK;
}

/* The compare-and-set: 1 when this instance won slot (then *prev is the
** last slot before it), 0 when another has it (*prev: the slot it has;
** -1 when the row is gone: deleted by hand, the caller makes it again),
** -1 on a database error. In one transaction, two statements: the row is
** locked and read (waiting for a contender's transaction: READ COMMITTED
** then reads the row as that one left it), then moved when the slot is
** later. Not one statement with a CTE that reads the row and another that
** updates it: data-modifying CTEs all run on one snapshot, in an order
** PostgreSQL does not promise, and a FOR UPDATE that ran after the UPDATE
** would find the row changed by its own statement and return nothing. */
static int rs_claim(PGconn *c, const rs_cfg *cfg, const rs_schedule *sc, int64_t slot,
                    int64_t *prev, pgpipe_error *e)
{
    char sl[24];
    rs_i64(sl, sizeof sl, slot);
    const char *p[3] = { cfg->pipeline, sc->name, sl };
    PGresult *res = NULL;
    int won = 0;
    *prev = -1;
    if (pp_exec(c, PP_BEGIN, 0, NULL, NULL, e, "claiming the slot"))
        return -1;
    int rc = pp_exec(c,
                     "SELECT coalesce(floor(extract(epoch FROM last_slot))::bigint, 0) "
                     "FROM pgpipe.run_schedules WHERE pipeline = $1 AND schedule = $2 "
                     "FOR UPDATE",
                     2, p, &res, e, "claiming the slot");
    if (!rc && PQntuples(res) == 1) {
        *prev = atoll(PQgetvalue(res, 0, 0));
        won = *prev < slot;
    }
    PQclear(res);
    if (!rc && won)
        rc = pp_exec(c, "UPDATE pgpipe.run_schedules SET last_slot = to_timestamp($3::bigint), "
                        "updated_at = now() WHERE pipeline = $1 AND schedule = $2",
                     3, p, NULL, e, "claiming the slot");
    if (!rc)
        rc = pp_exec(c, "COMMIT", 0, NULL, NULL, e, "claiming the slot");
    if (rc) {
        pp_rollback_open(c);
        *prev = -1;
        return -1;
    }
    return won;
}

/* Hand a firing to the executors. The overlap rule on this instance
** (the advisory lock covers the others): skip when a firing of the
** schedule runs or waits here; queue: at most one waits; replace: the
** running one is cancelled. Returns 0 when queued, 1 when skipped. */
static int rs_enqueue(run_sched *s, rs_cfg *cfg, int si, int64_t *slots, int n, int claim)
{
    rs_job *j = pp_calloc(1, sizeof *j);
    if (!j) {
        pp_free(slots);
        return 1;
    }
    const rs_schedule *sc = &cfg->s[si];
    j->si = si, j->slots = slots, j->nslots = n, j->claim = claim;
    pthread_mutex_lock(&s->mu);
    int running = 0, waiting = 0;
    for (int i = 0; i < s->nex; i++)
        if (s->ex[i].busy && !strcmp(s->ex[i].job, sc->name))
            running = 1;
    for (rs_job *q = s->head; q; q = q->next)
        if (!strcmp(q->cfg->s[q->si].name, sc->name))
            waiting = 1;
    if (waiting || (running && sc->overlap == PGPIPE_PIPE_OVERLAP_SKIP)) {
        pthread_mutex_unlock(&s->mu);
        pp_free(slots);
        pp_free(j);
        return 1;
    }
    if (running && sc->overlap == PGPIPE_PIPE_OVERLAP_REPLACE)
        for (int i = 0; i < s->nex; i++)
            if (s->ex[i].busy && !strcmp(s->ex[i].job, sc->name)) {
                s->ex[i].cancelled = 1;
                pp_cancel_fire(&s->ex[i].cancel);
            }
    j->cfg = cfg;
    cfg->refs++;
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static void rs_set_next(run_sched *s, rs_state *st, const rs_schedule *sc, int64_t after)
{
    int64_t n;
    if (rs_next(sc, after, &n)) {
        st->ready = 0; /* nothing fires within 30 years: look again in an hour */
        st->fire_ms = run_now_ms() + 3600000;
        return;
    }
    st->next = n;
    st->planned_ms = run_now_ms();
    st->jitter_ms =
        sc->jitter_ms > 0 ? (int64_t)(pp_rand_next(&s->trnd) % (uint64_t)sc->jitter_ms) : 0;
    st->fire_ms = n * 1000 + st->jitter_ms;
}

/* The latest slot of sc not after now (Unix seconds), from slot `from`. */
static int64_t rs_latest(const rs_schedule *sc, int64_t from, int64_t now)
{
    int64_t L = from, n;
    if (sc->cron.every_ms >= 1000) {
        int64_t ev = sc->cron.every_ms / 1000, at = now - now % ev;
        if (at > L)
            L = at;
    } else {
        while (!rs_next(sc, L, &n) && n <= now)
            L = n;
    }
    return L;
}

/* The slots in (prev, L]: their count, *first the earliest (0 if none). */
static int64_t rs_between(const rs_schedule *sc, int64_t prev, int64_t L, int64_t *first)
{
    int64_t count = 0, n;
    *first = 0;
    if (prev <= 0 || prev >= L)
        return 0;
    if (sc->cron.every_ms > 0) {
        int64_t ev = sc->cron.every_ms / 1000 > 0 ? sc->cron.every_ms / 1000 : 1;
        int64_t f;
        if (!rs_next(sc, prev, &f) && f <= L)
            *first = f, count = (L - f) / ev + 1;
    } else {
        int64_t cur = prev;
        while (count < RS_COUNT_MAX && !rs_next(sc, cur, &n) && n <= L) {
            if (!count)
                *first = n;
            cur = n, count++;
        }
    }
    return count;
}

/* Record `missed` slots from `first` (the history row, the log line, the
** schedule-missed alert); current: slot L itself fires. */
static void rs_missed_note(pgpipe_runner *r, PGconn *c, const rs_cfg *cfg, const rs_schedule *sc,
                           int64_t first, int64_t missed, int current, int64_t L)
{
    const char *pol = sc->missed == PGPIPE_PIPE_MISSED_SKIP ? "skip"
                      : sc->missed == PGPIPE_PIPE_MISSED_ALL ? "all" : "once";
    char fs[32], ls[32], cnt[24], msg[256];
    rs_iso(fs, sizeof fs, first);
    rs_iso(ls, sizeof ls, current ? L - 1 : L);
    rs_i64(cnt, sizeof cnt, missed);
    snprintf(msg, sizeof msg, "%s slot%s missed (%s .. %s); --missed %s: %s", cnt,
             missed == 1 ? "" : "s", fs, ls, pol,
             sc->missed == PGPIPE_PIPE_MISSED_SKIP ? "none run"
             : sc->missed == PGPIPE_PIPE_MISSED_ALL ? "each run in order"
                                                     : "run once for the latest");
    int64_t t = run_now_ms();
    rs_history(r, c, cfg, "schedule", sc->name, first, t, t, "missed", 0, missed, msg, NULL);
    run_log(r, PGPIPE_LOG_WARN, "schedule missed slots", "schedule", sc->name, "missed", cnt,
            "policy", pol, NULL);
    pp_buf d = { 0 };
    pp_buf_appendf(&d, "{\"schedule\":");
    pp_json_str(&d, sc->name, strlen(sc->name), 0);
    pp_buf_appendf(&d, ",\"missed\":%lld,\"first\":\"%s\",\"last\":\"%s\",\"policy\":\"%s\"}",
                   (long long)missed, fs, ls, pol);
    run_alert_raise(r, "schedule-missed", sc->name, msg, d.data);
    pp_buf_free(&d);
}

/* The slot st->next came: claim the latest slot not after now, and apply
** the missed rule to the slots between the last claimed one and it. */
static int rs_fire(pgpipe_runner *r, run_sched *s, PGconn *c, rs_cfg *cfg, int si, rs_state *st,
                   pgpipe_error *e)
{
    const rs_schedule *sc = &cfg->s[si];
    int64_t now_ms = run_now_ms(), now = now_ms / 1000;
    int64_t L = rs_latest(sc, st->next, now), n;
    int64_t prev = 0;
    int won = rs_claim(c, cfg, sc, L, &prev, e);
    if (won < 0)
        return -1;
    if (!won && prev < 0) {
        st->ready = 0;
        return 0;
    }
    if (!won) {
        rs_set_next(s, st, sc, prev > L ? prev : L);
        return 0;
    }
    /* the slots in (prev, L]: normally L alone; those skipped here as busy
    ** (rs_tx_run) were not missed */
    pthread_mutex_lock(&s->mu);
    int64_t from = prev < sc->skipped_through ? sc->skipped_through : prev;
    pthread_mutex_unlock(&s->mu);
    int64_t first = 0, count = rs_between(sc, from, L, &first);
    if (count < 1)
        count = 1, first = L;
    /* The slot the timer was waiting for is current however late its
    ** claim comes (a burst of schedules due at once is claimed one after
    ** another); a slot it did not wait for (this instance started or woke
    ** after it) is missed once past the grace. */
    int current = (L == st->next && st->planned_ms <= L * 1000 + st->jitter_ms) ||
                  now_ms - (L * 1000 + st->jitter_ms) < RS_GRACE_MS;
    int64_t missed = count - (current ? 1 : 0);
    int64_t *slots = NULL;
    int nslots = 0;
    if (missed > 0) {
        if (sc->missed == PGPIPE_PIPE_MISSED_ALL) {
            int64_t take = count > RS_ALL_MAX ? RS_ALL_MAX : count;
            char cnt[24];
            rs_i64(cnt, sizeof cnt, missed);
            if (count > RS_ALL_MAX)
                run_log(r, PGPIPE_LOG_WARN, "missed all: too many slots; running the latest 1000",
                        "schedule", sc->name, "missed", cnt, NULL);
            /* the latest `take` slots in order: walk from the first one
            ** that is within them */
            slots = pp_calloc((size_t)take, sizeof *slots);
            if (slots) {
                int64_t cur = first;
                int64_t skipn = count - take;
                if (sc->cron.every_ms > 0 && skipn > 0) {
                    int64_t ev = sc->cron.every_ms / 1000 > 0 ? sc->cron.every_ms / 1000 : 1;
                    cur = first + skipn * ev;
                    skipn = 0;
                }
                while (skipn-- > 0 && !rs_next(sc, cur, &n))
                    cur = n;
                slots[nslots++] = cur;
                while (nslots < take && !rs_next(sc, cur, &n) && n <= L)
                    slots[nslots++] = cur = n;
            }
        } else if (sc->missed == PGPIPE_PIPE_MISSED_ONCE || current) {
            if ((slots = pp_malloc(sizeof *slots)))
                slots[nslots++] = L;
        }
        rs_missed_note(r, c, cfg, sc, first, missed, current, L);
    } else if ((slots = pp_malloc(sizeof *slots))) {
        slots[nslots++] = L;
    }
    if (nslots && rs_enqueue(s, cfg, si, slots, nslots, 0)) {
        int64_t t = run_now_ms();
        rs_history(r, c, cfg, "schedule", sc->name, L, t, t, "skipped", 0, -1,
                   "the last run still runs", NULL);
        run_log(r, PGPIPE_LOG_INFO, "firing skipped: the last run still runs", "schedule",
                sc->name, NULL);
    } else if (!nslots) {
        pp_free(slots);
    }
    rs_set_next(s, st, sc, L);
    return 0;
}

/* ---- transactional firings -------------------------------------------- */

/* Fire j's slots by one pgpipe.run_fire call (see V0028__run_fire.sql):
** claims, bodies and history rows in one transaction. A connection lost
** mid-call is tried once more (the call is idempotent: what committed is
** found taken); any other failure of the call as a whole (a deadlock
** between bodies, an older schema without run_fire) rolled everything
** back, so each firing goes the other way instead: claimed and run by
** rs_job_run. When stopping, nothing more: the slots stay free for another
** instance, or for this one after its restart. */
static void rs_tx_run(rs_exec *x, run_sched *s, rs_job *j)
{
    pgpipe_runner *r = x->r;
    rs_cfg *cfg = j->cfg;
    int n = j->nslots;
    pp_buf names = { 0 }, slots = { 0 }, k2s = { 0 }, steps = { 0 }, owner = { 0 };
    char k1[16], k2[16], kok[16], kfail[16];
    int ok = 1;
    ok &= pp_buf_append(&names, "{", 1) == 0 && pp_buf_append(&slots, "{", 1) == 0 &&
          pp_buf_append(&k2s, "{", 1) == 0 && pp_buf_append(&steps, "{", 1) == 0 &&
          pp_buf_append(&owner, "{", 1) == 0;
    int nst = 0;
    for (int k = 0; ok && k < n; k++) {
        const rs_schedule *sc = &cfg->s[j->sis[k]];
        rs_keys(cfg->pipeline, sc->name, 0, k1, k2);
        ok &= (k == 0 || (pp_buf_append(&names, ",", 1) == 0 &&
                          pp_buf_append(&slots, ",", 1) == 0 &&
                          pp_buf_append(&k2s, ",", 1) == 0)) &&
              pp_array_elem(&names, sc->name, strlen(sc->name)) == 0 &&
              pp_buf_appendf(&slots, "%lld", (long long)j->slots[k]) == 0 &&
              pp_buf_appendf(&k2s, "%s", k2) == 0;
        for (int t = 0; ok && t < sc->nsteps; t++, nst++)
            ok &= (nst == 0 || (pp_buf_append(&steps, ",", 1) == 0 &&
                                pp_buf_append(&owner, ",", 1) == 0)) &&
                  pp_array_elem(&steps, sc->steps[t].text, strlen(sc->steps[t].text)) == 0 &&
                  pp_buf_appendf(&owner, "%d", k + 1) == 0;
    }
    ok &= pp_buf_append(&names, "}", 2) == 0 && pp_buf_append(&slots, "}", 2) == 0 &&
          pp_buf_append(&k2s, "}", 2) == 0 && pp_buf_append(&steps, "}", 2) == 0 &&
          pp_buf_append(&owner, "}", 2) == 0;
    snprintf(kok, sizeof kok, "%lld", (long long)rs_keep_days(cfg, "ok"));
    snprintf(kfail, sizeof kfail, "%lld", (long long)rs_keep_days(cfg, "failed"));
    const char *p[12] = { cfg->pipeline, r->instance, r->host, names.data, slots.data, k1,
                          k2s.data, steps.data, owner.data, kok, kfail,
                          cfg->hist.failures_only ? "t" : "f" };
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    PGresult *res = NULL;
    int done = 0;
    for (int attempt = 0; ok && !done && attempt < 2 && !run_stopping(r); attempt++) {
        pgpipe_conn *cc = NULL;
        if (pgpipe_pool_acquire_ex(r->pool, &cc, 10000, &e))
            break;
        PGconn *c = pgpipe_conn_pg(cc);
        pp_cancel_arm(&x->cancel, c);
        /* in a transaction of its own at READ COMMITTED (PP_BEGIN): alone,
        ** the statement would run at the database's default isolation, and
        ** two instances' firings fail to serialize under SERIALIZABLE */
        int rc = pp_exec(c, PP_BEGIN, 0, NULL, NULL, &e, "firing");
        if (rc == PGPIPE_OK)
            rc = pp_exec(c,
                         "SELECT o_i, o_status, o_prev, o_rows, o_error, o_sqlstate, "
                         "o_started_ms, o_finished_ms FROM pgpipe.run_fire($1, $2, $3, "
                         "$4::text[], $5::bigint[], $6::int, $7::int[], $8::text[], $9::int[], "
                         "$10::int, $11::int, $12::bool, current_setting('search_path'), "
                         "current_setting('lock_timeout'))",
                         12, p, &res, &e, "firing");
        if (rc == PGPIPE_OK && (rc = pp_exec(c, "COMMIT", 0, NULL, NULL, &e, "firing")) != PGPIPE_OK) {
            PQclear(res);
            res = NULL;
        }
        if (rc != PGPIPE_OK && PQstatus(c) == CONNECTION_OK)
            pp_rollback_open(c);
        pp_cancel_arm(&x->cancel, NULL);
        /* a body may change session state even here (set_config(..., false)
        ** in a SELECT): reset it as after any body (rs_body_end), before
        ** this connection writes the history of the busy and missed slots;
        ** a connection that could not be reset is not pooled */
        int broken = PQstatus(c) != CONNECTION_OK;
        int unclean = !broken && run_session_reset(c, NULL) != PGPIPE_OK;
        if (unclean && PQstatus(c) != CONNECTION_OK)
            broken = 1;
        if (rc == PGPIPE_OK) {
            done = 1;
            for (int i = 0; i < PQntuples(res); i++) {
                int k = atoi(PQgetvalue(res, i, 0)) - 1;
                if (k < 0 || k >= n)
                    continue;
                int si = j->sis[k];
                rs_schedule *sc = &cfg->s[si];
                const char *st = PQgetvalue(res, i, 1);
                int64_t prev = atoll(PQgetvalue(res, i, 2));
                if (!strcmp(st, "gone")) {
                    pthread_mutex_lock(&s->mu);
                    sc->gone = 1;
                    pthread_mutex_unlock(&s->mu);
                    continue;
                }
                if (!strcmp(st, "taken"))
                    continue;
                if (!strcmp(st, "busy")) {
                    /* a firing of it held its row past the wait: it still
                    ** runs, in its transaction, so this slot is skipped by
                    ** the overlap rule (recorded by each instance that met
                    ** it: the slot could not be claimed) */
                    rs_history(r, c, cfg, "schedule", sc->name, j->slots[k], run_now_ms(),
                               run_now_ms(), "skipped", 0, -1,
                               "the last run still runs (in its transaction)", NULL);
                    run_log(r, PGPIPE_LOG_INFO, "firing skipped: the last run still runs",
                            "schedule", sc->name, NULL);
                    pthread_mutex_lock(&s->mu);
                    if (sc->skipped_through < j->slots[k])
                        sc->skipped_through = j->slots[k];
                    pthread_mutex_unlock(&s->mu);
                    continue;
                }
                if (!strcmp(st, "ok") || !strcmp(st, "failed")) {
                    int64_t ms = atoll(PQgetvalue(res, i, 7)) - atoll(PQgetvalue(res, i, 6));
                    pthread_mutex_lock(&s->mu);
                    sc->last_ms = ms;
                    pthread_mutex_unlock(&s->mu);
                }
                if (!strcmp(st, "failed"))
                    run_log(r, PGPIPE_LOG_ERROR, "firing failed", "schedule", sc->name,
                            "status", st, "error", PQgetvalue(res, i, 4), NULL);
                else if (!strcmp(st, "skipped"))
                    run_log(r, PGPIPE_LOG_INFO, "firing skipped: the last run still runs",
                            "schedule", sc->name, NULL);
                /* slots passed between the last claimed one and this one,
                ** less those skipped here as busy */
                pthread_mutex_lock(&s->mu);
                if (prev < sc->skipped_through)
                    prev = sc->skipped_through;
                pthread_mutex_unlock(&s->mu);
                int64_t first = 0, count = rs_between(sc, prev, j->slots[k], &first);
                if (count > 1)
                    rs_missed_note(r, c, cfg, sc, first, count - 1, 1, j->slots[k]);
            }
            PQclear(res);
            res = NULL;
        } else if (!strcmp(e.sqlstate, "42883")) { /* undefined_function */
            pthread_mutex_lock(&s->mu);
            int first = !s->tx_off;
            s->tx_off = 1;
            pthread_mutex_unlock(&s->mu);
            if (first)
                run_log(r, PGPIPE_LOG_WARN, "pgpipe.run_fire is missing (the schema is older "
                        "than this runner; .migrate updates it): schedules fire one by one",
                        NULL);
        } else {
            run_log(r, PGPIPE_LOG_WARN, "transactional firing failed; firing one by one",
                    "error", e.message, NULL);
        }
        if (PQstatus(c) != CONNECTION_OK)
            broken = 1;
        if (broken || unclean)
            pgpipe_pool_discard(cc);
        else
            pgpipe_pool_release(cc);
        if (!broken && !done)
            break;
    }
    pp_buf_free(&names), pp_buf_free(&slots), pp_buf_free(&k2s);
    pp_buf_free(&steps), pp_buf_free(&owner);
    if (done || run_stopping(r))
        return;
    /* each one by the other path, claimed there */
    for (int k = 0; k < n; k++) {
        int64_t *one = pp_malloc(sizeof *one);
        if (!one)
            break;
        *one = j->slots[k];
        if (rs_enqueue(s, cfg, j->sis[k], one, 1, 1))
            run_log(r, PGPIPE_LOG_INFO, "firing skipped: the last run still runs", "schedule",
                    cfg->s[j->sis[k]].name, NULL);
    }
}

/* Is schedule i, due now, for a transactional firing? Then st->tx_slot is
** its slot. Called by the timer with mu held. */
static int rs_tx_due(run_sched *s, rs_cfg *cfg, int i, rs_state *st, int64_t now_ms)
{
    const rs_schedule *sc = &cfg->s[i];
    if (s->tx_off || !sc->tx || sc->last_ms >= RS_TX_LONG_MS || !st->ready)
        return 0;
    int64_t L = rs_latest(sc, st->next, now_ms / 1000);
    /* only the slot the timer waited for, or one within the grace: a late
    ** start's slots take the missed rule's way (rs_fire) */
    int current = (L == st->next && st->planned_ms <= L * 1000 + st->jitter_ms) ||
                  now_ms - (L * 1000 + st->jitter_ms) < RS_GRACE_MS;
    if (!current)
        return 0;
    st->tx_slot = L;
    return 1;
}

typedef struct rs_txf {
    int rank, si;
    int64_t slot, last_ms;
} rs_txf;

static int rs_txf_cmp(const void *a, const void *b)
{
    const rs_txf *x = a, *y = b;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* Queue a transactional job of the m firings f[0..m). mu held. 0 or -1. */
static int rs_tx_job(run_sched *s, rs_cfg *cfg, const rs_txf *f, int m)
{
    rs_job *j = pp_calloc(1, sizeof *j);
    int *sis = j ? pp_calloc((size_t)m, sizeof *sis) : NULL;
    int64_t *sl = sis ? pp_calloc((size_t)m, sizeof *sl) : NULL;
    if (!sl) {
        pp_free(j), pp_free(sis);
        return -1;
    }
    for (int k = 0; k < m; k++)
        sis[k] = f[k].si, sl[k] = f[k].slot;
    j->cfg = cfg, cfg->refs++;
    j->sis = sis, j->slots = sl, j->nslots = m, j->si = sis[0];
    if (s->tail)
        s->tail->next = j;
    else
        s->head = j;
    s->tail = j;
    return 0;
}

/* Hand the n schedules of s->txq to the executors as transactional jobs:
** the short ones (last run under RS_TX_SHORT_MS, or none yet) in name
** order (concurrent run_fire calls then lock the schedule rows in one
** order) in up to one shared job per executor, at least RS_TX_CHUNK_MIN
** firings each; the others a job each. Then each one's next slot. A job
** that cannot be made is tried again in a second. mu held. */
static void rs_tx_dispatch(run_sched *s, rs_cfg *cfg, int n)
{
    rs_txf *f = pp_calloc((size_t)n, sizeof *f);
    if (!f) {
        for (int k = 0; k < n; k++)
            s->st[s->txq[k]].fire_ms = run_now_ms() + 1000;
        return;
    }
    /* the short ones first, in name order; then the others */
    for (int k = 0; k < n; k++) {
        int si = s->txq[k];
        f[k].si = si, f[k].slot = s->st[si].tx_slot, f[k].last_ms = cfg->s[si].last_ms;
        f[k].rank = cfg->rank[si] + (f[k].last_ms < RS_TX_SHORT_MS ? 0 : cfg->ns);
    }
    qsort(f, (size_t)n, sizeof *f, rs_txf_cmp);
    int nshort = 0;
    while (nshort < n && f[nshort].last_ms < RS_TX_SHORT_MS)
        nshort++;
    int chunks = (nshort + RS_TX_CHUNK_MIN - 1) / RS_TX_CHUNK_MIN;
    if (chunks > s->nex)
        chunks = s->nex;
    int64_t retry = run_now_ms() + 1000;
    for (int c = 0, k = 0; c < chunks; c++) {
        int m = (nshort - k) / (chunks - c);
        if (rs_tx_job(s, cfg, f + k, m))
            for (int q = k; q < k + m; q++)
                f[q].slot = -1;
        k += m;
    }
    for (int k = nshort; k < n; k++)
        if (rs_tx_job(s, cfg, f + k, 1))
            f[k].slot = -1;
    /* the executors start now; the next slots are computed meanwhile (the
    ** timer's own work: s->st is read by others only under mu) */
    pthread_cond_broadcast(&s->cv);
    rs_state *nx = pp_calloc((size_t)n, sizeof *nx);
    if (nx) {
        for (int k = 0; k < n; k++)
            nx[k] = s->st[f[k].si];
        pthread_mutex_unlock(&s->mu);
        for (int k = 0; k < n; k++)
            if (f[k].slot >= 0)
                rs_set_next(s, &nx[k], &cfg->s[f[k].si], f[k].slot);
        pthread_mutex_lock(&s->mu);
    }
    for (int k = 0; k < n; k++) {
        rs_state *st = &s->st[f[k].si];
        if (f[k].slot < 0)
            st->fire_ms = retry;
        else if (nx)
            *st = nx[k];
        else
            rs_set_next(s, st, &cfg->s[f[k].si], f[k].slot);
    }
    pp_free(nx);
    pp_free(f);
}

/* The timer checks the running bodies: past their timeout, or past the
** drain time after stop, they are cancelled. Called with mu held; returns
** the nearest deadline (0: none). */
static int64_t rs_watch(run_sched *s, int64_t now)
{
    int64_t nearest = 0;
    for (int i = 0; i < s->nex; i++) {
        rs_exec *x = &s->ex[i];
        if (!x->busy)
            continue;
        int64_t dl = x->deadline_ms;
        if (s->stopping && s->drain_until && (!dl || s->drain_until < dl))
            dl = s->drain_until;
        if (!dl || x->cancelled)
            continue;
        if (now >= dl) {
            x->cancelled = 1;
            if (x->deadline_ms && now >= x->deadline_ms)
                x->timed_out = 1;
            pp_cancel_fire(&x->cancel);
        } else if (!nearest || dl < nearest) {
            nearest = dl;
        }
    }
    return nearest;
}

static void *rs_timer_main(void *arg)
{
    pgpipe_runner *r = arg;
    run_sched *s = r->sched;
    pgpipe_conn *cc = NULL;
    int gen = -1;
    rs_cfg *cfg = NULL;
    pgpipe_error e;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        if (gen != s->gen) { /* start or reload: take the new cfg */
            rs_cfg *old = cfg;
            cfg = s->cfg;
            cfg->refs++;
            gen = s->gen;
            rs_state *nst = pp_calloc((size_t)(cfg->ns ? cfg->ns : 1), sizeof *nst);
            /* a schedule unchanged by the reload keeps its next slot */
            for (int i = 0; nst && old && i < cfg->ns; i++)
                for (int k = 0; k < old->ns && k < s->nst; k++)
                    if (!strcmp(old->s[k].name, cfg->s[i].name) &&
                        !strcmp(old->s[k].expr, cfg->s[i].expr) &&
                        !strcmp(old->s[k].tz, cfg->s[i].tz) && s->st[k].ready)
                        nst[i] = s->st[k];
            /* a schedule the reload adds starts now, as a new one does, even
            ** when the file had it before an earlier reload removed it */
            for (int i = 0; nst && old && i < cfg->ns; i++) {
                int had = 0;
                for (int k = 0; k < old->ns && !had; k++)
                    had = !strcmp(old->s[k].name, cfg->s[i].name);
                nst[i].fresh = !had;
            }
            int *txq = pp_calloc((size_t)(cfg->ns ? cfg->ns : 1), sizeof *txq);
            pp_free(s->st);
            pp_free(s->txq);
            s->st = nst;
            s->txq = txq;
            s->nst = nst && txq ? cfg->ns : 0;
            if (old) {
                int last = --old->refs == 0;
                if (last) {
                    pthread_mutex_unlock(&s->mu);
                    rs_cfg_free(old);
                    pthread_mutex_lock(&s->mu);
                }
            }
            continue;
        }
        int64_t now = run_now_ms();
        int64_t wake = now + 60000;
        int due = -1, ntx = 0;
        for (int i = 0; i < s->nst; i++) {
            rs_state *st = &s->st[i];
            if (cfg->s[i].gone) { /* run_fire found no row: make it again */
                cfg->s[i].gone = 0;
                st->ready = 0;
            }
            if (!st->ready || st->fire_ms <= now) {
                if (rs_tx_due(s, cfg, i, st, now))
                    s->txq[ntx++] = i;
                else if (due < 0)
                    due = i;
                continue;
            }
            if (st->fire_ms < wake)
                wake = st->fire_ms;
        }
        if (ntx) { /* all due at once: no database work on this thread */
            rs_tx_dispatch(s, cfg, ntx);
            continue;
        }
        int64_t dl = rs_watch(s, now);
        if (dl && dl < wake)
            wake = dl;
        if (due < 0) {
            rs_wait_until(s, wake);
            continue;
        }
        /* the database work is done unlocked; s->st is only this thread's */
        /* a copy: run_sched_next_json reads s->st under mu meanwhile */
        rs_state cur = s->st[due], *st = &cur;
        pthread_mutex_unlock(&s->mu);
        memset(&e, 0, sizeof e);
        int fail = 0;
        if (!cc) {
            if (pgpipe_pool_acquire_ex(r->pool, &cc, 5000, &e))
                cc = NULL, fail = 1;
        }
        if (cc) {
            PGconn *c = pgpipe_conn_pg(cc);
            const rs_schedule *sc = &cfg->s[due];
            if (!st->ready) {
                int64_t last;
                if (rs_row(c, cfg, sc, st->fresh, &last, &e))
                    fail = 1;
                else {
                    st->fresh = 0;
                    rs_set_next(s, st, sc, last);
                    /* slots missed while no instance ran come due at once */
                    if (st->next <= run_now_ms() / 1000)
                        st->fire_ms = 0;
                    st->ready = 1;
                }
            } else if (rs_fire(r, s, c, cfg, due, st, &e)) {
                fail = 1;
            }
            if (fail && PQstatus(c) != CONNECTION_OK) {
                pgpipe_pool_discard(cc);
                cc = NULL;
            }
        }
        pthread_mutex_lock(&s->mu);
        if (fail)
            st->fire_ms = run_now_ms() + 1000;
        s->st[due] = cur;
        if (fail) {
            run_log(r, PGPIPE_LOG_WARN, "schedule: the database failed; trying again in 1 s",
                    "schedule", cfg->s[due].name, "error", e.message, NULL);
            rs_wait_until(s, st->fire_ms);
        }
    }
    /* drain: cancel past the deadline until the executors are idle */
    for (;;) {
        int busy = 0;
        for (int i = 0; i < s->nex; i++)
            busy |= s->ex[i].busy;
        if (!busy)
            break;
        int64_t now = run_now_ms();
        int64_t dl = rs_watch(s, now);
        rs_wait_until(s, dl && dl < now + 200 ? dl : now + 200);
    }
    int last = cfg && --cfg->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (last)
        rs_cfg_free(cfg);
    if (cc)
        pgpipe_pool_release(cc);
    return NULL;
}

/* ---- the component's interface ----------------------------------------- */

PGPIPE_PRIVATE int run_sched_start(pgpipe_runner *r)
{
    if (r->sched)
        return PGPIPE_MISUSE;
    run_sched *s = pp_calloc(1, sizeof *s);
    if (!s)
        return pp_err_nomem(&r->h.err);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    s->rnd = pp_rand_seed();
    s->trnd = pp_rand_seed();
    r->sched = s;
    if (!(s->cfg = rs_cfg_new(r->def, &r->h.err)))
        return r->h.err.code ? r->h.err.code : PGPIPE_NOMEM;
    s->nex = r->def->nschedules < RS_MAX_EXECUTORS ? r->def->nschedules : RS_MAX_EXECUTORS;
    if (s->nex < 1)
        s->nex = 1;
    for (int i = 0; i < s->nex; i++) {
        s->ex[i].r = r;
        if (pthread_create(&s->ex[i].th, NULL, rs_exec_main, &s->ex[i]))
            return pp_err(&r->h.err, PGPIPE_ERROR, "schedules: cannot start a thread");
        s->ex[i].started = 1;
    }
    if (pthread_create(&s->timer, NULL, rs_timer_main, r))
        return pp_err(&r->h.err, PGPIPE_ERROR, "schedules: cannot start a thread");
    s->timer_started = 1;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void run_sched_stop(pgpipe_runner *r, int drain_ms)
{
    run_sched *s = r->sched;
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = 1;
    s->drain_until = run_now_ms() + (drain_ms > 0 ? drain_ms : 0);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (s->timer_started) {
        pthread_join(s->timer, NULL);
        s->timer_started = 0;
    } else { /* no timer to cancel past the drain time: wait for them */
    }
    for (int i = 0; i < s->nex; i++)
        if (s->ex[i].started) {
            pthread_join(s->ex[i].th, NULL);
            s->ex[i].started = 0;
        }
    /* claimed but not started: they are dropped, and said so */
    while (s->head) {
        rs_job *j = s->head;
        s->head = j->next;
        if (j->sis) /* not claimed: the slots stay free for another instance */
            run_log(r, PGPIPE_LOG_INFO, "stopping: firings not made; their slots stay free",
                    "schedule", j->cfg->s[j->si].name, NULL);
        else
            run_log(r, PGPIPE_LOG_WARN, "stopping: a claimed firing did not start", "schedule",
                    j->cfg->s[j->si].name, NULL);
        pp_free(j->sis);
        pp_free(j->slots);
        rs_cfg_unref(s, j->cfg);
        pp_free(j);
    }
    s->tail = NULL;
}

PGPIPE_PRIVATE int run_sched_reload(pgpipe_runner *r, const pgpipe_pipe_def *def)
{
    run_sched *s = r->sched;
    if (!s)
        return PGPIPE_OK;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    rs_cfg *c = rs_cfg_new(def, &e);
    if (!c) {
        run_log(r, PGPIPE_LOG_ERROR, "schedules: reload refused", "error", e.message, NULL);
        return e.code ? e.code : PGPIPE_NOMEM;
    }
    pthread_mutex_lock(&s->mu);
    rs_cfg *old = s->cfg;
    s->cfg = c;
    s->gen++;
    int last = --old->refs == 0;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    if (last)
        rs_cfg_free(old);
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void run_sched_free(pgpipe_runner *r)
{
    run_sched *s = r->sched;
    if (!s)
        return;
    run_sched_stop(r, 0);
    for (int i = 0; i < s->nex; i++)
        pp_cancel_arm(&s->ex[i].cancel, NULL);
    if (s->cfg)
        rs_cfg_unref(s, s->cfg);
    pp_free(s->st);
    pp_free(s->txq);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pp_free(s);
    r->sched = NULL;
}

/* pgpipe.run_actions exists (the schema may predate it when the runner
** does not install it). */
static int rs_actions_exist(PGconn *c)
{
    PGresult *res = NULL;
    if (pp_exec(c, "SELECT to_regclass('pgpipe.run_actions') IS NOT NULL", 0, NULL, &res, NULL,
                NULL))
        return 0;
    int ok = PQntuples(res) == 1 && PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    return ok;
}

PGPIPE_PRIVATE int run_sched_maintain(pgpipe_runner *r, PGconn *conn, pgpipe_error *err)
{
    run_sched *s = r->sched;
    if (!s)
        return PGPIPE_OK;
    pthread_mutex_lock(&s->mu);
    rs_cfg *cfg = s->cfg;
    if (cfg)
        cfg->refs++;
    pthread_mutex_unlock(&s->mu);
    if (!cfg)
        return PGPIPE_OK;
    /* firings of instances found dead (or stopped) are recorded as lost */
    char to[24];
    snprintf(to, sizeof to, "%d", r->opt.instance_timeout_ms);
    const char *p[3] = { cfg->pipeline, r->instance, to };
    PGresult *res = NULL;
    int rc = pp_exec(conn,
                     "WITH o AS (SELECT s2.schedule, s2.running_instance AS inst, "
                     "s2.running_since AS since, s2.running_slot AS slot FROM "
                     "pgpipe.run_schedules s2 LEFT JOIN pgpipe.run_instances i ON "
                     "i.pipeline = s2.pipeline AND i.instance = s2.running_instance WHERE "
                     "s2.pipeline = $1 AND s2.running_instance IS NOT NULL AND "
                     "(s2.running_instance <> $2 OR NOT EXISTS (SELECT 1 FROM pgpipe.run_instances"
                     " WHERE pipeline = $1 AND instance = $2)) AND (i.instance IS NULL OR "
                     "i.stopped_at IS NOT NULL OR i.heartbeat_at < now() - "
                     "make_interval(secs => $3::float8 / 1000)) FOR UPDATE OF s2 SKIP LOCKED), "
                     "u AS (UPDATE pgpipe.run_schedules s SET running_instance = NULL, "
                     "running_since = NULL, running_slot = NULL, updated_at = now() FROM o "
                     "WHERE s.pipeline = $1 AND s.schedule = o.schedule RETURNING o.*) "
                     "SELECT schedule, inst, floor(extract(epoch FROM since) * 1000)::bigint, "
                     "coalesce(floor(extract(epoch FROM slot))::bigint, 0) FROM u",
                     3, p, &res, err, "finding lost firings");
    /* this instance's own rows are live: only another's (or a same-named
    ** predecessor's, which has no row) can be lost */
    if (!rc) {
        for (int i = 0; i < PQntuples(res); i++) {
            char msg[300];
            snprintf(msg, sizeof msg, "instance %s stopped while running it",
                     PQgetvalue(res, i, 1));
            rs_history(r, conn, cfg, "schedule", PQgetvalue(res, i, 0),
                       atoll(PQgetvalue(res, i, 3)), atoll(PQgetvalue(res, i, 2)), run_now_ms(),
                       "lost", 1, -1, msg, NULL);
            run_log(r, PGPIPE_LOG_WARN, "a firing was lost with its instance", "schedule",
                    PQgetvalue(res, i, 0), "lost_instance", PQgetvalue(res, i, 1), NULL);
        }
        PQclear(res);
    }
    /* "fire now" requests of the status page: one instance takes each (the
    ** UPDATE's SKIP LOCKED) and fires it as a manual slot, now, under the
    ** schedule's overlap rule; it does not move the schedule's last slot */
    if (!rc && (s->actions_ok || (s->actions_ok = rs_actions_exist(conn)))) {
        const char *pa[2] = { cfg->pipeline, r->instance };
        PGresult *ar = NULL;
        if (pp_exec(conn,
                    "UPDATE pgpipe.run_actions SET taken_at = now(), taken_by = $2 WHERE id IN "
                    "(SELECT id FROM pgpipe.run_actions WHERE pipeline = $1 AND action = 'fire' "
                    "AND taken_at IS NULL ORDER BY id LIMIT 16 FOR UPDATE SKIP LOCKED) "
                    "RETURNING target",
                    2, pa, &ar, NULL, NULL) == PGPIPE_OK) {
            for (int i = 0; i < PQntuples(ar); i++) {
                const char *name = PQgetvalue(ar, i, 0);
                int si = -1;
                for (int k = 0; k < cfg->ns; k++)
                    if (!strcmp(cfg->s[k].name, name))
                        si = k;
                int64_t *slot = si >= 0 ? pp_malloc(sizeof *slot) : NULL;
                if (!slot) {
                    run_log(r, PGPIPE_LOG_WARN, "a fire request names no schedule of this "
                            "pipeline (or memory ran out)", "schedule", name, NULL);
                    continue;
                }
                *slot = run_now_ms() / 1000;
                run_log(r, PGPIPE_LOG_INFO, "firing on request (status page)", "schedule", name,
                        NULL);
                if (rs_enqueue(s, cfg, si, slot, 1, 0))
                    run_log(r, PGPIPE_LOG_INFO, "fire request skipped: the schedule runs",
                            "schedule", name, NULL);
            }
            PQclear(ar);
        }
    }
    if (!rc && (!s->last_maint_ms || run_now_ms() - s->last_maint_ms >= RS_MAINTAIN_MS)) {
        char kl[16];
        snprintf(kl, sizeof kl, "%d", cfg->hist.keep_last);
        const char *q[1] = { kl };
        rc = pp_exec(conn, "SELECT pgpipe.run_history_maintain($1::int)", 1, q, NULL, err,
                     "history retention");
        if (!rc)
            s->last_maint_ms = run_now_ms();
    }
    rs_cfg_unref(s, cfg);
    return rc;
}

PGPIPE_PRIVATE void run_sched_next_json(pgpipe_runner *r, pp_buf *out)
{
    run_sched *s = r->sched;
    pp_buf_appendf(out, "[");
    if (s) {
        pthread_mutex_lock(&s->mu);
        rs_cfg *cfg = s->cfg;
        for (int i = 0; cfg && i < cfg->ns; i++) {
            int running = 0;
            for (int k = 0; k < s->nex; k++)
                if (s->ex[k].busy && !strcmp(s->ex[k].job, cfg->s[i].name))
                    running = 1;
            pp_buf_appendf(out, "%s{\"schedule\":", i ? "," : "");
            pp_json_str(out, cfg->s[i].name, strlen(cfg->s[i].name), 0);
            if (i < s->nst && s->st[i].ready) {
                char iso[32];
                rs_iso(iso, sizeof iso, s->st[i].next);
                pp_buf_appendf(out, ",\"next\":\"%s\"", iso);
            } else {
                pp_buf_appendf(out, ",\"next\":null");
            }
            pp_buf_appendf(out, ",\"running\":%s}", running ? "true" : "false");
        }
        pthread_mutex_unlock(&s->mu);
    }
    pp_buf_appendf(out, "]");
}

int pgpipe_runs_list(PGconn *conn, const pgpipe_runs_filter *f, PGresult **out, pgpipe_error *err)
{
    if (out)
        *out = NULL;
    if (!conn || !out)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_runs_list: no connection or no result pointer");
    pgpipe_runs_filter none;
    memset(&none, 0, sizeof none);
    if (!f)
        f = &none;
    const char *const vals[] = { f->pipeline, f->name, f->status, f->since };
    static const char *const names[] = { "pipeline", "name", "status", "since" };
    int empty = pp_first_empty(vals, 4);
    if (empty >= 0)
        return pp_err(err, PGPIPE_MISUSE, "runs filter: %s is empty; leave it out (NULL) for no "
                      "%s filter", names[empty], names[empty]);
    char lim[16];
    snprintf(lim, sizeof lim, "%d", f->limit > 0 ? f->limit : 50);
    /* since: a time or an interval back from now, resolved first (a bad
    ** one is said even when the history is empty) */
    char since[64];
    if (f->since && *f->since) {
        int rc = pp_time_arg(conn, "since", f->since, since, sizeof since, err);
        if (rc != PGPIPE_OK)
            return rc;
    }
    const char *p[5] = { f->pipeline, f->name, f->status, f->since && *f->since ? since : NULL,
                         lim };
    const char *sql =
        "SELECT pipeline, kind, name, slot, started_at, finished_at, status, attempts, "
        "rows, error, instance FROM pgpipe.run_history "
        "WHERE ($1::text IS NULL OR pipeline = $1) AND ($2::text IS NULL OR name = $2) "
        "AND ($3::text IS NULL OR status = $3) AND ($4::timestamptz IS NULL OR started_at >= $4) "
        "ORDER BY started_at DESC, id DESC LIMIT $5::int";
    return pp_exec(conn, sql, 5, p, out, err, "listing the runs");
}

#endif /* PGPIPE_OMIT_RUN */
