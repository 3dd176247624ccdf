/* ==== JSON: documents and NDJSON streams ==== */

/* Parses JSON into a read-only tree and reads NDJSON streams record by
** record: the loader, the claimer and the record store read every payload
** through it. Handles: pgpipe_json_doc (a document, reused across parses,
** with its options set by pgpipe_json_doc_set_*), pgpipe_ndjson (a streaming
** reader holding its own document).
**
** Thread safety: a document is parsed by one thread at a time; once parsed
** it may be read by any number of threads at once (the accessors only
** read), until the next parse or close. An NDJSON reader is used by one
** thread at a time. pgpipe_json_validate and the functions on values keep
** no state of their own. */

/* ---- JSON (RFC 8259) --------------------------------------------------- */

/*
** A parsed document is a read-only tree held in one arena owned by a
** pgpipe_json_doc handle. Parsing again with the same handle reuses its memory,
** so a stream of records allocates nothing per record once the arena has grown
** to the largest record. One pgpipe_json_doc_close() releases everything.
**
** Lifetime rule: strings without escapes and all numbers point into the input
** buffer (zero copy), so the input must outlive the document, unless the copy
** option is on (pgpipe_json_doc_set_copy), in which case the document keeps its
** own copy of the input. Values returned by the accessors are valid until the
** next parse with the same handle or its close.
**
** Lengths are explicit everywhere: strings may hold NUL bytes ("\u0000") and
** are not NUL-terminated. Strings are UTF-8, always valid.
**
** Input policy: exactly RFC 8259. One value with optional whitespace (space,
** tab, CR, LF) around it; no comments, no trailing commas, no NaN/Infinity, no
** leading zeros. A UTF-8 byte order mark is rejected by the document parser
** (RFC 8259 section 8.1: implementations "MUST NOT add" one) with a message
** that says so; the NDJSON reader skips a BOM at the start of its stream.
** Duplicate object keys are kept in document order; lookups find the first.
** Nesting deeper than the maximum depth (default 512, at most
** PGPIPE_JSON_DEPTH_LIMIT) is a PGPIPE_LIMIT error; parsing never recurses on
** the input, so no input can overflow the stack.
**
** Errors (PGPIPE_PARSE or PGPIPE_LIMIT) carry the byte offset, line and column
** (1-based; the column counts characters) of the first problem and the source
** name set by the caller (default "<buffer>"), e.g.
**   expected ',' or '}' after object member at line 3, column 17
*/

#define PGPIPE_JSON_DEPTH_DEFAULT 512
#define PGPIPE_JSON_DEPTH_LIMIT   65536

/* Value types (pgpipe_json_type). */
#define PGPIPE_JSON_INVALID 0   /* NULL value pointer */
#define PGPIPE_JSON_NULL    1
#define PGPIPE_JSON_BOOL    2
#define PGPIPE_JSON_NUMBER  3
#define PGPIPE_JSON_STRING  4
#define PGPIPE_JSON_ARRAY   5
#define PGPIPE_JSON_OBJECT  6

/* A value inside a document (a node of its flat tree). */
typedef struct pgpipe_json_val pgpipe_json_val;

/* Create a document handle (empty until parsed). */
int pgpipe_json_doc_open(pgpipe_json_doc **out);
void pgpipe_json_doc_close(pgpipe_json_doc *doc);
/* Options, kept across parses. max_depth in 1..PGPIPE_JSON_DEPTH_LIMIT;
** source is the name used in error messages (copied; NULL = "<buffer>");
** copy != 0 makes the document keep its own copy of each input. */
int pgpipe_json_doc_set_max_depth(pgpipe_json_doc *doc, int max_depth);
int pgpipe_json_doc_set_source(pgpipe_json_doc *doc, const char *source);
int pgpipe_json_doc_set_copy(pgpipe_json_doc *doc, int copy);

/* Parse len bytes into doc, replacing what it held. PGPIPE_OK, PGPIPE_PARSE,
** PGPIPE_LIMIT (too deep) or PGPIPE_NOMEM; the error is on the handle. */
int pgpipe_json_parse(pgpipe_json_doc *doc, const char *buf, size_t len);
/* The root value of the last successful parse (NULL otherwise). */
const pgpipe_json_val *pgpipe_json_root(const pgpipe_json_doc *doc);
/* Bytes of memory the document holds (nodes, decoded strings, copy). */
size_t pgpipe_json_doc_memory(const pgpipe_json_doc *doc);

/* Check that buf is one valid JSON text, allocating nothing. err may be NULL;
** else it receives the error (source "<buffer>"). Uses the default depth. */
int pgpipe_json_validate(const char *buf, size_t len, pgpipe_error *err);
/* The same with the handle's options (depth, source); error on the handle.
** Does not touch the handle's current document. */
int pgpipe_json_doc_validate(pgpipe_json_doc *doc, const char *buf, size_t len);

/* ---- reading values (all accept NULL and then fail or return 0/NULL) ---- */

int pgpipe_json_type(const pgpipe_json_val *v);
/* "null", "bool", "number", "string", "array", "object" or "invalid". */
const char *pgpipe_json_type_name(int type);
/* Bool value: 1 for true, 0 for false and for anything that is not a bool. */
int pgpipe_json_get_bool(const pgpipe_json_val *v);
/* String bytes (valid UTF-8, not NUL-terminated), length in *len. NULL when v
** is not a string. Works on object keys too. */
const char *pgpipe_json_get_str(const pgpipe_json_val *v, size_t *len);
/* The number exactly as written in the input. NULL when not a number. */
const char *pgpipe_json_number_text(const pgpipe_json_val *v, size_t *len);
/* Number to int64: PGPIPE_OK; PGPIPE_LIMIT when out of range (*out clamped);
** PGPIPE_ERROR when the text has a fraction or exponent; PGPIPE_MISUSE when
** v is not a number. */
int pgpipe_json_get_int64(const pgpipe_json_val *v, int64_t *out);
/* Number to double, correctly rounded: PGPIPE_OK (tiny values round to 0 or a
** subnormal); PGPIPE_LIMIT when beyond the double range (*out = +-HUGE_VAL);
** PGPIPE_MISUSE when v is not a number. */
int pgpipe_json_get_double(const pgpipe_json_val *v, double *out);

/* Write d as the shortest JSON number that reads back as exactly d (the one
** closest to d when several are as short), NUL-terminated, into buf, which
** holds at least PGPIPE_JSON_DOUBLE_BUF bytes. Plain notation for
** 1e-4 <= |d| < 1e17 ("0.1", "-2.5", "123456789", "0.0001"), else d.ddde-X
** or d.dddeX ("1e-7", "1.7976931348623157e308"); -0.0 is "-0". Returns the
** length (at most 24), or 0 with buf = "" when d is infinite or NaN, which
** JSON cannot hold (and 0 when buf is NULL). */
#define PGPIPE_JSON_DOUBLE_BUF 32
int pgpipe_json_write_double(char *buf, double d);

/* Elements of an array or members of an object; 0 for other values. */
size_t pgpipe_json_len(const pgpipe_json_val *v);
/* i-th element of an array (O(i)), NULL when out of range. */
const pgpipe_json_val *pgpipe_json_arr_get(const pgpipe_json_val *arr, size_t i);
/* Value of the first member named key (keylen bytes), NULL when absent. */
const pgpipe_json_val *pgpipe_json_obj_get(const pgpipe_json_val *obj, const char *key,
                                           size_t keylen);
/* Path lookup: members by name separated by '.', elements by [N]; a name
** holding '.', '[' or ']' can be written ["name"] (with \" and \\ escapes).
** "a.b[2].c", "[0].id", "user[\"first.name\"]". "" is v itself. NULL when
** any step is missing or the path is malformed. */
const pgpipe_json_val *pgpipe_json_path(const pgpipe_json_val *v, const char *path);

/* Iteration in document order over an array or an object. */
typedef struct pgpipe_json_iter {
    const pgpipe_json_val *next;
    size_t left;
    int object;
} pgpipe_json_iter;
/* PGPIPE_OK, or PGPIPE_MISUSE when v is not an array or object. */
int pgpipe_json_iter_init(pgpipe_json_iter *it, const pgpipe_json_val *v);
/* The next element (arrays) or member value (objects, *key = the key as a
** string value; key may be NULL); NULL at the end. */
const pgpipe_json_val *pgpipe_json_iter_next(pgpipe_json_iter *it, const pgpipe_json_val **key);

/* Deep equality: same types, same strings, arrays element by element, objects
** member by member in order (same keys, same values). Numbers are equal when
** their text is the same or when their values are (as int64 when both are
** integers in range, else as finite doubles). Returns 1 or 0. */
int pgpipe_json_equal(const pgpipe_json_val *a, const pgpipe_json_val *b);

/* Serialize v compactly (no whitespace; numbers as written; strings escaped
** as needed, non-ASCII kept as UTF-8). The text is allocated with the pgpipe
** allocator and NUL-terminated; free it with pgpipe_free. */
int pgpipe_json_write(const pgpipe_json_val *v, char **out, size_t *len);
/* The same into a caller buffer of cap bytes (NUL-terminated when it fits).
** *len receives the text length; PGPIPE_LIMIT when cap < *len + 1. */
int pgpipe_json_write_to(const pgpipe_json_val *v, char *buf, size_t cap, size_t *len);

/* ---- NDJSON (one JSON text per line) ------------------------------------ */

/*
** Pull-style streaming reader: feed chunks of any size (a record may straddle
** chunks), then call pgpipe_ndjson_next until it returns PGPIPE_DONE; feed the
** next chunk; after the last one call pgpipe_ndjson_finish and drain again.
**   PGPIPE_ROW    *root is the record's root value, *line_no its line
**   PGPIPE_PARSE  (or PGPIPE_LIMIT) the line is bad: the error on the handle
**                 names it (line, column, stream offset); call next again,
**                 the stream goes on
**   PGPIPE_DONE   no complete line is buffered (feed more, or the end)
** Lines end with LF or CRLF; blank lines (only whitespace) are skipped; a UTF-8
** BOM at the start of the stream is skipped; a last line without a newline
** counts once finish was called. The chunk passed to feed is read in place, so
** it must stay valid until next returns PGPIPE_DONE; only a record that
** straddles chunks is copied, so memory is bounded by the longest line. A
** returned value is valid until the next call of next, feed or close.
*/

int pgpipe_ndjson_open(pgpipe_ndjson **out);
void pgpipe_ndjson_close(pgpipe_ndjson *r);
int pgpipe_ndjson_set_source(pgpipe_ndjson *r, const char *source);
int pgpipe_ndjson_set_max_depth(pgpipe_ndjson *r, int max_depth);
int pgpipe_ndjson_feed(pgpipe_ndjson *r, const char *chunk, size_t len);
int pgpipe_ndjson_finish(pgpipe_ndjson *r);
int pgpipe_ndjson_next(pgpipe_ndjson *r, const pgpipe_json_val **root, long long *line_no);
/* The raw text of the line last returned by next (without its line end),
** also after a parse error, e.g. for a dead-letter queue. */
int pgpipe_ndjson_line(const pgpipe_ndjson *r, const char **text, size_t *len);
/* Records returned and bad lines seen so far. */
long long pgpipe_ndjson_records(const pgpipe_ndjson *r);
long long pgpipe_ndjson_errors(const pgpipe_ndjson *r);
