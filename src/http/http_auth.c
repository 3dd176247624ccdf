/*
** Who may write: tokens, HMAC-SHA256 signatures, trusted proxies.
** (Skeleton: every request is allowed; the real checks land next.)
*/

#include "pp_http.h"

#ifndef PGPIPE_OMIT_HTTP

struct pp_http_auth {
    pgpipe_http_source defaults;
};

PGPIPE_PRIVATE int pp_http_auth_open(pp_http_auth **out, const pgpipe_http_options *o,
                                     PGconn *conn, pgpipe_error *err)
{
    (void)o;
    (void)conn;
    *out = pp_calloc(1, sizeof **out);
    if (!*out)
        return pp_err_nomem(err);
    (*out)->defaults.window_hours = 72;
    (*out)->defaults.tolerance_s = 300;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_http_auth_reload(pp_http_auth *a, PGconn *conn, pgpipe_error *err)
{
    (void)a;
    (void)conn;
    (void)err;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_http_auth_check(pp_http_auth *a, const char *source,
                                      const pp_http_request *rq, time_t now,
                                      pp_http_reply *deny)
{
    (void)a;
    (void)source;
    (void)rq;
    (void)now;
    (void)deny;
    return 0;
}

PGPIPE_PRIVATE const pgpipe_http_source *pp_http_auth_source(const pp_http_auth *a,
                                                             const char *source)
{
    (void)source;
    return &a->defaults;
}

PGPIPE_PRIVATE int pp_http_auth_has_tokens(const pp_http_auth *a)
{
    (void)a;
    return 0;
}

PGPIPE_PRIVATE int pp_http_auth_trusted_proxy(const pp_http_auth *a, const char *addr)
{
    (void)a;
    (void)addr;
    return 0;
}

PGPIPE_PRIVATE void pp_http_auth_close(pp_http_auth *a)
{
    pp_free(a);
}

PGPIPE_PRIVATE void pp_hmac_sha256(const void *key, size_t key_len, const void *msg,
                                   size_t msg_len, unsigned char out[32])
{
    (void)key;
    (void)key_len;
    (void)msg;
    (void)msg_len;
    memset(out, 0, 32);
}

PGPIPE_PRIVATE int pp_ct_equal(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(x[i] ^ y[i]);
    return d == 0;
}

#endif /* PGPIPE_OMIT_HTTP */
