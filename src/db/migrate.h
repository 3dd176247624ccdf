/* ==== Migrations: checksums and the migration runner ==== */

/* Applies folders of versioned and repeatable SQL files to a database (the
** built-in schema is installed the same way). Handle: pgpipe_migrator (a
** runner on one connection); it splits files with pgpipe_sql_split.
**
** Thread safety: a migrator is used by one thread at a time, and nothing
** else may use its connection meanwhile. Runners in different processes or
** threads exclude each other with an advisory lock
** (PGPIPE_MIGRATE_LOCK_KEY): a session lock held for the run on a direct
** connection; behind a transaction-mode pooler (see pgpipe_pooler_mode) a
** transaction lock taken by each step, which re-reads the history under it.
** The history a run judges (drift, the baseline's rule) is read under the
** lock, in the transaction that writes the baselines and repairs. A run
** with nothing to do takes no lock at all. The checksum functions keep
** no state. */

/* ---- Checksums -------------------------------------------------------- */

/* The checksum the migration runner records: SHA-256 of the text after
** dropping a UTF-8 byte order mark and turning CRLF and lone CR into LF. */
int pgpipe_migrate_checksum(const char *text, size_t len, char out[65]);

/* ---- Migrations ------------------------------------------------------- */

/* A migration directory holds files named
**     V<version>__<name>.sql   versioned: applied once, in numeric version order
**     R__<name>.sql            repeatable: applied again whenever its checksum
**                              changes, after every versioned migration
** (<version> is digits, compared as a number: V2 < V0010; <name> is free
** text without control characters, in UTF-8). Other *.sql names are an
** error; other files and dot files are ignored. A line
** "-- pgpipe:no-transaction" between statements runs the file outside a
** transaction, one statement at a time; otherwise the whole file runs in one
** transaction. A file runs on the session as the run found it, and its
** history is written as the run's own user and role (a file's SET ROLE stays
** with its statements); a resumed no-transaction file first runs its
** earlier SET and RESET statements again. In a no-transaction file each statement commits together
** with its progress record (a transaction of its own), except a statement
** that cannot run in a transaction block (CREATE INDEX CONCURRENTLY,
** VACUUM, ...): its start is recorded before it runs and its end after. When
** a run is cut off between the two (a lost connection, a server restart),
** the statement's outcome is unknown: it never runs again by itself, and
** later runs stop naming it until resume_from or redo says what to do. */

#define PGPIPE_MIGRATE_DRY_RUN      0x01u /* report what would run, change nothing */
#define PGPIPE_MIGRATE_REPAIR       0x02u /* accept changed files: record their checksum,
                                             and the name and file of renamed ones */
#define PGPIPE_MIGRATE_OUT_OF_ORDER 0x04u /* apply a pending version below an applied one */
#define PGPIPE_MIGRATE_DENY_MISSING 0x08u /* applied migrations missing on disk are an error */

/* The advisory lock key every runner takes (pg_try_advisory_lock(bigint)). */
#define PGPIPE_MIGRATE_LOCK_KEY 0x7067706970656D67LL /* "pgpipemg" */

struct pgpipe_migrate_options {
    const char *dir;              /* folder of migration files, or NULL and: */
    const char *embedded;         /* a folder of the embedded sql/ ("schema", "example") */
    const char *scope;            /* history rows of this set; default "default", or the
                                     embedded folder's name */
    const char *history_table;    /* "schema.table", default "pgpipe.migrations" */
    int lock_timeout_ms;          /* wait for the lock this long; 0 = 30000, <0 = try once.
                                     Behind a transaction pooler also how long a step
                                     waits for a statement another runner started
                                     outside a transaction before reporting it in doubt */
    long long lock_key;           /* 0 = PGPIPE_MIGRATE_LOCK_KEY */
    const char *baseline_version; /* record versions <= this as applied without running
                                     them; only on a history with no version applied
                                     (failed attempts do not count): otherwise the run
                                     fails with PGPIPE_ERROR and changes nothing, unless
                                     the history began with this same baseline (then a
                                     run without it). NULL or "": none */
    unsigned flags;               /* PGPIPE_MIGRATE_* */
    int pooler;                   /* PGPIPE_POOLER_*: AUTO (0) asks pgpipe_pooler_mode;
                                     TRANSACTION takes no session lock (see above) */
    int resume_from;              /* N > 0: the statement whose outcome is unknown took
                                     effect; go on with statement N (1-based; N above it) */
    int redo;                     /* N > 0: run the statement N whose outcome is unknown
                                     again, and go on after it. resume_from and redo are
                                     an error when no statement is in doubt */
    const char *target_version;   /* apply the versioned migrations up to this one; the
                                     later ones stay pending (repeatable ones run as
                                     always). NULL: all */
};

void pgpipe_migrate_options_init(pgpipe_migrate_options *opt);

/* States of a migration in status and after a run. */
#define PGPIPE_MIGRATION_APPLIED  1  /* applied, file unchanged */
#define PGPIPE_MIGRATION_PENDING  2  /* not applied yet */
#define PGPIPE_MIGRATION_CHANGED  3  /* applied, but the file changed since (drift) */
#define PGPIPE_MIGRATION_MISSING  4  /* applied, but the file is gone */
#define PGPIPE_MIGRATION_FAILED   5  /* last attempt failed and was rolled back */
#define PGPIPE_MIGRATION_PARTIAL  6  /* no-transaction file stopped part-way */
#define PGPIPE_MIGRATION_BASELINE 7  /* recorded by a baseline, never run */
#define PGPIPE_MIGRATION_OUTDATED 8  /* repeatable whose file changed: runs again */
#define PGPIPE_MIGRATION_IGNORED  9  /* versioned file below the baseline */

typedef struct pgpipe_migration_info {
    int state;                  /* PGPIPE_MIGRATION_* */
    char kind;                  /* 'V' or 'R' */
    const char *version;        /* digits without leading zeros; "" for 'R' */
    const char *name;           /* "create_users" */
    const char *file;           /* file name, or NULL when missing on disk */
    const char *checksum;       /* of the file now, or NULL */
    const char *recorded_checksum; /* in the history, or NULL */
    const char *applied_at;     /* "YYYY-MM-DD HH:MM:SS" UTC, or NULL */
    const char *applied_by;     /* database user (and client host), or NULL */
    double execution_ms;        /* of the recorded run */
    int transactional;          /* 0 when marked -- pgpipe:no-transaction */
    int statements_done;        /* progress of a partial or failed run */
    int statements_total;
    long long error_line;       /* of the failed statement, or 0 */
    const char *error;          /* recorded error message, or NULL */
    const char *sqlstate;       /* recorded SQLSTATE, or NULL */
    int will_run;               /* the next run (or this dry run) executes it */
    int ran;                    /* executed by the last pgpipe_migrate_run */
    const char *action;         /* what a run does with it: "apply", "resume at
                                   statement 3", "repair checksum", ... or "" */
    int statement_unknown;      /* 1-based statement of a partial no-transaction file
                                   whose start is recorded but not its end (its outcome
                                   is unknown), or 0 */
} pgpipe_migration_info;

/* Open a runner on a connection (not taken over: close it yourself). The
** options are copied. Fails with PGPIPE_MISUSE on bad options; *out is set
** even then, so read its error and close it. */
int pgpipe_migrator_open(pgpipe_migrator **out, PGconn *conn, const pgpipe_migrate_options *opt);
/* Apply what is pending: reads the history without a lock and returns at
** once when everything is applied; otherwise takes the advisory lock
** (PGPIPE_BUSY when another runner keeps it past the timeout), creates the
** history table, checks drift, then runs versioned files in order and
** changed repeatables. Stops at the first failure: PGPIPE_DB with the file
** as source, the failing statement's line, the server's message and
** SQLSTATE; PGPIPE_ERROR, before anything runs, when a statement's outcome
** is unknown (see resume_from and redo). When the connection is lost the
** entries still show what committed (ran, applied). With
** PGPIPE_MIGRATE_DRY_RUN it only fills the entries (will_run) and changes
** nothing. */
int pgpipe_migrate_run(pgpipe_migrator *m);
/* Read the files and the history and fill the entries with what a run with
** the same options would do; changes nothing. A baseline that a run would
** refuse (see baseline_version) is PGPIPE_ERROR with the run's message; the
** entries are filled, and none of them will run. */
int pgpipe_migrate_status(pgpipe_migrator *m);
/* The entries of the last status or run (valid until the next call). */
int pgpipe_migrate_count(const pgpipe_migrator *m);
const pgpipe_migration_info *pgpipe_migrate_entry(const pgpipe_migrator *m, int i);
/* "applied", "pending", ... */
const char *pgpipe_migration_state_name(int state);
/* The entries as a text table for a terminal, with a summary line. Returns the
** length needed, like snprintf. */
int pgpipe_migrate_format(const pgpipe_migrator *m, char *buf, size_t size);
void pgpipe_migrator_close(pgpipe_migrator *m);
