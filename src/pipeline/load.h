/* ==== COPY loader ==== */

/* The way into the database: files and streams of CSV or JSON become rows
** of staging.raw_events (or a table of yours), with every bad record
** dead-lettered. Handle: pgpipe_loader.
**
** Thread safety: a loader is used by one thread at a time; it runs its own
** lanes internally (one thread and one connection per extra lane, see
** options.connections), and calls the progress callback on the caller's
** thread. Any number of loaders may run at once, in threads or processes:
** each batch is its own transaction. */

/* Loads CSV, NDJSON or a JSON array of objects into PostgreSQL with COPY FROM
** STDIN, in batches, validating every record first. A bad record goes to
** pgpipe.dead_letters (stage 'load', with its line, raw text and the error)
** and the load goes on; a record the server rejects is isolated inside its
** batch and dead-lettered with its SQLSTATE, the rest of the batch is loaded.
** Each batch is one transaction that also writes its pgpipe.load_batches row,
** its dead letters and the pgpipe.loads counters, and NOTIFYs the channel on
** commit, so records in = loaded + dead-lettered holds across crashes: a lost
** connection or a server restart is retried (reconnect, then the first batch
** not committed), and re-running the same load skips committed batches.
**
**     pgpipe_loader_options o;
**     pgpipe_loader_options_init(&o);
**     o.conninfo = "postgresql://app@db/prod";
**     o.event_type_field = "type";
**     pgpipe_loader *l;
**     if (pgpipe_loader_open(&l, &o) == PGPIPE_OK &&
**         pgpipe_loader_load_file(l, "events.ndjson") == PGPIPE_OK) {
**         pgpipe_load_summary s;
**         pgpipe_loader_summary(l, &s);
**     } else fprintf(stderr, "%s\n", pgpipe_errmsg(l));
**     pgpipe_loader_close(l);
**
** Memory is bounded by batch_bytes (the batch is kept until it commits, to
** retry it) and the longest record, whatever the size of the input. */

#define PGPIPE_FORMAT_AUTO   0  /* by file extension, else by the first byte */
#define PGPIPE_FORMAT_CSV    1  /* header row names the fields */
#define PGPIPE_FORMAT_NDJSON 2  /* one JSON object per line */
#define PGPIPE_FORMAT_JSON   3  /* one JSON array of objects, streamed */

/* One target column and where its value comes from: field (a field name; a
** JSON path like "user.id" or "items[0]" for JSON input), else value (fixed
** text), else NULL. Special fields: "$record" (the whole record as JSON; a
** CSV row becomes an object keyed by the header), "$line" (input line),
** "$source" (source name), "$batch_id", "$load_id". A JSON field that is a
** string gives its text; numbers, true/false as written; objects and arrays
** as JSON text; null or missing gives NULL. An empty unquoted CSV field is
** NULL. With json set the value must be JSON: a CSV field is validated
** (a record whose field is not valid JSON is dead-lettered), a JSON field is
** written as JSON (a string as a JSON string). */
typedef struct pgpipe_load_column {
    const char *column;
    const char *field;
    const char *value;
    int json;
} pgpipe_load_column;

/* Progress, reported after every batch and at the end. */
typedef struct pgpipe_load_progress {
    long long bytes_done;     /* input bytes read */
    long long bytes_total;    /* input size, -1 when unknown (pipe, feed) */
    long long records_read;   /* records seen (loaded, dead-lettered or skipped) */
    long long rows_loaded;    /* rows committed by this run */
    long long rows_dead;      /* records dead-lettered by this run */
    long long rows_skipped;   /* records of batches committed by an earlier run */
    long long batches;        /* batches committed by this run */
    double seconds;           /* since the load began */
} pgpipe_load_progress;

/* Called on the loader's (the caller's) thread after each batch is
** committed. Return non-zero to stop the load after this batch (status
** 'interrupted'; running the same load again resumes it); batches that
** other connections are committing at that moment are committed too. */
typedef int (*pgpipe_load_progress_fn)(void *ud, const pgpipe_load_progress *p);

typedef struct pgpipe_loader_options {
    /* the connection: one of these three (conn and pool are borrowed) */
    const char *conninfo;     /* anything libpq accepts; NULL/"" = PG* variables */
    PGconn *conn;             /* an open connection (reset by PQreset when lost) */
    pgpipe_pool *pool;        /* a pool to check a connection out of */
    int format;               /* PGPIPE_FORMAT_*; AUTO */
    const char *source_name;  /* recorded as the source; default the path,
                                 "<stdin>" or "<buffer>" */
    const char *target;       /* "schema.table"; NULL = staging.raw_events */
    /* for another target: the column mapping (required) */
    const pgpipe_load_column *columns;
    int ncolumns;
    /* for staging.raw_events: */
    const char *source_field;     /* raw_events.source from this field, else */
    const char *source_value;     /* this text, else the source name */
    const char *event_type_field; /* default "event_type" (unless a value) */
    const char *event_type_value; /* fixed event_type */
    const char *received_at_field;/* default: now() */
    const char *payload_field;    /* payload from this field (JSON, validated);
                                     default: the whole record */
    /* validation */
    const char *const *required;  /* fields that must be present and not null/empty */
    int nrequired;
    int csv_delimiter;            /* default ',' */
    size_t max_record_bytes;      /* longer records are dead-lettered; 64 MiB */
    /* batching */
    int batch_rows;               /* records per batch; 10000 */
    size_t batch_bytes;           /* input bytes per batch; 4 MiB */
    const char *notify_channel;   /* NOTIFY after each commit; "pgpipe_events";
                                     "" = none. Payload: {"table":..,"batch_id":..,
                                     "rows":N,"load_id":N,"seq":N} */
    int max_retries;              /* reconnect attempts after a lost connection; 10 */
    int install_schema;           /* 1: install/upgrade the built-in schema first; 1 */
    /* resume: loads with the same key (and target) are one load; a file's key
    ** defaults to its device, inode, size and mtime; other inputs have none
    ** unless given. A file under its default key whose last load (same path,
    ** or same inode) stopped after committing batches and that has changed
    ** since (fixed, truncated) is refused, naming that load's key: give it to
    ** go on after the committed records, or another key for a new load. A
    ** resumed input that ends inside the committed batches fails (PGPIPE_IO). */
    const char *load_key;
    pgpipe_load_progress_fn progress;
    void *progress_ud;
    /* COPY streams side by side, each on its own connection (from the pool
    ** when one is given) with a thread that commits its batches while the
    ** next batch is read: the server then works on several batches at once.
    ** Batches commit in any order; each is still one transaction, booked in
    ** pgpipe.load_batches, so resuming skips exactly the committed ones.
    ** 1 to 8; 2. Always 1 with conn (and under PGPIPE_OMIT_THREADS). */
    int connections;
} pgpipe_loader_options;

/* Totals of the last load of a loader. records_read = rows_loaded +
** rows_dead + rows_skipped + rows_missing.
**
** At the end of a load, and whenever a lane reconnects to a server that is
** not the one the load began on (another system identifier or timeline: a
** failover), the loader checks that every batch it committed is still in
** pgpipe.load_batches, and every batch it skipped because another run of
** the same load committed it meanwhile (that run may have ended before the
** failover). A file's missing batches are loaded again at once (the
** same load, resumed: exactly the gap; batches_reloaded); for other inputs,
** or when the file changed, the load fails (PGPIPE_DB) with a message that
** names the missing batches and how to fill them (run the same load again
** with the same key), and their records are counted in rows_missing, not in
** rows_loaded. */
typedef struct pgpipe_load_summary {
    long long load_id;        /* pgpipe.loads.id */
    long long records_read;
    long long rows_loaded;
    long long rows_dead;
    long long rows_skipped;   /* already committed by an earlier run */
    long long batches;        /* committed by this run */
    long long batches_skipped;
    long long bytes;          /* input bytes */
    long long retries;        /* reconnects after transient failures */
    double seconds;
    double rows_per_sec;      /* records_read / seconds */
    int status;               /* PGPIPE_OK, or the code the load ended with */
    long long batches_reloaded; /* lost in a failover, then loaded again */
    long long batches_missing;  /* committed, but not on the server at the end */
    long long rows_missing;     /* the records of those batches */
    long long batches_at_cancel;/* committed while pgpipe_loader_cancel was under
                                   way: kept by the server (a COMMIT whose wait
                                   for a synchronous standby is cancelled stays
                                   committed), but that standby may lack them */
} pgpipe_load_summary;


void pgpipe_loader_options_init(pgpipe_loader_options *o);
/* Check the options, connect, install the schema when asked. *out is set even
** on failure (read pgpipe_errmsg(*out), then close it); NULL only when out of
** memory. Strings in the options are copied. */
int pgpipe_loader_open(pgpipe_loader **out, const pgpipe_loader_options *o);
/* Load a whole file ("-" = stdin). Returns PGPIPE_OK when every record was
** loaded or dead-lettered; PGPIPE_DB/PGPIPE_IO/... when the load stopped
** (the committed batches stay; running it again resumes). A regular file
** that ends before the size it had when the load began (truncated while it
** was read) fails with PGPIPE_IO, the records after the last committed batch
** not loaded. When input (PGPIPE_PARSE, PGPIPE_IO) stops a load that has
** committed batches, the message says how many and the key to resume with. */
int pgpipe_loader_load_file(pgpipe_loader *l, const char *path);
/* Load everything readable from fd (not closed). name may be NULL. */
int pgpipe_loader_load_fd(pgpipe_loader *l, int fd, const char *name);
/* Feed a load chunk by chunk (a record may straddle chunks); the first feed
** starts a load, pgpipe_loader_finish ends it (flushes the last batch). */
int pgpipe_loader_feed(pgpipe_loader *l, const void *buf, size_t len);
int pgpipe_loader_finish(pgpipe_loader *l);
/* Totals of the last (or the running) load. */
int pgpipe_loader_summary(const pgpipe_loader *l, pgpipe_load_summary *out);
/* Cancel the running load from a signal handler or another thread: the
** statements in flight on every connection of the loader are cancelled
** (PQcancel, on handles made when each connection was opened), nothing is
** retried, and the load ends with PGPIPE_BUSY (status 'interrupted'; the
** batches committed stay, and running the same load again resumes it).
** A cancelled loader stays cancelled: a later load ends at its first batch.
** Async-signal-safe and safe to call again (a second Ctrl-C cancels what
** runs then). Not while pgpipe_loader_close runs. */
int pgpipe_loader_cancel(pgpipe_loader *l);
/* The connection the loader uses now (NULL when none). */
PGconn *pgpipe_loader_conn(pgpipe_loader *l);
void pgpipe_loader_close(pgpipe_loader *l);
/* Format a summary as one line: "read 1000, loaded 998, dead-lettered 2, ..." */
int pgpipe_load_summary_format(const pgpipe_load_summary *s, char *buf, size_t size);
