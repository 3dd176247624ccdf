/*
** The runner (run.h): open a pipeline file, run its setup once, start the
** components (schedules, sources and workers, alerts, status page), keep
** this instance's heartbeat in pgpipe.run_instances, apply a reload, drain
** on stop. The components run on their own threads; this file's loop only
** wakes for a signal, the heartbeat and the components' maintenance.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define RUN_HEARTBEAT_MS 2000
#define RUN_MAINTAIN_MS  5000

void pgpipe_run_options_init(pgpipe_run_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->drain_timeout_ms = 30000;
    o->instance_timeout_ms = 15000;
    o->install_schema = 1;
    o->sd_notify = 1;
}

PGPIPE_PRIVATE int64_t run_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

PGPIPE_PRIVATE int run_stopping(const pgpipe_runner *r)
{
    return atomic_load(&((pgpipe_runner *)r)->stop_flag) != 0;
}

PGPIPE_PRIVATE void run_log(const pgpipe_runner *r, int level, const char *message, ...)
{
    if (!pp_log_enabled(level))
        return;
    pgpipe_log_field f[14];
    int n = 0;
    f[n].key = "pipeline", f[n++].value = r->def && r->def->name ? r->def->name : "";
    f[n].key = "instance", f[n++].value = r->instance;
    va_list ap;
    va_start(ap, message);
    while (n < 14) {
        const char *k = va_arg(ap, const char *);
        if (!k)
            break;
        const char *v = va_arg(ap, const char *);
        f[n].key = k, f[n++].value = v ? v : "";
    }
    va_end(ap);
    pgpipe_log(level, "run", message, f, n);
}

/* systemd's notify protocol (sd_notify(3)): one datagram to the socket
** named by $NOTIFY_SOCKET ('@' = the abstract namespace). No library. */
static void run_sd_notify(const pgpipe_runner *r, const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!r->opt.sd_notify || !path || !*path)
        return;
    struct sockaddr_un sa;
    size_t len = strlen(path);
    if (len >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@'))
        return;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@')
        sa.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    socklen_t sl = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, sl) < 0)
        run_log(r, PGPIPE_LOG_WARN, "sd_notify failed", "state", state, "error", strerror(errno),
                NULL);
    close(fd);
}

static char *run_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return pp_strdup(".");
    if (slash == path)
        return pp_strdup("/");
    return pp_strndup(path, (size_t)(slash - path));
}

/* Read the pipeline file; on problems the first one becomes err. */
static int run_read_file(pgpipe_runner *r, pgpipe_pipefile **out, pgpipe_error *err)
{
    pgpipe_pipefile *pf = NULL;
    int rc = pgpipe_pipefile_open(&pf, r->path, NULL, 0);
    if (rc == PGPIPE_PARSE) {
        const pgpipe_pipe_diag *d = pgpipe_pipefile_diag(pf, 0);
        int n = pgpipe_pipefile_diag_count(pf);
        if (d)
            pp_err(err, PGPIPE_PARSE, "%s:%d: %s%s", d->file, d->line, d->message,
                   n > 1 ? " (and more: pgpipe run --check lists them all)" : "");
        else
            pp_err(err, PGPIPE_PARSE, "%s: not a valid pipeline file", r->path);
        pgpipe_pipefile_close(pf);
        return PGPIPE_PARSE;
    }
    if (rc) {
        pp_err(err, rc, "%s", pgpipe_errmsg(pf));
        pgpipe_pipefile_close(pf);
        return rc;
    }
    *out = pf;
    return PGPIPE_OK;
}

/* The connections def needs at once on the server: each worker thread
** holds one for its life; the runner itself holds one for its loop, one
** for the alerts and one for the status page, and at least one for the
** schedules' timer and one for a firing, one for the file sources and one
** for each HTTP, CDC and pull source. *workers gets the workers' part. */
static int run_conn_need(const pgpipe_pipe_def *def, int *workers)
{
    int w = 0, own = 3, files = 0;
    for (int i = 0; i < def->nworkers; i++)
        w += def->workers[i].workers;
    if (def->nschedules)
        own += 2;
    for (int i = 0; i < def->nsources; i++) {
        if (def->sources[i].kind == PGPIPE_PIPE_SOURCE_FILES)
            files = 1;
        else
            own++;
    }
    *workers = w;
    return w + own + files;
}

/* The server must have room for what def needs (run_conn_need): the
** connections a role like ours may open, max_connections less the slots
** reserved for others (superuser_reserved_connections, and PostgreSQL 16's
** reserved_connections without pg_use_reserved_connections), within the
** role's and the database's CONNECTION LIMIT (none of which binds a
** superuser). Workers past it would fail one by one with "too many
** clients" far from the cause; say it at once. Connections other clients
** hold now are not counted: they come and go. */
static int run_conn_budget(pgpipe_runner *r, PGconn *c, const pgpipe_pipe_def *def,
                           pgpipe_error *err)
{
    PGresult *res = NULL;
    int rc = pp_exec(c,
                     "SELECT current_setting('max_connections')::int, "
                     "current_setting('superuser_reserved_connections')::int, "
                     "coalesce(current_setting('reserved_connections', true), '0')::int, "
                     "r.rolsuper, coalesce(pg_has_role(session_user, "
                     "to_regrole('pg_use_reserved_connections')::oid, 'MEMBER'), false), "
                     "r.rolconnlimit, d.datconnlimit "
                     "FROM pg_roles r, pg_database d "
                     "WHERE r.rolname = session_user AND d.datname = current_database()",
                     0, NULL, &res, err, "reading max_connections");
    if (rc)
        return rc;
    if (PQntuples(res) != 1) { /* a role or database hidden from us: nothing to check */
        PQclear(res);
        return PGPIPE_OK;
    }
    int maxc = atoi(PQgetvalue(res, 0, 0)), sres = atoi(PQgetvalue(res, 0, 1));
    int rres = atoi(PQgetvalue(res, 0, 2));
    int super = PQgetvalue(res, 0, 3)[0] == 't', use_reserved = PQgetvalue(res, 0, 4)[0] == 't';
    int rolelim = atoi(PQgetvalue(res, 0, 5)), dblim = atoi(PQgetvalue(res, 0, 6));
    PQclear(res);
    int workers, need = run_conn_need(def, &workers);
    char why[512];
    int room;
    if (super) {
        room = maxc;
        snprintf(why, sizeof why, "max_connections %d (a superuser may use the reserved slots)",
                 maxc);
    } else if (use_reserved || !rres) {
        room = maxc - sres;
        snprintf(why, sizeof why, "max_connections %d - superuser_reserved_connections %d = %d",
                 maxc, sres, room);
    } else {
        room = maxc - sres - rres;
        snprintf(why, sizeof why, "max_connections %d - superuser_reserved_connections %d - "
                 "reserved_connections %d = %d", maxc, sres, rres, room);
    }
    if (!super && rolelim >= 0 && rolelim < room) { /* a superuser has no limit there */
        room = rolelim;
        snprintf(why, sizeof why, "the role's CONNECTION LIMIT %d", rolelim);
    }
    if (!super && dblim >= 0 && dblim < room) {
        room = dblim;
        snprintf(why, sizeof why, "the database's CONNECTION LIMIT %d", dblim);
    }
    if (need <= room)
        return PGPIPE_OK;
    char list[400] = "";
    size_t len = 0;
    for (int i = 0; i < def->nworkers && len < sizeof list - 1; i++) {
        int n = snprintf(list + len, sizeof list - len, "%sline %d .workers %s --workers %d",
                         i ? ", " : "", def->workers[i].line, def->workers[i].event_type,
                         def->workers[i].workers);
        len = n < 0 ? len : len + (size_t)n;
    }
    return pp_err(err, PGPIPE_MISUSE,
                  "%s: the pipeline needs %d connections at once (%d worker threads: %s; %d for "
                  "the runner itself and its sources), but the server allows %d: %s. Lower "
                  "--workers, or give the server more connections",
                  r->path, need, workers, list, need - workers, room, why);
}

int pgpipe_runner_open(pgpipe_runner **out, const char *path, const pgpipe_run_options *o)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_runner *r = pp_handle_new(sizeof *r);
    *out = r;
    if (!r)
        return PGPIPE_NOMEM;
    r->wake_fd[0] = r->wake_fd[1] = -1;
    pthread_mutex_init(&r->mu, NULL);
    if (o)
        r->opt = *o;
    else
        pgpipe_run_options_init(&r->opt);
    if (!path || !*path)
        return pp_err(&r->h.err, PGPIPE_MISUSE, "pgpipe_runner_open: no pipeline file given");
    if (r->opt.drain_timeout_ms < 0 || r->opt.instance_timeout_ms < 0 || r->opt.run_for_ms < 0)
        return pp_err(&r->h.err, PGPIPE_MISUSE, "pgpipe_runner_open: a negative time in the options");
    if (r->opt.instance_timeout_ms < 3 * RUN_HEARTBEAT_MS)
        r->opt.instance_timeout_ms = 3 * RUN_HEARTBEAT_MS;
    r->conninfo = pp_strdup(r->opt.conninfo ? r->opt.conninfo : "");
    r->on_alert = r->opt.on_alert ? pp_strdup(r->opt.on_alert) : NULL;
    r->http_token = r->opt.http_token ? pp_strdup(r->opt.http_token) : NULL;
    r->path = pp_strdup(path);
    r->base_dir = run_dirname(path);
    if (!r->conninfo || !r->path || !r->base_dir || (r->opt.on_alert && !r->on_alert) ||
        (r->opt.http_token && !r->http_token))
        return pp_err_nomem(&r->h.err);
    r->opt.conninfo = r->conninfo, r->opt.on_alert = r->on_alert, r->opt.http_token = r->http_token;
    if (gethostname(r->host, sizeof r->host - 1))
        snprintf(r->host, sizeof r->host, "localhost");
    if (r->opt.instance && *r->opt.instance)
        snprintf(r->instance, sizeof r->instance, "%s", r->opt.instance);
    else
        snprintf(r->instance, sizeof r->instance, "%s:%ld", r->host, (long)getpid());
    r->opt.instance = r->instance;
    if (pipe(r->wake_fd))
        return pp_err(&r->h.err, PGPIPE_IO, "pgpipe_runner_open: pipe: %s", strerror(errno));
    for (int i = 0; i < 2; i++) {
        fcntl(r->wake_fd[i], F_SETFL, fcntl(r->wake_fd[i], F_GETFL) | O_NONBLOCK);
        fcntl(r->wake_fd[i], F_SETFD, FD_CLOEXEC);
    }
    int rc = run_read_file(r, &r->pf, &r->h.err);
    if (rc)
        return rc;
    r->def = pgpipe_pipefile_def(r->pf);

    /* one pool for everything: every worker holds a connection, each
    ** running schedule body one, and the runner's own loop, the alerts,
    ** the status page and the file sources one each */
    int need = 4 + r->def->nschedules;
    for (int i = 0; i < r->def->nworkers; i++)
        need += r->def->workers[i].workers + 1;
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = need;
    po.max_overflow = need;
    po.min_idle = 1;
    po.application_name = "pgpipe run";
    rc = pgpipe_pool_open(&r->pool, r->conninfo, &po);
    if (rc) {
        pp_err(&r->h.err, rc, "%s", r->pool ? pgpipe_errmsg(r->pool) : "out of memory");
        return rc;
    }
    /* the first connection resolves the pooler mode */
    pgpipe_conn *c = NULL;
    if ((rc = pgpipe_pool_acquire_ex(r->pool, &c, -1, &r->h.err)))
        return rc;
    if (pgpipe_pool_pooler(r->pool) == PGPIPE_POOLER_TRANSACTION) {
        pgpipe_pool_release(c);
        /* each firing holds a session advisory lock for as long as it runs
        ** (the overlap rule across instances), a file source one per file,
        ** the setup one: such a pooler hands the session that holds it to
        ** other clients, and the unlock may reach another session */
        return pp_err(&r->h.err, PGPIPE_MISUSE, "pgpipe run: a transaction-mode pooler is "
                      "between the runner and the server (the server's backend pid is not the "
                      "one the connection reported, or PGPIPE_POOLER=transaction): the runner "
                      "holds session advisory locks (a firing's overlap lock, a file source's "
                      "file, the setup), and such a pooler gives the session that holds one to "
                      "other clients. Connect the runner to PostgreSQL directly, or through a "
                      "pooler in session mode and set PGPIPE_POOLER=session");
    }
    rc = run_conn_budget(r, pgpipe_conn_pg(c), r->def, &r->h.err);
    if (!rc && r->opt.install_schema)
        rc = pgpipe_schema_install(pgpipe_conn_pg(c), NULL, &r->h.err);
    pgpipe_pool_release(c);
    return rc;
}

static void run_wake(pgpipe_runner *r)
{
    if (r->wake_fd[1] >= 0) {
        ssize_t w = write(r->wake_fd[1], "x", 1);
        (void)w;
    }
}

int pgpipe_runner_stop(pgpipe_runner *r)
{
    if (!r)
        return PGPIPE_MISUSE;
    atomic_store(&r->stop_flag, 1);
    run_wake(r);
    return PGPIPE_OK;
}

int pgpipe_runner_reload(pgpipe_runner *r)
{
    if (!r)
        return PGPIPE_MISUSE;
    atomic_store(&r->reload_flag, 1);
    run_wake(r);
    return PGPIPE_OK;
}

/* Register (or revive) this instance; a clean stop sets stopped_at. */
static int run_instance_register(pgpipe_runner *r, PGconn *c, pgpipe_error *err)
{
    char pid[24];
    snprintf(pid, sizeof pid, "%ld", (long)getpid());
    const char *p[5] = { r->def->name, r->instance, r->host, pid, pgpipe_libversion() };
    return pp_exec(c,
                   "INSERT INTO pgpipe.run_instances (pipeline, instance, host, pid, version) "
                   "VALUES ($1, $2, $3, $4::int, $5) ON CONFLICT (pipeline, instance) DO UPDATE "
                   "SET host = EXCLUDED.host, pid = EXCLUDED.pid, version = EXCLUDED.version, "
                   "started_at = now(), heartbeat_at = now(), stopped_at = NULL",
                   5, p, NULL, err, "registering the instance");
}

static int run_instance_beat(pgpipe_runner *r, PGconn *c, int stopped, pgpipe_error *err)
{
    const char *p[2] = { r->def->name, r->instance };
    return pp_exec(c,
                   stopped ? "UPDATE pgpipe.run_instances SET heartbeat_at = now(), "
                             "stopped_at = now() WHERE pipeline = $1 AND instance = $2"
                           : "UPDATE pgpipe.run_instances SET heartbeat_at = now(), "
                             "stopped_at = NULL WHERE pipeline = $1 AND instance = $2",
                   2, p, NULL, err, stopped ? "recording the stop" : "the heartbeat");
}

/* While the setup runs, a stop (SIGTERM, pgpipe_runner_stop) cancels it:
** a thread looks at the stop flag and cancels the statement on the setup's
** connection, again every 200 ms (a cancel between two statements is lost),
** until the setup returns. Without it one stop waited for the whole setup
** (unbounded for a hung one), then started everything before draining. */
typedef struct run_setup_watch {
    pgpipe_runner *r;
    pp_cancel_slot cancel;
    atomic_int done;
} run_setup_watch;

static void *run_setup_watch_main(void *arg)
{
    run_setup_watch *w = arg;
    int64_t next = 0;
    while (!atomic_load(&w->done)) {
        if (atomic_load(&w->r->stop_flag) && run_now_ms() >= next) {
            pp_cancel_fire(&w->cancel);
            next = run_now_ms() + 200;
        }
        struct timespec ts = { 0, 20000000L };
        nanosleep(&ts, NULL);
    }
    return NULL;
}

/* The setup, on one instance at a time (two instances creating the same
** table at once would trip over each other's catalog rows). */
static int run_setup_locked(pgpipe_runner *r, PGconn *c);
static int run_setup(pgpipe_runner *r, PGconn *c)
{
    run_setup_watch w;
    memset(&w, 0, sizeof w);
    w.r = r;
    atomic_init(&w.done, 0);
    pp_cancel_arm(&w.cancel, c);
    pthread_t th;
    int watching = pthread_create(&th, NULL, run_setup_watch_main, &w) == 0;
    int rc = run_setup_locked(r, c);
    atomic_store(&w.done, 1);
    if (watching)
        pthread_join(th, NULL);
    pp_cancel_arm(&w.cancel, NULL);
    return rc;
}

static int run_setup_locked(pgpipe_runner *r, PGconn *c)
{
    char key[64];
    snprintf(key, sizeof key, "%lld",
             (long long)(pp_hash64(r->def->name) & 0x7fffffffffffffffULL));
    const char *p[1] = { key };
    int rc = pp_exec(c, "SELECT pg_advisory_lock($1::bigint)", 1, p, NULL, &r->h.err,
                     "waiting for another instance's setup");
    if (rc)
        return rc;
    rc = run_steps_exec(r, c, r->def->setup, r->def->nsetup, 0, NULL, &r->h.err);
    if (PQstatus(c) != CONNECTION_OK)
        return rc;
    /* this connection goes on as the runner's own (heartbeat, history
    ** maintenance, then the pool): what the setup SET or left open must
    ** not come with it, as after a body (run_sched.c, rs_body_end) */
    PGTransactionStatusType ts = PQtransactionStatus(c);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR) {
        pp_rollback_open(c);
        if (!rc)
            rc = pp_err(&r->h.err, PGPIPE_ERROR, "%s: the setup left a transaction open (BEGIN "
                        "without COMMIT): it was rolled back", r->path);
    }
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (run_session_reset(c, &e) && !rc)
        rc = pp_err(&r->h.err, e.code, "%s: after the setup: %s", r->path, e.message);
    pp_exec(c, "SELECT pg_advisory_unlock($1::bigint)", 1, p, NULL, NULL, NULL);
    return rc;
}

/* Apply a changed file; the running pipeline stays when the new one has
** problems or a component refuses it. */
static void run_reload(pgpipe_runner *r, PGconn *c)
{
    pgpipe_pipefile *pf = NULL;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (run_read_file(r, &pf, &e)) {
        run_log(r, PGPIPE_LOG_ERROR, "reload refused: the file has problems; the running "
                "pipeline is kept", "error", e.message, NULL);
        return;
    }
    const pgpipe_pipe_def *d = pgpipe_pipefile_def(pf);
    if (strcmp(d->name, r->def->name)) {
        run_log(r, PGPIPE_LOG_ERROR, "reload refused: the pipeline's name changed (restart to "
                "rename it)", "new_name", d->name, NULL);
        pgpipe_pipefile_close(pf);
        return;
    }
    if (c && run_conn_budget(r, c, d, &e) == PGPIPE_MISUSE) {
        run_log(r, PGPIPE_LOG_ERROR, "reload refused: the server has too few connections; the "
                "running pipeline is kept", "error", e.message, NULL);
        pgpipe_pipefile_close(pf);
        return;
    }
    int rc = run_sched_reload(r, d);
    if (!rc)
        rc = run_sources_reload(r, d);
    if (!rc)
        rc = run_alerts_reload(r, d);
    /* the components keep nothing of the old tree once their reload returned */
    pgpipe_pipefile *old = r->pf;
    pp_mutex_lock(&r->mu);
    r->pf = pf;
    r->def = d;
    pp_mutex_unlock(&r->mu);
    pgpipe_pipefile_close(old);
    run_log(r, rc ? PGPIPE_LOG_WARN : PGPIPE_LOG_INFO,
            rc ? "reloaded, with a component keeping part of its old settings" : "reloaded",
            NULL);
}

int pgpipe_runner_run(pgpipe_runner *r)
{
    if (!r || !r->def || !r->pool)
        return PGPIPE_MISUSE;
    r->started_ms = run_now_ms();
    pgpipe_conn *cc = NULL;
    int rc = pgpipe_pool_acquire_ex(r->pool, &cc, -1, &r->h.err);
    if (rc)
        return rc;
    PGconn *c = pgpipe_conn_pg(cc);
    if ((rc = run_instance_register(r, c, &r->h.err))) {
        pgpipe_pool_release(cc);
        return rc;
    }
    rc = run_setup(r, c);
    if (atomic_load(&r->stop_flag)) {
        /* stopped during the setup (cancelled there): nothing started yet,
        ** so the drain is done; exit as a drain does */
        run_sd_notify(r, "STOPPING=1");
        run_log(r, rc ? PGPIPE_LOG_WARN : PGPIPE_LOG_INFO,
                rc ? "stopping: the setup was cancelled; nothing started"
                   : "stopping: the setup ended; nothing started",
                rc ? "error" : NULL, rc ? r->h.err.message : NULL, NULL);
        if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
            pp_rollback_open(c);
        if (PQstatus(c) == CONNECTION_OK)
            run_instance_beat(r, c, 1, NULL);
        if (PQstatus(c) == CONNECTION_OK)
            pgpipe_pool_release(cc);
        else
            pgpipe_pool_discard(cc);
        memset(&r->h.err, 0, sizeof r->h.err);
        run_log(r, PGPIPE_LOG_INFO, "stopped", NULL);
        return PGPIPE_OK;
    }
    if (rc) {
        pgpipe_pool_release(cc);
        return rc;
    }
    /* a handler the server refuses is the file's error: nothing starts */
    if ((rc = run_sources_preflight(r))) {
        run_instance_beat(r, c, 1, NULL);
        pgpipe_pool_release(cc);
        return rc;
    }
    run_log(r, PGPIPE_LOG_INFO, "setup done; starting", "file", r->path, NULL);
    if ((rc = run_sched_start(r)) || (rc = run_sources_start(r)) || (rc = run_alerts_start(r)) ||
        (rc = run_status_start(r))) {
        atomic_store(&r->stop_flag, 1);
    } else {
        run_sd_notify(r, "READY=1\nSTATUS=running");
        run_log(r, PGPIPE_LOG_INFO, "running", NULL);
    }
    int64_t next_beat = run_now_ms() + RUN_HEARTBEAT_MS, next_maint = run_now_ms();
    pgpipe_error e;
    while (!atomic_load(&r->stop_flag)) {
        int64_t now = run_now_ms();
        if (r->opt.run_for_ms && now - r->started_ms >= r->opt.run_for_ms) {
            run_log(r, PGPIPE_LOG_INFO, "run time reached", NULL);
            atomic_store(&r->stop_flag, 1);
            break;
        }
        if (atomic_exchange(&r->reload_flag, 0)) {
            run_reload(r, cc ? c : NULL);
        }
        run_sources_check(r);
        if (now >= next_beat) {
            memset(&e, 0, sizeof e);
            if (run_instance_beat(r, c, 0, &e)) {
                run_log(r, PGPIPE_LOG_WARN, "heartbeat failed; reconnecting", "error",
                        e.message, NULL);
                pgpipe_pool_discard(cc);
                cc = NULL;
                if (pgpipe_pool_acquire_ex(r->pool, &cc, 5000, &e) == PGPIPE_OK) {
                    c = pgpipe_conn_pg(cc);
                    run_instance_register(r, c, NULL);
                } else {
                    cc = NULL;
                }
            }
            run_sd_notify(r, "WATCHDOG=1");
            next_beat = now + RUN_HEARTBEAT_MS;
        }
        if (cc && now >= next_maint) {
            memset(&e, 0, sizeof e);
            if (run_sched_maintain(r, c, &e))
                run_log(r, PGPIPE_LOG_WARN, "history maintenance failed", "error", e.message,
                        NULL);
            next_maint = now + RUN_MAINTAIN_MS;
        }
        if (!cc) { /* the database is away: try again at the next beat */
            if (pgpipe_pool_acquire_ex(r->pool, &cc, 0, NULL) == PGPIPE_OK) {
                c = pgpipe_conn_pg(cc);
                run_instance_register(r, c, NULL);
            } else {
                cc = NULL;
            }
        }
        int64_t wait = next_beat - run_now_ms();
        if (next_maint - run_now_ms() < wait)
            wait = next_maint - run_now_ms();
        if (r->opt.run_for_ms && r->started_ms + r->opt.run_for_ms - run_now_ms() < wait)
            wait = r->started_ms + r->opt.run_for_ms - run_now_ms();
        if (wait < 0)
            wait = 0;
        struct pollfd pfd = { r->wake_fd[0], POLLIN, 0 };
        if (poll(&pfd, 1, (int)wait) > 0) {
            char buf[64];
            while (read(r->wake_fd[0], buf, sizeof buf) > 0) {
            }
        }
    }
    run_sd_notify(r, "STOPPING=1");
    run_log(r, PGPIPE_LOG_INFO, "stopping: draining", NULL);
    int drain = r->opt.drain_timeout_ms;
    run_sources_stop(r, drain);
    run_sched_stop(r, drain);
    run_alerts_stop(r);
    run_status_stop(r);
    if (cc) {
        run_instance_beat(r, c, 1, NULL);
        pgpipe_pool_release(cc);
    }
    run_log(r, PGPIPE_LOG_INFO, "stopped", NULL);
    return rc;
}

void pgpipe_runner_close(pgpipe_runner *r)
{
    if (!r)
        return;
    run_sched_free(r);
    run_sources_free(r);
    run_alerts_free(r);
    run_status_free(r);
    if (r->pool)
        pgpipe_pool_close(r->pool, NULL);
    pgpipe_pipefile_close(r->pf);
    for (int i = 0; i < 2; i++)
        if (r->wake_fd[i] >= 0)
            close(r->wake_fd[i]);
    pthread_mutex_destroy(&r->mu);
    pp_free(r->conninfo);
    pp_free(r->on_alert);
    pp_free(r->http_token);
    pp_free(r->path);
    pp_free(r->base_dir);
    pp_free(r);
}

#endif /* PGPIPE_OMIT_RUN */
