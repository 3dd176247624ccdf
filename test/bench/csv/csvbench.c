/*
** CSV benchmark driver (test/bench/csv/run.sh builds and runs it).
**
**   csvbench gen DIR MB          write DIR/csv_unquoted.csv, csv_sparse.csv,
**                                csv_quoted.csv, each at least MB megabytes
**                                (fixed seed: same bytes on every machine)
**   csvbench pgpipe FILE         read FILE with pgpipe's CSV reader
**   csvbench libcsv FILE         read FILE with libcsv (callback API)
**   csvbench simd                print the path pgpipe's reader takes here
**                                (PGPIPE_CSV_SIMD forces one)
**
** A reader run visits every field (counts fields, sums their decoded lengths,
** counts rows) and prints one line:
**   seconds=S cpu=C bytes=B rows=R fields=F sumlen=L maxrss_kb=K
** (seconds: wall clock of the read loop; cpu: user + system time of the
** whole process, which a shared, busy machine disturbs less)
*/
#include "pgpipe.c"
#ifndef CSVBENCH_NO_LIBCSV
#include <csv.h>
#endif
#include <sys/resource.h>

static uint64_t gen_state = 0x9e3779b97f4a7c15ull;
static uint64_t gen_rand(void)
{
    uint64_t x = gen_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    gen_state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static const char *const gen_words[] = {
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
    "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
    "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu",
    "Zürich", "São Paulo", "Kraków", "naïve"
};
#define GEN_NWORDS (sizeof gen_words / sizeof gen_words[0])

/* profile 0 unquoted, 1 one quoted field with a comma, 2 every field quoted,
** some with "" inside */
static void gen_row(FILE *f, int profile, long long id)
{
    char fld[10][160];
    const char *w1 = gen_words[gen_rand() % GEN_NWORDS];
    const char *w2 = gen_words[gen_rand() % GEN_NWORDS];
    const char *w3 = gen_words[gen_rand() % GEN_NWORDS];
    snprintf(fld[0], sizeof fld[0], "%lld", id);
    snprintf(fld[1], sizeof fld[1], "%s_%u", w1, (unsigned)(gen_rand() % 1000));
    snprintf(fld[2], sizeof fld[2], "%s.%s@example.com", w2, w1);
    snprintf(fld[3], sizeof fld[3], "%s", w3);
    snprintf(fld[4], sizeof fld[4], "%u.%02u", (unsigned)(gen_rand() % 100000),
             (unsigned)(gen_rand() % 100));
    snprintf(fld[5], sizeof fld[5], "2024-%02u-%02uT%02u:%02u:%02uZ",
             (unsigned)(gen_rand() % 12 + 1), (unsigned)(gen_rand() % 28 + 1),
             (unsigned)(gen_rand() % 24), (unsigned)(gen_rand() % 60),
             (unsigned)(gen_rand() % 60));
    snprintf(fld[6], sizeof fld[6], "%c%c%c", 'A' + (int)(gen_rand() % 26),
             'A' + (int)(gen_rand() % 26), 'A' + (int)(gen_rand() % 26));
    snprintf(fld[7], sizeof fld[7], "%u", (unsigned)(gen_rand() % 50));
    snprintf(fld[8], sizeof fld[8], "%s", gen_rand() % 2 ? "true" : "false");
    int nw = 2 + (int)(gen_rand() % 6);
    size_t o = 0;
    for (int i = 0; i < nw; i++) {
        const char *w = gen_words[gen_rand() % GEN_NWORDS];
        const char *sep = i == 0 ? "" : (profile == 1 && i == 1) ? ", " : " ";
        int n = snprintf(fld[9] + o, sizeof fld[9] - o, "%s%s", sep, w);
        o += (size_t)n;
    }
    for (int i = 0; i < 10; i++) {
        if (i)
            fputc(',', f);
        if (profile == 2 || (profile == 1 && i == 9)) {
            fputc('"', f);
            if (profile == 2 && i == 9 && gen_rand() % 3 == 0) {
                fputs("she said \"\"", f);
                fputs(fld[i], f);
                fputs("\"\"", f);
            } else {
                fputs(fld[i], f);
            }
            fputc('"', f);
        } else {
            fputs(fld[i], f);
        }
    }
    fputc('\n', f);
}

static int gen(const char *dir, long mb)
{
    static const char *const names[3] = { "csv_unquoted.csv", "csv_sparse.csv",
                                          "csv_quoted.csv" };
    for (int p = 0; p < 3; p++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, names[p]);
        FILE *f = fopen(path, "wb");
        if (!f) {
            perror(path);
            return 1;
        }
        static char fbuf[1 << 16];
        setvbuf(f, fbuf, _IOFBF, sizeof fbuf);
        gen_state = 0x9e3779b97f4a7c15ull + (uint64_t)p;
        fputs("id,name,email,city,amount,created_at,code,count,active,comment\n", f);
        long long id = 1;
        while (ftell(f) < mb * 1000000L)
            for (int k = 0; k < 1000; k++)
                gen_row(f, p, id++);
        fclose(f);
    }
    return 0;
}

typedef struct bench_acc {
    long long rows, fields, sumlen;
} bench_acc;

/* not inlined: make bench-csv counts its instructions alone (callgrind
** --toggle-collect=run_pgpipe*) */
__attribute__((noinline)) static int run_pgpipe(const char *path, bench_acc *a)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    pgpipe_csv_options o;
    pgpipe_csv_options_init(&o);
    o.source = path;
    pgpipe_csv *r = NULL;
    pgpipe_csv_open_fd(&r, fd, &o);
    int rc;
    while ((rc = pgpipe_csv_next(r)) == PGPIPE_ROW) {
        int n;
        const pgpipe_csv_span *f = pgpipe_csv_fields(r, &n);
        a->rows++;
        a->fields += n;
        for (int i = 0; i < n; i++)
            a->sumlen += (long long)f[i].len;
    }
    if (rc != PGPIPE_DONE) {
        fprintf(stderr, "pgpipe: %s\n", pgpipe_errmsg(r));
        return 1;
    }
    pgpipe_csv_close(r);
    close(fd);
    return 0;
}

#ifndef CSVBENCH_NO_LIBCSV
static void lc_field(void *s, size_t len, void *ud)
{
    bench_acc *a = ud;
    (void)s;
    a->fields++;
    a->sumlen += (long long)len;
}

static void lc_row(int c, void *ud)
{
    bench_acc *a = ud;
    (void)c;
    a->rows++;
}

__attribute__((noinline)) static int run_libcsv(const char *path, bench_acc *a)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    struct csv_parser p;
    if (csv_init(&p, 0) != 0)
        return 1;
    static char buf[128 * 1024];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
        if (csv_parse(&p, buf, (size_t)n, lc_field, lc_row, a) != (size_t)n) {
            fprintf(stderr, "libcsv: %s\n", csv_strerror(csv_error(&p)));
            return 1;
        }
    }
    csv_fini(&p, lc_field, lc_row, a);
    csv_free(&p);
    close(fd);
    return 0;
}
#else
__attribute__((noinline)) static int run_libcsv(const char *path, bench_acc *a)
{
    (void)path;
    (void)a;
    fprintf(stderr, "libcsv: not built in (libcsv-dev missing)\n");
    return 3;
}
#endif

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "gen") == 0)
        return gen(argv[2], atol(argv[3]));
    if (argc == 2 && strcmp(argv[1], "simd") == 0) {
        pgpipe_csv *r = NULL;
        if (pgpipe_csv_open_feed(&r, NULL) != PGPIPE_OK)
            return 1;
        printf("%s\n", r->simd);
        pgpipe_csv_close(r);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: csvbench gen DIR MB | csvbench pgpipe|libcsv FILE\n");
        return 2;
    }
    bench_acc a = { 0, 0, 0 };
    struct stat st;
    if (stat(argv[2], &st) != 0) {
        perror(argv[2]);
        return 1;
    }
    int64_t t0 = pgpipe_now_us();
    int rc = strcmp(argv[1], "pgpipe") == 0 ? run_pgpipe(argv[2], &a)
             : strcmp(argv[1], "libcsv") == 0 ? run_libcsv(argv[2], &a) : 2;
    int64_t t1 = pgpipe_now_us();
    if (rc)
        return rc;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    printf("seconds=%.6f cpu=%.6f bytes=%lld rows=%lld fields=%lld sumlen=%lld maxrss_kb=%ld\n",
           (double)(t1 - t0) / 1e6, cpu, (long long)st.st_size, a.rows, a.fields, a.sumlen,
           ru.ru_maxrss);
    return 0;
}
