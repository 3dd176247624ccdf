/*
** The pipeline layer's private header: a record's way from input to its
** production table (load into staging, claim and transform, dead letters,
** the records store). Layer order and rules: src/base/pp_base.h.
**
** @components load claim dlq records
*/
#ifndef PP_PIPELINE_H
#define PP_PIPELINE_H
#include "../db/pp_db.h"

/* Declarations of a component sit inside its PGPIPE_OMIT_ guard. */

/* ---- load ---------------------------------------------------------------- */

#ifndef PGPIPE_OMIT_LOAD
/* 1 when s[0..n) holds no NUL and is valid UTF-8; the length of the valid
** UTF-8 sequence at s (n bytes left), 0 when it is invalid or NUL
** (src/pipeline/load.c). */
PGPIPE_PRIVATE int copy_utf8_ok(const unsigned char *s, size_t n);
PGPIPE_PRIVATE size_t copy_utf8_seq(const unsigned char *s, size_t n);
#endif

/* ---- dlq ----------------------------------------------------------------- */

/* Every write of a dead letter is built here (src/pipeline/dlq.c), so both
** stages land the same row shape in pgpipe.dead_letters; the callers send
** it inside their own transaction, beside the work it accounts for (records
** in = loaded + dead-lettered holds at every commit). */
#ifndef PGPIPE_OMIT_DLQ

#ifndef PGPIPE_OMIT_LOAD
/* A record the loader could not load (stage 'load'). */
typedef struct pp_dlq_load_letter {
    const char *source;       /* source_name: the load's source name */
    long long line;           /* line_number */
    long long column;         /* column_number; 0 = unknown (NULL) */
    long long offset;         /* byte_offset */
    long long load_id;
    const char *batch_id;     /* uuid text of the batch */
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
#endif /* PGPIPE_OMIT_LOAD */

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
