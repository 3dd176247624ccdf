/* ==== Text ==== */

/* What pgpipe writes, written one way: quoting for JSON and SQL, values and
** rows in PostgreSQL's COPY text format, and SHA-256 (the migration
** checksums). No handle: plain functions over the caller's buffers.
**
** Thread safety: no state; every function may be called from any thread,
** each pgpipe_copy_buf by one thread at a time. */

/* The quoting functions write like snprintf: at most cap bytes including a NUL (dst may be
** NULL when cap is 0) and return the full length without the NUL, so a
** result >= cap means the output was cut; call with cap 0 to size a buffer. */

/* s[0..n) as a JSON string literal with its quotes: '"', '\' and control
** bytes escaped (\b \f \n \r \t, the rest \u00XX), other bytes as they are. */
size_t pgpipe_quote_json(char *dst, size_t cap, const char *s, size_t n);
/* name as a quoted SQL identifier ("" for each "); with qualified set, a
** name with a dot is schema.name, split at its first dot, each part quoted. */
size_t pgpipe_quote_ident(char *dst, size_t cap, const char *name, int qualified);

/* SHA-256 of data as 64 lowercase hex digits and a NUL (out has 65 bytes). */
void pgpipe_sha256_hex(const void *data, size_t len, char out[65]);

/* ---- COPY text format ---------------------------------------------------- */

/* A growable output buffer for the COPY text writers, owned by the caller.
** Start from all zeros; data is allocated with the pgpipe allocator;
** pgpipe_copy_buf_clear frees it and zeroes the buffer for reuse. */
typedef struct pgpipe_copy_buf {
    char *data;
    size_t len;
    size_t cap;
} pgpipe_copy_buf;

void pgpipe_copy_buf_clear(pgpipe_copy_buf *b);

/* Append one value in PostgreSQL COPY text format (default delimiter tab):
** backslash, tab, newline and carriage return are escaped; data == NULL writes
** \N (NULL). No delimiter or line end is added. */
int pgpipe_copy_text_field(pgpipe_copy_buf *out, const char *data, size_t len);
/* Append a whole row: n values separated by tabs, ended by a newline.
** values[i] == NULL is NULL; lens may be NULL for NUL-terminated values. */
int pgpipe_copy_text_row(pgpipe_copy_buf *out, int n, const char *const *values,
                         const size_t *lens);
