/* ==== Cron: schedules and their next firing ==== */

/* Parses the schedule expressions of the pipeline file and computes when
** one fires next, in a named IANA time zone. No handle: pgpipe_cron is a
** caller-owned value (no allocation), filled by pgpipe_cron_parse.
**
** Thread safety: pgpipe_cron_parse is pure; pgpipe_cron_next is safe from
** any thread. It reads a zone's compiled file ($TZDIR/ZONE, by default
** /usr/share/zoneinfo/ZONE, TZif) itself, once per process, and keeps it
** (16 zones at most; more are read on every call); it never touches the
** environment's TZ. A tzdata update applies at the next start.
**
** Syntax (case-insensitive):
**   five fields  minute hour day-of-month month day-of-week
**                each a list "a,b,c" of: *, N, A-B, "*"/S, A-B/S, N/S
**                (N/S: from N to the field's end); minute 0-59, hour 0-23,
**                day 1-31, month 1-12 or JAN-DEC, weekday 0-7 or SUN-SAT
**                (0 and 7 are Sunday). When both day fields are restricted
**                (neither starts with *) a day matching EITHER fires (the
**                Vixie cron rule); otherwise both must match.
**   macros       @yearly (@annually) @monthly @weekly @daily (@midnight)
**                @hourly: "0 0 1 1 *", "0 0 1 * *", "0 0 * * 0",
**                "0 0 * * *", "0 * * * *"
**   intervals    "every N" + s|m|h|d ("every 30s", "every 5m"): real time,
**                aligned on multiples of N since 1970-01-01 00:00 UTC; the
**                time zone does not apply (use a cron expression for
**                local wall-clock times such as local midnight).
**
** Daylight saving time (cron expressions, in the zone given):
**   - a local time that does not exist (the spring-forward gap, 02:30 in
**     Europe/Berlin on the last Sunday of March) fires once, at the first
**     valid instant after it (03:00 local); several slots in the gap fire
**     once together;
**   - a local time that occurs twice (the autumn fall-back, 02:30 on the
**     last Sunday of October) fires once, at its first occurrence (the
**     summer-time one); the repeated hour fires nothing. Schedules that
**     must keep their real-time rhythm through the change use "every".
** Firings are on whole minutes (seconds for "every"); a schedule that
** can never fire ("0 0 30 2 *") is a parse error. */

typedef struct pgpipe_cron {
    /* read-only; filled by pgpipe_cron_parse */
    uint64_t minutes;     /* bit m: minute m (0-59) */
    uint32_t hours;       /* bit h: hour h (0-23) */
    uint32_t mdays;       /* bit d: day of month d (1-31) */
    uint16_t months;      /* bit m: month m (1-12) */
    uint8_t wdays;        /* bit w: weekday w (0 = Sunday .. 6) */
    uint8_t mday_star;    /* the day-of-month field started with '*' */
    uint8_t wday_star;    /* the day-of-week field started with '*' */
    int64_t every_ms;     /* > 0: an interval ("every ..."), the fields unused */
} pgpipe_cron;

/* Parse expr into *out. PGPIPE_OK, or PGPIPE_PARSE with err (may be NULL)
** saying which field and where: err->column is the 1-based character of
** expr at fault, and the message reads like
**   minute field: 61 is out of range 0-59 (column 1)
** PGPIPE_MISUSE when out or expr is NULL. */
int pgpipe_cron_parse(pgpipe_cron *out, const char *expr, pgpipe_error *err);

/* The first firing strictly after `after` (Unix seconds) into *next (Unix
** seconds), reading the wall clock of time zone tz (an IANA name such as
** "Europe/Berlin"; NULL or "" for UTC) for cron expressions; DST as the
** section above says. PGPIPE_OK; PGPIPE_MISUSE for NULL arguments or a zone
** the system's time zone database lacks (err says which); PGPIPE_PARSE when
** the zone's file is not a valid TZif file, PGPIPE_IO when it cannot be
** read (err names the file and what is wrong); PGPIPE_LIMIT when nothing
** fires in the next 30 years. */
int pgpipe_cron_next(const pgpipe_cron *c, int64_t after, const char *tz, int64_t *next,
                     pgpipe_error *err);
