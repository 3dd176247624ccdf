/* ==== Text ==== */

/* Quoting for the two languages pgpipe writes, JSON and SQL, and SHA-256 (the
** migration checksums). No handle: plain functions over the caller's buffers.
**
** Thread safety: no state; every function may be called from any thread. */

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
