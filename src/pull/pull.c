/*
** The API pull: pages of an HTTP(S) JSON API into staging.raw_events, each
** page in one target transaction with its dead letters and the stream's
** state (pgpipe.pull_state), so a run killed anywhere resumes at the page
** after the last commit. The HTTP client is libcurl (easy interface, one
** handle per stream, kept alive across pages), compiled only with
** PGPIPE_ENABLE_CURL. pull.h documents the behaviour.
*/
#include "pp_pull.h"

#ifndef PGPIPE_OMIT_PULL

#include <math.h>
#ifdef PGPIPE_ENABLE_CURL
#include <curl/curl.h>
#endif

#define PULL_MAX_CONCURRENCY 64
#define PULL_MAX_WRITERS 4

/* ---- options (no libcurl needed) ------------------------------------------ */

void pgpipe_pull_options_init(pgpipe_pull_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
    opt->stream = "default";
    opt->method = "GET";
    opt->records = "";
    opt->cursor_param = "cursor";
    opt->offset_param = "offset";
    opt->limit = 100;
    opt->page_param = "page";
    opt->first_page = 1;
    opt->stop_on_empty = 1;
    opt->since_param = "since";
    opt->until_param = "until";
    opt->connect_timeout_ms = 10000;
    opt->timeout_ms = 60000;
    opt->retry_budget_ms = 300000;
    opt->concurrency = 1;
    opt->max_body = 64ll << 20;
    opt->install = 1;
}

/* A rate of requests per second: 0 (none) or one whose waits are counted
** in microseconds without overflow; not NaN nor infinite. */
#define PULL_RATE_OK(r) ((r) == 0 || ((r) >= 0.001 && (r) <= 1e6))

/* "65536", "512k", "64M", "64MB", "1G" (powers of 1024) -> bytes; -1 when
** not one or not from 1 byte to 1 TiB. */
static long long pull_bytes(const char *v)
{
    char *e;
    errno = 0;
    long long x = strtoll(v, &e, 10);
    if (!isdigit((unsigned char)v[0]) || errno || x < 1)
        return -1;
    int sh = !*e ? 0 : (*e == 'k' || *e == 'K') ? 10 : *e == 'M' ? 20 : *e == 'G' ? 30 : -1;
    if (sh < 0 || (*e && e[1] && strcmp(e + 1, "B") != 0) || x > (1ll << 40) >> sh)
        return -1;
    return x << sh;
}

/* A byte count as a person writes it: "64 MB", "512 kB", "1000 bytes". */
static PP_UNUSED void pull_bytes_text(long long n, char *out, size_t size)
{
    if (n >= (1 << 20) && n % (1 << 20) == 0)
        snprintf(out, size, "%lld MB", n >> 20);
    else if (n >= 1024 && n % 1024 == 0)
        snprintf(out, size, "%lld kB", n >> 10);
    else
        snprintf(out, size, "%lld bytes", n);
}

/* "1500", "1500ms", "1.5s", "2m", "1h" -> milliseconds; -1 when not one. */
static long long pull_ms(const char *v)
{
    char *e;
    double x = strtod(v, &e);
    if (e == v || !(x >= 0)) /* NaN too */
        return -1;
    double mul = !*e || !strcmp(e, "ms") ? 1 : !strcmp(e, "s") ? 1000 : !strcmp(e, "m") ? 60000
                 : !strcmp(e, "h") ? 3600000 : -1;
    return mul < 0 || x * mul > 2147483647.0 ? -1 : (long long)(x * mul);
}

int pgpipe_pull_set(pgpipe_pull_options *o, const char *name, const char *v, pgpipe_error *err)
{
    if (!o || !name || !v)
        return pp_err(err, PGPIPE_MISUSE, "pull: an option needs a name and a value");
    while (*name == '-')
        name++;
    static const struct { const char *n; size_t off; } strs[] = {
#define PS(n, f) { n, offsetof(pgpipe_pull_options, f) }
        PS("url", url), PS("source", source), PS("stream", stream), PS("method", method),
        PS("body", body), PS("records", records), PS("event-type", event_type),
        PS("event-type-field", event_type_field), PS("cursor-path", cursor_path),
        PS("cursor-param", cursor_param), PS("more-path", more_path),
        PS("offset-param", offset_param), PS("limit-param", limit_param),
        PS("page-param", page_param), PS("total-path", total_path), PS("pages-path", pages_path),
        PS("since-field", since_field), PS("since-param", since_param),
        PS("since-initial", since_initial), PS("until-param", until_param),
        PS("token-env", bearer_env), PS("token-file", bearer_file), PS("basic-env", basic_env),
        PS("basic-file", basic_file), PS("api-key-header", api_key_header),
        PS("api-key-env", api_key_env), PS("api-key-file", api_key_file), PS("ca-file", ca_file),
#undef PS
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (!strcmp(name, strs[i].n)) {
            if (!strcmp(name, "method") && strcmp(v, "GET") && strcmp(v, "POST"))
                return pp_err(err, PGPIPE_MISUSE, "pull: --method: GET or POST, not \"%s\"", v);
            *(const char **)((char *)o + strs[i].off) = v;
            return PGPIPE_OK;
        }
    if (!strcmp(name, "header")) {
        int n = 0;
        while (n < 16 && o->header_slots[n])
            n++;
        if (n == 16)
            return pp_err(err, PGPIPE_MISUSE, "pull: --header: at most 16");
        if (!strchr(v, ':') || strpbrk(v, "\r\n"))
            return pp_err(err, PGPIPE_MISUSE, "pull: --header: \"Name: value\" on one line");
        o->header_slots[n] = v;
        o->header_slots[n + 1] = NULL;
        o->headers = o->header_slots;
        return PGPIPE_OK;
    }
    if (!strcmp(name, "paginate")) {
        static const char *const styles[] = { "none", "link", "cursor", "offset", "page" };
        for (int i = 0; i < 5; i++)
            if (!strcmp(v, styles[i])) {
                o->paginate = i;
                return PGPIPE_OK;
            }
        return pp_err(err, PGPIPE_MISUSE, "pull: --paginate: none, link, cursor, offset or page, not \"%s\"", v);
    }
    if (!strcmp(name, "backfill")) {
        const char *dots = strstr(v, "..");
        if (!dots || dots == v)
            return pp_err(err, PGPIPE_MISUSE, "pull: --backfill: FROM..TO (TO may be empty), not \"%s\"", v);
        size_t fl = (size_t)(dots - v), tl = strlen(dots + 2);
        if (fl + tl + 2 > sizeof o->backfill_text)
            return pp_err(err, PGPIPE_MISUSE, "pull: --backfill: too long");
        memcpy(o->backfill_text, v, fl);
        o->backfill_text[fl] = '\0';
        memcpy(o->backfill_text + fl + 1, dots + 2, tl + 1);
        o->backfill_from = o->backfill_text;
        o->backfill_to = tl ? o->backfill_text + fl + 1 : NULL;
        return PGPIPE_OK;
    }
    if (!strcmp(name, "rate")) {
        char *e;
        double r = strtod(v, &e);
        if (e == v || *e || !PULL_RATE_OK(r))
            return pp_err(err, PGPIPE_MISUSE, "pull: --rate: requests per second, 0 (no limit) "
                          "or from 0.001 to 1000000, not \"%s\"", v);
        o->rate = r;
        return PGPIPE_OK;
    }
    if (!strcmp(name, "max-body") || !strcmp(name, "body-budget")) {
        long long x = name[0] == 'b' && !strcmp(v, "0") ? 0 : pull_bytes(v); /* 0: the default */
        if (x < 0)
            return pp_err(err, PGPIPE_MISUSE, "pull: --%s: bytes, or with k, M or G (512k, 64M), "
                          "from 1 byte to 1024G, not \"%s\"", name, v);
        *(name[0] == 'm' ? &o->max_body : &o->body_budget) = x;
        return PGPIPE_OK;
    }
    if (!strcmp(name, "concurrency")) {
        char *e;
        errno = 0;
        long long c = strtoll(v, &e, 10);
        if (!isdigit((unsigned char)v[0]) || *e || errno || c < 1 || c > PULL_MAX_CONCURRENCY)
            return pp_err(err, PGPIPE_MISUSE, "pull: --concurrency: requests in flight at once, a "
                          "whole number from 1 to %d, not \"%s\"", PULL_MAX_CONCURRENCY, v);
        o->concurrency = (int)c;
        return PGPIPE_OK;
    }
    static const struct { const char *n; int kind; } nums[] = {
        { "limit", 0 }, { "first-page", 1 }, { "max-pages", 2 }, { "connect-timeout", 3 },
        { "timeout", 4 }, { "retry-budget", 5 },
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strcmp(name, nums[i].n) != 0)
            continue;
        long long x;
        if (nums[i].kind >= 3) {
            if ((x = pull_ms(v)) < 0)
                return pp_err(err, PGPIPE_MISUSE, "pull: --%s: milliseconds or a duration (500ms, 30s, 5m), not \"%s\"", name, v);
            if (x == 0 && nums[i].kind != 5) /* libcurl waits for ever */
                return pp_err(err, PGPIPE_MISUSE, "pull: --%s: at least 1 ms, not \"%s\" (a stalled "
                              "server would be waited for forever)", name, v);
        } else {
            char *e;
            x = strtoll(v, &e, 10);
            if (e == v || *e || x < 0 || x > INT_MAX)
                return pp_err(err, PGPIPE_MISUSE, "pull: --%s: a number, not \"%s\"", name, v);
            if (x == 0 && nums[i].kind == 0) /* not "the default of 100" in disguise */
                return pp_err(err, PGPIPE_MISUSE, "pull: --limit: records per page, at least 1, not \"%s\"", v);
        }
        switch (nums[i].kind) {
        case 0: o->limit = (int)x; break;
        case 1: o->first_page = (int)x; break;
        case 2: o->max_pages = x; break;
        case 3: o->connect_timeout_ms = (int)x; break;
        case 4: o->timeout_ms = (int)x; break;
        default: o->retry_budget_ms = (int)x; break;
        }
        return PGPIPE_OK;
    }
    if (!strcmp(name, "token") || !strcmp(name, "password") || !strcmp(name, "api-key") ||
        !strcmp(name, "basic"))
        return pp_err(err, PGPIPE_MISUSE, "pull: --%s: a secret is never given as a value: use "
                      "--%s-env VARIABLE or --%s-file PATH", name,
                      !strcmp(name, "password") ? "basic" : name, !strcmp(name, "password") ? "basic" : name);
    return pp_err(err, PGPIPE_MISUSE, "pull: --%s: unknown option", name);
}

/* The names of query parameters whose values are masked. */
static int pull_secret_name(const char *s, size_t n)
{
    static const char *const words[] = { "key", "token", "secret", "passw", "pwd", "sig",
                                         "auth", "credential" };
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        size_t wl = strlen(words[w]);
        for (size_t i = 0; i + wl <= n; i++)
            if (strncasecmp(s + i, words[w], wl) == 0)
                return 1;
    }
    return 0;
}

/* The length of the password of a URL's "user:password@" that starts at
** s (just after "://"); 0 when there is none. *at = its offset. */
static size_t pull_userinfo_pw(const char *s, size_t n, size_t *at)
{
    size_t e = 0;
    while (e < n && !strchr("/?#@ \t\r\n\"'<>", s[e]))
        e++;
    if (e >= n || s[e] != '@')
        return 0;
    const char *colon = memchr(s, ':', e);
    if (!colon)
        return 0;
    *at = (size_t)(colon - s) + 1;
    return e - *at;
}

/* Append to b: text with each secret replaced by "***", and the values of
** secret-looking query parameters and the passwords of URLs
** ("https://user:***@host/") too. */
static void pull_mask_buf(pp_buf *b, const char *const *secrets, int nsecrets, const char *text)
{
    size_t n = strlen(text);
    for (size_t i = 0; i < n;) {
        int hit = 0;
        size_t at, pl;
        if (i >= 3 && memcmp(text + i - 3, "://", 3) == 0 &&
            (pl = pull_userinfo_pw(text + i, n - i, &at)) > 0) {
            pp_buf_append(b, text + i, at);
            pp_buf_append(b, "***", 3);
            i += at + pl;
            continue;
        }
        for (int k = 0; k < nsecrets; k++) {
            size_t sl = secrets[k] ? strlen(secrets[k]) : 0;
            if (sl >= 3 && sl <= n - i && memcmp(text + i, secrets[k], sl) == 0) {
                pp_buf_append(b, "***", 3);
                i += sl;
                hit = 1;
                break;
            }
        }
        if (hit)
            continue;
        char c = text[i];
        pp_buf_putc(b, c);
        i++;
        if (c == '?' || c == '&') { /* a query parameter: name=value */
            size_t e = i;
            while (e < n && text[e] != '=' && text[e] != '&' && text[e] != ' ' && text[e] != '#')
                e++;
            if (e < n && text[e] == '=' && pull_secret_name(text + i, e - i)) {
                pp_buf_append(b, text + i, e - i + 1);
                pp_buf_append(b, "***", 3);
                i = e + 1;
                while (i < n && text[i] != '&' && text[i] != ' ' && text[i] != '#' &&
                       text[i] != '"' && text[i] != '\'' && text[i] != '>' && text[i] != '\n' &&
                       !(text[i] == ':' && (i + 1 == n || text[i + 1] == ' '))) /* "URL: why" */
                    i++;
            }
        }
    }
}

static size_t pull_mask_to(const char *const *secrets, int nsecrets, const char *text, char *buf,
                           size_t size)
{
    pp_buf b = { 0 };
    pull_mask_buf(&b, secrets, nsecrets, text ? text : "");
    size_t n = b.len;
    if (size > 0) {
        size_t c = n < size - 1 ? n : size - 1;
        if (c)
            memcpy(buf, b.data, c);
        buf[c] = '\0';
    }
    pp_buf_free(&b);
    return n;
}

/* ---- URL query parameters ------------------------------------------------- */

static int pull_unreserved(unsigned char c)
{
    return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* The decoded value of query parameter name in url into out (size > 0);
** 1 when present. */
PGPIPE_PRIVATE int pp_pull_param_get(const char *url, const char *name, char *out, size_t size);
PGPIPE_PRIVATE int pp_pull_param_get(const char *url, const char *name, char *out, size_t size)
{
    const char *q = strchr(url, '?');
    size_t nl = strlen(name);
    out[0] = '\0';
    while (q && *q) {
        q++;
        const char *e = q + strcspn(q, "&#");
        if ((size_t)(e - q) > nl && strncmp(q, name, nl) == 0 && q[nl] == '=') {
            size_t o = 0;
            for (const char *s = q + nl + 1; s < e && o + 1 < size; s++) {
                if (*s == '%' && e - s >= 3 && isxdigit((unsigned char)s[1]) &&
                    isxdigit((unsigned char)s[2])) {
                    char h[3] = { s[1], s[2], 0 };
                    out[o++] = (char)strtol(h, NULL, 16);
                    s += 2;
                } else {
                    out[o++] = *s == '+' ? ' ' : *s;
                }
            }
            out[o] = '\0';
            return 1;
        }
        if (*e != '&')
            break;
        q = e;
    }
    return 0;
}

/* b = url with every name=... removed and, when value is not NULL,
** name=value (percent-encoded) appended; the fragment is dropped. */
PGPIPE_PRIVATE int pp_pull_param_set(pp_buf *b, const char *url, const char *name, const char *value);
PGPIPE_PRIVATE int pp_pull_param_set(pp_buf *b, const char *url, const char *name, const char *value)
{
    size_t nl = strlen(name);
    size_t end = strcspn(url, "#");
    const char *q = memchr(url, '?', end);
    size_t base = q ? (size_t)(q - url) : end;
    b->len = 0;
    int rc = pp_buf_append(b, url, base);
    int first = 1;
    if (q) {
        const char *p = q + 1, *stop = url + end;
        while (p < stop) {
            const char *e = memchr(p, '&', (size_t)(stop - p));
            if (!e)
                e = stop;
            int same = (size_t)(e - p) >= nl && strncmp(p, name, nl) == 0 &&
                       (p + nl == e || p[nl] == '=');
            if (!same && e > p) {
                rc |= pp_buf_putc(b, first ? '?' : '&');
                rc |= pp_buf_append(b, p, (size_t)(e - p));
                first = 0;
            }
            p = e + 1;
        }
    }
    if (value) {
        rc |= pp_buf_putc(b, first ? '?' : '&');
        rc |= pp_buf_append(b, name, nl);
        rc |= pp_buf_putc(b, '=');
        for (const unsigned char *s = (const unsigned char *)value; *s; s++) {
            if (pull_unreserved(*s))
                rc |= pp_buf_putc(b, (char)*s);
            else
                rc |= pp_buf_appendf(b, "%%%02X", *s);
        }
    }
    rc |= pp_buf_putc(b, '\0');
    b->len--;
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

/* The Link header's rel="next" target into out; 1 when found. */
PGPIPE_PRIVATE int pp_pull_link_next(const char *link, char *out, size_t size);
PGPIPE_PRIVATE int pp_pull_link_next(const char *link, char *out, size_t size)
{
    const char *p = link;
    while (p && *p) {
        const char *lt = strchr(p, '<');
        if (!lt)
            return 0;
        const char *gt = strchr(lt, '>');
        if (!gt)
            return 0;
        /* the parameters run to the next ',' that starts another link */
        const char *end = gt + 1;
        int quoted = 0;
        while (*end && (quoted || *end != ',')) {
            if (*end == '"')
                quoted = !quoted;
            end++;
        }
        for (const char *r = gt + 1; r + 3 < end; r++) {
            if (strncasecmp(r, "rel", 3) != 0)
                continue;
            const char *v = r + 3;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            if (v >= end || *v != '=')
                continue;
            v++;
            while (v < end && (*v == ' ' || *v == '"'))
                v++;
            /* a space-separated list of relation types */
            while (v < end && *v != '"' && *v != ';') {
                const char *w = v;
                while (w < end && *w != ' ' && *w != '"' && *w != ';')
                    w++;
                if (w - v == 4 && strncasecmp(v, "next", 4) == 0) {
                    size_t n = (size_t)(gt - lt - 1);
                    if (n + 1 > size)
                        return 0;
                    memcpy(out, lt + 1, n);
                    out[n] = '\0';
                    return 1;
                }
                v = w;
                while (v < end && *v == ' ')
                    v++;
            }
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* Compare two cursor values: integers by value, other numbers as doubles,
** the rest as text. *numeric = 1 when both are numbers. */
PGPIPE_PRIVATE int pp_pull_cursor_cmp(const char *a, const char *b, int *numeric);
PGPIPE_PRIVATE int pp_pull_cursor_cmp(const char *a, const char *b, int *numeric)
{
    size_t la = strlen(a), lb = strlen(b);
    int da = la > 0 && strspn(a, "0123456789") == la;
    int db = lb > 0 && strspn(b, "0123456789") == lb;
    if (numeric)
        *numeric = 0;
    if (da && db) {
        while (la > 1 && *a == '0') { a++; la--; }
        while (lb > 1 && *b == '0') { b++; lb--; }
        if (numeric)
            *numeric = 1;
        if (la != lb)
            return la < lb ? -1 : 1;
        int c = strcmp(a, b);
        return c < 0 ? -1 : c > 0;
    }
    char *ea, *eb;
    double x = la ? strtod(a, &ea) : 0, y = lb ? strtod(b, &eb) : 0;
    if (la && lb && *ea == '\0' && *eb == '\0' && isfinite(x) && isfinite(y) &&
        !isalpha((unsigned char)a[0]) && !isalpha((unsigned char)b[0])) {
        if (numeric)
            *numeric = 1;
        return x < y ? -1 : x > y;
    }
    int c = strcmp(a, b);
    return c < 0 ? -1 : c > 0;
}

/* "$.a.b", "$a", "$" -> "a.b", "a", "" (pgpipe_json_path's syntax). */
static PP_UNUSED const char *pull_path(const char *p)
{
    if (!p)
        return "";
    if (p[0] == '$')
        p += p[1] == '.' ? 2 : 1;
    return p;
}

size_t pgpipe_pull_mask(const pgpipe_pull *p, const char *text, char *buf, size_t size);

#ifndef PGPIPE_ENABLE_CURL

/* Built without libcurl: the API is there and says so. */
struct pgpipe_pull {
    pp_handle h;
};
struct pgpipe_pull_budget {
    int unused;
};

int pgpipe_pull_budget_open(pgpipe_pull_budget **out, double rate, double burst)
{
    (void)rate;
    (void)burst;
    if (!out)
        return PGPIPE_MISUSE;
    *out = NULL;
    return PGPIPE_ERROR;
}
void pgpipe_pull_budget_close(pgpipe_pull_budget *b)
{
    (void)b;
}
int pgpipe_pull_budget_set_concurrency(pgpipe_pull_budget *b, int concurrency)
{
    (void)b;
    (void)concurrency;
    return PGPIPE_MISUSE;
}
int pgpipe_pull_open(pgpipe_pull **out, const pgpipe_pull_options *opt)
{
    (void)opt;
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_pull *p = *out = pp_handle_new(sizeof *p);
    if (!p)
        return PGPIPE_NOMEM;
    return pp_err(&p->h.err, PGPIPE_ERROR,
                  "pull: built without libcurl (compile pgpipe.c with -DPGPIPE_ENABLE_CURL "
                  "and link -lcurl)");
}
void pgpipe_pull_close(pgpipe_pull *p)
{
    pp_free(p);
}
int pgpipe_pull_run(pgpipe_pull *p)
{
    return p ? pp_err(&p->h.err, PGPIPE_ERROR, "pull: built without libcurl") : PGPIPE_MISUSE;
}
void pgpipe_pull_stop(pgpipe_pull *p)
{
    (void)p;
}
void pgpipe_pull_progress_get(pgpipe_pull *p, pgpipe_pull_progress *out)
{
    (void)p;
    if (out)
        memset(out, 0, sizeof *out);
}
size_t pgpipe_pull_mask(const pgpipe_pull *p, const char *text, char *buf, size_t size)
{
    (void)p;
    return pull_mask_to(NULL, 0, text, buf, size);
}

#else /* PGPIPE_ENABLE_CURL */

/* ---- the rate budget -------------------------------------------------------- */

struct pgpipe_pull_budget {
    pp_mutex mu;
    double rate, burst, tokens;
    int64_t last_us;            /* last refill */
    int64_t paused_until_us;    /* Retry-After, X-RateLimit-Reset: nobody asks before */
    int slots;                  /* requests in flight at once; 0 = no limit */
    int inflight;
};

int pgpipe_pull_budget_open(pgpipe_pull_budget **out, double rate, double burst)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_pull_budget *b = *out = pp_calloc(1, sizeof *b);
    if (!b)
        return PGPIPE_NOMEM;
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_init(&b->mu, NULL);
#endif
    b->rate = PULL_RATE_OK(rate) ? rate : rate > 1e6 ? 1e6 : rate > 0 ? 0.001 : 0;
    b->burst = burst >= 1 ? burst : 1;
    b->tokens = b->burst;
    b->last_us = pgpipe_now_us();
    return PGPIPE_OK;
}

void pgpipe_pull_budget_close(pgpipe_pull_budget *b)
{
    if (!b)
        return;
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_destroy(&b->mu);
#endif
    pp_free(b);
}

int pgpipe_pull_budget_set_concurrency(pgpipe_pull_budget *b, int concurrency)
{
    if (!b || concurrency < 0 || concurrency > PULL_MAX_CONCURRENCY)
        return PGPIPE_MISUSE;
    pp_mutex_lock(&b->mu);
    b->slots = concurrency;
    pp_mutex_unlock(&b->mu);
    return PGPIPE_OK;
}

/* Take one request from the budget (a slot and a token): 0 when granted
** now (give the slot back with pull_budget_release), else the
** microseconds to wait before asking again. */
static int64_t pull_budget_take(pgpipe_pull_budget *b)
{
    int64_t now = pgpipe_now_us(), wait = 0;
    pp_mutex_lock(&b->mu);
    if (b->paused_until_us > now) {
        wait = b->paused_until_us - now;
    } else if (b->slots > 0 && b->inflight >= b->slots) {
        wait = 2000; /* another stream's request holds the slot */
    } else if (b->rate > 0) {
        b->tokens += (double)(now - b->last_us) / 1e6 * b->rate;
        if (b->tokens > b->burst)
            b->tokens = b->burst;
        b->last_us = now;
        if (b->tokens >= 1)
            b->tokens -= 1;
        else
            wait = (int64_t)((1 - b->tokens) / b->rate * 1e6) + 1;
    }
    if (!wait)
        b->inflight++;
    pp_mutex_unlock(&b->mu);
    return wait;
}

/* A request taken with pull_budget_take has ended. */
static void pull_budget_release(pgpipe_pull_budget *b)
{
    pp_mutex_lock(&b->mu);
    if (b->inflight > 0)
        b->inflight--;
    pp_mutex_unlock(&b->mu);
}

/* No request of any stream before now + us. */
static void pull_budget_pause(pgpipe_pull_budget *b, int64_t us)
{
    int64_t until = pgpipe_now_us() + us;
    pp_mutex_lock(&b->mu);
    if (until > b->paused_until_us)
        b->paused_until_us = until;
    pp_mutex_unlock(&b->mu);
}

/* ---- the handle ------------------------------------------------------------- */

#define PULL_MAX_SECRETS 4
#define PULL_KEEP_BODY (128u << 10) /* the body buffer a free request slot keeps */
#define PULL_BACKOFF_BASE_MS 250
#define PULL_BACKOFF_MAX_MS 30000

/* A page: requested (WAIT for its turn, FETCH in flight), then received
** (GOT) or failed for good (FAILED, the error kept until it is the page to
** parse). The slots hold consecutive pages from the one to parse on. */
enum { SLOT_FREE, SLOT_WAIT, SLOT_FETCH, SLOT_GOT, SLOT_FAILED };
typedef struct pull_slot {
    struct pgpipe_pull *p;
    int state;
    long long seq;              /* the page's number in the stream's run */
    pp_buf url;
    CURL *easy;
    pp_buf body, link;
    long status;
    double retry_after_s;       /* < 0: none */
    long long rl_remaining;     /* -1: none */
    double rl_reset;            /* -1: none */
    int too_big;
    int no_room;                /* a page ahead found no room in the body budget */
    int at_head;                /* ... so it is asked again once it is the next to parse */
    int attempts;               /* failed attempts so far */
    int64_t first_fail_us, due_us;
    pgpipe_error err;           /* FAILED */
    char curl_err[CURL_ERROR_SIZE];
} pull_slot;

/* A page to write: its rows built (BUILT, no connection yet), then on a
** target connection: COPY sent (COPY), copied and waiting for its turn
** (READY), state and COMMIT sent (COMMIT). */
enum { W_IDLE, W_BUILT, W_COPY, W_READY, W_COMMIT };
typedef struct pull_writer {
    PGconn *conn;
    int state, begun, solo;     /* solo: COPY and state in one implicit transaction */
    long long seq, n, nok, ndead;
    int end, has_next, has_cur;
    pp_buf copy, dlq, next;     /* the COPY rows, the dead letters, the next URL */
    pp_buf jb[2];               /* a record in jsonb's member order (pp_copy_jsonb) */
    char high[512], cur[512];
} pull_writer;

struct pgpipe_pull {
    pp_handle h;
    pgpipe_pull_options o;      /* strings point into strs */
    pp_copy_w cw;               /* this run's rows: binary when staging's columns allow, JSON
                                ** as it came when payload is json (pp_copy_staging_format) */
    char **strs;                /* the copies, freed at close */
    int nstrs;
    char **hdrs;                /* the headers, NULL-terminated */
    char *secrets[PULL_MAX_SECRETS];
    int nsecrets;
    char *auth_header;          /* "Authorization: ..." or the API key header */
    char *key_header;
    struct curl_slist *hl;      /* the request headers, built once */
    pgpipe_pull_budget *own_budget;
    pgpipe_pull_budget *budget;
    char scope[256];
    CURLM *multi;
    pull_slot *slots;           /* o.concurrency of them */
    PGconn *conns[PULL_MAX_WRITERS]; /* the target connections pages are written on */
    int nconn;
    pull_writer w[PULL_MAX_WRITERS + 1]; /* one more than connections: the next page is
                                   built while the others are written */
    int nw;                     /* nconn + 1 */
    PGconn *conn;               /* = conns[0] */
    atomic_int stop;
    pp_mutex mu;                /* guards prog for pgpipe_pull_progress_get */
    pgpipe_pull_progress prog;
    int64_t started_us;
    uint64_t rng;
    pp_buf rec;                 /* a record's text */
    size_t max_body, body_budget;
    pp_buf fixes, bad;          /* pull_salvage's: pull_fix and pull_bad */
    pp_buf orig;                /* ... and the body as sent, when its fixes are too many to list */
    long long head_seq;         /* the page to parse next: may always grow to max_body */
    long long held_peak;        /* pull_held_bytes' largest */
    pgpipe_json_doc *doc;
    uint64_t *seen;             /* hashes of the URLs and cursors of this run */
    size_t nseen, capseen;
};

static int pull_verrf(pgpipe_pull *p, pgpipe_error *e, int code, const char *fmt, va_list ap)
{
    char raw[2048], m[2048];
    vsnprintf(raw, sizeof raw, fmt, ap);
    pull_mask_to((const char *const *)p->secrets, p->nsecrets, raw, m, sizeof m);
    return pp_err(e, code, "%s", m);
}

/* The handle's error, masked. */
static int pull_errf(pgpipe_pull *p, int code, const char *fmt, ...) PP_PRINTF(3, 4);
static int pull_errf(pgpipe_pull *p, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = pull_verrf(p, &p->h.err, code, fmt, ap);
    va_end(ap);
    return rc;
}

/* A page's error, masked: reported if the page is ever the one to parse. */
static int pull_slot_err(pull_slot *s, int code, const char *fmt, ...) PP_PRINTF(3, 4);
static int pull_slot_err(pull_slot *s, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = pull_verrf(s->p, &s->err, code, fmt, ap);
    va_end(ap);
    s->state = SLOT_FAILED;
    return rc;
}

size_t pgpipe_pull_mask(const pgpipe_pull *p, const char *text, char *buf, size_t size)
{
    return pull_mask_to(p ? (const char *const *)p->secrets : NULL, p ? p->nsecrets : 0, text,
                        buf, size);
}

static const char *pull_keep(pgpipe_pull *p, const char *s)
{
    if (!s)
        return NULL;
    char **n = pp_realloc(p->strs, (size_t)(p->nstrs + 1) * sizeof *n);
    if (!n)
        return NULL;
    p->strs = n;
    return (p->strs[p->nstrs++] = pp_strdup(s));
}

/* Does a backfill range FROM..TO run backwards? Known only where both ends
** are integers (ids) or both ISO-8601 times of one shape (which compare as
** text); any other values are the API's to judge. */
static int pull_range_backwards(const char *from, const char *to)
{
    const char *ends[2] = { from, to };
    int ints = 1;
    for (int k = 0; k < 2; k++) {
        const char *q = ends[k] + (ends[k][0] == '-');
        ints &= *q && strspn(q, "0123456789") == strlen(q) && strlen(q) < 19;
    }
    if (ints)
        return strtoll(from, NULL, 10) > strtoll(to, NULL, 10);
    int iso = strlen(from) == strlen(to);
    for (int k = 0; iso && k < 2; k++)
        iso = strspn(ends[k], "0123456789") == 4 && ends[k][4] == '-';
    return iso && strcmp(from, to) > 0;
}

/* A secret from an environment variable or a file (its first line). */
static int pull_secret(pgpipe_pull *p, const char *what, const char *env, const char *file,
                       char **out)
{
    *out = NULL;
    if (env && file)
        return pull_errf(p, PGPIPE_MISUSE, "pull: %s from an environment variable or a file, not both", what);
    if (env) {
        const char *v = getenv(env);
        if (!v || !*v)
            return pull_errf(p, PGPIPE_IO, "pull: %s: environment variable %s is not set", what, env);
        *out = pp_strdup(v);
    } else if (file) {
        FILE *f = fopen(file, "r");
        if (!f)
            return pull_errf(p, PGPIPE_IO, "pull: %s: cannot read %s: %s", what, file, strerror(errno));
        char line[4096];
        if (!fgets(line, sizeof line, f))
            line[0] = '\0';
        fclose(f);
        line[strcspn(line, "\r\n")] = '\0';
        if (!line[0])
            return pull_errf(p, PGPIPE_IO, "pull: %s: %s is empty", what, file);
        *out = pp_strdup(line);
    } else {
        return PGPIPE_OK;
    }
    if (!*out)
        return pp_err_nomem(&p->h.err);
    if (p->nsecrets < PULL_MAX_SECRETS)
        p->secrets[p->nsecrets++] = *out;
    return PGPIPE_OK;
}

static int pull_nocr(const char *s)
{
    return !s || !strpbrk(s, "\r\n");
}

#ifndef PGPIPE_OMIT_THREADS
static pthread_once_t pull_curl_once = PTHREAD_ONCE_INIT;
static void pull_curl_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}
#endif

int pgpipe_pull_open(pgpipe_pull **out, const pgpipe_pull_options *opt)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_pull *p = *out = pp_handle_new(sizeof *p);
    if (!p)
        return PGPIPE_NOMEM;
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_init(&p->mu, NULL);
#endif
    p->rng = pp_rand_seed();
    if (!opt || !opt->source || !*opt->source || !opt->url || !*opt->url)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: options.source and options.url are required");
    if (strncmp(opt->url, "http://", 7) != 0 && strncmp(opt->url, "https://", 8) != 0)
        return pull_errf(p, PGPIPE_MISUSE, "pull: the URL must start with http:// or https://: %s", opt->url);
    {   /* a password in the URL would be stored with the resume point */
        const char *host = strstr(opt->url, "://") + 3;
        size_t at;
        if (pull_userinfo_pw(host, strlen(host), &at) > 0 || host[strcspn(host, "/?#@")] == '@')
            return pull_errf(p, PGPIPE_MISUSE, "pull: the URL holds credentials (%s): give them "
                             "with --basic-env VARIABLE or --basic-file PATH instead", opt->url);
    }
    if (opt->paginate < PGPIPE_PULL_NONE || opt->paginate > PGPIPE_PULL_PAGE)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: unknown pagination %d", opt->paginate);
    if (opt->paginate == PGPIPE_PULL_CURSOR && (!opt->cursor_path || !*opt->cursor_path))
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: cursor pagination needs a cursor path");
    {   /* "" is no value: a script's unset $STREAM must not read and move
        ** the cursor of the default stream */
        const char *const vals[] = { opt->stream, opt->event_type,
                                     opt->event_type_field, opt->cursor_path, opt->cursor_param,
                                     opt->more_path, opt->offset_param, opt->limit_param,
                                     opt->page_param, opt->total_path, opt->pages_path,
                                     opt->since_field, opt->since_param, opt->since_initial,
                                     opt->backfill_from, opt->backfill_to, opt->until_param,
                                     opt->ca_file, opt->method };
        static const char *const names[] = { "stream", "event type",
                                             "event type field", "cursor path", "cursor parameter",
                                             "more path", "offset parameter", "limit parameter",
                                             "page parameter", "total path", "pages path",
                                             "since field", "since parameter", "initial since",
                                             "backfill start", "backfill end", "until parameter",
                                             "CA file", "method" };
        int i = pp_first_empty(vals, (int)(sizeof vals / sizeof vals[0]));
        if (i >= 0)
            return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: the %s is empty; leave it out (NULL) "
                          "for the default", names[i]);
    }
    if (opt->event_type && opt->event_type_field)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: an event type or an event type field, not both");
    if (opt->method && strcmp(opt->method, "GET") != 0 && strcmp(opt->method, "POST") != 0)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: the method is GET or POST");
    if (opt->backfill_to && !opt->backfill_from)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: a backfill needs its start (backfill_from)");
    if (opt->backfill_from && opt->backfill_to &&
        pull_range_backwards(opt->backfill_from, opt->backfill_to))
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: the backfill runs backwards: its start "
                      "\"%s\" comes after its end \"%s\"", opt->backfill_from, opt->backfill_to);
    if (opt->api_key_header && !opt->api_key_env && !opt->api_key_file)
        return pp_err(&p->h.err, PGPIPE_MISUSE,
                      "pull: the API key comes from an environment variable or a file");
    if (!pull_nocr(opt->api_key_header))
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: a header holds a line break");
    p->o = *opt;
    pgpipe_pull_options *o = &p->o;
    /* copy every string: the caller's may go */
#define PULL_KEEP(f) do { if (opt->f && !(o->f = pull_keep(p, opt->f))) return pp_err_nomem(&p->h.err); } while (0)
    PULL_KEEP(conninfo); PULL_KEEP(source); PULL_KEEP(stream); PULL_KEEP(url); PULL_KEEP(method);
    PULL_KEEP(body); PULL_KEEP(records); PULL_KEEP(event_type); PULL_KEEP(event_type_field);
    PULL_KEEP(cursor_path); PULL_KEEP(cursor_param); PULL_KEEP(more_path); PULL_KEEP(offset_param);
    PULL_KEEP(limit_param); PULL_KEEP(page_param); PULL_KEEP(total_path); PULL_KEEP(pages_path);
    PULL_KEEP(since_field); PULL_KEEP(since_param); PULL_KEEP(since_initial);
    PULL_KEEP(backfill_from); PULL_KEEP(backfill_to); PULL_KEEP(until_param); PULL_KEEP(ca_file);
#undef PULL_KEEP
    o->bearer_env = o->bearer_file = o->basic_env = o->basic_file = NULL;
    o->api_key_env = o->api_key_file = o->api_key_header = NULL;
    o->headers = NULL;
    if (!o->stream)
        o->stream = "default";
    if (!o->method)
        o->method = "GET";
    if (!o->cursor_param)
        o->cursor_param = "cursor";
    if (!o->offset_param)
        o->offset_param = "offset";
    if (!o->page_param)
        o->page_param = "page";
    if (!o->since_param)
        o->since_param = "since";
    if (!o->until_param)
        o->until_param = "until";
    if (o->paginate == PGPIPE_PULL_OFFSET && !o->limit_param)
        o->limit_param = "limit";
    if (o->limit <= 0)
        o->limit = 100;
    if (o->backfill_from)
        snprintf(p->scope, sizeof p->scope, "backfill %s..%s", o->backfill_from,
                 o->backfill_to ? o->backfill_to : "");
    int n = 0;
    while (opt->headers && opt->headers[n])
        n++;
    if (!(p->hdrs = pp_calloc((size_t)n + 1, sizeof *p->hdrs)))
        return pp_err_nomem(&p->h.err);
    for (int i = 0; i < n; i++) {
        if (!pull_nocr(opt->headers[i]) || !strchr(opt->headers[i], ':'))
            return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: header %d is not one \"Name: value\" line", i + 1);
        if (!(p->hdrs[i] = pp_strdup(opt->headers[i])))
            return pp_err_nomem(&p->h.err);
    }

    /* secrets: never a value, an environment variable or a file */
    char *tok = NULL, *basic = NULL, *key = NULL;
    int rc = pull_secret(p, "the bearer token", opt->bearer_env, opt->bearer_file, &tok);
    if (rc == PGPIPE_OK)
        rc = pull_secret(p, "basic auth", opt->basic_env, opt->basic_file, &basic);
    if (rc == PGPIPE_OK)
        rc = pull_secret(p, "the API key", opt->api_key_env, opt->api_key_file, &key);
    if (rc != PGPIPE_OK)
        return rc;
    if (tok && basic)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: a bearer token or basic auth, not both");
    if ((tok && !pull_nocr(tok)) || (key && !pull_nocr(key)))
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: a secret holds a line break");
    pp_buf a = { 0 };
    if (tok) {
        rc = pp_buf_appendf(&a, "Authorization: Bearer %s", tok);
    } else if (basic) {
        if (!strchr(basic, ':'))
            return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: basic auth is \"user:password\"");
        size_t bl = strlen(basic);
        char *enc = pp_malloc(bl * 4 / 3 + 8);
        if (!enc)
            return pp_err_nomem(&p->h.err);
        size_t el = pp_base64_encode(enc, bl * 4 / 3 + 8, basic, bl, 0);
        enc[el] = '\0';
        rc = pp_buf_appendf(&a, "Authorization: Basic %s", enc);
        if (p->nsecrets < PULL_MAX_SECRETS)
            p->secrets[p->nsecrets++] = enc;
        else
            pp_free(enc);
    }
    if (rc != PGPIPE_OK)
        return pp_err_nomem(&p->h.err);
    p->auth_header = a.data;
    if (key) {
        pp_buf k = { 0 };
        if (pp_buf_appendf(&k, "%s: %s", opt->api_key_header, key) != PGPIPE_OK)
            return pp_err_nomem(&p->h.err);
        p->key_header = k.data;
    }

    if (!opt->budget && !PULL_RATE_OK(opt->rate))
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: the rate is 0 (no limit) or from 0.001 to "
                      "1000000 requests per second, not %g", opt->rate);
    if (opt->budget) {
        p->budget = opt->budget;
    } else {
        if ((rc = pgpipe_pull_budget_open(&p->own_budget, opt->rate, 1)) != PGPIPE_OK)
            return pp_err_nomem(&p->h.err);
        p->budget = p->own_budget;
    }
    if (o->timeout_ms <= 0 || o->connect_timeout_ms <= 0 || o->retry_budget_ms < 0)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: the timeouts are at least 1 ms and the retry "
                      "budget is not negative (timeout %d, connect timeout %d, retry budget %d)",
                      o->timeout_ms, o->connect_timeout_ms, o->retry_budget_ms);
    if (o->concurrency < 1 || o->concurrency > PULL_MAX_CONCURRENCY)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: the concurrency is 1 to %d, not %d",
                      PULL_MAX_CONCURRENCY, o->concurrency);
    if (o->max_body < 1 || o->max_body > (1ll << 40) || o->body_budget < 0 ||
        o->body_budget > (2ll << 40) || (o->body_budget && o->body_budget < o->max_body) ||
        (unsigned long long)o->max_body > SIZE_MAX / 4 ||
        (unsigned long long)o->body_budget > SIZE_MAX / 2) { /* 32-bit: at most 1 GB */
        char mb[32], bb[32];
        pull_bytes_text(o->max_body, mb, sizeof mb);
        pull_bytes_text(o->body_budget, bb, sizeof bb);
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: the largest body (--max-body, 1 byte to "
                      "1024 GB) is %s and the body budget (--body-budget, 0: twice the largest "
                      "body) %s: the budget must hold the largest body", mb, bb);
    }
    p->max_body = (size_t)o->max_body;
    p->body_budget = o->body_budget ? (size_t)o->body_budget : 2 * p->max_body;
    if ((rc = pgpipe_json_doc_open(&p->doc)) != PGPIPE_OK)
        return pp_err_nomem(&p->h.err);
#ifndef PGPIPE_OMIT_THREADS
    pthread_once(&pull_curl_once, pull_curl_init);
#else
    curl_global_init(CURL_GLOBAL_DEFAULT);
#endif
    if (!(p->slots = pp_calloc((size_t)o->concurrency, sizeof *p->slots)))
        return pp_err_nomem(&p->h.err);
    for (int i = 0; i < o->concurrency; i++) {
        p->slots[i].p = p;
        if (!(p->slots[i].easy = curl_easy_init()))
            return pp_err(&p->h.err, PGPIPE_ERROR, "pull: libcurl could not start");
    }
    if (!(p->multi = curl_multi_init()))
        return pp_err(&p->h.err, PGPIPE_ERROR, "pull: libcurl could not start");
    /* the request headers, the same for every request */
    struct curl_slist *hl = NULL;
    const char *fixed[4] = { p->auth_header, p->key_header, "Accept: application/json",
                             o->body && !strcmp(o->method, "POST") ? "Content-Type: application/json" : NULL };
    for (int i = 0; i < n + 4; i++) {
        const char *h = i < n ? p->hdrs[i] : fixed[i - n];
        if (!h)
            continue;
        struct curl_slist *t = curl_slist_append(hl, h);
        if (!t) {
            curl_slist_free_all(hl);
            return pp_err_nomem(&p->h.err);
        }
        hl = t;
    }
    p->hl = hl;

    p->conn = PQconnectdb(o->conninfo ? o->conninfo : "");
    if (PQstatus(p->conn) != CONNECTION_OK) {
        char m[512];
        pgpipe_conninfo_mask(PQerrorMessage(p->conn), m, sizeof m);
        m[strcspn(m, "\n")] = '\0';
        return pp_err(&p->h.err, PGPIPE_DB, "pull: connecting to the target: %s", m);
    }
    PQsetNoticeProcessor(p->conn, pp_notice_to_log, (void *)"pull");
    p->conns[0] = p->conn;
    p->nconn = 1;
    p->nw = 2;
    if (o->install && (rc = pgpipe_schema_install(p->conn, NULL, &p->h.err)) != PGPIPE_OK)
        return rc;
    return PGPIPE_OK;
}

void pgpipe_pull_close(pgpipe_pull *p)
{
    if (!p)
        return;
    for (int i = 0; p->slots && i < p->o.concurrency; i++) {
        pull_slot *s = &p->slots[i];
        if (s->easy) {
            if (s->state == SLOT_FETCH && p->multi)
                curl_multi_remove_handle(p->multi, s->easy);
            curl_easy_cleanup(s->easy);
        }
        pp_buf_free(&s->url);
        pp_buf_free(&s->body);
        pp_buf_free(&s->link);
    }
    pp_free(p->slots);
    if (p->multi)
        curl_multi_cleanup(p->multi);
    curl_slist_free_all(p->hl);
    for (int i = 1; i < PULL_MAX_WRITERS; i++)
        if (p->conns[i])
            PQfinish(p->conns[i]);
    for (int i = 0; i < PULL_MAX_WRITERS + 1; i++) {
        pp_buf_free(&p->w[i].copy);
        pp_buf_free(&p->w[i].dlq);
        pp_buf_free(&p->w[i].next);
        pp_buf_free(&p->w[i].jb[0]);
        pp_buf_free(&p->w[i].jb[1]);
    }
    if (p->conn)
        PQfinish(p->conn);
    for (int i = 0; i < p->nstrs; i++)
        pp_free(p->strs[i]);
    pp_free(p->strs);
    for (int i = 0; p->hdrs && p->hdrs[i]; i++)
        pp_free(p->hdrs[i]);
    pp_free(p->hdrs);
    for (int i = 0; i < p->nsecrets; i++) {
        memset(p->secrets[i], 0, strlen(p->secrets[i]));
        pp_free(p->secrets[i]);
    }
    if (p->auth_header) {
        memset(p->auth_header, 0, strlen(p->auth_header));
        pp_free(p->auth_header);
    }
    if (p->key_header) {
        memset(p->key_header, 0, strlen(p->key_header));
        pp_free(p->key_header);
    }
    pgpipe_pull_budget_close(p->own_budget);
    pgpipe_json_doc_close(p->doc);
    pp_buf_free(&p->rec);
    pp_buf_free(&p->fixes);
    pp_buf_free(&p->bad);
    pp_buf_free(&p->orig);
    pp_free(p->seen);
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_destroy(&p->mu);
#endif
    pp_free(p);
}

void pgpipe_pull_stop(pgpipe_pull *p)
{
    if (p)
        atomic_store(&p->stop, 1);
}

void pgpipe_pull_progress_get(pgpipe_pull *p, pgpipe_pull_progress *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!p)
        return;
    pp_mutex_lock(&p->mu);
    *out = p->prog;
    pp_mutex_unlock(&p->mu);
}

/* ---- the requests ------------------------------------------------------------ */

/* The bytes the writers hold: the rows of pages built, being written or
** waiting for their COMMIT, and what an idle one keeps. */
static size_t pull_rows_bytes(const pgpipe_pull *p)
{
    size_t n = 0;
    for (int i = 0; i < p->nw; i++)
        n += p->w[i].copy.cap + p->w[i].dlq.cap + p->w[i].next.cap;
    return n;
}

/* What the pages other than the one to parse next take of the body budget:
** their body buffers (requests in flight, pages received ahead) and the
** rows of the pages built before it. */
static size_t pull_ahead_bytes(const pgpipe_pull *p)
{
    size_t n = pull_rows_bytes(p);
    for (int i = 0; i < p->o.concurrency; i++) {
        const pull_slot *t = &p->slots[i];
        if (t->state != SLOT_FREE && t->seq != p->head_seq)
            n += t->body.cap;
    }
    return n;
}

/* Everything the budget counts, the page to parse next and its parse tree
** too; its peak goes to the progress (held_bytes_peak). */
static size_t pull_held_bytes(pgpipe_pull *p)
{
    size_t n = pull_rows_bytes(p) + p->orig.cap + pgpipe_json_doc_memory(p->doc);
    for (int i = 0; i < p->o.concurrency; i++)
        n += p->slots[i].body.cap;
    if ((long long)n > p->held_peak) {
        p->held_peak = (long long)n;
        pp_mutex_lock(&p->mu);
        p->prog.held_bytes_peak = p->held_peak;
        pp_mutex_unlock(&p->mu);
    }
    return n;
}

/* A writer done with its page keeps at most PULL_KEEP_BODY of each buffer. */
static void pull_writer_shrink(pull_writer *w)
{
    if (w->copy.cap > PULL_KEEP_BODY)
        pp_buf_free(&w->copy);
    if (w->dlq.cap > PULL_KEEP_BODY)
        pp_buf_free(&w->dlq);
    if (w->next.cap > PULL_KEEP_BODY)
        pp_buf_free(&w->next);
    for (int i = 0; i < 2; i++)
        if (w->jb[i].cap > PULL_KEEP_BODY)
            pp_buf_free(&w->jb[i]);
}

/* May the page to parse next (hs) be built now? Always when no other page's
** rows are held (one page always goes through); else when it, its rows
** (about its body's size) and all that is held stay within the budget. */
static int pull_room_to_build(pgpipe_pull *p, const pull_slot *hs)
{
    int busy = 0;
    for (int i = 0; i < p->nw; i++)
        busy |= p->w[i].state != W_IDLE;
    return !busy || pull_held_bytes(p) + hs->body.len <= p->body_budget;
}

/* The body as it comes, decoded (libcurl inflates gzip and deflate in
** pieces of at most CURL_MAX_WRITE_SIZE: a bomb stops at the limit). The
** buffer grows by doubling up to max_body; the page to parse next may
** always grow so far, the pages ahead only within what the budget leaves
** beside it (else the request is dropped, to be asked again at its turn). */
static size_t pull_on_body(char *data, size_t size, size_t n, void *ud)
{
    pull_slot *s = ud;
    pgpipe_pull *p = s->p;
    size_t len = size * n;
    if (len > p->max_body - s->body.len) {
        s->too_big = 1;
        return 0;
    }
    size_t need = s->body.len + len;
    if (need > s->body.cap) {
        size_t cap = s->body.cap ? s->body.cap : 16384;
        while (cap < need)
            cap = cap > p->max_body / 2 ? p->max_body : cap * 2;
        if (cap > p->max_body)
            cap = p->max_body;
        if (s->seq != p->head_seq &&
            pull_ahead_bytes(p) + (cap - s->body.cap) > p->body_budget - p->max_body) {
            s->no_room = 1;
            return 0;
        }
        char *d = pp_realloc(s->body.data, cap);
        if (!d)
            return 0;
        s->body.data = d;
        s->body.cap = cap;
        pull_held_bytes(p);
    }
    memcpy(s->body.data + s->body.len, data, len);
    s->body.len += len;
    return len;
}

static int pull_hdr_is(const char *line, size_t n, const char *name, const char **val, size_t *vlen)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return 0;
    const char *v = line + nl + 1, *e = line + n;
    while (v < e && (*v == ' ' || *v == '\t'))
        v++;
    while (e > v && (e[-1] == '\r' || e[-1] == '\n' || e[-1] == ' '))
        e--;
    *val = v;
    *vlen = (size_t)(e - v);
    return 1;
}

static size_t pull_on_header(char *line, size_t size, size_t n, void *ud)
{
    pull_slot *p = ud;
    size_t len = size * n;
    const char *v;
    size_t vl;
    char tmp[128];
    if (len >= 5 && strncmp(line, "HTTP/", 5) == 0) { /* a new response (redirects, 100) */
        p->link.len = 0;
        p->retry_after_s = -1;
        p->rl_remaining = -1;
        p->rl_reset = -1;
    } else if (pull_hdr_is(line, len, "Link", &v, &vl)) {
        if (p->link.len)
            pp_buf_putc(&p->link, ',');
        pp_buf_append(&p->link, v, vl);
        pp_buf_putc(&p->link, '\0');
        p->link.len--;
    } else if (pull_hdr_is(line, len, "Retry-After", &v, &vl) && vl < sizeof tmp) {
        memcpy(tmp, v, vl);
        tmp[vl] = '\0';
        if (vl && strspn(tmp, "0123456789") == vl) {
            p->retry_after_s = vl > 9 ? 1e9 : atof(tmp); /* absurd ones stay countable */
        } else {
            time_t t = curl_getdate(tmp, NULL);
            if (t != -1)
                p->retry_after_s = difftime(t, time(NULL)) > 0 ? difftime(t, time(NULL)) : 0;
        }
    } else if (pull_hdr_is(line, len, "X-RateLimit-Remaining", &v, &vl) && vl < sizeof tmp) {
        memcpy(tmp, v, vl);
        tmp[vl] = '\0';
        p->rl_remaining = atoll(tmp);
    } else if (pull_hdr_is(line, len, "X-RateLimit-Reset", &v, &vl) && vl < sizeof tmp) {
        memcpy(tmp, v, vl);
        tmp[vl] = '\0';
        p->rl_reset = atof(tmp);
        if (!(p->rl_reset >= 0 && p->rl_reset < 1e11)) /* NaN, negative or absurd */
            p->rl_reset = -1;
    }
    return len;
}

static int pull_on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt; (void)dn; (void)ut; (void)un;
    pull_slot *s = ud;
    return atomic_load(&s->p->stop) ? 1 : 0;
}

static void pull_prog_add(pgpipe_pull *p, long long *field, long long n)
{
    pp_mutex_lock(&p->mu);
    *field += n;
    pp_mutex_unlock(&p->mu);
}

/* Start the request of slot s (its budget slot taken). */
static int pull_start(pgpipe_pull *p, pull_slot *s)
{
    CURL *c = s->easy;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, s->url.data);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, p->hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, pull_on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, pull_on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, pull_on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(c, CURLOPT_PRIVATE, s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s->curl_err);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, ""); /* every encoding libcurl decodes: gzip, deflate, ... */
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    /* a redirect never goes from https to clear text (an API key header would follow) */
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR,
                     strncmp(s->url.data, "https:", 6) == 0 ? "https" : "http,https");
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)p->o.connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)p->o.timeout_ms);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "pgpipe/" PGPIPE_VERSION);
    if (p->o.ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, p->o.ca_file);
    if (strcmp(p->o.method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, p->o.body ? p->o.body : "");
    }
    s->body.len = 0;
    s->link.len = 0;
    s->status = 0;
    s->retry_after_s = -1;
    s->rl_remaining = -1;
    s->rl_reset = -1;
    s->too_big = 0;
    s->no_room = 0;
    s->at_head = 0;
    s->curl_err[0] = '\0';
    if (curl_multi_add_handle(p->multi, c) != CURLM_OK) {
        pull_budget_release(p->budget);
        return pull_slot_err(s, PGPIPE_ERROR, "pull: %s: libcurl could not start the request", s->url.data);
    }
    s->state = SLOT_FETCH;
    return PGPIPE_OK;
}

/* Slot s's request ended with cr: the page is in (GOT), to be asked
** again later (WAIT, after a backoff, a Retry-After), or failed for good
** (FAILED). */
static void pull_done(pgpipe_pull *p, pull_slot *s, CURLcode cr)
{
    CURL *c = s->easy;
    curl_multi_remove_handle(p->multi, c);
    pull_budget_release(p->budget);
    curl_off_t got = 0;
    curl_easy_getinfo(c, CURLINFO_SIZE_DOWNLOAD_T, &got);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &s->status);
    pp_mutex_lock(&p->mu);
    p->prog.requests++;
    p->prog.bytes += (long long)got;
    pp_mutex_unlock(&p->mu);
    const char *url = s->url.data;

    /* the server's rate limit: nobody asks again before the reset, but
    ** never longer than the retry budget (a wrong clock or a hostile
    ** server must not stop every stream of the source for days) */
    if (s->rl_remaining == 0 && s->rl_reset >= 0) {
        double sec = s->rl_reset > 1e9 ? s->rl_reset - (double)time(NULL) : s->rl_reset;
        if (sec * 1000 > p->o.retry_budget_ms) {
            if (pp_log_enabled(PGPIPE_LOG_WARN)) {
                char m[1024];
                pull_mask_to((const char *const *)p->secrets, p->nsecrets, url, m, sizeof m);
                pp_logf(PGPIPE_LOG_WARN, "pull", "%s: X-RateLimit-Reset asks to wait %.0f s; "
                        "waiting the retry budget (%d ms) instead", m, sec, p->o.retry_budget_ms);
            }
            sec = p->o.retry_budget_ms / 1000.0;
        }
        if (sec > 0)
            pull_budget_pause(p->budget, (int64_t)(sec * 1e6));
    }
    if (cr == CURLE_ABORTED_BY_CALLBACK && atomic_load(&p->stop)) {
        pull_slot_err(s, PGPIPE_BUSY, "pull: stopped");
        return;
    }
    if (s->too_big) {
        char lim[32];
        pull_bytes_text((long long)p->max_body, lim, sizeof lim);
        pull_slot_err(s, PGPIPE_LIMIT, "pull: %s: the response body is over the limit of %s "
                      "(--max-body; counted decoded, as it arrives): the page is not loaded",
                      url, lim);
        return;
    }
    if (s->no_room) { /* a page ahead: asked again at its turn, no failure */
        pp_buf_free(&s->body);
        s->state = SLOT_WAIT;
        s->at_head = 1;
        s->due_us = 0;
        return;
    }
    char why[CURL_ERROR_SIZE + 32];
    if (cr != CURLE_OK) {
        snprintf(why, sizeof why, "%s", s->curl_err[0] ? s->curl_err : curl_easy_strerror(cr));
        /* TLS and URL problems do not heal */
        if (cr == CURLE_UNSUPPORTED_PROTOCOL || cr == CURLE_URL_MALFORMAT ||
            cr == CURLE_PEER_FAILED_VERIFICATION || cr == CURLE_SSL_CACERT_BADFILE ||
            cr == CURLE_SSL_CERTPROBLEM || cr == CURLE_TOO_MANY_REDIRECTS) {
            pull_slot_err(s, PGPIPE_IO, "pull: %s: %s", url, why);
            return;
        }
    } else if (s->status >= 200 && s->status < 300) {
        s->state = SLOT_GOT;
        return;
    } else {
        snprintf(why, sizeof why, "HTTP %ld", s->status);
        if (s->status != 429 && s->status != 503 && s->status != 408 && s->status < 500) {
            /* the start of the body says why (masked: an API may echo the key) */
            char snip[200];
            size_t sl = s->body.len < sizeof snip - 1 ? s->body.len : sizeof snip - 1;
            memcpy(snip, s->body.data ? s->body.data : "", sl);
            snip[sl] = '\0';
            for (size_t i = 0; i < sl; i++)
                if (snip[i] == '\n' || snip[i] == '\r')
                    snip[i] = ' ';
            pull_slot_err(s, PGPIPE_IO, "pull: %s: HTTP %ld%s%s", url, s->status, sl ? ": " : "", snip);
            return;
        }
    }
    /* network errors, 408, 429, 5xx: again after exponential backoff with
    ** full jitter (a Retry-After sets the wait), until the time budget
    ** would be passed */
    int64_t now = pgpipe_now_us();
    if (!s->first_fail_us)
        s->first_fail_us = now;
    int k = s->attempts;
    int64_t cap = PULL_BACKOFF_BASE_MS << (k < 7 ? k : 7);
    if (cap > PULL_BACKOFF_MAX_MS)
        cap = PULL_BACKOFF_MAX_MS;
    int64_t delay = (int64_t)(pp_rand_next(&p->rng) % (uint64_t)(cap + 1));
    int asked = (s->status == 429 || s->status == 503) && s->retry_after_s >= 0;
    if (asked)
        delay = (int64_t)(s->retry_after_s * 1000) + delay / 10;
    s->attempts = ++k;
    int64_t spent = (now - s->first_fail_us) / 1000;
    if (spent + delay >= p->o.retry_budget_ms) {
        char longer[96] = "";
        if (asked && delay > p->o.retry_budget_ms)
            snprintf(longer, sizeof longer, ", the server's Retry-After asked to wait %.0f s",
                     s->retry_after_s);
        pull_slot_err(s, PGPIPE_IO, "pull: %s: %s; gave up after %d attempts in %.1f s (retry budget %d ms%s)",
                      url, why, k, (double)spent / 1000, p->o.retry_budget_ms, longer);
        return;
    }
    if (asked) /* no stream of the source asks before the server's time */
        pull_budget_pause(p->budget, (int64_t)(s->retry_after_s * 1e6));
    pull_prog_add(p, &p->prog.retries, 1);
    if (pp_log_enabled(PGPIPE_LOG_WARN)) {
        char m[1024];
        pull_mask_to((const char *const *)p->secrets, p->nsecrets, url, m, sizeof m);
        pp_logf(PGPIPE_LOG_WARN, "pull", "%s: %s; retry %d in %lld ms", m, why, k, (long long)delay);
    }
    s->due_us = now + delay * 1000;
    s->state = SLOT_WAIT;
}

/* Drop slot s's page (it is not needed, or the run ends). */
static void pull_drop(pgpipe_pull *p, pull_slot *s)
{
    if (s->state == SLOT_FETCH) {
        curl_multi_remove_handle(p->multi, s->easy);
        pull_budget_release(p->budget);
    }
    s->state = SLOT_FREE;
    s->attempts = 0;
    s->at_head = 0;
    s->first_fail_us = s->due_us = 0;
    /* a page's body may be large: a free slot keeps at most PULL_KEEP_BODY */
    if (s->body.cap > PULL_KEEP_BODY)
        pp_buf_free(&s->body);
}

/* ---- the state -------------------------------------------------------------- */

typedef struct pull_state {
    char *cursor;               /* incremental cursor (NULL: none) */
    char *next_url;             /* resume point (NULL: start anew) */
    char *run_high;
    long long run_pages, run_records;
} pull_state;

static void pull_state_free(pull_state *s)
{
    pp_free(s->cursor);
    pp_free(s->next_url);
    pp_free(s->run_high);
    memset(s, 0, sizeof *s);
}

static char *pull_val(PGresult *r, int col)
{
    return PQgetisnull(r, 0, col) ? NULL : pp_strdup(PQgetvalue(r, 0, col));
}

static int pull_state_read(pgpipe_pull *p, pull_state *s)
{
    const char *par[4] = { p->o.source, p->o.stream, p->scope, p->scope[0] ? NULL : p->o.since_initial };
    int rc = pp_exec(p->conn,
                     "INSERT INTO pgpipe.pull_state (source, stream, scope, cursor) "
                     "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                     4, par, NULL, &p->h.err, "pull: the stream's state");
    PGresult *r = NULL;
    if (rc == PGPIPE_OK)
        rc = pp_exec(p->conn,
                     "SELECT cursor, next_url, run_high, run_pages, run_records FROM pgpipe.pull_state "
                     "WHERE source = $1 AND stream = $2 AND scope = $3",
                     3, par, &r, &p->h.err, "pull: the stream's state");
    if (rc != PGPIPE_OK)
        return rc;
    if (PQntuples(r) == 1) {
        s->cursor = pull_val(r, 0);
        s->next_url = pull_val(r, 1);
        s->run_high = pull_val(r, 2);
        s->run_pages = atoll(PQgetvalue(r, 0, 3));
        s->run_records = atoll(PQgetvalue(r, 0, 4));
    }
    PQclear(r);
    return PGPIPE_OK;
}

static int pull_seen(pgpipe_pull *p, const char *s)
{
    uint64_t h = pp_hash64(s);
    for (size_t i = 0; i < p->nseen; i++)
        if (p->seen[i] == h)
            return 1;
    if (p->nseen == p->capseen) {
        size_t cap = p->capseen ? p->capseen * 2 : 64;
        uint64_t *n = pp_realloc(p->seen, cap * sizeof *n);
        if (!n)
            return 0;
        p->seen = n;
        p->capseen = cap;
    }
    p->seen[p->nseen++] = h;
    return 0;
}

/* ---- a page ----------------------------------------------------------------- */

/* The text of a scalar (string or number) into out; 1 when it is one. */
static int pull_scalar(const pgpipe_json_val *v, char *out, size_t size)
{
    size_t n;
    const char *s = pgpipe_json_get_str(v, &n);
    if (!s)
        s = pgpipe_json_number_text(v, &n);
    if (!s || n + 1 > size)
        return 0;
    memcpy(out, s, n);
    out[n] = '\0';
    return 1;
}

/* "\u0000" in a JSON text (the writer escapes NUL so, and nothing else). */
static int pull_has_nul_escape(const char *s, size_t n)
{
    const char *e = s + n;
    while (s < e && (s = memchr(s, '\\', (size_t)(e - s))) != NULL) {
        if (e - s >= 6 && memcmp(s, "\\u0000", 6) == 0)
            return 1;
        s += 2; /* the escaped character (an escaped backslash is not a new escape) */
    }
    return 0;
}

/* A dead letter for record i (1-based) of the page. */
static int pull_dead(pgpipe_pull *p, pull_writer *w, const char *url, long long page, long long i,
                     const char *raw, size_t rawlen, const char *msg, const char *batch,
                     long long off)
{
    char ctx[1200], m[1100];
    pull_mask_to((const char *const *)p->secrets, p->nsecrets, url, m, sizeof m);
    snprintf(ctx, sizeof ctx, "pull %s/%s page %lld record %lld: %s %s", p->o.source, p->o.stream,
             page, i, p->o.method, m);
    pp_dlq_load_letter d = { .source = p->o.source, .line = i, .column = 0, .offset = off,
                             .load_id = 0, .batch_id = batch, .raw = raw, .rawlen = rawlen,
                             .message = msg, .sqlstate = NULL, .context = ctx };
    return pp_dlq_load_row(&w->dlq, &d) == PGPIPE_OK ? PGPIPE_OK : pp_err_nomem(&p->h.err);
}

/* ---- a page that does not parse: the records around a bad one --------------- */

/* A byte (or a NaN/Infinity token) of a body that did not parse, replaced
** in place so that the rest parses: what was there and why. */
enum { FIX_UTF8, FIX_CTRL, FIX_ESC, FIX_SURROGATE, FIX_NAN };
typedef struct pull_fix {
    size_t off;                 /* in the body */
    unsigned char kind, byte, len; /* len: bytes replaced (a token: 3, 8 or 9) */
} pull_fix;
#define PULL_MAX_FIXES 65536
#define PULL_DEAD_RAW_MAX ((size_t)1 << 20) /* a dead letter keeps this much of a bad record */

/* A record set aside: the index (1-based) in the page's array, its bytes in
** the body, its first fix and how many it has. */
typedef struct pull_bad {
    long long idx;
    size_t start, end;
    size_t first, nfix;         /* into the fixes */
} pull_bad;

static int pull_hex4(const unsigned char *s, size_t avail, unsigned *out)
{
    unsigned u = 0;
    if (avail < 4)
        return 0;
    for (int k = 0; k < 4; k++) {
        int d = pp_hex_value((unsigned char)s[k]);
        if (d < 0)
            return 0;
        u = u * 16 + (unsigned)d;
    }
    *out = u;
    return 1;
}

static int pull_fix_add(pp_buf *fx, size_t off, int kind, unsigned char byte, size_t len)
{
    pull_fix f = { off, (unsigned char)kind, byte, (unsigned char)len };
    if (!fx) /* not listed (pull_salvage compares with the body as sent) */
        return PGPIPE_OK;
    if (pp_buf_append(fx, &f, sizeof f) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    /* the one past the limit is listed too: its byte is replaced all the same,
    ** and pull_salvage undoes what is listed */
    return fx->len / sizeof f > PULL_MAX_FIXES ? PGPIPE_LIMIT : PGPIPE_OK;
}

/* Replace in t[0..n) what the JSON parser refuses inside a value without
** the value's bounds being in doubt: in strings a byte of invalid UTF-8 by
** '?', an unescaped control character by ' ', the backslash of an invalid
** escape or of a lone surrogate by '?'; the tokens NaN, Infinity and
** -Infinity (after ':', ',' or '[') by a number as long, 0.0..., with no
** white space a record's bounds would be trimmed by. Strings end at the same
** quotes as before, so the structure is the one sent. fx gets a pull_fix
** each (fx NULL: none). PGPIPE_OK, PGPIPE_LIMIT (too many) or PGPIPE_NOMEM. */
static int pull_fix_body(unsigned char *t, size_t n, pp_buf *fx)
{
    int rc = PGPIPE_OK;
    unsigned char prev = 0; /* the last byte outside strings that is not white space */
    for (size_t i = 0; i < n && rc == PGPIPE_OK;) {
        unsigned char c = t[i];
        if (c != '"') {
            static const char *const toks[] = { "NaN", "Infinity", "-Infinity" };
            for (int k = 0; k < 3 && (c == 'N' || c == 'I' || c == '-'); k++) {
                size_t tl = strlen(toks[k]);
                if ((prev == ':' || prev == ',' || prev == '[') && n - i >= tl &&
                    memcmp(t + i, toks[k], tl) == 0 &&
                    (i + tl == n || strchr(" \t\r\n,]}", t[i + tl]))) {
                    rc = pull_fix_add(fx, i, FIX_NAN, c, tl);
                    memcpy(t + i, "0.0000000", tl);
                    break;
                }
            }
            if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
                prev = c;
            i++;
            continue;
        }
        prev = c;
        for (i++; i < n && rc == PGPIPE_OK;) { /* a string */
            c = t[i];
            if (c == '"') {
                i++;
                break;
            }
            if (c == '\\') {
                unsigned u, lo;
                if (i + 1 >= n)
                    return PGPIPE_OK; /* cut off: the parse fails anyway */
                unsigned char e = t[i + 1];
                if (e && strchr("\"\\/bfnrt", e)) {
                    i += 2;
                } else if (e == 'u' && pull_hex4(t + i + 2, n - i - 2, &u)) {
                    if (u >= 0xD800 && u <= 0xDBFF && n - i >= 12 && t[i + 6] == '\\' &&
                        t[i + 7] == 'u' && pull_hex4(t + i + 8, n - i - 8, &lo) && lo >= 0xDC00 &&
                        lo <= 0xDFFF) {
                        i += 12;
                    } else if (u >= 0xD800 && u <= 0xDFFF) {
                        rc = pull_fix_add(fx, i, FIX_SURROGATE, '\\', 1);
                        t[i] = '?';
                        i += 6;
                    } else {
                        i += 6;
                    }
                } else { /* the byte after it is read as text again */
                    rc = pull_fix_add(fx, i, FIX_ESC, '\\', 1);
                    t[i] = '?';
                    i++;
                }
            } else if (c < 0x20) {
                rc = pull_fix_add(fx, i, FIX_CTRL, c, 1);
                t[i] = ' ';
                i++;
            } else if (c >= 0x80) {
                size_t k;
                if (pp_utf8_problem(t + i, n - i, &k)) {
                    rc = pull_fix_add(fx, i, FIX_UTF8, c, 1);
                    t[i] = '?';
                    k = 1;
                }
                i += k;
            } else {
                i++;
            }
        }
    }
    return rc;
}

/* What fix f says, into out. */
static void pull_fix_text(const pull_fix *f, char *out, size_t size)
{
    unsigned char b[4] = { f->byte, 0, 0, 0 };
    size_t k;
    const char *fmt;
    switch (f->kind) {
    case FIX_UTF8:
        fmt = pp_utf8_problem(b, 1, &k); /* a lone lead byte reads as truncated: the byte says */
        snprintf(out, size, fmt ? fmt : "invalid UTF-8 in string: byte 0x%02X", f->byte);
        break;
    case FIX_CTRL:
        snprintf(out, size, "unescaped control character U+%04X in string", f->byte);
        break;
    case FIX_ESC:
        snprintf(out, size, "invalid escape sequence in string");
        break;
    case FIX_SURROGATE:
        snprintf(out, size, "lone surrogate escape in string (jsonb cannot store it)");
        break;
    default:
        snprintf(out, size, "%s is not a JSON value", f->len == 3 ? "NaN" : f->len == 8 ? "Infinity"
                                                                               : "-Infinity");
    }
}

/* The arrays and objects before target in document order under root
** (target's opening bracket is the next one in the text); -1 when target
** is not under root or memory ran out. */
static long long pull_ordinal(const pgpipe_json_val *root, const pgpipe_json_val *target)
{
    if (root == target)
        return 0;
    pp_buf st = { 0 }; /* a stack of iterators */
    pgpipe_json_iter it;
    long long n = 1, found = -1;
    if (pgpipe_json_iter_init(&it, root) != PGPIPE_OK || pp_buf_append(&st, &it, sizeof it))
        return -1;
    while (st.len && found < 0) {
        pgpipe_json_iter *top = (pgpipe_json_iter *)(void *)(st.data + st.len - sizeof it);
        const pgpipe_json_val *v = pgpipe_json_iter_next(top, NULL);
        if (!v) {
            st.len -= sizeof it;
        } else if (v == target) {
            found = n;
        } else if (pgpipe_json_iter_init(&it, v) == PGPIPE_OK) {
            n++;
            if (pp_buf_append(&st, &it, sizeof it) != PGPIPE_OK)
                break;
        }
    }
    pp_buf_free(&st);
    return found;
}

/* The fix that turned byte at of orig (the body as sent) into t[at]. */
static pull_fix pull_fix_at(const unsigned char *orig, const unsigned char *t, size_t n, size_t at)
{
    pull_fix f = { at, FIX_UTF8, orig[at], 1 };
    if (t[at] == '0' && (orig[at] == 'N' || orig[at] == 'I' || orig[at] == '-')) {
        f.kind = FIX_NAN;
        f.len = orig[at] == 'N' ? 3 : orig[at] == 'I' ? 8 : 9;
    } else if (orig[at] == '\\') {
        f.kind = at + 1 < n && orig[at + 1] == 'u' ? FIX_SURROGATE : FIX_ESC;
    } else if (orig[at] < 0x20) {
        f.kind = FIX_CTRL;
    }
    return f;
}

/* The bytes of t[a..b) that differ from orig[a..b); *first the first one. */
static size_t pull_diffs(const char *t, const char *orig, size_t a, size_t b, size_t *first)
{
    size_t nd = 0;
    for (size_t i = a; i < b; i++)
        if (t[i] != orig[i] && !nd++)
            *first = i;
    return nd;
}

/* The elements of the array whose opening bracket is the ordinal-th of
** t[0..n) (valid JSON: it parsed), in order: each(ctx, idx, start, end)
** with idx 1-based and [start, end) the element's bytes without the white
** space around them. Returns the element count; -1 when it is not an array
** there or each failed (returned other than PGPIPE_OK). */
typedef int (*pull_each_fn)(void *ctx, long long idx, size_t start, size_t end);
static long long pull_walk_records(const char *t, size_t n, long long ordinal, pull_each_fn each,
                                   void *ctx)
{
    long long seen = -1, count = 0;
    int depth = 0;      /* 1: in the array, between its elements */
    size_t start = 0;   /* the element's first byte (0: none; the '[' comes before any) */
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
            continue;
        if (depth == 1 && (c == ',' || c == ']')) {
            if (start) { /* element count + 1 is [start, i) */
                size_t e = i;
                while (e > start && strchr(" \t\r\n", t[e - 1]))
                    e--;
                if (each(ctx, ++count, start, e) != PGPIPE_OK)
                    return -1;
                start = 0;
            }
            if (c == ']')
                return count;
            continue;
        }
        if (depth == 1 && !start)
            start = i;
        if (c == '"') {
            for (i++; i < n && t[i] != '"'; i++)
                i += t[i] == '\\';
        } else if (c == '[' || c == '{') {
            if (depth)
                depth++;
            else if (++seen == ordinal) {
                if (c != '[')
                    return -1;
                depth = 1;
            }
        } else if ((c == ']' || c == '}') && depth > 1) {
            depth--;
        }
    }
    return -1;
}

/* pull_bad_records' walk: the fixes listed (sorted by offset), the next one
** k; *outside = 1 when one lies outside the elements. */
typedef struct pull_listed {
    const pull_fix *fix;
    size_t nfix, k;
    pp_buf *bad;
    int *outside;
} pull_listed;

static int pull_bad_listed(void *ctx, long long idx, size_t start, size_t end)
{
    pull_listed *w = ctx;
    for (; w->k < w->nfix && w->fix[w->k].off < end; w->k++) {
        pull_bad *last = w->bad->len ? (pull_bad *)(void *)(w->bad->data + w->bad->len - sizeof *last)
                                     : NULL;
        if (w->fix[w->k].off < start) {
            *w->outside = 1;
        } else if (last && last->idx == idx) {
            last->nfix++;
        } else {
            pull_bad b = { idx, start, end, w->k, 1 };
            if (pp_buf_append(w->bad, &b, sizeof b) != PGPIPE_OK)
                return PGPIPE_NOMEM;
        }
    }
    return PGPIPE_OK;
}

/* The elements of the array whose opening bracket is the ordinal-th of
** t[0..n) that hold one of the nfix fixes (sorted by offset): appended to
** bad. Returns the array's element count, -1 when it is not an array there
** or memory ran out; *outside = 1 when a fix lies outside the elements. */
static long long pull_bad_records(const char *t, size_t n, long long ordinal, const pull_fix *fix,
                                  size_t nfix, pp_buf *bad, int *outside)
{
    pull_listed w = { fix, nfix, 0, bad, outside };
    *outside = 0;
    long long count = pull_walk_records(t, n, ordinal, pull_bad_listed, &w);
    if (count >= 0)
        *outside |= w.k < nfix;
    return count;
}

/* pull_bad_records_diff's walk: t as fixed, orig as sent; inside counts the
** bytes that differ inside the elements. */
typedef struct pull_differ {
    const char *t, *orig;
    size_t n, inside;
    pp_buf *fixes, *bad;
} pull_differ;

static int pull_bad_differ(void *ctx, long long idx, size_t start, size_t end)
{
    pull_differ *w = ctx;
    size_t first = 0, nd = pull_diffs(w->t, w->orig, start, end, &first);
    if (!nd)
        return PGPIPE_OK;
    pull_fix f = pull_fix_at((const unsigned char *)w->orig, (const unsigned char *)w->t, w->n, first);
    pull_bad b = { idx, start, end, w->fixes->len / sizeof f, nd };
    if (pp_buf_append(w->fixes, &f, sizeof f) != PGPIPE_OK || pp_buf_append(w->bad, &b, sizeof b) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    w->inside += nd;
    return PGPIPE_OK;
}

/* pull_bad_records when the fixes were too many to list: the records are
** those whose bytes differ from orig (the body as sent), each with one fix
** made up from its first different byte (appended to fixes) and nfix its
** count of different bytes. */
static long long pull_bad_records_diff(const char *t, const char *orig, size_t n, long long ordinal,
                                       pp_buf *fixes, pp_buf *bad, int *outside)
{
    pull_differ w = { t, orig, n, 0, fixes, bad };
    size_t first = 0;
    *outside = 0;
    fixes->len = 0;
    long long count = pull_walk_records(t, n, ordinal, pull_bad_differ, &w);
    if (count >= 0)
        *outside = pull_diffs(t, orig, 0, n, &first) != w.inside;
    return count;
}

/* The body of page hs (url) did not parse (the parser's error is in the
** doc). What lies inside values is fixed in place (pull_fix_body) and the
** body parsed again: when it parses and every fix lies inside a record of
** the record array, p->bad lists those records (p->fixes their fixes), the
** doc holds the page and *arr is the array. Else PGPIPE_PARSE (or the
** parser's PGPIPE_LIMIT) with the handle's error naming the URL and the
** byte offset of the first problem. */
static int pull_salvage(pgpipe_pull *p, pull_slot *hs, const char *url, const pgpipe_json_val **arr)
{
    pgpipe_error orig = *pgpipe_errinfo(p->doc);
    const char *why = NULL;
    p->fixes.len = p->bad.len = p->orig.len = 0;
    if (orig.code == PGPIPE_PARSE && hs->body.len) {
        unsigned char *t = (unsigned char *)hs->body.data;
        int rc = pull_fix_body(t, hs->body.len, &p->fixes);
        size_t nfix = p->fixes.len / sizeof(pull_fix);
        int outside = 0;
        if (rc == PGPIPE_LIMIT) {
            /* too many to list (a long record of bad bytes): undo them, keep
            ** the body as sent and tell the records by their bytes */
            const pull_fix *fx = (const pull_fix *)(void *)p->fixes.data;
            for (size_t k = nfix; k-- > 0;) {
                if (fx[k].kind == FIX_NAN)
                    memcpy(t + fx[k].off, fx[k].len == 3 ? "NaN" : fx[k].len == 8 ? "Infinity"
                                                                                   : "-Infinity",
                           fx[k].len);
                else
                    t[fx[k].off] = fx[k].byte;
            }
            p->fixes.len = 0;
            rc = pp_buf_append(&p->orig, t, hs->body.len);
            if (rc == PGPIPE_OK)
                rc = pull_fix_body(t, hs->body.len, NULL);
            nfix = 1;
        }
        if (rc == PGPIPE_NOMEM)
            return pp_err_nomem(&p->h.err);
        if (!nfix || pgpipe_json_parse(p->doc, hs->body.data, hs->body.len) != PGPIPE_OK) {
            why = ""; /* the structure: nothing can be told apart */
        } else {
            const pgpipe_json_val *root = pgpipe_json_root(p->doc);
            *arr = pgpipe_json_path(root, pull_path(p->o.records));
            long long ord = pgpipe_json_type(*arr) == PGPIPE_JSON_ARRAY ? pull_ordinal(root, *arr) : -1;
            long long cnt = ord < 0 ? -1
                            : p->orig.len ? pull_bad_records_diff(hs->body.data, p->orig.data,
                                                                  hs->body.len, ord, &p->fixes,
                                                                  &p->bad, &outside)
                            : pull_bad_records(hs->body.data, hs->body.len, ord,
                                               (const pull_fix *)(void *)p->fixes.data, nfix,
                                               &p->bad, &outside);
            if (cnt != (long long)pgpipe_json_len(*arr))
                why = "the record array is not where --records says";
            else if (outside)
                why = "the problem is outside the records";
        }
    }
    if (!why)
        return PGPIPE_OK;
    p->bad.len = 0;
    if (p->orig.len) { /* the body as sent, for the error's offsets */
        memcpy(hs->body.data, p->orig.data, hs->body.len);
        pp_buf_free(&p->orig);
    }
    return pull_errf(p, orig.code, "pull: %s: the body is not JSON: %s (byte offset %lld of the body)%s%s; "
                     "the page is not loaded and each run stops at it until it is served parseable",
                     url, orig.message, orig.offset, *why ? "; " : "", why);
}

/* A record set aside by pull_salvage: its bytes as sent, its first problem
** and where. */
static int pull_dead_bad(pgpipe_pull *p, pull_writer *w, const char *url, long long page,
                         const pull_bad *b, const char *body, const char *batch)
{
    const pull_fix *fx = (const pull_fix *)(void *)p->fixes.data + b->first;
    pp_buf raw = { 0 };
    size_t len = b->end - b->start, keep = len > PULL_DEAD_RAW_MAX ? PULL_DEAD_RAW_MAX : len;
    if (pp_buf_append(&raw, (p->orig.len ? p->orig.data : body) + b->start, keep) != PGPIPE_OK)
        return pp_err_nomem(&p->h.err);
    for (size_t j = 0; !p->orig.len && j < b->nfix && fx[j].off - b->start < keep; j++) {
        size_t at = fx[j].off - b->start;
        if (fx[j].kind == FIX_NAN) /* a token may go past what is kept */
            memcpy(raw.data + at, fx[j].len == 3 ? "NaN" : fx[j].len == 8 ? "Infinity" : "-Infinity",
                   fx[j].len < keep - at ? fx[j].len : keep - at);
        else
            raw.data[at] = (char)fx[j].byte;
    }
    char what[200], msg[400];
    pull_fix_text(fx, what, sizeof what);
    snprintf(msg, sizeof msg, "pull: the record is not valid JSON: %s at byte offset %zu of the page "
             "(byte %zu of the record)", what, fx->off, fx->off - b->start + 1);
    if (p->orig.len && b->nfix > 1)
        snprintf(msg + strlen(msg), sizeof msg - strlen(msg), ", %zu bad bytes in all", b->nfix);
    else if (b->nfix > 1)
        snprintf(msg + strlen(msg), sizeof msg - strlen(msg), ", and %zu more problem%s",
                 b->nfix - 1, b->nfix > 2 ? "s" : "");
    if (keep < len)
        snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "; the record is %zu bytes from byte "
                 "offset %zu of the page: its first %zu are kept", len, b->start, keep);
    int rc = pull_dead(p, w, url, page, b->idx, raw.data, raw.len, msg, batch, (long long)b->start);
    pp_buf_free(&raw);
    return rc;
}

/* The COPY rows of the page's records (w->copy) and its dead letters
** (w->dlq), built once, without an allocation per record; *nok staged,
** *ndead dead-lettered; high is the largest cursor field value (in and
** out, size 512); *digest a hash of the records' text (FNV-1a). The nbad
** records of bad (sorted; pull_salvage) are dead-lettered with their bytes
** in body. */
static int pull_rows(pgpipe_pull *p, pull_writer *w, const pgpipe_json_val *arr, const char *url, long long page,
                     const char *batch, int maybe_nul, long long *nok, long long *ndead, char *high,
                     uint64_t *digest, const pull_bad *bad, size_t nbad, const char *body)
{
    size_t bi = 0;
    uint64_t dg = 14695981039346656037ULL;
    pgpipe_json_iter it;
    pgpipe_json_iter_init(&it, arr);
    const pgpipe_json_val *v;
    long long i = 0;
    const char *const_type = p->o.event_type ? p->o.event_type : p->o.stream;
    size_t ctl = strlen(const_type);
    size_t srcl = strlen(p->o.source);
    const char *tpath = p->o.event_type_field ? pull_path(p->o.event_type_field) : NULL;
    const char *spath = p->o.since_field ? pull_path(p->o.since_field) : NULL;
    /* the row's start (source, type) when the type is constant: once a page */
    pp_copy_w cw = p->cw;
    unsigned char batch_bin[16];
    char pre[600];
    size_t prel = 0;
    if (pp_uuid_bin(batch, batch_bin) != 0)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: the batch id \"%s\" is not a uuid", batch);
    if (!tpath) {
        pp_buf t = { 0 };
        int e = pp_copy_row_begin(&cw, &t, 4);
        e |= pp_copy_text_field(&cw, &t, 0, p->o.source, srcl);
        e |= pp_copy_text_field(&cw, &t, 1, const_type, ctl);
        if (e == PGPIPE_OK && t.len < sizeof pre) {
            memcpy(pre, t.data, t.len);
            prel = t.len;
        }
        pp_buf_free(&t);
    }
    while ((v = pgpipe_json_iter_next(&it, NULL)) != NULL) {
        i++;
        if (PP_UNLIKELY(bi < nbad) && bad[bi].idx == i) {
            int rc = pull_dead_bad(p, w, url, page, &bad[bi++], body, batch);
            if (rc != PGPIPE_OK)
                return rc;
            (*ndead)++;
            continue;
        }
        /* the record's text */
        size_t len = 0;
        for (;;) {
            int wr = pgpipe_json_write_to(v, p->rec.data, p->rec.cap, &len);
            if (wr == PGPIPE_OK)
                break;
            if (wr != PGPIPE_LIMIT || pp_buf_reserve(&p->rec, len + 1 - p->rec.len) != PGPIPE_OK)
                return pp_err_nomem(&p->h.err);
        }
        const char *txt = p->rec.data;
        const char *type = const_type;
        size_t typel = ctl;
        for (size_t k = 0; k <= len; k++) /* the text, then a separator */
            dg = (dg ^ (k < len ? (unsigned char)txt[k] : 0x100u)) * 1099511628211ULL;
        *digest = dg;
        if (pgpipe_json_type(v) != PGPIPE_JSON_OBJECT) { /* as every other source */
            char m[100];
            snprintf(m, sizeof m, "pull: the record is a JSON %s, not an object",
                     pgpipe_json_type_name(pgpipe_json_type(v)));
            int rc = pull_dead(p, w, url, page, i, txt, len, m, batch, 0);
            if (rc != PGPIPE_OK)
                return rc;
            (*ndead)++;
            continue;
        }
        if (tpath) {
            const pgpipe_json_val *t = pgpipe_json_path(v, tpath);
            type = pgpipe_json_get_str(t, &typel);
            if (!type || !typel) {
                char m[300];
                snprintf(m, sizeof m, "pull: the record has no event type: \"%s\" is %s", tpath,
                         t ? "not a non-empty string" : "missing");
                int rc = pull_dead(p, w, url, page, i, txt, len, m, batch, 0);
                if (rc != PGPIPE_OK)
                    return rc;
                (*ndead)++;
                continue;
            }
        }
        /* jsonb holds no \u0000 (a string of the record would refuse the page) */
        if (maybe_nul && pull_has_nul_escape(txt, len)) {
            int rc = pull_dead(p, w, url, page, i, txt, len,
                               "pull: the record holds \\u0000, which jsonb cannot store", batch, 0);
            if (rc != PGPIPE_OK)
                return rc;
            (*ndead)++;
            continue;
        }
        if (spath) {
            char val[512];
            if (pull_scalar(pgpipe_json_path(v, spath), val, sizeof val) &&
                (!high[0] || pp_pull_cursor_cmp(val, high, NULL) > 0))
                memcpy(high, val, strlen(val) + 1);
        }
        pp_buf *cb = &w->copy;
        int rc;
        if (prel) {
            rc = pp_buf_append(cb, pre, prel);
        } else {
            rc = pp_copy_row_begin(&cw, cb, 4);
            rc |= pp_copy_text_field(&cw, cb, 0, p->o.source, srcl);
            rc |= pp_copy_text_field(&cw, cb, 1, type, typel);
        }
        /* in jsonb's member order: the server's jsonb input has nothing to sort */
        rc |= pp_copy_field_begin(&cw, cb, 2);
        rc |= pp_copy_put_jsonb(&cw, cb, w->jb, txt, len);
        pp_copy_field_end(&cw, cb);
        rc |= pp_copy_field_begin(&cw, cb, 3);
        rc |= pp_copy_put_uuid(&cw, cb, batch, batch_bin);
        pp_copy_field_end(&cw, cb);
        rc |= pp_copy_row_end(&cw, cb);
        if (rc != PGPIPE_OK)
            return pp_err_nomem(&p->h.err);
        (*nok)++;
    }
    return PGPIPE_OK;
}

/* Start a COPY on conn and send b (after binary COPY's header when bin):
** the result is read by pull_results. */
static int pull_copy_send(pgpipe_pull *p, PGconn *conn, const char *sql, int bin, const pp_buf *b,
                          const char *ctx)
{
    int rc = pp_copy_in_start(conn, sql, &p->h.err, ctx);
    if (rc != PGPIPE_OK)
        return rc;
    if (bin && PQputCopyData(conn, PP_COPY_BIN_HEADER, PP_COPY_BIN_HEADER_LEN) != 1)
        rc = pp_err_pq(&p->h.err, conn, NULL, ctx);
    if (b->len && PQputCopyData(conn, b->data, (int)b->len) != 1)
        rc = pp_err_pq(&p->h.err, conn, NULL, ctx);
    if (PQputCopyEnd(conn, rc == PGPIPE_OK ? NULL : "pgpipe pull: aborted") != 1 && rc == PGPIPE_OK)
        rc = pp_err_pq(&p->h.err, conn, NULL, ctx);
    return rc;
}

/* The results of what was sent on conn (waits when they are not in). */
static int pull_results(pgpipe_pull *p, PGconn *conn, const char *ctx)
{
    int rc = PGPIPE_OK;
    PGresult *r;
    while ((r = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (rc == PGPIPE_OK && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            const char *ss = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            if (ss && !strcmp(ss, "22012") && strstr(ctx, "COMMIT of the page"))
                rc = pp_err(&p->h.err, PGPIPE_DB, "pull: the state row of %s/%s is gone (deleted "
                            "during the run): the page was not committed", p->o.source, p->o.stream);
            else
                rc = pp_err_pq(&p->h.err, conn, r, ctx);
        }
        PQclear(r);
    }
    return rc;
}

/* A literal for SQL text: 'x' quoted by libpq, or NULL. */
static int pull_lit(PGconn *conn, pp_buf *b, const char *v)
{
    if (!v)
        return pp_buf_append(b, "NULL", 4);
    char *q = PQescapeLiteral(conn, v, strlen(v));
    if (!q)
        return PGPIPE_NOMEM;
    int rc = pp_buf_append(b, q, strlen(q));
    PQfreemem(q);
    return rc;
}

/* The COPY of the rows into staging (pull_rows wrote them in its format). */
static const char *pull_rows_copy(const pgpipe_pull *p)
{
    return p->cw.binary ? "COPY staging.raw_events (source, event_type, payload, batch_id) FROM "
                          "STDIN (FORMAT binary)"
                        : "COPY staging.raw_events (source, event_type, payload, batch_id) FROM STDIN";
}

/* Writer w's page goes to the target: "BEGIN; COPY" and its rows, not
** waited for (W_COPY); a page without rows is READY at once (its dead
** letters, if any, copied). */
static int pull_write_start(pgpipe_pull *p, pull_writer *w)
{
    int rc = PGPIPE_OK;
    w->begun = 0;
    if (w->copy.len) {
        char sql[160];
        snprintf(sql, sizeof sql, PP_BEGIN "; %s", pull_rows_copy(p));
        rc = pull_copy_send(p, w->conn, sql, p->cw.binary, &w->copy, "pull: COPY into staging");
        w->begun = 1;
        w->state = W_COPY;
    } else {
        w->state = W_READY;
        if (w->dlq.len) {
            char sql[512];
            snprintf(sql, sizeof sql, PP_BEGIN "; %s", pp_dlq_load_copy_sql());
            rc = pull_copy_send(p, w->conn, sql, 0, &w->dlq, "pull: dead letters");
            if (rc == PGPIPE_OK)
                rc = pull_results(p, w->conn, "pull: dead letters");
            w->begun = 1;
        }
    }
    return rc;
}

/* Writer w's COPY is done (its results are in): the dead letters, then READY. */
static int pull_write_copied(pgpipe_pull *p, pull_writer *w)
{
    int rc = pull_results(p, w->conn, "pull: COPY into staging");
    if (rc == PGPIPE_OK && w->dlq.len) {
        rc = pull_copy_send(p, w->conn, pp_dlq_load_copy_sql(), 0, &w->dlq, "pull: dead letters");
        if (rc == PGPIPE_OK)
            rc = pull_results(p, w->conn, "pull: dead letters");
    }
    w->state = W_READY;
    return rc;
}

/* The statement that stores writer w's page in the stream's state (without
** BEGIN or COMMIT): next NULL = the run ended here (cur, when set, becomes
** the stream's incremental cursor). It fails (22012) when the state row is
** gone, so the page never commits without its cursor. */
static int pull_state_sql(pgpipe_pull *p, pull_writer *w, pp_buf *q)
{
    PGconn *c = w->conn;
    const char *next = w->end ? NULL : w->next.data;
    int e = pp_buf_appendf(q, "WITH u AS (UPDATE pgpipe.pull_state SET next_url = ");
    e |= pull_lit(c, q, next);
    if (w->end)
        e |= pp_buf_appendf(q, ", run_pages = 0, run_records = 0, run_high = NULL, run_started_at = NULL,"
                               " last_status = 'done', cursor = coalesce(");
    else
        e |= pp_buf_appendf(q, ", run_pages = run_pages + 1, run_records = run_records + %lld,"
                               " run_started_at = coalesce(run_started_at, now()), last_status = 'running',"
                               " run_high = ", w->n);
    e |= pull_lit(c, q, w->end ? (w->has_cur ? w->cur : NULL) : (w->high[0] ? w->high : NULL));
    e |= pp_buf_appendf(q, "%s, pages = pages + 1, records = records + %lld, dead_lettered = dead_lettered + %lld,"
                           " last_error = NULL, last_run_at = now(), updated_at = now() WHERE source = ",
                        w->end ? ", cursor)" : "", w->nok, w->ndead);
    e |= pull_lit(c, q, p->o.source);
    e |= pp_buf_appendf(q, " AND stream = ");
    e |= pull_lit(c, q, p->o.stream);
    e |= pp_buf_appendf(q, " AND scope = ");
    e |= pull_lit(c, q, p->scope);
    e |= pp_buf_appendf(q, " RETURNING 1) SELECT 1 / (SELECT count(*)::int FROM u)");
    return e ? PGPIPE_NOMEM : PGPIPE_OK;
}

/* Writer w's page, the page after the last committed one and without dead
** letters, in one implicit transaction: "COPY ...; <state>" as one simple
** query, its rows sent, not waited for (W_COMMIT). Two round trips a page
** instead of three. */
static int pull_write_commit(pgpipe_pull *p, pull_writer *w)
{
    pp_buf q = { 0 };
    int rc = pp_buf_appendf(&q, "%s; ", pull_rows_copy(p));
    rc |= pull_state_sql(p, w, &q);
    rc |= pp_buf_putc(&q, '\0');
    if (rc != PGPIPE_OK) {
        pp_buf_free(&q);
        return pp_err_nomem(&p->h.err);
    }
    rc = pull_copy_send(p, w->conn, q.data, p->cw.binary, &w->copy, "pull: COPY into staging");
    pp_buf_free(&q);
    w->begun = 0;
    w->solo = 1;
    w->state = W_COMMIT;
    return rc;
}

/* Writer w's page commits with the stream's state: sent, not waited for
** (W_COMMIT); pull_results says how it went. */
static int pull_commit_send(pgpipe_pull *p, pull_writer *w)
{
    pp_buf q = { 0 };
    int e = pp_buf_appendf(&q, "%s", w->begun ? "" : PP_BEGIN "; ");
    e |= pull_state_sql(p, w, &q);
    e |= pp_buf_appendf(&q, "; COMMIT");
    int rc = PGPIPE_OK;
    if (e)
        rc = pp_err_nomem(&p->h.err);
    else if (!PQsendQuery(w->conn, q.data))
        rc = pp_err_pq(&p->h.err, w->conn, NULL, "pull: storing the cursor");
    pp_buf_free(&q);
    w->solo = 0;
    w->state = W_COMMIT;
    return rc;
}

/* The first page of a run without a resume point. */
static int pull_first_url(pgpipe_pull *p, const pull_state *s, pp_buf *u)
{
    pp_buf t = { 0 };
    int rc = pp_buf_append(u, p->o.url, strlen(p->o.url));
    rc |= pp_buf_putc(u, '\0');
    u->len--;
#define PULL_SET(name, val) do { if (rc == PGPIPE_OK) { rc = pp_pull_param_set(&t, u->data, name, val); \
        pp_buf sw = *u; *u = t; t = sw; } } while (0)
    char num[32];
    if (p->o.paginate == PGPIPE_PULL_OFFSET) {
        snprintf(num, sizeof num, "%d", p->o.limit);
        PULL_SET(p->o.limit_param, num);
        PULL_SET(p->o.offset_param, "0");
    } else if (p->o.paginate == PGPIPE_PULL_PAGE) {
        snprintf(num, sizeof num, "%d", p->o.first_page);
        PULL_SET(p->o.page_param, num);
        if (p->o.limit_param) {
            snprintf(num, sizeof num, "%d", p->o.limit);
            PULL_SET(p->o.limit_param, num);
        }
    }
    if (p->scope[0]) {
        PULL_SET(p->o.since_param, p->o.backfill_from);
        if (p->o.backfill_to)
            PULL_SET(p->o.until_param, p->o.backfill_to);
    } else if (s->cursor && *s->cursor) {
        if (p->o.since_field)
            PULL_SET(p->o.since_param, s->cursor);
        else if (p->o.paginate == PGPIPE_PULL_CURSOR)
            PULL_SET(p->o.cursor_param, s->cursor);
        else
            PULL_SET(p->o.since_param, s->cursor);
    }
#undef PULL_SET
    pp_buf_free(&t);
    return rc;
}

/* A Link target resolved against the page's URL. */
static int pull_resolve(pgpipe_pull *p, const char *base, const char *rel, pp_buf *out)
{
    CURLU *u = curl_url();
    char *s = NULL;
    int rc = PGPIPE_OK;
    if (!u || curl_url_set(u, CURLUPART_URL, base, 0) != CURLUE_OK ||
        curl_url_set(u, CURLUPART_URL, rel, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_URL, &s, 0) != CURLUE_OK)
        rc = pull_errf(p, PGPIPE_ERROR, "pull: %s: the Link next \"%s\" is not a URL", base, rel);
    else {
        out->len = 0;
        if (pp_buf_append(out, s, strlen(s) + 1) != PGPIPE_OK)
            rc = pp_err_nomem(&p->h.err);
        else
            out->len--;
    }
    curl_free(s);
    curl_url_cleanup(u);
    return rc;
}

/* The scheme, host and port of url into out ("https host 443"); 0 when
** url is not one. */
static int pull_origin(const char *url, char *out, size_t size)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    int ok = u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK;
    if (ok)
        snprintf(out, size, "%s %s %s", scheme, host, port);
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return ok;
}

/* Refuse a Link next that leaves the page's origin: the credentials and
** headers of the source would go with it (to another host, in clear text
** after a change from https to http, or to a scheme that is not HTTP). */
static int pull_link_check(pgpipe_pull *p, long long page, const char *url, const char *next)
{
    char a[600], b[600];
    if (strncmp(next, "http://", 7) != 0 && strncmp(next, "https://", 8) != 0)
        return pull_errf(p, PGPIPE_ERROR, "pull: page %lld (%s): the Link next %s is not an "
                         "http(s) URL; not followed", page, url, next);
    if (!pull_origin(url, a, sizeof a) || !pull_origin(next, b, sizeof b))
        return pull_errf(p, PGPIPE_ERROR, "pull: page %lld (%s): the Link next \"%s\" is not a URL",
                         page, url, next);
    if (strcmp(a, b) != 0)
        return pull_errf(p, PGPIPE_ERROR, "pull: page %lld (%s): the Link next %s goes to another "
                         "%s; not followed (the source's credentials would go with it)", page, url,
                         next, strcspn(a, " ") != strcspn(b, " ") || strncmp(a, b, strcspn(a, " "))
                         ? "scheme" : "host or port");
    return PGPIPE_OK;
}

/* A number at path of the body: 1 when there. */
static int pull_body_int(const pgpipe_json_val *root, const char *path, long long *out)
{
    int64_t v;
    if (!path || pgpipe_json_get_int64(pgpipe_json_path(root, pull_path(path)), &v) != PGPIPE_OK)
        return 0;
    *out = (long long)v;
    return 1;
}

static void pull_progress(pgpipe_pull *p, int done)
{
    pp_mutex_lock(&p->mu);
    p->prog.seconds = (double)(pgpipe_now_us() - p->started_us) / 1e6;
    p->prog.records_per_s = p->prog.seconds > 0 ? (double)p->prog.records / p->prog.seconds : 0;
    p->prog.done = done;
    pgpipe_pull_progress snap = p->prog;
    pp_mutex_unlock(&p->mu);
    if (p->o.progress)
        p->o.progress(p->o.progress_ud, &snap);
}

/* Where the listing goes after this page: *end = 1 when it ends here
** (*endcur: the API's cursor to keep), else next holds the next URL. */
static int pull_next(pgpipe_pull *p, const char *url, const pp_buf *link, const pgpipe_json_val *root, long long n,
                     long long run_in, long long run_page, pp_buf *next, int *end, char *endcur,
                     size_t endcurlen)
{
    const pgpipe_pull_options *o = &p->o;
    char cur[512], num[32];
    long long total = -1, npages = -1;
    int has_total = pull_body_int(root, o->total_path, &total);
    int has_pages = pull_body_int(root, o->pages_path, &npages);
    *end = 0;
    endcur[0] = '\0';
    if (has_total && run_in > total)
        return pull_errf(p, PGPIPE_ERROR,
                         "pull: incomplete pagination at page %lld (%s): %lld records so far, more "
                         "than the total of %lld the API reports", run_page, url, run_in, total);
    switch (o->paginate) {
    case PGPIPE_PULL_NONE:
        *end = 1;
        break;
    case PGPIPE_PULL_LINK: {
        char target[8192];
        if (!link->len || !pp_pull_link_next(link->data, target, sizeof target)) {
            *end = 1;
            break;
        }
        int rc = pull_resolve(p, url, target, next);
        if (rc == PGPIPE_OK)
            rc = pull_link_check(p, run_page, url, next->data);
        if (rc != PGPIPE_OK)
            return rc;
        if (!strcmp(next->data, url) || pull_seen(p, next->data))
            return pull_errf(p, PGPIPE_ERROR,
                             "pull: incomplete pagination at page %lld (%s): the Link next %s "
                             "was requested before in this run", run_page, url, next->data);
        break;
    }
    case PGPIPE_PULL_CURSOR: {
        const pgpipe_json_val *cv = pgpipe_json_path(root, pull_path(o->cursor_path));
        int more = 1;
        if (o->more_path) {
            const pgpipe_json_val *mv = pgpipe_json_path(root, pull_path(o->more_path));
            more = pgpipe_json_type(mv) == PGPIPE_JSON_BOOL ? pgpipe_json_get_bool(mv) : 0;
        }
        int have = pull_scalar(cv, cur, sizeof cur) && cur[0];
        if (!more || !have) {
            *end = 1;
            if (have)
                snprintf(endcur, endcurlen, "%s", cur);
            break;
        }
        char old[512];
        int had = pp_pull_param_get(url, o->cursor_param, old, sizeof old) && old[0];
        int numeric = 0;
        if (had && pp_pull_cursor_cmp(cur, old, &numeric) == 0)
            return pull_errf(p, PGPIPE_ERROR,
                             "pull: incomplete pagination at page %lld (%s): the next cursor \"%s\" "
                             "repeats this page's", run_page, url, cur);
        if (had && numeric && pp_pull_cursor_cmp(cur, old, NULL) < 0)
            return pull_errf(p, PGPIPE_ERROR,
                             "pull: incomplete pagination at page %lld (%s): the next cursor %s "
                             "goes backwards from %s", run_page, url, cur, old);
        char key[600];
        snprintf(key, sizeof key, "cursor\x01%s", cur);
        if (pull_seen(p, key))
            return pull_errf(p, PGPIPE_ERROR,
                             "pull: incomplete pagination at page %lld (%s): the next cursor \"%s\" "
                             "was seen before in this run", run_page, url, cur);
        if (pp_pull_param_set(next, url, o->cursor_param, cur) != PGPIPE_OK)
            return pp_err_nomem(&p->h.err);
        break;
    }
    case PGPIPE_PULL_OFFSET: {
        long long off = pp_pull_param_get(url, o->offset_param, cur, sizeof cur) ? atoll(cur) : 0;
        if (has_total && off + n < total && n == 0)
            return pull_errf(p, PGPIPE_ERROR,
                             "pull: incomplete pagination at page %lld (%s): an empty page at "
                             "offset %lld, before the total of %lld the API reports", run_page, url,
                             off, total);
        if (n == 0 || (has_total ? off + n >= total : n < o->limit)) {
            *end = 1;
            break;
        }
        snprintf(num, sizeof num, "%lld", off + n);
        if (pp_pull_param_set(next, url, o->offset_param, num) != PGPIPE_OK)
            return pp_err_nomem(&p->h.err);
        break;
    }
    case PGPIPE_PULL_PAGE: {
        long long pg = pp_pull_param_get(url, o->page_param, cur, sizeof cur) ? atoll(cur) : o->first_page;
        long long idx = pg - o->first_page + 1; /* 1-based */
        if (has_pages && n == 0 && idx <= npages)
            return pull_errf(p, PGPIPE_ERROR,
                             "pull: incomplete pagination at page %lld (%s): page %lld of the %lld "
                             "the API reports is empty", run_page, url, pg, npages);
        if (has_pages && n > 0 && idx > npages)
            return pull_errf(p, PGPIPE_ERROR,
                             "pull: incomplete pagination at page %lld (%s): page %lld holds records "
                             "but the API reports %lld pages", run_page, url, pg, npages);
        if (n == 0 || (has_pages && idx >= npages) || (has_total && run_in >= total) ||
            (!has_pages && !has_total && o->limit_param && n < o->limit)) {
            *end = 1;
            break;
        }
        snprintf(num, sizeof num, "%lld", pg + 1);
        if (pp_pull_param_set(next, url, o->page_param, num) != PGPIPE_OK)
            return pp_err_nomem(&p->h.err);
        break;
    }
    }
    if (!*end && n == 0 && o->stop_on_empty)
        *end = 1;
    if (*end && has_total && run_in != total)
        return pull_errf(p, PGPIPE_ERROR,
                         "pull: incomplete pagination at page %lld (%s): the listing ended after "
                         "%lld records, the API reports a total of %lld", run_page, url, run_in, total);
    return PGPIPE_OK;
}

static int pull_lock(pgpipe_pull *p, int take)
{
    char key[1024];
    snprintf(key, sizeof key, "pgpipe.pull %s\x01%s\x01%s", p->o.source, p->o.stream, p->scope);
    const char *par[1] = { key };
    PGresult *r = NULL;
    int rc = pp_exec(p->conn,
                     take ? "SELECT pg_try_advisory_lock(hashtextextended($1, 0))"
                          : "SELECT pg_advisory_unlock(hashtextextended($1, 0))",
                     1, par, &r, take ? &p->h.err : NULL, "pull: the stream's lock");
    if (rc == PGPIPE_OK && take && strcmp(PQgetvalue(r, 0, 0), "t") != 0)
        rc = pp_err(&p->h.err, PGPIPE_BUSY, "pull: %s/%s%s%s is being pulled by another run",
                    p->o.source, p->o.stream, p->scope[0] ? " " : "", p->scope);
    PQclear(r);
    return rc;
}

static void pull_run_end(pgpipe_pull *p, const char *run_id, int rc, int paused)
{
    if (!run_id[0] || PQstatus(p->conn) != CONNECTION_OK)
        return;
    char pages[24], recs[24], dead[24], reqs[24], retr[24];
    snprintf(pages, sizeof pages, "%lld", p->prog.pages);
    snprintf(recs, sizeof recs, "%lld", p->prog.records);
    snprintf(dead, sizeof dead, "%lld", p->prog.dead_lettered);
    snprintf(reqs, sizeof reqs, "%lld", p->prog.requests);
    snprintf(retr, sizeof retr, "%lld", p->prog.retries);
    const char *status = rc == PGPIPE_OK ? (paused ? "paused" : "done")
                         : rc == PGPIPE_BUSY ? "stopped" : "failed";
    const char *err = rc == PGPIPE_OK ? NULL : p->h.err.message;
    const char *par[10] = { run_id, status, pages, recs, dead, reqs, retr, err, p->o.source, p->o.stream };
    pp_exec(p->conn,
            "WITH r AS (UPDATE pgpipe.pull_runs SET finished_at = now(), status = $2, pages = $3::bigint,"
            " records = $4::bigint, dead_lettered = $5::bigint, requests = $6::bigint,"
            " retries = $7::bigint, error = $8 WHERE id = $1::bigint) "
            "UPDATE pgpipe.pull_state SET last_status = CASE WHEN $2 IN ('failed', 'stopped') THEN $2"
            " ELSE last_status END, last_error = $8, last_run_at = now() "
            "WHERE source = $9 AND stream = $10 AND scope = (SELECT scope FROM pgpipe.pull_runs WHERE id = $1::bigint)",
            10, par, NULL, NULL, NULL);
}

/* The writers' connections beyond the first: up to min(concurrency, 4),
** fewer (with a warning) when the target refuses more. */
static void pull_writers_open(pgpipe_pull *p)
{
    int want = p->o.concurrency < PULL_MAX_WRITERS ? p->o.concurrency : PULL_MAX_WRITERS;
    p->nconn = 1;
    for (int i = 1; i < want; i++) {
        PGconn **c = &p->conns[i];
        if (*c && PQstatus(*c) != CONNECTION_OK)
            PQreset(*c);
        if (!*c)
            *c = PQconnectdb(p->o.conninfo ? p->o.conninfo : "");
        if (!*c || PQstatus(*c) != CONNECTION_OK) {
            char m[512];
            pgpipe_conninfo_mask(*c ? PQerrorMessage(*c) : "out of memory", m, sizeof m);
            m[strcspn(m, "\n")] = '\0';
            pp_logf(PGPIPE_LOG_WARN, "pull", "%s/%s: %d page writers instead of %d: %s", p->o.source,
                    p->o.stream, i, want, m);
            PQfinish(*c);
            *c = NULL;
            break;
        }
        PQsetNoticeProcessor(*c, pp_notice_to_log, (void *)"pull");
        p->nconn = i + 1;
    }
    p->nw = p->nconn + 1;
}

/* A writer back to idle: what it sent is read and its transaction rolled back. */
static void pull_writer_reset(pull_writer *w)
{
    PGresult *r;
    if (w->conn && w->state != W_BUILT && PQstatus(w->conn) == CONNECTION_OK) {
        if (PQisBusy(w->conn) || w->state == W_COPY || w->state == W_COMMIT)
            while ((r = PQgetResult(w->conn)) != NULL) {
                if (PQresultStatus(r) == PGRES_COPY_IN)
                    PQputCopyEnd(w->conn, "pgpipe pull: aborted");
                PQclear(r);
            }
        pp_rollback_open(w->conn);
    }
    w->state = W_IDLE;
    w->conn = NULL;
    pull_writer_shrink(w);
}

/* The offset or page number of the URL a run starts at (--url, or the
** resume point, which an operator may have set by hand) must be a whole
** number from 0 to 10^15: the next ones are counted from it in 64 bits. */
#define PULL_MAX_URL_NUM 1000000000000000LL
static int pull_url_nums_check(pgpipe_pull *p, const char *url, int resumed)
{
    const char *param = p->o.paginate == PGPIPE_PULL_OFFSET ? p->o.offset_param
                        : p->o.paginate == PGPIPE_PULL_PAGE ? p->o.page_param : NULL;
    char v[64];
    if (!param || !pp_pull_param_get(url, param, v, sizeof v))
        return PGPIPE_OK;
    char *e;
    errno = 0;
    long long x = strtoll(v, &e, 10);
    if (isdigit((unsigned char)v[0]) && !*e && !errno && x <= PULL_MAX_URL_NUM)
        return PGPIPE_OK;
    return pull_errf(p, PGPIPE_MISUSE, "pull: %s: %s=%s is not a whole number from 0 to 10^15 "
                     "(%s)", url, param, v, resumed ? "the resume point, pgpipe.pull_state.next_url"
                                                    : "--url");
}

/* The URL of page seq, known for page kseq (kurl): kurl itself, or with
** OFFSET and PAGE pagination a page after it (the pages before it full);
** 0 when it is not known yet or lies past the total the API reported. */
static int pull_predict(pgpipe_pull *p, long long kseq, const char *kurl, long long seq,
                        long long total, long long npages, pp_buf *out)
{
    const pgpipe_pull_options *o = &p->o;
    char v[64];
    long long k = seq - kseq;
    out->len = 0;
    if (k == 0) {
        if (pp_buf_append(out, kurl, strlen(kurl) + 1) != PGPIPE_OK)
            return 0;
        out->len--;
        return 1;
    }
    if (k < 0)
        return 0;
    if (o->paginate == PGPIPE_PULL_OFFSET) {
        long long off = pp_pull_param_get(kurl, o->offset_param, v, sizeof v) ? atoll(v) : 0;
        off += k * o->limit;
        if (total >= 0 && off >= total)
            return 0;
        snprintf(v, sizeof v, "%lld", off);
        return pp_pull_param_set(out, kurl, o->offset_param, v) == PGPIPE_OK;
    }
    if (o->paginate == PGPIPE_PULL_PAGE) {
        long long pg = pp_pull_param_get(kurl, o->page_param, v, sizeof v) ? atoll(v) : o->first_page;
        pg += k;
        long long idx = pg - o->first_page + 1;
        if (npages >= 0 && idx > npages)
            return 0;
        if (total >= 0 && o->limit_param && (idx - 1) * o->limit >= total)
            return 0;
        snprintf(v, sizeof v, "%lld", pg);
        return pp_pull_param_set(out, kurl, o->page_param, v) == PGPIPE_OK;
    }
    return 0;
}

static pull_slot *pull_slot_of(pgpipe_pull *p, long long seq)
{
    for (int i = 0; i < p->o.concurrency; i++)
        if (p->slots[i].state != SLOT_FREE && p->slots[i].seq == seq)
            return &p->slots[i];
    return NULL;
}

/* Drop the pages from seq on. */
static void pull_drop_from(pgpipe_pull *p, long long seq)
{
    for (int i = 0; i < p->o.concurrency; i++)
        if (p->slots[i].state != SLOT_FREE && p->slots[i].seq >= seq)
            pull_drop(p, &p->slots[i]);
}

int pgpipe_pull_run(pgpipe_pull *p)
{
    if (!p)
        return PGPIPE_MISUSE;
    if (!p->multi || !p->conn)
        return pp_err(&p->h.err, PGPIPE_MISUSE, "pull: the handle did not open");
    pp_mutex_lock(&p->mu);
    memset(&p->prog, 0, sizeof p->prog);
    pp_mutex_unlock(&p->mu);
    p->started_us = pgpipe_now_us();
    p->nseen = 0;
    pgpipe_error_clear(&p->h.err);
    if (PQstatus(p->conn) != CONNECTION_OK) {
        PQreset(p->conn);
        if (PQstatus(p->conn) != CONNECTION_OK)
            return pp_err_pq(&p->h.err, p->conn, NULL, "pull: connecting to the target");
    }
    int rc = pull_lock(p, 1);
    if (rc != PGPIPE_OK)
        return rc;
    pp_copy_w_format(&p->cw, pp_copy_staging_format(p->conn, "staging.raw_events"));
    pull_state s = { 0 };
    pp_buf url = { 0 };
    char run_id[24] = "";
    rc = pull_state_read(p, &s);
    if (rc == PGPIPE_OK) {
        /* a run that died (kill -9) left its row running: it ended then */
        const char *par[3] = { p->o.source, p->o.stream, p->scope };
        PGresult *r = NULL;
        rc = pp_exec(p->conn,
                     "WITH old AS (UPDATE pgpipe.pull_runs SET status = 'failed', finished_at = now(),"
                     " error = 'interrupted' WHERE source = $1 AND stream = $2 AND scope = $3"
                     " AND status = 'running') "
                     "INSERT INTO pgpipe.pull_runs (source, stream, scope) VALUES ($1, $2, $3) RETURNING id",
                     3, par, &r, &p->h.err, "pull: the run's history");
        if (rc == PGPIPE_OK)
            snprintf(run_id, sizeof run_id, "%s", PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    if (rc == PGPIPE_OK) {
        if (s.next_url) {
            if (pp_buf_append(&url, s.next_url, strlen(s.next_url) + 1) != PGPIPE_OK)
                rc = pp_err_nomem(&p->h.err);
            url.len--;
        } else {
            rc = pull_first_url(p, &s, &url) == PGPIPE_OK ? PGPIPE_OK : pp_err_nomem(&p->h.err);
        }
    }
    if (rc == PGPIPE_OK)
        rc = pull_url_nums_check(p, url.data, s.next_url != NULL);
    char high[512];
    snprintf(high, sizeof high, "%s", s.run_high ? s.run_high : "");
    long long parsed_in = s.run_records, run_page = s.run_pages;
    long long prev_n = 0;       /* the page before: its record count and digest */
    uint64_t prev_digest = 0;
    if (rc == PGPIPE_OK) {
        pull_seen(p, url.data);
        pull_writers_open(p);
    }

    /* Pages head, head+1, ... are requested (at most concurrency of them
    ** held), parsed in order as they arrive (the next URL comes from the
    ** page before), written on a free writer and committed in order. url
    ** is the URL known for page kseq: the others are predicted from it
    ** (OFFSET, PAGE) or not requested before it is parsed. halt: no new
    ** page (an error, the end); abort: no new COMMIT either. */
    const int C = p->o.concurrency;
    long long head = run_page + 1, kseq = head, next_fetch = head, committed = run_page;
    long long last = p->o.max_pages > 0 ? run_page + p->o.max_pages : LLONG_MAX, end_seq = LLONG_MAX;
    long long total = -1, npages = -1;
    int halt = rc != PGPIPE_OK, abort_ = halt, erc = rc;
    pgpipe_error first = p->h.err;
#define PULL_FAIL(code, ab) do { if (erc == PGPIPE_OK) { erc = (code); first = p->h.err; } \
                                 halt = 1; if (ab) abort_ = 1; } while (0)
    int64_t wait_since = 0;
    for (;;) {
        int moved = 0;
        if (!halt && atomic_load(&p->stop)) {
            pp_err(&p->h.err, PGPIPE_BUSY, "pull: stopped");
            PULL_FAIL(PGPIPE_BUSY, 1);
        }
        if (halt)
            pull_drop_from(p, 0);
        p->head_seq = head;
        /* what came in */
        int running = 0;
        curl_multi_perform(p->multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(p->multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            pull_slot *sl = NULL;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&sl);
            if (sl && sl->state == SLOT_FETCH)
                pull_done(p, sl, m->data.result);
            moved = 1;
        }
        for (int i = 0; i < p->nw; i++) {
            pull_writer *w = &p->w[i];
            if (w->state != W_COPY && w->state != W_COMMIT)
                continue;
            if (!PQconsumeInput(w->conn) || !PQisBusy(w->conn)) {
                moved = 1;
                if (w->state == W_COPY) {
                    if ((rc = pull_write_copied(p, w)) != PGPIPE_OK) {
                        PULL_FAIL(rc, 1);
                        pull_writer_reset(w);
                    }
                } else if ((rc = pull_results(p, w->conn, w->solo ? "pull: COPY and COMMIT of the page"
                                                                  : "pull: COMMIT of the page")) != PGPIPE_OK) {
                    PULL_FAIL(rc, 1);
                    pull_writer_reset(w);
                } else { /* committed */
                    w->state = W_IDLE;
                    w->conn = NULL;
                    pull_writer_shrink(w);
                    committed = w->seq;
                    pp_mutex_lock(&p->mu);
                    p->prog.pages++;
                    p->prog.records += w->nok;
                    p->prog.dead_lettered += w->ndead;
                    pp_mutex_unlock(&p->mu);
                    pull_progress(p, 0);
                }
            }
        }
        /* the next page to commit, once the one before it committed */
        for (int i = 0; i < p->nw; i++) {
            pull_writer *w = &p->w[i];
            if (w->state != W_READY)
                continue;
            if (abort_) {
                pull_writer_reset(w);
                moved = 1;
            } else if (w->seq == committed + 1) {
                if ((rc = pull_commit_send(p, w)) != PGPIPE_OK) {
                    PULL_FAIL(rc, 1);
                    pull_writer_reset(w);
                }
                moved = 1;
            }
        }
        /* built pages onto free connections, the earliest first */
        for (;;) {
            pull_writer *bw = NULL;
            for (int i = 0; i < p->nw; i++)
                if (p->w[i].state == W_BUILT && (!bw || p->w[i].seq < bw->seq))
                    bw = &p->w[i];
            if (!bw)
                break;
            if (abort_) {
                pull_writer_reset(bw);
                moved = 1;
                continue;
            }
            PGconn *fc = NULL;
            for (int k = 0; k < p->nconn && !fc; k++) {
                fc = p->conns[k];
                for (int i = 0; i < p->nw; i++)
                    if (p->w[i].conn == fc)
                        fc = NULL;
            }
            if (!fc)
                break;
            bw->conn = fc;
            moved = 1;
            /* the page after the last committed one goes in one round trip less */
            int solo = bw->seq == committed + 1 && bw->copy.len && !bw->dlq.len;
            if ((rc = solo ? pull_write_commit(p, bw) : pull_write_start(p, bw)) != PGPIPE_OK) {
                PULL_FAIL(rc, 1);
                pull_writer_reset(bw);
            }
        }
        /* the pages ahead */
        while (!halt && next_fetch <= last && next_fetch <= end_seq && next_fetch - head < C) {
            pull_slot *sl = NULL;
            for (int i = 0; i < C && !sl; i++)
                if (p->slots[i].state == SLOT_FREE)
                    sl = &p->slots[i];
            if (!sl || !pull_predict(p, kseq, url.data, next_fetch, total, npages, &sl->url))
                break;
            sl->seq = next_fetch++;
            sl->state = SLOT_WAIT;
            sl->due_us = 0;
            sl->attempts = 0;
            sl->first_fail_us = 0;
            moved = 1;
        }
        /* their requests, the earliest page first, when the budget allows */
        int64_t now = pgpipe_now_us(), wake = now + 100000;
        int head_waits = 0;
        for (long long q = head; !halt && q < next_fetch; q++) {
            pull_slot *sl = pull_slot_of(p, q);
            if (!sl || sl->state != SLOT_WAIT)
                continue;
            if (sl->due_us > now) {
                wake = sl->due_us < wake ? sl->due_us : wake;
                head_waits |= q == head;
                continue;
            }
            /* a page ahead waits for its turn when the body budget left it
            ** no room, or has none left to begin with */
            if (q != head && (sl->at_head || pull_ahead_bytes(p) + PULL_KEEP_BODY >
                                                 p->body_budget - p->max_body))
                continue;
            int64_t us = pull_budget_take(p->budget);
            if (us) {
                wake = now + us < wake ? now + us : wake;
                head_waits |= q == head;
                break;
            }
            pull_start(p, sl);
            moved = 1;
        }
        /* the next page in order: parsed, its rows built, sent to a writer */
        pull_slot *hs = halt ? NULL : pull_slot_of(p, head);
        pull_writer *fw = NULL;
        for (int i = 0; i < p->nw && !fw; i++)
            if (p->w[i].state == W_IDLE)
                fw = &p->w[i];
        if (hs && hs->state == SLOT_FAILED) {
            p->h.err = hs->err;
            PULL_FAIL(hs->err.code ? hs->err.code : PGPIPE_IO, 0);
            moved = 1;
        } else if (hs && hs->state == SLOT_GOT && fw && pull_room_to_build(p, hs)) {
            moved = 1;
            const char *u = hs->url.data;
            char src[300];
            snprintf(src, sizeof src, "page %lld", head);
            pgpipe_json_doc_set_source(p->doc, src);
            const pgpipe_json_val *root = NULL, *arr = NULL;
            p->bad.len = 0;
            if (pgpipe_json_parse(p->doc, hs->body.data ? hs->body.data : "", hs->body.len) != PGPIPE_OK &&
                (rc = pull_salvage(p, hs, u, &arr)) != PGPIPE_OK) {
                PULL_FAIL(rc, 0);
            } else {
                root = pgpipe_json_root(p->doc);
                arr = pgpipe_json_path(root, pull_path(p->o.records));
                if (pgpipe_json_type(arr) != PGPIPE_JSON_ARRAY) {
                    pull_errf(p, PGPIPE_PARSE, "pull: %s: the records \"%s\" are %s, not an array", u,
                              p->o.records, arr ? pgpipe_json_type_name(pgpipe_json_type(arr)) : "missing");
                    PULL_FAIL(PGPIPE_PARSE, 0);
                }
            }
            long long n = halt ? 0 : (long long)pgpipe_json_len(arr);
            int end = 0;
            char endcur[512];
            fw->next.len = 0;
            if (!halt && (rc = pull_next(p, u, &hs->link, root, n, parsed_in + n, head, &fw->next, &end, endcur,
                                         sizeof endcur)) != PGPIPE_OK)
                PULL_FAIL(rc, 0);
            if (!halt) {
                if (!pull_body_int(root, p->o.total_path, &total))
                    total = -1;
                if (!pull_body_int(root, p->o.pages_path, &npages))
                    npages = -1;
                char batch[37];
                pp_uuid_v4(batch);
                fw->copy.len = 0;
                fw->dlq.len = 0;
                fw->nok = fw->ndead = 0;
                int maybe_nul = pull_has_nul_escape(hs->body.data ? hs->body.data : "", hs->body.len);
                uint64_t digest = 0;
                if ((rc = pull_rows(p, fw, arr, u, head, batch, maybe_nul, &fw->nok, &fw->ndead, high,
                                    &digest, (const pull_bad *)(void *)p->bad.data,
                                    p->bad.len / sizeof(pull_bad), hs->body.data)) != PGPIPE_OK)
                    PULL_FAIL(rc, 0);
                pull_held_bytes(p); /* the page's body, tree and rows: the peak */
                pp_buf_free(&p->orig); /* held only while the page is built */
                /* an API that ignores the next-page parameter sends the same
                ** records again under ever new cursors or links: loaded
                ** again and again, for ever when max_pages is unset */
                if (!halt && n >= 2 && prev_n == n && digest == prev_digest) {
                    pull_errf(p, PGPIPE_ERROR, "pull: incomplete pagination at page %lld (%s): its %lld "
                              "records are the page before's again (is the next-page parameter "
                              "ignored?)", head, u, n);
                    PULL_FAIL(PGPIPE_ERROR, 0);
                }
                prev_n = n;
                prev_digest = digest;
            }
            if (!halt) {
                fw->seq = head;
                fw->n = n;
                fw->end = end;
                snprintf(fw->high, sizeof fw->high, "%s", high);
                const char *newcur = NULL;
                if (end && !p->scope[0])
                    newcur = p->o.since_field ? (high[0] ? high : NULL)
                             : (p->o.paginate == PGPIPE_PULL_CURSOR && p->o.more_path && endcur[0]) ? endcur : NULL;
                fw->has_cur = newcur != NULL;
                snprintf(fw->cur, sizeof fw->cur, "%s", newcur ? newcur : "");
                parsed_in += n;
                fw->conn = NULL;
                fw->state = W_BUILT;
            }
            if (pgpipe_json_doc_memory(p->doc) > PULL_KEEP_BODY) {
                /* the tree is not needed once the rows are built: not held */
                pgpipe_json_doc *nd;
                if (pgpipe_json_doc_open(&nd) == PGPIPE_OK) {
                    pgpipe_json_doc_close(p->doc);
                    p->doc = nd;
                }
            }
            if (!halt) {
                pull_drop(p, hs);
                head++;
                if (end) {
                    end_seq = head - 1;
                    pull_drop_from(p, head);
                    next_fetch = head;
                } else {
                    /* the page asked for ahead is the one the listing names, or goes */
                    pull_slot *ns = pull_slot_of(p, head);
                    if (ns && strcmp(ns->url.data, fw->next.data) != 0) {
                        pull_drop_from(p, head);
                        next_fetch = head;
                    }
                    kseq = head;
                    url.len = 0;
                    if (pp_buf_append(&url, fw->next.data, fw->next.len + 1) != PGPIPE_OK) {
                        pp_err_nomem(&p->h.err);
                        PULL_FAIL(PGPIPE_NOMEM, 1);
                    }
                    url.len--;
                }
            }
        }
        int busy = 0;
        for (int i = 0; i < p->nw; i++)
            busy |= p->w[i].state != W_IDLE;
        if (!busy && (halt || head > end_seq || head > last))
            break;
        if (moved)
            continue;
        /* nothing to do before a response, a result or a turn comes */
        struct curl_waitfd fds[PULL_MAX_WRITERS];
        unsigned nfd = 0;
        for (int i = 0; i < p->nw && nfd < PULL_MAX_WRITERS; i++)
            if (p->w[i].state == W_COPY || p->w[i].state == W_COMMIT) {
                fds[nfd].fd = PQsocket(p->w[i].conn);
                fds[nfd].events = CURL_WAIT_POLLIN;
                fds[nfd].revents = 0;
                nfd++;
            }
        int ms = (int)((wake - now + 999) / 1000);
        ms = ms < 1 ? 1 : ms > 100 ? 100 : ms;
        if (head_waits && !wait_since)
            wait_since = now;
        curl_multi_poll(p->multi, nfd ? fds : NULL, nfd, ms, NULL);
        if (wait_since && !head_waits) {
            pull_prog_add(p, &p->prog.waited_ms, (pgpipe_now_us() - wait_since) / 1000);
            wait_since = 0;
        }
    }
#undef PULL_FAIL
    if (wait_since)
        pull_prog_add(p, &p->prog.waited_ms, (pgpipe_now_us() - wait_since) / 1000);
    pull_drop_from(p, 0);
    rc = erc;
    if (rc != PGPIPE_OK)
        p->h.err = first;
    int paused = rc == PGPIPE_OK && end_seq == LLONG_MAX && head > last;
    pull_run_end(p, run_id, rc, paused);
    pull_lock(p, 0);
    pull_progress(p, 1);
    pull_state_free(&s);
    pp_buf_free(&url);
    return rc;
}

#endif /* PGPIPE_ENABLE_CURL */
#endif /* PGPIPE_OMIT_PULL */
