/*
** Schedules, the tasks after them, and the run history.
** STUB (lead): the schedules helper replaces it.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN

PGPIPE_PRIVATE int run_sched_start(pgpipe_runner *r) { (void)r; return PGPIPE_OK; }
PGPIPE_PRIVATE void run_sched_stop(pgpipe_runner *r, int drain_ms) { (void)r, (void)drain_ms; }
PGPIPE_PRIVATE int run_sched_reload(pgpipe_runner *r, const pgpipe_pipe_def *def)
{
    (void)r, (void)def;
    return PGPIPE_OK;
}
PGPIPE_PRIVATE void run_sched_free(pgpipe_runner *r) { (void)r; }
PGPIPE_PRIVATE int run_sched_maintain(pgpipe_runner *r, PGconn *conn, pgpipe_error *err)
{
    (void)r, (void)conn, (void)err;
    return PGPIPE_OK;
}
PGPIPE_PRIVATE void run_sched_next_json(pgpipe_runner *r, pp_buf *out)
{
    (void)r;
    pp_buf_appendf(out, "[]");
}

int pgpipe_runs_list(PGconn *conn, const pgpipe_runs_filter *f, PGresult **out, pgpipe_error *err)
{
    (void)conn, (void)f;
    if (out)
        *out = NULL;
    return pp_err(err, PGPIPE_MISUSE, "pgpipe_runs_list: not implemented yet");
}

#endif /* PGPIPE_OMIT_RUN */
