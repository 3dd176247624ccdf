/*
** The run layer's private header: the pipeline runner (issue 22). Layer
** order and rules: src/base/pp_base.h.
**
**   run_cron    cron expressions and intervals, next firing in an IANA zone
**   run_file    the pipeline file: reader, struct tree, offline validation
**               (pgpipe run --check)
**   run_step    one step of a setup or a body: SQL, or one of the dot
**               commands a pipeline file may use (.load .migrate .install
**               .read .refresh .partitions .dlq .log), run in the library
**   run_sched   schedules (slots fired once across instances, missed and
**               overlap policies), tasks after them (retries, backoff,
**               timeouts, failure policy), the run history and its bounds
**   run_source  watched folders, the HTTP source, the workers of each
**               event type (SQL handlers, C handlers by dlopen)
**   run_alert   alert rules, evaluated on a timer or raised by the others;
**               delivered to the log, NOTIFY, a table and a command
**   run_status  the status page (HTML + inline SVG) and the runner's
**               /metrics lines, served by the HTTP component
**   run         the runner: open, setup, threads, instance heartbeat,
**               drain on stop, reload; the public API (run.h)
**
** All are left out with PGPIPE_OMIT_RUN (src/pgpipe.h says what it needs).
**
** @components run_cron run_file run_step run_sched run_source run_alert run_status run
*/
#ifndef PP_RUN_H
#define PP_RUN_H
#include "../pull/pp_pull.h"

#ifndef PGPIPE_OMIT_RUN

/* Days since 1970-01-01 of a proleptic Gregorian date, and back
** (run_cron.c; the pipeline file reuses them for nothing else yet). */
PGPIPE_PRIVATE int64_t run_days_from_civil(int64_t y, int m, int d);
PGPIPE_PRIVATE void run_civil_from_days(int64_t z, int64_t *y, int *m, int *d);
/* "30s", "5m", "2h", "1d", "500ms" -> milliseconds; -1 when malformed.
** Shared by the cron intervals and the pipeline file's durations. */
PGPIPE_PRIVATE int64_t run_duration_ms(const char *s);
/* 1 when ZONE names a readable file of the time zone database (or is
** "UTC"): glibc silently reads an unknown zone as UTC, so check first. */
PGPIPE_PRIVATE int run_tz_exists(const char *zone);
/* One item of a comma-separated list (--pause-workers "a.*, b"), blanks
** around it trimmed: its length in *n, and the item in out when it fits
** (n < size; out is "" otherwise); returns where the next item starts,
** NULL after the last (run_file.c). */
PGPIPE_PRIVATE const char *run_list_item(const char *q, char *out, size_t size, size_t *n);

/* ==== The runner, shared by the components (run.c owns it) ==============
** Each component keeps its state behind its own pointer (sched, sources,
** alerts, status) and touches only its own; the rest is read-only while
** the runner runs, except where a comment says who writes it. */
typedef struct run_sched run_sched;
typedef struct run_sources run_sources;
typedef struct run_alerts run_alerts;
typedef struct run_status run_status;

struct pgpipe_runner {
    pp_handle h;                  /* first: pgpipe_errmsg(runner) */
    pgpipe_run_options opt;       /* copied; strings below are owned copies */
    char *conninfo, *on_alert, *http_token;
    char instance[160];           /* opt.instance or "HOST:PID" */
    char host[128];
    char *path;                   /* the pipeline file */
    char *base_dir;               /* its folder: relative paths in steps */
    pgpipe_pipefile *pf;          /* the file running now */
    const pgpipe_pipe_def *def;   /* pgpipe_pipefile_def(pf) */
    pgpipe_pool *pool;            /* every component's connections */
    atomic_int stop_flag;         /* set by pgpipe_runner_stop (lock-free: signal-safe) */
    atomic_int reload_flag;       /* set by pgpipe_runner_reload */
    int wake_fd[2];               /* a byte written wakes the main loop */
    pp_mutex mu;                  /* guards what a comment says it guards */
    int64_t started_ms;           /* wall clock at pgpipe_runner_run */
    run_sched *sched;
    run_sources *sources;
    run_alerts *alerts;
    run_status *status;
};

/* Wall clock in milliseconds since the epoch (schedules fire on it). */
PGPIPE_PRIVATE int64_t run_now_ms(void);
/* A structured log line of the runner: component "run", the pipeline and
** instance as fields, then the key/value pairs given (const char *, a
** NULL key ends the list; at most 12 pairs). */
PGPIPE_PRIVATE void run_log(const pgpipe_runner *r, int level, const char *message, ...);
/* 1 once the runner is asked to stop (pgpipe_runner_stop, run_for_ms). */
PGPIPE_PRIVATE int run_stopping(const pgpipe_runner *r);

/* ==== run_step.c: one step of a setup or a body ==========================
** Runs steps[0..n) in order on conn, stopping at the first that fails.
** SQL runs as written (a body may hold VACUUM: steps are not wrapped in a
** transaction; a step that is a BEGIN ... COMMIT block is the user's).
** timeout_ms > 0 bounds the whole run: statement_timeout for SQL, a cancel
** for long dot commands, PGPIPE_BUSY when it passes. *rows (may be NULL)
** receives the rows affected or loaded, summed. On failure err says which
** step (FILE:LINE) and why, with the SQLSTATE. Dot commands are the ones
** run_file.c allows in setups and bodies; relative paths are against
** r->base_dir. */
PGPIPE_PRIVATE int run_steps_exec(pgpipe_runner *r, PGconn *conn, const pgpipe_pipe_step *steps,
                                  int n, int64_t timeout_ms, long long *rows, pgpipe_error *err);
/* Undo what steps SET on conn (a role, a search_path, a setting): SET
** SESSION AUTHORIZATION DEFAULT, RESET ALL, RESET ROLE (role and
** session_authorization are outside RESET ALL), CLOSE ALL (WITH HOLD
** cursors): DISCARD ALL's part on settings. Not DISCARD ALL itself: it
** would also release the session advisory locks the caller holds and the
** statements the pool's connections keep prepared. Run after the setup and
** after every body; conn must not be in a transaction. */
PGPIPE_PRIVATE int run_session_reset(PGconn *conn, pgpipe_error *err);
/* The arguments of one dot command step (TEXT, the whole line) as the step
** would read them, without running anything: PGPIPE_OK, or the error with
** its message ("CMD: what is wrong", no file or line). A .read step's file
** (relative to DIR, the pipeline file's folder) is read and its steps
** checked alike, nested as deep as the run allows; an error in it names
** that file's FILE:LINE. The pipeline file's parse calls it for every dot
** command it keeps. */
PGPIPE_PRIVATE int run_step_check(const char *text, const char *dir, pgpipe_error *err);

/* ==== run_sched.c: schedules, tasks, history =============================
** start: threads that fire the schedules of r->def and run their tasks;
** stop: no new firing starts, running bodies get the drain time, then are
** cancelled; the threads are joined. reload: apply the schedules and tasks
** of def (r->def is switched by run.c after reload returns OK). lost:
** called periodically by run.c with the instances found dead, so their
** running firings are recorded as lost. maintain: history retention
** (partitions, keep-last), called hourly by run.c on its own connection. */
PGPIPE_PRIVATE int run_sched_start(pgpipe_runner *r);
PGPIPE_PRIVATE void run_sched_stop(pgpipe_runner *r, int drain_ms);
PGPIPE_PRIVATE int run_sched_reload(pgpipe_runner *r, const pgpipe_pipe_def *def);
PGPIPE_PRIVATE void run_sched_free(pgpipe_runner *r);
PGPIPE_PRIVATE int run_sched_maintain(pgpipe_runner *r, PGconn *conn, pgpipe_error *err);
/* The next firing of each schedule (status page, .runs): a JSON array of
** {"schedule":..,"next":"ISO 8601","running":bool} appended to out. */
PGPIPE_PRIVATE void run_sched_next_json(pgpipe_runner *r, pp_buf *out);

/* ==== run_source.c: sources and workers ==================================
** start: watched folders (a thread polling them), the HTTP source (its own
** thread running pgpipe_http_run, with the status page as its page hook),
** the workers of each .workers directive (pgpipe_workers on r->pool).
** stop: sources stop taking new input, workers finish or release their
** batch within drain_ms. */
PGPIPE_PRIVATE int run_sources_start(pgpipe_runner *r);
PGPIPE_PRIVATE void run_sources_stop(pgpipe_runner *r, int drain_ms);
PGPIPE_PRIVATE int run_sources_reload(pgpipe_runner *r, const pgpipe_pipe_def *def);
PGPIPE_PRIVATE void run_sources_free(pgpipe_runner *r);
/* Before start: each SQL handler of r->def prepared once on the pool;
** one the server refuses fails with FILE:LINE of its .workers and the
** server's error (r->h.err). check: called by run.c's loop; workers that
** stopped themselves on an error are logged, raised as alert
** "workers-stopped" and started again with backoff. */
PGPIPE_PRIVATE int run_sources_preflight(pgpipe_runner *r);
PGPIPE_PRIVATE void run_sources_check(pgpipe_runner *r);
/* Counters for the status page and /metrics: appended as Prometheus lines. */
PGPIPE_PRIVATE void run_sources_metrics(pgpipe_runner *r, pp_buf *out);
#ifndef PGPIPE_OMIT_CDC
/* What the CDC source NAME last read of its slot on the source (every
** 10 s): 1 with *out filled, 0 when nothing yet (or no such source). */
PGPIPE_PRIVATE int run_sources_cdc_info(pgpipe_runner *r, const char *name,
                                        pgpipe_cdc_slot_info *out);
#endif

/* ==== run_alert.c: alerts ================================================
** start: a thread evaluating the periodic rules (dlq-growth, backlog-age,
** task-failures) of r->def. raise: an alert from another component
** (run_sched: a schedule missed, a task failed K times in a row); kind is
** the rule's name ("schedule-missed"), subject what it is about (the
** schedule), detail a JSON object text (NULL: {}). An alert fires once
** per subject until its condition clears, on one instance only, and goes
** to the log line, the rule's NOTIFY channel, table and command, and to
** r->on_alert. raise queues the alert for the alert thread (it never waits
** for the database or a command) and may be called before start; it takes
** r->mu, so not while holding it. Kinds "cdc-guard" and "cdc-guard-resume"
** (subject: the .source cdc) are the CDC slot guard's steps: each is
** delivered, through that source's .alert cdc-lag rule when it has one. */
PGPIPE_PRIVATE int run_alerts_start(pgpipe_runner *r);
PGPIPE_PRIVATE void run_alerts_stop(pgpipe_runner *r);
PGPIPE_PRIVATE int run_alerts_reload(pgpipe_runner *r, const pgpipe_pipe_def *def);
PGPIPE_PRIVATE void run_alerts_free(pgpipe_runner *r);
PGPIPE_PRIVATE void run_alert_raise(pgpipe_runner *r, const char *kind, const char *subject,
                                    const char *message, const char *detail_json);

/* ==== run_status.c: the status page ======================================
** start: a thread that rebuilds the page (and the runner's metrics text)
** from the database every few seconds, so the HTTP loop serves a snapshot
** and never waits for the database. page: the pgpipe_http page hook (ud =
** the runner). */
PGPIPE_PRIVATE int run_status_start(pgpipe_runner *r);
PGPIPE_PRIVATE void run_status_stop(pgpipe_runner *r);
PGPIPE_PRIVATE void run_status_free(pgpipe_runner *r);
#ifndef PGPIPE_OMIT_HTTP
PGPIPE_PRIVATE void run_status_page(void *ud, const pgpipe_http_page_request *rq,
                                    pgpipe_http_page_reply *out);
PGPIPE_PRIVATE void run_status_metrics(void *ud, pgpipe_http_page_reply *out);
#endif
#endif

#endif /* PP_RUN_H */
