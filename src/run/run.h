/* ==== Pipeline runner: `pgpipe run PIPELINE` as a library ==== */

/* Runs a pipeline file (pgpipe_pipefile, its format above) as a long-lived
** service: the setup once, the sources (watched folders, the HTTP server),
** the workers of each event type, the schedules and the tasks that follow
** them, the alerts, and the run history. Handle: pgpipe_runner.
**
**     pgpipe_run_options o;
**     pgpipe_run_options_init(&o);
**     o.conninfo = "postgresql://app@db/prod";
**     pgpipe_runner *r;
**     if (pgpipe_runner_open(&r, "etc/pipeline.pgpipe", &o) == PGPIPE_OK)
**         pgpipe_runner_run(r);        // until pgpipe_runner_stop (SIGTERM)
**     else fprintf(stderr, "%s\n", pgpipe_errmsg(r));
**     pgpipe_runner_close(r);
**
** State lives in the database, never only in one instance's memory: the
** schedules' last fired slots, the history, the instances alive. Any number
** of instances may run the same pipeline (the same .pipeline name) against
** one database: workers share the events (SKIP LOCKED), and each schedule
** slot fires on exactly one instance (a compare-and-set on the schedule's
** last slot in pgpipe.run_schedules, so no leader is needed: every instance
** may fire, one wins each slot, and when one dies the others go on firing).
**
** Thread safety: pgpipe_runner_run runs on the caller's thread plus the
** runner's own threads; pgpipe_runner_stop and pgpipe_runner_reload may be
** called from a signal handler or any thread. */

typedef struct pgpipe_runner pgpipe_runner;

typedef struct pgpipe_run_options {
    const char *conninfo;     /* anything libpq accepts; NULL/"" = PG* variables */
    const char *instance;     /* this instance's name in history and
                                 pgpipe.run_instances; NULL = "HOST:PID" */
    const char *on_alert;     /* a command run (sh -c) for every alert, the
                                 alert as one JSON object on its stdin; NULL */
    const char *http_token;   /* the status page's actions need this bearer
                                 token (NULL: the page is read-only) */
    int drain_timeout_ms;     /* after pgpipe_runner_stop: how long running
                                 batches and schedule bodies may finish before
                                 they are cancelled; 30000 */
    int64_t run_for_ms;       /* stop by itself after this long (make demo);
                                 0 = until stopped */
    int instance_timeout_ms;  /* an instance whose heartbeat is older than
                                 this is dead: its running firings are marked
                                 lost; 15000 */
    int install_schema;       /* 1: install/upgrade the built-in schema; 1 */
    int sd_notify;            /* 1: send READY=1 / STOPPING=1 / WATCHDOG=1 to
                                 $NOTIFY_SOCKET when it is set (systemd
                                 Type=notify); 1 */
} pgpipe_run_options;

void pgpipe_run_options_init(pgpipe_run_options *o);

/* Read and check the pipeline file (as pgpipe_pipefile_open), connect,
** install the schema when asked and register this instance. Nothing runs
** yet. *out is set even on failure (read pgpipe_errmsg(*out), then close
** it); NULL only when out of memory. A file with problems fails with
** PGPIPE_PARSE and the first problem as FILE:LINE: message. Behind a
** transaction-mode pooler (pgpipe_pooler_mode: detected, or
** PGPIPE_POOLER=transaction) it fails with PGPIPE_MISUSE: the runner holds
** session advisory locks, which such a pooler gives to other clients. So
** it does, naming the numbers, when the server has fewer connections for
** this role (max_connections less the reserved ones, CONNECTION LIMIT)
** than the worker threads of the file's .workers and the runner's own. */
int pgpipe_runner_open(pgpipe_runner **out, const char *path, const pgpipe_run_options *o);
/* Run the setup, start everything and serve until pgpipe_runner_stop (or
** run_for_ms): then drain (workers finish or release their batch, no new
** firing starts, running bodies get drain_timeout_ms) and return PGPIPE_OK.
** A setup step that fails returns its error at once, and so does a .workers
** SQL handler the server refuses to prepare (checked after the setup,
** before anything starts: FILE:LINE of the .workers, the server's error and
** SQLSTATE). Workers that stop on their handler later are logged, raised
** as alert "workers-stopped" and started again with backoff (5 s doubling
** to 5 min) while the rest of the pipeline runs on. */
int pgpipe_runner_run(pgpipe_runner *r);
/* Ask a running runner to drain and return. Async-signal-safe. */
int pgpipe_runner_stop(pgpipe_runner *r);
/* Re-read the file at the next turn of the runner: what changed is
** applied (schedules, tasks, alerts, workers, sources added, changed or
** removed); a file with problems is refused with a log line and the
** running pipeline is kept. Async-signal-safe. */
int pgpipe_runner_reload(pgpipe_runner *r);
void pgpipe_runner_close(pgpipe_runner *r);

/* The run history, for `.runs` and tools: rows of pgpipe.run_history of
** pipeline (NULL = every pipeline), newest first, filtered by name (task or
** schedule; NULL = all) and status ("ok", "failed", "skipped", "missed",
** "lost", "timeout"; NULL = all), at most limit rows (<= 0: 50). Columns:
** pipeline, kind, name, slot, started_at, finished_at, status, attempts,
** rows, error, instance. */
typedef struct pgpipe_runs_filter {
    const char *pipeline, *name, *status;
    const char *since;        /* an interval ("1 day") or a timestamp; NULL */
    int limit;
} pgpipe_runs_filter;
int pgpipe_runs_list(PGconn *conn, const pgpipe_runs_filter *f, PGresult **out, pgpipe_error *err);
