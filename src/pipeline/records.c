/*
** Record store: collections of JSONB documents (records.NAME tables) with
** CRUD through the pool's cached prepared statements, batch create through
** COPY, filters compiled to parameterized SQL, transactions pinned to one
** pooled connection, and streaming import (NDJSON, JSON array) and export.
**
** Nothing a caller passes is spliced into SQL except the collection name,
** which is validated (a strict identifier pattern) and then quoted
** (pp_quote_ident). Filter paths are text[] parameters, values are text or
** jsonb parameters, sort paths too.
*/

#include "pp_pipeline.h"

#define REC_NAME_MAX 48
#define REC_COPY_CHUNK (256 * 1024)
/* a decimal number written as text: what "numeric on both sides" means */
#define REC_NUM_RE "'^-?[0-9]+(\\.[0-9]+)?([eE][-+]?[0-9]{1,3})?$'"

struct pgpipe_records {
    pp_handle hdr;
    pgpipe_pool *pool;
    char *qtable;          /* "schema"."name" */
    char *gin[2];          /* "schema"."name_fields_gin", ..._metadata_gin */
    char *name;            /* as given */
    pgpipe_conn *tx;       /* pinned connection of an open transaction */
    pgpipe_json_doc *doc;  /* for checking documents */
    pp_buf sql;            /* scratch */
};

typedef struct rec_cond {
    int op;
    int metadata;
    char **keys;
    int nkeys;
    char *json;     /* the value, compact JSON (NULL for EXISTS) */
    int vtype;      /* PGPIPE_JSON_* of the value */
    char *vtext;    /* a string's contents, a number's text, true/false */
    int vnumeric;   /* vtext is a decimal number */
} rec_cond;

struct pgpipe_records_filter {
    pp_handle hdr;
    rec_cond *c;
    int n, cap;
};

struct pgpipe_records_cursor {
    PGresult *res;
    int row, nrows;
};

/* ---- small helpers ----------------------------------------------------- */

static int rec_name_ok(const char *s, size_t n)
{
    if (n == 0 || n > REC_NAME_MAX)
        return 0;
    if (!(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return 0;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

/* 1 when the schema is one a collection must not go in: pgpipe's own
** (pgpipe, staging) and the system's (pg_*, information_schema), in any
** case (a quoted "PGPIPE" is a schema of its own, but surely a mistake). */
static int rec_schema_reserved(const char *s, size_t n)
{
    static const char *const names[] = { "pgpipe", "staging", "information_schema" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (n == strlen(names[i]) && strncasecmp(s, names[i], n) == 0)
            return 1;
    return n >= 3 && strncasecmp(s, "pg_", 3) == 0;
}

/* 1 when s is a decimal number as REC_NUM_RE defines it. */
static int rec_is_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    size_t d = i;
    while (i < n && isdigit((unsigned char)s[i]))
        i++;
    if (i == d)
        return 0;
    if (i < n && s[i] == '.') {
        d = ++i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == d)
            return 0;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        d = i;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == d || i - d > 3)
            return 0;
    }
    return i == n;
}

static int rec_is_uuid(const char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < 36; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!isxdigit((unsigned char)c)) {
            return 0;
        }
    }
    return s[36] == '\0';
}

/* Append keys as a PostgreSQL text[] literal: {"a","b"}. */
static int rec_text_array(pp_buf *b, char *const *keys, int n)
{
    int rc = pp_buf_putc(b, '{');
    for (int i = 0; i < n && rc == PGPIPE_OK; i++) {
        if (i)
            rc = pp_buf_putc(b, ',');
        if (rc == PGPIPE_OK)
            rc = pp_array_elem(b, keys[i], strlen(keys[i]));
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(b, '}');
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(b, '\0');
    return rc == PGPIPE_OK ? PGPIPE_OK : PGPIPE_NOMEM;
}

/* A new version 4 UUID as 36 characters and NUL. */
static int rec_uuid_new(pgpipe_records *h, char out[37])
{
    if (pp_uuid_v4(out) != PGPIPE_OK)
        return pp_err(&h->hdr.err, PGPIPE_IO, "records: cannot read /dev/urandom: %s",
                      strerror(errno));
    return PGPIPE_OK;
}

/* 1 when text holds the six bytes \u0000 (then the parsed value is walked). */
static int rec_has_u0000(const char *s, size_t n)
{
    const char *p = s, *end = s + n;
    while (end - p >= 6 && (p = memchr(p, '\\', (size_t)(end - p - 5))) != NULL) {
        if (!memcmp(p, "\\u0000", 6))
            return 1;
        p++;
    }
    return 0;
}

/* Line and column (1-based, in characters) of the first \u0000 escape in a
** string of the valid JSON text s[0..n), or 1:1 when there is none. */
static void rec_u0000_pos(const char *s, size_t n, long long *line, long long *col)
{
    long long l = 1, c = 1;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (in_str && ch == '\\') {
            if (n - i >= 6 && !memcmp(s + i, "\\u0000", 6)) {
                *line = l;
                *col = c;
                return;
            }
            i++; /* the escaped character (ASCII in valid JSON) */
            c += 2;
            continue;
        }
        if (ch == '"')
            in_str = !in_str;
        if (ch == '\n') {
            l++;
            c = 1;
        } else if ((ch & 0xC0) != 0x80) {
            c++;
        }
    }
    *line = 1;
    *col = 1;
}

/* 1 when a string or key anywhere in v holds a NUL (jsonb refuses \u0000). */
static int rec_has_nul(const pgpipe_json_val *v)
{
    int t = pgpipe_json_type(v);
    if (t == PGPIPE_JSON_STRING) {
        size_t n;
        const char *s = pgpipe_json_get_str(v, &n);
        return s && memchr(s, '\0', n) != NULL;
    }
    if (t != PGPIPE_JSON_ARRAY && t != PGPIPE_JSON_OBJECT)
        return 0;
    pgpipe_json_iter it;
    pgpipe_json_iter_init(&it, v);
    const pgpipe_json_val *e, *k = NULL;
    while ((e = pgpipe_json_iter_next(&it, &k)) != NULL) {
        if (k && rec_has_nul(k))
            return 1;
        if (rec_has_nul(e))
            return 1;
    }
    return 0;
}

/* Parse text into h->doc and check it is an object jsonb accepts. what names
** it in messages ("fields", "document 3"). */
static int rec_check_object(pgpipe_records *h, const char *text, const char *what)
{
    if (!text)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: %s is NULL", what);
    pgpipe_json_doc_set_source(h->doc, what);
    int rc = pgpipe_json_parse(h->doc, text, strlen(text));
    if (rc == PGPIPE_NOMEM)
        return pp_err_nomem(&h->hdr.err);
    if (rc != PGPIPE_OK) {
        h->hdr.err = *pgpipe_errinfo(h->doc);
        char msg[sizeof h->hdr.err.message + 80];
        snprintf(msg, sizeof msg, "%.60s: %s", what, h->hdr.err.message);
        msg[sizeof h->hdr.err.message - 1] = '\0';
        memcpy(h->hdr.err.message, msg, sizeof h->hdr.err.message);
        return rc;
    }
    const pgpipe_json_val *root = pgpipe_json_root(h->doc);
    if (pgpipe_json_type(root) != PGPIPE_JSON_OBJECT)
        return pp_err_at(&h->hdr.err, PGPIPE_PARSE, what, 1, 1, 0,
                         "%s: expected a JSON object, found %s", what,
                         pgpipe_json_type_name(pgpipe_json_type(root)));
    if (rec_has_u0000(text, strlen(text)) && rec_has_nul(root)) {
        long long l, c;
        rec_u0000_pos(text, strlen(text), &l, &c);
        return pp_err_at(&h->hdr.err, PGPIPE_PARSE, what, l, c, 0,
                         "%s: a string holds \\u0000, which PostgreSQL jsonb cannot store", what);
    }
    return PGPIPE_OK;
}

/* ---- connections --------------------------------------------------------- */

static int rec_acquire(pgpipe_records *h, pgpipe_conn **c)
{
    if (h->tx) {
        *c = h->tx;
        return PGPIPE_OK;
    }
    return pgpipe_pool_acquire_ex(h->pool, c, -1, &h->hdr.err);
}

static void rec_release(pgpipe_records *h, pgpipe_conn *c)
{
    if (c && c != h->tx)
        pgpipe_pool_release(c);
}

/* Run a cached statement; PGPIPE_OK with *res (caller clears) or an error. */
static int rec_exec(pgpipe_records *h, pgpipe_conn *c, const char *sql, int n,
                    const char *const *vals, const char *ctx, PGresult **res)
{
    *res = NULL;
    PGresult *r = pgpipe_conn_exec_cached(c, sql, n, vals, NULL, NULL, 0);
    if (!r)
        return pp_err(&h->hdr.err, pgpipe_errcode(c) ? pgpipe_errcode(c) : PGPIPE_NOMEM,
                      "records: %s: %s", ctx, pgpipe_errmsg(c));
    char cx[160];
    snprintf(cx, sizeof cx, "records %s: %s", h->name, ctx);
    return pp_exec_check(pgpipe_conn_pg(c), r, res, &h->hdr.err, cx);
}

/* Acquire, run, release. */
static int rec_run(pgpipe_records *h, const char *sql, int n, const char *const *vals,
                   const char *ctx, PGresult **res)
{
    pgpipe_conn *c;
    int rc = rec_acquire(h, &c);
    if (rc != PGPIPE_OK) {
        *res = NULL;
        return rc;
    }
    rc = rec_exec(h, c, sql, n, vals, ctx, res);
    rec_release(h, c);
    return rc;
}

static int rec_sql(pgpipe_records *h, const char *fmt, ...) PP_PRINTF(2, 3);
static int rec_sql(pgpipe_records *h, const char *fmt, ...)
{
    h->sql.len = 0;
    va_list ap;
    va_start(ap, fmt);
    char tmp[2048];
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return pp_err(&h->hdr.err, PGPIPE_LIMIT, "records: statement too long");
    if (pp_buf_append(&h->sql, tmp, (size_t)n + 1) != PGPIPE_OK)
        return pp_err_nomem(&h->hdr.err);
    return PGPIPE_OK;
}

/* ---- open / close ------------------------------------------------------ */

/* The document expression every read returns. */
#define REC_DOC_SQL \
    "'{\"id\":\"' || id::text || '\",\"fields\":' || fields::text || ',\"metadata\":' || " \
    "metadata::text || ',\"created_at\":' || to_json(created_at)::text || " \
    "',\"updated_at\":' || to_json(updated_at)::text || '}'"

/* s[0..n) as a quoted identifier in a new string; NULL when out of memory. */
static char *rec_quote(const char *s, size_t n)
{
    pp_buf b = { 0 };
    if (pp_quote_ident(&b, s, n) != PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK) {
        pp_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static int rec_create_table(pgpipe_records *h, PGconn *pg, const char *qschema, const char *qname,
                            const char *base)
{
    char *qfi = NULL, *qmi = NULL, *qtr = NULL;
    char idx[REC_NAME_MAX + 32];
    snprintf(idx, sizeof idx, "%s_fields_gin", base);
    qfi = rec_quote(idx, strlen(idx));
    snprintf(idx, sizeof idx, "%s_metadata_gin", base);
    qmi = rec_quote(idx, strlen(idx));
    snprintf(idx, sizeof idx, "%s_updated_at", base);
    qtr = rec_quote(idx, strlen(idx));
    int rc = PGPIPE_OK;
    if (!qfi || !qmi || !qtr) {
        rc = pp_err_nomem(&h->hdr.err);
        goto out;
    }
    pp_buf b = { 0 };
    /* one lock for every collection: CREATE SCHEMA IF NOT EXISTS and CREATE
    ** TABLE IF NOT EXISTS are not safe against a concurrent creator */
    pp_buf_appendf(&b,
        "BEGIN;"
        "SET LOCAL client_min_messages = warning;"
        "SELECT pg_advisory_xact_lock(7311288342515417418);"
        "CREATE SCHEMA IF NOT EXISTS %s;"
        "CREATE TABLE IF NOT EXISTS %s.%s ("
        " id uuid PRIMARY KEY DEFAULT gen_random_uuid(),"
        " fields jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(fields) = 'object'),"
        " metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),"
        " created_at timestamptz NOT NULL DEFAULT now(),"
        " updated_at timestamptz NOT NULL DEFAULT now());"
        "CREATE INDEX IF NOT EXISTS %s ON %s.%s USING gin (fields jsonb_path_ops);"
        "CREATE INDEX IF NOT EXISTS %s ON %s.%s USING gin (metadata jsonb_path_ops);"
        "CREATE OR REPLACE FUNCTION %s.pgpipe_records_touch() RETURNS trigger"
        " LANGUAGE plpgsql AS $pgpipe$BEGIN NEW.updated_at := now(); RETURN NEW; END$pgpipe$;"
        "CREATE OR REPLACE TRIGGER %s BEFORE UPDATE ON %s.%s FOR EACH ROW"
        " EXECUTE FUNCTION %s.pgpipe_records_touch();"
        "COMMIT",
        qschema, qschema, qname, qfi, qschema, qname, qmi, qschema, qname, qschema, qtr, qschema,
        qname, qschema);
    if (!b.data) {
        rc = pp_err_nomem(&h->hdr.err);
        goto out;
    }
    char cx[160];
    snprintf(cx, sizeof cx, "records: creating collection %s", h->name);
    rc = pp_exec(pg, b.data, 0, NULL, NULL, &h->hdr.err, cx);
    pp_buf_free(&b);
    if (rc != PGPIPE_OK)
        pp_rollback_open(pg);
out:
    pp_free(qfi);
    pp_free(qmi);
    pp_free(qtr);
    return rc;
}

int pgpipe_records_open(pgpipe_records **out, pgpipe_pool *pool, const char *name)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_records *h = *out = pp_handle_new(sizeof *h);
    if (!h)
        return PGPIPE_NOMEM;
    h->pool = pool;
    h->name = pp_strdup(name ? name : "");
    if (!h->name || pgpipe_json_doc_open(&h->doc) != PGPIPE_OK)
        return pp_err_nomem(&h->hdr.err);
    if (!pool || !name)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: open needs a pool and a name");
    const char *dot = strchr(name, '.');
    const char *schema = "records", *base = name;
    size_t slen = 7;
    if (dot) {
        schema = name;
        slen = (size_t)(dot - name);
        base = dot + 1;
    }
    if (!rec_name_ok(schema, slen) || !rec_name_ok(base, strlen(base)))
        return pp_err(&h->hdr.err, PGPIPE_MISUSE,
                      "records: bad collection name \"%.80s\": use \"name\" or \"schema.name\", each "
                      "a letter or '_' then letters, digits, '_' or '-', at most %d bytes",
                      name, REC_NAME_MAX);
    if (rec_schema_reserved(schema, slen))
        return pp_err(&h->hdr.err, PGPIPE_MISUSE,
                      "records: collection \"%.80s\" is in schema %.*s, which is reserved (pgpipe, "
                      "staging, pg_* and information_schema hold no collections)",
                      name, (int)slen, schema);
    pgpipe_conn *c;
    int rc = pgpipe_pool_acquire_ex(pool, &c, -1, &h->hdr.err);
    if (rc != PGPIPE_OK)
        return rc;
    PGconn *pg = pgpipe_conn_pg(c);
    char *qs = rec_quote(schema, slen);
    char *qn = rec_quote(base, strlen(base));
    if (!qs || !qn) {
        rc = pp_err_nomem(&h->hdr.err);
        goto done;
    }
    pp_buf t = { 0 };
    if (pp_buf_appendf(&t, "%s.%s", qs, qn) != PGPIPE_OK) {
        rc = pp_err_nomem(&h->hdr.err);
        goto done;
    }
    h->qtable = t.data;
    for (int i = 0; i < 2; i++) {
        char idx[REC_NAME_MAX + 32];
        snprintf(idx, sizeof idx, "%s_%s_gin", base, i ? "metadata" : "fields");
        char *qi = rec_quote(idx, strlen(idx));
        pp_buf g = { 0 };
        if (!qi || pp_buf_appendf(&g, "%s.%s", qs, qi) != PGPIPE_OK) {
            pp_free(qi);
            rc = pp_err_nomem(&h->hdr.err);
            goto done;
        }
        pp_free(qi);
        h->gin[i] = g.data;
    }
    const char *v[1] = { h->qtable };
    PGresult *r;
    /* a table that is there already must have the collection's shape */
    rc = rec_exec(h, c,
                  "SELECT c.relkind IN ('r', 'p'),"
                  " (SELECT coalesce(string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod),"
                  "   ', ' ORDER BY a.attname), '')"
                  "  FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0"
                  "  AND NOT a.attisdropped AND a.attname IN"
                  "  ('id', 'fields', 'metadata', 'created_at', 'updated_at'))"
                  " FROM pg_class c WHERE c.oid = to_regclass($1)",
                  1, v, "looking up the table", &r);
    if (rc != PGPIPE_OK)
        goto done;
    int exists = PQntuples(r) == 1;
    if (exists) {
        static const char want[] = "created_at timestamp with time zone, fields jsonb, id uuid, "
                                   "metadata jsonb, updated_at timestamp with time zone";
        int table = PQgetvalue(r, 0, 0)[0] == 't';
        const char *have = PQgetvalue(r, 0, 1);
        if (!table || strcmp(have, want) != 0)
            rc = pp_err(&h->hdr.err, PGPIPE_MISUSE,
                        "records: %s exists and is not a collection (%s%s; a collection is a table "
                        "with %s)", h->qtable, table ? "its columns of those: " : "not a table",
                        table ? (*have ? have : "none") : "", want);
    }
    PQclear(r);
    if (rc != PGPIPE_OK)
        goto done;
    if (!exists) {
        rc = rec_create_table(h, pg, qs, qn, base);
        if (rc == PGPIPE_OK)
            pp_logf(PGPIPE_LOG_INFO, "records", "collection %s ready", h->qtable);
    }
done:
    pp_free(qs);
    pp_free(qn);
    pgpipe_pool_release(c);
    return rc;
}

const char *pgpipe_records_table(const pgpipe_records *h)
{
    return h && h->qtable ? h->qtable : "";
}

void pgpipe_records_close(pgpipe_records *h)
{
    if (!h)
        return;
    if (h->tx) {
        PQclear(PQexec(pgpipe_conn_pg(h->tx), "ROLLBACK"));
        pgpipe_pool_release(h->tx);
    }
    pgpipe_json_doc_close(h->doc);
    pp_buf_free(&h->sql);
    pp_free(h->qtable);
    pp_free(h->gin[0]);
    pp_free(h->gin[1]);
    pp_free(h->name);
    pp_free(h);
}

static int rec_ready(pgpipe_records *h)
{
    if (!h)
        return PGPIPE_MISUSE;
    if (!h->qtable)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: the collection did not open");
    pgpipe_error_clear(&h->hdr.err);
    return PGPIPE_OK;
}

/* ---- CRUD ----------------------------------------------------------------- */

int pgpipe_records_create_meta(pgpipe_records *h, const char *fields, const char *metadata,
                               char uuid_out[37])
{
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if ((rc = rec_check_object(h, fields, "fields")) != PGPIPE_OK)
        return rc;
    if (metadata && (rc = rec_check_object(h, metadata, "metadata")) != PGPIPE_OK)
        return rc;
    if ((rc = rec_sql(h, "INSERT INTO %s (fields, metadata) VALUES ($1::jsonb, "
                         "coalesce($2::jsonb, '{}')) RETURNING id", h->qtable)) != PGPIPE_OK)
        return rc;
    const char *v[2] = { fields, metadata };
    PGresult *r;
    if ((rc = rec_run(h, h->sql.data, 2, v, "create", &r)) != PGPIPE_OK)
        return rc;
    if (uuid_out)
        snprintf(uuid_out, 37, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return PGPIPE_OK;
}

int pgpipe_records_create(pgpipe_records *h, const char *fields, char uuid_out[37])
{
    return pgpipe_records_create_meta(h, fields, NULL, uuid_out);
}

static int rec_check_id(pgpipe_records *h, const char *id)
{
    if (!rec_is_uuid(id))
        return pp_err_at(&h->hdr.err, PGPIPE_PARSE, "<id>", 1, 1, 0,
                         "records: \"%.60s\" is not a UUID (8-4-4-4-12 hex digits)",
                         id ? id : "(null)");
    return PGPIPE_OK;
}

int pgpipe_records_get(pgpipe_records *h, const char *id, char **json_out)
{
    if (json_out)
        *json_out = NULL;
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if (!json_out)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: get needs json_out");
    if ((rc = rec_check_id(h, id)) != PGPIPE_OK)
        return rc;
    if ((rc = rec_sql(h, "SELECT " REC_DOC_SQL " FROM %s WHERE id = $1::uuid", h->qtable)) != PGPIPE_OK)
        return rc;
    const char *v[1] = { id };
    PGresult *r;
    if ((rc = rec_run(h, h->sql.data, 1, v, "get", &r)) != PGPIPE_OK)
        return rc;
    if (PQntuples(r) == 0) {
        PQclear(r);
        return pp_err(&h->hdr.err, PGPIPE_DONE, "records: no record %s in %s", id, h->name);
    }
    *json_out = pp_strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return *json_out ? PGPIPE_OK : pp_err_nomem(&h->hdr.err);
}

int pgpipe_records_update(pgpipe_records *h, const char *id, const char *json, int flags)
{
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if (flags & ~(PGPIPE_RECORDS_REPLACE | PGPIPE_RECORDS_METADATA))
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: unknown update flags %d", flags);
    if ((rc = rec_check_id(h, id)) != PGPIPE_OK)
        return rc;
    const char *col = flags & PGPIPE_RECORDS_METADATA ? "metadata" : "fields";
    if ((rc = rec_check_object(h, json, col)) != PGPIPE_OK)
        return rc;
    if (flags & PGPIPE_RECORDS_REPLACE)
        rc = rec_sql(h, "UPDATE %s SET %s = $2::jsonb WHERE id = $1::uuid", h->qtable, col);
    else
        rc = rec_sql(h, "UPDATE %s SET %s = %s || $2::jsonb WHERE id = $1::uuid", h->qtable, col, col);
    if (rc != PGPIPE_OK)
        return rc;
    const char *v[2] = { id, json };
    PGresult *r;
    if ((rc = rec_run(h, h->sql.data, 2, v, "update", &r)) != PGPIPE_OK)
        return rc;
    int n = atoi(PQcmdTuples(r));
    PQclear(r);
    if (n == 0)
        return pp_err(&h->hdr.err, PGPIPE_DONE, "records: no record %s in %s", id, h->name);
    return PGPIPE_OK;
}

int pgpipe_records_delete(pgpipe_records *h, const char *id)
{
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if ((rc = rec_check_id(h, id)) != PGPIPE_OK)
        return rc;
    if ((rc = rec_sql(h, "DELETE FROM %s WHERE id = $1::uuid", h->qtable)) != PGPIPE_OK)
        return rc;
    const char *v[1] = { id };
    PGresult *r;
    if ((rc = rec_run(h, h->sql.data, 1, v, "delete", &r)) != PGPIPE_OK)
        return rc;
    int n = atoi(PQcmdTuples(r));
    PQclear(r);
    if (n == 0)
        return pp_err(&h->hdr.err, PGPIPE_DONE, "records: no record %s in %s", id, h->name);
    return PGPIPE_OK;
}

/* ---- COPY --------------------------------------------------------------- */

typedef struct rec_copy {
    pgpipe_records *h;
    pgpipe_conn *c;
    PGconn *pg;
    pp_buf buf;
    int open;
    long long err_row;  /* the COPY row the server's error names (its CONTEXT); 0: none */
} rec_copy;

/* The COPY row a COPY error's CONTEXT names ("COPY t, line 3[, column c: ...]"), or 0. */
static long long rec_copy_err_row(const PGresult *r)
{
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    const char *at = ctx && !strncmp(ctx, "COPY ", 5) ? strstr(ctx, ", line ") : NULL;
    if (!at)
        return 0;
    at += 7;
    long long n = 0;
    while (isdigit((unsigned char)*at) && n < LLONG_MAX / 10)
        n = n * 10 + (*at++ - '0');
    return n;
}

static int rec_copy_begin(rec_copy *cp, pgpipe_records *h, const char *columns)
{
    memset(cp, 0, sizeof *cp);
    cp->h = h;
    int rc = rec_acquire(h, &cp->c);
    if (rc != PGPIPE_OK)
        return rc;
    cp->pg = pgpipe_conn_pg(cp->c);
    if ((rc = rec_sql(h, "COPY %s (%s) FROM STDIN", h->qtable, columns)) != PGPIPE_OK)
        return rc;
    if ((rc = pp_copy_in_start(cp->pg, h->sql.data, &h->hdr.err, "records: COPY")) != PGPIPE_OK)
        return rc;
    cp->open = 1;
    return PGPIPE_OK;
}

static int rec_copy_flush(rec_copy *cp)
{
    if (cp->buf.len == 0)
        return PGPIPE_OK;
    if (PQputCopyData(cp->pg, cp->buf.data, (int)cp->buf.len) != 1)
        return pp_err_pq(&cp->h->hdr.err, cp->pg, NULL, "records: sending COPY data");
    cp->buf.len = 0;
    return PGPIPE_OK;
}

/* End the COPY (abort with a message when why is not NULL), read its result,
** release the connection. Returns rc when rc is already an error. */
static int rec_copy_end(rec_copy *cp, int rc, const char *why, long long *rows)
{
    pgpipe_records *h = cp->h;
    if (cp->open) {
        if (rc == PGPIPE_OK && !why)
            rc = rec_copy_flush(cp);
        int aborting = rc != PGPIPE_OK || why;
        if (PQputCopyEnd(cp->pg, aborting ? (why ? why : "records: aborted") : NULL) != 1 &&
            rc == PGPIPE_OK)
            rc = pp_err_pq(&h->hdr.err, cp->pg, NULL, "records: ending COPY");
        PGresult *r;
        while ((r = PQgetResult(cp->pg)) != NULL) {
            if (PQresultStatus(r) == PGRES_COMMAND_OK) {
                if (rows)
                    *rows = atoll(PQcmdTuples(r));
            } else if (rc == PGPIPE_OK && !why) {
                rc = pp_err_pq(&h->hdr.err, cp->pg, r, "records: COPY");
                cp->err_row = rec_copy_err_row(r);
            }
            PQclear(r);
        }
    }
    pp_buf_free(&cp->buf);
    rec_release(h, cp->c);
    cp->c = NULL;
    return rc;
}

/* After a bulk insert of many rows: merge the GIN indexes' pending lists
** (fastupdate) into the indexes now, so searches right after a batch or an
** import use the indexes at full speed (the planner avoids a GIN index whose
** pending list is long, until VACUUM merges it). */
#define REC_GIN_CLEAN_ROWS 1000
static int rec_gin_clean(pgpipe_records *h)
{
    const char *v[2] = { h->gin[0], h->gin[1] };
    PGresult *r;
    int rc = rec_run(h, "SELECT gin_clean_pending_list(i) FROM (VALUES (to_regclass($1)), "
                        "(to_regclass($2))) AS v(i) WHERE i IS NOT NULL", 2, v,
                     "merging the GIN pending lists", &r);
    PQclear(r);
    return rc;
}

int pgpipe_records_create_batch(pgpipe_records *h, const char *const *docs, size_t n,
                                char (*ids_out)[37])
{
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if (n && !docs)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: create_batch: docs is NULL");
    if (n == 0)
        return PGPIPE_OK;
    char what[64];
    for (size_t i = 0; i < n; i++) {
        snprintf(what, sizeof what, "document %zu", i);
        if ((rc = rec_check_object(h, docs[i], what)) != PGPIPE_OK)
            return rc;
    }
    rec_copy cp;
    rc = rec_copy_begin(&cp, h, ids_out ? "id, fields" : "fields");
    for (size_t i = 0; i < n && rc == PGPIPE_OK; i++) {
        if (ids_out) {
            if ((rc = rec_uuid_new(h, ids_out[i])) != PGPIPE_OK)
                break;
            pp_buf_append(&cp.buf, ids_out[i], 36);
            pp_buf_putc(&cp.buf, '\t');
        }
        if (pp_copy_field(&cp.buf, docs[i], strlen(docs[i])) != PGPIPE_OK ||
            pp_buf_putc(&cp.buf, '\n') != PGPIPE_OK) {
            rc = pp_err_nomem(&h->hdr.err);
            break;
        }
        if (cp.buf.len >= REC_COPY_CHUNK)
            rc = rec_copy_flush(&cp);
    }
    long long rows = 0;
    rc = rec_copy_end(&cp, rc, NULL, &rows);
    if (rc == PGPIPE_OK && rows != (long long)n)
        rc = pp_err(&h->hdr.err, PGPIPE_ERROR, "records: COPY stored %lld of %zu records", rows, n);
    if (rc == PGPIPE_OK && n >= REC_GIN_CLEAN_ROWS)
        rc = rec_gin_clean(h);
    return rc;
}

/* ---- filters: paths ------------------------------------------------------- */

static int rec_word_char(int c)
{
    return isalnum(c) || c == '_' || c == '-' || c == '$';
}

static long long rec_column_of(const char *text, size_t off)
{
    long long col = 1;
    for (size_t i = 0; i < off && text[i]; i++)
        if (((unsigned char)text[i] & 0xC0) != 0x80)
            col++;
    return col;
}

static int rec_ferr(pgpipe_records_filter *f, const char *text, size_t off, const char *fmt, ...)
    PP_PRINTF(4, 5);
static int rec_ferr(pgpipe_records_filter *f, const char *text, size_t off, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    long long col = rec_column_of(text, off);
    return pp_err_at(&f->hdr.err, PGPIPE_PARSE, "<filter>", 1, col, (long long)off,
                     "%s at column %lld", msg, col);
}

static void rec_cond_clear(rec_cond *c)
{
    for (int i = 0; i < c->nkeys; i++)
        pp_free(c->keys[i]);
    pp_free(c->keys);
    pp_free(c->json);
    pp_free(c->vtext);
    memset(c, 0, sizeof *c);
}

static int rec_cond_key(rec_cond *c, const char *k, size_t n)
{
    char **nk = pp_realloc(c->keys, (size_t)(c->nkeys + 1) * sizeof *nk);
    if (!nk)
        return PGPIPE_NOMEM;
    c->keys = nk;
    if (!(c->keys[c->nkeys] = pp_strndup(k, n)))
        return PGPIPE_NOMEM;
    c->nkeys++;
    return PGPIPE_OK;
}

/* Parse a path at text + *pos into c (keys, metadata); *pos moves past it. */
static int rec_parse_path(pgpipe_records_filter *f, const char *text, size_t *pos, rec_cond *c)
{
    size_t i = *pos;
    if (text[i] == '@') {
        size_t s = ++i;
        while (rec_word_char((unsigned char)text[i]))
            i++;
        if (i - s == 8 && !strncmp(text + s, "metadata", 8))
            c->metadata = 1;
        else if (!(i - s == 6 && !strncmp(text + s, "fields", 6)))
            return rec_ferr(f, text, s - 1, "unknown column \"@%.*s\" (@fields or @metadata)",
                            (int)(i - s), text + s);
        if (text[i] != '.') {
            *pos = i;
            return PGPIPE_OK;
        }
        i++;
    }
    for (;;) {
        if (text[i] == '"') {
            /* a key written as a JSON string */
            size_t s = i++;
            while (text[i] && text[i] != '"') {
                if (text[i] == '\\' && text[i + 1])
                    i++;
                i++;
            }
            if (text[i] != '"')
                return rec_ferr(f, text, s, "unterminated quoted key");
            i++;
            pgpipe_json_doc *d;
            if (pgpipe_json_doc_open(&d) != PGPIPE_OK)
                return pp_err_nomem(&f->hdr.err);
            int rc = pgpipe_json_parse(d, text + s, i - s);
            size_t kl = 0;
            const char *k = rc == PGPIPE_OK ? pgpipe_json_get_str(pgpipe_json_root(d), &kl) : NULL;
            if (!k || memchr(k, '\0', kl)) {
                pgpipe_json_doc_close(d);
                return rec_ferr(f, text, s, "bad quoted key (a JSON string without \\u0000)");
            }
            rc = rec_cond_key(c, k, kl);
            pgpipe_json_doc_close(d);
            if (rc != PGPIPE_OK)
                return pp_err_nomem(&f->hdr.err);
        } else {
            size_t s = i;
            while (rec_word_char((unsigned char)text[i]))
                i++;
            if (i == s)
                return rec_ferr(f, text, s, "expected a field name (a word or a \"quoted key\")");
            if (rec_cond_key(c, text + s, i - s) != PGPIPE_OK)
                return pp_err_nomem(&f->hdr.err);
        }
        if (text[i] != '.')
            break;
        i++;
    }
    *pos = i;
    return PGPIPE_OK;
}

/* ---- filters: values and conditions -------------------------------------- */

static const char *rec_op_name(int op)
{
    static const char *const names[] = { "?", "=", "!=", "<", "<=", ">", ">=", "in", "exists",
                                         "contains", "like", "ilike" };
    return op >= 1 && op <= PGPIPE_RECORDS_ILIKE ? names[op] : "?";
}

/* Set c's value from JSON text (already known to be one value). On a bad
** value the message is returned in why. */
static int rec_cond_value(rec_cond *c, const char *json, size_t len, pgpipe_json_doc *d,
                          const char **why)
{
    int rc = pgpipe_json_parse(d, json, len);
    if (rc != PGPIPE_OK) {
        *why = "bad JSON value";
        return rc == PGPIPE_NOMEM ? PGPIPE_NOMEM : PGPIPE_PARSE;
    }
    const pgpipe_json_val *v = pgpipe_json_root(d);
    c->vtype = pgpipe_json_type(v);
    if (rec_has_nul(v)) {
        *why = "\\u0000 cannot be compared in PostgreSQL text";
        return PGPIPE_PARSE;
    }
    switch (c->op) {
    case PGPIPE_RECORDS_IN:
        if (c->vtype != PGPIPE_JSON_ARRAY) {
            *why = "in needs a JSON array of values";
            return PGPIPE_PARSE;
        }
        break;
    case PGPIPE_RECORDS_LIKE:
    case PGPIPE_RECORDS_ILIKE:
        if (c->vtype != PGPIPE_JSON_STRING) {
            *why = "like needs a string pattern";
            return PGPIPE_PARSE;
        }
        break;
    case PGPIPE_RECORDS_LT: case PGPIPE_RECORDS_LE:
    case PGPIPE_RECORDS_GT: case PGPIPE_RECORDS_GE:
        if (c->vtype == PGPIPE_JSON_NULL || c->vtype == PGPIPE_JSON_ARRAY ||
            c->vtype == PGPIPE_JSON_OBJECT) {
            *why = "<, <=, >, >= need a string, number or boolean";
            return PGPIPE_PARSE;
        }
        break;
    default:
        break;
    }
    pp_buf b = { 0 };
    if (json_write_buf(&b, v) != PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK) {
        pp_buf_free(&b);
        return PGPIPE_NOMEM;
    }
    c->json = b.data;
    size_t n = 0;
    const char *s = NULL;
    if (c->vtype == PGPIPE_JSON_STRING)
        s = pgpipe_json_get_str(v, &n);
    else if (c->vtype == PGPIPE_JSON_NUMBER)
        s = pgpipe_json_number_text(v, &n);
    else if (c->vtype == PGPIPE_JSON_BOOL)
        s = pgpipe_json_get_bool(v) ? "true" : "false", n = strlen(s);
    if (s) {
        if (!(c->vtext = pp_strndup(s, n)))
            return PGPIPE_NOMEM;
        c->vnumeric = rec_is_number(s, n);
    }
    return PGPIPE_OK;
}

static int rec_filter_push(pgpipe_records_filter *f, rec_cond *c)
{
    if (f->n == f->cap) {
        int cap = f->cap ? f->cap * 2 : 4;
        rec_cond *nc = pp_realloc(f->c, (size_t)cap * sizeof *nc);
        if (!nc)
            return pp_err_nomem(&f->hdr.err);
        f->c = nc;
        f->cap = cap;
    }
    f->c[f->n++] = *c;
    memset(c, 0, sizeof *c);
    return PGPIPE_OK;
}

static int rec_filter_alloc(pgpipe_records_filter **out)
{
    if (!out)
        return PGPIPE_MISUSE;
    *out = pp_handle_new(sizeof **out);
    return *out ? PGPIPE_OK : PGPIPE_NOMEM;
}

void pgpipe_records_filter_close(pgpipe_records_filter *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        rec_cond_clear(&f->c[i]);
    pp_free(f->c);
    pp_free(f);
}

int pgpipe_records_filter_count(const pgpipe_records_filter *f) { return f ? f->n : 0; }

static int rec_filter_finish(pgpipe_records_filter *f, rec_cond *c, const char *value,
                             const char *ctx)
{
    int rc = PGPIPE_OK;
    if (c->op < PGPIPE_RECORDS_EQ || c->op > PGPIPE_RECORDS_ILIKE) {
        rc = pp_err(&f->hdr.err, PGPIPE_MISUSE, "records filter: unknown operator %d", c->op);
    } else if (c->op == PGPIPE_RECORDS_EXISTS) {
        if (value)
            rc = pp_err(&f->hdr.err, PGPIPE_MISUSE, "records filter: exists takes no value");
    } else if (!value) {
        rc = pp_err(&f->hdr.err, PGPIPE_MISUSE, "records filter: %s needs a value", rec_op_name(c->op));
    } else {
        pgpipe_json_doc *d;
        if (pgpipe_json_doc_open(&d) != PGPIPE_OK) {
            rc = pp_err_nomem(&f->hdr.err);
        } else {
            pgpipe_json_doc_set_source(d, ctx);
            const char *why = NULL;
            rc = rec_cond_value(c, value, strlen(value), d, &why);
            if (rc == PGPIPE_NOMEM)
                pp_err_nomem(&f->hdr.err);
            else if (rc != PGPIPE_OK && pgpipe_errcode(d) != PGPIPE_OK)
                f->hdr.err = *pgpipe_errinfo(d);
            else if (rc != PGPIPE_OK)
                pp_err(&f->hdr.err, PGPIPE_PARSE, "records filter: %s", why);
            pgpipe_json_doc_close(d);
        }
    }
    if (rc == PGPIPE_OK)
        rc = rec_filter_push(f, c);
    rec_cond_clear(c);
    return rc;
}

int pgpipe_records_filter_add(pgpipe_records_filter *f, const char *path, int op, const char *value)
{
    if (!f || !path)
        return f ? pp_err(&f->hdr.err, PGPIPE_MISUSE, "records filter: path is NULL") : PGPIPE_MISUSE;
    rec_cond c = { 0 };
    c.op = op;
    size_t pos = 0;
    int rc = rec_parse_path(f, path, &pos, &c);
    if (rc == PGPIPE_OK && path[pos])
        rc = rec_ferr(f, path, pos, "unexpected \"%c\" in the path", path[pos]);
    if (rc != PGPIPE_OK) {
        rec_cond_clear(&c);
        return rc;
    }
    return rec_filter_finish(f, &c, value, "<value>");
}

int pgpipe_records_filter_add_keys(pgpipe_records_filter *f, int metadata, const char *const *keys,
                                   int nkeys, int op, const char *value)
{
    if (!f || nkeys < 0 || (nkeys && !keys))
        return f ? pp_err(&f->hdr.err, PGPIPE_MISUSE, "records filter: bad keys") : PGPIPE_MISUSE;
    rec_cond c = { 0 };
    c.op = op;
    c.metadata = metadata != 0;
    for (int i = 0; i < nkeys; i++)
        if (!keys[i] || rec_cond_key(&c, keys[i], strlen(keys[i])) != PGPIPE_OK) {
            rec_cond_clear(&c);
            return keys[i] ? pp_err_nomem(&f->hdr.err)
                           : pp_err(&f->hdr.err, PGPIPE_MISUSE, "records filter: key %d is NULL", i);
        }
    return rec_filter_finish(f, &c, value, "<value>");
}

/* ---- filters: text form ----------------------------------------------------- */

static size_t rec_skip_ws(const char *t, size_t i)
{
    while (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')
        i++;
    return i;
}

/* The word at t+i (letters only) compared case-insensitively with w. */
static int rec_is_word(const char *t, size_t i, const char *w)
{
    size_t n = strlen(w);
    return strncasecmp(t + i, w, n) == 0 && !rec_word_char((unsigned char)t[i + n]);
}

/* End of the JSON value starting at t+i (strings, brackets, or a scalar
** word); 0 when there is none. */
static size_t rec_value_end(const char *t, size_t i)
{
    if (t[i] == '"') {
        for (i++; t[i] && t[i] != '"'; i++)
            if (t[i] == '\\' && t[i + 1])
                i++;
        return t[i] == '"' ? i + 1 : i;
    }
    if (t[i] == '[' || t[i] == '{') {
        int depth = 0;
        for (; t[i]; i++) {
            if (t[i] == '"') {
                for (i++; t[i] && t[i] != '"'; i++)
                    if (t[i] == '\\' && t[i + 1])
                        i++;
                if (!t[i])
                    return i;
            } else if (t[i] == '[' || t[i] == '{') {
                depth++;
            } else if (t[i] == ']' || t[i] == '}') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return i;
    }
    size_t s = i;
    while (isalnum((unsigned char)t[i]) || t[i] == '.' || t[i] == '-' || t[i] == '+')
        i++;
    return i > s ? i : 0;
}

static const struct { const char *text; int op; } rec_ops[] = {
    { "==", PGPIPE_RECORDS_EQ }, { "!=", PGPIPE_RECORDS_NE }, { "<>", PGPIPE_RECORDS_NE },
    { "<=", PGPIPE_RECORDS_LE }, { ">=", PGPIPE_RECORDS_GE }, { "=", PGPIPE_RECORDS_EQ },
    { "<", PGPIPE_RECORDS_LT }, { ">", PGPIPE_RECORDS_GT },
};
static const struct { const char *text; int op; } rec_op_words[] = {
    { "eq", PGPIPE_RECORDS_EQ }, { "ne", PGPIPE_RECORDS_NE }, { "lt", PGPIPE_RECORDS_LT },
    { "le", PGPIPE_RECORDS_LE }, { "gt", PGPIPE_RECORDS_GT }, { "ge", PGPIPE_RECORDS_GE },
    { "in", PGPIPE_RECORDS_IN }, { "exists", PGPIPE_RECORDS_EXISTS },
    { "contains", PGPIPE_RECORDS_CONTAINS }, { "like", PGPIPE_RECORDS_LIKE },
    { "ilike", PGPIPE_RECORDS_ILIKE },
};

static int rec_parse_cond(pgpipe_records_filter *f, const char *t, size_t *pos, pgpipe_json_doc *d)
{
    rec_cond c = { 0 };
    size_t i = *pos;
    int rc = rec_parse_path(f, t, &i, &c);
    if (rc != PGPIPE_OK)
        goto fail;
    i = rec_skip_ws(t, i);
    size_t opos = i;
    for (size_t k = 0; k < sizeof rec_ops / sizeof rec_ops[0] && !c.op; k++)
        if (!strncmp(t + i, rec_ops[k].text, strlen(rec_ops[k].text))) {
            c.op = rec_ops[k].op;
            i += strlen(rec_ops[k].text);
        }
    for (size_t k = 0; k < sizeof rec_op_words / sizeof rec_op_words[0] && !c.op; k++)
        if (rec_is_word(t, i, rec_op_words[k].text)) {
            c.op = rec_op_words[k].op;
            i += strlen(rec_op_words[k].text);
        }
    if (!c.op) {
        rc = rec_ferr(f, t, opos, "expected an operator (= != < <= > >= in exists contains like "
                                  "ilike)");
        goto fail;
    }
    if (c.op != PGPIPE_RECORDS_EXISTS) {
        i = rec_skip_ws(t, i);
        size_t vs = i, ve = rec_value_end(t, i);
        if (ve == 0 || (isalpha((unsigned char)t[vs]) && !rec_is_word(t, vs, "true") &&
                        !rec_is_word(t, vs, "false") && !rec_is_word(t, vs, "null"))) {
            rc = rec_ferr(f, t, vs, "expected a JSON value after %s (strings in double quotes)",
                          rec_op_name(c.op));
            goto fail;
        }
        const char *why = NULL;
        rc = rec_cond_value(&c, t + vs, ve - vs, d, &why);
        if (rc == PGPIPE_NOMEM) {
            rc = pp_err_nomem(&f->hdr.err);
            goto fail;
        }
        if (rc != PGPIPE_OK) {
            const pgpipe_error *e = pgpipe_errinfo(d);
            if (pgpipe_errcode(d) != PGPIPE_OK && e->offset >= 0) {
                /* the parser's message, placed in the whole filter text */
                const char *m = e->message;
                const char *at = strstr(m, " at line ");
                rc = rec_ferr(f, t, vs + (size_t)e->offset, "bad value after %s: %.*s",
                              rec_op_name(c.op), at ? (int)(at - m) : (int)strlen(m), m);
            } else {
                rc = rec_ferr(f, t, vs, "%s", why ? why : "bad value");
            }
            goto fail;
        }
        i = ve;
    }
    rc = rec_filter_push(f, &c);
    *pos = i;
    return rc;
fail:
    rec_cond_clear(&c);
    return rc;
}

int pgpipe_records_filter_open(pgpipe_records_filter **out, const char *text)
{
    int rc = rec_filter_alloc(out);
    if (rc != PGPIPE_OK)
        return rc;
    pgpipe_records_filter *f = *out;
    if (!text)
        return PGPIPE_OK;
    pgpipe_json_doc *d;
    if (pgpipe_json_doc_open(&d) != PGPIPE_OK)
        return pp_err_nomem(&f->hdr.err);
    pgpipe_json_doc_set_source(d, "<filter>");
    size_t i = rec_skip_ws(text, 0);
    while (text[i]) {
        if ((rc = rec_parse_cond(f, text, &i, d)) != PGPIPE_OK)
            break;
        i = rec_skip_ws(text, i);
        if (!text[i])
            break;
        if (rec_is_word(text, i, "and"))
            i += 3;
        else if (text[i] == '&' && text[i + 1] == '&')
            i += 2;
        else {
            rc = rec_ferr(f, text, i, "expected \"and\" or the end of the filter");
            break;
        }
        i = rec_skip_ws(text, i);
        if (!text[i]) {
            rc = rec_ferr(f, text, i, "expected a condition after \"and\"");
            break;
        }
    }
    pgpipe_json_doc_close(d);
    return rc;
}

/* ---- filters: SQL ----------------------------------------------------------- */

/* libpq sends the number of parameters as a 16-bit count */
#define REC_PARAMS_MAX 65535

typedef struct rec_q {
    pp_buf sql;
    char **params;
    int n, cap;
    int nomem;
    long long want;       /* parameters asked for; over REC_PARAMS_MAX: refused */
} rec_q;

static void rec_q_free(rec_q *q)
{
    pp_buf_free(&q->sql);
    for (int i = 0; i < q->n; i++)
        pp_free(q->params[i]);
    pp_free(q->params);
    memset(q, 0, sizeof *q);
}

static void rec_q_sql(rec_q *q, const char *s)
{
    if (pp_buf_append(&q->sql, s, strlen(s)) != PGPIPE_OK)
        q->nomem = 1;
}

/* Add a parameter (taking ownership of v); returns its number. */
static int rec_q_param(rec_q *q, char *v)
{
    q->want++;
    if (!v) {
        q->nomem = 1;
        return 1;
    }
    if (q->n >= REC_PARAMS_MAX) { /* refused by rec_q_end: no statement is sent */
        pp_free(v);
        return 1;
    }
    if (q->n == q->cap) {
        int cap = q->cap ? q->cap * 2 : 8;
        char **np = pp_realloc(q->params, (size_t)cap * sizeof *np);
        if (!np) {
            pp_free(v);
            q->nomem = 1;
            return 1;
        }
        q->params = np;
        q->cap = cap;
    }
    q->params[q->n++] = v;
    return q->n;
}

static int rec_q_param_keys(rec_q *q, const rec_cond *c)
{
    pp_buf b = { 0 };
    if (rec_text_array(&b, c->keys, c->nkeys) != PGPIPE_OK) {
        pp_buf_free(&b);
        return rec_q_param(q, NULL);
    }
    return rec_q_param(q, b.data);
}

/* Ends the statement of q: PGPIPE_OK, or the error on h (q freed then). A
** filter needing more parameters than one statement can take is refused
** with the limit named, before anything is sent. */
static int rec_q_end(pgpipe_records *h, rec_q *q, int nconds, const char *what)
{
    if (!q->nomem && q->want > REC_PARAMS_MAX) {
        long long want = q->want;
        rec_q_free(q);
        return pp_err(&h->hdr.err, PGPIPE_LIMIT,
                      "records: %s: the filter's %d conditions need %lld query parameters; "
                      "PostgreSQL takes at most %d in one statement (one to three a "
                      "condition): use fewer conditions (one in [...] condition takes all "
                      "its values as one parameter)", what, nconds, want, REC_PARAMS_MAX);
    }
    if (q->nomem || pp_buf_putc(&q->sql, '\0') != PGPIPE_OK) {
        rec_q_free(q);
        return pp_err_nomem(&h->hdr.err);
    }
    return PGPIPE_OK;
}

static int rec_has_index_key(const rec_cond *c)
{
    for (int i = 0; i < c->nkeys; i++)
        if (c->keys[i][0] && strspn(c->keys[i], "0123456789") == strlen(c->keys[i]))
            return 1;
    return 0;
}

/* {"k1":{"k2":value}} for containment at the path. */
static char *rec_nest(const rec_cond *c)
{
    pp_buf b = { 0 };
    int rc = PGPIPE_OK;
    for (int i = 0; i < c->nkeys && rc == PGPIPE_OK; i++) {
        rc = pp_buf_putc(&b, '{');
        rc |= pp_json_str(&b, c->keys[i], strlen(c->keys[i]), 0);
        rc |= pp_buf_putc(&b, ':');
    }
    rc |= pp_buf_append(&b, c->json, strlen(c->json));
    for (int i = 0; i < c->nkeys && rc == PGPIPE_OK; i++)
        rc = pp_buf_putc(&b, '}');
    rc |= pp_buf_putc(&b, '\0');
    if (rc != PGPIPE_OK) {
        pp_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static void rec_q_appendf(rec_q *q, const char *fmt, ...) PP_PRINTF(2, 3);
static void rec_q_appendf(rec_q *q, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp || pp_buf_append(&q->sql, tmp, (size_t)n) != PGPIPE_OK)
        q->nomem = 1;
}

/* The comparison of the text at path p ($p) with the value ($v) by op. */
static void rec_q_compare(rec_q *q, const char *col, int p, int v, const char *sqlop, int numeric)
{
    if (numeric)
        rec_q_appendf(q, "(CASE WHEN (%s #>> $%d::text[]) ~ " REC_NUM_RE
                         " THEN (%s #>> $%d::text[])::numeric %s $%d::numeric"
                         " ELSE (%s #>> $%d::text[]) COLLATE \"C\" %s $%d::text END)",
                      col, p, col, p, sqlop, v, col, p, sqlop, v);
    else
        rec_q_appendf(q, "((%s #>> $%d::text[]) COLLATE \"C\" %s $%d::text)", col, p, sqlop, v);
}

static void rec_q_cond(rec_q *q, const rec_cond *c)
{
    const char *col = c->metadata ? "metadata" : "fields";
    static const char *const sqlops[] = { "", "=", "<>", "<", "<=", ">", ">=" };
    int p, v;
    switch (c->op) {
    case PGPIPE_RECORDS_EQ:
    case PGPIPE_RECORDS_NE: {
        int ne = c->op == PGPIPE_RECORDS_NE;
        p = rec_q_param_keys(q, c);
        if (c->vtype == PGPIPE_JSON_NULL) {
            rec_q_appendf(q, ne ? "(jsonb_typeof(%s #> $%d::text[]) IS DISTINCT FROM 'null')"
                                : "(jsonb_typeof(%s #> $%d::text[]) = 'null')", col, p);
            break;
        }
        if (c->vtype == PGPIPE_JSON_ARRAY || c->vtype == PGPIPE_JSON_OBJECT) {
            v = rec_q_param(q, pp_strdup(c->json));
            if (!ne && !rec_has_index_key(c)) {
                int cv = rec_q_param(q, rec_nest(c));
                rec_q_appendf(q, "(%s @> $%d::jsonb AND ", col, cv);
            } else {
                rec_q_sql(q, "(");
            }
            rec_q_appendf(q, ne ? "(%s #> $%d::text[]) IS DISTINCT FROM $%d::jsonb)"
                                : "(%s #> $%d::text[]) = $%d::jsonb)", col, p, v);
            break;
        }
        v = rec_q_param(q, pp_strdup(c->vtext));
        if (ne)
            rec_q_sql(q, "(");
        else if (c->vtype == PGPIPE_JSON_STRING && !c->vnumeric && strcmp(c->vtext, "true") &&
                 strcmp(c->vtext, "false") && !rec_has_index_key(c)) {
            /* only a stored string can equal it: containment narrows through
            ** the GIN index, the comparison below rechecks */
            int cv = rec_q_param(q, rec_nest(c));
            rec_q_appendf(q, "(%s @> $%d::jsonb AND ", col, cv);
        } else {
            rec_q_sql(q, "(");
        }
        rec_q_compare(q, col, p, v, "=", c->vnumeric);
        rec_q_sql(q, ne ? " IS NOT TRUE)" : ")");
        break;
    }
    case PGPIPE_RECORDS_LT: case PGPIPE_RECORDS_LE:
    case PGPIPE_RECORDS_GT: case PGPIPE_RECORDS_GE:
        p = rec_q_param_keys(q, c);
        v = rec_q_param(q, pp_strdup(c->vtext));
        rec_q_compare(q, col, p, v, sqlops[c->op], c->vnumeric);
        break;
    case PGPIPE_RECORDS_IN:
        p = rec_q_param_keys(q, c);
        v = rec_q_param(q, pp_strdup(c->json));
        rec_q_appendf(q, "EXISTS (SELECT 1 FROM jsonb_array_elements_text($%d::jsonb) AS e(v)"
                         " WHERE CASE WHEN (%s #>> $%d::text[]) ~ " REC_NUM_RE " AND e.v ~ " REC_NUM_RE
                         " THEN (%s #>> $%d::text[])::numeric = e.v::numeric"
                         " ELSE (%s #>> $%d::text[]) = e.v END)",
                      v, col, p, col, p, col, p);
        break;
    case PGPIPE_RECORDS_EXISTS:
        if (c->nkeys == 1) {
            v = rec_q_param(q, pp_strdup(c->keys[0]));
            rec_q_appendf(q, "(%s ? $%d::text)", col, v);
        } else {
            p = rec_q_param_keys(q, c);
            rec_q_appendf(q, "((%s #> $%d::text[]) IS NOT NULL)", col, p);
        }
        break;
    case PGPIPE_RECORDS_CONTAINS:
        if (!rec_has_index_key(c)) {
            v = rec_q_param(q, rec_nest(c));
            rec_q_appendf(q, "(%s @> $%d::jsonb)", col, v);
        } else {
            p = rec_q_param_keys(q, c);
            v = rec_q_param(q, pp_strdup(c->json));
            rec_q_appendf(q, "((%s #> $%d::text[]) @> $%d::jsonb)", col, p, v);
        }
        break;
    case PGPIPE_RECORDS_LIKE:
    case PGPIPE_RECORDS_ILIKE:
        p = rec_q_param_keys(q, c);
        v = rec_q_param(q, pp_strdup(c->vtext));
        rec_q_appendf(q, "((%s #>> $%d::text[]) %s $%d::text)", col, p,
                      c->op == PGPIPE_RECORDS_LIKE ? "LIKE" : "ILIKE", v);
        break;
    default:
        rec_q_sql(q, "false");
        break;
    }
}

static void rec_q_where(rec_q *q, const pgpipe_records_filter *f)
{
    if (!f || f->n == 0)
        return;
    rec_q_sql(q, " WHERE ");
    for (int i = 0; i < f->n; i++) {
        if (i)
            rec_q_sql(q, " AND ");
        rec_q_cond(q, &f->c[i]);
    }
}

void pgpipe_records_find_options_init(pgpipe_records_find_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->limit = -1;
}

/* Build the search statement. The filter is parsed from o->where when
** o->filter is NULL (its errors go to the handle). */
static int rec_build_find(pgpipe_records *h, const pgpipe_records_find_options *o, const char *select,
                          rec_q *q)
{
    memset(q, 0, sizeof *q);
    pgpipe_records_find_options def;
    if (!o) {
        pgpipe_records_find_options_init(&def);
        o = &def;
    }
    pgpipe_records_filter *parsed = NULL;
    const pgpipe_records_filter *f = o->filter;
    if (!f && o->where) {
        int rc = pgpipe_records_filter_open(&parsed, o->where);
        if (rc != PGPIPE_OK) {
            if (parsed)
                h->hdr.err = parsed->hdr.err;
            else
                pp_err_nomem(&h->hdr.err);
            pgpipe_records_filter_close(parsed);
            return rc;
        }
        f = parsed;
    }
    rec_q_appendf(q, "SELECT %s FROM %s", select, h->qtable);
    rec_q_where(q, f);
    int nconds = f ? f->n : 0;
    pgpipe_records_filter_close(parsed);
    const char *s = o->sort;
    int desc = 0;
    if (s && *s == '-') {
        desc = 1;
        s++;
    } else if (s && *s == '+') {
        s++;
    }
    const char *dir = desc ? "DESC" : "ASC";
    if (!s || !*s) {
        rec_q_appendf(q, " ORDER BY created_at %s, id %s", dir, dir);
    } else if (!strcmp(s, "@id")) {
        rec_q_appendf(q, " ORDER BY id %s", dir);
    } else if (!strcmp(s, "@created_at") || !strcmp(s, "@updated_at")) {
        rec_q_appendf(q, " ORDER BY %s %s, id %s", s + 1, dir, dir);
    } else {
        pgpipe_records_filter tmp;
        memset(&tmp, 0, sizeof tmp);
        pp_handle_init(&tmp.hdr);
        rec_cond c = { 0 };
        size_t pos = 0;
        int rc = rec_parse_path(&tmp, s, &pos, &c);
        if (rc == PGPIPE_OK && s[pos])
            rc = rec_ferr(&tmp, s, pos, "unexpected \"%c\" in the sort path", s[pos]);
        if (rc != PGPIPE_OK) {
            h->hdr.err = tmp.hdr.err;
            snprintf(h->hdr.err.source, sizeof h->hdr.err.source, "<sort>");
            rec_cond_clear(&c);
            rec_q_free(q);
            return rc;
        }
        int p = rec_q_param_keys(q, &c);
        rec_q_appendf(q, " ORDER BY %s #> $%d::text[] %s NULLS LAST, id %s",
                      c.metadata ? "metadata" : "fields", p, dir, dir);
        rec_cond_clear(&c);
    }
    char num[32];
    if (o->limit >= 0) {
        snprintf(num, sizeof num, "%lld", o->limit);
        rec_q_appendf(q, " LIMIT $%d::bigint", rec_q_param(q, pp_strdup(num)));
    }
    if (o->offset > 0) {
        snprintf(num, sizeof num, "%lld", o->offset);
        rec_q_appendf(q, " OFFSET $%d::bigint", rec_q_param(q, pp_strdup(num)));
    }
    return rec_q_end(h, q, nconds, "find");
}

int pgpipe_records_find(pgpipe_records *h, const pgpipe_records_find_options *o,
                        pgpipe_records_cursor **out)
{
    if (out)
        *out = NULL;
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if (!out)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: find needs out");
    rec_q q;
    if ((rc = rec_build_find(h, o, REC_DOC_SQL, &q)) != PGPIPE_OK)
        return rc;
    PGresult *r;
    rc = rec_run(h, q.sql.data, q.n, (const char *const *)q.params, "find", &r);
    rec_q_free(&q);
    if (rc != PGPIPE_OK)
        return rc;
    pgpipe_records_cursor *c = pp_calloc(1, sizeof *c);
    if (!c) {
        PQclear(r);
        return pp_err_nomem(&h->hdr.err);
    }
    c->res = r;
    c->nrows = PQntuples(r);
    *out = c;
    return PGPIPE_OK;
}

int pgpipe_records_cursor_next(pgpipe_records_cursor *c, const char **json, size_t *len)
{
    if (!c)
        return PGPIPE_MISUSE;
    if (c->row >= c->nrows)
        return PGPIPE_DONE;
    if (json)
        *json = PQgetvalue(c->res, c->row, 0);
    if (len)
        *len = (size_t)PQgetlength(c->res, c->row, 0);
    c->row++;
    return PGPIPE_ROW;
}

long long pgpipe_records_cursor_count(const pgpipe_records_cursor *c) { return c ? c->nrows : 0; }

void pgpipe_records_cursor_close(pgpipe_records_cursor *c)
{
    if (!c)
        return;
    PQclear(c->res);
    pp_free(c);
}

int pgpipe_records_count(pgpipe_records *h, const pgpipe_records_filter *f, long long *n)
{
    if (n)
        *n = 0;
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    rec_q q;
    memset(&q, 0, sizeof q);
    rec_q_appendf(&q, "SELECT count(*) FROM %s", h->qtable);
    rec_q_where(&q, f);
    if ((rc = rec_q_end(h, &q, f ? f->n : 0, "count")) != PGPIPE_OK)
        return rc;
    PGresult *r;
    rc = rec_run(h, q.sql.data, q.n, (const char *const *)q.params, "count", &r);
    rec_q_free(&q);
    if (rc != PGPIPE_OK)
        return rc;
    if (n)
        *n = atoll(PQgetvalue(r, 0, 0));
    PQclear(r);
    return PGPIPE_OK;
}

int pgpipe_records_explain(pgpipe_records *h, const pgpipe_records_find_options *o, char **plan)
{
    if (plan)
        *plan = NULL;
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if (!plan)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: explain needs plan");
    rec_q q;
    if ((rc = rec_build_find(h, o, "id", &q)) != PGPIPE_OK)
        return rc;
    pp_buf e = { 0 };
    if (pp_buf_appendf(&e, "EXPLAIN %s", q.sql.data) != PGPIPE_OK) {
        rec_q_free(&q);
        return pp_err_nomem(&h->hdr.err);
    }
    pgpipe_conn *c;
    if ((rc = rec_acquire(h, &c)) == PGPIPE_OK) {
        PGresult *r;
        rc = pp_exec(pgpipe_conn_pg(c), e.data, q.n, (const char *const *)q.params, &r,
                     &h->hdr.err, "records: explain");
        if (rc == PGPIPE_OK) {
            pp_buf out = { 0 };
            for (int i = 0; i < PQntuples(r); i++)
                pp_buf_appendf(&out, "%s\n", PQgetvalue(r, i, 0));
            if (!out.data)
                rc = pp_err_nomem(&h->hdr.err);
            *plan = out.data;
        }
        PQclear(r);
        rec_release(h, c);
    }
    pp_buf_free(&e);
    rec_q_free(&q);
    return rc;
}

/* ---- transactions ------------------------------------------------------------ */

int pgpipe_records_in_transaction(const pgpipe_records *h) { return h && h->tx != NULL; }

int pgpipe_records_begin(pgpipe_records *h)
{
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if (h->tx)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: a transaction is already open");
    pgpipe_conn *c;
    if ((rc = pgpipe_pool_acquire_ex(h->pool, &c, -1, &h->hdr.err)) != PGPIPE_OK)
        return rc;
    rc = pp_exec(pgpipe_conn_pg(c), "BEGIN", 0, NULL, NULL, &h->hdr.err, "records: BEGIN");
    if (rc != PGPIPE_OK) {
        pgpipe_pool_release(c);
        return rc;
    }
    h->tx = c;
    return PGPIPE_OK;
}

static int rec_end(pgpipe_records *h, int commit)
{
    if (!h)
        return PGPIPE_MISUSE;
    if (!h->tx)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: no transaction is open");
    pgpipe_conn *c = h->tx;
    h->tx = NULL;
    PGconn *pg = pgpipe_conn_pg(c);
    int failed = PQtransactionStatus(pg) == PQTRANS_INERROR;
    PGresult *r;
    int rc = pp_exec(pg, commit ? "COMMIT" : "ROLLBACK", 0, NULL, &r, &h->hdr.err,
                     commit ? "records: COMMIT" : "records: ROLLBACK");
    if (rc == PGPIPE_OK && commit && (failed || !strcmp(PQcmdStatus(r), "ROLLBACK")))
        rc = pp_err(&h->hdr.err, PGPIPE_DB,
                    "records: the transaction was rolled back because a statement in it failed");
    PQclear(r);
    pgpipe_pool_release(c);
    return rc;
}

int pgpipe_records_commit(pgpipe_records *h)
{
    if (h)
        pgpipe_error_clear(&h->hdr.err);
    return rec_end(h, 1);
}

int pgpipe_records_rollback(pgpipe_records *h)
{
    if (h)
        pgpipe_error_clear(&h->hdr.err);
    return rec_end(h, 0);
}

int pgpipe_records_transaction(pgpipe_records *h, pgpipe_records_tx_fn fn, void *ud)
{
    if (!h || !fn)
        return h ? pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: transaction needs a callback")
                 : PGPIPE_MISUSE;
    int rc = pgpipe_records_begin(h);
    if (rc != PGPIPE_OK)
        return rc;
    pgpipe_error_clear(&h->hdr.err);
    rc = fn(h, ud);
    if (rc == PGPIPE_OK)
        return pgpipe_records_commit(h);
    pgpipe_error keep = h->hdr.err;
    if (keep.code == PGPIPE_OK)
        pp_err(&keep, rc, "records: the transaction callback returned %s; rolled back",
               pgpipe_errstr(rc));
    rec_end(h, 0);
    h->hdr.err = keep;
    return rc;
}

/* ---- import ------------------------------------------------------------------ */

void pgpipe_records_import_options_init(pgpipe_records_import_options *o)
{
    if (o)
        memset(o, 0, sizeof *o);
}

typedef struct rec_import {
    pgpipe_records *h;
    const pgpipe_records_import_options *o;
    pgpipe_records_import_summary *s;
    const char *source;
    rec_copy cp;
    pgpipe_json_doc *doc;
    int stop;           /* a bad record stopped the import */
    pp_framer fr;       /* a JSON array (or one object) cut into its elements */
    /* where each COPY row came from, to place an error the database raises
    ** on a row: per row the line (less the previous row's) and the column,
    ** as varints (two bytes a record, typically) */
    pp_buf rows;
    long long last_line;
    int rows_nomem;     /* the map is incomplete: errors name the COPY row only */
} rec_import;

static int rec_import_varint(pp_buf *b, unsigned long long v)
{
    unsigned char t[10];
    int n = 0;
    do {
        t[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return pp_buf_append(b, t, (size_t)n);
}

static unsigned long long rec_import_unvarint(const unsigned char **p, const unsigned char *end)
{
    unsigned long long v = 0;
    for (int sh = 0; *p < end && sh < 64; sh += 7) {
        unsigned char c = *(*p)++;
        v |= (unsigned long long)(c & 0x7f) << sh;
        if (!(c & 0x80))
            break;
    }
    return v;
}

/* The input line and column of COPY row n (1-based); 0 when unknown. */
static int rec_import_row_place(const rec_import *im, long long n, long long *line, long long *col)
{
    if (n <= 0 || im->rows_nomem)
        return 0;
    const unsigned char *p = (const unsigned char *)im->rows.data, *end = p + im->rows.len;
    long long l = 0, c = 0;
    for (long long i = 0; i < n; i++) {
        if (p >= end)
            return 0;
        l += (long long)rec_import_unvarint(&p, end);
        c = (long long)rec_import_unvarint(&p, end);
    }
    *line = l;
    *col = c;
    return 1;
}

/* A bad record: count, report, maybe stop. */
static int rec_import_bad(rec_import *im, const pgpipe_error *e)
{
    im->s->records++;
    im->s->skipped++;
    if (im->s->first_error.code == PGPIPE_OK)
        im->s->first_error = *e;
    if (im->o->stop_on_error) {
        im->h->hdr.err = *e;
        im->stop = 1;
        return e->code ? e->code : PGPIPE_PARSE;
    }
    if (im->o->on_error) {
        if (im->o->on_error(im->o->ud, e) != 0) {
            im->h->hdr.err = *e;
            im->stop = 1;
            return e->code ? e->code : PGPIPE_PARSE;
        }
    } else {
        char msg[1400];
        pgpipe_error_format(e, msg, sizeof msg);
        pp_logf(PGPIPE_LOG_WARN, "records", "skipped a bad record: %s", msg);
    }
    return PGPIPE_OK;
}

static int rec_import_badf(rec_import *im, long long line, long long col, long long off,
                           const char *fmt, ...) PP_PRINTF(5, 6);
static int rec_import_badf(rec_import *im, long long line, long long col, long long off,
                           const char *fmt, ...)
{
    char msg[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pgpipe_error e;
    pgpipe_error_clear(&e);
    pp_err_at(&e, PGPIPE_PARSE, im->source, line, col, off, "%s at line %lld, column %lld", msg,
              line, col);
    return rec_import_bad(im, &e);
}

/* Write member key of obj as a COPY field (\N when absent or null); *ok = 0
** when it is present with the wrong type. */
static int rec_import_put_member(rec_import *im, const pgpipe_json_val *obj, const char *key,
                                 int want, int *ok)
{
    const pgpipe_json_val *v = pgpipe_json_obj_get(obj, key, strlen(key));
    int t = pgpipe_json_type(v);
    pp_buf *b = &im->cp.buf;
    if (t == PGPIPE_JSON_INVALID || t == PGPIPE_JSON_NULL)
        return pp_buf_append(b, "\\N", 2);
    if (t != want) {
        *ok = 0;
        return PGPIPE_OK;
    }
    if (t == PGPIPE_JSON_STRING) {
        size_t n;
        const char *s = pgpipe_json_get_str(v, &n);
        return pp_copy_field(b, s, n);
    }
    pp_buf tmp = { 0 };
    int rc = json_write_buf(&tmp, v);
    if (rc == PGPIPE_OK)
        rc = pp_copy_field(b, tmp.data, tmp.len);
    pp_buf_free(&tmp);
    return rc;
}

/* One parsed record (root) with its raw text, found at line/col. */
static int rec_import_record(rec_import *im, const pgpipe_json_val *root, const char *raw,
                             size_t len, long long line, long long col, long long off)
{
    if (pgpipe_json_type(root) != PGPIPE_JSON_OBJECT)
        return rec_import_badf(im, line, col, off, "record is a JSON %s, not an object",
                               pgpipe_json_type_name(pgpipe_json_type(root)));
    if (rec_has_u0000(raw, len) && rec_has_nul(root)) {
        long long l, c;
        rec_u0000_pos(raw, len, &l, &c);
        return rec_import_badf(im, line + l - 1, l == 1 ? col + c - 1 : c, off,
                               "a string holds \\u0000, which PostgreSQL jsonb cannot store");
    }
    int rc;
    if (!im->cp.open) {
        rc = rec_copy_begin(&im->cp, im->h, im->o->documents
                            ? "id, fields, metadata, created_at, updated_at" : "fields");
        if (rc != PGPIPE_OK)
            return rc;
    }
    pp_buf *b = &im->cp.buf;
    size_t mark = b->len;
    if (!im->o->documents) {
        rc = pp_copy_field(b, raw, len);
    } else {
        const pgpipe_json_val *id = pgpipe_json_obj_get(root, "id", 2);
        const pgpipe_json_val *fields = pgpipe_json_obj_get(root, "fields", 6);
        const char *why = NULL;
        size_t n = 0;
        const char *ids = pgpipe_json_get_str(id, &n);
        char uuid[37];
        if (pgpipe_json_type(fields) != PGPIPE_JSON_OBJECT)
            why = "a document needs \"fields\": an object";
        else if (id && pgpipe_json_type(id) != PGPIPE_JSON_NULL) {
            if (!ids || n != 36 || (memcpy(uuid, ids, 36), uuid[36] = '\0', !rec_is_uuid(uuid)))
                why = "\"id\" is not a UUID string";
        } else if ((rc = rec_uuid_new(im->h, uuid)) != PGPIPE_OK) {
            return rc;
        }
        if (why)
            return rec_import_badf(im, line, col, off, "%s", why);
        int ok = 1;
        rc = pp_buf_append(b, uuid, 36);
        rc |= pp_buf_putc(b, '\t');
        rc |= rec_import_put_member(im, root, "fields", PGPIPE_JSON_OBJECT, &ok);
        rc |= pp_buf_putc(b, '\t');
        const pgpipe_json_val *m = pgpipe_json_obj_get(root, "metadata", 8);
        if (!m || pgpipe_json_type(m) == PGPIPE_JSON_NULL)
            rc |= pp_buf_append(b, "{}", 2);
        else
            rc |= rec_import_put_member(im, root, "metadata", PGPIPE_JSON_OBJECT, &ok);
        static const char *const ts[2] = { "created_at", "updated_at" };
        for (int k = 0; k < 2; k++) {
            rc |= pp_buf_putc(b, '\t');
            const pgpipe_json_val *tv = pgpipe_json_obj_get(root, ts[k], strlen(ts[k]));
            if (!tv || pgpipe_json_type(tv) == PGPIPE_JSON_NULL)
                rc |= pp_buf_append(b, "now", 3);
            else
                rc |= rec_import_put_member(im, root, ts[k], PGPIPE_JSON_STRING, &ok);
        }
        if (rc == PGPIPE_OK && !ok) {
            b->len = mark;
            return rec_import_badf(im, line, col, off,
                                   "\"metadata\" must be an object, \"created_at\" and "
                                   "\"updated_at\" strings");
        }
    }
    if (rc != PGPIPE_OK || pp_buf_putc(b, '\n') != PGPIPE_OK)
        return pp_err_nomem(&im->h->hdr.err);
    if (!im->rows_nomem) {
        long long dl = line >= im->last_line ? line - im->last_line : 0;
        if (rec_import_varint(&im->rows, (unsigned long long)dl) != PGPIPE_OK ||
            rec_import_varint(&im->rows, (unsigned long long)(col > 0 ? col : 0)) != PGPIPE_OK)
            im->rows_nomem = 1;
        im->last_line += dl;
    }
    im->s->records++;
    im->s->imported++;
    if (b->len >= REC_COPY_CHUNK)
        return rec_copy_flush(&im->cp);
    return PGPIPE_OK;
}

/* An element of the array, or the one object, cut by the framer. */
static int rec_import_frame(void *ud, const pp_frame *r)
{
    rec_import *im = ud;
    long long col = r->col + 1;
    if (r->flags & PP_FRAME_CUT)
        return rec_import_badf(im, r->line, col, r->off, "the input ended inside this array element");
    int rc = pgpipe_json_parse(im->doc, r->len ? r->raw : "", r->len);
    if (rc == PGPIPE_NOMEM)
        return pp_err_nomem(&im->h->hdr.err);
    if (rc != PGPIPE_OK) {
        /* the parser's position is the element's: make it the file's */
        pgpipe_error e = *pgpipe_errinfo(im->doc);
        long long l = r->line + (e.line > 0 ? e.line - 1 : 0);
        long long c = e.line <= 1 ? col + (e.column > 0 ? e.column - 1 : 0) : e.column;
        const char *at = strstr(e.message, " at line ");
        char msg[800];
        snprintf(msg, sizeof msg, "%.*s", at ? (int)(at - e.message) : (int)strlen(e.message),
                 e.message);
        return rec_import_badf(im, l, c, r->off + (e.offset > 0 ? e.offset : 0), "%s", msg);
    }
    return rec_import_record(im, pgpipe_json_root(im->doc), r->raw, r->len, r->line, col, r->off);
}

/* The framer's result as the import's: a broken frame names the file. */
static int rec_import_framed(rec_import *im, int rc)
{
    if (rc == PGPIPE_NOMEM)
        return pp_err_nomem(&im->h->hdr.err);
    if (rc == PGPIPE_PARSE && im->fr.err.code == PGPIPE_PARSE) {
        im->fr.err.code = PGPIPE_OK;
        return pp_err_at(&im->h->hdr.err, PGPIPE_PARSE, im->source, im->fr.err.line,
                         im->fr.err.column, im->fr.err.offset, "%s", im->fr.err.message);
    }
    return rc;
}

static int rec_import_ndjson(rec_import *im, pgpipe_ndjson *r)
{
    int rc;
    const pgpipe_json_val *root;
    long long line;
    while ((rc = pgpipe_ndjson_next(r, &root, &line)) != PGPIPE_DONE) {
        if (rc == PGPIPE_NOMEM)
            return pp_err_nomem(&im->h->hdr.err);
        const char *raw;
        size_t len;
        pgpipe_ndjson_line(r, &raw, &len);
        if (rc != PGPIPE_ROW) {
            rc = rec_import_bad(im, pgpipe_errinfo(r));
        } else {
            size_t lead = 0;
            while (lead < len && (raw[lead] == ' ' || raw[lead] == '\t'))
                lead++;
            rc = rec_import_record(im, root, raw + lead, len - lead, line, (long long)lead + 1, -1);
        }
        if (rc != PGPIPE_OK)
            return rc;
    }
    return PGPIPE_OK;
}

int pgpipe_records_import(pgpipe_records *h, const char *path,
                          const pgpipe_records_import_options *opts,
                          pgpipe_records_import_summary *summary)
{
    pgpipe_records_import_summary local;
    if (!summary)
        summary = &local;
    memset(summary, 0, sizeof *summary);
    pgpipe_error_clear(&summary->first_error);
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if (!path)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: import needs a path");
    pgpipe_records_import_options defo;
    if (!opts) {
        pgpipe_records_import_options_init(&defo);
        opts = &defo;
    }
    int fd = strcmp(path, "-") ? open(path, O_RDONLY | O_CLOEXEC) : STDIN_FILENO;
    if (fd < 0)
        return pp_err(&h->hdr.err, PGPIPE_IO, "records: cannot open %s: %s", path, strerror(errno));
    rec_import im;
    memset(&im, 0, sizeof im);
    im.h = h;
    im.o = opts;
    im.s = summary;
    im.source = strcmp(path, "-") ? path : "<stdin>";
    pgpipe_ndjson *nd = NULL;
    int format = 0; /* 0 unknown, 1 array, 2 NDJSON */
    size_t cap = 64 * 1024;
    char *buf = pp_malloc(cap);
    if (!buf || pgpipe_json_doc_open(&im.doc) != PGPIPE_OK) {
        rc = pp_err_nomem(&h->hdr.err);
        goto out;
    }
    pgpipe_json_doc_set_source(im.doc, im.source);
    framer_begin(&im.fr, PP_FRAME_ARRAY, SIZE_MAX, rec_import_frame, &im);
    for (;;) {
        ssize_t k = read(fd, buf, cap);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            rc = pp_err(&h->hdr.err, PGPIPE_IO, "records: reading %s: %s", im.source, strerror(errno));
            break;
        }
        if (format == 0 && k > 0) {
            size_t i = 0;
            if (k >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3))
                i = 3;
            while (i < (size_t)k && isspace((unsigned char)buf[i]))
                i++;
            if (i < (size_t)k) {
                format = buf[i] == '[' ? 1 : 2;
                /* '{' is NDJSON unless its first line only starts an object
                ** that goes on over more lines: then that object is the one
                ** record (a first line longer than this chunk: NDJSON) */
                const char *nl = buf[i] == '{' ? memchr(buf + i, '\n', (size_t)k - i) : NULL;
                const char *nl2 = nl ? memchr(nl + 1, '\n', (size_t)k - (size_t)(nl + 1 - buf)) : NULL;
                if (nl && json_line_goes_on(buf + i, (size_t)(nl - (buf + i)),
                                            nl2 ? (size_t)(nl2 - (buf + i)) : (size_t)k - i))
                    format = 1; /* the framer takes the one object as the one record */
                if (format == 2) {
                    if (pgpipe_ndjson_open(&nd) != PGPIPE_OK) {
                        rc = pp_err_nomem(&h->hdr.err);
                        break;
                    }
                    pgpipe_ndjson_set_source(nd, im.source);
                }
            } else if (!memcmp(buf, "\xEF\xBB\xBF", i < 3 ? i : 3)) {
                /* only blanks so far: decide on the next chunk */
                format = 0;
            }
        }
        if (k == 0) {
            if (format == 2) {
                pgpipe_ndjson_finish(nd);
                rc = rec_import_ndjson(&im, nd);
            } else if (format == 1) {
                int cut = im.fr.state == PP_FR_ELEM && !(im.fr.scalar && !im.fr.instr);
                rc = rec_import_framed(&im, framer_end(&im.fr));
                long long line = im.fr.line_no + 1, col = framer_column(&im.fr, im.fr.fed);
                if (rc == PGPIPE_OK && im.fr.unclosed && !cut)
                    rc = pp_err_at(&h->hdr.err, PGPIPE_PARSE, im.source, line, col, im.fr.fed,
                                   "the JSON array is not closed with ']' at line %lld, column %lld",
                                   line, col);
            }
            break;
        }
        if (format == 1) {
            rc = rec_import_framed(&im, framer_feed(&im.fr, buf, (size_t)k));
        } else if (format == 2) {
            if ((rc = pgpipe_ndjson_feed(nd, buf, (size_t)k)) == PGPIPE_OK)
                rc = rec_import_ndjson(&im, nd);
            else
                rc = pp_err_nomem(&h->hdr.err);
        }
        if (rc != PGPIPE_OK)
            break;
    }
out:
    if (im.cp.c || im.cp.open) {
        char why[300];
        snprintf(why, sizeof why, "records: import of %s stopped", im.source);
        rc = rec_copy_end(&im.cp, rc, rc != PGPIPE_OK ? why : NULL, NULL);
        if (rc != PGPIPE_OK && im.cp.err_row > 0) {
            /* the database refused a record: name it in the input */
            pgpipe_error e = h->hdr.err;
            long long line, col;
            char msg[sizeof e.message];
            snprintf(msg, sizeof msg, "%s", e.message);
            if (rec_import_row_place(&im, im.cp.err_row, &line, &col))
                pp_err_at(&h->hdr.err, rc, im.source, line, col, -1,
                          "%s (the record at line %lld, column %lld)", msg, line, col);
            else
                pp_err_at(&h->hdr.err, rc, im.source, 0, 0, -1, "%s (%s: the import's record %lld)",
                          msg, im.source, im.cp.err_row);
            memcpy(h->hdr.err.sqlstate, e.sqlstate, sizeof e.sqlstate);
        }
    } else {
        pp_buf_free(&im.cp.buf);
    }
    if (rc != PGPIPE_OK)
        summary->imported = 0;
    else if (summary->imported >= REC_GIN_CLEAN_ROWS)
        rc = rec_gin_clean(h);
    pgpipe_ndjson_close(nd);
    pgpipe_json_doc_close(im.doc);
    framer_free(&im.fr);
    pp_buf_free(&im.rows);
    pp_free(buf);
    if (fd != STDIN_FILENO)
        close(fd);
    return rc;
}

/* ---- export ------------------------------------------------------------------- */

int pgpipe_records_export(pgpipe_records *h, const char *path, const pgpipe_records_filter *f,
                          int fields_only, long long *n)
{
    if (n)
        *n = 0;
    int rc = rec_ready(h);
    if (rc != PGPIPE_OK)
        return rc;
    if (!path)
        return pp_err(&h->hdr.err, PGPIPE_MISUSE, "records: export needs a path");
    rec_q q;
    memset(&q, 0, sizeof q);
    rec_q_appendf(&q, "SELECT %s FROM %s", fields_only ? "fields::text" : REC_DOC_SQL, h->qtable);
    rec_q_where(&q, f);
    rec_q_sql(&q, " ORDER BY created_at, id");
    if ((rc = rec_q_end(h, &q, f ? f->n : 0, "export")) != PGPIPE_OK)
        return rc;
    int tostdout = !strcmp(path, "-");
    int fd = tostdout ? STDOUT_FILENO : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rec_q_free(&q);
        return pp_err(&h->hdr.err, PGPIPE_IO, "records: cannot create %s: %s", path, strerror(errno));
    }
    pgpipe_conn *c;
    if ((rc = rec_acquire(h, &c)) != PGPIPE_OK) {
        rec_q_free(&q);
        if (!tostdout)
            close(fd);
        return rc;
    }
    PGconn *pg = pgpipe_conn_pg(c);
    long long rows = 0;
    pp_buf out = { 0 };
    if (!PQsendQueryParams(pg, q.sql.data, q.n, NULL, (const char *const *)q.params, NULL, NULL, 0) ||
        !PQsetSingleRowMode(pg)) {
        rc = pp_err_pq(&h->hdr.err, pg, NULL, "records: export");
    }
    PGresult *r;
    while ((r = PQgetResult(pg)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_SINGLE_TUPLE && rc == PGPIPE_OK) {
            if (pp_buf_append(&out, PQgetvalue(r, 0, 0), (size_t)PQgetlength(r, 0, 0)) != PGPIPE_OK ||
                pp_buf_putc(&out, '\n') != PGPIPE_OK)
                rc = pp_err_nomem(&h->hdr.err);
            rows++;
        } else if (st != PGRES_SINGLE_TUPLE && st != PGRES_TUPLES_OK && rc == PGPIPE_OK) {
            rc = pp_err_pq(&h->hdr.err, pg, r, "records: export");
        }
        PQclear(r);
        if (rc == PGPIPE_OK && (out.len >= REC_COPY_CHUNK || (st != PGRES_SINGLE_TUPLE && out.len))) {
            size_t done = 0;
            while (done < out.len) {
                ssize_t k = write(fd, out.data + done, out.len - done);
                if (k < 0 && errno == EINTR)
                    continue;
                if (k < 0) {
                    rc = pp_err(&h->hdr.err, PGPIPE_IO, "records: writing %s: %s", path,
                                strerror(errno));
                    break;
                }
                done += (size_t)k;
            }
            out.len = 0;
        }
    }
    rec_release(h, c);
    pp_buf_free(&out);
    rec_q_free(&q);
    if (!tostdout && close(fd) != 0 && rc == PGPIPE_OK)
        rc = pp_err(&h->hdr.err, PGPIPE_IO, "records: closing %s: %s", path, strerror(errno));
    if (n)
        *n = rows;
    return rc;
}
