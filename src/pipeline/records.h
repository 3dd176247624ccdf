/* ==== Record store: JSONB documents in collections ==== */

/* A document store on PostgreSQL: create, read, update, delete and search
** JSON records, import and export them. Handles: pgpipe_records (a
** collection, on a pool), pgpipe_records_filter (a parsed condition list),
** pgpipe_records_cursor (the results of a search).
**
** Thread safety: a collection handle is used by one thread at a time; open
** one per thread on the same pool (the pool is shared safely). A filter,
** once built, may be shared by threads: searches only read it. A cursor is
** used by one thread at a time. */

/* ---- Collections ------------------------------------------------------- */

/* A collection is a table records.NAME (id uuid primary key default
** gen_random_uuid(), fields jsonb, metadata jsonb, created_at and updated_at
** timestamptz) created on first use with GIN indexes on fields and on
** metadata, and a trigger that sets updated_at on every UPDATE. The indexes
** use the jsonb_path_ops opclass: it serves containment (@>: the contains
** filter, and eq on a string, array or object value) with an index about
** half the size of the default jsonb_ops and writes 1.5-2x faster (measured
** on COPY); it cannot serve key existence (?), so exists filters scan.
** Every statement goes through the pool as a cached prepared statement;
** values, paths and keys are always query parameters, never SQL text.
**
**     pgpipe_records *users;
**     if (pgpipe_records_open(&users, pool, "users") != PGPIPE_OK) { ... }
**     char id[37];
**     pgpipe_records_create(users, "{\"name\":\"Alice\",\"age\":31}", id);
**     pgpipe_records_find_options fo;
**     pgpipe_records_find_options_init(&fo);
**     fo.where = "age > 30 and tags contains [\"admin\"]";
**     fo.sort = "-age";
**     pgpipe_records_cursor *cur;
**     if (pgpipe_records_find(users, &fo, &cur) == PGPIPE_OK) {
**         const char *doc;
**         while (pgpipe_records_cursor_next(cur, &doc, NULL) == PGPIPE_ROW)
**             puts(doc);   {"id":"...","fields":{...},"metadata":{},...}
**     }
**     pgpipe_records_cursor_close(cur);
**     pgpipe_records_close(users);
**
** Not found (get, update, delete of an id that is not there) is PGPIPE_DONE
** with a message naming the id. */

/* Open the collection NAME ("name" or "schema.name"; the schema defaults to
** "records"), creating schema, table, indexes and trigger when missing. Each
** part: a letter or '_' then letters, digits, '_' or '-', at most 48 bytes
** (anything else is PGPIPE_MISUSE); it is also quoted as an identifier. Safe
** when several processes open the same new collection at once (the creation
** runs under a transaction-level advisory lock). *out is set even on failure
** (read pgpipe_errmsg, then close); NULL only when out of memory. */
int pgpipe_records_open(pgpipe_records **out, pgpipe_pool *pool, const char *name);
/* Close (rolls back an open transaction). NULL is a no-op. */
void pgpipe_records_close(pgpipe_records *h);
/* The quoted table name ("records"."users"), for your own SQL. */
const char *pgpipe_records_table(const pgpipe_records *h);

/* ---- CRUD ---- */

/* Insert a record: fields is the text of a JSON object (checked first:
** PGPIPE_PARSE with line and column when it is not one). metadata may be NULL
** ({}). The new id (36 characters and NUL) goes to uuid_out (may be NULL). */
int pgpipe_records_create(pgpipe_records *h, const char *fields, char uuid_out[37]);
int pgpipe_records_create_meta(pgpipe_records *h, const char *fields, const char *metadata,
                               char uuid_out[37]);
/* The record as a JSON document {"id":..,"fields":..,"metadata":..,
** "created_at":..,"updated_at":..} (timestamps ISO 8601), allocated; free it
** with pgpipe_free. PGPIPE_DONE when there is no such id; an id that
** is not a UUID is PGPIPE_PARSE. */
int pgpipe_records_get(pgpipe_records *h, const char *id, char **json_out);

#define PGPIPE_RECORDS_MERGE    0 /* fields = fields || new: top-level keys of
                                     the new object replace or add keys */
#define PGPIPE_RECORDS_REPLACE  1 /* fields = new */
#define PGPIPE_RECORDS_METADATA 2 /* or-ed in: update metadata instead of fields */
/* Update a record; updated_at is set by the trigger. PGPIPE_DONE when absent. */
int pgpipe_records_update(pgpipe_records *h, const char *id, const char *json, int flags);
/* Delete a record. PGPIPE_DONE when absent. */
int pgpipe_records_delete(pgpipe_records *h, const char *id);

/* Insert n records (each a JSON object text) with one COPY FROM STDIN. All
** or nothing: every document is checked before anything is sent, and a bad
** one fails the call with PGPIPE_PARSE naming its index, line and column.
** ids_out (may be NULL) receives the ids, generated from /dev/urandom
** (version 4 UUIDs) so they can be returned; otherwise the server generates
** them. Inside a transaction (begin) the COPY joins it. After 1000 records
** or more, the GIN indexes' pending lists are merged (gin_clean_pending_list)
** so that searches right after a bulk load use the indexes. */
int pgpipe_records_create_batch(pgpipe_records *h, const char *const *docs, size_t n,
                                char (*ids_out)[37]);

/* ---- filters ---- */

/* Operators. Comparisons take the stored value's text (a string's contents,
** a number as written, true/false) and compare numerically when both it and
** the filter value are numbers (a JSON number, or a string that is a decimal
** number such as "10" or "2.5e3"), so 10 > 9 and "10" > "9"; otherwise as
** text in byte order (COLLATE "C"). A missing field matches no comparison
** except NE. */
#define PGPIPE_RECORDS_EQ       1
#define PGPIPE_RECORDS_NE       2  /* also matches records without the field */
#define PGPIPE_RECORDS_LT       3
#define PGPIPE_RECORDS_LE       4
#define PGPIPE_RECORDS_GT       5
#define PGPIPE_RECORDS_GE       6
#define PGPIPE_RECORDS_IN       7  /* value: a JSON array; EQ against any element */
#define PGPIPE_RECORDS_EXISTS   8  /* the path is present (even as null); no value */
#define PGPIPE_RECORDS_CONTAINS 9  /* JSONB containment @> of the value at the path */
#define PGPIPE_RECORDS_LIKE     10 /* SQL LIKE on the text ( % and _ ); value a string */
#define PGPIPE_RECORDS_ILIKE    11 /* case-insensitive LIKE */

/* A filter is a list of conditions combined with AND.
**
** Paths: keys separated by '.'; a key that is not a plain word (letters,
** digits, '_', '-', '$') is written as a JSON string: address.city,
** "first.name", address."zip code". A key of digits also indexes an array
** (tags.0). A path starting with @metadata addresses the metadata column
** (@metadata.version); @fields is the fields object itself (@fields.a = a).
**
** Text form (pgpipe_records_filter_open; the shell's .records find):
**     name = "Alice" and age > 30 and tags contains ["x"]
**     address.city in ["Paris", "Lyon"] and email exists and name like "A%"
**     @metadata.version >= 2 and "first.name" != "Bob"
** Operators: = == != <> < <= > >= (or eq ne lt le gt ge), in, exists,
** contains, like, ilike; words are case-insensitive; conditions are joined by
** "and" (or &&). Values are JSON: strings in double quotes, numbers,
** true/false/null, arrays and objects. Bad text is PGPIPE_PARSE with the
** column (1-based, in characters) on the filter handle: source "<filter>". */

/* Open a filter holding the conditions of text in the form above, or none
** when text is NULL (add them with pgpipe_records_filter_add). *out is set
** even on failure (read pgpipe_errinfo(*out), then close it). */
int pgpipe_records_filter_open(pgpipe_records_filter **out, const char *text);
/* Add one condition: path in the syntax above, value the JSON text of the
** value (NULL for EXISTS). PGPIPE_PARSE/MISUSE on a bad path or value. */
int pgpipe_records_filter_add(pgpipe_records_filter *f, const char *path, int op,
                              const char *value);
/* The same with the path given as raw keys (no quoting: any byte but NUL);
** metadata != 0 addresses the metadata column. */
int pgpipe_records_filter_add_keys(pgpipe_records_filter *f, int metadata,
                                   const char *const *keys, int nkeys, int op,
                                   const char *value);
int pgpipe_records_filter_count(const pgpipe_records_filter *f);
void pgpipe_records_filter_close(pgpipe_records_filter *f);

/* ---- search ---- */

typedef struct pgpipe_records_find_options {
    const pgpipe_records_filter *filter; /* NULL: where, else every record */
    const char *where;      /* filter text (parsed when filter is NULL) */
    const char *sort;       /* a path (JSONB order: numbers numerically, strings
                               by text), or @id, @created_at, @updated_at; a
                               leading '-' sorts descending. NULL: by created_at,
                               id. Ties are broken by id. */
    long long limit;        /* < 0: no limit (default -1) */
    long long offset;       /* default 0 */
} pgpipe_records_find_options;

void pgpipe_records_find_options_init(pgpipe_records_find_options *o);

/* Run a search: *out receives a cursor over the results, to close with
** pgpipe_records_cursor_close; it is NULL on failure (the error is on h). The results are
** fetched whole; use limit and offset to page, or export for everything. */
int pgpipe_records_find(pgpipe_records *h, const pgpipe_records_find_options *o,
                        pgpipe_records_cursor **out);
/* The next document (valid until the cursor is closed): PGPIPE_ROW or
** PGPIPE_DONE. len may be NULL. */
int pgpipe_records_cursor_next(pgpipe_records_cursor *c, const char **json, size_t *len);
/* Documents in the result. */
long long pgpipe_records_cursor_count(const pgpipe_records_cursor *c);
void pgpipe_records_cursor_close(pgpipe_records_cursor *c);

/* Count the records matching f (NULL: all). */
int pgpipe_records_count(pgpipe_records *h, const pgpipe_records_filter *f, long long *n);
/* EXPLAIN of the search o would run, with its parameters (one line of the
** plan per line), allocated; free it with pgpipe_free. */
int pgpipe_records_explain(pgpipe_records *h, const pgpipe_records_find_options *o, char **plan);

/* ---- transactions ---- */

/* begin pins one pooled connection to the handle until commit or rollback:
** every call on the handle in between runs in that transaction. commit of a
** transaction in which a statement failed rolls back and returns PGPIPE_DB.
** begin inside a transaction is PGPIPE_MISUSE. */
int pgpipe_records_begin(pgpipe_records *h);
int pgpipe_records_commit(pgpipe_records *h);
int pgpipe_records_rollback(pgpipe_records *h);
/* 1 while a transaction is open. */
int pgpipe_records_in_transaction(const pgpipe_records *h);

/* Run fn(h, ud) in a transaction: commit when it returns PGPIPE_OK, roll back
** otherwise (its code and the handle's error are kept). Returns fn's code, or
** the error of begin or commit. */
typedef int (*pgpipe_records_tx_fn)(pgpipe_records *h, void *ud);
int pgpipe_records_transaction(pgpipe_records *h, pgpipe_records_tx_fn fn, void *ud);

/* ---- import and export ---- */

/* Progress and bad records of an import. */
typedef struct pgpipe_records_import_options {
    int stop_on_error;   /* 0 (default): a bad record (not JSON, not an
                            object, \u0000 in a string) is skipped, counted and
                            reported; 1: the first one stops the import and
                            nothing of it is kept */
    int documents;       /* 1: each record is a document as export writes it:
                            {"id"?, "fields", "metadata"?, "created_at"?,
                            "updated_at"?}; 0 (default): each record is the
                            fields object */
    /* called for each bad record (error with file, line, column); return
    ** non-zero to stop the import (then nothing of it is kept). May be NULL:
    ** bad records are then logged (warn, component "records"). */
    int (*on_error)(void *ud, const pgpipe_error *err);
    void *ud;
} pgpipe_records_import_options;

typedef struct pgpipe_records_import_summary {
    long long records;   /* records read (imported + skipped) */
    long long imported;
    long long skipped;
    pgpipe_error first_error; /* the first bad record, code PGPIPE_OK if none */
} pgpipe_records_import_summary;

void pgpipe_records_import_options_init(pgpipe_records_import_options *o);
/* Import a file ("-" = stdin) holding a JSON array of objects or NDJSON (one
** object per line), told apart by the first non-blank byte ('[' = array).
** Streamed: memory is bounded by the longest record. One COPY in one
** transaction (joining the handle's transaction if one is open): a database
** error or a stop keeps nothing. Bad records are reported with
** file:line:column. opts and summary may be NULL. */
int pgpipe_records_import(pgpipe_records *h, const char *path,
                          const pgpipe_records_import_options *opts,
                          pgpipe_records_import_summary *summary);
/* Write every record (matching f, NULL = all; ordered by created_at, id) to
** path ("-" = stdout) as NDJSON: one document per line, or only its fields
** object with fields_only (what import then reads back as records).
** Streamed with COPY TO STDOUT. *n (may be NULL) receives the count. */
int pgpipe_records_export(pgpipe_records *h, const char *path, const pgpipe_records_filter *f,
                          int fields_only, long long *n);
