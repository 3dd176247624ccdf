/* Tests of the built-in schema and the example pipeline (src/db/schema.c and
** sql/), each in a database of its own. */

PGT_TEST(schema, install_idempotent)
{
    PGconn *c = pgt_db_fresh("mig_schema_t");
    pgpipe_error err;
    int rc = pgpipe_schema_install(c, NULL, &err);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", err.message);
    PGT_OK(pgpipe_schema_install(c, NULL, &err));
    /* every embedded sql/schema file is applied once, however many there are */
    int embedded = 0;
    for (int i = 0; i < pgpipe_sql_file_count(); i++)
        embedded += strncmp(pgpipe_sql_file_path(i), "schema/", 7) == 0;
    PGT_CHECK(embedded >= 3);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.migrations WHERE scope = 'schema' "
                            "AND status = 'applied'"), embedded);
    const char *tables[] = { "staging.raw_events", "staging.raw_events_default", "pgpipe.loads",
                             "pgpipe.load_batches", "pgpipe.dead_letters", "pgpipe.migrations" };
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char sql[200];
        snprintf(sql, sizeof sql, "SELECT to_regclass('%s') IS NOT NULL", tables[i]);
        PGT_EQ_STR(pgt_db_str(c, sql), "t");
    }
    PGT_EQ_STR(pgt_db_str(c, "SELECT pg_get_partkeydef('staging.raw_events'::regclass)"),
               "RANGE (received_at)");
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_indexes WHERE schemaname = 'staging' AND "
                            "tablename = 'raw_events' AND (indexdef LIKE '%USING brin%' OR "
                            "indexdef LIKE '%WHERE (NOT processed)%' OR "
                            "indexdef LIKE '%payload ->> ''user_id''%')"), 3);
    /* the payload-key index leaves out the rows without the key (V0033) */
    PGT_EQ_STR(pgt_db_str(c, "SELECT pg_get_expr(indpred, indrelid) FROM pg_index "
                            "WHERE indexrelid = 'staging.raw_events_user_id_idx'::regclass"),
               "((payload ->> 'user_id'::text) IS NOT NULL)");
    /* ... and a lookup by the key still uses it */
    PQclear(PGT_EXEC(c, "SET enable_seqscan = off"));
    PGresult *plan = PGT_EXEC(c, "EXPLAIN SELECT * FROM staging.raw_events "
                                 "WHERE payload ->> 'user_id' = '7'");
    int seq = 0;
    for (int i = 0; i < PQntuples(plan); i++)
        seq += strstr(PQgetvalue(plan, i, 0), "Seq Scan") != NULL;
    PQclear(plan);
    PQclear(PGT_EXEC(c, "RESET enable_seqscan"));
    PGT_EQ_INT(seq, 0);
    /* yesterday .. today + 7 exist */
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.raw_events_partitions "
                            "WHERE partition <> 'raw_events_default'"), 9);
    /* a row for any time is accepted; one from today lands in today's partition */
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload) "
                        "VALUES ('t', 'x', '{\"user_id\": 7}')"));
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload, received_at) "
                        "VALUES ('t', 'x', '{}', '1999-01-01')"));
    PGT_EQ_STR(pgt_db_str(c, "SELECT tableoid::regclass::text FROM staging.raw_events "
                            "WHERE received_at > '2000-01-01'"),
               pgt_db_str(c, "SELECT 'staging.raw_events_p' || to_char(now() AT TIME ZONE 'UTC', "
                            "'YYYYMMDD')"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events_default"), 1);
    /* the optional GIN index */
    PGT_EQ_STR(pgt_db_str(c, "SELECT pgpipe.raw_events_payload_gin(true)"), "t");
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_indexes WHERE indexname = 'raw_events_payload_gin'"), 1);
    PGT_EQ_STR(pgt_db_str(c, "SELECT pgpipe.raw_events_payload_gin(false)"), "f");
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_indexes WHERE indexname = 'raw_events_payload_gin'"), 0);
    /* the tables the loader and the dead-letter queue write */
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.loads (source, format) VALUES ('a.csv', 'csv')"));
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.load_batches (load_id, seq, batch_id, rows_loaded) "
                        "SELECT id, 1, gen_random_uuid(), 10 FROM pgpipe.loads"));
    PQclear(PGT_EXEC(c, "INSERT INTO pgpipe.dead_letters (stage, source_name, line_number, "
                        "raw_text, error_message, sqlstate) VALUES ('load', 'a.csv', 3, 'x,y', "
                        "'bad json', '22P02')"));
    pgt_db_close(c);
}

PGT_TEST(schema, partitions_maintenance_and_retention)
{
    PGconn *c = pgt_db_fresh("mig_part_t");
    pgt_db_install(c);
    /* rows 40 days ahead land in DEFAULT; creating that day's partition moves them */
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload, received_at) "
                        "SELECT 's', 'e', jsonb_build_object('n', g), "
                        "(now() AT TIME ZONE 'UTC')::date + 40 + interval '1 hour' * (g % 24) "
                        "FROM generate_series(1, 100) g"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events_default"), 100);
    PGT_EQ_INT(pgt_db_int(c, "SELECT pgpipe.create_partitions(2, "
                            "(now() AT TIME ZONE 'UTC')::date + 39)"), 3);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events_default"), 0);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events WHERE tableoid = "
                            "format('staging.raw_events_p%s', to_char((now() AT TIME ZONE 'UTC')::date + 40, "
                            "'YYYYMMDD'))::regclass"), 100);
    /* the moved partition has the indexes of the parent (pkey, unprocessed, BRIN, user_id) */
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_indexes WHERE tablename = format("
                            "'raw_events_p%s', to_char((now() AT TIME ZONE 'UTC')::date + 40, "
                            "'YYYYMMDD'))"), 4);
    /* calling again creates nothing */
    PGT_EQ_INT(pgt_db_int(c, "SELECT pgpipe.create_partitions(2, "
                            "(now() AT TIME ZONE 'UTC')::date + 39)"), 0);
    /* more than a year ahead (a careless 36500) is refused and creates nothing */
    {
        const char *parts = "SELECT count(*) FROM pg_inherits WHERE inhparent = "
                            "'staging.raw_events'::regclass";
        long long before = pgt_db_int(c, parts);
        PGresult *r = PQexec(c, "SELECT pgpipe.create_partitions(36500)");
        PGT_EQ_INT(PQresultStatus(r), PGRES_FATAL_ERROR);
        PGT_CONTAINS(PQresultErrorMessage(r), "ahead_days is at most 366");
        PQclear(r);
        PGT_EQ_INT(pgt_db_int(c, parts), before);
    }

    /* retention: three old days; one still holds an unprocessed row */
    PGT_EQ_INT(pgt_db_int(c, "SELECT pgpipe.create_partitions(2, "
                            "(now() AT TIME ZONE 'UTC')::date - 50)"), 3);
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload, received_at, processed) "
                        "SELECT 's', 'e', '{}', (now() AT TIME ZONE 'UTC')::date - 50 + d "
                        "+ interval '3 hours', d <> 2 FROM generate_series(0, 2) d"));
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload, received_at, processed) "
                        "VALUES ('s', 'e', '{}', now() - interval '400 days', true)"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT pgpipe.drop_old_partitions(30, detach_only => true)"), 2);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events WHERE received_at < now() - "
                            "interval '30 days'"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events_default"), 0);
    /* detached, not dropped */
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_class WHERE relname = format('raw_events_p%s', "
                            "to_char((now() AT TIME ZONE 'UTC')::date - 50, 'YYYYMMDD')) "
                            "AND NOT relispartition"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT pgpipe.drop_old_partitions(30, include_unprocessed => true)"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events WHERE received_at < now() - "
                            "interval '30 days'"), 0);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_class WHERE relname = format('raw_events_p%s', "
                            "to_char((now() AT TIME ZONE 'UTC')::date - 48, 'YYYYMMDD'))"), 0);
    /* today's partitions are untouched */
    PGT_CHECK(pgt_db_int(c, "SELECT count(*) FROM pgpipe.raw_events_partitions") >= 10);
    pgt_db_close(c);
}

PGT_TEST(schema, example_pipeline)
{
    PGconn *c = pgt_db_fresh("mig_example_t");
    pgpipe_error err;
    int rc = pgpipe_example_install(c, NULL, &err);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", err.message);
    PGT_OK(pgpipe_example_install(c, NULL, &err));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.migrations WHERE scope = 'example' "
                            "AND status = 'applied'"), 6);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_namespace WHERE nspname IN "
                            "('staging', 'production', 'analytics')"), 3);
    /* uuid-ossp only when the server has it; PostGIS is not installed here */
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'"),
               pgt_db_int(c, "SELECT count(*) FROM pg_available_extensions WHERE name = 'uuid-ossp'"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pg_extension WHERE extname = 'postgis'"),
               pgt_db_int(c, "SELECT count(*) FROM pg_available_extensions WHERE name = 'postgis'"));
    /* dim_date: 2020 .. 2035 */
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM production.dim_date"),
               pgt_db_int(c, "SELECT DATE '2036-01-01' - DATE '2020-01-01'"));
    PGT_EQ_STR(pgt_db_str(c, "SELECT day_name || ' ' || is_weekend FROM production.dim_date "
                            "WHERE full_date = '2024-06-01'"), "Saturday true");
    /* constraints */
    PGresult *r = PQexec(c, "INSERT INTO production.users (email, full_name) VALUES ('no-at', 'X')");
    PGT_EQ_STR(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23514");
    PQclear(r);
    r = PQexec(c, "INSERT INTO production.users (email) VALUES ('a@b.co')");
    PGT_EQ_STR(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23502");
    PQclear(r);
    /* staging -> production, idempotent */
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_users (source, payload) VALUES "
                        "('crm', '{\"email\": \"Ann@Example.com\", \"name\": \"Ann\"}'), "
                        "('crm', '{\"email\": \"bob@example.com\", \"name\": \"Bob\"}'), "
                        "('crm', '{\"email\": \"ann@example.com\", \"name\": \"Ann B\", \"country\": \"SE\"}')"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT staging.promote_users()"), 2);
    PGT_EQ_INT(pgt_db_int(c, "SELECT staging.promote_users()"), 0);
    PGT_EQ_STR(pgt_db_str(c, "SELECT full_name || '/' || country FROM production.users "
                            "WHERE email = 'ann@example.com'"), "Ann B/SE");
    PGT_EQ_INT(pgt_db_int(c, "SELECT production.upsert_user('bob@example.com', 'Robert')"),
               pgt_db_int(c, "SELECT id FROM production.users WHERE email = 'bob@example.com'"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM production.users"), 2);
    /* updated_at follows updates */
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM production.users WHERE email = 'bob@example.com' "
                            "AND updated_at > created_at"), 1);
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload) VALUES "
                        "('pay', 'transaction', '{\"email\": \"ann@example.com\", \"amount\": 10.50, \"status\": \"completed\", \"ref\": \"t1\"}'), "
                        "('pay', 'transaction', '{\"email\": \"bob@example.com\", \"amount\": 5, \"ref\": \"t2\"}'), "
                        "('pay', 'transaction', '{\"email\": \"bob@example.com\", \"amount\": -1, \"ref\": \"t3\"}')"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT staging.promote_transactions()"), 2);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_events WHERE NOT processed"), 1);
    PQclear(PGT_EXEC(c, "INSERT INTO staging.raw_events (source, event_type, payload) VALUES "
                        "('pay', 'transaction', '{\"email\": \"bob@example.com\", \"amount\": 5, \"status\": \"completed\", \"ref\": \"t2\"}')"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT staging.promote_transactions()"), 1);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM production.transactions"), 2);
    r = PQexec(c, "INSERT INTO production.transactions (user_id, amount) "
                  "SELECT id, 0 FROM production.users LIMIT 1");
    PGT_EQ_STR(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23514");
    PQclear(r);
    r = PQexec(c, "INSERT INTO production.transactions (user_id, amount, status) "
                  "SELECT id, 1, 'lost' FROM production.users LIMIT 1");
    PGT_EQ_STR(PQresultErrorField(r, PG_DIAG_SQLSTATE), "23514");
    PQclear(r);
    PGT_EQ_STR(pgt_db_str(c, "SELECT data_type || numeric_precision || ',' || numeric_scale FROM "
                            "information_schema.columns WHERE table_schema = 'production' AND "
                            "table_name = 'transactions' AND column_name = 'amount'"), "numeric10,2");
    /* the materialized view refreshes concurrently */
    PQclear(PGT_EXEC(c, "REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.daily_user_metrics"));
    PGT_EQ_STR(pgt_db_str(c, "SELECT active_users || '/' || transactions || '/' || revenue || '/' || "
                            "new_users FROM analytics.daily_user_metrics"), "2/2/15.50/2");
    /* cascade: deleting a user deletes their transactions */
    PQclear(PGT_EXEC(c, "DELETE FROM production.users WHERE email = 'bob@example.com'"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM production.transactions"), 1);
    PQclear(PGT_EXEC(c, "REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.daily_user_metrics"));
    PGT_EQ_STR(pgt_db_str(c, "SELECT revenue::text FROM analytics.daily_user_metrics"), "10.50");
    /* cleanup_old_data deletes processed rows older than N days */
    PQclear(PGT_EXEC(c, "UPDATE staging.raw_users SET received_at = now() - interval '10 days'"));
    PGT_EQ_INT(pgt_db_int(c, "SELECT staging.cleanup_old_data(5)"), 3);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM staging.raw_users"), 0);
    pgt_db_close(c);
}
