/* Tests of the run layer (src/run): cron expressions and their next firing
** (DST in Europe/Berlin and America/New_York, Feb 29, the Vixie day rule,
** errors with field and column), the library's own zone-file reader (against
** the C library's localtime_r, TZ-string rules, corrupt files), and the
** pipeline file reader. */

/* Unix seconds of a UTC time */
static int64_t run_t_utc(int y, int mo, int d, int h, int mi)
{
    return run_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60;
}

/* next firing of expr after `after` in tz, or -1 on error */
static int64_t run_t_next(const char *expr, const char *tz, int64_t after)
{
    pgpipe_cron c;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (pgpipe_cron_parse(&c, expr, &e) != PGPIPE_OK) {
        fprintf(stderr, "    parse %s: %s\n", expr, e.message);
        return -1;
    }
    int64_t t;
    if (pgpipe_cron_next(&c, after, tz, &t, &e) != PGPIPE_OK) {
        fprintf(stderr, "    next %s: %s\n", expr, e.message);
        return -1;
    }
    return t;
}

PGT_TEST(run, cron_next_utc)
{
    struct { const char *expr; int64_t after, want; } cases[] = {
        { "* * * * *", run_t_utc(2026, 1, 1, 0, 0), run_t_utc(2026, 1, 1, 0, 1) },
        { "*/15 * * * *", run_t_utc(2026, 1, 1, 0, 50), run_t_utc(2026, 1, 1, 1, 0) },
        { "5,10-12 3 * * *", run_t_utc(2026, 1, 1, 3, 10), run_t_utc(2026, 1, 1, 3, 11) },
        { "5,10-12 3 * * *", run_t_utc(2026, 1, 1, 3, 12), run_t_utc(2026, 1, 2, 3, 5) },
        { "0 9-17/4 * * *", run_t_utc(2026, 1, 1, 9, 0), run_t_utc(2026, 1, 1, 13, 0) },
        { "30 8 * * MON-FRI", run_t_utc(2026, 1, 2, 9, 0), run_t_utc(2026, 1, 5, 8, 30) }, /* Fri -> Mon */
        { "0 0 * * 7", run_t_utc(2026, 1, 1, 0, 0), run_t_utc(2026, 1, 4, 0, 0) },         /* 7 = Sunday */
        { "0 0 * * sun", run_t_utc(2026, 1, 1, 0, 0), run_t_utc(2026, 1, 4, 0, 0) },
        { "0 0 1 jan-mar/2 *", run_t_utc(2026, 1, 1, 0, 0), run_t_utc(2026, 3, 1, 0, 0) },
        { "0 0 13 * 5", run_t_utc(2026, 1, 1, 0, 0), run_t_utc(2026, 1, 2, 0, 0) },  /* Vixie: Friday 2nd */
        { "0 0 13 * 5", run_t_utc(2026, 1, 9, 0, 0), run_t_utc(2026, 1, 13, 0, 0) }, /* or the 13th */
        { "0 0 */10 * 1", run_t_utc(2026, 1, 1, 0, 0), run_t_utc(2026, 5, 11, 0, 0) }, /* '*' start: AND */
        { "0 0 29 2 *", run_t_utc(2025, 3, 1, 0, 0), run_t_utc(2028, 2, 29, 0, 0) },
        { "0 0 31 * *", run_t_utc(2026, 4, 1, 0, 0), run_t_utc(2026, 5, 31, 0, 0) },
        { "@hourly", run_t_utc(2026, 1, 1, 0, 30), run_t_utc(2026, 1, 1, 1, 0) },
        { "@daily", run_t_utc(2026, 1, 1, 0, 0), run_t_utc(2026, 1, 2, 0, 0) },
        { "@weekly", run_t_utc(2026, 1, 1, 0, 0), run_t_utc(2026, 1, 4, 0, 0) },
        { "@monthly", run_t_utc(2026, 1, 31, 0, 0), run_t_utc(2026, 2, 1, 0, 0) },
        { "@yearly", run_t_utc(2026, 6, 1, 0, 0), run_t_utc(2027, 1, 1, 0, 0) },
        { "every 30s", run_t_utc(2026, 1, 1, 0, 0) + 10, run_t_utc(2026, 1, 1, 0, 0) + 30 },
        { "every 5m", run_t_utc(2026, 1, 1, 0, 5), run_t_utc(2026, 1, 1, 0, 10) },
        { "every 2h", run_t_utc(2026, 1, 1, 1, 0), run_t_utc(2026, 1, 1, 2, 0) },
        { "every 1d", run_t_utc(2026, 1, 1, 12, 0), run_t_utc(2026, 1, 2, 0, 0) },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t got = run_t_next(cases[i].expr, "UTC", cases[i].after);
        PGT_CHECK_MSG(got == cases[i].want, "%s: got %lld, want %lld", cases[i].expr, (long long)got,
                      (long long)cases[i].want);
    }
}

PGT_TEST(run, cron_dst)
{
    /* Berlin 2026-03-29: 02:00 CET -> 03:00 CEST (01:00 UTC); 2026-10-25:
    ** 03:00 CEST -> 02:00 CET (01:00 UTC) */
    const char *B = "Europe/Berlin", *NY = "America/New_York";
    PGT_EQ_INT(run_t_next("30 2 * * *", B, run_t_utc(2026, 3, 28, 12, 0)), run_t_utc(2026, 3, 29, 1, 0));
    PGT_EQ_INT(run_t_next("30 2 * * *", B, run_t_utc(2026, 3, 29, 1, 0)), run_t_utc(2026, 3, 30, 0, 30));
    PGT_EQ_INT(run_t_next("*/15 * * * *", B, run_t_utc(2026, 3, 29, 0, 50)), run_t_utc(2026, 3, 29, 1, 0));
    PGT_EQ_INT(run_t_next("*/15 * * * *", B, run_t_utc(2026, 3, 29, 1, 0)), run_t_utc(2026, 3, 29, 1, 15));
    PGT_EQ_INT(run_t_next("30 2 * * *", B, run_t_utc(2026, 10, 24, 12, 0)), run_t_utc(2026, 10, 25, 0, 30));
    PGT_EQ_INT(run_t_next("30 2 * * *", B, run_t_utc(2026, 10, 25, 0, 30)), run_t_utc(2026, 10, 26, 1, 30));
    /* the repeated hour fires nothing: after 02:40 CEST comes 03:00 CET */
    PGT_EQ_INT(run_t_next("*/20 2-3 * * *", B, run_t_utc(2026, 10, 25, 0, 40)), run_t_utc(2026, 10, 25, 2, 0));
    PGT_EQ_INT(run_t_next("0 12 * * *", B, run_t_utc(2026, 7, 1, 0, 0)), run_t_utc(2026, 7, 1, 10, 0));
    /* New York 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC); 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC) */
    PGT_EQ_INT(run_t_next("30 2 * * *", NY, run_t_utc(2026, 3, 7, 12, 0)), run_t_utc(2026, 3, 8, 7, 0));
    PGT_EQ_INT(run_t_next("30 1 * * *", NY, run_t_utc(2026, 10, 31, 12, 0)), run_t_utc(2026, 11, 1, 5, 30));
    PGT_EQ_INT(run_t_next("30 1 * * *", NY, run_t_utc(2026, 11, 1, 5, 30)), run_t_utc(2026, 11, 2, 6, 30));
    PGT_EQ_INT(run_t_next("0 0 29 2 *", NY, run_t_utc(2025, 1, 1, 0, 0)), run_t_utc(2028, 2, 29, 5, 0));
    /* the process's TZ is left as it was */
    PGT_CHECK(getenv("TZ") == NULL || strcmp(getenv("TZ"), B) != 0);
    pgpipe_cron c;
    int64_t t;
    pgpipe_error e;
    PGT_OK(pgpipe_cron_parse(&c, "0 0 * * *", NULL));
    PGT_EQ_INT(pgpipe_cron_next(&c, 0, "Mars/Olympus", &t, &e), PGPIPE_MISUSE);
    PGT_CONTAINS(e.message, "unknown time zone");
}

/* A time far out of the calendar (the int64 ends) is refused, not computed
** with overflowing sums (UBSan) into garbage; the years 1 to 9999 work. */
PGT_TEST(run, cron_next_time_out_of_range)
{
    const char *exprs[] = { "@hourly", "every 90s", "0 12 * * 1" };
    for (size_t i = 0; i < sizeof exprs / sizeof exprs[0]; i++) {
        pgpipe_cron c;
        pgpipe_error e;
        int64_t t = 7;
        PGT_OK(pgpipe_cron_parse(&c, exprs[i], &e));
        PGT_EQ_INT(pgpipe_cron_next(&c, INT64_MIN, "UTC", &t, &e), PGPIPE_MISUSE);
        PGT_CONTAINS(e.message, "outside the years 1 to 9999");
        PGT_EQ_INT(pgpipe_cron_next(&c, INT64_MAX, "Europe/Berlin", &t, &e), PGPIPE_MISUSE);
        PGT_EQ_INT(pgpipe_cron_next(&c, INT64_C(253402300800), NULL, &t, &e), PGPIPE_MISUSE);
        PGT_EQ_INT(pgpipe_cron_next(&c, INT64_C(-62135596801), NULL, &t, &e), PGPIPE_MISUSE);
        PGT_OK(pgpipe_cron_next(&c, INT64_C(-62135596800), NULL, &t, &e));
        PGT_CHECK(t > INT64_C(-62135596800));
        PGT_OK(pgpipe_cron_next(&c, INT64_C(253402300000), NULL, &t, &e));
        PGT_CHECK(t > INT64_C(253402300000));
    }
}

PGT_TEST(run, cron_errors)
{
    struct { const char *expr, *msg; int col; } cases[] = {
        { "61 * * * *", "minute field: 61 is out of range 0-59", 1 },
        { "* 24 * * *", "hour field: 24 is out of range 0-23", 3 },
        { "* * 0 * *", "day-of-month field: 0 is out of range 1-31", 5 },
        { "* * * 13 *", "month field: 13 is out of range 1-12", 7 },
        { "* * * * 8", "day-of-week field: 8 is out of range 0-7", 9 },
        { "* * * foo *", "month field: expected a number, a name or '*' at \"foo\"", 7 },
        { "5-2 * * * *", "minute field: range 5-2 goes backwards", 1 },
        { "*/0 * * * *", "minute field: step 0 is out of range 1-59", 3 },
        { "1, * * * *", "minute field: a list ends with ','", 2 },
        { "* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), found 4", 0 },
        { "* * * * * *", "found more at \"*\"", 11 },
        { "@fortnightly", "unknown macro \"@fortnightly\"", 1 },
        { "every 5x", "every: expected an interval like 30s, 5m, 2h or 1d, got \"5x\"", 7 },
        { "every 500ms", "every: expected an interval", 7 },
        { "0 0 30 2 *", "day-of-month field: never fires", 5 },
        { "", "empty schedule expression", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pgpipe_cron c;
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        PGT_CHECK_MSG(pgpipe_cron_parse(&c, cases[i].expr, &e) == PGPIPE_PARSE, "%s parsed", cases[i].expr);
        PGT_CHECK_MSG(strstr(e.message, cases[i].msg) != NULL, "%s: %s", cases[i].expr, e.message);
        PGT_CHECK_MSG(e.column == cases[i].col, "%s: column %lld", cases[i].expr, e.column);
    }
}

/* a pipeline from text; returns the diagnostics joined by '\n' */
static const char *run_t_pf(const char *text, pgpipe_pipefile **out)
{
    static char buf[8192];
    pgpipe_pipefile *pf = NULL;
    int rc = pgpipe_pipefile_open(&pf, "t.pgpipe", text, strlen(text));
    buf[0] = 0;
    size_t len = 0;
    for (int i = 0; i < pgpipe_pipefile_diag_count(pf); i++) {
        const pgpipe_pipe_diag *d = pgpipe_pipefile_diag(pf, i);
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%d:%d: %s\n", d->line, d->column, d->message);
    }
    if (rc != PGPIPE_OK && rc != PGPIPE_PARSE)
        snprintf(buf, sizeof buf, "rc %d", rc);
    if (out)
        *out = pf;
    else
        pgpipe_pipefile_close(pf);
    return buf;
}

PGT_TEST(run, file_tree)
{
    pgpipe_pipefile *pf;
    const char *d = run_t_pf(
        ".pipeline demo\n"
        "CREATE TABLE IF NOT EXISTS app.events_out (id int);\n"
        "CREATE FUNCTION f() RETURNS text AS $$\n"
        ".not a command inside a dollar quote\n"
        "$$ LANGUAGE sql;\n"
        ".source files in --dir /tmp --pattern=*.csv --table app.events_out --after delete\n"
        ".schedule s1 --every 5m --tz America/New_York --overlap queue --missed all\n"
        "  SELECT 1;\n"
        "  .refresh app.events_out\n"
        ".end\n"
        ".task b --after a --retries 2 --backoff 2s --on-failure continue\n"
        "SELECT 'b';\n"
        ".end\n"
        ".task a --after s1\n"
        ".end\n"
        ".history --keep-last 5 --failures-only\n", &pf);
    PGT_EQ_STR(d, "");
    const pgpipe_pipe_def *p = pgpipe_pipefile_def(pf);
    PGT_EQ_STR(p->name, "demo");
    PGT_EQ_INT(p->nsetup, 2);
    PGT_EQ_INT(p->setup[1].line, 3);
    PGT_CONTAINS(p->setup[1].text, ".not a command");
    PGT_EQ_INT(p->nsources, 1);
    PGT_EQ_STR(p->sources[0].pattern, "*.csv");
    PGT_EQ_INT(p->sources[0].delete_after, 1);
    PGT_EQ_INT(p->sources[0].settle_ms, 5000);
    PGT_EQ_INT(p->nschedules, 1);
    PGT_EQ_STR(p->schedules[0].expr, "every 5m");
    PGT_EQ_INT(p->schedules[0].overlap, PGPIPE_PIPE_OVERLAP_QUEUE);
    PGT_EQ_INT(p->schedules[0].missed, PGPIPE_PIPE_MISSED_ALL);
    PGT_EQ_INT(p->schedules[0].nsteps, 2);
    PGT_EQ_INT(p->schedules[0].steps[1].kind, PGPIPE_PIPE_DOT);
    PGT_EQ_INT(p->ntasks, 2);
    PGT_EQ_STR(p->tasks[0].name, "a"); /* ordered: a before b, which follows it */
    PGT_EQ_STR(p->tasks[1].name, "b");
    PGT_EQ_INT(p->tasks[1].retries, 2);
    PGT_EQ_INT(p->tasks[1].backoff_ms, 2000);
    PGT_EQ_INT(p->tasks[1].on_failure, PGPIPE_PIPE_FAIL_CONTINUE);
    PGT_EQ_INT(p->history.keep_last, 5);
    PGT_EQ_INT(p->history.failures_only, 1);
    PGT_EQ_INT(p->history.keep_ok_ms, 7 * 86400000LL);
    pgpipe_pipefile_close(pf);
}

PGT_TEST(run, file_errors)
{
    PGT_EQ_STR(run_t_pf(".shedule x --every 1m\n.end\n", NULL),
               "1:1: unknown directive .shedule (did you mean .schedule?)\n"
               "2:1: .end without .schedule or .task\n");
    PGT_EQ_STR(run_t_pf(".history --keep-okay 1d --keep-last -1\n", NULL),
               "1:10: .history: unknown option --keep-okay (did you mean --keep-ok?)\n"
               "1:37: .history: --keep-last: expected a whole number from 0 to 1000000, got \"-1\"\n");
    PGT_EQ_STR(run_t_pf(".schedule x --cron \"0 25 * * *\"\n.end\n", NULL),
               "1:23: .schedule: --cron: hour field: 25 is out of range 0-23\n");
    PGT_EQ_STR(run_t_pf(".task a --after b\n.end\n.task b --after c\n.end\n.task c --after a\n.end\n", NULL),
               "1:0: dependency cycle: a -> b -> c -> a (each runs --after the next)\n");
    PGT_EQ_STR(run_t_pf(".workers x --sql /nonexistent/h.sql\n.workers x --so /nonexistent/l.so:f\n", NULL),
               "1:18: .workers: handler file /nonexistent/h.sql does not exist\n"
               "2:0: workers for event type \"x\" is defined twice (first at line 1)\n"
               "2:17: .workers: handler library /nonexistent/l.so does not exist\n");
    PGT_EQ_STR(run_t_pf("SELECT 'open\n", NULL), "1:8: unterminated quoted string\n");
    PGT_EQ_STR(run_t_pf(".source files a --dir d --table nope\n.install --example\n.refresh analytics.daily_user_metrics\n", NULL),
               "1:33: unknown table nope (not created by this file, its migrations and handlers, or pgpipe's schema and example)\n");
    PGT_EQ_STR(run_t_pf(".source files a --dir d --table raw_events\n", NULL), "");
}

/* A NUL byte in the file is refused where it is (it used to end its line for
** the reader: the rest of the line was dropped without a word). */
PGT_TEST(run, file_nul_byte)
{
    static const char text[] = ".pipeline a\0b\n.schedule s --every 1s\n\0INSERT INTO t VALUES (1);\n.end\n";
    pgpipe_pipefile *pf = NULL;
    PGT_EQ_INT(pgpipe_pipefile_open(&pf, "t.pgpipe", text, sizeof text - 1), PGPIPE_PARSE);
    PGT_EQ_INT(pgpipe_pipefile_diag_count(pf), 2);
    const pgpipe_pipe_diag *d = pgpipe_pipefile_diag(pf, 0);
    PGT_EQ_INT(d->line, 1);
    PGT_EQ_INT(d->column, 12);
    PGT_EQ_STR(d->message, "a NUL byte");
    d = pgpipe_pipefile_diag(pf, 1);
    PGT_EQ_INT(d->line, 3);
    PGT_EQ_INT(d->column, 1);
    pgpipe_pipefile_close(pf);
}

/* Every allocation of the reader failing in turn: PGPIPE_NOMEM, never a crash
** (a failed line copy was read as a NULL line). */
static long run_t_oom_budget = -1;
static void *run_t_oom_malloc(void *ud, size_t n)
{
    (void)ud;
    if (run_t_oom_budget == 0)
        return NULL;
    if (run_t_oom_budget > 0)
        run_t_oom_budget--;
    return malloc(n);
}
static void *run_t_oom_realloc(void *ud, void *p, size_t n)
{
    (void)ud;
    if (run_t_oom_budget == 0)
        return NULL;
    if (run_t_oom_budget > 0)
        run_t_oom_budget--;
    return realloc(p, n);
}
static void run_t_oom_free(void *ud, void *p)
{
    (void)ud;
    free(p);
}

PGT_TEST(run, file_out_of_memory)
{
    static const char text[] = ".pipeline oom\nCREATE TABLE IF NOT EXISTS t (x int);\n"
                               ".schedule s --every 1s\nINSERT INTO t VALUES (1);\n.end\n"
                               ".task a --after s\nSELECT 1;\n.end\n";
    pgpipe_allocator a = { run_t_oom_malloc, run_t_oom_realloc, run_t_oom_free, NULL };
    int ok = 0;
    for (long n = 0; n < 400 && !ok; n++) {
        PGT_OK(pgpipe_config_allocator(&a));
        run_t_oom_budget = n;
        pgpipe_pipefile *pf = NULL;
        int rc = pgpipe_pipefile_open(&pf, "t.pgpipe", text, sizeof text - 1);
        run_t_oom_budget = -1;
        pgpipe_pipefile_close(pf);
        PGT_OK(pgpipe_config_allocator(NULL));
        PGT_CHECK_MSG(rc == PGPIPE_NOMEM || rc == PGPIPE_OK, "allocation #%ld fails: rc %d", n, rc);
        ok = rc == PGPIPE_OK;
    }
    PGT_CHECK(ok);
}

/* ---- time zones: the library's own TZif reader against the C library's ---- */

/* The C library's UT offset at t in the zone TZ names (set by the caller). */
static int64_t run_t_libc_off(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!localtime_r(&tt, &tm))
        return INT64_MIN;
    return run_days_from_civil(tm.tm_year + 1900LL, tm.tm_mon + 1, tm.tm_mday) * 86400 + tm.tm_hour * 3600
           + tm.tm_min * 60 + tm.tm_sec - t;
}

/* Compares run_tz_off in zone name (from $TZDIR) with the C library's from
** 1970 to 2100: every 7 days and an hour (so the time of day varies), and
** 1 s either side of every transition: the file's and those the samples
** reveal (the footer rule's after the file's last one). Returns the number
** of differences (the first few are printed). */
static int run_t_tz_compare(const char *name, int *ntrans)
{
    const run_tz_zone *z;
    run_tz_zone *owned;
    pgpipe_error e;
    memset(&e, 0, sizeof e);
    if (run_tz_get(name, &z, &owned, &e) != PGPIPE_OK) {
        fprintf(stderr, "    %s: %s\n", name, e.message);
        return 1;
    }
    setenv("TZ", name, 1);
    tzset();
    int bad = 0;
    *ntrans = 0;
#define RUN_T_AT(T) do { \
        int64_t at_ = (T), want_ = run_t_libc_off(at_), got_ = run_tz_off(z, at_); \
        if (want_ != got_ && bad++ < 5) \
            fprintf(stderr, "    %s at %lld: offset %lld, the C library says %lld\n", name, \
                    (long long)at_, (long long)got_, (long long)want_); \
    } while (0)
    const int64_t end = run_t_utc(2100, 1, 1, 0, 0);
    for (size_t i = 0; i < z->n; i++)
        if (z->at[i] >= 0 && z->at[i] < end) {
            RUN_T_AT(z->at[i] - 1);
            RUN_T_AT(z->at[i]);
            RUN_T_AT(z->at[i] + 1);
        }
    int64_t prev = run_t_libc_off(0);
    for (int64_t t = 0; t < end; t += 7 * 86400 + 3600) {
        RUN_T_AT(t);
        int64_t o = run_t_libc_off(t);
        if (o != prev) { /* a change in (t - step, t]: find its instant */
            int64_t lo = t - (7 * 86400 + 3600), hi = t;
            while (hi - lo > 1) {
                int64_t mid = lo + (hi - lo) / 2;
                if (run_t_libc_off(mid) == prev)
                    lo = mid;
                else
                    hi = mid;
            }
            RUN_T_AT(hi - 1);
            RUN_T_AT(hi);
            RUN_T_AT(hi + 1);
            (*ntrans)++;
        }
        prev = o;
    }
#undef RUN_T_AT
    unsetenv("TZ");
    tzset();
    run_tz_free(owned);
    return bad;
}

PGT_TEST(run, cron_tz_libc)
{
    const char *zones[] = { "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                            "Asia/Kolkata", "Pacific/Chatham", "America/Sao_Paulo",
                            "Africa/Casablanca", "Europe/Dublin", "UTC", "Etc/GMT+5",
                            "America/St_Johns", "Antarctica/Troll", "America/Nuuk" };
    for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++) {
        int n;
        int bad = run_t_tz_compare(zones[i], &n);
        PGT_CHECK_MSG(bad == 0, "%s: %d instants differ from localtime_r", zones[i], bad);
        if (!strcmp(zones[i], "Europe/Berlin") || !strcmp(zones[i], "Australia/Lord_Howe"))
            PGT_CHECK_MSG(n > 200, "%s: only %d changes seen", zones[i], n); /* the sampling sees DST */
    }
}

static void run_t_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* A TZif file (version '2'-'4' or 0) at dir/name: time type 1 of offset
** off from 1903 on (so that the C library, too, applies the footer to
** every instant after that transition), type 0 (10 minutes more) before,
** and footer tzs. */
static void run_t_write_tzif(const char *dir, const char *name, char version, int32_t off, const char *tzs)
{
    unsigned char b[512], *p = b;
    for (int blk = 0; blk < (version ? 2 : 1); blk++) {
        int tsize = blk ? 8 : 4;
        memset(p, 0, 44);
        memcpy(p, "TZif", 4);
        p[4] = (unsigned char)version;
        uint32_t cnt[6] = { 0, 0, 0, 1, 2, 8 };
        for (int i = 0; i < 6; i++)
            run_t_be32(p + 20 + 4 * i, cnt[i]);
        p += 44;
        int64_t t = -2100000000; /* 1903 */
        for (int k = tsize - 1; k >= 0; k--)
            *p++ = (unsigned char)((uint64_t)t >> (8 * k));
        *p++ = 1; /* the transition's type */
        for (int ty = 0; ty < 2; ty++) {
            run_t_be32(p, (uint32_t)(ty ? off : off + 600));
            p[4] = 0;                         /* not DST */
            p[5] = (unsigned char)(4 * ty);   /* name index */
            p += 6;
        }
        memcpy(p, "LMT\0ZZZ\0", 8);
        p += 8;
    }
    if (version)
        p += snprintf((char *)p, sizeof b - (size_t)(p - b), "\n%s\n", tzs);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    PGT_CHECK(f != NULL);
    PGT_CHECK(fwrite(b, 1, (size_t)(p - b), f) == (size_t)(p - b));
    fclose(f);
}

/* The footer's TZ string alone decides (the "slim" files' case): each rule
** form against the C library reading the same file. */
PGT_TEST(run, cron_tz_rules)
{
    static const struct { const char *tzs; int32_t std; } cases[] = {
        { "CET-1CEST,M3.5.0,M10.5.0/3", 3600 },
        { "<+0330>-3:30", 12600 },
        { "EST5EDT,M3.2.0,M11.1.0", -18000 },
        { "EST5EDT", -18000 },                        /* DST with the default rule */
        { "<-02>2<-01>,M3.5.0/-1,M10.5.0/0", -7200 }, /* v3: a negative time */
        { "EST5EDT4,0/0,J365/25", -18000 },           /* v3: DST all year */
        { "AAA-10BBB-11,J60/2,J300/3", 36000 },       /* Jn: never counts Feb 29 */
        { "AAA-10BBB,59/2,299/3", 36000 },            /* n: counts it */
        { "<+1245>-12:45<+1345>,M9.5.0/2:45,M4.1.0/3:45", 45900 },
        { "IST-1GMT0,M10.5.0,M3.5.0/1", 3600 },      /* negative DST */
        { "<+1030>-10:30<+11>-11,M10.1.0,M4.1.0", 37800 },
        { "AAA3BBB,M1.1.0/-20,M12.5.6/150", -10800 }, /* changes far from their day */
    };
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tz_rules.%d", pgt_tmpdir(), (int)getpid());
    PGT_CHECK(mkdir(dir, 0755) == 0);
    setenv("TZDIR", dir, 1);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32]; /* distinct names: the C library re-reads a zone only when TZ changes */
        snprintf(name, sizeof name, "Rule%zu", i);
        run_t_write_tzif(dir, name, i % 2 ? '3' : '4', cases[i].std, cases[i].tzs);
        int n;
        int bad = run_t_tz_compare(name, &n);
        PGT_CHECK_MSG(bad == 0, "%s: %d instants differ from localtime_r", cases[i].tzs, bad);
    }
    /* the rule in a wall-clock schedule: Berlin's spring gap and autumn overlap */
    run_t_write_tzif(dir, "SlimBerlin", '2', 3600, "CET-1CEST,M3.5.0,M10.5.0/3");
    PGT_EQ_INT(run_t_next("30 2 * * *", "SlimBerlin", run_t_utc(2026, 3, 28, 12, 0)), run_t_utc(2026, 3, 29, 1, 0));
    PGT_EQ_INT(run_t_next("30 2 * * *", "SlimBerlin", run_t_utc(2026, 10, 24, 12, 0)), run_t_utc(2026, 10, 25, 0, 30));
    PGT_EQ_INT(run_t_next("*/20 2-3 * * *", "SlimBerlin", run_t_utc(2026, 10, 25, 0, 40)), run_t_utc(2026, 10, 25, 2, 0));
    /* malformed TZ strings are refused */
    static const char *const badtz[] = { "CET", "CE-1", "CET-1CEST,M13.1.0,M10.5.0", "CET-1CEST,M3.5.0",
                                         "CET-1CEST,M3.5.0/168,M10.5.0", "<+03-3", "CET-1CEST,J0,J365",
                                         "CET-1CEST,M3.6.0,M10.5.0", "CET-1:60", "CET-1 " };
    for (size_t i = 0; i < sizeof badtz / sizeof badtz[0]; i++) {
        run_tz_zone z;
        memset(&z, 0, sizeof z);
        PGT_CHECK_MSG(run_tzs_parse(badtz[i], &z) != 0, "\"%s\" parsed", badtz[i]);
    }
    /* a version 1 file: no footer, the last type holds */
    run_t_write_tzif(dir, "V1", 0, -12600, "");
    int n;
    PGT_EQ_INT(run_t_tz_compare("V1", &n), 0);
    unsetenv("TZDIR");
}

/* A corrupt zone file gives a clear error (never a crash or a silent UTC);
** a zone read once is kept: its file is not read again. */
PGT_TEST(run, cron_tz_corrupt)
{
    FILE *f = fopen("/usr/share/zoneinfo/Europe/Berlin", "rb");
    if (!f)
        PGT_SKIP("no /usr/share/zoneinfo/Europe/Berlin");
    static unsigned char good[65536];
    size_t len = fread(good, 1, sizeof good, f);
    fclose(f);
    PGT_CHECK(len > 100 && good[len - 1] == '\n');
    char dir[512], sub[600], path[700];
    snprintf(dir, sizeof dir, "%s/tz_corrupt.%d", pgt_tmpdir(), (int)getpid());
    snprintf(sub, sizeof sub, "%s/Europe", dir);
    snprintf(path, sizeof path, "%s/Berlin", sub);
    PGT_CHECK(mkdir(dir, 0755) == 0 && mkdir(sub, 0755) == 0);
    setenv("TZDIR", dir, 1);
    pgpipe_cron c;
    PGT_OK(pgpipe_cron_parse(&c, "0 0 * * *", NULL));
    unsigned char bad[65536];
    /* the file cut at every length, then a few damaged bytes */
    struct { size_t at; unsigned char byte; size_t len; const char *msg; } dmg[] = {
        { 0, 'X', len, "does not start with \"TZif\"" },
        { 4, '7', len, "version is not 1, 2, 3 or 4" },
        { 100, 0, 100, "truncated" },
        { len - 3, 0, len - 2, "footer" },
    };
    int ndmg = (int)(sizeof dmg / sizeof dmg[0]);
    for (size_t i = 0; i < len + (size_t)ndmg; i++) {
        size_t n = i < len ? i : dmg[i - len].len;
        memcpy(bad, good, len);
        if (i >= len)
            bad[dmg[i - len].at] = dmg[i - len].byte;
        f = fopen(path, "wb");
        PGT_CHECK(f != NULL && fwrite(bad, 1, n, f) == n);
        fclose(f);
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        int64_t t = 0;
        int rc = pgpipe_cron_next(&c, run_t_utc(2026, 1, 1, 0, 0), "Europe/Berlin", &t, &e);
        PGT_CHECK_MSG(rc == PGPIPE_PARSE, "cut at %zu: rc %d", n, rc);
        PGT_CHECK_MSG(strstr(e.message, "time zone \"Europe/Berlin\": ") && strstr(e.message, path) &&
                          strstr(e.message, "is not a valid zone file: "),
                      "cut at %zu: %s", n, e.message);
        if (i >= len) {
            PGT_CONTAINS(e.message, dmg[i - len].msg);
            if (i == len)
                fprintf(stderr, "    e.g. %s\n", e.message);
        }
        pgpipe_error_clear(&e);
    }
    /* a type index past the types, in the 64-bit block */
    {
        uint32_t cnt[6];
        size_t b1, b2;
        PGT_CHECK(run_tz_header(good, 4, cnt, &b1) == NULL);
        PGT_CHECK(run_tz_header(good + 44 + b1, 8, cnt, &b2) == NULL && cnt[3] > 0);
        memcpy(bad, good, len);
        bad[44 + b1 + 44 + cnt[3] * 8] = 0xff;
        f = fopen(path, "wb");
        PGT_CHECK(f != NULL && fwrite(bad, 1, len, f) == len);
        fclose(f);
        pgpipe_error e;
        memset(&e, 0, sizeof e);
        int64_t t;
        PGT_EQ_INT(pgpipe_cron_next(&c, 0, "Europe/Berlin", &t, &e), PGPIPE_PARSE);
        PGT_CONTAINS(e.message, "a transition's time type is out of range");
        pgpipe_error_clear(&e);
    }
    /* the intact file works; once read, rewriting it changes nothing */
    f = fopen(path, "wb");
    PGT_CHECK(f != NULL && fwrite(good, 1, len, f) == len);
    fclose(f);
    PGT_EQ_INT(run_t_next("30 2 * * *", "Europe/Berlin", run_t_utc(2026, 3, 28, 12, 0)), run_t_utc(2026, 3, 29, 1, 0));
    f = fopen(path, "wb");
    PGT_CHECK(f != NULL && fwrite("garbage", 1, 7, f) == 7);
    fclose(f);
    PGT_EQ_INT(run_t_next("30 2 * * *", "Europe/Berlin", run_t_utc(2026, 10, 24, 12, 0)), run_t_utc(2026, 10, 25, 0, 30));
    unsetenv("TZDIR");
}

/* Not an assertion: the cost of one pgpipe_cron_next in a DST zone, printed
** for the record (the runner calls it twice per firing). */
PGT_TEST(run, cron_tz_speed)
{
    pgpipe_cron c;
    PGT_OK(pgpipe_cron_parse(&c, "*/5 * * * *", NULL));
    int64_t t = run_t_utc(2026, 1, 1, 0, 0), n = 0;
    const char *zones[] = { "UTC", "Europe/Berlin" };
    for (int z = 0; z < 2; z++) {
        int64_t at = t;
        PGT_OK(pgpipe_cron_next(&c, at, zones[z], &n, NULL)); /* the first call reads the zone */
        int calls = 10000;
        int64_t t0 = pgpipe_now_us();
        for (int i = 0; i < calls; i++) {
            PGT_OK(pgpipe_cron_next(&c, at, zones[z], &n, NULL));
            at = n;
        }
        double us = (double)(pgpipe_now_us() - t0) / calls;
        fprintf(stderr, "    pgpipe_cron_next in %s: %.2f us per call\n", zones[z], us);
    }
}
