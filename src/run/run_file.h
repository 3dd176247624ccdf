/* ==== Pipeline file: what `pgpipe run` runs ==== */

/* Reads a pipeline file into a tree of read-only structs and validates it
** offline (pgpipe run --check): nothing here touches a database. Handle:
** pgpipe_pipefile (owns the tree and the diagnostics).
**
** Thread safety: a pipefile is read-only once opened; several threads may
** read one at the same time.
**
** ---- The format ------------------------------------------------------------
** A pipeline file is a pgpipe shell script (SQL statements and dot
** commands, `--` comments) plus directives, which are dot commands too.
** Options are written as in the shell: --name VALUE or --name=VALUE,
** values quoted with '...' or "..." when they hold blanks. Durations are
** N + ms|s|m|h|d, combinable ("1h30m"). Relative paths are relative to the
** file's folder. The SQL and dot commands outside any block are the setup:
** run once, in order, when the pipeline starts (.install --example,
** .migrate DIR, CREATE TABLE IF NOT EXISTS ...).
**
**   .pipeline NAME               name it (default: the file name without
**                                extension); instances running the same
**                                name share its schedules and history
**   .source files NAME --dir DIR [--pattern GLOB] [--format auto|csv|ndjson|json]
**           [--after move|delete] [--done-dir DIR] [--settle DURATION]
**           [--poll DURATION] [--table TABLE] [--source NAME]
**           [--event-type TYPE | --event-type-field FIELD]
**                                watch DIR (made when missing) for files
**                                matching GLOB (default *), load each once
**                                with the COPY loader (the load's resume
**                                makes it once across restarts and hosts),
**                                then move it into --done-dir (default
**                                DIR/done) or delete it. A file whose size
**                                or mtime changed within --settle (5s) is
**                                still being written and waits.
**   .source http NAME [--listen ADDR:PORT] [--table TABLE]
**           [--event-type TYPE | --event-type-field FIELD]
**           [--signature github|stripe|standard] [--secret-env VAR]
**           [--spool DIR]
**                                the HTTP ingest (.serve) as source NAME;
**                                --spool: .serve --spool (store and forward)
**   .source cdc NAME (--source-env VAR | --source CONNINFO) [--slot SLOT]
**           [--publication PUB] [--tables "T1, S.T2"] [--snapshot]
**           [--heartbeat DURATION] [--no-create]
**           [--pause-workers "TYPE[,TYPE...]" --pause-at SIZE [--resume-at SIZE]]
**           [--drop-slot-at SIZE] [--slot-check DURATION]
**                                the changes of another PostgreSQL database
**                                (.cdc start): logical replication through
**                                slot SLOT and publication PUB (both
**                                default to NAME), exactly once into
**                                staging.raw_events; the conninfo from the
**                                environment variable VAR keeps a password
**                                out of the file.
**                                The slot guard, read every --slot-check
**                                (10s): when the WAL the slot retains on
**                                the source reaches --pause-at, or its
**                                wal_status is unreserved or lost, the
**                                .workers whose EVENT_TYPE (as written
**                                there) matches a TYPE of --pause-workers
**                                (globs: "public.*", "*") stop claiming,
**                                so the stream catches up; they resume
**                                below --resume-at (default half of
**                                --pause-at). Only with --drop-slot-at:
**                                at that size (or wal_status lost) the
**                                slot is dropped, its state on the target
**                                forgotten, and the source starts again
**                                with a new slot and a snapshot (the
**                                tables' rows again, as schema.table:insert
**                                events with "snapshot":true). Each step
**                                is logged, raised as a cdc-guard alert
**                                (delivered by the .alert cdc-lag of the
**                                source when there is one) and counted
**                                in /metrics (pgpipe_cdc_guard_*)
**   .source pull NAME --url URL [--every DURATION] [--source API]
**           [--stream S] [--paginate none|link|cursor|offset|page] [--records PATH]
**           [--event-type TYPE | --event-type-field PATH] [--since-field PATH]
**           [--token-env VAR | --token-file PATH] [--rate N] ...
**                                an HTTP(S) JSON API (.pull): a run every
**                                --every (5m), each from where the last
**                                stopped; the options are those of .pull
**                                (.help pull, pgpipe_pull_set) with --source
**                                defaulting to NAME and --stream to
**                                "default". The .source pull lines with the
**                                same --source share one rate budget (the
**                                first one's --rate) and run at once, one
**                                thread each. Secrets only from the
**                                environment or a file.
**   .workers EVENT_TYPE|* (--sql FILE | --so LIB:SYMBOL) [--workers N]
**           [--batch N] [--mode transaction|lease] [--lease DURATION]
**           [--max-attempts N] [--table TABLE]
**                                SKIP LOCKED workers (.work) for one event
**                                type: a SQL handler file (ELT) or a C
**                                handler in a shared library (ETL, dlopen)
**   .schedule NAME (--cron "EXPR" | --every DURATION) [--tz ZONE]
**           [--jitter DURATION] [--overlap skip|queue|replace]
**           [--missed skip|once|all] [--timeout DURATION]
**     BODY
**   .end                         BODY (SQL and dot commands) runs at each
**                                firing: EXPR as pgpipe_cron_parse reads
**                                it, in ZONE (default UTC); --overlap
**                                (default skip) when the last run still
**                                runs, --missed (default once) for slots
**                                missed while no instance ran
**   .task NAME --after A[,B...] [--retries N] [--backoff DURATION]
**           [--backoff-max DURATION] [--timeout DURATION]
**           [--on-failure stop|continue]
**     BODY
**   .end                         runs after every named schedule or task
**                                succeeded (a schedule's firing starts
**                                its tasks); retried N times (default 0)
**                                with exponential backoff from --backoff
**                                (1s) up to --backoff-max (5m), with
**                                jitter; on failure, stop (default: the
**                                tasks after it do not run) or continue
**   .alert dlq-growth --threshold N [--window DURATION]     (default 10m)
**   .alert backlog-age --older-than DURATION [--event-type TYPE]
**   .alert task-failures --task NAME [--count K]            (default 3)
**   .alert schedule-missed --schedule NAME
**   .alert cdc-lag --source NAME [--max-lag SIZE] [--max-retained SIZE]
**                                (sizes: 512MB, 10GB; the slot's wal_status
**                                unreserved or lost fires it too)
**           each also [--notify CHANNEL] [--table TABLE] [--command CMD]
**                                an alert is always a log line; also a
**                                NOTIFY on CHANNEL, a row in TABLE, and
**                                CMD run with the alert as JSON on stdin
**                                (as `pgpipe run --on-alert CMD` for all)
**   .history [--keep-ok DURATION] [--keep-failed DURATION]
**           [--keep-last N] [--failures-only]
**                                run history bounds (defaults 7d, 30d,
**                                100; --failures-only records no success)
**
** Dot commands allowed in the setup and in bodies: .install, .migrate,
** .load, .read, .refresh, .partitions, .dlq, .log.
**
** What validation checks (each problem one diagnostic, all reported):
** unknown directive or dot command (with "did you mean" when one is
** close), unknown option, missing or repeated option, a bad value
** (number, duration, choice), a bad cron expression (with its column), an
** unknown time zone, duplicate names, --after naming no schedule or task,
** a dependency cycle, a handler, .read or .load file or .migrate folder
** that is missing or not readable, a shared library LIB that is missing
** (the SYMBOL is checked by the runner), a block without .end, .end
** without a block, SQL that does not split (unterminated quote), and
** "unknown table": a --table of a directive and the view of .refresh must
** be created by the file (CREATE TABLE / VIEW / MATERIALIZED VIEW in its
** SQL or in the SQL files of its .migrate folders and --sql handlers) or
** by the built-in schema (sql/schema; sql/example too when the file runs
** .install --example). A name without a schema matches any schema. */

typedef struct pgpipe_pipefile pgpipe_pipefile;

/* A problem found: FILE:LINE[:COLUMN]: message. */
typedef struct pgpipe_pipe_diag {
    const char *file;
    int line;
    int column;           /* 0 when the message is about the whole line */
    const char *message;
} pgpipe_pipe_diag;

/* A SQL statement or a dot command of the setup or a body. */
enum { PGPIPE_PIPE_SQL = 1, PGPIPE_PIPE_DOT };
typedef struct pgpipe_pipe_step {
    int kind;             /* PGPIPE_PIPE_SQL or PGPIPE_PIPE_DOT */
    const char *text;     /* SQL without its ';', or the whole dot command line */
    int line;
} pgpipe_pipe_step;

enum { PGPIPE_PIPE_SOURCE_FILES = 1, PGPIPE_PIPE_SOURCE_HTTP, PGPIPE_PIPE_SOURCE_CDC,
       PGPIPE_PIPE_SOURCE_PULL };
typedef struct pgpipe_pipe_source {
    int kind;             /* PGPIPE_PIPE_SOURCE_* */
    const char *name;
    int line;
    /* files */
    const char *dir;      /* resolved against the file's folder */
    const char *pattern;  /* "*" by default */
    const char *format;   /* "auto" by default */
    int delete_after;     /* 1: --after delete; 0: move into done_dir */
    const char *done_dir; /* DIR/done by default */
    int64_t settle_ms, poll_ms;
    /* both */
    const char *table;    /* NULL: staging.raw_events */
    const char *event_type, *event_type_field; /* NULL when not given */
    /* http */
    const char *listen, *signature, *secret_env;
    const char *spool;    /* --spool DIR: store and forward while the database is away */
    /* cdc: the source database's conninfo, given or read from an
    ** environment variable; slot and publication default to the name */
    const char *source_conninfo, *source_env, *slot, *publication, *tables;
    int snapshot, no_create;
    int64_t heartbeat_ms;  /* 10s */
    /* cdc, the slot guard: sizes in bytes, 0 when not given */
    const char *pause_workers; /* "TYPE,TYPE": globs on the .workers EVENT_TYPEs */
    int64_t pause_at, resume_at, drop_slot_at; /* resume_at: pause_at / 2 by default */
    int64_t slot_check_ms; /* 10s */
    /* pull: the options as written ("url=...", "paginate=link"), for
    ** pgpipe_pull_set; a run every every_ms (5m); pull_source is the
    ** events' source (--source, default the NAME): the sources sharing it
    ** share one rate budget (the first one's --rate) */
    const char *const *pull_args;
    int npull_args;
    int64_t every_ms;
    const char *pull_source;
} pgpipe_pipe_source;

enum { PGPIPE_PIPE_TRANSACTION = 0, PGPIPE_PIPE_LEASE = 1 };
typedef struct pgpipe_pipe_workers {
    const char *event_type; /* "*" for every type */
    int line;
    const char *sql_file;   /* resolved; NULL with so_lib */
    const char *so_lib, *so_symbol;
    int workers, batch, mode, max_attempts; /* defaults 1, 100, transaction, 5 */
    int64_t lease_ms;       /* 0: the claimer's default */
    const char *table;      /* NULL: staging.raw_events */
} pgpipe_pipe_workers;

enum { PGPIPE_PIPE_OVERLAP_SKIP = 0, PGPIPE_PIPE_OVERLAP_QUEUE, PGPIPE_PIPE_OVERLAP_REPLACE };
enum { PGPIPE_PIPE_MISSED_ONCE = 0, PGPIPE_PIPE_MISSED_SKIP, PGPIPE_PIPE_MISSED_ALL };
typedef struct pgpipe_pipe_schedule {
    const char *name;
    int line;
    const char *expr;     /* as written (--every D is stored as "every D"); it
                             parsed: pgpipe_cron_parse gives its pgpipe_cron */
    const char *tz;       /* "UTC" by default */
    int64_t jitter_ms, timeout_ms; /* 0: none */
    int overlap, missed;  /* PGPIPE_PIPE_OVERLAP_*, PGPIPE_PIPE_MISSED_* */
    const pgpipe_pipe_step *steps;
    int nsteps;
} pgpipe_pipe_schedule;

enum { PGPIPE_PIPE_FAIL_STOP = 0, PGPIPE_PIPE_FAIL_CONTINUE };
typedef struct pgpipe_pipe_task {
    const char *name;
    int line;
    const char *const *after; /* names of schedules or tasks */
    int nafter;
    int retries;
    int64_t backoff_ms, backoff_max_ms, timeout_ms; /* 1s, 5m, 0 = none */
    int on_failure;       /* PGPIPE_PIPE_FAIL_* */
    const pgpipe_pipe_step *steps;
    int nsteps;
} pgpipe_pipe_task;

enum { PGPIPE_PIPE_ALERT_DLQ_GROWTH = 1, PGPIPE_PIPE_ALERT_BACKLOG_AGE,
       PGPIPE_PIPE_ALERT_TASK_FAILURES, PGPIPE_PIPE_ALERT_SCHEDULE_MISSED,
       PGPIPE_PIPE_ALERT_CDC_LAG };
typedef struct pgpipe_pipe_alert {
    int kind;             /* PGPIPE_PIPE_ALERT_* */
    int line;
    int64_t threshold;    /* dlq-growth: dead letters per window; task-failures: K */
    int64_t window_ms;    /* dlq-growth */
    int64_t older_than_ms; /* backlog-age */
    const char *event_type; /* backlog-age, NULL: any */
    const char *target;   /* task-failures: the task; schedule-missed: the schedule;
                             cdc-lag: the .source cdc */
    int64_t max_lag, max_retained; /* cdc-lag, bytes; 0: no limit */
    const char *notify, *table, *command; /* NULL when not given */
} pgpipe_pipe_alert;

typedef struct pgpipe_pipe_history {
    int64_t keep_ok_ms, keep_failed_ms; /* 7d, 30d */
    int keep_last;        /* 100 */
    int failures_only;
} pgpipe_pipe_history;

/* The whole file. Arrays are in file order; everything is owned by the
** pipefile and lives until pgpipe_pipefile_close. */
typedef struct pgpipe_pipe_def {
    const char *name;
    const char *path;     /* as given to pgpipe_pipefile_open */
    const pgpipe_pipe_step *setup;
    int nsetup;
    const pgpipe_pipe_source *sources;
    int nsources;
    const pgpipe_pipe_workers *workers;
    int nworkers;
    const pgpipe_pipe_schedule *schedules;
    int nschedules;
    const pgpipe_pipe_task *tasks; /* in an order where each comes after those it follows */
    int ntasks;
    const pgpipe_pipe_alert *alerts;
    int nalerts;
    pgpipe_pipe_history history;
} pgpipe_pipe_def;

/* Read and validate the pipeline file at path (text NULL), or text[0..len)
** named path. PGPIPE_OK when the file is valid; PGPIPE_PARSE when it has
** problems (read them with pgpipe_pipefile_diag; the tree holds what could
** be read); PGPIPE_IO when the file cannot be read; PGPIPE_NOMEM. */
int pgpipe_pipefile_open(pgpipe_pipefile **out, const char *path, const char *text, size_t len);
/* The tree (never NULL for an open pipefile). */
const pgpipe_pipe_def *pgpipe_pipefile_def(const pgpipe_pipefile *pf);
/* The problems found, in line order: count, and the i-th (NULL when out
** of range). */
int pgpipe_pipefile_diag_count(const pgpipe_pipefile *pf);
const pgpipe_pipe_diag *pgpipe_pipefile_diag(const pgpipe_pipefile *pf, int i);
void pgpipe_pipefile_close(pgpipe_pipefile *pf);
