/*
** The SKIP LOCKED claimer and the worker pool.
**
** Claim statement (one round trip, prepared once per connection):
**   WITH c AS (SELECT id, received_at FROM T WHERE NOT processed AND due AND
**              not leased [AND source = $] [AND event_type = $]
**              ORDER BY ... LIMIT $1 FOR UPDATE SKIP LOCKED)
**   UPDATE T r SET ... FROM c WHERE r.id = c.id AND r.received_at = c.received_at
**   RETURNING ...
** Transactional mode sends BEGIN, the claim (which already marks the rows
** processed) and SAVEPOINT in one pipeline; the handler runs; failed rows are
** set back (retry or dead letter) and the transaction commits. Lease mode
** commits the claim with a token and an expiry, and completes with
** UPDATE ... WHERE id = ANY($1) AND claim_token = $2.
*/

#include "pp_pipeline.h"
#ifndef PGPIPE_OMIT_THREADS
#include <stdatomic.h>
#include <poll.h>
#include <signal.h>
#endif

struct pgpipe_batch {
    pgpipe_claimer *c;
    PGresult *res;            /* the claim's rows (owned by the top batch) */
    pgpipe_event *ev;
    int n;
    char *failed;             /* per record: 1 when failed */
    char **fmsg;              /* per record: message (owned) */
    char (*fstate)[6];        /* per record: SQLSTATE */
    pgpipe_json_doc **doc;    /* per record: parsed payload, on demand */
    char token[37];
    pp_buf json;
    int json_ok;
    int top;                  /* 1 for a claimed batch, 0 for a view */
};

/* A batch that failed as a whole after its claim, kept until its attempt is
** recorded (claim_record_lost), possibly on another connection. */
typedef struct claim_lost {
    char *ids;                /* bigint[] literal of its rows; NULL = none */
    int n;
    char token[37];
    pgpipe_error cause;       /* the failure: message and SQLSTATE */
    char server_start[48];    /* pg_postmaster_start_time of its server */
} claim_lost;

struct pgpipe_claimer;
static int claim_record_lost(struct pgpipe_claimer *c);

struct pgpipe_claimer {
    pp_handle hdr;
    PGconn *conn;
    pgpipe_claim_options o;
    char *table, *source, *event_type, *worker_id, *dlq_table; /* copies */
    char *qtable, *qdlq;      /* quoted names */
    char *sql_claim, *sql_done, *sql_fail, *sql_release, *sql_pending, *sql_exists;
    char *sql_lost, *sql_lock; /* rare or pipelined: sent unprepared */
    char *sql_isolate;        /* the claim of one row of c->isolate (unprepared) */
    char *isolate;            /* bigint[] literal: rows of a batch whose session
                                 ended without a reason, claimed one at a time
                                 so that a row that ends its session is found
                                 and charged (see claim_record_lost) */
    char nm_claim[40], nm_done[40], nm_fail[40], nm_release[40], nm_pending[40], nm_exists[40];
    char nm_handler[40];
    uint64_t handler_hash;    /* of the prepared SQL handler, 0 = none */
    int handler_unusable;     /* the server refused to prepare the SQL handler, or
                                 it cannot run at all (claim_handler_broken) */
    int handler_broken;       /* the batch in hand met a handler that cannot run:
                                 it is given back, not charged */
    int probed, replanned;    /* per batch: claim_probe_handler ran; the handler
                                 was prepared again after a 0A000 */
    char *restore_sql;        /* puts the session's planner settings back */
    char server_start[48];    /* pg_postmaster_start_time(), read at open */
    int unnamed;              /* run statements unnamed (transaction pooler) */
    int lost_handler;         /* the SQL handler's statement was found gone: the
                                 record it failed runs once more, unnamed */
    char *known;              /* names of pgpipe_claim statements the session
                                 had at open, one per line (named mode) */
    pgpipe_claim_stats st;
    pgpipe_batch *cur;
    claim_lost lost;
    pgpipe_error fatal;       /* what the server said closing the session */
    PQnoticeReceiver prev_recv; /* set while claim_notice_receiver is installed */
};

void pgpipe_claim_options_init(pgpipe_claim_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->mode = PGPIPE_CLAIM_TRANSACTIONAL;
    o->batch_size = 100;
    o->order = PGPIPE_CLAIM_ORDER_RECEIVED;
    o->lease_ms = 30000;
    o->max_attempts = 5;
    o->backoff_base_ms = 1000;
    o->backoff_max_ms = 300000;
}

/* ---- Small helpers ------------------------------------------------------ */

static void claim_stmt_name(char out[40], const char *sql)
{
    snprintf(out, 40, "pgpipe_claim_%016llx", (unsigned long long)pp_hash64(sql));
}

/* "schema.table" or "table" -> quoted identifier(s). NULL on bad input. */
static char *claim_quote_table(const char *name, pgpipe_error *err)
{
    const char *dot = strchr(name, '.');
    pp_buf b = { 0 };
    if (!*name || (dot && (dot == name || !dot[1] || strchr(dot + 1, '.')))) {
        pp_err(err, PGPIPE_MISUSE, "bad table name \"%s\": expected table or schema.table", name);
        return NULL;
    }
    int rc = pp_quote_ident(&b, name, dot ? (size_t)(dot - name) : strlen(name));
    if (rc == PGPIPE_OK && dot) {
        rc = pp_buf_putc(&b, '.');
        if (rc == PGPIPE_OK)
            rc = pp_quote_ident(&b, dot + 1, strlen(dot + 1));
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(&b, '\0');
    if (rc != PGPIPE_OK) {
        pp_buf_free(&b);
        pp_err_nomem(err);
        return NULL;
    }
    return b.data;
}

static int claim_is_ok(const PGresult *r)
{
    ExecStatusType s = PQresultStatus(r);
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* Run simple SQL; PGPIPE_OK or PGPIPE_DB with the error on the claimer. */
static int claim_exec(pgpipe_claimer *c, const char *sql)
{
    return pp_exec(c->conn, sql, 0, NULL, NULL, &c->hdr.err, sql);
}

/* Whether the session already has statement name (it kept it from an
** earlier claimer): preparing it again would fail with 42P05, which the
** server writes to its log as an ERROR each time a worker reconnects. */
static int claim_known(const pgpipe_claimer *c, const char *name)
{
    size_t n = strlen(name);
    for (const char *k = c->known; k && (k = strstr(k, name)) != NULL; k += n)
        if ((k == c->known || k[-1] == '\n') && k[n] == '\n')
            return 1;
    return 0;
}

/* The pgpipe_claim statements this session has (named mode). */
static int claim_read_known(pgpipe_claimer *c)
{
    PGresult *r;
    int rc = pp_exec(c->conn, "SELECT coalesce(string_agg(name, E'\\n') || E'\\n', '') FROM "
                     "pg_catalog.pg_prepared_statements WHERE name LIKE 'pgpipe\\_claim\\_%'",
                     0, NULL, &r, &c->hdr.err, "reading the prepared statements");
    if (rc != PGPIPE_OK)
        return rc;
    pp_free(c->known);
    c->known = pp_strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return c->known ? PGPIPE_OK : pp_err_nomem(&c->hdr.err);
}

/* A failure names the table; a missing column (42703) says what the table
** needs. */
static int claim_prepare(pgpipe_claimer *c, const char *name, const char *sql)
{
    if (c->unnamed || claim_known(c, name))
        return PGPIPE_OK;
    char ctx[200];
    snprintf(ctx, sizeof ctx, "preparing a claimer statement on %.150s", c->table);
    int rc = pp_prepare(c->conn, name, sql, &c->hdr.err, ctx);
    if (rc != PGPIPE_OK && !strcmp(c->hdr.err.sqlstate, "42703")) {
        size_t n = strlen(c->hdr.err.message);
        snprintf(c->hdr.err.message + n, sizeof c->hdr.err.message - n,
                 " (the table needs the columns of staging.raw_events, e.g. CREATE TABLE "
                 "%.150s (LIKE staging.raw_events INCLUDING ALL))", c->table);
    }
    return rc;
}

/* The text of the claimer statement called name (unnamed mode). */
static const char *claim_sql_of(const pgpipe_claimer *c, const char *name)
{
    return name == c->nm_claim ? c->sql_claim : name == c->nm_done ? c->sql_done
         : name == c->nm_fail ? c->sql_fail : name == c->nm_release ? c->sql_release
         : name == c->nm_pending ? c->sql_pending : c->sql_exists;
}

/* A named statement the session no longer has (26000): a transaction pooler
** sits in between (pgbouncer pool_mode = transaction) although the claimer
** was told otherwise. Say so once, and go on with unnamed statements. */
static void claim_stmt_lost(pgpipe_claimer *c, const char *sqlstate)
{
#ifndef PGPIPE_OMIT_THREADS
    static atomic_int said;
#else
    static int said;
#endif
    if (c->unnamed || !sqlstate || strcmp(sqlstate, "26000") != 0)
        return;
    c->unnamed = 1;
    c->handler_hash = 0;
#ifndef PGPIPE_OMIT_THREADS
    if (atomic_exchange(&said, 1) == 0)
#else
    if (!said++)
#endif
        pp_logf(PGPIPE_LOG_WARN, "claim",
                "a prepared statement of the claimer is gone from the server session "
                "(SQLSTATE 26000): a transaction-mode pooler (pgbouncer pool_mode = "
                "transaction) is in between; using unnamed statements from now on "
                "(set PGPIPE_POOLER=transaction or the pooler option to start so)");
}

/* A record failed only because the handler's statement was gone: run it
** again (unnamed now), once. */
static int claim_lost_rerun(pgpipe_claimer *c, const pgpipe_error *err)
{
    if (!c->lost_handler || strcmp(err->sqlstate, "26000") != 0)
        return 0;
    c->lost_handler = 0;
    return 1;
}

static PGresult *claim_run(pgpipe_claimer *c, const char *name, int n, const char *const *v)
{
    PGresult *r = c->unnamed
        ? PQexecParams(c->conn, claim_sql_of(c, name), n, NULL, v, NULL, NULL, 0)
        : PQexecPrepared(c->conn, name, n, v, NULL, NULL, 0);
    claim_stmt_lost(c, PQresultErrorField(r, PG_DIAG_SQLSTATE));
    return r;
}

/* pp_exec_prepared of a claimer statement, or its text unnamed. */
static int claim_exec_prepared(pgpipe_claimer *c, const char *name, int n,
                               const char *const *v, PGresult **res, pgpipe_error *err,
                               const char *context)
{
    return pp_exec_check(c->conn, claim_run(c, name, n, v), res, err, context);
}

/* Append {a,b,c} (a bigint[] literal) of the records selected by want
** (want = 1: failed ones, 0: not failed). Returns the number appended. */
static int claim_id_array(pp_buf *b, const pgpipe_batch *bt, int want, int *count)
{
    int n = 0, rc = pp_buf_putc(b, '{');
    for (int i = 0; rc == PGPIPE_OK && i < bt->n; i++) {
        if ((bt->failed[i] != 0) != (want != 0))
            continue;
        rc = pp_buf_appendf(b, n ? ",%lld" : "%lld", bt->ev[i].id);
        n++;
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_append(b, "}", 2); /* with the NUL */
    *count = n;
    return rc;
}

/* Append a text[] literal of the failed records' messages or SQLSTATEs. */
static int claim_text_array(pp_buf *b, const pgpipe_batch *bt, int states)
{
    int n = 0, rc = pp_buf_putc(b, '{');
    for (int i = 0; rc == PGPIPE_OK && i < bt->n; i++) {
        if (!bt->failed[i])
            continue;
        const char *s = states ? bt->fstate[i] : (bt->fmsg[i] ? bt->fmsg[i] : "handler failed");
        if (n++)
            rc = pp_buf_putc(b, ',');
        if (rc == PGPIPE_OK)
            rc = pp_array_elem(b, s, strlen(s));
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_append(b, "}", 2);
    return rc;
}

/* Append a boolean[] literal: per failed record, 1 when its SQLSTATE is a
** data error (class 22 or 23), which no retry can heal. */
static int claim_data_error_array(pp_buf *b, const pgpipe_batch *bt)
{
    int n = 0, rc = pp_buf_putc(b, '{');
    for (int i = 0; rc == PGPIPE_OK && i < bt->n; i++) {
        if (!bt->failed[i])
            continue;
        rc = pp_buf_appendf(b, "%s%s", n++ ? "," : "",
                            pgpipe_sqlstate_is_data_error(bt->fstate[i]) ? "t" : "f");
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_append(b, "}", 2);
    return rc;
}

/* ---- Opening ------------------------------------------------------------ */

/* The statement that records failed rows: retry with backoff or dead-letter
** ($1 ids, $2 messages, $3 SQLSTATEs, $4 max_attempts, $5 and $6 backoff,
** $7 table, $8 worker, $9 per record: the SQLSTATE says the data is wrong,
** so it is dead-lettered at once; lease mode: $10 the token). The backoff's
** exponent stops at 60 (2^1024 overflows a float8: a row past its 1025th
** attempt would fail the statement, with max_attempts above that). Transactional
** mode counts the attempt here (lease mode counted it at the claim). lost:
** the rows of a batch whose transaction failed as a whole, charged after its
** rollback, so only the rows still pending (transactional mode) are. The
** rows are locked in primary-key order before they are written. */
static int claim_fail_sql(pgpipe_claimer *c, int lease, int lost, char **out)
{
    pp_buf b = { 0 };
    const char *inc = lease ? "" : " + 1";
    const char *held = lease ? " AND claim_token = $10::uuid AND NOT processed"
                             : lost ? " AND NOT processed" : "";
    int rc = pp_buf_appendf(&b,
        "WITH f AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $9::boolean[])"
        " AS f(id, msg, st, data_error)),"
        " l AS MATERIALIZED (SELECT id, received_at FROM %s WHERE id = ANY ($1::bigint[])%s"
        " ORDER BY id FOR UPDATE),"
        " u AS (UPDATE %s r SET attempts = r.attempts%s, last_error = f.msg,"
        " first_failed_at = coalesce(r.first_failed_at, now()),"
        " processed = (r.attempts%s >= $4::int OR f.data_error),"
        " processed_at = CASE WHEN r.attempts%s >= $4::int OR f.data_error THEN now() END,"
        " next_attempt_at = CASE WHEN r.attempts%s >= $4::int OR f.data_error THEN NULL"
        " ELSE now() +"
        " least($6::float8, $5::float8 * power(2::float8, least(r.attempts%s - 1, 60)))"
        " * (0.5 + random() / 2) * interval '1 millisecond' END,"
        " claim_token = NULL, lease_expires_at = NULL"
        " FROM f, l WHERE r.id = f.id AND r.id = l.id AND r.received_at = l.received_at%s"
        " RETURNING r.id, r.received_at, r.source, r.event_type, r.payload, r.batch_id,"
        " r.attempts, r.first_failed_at, r.processed AS dead, f.msg, f.st),"
        " d AS (",
        c->qtable, held, c->qtable, inc, inc, inc, inc, inc,
        lease ? " AND r.claim_token = $10::uuid AND NOT r.processed"
              : lost ? " AND NOT r.processed" : "");
    rc |= pp_dlq_process_insert(&b, c->qdlq, "u", 7, 8);
    rc |= pp_buf_appendf(&b, ")"
        " SELECT (SELECT count(*) FROM u WHERE NOT dead), (SELECT count(*) FROM d)");
    if (rc != PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK) {
        pp_buf_free(&b);
        return PGPIPE_NOMEM;
    }
    *out = b.data;
    return PGPIPE_OK;
}

/* The claim statement: lock up to limit claimable rows matching filt in
** that order, skipping locked ones, and mark them claimed (transactional
** mode: processed, undone by a rollback; lease mode: a token and a lease,
** charged an attempt at once). */
static int claim_claim_sql(const pgpipe_claimer *c, const char *filt, const char *order,
                           int limit, char **out)
{
    int lease = c->o.mode == PGPIPE_CLAIM_LEASE;
    pp_buf b = { 0 };
    int rc = pp_buf_appendf(&b,
        "WITH c AS (SELECT id, received_at FROM %s WHERE NOT processed"
        " AND (next_attempt_at IS NULL OR next_attempt_at <= now())"
        " AND (claim_token IS NULL OR lease_expires_at <= now())%s"
        " ORDER BY %s LIMIT %d FOR UPDATE SKIP LOCKED) UPDATE %s r SET ",
        c->qtable, filt, order, limit, c->qtable);
    if (lease)
        rc |= pp_buf_appendf(&b,
            "claim_token = $1::uuid, claimed_by = $2, claimed_at = now(),"
            " lease_expires_at = now() + $3::int"
            " * interval '1 millisecond', attempts = r.attempts + 1");
    else
        rc |= pp_buf_appendf(&b, "processed = true, processed_at = now(), claimed_by = $1,"
                             " claimed_at = now()");
    rc |= pp_buf_appendf(&b,
        " FROM c WHERE r.id = c.id AND r.received_at = c.received_at"
        " RETURNING r.id, r.source, r.event_type, r.payload::text, r.received_at::text, %s",
        lease ? "r.attempts" : "r.attempts + 1");
    if (rc != PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK) {
        pp_buf_free(&b);
        return PGPIPE_NOMEM;
    }
    *out = b.data;
    return PGPIPE_OK;
}

static int claim_build_sql(pgpipe_claimer *c)
{
    const pgpipe_claim_options *o = &c->o;
    int lease = o->mode == PGPIPE_CLAIM_LEASE;
    pp_buf b = { 0 };
    int np = lease ? 3 : 1;
    char filt[128] = "";
    if (c->source) {
        np++;
        snprintf(filt + strlen(filt), sizeof filt - strlen(filt), " AND source = $%d", np);
    }
    if (c->event_type) {
        np++;
        snprintf(filt + strlen(filt), sizeof filt - strlen(filt), " AND event_type = $%d", np);
    }
    const char *order = o->order == PGPIPE_CLAIM_ORDER_ID ? "id" : "received_at, id";
    if (claim_claim_sql(c, filt, order, o->batch_size, &c->sql_claim) != PGPIPE_OK)
        goto nomem;
    /* the same claim of one row of the ids in the parameter after the others */
    snprintf(filt + strlen(filt), sizeof filt - strlen(filt), " AND id = ANY ($%d::bigint[])",
             np + 1);
    if (claim_claim_sql(c, filt, "id", 1, &c->sql_isolate) != PGPIPE_OK)
        goto nomem;

    /* lease completion; in transactional mode the claim marked the rows */
    if (pp_buf_appendf(&b,
            "WITH l AS MATERIALIZED (SELECT id, received_at FROM %s WHERE id = ANY ($1::bigint[])"
            " AND claim_token = $2::uuid AND NOT processed ORDER BY id FOR UPDATE)"
            " UPDATE %s r SET processed = true, processed_at = now(), claim_token = NULL,"
            " lease_expires_at = NULL FROM l WHERE r.id = l.id AND r.received_at = l.received_at"
            " AND r.claim_token = $2::uuid AND NOT r.processed", c->qtable, c->qtable) !=
            PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK)
        goto nomem;
    c->sql_done = b.data;
    memset(&b, 0, sizeof b);

    /* lease mode with a SQL handler: the rows still held, locked before the
    ** handler writes anything */
    if (pp_buf_appendf(&b,
            "SELECT id FROM %s WHERE id = ANY ($1::bigint[]) AND claim_token = $2::uuid"
            " AND NOT processed ORDER BY id FOR UPDATE", c->qtable) != PGPIPE_OK ||
        pp_buf_putc(&b, '\0') != PGPIPE_OK)
        goto nomem;
    c->sql_lock = b.data;
    memset(&b, 0, sizeof b);

    if (claim_fail_sql(c, lease, 0, &c->sql_fail) != PGPIPE_OK ||
        claim_fail_sql(c, lease, 1, &c->sql_lost) != PGPIPE_OK)
        goto nomem;

    if (pp_buf_appendf(&b,
            "WITH l AS MATERIALIZED (SELECT id, received_at FROM %s WHERE id = ANY ($1::bigint[])"
            " AND claim_token = $2::uuid AND NOT processed ORDER BY id FOR UPDATE)"
            " UPDATE %s r SET claim_token = NULL, lease_expires_at = NULL,"
            " attempts = greatest(r.attempts - 1, 0) FROM l WHERE r.id = l.id"
            " AND r.received_at = l.received_at AND r.claim_token = $2::uuid AND NOT r.processed",
            c->qtable, c->qtable) != PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK)
        goto nomem;
    c->sql_release = b.data;
    memset(&b, 0, sizeof b);

    np = 0;
    filt[0] = '\0';
    if (c->source)
        snprintf(filt + strlen(filt), sizeof filt - strlen(filt), " AND source = $%d", ++np);
    if (c->event_type)
        snprintf(filt + strlen(filt), sizeof filt - strlen(filt), " AND event_type = $%d", ++np);
    if (pp_buf_appendf(&b, "SELECT count(*) FROM %s WHERE NOT processed%s", c->qtable, filt) !=
            PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK)
        goto nomem;
    c->sql_pending = b.data;
    memset(&b, 0, sizeof b);
    if (pp_buf_appendf(&b, "SELECT EXISTS (SELECT 1 FROM %s WHERE NOT processed%s)", c->qtable,
                       filt) != PGPIPE_OK || pp_buf_putc(&b, '\0') != PGPIPE_OK)
        goto nomem;
    c->sql_exists = b.data;

    claim_stmt_name(c->nm_claim, c->sql_claim);
    claim_stmt_name(c->nm_done, c->sql_done);
    claim_stmt_name(c->nm_fail, c->sql_fail);
    claim_stmt_name(c->nm_release, c->sql_release);
    claim_stmt_name(c->nm_pending, c->sql_pending);
    claim_stmt_name(c->nm_exists, c->sql_exists);
    return PGPIPE_OK;
nomem:
    pp_buf_free(&b);
    return pp_err_nomem(&c->hdr.err);
}

/* The statement that restores the session's own values of the planner
** settings the claim changes for itself. */
static int claim_save_settings(pgpipe_claimer *c)
{
    PGresult *r;
    int rc = pp_exec(c->conn,
        "SELECT format('SELECT set_config(''plan_cache_mode'', %L, true),"
        " set_config(''enable_seqscan'', %L, true), set_config(''enable_bitmapscan'', %L, true),"
        " set_config(''enable_sort'', %L, true), set_config(''enable_hashjoin'', %L, true),"
        " set_config(''enable_mergejoin'', %L, true)', current_setting('plan_cache_mode'),"
        " current_setting('enable_seqscan'), current_setting('enable_bitmapscan'),"
        " current_setting('enable_sort'), current_setting('enable_hashjoin'),"
        " current_setting('enable_mergejoin')), pg_postmaster_start_time()::text", 0, NULL, &r,
        &c->hdr.err, "reading planner settings");
    if (rc != PGPIPE_OK)
        return rc;
    c->restore_sql = pp_strdup(PQgetvalue(r, 0, 0));
    snprintf(c->server_start, sizeof c->server_start, "%s", PQgetvalue(r, 0, 1));
    PQclear(r);
    return c->restore_sql ? PGPIPE_OK : pp_err_nomem(&c->hdr.err);
}

int pgpipe_claimer_open(pgpipe_claimer **out, PGconn *conn, const pgpipe_claim_options *opt)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_claimer *c = *out = pp_handle_new(sizeof *c);
    if (!c)
        return PGPIPE_NOMEM;
    c->conn = conn;
    if (opt)
        c->o = *opt;
    else
        pgpipe_claim_options_init(&c->o);
    pgpipe_claim_options *o = &c->o;
    if (!conn || PQstatus(conn) != CONNECTION_OK)
        return pp_err(&c->hdr.err, PGPIPE_MISUSE, "claimer: no open connection");
    if (o->mode != PGPIPE_CLAIM_TRANSACTIONAL && o->mode != PGPIPE_CLAIM_LEASE)
        return pp_err(&c->hdr.err, PGPIPE_MISUSE, "claimer: unknown mode %d", o->mode);
    if (o->order != PGPIPE_CLAIM_ORDER_RECEIVED && o->order != PGPIPE_CLAIM_ORDER_ID)
        return pp_err(&c->hdr.err, PGPIPE_MISUSE, "claimer: unknown order %d", o->order);
    /* "" is not the default: `.work --table "$T" --mark` with T unset must
    ** not mark every row of staging processed */
    if (o->table && !*o->table)
        return pp_err(&c->hdr.err, PGPIPE_MISUSE,
                      "claimer: the table name is empty; leave it out (NULL) for staging.raw_events");
    if (o->dlq_table && !*o->dlq_table)
        return pp_err(&c->hdr.err, PGPIPE_MISUSE, "claimer: the dead-letter table name is empty; "
                      "leave it out (NULL) for pgpipe.dead_letters");
    if (o->batch_size <= 0)
        o->batch_size = 100;
    if (o->lease_ms <= 0)
        o->lease_ms = 30000;
    if (o->max_attempts <= 0)
        o->max_attempts = 5;
    if (o->backoff_base_ms < 0)
        o->backoff_base_ms = 0;
    if (o->backoff_max_ms < o->backoff_base_ms)
        o->backoff_max_ms = o->backoff_base_ms;
    char wid[64];
    snprintf(wid, sizeof wid, "pgpipe-%ld", (long)getpid());
    c->table = pp_strdup(o->table ? o->table : "staging.raw_events");
    c->dlq_table = pp_strdup(o->dlq_table ? o->dlq_table : "pgpipe.dead_letters");
    c->worker_id = pp_strdup(o->worker_id && *o->worker_id ? o->worker_id : wid);
    c->source = o->source ? pp_strdup(o->source) : NULL;
    c->event_type = o->event_type ? pp_strdup(o->event_type) : NULL;
    if (!c->table || !c->dlq_table || !c->worker_id || (o->source && !c->source) ||
        (o->event_type && !c->event_type))
        return pp_err_nomem(&c->hdr.err);
    o->table = c->table;
    o->dlq_table = c->dlq_table;
    o->worker_id = c->worker_id;
    o->source = c->source;
    o->event_type = c->event_type;
    c->qtable = claim_quote_table(c->table, &c->hdr.err);
    if (!c->qtable)
        return c->hdr.err.code;
    c->qdlq = claim_quote_table(c->dlq_table, &c->hdr.err);
    if (!c->qdlq)
        return c->hdr.err.code;
    int rc = claim_build_sql(c);
    if (rc == PGPIPE_OK)
        rc = claim_save_settings(c);
    if (rc == PGPIPE_OK) {
        int mode = pgpipe_pooler_mode(conn, o->pooler, &c->hdr.err);
        if (mode < 0) {
            rc = c->hdr.err.code;
        } else {
            c->unnamed = mode == PGPIPE_POOLER_TRANSACTION;
            o->pooler = mode;
        }
    }
    if (rc == PGPIPE_OK && !c->unnamed)
        rc = claim_read_known(c);
    if (rc == PGPIPE_OK)
        rc = claim_prepare(c, c->nm_claim, c->sql_claim);
    if (rc == PGPIPE_OK)
        rc = claim_prepare(c, c->nm_done, c->sql_done);
    if (rc == PGPIPE_OK)
        rc = claim_prepare(c, c->nm_fail, c->sql_fail);
    if (rc == PGPIPE_OK)
        rc = claim_prepare(c, c->nm_release, c->sql_release);
    if (rc == PGPIPE_OK)
        rc = claim_prepare(c, c->nm_pending, c->sql_pending);
    if (rc == PGPIPE_OK)
        rc = claim_prepare(c, c->nm_exists, c->sql_exists);
    return rc;
}

/* ---- Batches ------------------------------------------------------------ */

static void claim_batch_free(pgpipe_batch *b)
{
    if (!b)
        return;
    if (b->top) {
        for (int i = 0; i < b->n; i++)
            pp_free(b->fmsg[i]);
        pp_free(b->fmsg);
        pp_free(b->fstate);
        if (b->doc)
            for (int i = 0; i < b->n; i++)
                pgpipe_json_doc_close(b->doc[i]);
        pp_free(b->doc);
        pp_free(b->failed);
        pp_free(b->ev);
        PQclear(b->res);
    }
    pp_buf_free(&b->json);
    pp_free(b);
}

int pgpipe_batch_count(const pgpipe_batch *b) { return b ? b->n : 0; }

const pgpipe_event *pgpipe_batch_event(const pgpipe_batch *b, int i)
{
    return b && i >= 0 && i < b->n ? &b->ev[i] : NULL;
}

PGconn *pgpipe_batch_conn(const pgpipe_batch *b)
{
    return b && b->c->o.mode == PGPIPE_CLAIM_TRANSACTIONAL ? b->c->conn : NULL;
}

const char *pgpipe_batch_token(const pgpipe_batch *b) { return b ? b->token : ""; }

int pgpipe_batch_fail(pgpipe_batch *b, int i, const char *message, const char *sqlstate)
{
    if (!b || i < 0 || i >= b->n)
        return PGPIPE_MISUSE;
    b->failed[i] = 1;
    pp_free(b->fmsg[i]);
    b->fmsg[i] = pp_strdup(message && *message ? message : "handler failed");
    snprintf(b->fstate[i], 6, "%s", sqlstate && strlen(sqlstate) == 5 ? sqlstate : "");
    return b->fmsg[i] ? PGPIPE_OK : PGPIPE_NOMEM;
}

int pgpipe_batch_failed(const pgpipe_batch *b, int i)
{
    return b && i >= 0 && i < b->n ? b->failed[i] : 0;
}

const pgpipe_json_doc *pgpipe_batch_doc(pgpipe_batch *b, int i, pgpipe_error *err)
{
    if (!b || i < 0 || i >= b->n) {
        pp_err(err, PGPIPE_MISUSE, "no record %d in the batch", i);
        return NULL;
    }
    if (!b->doc) {
        pp_err(err, PGPIPE_MISUSE, "documents are only kept by a claimed batch");
        return NULL;
    }
    if (!b->doc[i]) {
        pgpipe_json_doc *d;
        if (pgpipe_json_doc_open(&d) != PGPIPE_OK) {
            pp_err_nomem(err);
            return NULL;
        }
        if (pgpipe_json_parse(d, b->ev[i].payload, b->ev[i].payload_len) != PGPIPE_OK) {
            if (err)
                *err = *pgpipe_errinfo(d);
            pgpipe_json_doc_close(d);
            return NULL;
        }
        b->doc[i] = d;
    }
    return b->doc[i];
}

static void claim_batch_unfail(pgpipe_batch *b, int i)
{
    b->failed[i] = 0;
    pp_free(b->fmsg[i]);
    b->fmsg[i] = NULL;
    b->fstate[i][0] = '\0';
}

const char *pgpipe_batch_json(pgpipe_batch *b)
{
    if (!b)
        return NULL;
    if (b->json_ok)
        return b->json.data;
    pp_buf *j = &b->json;
    j->len = 0;
    int rc = pp_buf_reserve(j, (size_t)b->n * 160);
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(j, '[');
    int first = 1;
    for (int i = 0; rc == PGPIPE_OK && i < b->n; i++) {
        const pgpipe_event *e = &b->ev[i];
        if (b->failed[i])
            continue;
        rc |= pp_buf_appendf(j, "%s{\"id\":%lld,\"source\":", first ? "" : ",", e->id);
        first = 0;
        rc |= pp_json_str(j, e->source, strlen(e->source), 0);
        rc |= pp_buf_append(j, ",\"event_type\":", 14);
        rc |= pp_json_str(j, e->event_type, strlen(e->event_type), 0);
        rc |= pp_buf_append(j, ",\"payload\":", 11);
        rc |= pp_buf_append(j, e->payload, e->payload_len);
        rc |= pp_buf_append(j, ",\"received_at\":", 15);
        rc |= pp_json_str(j, e->received_at, strlen(e->received_at), 0);
        rc |= pp_buf_appendf(j, ",\"attempt\":%d}", e->attempt);
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_append(j, "]", 2);
    if (rc != PGPIPE_OK)
        return NULL;
    b->json_ok = 1;
    return j->data;
}

/* A view of records [lo, hi) of a batch, sharing its failure marks. */
static pgpipe_batch *claim_batch_view(pgpipe_batch *b, int lo, int hi)
{
    pgpipe_batch *v = pp_calloc(1, sizeof *v);
    if (!v)
        return NULL;
    v->c = b->c;
    v->ev = b->ev + lo;
    v->n = hi - lo;
    v->failed = b->failed + lo;
    v->fmsg = b->fmsg + lo;
    v->fstate = b->fstate + lo;
    memcpy(v->token, b->token, sizeof v->token);
    return v;
}

/* Collect the results of one pipelined query: the last result of it (or
** NULL). */
static PGresult *claim_pipe_take(PGconn *conn)
{
    PGresult *last = NULL, *r;
    while ((r = PQgetResult(conn)) != NULL) {
        PQclear(last);
        last = r;
    }
    return last;
}

/* The claim in one round trip (pipeline): BEGIN; planner settings for the
** claim only (see below); the claim; the session's settings back; then
** SAVEPOINT (transactional mode: the transaction stays open for the handler)
** or COMMIT (lease mode). Returns the claim's result or NULL with the error
** set (and no transaction left open).
**
** Why the planner settings: the pending set changes size all the time. A
** plan made while the table was small (a sort of a sequential scan) is a
** disaster once it holds a million rows, and planning every claim afresh
** costs about as much as the claim. With sequential scans, bitmap scans,
** sorts, hash and merge joins ruled out (and the batch size a literal), the
** one plan left is the ordered scan of the partial index on unprocessed rows
** joined by primary key, which is right at any size: it is planned once
** (force_generic_plan) and kept. */
#define CLAIM_PLAN_SQL \
    "SELECT set_config('plan_cache_mode', 'force_generic_plan', true)," \
    " set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true)," \
    " set_config('enable_sort', 'off', true), set_config('enable_hashjoin', 'off', true)," \
    " set_config('enable_mergejoin', 'off', true)"

/* The claim's transaction is PP_BEGIN's (READ COMMITTED): under REPEATABLE READ
** a row changed since the snapshot fails the claim (40001) instead of being
** skipped or re-checked, and under SERIALIZABLE two workers completing disjoint
** batches of one queue fail each other's COMMIT. */
static PGresult *claim_pipe_claim(pgpipe_claimer *c, const char *sql, int n,
                                  const char *const *v, int lease)
{
    PGconn *conn = c->conn;
    if (!sql && c->unnamed)
        sql = c->sql_claim;
    if (!PQenterPipelineMode(conn)) {
        pp_err_pq(&c->hdr.err, conn, NULL, "entering pipeline mode");
        return NULL;
    }
    int ok = PQsendQueryParams(conn, PP_BEGIN, 0, NULL, NULL, NULL, NULL, 0) &&
             PQsendQueryParams(conn, CLAIM_PLAN_SQL, 0, NULL, NULL, NULL, NULL, 0) &&
             (sql ? PQsendQueryParams(conn, sql, n, NULL, v, NULL, NULL, 0)
                  : PQsendQueryPrepared(conn, c->nm_claim, n, v, NULL, NULL, 0)) &&
             PQsendQueryParams(conn, c->restore_sql, 0, NULL, NULL, NULL, NULL, 0) &&
             PQsendQueryParams(conn, lease ? "COMMIT" : "SAVEPOINT pgpipe_claim", 0, NULL, NULL,
                               NULL, NULL, 0) &&
             PQpipelineSync(conn);
    if (!ok) {
        pp_err_pq(&c->hdr.err, conn, NULL, "sending the claim");
        PQexitPipelineMode(conn);
        return NULL;
    }
    PGresult *res[5];
    for (int i = 0; i < 5; i++)
        res[i] = claim_pipe_take(conn);
    PGresult *sync = PQgetResult(conn); /* PGRES_PIPELINE_SYNC */
    PQclear(sync);
    PQexitPipelineMode(conn);
    PGresult *bad = NULL;
    int failed = 0;
    for (int i = 0; i < 5 && !failed; i++)
        if (!res[i] || !claim_is_ok(res[i])) {
            failed = 1;
            bad = res[i];
        }
    if (failed) {
        pp_err_pq(&c->hdr.err, conn, bad, "claiming a batch");
        claim_stmt_lost(c, c->hdr.err.sqlstate);
        for (int i = 0; i < 5; i++)
            PQclear(res[i]);
        pp_rollback_open(conn);
        return NULL;
    }
    PQclear(res[0]);
    PQclear(res[1]);
    PQclear(res[3]);
    PQclear(res[4]);
    return res[2];
}

int pgpipe_claim_next(pgpipe_claimer *c, pgpipe_batch **out)
{
    if (!c || !out)
        return PGPIPE_MISUSE;
    *out = NULL;
    if (c->cur)
        return pp_err(&c->hdr.err, PGPIPE_MISUSE, "claimer: the previous batch is not finished");
    /* a failed batch whose attempt could not be recorded yet goes first */
    if (c->lost.ids && claim_record_lost(c) != PGPIPE_OK)
        return c->hdr.err.code;
    int lease = c->o.mode == PGPIPE_CLAIM_LEASE;
    char lms[16], token[37] = "";
    snprintf(lms, sizeof lms, "%d", c->o.lease_ms);
    const char *v[7];
    int n = 0;
    if (lease) {
        if (pp_uuid_v4(token) != PGPIPE_OK)
            return pp_err(&c->hdr.err, PGPIPE_IO, "claimer: cannot read /dev/urandom: %s",
                          strerror(errno));
        v[n++] = token;
        v[n++] = c->worker_id;
        v[n++] = lms;
    } else {
        v[n++] = c->worker_id;
    }
    if (c->source)
        v[n++] = c->source;
    if (c->event_type)
        v[n++] = c->event_type;
    PGresult *r = NULL;
    if (c->isolate) {
        /* rows of a batch that lost its session, one at a time, until none
        ** of them is claimable any more */
        v[n] = c->isolate;
        r = claim_pipe_claim(c, c->sql_isolate, n + 1, v, lease);
        if (!r)
            return c->hdr.err.code ? c->hdr.err.code : PGPIPE_DB;
        if (PQntuples(r) == 0) {
            PQclear(r);
            r = NULL;
            pp_free(c->isolate);
            c->isolate = NULL;
            if (!lease && claim_exec(c, "COMMIT") != PGPIPE_OK)
                return c->hdr.err.code;
        }
    }
    if (!r)
        r = claim_pipe_claim(c, NULL, n, v, lease);
    if (!r)
        return c->hdr.err.code ? c->hdr.err.code : PGPIPE_DB;
    int rows = PQntuples(r);
    if (rows == 0) {
        PQclear(r);
        if (!lease)
            return claim_exec(c, "COMMIT") == PGPIPE_OK ? PGPIPE_DONE : c->hdr.err.code;
        return PGPIPE_DONE;
    }
    pgpipe_batch *b = pp_calloc(1, sizeof *b);
    if (b) {
        b->ev = pp_calloc((size_t)rows, sizeof *b->ev);
        b->failed = pp_calloc((size_t)rows, 1);
        b->fmsg = pp_calloc((size_t)rows, sizeof *b->fmsg);
        b->fstate = pp_calloc((size_t)rows, sizeof *b->fstate);
        b->doc = pp_calloc((size_t)rows, sizeof *b->doc);
    }
    if (!b || !b->ev || !b->failed || !b->fmsg || !b->fstate || !b->doc) {
        if (b) {
            pp_free(b->doc);
            pp_free(b->ev);
            pp_free(b->failed);
            pp_free(b->fmsg);
            pp_free(b->fstate);
            pp_free(b);
        }
        PQclear(r);
        if (!lease)
            pp_rollback_open(c->conn);
        return pp_err_nomem(&c->hdr.err);
    }
    b->c = c;
    b->res = r;
    b->n = rows;
    b->top = 1;
    memcpy(b->token, token, sizeof b->token);
    for (int i = 0; i < rows; i++) {
        pgpipe_event *e = &b->ev[i];
        e->id = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        e->source = PQgetvalue(r, i, 1);
        e->event_type = PQgetvalue(r, i, 2);
        e->payload = PQgetvalue(r, i, 3);
        e->payload_len = (size_t)PQgetlength(r, i, 3);
        e->received_at = PQgetvalue(r, i, 4);
        e->attempt = atoi(PQgetvalue(r, i, 5));
        /* lease mode: a row handed out max_attempts times already (each
        ** lease expired: its worker died or stalled) goes to the dead
        ** letters instead of crashing another worker */
        if (lease && e->attempt > c->o.max_attempts) {
            pgpipe_batch_fail(b, i, "lease expired on every attempt (worker crashed or stalled)",
                              NULL);
            b->failed[i] = 2; /* not the handler's: bisection keeps it */
        }
    }
    c->st.batches++;
    c->st.claimed += rows;
    c->cur = b;
    *out = b;
    return PGPIPE_ROW;
}

/* Record the failed rows: retry with backoff or dead-letter. */
static int claim_mark_failed(pgpipe_claimer *c, pgpipe_batch *b, int nfailed,
                             long long *retried, long long *dead)
{
    *retried = *dead = 0;
    if (nfailed == 0)
        return PGPIPE_OK;
    pp_buf ids = { 0 }, msgs = { 0 }, sts = { 0 }, dat = { 0 };
    int k, rc = claim_id_array(&ids, b, 1, &k);
    if (rc == PGPIPE_OK)
        rc = claim_text_array(&msgs, b, 0);
    if (rc == PGPIPE_OK)
        rc = claim_text_array(&sts, b, 1);
    if (rc == PGPIPE_OK)
        rc = claim_data_error_array(&dat, b);
    if (rc != PGPIPE_OK) {
        pp_buf_free(&ids);
        pp_buf_free(&msgs);
        pp_buf_free(&sts);
        pp_buf_free(&dat);
        return pp_err_nomem(&c->hdr.err);
    }
    char ma[16], bb[24], bm[24];
    snprintf(ma, sizeof ma, "%d", c->o.max_attempts);
    snprintf(bb, sizeof bb, "%d", c->o.backoff_base_ms);
    snprintf(bm, sizeof bm, "%d", c->o.backoff_max_ms);
    const char *v[10] = { ids.data, msgs.data, sts.data, ma, bb, bm, c->table, c->worker_id,
                          dat.data, b->token };
    PGresult *r = claim_run(c, c->nm_fail, c->o.mode == PGPIPE_CLAIM_LEASE ? 10 : 9, v);
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
        *retried = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        *dead = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    } else {
        rc = pp_err_pq(&c->hdr.err, c->conn, r, "recording failed records");
    }
    PQclear(r);
    pp_buf_free(&ids);
    pp_buf_free(&msgs);
    pp_buf_free(&sts);
    pp_buf_free(&dat);
    return rc;
}

static int claim_nfailed(const pgpipe_batch *b)
{
    int n = 0;
    for (int i = 0; i < b->n; i++)
        n += b->failed[i] != 0;
    return n;
}

/* ---- Batches that fail as a whole --------------------------------------- */

/* 1 when the connection is gone. Reads what the server sent while the
** handler ran (one non-blocking read, no round trip): a session the server
** ended is seen here, with its FATAL message, instead of as a write into a
** closed socket, which loses the message. */
static int claim_conn_gone(pgpipe_claimer *c)
{
    if (PQstatus(c->conn) == CONNECTION_OK)
        (void)PQconsumeInput(c->conn);
    return PQstatus(c->conn) != CONNECTION_OK;
}

/* Append a literal array of n copies of s. */
static int claim_repeat_array(pp_buf *b, const char *s, int n)
{
    int rc = pp_buf_putc(b, '{');
    for (int i = 0; rc == PGPIPE_OK && i < n; i++) {
        if (i)
            rc = pp_buf_putc(b, ',');
        if (rc == PGPIPE_OK)
            rc = pp_array_elem(b, s, strlen(s));
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_append(b, "}", 2);
    return rc;
}

/* Charge the kept batch (c->lost) one attempt on c's connection, with its
** failure as last_error: retried with backoff, or dead-lettered after
** max_attempts (at once for a data error). Rows no longer pending (done by
** another worker meanwhile, or reclaimed in lease mode) are counted as
** abandoned. On failure the batch stays kept.
**
** Not every failure is charged. A server restart (or a failover: another
** server), a prepared statement gone behind a pooler (26000) and a cancel
** (57014: Ctrl-C; a handler's own timeout fails its records, not the batch)
** are not the rows' doing: their rows are pending again at once
** (transactional mode) or given back now (lease mode: released). A session
** that ended without a reason from the server (a network cut, a proxy, a
** crashed backend: class 08), by pg_terminate_backend (57P01) or with the
** crash of another session (57P02, 57P03) may be the rows' doing, or not: a
** handler can end its own session on one poisonous row. So a batch of
** several rows is not charged, and its rows are claimed again one at a
** time (c->isolate); a row whose session ends while it is processed alone
** is charged, so it reaches the dead letters after max_attempts instead of
** blocking the rows behind it for ever. */
static int claim_record_lost(pgpipe_claimer *c)
{
    claim_lost *l = &c->lost;
    if (!l->ids)
        return PGPIPE_OK;
    const char *st = l->cause.sqlstate;
    int restarted = strcmp(l->server_start, c->server_start) != 0;
    int session_ended = !st[0] || strncmp(st, "08", 2) == 0 || strcmp(st, "57P01") == 0 ||
                        strcmp(st, "57P02") == 0 || strcmp(st, "57P03") == 0;
    int isolate = session_ended && !restarted && l->n > 1;
    if (restarted || isolate || strcmp(st, "26000") == 0 || strcmp(st, "57014") == 0) {
        long long back = 0;
        if (c->o.mode == PGPIPE_CLAIM_LEASE) {
            const char *rv[2] = { l->ids, l->token };
            PGresult *r;
            if (pp_exec(c->conn, c->sql_release, 2, rv, &r, &c->hdr.err,
                        "releasing a failed batch") != PGPIPE_OK)
                return c->hdr.err.code;
            back = strtoll(PQcmdTuples(r), NULL, 10);
            PQclear(r);
        }
        c->st.released += back;
        c->st.abandoned += l->n - back;
        pp_logf(PGPIPE_LOG_WARN, "claim", "%s: the %d rows of the failed batch are not charged "
                "an attempt: %s%s (cause: %s)", c->worker_id, l->n,
                restarted ? "the server restarted"
                : strcmp(st, "26000") == 0 ? "its statement was gone from the session"
                : strcmp(st, "57014") == 0 ? "it was cancelled"
                : "its session ended",
                isolate ? "; they are claimed one at a time next, and a row whose session "
                          "ends while it is processed alone is charged" : "",
                l->cause.message[0] ? l->cause.message : "batch failed");
        if (isolate) {
            pp_free(c->isolate);
            c->isolate = l->ids;
        } else {
            pp_free(l->ids);
        }
        memset(l, 0, sizeof *l);
        return PGPIPE_OK;
    }
    char alone[sizeof l->cause.message + 64];
    snprintf(alone, sizeof alone, "%s%s", session_ended && !restarted
             ? "its session ended while it was processed alone: " : "",
             l->cause.message[0] ? l->cause.message : "batch failed");
    const char *msg = alone;
    pp_buf msgs = { 0 }, sts = { 0 }, dat = { 0 };
    int rc = claim_repeat_array(&msgs, msg, l->n);
    if (rc == PGPIPE_OK)
        rc = claim_repeat_array(&sts, l->cause.sqlstate, l->n);
    if (rc == PGPIPE_OK)
        rc = claim_repeat_array(&dat, pgpipe_sqlstate_is_data_error(l->cause.sqlstate) ? "t"
                                                                                       : "f", l->n);
    if (rc != PGPIPE_OK) {
        pp_buf_free(&msgs);
        pp_buf_free(&sts);
        pp_buf_free(&dat);
        return pp_err_nomem(&c->hdr.err);
    }
    char ma[16], bb[24], bm[24];
    snprintf(ma, sizeof ma, "%d", c->o.max_attempts);
    snprintf(bb, sizeof bb, "%d", c->o.backoff_base_ms);
    snprintf(bm, sizeof bm, "%d", c->o.backoff_max_ms);
    const char *v[10] = { l->ids, msgs.data, sts.data, ma, bb, bm, c->table, c->worker_id,
                          dat.data, l->token };
    PGresult *r;
    rc = pp_exec(c->conn, c->sql_lost, c->o.mode == PGPIPE_CLAIM_LEASE ? 10 : 9, v, &r,
                 &c->hdr.err, "recording the attempt of a failed batch");
    pp_buf_free(&msgs);
    pp_buf_free(&sts);
    pp_buf_free(&dat);
    if (rc != PGPIPE_OK)
        return rc;
    long long retried = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    long long dead = strtoll(PQgetvalue(r, 0, 1), NULL, 10);
    PQclear(r);
    c->st.retried += retried;
    c->st.dead += dead;
    c->st.abandoned += l->n - retried - dead;
    pp_logf(PGPIPE_LOG_WARN, "claim",
            "%s: attempt recorded for the %d rows of the failed batch: %lld to retry, "
            "%lld dead-lettered, %lld no longer pending (cause: %s%s%s)", c->worker_id, l->n,
            retried, dead, l->n - retried - dead, msg, l->cause.sqlstate[0] ? ", SQLSTATE " : "",
            l->cause.sqlstate);
    pp_free(l->ids);
    memset(l, 0, sizeof *l);
    return PGPIPE_OK;
}

/* A claimed batch that cannot be finished (its connection was lost, its
** transaction or its completion failed), with the failure in c->hdr.err:
** roll back what is open, keep the batch's rows (only the failed ones when
** failed_only), and charge them an attempt at once if the connection still
** works, else by the worker on its next connection. Frees the batch;
** c->hdr.err keeps the original failure. */
static void claim_batch_lost(pgpipe_claimer *c, pgpipe_batch *b, int failed_only)
{
    pgpipe_error cause = c->hdr.err;
    int alive = PQstatus(c->conn) == CONNECTION_OK;
    if (!alive && c->fatal.message[0]) { /* the server's own reason */
        pp_err(&cause, PGPIPE_DB, "connection lost: %s", c->fatal.message);
        memcpy(cause.sqlstate, c->fatal.sqlstate, sizeof cause.sqlstate);
    }
    pgpipe_error_clear(&c->fatal);
    c->cur = NULL;
    if (alive)
        pp_rollback_open(c->conn);
    if (c->lost.ids) { /* not recorded before: cannot happen on a live connection */
        c->st.abandoned += c->lost.n;
        pp_free(c->lost.ids);
        memset(&c->lost, 0, sizeof c->lost);
    }
    pp_buf ids = { 0 };
    int n = 0, rc = pp_buf_putc(&ids, '{');
    for (int i = 0; rc == PGPIPE_OK && i < b->n; i++) {
        if (failed_only && !b->failed[i])
            continue;
        rc = pp_buf_appendf(&ids, n ? ",%lld" : "%lld", b->ev[i].id);
        n++;
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_append(&ids, "}", 2);
    if (rc != PGPIPE_OK) {
        pp_buf_free(&ids);
        c->st.abandoned += n;
    } else if (n > 0) {
        c->lost.ids = ids.data;
        c->lost.n = n;
        memcpy(c->lost.token, b->token, sizeof c->lost.token);
        memcpy(c->lost.server_start, c->server_start, sizeof c->lost.server_start);
        c->lost.cause = cause;
    } else {
        pp_buf_free(&ids);
    }
    char st[24] = "";
    if (cause.sqlstate[0])
        snprintf(st, sizeof st, " (SQLSTATE %s)", cause.sqlstate);
    pp_logf(PGPIPE_LOG_WARN, "claim", "%s: a batch of %d rows failed as a whole: %s%s; %s",
            c->worker_id, b->n, cause.message, st,
            !n ? "nothing to retry" : alive ? "recording an attempt"
                                            : "its attempt is recorded on the next connection");
    claim_batch_free(b);
    if (alive && c->lost.ids)
        claim_record_lost(c);
    c->hdr.err = cause;
}

/* Lease completion of the rows not marked failed, inside or outside a
** transaction; *accepted receives the rows whose token still matched. */
static int claim_lease_done(pgpipe_claimer *c, pgpipe_batch *b, int *want, long long *accepted)
{
    pp_buf ids = { 0 };
    *accepted = 0;
    if (claim_id_array(&ids, b, 0, want) != PGPIPE_OK) {
        pp_buf_free(&ids);
        return pp_err_nomem(&c->hdr.err);
    }
    int rc = PGPIPE_OK;
    if (*want > 0) {
        const char *v[2] = { ids.data, b->token };
        PGresult *r = NULL;
        /* alone in its transaction under a default_transaction_isolation of
        ** repeatable read or serializable, the UPDATE may fail to serialize
        ** (40001): it changed nothing, so it is tried again, not charged */
        for (int tries = 0;; tries++) {
            rc = claim_exec_prepared(c, c->nm_done, 2, v, &r, &c->hdr.err, "completing a batch");
            if (rc == PGPIPE_OK || tries == 4 || strcmp(c->hdr.err.sqlstate, "40001") != 0 ||
                PQtransactionStatus(c->conn) != PQTRANS_IDLE)
                break;
            PQclear(r);
            r = NULL;
        }
        if (rc == PGPIPE_OK)
            *accepted = strtoll(PQcmdTuples(r), NULL, 10);
        PQclear(r);
    }
    pp_buf_free(&ids);
    return rc;
}

int pgpipe_claim_complete(pgpipe_claimer *c, pgpipe_batch *b)
{
    if (!c || !b || b != c->cur)
        return c ? pp_err(&c->hdr.err, PGPIPE_MISUSE, "claimer: not the current batch")
                 : PGPIPE_MISUSE;
    c->cur = NULL;
    int nfailed = claim_nfailed(b), rc;
    long long retried = 0, dead = 0;
    if (c->o.mode == PGPIPE_CLAIM_TRANSACTIONAL) {
        rc = claim_conn_gone(c) ? pp_err_pq(&c->hdr.err, c->conn, NULL, "completing a batch")
                                : claim_mark_failed(c, b, nfailed, &retried, &dead);
        if (rc == PGPIPE_OK)
            rc = claim_exec(c, "COMMIT");
        if (rc != PGPIPE_OK) {
            /* the transaction is gone with the attempts it counted */
            claim_batch_lost(c, b, 0);
            return rc;
        }
        c->st.done += b->n - nfailed;
        c->st.retried += retried;
        c->st.dead += dead;
        claim_batch_free(b);
        return rc;
    }
    int want = 0;
    long long accepted = 0;
    rc = claim_lease_done(c, b, &want, &accepted);
    if (rc != PGPIPE_OK) {
        claim_batch_lost(c, b, 0);
        return rc;
    }
    c->st.done += accepted;
    c->st.fenced += want - accepted;
    rc = claim_mark_failed(c, b, nfailed, &retried, &dead);
    if (rc != PGPIPE_OK) {
        claim_batch_lost(c, b, 1);
        return rc;
    }
    {
        long long refused = (want - accepted) + (nfailed - retried - dead);
        c->st.retried += retried;
        c->st.dead += dead;
        c->st.fenced += nfailed - retried - dead;
        if (refused > 0) {
            pp_logf(PGPIPE_LOG_WARN, "claim",
                    "lease lost: %lld of %d rows were taken by another worker or client; "
                    "their completion was refused", refused, b->n);
            if (refused == b->n)
                rc = pp_err(&c->hdr.err, PGPIPE_BUSY,
                            "lease lost: every row of the batch was reclaimed (token %s)",
                            b->token);
        }
    }
    claim_batch_free(b);
    return rc;
}

int pgpipe_claim_release(pgpipe_claimer *c, pgpipe_batch *b)
{
    if (!c || !b || b != c->cur)
        return c ? pp_err(&c->hdr.err, PGPIPE_MISUSE, "claimer: not the current batch")
                 : PGPIPE_MISUSE;
    c->cur = NULL;
    int rc = PGPIPE_OK;
    if (c->o.mode == PGPIPE_CLAIM_TRANSACTIONAL) {
        if (PQstatus(c->conn) == CONNECTION_OK &&
            PQtransactionStatus(c->conn) != PQTRANS_IDLE)
            rc = claim_exec(c, "ROLLBACK");
    } else {
        pp_buf ids = { 0 };
        int k;
        for (int i = 0; i < b->n; i++)
            b->failed[i] = 0;
        if (claim_id_array(&ids, b, 0, &k) != PGPIPE_OK) {
            rc = pp_err_nomem(&c->hdr.err);
        } else {
            const char *v[2] = { ids.data, b->token };
            rc = claim_exec_prepared(c, c->nm_release, 2, v, NULL, &c->hdr.err,
                                  "releasing a batch");
        }
        pp_buf_free(&ids);
    }
    /* a transaction that failed to roll back is rolled back by the server:
    ** its rows are back as well */
    if (rc == PGPIPE_OK || c->o.mode == PGPIPE_CLAIM_TRANSACTIONAL)
        c->st.released += b->n;
    else
        c->st.abandoned += b->n; /* left to their lease */
    claim_batch_free(b);
    return rc;
}

/* ---- Running a handler -------------------------------------------------- */

/* Lease mode with a SQL handler, in one round trip: BEGIN, lock the batch's
** rows still held (token, not processed) in primary-key order, SAVEPOINT.
** The rows are locked before the handler writes, as the plain SKIP LOCKED
** pattern does (lock, then write), so the two cannot deadlock. Rows no longer
** held (reclaimed, or processed by another client) are marked failed with
** the mark 3: the handler does not see them and their completion is refused
** (stats.fenced). *held: the rows locked. On failure no transaction is left
** open. */
static int claim_lease_lock(pgpipe_claimer *c, pgpipe_batch *b, int *held)
{
    PGconn *conn = c->conn;
    pp_buf ids = { 0 };
    int k;
    *held = 0;
    if (claim_id_array(&ids, b, 0, &k) != PGPIPE_OK) {
        pp_buf_free(&ids);
        return pp_err_nomem(&c->hdr.err);
    }
    const char *v[2] = { ids.data, b->token };
    if (!PQenterPipelineMode(conn)) {
        pp_buf_free(&ids);
        return pp_err_pq(&c->hdr.err, conn, NULL, "entering pipeline mode");
    }
    int ok = PQsendQueryParams(conn, PP_BEGIN, 0, NULL, NULL, NULL, NULL, 0) &&
             PQsendQueryParams(conn, c->sql_lock, 2, NULL, v, NULL, NULL, 0) &&
             PQsendQueryParams(conn, "SAVEPOINT pgpipe_claim", 0, NULL, NULL, NULL, NULL, 0) &&
             PQpipelineSync(conn);
    pp_buf_free(&ids);
    if (!ok) {
        pp_err_pq(&c->hdr.err, conn, NULL, "locking the batch");
        PQexitPipelineMode(conn);
        return PGPIPE_DB;
    }
    PGresult *res[3];
    for (int i = 0; i < 3; i++)
        res[i] = claim_pipe_take(conn);
    PQclear(PQgetResult(conn)); /* PGRES_PIPELINE_SYNC */
    PQexitPipelineMode(conn);
    int rc = PGPIPE_OK;
    for (int i = 0; i < 3 && rc == PGPIPE_OK; i++)
        if (!res[i] || !claim_is_ok(res[i]))
            rc = pp_err_pq(&c->hdr.err, conn, res[i], "locking the batch");
    long long *got = NULL;
    int rows = rc == PGPIPE_OK ? PQntuples(res[1]) : 0;
    if (rc == PGPIPE_OK && rows > 0 && !(got = pp_calloc((size_t)rows, sizeof *got)))
        rc = pp_err_nomem(&c->hdr.err);
    for (int j = 0; j < rows && got; j++)
        got[j] = strtoll(PQgetvalue(res[1], j, 0), NULL, 10); /* ascending */
    if (rc == PGPIPE_OK) {
        for (int i = 0; i < b->n; i++) {
            if (b->failed[i])
                continue;
            int lo = 0, hi = rows;
            while (lo < hi) {
                int mid = lo + (hi - lo) / 2;
                if (got[mid] < b->ev[i].id)
                    lo = mid + 1;
                else
                    hi = mid;
            }
            if (lo < rows && got[lo] == b->ev[i].id) {
                (*held)++;
            } else {
                if (pgpipe_batch_fail(b, i, "lease lost: taken by another worker or client",
                                      NULL) != PGPIPE_OK)
                    rc = pp_err_nomem(&c->hdr.err);
                b->failed[i] = 3;
            }
        }
    }
    pp_free(got);
    for (int i = 0; i < 3; i++)
        PQclear(res[i]);
    if (rc != PGPIPE_OK)
        pp_rollback_open(conn);
    return rc;
}

static int claim_prepare_handler(pgpipe_claimer *c, const char *sql)
{
    if (c->unnamed) /* claim_call_batch sends the text itself */
        return PGPIPE_OK;
    uint64_t h = pp_hash64(sql);
    if (h == c->handler_hash && h)
        return PGPIPE_OK;
    char name[40];
    snprintf(name, sizeof name, "pgpipe_claim_h%016llx", (unsigned long long)h);
    int known = claim_known(c, name);
    int rc = known ? PGPIPE_OK
           : pp_prepare(c->conn, name, sql, &c->hdr.err, "preparing the SQL handler");
    if (rc == PGPIPE_OK && !known) {
        /* exactly one parameter, $1: a "$1" only in a comment or a string
        ** passed pgpipe_workers_open's check, and every batch would then
        ** fail on the server (bind message supplies 1 parameters ...),
        ** charged to its rows. Where the describe fails (a pooler that
        ** keeps prepared statements itself may not answer it: 26000), the
        ** check is left out and the statement's execution tells. */
        PGresult *d = PQdescribePrepared(c->conn, name);
        if (PQresultStatus(d) == PGRES_COMMAND_OK && PQnparams(d) != 1) {
            rc = pp_err(&c->hdr.err, PGPIPE_MISUSE,
                        "the SQL handler takes %d parameters; it must take exactly one, $1: "
                        "the claimed rows as a JSONB array (a $1 in a comment or a string is "
                        "no parameter)", PQnparams(d));
            char dealloc[64];
            snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", name);
            PQclear(PQexec(c->conn, dealloc));
        }
        PQclear(d);
    }
    /* a syntax error or an unknown table does not heal by retrying */
    c->handler_unusable = rc != PGPIPE_OK && PQstatus(c->conn) == CONNECTION_OK &&
                          !pgpipe_sqlstate_is_transient(c->hdr.err.sqlstate);
    if (rc == PGPIPE_OK) {
        memcpy(c->nm_handler, name, sizeof name);
        c->handler_hash = h;
    }
    return rc;
}

/* A SQL handler that returns rows with a column named failed_id (and
** optionally error and sqlstate) refuses those records itself: they are
** marked failed with that message, the statement's other writes stand, and
** no bisection is needed. An id that is not in the batch fails the batch. */
static int claim_sql_refusals(pgpipe_batch *v, const PGresult *r, pgpipe_error *err)
{
    int fid = PQfnumber(r, "failed_id"), fmsg = PQfnumber(r, "error");
    int fst = PQfnumber(r, "sqlstate");
    for (int row = 0; row < PQntuples(r); row++) {
        if (PQgetisnull(r, row, fid))
            continue;
        const char *txt = PQgetvalue(r, row, fid);
        char *end;
        errno = 0;
        long long id = strtoll(txt, &end, 10);
        int i = -1;
        if (errno == 0 && end != txt && !*end)
            for (i = v->n - 1; i >= 0 && v->ev[i].id != id; i--)
                ;
        if (i < 0)
            return pp_err(err, PGPIPE_MISUSE,
                          "the SQL handler returned failed_id %s, which is not a record "
                          "of the batch", txt);
        const char *msg = fmsg >= 0 && !PQgetisnull(r, row, fmsg) ? PQgetvalue(r, row, fmsg)
                                                                   : "refused by the SQL handler";
        const char *st = fst >= 0 && !PQgetisnull(r, row, fst) ? PQgetvalue(r, row, fst) : NULL;
        if (pgpipe_batch_fail(v, i, msg, st) != PGPIPE_OK)
            return pp_err_nomem(err);
    }
    return PGPIPE_OK;
}

/* Run the batch or SQL handler once on view v. Returns PGPIPE_OK or the
** failure (message into *err). */
static int claim_call_batch(pgpipe_claimer *c, const pgpipe_handler *h, pgpipe_batch *v,
                            pgpipe_error *err)
{
    pgpipe_error_clear(err);
    if (h->sql) {
        const char *j = pgpipe_batch_json(v);
        if (!j)
            return pp_err_nomem(err);
        PGresult *r;
        int rc = c->unnamed ? pp_exec(c->conn, h->sql, 1, &j, &r, err, NULL)
                            : pp_exec_prepared(c->conn, c->nm_handler, 1, &j, &r, err, NULL);
        /* gone (26000): not the records' fault; the bisection reruns them
        ** unnamed, so none is failed for it */
        if (!c->unnamed) {
            claim_stmt_lost(c, err->sqlstate);
            c->lost_handler = c->unnamed;
        }
        if (rc == PGPIPE_OK && PQresultStatus(r) == PGRES_TUPLES_OK &&
            PQfnumber(r, "failed_id") >= 0)
            rc = claim_sql_refusals(v, r, err);
        PQclear(r);
        return rc;
    }
    int rc = h->batch(h->ud, v, err);
    PGconn *tx = pgpipe_batch_conn(v);
    if (rc == PGPIPE_OK && tx && PQtransactionStatus(tx) == PQTRANS_INERROR)
        rc = pp_err(err, PGPIPE_DB, "the handler left its transaction failed: %s",
                    PQerrorMessage(tx));
    if (rc != PGPIPE_OK && !err->message[0])
        pp_err(err, rc, "batch handler failed: %s", pgpipe_errstr(rc));
    return rc;
}

/* SQLSTATEs that say the handler itself cannot run, whatever the rows are:
** class 42 (syntax error or access rule violation: 42883 undefined function,
** 42501 insufficient privilege, 42P01 undefined table, 42703 undefined column,
** 42704 undefined object, 42725 ambiguous function, 42804 datatype mismatch,
** ...), 3F000 invalid schema name and 0A000 (feature not supported, which is
** also "cached plan must not change result type": a function that changed
** its result type under a prepared statement). Data errors (classes 22, 23)
** and everything else stay the row's. */
static int claim_state_breaks_handler(const char *st)
{
    return st && strlen(st) == 5 &&
           ((st[0] == '4' && st[1] == '2') || !strcmp(st, "3F000") || !strcmp(st, "0A000"));
}

/* Forget name in c->known (its statement was deallocated). */
static void claim_forget(pgpipe_claimer *c, const char *name)
{
    size_t n = strlen(name);
    for (char *k = c->known; k && (k = strstr(k, name)) != NULL; k += n)
        if ((k == c->known || k[-1] == '\n') && k[n] == '\n')
            memset(k, '\n', n);
}

/* The SQL handler's prepared statement planned again (a 0A000 such as "cached
** plan must not change result type": the function under it changed), under a
** savepoint since the batch's transaction is open. Returns 0 when done, 1
** when the server refuses the statement now (its error in *err), -1 when the
** transaction machinery failed (c->hdr.err). */
static int claim_reprepare_handler(pgpipe_claimer *c, const char *sql, pgpipe_error *err)
{
    char dealloc[64];
    snprintf(dealloc, sizeof dealloc, "DEALLOCATE %s", c->nm_handler);
    if (claim_exec(c, "SAVEPOINT pgpipe_p") != PGPIPE_OK)
        return -1;
    pgpipe_error_clear(err);
    int rc = pp_exec(c->conn, dealloc, 0, NULL, NULL, err, "preparing the SQL handler again");
    c->handler_hash = 0; /* gone: prepared anew by the next batch unless below */
    claim_forget(c, c->nm_handler);
    if (rc == PGPIPE_OK)
        rc = pp_prepare(c->conn, c->nm_handler, sql, err, "preparing the SQL handler again");
    if (rc == PGPIPE_OK)
        c->handler_hash = pp_hash64(sql);
    if (claim_conn_gone(c)) {
        c->hdr.err = *err;
        return -1;
    }
    if (claim_exec(c, rc == PGPIPE_OK ? "RELEASE SAVEPOINT pgpipe_p"
                                      : "ROLLBACK TO SAVEPOINT pgpipe_p; RELEASE SAVEPOINT pgpipe_p") !=
        PGPIPE_OK)
        return -1;
    if (rc == PGPIPE_OK)
        pp_logf(PGPIPE_LOG_INFO, "claim", "%s: the SQL handler was prepared again (its plan "
                "changed under it)", c->worker_id);
    return rc == PGPIPE_OK ? 0 : 1;
}

/* Run the SQL handler on an empty batch ($1 = '[]') under a savepoint, then
** undo it: when it fails too, with a state of claim_state_breaks_handler, the
** statement cannot run whatever the rows are (its function is gone, the role
** lost EXECUTE on it, a table it writes was dropped). Returns 1 then (the
** error in *err), 0 when it runs or fails otherwise (the rows are at fault),
** -1 when the transaction machinery failed (c->hdr.err). */
static int claim_probe_handler(pgpipe_claimer *c, const pgpipe_handler *h, pgpipe_error *err)
{
    c->probed = 1;
    if (claim_exec(c, "SAVEPOINT pgpipe_p") != PGPIPE_OK)
        return -1;
    const char *j = "[]";
    pgpipe_error_clear(err);
    int rc = c->unnamed ? pp_exec(c->conn, h->sql, 1, &j, NULL, err, NULL)
                        : pp_exec_prepared(c->conn, c->nm_handler, 1, &j, NULL, err, NULL);
    if (claim_conn_gone(c)) {
        c->hdr.err = *err;
        return -1;
    }
    if (claim_exec(c, "ROLLBACK TO SAVEPOINT pgpipe_p; RELEASE SAVEPOINT pgpipe_p") != PGPIPE_OK)
        return -1;
    return rc != PGPIPE_OK && claim_state_breaks_handler(err->sqlstate);
}

/* For a 42501 (insufficient privilege): "; the role \"R\" needs EXECUTE on
** function f" from the server's "permission denied for function f", so the
** message says which privilege to grant to whom. A C handler may run on a
** connection of its own: its role is not named then. */
static void claim_privilege_hint(char *out, size_t size, pgpipe_claimer *c,
                                 const pgpipe_handler *h, const char *msg)
{
    char who[96];
    const char *role = h->sql && c->conn ? PQuser(c->conn) : NULL;
    if (role && *role)
        snprintf(who, sizeof who, "the role \"%.60s\"", role);
    else
        snprintf(who, sizeof who, "the handler's role");
    static const char pre[] = "permission denied for ";
    const char *m = msg ? strstr(msg, pre) : NULL;
    if (!m) {
        snprintf(out, size, "; %s lacks a privilege the handler needs", who);
        return;
    }
    m += sizeof pre - 1;
    size_t kn = strcspn(m, " \n");
    const char *obj = m + kn + (m[kn] == ' ');
    int on = (int)strcspn(obj, "\n");
    const char *priv = "a privilege";
    if ((kn == 8 && !strncmp(m, "function", 8)) || (kn == 9 && !strncmp(m, "procedure", 9)) ||
        (kn == 7 && !strncmp(m, "routine", 7)))
        priv = "EXECUTE";
    else if ((kn == 6 && !strncmp(m, "schema", 6)) || (kn == 8 && !strncmp(m, "sequence", 8)))
        priv = "USAGE";
    else if (kn == 5 && !strncmp(m, "table", 5))
        priv = "the privilege (SELECT, INSERT, UPDATE or DELETE) the handler uses";
    snprintf(out, size, "; %s needs %s on %.*s %.*s", who, priv, (int)kn, m, on > 60 ? 60 : on,
             obj);
}

/* The handler cannot run: the batch is given back uncharged by the caller
** (pgpipe_claimer_run_batch), and the error names the handler and the
** server's SQLSTATE. Returns PGPIPE_DB. */
static int claim_handler_broken(pgpipe_claimer *c, const pgpipe_handler *h,
                                const pgpipe_error *cause, const char *how)
{
    c->handler_broken = 1;
    c->handler_unusable = 1;
    char what[160];
    if (h->sql)
        snprintf(what, sizeof what, "the SQL handler \"%.100s%s\"", h->sql,
                 strlen(h->sql) > 100 ? "..." : "");
    else
        snprintf(what, sizeof what, "the %s handler", h->record ? "record" : "batch");
    char hint[200] = "";
    if (!strcmp(cause->sqlstate, "42501"))
        claim_privilege_hint(hint, sizeof hint, c, h, cause->message);
    int rc = pp_err(&c->hdr.err, PGPIPE_DB, "%s cannot run (%s): %.500s (SQLSTATE %s)%s; the "
                    "batch is given back, no attempt counted", what, how, cause->message,
                    cause->sqlstate, hint);
    memcpy(c->hdr.err.sqlstate, cause->sqlstate, sizeof c->hdr.err.sqlstate);
    return rc;
}

/* Bisect [lo, hi) of b under savepoints until failing records are alone.
** top: the savepoint pgpipe_claim of the claim is already set. Returns an
** error only when the connection or the transaction machinery failed. */
static int claim_bisect(pgpipe_claimer *c, const pgpipe_handler *h, pgpipe_batch *b,
                        int lo, int hi, int top)
{
    if (!top && claim_exec(c, "SAVEPOINT pgpipe_b") != PGPIPE_OK)
        return c->hdr.err.code;
    pgpipe_batch *v = top ? NULL : claim_batch_view(b, lo, hi);
    if (!top && !v)
        return pp_err_nomem(&c->hdr.err);
    pgpipe_error err;
    int rc = claim_call_batch(c, h, top ? b : v, &err);
    claim_batch_free(v);
    if (claim_conn_gone(c))
        return pp_err_pq(&c->hdr.err, c->conn, NULL, "processing a batch");
    if (rc == PGPIPE_OK)
        return top ? PGPIPE_OK : claim_exec(c, "RELEASE SAVEPOINT pgpipe_b");
    if (claim_exec(c, top ? "ROLLBACK TO SAVEPOINT pgpipe_claim"
                          : "ROLLBACK TO SAVEPOINT pgpipe_b; RELEASE SAVEPOINT pgpipe_b") !=
        PGPIPE_OK)
        return c->hdr.err.code;
    for (int i = lo; i < hi; i++)
        if (b->failed[i] == 1)
            claim_batch_unfail(b, i);
    if (h->sql && !c->unnamed && !c->replanned && !strcmp(err.sqlstate, "0A000")) {
        /* "cached plan must not change result type": plan it again, once */
        pgpipe_error pe;
        c->replanned = 1;
        int p = claim_reprepare_handler(c, h->sql, &pe);
        if (p < 0)
            return c->hdr.err.code;
        if (p == 0)
            return claim_bisect(c, h, b, lo, hi, top);
        if (claim_state_breaks_handler(pe.sqlstate))
            return claim_handler_broken(c, h, &pe, "the server refuses to prepare it again");
        c->hdr.err = pe;
        return pe.code ? pe.code : PGPIPE_DB;
    }
    if (h->sql && !c->probed && claim_state_breaks_handler(err.sqlstate)) {
        pgpipe_error pe;
        int p = claim_probe_handler(c, h, &pe);
        if (p < 0)
            return c->hdr.err.code;
        if (p > 0)
            return claim_handler_broken(c, h, &pe, "it fails on an empty batch too");
    }
    if (hi - lo == 1 && claim_lost_rerun(c, &err))
        return claim_bisect(c, h, b, lo, hi, 0);
    if (hi - lo == 1)
        return pgpipe_batch_fail(b, lo, err.message, err.sqlstate);
    int mid = lo + (hi - lo) / 2;
    rc = claim_bisect(c, h, b, lo, mid, 0);
    if (rc == PGPIPE_OK)
        rc = claim_bisect(c, h, b, mid, hi, 0);
    return rc;
}

/* After the handler ran on every row of b alone: when at least two rows
** were run and every one failed with a state of claim_state_breaks_handler
** (a C handler's statement, or a SQL handler whose broken statement runs
** only per row, which the empty probe cannot see), the handler is what
** fails: claim_handler_broken. Rows fenced away (mark 3) do not count. */
static int claim_all_broken(pgpipe_claimer *c, const pgpipe_handler *h, pgpipe_batch *b)
{
    int ran = 0, first = -1;
    for (int i = 0; i < b->n; i++) {
        if (b->failed[i] == 3)
            continue;
        if (b->failed[i] != 1 || !claim_state_breaks_handler(b->fstate[i]))
            return PGPIPE_OK;
        if (first < 0)
            first = i;
        ran++;
    }
    if (ran < 2)
        return PGPIPE_OK;
    pgpipe_error cause;
    pgpipe_error_clear(&cause);
    snprintf(cause.message, sizeof cause.message, "%s",
             b->fmsg[first] ? b->fmsg[first] : "failed");
    memcpy(cause.sqlstate, b->fstate[first], sizeof cause.sqlstate);
    char how[64];
    snprintf(how, sizeof how, "each of the %d rows of the batch fails on it", ran);
    return claim_handler_broken(c, h, &cause, how);
}

/* Per-record handler. In a transaction, a failing record's writes are undone
** by going back to the claim's savepoint and running the good records
** again (until a pass adds no failure). */
static int claim_run_records(pgpipe_claimer *c, const pgpipe_handler *h, pgpipe_batch *b)
{
    PGconn *tx = pgpipe_batch_conn(b);
    for (int pass = 0; pass <= b->n; pass++) {
        int newfail = 0;
        for (int i = 0; i < b->n; i++) {
            if (b->failed[i])
                continue;
            pgpipe_error err;
            pgpipe_error_clear(&err);
            int rc = h->record(h->ud, tx, &b->ev[i], &err);
            if (tx && PQstatus(tx) != CONNECTION_OK)
                return pp_err_pq(&c->hdr.err, tx, NULL, "processing a record");
            if (rc == PGPIPE_OK && tx && PQtransactionStatus(tx) == PQTRANS_INERROR)
                rc = pp_err(&err, PGPIPE_DB, "the handler left its transaction failed: %s",
                            PQerrorMessage(tx));
            if (rc != PGPIPE_OK) {
                if (!err.message[0])
                    pp_err(&err, rc, "record handler failed: %s", pgpipe_errstr(rc));
                if (pgpipe_batch_fail(b, i, err.message, err.sqlstate) != PGPIPE_OK)
                    return pp_err_nomem(&c->hdr.err);
                newfail++;
                if (tx && claim_exec(c, "ROLLBACK TO SAVEPOINT pgpipe_claim") != PGPIPE_OK)
                    return c->hdr.err.code;
                if (tx)
                    break; /* start over with the good ones */
            }
        }
        if (!tx || !newfail)
            return PGPIPE_OK;
    }
    return PGPIPE_OK;
}

/* Lease mode, C batch handler: the handler failed the batch as a whole with
** one error (*err). No transaction can undo its writes, so there is no
** bisection. But when the error's state says the handler itself may be
** unable to run (claim_state_breaks_handler) and two rows or more are left
** (not failed by the handler itself), each of them is run alone once: a row
** that passes is done, one that fails keeps its own error, and
** claim_all_broken tells a broken handler (every row fails so alone: the
** batch is given back uncharged) from a row at fault (only it is charged).
** Otherwise every row left gets the error. Returns PGPIPE_OK, or the error
** of claim_handler_broken. */
static int claim_lease_batch_failed(pgpipe_claimer *c, const pgpipe_handler *h, pgpipe_batch *b,
                                    const pgpipe_error *err)
{
    int left = 0;
    for (int i = 0; i < b->n; i++)
        left += !b->failed[i];
    if (left >= 2 && claim_state_breaks_handler(err->sqlstate)) {
        for (int i = 0; i < b->n; i++) {
            if (b->failed[i])
                continue;
            pgpipe_batch *v = claim_batch_view(b, i, i + 1);
            if (!v)
                return pp_err_nomem(&c->hdr.err);
            pgpipe_error one;
            int rc = claim_call_batch(c, h, v, &one);
            claim_batch_free(v);
            if (rc != PGPIPE_OK && !b->failed[i] &&
                pgpipe_batch_fail(b, i, one.message, one.sqlstate) != PGPIPE_OK)
                return pp_err_nomem(&c->hdr.err);
        }
        return claim_all_broken(c, h, b);
    }
    for (int i = 0; i < b->n; i++)
        if (!b->failed[i] && pgpipe_batch_fail(b, i, err->message, err->sqlstate) != PGPIPE_OK)
            return pp_err_nomem(&c->hdr.err);
    return PGPIPE_OK;
}

int pgpipe_claimer_run_batch(pgpipe_claimer *c, const pgpipe_handler *h, int *nrows)
{
    if (nrows)
        *nrows = 0;
    if (!c || !h || (!h->record && !h->batch && !h->sql))
        return c ? pp_err(&c->hdr.err, PGPIPE_MISUSE, "claimer: no handler") : PGPIPE_MISUSE;
    if (!!h->record + !!h->batch + !!h->sql > 1)
        return pp_err(&c->hdr.err, PGPIPE_MISUSE,
                      "claimer: the handler sets more than one of record, batch and sql; set one");
    c->handler_unusable = 0;
    c->handler_broken = c->probed = c->replanned = 0;
    if (h->sql && claim_prepare_handler(c, h->sql) != PGPIPE_OK)
        return c->hdr.err.code;
    pgpipe_batch *b;
    int rc = pgpipe_claim_next(c, &b);
    if (rc != PGPIPE_ROW)
        return rc;
    int n = b->n, lease = c->o.mode == PGPIPE_CLAIM_LEASE;
    if (h->record) {
        rc = claim_run_records(c, h, b);
        if (rc == PGPIPE_OK)
            rc = claim_all_broken(c, h, b);
    } else if (!lease) {
        rc = claim_bisect(c, h, b, 0, b->n, 1);
        if (rc == PGPIPE_OK)
            rc = claim_all_broken(c, h, b);
    } else if (h->sql) {
        /* lease + SQL: the statement and the token-checked completion share
        ** one transaction, which locks the rows still held first */
        int held = 0, gone = 0;
        rc = claim_lease_lock(c, b, &held);
        for (int i = 0; i < b->n; i++)
            gone += b->failed[i] == 3;
        if (rc == PGPIPE_OK && gone == b->n) {
            rc = claim_exec(c, "ROLLBACK");
            c->st.fenced += b->n;
            c->cur = NULL;
            claim_batch_free(b);
            pp_logf(PGPIPE_LOG_WARN, "claim", "lease lost: none of the %d rows is held any more",
                    n);
            return rc == PGPIPE_OK ? pp_err(&c->hdr.err, PGPIPE_BUSY,
                                            "lease lost: the batch was reclaimed") : rc;
        }
        if (rc == PGPIPE_OK)
            rc = claim_bisect(c, h, b, 0, b->n, 1);
        if (rc == PGPIPE_OK)
            rc = claim_all_broken(c, h, b);
        if (rc == PGPIPE_OK) {
            int want = 0, nfailed = claim_nfailed(b);
            long long accepted = 0, retried = 0, dead = 0;
            rc = claim_lease_done(c, b, &want, &accepted);
            if (rc == PGPIPE_OK && accepted < want) {
                /* lease lost: undo the writes; the holder of the new token
                ** processes the rows */
                rc = claim_exec(c, "ROLLBACK");
                c->st.fenced += b->n;
                c->cur = NULL;
                claim_batch_free(b);
                pp_logf(PGPIPE_LOG_WARN, "claim", "lease lost: batch of %d rows rolled back", n);
                return rc == PGPIPE_OK ? pp_err(&c->hdr.err, PGPIPE_BUSY,
                                                "lease lost: the batch was reclaimed") : rc;
            }
            if (rc == PGPIPE_OK)
                rc = claim_mark_failed(c, b, nfailed, &retried, &dead);
            if (rc == PGPIPE_OK)
                rc = claim_exec(c, "COMMIT");
            if (rc == PGPIPE_OK) {
                long long refused = nfailed - retried - dead;
                c->st.done += accepted;
                c->st.retried += retried;
                c->st.dead += dead;
                c->st.fenced += refused;
                c->cur = NULL;
                claim_batch_free(b);
                if (refused > 0)
                    pp_logf(PGPIPE_LOG_WARN, "claim", "lease lost: %lld of %d rows were taken "
                            "by another client; their completion was refused", refused, n);
                if (nrows)
                    *nrows = n;
                return PGPIPE_OK;
            }
        }
    } else {
        pgpipe_error err;
        rc = claim_call_batch(c, h, b, &err);
        if (rc != PGPIPE_OK)
            rc = claim_lease_batch_failed(c, h, b, &err);
    }
    if (rc != PGPIPE_OK && c->handler_broken && PQstatus(c->conn) == CONNECTION_OK) {
        /* the handler cannot run: not the rows' fault. Roll back and give
        ** the batch back (a lease is cleared and its attempt taken back) */
        pgpipe_error why = c->hdr.err;
        if (lease && PQtransactionStatus(c->conn) != PQTRANS_IDLE)
            (void)claim_exec(c, "ROLLBACK");
        if (pgpipe_claim_release(c, b) != PGPIPE_OK)
            pp_logf(PGPIPE_LOG_WARN, "claim", "%s: giving the batch back: %s", c->worker_id,
                    c->hdr.err.message);
        c->hdr.err = why;
        return why.code ? why.code : PGPIPE_DB;
    }
    if (rc != PGPIPE_OK) {
        /* the batch failed as a whole: its attempt is counted outside the
        ** failed transaction */
        claim_batch_lost(c, b, 0);
        return rc;
    }
    rc = pgpipe_claim_complete(c, b);
    if (nrows)
        *nrows = n;
    if (rc == PGPIPE_BUSY) /* every row fenced: counted; not an error of the loop */
        return PGPIPE_OK;
    return rc;
}

int pgpipe_claimer_stats(const pgpipe_claimer *c, pgpipe_claim_stats *out)
{
    if (!c || !out)
        return PGPIPE_MISUSE;
    *out = c->st;
    return PGPIPE_OK;
}

/* exists = 1: only whether any row is pending (cheap), as 0 or 1 */
static int claim_pending(pgpipe_claimer *c, long long *count, int exists)
{
    if (!c || !count)
        return PGPIPE_MISUSE;
    const char *v[2];
    int n = 0;
    if (c->source)
        v[n++] = c->source;
    if (c->event_type)
        v[n++] = c->event_type;
    PGresult *r;
    int rc = claim_exec_prepared(c, exists ? c->nm_exists : c->nm_pending, n, v, &r,
                                 &c->hdr.err, "counting pending rows");
    if (rc != PGPIPE_OK)
        return rc;
    if (PQntuples(r) != 1)
        rc = pp_err_pq(&c->hdr.err, c->conn, r, "counting pending rows");
    else if (exists)
        *count = PQgetvalue(r, 0, 0)[0] == 't';
    else
        *count = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    return rc;
}

int pgpipe_claimer_pending(pgpipe_claimer *c, long long *count)
{
    return claim_pending(c, count, 0);
}

void pgpipe_claimer_close(pgpipe_claimer *c)
{
    if (!c)
        return;
    if (c->cur)
        pgpipe_claim_release(c, c->cur);
    pp_free(c->table);
    pp_free(c->source);
    pp_free(c->event_type);
    pp_free(c->worker_id);
    pp_free(c->dlq_table);
    pp_free(c->qtable);
    pp_free(c->qdlq);
    pp_free(c->sql_claim);
    pp_free(c->sql_done);
    pp_free(c->sql_fail);
    pp_free(c->sql_release);
    pp_free(c->sql_pending);
    pp_free(c->sql_exists);
    pp_free(c->sql_lost);
    pp_free(c->sql_lock);
    pp_free(c->sql_isolate);
    pp_free(c->isolate);
    pp_free(c->lost.ids);
    pp_free(c->restore_sql);
    pp_free(c->known);
    pp_free(c);
}

/* ---- Worker pool -------------------------------------------------------- */
#ifndef PGPIPE_OMIT_THREADS

void pgpipe_workers_options_init(pgpipe_workers_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    pgpipe_claim_options_init(&o->claim);
    o->threads = 2;
    o->channel = "pgpipe_events";
    o->poll_ms = 1000;
    o->dlq_alert_window_s = 300;
}

typedef struct claim_worker {
    struct pgpipe_workers *w;
    int index;
    pthread_t tid;
    int started;
    pgpipe_claim_stats base;   /* of closed claimers */
    pgpipe_claim_stats cur;    /* of the open claimer (copied under the mutex) */
    int idle;
    int fatal;                 /* the code that stopped this worker */
    pgpipe_error fatal_err;    /* and its error, when it had one */
    claim_lost lost;           /* a batch lost with its connection, whose
                                  attempt the next connection records */
    char *isolate;             /* its claimer's isolate, kept across a lost
                                  connection */
    pp_cancel_slot cancel;     /* its connection's, for pgpipe_workers_cancel */
    atomic_int ended;          /* its thread is done */
} claim_worker;

struct pgpipe_workers {
    pp_handle hdr;
    pgpipe_pool *pool;
    pgpipe_workers_options o;
    char *channel;
    pgpipe_handler h;
    atomic_int stop;
    int wake[2];
    pthread_mutex_t mu;
    claim_worker *wk;
    int n;
    int joined;
    long long wakeups, reconnects;
    int64_t start_us, last_us;
    long long last_done;
    int64_t last_alert_us;
    atomic_int said_polling;   /* the "NOTIFY wake-ups are off" line was logged */
    atomic_int lost_named;     /* a claimer found its statements gone (26000):
                                  the next ones start unnamed */
    atomic_int paused;         /* pgpipe_workers_pause: claim nothing for now */
};

/* The claim options of a new claimer of the workers. */
static pgpipe_claim_options claim_worker_opts(pgpipe_workers *w)
{
    pgpipe_claim_options co = w->o.claim;
    if (atomic_load(&w->lost_named))
        co.pooler = PGPIPE_POOLER_TRANSACTION;
    return co;
}

/* After a failure of cl: when its statements were found gone, the claimer
** now runs them unnamed (and said so); so will the next ones. Returns 1 then
** (try again at once: nothing else is wrong), once per such failure. */
static int claim_worker_lost(pgpipe_workers *w, pgpipe_claimer *cl)
{
    if (!cl || !cl->unnamed || strcmp(cl->hdr.err.sqlstate, "26000") != 0)
        return 0;
    cl->hdr.err.sqlstate[0] = '\0';
    atomic_store(&w->lost_named, 1);
    return 1;
}

/* Sleep until the wake pipe is readable or ms pass. */
static void claim_nap(pgpipe_workers *w, int ms)
{
    struct pollfd p = { w->wake[0], POLLIN, 0 };
    if (!atomic_load(&w->stop))
        (void)poll(&p, 1, ms);
}

static void claim_worker_sync(claim_worker *k, pgpipe_claimer *cl, int idle)
{
    pthread_mutex_lock(&k->w->mu);
    if (cl)
        pgpipe_claimer_stats(cl, &k->cur);
    k->idle = idle;
    pthread_mutex_unlock(&k->w->mu);
}

static void claim_add_stats(pgpipe_claim_stats *a, const pgpipe_claim_stats *b)
{
    a->batches += b->batches;
    a->claimed += b->claimed;
    a->done += b->done;
    a->retried += b->retried;
    a->dead += b->dead;
    a->fenced += b->fenced;
    a->released += b->released;
    a->abandoned += b->abandoned;
}

static void claim_worker_drop(claim_worker *k, pgpipe_claimer **cl, pgpipe_conn **pc, int broken)
{
    pgpipe_workers *w = k->w;
    pthread_mutex_lock(&w->mu);
    if (*cl && (*cl)->lost.ids) {
        if (broken && !k->lost.ids) { /* recorded on the next connection */
            k->lost = (*cl)->lost;
            memset(&(*cl)->lost, 0, sizeof (*cl)->lost);
        } else {
            (*cl)->st.abandoned += (*cl)->lost.n;
        }
    }
    if (*cl && (*cl)->isolate && broken) {
        pp_free(k->isolate);
        k->isolate = (*cl)->isolate;
        (*cl)->isolate = NULL;
    }
    if (*cl && (*cl)->prev_recv)
        PQsetNoticeReceiver((*cl)->conn, (*cl)->prev_recv, NULL);
    if (*cl) {
        pgpipe_claim_stats s;
        pgpipe_claimer_stats(*cl, &s);
        claim_add_stats(&k->base, &s);
        memset(&k->cur, 0, sizeof k->cur);
    }
    if (broken)
        w->reconnects++;
    pthread_mutex_unlock(&w->mu);
    pgpipe_claimer_close(*cl);
    *cl = NULL;
    if (*pc) {
        PGconn *pg = pgpipe_conn_pg(*pc);
        if (broken || PQstatus(pg) != CONNECTION_OK) {
            pgpipe_pool_discard(*pc);
        } else {
            if (k->w->channel && !k->w->said_polling) {
                PGresult *r = PQexec(pg, "UNLISTEN *");
                PQclear(r);
            }
            pgpipe_pool_release(*pc);
        }
        *pc = NULL;
    }
    pp_cancel_arm(&k->cancel, NULL);
}

static void claim_maybe_alert(pgpipe_workers *w, PGconn *conn)
{
    if (w->o.dlq_alert_threshold <= 0)
        return;
    int64_t now = pgpipe_now_us();
    pthread_mutex_lock(&w->mu);
    int due = w->last_alert_us == 0 ||
              now - w->last_alert_us > (int64_t)w->o.dlq_alert_window_s * 1000000;
    pthread_mutex_unlock(&w->mu);
    if (!due)
        return;
    long long count = 0;
    if (pgpipe_dlq_check_growth(conn, w->o.dlq_alert_threshold, w->o.dlq_alert_window_s,
                                NULL, &count, NULL) == PGPIPE_BUSY) {
        pthread_mutex_lock(&w->mu);
        w->last_alert_us = now;
        pthread_mutex_unlock(&w->mu);
    }
}

/* Read what the socket holds and count the queued notifications; -1 when
** the connection is lost. */
static int claim_drain_notifies(PGconn *pg)
{
    if (!PQconsumeInput(pg))
        return -1;
    PGnotify *nt;
    int got = 0;
    while ((nt = PQnotifies(pg)) != NULL) {
        got++;
        PQfreemem(nt);
    }
    return got;
}

/* After a failure on pg: is it worth another try (the connection is gone, or
** the server said the failure is transient)? */
static int claim_retryable(PGconn *pg, const pgpipe_claimer *cl)
{
    return PQstatus(pg) != CONNECTION_OK || pgpipe_sqlstate_is_transient(pgpipe_errsqlstate(cl));
}

/* A server that ends a session (idle_in_transaction_session_timeout, 25P03;
** pg_terminate_backend, 57P01) says why in a FATAL message sent while the
** client is idle, which libpq hands to the notice receiver. The workers
** install this receiver on their connections (from the pool, which keeps
** libpq's default receiver: it ignores its argument) to keep that message as
** the cause of a batch lost with the connection; every notice still goes on
** to the previous receiver. */
static void claim_notice_receiver(void *arg, const PGresult *res)
{
    pgpipe_claimer *c = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (strcmp(sev, "FATAL") == 0 || strcmp(sev, "PANIC") == 0))
        pp_err_pq(&c->fatal, NULL, res, NULL);
    if (c->prev_recv)
        c->prev_recv(NULL, res);
}

static void *claim_worker_main(void *arg)
{
    claim_worker *k = arg;
    pgpipe_workers *w = k->w;
    pgpipe_conn *pc = NULL;
    pgpipe_claimer *cl = NULL;
    pgpipe_retry backoff;
    pgpipe_retry_init(&backoff, INT_MAX, 100, 2000);
    char wid[96];
    snprintf(wid, sizeof wid, "%s/%d",
             w->o.claim.worker_id && *w->o.claim.worker_id ? w->o.claim.worker_id : "pgpipe",
             k->index);
    while (!atomic_load(&w->stop)) {
        if (!cl) {
            pgpipe_error err;
            int rc = pgpipe_pool_acquire_ex(w->pool, &pc, 1000, &err);
            if (rc != PGPIPE_OK) {
                pc = NULL;
                if (rc == PGPIPE_MISUSE)
                    break; /* pool closing */
                int d = pgpipe_retry_next_delay(&backoff);
                claim_nap(w, d > 0 ? d : 1000);
                continue;
            }
            pgpipe_claim_options co = claim_worker_opts(w);
            if (!co.worker_id || !*co.worker_id)
                snprintf(wid, sizeof wid, "pgpipe-%ld/%d", (long)getpid(), k->index);
            co.worker_id = wid;
            PGconn *pg = pgpipe_conn_pg(pc);
            rc = pgpipe_claimer_open(&cl, pg, &co);
            if (rc == PGPIPE_OK) {
                cl->prev_recv = PQsetNoticeReceiver(pg, claim_notice_receiver, cl);
                cl->isolate = k->isolate;
                k->isolate = NULL;
            }
            if (rc == PGPIPE_OK && k->lost.ids) {
                /* the batch lost with the last connection: its attempt
                ** first (kept on the claimer should this fail too) */
                cl->lost = k->lost;
                memset(&k->lost, 0, sizeof k->lost);
                rc = claim_record_lost(cl);
                if (rc != PGPIPE_OK && !claim_retryable(pg, cl)) {
                    pp_logf(PGPIPE_LOG_WARN, "claim", "worker %d: the failed batch's attempt "
                            "cannot be recorded: %s", k->index, pgpipe_errmsg(cl));
                    cl->st.abandoned += cl->lost.n;
                    pp_free(cl->lost.ids);
                    memset(&cl->lost, 0, sizeof cl->lost);
                    rc = PGPIPE_OK;
                }
            }
            /* behind a transaction pooler a LISTEN stays on the server session
            ** it ran on, which serves other clients from the next transaction:
            ** nothing would ever arrive here. Poll instead, and say so once. */
            int listen = w->channel && !(cl && cl->o.pooler == PGPIPE_POOLER_TRANSACTION);
            if (rc == PGPIPE_OK && w->channel && !listen &&
                atomic_exchange(&w->said_polling, 1) == 0)
                pp_logf(PGPIPE_LOG_INFO, "claim",
                        "NOTIFY wake-ups are off behind a transaction pooler (pooler mode "
                        "transaction): the workers poll for new rows every %d ms", w->o.poll_ms);
            if (rc == PGPIPE_OK && listen) {
                pp_buf sql = { 0 };
                if (pp_buf_append(&sql, "LISTEN ", 7) == PGPIPE_OK &&
                    pp_quote_ident(&sql, w->channel, strlen(w->channel)) == PGPIPE_OK &&
                    pp_buf_putc(&sql, '\0') == PGPIPE_OK)
                    rc = pp_exec(pg, sql.data, 0, NULL, NULL, &cl->hdr.err, "LISTEN");
                pp_buf_free(&sql);
            }
            if (rc != PGPIPE_OK) {
                int transient = claim_retryable(pg, cl);
                pp_logf(PGPIPE_LOG_WARN, "claim", "worker %d: %s", k->index,
                        cl ? pgpipe_errmsg(cl) : "out of memory");
                claim_worker_drop(k, &cl, &pc, 1);
                if (!transient && rc == PGPIPE_MISUSE) {
                    k->fatal = rc;
                    break;
                }
                int d = pgpipe_retry_next_delay(&backoff);
                claim_nap(w, d > 0 ? d : 1000);
                continue;
            }
            backoff.attempt = 0;
            pp_cancel_arm(&k->cancel, pgpipe_conn_pg(pc));
        }
        if (atomic_load_explicit(&w->paused, memory_order_relaxed)) {
            /* between batches: nothing claimed, no transaction open */
            claim_worker_sync(k, cl, 1);
            claim_nap(w, 100);
            continue;
        }
        int nrows = 0;
        long long dead_before = cl->st.dead;
        int rc = pgpipe_claimer_run_batch(cl, &w->h, &nrows);
        claim_worker_sync(k, cl, rc == PGPIPE_DONE);
        if (rc == PGPIPE_OK) {
            if (cl->st.dead > dead_before)
                claim_maybe_alert(w, cl->conn);
            continue;
        }
        if (rc == PGPIPE_DONE) {
            /* idle: sleep on the socket until a NOTIFY, the stop pipe, or
            ** the fallback poll interval */
            PGconn *pg = cl->conn;
            /* a NOTIFY that came in while the last claim ran is already in
            ** libpq's queue, not on the socket: look there first */
            int got = claim_drain_notifies(pg);
            if (got < 0) {
                claim_worker_drop(k, &cl, &pc, 1);
                continue;
            }
            struct pollfd p[2] = { { PQsocket(pg), POLLIN, 0 }, { w->wake[0], POLLIN, 0 } };
            if (!got && !atomic_load(&w->stop) && poll(p, 2, w->o.poll_ms) > 0 &&
                (p[0].revents)) {
                got = claim_drain_notifies(pg);
                if (got < 0) {
                    claim_worker_drop(k, &cl, &pc, 1);
                    continue;
                }
            }
            if (got > 0) {
                pthread_mutex_lock(&w->mu);
                w->wakeups++;
                pthread_mutex_unlock(&w->mu);
            }
            claim_worker_sync(k, cl, 0);
            continue;
        }
        /* an error */
        if (claim_worker_lost(w, cl))
            continue;
        PGconn *pg = cl->conn;
        int broken = claim_retryable(pg, cl) || PQpipelineStatus(pg) != PQ_PIPELINE_OFF;
        pp_logf(broken ? PGPIPE_LOG_INFO : PGPIPE_LOG_WARN, "claim", "worker %d: %s",
                k->index, pgpipe_errmsg(cl));
        if (!broken && cl->handler_unusable) {
            /* every worker runs the same statement: stop them all rather
            ** than retry a statement the server refuses forever */
            pp_logf(PGPIPE_LOG_ERROR, "claim", "worker %d: stopping the workers: %s",
                    k->index, pgpipe_errmsg(cl));
            pthread_mutex_lock(&w->mu);
            k->fatal = rc;
            k->fatal_err = cl->hdr.err;
            pthread_mutex_unlock(&w->mu);
            pgpipe_workers_stop(w);
            break;
        }
        if (broken) {
            claim_worker_drop(k, &cl, &pc, 1);
            int d = pgpipe_retry_next_delay(&backoff);
            claim_nap(w, d > 0 ? d : 1000);
        } else {
            claim_nap(w, w->o.poll_ms);
        }
    }
    claim_worker_drop(k, &cl, &pc, 0);
    pp_free(k->isolate);
    k->isolate = NULL;
    if (k->lost.ids) { /* no connection came back before the stop */
        pthread_mutex_lock(&w->mu);
        k->base.abandoned += k->lost.n;
        pthread_mutex_unlock(&w->mu);
        pp_free(k->lost.ids);
        memset(&k->lost, 0, sizeof k->lost);
    }
    claim_worker_sync(k, NULL, 0);
    atomic_store(&k->ended, 1);
    return NULL;
}

int pgpipe_workers_open(pgpipe_workers **out, pgpipe_pool *pool, const pgpipe_handler *h,
                        const pgpipe_workers_options *opts)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_workers *w = *out = pp_handle_new(sizeof *w);
    if (!w)
        return PGPIPE_NOMEM;
    w->wake[0] = w->wake[1] = -1;
    atomic_init(&w->stop, 0);
    atomic_init(&w->said_polling, 0);
    atomic_init(&w->lost_named, 0);
    pthread_mutex_init(&w->mu, NULL);
    if (opts)
        w->o = *opts;
    else
        pgpipe_workers_options_init(&w->o);
    if (!pool || !h || (!h->record && !h->batch && !h->sql))
        return pp_err(&w->hdr.err, PGPIPE_MISUSE, "workers: a pool and a handler are needed");
    if (!!h->record + !!h->batch + !!h->sql > 1)
        return pp_err(&w->hdr.err, PGPIPE_MISUSE,
                      "workers: the handler sets more than one of record, batch and sql; set one");
    if (h->sql && !h->record && !h->batch && !strstr(h->sql, "$1"))
        return pp_err(&w->hdr.err, PGPIPE_MISUSE,
                      "workers: the SQL handler must take the claimed rows as $1 (a JSONB array), "
                      "e.g. ... FROM jsonb_array_elements($1::jsonb) e");
    w->pool = pool;
    w->h = *h;
    if (w->o.threads <= 0)
        w->o.threads = 2;
    if (w->o.poll_ms <= 0)
        w->o.poll_ms = 1000;
    if (w->o.dlq_alert_window_s <= 0)
        w->o.dlq_alert_window_s = 300;
    if (w->o.channel && *w->o.channel) {
        w->channel = pp_strdup(w->o.channel);
        if (!w->channel)
            return pp_err_nomem(&w->hdr.err);
    }
    w->o.channel = w->channel;
    /* open a claimer once now: a table that does not exist (or a name the
    ** server refuses, or no privilege) is an error here, instead of workers
    ** retrying it forever. A connection that cannot be had now is left to
    ** the workers' own retries. */
    {
        pgpipe_conn *pc = NULL;
        pgpipe_error e;
        pgpipe_error_clear(&e);
        if (pgpipe_pool_acquire_ex(pool, &pc, 10000, &e) == PGPIPE_OK) {
            PGconn *pg = pgpipe_conn_pg(pc);
            pgpipe_claimer *cl = NULL;
            /* the pool resolved its mode on this connection: every claimer
            ** of the workers takes it from there, without a probe */
            if (w->o.claim.pooler == PGPIPE_POOLER_AUTO)
                w->o.claim.pooler = pgpipe_pool_pooler(pool);
            int rc = pgpipe_claimer_open(&cl, pg, &w->o.claim);
            int transient = rc != PGPIPE_OK && claim_retryable(pg, cl);
            int have = cl != NULL;
            if (rc != PGPIPE_OK && have)
                w->hdr.err = cl->hdr.err;
            pgpipe_claimer_close(cl);
            if (rc != PGPIPE_OK) {
                pgpipe_pool_discard(pc);
                if (!have)
                    return pp_err_nomem(&w->hdr.err);
                if (!transient)
                    return rc;
            } else {
                pgpipe_pool_release(pc);
            }
        }
    }
    if (pipe(w->wake) != 0)
        return pp_err(&w->hdr.err, PGPIPE_IO, "workers: pipe: %s", strerror(errno));
    fcntl(w->wake[1], F_SETFL, fcntl(w->wake[1], F_GETFL) | O_NONBLOCK);
    w->wk = pp_calloc((size_t)w->o.threads, sizeof *w->wk);
    if (!w->wk)
        return pp_err_nomem(&w->hdr.err);
    w->start_us = w->last_us = pgpipe_now_us();
    for (int i = 0; i < w->o.threads; i++) {
        w->wk[i].w = w;
        w->wk[i].index = i;
        if (pthread_create(&w->wk[i].tid, NULL, claim_worker_main, &w->wk[i]) != 0) {
            pgpipe_workers_stop(w);
            return pp_err(&w->hdr.err, PGPIPE_ERROR, "workers: cannot start thread %d", i);
        }
        w->wk[i].started = 1;
        w->n = i + 1;
    }
    return PGPIPE_OK;
}

void pgpipe_workers_stop(pgpipe_workers *w)
{
    if (!w)
        return;
    atomic_store(&w->stop, 1);
    if (w->wake[1] >= 0) {
        ssize_t r = write(w->wake[1], "x", 1);
        (void)r;
    }
}

void pgpipe_workers_pause(pgpipe_workers *w, int paused)
{
    if (w)
        atomic_store(&w->paused, paused ? 1 : 0);
}

int pgpipe_workers_paused(const pgpipe_workers *w)
{
    return w ? atomic_load(&((pgpipe_workers *)w)->paused) != 0 : 0;
}

int pgpipe_workers_stopping(const pgpipe_workers *w)
{
    return w ? atomic_load(&((pgpipe_workers *)w)->stop) != 0 : 0;
}

static pgpipe_workers *volatile claim_sig_target;

static void claim_on_signal(int sig)
{
    (void)sig;
    pgpipe_workers_stop(claim_sig_target);
}

int pgpipe_workers_handle_signals(pgpipe_workers *w)
{
    if (!w)
        return PGPIPE_MISUSE;
    claim_sig_target = w;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = claim_on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return pp_err(&w->hdr.err, PGPIPE_ERROR, "sigaction: %s", strerror(errno));
    return PGPIPE_OK;
}

int pgpipe_workers_wait(pgpipe_workers *w)
{
    if (!w)
        return PGPIPE_MISUSE;
    int rc = PGPIPE_OK;
    if (!w->joined) {
        for (int i = 0; i < w->n; i++)
            if (w->wk[i].started)
                pthread_join(w->wk[i].tid, NULL);
        w->joined = 1;
    }
    for (int i = 0; i < w->n; i++)
        if (w->wk[i].fatal && rc == PGPIPE_OK) {
            const pgpipe_error *e = &w->wk[i].fatal_err;
            rc = pp_err(&w->hdr.err, w->wk[i].fatal, "worker %d stopped on an error%s%.900s", i,
                        e->message[0] ? ": " : "", e->message);
            memcpy(w->hdr.err.sqlstate, e->sqlstate, sizeof w->hdr.err.sqlstate);
        }
    return rc;
}

int pgpipe_workers_run_until_empty(pgpipe_workers *w, int timeout_ms)
{
    if (!w || !w->wk)
        return PGPIPE_MISUSE;
    int64_t t0 = pgpipe_now_us();
    pgpipe_conn *pc = NULL;
    pgpipe_claimer *cl = NULL;
    int rc = PGPIPE_BUSY;
    int64_t last_look = 0;
    while (!atomic_load(&w->stop)) {
        if (timeout_ms >= 0 && pgpipe_now_us() - t0 > (int64_t)timeout_ms * 1000)
            break;
        if (!cl) {
            pgpipe_error err;
            if (pgpipe_pool_acquire_ex(w->pool, &pc, 1000, &err) != PGPIPE_OK) {
                pc = NULL;
                claim_nap(w, 100);
                continue;
            }
            pgpipe_claim_options co = claim_worker_opts(w);
            if (pgpipe_claimer_open(&cl, pgpipe_conn_pg(pc), &co) != PGPIPE_OK) {
                pgpipe_claimer_close(cl);
                cl = NULL;
                pgpipe_pool_discard(pc);
                pc = NULL;
                claim_nap(w, 100);
                continue;
            }
        }
        /* look when every worker is idle, and once a second anyway */
        int idle = 0;
        pthread_mutex_lock(&w->mu);
        for (int i = 0; i < w->n; i++)
            idle += w->wk[i].idle;
        pthread_mutex_unlock(&w->mu);
        int64_t now = pgpipe_now_us();
        if (idle < w->n && now - last_look < 1000000) {
            claim_nap(w, 20);
            continue;
        }
        last_look = now;
        long long pending = -1;
        if (claim_pending(cl, &pending, 1) != PGPIPE_OK) {
            if (claim_worker_lost(w, cl))
                continue;
            int bad = PQstatus(cl->conn) != CONNECTION_OK;
            pgpipe_claimer_close(cl);
            cl = NULL;
            if (bad)
                pgpipe_pool_discard(pc);
            else
                pgpipe_pool_release(pc);
            pc = NULL;
            claim_nap(w, 100);
            continue;
        }
        if (pending == 0) {
            rc = PGPIPE_OK;
            break;
        }
        claim_nap(w, 20);
    }
    pgpipe_claimer_close(cl);
    if (pc)
        pgpipe_pool_release(pc);
    if (rc == PGPIPE_OK || atomic_load(&w->stop)) {
        pgpipe_workers_stop(w);
        int r2 = pgpipe_workers_wait(w);
        if (rc == PGPIPE_OK || r2 != PGPIPE_OK)
            rc = r2; /* also: the workers stopped themselves on an error */
    }
    if (rc == PGPIPE_BUSY && !atomic_load(&w->stop))
        pp_err(&w->hdr.err, PGPIPE_BUSY, "workers: rows still pending after %d ms", timeout_ms);
    return rc;
}

int pgpipe_workers_stats_get(pgpipe_workers *w, pgpipe_workers_stats *out)
{
    if (!w || !out)
        return PGPIPE_MISUSE;
    memset(out, 0, sizeof *out);
    int64_t now = pgpipe_now_us();
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < w->n; i++) {
        claim_add_stats(&out->total, &w->wk[i].base);
        claim_add_stats(&out->total, &w->wk[i].cur);
        out->idle += w->wk[i].idle;
    }
    out->threads = w->n;
    out->wakeups = w->wakeups;
    out->reconnects = w->reconnects;
    out->elapsed_s = (double)(now - w->start_us) / 1e6;
    out->events_per_s = out->elapsed_s > 0 ? (double)out->total.done / out->elapsed_s : 0;
    double dt = (double)(now - w->last_us) / 1e6;
    out->recent_per_s = dt > 0 ? (double)(out->total.done - w->last_done) / dt : 0;
    w->last_us = now;
    w->last_done = out->total.done;
    pthread_mutex_unlock(&w->mu);
    return PGPIPE_OK;
}

void pgpipe_workers_close(pgpipe_workers *w)
{
    if (!w)
        return;
    pgpipe_workers_stop(w);
    if (w->wk)
        pgpipe_workers_wait(w);
    if (claim_sig_target == w)
        claim_sig_target = NULL;
    if (w->wake[0] >= 0)
        close(w->wake[0]);
    if (w->wake[1] >= 0)
        close(w->wake[1]);
    pthread_mutex_destroy(&w->mu);
    pp_free(w->wk);
    pp_free(w->channel);
    pp_free(w);
}

/* Each worker arms its slot once its connection is set up, and disarms it
** when it lets the connection go; a fire in between cancels whatever that
** connection runs then. */
int pgpipe_workers_cancel(pgpipe_workers *w)
{
    if (!w || w->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    pgpipe_workers_stop(w);
    for (int i = 0; i < w->n && w->wk; i++)
        pp_cancel_fire(&w->wk[i].cancel);
    return PGPIPE_OK;
}

int pgpipe_workers_running(const pgpipe_workers *w)
{
    if (!w || w->hdr.magic != PP_HANDLE_MAGIC || !w->wk)
        return 0;
    int n = 0;
    for (int i = 0; i < w->n; i++)
        n += w->wk[i].started && !atomic_load(&w->wk[i].ended);
    return n;
}

#endif /* PGPIPE_OMIT_THREADS */
