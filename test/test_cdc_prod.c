/* CDC as operators deploy it, with pgbouncer (pgt_bouncer_dsn, test_cdc.c's
** source cluster): the target behind a transaction-mode pooler streams
** exactly once and leaves no session setting on the pooler's server
** connections for other clients to inherit; a source conninfo that reaches
** the pooler is refused naming the pooler. */

/* The target in transaction mode: pgbouncer hands each target transaction
** to one of its 2 server connections. A session-level SET synchronous_commit
** = off would stay on that server connection, and other clients' commits on
** it would stop waiting for the WAL flush without their knowing. */
PGT_TEST(cdc, prod_target_behind_transaction_pooler)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_pbt", src, sizeof src, NULL);
    PGconn *t = pgt_db_fresh("cdc_pbt_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_pbt_t", pgt_bouncer_dsn("transaction"));
    PQclear(PGT_EXEC(s, "CREATE TABLE g (id int PRIMARY KEY, v text)"));
    pgpipe_cdc *c = NULL;
    int rc = cdc_open(&c, src, tgt, "cpb", "g");
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c));
    /* 100 transactions of 10 rows */
    PQclear(PGT_EXEC(s, "DO $$ BEGIN FOR b IN 0 .. 99 LOOP "
                        "INSERT INTO g SELECT b * 10 + k, 'v' FROM generate_series(1, 10) k; COMMIT; "
                        "END LOOP; END $$"));
    cdc_run_until(c, t, "cpb", 1000);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(DISTINCT (payload->'row'->>'id')::int) "
                             "FROM staging.raw_events WHERE source = 'cpb'"), 1000);
    pgpipe_cdc_close(c);
    /* two clients of the pooler, each in a transaction, hold both server
    ** connections: neither has a synchronous_commit set by the session */
    PGconn *a[2];
    for (int i = 0; i < 2; i++) {
        a[i] = PQconnectdb(tgt);
        PGT_CHECK_MSG(PQstatus(a[i]) == CONNECTION_OK, "%s", PQerrorMessage(a[i]));
        PQclear(PGT_EXEC(a[i], "BEGIN"));
        const char *src_of = pgt_db_str(a[i], "SELECT source FROM pg_settings "
                                              "WHERE name = 'synchronous_commit'");
        PGT_CHECK_MSG(strcmp(src_of, "session") != 0,
                      "server connection %d of the pooler kept the CDC session's "
                      "synchronous_commit", i + 1);
    }
    for (int i = 0; i < 2; i++) {
        PQclear(PGT_EXEC(a[i], "COMMIT"));
        PQfinish(a[i]);
    }
    pgpipe_error err;
    PGT_OK(pgpipe_cdc_drop(src, tgt, "cpb", "cpb", &err));
    PQfinish(s);
    pgt_db_close(t);
    pgt_bouncer_stop();
}

/* The source through pgbouncer: its replication connection cannot pass
** (pgbouncer before 1.23 refuses the startup parameter; later ones only in
** session mode); the error names the pooler and what to give instead. */
PGT_TEST(cdc, prod_source_through_pooler_is_named)
{
    char src[1200], tgt[1200], viabouncer[1400];
    PGconn *s = cdc_src_fresh("cdc_pbs", src, sizeof src, NULL);
    PGconn *t = pgt_db_fresh("cdc_pbs_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_pbs_t", pgt_dsn());
    PQclear(PGT_EXEC(s, "CREATE TABLE g (id int PRIMARY KEY)"));
    /* a pgbouncer in front of the source cluster */
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", pgt_dsn());
    setenv("PGPIPE_TEST_DSN", cdc_src_base(), 1);
    snprintf(viabouncer, sizeof viabouncer, "%s dbname=cdc_pbs", pgt_bouncer_dsn("session"));
    setenv("PGPIPE_TEST_DSN", saved, 1);
    pgpipe_cdc *c = NULL;
    int rc = cdc_open(&c, viabouncer, tgt, "cps", "g");
    if (rc == PGPIPE_OK) {
        /* a pgbouncer that passes replication connections (1.23+, session
        ** mode): then it must work */
        rc = pgpipe_cdc_run(c, 500);
        PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", pgpipe_errmsg(c));
    } else {
        PGT_CONTAINS(pgpipe_errmsg(c), "connection pooler");
        PGT_CONTAINS(pgpipe_errmsg(c), "does not pass replication connections");
    }
    pgpipe_cdc_close(c);
    pgpipe_error err;
    pgpipe_cdc_drop(src, tgt, "cps", "cps", &err);
    PQfinish(s);
    pgt_db_close(t);
    pgt_bouncer_stop();
}

/* The slot goes while the target holds changes from it (a failover of the
** source to a standby, which in PostgreSQL 15 has no logical slots, looks
** the same: the same system, no slot): the run ends with an error naming the
** slot and the failover, never a new slot that would start after changes
** nobody staged, and it does not loop. */
PGT_TEST(cdc, prod_slot_gone_mid_run_is_reported)
{
    char src[1200], tgt[1200];
    PGconn *s = cdc_src_fresh("cdc_gone", src, sizeof src, NULL);
    PGconn *t = pgt_db_fresh("cdc_gone_t");
    snprintf(tgt, sizeof tgt, "%s dbname=cdc_gone_t", pgt_dsn());
    PQclear(PGT_EXEC(s, "CREATE TABLE g (id int PRIMARY KEY)"));
    pgpipe_cdc *c = NULL;
    PGT_OK(cdc_open(&c, src, tgt, "cgo", "g"));
    PQclear(PGT_EXEC(s, "INSERT INTO g SELECT generate_series(1, 10)"));
    cdc_run_until(c, t, "cgo", 10);
    pgpipe_cdc_close(c);
    PGT_OK(cdc_open(&c, src, tgt, "cgo", "g"));
    /* between the open and the stream's start, the slot goes */
    PQclear(PGT_EXEC(s, "SELECT pg_drop_replication_slot('cgo')"));
    PQclear(PGT_EXEC(s, "INSERT INTO g SELECT generate_series(11, 20)"));
    int rc = pgpipe_cdc_run(c, 20000);
    PGT_EQ_INT(rc, PGPIPE_ERROR);
    PGT_CONTAINS(pgpipe_errmsg(c), "slot \"cgo\" is gone from the source");
    PGT_CONTAINS(pgpipe_errmsg(c), "failed over to a standby");
    PGT_CONTAINS(pgpipe_errmsg(c), ".cdc drop");
    pgpipe_cdc_stats st;
    pgpipe_cdc_stats_get(c, &st);
    PGT_EQ_INT(st.reconnects, 0);
    pgpipe_cdc_close(c);
    PGT_EQ_INT(pgt_db_int(s, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'cgo'"), 0);
    PGT_EQ_INT(pgt_db_int(t, "SELECT count(*) FROM staging.raw_events WHERE source = 'cgo'"), 10);
    pgpipe_error err;
    pgpipe_cdc_drop(src, tgt, "cgo", "cgo", &err);
    PQfinish(s);
    pgt_db_close(t);
}
