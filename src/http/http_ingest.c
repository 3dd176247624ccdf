/*
** Request bodies into records, group commit into staging, idempotency keys,
** dead letters, backpressure. (Skeleton: answers 503 until it lands.)
*/

#include "pp_http.h"

#ifndef PGPIPE_OMIT_HTTP

struct pp_ingest {
    int unused;
};

PGPIPE_PRIVATE int pp_ingest_open(pp_ingest **out, const pgpipe_http_options *o,
                                  pp_http_auth *auth, struct pgpipe_http *h,
                                  pp_ingest_done_fn done, pgpipe_error *err)
{
    (void)o;
    (void)auth;
    (void)h;
    (void)done;
    *out = pp_calloc(1, sizeof **out);
    return *out ? PGPIPE_OK : pp_err_nomem(err);
}

PGPIPE_PRIVATE int pp_ingest_submit(pp_ingest *ig, const pp_http_request *rq,
                                    const char *source, uint64_t ticket, pp_http_reply *now)
{
    (void)ig;
    (void)source;
    (void)ticket;
    if (pp_http_reply_error(now, 503, "not_ready", rq->id, "ingest is not built yet") != PGPIPE_OK)
        now->status = 503;
    return 1;
}

PGPIPE_PRIVATE int pp_ingest_ready(pp_ingest *ig, char *why, size_t size)
{
    (void)ig;
    if (size)
        snprintf(why, size, "ingest is not built yet");
    return 0;
}

PGPIPE_PRIVATE int pp_ingest_metrics(pp_ingest *ig, pp_buf *b)
{
    (void)ig;
    (void)b;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE long long pp_ingest_pending(pp_ingest *ig)
{
    (void)ig;
    return 0;
}

PGPIPE_PRIVATE void pp_ingest_drain(pp_ingest *ig)
{
    (void)ig;
}

PGPIPE_PRIVATE void pp_ingest_close(pp_ingest *ig)
{
    pp_free(ig);
}

#endif /* PGPIPE_OMIT_HTTP */
