/*
** Who may write: bearer tokens (stored hashed), HMAC-SHA256 signatures in
** the three forms webhook senders use, trusted proxies.
**
** Answers. No credentials, a malformed one, or a signed timestamp outside
** the tolerance: 401 (the sender must send or make a fresh one). A
** well-formed token or signature that is not valid for the source (unknown,
** revoked, another source's token; a signature over other bytes or with
** another secret): 403. RFC 9110 (15.5.4) has 403 for "credentials
** provided but insufficient"; RFC 6750 would answer an unknown token 401
** invalid_token: the JSON error's code carries its names (invalid_request,
** invalid_token) so a client can tell the cases apart either way. Nothing is
** written in any of these cases: the check runs before ingest sees the body.
**
** Every compare of a secret-derived value is constant-time (pp_ct_equal),
** over every candidate (all tokens, all signatures of a header), so timing
** tells which one matched no more than whether one did.
*/

#include "pp_http.h"

#ifndef PGPIPE_OMIT_HTTP
#include <arpa/inet.h>
#include <stdio.h>
#include <strings.h>

/* ==== HMAC-SHA256 (RFC 2104) ============================================== */

typedef struct hmac_ctx {
    pp_sha256 inner, outer;
} hmac_ctx;

static void hmac_init(hmac_ctx *h, const void *key, size_t key_len)
{
    unsigned char k[64], pad[64];
    memset(k, 0, sizeof k);
    if (key_len > sizeof k) {
        pp_sha256 s;
        pp_sha256_init(&s);
        pp_sha256_update(&s, key, key_len);
        pp_sha256_final(&s, k);
    } else if (key_len) {
        memcpy(k, key, key_len);
    }
    for (int i = 0; i < 64; i++)
        pad[i] = (unsigned char)(k[i] ^ 0x36);
    pp_sha256_init(&h->inner);
    pp_sha256_update(&h->inner, pad, sizeof pad);
    for (int i = 0; i < 64; i++)
        pad[i] = (unsigned char)(k[i] ^ 0x5c);
    pp_sha256_init(&h->outer);
    pp_sha256_update(&h->outer, pad, sizeof pad);
}

static void hmac_update(hmac_ctx *h, const void *data, size_t n)
{
    pp_sha256_update(&h->inner, data, n);
}

static void hmac_final(hmac_ctx *h, unsigned char out[32])
{
    unsigned char d[32];
    pp_sha256_final(&h->inner, d);
    pp_sha256_update(&h->outer, d, sizeof d);
    pp_sha256_final(&h->outer, out);
}

PGPIPE_PRIVATE void pp_hmac_sha256(const void *key, size_t key_len, const void *msg,
                                   size_t msg_len, unsigned char out[32])
{
    hmac_ctx h;
    hmac_init(&h, key, key_len);
    hmac_update(&h, msg, msg_len);
    hmac_final(&h, out);
}

PGPIPE_PRIVATE int pp_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = 0;
    for (size_t i = 0; i < n; i++)
        d |= (unsigned char)(x[i] ^ y[i]);
    return d == 0;
}

/* ==== The handle =========================================================== */

typedef struct auth_source {
    pgpipe_http_source s;   /* strings owned */
    unsigned char *key;     /* the HMAC key: the secret's bytes (Standard
                               Webhooks: the base64 after "whsec_", decoded) */
    size_t key_len;
} auth_source;

/* Revoked tokens are kept too: a source that has had tokens keeps needing
** one after its last is revoked (auto mode), rather than opening up. */
typedef struct auth_token {
    char *source;           /* "*" = every source */
    unsigned char hash[32];
    int revoked;
} auth_token;

typedef struct auth_net {
    int v6;
    unsigned char addr[16];
    int bits;
} auth_net;

struct pp_http_auth {
    auth_source *sources;
    int nsources;
    auth_source defaults;   /* an unlisted source when there is no "*" entry */
    int require;            /* options.require_tokens */
    int beyond_loopback;    /* some listen address is not a loopback one */
    int insecure;
    pp_mutex mu;            /* guards tokens: a reload may come from another thread */
    auth_token *tokens;
    int ntokens;
    int nlive;              /* of them not revoked */
    auth_net *proxies;
    int nproxies;
};

static void source_free(auth_source *s)
{
    pp_free((char *)s->s.name);
    if (s->s.secret)
        memset((char *)s->s.secret, 0, strlen(s->s.secret));
    pp_free((char *)s->s.secret);
    pp_free((char *)s->s.event_type_field);
    pp_free((char *)s->s.event_type_header);
    pp_free((char *)s->s.event_type_value);
    pp_free((char *)s->s.idempotency_header);
    pp_free((char *)s->s.idempotency_field);
    if (s->key)
        memset(s->key, 0, s->key_len);
    pp_free(s->key);
    memset(s, 0, sizeof *s);
}

static void tokens_free(auth_token *t, int n)
{
    for (int i = 0; i < n; i++)
        pp_free(t[i].source);
    pp_free(t);
}

PGPIPE_PRIVATE void pp_http_auth_close(pp_http_auth *a)
{
    if (!a)
        return;
    for (int i = 0; i < a->nsources; i++)
        source_free(&a->sources[i]);
    pp_free(a->sources);
    source_free(&a->defaults);
    tokens_free(a->tokens, a->ntokens);
    pp_free(a->proxies);
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_destroy(&a->mu);
#endif
    pp_free(a);
}

/* A copy of s, or NULL for NULL; *bad set when out of memory. */
static char *dup_opt(const char *s, int *bad)
{
    if (!s)
        return NULL;
    char *d = pp_strdup(s);
    if (!d)
        *bad = 1;
    return d;
}

/* dst = src with the fields src leaves unset taken from def (may be NULL),
** then from the built-in defaults; strings copied. */
static int source_fill(auth_source *dst, const pgpipe_http_source *src,
                       const pgpipe_http_source *def, int window_hours, pgpipe_error *err)
{
    int bad = 0;
    const pgpipe_http_source *d = def;
    memset(dst, 0, sizeof *dst);
    dst->s.name = dup_opt(src->name ? src->name : "*", &bad);
    dst->s.signature = src->signature;
    const char *secret = src->secret;
    if (src->signature == PGPIPE_HTTP_SIG_NONE && d && d->signature != PGPIPE_HTTP_SIG_NONE) {
        dst->s.signature = d->signature;
        secret = d->secret;
    }
    dst->s.secret = dup_opt(secret && *secret ? secret : NULL, &bad);
    dst->s.tolerance_s = src->tolerance_s > 0 ? src->tolerance_s
                         : d && d->tolerance_s > 0 ? d->tolerance_s : 300;
    dst->s.window_hours = src->window_hours > 0 ? src->window_hours
                          : d && d->window_hours > 0 ? d->window_hours
                          : window_hours > 0 ? window_hours : 72;
#define PICK(f) dst->s.f = dup_opt(src->f ? src->f : d ? d->f : NULL, &bad)
    PICK(event_type_field);
    PICK(event_type_header);
    PICK(event_type_value);
    PICK(idempotency_header);
    PICK(idempotency_field);
#undef PICK
    if (bad)
        return pp_err_nomem(err);
    const char *name = dst->s.name;
    if (dst->s.signature < PGPIPE_HTTP_SIG_NONE || dst->s.signature > PGPIPE_HTTP_SIG_STANDARD)
        return pp_err(err, PGPIPE_MISUSE, "http source \"%s\": unknown signature kind %d", name,
                      dst->s.signature);
    if (src->tolerance_s < 0)
        return pp_err(err, PGPIPE_MISUSE, "http source \"%s\": tolerance_s %d is negative", name,
                      src->tolerance_s);
    if (dst->s.signature == PGPIPE_HTTP_SIG_NONE)
        return PGPIPE_OK;
    if (!dst->s.secret)
        return pp_err(err, PGPIPE_MISUSE, "http source \"%s\": a signature needs a secret", name);
    const char *sec = dst->s.secret;
    size_t n = strlen(sec);
    if (dst->s.signature == PGPIPE_HTTP_SIG_STANDARD) {
        /* Standard Webhooks: "whsec_" then the key in base64 */
        if (!strncmp(sec, "whsec_", 6))
            sec += 6, n -= 6;
        dst->key = pp_malloc(n + 1);
        if (!dst->key)
            return pp_err_nomem(err);
        long k = pp_base64_decode(dst->key, n + 1, sec, n);
        if (k <= 0)
            return pp_err(err, PGPIPE_MISUSE, "http source \"%s\": the Standard Webhooks secret "
                          "is not \"whsec_\" and base64", name);
        dst->key_len = (size_t)k;
    } else {
        dst->key = pp_malloc(n ? n : 1);
        if (!dst->key)
            return pp_err_nomem(err);
        memcpy(dst->key, sec, n);
        dst->key_len = n;
    }
    return PGPIPE_OK;
}

/* Is host (text, brackets removed) a loopback name or address? */
static int host_is_loopback(const char *host)
{
    unsigned char b[16];
    if (!strcasecmp(host, "localhost"))
        return 1;
    if (inet_pton(AF_INET, host, b) == 1)
        return b[0] == 127;
    if (inet_pton(AF_INET6, host, b) == 1) {
        static const unsigned char one[16] = { [15] = 1 };
        static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
        return !memcmp(b, one, 16) || (!memcmp(b, mapped, 12) && b[12] == 127);
    }
    return 0;
}

/* Does listen ("HOST:PORT[,...]") name an address beyond loopback? An
** entry without a host, or one that is not understood, counts as beyond. */
static int listen_beyond_loopback(const char *listen)
{
    const char *p = listen && *listen ? listen : "127.0.0.1:8080";
    while (*p) {
        size_t n = strcspn(p, ",");
        char e[256];
        snprintf(e, sizeof e, "%.*s", (int)(n < 255 ? n : 255), p);
        p += n + (p[n] == ',');
        char *s = e;
        while (*s == ' ')
            s++;
        char *host = s, *end;
        if (*s == '[') {
            host = s + 1;
            end = strchr(host, ']');
        } else {
            end = strrchr(s, ':');
        }
        if (!end)
            return 1;
        *end = '\0';
        if (!*host || !host_is_loopback(host))
            return 1;
    }
    return 0;
}

/* ---- trusted proxies ------------------------------------------------------ */

/* Text (brackets allowed around IPv6) to an address; an IPv4-mapped IPv6
** address becomes its IPv4 one (and 2 is returned). 0 when it is not an
** address. */
static int parse_addr(const char *text, size_t n, auth_net *out)
{
    char buf[64];
    if (n && text[0] == '[' && text[n - 1] == ']')
        text++, n -= 2;
    if (n == 0 || n >= sizeof buf)
        return 0;
    memcpy(buf, text, n);
    buf[n] = '\0';
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, buf, out->addr) == 1) {
        out->bits = 32;
        return 1;
    }
    if (inet_pton(AF_INET6, buf, out->addr) != 1)
        return 0;
    static const unsigned char mapped[12] = { [10] = 0xff, [11] = 0xff };
    out->v6 = 1;
    out->bits = 128;
    if (!memcmp(out->addr, mapped, 12)) {
        memmove(out->addr, out->addr + 12, 4);
        memset(out->addr + 4, 0, 12);
        out->v6 = 0;
        out->bits = 32;
        return 2;
    }
    return 1;
}

static int proxies_parse(pp_http_auth *a, const char *list, pgpipe_error *err)
{
    if (!list)
        return PGPIPE_OK;
    int cap = 1;
    for (const char *q = list; *q; q++)
        cap += *q == ',';
    a->proxies = pp_calloc((size_t)cap, sizeof *a->proxies);
    if (!a->proxies)
        return pp_err_nomem(err);
    const char *p = list;
    for (;;) {
        size_t n = strcspn(p, ",");
        const char *s = p, *e = p + n;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (s < e) {
            const char *slash = memchr(s, '/', (size_t)(e - s));
            auth_net net;
            int ok = parse_addr(s, (size_t)((slash ? slash : e) - s), &net);
            int mapped = ok == 2;
            if (ok) {
                int full = net.v6 ? 128 : 32;
                if (slash) {
                    const char *d = slash + 1;
                    int bits = 0, digits = 0;
                    while (d < e && *d >= '0' && *d <= '9' && digits < 4)
                        bits = bits * 10 + (*d++ - '0'), digits++;
                    if (mapped)
                        bits -= 96; /* ::ffff:a.b.c.d/120 is a.b.c.d/24 */
                    if (!digits || d != e || bits < 0 || bits > full)
                        ok = 0;
                    else
                        net.bits = bits;
                }
            }
            if (!ok)
                return pp_err(err, PGPIPE_MISUSE, "trusted proxies: \"%.*s\" is not an IPv4 or "
                              "IPv6 address or CIDR", (int)(e - s), s);
            a->proxies[a->nproxies++] = net;
        } else if (p[n] || n) {
            return pp_err(err, PGPIPE_MISUSE, "trusted proxies: an empty entry in \"%s\"", list);
        }
        if (!p[n])
            break;
        p += n + 1;
    }
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_http_auth_trusted_proxy(const pp_http_auth *a, const char *addr)
{
    auth_net x;
    if (!a || !a->nproxies || !addr || !parse_addr(addr, strlen(addr), &x))
        return 0;
    for (int i = 0; i < a->nproxies; i++) {
        const auth_net *n = &a->proxies[i];
        if (n->v6 != x.v6)
            continue;
        int whole = n->bits / 8, rest = n->bits % 8;
        if (memcmp(n->addr, x.addr, (size_t)whole))
            continue;
        if (rest) {
            unsigned char m = (unsigned char)(0xff << (8 - rest));
            if ((n->addr[whole] & m) != (x.addr[whole] & m))
                continue;
        }
        return 1;
    }
    return 0;
}

/* ---- tokens ----------------------------------------------------------------- */

/* 2n hex digits to n bytes; 0 when s[0..len) is not exactly that. */
static int hex_decode(const char *s, size_t len, unsigned char *out, size_t n)
{
    if (len != 2 * n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        int h = pp_hex_value((unsigned char)s[2 * i]), l = pp_hex_value((unsigned char)s[2 * i + 1]);
        if (h < 0 || l < 0)
            return 0;
        out[i] = (unsigned char)(h << 4 | l);
    }
    return 1;
}

#define AUTH_TOKENS_SQL "SELECT source, token_sha256, revoked_at IS NOT NULL " \
                        "FROM pgpipe.http_tokens ORDER BY id"

PGPIPE_PRIVATE const char *pp_http_auth_tokens_sql(void)
{
    return AUTH_TOKENS_SQL;
}

/* The tokens of r (a result of AUTH_TOKENS_SQL; PQcleared here). */
static int tokens_from(PGresult *r, auth_token **out, int *count, int *live, pgpipe_error *err)
{
    int n = PQntuples(r);
    auth_token *t = pp_calloc((size_t)(n ? n : 1), sizeof *t);
    if (!t) {
        PQclear(r);
        return pp_err_nomem(err);
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *h = PQgetvalue(r, i, 1);
        if (!hex_decode(h, strlen(h), t[k].hash, 32))
            continue; /* the table's CHECK keeps these out */
        if (!(t[k].source = pp_strdup(PQgetvalue(r, i, 0)))) {
            PQclear(r);
            tokens_free(t, k);
            return pp_err_nomem(err);
        }
        t[k].revoked = PQgetvalue(r, i, 2)[0] == 't';
        *live += !t[k].revoked;
        k++;
    }
    PQclear(r);
    *out = t;
    *count = k;
    return PGPIPE_OK;
}

static int tokens_read(PGconn *conn, auth_token **out, int *count, int *live,
                       pgpipe_error *err)
{
    PGresult *r = NULL;
    *out = NULL;
    *count = *live = 0;
    int rc = pp_exec(conn, AUTH_TOKENS_SQL, 0, NULL, &r, err,
                     "reading the HTTP tokens (pgpipe.http_tokens)");
    if (rc != PGPIPE_OK)
        return rc;
    return tokens_from(r, out, count, live, err);
}

static void auth_swap(pp_http_auth *a, auth_token *t, int n, int live)
{
    pp_mutex_lock(&a->mu);
    auth_token *old = a->tokens;
    int oldn = a->ntokens;
    a->tokens = t;
    a->ntokens = n;
    a->nlive = live;
    pp_mutex_unlock(&a->mu);
    tokens_free(old, oldn);
}

PGPIPE_PRIVATE int pp_http_auth_reload_result(pp_http_auth *a, PGresult *r, pgpipe_error *err)
{
    auth_token *t = NULL;
    int n = 0, live = 0;
    int rc = tokens_from(r, &t, &n, &live, err);
    if (rc == PGPIPE_OK)
        auth_swap(a, t, n, live);
    return rc;
}

PGPIPE_PRIVATE int pp_http_auth_reload(pp_http_auth *a, PGconn *conn, pgpipe_error *err)
{
    auth_token *t;
    int n, live;
    int rc = tokens_read(conn, &t, &n, &live, err);
    if (rc != PGPIPE_OK)
        return rc; /* the tokens read before stay in force */
    auth_swap(a, t, n, live);
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_http_auth_open(pp_http_auth **out, const pgpipe_http_options *o,
                                     PGconn *conn, pgpipe_error *err)
{
    *out = NULL;
    pp_http_auth *a = pp_calloc(1, sizeof *a);
    if (!a)
        return pp_err_nomem(err);
    pp_mutex mu = PP_MUTEX_INIT;
    a->mu = mu;
    a->require = o->require_tokens;
    a->insecure = o->insecure;
    a->beyond_loopback = listen_beyond_loopback(o->listen);
    int rc = PGPIPE_OK;
    if (a->require < -1 || a->require > 1)
        rc = pp_err(err, PGPIPE_MISUSE, "require_tokens %d: expected -1 (auto), 0 or 1",
                    a->require);
    const pgpipe_http_source *star = NULL;
    for (int i = 0; rc == PGPIPE_OK && i < o->nsources; i++) {
        const char *name = o->sources[i].name;
        if (!name || (strcmp(name, "*") && !pgpipe_http_source_valid(name))) {
            rc = pp_err(err, PGPIPE_MISUSE, "http source %d: \"%s\" is not a source name: a "
                        "source is " PGPIPE_HTTP_SOURCE_RULE " (the {source} of POST "
                        "/v1/events/{source}), or * for every other source", i + 1,
                        name ? name : "(none)");
            break;
        }
        for (int j = 0; j < i; j++)
            if (!strcmp(o->sources[j].name, name))
                rc = pp_err(err, PGPIPE_MISUSE, "http source \"%s\" is listed twice", name);
        if (!strcmp(name, "*"))
            star = &o->sources[i];
    }
    if (rc == PGPIPE_OK && o->nsources > 0) {
        a->sources = pp_calloc((size_t)o->nsources, sizeof *a->sources);
        if (!a->sources)
            rc = pp_err_nomem(err);
    }
    for (int i = 0; rc == PGPIPE_OK && i < o->nsources; i++) {
        const pgpipe_http_source *s = &o->sources[i];
        a->nsources++;
        rc = source_fill(&a->sources[i], s, s == star ? NULL : star, o->window_hours, err);
    }
    if (rc == PGPIPE_OK) {
        pgpipe_http_source none;
        memset(&none, 0, sizeof none);
        none.name = "*";
        rc = source_fill(&a->defaults, &none, NULL, o->window_hours, err);
    }
    if (rc == PGPIPE_OK)
        rc = proxies_parse(a, o->trusted_proxies, err);
    if (rc == PGPIPE_OK && conn) /* no connection (the tests of signatures): no tokens */
        rc = tokens_read(conn, &a->tokens, &a->ntokens, &a->nlive, err);
    if (rc != PGPIPE_OK) {
        pp_http_auth_close(a);
        return rc;
    }
    *out = a;
    return PGPIPE_OK;
}

static const auth_source *find_source(const pp_http_auth *a, const char *source)
{
    const auth_source *star = NULL;
    for (int i = 0; i < a->nsources; i++) {
        if (source && !strcmp(a->sources[i].s.name, source))
            return &a->sources[i];
        if (!strcmp(a->sources[i].s.name, "*"))
            star = &a->sources[i];
    }
    return star ? star : &a->defaults;
}

PGPIPE_PRIVATE const pgpipe_http_source *pp_http_auth_source(const pp_http_auth *a,
                                                             const char *source)
{
    return &find_source(a, source)->s;
}

PGPIPE_PRIVATE int pp_http_auth_has_tokens(const pp_http_auth *a)
{
    pp_mutex_lock((pp_mutex *)&a->mu);
    int n = a->nlive;
    pp_mutex_unlock((pp_mutex *)&a->mu);
    return n > 0;
}

/* Has source had tokens (its own or "*" ones, live or revoked)? Under a->mu. */
static int source_has_tokens(const pp_http_auth *a, const char *source)
{
    for (int i = 0; i < a->ntokens; i++)
        if (!strcmp(a->tokens[i].source, "*") || !strcmp(a->tokens[i].source, source))
            return 1;
    return 0;
}

static int deny_with(pp_http_reply *deny, int status, const char *code,
                     const pp_http_request *rq, const char *fmt, ...) PP_PRINTF(5, 6);
static int deny_with(pp_http_reply *deny, int status, const char *code,
                     const pp_http_request *rq, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (deny)
        pp_http_reply_error(deny, status, code, rq->id, "%s", msg);
    return status;
}

/* "Authorization: Bearer TOKEN" against the live tokens of source; with
** required unset, a request without the header passes. */
static int check_bearer(pp_http_auth *a, const char *source, const pp_http_request *rq,
                        int required, pp_http_reply *deny)
{
    size_t n;
    const char *h = pp_http_header_get(rq, "Authorization", &n);
    if (!h) {
        if (!required)
            return 0;
        deny_with(deny, 401, "unauthorized", rq, "source \"%s\" needs a bearer token: "
                  "Authorization: Bearer <token>", source);
        if (deny)
            deny->www_authenticate = "Bearer realm=\"pgpipe\"";
        return 401;
    }
    size_t i = 0;
    while (i < n && h[i] != ' ')
        i++;
    size_t tok = i;
    while (tok < n && h[tok] == ' ')
        tok++;
    if (i != 6 || strncasecmp(h, "Bearer", 6) || tok == i || tok == n) {
        deny_with(deny, 401, "invalid_request", rq, "the Authorization header is not "
                  "\"Bearer <token>\"");
        if (deny)
            deny->www_authenticate = "Bearer realm=\"pgpipe\", error=\"invalid_request\"";
        return 401;
    }
    pp_sha256 s;
    unsigned char d[32];
    pp_sha256_init(&s);
    pp_sha256_update(&s, h + tok, n - tok);
    pp_sha256_final(&s, d);
    int ok = 0;
    pp_mutex_lock(&a->mu);
    for (int k = 0; k < a->ntokens; k++) {
        int mine = !strcmp(a->tokens[k].source, "*") || !strcmp(a->tokens[k].source, source);
        ok |= pp_ct_equal(a->tokens[k].hash, d, 32) & mine & !a->tokens[k].revoked;
    }
    pp_mutex_unlock(&a->mu);
    if (ok)
        return 0;
    return deny_with(deny, 403, "invalid_token", rq, "the bearer token is not valid for source "
                     "\"%s\" (unknown, revoked or another source's)", source);
}

/* A Unix time of 1 to 12 digits; -1 otherwise. */
static long long parse_unix(const char *s, size_t n)
{
    if (n == 0 || n > 12)
        return -1;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int check_time(const auth_source *src, const pp_http_request *rq, long long t, time_t now,
                      const char *what, pp_http_reply *deny)
{
    long long d = (long long)now - t;
    if (d > src->s.tolerance_s)
        return deny_with(deny, 401, "stale_signature", rq, "the %s is %lld s old: outside "
                         "the tolerance of %d s (a replay, or a clock off)", what, d,
                         src->s.tolerance_s);
    if (-d > src->s.tolerance_s)
        return deny_with(deny, 401, "stale_signature", rq, "the %s is %lld s in the future: "
                         "outside the tolerance of %d s (a clock off)", what, -d,
                         src->s.tolerance_s);
    return 0;
}

#define SIG_MAX 8

static int check_github(const auth_source *src, const pp_http_request *rq, pp_http_reply *deny)
{
    size_t n;
    const char *h = pp_http_header_get(rq, "X-Hub-Signature-256", &n);
    if (!h)
        return deny_with(deny, 401, "missing_signature", rq, "source \"%s\" needs a signed "
                         "delivery: the X-Hub-Signature-256 header is missing", src->s.name);
    unsigned char got[32], want[32];
    if (n < 7 || strncmp(h, "sha256=", 7) || !hex_decode(h + 7, n - 7, got, 32))
        return deny_with(deny, 401, "malformed_signature", rq, "X-Hub-Signature-256 is not "
                         "\"sha256=\" and 64 hex digits");
    pp_hmac_sha256(src->key, src->key_len, rq->body, rq->body_len, want);
    if (!pp_ct_equal(got, want, 32))
        return deny_with(deny, 403, "bad_signature", rq, "X-Hub-Signature-256 does not match "
                         "the body with source \"%s\"'s secret", src->s.name);
    return 0;
}

/* Does any of the nsig signatures equal the HMAC-SHA256, with the source's
** secret, of the parts one after another? Every signature is compared, in
** constant time, whichever matches. */
static int sig_any_matches(const auth_source *src, const char *const *part, const size_t *plen,
                           int nparts, unsigned char (*sig)[32], int nsig)
{
    unsigned char want[32];
    hmac_ctx c;
    hmac_init(&c, src->key, src->key_len);
    for (int i = 0; i < nparts; i++)
        hmac_update(&c, part[i], plen[i]);
    hmac_final(&c, want);
    int ok = 0;
    for (int k = 0; k < nsig; k++)
        ok |= pp_ct_equal(sig[k], want, 32);
    return ok;
}

static int check_stripe(const auth_source *src, const pp_http_request *rq, time_t now,
                        pp_http_reply *deny)
{
    size_t n;
    const char *h = pp_http_header_get(rq, "Stripe-Signature", &n);
    if (!h)
        return deny_with(deny, 401, "missing_signature", rq, "source \"%s\" needs a signed "
                         "delivery: the Stripe-Signature header is missing", src->s.name);
    long long t = -1;
    const char *ts = NULL;
    size_t tslen = 0;
    unsigned char sig[SIG_MAX][32];
    int nsig = 0, bad = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && h[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && h[a] == ' ')
            a++;
        while (b > a && h[b - 1] == ' ')
            b--;
        if (b - a > 2 && h[a] == 't' && h[a + 1] == '=') {
            if (ts)
                bad = 1; /* two timestamps: which one was signed? */
            ts = h + a + 2;
            tslen = b - a - 2;
            t = parse_unix(ts, tslen);
        } else if (b - a > 3 && !strncmp(h + a, "v1=", 3) && nsig < SIG_MAX) {
            if (hex_decode(h + a + 3, b - a - 3, sig[nsig], 32))
                nsig++;
        }
        i = j + 1;
    }
    if (bad || t < 0 || nsig == 0)
        return deny_with(deny, 401, "malformed_signature", rq, "Stripe-Signature needs one "
                         "t=<unix time> and a v1=<64 hex digits>");
    const char *part[] = { ts, ".", rq->body };
    size_t plen[] = { tslen, 1, rq->body_len };
    if (!sig_any_matches(src, part, plen, 3, sig, nsig))
        return deny_with(deny, 403, "bad_signature", rq, "no v1 signature of Stripe-Signature "
                         "matches the body with source \"%s\"'s secret", src->s.name);
    return check_time(src, rq, t, now, "Stripe-Signature timestamp", deny);
}

static int check_standard(const auth_source *src, const pp_http_request *rq, time_t now,
                          pp_http_reply *deny)
{
    size_t idn, tsn, n;
    const char *id = pp_http_header_get(rq, "webhook-id", &idn);
    const char *ts = pp_http_header_get(rq, "webhook-timestamp", &tsn);
    const char *h = pp_http_header_get(rq, "webhook-signature", &n);
    if (!id || !ts || !h)
        return deny_with(deny, 401, "missing_signature", rq, "source \"%s\" needs a signed "
                         "delivery: the %s header is missing", src->s.name,
                         !id ? "webhook-id" : !ts ? "webhook-timestamp" : "webhook-signature");
    long long t = parse_unix(ts, tsn);
    if (t < 0 || idn == 0)
        return deny_with(deny, 401, "malformed_signature", rq, "%s", t < 0 ?
                         "webhook-timestamp is not a Unix time" : "webhook-id is empty");
    unsigned char sig[SIG_MAX][32];
    int nsig = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && h[j] != ' ')
            j++;
        if (j - i > 3 && !strncmp(h + i, "v1,", 3) && nsig < SIG_MAX) {
            unsigned char tmp[33];
            if (pp_base64_decode(tmp, sizeof tmp, h + i + 3, j - i - 3) == 32)
                memcpy(sig[nsig++], tmp, 32);
        }
        i = j + 1;
    }
    if (nsig == 0)
        return deny_with(deny, 401, "malformed_signature", rq, "webhook-signature holds no "
                         "\"v1,<base64 of 32 bytes>\"");
    const char *part[] = { id, ".", ts, ".", rq->body };
    size_t plen[] = { idn, 1, tsn, 1, rq->body_len };
    if (!sig_any_matches(src, part, plen, 5, sig, nsig))
        return deny_with(deny, 403, "bad_signature", rq, "no v1 signature of webhook-signature "
                         "matches the body with source \"%s\"'s secret", src->s.name);
    return check_time(src, rq, t, now, "webhook-timestamp", deny);
}

PGPIPE_PRIVATE int pp_http_auth_check(pp_http_auth *a, const char *source,
                                      const pp_http_request *rq, time_t now,
                                      pp_http_reply *deny)
{
    const auth_source *src = find_source(a, source);
    int st;
    switch (src->s.signature) {
    case PGPIPE_HTTP_SIG_GITHUB:
        st = check_github(src, rq, deny);
        break;
    case PGPIPE_HTTP_SIG_STRIPE:
        st = check_stripe(src, rq, now, deny);
        break;
    case PGPIPE_HTTP_SIG_STANDARD:
        st = check_standard(src, rq, now, deny);
        break;
    default:
        st = -1;
        break;
    }
    if (st >= 0) /* signed: a token is optional, but one sent must be valid */
        return st ? st : check_bearer(a, source, rq, 0, deny);
    if (a->require == 0)
        return 0;
    int required = a->require == 1;
    if (!required) {
        pp_mutex_lock(&a->mu);
        required = source_has_tokens(a, source) || (a->beyond_loopback && !a->insecure);
        pp_mutex_unlock(&a->mu);
    }
    return required ? check_bearer(a, source, rq, 1, deny) : 0;
}

/* ==== Source names ========================================================== */

PGPIPE_PRIVATE int pp_http_source_ok(const char *s, size_t n)
{
    if (n < 1 || n > 64)
        return 0;
    /* "." and ".." are dot-segments: curl, browsers and nginx remove them
    ** from /v1/events/.. before the request leaves, so none would reach it */
    if (s[0] == '.' && (n == 1 || (n == 2 && s[1] == '.')))
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

int pgpipe_http_source_valid(const char *name)
{
    return name && pp_http_source_ok(name, strlen(name));
}

/* A token's source: a source name or "*" (every source). PGPIPE_OK, or a
** PGPIPE_MISUSE error naming fn and the rule. */
static int source_check(const char *fn, const char *source, pgpipe_error *err)
{
    if (!strcmp(source, "*") || pgpipe_http_source_valid(source))
        return PGPIPE_OK;
    return pp_err(err, PGPIPE_MISUSE, "%s: \"%s\" is not a source name: a source is "
                  PGPIPE_HTTP_SOURCE_RULE " (the {source} of POST /v1/events/{source}), or * "
                  "for every source", fn, source);
}

/* ==== Token management (public) ============================================ */

int pgpipe_http_token_add(PGconn *conn, const char *source, const char *label,
                          char *token_out, size_t size, pgpipe_error *err)
{
    if (err)
        pgpipe_error_clear(err);
    if (!conn || !source || !token_out)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_http_token_add: needs a connection, a source "
                      "and a buffer");
    if (source_check("pgpipe_http_token_add", source, err) != PGPIPE_OK)
        return PGPIPE_MISUSE;
    if (size < PGPIPE_HTTP_TOKEN_SIZE)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_http_token_add: the buffer needs %d bytes",
                      PGPIPE_HTTP_TOKEN_SIZE);
    unsigned char raw[32];
    char tok[PGPIPE_HTTP_TOKEN_SIZE], hash[65];
    if (pp_random_bytes(raw, sizeof raw) != PGPIPE_OK)
        return pp_err(err, PGPIPE_IO, "no random bytes for a token: %s", strerror(errno));
    memcpy(tok, "pgp_", 4);
    pp_base64_encode(tok + 4, sizeof tok - 4, raw, sizeof raw, 1);
    memset(raw, 0, sizeof raw);
    /* SHA-256 is the right hash here: the token has 256 bits of entropy, so
    ** no dictionary or brute force applies and a slow KDF would only slow
    ** every request down */
    pgpipe_sha256_hex(tok, strlen(tok), hash);
    const char *hint = tok + strlen(tok) - 4;
    const char *params[4] = { source, label && *label ? label : NULL, hash, hint };
    int rc = pp_exec(conn, "INSERT INTO pgpipe.http_tokens (source, label, token_sha256, hint) "
                           "VALUES ($1, $2, $3, $4)", 4, params, NULL, err,
                     "adding an HTTP token");
    if (rc == PGPIPE_OK)
        memcpy(token_out, tok, strlen(tok) + 1);
    memset(tok, 0, sizeof tok);
    return rc;
}

int pgpipe_http_token_list(PGconn *conn, const char *source, PGresult **out, pgpipe_error *err)
{
    if (err)
        pgpipe_error_clear(err);
    if (out)
        *out = NULL;
    if (!conn || !out)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_http_token_list: needs a connection and out");
    if (source && source_check("pgpipe_http_token_list", source, err) != PGPIPE_OK)
        return PGPIPE_MISUSE;
    const char *params[1] = { source };
    return pp_exec(conn, "SELECT id, source, label, '...' || hint AS hint, created_at, revoked_at "
                         "FROM pgpipe.http_tokens WHERE $1::text IS NULL OR source = $1 "
                         "ORDER BY id", 1, params, out, err, "listing the HTTP tokens");
}

int pgpipe_http_token_revoke(PGconn *conn, const char *source, long long id, pgpipe_error *err)
{
    if (err)
        pgpipe_error_clear(err);
    if (!conn || !source)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_http_token_revoke: needs a connection and a "
                      "source");
    if (source_check("pgpipe_http_token_revoke", source, err) != PGPIPE_OK)
        return PGPIPE_MISUSE;
    char ids[24];
    snprintf(ids, sizeof ids, "%lld", id);
    const char *params[2] = { ids, source };
    PGresult *r = NULL;
    int rc = pp_exec(conn, "UPDATE pgpipe.http_tokens SET revoked_at = now() "
                           "WHERE id = $1 AND source = $2 AND revoked_at IS NULL RETURNING id",
                     2, params, &r, err, "revoking an HTTP token");
    if (rc != PGPIPE_OK)
        return rc;
    int n = PQntuples(r);
    PQclear(r);
    if (n == 0)
        return pp_err(err, PGPIPE_DONE, "no live HTTP token %lld of source \"%s\" (unknown, "
                      "another source's, or revoked already)", id, source);
    return PGPIPE_OK;
}

#endif /* PGPIPE_OMIT_HTTP */
