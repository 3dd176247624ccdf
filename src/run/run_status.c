/*
** The status page and the runner's metrics, served by the HTTP component.
** STUB (lead): the status helper replaces it.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN

PGPIPE_PRIVATE int run_status_start(pgpipe_runner *r) { (void)r; return PGPIPE_OK; }
PGPIPE_PRIVATE void run_status_stop(pgpipe_runner *r) { (void)r; }
PGPIPE_PRIVATE void run_status_free(pgpipe_runner *r) { (void)r; }
#ifndef PGPIPE_OMIT_HTTP
PGPIPE_PRIVATE void run_status_page(void *ud, const pgpipe_http_page_request *rq,
                                    pgpipe_http_page_reply *out)
{
    (void)ud, (void)rq, (void)out;
}
PGPIPE_PRIVATE void run_status_metrics(void *ud, pgpipe_http_page_reply *out)
{
    (void)ud, (void)out;
}
#endif

#endif /* PGPIPE_OMIT_RUN */
