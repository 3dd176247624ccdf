/*
** Migrations: checksums (SHA-256 from src/base/text.c) and a runner for
** versioned (V<version>__<name>.sql) and repeatable (R__<name>.sql)
** migrations with a history table, an advisory lock, drift detection,
** repair, baseline, dry run and resumable no-transaction files. Files are
** cut into statements by src/parse/sqlsplit.c; src/db/schema.c installs the
** embedded sql/ folders.
*/

#include "pp_db.h"
#include <dirent.h>

/* Skips every leading UTF-8 BOM (an editor that adds one to a file that has
** one makes two), so normalizing twice changes nothing (found by fuzzing). */
static const char *mig_skip_bom(const char *text, size_t *len)
{
    while (*len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB &&
           (unsigned char)text[2] == 0xBF) {
        text += 3;
        *len -= 3;
    }
    return text;
}

/* Text of a migration as it is checksummed, cut into statements and
** scanned for markers: no UTF-8 BOM, LF line endings (CR LF and a lone CR
** are LF). What runs are the file's own bytes (mig_file.raw): a CR inside a
** string literal stays a CR. Returns a new NUL-terminated string (length in
** *outlen). */
static char *mig_normalize(const char *text, size_t len, size_t *outlen)
{
    text = mig_skip_bom(text, &len);
    char *d = pp_malloc(len + 1);
    if (!d)
        return NULL;
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\r') {
            d[w++] = '\n';
            if (i + 1 < len && text[i + 1] == '\n')
                i++;
        } else {
            d[w++] = text[i];
        }
    }
    d[w] = '\0';
    *outlen = w;
    return d;
}

int pgpipe_migrate_checksum(const char *text, size_t len, char out[65])
{
    if (!out || (!text && len))
        return PGPIPE_MISUSE;
    size_t n = 0;
    char *t = mig_normalize(text ? text : "", len, &n);
    if (!t)
        return PGPIPE_NOMEM;
    pgpipe_sha256_hex(t, n, out);
    pp_free(t);
    return PGPIPE_OK;
}

/* ---- Migration files -------------------------------------------------- */

typedef struct mig_stmt {
    char *sql;            /* NUL-terminated copy of the file's bytes: what runs */
    const char *copy_data; /* into mig_file.raw */
    size_t copy_len;
    const char *nsql, *ncopy; /* the same in the normalized text (for the */
    size_t nlen, ncopy_len;   /* progress checksum, as before raw ran) */
    long long line, column;
} mig_stmt;

typedef struct mig_file {
    char kind;            /* 'V' or 'R' */
    char *version;        /* normalized digits ("" for R) */
    char *name;
    char *file;           /* file name */
    char *text;           /* normalized content (checksum, statements, markers) */
    size_t len;
    char *raw;            /* the file's bytes without a leading BOM: what runs */
    size_t rawlen;
    char checksum[65];
    int transactional;
    mig_stmt *stmts;      /* parsed on demand */
    int nstmts;
    int parsed;
    int ran;              /* executed by this run (the entries are rebuilt after it) */
} mig_file;

typedef struct mig_row {
    char kind;
    char *version, *name, *file, *checksum, *algo, *status, *progress_ck;
    char *applied_at, *applied_by, *error, *sqlstate;
    int transactional, done, total;
    int started;          /* statement_started: in flight or in doubt, 0 = none */
    double exec_ms;
    long long error_line;
    int matched;
} mig_row;

typedef struct mig_entry {
    pgpipe_migration_info info;
    mig_file *f;          /* NULL when missing on disk */
    mig_row *r;           /* NULL when not in the history */
    int do_baseline;      /* record as baseline */
    int do_repair;        /* record the new checksum */
    int out_of_order;
    int resume_at;        /* first statement to run */
    int in_doubt;         /* 1-based statement whose outcome is unknown, or 0 */
    char action[192];
} mig_entry;

struct pgpipe_migrator {
    pp_handle hdr;
    int opened;         /* pgpipe_migrator_open succeeded */
    char open_msg[512]; /* why it did not */
    PGconn *conn;
    char *dir, *embedded, *scope, *baseline, *target;
    const char *bl;       /* the baseline the entries record (see mig_baseline_decide) */
    int bl_refused;       /* the baseline is refused: the history is not empty */
    char bl_msg[640];     /* why */
    char *tbl;            /* quoted "schema"."table" */
    char *tbl_schema, *tbl_name;
    int lock_timeout_ms;
    long long lock_key;
    char lock_key_s[24];  /* the same as text, a statement's parameter */
    unsigned flags;
    mig_file *files;
    int nfiles;
    mig_row *rows;
    int nrows;
    mig_entry *entries;
    int nentries;
    int locked;
    int pooler;           /* as configured (PGPIPE_POOLER_*) */
    int txmode;           /* this run: transaction locks only (a transaction pooler) */
    int has_started_col;  /* the history table has statement_started */
    int resume_from, redo;
    int lost_at;          /* index+1 of the entry being applied when the run failed */
    const char *sess;     /* while files run: the session as the run found it (JSON) */
};

void pgpipe_migrate_options_init(pgpipe_migrate_options *o)
{
    if (o)
        memset(o, 0, sizeof *o);
}

static void mig_file_free_stmts(mig_file *f)
{
    for (int i = 0; i < f->nstmts; i++)
        pp_free(f->stmts[i].sql);
    pp_free(f->stmts);
    f->stmts = NULL;
    f->nstmts = 0;
    f->parsed = 0;
}

/* Entries point into the files and the history rows: freeing either drops
** them. */
static void mig_entries_free(pgpipe_migrator *m)
{
    pp_free(m->entries);
    m->entries = NULL;
    m->nentries = 0;
}

static void mig_files_free(pgpipe_migrator *m)
{
    mig_entries_free(m);
    for (int i = 0; i < m->nfiles; i++) {
        mig_file *f = &m->files[i];
        mig_file_free_stmts(f);
        pp_free(f->version);
        pp_free(f->name);
        pp_free(f->file);
        pp_free(f->text);
        pp_free(f->raw);
    }
    pp_free(m->files);
    m->files = NULL;
    m->nfiles = 0;
}

/* The text columns of a history row: the column in mig_load_history's
** query, and the field of mig_row it goes to. */
static const unsigned char mig_row_text[][2] = {
    { 1, offsetof(mig_row, version) },      { 2, offsetof(mig_row, name) },
    { 3, offsetof(mig_row, file) },         { 4, offsetof(mig_row, checksum) },
    { 5, offsetof(mig_row, algo) },         { 6, offsetof(mig_row, status) },
    { 10, offsetof(mig_row, progress_ck) }, { 11, offsetof(mig_row, applied_at) },
    { 12, offsetof(mig_row, applied_by) },  { 15, offsetof(mig_row, error) },
    { 16, offsetof(mig_row, sqlstate) },
};
#define MIG_ROW_TEXT(r, k) (*(char **)(void *)((char *)(r) + mig_row_text[k][1]))

static void mig_rows_free(pgpipe_migrator *m)
{
    mig_entries_free(m);
    for (int i = 0; i < m->nrows; i++)
        for (size_t k = 0; k < sizeof mig_row_text / sizeof *mig_row_text; k++)
            pp_free(MIG_ROW_TEXT(&m->rows[i], k));
    pp_free(m->rows);
    m->rows = NULL;
    m->nrows = 0;
}

/* Numeric comparison of two digit strings without leading zeros. */
static int mig_vcmp(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la != lb)
        return la < lb ? -1 : 1;
    return strcmp(a, b);
}

static char *mig_vnorm(const char *d, size_t n)
{
    while (n > 1 && *d == '0') {
        d++;
        n--;
    }
    return pp_strndup(d, n);
}

/* Parses a file name. Returns 1 for a migration, 0 for a file to ignore,
** -1 for a *.sql name that breaks the scheme (message in why). */
static int mig_parse_name(const char *fn, char *kind, char **version, char **name,
                          const char **why)
{
    size_t n = strlen(fn);
    *why = NULL;
    if (fn[0] == '.' || n < 4 || strcasecmp(fn + n - 4, ".sql") != 0)
        return 0;
    if (strcmp(fn + n - 4, ".sql") != 0) { /* V2__x.SQL: a migration left out unseen */
        *why = "the extension must be .sql in lower case";
        return -1;
    }
    /* the name goes into the history (text) and into messages */
    if (pp_utf8_text_prefix((const unsigned char *)fn, n) != n) {
        *why = "the name is not valid UTF-8";
        return -1;
    }
    for (const unsigned char *c = (const unsigned char *)fn; *c; c++)
        if (*c < 0x20 || *c == 0x7f) {
            *why = "the name holds a control character (a newline, a tab, ...)";
            return -1;
        }
    const char *p = fn;
    if (*p == 'V') {
        p++;
        const char *d = p;
        while (*p >= '0' && *p <= '9')
            p++;
        if (p == d) {
            *why = "V must be followed by digits";
            return -1;
        }
        if (p[0] != '_' || p[1] != '_') {
            *why = "the version must be followed by two underscores";
            return -1;
        }
        if ((size_t)(p + 2 - fn) >= n - 4) {
            *why = "the name after __ is empty";
            return -1;
        }
        *kind = 'V';
        *version = mig_vnorm(d, (size_t)(p - d));
        *name = pp_strndup(p + 2, n - 4 - (size_t)(p + 2 - fn));
        return *version && *name ? 1 : -2;
    }
    if (p[0] == 'R' && p[1] == '_' && p[2] == '_') {
        if (n - 4 <= 3) {
            *why = "the name after R__ is empty";
            return -1;
        }
        *kind = 'R';
        *version = pp_strdup("");
        *name = pp_strndup(fn + 3, n - 7);
        return *version && *name ? 1 : -2;
    }
    *why = "expected V<version>__<name>.sql or R__<name>.sql";
    return -1;
}

/* 1 when byte offset off of t lies inside a statement (or its COPY data):
** a marker line there is text of the statement (a $$ body, a string), not a
** marker. Statements up to a parse error count; the run reports the error. */
static int mig_in_statement(const char *t, size_t len, size_t off)
{
    pgpipe_sql_split *sp = NULL;
    int inside = 0;
    if (pgpipe_sql_split_open(&sp, t, len, NULL) == PGPIPE_OK) {
        pgpipe_sql_stmt st;
        while (!inside && pgpipe_sql_split_next(sp, &st) == PGPIPE_ROW) {
            if (st.offset > off)
                break;
            size_t end = st.offset + st.len;
            if (st.copy_data)
                end = (size_t)(st.copy_data - t) + st.copy_len;
            inside = off < end;
        }
    }
    pgpipe_sql_split_close(sp);
    return inside;
}

/* Markers are whole-line comments "-- pgpipe:<directive>" between
** statements. Known: no-transaction. Returns 1 when the file has it, 0 when
** not, -1 for an unknown directive (its line in *bad_line). */
static int mig_scan_markers(const char *t, long long *bad_line)
{
    const char *p = t;
    long long line = 1;
    int notx = 0;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const char *a = p, *z = p + n;
        while (a < z && (*a == ' ' || *a == '\t'))
            a++;
        while (z > a && (z[-1] == ' ' || z[-1] == '\t'))
            z--;
        if (a + 2 <= z && a[0] == '-' && a[1] == '-') {
            a += 2;
            while (a < z && (*a == ' ' || *a == '\t'))
                a++;
            static const char pre[] = "pgpipe:";
            if ((size_t)(z - a) >= sizeof pre - 1 && strncasecmp(a, pre, sizeof pre - 1) == 0 &&
                !mig_in_statement(t, strlen(t), (size_t)(p - t))) {
                a += sizeof pre - 1;
                static const char mk[] = "no-transaction";
                if ((size_t)(z - a) == sizeof mk - 1 && strncasecmp(a, mk, sizeof mk - 1) == 0) {
                    notx = 1;
                } else {
                    *bad_line = line;
                    return -1;
                }
            }
        }
        if (!e)
            break;
        p = e + 1;
        line++;
    }
    return notx;
}

static int mig_file_cmp(const void *pa, const void *pb)
{
    const mig_file *a = pa, *b = pb;
    if (a->kind != b->kind)
        return a->kind == 'V' ? -1 : 1;
    if (a->kind == 'V') {
        int c = mig_vcmp(a->version, b->version);
        if (c)
            return c;
    }
    return strcmp(a->file, b->file);
}

static int mig_add_file(pgpipe_migrator *m, const char *fn, const char *text, size_t len)
{
    char kind = 0, *version = NULL, *name = NULL;
    const char *why = NULL;
    int k = mig_parse_name(fn, &kind, &version, &name, &why);
    if (k == 0)
        return PGPIPE_OK;
    if (k < 0) {
        pp_free(version);
        pp_free(name);
        if (k == -2)
            return pp_err_nomem(&m->hdr.err);
        return pp_err_at(&m->hdr.err, PGPIPE_PARSE, fn, 0, 0, 0,
                         "not a migration file name: %s", why);
    }
    mig_file *nf = pp_realloc(m->files, sizeof *nf * (size_t)(m->nfiles + 1));
    if (!nf) {
        pp_free(version);
        pp_free(name);
        return pp_err_nomem(&m->hdr.err);
    }
    m->files = nf;
    mig_file *f = &m->files[m->nfiles];
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->version = version;
    f->name = name;
    m->nfiles++;
    f->file = pp_strdup(fn);
    f->text = mig_normalize(text, len, &f->len);
    const char *raw = mig_skip_bom(text, &len);
    if ((f->raw = pp_malloc(len + 1)) != NULL) {
        memcpy(f->raw, raw, len);
        f->raw[len] = '\0';
    }
    f->rawlen = len;
    if (!f->file || !f->text || !f->raw)
        return pp_err_nomem(&m->hdr.err);
    pgpipe_sha256_hex(f->text, f->len, f->checksum);
    long long bad = 0;
    int mk = mig_scan_markers(f->text, &bad);
    if (mk < 0)
        return pp_err_at(&m->hdr.err, PGPIPE_PARSE, fn, bad, 1, 0,
                         "unknown marker; the only marker is a line -- pgpipe:no-transaction");
    f->transactional = !mk;
    return PGPIPE_OK;
}

static int mig_read_whole(pgpipe_migrator *m, const char *path, const char *fn, char **out,
                          size_t *outlen)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return pp_err_at(&m->hdr.err, PGPIPE_IO, fn, 0, 0, 0, "cannot open %s: %s", path,
                         strerror(errno));
    pp_buf b = { NULL, 0, 0 };
    for (;;) {
        if (pp_buf_reserve(&b, 65536) != PGPIPE_OK) {
            close(fd);
            pp_buf_free(&b);
            return pp_err_nomem(&m->hdr.err);
        }
        ssize_t r = read(fd, b.data + b.len, b.cap - b.len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            pp_buf_free(&b);
            return pp_err_at(&m->hdr.err, PGPIPE_IO, fn, 0, 0, 0, "cannot read %s: %s", path,
                             strerror(e));
        }
        if (r == 0)
            break;
        b.len += (size_t)r;
    }
    close(fd);
    if (pp_buf_putc(&b, '\0') != PGPIPE_OK) {
        pp_buf_free(&b);
        return pp_err_nomem(&m->hdr.err);
    }
    *out = b.data;
    *outlen = b.len - 1;
    return PGPIPE_OK;
}


static int mig_load_files(pgpipe_migrator *m)
{
    mig_files_free(m);
    int rc = PGPIPE_OK;
    if (m->dir) {
        DIR *d = opendir(m->dir);
        if (!d)
            return pp_err_at(&m->hdr.err, PGPIPE_IO, m->dir, 0, 0, 0,
                             "cannot open the migration directory %s: %s", m->dir,
                             strerror(errno));
        struct dirent *de;
        pp_buf path = { NULL, 0, 0 };
        while (rc == PGPIPE_OK && (de = readdir(d)) != NULL) {
            const char *fn = de->d_name;
            size_t n = strlen(fn);
            if (fn[0] == '.' || n < 4 || strcasecmp(fn + n - 4, ".sql") != 0)
                continue;
            path.len = 0;
            if (pp_buf_appendf(&path, "%s/%s", m->dir, fn) != PGPIPE_OK) {
                rc = pp_err_nomem(&m->hdr.err);
                break;
            }
            /* a *.sql name that is no file (a dangling symlink, a directory)
            ** is a migration that would silently not run */
            struct stat sb;
            if (stat(path.data, &sb) != 0) {
                rc = pp_err_at(&m->hdr.err, PGPIPE_IO, fn, 0, 0, 0, "cannot read %s: %s",
                               path.data, strerror(errno));
                break;
            }
            if (!S_ISREG(sb.st_mode)) {
                rc = pp_err_at(&m->hdr.err, PGPIPE_IO, fn, 0, 0, 0,
                               "%s is not a regular file (a directory?)", path.data);
                break;
            }
            char *text = NULL;
            size_t len = 0;
            rc = mig_read_whole(m, path.data, fn, &text, &len);
            if (rc == PGPIPE_OK)
                rc = mig_add_file(m, fn, text, len);
            pp_free(text);
        }
        pp_buf_free(&path);
        closedir(d);
    } else {
        size_t pl = strlen(m->embedded);
        for (int i = 0; rc == PGPIPE_OK && i < pgpipe_sql_file_count(); i++) {
            const char *p = pgpipe_sql_file_path(i);
            if (strncmp(p, m->embedded, pl) != 0 || p[pl] != '/' || strchr(p + pl + 1, '/'))
                continue;
            const char *text = pgpipe_sql_file(p);
            if (!text)
                return pp_err_nomem(&m->hdr.err);
            rc = mig_add_file(m, p + pl + 1, text, strlen(text));
        }
    }
    if (rc != PGPIPE_OK)
        return rc;
    if (m->nfiles > 1)
        qsort(m->files, (size_t)m->nfiles, sizeof *m->files, mig_file_cmp);
    for (int i = 1; i < m->nfiles; i++) {
        mig_file *a = &m->files[i - 1], *b = &m->files[i];
        if (a->kind == 'V' && b->kind == 'V' && strcmp(a->version, b->version) == 0)
            return pp_err_at(&m->hdr.err, PGPIPE_ERROR, b->file, 0, 0, 0,
                             "%s and %s have the same version %s", a->file, b->file,
                             a->version);
    }
    return PGPIPE_OK;
}

/* Where each byte of f's normalized text is in its raw bytes: map[i] for
** i < f->len, and map[f->len] = f->rawlen (a normalized range [a, b) is the
** raw range [map[a], map[b])). NULL when out of memory. */
static size_t *mig_raw_map(const mig_file *f)
{
    size_t *map = pp_malloc((f->len + 1) * sizeof *map);
    if (!map)
        return NULL;
    size_t w = 0;
    for (size_t i = 0; i < f->rawlen && w < f->len; i++) {
        map[w++] = i;
        if (f->raw[i] == '\r' && i + 1 < f->rawlen && f->raw[i + 1] == '\n')
            i++;
    }
    map[f->len] = f->rawlen;
    return map;
}

/* Splits a file into statements (once): cut in the normalized text (where
** line ends are what sqlsplit and the server's lexer agree on), each taken
** from the file's own bytes. */
static int mig_parse_file(pgpipe_migrator *m, mig_file *f)
{
    if (f->parsed)
        return PGPIPE_OK;
    pgpipe_sql_split *sp = NULL;
    size_t *map = mig_raw_map(f);
    int rc = map ? pgpipe_sql_split_open(&sp, f->text, f->len, f->file) : PGPIPE_NOMEM;
    if (rc != PGPIPE_OK) {
        pgpipe_sql_split_close(sp);
        pp_free(map);
        return pp_err_nomem(&m->hdr.err);
    }
    pgpipe_sql_stmt st;
    int cap = 0;
    while ((rc = pgpipe_sql_split_next(sp, &st)) == PGPIPE_ROW) {
        if (f->nstmts == cap) {
            int nc = cap ? cap * 2 : 16;
            mig_stmt *ns = pp_realloc(f->stmts, sizeof *ns * (size_t)nc);
            if (!ns) {
                rc = pp_err_nomem(&m->hdr.err);
                break;
            }
            f->stmts = ns;
            cap = nc;
        }
        mig_stmt *ms = &f->stmts[f->nstmts];
        size_t a = (size_t)(st.sql - f->text), z = a + st.len;
        ms->sql = pp_strndup(f->raw + map[a], map[z] - map[a]);
        if (!ms->sql) {
            rc = pp_err_nomem(&m->hdr.err);
            break;
        }
        ms->nsql = st.sql;
        ms->nlen = st.len;
        ms->ncopy = st.copy_data;
        ms->ncopy_len = st.copy_len;
        ms->copy_data = NULL;
        ms->copy_len = 0;
        if (st.copy_data) {
            a = (size_t)(st.copy_data - f->text);
            z = a + st.copy_len;
            ms->copy_data = f->raw + map[a];
            ms->copy_len = map[z] - map[a];
        }
        ms->line = st.line;
        ms->column = st.column;
        f->nstmts++;
    }
    if (rc == PGPIPE_PARSE)
        m->hdr.err = *pgpipe_errinfo(sp);
    pgpipe_sql_split_close(sp);
    pp_free(map);
    if (rc != PGPIPE_DONE) {
        mig_file_free_stmts(f);
        return rc;
    }
    f->parsed = 1;
    /* a transaction control statement would break the file's transaction */
    if (f->transactional) {
        for (int i = 0; i < f->nstmts; i++) {
            const char *s = f->stmts[i].sql;
            size_t n = 0;
            while (sqlsplit_is_ident_char((unsigned char)s[n]))
                n++;
            static const char *const tc[] = { "begin", "start", "commit", "end", "rollback",
                                              "abort", "savepoint", "release", "prepare" };
            for (size_t k = 0; k < sizeof tc / sizeof tc[0]; k++) {
                if (!sqlsplit_word_is(s, n, tc[k]))
                    continue;
                if (k == 4 && strncasecmp(s + n, " to", 3) == 0)
                    break; /* ROLLBACK TO SAVEPOINT is harmless */
                if (k >= 6)
                    break; /* SAVEPOINT, RELEASE, PREPARE (statement) are fine */
                rc = pp_err_at(&m->hdr.err, PGPIPE_PARSE, f->file, f->stmts[i].line,
                               f->stmts[i].column, 0,
                               "transaction control statement (%.*s) in a migration "
                               "that runs in a transaction; remove it, or mark the file with "
                               "a line -- pgpipe:no-transaction", (int)n, s);
                mig_file_free_stmts(f);
                return rc;
            }
        }
    }
    return PGPIPE_OK;
}

/* Hash of the first n statements, to check that a resumed file still starts
** with what already ran. Of their normalized text, as the file's checksum:
** a CR LF file keeps its progress checksums. */
static void mig_progress_checksum(const mig_file *f, int n, char out[65])
{
    pp_sha256 s;
    pp_sha256_init(&s);
    for (int i = 0; i < n && i < f->nstmts; i++) {
        const mig_stmt *st = &f->stmts[i];
        size_t k = 0;
        while (k < st->nlen && st->nsql[k])
            k++;
        pp_sha256_update(&s, st->nsql, k);
        pp_sha256_update(&s, "", 1);
        if (st->ncopy)
            pp_sha256_update(&s, st->ncopy, st->ncopy_len);
        pp_sha256_update(&s, "", 1);
    }
    pp_sha256_hex(&s, out);
}

/* ---- The history table ------------------------------------------------ */

/* The migrator's statements: its connection, its error; NULL on failure. */
static PGresult *mig_exec(pgpipe_migrator *m, const char *sql, int n, const char *const *params,
                          const char *what)
{
    PGresult *r;
    return pp_exec(m->conn, sql, n, n ? params : NULL, &r, &m->hdr.err, what) == PGPIPE_OK ? r
                                                                                         : NULL;
}

static int mig_exec_ok(pgpipe_migrator *m, const char *sql, int n, const char *const *params,
                       const char *what)
{
    return pp_exec(m->conn, sql, n, n ? params : NULL, NULL, &m->hdr.err, what);
}

/* In the open transaction, the identity the run started with, for a history
** read or write: a file's SET ROLE or SET SESSION AUTHORIZATION stays with
** the file's own statements, not with its history row. */
static int mig_as_runner(pgpipe_migrator *m)
{
    if (!m->sess || PQtransactionStatus(m->conn) != PQTRANS_INTRANS)
        return PGPIPE_OK;
    const char *v[1] = { m->sess };
    return mig_exec_ok(m, "SELECT CASE WHEN session_user <> ($1::jsonb->>'user') THEN "
                          "set_config('session_authorization', $1::jsonb->>'user', true) END, "
                          "CASE WHEN current_setting('role') <> ($1::jsonb->>'role') THEN "
                          "set_config('role', $1::jsonb->>'role', true) END",
                       1, v, "cannot return to the run's role to write the migration history");
}

/* A history write: in the open transaction, else in one of its own, as the
** run's role (mig_as_runner). */
static int mig_hist_write(pgpipe_migrator *m, const char *sql, int n, const char *const *params,
                          const char *what)
{
    int own = m->sess && PQtransactionStatus(m->conn) == PQTRANS_IDLE;
    int rc = own ? mig_exec_ok(m, "BEGIN", 0, NULL, what) : PGPIPE_OK;
    if (rc == PGPIPE_OK)
        rc = mig_as_runner(m);
    if (rc == PGPIPE_OK)
        rc = mig_exec_ok(m, sql, n, params, what);
    if (own && rc == PGPIPE_OK)
        rc = mig_exec_ok(m, "COMMIT", 0, NULL, what);
    if (own && rc != PGPIPE_OK)
        pp_rollback_open(m->conn);
    return rc;
}

/* Whether the history table exists, and (in m->has_started_col) whether it
** has the statement_started column that tables made before it lack. */
static int mig_table_exists(pgpipe_migrator *m, int *exists)
{
    /* m->tbl is the quoted name, passed as a value */
    const char *v[1] = { m->tbl };
    PGresult *r = mig_exec(m, "SELECT t.oid IS NOT NULL, EXISTS (SELECT 1 FROM "
                              "pg_catalog.pg_attribute a WHERE a.attrelid = t.oid AND "
                              "a.attname = 'statement_started' AND NOT a.attisdropped) "
                              "FROM (SELECT pg_catalog.to_regclass($1::text) AS oid) t",
                           1, v, "cannot look up the migration history table");
    if (!r)
        return PGPIPE_DB;
    *exists = PQgetvalue(r, 0, 0)[0] == 't';
    m->has_started_col = PQgetvalue(r, 0, 1)[0] == 't';
    PQclear(r);
    return PGPIPE_OK;
}

/* name followed by suffix, quoted as an identifier and NUL-terminated. */
static int mig_quoted(pp_buf *out, const char *name, const char *suffix)
{
    pp_buf t = { NULL, 0, 0 };
    int rc = pp_buf_appendf(&t, "%s%s", name, suffix);
    if (rc == PGPIPE_OK)
        rc = pp_quote_ident(out, t.data, t.len);
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(out, '\0');
    pp_buf_free(&t);
    return rc;
}

static int mig_create_table(pgpipe_migrator *m)
{
    int exists = 0;
    int rc = mig_table_exists(m, &exists);
    if (rc != PGPIPE_OK || (exists && m->has_started_col))
        return rc;
    if (exists) {
        pp_buf q = { NULL, 0, 0 };
        if (pp_buf_appendf(&q, "ALTER TABLE %s ADD COLUMN IF NOT EXISTS statement_started "
                               "INTEGER", m->tbl) != PGPIPE_OK)
            return pp_err_nomem(&m->hdr.err);
        rc = mig_exec_ok(m, q.data, 0, NULL, "cannot upgrade the migration history table");
        pp_buf_free(&q);
        if (rc == PGPIPE_OK)
            m->has_started_col = 1;
        return rc;
    }
    pp_buf sch = { NULL, 0, 0 }, i1 = { NULL, 0, 0 }, i2 = { NULL, 0, 0 }, q = { NULL, 0, 0 };
    rc = PGPIPE_NOMEM;
    if (mig_quoted(&sch, m->tbl_schema, "") == PGPIPE_OK &&
        mig_quoted(&i1, m->tbl_name, "_version_key") == PGPIPE_OK &&
        mig_quoted(&i2, m->tbl_name, "_repeatable_key") == PGPIPE_OK &&
        pp_buf_appendf(&q,
            "CREATE SCHEMA IF NOT EXISTS %s;\n"
            "CREATE TABLE IF NOT EXISTS %s (\n"
            "    id                 BIGSERIAL PRIMARY KEY,\n"
            "    scope              TEXT NOT NULL DEFAULT 'default',\n"
            "    kind               CHAR(1) NOT NULL CHECK (kind IN ('V', 'R')),\n"
            "    version            NUMERIC CHECK (version >= 0 AND scale(version) = 0),\n"
            "    name               TEXT NOT NULL,\n"
            "    file               TEXT NOT NULL,\n"
            "    checksum           TEXT NOT NULL,\n"
            "    checksum_algorithm TEXT NOT NULL DEFAULT 'sha256',\n"
            "    status             TEXT NOT NULL\n"
            "                       CHECK (status IN ('applied', 'baseline', 'failed', 'partial')),\n"
            "    transactional      BOOLEAN NOT NULL DEFAULT true,\n"
            "    statements_done    INTEGER NOT NULL DEFAULT 0,\n"
            "    statements_total   INTEGER NOT NULL DEFAULT 0,\n"
            "    progress_checksum  TEXT,\n"
            "    statement_started  INTEGER,\n"
            "    applied_at         TIMESTAMPTZ NOT NULL DEFAULT now(),\n"
            "    execution_ms       DOUBLE PRECISION NOT NULL DEFAULT 0,\n"
            "    applied_by         TEXT NOT NULL DEFAULT current_user,\n"
            "    client_host        TEXT,\n"
            "    client_app         TEXT DEFAULT current_setting('application_name'),\n"
            "    error_line         INTEGER,\n"
            "    error_message      TEXT,\n"
            "    error_sqlstate     TEXT,\n"
            "    CHECK ((kind = 'V') = (version IS NOT NULL))\n"
            ");\n"
            "CREATE UNIQUE INDEX IF NOT EXISTS %s ON %s (scope, version) WHERE kind = 'V';\n"
            "CREATE UNIQUE INDEX IF NOT EXISTS %s ON %s (scope, name) WHERE kind = 'R';\n"
            "COMMENT ON TABLE %s IS 'pgpipe migration history: one row per versioned "
            "migration and per repeatable migration of each scope'",
            sch.data, m->tbl, i1.data, m->tbl, i2.data, m->tbl, m->tbl) == PGPIPE_OK)
        rc = mig_exec_ok(m, q.data, 0, NULL, "cannot create the migration history table");
    else
        pp_err_nomem(&m->hdr.err);
    if (rc == PGPIPE_OK)
        m->has_started_col = 1;
    pp_buf_free(&sch);
    pp_buf_free(&i1);
    pp_buf_free(&i2);
    pp_buf_free(&q);
    return rc;
}

static char *mig_dupval(PGresult *r, int i, int j)
{
    return PQgetisnull(r, i, j) ? NULL : pp_strdup(PQgetvalue(r, i, j));
}

static int mig_load_history(pgpipe_migrator *m)
{
    mig_rows_free(m);
    int exists = 0;
    int rc = mig_table_exists(m, &exists);
    if (rc != PGPIPE_OK || !exists)
        return rc;
    pp_buf q = { NULL, 0, 0 };
    if (pp_buf_appendf(&q,
            "SELECT kind, COALESCE(version::text, ''), name, file, checksum, "
            "checksum_algorithm, status, transactional, statements_done, statements_total, "
            "progress_checksum, to_char(applied_at AT TIME ZONE 'UTC', "
            "'YYYY-MM-DD HH24:MI:SS'), applied_by || COALESCE('@' || client_host, ''), "
            "execution_ms, COALESCE(error_line, 0), error_message, error_sqlstate, %s "
            "FROM %s WHERE scope = $1 ORDER BY kind DESC, version, name",
            m->has_started_col ? "COALESCE(statement_started, 0)" : "0", m->tbl) != PGPIPE_OK)
        return pp_err_nomem(&m->hdr.err);
    const char *p[1] = { m->scope };
    PGresult *r = mig_exec(m, q.data, 1, p, "cannot read the migration history");
    pp_buf_free(&q);
    if (!r)
        return PGPIPE_DB;
    int n = PQntuples(r);
    m->rows = pp_calloc((size_t)(n ? n : 1), sizeof *m->rows);
    if (!m->rows) {
        PQclear(r);
        return pp_err_nomem(&m->hdr.err);
    }
    m->nrows = n;
    for (int i = 0; i < n; i++) {
        mig_row *w = &m->rows[i];
        w->kind = PQgetvalue(r, i, 0)[0];
        w->transactional = PQgetvalue(r, i, 7)[0] == 't';
        w->done = atoi(PQgetvalue(r, i, 8));
        w->total = atoi(PQgetvalue(r, i, 9));
        w->exec_ms = strtod(PQgetvalue(r, i, 13), NULL);
        w->error_line = atoll(PQgetvalue(r, i, 14));
        w->started = atoi(PQgetvalue(r, i, 17));
        for (size_t k = 0; k < sizeof mig_row_text / sizeof *mig_row_text; k++) {
            int col = mig_row_text[k][0];
            if (!(MIG_ROW_TEXT(w, k) = mig_dupval(r, i, col)) && !PQgetisnull(r, i, col)) {
                PQclear(r);
                return pp_err_nomem(&m->hdr.err);
            }
        }
    }
    PQclear(r);
    return PGPIPE_OK;
}

/* Writes the history row of a migration (insert or replace). */
static int mig_record(pgpipe_migrator *m, const mig_file *f, const char *status, int done,
                      const char *progress_ck, double ms, long long err_line, const char *err,
                      const char *sqlstate)
{
    char sdone[16], stotal[16], sms[32], sline[24], host[256] = "";
    snprintf(sdone, sizeof sdone, "%d", done);
    snprintf(stotal, sizeof stotal, "%d", f->nstmts);
    snprintf(sms, sizeof sms, "%.3f", ms);
    snprintf(sline, sizeof sline, "%lld", err_line);
    if (gethostname(host, sizeof host - 1) != 0)
        host[0] = '\0';
    host[sizeof host - 1] = '\0';
    const char *p[14] = {
        m->scope, f->kind == 'V' ? "V" : "R", f->kind == 'V' ? f->version : NULL, f->name,
        f->file, f->checksum, status, f->transactional ? "t" : "f", sdone, stotal,
        progress_ck, sms, err_line > 0 ? sline : NULL, host[0] ? host : NULL,
    };
    const char *p2[16];
    memcpy(p2, p, sizeof p);
    p2[14] = err;
    p2[15] = sqlstate && *sqlstate ? sqlstate : NULL;
    pp_buf q = { NULL, 0, 0 };
    if (pp_buf_appendf(&q,
            "INSERT INTO %s AS h (scope, kind, version, name, file, checksum, "
            "checksum_algorithm, status, transactional, statements_done, statements_total, "
            "progress_checksum, execution_ms, error_line, client_host, error_message, "
            "error_sqlstate) VALUES ($1, $2, $3::numeric, $4, $5, $6, 'sha256', $7, $8, "
            "$9::int, $10::int, $11, $12::float8, $13::int, $14, $15, $16) "
            "ON CONFLICT %s DO UPDATE SET name = EXCLUDED.name, file = EXCLUDED.file, "
            "checksum = EXCLUDED.checksum, checksum_algorithm = EXCLUDED.checksum_algorithm, "
            "status = EXCLUDED.status, transactional = EXCLUDED.transactional, "
            "statements_done = EXCLUDED.statements_done, "
            "statements_total = EXCLUDED.statements_total, "
            "progress_checksum = EXCLUDED.progress_checksum, statement_started = NULL, "
            "applied_at = now(), "
            "execution_ms = EXCLUDED.execution_ms, applied_by = current_user, "
            "client_host = EXCLUDED.client_host, "
            "client_app = current_setting('application_name'), "
            "error_line = EXCLUDED.error_line, error_message = EXCLUDED.error_message, "
            "error_sqlstate = EXCLUDED.error_sqlstate",
            m->tbl, f->kind == 'V' ? "(scope, version) WHERE kind = 'V'"
                                   : "(scope, name) WHERE kind = 'R'") != PGPIPE_OK)
        return pp_err_nomem(&m->hdr.err);
    int rc = mig_hist_write(m, q.data, 16, p2, "cannot record the migration in the history");
    pp_buf_free(&q);
    return rc;
}

/* Updates a file's history row: set is the SET list over $4 (and $5). */
static int mig_row_update(pgpipe_migrator *m, const mig_file *f, const char *set, int n,
                          const char *a, const char *b, const char *what)
{
    const char *p[5] = { m->scope, f->kind == 'V' ? f->version : NULL, f->name, a, b };
    pp_buf q = { NULL, 0, 0 };
    if (pp_buf_appendf(&q,
            "UPDATE %s SET %s "
            "WHERE scope = $1 AND (CASE WHEN $2::numeric IS NULL THEN kind = 'R' AND name = $3 "
            "ELSE kind = 'V' AND version = $2::numeric END)", m->tbl, set) != PGPIPE_OK)
        return pp_err_nomem(&m->hdr.err);
    int rc = mig_hist_write(m, q.data, n, p, what);
    pp_buf_free(&q);
    return rc;
}

static int mig_record_progress(pgpipe_migrator *m, const mig_file *f, int done)
{
    char ck[65], sdone[16];
    mig_progress_checksum(f, done, ck);
    snprintf(sdone, sizeof sdone, "%d", done);
    return mig_row_update(m, f, "statements_done = $4::int, progress_checksum = $5, "
                                "statement_started = NULL", 5, sdone, ck,
                          "cannot record the progress of the migration");
}

/* Records that statement n (1-based) of a no-transaction file starts outside
** a transaction block: until its end is recorded its outcome is unknown. */
static int mig_record_start(pgpipe_migrator *m, const mig_file *f, int n)
{
    char sn[16];
    snprintf(sn, sizeof sn, "%d", n);
    return mig_row_update(m, f, "statement_started = $4::int", 4, sn, NULL,
                          "cannot record the start of a statement");
}

/* A file's history row as it is now (a transaction pooler's runner reads it
** again under the transaction lock). status is "" when there is none. */
typedef struct mig_now {
    char status[16];
    char checksum[65];
    int done, started;
} mig_now;

static int mig_reread(pgpipe_migrator *m, const mig_file *f, mig_now *now)
{
    memset(now, 0, sizeof *now);
    const char *p[3] = { m->scope, f->kind == 'V' ? f->version : NULL, f->name };
    pp_buf q = { NULL, 0, 0 };
    if (pp_buf_appendf(&q,
            "SELECT status, checksum, statements_done, COALESCE(statement_started, 0) FROM %s "
            "WHERE scope = $1 AND (CASE WHEN $2::numeric IS NULL THEN kind = 'R' AND name = $3 "
            "ELSE kind = 'V' AND version = $2::numeric END)", m->tbl) != PGPIPE_OK)
        return pp_err_nomem(&m->hdr.err);
    int rc = mig_as_runner(m);
    PGresult *r = rc == PGPIPE_OK ? mig_exec(m, q.data, 3, p, "cannot read the migration history")
                                  : NULL;
    pp_buf_free(&q);
    if (!r)
        return PGPIPE_DB;
    if (PQntuples(r) == 1) {
        snprintf(now->status, sizeof now->status, "%s", PQgetvalue(r, 0, 0));
        snprintf(now->checksum, sizeof now->checksum, "%s", PQgetvalue(r, 0, 1));
        now->done = atoi(PQgetvalue(r, 0, 2));
        now->started = atoi(PQgetvalue(r, 0, 3));
    }
    PQclear(r);
    return PGPIPE_OK;
}

/* ---- The advisory lock ------------------------------------------------ */

/* Takes the advisory lock: for the session, or (xact) until the end of the
** open transaction, which a transaction pooler keeps on one server
** connection. */
static int mig_lock(pgpipe_migrator *m, int xact)
{
    const char *p[1] = { m->lock_key_s };
    int64_t t0 = pgpipe_now_us();
    int timeout = m->lock_timeout_ms;
    /* poll until the timeout, not a number of attempts */
    pgpipe_retry backoff;
    pgpipe_retry_init(&backoff, INT_MAX, 20, 320);
    for (;;) {
        PGresult *r = mig_exec(m, xact ? "SELECT pg_try_advisory_xact_lock($1::bigint)"
                                       : "SELECT pg_try_advisory_lock($1::bigint)", 1, p,
                               "cannot take the migration lock");
        if (!r)
            return PGPIPE_DB;
        int got = PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
        if (got) {
            m->locked = !xact;
            return PGPIPE_OK;
        }
        int64_t waited = (pgpipe_now_us() - t0) / 1000;
        if (timeout < 0 || waited >= timeout)
            break;
        int d = pgpipe_retry_next_delay(&backoff);
        if (waited + d > timeout)
            d = (int)(timeout - waited);
        pgpipe_sleep_ms(d);
    }
    /* name the holder */
    char holder[64] = "another session";
    PGresult *r;
    if (pp_exec(m->conn,
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid = (($1::bigint >> 32) & 4294967295)::oid "
                "AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1 LIMIT 1",
                1, p, &r, NULL, NULL) == PGPIPE_OK && PQntuples(r) == 1)
        snprintf(holder, sizeof holder, "backend pid %s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return pp_err(&m->hdr.err, PGPIPE_BUSY,
                  "another migration runner holds the migration lock "
                  "(pg_advisory_lock(%lld), %s); gave up after %d ms",
                  m->lock_key, holder, timeout < 0 ? 0 : timeout);
}

static void mig_unlock(pgpipe_migrator *m)
{
    if (!m->locked)
        return;
    const char *p[1] = { m->lock_key_s };
    PGresult *r = PQexecParams(m->conn, "SELECT pg_advisory_unlock($1::bigint)", 1, NULL, p,
                               NULL, NULL, 0);
    PQclear(r);
    m->locked = 0;
}

/* ---- Status ----------------------------------------------------------- */

static mig_row *mig_find_row(pgpipe_migrator *m, const mig_file *f)
{
    for (int i = 0; i < m->nrows; i++) {
        mig_row *r = &m->rows[i];
        if (r->kind != f->kind)
            continue;
        if (f->kind == 'V' ? strcmp(r->version, f->version) == 0 : strcmp(r->name, f->name) == 0)
            return r;
    }
    return NULL;
}

static mig_entry *mig_new_entry(pgpipe_migrator *m, int *cap)
{
    if (m->nentries == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        mig_entry *ne = pp_realloc(m->entries, sizeof *ne * (size_t)nc);
        if (!ne)
            return NULL;
        m->entries = ne;
        *cap = nc;
    }
    mig_entry *e = &m->entries[m->nentries++];
    memset(e, 0, sizeof *e);
    return e;
}

static void mig_fill_info(mig_entry *e)
{
    pgpipe_migration_info *in = &e->info;
    const mig_file *f = e->f;
    const mig_row *r = e->r;
    in->kind = f ? f->kind : r->kind;
    in->version = f ? f->version : r->version;
    in->name = f ? f->name : r->name;
    in->file = f ? f->file : NULL;
    in->checksum = f ? f->checksum : NULL;
    in->transactional = f ? f->transactional : r->transactional;
    in->statements_total = f && f->parsed ? f->nstmts : r ? r->total : 0;
    if (r) {
        in->recorded_checksum = r->checksum;
        in->applied_at = r->applied_at;
        in->applied_by = r->applied_by;
        in->execution_ms = r->exec_ms;
        in->statements_done = r->done;
        in->error_line = r->error_line;
        in->error = r->error;
        in->sqlstate = r->sqlstate;
    }
    in->ran = f && f->ran;
    in->action = e->action;
}

static int mig_entry_cmp(const void *pa, const void *pb)
{
    const mig_entry *a = pa, *b = pb;
    if (a->info.kind != b->info.kind)
        return a->info.kind == 'V' ? -1 : 1;
    if (a->info.kind == 'V')
        return mig_vcmp(a->info.version, b->info.version);
    return strcmp(a->info.name, b->info.name);
}

/* Forgets which history rows matched a file, and finds the highest applied
** (or baselined) version and the highest baseline version (NULL when none). */
static void mig_history_bounds(pgpipe_migrator *m, const char **max_applied,
                               const char **max_baseline)
{
    *max_applied = *max_baseline = NULL;
    for (int i = 0; i < m->nrows; i++) {
        mig_row *r = &m->rows[i];
        r->matched = 0;
        if (r->kind != 'V')
            continue;
        if (strcmp(r->status, "applied") == 0 || strcmp(r->status, "baseline") == 0)
            if (!*max_applied || mig_vcmp(r->version, *max_applied) > 0)
                *max_applied = r->version;
        if (strcmp(r->status, "baseline") == 0)
            if (!*max_baseline || mig_vcmp(r->version, *max_baseline) > 0)
                *max_baseline = r->version;
    }
}

/* State and action of a file not in the history. */
static void mig_decide_new(pgpipe_migrator *m, mig_entry *e, const char *max_applied,
                           const char *max_baseline)
{
    const mig_file *f = e->f;
    pgpipe_migration_info *in = &e->info;
    in->state = PGPIPE_MIGRATION_PENDING;
    if (f->kind == 'V' && m->bl && mig_vcmp(f->version, m->bl) <= 0) {
        e->do_baseline = 1;
        snprintf(e->action, sizeof e->action, "record as baseline");
    } else if (f->kind == 'V' && max_baseline && mig_vcmp(f->version, max_baseline) <= 0) {
        in->state = PGPIPE_MIGRATION_IGNORED;
        snprintf(e->action, sizeof e->action, "below the baseline %s: skipped",
                 max_baseline);
    } else if (f->kind == 'V' && m->target && mig_vcmp(f->version, m->target) > 0) {
        snprintf(e->action, sizeof e->action, "above the target %s: left pending", m->target);
    } else if (f->kind == 'V' && max_applied && mig_vcmp(f->version, max_applied) < 0) {
        e->out_of_order = 1;
        if (m->flags & PGPIPE_MIGRATE_OUT_OF_ORDER) {
            in->will_run = 1;
            snprintf(e->action, sizeof e->action, "apply (out of order)");
        } else {
            snprintf(e->action, sizeof e->action,
                     "error: out of order (version %s is applied)", max_applied);
        }
    } else {
        in->will_run = 1;
        snprintf(e->action, sizeof e->action, "apply");
    }
}

static int mig_row_nothing_applied(const mig_row *r);

/* State and action of a file with a history row. */
static void mig_decide_recorded(pgpipe_migrator *m, mig_entry *e)
{
    const mig_file *f = e->f;
    const mig_row *r = e->r;
    pgpipe_migration_info *in = &e->info;
    int repair = (m->flags & PGPIPE_MIGRATE_REPAIR) != 0;
    if (strcmp(r->status, "applied") == 0 || strcmp(r->status, "baseline") == 0) {
        int same = strcmp(r->checksum, f->checksum) == 0 && strcmp(r->algo, "sha256") == 0;
        int base = strcmp(r->status, "baseline") == 0;
        if (base && r->file[0] == '\0' && f->kind == 'V') {
            /* a file at the version of a baseline marker (recorded without a
            ** file, so without a checksum to drift from): the baseline
            ** covers it, as it covers the files below */
            in->state = PGPIPE_MIGRATION_BASELINE;
            snprintf(e->action, sizeof e->action, "at the baseline %s: skipped", r->version);
        } else if (same) {
            in->state = base ? PGPIPE_MIGRATION_BASELINE : PGPIPE_MIGRATION_APPLIED;
            if (f->kind == 'V' && strcmp(r->file, f->file) != 0) {
                /* renamed, same version and content: not drift; repair
                ** records the file's name now */
                e->do_repair = repair;
                snprintf(e->action, sizeof e->action, "%s%.80s%s",
                         repair ? "repair: record the new name (was " : "none (recorded as ",
                         r->file, repair ? ")" : "; repair records the new name)");
            }
        } else if (f->kind == 'R') {
            in->state = PGPIPE_MIGRATION_OUTDATED;
            in->will_run = 1;
            snprintf(e->action, sizeof e->action, "re-apply (file changed)");
        } else {
            in->state = PGPIPE_MIGRATION_CHANGED;
            e->do_repair = repair;
            snprintf(e->action, sizeof e->action, "%s",
                     repair ? "repair: record the new checksum"
                            : "error: file changed since it was applied");
        }
    } else if (f->kind == 'V' && m->bl && mig_vcmp(f->version, m->bl) <= 0 &&
               mig_row_nothing_applied(r)) {
        /* a failed attempt (nothing of it applied) below the baseline: the
        ** baseline says the database has it already */
        in->state = PGPIPE_MIGRATION_FAILED;
        e->do_baseline = 1;
        snprintf(e->action, sizeof e->action, "record as baseline (last attempt failed)");
    } else if (strcmp(r->status, "partial") == 0 && f->kind == 'V' && r->started > 0) {
        /* started, end not recorded: it may or may not have taken effect */
        in->state = PGPIPE_MIGRATION_PARTIAL;
        e->in_doubt = in->statement_unknown = r->started;
        e->resume_at = r->done;
        if (m->redo == r->started) {
            in->will_run = 1;
            e->resume_at = r->started - 1;
            snprintf(e->action, sizeof e->action, "redo statement %d", r->started);
        } else if (m->resume_from > r->started) {
            in->will_run = 1;
            e->resume_at = m->resume_from - 1;
            snprintf(e->action, sizeof e->action, "resume at statement %d (%d taken as done)",
                     m->resume_from, r->started);
        } else {
            snprintf(e->action, sizeof e->action,
                     "stopped: statement %d's outcome is unknown; check it, then run with "
                     "--resume-from %d (it took effect) or --redo %d", r->started,
                     r->started + 1, r->started);
        }
    } else if (strcmp(r->status, "partial") == 0 && f->kind == 'V') {
        in->state = PGPIPE_MIGRATION_PARTIAL;
        in->will_run = 1;
        e->resume_at = r->done;
        snprintf(e->action, sizeof e->action, "resume at statement %d", r->done + 1);
    } else {
        in->state = PGPIPE_MIGRATION_FAILED;
        in->will_run = 1;
        snprintf(e->action, sizeof e->action, "re-apply (last attempt failed)");
    }
}

/* An entry for each file, matched with its history row. */
static int mig_add_file_entries(pgpipe_migrator *m, int *cap)
{
    const char *max_applied, *max_baseline;
    mig_history_bounds(m, &max_applied, &max_baseline);
    for (int i = 0; i < m->nfiles; i++) {
        mig_file *f = &m->files[i];
        mig_entry *e = mig_new_entry(m, cap);
        if (!e)
            return pp_err_nomem(&m->hdr.err);
        e->f = f;
        mig_row *r = e->r = mig_find_row(m, f);
        if (r) {
            r->matched = 1;
            mig_decide_recorded(m, e);
        } else {
            mig_decide_new(m, e, max_applied, max_baseline);
        }
        if (e->info.will_run || e->info.state == PGPIPE_MIGRATION_FAILED) {
            /* statement counts for the report; a run reports parse errors */
            pgpipe_error keep = m->hdr.err;
            if (mig_parse_file(m, f) == PGPIPE_NOMEM)
                return PGPIPE_NOMEM;
            m->hdr.err = keep;
        }
    }
    return PGPIPE_OK;
}

/* A history row of an attempt that left nothing in the database: a failed
** transactional file, or a no-transaction file stopped before its first
** statement committed (none in doubt). */
static int mig_row_nothing_applied(const mig_row *r)
{
    return strcmp(r->status, "failed") == 0 ||
           (strcmp(r->status, "partial") == 0 && r->done == 0 && r->started == 0);
}

/* An entry for each history row whose file is gone. */
static int mig_add_missing_entries(pgpipe_migrator *m, int *cap)
{
    for (int i = 0; i < m->nrows; i++) {
        mig_row *r = &m->rows[i];
        if (r->matched)
            continue;
        mig_entry *e = mig_new_entry(m, cap);
        if (!e)
            return pp_err_nomem(&m->hdr.err);
        e->r = r;
        if (strcmp(r->status, "baseline") == 0 && r->file[0] == '\0') {
            e->info.state = PGPIPE_MIGRATION_BASELINE;
        } else if (mig_row_nothing_applied(r)) {
            /* a failed attempt left nothing behind: its file being gone is
            ** not an applied migration going missing */
            e->info.state = PGPIPE_MIGRATION_FAILED;
            snprintf(e->action, sizeof e->action,
                     "none (file removed; nothing of it was applied)");
        } else {
            e->info.state = PGPIPE_MIGRATION_MISSING;
            snprintf(e->action, sizeof e->action, "%s",
                     (m->flags & PGPIPE_MIGRATE_DENY_MISSING) ? "error: file missing on disk"
                                                              : "none (file missing on disk)");
        }
    }
    return PGPIPE_OK;
}

/* A baseline version without a file or a history row of its own gets a
** marker entry. */
static int mig_add_baseline_marker(pgpipe_migrator *m, int *cap)
{
    if (!m->bl)
        return PGPIPE_OK;
    int have = 0;
    for (int i = 0; i < m->nfiles; i++)
        if (m->files[i].kind == 'V' && strcmp(m->files[i].version, m->bl) == 0)
            have = 1;
    /* (a failed attempt of a removed file at that version becomes the marker) */
    for (int i = 0; i < m->nrows; i++)
        if (m->rows[i].kind == 'V' && strcmp(m->rows[i].version, m->bl) == 0 &&
            !mig_row_nothing_applied(&m->rows[i]))
            have = 1;
    if (have)
        return PGPIPE_OK;
    mig_entry *e = mig_new_entry(m, cap);
    if (!e)
        return pp_err_nomem(&m->hdr.err);
    e->do_baseline = 1;
    e->info.state = PGPIPE_MIGRATION_PENDING;
    e->info.kind = 'V';
    e->info.version = m->bl;
    e->info.name = "baseline";
    snprintf(e->action, sizeof e->action, "record baseline marker");
    return PGPIPE_OK;
}

/* What the baseline V does with the history of the scope (rows of
** repeatables and failed attempts that left nothing behind do not count):
** - no versioned row took effect: V and the files at or below it are
**   recorded as baseline (failed attempts among them too);
** - the history started with this same baseline (its highest baseline row is
**   V and every row at or below V is a baseline row): a run without it, so
**   the same command runs again and again;
** - otherwise it is refused: recording versions as applied next to ones
**   that ran would skip pending files silently. m->bl is the baseline the
**   entries record (NULL when none). */
static void mig_baseline_decide(pgpipe_migrator *m)
{
    m->bl = NULL;
    m->bl_refused = 0;
    m->bl_msg[0] = '\0';
    if (!m->baseline)
        return;
    const char *top = NULL, *max_bl = NULL;
    int applied_at_or_below = 0;
    for (int i = 0; i < m->nrows; i++) {
        const mig_row *r = &m->rows[i];
        if (r->kind != 'V' || mig_row_nothing_applied(r))
            continue;
        int base = strcmp(r->status, "baseline") == 0;
        if (!top || mig_vcmp(r->version, top) > 0)
            top = r->version;
        if (base && (!max_bl || mig_vcmp(r->version, max_bl) > 0))
            max_bl = r->version;
        if (!base && mig_vcmp(r->version, m->baseline) <= 0)
            applied_at_or_below = 1;
    }
    if (!top) {
        m->bl = m->baseline;
        return;
    }
    if (max_bl && strcmp(max_bl, m->baseline) == 0 && !applied_at_or_below)
        return;
    m->bl_refused = 1;
    char own[64] = "";
    if (max_bl)
        snprintf(own, sizeof own, " (its baseline is version %.32s)", max_bl);
    snprintf(m->bl_msg, sizeof m->bl_msg,
             "baseline version %.60s refused: the history of scope \"%.60s\" already has "
             "versions applied, up to version %.60s%s; a baseline is only for a history "
             "with none, and nothing was changed. Run without the baseline to apply the "
             "pending versions", m->baseline, m->scope, top, own);
}

/* Builds the entries from the files and the history, deciding what a run
** would do with each, in the order a run takes them. */
static int mig_build_entries(pgpipe_migrator *m)
{
    mig_entries_free(m);
    mig_baseline_decide(m);
    int cap = 0;
    int rc = mig_add_file_entries(m, &cap);
    if (rc == PGPIPE_OK)
        rc = mig_add_missing_entries(m, &cap);
    if (rc == PGPIPE_OK)
        rc = mig_add_baseline_marker(m, &cap);
    if (rc != PGPIPE_OK)
        return rc;
    for (int i = 0; i < m->nentries; i++) {
        mig_entry *e = &m->entries[i];
        if (e->f || e->r)
            mig_fill_info(e);
        else
            e->info.action = e->action;
    }
    if (m->nentries > 1)
        qsort(m->entries, (size_t)m->nentries, sizeof *m->entries, mig_entry_cmp);
    for (int i = 0; i < m->nentries; i++) {
        mig_entry *e = &m->entries[i];
        e->info.action = e->action;
        /* a refused baseline: the run stops before anything runs */
        if (m->bl_refused && e->info.will_run) {
            e->info.will_run = 0;
            snprintf(e->action, sizeof e->action, "none (baseline %.60s refused)", m->baseline);
        }
    }
    return PGPIPE_OK;
}

static int mig_refuse_unopened(pgpipe_migrator *m);

int pgpipe_migrate_status(pgpipe_migrator *m)
{
    if (!m)
        return PGPIPE_MISUSE;
    if (!m->opened)
        return mig_refuse_unopened(m);
    pgpipe_error_clear(&m->hdr.err);
    int rc = mig_load_files(m);
    if (rc == PGPIPE_OK)
        rc = mig_load_history(m);
    if (rc == PGPIPE_OK)
        rc = mig_build_entries(m);
    if (rc == PGPIPE_OK && m->bl_refused)
        rc = pp_err(&m->hdr.err, PGPIPE_ERROR, "%s", m->bl_msg);
    return rc;
}

int pgpipe_migrate_count(const pgpipe_migrator *m)
{
    return m ? m->nentries : 0;
}

const pgpipe_migration_info *pgpipe_migrate_entry(const pgpipe_migrator *m, int i)
{
    return m && i >= 0 && i < m->nentries ? &m->entries[i].info : NULL;
}

const char *pgpipe_migration_state_name(int state)
{
    switch (state) {
    case PGPIPE_MIGRATION_APPLIED:  return "applied";
    case PGPIPE_MIGRATION_PENDING:  return "pending";
    case PGPIPE_MIGRATION_CHANGED:  return "changed";
    case PGPIPE_MIGRATION_MISSING:  return "missing";
    case PGPIPE_MIGRATION_FAILED:   return "failed";
    case PGPIPE_MIGRATION_PARTIAL:  return "partial";
    case PGPIPE_MIGRATION_BASELINE: return "baseline";
    case PGPIPE_MIGRATION_OUTDATED: return "outdated";
    case PGPIPE_MIGRATION_IGNORED:  return "ignored";
    default:                        return "unknown";
    }
}

int pgpipe_migrate_format(const pgpipe_migrator *m, char *buf, size_t size)
{
    if (!m)
        return snprintf(buf, size, "%s", "");
    pp_buf b = { NULL, 0, 0 };
    int counts[10] = { 0 };
    int ok = pp_buf_appendf(&b, "%-9s %-8s %-32s %-19s %-16s %9s  %s\n", "state", "version",
                            "name", "applied at (UTC)", "by", "ms", "notes") == PGPIPE_OK;
    for (int i = 0; ok && i < m->nentries; i++) {
        const pgpipe_migration_info *in = &m->entries[i].info;
        if (in->state > 0 && in->state < 10)
            counts[in->state]++;
        char ms[32] = "", by[64] = "", notes[600] = "";
        if (in->applied_at && in->state != PGPIPE_MIGRATION_BASELINE)
            snprintf(ms, sizeof ms, "%.1f", in->execution_ms);
        if (in->applied_by)
            snprintf(by, sizeof by, "%s", in->applied_by);
        size_t nl = 0;
        if (in->ran)
            nl += (size_t)snprintf(notes + nl, sizeof notes - nl, "ran now; ");
        if (in->state == PGPIPE_MIGRATION_CHANGED && in->recorded_checksum && in->checksum)
            nl += (size_t)snprintf(notes + nl, sizeof notes - nl,
                                   "sha256 %.12s recorded, %.12s on disk; ",
                                   in->recorded_checksum, in->checksum);
        if ((in->state == PGPIPE_MIGRATION_PARTIAL || in->state == PGPIPE_MIGRATION_FAILED) &&
            nl < sizeof notes)
            nl += (size_t)snprintf(notes + nl, sizeof notes - nl,
                                   "%d/%d statements done; line %lld: %s%s%s%s; ",
                                   in->statements_done, in->statements_total, in->error_line,
                                   in->error ? in->error : "interrupted",
                                   in->sqlstate ? " [" : "", in->sqlstate ? in->sqlstate : "",
                                   in->sqlstate ? "]" : "");
        if (!in->transactional && in->file && nl < sizeof notes)
            nl += (size_t)snprintf(notes + nl, sizeof notes - nl, "no-transaction; ");
        if (in->action && in->action[0] && nl < sizeof notes)
            nl += (size_t)snprintf(notes + nl, sizeof notes - nl, "%s%s",
                                   in->will_run && (m->flags & PGPIPE_MIGRATE_DRY_RUN)
                                       ? "would " : "next run: ", in->action);
        if (nl >= sizeof notes)
            nl = sizeof notes - 1;
        while (nl >= 2 && notes[nl - 2] == ';' && notes[nl - 1] == ' ')
            notes[nl -= 2] = '\0';
        ok = pp_buf_appendf(&b, "%-9s %-8s %-32s %-19s %-16s %9s  %s",
                            pgpipe_migration_state_name(in->state),
                            in->kind == 'R' ? "R" : in->version, in->name,
                            in->applied_at ? in->applied_at : "", by, ms, notes) == PGPIPE_OK;
        while (ok && b.len && b.data[b.len - 1] == ' ')
            b.len--;
        ok = ok && pp_buf_putc(&b, '\n') == PGPIPE_OK;
    }
    if (ok) {
        ok = pp_buf_appendf(&b, "%d migrations:", m->nentries) == PGPIPE_OK;
        int first = 1;
        for (int s = 1; ok && s < 10; s++) {
            if (!counts[s])
                continue;
            ok = pp_buf_appendf(&b, "%s %d %s", first ? "" : ",", counts[s],
                                pgpipe_migration_state_name(s)) == PGPIPE_OK;
            first = 0;
        }
        ok = ok && pp_buf_appendf(&b, "\n") == PGPIPE_OK;
    }
    int n;
    if (!ok)
        n = snprintf(buf, size, "out of memory\n");
    else
        n = snprintf(buf, size, "%s", b.data);
    pp_buf_free(&b);
    return n;
}

/* ---- Running ---------------------------------------------------------- */

/* Line and column in the file of a 1-based character position inside a
** statement (the server's error position). */
static void mig_pos_to_line(const mig_stmt *st, long pos, long long *line, long long *col)
{
    long long l = st->line, c = st->column;
    long chars = 1;
    for (const unsigned char *p = (const unsigned char *)st->sql; *p && chars < pos; p++) {
        if ((*p & 0xC0) == 0x80)
            continue; /* UTF-8 continuation byte */
        if (*p == '\n') {
            l++;
            c = 1;
        } else {
            c++;
        }
        chars++;
    }
    *line = l;
    *col = c;
}

static int mig_stmt_error(pgpipe_migrator *m, const mig_file *f, int idx, const mig_stmt *st,
                          PGresult *r)
{
    pp_err_pq(&m->hdr.err, m->conn, r, NULL);
    char msg[sizeof m->hdr.err.message];
    snprintf(msg, sizeof msg, "%s", m->hdr.err.message);
    const char *pos = r ? PQresultErrorField(r, PG_DIAG_STATEMENT_POSITION) : NULL;
    const char *detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    const char *hint = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_HINT) : NULL;
    char where[96] = "";
    if (pos && atol(pos) > 0) {
        long long l, c;
        mig_pos_to_line(st, atol(pos), &l, &c);
        snprintf(where, sizeof where, " (at line %lld, column %lld)", l, c);
    }
    pgpipe_error *e = &m->hdr.err;
    char sqlstate[6];
    memcpy(sqlstate, e->sqlstate, 6);
    /* a statement that cannot run in a transaction block, in a file run as
    ** one transaction: say how to run it */
    const char *ours = f->transactional && !strcmp(sqlstate, "25001")
                           ? "; hint: a line \"-- pgpipe:no-transaction\" in the file runs it "
                             "one statement at a time, outside a transaction"
                           : "";
    pp_err_at(e, PGPIPE_DB, f->file, st->line, st->column, 0,
              "statement %d of %d failed: %s%s%s%s%s%s%s", idx + 1,
              f->nstmts, msg, where, detail ? "; detail: " : "", detail ? detail : "",
              hint ? "; hint: " : "", hint ? hint : "", ours);
    memcpy(e->sqlstate, sqlstate, 6);
    return PGPIPE_DB;
}

/* Runs one statement (and its inline COPY data). */
static int mig_exec_stmt(pgpipe_migrator *m, const mig_file *f, int idx)
{
    const mig_stmt *st = &f->stmts[idx];
    PGresult *r = PQexec(m->conn, st->sql);
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_COPY_IN) {
        PQclear(r);
        int ok = 1;
        for (size_t off = 0; ok && st->copy_data && off < st->copy_len;) {
            size_t k = st->copy_len - off > (1u << 20) ? (1u << 20) : st->copy_len - off;
            ok = PQputCopyData(m->conn, st->copy_data + off, (int)k) == 1;
            off += k;
        }
        ok = PQputCopyEnd(m->conn, st->copy_data ? NULL
                                                 : "no inline data follows this COPY statement") ==
                 1 && ok;
        r = PQgetResult(m->conn);
        s = PQresultStatus(r);
        PGresult *x;
        while ((x = PQgetResult(m->conn)) != NULL)
            PQclear(x);
        (void)ok;
    } else if (s == PGRES_COPY_OUT) {
        PQclear(r);
        char *row;
        while (PQgetCopyData(m->conn, &row, 0) > 0)
            PQfreemem(row);
        r = PQgetResult(m->conn);
        s = PQresultStatus(r);
        PGresult *x;
        while ((x = PQgetResult(m->conn)) != NULL)
            PQclear(x);
    }
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_EMPTY_QUERY) {
        PQclear(r);
        return PGPIPE_OK;
    }
    int rc = mig_stmt_error(m, f, idx, st, r);
    PQclear(r);
    return rc;
}

/* Opens a transaction; behind a transaction pooler it takes the transaction
** lock too, so the steps of different runners take turns. */
static int mig_begin_as(pgpipe_migrator *m, const char *begin)
{
    int rc = mig_exec_ok(m, begin, 0, NULL, "cannot begin a migration transaction");
    if (rc == PGPIPE_OK && m->txmode)
        rc = mig_lock(m, 1);
    return rc;
}

/* A migration's transaction, at READ COMMITTED whatever
** default_transaction_isolation says: behind a transaction pooler a step
** takes the lock and then reads the history again, and under REPEATABLE READ
** or SERIALIZABLE that read would see the snapshot taken before the lock's
** wait, not what another runner committed meanwhile. */
static int mig_begin(pgpipe_migrator *m)
{
    return mig_begin_as(m, PP_BEGIN);
}

static int mig_commit(pgpipe_migrator *m)
{
    return mig_exec_ok(m, "COMMIT", 0, NULL, "cannot commit the migration");
}

static void mig_rollback_if_needed(pgpipe_migrator *m)
{
    pp_rollback_open(m->conn);
}

/* Records a failure after the error is set; keeps that error. */
static void mig_record_failure(pgpipe_migrator *m, const mig_file *f, const char *status,
                               int done, double ms)
{
    pgpipe_error keep = m->hdr.err;
    if (PQstatus(m->conn) == CONNECTION_OK) {
        char ck[65];
        mig_progress_checksum(f, done, ck);
        int rc = m->txmode ? mig_begin(m) : PGPIPE_OK;
        if (rc == PGPIPE_OK)
            rc = mig_record(m, f, status, done, ck, ms, keep.line, keep.message, keep.sqlstate);
        if (rc == PGPIPE_OK && m->txmode)
            rc = mig_commit(m);
        if (rc != PGPIPE_OK) {
            pp_rollback_open(m->conn);
            pp_logf(PGPIPE_LOG_WARN, "migrate", "%s: could not record the failure: %s",
                    f->file, m->hdr.err.message);
        }
    }
    m->hdr.err = keep;
}

/* Where a run starts in a file: after the statements a stopped
** no-transaction run completed, when they are unchanged. */
static int mig_resume_point(pgpipe_migrator *m, const mig_entry *e, int *start)
{
    const mig_file *f = e->f;
    *start = 0;
    if (e->info.state != PGPIPE_MIGRATION_PARTIAL || !e->r || f->transactional)
        return PGPIPE_OK; /* a file made transactional since runs from the start */
    char ck[65];
    int ran = e->r->done; /* what the history says committed */
    mig_progress_checksum(f, ran, ck);
    if (ran > f->nstmts || !e->r->progress_ck || strcmp(ck, e->r->progress_ck) != 0)
        return pp_err_at(&m->hdr.err, PGPIPE_ERROR, f->file, 0, 0, 0,
                         "cannot resume: the first %d statements, which already ran, "
                         "changed since; restore them (only statements after them may "
                         "change)", ran);
    if (e->resume_at > f->nstmts)
        return pp_err_at(&m->hdr.err, PGPIPE_MISUSE, f->file, 0, 0, 0,
                         "--resume-from %d: the file has %d statements (%d resumes after "
                         "the last)", e->resume_at + 1, f->nstmts, f->nstmts + 1);
    *start = e->resume_at;
    return PGPIPE_OK;
}

/* Kind of a transaction control statement: 1 BEGIN or START, 2 COMMIT or
** END, 3 ROLLBACK or ABORT (not ROLLBACK TO), 0 anything else. */
static int mig_tc_kind(const char *s)
{
    size_t n = 0;
    while (sqlsplit_is_ident_char((unsigned char)s[n]))
        n++;
    if (sqlsplit_word_is(s, n, "begin") || sqlsplit_word_is(s, n, "start"))
        return 1;
    if (sqlsplit_word_is(s, n, "commit") || sqlsplit_word_is(s, n, "end"))
        return 2;
    if ((sqlsplit_word_is(s, n, "rollback") && strncasecmp(s + n, " to", 3) != 0) ||
        sqlsplit_word_is(s, n, "abort"))
        return 3;
    return 0;
}

/* The error of a statement whose start is recorded but not its end. */
static int mig_doubt_error(pgpipe_migrator *m, const mig_file *f, int n, int other)
{
    const mig_stmt *st = f->parsed && n >= 1 && n <= f->nstmts ? &f->stmts[n - 1] : NULL;
    char head[64] = "";
    if (st) {
        size_t k = 0;
        for (const char *p = st->sql; *p && k < 48; p++)
            head[k++] = *p == '\n' || *p == '\r' || *p == '\t' ? ' ' : *p;
        head[k] = '\0';
    }
    return pp_err_at(&m->hdr.err, PGPIPE_ERROR, f->file, st ? st->line : 0,
                     st ? st->column : 0, 0,
                     "statement %d of %d (%s%s) started but its end was not recorded (%s); "
                     "its outcome is unknown, so it is not run again by itself: check what "
                     "it did, then run again with --resume-from %d if it took effect, or "
                     "--redo %d to run it again", n, f->nstmts, head,
                     st && strlen(st->sql) > 48 ? "..." : "",
                     other ? "another runner still runs it, or was cut off"
                           : "the run was cut off: a lost connection or a server restart",
                     n + 1, n);
}

/* An entry applied: by this run (ran), or by another runner meanwhile. */
static void mig_entry_applied(mig_entry *e, int ran)
{
    if (ran) {
        e->info.ran = e->f->ran = 1;
        e->info.statements_done = e->f->nstmts;
    }
    e->info.state = PGPIPE_MIGRATION_APPLIED;
    e->info.will_run = 0;
    e->action[0] = '\0';
}

/* A whole file in one transaction. */
static int mig_apply_tx(pgpipe_migrator *m, mig_entry *e)
{
    mig_file *f = e->f;
    int64_t t0 = pgpipe_now_us();
    int rc = mig_begin(m);
    if (rc == PGPIPE_OK && m->txmode) {
        /* under the lock: another runner may have applied it since we read */
        mig_now now;
        rc = mig_reread(m, f, &now);
        if (rc != PGPIPE_OK) {
            mig_rollback_if_needed(m);
            return rc;
        }
        if ((!strcmp(now.status, "applied") || !strcmp(now.status, "baseline")) &&
            !strcmp(now.checksum, f->checksum)) {
            pp_rollback_open(m->conn);
            pp_logf(PGPIPE_LOG_INFO, "migrate", "%s: applied by another runner meanwhile",
                    f->file);
            mig_entry_applied(e, 0);
            return PGPIPE_OK;
        }
    }
    if (rc != PGPIPE_OK) { /* no transaction or no lock: nothing ran */
        mig_rollback_if_needed(m);
        return rc;
    }
    for (int i = 0; i < f->nstmts && rc == PGPIPE_OK; i++) {
        rc = mig_exec_stmt(m, f, i);
        if (rc == PGPIPE_OK && PQtransactionStatus(m->conn) != PQTRANS_INTRANS) {
            rc = pp_err_at(&m->hdr.err, PGPIPE_ERROR, f->file, f->stmts[i].line,
                           f->stmts[i].column, 0,
                           "the statement ended the migration's transaction");
        }
    }
    double ms = (double)(pgpipe_now_us() - t0) / 1000.0;
    if (rc == PGPIPE_OK) {
        char ck[65];
        mig_progress_checksum(f, f->nstmts, ck);
        rc = mig_record(m, f, "applied", f->nstmts, ck, ms, 0, NULL, NULL);
    }
    if (rc == PGPIPE_OK) {
        rc = mig_commit(m);
        if (rc != PGPIPE_OK && PQstatus(m->conn) != CONNECTION_OK)
            snprintf(e->action, sizeof e->action,
                     "unknown: the connection was lost at COMMIT; the next run reads the "
                     "history");
    }
    if (rc != PGPIPE_OK) {
        mig_rollback_if_needed(m);
        mig_record_failure(m, f, "failed", 0, ms);
        return rc;
    }
    mig_entry_applied(e, 1);
    pp_logf(PGPIPE_LOG_INFO, "migrate", "applied %s (%d statements, %.1f ms)", f->file,
            f->nstmts, ms);
    return PGPIPE_OK;
}

/* Behind a transaction pooler, at the start of a no-transaction file and
** under the transaction lock: writes the file's row unless another runner
** is already at it. *skip: another runner applied it. */
static int mig_notx_begin(pgpipe_migrator *m, mig_entry *e, int start, int *skip)
{
    mig_file *f = e->f;
    char ck[65];
    *skip = 0;
    mig_progress_checksum(f, start, ck);
    if (!m->txmode)
        return mig_record(m, f, "partial", start, ck, 0, 0, NULL, NULL);
    int rc = mig_begin(m);
    mig_now now;
    if (rc == PGPIPE_OK)
        rc = mig_reread(m, f, &now);
    if (rc == PGPIPE_OK && (!strcmp(now.status, "applied") || !strcmp(now.status, "baseline")) &&
        !strcmp(now.checksum, f->checksum)) {
        *skip = 1; /* (a baseline recorded it meanwhile: as mig_apply_tx) */
        pp_rollback_open(m->conn);
        return PGPIPE_OK;
    }
    /* a partial row of the same file is another runner's progress (the steps
    ** follow it), unless this run resolves the statement in doubt */
    int theirs = rc == PGPIPE_OK && !strcmp(now.status, "partial") &&
                 !strcmp(now.checksum, f->checksum) &&
                 !(e->in_doubt && now.started == e->in_doubt && (m->redo || m->resume_from));
    if (rc == PGPIPE_OK && !theirs)
        rc = mig_record(m, f, "partial", start, ck, 0, 0, NULL, NULL);
    if (rc == PGPIPE_OK)
        rc = mig_commit(m);
    if (rc != PGPIPE_OK)
        mig_rollback_if_needed(m);
    return rc;
}

/* Behind a transaction pooler, in a step's transaction: where the file
** stands now (*pos, or -1 when another runner finished it). A statement
** another runner started is waited for (up to the lock timeout), then
** reported as in doubt; *waited says the step's transaction was replaced
** by a new one meanwhile. */
static int mig_notx_position(pgpipe_migrator *m, const mig_file *f, int *pos, int *waited)
{
    *waited = 0;
    int64_t t0 = pgpipe_now_us();
    pgpipe_retry backoff;
    pgpipe_retry_init(&backoff, INT_MAX, 20, 320);
    for (;;) {
        mig_now now;
        int rc = mig_reread(m, f, &now);
        if (rc != PGPIPE_OK)
            return rc;
        if ((!strcmp(now.status, "applied") || !strcmp(now.status, "baseline")) &&
            !strcmp(now.checksum, f->checksum)) {
            *pos = -1; /* (or a baseline took over a row with nothing done) */
            return PGPIPE_OK;
        }
        if (strcmp(now.checksum, f->checksum) != 0)
            return pp_err_at(&m->hdr.err, PGPIPE_ERROR, f->file, 0, 0, 0,
                             "another runner applies a different version of this file "
                             "(sha256 %.16s... recorded)", now.checksum);
        if (!now.started) {
            *pos = now.done;
            return PGPIPE_OK;
        }
        int64_t ms = (pgpipe_now_us() - t0) / 1000;
        if (m->lock_timeout_ms < 0 || ms >= m->lock_timeout_ms)
            return mig_doubt_error(m, f, now.started, 1);
        pp_rollback_open(m->conn);
        *waited = 1;
        pgpipe_sleep_ms(pgpipe_retry_next_delay(&backoff));
        if ((rc = mig_begin(m)) != PGPIPE_OK)
            return rc;
    }
}

/* A no-transaction file's step, in the transaction just begun: with
** *pos == i go on with statement i. Behind a transaction pooler another
** runner may have moved the file on: then the transaction is rolled back and
** *pos says where to continue (-1: the file is finished). */
static int mig_notx_sync(pgpipe_migrator *m, const mig_file *f, int i, int *pos)
{
    *pos = i;
    if (!m->txmode)
        return PGPIPE_OK;
    int waited = 0;
    int rc = mig_notx_position(m, f, pos, &waited);
    if (rc == PGPIPE_OK && *pos != i)
        pp_rollback_open(m->conn);
    return rc;
}

/* One statement at a time. A statement commits with its progress record in
** a transaction of its own; one that cannot run in a transaction block
** (SQLSTATE 25001, or 2D000 for a procedure that commits) runs alone
** between a start and an end record. The file's own BEGIN ... COMMIT
** blocks run as written; the progress is recorded just before their
** COMMIT, inside them. */
static int mig_apply_notx(pgpipe_migrator *m, mig_entry *e, int start)
{
    mig_file *f = e->f;
    int64_t t0 = pgpipe_now_us();
    int skip = 0;
    int rc = mig_notx_begin(m, e, start, &skip);
    if (rc != PGPIPE_OK || skip) {
        if (skip)
            mig_entry_applied(e, 0);
        return rc;
    }
    e->info.state = PGPIPE_MIGRATION_PARTIAL;
    e->info.statements_done = start;
    e->info.statement_unknown = 0;
    int done = start, theirs = 0;
    for (int i = start; i < f->nstmts;) {
        const mig_stmt *st = &f->stmts[i];
        int tc = mig_tc_kind(st->sql);
        if (PQtransactionStatus(m->conn) != PQTRANS_IDLE || tc) {
            /* the file's own transaction control, or a statement inside it */
            int inside = tc == 2 && PQtransactionStatus(m->conn) == PQTRANS_INTRANS;
            if (inside && (rc = mig_record_progress(m, f, i + 1)) != PGPIPE_OK)
                break;
            if ((rc = mig_exec_stmt(m, f, i)) != PGPIPE_OK)
                break;
            if (tc == 1 && m->txmode && PQtransactionStatus(m->conn) == PQTRANS_INTRANS) {
                int pos = 0, waited = 0;
                rc = mig_lock(m, 1);
                if (rc == PGPIPE_OK)
                    rc = mig_notx_position(m, f, &pos, &waited);
                if (rc != PGPIPE_OK)
                    break;
                if (pos != i || waited) { /* follow another runner; or BEGIN again */
                    pp_rollback_open(m->conn);
                    if (pos < 0) {
                        theirs = 1;
                        break;
                    }
                    i = done = pos;
                    continue;
                }
            }
            i++;
            if (PQtransactionStatus(m->conn) == PQTRANS_IDLE) {
                if (!inside && (rc = mig_record_progress(m, f, i)) != PGPIPE_OK)
                    break;
                done = i;
                e->info.statements_done = done;
            }
            continue;
        }
        if ((rc = mig_begin(m)) != PGPIPE_OK)
            break;
        int pos;
        if ((rc = mig_notx_sync(m, f, i, &pos)) != PGPIPE_OK)
            break;
        if (pos != i) {
            if (pos < 0) {
                theirs = 1;
                break;
            }
            i = done = pos;
            continue;
        }
        rc = mig_exec_stmt(m, f, i);
        int alone = rc == PGPIPE_DB && (!strcmp(m->hdr.err.sqlstate, "25001") ||
                                        !strcmp(m->hdr.err.sqlstate, "2D000"));
        if (rc == PGPIPE_OK && PQtransactionStatus(m->conn) != PQTRANS_INTRANS)
            rc = pp_err_at(&m->hdr.err, PGPIPE_ERROR, f->file, st->line, st->column, 0,
                           "the statement ended the migration's transaction");
        if (rc == PGPIPE_OK) {
            rc = mig_record_progress(m, f, i + 1);
            if (rc == PGPIPE_OK)
                rc = mig_commit(m);
            if (rc != PGPIPE_OK)
                break;
        } else if (alone) {
            /* cannot run in a transaction block: start record, the statement, end record */
            pp_rollback_open(m->conn);
            pgpipe_error_clear(&m->hdr.err);
            if ((rc = mig_begin(m)) != PGPIPE_OK)
                break;
            if ((rc = mig_notx_sync(m, f, i, &pos)) != PGPIPE_OK)
                break;
            if (pos != i) {
                if (pos < 0) {
                    theirs = 1;
                    break;
                }
                i = done = pos;
                continue;
            }
            rc = mig_record_start(m, f, i + 1);
            if (rc == PGPIPE_OK)
                rc = mig_commit(m);
            if (rc != PGPIPE_OK)
                break;
            e->info.statement_unknown = i + 1;
            if ((rc = mig_exec_stmt(m, f, i)) != PGPIPE_OK)
                break;
            if (PQtransactionStatus(m->conn) != PQTRANS_IDLE) {
                rc = pp_err_at(&m->hdr.err, PGPIPE_ERROR, f->file, st->line, st->column, 0,
                               "the statement left a transaction open");
                break;
            }
            if ((rc = mig_record_progress(m, f, i + 1)) != PGPIPE_OK)
                break;
        } else {
            break;
        }
        i++;
        done = i;
        e->info.statements_done = done;
        e->info.statement_unknown = 0;
    }
    if (rc == PGPIPE_OK && theirs) {
        /* another runner finished it (or a baseline recorded it): its row stays */
        pp_logf(PGPIPE_LOG_INFO, "migrate", "%s: applied by another runner meanwhile", f->file);
        mig_entry_applied(e, 0);
        return PGPIPE_OK;
    }
    double ms = (double)(pgpipe_now_us() - t0) / 1000.0;
    if (rc == PGPIPE_OK && PQtransactionStatus(m->conn) != PQTRANS_IDLE)
        rc = pp_err_at(&m->hdr.err, PGPIPE_ERROR, f->file, 0, 0, 0,
                       "the file left a transaction open (BEGIN without COMMIT)");
    if (rc == PGPIPE_OK) {
        char ck[65];
        mig_progress_checksum(f, f->nstmts, ck);
        rc = mig_record(m, f, "applied", f->nstmts, ck, ms, 0, NULL, NULL);
        if (rc == PGPIPE_OK) {
            mig_entry_applied(e, 1);
            pp_logf(PGPIPE_LOG_INFO, "migrate",
                    "applied %s without a transaction (statements %d-%d of %d, %.1f ms)",
                    f->file, start + 1, f->nstmts, f->nstmts, ms);
        }
        return rc;
    }
    mig_rollback_if_needed(m);
    if (PQstatus(m->conn) != CONNECTION_OK)
        snprintf(e->action, sizeof e->action, "%s",
                 e->info.statement_unknown ? "stopped: the connection was lost during a "
                                             "statement run outside a transaction"
                                           : "resume (the connection was lost)");
    else if (!e->info.statement_unknown || m->hdr.err.code == PGPIPE_DB)
        mig_record_failure(m, f, "partial", done, ms);
    return rc;
}

/* 1 when a statement is a session-level SET or RESET (SET ROLE, SET
** search_path, SET SESSION AUTHORIZATION, RESET ...), not SET LOCAL, SET
** TRANSACTION or SET CONSTRAINTS, which end with their transaction. */
static int mig_is_session_set(const char *s)
{
    size_t n = 0;
    while (sqlsplit_is_ident_char((unsigned char)s[n]))
        n++;
    if (!sqlsplit_word_is(s, n, "set") && !sqlsplit_word_is(s, n, "reset"))
        return 0;
    const char *w = s + n;
    while (*w == ' ' || *w == '\t' || *w == '\n' || *w == '\r')
        w++;
    size_t k = 0;
    while (sqlsplit_is_ident_char((unsigned char)w[k]))
        k++;
    return !sqlsplit_word_is(w, k, "local") && !sqlsplit_word_is(w, k, "transaction") &&
           !sqlsplit_word_is(w, k, "constraints");
}

/* A no-transaction file resumed at statement start+1 runs on a fresh
** session: its earlier SET and RESET statements (a search_path, a role)
** run again first, so that the rest lands where it would have in one run. */
static int mig_replay_sets(pgpipe_migrator *m, const mig_file *f, int start)
{
    int rc = PGPIPE_OK;
    for (int k = 0; k < start && k < f->nstmts && rc == PGPIPE_OK; k++)
        if (mig_is_session_set(f->stmts[k].sql)) {
            rc = mig_exec_stmt(m, f, k);
            if (rc == PGPIPE_OK && PQtransactionStatus(m->conn) != PQTRANS_IDLE)
                pp_rollback_open(m->conn);
        }
    return rc;
}

static int mig_apply(pgpipe_migrator *m, mig_entry *e)
{
    mig_file *f = e->f;
    int rc = mig_parse_file(m, f);
    if (rc != PGPIPE_OK)
        return rc;
    int start = 0;
    rc = mig_resume_point(m, e, &start);
    if (rc != PGPIPE_OK)
        return rc;
    if (start > 0)
        pp_logf(PGPIPE_LOG_INFO, "migrate", "%s: resuming at statement %d of %d", f->file,
                start + 1, f->nstmts);
    if (start > 0 && !f->transactional && (rc = mig_replay_sets(m, f, start)) != PGPIPE_OK)
        return rc;
    return f->transactional ? mig_apply_tx(m, e) : mig_apply_notx(m, e, start);
}

/* Creates or upgrades the history table (behind a transaction pooler in a
** transaction under the transaction lock; the session lock covers it
** otherwise). */
static int mig_create_step(pgpipe_migrator *m)
{
    int rc = m->txmode ? mig_begin(m) : PGPIPE_OK;
    if (rc == PGPIPE_OK)
        rc = mig_create_table(m);
    if (rc == PGPIPE_OK && m->txmode)
        rc = mig_commit(m);
    if (rc != PGPIPE_OK)
        pp_rollback_open(m->conn);
    return rc;
}

/* In the run's decision transaction (mig_run_locked). */
static int mig_write_repair(pgpipe_migrator *m, const mig_entry *e)
{
    const char *p[5] = { m->scope, e->f->version, e->f->checksum, e->f->file, e->f->name };
    pp_buf q = { NULL, 0, 0 };
    if (pp_buf_appendf(&q, "UPDATE %s SET checksum = $3, checksum_algorithm = 'sha256', "
                           "file = $4, name = $5 WHERE scope = $1 AND kind = 'V' AND version = "
                           "$2::numeric", m->tbl) != PGPIPE_OK)
        return pp_err_nomem(&m->hdr.err);
    int rc = mig_exec_ok(m, q.data, 5, p, "cannot repair the recorded checksum");
    pp_buf_free(&q);
    if (rc == PGPIPE_OK)
        pp_logf(PGPIPE_LOG_WARN, "migrate", "%s: repaired: recorded its name and checksum %s "
                "(was %s, %s)", e->f->file, e->f->checksum, e->r->file, e->r->checksum);
    return rc;
}

static int mig_write_baseline(pgpipe_migrator *m, const mig_entry *e)
{
    const char *p[5] = { m->scope, e->info.version, e->f ? e->f->name : "baseline",
                         e->f ? e->f->file : "", e->f ? e->f->checksum : "" };
    pp_buf q = { NULL, 0, 0 };
    /* ON CONFLICT: the row of a failed attempt that left nothing behind
    ** becomes the baseline row; any other row stays (a concurrent runner
    ** behind a transaction pooler recorded it) */
    if (pp_buf_appendf(&q, "INSERT INTO %s AS h (scope, kind, version, name, file, checksum, "
                           "status, statements_total) VALUES ($1, 'V', $2::numeric, $3, "
                           "$4, $5, 'baseline', 0) ON CONFLICT (scope, version) "
                           "WHERE kind = 'V' DO UPDATE SET name = EXCLUDED.name, "
                           "file = EXCLUDED.file, checksum = EXCLUDED.checksum, "
                           "checksum_algorithm = 'sha256', status = 'baseline', "
                           "transactional = true, statements_done = 0, statements_total = 0, "
                           "progress_checksum = NULL, statement_started = NULL, "
                           "applied_at = now(), execution_ms = 0, applied_by = current_user, "
                           "client_host = NULL, client_app = current_setting('application_name'), "
                           "error_line = NULL, error_message = NULL, error_sqlstate = NULL "
                           "WHERE h.status = 'failed' OR (h.status = 'partial' AND "
                           "h.statements_done = 0 AND COALESCE(h.statement_started, 0) = 0)",
                       m->tbl) != PGPIPE_OK)
        return pp_err_nomem(&m->hdr.err);
    int rc = mig_exec_ok(m, q.data, 5, p, "cannot record the baseline");
    pp_buf_free(&q);
    return rc;
}

/* A statement in doubt stops the run before anything runs, unless resume_from
** or redo settles it. Behind a transaction pooler it may be another live
** runner's: the file's steps wait for it (see mig_notx_position). */
static int mig_check_doubt(pgpipe_migrator *m)
{
    mig_entry *doubt = NULL;
    for (int i = 0; i < m->nentries && !doubt; i++)
        if (m->entries[i].in_doubt && m->entries[i].f)
            doubt = &m->entries[i];
    const char *opt = m->redo ? "--redo" : "--resume-from";
    int n = m->redo ? m->redo : m->resume_from;
    if (!doubt) {
        if (n)
            return pp_err(&m->hdr.err, PGPIPE_MISUSE,
                          "%s %d: no statement's outcome is unknown, so there is nothing to "
                          "settle", opt, n);
        return PGPIPE_OK;
    }
    int rc = mig_parse_file(m, doubt->f);
    if (rc != PGPIPE_OK)
        return rc;
    int k = doubt->in_doubt;
    if (m->redo && m->redo != k)
        return pp_err_at(&m->hdr.err, PGPIPE_MISUSE, doubt->f->file, 0, 0, 0,
                         "--redo %d: the statement whose outcome is unknown is statement %d",
                         m->redo, k);
    if (m->resume_from && m->resume_from <= k)
        return pp_err_at(&m->hdr.err, PGPIPE_MISUSE, doubt->f->file, 0, 0, 0,
                         "--resume-from %d: statement %d's outcome is unknown; resume after "
                         "it (--resume-from %d or later), or run it again with --redo %d",
                         m->resume_from, k, k + 1, k);
    if (n || doubt->info.will_run)
        return PGPIPE_OK;
    if (m->txmode) {
        doubt->info.will_run = 1;
        return PGPIPE_OK;
    }
    return mig_doubt_error(m, doubt->f, k, 0);
}

/* The session's own settings (SET, not defaults: pg_settings' source
** 'session') and its role, as JSON text for mig_session_restore. */
static int mig_session_save(pgpipe_migrator *m, char **out)
{
    PGresult *r = mig_exec(m, "SELECT jsonb_build_object('settings', coalesce((SELECT "
                              "jsonb_object_agg(name, setting) FROM pg_settings WHERE source = "
                              "'session'), '{}'), 'role', current_setting('role'), 'user', session_user)::text", 0, NULL,
                           "reading the session's settings");
    if (!r)
        return m->hdr.err.code;
    *out = pp_strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return *out ? PGPIPE_OK : pp_err_nomem(&m->hdr.err);
}

/* The session back as mig_session_save found it, after a file. */
static int mig_session_restore(pgpipe_migrator *m, const char *saved)
{
    if (PQtransactionStatus(m->conn) != PQTRANS_IDLE)
        return PGPIPE_OK; /* (a failed file's transaction: its rollback comes first) */
    /* RESET ALL leaves the role and the session authorization */
    const char *v[1] = { saved };
    int rc = mig_exec_ok(m, "SELECT CASE WHEN session_user <> ($1::jsonb->>'user') THEN "
                            "set_config('session_authorization', $1::jsonb->>'user', false) END",
                         1, v, "restoring the session's user after a migration");
    if (rc == PGPIPE_OK)
        rc = mig_exec_ok(m, "RESET ALL", 0, NULL, "resetting the session after a migration");
    if (rc == PGPIPE_OK)
        rc = mig_exec_ok(m, "SELECT count(set_config(key, value, false)), "
                            "set_config('role', $1::jsonb->>'role', false) "
                            "FROM jsonb_each_text($1::jsonb->'settings')", 1, v,
                         "restoring the session's settings after a migration");
    return rc;
}

/* The checks on the entries before anything runs. */
static int mig_check_entries(pgpipe_migrator *m)
{
    if (m->bl_refused)
        return pp_err(&m->hdr.err, PGPIPE_ERROR, "%s", m->bl_msg);
    int nchanged = 0, rc;
    for (int i = 0; i < m->nentries; i++) {
        mig_entry *e = &m->entries[i];
        if (e->info.state == PGPIPE_MIGRATION_CHANGED && !e->do_repair)
            nchanged++;
    }
    for (int i = 0; i < m->nentries; i++) {
        mig_entry *e = &m->entries[i];
        const char *fn = e->info.file ? e->info.file : e->info.name;
        if (e->info.state == PGPIPE_MIGRATION_CHANGED && !e->do_repair)
            return pp_err_at(&m->hdr.err, PGPIPE_ERROR, fn, 0, 0, 0,
                             "applied migration changed on disk (sha256 %.16s... recorded, "
                             "%.16s... now)%s; restore the file, or run with repair to accept "
                             "it", e->info.recorded_checksum, e->info.checksum,
                             nchanged > 1 ? " (and other files changed too)" : "");
        if (e->out_of_order && !(m->flags & PGPIPE_MIGRATE_OUT_OF_ORDER))
            return pp_err_at(&m->hdr.err, PGPIPE_ERROR, fn, 0, 0, 0,
                             "version %s is pending but a higher version is already "
                             "applied; renumber it, or allow out-of-order migrations",
                             e->info.version);
        if (e->info.state == PGPIPE_MIGRATION_MISSING && (m->flags & PGPIPE_MIGRATE_DENY_MISSING))
            return pp_err_at(&m->hdr.err, PGPIPE_ERROR, e->r->file, 0, 0, 0,
                             "applied migration is missing on disk");
        if (e->info.state == PGPIPE_MIGRATION_MISSING)
            pp_logf(PGPIPE_LOG_WARN, "migrate", "%s: applied migration is missing on disk",
                    e->r->file);
    }
    if ((rc = mig_check_doubt(m)) != PGPIPE_OK)
        return rc;
    /* every file that will run must split cleanly before the first one runs */
    for (int i = 0; i < m->nentries; i++) {
        mig_entry *e = &m->entries[i];
        if (!e->info.will_run || !e->f)
            continue;
        int start = 0;
        rc = mig_parse_file(m, e->f);
        if (rc == PGPIPE_OK)
            rc = mig_resume_point(m, e, &start);
        if (rc != PGPIPE_OK)
            return rc;
        e->info.statements_total = e->f->nstmts;
    }
    return PGPIPE_OK;
}

static int mig_run_locked(pgpipe_migrator *m, int dry)
{
    int rc = PGPIPE_OK;
    if (!dry)
        rc = mig_create_step(m);
    if (rc == PGPIPE_OK)
        rc = mig_load_files(m);
    /* the history is read, judged (the baseline's rule, drift) and the
    ** baselines and repairs written in one transaction under the lock (behind
    ** a transaction pooler its transaction lock): no other runner writes
    ** between the decision and the writes */
    if (rc == PGPIPE_OK && !dry) /* (each read sees what committed before it) */
        rc = mig_begin_as(m, PP_BEGIN);
    if (rc == PGPIPE_OK)
        rc = mig_load_history(m);
    if (rc == PGPIPE_OK)
        rc = mig_build_entries(m);
    if (rc == PGPIPE_OK)
        rc = mig_check_entries(m);
    for (int i = 0; rc == PGPIPE_OK && !dry && i < m->nentries; i++) {
        mig_entry *e = &m->entries[i];
        if (e->do_repair)
            rc = mig_write_repair(m, e);
        else if (e->do_baseline)
            rc = mig_write_baseline(m, e);
    }
    if (rc == PGPIPE_OK && !dry)
        rc = mig_commit(m);
    if (rc != PGPIPE_OK)
        pp_rollback_open(m->conn);
    if (rc != PGPIPE_OK || dry)
        return rc;
    /* every file starts from the session as the run found it: a file's SET
    ** (search_path, a role) would otherwise reach the files after it only
    ** when they run in the same run, and the caller's session after it */
    char *sess = NULL;
    for (int i = 0; i < m->nentries; i++) {
        mig_entry *e = &m->entries[i];
        if (!e->info.will_run || !e->f)
            continue;
        if (!sess && (rc = mig_session_save(m, &sess)) != PGPIPE_OK)
            return rc;
        m->sess = sess;
        rc = mig_apply(m, e);
        if (rc != PGPIPE_OK) {
            m->lost_at = i + 1;
            if (PQstatus(m->conn) == CONNECTION_OK) {
                pgpipe_error keep = m->hdr.err;
                mig_session_restore(m, sess);
                m->hdr.err = keep;
            }
            m->sess = NULL;
            pp_free(sess);
            return rc;
        }
        if ((rc = mig_session_restore(m, sess)) != PGPIPE_OK) {
            m->sess = NULL;
            pp_free(sess);
            return rc;
        }
    }
    m->sess = NULL;
    pp_free(sess);
    return PGPIPE_OK;
}

/* Reads the files and the history without a lock: *busy = 0 when there is
** nothing to do (every file applied and unchanged), so a caller such as the
** loader's schema install never waits on a migration that runs meanwhile.
** The entries are then the run's. A history table without
** statement_started is not work by itself: a run that has work adds it, so a
** loader's role without rights on the table keeps loading. */
static int mig_has_work(pgpipe_migrator *m, int *busy)
{
    *busy = 1;
    if (m->flags & (PGPIPE_MIGRATE_REPAIR | PGPIPE_MIGRATE_OUT_OF_ORDER) || m->baseline ||
        m->resume_from || m->redo)
        return PGPIPE_OK;
    int exists = 0;
    int rc = mig_table_exists(m, &exists);
    if (rc != PGPIPE_OK || !exists)
        return rc;
    rc = mig_load_files(m);
    if (rc == PGPIPE_OK)
        rc = mig_load_history(m);
    if (rc == PGPIPE_OK)
        rc = mig_build_entries(m);
    if (rc != PGPIPE_OK)
        return rc;
    for (int i = 0; i < m->nentries; i++) {
        const mig_entry *e = &m->entries[i];
        int st = e->info.state;
        if (e->info.will_run || e->do_baseline || e->do_repair ||
            (st != PGPIPE_MIGRATION_APPLIED && st != PGPIPE_MIGRATION_BASELINE &&
             st != PGPIPE_MIGRATION_IGNORED && st != PGPIPE_MIGRATION_MISSING &&
             !(st == PGPIPE_MIGRATION_FAILED && !e->f)) ||
            (st == PGPIPE_MIGRATION_MISSING && (m->flags & PGPIPE_MIGRATE_DENY_MISSING)))
            return PGPIPE_OK;
    }
    for (int i = 0; i < m->nentries; i++)
        if (m->entries[i].info.state == PGPIPE_MIGRATION_MISSING)
            pp_logf(PGPIPE_LOG_WARN, "migrate", "%s: applied migration is missing on disk",
                    m->entries[i].r->file);
    *busy = 0;
    return PGPIPE_OK;
}

/* A migrator whose open failed refuses run and status (PGPIPE_MISUSE, not a
** database error: the connection may be NULL or the options half-read). */
static int mig_refuse_unopened(pgpipe_migrator *m)
{
    return pp_err(&m->hdr.err, PGPIPE_MISUSE, "the migrator did not open: %s", m->open_msg);
}

int pgpipe_migrate_run(pgpipe_migrator *m)
{
    if (!m)
        return PGPIPE_MISUSE;
    if (!m->opened)
        return mig_refuse_unopened(m);
    pgpipe_error_clear(&m->hdr.err);
    if (PQstatus(m->conn) != CONNECTION_OK)
        return pp_err_pq(&m->hdr.err, m->conn, NULL, "the migration connection is not usable");
    if (PQtransactionStatus(m->conn) != PQTRANS_IDLE)
        return pp_err(&m->hdr.err, PGPIPE_MISUSE,
                      "the connection is inside a transaction; migrations need an idle one");
    int dry = (m->flags & PGPIPE_MIGRATE_DRY_RUN) != 0;
    int rc = PGPIPE_OK;
    m->lost_at = 0;
    m->txmode = 0;
    if (!dry) {
        int busy = 1;
        rc = mig_has_work(m, &busy);
        if (rc != PGPIPE_OK || !busy)
            return rc;
        int mode = pgpipe_pooler_mode(m->conn, m->pooler, &m->hdr.err);
        if (mode < 0)
            return m->hdr.err.code ? m->hdr.err.code : PGPIPE_ERROR;
        m->txmode = mode == PGPIPE_POOLER_TRANSACTION;
        if (!m->txmode)
            rc = mig_lock(m, 0);
    }
    if (rc != PGPIPE_OK)
        return rc;
    rc = mig_run_locked(m, dry);
    if (!dry && PQstatus(m->conn) != CONNECTION_OK) {
        /* the history cannot be read again: the entries are what this run
        ** saw commit (mig_apply_tx, mig_apply_notx) */
        m->locked = 0;
        return rc;
    }
    /* the entries show the state after the run (keeping the run's error) */
    if (!dry && PQstatus(m->conn) == CONNECTION_OK) {
        pgpipe_error keep = m->hdr.err;
        unsigned flags = m->flags;
        char *bl = m->baseline;
        int resume_from = m->resume_from, redo = m->redo;
        m->flags &= ~PGPIPE_MIGRATE_REPAIR;
        m->baseline = NULL;
        m->resume_from = m->redo = 0;
        if (mig_load_history(m) == PGPIPE_OK) /* (the files stay: their ran flags) */
            mig_build_entries(m);
        m->flags = flags;
        m->baseline = bl;
        m->resume_from = resume_from;
        m->redo = redo;
        m->hdr.err = keep;
    }
    mig_rollback_if_needed(m);
    mig_unlock(m);
    return rc;
}

/* ---- Open and close --------------------------------------------------- */

static int mig_open(pgpipe_migrator *m, PGconn *conn, const pgpipe_migrate_options *opt);

int pgpipe_migrator_open(pgpipe_migrator **out, PGconn *conn, const pgpipe_migrate_options *opt)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_migrator *m = *out = pp_handle_new(sizeof *m);
    if (!m)
        return PGPIPE_NOMEM;
    int rc = mig_open(m, conn, opt);
    if (rc == PGPIPE_OK)
        m->opened = 1;
    else
        snprintf(m->open_msg, sizeof m->open_msg, "%.500s",
                 m->hdr.err.message[0] ? m->hdr.err.message : pgpipe_errstr(rc));
    return rc;
}

static int mig_open(pgpipe_migrator *m, PGconn *conn, const pgpipe_migrate_options *opt)
{
    m->conn = conn;
    pgpipe_migrate_options o;
    pgpipe_migrate_options_init(&o);
    if (opt)
        o = *opt;
    if (!conn)
        return pp_err(&m->hdr.err, PGPIPE_MISUSE, "no connection given to the migration runner");
    if (!o.dir && !o.embedded)
        return pp_err(&m->hdr.err, PGPIPE_MISUSE,
                      "no migrations: set the options' dir (or embedded)");
    const char *tbl = o.history_table && *o.history_table ? o.history_table : "pgpipe.migrations";
    const char *dot = strchr(tbl, '.');
    if (strpbrk(tbl, "'\"\\") || (dot && (dot == tbl || !dot[1] || strchr(dot + 1, '.'))))
        return pp_err(&m->hdr.err, PGPIPE_MISUSE,
                      "history table \"%s\": expected schema.table (no quotes)", tbl);
    m->tbl_schema = dot ? pp_strndup(tbl, (size_t)(dot - tbl)) : pp_strdup("pgpipe");
    m->tbl_name = pp_strdup(dot ? dot + 1 : tbl);
    m->dir = o.dir ? pp_strdup(o.dir) : NULL;
    m->embedded = o.dir ? NULL : pp_strdup(o.embedded);
    m->scope = pp_strdup(o.scope && *o.scope ? o.scope : o.dir ? "default" : o.embedded);
    if (!m->tbl_schema || !m->tbl_name || (o.dir && !m->dir) || (!o.dir && !m->embedded) ||
        !m->scope)
        return pp_err_nomem(&m->hdr.err);
    while (m->embedded && *m->embedded && m->embedded[strlen(m->embedded) - 1] == '/')
        m->embedded[strlen(m->embedded) - 1] = '\0';
    pp_buf b = { NULL, 0, 0 };
    if (pp_quote_ident(&b, m->tbl_schema, strlen(m->tbl_schema)) != PGPIPE_OK ||
        pp_buf_putc(&b, '.') != PGPIPE_OK ||
        pp_quote_ident(&b, m->tbl_name, strlen(m->tbl_name)) != PGPIPE_OK ||
        pp_buf_putc(&b, '\0') != PGPIPE_OK) {
        pp_buf_free(&b);
        return pp_err_nomem(&m->hdr.err);
    }
    m->tbl = b.data;
    m->lock_timeout_ms = o.lock_timeout_ms == 0 ? 30000 : o.lock_timeout_ms;
    m->lock_key = o.lock_key ? o.lock_key : PGPIPE_MIGRATE_LOCK_KEY;
    snprintf(m->lock_key_s, sizeof m->lock_key_s, "%lld", m->lock_key);
    m->flags = o.flags;
    if (o.pooler != PGPIPE_POOLER_AUTO && o.pooler != PGPIPE_POOLER_SESSION &&
        o.pooler != PGPIPE_POOLER_TRANSACTION)
        return pp_err(&m->hdr.err, PGPIPE_MISUSE, "pooler %d is not one of PGPIPE_POOLER_AUTO, "
                      "PGPIPE_POOLER_SESSION, PGPIPE_POOLER_TRANSACTION", o.pooler);
    m->pooler = o.pooler;
    if (o.resume_from < 0 || o.redo < 0 || (o.resume_from && o.redo))
        return pp_err(&m->hdr.err, PGPIPE_MISUSE,
                      "resume_from and redo: a statement number (1 or more), not both");
    m->resume_from = o.resume_from;
    m->redo = o.redo;
    if (o.baseline_version && *o.baseline_version) {
        size_t n = strlen(o.baseline_version);
        if (strspn(o.baseline_version, "0123456789") != n)
            return pp_err(&m->hdr.err, PGPIPE_MISUSE,
                          "baseline version \"%s\" is not a number", o.baseline_version);
        m->baseline = mig_vnorm(o.baseline_version, n);
        if (!m->baseline)
            return pp_err_nomem(&m->hdr.err);
    }
    if (o.target_version && *o.target_version) {
        size_t n = strlen(o.target_version);
        if (strspn(o.target_version, "0123456789") != n)
            return pp_err(&m->hdr.err, PGPIPE_MISUSE,
                          "target version \"%s\" is not a number", o.target_version);
        m->target = mig_vnorm(o.target_version, n);
        if (!m->target)
            return pp_err_nomem(&m->hdr.err);
    }
    /* the versions between would be recorded as applied by the baseline
    ** while the target says they stay pending */
    if (m->baseline && m->target && mig_vcmp(m->baseline, m->target) > 0)
        return pp_err(&m->hdr.err, PGPIPE_MISUSE,
                      "baseline version %s is above the target version %s: the versions "
                      "between would be recorded as applied though the target leaves them "
                      "pending; use a baseline at or below the target", m->baseline, m->target);
    return PGPIPE_OK;
}

void pgpipe_migrator_close(pgpipe_migrator *m)
{
    if (!m)
        return;
    mig_unlock(m);
    mig_files_free(m);
    mig_rows_free(m);
    pp_free(m->dir);
    pp_free(m->embedded);
    pp_free(m->scope);
    pp_free(m->baseline);
    pp_free(m->target);
    pp_free(m->tbl);
    pp_free(m->tbl_schema);
    pp_free(m->tbl_name);
    pp_free(m);
}
