/*
** The HTTP server: sockets, the event loop, timeouts, routing, /healthz,
** /readyz, /metrics, the access log and the drain; the public API.
** (Skeleton: the server lands next.)
*/

#include "pp_http.h"

#ifndef PGPIPE_OMIT_HTTP

struct pgpipe_http {
    pp_handle h;
};

void pgpipe_http_options_init(pgpipe_http_options *o)
{
    memset(o, 0, sizeof *o);
    o->listen = "127.0.0.1:8080";
    o->require_tokens = -1;
    o->max_header_bytes = 16 << 10;
    o->max_body_bytes = 8 << 20;
    o->max_records = 10000;
    o->max_connections = 4096;
    o->header_timeout_ms = 10000;
    o->body_timeout_ms = 30000;
    o->idle_timeout_ms = 60000;
    o->group_window_ms = 2;
    o->group_records = 5000;
    o->committers = 2;
    o->memory_budget = (size_t)64 << 20;
    o->window_hours = 72;
    o->install_schema = 1;
}

int pgpipe_http_open(pgpipe_http **out, const pgpipe_http_options *o)
{
    (void)o;
    *out = pp_handle_new(sizeof **out);
    if (!*out)
        return PGPIPE_NOMEM;
    return pp_err(&(*out)->h.err, PGPIPE_MISUSE, "the HTTP server is not built yet");
}

int pgpipe_http_port(const pgpipe_http *h, int i)
{
    (void)h;
    (void)i;
    return 0;
}

int pgpipe_http_run(pgpipe_http *h)
{
    return pp_err(&h->h.err, PGPIPE_MISUSE, "the HTTP server is not built yet");
}

int pgpipe_http_stop(pgpipe_http *h)
{
    (void)h;
    return PGPIPE_OK;
}

int pgpipe_http_reload(pgpipe_http *h)
{
    (void)h;
    return PGPIPE_OK;
}

void pgpipe_http_close(pgpipe_http *h)
{
    pp_free(h);
}

#endif /* PGPIPE_OMIT_HTTP */
