/*
** The HTTP ingest (src/http/http_ingest.c) without a server: hand-built
** requests go to pp_ingest_submit, a done callback keeps the answers, the
** rows are checked in the test database. Each test writes its own source
** name (hi_NAME_pid), so tests sharing the database keep apart.
*/

#include <pthread.h>

typedef struct hi_answer {
    uint64_t ticket;
    int status;
    int retry_after;
    int replayed;
    char body[8192];
} hi_answer;

/* Stands in for the server: pp_ingest hands it back to the callback. */
typedef struct hi_server {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    hi_answer a[512];
    int n;
    int from_loop_thread; /* a done() called on the submitting thread (must not happen) */
    pthread_t submitter;
} hi_server;

static void hi_done(struct pgpipe_http *h, uint64_t ticket, pp_http_reply *reply)
{
    hi_server *s = (hi_server *)(void *)h;
    pthread_mutex_lock(&s->mu);
    if (pthread_equal(pthread_self(), s->submitter))
        s->from_loop_thread = 1;
    if (s->n < (int)(sizeof s->a / sizeof s->a[0])) {
        hi_answer *a = &s->a[s->n++];
        a->ticket = ticket;
        a->status = reply->status;
        a->retry_after = reply->retry_after;
        a->replayed = reply->replayed;
        snprintf(a->body, sizeof a->body, "%.*s", (int)reply->body_len,
                 reply->body ? reply->body : "");
    }
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pp_http_reply_free(reply);
}

static hi_server hi_srv;
static uint64_t hi_ticket;
static char hi_source[64];

static pp_ingest *hi_open(const char *name, pgpipe_http_options *o)
{
    pthread_mutex_init(&hi_srv.mu, NULL);
    pthread_cond_init(&hi_srv.cv, NULL);
    hi_srv.n = 0;
    hi_srv.submitter = pthread_self();
    snprintf(hi_source, sizeof hi_source, "hi_%s_%d", name, (int)getpid());
    o->conninfo = o->conninfo ? o->conninfo : pgt_dsn();
    pp_ingest *ig = NULL;
    pgpipe_error err;
    pgpipe_error_clear(&err);
    PGT_OK(pp_ingest_open(&ig, o, NULL, (struct pgpipe_http *)(void *)&hi_srv, hi_done, &err));
    return ig;
}

/* A request: content type, body, then header name/value pairs, NULL-ended. */
static void hi_req(pp_http_request *rq, const char *ctype, const char *body, size_t len, ...)
{
    memset(rq, 0, sizeof *rq);
    rq->method = PP_HTTP_POST;
    pp_uuid_v7(rq->id);
    rq->body = body;
    rq->body_len = len == (size_t)-1 ? strlen(body) : len;
    if (ctype) {
        rq->headers[0] = (pp_http_header){ "Content-Type", 12, ctype, strlen(ctype) };
        rq->nheaders = 1;
    }
    va_list ap;
    va_start(ap, len);
    const char *n;
    while ((n = va_arg(ap, const char *)) != NULL) {
        const char *v = va_arg(ap, const char *);
        rq->headers[rq->nheaders++] = (pp_http_header){ n, strlen(n), v, strlen(v) };
    }
    va_end(ap);
}

/* Wait (bounded) for the answer of ticket; NULL if none came. */
static hi_answer *hi_wait(uint64_t ticket)
{
    hi_answer *found = NULL;
    pthread_mutex_lock(&hi_srv.mu);
    for (int tries = 0; tries < 300 && !found; tries++) {
        for (int i = 0; i < hi_srv.n; i++)
            if (hi_srv.a[i].ticket == ticket)
                found = &hi_srv.a[i];
        if (!found) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 100 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&hi_srv.cv, &hi_srv.mu, &ts);
        }
    }
    pthread_mutex_unlock(&hi_srv.mu);
    return found;
}

/* Submit; the answer (at once or after the commit) into *a. */
static int hi_post(pp_ingest *ig, pp_http_request *rq, hi_answer *a)
{
    pp_http_reply now;
    uint64_t t = ++hi_ticket;
    memset(a, 0, sizeof *a);
    if (pp_ingest_submit(ig, rq, hi_source, t, &now)) {
        a->status = now.status;
        a->retry_after = now.retry_after;
        a->replayed = now.replayed;
        snprintf(a->body, sizeof a->body, "%.*s", (int)now.body_len, now.body ? now.body : "");
        pp_http_reply_free(&now);
        return a->status;
    }
    pp_ingest_drain(ig);
    hi_answer *w = hi_wait(t);
    PGT_CHECK(w != NULL);
    *a = *w;
    return a->status;
}

static long long hi_count(PGconn *c, const char *table_where)
{
    char sql[512];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s'%s'", table_where, hi_source);
    return pgt_db_int(c, sql);
}
#define HI_ROWS(c) hi_count(c, "staging.raw_events WHERE source = ")
#define HI_DEAD(c) hi_count(c, "pgpipe.dead_letters WHERE source_name = ")

/* "name value" of a metric line in text, -1 when absent. */
static double hi_metric(const char *text, const char *name)
{
    char pat[200];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *p = strstr(text, pat);
    return p ? atof(p + strlen(pat)) : -1;
}

static void hi_clean(PGconn *c)
{
    char sql[512];
    snprintf(sql, sizeof sql, "DELETE FROM staging.raw_events WHERE source = '%s';"
             "DELETE FROM pgpipe.dead_letters WHERE source_name = '%s';"
             "DELETE FROM pgpipe.http_keys WHERE source = '%s'", hi_source, hi_source, hi_source);
    PQclear(PGT_EXEC(c, sql));
}

PGT_TEST(http_ingest, content_types)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    pp_ingest *ig = hi_open("types", &o);
    hi_clean(c);
    pp_http_request rq;
    hi_answer a;
    hi_req(&rq, "application/json", "{\"event_type\":\"one\",\"n\":1}", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":1,\"dead_lettered\":0,\"errors\":[]");
    PGT_CONTAINS(a.body, rq.id);
    hi_req(&rq, "Application/JSON; charset=utf-8",
           " [{\"event_type\":\"arr\",\"n\":2}, {\"event_type\":\"arr\",\"n\":3}]\n", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":2");
    hi_req(&rq, "application/x-ndjson", "{\"event_type\":\"nd\",\"n\":4}\n{\"event_type\":\"nd\",\"n\":5}\n",
           (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":2");
    hi_req(&rq, "application/jsonl", "{\"n\":6}", (size_t)-1, "X-Event-Type", "hdr", NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":1");
    hi_req(&rq, "text/csv; charset=UTF-8", "event_type,n,note\ncsv,7,\"a,b\"\ncsv,8,\n", (size_t)-1,
           NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":2");
    /* GitHub names the event in a header */
    hi_req(&rq, "application/json", "{\"zen\":\"x\"}", (size_t)-1, "X-GitHub-Event", "ping", NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    hi_req(&rq, "text/plain", "{}", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 415);
    hi_req(&rq, NULL, "{}", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 415);
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 9);
    char sql[600];
    snprintf(sql, sizeof sql, "SELECT string_agg(event_type || ':' || (payload->>'n')::text || ':' "
             "|| coalesce(payload->>'note', '-'), ' ' ORDER BY (payload->>'n')::int NULLS LAST) "
             "FROM staging.raw_events WHERE source = '%s'", hi_source);
    PGT_EQ_STR(pgt_db_str(c, sql), "one:1:- arr:2:- arr:3:- nd:4:- nd:5:- hdr:6:- csv:7:a,b csv:8:-");
    snprintf(sql, sizeof sql, "SELECT event_type FROM staging.raw_events WHERE source = '%s' "
             "AND payload ? 'zen'", hi_source);
    PGT_EQ_STR(pgt_db_str(c, sql), "ping");
    PGT_EQ_INT(hi_srv.from_loop_thread, 0);
    pgt_db_close(c);
}

PGT_TEST(http_ingest, bad_records_dead_lettered)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    pp_ingest *ig = hi_open("badrec", &o);
    hi_clean(c);
    pp_http_request rq;
    hi_answer a;
    const char *nd = "{\"event_type\":\"e\",\"n\":1}\n"
                     "{\"event_type\":\"e\",\"n\":2,}\n"
                     "{\"event_type\":\"e\",\"n\":3}\n"
                     "[1,2]\n"
                     "{\"n\":5}\n"
                     "{\"event_type\":\"e\",\"n\":6}\n";
    hi_req(&rq, "application/x-ndjson", nd, (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    /* record 5 names no event type and nothing is configured: it is typed
    ** by its source, not dead-lettered */
    PGT_CONTAINS(a.body, "\"accepted\":4,\"dead_lettered\":2");
    PGT_CONTAINS(a.body, "{\"record\":2,\"line\":2,\"column\":");
    PGT_CONTAINS(a.body, "{\"record\":4,\"line\":4,");
    PGT_CHECK(strstr(a.body, "\"record\":5") == NULL);
    PGT_CONTAINS(a.body, "not an object");
    /* array elements: positions count in the body */
    hi_req(&rq, "application/json", "[{\"event_type\":\"e\",\"n\":7},\n  {\"event_type\":1x}]",
           (size_t)-1, NULL);
    char rid[37];
    memcpy(rid, rq.id, 37);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":1,\"dead_lettered\":1");
    PGT_CONTAINS(a.body, "\"record\":2,\"line\":2,");
    /* CSV: a row that is not UTF-8 */
    hi_req(&rq, "text/csv", "event_type,n\ne,8\ne,\xff\xfe\ne,10\n", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":2,\"dead_lettered\":1");
    PGT_CONTAINS(a.body, "\"line\":3");
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 7);
    PGT_EQ_INT(HI_DEAD(c), 4);
    char sql[400];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' "
             "AND event_type = source AND payload = '{\"n\":5}'", hi_source);
    PGT_EQ_INT(pgt_db_int(c, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = '%s' "
             "AND batch_id = '%s' AND line_number = 2 AND stage = 'load' AND load_id IS NULL "
             "AND error_context LIKE 'http request %s%%'", hi_source, rid, rid);
    PGT_EQ_INT(pgt_db_int(c, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' "
             "AND batch_id = '%s'", hi_source, rid);
    PGT_EQ_INT(pgt_db_int(c, sql), 1);
    pgt_db_close(c);
}

/* A source configured with an event-type field makes it required: a record
** without it is a dead letter (only an unconfigured source falls back to
** its own name). */
PGT_TEST(http_ingest, configured_event_type_is_required)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    pgpipe_http_source src[1];
    memset(src, 0, sizeof src);
    char name[64];
    snprintf(name, sizeof name, "hi_etreq_%d", (int)getpid());
    src[0].name = name;
    src[0].event_type_field = "kind";
    o.sources = src;
    o.nsources = 1;
    pp_ingest *ig = hi_open("etreq", &o);
    snprintf(hi_source, sizeof hi_source, "%s", name);
    hi_clean(c);
    pp_http_request rq;
    hi_answer a;
    hi_req(&rq, "application/x-ndjson", "{\"kind\":\"k1\",\"n\":1}\n{\"n\":2}\n", (size_t)-1,
           NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":1,\"dead_lettered\":1");
    PGT_CONTAINS(a.body, "field \\\"kind\\\" is missing");
    pp_ingest_close(ig);
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' "
             "AND event_type = 'k1'", name);
    PGT_EQ_INT(pgt_db_int(c, sql), 1);
    PGT_EQ_INT(HI_DEAD(c), 1);
    pgt_db_close(c);
}

PGT_TEST(http_ingest, bad_body_400)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.max_records = 3;
    pp_ingest *ig = hi_open("bad400", &o);
    hi_clean(c);
    pp_http_request rq;
    hi_answer a;
    hi_req(&rq, "application/json", "{\"event_type\":\"e\",\n \"n\": tru}", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 400);
    PGT_CONTAINS(a.body, "at line 2, column");
    PGT_CONTAINS(a.body, "byte offset");
    hi_req(&rq, "application/json", "{\"event_type\":\"e\",\"s\":\"\xc3\x28\"}", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 400);
    PGT_CONTAINS(a.body, "line 1, column");
    hi_req(&rq, "application/json", "[{\"event_type\":\"e\"} {\"event_type\":\"e\"}]", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 400);
    PGT_CONTAINS(a.body, "offset");
    hi_req(&rq, "application/json", "[{\"event_type\":\"e\"},{\"event_type\":", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 400);
    hi_req(&rq, "application/json", "  \n", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 400);
    hi_req(&rq, "application/json", "42", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 400);
    /* max_records */
    hi_req(&rq, "application/x-ndjson", "{\"event_type\":\"e\"}\n{\"event_type\":\"e\"}\n"
           "{\"event_type\":\"e\"}\n{\"event_type\":\"e\"}\n", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 413);
    PGT_CONTAINS(a.body, "max_records");
    /* a key longer than 255 bytes */
    char key[300];
    memset(key, 'k', 299);
    key[299] = '\0';
    hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, "Idempotency-Key", key, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 400);
    /* nothing of these was written; the next request is whole */
    hi_req(&rq, "application/x-ndjson", "{\"event_type\":\"e\"}\n{\"event_type\":\"e\"}\n"
           "{\"event_type\":\"e\"}\n", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 3);
    PGT_EQ_INT(HI_DEAD(c), 0);
    pgt_db_close(c);
}

PGT_TEST(http_ingest, idempotency)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    pgpipe_http_source src[1];
    memset(src, 0, sizeof src);
    char name[64];
    snprintf(name, sizeof name, "hi_idemw_%d", (int)getpid());
    src[0].name = name;
    src[0].signature = PGPIPE_HTTP_SIG_STANDARD;
    src[0].idempotency_field = "delivery";
    o.sources = src;
    o.nsources = 1;
    o.group_window_ms = 60000; /* groups close by drain only */
    pp_ingest *ig = hi_open("idem", &o);
    hi_clean(c);
    const char *body = "{\"event_type\":\"e\",\"n\":1}\n{\"event_type\":\"e\",\"n\":2,}\n";
    pp_http_request rq;
    hi_answer a1, a2, a3;
    /* sequential */
    hi_req(&rq, "application/x-ndjson", body, (size_t)-1, "Idempotency-Key", "key-1", NULL);
    uint64_t t1 = ++hi_ticket;
    pp_http_reply now;
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, t1, &now), 0);
    pp_ingest_drain(ig);
    a1 = *hi_wait(t1);
    PGT_EQ_INT(a1.status, 202);
    PGT_CONTAINS(a1.body, "\"accepted\":1,\"dead_lettered\":1");
    hi_req(&rq, "application/x-ndjson", body, (size_t)-1, "Idempotency-Key", "key-1", NULL);
    uint64_t t2 = ++hi_ticket;
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, t2, &now), 0);
    pp_ingest_drain(ig);
    a2 = *hi_wait(t2);
    PGT_EQ_INT(a2.status, 202);
    /* the first response again, byte for byte, marked by the reply (a header) */
    PGT_EQ_STR(a2.body, a1.body);
    PGT_CHECK(!a1.replayed && a2.replayed);
    /* twice in one group: the first applies, the second repeats its answer */
    uint64_t tg[3];
    for (int i = 0; i < 3; i++) {
        hi_req(&rq, "application/json", "{\"event_type\":\"e\",\"n\":3}", (size_t)-1,
               "Idempotency-Key", i == 2 ? "key-3" : "key-2", NULL);
        tg[i] = ++hi_ticket;
        PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, tg[i], &now), 0);
    }
    pp_ingest_drain(ig);
    a1 = *hi_wait(tg[0]);
    a2 = *hi_wait(tg[1]);
    a3 = *hi_wait(tg[2]);
    PGT_EQ_INT(a1.status, 202);
    PGT_EQ_INT(a2.status, 202);
    PGT_EQ_INT(a3.status, 202);
    PGT_EQ_STR(a2.body, a1.body);
    PGT_CHECK(!a1.replayed && a2.replayed && !a3.replayed);
    /* Standard Webhooks: webhook-id is the key; the payload field for single records */
    snprintf(hi_source, sizeof hi_source, "%s", name);
    hi_clean(c);
    for (int i = 0; i < 2; i++) {
        hi_req(&rq, "application/json", "{\"event_type\":\"w\"}", (size_t)-1, "webhook-id",
               "msg_1", NULL);
        PGT_EQ_INT(hi_post(ig, &rq, &a1), 202);
        PGT_CHECK(a1.replayed == (i == 1));
        hi_req(&rq, "application/json", "{\"event_type\":\"f\",\"delivery\":\"d-1\"}", (size_t)-1, NULL);
        PGT_EQ_INT(hi_post(ig, &rq, &a1), 202);
        PGT_CHECK(a1.replayed == (i == 1));
    }
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 2);
    snprintf(hi_source, sizeof hi_source, "hi_idem_%d", (int)getpid());
    PGT_EQ_INT(HI_ROWS(c), 3); /* key-1 once, key-2 once, key-3 */
    PGT_EQ_INT(HI_DEAD(c), 1);
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.http_keys WHERE source = '%s'", hi_source);
    PGT_EQ_INT(pgt_db_int(c, sql), 3);
    pgt_db_close(c);
}

/* A member given twice: jsonb keeps the last ({"id":"A","id":"B"} is stored
** as {"id":"B"}), so the idempotency field and the event type are read from
** the last one too: the key and the column say what the payload says. */
PGT_TEST(http_ingest, duplicate_member_last_wins)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    pgpipe_http_source src[1];
    memset(src, 0, sizeof src);
    char name[64];
    snprintf(name, sizeof name, "hi_dupm_%d", (int)getpid());
    src[0].name = name;
    src[0].idempotency_field = "id";
    o.sources = src;
    o.nsources = 1;
    pp_ingest *ig = hi_open("dupm", &o);
    snprintf(hi_source, sizeof hi_source, "%s", name);
    hi_clean(c);
    pp_http_request rq;
    hi_answer a;
    hi_req(&rq, "application/json",
           "{\"id\":\"dA\",\"event_type\":\"first\",\"id\":\"dB\",\"event_type\":\"last\"}",
           (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CHECK(!a.replayed);
    /* the stored value is the key: a body with id "dB" is the same delivery */
    hi_req(&rq, "application/json", "{\"id\":\"dB\",\"event_type\":\"last\"}", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CHECK(a.replayed);
    /* and "dA", the first value, is not */
    hi_req(&rq, "application/json", "{\"id\":\"dA\",\"event_type\":\"last\"}", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CHECK(!a.replayed);
    /* CSV: a header naming a column twice */
    hi_req(&rq, "text/csv", "event_type,n,event_type\nfirst,1,last\n", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":1");
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 3);
    char sql[400];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' AND "
             "event_type = payload->>'event_type' AND event_type = 'last'", hi_source);
    PGT_EQ_INT(pgt_db_int(c, sql), 3);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.http_keys WHERE source = '%s' AND "
             "key IN ('dA', 'dB')", hi_source);
    PGT_EQ_INT(pgt_db_int(c, sql), 2);
    hi_clean(c);
    pgt_db_close(c);
}

PGT_TEST(http_ingest, expired_key)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.window_hours = 1;
    pp_ingest *ig = hi_open("expired", &o);
    hi_clean(c);
    char sql[600];
    snprintf(sql, sizeof sql, "INSERT INTO pgpipe.http_keys (source, key, key_hash, first_seen, "
             "request_id, accepted, dead_lettered) VALUES ('%s', 'old', md5('%s' || E'\\n' || "
             "'old')::uuid, now() - interval '90 minutes', gen_random_uuid(), 1, 0)",
             hi_source, hi_source);
    PQclear(PGT_EXEC(c, sql));
    pp_http_request rq;
    hi_answer a;
    hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, "Idempotency-Key", "old", NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 409);
    PGT_CONTAINS(a.body, "idempotency_key_expired");
    /* a signed delivery older than the window cannot be checked: refused alike */
    pgpipe_http_source src;
    memset(&src, 0, sizeof src);
    src.name = hi_source;
    src.signature = PGPIPE_HTTP_SIG_STANDARD;
    o.sources = &src; /* read at each request when there is no auth */
    o.nsources = 1;
    char ts[32];
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL) - 2 * 3600);
    hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, "webhook-id", "msg_9",
           "webhook-timestamp", ts, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 409);
    PGT_CONTAINS(a.body, "signed timestamp");
    snprintf(ts, sizeof ts, "%lld", (long long)time(NULL) - 60);
    hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, "webhook-id", "msg_9",
           "webhook-timestamp", ts, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 1);
    pgt_db_close(c);
}

/* The "errors" array of an answer body (what follows "errors":). */
static const char *hi_errors(const hi_answer *a)
{
    const char *e = strstr(a->body, "\"errors\":");
    return e ? e : "";
}

/* An NDJSON body of one line takes a short way past the framer: it must
** answer exactly as the framer would (positions of a bad record included)
** for every shape of that line: with and without its LF, CRLF, a BOM,
** blanks around it, bad JSON, not an object, a lone byte; and a body of one
** line plus anything (a blank line, a second record) still goes the long
** way. Each single-line body is posted beside the same line followed by a
** blank line (the framer's way), and the two answers compared. */
PGT_TEST(http_ingest, ndjson_one_line_as_the_framer)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    pp_ingest *ig = hi_open("oneline", &o);
    hi_clean(c);
    static const struct { const char *line; int acc, dead; } cases[] = {
        { "{\"event_type\":\"a\",\"n\":1}", 1, 0 },
        { "{\"event_type\":\"a\",\"n\":2}\r", 1, 0 },
        { "\xEF\xBB\xBF{\"event_type\":\"a\",\"n\":3}", 1, 0 },
        { " \t{\"event_type\":\"a\",\"n\":4} \t", 1, 0 },
        { "{\"event_type\":\"a\",\"n\":5,}", 0, 1 },
        { "\xEF\xBB\xBF  {\"event_type\":\"a\",\n", 0, 0 }, /* (cut below at the LF) */
        { "[1,2]", 0, 1 },
        { "x", 0, 1 },
        { "\"just a string\"\r", 0, 1 },
        { "{\"event_type\":\"tab\\there\",\"n\":6}", 1, 0 },
        { "{\"event_type\":\"back\\\\slash\",\"n\":7}", 1, 0 },
        { "{\"n\":8}", 1, 0 },
    };
    pp_http_request rq;
    hi_answer a, b;
    long long rows = 0, dead = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char one[256], two[256], three[256];
        const char *ln = cases[i].line;
        size_t n = strcspn(ln, "\n");
        if (ln[n] == '\n') { /* this one: a bad record of one line with its LF */
            snprintf(one, sizeof one, "%.*s\n", (int)n, ln);
            snprintf(two, sizeof two, "%.*s\n\n", (int)n, ln);
        } else {
            snprintf(one, sizeof one, "%s", ln);
            snprintf(two, sizeof two, "%s\n \n", ln);
        }
        snprintf(three, sizeof three, "%.*s\n", (int)n, ln);
        int want_dead = ln[n] == '\n' ? 1 : cases[i].dead;
        /* no LF, one LF at the end, and the framer's way (a blank line after) */
        const char *bodies[] = { one, three, two };
        hi_req(&rq, "application/x-ndjson", bodies[2], (size_t)-1, NULL);
        PGT_EQ_INT(hi_post(ig, &rq, &b), 202);
        for (int k = 0; k < 2; k++) {
            hi_req(&rq, "application/x-ndjson", bodies[k], (size_t)-1, NULL);
            PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
            char want[64];
            snprintf(want, sizeof want, "\"accepted\":%d,\"dead_lettered\":%d", cases[i].acc,
                     want_dead);
            PGT_CHECK_MSG(strstr(a.body, want) != NULL, "case %zu body %d: %s", i, k, a.body);
            PGT_CHECK_MSG(!strcmp(hi_errors(&a), hi_errors(&b)), "case %zu body %d:\n%s\n%s", i,
                          k, a.body, b.body);
            rows += cases[i].acc;
            dead += want_dead;
        }
        rows += cases[i].acc;
        dead += want_dead;
    }
    /* two records on two lines, the last without its LF: the long way */
    hi_req(&rq, "application/x-ndjson", "{\"event_type\":\"a\"}\n{\"event_type\":\"b\"}", (size_t)-1,
           NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":2,\"dead_lettered\":0");
    rows += 2;
    /* a bad second line is found on line 2, not 1 */
    hi_req(&rq, "application/x-ndjson", "{\"event_type\":\"a\"}\n{\"event_type\":}", (size_t)-1,
           NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CONTAINS(a.body, "\"accepted\":1,\"dead_lettered\":1");
    PGT_CONTAINS(a.body, "\"record\":2,\"line\":2,");
    rows += 1;
    dead += 1;
    /* blank lines alone are no record: refused, as before */
    hi_req(&rq, "application/x-ndjson", "\xEF\xBB\xBF \r\n", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 400);
    hi_req(&rq, "application/x-ndjson", "", 0, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 400);
    /* a NUL inside the one line: as sent, dead-lettered by the server or
    ** kept, never a crash; the record count holds either way */
    hi_req(&rq, "application/x-ndjson", "{\"event_type\":\"a\",\"s\":\"x\\u0000y\"}", (size_t)-1,
           NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CHECK(strstr(a.body, "\"accepted\":1,\"dead_lettered\":0") ||
              strstr(a.body, "\"accepted\":0,\"dead_lettered\":1"));
    if (strstr(a.body, "\"accepted\":1"))
        rows++;
    else
        dead++;
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), rows);
    PGT_EQ_INT(HI_DEAD(c), dead);
    /* a dead letter keeps its line as the framer cuts it: no CR, no BOM,
    ** no LF; and the same text on either way */
    char q2[400];
    snprintf(q2, sizeof q2, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = '%s' "
             "AND (raw_text LIKE E'%%\\r%%' OR raw_text LIKE E'%%\\n%%' OR "
             "raw_text LIKE E'\\xEF\\xBB\\xBF%%' OR raw_text LIKE '%%\xEF\xBB\xBF%%')",
             hi_source);
    PGT_EQ_INT(pgt_db_int(c, q2), 0);
    snprintf(q2, sizeof q2, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_name = '%s' "
             "AND raw_text = '\"just a string\"'", hi_source);
    PGT_EQ_INT(pgt_db_int(c, q2), 3);
    /* the stored payloads hold no CR, BOM or blanks of the line */
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' AND "
             "payload = '{\"event_type\":\"a\",\"n\":2}'", hi_source);
    PGT_EQ_INT(pgt_db_int(c, sql), 3);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' AND "
             "event_type = E'tab\\there' AND payload->>'n' = '6'", hi_source);
    PGT_EQ_INT(pgt_db_int(c, sql), 3);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' AND "
             "event_type = E'back\\\\slash'", hi_source);
    PGT_EQ_INT(pgt_db_int(c, sql), 3);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM staging.raw_events WHERE source = '%s' AND "
             "event_type = source AND payload = '{\"n\":8}'", hi_source);
    PGT_EQ_INT(pgt_db_int(c, sql), 3);
    pgt_db_close(c);
}

PGT_TEST(http_ingest, group_commit_groups)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.group_window_ms = 60000; /* closed by record count alone */
    o.group_records = 50;
    pp_ingest *ig = hi_open("groups", &o);
    hi_clean(c);
    pp_http_request rq;
    pp_http_reply now;
    for (int i = 0; i < 200; i++) {
        hi_req(&rq, "application/json", "{\"event_type\":\"g\"}", (size_t)-1, NULL);
        PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, ++hi_ticket, &now), 0);
    }
    pp_ingest_drain(ig);
    PGT_EQ_INT(hi_srv.n, 200);
    for (int i = 0; i < 200; i++)
        PGT_EQ_INT(hi_srv.a[i].status, 202);
    pp_buf m = { 0 };
    PGT_OK(pp_ingest_metrics(ig, &m));
    pp_buf_putc(&m, '\0');
    PGT_CONTAINS(m.data, "# TYPE pgpipe_http_group_records histogram");
    PGT_CONTAINS(m.data, "# HELP pgpipe_http_commit_seconds");
    PGT_EQ_INT((long long)hi_metric(m.data, "pgpipe_http_group_records_count"), 4);
    PGT_EQ_INT((long long)hi_metric(m.data, "pgpipe_http_records_accepted_total"), 200);
    PGT_EQ_INT((long long)hi_metric(m.data, "pgpipe_http_requests_committed_total"), 200);
    PGT_EQ_INT((long long)hi_metric(m.data, "pgpipe_http_queue_depth"), 0);
    PGT_CONTAINS(m.data, "pgpipe_http_group_records_bucket{le=\"50\"} 4\n");
    pp_buf_free(&m);
    PGT_EQ_INT(pp_ingest_pending(ig), 0);
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 200);
    /* one batch id per request: 200 requests, 4 transactions */
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT count(DISTINCT xmin::text) FROM staging.raw_events WHERE "
             "source = '%s'", hi_source);
    PGT_EQ_INT(pgt_db_int(c, sql), 4);
    pgt_db_close(c);
}

PGT_TEST(http_ingest, server_refused_row)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.group_window_ms = 60000;
    pp_ingest *ig = hi_open("refused", &o);
    hi_clean(c);
    pp_http_request rq;
    pp_http_reply now;
    /* \u0000 is valid JSON that JSONB refuses: only the server finds it */
    hi_req(&rq, "application/json", "{\"event_type\":\"a\",\"n\":1}", (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 1001, &now), 0);
    hi_req(&rq, "application/x-ndjson", "{\"event_type\":\"b\",\"n\":2}\n{\"event_type\":\"b\",\"s\":\"x\\u0000y\"}\n"
           "{\"event_type\":\"b\",\"n\":4}\n", (size_t)-1, "Idempotency-Key", "refused-1", NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 1002, &now), 0);
    hi_req(&rq, "application/json", "{\"event_type\":\"c\",\"n\":5}", (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 1003, &now), 0);
    pp_ingest_drain(ig);
    hi_answer *a = hi_wait(1001), *b = hi_wait(1002), *d = hi_wait(1003);
    PGT_EQ_INT(a->status, 202);
    PGT_EQ_INT(b->status, 202);
    PGT_EQ_INT(d->status, 202);
    PGT_CONTAINS(a->body, "\"accepted\":1,\"dead_lettered\":0");
    PGT_CONTAINS(b->body, "\"accepted\":2,\"dead_lettered\":1,\"errors\":[{\"record\":2,\"line\":2,");
    PGT_CONTAINS(d->body, "\"accepted\":1,\"dead_lettered\":0");
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 4);
    char sql[300];
    snprintf(sql, sizeof sql, "SELECT sqlstate || ' ' || line_number FROM pgpipe.dead_letters "
             "WHERE source_name = '%s'", hi_source);
    PGT_EQ_STR(pgt_db_str(c, sql), "22P05 2");
    snprintf(sql, sizeof sql, "SELECT accepted || '/' || dead_lettered || ' ' || (errors IS NOT NULL) "
             "FROM pgpipe.http_keys WHERE source = '%s'", hi_source);
    PGT_EQ_STR(pgt_db_str(c, sql), "2/1 true");
    pgt_db_close(c);
}

PGT_TEST(http_ingest, database_unreachable)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.conninfo = "host=127.0.0.1 port=1 connect_timeout=2";
    o.committers = 1;
    pp_ingest *ig = hi_open("down", &o);
    pp_http_request rq;
    hi_answer a;
    char why[200];
    PGT_EQ_INT(pp_ingest_ready(ig, why, sizeof why), 0);
    PGT_CONTAINS(why, "database");
    hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 503);
    PGT_CHECK(a.retry_after >= 1 && a.retry_after <= 5);
    /* an Expect: 100-continue head hears it before it sends its body */
    pp_http_reply hd;
    PGT_EQ_INT(pp_ingest_head(ig, &rq, hi_source, 20, &hd), 1);
    PGT_EQ_INT(hd.status, 503);
    PGT_CONTAINS(hd.body, "database_unavailable");
    pp_http_reply_free(&hd);
    pp_ingest_close(ig);
    /* a server that ends the committers' sessions: never a 202 for what is
    ** not committed, and it comes back */
    pgpipe_http_options_init(&o);
    o.group_window_ms = 60000;
    ig = hi_open("killed", &o);
    hi_clean(c);
    PGT_EQ_INT(pp_ingest_ready(ig, why, sizeof why), 1);
    char sql[300];
    for (int i = 0; i < ig->ncm; i++) {
        snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d, 5000)", PQbackendPID(ig->cm[i].conn));
        PQclear(PGT_EXEC(c, sql));
    }
    pp_http_reply now;
    hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 2001, &now), 0);
    pp_ingest_drain(ig);
    hi_answer *w = hi_wait(2001);
    PGT_EQ_INT(w->status, 503);
    PGT_CHECK(w->retry_after >= 1);
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, NULL);
        int st = hi_post(ig, &rq, &a);
        PGT_CHECK(st == 202 || st == 503);
        ok = st == 202;
        if (!ok)
            pgpipe_sleep_ms(50);
    }
    PGT_CHECK(ok);
    /* idle connections are checked: sessions ended between groups are
    ** replaced without a request failing first */
    pp_ingest_drain(ig);
    pp_buf m = { 0 };
    PGT_OK(pp_ingest_metrics(ig, &m));
    pp_buf_putc(&m, '\0');
    double before = hi_metric(m.data, "pgpipe_http_committer_connects_total");
    pthread_mutex_lock(&ig->mu);
    for (int i = 0; i < ig->ncm; i++) {
        snprintf(sql, sizeof sql, "SELECT pg_terminate_backend(%d, 5000)", PQbackendPID(ig->cm[i].conn));
        PQclear(PGT_EXEC(c, sql));
    }
    pthread_mutex_unlock(&ig->mu);
    double after = before;
    for (int i = 0; i < 100 && after < before + ig->ncm; i++) {
        pgpipe_sleep_ms(100);
        m.len = 0;
        PGT_OK(pp_ingest_metrics(ig, &m));
        pp_buf_putc(&m, '\0');
        after = hi_metric(m.data, "pgpipe_http_committer_connects_total");
    }
    pp_buf_free(&m);
    PGT_CHECK(after >= before + ig->ncm);
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 1);
    pgt_db_close(c);
}

PGT_TEST(http_ingest, backpressure_and_drain)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.group_window_ms = 60000;
    o.memory_budget = 4096;
    pp_ingest *ig = hi_open("budget", &o);
    hi_clean(c);
    pp_http_request rq;
    pp_http_reply now;
    /* a record of 3,000 bytes (a long string: whitespace between tokens
    ** would not be sent, so it would not count) */
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "{\"event_type\":\"e\",\"pad\":\"", 25);
    memcpy(big + sizeof big - 3, "\"}", 2);
    hi_req(&rq, "application/json", big, (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 3001, &now), 0);
    hi_req(&rq, "application/json", big, (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 3002, &now), 1);
    PGT_EQ_INT(now.status, 503);
    PGT_CHECK(now.retry_after >= 1 && now.retry_after <= 5);
    pp_http_reply_free(&now);
    char why[200];
    PGT_EQ_INT(pp_ingest_ready(ig, why, sizeof why), 0);
    PGT_CONTAINS(why, "budget");
    PGT_EQ_INT(pp_ingest_pending(ig), 1);
    /* nothing answered before the drain commits it; after it, all are */
    PGT_EQ_INT(hi_srv.n, 0);
    pp_ingest_drain(ig);
    PGT_EQ_INT(hi_srv.n, 1);
    PGT_EQ_INT(hi_srv.a[0].status, 202);
    PGT_EQ_INT(pp_ingest_ready(ig, why, sizeof why), 1);
    /* /readyz follows the admission's rule: unready exactly when the
    ** smallest request (an empty body) would be refused, not only once the
    ** waiting bytes are over the budget */
    hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 3003, &now), 0);
    pthread_mutex_lock(&ig->mu);
    size_t saved = ig->budget;
    ig->budget = ig->pending_bytes + 100; /* under it, but no room for 512 more */
    pthread_mutex_unlock(&ig->mu);
    PGT_EQ_INT(pp_ingest_ready(ig, why, sizeof why), 0);
    PGT_CONTAINS(why, "budget");
    hi_req(&rq, "application/json", "", 0, NULL);
    PGT_EQ_INT(pp_ingest_head(ig, &rq, hi_source, 0, &now), 1);
    PGT_EQ_INT(now.status, 503);
    pp_http_reply_free(&now);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 3004, &now), 1);
    PGT_EQ_INT(now.status, 503);
    pp_http_reply_free(&now);
    pthread_mutex_lock(&ig->mu);
    ig->budget = ig->pending_bytes + 512; /* room for exactly the smallest */
    pthread_mutex_unlock(&ig->mu);
    PGT_EQ_INT(pp_ingest_ready(ig, why, sizeof why), 1);
    pthread_mutex_lock(&ig->mu);
    ig->budget = saved;
    pthread_mutex_unlock(&ig->mu);
    pp_ingest_drain(ig);
    PGT_EQ_INT(hi_wait(3003)->status, 202);
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 2);
    pgt_db_close(c);
}

PGT_TEST(http_ingest, keys_partitions)
{
    PGconn *c = pgt_db_open();
    /* days ahead exist; a day past keep_hours is dropped whole */
    PQclear(PGT_EXEC(c, "SELECT pgpipe.http_keys_maintain()"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_inherits WHERE inhparent = "
                             "'pgpipe.http_keys'::regclass AND inhrelid::regclass::text = "
                             "'pgpipe.http_keys_p' || to_char((now() AT TIME ZONE 'UTC')::date + 3, "
                             "'YYYYMMDD')"), 1);
    PQclear(PGT_EXEC(c, "DO $$ DECLARE d date := (now() AT TIME ZONE 'UTC')::date - 10; BEGIN "
                        "EXECUTE format('CREATE TABLE IF NOT EXISTS pgpipe.%I PARTITION OF pgpipe.http_keys "
                        "FOR VALUES FROM (%L) TO (%L)', 'http_keys_p' || to_char(d, 'YYYYMMDD'), "
                        "d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC'); END $$"));
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.http_keys (source, key, key_hash, first_seen, request_id, "
                        "accepted, dead_lettered) VALUES ('hi_parts', 'k', md5('hi_parts' || E'\\n' || "
                        "'k')::uuid, now() - interval '10 days', gen_random_uuid(), 1, 0)"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.http_keys WHERE source = 'hi_parts'"), 1);
    /* kept while within keep_hours */
    PQclear(PGT_EXEC(c, "SELECT pgpipe.http_keys_maintain(24 * 30)"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.http_keys WHERE source = 'hi_parts'"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT pgpipe.http_keys_maintain(96)"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.http_keys WHERE source = 'hi_parts'"), 0);
    /* nothing to do: nothing done */
    PGT_EQ_INT(pgt_db_int(c, "SELECT pgpipe.http_keys_maintain(96)"), 0);
    pgt_db_close(c);
}

PGT_TEST(http_ingest, commit_fails_503)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    pp_ingest *ig = hi_open("commitfail", &o);
    hi_clean(c);
    /* a deferred check that fails at COMMIT for this source's keys */
    char sql[1200];
    snprintf(sql, sizeof sql,
             "CREATE FUNCTION public.hi_fail_%d() RETURNS trigger LANGUAGE plpgsql AS "
             "$$BEGIN IF NEW.source = '%s' THEN RAISE EXCEPTION 'refused at commit'; END IF; "
             "RETURN NULL; END$$;"
             "CREATE CONSTRAINT TRIGGER hi_fail_%d AFTER INSERT ON pgpipe.http_keys "
             "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.hi_fail_%d()",
             (int)getpid(), hi_source, (int)getpid(), (int)getpid());
    PQclear(PGT_EXEC(c, sql));
    pp_http_request rq;
    hi_answer a;
    hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, "Idempotency-Key", "cf", NULL);
    int st = hi_post(ig, &rq, &a);
    snprintf(sql, sizeof sql, "DROP TRIGGER hi_fail_%d ON pgpipe.http_keys; DROP FUNCTION "
             "public.hi_fail_%d()", (int)getpid(), (int)getpid());
    PQclear(PGT_EXEC(c, sql));
    PGT_EQ_INT(st, 503);
    PGT_CHECK(a.retry_after >= 1);
    /* the retry with its key commits once */
    hi_req(&rq, "application/json", "{\"event_type\":\"e\"}", (size_t)-1, "Idempotency-Key", "cf", NULL);
    PGT_EQ_INT(hi_post(ig, &rq, &a), 202);
    PGT_CHECK(!a.replayed);
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 1);
    pgt_db_close(c);
}

/* A group of rows alone (no keys, no dead letters of validation) commits as
** one COPY statement outside a transaction block: a row the server refuses
** sends the group the slow way (savepoints), a failure at commit answers
** 503 with nothing written, and a body of no records needs no statement. */
PGT_TEST(http_ingest, rows_only_group)
{
    PGconn *c = pgt_db_open();
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.group_window_ms = 60000;
    pp_ingest *ig = hi_open("rowsonly", &o);
    hi_clean(c);
    pp_http_request rq;
    pp_http_reply now;
    hi_req(&rq, "application/json", "{\"event_type\":\"a\",\"n\":1}", (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 2001, &now), 0);
    hi_req(&rq, "application/x-ndjson", "{\"event_type\":\"b\",\"n\":2}\n{\"event_type\":\"b\",\"s\":\"x\\u0000y\"}\n"
           "{\"event_type\":\"b\",\"n\":4}\n", (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 2002, &now), 0);
    hi_req(&rq, "application/json", "[]", (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 2003, &now), 0);
    pp_ingest_drain(ig);
    hi_answer *a = hi_wait(2001), *b = hi_wait(2002), *d = hi_wait(2003);
    PGT_CHECK(a && b && d);
    PGT_EQ_INT(a->status, 202);
    PGT_EQ_INT(b->status, 202);
    PGT_EQ_INT(d->status, 202);
    PGT_CONTAINS(a->body, "\"accepted\":1,\"dead_lettered\":0,\"errors\":[]}");
    PGT_CONTAINS(b->body, "\"accepted\":2,\"dead_lettered\":1,\"errors\":[{\"record\":2,\"line\":2,");
    PGT_CONTAINS(d->body, "\"accepted\":0,\"dead_lettered\":0,\"errors\":[]}");
    PGT_EQ_INT(HI_ROWS(c), 3);
    PGT_EQ_INT(HI_DEAD(c), 1);

    /* nothing but an empty body in the group: answered, nothing written */
    hi_req(&rq, "application/x-ndjson", "\n\n", (size_t)-1, NULL);
    hi_answer e;
    int st = hi_post(ig, &rq, &e);
    PGT_CHECK_MSG(st == 202 || st == 400, "empty NDJSON: %d %s", st, e.body);

    /* refused at commit (a deferred check on this source's rows): 503, and
    ** nothing of the request stays */
    char sql[1200];
    snprintf(sql, sizeof sql,
             "CREATE FUNCTION public.hi_rfail_%d() RETURNS trigger LANGUAGE plpgsql AS "
             "$$BEGIN IF NEW.source = '%s' AND NEW.event_type = 'late' THEN "
             "RAISE EXCEPTION 'refused at commit'; END IF; RETURN NULL; END$$;"
             "CREATE CONSTRAINT TRIGGER hi_rfail_%d AFTER INSERT ON staging.raw_events "
             "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.hi_rfail_%d()",
             (int)getpid(), hi_source, (int)getpid(), (int)getpid());
    PQclear(PGT_EXEC(c, sql));
    hi_req(&rq, "application/x-ndjson", "{\"event_type\":\"late\"}\n{\"event_type\":\"late\"}\n",
           (size_t)-1, NULL);
    st = hi_post(ig, &rq, &e);
    char drop[300];
    snprintf(drop, sizeof drop, "DROP TRIGGER hi_rfail_%d ON staging.raw_events; DROP "
             "FUNCTION public.hi_rfail_%d()", (int)getpid(), (int)getpid());
    PQclear(PGT_EXEC(c, drop));
    PGT_EQ_INT(st, 503);
    PGT_CHECK(e.retry_after >= 1);
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 3);
    pgt_db_close(c);
}

/* The same requests through binary COPY rows (the default when the table's
** columns are as pgpipe made them) and COPY text (PGPIPE_COPY_FORMAT=text)
** stage the same rows and the same dead letters: escapes, tabs, newlines,
** backslashes, "\N" and "\." as data, UTF-8, event types from a field, a
** number, a header (with a backslash) and the source, CSV with quoted
** newlines and empty fields, a value jsonb refuses (\u0000) found by the
** server in a group with good rows. */
PGT_TEST(http_ingest, binary_rows_read_the_same_as_text)
{
    PGconn *c = pgt_db_open();
    char src[2][64], sql[1400];
    long long bin[2];
    for (int k = 0; k < 2; k++) {
        if (k)
            setenv("PGPIPE_COPY_FORMAT", "text", 1);
        pgpipe_http_options o;
        pgpipe_http_options_init(&o);
        o.group_window_ms = 60000;
        pp_ingest *ig = hi_open(k ? "fmt_text" : "fmt_bin", &o);
        snprintf(src[k], sizeof src[k], "%s", hi_source);
        hi_clean(c);
        bin[k] = atomic_load(&ig->fmt);
        static const char *const nd =
            "{\"event_type\":\"tab\\there\",\"s\":\"a\\tb\\nc\\\\d\\\\N\",\"n\":1}\n"
            "{\"event_type\":\"e\",\"s\":\"x\\u0000y\",\"n\":2}\n"
            "{\"event_type\":42,\"s\":\"\\\\.\",\"n\":3,\"o\":{\"b\":[1,2.50,{\"z\":null}],\"a\":true}}\n"
            "{\"event_type\":\"\xc3\xa9t\xc3\xa9 \\u00e9\",\"s\":\"\xe2\x82\xac\",\"n\":4,\"n\":5}\n"
            "{\"s\":\"no type\",\"n\":6}\n";
        static const char *const csv = "event_type,n,note\ncsv,7,\"multi\nline\ttab\\\"\nx,8,\n,9,empty type\n";
        pp_http_request rq;
        pp_http_reply now;
        hi_req(&rq, "application/x-ndjson", nd, (size_t)-1, NULL);
        PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 3001 + 10 * k, &now), 0);
        hi_req(&rq, "text/csv", csv, (size_t)-1, "X-Event-Type", "hdr\\type\twith tab", NULL);
        PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 3002 + 10 * k, &now), 0);
        hi_req(&rq, "application/json", "[{\"n\":10,\"s\":\"\\r\\n\"},{\"n\":11}]", (size_t)-1,
               "X-Event-Type", "\xe2\x82\xac\\N", NULL);
        PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 3003 + 10 * k, &now), 0);
        pp_ingest_drain(ig);
        hi_answer *a = hi_wait(3001 + 10 * k), *b = hi_wait(3002 + 10 * k),
                  *d = hi_wait(3003 + 10 * k);
        PGT_CHECK(a && b && d);
        PGT_EQ_INT(a->status, 202);
        PGT_EQ_INT(b->status, 202);
        PGT_EQ_INT(d->status, 202);
        PGT_CONTAINS(a->body, "\"accepted\":4,\"dead_lettered\":1,\"errors\":[{\"record\":2,\"line\":2,");
        PGT_CONTAINS(b->body, "\"accepted\":3,\"dead_lettered\":0");
        PGT_CONTAINS(d->body, "\"accepted\":2,\"dead_lettered\":0");
        pp_ingest_close(ig);
        unsetenv("PGPIPE_COPY_FORMAT");
        PGT_EQ_INT(HI_ROWS(c), 9);
        PGT_EQ_INT(HI_DEAD(c), 1);
    }
    PGT_EQ_INT(bin[0], 1);
    PGT_EQ_INT(bin[1], 0);
    /* row by row, the two sources' rows are the same */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM (SELECT CASE WHEN event_type = source THEN '(source)' ELSE "
             "event_type END AS et, payload, count(DISTINCT batch_id) FROM staging.raw_events "
             "WHERE source = '%s' GROUP BY 1, 2) a FULL JOIN (SELECT CASE WHEN event_type = source "
             "THEN '(source)' ELSE event_type END AS et, payload, count(DISTINCT batch_id) FROM "
             "staging.raw_events WHERE source = '%s' GROUP BY 1, 2) b USING (et, payload) "
             "WHERE a.count IS NULL OR b.count IS NULL OR a.count <> b.count",
             src[0], src[1]);
    PGT_EQ_INT(pgt_db_int(c, sql), 0);
    snprintf(sql, sizeof sql,
             "SELECT string_agg(event_type || '|' || coalesce(payload->>'s', payload->>'note', '-'), "
             "' ; ' ORDER BY (payload->>'n')::int) FROM staging.raw_events WHERE source = '%s'",
             src[0]);
    char want[600];
    snprintf(want, sizeof want,
             "tab\there|a\tb\nc\\d\\N ; 42|\\. ; \xc3\xa9t\xc3\xa9 \xc3\xa9|\xe2\x82\xac ; "
             "%s|no type ; csv|multi\nline\ttab\\ ; x|- ; hdr\\type\twith tab|empty type ; "
             "\xe2\x82\xac\\N|\r\n ; \xe2\x82\xac\\N|-", src[0]);
    PGT_EQ_STR(pgt_db_str(c, sql), want);
    for (int k = 0; k < 2; k++) {
        snprintf(sql, sizeof sql, "SELECT sqlstate || ' ' || line_number FROM pgpipe.dead_letters "
                 "WHERE source_name = '%s'", src[k]);
        PGT_EQ_STR(pgt_db_str(c, sql), "22P05 2");
        snprintf(sql, sizeof sql, "DELETE FROM staging.raw_events WHERE source = '%s';"
                 "DELETE FROM pgpipe.dead_letters WHERE source_name = '%s'", src[k], src[k]);
        PQclear(PGT_EXEC(c, sql));
    }
    pgt_db_close(c);
}

/* staging.raw_events altered while the server runs (payload made json): the
** group of binary rows the server then refuses is answered 503 (retry later),
** and nothing of it is dead-lettered; the next groups go as COPY text with
** the JSON as it came (a json column keeps member order and repeated keys),
** NDJSON and CSV alike. */
PGT_TEST(http_ingest, staging_altered_to_json_goes_text)
{
    PGconn *c = pgt_db_fresh("pgpipe_t_hi_json");
    pgt_db_install(c);
    char dsn[1200];
    snprintf(dsn, sizeof dsn, "%s dbname=pgpipe_t_hi_json", pgt_dsn());
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.group_window_ms = 60000;
    o.conninfo = dsn;
    pp_ingest *ig = hi_open("json", &o);
    PGT_EQ_INT(atomic_load(&ig->fmt), PP_COPY_BINARY);
    static const char *const nd = "{\"z\":1,\"a\":2,\"a\":3}\n{\"b\":true,  \"a\":null}\n";
    pp_http_request rq;
    pp_http_reply now;
    hi_req(&rq, "application/x-ndjson", nd, (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 4001, &now), 0);
    pp_ingest_drain(ig);
    hi_answer *a = hi_wait(4001);
    PGT_CHECK(a);
    PGT_EQ_INT(a->status, 202);
    PQclear(PGT_EXEC(c, "ALTER TABLE staging.raw_events ALTER COLUMN payload TYPE json"));
    hi_req(&rq, "application/x-ndjson", nd, (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 4002, &now), 0);
    pp_ingest_drain(ig);
    a = hi_wait(4002);
    PGT_CHECK(a);
    PGT_EQ_INT(a->status, 503);
    PGT_EQ_INT(atomic_load(&ig->fmt), PP_COPY_VERBATIM);
    PGT_EQ_INT(HI_ROWS(c), 2);
    PGT_EQ_INT(HI_DEAD(c), 0);
    /* the retry, and a CSV body */
    hi_req(&rq, "application/x-ndjson", nd, (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 4003, &now), 0);
    hi_req(&rq, "text/csv", "z,a,event_type\n1,,csv\n", (size_t)-1, NULL);
    PGT_EQ_INT(pp_ingest_submit(ig, &rq, hi_source, 4004, &now), 0);
    pp_ingest_drain(ig);
    a = hi_wait(4003);
    hi_answer *b = hi_wait(4004);
    PGT_CHECK(a && b);
    PGT_EQ_INT(a->status, 202);
    PGT_CONTAINS(a->body, "\"accepted\":2,\"dead_lettered\":0");
    PGT_EQ_INT(b->status, 202);
    pp_ingest_close(ig);
    PGT_EQ_INT(HI_ROWS(c), 5);
    PGT_EQ_INT(HI_DEAD(c), 0);
    char sql[400];
    snprintf(sql, sizeof sql, "SELECT string_agg(payload::text, ' ; ' ORDER BY id) FROM "
             "staging.raw_events WHERE source = '%s'", hi_source);
    /* the first two as jsonb made them (before the ALTER), the rest as sent */
    PGT_EQ_STR(pgt_db_str(c, sql),
               "{\"a\": 3, \"z\": 1} ; {\"a\": null, \"b\": true} ; {\"z\":1,\"a\":2,\"a\":3} ; "
               "{\"b\":true,  \"a\":null} ; {\"z\":\"1\",\"a\":null,\"event_type\":\"csv\"}");
    pgt_db_close(c);
}
