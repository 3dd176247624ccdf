/*
** The HTTP ingest path alone, without sockets (test/bench/http_ingest/run.sh):
** N requests handed to pp_ingest_submit as the server's loop would, each
** answered through the done callback after its group commits.
**
**   bench_ingest N RECORDS_PER_REQUEST [KEYED [NDJSON_FILE]]
**
** prints "requests=N records=M seconds=S records_per_s=R groups=G".
** KEYED=1 gives every request an Idempotency-Key; the body's records are the
** first lines of NDJSON_FILE when given. Connection: PG* variables.
*/
#define _POSIX_C_SOURCE 200809L
#include "pgpipe.c"
#include <stdio.h>

static atomic_long answered, ok202;

static void done(struct pgpipe_http *h, uint64_t ticket, pp_http_reply *r)
{
    (void)h;
    (void)ticket;
    if (r->status == 202)
        atomic_fetch_add(&ok202, 1);
    atomic_fetch_add(&answered, 1);
    pp_http_reply_free(r);
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    int per = argc > 2 ? atoi(argv[2]) : 1;
    int keyed = argc > 3 ? atoi(argv[3]) : 0;
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.conninfo = "";
    pp_ingest *ig;
    pgpipe_error err;
    PGconn *c = PQconnectdb("");
    if (pgpipe_schema_install(c, NULL, &err) != PGPIPE_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    PQclear(PQexec(c, "TRUNCATE staging.raw_events"));
    PQfinish(c);
    if (pp_ingest_open(&ig, &o, NULL, NULL, done, &err) != PGPIPE_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    pp_buf body = { 0 };
    FILE *in = argc > 4 ? fopen(argv[4], "r") : NULL;
    char line[4096];
    for (int i = 0; i < per; i++)
        if (in && fgets(line, sizeof line, in))
            pp_buf_append(&body, line, strlen(line));
        else
            pp_buf_appendf(&body, "{\"event_type\":\"page_view\",\"user_id\":%d,\"ts\":\"2026-12-05T03:00:00Z\","
                       "\"props\":{\"path\":\"/a/b\",\"ref\":\"x\",\"n\":%d}}\n", 1000 + i, i);
    pp_http_request rq;
    memset(&rq, 0, sizeof rq);
    rq.method = PP_HTTP_POST;
    rq.headers[0] = (pp_http_header){ "Content-Type", 12, "application/x-ndjson", 20 };
    rq.nheaders = 1;
    rq.body = body.data;
    rq.body_len = body.len;
    char key[40];
    int64_t t0 = pgpipe_now_us();
    long refused = 0;
    for (long i = 0; i < n; i++) {
        pp_uuid_v7(rq.id);
        if (keyed) {
            snprintf(key, sizeof key, "bench-%ld-%lld", i, (long long)t0);
            rq.headers[1] = (pp_http_header){ "Idempotency-Key", 15, key, strlen(key) };
            rq.nheaders = 2;
        }
        pp_http_reply now;
        if (pp_ingest_submit(ig, &rq, "bench", (uint64_t)i, &now)) {
            /* 503 over budget: the loop would answer it; here wait and retry */
            pp_http_reply_free(&now);
            refused++;
            i--;
            pgpipe_sleep_ms(1);
        }
    }
    pp_ingest_drain(ig);
    double s = (double)(pgpipe_now_us() - t0) / 1e6;
    printf("requests=%ld records=%ld seconds=%.3f records_per_s=%.0f requests_per_s=%.0f groups=%lld "
           "ok=%ld refused_retried=%ld\n", n, n * per, s, (double)(n * per) / s, (double)n / s,
           ig->m_groups, (long)atomic_load(&ok202), refused);
    pp_ingest_close(ig);
    pp_buf_free(&body);
    return atomic_load(&ok202) == n ? 0 : 1;
}
