/*
** .serve as operators run it (test_http.c's server helpers, test_failover.c's
** primary and replica): a database that stops answering in the middle of a
** group (a hung server, a lock, a pooler's queue) gets 503 in bounded time and
** /readyz says so; a read-only server is never counted ready; across a
** failover to a synchronous replica, every 202 is on the new primary exactly
** once, and an Idempotency-Key retried after the failover adds nothing.
** Each test has a database (or a cluster) of its own.
*/

static char hp_conninfo[1024];
static int hp_timeout_ms;
static int hp_committers = 1;

static void hp_tweak(pgpipe_http_options *o)
{
    o->conninfo = hp_conninfo;
    o->listen = "127.0.0.1:0";
    o->committers = hp_committers;
    if (hp_timeout_ms)
        o->commit_timeout_ms = hp_timeout_ms;
}

/* POST one JSON body to source src (with an Idempotency-Key when key); the
** status, *r the answer. rcv_s: the receive timeout of the socket. */
static int hp_post(int port, const char *src, const char *key, const char *body, int rcv_s,
                   http_t_resp *r)
{
    char req[2048], kh[300] = "";
    if (key)
        snprintf(kh, sizeof kh, "Idempotency-Key: %s\r\n", key);
    snprintf(req, sizeof req, "POST /v1/events/%s HTTP/1.1\r\nHost: x\r\n%s"
             "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
             src, kh, strlen(body), body);
    int fd = http_t_connect(port, 0);
    struct timeval tv = { rcv_s, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    http_t_nrest = 0;
    http_t_sends(fd, req);
    int st = http_t_read(fd, r);
    close(fd);
    return st;
}

/* A database that does not answer (here: a lock on staging.raw_events held
** by another session; a SIGSTOPped backend or pgbouncer's wait queue look the
** same to the client) must not hold a request for ever: its connection is
** closed after commit_timeout_ms, the request gets 503 (nothing acked),
** /readyz is 503 while the committer waits, and once the database answers
** again the retry with the same key commits once. */
PGT_TEST(http, prod_db_not_answering_is_503_in_bounded_time)
{
    char db[64];
    snprintf(db, sizeof db, "hp_hang_%d", (int)getpid());
    PGconn *admin = pgt_db_fresh(db);
    snprintf(hp_conninfo, sizeof hp_conninfo, "%s dbname=%s", pgt_dsn(), db);
    hp_timeout_ms = 7000; /* /readyz: 503 after 5 s of waiting */
    http_t_srv s;
    http_t_start(&s, hp_tweak);
    http_t_resp r;
    PGT_EQ_INT(hp_post(s.port, "hang", NULL, "{\"n\":0}", 10, &r), 202);
    free(r.body);

    PGconn *locker = PQconnectdb(hp_conninfo);
    PGT_CHECK(PQstatus(locker) == CONNECTION_OK);
    PQclear(PGT_EXEC(locker, "BEGIN; LOCK TABLE staging.raw_events IN ACCESS EXCLUSIVE MODE"));
    /* the POST waits for its commit on a connection of its own ... */
    int fd = http_t_connect(s.port, 0);
    struct timeval tv = { 40, 0 }; /* without a commit timeout: a hang, caught here */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const char *req = "POST /v1/events/hang HTTP/1.1\r\nHost: x\r\nIdempotency-Key: hang-1\r\n"
                      "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"n\":1}";
    http_t_sends(fd, req);
    /* ... while /readyz turns 503, naming why (at most 30 s) */
    int unready = 0;
    for (int i = 0; i < 300 && !unready; i++) {
        int st = http_t_ask(s.port, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
        unready = st == 503 && strstr(r.body, "does not answer") != NULL;
        free(r.body);
        if (!unready)
            pgpipe_sleep_ms(100);
    }
    PGT_CHECK_MSG(unready, "/readyz stayed 200 while the committer waited");
    http_t_nrest = 0;
    int st = http_t_read(fd, &r);
    close(fd);
    PGT_CHECK_MSG(st == 503, "the waiting POST: %d %s", st, st ? r.body : "(no answer)");
    PGT_CONTAINS(r.body, "not_committed");
    PGT_CONTAINS(r.head, "Retry-After: ");
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    PGT_CONTAINS(r.body, "pgpipe_http_commit_timeouts_total 1\n");
    free(r.body);
    PQclear(PGT_EXEC(locker, "COMMIT"));
    PQfinish(locker);

    /* the database answers again: the sender retries (after Retry-After, at
    ** most 60 times) until a 202, then once more; the records are there once */
    char last[512] = "";
    for (int i = 0, ok = 0; i < 60 && ok < 2; i++) {
        st = hp_post(s.port, "hang", "hang-1", "{\"n\":1}", 20, &r);
        snprintf(last, sizeof last, "%d %s", st, st ? r.body : "");
        if (st == 202 && ok++)
            PGT_CONTAINS(r.head, "Idempotent-Replayed: true");
        free(r.body);
        if (st != 202)
            pgpipe_sleep_ms(500);
        PGT_CHECK_MSG(st == 202 || st == 503, "the retry: %s", last);
        if (i == 59)
            PGT_CHECK_MSG(0, "no 202 after 60 retries, the last: %s", last);
    }
    PGT_EQ_INT(pgt_db_int(admin, "SELECT count(*) FROM staging.raw_events "
                                 "WHERE source = 'hang' AND payload->>'n' = '1'"), 1);
    PGT_EQ_INT(pgt_db_int(admin, "SELECT count(*) FROM staging.raw_events WHERE source = 'hang'"),
               2);
    PGT_EQ_INT(http_t_ask(s.port, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    free(r.body);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
    pgt_db_close(admin);
}

/* A server that can only read (a standby; here default_transaction_read_only)
** is not a database to commit to: /readyz is 503, a POST is 503, nothing is
** written, and the log says why. */
static pthread_mutex_t hp_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char hp_log[8192];

static void hp_log_fn(void *ud, int level, const char *component, const char *message,
                      const pgpipe_log_field *fields, int nfields)
{
    (void)ud, (void)component, (void)fields, (void)nfields;
    pthread_mutex_lock(&hp_log_mu);
    if (level >= PGPIPE_LOG_WARN) {
        size_t n = strlen(hp_log);
        snprintf(hp_log + n, sizeof hp_log - n, "%s\n", message);
    }
    pthread_mutex_unlock(&hp_log_mu);
}

PGT_TEST(http, prod_read_only_server_is_not_ready)
{
    char db[64];
    snprintf(db, sizeof db, "hp_ro_%d", (int)getpid());
    PGconn *admin = pgt_db_fresh(db);
    snprintf(hp_conninfo, sizeof hp_conninfo, "%s dbname=%s", pgt_dsn(), db);
    hp_timeout_ms = 0;
    http_t_srv s;
    http_t_start(&s, hp_tweak); /* installs the schema */
    http_t_stop(&s);
    pgpipe_http_close(s.h);
    char sql[256];
    snprintf(sql, sizeof sql, "ALTER DATABASE %s SET default_transaction_read_only = on", db);
    PQclear(PGT_EXEC(admin, sql));
    snprintf(hp_conninfo, sizeof hp_conninfo, "%s dbname=%s", pgt_dsn(), db);
    pgpipe_config_log(hp_log_fn, NULL);
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    hp_tweak(&o);
    o.install_schema = 0;
    memset(&s, 0, sizeof s);
    PGT_CHECK_MSG(pgpipe_http_open(&s.h, &o) == PGPIPE_OK, "open: %s", pgpipe_errmsg(s.h));
    s.port = pgpipe_http_port(s.h, 0);
    PGT_CHECK(pthread_create(&s.th, NULL, http_t_main, &s) == 0);
    http_t_resp r;
    int st = http_t_ask(s.port, "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    PGT_CHECK_MSG(st == 503, "readyz on a read-only server: %d %s", st, r.body);
    free(r.body);
    st = hp_post(s.port, "ro", "ro-1", "{\"n\":1}", 20, &r);
    PGT_CHECK_MSG(st == 503, "POST on a read-only server: %d %s", st, r.body);
    free(r.body);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
    pgpipe_config_log(NULL, NULL);
    PGT_CONTAINS(hp_log, "read-only");
    PGT_CONTAINS(hp_log, "target_session_attrs=read-write");
    snprintf(sql, sizeof sql, "ALTER DATABASE %s RESET default_transaction_read_only", db);
    PQclear(PGT_EXEC(admin, sql));
    PGT_EQ_INT(pgt_db_int(admin, "SELECT count(*) FROM staging.raw_events WHERE source = 'ro'"), 0);
    pgt_db_close(admin);
}

/* ---- across a failover ------------------------------------------------------ */

typedef struct hp_sender {
    int port, n;
    int acked[200];      /* the first 202 of record i came */
    int replays;         /* 202s with Idempotent-Replayed */
    int fails;           /* 503s and lost connections on the way */
    int progress;        /* records acked so far (read by the main thread while the
                            sender runs: __atomic) */
    char bad[512];       /* an answer neither 202 nor 503 */
} hp_sender;

static int hp_try(int port, const char *req, http_t_resp *r)
{
    /* a connection of its own; 0 when the server closed it or did not answer */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    struct timeval tv = { 60, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int st = 0;
    memset(r, 0, sizeof *r);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        send(fd, req, strlen(req), MSG_NOSIGNAL) == (ssize_t)strlen(req)) {
        /* a small reader of its own: the test's http_t_read keeps global state */
        char buf[8192];
        size_t len = 0;
        for (;;) {
            ssize_t k = recv(fd, buf + len, sizeof buf - 1 - len, 0);
            if (k <= 0)
                break;
            len += (size_t)k;
            buf[len] = 0;
            char *end = strstr(buf, "\r\n\r\n");
            const char *cl = strstr(buf, "\r\nContent-Length: ");
            if (end && cl && cl < end && len >= (size_t)(end + 4 - buf) + strtoul(cl + 18, NULL, 10)) {
                st = atoi(buf + 9);
                snprintf(r->head, sizeof r->head, "%.*s", (int)(end + 4 - buf), buf);
                r->body = strdup(end + 4);
                break;
            }
            if (len >= sizeof buf - 1)
                break;
        }
    }
    close(fd);
    return st;
}

/* Each record once, with its own Idempotency-Key, retried (at most 200
** times, 100 ms apart) until a 202, as a webhook sender does. */
static void *hp_sender_main(void *arg)
{
    hp_sender *s = arg;
    for (int i = 0; i < s->n; i++) {
        char body[64], req[512];
        snprintf(body, sizeof body, "{\"n\":%d}", i);
        snprintf(req, sizeof req, "POST /v1/events/fo HTTP/1.1\r\nHost: x\r\nIdempotency-Key: fo-%d\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s", i,
                 strlen(body), body);
        for (int t = 0; t < 200 && !s->acked[i]; t++) {
            http_t_resp r;
            int st = hp_try(s->port, req, &r);
            if (st == 202) {
                s->acked[i] = 1;
                s->replays += strstr(r.head, "Idempotent-Replayed: true") != NULL;
                __atomic_add_fetch(&s->progress, 1, __ATOMIC_RELAXED);
            } else {
                s->fails++;
                if (st != 503 && st != 0 && !s->bad[0])
                    snprintf(s->bad, sizeof s->bad, "record %d: %d %s", i, st,
                             r.body ? r.body : "");
                pgpipe_sleep_ms(100);
            }
            free(r.body);
        }
    }
    return NULL;
}

/* The primary dies in the middle of a stream of POSTs and its synchronous
** replica is promoted: the server follows (multi-host conninfo,
** target_session_attrs=read-write), and every record acknowledged 202 is on
** the new primary exactly once, including those whose COMMIT's answer the
** failover lost (503, retried with the same key). */
PGT_TEST(http, prod_failover_sync_replica_every_202_once)
{
    fo_pair p;
    fo_start(&p, "hp_fo");
    PGconn *pc = fo_conn(p.pport);
    /* the test clusters run with synchronous_commit = off (tool/pgtmp.sh),
    ** where nothing waits for the standby: on, as in production */
    PQclear(PGT_EXEC(pc, "ALTER SYSTEM SET synchronous_commit = on"));
    PQclear(PGT_EXEC(pc, "ALTER SYSTEM SET synchronous_standby_names = '*'"));
    PQclear(PGT_EXEC(pc, "SELECT pg_reload_conf()"));
    fo_until(pc, "SELECT (count(*) = 1)::int FROM pg_stat_replication WHERE sync_state = 'sync'");
    PQfinish(pc);
    snprintf(hp_conninfo, sizeof hp_conninfo, "%s", p.dsn);
    hp_timeout_ms = 0;
    http_t_srv s;
    http_t_start(&s, hp_tweak);
    hp_sender snd;
    memset(&snd, 0, sizeof snd);
    snd.port = s.port;
    snd.n = 200;
    pthread_t th;
    PGT_CHECK(pthread_create(&th, NULL, hp_sender_main, &snd) == 0);
    /* the failover when a third of the records are acked (at most 60 s) */
    for (int i = 0; i < 600 && __atomic_load_n(&snd.progress, __ATOMIC_RELAXED) < snd.n / 3; i++)
        pgpipe_sleep_ms(100);
    PGT_CHECK(__atomic_load_n(&snd.progress, __ATOMIC_RELAXED) >= snd.n / 3);
    fo_failover(&p);
    PGT_CHECK(pthread_join(th, NULL) == 0);
    PGT_CHECK_MSG(!snd.bad[0], "%s", snd.bad);
    int acked = 0;
    for (int i = 0; i < snd.n; i++)
        acked += snd.acked[i];
    PGT_EQ_INT(acked, snd.n);
    PGconn *rc = fo_conn(p.rport);
    PGT_EQ_INT(fo_int(rc, "SELECT count(*) FROM staging.raw_events WHERE source = 'fo'"), snd.n);
    PGT_EQ_INT(fo_int(rc, "SELECT count(DISTINCT payload->>'n') FROM staging.raw_events "
                          "WHERE source = 'fo'"), snd.n);
    PGT_EQ_INT(fo_int(rc, "SELECT count(*) FROM pgpipe.http_keys WHERE source = 'fo'"), snd.n);
    PQfinish(rc);
    fprintf(stderr, "    %d records, %d failed tries (503 or no answer) across the failover, "
                    "%d 202s replayed\n", snd.n, snd.fails, snd.replays);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
    fo_stop(&p);
}

/* Behind pgbouncer in transaction mode (2 server connections): two senders
** post the same 100 keys at once through 2 committers, every key is stored
** once and every request gets 202; then other clients hold both server
** connections in open transactions, so the committer's statements wait in
** pgbouncer's queue: the request gets 503 after the commit timeout, not
** pgbouncer's query_wait_timeout, and commits once the pool is free again. */
PGT_TEST(http, prod_behind_transaction_pooler)
{
    char db[64];
    snprintf(db, sizeof db, "hp_pb_%d", (int)getpid());
    PGconn *admin = pgt_db_fresh(db);
    snprintf(hp_conninfo, sizeof hp_conninfo, "%s dbname=%s", pgt_bouncer_dsn("transaction"), db);
    hp_timeout_ms = 4000;
    hp_committers = 2;
    http_t_srv s;
    http_t_start(&s, hp_tweak);
    hp_sender snd[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&snd[i], 0, sizeof snd[i]);
        snd[i].port = s.port;
        snd[i].n = 100;
        PGT_CHECK(pthread_create(&th[i], NULL, hp_sender_main, &snd[i]) == 0);
    }
    for (int i = 0; i < 2; i++) {
        PGT_CHECK(pthread_join(th[i], NULL) == 0);
        PGT_CHECK_MSG(!snd[i].bad[0], "%s", snd[i].bad);
        PGT_EQ_INT(snd[i].progress, 100);
    }
    PGT_EQ_INT(pgt_db_int(admin, "SELECT count(*) FROM staging.raw_events WHERE source = 'fo'"), 100);
    PGT_EQ_INT(pgt_db_int(admin, "SELECT count(DISTINCT payload->>'n') FROM staging.raw_events "
                                 "WHERE source = 'fo'"), 100);
    PGT_EQ_INT(snd[0].replays + snd[1].replays, 100);

    /* the pool exhausted */
    PGconn *hold[2];
    for (int i = 0; i < 2; i++) {
        hold[i] = PQconnectdb(hp_conninfo);
        PGT_CHECK_MSG(PQstatus(hold[i]) == CONNECTION_OK, "%s", PQerrorMessage(hold[i]));
        PQclear(PGT_EXEC(hold[i], "BEGIN; SELECT 1"));
    }
    http_t_resp r;
    int st = hp_post(s.port, "px", "px-1", "{\"n\":1}", 40, &r);
    PGT_CHECK_MSG(st == 503, "POST while the pool is exhausted: %d %s", st, st ? r.body : "(no answer)");
    free(r.body);
    for (int i = 0; i < 2; i++) {
        PQclear(PGT_EXEC(hold[i], "COMMIT"));
        PQfinish(hold[i]);
    }
    char last[512] = "";
    for (int i = 0, ok = 0; i < 60 && !ok; i++) {
        st = hp_post(s.port, "px", "px-1", "{\"n\":1}", 20, &r);
        snprintf(last, sizeof last, "%d %s", st, st ? r.body : "");
        ok = st == 202;
        free(r.body);
        PGT_CHECK_MSG(st == 202 || st == 503, "the retry: %s", last);
        if (!ok)
            pgpipe_sleep_ms(500);
        if (i == 59)
            PGT_CHECK_MSG(0, "no 202 after 60 retries, the last: %s", last);
    }
    PGT_EQ_INT(pgt_db_int(admin, "SELECT count(*) FROM staging.raw_events WHERE source = 'px'"), 1);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
    pgt_db_close(admin);
    pgt_bouncer_stop();
}

/* SIGHUP reloads the tokens on the server's own thread: with a database that
** does not answer (here: a lock on pgpipe.http_tokens) the read is cut after
** the commit timeout, the tokens read before stay, and /healthz is answered
** again, instead of the whole server waiting for the database. */
PGT_TEST(http, prod_reload_with_db_not_answering_keeps_serving)
{
    char db[64];
    snprintf(db, sizeof db, "hp_hup_%d", (int)getpid());
    PGconn *admin = pgt_db_fresh(db);
    snprintf(hp_conninfo, sizeof hp_conninfo, "%s dbname=%s", pgt_dsn(), db);
    hp_timeout_ms = 3000;
    hp_committers = 1;
    http_t_srv s;
    http_t_start(&s, hp_tweak);
    http_t_resp r;
    PGconn *locker = PQconnectdb(hp_conninfo);
    PGT_CHECK(PQstatus(locker) == CONNECTION_OK);
    PQclear(PGT_EXEC(locker, "BEGIN; LOCK TABLE pgpipe.http_tokens IN ACCESS EXCLUSIVE MODE"));
    PGT_OK(pgpipe_http_reload(s.h));
    pgpipe_sleep_ms(300); /* the loop has taken the reload (a later turn would too) */
    int fd = http_t_connect(s.port, 0);
    struct timeval tv = { 30, 0 }; /* without the watch: as long as the lock */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    http_t_nrest = 0;
    http_t_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    int st = http_t_read(fd, &r);
    close(fd);
    PGT_CHECK_MSG(st == 200, "/healthz during a reload the database does not answer: %d", st);
    free(r.body);
    PQclear(PGT_EXEC(locker, "COMMIT"));
    PQfinish(locker);
    /* still serving, and committing */
    char last[512] = "";
    for (int i = 0, ok = 0; i < 60 && !ok; i++) {
        st = hp_post(s.port, "hup", NULL, "{\"n\":1}", 20, &r);
        snprintf(last, sizeof last, "%d %s", st, st ? r.body : "");
        ok = st == 202;
        free(r.body);
        if (!ok)
            pgpipe_sleep_ms(500);
        if (i == 59)
            PGT_CHECK_MSG(0, "no 202 after 60 tries, the last: %s", last);
    }
    http_t_stop(&s);
    pgpipe_http_close(s.h);
    pgt_db_close(admin);
}

/* The open's schema install and first read of the tokens are bounded: with
** another session holding ACCESS EXCLUSIVE on pgpipe.http_tokens, the open
** fails after commit_timeout_ms with an error naming the table and the
** lock, instead of waiting as long as the lock is held. (The locker lets
** go after 40 s, so that without the bound the test ends, failing.) */
typedef struct hp_locker {
    PGconn *c;
    atomic_int done;
} hp_locker;

static void *hp_unlock_later(void *arg)
{
    hp_locker *l = arg;
    for (int i = 0; i < 400 && !atomic_load(&l->done); i++)
        pgpipe_sleep_ms(100);
    PQclear(PQexec(l->c, "COMMIT"));
    return NULL;
}

PGT_TEST(http, prod_open_with_tokens_locked_fails_in_bounded_time)
{
    char db[64];
    snprintf(db, sizeof db, "hp_olock_%d", (int)getpid());
    PGconn *admin = pgt_db_fresh(db);
    snprintf(hp_conninfo, sizeof hp_conninfo, "%s dbname=%s", pgt_dsn(), db);
    hp_timeout_ms = 1500;
    hp_committers = 1;
    http_t_srv s;
    http_t_start(&s, hp_tweak); /* installs the schema */
    http_t_stop(&s);
    pgpipe_http_close(s.h);

    hp_locker l = { PQconnectdb(hp_conninfo), 0 };
    PGT_CHECK(PQstatus(l.c) == CONNECTION_OK);
    PQclear(PGT_EXEC(l.c, "BEGIN; LOCK TABLE pgpipe.http_tokens IN ACCESS EXCLUSIVE MODE"));
    pthread_t th;
    PGT_CHECK(pthread_create(&th, NULL, hp_unlock_later, &l) == 0);
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    hp_tweak(&o);
    pgpipe_http *h = NULL;
    int rc = pgpipe_http_open(&h, &o);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", pgpipe_errmsg(h));
    atomic_store(&l.done, 1);
    pthread_join(th, NULL);
    PQfinish(l.c);
    pgpipe_http_close(h);
    PGT_CHECK_MSG(rc == PGPIPE_DB, "open with the tokens locked: rc %d: %s", rc, msg);
    PGT_CONTAINS(msg, "pgpipe.http_tokens");
    PGT_CONTAINS(msg, "lock");
    PGT_CONTAINS(msg, "1500 ms");
    pgt_db_close(admin);
}

/* A TCP proxy on loopback in front of the test server that can turn into a
** blackhole: every connection it carries is closed, and new ones are left
** in the listen queue unanswered (a connect "succeeds" and then hears
** nothing, as from a server that hangs or a network that drops packets)
** until it forwards again. */
#include <sys/un.h>
typedef struct hp_proxy {
    int lfd, port;
    char up_host[88], up_port[8];
    atomic_int mode;            /* 0 forward, 1 blackhole, 2 quit */
    pthread_t th;
} hp_proxy;

static int hp_proxy_up(hp_proxy *x)
{
    int fd;
    if (x->up_host[0] == '/') {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        snprintf(a.sun_path, sizeof a.sun_path, "%s/.s.PGSQL.%s", x->up_host, x->up_port);
        fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            return fd;
    } else {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)atoi(x->up_port));
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
            return fd;
    }
    if (fd >= 0)
        close(fd);
    return -1;
}

static void *hp_proxy_main(void *arg)
{
    hp_proxy *x = arg;
    enum { N = 32 };
    int fds[N][2];
    int n = 0;
    char buf[16384];
    for (;;) {
        int mode = atomic_load(&x->mode);
        if (mode == 2)
            break;
        if (mode == 1) {
            for (int i = 0; i < n; i++)
                close(fds[i][0]), close(fds[i][1]);
            n = 0;
        }
        struct pollfd pf[2 * N + 1];
        int np = 0;
        if (mode == 0 && n < N)
            pf[np++] = (struct pollfd){ x->lfd, POLLIN, 0 };
        int base = np;
        for (int i = 0; i < n; i++) {
            pf[np++] = (struct pollfd){ fds[i][0], POLLIN, 0 };
            pf[np++] = (struct pollfd){ fds[i][1], POLLIN, 0 };
        }
        if (poll(pf, (nfds_t)np, 50) <= 0)
            continue;
        if (base && (pf[0].revents & POLLIN)) {
            int c = accept(x->lfd, NULL, NULL);
            int u = c >= 0 ? hp_proxy_up(x) : -1;
            if (c >= 0 && u >= 0) {
                fds[n][0] = c;
                fds[n][1] = u;
                n++;
            } else if (c >= 0) {
                close(c);
            }
            continue;
        }
        for (int i = n - 1; i >= 0; i--) {
            for (int d = 0; d < 2; d++) {
                if (!(pf[base + 2 * i + d].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                ssize_t r = read(fds[i][d], buf, sizeof buf);
                if (r <= 0 || write(fds[i][!d], buf, (size_t)r) != r) {
                    close(fds[i][0]);
                    close(fds[i][1]);
                    fds[i][0] = fds[n - 1][0];
                    fds[i][1] = fds[n - 1][1];
                    n--;
                    break;
                }
            }
        }
    }
    for (int i = 0; i < n; i++)
        close(fds[i][0]), close(fds[i][1]);
    return NULL;
}

static void hp_proxy_start(hp_proxy *x, PGconn *up)
{
    memset(x, 0, sizeof *x);
    snprintf(x->up_host, sizeof x->up_host, "%s", PQhost(up));
    snprintf(x->up_port, sizeof x->up_port, "%s", PQport(up));
    x->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    PGT_CHECK(bind(x->lfd, (struct sockaddr *)&a, sizeof a) == 0);
    PGT_CHECK(listen(x->lfd, 16) == 0);
    socklen_t al = sizeof a;
    getsockname(x->lfd, (struct sockaddr *)&a, &al);
    x->port = ntohs(a.sin_port);
    PGT_CHECK(pthread_create(&x->th, NULL, hp_proxy_main, x) == 0);
}

static void hp_proxy_stop(hp_proxy *x)
{
    atomic_store(&x->mode, 2);
    pthread_join(x->th, NULL);
    close(x->lfd);
}

/* The value of metric line "NAME " in a /metrics body; -1 when absent. */
static long long hp_metric(int port, const char *name)
{
    http_t_resp r;
    if (http_t_ask(port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r) != 200)
        return -1;
    char key[200];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(r.body, key);
    long long v = p ? atoll(p + strlen(key)) : -1;
    free(r.body);
    return v;
}

/* SIGHUP while the database cannot be reached (its connection lost, a new
** one hearing nothing: a blackhole) must not stop the event loop: /healthz
** and /metrics are answered while the reload still waits for the database
** (the loop drives the reconnect, PQresetStart/PQresetPoll; the old code's
** PQreset held the loop for the connect timeout). Once the database
** answers again, that same reload completes. */
PGT_TEST(http, prod_reload_waiting_on_unreachable_db_keeps_loop_free)
{
    char db[64];
    snprintf(db, sizeof db, "hp_bh_%d", (int)getpid());
    PGconn *admin = pgt_db_fresh(db);
    hp_proxy x;
    hp_proxy_start(&x, admin);
    snprintf(hp_conninfo, sizeof hp_conninfo, "%s dbname=%s host=127.0.0.1 port=%d", pgt_dsn(),
             db, x.port);
    hp_timeout_ms = 60000; /* the reload waits this long at most */
    hp_committers = 1;
    http_t_srv s;
    http_t_start(&s, hp_tweak);
    http_t_resp r;
    hp_log[0] = '\0';
    pgpipe_config_log(hp_log_fn, NULL);

    atomic_store(&x.mode, 1); /* the blackhole */
    PGT_OK(pgpipe_http_reload(s.h));
    /* the reload runs: the loop is free meanwhile (at most 20 s to see it) */
    long long busy = 0;
    for (int i = 0; i < 200 && busy != 1; i++) {
        busy = hp_metric(s.port, "pgpipe_http_token_reload_in_progress");
        if (busy != 1)
            pgpipe_sleep_ms(100);
    }
    PGT_EQ_INT(http_t_ask(s.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    free(r.body);
    pthread_mutex_lock(&hp_log_mu);
    int ended = strstr(hp_log, "reloading the tokens failed") != NULL;
    pthread_mutex_unlock(&hp_log_mu);
    PGT_CHECK_MSG(!ended, "the reload had ended (given up on the database) before /healthz was "
                  "answered: the loop waited for it");
    PGT_CHECK_MSG(busy == 1, "/metrics: reload in progress %lld, wanted 1 (answered while the "
                  "reload waits)", busy);
    PGT_EQ_INT(hp_metric(s.port, "pgpipe_http_token_reload_in_progress"), 1);
    PGT_EQ_INT(hp_metric(s.port, "pgpipe_http_token_reloads_total{result=\"ok\"}"), 0);

    /* the database answers again: the reload completes (at most 30 s) */
    atomic_store(&x.mode, 0);
    long long ok = 0;
    for (int i = 0; i < 300 && ok != 1; i++) {
        ok = hp_metric(s.port, "pgpipe_http_token_reloads_total{result=\"ok\"}");
        if (ok != 1)
            pgpipe_sleep_ms(100);
    }
    PGT_EQ_INT(ok, 1);
    PGT_EQ_INT(hp_metric(s.port, "pgpipe_http_token_reloads_total{result=\"failed\"}"), 0);
    PGT_EQ_INT(hp_metric(s.port, "pgpipe_http_token_reload_in_progress"), 0);
    pgpipe_config_log(NULL, NULL);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
    hp_proxy_stop(&x);
    pgt_db_close(admin);
}
