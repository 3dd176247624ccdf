/*
** Sources (watched folders, the HTTP source) and the workers of each event
** type.
**
** Watched folders: one thread polls every folder. A file is taken when it
** matches the pattern, is not hidden or partial (".name", "*.tmp",
** "*.part") and its mtime is older than --settle (with --settle 0: it was
** seen unchanged, size and mtime, on two polls in a row): a file still
** being written waits. Each
** file is loaded once across restarts and instances: the load key is the
** source, path, size and mtime, a session advisory lock on its hash is held
** while loading (an instance that cannot take it skips the file), and the
** loader's resume makes a second load of a loaded file skip every batch.
** Then the file is moved into the done folder (made when missing; a file
** already gone was moved by another instance) or deleted. A failed load
** leaves the file, is retried with backoff, and after RSRC_MAX_FAILURES
** failures the file is moved into DIR/failed.
**
** Reload: a folder, HTTP source or workers line whose settings are the same
** keeps running (with its counters); the others are stopped and started.
** Nothing here points into a pipeline file's tree: settings are copied.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fnmatch.h>

#define RSRC_MAX_FAILURES 5
#define RSRC_BACKOFF_MAX_MS 300000

/* ---- state -------------------------------------------------------------- */

typedef struct rsrc_file {
    char *name;
    long long size;
    int64_t mtime_ns;
    int unchanged;        /* polls in a row it was seen as it is */
    int failures;
    int64_t next_try;     /* wall clock ms: not before (backoff) */
    int seen;             /* in the current listing */
} rsrc_file;

typedef struct rsrc_folder {
    char *name, *dir, *pattern, *format, *done_dir, *table, *event_type, *event_type_field;
    int delete_after;
    int64_t settle_ms, poll_ms;
    int line;
    int64_t next_poll;
    int dir_errno;        /* the folder's last opendir error, said once */
    rsrc_file *files;
    int nfiles, cfiles;
    long long loaded, rows, dead, failures; /* under run_sources.mu */
} rsrc_folder;

typedef struct rsrc_http {
    char *name, *listen, *table, *event_type, *event_type_field, *signature, *secret_env, *spool;
    int line;
#ifndef PGPIPE_OMIT_HTTP
    pgpipe_http *h;
#else
    void *h;
#endif
    pthread_t th;
    int running;
} rsrc_http;

/* A CDC source: a thread streams (pgpipe_cdc_run in slices of
** --slot-check, 10 s, between which it reads the slot on the source for
** /metrics and the slot guard); a failure that does not heal by itself (the
** stream heals lost connections) is logged and tried again with a backoff
** up to a minute.
**
** The slot guard (run_file.h): paused is the state the workers follow;
** rsrc_guard_apply sets every workers handle's pause from the guards of
** all CDC sources, so two sources pausing the same workers, a reload that
** starts new workers, or a source stopped while paused all end right. A
** dropped slot is made again with a snapshot (resnap), whatever --snapshot
** says: the changes in between are lost, the snapshot is what recovers. */
typedef struct rsrc_cdc {
    char *name, *conninfo, *env, *slot, *publication, *tables, *pause_workers;
    int snapshot, no_create, line;
    int64_t heartbeat_ms, pause_at, resume_at, drop_at, check_ms;
    atomic_int paused;    /* the guard holds pause_workers paused */
    int resnap;           /* the thread's: open with a snapshot (after a drop) */
    pgpipe_runner *r;
    char *source;         /* the conninfo in use (the variable's value) */
    pthread_t th;
    int running;          /* run_sources.mu */
    atomic_int stop;
    pthread_mutex_t cmu;  /* guards what follows */
#ifndef PGPIPE_OMIT_CDC
    pgpipe_cdc *c;        /* while it streams */
    pgpipe_cdc_stats st;  /* the last handle's, carried over */
    pgpipe_cdc_slot_info info;
#endif
    long long events, transactions, reconnects; /* of the handles closed before */
    int streaming, info_ok;
    long long pauses, resumes, drops; /* the guard's steps */
} rsrc_cdc;

/* An API pull source: a thread runs pgpipe_pull_run every every_ms (the
** first run at once); a failed run is logged and the next one resumes
** where it stopped. The sources with the same pull_source share budget
** (the first one owns it). */
typedef struct rsrc_pull {
    char *name, *source;
    char **args;          /* "name=value" as the file wrote them */
    int nargs, line;
    int64_t every_ms;
    double rate;
    int concurrency;      /* the stream's --concurrency (1) */
    int budget_slots;     /* the owner's: the budget's concurrency, the largest of its streams' */
    pthread_t th;
    int running;
    atomic_int stop;
    pgpipe_runner *r;
#ifndef PGPIPE_OMIT_PULL
    pgpipe_pull_budget *budget;
    int owns_budget;
    pthread_mutex_t pmu;  /* guards p */
    pgpipe_pull *p;
#endif
    long long runs, records, dead, failures; /* pmu */
} rsrc_pull;

typedef struct rsrc_work {
    char *event_type, *sql_file, *so_lib, *so_symbol, *table;
    int workers, batch, mode, max_attempts, line;
    int64_t lease_ms;
    int paused;           /* run_sources.mu: a CDC slot guard holds it */
    char *sql;            /* the handler statement (sql_file's text) */
    void *dl;
    pgpipe_workers *w;    /* written under run_sources.mu (the metrics read it) */
    /* the workers stopped themselves (a handler the server refuses): the
    ** main thread's run_sources_check starts them again at restart_at */
    int failures;
    int64_t restart_at;
} rsrc_work;

struct run_sources {
    pp_mutex mu;          /* guards folders (the list and counters), pending, work,
                             the http list and each one's running */
    rsrc_folder **folders;
    int nfolders;
    rsrc_folder **pending; /* a reload's folders, applied by the poller */
    int npending, has_pending;
    pthread_t poller;
    int poller_on;
    atomic_int stop;
    rsrc_http **http;
    int nhttp;
    rsrc_work **work;
    int nwork;
    rsrc_cdc **cdc;
    int ncdc;
    rsrc_pull **pull;
    int npull;
};

static int rsrc_same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

static int rsrc_dup(char **dst, const char *s)
{
    *dst = s ? pp_strdup(s) : NULL;
    return !s || *dst;
}

/* mkdir -p */
static int rsrc_mkdirs(const char *path)
{
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return -1;
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(buf, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

/* ---- watched folders ---------------------------------------------------- */

static void rsrc_folder_free(rsrc_folder *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->nfiles; i++)
        pp_free(f->files[i].name);
    pp_free(f->files);
    pp_free(f->name), pp_free(f->dir), pp_free(f->pattern), pp_free(f->format);
    pp_free(f->done_dir), pp_free(f->table), pp_free(f->event_type), pp_free(f->event_type_field);
    pp_free(f);
}

static rsrc_folder *rsrc_folder_new(const pgpipe_pipe_source *s)
{
    rsrc_folder *f = pp_calloc(1, sizeof *f);
    if (!f)
        return NULL;
    int ok = rsrc_dup(&f->name, s->name) & rsrc_dup(&f->dir, s->dir) &
             rsrc_dup(&f->pattern, s->pattern ? s->pattern : "*") &
             rsrc_dup(&f->format, s->format ? s->format : "auto") & rsrc_dup(&f->done_dir, s->done_dir) &
             rsrc_dup(&f->table, s->table) & rsrc_dup(&f->event_type, s->event_type) &
             rsrc_dup(&f->event_type_field, s->event_type_field);
    f->delete_after = s->delete_after;
    f->settle_ms = s->settle_ms;
    f->poll_ms = s->poll_ms > 0 ? s->poll_ms : 1000;
    f->line = s->line;
    if (!ok || !f->dir || !f->name) {
        rsrc_folder_free(f);
        return NULL;
    }
    return f;
}

static int rsrc_folder_same(const rsrc_folder *a, const rsrc_folder *b)
{
    return rsrc_same(a->name, b->name) && rsrc_same(a->dir, b->dir) && rsrc_same(a->pattern, b->pattern) &&
           rsrc_same(a->format, b->format) && rsrc_same(a->done_dir, b->done_dir) &&
           rsrc_same(a->table, b->table) && rsrc_same(a->event_type, b->event_type) &&
           rsrc_same(a->event_type_field, b->event_type_field) && a->delete_after == b->delete_after &&
           a->settle_ms == b->settle_ms && a->poll_ms == b->poll_ms;
}

/* Hidden and partial files are never taken. */
static int rsrc_skip_name(const char *n)
{
    size_t len = strlen(n);
    if (n[0] == '.')
        return 1;
    if (len >= 4 && !strcmp(n + len - 4, ".tmp"))
        return 1;
    return len >= 5 && !strcmp(n + len - 5, ".part");
}

typedef struct rsrc_load_ud {
    pgpipe_runner *r;
    run_sources *s;
} rsrc_load_ud;

static int rsrc_progress(void *ud, const pgpipe_load_progress *p)
{
    (void)p;
    rsrc_load_ud *u = ud;
    return run_stopping(u->r) || atomic_load(&u->s->stop);
}

static void rsrc_count(pgpipe_runner *r, rsrc_folder *f, long long files, long long rows, long long dead,
                       long long failures)
{
    run_sources *s = r->sources;
    pp_mutex_lock(&s->mu);
    f->loaded += files, f->rows += rows, f->dead += dead, f->failures += failures;
    pp_mutex_unlock(&s->mu);
}

/* Move path into folder dir under its own name. 0, or -1 with errno. A file
** already gone (another instance moved it) is fine. */
static int rsrc_move(const char *path, const char *dir, const char *name)
{
    if (rsrc_mkdirs(dir))
        return -1;
    char to[4096];
    if (snprintf(to, sizeof to, "%s/%s", dir, name) >= (int)sizeof to) {
        errno = ENAMETOOLONG;
        return -1;
    }
    if (rename(path, to) != 0 && errno != ENOENT)
        return -1;
    return 0;
}

/* Load one settled file under its advisory lock; then move or delete it. */
static void rsrc_load_file(pgpipe_runner *r, rsrc_folder *f, rsrc_file *fe)
{
    run_sources *s = r->sources;
    char path[4096], key[4608], lock[32], num[3][32];
    snprintf(path, sizeof path, "%s/%s", f->dir, fe->name);
    snprintf(key, sizeof key, "pgpipe-file:%s:%s:%lld:%lld", f->name, path, fe->size, (long long)fe->mtime_ns);
    snprintf(lock, sizeof lock, "%lld", (long long)(pp_hash64(key) & 0x7fffffffffffffffULL));
    pgpipe_conn *cc = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pgpipe_pool_acquire_ex(r->pool, &cc, 5000, &e) != PGPIPE_OK) {
        run_log(r, PGPIPE_LOG_WARN, "file source: no connection; the file waits", "source", f->name,
                "file", path, "error", e.message, NULL);
        return;
    }
    PGconn *c = pgpipe_conn_pg(cc);
    const char *p[1] = { lock };
    PGresult *res = NULL;
    if (pp_exec(c, "SELECT pg_try_advisory_lock($1::bigint)", 1, p, &res, &e, "the file's lock")) {
        run_log(r, PGPIPE_LOG_WARN, "file source: cannot take the file's lock; it waits", "source",
                f->name, "file", path, "error", e.message, NULL);
        pgpipe_pool_discard(cc);
        return;
    }
    int mine = PQgetvalue(res, 0, 0)[0] == 't';
    PQclear(res);
    if (!mine) { /* another instance loads it now */
        pgpipe_pool_release(cc);
        return;
    }
    struct stat st;
    if (stat(path, &st) != 0 || (long long)st.st_size != fe->size ||
        (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec != fe->mtime_ns) {
        /* moved by another instance meanwhile, or written again: the next poll sees */
        pp_exec(c, "SELECT pg_advisory_unlock($1::bigint)", 1, p, NULL, NULL, NULL);
        pgpipe_pool_release(cc);
        return;
    }
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conn = c;
    o.connections = 1;
    o.install_schema = 0;
    o.source_name = f->name;
    o.load_key = key;
    o.format = !strcmp(f->format, "csv") ? PGPIPE_FORMAT_CSV : !strcmp(f->format, "ndjson") ? PGPIPE_FORMAT_NDJSON
             : !strcmp(f->format, "json") ? PGPIPE_FORMAT_JSON : PGPIPE_FORMAT_AUTO;
    o.event_type_field = f->event_type_field;
    o.event_type_value = f->event_type;
    pgpipe_load_column cols[4];
    if (f->table && strcmp(f->table, "staging.raw_events")) {
        /* a table with the columns of staging.raw_events */
        memset(cols, 0, sizeof cols);
        cols[0].column = "source", cols[0].field = "$source";
        cols[1].column = "event_type";
        if (f->event_type)
            cols[1].value = f->event_type;
        else
            cols[1].field = f->event_type_field ? f->event_type_field : "event_type";
        cols[2].column = "payload", cols[2].field = "$record", cols[2].json = 1;
        cols[3].column = "batch_id", cols[3].field = "$batch_id";
        o.target = f->table;
        o.columns = cols;
        o.ncolumns = 4;
        o.event_type_field = o.event_type_value = NULL;
    }
    rsrc_load_ud u = { r, s };
    o.progress = rsrc_progress;
    o.progress_ud = &u;
    pgpipe_loader *l = NULL;
    int rc = pgpipe_loader_open(&l, &o);
    if (rc == PGPIPE_OK)
        rc = pgpipe_loader_load_file(l, path);
    pgpipe_load_summary sum;
    memset(&sum, 0, sizeof sum);
    if (l)
        pgpipe_loader_summary(l, &sum);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", l ? pgpipe_errmsg(l) : "out of memory");
    int stopped = rc != PGPIPE_OK && (run_stopping(r) || atomic_load(&s->stop));
    pgpipe_loader_close(l);
    snprintf(num[0], sizeof num[0], "%lld", sum.rows_loaded);
    snprintf(num[1], sizeof num[1], "%lld", sum.rows_dead);
    snprintf(num[2], sizeof num[2], "%lld", sum.rows_skipped);
    if (rc == PGPIPE_OK) {
        int moved = f->delete_after ? (unlink(path) == 0 || errno == ENOENT ? 0 : -1)
                                    : rsrc_move(path, f->done_dir, fe->name);
        if (moved)
            run_log(r, PGPIPE_LOG_ERROR, f->delete_after ? "file source: loaded, but cannot delete the file"
                                                         : "file source: loaded, but cannot move the file",
                    "source", f->name, "file", path, "error", strerror(errno), NULL);
        run_log(r, PGPIPE_LOG_INFO, "file loaded", "source", f->name, "file", path, "rows", num[0],
                "dead_letters", num[1], "skipped", num[2], NULL);
        rsrc_count(r, f, 1, sum.rows_loaded, sum.rows_dead, 0);
        fe->failures = 0;
        if (moved) { /* not loaded again (the resume skips it), but not in a tight loop either */
            fe->failures = 1;
            fe->next_try = run_now_ms() + RSRC_BACKOFF_MAX_MS;
        }
    } else if (stopped) {
        run_log(r, PGPIPE_LOG_INFO, "file source: load interrupted by the stop; the next run resumes it",
                "source", f->name, "file", path, NULL);
    } else {
        fe->failures++;
        rsrc_count(r, f, 0, sum.rows_loaded, sum.rows_dead, 1);
        int64_t back = f->poll_ms;
        for (int i = 1; i < fe->failures && back < RSRC_BACKOFF_MAX_MS; i++)
            back *= 2;
        if (back > RSRC_BACKOFF_MAX_MS)
            back = RSRC_BACKOFF_MAX_MS;
        fe->next_try = run_now_ms() + back;
        char fl[16];
        snprintf(fl, sizeof fl, "%d", fe->failures);
        if (fe->failures >= RSRC_MAX_FAILURES) {
            char failed[4096];
            snprintf(failed, sizeof failed, "%s/failed", f->dir);
            int mv = rsrc_move(path, failed, fe->name);
            run_log(r, PGPIPE_LOG_ERROR, mv ? "file source: load failed again; cannot move the file aside"
                                            : "file source: load failed again; file moved into failed/",
                    "source", f->name, "file", path, "failures", fl, "error", msg, NULL);
        } else {
            run_log(r, PGPIPE_LOG_WARN, "file source: load failed; retried later", "source", f->name,
                    "file", path, "failures", fl, "error", msg, NULL);
        }
    }
    if (pp_exec(c, "SELECT pg_advisory_unlock($1::bigint)", 1, p, NULL, NULL, NULL) ||
        PQstatus(c) != CONNECTION_OK)
        pgpipe_pool_discard(cc); /* the session (and its lock) ends with it */
    else
        pgpipe_pool_release(cc);
}

static rsrc_file *rsrc_file_find(rsrc_folder *f, const char *name)
{
    for (int i = 0; i < f->nfiles; i++)
        if (!strcmp(f->files[i].name, name))
            return &f->files[i];
    return NULL;
}

static void rsrc_poll_folder(pgpipe_runner *r, rsrc_folder *f)
{
    DIR *d = opendir(f->dir);
    if (!d && errno == ENOENT && rsrc_mkdirs(f->dir) == 0) {
        run_log(r, PGPIPE_LOG_INFO, "file source: made the folder it watches", "source", f->name,
                "dir", f->dir, NULL);
        d = opendir(f->dir);
    }
    if (!d) {
        /* said once per cause, not at every poll; the status page's source
        ** shows no files meanwhile */
        int e = errno;
        if (e != f->dir_errno)
            run_log(r, PGPIPE_LOG_ERROR, "file source: cannot read the folder it watches; tried "
                    "again at each poll", "source", f->name, "dir", f->dir, "error", strerror(e),
                    NULL);
        f->dir_errno = e;
        return;
    }
    if (f->dir_errno) {
        run_log(r, PGPIPE_LOG_INFO, "file source: the folder can be read again", "source", f->name,
                "dir", f->dir, NULL);
        f->dir_errno = 0;
    }
    for (int i = 0; i < f->nfiles; i++)
        f->files[i].seen = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        if (rsrc_skip_name(n) || fnmatch(f->pattern, n, 0) != 0)
            continue;
        char path[4096];
        struct stat st;
        if (snprintf(path, sizeof path, "%s/%s", f->dir, n) >= (int)sizeof path || stat(path, &st) != 0 ||
            !S_ISREG(st.st_mode))
            continue;
        int64_t mt = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
        rsrc_file *fe = rsrc_file_find(f, n);
        if (!fe) {
            if (f->nfiles == f->cfiles) {
                int c = f->cfiles ? f->cfiles * 2 : 16;
                rsrc_file *a = pp_realloc(f->files, (size_t)c * sizeof *a);
                if (!a)
                    continue;
                f->files = a, f->cfiles = c;
            }
            fe = &f->files[f->nfiles];
            memset(fe, 0, sizeof *fe);
            if (!(fe->name = pp_strdup(n)))
                continue;
            f->nfiles++;
            fe->size = (long long)st.st_size;
            fe->mtime_ns = mt;
        } else if (fe->size != (long long)st.st_size || fe->mtime_ns != mt) {
            fe->size = (long long)st.st_size;
            fe->mtime_ns = mt;
            fe->unchanged = 0;
            fe->failures = 0; /* written again: a new file */
            fe->next_try = 0;
        } else {
            fe->unchanged++;
        }
        fe->seen = 1;
    }
    closedir(d);
    /* forget the files gone */
    int k = 0;
    for (int i = 0; i < f->nfiles; i++) {
        if (f->files[i].seen)
            f->files[k++] = f->files[i];
        else
            pp_free(f->files[i].name);
    }
    f->nfiles = k;
    for (int i = 0; i < f->nfiles && !run_stopping(r) && !atomic_load(&r->sources->stop); i++) {
        rsrc_file *fe = &f->files[i];
        int64_t now = run_now_ms();
        /* with --settle 0 a file must at least look the same on two polls */
        if ((fe->unchanged < 1 && f->settle_ms == 0) || now - fe->mtime_ns / 1000000 < f->settle_ms ||
            now < fe->next_try)
            continue;
        rsrc_load_file(r, f, fe);
    }
}

/* Apply a reload's folders: same settings keep their state and counters. */
static void rsrc_apply_pending(run_sources *s)
{
    pp_mutex_lock(&s->mu);
    if (!s->has_pending) {
        pp_mutex_unlock(&s->mu);
        return;
    }
    rsrc_folder **old = s->folders;
    int nold = s->nfolders;
    for (int i = 0; i < s->npending; i++)
        for (int j = 0; j < nold; j++)
            if (old[j] && rsrc_folder_same(s->pending[i], old[j])) {
                rsrc_folder_free(s->pending[i]);
                s->pending[i] = old[j];
                old[j] = NULL;
                break;
            }
    s->folders = s->pending;
    s->nfolders = s->npending;
    s->pending = NULL;
    s->npending = 0;
    s->has_pending = 0;
    pp_mutex_unlock(&s->mu);
    for (int j = 0; j < nold; j++)
        rsrc_folder_free(old[j]);
    pp_free(old);
}

static void *rsrc_poller(void *arg)
{
    pgpipe_runner *r = arg;
    run_sources *s = r->sources;
    while (!run_stopping(r) && !atomic_load(&s->stop)) {
        rsrc_apply_pending(s);
        int64_t now = run_now_ms(), next = now + 1000;
        for (int i = 0; i < s->nfolders && !run_stopping(r) && !atomic_load(&s->stop); i++) {
            rsrc_folder *f = s->folders[i];
            if (now >= f->next_poll) {
                rsrc_poll_folder(r, f);
                f->next_poll = run_now_ms() + f->poll_ms;
            }
            if (f->next_poll < next)
                next = f->next_poll;
        }
        /* sleep in short steps: a stop or a reload is seen soon */
        while (!run_stopping(r) && !atomic_load(&s->stop) && run_now_ms() < next) {
            pp_mutex_lock(&s->mu);
            int pend = s->has_pending;
            pp_mutex_unlock(&s->mu);
            if (pend)
                break;
            struct timespec ts = { 0, 50 * 1000000 };
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

/* The folders of def, copied; NULL with *n = -1 when out of memory. */
static rsrc_folder **rsrc_folders_of(const pgpipe_pipe_def *def, int *n)
{
    *n = 0;
    rsrc_folder **a = pp_calloc((size_t)def->nsources + 1, sizeof *a);
    if (!a) {
        *n = -1;
        return NULL;
    }
    for (int i = 0; i < def->nsources; i++) {
        if (def->sources[i].kind != PGPIPE_PIPE_SOURCE_FILES)
            continue;
        if (!(a[*n] = rsrc_folder_new(&def->sources[i]))) {
            for (int j = 0; j < *n; j++)
                rsrc_folder_free(a[j]);
            pp_free(a);
            *n = -1;
            return NULL;
        }
        rsrc_mkdirs(a[*n]->dir);
        (*n)++;
    }
    return a;
}

/* ---- the HTTP source ---------------------------------------------------- */

static void rsrc_http_free(rsrc_http *h)
{
    if (!h)
        return;
#ifndef PGPIPE_OMIT_HTTP
    pgpipe_http_close(h->h);
#endif
    pp_free(h->name), pp_free(h->listen), pp_free(h->table), pp_free(h->event_type);
    pp_free(h->event_type_field), pp_free(h->signature), pp_free(h->secret_env);
    pp_free(h->spool);
    pp_free(h);
}

static rsrc_http *rsrc_http_new(const pgpipe_pipe_source *s)
{
    rsrc_http *h = pp_calloc(1, sizeof *h);
    if (!h)
        return NULL;
    int ok = rsrc_dup(&h->name, s->name) & rsrc_dup(&h->listen, s->listen) & rsrc_dup(&h->table, s->table) &
             rsrc_dup(&h->event_type, s->event_type) & rsrc_dup(&h->event_type_field, s->event_type_field) &
             rsrc_dup(&h->signature, s->signature) & rsrc_dup(&h->secret_env, s->secret_env) &
             rsrc_dup(&h->spool, s->spool);
    h->line = s->line;
    if (!ok) {
        rsrc_http_free(h);
        return NULL;
    }
    return h;
}

static int rsrc_http_same(const rsrc_http *a, const rsrc_http *b)
{
    return rsrc_same(a->name, b->name) && rsrc_same(a->listen, b->listen) && rsrc_same(a->table, b->table) &&
           rsrc_same(a->event_type, b->event_type) && rsrc_same(a->event_type_field, b->event_type_field) &&
           rsrc_same(a->signature, b->signature) && rsrc_same(a->secret_env, b->secret_env) &&
           rsrc_same(a->spool, b->spool);
}

#ifndef PGPIPE_OMIT_HTTP
static void *rsrc_http_thread(void *arg)
{
    rsrc_http *h = arg;
    pgpipe_http_run(h->h);
    return NULL;
}
#endif

#if !defined(PGPIPE_OMIT_HTTP) || !defined(PGPIPE_OMIT_PULL) || !defined(PGPIPE_OMIT_CDC)
/* Start a source's thread, fn(arg), and mark it running (under s->mu). */
static int rsrc_thread_start(pgpipe_runner *r, run_sources *s, pthread_t *th, void *(*fn)(void *),
                             void *arg, int *running, const char *kind, int line, const char *name,
                             pgpipe_error *err)
{
    if (pthread_create(th, NULL, fn, arg) != 0)
        return pp_err(err, PGPIPE_ERROR, "%s:%d: .source %s %s: cannot start a thread", r->path, line,
                      kind, name);
    pp_mutex_lock(&s->mu);
    *running = 1;
    pp_mutex_unlock(&s->mu);
    return PGPIPE_OK;
}

/* Wait for a source's thread that was asked to stop; mark it stopped. */
static void rsrc_thread_join(run_sources *s, pthread_t th, int *running)
{
    pthread_join(th, NULL);
    pp_mutex_lock(&s->mu);
    *running = 0;
    pp_mutex_unlock(&s->mu);
}
#endif

static int rsrc_http_start(pgpipe_runner *r, run_sources *s, rsrc_http *h, pgpipe_error *err)
{
#ifdef PGPIPE_OMIT_HTTP
    (void)s;
    return pp_err(err, PGPIPE_MISUSE, "%s:%d: .source http %s: this pgpipe was built without the HTTP "
                  "server (PGPIPE_OMIT_HTTP)", r->path, h->line, h->name);
#else
    if (h->table && strcmp(h->table, "staging.raw_events"))
        return pp_err(err, PGPIPE_MISUSE, "%s:%d: .source http %s: --table: the HTTP source loads "
                      "staging.raw_events only", r->path, h->line, h->name);
    pgpipe_http_source src;
    memset(&src, 0, sizeof src);
    src.name = h->name;
    src.event_type_field = h->event_type_field;
    src.event_type_value = h->event_type;
    if (h->signature) {
        src.signature = !strcmp(h->signature, "github") ? PGPIPE_HTTP_SIG_GITHUB
                      : !strcmp(h->signature, "stripe") ? PGPIPE_HTTP_SIG_STRIPE : PGPIPE_HTTP_SIG_STANDARD;
        const char *secret = h->secret_env ? getenv(h->secret_env) : NULL;
        if (!secret || !*secret)
            return pp_err(err, PGPIPE_MISUSE, "%s:%d: .source http %s: --secret-env: the environment "
                          "variable %s is not set", r->path, h->line, h->name, h->secret_env ? h->secret_env : "");
        src.secret = secret;
    }
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.conninfo = r->conninfo;
    if (h->listen)
        o.listen = h->listen;
    o.sources = &src;
    o.nsources = 1;
    o.install_schema = !r->opt.install_schema;
    o.page = run_status_page;
    o.metrics = run_status_metrics;
    o.page_ud = r;
    if (h->spool) {
        /* store and forward: the HTTP source's senders get 202 "spooled"
        ** while the database is away (the file and pull sources need no
        ** spool: their input waits where it is) */
        o.spool_dir = h->spool;
        o.spool = 1;
    }
    int rc = pgpipe_http_open(&h->h, &o);
    if (rc)
        return pp_err(err, rc, "%s:%d: .source http %s: %s", r->path, h->line, h->name,
                      h->h ? pgpipe_errmsg(h->h) : "out of memory");
    if ((rc = rsrc_thread_start(r, s, &h->th, rsrc_http_thread, h, &h->running, "http", h->line,
                                h->name, err)) != PGPIPE_OK)
        return rc;
    char port[16];
    snprintf(port, sizeof port, "%d", pgpipe_http_port(h->h, 0));
    run_log(r, PGPIPE_LOG_INFO, "HTTP source listening", "source", h->name, "port", port, NULL);
    return PGPIPE_OK;
#endif
}

static void rsrc_http_stop(run_sources *s, rsrc_http *h)
{
#ifndef PGPIPE_OMIT_HTTP
    if (h->running) {
        pgpipe_http_stop(h->h);
        rsrc_thread_join(s, h->th, &h->running);
    }
#else
    (void)s, (void)h;
#endif
}

/* ---- the API pull source ------------------------------------------------ */

static void rsrc_pull_free(rsrc_pull *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->nargs; i++)
        pp_free(h->args[i]);
    pp_free(h->args);
    pp_free(h->name), pp_free(h->source);
#ifndef PGPIPE_OMIT_PULL
    if (h->owns_budget)
        pgpipe_pull_budget_close(h->budget);
    pthread_mutex_destroy(&h->pmu);
#endif
    pp_free(h);
}

static rsrc_pull *rsrc_pull_new(pgpipe_runner *r, const pgpipe_pipe_source *s)
{
    rsrc_pull *h = pp_calloc(1, sizeof *h);
    if (!h)
        return NULL;
#ifndef PGPIPE_OMIT_PULL
    pthread_mutex_init(&h->pmu, NULL);
#endif
    h->r = r;
    h->line = s->line;
    h->every_ms = s->every_ms > 0 ? s->every_ms : 300000;
    h->concurrency = 1;
    int ok = rsrc_dup(&h->name, s->name) & rsrc_dup(&h->source, s->pull_source ? s->pull_source : s->name);
    h->args = pp_calloc((size_t)s->npull_args + 1, sizeof *h->args);
    ok &= h->args != NULL;
    for (int i = 0; ok && i < s->npull_args; i++) {
        ok &= rsrc_dup(&h->args[i], s->pull_args[i]);
        h->nargs++;
        if (!strncmp(s->pull_args[i], "rate=", 5))
            h->rate = atof(s->pull_args[i] + 5);
        if (!strncmp(s->pull_args[i], "concurrency=", 12))
            h->concurrency = atoi(s->pull_args[i] + 12);
    }
    if (!ok) {
        rsrc_pull_free(h);
        return NULL;
    }
    return h;
}

#ifndef PGPIPE_OMIT_PULL
static void rsrc_pull_show(void *ud, const pgpipe_pull_progress *p)
{
    rsrc_pull *h = ud;
    if (!p->done)
        return;
    pthread_mutex_lock(&h->pmu);
    h->records += p->records;
    h->dead += p->dead_lettered;
    pthread_mutex_unlock(&h->pmu);
}

static void *rsrc_pull_thread(void *arg)
{
    rsrc_pull *h = arg;
    pgpipe_runner *r = h->r;
    pgpipe_pull *p = NULL;
    int64_t backoff = 1000;
    while (!atomic_load(&h->stop)) {
        int64_t wait = h->every_ms;
        if (!p) {
            pgpipe_pull_options o;
            pgpipe_pull_options_init(&o);
            pgpipe_error e;
            memset(&e, 0, sizeof e);
            for (int i = 0; i < h->nargs; i++) {
                char *eq = strchr(h->args[i], '=');
                char name[64];
                snprintf(name, sizeof name, "%.*s", (int)(eq - h->args[i]), h->args[i]);
                pgpipe_pull_set(&o, name, eq + 1, &e); /* checked when the file was read */
            }
            if (!o.source)
                o.source = h->source;
            o.conninfo = r->conninfo;
            o.install = !r->opt.install_schema;
            o.budget = h->budget;
            o.progress = rsrc_pull_show;
            o.progress_ud = h;
            int rc = pgpipe_pull_open(&p, &o);
            if (rc != PGPIPE_OK) {
                char in[24];
                snprintf(in, sizeof in, "%lld ms", (long long)backoff);
                run_log(r, PGPIPE_LOG_ERROR, "pull source failed to open; trying again", "source", h->name,
                        "error", p ? pgpipe_errmsg(p) : "out of memory", "in", in, NULL);
                pgpipe_pull_close(p);
                p = NULL;
                wait = backoff;
                backoff = backoff < 30000 ? backoff * 2 : 60000;
            } else {
                backoff = 1000;
                pthread_mutex_lock(&h->pmu);
                h->p = p;
                pthread_mutex_unlock(&h->pmu);
            }
        }
        if (p && !atomic_load(&h->stop)) {
            int rc = pgpipe_pull_run(p);
            pgpipe_pull_progress pr;
            pgpipe_pull_progress_get(p, &pr);
            char pages[24], recs[24];
            snprintf(pages, sizeof pages, "%lld", pr.pages);
            snprintf(recs, sizeof recs, "%lld", pr.records);
            pthread_mutex_lock(&h->pmu);
            h->runs++;
            h->failures += rc != PGPIPE_OK && rc != PGPIPE_BUSY;
            pthread_mutex_unlock(&h->pmu);
            if (rc == PGPIPE_OK)
                run_log(r, PGPIPE_LOG_INFO, "pull source ran", "source", h->name, "pages", pages,
                        "records", recs, NULL);
            else if (!atomic_load(&h->stop))
                run_log(r, PGPIPE_LOG_ERROR, "pull source run failed; the next run resumes", "source",
                        h->name, "pages", pages, "records", recs, "error", pgpipe_errmsg(p), NULL);
        }
        for (int64_t waited = 0; waited < wait && !atomic_load(&h->stop); waited += 100)
            pgpipe_sleep_ms(100);
    }
    pthread_mutex_lock(&h->pmu);
    h->p = NULL;
    pthread_mutex_unlock(&h->pmu);
    pgpipe_pull_close(p);
    return NULL;
}
#endif

static int rsrc_pull_start(pgpipe_runner *r, run_sources *s, rsrc_pull *h, pgpipe_error *err)
{
#ifdef PGPIPE_OMIT_PULL
    (void)s;
    return pp_err(err, PGPIPE_MISUSE, "%s:%d: .source pull %s: this pgpipe was built without the "
                  "API pull (PGPIPE_OMIT_PULL)", r->path, h->line, h->name);
#else
    /* the budget of the first source with the same events' source: its
    ** concurrency is the largest its streams ask for */
    for (int i = 0; i < s->npull && !h->budget; i++)
        if (s->pull[i] && s->pull[i] != h && s->pull[i]->owns_budget && !strcmp(s->pull[i]->source, h->source)) {
            rsrc_pull *owner = s->pull[i];
            h->budget = owner->budget;
            if (h->concurrency > owner->budget_slots) {
                owner->budget_slots = h->concurrency;
                pgpipe_pull_budget_set_concurrency(h->budget, h->concurrency);
            }
        }
    if (!h->budget) {
        if (pgpipe_pull_budget_open(&h->budget, h->rate, 1) != PGPIPE_OK) {
            h->budget = NULL;
            return pp_err(err, PGPIPE_ERROR, "%s:%d: .source pull %s: %s", r->path, h->line, h->name,
                          "this pgpipe was built without libcurl (-DPGPIPE_ENABLE_CURL)");
        }
        h->owns_budget = 1;
        h->budget_slots = h->concurrency;
        pgpipe_pull_budget_set_concurrency(h->budget, h->concurrency);
    }
    return rsrc_thread_start(r, s, &h->th, rsrc_pull_thread, h, &h->running, "pull", h->line,
                             h->name, err);
#endif
}

static void rsrc_pull_stop(run_sources *s, rsrc_pull *h)
{
    if (!h->running)
        return;
    atomic_store(&h->stop, 1);
#ifndef PGPIPE_OMIT_PULL
    pthread_mutex_lock(&h->pmu);
    if (h->p)
        pgpipe_pull_stop(h->p);
    pthread_mutex_unlock(&h->pmu);
    rsrc_thread_join(s, h->th, &h->running);
#else
    (void)s;
#endif
}

/* Stop them all, the budgets' owners last (the others use their budget). */
static void rsrc_pull_stop_all(run_sources *s, rsrc_pull **list, int n)
{
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++)
            if (list[i])
#ifndef PGPIPE_OMIT_PULL
                if (list[i]->owns_budget == pass)
#endif
                    rsrc_pull_stop(s, list[i]);
}

/* ---- the CDC source ----------------------------------------------------- */

static void rsrc_cdc_free(rsrc_cdc *h)
{
    if (!h)
        return;
    pp_free(h->name), pp_free(h->conninfo), pp_free(h->env), pp_free(h->slot);
    pp_free(h->publication), pp_free(h->tables), pp_free(h->source), pp_free(h->pause_workers);
    pthread_mutex_destroy(&h->cmu);
    pp_free(h);
}

static rsrc_cdc *rsrc_cdc_new(pgpipe_runner *r, const pgpipe_pipe_source *s)
{
    rsrc_cdc *h = pp_calloc(1, sizeof *h);
    if (!h)
        return NULL;
    pthread_mutex_init(&h->cmu, NULL);
    int ok = rsrc_dup(&h->name, s->name) & rsrc_dup(&h->conninfo, s->source_conninfo) &
             rsrc_dup(&h->env, s->source_env) & rsrc_dup(&h->slot, s->slot) &
             rsrc_dup(&h->publication, s->publication) & rsrc_dup(&h->tables, s->tables) &
             rsrc_dup(&h->pause_workers, s->pause_workers);
    h->snapshot = s->snapshot, h->no_create = s->no_create, h->line = s->line;
    h->heartbeat_ms = s->heartbeat_ms;
    h->pause_at = h->pause_workers ? s->pause_at : 0;
    h->resume_at = s->resume_at > 0 ? s->resume_at : h->pause_at / 2;
    h->drop_at = s->drop_slot_at;
    h->check_ms = s->slot_check_ms > 0 ? s->slot_check_ms : 10000;
    atomic_init(&h->paused, 0);
    h->r = r;
    if (!ok) {
        rsrc_cdc_free(h);
        return NULL;
    }
    return h;
}

static int rsrc_cdc_same(const rsrc_cdc *a, const rsrc_cdc *b)
{
    return rsrc_same(a->name, b->name) && rsrc_same(a->conninfo, b->conninfo) &&
           rsrc_same(a->env, b->env) && rsrc_same(a->slot, b->slot) &&
           rsrc_same(a->publication, b->publication) && rsrc_same(a->tables, b->tables) &&
           a->snapshot == b->snapshot && a->no_create == b->no_create &&
           a->heartbeat_ms == b->heartbeat_ms && rsrc_same(a->pause_workers, b->pause_workers) &&
           a->pause_at == b->pause_at && a->resume_at == b->resume_at && a->drop_at == b->drop_at &&
           a->check_ms == b->check_ms;
}

#ifndef PGPIPE_OMIT_CDC
/* 1 when event_type (a .workers EVENT_TYPE as written) matches one of the
** comma-separated globs of list. */
static int rsrc_guard_names(const char *list, const char *event_type)
{
    for (const char *q = list; q && event_type;) {
        char pat[256];
        size_t n;
        q = run_list_item(q, pat, sizeof pat, &n);
        if (!pat[0])
            continue;
        if (fnmatch(pat, event_type, 0) == 0)
            return 1;
    }
    return 0;
}

/* Each workers handle paused while some CDC source's guard holds it. The
** names paused are written to names (comma-separated) for the log. */
static void rsrc_guard_apply(pgpipe_runner *r, const rsrc_cdc *for_source, char *names, size_t cap)
{
    run_sources *s = __atomic_load_n(&r->sources, __ATOMIC_ACQUIRE);
    if (names && cap)
        names[0] = 0;
    if (!s)
        return;
    pp_mutex_lock(&s->mu);
    for (int i = 0; i < s->nwork; i++) {
        rsrc_work *w = s->work[i];
        if (!w)
            continue;
        int want = 0;
        for (int j = 0; j < s->ncdc && !want; j++)
            want = s->cdc[j] && atomic_load(&s->cdc[j]->paused) &&
                   rsrc_guard_names(s->cdc[j]->pause_workers, w->event_type);
        if (want != w->paused && w->w)
            pgpipe_workers_pause(w->w, want);
        if (w->w)
            w->paused = want;
        if (names && for_source && rsrc_guard_names(for_source->pause_workers, w->event_type)) {
            size_t len = strlen(names);
            snprintf(names + len, cap - len, "%s%s", len ? "," : "", w->event_type);
        }
    }
    pp_mutex_unlock(&s->mu);
}

/* the guard's detail for an alert: a JSON object text */
static void rsrc_guard_detail(pp_buf *d, const rsrc_cdc *h, const pgpipe_cdc_slot_info *in,
                              const char *action, const char *workers)
{
    pp_buf_appendf(d, "{\"source\":");
    pp_json_str(d, h->name, strlen(h->name), 0);
    pp_buf_appendf(d, ",\"slot\":");
    pp_json_str(d, h->slot, strlen(h->slot), 0);
    pp_buf_appendf(d, ",\"action\":\"%s\",\"retained_bytes\":%lld,\"lag_bytes\":%lld,"
                   "\"wal_status\":", action, in->retained_bytes, in->lag_bytes);
    pp_json_str(d, in->wal_status, strlen(in->wal_status), 0);
    pp_buf_appendf(d, ",\"pause_at\":%lld,\"resume_at\":%lld,\"drop_slot_at\":%lld",
                   (long long)h->pause_at, (long long)h->resume_at, (long long)h->drop_at);
    if (workers) {
        pp_buf_appendf(d, ",\"workers\":");
        pp_json_str(d, workers, strlen(workers), 0);
    }
    pp_buf_appendf(d, "}");
}

/* The slot guard's step for what the source just said of the slot: pause
** or resume the named workers (logged, counted, raised); 1 when the slot
** is to be dropped (only with --drop-slot-at). */
static int rsrc_guard(rsrc_cdc *h, const pgpipe_cdc_slot_info *in)
{
    pgpipe_runner *r = h->r;
    /* a slot that is gone keeps no WAL: the workers may go on (.alert
    ** cdc-lag reports it; nothing is dropped or made again here) */
    int lost = in->exists && !strcmp(in->wal_status, "lost");
    int unres = in->exists && !strcmp(in->wal_status, "unreserved");
    long long kept = in->exists ? in->retained_bytes : 0;
    if (h->drop_at > 0 && in->exists && (lost || kept >= h->drop_at))
        return 1;
    if (h->pause_at <= 0)
        return 0;
    int paused = atomic_load(&h->paused);
    int pause = !paused && (kept >= h->pause_at || lost || unres);
    int resume = paused && kept < h->resume_at && !lost && !unres;
    if (!pause && !resume)
        return 0;
    atomic_store(&h->paused, pause);
    pthread_mutex_lock(&h->cmu);
    if (pause)
        h->pauses++;
    else
        h->resumes++;
    pthread_mutex_unlock(&h->cmu);
    char names[1024], ret[24], mark[24];
    rsrc_guard_apply(r, h, names, sizeof names);
    snprintf(ret, sizeof ret, "%lld", kept);
    snprintf(mark, sizeof mark, "%lld", (long long)(pause ? h->pause_at : h->resume_at));
    pp_buf msg = { 0 }, det = { 0 };
    if (pause && (lost || unres))
        pp_buf_appendf(&msg, "CDC slot guard: the slot of source %s is %s (wal_status), WAL "
                       "retained %lld bytes: workers %s paused until the slot is reserved again "
                       "and retains less than %lld", h->name, in->wal_status, kept,
                       names[0] ? names : "(none running)", (long long)h->resume_at);
    else if (pause)
        pp_buf_appendf(&msg, "CDC slot guard: source %s retains %lld bytes of WAL (pause at %lld, "
                       "wal_status %s): workers %s paused until it falls below %lld", h->name,
                       kept, (long long)h->pause_at, in->wal_status,
                       names[0] ? names : "(none running)", (long long)h->resume_at);
    else
        pp_buf_appendf(&msg, "CDC slot guard: source %s retains %lld bytes of WAL, below %lld: "
                       "workers %s resumed", h->name, kept, (long long)h->resume_at,
                       names[0] ? names : "(none running)");
    rsrc_guard_detail(&det, h, in, pause ? "pause" : "resume", names);
    run_log(r, pause ? PGPIPE_LOG_WARN : PGPIPE_LOG_INFO,
            pause ? "CDC slot guard: workers paused" : "CDC slot guard: workers resumed",
            "source", h->name, "retained_bytes", ret, pause ? "pause_at" : "resume_at", mark,
            "wal_status", in->wal_status, "workers", names, NULL);
    /* the resume clears the pause's alert (and is delivered as well) */
    run_alert_raise(r, pause ? "cdc-guard" : "cdc-guard-resume", h->name,
                    msg.data ? msg.data : "CDC slot guard", det.data);
    pp_buf_free(&msg);
    pp_buf_free(&det);
    return 0;
}

/* Drop the slot (the stream is closed) and forget its state on the target;
** the next open makes a new slot and a snapshot. Instances running the
** same source take turns (an advisory lock on the target) and look at the
** slot again first: the one that comes second finds the new slot (or none
** yet) and drops nothing. 0, or -1 when nothing was dropped. */
static int rsrc_guard_drop(rsrc_cdc *h)
{
    pgpipe_runner *r = h->r;
    char key[256], lock[32];
    snprintf(key, sizeof key, "pgpipe-cdc-guard:%s", h->slot);
    snprintf(lock, sizeof lock, "%lld", (long long)(pp_hash64(key) & 0x7fffffffffffffffULL));
    const char *lp[1] = { lock };
    pgpipe_conn *cc = NULL;
    PGresult *res = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pgpipe_pool_acquire_ex(r->pool, &cc, 5000, &e) != PGPIPE_OK) {
        run_log(r, PGPIPE_LOG_WARN, "CDC slot guard: no connection to the target; the slot is not "
                "dropped now", "source", h->name, "error", e.message, NULL);
        return -1;
    }
    PGconn *tc = pgpipe_conn_pg(cc);
    if (pp_exec(tc, "SELECT pg_try_advisory_lock($1::bigint)", 1, lp, &res, &e, "the guard's lock") ||
        PQgetvalue(res, 0, 0)[0] != 't') {
        PQclear(res);
        run_log(r, PGPIPE_LOG_INFO, "CDC slot guard: another instance drops the slot", "source",
                h->name, NULL);
        if (e.message[0])
            pgpipe_pool_discard(cc);
        else
            pgpipe_pool_release(cc);
        return -1;
    }
    PQclear(res);
    pgpipe_cdc_slot_info now, *in = &now;
    memset(&e, 0, sizeof e);
    int rc = pgpipe_cdc_slot_info_get(h->source, h->slot, &now, &e);
    int lost = rc == PGPIPE_OK && !strcmp(now.wal_status, "lost");
    if (rc != PGPIPE_OK || !now.exists || (!lost && now.retained_bytes < h->drop_at)) {
        run_log(r, PGPIPE_LOG_INFO, "CDC slot guard: the slot no longer needs dropping", "source",
                h->name, "error", rc != PGPIPE_OK ? e.message : "", NULL);
        rc = -1;
        goto out;
    }
    char ret[24], mark[24];
    snprintf(ret, sizeof ret, "%lld", in->retained_bytes);
    snprintf(mark, sizeof mark, "%lld", (long long)h->drop_at);
    pp_buf msg = { 0 }, det = { 0 };
    if (lost)
        pp_buf_appendf(&msg, "CDC slot guard: slot %s of source %s was invalidated by the source "
                       "(wal_status lost): dropping slot %s", h->slot, h->name, h->slot);
    else
        pp_buf_appendf(&msg, "CDC slot guard: source %s retains %lld bytes of WAL (drop at %lld, "
                       "wal_status %s): dropping slot %s", h->name, in->retained_bytes,
                       (long long)h->drop_at, in->wal_status, h->slot);
    pp_buf_appendf(&msg, " and starting again with a new slot and a snapshot; the changes not "
                   "yet staged are lost, the tables' rows come again as snapshot events");
    rsrc_guard_detail(&det, h, in, "drop-slot", NULL);
    run_log(r, PGPIPE_LOG_ERROR, "CDC slot guard: dropping the slot; a new slot and a snapshot follow",
            "source", h->name, "slot", h->slot, "retained_bytes", ret, "drop_slot_at", mark,
            "wal_status", in->wal_status, NULL);
    run_alert_raise(r, "cdc-guard", h->name, msg.data ? msg.data : "CDC slot guard: slot dropped",
                    det.data);
    pp_buf_free(&msg);
    pp_buf_free(&det);
    /* the walsender of the closed stream may still hold the slot a moment */
    rc = PGPIPE_ERROR;
    for (int i = 0; i < 20 && rc != PGPIPE_OK && !atomic_load(&h->stop); i++) {
        if (i)
            pgpipe_sleep_ms(250);
        memset(&e, 0, sizeof e);
        rc = pgpipe_cdc_drop(h->source, r->conninfo ? r->conninfo : "", h->slot, NULL, &e);
    }
    if (rc != PGPIPE_OK) {
        run_log(r, PGPIPE_LOG_ERROR, "CDC slot guard: the slot could not be dropped", "source",
                h->name, "slot", h->slot, "error", e.message[0] ? e.message : "stopped", NULL);
        rc = -1;
        goto out;
    }
    pthread_mutex_lock(&h->cmu);
    h->drops++;
    h->info_ok = 0;
    pthread_mutex_unlock(&h->cmu);
    h->resnap = 1;
    run_log(r, PGPIPE_LOG_WARN, "CDC slot guard: slot dropped; starting again with a snapshot",
            "source", h->name, "slot", h->slot, NULL);
    rc = 0;
out:
    if (pp_exec(tc, "SELECT pg_advisory_unlock($1::bigint)", 1, lp, NULL, NULL, NULL) ||
        PQstatus(tc) != CONNECTION_OK)
        pgpipe_pool_discard(cc); /* the session, and its lock, end with it */
    else
        pgpipe_pool_release(cc);
    return rc;
}

/* The slot as the source says it now, kept for /metrics and .alert
** cdc-lag; 1 when read. */
static int rsrc_cdc_read_slot(rsrc_cdc *h, pgpipe_cdc_slot_info *info)
{
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    int got = !atomic_load(&h->stop) &&
              pgpipe_cdc_slot_info_get(h->source, h->slot, info, &e) == PGPIPE_OK;
    pthread_mutex_lock(&h->cmu);
    if (got)
        h->info = *info, h->info_ok = 1;
    pthread_mutex_unlock(&h->cmu);
    return got;
}

static void *rsrc_cdc_thread(void *arg)
{
    rsrc_cdc *h = arg;
    pgpipe_runner *r = h->r;
    int64_t backoff = 1000;
    while (!atomic_load(&h->stop)) {
        pgpipe_cdc_options o;
        pgpipe_cdc_options_init(&o);
        o.source = h->source;
        o.target = r->conninfo;
        o.slot = h->slot;
        o.publication = h->publication;
        o.tables = h->tables;
        o.create = !h->no_create;
        o.install = !r->opt.install_schema;
        o.snapshot = h->snapshot || h->resnap;
        o.heartbeat_ms = (int)(h->heartbeat_ms < INT_MAX ? h->heartbeat_ms : INT_MAX);
        pgpipe_cdc *c = NULL;
        pgpipe_cdc_slot_info info;
        int drop = 0;
        int rc = pgpipe_cdc_open(&c, &o);
        if (rc == PGPIPE_OK) {
            pthread_mutex_lock(&h->cmu);
            h->c = c;
            h->streaming = 1;
            pthread_mutex_unlock(&h->cmu);
            run_log(r, PGPIPE_LOG_INFO, "CDC source streaming", "source", h->name, "slot", h->slot,
                    NULL);
            backoff = 1000;
            /* a stop asked before h->c was set is seen here; one asked
            ** after reaches the stream through pgpipe_cdc_stop */
            int every = (int)(h->check_ms < INT_MAX ? h->check_ms : INT_MAX);
            int slice = every < 1000 ? every : 1000; /* the slot's first reading soon */
            while (rc == PGPIPE_OK && !atomic_load(&h->stop) && !drop) {
                rc = pgpipe_cdc_run(c, slice);
                slice = every;
                int got = rsrc_cdc_read_slot(h, &info);
                pthread_mutex_lock(&h->cmu);
                pgpipe_cdc_stats_get(c, &h->st);
                pthread_mutex_unlock(&h->cmu);
                if (got)
                    drop = rsrc_guard(h, &info);
            }
            pthread_mutex_lock(&h->cmu);
            h->c = NULL;
            h->streaming = 0;
            h->events += h->st.events, h->transactions += h->st.transactions;
            h->reconnects += h->st.reconnects;
            memset(&h->st, 0, sizeof h->st);
            pthread_mutex_unlock(&h->cmu);
        } else if (!atomic_load(&h->stop) && rsrc_cdc_read_slot(h, &info)) {
            /* a slot the source invalidated fails the open: the guard
            ** still pauses, or drops it when told to */
            drop = rsrc_guard(h, &info);
        }
        if (rc != PGPIPE_OK && !atomic_load(&h->stop) && !drop) {
            char wait[24];
            snprintf(wait, sizeof wait, "%lld ms", (long long)backoff);
            run_log(r, PGPIPE_LOG_ERROR, "CDC source failed; trying again", "source", h->name,
                    "error", c ? pgpipe_errmsg(c) : "out of memory", "in", wait, NULL);
        }
        pgpipe_cdc_close(c);
        if (drop && !atomic_load(&h->stop) && rsrc_guard_drop(h) == 0) {
            backoff = 1000;
            continue; /* a new slot and the snapshot at once */
        }
        for (int64_t waited = 0; waited < backoff && !atomic_load(&h->stop); waited += 100)
            pgpipe_sleep_ms(100);
        backoff = backoff < 30000 ? backoff * 2 : 60000;
    }
    if (atomic_exchange(&h->paused, 0)) { /* a stopped source holds no workers */
        rsrc_guard_apply(r, NULL, NULL, 0);
        run_log(r, PGPIPE_LOG_INFO, "CDC slot guard: source stopped; its workers are no longer "
                "held", "source", h->name, NULL);
    }
    return NULL;
}
#endif

static int rsrc_cdc_start(pgpipe_runner *r, run_sources *s, rsrc_cdc *h, pgpipe_error *err)
{
#ifdef PGPIPE_OMIT_CDC
    (void)s;
    return pp_err(err, PGPIPE_MISUSE, "%s:%d: .source cdc %s: this pgpipe was built without CDC "
                  "(PGPIPE_OMIT_CDC)", r->path, h->line, h->name);
#else
    const char *src = h->conninfo;
    if (h->env) {
        src = getenv(h->env);
        if (!src || !*src)
            return pp_err(err, PGPIPE_MISUSE, "%s:%d: .source cdc %s: --source-env: the "
                          "environment variable %s is not set", r->path, h->line, h->name, h->env);
    }
    if (!(h->source = pp_strdup(src)))
        return pp_err_nomem(err);
    return rsrc_thread_start(r, s, &h->th, rsrc_cdc_thread, h, &h->running, "cdc", h->line, h->name,
                             err);
#endif
}

static void rsrc_cdc_stop(run_sources *s, rsrc_cdc *h)
{
    if (!h->running)
        return;
    atomic_store(&h->stop, 1);
#ifndef PGPIPE_OMIT_CDC
    pthread_mutex_lock(&h->cmu);
    if (h->c)
        pgpipe_cdc_stop(h->c);
    pthread_mutex_unlock(&h->cmu);
    rsrc_thread_join(s, h->th, &h->running);
#else
    (void)s;
#endif
}

#ifndef PGPIPE_OMIT_CDC
PGPIPE_PRIVATE int run_sources_cdc_info(pgpipe_runner *r, const char *name,
                                        pgpipe_cdc_slot_info *out)
{
    run_sources *s = __atomic_load_n(&r->sources, __ATOMIC_ACQUIRE);
    int got = 0;
    if (!s)
        return 0;
    pp_mutex_lock(&s->mu);
    for (int i = 0; i < s->ncdc && !got; i++) {
        rsrc_cdc *h = s->cdc[i];
        if (!h || strcmp(h->name, name))
            continue;
        pthread_mutex_lock(&h->cmu);
        if ((got = h->info_ok))
            *out = h->info;
        pthread_mutex_unlock(&h->cmu);
    }
    pp_mutex_unlock(&s->mu);
    return got;
}
#endif

/* ---- workers ------------------------------------------------------------ */

static void rsrc_work_free(rsrc_work *w)
{
    if (!w)
        return;
    pgpipe_workers_close(w->w);
    if (w->dl)
        dlclose(w->dl);
    pp_free(w->event_type), pp_free(w->sql_file), pp_free(w->so_lib), pp_free(w->so_symbol);
    pp_free(w->table), pp_free(w->sql);
    pp_free(w);
}

/* The one statement of a SQL handler file. */
static char *rsrc_read_handler(const char *path, pgpipe_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        pp_err(err, PGPIPE_IO, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    pp_buf b = { 0 };
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (pp_buf_append(&b, chunk, n)) {
            fclose(f);
            pp_buf_free(&b);
            pp_err_nomem(err);
            return NULL;
        }
    fclose(f);
    pgpipe_sql_split *s = NULL;
    char *out = NULL;
    int count = 0;
    if (pgpipe_sql_split_open(&s, b.data ? b.data : "", b.len, path) == PGPIPE_OK) {
        pgpipe_sql_stmt st;
        int rc;
        while ((rc = pgpipe_sql_split_next(s, &st)) == PGPIPE_ROW)
            if (count++ == 0)
                out = pp_strndup(st.sql, st.len);
        if (rc == PGPIPE_PARSE)
            pp_err(err, PGPIPE_PARSE, "%s", pgpipe_errmsg(s));
        else if (count != 1)
            pp_err(err, PGPIPE_PARSE, "%s: a SQL handler is one statement (found %d)", path, count);
        if (rc == PGPIPE_PARSE || count != 1) {
            pp_free(out);
            out = NULL;
        }
    }
    pgpipe_sql_split_close(s);
    pp_buf_free(&b);
    return out;
}

static rsrc_work *rsrc_work_new(const pgpipe_pipe_workers *k, pgpipe_error *err)
{
    rsrc_work *w = pp_calloc(1, sizeof *w);
    if (!w) {
        pp_err_nomem(err);
        return NULL;
    }
    int ok = rsrc_dup(&w->event_type, k->event_type) & rsrc_dup(&w->sql_file, k->sql_file) &
             rsrc_dup(&w->so_lib, k->so_lib) & rsrc_dup(&w->so_symbol, k->so_symbol) &
             rsrc_dup(&w->table, k->table);
    w->workers = k->workers, w->batch = k->batch, w->mode = k->mode, w->max_attempts = k->max_attempts;
    w->lease_ms = k->lease_ms, w->line = k->line;
    if (!ok) {
        pp_err_nomem(err);
        rsrc_work_free(w);
        return NULL;
    }
    if (w->sql_file && !(w->sql = rsrc_read_handler(w->sql_file, err))) {
        rsrc_work_free(w);
        return NULL;
    }
    return w;
}

static int rsrc_work_same(const rsrc_work *a, const rsrc_work *b)
{
    return rsrc_same(a->event_type, b->event_type) && rsrc_same(a->sql_file, b->sql_file) &&
           rsrc_same(a->so_lib, b->so_lib) && rsrc_same(a->so_symbol, b->so_symbol) &&
           rsrc_same(a->table, b->table) && rsrc_same(a->sql, b->sql) && a->workers == b->workers &&
           a->batch == b->batch && a->mode == b->mode && a->max_attempts == b->max_attempts &&
           a->lease_ms == b->lease_ms;
}

/* The SQL handler prepared once on a connection of the pool, as each
** worker will: a statement the server refuses (a missing table or
** function, a syntax error, no privilege) is a configuration error, said
** here with the .workers line, instead of workers that start and stop at
** their first prepare. A connection that cannot be had, or a transient
** failure, is left to the workers' own retries. The unnamed statement is
** replaced by the next one the connection prepares. */
static int rsrc_handler_check(pgpipe_runner *r, const char *event_type, const char *sql_file,
                              const char *sql, int line, pgpipe_error *err)
{
    pgpipe_conn *cc = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pgpipe_pool_acquire_ex(r->pool, &cc, 10000, &e) != PGPIPE_OK)
        return PGPIPE_OK;
    PGconn *c = pgpipe_conn_pg(cc);
    int rc = pp_prepare(c, "", sql, &e, NULL);
    int refused = rc != PGPIPE_OK && PQstatus(c) == CONNECTION_OK &&
                  !pgpipe_sqlstate_is_transient(e.sqlstate);
    if (PQstatus(c) == CONNECTION_OK)
        pgpipe_pool_release(cc);
    else
        pgpipe_pool_discard(cc);
    if (!refused)
        return PGPIPE_OK;
    pp_err(err, PGPIPE_DB, "%s:%d: .workers %s: the server refuses the SQL handler %s: %s%s%s%s",
           r->path, line, event_type, sql_file, e.message, e.sqlstate[0] ? " (SQLSTATE " : "",
           e.sqlstate, e.sqlstate[0] ? ")" : "");
    memcpy(err->sqlstate, e.sqlstate, sizeof err->sqlstate);
    return PGPIPE_DB;
}

/* Start w's workers (w->w NULL): the handler loaded (--so) or checked
** (--sql, rsrc_handler_check), then pgpipe_workers_open on the pool. */
static int rsrc_work_start(pgpipe_runner *r, run_sources *s, rsrc_work *w, pgpipe_error *err)
{
    pgpipe_handler h;
    memset(&h, 0, sizeof h);
    if (w->sql) {
        h.sql = w->sql;
        int rc = rsrc_handler_check(r, w->event_type, w->sql_file, w->sql, w->line, err);
        if (rc)
            return rc;
    } else {
        if (!w->dl && !(w->dl = dlopen(w->so_lib, RTLD_NOW | RTLD_LOCAL))) {
            const char *m = dlerror();
            return pp_err(err, PGPIPE_IO, "%s:%d: .workers %s: --so: cannot load %s: %s", r->path, w->line,
                          w->event_type, w->so_lib, m ? m : "dlopen failed");
        }
        dlerror();
        void *sym = dlsym(w->dl, w->so_symbol);
        if (!sym) {
            const char *m = dlerror();
            return pp_err(err, PGPIPE_MISUSE, "%s:%d: .workers %s: --so: %s has no symbol %s%s%s", r->path,
                          w->line, w->event_type, w->so_lib, w->so_symbol, m ? ": " : "", m ? m : "");
        }
        /* ISO C has no cast from an object pointer to a function pointer */
        memcpy(&h.record, &sym, sizeof h.record);
    }
    pgpipe_workers_options o;
    pgpipe_workers_options_init(&o);
    o.threads = w->workers;
    o.claim.table = w->table;
    o.claim.mode = w->mode == PGPIPE_PIPE_LEASE ? PGPIPE_CLAIM_LEASE : PGPIPE_CLAIM_TRANSACTIONAL;
    o.claim.batch_size = w->batch;
    o.claim.event_type = strcmp(w->event_type, "*") ? w->event_type : NULL;
    if (w->lease_ms > 0)
        o.claim.lease_ms = w->lease_ms > INT_MAX ? INT_MAX : (int)w->lease_ms;
    o.claim.max_attempts = w->max_attempts;
    o.claim.worker_id = r->instance;
    pgpipe_workers *wk = NULL;
    int rc = pgpipe_workers_open(&wk, r->pool, &h, &o);
    if (rc) {
        pp_err(err, rc, "%s:%d: .workers %s: %s", r->path, w->line, w->event_type,
               wk ? pgpipe_errmsg(wk) : "out of memory");
        pgpipe_workers_close(wk);
        return rc;
    }
    pp_mutex_lock(&s->mu);
    w->w = wk;
    w->paused = 0; /* a new handle runs: rsrc_guard_apply pauses it again */
    pp_mutex_unlock(&s->mu);
    w->failures = 0;
    w->restart_at = 0;
    return PGPIPE_OK;
}

/* Stop a set of workers: they finish or release their batch within
** drain_ms, then what still runs is cancelled; then they are freed. */
static void rsrc_work_stop_all(rsrc_work **ws, int n, int drain_ms)
{
    for (int i = 0; i < n; i++)
        if (ws[i] && ws[i]->w)
            pgpipe_workers_stop(ws[i]->w);
    int64_t until = run_now_ms() + (drain_ms > 0 ? drain_ms : 0);
    for (;;) {
        int running = 0;
        for (int i = 0; i < n; i++)
            if (ws[i] && ws[i]->w)
                running += pgpipe_workers_running(ws[i]->w);
        if (!running)
            break;
        if (run_now_ms() >= until) {
            for (int i = 0; i < n; i++)
                if (ws[i] && ws[i]->w && pgpipe_workers_running(ws[i]->w))
                    pgpipe_workers_cancel(ws[i]->w);
            break;
        }
        struct timespec ts = { 0, 20 * 1000000 };
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++) {
        rsrc_work_free(ws[i]);
        ws[i] = NULL;
    }
}

/* Workers that stopped themselves while the runner runs: their handler
** became unusable (a function or table dropped, a privilege revoked: the
** server refuses to prepare it, and every worker would fail alike). The
** other sources and the schedules go on, and the events wait in staging:
** the workers are started again with backoff, RSRC_WORK_RETRY_MS doubling
** up to RSRC_BACKOFF_MAX_MS, each try checking the handler first, so a
** deploy that drops and creates the function again heals by itself. The
** stop is logged at error naming the .workers line and the server's error,
** and raised as alert "workers-stopped" (subject: the event type). */
#define RSRC_WORK_RETRY_MS 5000

static int64_t rsrc_work_backoff(int failures)
{
    int64_t ms = RSRC_WORK_RETRY_MS;
    for (int i = 1; i < failures && ms < RSRC_BACKOFF_MAX_MS; i++)
        ms *= 2;
    return ms < RSRC_BACKOFF_MAX_MS ? ms : RSRC_BACKOFF_MAX_MS;
}

PGPIPE_PRIVATE void run_sources_check(pgpipe_runner *r)
{
    run_sources *s = r->sources;
    if (!s || run_stopping(r))
        return;
    /* s->work changes only on this (the main) thread: reload, stop */
    for (int i = 0; i < s->nwork; i++) {
        rsrc_work *w = s->work[i];
        if (!w)
            continue;
        char wait_s[24];
        if (w->w && pgpipe_workers_stopping(w->w)) {
            if (pgpipe_workers_running(w->w))
                continue; /* the others end their batch first */
            pgpipe_workers *old = w->w;
            pgpipe_workers_wait(old);
            pgpipe_error e;
            memset(&e, 0, sizeof e);
            snprintf(e.message, sizeof e.message, "%s", pgpipe_errmsg(old));
            snprintf(e.sqlstate, sizeof e.sqlstate, "%s", pgpipe_errsqlstate(old));
            pp_mutex_lock(&s->mu);
            w->w = NULL;
            pp_mutex_unlock(&s->mu);
            pgpipe_workers_close(old);
            int64_t delay = rsrc_work_backoff(++w->failures);
            w->restart_at = run_now_ms() + delay;
            snprintf(wait_s, sizeof wait_s, "%llds", (long long)(delay / 1000));
            char where[24];
            snprintf(where, sizeof where, "%d", w->line);
            char msg[1400];
            snprintf(msg, sizeof msg, "%s:%d: .workers %s stopped: %s", r->path, w->line,
                     w->event_type, e.message[0] ? e.message : "an error stopped every worker");
            run_log(r, PGPIPE_LOG_ERROR, "workers stopped on an error; starting them again later",
                    "event_type", w->event_type, "file", r->path, "line", where, "error",
                    e.message, "sqlstate", e.sqlstate, "retry_in", wait_s, NULL);
            run_alert_raise(r, "workers-stopped", w->event_type, msg, NULL);
        } else if (!w->w && w->restart_at && run_now_ms() >= w->restart_at) {
            pgpipe_error e;
            memset(&e, 0, sizeof e);
            if (rsrc_work_start(r, s, w, &e)) {
                int64_t delay = rsrc_work_backoff(++w->failures);
                w->restart_at = run_now_ms() + delay;
                snprintf(wait_s, sizeof wait_s, "%llds", (long long)(delay / 1000));
                run_log(r, PGPIPE_LOG_ERROR, "workers not started again", "event_type",
                        w->event_type, "error", e.message, "retry_in", wait_s, NULL);
                continue;
            }
            run_log(r, PGPIPE_LOG_INFO, "workers started again", "event_type", w->event_type,
                    NULL);
#ifndef PGPIPE_OMIT_CDC
            rsrc_guard_apply(r, NULL, NULL, 0);
#endif
        }
    }
}

/* Before anything starts: every SQL handler of the file is one statement
** the server prepares (rsrc_handler_check); the first that is not is the
** runner's error. */
PGPIPE_PRIVATE int run_sources_preflight(pgpipe_runner *r)
{
    const pgpipe_pipe_def *def = r->def;
    for (int i = 0; i < def->nworkers; i++) {
        const pgpipe_pipe_workers *k = &def->workers[i];
        if (!k->sql_file)
            continue;
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        char *sql = rsrc_read_handler(k->sql_file, &e);
        if (!sql)
            return pp_err(&r->h.err, e.code ? e.code : PGPIPE_NOMEM, "%s:%d: .workers %s: %s",
                          r->path, k->line, k->event_type, e.message);
        int rc = rsrc_handler_check(r, k->event_type, k->sql_file, sql, k->line, &r->h.err);
        pp_free(sql);
        if (rc)
            return rc;
    }
    return PGPIPE_OK;
}

/* ---- start, stop, reload ------------------------------------------------ */

/* r->sources is read by other threads (the status page's metrics): it is
** published once filled in, and on a failure too, so stop and free find
** what was started. */
/* The pull sources of def, into s->pull (which holds none), started. */
static int rsrc_pull_start_all(pgpipe_runner *r, run_sources *s, const pgpipe_pipe_def *def,
                               pgpipe_error *err)
{
    rsrc_pull **np = pp_calloc((size_t)def->nsources + 1, sizeof *np);
    if (!np)
        return pp_err_nomem(err);
    pp_mutex_lock(&s->mu);
    pp_free(s->pull);
    s->pull = np;
    s->npull = 0;
    pp_mutex_unlock(&s->mu);
    for (int i = 0; i < def->nsources; i++) {
        if (def->sources[i].kind != PGPIPE_PIPE_SOURCE_PULL)
            continue;
        rsrc_pull *h = rsrc_pull_new(r, &def->sources[i]);
        if (!h)
            return pp_err_nomem(err);
        pp_mutex_lock(&s->mu);
        s->pull[s->npull++] = h;
        pp_mutex_unlock(&s->mu);
        if (rsrc_pull_start(r, s, h, err))
            return err->code ? err->code : PGPIPE_ERROR;
    }
    return PGPIPE_OK;
}

static int rsrc_publish(pgpipe_runner *r, run_sources *s, int rc)
{
    __atomic_store_n(&r->sources, s, __ATOMIC_RELEASE);
    return rc;
}

PGPIPE_PRIVATE int run_sources_start(pgpipe_runner *r)
{
    const pgpipe_pipe_def *def = r->def;
    run_sources *s = pp_calloc(1, sizeof *s);
    if (!s)
        return pp_err_nomem(&r->h.err);
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->stop, 0);
    s->folders = rsrc_folders_of(def, &s->nfolders);
    if (s->nfolders < 0) {
        s->nfolders = 0;
        return rsrc_publish(r, s, pp_err_nomem(&r->h.err));
    }
    s->http = pp_calloc((size_t)def->nsources + 1, sizeof *s->http);
    s->cdc = pp_calloc((size_t)def->nsources + 1, sizeof *s->cdc);
    s->work = pp_calloc((size_t)def->nworkers + 1, sizeof *s->work);
    if (!s->http || !s->cdc || !s->work)
        return rsrc_publish(r, s, pp_err_nomem(&r->h.err));
    for (int i = 0; i < def->nworkers; i++) {
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        rsrc_work *w = rsrc_work_new(&def->workers[i], &e);
        if (!w)
            return rsrc_publish(r, s, pp_err(&r->h.err, e.code ? e.code : PGPIPE_NOMEM, "%s:%d: .workers %s: %s",
                                             r->path, def->workers[i].line, def->workers[i].event_type, e.message));
        s->work[s->nwork++] = w;
        if (rsrc_work_start(r, s, w, &r->h.err))
            return rsrc_publish(r, s, r->h.err.code);
    }
    for (int i = 0; i < def->nsources; i++) {
        if (def->sources[i].kind != PGPIPE_PIPE_SOURCE_HTTP)
            continue;
        rsrc_http *h = rsrc_http_new(&def->sources[i]);
        if (!h)
            return rsrc_publish(r, s, pp_err_nomem(&r->h.err));
        s->http[s->nhttp++] = h;
        if (rsrc_http_start(r, s, h, &r->h.err))
            return rsrc_publish(r, s, r->h.err.code);
    }
    for (int i = 0; i < def->nsources; i++) {
        if (def->sources[i].kind != PGPIPE_PIPE_SOURCE_CDC)
            continue;
        rsrc_cdc *h = rsrc_cdc_new(r, &def->sources[i]);
        if (!h)
            return rsrc_publish(r, s, pp_err_nomem(&r->h.err));
        s->cdc[s->ncdc++] = h;
        if (rsrc_cdc_start(r, s, h, &r->h.err))
            return rsrc_publish(r, s, r->h.err.code);
    }
    if (rsrc_pull_start_all(r, s, def, &r->h.err))
        return rsrc_publish(r, s, r->h.err.code);
    rsrc_publish(r, s, PGPIPE_OK);
    if (pthread_create(&s->poller, NULL, rsrc_poller, r) != 0)
        return pp_err(&r->h.err, PGPIPE_ERROR, "cannot start the file sources' thread");
    s->poller_on = 1;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void run_sources_stop(pgpipe_runner *r, int drain_ms)
{
    run_sources *s = r->sources;
    if (!s)
        return;
    atomic_store(&s->stop, 1);
#ifndef PGPIPE_OMIT_HTTP
    for (int i = 0; i < s->nhttp; i++)
        if (s->http[i] && s->http[i]->running)
            pgpipe_http_stop(s->http[i]->h);
#endif
    if (s->poller_on) {
        pthread_join(s->poller, NULL);
        s->poller_on = 0;
    }
    for (int i = 0; i < s->nhttp; i++)
        if (s->http[i])
            rsrc_http_stop(s, s->http[i]);
    for (int i = 0; i < s->ncdc; i++)
        if (s->cdc[i])
            rsrc_cdc_stop(s, s->cdc[i]);
    rsrc_pull_stop_all(s, s->pull, s->npull);
    pp_mutex_lock(&s->mu);
    rsrc_work **ws = s->work;
    int n = s->nwork;
    s->work = NULL;
    s->nwork = 0;
    pp_mutex_unlock(&s->mu);
    if (ws) {
        rsrc_work_stop_all(ws, n, drain_ms);
        pp_free(ws);
    }
}

PGPIPE_PRIVATE int run_sources_reload(pgpipe_runner *r, const pgpipe_pipe_def *def)
{
    run_sources *s = r->sources;
    if (!s)
        return PGPIPE_OK;
    int failed = 0;
    /* folders: handed to the poller, which keeps those that did not change */
    int nf;
    rsrc_folder **nfold = rsrc_folders_of(def, &nf);
    if (nf < 0) {
        failed = 1;
    } else {
        pp_mutex_lock(&s->mu);
        for (int i = 0; i < s->npending; i++)
            rsrc_folder_free(s->pending[i]);
        pp_free(s->pending);
        s->pending = nfold;
        s->npending = nf;
        s->has_pending = 1;
        pp_mutex_unlock(&s->mu);
    }
    /* workers: the same settings (and handler text) keep running */
    rsrc_work **nw = pp_calloc((size_t)def->nworkers + 1, sizeof *nw);
    rsrc_work **gone = pp_calloc((size_t)s->nwork + 1, sizeof *gone);
    if (!nw || !gone) {
        pp_free(nw);
        pp_free(gone);
        return PGPIPE_NOMEM;
    }
    int nnw = 0, ngone = 0;
    int *kept = pp_calloc((size_t)s->nwork + 1, sizeof *kept);
    for (int i = 0; i < def->nworkers; i++) {
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        rsrc_work *w = rsrc_work_new(&def->workers[i], &e);
        if (!w) {
            run_log(r, PGPIPE_LOG_ERROR, "reload: workers not started", "event_type",
                    def->workers[i].event_type, "error", e.message, NULL);
            failed = 1;
            continue;
        }
        int j;
        for (j = 0; j < s->nwork; j++)
            if (kept && !kept[j] && s->work[j] && rsrc_work_same(w, s->work[j]))
                break;
        if (kept && j < s->nwork) {
            kept[j] = 1;
            rsrc_work_free(w);
            nw[nnw++] = s->work[j];
        } else {
            nw[nnw++] = w; /* started below, after the old ones stopped */
        }
    }
    for (int j = 0; j < s->nwork; j++)
        if (!kept || !kept[j])
            gone[ngone++] = s->work[j];
    pp_free(kept);
    pp_mutex_lock(&s->mu);
    rsrc_work **old = s->work;
    s->work = nw;
    s->nwork = nnw;
    pp_mutex_unlock(&s->mu);
    pp_free(old);
    rsrc_work_stop_all(gone, ngone, r->opt.drain_timeout_ms);
    pp_free(gone);
    for (int i = 0; i < nnw; i++) {
        if (nw[i]->w)
            continue;
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        if (rsrc_work_start(r, s, nw[i], &e)) {
            /* tried again with backoff, as workers that stopped (run_sources_check) */
            nw[i]->restart_at = run_now_ms() + rsrc_work_backoff(++nw[i]->failures);
            run_log(r, PGPIPE_LOG_ERROR, "reload: workers not started; trying again later",
                    "event_type", nw[i]->event_type, "error", e.message, NULL);
            failed = 1;
        }
    }
    /* HTTP sources */
    rsrc_http **nh = pp_calloc((size_t)def->nsources + 1, sizeof *nh);
    if (!nh)
        return PGPIPE_NOMEM;
    int nnh = 0;
    for (int i = 0; i < def->nsources; i++) {
        if (def->sources[i].kind != PGPIPE_PIPE_SOURCE_HTTP)
            continue;
        rsrc_http *h = rsrc_http_new(&def->sources[i]);
        if (!h) {
            failed = 1;
            continue;
        }
        int j;
        for (j = 0; j < s->nhttp; j++)
            if (s->http[j] && rsrc_http_same(h, s->http[j]))
                break;
        if (j < s->nhttp) {
            rsrc_http_free(h);
            nh[nnh++] = s->http[j];
            s->http[j] = NULL;
        } else {
            nh[nnh++] = h;
        }
    }
    for (int j = 0; j < s->nhttp; j++)
        if (s->http[j]) {
            rsrc_http_stop(s, s->http[j]);
            rsrc_http_free(s->http[j]);
        }
    pp_mutex_lock(&s->mu);
    rsrc_http **oldh = s->http;
    s->http = nh;
    s->nhttp = nnh;
    pp_mutex_unlock(&s->mu);
    pp_free(oldh);
    for (int i = 0; i < nnh; i++) {
        if (nh[i]->h)
            continue;
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        if (rsrc_http_start(r, s, nh[i], &e)) {
            run_log(r, PGPIPE_LOG_ERROR, "reload: HTTP source not started", "source", nh[i]->name, "error",
                    e.message, NULL);
            failed = 1;
        }
    }
    /* CDC sources: the unchanged keep streaming */
    rsrc_cdc **nc = pp_calloc((size_t)def->nsources + 1, sizeof *nc);
    if (!nc)
        return PGPIPE_NOMEM;
    int nnc = 0;
    for (int i = 0; i < def->nsources; i++) {
        if (def->sources[i].kind != PGPIPE_PIPE_SOURCE_CDC)
            continue;
        rsrc_cdc *h = rsrc_cdc_new(r, &def->sources[i]);
        if (!h) {
            failed = 1;
            continue;
        }
        int j;
        for (j = 0; j < s->ncdc; j++)
            if (s->cdc[j] && rsrc_cdc_same(h, s->cdc[j]))
                break;
        if (j < s->ncdc) {
            rsrc_cdc_free(h);
            nc[nnc++] = s->cdc[j];
            s->cdc[j] = NULL;
        } else {
            nc[nnc++] = h;
        }
    }
    for (int j = 0; j < s->ncdc; j++)
        if (s->cdc[j]) {
            rsrc_cdc *x = s->cdc[j];
            rsrc_cdc_stop(s, x);
            pp_mutex_lock(&s->mu); /* the metrics and the guards read the list */
            s->cdc[j] = NULL;
            pp_mutex_unlock(&s->mu);
            rsrc_cdc_free(x);
        }
    pp_mutex_lock(&s->mu);
    rsrc_cdc **oldc = s->cdc;
    s->cdc = nc;
    s->ncdc = nnc;
    pp_mutex_unlock(&s->mu);
    pp_free(oldc);
    for (int i = 0; i < nnc; i++) {
        if (nc[i]->running)
            continue;
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        if (rsrc_cdc_start(r, s, nc[i], &e)) {
            run_log(r, PGPIPE_LOG_ERROR, "reload: CDC source not started", "source", nc[i]->name,
                    "error", e.message, NULL);
            failed = 1;
        }
    }
#ifndef PGPIPE_OMIT_CDC
    rsrc_guard_apply(r, NULL, NULL, 0); /* workers started now follow a guard that holds */
#endif
    /* pull sources: all stopped (after the current request; nothing half
    ** committed) and started anew; each resumes from its stored state */
    rsrc_pull_stop_all(s, s->pull, s->npull);
    for (int i = 0; i < s->npull; i++)
        rsrc_pull_free(s->pull[i]);
    s->npull = 0;
    pgpipe_error pe;
    memset(&pe, 0, sizeof pe);
    if (rsrc_pull_start_all(r, s, def, &pe)) {
        run_log(r, PGPIPE_LOG_ERROR, "reload: pull source not started", "error", pe.message, NULL);
        failed = 1;
    }
    return failed ? PGPIPE_ERROR : PGPIPE_OK;
}

PGPIPE_PRIVATE void run_sources_free(pgpipe_runner *r)
{
    run_sources *s = r->sources;
    if (!s)
        return;
    if (s->poller_on || s->nwork || s->nhttp || s->ncdc || s->npull)
        run_sources_stop(r, 0);
    for (int i = 0; i < s->nfolders; i++)
        rsrc_folder_free(s->folders[i]);
    pp_free(s->folders);
    for (int i = 0; i < s->npending; i++)
        rsrc_folder_free(s->pending[i]);
    pp_free(s->pending);
    for (int i = 0; i < s->nhttp; i++)
        rsrc_http_free(s->http[i]);
    pp_free(s->http);
    for (int i = 0; i < s->ncdc; i++)
        rsrc_cdc_free(s->cdc[i]);
    pp_free(s->cdc);
    for (int i = 0; i < s->npull; i++)
        rsrc_pull_free(s->pull[i]);
    pp_free(s->pull);
    pp_free(s->work);
    pthread_mutex_destroy(&s->mu);
    pp_free(s);
    r->sources = NULL;
}

/* ---- metrics ------------------------------------------------------------ */

/* a Prometheus label value: \ " and newline escaped */
static void rsrc_label(pp_buf *out, const char *v)
{
    for (const char *p = v ? v : ""; *p; p++) {
        if (*p == '\\' || *p == '"')
            pp_buf_appendf(out, "\\%c", *p);
        else if (*p == '\n')
            pp_buf_append(out, "\\n", 2);
        else
            pp_buf_append(out, p, 1);
    }
}

PGPIPE_PRIVATE void run_sources_metrics(pgpipe_runner *r, pp_buf *out)
{
    run_sources *s = __atomic_load_n(&r->sources, __ATOMIC_ACQUIRE);
    if (!s)
        return;
    static const char *const fnames[] = { "pgpipe_run_source_files_total", "pgpipe_run_source_rows_total",
                                          "pgpipe_run_source_dead_letters_total",
                                          "pgpipe_run_source_failures_total" };
    static const char *const fhelp[] = { "files loaded by a watched folder", "rows loaded from its files",
                                         "records of its files dead-lettered", "failed loads of its files" };
    static const char *const wnames[] = { "pgpipe_run_workers_done_total", "pgpipe_run_workers_failed_total",
                                          "pgpipe_run_workers_dead_lettered_total" };
    static const char *const whelp[] = { "events processed by the workers of an event type",
                                         "events failed and retried later",
                                         "events moved to the dead letters" };
    pp_mutex_lock(&s->mu);
    for (int m = 0; m < 4 && s->nfolders; m++) {
        pp_buf_appendf(out, "# HELP %s %s\n# TYPE %s counter\n", fnames[m], fhelp[m], fnames[m]);
        for (int i = 0; i < s->nfolders; i++) {
            rsrc_folder *f = s->folders[i];
            long long v = m == 0 ? f->loaded : m == 1 ? f->rows : m == 2 ? f->dead : f->failures;
            pp_buf_appendf(out, "%s{source=\"", fnames[m]);
            rsrc_label(out, f->name);
            pp_buf_appendf(out, "\"} %lld\n", v);
        }
    }
    pgpipe_workers_stats st[64];
    int n = s->nwork < 64 ? s->nwork : 64;
    for (int i = 0; i < n; i++) {
        memset(&st[i], 0, sizeof st[i]);
        if (s->work[i] && s->work[i]->w)
            pgpipe_workers_stats_get(s->work[i]->w, &st[i]);
    }
    for (int m = 0; m < 3 && n; m++) {
        pp_buf_appendf(out, "# HELP %s %s\n# TYPE %s counter\n", wnames[m], whelp[m], wnames[m]);
        for (int i = 0; i < n; i++) {
            long long v = m == 0 ? st[i].total.done : m == 1 ? st[i].total.retried : st[i].total.dead;
            pp_buf_appendf(out, "%s{event_type=\"", wnames[m]);
            rsrc_label(out, s->work[i]->event_type);
            pp_buf_appendf(out, "\"} %lld\n", v);
        }
    }
#ifndef PGPIPE_OMIT_CDC
    /* CDC sources: counters, and the slot as the source last said (read
    ** every 10 s by the stream's thread, never here: a scrape must not wait
    ** for another server) */
    static const char *const cnames[] = { "pgpipe_cdc_events_total", "pgpipe_cdc_transactions_total",
                                          "pgpipe_cdc_reconnects_total", "pgpipe_cdc_streaming",
                                          "pgpipe_cdc_slot_lag_bytes",
                                          "pgpipe_cdc_slot_retained_bytes" };
    static const char *const chelp[] = { "change events staged by a CDC source",
                                         "source transactions staged",
                                         "lost connections healed (the stream resumed)",
                                         "1 while the source streams",
                                         "source WAL not yet confirmed by the slot",
                                         "source WAL the slot keeps (restart_lsn)" };
    for (int m = 0; m < 6 && s->ncdc; m++) {
        pp_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", cnames[m], chelp[m], cnames[m],
                       m < 3 ? "counter" : "gauge");
        for (int i = 0; i < s->ncdc; i++) {
            rsrc_cdc *h = s->cdc[i];
            if (!h)
                continue;
            pthread_mutex_lock(&h->cmu);
            if (h->c) /* the live counters (thread-safe) */
                pgpipe_cdc_stats_get(h->c, &h->st);
            int known = m < 4 || h->info_ok;
            long long v = m == 0   ? h->events + h->st.events
                          : m == 1 ? h->transactions + h->st.transactions
                          : m == 2 ? h->reconnects + h->st.reconnects
                          : m == 3 ? h->streaming
                          : m == 4 ? h->info.lag_bytes : h->info.retained_bytes;
            pthread_mutex_unlock(&h->cmu);
            if (!known)
                continue;
            pp_buf_appendf(out, "%s{source=\"", cnames[m]);
            rsrc_label(out, h->name);
            pp_buf_appendf(out, "\"} %lld\n", v);
        }
    }
    /* the slot guard, for the sources that have one */
    static const char *const gnames[] = { "pgpipe_cdc_guard_paused", "pgpipe_cdc_guard_pauses_total",
                                          "pgpipe_cdc_guard_resumes_total",
                                          "pgpipe_cdc_guard_slot_drops_total" };
    static const char *const ghelp[] = { "1 while the slot guard holds the source's --pause-workers paused",
                                         "times the slot guard paused them (retained WAL or wal_status)",
                                         "times it resumed them (retained WAL below --resume-at)",
                                         "slots dropped and made again with a snapshot (--drop-slot-at)" };
    int guarded = 0;
    for (int i = 0; i < s->ncdc; i++)
        guarded |= s->cdc[i] && (s->cdc[i]->pause_at > 0 || s->cdc[i]->drop_at > 0);
    for (int m = 0; m < 4 && guarded; m++) {
        pp_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", gnames[m], ghelp[m], gnames[m],
                       m ? "counter" : "gauge");
        for (int i = 0; i < s->ncdc; i++) {
            rsrc_cdc *h = s->cdc[i];
            if (!h || (h->pause_at <= 0 && h->drop_at <= 0))
                continue;
            pthread_mutex_lock(&h->cmu);
            long long v = m == 0 ? atomic_load(&h->paused) : m == 1 ? h->pauses
                          : m == 2 ? h->resumes : h->drops;
            pthread_mutex_unlock(&h->cmu);
            pp_buf_appendf(out, "%s{source=\"", gnames[m]);
            rsrc_label(out, h->name);
            pp_buf_appendf(out, "\"} %lld\n", v);
        }
    }
#endif
    pp_mutex_unlock(&s->mu);
}

#endif /* PGPIPE_OMIT_RUN */
