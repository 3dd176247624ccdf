/*
** Hostile input through the loader's C API (issue 11, point 2): the small
** files of the hostile corpus (test/sh/hostile.sh --generate) fed in chunks
** of 1 and 7 bytes, so every multi-byte sequence, escape, quote, BOM, CRLF
** and record boundary straddles a chunk; the counts (read, loaded,
** dead-lettered) must be those of the whole-file load, and must add up.
** The big files are the script test's (test/sh/hostile.sh). Group copy (the
** loader); `T=hostile` selects this file and the script.
*/
#include <dirent.h>

static int hostile_t_load(pgpipe_loader *l, const char *data, size_t len, size_t chunk,
                          pgpipe_load_summary *s)
{
    int rc = pgpipe_loader_feed(l, data, 0); /* starts the load (also an empty one) */
    for (size_t off = 0; rc == PGPIPE_OK && off < len; off += chunk)
        rc = pgpipe_loader_feed(l, data + off, off + chunk <= len ? chunk : len - off);
    if (rc == PGPIPE_OK)
        rc = pgpipe_loader_finish(l);
    pgpipe_loader_summary(l, s);
    return rc;
}

static char *hostile_t_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

PGT_TEST(copy, hostile_corpus_in_small_chunks)
{
    char dir[600], cmd[1400];
    snprintf(dir, sizeof dir, "%s/hostile_c_%d", pgt_tmpdir(), (int)getpid());
    const char *top = getenv("PGPIPE_TOP");
    snprintf(cmd, sizeof cmd, "HOSTILE_SMALL=1 sh '%s/test/sh/hostile.sh' --generate '%s'", top ? top : ".", dir);
    PGT_CHECK_MSG(system(cmd) == 0, "%s", cmd);
    PGconn *c = pgt_db_open();
    DIR *d = opendir(dir);
    PGT_CHECK(d != NULL);
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[1200];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0 || st.st_size > 1000000)
            continue; /* the big ones are the script test's */
        size_t len = 0;
        char *data = hostile_t_read(path, &len);
        PGT_CHECK(data != NULL);
        const char *ext = strrchr(e->d_name, '.');
        int format = !strcmp(ext, ".csv") ? PGPIPE_FORMAT_CSV
                   : !strcmp(ext, ".json") ? PGPIPE_FORMAT_JSON : PGPIPE_FORMAT_NDJSON;
        pgpipe_load_summary want = { 0 };
        size_t chunks[3] = { len ? len : 1, 1, 7 };
        for (int k = 0; k < 3; k++) {
            pgpipe_loader_options o;
            pgpipe_loader_options_init(&o);
            o.conn = c;
            o.install_schema = 0;
            o.format = format;
            o.notify_channel = "";
            char name[300];
            snprintf(name, sizeof name, "hostile_c/%d/%s/%zu", (int)getpid(), e->d_name, chunks[k]);
            o.source_name = name;
            pgpipe_loader *l = NULL;
            PGT_CHECK_MSG(pgpipe_loader_open(&l, &o) == PGPIPE_OK, "%s", pgpipe_errmsg(l));
            pgpipe_load_summary s;
            int rc = hostile_t_load(l, data, len, chunks[k], &s);
            PGT_CHECK_MSG(rc == PGPIPE_OK, "%s in chunks of %zu: %s", e->d_name, chunks[k],
                          pgpipe_errmsg(l));
            PGT_CHECK_MSG(s.records_read == s.rows_loaded + s.rows_dead,
                          "%s: read %lld != loaded %lld + dead %lld", e->d_name, s.records_read,
                          s.rows_loaded, s.rows_dead);
            if (k == 0) {
                want = s;
            } else {
                PGT_CHECK_MSG(s.records_read == want.records_read &&
                              s.rows_loaded == want.rows_loaded && s.rows_dead == want.rows_dead,
                              "%s in chunks of %zu: read %lld loaded %lld dead %lld, whole: "
                              "read %lld loaded %lld dead %lld", e->d_name, chunks[k],
                              s.records_read, s.rows_loaded, s.rows_dead, want.records_read,
                              want.rows_loaded, want.rows_dead);
            }
            /* the books in the database agree */
            char sql[300];
            snprintf(sql, sizeof sql, "SELECT rows_read || ',' || rows_loaded || ',' || "
                     "rows_dead_lettered FROM pgpipe.loads WHERE id = %lld", s.load_id);
            PGresult *r = PGT_EXEC(c, sql);
            char got[100], exp[100];
            snprintf(got, sizeof got, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
            PQclear(r);
            snprintf(exp, sizeof exp, "%lld,%lld,%lld", s.records_read, s.rows_loaded, s.rows_dead);
            PGT_EQ_STR(got, exp);
            pgpipe_loader_close(l);
        }
        free(data);
        unlink(path);
        files++;
    }
    closedir(d);
    PGT_CHECK_MSG(files >= 25, "only %d corpus files", files);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    PGT_CHECK(system(cmd) == 0);
    PQfinish(c);
}
