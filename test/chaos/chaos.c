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
** Phases: setup (direct connection), chaos (CHAOS_SECONDS of faults through
** the proxy), calm (the proxy replaced by one without faults on the same
** port; every file loaded to completion, workers run until the queue is
** empty), check (direct connection). Exit 0 when every check holds.
*/
#include "pgpipe.c"

#include <signal.h>
#include <sys/wait.h>

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
    PGconn *c = PQconnectdb(getenv("PGPIPE_TEST_DSN"));
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
        "              count(*) FILTER (WHERE stage = 'process' AND error_message ILIKE '%lease%') npl"
        "       FROM pgpipe.dead_letters GROUP BY 1)"
        " SELECT e.rid, e.kind, coalesce(s.n, 0) staged, coalesce(p.n, 0) prod, coalesce(g.n, 0) logged,"
        "        coalesce(d.nl, 0) dead_load, coalesce(d.np, 0) dead_proc, coalesce(d.npl, 0) dead_lease"
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
        r = PQexec(c, "SELECT v, rid, kind, staged, prod, logged, dead_load, dead_proc FROM verdict"
                      " WHERE v NOT LIKE 'ok%' ORDER BY rid LIMIT 20");
        for (int i = 0; i < PQntuples(r); i++)
            printf("  %s rid=%s kind=%s staged=%s production=%s processings=%s dead_at_load=%s dead_at_process=%s\n",
                   PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), PQgetvalue(r, i, 3),
                   PQgetvalue(r, i, 4), PQgetvalue(r, i, 5), PQgetvalue(r, i, 6), PQgetvalue(r, i, 7));
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
    int loader_fail_exits, worker_fail_exits, loader_runs, worker_runs;
} chaos_counts;

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
    setvbuf(stdout, NULL, _IOLBF, 0);
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
    char port[32] = "";
    {
        char pf[600];
        snprintf(pf, sizeof pf, "%s/port", pgdir);
        FILE *f = fopen(pf, "r");
        if (!f || !fgets(port, sizeof port, f))
            chaos_die("%s: cannot read the server's port", pf);
        fclose(f);
        port[strcspn(port, "\n")] = 0;
    }
    char upstream[700];
    snprintf(upstream, sizeof upstream, "unix:%s/.s.PGSQL.%s", pgdir, port);
    signal(SIGPIPE, SIG_IGN);
    pgpipe_log_set_level(PGPIPE_LOG_WARN);

    printf("chaos: seed %llu, %g s of faults, %d records in %d files, %d loaders at a time,"
           " %d worker processes x 2 threads\n", chaos_seed, seconds, nrec, nfiles, nload, nwork);
    chaos_write_inputs(nrec, nfiles);
    chaos_setup_db(nrec, nfiles);
    /* spread the loads over ~60% of the fault phase: a delay per batch */
    {
        double batches_per_loader = (double)nrec / 200.0 / nload + 1;
        chaos_load_delay_ms = (int)(seconds * 400.0 / batches_per_loader);
        if (chaos_load_delay_ms > 2000)
            chaos_load_delay_ms = 2000;
    }

    chaos_proxy px;
    memset(&px, 0, sizeof px);
    chaos_proxy_start(&px, proxy_bin, upstream, 0, 1);
    snprintf(chaos_proxy_conninfo, sizeof chaos_proxy_conninfo,
             "host=127.0.0.1 port=%d user=postgres dbname=postgres sslmode=disable connect_timeout=5"
             " application_name=chaos", px.port);
    printf("chaos: fault proxy on 127.0.0.1:%d -> %s (drop %g, cut %g, stall %g per chunk, stalls %g ms)\n",
           px.port, upstream, chaos_envd("CHAOS_DROP", 0.002), chaos_envd("CHAOS_CUT", 0.002),
           chaos_envd("CHAOS_STALL", 0.004), chaos_envd("CHAOS_STALL_MS", 1500));

    chaos_counts k;
    memset(&k, 0, sizeof k);
    pid_t lpid[CHAOS_MAXF], dpid[CHAOS_MAXF], wpid[CHAOS_MAXW];
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
    int calm = 0;
    int64_t calm_start = 0;
    chaos_proxy px2;
    memset(&px2, 0, sizeof px2);
    for (;;) {
        int64_t now = pgpipe_now_us();
        if (!calm && now >= end) {
            /* faults stop: the proxy is replaced by a clean one on the same
            ** port (the open connections drop once more), loads and workers
            ** run to completion */
            calm = 1;
            calm_start = now;
            chaos_proxy_stop(&px);
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
            if (chaos_is_loader(p, lpid, nfiles, &f)) {
                lpid[f] = 0;
                if (ok)
                    done[f] = 1;
                else if (!killed)
                    k.loader_fail_exits++;
            } else if (chaos_is_loader(p, dpid, nfiles, &f)) {
                dpid[f] = 0;
                if (ok)
                    done[f] = 1;
                else if (!killed)
                    k.loader_fail_exits++;
            } else {
                for (int i = 0; i < nwork; i++)
                    if (wpid[i] == p) {
                        wpid[i] = 0;
                        if (!killed && !(calm && ok))
                            k.worker_fail_exits++;
                    }
            }
        }
        /* keep loaders and workers running */
        int running = 0;
        for (int f = 0; f < nfiles; f++)
            running += lpid[f] != 0;
        for (int f = 0; f < nfiles && running < nload; f++)
            if (!done[f] && !lpid[f] && !dpid[f]) {
                lpid[f] = chaos_spawn_loader(f);
                k.loader_runs++;
                running++;
                /* now and then two runs of a load start together */
                if (!calm && !started[f] && chaos_rand() < 0.5) {
                    dpid[f] = chaos_spawn_loader(f);
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
            if (all_loaded)
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
            double d = chaos_rand();
            if (d < 0.2) {
                k.restarts++;
                char cmd[1200];
                snprintf(cmd, sizeof cmd, "sh tool/pgtmp.sh restart '%s' >/dev/null 2>&1", pgdir);
                if (system(cmd) != 0)
                    printf("chaos: server restart failed\n");
            } else if (d < 0.5) {
                int cand[CHAOS_MAXF], n = 0;
                for (int f = 0; f < nfiles; f++)
                    if (lpid[f])
                        cand[n++] = f;
                if (n) {
                    int f = cand[(int)(chaos_rand() * n) % n];
                    kill(lpid[f], SIGKILL);
                    k.loader_kills++;
                }
            } else if (d < 0.85) {
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
    printf("faults injected: connections through the proxy %lld, drops %lld, cuts %lld, stalls %lld,"
           " server restarts %d, loader SIGKILLs %d, worker SIGKILLs %d, second runs of a running load %d,"
           " loads started twice at once %d\n", px.conns, px.drops, px.cuts, px.stalls, k.restarts,
           k.loader_kills, k.worker_kills, k.dup_loaders, k.dup_starts);
    printf("processes: loader runs %d (%d gave up on an error and were run again), worker processes %d"
           " (%d ended on an error), drain %s; %.1f s in all\n", k.loader_runs, k.loader_fail_exits,
           k.worker_runs, k.worker_fail_exits, drain_ok ? "ok" : "FAILED", total_s);
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
                "lost synchronization", "no connection" };
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
    if (unexpected) {
        printf("FAIL: %d loader runs ended on an error that is not a lost connection\n", unexpected);
        bad = 1;
    }
    if (!drain_ok)
        bad = 1;
    printf("chaos: %s\n", bad ? "FAIL" : "PASS: every record is in production exactly once or in the dead letters");
    return bad ? 1 : 0;
}
