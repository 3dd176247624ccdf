/* ==== CSV reader ==== */

/* Reads CSV record by record (the loader's CSV input) and can hand a record
** on as a COPY text row into a pgpipe_copy_buf (see Text). Handle:
** pgpipe_csv (a reader over a file descriptor, a FILE * or fed chunks).
**
** Thread safety: a reader is used by one thread at a time. */

/* ---- CSV reader -------------------------------------------------------- */

/* A streaming pull reader for RFC 4180 CSV and the files found in the wild:
** quoted fields with "" inside, delimiters and line breaks inside quotes, LF,
** CRLF and CR line ends (mixed too), a last line without a line break, a
** UTF-8 byte-order mark. It reads from a file descriptor, a FILE * or chunks
** the caller feeds, and keeps memory bounded by the longest record.
**
**     pgpipe_csv_options o;
**     pgpipe_csv_options_init(&o);
**     o.header = 1;
**     pgpipe_csv *r;
**     int rc = pgpipe_csv_open_fd(&r, fd, &o);   (an error shows again in next)
**     if (rc != PGPIPE_OK) { report pgpipe_errmsg(r); pgpipe_csv_close(r); return; }
**     while ((rc = pgpipe_csv_next(r)) == PGPIPE_ROW || rc == PGPIPE_PARSE) {
**         if (rc == PGPIPE_PARSE) { dead-letter pgpipe_csv_raw_record(); continue; }
**         int n; const pgpipe_csv_span *f = pgpipe_csv_fields(r, &n);
**         ...
**     }
**     rc is PGPIPE_DONE at the end, or an I/O or usage error;
**     pgpipe_csv_close(r);
**
** Fields are pointer + length spans, not NUL terminated, valid until the next
** call on the reader. They point straight into the reader's buffer unless the
** field held "" (then into a per-record scratch area). */

typedef struct pgpipe_csv_options {
    int delimiter;          /* field separator, any byte but CR, LF and the quote; ',' */
    int quote;              /* quote character, not CR or LF; '"' */
    int header;             /* 1: the first record names the columns; 0 */
    int strict;             /* 1: a stray quote (inside an unquoted field, or after a
                            ** closing quote) is a row error; 0: kept literally; 1 */
    int skip_empty_lines;   /* 1: lines with no byte at all are skipped; 1 */
    int expected_fields;    /* fields per record: 0 = the header's count when there
                            ** is a header, else any; > 0 that count; < 0 any.
                            ** A record with another count is a row error. 0 */
    size_t max_field_size;  /* bytes in one field as written, without its enclosing
                            ** quotes; a longer field is a row error and its
                            ** record is dropped (no raw text); 64 MiB */
    size_t buffer_size;     /* initial read buffer; grows only for a longer record;
                            ** 128 KiB */
    const char *source;     /* name used in error messages ("data.csv"); "<input>" */
    int check_names;        /* with a header, 1: its column names are keys: each
                            ** must be UTF-8 without NUL, not empty, and given
                            ** once, else the header fails (PGPIPE_ERROR) naming
                            ** the line, byte column and problem; 0: any names
                            ** (one with a NUL is cut there); 0 */
} pgpipe_csv_options;

/* One field of the current record. quoted is 1 when the field was written in
** quotes, so an empty unquoted field (a NULL for a loader) can be told from
** an empty quoted one (''). */
typedef struct pgpipe_csv_span {
    const char *data;
    size_t len;
    int quoted;
} pgpipe_csv_span;

/* Fill o with the defaults above. */
void pgpipe_csv_options_init(pgpipe_csv_options *o);

/* Open a reader. opts may be NULL (defaults); it is copied (the source string
** too). The reader does not close fd or fp. *out is set even on failure:
** bad options give PGPIPE_MISUSE with the reason in pgpipe_errmsg(*out)
** (pgpipe_csv_next then returns PGPIPE_MISUSE too); *out is NULL only when
** out of memory. */
int pgpipe_csv_open_fd(pgpipe_csv **out, int fd, const pgpipe_csv_options *opts);
int pgpipe_csv_open_file(pgpipe_csv **out, FILE *fp, const pgpipe_csv_options *opts);
/* A reader fed by the caller: pgpipe_csv_feed() any number of chunks of any
** size (a record may straddle chunks), then pgpipe_csv_feed_end(). */
int pgpipe_csv_open_feed(pgpipe_csv **out, const pgpipe_csv_options *opts);
/* Add a chunk (copied). Field pointers of the current record become invalid. */
int pgpipe_csv_feed(pgpipe_csv *r, const void *data, size_t len);
/* No more chunks will come: the last record may end without a line break. */
int pgpipe_csv_feed_end(pgpipe_csv *r);

/* Read the next record.
**   PGPIPE_ROW    a record is ready (fields, raw text, line).
**   PGPIPE_PARSE  the record is malformed: errmsg/errinfo name the problem
**                 (line and byte column where it is, the field number, the
**                 line where the record began); pgpipe_csv_raw_record() gives
**                 its text when it was kept. The next call goes on with the
**                 next record.
**   PGPIPE_BUSY   (feed readers) more input is needed: feed, then call again.
**   PGPIPE_DONE   the input is exhausted.
**   PGPIPE_IO, PGPIPE_NOMEM, PGPIPE_MISUSE, PGPIPE_ERROR (a bad header row,
**                 or bad column names under check_names): the reader cannot
**                 go on; later calls return the same code. */
int pgpipe_csv_next(pgpipe_csv *r);

/* The fields of the current record; *count receives their number. */
const pgpipe_csv_span *pgpipe_csv_fields(const pgpipe_csv *r, int *count);
int pgpipe_csv_field_count(const pgpipe_csv *r);
/* Field i (0-based) of the current record. quoted may be NULL. Returns
** PGPIPE_OK or PGPIPE_MISUSE when i is out of range. */
int pgpipe_csv_field(const pgpipe_csv *r, int i, const char **data, size_t *len,
                     int *quoted);
/* The current record as written in the input, without its line break (for a
** dead-letter queue). PGPIPE_LIMIT when it was too large to keep. */
int pgpipe_csv_raw_record(const pgpipe_csv *r, const char **data, size_t *len);
/* The physical line (1-based) where the current record began, and its
** 0-based byte offset in the input. */
long long pgpipe_csv_record_line(const pgpipe_csv *r);
long long pgpipe_csv_record_offset(const pgpipe_csv *r);
/* Records returned so far (rows and row errors; the header not included). */
long long pgpipe_csv_record_count(const pgpipe_csv *r);
/* The 1-based field number of the last row error (0 when none). */
int pgpipe_csv_error_field(const pgpipe_csv *r);

/* Header names (with options.header = 1), known once the first call to
** pgpipe_csv_next() has returned anything but PGPIPE_BUSY. */
int pgpipe_csv_header_count(const pgpipe_csv *r);
const char *pgpipe_csv_header_name(const pgpipe_csv *r, int i);
/* The index of the column with that header name, -1 when there is none. */
int pgpipe_csv_column_index(const pgpipe_csv *r, const char *name);

void pgpipe_csv_close(pgpipe_csv *r);

/* ---- A record as COPY text ------------------------------------------------ */

/* Append the current CSV record as a COPY text row. An empty unquoted field
** becomes NULL (\N), an empty quoted field the empty string. */
int pgpipe_csv_copy_row(const pgpipe_csv *r, pgpipe_copy_buf *out);
