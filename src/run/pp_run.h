/*
** The run layer's private header: the pipeline runner (issue 22). Layer
** order and rules: src/base/pp_base.h.
**
**   run_cron   cron expressions and intervals, next firing in an IANA zone
**   run_file   the pipeline file: reader, struct tree, offline validation
**              (pgpipe run --check)
**
** Both are left out with PGPIPE_OMIT_RUN (src/pgpipe.h says what it needs).
**
** @components run_cron run_file
*/
#ifndef PP_RUN_H
#define PP_RUN_H
#include "../http/pp_http.h"

#ifndef PGPIPE_OMIT_RUN
/* Days since 1970-01-01 of a proleptic Gregorian date, and back
** (run_cron.c; the pipeline file reuses them for nothing else yet). */
PGPIPE_PRIVATE int64_t run_days_from_civil(int64_t y, int m, int d);
PGPIPE_PRIVATE void run_civil_from_days(int64_t z, int64_t *y, int *m, int *d);
/* "30s", "5m", "2h", "1d", "500ms" -> milliseconds; -1 when malformed.
** Shared by the cron intervals and the pipeline file's durations. */
PGPIPE_PRIVATE int64_t run_duration_ms(const char *s);
/* 1 when ZONE names a readable file of the time zone database (or is
** "UTC"): glibc silently reads an unknown zone as UTC, so check first. */
PGPIPE_PRIVATE int run_tz_exists(const char *zone);
#endif

#endif /* PP_RUN_H */
