/*
** One step of a setup or a schedule/task body: a SQL statement, or one of
** the dot commands a pipeline file may use, run by the library itself so a
** C program gets the same pipeline as the shell. The options are the
** shell's (shell.c: cmd_install, cmd_migrate, cmd_load, cmd_read,
** cmd_refresh, cmd_partitions, cmd_dlq, cmd_log); what the shell prints
** becomes a log line here.
**
** A timeout bounds the whole run: every statement runs under a
** statement_timeout of the time left (the dot commands run their
** statements on the step's connection too), and a .load is cancelled when
** the time runs out (pgpipe_loader_cancel: its other connections have no
** statement_timeout). The connection's own statement_timeout is put back
** afterwards.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN

#include <dirent.h>
#include <errno.h>

#define STP_MAXW 64
#define STP_MAX_DEPTH 8

typedef struct stp_ctx {
    pgpipe_runner *r;
    PGconn *conn;
    int64_t deadline;    /* wall clock ms; 0 = none */
    int64_t timeout_ms;
    long long rows;
    pgpipe_error *err;
    int depth;           /* .read nesting */
    int check;           /* run_step_check: arguments only, nothing runs */
    const char *check_dir; /* run_step_check: the pipeline file's folder */
} stp_ctx;

/* What stp_arm returns in check mode: the arguments were fine up to the
** first thing that would run; every step passes it up as it is. */
#define STP_CHECKED 1000

/* ---- errors ------------------------------------------------------------- */

/* err = "FILE:LINE: [.cmd: ]inner message", keeping the inner SQLSTATE;
** a statement cancelled by the step's timeout becomes PGPIPE_BUSY. */
static int stp_fail(stp_ctx *x, const char *file, int line, const char *cmd, int code,
                   const char *msg, const char *sqlstate)
{
    char state[6];
    snprintf(state, sizeof state, "%s", sqlstate ? sqlstate : "");
    char m[1024];
    snprintf(m, sizeof m, "%s", msg ? msg : "failed");
    if (x->check && !x->depth) /* the pipeline file's check says where itself */
        return pp_err(x->err, code, "%s%s%s", cmd ? cmd : "", cmd ? ": " : "", m);
    if (x->check) /* in a file the step reads: that file's place */
        return pp_err(x->err, code, "%s:%d: %s%s%s", file, line, cmd ? cmd : "",
                      cmd ? ": " : "", m);
    int timed_out = x->deadline && !strcmp(state, "57014") && run_now_ms() >= x->deadline - 50;
    if (timed_out)
        code = PGPIPE_BUSY;
    pp_err(x->err, code, "%s:%d: %s%s%s%s%s%s%s", file, line, cmd ? cmd : "", cmd ? ": " : "",
           timed_out ? "timed out: " : "", m, *state ? " (SQLSTATE " : "", state, *state ? ")" : "");
    if (x->err)
        memcpy(x->err->sqlstate, state, sizeof state);
    return code;
}

static int stp_failf(stp_ctx *x, const char *file, int line, const char *cmd, int code,
                    const char *fmt, ...) PP_PRINTF(6, 7);
static int stp_failf(stp_ctx *x, const char *file, int line, const char *cmd, int code,
                    const char *fmt, ...)
{
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return stp_fail(x, file, line, cmd, code, m, NULL);
}

static int stp_fail_err(stp_ctx *x, const char *file, int line, const char *cmd,
                       const pgpipe_error *e)
{
    return stp_fail(x, file, line, cmd, e->code ? e->code : PGPIPE_ERROR, e->message, e->sqlstate);
}

/* ---- the timeout -------------------------------------------------------- */

/* Before a statement: statement_timeout = the time left (at least 1 ms). */
static int stp_arm(stp_ctx *x, const char *file, int line, const char *cmd)
{
    if (x->check)
        return STP_CHECKED;
    if (!x->deadline)
        return PGPIPE_OK;
    int64_t left = x->deadline - run_now_ms();
    if (left <= 0)
        return stp_failf(x, file, line, cmd, PGPIPE_BUSY, "timed out: the steps ran longer than %lld ms",
                        (long long)x->timeout_ms);
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)left);
    const char *p[1] = { v };
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pp_exec(x->conn, "SELECT set_config('statement_timeout', $1, false)", 1, p, NULL, &e,
                "setting the step's timeout"))
        return stp_fail_err(x, file, line, cmd, &e);
    return PGPIPE_OK;
}

/* ---- words and options -------------------------------------------------- */

/* Cut a dot command line into words as the pipeline file reads them:
** blanks separate, '...' and "..." quote (\" and \\ inside "..."). The
** words point into scratch (strlen(line) + 1 bytes). -1: a quote is not
** closed, or too many words. */
static int stp_words(const char *line, char *scratch, char **out, int max)
{
    int n = 0;
    const char *p = line;
    char *w = scratch;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (!*p)
            return n;
        if (n == max)
            return -1;
        out[n++] = w;
        while (*p && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            if (*p == '\'' || *p == '"') {
                char q = *p++;
                while (*p && *p != q) {
                    if (q == '"' && *p == '\\' && (p[1] == '"' || p[1] == '\\'))
                        p++;
                    *w++ = *p++;
                }
                if (!*p)
                    return -1;
                p++;
            } else {
                *w++ = *p++;
            }
        }
        *w++ = 0;
    }
}

typedef struct stp_opt {
    const char *name, *alias;
    int flag;
} stp_opt;

typedef struct stp_args {
    const char *pos[8];
    int npos;
    const char *val[32];
} stp_args;

/* Sort words[from..nw) into the options of spec and positional words. */
static int stp_args_parse(stp_ctx *x, const char *file, int line, const char *cmd, char **w, int nw,
                         int from, const stp_opt *spec, stp_args *a)
{
    memset(a, 0, sizeof *a);
    for (int i = from; i < nw; i++) {
        const char *s = w[i];
        if (strncmp(s, "--", 2) != 0) {
            if (a->npos == 8)
                return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "too many arguments");
            a->pos[a->npos++] = s;
            continue;
        }
        const char *eq = strchr(s, '=');
        size_t n = eq ? (size_t)(eq - s) : strlen(s);
        int k = -1;
        for (int j = 0; spec && spec[j].name && k < 0; j++)
            if ((strlen(spec[j].name) == n && !strncmp(spec[j].name, s, n)) ||
                (spec[j].alias && strlen(spec[j].alias) == n && !strncmp(spec[j].alias, s, n)))
                k = j;
        if (k < 0)
            return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "unknown option %.*s", (int)n, s);
        if (spec[k].flag)
            a->val[k] = "";
        else if (eq)
            a->val[k] = eq + 1;
        else if (i + 1 < nw)
            a->val[k] = w[++i];
        else
            return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "%s needs a value", spec[k].name);
        if (!spec[k].flag && !a->val[k][0]) /* never "any" or the default */
            return stp_failf(x, file, line, cmd, PGPIPE_MISUSE,
                             "%s is empty (leave the option out for its default)", spec[k].name);
    }
    return PGPIPE_OK;
}

static const char *stp_get(const stp_opt *spec, const stp_args *a, const char *name)
{
    for (int j = 0; spec[j].name; j++)
        if (!strcmp(spec[j].name, name))
            return a->val[j];
    return NULL;
}

static int stp_num(stp_ctx *x, const char *file, int line, const char *cmd, const char *what,
                  const char *v, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long n = v ? strtoll(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || n < lo || n > hi)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "%s: expected a whole number from %lld to "
                        "%lld, got \"%s\"", what, lo, hi, v ? v : "");
    *out = n;
    return PGPIPE_OK;
}

/* A path of a step: relative ones are against the pipeline file's folder. */
static char *stp_path_in(const char *dir, const char *p)
{
    if (p[0] == '/' || !dir || !dir[0])
        return pp_strdup(p);
    size_t n = strlen(dir) + strlen(p) + 2;
    char *s = pp_malloc(n);
    if (s)
        snprintf(s, n, "%s/%s", dir, p);
    return s;
}

static char *stp_path(const pgpipe_runner *r, const char *p)
{
    return stp_path_in(r ? r->base_dir : NULL, p);
}

/* ---- the dot commands --------------------------------------------------- */

static int stp_steps_text(stp_ctx *x, const char *file, const char *text, size_t len);

static int stp_install(stp_ctx *x, const char *file, int line, char **w, int nw)
{
    static const stp_opt spec[] = { { "--example", NULL, 1 }, { NULL, NULL, 0 } };
    stp_args a;
    int rc = stp_args_parse(x, file, line, ".install", w, nw, 1, spec, &a);
    if (rc)
        return rc;
    if (a.npos)
        return stp_failf(x, file, line, ".install", PGPIPE_MISUSE, "unexpected \"%s\"", a.pos[0]);
    if ((rc = stp_arm(x, file, line, ".install")))
        return rc;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    PQnoticeProcessor old = PQsetNoticeProcessor(x->conn, pp_notice_to_log, (void *)"run");
    rc = a.val[0] ? pgpipe_example_install(x->conn, NULL, &e) : pgpipe_schema_install(x->conn, NULL, &e);
    PQsetNoticeProcessor(x->conn, old, NULL);
    return rc ? stp_fail_err(x, file, line, ".install", &e) : PGPIPE_OK;
}

static int stp_migrate(stp_ctx *x, const char *file, int line, char **w, int nw)
{
    static const stp_opt spec[] = { { "--status", NULL, 1 }, { "--dry-run", NULL, 1 },
                                   { "--baseline", NULL, 0 }, { "--repair", NULL, 1 },
                                   { "--resume-from", NULL, 0 }, { "--redo", NULL, 0 },
                                   { NULL, NULL, 0 } };
    const char *cmd = ".migrate";
    stp_args a;
    int rc = stp_args_parse(x, file, line, cmd, w, nw, 1, spec, &a);
    if (rc)
        return rc;
    if (a.npos > 1)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "unexpected \"%s\"", a.pos[1]);
    pgpipe_migrate_options o;
    pgpipe_migrate_options_init(&o);
    long long n = 0;
    if (a.val[4] && (rc = stp_num(x, file, line, cmd, "--resume-from", a.val[4], 1, 1000000000, &n)))
        return rc;
    o.resume_from = (int)n;
    n = 0;
    if (a.val[5] && (rc = stp_num(x, file, line, cmd, "--redo", a.val[5], 1, 1000000000, &n)))
        return rc;
    o.redo = (int)n;
    if (o.resume_from && o.redo)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--resume-from and --redo: one or the other");
    if (a.val[1])
        o.flags |= PGPIPE_MIGRATE_DRY_RUN;
    if (a.val[3])
        o.flags |= PGPIPE_MIGRATE_REPAIR;
    o.baseline_version = a.val[2];
    char *dir = stp_path(x->r, a.npos ? a.pos[0] : "migrations");
    if (!dir)
        return stp_failf(x, file, line, cmd, PGPIPE_NOMEM, "out of memory");
    o.dir = dir;
    struct stat st;
    if (x->check) { /* the file's check looks at the folder itself */
        pp_free(dir);
        return STP_CHECKED;
    }
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rc = stp_failf(x, file, line, cmd, PGPIPE_IO, "no such directory: %s", dir);
        pp_free(dir);
        return rc;
    }
    if ((rc = stp_arm(x, file, line, cmd))) {
        pp_free(dir);
        return rc;
    }
    pgpipe_migrator *m = NULL;
    PQnoticeProcessor old = PQsetNoticeProcessor(x->conn, pp_notice_to_log, (void *)"run");
    rc = pgpipe_migrator_open(&m, x->conn, &o);
    if (rc == PGPIPE_OK)
        rc = a.val[0] ? pgpipe_migrate_status(m) : pgpipe_migrate_run(m);
    PQsetNoticeProcessor(x->conn, old, NULL);
    int len = m ? pgpipe_migrate_format(m, NULL, 0) : 0;
    char *text = len > 0 ? pp_malloc((size_t)len + 1) : NULL;
    if (text) {
        pgpipe_migrate_format(m, text, (size_t)len + 1);
        char ln[16];
        snprintf(ln, sizeof ln, "%d", line);
        run_log(x->r, PGPIPE_LOG_INFO, ".migrate", "dir", dir, "file", file, "line", ln, "report",
                text, NULL);
        pp_free(text);
    }
    if (rc != PGPIPE_OK) {
        const pgpipe_error *e = m ? pgpipe_errinfo(m) : NULL;
        if (e)
            rc = stp_fail_err(x, file, line, cmd, e);
        else
            rc = stp_failf(x, file, line, cmd, rc, "out of memory");
    }
    pgpipe_migrator_close(m);
    pp_free(dir);
    return rc;
}

/* .load stops after the batch during which the time ran out or the runner
** was asked to stop (running it again resumes it). */
typedef struct stp_load_ud {
    stp_ctx *x;
    int stopped;
} stp_load_ud;

static int stp_load_progress(void *ud, const pgpipe_load_progress *p)
{
    (void)p;
    stp_load_ud *u = ud;
    if ((u->x->deadline && run_now_ms() >= u->x->deadline) || run_stopping(u->x->r)) {
        u->stopped = 1;
        return 1;
    }
    return 0;
}

/* A load past the deadline is cancelled (pgpipe_loader_cancel) by a
** watchdog thread: a slow batch on any of its connections does not
** outlive it. */
typedef struct stp_watch {
    pgpipe_loader *l;
    int64_t deadline;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, fired;
} stp_watch;

static void *stp_watch_thread(void *arg)
{
    stp_watch *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->done) {
        int64_t now = run_now_ms();
        if (now >= w->deadline) {
            w->fired = 1;
            pgpipe_loader_cancel(w->l);
            break;
        }
        struct timespec ts = { (time_t)(w->deadline / 1000), (long)(w->deadline % 1000) * 1000000 };
        pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Split a comma list in place into at most max parts. */
static int stp_list(char *buf, char **parts, int max)
{
    int n = 0;
    for (char *t = buf, *next; t; t = next) {
        next = strchr(t, ',');
        if (next)
            *next++ = 0;
        if (!*t || n == max)
            return -1;
        parts[n++] = t;
    }
    return n;
}

static int stp_load(stp_ctx *x, const char *file, int line, char **w, int nw)
{
    static const stp_opt spec[] = {
        { "--format", NULL, 0 },        { "--event-type-field", NULL, 0 }, { "--event-type", "--type", 0 },
        { "--source-field", NULL, 0 },  { "--source", NULL, 0 },           { "--payload-field", NULL, 0 },
        { "--received-at-field", NULL, 0 }, { "--require", NULL, 0 },      { "--table", NULL, 0 },
        { "--map", NULL, 0 },           { "--name", NULL, 0 },             { "--key", NULL, 0 },
        { "--channel", NULL, 0 },       { "--batch-rows", NULL, 0 },       { "--batch-bytes", NULL, 0 },
        { "--connections", NULL, 0 },   { "--max-record-bytes", NULL, 0 }, { "--delimiter", NULL, 0 },
        { NULL, NULL, 0 } };
    const char *cmd = ".load";
    stp_args a;
    int rc = stp_args_parse(x, file, line, cmd, w, nw, 1, spec, &a);
    if (rc)
        return rc;
    if (a.npos != 1)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, a.npos ? "one FILE only" : "needs a FILE");
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.install_schema = 0;
    const char *fmt = stp_get(spec, &a, "--format");
    if (fmt) {
        if (!strcmp(fmt, "csv"))
            o.format = PGPIPE_FORMAT_CSV;
        else if (!strcmp(fmt, "ndjson"))
            o.format = PGPIPE_FORMAT_NDJSON;
        else if (!strcmp(fmt, "json"))
            o.format = PGPIPE_FORMAT_JSON;
        else if (strcmp(fmt, "auto"))
            return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--format: expected csv|ndjson|json|auto, "
                            "got \"%s\"", fmt);
    }
    o.event_type_field = stp_get(spec, &a, "--event-type-field");
    o.event_type_value = stp_get(spec, &a, "--event-type");
    o.source_field = stp_get(spec, &a, "--source-field");
    o.source_value = stp_get(spec, &a, "--source");
    o.payload_field = stp_get(spec, &a, "--payload-field");
    o.received_at_field = stp_get(spec, &a, "--received-at-field");
    o.target = stp_get(spec, &a, "--table");
    o.source_name = stp_get(spec, &a, "--name");
    o.load_key = stp_get(spec, &a, "--key");
    if (stp_get(spec, &a, "--channel"))
        o.notify_channel = stp_get(spec, &a, "--channel");
    long long n = 0;
    struct { const char *name; long long lo, hi; long long *dst; } nums[4];
    long long batch_rows = o.batch_rows, batch_bytes = (long long)o.batch_bytes, conns = 1,
              maxrec = (long long)o.max_record_bytes;
    nums[0].name = "--batch-rows", nums[0].lo = 1, nums[0].hi = INT_MAX, nums[0].dst = &batch_rows;
    nums[1].name = "--batch-bytes", nums[1].lo = 1, nums[1].hi = LLONG_MAX, nums[1].dst = &batch_bytes;
    nums[2].name = "--connections", nums[2].lo = 1, nums[2].hi = 8, nums[2].dst = &conns;
    nums[3].name = "--max-record-bytes", nums[3].lo = 1, nums[3].hi = LLONG_MAX, nums[3].dst = &maxrec;
    for (int i = 0; i < 4; i++) {
        const char *v = stp_get(spec, &a, nums[i].name);
        if (v && (rc = stp_num(x, file, line, cmd, nums[i].name, v, nums[i].lo, nums[i].hi, &n)))
            return rc;
        if (v)
            *nums[i].dst = n;
    }
    o.batch_rows = (int)batch_rows;
    o.batch_bytes = (size_t)batch_bytes;
    o.max_record_bytes = (size_t)maxrec;
    const char *delim = stp_get(spec, &a, "--delimiter");
    if (delim) {
        if (!strcmp(delim, "tab"))
            o.csv_delimiter = '\t';
        else if (strlen(delim) == 1 && delim[0] != '"' && delim[0] != '\n' && delim[0] != '\r')
            o.csv_delimiter = (unsigned char)delim[0];
        else
            return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--delimiter: expected one character or "
                            "tab, got \"%s\"", delim);
        /* a delimiter means CSV, and wins over the name's guess */
        if (o.format == PGPIPE_FORMAT_AUTO)
            o.format = PGPIPE_FORMAT_CSV;
        else if (o.format != PGPIPE_FORMAT_CSV)
            return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--delimiter: only for --format csv");
    }
    const char *map = stp_get(spec, &a, "--map"), *req = stp_get(spec, &a, "--require");
    if (!o.target != !map)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, o.target ? "--table: needs --map" :
                        "--map: needs --table");
    if (o.source_field && o.source_value)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--source: does not go with --source-field");
    if (o.event_type_field && o.event_type_value)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--event-type: does not go with --event-type-field");
    char *mapbuf = map ? pp_strdup(map) : NULL, *reqbuf = req ? pp_strdup(req) : NULL;
    char *path = stp_path(x->r, a.pos[0]);
    char *parts[64];
    const char *reqs[64];
    pgpipe_load_column cols[64];
    pgpipe_loader *l = NULL;
    if ((map && !mapbuf) || (req && !reqbuf) || !path) {
        rc = stp_failf(x, file, line, cmd, PGPIPE_NOMEM, "out of memory");
        goto out;
    }
    if (reqbuf) {
        int k = stp_list(reqbuf, parts, 64);
        if (k < 0) {
            rc = stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--require: an empty entry or more than 64");
            goto out;
        }
        for (int i = 0; i < k; i++)
            reqs[i] = parts[i];
        o.required = reqs;
        o.nrequired = k;
    }
    if (mapbuf) {
        int k = stp_list(mapbuf, parts, 64);
        if (k < 0) {
            rc = stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--map: an empty entry or more than 64");
            goto out;
        }
        for (int i = 0; i < k; i++) {
            char *t = parts[i], *eq = strchr(t, '=');
            memset(&cols[i], 0, sizeof cols[i]);
            cols[i].column = t;
            cols[i].field = t;
            if (eq) {
                *eq = 0;
                if (eq[1] == '\'') {
                    cols[i].field = NULL;
                    cols[i].value = eq + 2;
                    size_t vl = strlen(eq + 2);
                    if (vl && eq[1 + vl] == '\'')
                        eq[1 + vl] = 0;
                } else if (!strncmp(eq + 1, "json:", 5)) {
                    cols[i].field = eq + 6;
                    cols[i].json = 1;
                } else {
                    cols[i].field = eq + 1;
                }
                if (!*t || (!cols[i].value && !*cols[i].field)) {
                    rc = stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--map: \"%s=%s\": expected "
                                   "col=field, col=json:field or col='text'", t, eq + 1);
                    goto out;
                }
            }
        }
        int j, i;
        if (copy_mapping_twice(cols, k, &j, &i)) {
            rc = stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--map: column %s is mapped twice",
                           cols[i].column);
            goto out;
        }
        o.columns = cols;
        o.ncolumns = k;
    }
    if (conns > 1) {
        o.pool = x->r ? x->r->pool : NULL;
        o.connections = (int)conns;
    } else {
        o.conn = x->conn;
        o.connections = 1;
    }
    stp_load_ud u = { x, 0 };
    o.progress = stp_load_progress;
    o.progress_ud = &u;
    if ((rc = stp_arm(x, file, line, cmd)))
        goto out;
    PQnoticeProcessor old = PQsetNoticeProcessor(x->conn, pp_notice_to_log, (void *)"run");
    rc = pgpipe_loader_open(&l, &o);
    stp_watch wd;
    memset(&wd, 0, sizeof wd);
    pthread_t wt;
    int watching = 0;
    if (rc == PGPIPE_OK && x->deadline) {
        wd.l = l;
        wd.deadline = x->deadline;
        pthread_mutex_init(&wd.mu, NULL);
        pthread_cond_init(&wd.cv, NULL); /* CLOCK_REALTIME, as run_now_ms */
        watching = pthread_create(&wt, NULL, stp_watch_thread, &wd) == 0;
        if (!watching) {
            pthread_mutex_destroy(&wd.mu);
            pthread_cond_destroy(&wd.cv);
        }
    }
    if (rc == PGPIPE_OK)
        rc = pgpipe_loader_load_file(l, path);
    if (watching) {
        pthread_mutex_lock(&wd.mu);
        wd.done = 1;
        pthread_cond_signal(&wd.cv);
        pthread_mutex_unlock(&wd.mu);
        pthread_join(wt, NULL);
        pthread_mutex_destroy(&wd.mu);
        pthread_cond_destroy(&wd.cv);
        if (wd.fired)
            u.stopped = 1;
    }
    PQsetNoticeProcessor(x->conn, old, NULL);
    pgpipe_load_summary s;
    memset(&s, 0, sizeof s);
    if (l)
        pgpipe_loader_summary(l, &s);
    if (s.load_id > 0) {
        char sum[512], ln[16];
        pgpipe_load_summary_format(&s, sum, sizeof sum);
        snprintf(ln, sizeof ln, "%d", line);
        run_log(x->r, rc ? PGPIPE_LOG_WARN : PGPIPE_LOG_INFO, ".load", "path", path, "file", file,
                "line", ln, "summary", sum, NULL);
        x->rows += s.rows_loaded;
    }
    if (u.stopped && x->deadline && run_now_ms() >= x->deadline)
        rc = stp_failf(x, file, line, cmd, PGPIPE_BUSY, "timed out after %lld ms (the batches committed "
                      "stay; the next run resumes the load)", (long long)x->timeout_ms);
    else if (rc == PGPIPE_OK && u.stopped)
        rc = stp_failf(x, file, line, cmd, PGPIPE_BUSY, "stopped: the runner is stopping (the next run "
                      "resumes the load)");
    else if (rc != PGPIPE_OK)
        rc = l ? stp_fail_err(x, file, line, cmd, pgpipe_errinfo(l))
               : stp_failf(x, file, line, cmd, rc, "out of memory");
out:
    pgpipe_loader_close(l);
    pp_free(mapbuf);
    pp_free(reqbuf);
    pp_free(path);
    return rc;
}

static int stp_read(stp_ctx *x, const char *file, int line, char **w, int nw)
{
    const char *cmd = ".read";
    if (nw != 2)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "expected one FILE");
    if (x->depth >= STP_MAX_DEPTH)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "nested more than %d deep (does a file "
                        "read itself?)", STP_MAX_DEPTH);
    /* The check reads the file too, as the step will (at the start, so a
    ** file reading itself, a directive or a step the run would refuse
    ** inside it are said then, not at every firing); the pipeline file's
    ** check says whether the top file exists. */
    if (x->check && (!strcmp(w[1], "-") || !x->check_dir))
        return STP_CHECKED;
    char *path = x->check ? stp_path_in(x->check_dir, w[1]) : stp_path(x->r, w[1]);
    if (!path)
        return stp_failf(x, file, line, cmd, PGPIPE_NOMEM, "out of memory");
    FILE *f = fopen(path, "rb");
    if (!f && x->check && !x->depth) { /* the pipeline file's check says it */
        pp_free(path);
        return STP_CHECKED;
    }
    if (!f) {
        int rc = stp_failf(x, file, line, cmd, PGPIPE_IO, "cannot open %s: %s", path, strerror(errno));
        pp_free(path);
        return rc;
    }
    pp_buf b = { 0 };
    char chunk[8192];
    size_t n;
    int rc = PGPIPE_OK;
    while (!rc && (n = fread(chunk, 1, sizeof chunk, f)) > 0)
        rc = pp_buf_append(&b, chunk, n);
    if (!rc && ferror(f))
        rc = PGPIPE_IO;
    fclose(f);
    const char *nul = rc ? NULL : memchr(b.data ? b.data : "", 0, b.len);
    if (rc)
        rc = stp_failf(x, file, line, cmd, rc, "cannot read %s", path);
    else if (nul) {
        int ln = 1;
        for (const char *q = b.data; q < nul; q++)
            ln += *q == '\n';
        x->depth++;
        rc = stp_failf(x, path, ln, NULL, PGPIPE_PARSE, "a NUL byte");
        x->depth--;
    } else {
        x->depth++;
        rc = stp_steps_text(x, path, b.data ? b.data : "", b.len);
        x->depth--;
    }
    pp_buf_free(&b);
    pp_free(path);
    return rc;
}

static int stp_refresh(stp_ctx *x, const char *file, int line, char **w, int nw)
{
    static const stp_opt spec[] = { { "--concurrently", NULL, 1 }, { NULL, NULL, 0 } };
    stp_args a;
    int rc = stp_args_parse(x, file, line, ".refresh", w, nw, 1, spec, &a);
    if (rc)
        return rc;
    if (a.npos != 1)
        return stp_failf(x, file, line, ".refresh", PGPIPE_MISUSE, "expected one VIEW");
    size_t qn = pgpipe_quote_ident(NULL, 0, a.pos[0], 1);
    char *q = pp_malloc(qn + 1);
    if (!q)
        return stp_failf(x, file, line, ".refresh", PGPIPE_NOMEM, "out of memory");
    pgpipe_quote_ident(q, qn + 1, a.pos[0], 1);
    pp_buf sql = { 0 };
    pp_buf_appendf(&sql, "REFRESH MATERIALIZED VIEW %s%s", a.val[0] ? "CONCURRENTLY " : "", q);
    pp_free(q);
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (!sql.data)
        rc = stp_failf(x, file, line, ".refresh", PGPIPE_NOMEM, "out of memory");
    else if (!(rc = stp_arm(x, file, line, ".refresh")) &&
             pp_exec(x->conn, sql.data, 0, NULL, NULL, &e, "refresh"))
        rc = stp_fail_err(x, file, line, ".refresh", &e);
    pp_buf_free(&sql);
    return rc;
}

static int stp_partitions(stp_ctx *x, const char *file, int line, char **w, int nw)
{
    static const stp_opt spec[] = { { "--detach-only", NULL, 1 }, { NULL, NULL, 0 } };
    const char *cmd = ".partitions";
    stp_args a;
    int rc = stp_args_parse(x, file, line, cmd, w, nw, 1, spec, &a);
    if (rc)
        return rc;
    int ahead = a.npos >= 1 && !strcmp(a.pos[0], "ahead");
    int retain = a.npos >= 1 && !strcmp(a.pos[0], "retain");
    if ((!ahead && !retain) || a.npos != 2)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "expected ahead DAYS or retain DAYS");
    if (ahead && a.val[0])
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--detach-only goes with retain");
    long long days;
    if ((rc = stp_num(x, file, line, cmd, "DAYS", a.pos[1], 1,
                      ahead ? PGPIPE_PARTITIONS_AHEAD_MAX : 36500, &days)))
        return rc;
    if ((rc = stp_arm(x, file, line, cmd)))
        return rc;
    const char *p[2] = { a.pos[1], a.val[0] ? "t" : "f" };
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pp_exec(x->conn, ahead ? "SELECT pgpipe.create_partitions($1::int, (now() AT TIME ZONE 'UTC')::date)"
                               : "SELECT pgpipe.drop_old_partitions($1::int, $2::bool)",
                ahead ? 1 : 2, p, &res, &e, ahead ? "partitions ahead" : "partitions retain"))
        return stp_fail_err(x, file, line, cmd, &e);
    char ln[16];
    snprintf(ln, sizeof ln, "%d", line);
    run_log(x->r, PGPIPE_LOG_INFO, ahead ? "partitions created" : a.val[0] ? "partitions detached"
                                                                           : "partitions dropped",
            "count", PQntuples(res) ? PQgetvalue(res, 0, 0) : "0", "days", a.pos[1], "file", file,
            "line", ln, NULL);
    PQclear(res);
    return PGPIPE_OK;
}

static int stp_dlq(stp_ctx *x, const char *file, int line, char **w, int nw)
{
    static const stp_opt spec[] = { { "--stage", NULL, 0 }, { "--source", NULL, 0 }, { "--error", NULL, 0 },
                                   { "--since", NULL, 0 }, { "--until", "--older-than", 0 },
                                   { "--all", NULL, 1 },   { "--table", NULL, 0 }, { "--status", NULL, 0 },
                                   { NULL, NULL, 0 } };
    const char *sub = nw > 1 ? w[1] : "";
    int replay = !strcmp(sub, "replay"), purge = !strcmp(sub, "purge");
    if (!replay && !purge)
        return stp_failf(x, file, line, ".dlq", PGPIPE_MISUSE, "expected replay or purge (the others only "
                        "show: run them in the shell)");
    const char *cmd = replay ? ".dlq replay" : ".dlq purge";
    stp_args a;
    int rc = stp_args_parse(x, file, line, cmd, w, nw, 2, spec, &a);
    if (rc)
        return rc;
    pgpipe_dlq_filter f;
    pgpipe_dlq_filter_init(&f);
    if (a.npos > 1)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "unexpected \"%s\"", a.pos[1]);
    if (a.npos && (rc = stp_num(x, file, line, cmd, "ID", a.pos[0], 1, LLONG_MAX, &f.id)))
        return rc;
    f.stage = a.val[0];
    f.source = a.val[1];
    f.error_like = a.val[2];
    f.since = a.val[3];
    f.until = a.val[4];
    int all = a.val[5] != NULL;
    if (a.val[7])
        f.status = a.val[7];
    if (replay && a.val[7])
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "unknown option --status");
    if (purge && a.val[6])
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "unknown option --table");
    int filtered = f.id > 0 || f.stage || f.source || f.error_like || f.since || f.until || a.val[7];
    if (all && filtered)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "--all: does not go with an ID or a filter");
    if (!all && !filtered)
        return stp_failf(x, file, line, cmd, PGPIPE_MISUSE, "needs an ID, a filter or --all");
    if ((rc = stp_arm(x, file, line, cmd)))
        return rc;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    long long ok = 0, bad = 0;
    if (replay)
        rc = pgpipe_dlq_replay(x->conn, &f, a.val[6], NULL, &ok, &bad, &e);
    else {
        if (all)
            f.status = "any";
        rc = pgpipe_dlq_purge(x->conn, &f, &ok, &e);
    }
    if (rc)
        return stp_fail_err(x, file, line, cmd, &e);
    char so[24], sb[24], ln[16];
    snprintf(so, sizeof so, "%lld", ok);
    snprintf(sb, sizeof sb, "%lld", bad);
    snprintf(ln, sizeof ln, "%d", line);
    if (replay)
        run_log(x->r, PGPIPE_LOG_INFO, "dead letters replayed", "replayed", so, "refused", sb, "file",
                file, "line", ln, NULL);
    else
        run_log(x->r, PGPIPE_LOG_INFO, "dead letters purged", "purged", so, "file", file, "line", ln, NULL);
    x->rows += ok;
    return PGPIPE_OK;
}

/* .log LEVEL: the log's level (as the shell's .log); .log LEVEL MESSAGE...:
** one log line at that level. */
static int stp_logcmd(stp_ctx *x, const char *file, int line, char **w, int nw)
{
    static const char *const names[] = { "debug", "info", "notice", "warn", "error", "off", NULL };
    static const int lv[] = { PGPIPE_LOG_DEBUG, PGPIPE_LOG_INFO, PGPIPE_LOG_INFO, PGPIPE_LOG_WARN,
                              PGPIPE_LOG_ERROR, PGPIPE_LOG_OFF };
    int k = -1;
    for (int i = 0; nw > 1 && names[i]; i++)
        if (!strcasecmp(w[1], names[i]))
            k = i;
    if (k < 0)
        return stp_failf(x, file, line, ".log", PGPIPE_MISUSE, "expected a level (debug|info|notice|warn|"
                        "error|off)%s%s%s", nw > 1 ? ", got \"" : "", nw > 1 ? w[1] : "", nw > 1 ? "\"" : "");
    if (nw > 2 && lv[k] == PGPIPE_LOG_OFF)
        return stp_failf(x, file, line, ".log", PGPIPE_MISUSE, "off is no level for a message");
    if (x->check)
        return STP_CHECKED;
    if (nw == 2) {
        pgpipe_log_set_level(lv[k]);
        return PGPIPE_OK;
    }
    pp_buf m = { 0 };
    for (int i = 2; i < nw; i++)
        pp_buf_appendf(&m, "%s%s", i > 2 ? " " : "", w[i]);
    char ln[16];
    snprintf(ln, sizeof ln, "%d", line);
    run_log(x->r, lv[k], m.data ? m.data : "", "file", file, "line", ln, NULL);
    pp_buf_free(&m);
    return PGPIPE_OK;
}

static int stp_dot(stp_ctx *x, const char *file, int line, const char *text)
{
    size_t n = strlen(text);
    char *scratch = pp_malloc(n + 1);
    char *w[STP_MAXW];
    if (!scratch)
        return stp_failf(x, file, line, NULL, PGPIPE_NOMEM, "out of memory");
    int nw = stp_words(text, scratch, w, STP_MAXW);
    int rc;
    if (nw <= 0 || w[0][0] != '.')
        rc = stp_failf(x, file, line, NULL, PGPIPE_PARSE, "%s: not a dot command (an unclosed quote?)", text);
    else if (!strcmp(w[0], ".install"))
        rc = stp_install(x, file, line, w, nw);
    else if (!strcmp(w[0], ".migrate"))
        rc = stp_migrate(x, file, line, w, nw);
    else if (!strcmp(w[0], ".load"))
        rc = stp_load(x, file, line, w, nw);
    else if (!strcmp(w[0], ".read"))
        rc = stp_read(x, file, line, w, nw);
    else if (!strcmp(w[0], ".refresh"))
        rc = stp_refresh(x, file, line, w, nw);
    else if (!strcmp(w[0], ".partitions"))
        rc = stp_partitions(x, file, line, w, nw);
    else if (!strcmp(w[0], ".dlq"))
        rc = stp_dlq(x, file, line, w, nw);
    else if (!strcmp(w[0], ".log"))
        rc = stp_logcmd(x, file, line, w, nw);
    else
        rc = stp_failf(x, file, line, w[0], PGPIPE_MISUSE, "not a command a pipeline may run (.install, "
                      ".migrate, .load, .read, .refresh, .partitions, .dlq, .log)");
    pp_free(scratch);
    return rc;
}

/* pp_exec of one statement as simple query text, its rows read one at a
** time and dropped (single-row mode): a body's SELECT of a million rows is
** counted, never held in memory whole. The result kept is what PQexec
** would return (the last one, an error first; a COPY state as it comes),
** so the row count is its command tag's (PQcmdTuples). */
static int pp_exec_rows_discarded(PGconn *conn, const char *sql, PGresult **res,
                                  pgpipe_error *err, const char *context)
{
    if (!PQsendQuery(conn, sql))
        return pp_exec_check(conn, NULL, res, err, context);
    (void)PQsetSingleRowMode(conn);
    PGresult *keep = NULL, *g;
    while ((g = PQgetResult(conn))) {
        ExecStatusType st = PQresultStatus(g);
        if (st == PGRES_SINGLE_TUPLE) {
            PQclear(g);
            continue;
        }
        if (keep && PQresultStatus(keep) == PGRES_FATAL_ERROR) {
            PQclear(g);
        } else {
            PQclear(keep);
            keep = g;
        }
        if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
            break; /* as PQexec: the caller sees the COPY state */
    }
    return pp_exec_check(conn, keep, res, err, context);
}

static int stp_sql(stp_ctx *x, const char *file, int line, const char *sql)
{
    int rc = stp_arm(x, file, line, NULL);
    if (rc)
        return rc;
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pp_exec_rows_discarded(x->conn, sql, &res, &e, "SQL")) {
        /* "SQL: message": the context pp_exec put in front says nothing here */
        const char *m = !strncmp(e.message, "SQL: ", 5) ? e.message + 5 : e.message;
        return stp_fail(x, file, line, NULL, e.code ? e.code : PGPIPE_DB, m, e.sqlstate);
    }
    const char *t = PQcmdTuples(res);
    if (t && *t)
        x->rows += atoll(t);
    PQclear(res);
    return PGPIPE_OK;
}

/* A script (.read): SQL statements, and lines starting with '.' between
** them as dot commands, as the pipeline file itself is read. */
static int stp_steps_text(stp_ctx *x, const char *file, const char *text, size_t len)
{
    pp_buf acc = { 0 };
    int acc_line = 1, lineno = 0, rc = PGPIPE_OK;
    const char *p = text, *end = text + len;
    for (;;) {
        int at_end = p >= end;
        const char *nl = at_end ? end : memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        lineno += !at_end;
        const char *q = p;
        while (q < nl && (*q == ' ' || *q == '\t'))
            q++;
        int dot = !at_end && q < nl && *q == '.';
        if (dot || at_end) {
            /* the SQL gathered so far, unless the dot line is inside a quote */
            pgpipe_sql_split *s = NULL;
            if (pgpipe_sql_split_open(&s, acc.data ? acc.data : "", acc.len, file) != PGPIPE_OK) {
                pgpipe_sql_split_close(s);
                rc = stp_failf(x, file, acc_line, NULL, PGPIPE_NOMEM, "out of memory");
                break;
            }
            pgpipe_sql_stmt st;
            int r2, nstmt = 0;
            while ((r2 = pgpipe_sql_split_next(s, &st)) == PGPIPE_ROW)
                nstmt++;
            int inside = r2 == PGPIPE_PARSE && pgpipe_sql_split_incomplete(s);
            if (r2 == PGPIPE_PARSE && (!inside || at_end)) {
                const pgpipe_error *e = pgpipe_errinfo(s);
                rc = stp_fail(x, file, acc_line + (int)e->line - 1, NULL, PGPIPE_PARSE, e->message, NULL);
                pgpipe_sql_split_close(s);
                break;
            }
            pgpipe_sql_split_close(s);
            if (!inside) {
                if (nstmt) {
                    pgpipe_sql_split_open(&s, acc.data, acc.len, file);
                    while (!rc && pgpipe_sql_split_next(s, &st) == PGPIPE_ROW) {
                        char *sql = pp_strndup(st.sql, st.len);
                        rc = sql ? stp_sql(x, file, acc_line + (int)st.line - 1, sql)
                                 : stp_failf(x, file, acc_line, NULL, PGPIPE_NOMEM, "out of memory");
                        if (rc == STP_CHECKED)
                            rc = PGPIPE_OK;
                        pp_free(sql);
                    }
                    pgpipe_sql_split_close(s);
                    if (rc)
                        break;
                }
                acc.len = 0;
                acc_line = lineno + 1;
                if (at_end)
                    break;
                char *cmd = pp_strndup(q, (size_t)(nl - q));
                rc = cmd ? stp_dot(x, file, lineno, cmd) : stp_failf(x, file, lineno, NULL, PGPIPE_NOMEM,
                                                                   "out of memory");
                if (rc == STP_CHECKED)
                    rc = PGPIPE_OK;
                pp_free(cmd);
                if (rc)
                    break;
                p = nl < end ? nl + 1 : end;
                continue;
            }
        }
        if (!acc.len)
            acc_line = lineno;
        if (pp_buf_append(&acc, p, (size_t)(nl - p)) || pp_buf_append(&acc, "\n", 1)) {
            rc = stp_failf(x, file, lineno, NULL, PGPIPE_NOMEM, "out of memory");
            break;
        }
        p = nl < end ? nl + 1 : end;
    }
    pp_buf_free(&acc);
    return rc;
}

PGPIPE_PRIVATE int run_session_reset(PGconn *conn, pgpipe_error *err)
{
    return pp_exec(conn, "SET SESSION AUTHORIZATION DEFAULT; RESET ALL; RESET ROLE; CLOSE ALL",
                   0, NULL, NULL, err, "resetting the session");
}

PGPIPE_PRIVATE int run_steps_exec(pgpipe_runner *r, PGconn *conn, const pgpipe_pipe_step *steps,
                                  int n, int64_t timeout_ms, long long *rows, pgpipe_error *err)
{
    if (rows)
        *rows = 0;
    stp_ctx x;
    memset(&x, 0, sizeof x);
    x.r = r;
    x.conn = conn;
    x.err = err;
    x.timeout_ms = timeout_ms;
    x.deadline = timeout_ms > 0 ? run_now_ms() + timeout_ms : 0;
    char *saved = NULL;
    if (x.deadline) {
        PGresult *res = NULL;
        if (pp_exec(conn, "SELECT current_setting('statement_timeout')", 0, NULL, &res, err,
                    "reading statement_timeout"))
            return err ? err->code : PGPIPE_DB;
        saved = pp_strdup(PQgetvalue(res, 0, 0));
        PQclear(res);
        if (!saved)
            return pp_err_nomem(err);
    }
    int rc = PGPIPE_OK;
    const char *file = r->path ? r->path : "pipeline";
    for (int i = 0; i < n && !rc; i++) {
        const pgpipe_pipe_step *s = &steps[i];
        rc = s->kind == PGPIPE_PIPE_SQL ? stp_sql(&x, file, s->line, s->text)
                                        : stp_dot(&x, file, s->line, s->text);
    }
    if (saved) {
        /* a failed statement may have left a transaction block aborted */
        if (PQtransactionStatus(conn) == PQTRANS_INERROR)
            pp_rollback_open(conn);
        const char *p[1] = { saved };
        pp_exec(conn, "SELECT set_config('statement_timeout', $1, false)", 1, p, NULL, NULL, NULL);
        pp_free(saved);
    }
    if (rows)
        *rows = x.rows;
    return rc;
}

PGPIPE_PRIVATE int run_step_check(const char *text, const char *dir, pgpipe_error *err)
{
    stp_ctx x;
    memset(&x, 0, sizeof x);
    x.err = err;
    x.check = 1;
    x.check_dir = dir;
    int rc = stp_dot(&x, "", 0, text);
    return rc == STP_CHECKED ? PGPIPE_OK : rc;
}

#endif /* PGPIPE_OMIT_RUN */
