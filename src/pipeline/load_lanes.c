/*
** The COPY loader's sending side: a batch's COPY (streamed while it fills),
** isolating the rows the server rejects (its "line N" context, else
** bisection under savepoints), the batch's commit with its bookkeeping, and
** the lanes: with several connections each lane has a thread that sends,
** books and commits its batch while the next one is read into another lane.
** The overview is in src/pipeline/load.c.
*/

#include "pp_pipeline.h"

/* CopyData messages stay well under a Unix socket's buffer: the server reads
** a whole message before it parses any of it, so a message larger than the
** buffer keeps it waiting for the rest (256 KiB ones cost a tenth here). */
#define COPY_SEND_CHUNK (32 * 1024)

/* ---- sending ---------------------------------------------------------------- */

/* Start COPY; PGPIPE_OK when the server is in COPY IN. */
static int copy_start(copy_lane *ln, const char *sql, int *transient)
{
    int rc = pp_copy_in_start(ln->conn, sql, &ln->err, "loader: COPY");
    *transient = rc != PGPIPE_OK && pgpipe_sqlstate_is_transient(ln->err.sqlstate);
    return rc;
}

static int copy_put(copy_lane *ln, const char *p, size_t n, int *transient);

/* A COPY of the load's rows has started: binary rows need the header first. */
static int copy_rows_started(copy_lane *ln, int *transient)
{
    return COPY_BINARY(ln->l) ? copy_put(ln, PP_COPY_BIN_HEADER, PP_COPY_BIN_HEADER_LEN, transient)
                         : PGPIPE_OK;
}

/* Start the COPY of the load's rows (sql: it, or statements ending with it). */
static int copy_start_rows(copy_lane *ln, const char *sql, int *transient)
{
    int rc = copy_start(ln, sql, transient);
    return rc == PGPIPE_OK ? copy_rows_started(ln, transient) : rc;
}

static int copy_put(copy_lane *ln, const char *p, size_t n, int *transient)
{
    while (n) {
        size_t k = n > COPY_SEND_CHUNK ? COPY_SEND_CHUNK : n;
        if (PQputCopyData(ln->conn, p, (int)k) != 1) {
            *transient = 1;
            return pp_err_pq(&ln->err, ln->conn, NULL, "loader: sending COPY data");
        }
        p += k;
        n -= k;
    }
    return PGPIPE_OK;
}

/* End COPY and read its result. *res gets the error result (caller clears). */
static int copy_end(copy_lane *ln, int *transient, PGresult **res)
{
    *transient = 0;
    if (res)
        *res = NULL;
    if (PQputCopyEnd(ln->conn, NULL) != 1) {
        *transient = 1;
        return pp_err_pq(&ln->err, ln->conn, NULL, "loader: ending COPY");
    }
    int rc = PGPIPE_OK;
    PGresult *r;
    int got = 0;
    while ((r = PQgetResult(ln->conn)) != NULL) {
        got = 1;
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN) { /* should not happen: end again */
            PQclear(r);
            PQputCopyEnd(ln->conn, "unexpected");
            continue;
        }
        if (st != PGRES_COMMAND_OK && rc == PGPIPE_OK) {
            *transient = pgpipe_pq_is_transient(ln->conn, r);
            rc = pp_err_pq(&ln->err, ln->conn, r, "loader: COPY");
            if (res) {
                *res = r;
                continue;
            }
        }
        PQclear(r);
    }
    if (!got && rc == PGPIPE_OK) {
        *transient = 1;
        rc = pp_err_pq(&ln->err, ln->conn, NULL, "loader: COPY");
    }
    if (PQstatus(ln->conn) != CONNECTION_OK) {
        /* the connection broke after the result: what counts is the loss
        ** (a row's rejection read just before it is stale) */
        *transient = 1;
        if (rc != PGPIPE_OK)
            pp_err_pq(&ln->err, ln->conn, NULL, "loader: COPY");
    }
    return rc;
}

/* Abandon a streamed COPY (the load stopped mid-batch) and its transaction. */
PGPIPE_PRIVATE void copy_abandon(copy_lane *ln)
{
    if (ln->copy_open && ln->conn) {
        PQputCopyEnd(ln->conn, "load stopped");
        PGresult *r;
        while ((r = PQgetResult(ln->conn)) != NULL)
            PQclear(r);
    }
    ln->copy_open = 0;
    ln->chained = 0;
    copy_rollback(ln);
}

static void copy_row_raw(const copy_lane *ln, size_t i, const char **p, size_t *n)
{
    size_t end = i + 1 < ln->nrows ? ln->rows[i + 1].roff : ln->rbuf.len;
    *p = ln->rbuf.data + ln->rows[i].roff;
    *n = end - ln->rows[i].roff;
}

/* Send rows [lo, hi) not marked bad, runs of good rows in one piece. */
static int copy_send_range(copy_lane *ln, size_t lo, size_t hi, int *transient)
{
    size_t i = lo;
    while (i < hi) {
        while (i < hi && ln->rows[i].bad)
            i++;
        size_t j = i;
        while (j < hi && !ln->rows[j].bad)
            j++;
        if (j > i) {
            size_t a = ln->rows[i].coff;
            size_t b = j < ln->nrows ? ln->rows[j].coff : ln->cbuf.len;
            int rc = copy_put(ln, ln->cbuf.data + a, b - a, transient);
            if (rc != PGPIPE_OK)
                return rc;
        }
        i = j;
    }
    return PGPIPE_OK;
}

/* The row of [lo, hi) that was the n-th (1-based) sent, (size_t)-1 if none. */
static size_t copy_nth_sent(const copy_lane *ln, size_t lo, size_t hi, long long n)
{
    for (size_t i = lo; i < hi; i++)
        if (!ln->rows[i].bad && --n == 0)
            return i;
    return (size_t)-1;
}

/* "COPY t, line 17, column x: ..." -> 17; 0 when absent. */
static long long copy_context_line(const PGresult *r)
{
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    if (!ctx || strncmp(ctx, "COPY ", 5) != 0)
        return 0;
    const char *p = strstr(ctx, ", line ");
    return p ? atoll(p + 7) : 0;
}

/* Mark row i rejected and dead-letter it with the server's error. */
static int copy_reject(copy_lane *ln, size_t i, const PGresult *r)
{
    const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    const char *ctx = r ? PQresultErrorField(r, PG_DIAG_CONTEXT) : NULL;
    const char *detail = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL) : NULL;
    char m[1024];
    if (detail && *detail)
        snprintf(m, sizeof m, "%s (%s)", msg ? msg : "rejected by the server", detail);
    else
        snprintf(m, sizeof m, "%s", msg ? msg : "rejected by the server");
    const char *raw;
    size_t rawlen;
    copy_row_raw(ln, i, &raw, &rawlen);
    ln->rows[i].bad = 1;
    ln->b_dead_srv++;
    if (copy_dead(ln, ln->rows[i].line, 0, ln->rows[i].offset, raw, rawlen, m, state, ctx) != PGPIPE_OK)
        return pp_err_nomem(&ln->err);
    return PGPIPE_OK;
}

/* Load rows [lo, hi) inside the open transaction, isolating the rows the
** server rejects: a savepoint per attempt; on an error whose context names
** the row ("COPY t, line N"), that row is dead-lettered, the rows before it
** (accepted already) are loaded again and the attempt goes on after it;
** without such a line the range is halved. After a rejection the next
** attempts send a small window that doubles on success, so a batch of many
** bad rows costs one short COPY per bad row, not one whole batch. */
static int copy_range(copy_lane *ln, size_t lo, size_t hi, int *transient)
{
    int rc;
    size_t win = hi - lo;
    while (lo < hi) {
        size_t end = hi - lo > win ? lo + win : hi;
        size_t live = 0;
        for (size_t i = lo; i < end; i++)
            live += !ln->rows[i].bad;
        if (!live) {
            lo = end;
            continue;
        }
        rc = copy_exec(ln, "SAVEPOINT pgpipe_rows", 0, NULL, NULL, transient);
        if (rc == PGPIPE_OK)
            rc = copy_start_rows(ln, copy_rows_sql(ln->l), transient);
        if (rc != PGPIPE_OK)
            return rc;
        PGresult *err = NULL;
        rc = copy_send_range(ln, lo, end, transient);
        if (rc == PGPIPE_OK)
            rc = copy_end(ln, transient, &err);
        if (rc == PGPIPE_OK) {
            rc = copy_exec(ln, "RELEASE SAVEPOINT pgpipe_rows", 0, NULL, NULL, transient);
            if (rc != PGPIPE_OK)
                return rc;
            lo = end;
            win = win > (SIZE_MAX / 2) ? win : win * 2;
            continue;
        }
        if (*transient || copy_cancelled(ln->l)) {
            /* a cancelled COPY names the line it was at: no row to blame */
            PQclear(err);
            return rc;
        }
        rc = copy_exec(ln, "ROLLBACK TO SAVEPOINT pgpipe_rows; RELEASE SAVEPOINT pgpipe_rows",
                       0, NULL, NULL, transient);
        if (rc != PGPIPE_OK) {
            PQclear(err);
            return rc;
        }
        long long lnum = copy_context_line(err);
        size_t k = lnum > 0 ? copy_nth_sent(ln, lo, end, lnum) : (size_t)-1;
        if (k == (size_t)-1 && live == 1)
            k = copy_nth_sent(ln, lo, end, 1);
        if (k != (size_t)-1) {
            rc = copy_reject(ln, k, err);
            PQclear(err);
            if (rc != PGPIPE_OK)
                return rc;
            if (k > lo && (rc = copy_range(ln, lo, k, transient)) != PGPIPE_OK)
                return rc;
            win = 2 * (k - lo) > 16 ? 2 * (k - lo) : 16;
            lo = k + 1;
            continue;
        }
        PQclear(err);
        size_t mid = lo + (end - lo) / 2;
        if ((rc = copy_range(ln, lo, mid, transient)) != PGPIPE_OK ||
            (rc = copy_range(ln, mid, end, transient)) != PGPIPE_OK)
            return rc;
        lo = end;
    }
    return PGPIPE_OK;
}

/* Append s as a SQL string literal (the connection's quoting rules). */
static int copy_lit(pp_buf *q, PGconn *conn, const char *s)
{
    char *e = PQescapeLiteral(conn, s, strlen(s));
    if (!e)
        return PGPIPE_NOMEM;
    int rc = pp_buf_append(q, e, strlen(e));
    PQfreemem(e);
    return rc;
}

/* The batch boundary, in one round trip: the load_batches row, the loads
** counters and the NOTIFY in one statement, then COMMIT, in one simple query
** (values as literals); with ln->chain also BEGIN and the COPY of the next
** batch, so the server goes from the commit straight into the next COPY
** (ln->chained: that COPY is open). Statements after a failed one do not
** run: a row of pgpipe.loads that is another load's (a failover lost ours)
** fails the statement (a division by its count, 0) before the COMMIT.
** Dead letters, when the batch has any, go first in a COPY of their own.
** Batches of different lanes commit in any order: the loads row keeps the
** line and offset of its highest committed batch. */
static int copy_bookkeep_commit(copy_lane *ln, int *transient)
{
    const pgpipe_loader *l = ln->l;
    int rc;
    int chain = !PGPIPE_SMALL && ln->chain; /* (a size build: never chained) */
    ln->chained = 0;
    if (ln->dbuf.len) {
        /* the batch's dead letters, in its own transaction */
        rc = copy_start(ln, pp_dlq_load_copy_sql(), transient);
        if (rc == PGPIPE_OK)
            rc = copy_put(ln, ln->dbuf.data, ln->dbuf.len, transient);
        if (rc == PGPIPE_OK)
            rc = copy_end(ln, transient, NULL);
        if (rc != PGPIPE_OK)
            return rc;
    }
    long long loaded = (long long)ln->nrows - ln->b_dead_srv;
    long long dead = ln->b_dead_valid + ln->b_dead_srv;
    char payload[600];
    /* the payload is JSON; the target name is JSON-escaped */
    pp_buf t = { 0 };
    pp_json_str(&t, l->target, strlen(l->target), 0);
    snprintf(payload, sizeof payload, "{\"table\":%.*s,\"batch_id\":\"%s\",\"rows\":%lld,"
             "\"load_id\":%lld,\"seq\":%lld}", t.len < 400 ? (int)t.len : 2,
             t.len < 400 ? t.data : "\"\"", ln->uuid_text, loaded, l->load_id, ln->seq);
    pp_buf_free(&t);
    pp_buf q = { 0 };
    int e = pp_buf_appendf(&q,
        "WITH b AS (INSERT INTO pgpipe.load_batches (load_id, seq, batch_id, first_line, last_line, "
        "start_offset, end_offset, rows_read, rows_loaded, rows_dead_lettered) VALUES (%lld, %lld, ",
        l->load_id, ln->seq);
    e |= copy_lit(&q, ln->conn, ln->uuid_text);
    e |= pp_buf_appendf(&q, "::uuid, %lld, %lld, %lld, %lld, %lld, %lld, %lld) RETURNING 1), "
        "u AS (UPDATE pgpipe.loads SET rows_read = rows_read + %lld, rows_loaded = rows_loaded + "
        "%lld, rows_dead_lettered = rows_dead_lettered + %lld, batches = batches + 1, "
        "last_batch_seq = greatest(last_batch_seq, %lld), "
        "last_line = CASE WHEN %lld > last_batch_seq THEN %lld ELSE last_line END, "
        "last_offset = CASE WHEN %lld > last_batch_seq THEN %lld ELSE last_offset END, "
        "updated_at = now() WHERE id = %lld AND " COPY_LOAD_STARTED " = ",
        ln->b_first_line, ln->b_last_line, ln->b_start_off, ln->b_end_off, ln->b_read, loaded,
        dead, ln->b_read, loaded, dead, ln->seq, ln->seq, ln->b_last_line, ln->seq, ln->b_end_off,
        l->load_id);
    e |= copy_lit(&q, ln->conn, l->load_started);
    e |= pp_buf_appendf(&q, "::bigint RETURNING 1) SELECT (SELECT count(*) FROM b), "
                            "1 / (SELECT count(*) FROM u), (SELECT count(*) FROM (SELECT pg_notify(");
    e |= copy_lit(&q, ln->conn, l->channel ? l->channel : "");
    e |= pp_buf_appendf(&q, ", ");
    e |= copy_lit(&q, ln->conn, payload);
    e |= pp_buf_appendf(&q, ") WHERE %s AND %lld > 0) n); COMMIT",
                        l->channel && *l->channel ? "true" : "false", loaded);
    if (chain)
        e |= pp_buf_appendf(&q, "; " PP_BEGIN "; SET CONSTRAINTS ALL IMMEDIATE; %s", copy_rows_sql(l));
    e |= pp_buf_putc(&q, '\0');
    if (e) {
        pp_buf_free(&q);
        *transient = 0;
        return pp_err_nomem(&ln->err);
    }
    *transient = 0;
    if (!PQsendQuery(ln->conn, q.data)) {
        pp_buf_free(&q);
        *transient = PQstatus(ln->conn) != CONNECTION_OK;
        return pp_err_pq(&ln->err, ln->conn, NULL, "loader: booking the batch");
    }
    pp_buf_free(&q);
    /* results in order: the booking's row, COMMIT, then BEGIN, SET and the
    ** COPY of the next batch */
    int step = 0, committed = 0;
    rc = PGPIPE_OK;
    PGresult *r;
    while ((r = PQgetResult(ln->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_COPY_IN) {
            PQclear(r);
            if (committed && step == 4) {
                ln->chained = 1;
                /* (a header that cannot be sent: the connection is gone,
                ** which the batch's first send finds) */
                int t = 0;
                (void)copy_rows_started(ln, &t);
            } else {
                PQputCopyEnd(ln->conn, "unexpected"); /* cannot happen: end it */
            }
            if (ln->chained)
                break;
            continue;
        }
        if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
            if (!committed && rc == PGPIPE_OK) {
                const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
                if (step == 0 && state && !strcmp(state, "22012")) {
                    /* the id is another load's (a failover lost our row and
                    ** the sequence's advance): refused like a row that is
                    ** gone, which the end of the load finds out (copy_load_check) */
                    rc = pp_err(&ln->err, PGPIPE_DB, "loader: batch %lld: the row of load %lld in "
                                "pgpipe.loads is another load's or gone", ln->seq, l->load_id);
                    snprintf(ln->err.sqlstate, sizeof ln->err.sqlstate, "23503");
                } else {
                    *transient = pgpipe_pq_is_transient(ln->conn, r);
                    rc = pp_err_pq(&ln->err, ln->conn, r, "loader: committing the batch");
                }
            }
            /* after the COMMIT only the next batch's start failed: that
            ** batch opens its COPY itself */
            PQclear(r);
            continue;
        }
        if (step == 1 && !strcmp(PQcmdStatus(r), "COMMIT"))
            committed = 1;
        step++;
        PQclear(r);
    }
    if (rc == PGPIPE_OK && !committed) {
        *transient = 1;
        rc = pp_err_pq(&ln->err, ln->conn, NULL, "loader: committing the batch");
    }
    if (committed && !ln->chained) {
        rc = PGPIPE_OK; /* the batch is in; what follows did not start */
        *transient = 0;
        pgpipe_error_clear(&ln->err);
        copy_rollback(ln);
    }
    if (rc != PGPIPE_OK && PQstatus(ln->conn) != CONNECTION_OK)
        *transient = 1;
    return rc;
}

/* The whole batch from its buffer, in one transaction. */
static int copy_batch_slow(copy_lane *ln, int *transient)
{
    /* forget what an earlier attempt isolated */
    ln->dbuf.len = ln->dbuf_valid;
    ln->b_dead_srv = 0;
    for (size_t i = 0; i < ln->nrows; i++)
        ln->rows[i].bad = 0;
    int rc = copy_exec(ln, PP_BEGIN "; SET CONSTRAINTS ALL IMMEDIATE", 0, NULL, NULL, transient);
    if (rc == PGPIPE_OK)
        rc = copy_range(ln, 0, ln->nrows, transient);
    int chain = ln->chain;
    ln->chain = 0; /* the next batch opens its own COPY */
    if (rc == PGPIPE_OK)
        rc = copy_bookkeep_commit(ln, transient);
    ln->chain = chain;
    if (rc != PGPIPE_OK && !*transient)
        copy_rollback(ln);
    return rc;
}

/* The streamed fast path: finish the COPY, book, commit (and, with
** ln->chain, start the next batch's COPY). *fallback is set when the batch
** should go the slow way (a row was rejected). */
static int copy_batch_fast(copy_lane *ln, int *transient, int *fallback)
{
    *fallback = 0;
    int rc = PGPIPE_OK;
    if (ln->copy_open) {
        /* (a COPY started for this batch may have no rows: all were dead letters) */
        rc = copy_put(ln, ln->cbuf.data + ln->sent, ln->cbuf.len - ln->sent, transient);
        if (rc == PGPIPE_OK)
            rc = copy_end(ln, transient, NULL);
        ln->copy_open = 0;
        if (rc != PGPIPE_OK) {
            if (*transient)
                return rc;
            copy_rollback(ln);
            *fallback = 1;
            return PGPIPE_OK;
        }
    } else if (ln->nrows) {
        return *fallback = 1, PGPIPE_OK;
    } else {
        rc = copy_exec(ln, PP_BEGIN, 0, NULL, NULL, transient);
        if (rc != PGPIPE_OK)
            return rc;
    }
    rc = copy_bookkeep_commit(ln, transient);
    if (rc != PGPIPE_OK && !*transient)
        copy_rollback(ln);
    return rc;
}

/* Was the lane's batch committed (by an attempt whose reply was lost)? */
static int copy_batch_committed(copy_lane *ln, int *yes, int *ours, int *transient)
{
    char a[32], b[32];
    snprintf(a, sizeof a, "%lld", ln->l->load_id);
    snprintf(b, sizeof b, "%lld", ln->seq);
    const char *v[2] = { a, b };
    PGresult *r;
    int rc = copy_exec(ln, "SELECT rows_loaded, batch_id::text FROM pgpipe.load_batches "
                           "WHERE load_id = $1::bigint AND seq = $2::bigint", 2, v, &r, transient);
    if (rc != PGPIPE_OK)
        return rc;
    *yes = PQntuples(r) == 1;
    *ours = *yes && !strcmp(PQgetvalue(r, 0, 1), ln->uuid_text);
    if (*ours) {
        long long loaded = atoll(PQgetvalue(r, 0, 0));
        ln->b_dead_srv = (long long)ln->nrows - loaded;
    }
    PQclear(r);
    return PGPIPE_OK;
}

static void copy_stream_open(copy_lane *ln);

/* Commit the lane's batch, whatever it takes (within max_retries); the
** outcome goes to ln->rc and the ln->r_* counts. Runs on the lane's thread
** (or the loader's, with one lane) and touches nothing but the lane and the
** loader's options. */
static void copy_lane_commit(copy_lane *ln)
{
    pgpipe_retry rt;
    pgpipe_retry_init(&rt, ln->l->max_retries + 1, 100, 2000);
    int transient = 0, fallback = 0, rc, yes = 0, ours = 0;
    if (ln->nrows && !ln->copy_open && !ln->stream_broken)
        copy_stream_open(ln); /* not streamed while it filled */
    int fast = !ln->stream_broken && ln->conn != NULL;
    for (;;) {
        yes = ours = 0;
        if (copy_cancelled(ln->l)) {
            /* cancelled before this attempt (the last one's failure may have
            ** been the cancel, swallowed by copy_stream_open) */
            if (ln->copy_open)
                copy_abandon(ln);
            else
                copy_rollback(ln);
            ln->rc = pp_err(&ln->err, PGPIPE_BUSY, "loader: cancelled: batch %lld (lines %lld-%lld) "
                            "is not committed", ln->seq, ln->b_first_line, ln->b_last_line);
            return;
        }
        if (fast) {
            rc = copy_batch_fast(ln, &transient, &fallback);
            fast = 0;
            if (rc == PGPIPE_OK && fallback && copy_cancelled(ln->l))
                continue; /* the COPY failed on the cancel: not a row to isolate */
            if (rc == PGPIPE_OK && fallback)
                rc = copy_batch_slow(ln, &transient);
        } else {
            rc = copy_connect(ln, &transient);
            if (rc == PGPIPE_OK)
                rc = copy_batch_committed(ln, &yes, &ours, &transient);
            if (rc == PGPIPE_OK && !yes)
                rc = copy_batch_slow(ln, &transient);
        }
        if (rc == PGPIPE_OK)
            break;
        if (copy_cancelled(ln->l)) {
            /* nothing is retried; a COMMIT the cancel cut short while it
            ** waited for a synchronous standby succeeded (above) */
            copy_rollback(ln);
            char why[sizeof ln->err.message];
            snprintf(why, sizeof why, "%s", ln->err.message);
            ln->rc = pp_err(&ln->err, PGPIPE_BUSY, "loader: cancelled: batch %lld (lines %lld-%lld) "
                            "is not committed (%.400s)", ln->seq, ln->b_first_line, ln->b_last_line,
                            why);
            return;
        }
        if (!transient) {
            /* a duplicate load_batches key: the batch was committed by
            ** another run of the same load (its row won: the batch is
            ** theirs, skip it), or by an earlier attempt of ours whose
            ** COMMIT was still in flight when we looked after reconnecting
            ** (same batch id: it is committed, count it). When looking
            ** fails on a lost connection, reconnect and look again. */
            if (strcmp(ln->err.sqlstate, "23505") != 0) {
                ln->rc = rc;
                return;
            }
            int t = 0;
            if (ln->conn && PQstatus(ln->conn) == CONNECTION_OK &&
                copy_batch_committed(ln, &yes, &ours, &t) == PGPIPE_OK) {
                if (yes)
                    break;
                ln->rc = rc;
                return;
            }
            if (ln->conn && PQstatus(ln->conn) == CONNECTION_OK && !t) {
                ln->rc = rc;
                return;
            }
        }
        int d = pgpipe_retry_next_delay(&rt);
        if (d < 0) {
            ln->rc = rc;
            return;
        }
        pp_logf(PGPIPE_LOG_INFO, "loader", "batch %lld: %s; reconnecting in %d ms", ln->seq,
                ln->err.message, d);
        copy_drop_conn(ln, 1);
        pgpipe_sleep_ms(d);
    }
    ln->rc = PGPIPE_OK;
    pgpipe_error_clear(&ln->err);
    if (yes && !ours) {
        pp_logf(PGPIPE_LOG_WARN, "loader", "load %lld batch %lld was committed by another run: "
                "skipped", ln->l->load_id, ln->seq);
        ln->r_skipped_rows += ln->b_read;
        ln->r_skipped_batches++;
        return;
    }
    ln->r_loaded += (long long)ln->nrows - ln->b_dead_srv;
    ln->r_dead += ln->b_dead_valid + ln->b_dead_srv;
    ln->r_batches++;
    ln->r_at_cancel = copy_cancelled(ln->l);
}

/* ---- batches and lanes ------------------------------------------------------ */

PGPIPE_PRIVATE void copy_batch_reset(copy_lane *ln)
{
    ln->cbuf.len = ln->rbuf.len = ln->dbuf.len = 0;
    ln->dbuf_valid = 0;
    ln->nrows = 0;
    ln->b_read = ln->b_dead_valid = ln->b_dead_srv = ln->b_bytes = 0;
    /* a COPY its predecessor's commit started for it stays open */
    ln->copy_open = ln->chained;
    ln->stream_broken = 0;
    ln->sent = 0;
    ln->skipping = 0;
}

#ifndef PGPIPE_OMIT_THREADS
static void *copy_lane_main(void *arg)
{
    copy_lane *ln = arg;
    pgpipe_loader *l = ln->l;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (ln->state != COPY_LANE_QUEUED && !l->quit)
            pthread_cond_wait(&l->cv, &l->mu);
        if (ln->state != COPY_LANE_QUEUED)
            break;
        pthread_mutex_unlock(&l->mu);
        copy_lane_commit(ln);
        pthread_mutex_lock(&l->mu);
        ln->state = COPY_LANE_DONE;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}
#endif

/* Start a thread per lane for this load; with one lane, or when a thread
** cannot be started, batches commit on the loader's thread. */
PGPIPE_PRIVATE void copy_lanes_start(pgpipe_loader *l)
{
    l->threaded = 0;
    l->quit = 0;
#ifndef PGPIPE_OMIT_THREADS
    if (l->nlanes < 2)
        return;
    int i;
    for (i = 0; i < l->nlanes; i++)
        if (pthread_create(&l->lanes[i].tid, NULL, copy_lane_main, &l->lanes[i]) != 0)
            break;
    if (i == l->nlanes) {
        l->threaded = 1;
        return;
    }
    pthread_mutex_lock(&l->mu);
    l->quit = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    while (i-- > 0)
        pthread_join(l->lanes[i].tid, NULL);
    pp_logf(PGPIPE_LOG_WARN, "loader", "cannot start the lanes' threads: loading on one connection");
#endif
}

PGPIPE_PRIVATE void copy_lanes_stop(pgpipe_loader *l)
{
#ifndef PGPIPE_OMIT_THREADS
    if (!l->threaded)
        return;
    pthread_mutex_lock(&l->mu);
    l->quit = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->nlanes; i++)
        pthread_join(l->lanes[i].tid, NULL);
    l->threaded = 0;
#else
    (void)l;
#endif
}

static int copy_progress(pgpipe_loader *l);

/* Take in a committed lane's outcome (loader's thread, the lane FREE
** again). The first error stops the load; the progress callback hears of
** every batch. */
static int copy_lane_fold(pgpipe_loader *l, copy_lane *ln)
{
    /* booked to be checked at the end: ours, and those another run
    ** committed beside us (a failover may lose them as much as ours, and
    ** that run may have ended before it, never to check them); not those
    ** an earlier run committed (skipping: done_seqs, checked already) */
    int brc = ln->r_batches || (ln->r_skipped_batches && !ln->skipping) ? copy_book(l, ln)
                                                                         : PGPIPE_OK;
    if (ln->r_at_cancel) {
        l->sum.batches_at_cancel++;
        pp_logf(PGPIPE_LOG_WARN, "loader", "load %lld batch %lld committed while the load was "
                "being cancelled: the server has it, but if its COMMIT was waiting for a "
                "synchronous standby, that standby may not", l->load_id, ln->seq);
        ln->r_at_cancel = 0;
    }
    if (ln->reconnected)
        copy_after_reconnect(l, ln);
    l->sum.retries += ln->r_retries;
    l->sum.rows_loaded += ln->r_loaded;
    l->sum.rows_dead += ln->r_dead;
    l->sum.batches += ln->r_batches;
    l->sum.rows_skipped += ln->r_skipped_rows;
    l->sum.batches_skipped += ln->r_skipped_batches;
    ln->r_retries = ln->r_loaded = ln->r_dead = ln->r_batches = 0;
    ln->r_skipped_rows = ln->r_skipped_batches = 0;
    int rc = ln->rc;
    ln->rc = PGPIPE_OK;
    copy_batch_reset(ln);
    if (rc != PGPIPE_OK) {
        l->hdr.err = ln->err;
        return rc;
    }
    if (brc != PGPIPE_OK)
        return brc;
    return copy_progress(l);
}

/* A free lane for the next batch: folds what the lanes committed meanwhile
** and, when every lane is busy, waits for one. wait_all: wait for every
** lane (the end of a load). The first error is returned, after the wait. */
PGPIPE_PRIVATE int copy_lanes_collect(pgpipe_loader *l, copy_lane **free_lane, int wait_all)
{
    int rc = PGPIPE_OK;
    if (free_lane)
        *free_lane = NULL;
    if (!l->threaded) { /* lanes[0] commits on this thread: it is free */
        (void)wait_all;
        if (free_lane)
            *free_lane = &l->lanes[0];
        return rc;
    }
#ifndef PGPIPE_OMIT_THREADS
    pgpipe_error first; /* the first error is the one reported */
    int n = l->nlanes;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        int busy = 0;
        copy_lane *done = NULL, *idle = NULL;
        for (int i = 0; i < n; i++) {
            copy_lane *ln = &l->lanes[i];
            if (ln->state == COPY_LANE_DONE && !done)
                done = ln;
            else if (ln->state == COPY_LANE_QUEUED)
                busy++;
            else if (ln->state == COPY_LANE_FREE && !idle)
                idle = ln;
        }
        if (done) {
            done->state = COPY_LANE_FREE;
            pthread_mutex_unlock(&l->mu);
            int frc = copy_lane_fold(l, done);
            if (rc == PGPIPE_OK && frc != PGPIPE_OK) {
                rc = frc;
                first = l->hdr.err;
            }
            pthread_mutex_lock(&l->mu);
            continue;
        }
        if (wait_all ? busy == 0 : (idle != NULL || rc != PGPIPE_OK)) {
            if (free_lane && rc == PGPIPE_OK)
                *free_lane = idle;
            break;
        }
        pthread_cond_wait(&l->cv, &l->mu);
    }
    pthread_mutex_unlock(&l->mu);
    if (rc != PGPIPE_OK)
        l->hdr.err = first;
#endif
    return rc;
}

/* Hand the filled lane over to be committed. */
static int copy_lane_handoff(pgpipe_loader *l, copy_lane *ln)
{
    if (!l->threaded) {
        copy_lane_commit(ln);
        return copy_lane_fold(l, ln);
    }
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_lock(&l->mu);
    ln->state = COPY_LANE_QUEUED;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
#endif
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int copy_batch_begin(pgpipe_loader *l, long long line, long long off)
{
    copy_lane *ln;
    /* the batch before is full and the next record is here: its commit
    ** starts this batch's COPY (unless an earlier run committed this one) */
    int rc = copy_batch_close_pending(l, !PGPIPE_SMALL && !copy_seq_done(l, l->seq + 1));
    if (rc == PGPIPE_OK)
        rc = copy_lanes_collect(l, &ln, 0);
    if (rc != PGPIPE_OK)
        return rc;
    if (copy_cancelled(l))
        return copy_errf(l, PGPIPE_BUSY, "loader: cancelled before batch %lld", l->seq + 1);
    copy_batch_reset(ln);
    ln->chained = 0; /* the batch owns the open COPY now */
    l->cur = ln;
    ln->seq = ++l->seq;
    ln->skip_rows = copy_seq_rows(l, ln->seq);
    ln->skipping = ln->skip_rows >= 0;
    if (!ln->skipping && (rc = copy_new_uuid(l, ln)) != PGPIPE_OK)
        return rc;
    ln->b_first_line = line;
    ln->b_start_off = off;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void copy_report(pgpipe_loader *l)
{
    l->sum.seconds = (double)(pgpipe_now_us() - l->t0) / 1e6;
    l->sum.bytes = l->in_bytes;
    l->sum.rows_per_sec = l->sum.seconds > 0 ? (double)l->sum.records_read / l->sum.seconds : 0;
}

static int copy_progress(pgpipe_loader *l)
{
    copy_report(l);
    if (!l->progress)
        return PGPIPE_OK;
    pgpipe_load_progress p;
    p.bytes_done = l->in_bytes;
    p.bytes_total = l->src_size;
    p.records_read = l->sum.records_read;
    p.rows_loaded = l->sum.rows_loaded;
    p.rows_dead = l->sum.rows_dead;
    p.rows_skipped = l->sum.rows_skipped;
    p.batches = l->sum.batches;
    p.seconds = l->sum.seconds;
    if (l->progress(l->progress_ud, &p))
        return copy_errf(l, PGPIPE_BUSY, "loader: stopped by the progress callback after batch %lld",
                         l->seq);
    return PGPIPE_OK;
}

/* The current batch is complete: commit it (or count it, when an earlier
** run committed it). */
PGPIPE_PRIVATE int copy_batch_end(pgpipe_loader *l)
{
    copy_lane *ln = l->cur;
    if (!ln)
        return PGPIPE_OK;
    l->cur = NULL;
    if (ln->skipping) {
        ln->r_skipped_rows += ln->b_read;
        ln->r_skipped_batches++;
        return copy_lane_fold(l, ln);
    }
    if (!l->threaded && ln->copy_open && !ln->stream_broken) {
        /* one lane, streamed: committed when the next record arrives (its
        ** COPY then starts in the commit's round trip) or at the end of the
        ** input chunk at hand, whichever comes first */
        l->pending = ln;
        return PGPIPE_OK;
    }
    return copy_lane_handoff(l, ln);
}

/* Commit the full batch waiting for the next record (one lane); chain: start
** the next batch's COPY in the same round trip. */
PGPIPE_PRIVATE int copy_batch_close_pending(pgpipe_loader *l, int chain)
{
    copy_lane *ln = l->pending;
    if (!ln)
        return PGPIPE_OK;
    l->pending = NULL;
    ln->chain = chain && !copy_cancelled(l);
    copy_lane_commit(ln);
    ln->chain = 0;
    return copy_lane_fold(l, ln);
}

/* The end of a load on one lane: a COPY its last commit started for a next
** batch that never came ends with no rows, and its transaction rolls back
** (no error on the server); a batch stopped half-way is abandoned. */
PGPIPE_PRIVATE void copy_stream_close(pgpipe_loader *l)
{
    copy_lane *ln = l->cur;
    l->cur = NULL;
    if (ln) {
        ln->chained = 0;
        copy_abandon(ln);
        return;
    }
    for (int i = 0; i < COPY_MAX_LANES; i++) {
        ln = &l->lanes[i];
        if (!ln->chained)
            continue;
        ln->chained = 0;
        if (ln->copy_open && ln->conn && PQstatus(ln->conn) == CONNECTION_OK &&
            PQputCopyEnd(ln->conn, NULL) == 1) {
            PGresult *r;
            while ((r = PQgetResult(ln->conn)) != NULL) {
                if (PQresultStatus(r) == PGRES_COPY_IN) { /* cannot happen */
                    PQclear(r);
                    PQputCopyEnd(ln->conn, "load stopped");
                    continue;
                }
                PQclear(r);
            }
            ln->copy_open = 0;
        }
        copy_abandon(ln);
    }
}

/* A record was read (loaded or dead-lettered): count it, close a full batch. */
PGPIPE_PRIVATE int copy_record_done(pgpipe_loader *l, long long line, long long off, size_t rawlen)
{
    copy_lane *ln = l->cur;
    ln->b_read++;
    l->sum.records_read++;
    ln->b_bytes += (long long)rawlen + 1;
    ln->b_last_line = line;
    ln->b_end_off = off + (long long)rawlen;
    /* a batch an earlier run committed ends where that run's ended, at its
    ** number of records: its last batch, cut short by the end of the input
    ** then, is followed by records that input has gained since */
    if (ln->skipping ? ln->b_read >= ln->skip_rows
                     : ln->b_read >= l->batch_rows || (size_t)ln->b_bytes >= l->batch_bytes)
        return copy_batch_end(l);
    return PGPIPE_OK;
}

/* Begin the batch's transaction and COPY on the lane (connecting it if it
** never was). A failure only marks the stream broken: the batch then goes
** the slow way when it is committed. */
static void copy_stream_open(copy_lane *ln)
{
    int transient = 0;
    if (!ln->conn && !ln->connected_once)
        copy_connect(ln, &transient);
    if (!ln->conn || PQstatus(ln->conn) != CONNECTION_OK) {
        ln->stream_broken = 1;
        return;
    }
    /* one round trip: the server stops at the first statement that fails */
    char sql[sizeof PP_BEGIN + 32 + 1024];
    const char *q = copy_rows_sql(ln->l);
    if (strlen(q) < 1024) {
        snprintf(sql, sizeof sql, PP_BEGIN "; SET CONSTRAINTS ALL IMMEDIATE; %s", q);
        q = sql;
    } else if (copy_exec(ln, PP_BEGIN "; SET CONSTRAINTS ALL IMMEDIATE", 0, NULL, NULL,
                         &transient) != PGPIPE_OK) {
        copy_rollback(ln);
        ln->stream_broken = 1;
        return;
    }
    if (copy_start_rows(ln, q, &transient) != PGPIPE_OK) {
        copy_rollback(ln);
        ln->stream_broken = 1;
        return;
    }
    ln->copy_open = 1;
    ln->sent = 0;
}

/* With one lane the batch streams to the server while it fills: the COPY
** begins at the first row and the buffer is sent every COPY_SEND_CHUNK
** bytes. (With several, the lane's thread sends the whole batch: filling
** stays ahead of every server instead of waiting on one.) */
PGPIPE_PRIVATE void copy_stream(copy_lane *ln)
{
    if (PGPIPE_SMALL || ln->stream_broken || ln->l->threaded)
        return; /* (a size build sends a batch whole, at its commit) */
    if (!ln->copy_open) {
        copy_stream_open(ln);
        if (!ln->copy_open)
            return;
    }
    if (ln->cbuf.len - ln->sent >= COPY_SEND_CHUNK) {
        int transient = 0;
        if (copy_put(ln, ln->cbuf.data + ln->sent, ln->cbuf.len - ln->sent, &transient) != PGPIPE_OK) {
            ln->stream_broken = 1;
            ln->copy_open = 0;
            return;
        }
        ln->sent = ln->cbuf.len;
    }
}
