/*
** The pipeline layer's private header: a record's way from input to its
** production table (load into staging, claim and transform, dead letters,
** the records store). Layer order and rules: src/base/pp_base.h.
**
** @components load load_input load_lanes claim dlq records
*/
#ifndef PP_PIPELINE_H
#define PP_PIPELINE_H
#include "../db/pp_db.h"

/* ==== The COPY loader's internals ========================================
** The loader is three files (load.c, load_input.c, load_lanes.c; overview in
** load.c) that share its state and these functions. Nothing else uses them. */
#ifndef PGPIPE_OMIT_LOAD

/* where a column value comes from */
enum { COPY_K_FIELD, COPY_K_FIXED, COPY_K_NULL, COPY_K_RECORD, COPY_K_LINE, COPY_K_SOURCE,
       COPY_K_BATCH, COPY_K_LOAD };

typedef struct copy_col {
    char *column;
    int kind;
    char *field;    /* COPY_K_FIELD */
    int is_path;    /* field holds '.' or '[' */
    char *value;    /* COPY_K_FIXED, COPY-escaped */
    char *raw_value;/* COPY_K_FIXED as given (for the load's recorded mapping) */
    int csv_idx;    /* index of the field in the CSV header */
    int json;       /* the value is JSON (validated for CSV) */
    int order;      /* json and the column is jsonb: sent in jsonb's member
                       order (a json column gets the text as it is) */
} copy_col;

/* A batch this run committed, as the loader booked it, or one it found
** committed by another run of the same load beside it (theirs: its records
** counted as skipped; it must be on the server at the end as much as ours). */
typedef struct copy_booked {
    long long seq, loaded, dead;
    long long theirs_rows;  /* theirs: the batch's records; 0: ours */
    char uuid[37];
    int theirs;
    int missing;          /* not on the server at the last check */
} copy_booked;

typedef struct copy_row {
    size_t coff;        /* offset of its COPY text in l->cbuf */
    size_t roff;        /* offset of its raw text in l->rbuf */
    long long line;
    long long offset;
    int bad;            /* rejected by the server */
} copy_row;

/* A lane: one connection and the batch on it. The loader's thread fills a
** lane's batch (streaming it into the lane's COPY as it grows), then hands
** the lane over to commit it: with several lanes each has a thread that
** ends the COPY, books and commits while the loader fills the next lane,
** so the server runs one COPY per lane side by side. Everything a commit
** touches is the lane's own; its outcome (counts, error) is folded into the
** loader's summary by the loader's thread. */
enum { COPY_LANE_FREE, COPY_LANE_QUEUED, COPY_LANE_DONE };
#define COPY_MAX_LANES 8
/* pgpipe.loads.started_at as the loader compares it (exact: the same
** expression on the same stored value) */
#define COPY_LOAD_STARTED "(extract(epoch FROM started_at) * 1000000)::bigint"

typedef struct copy_lane {
    struct pgpipe_loader *l;
    /* connection */
    PGconn *conn;
    pgpipe_conn *pconn;
    int own_conn;
    int connected_once;
    pgpipe_error err;     /* of this lane's connection and batch */
    pp_cancel_slot cancel;/* for pgpipe_loader_cancel */
    int reconnected;      /* connected anew since the loader last looked */
    char server_id[64];   /* the server connected to: copy_server_id */
    /* the batch */
    long long seq;
    int skipping;         /* committed by an earlier run: counted, not sent */
    long long skip_rows;  /* skipping: the records that run committed in it (it ends there) */
    char uuid_text[37];
    unsigned char uuid_bin[16]; /* the same as binary COPY sends it */
    pp_buf cbuf;          /* COPY rows of the batch (text, or binary: l->binary) */
    pp_buf rbuf;          /* raw text of the rows */
    pp_buf dbuf;          /* COPY text of dead letters (pgpipe.dead_letters) */
    size_t dbuf_valid;    /* dead letters of validation (before isolation) */
    copy_row *rows;
    size_t nrows, caprows;
    long long b_read, b_dead_valid, b_dead_srv, b_bytes;
    long long b_first_line, b_last_line, b_start_off, b_end_off;
    int copy_open;        /* streaming COPY of the batch in progress */
    int stream_broken;    /* streaming failed: resend at the end */
    size_t sent;          /* bytes of cbuf sent by the streaming COPY */
    int chain;            /* its commit starts the next batch's COPY in the same
                             round trip (one lane: copy_batch_close_pending) */
    int chained;          /* the open COPY was started for the next batch */
    /* the commit's outcome, for the loader's thread to fold */
    int state;            /* COPY_LANE_*, under the loader's mutex */
    int rc;
    long long r_retries, r_loaded, r_dead, r_batches, r_skipped_rows, r_skipped_batches;
    int r_at_cancel;      /* its COMMIT returned after the load was cancelled */
#ifndef PGPIPE_OMIT_THREADS
    pthread_t tid;
#endif
} copy_lane;

/* A CSV header as the keys of JSON objects (copy_csv_keys, below). */
typedef struct copy_csv_head {
    pp_buf *keys;   /* per header column, COPY-escaped */
    pp_buf *pkeys;  /* the same as plain JSON (binary COPY) */
    int *order;     /* the columns in the object's order: jsonb's */
    int *as_read;   /* ... or the header's (for a json column) */
    int n;
} copy_csv_head;

struct pgpipe_loader {
    pp_handle hdr;
    int not_open;            /* pgpipe_loader_open failed: every call but close is refused */
    char open_msg[512];      /* why */
    /* options */
    char *conninfo;
    PGconn *borrowed;
    pgpipe_pool *pool;
    int opt_format;
    char *opt_source_name;
    char *target;         /* as given, for messages and NOTIFY */
    char *target_sql;     /* quoted */
    copy_col *cols;
    int ncols;
    char **required;
    int *req_idx;
    int nrequired;
    int csv_delimiter;
    int csv_delimiter_now;
    size_t max_record;
    int opt_batch_rows;
    size_t opt_batch_bytes;
    char *channel;
    int max_retries;
    char *opt_load_key;
    pgpipe_load_progress_fn progress;
    void *progress_ud;
    char *copy_sql;
    /* binary COPY: the default mapping (source, event_type, payload,
    ** batch_id) into a table whose columns are text, text, jsonb and uuid
    ** sends binary rows, which the server takes without splitting and
    ** unescaping the text (about 6% of its work per row). Whether the
    ** table's types allow it is asked at each load's registration. */
    char *copy_sql_bin;   /* NULL: the mapping cannot go binary */
    pp_copy_w cw;         /* its rows' writer: cw.binary, this load sends binary rows
                             (read as COPY_BINARY(l): never in a size build) */
    /* lanes: lanes[0] is also the connection of the load's own bookkeeping */
    copy_lane lanes[COPY_MAX_LANES];
    int nlanes;           /* configured */
    int threaded;         /* the lanes' threads run (this load) */
    int quit;             /* the lanes' threads should end */
    copy_lane *cur;       /* the lane being filled, NULL between batches */
    copy_lane *pending;   /* one lane: a full batch whose commit waits for the
                             next record, to start its COPY in the same round trip */
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_t mu;
    pthread_cond_t cv;
#endif
    /* the load */
    int active;
    int failed;           /* the load stopped: further feeds return this */
    int format;
    char *source;         /* source name of this load */
    char *load_key;
    long long src_size;   /* -1 unknown */
    long long src_mtime;  /* seconds, -1 unknown */
    long long load_id;
    /* its started_at in microseconds: after a failover the id may be that of
    ** another load (the sequence's advance was lost with the row) */
    char load_started[32];
    char was_format[16];  /* a resumed load's recorded format ("" for a new load) */
    int batch_rows;
    size_t batch_bytes;
    long long *done_seqs; /* committed by earlier runs, sorted */
    long long *done_rows; /* and their records (rows_read) */
    size_t ndone;
    /* checking that what was committed is still there (a failover to a
    ** replica that had not received it): the batches this run committed,
    ** and the server the load began on */
    copy_booked *booked;
    size_t nbooked, capbooked;
    char server_id[64];
    char checked_id[64];  /* the other server a reconnect checked last */
    int rereadable;       /* the input can be read again (a regular file) */
    int reloading;        /* this run reloads the batches a failover lost */
    int need_reload;      /* the end found batches missing: read them again */
    atomic_int cancel_req;/* pgpipe_loader_cancel was called */
    int64_t t0;
    long long in_bytes;   /* input bytes consumed so far */
    long long seq;        /* of the last batch begun */
    pgpipe_load_summary sum;
    /* splitting */
    pp_framer fr;         /* NDJSON and JSON arrays */
    pp_buf sniff;         /* input held until the format is known */
    pgpipe_csv *csv;
    int csv_ready;
    copy_csv_head csv_head; /* the header's "key": prefixes and their order */
    pgpipe_json_doc *doc;
    pp_buf scratch;
    pp_buf jscratch[2];   /* a JSON value in jsonb's member order */
    pgpipe_error verr;
};


#define COPY_BINARY(l) (!PGPIPE_SMALL && (l)->cw.binary)

/* load.c: small helpers, connections, the load record, dead letters */
PGPIPE_PRIVATE int copy_errf(pgpipe_loader *l, int code, const char *fmt, ...) PP_PRINTF(3, 4);
PGPIPE_PRIVATE int copy_new_uuid(pgpipe_loader *l, copy_lane *ln);
PGPIPE_PRIVATE void copy_drop_conn(copy_lane *ln, int broken);
PGPIPE_PRIVATE int copy_connect(copy_lane *ln, int *transient);
PGPIPE_PRIVATE int copy_exec(copy_lane *ln, const char *sql, int n, const char *const *vals,
                             PGresult **out, int *transient);
PGPIPE_PRIVATE void copy_rollback(copy_lane *ln);
PGPIPE_PRIVATE int copy_seq_done(const pgpipe_loader *l, long long seq);
/* The records an earlier run committed in batch seq (its rows_read); -1
** when it committed no such batch. */
PGPIPE_PRIVATE long long copy_seq_rows(const pgpipe_loader *l, long long seq);
PGPIPE_PRIVATE int copy_cancelled(const pgpipe_loader *l);
PGPIPE_PRIVATE int copy_book(pgpipe_loader *l, const copy_lane *ln);
PGPIPE_PRIVATE void copy_after_reconnect(pgpipe_loader *l, copy_lane *ln);
PGPIPE_PRIVATE int copy_dead(copy_lane *ln, long long line, long long column, long long offset,
                             const char *raw, size_t rawlen, const char *msg, const char *sqlstate,
                             const char *context);

/* load_input.c: framers */
PGPIPE_PRIVATE int copy_feed_known(pgpipe_loader *l, const char *data, size_t len, long long base);
PGPIPE_PRIVATE int copy_csv_drain(pgpipe_loader *l);
PGPIPE_PRIVATE void copy_framer_begin(pgpipe_loader *l, int format);
PGPIPE_PRIVATE int copy_json_end(pgpipe_loader *l);
/* A CSV record as a JSON object, the loader's way (also the HTTP ingest's
** text/csv bodies): copy_csv_keys makes the "name": prefix of each header
** column (JSON- and COPY-escaped) and the columns' order in the object,
** jsonb's order of their names (shorter first, then bytewise; a name given
** twice keeps its order, so the last wins), so the server's jsonb input has
** nothing to sort; copy_csv_object appends {"name":"value",..} of the fields
** f, an empty unquoted field as null, COPY-escaped when copy is 1 (plain JSON
** for binary COPY when 0). PGPIPE_OK or NOMEM. */
PGPIPE_PRIVATE int copy_csv_keys(pgpipe_csv *csv, copy_csv_head *h);
PGPIPE_PRIVATE void copy_csv_keys_free(copy_csv_head *h);
PGPIPE_PRIVATE int copy_csv_object(pp_buf *b, const copy_csv_head *h, const pgpipe_csv_span *f, int nf,
                                   int copy);
/* Is raw (a record starting on line) not valid UTF-8 text or holds a NUL?
** 1 with msg naming the line and column of the bad byte (*eline, *ecol). */
PGPIPE_PRIVATE int copy_text_problem(const char *raw, size_t len, long long line, char *msg,
                                     size_t size, long long *eline, long long *ecol);

/* load_lanes.c: batches, sending, lanes */
PGPIPE_PRIVATE void copy_batch_reset(copy_lane *ln);
/* The COPY statement of this load's rows (text or binary). */
PGPIPE_PRIVATE const char *copy_rows_sql(const pgpipe_loader *l);
PGPIPE_PRIVATE int copy_batch_begin(pgpipe_loader *l, long long line, long long off);
PGPIPE_PRIVATE int copy_record_done(pgpipe_loader *l, long long line, long long off, size_t rawlen);
PGPIPE_PRIVATE void copy_stream(copy_lane *ln);
PGPIPE_PRIVATE int copy_batch_end(pgpipe_loader *l);
PGPIPE_PRIVATE int copy_batch_close_pending(pgpipe_loader *l, int chain);
PGPIPE_PRIVATE void copy_stream_close(pgpipe_loader *l);
PGPIPE_PRIVATE void copy_abandon(copy_lane *ln);
PGPIPE_PRIVATE void copy_lanes_start(pgpipe_loader *l);
PGPIPE_PRIVATE void copy_lanes_stop(pgpipe_loader *l);
PGPIPE_PRIVATE int copy_lanes_collect(pgpipe_loader *l, copy_lane **free_lane, int wait_all);
PGPIPE_PRIVATE void copy_report(pgpipe_loader *l);

/* load.c: does a mapping name a column twice? 1 with the two entries
** (0-based, *first < *second; the first such pair), 0 when every name is
** once. Entries without a name are passed over. The loader and the pipeline
** file's .load --map check it, each saying so in its own words. */
PGPIPE_PRIVATE int copy_mapping_twice(const pgpipe_load_column *cols, int n, int *first,
                                      int *second);
#endif /* PGPIPE_OMIT_LOAD */

/* ==== The dead-letter queue's writers =====================================
** Every write of a dead letter is built in dlq.c, so both stages land the
** same row shape in pgpipe.dead_letters; the callers send it inside their
** own transaction, beside the work it accounts for (records in = loaded +
** dead-lettered holds at every commit). */
#ifndef PGPIPE_OMIT_DLQ

/* A record the loader could not load (stage 'load'). */
typedef struct pp_dlq_load_letter {
    const char *source;       /* source_name: the load's source name */
    long long line;           /* line_number */
    long long column;         /* column_number; 0 = unknown (NULL) */
    long long offset;         /* byte_offset */
    long long load_id;        /* 0 = none (NULL): an HTTP request */
    const char *batch_id;     /* uuid text of the batch (HTTP: the request id) */
    const char *raw;          /* the record as read (NULL = empty) */
    size_t rawlen;
    const char *message;      /* error_message */
    const char *sqlstate;     /* NULL or "" = none */
    const char *context;      /* error_context; NULL or "" = none */
} pp_dlq_load_letter;

/* The COPY statement that takes the rows of pp_dlq_load_row. */
PGPIPE_PRIVATE const char *pp_dlq_load_copy_sql(void);
/* Append one COPY text row for d to b; PGPIPE_OK or PGPIPE_NOMEM (no error
** is set: the caller's handle gets it). Text that is not valid UTF-8 goes to
** raw_text with those bytes written \xHH and, as it was, to raw_bytes. */
PGPIPE_PRIVATE int pp_dlq_load_row(pp_buf *b, const pp_dlq_load_letter *d);

/* Append to b the INSERT that dead-letters (stage 'process') the rows of
** rows, for a data-modifying WITH: rows is a CTE with the columns id,
** received_at, source, batch_id, event_type, payload (jsonb), attempts,
** first_failed_at, dead (only those rows go in), msg (NULL = "handler
** failed") and st (the SQLSTATE, "" = none). qtable is the quoted dead-letter
** table; source_table and context are the numbers of the statement's
** parameters holding the staging table's name and the error context. It
** RETURNs 1 per row. PGPIPE_OK or PGPIPE_NOMEM. */
PGPIPE_PRIVATE int pp_dlq_process_insert(pp_buf *b, const char *qtable, const char *rows,
                                         int source_table, int context);
#endif /* PGPIPE_OMIT_DLQ */

#endif /* PP_PIPELINE_H */
