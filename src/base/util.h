/* ==== Base: version, results, errors, handles, memory, logging ==== */

/* What every other component builds on: result codes, the error record that
** every handle carries, the list of handle types, the allocator, the log
** stream, connection-string masking and the SQL files compiled into the
** library. No handle of its own.
**
** Thread safety: every function here may be called from any thread, except
** pgpipe_config_allocator (call it once, before anything else). The log
** configuration is guarded by a lock.
** Reading a handle's error (pgpipe_errmsg...) follows the handle's rule: it
** is the error of the last call on that handle. */

/* ---- Library version -------------------------------------------------- */

/* The PGPIPE_VERSION this library was compiled from ("X.Y.Z"). */
const char *pgpipe_libversion(void);
/* PGPIPE_VERSION_NUMBER of the compiled library. */
int pgpipe_libversion_number(void);

/* ---- Result codes ----------------------------------------------------- */

#define PGPIPE_OK        0   /* success */
#define PGPIPE_ERROR     1   /* generic error; see the handle's message */
#define PGPIPE_NOMEM     2   /* an allocation failed */
#define PGPIPE_MISUSE    3   /* the API was called wrongly (NULL handle, bad option) */
#define PGPIPE_PARSE     4   /* input is malformed; source, line and column are set */
#define PGPIPE_DB        5   /* the database raised an error; SQLSTATE is set */
#define PGPIPE_BUSY      6   /* a timeout or lock wait expired; try again later */
#define PGPIPE_IO        7   /* reading or writing a file or socket failed */
#define PGPIPE_LIMIT     8   /* a configured limit (depth, size) was exceeded */
#define PGPIPE_ROW     100   /* a stepping function produced an item */
#define PGPIPE_DONE    101   /* a stepping function has nothing more */

/* A short English name for a result code ("PGPIPE_PARSE" -> "parse error"). */
const char *pgpipe_errstr(int code);

/* ---- Errors ----------------------------------------------------------- */

/* The last error of a handle. Fields that do not apply are empty or zero:
** sqlstate only when the database raised the error; source/line/column/offset
** only for errors in input (line and column are 1-based, offset 0-based). */
typedef struct pgpipe_error {
    int code;                 /* PGPIPE_* result code; PGPIPE_OK when no error */
    char sqlstate[6];         /* five characters and NUL, or "" */
    char message[1024];       /* human readable, never contains a password */
    char source[256];         /* file name, "<stdin>", "<buffer>" or "" */
    long long line;
    long long column;
    long long offset;
} pgpipe_error;

/* Every pgpipe handle (pool, loader, document, reader, ...) carries the error
** of the last call on it; these read it. A NULL handle reads as an
** out-of-memory error, since an open function leaves *out NULL only when
** memory ran out. */
const pgpipe_error *pgpipe_errinfo(const void *handle);
int pgpipe_errcode(const void *handle);
const char *pgpipe_errmsg(const void *handle);
const char *pgpipe_errsqlstate(const void *handle);

/* Clear an error structure. */
void pgpipe_error_clear(pgpipe_error *err);
/* Format an error as "source:line:column: message [SQLSTATE]" (the parts that
** apply) into buf. Returns the length it needed, like snprintf. */
int pgpipe_error_format(const pgpipe_error *err, char *buf, size_t size);

/* ---- Handles ---------------------------------------------------------- */

/* Every handle type, with the functions that make and release it (see the
** conventions at the top). Declared here so that any section can name any
** handle. */
typedef struct pgpipe_json_doc pgpipe_json_doc;   /* pgpipe_json_doc_open / _close */
typedef struct pgpipe_ndjson pgpipe_ndjson;       /* pgpipe_ndjson_open / _close */
typedef struct pgpipe_csv pgpipe_csv;             /* pgpipe_csv_open_fd/_file/_feed / _close */
typedef struct pgpipe_pool pgpipe_pool;           /* pgpipe_pool_open / _close */
typedef struct pgpipe_conn pgpipe_conn;           /* pgpipe_pool_acquire / pgpipe_pool_release */
typedef struct pgpipe_pipeline pgpipe_pipeline;   /* pgpipe_pipeline_open / _close */
typedef struct pgpipe_sql_split pgpipe_sql_split; /* pgpipe_sql_split_open / _close */
typedef struct pgpipe_migrator pgpipe_migrator;   /* pgpipe_migrator_open / _close */
typedef struct pgpipe_loader pgpipe_loader;       /* pgpipe_loader_open / _close */
typedef struct pgpipe_claimer pgpipe_claimer;     /* pgpipe_claimer_open / _close */
typedef struct pgpipe_batch pgpipe_batch;         /* pgpipe_claim_next / _complete, _release */
typedef struct pgpipe_workers pgpipe_workers;     /* pgpipe_workers_open / _close */
typedef struct pgpipe_records pgpipe_records;     /* pgpipe_records_open / _close */
typedef struct pgpipe_records_filter pgpipe_records_filter; /* ..._filter_open / _close */
typedef struct pgpipe_records_cursor pgpipe_records_cursor; /* pgpipe_records_find /
                                                               ..._cursor_close */
typedef struct pgpipe_http pgpipe_http;           /* pgpipe_http_open / _close */
typedef struct pgpipe_cdc pgpipe_cdc;             /* pgpipe_cdc_open / _close */

/* An options struct that two sections use (migrations and the built-in
** schema); defined with the migrations. */
typedef struct pgpipe_migrate_options pgpipe_migrate_options;

/* ---- Memory ----------------------------------------------------------- */

/* Every allocation of the library goes through these three functions.
** realloc(ud, NULL, n) must behave as malloc; free(ud, NULL) must be a no-op. */
typedef struct pgpipe_allocator {
    void *(*malloc_fn)(void *ud, size_t size);
    void *(*realloc_fn)(void *ud, void *ptr, size_t size);
    void (*free_fn)(void *ud, void *ptr);
    void *ud;
} pgpipe_allocator;

/* Replace the allocator (NULL restores malloc/realloc/free). Call it before any
** other pgpipe function allocates; memory must be freed by the allocator that
** allocated it. Not thread-safe. */
int pgpipe_config_allocator(const pgpipe_allocator *alloc);

/* Release a string or buffer the library allocated and handed over
** (pgpipe_json_write, pgpipe_records_get, pgpipe_records_explain). NULL is a
** no-op. */
void pgpipe_free(void *p);

/* ---- Logging ---------------------------------------------------------- */

#define PGPIPE_LOG_DEBUG 10
#define PGPIPE_LOG_INFO  20
#define PGPIPE_LOG_WARN  30
#define PGPIPE_LOG_ERROR 40
#define PGPIPE_LOG_OFF   100

/* One structured field of a log event. */
typedef struct pgpipe_log_field {
    const char *key;
    const char *value;
} pgpipe_log_field;

/* A log event: level, component ("pool", "loader", ...), message, fields.
** Passwords found in the message or in field values are already masked. */
typedef void (*pgpipe_log_fn)(void *ud, int level, const char *component,
                              const char *message,
                              const pgpipe_log_field *fields, int nfields);

/* Install a log callback (NULL restores the default writer). The default
** writer prints one line per event to stderr, logfmt or JSON according to
** PGPIPE_LOG_FORMAT=text|json, for events at or above the level given by
** PGPIPE_LOG=debug|info|warn|error|off (default warn). */
int pgpipe_config_log(pgpipe_log_fn fn, void *ud);
/* Override the minimum level (PGPIPE_LOG_*); -1 re-reads PGPIPE_LOG. */
int pgpipe_log_set_level(int level);
int pgpipe_log_get_level(void);
/* Emit an event through the installed callback (used by the library and
** available to programs that want their lines in the same stream). */
void pgpipe_log(int level, const char *component, const char *message,
                const pgpipe_log_field *fields, int nfields);
/* Format one event the way the default writer does (format 0 = logfmt,
** 1 = JSON), without the trailing newline. Returns the length needed. */
int pgpipe_log_format_line(char *buf, size_t size, int json, int level,
                           const char *component, const char *message,
                           const pgpipe_log_field *fields, int nfields);

/* ---- Connection strings ----------------------------------------------- */

/* Copy text to buf with every password replaced by "********". Works on a
** conninfo in key=value form (password=..., quoted or not), on a URI
** (postgresql://user:SECRET@host, ?password=...) and on free text that holds
** either (error messages, log lines). Always NUL-terminates when size > 0;
** returns the length of the whole masked text, like snprintf. */
size_t pgpipe_conninfo_mask(const char *text, char *buf, size_t size);

/* ---- Clocks ----------------------------------------------------------- */

/* Sleep for ms milliseconds (restarts after signals). */
void pgpipe_sleep_ms(int ms);
/* Monotonic clock in microseconds. */
int64_t pgpipe_now_us(void);

/* ---- Embedded SQL ----------------------------------------------------- */

/* The SQL files of the sql/ folder are compiled into the library. Returns the
** text of the file at that path ("schema/V0001__core.sql"), NULL if absent.
** The string is built on first use and lives until the process ends. */
const char *pgpipe_sql_file(const char *path);
/* Number of embedded files and the path of the i-th, in path order. */
int pgpipe_sql_file_count(void);
const char *pgpipe_sql_file_path(int i);
