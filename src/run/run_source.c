/*
** Sources (watched folders, the HTTP source) and the workers of each
** event type.
** STUB (lead): the sources helper replaces it.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN

PGPIPE_PRIVATE int run_sources_start(pgpipe_runner *r) { (void)r; return PGPIPE_OK; }
PGPIPE_PRIVATE void run_sources_stop(pgpipe_runner *r, int drain_ms) { (void)r, (void)drain_ms; }
PGPIPE_PRIVATE int run_sources_reload(pgpipe_runner *r, const pgpipe_pipe_def *def)
{
    (void)r, (void)def;
    return PGPIPE_OK;
}
PGPIPE_PRIVATE void run_sources_free(pgpipe_runner *r) { (void)r; }
PGPIPE_PRIVATE void run_sources_metrics(pgpipe_runner *r, pp_buf *out) { (void)r, (void)out; }

#endif /* PGPIPE_OMIT_RUN */
