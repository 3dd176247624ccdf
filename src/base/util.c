/*
** Shared foundation: version, result codes, per-handle errors, the allocator,
** growable buffers, logging, password masking, clocks, and access to the
** embedded SQL files.
*/

#include "pp_base.h"

/* ---- Version ---------------------------------------------------------- */

const char *pgpipe_libversion(void) { return PGPIPE_VERSION; }
int pgpipe_libversion_number(void) { return PGPIPE_VERSION_NUMBER; }

const char *pgpipe_errstr(int code)
{
    switch (code) {
    case PGPIPE_OK:     return "not an error";
    case PGPIPE_ERROR:  return "error";
    case PGPIPE_NOMEM:  return "out of memory";
    case PGPIPE_MISUSE: return "library misuse";
    case PGPIPE_PARSE:  return "parse error";
    case PGPIPE_DB:     return "database error";
    case PGPIPE_BUSY:   return "timeout or busy";
    case PGPIPE_IO:     return "I/O error";
    case PGPIPE_LIMIT:  return "limit exceeded";
    case PGPIPE_ROW:    return "another row is ready";
    case PGPIPE_DONE:   return "no more rows";
    default:            return "unknown result code";
    }
}

/* ---- Allocator -------------------------------------------------------- */

static void *pp_sys_malloc(void *ud, size_t n) { (void)ud; return malloc(n); }
static void *pp_sys_realloc(void *ud, void *p, size_t n) { (void)ud; return realloc(p, n); }
static void pp_sys_free(void *ud, void *p) { (void)ud; free(p); }

static pgpipe_allocator pp_alloc = { pp_sys_malloc, pp_sys_realloc, pp_sys_free, NULL };

int pgpipe_config_allocator(const pgpipe_allocator *a)
{
    if (a == NULL) {
        pp_alloc.malloc_fn = pp_sys_malloc;
        pp_alloc.realloc_fn = pp_sys_realloc;
        pp_alloc.free_fn = pp_sys_free;
        pp_alloc.ud = NULL;
        return PGPIPE_OK;
    }
    if (!a->malloc_fn || !a->realloc_fn || !a->free_fn)
        return PGPIPE_MISUSE;
    pp_alloc = *a;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void *pp_malloc(size_t n) { return pp_alloc.malloc_fn(pp_alloc.ud, n ? n : 1); }
PGPIPE_PRIVATE void *pp_realloc(void *p, size_t n) { return pp_alloc.realloc_fn(pp_alloc.ud, p, n ? n : 1); }
PGPIPE_PRIVATE void pp_free(void *p) { if (p) pp_alloc.free_fn(pp_alloc.ud, p); }
void pgpipe_free(void *p) { pp_free(p); }

PGPIPE_PRIVATE void *pp_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    void *p = pp_malloc(count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

PGPIPE_PRIVATE char *pp_strndup(const char *s, size_t n)
{
    char *d = pp_malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

PGPIPE_PRIVATE char *pp_strdup(const char *s) { return s ? pp_strndup(s, strlen(s)) : NULL; }

PGPIPE_PRIVATE int pp_first_empty(const char *const *vals, int n)
{
    for (int i = 0; i < n; i++)
        if (vals[i] && !vals[i][0])
            return i;
    return -1;
}

/* ---- Buffers ---------------------------------------------------------- */

PGPIPE_PRIVATE int pp_buf_reserve(pp_buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len)
        return PGPIPE_NOMEM;
    size_t need = b->len + extra;
    /* after a successful reserve, data is never NULL (even for 0 bytes), so
    ** callers may form b->data + b->len */
    if (need <= b->cap && b->data)
        return PGPIPE_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *d = pp_realloc(b->data, cap);
    if (!d)
        return PGPIPE_NOMEM;
    b->data = d;
    b->cap = cap;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_buf_append(pp_buf *b, const void *data, size_t n)
{
    if (pp_buf_reserve(b, n) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    if (n)
        memcpy(b->data + b->len, data, n);
    b->len += n;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_buf_appendf(pp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return PGPIPE_ERROR;
    if (pp_buf_reserve(b, (size_t)n + 1) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void pp_buf_free(pp_buf *b)
{
    pp_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- Password masking ------------------------------------------------- */

/* Appends to a bounded output while counting the full length. */
typedef struct pp_out {
    char *buf;
    size_t size, len;
} pp_out;

static void pp_out_put(pp_out *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, o->len++)
        if (o->size && o->len < o->size - 1)
            o->buf[o->len] = s[i];
}

static int pp_is_key_boundary(const char *text, const char *p)
{
    if (p == text)
        return 1;
    char c = p[-1];
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' ||
           c == '?' || c == '&' || c == '"' || c == '\'' || c == ',' || c == ';' || c == '(';
}

static int pp_is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static int pp_is_word(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* Length of a keyword=value value as libpq's conninfo_parse reads it: a
** value in single quotes runs to the unescaped closing quote (a backslash
** escapes any character); any other value runs to the first unescaped
** whitespace, a backslash escaping the character after it (so '"', '#' and
** '&' are part of the value). */
static size_t pp_kv_value_len(const char *v)
{
    const char *p = v;
    if (*p == '\'') {
        for (p++; *p && *p != '\''; p++)
            if (*p == '\\' && p[1])
                p++;
        if (*p == '\'')
            p++;
        return (size_t)(p - v);
    }
    while (*p && !pp_is_space(*p)) {
        if (*p == '\\' && p[1])
            p++;
        p++;
    }
    return (size_t)(p - v);
}

/* Length of a URI query parameter's value: libpq ends it at '&' only (the
** URI's end ends it too); a line break ends it in a message's text. */
static size_t pp_uri_value_len(const char *v)
{
    const char *p = v;
    while (*p && *p != '&' && *p != '\n' && *p != '\r')
        p++;
    return (size_t)(p - v);
}

/* The keyword at p (letters, digits, '_') when p starts one and it ends in
** "password" (password, sslpassword, ...): its length, else 0. */
static size_t pp_secret_key_len(const char *text, const char *p)
{
    if (!pp_is_key_boundary(text, p))
        return 0;
    size_t n = 0;
    while (pp_is_word(p[n]))
        n++;
    if (n < 8 || strncasecmp(p + n - 8, "password", 8) != 0)
        return 0;
    return n;
}

size_t pgpipe_conninfo_mask(const char *text, char *buf, size_t size)
{
    static const char stars[] = "********";
    pp_out o = { buf, size, 0 };
    const char *p = text ? text : "";
    while (*p) {
        /* keyword=value (libpq's conninfo_parse rules) and a URI query
        ** parameter (?password=, &sslpassword=): any keyword ending in
        ** "password" */
        size_t kl = pp_is_word(*p) ? pp_secret_key_len(text, p) : 0;
        if (kl) {
            int uri = p > text && (p[-1] == '?' || p[-1] == '&');
            const char *q = p + kl;
            if (!uri)
                while (pp_is_space(*q))
                    q++;
            if (*q == '=') {
                q++;
                if (!uri)
                    while (pp_is_space(*q))
                        q++;
                pp_out_put(&o, p, (size_t)(q - p));
                size_t vl = uri ? pp_uri_value_len(q) : pp_kv_value_len(q);
                if (vl)
                    pp_out_put(&o, stars, sizeof stars - 1);
                p = q + vl;
                continue;
            }
            pp_out_put(&o, p, kl);
            p += kl;
            continue;
        }
        /* libpq quotes the raw URI part it could not decode, which may be a
        ** password: 'invalid percent-encoded token: "..."', 'forbidden value
        ** %00 in percent-encoded value: "..."' */
        if (*p == 'p' && (strncmp(p, "percent-encoded token: \"", 24) == 0 ||
                          strncmp(p, "percent-encoded value: \"", 24) == 0)) {
            pp_out_put(&o, p, 24);
            p += 24;
            const char *q = strchr(p, '"');
            pp_out_put(&o, stars, sizeof stars - 1);
            p = q ? q : p + strlen(p);
            continue;
        }
        /* URI userinfo: scheme://user:SECRET@host. libpq looks for the '@'
        ** before the first '/' (so '?', '#', ':' may be in the password);
        ** the last '@' before a '/' or the line's end is taken, masking
        ** at least what libpq reads as the password. */
        if (*p == ':' && p[1] == '/' && p[2] == '/') {
            pp_out_put(&o, p, 3);
            p += 3;
            const char *at = NULL, *colon = NULL, *q = p;
            for (; *q && *q != '/' && *q != '\n' && *q != '\r'; q++) {
                if (*q == '@')
                    at = q;
                else if (*q == ':' && !colon && !at)
                    colon = q;
            }
            if (at && colon && colon < at) {
                pp_out_put(&o, p, (size_t)(colon + 1 - p));
                pp_out_put(&o, stars, sizeof stars - 1);
                p = at;
            }
            continue;
        }
        pp_out_put(&o, p, 1);
        p++;
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return o.len;
}

/* ---- Errors ----------------------------------------------------------- */

PGPIPE_PRIVATE void pp_handle_init(pp_handle *h)
{
    h->magic = PP_HANDLE_MAGIC;
    pgpipe_error_clear(&h->err);
}

PGPIPE_PRIVATE void *pp_handle_new(size_t size)
{
    pp_handle *h = pp_calloc(1, size);
    if (h)
        pp_handle_init(h);
    return h;
}

void pgpipe_error_clear(pgpipe_error *e)
{
    if (!e)
        return;
    e->code = PGPIPE_OK;
    e->sqlstate[0] = e->message[0] = e->source[0] = '\0';
    e->line = e->column = e->offset = 0;
}

/* Writes a formatted, password-masked message into e->message. */
static void pp_err_vset(pgpipe_error *e, const char *fmt, va_list ap)
{
    char tmp[sizeof e->message];
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    /* libpq messages end with a newline; keep messages one line */
    size_t n = strlen(tmp);
    while (n && (tmp[n - 1] == '\n' || tmp[n - 1] == ' '))
        tmp[--n] = '\0';
    pgpipe_conninfo_mask(tmp, e->message, sizeof e->message);
}

PGPIPE_PRIVATE int pp_err(pgpipe_error *e, int code, const char *fmt, ...)
{
    if (!e)
        return code;
    pgpipe_error_clear(e);
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    pp_err_vset(e, fmt, ap);
    va_end(ap);
    return code;
}

PGPIPE_PRIVATE int pp_err_at(pgpipe_error *e, int code, const char *source, long long line,
                     long long column, long long offset, const char *fmt, ...)
{
    if (!e)
        return code;
    pgpipe_error_clear(e);
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    pp_err_vset(e, fmt, ap);
    va_end(ap);
    snprintf(e->source, sizeof e->source, "%s", source ? source : "");
    e->line = line;
    e->column = column;
    e->offset = offset;
    return code;
}

PGPIPE_PRIVATE int pp_err_nomem(pgpipe_error *e)
{
    return pp_err(e, PGPIPE_NOMEM, "out of memory");
}

PGPIPE_PRIVATE int pp_err_pq(pgpipe_error *e, const PGconn *conn, const PGresult *res,
                     const char *context)
{
    const char *msg = NULL, *state = NULL;
    if (res) {
        msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
        state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (!msg || !*msg)
            msg = PQresultErrorMessage(res);
    }
    if ((!msg || !*msg) && conn)
        msg = PQerrorMessage(conn);
    if (!msg || !*msg)
        msg = "unknown database error";
    if (context && *context)
        pp_err(e, PGPIPE_DB, "%s: %s", context, msg);
    else
        pp_err(e, PGPIPE_DB, "%s", msg);
    if (e) {
        if (state && strlen(state) == 5)
            memcpy(e->sqlstate, state, 6);
        else if (conn && PQstatus(conn) == CONNECTION_BAD)
            memcpy(e->sqlstate, "08006", 6); /* connection_failure */
    }
    return PGPIPE_DB;
}

static const pgpipe_error pp_nomem_error = { PGPIPE_NOMEM, "", "out of memory", "", 0, 0, 0 };
static const pgpipe_error pp_misuse_error = {
    PGPIPE_MISUSE, "", "not a pgpipe handle", "", 0, 0, 0 };

const pgpipe_error *pgpipe_errinfo(const void *handle)
{
    const pp_handle *h = handle;
    if (!h)
        return &pp_nomem_error;
    if (h->magic != PP_HANDLE_MAGIC)
        return &pp_misuse_error;
    return &h->err;
}

int pgpipe_errcode(const void *handle) { return pgpipe_errinfo(handle)->code; }
const char *pgpipe_errmsg(const void *handle) { return pgpipe_errinfo(handle)->message; }
const char *pgpipe_errsqlstate(const void *handle) { return pgpipe_errinfo(handle)->sqlstate; }

int pgpipe_error_format(const pgpipe_error *e, char *buf, size_t size)
{
    if (!e)
        return snprintf(buf, size, "%s", "no error");
    char where[320] = "";
    if (e->source[0] && e->line > 0 && e->column > 0)
        snprintf(where, sizeof where, "%s:%lld:%lld: ", e->source, e->line, e->column);
    else if (e->source[0] && e->line > 0) /* column 0: not known */
        snprintf(where, sizeof where, "%s:%lld: ", e->source, e->line);
    else if (e->source[0])
        snprintf(where, sizeof where, "%s: ", e->source);
    else if (e->line > 0)
        snprintf(where, sizeof where, "line %lld, column %lld: ", e->line, e->column);
    const char *msg = e->message[0] ? e->message : pgpipe_errstr(e->code);
    /* what the prefix already says is not said twice: a message that names
    ** the source first ("fields: ...", for pgpipe_errmsg's readers) or ends
    ** with the place (the JSON parser's " at line L, column C") */
    size_t slen = strlen(e->source);
    if (where[0] && slen && !strncmp(msg, e->source, slen) && !strncmp(msg + slen, ": ", 2))
        msg += slen + 2;
    int mlen = (int)strlen(msg);
    if (e->source[0] && e->line > 0) {
        char at[64];
        int alen = snprintf(at, sizeof at, " at line %lld, column %lld", e->line, e->column);
        if (alen < mlen && !strcmp(msg + mlen - alen, at))
            mlen -= alen;
    }
    if (e->sqlstate[0])
        return snprintf(buf, size, "%s%.*s [SQLSTATE %s]", where, mlen, msg, e->sqlstate);
    return snprintf(buf, size, "%s%.*s", where, mlen, msg);
}

/* ---- Logging ---------------------------------------------------------- */

static pp_mutex pp_log_mutex = PP_MUTEX_INIT;
static int pp_log_level = -1; /* -1: not read from the environment yet */
static int pp_log_json = 0;
static pgpipe_log_fn pp_log_fn = NULL;
static void *pp_log_ud = NULL;

static int pp_parse_level(const char *s)
{
    if (!s || !*s) return PGPIPE_LOG_WARN;
    if (!strcasecmp(s, "debug")) return PGPIPE_LOG_DEBUG;
    if (!strcasecmp(s, "info")) return PGPIPE_LOG_INFO;
    if (!strcasecmp(s, "warn") || !strcasecmp(s, "warning")) return PGPIPE_LOG_WARN;
    if (!strcasecmp(s, "error")) return PGPIPE_LOG_ERROR;
    if (!strcasecmp(s, "off") || !strcasecmp(s, "none")) return PGPIPE_LOG_OFF;
    return PGPIPE_LOG_WARN;
}

static void pp_log_init_locked(void)
{
    if (pp_log_level < 0) {
        pp_log_level = pp_parse_level(getenv("PGPIPE_LOG"));
        const char *f = getenv("PGPIPE_LOG_FORMAT");
        pp_log_json = f && !strcasecmp(f, "json");
    }
}

PGPIPE_PRIVATE int pp_log_enabled(int level)
{
    pp_mutex_lock(&pp_log_mutex);
    pp_log_init_locked();
    int on = level >= pp_log_level;
    pp_mutex_unlock(&pp_log_mutex);
    return on;
}

int pgpipe_log_set_level(int level)
{
    pp_mutex_lock(&pp_log_mutex);
    if (level < 0) {
        pp_log_level = -1;
        pp_log_init_locked();
    } else {
        pp_log_level = level;
    }
    pp_mutex_unlock(&pp_log_mutex);
    return PGPIPE_OK;
}

int pgpipe_log_get_level(void)
{
    pp_mutex_lock(&pp_log_mutex);
    pp_log_init_locked();
    int l = pp_log_level;
    pp_mutex_unlock(&pp_log_mutex);
    return l;
}

int pgpipe_config_log(pgpipe_log_fn fn, void *ud)
{
    pp_mutex_lock(&pp_log_mutex);
    pp_log_fn = fn;
    pp_log_ud = ud;
    pp_mutex_unlock(&pp_log_mutex);
    return PGPIPE_OK;
}

static const char *pp_level_name(int level)
{
    if (level >= PGPIPE_LOG_ERROR) return "error";
    if (level >= PGPIPE_LOG_WARN) return "warn";
    if (level >= PGPIPE_LOG_INFO) return "info";
    return "debug";
}

/* A value is quoted in logfmt when it is empty or holds a space, '=', '"' or
** a control character; JSON strings are always quoted. */
static void pp_log_put_value(pp_out *o, const char *v, int json)
{
    int quote = json || !*v;
    for (const char *p = v; *p && !quote; p++)
        if (*p == ' ' || *p == '=' || *p == '"' || (unsigned char)*p < 0x20)
            quote = 1;
    if (quote)
        pp_out_put(o, "\"", 1);
    size_t room = o->size && o->len < o->size - 1 ? o->size - 1 - o->len : 0;
    o->len += pp_json_escape(room ? o->buf + o->len : NULL, room, v, strlen(v), 0);
    if (quote)
        pp_out_put(o, "\"", 1);
}

static void pp_log_put_pair(pp_out *o, const char *key, const char *value, int json, int first)
{
    if (json) {
        pp_out_put(o, first ? "{" : ",", 1);
        pp_log_put_value(o, key, 1);
        pp_out_put(o, ":", 1);
    } else {
        if (!first)
            pp_out_put(o, " ", 1);
        pp_out_put(o, key, strlen(key));
        pp_out_put(o, "=", 1);
    }
    pp_log_put_value(o, value ? value : "", json);
}

int pgpipe_log_format_line(char *buf, size_t size, int json, int level, const char *component,
                           const char *message, const pgpipe_log_field *fields, int nfields)
{
    pp_out o = { buf, size, 0 };
    char ts[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000L);
    pp_log_put_pair(&o, "ts", ts, json, 1);
    pp_log_put_pair(&o, "level", pp_level_name(level), json, 0);
    pp_log_put_pair(&o, "component", component ? component : "pgpipe", json, 0);
    pp_log_put_pair(&o, "msg", message ? message : "", json, 0);
    for (int i = 0; fields && i < nfields; i++)
        if (fields[i].key)
            pp_log_put_pair(&o, fields[i].key, fields[i].value, json, 0);
    if (json)
        pp_out_put(&o, "}", 1);
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return (int)o.len;
}

static void pp_log_default(int json, int level, const char *component, const char *message,
                           const pgpipe_log_field *fields, int nfields)
{
    char line[4096];
    int n = pgpipe_log_format_line(line, sizeof line - 1, json, level, component, message,
                                   fields, nfields);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n] = '\n';
    /* one write per event keeps lines whole when threads log at once */
    ssize_t w = write(STDERR_FILENO, line, (size_t)n + 1);
    (void)w;
}

void pgpipe_log(int level, const char *component, const char *message,
                const pgpipe_log_field *fields, int nfields)
{
    pp_mutex_lock(&pp_log_mutex);
    pp_log_init_locked();
    int enabled = level >= pp_log_level;
    pgpipe_log_fn fn = pp_log_fn;
    void *ud = pp_log_ud;
    int json = pp_log_json;
    pp_mutex_unlock(&pp_log_mutex);
    if (!enabled)
        return;

    /* no password ever reaches a log line */
    enum { MAXF = 16 };
    char msg[2048];
    char vals[MAXF][512];
    pgpipe_log_field masked[MAXF];
    if (nfields > MAXF)
        nfields = MAXF;
    if (nfields < 0 || !fields)
        nfields = 0;
    pgpipe_conninfo_mask(message ? message : "", msg, sizeof msg);
    for (int i = 0; i < nfields; i++) {
        masked[i].key = fields[i].key;
        pgpipe_conninfo_mask(fields[i].value ? fields[i].value : "", vals[i], sizeof vals[i]);
        masked[i].value = vals[i];
    }
    if (fn)
        fn(ud, level, component, msg, masked, nfields);
    else
        pp_log_default(json, level, component, msg, masked, nfields);
}

PGPIPE_PRIVATE void pp_logf(int level, const char *component, const char *fmt, ...)
{
    if (!pp_log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pgpipe_log(level, component, msg, NULL, 0);
}

/* ---- Time and randomness ---------------------------------------------- */

int64_t pgpipe_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void pgpipe_sleep_ms(int ms)
{
    if (ms <= 0)
        return;
    struct timespec req = { ms / 1000, (long)(ms % 1000) * 1000000L }, rem;
    while (nanosleep(&req, &rem) != 0 && errno == EINTR)
        req = rem;
}

/* ---- Embedded SQL ----------------------------------------------------- */

static pp_mutex pp_sql_mutex = PP_MUTEX_INIT;
static char **pp_sql_joined; /* each file's lines joined, made on first use */

int pgpipe_sql_file_count(void)
{
    int n = 0;
    while (pp_sql_files[n].path)
        n++;
    return n;
}

const char *pgpipe_sql_file_path(int i)
{
    return i >= 0 && i < pgpipe_sql_file_count() ? pp_sql_files[i].path : NULL;
}

const char *pgpipe_sql_file(const char *path)
{
    if (!path)
        return NULL;
    int nfiles = pgpipe_sql_file_count();
    for (int i = 0; i < nfiles; i++) {
        if (strcmp(pp_sql_files[i].path, path) != 0)
            continue;
        pp_mutex_lock(&pp_sql_mutex);
        if (!pp_sql_joined)
            pp_sql_joined = pp_calloc((size_t)nfiles, sizeof *pp_sql_joined);
        if (!pp_sql_joined) {
            pp_mutex_unlock(&pp_sql_mutex);
            return NULL;
        }
        if (!pp_sql_joined[i]) {
            size_t n = 0;
            for (const char *const *l = pp_sql_files[i].lines; *l; l++)
                n += strlen(*l);
            char *s = pp_malloc(n + 1);
            if (s) {
                char *w = s;
                for (const char *const *l = pp_sql_files[i].lines; *l; l++) {
                    size_t k = strlen(*l);
                    memcpy(w, *l, k);
                    w += k;
                }
                *w = '\0';
            }
            pp_sql_joined[i] = s;
        }
        const char *s = pp_sql_joined[i];
        pp_mutex_unlock(&pp_sql_mutex);
        return s;
    }
    return NULL;
}
