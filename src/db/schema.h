/* ==== Built-in schema and the example pipeline ==== */

/* Installs the tables every other component relies on (staging, loads,
** dead letters, migrations), through the migration runner. No handle: the
** functions work on a PGconn and report to err.
**
** Thread safety: the functions keep no state; concurrent installs, in
** threads or processes, wait for each other on the migration runner's
** advisory lock, which is taken only when something is to be installed (an
** installed schema is checked without it, so a loader never waits for a
** migration that runs meanwhile). Behind a transaction pooler they follow
** the runner's transaction-lock rule (pgpipe_migrate_options.pooler, or
** PGPIPE_POOLER). Each call uses its connection alone meanwhile. */

/* Install (or bring up to date) the built-in schema embedded from sql/schema:
** staging.raw_events and its partitions, pgpipe.loads, pgpipe.load_batches,
** pgpipe.dead_letters, pgpipe.migrations, maintenance functions. Idempotent.
** opt may be NULL (its dir/embedded/scope are ignored); err may be NULL. */
int pgpipe_schema_install(PGconn *conn, const pgpipe_migrate_options *opt, pgpipe_error *err);
/* The built-in schema, then the example pipeline of sql/example. */
int pgpipe_example_install(PGconn *conn, const pgpipe_migrate_options *opt, pgpipe_error *err);
/* The most days of daily staging partitions pgpipe.create_partitions makes
** ahead (a year: each day is a table and its indexes in the catalog); the
** shell's and the pipeline file's .partitions ahead refuse more offline. */
#define PGPIPE_PARTITIONS_AHEAD_MAX 366
