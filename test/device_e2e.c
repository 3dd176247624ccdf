/* The device program of test/sh/cross_qemu_e2e.sh, built for aarch64 with
 * -Os -DPGPIPE_OMIT_THREADS (test/sh/lib/cross.sh) and run under qemu:
 *     device_e2e CONNINFO FILE SPOOLDIR SOURCE
 * loads FILE with the loader (source SOURCE-load), then appends each line of
 * FILE to a spool (fsync per record) and drains it (source SOURCE-spool).
 * Prints "loaded N" and "spooled N, drained N records, N loaded". */
#include "pgpipe.c"
int main(int argc, char **argv)
{
    if (argc != 5)
        return 2;
    const char *dsn = argv[1], *file = argv[2], *dir = argv[3], *src = argv[4];
    char name[256];
    pgpipe_loader_options lo;
    pgpipe_loader_options_init(&lo);
    lo.conninfo = dsn;
    snprintf(name, sizeof name, "%s-load", src);
    lo.source_value = name;
    pgpipe_loader *l = NULL;
    if (pgpipe_loader_open(&l, &lo) != PGPIPE_OK || pgpipe_loader_load_file(l, file) != PGPIPE_OK) {
        fprintf(stderr, "load: %s\n", pgpipe_errmsg(l));
        return 1;
    }
    pgpipe_load_summary sum;
    pgpipe_loader_summary(l, &sum);
    pgpipe_loader_close(l);
    printf("loaded %lld\n", sum.rows_loaded);
    pgpipe_spool_options so;
    pgpipe_spool_options_init(&so);
    so.device_id = "arm64dev";
    so.fsync_policy = PGPIPE_SPOOL_FSYNC_RECORD;
    pgpipe_spool *s = NULL;
    if (pgpipe_spool_open(&s, dir, &so) != PGPIPE_OK) {
        fprintf(stderr, "spool: %s\n", pgpipe_errmsg(s));
        return 1;
    }
    FILE *f = fopen(file, "r");
    char line[4096];
    long long n = 0;
    while (f && fgets(line, sizeof line, f))
        if (pgpipe_spool_append(s, line, strcspn(line, "\n"), NULL) == PGPIPE_OK)
            n++;
    if (f)
        fclose(f);
    snprintf(name, sizeof name, "%s-spool", src);
    lo.source_value = name;
    lo.batch_rows = 100;
    lo.install_schema = 0;
    pgpipe_spool_drain_result r;
    int rc = pgpipe_spool_drain(s, &lo, &r);
    printf("spooled %lld, drained %lld records, %lld loaded\n", n, r.records, r.loaded);
    if (rc != PGPIPE_OK)
        fprintf(stderr, "drain: %s\n", pgpipe_errmsg(s));
    pgpipe_spool_close(s);
    return rc != PGPIPE_OK;
}
