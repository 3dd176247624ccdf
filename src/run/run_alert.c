/*
** Alerts: the rules of the pipeline file (.alert), evaluated every few
** seconds on the alert thread's own connection (dlq-growth, backlog-age,
** task-failures, schedule-missed), or raised by the other components
** (run_alert_raise: run_sched for a missed schedule or a task failing in a
** row). Raised alerts are queued and delivered by the alert thread, so the
** caller never waits for the database or a command.
**
** Once per condition, on one instance: pgpipe.run_alert_state holds one row
** per (pipeline, rule, subject). Firing is a compare-and-set (an INSERT ...
** ON CONFLICT DO UPDATE ... WHERE NOT firing OR notified an hour ago): the
** instance whose statement turns the row on delivers, the others (and this
** one at the next turns) find it on and stay quiet. A periodic rule whose
** condition no longer holds turns the row off, so the next time it holds it
** is delivered again; while it holds it is delivered again every hour (a
** reminder, and the way a raised alert with nothing that clears it, such as
** a missed schedule without a run history, fires again later).
**
** Delivery, each step's failure logged and not stopping the next: a log
** line (warn), the rule's NOTIFY channel, a row in the rule's table, the
** rule's command and the runner's --on-alert command (sh -c, the alert as
** one JSON object on stdin, killed with its process group after 10 s). The same statement that
** wins the compare-and-set records the alert in pgpipe.run_alerts (kept 30
** days).
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RUN_ALERT_EVERY_MS   2000
#define RUN_ALERT_RENOTIFY_S 3600
#define RUN_ALERT_CMD_MS     10000
#define RUN_ALERT_OUT_MAX    4096  /* of a command's output, logged */
#define RUN_ALERT_OUT_LINES  32    /* log lines of it at most */
#define RUN_ALERT_OUT_PIECE  400   /* bytes of output in one log line */
#define RUN_ALERT_OUT_GRACE_MS 200 /* reading on after the command exited */
#define RUN_ALERT_QUEUE      256
#define RUN_ALERT_PURGE_MS   (3600 * 1000)

typedef struct run_alert_msg {
    char *kind, *subject, *message, *detail;
} run_alert_msg;

struct run_alerts {
    pthread_t th;
    int started;
    pthread_mutex_t mu;           /* guards what follows */
    pthread_cond_t cv;
    int stop;
    run_alert_msg q[RUN_ALERT_QUEUE];
    int nq;
};

/* A rule as this turn sees it: copied from r->def under r->mu, since a
** reload closes the old tree. */
typedef struct run_alert_rule {
    int kind;
    int64_t threshold, window_ms, older_than_ms, max_lag, max_retained;
    char *event_type, *target, *notify, *table, *command;
    char *events_table;           /* backlog-age: where its events wait */
} run_alert_rule;

typedef struct run_alert_turn {
    char *pipeline;
    run_alert_rule *rules;
    int nrules;
} run_alert_turn;

static const char *run_alert_kind_name(int kind)
{
    switch (kind) {
    case PGPIPE_PIPE_ALERT_DLQ_GROWTH: return "dlq-growth";
    case PGPIPE_PIPE_ALERT_BACKLOG_AGE: return "backlog-age";
    case PGPIPE_PIPE_ALERT_TASK_FAILURES: return "task-failures";
    case PGPIPE_PIPE_ALERT_SCHEDULE_MISSED: return "schedule-missed";
    case PGPIPE_PIPE_ALERT_CDC_LAG: return "cdc-lag";
    default: return "alert";
    }
}

static char *run_alert_dup(const char *s)
{
    return s ? pp_strdup(s) : NULL;
}

static void run_alert_turn_free(run_alert_turn *t)
{
    for (int i = 0; i < t->nrules; i++) {
        run_alert_rule *u = &t->rules[i];
        pp_free(u->event_type), pp_free(u->target), pp_free(u->notify);
        pp_free(u->table), pp_free(u->command), pp_free(u->events_table);
    }
    pp_free(t->rules);
    pp_free(t->pipeline);
    memset(t, 0, sizeof *t);
}

/* The table whose unprocessed rows are the backlog of event_type: the one
** of the .workers directive for it (or for "*"), else staging.raw_events. */
static const char *run_alert_events_table(const pgpipe_pipe_def *d, const char *event_type)
{
    const char *any = NULL;
    for (int i = 0; i < d->nworkers; i++) {
        const pgpipe_pipe_workers *w = &d->workers[i];
        if (event_type && !strcmp(w->event_type, event_type) && w->table)
            return w->table;
        if (!strcmp(w->event_type, "*") && w->table)
            any = w->table;
    }
    return any ? any : "staging.raw_events";
}

static int run_alert_turn_load(pgpipe_runner *r, run_alert_turn *t)
{
    memset(t, 0, sizeof *t);
    int rc = PGPIPE_OK;
    pp_mutex_lock(&r->mu);
    const pgpipe_pipe_def *d = r->def;
    t->pipeline = pp_strdup(d->name);
    if (d->nalerts > 0)
        t->rules = pp_calloc((size_t)d->nalerts, sizeof *t->rules);
    if (!t->pipeline || (d->nalerts > 0 && !t->rules))
        rc = PGPIPE_NOMEM;
    for (int i = 0; !rc && i < d->nalerts; i++) {
        const pgpipe_pipe_alert *a = &d->alerts[i];
        run_alert_rule *u = &t->rules[t->nrules++];
        u->kind = a->kind;
        u->threshold = a->threshold;
        u->window_ms = a->window_ms;
        u->older_than_ms = a->older_than_ms;
        u->max_lag = a->max_lag, u->max_retained = a->max_retained;
        u->event_type = run_alert_dup(a->event_type);
        u->target = run_alert_dup(a->target);
        u->notify = run_alert_dup(a->notify);
        u->table = run_alert_dup(a->table);
        u->command = run_alert_dup(a->command);
        u->events_table = pp_strdup(run_alert_events_table(d, a->event_type));
        if ((a->event_type && !u->event_type) || (a->target && !u->target) ||
            (a->notify && !u->notify) || (a->table && !u->table) ||
            (a->command && !u->command) || !u->events_table)
            rc = PGPIPE_NOMEM;
    }
    pp_mutex_unlock(&r->mu);
    if (rc)
        run_alert_turn_free(t);
    return rc;
}

/* A table name from the pipeline file goes into SQL as written: only
** identifier characters, dots and double quotes pass. */
static int run_alert_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 200)
        return 0;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '.' || *p == '"' || *p == '$' || (unsigned char)*p >= 0x80))
            return 0;
    return 1;
}

/* ---- delivery ----------------------------------------------------------- */

/* The alert as one JSON object; with_detail 0 replaces the detail (a NOTIFY
** payload is limited to 8000 bytes). */
static void run_alert_json(pp_buf *b, const char *pipeline, const char *instance,
                           const char *rule, const char *subject, const char *message,
                           const char *detail, const char *fired_at, int with_detail)
{
    pp_buf_appendf(b, "{\"pipeline\":");
    pp_json_str(b, pipeline, strlen(pipeline), 0);
    pp_buf_appendf(b, ",\"instance\":");
    pp_json_str(b, instance, strlen(instance), 0);
    pp_buf_appendf(b, ",\"rule\":");
    pp_json_str(b, rule, strlen(rule), 0);
    pp_buf_appendf(b, ",\"subject\":");
    pp_json_str(b, subject, strlen(subject), 0);
    pp_buf_appendf(b, ",\"message\":");
    pp_json_str(b, message, with_detail || strlen(message) < 1000 ? strlen(message) : 1000, 0);
    pp_buf_appendf(b, ",\"detail\":%s,\"fired_at\":", with_detail ? detail : "{\"truncated\":true}");
    pp_json_str(b, fired_at, strlen(fired_at), 0);
    pp_buf_appendf(b, "}");
}

/* What a command writes (stdout and stderr, one stream) goes to the log,
** the first RUN_ALERT_OUT_MAX bytes of it: the rest is read and dropped (a
** command that writes without end must neither fill the log nor block on
** a full pipe), and a last line says how much. */
typedef struct run_alert_out {
    char buf[RUN_ALERT_OUT_MAX + 1];
    size_t len;
    long long dropped;
} run_alert_out;

/* Read what is there on fd into o; 0 at the end of the stream (or an
** error: the stream is done with), 1 while it stays open. */
static int run_alert_out_read(int fd, run_alert_out *o)
{
    char chunk[4096];
    for (;;) {
        ssize_t n = recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
        if (n == 0)
            return 0;
        if (n < 0)
            return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
        size_t keep = RUN_ALERT_OUT_MAX - o->len;
        if (keep > (size_t)n)
            keep = (size_t)n;
        memcpy(o->buf + o->len, chunk, keep);
        o->len += keep;
        o->dropped += (long long)((size_t)n - keep);
    }
}

/* One log line per line of output (a long one in pieces the log keeps
** whole), at most RUN_ALERT_OUT_LINES; what is not logged counts as
** dropped. */
static void run_alert_out_log(pgpipe_runner *r, run_alert_out *o, const char *rule,
                              const char *subject)
{
    char piece[RUN_ALERT_OUT_PIECE + 1];
    size_t at = 0;
    int lines = 0;
    while (at < o->len && lines < RUN_ALERT_OUT_LINES) {
        size_t n = 0;
        while (at + n < o->len && n < RUN_ALERT_OUT_PIECE && o->buf[at + n] != '\n')
            n++;
        if (n) {
            memcpy(piece, o->buf + at, n);
            while (n && piece[n - 1] == '\r')
                n--;
            piece[n] = 0;
            for (size_t i = 0; i < n; i++)
                if (!piece[i])
                    piece[i] = ' '; /* a NUL would end the log's value */
            run_log(r, PGPIPE_LOG_INFO, "alert command output", "rule", rule, "subject",
                    subject, "output", piece, NULL);
            lines++;
        }
        at += n;
        while (at < o->len && (o->buf[at] == '\n' || o->buf[at] == '\r'))
            at++;
    }
    long long dropped = o->dropped + (long long)(o->len - at);
    if (dropped) {
        char kept[24], lost[24];
        snprintf(kept, sizeof kept, "%zu", at);
        snprintf(lost, sizeof lost, "%lld", dropped);
        run_log(r, PGPIPE_LOG_WARN, "alert command output cut: the rest was read and dropped",
                "rule", rule, "subject", subject, "kept_bytes", kept, "dropped_bytes", lost,
                NULL);
    }
}

/* Run cmd (sh -c) with json on its stdin; wait at most RUN_ALERT_CMD_MS,
** then kill its process group. Its stdout and stderr are read as it runs
** (run_alert_out) and logged when it ended; what a background child of it
** writes after it exited is read for RUN_ALERT_OUT_GRACE_MS more. */
static void run_alert_command(pgpipe_runner *r, const char *cmd, const char *json,
                              const char *rule, const char *subject)
{
    int sv[2], ov[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
        run_log(r, PGPIPE_LOG_WARN, "alert command not run", "rule", rule, "subject", subject,
                "error", strerror(errno), NULL);
        return;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ov)) {
        run_log(r, PGPIPE_LOG_WARN, "alert command not run", "rule", rule, "subject", subject,
                "error", strerror(errno), NULL);
        close(sv[0]), close(sv[1]);
        return;
    }
    /* fork + execl rather than posix_spawn: posix_spawn needs environ,
    ** and a reference to it from code built without -fPIC cannot go into
    ** a shared library. The child calls only async-signal-safe functions. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* no handler of ours runs in the child */
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0); /* its own group: a timeout kills what it started */
        dup2(sv[1], 0);
        dup2(ov[1], 1);
        dup2(ov[1], 2);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int err = pid < 0 ? errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid > 0)
        setpgid(pid, pid); /* also here, so the group exists before any kill */
    close(sv[1]);
    close(ov[1]);
    if (err) {
        close(sv[0]), close(ov[0]);
        run_log(r, PGPIPE_LOG_WARN, "alert command not run", "rule", rule, "subject", subject,
                "error", strerror(err), NULL);
        return;
    }
    run_alert_out out;
    out.len = 0, out.dropped = 0;
    int64_t deadline = run_now_ms() + RUN_ALERT_CMD_MS, ended_at = 0;
    size_t len = strlen(json), off = 0;
    int in_fd = sv[0], out_fd = ov[0], status = 0, done = 0;
    /* a command that does not read its stdin, or writes without end, must
    ** not hold us past the deadline */
    while (run_now_ms() < deadline) {
        if (!done) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid || (w < 0 && errno != EINTR)) {
                done = w == pid;
                ended_at = run_now_ms();
                if (!done)
                    break;
            }
        }
        if (ended_at && (out_fd < 0 || run_now_ms() - ended_at >= RUN_ALERT_OUT_GRACE_MS))
            break;
        struct pollfd p[2];
        int np = 0, pin = -1, pout = -1;
        if (in_fd >= 0 && off < len)
            pin = np, p[np++] = (struct pollfd){ in_fd, POLLOUT, 0 };
        if (out_fd >= 0)
            pout = np, p[np++] = (struct pollfd){ out_fd, POLLIN, 0 };
        int64_t left = deadline - run_now_ms();
        int ms = left < 20 ? (int)(left > 0 ? left : 0) : 20; /* waitpid between */
        if (poll(p, (nfds_t)np, ms) <= 0)
            continue;
        if (pin >= 0 && p[pin].revents) {
            ssize_t n = send(in_fd, json + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                off += (size_t)n;
            else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                off = len; /* it closed its stdin: its business */
        }
        if (in_fd >= 0 && off >= len) {
            close(in_fd); /* the end of its stdin */
            in_fd = -1;
        }
        if (pout >= 0 && p[pout].revents) {
            if (!run_alert_out_read(out_fd, &out)) {
                close(out_fd);
                out_fd = -1;
            }
        }
    }
    if (in_fd >= 0)
        close(in_fd);
    if (out_fd >= 0)
        close(out_fd);
    if (!done) {
        kill(-pid, SIGKILL);
        kill(pid, SIGKILL);
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
    }
    run_alert_out_log(r, &out, rule, subject);
    if (!done) {
        run_log(r, PGPIPE_LOG_WARN, "alert command killed after 10 s", "rule", rule, "subject",
                subject, "command", cmd, NULL);
    } else if (!WIFEXITED(status) || WEXITSTATUS(status)) {
        char st[32];
        snprintf(st, sizeof st, "%d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        run_log(r, PGPIPE_LOG_WARN, "alert command failed", "rule", rule, "subject", subject,
                "command", cmd, "exit", st, NULL);
    }
}

/* Turn the alert on; when this instance's statement did it (or it is time to
** remind), record it and deliver it. */
static void run_alert_fire(pgpipe_runner *r, PGconn *c, const char *pipeline,
                           const run_alert_rule *u, const char *rule, const char *subject,
                           const char *message, const char *detail, int raised)
{
    char renotify[16];
    snprintf(renotify, sizeof renotify, "%d", RUN_ALERT_RENOTIFY_S);
    const char *p[7] = { pipeline, rule, subject, r->instance, message,
                         detail && *detail ? detail : "{}", renotify };
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    int rc = !c ? pp_err(&e, PGPIPE_DB, "no connection") : pp_exec(c,
        "WITH f AS (INSERT INTO pgpipe.run_alert_state AS s (pipeline, rule, subject, firing, "
        "fired_at, notified_at, fired_by, message) VALUES ($1, $2, $3, true, now(), now(), $4, $5) "
        "ON CONFLICT (pipeline, rule, subject) DO UPDATE SET firing = true, "
        "fired_at = CASE WHEN s.firing THEN s.fired_at ELSE now() END, notified_at = now(), "
        "fired_by = $4, message = $5 "
        "WHERE NOT s.firing OR s.notified_at < now() - $7::int * interval '1 second' "
        "RETURNING now() AS at) "
        "INSERT INTO pgpipe.run_alerts (pipeline, rule, subject, message, detail, instance, "
        "fired_at) SELECT $1, $2, $3, $5, $6::jsonb, $4, at FROM f "
        "RETURNING to_char(fired_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
        "fired_at::text",
        7, p, &res, &e, "recording the alert");
    if (rc && !raised) {
        /* a condition is evaluated again at the next turn: delivering it
        ** unrecorded would repeat it every turn */
        run_log(r, PGPIPE_LOG_WARN, "alert not recorded, so not delivered", "rule", rule,
                "subject", subject, "error", e.message, NULL);
        return;
    } else if (rc) {
        run_log(r, PGPIPE_LOG_WARN, "alert not recorded; delivering it from here", "rule", rule,
                "subject", subject, "error", e.message, NULL);
        /* a raised alert comes once: deliver it anyway (the log and the
        ** commands need no database); another instance may deliver it too */
    } else if (PQntuples(res) == 0) {
        PQclear(res);
        return; /* already on, delivered by this or another instance */
    }
    char at[64] = "", at_sql[64] = "";
    if (res) {
        snprintf(at, sizeof at, "%s", PQgetvalue(res, 0, 0));
        snprintf(at_sql, sizeof at_sql, "%s", PQgetvalue(res, 0, 1));
        PQclear(res);
    } else {
        time_t now = time(NULL);
        struct tm tmv;
        gmtime_r(&now, &tmv);
        strftime(at, sizeof at, "%Y-%m-%dT%H:%M:%SZ", &tmv);
        snprintf(at_sql, sizeof at_sql, "%s", at);
    }
    const char *det = p[5];
    /* 1: the log line */
    run_log(r, PGPIPE_LOG_WARN, message, "rule", rule, "subject", subject, "detail", det, NULL);
    pp_buf js = { 0 };
    run_alert_json(&js, pipeline, r->instance, rule, subject, message, det, at, 1);
    if (!js.data) {
        run_log(r, PGPIPE_LOG_WARN, "alert not delivered: out of memory", "rule", rule, NULL);
        return;
    }
    /* 2: NOTIFY */
    if (c && u && u->notify) {
        pp_buf small = { 0 };
        const char *payload = js.data;
        if (js.len >= 7900) {
            run_alert_json(&small, pipeline, r->instance, rule, subject, message, det, at, 0);
            payload = small.data ? small.data : "{}";
        }
        const char *np[2] = { u->notify, payload };
        memset(&e, 0, sizeof e);
        if (pp_exec(c, "SELECT pg_notify($1, $2)", 2, np, NULL, &e, "NOTIFY"))
            run_log(r, PGPIPE_LOG_WARN, "alert NOTIFY failed", "rule", rule, "channel",
                    u->notify, "error", e.message, NULL);
        pp_buf_free(&small);
    }
    /* 3: the rule's table */
    if (c && u && u->table) {
        memset(&e, 0, sizeof e);
        if (!run_alert_name_ok(u->table)) {
            run_log(r, PGPIPE_LOG_WARN, "alert table refused: not a table name", "rule", rule,
                    "table", u->table, NULL);
        } else {
            pp_buf sql = { 0 };
            pp_buf_appendf(&sql, "INSERT INTO %s (pipeline, rule, subject, message, detail, "
                                 "fired_at) VALUES ($1, $2, $3, $4, $5::jsonb, $6::timestamptz)",
                           u->table);
            const char *tp[6] = { pipeline, rule, subject, message, det, at_sql };
            if (!sql.data || pp_exec(c, sql.data, 6, tp, NULL, &e, "alert table"))
                run_log(r, PGPIPE_LOG_WARN, "alert row not written", "rule", rule, "table",
                        u->table, "error", sql.data ? e.message : "out of memory", NULL);
            pp_buf_free(&sql);
        }
    }
    /* 4: the commands */
    if (u && u->command)
        run_alert_command(r, u->command, js.data, rule, subject);
    if (r->on_alert)
        run_alert_command(r, r->on_alert, js.data, rule, subject);
    pp_buf_free(&js);
}

static void run_alert_clear(pgpipe_runner *r, PGconn *c, const char *pipeline, const char *rule,
                            const char *subject)
{
    const char *p[3] = { pipeline, rule, subject };
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pp_exec(c, "UPDATE pgpipe.run_alert_state SET firing = false, cleared_at = now() "
                   "WHERE pipeline = $1 AND rule = $2 AND subject = $3 AND firing",
                3, p, NULL, &e, "clearing the alert"))
        run_log(r, PGPIPE_LOG_WARN, "alert not cleared", "rule", rule, "subject", subject,
                "error", e.message, NULL);
}

/* ---- the periodic rules -------------------------------------------------- */

/* Query one row; NULL on failure (logged once per turn by the caller). */
static PGresult *run_alert_query(PGconn *c, const char *sql, int n, const char *const *p,
                                 pgpipe_error *e)
{
    PGresult *res = NULL;
    if (pp_exec(c, sql, n, p, &res, e, "evaluating an alert rule"))
        return NULL;
    return res;
}

/* 1: the condition holds, 0: it does not, -1: cannot tell (left as it is). */
static int run_alert_eval(pgpipe_runner *r, PGconn *c, const char *pipeline,
                          const run_alert_rule *u, int have_history, char *subject, size_t ssz,
                          pp_buf *msg, pp_buf *detail)
{
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    PGresult *res = NULL;
    int holds = -1;
    switch (u->kind) {
    case PGPIPE_PIPE_ALERT_DLQ_GROWTH: {
        snprintf(subject, ssz, "dead_letters");
        char ws[24];
        int64_t win_s = u->window_ms > 0 ? u->window_ms / 1000 : 600;
        snprintf(ws, sizeof ws, "%lld", (long long)(win_s > 0 ? win_s : 1));
        const char *p[1] = { ws };
        res = run_alert_query(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE status = 'dead' "
                                 "AND last_failed_at >= now() - $1::bigint * interval '1 second'",
                              1, p, &e);
        if (!res)
            break;
        long long n = atoll(PQgetvalue(res, 0, 0));
        holds = pgpipe_dlq_growing(n, 0, u->threshold);
        pp_buf_appendf(msg, "%lld new dead letters within %s s (threshold %lld)", n, ws,
                       (long long)u->threshold);
        pp_buf_appendf(detail, "{\"new_dead_letters\":%lld,\"window_s\":%s,\"threshold\":%lld}",
                       n, ws, (long long)u->threshold);
        break;
    }
    case PGPIPE_PIPE_ALERT_BACKLOG_AGE: {
        snprintf(subject, ssz, "%s", u->event_type ? u->event_type : "*");
        if (!run_alert_name_ok(u->events_table))
            break;
        pp_buf sql = { 0 };
        /* the oldest unprocessed row: the partial index on unprocessed rows
        ** (received_at, id) WHERE NOT processed reads it first */
        pp_buf_appendf(&sql, "SELECT floor(extract(epoch FROM now() - received_at))::bigint "
                             "FROM %s WHERE NOT processed%s ORDER BY received_at LIMIT 1",
                       u->events_table, u->event_type ? " AND event_type = $1" : "");
        const char *p[1] = { u->event_type };
        if (sql.data)
            res = run_alert_query(c, sql.data, u->event_type ? 1 : 0, u->event_type ? p : NULL, &e);
        pp_buf_free(&sql);
        if (!res)
            break;
        long long age = PQntuples(res) ? atoll(PQgetvalue(res, 0, 0)) : -1;
        long long lim = (long long)(u->older_than_ms / 1000);
        holds = age >= 0 && age * 1000 > u->older_than_ms;
        pp_buf_appendf(msg, "the oldest pending event%s%s is %lld s old (limit %lld s)",
                       u->event_type ? " of type " : "", u->event_type ? u->event_type : "",
                       age < 0 ? 0 : age, lim);
        pp_buf_appendf(detail, "{\"event_type\":");
        if (u->event_type)
            pp_json_str(detail, u->event_type, strlen(u->event_type), 0);
        else
            pp_buf_appendf(detail, "null");
        pp_buf_appendf(detail, ",\"oldest_age_s\":%lld,\"older_than_s\":%lld,\"table\":",
                       age < 0 ? 0 : age, lim);
        pp_json_str(detail, u->events_table, strlen(u->events_table), 0);
        pp_buf_appendf(detail, "}");
        break;
    }
    case PGPIPE_PIPE_ALERT_CDC_LAG: {
        /* the slot as the source's thread last read it (no connection to
        ** the source database from here) */
        snprintf(subject, ssz, "%s", u->target ? u->target : "*");
#ifndef PGPIPE_OMIT_CDC
        pgpipe_cdc_slot_info in;
        if (!u->target || !run_sources_cdc_info(r, u->target, &in))
            break;
        int lost = !strcmp(in.wal_status, "unreserved") || !strcmp(in.wal_status, "lost");
        holds = !in.exists || lost || (u->max_lag > 0 && in.lag_bytes > u->max_lag) ||
                (u->max_retained > 0 && in.retained_bytes > u->max_retained);
        if (!in.exists)
            pp_buf_appendf(msg, "the replication slot of CDC source %s is gone", u->target);
        else
            pp_buf_appendf(msg, "CDC source %s: slot lag %lld bytes (limit %lld), WAL retained "
                           "%lld bytes (limit %lld), wal_status %s", u->target, in.lag_bytes,
                           (long long)u->max_lag, in.retained_bytes, (long long)u->max_retained,
                           in.wal_status);
        pp_buf_appendf(detail, "{\"source\":");
        pp_json_str(detail, u->target, strlen(u->target), 0);
        pp_buf_appendf(detail, ",\"exists\":%s,\"lag_bytes\":%lld,\"retained_bytes\":%lld,"
                       "\"max_lag\":%lld,\"max_retained\":%lld,\"wal_status\":",
                       in.exists ? "true" : "false", in.lag_bytes, in.retained_bytes,
                       (long long)u->max_lag, (long long)u->max_retained);
        pp_json_str(detail, in.wal_status, strlen(in.wal_status), 0);
        pp_buf_appendf(detail, "}");
#endif
        break;
    }
    case PGPIPE_PIPE_ALERT_TASK_FAILURES:
    case PGPIPE_PIPE_ALERT_SCHEDULE_MISSED: {
        snprintf(subject, ssz, "%s", u->target ? u->target : "*");
        if (!have_history || !u->target)
            break; /* raised by run_sched only; the hourly reminder resets it */
        int task = u->kind == PGPIPE_PIPE_ALERT_TASK_FAILURES;
        long long k = task ? (u->threshold > 0 ? u->threshold : 3) : 1;
        char ks[24];
        snprintf(ks, sizeof ks, "%lld", k);
        const char *p[3] = { pipeline, u->target, ks };
        res = run_alert_query(c,
            task ? "SELECT count(*) FILTER (WHERE status IN ('failed', 'timeout', 'lost')), "
                   "count(*) FROM (SELECT status FROM pgpipe.run_history WHERE pipeline = $1 "
                   "AND name = $2 AND status NOT IN ('running', 'skipped') "
                   "ORDER BY started_at DESC NULLS LAST LIMIT $3::int) h"
                 : "SELECT count(*) FILTER (WHERE status = 'missed'), count(*) FROM "
                   "(SELECT status FROM pgpipe.run_history WHERE pipeline = $1 AND name = $2 "
                   "AND status <> 'running' ORDER BY started_at DESC NULLS LAST LIMIT $3::int) h",
            3, p, &e);
        if (!res)
            break;
        long long bad = atoll(PQgetvalue(res, 0, 0)), n = atoll(PQgetvalue(res, 0, 1));
        holds = n == k && bad == k;
        if (task)
            pp_buf_appendf(msg, "task %s failed %lld times in a row", u->target, k);
        else
            pp_buf_appendf(msg, "schedule %s missed its slot", u->target);
        pp_buf_appendf(detail, "{\"%s\":", task ? "task" : "schedule");
        pp_json_str(detail, u->target, strlen(u->target), 0);
        pp_buf_appendf(detail, task ? ",\"count\":%lld}" : "}", k);
        break;
    }
    default:
        break;
    }
    if (res)
        PQclear(res);
    if (holds < 0 && e.message[0])
        run_log(r, PGPIPE_LOG_WARN, "alert rule not evaluated", "rule",
                run_alert_kind_name(u->kind), "subject", subject, "error", e.message, NULL);
    return holds;
}

/* ---- the thread ---------------------------------------------------------- */

static void run_alert_msg_free(run_alert_msg *m)
{
    pp_free(m->kind), pp_free(m->subject), pp_free(m->message), pp_free(m->detail);
    memset(m, 0, sizeof *m);
}

static void run_alert_deliver_raised(pgpipe_runner *r, PGconn *c, const run_alert_turn *t,
                                     run_alert_msg *m)
{
    /* the CDC slot guard's steps (run_source.c): each is a change of state,
    ** so each is delivered (the last one's row is cleared first), through
    ** the .alert cdc-lag of that source when there is one; a resume then
    ** clears its row, so only a pause or a dropped slot shows as firing */
    int guard = !strcmp(m->kind, "cdc-guard"), resume = !strcmp(m->kind, "cdc-guard-resume");
    const char *kind = guard || resume ? "cdc-lag" : m->kind;
    const char *rule = guard || resume ? "cdc-guard" : m->kind;
    const run_alert_rule *u = NULL;
    for (int i = 0; i < t->nrules && !u; i++) {
        const run_alert_rule *x = &t->rules[i];
        if (!strcmp(run_alert_kind_name(x->kind), kind) &&
            (!x->target || !strcmp(x->target, m->subject)))
            u = x;
    }
    if ((guard || resume) && c)
        run_alert_clear(r, c, t->pipeline, rule, m->subject);
    run_alert_fire(r, c, t->pipeline, u, rule, m->subject, m->message, m->detail, 1);
    if (resume && c)
        run_alert_clear(r, c, t->pipeline, rule, m->subject);
}

static void *run_alert_main(void *arg)
{
    pgpipe_runner *r = arg;
    run_alerts *a = r->alerts;
    pgpipe_conn *cc = NULL;
    int64_t next_eval = 0, next_purge = 0;
    for (;;) {
        run_alert_msg batch[RUN_ALERT_QUEUE];
        int nb = 0, stop;
        pthread_mutex_lock(&a->mu);
        while (!a->stop && a->nq == 0 && run_now_ms() < next_eval) {
            int64_t until = next_eval;
            struct timespec ts = { (time_t)(until / 1000), (long)(until % 1000) * 1000000L };
            pthread_cond_timedwait(&a->cv, &a->mu, &ts);
        }
        stop = a->stop;
        memcpy(batch, a->q, sizeof batch[0] * (size_t)a->nq);
        nb = a->nq;
        a->nq = 0;
        pthread_mutex_unlock(&a->mu);
        if (stop) {
            /* what was raised while stopping is at least logged */
            for (int i = 0; i < nb; i++) {
                run_log(r, PGPIPE_LOG_WARN, batch[i].message, "rule", batch[i].kind, "subject",
                        batch[i].subject, NULL);
                run_alert_msg_free(&batch[i]);
            }
            break;
        }
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        if (!cc && pgpipe_pool_acquire_ex(r->pool, &cc, 5000, &e) != PGPIPE_OK) {
            cc = NULL;
            run_log(r, PGPIPE_LOG_WARN, "alerts: no connection", "error", e.message, NULL);
        }
        PGconn *c = cc ? pgpipe_conn_pg(cc) : NULL;
        run_alert_turn t;
        if (run_alert_turn_load(r, &t) != PGPIPE_OK) {
            for (int i = 0; i < nb; i++)
                run_alert_msg_free(&batch[i]);
            next_eval = run_now_ms() + RUN_ALERT_EVERY_MS;
            continue;
        }
        for (int i = 0; i < nb; i++) {
            run_alert_deliver_raised(r, c, &t, &batch[i]);
            run_alert_msg_free(&batch[i]);
        }
        if (c && run_now_ms() >= next_eval) {
            next_eval = run_now_ms() + RUN_ALERT_EVERY_MS;
            int have_history = 0;
            PGresult *res = NULL;
            if (pp_exec(c, "SELECT to_regclass('pgpipe.run_history') IS NOT NULL", 0, NULL, &res,
                        NULL, NULL) == PGPIPE_OK) {
                have_history = PQgetvalue(res, 0, 0)[0] == 't';
                PQclear(res);
            }
            for (int i = 0; i < t.nrules && !run_stopping(r); i++) {
                const run_alert_rule *u = &t.rules[i];
                char subject[256];
                pp_buf msg = { 0 }, det = { 0 };
                int holds = run_alert_eval(r, c, t.pipeline, u, have_history, subject,
                                           sizeof subject, &msg, &det);
                const char *rule = run_alert_kind_name(u->kind);
                if (holds > 0 && msg.data && det.data)
                    run_alert_fire(r, c, t.pipeline, u, rule, subject, msg.data, det.data, 0);
                else if (holds == 0)
                    run_alert_clear(r, c, t.pipeline, rule, subject);
                pp_buf_free(&msg);
                pp_buf_free(&det);
            }
            if (run_now_ms() >= next_purge) {
                pp_exec(c, "DELETE FROM pgpipe.run_alerts WHERE fired_at < now() - interval "
                           "'30 days'", 0, NULL, NULL, NULL, NULL);
                pp_exec(c, "DELETE FROM pgpipe.run_actions WHERE requested_at < now() - "
                           "interval '30 days'", 0, NULL, NULL, NULL, NULL);
                next_purge = run_now_ms() + RUN_ALERT_PURGE_MS;
            }
        } else if (!c) {
            next_eval = run_now_ms() + RUN_ALERT_EVERY_MS;
        }
        run_alert_turn_free(&t);
        if (cc && PQstatus(pgpipe_conn_pg(cc)) != CONNECTION_OK) {
            pgpipe_pool_discard(cc);
            cc = NULL;
        }
    }
    if (cc)
        pgpipe_pool_release(cc);
    return NULL;
}

/* r->alerts is made by whichever comes first, start or a raise (run_sched
** starts before the alerts and may raise at once): r->mu guards that. */
static run_alerts *run_alerts_get(pgpipe_runner *r)
{
    pp_mutex_lock(&r->mu);
    if (!r->alerts) {
        run_alerts *a = pp_calloc(1, sizeof *a);
        if (a) {
            pthread_mutex_init(&a->mu, NULL);
            pthread_condattr_t ca;
            pthread_condattr_init(&ca);
            pthread_condattr_setclock(&ca, CLOCK_REALTIME);
            pthread_cond_init(&a->cv, &ca);
            pthread_condattr_destroy(&ca);
            r->alerts = a;
        }
    }
    run_alerts *a = r->alerts;
    pp_mutex_unlock(&r->mu);
    return a;
}

PGPIPE_PRIVATE int run_alerts_start(pgpipe_runner *r)
{
    run_alerts *a = run_alerts_get(r);
    if (!a)
        return pp_err_nomem(&r->h.err);
    if (a->started)
        return PGPIPE_OK;
    /* the schedules' threads, started first, may raise meanwhile: they
    ** read stop under a->mu */
    pthread_mutex_lock(&a->mu);
    a->stop = 0;
    pthread_mutex_unlock(&a->mu);
    if (pthread_create(&a->th, NULL, run_alert_main, r))
        return pp_err(&r->h.err, PGPIPE_IO, "alerts: cannot start the thread");
    a->started = 1;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void run_alerts_stop(pgpipe_runner *r)
{
    run_alerts *a = r->alerts;
    if (!a || !a->started)
        return;
    pthread_mutex_lock(&a->mu);
    a->stop = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->th, NULL);
    a->started = 0;
}

/* The thread copies the rules from r->def at every turn (under r->mu), so
** a reload needs nothing but a prompt turn. */
PGPIPE_PRIVATE int run_alerts_reload(pgpipe_runner *r, const pgpipe_pipe_def *def)
{
    (void)def;
    run_alerts *a = r->alerts;
    if (a) {
        pthread_mutex_lock(&a->mu);
        pthread_cond_broadcast(&a->cv);
        pthread_mutex_unlock(&a->mu);
    }
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void run_alerts_free(pgpipe_runner *r)
{
    run_alerts *a = r->alerts;
    if (!a)
        return;
    run_alerts_stop(r);
    for (int i = 0; i < a->nq; i++)
        run_alert_msg_free(&a->q[i]);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    pp_free(a);
    r->alerts = NULL;
}

PGPIPE_PRIVATE void run_alert_raise(pgpipe_runner *r, const char *kind, const char *subject,
                                    const char *message, const char *detail_json)
{
    if (!r || !kind)
        return;
    run_alerts *a = run_alerts_get(r);
    run_alert_msg m;
    m.kind = pp_strdup(kind);
    m.subject = pp_strdup(subject ? subject : "");
    m.message = pp_strdup(message ? message : kind);
    m.detail = pp_strdup(detail_json && *detail_json ? detail_json : "{}");
    int queued = 0;
    if (a && m.kind && m.subject && m.message && m.detail) {
        pthread_mutex_lock(&a->mu);
        if (a->nq < RUN_ALERT_QUEUE && !a->stop) {
            a->q[a->nq++] = m;
            queued = 1;
            pthread_cond_broadcast(&a->cv);
        }
        pthread_mutex_unlock(&a->mu);
    }
    if (!queued) {
        run_log(r, PGPIPE_LOG_WARN, message ? message : kind, "rule", kind, "subject",
                subject ? subject : "", "delivery", "log only (alert queue full or stopped)",
                NULL);
        run_alert_msg_free(&m);
    }
}

#endif /* PGPIPE_OMIT_RUN */
