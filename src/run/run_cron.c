/*
** Cron expressions and intervals (see run_cron.h for the syntax and the
** DST rules). The next firing walks the local calendar day by day and
** turns each matching wall-clock minute into an instant with wall_to_utc,
** which implements the DST rules; the local offset of an instant comes
** from localtime_r under the zone set in TZ.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN

PGPIPE_PRIVATE int64_t run_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

PGPIPE_PRIVATE void run_civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

PGPIPE_PRIVATE int64_t run_duration_ms(const char *s)
{
    if (!s || !*s)
        return -1;
    int64_t total = 0;
    while (*s) {
        if (!isdigit((unsigned char)*s))
            return -1;
        int64_t n = 0;
        while (isdigit((unsigned char)*s)) {
            n = n * 10 + (*s++ - '0');
            if (n > (int64_t)1 << 40)
                return -1;
        }
        int64_t unit;
        if (!strncmp(s, "ms", 2)) { unit = 1; s += 2; }
        else if (*s == 's') { unit = 1000; s++; }
        else if (*s == 'm') { unit = 60000; s++; }
        else if (*s == 'h') { unit = 3600000; s++; }
        else if (*s == 'd') { unit = 86400000; s++; }
        else return -1;
        total += n * unit;
        if (total > (int64_t)1 << 50)
            return -1;
    }
    return total;
}

static const char *run_tz_dir(void)
{
    const char *d = getenv("TZDIR");
    return d && *d ? d : "/usr/share/zoneinfo";
}

PGPIPE_PRIVATE int run_tz_exists(const char *zone)
{
    if (!zone || !*zone || !strcmp(zone, "UTC"))
        return 1;
    if (zone[0] == '/' || strstr(zone, "..") || strlen(zone) > 200)
        return 0;
    for (const char *p = zone; *p; p++)
        if (!isalnum((unsigned char)*p) && !strchr("_+-/", *p))
            return 0;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", run_tz_dir(), zone);
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0;
}

/* ---- parsing ---------------------------------------------------------- */

typedef struct cron_field {
    const char *name;
    int lo, hi;              /* values accepted (weekday: 0-7) */
    const char *const *names; /* names[i] is value lo + i... (NULL: none) */
    int name_base;
} cron_field;

static const char *const cron_months[] = { "jan", "feb", "mar", "apr", "may", "jun",
                                           "jul", "aug", "sep", "oct", "nov", "dec", NULL };
static const char *const cron_wdays[] = { "sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL };

static const cron_field cron_fields[5] = {
    { "minute", 0, 59, NULL, 0 },
    { "hour", 0, 23, NULL, 0 },
    { "day-of-month", 1, 31, NULL, 0 },
    { "month", 1, 12, cron_months, 1 },
    { "day-of-week", 0, 7, cron_wdays, 0 },
};

static int cron_fail(pgpipe_error *err, long long col, const char *fmt, ...) PP_PRINTF(3, 4);
static int cron_fail(pgpipe_error *err, long long col, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (err) {
        if (col > 0)
            pp_err_at(err, PGPIPE_PARSE, "", 0, col, col - 1, "%s (column %lld)", msg, col);
        else
            pp_err_at(err, PGPIPE_PARSE, "", 0, 0, 0, "%s", msg);
    }
    return PGPIPE_PARSE;
}

/* One value of field f at s (a number or a name); sets *end. -1 when none. */
static int cron_value(const cron_field *f, const char *s, const char **end)
{
    if (isdigit((unsigned char)*s)) {
        long v = 0;
        const char *p = s;
        while (isdigit((unsigned char)*p) && v < 1000)
            v = v * 10 + (*p++ - '0');
        while (isdigit((unsigned char)*p))
            p++;
        *end = p;
        return (int)v;
    }
    if (f->names && isalpha((unsigned char)s[0])) {
        for (int i = 0; f->names[i]; i++)
            if (!strncasecmp(s, f->names[i], 3) && !isalnum((unsigned char)s[3])) {
                *end = s + 3;
                return f->name_base + i;
            }
    }
    *end = s;
    return -1;
}

/* Field fi of text [s, e), starting at column col of the expression. */
static int cron_parse_field(int fi, const char *s, const char *e, long long col, uint64_t *bits,
                            pgpipe_error *err)
{
    const cron_field *f = &cron_fields[fi];
    const char *p = s;
    *bits = 0;
    for (;;) {
        const char *item = p;
        int lo, hi, step = 1;
        if (*p == '*') {
            lo = f->lo;
            hi = f->hi == 7 ? 6 : f->hi;
            p++;
        } else {
            const char *q;
            lo = cron_value(f, p, &q);
            if (lo < 0)
                return cron_fail(err, col + (p - s), "%s field: expected a number%s or '*' at \"%.*s\"",
                                 f->name, f->names ? ", a name" : "", (int)(e - p), p);
            if (lo < f->lo || lo > f->hi)
                return cron_fail(err, col + (p - s), "%s field: %d is out of range %d-%d", f->name,
                                 lo, f->lo, f->hi);
            p = q;
            hi = lo;
            if (*p == '-') {
                const char *r = ++p;
                hi = cron_value(f, p, &q);
                if (hi < 0)
                    return cron_fail(err, col + (p - s), "%s field: expected the end of the range at \"%.*s\"",
                                     f->name, (int)(e - p), p);
                if (hi < f->lo || hi > f->hi)
                    return cron_fail(err, col + (r - s), "%s field: %d is out of range %d-%d",
                                     f->name, hi, f->lo, f->hi);
                if (hi < lo)
                    return cron_fail(err, col + (item - s), "%s field: range %d-%d goes backwards",
                                     f->name, lo, hi);
                p = q;
            } else if (*p == '/') {
                hi = f->hi == 7 ? 6 : f->hi; /* N/S: from N to the end */
            }
        }
        if (*p == '/') {
            const char *r = ++p;
            if (!isdigit((unsigned char)*p))
                return cron_fail(err, col + (r - s), "%s field: expected a step number after '/'", f->name);
            long v = 0;
            while (isdigit((unsigned char)*p) && v < 1000)
                v = v * 10 + (*p++ - '0');
            if (v < 1 || v > f->hi)
                return cron_fail(err, col + (r - s), "%s field: step %ld is out of range 1-%d", f->name,
                                 v, f->hi);
            step = (int)v;
        }
        for (int v = lo; v <= hi; v += step)
            *bits |= (uint64_t)1 << (fi == 4 && v == 7 ? 0 : v);
        if (p == e)
            return PGPIPE_OK;
        if (*p != ',')
            return cron_fail(err, col + (p - s), "%s field: unexpected \"%.*s\"", f->name, (int)(e - p), p);
        p++;
        if (p == e)
            return cron_fail(err, col + (p - s) - 1, "%s field: a list ends with ','", f->name);
    }
}

static const int cron_mdays_max[13] = { 0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

int pgpipe_cron_parse(pgpipe_cron *out, const char *expr, pgpipe_error *err)
{
    if (!out || !expr) {
        if (err)
            pp_err(err, PGPIPE_MISUSE, "pgpipe_cron_parse: NULL argument");
        return PGPIPE_MISUSE;
    }
    memset(out, 0, sizeof *out);
    const char *s = expr;
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return cron_fail(err, 0, "empty schedule expression");
    if (!strncasecmp(s, "every", 5) && (isspace((unsigned char)s[5]) || !s[5])) {
        const char *d = s + 5;
        while (isspace((unsigned char)*d))
            d++;
        const char *de = d + strlen(d);
        while (de > d && isspace((unsigned char)de[-1]))
            de--;
        char buf[64];
        snprintf(buf, sizeof buf, "%.*s", (int)(de - d), d);
        int64_t ms = de - d < 60 ? run_duration_ms(buf) : -1;
        if (ms < 0 || ms % 1000)
            return cron_fail(err, d - expr + 1, "every: expected an interval like 30s, 5m, 2h or 1d, got \"%s\"", buf);
        if (ms < 1000)
            return cron_fail(err, d - expr + 1, "every: the interval must be at least 1s");
        out->every_ms = ms;
        return PGPIPE_OK;
    }
    if (*s == '@') {
        static const char *const macros[][2] = {
            { "@yearly", "0 0 1 1 *" }, { "@annually", "0 0 1 1 *" }, { "@monthly", "0 0 1 * *" },
            { "@weekly", "0 0 * * 0" }, { "@daily", "0 0 * * *" },   { "@midnight", "0 0 * * *" },
            { "@hourly", "0 * * * *" },
        };
        size_t n = 0;
        while (s[n] && !isspace((unsigned char)s[n]))
            n++;
        const char *rest = s + n;
        while (isspace((unsigned char)*rest))
            rest++;
        for (size_t i = 0; i < sizeof macros / sizeof macros[0]; i++)
            if (strlen(macros[i][0]) == n && !strncasecmp(s, macros[i][0], n)) {
                if (*rest)
                    return cron_fail(err, rest - expr + 1, "%s takes no fields after it", macros[i][0]);
                return pgpipe_cron_parse(out, macros[i][1], err);
            }
        return cron_fail(err, s - expr + 1,
                         "unknown macro \"%.*s\" (@yearly, @monthly, @weekly, @daily, @hourly)", (int)n, s);
    }
    const char *fs[6], *fe[6];
    int nf = 0;
    while (*s) {
        if (nf == 5) {
            const char *e = s;
            while (*e && !isspace((unsigned char)*e))
                e++;
            return cron_fail(err, s - expr + 1, "expected 5 fields (minute hour day-of-month month "
                             "day-of-week), found more at \"%.*s\"", (int)(e - s), s);
        }
        fs[nf] = s;
        while (*s && !isspace((unsigned char)*s))
            s++;
        fe[nf++] = s;
        while (isspace((unsigned char)*s))
            s++;
    }
    if (nf < 5)
        return cron_fail(err, 0, "expected 5 fields (minute hour day-of-month month day-of-week), found %d",
                         nf);
    uint64_t b[5];
    for (int i = 0; i < 5; i++) {
        int rc = cron_parse_field(i, fs[i], fe[i], fs[i] - expr + 1, &b[i], err);
        if (rc)
            return rc;
    }
    out->minutes = b[0];
    out->hours = (uint32_t)b[1];
    out->mdays = (uint32_t)b[2];
    out->months = (uint16_t)b[3];
    out->wdays = (uint8_t)b[4];
    out->mday_star = fs[2][0] == '*';
    out->wday_star = fs[4][0] == '*';
    /* a day of month no chosen month has, with the weekday not helping */
    if (!out->mday_star && out->wday_star) {
        int ok = 0;
        for (int m = 1; m <= 12 && !ok; m++)
            for (int d = 1; d <= cron_mdays_max[m] && out->months >> m & 1; d++)
                if (out->mdays >> d & 1) {
                    ok = 1;
                    break;
                }
        if (!ok)
            return cron_fail(err, fs[2] - expr + 1,
                             "day-of-month field: never fires (no chosen month has that day)");
    }
    return PGPIPE_OK;
}

/* ---- next firing ------------------------------------------------------- */

static pp_mutex run_tz_lock = PP_MUTEX_INIT;

/* The UTC offset (seconds east) at instant t, in the zone TZ names now. */
static int64_t tz_offset(int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (!localtime_r(&tt, &tm))
        return 0;
    int64_t wall = run_days_from_civil(tm.tm_year + 1900LL, tm.tm_mon + 1, tm.tm_mday) * 86400
                   + tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec;
    return wall - t;
}

/* The instant of wall-clock time W (seconds of the local calendar since
** 1970-01-01 00:00): its first occurrence when it occurs twice; when it
** does not occur (a gap), the first instant after the gap. */
static int64_t wall_to_utc(int64_t W, int utc)
{
    if (utc)
        return W;
    int64_t oa = tz_offset(W - 54000), ob = tz_offset(W + 46800);
    int64_t best = INT64_MAX;
    if (tz_offset(W - oa) == oa)
        best = W - oa;
    if (ob != oa && tz_offset(W - ob) == ob && W - ob < best)
        best = W - ob;
    if (best != INT64_MAX)
        return best;
    /* a gap: the offset goes from oa to ob (> oa) at an instant T in
    ** (W - ob, W - oa]; the first valid instant after W is T */
    int64_t lo = W - ob, hi = W - oa;
    if (lo > hi) {
        int64_t x = lo;
        lo = hi;
        hi = x;
    }
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2;
        if (tz_offset(mid) == oa)
            lo = mid;
        else
            hi = mid;
    }
    return hi;
}

static int cron_day_matches(const pgpipe_cron *c, int64_t z)
{
    int64_t y;
    int m, d;
    run_civil_from_days(z, &y, &m, &d);
    if (!(c->months >> m & 1))
        return 0;
    int w = (int)(((z % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    int dom = c->mdays >> d & 1, dow = c->wdays >> w & 1;
    return c->mday_star || c->wday_star ? dom && dow : dom || dow;
}

int pgpipe_cron_next(const pgpipe_cron *c, int64_t after, const char *tz, int64_t *next,
                     pgpipe_error *err)
{
    if (!c || !next) {
        if (err)
            pp_err(err, PGPIPE_MISUSE, "pgpipe_cron_next: NULL argument");
        return PGPIPE_MISUSE;
    }
    if (c->every_ms > 0) {
        int64_t step = c->every_ms / 1000;
        int64_t q = after >= 0 ? after / step : -((-after + step - 1) / step);
        *next = (q + 1) * step;
        return PGPIPE_OK;
    }
    int utc = !tz || !*tz || !strcmp(tz, "UTC");
    if (!run_tz_exists(tz)) {
        if (err)
            pp_err(err, PGPIPE_MISUSE, "unknown time zone \"%s\" (not in %s)", tz, run_tz_dir());
        return PGPIPE_MISUSE;
    }
    char *old = NULL;
    int had_old = 0;
    if (!utc) {
        pp_mutex_lock(&run_tz_lock);
        const char *o = getenv("TZ");
        if (o) {
            had_old = 1;
            old = pp_strdup(o);
        }
        setenv("TZ", tz, 1);
        tzset();
    }
    int64_t wall_after = after + (utc ? 0 : tz_offset(after));
    int64_t z0 = (wall_after >= 0 ? wall_after / 86400 : -((-wall_after + 86399) / 86400)) - 1;
    int rc = PGPIPE_LIMIT;
    for (int64_t z = z0; z < z0 + 366 * 30 && rc != PGPIPE_OK; z++) {
        if (!cron_day_matches(c, z))
            continue;
        for (int h = 0; h < 24 && rc != PGPIPE_OK; h++) {
            if (!(c->hours >> h & 1))
                continue;
            for (int mi = 0; mi < 60; mi++) {
                if (!(c->minutes >> mi & 1))
                    continue;
                int64_t W = z * 86400 + h * 3600 + mi * 60;
                if (W < wall_after - 3 * 3600) /* no DST shift is that large */
                    continue;
                int64_t t = wall_to_utc(W, utc);
                if (t > after) {
                    *next = t;
                    rc = PGPIPE_OK;
                    break;
                }
            }
        }
    }
    if (!utc) {
        if (had_old && old)
            setenv("TZ", old, 1);
        else
            unsetenv("TZ");
        tzset();
        pp_mutex_unlock(&run_tz_lock);
        pp_free(old);
    }
    if (rc != PGPIPE_OK && err)
        pp_err(err, PGPIPE_LIMIT, "the schedule does not fire in the next 30 years");
    return rc;
}

#endif /* PGPIPE_OMIT_RUN */
