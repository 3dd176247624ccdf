/* ==== Dead-letter queue ==== */

/* Lists, counts, replays and purges the records the loader and the claimer
** could not take. No handle: every function works on a PGconn and reports
** to its last argument, pgpipe_error *err (may be NULL).
**
** Thread safety: the functions keep no state; any number of threads may
** call them, each on its own PGconn. */

/* pgpipe.dead_letters holds every record that could not be loaded (stage
** 'load': the raw text as read) or processed (stage 'process': the staging
** row, its payload, the error, attempt_count, first and last failure). These
** functions list, inspect, count, replay and purge them. Every filter value
** is sent as a query parameter. Errors go to err (may be NULL). */

typedef struct pgpipe_dlq_filter {
    long long id;            /* one dead letter (0 = any) */
    const char *stage;       /* "load" or "process" (NULL = any) */
    const char *source;      /* source_name (the input file / stream, or the
                                event's source for stage 'process'), or the
                                source a load gave its records (--source) */
    const char *error_like;  /* error_message contains this text (case-insensitive) */
    const char *since;       /* last_failed_at >= this: a time ("2026-11-01",
                                "yesterday") or an interval back from now
                                ("1 day"); anything else is PGPIPE_PARSE */
    const char *until;       /* last_failed_at < this, the same forms (purge
                                "older than": until = "30 days") */
    const char *status;      /* "dead" (default), "replayed", "discarded", "any" */
    int limit;               /* rows listed (default 100; <0 = no limit) */
} pgpipe_dlq_filter;

void pgpipe_dlq_filter_init(pgpipe_dlq_filter *f);

/* Columns of list and get: id, stage, status, source_name, line_number,
** row_id, event_type, error_message, sqlstate, attempt_count,
** first_failed_at, last_failed_at, replay_count; get adds raw_text, payload,
** error_context, source_table, row_received_at, batch_id, load_id,
** column_number, byte_offset, replayed_at, replayed_by. Newest first. The
** caller PQclears *out. get gives PGPIPE_DONE when there is no such id. */
int pgpipe_dlq_list(PGconn *conn, const pgpipe_dlq_filter *f, PGresult **out, pgpipe_error *err);
int pgpipe_dlq_get(PGconn *conn, long long id, PGresult **out, pgpipe_error *err);
/* Counts grouped by stage, sqlstate and error (most frequent first). The
** error is the message with every run of digits replaced by N, so messages
** that differ only in a line, column or value group together:
** columns stage, sqlstate, error, count, example (one full message),
** last_failed_at. */
int pgpipe_dlq_counts(PGconn *conn, const pgpipe_dlq_filter *f, PGresult **out,
                      pgpipe_error *err);
/* Replay the matching dead letters (status 'dead' only; filter->limit is
** ignored) into target_table (NULL = the table its load wrote for a load's
** dead letter, .load --table; staging.raw_events for the others) as unprocessed rows
** with attempts reset: stage 'process' sets the original row back (or
** re-inserts the kept payload when the row is gone); stage 'load' validates
** the raw text again with the checks and the field mapping its load recorded
** in pgpipe.loads.options (valid JSON, an object, the required fields; the
** source is the load's source value or source name, as when it was loaded)
** and inserts it; a CSV record is refused (its header is not kept); dead
** letters of loads that recorded no mapping (older versions) go in when they
** are valid JSON, with the dead letter's source name. Replayed dead letters
** get status 'replayed'; a refused one stays 'dead' with attempt_count + 1,
** last_failed_at = now() and error_message "replay: REASON" (each refusal is
** also logged). A NOTIFY on channel (NULL = "pgpipe_events") wakes the
** workers. */
int pgpipe_dlq_replay(PGconn *conn, const pgpipe_dlq_filter *f, const char *target_table,
                      const char *channel, long long *replayed, long long *refused,
                      pgpipe_error *err);
/* Delete the matching dead letters (any status unless filter->status is set;
** use until for "older than"). An empty filter deletes nothing: set
** status = "any" to purge all. */
int pgpipe_dlq_purge(PGconn *conn, const pgpipe_dlq_filter *f, long long *purged,
                     pgpipe_error *err);
/* The growth rule: dead letters are growing when the new ones of a window
** (recent) are more than threshold and more than twice those of the window
** before it (before; 0 when not counted). 1 when growing, else 0. Pure: no
** database. pgpipe_dlq_check_growth and pgpipe_dlq_health_get apply it. */
int pgpipe_dlq_growing(long long recent, long long before, long long threshold);

/* What .health shows of the queue: status 'dead' only, by first failure. */
typedef struct pgpipe_dlq_health {
    long long dead;          /* dead letters */
    long long last_hour;     /* of those, first failed within the last hour */
    long long hour_before;   /* first failed in the hour before that */
    int growing;             /* pgpipe_dlq_growing(last_hour, hour_before,
                                PGPIPE_DLQ_HEALTH_THRESHOLD) */
} pgpipe_dlq_health;
#define PGPIPE_DLQ_HEALTH_THRESHOLD 10
int pgpipe_dlq_health_get(PGconn *conn, pgpipe_dlq_health *out, pgpipe_error *err);
/* What .stats shows: columns stage, status, dead_letters (the count) and
** latest (the newest last_failed_at), one row per stage and status, ordered
** by them. The caller PQclears *out. */
int pgpipe_dlq_totals(PGconn *conn, PGresult **out, pgpipe_error *err);

/* Growth alert: count dead letters whose last failure is within the last
** window_s seconds; when more than threshold (pgpipe_dlq_growing with no
** window before), log a warning (component
** "dlq") and NOTIFY channel (NULL = "pgpipe_dlq_alert") with a JSON payload
** {"new_dead_letters": N, "window_s": W, "threshold": T}, and return
** PGPIPE_BUSY. PGPIPE_OK when below. *count may be NULL. */
int pgpipe_dlq_check_growth(PGconn *conn, int threshold, int window_s, const char *channel,
                            long long *count, pgpipe_error *err);
