/*
** Driver of the COPY loader benchmark (test/bench/copy/run.sh).
**
**   bench_copy gen-csv FILE N        events file, CSV: source,event_type,payload
**   bench_copy gen-ndjson FILE N     the same events, one JSON object per line
**   bench_copy gen-ndjson - BYTES    stream about BYTES of NDJSON to stdout
**   bench_copy pgpipe FILE [CONNS]   load FILE into staging.raw_events (on
**                                    CONNS connections; the default: 2)
**   bench_copy pgpipe-stdin          load NDJSON from stdin, print peak RSS
**   bench_copy insert FILE N [CONNS] row-at-a-time INSERT of the first N rows
**   bench_copy multi FILE ROWS [CONNS]  ROWS-row multi-VALUES INSERT statements
**                                    (CONNS connections side by side; 1)
** Loads print "rows=N seconds=S" (and "rss_kb=K"). Connection: PG* variables.
** BATCH_ROWS and BATCH_BYTES (environment) set pgpipe's batch size (experiments).
** Inputs are generated from a fixed seed.
*/
#define _POSIX_C_SOURCE 200809L
#include "pgpipe.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/wait.h>

static uint64_t seed = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void)
{
    seed ^= seed >> 12;
    seed ^= seed << 25;
    seed ^= seed >> 27;
    return seed * 2685821657736338717ull;
}

static const char *sources[] = { "web", "ios", "android", "api", "batch" };
static const char *types[] = { "page_view", "click", "signup", "purchase", "logout", "search" };
static const char *pages[] = { "/", "/pricing", "/docs/start", "/blog/copy-vs-insert", "/cart" };

/* one event's payload object (without the source/event_type members) */
static int payload(char *buf, size_t n, long long i)
{
    uint64_t r = rnd();
    return snprintf(buf, n,
                    "\"user_id\":\"u%llu\",\"session\":\"%016llx\",\"ts\":%lld,\"amount\":%llu.%02llu,"
                    "\"tags\":[\"t%llu\",\"t%llu\"],\"props\":{\"page\":\"%s\",\"ref\":\"%s\","
                    "\"n\":%lld}",
                    (unsigned long long)(r % 100000), (unsigned long long)rnd(),
                    1700000000000LL + i * 37, (unsigned long long)(r >> 20) % 500,
                    (unsigned long long)(r >> 40) % 100, (unsigned long long)(r >> 8) % 50,
                    (unsigned long long)(r >> 16) % 50, pages[(r >> 24) % 5],
                    (r >> 30) % 3 ? "google" : "direct, \\\"quoted\\\"", i);
}

static void gen(const char *path, int csv, long long n, long long bytes)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "w") : stdout;
    if (!f) { perror(path); exit(1); }
    char p[512];
    if (csv)
        fputs("source,event_type,payload\n", f);
    long long out = 0;
    for (long long i = 0; bytes ? out < bytes : i < n; i++) {
        payload(p, sizeof p, i);
        const char *src = sources[rnd() % 5], *ty = types[rnd() % 6];
        if (csv) {
            out += fprintf(f, "%s,%s,\"{", src, ty);
            for (const char *s = p; *s; s++) {
                if (*s == '"') { fputc('"', f); out++; }
                fputc(*s, f);
                out++;
            }
            out += fprintf(f, "}\"\n");
        } else {
            /* the same three fields as the CSV: staging gets identical rows */
            out += fprintf(f, "{\"source\":\"%s\",\"event_type\":\"%s\",\"payload\":{%s}}\n",
                           src, ty, p);
        }
    }
    if (f != stdout)
        fclose(f);
    else
        fflush(f);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int load_pgpipe(const char *path, int connections)
{
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    if (connections > 0)
        o.connections = connections;
    if (getenv("BATCH_ROWS")) /* experiments: another batch size */
        o.batch_rows = atoi(getenv("BATCH_ROWS"));
    if (getenv("BATCH_BYTES"))
        o.batch_bytes = (size_t)atoll(getenv("BATCH_BYTES"));
    o.source_field = "source";
    o.event_type_field = "event_type";
    o.payload_field = "payload"; /* validated as JSON (CSV: a JSON text column) */
    o.format = path ? PGPIPE_FORMAT_AUTO : PGPIPE_FORMAT_NDJSON;
    /* every run is a new load (the same file would otherwise be skipped as loaded) */
    char key[64];
    snprintf(key, sizeof key, "bench-%ld-%.6f", (long)getpid(), now_s());
    o.load_key = key;
    pgpipe_loader *l;
    double t0 = now_s();
    int rc = pgpipe_loader_open(&l, &o);
    if (rc == PGPIPE_OK)
        rc = path ? pgpipe_loader_load_file(l, path) : pgpipe_loader_load_fd(l, 0, NULL);
    double t = now_s() - t0;
    if (rc != PGPIPE_OK) {
        fprintf(stderr, "pgpipe load failed: %s\n", pgpipe_errmsg(l));
        return 1;
    }
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("rows=%lld seconds=%.3f rss_kb=%ld dead=%lld bytes=%lld\n", s.rows_loaded, t,
           ru.ru_maxrss, s.rows_dead, s.bytes);
    pgpipe_loader_close(l);
    return 0;
}

static PGconn *conn(void)
{
    PGconn *c = PQconnectdb("");
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "%s", PQerrorMessage(c));
        exit(1);
    }
    return c;
}

/* The rows of the CSV, read with the pgpipe CSV reader, INSERTed per_stmt
** rows a statement on conns connections (one process each, taking every
** conns-th statement's rows). */
static int load_insert(const char *path, long long limit, int per_stmt, int conns)
{
    int part = 0;
    pid_t kids[16];
    int nkids = 0;
    if (conns > 16)
        conns = 16;
    for (int i = 1; i < conns; i++) {
        pid_t p = fork();
        if (p < 0) { perror("fork"); return 1; }
        if (p == 0) { part = i; nkids = 0; break; }
        kids[nkids++] = p;
    }
    int fd = open(path, O_RDONLY);
    if (fd < 0) { perror(path); return 1; }
    pgpipe_csv_options co;
    pgpipe_csv_options_init(&co);
    co.header = 1;
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_fd(&r, fd, &co);
    PGconn *c = conn();
    /* the statement for per_stmt rows */
    size_t cap = 64 + (size_t)per_stmt * 40;
    char *sql = malloc(cap);
    size_t n = (size_t)snprintf(sql, cap, "INSERT INTO staging.raw_events (source, event_type, payload) VALUES ");
    for (int i = 0; i < per_stmt; i++)
        n += (size_t)snprintf(sql + n, cap - n, "%s($%d,$%d,$%d::jsonb)", i ? "," : "", 3 * i + 1,
                              3 * i + 2, 3 * i + 3);
    PGresult *pr = PQprepare(c, "ins", sql, 0, NULL);
    if (PQresultStatus(pr) != PGRES_COMMAND_OK) { fprintf(stderr, "%s", PQerrorMessage(c)); return 1; }
    PQclear(pr);
    char **vals = calloc((size_t)per_stmt * 3, sizeof *vals);
    long long rows = 0, seen = 0;
    int k = 0;
    double t0 = now_s();
    while ((limit <= 0 || seen < limit) && pgpipe_csv_next(r) == PGPIPE_ROW) {
        if ((seen++ / per_stmt) % conns != part)
            continue;
        for (int j = 0; j < 3; j++) {
            const char *d; size_t len;
            pgpipe_csv_field(r, j, &d, &len, NULL);
            free(vals[3 * k + j]);
            vals[3 * k + j] = strndup(d, len);
        }
        rows++;
        if (++k == per_stmt) {
            PGresult *e = PQexecPrepared(c, "ins", 3 * per_stmt, (const char *const *)vals, NULL, NULL, 0);
            if (PQresultStatus(e) != PGRES_COMMAND_OK) { fprintf(stderr, "%s", PQerrorMessage(c)); return 1; }
            PQclear(e);
            k = 0;
        }
    }
    if (k) { /* the rest, one by one */
        PGresult *p1 = PQprepare(c, "one", "INSERT INTO staging.raw_events (source, event_type, payload) "
                                 "VALUES ($1,$2,$3::jsonb)", 0, NULL);
        PQclear(p1);
        for (int i = 0; i < k; i++) {
            PGresult *e = PQexecPrepared(c, "one", 3, (const char *const *)vals + 3 * i, NULL, NULL, 0);
            PQclear(e);
        }
    }
    PQfinish(c);
    pgpipe_csv_close(r);
    close(fd);
    if (part)
        exit(0);
    int ok = 1;
    for (int i = 0; i < nkids; i++) {
        int st;
        ok &= waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    }
    double t = now_s() - t0;
    printf("rows=%lld seconds=%.3f connections=%d\n", seen, t, conns);
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "gen-csv")) {
        gen(argv[2], 1, atoll(argv[3]), 0);
        return 0;
    }
    if (argc >= 4 && !strcmp(argv[1], "gen-ndjson")) {
        if (!strcmp(argv[2], "-"))
            gen("-", 0, 0, atoll(argv[3]));
        else
            gen(argv[2], 0, atoll(argv[3]), 0);
        return 0;
    }
    if (argc >= 3 && !strcmp(argv[1], "pgpipe"))
        return load_pgpipe(argv[2], argc >= 4 ? atoi(argv[3]) : 0);
    if (argc >= 2 && !strcmp(argv[1], "pgpipe-stdin"))
        return load_pgpipe(NULL, 0);
    if (argc >= 4 && !strcmp(argv[1], "insert"))
        return load_insert(argv[2], atoll(argv[3]), 1, argc >= 5 ? atoi(argv[4]) : 1);
    if (argc >= 4 && !strcmp(argv[1], "multi"))
        return load_insert(argv[2], 0, atoi(argv[3]), argc >= 5 ? atoi(argv[4]) : 1);
    fprintf(stderr, "usage: see the comment at the top of bench_copy.c\n");
    return 2;
}
