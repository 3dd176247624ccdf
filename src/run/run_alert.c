/*
** Alerts: rules evaluated on a timer or raised by the other components,
** delivered once per condition to the log, NOTIFY, a table and a command.
** STUB (lead): the alerts helper replaces it.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN

PGPIPE_PRIVATE int run_alerts_start(pgpipe_runner *r) { (void)r; return PGPIPE_OK; }
PGPIPE_PRIVATE void run_alerts_stop(pgpipe_runner *r) { (void)r; }
PGPIPE_PRIVATE int run_alerts_reload(pgpipe_runner *r, const pgpipe_pipe_def *def)
{
    (void)r, (void)def;
    return PGPIPE_OK;
}
PGPIPE_PRIVATE void run_alerts_free(pgpipe_runner *r) { (void)r; }
PGPIPE_PRIVATE void run_alert_raise(pgpipe_runner *r, const char *kind, const char *subject,
                                    const char *message, const char *detail_json)
{
    (void)detail_json;
    run_log(r, PGPIPE_LOG_WARN, message, "alert", kind, "subject", subject, NULL);
}

#endif /* PGPIPE_OMIT_RUN */
