/* ==== HTTP tokens ==== */

/* The bearer tokens of the HTTP ingest server, per source, in
** pgpipe.http_tokens (the built-in schema). A sender presents one as
** "Authorization: Bearer TOKEN". A token is "pgp_" and 43 URL-safe base64
** characters (32 random bytes); only its SHA-256 is stored, so it is shown
** once, by pgpipe_http_token_add, and never again. A token of source "*" is
** good for every source. A running server reads the tokens at open and
** again on pgpipe_http_reload (SIGHUP in the shell). With require_tokens
** auto (-1), a source that has a token, live or revoked, needs one: revoking
** the last token of a source does not open it up.
**
** No handle: every function works on a PGconn and reports to its last
** argument, pgpipe_error *err (may be NULL). Thread safety: no state; any
** number of threads, each on its own PGconn. */

/* Bytes a token takes with its NUL. */
#define PGPIPE_HTTP_TOKEN_SIZE 48

/* Make a token for source (label: a note for the listing, may be NULL),
** store its hash and write the token to token_out (size >=
** PGPIPE_HTTP_TOKEN_SIZE, else PGPIPE_MISUSE). Its row is the one whose
** token_sha256 is pgpipe_sha256_hex(token). PGPIPE_IO when no random bytes
** can be read. */
int pgpipe_http_token_add(PGconn *conn, const char *source, const char *label,
                          char *token_out, size_t size, pgpipe_error *err);
/* The tokens of source (NULL = all), oldest first: columns id, source,
** label, hint (the last 4 characters, "...abcd"), created_at, revoked_at.
** Never the token nor its hash. The caller PQclears *out. */
int pgpipe_http_token_list(PGconn *conn, const char *source, PGresult **out,
                           pgpipe_error *err);
/* Revoke token id of source (its row stays, with revoked_at). A running
** server refuses it after its next reload. An id that is not a live token
** of source is PGPIPE_DONE with a message naming it. */
int pgpipe_http_token_revoke(PGconn *conn, const char *source, long long id,
                             pgpipe_error *err);
