/*
** Benchmark driver for the migration runner (see run.sh).
**   bench_migrate split FILE RUNS     splitter throughput: prints MB/s per run
**   bench_migrate apply DSN DIR       applies DIR (history bench_hist.history)
*/
#include "pgpipe.c"
#include <stdio.h>

static int bench_split(const char *path, int runs)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 2;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n)
        return 2;
    fclose(f);
    for (int r = 0; r < runs; r++) {
        int64_t t0 = pgpipe_now_us();
        pgpipe_sql_split *s = NULL;
        pgpipe_sql_split_open(&s, buf, (size_t)n, path);
        pgpipe_sql_stmt st;
        long count = 0;
        int rc;
        while ((rc = pgpipe_sql_split_next(s, &st)) == PGPIPE_ROW)
            count++;
        pgpipe_sql_split_close(s);
        double secs = (double)(pgpipe_now_us() - t0) / 1e6;
        if (rc != PGPIPE_DONE)
            return 3;
        printf("%.1f %ld\n", (double)n / 1e6 / secs, count);
    }
    free(buf);
    return 0;
}

static int bench_apply(const char *dsn, const char *dir)
{
    PGconn *c = PQconnectdb(dsn);
    if (PQstatus(c) != CONNECTION_OK)
        return 2;
    pgpipe_migrate_options o;
    pgpipe_migrate_options_init(&o);
    o.dir = dir;
    o.history_table = "bench_hist.history";
    pgpipe_migrator *m = NULL;
    int rc = pgpipe_migrator_open(&m, c, &o);
    if (rc == PGPIPE_OK)
        rc = pgpipe_migrate_run(m);
    if (rc != PGPIPE_OK) {
        char e[2048];
        pgpipe_error_format(pgpipe_errinfo(m), e, sizeof e);
        fprintf(stderr, "bench_migrate: %s\n", e);
    }
    pgpipe_migrator_close(m);
    PQfinish(c);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "split") == 0)
        return bench_split(argv[2], atoi(argv[3]));
    if (argc == 4 && strcmp(argv[1], "apply") == 0)
        return bench_apply(argv[2], argv[3]);
    fprintf(stderr, "usage: bench_migrate split FILE RUNS | apply DSN DIR\n");
    return 2;
}
