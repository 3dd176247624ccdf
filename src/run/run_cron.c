/*
** Cron expressions and intervals (see run_cron.h for the syntax and the
** DST rules). The next firing walks the local calendar day by day and
** turns each matching wall-clock minute into an instant with wall_to_utc,
** which implements the DST rules; the local offset of an instant comes
** from the zone's compiled file, read by the library (see "time zones").
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

/* ---- time zones ---------------------------------------------------------- */

/* The library reads the compiled zone files (TZif, RFC 8536) itself: the C
** library converts in a named zone only through the process-wide TZ
** variable, and setenv() while another thread reads the environment (libpq
** does, for PGHOST and the like) is undefined behaviour. A zone is read
** once and kept: its transitions (instant -> UT offset), binary-searched,
** and the footer's POSIX TZ rule for the instants from the last transition
** on (a "slim" file carries few transitions and leaves the rest to it). */

typedef struct run_tz_rule {
    char kind;    /* 'J': Jn, day 1-365, Feb 29 never counted; 'D': n, day 0-365; 'M': Mm.w.d */
    int a, b, c;  /* J, D: the day; M: month 1-12, week 1-5 (5: the last), weekday 0-6 (Sunday 0) */
    int32_t secs; /* the local time of day of the change, -167h..167h (TZif v3) */
} run_tz_rule;

typedef struct run_tz_zone {
    char *dir, *name;        /* the key: the zone folder and the zone's name */
    int64_t *at;             /* the transition instants, strictly ascending */
    int32_t *off;            /* off[i]: the UT offset (seconds east) from at[i] on */
    size_t n;
    int32_t off0;            /* the offset before at[0] (time type 0) */
    int has_rule;            /* the footer's TZ string governs from at[n-1] on (always when n == 0) */
    int has_dst;             /* the rule has daylight saving time */
    int32_t std_off, dst_off;
    run_tz_rule start, end;  /* DST starts (a time in standard time), ends (in DST) */
} run_tz_zone;

/* ---- the footer's TZ string (POSIX TZ, with the TZif v3 extensions) */

static const char *run_tzs_name(const char *p)
{
    const char *q = p;
    if (*p == '<') {
        for (q = ++p; isalnum((unsigned char)*q) || *q == '+' || *q == '-'; q++)
            ;
        return *q == '>' && q - p >= 3 ? q + 1 : NULL;
    }
    while (isalpha((unsigned char)*q))
        q++;
    return q - p >= 3 ? q : NULL;
}

/* digits at *p: 1 to maxd of them, into *v; 0 when none */
static int run_tzs_num(const char **p, int maxd, int *v)
{
    int n = 0, x = 0;
    while (n < maxd && isdigit((unsigned char)**p)) {
        x = x * 10 + (*(*p)++ - '0');
        n++;
    }
    *v = x;
    return n > 0;
}

/* [+|-]hh[:mm[:ss]] with hh <= maxh, into *secs; the end, or NULL */
static const char *run_tzs_hms(const char *p, int maxh, int32_t *secs)
{
    int sign = 1, h, m = 0, s = 0;
    if (*p == '+' || *p == '-')
        sign = *p++ == '-' ? -1 : 1;
    if (!run_tzs_num(&p, 3, &h) || h > maxh)
        return NULL;
    if (*p == ':') {
        p++;
        if (!run_tzs_num(&p, 2, &m) || m > 59)
            return NULL;
        if (*p == ':') {
            p++;
            if (!run_tzs_num(&p, 2, &s) || s > 59)
                return NULL;
        }
    }
    *secs = sign * (h * 3600 + m * 60 + s);
    return p;
}

static const char *run_tzs_rule(const char *p, run_tz_rule *r)
{
    memset(r, 0, sizeof *r);
    if (*p == 'J') {
        p++;
        r->kind = 'J';
        if (!run_tzs_num(&p, 3, &r->a) || r->a < 1 || r->a > 365)
            return NULL;
    } else if (*p == 'M') {
        p++;
        r->kind = 'M';
        if (!run_tzs_num(&p, 2, &r->a) || r->a < 1 || r->a > 12 || *p++ != '.' ||
            !run_tzs_num(&p, 1, &r->b) || r->b < 1 || r->b > 5 || *p++ != '.' ||
            !run_tzs_num(&p, 1, &r->c) || r->c > 6)
            return NULL;
    } else {
        r->kind = 'D';
        if (!run_tzs_num(&p, 3, &r->a) || r->a > 365)
            return NULL;
    }
    r->secs = 2 * 3600;
    if (*p == '/')
        p = run_tzs_hms(p + 1, 167, &r->secs);
    return p;
}

/* Fills the rule fields of z from TZ string s; 0, or -1 when s is malformed. */
static int run_tzs_parse(const char *s, run_tz_zone *z)
{
    int32_t v;
    const char *p = run_tzs_name(s);
    if (!p || !(p = run_tzs_hms(p, 24, &v)))
        return -1;
    z->std_off = -v; /* POSIX counts hours west of Greenwich */
    z->has_dst = 0;
    if (*p) {
        if (!(p = run_tzs_name(p)))
            return -1;
        z->has_dst = 1;
        z->dst_off = z->std_off + 3600;
        if (*p && *p != ',') {
            if (!(p = run_tzs_hms(p, 24, &v)))
                return -1;
            z->dst_off = -v;
        }
        if (!*p) { /* no rule: the POSIX default, as the C library applies it */
            z->start = (run_tz_rule){ 'M', 3, 2, 0, 2 * 3600 };
            z->end = (run_tz_rule){ 'M', 11, 1, 0, 2 * 3600 };
        } else if (*p++ != ',' || !(p = run_tzs_rule(p, &z->start)) || *p++ != ',' ||
                   !(p = run_tzs_rule(p, &z->end))) {
            return -1;
        }
    }
    return *p ? -1 : 0;
}

/* The local calendar day (days since 1970-01-01) rule r falls on in year y. */
static int64_t run_tz_rule_day(const run_tz_rule *r, int64_t y)
{
    int64_t jan1 = run_days_from_civil(y, 1, 1);
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (r->kind == 'J')
        return jan1 + r->a - 1 + (leap && r->a >= 60);
    if (r->kind == 'D')
        return jan1 + r->a;
    int64_t first = run_days_from_civil(y, r->a, 1);
    int64_t next = r->a == 12 ? run_days_from_civil(y + 1, 1, 1) : run_days_from_civil(y, r->a + 1, 1);
    int wd = (int)(((first % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
    int64_t d = first + (r->c - wd + 7) % 7 + 7 * (r->b - 1);
    while (d >= next) /* week 5: the last such weekday of the month */
        d -= 7;
    return d;
}

/* The offset the footer's rule gives at instant t. The changes are those of
** t's UTC year, as the C library computes them (they differ from the local
** year's only for a rule within hours of New Year, which no zone has). */
static int32_t run_tz_rule_off(const run_tz_zone *z, int64_t t)
{
    if (!z->has_dst)
        return z->std_off;
    int64_t y;
    int m, d;
    run_civil_from_days(t >= 0 ? t / 86400 : -((-t + 86399) / 86400), &y, &m, &d);
    int64_t start = run_tz_rule_day(&z->start, y) * 86400 + z->start.secs - z->std_off;
    int64_t end = run_tz_rule_day(&z->end, y) * 86400 + z->end.secs - z->dst_off;
    int dst = start <= end ? t >= start && t < end : t < end || t >= start; /* south: over New Year */
    return dst ? z->dst_off : z->std_off;
}

/* The UT offset (seconds east) of zone z at instant t. */
static int32_t run_tz_off(const run_tz_zone *z, int64_t t)
{
    if (z->n == 0 || t >= z->at[z->n - 1]) {
        if (z->has_rule)
            return run_tz_rule_off(z, t);
        return z->n ? z->off[z->n - 1] : z->off0;
    }
    if (t < z->at[0])
        return z->off0;
    size_t lo = 0, hi = z->n - 1; /* at[lo] <= t < at[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (z->at[mid] <= t)
            lo = mid;
        else
            hi = mid;
    }
    return z->off[lo];
}

/* ---- the TZif file */

static uint32_t run_tz_be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t run_tz_be64(const unsigned char *p)
{
    return (int64_t)((uint64_t)run_tz_be32(p) << 32 | run_tz_be32(p + 4));
}

/* The header at h: its six counts (isut, isstd, leap, time, type, char) and
** the size of the data block after it, with times of tsize bytes. NULL, or
** what is wrong. */
static const char *run_tz_header(const unsigned char *h, int tsize, uint32_t cnt[6], size_t *block)
{
    if (memcmp(h, "TZif", 4))
        return "it does not start with \"TZif\"";
    for (int i = 0; i < 6; i++) {
        cnt[i] = run_tz_be32(h + 20 + 4 * i);
        if (cnt[i] > 1u << 20)
            return "a count in its header is out of range";
    }
    if (cnt[4] == 0 || cnt[4] > 256)
        return "its number of time types is out of range 1-256";
    if ((cnt[0] && cnt[0] != cnt[4]) || (cnt[1] && cnt[1] != cnt[4]))
        return "its UT/local or standard/wall indicator count differs from its type count";
    *block = (size_t)cnt[3] * ((size_t)tsize + 1) + (size_t)cnt[4] * 6 + cnt[5] +
             (size_t)cnt[2] * ((size_t)tsize + 4) + cnt[1] + cnt[0];
    return NULL;
}

/* Parses the TZif file b[0..len) into z's transitions and rule (z's arrays
** allocated). NULL, or what is wrong with it. */
static const char *run_tz_parse(const unsigned char *b, size_t len, run_tz_zone *z)
{
    if (len < 44)
        return len >= 4 && !memcmp(b, "TZif", 4) ? "it is truncated (header)"
                                                   : "it does not start with \"TZif\"";
    int version = b[4] == 0 ? 1 : b[4] >= '2' && b[4] <= '4' ? b[4] - '0' : 0;
    if (!version)
        return "its version is not 1, 2, 3 or 4";
    uint32_t cnt[6];
    size_t block;
    const char *why = run_tz_header(b, 4, cnt, &block);
    if (why)
        return why;
    const unsigned char *h = b;
    int tsize = 4;
    if (version >= 2) { /* the 64-bit data block follows the version 1 one */
        if (block > len - 44 || len - 44 - block < 44)
            return "it is truncated (before the 64-bit header)";
        h = b + 44 + block;
        tsize = 8;
        if ((why = run_tz_header(h, 8, cnt, &block)))
            return why;
    }
    const unsigned char *e = b + len, *p = h + 44;
    if (block > (size_t)(e - p))
        return "it is truncated (data block)";
    if (cnt[2])
        return "it counts leap seconds (a right/ zone), which pgpipe does not support";
    uint32_t nt = cnt[3], ntypes = cnt[4], nchars = cnt[5];
    const unsigned char *times = p, *idx = p + (size_t)nt * tsize, *types = idx + nt;
    int32_t utoff[256];
    for (uint32_t i = 0; i < ntypes; i++) {
        const unsigned char *ty = types + 6 * i;
        int32_t o = (int32_t)run_tz_be32(ty);
        if (o < -89999 || o > 93599)
            return "a time type's UT offset is out of range";
        if (ty[4] > 1 || (nchars && ty[5] >= nchars))
            return "a time type's DST flag or name index is out of range";
        utoff[i] = o;
    }
    z->n = nt;
    z->off0 = utoff[0];
    z->at = nt ? pp_malloc(nt * sizeof *z->at) : NULL;
    z->off = nt ? pp_malloc(nt * sizeof *z->off) : NULL;
    if (nt && (!z->at || !z->off))
        return "out of memory";
    for (uint32_t i = 0; i < nt; i++) {
        z->at[i] = tsize == 8 ? run_tz_be64(times + 8 * i) : (int32_t)run_tz_be32(times + 4 * i);
        if (i && z->at[i] <= z->at[i - 1])
            return "its transition times are not ascending";
        if (idx[i] >= ntypes)
            return "a transition's time type is out of range";
        z->off[i] = utoff[idx[i]];
    }
    z->has_rule = 0;
    if (version >= 2) { /* the footer: "\n" TZ-string "\n" */
        p += block;
        if (p == e || *p != '\n')
            return "it is truncated (footer)";
        const unsigned char *nl = memchr(p + 1, '\n', (size_t)(e - p - 1));
        if (!nl)
            return "it is truncated (footer)";
        size_t tl = (size_t)(nl - p - 1);
        if (tl) {
            char tzs[256];
            if (tl >= sizeof tzs || memchr(p + 1, 0, tl))
                return "its footer's TZ string is malformed";
            memcpy(tzs, p + 1, tl);
            tzs[tl] = 0;
            if (run_tzs_parse(tzs, z))
                return "its footer's TZ string is malformed";
            z->has_rule = 1;
        }
    }
    return NULL;
}

static void run_tz_free(run_tz_zone *z)
{
    if (!z)
        return;
    pp_free(z->dir);
    pp_free(z->name);
    pp_free(z->at);
    pp_free(z->off);
    pp_free(z);
}

/* Reads zone name from folder dir into *out (allocated). */
static int run_tz_load(const char *dir, const char *name, run_tz_zone **out, pgpipe_error *err)
{
    enum { MAX = 1 << 20 }; /* the largest zone file is under 4 KB */
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return pp_err(err, PGPIPE_IO, "time zone \"%s\": cannot open %s: %s", name, path, strerror(errno));
    struct stat st;
    size_t cap = fstat(fd, &st) == 0 && st.st_size >= 0 && st.st_size < MAX ? (size_t)st.st_size + 1 : MAX + 1;
    unsigned char *b = pp_malloc(cap);
    size_t len = 0;
    int rerr = 0;
    while (b && len < cap) { /* a file that grew meanwhile is read as far as cap */
        ssize_t k = read(fd, b + len, cap - len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            rerr = errno;
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    close(fd);
    if (!b)
        return pp_err_nomem(err);
    if (rerr) {
        pp_free(b);
        return pp_err(err, PGPIPE_IO, "time zone \"%s\": cannot read %s: %s", name, path, strerror(rerr));
    }
    run_tz_zone *z = pp_calloc(1, sizeof *z);
    const char *why = len > MAX ? "it is larger than 1 MB" : NULL;
    if (z && !why)
        why = run_tz_parse(b, len, z);
    pp_free(b);
    if (!z)
        return pp_err_nomem(err);
    if (!why && (!(z->dir = pp_strdup(dir)) || !(z->name = pp_strdup(name))))
        why = "out of memory";
    if (why) {
        run_tz_free(z);
        return pp_err(err, PGPIPE_PARSE, "time zone \"%s\": %s is not a valid zone file: %s", name, path, why);
    }
    *out = z;
    return PGPIPE_OK;
}

/* A handful of zones, read once and kept for the process's life (never
** changed once in the table; a tzdata update applies at the next start).
** Past RUN_TZ_CACHED distinct zones, a zone is read on every call. */
#define RUN_TZ_CACHED 16
static pp_mutex run_tz_lock = PP_MUTEX_INIT;
static run_tz_zone *run_tz_cache[RUN_TZ_CACHED];

static run_tz_zone *run_tz_find(const char *dir, const char *name)
{
    for (int i = 0; i < RUN_TZ_CACHED && run_tz_cache[i]; i++)
        if (!strcmp(run_tz_cache[i]->name, name) && !strcmp(run_tz_cache[i]->dir, dir))
            return run_tz_cache[i];
    return NULL;
}

/* Zone name from $TZDIR into *out: the cached one, or read (and cached
** while there is room). When the table is full *owned is set too: the
** caller frees it with run_tz_free. PGPIPE_MISUSE for an unknown zone,
** PGPIPE_IO when unreadable, PGPIPE_PARSE for a corrupt file. */
static int run_tz_get(const char *name, const run_tz_zone **out, run_tz_zone **owned, pgpipe_error *err)
{
    const char *dir = run_tz_dir();
    *owned = NULL;
    pp_mutex_lock(&run_tz_lock);
    *out = run_tz_find(dir, name);
    pp_mutex_unlock(&run_tz_lock);
    if (*out)
        return PGPIPE_OK;
    if (!run_tz_exists(name))
        return pp_err(err, PGPIPE_MISUSE, "unknown time zone \"%s\" (not in %s)", name, dir);
    run_tz_zone *z;
    int rc = run_tz_load(dir, name, &z, err); /* no lock held over file I/O */
    if (rc)
        return rc;
    pp_mutex_lock(&run_tz_lock);
    const run_tz_zone *had = run_tz_find(dir, name); /* another thread was quicker */
    int slot = 0;
    while (slot < RUN_TZ_CACHED && run_tz_cache[slot])
        slot++;
    if (!had && slot < RUN_TZ_CACHED)
        run_tz_cache[slot] = z;
    pp_mutex_unlock(&run_tz_lock);
    if (had) {
        run_tz_free(z);
        *out = had;
    } else {
        *out = z;
        if (slot == RUN_TZ_CACHED)
            *owned = z;
    }
    return PGPIPE_OK;
}

/* ---- next firing ------------------------------------------------------- */

/* The instant of wall-clock time W (seconds of the local calendar since
** 1970-01-01 00:00) in zone z (NULL: UTC): its first occurrence when it
** occurs twice; when it does not occur (a gap), the first instant after
** the gap. */
static int64_t wall_to_utc(int64_t W, const run_tz_zone *z)
{
    if (!z)
        return W;
    int64_t oa = run_tz_off(z, W - 54000), ob = run_tz_off(z, W + 46800);
    int64_t best = INT64_MAX;
    if (run_tz_off(z, W - oa) == oa)
        best = W - oa;
    if (ob != oa && run_tz_off(z, W - ob) == ob && W - ob < best)
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
        if (run_tz_off(z, mid) == oa)
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
    /* years 1 to 9999 (UTC): far from int64's ends, so no sum below can
    ** overflow, and every date in range has a Gregorian civil form */
    if (after < INT64_C(-62135596800) || after > INT64_C(253402300799)) {
        if (err)
            pp_err(err, PGPIPE_MISUSE, "pgpipe_cron_next: time %lld is outside the years 1 to 9999",
                   (long long)after);
        return PGPIPE_MISUSE;
    }
    if (c->every_ms > 0) {
        int64_t step = c->every_ms / 1000;
        int64_t q = after >= 0 ? after / step : -((-after + step - 1) / step);
        *next = (q + 1) * step;
        return PGPIPE_OK;
    }
    const run_tz_zone *zone = NULL;
    run_tz_zone *owned = NULL;
    if (tz && *tz && strcmp(tz, "UTC")) {
        int rc = run_tz_get(tz, &zone, &owned, err);
        if (rc)
            return rc;
    }
    int64_t wall_after = after + (zone ? run_tz_off(zone, after) : 0);
    int64_t z0 = (wall_after >= 0 ? wall_after / 86400 : -((-wall_after + 86399) / 86400)) - 1;
    int rc = PGPIPE_LIMIT;
    for (int64_t z = z0; z < z0 + 366 * 30 && rc != PGPIPE_OK; z++) {
        if (!cron_day_matches(c, z))
            continue;
        for (int h = 0; h < 24 && rc != PGPIPE_OK; h++) {
            /* an hour whose last minute is before the window, as the minute test below */
            if (!(c->hours >> h & 1) || z * 86400 + h * 3600 + 59 * 60 < wall_after - 3 * 3600)
                continue;
            for (int mi = 0; mi < 60; mi++) {
                if (!(c->minutes >> mi & 1))
                    continue;
                int64_t W = z * 86400 + h * 3600 + mi * 60;
                if (W < wall_after - 3 * 3600) /* no DST shift is that large */
                    continue;
                int64_t t = wall_to_utc(W, zone);
                if (t > after) {
                    *next = t;
                    rc = PGPIPE_OK;
                    break;
                }
            }
        }
    }
    run_tz_free(owned);
    if (rc != PGPIPE_OK && err)
        pp_err(err, PGPIPE_LIMIT, "the schedule does not fire in the next 30 years");
    return rc;
}

#endif /* PGPIPE_OMIT_RUN */
