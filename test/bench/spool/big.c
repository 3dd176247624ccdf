/* The spool with a big backlog (test/bench/spool/run.sh): write N MiB of
** records, then reopen (recovery reads the headers and scans the last
** segment only), peek, and drain into staging ($SPOOL_DB), each in its own
** process so its peak RSS is its own. Prints one "key=value" line per
** phase. */
#include "pgpipe.c"
#include <sys/resource.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
static long peak_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    const char *mode = argv[1], *dir = argv[2];
    long long mib = atoll(argv[3]);
    pgpipe_spool_options o;
    pgpipe_spool_options_init(&o);
    o.device_id = "bench";
    o.fsync_policy = PGPIPE_SPOOL_FSYNC_NEVER;
    o.segment_bytes = 64LL << 20;
    double t0 = now_s();
    if (!strcmp(mode, "write")) {
        pgpipe_spool *s = NULL;
        if (pgpipe_spool_open(&s, dir, &o) != PGPIPE_OK) {
            fprintf(stderr, "%s\n", pgpipe_errmsg(s));
            return 1;
        }
        char rec[512];
        long long n = 0, bytes = 0, target = mib << 20;
        while (bytes < target) {
            int len = snprintf(rec, sizeof rec, "{\"event_type\":\"bench\",\"i\":%lld,\"pad\":\"%0300d\"}", n, 0);
            if (pgpipe_spool_append(s, rec, (size_t)len, NULL) != PGPIPE_OK) {
                fprintf(stderr, "%s\n", pgpipe_errmsg(s));
                return 1;
            }
            n++;
            bytes += len + 24;
        }
        pgpipe_spool_close(s);
        double t = now_s() - t0;
        printf("phase=write records=%lld mib=%lld seconds=%.2f mib_per_s=%.0f peak_rss_kb=%ld\n", n, mib, t,
               (double)mib / t, peak_kb());
    } else if (!strcmp(mode, "reopen")) {
        pgpipe_spool *s = NULL;
        if (pgpipe_spool_open(&s, dir, &o) != PGPIPE_OK) {
            fprintf(stderr, "%s\n", pgpipe_errmsg(s));
            return 1;
        }
        pgpipe_spool_status st;
        pgpipe_spool_stats(s, &st);
        double t = now_s() - t0;
        pgpipe_spool_close(s);
        printf("phase=reopen records=%lld segments=%lld bytes=%lld seconds=%.3f peak_rss_kb=%ld\n", st.records,
               st.segments, st.bytes, t, peak_kb());
    } else if (!strcmp(mode, "drain")) {
        /* drain into staging of the server named by $SPOOL_DB; VmHWM is the
        ** drainer's peak resident memory */
        const char *db = getenv("SPOOL_DB");
        pgpipe_spool *s = NULL;
        if (!db || pgpipe_spool_open(&s, dir, &o) != PGPIPE_OK) {
            fprintf(stderr, "%s\n", db ? pgpipe_errmsg(s) : "SPOOL_DB is not set");
            return 1;
        }
        pgpipe_loader_options lo;
        pgpipe_loader_options_init(&lo);
        lo.conninfo = db;
        lo.notify_channel = "";
        pgpipe_spool_drain_result res;
        int rc = pgpipe_spool_drain(s, &lo, &res);
        double t = now_s() - t0;
        if (rc != PGPIPE_OK)
            fprintf(stderr, "drain: %s\n", pgpipe_errmsg(s));
        pgpipe_spool_close(s);
        long hwm = -1;
        FILE *f = fopen("/proc/self/status", "r");
        char line[256];
        while (f && fgets(line, sizeof line, f))
            if (!strncmp(line, "VmHWM:", 6))
                hwm = atol(line + 6);
        if (f)
            fclose(f);
        printf("phase=drain records=%lld loaded=%lld segments=%lld seconds=%.2f mib_per_s=%.1f "
               "peak_rss_kb=%ld\n", res.records, res.loaded, res.segments, t, (double)mib / t, hwm);
        return rc == PGPIPE_OK ? 0 : 1;
    } else {
        pgpipe_spool_status st;
        if (pgpipe_spool_peek(dir, &st, NULL) != PGPIPE_OK)
            return 1;
        printf("phase=peek records=%lld seconds=%.3f peak_rss_kb=%ld\n", st.records, now_s() - t0, peak_kb());
    }
    return 0;
}
