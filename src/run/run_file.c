/*
** The pipeline file (format and checks: run_file.h). One pass reads the
** lines: SQL is gathered until the statement splitter says it is complete,
** a line starting with '.' between statements is a dot command or a
** directive. Checks that need the whole file (names, --after, cycles,
** tables) run after it. Every problem becomes a diagnostic; reading goes on.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN

#include <dirent.h>
#include <fnmatch.h>

#define RF_MAXW 64

typedef struct rf_word {
    char *s;     /* unquoted text (owned by the line's scratch) */
    int col;     /* 1-based column of the word */
    int vcol;    /* column of its first character of content */
} rf_word;

typedef struct rf_ref {
    char *name;
    int line, col;
} rf_ref;

struct pgpipe_pipefile {
    pp_handle h;
    pgpipe_pipe_def p;
    char *path, *dir;
    char **mem;                       /* everything the tree points to */
    size_t nmem, cmem;
    pgpipe_pipe_diag *diag;
    int ndiag, cdiag;
    pgpipe_pipe_step *setup;
    int csetup;
    pgpipe_pipe_source *src;
    int csrc;
    pgpipe_pipe_workers *wk;
    int cwk;
    pgpipe_pipe_schedule *sch;
    int csch;
    pgpipe_pipe_task *task;
    int ctask;
    pgpipe_pipe_alert *alert;
    int calert;
    /* the block being read: its steps go to *steps */
    pgpipe_pipe_step **blk_steps;
    int *blk_n, blk_cap, blk_line;
    const char *blk_kind;
    int history_line;
    int pipeline_line;   /* the first .pipeline, 0 none */
    int install_example;
    char **tables;                    /* created by the file (lower case) */
    int ntables, ctables;
    rf_ref *refs;                     /* tables named by the file */
    int nrefs, crefs;
    int nomem;
};

/* ---- memory and diagnostics -------------------------------------------- */

static void *rf_keep(pgpipe_pipefile *pf, void *p)
{
    if (!p) {
        pf->nomem = 1;
        return NULL;
    }
    if (pf->nmem == pf->cmem) {
        size_t c = pf->cmem ? pf->cmem * 2 : 64;
        char **m = pp_realloc(pf->mem, c * sizeof *m);
        if (!m) {
            pf->nomem = 1;
            pp_free(p);
            return NULL;
        }
        pf->mem = m;
        pf->cmem = c;
    }
    pf->mem[pf->nmem++] = p;
    return p;
}

static char *rf_str(pgpipe_pipefile *pf, const char *s)
{
    return s ? rf_keep(pf, pp_strdup(s)) : NULL;
}

/* grow *arr (of elem bytes, *cap slots) to hold n + 1 */
static int rf_grow(pgpipe_pipefile *pf, void **arr, int n, int *cap, size_t elem)
{
    if (n < *cap)
        return 1;
    int c = *cap ? *cap * 2 : 8;
    void *a = pp_realloc(*arr, (size_t)c * elem);
    if (!a) {
        pf->nomem = 1;
        return 0;
    }
    memset((char *)a + (size_t)*cap * elem, 0, (size_t)(c - *cap) * elem);
    *arr = a;
    *cap = c;
    return 1;
}

static void rf_diag(pgpipe_pipefile *pf, int line, int col, const char *fmt, ...) PP_PRINTF(4, 5);
static void rf_diag(pgpipe_pipefile *pf, int line, int col, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!rf_grow(pf, (void **)&pf->diag, pf->ndiag, &pf->cdiag, sizeof *pf->diag))
        return;
    pgpipe_pipe_diag *d = &pf->diag[pf->ndiag];
    d->file = pf->path;
    d->line = line;
    d->column = col;
    d->message = rf_str(pf, msg);
    pf->ndiag++;
}

/* ---- did you mean ------------------------------------------------------- */

static int rf_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 40 || lb > 40)
        return 99;
    int row[41];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int prev = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int cur = row[j];
            int sub = prev + (tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]));
            int best = row[j] + 1 < row[j - 1] + 1 ? row[j] + 1 : row[j - 1] + 1;
            row[j] = sub < best ? sub : best;
            prev = cur;
        }
    }
    return row[lb];
}

/* " (did you mean PREFIXname?)" for the closest of names, or "" */
static const char *rf_suggest(char *buf, size_t cap, const char *word, const char *prefix,
                              const char *const *names)
{
    const char *best = NULL;
    int bd = 99;
    for (int i = 0; names[i]; i++) {
        int d = rf_distance(word, names[i]);
        if (d < bd) {
            bd = d;
            best = names[i];
        }
    }
    int len = (int)strlen(word);
    if (best && bd <= 2 && bd <= (len + 1) / 2)
        snprintf(buf, cap, " (did you mean %s%s?)", prefix, best);
    else
        buf[0] = 0;
    return buf;
}

/* ---- words and options ------------------------------------------------- */

/* Cut a dot command line into words (quotes '...' and "..." with \" and
** \\ inside double quotes). out[i].s point into scratch (cap >= strlen+1). */
static int rf_words(pgpipe_pipefile *pf, int lineno, const char *line, char *scratch, rf_word *out,
                    int max)
{
    int n = 0;
    const char *p = line;
    char *w = scratch;
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        if (n == max) {
            rf_diag(pf, lineno, (int)(p - line) + 1, "too many words on one line (at most %d)", max);
            return -1;
        }
        out[n].s = w;
        out[n].col = (int)(p - line) + 1;
        out[n].vcol = out[n].col;
        int first = 1;
        while (*p && *p != ' ' && *p != '\t') {
            if (*p == '\'' || *p == '"') {
                char q = *p++;
                const char *start = p - 1;
                if (first)
                    out[n].vcol = (int)(p - line) + 1;
                while (*p && *p != q) {
                    if (q == '"' && *p == '\\' && (p[1] == '"' || p[1] == '\\'))
                        p++;
                    *w++ = *p++;
                }
                if (!*p) {
                    rf_diag(pf, lineno, (int)(start - line) + 1, "unterminated quote %c", q);
                    return -1;
                }
                p++;
            } else {
                *w++ = *p++;
            }
            first = 0;
        }
        *w++ = 0;
        n++;
    }
    return n;
}

typedef struct rf_opt {
    const char *name;   /* "--batch" */
    int flag;           /* takes no value */
} rf_opt;

typedef struct rf_opts {
    const char *val[24];
    int col[24];        /* where the value starts (the option's column for flags) */
    int given[24];
    const char *pos[8]; /* the positional words */
    int poscol[8];
    int npos;
} rf_opts;

/* Sort the words after the directive into options of spec (NULL-name ended)
** and positional words; 0 when a problem was reported. */
static int rf_parse_opts(pgpipe_pipefile *pf, int line, const char *cmd, rf_word *w, int nw,
                         const rf_opt *spec, rf_opts *o)
{
    memset(o, 0, sizeof *o);
    int ok = 1;
    for (int i = 1; i < nw; i++) {
        const char *a = w[i].s;
        if (strncmp(a, "--", 2) != 0) {
            if (o->npos < 8) {
                o->pos[o->npos] = a;
                o->poscol[o->npos++] = w[i].vcol;
            }
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        int k = -1;
        for (int j = 0; spec[j].name; j++)
            if (strlen(spec[j].name) == nlen && !strncmp(spec[j].name, a, nlen))
                k = j;
        if (k < 0) {
            char name[64], sug[96];
            snprintf(name, sizeof name, "%.*s", (int)(nlen < 60 ? nlen : 60), a);
            const char *names[25];
            int m = 0;
            for (int j = 0; spec[j].name && m < 24; j++)
                names[m++] = spec[j].name + 2;
            names[m] = NULL;
            rf_suggest(sug, sizeof sug, name + 2, "--", names);
            rf_diag(pf, line, w[i].col, "%s: unknown option %s%s", cmd, name, sug);
            ok = 0;
            if (!eq && i + 1 < nw && strncmp(w[i + 1].s, "--", 2) != 0)
                i++; /* its value, most likely */
            continue;
        }
        if (o->given[k]) {
            rf_diag(pf, line, w[i].col, "%s: %s given twice", cmd, spec[k].name);
            ok = 0;
        }
        o->given[k] = 1;
        if (spec[k].flag) {
            if (eq) {
                rf_diag(pf, line, w[i].col, "%s: %s takes no value", cmd, spec[k].name);
                ok = 0;
            }
            o->val[k] = "";
            o->col[k] = w[i].col;
        } else if (eq) {
            o->val[k] = eq + 1;
            o->col[k] = w[i].vcol == w[i].col ? w[i].col + (int)nlen + 1 : w[i].vcol;
        } else if (i + 1 < nw) {
            o->val[k] = w[++i].s;
            o->col[k] = w[i].vcol;
        } else {
            rf_diag(pf, line, w[i].col, "%s: %s needs a value", cmd, spec[k].name);
            o->given[k] = 0;
            ok = 0;
        }
        /* '' (an unset variable in a generated file) is never the default */
        if (!spec[k].flag && o->given[k] && !o->val[k][0]) {
            rf_diag(pf, line, o->col[k], "%s: %s is empty (leave the option out for its default)",
                    cmd, spec[k].name);
            o->given[k] = 0;
            ok = 0;
        }
    }
    return ok;
}

/* index of option name in spec */
static int rf_k(const rf_opt *spec, const char *name)
{
    for (int j = 0; spec[j].name; j++)
        if (!strcmp(spec[j].name, name))
            return j;
    return -1;
}

typedef struct rf_ctx {
    pgpipe_pipefile *pf;
    int line;
    const char *cmd;
    const rf_opt *spec;
    rf_opts *o;
} rf_ctx;

static const char *rf_get(rf_ctx *c, const char *name)
{
    int k = rf_k(c->spec, name);
    return k >= 0 && c->o->given[k] ? c->o->val[k] : NULL;
}

static int rf_col(rf_ctx *c, const char *name)
{
    int k = rf_k(c->spec, name);
    return k >= 0 ? c->o->col[k] : 0;
}

static int64_t rf_dur(rf_ctx *c, const char *name, int64_t dflt)
{
    const char *v = rf_get(c, name);
    if (!v)
        return dflt;
    int64_t ms = run_duration_ms(v);
    if (ms < 0) {
        rf_diag(c->pf, c->line, rf_col(c, name),
                "%s: %s: expected a duration like 30s, 5m, 2h, 1d or 1h30m, got \"%s\"", c->cmd, name, v);
        return dflt;
    }
    return ms;
}

static int64_t rf_num(rf_ctx *c, const char *name, int64_t lo, int64_t hi, int64_t dflt)
{
    const char *v = rf_get(c, name);
    if (!v)
        return dflt;
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || errno || n < lo || n > hi) {
        rf_diag(c->pf, c->line, rf_col(c, name), "%s: %s: expected a whole number from %lld to %lld, got \"%s\"",
                c->cmd, name, (long long)lo, (long long)hi, v);
        return dflt;
    }
    return n;
}

/* index of the value among choices ("a|b|c"), dflt when not given */
static int rf_choice(rf_ctx *c, const char *name, const char *choices, int dflt)
{
    const char *v = rf_get(c, name);
    if (!v)
        return dflt;
    const char *p = choices;
    for (int i = 0;; i++) {
        const char *e = strchr(p, '|');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (strlen(v) == n && !strncmp(v, p, n))
            return i;
        if (!e)
            break;
        p = e + 1;
    }
    rf_diag(c->pf, c->line, rf_col(c, name), "%s: %s: expected %s, got \"%s\"", c->cmd, name, choices, v);
    return dflt;
}

/* a path of the file, resolved against its folder (owned by pf) */
static char *rf_path(pgpipe_pipefile *pf, const char *p)
{
    if (!p)
        return NULL;
    if (p[0] == '/' || !pf->dir[0])
        return rf_str(pf, p);
    size_t n = strlen(pf->dir) + strlen(p) + 2;
    char *s = pp_malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", pf->dir, p);
    return rf_keep(pf, s);
}

/* 1 when path is a readable regular file (want_dir: a readable folder);
** else reports what is wrong at line:col */
static int rf_check_file(pgpipe_pipefile *pf, int line, int col, const char *what, const char *shown,
                         const char *path, int want_dir)
{
    struct stat st;
    if (!path)
        return 0;
    if (stat(path, &st) != 0) {
        rf_diag(pf, line, col, "%s %s does not exist", what, shown);
        return 0;
    }
    if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
        rf_diag(pf, line, col, "%s %s is not a %s", what, shown, want_dir ? "folder" : "regular file");
        return 0;
    }
    if (access(path, want_dir ? R_OK | X_OK : R_OK) != 0) {
        rf_diag(pf, line, col, "%s %s is not readable", what, shown);
        return 0;
    }
    return 1;
}

static void rf_table_ref(pgpipe_pipefile *pf, const char *name, int line, int col)
{
    if (!name || !rf_grow(pf, (void **)&pf->refs, pf->nrefs, &pf->crefs, sizeof *pf->refs))
        return;
    pf->refs[pf->nrefs].name = rf_str(pf, name);
    pf->refs[pf->nrefs].line = line;
    pf->refs[pf->nrefs++].col = col;
}

/* ---- tables created by SQL ---------------------------------------------- */

static const char *rf_skipws(const char *p, const char *e)
{
    for (;;) {
        while (p < e && isspace((unsigned char)*p))
            p++;
        if (p + 1 < e && p[0] == '-' && p[1] == '-') {
            while (p < e && *p != '\n')
                p++;
            continue;
        }
        return p;
    }
}

/* the next word of [p, e) if it is kw (case-insensitive), else NULL */
static const char *rf_kw(const char *p, const char *e, const char *kw)
{
    p = rf_skipws(p, e);
    size_t n = strlen(kw);
    if ((size_t)(e - p) < n || strncasecmp(p, kw, n) != 0)
        return NULL;
    if (p + n < e && (isalnum((unsigned char)p[n]) || p[n] == '_'))
        return NULL;
    return p + n;
}

/* an identifier, unquoted ones folded to lower case; NULL if none */
static const char *rf_ident(const char *p, const char *e, char *out, size_t cap, size_t *len)
{
    if (p < e && *p == '"') {
        p++;
        while (p < e && *p != '"') {
            if (*len + 1 < cap)
                out[(*len)++] = *p;
            p++;
        }
        return p < e ? p + 1 : NULL;
    }
    if (p >= e || !(isalpha((unsigned char)*p) || *p == '_'))
        return NULL;
    while (p < e && (isalnum((unsigned char)*p) || *p == '_' || *p == '$')) {
        if (*len + 1 < cap)
            out[(*len)++] = (char)tolower((unsigned char)*p);
        p++;
    }
    return p;
}

/* CREATE [OR REPLACE] [TEMP|TEMPORARY|UNLOGGED] [MATERIALIZED] TABLE|VIEW
** [IF NOT EXISTS] name: remember name */
static void rf_scan_create(pgpipe_pipefile *pf, const char *p, size_t n)
{
    const char *e = p + n, *q;
    if (!(p = rf_kw(p, e, "create")))
        return;
    if ((q = rf_kw(p, e, "or")) && (q = rf_kw(q, e, "replace")))
        p = q;
    if ((q = rf_kw(p, e, "temp")) || (q = rf_kw(p, e, "temporary")) || (q = rf_kw(p, e, "unlogged")))
        p = q;
    if ((q = rf_kw(p, e, "materialized")))
        p = q;
    if (!(q = rf_kw(p, e, "table")) && !(q = rf_kw(p, e, "view")))
        return;
    p = q;
    if ((q = rf_kw(p, e, "if")) && (q = rf_kw(q, e, "not")) && (q = rf_kw(q, e, "exists")))
        p = q;
    p = rf_skipws(p, e);
    char name[256];
    size_t len = 0;
    if (!(p = rf_ident(p, e, name, sizeof name, &len)))
        return;
    if (p < e && *p == '.') {
        name[len++] = '.';
        if (!rf_ident(p + 1, e, name, sizeof name, &len))
            return;
    }
    name[len] = 0;
    if (rf_grow(pf, (void **)&pf->tables, pf->ntables, &pf->ctables, sizeof *pf->tables))
        pf->tables[pf->ntables++] = rf_str(pf, name);
}

static void rf_scan_sql(pgpipe_pipefile *pf, const char *text, size_t len, const char *name)
{
    pgpipe_sql_split *s = NULL;
    if (pgpipe_sql_split_open(&s, text, len, name) != PGPIPE_OK) {
        pgpipe_sql_split_close(s);
        return;
    }
    pgpipe_sql_stmt st;
    while (pgpipe_sql_split_next(s, &st) == PGPIPE_ROW)
        rf_scan_create(pf, st.sql, st.len);
    pgpipe_sql_split_close(s);
}

static void rf_scan_sql_file(pgpipe_pipefile *pf, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    pp_buf b = { 0 };
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (pp_buf_append(&b, chunk, n) != PGPIPE_OK)
            break;
    fclose(f);
    rf_scan_sql(pf, b.data ? b.data : "", b.len, path);
    pp_buf_free(&b);
}

static void rf_scan_sql_dir(pgpipe_pipefile *pf, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t n = strlen(de->d_name);
        if (n < 5 || strcmp(de->d_name + n - 4, ".sql"))
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        rf_scan_sql_file(pf, path);
    }
    closedir(d);
}

/* the built-in schema (and the example) the amalgamation embeds */
static void rf_scan_builtin(pgpipe_pipefile *pf)
{
    for (const pp_sql_entry *e = pp_sql_files; e->path; e++) {
        if (strncmp(e->path, "schema/", 7) && !(pf->install_example && !strncmp(e->path, "example/", 8)))
            continue;
        pp_buf b = { 0 };
        for (const char *const *l = e->lines; *l; l++)
            pp_buf_append(&b, *l, strlen(*l));
        rf_scan_sql(pf, b.data ? b.data : "", b.len, e->path);
        pp_buf_free(&b);
    }
}

/* ---- directives --------------------------------------------------------- */

static const char *const rf_directives[] = { "pipeline", "source", "workers", "schedule", "task",
                                             "alert", "history", "end", NULL };
/* the shell's dot commands a pipeline may run */
static const char *const rf_dotcmds[] = { "install", "migrate", "load", "read", "refresh",
                                          "partitions", "dlq", "log", NULL };

static void rf_add_step(pgpipe_pipefile *pf, int kind, const char *text, size_t n, int line)
{
    pgpipe_pipe_step **arr = pf->blk_steps ? pf->blk_steps : &pf->setup;
    int *cnt = pf->blk_steps ? pf->blk_n : &pf->p.nsetup;
    int *cap = pf->blk_steps ? &pf->blk_cap : &pf->csetup;
    if (!rf_grow(pf, (void **)arr, *cnt, cap, sizeof **arr))
        return;
    pgpipe_pipe_step *s = &(*arr)[(*cnt)++];
    s->kind = kind;
    s->text = rf_keep(pf, pp_strndup(text, n));
    s->line = line;
    if (kind == PGPIPE_PIPE_SQL)
        rf_scan_create(pf, text, n);
}

static void rf_dot(pgpipe_pipefile *pf, int line, rf_word *w, int nw, const char *raw)
{
    const char *cmd = w[0].s + 1;
    /* its arguments, read as the step will read them (a bad number or an
    ** unknown option is said now, not at every firing) */
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (run_step_check(raw, pf->dir, &e)) {
        rf_diag(pf, line, w[0].col, "%s", e.message);
        rf_add_step(pf, PGPIPE_PIPE_DOT, raw, strlen(raw), line);
        return;
    }
    if (!strcmp(cmd, "install")) {
        for (int i = 1; i < nw; i++)
            if (!strcmp(w[i].s, "--example"))
                pf->install_example = 1;
    } else if (!strcmp(cmd, "migrate")) {
        const char *d = "migrations";
        int col = w[0].col;
        for (int i = 1; i < nw; i++)
            if (strncmp(w[i].s, "--", 2)) {
                d = w[i].s;
                col = w[i].vcol;
                break;
            } else if (strcmp(w[i].s, "--status") && strcmp(w[i].s, "--dry-run") && strcmp(w[i].s, "--repair")) {
                i++; /* an option with a value */
            }
        char *path = rf_path(pf, d);
        if (rf_check_file(pf, line, col, ".migrate: folder", d, path, 1))
            rf_scan_sql_dir(pf, path);
    } else if (!strcmp(cmd, "load") || !strcmp(cmd, "read")) {
        if (nw < 2 || !strncmp(w[1].s, "--", 2))
            rf_diag(pf, line, w[0].col, ".%s: needs a FILE", cmd);
        else if (strcmp(w[1].s, "-"))
            rf_check_file(pf, line, w[1].vcol, strcmp(cmd, "load") ? ".read: file" : ".load: file", w[1].s,
                          rf_path(pf, w[1].s), 0);
    } else if (!strcmp(cmd, "refresh")) {
        if (nw < 2 || !strncmp(w[1].s, "--", 2))
            rf_diag(pf, line, w[0].col, ".refresh: needs a VIEW");
        else
            rf_table_ref(pf, w[1].s, line, w[1].vcol);
    }
    rf_add_step(pf, PGPIPE_PIPE_DOT, raw, strlen(raw), line);
}

static const rf_opt rf_opts_files[] = {
    { "--dir", 0 }, { "--pattern", 0 }, { "--format", 0 }, { "--after", 0 }, { "--done-dir", 0 },
    { "--settle", 0 }, { "--poll", 0 }, { "--table", 0 }, { "--source", 0 }, { "--event-type", 0 },
    { "--event-type-field", 0 }, { NULL, 0 } };
static const rf_opt rf_opts_http[] = {
    { "--listen", 0 }, { "--table", 0 }, { "--event-type", 0 }, { "--event-type-field", 0 },
    { "--signature", 0 }, { "--secret-env", 0 }, { "--spool", 0 }, { NULL, 0 } };
static const rf_opt rf_opts_cdc[] = {
    { "--source", 0 }, { "--source-env", 0 }, { "--slot", 0 }, { "--publication", 0 },
    { "--tables", 0 }, { "--snapshot", 1 }, { "--heartbeat", 0 }, { "--no-create", 1 },
    { "--pause-workers", 0 }, { "--pause-at", 0 }, { "--resume-at", 0 }, { "--drop-slot-at", 0 },
    { "--slot-check", 0 }, { NULL, 0 } };
static const rf_opt rf_opts_workers[] = {
    { "--sql", 0 }, { "--so", 0 }, { "--workers", 0 }, { "--batch", 0 }, { "--mode", 0 },
    { "--lease", 0 }, { "--max-attempts", 0 }, { "--table", 0 }, { NULL, 0 } };
static const rf_opt rf_opts_schedule[] = {
    { "--cron", 0 }, { "--every", 0 }, { "--tz", 0 }, { "--jitter", 0 }, { "--overlap", 0 },
    { "--missed", 0 }, { "--timeout", 0 }, { NULL, 0 } };
static const rf_opt rf_opts_task[] = {
    { "--after", 0 }, { "--retries", 0 }, { "--backoff", 0 }, { "--backoff-max", 0 },
    { "--timeout", 0 }, { "--on-failure", 0 }, { NULL, 0 } };
static const rf_opt rf_opts_alert[] = {
    { "--threshold", 0 }, { "--window", 0 }, { "--older-than", 0 }, { "--event-type", 0 },
    { "--task", 0 }, { "--count", 0 }, { "--schedule", 0 }, { "--source", 0 }, { "--max-lag", 0 },
    { "--max-retained", 0 }, { "--notify", 0 }, { "--table", 0 }, { "--command", 0 }, { NULL, 0 } };
static const rf_opt rf_opts_history[] = {
    { "--keep-ok", 0 }, { "--keep-failed", 0 }, { "--keep-last", 0 }, { "--failures-only", 1 },
    { NULL, 0 } };

/* A name (of the pipeline, a source, workers, a schedule or a task) is
** shown in run history, logs and the status page: not empty, no control
** characters. */
static void rf_name_check(pgpipe_pipefile *pf, int line, int col, const char *cmd, const char *name)
{
    if (!*name) {
        rf_diag(pf, line, col, "%s: the name is empty", cmd);
        return;
    }
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20 || *p == 0x7f) {
            rf_diag(pf, line, col, "%s: the name has a control character (byte %d)", cmd, *p);
            return;
        }
}

/* the NAME positional of a directive; reports when missing or extra */
static const char *rf_name(rf_ctx *c, int want, const char *what)
{
    if (c->o->npos < want) {
        rf_diag(c->pf, c->line, 0, "%s: needs %s", c->cmd, what);
        return NULL;
    }
    if (c->o->npos > want)
        rf_diag(c->pf, c->line, c->o->poscol[want], "%s: unexpected \"%s\" (options start with --)", c->cmd,
                c->o->pos[want]);
    if (want)
        rf_name_check(c->pf, c->line, c->o->poscol[want - 1], c->cmd, c->o->pos[want - 1]);
    return want ? c->o->pos[want - 1] : NULL;
}

/* A schedule's or task's name is named again in --after lists (commas) and
** alerts' --task/--schedule: no ',' and no blanks. */
static void rf_step_name_check(rf_ctx *c, const char *name)
{
    if (name && name[strcspn(name, ", \t")])
        rf_diag(c->pf, c->line, c->o->poscol[0], "%s: name \"%s\": no ',' or blanks in a schedule "
                "or task name (--after lists names with commas)", c->cmd, name);
}

static void rf_need(rf_ctx *c, const char *opt)
{
    if (!rf_get(c, opt))
        rf_diag(c->pf, c->line, 0, "%s: %s is required", c->cmd, opt);
}

static int64_t rf_size(rf_ctx *c, const char *name);

/* .source cdc NAME ...: see run_file.h. The conninfo is not checked here
** (no database is touched); a variable that is not set is the runner's
** error at start. */
static void rf_source_cdc(pgpipe_pipefile *pf, int line, rf_word *w, int nw)
{
    rf_opts o;
    rf_ctx c = { pf, line, ".source cdc", rf_opts_cdc, &o };
    rf_parse_opts(pf, line, c.cmd, w + 1, nw - 1, c.spec, &o);
    if (!rf_grow(pf, (void **)&pf->src, pf->p.nsources, &pf->csrc, sizeof *pf->src))
        return;
    pgpipe_pipe_source *s = &pf->src[pf->p.nsources++];
    s->kind = PGPIPE_PIPE_SOURCE_CDC;
    s->line = line;
    s->name = rf_str(pf, rf_name(&c, 1, "a NAME"));
    s->source_conninfo = rf_str(pf, rf_get(&c, "--source"));
    s->source_env = rf_str(pf, rf_get(&c, "--source-env"));
    if (!s->source_conninfo == !s->source_env)
        rf_diag(pf, line, s->source_env ? rf_col(&c, "--source-env") : 0,
                ".source cdc: give the source database once: --source-env VAR (keeps a password "
                "out of the file) or --source CONNINFO");
    s->slot = rf_str(pf, rf_get(&c, "--slot") ? rf_get(&c, "--slot") : s->name);
    s->publication = rf_str(pf, rf_get(&c, "--publication") ? rf_get(&c, "--publication") : s->name);
    s->tables = rf_str(pf, rf_get(&c, "--tables"));
    s->snapshot = rf_get(&c, "--snapshot") != NULL;
    s->no_create = rf_get(&c, "--no-create") != NULL;
    s->heartbeat_ms = rf_dur(&c, "--heartbeat", 10000);
    /* the slot guard; whether each TYPE names .workers is checked once
    ** the whole file is read */
    s->pause_workers = rf_str(pf, rf_get(&c, "--pause-workers"));
    s->pause_at = rf_size(&c, "--pause-at");
    s->resume_at = rf_size(&c, "--resume-at");
    s->drop_slot_at = rf_size(&c, "--drop-slot-at");
    s->slot_check_ms = rf_dur(&c, "--slot-check", 10000);
    if (rf_get(&c, "--slot-check") && s->slot_check_ms < 100)
        rf_diag(pf, line, rf_col(&c, "--slot-check"), ".source cdc: --slot-check: at least 100ms");
    if (s->pause_workers && !rf_get(&c, "--pause-at"))
        rf_diag(pf, line, rf_col(&c, "--pause-workers"), ".source cdc: --pause-workers needs "
                "--pause-at SIZE (the retained WAL that pauses them)");
    if (rf_get(&c, "--pause-at") && !s->pause_workers)
        rf_diag(pf, line, rf_col(&c, "--pause-at"), ".source cdc: --pause-at needs --pause-workers "
                "\"TYPE[,TYPE...]\" (the .workers to pause)");
    if (rf_get(&c, "--resume-at") && !rf_get(&c, "--pause-at"))
        rf_diag(pf, line, rf_col(&c, "--resume-at"), ".source cdc: --resume-at needs --pause-at");
    else if (s->resume_at && s->pause_at && s->resume_at >= s->pause_at)
        rf_diag(pf, line, rf_col(&c, "--resume-at"), ".source cdc: --resume-at must be below --pause-at");
    if (!s->resume_at)
        s->resume_at = s->pause_at / 2;
    if (s->drop_slot_at && s->pause_at && s->drop_slot_at <= s->pause_at)
        rf_diag(pf, line, rf_col(&c, "--drop-slot-at"), ".source cdc: --drop-slot-at must be above "
                "--pause-at (pausing comes first)");
    if (rf_get(&c, "--drop-slot-at") && s->no_create)
        rf_diag(pf, line, rf_col(&c, "--drop-slot-at"), ".source cdc: --drop-slot-at makes a new slot "
                "after dropping one: not with --no-create");
    for (const char *q = s->pause_workers; q;) {
        char it[256];
        size_t n;
        q = run_list_item(q, it, sizeof it, &n);
        if (!n) {
            rf_diag(pf, line, rf_col(&c, "--pause-workers"), ".source cdc: --pause-workers: an empty "
                    "event type in \"%s\"", s->pause_workers);
            break;
        }
    }
    /* a slot name: lower case letters, digits and underscores (the server's rule) */
    for (const char *q = s->slot; q && *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '_')) {
            rf_diag(pf, line, rf_get(&c, "--slot") ? rf_col(&c, "--slot") : 0,
                    ".source cdc: slot \"%s\": a replication slot name has only lower case "
                    "letters, digits and underscores%s", s->slot,
                    rf_get(&c, "--slot") ? "" : " (it defaults to the NAME: give --slot)");
            break;
        }
}

/* .source pull NAME --url URL [--every DURATION] [pull options]: see
** run_file.h. Every option but --every is checked here the way
** pgpipe_pull_set takes it at run time, and kept as written (NAME=VALUE). */
static void rf_source_pull(pgpipe_pipefile *pf, int line, rf_word *w, int nw)
{
    if (!rf_grow(pf, (void **)&pf->src, pf->p.nsources, &pf->csrc, sizeof *pf->src))
        return;
    pgpipe_pipe_source *s = &pf->src[pf->p.nsources++];
    s->kind = PGPIPE_PIPE_SOURCE_PULL;
    s->line = line;
    s->every_ms = 300000;
#ifdef PGPIPE_OMIT_PULL
    (void)w, (void)nw;
    rf_diag(pf, line, 0, ".source pull: this pgpipe was built without the API pull (PGPIPE_OMIT_PULL)");
#else
    const char **args = rf_keep(pf, pp_calloc((size_t)nw + 1, sizeof *args));
    if (!args)
        return;
    s->pull_args = args;
    pgpipe_pull_options o;
    pgpipe_pull_options_init(&o);
    int have_url = 0;
    for (int i = 2; i < nw; i++) {
        const char *a = w[i].s;
        if (strncmp(a, "--", 2) != 0) {
            if (s->name)
                rf_diag(pf, line, w[i].vcol, ".source pull: unexpected \"%s\" (options start with --)", a);
            else
                s->name = rf_str(pf, a);
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(nlen < 63 ? nlen : 63), a);
        const char *v = eq ? eq + 1 : NULL;
        int col = w[i].col;
        if (!v) {
            if (i + 1 >= nw) {
                rf_diag(pf, line, col, ".source pull: %s needs a value", name);
                break;
            }
            v = w[++i].s;
            col = w[i].vcol;
        }
        if (!*v) { /* never the option's default */
            rf_diag(pf, line, col, ".source pull: %s is empty (leave the option out for its default)",
                    name);
            continue;
        }
        if (!strcmp(name, "--every")) {
            if ((s->every_ms = run_duration_ms(v)) <= 0)
                rf_diag(pf, line, col, ".source pull: --every: expected a duration like 30s, 5m, 2h, 1d, "
                        "got \"%s\"", v);
            continue;
        }
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        if (pgpipe_pull_set(&o, name, v, &e) != PGPIPE_OK) {
            const char *m = !strncmp(e.message, "pull: ", 6) ? e.message + 6 : e.message;
            rf_diag(pf, line, col, ".source pull: %s", m);
            continue;
        }
        have_url |= !strcmp(name, "--url");
        if (!strcmp(name, "--source"))
            s->pull_source = rf_str(pf, v);
        char *kv = pp_malloc(strlen(name) + strlen(v) + 2);
        if (kv)
            sprintf(kv, "%s=%s", name + 2, v);
        args[s->npull_args++] = rf_keep(pf, kv);
    }
    if (!s->name)
        rf_diag(pf, line, 0, ".source pull: needs a NAME");
    if (!have_url)
        rf_diag(pf, line, 0, ".source pull: --url is required");
    else if (strncmp(o.url, "http://", 7) != 0 && strncmp(o.url, "https://", 8) != 0)
        rf_diag(pf, line, 0, ".source pull: --url: http:// or https://, got \"%s\"", o.url);
    if (o.paginate == PGPIPE_PULL_CURSOR && !o.cursor_path)
        rf_diag(pf, line, 0, ".source pull: --paginate cursor needs --cursor-path");
    if (o.event_type && o.event_type_field)
        rf_diag(pf, line, 0, ".source pull: --event-type and --event-type-field do not go together");
    if (!s->pull_source)
        s->pull_source = s->name;
#endif
}

/* One item of an HTTP --listen list, as the HTTP server reads it
** (hs_bind_list): HOST:PORT, [IPV6]:PORT or :PORT, PORT 0-65535. The host
** is not resolved here (the check connects nowhere); *host gets it, *port
** the port. 0, or 1 with the message in msg. */
static int rf_listen_item(const char *item, size_t len, char *host, size_t hcap, long *port,
                          char *msg, size_t mcap)
{
    const char *end = item + len, *colon = NULL;
    size_t hl;
    const char *h;
    if (len && *item == '[') {
        const char *rb = memchr(item, ']', len);
        if (!rb || rb + 1 >= end || rb[1] != ':') {
            snprintf(msg, mcap, "\"%.*s\" is not [IPV6]:PORT", (int)len, item);
            return 1;
        }
        h = item + 1;
        hl = (size_t)(rb - item - 1);
        colon = rb + 1;
    } else {
        int ncolon = 0;
        for (const char *q = item; q < end; q++)
            if (*q == ':')
                ncolon++, colon = q;
        if (!ncolon) {
            snprintf(msg, mcap, "\"%.*s\" is not HOST:PORT", (int)len, item);
            return 1;
        }
        if (ncolon > 1) {
            snprintf(msg, mcap, "\"%.*s\" is not HOST:PORT (more than one ':'; an IPv6 address "
                     "goes in brackets: [::1]:8080)", (int)len, item);
            return 1;
        }
        h = item;
        hl = (size_t)(colon - item);
        for (const char *q = h; q < colon; q++)
            if (!isalnum((unsigned char)*q) && *q != '.' && *q != '-' && *q != '_') {
                snprintf(msg, mcap, "\"%.*s\": the host has a '%c' (a name or an address)",
                         (int)len, item, *q);
                return 1;
            }
    }
    long pn = 0;
    const char *q = colon + 1;
    if (q >= end) {
        snprintf(msg, mcap, "bad port in \"%.*s\" (0-65535)", (int)len, item);
        return 1;
    }
    for (; q < end; q++) {
        if (!isdigit((unsigned char)*q) || pn > 65535) {
            pn = -1;
            break;
        }
        pn = pn * 10 + (*q - '0');
    }
    if (pn < 0 || pn > 65535) {
        snprintf(msg, mcap, "bad port in \"%.*s\" (0-65535)", (int)len, item);
        return 1;
    }
    if (hl >= hcap)
        hl = hcap - 1;
    for (size_t k = 0; k < hl; k++)
        host[k] = (char)tolower((unsigned char)h[k]);
    host[hl] = 0;
    *port = pn;
    return 0;
}

/* Walk a --listen list: calls fn for each item (host lowercased, port);
** returns the first item's syntax error in msg, 1, or 0. */
static int rf_listen_each(const char *spec, char *msg, size_t mcap,
                          void (*fn)(void *ud, const char *host, long port), void *ud)
{
    for (const char *item = spec; item && *item;) {
        const char *comma = strchr(item, ',');
        size_t len = comma ? (size_t)(comma - item) : strlen(item);
        while (len && *item == ' ')
            item++, len--;
        char host[256];
        long port;
        if (rf_listen_item(item, len, host, sizeof host, &port, msg, mcap))
            return 1;
        if (fn)
            fn(ud, host, port);
        item = comma ? comma + 1 : NULL;
    }
    return 0;
}

/* path made plain, lexically: no "." parts, no empty ones, ".." taking
** the part before it ("a/./b/../c/" is "a/c") */
static void rf_plain_path(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    int abs = in[0] == '/';
    out[0] = 0;
    if (abs && cap > 1)
        out[n++] = '/', out[n] = 0;
    size_t root = n;
    for (const char *p = in; *p;) {
        while (*p == '/')
            p++;
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!len)
            break;
        if (len == 1 && p[0] == '.') {
            /* nothing */
        } else if (len == 2 && p[0] == '.' && p[1] == '.' && n > root &&
                   !(n - root >= 2 && !strcmp(out + n - 2, "..") &&
                     (n - root == 2 || out[n - 3] == '/'))) {
            while (n > root && out[n - 1] != '/')
                n--;
            if (n > root)
                n--;
            out[n] = 0;
        } else if (n + len + 2 < cap) {
            if (n > root)
                out[n++] = '/';
            memcpy(out + n, p, len);
            n += len;
            out[n] = 0;
        }
        p += len;
    }
}

/* Do two folder paths name one folder? The same path made plain, or the
** same folder on disk (a symbolic link) when both exist now. */
static int rf_same_dir(const char *a, const char *b)
{
    char pa[4096], pb[4096];
    rf_plain_path(a, pa, sizeof pa);
    rf_plain_path(b, pb, sizeof pb);
    if (!strcmp(pa, pb))
        return 1;
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && S_ISDIR(sa.st_mode) &&
           sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void rf_source(pgpipe_pipefile *pf, int line, rf_word *w, int nw)
{
    rf_opts o;
    const char *kind = nw > 1 ? w[1].s : "";
    int files = !strcmp(kind, "files"), http = !strcmp(kind, "http"), cdc = !strcmp(kind, "cdc");
    if (!strcmp(kind, "pull")) {
        rf_source_pull(pf, line, w, nw);
        return;
    }
    if (!files && !http && !cdc) {
        rf_diag(pf, line, nw > 1 ? w[1].col : 0,
                ".source: expected files, http, cdc or pull%s%s%s", nw > 1 ? ", got \"" : "",
                nw > 1 ? kind : "", nw > 1 ? "\"" : "");
        return;
    }
    if (cdc) {
        rf_source_cdc(pf, line, w, nw);
        return;
    }
    rf_ctx c = { pf, line, files ? ".source files" : ".source http", files ? rf_opts_files : rf_opts_http, &o };
    rf_parse_opts(pf, line, c.cmd, w + 1, nw - 1, c.spec, &o);
    if (!rf_grow(pf, (void **)&pf->src, pf->p.nsources, &pf->csrc, sizeof *pf->src))
        return;
    pgpipe_pipe_source *s = &pf->src[pf->p.nsources++];
    s->kind = files ? PGPIPE_PIPE_SOURCE_FILES : PGPIPE_PIPE_SOURCE_HTTP;
    s->line = line;
    s->name = rf_str(pf, rf_name(&c, 1, "a NAME"));
#ifndef PGPIPE_OMIT_HTTP
    if (!files && s->name && *s->name && !pgpipe_http_source_valid(s->name))
        rf_diag(pf, line, o.poscol[0], "%s: NAME \"%s\": a source is " PGPIPE_HTTP_SOURCE_RULE
                " (the {source} of POST /v1/events/{source})", c.cmd, s->name);
#endif
    s->table = rf_str(pf, rf_get(&c, "--table"));
    if (s->table)
        rf_table_ref(pf, s->table, line, rf_col(&c, "--table"));
    s->event_type = rf_str(pf, rf_get(&c, "--event-type"));
    s->event_type_field = rf_str(pf, rf_get(&c, "--event-type-field"));
    if (s->event_type && s->event_type_field)
        rf_diag(pf, line, rf_col(&c, "--event-type-field"), "%s: --event-type and --event-type-field "
                "do not go together", c.cmd);
    if (files) {
        rf_need(&c, "--dir");
        s->dir = rf_path(pf, rf_get(&c, "--dir"));
        s->pattern = rf_str(pf, rf_get(&c, "--pattern") ? rf_get(&c, "--pattern") : "*");
        static const char *const fmts[] = { "auto", "csv", "ndjson", "json" };
        s->format = fmts[rf_choice(&c, "--format", "auto|csv|ndjson|json", 0)];
        s->delete_after = rf_choice(&c, "--after", "move|delete", 0);
        if (rf_get(&c, "--done-dir"))
            s->done_dir = rf_path(pf, rf_get(&c, "--done-dir"));
        else if (s->dir) {
            char buf[4096];
            snprintf(buf, sizeof buf, "%s/done", s->dir);
            s->done_dir = rf_str(pf, buf);
        }
        if (s->delete_after && rf_get(&c, "--done-dir"))
            rf_diag(pf, line, rf_col(&c, "--done-dir"), "%s: --done-dir does not go with --after delete", c.cmd);
        else if (s->dir && rf_get(&c, "--done-dir") && rf_same_dir(s->dir, s->done_dir))
            rf_diag(pf, line, rf_col(&c, "--done-dir"), "%s: --done-dir is the folder --dir watches: "
                    "each loaded file would be found there again and loaded again (leave it out "
                    "for DIR/done)", c.cmd);
        s->settle_ms = rf_dur(&c, "--settle", 5000);
        s->poll_ms = rf_dur(&c, "--poll", 1000);
    } else {
        s->listen = rf_str(pf, rf_get(&c, "--listen"));
        char msg[512];
        if (s->listen && rf_listen_each(s->listen, msg, sizeof msg, NULL, NULL))
            rf_diag(pf, line, rf_col(&c, "--listen"), "%s: --listen: %s", c.cmd, msg);
        if (rf_get(&c, "--signature"))
            s->signature = rf_str(pf, (const char *[]){ "github", "stripe", "standard" }
                                      [rf_choice(&c, "--signature", "github|stripe|standard", 0)]);
        s->secret_env = rf_str(pf, rf_get(&c, "--secret-env"));
        if (rf_get(&c, "--spool"))
            s->spool = rf_path(pf, rf_get(&c, "--spool"));
        if (s->signature && !s->secret_env)
            rf_diag(pf, line, rf_col(&c, "--signature"), "%s: --signature needs --secret-env", c.cmd);
    }
}

static void rf_workers(pgpipe_pipefile *pf, int line, rf_word *w, int nw)
{
    rf_opts o;
    rf_ctx c = { pf, line, ".workers", rf_opts_workers, &o };
    rf_parse_opts(pf, line, c.cmd, w, nw, c.spec, &o);
    if (!rf_grow(pf, (void **)&pf->wk, pf->p.nworkers, &pf->cwk, sizeof *pf->wk))
        return;
    pgpipe_pipe_workers *k = &pf->wk[pf->p.nworkers++];
    k->line = line;
    k->event_type = rf_str(pf, rf_name(&c, 1, "an EVENT_TYPE (or *)"));
    const char *sql = rf_get(&c, "--sql"), *so = rf_get(&c, "--so");
    if (!sql == !so)
        rf_diag(pf, line, sql ? rf_col(&c, "--so") : 0, ".workers: give one handler: --sql FILE or --so LIB:SYMBOL");
    if (sql) {
        k->sql_file = rf_path(pf, sql);
        if (rf_check_file(pf, line, rf_col(&c, "--sql"), ".workers: handler file", sql, k->sql_file, 0))
            rf_scan_sql_file(pf, k->sql_file);
    } else if (so) {
        const char *colon = strrchr(so, ':');
        if (!colon || colon == so || !colon[1]) {
            rf_diag(pf, line, rf_col(&c, "--so"), ".workers: --so: expected LIB:SYMBOL, got \"%s\"", so);
        } else {
            char lib[4096];
            snprintf(lib, sizeof lib, "%.*s", (int)(colon - so), so);
            k->so_lib = rf_path(pf, lib);
            k->so_symbol = rf_str(pf, colon + 1);
            rf_check_file(pf, line, rf_col(&c, "--so"), ".workers: handler library", lib, k->so_lib, 0);
        }
    }
    k->workers = (int)rf_num(&c, "--workers", 1, 256, 1);
    k->batch = (int)rf_num(&c, "--batch", 1, 100000, 100);
    k->mode = rf_choice(&c, "--mode", "transaction|lease", PGPIPE_PIPE_TRANSACTION);
    k->lease_ms = rf_dur(&c, "--lease", 0);
    if (k->lease_ms && k->mode != PGPIPE_PIPE_LEASE)
        rf_diag(pf, line, rf_col(&c, "--lease"), ".workers: --lease needs --mode lease");
    k->max_attempts = (int)rf_num(&c, "--max-attempts", 1, 1000, 5);
    k->table = rf_str(pf, rf_get(&c, "--table"));
    if (k->table)
        rf_table_ref(pf, k->table, line, rf_col(&c, "--table"));
}

static void rf_open_block(pgpipe_pipefile *pf, int line, const char *kind, pgpipe_pipe_step **steps,
                          int *n)
{
    pf->blk_kind = kind;
    pf->blk_line = line;
    pf->blk_steps = steps;
    pf->blk_n = n;
    pf->blk_cap = 0;
}

static void rf_schedule(pgpipe_pipefile *pf, int line, rf_word *w, int nw)
{
    rf_opts o;
    rf_ctx c = { pf, line, ".schedule", rf_opts_schedule, &o };
    rf_parse_opts(pf, line, c.cmd, w, nw, c.spec, &o);
    if (!rf_grow(pf, (void **)&pf->sch, pf->p.nschedules, &pf->csch, sizeof *pf->sch))
        return;
    pgpipe_pipe_schedule *s = &pf->sch[pf->p.nschedules++];
    s->line = line;
    s->name = rf_str(pf, rf_name(&c, 1, "a NAME"));
    rf_step_name_check(&c, s->name);
    const char *cron = rf_get(&c, "--cron"), *every = rf_get(&c, "--every");
    if (!cron == !every)
        rf_diag(pf, line, cron ? rf_col(&c, "--every") : 0, ".schedule: give one of --cron \"EXPR\" or --every DURATION");
    char buf[512];
    if (every)
        snprintf(buf, sizeof buf, "every %s", every);
    else
        snprintf(buf, sizeof buf, "%s", cron ? cron : "");
    if (cron || every) {
        s->expr = rf_str(pf, buf);
        pgpipe_cron cr;
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        if (pgpipe_cron_parse(&cr, buf, &e) != PGPIPE_OK) {
            const char *opt = every ? "--every" : "--cron";
            /* "every " is not in the file: shift the column back */
            long long col = e.column > 0 ? rf_col(&c, opt) + e.column - 1 - (every ? 6 : 0) : 0;
            char *msg = e.message;
            if (every && !strncmp(msg, "every: ", 7))
                msg += 7;
            char *at = strstr(msg, " (column "); /* the diagnostic has the file's column */
            if (at && e.column > 0)
                *at = 0;
            rf_diag(pf, line, col > 0 ? (int)col : rf_col(&c, opt), ".schedule: %s: %s", opt, msg);
        }
    }
    const char *tz = rf_get(&c, "--tz");
    s->tz = rf_str(pf, tz ? tz : "UTC");
    if (tz && !run_tz_exists(tz))
        rf_diag(pf, line, rf_col(&c, "--tz"), ".schedule: --tz: unknown time zone \"%s\"", tz);
    s->jitter_ms = rf_dur(&c, "--jitter", 0);
    /* a delay as long as the interval lets a slot fire after the next one */
    int64_t every_ms = every && !cron ? run_duration_ms(every) : 0;
    if (every_ms > 0 && s->jitter_ms >= every_ms)
        rf_diag(pf, line, rf_col(&c, "--jitter"), ".schedule: --jitter %s is not shorter than --every "
                "%s: a firing could come after the next slot's", rf_get(&c, "--jitter"), every);
    s->timeout_ms = rf_dur(&c, "--timeout", 0);
    s->overlap = rf_choice(&c, "--overlap", "skip|queue|replace", PGPIPE_PIPE_OVERLAP_SKIP);
    static const int missed_of[] = { PGPIPE_PIPE_MISSED_SKIP, PGPIPE_PIPE_MISSED_ONCE, PGPIPE_PIPE_MISSED_ALL };
    s->missed = missed_of[rf_choice(&c, "--missed", "skip|once|all", 1)];
    rf_open_block(pf, line, ".schedule", (pgpipe_pipe_step **)&s->steps, &s->nsteps);
}

static void rf_task(pgpipe_pipefile *pf, int line, rf_word *w, int nw)
{
    rf_opts o;
    rf_ctx c = { pf, line, ".task", rf_opts_task, &o };
    rf_parse_opts(pf, line, c.cmd, w, nw, c.spec, &o);
    if (!rf_grow(pf, (void **)&pf->task, pf->p.ntasks, &pf->ctask, sizeof *pf->task))
        return;
    pgpipe_pipe_task *t = &pf->task[pf->p.ntasks++];
    t->line = line;
    t->name = rf_str(pf, rf_name(&c, 1, "a NAME"));
    rf_step_name_check(&c, t->name);
    rf_need(&c, "--after");
    const char *after = rf_get(&c, "--after");
    if (after) {
        int n = 1;
        for (const char *p = after; *p; p++)
            n += *p == ',';
        const char **names = rf_keep(pf, pp_calloc((size_t)n, sizeof *names));
        if (names) {
            const char *p = after;
            for (int i = 0; i < n; i++) {
                const char *e = strchr(p, ',');
                size_t len = e ? (size_t)(e - p) : strlen(p);
                if (!len)
                    rf_diag(pf, line, rf_col(&c, "--after") + (int)(p - after), ".task: --after: an empty name in the list");
                else
                    names[t->nafter++] = rf_keep(pf, pp_strndup(p, len));
                p = e ? e + 1 : p + len;
            }
            t->after = names;
        }
    }
    t->retries = (int)rf_num(&c, "--retries", 0, 1000, 0);
    t->backoff_ms = rf_dur(&c, "--backoff", 1000);
    t->backoff_max_ms = rf_dur(&c, "--backoff-max", 300000);
    t->timeout_ms = rf_dur(&c, "--timeout", 0);
    t->on_failure = rf_choice(&c, "--on-failure", "stop|continue", PGPIPE_PIPE_FAIL_STOP);
    rf_open_block(pf, line, ".task", (pgpipe_pipe_step **)&t->steps, &t->nsteps);
}

/* A size in bytes: N, NkB, NMB, NGB or NTB (1024-based, as PostgreSQL's
** settings); 0 when not given. */
static int64_t rf_size(rf_ctx *c, const char *name)
{
    const char *v = rf_get(c, name);
    if (!v)
        return 0;
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    static const char *const units[] = { "", "B", "kB", "MB", "GB", "TB" };
    static const int shift[] = { 0, 0, 10, 20, 30, 40 };
    int u = -1;
    for (int i = 0; end && end != v && i < 6; i++)
        if (!strcmp(end, units[i]))
            u = i;
    if (u < 0 || errno || n <= 0 || n > (INT64_MAX >> shift[u])) {
        rf_diag(c->pf, c->line, rf_col(c, name),
                "%s: %s: expected a size like 512MB or 10GB, got \"%s\"", c->cmd, name, v);
        return 0;
    }
    return (int64_t)n << shift[u];
}

static void rf_alert(pgpipe_pipefile *pf, int line, rf_word *w, int nw)
{
    static const char *const kinds[] = { "dlq-growth", "backlog-age", "task-failures", "schedule-missed",
                                         "cdc-lag", NULL };
    const char *kind = nw > 1 ? w[1].s : "";
    int k = 0;
    for (int i = 0; kinds[i]; i++)
        if (!strcmp(kind, kinds[i]))
            k = i + 1;
    if (!k) {
        char sug[96];
        rf_diag(pf, line, nw > 1 ? w[1].col : 0,
                ".alert: expected dlq-growth, backlog-age, task-failures, schedule-missed or cdc-lag, "
                "got \"%s\"%s", kind,
                rf_suggest(sug, sizeof sug, kind, "", kinds));
        return;
    }
    rf_opts o;
    char cmd[64];
    snprintf(cmd, sizeof cmd, ".alert %s", kind);
    rf_ctx c = { pf, line, cmd, rf_opts_alert, &o };
    rf_parse_opts(pf, line, cmd, w + 1, nw - 1, c.spec, &o);
    if (!rf_grow(pf, (void **)&pf->alert, pf->p.nalerts, &pf->calert, sizeof *pf->alert))
        return;
    pgpipe_pipe_alert *a = &pf->alert[pf->p.nalerts++];
    a->kind = k;
    a->line = line;
    /* which options belong to which kind */
    static const char *const own[][3] = { { "--threshold", "--window", NULL },
                                           { "--older-than", "--event-type", NULL },
                                           { "--task", "--count", NULL },
                                           { "--schedule", NULL, NULL },
                                           { "--source", "--max-lag", "--max-retained" } };
    for (int j = 0; c.spec[j].name; j++) {
        if (!o.given[j] || j >= 10)
            continue; /* --notify --table --command go with every kind */
        int mine = 0;
        for (int i = 0; i < 3 && own[k - 1][i]; i++)
            mine |= !strcmp(own[k - 1][i], c.spec[j].name);
        if (!mine)
            rf_diag(pf, line, o.col[j], "%s: %s is not an option of this kind", cmd, c.spec[j].name);
    }
    (void)rf_name(&c, 0, "");
    switch (k) {
    case PGPIPE_PIPE_ALERT_DLQ_GROWTH:
        rf_need(&c, "--threshold");
        a->threshold = rf_num(&c, "--threshold", 1, INT64_MAX / 2, 0);
        a->window_ms = rf_dur(&c, "--window", 600000);
        break;
    case PGPIPE_PIPE_ALERT_BACKLOG_AGE:
        rf_need(&c, "--older-than");
        a->older_than_ms = rf_dur(&c, "--older-than", 0);
        a->event_type = rf_str(pf, rf_get(&c, "--event-type"));
        break;
    case PGPIPE_PIPE_ALERT_TASK_FAILURES:
        rf_need(&c, "--task");
        a->target = rf_str(pf, rf_get(&c, "--task"));
        a->threshold = rf_num(&c, "--count", 1, 1000000, 3);
        break;
    case PGPIPE_PIPE_ALERT_CDC_LAG:
        rf_need(&c, "--source");
        a->target = rf_str(pf, rf_get(&c, "--source"));
        a->max_lag = rf_size(&c, "--max-lag");
        a->max_retained = rf_size(&c, "--max-retained");
        break;
    default:
        rf_need(&c, "--schedule");
        a->target = rf_str(pf, rf_get(&c, "--schedule"));
        break;
    }
    a->notify = rf_str(pf, rf_get(&c, "--notify"));
    a->table = rf_str(pf, rf_get(&c, "--table"));
    if (a->table)
        rf_table_ref(pf, a->table, line, rf_col(&c, "--table"));
    a->command = rf_str(pf, rf_get(&c, "--command"));
}

static void rf_history(pgpipe_pipefile *pf, int line, rf_word *w, int nw)
{
    rf_opts o;
    rf_ctx c = { pf, line, ".history", rf_opts_history, &o };
    if (pf->history_line)
        rf_diag(pf, line, 0, ".history: given twice (first at line %d)", pf->history_line);
    pf->history_line = line;
    rf_parse_opts(pf, line, c.cmd, w, nw, c.spec, &o);
    (void)rf_name(&c, 0, "");
    pgpipe_pipe_history *h = &pf->p.history;
    h->keep_ok_ms = rf_dur(&c, "--keep-ok", h->keep_ok_ms);
    h->keep_failed_ms = rf_dur(&c, "--keep-failed", h->keep_failed_ms);
    h->keep_last = (int)rf_num(&c, "--keep-last", 0, 1000000, h->keep_last);
    h->failures_only = rf_get(&c, "--failures-only") != NULL;
}

/* a line starting with '.' */
static void rf_command(pgpipe_pipefile *pf, int line, const char *text)
{
    size_t n = strlen(text);
    char *scratch = pp_malloc(n + 1);
    rf_word w[RF_MAXW];
    if (!scratch) {
        pf->nomem = 1;
        return;
    }
    int nw = rf_words(pf, line, text, scratch, w, RF_MAXW);
    if (nw <= 0) {
        pp_free(scratch);
        return;
    }
    const char *cmd = w[0].s + 1;
    int in_block = pf->blk_steps != NULL;
    if (!strcmp(cmd, "end")) {
        if (!in_block)
            rf_diag(pf, line, w[0].col, ".end without .schedule or .task");
        else if (nw > 1)
            rf_diag(pf, line, w[1].col, ".end takes nothing after it");
        pf->blk_steps = NULL;
    } else if (in_block && (!strcmp(cmd, "schedule") || !strcmp(cmd, "task") || !strcmp(cmd, "source")
                            || !strcmp(cmd, "workers") || !strcmp(cmd, "alert") || !strcmp(cmd, "history")
                            || !strcmp(cmd, "pipeline"))) {
        rf_diag(pf, pf->blk_line, 0, "%s without .end (before .%s at line %d)", pf->blk_kind, cmd, line);
        pf->blk_steps = NULL;
        rf_command(pf, line, text);
    } else if (!strcmp(cmd, "pipeline")) {
        if (nw != 2)
            rf_diag(pf, line, w[0].col, ".pipeline: expected one NAME");
        else {
            /* as .history: a second one is a mistake, not the last word */
            if (pf->pipeline_line)
                rf_diag(pf, line, 0, ".pipeline: given twice (first at line %d)",
                        pf->pipeline_line);
            pf->pipeline_line = line;
            rf_name_check(pf, line, w[1].col, ".pipeline", w[1].s);
            pf->p.name = rf_str(pf, w[1].s);
        }
    } else if (!strcmp(cmd, "source")) {
        rf_source(pf, line, w, nw);
    } else if (!strcmp(cmd, "workers")) {
        rf_workers(pf, line, w, nw);
    } else if (!strcmp(cmd, "schedule")) {
        rf_schedule(pf, line, w, nw);
    } else if (!strcmp(cmd, "task")) {
        rf_task(pf, line, w, nw);
    } else if (!strcmp(cmd, "alert")) {
        rf_alert(pf, line, w, nw);
    } else if (!strcmp(cmd, "history")) {
        rf_history(pf, line, w, nw);
    } else {
        int known = 0;
        for (int i = 0; rf_dotcmds[i]; i++)
            known |= !strcmp(cmd, rf_dotcmds[i]);
        if (known) {
            rf_dot(pf, line, w, nw, text);
        } else {
            const char *all[32];
            int m = 0;
            for (int i = 0; rf_directives[i]; i++)
                all[m++] = rf_directives[i];
            for (int i = 0; rf_dotcmds[i]; i++)
                all[m++] = rf_dotcmds[i];
            all[m] = NULL;
            char sug[96];
            rf_diag(pf, line, w[0].col, "unknown directive .%s%s", cmd, rf_suggest(sug, sizeof sug, cmd, ".", all));
        }
    }
    pp_free(scratch);
}

/* ---- SQL between the dot commands --------------------------------------- */

/* Split acc: its complete statements become steps. Returns 1 when acc is
** done with (all statements ended, or a problem reported), 0 when it needs
** more lines. at_command: a dot command or the end follows. */
static int rf_flush_sql(pgpipe_pipefile *pf, pp_buf *acc, int first_line, int at_command, int at_line)
{
    pgpipe_sql_split *s = NULL;
    if (pgpipe_sql_split_open(&s, acc->data, acc->len, pf->path) != PGPIPE_OK) {
        pf->nomem = 1;
        pgpipe_sql_split_close(s);
        return 1;
    }
    pgpipe_sql_stmt st[1];
    int rc;
    int n = 0;
    pgpipe_sql_stmt all[64];
    while ((rc = pgpipe_sql_split_next(s, st)) == PGPIPE_ROW && n < 64)
        all[n++] = *st;
    int incomplete = pgpipe_sql_split_incomplete(s);
    if (rc == PGPIPE_PARSE && !incomplete) {
        const pgpipe_error *e = pgpipe_errinfo(s);
        rf_diag(pf, first_line + (int)e->line - 1, (int)e->column, "%s", e->message);
        pgpipe_sql_split_close(s);
        return 1;
    }
    if (incomplete && !at_command) {
        pgpipe_sql_split_close(s);
        return 0;
    }
    if (incomplete && rc == PGPIPE_PARSE) {
        const pgpipe_error *e = pgpipe_errinfo(s);
        if (at_line > 0) {
            /* inside a quote: the dot command line is part of it */
            pgpipe_sql_split_close(s);
            return 0;
        }
        rf_diag(pf, first_line + (int)e->line - 1, (int)e->column, "%s", e->message);
        pgpipe_sql_split_close(s);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        if (!all[i].terminated)
            rf_diag(pf, first_line + (int)all[i].line - 1, 0, "SQL statement does not end with ';'%s",
                    at_line > 0 ? " before the dot command" : "");
        rf_add_step(pf, PGPIPE_PIPE_SQL, all[i].sql, all[i].len, first_line + (int)all[i].line - 1);
    }
    pgpipe_sql_split_close(s);
    return 1;
}

/* ---- whole-file checks -------------------------------------------------- */

static int rf_is_schedule(const pgpipe_pipefile *pf, const char *name)
{
    for (int i = 0; i < pf->p.nschedules; i++)
        if (pf->sch[i].name && !strcmp(pf->sch[i].name, name))
            return 1;
    return 0;
}

typedef struct rf_addr {
    char host[256];
    long port;
    int line;
    const char *name;
} rf_addr;
typedef struct rf_addrs {
    rf_addr *a;
    int n, cap, checked;
    int line;
    const char *name;
} rf_addrs;

static void rf_addr_add(void *ud, const char *host, long port)
{
    rf_addrs *x = ud;
    if (x->n == x->cap)
        return;
    rf_addr *a = &x->a[x->n++];
    snprintf(a->host, sizeof a->host, "%s", host);
    a->port = port;
    a->line = x->line;
    a->name = x->name;
}

static int rf_after_has(const pgpipe_pipe_task *t, const char *name)
{
    for (int j = 0; j < t->nafter; j++)
        if (!strcmp(t->after[j], name))
            return 1;
    return 0;
}

static int rf_task_index(const pgpipe_pipefile *pf, const char *name)
{
    for (int i = 0; i < pf->p.ntasks; i++)
        if (pf->task[i].name && !strcmp(pf->task[i].name, name))
            return i;
    return -1;
}

static void rf_dups(pgpipe_pipefile *pf, const char *what, const char *const *names, const int *lines, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (names[i] && names[j] && !strcmp(names[i], names[j])) {
                rf_diag(pf, lines[i], 0, "%s \"%s\" is defined twice (first at line %d)", what, names[i], lines[j]);
                break;
            }
}

static void rf_check_names(pgpipe_pipefile *pf)
{
    int n = pf->p.nsources + pf->p.nworkers + pf->p.nschedules + pf->p.ntasks + 1;
    const char **names = pp_calloc((size_t)n, sizeof *names);
    int *lines = pp_calloc((size_t)n, sizeof *lines);
    if (!names || !lines) {
        pf->nomem = 1;
        pp_free(names);
        pp_free(lines);
        return;
    }
    for (int i = 0; i < pf->p.nsources; i++)
        names[i] = pf->src[i].name, lines[i] = pf->src[i].line;
    rf_dups(pf, "source", names, lines, pf->p.nsources);
    for (int i = 0; i < pf->p.nworkers; i++)
        names[i] = pf->wk[i].event_type, lines[i] = pf->wk[i].line;
    rf_dups(pf, "workers for event type", names, lines, pf->p.nworkers);
    /* schedules and tasks share one namespace: --after names either */
    int m = 0;
    for (int i = 0; i < pf->p.nschedules; i++, m++)
        names[m] = pf->sch[i].name, lines[m] = pf->sch[i].line;
    for (int i = 0; i < pf->p.ntasks; i++, m++)
        names[m] = pf->task[i].name, lines[m] = pf->task[i].line;
    rf_dups(pf, "schedule or task", names, lines, m);
    pp_free(names);
    pp_free(lines);

    /* --after and alert targets */
    const char *cand[256];
    int nc = 0;
    for (int i = 0; i < pf->p.nschedules && nc < 255; i++)
        if (pf->sch[i].name)
            cand[nc++] = pf->sch[i].name;
    for (int i = 0; i < pf->p.ntasks && nc < 255; i++)
        if (pf->task[i].name)
            cand[nc++] = pf->task[i].name;
    cand[nc] = NULL;
    char sug[128];
    for (int i = 0; i < pf->p.ntasks; i++) {
        pgpipe_pipe_task *t = &pf->task[i];
        for (int j = 0; j < t->nafter; j++) {
            if (t->name && !strcmp(t->after[j], t->name))
                rf_diag(pf, t->line, 0, ".task %s: --after names the task itself", t->name);
            else if (!rf_is_schedule(pf, t->after[j]) && rf_task_index(pf, t->after[j]) < 0)
                rf_diag(pf, t->line, 0, ".task %s: --after: no schedule or task \"%s\"%s", t->name ? t->name : "?",
                        t->after[j], rf_suggest(sug, sizeof sug, t->after[j], "", cand));
        }
    }
    /* two HTTP sources (or one twice) on one address: the second could
    ** not listen (the default is the HTTP server's, 127.0.0.1:8080); an
    ** address for all hosts ("" or 0.0.0.0) takes its port on each */
    {
        rf_addr addrs[64];
        rf_addrs a = { addrs, 0, 64, 0, 0, NULL };
        char msg[512];
        for (int i = 0; i < pf->p.nsources; i++) {
            const pgpipe_pipe_source *src = &pf->src[i];
            if (src->kind != PGPIPE_PIPE_SOURCE_HTTP)
                continue;
            a.line = src->line;
            a.name = src->name;
            (void)rf_listen_each(src->listen ? src->listen : "127.0.0.1:8080", msg, sizeof msg,
                                 rf_addr_add, &a);
            for (int k = a.checked; k < a.n; k++) {
                for (int m = 0; m < k; m++) {
                    if (addrs[m].port != addrs[k].port || !addrs[k].port)
                        continue;
                    int any = !addrs[m].host[0] || !strcmp(addrs[m].host, "0.0.0.0") ||
                              !addrs[k].host[0] || !strcmp(addrs[k].host, "0.0.0.0");
                    if (!any && strcmp(addrs[m].host, addrs[k].host))
                        continue;
                    rf_diag(pf, src->line, 0,
                            ".source http %s: listens on port %ld as source %s does (line %d): "
                            "the second could not listen", src->name ? src->name : "?",
                            addrs[k].port, addrs[m].name ? addrs[m].name : "?", addrs[m].line);
                    break;
                }
            }
            a.checked = a.n;
        }
    }
    /* Each condition (rule kind + subject) has one delivery state shared by
    ** every instance (pgpipe.run_alert_state): a second rule of the same
    ** kind and subject would find the condition delivered by the first and
    ** never deliver itself. */
    for (int i = 0; i < pf->p.nalerts; i++) {
        const pgpipe_pipe_alert *a = &pf->alert[i];
        const char *sa = a->kind == PGPIPE_PIPE_ALERT_BACKLOG_AGE
                             ? (a->event_type ? a->event_type : "*")
                             : a->target ? a->target : "";
        for (int j = 0; j < i; j++) {
            const pgpipe_pipe_alert *b = &pf->alert[j];
            const char *sb = b->kind == PGPIPE_PIPE_ALERT_BACKLOG_AGE
                                 ? (b->event_type ? b->event_type : "*")
                                 : b->target ? b->target : "";
            if (a->kind != b->kind || strcmp(sa, sb))
                continue;
            rf_diag(pf, a->line, 0, ".alert: a second rule for the same condition (first at line "
                    "%d): a condition is delivered once, by one rule, so this one would never "
                    "deliver; give one rule all its --notify, --table and --command",
                    b->line);
            break;
        }
    }
    /* A task runs after the firing of one schedule (README: "once everything
    ** they follow succeeded in that firing"): one that follows two
    ** schedules, itself or through the tasks it follows, would never run. */
    if (pf->p.ntasks) {
        int n = pf->p.ntasks;
        char *seen = pp_calloc((size_t)n, 1);
        int *stack = pp_calloc((size_t)n, sizeof *stack);
        if (!seen || !stack)
            pf->nomem = 1;
        for (int i = 0; seen && stack && i < n; i++) {
            memset(seen, 0, (size_t)n);
            int top = 0;
            const char *first = NULL, *second = NULL;
            stack[top++] = i;
            seen[i] = 1;
            while (top && !second) {
                const pgpipe_pipe_task *t = &pf->task[stack[--top]];
                for (int j = 0; j < t->nafter && !second; j++) {
                    if (rf_is_schedule(pf, t->after[j])) {
                        if (!first)
                            first = t->after[j];
                        else if (strcmp(first, t->after[j]))
                            second = t->after[j];
                        continue;
                    }
                    int k = rf_task_index(pf, t->after[j]);
                    if (k >= 0 && !seen[k]) {
                        seen[k] = 1;
                        stack[top++] = k;
                    }
                }
            }
            if (second)
                rf_diag(pf, pf->task[i].line, 0,
                        ".task %s: runs after two schedules, %s and %s%s: a task runs after the "
                        "firing of one schedule, so it would never run",
                        pf->task[i].name ? pf->task[i].name : "?", first, second,
                        rf_after_has(&pf->task[i], first) && rf_after_has(&pf->task[i], second)
                            ? ""
                            : " (through the tasks it runs --after)");
        }
        pp_free(seen);
        pp_free(stack);
    }
    for (int i = 0; i < pf->p.nalerts; i++) {
        pgpipe_pipe_alert *a = &pf->alert[i];
        if (!a->target)
            continue;
        if (a->kind == PGPIPE_PIPE_ALERT_TASK_FAILURES && rf_task_index(pf, a->target) < 0)
            rf_diag(pf, a->line, 0, ".alert task-failures: --task: no task \"%s\"", a->target);
        if (a->kind == PGPIPE_PIPE_ALERT_SCHEDULE_MISSED && !rf_is_schedule(pf, a->target))
            rf_diag(pf, a->line, 0, ".alert schedule-missed: --schedule: no schedule \"%s\"", a->target);
        if (a->kind == PGPIPE_PIPE_ALERT_CDC_LAG) {
            int found = 0;
            for (int k = 0; k < pf->p.nsources; k++)
                found |= pf->src[k].kind == PGPIPE_PIPE_SOURCE_CDC && pf->src[k].name &&
                         !strcmp(pf->src[k].name, a->target);
            if (!found)
                rf_diag(pf, a->line, 0, ".alert cdc-lag: --source: no .source cdc \"%s\"", a->target);
        }
    }
    /* the slot guard's --pause-workers: each TYPE matches some .workers */
    for (int i = 0; i < pf->p.nsources; i++) {
        const pgpipe_pipe_source *s = &pf->src[i];
        if (s->kind != PGPIPE_PIPE_SOURCE_CDC || !s->pause_workers)
            continue;
        for (const char *q = s->pause_workers; q;) {
            char pat[256];
            size_t n;
            q = run_list_item(q, pat, sizeof pat, &n);
            if (!pat[0])
                continue;
            int found = 0;
            for (int k = 0; k < pf->p.nworkers && !found; k++)
                found = pf->wk[k].event_type && fnmatch(pat, pf->wk[k].event_type, 0) == 0;
            if (!found)
                rf_diag(pf, s->line, 0, ".source cdc %s: --pause-workers: \"%s\" matches no .workers "
                        "EVENT_TYPE of this file", s->name ? s->name : "?", pat);
        }
    }
}

/* Cycles among tasks; then orders the tasks so each follows those it
** names (Kahn's algorithm; tasks on a cycle keep their file order at the
** end). */
static void rf_check_cycles(pgpipe_pipefile *pf)
{
    int n = pf->p.ntasks;
    if (!n)
        return;
    int *state = pp_calloc((size_t)n, sizeof *state), *order = pp_calloc((size_t)n, sizeof *order);
    int *path = pp_calloc((size_t)n + 1, sizeof *path);
    if (!state || !order || !path) {
        pf->nomem = 1;
        goto out;
    }
    /* depth-first from each task: state 0 new, 1 on the path, 2 done */
    for (int root = 0; root < n; root++) {
        if (state[root])
            continue;
        int depth = 0, *next = pp_calloc((size_t)n, sizeof *next);
        if (!next) {
            pf->nomem = 1;
            goto out;
        }
        path[0] = root;
        state[root] = 1;
        while (depth >= 0) {
            int v = path[depth];
            pgpipe_pipe_task *t = &pf->task[v];
            if (next[v] < t->nafter) {
                int u = rf_task_index(pf, t->after[next[v]++]);
                if (u < 0 || u == v)
                    continue;
                if (state[u] == 1) {
                    char buf[512];
                    size_t len = 0;
                    int from = depth;
                    while (from > 0 && path[from] != u)
                        from--;
                    for (int i = from; i <= depth && len < sizeof buf - 64; i++)
                        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s -> ", pf->task[path[i]].name);
                    snprintf(buf + len, sizeof buf - len, "%s", pf->task[u].name);
                    rf_diag(pf, pf->task[u].line, 0, "dependency cycle: %s (each runs --after the next)", buf);
                } else if (state[u] == 0) {
                    state[u] = 1;
                    path[++depth] = u;
                }
            } else {
                state[v] = 2;
                depth--;
            }
        }
        pp_free(next);
    }
    /* order: repeatedly take the first task whose --after tasks are placed */
    int placed = 0;
    memset(state, 0, (size_t)n * sizeof *state);
    while (placed < n) {
        int took = 0;
        for (int i = 0; i < n; i++) {
            if (state[i])
                continue;
            int ready = 1;
            for (int j = 0; j < pf->task[i].nafter && ready; j++) {
                int u = rf_task_index(pf, pf->task[i].after[j]);
                ready = u < 0 || u == i || state[u];
            }
            if (ready) {
                state[i] = 1;
                order[placed++] = i;
                took = 1;
            }
        }
        if (!took)
            for (int i = 0; i < n; i++)
                if (!state[i]) {
                    state[i] = 1;
                    order[placed++] = i;
                }
    }
    pgpipe_pipe_task *sorted = pp_malloc((size_t)n * sizeof *sorted);
    if (!sorted) {
        pf->nomem = 1;
        goto out;
    }
    for (int i = 0; i < n; i++)
        sorted[i] = pf->task[order[i]];
    memcpy(pf->task, sorted, (size_t)n * sizeof *sorted);
    pp_free(sorted);
out:
    pp_free(state);
    pp_free(order);
    pp_free(path);
}

static int rf_table_known(const pgpipe_pipefile *pf, const char *ref)
{
    char want[256];
    size_t len = 0;
    const char *p = ref, *e = ref + strlen(ref);
    if (!(p = rf_ident(p, e, want, sizeof want, &len)))
        return 0;
    if (p < e && *p == '.') {
        want[len++] = '.';
        if (!(p = rf_ident(p + 1, e, want, sizeof want, &len)))
            return 0;
    }
    want[len] = 0;
    int qualified = strchr(want, '.') != NULL;
    for (int i = 0; i < pf->ntables; i++) {
        const char *t = pf->tables[i];
        if (!t)
            continue;
        if (!strcmp(t, want))
            return 1;
        const char *dot = strchr(t, '.');
        if (!qualified && dot && !strcmp(dot + 1, want))
            return 1;
        if (qualified && !dot && !strcmp(strchr(want, '.') + 1, t))
            return 1;
    }
    return 0;
}

static void rf_check_tables(pgpipe_pipefile *pf)
{
    if (!pf->nrefs)
        return;
    rf_scan_builtin(pf);
    for (int i = 0; i < pf->nrefs; i++)
        if (pf->refs[i].name && !rf_table_known(pf, pf->refs[i].name))
            rf_diag(pf, pf->refs[i].line, pf->refs[i].col,
                    "unknown table %s (not created by this file, its migrations and handlers, or pgpipe's "
                    "schema%s)", pf->refs[i].name, pf->install_example ? " and example" : "");
}

static int rf_diag_cmp(const void *a, const void *b)
{
    const pgpipe_pipe_diag *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    /* same line: in the order they were found (message pointers are
    ** allocated in that order, but compare the column first) */
    if (x->column != y->column)
        return x->column < y->column ? -1 : 1;
    return 0;
}

/* ---- the public API ------------------------------------------------------ */

static int rf_read_file(const char *path, pp_buf *b)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return PGPIPE_IO;
    char chunk[16384];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof chunk)) > 0)
        if (pp_buf_append(b, chunk, (size_t)n) != PGPIPE_OK) {
            close(fd);
            return PGPIPE_NOMEM;
        }
    close(fd);
    return n < 0 ? PGPIPE_IO : PGPIPE_OK;
}

int pgpipe_pipefile_open(pgpipe_pipefile **out, const char *path, const char *text, size_t len)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_pipefile *pf = *out = pp_handle_new(sizeof *pf);
    if (!pf)
        return PGPIPE_NOMEM;
    if (!path)
        return pp_err(&pf->h.err, PGPIPE_MISUSE, "pgpipe_pipefile_open: path is NULL");
    pf->path = pp_strdup(path);
    pf->dir = pp_strdup(path);
    if (!pf->path || !pf->dir)
        return pp_err_nomem(&pf->h.err);
    char *slash = strrchr(pf->dir, '/');
    if (slash)
        *(slash == pf->dir ? slash + 1 : slash) = 0;
    else
        pf->dir[0] = 0;
    pgpipe_pipe_def *p = &pf->p;
    p->path = pf->path;
    p->history.keep_ok_ms = 7 * 86400000LL;
    p->history.keep_failed_ms = 30 * 86400000LL;
    p->history.keep_last = 100;
    {
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        char name[256];
        snprintf(name, sizeof name, "%s", base);
        char *dot = strrchr(name, '.');
        if (dot && dot != name)
            *dot = 0;
        p->name = rf_str(pf, name);
    }
    pp_buf file = { 0 };
    if (!text) {
        int rc = rf_read_file(path, &file);
        if (rc) {
            pp_buf_free(&file);
            return rc == PGPIPE_IO ? pp_err(&pf->h.err, PGPIPE_IO, "%s: %s", path, strerror(errno))
                                   : pp_err_nomem(&pf->h.err);
        }
        text = file.data ? file.data : "";
        len = file.len;
    }
    /* a UTF-8 byte order mark (Windows editors write one) is not part of line 1 */
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) {
        text += 3;
        len -= 3;
    }
    pp_buf acc = { 0 }, line = { 0 };
    int acc_line = 0;
    size_t i = 0;
    int lineno = 0;
    while (i < len && !pf->nomem) {
        size_t j = i;
        while (j < len && text[j] != '\n')
            j++;
        lineno++;
        line.len = 0;
        if (pp_buf_append(&line, text + i, j - i) != PGPIPE_OK) {
            pf->nomem = 1;
            break;
        }
        if (line.len && line.data[line.len - 1] == '\r')
            line.len--;
        if (pp_buf_putc(&line, 0) != PGPIPE_OK) {
            pf->nomem = 1;
            break;
        }
        i = j + 1;
        /* a NUL byte would end the line for every reader below (strlen):
        ** the rest of the line would be dropped without a word */
        const char *nul = memchr(line.data, 0, line.len - 1);
        if (nul) {
            rf_diag(pf, lineno, (int)(nul - line.data) + 1, "a NUL byte");
            continue;
        }
        const char *l = line.data;
        while (*l == ' ' || *l == '\t')
            l++;
        if (*l == '.' && isalpha((unsigned char)l[1])) {
            if (acc.len) {
                if (!rf_flush_sql(pf, &acc, acc_line, 1, lineno)) {
                    /* inside a quote: the line belongs to the SQL */
                    if (pp_buf_append(&acc, line.data, strlen(line.data)) != PGPIPE_OK ||
                        pp_buf_putc(&acc, '\n') != PGPIPE_OK) {
                        pf->nomem = 1;
                        break;
                    }
                    continue;
                }
                acc.len = 0;
            }
            rf_command(pf, lineno, l);
            continue;
        }
        if (!acc.len) {
            if (!*l || !strncmp(l, "--", 2))
                continue;
            acc_line = lineno;
        }
        if (pp_buf_append(&acc, line.data, strlen(line.data)) != PGPIPE_OK ||
            pp_buf_putc(&acc, '\n') != PGPIPE_OK) {
            pf->nomem = 1;
            break;
        }
        if (rf_flush_sql(pf, &acc, acc_line, 0, 0))
            acc.len = 0;
    }
    if (acc.len && !pf->nomem)
        rf_flush_sql(pf, &acc, acc_line, 1, 0);
    if (pf->blk_steps)
        rf_diag(pf, pf->blk_line, 0, "%s without .end", pf->blk_kind);
    pp_buf_free(&acc);
    pp_buf_free(&line);
    pp_buf_free(&file);
    rf_check_names(pf);
    rf_check_cycles(pf);
    rf_check_tables(pf);
    p->setup = pf->setup;
    p->sources = pf->src;
    p->workers = pf->wk;
    p->schedules = pf->sch;
    p->tasks = pf->task;
    p->alerts = pf->alert;
    if (pf->nomem)
        return pp_err_nomem(&pf->h.err);
    /* stable sort by line, then column (insertion sort: few diagnostics) */
    for (int a = 1; a < pf->ndiag; a++) {
        pgpipe_pipe_diag d = pf->diag[a];
        int b = a;
        while (b > 0 && rf_diag_cmp(&pf->diag[b - 1], &d) > 0) {
            pf->diag[b] = pf->diag[b - 1];
            b--;
        }
        pf->diag[b] = d;
    }
    if (pf->ndiag)
        return pp_err_at(&pf->h.err, PGPIPE_PARSE, path, pf->diag[0].line, pf->diag[0].column, 0,
                         "%d problem%s, the first: %s", pf->ndiag, pf->ndiag == 1 ? "" : "s",
                         pf->diag[0].message);
    return PGPIPE_OK;
}

const pgpipe_pipe_def *pgpipe_pipefile_def(const pgpipe_pipefile *pf)
{
    return pf ? &pf->p : NULL;
}

int pgpipe_pipefile_diag_count(const pgpipe_pipefile *pf)
{
    return pf ? pf->ndiag : 0;
}

const pgpipe_pipe_diag *pgpipe_pipefile_diag(const pgpipe_pipefile *pf, int i)
{
    return pf && i >= 0 && i < pf->ndiag ? &pf->diag[i] : NULL;
}

void pgpipe_pipefile_close(pgpipe_pipefile *pf)
{
    if (!pf)
        return;
    for (size_t i = 0; i < pf->nmem; i++)
        pp_free(pf->mem[i]);
    pp_free(pf->mem);
    pp_free(pf->diag);
    pp_free(pf->setup);
    for (int i = 0; i < pf->p.nschedules; i++)
        pp_free((void *)pf->sch[i].steps);
    for (int i = 0; i < pf->p.ntasks; i++)
        pp_free((void *)pf->task[i].steps);
    pp_free(pf->src);
    pp_free(pf->wk);
    pp_free(pf->sch);
    pp_free(pf->task);
    pp_free(pf->alert);
    pp_free(pf->tables);
    pp_free(pf->refs);
    pp_free(pf->path);
    pp_free(pf->dir);
    pp_free(pf);
}

PGPIPE_PRIVATE const char *run_list_item(const char *q, char *out, size_t size, size_t *n)
{
    const char *e = strchr(q, ',');
    size_t len = e ? (size_t)(e - q) : strlen(q);
    while (len && (*q == ' ' || *q == '\t'))
        q++, len--;
    while (len && (q[len - 1] == ' ' || q[len - 1] == '\t'))
        len--;
    size_t k = len < size ? len : 0;
    memcpy(out, q, k);
    out[k] = 0;
    *n = len;
    return e ? e + 1 : NULL;
}

#endif /* PGPIPE_OMIT_RUN */
