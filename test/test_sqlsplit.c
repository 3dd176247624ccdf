/* Tests of the SQL statement splitter (src/parse/sqlsplit.c): quotes,
** comments, dollar quotes, BEGIN ATOMIC, COPY data, errors with their place,
** and whether more input is needed. */

typedef struct split_t_stmt {
    char sql[512];
    long long line;
    char copy[256];
    int has_copy;
} split_t_stmt;

/* Splits text; returns the count (or -code on error). */
static int split_t_split(const char *text, split_t_stmt *out, int max, pgpipe_error *err)
{
    pgpipe_sql_split *s = NULL;
    PGT_OK(pgpipe_sql_split_open(&s, text, strlen(text), "t.sql"));
    pgpipe_sql_stmt st;
    int n = 0, rc;
    while ((rc = pgpipe_sql_split_next(s, &st)) == PGPIPE_ROW) {
        PGT_CHECK(n < max);
        snprintf(out[n].sql, sizeof out[n].sql, "%.*s", (int)st.len, st.sql);
        out[n].line = st.line;
        out[n].has_copy = st.copy_data != NULL;
        snprintf(out[n].copy, sizeof out[n].copy, "%.*s", (int)st.copy_len,
                 st.copy_data ? st.copy_data : "");
        PGT_EQ_INT(st.index, n);
        n++;
    }
    if (err)
        *err = *pgpipe_errinfo(s);
    pgpipe_sql_split_close(s);
    return rc == PGPIPE_DONE ? n : -rc;
}

PGT_TEST(sqlsplit, quotes_comments_dollar)
{
    split_t_stmt s[16];
    const char *text =
        "-- leading comment; with a semicolon\n"
        "SELECT 'a;b', 'it''s; fine';\n"          /* line 2 */
        "SELECT E'x\\';y', \"we;ird\"\"id\";\n"   /* line 3: E'' with \' */
        "/* block /* nested; */ still; */ SELECT 3;\n" /* line 4 */
        "CREATE FUNCTION f() RETURNS int AS $fn$\n" /* line 5 */
        "BEGIN\n"
        "  RAISE NOTICE 'a;b $$ not the end';\n"
        "  RETURN 1;\n"
        "END\n"
        "$fn$ LANGUAGE plpgsql;\n"
        "SELECT $$;$$, $1, a$$b FROM t;\n"           /* line 11: a$$b is an identifier */
        ";;  \n"
        "SELECT (1;2);\n"                           /* line 13: ; inside parentheses */
        "SELECT 'standard \\' ;\n"                  /* line 14: backslash is plain */
        "SELECT 1 -- trailing; comment\n"
        "  + 2";                                    /* line 15, no final ; */
    int n = split_t_split(text, s, 16, NULL);
    PGT_EQ_INT(n, 8);
    PGT_EQ_STR(s[0].sql, "SELECT 'a;b', 'it''s; fine'");
    PGT_EQ_INT(s[0].line, 2);
    PGT_EQ_STR(s[1].sql, "SELECT E'x\\';y', \"we;ird\"\"id\"");
    PGT_EQ_INT(s[1].line, 3);
    PGT_EQ_STR(s[2].sql, "SELECT 3");
    PGT_EQ_INT(s[2].line, 4);
    PGT_CONTAINS(s[3].sql, "RETURN 1;\nEND\n$fn$ LANGUAGE plpgsql");
    PGT_EQ_INT(s[3].line, 5);
    PGT_EQ_STR(s[4].sql, "SELECT $$;$$, $1, a$$b FROM t");
    PGT_EQ_INT(s[4].line, 11);
    PGT_EQ_STR(s[5].sql, "SELECT (1;2)");
    PGT_EQ_INT(s[5].line, 13);
    PGT_EQ_STR(s[6].sql, "SELECT 'standard \\'");
    PGT_EQ_INT(s[6].line, 14);
    PGT_EQ_STR(s[7].sql, "SELECT 1 -- trailing; comment\n  + 2");
    PGT_EQ_INT(s[7].line, 15);
}

PGT_TEST(sqlsplit, begin_atomic_and_copy)
{
    split_t_stmt s[8];
    const char *text =
        "CREATE OR REPLACE FUNCTION add(a int, b int) RETURNS int\n"
        "LANGUAGE sql\n"
        "BEGIN ATOMIC\n"
        "  SELECT CASE WHEN a > 0 THEN a ELSE 0 END + b;\n"
        "  SELECT 2;\n"
        "END;\n"
        "COPY t (a, b) FROM stdin;\n"      /* line 7 */
        "1\tx;y\n"
        "2\t'q\n"
        "\\.\n"
        "BEGIN;\n"                          /* line 11: a plain BEGIN splits */
        "COPY t FROM STDIN WITH (FORMAT csv);  -- data next\r\n"
        "3,z\r\n"
        "\\.\r\n"
        "COMMIT;\n";
    int n = split_t_split(text, s, 8, NULL);
    PGT_EQ_INT(n, 5);
    PGT_CONTAINS(s[0].sql, "SELECT 2;\nEND");
    PGT_EQ_INT(s[0].line, 1);
    PGT_EQ_STR(s[1].sql, "COPY t (a, b) FROM stdin");
    PGT_EQ_INT(s[1].line, 7);
    PGT_CHECK(s[1].has_copy);
    PGT_EQ_STR(s[1].copy, "1\tx;y\n2\t'q\n");
    PGT_EQ_STR(s[2].sql, "BEGIN");
    PGT_EQ_INT(s[2].line, 11);
    PGT_CHECK(!s[2].has_copy);
    PGT_EQ_STR(s[3].copy, "3,z\r\n");
    PGT_EQ_STR(s[4].sql, "COMMIT");
    PGT_EQ_INT(s[4].line, 15);

    /* COPY without an end marker: the data runs to the end of the input */
    n = split_t_split("COPY t FROM stdin;\na\nb", s, 8, NULL);
    PGT_EQ_INT(n, 1);
    PGT_EQ_STR(s[0].copy, "a\nb");
    /* COPY TO stdout and COPY FROM a file have no inline data */
    n = split_t_split("COPY t TO stdout;\nCOPY t FROM '/tmp/stdin';\nSELECT 1;", s, 8, NULL);
    PGT_EQ_INT(n, 3);
    PGT_CHECK(!s[0].has_copy && !s[1].has_copy);
}

PGT_TEST(sqlsplit, errors_name_the_place)
{
    split_t_stmt s[4];
    pgpipe_error e;
    PGT_EQ_INT(split_t_split("SELECT 1;\nSELECT 'abc\n;\n", s, 4, &e), -PGPIPE_PARSE);
    PGT_EQ_STR(e.source, "t.sql");
    PGT_EQ_INT(e.line, 2);
    PGT_EQ_INT(e.column, 8);
    PGT_CONTAINS(e.message, "unterminated quoted string");
    PGT_EQ_INT(split_t_split("SELECT 1;\n\n  /* a /* b */\n", s, 4, &e), -PGPIPE_PARSE);
    PGT_EQ_INT(e.line, 3);
    PGT_CONTAINS(e.message, "unterminated /* comment");
    PGT_EQ_INT(split_t_split("DO $body$ BEGIN END $body;", s, 4, &e), -PGPIPE_PARSE);
    PGT_CONTAINS(e.message, "dollar-quoted");
    PGT_EQ_INT(split_t_split("SELECT \"x;", s, 4, &e), -PGPIPE_PARSE);
    PGT_CONTAINS(e.message, "quoted identifier");
    PGT_EQ_INT(split_t_split("SELECT 1;\n\\set x 1\n", s, 4, &e), -PGPIPE_PARSE);
    PGT_EQ_INT(e.line, 2);
    PGT_CONTAINS(e.message, "backslash");
    PGT_EQ_INT(split_t_split("COPY t FROM stdin; SELECT 2;\n", s, 4, &e), -PGPIPE_PARSE);
    PGT_CONTAINS(e.message, "same line");
    PGT_EQ_INT(split_t_split("", s, 4, NULL), 0);
    PGT_EQ_INT(split_t_split("  -- only a comment\n;;\n", s, 4, NULL), 0);
}

PGT_TEST(sqlsplit, incomplete_input)
{
    /* what an interactive shell needs: is more input required? */
    struct { const char *text; int incomplete; } cases[] = {
        { "SELECT 1;", 0 },
        { "SELECT 1; SELECT 2", 1 },
        { "SELECT 'abc", 1 },
        { "SELECT 1; /* open", 1 },
        { "DO $$ BEGIN", 1 },
        { "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1;", 1 },
        { "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; END;", 0 },
        { "COPY t FROM stdin;\n1\n", 1 },
        { "COPY t FROM stdin;\n1\n\\.\n", 0 },
        { "  -- just a comment\n", 0 },
        { "SELECT 1;\n\\q\n", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pgpipe_sql_split *s = NULL;
        PGT_OK(pgpipe_sql_split_open(&s, cases[i].text, strlen(cases[i].text), NULL));
        pgpipe_sql_stmt st;
        int rc, last_term = 1;
        while ((rc = pgpipe_sql_split_next(s, &st)) == PGPIPE_ROW)
            last_term = st.terminated;
        PGT_CHECK_MSG(pgpipe_sql_split_incomplete(s) == cases[i].incomplete, "case %zu: %s", i,
                      cases[i].text);
        if (rc == PGPIPE_DONE)
            PGT_EQ_INT(last_term, !cases[i].incomplete);
        if (i == 10)
            PGT_EQ_STR(pgpipe_errinfo(s)->source, "<buffer>");
        pgpipe_sql_split_close(s);
    }
}
