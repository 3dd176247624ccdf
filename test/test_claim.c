/* Tests of the SKIP LOCKED claimer and the worker pool (src/pipeline/claim.c). */
#include <signal.h>
#include <sys/wait.h>
#include <poll.h>

/* The built-in schema plus a fresh table shaped like staging.raw_events with
** n pending rows (source 'src', event_type 'click', payload {"n": g}). */
static PGconn *claim_t_setup(const char *table, int n)
{
    PGconn *c = pgt_db_open();
    pgt_db_table(c, table, "(LIKE staging.raw_events INCLUDING ALL)");
    char sql[1024];
    snprintf(sql, sizeof sql, "DELETE FROM pgpipe.dead_letters WHERE source_table = '%s'", table);
    PQclear(PGT_EXEC(c, sql));
    if (n > 0) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO %s (source, event_type, payload) SELECT 'src', 'click',"
                 " jsonb_build_object('n', g) FROM generate_series(1, %d) g", table, n);
        PQclear(PGT_EXEC(c, sql));
    }
    return c;
}

static long long claim_t_scalar(PGconn *c, const char *sql)
{
    PGresult *r = PGT_EXEC(c, sql);
    long long v = PQntuples(r) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10) : -1;
    PQclear(r);
    return v;
}

static void claim_t_opts(pgpipe_claim_options *o, const char *table)
{
    pgpipe_claim_options_init(o);
    o->table = table;
    o->backoff_base_ms = 1;
    o->backoff_max_ms = 5;
}

typedef struct claim_t_ctx {
    int calls;
    long long fail_id;        /* fail this id (0 = none) */
    long long fail_mod;       /* fail ids with id % fail_mod == 0 */
    const char *log_table;    /* insert (event_id) here in the transaction */
    int slow_at;              /* call index at which to signal and sleep */
    int sig_fd;               /* write a byte here at slow_at */
    int file_fd;              /* append "id\n" here per processing */
    int stall_ms;             /* at slow_at: sleep this long instead of waiting to die */
} claim_t_ctx;

static int claim_t_record(void *ud, PGconn *conn, const pgpipe_event *ev, pgpipe_error *err)
{
    claim_t_ctx *x = ud;
    x->calls++;
    if (x->file_fd > 0) {
        char line[32];
        int n = snprintf(line, sizeof line, "%lld\n", ev->id);
        if (write(x->file_fd, line, (size_t)n) != n)
            return pp_err(err, PGPIPE_IO, "write");
    }
    if (x->log_table && conn) {
        char sql[256], idb[24];
        snprintf(sql, sizeof sql, "INSERT INTO %s (event_id) VALUES ($1)", x->log_table);
        snprintf(idb, sizeof idb, "%lld", ev->id);
        const char *v[1] = { idb };
        PGresult *r = PQexecParams(conn, sql, 1, NULL, v, NULL, NULL, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            pp_err_pq(err, conn, r, "log insert");
        PQclear(r);
        if (!ok)
            return PGPIPE_DB;
    }
    if (x->slow_at && x->calls == x->slow_at) {
        if (x->sig_fd > 0 && write(x->sig_fd, "k", 1) != 1)
            return PGPIPE_IO;
        if (x->stall_ms) {
            pgpipe_sleep_ms(x->stall_ms);
            return PGPIPE_OK;
        }
        for (;;)
            pause(); /* until SIGKILL / SIGSTOP+CONT games end us */
    }
    if ((x->fail_id && ev->id == x->fail_id) || (x->fail_mod && ev->id % x->fail_mod == 0)) {
        pp_err(err, PGPIPE_ERROR, "bad record %lld", ev->id);
        memcpy(err->sqlstate, "P0001", 6);
        return PGPIPE_ERROR;
    }
    return PGPIPE_OK;
}

static int claim_t_drain(pgpipe_claimer *cl, const pgpipe_handler *h, int max_loops)
{
    int rc = PGPIPE_OK;
    for (int i = 0; i < max_loops; i++) {
        rc = pgpipe_claimer_run_batch(cl, h, NULL);
        if (rc != PGPIPE_OK)
            break;
    }
    return rc;
}

PGT_TEST(claim, transactional_batches)
{
    PGconn *c = claim_t_setup("claim_t_basic", 250);
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_basic");
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    claim_t_ctx x = { 0 };
    pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
    int n = 0;
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, &n));
    PGT_EQ_INT(n, 100);
    PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, NULL), PGPIPE_OK);
    PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, &n), PGPIPE_OK);
    PGT_EQ_INT(n, 50);
    PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, &n), PGPIPE_DONE);
    pgpipe_claim_stats st;
    PGT_OK(pgpipe_claimer_stats(cl, &st));
    PGT_EQ_INT(st.batches, 3);
    PGT_EQ_INT(st.claimed, 250);
    PGT_EQ_INT(st.done, 250);
    PGT_EQ_INT(x.calls, 250);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_basic WHERE processed"
                                 " AND processed_at IS NOT NULL"), 250);
    long long pending = -1;
    PGT_OK(pgpipe_claimer_pending(cl, &pending));
    PGT_EQ_INT(pending, 0);
    PGT_EQ_INT(PQtransactionStatus(c), PQTRANS_IDLE);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

/* A handler with more than one of record, batch and sql is refused (which
** one would run was the code's choice); batch_size, lease_ms and
** max_attempts of 0 or less take their defaults, as the header says. */
PGT_TEST(claim, handler_one_kind_and_option_defaults)
{
    PGconn *c = claim_t_setup("claim_t_kinds", 150);
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_kinds");
    o.batch_size = 0;
    o.lease_ms = -5;
    o.max_attempts = 0;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    claim_t_ctx x = { 0 };
    pgpipe_handler both = { claim_t_record, NULL, "SELECT 1 WHERE $1::jsonb IS NOT NULL", &x };
    int n = -1;
    PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &both, &n), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(cl), "more than one of record, batch and sql");
    PGT_EQ_INT(n, 0);
    PGT_EQ_INT(x.calls, 0);
    pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, &n));
    PGT_EQ_INT(n, 100); /* the default batch size */
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

PGT_TEST(claim, skip_locked_disjoint)
{
    PGconn *c1 = claim_t_setup("claim_t_skip", 30);
    PGconn *c2 = pgt_connect();
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_skip");
    o.batch_size = 10;
    o.order = PGPIPE_CLAIM_ORDER_ID;
    pgpipe_claimer *a, *b;
    PGT_OK(pgpipe_claimer_open(&a, c1, &o));
    PGT_OK(pgpipe_claimer_open(&b, c2, &o));
    pgpipe_batch *ba, *bb;
    PGT_EQ_INT(pgpipe_claim_next(a, &ba), PGPIPE_ROW);
    PGT_EQ_INT(pgpipe_claim_next(b, &bb), PGPIPE_ROW); /* not blocked by a's locks */
    PGT_EQ_INT(pgpipe_batch_count(ba), 10);
    PGT_EQ_INT(pgpipe_batch_count(bb), 10);
    for (int i = 0; i < 10; i++)
        for (int j = 0; j < 10; j++)
            PGT_CHECK(pgpipe_batch_event(ba, i)->id != pgpipe_batch_event(bb, j)->id);
    PGT_CHECK(pgpipe_batch_conn(ba) == c1);
    PGT_EQ_STR(pgpipe_batch_token(ba), "");
    PGT_EQ_INT(pgpipe_batch_event(ba, 0)->attempt, 1);
    PGT_CONTAINS(pgpipe_batch_event(ba, 0)->payload, "\"n\"");
    PGT_CONTAINS(pgpipe_batch_json(ba), "\"event_type\":\"click\"");
    /* a releases: its rows come back; b completes */
    PGT_OK(pgpipe_claim_release(a, ba));
    PGT_OK(pgpipe_claim_complete(b, bb));
    PGT_EQ_INT(claim_t_scalar(c1, "SELECT count(*) FROM claim_t_skip WHERE processed"), 10);
    pgpipe_claimer_close(a);
    pgpipe_claimer_close(b);
    PQfinish(c2);
    PQfinish(c1);
}

PGT_TEST(claim, filters_order_and_quoting)
{
    PGconn *c = pgt_db_open();
    PQclear(PGT_EXEC(c, "DROP SCHEMA IF EXISTS \"claim t\" CASCADE; CREATE SCHEMA \"claim t\";"
                        " CREATE TABLE \"claim t\".\"odd \"\"name\" (LIKE staging.raw_events INCLUDING ALL);"
                        " INSERT INTO \"claim t\".\"odd \"\"name\" (source, event_type, payload, received_at)"
                        " SELECT CASE WHEN g % 2 = 0 THEN 'it''s; DROP TABLE x' ELSE 'other' END,"
                        " CASE WHEN g % 3 = 0 THEN 'buy' ELSE 'view' END, '{}'::jsonb,"
                        " now() - g * interval '1 minute' FROM generate_series(1, 60) g"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim t.odd \"name");
    o.source = "it's; DROP TABLE x";
    o.event_type = "buy";
    o.batch_size = 100;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    pgpipe_batch *b;
    PGT_EQ_INT(pgpipe_claim_next(cl, &b), PGPIPE_ROW);
    PGT_EQ_INT(pgpipe_batch_count(b), 10); /* g divisible by 6 */
    for (int i = 0; i < pgpipe_batch_count(b); i++) {
        PGT_EQ_STR(pgpipe_batch_event(b, i)->source, "it's; DROP TABLE x");
        PGT_EQ_STR(pgpipe_batch_event(b, i)->event_type, "buy");
    }
    PGT_OK(pgpipe_claim_complete(cl, b));
    PGT_EQ_INT(pgpipe_claim_next(cl, &b), PGPIPE_DONE);
    pgpipe_claimer_close(cl);
    /* bad names and options are refused */
    o.source = o.event_type = NULL;
    o.table = "a.b.c";
    PGT_EQ_INT(pgpipe_claimer_open(&cl, c, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(cl), "bad table name");
    pgpipe_claimer_close(cl);
    o.table = "claim_t_no_such_table";
    PGT_EQ_INT(pgpipe_claimer_open(&cl, c, &o), PGPIPE_DB);
    PGT_EQ_STR(pgpipe_errsqlstate(cl), "42P01");
    pgpipe_claimer_close(cl);
    /* order by received_at: the oldest (largest g) first */
    pgpipe_claim_options_init(&o);
    o.table = "claim t.odd \"name";
    o.batch_size = 5;
    o.mode = PGPIPE_CLAIM_LEASE;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    PGT_EQ_INT(pgpipe_claim_next(cl, &b), PGPIPE_ROW);
    long long minid = claim_t_scalar(c, "SELECT min(id) FROM \"claim t\".\"odd \"\"name\"");
    int found_oldest = 0;
    for (int i = 0; i < pgpipe_batch_count(b); i++)
        found_oldest |= pgpipe_batch_event(b, i)->id == minid + 58; /* g = 60 is done */
    PGT_CHECK(found_oldest);
    PGT_EQ_INT(strlen(pgpipe_batch_token(b)), 36);
    PGT_OK(pgpipe_claim_release(cl, b));
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM \"claim t\".\"odd \"\"name\""
                                 " WHERE claim_token IS NOT NULL OR attempts <> 0"), 0);
    pgpipe_claimer_close(cl);
    PQclear(PGT_EXEC(c, "DROP SCHEMA \"claim t\" CASCADE"));
    PQfinish(c);
}

/* A table that is not shaped like staging.raw_events is refused when the
** claimer opens, with an error naming the table and what it needs (it said
** only: column "received_at" does not exist). */
PGT_TEST(claim, table_without_the_staging_columns_is_named)
{
    PGconn *c = pgt_db_open();
    pgt_db_table(c, "claim_t_plain", "(id bigint PRIMARY KEY, x int)");
    pgpipe_claim_options o;
    claim_t_opts(&o, "public.claim_t_plain");
    pgpipe_claimer *cl;
    PGT_EQ_INT(pgpipe_claimer_open(&cl, c, &o), PGPIPE_DB);
    PGT_EQ_STR(pgpipe_errsqlstate(cl), "42703");
    PGT_CONTAINS(pgpipe_errmsg(cl), "preparing a claimer statement on public.claim_t_plain");
    PGT_CONTAINS(pgpipe_errmsg(cl), "CREATE TABLE public.claim_t_plain (LIKE staging.raw_events"
                                    " INCLUDING ALL)");
    pgpipe_claimer_close(cl);
    PQclear(PGT_EXEC(c, "DROP TABLE claim_t_plain"));
    PQfinish(c);
}

PGT_TEST(claim, sql_handler_bisects)
{
    PGconn *c = claim_t_setup("claim_t_sql", 50);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_prod; CREATE TABLE claim_t_prod"
                        " (event_id bigint PRIMARY KEY, n int CHECK (n <> 17 AND n <> 33))"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_sql");
    o.max_attempts = 1;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    pgpipe_handler h = { NULL, NULL,
        "INSERT INTO claim_t_prod (event_id, n) SELECT (e->>'id')::bigint,"
        " (e->'payload'->>'n')::int FROM jsonb_array_elements($1::jsonb) e", NULL };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    pgpipe_claim_stats st;
    pgpipe_claimer_stats(cl, &st);
    PGT_EQ_INT(st.done, 48);
    PGT_EQ_INT(st.dead, 2);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_prod"), 48);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_sql WHERE processed"), 50);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_sql' AND stage = 'process' AND"
                                 " sqlstate = '23514' AND attempt_count = 1 AND"
                                 " error_message LIKE '%check constraint%' AND"
                                 " (payload->>'n')::int IN (17, 33) AND source_name = 'src'"), 2);
    PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, NULL), PGPIPE_DONE);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

/* A SQL handler that returns failed_id rows refuses those records itself: one
** statement, no bisection, its other writes kept. */
PGT_TEST(claim, sql_handler_refuses_records)
{
    PGconn *c = claim_t_setup("claim_t_refuse", 50);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_rprod, claim_t_rcalls;"
                        " CREATE TABLE claim_t_rprod (event_id bigint PRIMARY KEY, n int);"
                        " CREATE TABLE claim_t_rcalls (k int)"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_refuse");
    o.max_attempts = 1;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    pgpipe_handler h = { NULL, NULL,
        "WITH r AS (SELECT (e->>'id')::bigint AS id, (e->'payload'->>'n')::int AS n"
        "           FROM jsonb_array_elements($1::jsonb) e),"
        " calls AS (INSERT INTO claim_t_rcalls VALUES (1)),"
        " ok AS (INSERT INTO claim_t_rprod SELECT id, n FROM r WHERE n NOT IN (17, 33))"
        " SELECT id AS failed_id, 'n ' || n || ' is refused' AS error, '22023' AS sqlstate"
        " FROM r WHERE n IN (17, 33)", NULL };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    pgpipe_claim_stats st;
    pgpipe_claimer_stats(cl, &st);
    PGT_EQ_INT(st.done, 48);
    PGT_EQ_INT(st.dead, 2);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rcalls"), 1);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rprod"), 48);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_refuse' AND stage = 'process' AND"
                                 " sqlstate = '22023' AND error_message = 'n ' ||"
                                 " (payload->>'n') || ' is refused'"), 2);
    /* a failed_id that is not in the batch is the handler's bug: the batch
    ** fails (bisected down to single records), with a message that says so */
    PQclear(PGT_EXEC(c, "UPDATE claim_t_refuse SET processed = false WHERE (payload->>'n')::int <= 3"));
    pgpipe_handler bad = { NULL, NULL,
        "SELECT 0::bigint AS failed_id FROM jsonb_array_elements($1::jsonb) LIMIT 1", NULL };
    PGT_OK(pgpipe_claimer_run_batch(cl, &bad, NULL));
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_refuse' AND error_message LIKE"
                                 " '%failed_id 0, which is not a record of the batch%'"), 3);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

/* max_attempts above 1025: a row failing its 1501st attempt is retried
** with the handler's error (the backoff's 2^(attempts - 1) overflowed a
** float8 from attempt 1025 on, which failed the recording statement and
** dead-lettered the row early, with "value out of range: overflow"). */
PGT_TEST(claim, retry_past_attempt_1025_keeps_backing_off)
{
    for (int mode = 0; mode < 2; mode++) {
        PGconn *c = claim_t_setup("claim_t_many", 1);
        PQclear(PGT_EXEC(c, "UPDATE claim_t_many SET attempts = 1500"));
        pgpipe_claim_options o;
        claim_t_opts(&o, "claim_t_many");
        o.mode = mode ? PGPIPE_CLAIM_LEASE : PGPIPE_CLAIM_TRANSACTIONAL;
        o.max_attempts = 2000;
        o.backoff_base_ms = 0;
        o.backoff_max_ms = 0;
        pgpipe_claimer *cl;
        PGT_OK(pgpipe_claimer_open(&cl, c, &o));
        claim_t_ctx x = { 0 };
        x.fail_mod = 1; /* every row fails (P0001, not a data error) */
        pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
        PGT_CHECK_MSG(pgpipe_claimer_run_batch(cl, &h, NULL) == PGPIPE_OK, "mode %d: %s", mode,
                      pgpipe_errmsg(cl));
        pgpipe_claim_stats st;
        PGT_OK(pgpipe_claimer_stats(cl, &st));
        PGT_EQ_INT(st.retried, 1);
        PGT_EQ_INT(st.dead, 0);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_many WHERE NOT processed"
                                     " AND attempts = 1501 AND last_error LIKE 'bad record %'"
                                     " AND next_attempt_at IS NOT NULL"), 1);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                     " source_table = 'claim_t_many'"), 0);
        pgpipe_claimer_close(cl);
        PQfinish(c);
    }
}

PGT_TEST(claim, retry_backoff_then_dead_letter)
{
    PGconn *c = claim_t_setup("claim_t_retry", 20);
    long long first = claim_t_scalar(c, "SELECT min(id) FROM claim_t_retry");
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_retry");
    o.max_attempts = 3;
    o.backoff_base_ms = 300;
    o.backoff_max_ms = 400;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    claim_t_ctx x = { 0 };
    x.fail_id = first + 4;
    pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    /* the failed row waits for its backoff: not claimable right now */
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_retry WHERE NOT processed"
                                 " AND attempts = 1 AND next_attempt_at > now()"
                                 " AND last_error LIKE 'bad record %' AND first_failed_at IS NOT NULL"), 1);
    PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, NULL), PGPIPE_DONE);
    /* attempts 2 and 3 after their backoff, then the dead letter */
    int64_t t0 = pgpipe_now_us();
    long long pending = 1;
    while (pending > 0 && pgpipe_now_us() - t0 < 20000000) {
        int rc = pgpipe_claimer_run_batch(cl, &h, NULL);
        PGT_CHECK(rc == PGPIPE_OK || rc == PGPIPE_DONE);
        PGT_OK(pgpipe_claimer_pending(cl, &pending));
        if (rc == PGPIPE_DONE)
            pgpipe_sleep_ms(50);
    }
    PGT_EQ_INT(pending, 0);
    pgpipe_claim_stats st;
    pgpipe_claimer_stats(cl, &st);
    PGT_EQ_INT(st.done, 19);
    PGT_EQ_INT(st.retried, 2);
    PGT_EQ_INT(st.dead, 1);
    char q[512];
    snprintf(q, sizeof q, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table ="
             " 'claim_t_retry' AND row_id = %lld AND attempt_count = 3 AND sqlstate = 'P0001'"
             " AND error_message = 'bad record %lld' AND first_failed_at < last_failed_at"
             " AND status = 'dead' AND event_type = 'click'", first + 4, first + 4);
    PGT_EQ_INT(claim_t_scalar(c, q), 1);
    snprintf(q, sizeof q, "SELECT count(*) FROM claim_t_retry WHERE id = %lld AND processed"
             " AND attempts = 3 AND next_attempt_at IS NULL", first + 4);
    PGT_EQ_INT(claim_t_scalar(c, q), 1);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

PGT_TEST(claim, tx_record_failure_undoes_its_writes)
{
    PGconn *c = claim_t_setup("claim_t_txrec", 30);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_txlog; CREATE TABLE claim_t_txlog"
                        " (event_id bigint UNIQUE)"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_txrec");
    o.max_attempts = 1;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    claim_t_ctx x = { 0 };
    x.fail_mod = 7; /* ids divisible by 7 fail after writing their log row */
    x.log_table = "claim_t_txlog";
    pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    long long bad = claim_t_scalar(c, "SELECT count(*) FROM claim_t_txrec WHERE id % 7 = 0");
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_txlog"), 30 - bad);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_txlog WHERE event_id % 7 = 0"), 0);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_txrec'"), bad);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

static int claim_t_batch_fn(void *ud, pgpipe_batch *b, pgpipe_error *err)
{
    claim_t_ctx *x = ud;
    x->calls++;
    PGconn *tx = pgpipe_batch_conn(b);
    for (int i = 0; i < pgpipe_batch_count(b); i++) {
        const pgpipe_event *e = pgpipe_batch_event(b, i);
        if (e->id % 10 == 3) /* a soft failure of one record */
            pgpipe_batch_fail(b, i, "soft", "22000");
        if (e->id % 10 == 5) /* a hard failure: the whole call fails */
            return pp_err(err, PGPIPE_ERROR, "hard %lld", e->id);
        if (tx) {
            char sql[128];
            snprintf(sql, sizeof sql, "INSERT INTO claim_t_blog VALUES (%lld)", e->id);
            PGresult *r = PQexec(tx, sql);
            PQclear(r);
        }
    }
    return PGPIPE_OK;
}

PGT_TEST(claim, batch_callback_bisects)
{
    PGconn *c = claim_t_setup("claim_t_batch", 40);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_blog; CREATE TABLE claim_t_blog"
                        " (event_id bigint PRIMARY KEY)"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_batch");
    o.max_attempts = 1;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    claim_t_ctx x = { 0 };
    pgpipe_handler h = { NULL, claim_t_batch_fn, NULL, &x };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    PGT_CHECK(x.calls > 1);
    long long hard = claim_t_scalar(c, "SELECT count(*) FROM claim_t_batch WHERE id % 10 = 5");
    long long soft = claim_t_scalar(c, "SELECT count(*) FROM claim_t_batch WHERE id % 10 = 3");
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_batch' AND error_message LIKE 'hard %'"), hard);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_batch' AND error_message = 'soft'"
                                 " AND sqlstate = '22000'"), soft);
    /* the good records' writes committed, the hard failures' did not */
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_blog WHERE event_id % 10 = 5"), 0);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_blog WHERE event_id % 10 NOT IN (3, 5)"),
               40 - hard - soft);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

PGT_TEST(claim, lease_fencing_refuses_late_completion)
{
    PGconn *c1 = claim_t_setup("claim_t_lease", 10);
    PGconn *c2 = pgt_connect();
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_lease");
    o.mode = PGPIPE_CLAIM_LEASE;
    o.lease_ms = 300;
    pgpipe_claimer *a, *b;
    PGT_OK(pgpipe_claimer_open(&a, c1, &o));
    PGT_OK(pgpipe_claimer_open(&b, c2, &o));
    pgpipe_batch *ba, *bb;
    PGT_EQ_INT(pgpipe_claim_next(a, &ba), PGPIPE_ROW);
    PGT_EQ_INT(pgpipe_batch_count(ba), 10);
    PGT_CHECK(pgpipe_batch_conn(ba) == NULL);
    /* committed lease: b sees nothing while it lasts */
    PGT_EQ_INT(pgpipe_claim_next(b, &bb), PGPIPE_DONE);
    pgpipe_sleep_ms(400);
    PGT_EQ_INT(pgpipe_claim_next(b, &bb), PGPIPE_ROW);
    PGT_EQ_INT(pgpipe_batch_count(bb), 10);
    PGT_CHECK(strcmp(pgpipe_batch_token(ba), pgpipe_batch_token(bb)) != 0);
    PGT_EQ_INT(pgpipe_batch_event(bb, 0)->attempt, 2);
    /* the old holder's late completion is refused and counted */
    PGT_EQ_INT(pgpipe_claim_complete(a, ba), PGPIPE_BUSY);
    pgpipe_claim_stats st;
    pgpipe_claimer_stats(a, &st);
    PGT_EQ_INT(st.fenced, 10);
    PGT_EQ_INT(st.done, 0);
    PGT_EQ_INT(claim_t_scalar(c1, "SELECT count(*) FROM claim_t_lease WHERE processed"), 0);
    PGT_OK(pgpipe_claim_complete(b, bb));
    pgpipe_claimer_stats(b, &st);
    PGT_EQ_INT(st.done, 10);
    PGT_EQ_INT(claim_t_scalar(c1, "SELECT count(*) FROM claim_t_lease WHERE processed AND"
                                  " claim_token IS NULL AND lease_expires_at IS NULL"), 10);
    pgpipe_claimer_close(a);
    pgpipe_claimer_close(b);
    PQfinish(c2);
    PQfinish(c1);
}

PGT_TEST(claim, lease_crash_loop_goes_to_dead_letters)
{
    PGconn *c = claim_t_setup("claim_t_loop", 5);
    /* one row whose lease expired twice already (its workers died on it) */
    PQclear(PGT_EXEC(c, "UPDATE claim_t_loop SET attempts = 2, claim_token = gen_random_uuid(),"
                        " lease_expires_at = now() - interval '1 s'"
                        " WHERE id = (SELECT min(id) FROM claim_t_loop)"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_loop");
    o.mode = PGPIPE_CLAIM_LEASE;
    o.max_attempts = 2;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    claim_t_ctx x = { 0 };
    pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    PGT_EQ_INT(x.calls, 4); /* not handed to the handler a third time */
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_loop' AND attempt_count = 3 AND"
                                 " error_message LIKE 'lease expired%'"), 1);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_loop WHERE processed"), 5);
    /* the parsed payload is at hand */
    PQclear(PGT_EXEC(c, "INSERT INTO claim_t_loop (source, event_type, payload)"
                        " VALUES ('s', 'e', '{\"k\": [1, 2]}')"));
    pgpipe_batch *b;
    PGT_EQ_INT(pgpipe_claim_next(cl, &b), PGPIPE_ROW);
    pgpipe_error err;
    const pgpipe_json_doc *d = pgpipe_batch_doc(b, 0, &err);
    PGT_CHECK(d != NULL);
    PGT_EQ_INT(pgpipe_json_type(pgpipe_json_root(d)), PGPIPE_JSON_OBJECT);
    PGT_CHECK(pgpipe_batch_doc(b, 0, &err) == d);
    PGT_CHECK(pgpipe_batch_doc(b, 5, &err) == NULL);
    PGT_OK(pgpipe_claim_complete(cl, b));
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

PGT_TEST(claim, lease_sql_handler_and_failures)
{
    PGconn *c = claim_t_setup("claim_t_lsql", 20);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_lprod; CREATE TABLE claim_t_lprod"
                        " (event_id bigint PRIMARY KEY, n int CHECK (n <> 4))"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_lsql");
    o.mode = PGPIPE_CLAIM_LEASE;
    o.max_attempts = 2;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    pgpipe_handler h = { NULL, NULL,
        "INSERT INTO claim_t_lprod SELECT (e->>'id')::bigint, (e->'payload'->>'n')::int"
        " FROM jsonb_array_elements($1::jsonb) e", NULL };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_lprod"), 19);
    /* the CHECK violation (23514) is a data error: dead-lettered at once,
    ** not retried (issue 20); transient failures in lease mode are retried,
    ** see claim.transient_errors_still_retried */
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_lsql' AND attempt_count = 1"
                                 " AND sqlstate = '23514'"), 1);
    PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, NULL), PGPIPE_DONE);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_lsql WHERE processed"), 20);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

/* A handler that cannot run at execute time (its function dropped, then
** created again with another result type, which a prepared statement
** reports as 0A000 "cached plan must not change result type") is not the
** rows' fault: the batch is given back with no attempt counted, nothing is
** dead-lettered, and run_batch returns the error naming the handler and the
** SQLSTATE. Once the function is back everything is processed, exactly once.
** In both claim modes. */
PGT_TEST(claim, dropped_handler_function_charges_nothing)
{
    for (int mode = 0; mode < 2; mode++) {
        PGconn *c = claim_t_setup("claim_t_drop", 50);
        PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_dout; CREATE TABLE claim_t_dout"
                            " (event_id bigint PRIMARY KEY);"
                            "DROP FUNCTION IF EXISTS claim_t_dh(jsonb);"
                            "CREATE FUNCTION claim_t_dh(j jsonb) RETURNS int LANGUAGE sql AS $$"
                            " INSERT INTO claim_t_dout SELECT (e->>'id')::bigint"
                            " FROM jsonb_array_elements(j) e;"
                            " SELECT jsonb_array_length(j) $$"));
        pgpipe_claim_options o;
        claim_t_opts(&o, "claim_t_drop");
        o.mode = mode ? PGPIPE_CLAIM_LEASE : PGPIPE_CLAIM_TRANSACTIONAL;
        o.batch_size = 10;
        o.max_attempts = 2;
        pgpipe_claimer *cl;
        PGT_OK(pgpipe_claimer_open(&cl, c, &o));
        pgpipe_handler h = { NULL, NULL, "SELECT claim_t_dh($1::jsonb)", NULL };
        PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
        PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_dout"), 20);
        PQclear(PGT_EXEC(c, "DROP FUNCTION claim_t_dh(jsonb)"));
        for (int k = 0; k < 3; k++) { /* however often: never charged */
            PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, NULL), PGPIPE_DB);
            PGT_EQ_STR(pgpipe_errsqlstate(cl), "42883");
            PGT_CONTAINS(pgpipe_errmsg(cl), "SQL handler \"SELECT claim_t_dh($1::jsonb)\"");
            PGT_CONTAINS(pgpipe_errmsg(cl), "no attempt counted");
        }
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_drop WHERE attempts > 0"
                                     " AND NOT processed"), 0);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_drop WHERE NOT processed"),
                   30);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                     " source_table = 'claim_t_drop'"), 0);
        /* back, with another result type: the prepared statement's plan
        ** cannot change its result type (0A000); it is prepared again */
        PQclear(PGT_EXEC(c, "CREATE FUNCTION claim_t_dh(j jsonb) RETURNS text LANGUAGE sql AS $$"
                            " INSERT INTO claim_t_dout SELECT (e->>'id')::bigint"
                            " FROM jsonb_array_elements(j) e;"
                            " SELECT 'ok'::text $$"));
        PGT_EQ_INT(claim_t_drain(cl, &h, 20), PGPIPE_DONE);
        pgpipe_claim_stats st;
        PGT_OK(pgpipe_claimer_stats(cl, &st));
        PGT_EQ_INT(st.done, 50);
        PGT_EQ_INT(st.retried, 0);
        PGT_EQ_INT(st.dead, 0);
        PGT_EQ_INT(st.released, 30);
        PGT_EQ_INT(st.claimed, st.done + st.released);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_dout"), 50);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_drop WHERE processed"), 50);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_drop WHERE attempts > 1"
                                     " OR last_error IS NOT NULL"), 0);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                     " source_table = 'claim_t_drop'"), 0);
        pgpipe_claimer_close(cl);
        PQfinish(c);
    }
}

/* The handler's broken statement runs only per row (a PL/pgSQL loop), so an
** empty batch runs: when every row of a batch fails alone with such a state
** (42P01: the table it writes was dropped), the handler is at fault and the
** batch is given back uncharged. One row failing so among good ones (here a
** RAISE with 42P01 for n = 7) is that row's failure: charged as before. */
PGT_TEST(claim, handler_failing_on_every_row_charges_nothing)
{
    PGconn *c = claim_t_setup("claim_t_rowh", 40);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_rout; CREATE TABLE claim_t_rout"
                        " (event_id bigint PRIMARY KEY);"
                        "CREATE OR REPLACE FUNCTION claim_t_rh(j jsonb) RETURNS void"
                        " LANGUAGE plpgsql AS $$ DECLARE e jsonb; BEGIN"
                        " FOR e IN SELECT * FROM jsonb_array_elements(j) LOOP"
                        "  IF (e->'payload'->>'n')::int = 7 THEN"
                        "   RAISE EXCEPTION 'row 7 names no table' USING ERRCODE = '42P01';"
                        "  END IF;"
                        "  INSERT INTO claim_t_rout VALUES ((e->>'id')::bigint);"
                        " END LOOP; END $$"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_rowh");
    o.batch_size = 10;
    o.max_attempts = 1;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    pgpipe_handler h = { NULL, NULL, "SELECT claim_t_rh($1::jsonb)", NULL };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL)); /* rows 1..10: row 7 is charged */
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rout"), 9);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_rowh' AND sqlstate = '42P01'"), 1);
    PQclear(PGT_EXEC(c, "DROP TABLE claim_t_rout"));
    PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, NULL), PGPIPE_DB);
    PGT_EQ_STR(pgpipe_errsqlstate(cl), "42P01");
    PGT_CONTAINS(pgpipe_errmsg(cl), "each of the 10 rows");
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rowh WHERE NOT processed"
                                 " AND attempts = 0"), 30);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_rowh'"), 1);
    PQclear(PGT_EXEC(c, "CREATE TABLE claim_t_rout (event_id bigint PRIMARY KEY)"));
    PGT_EQ_INT(claim_t_drain(cl, &h, 20), PGPIPE_DONE);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rout"), 30);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rowh WHERE processed"), 40);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_rowh'"), 1);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

/* ---- workers ------------------------------------------------------------ */

static pgpipe_pool *claim_t_pool(int size)
{
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = size;
    po.max_overflow = 2;
    po.acquire_timeout_ms = 5000;
    pgpipe_pool *p;
    if (pgpipe_pool_open(&p, pgt_dsn(), &po) != PGPIPE_OK) {
        fprintf(stderr, "    pool: %s\n", pgpipe_errmsg(p));
        pgt_end_fail();
    }
    return p;
}

/* Issue 20: data errors (class 22 and 23) are not transient. A batch whose
** SQL handler hits a CHECK (23514), a NOT NULL (23502) or a bad cast (22P02)
** is bisected to the bad rows, and those go to the dead letters at once
** (attempt_count 1, their SQLSTATE), with no retry, though max_attempts is 5;
** in both claim modes. */
PGT_TEST(claim, data_errors_dead_letter_at_once)
{
    for (int mode = 0; mode < 2; mode++) {
        PGconn *c = claim_t_setup("claim_t_data", 100);
        PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_dtgt; CREATE TABLE claim_t_dtgt"
                            " (event_id bigint PRIMARY KEY, n int NOT NULL CHECK (n > 0))"));
        long long first = claim_t_scalar(c, "SELECT min(id) FROM claim_t_data");
        char q[768];
        snprintf(q, sizeof q,
                 "UPDATE claim_t_data SET payload = CASE id - %lld"
                 " WHEN 10 THEN '{\"n\": -1}'::jsonb WHEN 35 THEN '{\"m\": 1}'::jsonb"
                 " WHEN 60 THEN '{\"n\": \"abc\"}'::jsonb ELSE '{\"n\": 0}'::jsonb END"
                 " WHERE id - %lld IN (10, 35, 60, 85)", first, first);
        PQclear(PGT_EXEC(c, q));
        pgpipe_pool *pool = claim_t_pool(3);
        pgpipe_workers_options wo;
        pgpipe_workers_options_init(&wo);
        claim_t_opts(&wo.claim, "claim_t_data");
        wo.claim.mode = mode ? PGPIPE_CLAIM_LEASE : PGPIPE_CLAIM_TRANSACTIONAL;
        wo.claim.max_attempts = 5;
        wo.claim.backoff_base_ms = 200;
        wo.claim.backoff_max_ms = 400;
        wo.threads = 1;
        wo.channel = "";
        wo.poll_ms = 50;
        pgpipe_handler h = { NULL, NULL,
            "INSERT INTO claim_t_dtgt SELECT (e->>'id')::bigint, (e->'payload'->>'n')::int"
            " FROM jsonb_array_elements($1::jsonb) e", NULL };
        pgpipe_workers *w;
        PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
        PGT_OK(pgpipe_workers_run_until_empty(w, 60000));
        pgpipe_workers_stats ws;
        PGT_OK(pgpipe_workers_stats_get(w, &ws));
        PGT_EQ_INT(ws.total.retried, 0);
        PGT_EQ_INT(ws.total.dead, 4);
        PGT_EQ_INT(ws.total.done, 96);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_dtgt"), 96);
        static const struct { int off; const char *st; } want[] = {
            { 10, "23514" }, { 35, "23502" }, { 60, "22P02" }, { 85, "23514" } };
        for (int i = 0; i < 4; i++) {
            snprintf(q, sizeof q, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table"
                     " = 'claim_t_data' AND row_id = %lld AND attempt_count = 1 AND sqlstate"
                     " = '%s' AND stage = 'process' AND error_message <> ''",
                     first + want[i].off, want[i].st);
            PGT_CHECK_MSG(claim_t_scalar(c, q) == 1, "mode %d: row +%d not dead-lettered once"
                          " with SQLSTATE %s", mode, want[i].off, want[i].st);
        }
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                     " source_table = 'claim_t_data'"), 4);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_data WHERE processed"
                                     " AND next_attempt_at IS NULL"), 100);
        pgpipe_workers_close(w);
        PGT_OK(pgpipe_pool_close(pool, NULL));
        PQfinish(c);
    }
}

/* A transient failure (here a serialization failure, 40001) is still
** retried with backoff, then dead-lettered after max_attempts. */
PGT_TEST(claim, transient_errors_still_retried)
{
    for (int mode = 0; mode < 2; mode++) {
        PGconn *c = claim_t_setup("claim_t_trans", 10);
        pgpipe_claim_options o;
        claim_t_opts(&o, "claim_t_trans");
        o.mode = mode ? PGPIPE_CLAIM_LEASE : PGPIPE_CLAIM_TRANSACTIONAL;
        o.max_attempts = 2;
        pgpipe_claimer *cl;
        PGT_OK(pgpipe_claimer_open(&cl, c, &o));
        pgpipe_handler h = { NULL, NULL,
            "SELECT CASE WHEN (e->'payload'->>'n')::int = 3 THEN pgpipe_t_raise_40001() END"
            " FROM jsonb_array_elements($1::jsonb) e", NULL };
        PQclear(PGT_EXEC(c, "CREATE OR REPLACE FUNCTION pgpipe_t_raise_40001() RETURNS int"
                            " LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'conflict'"
                            " USING ERRCODE = '40001'; END$$"));
        PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
        pgpipe_claim_stats st;
        PGT_OK(pgpipe_claimer_stats(cl, &st));
        PGT_EQ_INT(st.retried, 1);
        PGT_EQ_INT(st.dead, 0);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_trans WHERE NOT processed"
                                     " AND attempts = 1 AND next_attempt_at IS NOT NULL"), 1);
        for (int i = 0; i < 400; i++) { /* bounded: the backoff is at most 5 ms */
            long long pending = 1;
            int rc = pgpipe_claimer_run_batch(cl, &h, NULL);
            PGT_CHECK(rc == PGPIPE_OK || rc == PGPIPE_DONE);
            PGT_OK(pgpipe_claimer_pending(cl, &pending));
            if (pending == 0)
                break;
            pgpipe_sleep_ms(5);
        }
        PGT_OK(pgpipe_claimer_stats(cl, &st));
        PGT_EQ_INT(st.dead, 1);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table"
                                     " = 'claim_t_trans' AND attempt_count = 2 AND sqlstate = '40001'"), 1);
        pgpipe_claimer_close(cl);
        PQclear(PGT_EXEC(c, "DROP FUNCTION pgpipe_t_raise_40001()"));
        PQfinish(c);
    }
}

PGT_TEST(claim, workers_wake_on_notify)
{
    PGconn *c = claim_t_setup("claim_t_wk", 0);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_wlog; CREATE TABLE claim_t_wlog"
                        " (event_id bigint UNIQUE)"));
    pgpipe_pool *pool = claim_t_pool(4);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    claim_t_opts(&wo.claim, "claim_t_wk");
    wo.threads = 2;
    wo.channel = "claim_t_chan";
    wo.poll_ms = 60000; /* only a NOTIFY can wake them in time */
    pgpipe_handler h = { NULL, NULL,
        "INSERT INTO claim_t_wlog SELECT (e->>'id')::bigint FROM jsonb_array_elements($1::jsonb) e",
        NULL };
    pgpipe_workers *w;
    PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
    pgpipe_workers_stats ws;
    for (int i = 0; i < 200; i++) { /* wait until both idle */
        pgpipe_workers_stats_get(w, &ws);
        if (ws.idle == 2)
            break;
        pgpipe_sleep_ms(10);
    }
    PQclear(PGT_EXEC(c, "BEGIN; INSERT INTO claim_t_wk (source, event_type, payload)"
                        " SELECT 's', 'e', '{}' FROM generate_series(1, 500);"
                        " NOTIFY claim_t_chan; COMMIT"));
    PGT_OK(pgpipe_workers_run_until_empty(w, 30000));
    PGT_OK(pgpipe_workers_stats_get(w, &ws));
    PGT_EQ_INT(ws.total.done, 500);
    PGT_CHECK(ws.wakeups >= 1);
    PGT_CHECK(ws.events_per_s > 0);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_wlog"), 500);
    pgpipe_workers_close(w);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    PQfinish(c);
}

/* A SQL handler the server refuses to prepare (a syntax error) stops the
** workers with that error instead of retrying it forever. */
PGT_TEST(claim, workers_stop_on_a_broken_handler)
{
    PGconn *c = claim_t_setup("claim_t_broken", 20);
    pgpipe_pool *pool = claim_t_pool(3);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    claim_t_opts(&wo.claim, "claim_t_broken");
    wo.threads = 2;
    wo.poll_ms = 50;
    pgpipe_handler h = { NULL, NULL, "SELEKT jsonb_array_length($1::jsonb)", NULL };
    pgpipe_workers *w;
    PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
    int rc = pgpipe_workers_run_until_empty(w, 60000);
    PGT_EQ_INT(rc, PGPIPE_DB);
    PGT_CONTAINS(pgpipe_errmsg(w), "stopped on an error");
    PGT_CONTAINS(pgpipe_errmsg(w), "SELEKT");
    PGT_EQ_STR(pgpipe_errsqlstate(w), "42601");
    /* nothing was taken: the rows wait for a fixed handler */
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_broken WHERE NOT processed"), 20);
    pgpipe_workers_close(w);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    PQfinish(c);
}

/* Workers whose handler's function is dropped while they run stop with the
** error (naming the handler, SQLSTATE 42883) and charge no row; workers
** started again once it is back process every row, exactly once. */
PGT_TEST(claim, workers_stop_when_the_handler_function_is_dropped)
{
    PGconn *c = claim_t_setup("claim_t_wdrop", 10);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_wout; CREATE TABLE claim_t_wout"
                        " (event_id bigint PRIMARY KEY);"
                        "CREATE OR REPLACE FUNCTION claim_t_wh(j jsonb) RETURNS int LANGUAGE sql"
                        " AS $$ INSERT INTO claim_t_wout SELECT (e->>'id')::bigint"
                        " FROM jsonb_array_elements(j) e; SELECT 1 $$"));
    pgpipe_pool *pool = claim_t_pool(3);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    claim_t_opts(&wo.claim, "claim_t_wdrop");
    wo.claim.batch_size = 5;
    wo.claim.max_attempts = 1;
    wo.threads = 2;
    wo.poll_ms = 50;
    pgpipe_handler h = { NULL, NULL, "SELECT claim_t_wh($1::jsonb)", NULL };
    pgpipe_workers *w;
    PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
    pgpipe_workers_stats st;
    for (int i = 0; i < 600; i++) { /* the first 10 rows, up to 30 s; then both
                                       workers idle: each has prepared the handler */
        PGT_OK(pgpipe_workers_stats_get(w, &st));
        if (st.total.done == 10 && st.idle == 2)
            break;
        pgpipe_sleep_ms(50);
    }
    PGT_EQ_INT(st.total.done, 10);
    PGT_EQ_INT(st.idle, 2);
    PQclear(PGT_EXEC(c, "DROP FUNCTION claim_t_wh(jsonb);"
                        "INSERT INTO claim_t_wdrop (source, event_type, payload) SELECT 'src',"
                        " 'click', jsonb_build_object('n', g) FROM generate_series(11, 50) g"));
    for (int i = 0; i < 600 && !pgpipe_workers_stopping(w); i++)
        pgpipe_sleep_ms(50);
    PGT_CHECK(pgpipe_workers_stopping(w));
    PGT_EQ_INT(pgpipe_workers_wait(w), PGPIPE_DB);
    PGT_EQ_STR(pgpipe_errsqlstate(w), "42883");
    PGT_CONTAINS(pgpipe_errmsg(w), "claim_t_wh");
    PGT_OK(pgpipe_workers_stats_get(w, &st));
    PGT_EQ_INT(st.total.retried + st.total.dead, 0);
    pgpipe_workers_close(w);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_wdrop WHERE NOT processed"
                                 " AND attempts = 0 AND last_error IS NULL"), 40);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_wdrop'"), 0);
    PQclear(PGT_EXEC(c, "CREATE FUNCTION claim_t_wh(j jsonb) RETURNS int LANGUAGE sql"
                        " AS $$ INSERT INTO claim_t_wout SELECT (e->>'id')::bigint"
                        " FROM jsonb_array_elements(j) e; SELECT 1 $$"));
    PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
    PGT_OK(pgpipe_workers_run_until_empty(w, 60000));
    PGT_OK(pgpipe_workers_stats_get(w, &st));
    PGT_EQ_INT(st.total.done, 40);
    PGT_EQ_INT(st.total.retried + st.total.dead, 0);
    pgpipe_workers_close(w);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_wout"), 50);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_wdrop WHERE processed"), 50);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    PQfinish(c);
}

/* A C batch handler on a connection of its own (lease mode: the batch has
** no connection), serialized for the workers' threads. */
typedef struct claim_t_rev {
    PGconn *conn;
    pthread_mutex_t mu;
} claim_t_rev;

static int claim_t_rev_batch(void *ud, pgpipe_batch *b, pgpipe_error *err)
{
    claim_t_rev *x = ud;
    const char *j = pgpipe_batch_json(b);
    if (!j)
        return pp_err_nomem(err);
    pthread_mutex_lock(&x->mu);
    PGresult *r = PQexecParams(x->conn, "SELECT claim_t_revfn($1::jsonb)", 1, NULL, &j, NULL,
                               NULL, 0);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        pp_err_pq(err, x->conn, r, "the batch");
    PQclear(r);
    pthread_mutex_unlock(&x->mu);
    return ok ? PGPIPE_OK : PGPIPE_DB;
}

/* EXECUTE on the handler's function revoked from the workers' role while
** they run (42501): no row is charged an attempt or dead-lettered for it
** (max_attempts 1 would dead-letter a charged row at once), the workers stop
** with an error naming the function and the privilege, and once EXECUTE is
** granted again new workers process every row, exactly once. For the
** one-error-for-the-whole-batch C handler in lease mode (each row is run
** alone, and fails so), and the SQL handler in both modes. */
PGT_TEST(claim, workers_revoked_execute_charges_nothing)
{
    static const char role[] = "claim_t_wrole";
    PGconn *c = claim_t_setup("claim_t_rev", 0);
    PQclear(PGT_EXEC(c, "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname ="
                        " 'claim_t_wrole') THEN DROP OWNED BY claim_t_wrole;"
                        " DROP ROLE claim_t_wrole; END IF; END $$;"
                        "CREATE ROLE claim_t_wrole LOGIN;"
                        "GRANT SELECT, UPDATE ON claim_t_rev TO claim_t_wrole;"
                        "GRANT USAGE ON SCHEMA pgpipe TO claim_t_wrole;"
                        "GRANT SELECT, INSERT ON pgpipe.dead_letters TO claim_t_wrole;"
                        "GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgpipe TO claim_t_wrole"));
    for (int v = 0; v < 3; v++) { /* 0: lease, C batch; 1: lease, SQL; 2: transactional, SQL */
        PQclear(PGT_EXEC(c, "DELETE FROM claim_t_rev;"
                            "DELETE FROM pgpipe.dead_letters WHERE source_table = 'claim_t_rev';"
                            "INSERT INTO claim_t_rev (source, event_type, payload) SELECT 'src',"
                            " 'click', jsonb_build_object('n', g) FROM generate_series(1, 10) g;"
                            "DROP TABLE IF EXISTS claim_t_revout;"
                            "CREATE TABLE claim_t_revout (event_id bigint PRIMARY KEY);"
                            "GRANT INSERT ON claim_t_revout TO claim_t_wrole;"
                            "DROP FUNCTION IF EXISTS claim_t_revfn(jsonb);"
                            "CREATE FUNCTION claim_t_revfn(j jsonb) RETURNS int LANGUAGE sql AS $$"
                            " INSERT INTO claim_t_revout SELECT (e->>'id')::bigint"
                            " FROM jsonb_array_elements(j) e; SELECT 1 $$;"
                            "REVOKE EXECUTE ON FUNCTION claim_t_revfn(jsonb) FROM PUBLIC;"
                            "GRANT EXECUTE ON FUNCTION claim_t_revfn(jsonb) TO claim_t_wrole"));
        char dsn[1024];
        snprintf(dsn, sizeof dsn, "%s user=%s", pgt_dsn(), role);
        pgpipe_pool_options po;
        pgpipe_pool_options_init(&po);
        po.pool_size = 3;
        po.max_overflow = 2;
        po.acquire_timeout_ms = 5000;
        pgpipe_pool *pool;
        PGT_CHECK_MSG(pgpipe_pool_open(&pool, dsn, &po) == PGPIPE_OK, "%s", pgpipe_errmsg(pool));
        claim_t_rev x = { NULL, PTHREAD_MUTEX_INITIALIZER };
        x.conn = PQconnectdb(dsn);
        PGT_CHECK_MSG(PQstatus(x.conn) == CONNECTION_OK, "%s", PQerrorMessage(x.conn));
        pgpipe_handler h = { NULL, NULL, "SELECT claim_t_revfn($1::jsonb)", NULL };
        if (v == 0)
            h = (pgpipe_handler){ NULL, claim_t_rev_batch, NULL, &x };
        pgpipe_workers_options wo;
        pgpipe_workers_options_init(&wo);
        claim_t_opts(&wo.claim, "claim_t_rev");
        wo.claim.mode = v < 2 ? PGPIPE_CLAIM_LEASE : PGPIPE_CLAIM_TRANSACTIONAL;
        wo.claim.batch_size = 5;
        wo.claim.max_attempts = 1;
        wo.threads = 2;
        wo.channel = "";
        wo.poll_ms = 50;
        pgpipe_workers *w;
        PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
        pgpipe_workers_stats st;
        for (int i = 0; i < 600; i++) { /* the first 10 rows, up to 30 s */
            PGT_OK(pgpipe_workers_stats_get(w, &st));
            if (st.total.done == 10 && st.idle == 2)
                break;
            pgpipe_sleep_ms(50);
        }
        PGT_EQ_INT(st.total.done, 10);
        PQclear(PGT_EXEC(c, "REVOKE EXECUTE ON FUNCTION claim_t_revfn(jsonb) FROM claim_t_wrole;"
                            "INSERT INTO claim_t_rev (source, event_type, payload) SELECT 'src',"
                            " 'click', jsonb_build_object('n', g) FROM generate_series(11, 50) g"));
        for (int i = 0; i < 600 && !pgpipe_workers_stopping(w); i++)
            pgpipe_sleep_ms(50);
        PGT_CHECK_MSG(pgpipe_workers_stopping(w), "variant %d: the workers did not stop", v);
        PGT_EQ_INT(pgpipe_workers_wait(w), PGPIPE_DB);
        PGT_EQ_STR(pgpipe_errsqlstate(w), "42501");
        PGT_CONTAINS(pgpipe_errmsg(w), "permission denied for function claim_t_revfn");
        PGT_CONTAINS(pgpipe_errmsg(w), "needs EXECUTE on function claim_t_revfn");
        PGT_CONTAINS(pgpipe_errmsg(w), "no attempt counted");
        if (v)
            PGT_CONTAINS(pgpipe_errmsg(w), "the role \"claim_t_wrole\"");
        PGT_OK(pgpipe_workers_stats_get(w, &st));
        PGT_EQ_INT(st.total.retried + st.total.dead, 0);
        pgpipe_workers_close(w);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rev WHERE NOT processed"
                                     " AND attempts = 0 AND last_error IS NULL"
                                     " AND claim_token IS NULL"), 40);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                     " source_table = 'claim_t_rev'"), 0);
        PQclear(PGT_EXEC(c, "GRANT EXECUTE ON FUNCTION claim_t_revfn(jsonb) TO claim_t_wrole"));
        PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
        PGT_OK(pgpipe_workers_run_until_empty(w, 60000));
        PGT_OK(pgpipe_workers_stats_get(w, &st));
        PGT_EQ_INT(st.total.done, 40);
        PGT_EQ_INT(st.total.retried + st.total.dead, 0);
        pgpipe_workers_close(w);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_revout"), 50);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rev WHERE processed"
                                     " AND attempts <= 1"), 50);
        PQfinish(x.conn);
        PGT_OK(pgpipe_pool_close(pool, NULL));
    }
    PQclear(PGT_EXEC(c, "DROP FUNCTION claim_t_revfn(jsonb); DROP TABLE claim_t_revout;"
                        "DROP OWNED BY claim_t_wrole; DROP ROLE claim_t_wrole"));
    PQfinish(c);
}

/* A SQL handler whose "$1" is only in a comment or a string (it passes the
** open's check) or that takes a second parameter is refused when it is
** prepared, before a row is claimed: the workers stop with the error, no
** row is charged or dead-lettered (every batch failed on the server with
** "bind message supplies 1 parameters", charged to its rows). */
PGT_TEST(claim, sql_handler_must_take_exactly_one_parameter)
{
    static const char *const bad[] = { "SELECT 1 /* $1 */", "SELECT '$1'",
                                       "SELECT $2::int, jsonb_array_length($1::jsonb)" };
    static const char *const says[] = { "takes 0 parameters", "takes 0 parameters",
                                        "takes 2 parameters" };
    PGconn *c = claim_t_setup("claim_t_np", 10);
    pgpipe_pool *pool = claim_t_pool(3);
    for (int k = 0; k < 3; k++) {
        pgpipe_workers_options wo;
        pgpipe_workers_options_init(&wo);
        claim_t_opts(&wo.claim, "claim_t_np");
        wo.claim.max_attempts = 1;
        wo.threads = 2;
        wo.poll_ms = 50;
        wo.channel = "";
        pgpipe_handler h = { NULL, NULL, bad[k], NULL };
        pgpipe_workers *w;
        PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
        PGT_EQ_INT(pgpipe_workers_run_until_empty(w, 30000), PGPIPE_MISUSE);
        PGT_CONTAINS(pgpipe_errmsg(w), says[k]);
        PGT_CONTAINS(pgpipe_errmsg(w), "it must take exactly one, $1");
        pgpipe_workers_close(w);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_np WHERE NOT processed"
                                     " AND attempts = 0 AND last_error IS NULL"), 10);
        PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                     " source_table = 'claim_t_np'"), 0);
    }
    /* the single-connection claimer says it again on the next call (the
    ** statement was not left prepared) */
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_np");
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    pgpipe_handler h = { NULL, NULL, bad[0], NULL };
    for (int i = 0; i < 2; i++) {
        PGT_EQ_INT(pgpipe_claimer_run_batch(cl, &h, NULL), PGPIPE_MISUSE);
        PGT_CONTAINS(pgpipe_errmsg(cl), "takes 0 parameters");
    }
    pgpipe_claimer_close(cl);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    PQfinish(c);
}

PGT_TEST(claim, workers_stop_on_signal)
{
    PGconn *c = claim_t_setup("claim_t_sig", 200);
    pgpipe_pool *pool = claim_t_pool(3);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    claim_t_opts(&wo.claim, "claim_t_sig");
    wo.claim.batch_size = 10;
    wo.poll_ms = 60000;
    claim_t_ctx x = { 0 };
    /* a slow handler that succeeds (it must take the batch as $1) */
    pgpipe_handler h = { NULL, NULL, "SELECT pg_sleep(0.05), jsonb_array_length($1::jsonb)", &x };
    pgpipe_workers *w;
    PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
    PGT_OK(pgpipe_workers_handle_signals(w));
    /* signal once the first batch is done (bounded wait), so the stop
    ** lands in the middle of the work */
    pgpipe_workers_stats ws;
    for (int i = 0; i < 1000; i++) {
        pgpipe_workers_stats_get(w, &ws);
        if (ws.total.done > 0)
            break;
        pgpipe_sleep_ms(10);
    }
    raise(SIGTERM);
    PGT_OK(pgpipe_workers_wait(w));
    pgpipe_workers_stats_get(w, &ws);
    /* finished batches are complete, nothing is half-done */
    long long processed = claim_t_scalar(c, "SELECT count(*) FROM claim_t_sig WHERE processed");
    PGT_CHECK_MSG(processed == ws.total.done,
                  "processed %lld, stats: batches %lld claimed %lld done %lld released %lld",
                  processed, ws.total.batches, ws.total.claimed, ws.total.done, ws.total.released);
    PGT_EQ_INT(ws.total.dead, 0);
    /* a SQL handler that ignores the rows is refused up front */
    pgpipe_workers *bad = NULL;
    pgpipe_handler nothing = { NULL, NULL, "SELECT 1", NULL };
    PGT_EQ_INT(pgpipe_workers_open(&bad, pool, &nothing, &wo), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(bad), "$1");
    pgpipe_workers_close(bad);
    PGT_EQ_INT(ws.total.retried, 0);
    PGT_CHECK(ws.total.done > 0 && ws.total.done < 200);
    pgpipe_workers_close(w);
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    PQfinish(c);
}

/* ---- crashes ------------------------------------------------------------ */

/* Child: a claimer that processes until the slow_at-th record, then tells
** the parent and waits to be killed. */
static void claim_t_child(const char *table, int mode, int lease_ms, const char *log_table,
                          int slow_at, int sig_fd, const char *file, int stall_ms)
{
    PGconn *c = PQconnectdb(pgt_dsn());
    pgpipe_claim_options o;
    claim_t_opts(&o, table);
    o.mode = mode;
    o.lease_ms = lease_ms;
    o.batch_size = 20;
    pgpipe_claimer *cl;
    if (pgpipe_claimer_open(&cl, c, &o) != PGPIPE_OK)
        _exit(3);
    claim_t_ctx x = { 0 };
    x.log_table = log_table;
    x.slow_at = slow_at;
    x.sig_fd = sig_fd;
    x.stall_ms = stall_ms;
    x.file_fd = file ? open(file, O_WRONLY | O_CREAT | O_APPEND, 0644) : 0;
    pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
    int rc;
    while ((rc = pgpipe_claimer_run_batch(cl, &h, NULL)) == PGPIPE_OK)
        ;
    pgpipe_claim_stats st;
    pgpipe_claimer_stats(cl, &st);
    _exit(rc == PGPIPE_DONE ? (int)(st.fenced > 100 ? 100 : st.fenced) : 101);
}

PGT_TEST(claim, crash_tx_sigkill_rows_come_back)
{
    PGconn *c = claim_t_setup("claim_t_ctx", 100);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_clog; CREATE TABLE claim_t_clog"
                        " (event_id bigint UNIQUE, pid int DEFAULT pg_backend_pid())"));
    int fds[2];
    PGT_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    PGT_CHECK(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        claim_t_child("claim_t_ctx", PGPIPE_CLAIM_TRANSACTIONAL, 0, "claim_t_clog", 30, fds[1], NULL, 0);
    }
    close(fds[1]);
    char k;
    PGT_EQ_INT(read(fds[0], &k, 1), 1); /* the child is in its second batch */
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    PGT_CHECK(WIFSIGNALED(status));
    /* the first batch committed; the killed one rolls back when the server
    ** notices the dead connection */
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_ctx");
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    claim_t_ctx x = { 0 };
    x.log_table = "claim_t_clog";
    pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
    int64_t t0 = pgpipe_now_us();
    long long pending = 1;
    while (pending > 0 && pgpipe_now_us() - t0 < 20000000) {
        int rc = pgpipe_claimer_run_batch(cl, &h, NULL);
        PGT_CHECK(rc == PGPIPE_OK || rc == PGPIPE_DONE);
        PGT_OK(pgpipe_claimer_pending(cl, &pending));
        if (rc == PGPIPE_DONE)
            pgpipe_sleep_ms(20);
    }
    PGT_EQ_INT(pending, 0);
    /* every event processed exactly once: one log row each, counted */
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_clog"), 100);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(DISTINCT event_id) FROM claim_t_clog"), 100);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_ctx c JOIN claim_t_clog l"
                                 " ON l.event_id = c.id WHERE c.processed"), 100);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_ctx'"), 0);
    pgpipe_claim_stats st;
    pgpipe_claimer_stats(cl, &st);
    PGT_EQ_INT(st.done, 80); /* the child committed its first batch of 20 */
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

static long long claim_t_count_lines(const char *path, long long *distinct_out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    long long n = 0, ids[4096];
    char line[64];
    int nd = 0;
    while (fgets(line, sizeof line, f)) {
        long long id = strtoll(line, NULL, 10);
        n++;
        int seen = 0;
        for (int i = 0; i < nd; i++)
            seen |= ids[i] == id;
        if (!seen && nd < 4096)
            ids[nd++] = id;
    }
    fclose(f);
    if (distinct_out)
        *distinct_out = nd;
    return n;
}

PGT_TEST(claim, crash_lease_sigkill_and_stalled_holder)
{
    PGconn *c = claim_t_setup("claim_t_cl", 60);
    char f1[512], f2[512], f3[512];
    snprintf(f1, sizeof f1, "%s/claim_lease_killed.%d", pgt_tmpdir(), (int)getpid());
    snprintf(f2, sizeof f2, "%s/claim_lease_stalled.%d", pgt_tmpdir(), (int)getpid());
    snprintf(f3, sizeof f3, "%s/claim_lease_parent.%d", pgt_tmpdir(), (int)getpid());
    unlink(f1);
    unlink(f2);
    unlink(f3);
    /* 1: a worker killed mid-batch */
    int fds[2];
    PGT_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        claim_t_child("claim_t_cl", PGPIPE_CLAIM_LEASE, 400, NULL, 5, fds[1], f1, 0);
    }
    close(fds[1]);
    char k;
    PGT_EQ_INT(read(fds[0], &k, 1), 1);
    close(fds[0]);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    /* its 20 rows stay leased until the lease expires */
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_cl WHERE claim_token IS NOT NULL"), 20);
    /* 2: a worker that stalls past its lease inside a batch (3 s at its
    ** third record; lease 400 ms) */
    PGT_CHECK(pipe(fds) == 0);
    pid_t stalled = fork();
    if (stalled == 0) {
        close(fds[0]);
        claim_t_child("claim_t_cl", PGPIPE_CLAIM_LEASE, 400, NULL, 3, fds[1], f2, 3000);
    }
    close(fds[1]);
    PGT_EQ_INT(read(fds[0], &k, 1), 1);
    close(fds[0]);
    pgpipe_sleep_ms(500); /* every lease has expired */
    /* the parent reclaims everything that is not done */
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_cl");
    o.mode = PGPIPE_CLAIM_LEASE;
    o.lease_ms = 20000;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    claim_t_ctx x = { 0 };
    x.file_fd = open(f3, O_WRONLY | O_CREAT | O_APPEND, 0644);
    pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
    int rc;
    while ((rc = pgpipe_claimer_run_batch(cl, &h, NULL)) == PGPIPE_OK)
        ;
    PGT_EQ_INT(rc, PGPIPE_DONE);
    close(x.file_fd);
    /* the stalled worker wakes up: its completion must be refused */
    int status;
    waitpid(stalled, &status, 0);
    PGT_CHECK(WIFEXITED(status));
    int child_fenced = WEXITSTATUS(status);
    pgpipe_claim_stats st;
    pgpipe_claimer_stats(cl, &st);
    PGT_EQ_INT(st.fenced, 0);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_cl WHERE processed"), 60);
    /* count from the processing records: the parent processed every row the
    ** others did not complete; the killed worker's rows were processed again */
    long long d1 = 0, d2 = 0, d3 = 0;
    long long n1 = claim_t_count_lines(f1, &d1);
    long long n2 = claim_t_count_lines(f2, &d2);
    long long n3 = claim_t_count_lines(f3, &d3);
    PGT_EQ_INT(n1, 5);
    PGT_EQ_INT(n3, d3);
    PGT_EQ_INT(st.done, n3);
    /* completions: parent's done + the stalled worker's accepted rows = 60 */
    long long stalled_done = n2 - child_fenced;
    PGT_EQ_INT(st.done + stalled_done, 60);
    PGT_CHECK(child_fenced > 0); /* its late completion was refused and counted */
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_cl'"), 0);
    (void)d1;
    (void)d2;
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

PGT_TEST(claim, server_restart_and_several_processes)
{
    const char *dir = getenv("PGPIPE_TEST_PGDIR");
    if (!dir || !*dir)
        PGT_SKIP("PGPIPE_TEST_PGDIR unset");
    PGconn *c = claim_t_setup("claim_t_rs", 3000);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_rslog; CREATE TABLE claim_t_rslog"
                        " (event_id bigint UNIQUE, pid int)"));
    PQfinish(c);
    pid_t kids[3];
    for (int p = 0; p < 3; p++) {
        kids[p] = fork();
        PGT_CHECK(kids[p] >= 0);
        if (kids[p] == 0) {
            pgpipe_pool *pool = claim_t_pool(3);
            pgpipe_workers_options wo;
            pgpipe_workers_options_init(&wo);
            claim_t_opts(&wo.claim, "claim_t_rs");
            wo.claim.batch_size = 10;
            wo.threads = 2;
            wo.poll_ms = 100;
            pgpipe_handler h = { NULL, NULL,
                "INSERT INTO claim_t_rslog SELECT (e->>'id')::bigint, pg_backend_pid()"
                " FROM jsonb_array_elements($1::jsonb) e, pg_sleep(0.05)", NULL };
            pgpipe_workers *w;
            if (pgpipe_workers_open(&w, pool, &h, &wo) != PGPIPE_OK)
                _exit(2);
            int rc = pgpipe_workers_run_until_empty(w, 60000);
            pgpipe_workers_stats ws;
            pgpipe_workers_stats_get(w, &ws);
            char fn[512];
            snprintf(fn, sizeof fn, "%s/claim_rs.%d", pgt_tmpdir(), (int)getpid());
            FILE *f = fopen(fn, "w");
            if (f) {
                fprintf(f, "%lld %lld\n", ws.reconnects, ws.total.done);
                fclose(f);
            }
            pgpipe_workers_close(w);
            pgpipe_pool_close(pool, NULL);
            _exit(rc == PGPIPE_OK ? 0 : 1);
        }
    }
    /* restart the server while they work: once some batches are done (not
    ** after a fixed time, which a slow start under load can outlast, so the
    ** restart came before any worker had connected), bounded at 30 s */
    c = pgt_connect();
    for (int i = 0; i < 600 && claim_t_scalar(c, "SELECT count(*) FROM claim_t_rslog") < 30; i++)
        pgpipe_sleep_ms(50);
    long long before = claim_t_scalar(c, "SELECT count(*) FROM claim_t_rslog");
    PQfinish(c);
    PGT_CHECK_MSG(before >= 30 && before < 3000, "%lld rows done before the restart", before);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sh tool/pgtmp.sh restart '%s' >/dev/null 2>&1", dir);
    PGT_EQ_INT(system(cmd), 0);
    for (int p = 0; p < 3; p++) {
        int status;
        waitpid(kids[p], &status, 0);
        PGT_CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d status %d", p, status);
    }
    /* the restart hit the workers mid-run (they lost connections and came
    ** back); their completions add up to the number of events */
    long long reconnects = 0, done = 0;
    for (int p = 0; p < 3; p++) {
        char fn[512];
        snprintf(fn, sizeof fn, "%s/claim_rs.%d", pgt_tmpdir(), (int)kids[p]);
        FILE *f = fopen(fn, "r");
        PGT_CHECK(f != NULL);
        long long r = 0, d = 0;
        PGT_EQ_INT(fscanf(f, "%lld %lld", &r, &d), 2);
        fclose(f);
        reconnects += r;
        done += d;
    }
    PGT_CHECK(reconnects >= 1);
    PGT_EQ_INT(done, 3000);
    c = pgt_connect();
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rs WHERE processed"), 3000);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rslog"), 3000);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_rs r JOIN claim_t_rslog l"
                                 " ON l.event_id = r.id"), 3000);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                 " source_table = 'claim_t_rs'"), 0);
    /* several sessions did the work */
    PGT_CHECK(claim_t_scalar(c, "SELECT count(DISTINCT pid) FROM claim_t_rslog") >= 3);
    PQfinish(c);
}

PGT_TEST(claim, handler_sees_the_session_planner_settings)
{
    PGconn *c = claim_t_setup("claim_t_guc", 5);
    PQclear(PGT_EXEC(c, "SET enable_hashjoin = off; DROP TABLE IF EXISTS claim_t_gucout;"
                        " CREATE TABLE claim_t_gucout (s text, h text, p text)"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_guc");
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    pgpipe_handler h = { NULL, NULL,
        "INSERT INTO claim_t_gucout SELECT current_setting('enable_seqscan'),"
        " current_setting('enable_hashjoin'), current_setting('plan_cache_mode')"
        " WHERE $1::jsonb IS NOT NULL", NULL };
    PGT_OK(pgpipe_claimer_run_batch(cl, &h, NULL));
    PGresult *r = PGT_EXEC(c, "SELECT s, h, p FROM claim_t_gucout");
    PGT_EQ_INT(PQntuples(r), 1);
    PGT_EQ_STR(PQgetvalue(r, 0, 0), "on");
    PGT_EQ_STR(PQgetvalue(r, 0, 1), "off"); /* the session's own value */
    PGT_EQ_STR(PQgetvalue(r, 0, 2), "auto");
    PQclear(r);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

/* ---- Issue 20: attempts counted outside the failed transaction ---------- */

typedef struct claim_t_logcount {
    pthread_mutex_t mu;
    int failed_whole;          /* "failed as a whole" warnings */
    int recorded;              /* "attempt recorded" warnings */
    int deadlocks;             /* warnings naming 40P01 */
    char last[512];
} claim_t_logcount;

static void claim_t_log(void *ud, int level, const char *component, const char *message,
                        const pgpipe_log_field *fields, int nfields)
{
    (void)fields, (void)nfields;
    claim_t_logcount *lc = ud;
    if (level < PGPIPE_LOG_WARN || strcmp(component, "claim") != 0)
        return;
    pthread_mutex_lock(&lc->mu);
    lc->failed_whole += strstr(message, "failed as a whole") != NULL;
    lc->recorded += strstr(message, "attempt recorded") != NULL;
    lc->deadlocks += strstr(message, "40P01") != NULL;
    snprintf(lc->last, sizeof lc->last, "%s", message);
    pthread_mutex_unlock(&lc->mu);
}

static long long claim_t_identity(const pgpipe_claim_stats *s)
{
    return s->done + s->retried + s->dead + s->fenced + s->released + s->abandoned;
}

static int claim_t_sleepy(void *ud, PGconn *conn, const pgpipe_event *ev, pgpipe_error *err)
{
    (void)ud, (void)conn, (void)err;
    if (strstr(ev->payload, "\"n\": 3") || strstr(ev->payload, "\"n\":3"))
        pgpipe_sleep_ms(900); /* idle in the claim's transaction past the timeout */
    return PGPIPE_OK;
}

/* Issue 20: a C handler slower than the server's
** idle_in_transaction_session_timeout loses its connection (25P03) with the
** claim's transaction, and with it any attempt counted inside. The attempt is
** recorded on the next connection, so the record reaches the dead letters
** after max_attempts with the server's message and SQLSTATE, the others are
** done, every failure is logged at warning level, and every claim ends in one
** counter. (Before: the row was retried forever, silently.) */
PGT_TEST(claim, idle_timeout_attempts_counted_outside)
{
    PGconn *c = claim_t_setup("claim_t_idle", 4);
    /* every connection of this test process: the server kills a session
    ** idle in a transaction for 300 ms */
    setenv("PGOPTIONS", "-c idle_in_transaction_session_timeout=300", 1);
    claim_t_logcount lc;
    memset(&lc, 0, sizeof lc);
    pthread_mutex_init(&lc.mu, NULL);
    pgpipe_config_log(claim_t_log, &lc);
    pgpipe_log_set_level(PGPIPE_LOG_WARN);
    pgpipe_pool *pool = claim_t_pool(3);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    claim_t_opts(&wo.claim, "claim_t_idle");
    wo.claim.batch_size = 1;
    wo.claim.max_attempts = 3;
    wo.threads = 1;
    wo.channel = "";
    wo.poll_ms = 20;
    pgpipe_handler h = { claim_t_sleepy, NULL, NULL, NULL };
    pgpipe_workers *w;
    PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
    int rc = pgpipe_workers_run_until_empty(w, 20000);
    pgpipe_workers_stats ws;
    PGT_OK(pgpipe_workers_stats_get(w, &ws));
    PGT_CHECK_MSG(rc == PGPIPE_OK, "rc %d (%s); claimed %lld done %lld retried %lld dead %lld",
                  rc, pgpipe_errmsg(w), ws.total.claimed, ws.total.done, ws.total.retried,
                  ws.total.dead);
    pgpipe_workers_close(w);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    pgpipe_config_log(NULL, NULL);
    PGT_EQ_INT(ws.total.done, 3);
    PGT_EQ_INT(ws.total.dead, 1);
    /* the slow record three times (a quick one stalled past the timeout by a
    ** busy machine would be retried once more) */
    PGT_CHECK(ws.total.retried >= 2);
    PGT_EQ_INT(claim_t_identity(&ws.total), ws.total.claimed);
    PGT_CHECK(ws.reconnects >= 3);
    PGT_CHECK(lc.failed_whole >= 3);
    PGT_EQ_INT(lc.recorded, lc.failed_whole);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table"
                                 " = 'claim_t_idle'"), 1);
    PGT_CHECK_MSG(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE"
                                    " source_table = 'claim_t_idle' AND (payload->>'n')::int = 3"
                                    " AND attempt_count = 3 AND sqlstate = '25P03'"
                                    " AND error_message LIKE '%idle-in-transaction%'") == 1,
                  "dead letters: %s", pgt_db_str(c, "SELECT string_agg(format('%s/%s/%s',"
                  " attempt_count, sqlstate, error_message), '; ') FROM pgpipe.dead_letters"
                  " WHERE source_table = 'claim_t_idle'"));
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_idle WHERE processed"), 4);
    PQfinish(c);
}

/* A transactional batch whose COMMIT fails with the connection alive (a
** deferred foreign key: 23503 at COMMIT, which no savepoint bisection sees)
** is charged its attempt after the rollback: a data error, so it is
** dead-lettered at once. (Before: its attempt rolled back with it and the
** row came back for ever.) */
PGT_TEST(claim, tx_commit_failure_counts_the_attempt)
{
    PGconn *c = claim_t_setup("claim_t_commitfail", 3);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_cf_out, claim_t_cf_ref;"
                        " CREATE TABLE claim_t_cf_ref (n int PRIMARY KEY);"
                        " INSERT INTO claim_t_cf_ref VALUES (1), (3);"
                        " CREATE TABLE claim_t_cf_out (n int REFERENCES claim_t_cf_ref"
                        " DEFERRABLE INITIALLY DEFERRED)"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_commitfail");
    o.batch_size = 1;
    o.order = PGPIPE_CLAIM_ORDER_ID;
    o.max_attempts = 5;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    pgpipe_handler h = { NULL, NULL,
        "INSERT INTO claim_t_cf_out SELECT (e->'payload'->>'n')::int"
        " FROM jsonb_array_elements($1::jsonb) e", NULL };
    int fails = 0;
    for (int i = 0; i < 10; i++) {
        int rc = pgpipe_claimer_run_batch(cl, &h, NULL);
        if (rc == PGPIPE_DONE)
            break;
        if (rc != PGPIPE_OK) {
            fails++;
            PGT_EQ_STR(pgpipe_errsqlstate(cl), "23503");
        }
    }
    PGT_EQ_INT(fails, 1);
    pgpipe_claim_stats st;
    PGT_OK(pgpipe_claimer_stats(cl, &st));
    PGT_EQ_INT(st.done, 2);
    PGT_EQ_INT(st.dead, 1);
    PGT_EQ_INT(st.claimed, 3);
    PGT_EQ_INT(claim_t_identity(&st), st.claimed);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table"
                                 " = 'claim_t_commitfail' AND (payload->>'n')::int = 2"
                                 " AND attempt_count = 1 AND sqlstate = '23503'"), 1);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_commitfail WHERE NOT processed"), 0);
    pgpipe_claimer_close(cl);
    PQfinish(c);
}

/* ---- Issue 20: lease-mode workers beside plain SKIP LOCKED clients ------ */

typedef struct claim_t_peer {
    pthread_t tid;
    const char *table;
    long long done;            /* rows this peer processed */
    int deadlocks;             /* 40P01 seen */
    int errors;                /* other failures */
    char err[256];
} claim_t_peer;

static int claim_t_peer_ok(PGconn *pc, PGresult *r, claim_t_peer *p)
{
    ExecStatusType s = PQresultStatus(r);
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK)
        return 1;
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (st && strcmp(st, "40P01") == 0)
        p->deadlocks++;
    else
        p->errors++;
    snprintf(p->err, sizeof p->err, "%s", PQerrorMessage(pc));
    return 0;
}

/* The seed's worker: BEGIN; SELECT id ... FOR UPDATE SKIP LOCKED LIMIT n;
** write the rows out; UPDATE ... SET processed = true WHERE id = ANY(...);
** COMMIT, until no row is pending. It knows nothing of leases. */
static void *claim_t_peer_main(void *arg)
{
    claim_t_peer *p = arg;
    PGconn *pc = PQconnectdb(pgt_dsn());
    if (PQstatus(pc) != CONNECTION_OK) {
        p->errors++;
        snprintf(p->err, sizeof p->err, "%s", PQerrorMessage(pc));
        PQfinish(pc);
        return NULL;
    }
    char sel[256], upd[256], cnt[256];
    snprintf(sel, sizeof sel, "SELECT array_agg(id ORDER BY id) FROM (SELECT id FROM %s"
             " WHERE NOT processed ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED) s", p->table);
    snprintf(upd, sizeof upd, "UPDATE %s SET processed = true, processed_at = now()"
             " WHERE id = ANY ($1::bigint[])", p->table);
    snprintf(cnt, sizeof cnt, "SELECT count(*) FROM %s WHERE NOT processed", p->table);
    for (int loop = 0; loop < 20000; loop++) {
        PQclear(PQexec(pc, "BEGIN"));
        PGresult *r = PQexec(pc, sel);
        if (!claim_t_peer_ok(pc, r, p) || PQgetisnull(r, 0, 0)) {
            PQclear(r);
            PQclear(PQexec(pc, "ROLLBACK"));
            r = PQexec(pc, cnt);
            long long left = claim_t_peer_ok(pc, r, p) ? strtoll(PQgetvalue(r, 0, 0), NULL, 10)
                                                       : 0;
            PQclear(r);
            if (left == 0)
                break;
            pgpipe_sleep_ms(5);
            continue;
        }
        char *ids = pp_strdup(PQgetvalue(r, 0, 0));
        PQclear(r);
        const char *v[1] = { ids };
        long long n = 1;
        for (const char *s = ids; *s; s++)
            n += *s == ',';
        r = PQexecParams(pc, "INSERT INTO claim_t_peer_out (event_id, by)"
                         " SELECT unnest($1::bigint[]), 'peer'", 1, NULL, v, NULL, NULL, 0);
        int ok = claim_t_peer_ok(pc, r, p);
        PQclear(r);
        if (ok) {
            r = PQexecParams(pc, upd, 1, NULL, v, NULL, NULL, 0);
            ok = claim_t_peer_ok(pc, r, p);
            PQclear(r);
        }
        if (ok) {
            r = PQexec(pc, "COMMIT");
            ok = claim_t_peer_ok(pc, r, p);
            PQclear(r);
        } else {
            PQclear(PQexec(pc, "ROLLBACK"));
        }
        if (ok)
            p->done += n;
        pp_free(ids);
    }
    PQfinish(pc);
    return NULL;
}

/* Issue 20: lease-mode workers (SQL handler) beside two clients of the
** seed's SKIP LOCKED pattern, all writing one output table keyed by the
** event: every row processed exactly once, no deadlock on either side (the
** workers lock their rows before their handler writes, in primary-key
** order, as the peers do), and every claim in exactly one counter. (Before:
** the handler wrote first and locked at completion, so a peer that took a
** leased row deadlocked with it, and the workers' unique violations went to
** the dead letters.) */
PGT_TEST(claim, lease_beside_skip_locked_peers)
{
    const int N = 3000;
    PGconn *c = claim_t_setup("claim_t_peers", N);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_peer_out; CREATE TABLE claim_t_peer_out"
                        " (event_id bigint PRIMARY KEY, by text NOT NULL)"));
    claim_t_logcount lc;
    memset(&lc, 0, sizeof lc);
    pthread_mutex_init(&lc.mu, NULL);
    pgpipe_config_log(claim_t_log, &lc);
    pgpipe_log_set_level(PGPIPE_LOG_WARN);
    pgpipe_pool *pool = claim_t_pool(4);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    claim_t_opts(&wo.claim, "claim_t_peers");
    wo.claim.mode = PGPIPE_CLAIM_LEASE;
    wo.claim.lease_ms = 30000;
    wo.claim.batch_size = 20;
    wo.threads = 2;
    wo.channel = "";
    wo.poll_ms = 20;
    pgpipe_handler h = { NULL, NULL,
        "INSERT INTO claim_t_peer_out (event_id, by) SELECT (e->>'id')::bigint, 'pgpipe'"
        " FROM jsonb_array_elements($1::jsonb) e", NULL };
    pgpipe_workers *w;
    PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
    claim_t_peer peers[2];
    memset(peers, 0, sizeof peers);
    for (int i = 0; i < 2; i++) {
        peers[i].table = "claim_t_peers";
        PGT_CHECK(pthread_create(&peers[i].tid, NULL, claim_t_peer_main, &peers[i]) == 0);
    }
    int rc = pgpipe_workers_run_until_empty(w, 60000);
    for (int i = 0; i < 2; i++)
        pthread_join(peers[i].tid, NULL);
    pgpipe_workers_stats ws;
    PGT_OK(pgpipe_workers_stats_get(w, &ws));
    pgpipe_workers_close(w);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    pgpipe_config_log(NULL, NULL);
    PGT_OK(rc);
    const pgpipe_claim_stats *t = &ws.total;
    PGT_CHECK_MSG(peers[0].deadlocks + peers[1].deadlocks == 0 && lc.deadlocks == 0,
                  "deadlocks: peers %d + %d, pgpipe %d (%s)", peers[0].deadlocks,
                  peers[1].deadlocks, lc.deadlocks, lc.last);
    PGT_CHECK_MSG(peers[0].errors + peers[1].errors == 0, "peer errors: %s%s", peers[0].err,
                  peers[1].err);
    PGT_CHECK_MSG(claim_t_identity(t) == t->claimed,
                  "claimed %lld, done %lld, retried %lld, dead %lld, fenced %lld,"
                  " released %lld, abandoned %lld", t->claimed, t->done, t->retried, t->dead,
                  t->fenced, t->released, t->abandoned);
    PGT_EQ_INT(t->retried + t->dead + t->abandoned, 0);
    PGT_EQ_INT(t->done + peers[0].done + peers[1].done, N);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_peer_out"), N);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_peer_out WHERE by = 'pgpipe'"),
               t->done);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_peers WHERE processed"), N);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table"
                                 " = 'claim_t_peers'"), 0);
    PGT_CHECK(t->done > 0 && peers[0].done + peers[1].done > 0); /* both sides worked */
    PQfinish(c);
}

/* A lease-mode completion that fails (here lock_timeout, 55P03, on a row
** another client holds) used to drop the batch from every counter; now the
** batch's failure is recorded (at the next claim when the rows are still
** locked at once): the rows are retried, and the counters add up. */
PGT_TEST(claim, lease_completion_failure_is_counted)
{
    PGconn *c = claim_t_setup("claim_t_lcf", 5);
    PGconn *other = pgt_connect();
    PQclear(PGT_EXEC(c, "SET lock_timeout = '100ms'"));
    pgpipe_claim_options o;
    claim_t_opts(&o, "claim_t_lcf");
    o.mode = PGPIPE_CLAIM_LEASE;
    o.max_attempts = 3;
    o.backoff_base_ms = 60000; /* the rows stay out of reach: one claim each */
    o.backoff_max_ms = 60000;
    pgpipe_claimer *cl;
    PGT_OK(pgpipe_claimer_open(&cl, c, &o));
    pgpipe_batch *b;
    PGT_EQ_INT(pgpipe_claim_next(cl, &b), PGPIPE_ROW);
    PGT_EQ_INT(pgpipe_batch_count(b), 5);
    PQclear(PGT_EXEC(other, "BEGIN; SELECT 1 FROM claim_t_lcf WHERE id = (SELECT max(id)"
                            " FROM claim_t_lcf) FOR UPDATE"));
    PGT_EQ_INT(pgpipe_claim_complete(cl, b), PGPIPE_DB);
    PGT_EQ_STR(pgpipe_errsqlstate(cl), "55P03");
    PQclear(PGT_EXEC(other, "ROLLBACK"));
    /* the failure is recorded before the next claim, which finds nothing */
    PGT_EQ_INT(pgpipe_claim_next(cl, &b), PGPIPE_DONE);
    pgpipe_claim_stats st;
    PGT_OK(pgpipe_claimer_stats(cl, &st));
    PGT_EQ_INT(st.claimed, 5);
    PGT_EQ_INT(st.retried, 5);
    PGT_EQ_INT(claim_t_identity(&st), st.claimed);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_lcf WHERE NOT processed"
                                 " AND attempts = 1 AND claim_token IS NULL"
                                 " AND last_error LIKE '%lock timeout%'"), 5);
    pgpipe_claimer_close(cl);
    PQfinish(other);
    PQfinish(c);
}

/* The classic trap of id-ordered queues: a loader whose transaction took a
** low id commits after rows with higher ids were claimed (and after a gap of
** ids that never commit). Whatever the claim does, the late row is claimed
** once it commits, exactly once, by one of two claimers racing on the table:
** in both modes and both orders (its received_at is its transaction's start,
** so it also sorts before rows already done). */
/* Workers whose connections default to REPEATABLE READ or SERIALIZABLE
** (default_transaction_isolation set for the database or the role): two
** workers holding batches of one queue at once both complete, in either mode,
** and no row is charged an attempt for it. Without READ COMMITTED for the
** claimer's transactions the second COMMIT failed to serialize (40001) and its
** rows were charged, then dead-lettered. */
PGT_TEST(claim, serializable_default_completes_uncharged)
{
    for (int mode = 0; mode < 2; mode++) {
        for (int iso = 0; iso < 2; iso++) {
            PGconn *c = claim_t_setup("claim_t_ser", 60);
            PGconn *w[2] = { pgt_connect(), pgt_connect() };
            pgpipe_claim_options o;
            claim_t_opts(&o, "claim_t_ser");
            o.batch_size = 5;
            o.mode = mode ? PGPIPE_CLAIM_LEASE : PGPIPE_CLAIM_TRANSACTIONAL;
            pgpipe_claimer *a[2];
            for (int k = 0; k < 2; k++) {
                PQclear(PGT_EXEC(w[k], iso ? "SET default_transaction_isolation = 'serializable'"
                                           : "SET default_transaction_isolation = 'repeatable read'"));
                PGT_OK(pgpipe_claimer_open(&a[k], w[k], &o));
            }
            for (int round = 0; round < 6; round++) {
                pgpipe_batch *b0, *b1;
                PGT_EQ_INT(pgpipe_claim_next(a[0], &b0), PGPIPE_ROW);
                PGT_EQ_INT(pgpipe_claim_next(a[1], &b1), PGPIPE_ROW);
                int rc = pgpipe_claim_complete(a[1], b1);
                PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(a[1]));
                rc = pgpipe_claim_complete(a[0], b0);
                PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(a[0]));
            }
            pgpipe_batch *none;
            PGT_EQ_INT(pgpipe_claim_next(a[0], &none), PGPIPE_DONE);
            /* a lease counts the attempt when it claims, the other mode when it fails */
            PGT_EQ_INT(claim_t_scalar(c, mode ? "SELECT count(*) FROM claim_t_ser WHERE processed "
                                                "AND attempts = 1"
                                              : "SELECT count(*) FROM claim_t_ser WHERE processed "
                                                "AND attempts = 0"), 60);
            PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM pgpipe.dead_letters WHERE "
                                         "source_table = 'claim_t_ser'"), 0);
            for (int k = 0; k < 2; k++) {
                pgpipe_claimer_close(a[k]);
                PQfinish(w[k]);
            }
            pgt_db_close(c);
        }
    }
}

PGT_TEST(claim, late_commit_below_claimed_ids_is_claimed)
{
    for (int mode = 0; mode < 2; mode++) {
        for (int order = 0; order < 2; order++) {
            PGconn *c = claim_t_setup("claim_t_late", 0);
            PGconn *c2 = pgt_connect();
            PGconn *l1 = pgt_connect(), *l2 = pgt_connect();
            pgt_db_table(c, "claim_t_late_log", "(event_id bigint PRIMARY KEY)");
            /* l1 takes the lowest id and stays open */
            PQclear(PGT_EXEC(l1, "BEGIN"));
            long long late1 = claim_t_scalar(l1, "INSERT INTO claim_t_late (source, event_type,"
                                                 " payload) VALUES ('src', 'click', '{}')"
                                                 " RETURNING id");
            /* a gap: ids taken by a load that rolls back */
            PQclear(PGT_EXEC(c, "BEGIN"));
            PQclear(PGT_EXEC(c, "INSERT INTO claim_t_late (source, event_type, payload)"
                                " SELECT 'src', 'click', '{}' FROM generate_series(1, 5)"));
            PQclear(PGT_EXEC(c, "ROLLBACK"));
            PQclear(PGT_EXEC(c, "INSERT INTO claim_t_late (source, event_type, payload)"
                                " SELECT 'src', 'click', jsonb_build_object('n', g)"
                                " FROM generate_series(1, 30) g"));
            /* l2 takes an id in the middle and stays open too */
            PQclear(PGT_EXEC(l2, "BEGIN"));
            long long late2 = claim_t_scalar(l2, "INSERT INTO claim_t_late (source, event_type,"
                                                 " payload) VALUES ('src', 'click', '{}')"
                                                 " RETURNING id");
            PQclear(PGT_EXEC(c, "INSERT INTO claim_t_late (source, event_type, payload)"
                                " SELECT 'src', 'click', jsonb_build_object('n', g)"
                                " FROM generate_series(31, 40) g"));
            PGT_CHECK(late1 < late2);
            PGT_CHECK(claim_t_scalar(c, "SELECT min(id) FROM claim_t_late") > late1 + 5);
            pgpipe_claim_options o;
            claim_t_opts(&o, "claim_t_late");
            o.batch_size = 7;
            o.mode = mode ? PGPIPE_CLAIM_LEASE : PGPIPE_CLAIM_TRANSACTIONAL;
            o.order = order ? PGPIPE_CLAIM_ORDER_ID : PGPIPE_CLAIM_ORDER_RECEIVED;
            pgpipe_claimer *a, *b;
            PGT_OK(pgpipe_claimer_open(&a, c, &o));
            PGT_OK(pgpipe_claimer_open(&b, c2, &o));
            claim_t_ctx x = { 0 };
            x.log_table = "claim_t_late_log";
            pgpipe_handler h = { claim_t_record, NULL, NULL, &x };
            /* both claimers hold a batch at once, then drain the rest in turns */
            pgpipe_batch *ba, *bb;
            PGT_EQ_INT(pgpipe_claim_next(a, &ba), PGPIPE_ROW);
            PGT_EQ_INT(pgpipe_claim_next(b, &bb), PGPIPE_ROW);
            PGT_OK(pgpipe_claim_complete(b, bb));
            PGT_OK(pgpipe_claim_complete(a, ba));
            int rc = PGPIPE_OK;
            for (int i = 0; i < 40 && rc == PGPIPE_OK; i++) {
                rc = pgpipe_claimer_run_batch(i % 2 ? b : a, &h, NULL);
                if (rc == PGPIPE_DONE)
                    rc = pgpipe_claimer_run_batch(i % 2 ? a : b, &h, NULL);
            }
            PGT_EQ_INT(rc, PGPIPE_DONE);
            PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_late WHERE processed"), 40);
            /* the late loads commit, out of id order */
            PQclear(PGT_EXEC(l2, "COMMIT"));
            PQclear(PGT_EXEC(l1, "COMMIT"));
            rc = PGPIPE_OK;
            for (int i = 0; i < 10 && rc == PGPIPE_OK; i++)
                rc = pgpipe_claimer_run_batch(i % 2 ? b : a, &h, NULL);
            PGT_EQ_INT(rc, PGPIPE_DONE);
            PGT_EQ_INT(pgpipe_claimer_run_batch(b, &h, NULL), PGPIPE_DONE);
            char sql[160];
            snprintf(sql, sizeof sql, "SELECT count(*) FROM claim_t_late WHERE processed"
                     " AND id IN (%lld, %lld)", late1, late2);
            PGT_EQ_INT(claim_t_scalar(c, sql), 2);
            PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_late WHERE NOT processed"),
                       0);
            pgpipe_claim_stats sa, sb;
            PGT_OK(pgpipe_claimer_stats(a, &sa));
            PGT_OK(pgpipe_claimer_stats(b, &sb));
            /* each of the 42 rows claimed and done once */
            PGT_EQ_INT(sa.claimed + sb.claimed, 42);
            PGT_EQ_INT(sa.done + sb.done, 42);
            if (mode == 0) /* the handler's own writes, once per row (primary key) */
                PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_late_log"),
                           42 - 14);
            else
                PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_late"
                                             " WHERE attempts <> 1"), 0);
            pgpipe_claimer_close(a);
            pgpipe_claimer_close(b);
            PQfinish(l1);
            PQfinish(l2);
            PQfinish(c2);
            PQfinish(c);
        }
    }
}

/* A handler that ends its own session on one row (pg_terminate_backend here;
** a backend crash looks the same to the client). A lost session is not
** charged to a batch of several rows (a network cut is not their doing), so
** that row used to come back for ever with attempts 0, in front of the rows
** behind it. Now the batch's rows are claimed again one at a time and the row
** whose session ends while it is processed alone is charged: it reaches the
** dead letters after max_attempts and every other row is done. */
static void claim_t_session_killer(int mode, const char *table)
{
    PGconn *c = claim_t_setup(table, 12);
    PQclear(PGT_EXEC(c, "DROP TABLE IF EXISTS claim_t_killer_out;"
                        " CREATE TABLE claim_t_killer_out (n int PRIMARY KEY)"));
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE %s SET payload = '{\"n\": 0, \"kill\": true}'"
                              " WHERE (payload->>'n')::int = 2", table);
    PQclear(PGT_EXEC(c, sql));
    pgpipe_pool *pool = claim_t_pool(3);
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    claim_t_opts(&wo.claim, table);
    wo.claim.mode = mode;
    wo.claim.lease_ms = 30000;
    wo.claim.batch_size = 5;
    wo.claim.max_attempts = 3;
    wo.threads = 1;
    wo.channel = "";
    wo.poll_ms = 20;
    pgpipe_handler h = { NULL, NULL,
        "WITH k AS (SELECT pg_terminate_backend(pg_backend_pid()) FROM"
        " jsonb_array_elements($1::jsonb) e WHERE (e->'payload'->>'kill')::bool)"
        " INSERT INTO claim_t_killer_out SELECT (e->'payload'->>'n')::int"
        " FROM jsonb_array_elements($1::jsonb) e WHERE (SELECT count(*) FROM k) >= 0", NULL };
    pgpipe_workers *w;
    PGT_OK(pgpipe_workers_open(&w, pool, &h, &wo));
    int rc = pgpipe_workers_run_until_empty(w, 60000);
    pgpipe_workers_stats ws;
    PGT_OK(pgpipe_workers_stats_get(w, &ws));
    pgpipe_workers_close(w);
    PGT_OK(pgpipe_pool_close(pool, NULL));
    PGT_CHECK_MSG(rc == PGPIPE_OK, "rc %d: claimed %lld done %lld retried %lld dead %lld", rc,
                  ws.total.claimed, ws.total.done, ws.total.retried, ws.total.dead);
    PGT_EQ_INT(ws.total.done, 11);
    PGT_EQ_INT(ws.total.dead, 1);
    PGT_EQ_INT(claim_t_scalar(c, "SELECT count(*) FROM claim_t_killer_out WHERE n > 0"), 11);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM pgpipe.dead_letters WHERE source_table = '%s'"
             " AND attempt_count = 3 AND payload->>'kill' = 'true'"
             " AND error_message LIKE 'its session ended while it was processed alone: %%'",
             table);
    PGT_EQ_INT(claim_t_scalar(c, sql), 1);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s WHERE processed", table);
    PGT_EQ_INT(claim_t_scalar(c, sql), 12);
    PQfinish(c);
}

PGT_TEST(claim, tx_handler_ending_its_session_is_charged_alone)
{
    claim_t_session_killer(PGPIPE_CLAIM_TRANSACTIONAL, "claim_t_killer_tx");
}

PGT_TEST(claim, lease_handler_ending_its_session_is_charged_alone)
{
    claim_t_session_killer(PGPIPE_CLAIM_LEASE, "claim_t_killer_lease");
}
