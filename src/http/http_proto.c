/*
** The HTTP/1.1 request parser and the response helpers.
*/

#include "pp_http.h"

#ifndef PGPIPE_OMIT_HTTP
#include <stdio.h>

PGPIPE_PRIVATE const char *pp_http_header_get(const pp_http_request *rq, const char *name,
                                              size_t *len)
{
    size_t n = strlen(name);
    for (int i = 0; i < rq->nheaders; i++) {
        const pp_http_header *h = &rq->headers[i];
        if (h->name_len == n && !strncasecmp(h->name, name, n)) {
            if (len)
                *len = h->value_len;
            return h->value;
        }
    }
    if (len)
        *len = 0;
    return NULL;
}

PGPIPE_PRIVATE int pp_http_reply_error(pp_http_reply *r, int status, const char *code,
                                       const char *request_id, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pp_buf b = {0};
    int rc = pp_buf_appendf(&b, "{\"error\":{\"status\":%d,\"code\":", status);
    if (rc == PGPIPE_OK)
        rc = pp_json_str(&b, code, strlen(code), 0);
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&b, ",\"message\":");
    if (rc == PGPIPE_OK)
        rc = pp_json_str(&b, msg, strlen(msg), 0);
    if (rc == PGPIPE_OK && request_id && *request_id) {
        rc = pp_buf_appendf(&b, ",\"request_id\":");
        if (rc == PGPIPE_OK)
            rc = pp_json_str(&b, request_id, strlen(request_id), 0);
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&b, "}}\n");
    if (rc != PGPIPE_OK) {
        pp_buf_free(&b);
        return rc;
    }
    memset(r, 0, sizeof *r);
    r->status = status;
    r->content_type = "application/json";
    r->body = b.data;
    r->body_len = b.len;
    return PGPIPE_OK;
}

PGPIPE_PRIVATE void pp_http_reply_free(pp_http_reply *r)
{
    pp_free(r->body);
    r->body = NULL;
    r->body_len = 0;
}

#endif /* PGPIPE_OMIT_HTTP */
