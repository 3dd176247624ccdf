/*
** chaos: load and process records through test/faultproxy.c while the
** server restarts and loader and worker processes are SIGKILLed, then check
** record by record that nothing was lost and nothing done twice.
**
** Run it inside a throwaway cluster (test/chaos/run.sh does):
**   PGPIPE_TEST_DSN, PGPIPE_TEST_PGDIR   the cluster (Unix socket)
**   CHAOS_PROXY     path of the faultproxy binary
**   CHAOS_DIR       scratch directory (input files, child logs)
**   CHAOS_SEED (1), CHAOS_SECONDS (25), CHAOS_RECORDS (20000),
**   CHAOS_FILES (4), CHAOS_LOADERS (2 at a time), CHAOS_WORKERS (3 processes
**   of 2 threads; odd ones in lease mode, even ones transactional),
**   CHAOS_DROP (0.002), CHAOS_CUT (0.002), CHAOS_STALL (0.004) per forwarded
**   chunk, CHAOS_STALL_MS (1500), CHAOS_EVENT_MS (2500: mean time between
**   process kills / server restarts)
**   CHAOS_FAULTS    the fault kinds, comma-separated (default: all):
**     net        the proxy drops, cuts and stalls connections
**     restart    the server is restarted
**     kill       loader and worker processes are SIGKILLed
**     dup        a second run of a load starts beside the running one
**     pgbouncer  a pgbouncer in pool_mode = transaction (CHAOS_BOUNCER_POOL
**                server connections, 3; server_reset_query = DISCARD ALL)
**                stands between the proxy and the server; pgpipe must find it
**                by itself (PGPIPE_POOLER is unset). Skipped with a message
**                when pgbouncer is not installed (CHAOS_PGBOUNCER: its path).
**     failover   a streaming replica (pg_basebackup -R, its primary_conninfo
**                through a second proxy) is promoted once, mid-load: the
**                replication is cut, the loaders commit for
**                CHAOS_FAILOVER_LAG_MS (1500) more, the primary is stopped
**                (immediate) and the proxy reopened on the same port in front
**                of the new primary. The batches committed after the cut are
**                lost, and the loaders must find and reload them.
**   CHAOS_PGBIN     the directory of pg_ctl and pg_basebackup (failover)
**
** Records: NDJSON lines {"rid":N,"type":"chaos","amount":A,...}, each record id
** in exactly one of CHAOS_FILES files. Some are bad on purpose:
**   badjson   malformed JSON                     -> dead letter, stage load
**   notype    no "type" (a required field)       -> dead letter, stage load
**   nul       a "\u0000" the server's jsonb refuses (isolated in its batch)
**                                                -> dead letter, stage load
**   procfail  "amount":"oops": the handler's ::int cast fails every attempt
**                                                -> dead letter, stage process
**   good      -> chaos.production exactly once
** The worker's SQL handler writes chaos.plog (no constraint: every committed
** processing is a row, so a duplicate is counted, not absorbed) and
** chaos.production (rid PRIMARY KEY) in the claim's transaction.
**
** A load that ended before a failover but whose completion the replica never
** received is run again after it (what its operator must do: the loader had
** exited and cannot know). Workers that stop cleanly report their claim
** counters: every row claimed must be in exactly one of done, retried, dead,
** fenced, released, abandoned.
**
** Phases: setup (direct connection), chaos (CHAOS_SECONDS of faults through
** the proxy), calm (the proxy replaced by one without faults on the same
** port; every file loaded to completion, workers run until the queue is
** empty), check (direct connection). Exit 0 when every check holds.
*/
#include "pgpipe.c"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#define CHAOS_MAXF 64
#define CHAOS_MAXW 16

enum { CHAOS_GOOD, CHAOS_BADJSON, CHAOS_NOTYPE, CHAOS_NUL, CHAOS_PROCFAIL, CHAOS_NKINDS };
static const char *const chaos_kind_names[CHAOS_NKINDS] = { "good", "badjson", "notype", "nul",
                                                             "procfail" };

static unsigned long long chaos_seed = 1;
static unsigned long long chaos_rng_state;
static int chaos_load_delay_ms;
static char chaos_proxy_conninfo[256];
static const char *chaos_dir;

/* the fault kinds (CHAOS_FAULTS) */
enum { CF_NET = 1, CF_RESTART = 2, CF_KILL = 4, CF_DUP = 8, CF_BOUNCER = 16, CF_FAILOVER = 32 };
static const struct { const char *name; int bit; } chaos_kinds[] = {
    { "net", CF_NET }, { "restart", CF_RESTART }, { "kill", CF_KILL }, { "dup", CF_DUP },
    { "pgbouncer", CF_BOUNCER }, { "failover", CF_FAILOVER } };
static int chaos_faults;

/* the primary now: its directory (pgtmp layout: DIR/data, socket in DIR,
** DIR/port) and a direct conninfo; a failover moves them to the replica */
static char chaos_pgdir[700], chaos_pgport[32], chaos_dsn[900];
static pid_t chaos_main_pid;
static uid_t chaos_uid; /* the cluster's owner: the server, pgbouncer and */
static gid_t chaos_gid; /* pg_basebackup run as it */

static unsigned long long chaos_mix(unsigned long long x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static double chaos_rand(void)
{
    chaos_rng_state = chaos_mix(chaos_rng_state);
    return (double)(chaos_rng_state >> 11) / 9007199254740992.0;
}

static int chaos_kind(long long rid)
{
    unsigned long long h = chaos_mix(chaos_seed * 1000003ull + (unsigned long long)rid) % 1000;
    return h < 10 ? CHAOS_BADJSON : h < 20 ? CHAOS_NOTYPE : h < 25 ? CHAOS_NUL
         : h < 40 ? CHAOS_PROCFAIL : CHAOS_GOOD;
}

static int chaos_file_of(long long rid, int nfiles)
{
    return (int)(chaos_mix(chaos_seed * 7919ull + (unsigned long long)rid + 77) % (unsigned)nfiles);
}

static double chaos_envd(const char *name, double def)
{
    const char *v = getenv(name);
    return v && *v ? atof(v) : def;
}

static void chaos_cleanup(void);
static void chaos_die(const char *fmt, ...) PP_PRINTF(1, 2);
static void chaos_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "chaos: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    fflush(stdout);
    if (getpid() == chaos_main_pid)
        chaos_cleanup(); /* pgbouncer and the replica do not outlive the run */
    _exit(2);
}

static void chaos_exec(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
        chaos_die("%s: %s", sql, PQerrorMessage(c));
    PQclear(r);
}

static long long chaos_scalar(PGconn *c, const char *sql)
{
    PGresult *r = PQexec(c, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        chaos_die("%s: %s", sql, PQerrorMessage(c));
    long long v = PQgetisnull(r, 0, 0) ? 0 : strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return v;
}

static PGconn *chaos_connect_direct(void)
{
    PGconn *c = PQconnectdb(chaos_dsn);
    if (PQstatus(c) != CONNECTION_OK)
        chaos_die("connect: %s", PQerrorMessage(c));
    chaos_exec(c, "SET client_min_messages = warning");
    return c;
}

/* ---- children ------------------------------------------------------------ */

static void chaos_child_stderr(const char *what, int index)
{
    char path[600];
    snprintf(path, sizeof path, "%s/%s-%d.log", chaos_dir, what, index);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 2);
        close(fd);
    }
    fprintf(stderr, "--- pid %d starts\n", (int)getpid());
    if (getenv("CHAOS_LOG_INFO"))
        pgpipe_log_set_level(PGPIPE_LOG_INFO);
}

static int chaos_progress(void *ud, const pgpipe_load_progress *p)
{
    (void)ud;
    (void)p;
    if (chaos_load_delay_ms > 0)
        pgpipe_sleep_ms(chaos_load_delay_ms);
    return 0;
}

/* A loader process: load file f through the proxy; exit 0 when it completed. */
static void chaos_loader_main(int f)
{
    chaos_child_stderr("loader", f);
    char path[600];
    snprintf(path, sizeof path, "%s/input-%d.ndjson", chaos_dir, f);
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    o.conninfo = chaos_proxy_conninfo;
    o.event_type_field = "type";
    static const char *const req[] = { "type" };
    o.required = req;
    o.nrequired = 1;
    o.batch_rows = 200;
    o.progress = chaos_progress;
    pgpipe_loader *l = NULL;
    int rc = pgpipe_loader_open(&l, &o);
    if (rc == PGPIPE_OK)
        rc = pgpipe_loader_load_file(l, path);
    pgpipe_load_summary s;
    memset(&s, 0, sizeof s);
    if (l)
        pgpipe_loader_summary(l, &s);
    char line[300];
    pgpipe_load_summary_format(&s, line, sizeof line);
    fprintf(stderr, "loader %d: %s: %s\n", f, rc == PGPIPE_OK ? "completed" : pgpipe_errmsg(l), line);
    if (rc != PGPIPE_OK) {
        /* why it gave up, one line, for the summary */
        char path2[600], msg[256];
        snprintf(path2, sizeof path2, "%s/loader-errors.txt", chaos_dir);
        snprintf(msg, sizeof msg, "%.200s", pgpipe_errmsg(l));
        msg[strcspn(msg, "\n")] = 0;
        FILE *ef = fopen(path2, "a");
        if (ef) {
            fprintf(ef, "%s\n", msg);
            fclose(ef);
        }
    }
    pgpipe_loader_close(l);
    exit(rc == PGPIPE_OK ? 0 : 1);
}

/* The worker's SQL handler: a processing log without constraints and the
** production table with the record id as its primary key, both in the
** claim's transaction. "oops" amounts fail the ::int cast. */
static const char chaos_handler_sql[] =
    "WITH ev AS (SELECT (e->>'id')::bigint AS event_id, (e->'payload'->>'rid')::bigint AS rid,"
    " (e->'payload'->>'amount')::int AS amount FROM jsonb_array_elements($1::jsonb) e),"
    " lg AS (INSERT INTO chaos.plog (rid, event_id) SELECT rid, event_id FROM ev)"
    " INSERT INTO chaos.production (rid, event_id, amount) SELECT rid, event_id, amount FROM ev";

/* A worker process: 2 threads through conninfo until stopped (SIGTERM), or
** until the queue is empty when drain is set. */
static void chaos_worker_main(int index, int lease, int drain, const char *conninfo)
{
    chaos_child_stderr("worker", index);
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = 3;
    po.max_overflow = 2;
    po.acquire_timeout_ms = 5000;
    po.connect_timeout_s = 5;
    pgpipe_pool *pool = NULL;
    int64_t t0 = pgpipe_now_us();
    for (;;) {
        if (pgpipe_pool_open(&pool, conninfo, &po) == PGPIPE_OK)
            break;
        fprintf(stderr, "worker %d: pool: %s\n", index, pgpipe_errmsg(pool));
        pgpipe_pool_close(pool, NULL);
        pool = NULL;
        if (pgpipe_now_us() - t0 > 60000000)
            exit(3);
        pgpipe_sleep_ms(300);
    }
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    wo.threads = 2;
    wo.poll_ms = 200;
    wo.claim.mode = lease ? PGPIPE_CLAIM_LEASE : PGPIPE_CLAIM_TRANSACTIONAL;
    wo.claim.lease_ms = 3000;
    wo.claim.batch_size = 50;
    wo.claim.max_attempts = 4;
    wo.claim.backoff_base_ms = 10;
    wo.claim.backoff_max_ms = 50;
    pgpipe_handler h = { NULL, NULL, chaos_handler_sql, NULL };
    pgpipe_workers *w = NULL;
    int rc = pgpipe_workers_open(&w, pool, &h, &wo);
    if (rc != PGPIPE_OK) {
        fprintf(stderr, "worker %d: start: %s\n", index, pgpipe_errmsg(w));
        exit(4);
    }
    pgpipe_workers_handle_signals(w);
    if (drain)
        rc = pgpipe_workers_run_until_empty(w, 300000);
    else
        rc = pgpipe_workers_wait(w);
    pgpipe_workers_stats st;
    pgpipe_workers_stats_get(w, &st);
    /* the workers are joined: every claim has ended in exactly one counter */
    const pgpipe_claim_stats *t = &st.total;
    int adds_up = t->claimed ==
                  t->done + t->retried + t->dead + t->fenced + t->released + t->abandoned;
    fprintf(stderr, "worker %d (%s): rc %d: batches %lld claimed %lld done %lld retried %lld"
            " dead %lld fenced %lld released %lld abandoned %lld reconnects %lld%s%s%s\n", index,
            lease ? "lease" : "tx", rc, t->batches, t->claimed, t->done, t->retried, t->dead,
            t->fenced, t->released, t->abandoned, st.reconnects,
            adds_up ? "" : " COUNTERS DO NOT ADD UP", rc != PGPIPE_OK ? ": " : "",
            rc != PGPIPE_OK ? pgpipe_errmsg(w) : "");
    /* for the parent: the claim counters (every claimed row in exactly one)
    ** and the pooler mode the pool found by itself */
    {
        char path[600];
        snprintf(path, sizeof path, "%s/worker-stats.txt", chaos_dir);
        FILE *sf = fopen(path, "a");
        const char *pm = pgpipe_pooler_name(pgpipe_pool_pooler(pool));
        if (sf) {
            fprintf(sf, "%d %lld %lld %lld %lld %lld %lld %lld %s\n", index, st.total.claimed,
                    st.total.done, st.total.retried, st.total.dead, st.total.fenced,
                    st.total.released, st.total.abandoned, pm ? pm : "?");
            fclose(sf);
        }
        fprintf(stderr, "worker %d: pooler %s\n", index, pm ? pm : "?");
    }
    pgpipe_workers_close(w);
    pgpipe_pool_close(pool, NULL);
    exit(rc != PGPIPE_OK ? 1 : adds_up ? 0 : 6);
}

static pid_t chaos_spawn_loader(int f)
{
    pid_t p = fork();
    if (p < 0)
        chaos_die("fork: %s", strerror(errno));
    if (p == 0)
        chaos_loader_main(f);
    return p;
}

static pid_t chaos_spawn_worker(int index, int lease, int drain, const char *conninfo)
{
    pid_t p = fork();
    if (p < 0)
        chaos_die("fork: %s", strerror(errno));
    if (p == 0)
        chaos_worker_main(index, lease, drain, conninfo);
    return p;
}

/* ---- the fault proxy --------------------------------------------------- */

typedef struct chaos_proxy {
    pid_t pid;
    int out;          /* its stdout */
    int port;
    long long conns, drops, cuts, stalls;
} chaos_proxy;

static void chaos_proxy_start(chaos_proxy *px, const char *bin, const char *upstream, int port,
                              int faults)
{
    int fds[2];
    if (pipe(fds) != 0)
        chaos_die("pipe");
    char a_port[32], a_seed[32], a_drop[32], a_cut[32], a_stall[32], a_ms[32];
    snprintf(a_port, sizeof a_port, "%d", port);
    snprintf(a_seed, sizeof a_seed, "%llu", chaos_seed);
    snprintf(a_drop, sizeof a_drop, "%g", faults ? chaos_envd("CHAOS_DROP", 0.002) : 0);
    snprintf(a_cut, sizeof a_cut, "%g", faults ? chaos_envd("CHAOS_CUT", 0.002) : 0);
    snprintf(a_stall, sizeof a_stall, "%g", faults ? chaos_envd("CHAOS_STALL", 0.004) : 0);
    snprintf(a_ms, sizeof a_ms, "%d", (int)chaos_envd("CHAOS_STALL_MS", 1500));
    pid_t p = fork();
    if (p < 0)
        chaos_die("fork");
    if (p == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl(bin, bin, "--upstream", upstream, "--port", a_port, "--seed", a_seed, "--duration",
              "3600", "--drop", a_drop, "--cut", a_cut, "--stall", a_stall, "--stall-ms", a_ms,
              (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    px->pid = p;
    px->out = fds[0];
    char line[128];
    size_t n = 0;
    while (n + 1 < sizeof line) { /* "listening on 127.0.0.1:PORT\n" */
        ssize_t r = read(px->out, line + n, 1);
        if (r <= 0)
            chaos_die("the fault proxy did not start");
        if (line[n++] == '\n')
            break;
    }
    line[n] = 0;
    if (sscanf(line, "listening on 127.0.0.1:%d", &px->port) != 1)
        chaos_die("fault proxy: %s", line);
}

static void chaos_proxy_stop(chaos_proxy *px)
{
    kill(px->pid, SIGTERM);
    char buf[512];
    size_t n = 0;
    ssize_t r;
    while (n + 1 < sizeof buf && (r = read(px->out, buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = 0;
    waitpid(px->pid, NULL, 0);
    close(px->out);
    long long bytes = 0;
    const char *s = strstr(buf, "faultproxy:");
    if (!s || sscanf(s, "faultproxy: connections=%lld bytes=%lld drops=%lld cuts=%lld stalls=%lld",
                     &px->conns, &bytes, &px->drops, &px->cuts, &px->stalls) != 5)
        fprintf(stderr, "chaos: unexpected proxy output: %s\n", buf);
}

/* ---- helpers: commands as the cluster's owner, free ports ---------------- */

/* Runs argv (argv[0] a path) as the cluster's owner when we are root, its
** output appended to CHAOS_DIR/NAME.log; returns its exit status (-1: not
** run or killed). */
static int chaos_run_as(char *const argv[], const char *name)
{
    char log[700];
    snprintf(log, sizeof log, "%s/%s.log", chaos_dir, name);
    fflush(NULL);
    pid_t p = fork();
    if (p < 0)
        return -1;
    if (p == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (nul >= 0)
            dup2(nul, 0);
        if (geteuid() == 0 && (setgid(chaos_gid) != 0 || setuid(chaos_uid) != 0))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    int st;
    while (waitpid(p, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A TCP port on 127.0.0.1 that nothing listens on now. */
static int chaos_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = 0;
    if (s >= 0 && bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (s >= 0)
        close(s);
    if (!port)
        chaos_die("no free port on 127.0.0.1");
    return port;
}

static int chaos_port_open(int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    int ok = s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0;
    if (s >= 0)
        close(s);
    return ok;
}

/* A directory in CHAOS_DIR the cluster's owner may write. */
static void chaos_owned_dir(char *out, size_t size, const char *name, int mode)
{
    snprintf(out, size, "%s/%s", chaos_dir, name);
    if (mkdir(out, (mode_t)mode) != 0 && errno != EEXIST)
        chaos_die("mkdir %s: %s", out, strerror(errno));
    if (chmod(out, (mode_t)mode) != 0 || (geteuid() == 0 && chown(out, chaos_uid, chaos_gid) != 0))
        chaos_die("%s: %s", out, strerror(errno));
}

static void chaos_pgtmp(const char *cmd, const char *dir, const char *extra)
{
    char line[1400];
    snprintf(line, sizeof line, "sh tool/pgtmp.sh %s '%s' %s >>'%s/pgtmp.log' 2>&1", cmd, dir,
             extra ? extra : "", chaos_dir);
    if (system(line) != 0)
        printf("chaos: pgtmp %s %s failed (see %s/pgtmp.log)\n", cmd, dir, chaos_dir);
}

/* ---- pgbouncer ------------------------------------------------------------ */

static struct { pid_t pid; int port; char dir[700]; const char *bin; } chaos_bouncer;

/* pgbouncer in transaction mode on chaos_bouncer.port (a free one when 0), in
** front of the primary now. Runs in the foreground as the cluster's owner
** (pgbouncer refuses root); dies with us (PR_SET_PDEATHSIG) or in
** chaos_cleanup. */
static void chaos_bouncer_start(void)
{
    if (!chaos_bouncer.dir[0]) {
        chaos_owned_dir(chaos_bouncer.dir, sizeof chaos_bouncer.dir, "bouncer", 0700);
        char path[800];
        snprintf(path, sizeof path, "%s/userlist.txt", chaos_bouncer.dir);
        FILE *f = fopen(path, "w");
        if (!f)
            chaos_die("%s: %s", path, strerror(errno));
        fprintf(f, "\"postgres\" \"\"\n");
        fclose(f);
    }
    if (!chaos_bouncer.port)
        chaos_bouncer.port = chaos_free_port();
    char ini[800];
    snprintf(ini, sizeof ini, "%s/pgbouncer.ini", chaos_bouncer.dir);
    FILE *f = fopen(ini, "w");
    if (!f)
        chaos_die("%s: %s", ini, strerror(errno));
    const char *d = chaos_bouncer.dir;
    /* server_login_retry 1: after a restart pgbouncer retries at once, not
    ** after 15 s; DISCARD ALL after every transaction makes lost session
    ** state show at once */
    fprintf(f, "[databases]\npostgres = host=%s port=%s dbname=postgres user=postgres\n"
               "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = %d\nunix_socket_dir =\n"
               "auth_type = trust\nauth_file = %s/userlist.txt\nlogfile = %s/pgbouncer.log\n"
               "pidfile = %s/pgbouncer.pid\npool_mode = transaction\ndefault_pool_size = %d\n"
               "min_pool_size = 0\nreserve_pool_size = 0\nmax_client_conn = 500\n"
               "server_reset_query = DISCARD ALL\nserver_reset_query_always = 1\n"
               "server_login_retry = 1\nserver_connect_timeout = 5\nquery_wait_timeout = 120\n"
               "ignore_startup_parameters = extra_float_digits\n",
            chaos_pgdir, chaos_pgport, chaos_bouncer.port, d, d, d,
            (int)chaos_envd("CHAOS_BOUNCER_POOL", 3));
    fclose(f);
    fflush(NULL);
    pid_t parent = getpid();
    pid_t p = fork();
    if (p < 0)
        chaos_die("fork: %s", strerror(errno));
    if (p == 0) {
        char out[800];
        snprintf(out, sizeof out, "%s/pgbouncer.out", d);
        int fd = open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        if (geteuid() == 0 && (setgid(chaos_gid) != 0 || setuid(chaos_uid) != 0))
            _exit(126);
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* after setuid, which clears it */
#endif
        if (getppid() != parent)
            _exit(0);
        execl(chaos_bouncer.bin, "pgbouncer", ini, (char *)NULL);
        _exit(127);
    }
    chaos_bouncer.pid = p;
    for (int i = 0; i < 200 && !chaos_port_open(chaos_bouncer.port); i++) {
        int st;
        if (waitpid(p, &st, WNOHANG) == p) {
            chaos_bouncer.pid = 0;
            chaos_die("pgbouncer exited at start (see %s/pgbouncer.log and pgbouncer.out)", d);
        }
        pgpipe_sleep_ms(50);
    }
    if (!chaos_port_open(chaos_bouncer.port))
        chaos_die("pgbouncer does not listen on 127.0.0.1:%d (see %s/pgbouncer.log)",
                  chaos_bouncer.port, d);
}

static void chaos_bouncer_stop(void)
{
    if (chaos_bouncer.pid <= 0)
        return;
    kill(chaos_bouncer.pid, SIGTERM);
    int st;
    for (int i = 0; i < 100; i++) {
        if (waitpid(chaos_bouncer.pid, &st, WNOHANG) == chaos_bouncer.pid) {
            chaos_bouncer.pid = 0;
            return;
        }
        pgpipe_sleep_ms(50);
    }
    kill(chaos_bouncer.pid, SIGKILL);
    waitpid(chaos_bouncer.pid, &st, 0);
    chaos_bouncer.pid = 0;
}

/* ---- the replica and the failover ------------------------------------------ */

static struct {
    char dir[600], port[32];
    const char *pgbin;
    chaos_proxy link;       /* the replica's primary_conninfo goes through it */
    int started, promoted;
    long long lost_batches, lost_rows; /* on the old primary, not on the new */
} chaos_rep;

static void chaos_pgbin_tool(char *out, size_t size, const char *tool)
{
    snprintf(out, size, "%s/%s", chaos_rep.pgbin, tool);
}

/* A streaming replica of the primary in CHAOS_DIR/replica (the pgtmp layout,
** so tool/pgtmp.sh restarts it like the primary once it is promoted), its
** primary_conninfo through a proxy chaos_failover_cut can stop. */
static void chaos_replica_start(const char *proxy_bin)
{
    PGconn *c = chaos_connect_direct();
    /* what the cluster needs to stream: wal_level replica (the default),
    ** WAL senders and a replication line in pg_hba.conf (initdb's default
    ** pg_hba has one for local connections) */
    PGresult *r = PQexec(c, "SELECT current_setting('wal_level'), current_setting('max_wal_senders')::int,"
                            " (SELECT count(*) FROM pg_hba_file_rules WHERE type = 'local'"
                            "  AND 'replication' = ANY (database))");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        chaos_die("replication settings: %s", PQerrorMessage(c));
    int minimal = strcmp(PQgetvalue(r, 0, 0), "minimal") == 0;
    int senders = atoi(PQgetvalue(r, 0, 1)), hba = atoi(PQgetvalue(r, 0, 2));
    PQclear(r);
    if (!hba) {
        char path[800];
        snprintf(path, sizeof path, "%s/data/pg_hba.conf", chaos_pgdir);
        FILE *f = fopen(path, "a");
        if (!f)
            chaos_die("%s: %s", path, strerror(errno));
        fprintf(f, "local replication all trust\n");
        fclose(f);
        chaos_exec(c, "SELECT pg_reload_conf()");
        printf("chaos: pg_hba.conf: replication allowed for local connections\n");
    }
    if (minimal || senders < 2) {
        chaos_exec(c, "ALTER SYSTEM SET wal_level = replica");
        chaos_exec(c, "ALTER SYSTEM SET max_wal_senders = 10");
        PQfinish(c);
        chaos_pgtmp("restart", chaos_pgdir, NULL);
        printf("chaos: wal_level replica, max_wal_senders 10 (server restarted)\n");
    } else {
        PQfinish(c);
    }
    chaos_owned_dir(chaos_rep.dir, sizeof chaos_rep.dir, "replica", 0755);
    char tool[800], data[800];
    chaos_pgbin_tool(tool, sizeof tool, "pg_basebackup");
    snprintf(data, sizeof data, "%s/data", chaos_rep.dir);
    char *bb[] = { tool, (char *)"-D", data, (char *)"-X", (char *)"stream", (char *)"-R",
                   (char *)"-c", (char *)"fast", (char *)"--no-sync", (char *)"-h", chaos_pgdir,
                   (char *)"-p", chaos_pgport, (char *)"-U", (char *)"postgres", NULL };
    if (chaos_run_as(bb, "replica") != 0)
        chaos_die("pg_basebackup failed (see %s/replica.log)", chaos_dir);
    char up[800];
    snprintf(up, sizeof up, "unix:%s/.s.PGSQL.%s", chaos_pgdir, chaos_pgport);
    chaos_proxy_start(&chaos_rep.link, proxy_bin, up, 0, 0);
    /* the last setting in the file wins over the one -R wrote */
    char path[900];
    snprintf(path, sizeof path, "%s/postgresql.auto.conf", data);
    FILE *f = fopen(path, "a");
    if (!f)
        chaos_die("%s: %s", path, strerror(errno));
    fprintf(f, "primary_conninfo = 'host=127.0.0.1 port=%d user=postgres application_name=chaos_replica'\n",
            chaos_rep.link.port);
    fclose(f);
    snprintf(chaos_rep.port, sizeof chaos_rep.port, "%d", chaos_free_port());
    char extra[64];
    snprintf(extra, sizeof extra, "--port %s", chaos_rep.port);
    chaos_pgtmp("start", chaos_rep.dir, extra);
    chaos_rep.started = 1;
    c = chaos_connect_direct();
    long long streaming = 0;
    for (int i = 0; i < 600 && !streaming; i++) {
        streaming = chaos_scalar(c, "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"
                                    " AND application_name = 'chaos_replica'");
        if (!streaming)
            pgpipe_sleep_ms(100);
    }
    PQfinish(c);
    if (!streaming)
        chaos_die("the replica in %s does not stream (see its server.log)", chaos_rep.dir);
    printf("chaos: streaming replica in %s (socket port %s), replication through 127.0.0.1:%d\n",
           chaos_rep.dir, chaos_rep.port, chaos_rep.link.port);
}

/* The load batches committed on the primary now, -1 when it cannot say (a
** restart under way). */
static long long chaos_batches_now(void)
{
    PGconn *c = PQconnectdb(chaos_dsn);
    long long n = -1;
    if (PQstatus(c) == CONNECTION_OK) {
        PGresult *r = PQexec(c, "SELECT count(*) FROM pgpipe.load_batches");
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            n = atoll(PQgetvalue(r, 0, 0));
        PQclear(r);
    }
    PQfinish(c);
    return n;
}

/* Step 1: the replica stops receiving; what commits from now on is lost. */
static void chaos_failover_cut(void)
{
    chaos_proxy_stop(&chaos_rep.link);
    chaos_rep.link.pid = 0;
}

/* Step 2: the primary stops (immediate: no shutdown checkpoint, nothing more
** sent), the replica is promoted and becomes the primary the restarts, the
** proxy and the check use. */
static void chaos_failover_promote(void)
{
    PGconn *c = chaos_connect_direct();
    long long ob = chaos_scalar(c, "SELECT count(*) FROM pgpipe.load_batches");
    long long orows = chaos_scalar(c, "SELECT coalesce(sum(rows_read), 0) FROM pgpipe.load_batches");
    PQfinish(c);
    char tool[800], data[800];
    chaos_pgbin_tool(tool, sizeof tool, "pg_ctl");
    snprintf(data, sizeof data, "%s/data", chaos_pgdir);
    char *stop[] = { tool, (char *)"-D", data, (char *)"-m", (char *)"immediate", (char *)"-w",
                     (char *)"-t", (char *)"60", (char *)"stop", NULL };
    if (chaos_run_as(stop, "failover") != 0)
        chaos_die("pg_ctl stop -m immediate %s failed (see %s/failover.log)", data, chaos_dir);
    snprintf(data, sizeof data, "%s/data", chaos_rep.dir);
    char *promote[] = { tool, (char *)"-D", data, (char *)"-w", (char *)"-t", (char *)"60",
                        (char *)"promote", NULL };
    if (chaos_run_as(promote, "failover") != 0)
        chaos_die("pg_ctl promote %s failed (see %s/failover.log)", data, chaos_dir);
    snprintf(chaos_pgdir, sizeof chaos_pgdir, "%s", chaos_rep.dir);
    snprintf(chaos_pgport, sizeof chaos_pgport, "%s", chaos_rep.port);
    snprintf(chaos_dsn, sizeof chaos_dsn, "host=%s port=%s user=postgres dbname=postgres",
             chaos_pgdir, chaos_pgport);
    c = chaos_connect_direct();
    for (int i = 0; i < 600 && chaos_scalar(c, "SELECT pg_is_in_recovery()::int"); i++)
        pgpipe_sleep_ms(100);
    long long nb = chaos_scalar(c, "SELECT count(*) FROM pgpipe.load_batches");
    long long nrows = chaos_scalar(c, "SELECT coalesce(sum(rows_read), 0) FROM pgpipe.load_batches");
    PQfinish(c);
    chaos_rep.promoted = 1;
    chaos_rep.lost_batches = ob - nb;
    chaos_rep.lost_rows = orows - nrows;
}

static void chaos_cleanup(void)
{
    chaos_bouncer_stop();
    if (chaos_rep.link.pid > 0) {
        kill(chaos_rep.link.pid, SIGTERM);
        waitpid(chaos_rep.link.pid, NULL, 0);
        chaos_rep.link.pid = 0;
    }
    if (chaos_rep.started) {
        chaos_rep.started = 0;
        chaos_pgtmp("stop", chaos_rep.dir, NULL);
    }
}

/* ---- setup -------------------------------------------------------------- */

static void chaos_write_inputs(int nrec, int nfiles)
{
    FILE *fp[CHAOS_MAXF];
    for (int f = 0; f < nfiles; f++) {
        char path[600];
        snprintf(path, sizeof path, "%s/input-%d.ndjson", chaos_dir, f);
        fp[f] = fopen(path, "w");
        if (!fp[f])
            chaos_die("%s: %s", path, strerror(errno));
    }
    for (long long rid = 1; rid <= nrec; rid++) {
        FILE *o = fp[chaos_file_of(rid, nfiles)];
        int amount = (int)(chaos_mix((unsigned long long)rid) % 1000);
        switch (chaos_kind(rid)) {
        case CHAOS_BADJSON:
            fprintf(o, "{\"rid\":%lld,\"type\":\"chaos\",\"amount\":%d,\"pad\":\"unterminated}\n", rid, amount);
            break;
        case CHAOS_NOTYPE:
            fprintf(o, "{\"rid\":%lld,\"amount\":%d,\"pad\":\"no type here\"}\n", rid, amount);
            break;
        case CHAOS_NUL:
            fprintf(o, "{\"rid\":%lld,\"type\":\"chaos\",\"amount\":%d,\"pad\":\"nul \\u0000 inside\"}\n",
                    rid, amount);
            break;
        case CHAOS_PROCFAIL:
            fprintf(o, "{\"rid\":%lld,\"type\":\"chaos\",\"amount\":\"oops\",\"pad\":\"fails in the handler\"}\n",
                    rid);
            break;
        default:
            fprintf(o, "{\"rid\":%lld,\"type\":\"chaos\",\"amount\":%d,\"user\":{\"id\":%lld,"
                    "\"name\":\"user %lld\"},\"pad\":\"%.*s\"}\n", rid, amount, rid % 977, rid % 977,
                    (int)(rid % 60), "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnop");
        }
    }
    for (int f = 0; f < nfiles; f++)
        if (fclose(fp[f]) != 0)
            chaos_die("write input: %s", strerror(errno));
}

static void chaos_setup_db(int nrec, int nfiles)
{
    PGconn *c = chaos_connect_direct();
    pgpipe_error err;
    pgpipe_error_clear(&err);
    if (pgpipe_schema_install(c, NULL, &err) != PGPIPE_OK)
        chaos_die("schema install: %s", err.message);
    chaos_exec(c, "DROP SCHEMA IF EXISTS chaos CASCADE; CREATE SCHEMA chaos;"
                  " CREATE TABLE chaos.expected (rid bigint PRIMARY KEY, kind text NOT NULL, file int NOT NULL);"
                  " CREATE TABLE chaos.production (rid bigint PRIMARY KEY, event_id bigint NOT NULL, amount int NOT NULL);"
                  " CREATE TABLE chaos.plog (rid bigint, event_id bigint, pid int DEFAULT pg_backend_pid(),"
                  "   at timestamptz DEFAULT clock_timestamp())");
    PGresult *r = PQexec(c, "COPY chaos.expected FROM STDIN");
    if (PQresultStatus(r) != PGRES_COPY_IN)
        chaos_die("copy: %s", PQerrorMessage(c));
    PQclear(r);
    char line[128];
    for (long long rid = 1; rid <= nrec; rid++) {
        int n = snprintf(line, sizeof line, "%lld\t%s\t%d\n", rid, chaos_kind_names[chaos_kind(rid)],
                         chaos_file_of(rid, nfiles));
        if (PQputCopyData(c, line, n) != 1)
            chaos_die("copy: %s", PQerrorMessage(c));
    }
    if (PQputCopyEnd(c, NULL) != 1)
        chaos_die("copy end: %s", PQerrorMessage(c));
    r = PQgetResult(c);
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        chaos_die("copy expected: %s", PQerrorMessage(c));
    PQclear(r);
    while ((r = PQgetResult(c)))
        PQclear(r);
    PQfinish(c);
}

/* ---- the check ------------------------------------------------------------ */

static int chaos_check(int nrec, int nfiles)
{
    PGconn *c = chaos_connect_direct();
    int bad = 0;
    /* per record: staging rows, production rows, committed processings,
    ** dead letters at load and at process */
    chaos_exec(c,
        "CREATE TEMP TABLE tally AS"
        " WITH s AS (SELECT (payload->>'rid')::bigint rid, count(*) n FROM staging.raw_events"
        "            WHERE source LIKE '%/input-%.ndjson' GROUP BY 1),"
        " p AS (SELECT rid, count(*) n FROM chaos.production GROUP BY 1),"
        " g AS (SELECT rid, count(*) n FROM chaos.plog GROUP BY 1),"
        " d AS (SELECT coalesce(payload->>'rid', substring(raw_text from '\"rid\":([0-9]+)'))::bigint rid,"
        "              count(*) FILTER (WHERE stage = 'load') nl,"
        "              count(*) FILTER (WHERE stage = 'process') np,"
        "              count(*) FILTER (WHERE stage = 'process' AND error_message ILIKE '%lease%') npl,"
        "              string_agg(DISTINCT left(error_message, 160) || coalesce(' [' || sqlstate || ']', ''),"
        "                         ' | ') msg"
        "       FROM pgpipe.dead_letters GROUP BY 1)"
        " SELECT e.rid, e.kind, coalesce(s.n, 0) staged, coalesce(p.n, 0) prod, coalesce(g.n, 0) logged,"
        "        coalesce(d.nl, 0) dead_load, coalesce(d.np, 0) dead_proc, coalesce(d.npl, 0) dead_lease,"
        "        d.msg"
        " FROM chaos.expected e LEFT JOIN s USING (rid) LEFT JOIN p USING (rid)"
        " LEFT JOIN g USING (rid) LEFT JOIN d USING (rid)");
    /* what each kind must give */
    chaos_exec(c,
        "CREATE TEMP VIEW verdict AS SELECT *, CASE"
        " WHEN kind = 'good' AND staged = 1 AND prod = 1 AND logged = 1 AND dead_load = 0 AND dead_proc = 0 THEN 'ok'"
        /* the lease crash-loop rule may dead-letter a good record whose
        ** worker was killed max_attempts times: processed never, dead once */
        " WHEN kind = 'good' AND staged = 1 AND prod = 0 AND logged = 0 AND dead_load = 0 AND dead_proc = 1"
        "      AND dead_lease = 1 THEN 'ok-lease-dead'"
        " WHEN kind IN ('badjson', 'notype', 'nul') AND staged = 0 AND prod = 0 AND logged = 0"
        "      AND dead_load = 1 AND dead_proc = 0 THEN 'ok'"
        " WHEN kind = 'procfail' AND staged = 1 AND prod = 0 AND logged = 0 AND dead_load = 0"
        "      AND dead_proc = 1 THEN 'ok'"
        " WHEN staged + prod + dead_load + dead_proc = 0 THEN 'MISSING'"
        " WHEN staged > 1 OR prod > 1 OR logged > 1 OR dead_load + dead_proc > 1"
        "      OR (prod > 0 AND dead_load + dead_proc > 0) THEN 'TWICE'"
        " ELSE 'WRONG' END AS v FROM tally");
    PGresult *r = PQexec(c, "SELECT kind, count(*), count(*) FILTER (WHERE v LIKE 'ok%'),"
                            " sum(prod), sum(dead_load), sum(dead_proc), count(*) FILTER (WHERE v = 'ok-lease-dead')"
                            " FROM verdict GROUP BY kind ORDER BY kind");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        chaos_die("verdict: %s", PQerrorMessage(c));
    printf("records by kind:  kind      records  ok  in_production  dead_at_load  dead_at_process\n");
    for (int i = 0; i < PQntuples(r); i++) {
        int ld = strcmp(PQgetvalue(r, i, 6), "0") != 0;
        printf("                  %-9s %7s %7s %9s %13s %13s%s%s%s\n", PQgetvalue(r, i, 0), PQgetvalue(r, i, 1),
               PQgetvalue(r, i, 2), PQgetvalue(r, i, 3), PQgetvalue(r, i, 4), PQgetvalue(r, i, 5),
               ld ? "  (lease expired on every attempt: " : "", ld ? PQgetvalue(r, i, 6) : "", ld ? ")" : "");
    }
    PQclear(r);
    long long total = chaos_scalar(c, "SELECT count(*) FROM verdict");
    long long okc = chaos_scalar(c, "SELECT count(*) FROM verdict WHERE v LIKE 'ok%'");
    long long missing = chaos_scalar(c, "SELECT count(*) FROM verdict WHERE v = 'MISSING'");
    long long twice = chaos_scalar(c, "SELECT count(*) FROM verdict WHERE v = 'TWICE'");
    long long wrong = chaos_scalar(c, "SELECT count(*) FROM verdict WHERE v = 'WRONG'");
    printf("records: %lld, ok %lld, missing %lld, twice %lld, wrong %lld\n", total, okc, missing, twice, wrong);
    if (total != nrec || okc != nrec) {
        bad = 1;
        r = PQexec(c, "SELECT v, rid, kind, staged, prod, logged, dead_load, dead_proc, coalesce(msg, '')"
                      " FROM verdict WHERE v NOT LIKE 'ok%' ORDER BY rid LIMIT 20");
        for (int i = 0; i < PQntuples(r); i++)
            printf("  %s rid=%s kind=%s staged=%s production=%s processings=%s dead_at_load=%s dead_at_process=%s%s%s\n",
                   PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                   PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7),
                   *PQgetvalue(r, i, 8) ? ": " : "", PQgetvalue(r, i, 8));
        PQclear(r);
    }
    /* nothing that is not an input record */
    long long strays = chaos_scalar(c,
        "SELECT (SELECT count(*) FROM chaos.production WHERE rid NOT IN (SELECT rid FROM chaos.expected))"
        " + (SELECT count(*) FROM pgpipe.dead_letters WHERE coalesce(payload->>'rid',"
        "    substring(raw_text from '\"rid\":([0-9]+)'))::bigint IS NULL OR coalesce(payload->>'rid',"
        "    substring(raw_text from '\"rid\":([0-9]+)'))::bigint NOT IN (SELECT rid FROM chaos.expected))");
    if (strays) {
        printf("FAIL: %lld rows in production or the dead letters that are no input record\n", strays);
        bad = 1;
    }
    long long pending = chaos_scalar(c, "SELECT count(*) FROM staging.raw_events WHERE NOT processed");
    if (pending) {
        printf("FAIL: %lld staging rows still unprocessed\n", pending);
        bad = 1;
    }
    /* pgpipe.loads: one load per file (resumed, never started over),
    ** completed, rows_read = rows_loaded + rows_dead_lettered, and the
    ** counters match the rows and the dead letters */
    r = PQexec(c, "SELECT count(*), count(*) FILTER (WHERE status = 'completed'),"
                  " count(*) FILTER (WHERE rows_read <> rows_loaded + rows_dead_lettered),"
                  " coalesce(sum(rows_read), 0), coalesce(sum(rows_loaded), 0), coalesce(sum(rows_dead_lettered), 0),"
                  " (SELECT count(*) FROM staging.raw_events),"
                  " (SELECT count(*) FROM pgpipe.dead_letters WHERE stage = 'load'),"
                  " (SELECT count(*) FROM pgpipe.loads l LEFT JOIN (SELECT load_id, sum(rows_read) r,"
                  "   sum(rows_loaded) ld, sum(rows_dead_lettered) dl, count(*) n FROM pgpipe.load_batches"
                  "   GROUP BY load_id) b ON b.load_id = l.id"
                  "   WHERE (l.rows_read, l.rows_loaded, l.rows_dead_lettered, l.batches)"
                  "   IS DISTINCT FROM (b.r, b.ld, b.dl, b.n)),"
                  " coalesce(sum(batches), 0)"
                  " FROM pgpipe.loads");
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        chaos_die("loads: %s", PQerrorMessage(c));
    long long nloads = atoll(PQgetvalue(r, 0, 0)), ncompleted = atoll(PQgetvalue(r, 0, 1));
    long long nunbal = atoll(PQgetvalue(r, 0, 2)), rread = atoll(PQgetvalue(r, 0, 3));
    long long rloaded = atoll(PQgetvalue(r, 0, 4)), rdead = atoll(PQgetvalue(r, 0, 5));
    long long staged = atoll(PQgetvalue(r, 0, 6)), dlq_load = atoll(PQgetvalue(r, 0, 7));
    long long batch_mismatch = atoll(PQgetvalue(r, 0, 8)), nbatches = atoll(PQgetvalue(r, 0, 9));
    PQclear(r);
    printf("pgpipe.loads: %lld loads (%lld completed), %lld batches, rows_read %lld = rows_loaded %lld"
           " + rows_dead_lettered %lld; staging rows %lld, load dead letters %lld\n",
           nloads, ncompleted, nbatches, rread, rloaded, rdead, staged, dlq_load);
    if (nloads != nfiles || ncompleted != nfiles || nunbal || rread != nrec || rread != rloaded + rdead ||
        rloaded != staged || rdead != dlq_load || batch_mismatch) {
        printf("FAIL: the load bookkeeping does not add up (%lld loads for %d files, %lld unbalanced,"
               " %lld differ from their batches)\n", nloads, nfiles, nunbal, batch_mismatch);
        bad = 1;
    }
    PQfinish(c);
    return bad;
}

/* ---- the run -------------------------------------------------------------- */

typedef struct chaos_counts {
    int restarts, loader_kills, worker_kills, dup_loaders, dup_starts;
    int loader_fail_exits, worker_fail_exits, loader_runs, worker_runs, reruns_after_failover;
} chaos_counts;

/* Whether file f's load is completed on the primary now. */
static int chaos_load_completed(int f)
{
    PGconn *c = chaos_connect_direct();
    char q[900];
    snprintf(q, sizeof q, "SELECT count(*) FROM pgpipe.loads WHERE status = 'completed'"
             " AND source LIKE '%%/input-%d.ndjson'", f);
    long long n = chaos_scalar(c, q);
    PQfinish(c);
    return n > 0;
}

static void chaos_proxy_add(chaos_proxy *total, const chaos_proxy *px)
{
    total->conns += px->conns;
    total->drops += px->drops;
    total->cuts += px->cuts;
    total->stalls += px->stalls;
}

/* CHAOS_FAULTS: the kinds named (default: all); pgbouncer is left out with a
** message when it is not installed */
static void chaos_parse_faults(void)
{
    const char *v = getenv("CHAOS_FAULTS");
    if (!v || !*v || strcmp(v, "all") == 0) {
        for (size_t i = 0; i < sizeof chaos_kinds / sizeof *chaos_kinds; i++)
            chaos_faults |= chaos_kinds[i].bit;
    } else {
        char buf[256];
        snprintf(buf, sizeof buf, "%s", v);
        for (char *save = NULL, *t = strtok_r(buf, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
            int bit = 0;
            for (size_t i = 0; i < sizeof chaos_kinds / sizeof *chaos_kinds; i++)
                if (strcmp(t, chaos_kinds[i].name) == 0)
                    bit = chaos_kinds[i].bit;
            if (!bit && strcmp(t, "none") != 0)
                chaos_die("CHAOS_FAULTS: unknown kind '%s' (net, restart, kill, dup, pgbouncer, failover,"
                          " all, none)", t);
            chaos_faults |= bit;
        }
    }
    chaos_bouncer.bin = getenv("CHAOS_PGBOUNCER");
    if (chaos_bouncer.bin && (!*chaos_bouncer.bin || access(chaos_bouncer.bin, X_OK) != 0))
        chaos_bouncer.bin = NULL;
    if ((chaos_faults & CF_BOUNCER) && !chaos_bouncer.bin) {
        printf("chaos: fault kind pgbouncer skipped: pgbouncer is not installed (sh tool/deps.sh)\n");
        chaos_faults &= ~CF_BOUNCER;
    }
    chaos_rep.pgbin = getenv("CHAOS_PGBIN");
    if (chaos_faults & CF_FAILOVER) {
        char t[800];
        if (chaos_rep.pgbin)
            chaos_pgbin_tool(t, sizeof t, "pg_basebackup");
        if (!chaos_rep.pgbin || access(t, X_OK) != 0) {
            printf("chaos: fault kind failover skipped: no pg_basebackup (CHAOS_PGBIN)\n");
            chaos_faults &= ~CF_FAILOVER;
        }
    }
}

static const char *chaos_kinds_text(int bits, char *buf, size_t size)
{
    buf[0] = 0;
    for (size_t i = 0; i < sizeof chaos_kinds / sizeof *chaos_kinds; i++)
        if (bits & chaos_kinds[i].bit)
            snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", buf[0] ? "," : "",
                     chaos_kinds[i].name);
    if (!buf[0])
        snprintf(buf, size, "none");
    return buf;
}

/* The workers' reports (worker-stats.txt): every claimed row in exactly one
** counter (pgpipe_claim_stats), and the pooler mode each pool found by itself. Returns 1 when a
** check fails. */
static int chaos_check_workers(void)
{
    char path[600], line[512];
    snprintf(path, sizeof path, "%s/worker-stats.txt", chaos_dir);
    FILE *f = fopen(path, "r");
    long long sum[7] = { 0 }, unbalanced = 0, reports = 0, wrong_pooler = 0;
    const char *want = (chaos_faults & CF_BOUNCER) ? "transaction" : "session";
    while (f && fgets(line, sizeof line, f)) {
        int index;
        long long v[7];
        char pm[32];
        if (sscanf(line, "%d %lld %lld %lld %lld %lld %lld %lld %31s", &index, &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], pm) != 9)
            continue;
        reports++;
        for (int i = 0; i < 7; i++)
            sum[i] += v[i];
        if (v[0] != v[1] + v[2] + v[3] + v[4] + v[5] + v[6]) {
            unbalanced++;
            printf("  worker %d: claimed %lld != done %lld + retried %lld + dead %lld + fenced %lld"
                   " + released %lld + abandoned %lld\n", index, v[0], v[1], v[2], v[3], v[4], v[5], v[6]);
        }
        if (strcmp(pm, want) != 0)
            wrong_pooler++;
    }
    if (f)
        fclose(f);
    printf("claims (%lld worker processes that stopped cleanly): claimed %lld = done %lld + retried %lld"
           " + dead %lld + fenced %lld + released %lld + abandoned %lld; %lld in no counter\n", reports,
           sum[0], sum[1], sum[2], sum[3], sum[4], sum[5], sum[6],
           sum[0] - sum[1] - sum[2] - sum[3] - sum[4] - sum[5] - sum[6]);
    printf("pooler found by the workers' pools: %lld of %lld said %s\n", reports - wrong_pooler,
           reports, want);
    int bad = 0;
    if (unbalanced) {
        printf("FAIL: %lld worker processes claimed rows that are in no counter or in two\n", unbalanced);
        bad = 1;
    }
    if (wrong_pooler || !reports) {
        printf("FAIL: the pooler mode was not detected as %s by every worker process\n", want);
        bad = 1;
    }
    return bad;
}


static int chaos_is_loader(pid_t p, const pid_t *lp, int nf, int *f)
{
    for (int i = 0; i < nf; i++)
        if (lp[i] == p) {
            *f = i;
            return 1;
        }
    return 0;
}

int main(void)
{
    const char *dsn = getenv("PGPIPE_TEST_DSN"), *pgdir = getenv("PGPIPE_TEST_PGDIR");
    const char *proxy_bin = getenv("CHAOS_PROXY");
    chaos_dir = getenv("CHAOS_DIR");
    if (!dsn || !pgdir || !proxy_bin || !chaos_dir)
        chaos_die("run me through test/chaos/run.sh (PGPIPE_TEST_DSN, PGPIPE_TEST_PGDIR, CHAOS_PROXY, CHAOS_DIR)");
    chaos_main_pid = getpid();
    setvbuf(stdout, NULL, _IOLBF, 0);
    snprintf(chaos_dsn, sizeof chaos_dsn, "%s", dsn);
    snprintf(chaos_pgdir, sizeof chaos_pgdir, "%s", pgdir);
    chaos_seed = (unsigned long long)chaos_envd("CHAOS_SEED", 1);
    chaos_rng_state = chaos_mix(chaos_seed ^ 0x5eedull);
    double seconds = chaos_envd("CHAOS_SECONDS", 25);
    int nrec = (int)chaos_envd("CHAOS_RECORDS", 20000);
    int nfiles = (int)chaos_envd("CHAOS_FILES", 4);
    int nload = (int)chaos_envd("CHAOS_LOADERS", 2);
    int nwork = (int)chaos_envd("CHAOS_WORKERS", 3);
    double event_ms = chaos_envd("CHAOS_EVENT_MS", 2500);
    if (nfiles < 1 || nfiles > CHAOS_MAXF || nwork < 1 || nwork > CHAOS_MAXW || nload < 1 || nrec < 1)
        chaos_die("bad CHAOS_FILES / CHAOS_WORKERS / CHAOS_LOADERS / CHAOS_RECORDS");
    {
        char pf[700];
        snprintf(pf, sizeof pf, "%s/port", pgdir);
        FILE *f = fopen(pf, "r");
        if (!f || !fgets(chaos_pgport, sizeof chaos_pgport, f))
            chaos_die("%s: cannot read the server's port", pf);
        fclose(f);
        chaos_pgport[strcspn(chaos_pgport, "\n")] = 0;
        struct stat st;
        if (stat(pgdir, &st) != 0)
            chaos_die("%s: %s", pgdir, strerror(errno));
        chaos_uid = st.st_uid;
        chaos_gid = st.st_gid;
    }
    signal(SIGPIPE, SIG_IGN);
    pgpipe_log_set_level(PGPIPE_LOG_WARN);
    chaos_parse_faults();
    char kinds[128];
    printf("chaos: seed %llu, %g s of faults, %d records in %d files, %d loaders at a time,"
           " %d worker processes x 2 threads\n", chaos_seed, seconds, nrec, nfiles, nload, nwork);
    printf("chaos: fault kinds: %s\n", chaos_kinds_text(chaos_faults, kinds, sizeof kinds));
    chaos_write_inputs(nrec, nfiles);
    chaos_setup_db(nrec, nfiles);
    if (chaos_faults & CF_FAILOVER)
        chaos_replica_start(proxy_bin);
    /* spread the loads over ~60% of the fault phase: a delay per batch */
    {
        double batches_per_loader = (double)nrec / 200.0 / nload + 1;
        chaos_load_delay_ms = (int)(seconds * 400.0 / batches_per_loader);
        if (chaos_load_delay_ms > 2000)
            chaos_load_delay_ms = 2000;
    }
    /* what the fault proxy forwards to: the server, or pgbouncer in front
    ** of it */
    char upstream[800];
    if (chaos_faults & CF_BOUNCER) {
        chaos_bouncer_start();
        snprintf(upstream, sizeof upstream, "tcp:127.0.0.1:%d", chaos_bouncer.port);
        printf("chaos: pgbouncer %s on 127.0.0.1:%d, pool_mode transaction, default_pool_size %d\n",
               chaos_bouncer.bin, chaos_bouncer.port, (int)chaos_envd("CHAOS_BOUNCER_POOL", 3));
    } else {
        snprintf(upstream, sizeof upstream, "unix:%s/.s.PGSQL.%s", chaos_pgdir, chaos_pgport);
    }
    int net = (chaos_faults & CF_NET) != 0;

    chaos_proxy px, pxt;
    memset(&px, 0, sizeof px);
    memset(&pxt, 0, sizeof pxt);
    chaos_proxy_start(&px, proxy_bin, upstream, 0, net);
    snprintf(chaos_proxy_conninfo, sizeof chaos_proxy_conninfo,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=5"
             " application_name=chaos", px.port);
    printf("chaos: fault proxy on 127.0.0.1:%d -> %s (drop %g, cut %g, stall %g per chunk, stalls %g ms)\n",
           px.port, upstream, net ? chaos_envd("CHAOS_DROP", 0.002) : 0, net ? chaos_envd("CHAOS_CUT", 0.002) : 0,
           net ? chaos_envd("CHAOS_STALL", 0.004) : 0, chaos_envd("CHAOS_STALL_MS", 1500));

    chaos_counts k;
    memset(&k, 0, sizeof k);
    pid_t lpid[CHAOS_MAXF], dpid[CHAOS_MAXF], wpid[CHAOS_MAXW];
    int64_t lspawn[CHAOS_MAXF], dspawn[CHAOS_MAXF];
    memset(lspawn, 0, sizeof lspawn);
    memset(dspawn, 0, sizeof dspawn);
    int done[CHAOS_MAXF], started[CHAOS_MAXF];
    memset(started, 0, sizeof started);
    memset(lpid, 0, sizeof lpid);
    memset(dpid, 0, sizeof dpid);
    memset(wpid, 0, sizeof wpid);
    memset(done, 0, sizeof done);
    for (int i = 0; i < nwork; i++) {
        wpid[i] = chaos_spawn_worker(i, i % 2, 0, chaos_proxy_conninfo);
        k.worker_runs++;
    }
    int64_t t0 = pgpipe_now_us(), end = t0 + (int64_t)(seconds * 1e6);
    int64_t next_event = t0 + (int64_t)(event_ms * (0.5 + chaos_rand()) * 1000);
    /* the failover: once, while the loads run: when 25-50% of the batches
    ** are committed (how fast that goes depends on the other faults), at
    ** 60% of the phase at the latest */
    int failover = (chaos_faults & CF_FAILOVER) ? 1 : 0; /* 1 pending, 2 cut, 3 done */
    int64_t failover_at = t0 + (int64_t)(seconds * 0.6 * 1e6);
    long long failover_batches = (long long)((double)nrec / 200.0 * (0.25 + 0.25 * chaos_rand())) + 1;
    int64_t failover_cut = 0, failover_done = 0, failover_poll = 0;
    long long cut_batches = -1;
    double failover_lag_ms = chaos_envd("CHAOS_FAILOVER_LAG_MS", 1500);
    /* the event kinds and their odds */
    double w_restart = (chaos_faults & CF_RESTART) ? 0.2 : 0, w_lkill = (chaos_faults & CF_KILL) ? 0.3 : 0;
    double w_wkill = (chaos_faults & CF_KILL) ? 0.35 : 0, w_dup = (chaos_faults & CF_DUP) ? 0.15 : 0;
    double w_all = w_restart + w_lkill + w_wkill + w_dup;
    int calm = 0;
    int64_t calm_start = 0;
    chaos_proxy px2;
    memset(&px2, 0, sizeof px2);
    for (;;) {
        int64_t now = pgpipe_now_us();
        /* a step that took long (a restart on a loaded machine) may have
        ** eaten the time the failover was due in: it still happens first,
        ** within 60 s more */
        int failover_due = (failover == 1 || failover == 2) && now < end + 60 * 1000000LL;
        if (!calm && now >= end && !failover_due) {
            /* faults stop: the proxy is replaced by a clean one on the same
            ** port (the open connections drop once more), loads and workers
            ** run to completion */
            calm = 1;
            calm_start = now;
            chaos_proxy_stop(&px);
            chaos_proxy_add(&pxt, &px);
            chaos_proxy_start(&px2, proxy_bin, upstream, px.port, 0);
            chaos_load_delay_ms = 0;
            printf("chaos: faults stopped after %.1f s; running everything to completion\n",
                   (double)(now - t0) / 1e6);
        }
        /* reap */
        int st;
        pid_t p;
        while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
            int f;
            int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
            int killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
            int dup = 0;
            if (chaos_is_loader(p, lpid, nfiles, &f) || (dup = chaos_is_loader(p, dpid, nfiles, &f))) {
                int64_t spawned = dup ? dspawn[f] : lspawn[f];
                *(dup ? &dpid[f] : &lpid[f]) = 0;
                /* a load that ended on the old primary after the cut is not
                ** complete on the new one, and its loader is gone: run it
                ** again, as its operator would. Only runs that began before
                ** the promotion: a later one must end complete by itself. */
                if (ok && failover == 3 && spawned < failover_done && !chaos_load_completed(f)) {
                    k.reruns_after_failover++;
                    ok = 0;
                    killed = 1;
                }
                if (ok)
                    done[f] = 1;
                else if (!killed)
                    k.loader_fail_exits++;
            } else if (p == chaos_bouncer.pid) {
                chaos_bouncer.pid = 0;
                chaos_die("pgbouncer died (see %s/pgbouncer.log)", chaos_bouncer.dir);
            } else {
                for (int i = 0; i < nwork; i++)
                    if (wpid[i] == p) {
                        wpid[i] = 0;
                        if (!killed && !(calm && ok))
                            k.worker_fail_exits++;
                    }
            }
        }
        /* the failover, in two steps */
        int cut = 0;
        if (failover == 1 && !calm && now >= failover_poll) {
            failover_poll = now + 250000;
            cut = now >= failover_at || chaos_batches_now() >= failover_batches;
        }
        if (cut) {
            chaos_failover_cut();
            failover = 2;
            failover_cut = now;
            failover_poll = now;
            cut_batches = chaos_batches_now();
            printf("chaos: failover: replication cut at %.1f s\n", (double)(now - t0) / 1e6);
        }
        /* the primary goes once the loaders committed a few batches the
        ** replica does not have (or after 20 s: then nothing is lost) */
        int promote = 0;
        if (failover == 2 && now >= failover_cut + (int64_t)(failover_lag_ms * 1000) &&
            now >= failover_poll) {
            failover_poll = now + 200000;
            long long nb = chaos_batches_now();
            promote = (nb >= 0 && cut_batches >= 0 && nb >= cut_batches + 2) ||
                      now >= failover_cut + 20 * 1000000LL;
        }
        if (promote) {
            int64_t f0 = pgpipe_now_us();
            chaos_failover_promote();
            /* the proxy reopens on the same port in front of the new primary
            ** (pgbouncer too, when it is there): clients keep their conninfo */
            chaos_proxy *cur = calm ? &px2 : &px;
            chaos_proxy_stop(cur);
            chaos_proxy_add(&pxt, cur);
            if (chaos_faults & CF_BOUNCER) {
                chaos_bouncer_stop();
                chaos_bouncer_start();
            } else {
                snprintf(upstream, sizeof upstream, "unix:%s/.s.PGSQL.%s", chaos_pgdir, chaos_pgport);
            }
            int port = cur->port;
            memset(cur, 0, sizeof *cur);
            chaos_proxy_start(cur, proxy_bin, upstream, port, calm ? 0 : net);
            /* loads that ended on the old primary: see the reaping above */
            for (int f = 0; f < nfiles; f++)
                if (done[f] && !lpid[f] && !dpid[f] && !chaos_load_completed(f)) {
                    done[f] = 0;
                    k.reruns_after_failover++;
                }
            failover = 3;
            failover_done = pgpipe_now_us();
            printf("chaos: failover: primary stopped (immediate) and replica promoted %.1f s after the cut,"
                   " %.1f s to switch; %lld load batches (%lld rows) committed on the old primary are"
                   " not on the new one; loads run again because their end was lost: %d\n",
                   (double)(f0 - failover_cut) / 1e6, (double)(pgpipe_now_us() - f0) / 1e6,
                   chaos_rep.lost_batches, chaos_rep.lost_rows, k.reruns_after_failover);
            now = pgpipe_now_us();
        }
        /* keep loaders and workers running */
        int running = 0;
        for (int f = 0; f < nfiles; f++)
            running += lpid[f] != 0;
        for (int f = 0; f < nfiles && running < nload; f++)
            if (!done[f] && !lpid[f] && !dpid[f]) {
                lpid[f] = chaos_spawn_loader(f);
                lspawn[f] = pgpipe_now_us();
                k.loader_runs++;
                running++;
                /* now and then two runs of a load start together */
                if (!calm && !started[f] && (chaos_faults & CF_DUP) && chaos_rand() < 0.5) {
                    dpid[f] = chaos_spawn_loader(f);
                    dspawn[f] = pgpipe_now_us();
                    k.loader_runs++;
                    k.dup_starts++;
                }
                started[f] = 1;
            }
        int all_loaded = 1;
        for (int f = 0; f < nfiles; f++)
            all_loaded &= done[f] && !lpid[f] && !dpid[f];
        if (!calm) {
            for (int i = 0; i < nwork; i++)
                if (!wpid[i]) {
                    wpid[i] = chaos_spawn_worker(i, i % 2, 0, chaos_proxy_conninfo);
                    k.worker_runs++;
                }
        }
        if (calm) {
            if (all_loaded && failover != 2)
                break;
            if (now - calm_start > 600 * 1000000LL) {
                printf("FAIL: the loads did not complete within 600 s after the faults stopped\n");
                break;
            }
            pgpipe_sleep_ms(50);
            continue;
        }
        /* a fault event */
        if (now >= next_event) {
            next_event = now + (int64_t)(event_ms * (0.5 + chaos_rand()) * 1000);
            double d = chaos_rand() * (w_all > 0 ? w_all : 1);
            if (w_all <= 0) {
                /* no process or server faults */
            } else if (d < w_restart) {
                k.restarts++;
                chaos_pgtmp("restart", chaos_pgdir, NULL);
            } else if (d < w_restart + w_lkill) {
                int cand[CHAOS_MAXF], n = 0;
                for (int f = 0; f < nfiles; f++)
                    if (lpid[f])
                        cand[n++] = f;
                if (n) {
                    int f = cand[(int)(chaos_rand() * n) % n];
                    kill(lpid[f], SIGKILL);
                    k.loader_kills++;
                }
            } else if (d < w_restart + w_lkill + w_wkill) {
                int i = (int)(chaos_rand() * nwork) % nwork;
                if (wpid[i]) {
                    kill(wpid[i], SIGKILL);
                    k.worker_kills++;
                }
            } else {
                /* a second run of a load that is running */
                int cand[CHAOS_MAXF], n = 0;
                for (int f = 0; f < nfiles; f++)
                    if (lpid[f] && !dpid[f])
                        cand[n++] = f;
                if (n) {
                    int f = cand[(int)(chaos_rand() * n) % n];
                    dpid[f] = chaos_spawn_loader(f);
                    dspawn[f] = pgpipe_now_us();
                    k.dup_loaders++;
                    k.loader_runs++;
                }
            }
        }
        pgpipe_sleep_ms(20);
    }
    int64_t loaded_at = pgpipe_now_us();
    /* every file is loaded: stop the chaos-phase workers, drain the queue */
    for (int i = 0; i < nwork; i++)
        if (wpid[i])
            kill(wpid[i], SIGTERM);
    for (int i = 0; i < nwork; i++)
        if (wpid[i]) {
            int st;
            waitpid(wpid[i], &st, 0);
            if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                k.worker_fail_exits++;
        }
    char calm_conninfo[256];
    snprintf(calm_conninfo, sizeof calm_conninfo,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable", px2.port);
    pid_t dr[2];
    for (int i = 0; i < 2; i++)
        dr[i] = chaos_spawn_worker(100 + i, i, 1, calm_conninfo);
    int drain_ok = 1;
    for (int i = 0; i < 2; i++) {
        int st;
        waitpid(dr[i], &st, 0);
        drain_ok &= WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    chaos_proxy_stop(&px2);
    printf("chaos: loads complete %.1f s and queue drained %.1f s after the faults stopped\n",
           (double)(loaded_at - calm_start) / 1e6, (double)(pgpipe_now_us() - calm_start) / 1e6);
    double total_s = (double)(pgpipe_now_us() - t0) / 1e6;
    char ran[128];
    int kinds_ran = chaos_faults;
    if ((chaos_faults & CF_FAILOVER) && failover != 3)
        kinds_ran &= ~CF_FAILOVER;
    printf("fault kinds run: %s%s\n", chaos_kinds_text(kinds_ran, ran, sizeof ran),
           kinds_ran != chaos_faults ? " (the failover did not happen: the fault phase was too short)" : "");
    printf("faults injected: connections through the proxy %lld, drops %lld, cuts %lld, stalls %lld,"
           " server restarts %d, loader SIGKILLs %d, worker SIGKILLs %d, second runs of a running load %d,"
           " loads started twice at once %d", pxt.conns, pxt.drops, pxt.cuts, pxt.stalls, k.restarts,
           k.loader_kills, k.worker_kills, k.dup_loaders, k.dup_starts);
    if (chaos_faults & CF_BOUNCER)
        printf(", all through pgbouncer (transaction mode)");
    if (failover == 3)
        printf(", failover with %lld batches lost on the old primary", chaos_rep.lost_batches);
    printf("\n");
    printf("processes: loader runs %d (%d gave up on an error and were run again, %d run again after"
           " the failover), worker processes %d (%d ended on an error), drain %s; %.1f s in all\n",
           k.loader_runs, k.loader_fail_exits, k.reruns_after_failover, k.worker_runs,
           k.worker_fail_exits, drain_ok ? "ok" : "FAILED", total_s);
    /* a loader may give up when the link stays down longer than its
    ** retries (max_retries); any other reason is a bug */
    int unexpected = 0;
    {
        char path[600], msg[512];
        snprintf(path, sizeof path, "%s/loader-errors.txt", chaos_dir);
        FILE *ef = fopen(path, "r");
        while (ef && fgets(msg, sizeof msg, ef)) {
            msg[strcspn(msg, "\n")] = 0;
            static const char *const lost[] = { "closed the connection", "terminating connection",
                "starting up", "shutting down", "Connection refused", "No such file", "timeout",
                "timed out", "recovery", "could not receive", "could not send", "EOF",
                "lost synchronization", "no connection", "Connection reset",
                /* pgbouncer's words for a server that went away */
                "server conn crashed", "server login has been failing", "cannot connect to server",
                "pgbouncer cannot connect", "query_wait_timeout", "client_login_timeout" };
            int ok = 0;
            for (size_t i = 0; i < sizeof lost / sizeof *lost; i++)
                ok |= strstr(msg, lost[i]) != NULL;
            printf("loader gave up: %s%s\n", msg, ok ? "" : "   <- UNEXPECTED");
            unexpected += !ok;
        }
        if (ef)
            fclose(ef);
    }
    int bad = chaos_check(nrec, nfiles);
    bad |= chaos_check_workers();
    if (unexpected) {
        printf("FAIL: %d loader runs ended on an error that is not a lost connection\n", unexpected);
        bad = 1;
    }
    if ((chaos_faults & CF_FAILOVER) && failover != 3) {
        printf("FAIL: the failover did not happen\n");
        bad = 1;
    }
    if (!drain_ok)
        bad = 1;
    chaos_cleanup();
    printf("chaos: %s\n", bad ? "FAIL" : "PASS: every record is in production exactly once or in the dead letters");
    return bad ? 1 : 0;
}
