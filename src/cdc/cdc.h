/* ==== CDC: changes of another PostgreSQL database into staging ==== */

/* Change data capture over logical replication: a pgpipe_cdc reads the
** changes of a source database through a replication slot with the
** built-in pgoutput plugin (protocol version 2, large transactions
** streamed while still in progress) and writes each row change as an event
** into staging.raw_events of the target:
**
**     source      the slot's name
**     event_type  "schema.table:insert", ":update", ":delete", ":truncate"
**     payload     {"op":..,"table":"schema.table","xid":N,"row":{..},
**                  "filled":[..],"unchanged":[..],"old":{..},
**                  "lsn":"X/Y","commit_time":".."}
**
** "row" is the new row (insert, update) by column name: numbers, booleans
** and json/jsonb as JSON, every other type as its text output. "old" is
** the replica identity of the old row (its key columns, or the whole row
** with REPLICA IDENTITY FULL) for updates and deletes, when the source sent
** it. "lsn" is the end of the source transaction's commit record,
** "commit_time" its commit time (UTC).
**
** Unchanged TOAST values: PostgreSQL does not send a value stored out of
** line (TOASTed) that an update left unchanged. pgpipe fills it into "row"
** from the last staged image of the row and names its column in "filled":
** with REPLICA IDENTITY FULL from "old"; with a key (DEFAULT with a
** primary key, or USING INDEX) from pgpipe.cdc_toast on the target, which
** keeps per row (slot, table, key) and column the last staged value (of an
** insert, update or snapshot row) that PostgreSQL may have stored out of
** line: of 24 bytes or more, in a row of about 1,800 bytes or more. It is
** written in the same target transaction as the events (read, when a
** change needs it, on a second connection); a delete forgets
** the row, a truncate the table. When no earlier image exists (the row
** was written before the slot and the snapshot, REPLICA IDENTITY NOTHING
** or no key, over 64 MB of such values in one transaction), the value is
** left out of "row" and its column named in "unchanged" (never written as
** NULL). Values stored larger than their text (arrays of small numbers)
** can stay "unchanged" when PostgreSQL moved them out of a smaller row.
**
** Exactly once: the events of a source transaction are committed in one
** target transaction together with the transaction's LSN
** (pgpipe.cdc_slots.applied_lsn); the slot's flush position is confirmed to
** the source only after that commit reached the target's disk, so after a
** crash of either side the stream resumes from the stored LSN and a
** transaction already staged is skipped. A backlog is staged in groups:
** several source transactions in one target transaction, stored with the
** LSN of the last. The target session commits with synchronous_commit off
** (unless the target has synchronous standbys), as PostgreSQL's own
** subscriptions do; confirmation waits for the target's WAL flush instead.
**
**     pgpipe_cdc_options o;
**     pgpipe_cdc_options_init(&o);
**     o.source = "host=src dbname=app user=repl";
**     o.target = "host=dw dbname=pipe";
**     o.slot = "app_cdc";
**     pgpipe_cdc *c;
**     if (pgpipe_cdc_open(&c, &o) == PGPIPE_OK)
**         pgpipe_cdc_run(c, -1);       // until pgpipe_cdc_stop
**     else fprintf(stderr, "%s\n", pgpipe_errmsg(c));
**     pgpipe_cdc_close(c);
**
** The initial snapshot (options.snapshot): the rows the published tables
** hold are staged as "schema.table:insert" events with "snapshot":true and
** no commit_time, read under a snapshot exported by a temporary slot made
** after the slot; one target transaction per table, marked done in
** pgpipe.cdc_snapshot_tables, with the images of its rows' large values.
** The stream then skips a table's changes that committed before its
** snapshot (they are in it): no gap, no overlap. An
** interrupted snapshot resumes with the tables not done, under a new
** snapshot (each table consistent in itself, and with the stream).
**
** The source needs wal_level = logical, a role with the REPLICATION
** attribute (or a superuser) and, to create the publication, ownership of
** the tables. Set max_slot_wal_keep_size on the source: a slot whose
** consumer is gone keeps WAL without limit otherwise.
**
** Reading and writing overlap: the thread that calls pgpipe_cdc_run reads
** the stream (it answers the walsender, decodes, makes the COPY rows) and
** writer threads of the handle, started for each run, COPY the groups
** into staging and commit them, joined by queues of at most 8 MB in all;
** so the source is read while the target commits, and the target is fed
** while the source decodes. Each writer has a target connection of its
** own (options.writers, 1 by default) and the groups alternate between
** them, so two target backends work side by side; the commits stay in the
** groups' order (a writer commits its group only after the group before
** committed), so the target always holds a prefix of the stream; the
** events' ids (drawn by pgpipe from staging's sequence in the stream's
** order) and received_at keep the source's order. A target
** slower than the source fills the queues:
** the reader then stops reading (the walsender waits) but still sends its
** status in time (at least 4 times per the walsender's
** wal_sender_timeout), confirming only what the writer committed and the
** target flushed. Asked to stop while the target takes nothing (a lock, a
** hung server), a run gives up after 5 s what it had handed over (not
** confirmed: read again next time).
**
** Thread safety: one thread runs a handle; pgpipe_cdc_stop may be called
** from a signal handler or any thread, pgpipe_cdc_stats from any thread. */

typedef struct pgpipe_cdc_options {
    const char *source;         /* conninfo of the source database; NULL/"" = PG* variables */
    const char *target;         /* conninfo of the staging database; NULL/"" = PG* variables */
    const char *slot;           /* replication slot, also the events' source; "pgpipe_cdc" */
    const char *publication;    /* "pgpipe_cdc" */
    const char *tables;         /* "t1, s.t2": the publication's tables when it is created;
                                   NULL = FOR ALL TABLES */
    int create;                 /* 1: create the publication and the slot when missing; 1 */
    int install;                /* 1: install or upgrade the pgpipe schema on the target; 1 */
    int snapshot;               /* 1: when the target has no state for the slot yet, stage
                                   the published tables' rows first (below); 0 */
    int status_interval_ms;     /* standby status to the source at least this often; 1000 */
    int heartbeat_ms;           /* idle this long: pg_logical_emit_message on the source,
                                   so the slot advances; 0 = never; 10000 */
    int single_thread;          /* 1: read the stream and write the target on the calling
                                   thread alone, each waiting for the other (always so
                                   with PGPIPE_OMIT_THREADS); 0: a writer thread (below) */
    int writers;                /* target connections that stage groups side by side, each
                                   with a thread of its own: 1 to 4; 1 (0 = 1). Ignored
                                   with single_thread */
} pgpipe_cdc_options;

void pgpipe_cdc_options_init(pgpipe_cdc_options *opt);

/* Check the source (wal_level, the REPLICATION attribute: the message names
** the setting to change), create or adopt the publication and the slot,
** install the schema on the target and read the slot's applied LSN.
** PGPIPE_DB for a refused or failed statement, PGPIPE_ERROR for a source
** that cannot do logical replication, PGPIPE_MISUSE for bad options. */
int pgpipe_cdc_open(pgpipe_cdc **out, const pgpipe_cdc_options *opt);

/* Stream changes into staging for timeout_ms (< 0: until pgpipe_cdc_stop).
** A failure that may heal (a connection to the source or the target lost,
** a server restarting or still down: SQLSTATE class 08, 57P0x, ...) is
** logged, and the stream connects again with a backoff (100 ms doubling to
** 10 s, back to 100 ms once it staged again) and resumes from the applied
** LSN; nothing was confirmed that is not staged.
** PGPIPE_OK when the time is up or stop was asked while the stream ran;
** otherwise the error: one that cannot heal (an invalidated slot, a
** malformed message, a refused statement), or the healing kind when it
** still lasted at the end. What was staged is staged, and a new run
** resumes after it. */
int pgpipe_cdc_run(pgpipe_cdc *c, int timeout_ms);

/* Ask a running pgpipe_cdc_run to return. Async-signal-safe. */
void pgpipe_cdc_stop(pgpipe_cdc *c);

typedef struct pgpipe_cdc_stats {
    long long transactions;     /* source transactions staged by this handle */
    long long events;           /* change events staged by this handle */
    long long skipped;          /* transactions skipped: staged before (a resumed stream) */
    long long reconnects;       /* failures that healed: connected again and resumed */
    uint64_t applied_lsn;       /* the last staged transaction's end (pgpipe.cdc_slots) */
    uint64_t confirmed_lsn;     /* flush position last sent to the source */
    uint64_t received_lsn;      /* the source's WAL position last heard of */
} pgpipe_cdc_stats;
void pgpipe_cdc_stats_get(pgpipe_cdc *c, pgpipe_cdc_stats *out);

/* What the source says of a slot (pg_replication_slots), for status and
** health checks: any conninfo of the source's cluster. */
typedef struct pgpipe_cdc_slot_info {
    int exists;
    int active;                 /* a consumer is connected */
    char wal_status[16];        /* reserved, extended, unreserved, lost */
    char confirmed_flush[24];   /* "X/Y" */
    long long lag_bytes;        /* pg_current_wal_lsn() - confirmed_flush_lsn */
    long long retained_bytes;   /* pg_current_wal_lsn() - restart_lsn: WAL kept for it */
    long long safe_wal_size;    /* bytes before the slot is lost; -1 = no limit */
} pgpipe_cdc_slot_info;
int pgpipe_cdc_slot_info_get(const char *source, const char *slot, pgpipe_cdc_slot_info *out,
                             pgpipe_error *err);

/* Drop the slot on the source (and, when publication is not NULL, that
** publication) and forget its applied LSN on the target (target may be
** NULL). The source then keeps no WAL for it. */
int pgpipe_cdc_drop(const char *source, const char *target, const char *slot,
                    const char *publication, pgpipe_error *err);

void pgpipe_cdc_close(pgpipe_cdc *c);
