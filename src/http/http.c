/*
** The HTTP server: sockets, the event loop, timeouts, routing, /healthz,
** /readyz, /metrics, the access log and the drain; the public API.
**
** One thread runs the loop (epoll, level-triggered; Linux only: a poll
** fallback would cost an O(connections) scan per turn). A connection reads
** into its own buffer, which the parser (http_proto.c) works on in place;
** answers are appended to its output buffer and sent with one send() per
** turn (MSG_NOSIGNAL: the process's signal handlers are the caller's). A
** POST goes to ingest with a ticket (slot << 32 | sequence): the answer comes
** back from a committer thread through hs_done_cb, which queues it and wakes
** the loop; a ticket whose connection closed meanwhile finds another
** sequence in the slot and its answer is dropped. While ingest holds a
** request, its connection reads nothing more, so pipelined requests are
** answered in order.
**
** Timeouts: each kind (head, body, idle/write, lingering close, reserve) has
** a fixed duration, so each list is sorted by deadline when entries are
** appended: O(1) to arm, disarm and expire.
**
** The connection limit: max_connections (less when the open-file limit
** leaves no room for them) are served as usual. Past it, HS_RESERVE more are
** taken for one request each, so the operator can still see why: /healthz,
** /readyz and /metrics are answered, anything else gets 503 Retry-After,
** and the connection closes. A reserve connection has one short deadline for
** its whole life, and when the reserve is full the oldest reserve connection
** makes room for the new one: clients that hold connections open can fill
** the regular slots, not keep the reserve.
*/

#include "pp_http.h"

#ifndef PGPIPE_OMIT_HTTP
#include <stdio.h>

#ifdef __linux__
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#endif

#define HS_MAX_LISTEN 16

void pgpipe_http_options_init(pgpipe_http_options *o)
{
    if (!o)
        return;
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
    o->commit_timeout_ms = 30000;
    o->group_window_ms = 0;
    o->group_records = 5000;
    o->committers = 2;
    o->memory_budget = (size_t)64 << 20;
    o->window_hours = 72;
    o->install_schema = 1;
    o->spool_fsync = 0; /* PGPIPE_SPOOL_FSYNC_RECORD */
}

#ifdef __linux__

enum { HS_FREE, HS_READ, HS_WAIT, HS_LINGER };
enum { HS_T_HEAD, HS_T_BODY, HS_T_IDLE, HS_T_LINGER, HS_T_RESERVE, HS_NT };
#define HS_TAG_WAKE   ((uint64_t)1 << 40)
#define HS_TAG_LISTEN ((uint64_t)1 << 41)
#define HS_TAG_DB     ((uint64_t)1 << 42) /* the server's own connection, during a reload */
#define HS_OUT_HIGH   ((size_t)1 << 20)   /* stop parsing while this much is unsent */
#define HS_RBUF_MIN   4096
#define HS_LINGER_MS  2000
#define HS_RESERVE    16      /* connections past the limit, for the observability paths */
#define HS_RESERVE_MS 2000    /* a reserve connection's whole life (or the header timeout) */
#define HS_FD_MARGIN  64      /* descriptors kept for the rest: listeners, database, spool */

typedef struct hs_conn hs_conn;
struct hs_conn {
    int fd;
    int slot;
    int state;                  /* HS_* */
    int events;                 /* epoll interest now */
    int peer_eof;               /* the client closed its side */
    int closing;                /* close once the output is sent */
    int got_head;
    int trusted;                /* the socket peer is a trusted proxy */
    int reserve;                /* taken past the limit: one observability request */
    uint64_t ticket;            /* the request ingest holds (HS_WAIT) */
    char *rbuf;
    size_t rlen, rcap;
    pp_buf out;
    size_t out_off;
    pp_http_parser p;
    int tlist;                  /* HS_T_* or -1 */
    int64_t deadline;
    hs_conn *tprev, *tnext;
    char peer[64];              /* the socket peer */
    pp_http_request rq;
};

typedef struct hs_tlist {
    hs_conn *head, *tail;
    int64_t dur_us;
} hs_tlist;

typedef struct hs_done {
    uint64_t ticket;
    pp_http_reply reply;
} hs_done;

/* request latency buckets (seconds) */
static const double hs_lat_le[] = { 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                    0.25, 0.5, 1, 2.5, 5, 10 };
#define HS_NLAT (sizeof hs_lat_le / sizeof hs_lat_le[0])

struct pgpipe_http {
    pp_handle h;
    pgpipe_http_options o;      /* strings below are our copies */
    char *conninfo, *listen_s, *trusted;
    char *spool_dir;            /* options.spool_dir, copied */
    PGconn *db;                 /* schema install and token (re)loads */
    /* a reload of the tokens (hs_rl_*: never blocks the loop): its state,
    ** another one asked meanwhile, connected again once, the socket in
    ** epoll and for what, the end of its time (commit_timeout_ms) */
    int rl_state, rl_again, rl_retried, rl_broken, rl_fd, rl_got;
    uint32_t rl_ev;
    int64_t rl_deadline;
    pgpipe_error rl_err;
    uint64_t rl_ok, rl_failed;
    pp_http_auth *auth;
    pp_ingest *ig;
    int nlisten;
    int lfd[HS_MAX_LISTEN];
    int lport[HS_MAX_LISTEN];
    int ep, wakefd, sparefd;
    atomic_int stop, reload, running;
    hs_conn **conns;
    int nslots, nfree, nopen;
    int maxc;                   /* connections served as usual (max_connections, or
                                   what the open-file limit leaves room for) */
    int nreserve;               /* reserve connections open */
    int nwait;                  /* connections in HS_WAIT */
    int *free_slots;
    hs_tlist tl[HS_NT];
    int64_t now;
    time_t date_t;
    char date[40];
    uint32_t seq;
    int draining;
    pp_mutex mu;                /* guards done/ndone/capdone */
    hs_done *done;
    size_t ndone, capdone;
    hs_done *dspare;            /* the loop's (hs_deliver) */
    size_t capspare;
    /* metrics (loop thread only) */
    uint64_t by_status[600];
    uint64_t accepted, refused, bytes_in, bytes_out, submitted;
    uint64_t over_limit, evicted; /* reserve connections taken; closed for a newer one */
    uint64_t epoll_mods;        /* EPOLL_CTL_MOD calls (the tests count them) */
    uint64_t lat[HS_NLAT + 1];
    double lat_sum;
    uint64_t lat_count;
};

/* ---- timers ------------------------------------------------------------- */

static void hs_timer_off(pgpipe_http *h, hs_conn *c)
{
    if (c->tlist < 0)
        return;
    hs_tlist *l = &h->tl[c->tlist];
    if (c->tprev)
        c->tprev->tnext = c->tnext;
    else
        l->head = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    else
        l->tail = c->tprev;
    c->tprev = c->tnext = NULL;
    c->tlist = -1;
}

/* Arm timer kind k (a no-op when it is armed already: a deadline covers a
** whole phase, not each read). */
static void hs_timer_on(pgpipe_http *h, hs_conn *c, int k)
{
    if (c->reserve)
        k = HS_T_RESERVE; /* one deadline for its whole life */
    if (c->tlist == k)
        return;
    hs_timer_off(h, c);
    hs_tlist *l = &h->tl[k];
    c->deadline = h->now + l->dur_us;
    c->tlist = k;
    c->tprev = l->tail;
    c->tnext = NULL;
    if (l->tail)
        l->tail->tnext = c;
    else
        l->head = c;
    l->tail = c;
}

static int hs_next_timeout_ms(pgpipe_http *h)
{
    int64_t next = h->now + 1000000; /* wake once a second at least (Date) */
    for (int k = 0; k < HS_NT; k++)
        if (h->tl[k].head && h->tl[k].head->deadline < next)
            next = h->tl[k].head->deadline;
    if (h->rl_state && h->rl_deadline < next)
        next = h->rl_deadline;
    int64_t ms = (next - h->now + 999) / 1000;
    return ms < 0 ? 0 : (int)ms;
}

/* ---- output ------------------------------------------------------------- */

static const char *hs_reason(int s)
{
    switch (s) {
    case 100: return "Continue";
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return s < 300 ? "OK" : s < 500 ? "Client Error" : "Server Error";
    }
}

static void hs_date(pgpipe_http *h)
{
    time_t t = time(NULL);
    if (t == h->date_t)
        return;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(h->date, sizeof h->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    h->date_t = t;
}

static char *hs_utoa(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

static int hs_put(pp_buf *b, const char *s, size_t n)
{
    return pp_buf_append(b, s, n);
}
#define HS_PUTS(b, lit) hs_put((b), (lit), sizeof(lit) - 1)

static void hs_close(pgpipe_http *h, hs_conn *c);

static void hs_access_log(pgpipe_http *h, hs_conn *c, int status, size_t bytes, int64_t us,
                          long long spooled)
{
    if (!h->o.access_log || !pp_log_enabled(PGPIPE_LOG_INFO))
        return;
    static const char *mname[] = { "-", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
                                   "OTHER" };
    pp_http_request *rq = &c->rq;
    char path[256], st[8], by[24], ms[32], body[24];
    size_t pl = rq->path ? rq->path_len : 0;
    if (pl >= sizeof path)
        pl = sizeof path - 1;
    memcpy(path, rq->path ? rq->path : "", pl);
    path[pl] = 0;
    snprintf(st, sizeof st, "%d", status);
    snprintf(by, sizeof by, "%zu", bytes);
    snprintf(body, sizeof body, "%zu", rq->body ? rq->body_len : (size_t)0);
    snprintf(ms, sizeof ms, "%.3f", (double)us / 1000.0);
    int m = rq->method >= 0 && rq->method <= PP_HTTP_OTHER ? rq->method : 0;
    pgpipe_log_field f[] = {
        { "method", mname[m] }, { "path", path }, { "status", st }, { "bytes", by },
        { "body_bytes", body }, { "ms", ms }, { "peer", rq->peer }, { "request_id", rq->id },
        { "spooled", NULL },
    };
    char sp[24];
    int nf = (int)(sizeof f / sizeof f[0]);
    if (spooled > 0) {
        snprintf(sp, sizeof sp, "%lld", spooled); /* the records went to the spool */
        f[nf - 1].value = sp;
    } else {
        nf--;
    }
    pgpipe_log(PGPIPE_LOG_INFO, "http", "request", f, nf);
}

/* Append the answer to rq (status line, headers, body) and account for it;
** takes reply->body. extra: more header lines ("Allow: ...\r\n") or NULL. */
static void hs_write_reply(pgpipe_http *h, hs_conn *c, pp_http_reply *r, const char *extra)
{
    pp_http_request *rq = &c->rq;
    int status = r->status >= 100 && r->status < 600 ? r->status : 500;
    if (r->close || !rq->keep_alive || h->draining || c->peer_eof || !c->p.consumed || c->reserve)
        c->closing = 1; /* consumed is 0 while the request is not complete */
    hs_date(h);
    pp_buf *b = &c->out;
    /* the head's size is known before it is written: one reservation, then
    ** plain copies (no capacity check per piece) */
    char st[24], *ste = st + sizeof st, *sts = hs_utoa(ste, (uint64_t)status);
    char cl[24], *cle = cl + sizeof cl, *cls = hs_utoa(cle, r->body_len);
    char ra[24], *rae = ra + sizeof ra, *ras = rae;
    if (r->retry_after > 0)
        ras = hs_utoa(rae, (uint64_t)r->retry_after);
    const char *reason = hs_reason(status);
    const char *ct = r->content_type ? r->content_type : "application/json";
    size_t nreason = strlen(reason), nct = strlen(ct), nid = strlen(rq->id), ndate = strlen(h->date);
    size_t nwww = r->www_authenticate ? strlen(r->www_authenticate) : 0;
    size_t nextra = extra ? strlen(extra) : 0;
    const char *conn = c->closing ? "Connection: close\r\n"
                       : rq->minor == 0 ? "Connection: keep-alive\r\n" : "";
    size_t nconn = strlen(conn);
    size_t nbody = rq->method != PP_HTTP_HEAD ? r->body_len : 0;
#define HS_LIT(lit) (sizeof(lit) - 1)
    size_t need = HS_LIT("HTTP/1.1 ") + (size_t)(ste - sts) + 1 + nreason +
                  HS_LIT("\r\nContent-Type: ") + nct + HS_LIT("\r\nContent-Length: ") +
                  (size_t)(cle - cls) + HS_LIT("\r\nX-Request-Id: ") + nid + HS_LIT("\r\nDate: ") +
                  ndate + 2 + (r->retry_after > 0 ? HS_LIT("Retry-After: ") + (size_t)(rae - ras) + 2 : 0) +
                  (r->www_authenticate ? HS_LIT("WWW-Authenticate: ") + nwww + 2 : 0) +
                  (r->replayed ? HS_LIT("Idempotent-Replayed: true\r\n") : 0) + nextra + nconn + 2 +
                  nbody;
    int rc = pp_buf_reserve(b, need);
    if (rc == PGPIPE_OK) {
        char *w = b->data + b->len;
#define HS_W(s, n) (memcpy(w, (s), (n)), w += (n))
#define HS_WL(lit) HS_W(lit, HS_LIT(lit))
        HS_WL("HTTP/1.1 ");
        HS_W(sts, (size_t)(ste - sts));
        *w++ = ' ';
        HS_W(reason, nreason);
        HS_WL("\r\nContent-Type: ");
        HS_W(ct, nct);
        HS_WL("\r\nContent-Length: ");
        HS_W(cls, (size_t)(cle - cls));
        HS_WL("\r\nX-Request-Id: ");
        HS_W(rq->id, nid);
        HS_WL("\r\nDate: ");
        HS_W(h->date, ndate);
        HS_WL("\r\n");
        if (r->retry_after > 0) {
            HS_WL("Retry-After: ");
            HS_W(ras, (size_t)(rae - ras));
            HS_WL("\r\n");
        }
        if (r->www_authenticate) {
            HS_WL("WWW-Authenticate: ");
            HS_W(r->www_authenticate, nwww);
            HS_WL("\r\n");
        }
        if (r->replayed)
            HS_WL("Idempotent-Replayed: true\r\n");
        if (nextra)
            HS_W(extra, nextra);
        HS_W(conn, nconn);
        HS_WL("\r\n");
        if (nbody)
            HS_W(r->body, nbody);
#undef HS_WL
#undef HS_W
#undef HS_LIT
        b->len = (size_t)(w - b->data);
    }
    if (rc != PGPIPE_OK)
        c->closing = 1; /* out of memory: the connection goes, the server stays */
    h->by_status[status]++;
    int64_t us = h->now - rq->t_start_us;
    if (us < 0)
        us = 0;
    double sec = (double)us / 1e6;
    size_t i = 0;
    while (i < HS_NLAT && sec > hs_lat_le[i])
        i++;
    h->lat[i]++;
    h->lat_sum += sec;
    h->lat_count++;
    hs_access_log(h, c, status, r->body_len, us, r->spooled);
    pp_http_reply_free(r);
}

static void hs_error(pgpipe_http *h, hs_conn *c, int status, const char *code, const char *why,
                     const char *extra)
{
    pp_http_reply r;
    if (pp_http_reply_error(&r, status, code, c->rq.id, "%s", why) != PGPIPE_OK) {
        memset(&r, 0, sizeof r);
        r.status = status;
    }
    hs_write_reply(h, c, &r, extra);
}

static void hs_reply_text(pgpipe_http *h, hs_conn *c, int status, const char *ct, char *body,
                          size_t len)
{
    pp_http_reply r;
    memset(&r, 0, sizeof r);
    r.status = status;
    r.content_type = ct;
    r.body = body;
    r.body_len = len;
    hs_write_reply(h, c, &r, NULL);
}

static void hs_reply_json(pgpipe_http *h, hs_conn *c, int status, const char *json)
{
    char *b = pp_strdup(json);
    hs_reply_text(h, c, status, "application/json", b, b ? strlen(b) : 0);
}

/* Send what is queued. -1 when the connection closed. */
static int hs_flush(pgpipe_http *h, hs_conn *c)
{
    while (c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            h->bytes_out += (uint64_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            hs_close(h, c);
            return -1;
        }
    }
    c->out.len = c->out_off = 0;
    if (c->out.cap > ((size_t)64 << 10)) {
        pp_buf_free(&c->out);
        c->out_off = 0;
    }
    if (c->closing && c->state == HS_READ) {
        if (h->draining || c->peer_eof) {
            hs_close(h, c);
            return -1;
        }
        /* lingering close: the client may still be sending (a refused
        ** body); closing now could reset the connection before it has read
        ** the answer */
        shutdown(c->fd, SHUT_WR);
        c->state = HS_LINGER;
        hs_timer_on(h, c, HS_T_LINGER);
    }
    return 0;
}

/* ---- connections -------------------------------------------------------- */

static void hs_set_events(pgpipe_http *h, hs_conn *c, int want)
{
    if (want == c->events)
        return;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = (uint32_t)want;
    ev.data.u64 = (uint64_t)c->slot;
    epoll_ctl(h->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->events = want;
    h->epoll_mods++;
}

/* Watch what c needs: EPOLLIN while it reads, EPOLLOUT only while a send
** would block. While ingest holds its request (HS_WAIT) EPOLLIN stays as it
** was: a keep-alive client sends nothing until it has its answer, so the
** common case costs no epoll_ctl at all; one that pipelines or closes
** meanwhile wakes the loop once and hs_conn_event drops EPOLLIN then. */
static void hs_interest(pgpipe_http *h, hs_conn *c)
{
    int want = 0;
    if (c->state == HS_LINGER || (c->state == HS_READ && !c->closing && !c->peer_eof &&
                                  c->out.len - c->out_off < HS_OUT_HIGH))
        want |= EPOLLIN;
    else if (c->state == HS_WAIT)
        want |= c->events & EPOLLIN;
    if (c->out_off < c->out.len)
        want |= EPOLLOUT;
    hs_set_events(h, c, want);
}

static void hs_close(pgpipe_http *h, hs_conn *c)
{
    if (c->state == HS_FREE)
        return;
    if (c->state == HS_WAIT)
        h->nwait--;
    if (c->reserve)
        h->nreserve--;
    c->reserve = 0;
    hs_timer_off(h, c);
    close(c->fd); /* removes it from the epoll set too */
    c->fd = -1;
    c->state = HS_FREE;
    c->ticket = 0;
    if (c->rcap > ((size_t)64 << 10)) {
        pp_free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
    c->rlen = 0;
    pp_buf_free(&c->out);
    c->out_off = 0;
    h->free_slots[h->nfree++] = c->slot;
    h->nopen--;
}

/* A fresh parser for the next request, whose bytes (if any) start the buffer. */
static void hs_next_request(pgpipe_http *h, hs_conn *c)
{
    if (c->p.consumed) {
        size_t rest = c->rlen - c->p.consumed;
        if (rest)
            memmove(c->rbuf, c->rbuf + c->p.consumed, rest);
        c->rlen = rest;
    }
    pp_http_parser_init(&c->p, h->o.max_header_bytes, h->o.max_body_bytes);
    c->got_head = 0;
    hs_timer_off(h, c); /* each request has its own deadlines */
    pp_http_request *rq = &c->rq;
    rq->method = 0;
    rq->path = NULL;
    rq->path_len = 0;
    rq->nheaders = 0;
    rq->keep_alive = 0;
    rq->minor = 1;
    rq->body = NULL;
    rq->body_len = 0;
    rq->id[0] = 0;
    rq->t_start_us = h->now;
    memcpy(rq->peer, c->peer, sizeof rq->peer); /* hs_peer refines it once the head is in */
}

/* The largest the read buffer may grow for the request being read. */
static size_t hs_rlimit(pgpipe_http *h, hs_conn *c)
{
    size_t hb = h->o.max_header_bytes + 4096;
    if (!c->got_head)
        return hb < 16384 ? 16384 : hb;
    if (c->p.chunked) /* chunk framing on top of the body, bounded */
        return c->p.head_len + 2 * h->o.max_body_bytes + 65536;
    return c->p.head_len + (size_t)c->p.left + 4096;
}

/* Grow the read buffer, moving the request's pointers with it. */
static int hs_grow(pgpipe_http *h, hs_conn *c)
{
    size_t lim = hs_rlimit(h, c);
    if (c->rcap >= lim)
        return -1;
    /* doubling, even when the length is known: a client that announces a
    ** large body and sends little of it gets little memory */
    size_t cap = c->rcap ? c->rcap * 2 : HS_RBUF_MIN;
    if (cap > lim)
        cap = lim;
    char *nb = pp_malloc(cap);
    if (!nb)
        return -1;
    char *ob = c->rbuf;
    if (c->rlen)
        memcpy(nb, ob, c->rlen);
    if (ob && c->got_head) {
        pp_http_request *rq = &c->rq;
        /* (a pointer outside the buffer, the "/" of "http://host", stays) */
#define HS_MOVE(p) if ((p) && (uintptr_t)(p) - (uintptr_t)ob < c->rlen) p = nb + ((p) - ob)
        HS_MOVE(rq->target);
        HS_MOVE(rq->path);
        HS_MOVE(rq->query);
        for (int i = 0; i < rq->nheaders; i++) {
            HS_MOVE(rq->headers[i].name);
            HS_MOVE(rq->headers[i].value);
        }
#undef HS_MOVE
    }
    pp_free(ob);
    c->rbuf = nb;
    c->rcap = cap;
    return 0;
}

/* Read what the socket has. -1 when the connection closed. */
static int hs_read(pgpipe_http *h, hs_conn *c)
{
    if (c->state == HS_LINGER) { /* discard until the client's end */
        char sink[4096];
        for (;;) {
            ssize_t n = recv(c->fd, sink, sizeof sink, 0);
            if (n > 0) {
                h->bytes_in += (uint64_t)n;
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                return 0;
            } else {
                hs_close(h, c);
                return -1;
            }
        }
    }
    for (;;) {
        if (c->rlen == c->rcap && hs_grow(h, c) < 0)
            return 0; /* full: the parser decides (431, 413) */
        ssize_t n = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, 0);
        if (n > 0) {
            if (c->rlen == 0 && !c->got_head)
                c->rq.t_start_us = h->now;
            h->bytes_in += (uint64_t)n;
            c->rlen += (size_t)n;
            if (c->rlen < c->rcap)
                return 0;
        } else if (n == 0) {
            c->peer_eof = 1;
            return 0;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        } else {
            hs_close(h, c);
            return -1;
        }
    }
}

/* ---- routing ------------------------------------------------------------ */

static int hs_path_is(const pp_http_request *rq, const char *lit)
{
    size_t n = strlen(lit);
    return rq->path_len == n && !memcmp(rq->path, lit, n);
}

/* The paths the operator watches the server by. */
static int hs_observability(const pp_http_request *rq)
{
    return hs_path_is(rq, "/healthz") || hs_path_is(rq, "/readyz") || hs_path_is(rq, "/metrics");
}

#define HS_EVENTS "/v1/events/"

/* A header of a POST whose two copies would make the request ambiguous
** (which credential, which key?): its name, else NULL. Like Pgpipe-Seq
** twice (ingest), the request is refused. */
static const char *hs_header_twice(const pp_http_request *rq, const pgpipe_http_source *src)
{
    static const char *const once[] = { "Authorization", "Content-Type", "Idempotency-Key",
                                        "X-Hub-Signature-256", "Stripe-Signature", "webhook-id",
                                        "webhook-timestamp", "webhook-signature", "X-Event-Type",
                                        "X-GitHub-Event" };
    const size_t nonce = sizeof once / sizeof once[0];
    for (size_t k = 0; k < nonce + 2; k++) {
        const char *name = k < nonce ? once[k]
                           : !src ? NULL
                           : k == nonce ? src->idempotency_header : src->event_type_header;
        if (!name || !*name)
            continue;
        size_t len = strlen(name);
        int seen = 0;
        for (int i = 0; i < rq->nheaders; i++)
            if (rq->headers[i].name_len == len && !strncasecmp(rq->headers[i].name, name, len) &&
                seen++)
                return name;
    }
    return NULL;
}

/* Is the head of c's request one this server takes? 0 = yes (for a POST to
** the events path, *source is set); else an answer is written (404, 405,
** 400, 401/403, 411) and 1 returned. With body_known 0 (an Expect:
** 100-continue head) the checks that need no body run, ingest's too (415, a
** bad key, 503 when nothing can take the request): 100 only when they pass. */
static int hs_check(pgpipe_http *h, hs_conn *c, char *source, int body_known)
{
    pp_http_request *rq = &c->rq;
    int get = rq->method == PP_HTTP_GET || rq->method == PP_HTTP_HEAD;
    source[0] = 0;
    if (hs_observability(rq)) {
        if (!get) {
            hs_error(h, c, 405, "method_not_allowed", "this path answers GET and HEAD",
                     "Allow: GET, HEAD\r\n");
            return 1;
        }
        return 0;
    }
    size_t pre = sizeof HS_EVENTS - 1;
    if (h->o.page && (rq->path_len < pre || memcmp(rq->path, HS_EVENTS, pre)))
        return 0; /* the embedding program's pages (hs_page) */
    if (rq->path_len < pre || memcmp(rq->path, HS_EVENTS, pre) || rq->path_len == pre) {
        hs_error(h, c, 404, "not_found", "no such path (events go to POST /v1/events/{source})",
                 NULL);
        return 1;
    }
    const char *s = rq->path + pre;
    size_t n = rq->path_len - pre;
    if (memchr(s, '/', n)) {
        hs_error(h, c, 404, "not_found", "no such path (events go to POST /v1/events/{source})",
                 NULL);
        return 1;
    }
    if (!pp_http_source_ok(s, n)) {
        hs_error(h, c, 400, "invalid_source", "a source is " PGPIPE_HTTP_SOURCE_RULE, NULL);
        return 1;
    }
    if (rq->method != PP_HTTP_POST) {
        hs_error(h, c, 405, "method_not_allowed", "events are sent with POST", "Allow: POST\r\n");
        return 1;
    }
    if (!c->p.length_given) {
        /* RFC 9110 15.5.12; the bytes a client sent as its body would be
        ** read as the next request: the connection closes */
        pp_http_reply r;
        if (pp_http_reply_error(&r, 411, "length_required", rq->id, "a POST needs a "
                                "Content-Length or Transfer-Encoding: chunked") != PGPIPE_OK) {
            memset(&r, 0, sizeof r);
            r.status = 411;
        }
        r.close = 1;
        hs_write_reply(h, c, &r, NULL);
        return 1;
    }
    memcpy(source, s, n);
    source[n] = 0;
    const pgpipe_http_source *src = pp_http_auth_source(h->auth, source);
    const char *twice = hs_header_twice(rq, src);
    if (twice) {
        char why[160];
        snprintf(why, sizeof why, "%s is given more than once", twice);
        hs_error(h, c, 400, "duplicate_header", why, NULL);
        return 1;
    }
    /* a signature covers the body: checked once it is here */
    if (body_known || !src || src->signature == PGPIPE_HTTP_SIG_NONE) {
        pp_http_reply deny;
        memset(&deny, 0, sizeof deny);
        int st = pp_http_auth_check(h->auth, source, rq, time(NULL), &deny);
        if (st) {
            if (!deny.status)
                deny.status = st;
            hs_write_reply(h, c, &deny, NULL);
            return 1;
        }
    }
    if (!body_known) {
        /* what the head decides, before 100 Continue asks for the body */
        pp_http_reply now;
        if (pp_ingest_head(h->ig, rq, source, c->p.chunked ? 0 : (size_t)c->p.left, &now)) {
            hs_write_reply(h, c, &now, NULL);
            return 1;
        }
    }
    return 0;
}

static void hs_metrics(pgpipe_http *h, hs_conn *c);

/* A request for the embedding program's pages: the page hook answers it
** from what it has at hand (it must not block the loop); status 0 is 404. */
static void hs_page(pgpipe_http *h, hs_conn *c)
{
    static const char *mname[] = { "-", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS",
                                   "OTHER" };
    pp_http_request *rq = &c->rq;
    size_t alen = 0, clen = 0;
    const char *auth = pp_http_header_get(rq, "authorization", &alen);
    const char *ctype = pp_http_header_get(rq, "content-type", &clen);
    char *path = pp_strndup(rq->path, rq->path_len);
    char *query = pp_strndup(rq->query ? rq->query : "", rq->query ? rq->query_len : 0);
    char *a = auth ? pp_strndup(auth, alen) : NULL, *ct = ctype ? pp_strndup(ctype, clen) : NULL;
    pp_buf body = { 0 };
    pgpipe_http_page_reply out;
    memset(&out, 0, sizeof out);
    out.priv = &body;
    if (path && query && (!auth || a) && (!ctype || ct)) {
        pgpipe_http_page_request pr;
        pr.method = mname[rq->method >= 0 && rq->method <= PP_HTTP_OTHER ? rq->method : 0];
        pr.path = path;
        pr.query = query;
        pr.authorization = a;
        pr.content_type = ct;
        pr.body = rq->body ? rq->body : "";
        pr.body_len = rq->body ? rq->body_len : 0;
        h->o.page(h->o.page_ud, &pr, &out);
    } else {
        out.status = 500;
    }
    pp_free(path);
    pp_free(query);
    pp_free(a);
    pp_free(ct);
    if (out.status <= 0) {
        pp_buf_free(&body);
        hs_error(h, c, 404, "not_found", "no such page", NULL);
        return;
    }
    pp_http_reply r;
    memset(&r, 0, sizeof r);
    r.status = out.status;
    r.content_type = out.content_type ? out.content_type : "text/html; charset=utf-8";
    r.body = body.data;
    r.body_len = body.data ? body.len : 0;
    hs_write_reply(h, c, &r, out.headers);
}

static void hs_readyz(pgpipe_http *h, hs_conn *c)
{
    char why[256] = "";
    if (pp_ingest_ready(h->ig, why, sizeof why)) {
        if (!why[0]) {
            hs_reply_json(h, c, 200, "{\"status\":\"ready\"}\n");
            return;
        }
        /* ready through the spool (store and forward) */
        pp_buf b = { 0 };
        pp_buf_appendf(&b, "{\"status\":\"ready\",\"spooling\":true,\"reason\":");
        pp_json_str(&b, why, strlen(why), 0);
#ifndef PGPIPE_OMIT_SPOOL
        pgpipe_spool_status st = { 0 };
        if (pp_ingest_spool_stats(h->ig, &st))
            pp_buf_appendf(&b, ",\"spool\":{\"records\":%lld,\"bytes\":%lld,\"age_seconds\":%.3f}",
                           st.records, st.bytes, st.age_seconds);
#endif
        pp_buf_appendf(&b, "}\n");
        hs_reply_text(h, c, 200, "application/json", b.data, b.data ? b.len : 0);
        return;
    }
    pp_buf b = { 0 };
    pp_buf_appendf(&b, "{\"status\":\"unready\",\"reason\":");
    pp_json_str(&b, why, strlen(why), 0);
    pp_buf_appendf(&b, "}\n");
    hs_reply_text(h, c, 503, "application/json", b.data, b.data ? b.len : 0);
}

/* Route a complete request: answer it, or hand it to ingest (HS_WAIT). */
static void hs_route(pgpipe_http *h, hs_conn *c)
{
    char source[72];
    if (hs_check(h, c, source, 1))
        return;
    pp_http_request *rq = &c->rq;
    if (!source[0]) {
        if (hs_path_is(rq, "/healthz"))
            hs_reply_json(h, c, 200, "{\"status\":\"ok\"}\n");
        else if (hs_path_is(rq, "/readyz"))
            hs_readyz(h, c);
        else if (hs_path_is(rq, "/metrics"))
            hs_metrics(h, c);
        else
            hs_page(h, c);
        return;
    }
    if (++h->seq == 0)
        h->seq = 1;
    uint64_t ticket = (uint64_t)(uint32_t)c->slot << 32 | h->seq;
    pp_http_reply now;
    memset(&now, 0, sizeof now);
    h->submitted++;
    c->ticket = ticket;
    c->state = HS_WAIT;
    if (pp_ingest_submit(h->ig, rq, source, ticket, &now)) {
        c->state = HS_READ;
        c->ticket = 0;
        hs_write_reply(h, c, &now, NULL);
        return;
    }
    h->nwait++;
    hs_timer_off(h, c);
}

/* The peer of a request: the socket's, or, from a trusted proxy, the
** right-most X-Forwarded-For entry that is not itself a trusted proxy. */
static void hs_peer(pgpipe_http *h, hs_conn *c)
{
    pp_http_request *rq = &c->rq;
    memcpy(rq->peer, c->peer, sizeof rq->peer);
    if (!c->trusted)
        return;
    const pp_http_header *xff = NULL;
    for (int i = 0; i < rq->nheaders; i++)
        if (rq->headers[i].name_len == 15 && !strncasecmp(rq->headers[i].name, "x-forwarded-for", 15))
            xff = &rq->headers[i];
    if (!xff)
        return;
    const char *v = xff->value;
    size_t e = xff->value_len;
    char addr[64];
    while (e > 0) {
        size_t b = e;
        while (b > 0 && v[b - 1] != ',')
            b--;
        size_t s = b, t = e;
        while (s < t && (v[s] == ' ' || v[s] == '\t'))
            s++;
        while (t > s && (v[t - 1] == ' ' || v[t - 1] == '\t'))
            t--;
        if (t > s && t - s < sizeof addr) {
            memcpy(addr, v + s, t - s);
            addr[t - s] = 0;
            memcpy(rq->peer, addr, t - s + 1);
            if (!pp_http_auth_trusted_proxy(h->auth, addr))
                return;
        }
        e = b ? b - 1 : 0;
    }
}

static void hs_request_id(pgpipe_http *h, hs_conn *c)
{
    if (c->rq.id[0])
        return;
    if (pp_uuid_v7(c->rq.id) != PGPIPE_OK)
        snprintf(c->rq.id, sizeof c->rq.id, "%08x-0000-7000-8000-%012llx", (unsigned)h->seq,
                 (unsigned long long)h->now);
}

/* A request other than /healthz, /readyz or /metrics on a reserve connection. */
static void hs_over_limit(pgpipe_http *h, hs_conn *c)
{
    pp_http_reply r;
    if (pp_http_reply_error(&r, 503, "connection_limit", c->rq.id,
                            "the server has %d connections open, its limit (max_connections); "
                            "past it only /healthz, /readyz and /metrics are answered",
                            h->maxc) != PGPIPE_OK) {
        memset(&r, 0, sizeof r);
        r.status = 503;
    }
    r.retry_after = 1;
    r.close = 1;
    hs_write_reply(h, c, &r, NULL);
}

/* Parse and answer what the buffer holds, in order. */
static void hs_process(pgpipe_http *h, hs_conn *c)
{
    while (c->state == HS_READ && !c->closing && c->out.len - c->out_off < HS_OUT_HIGH) {
        int rc = pp_http_parse(&c->p, c->rbuf, c->rlen, &c->rq);
        if (rc == PP_HTTP_MORE) {
            if (c->rlen == c->rcap && c->rcap >= hs_rlimit(h, c)) {
                hs_request_id(h, c);
                hs_error(h, c, 413, "body_too_large",
                         "the chunked body's framing is larger than the limit allows", NULL);
            }
            break;
        }
        if (rc == PP_HTTP_ERROR) {
            hs_request_id(h, c);
            static const char *codes[] = { "bad_request", "body_too_large", "headers_too_large",
                                           "expectation_failed", "version_not_supported",
                                           "not_implemented" };
            int s = c->p.status;
            hs_error(h, c, s,
                     codes[s == 413 ? 1 : s == 431 ? 2 : s == 417 ? 3 : s == 505 ? 4
                           : s == 501 ? 5 : 0],
                     c->p.why, NULL);
            break;
        }
        hs_request_id(h, c);
        if (!c->got_head) {
            c->got_head = 1;
            hs_peer(h, c);
        }
        if (c->reserve && !hs_observability(&c->rq)) {
            hs_over_limit(h, c);
            break;
        }
        if (rc == PP_HTTP_GOT_HEAD) {
            if (c->p.expect_continue) {
                char source[72];
                if (hs_check(h, c, source, 0))
                    break;
                HS_PUTS(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
            }
            continue;
        }
        hs_route(h, c);
        if (c->state == HS_WAIT || c->closing)
            break;
        hs_next_request(h, c);
    }
}

/* After anything happened to c: send, then close or watch it. */
static void hs_settle(pgpipe_http *h, hs_conn *c)
{
    if (c->out_off < c->out.len || (c->closing && c->state == HS_READ))
        if (hs_flush(h, c) < 0)
            return;
    if (c->state == HS_READ && c->peer_eof && c->out_off == c->out.len) {
        hs_close(h, c); /* the client is gone and nothing is owed */
        return;
    }
    if (c->state == HS_READ && c->out_off < c->out.len)
        hs_timer_on(h, c, HS_T_IDLE); /* a write timeout: the client must read */
    else if (c->state == HS_READ && !c->closing)
        hs_timer_on(h, c, c->got_head ? HS_T_BODY : c->rlen ? HS_T_HEAD : HS_T_IDLE);
    hs_interest(h, c);
}

static void hs_conn_event(pgpipe_http *h, hs_conn *c, uint32_t ev)
{
    if (ev & EPOLLERR) {
        hs_close(h, c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLHUP)) {
        if (c->state == HS_WAIT) {
            if (ev & EPOLLHUP) {
                hs_close(h, c); /* its answer will be dropped */
                return;
            }
            /* the next request (or the client's end) stays in the socket
            ** until this answer is out: answers go in order */
            hs_set_events(h, c, c->events & ~EPOLLIN);
            if (!(ev & EPOLLOUT))
                return;
        } else if (hs_read(h, c) < 0) {
            return;
        }
    }
    if ((ev & EPOLLOUT) && hs_flush(h, c) < 0)
        return;
    if (c->state == HS_READ)
        hs_process(h, c);
    hs_settle(h, c);
}

static void hs_accept(pgpipe_http *h, int li)
{
    for (int k = 0; k < 256; k++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = accept(h->lfd[li], (struct sockaddr *)&ss, &sl);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && h->sparefd >= 0) {
                /* out of descriptors: take the client with the spare one and
                ** close it at once, rather than spin on a ready listener */
                close(h->sparefd);
                fd = accept(h->lfd[li], NULL, NULL);
                if (fd >= 0)
                    close(fd);
                h->sparefd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                h->refused++;
                continue;
            }
            return;
        }
        int reserve = h->nopen - h->nreserve >= h->maxc;
        if (reserve && h->nreserve >= HS_RESERVE && h->tl[HS_T_RESERVE].head) {
            hs_close(h, h->tl[HS_T_RESERVE].head); /* the oldest makes room */
            h->evicted++;
        }
        if (h->draining || h->nfree == 0 || (reserve && h->nreserve >= HS_RESERVE)) {
            close(fd);
            h->refused++;
            continue;
        }
        int fl = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, fl | O_NONBLOCK);
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        int slot = h->free_slots[--h->nfree];
        hs_conn *c = h->conns[slot];
        if (!c) {
            c = pp_calloc(1, sizeof *c);
            if (!c) {
                h->nfree++;
                close(fd);
                h->refused++;
                continue;
            }
            c->slot = slot;
            c->tlist = -1;
            h->conns[slot] = c;
        }
        c->fd = fd;
        c->state = HS_READ;
        c->reserve = reserve;
        c->peer_eof = c->closing = 0;
        c->ticket = 0;
        c->rlen = 0;
        c->out.len = c->out_off = 0;
        c->peer[0] = 0;
        if (ss.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, c->peer, sizeof c->peer);
        else if (ss.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, c->peer, sizeof c->peer);
        c->trusted = h->trusted && c->peer[0] && pp_http_auth_trusted_proxy(h->auth, c->peer);
        c->p.consumed = 0;
        hs_next_request(h, c);
        struct epoll_event ev;
        memset(&ev, 0, sizeof ev);
        ev.events = EPOLLIN;
        ev.data.u64 = (uint64_t)slot;
        if (epoll_ctl(h->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            c->state = HS_FREE;
            c->reserve = 0;
            h->free_slots[h->nfree++] = slot;
            h->refused++;
            continue;
        }
        c->events = EPOLLIN;
        h->nopen++;
        h->accepted++;
        if (reserve) {
            h->nreserve++;
            h->over_limit++;
        }
        hs_timer_on(h, c, HS_T_HEAD);
    }
}

/* ---- answers from ingest ------------------------------------------------ */

static void hs_wake(pgpipe_http *h)
{
    uint64_t one = 1;
    ssize_t n = write(h->wakefd, &one, sizeof one);
    (void)n; /* a full counter still wakes the loop */
}

static void hs_done_cb(pgpipe_http *h, uint64_t ticket, pp_http_reply *reply)
{
    pp_mutex_lock(&h->mu);
    if (h->ndone == h->capdone) {
        size_t cap = h->capdone ? h->capdone * 2 : 64;
        hs_done *nd = pp_realloc(h->done, cap * sizeof *nd);
        if (!nd) {
            pp_mutex_unlock(&h->mu);
            pp_http_reply_free(reply); /* the client sees its connection end */
            return;
        }
        h->done = nd;
        h->capdone = cap;
    }
    h->done[h->ndone].ticket = ticket;
    h->done[h->ndone].reply = *reply;
    /* one wake per batch: while answers wait, the loop has been woken and
    ** has not taken them yet (hs_deliver takes them all under mu) */
    int wake = h->ndone++ == 0;
    pp_mutex_unlock(&h->mu);
    reply->body = NULL;
    reply->body_len = 0;
    if (wake)
        hs_wake(h);
}

static void hs_deliver(pgpipe_http *h)
{
    /* the two arrays take turns: committers fill one while the loop answers
    ** from the other, so no allocation per batch */
    pp_mutex_lock(&h->mu);
    hs_done *d = h->done;
    size_t n = h->ndone, cap = h->capdone;
    h->done = h->dspare;
    h->capdone = h->capspare;
    h->ndone = 0;
    h->dspare = d;
    h->capspare = cap;
    pp_mutex_unlock(&h->mu);
    for (size_t i = 0; i < n; i++) {
        uint64_t t = d[i].ticket;
        uint32_t slot = (uint32_t)(t >> 32);
        hs_conn *c = slot < (uint32_t)h->nslots ? h->conns[slot] : NULL;
        if (!c || c->state != HS_WAIT || c->ticket != t) {
            pp_http_reply_free(&d[i].reply);
            continue;
        }
        c->state = HS_READ;
        c->ticket = 0;
        h->nwait--;
        hs_write_reply(h, c, &d[i].reply, NULL);
        if (!c->closing) {
            hs_next_request(h, c);
            hs_process(h, c);
        }
        hs_settle(h, c);
    }
}

/* ---- metrics ------------------------------------------------------------ */

static void hs_metrics(pgpipe_http *h, hs_conn *c)
{
    pp_buf b = { 0 };
    pp_buf_appendf(&b, "# HELP pgpipe_http_requests_total HTTP requests answered, by status.\n"
                       "# TYPE pgpipe_http_requests_total counter\n");
    for (int s = 100; s < 600; s++)
        if (h->by_status[s])
            pp_buf_appendf(&b, "pgpipe_http_requests_total{status=\"%d\"} %llu\n", s,
                           (unsigned long long)h->by_status[s]);
    pp_buf_appendf(&b,
                   "# HELP pgpipe_http_open_connections Client connections open now.\n"
                   "# TYPE pgpipe_http_open_connections gauge\n"
                   "pgpipe_http_open_connections %d\n"
                   "# HELP pgpipe_http_connections_accepted_total Client connections accepted.\n"
                   "# TYPE pgpipe_http_connections_accepted_total counter\n"
                   "pgpipe_http_connections_accepted_total %llu\n"
                   "# HELP pgpipe_http_connections_refused_total Client connections closed at "
                   "once (the reserve past max_connections full, out of descriptors, "
                   "draining).\n"
                   "# TYPE pgpipe_http_connections_refused_total counter\n"
                   "pgpipe_http_connections_refused_total %llu\n"
                   "# HELP pgpipe_http_max_connections Connections served as usual "
                   "(max_connections, or what the open-file limit leaves room for).\n"
                   "# TYPE pgpipe_http_max_connections gauge\n"
                   "pgpipe_http_max_connections %d\n"
                   "# HELP pgpipe_http_connections_over_limit_total Connections taken past "
                   "max_connections, for one /healthz, /readyz or /metrics request (others 503).\n"
                   "# TYPE pgpipe_http_connections_over_limit_total counter\n"
                   "pgpipe_http_connections_over_limit_total %llu\n"
                   "# HELP pgpipe_http_connections_over_limit_evicted_total Connections past "
                   "max_connections closed to make room for a newer one.\n"
                   "# TYPE pgpipe_http_connections_over_limit_evicted_total counter\n"
                   "pgpipe_http_connections_over_limit_evicted_total %llu\n"
                   "# HELP pgpipe_http_received_bytes_total Bytes read from clients.\n"
                   "# TYPE pgpipe_http_received_bytes_total counter\n"
                   "pgpipe_http_received_bytes_total %llu\n"
                   "# HELP pgpipe_http_sent_bytes_total Bytes sent to clients.\n"
                   "# TYPE pgpipe_http_sent_bytes_total counter\n"
                   "pgpipe_http_sent_bytes_total %llu\n"
                   "# HELP pgpipe_http_ingest_submitted_total Requests handed to ingest.\n"
                   "# TYPE pgpipe_http_ingest_submitted_total counter\n"
                   "pgpipe_http_ingest_submitted_total %llu\n"
                   "# HELP pgpipe_http_requests_in_ingest Requests whose answer waits for "
                   "their group's commit.\n"
                   "# TYPE pgpipe_http_requests_in_ingest gauge\n"
                   "pgpipe_http_requests_in_ingest %d\n"
                   "# HELP pgpipe_http_request_duration_seconds From a request's first byte "
                   "to its answer.\n"
                   "# TYPE pgpipe_http_request_duration_seconds histogram\n",
                   h->nopen, (unsigned long long)h->accepted, (unsigned long long)h->refused,
                   h->maxc, (unsigned long long)h->over_limit, (unsigned long long)h->evicted,
                   (unsigned long long)h->bytes_in, (unsigned long long)h->bytes_out,
                   (unsigned long long)h->submitted, h->nwait);
    uint64_t cum = 0;
    for (size_t i = 0; i < HS_NLAT; i++) {
        cum += h->lat[i];
        pp_buf_appendf(&b, "pgpipe_http_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
                       hs_lat_le[i], (unsigned long long)cum);
    }
    cum += h->lat[HS_NLAT];
    pp_buf_appendf(&b,
                   "pgpipe_http_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
                   "pgpipe_http_request_duration_seconds_sum %.6f\n"
                   "pgpipe_http_request_duration_seconds_count %llu\n",
                   (unsigned long long)cum, h->lat_sum, (unsigned long long)h->lat_count);
    pp_buf_appendf(&b,
                   "# HELP pgpipe_http_token_reloads_total Reloads of the tokens (SIGHUP), by "
                   "result (failed: the tokens read before stay in force).\n"
                   "# TYPE pgpipe_http_token_reloads_total counter\n"
                   "pgpipe_http_token_reloads_total{result=\"ok\"} %llu\n"
                   "pgpipe_http_token_reloads_total{result=\"failed\"} %llu\n"
                   "# HELP pgpipe_http_token_reload_in_progress 1 while a reload of the tokens "
                   "waits for the database.\n"
                   "# TYPE pgpipe_http_token_reload_in_progress gauge\n"
                   "pgpipe_http_token_reload_in_progress %d\n",
                   (unsigned long long)h->rl_ok, (unsigned long long)h->rl_failed,
                   h->rl_state != 0);
    pp_ingest_metrics(h->ig, &b);
#ifndef PGPIPE_OMIT_SPOOL
    pgpipe_spool_status sp;
    if (pp_ingest_spool_stats(h->ig, &sp) ||
        (h->o.spool_dir && pgpipe_spool_peek(h->o.spool_dir, &sp, NULL) == PGPIPE_OK))
        pp_buf_appendf(&b,
                       "# HELP pgpipe_spool_bytes Bytes in the store-and-forward spool's segments.\n"
                       "# TYPE pgpipe_spool_bytes gauge\n"
                       "pgpipe_spool_bytes %lld\n"
                       "# HELP pgpipe_spool_records Records spooled, not yet drained.\n"
                       "# TYPE pgpipe_spool_records gauge\n"
                       "pgpipe_spool_records %lld\n"
                       "# HELP pgpipe_spool_age_seconds Age of the oldest spooled record (0: empty).\n"
                       "# TYPE pgpipe_spool_age_seconds gauge\n"
                       "pgpipe_spool_age_seconds %.3f\n",
                       sp.bytes, sp.records, sp.age_seconds);
#endif
    if (h->o.metrics) {
        pgpipe_http_page_reply more;
        memset(&more, 0, sizeof more);
        more.priv = &b;
        h->o.metrics(h->o.page_ud, &more);
    }
    hs_reply_text(h, c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data,
                  b.data ? b.len : 0);
}

/* ---- listen addresses --------------------------------------------------- */

static int hs_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const unsigned char *a = (const unsigned char *)&((const struct sockaddr_in *)sa)->sin_addr;
        return a[0] == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        static const unsigned char lo[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
        static const unsigned char v4[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        return !memcmp(a, lo, 16) || (!memcmp(a, v4, 12) && a->s6_addr[12] == 127);
    }
    return 0;
}

/* Resolve, check and bind every listen address. */
static int hs_bind_list(pgpipe_http *h, char *spec, int need_loopback);

static int hs_bind(pgpipe_http *h, int need_loopback)
{
    char *spec = pp_strdup(h->listen_s); /* cut at the commas */
    if (!spec)
        return pp_err_nomem(&h->h.err);
    int rc = hs_bind_list(h, spec, need_loopback);
    pp_free(spec);
    return rc;
}

static int hs_bind_list(pgpipe_http *h, char *spec, int need_loopback)
{
    for (char *item = spec; item && *item;) {
        char *comma = strchr(item, ',');
        if (comma)
            *comma = 0;
        while (*item == ' ')
            item++;
        char host[256], port[16];
        const char *colon;
        if (*item == '[') {
            const char *rb = strchr(item, ']');
            if (!rb || rb[1] != ':' || (size_t)(rb - item - 1) >= sizeof host)
                return pp_err(&h->h.err, PGPIPE_MISUSE,
                              "listen: \"%s\" is not [IPV6]:PORT", item);
            memcpy(host, item + 1, (size_t)(rb - item - 1));
            host[rb - item - 1] = 0;
            colon = rb + 1;
        } else {
            colon = strrchr(item, ':');
            if (!colon || (size_t)(colon - item) >= sizeof host)
                return pp_err(&h->h.err, PGPIPE_MISUSE, "listen: \"%s\" is not HOST:PORT", item);
            if (strchr(item, ':') != colon) /* "::1:8080", "127.0.0.1:0:1" */
                return pp_err(&h->h.err, PGPIPE_MISUSE, "listen: \"%s\" is not HOST:PORT (more "
                              "than one ':'; an IPv6 address goes in brackets: [::1]:8080)", item);
            memcpy(host, item, (size_t)(colon - item));
            host[colon - item] = 0;
        }
        char *end;
        long pn = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || pn < 0 || pn > 65535)
            return pp_err(&h->h.err, PGPIPE_MISUSE, "listen: bad port in \"%s\" (0-65535)", item);
        snprintf(port, sizeof port, "%ld", pn);
        struct addrinfo hints, *ai = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_flags = AI_PASSIVE;
        int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
        if (g != 0 || !ai)
            return pp_err(&h->h.err, PGPIPE_MISUSE, "listen: cannot resolve \"%s\": %s", host,
                          gai_strerror(g));
        if (need_loopback && !hs_loopback(ai->ai_addr)) {
            freeaddrinfo(ai);
            return pp_err(&h->h.err, PGPIPE_MISUSE,
                          "listen: %s is not a loopback address and no token exists: add one "
                          "(.serve token add SOURCE) or allow it with --insecure "
                          "(options.insecure)", item);
        }
        if (h->nlisten == HS_MAX_LISTEN) {
            freeaddrinfo(ai);
            return pp_err(&h->h.err, PGPIPE_MISUSE, "listen: more than %d addresses",
                          HS_MAX_LISTEN);
        }
        int fd = socket(ai->ai_family, SOCK_STREAM, 0);
        int one = 1;
        if (fd >= 0) {
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            if (ai->ai_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        }
        if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            freeaddrinfo(ai);
            return pp_err(&h->h.err, PGPIPE_IO, "listen: cannot listen on %s: %s", item,
                          strerror(e));
        }
        freeaddrinfo(ai);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        getsockname(fd, (struct sockaddr *)&ss, &sl);
        h->lport[h->nlisten] = ntohs(ss.ss_family == AF_INET6
                                         ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                         : ((struct sockaddr_in *)&ss)->sin_port);
        h->lfd[h->nlisten++] = fd;
        item = comma ? comma + 1 : NULL;
    }
    if (h->nlisten == 0)
        return pp_err(&h->h.err, PGPIPE_MISUSE, "listen: no address given");
    return PGPIPE_OK;
}

/* ---- the public API ----------------------------------------------------- */

static int hs_check_options(pgpipe_http *h, const pgpipe_http_options *o)
{
    pgpipe_error *e = &h->h.err;
    if (!o->listen || !*o->listen)
        return pp_err(e, PGPIPE_MISUSE, "options.listen: no address (HOST:PORT)");
    /* every connection may hold this much header, outside memory_budget */
    if (o->max_header_bytes < 256 || o->max_header_bytes > PP_HTTP_MAX_HEADER_CAP)
        return pp_err(e, PGPIPE_MISUSE, "options.max_header_bytes: %zu is not 256..%d",
                      o->max_header_bytes, PP_HTTP_MAX_HEADER_CAP);
    if (o->max_body_bytes < 1 || (o->max_body_bytes - 1) / 1024 / 1024 / 1024 >= 16)
        return pp_err(e, PGPIPE_MISUSE, "options.max_body_bytes: %zu is not 1..16 GiB",
                      o->max_body_bytes);
    if (o->max_connections < 1 || o->max_connections > 1000000)
        return pp_err(e, PGPIPE_MISUSE, "options.max_connections: %d is not 1..1000000",
                      o->max_connections);
    if (o->max_records < 1)
        return pp_err(e, PGPIPE_MISUSE, "options.max_records: %d is below 1", o->max_records);
    if (o->header_timeout_ms < 1 || o->body_timeout_ms < 1 || o->idle_timeout_ms < 1)
        return pp_err(e, PGPIPE_MISUSE, "options.%s: must be at least 1 ms",
                      o->header_timeout_ms < 1 ? "header_timeout_ms"
                      : o->body_timeout_ms < 1 ? "body_timeout_ms" : "idle_timeout_ms");
    if (o->commit_timeout_ms < 1)
        return pp_err(e, PGPIPE_MISUSE, "options.commit_timeout_ms: must be at least 1 ms");
    if (o->group_window_ms < 0)
        return pp_err(e, PGPIPE_MISUSE, "options.group_window_ms: %d is below 0",
                      o->group_window_ms);
    if (o->group_records < 1)
        return pp_err(e, PGPIPE_MISUSE, "options.group_records: %d is below 1", o->group_records);
    if (o->committers < 1 || o->committers > 64)
        return pp_err(e, PGPIPE_MISUSE, "options.committers: %d is not 1..64", o->committers);
    if (o->memory_budget < 1)
        return pp_err(e, PGPIPE_MISUSE, "options.memory_budget: must be above 0");
    if (o->window_hours < 1)
        return pp_err(e, PGPIPE_MISUSE, "options.window_hours: %d is below 1", o->window_hours);
    if (o->nsources < 0 || (o->nsources > 0 && !o->sources))
        return pp_err(e, PGPIPE_MISUSE, "options.sources: %d sources but no array", o->nsources);
    return PGPIPE_OK;
}

/* The connections served as usual: max_connections, or fewer when the
** open-file limit has no room for them, the reserve and a margin: a
** connection accepted past the descriptors is closed at once, and then
** /healthz, /readyz and /metrics could not be reached either. */
static int hs_max_connections(const pgpipe_http_options *o)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return o->max_connections;
    long long room = (long long)rl.rlim_cur - HS_RESERVE - HS_FD_MARGIN - 2LL * o->committers;
    if (room >= o->max_connections)
        return o->max_connections;
    if (room < 1)
        room = 1;
    pp_logf(PGPIPE_LOG_WARN, "http", "max_connections %d is more than the open-file limit (%llu) "
            "leaves room for: %lld are served (and %d more for /healthz, /readyz and /metrics); "
            "raise the limit (ulimit -n) to serve more", o->max_connections,
            (unsigned long long)rl.rlim_cur, room, HS_RESERVE);
    return (int)room;
}

/* The statements of the server's own connection (schema install, tokens)
** wait for a lock (on 1: the install, the tokens) and run (on 2: the tokens)
** at most commit_timeout_ms: session settings,
** put back (off) once the open is done (behind a transaction pooler a
** session setting would stay on a server connection others get). */
static int hs_db_bound(pgpipe_http *h, int on)
{
    char sql[160];
    if (on == 1) /* a migration may take long: only its waits for a lock are bounded */
        snprintf(sql, sizeof sql, "SET lock_timeout = %d", h->o.commit_timeout_ms);
    else if (on == 2)
        snprintf(sql, sizeof sql, "SET statement_timeout = %d", h->o.commit_timeout_ms);
    else
        snprintf(sql, sizeof sql, "RESET lock_timeout; RESET statement_timeout");
    return pp_exec(h->db, sql, 0, NULL, NULL, &h->h.err, "http: bounding the open's statements");
}

/* An open's statement failed: when it waited too long (lock_timeout,
** statement_timeout), say what for and how long. */
static int hs_open_waited(pgpipe_http *h, int rc, const char *what)
{
    const char *st = h->h.err.sqlstate;
    if (rc != PGPIPE_DB || (strcmp(st, "55P03") && strcmp(st, "57014")))
        return rc;
    char m[sizeof h->h.err.message];
    snprintf(m, sizeof m, "%s", h->h.err.message);
    pp_err(&h->h.err, PGPIPE_DB, "http: %s waited longer than commit_timeout_ms (%d ms) for a "
           "lock or an answer: another session holds a lock on it (see pg_locks) or the "
           "database does not answer: %s", what, h->o.commit_timeout_ms, m);
    snprintf(h->h.err.sqlstate, sizeof h->h.err.sqlstate, "%s", st[0] ? st : "57014");
    return PGPIPE_DB;
}

int pgpipe_http_open(pgpipe_http **out, const pgpipe_http_options *o)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_http *h = pp_handle_new(sizeof *h);
    *out = h;
    if (!h)
        return PGPIPE_NOMEM;
    h->ep = h->wakefd = h->sparefd = h->rl_fd = -1;
    pthread_mutex_init(&h->mu, NULL);
    pgpipe_http_options def;
    if (!o) {
        pgpipe_http_options_init(&def);
        o = &def;
    }
    int rc = hs_check_options(h, o);
    if (rc != PGPIPE_OK)
        return rc;
    h->o = *o; /* sources: read while opening (auth and ingest copy what they keep) */
    h->conninfo = pp_strdup(o->conninfo ? o->conninfo : "");
    h->listen_s = pp_strdup(o->listen);
    h->trusted = o->trusted_proxies && *o->trusted_proxies ? pp_strdup(o->trusted_proxies) : NULL;
    if (!h->conninfo || !h->listen_s || (o->trusted_proxies && *o->trusted_proxies && !h->trusted))
        return pp_err_nomem(&h->h.err);
    h->o.conninfo = h->conninfo;
    h->o.listen = h->listen_s;
    h->o.trusted_proxies = h->trusted;
    if (o->spool_dir && *o->spool_dir && !(h->spool_dir = pp_strdup(o->spool_dir)))
        return pp_err_nomem(&h->h.err);
    h->o.spool_dir = h->spool_dir;

    {
        /* bounded, as the committers' (PQreset on SIGHUP reuses it): libpq's
        ** connect_timeout unless the conninfo or PGCONNECT_TIMEOUT sets one */
        const char *env_ct = getenv("PGCONNECT_TIMEOUT");
        const char *keys[3] = { "connect_timeout", "dbname", NULL };
        const char *vals[3] = { "10", h->conninfo, NULL };
        int k0 = env_ct && *env_ct ? 1 : 0;
        h->db = PQconnectdbParams(keys + k0, vals + k0, 1);
    }
    if (!h->db)
        return pp_err_nomem(&h->h.err);
    if (PQstatus(h->db) != CONNECTION_OK)
        return pp_err_pq(&h->h.err, h->db, NULL, "http: connecting (options.conninfo)");
    PQsetNoticeProcessor(h->db, pp_notice_to_log, (void *)"http");
    /* the schema install and the first read of the tokens wait for a lock
    ** (another session's ACCESS EXCLUSIVE on pgpipe.http_tokens, a
    ** migration holding the schema) at most commit_timeout_ms, as the reads
    ** of later reloads do: an open that fails says so, never hangs */
    if ((rc = hs_db_bound(h, 1)) != PGPIPE_OK)
        return rc;
    if (o->install_schema && (rc = pgpipe_schema_install(h->db, NULL, &h->h.err)) != PGPIPE_OK)
        return hs_open_waited(h, rc, "installing the schema (pgpipe)");
    if ((rc = hs_db_bound(h, 2)) != PGPIPE_OK)
        return rc;
    if ((rc = pp_http_auth_open(&h->auth, &h->o, h->db, &h->h.err)) != PGPIPE_OK)
        return hs_open_waited(h, rc, "reading the HTTP tokens (pgpipe.http_tokens)");
    if ((rc = hs_db_bound(h, 0)) != PGPIPE_OK)
        return rc;
    PQsetnonblocking(h->db, 1); /* from now on only the loop's reloads use it */
    int need_loopback = !o->insecure && !pp_http_auth_has_tokens(h->auth) &&
                        o->require_tokens != 1;
    if ((rc = pp_ingest_open(&h->ig, &h->o, h->auth, h, hs_done_cb, &h->h.err)) != PGPIPE_OK)
        return rc;
    h->o.sources = NULL; /* the caller's, valid only during the open */
    h->o.nsources = 0;
    if ((rc = hs_bind(h, need_loopback)) != PGPIPE_OK)
        return rc;

    h->maxc = hs_max_connections(o);
    h->nslots = h->maxc + HS_RESERVE;
    h->conns = pp_calloc((size_t)h->nslots, sizeof *h->conns);
    h->free_slots = pp_malloc((size_t)h->nslots * sizeof *h->free_slots);
    if (!h->conns || !h->free_slots)
        return pp_err_nomem(&h->h.err);
    for (int i = 0; i < h->nslots; i++)
        h->free_slots[i] = h->nslots - 1 - i;
    h->nfree = h->nslots;
    h->tl[HS_T_HEAD].dur_us = (int64_t)o->header_timeout_ms * 1000;
    h->tl[HS_T_BODY].dur_us = (int64_t)o->body_timeout_ms * 1000;
    h->tl[HS_T_IDLE].dur_us = (int64_t)o->idle_timeout_ms * 1000;
    h->tl[HS_T_LINGER].dur_us = (int64_t)HS_LINGER_MS * 1000;
    h->tl[HS_T_RESERVE].dur_us =
        (int64_t)(o->header_timeout_ms < HS_RESERVE_MS ? o->header_timeout_ms : HS_RESERVE_MS) * 1000;

    h->ep = epoll_create1(EPOLL_CLOEXEC);
    h->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    h->sparefd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (h->ep < 0 || h->wakefd < 0)
        return pp_err(&h->h.err, PGPIPE_IO, "http: epoll/eventfd: %s", strerror(errno));
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN;
    ev.data.u64 = HS_TAG_WAKE;
    epoll_ctl(h->ep, EPOLL_CTL_ADD, h->wakefd, &ev);
    for (int i = 0; i < h->nlisten; i++) {
        ev.data.u64 = HS_TAG_LISTEN + (uint64_t)i;
        if (epoll_ctl(h->ep, EPOLL_CTL_ADD, h->lfd[i], &ev) < 0)
            return pp_err(&h->h.err, PGPIPE_IO, "http: epoll_ctl: %s", strerror(errno));
    }
    return PGPIPE_OK;
}

int pgpipe_http_port(const pgpipe_http *h, int i)
{
    if (!h || i < 0 || i >= h->nlisten)
        return 0;
    return h->lport[i];
}

static void hs_timers(pgpipe_http *h)
{
    for (int k = 0; k < HS_NT; k++) {
        hs_conn *c;
        while ((c = h->tl[k].head) && c->deadline <= h->now) {
            hs_timer_off(h, c);
            if (k == HS_T_IDLE || k == HS_T_LINGER || k == HS_T_RESERVE || c->state != HS_READ) {
                hs_close(h, c);
                continue;
            }
            hs_request_id(h, c);
            hs_error(h, c, 408, "timeout",
                     k == HS_T_HEAD ? "the request head did not arrive in time"
                                    : "the request body did not arrive in time",
                     NULL);
            c->closing = 1;
            hs_settle(h, c);
        }
    }
}

/* ---- reloading the tokens ------------------------------------------------ */

/* A reload (SIGHUP) reads the tokens on the server's own connection without
** ever blocking the event loop: connecting again (PQresetStart/PQresetPoll)
** and the read (PQsendQuery, PQconsumeInput) are driven by the events of
** its socket, and the whole reload gives up after commit_timeout_ms (a
** database that does not answer, a connect that hangs, a lock). The tokens
** read before stay in force until a reload succeeds. */
enum { HS_RL_IDLE, HS_RL_CONNECT, HS_RL_QUERY };

/* Watch the connection's socket for ev (0: not at all). libpq may close
** its socket and open another while it connects (hosts, SSL): the old one
** has left epoll with its close, a new one with the same number is added. */
static void hs_rl_watch(pgpipe_http *h, uint32_t ev)
{
    int fd = ev ? PQsocket(h->db) : -1;
    if (h->rl_fd >= 0 && h->rl_fd != fd) {
        epoll_ctl(h->ep, EPOLL_CTL_DEL, h->rl_fd, NULL); /* EBADF, ENOENT: gone already */
        h->rl_fd = -1;
    }
    if (fd < 0)
        return;
    struct epoll_event e;
    memset(&e, 0, sizeof e);
    e.events = ev;
    e.data.u64 = HS_TAG_DB;
    if (h->rl_fd == fd && h->rl_ev == ev &&
        epoll_ctl(h->ep, EPOLL_CTL_MOD, fd, &e) == 0) /* still there (not closed and reopened) */
        return;
    if (epoll_ctl(h->ep, EPOLL_CTL_MOD, fd, &e) != 0)
        epoll_ctl(h->ep, EPOLL_CTL_ADD, fd, &e);
    h->rl_fd = fd;
    h->rl_ev = ev;
}

static void hs_rl_start(pgpipe_http *h);

static void hs_rl_end(pgpipe_http *h, int ok)
{
    hs_rl_watch(h, 0);
    h->rl_state = HS_RL_IDLE;
    if (ok) {
        h->rl_ok++;
        pp_logf(PGPIPE_LOG_INFO, "http", "tokens reloaded");
    } else {
        h->rl_failed++;
        pp_logf(PGPIPE_LOG_ERROR, "http", "reloading the tokens failed, the tokens read before "
                "stay in force (a token added or revoked since is not): %s", h->rl_err.message);
    }
    if (h->rl_again) { /* asked again while this one ran: what it read may be older */
        h->rl_again = 0;
        hs_rl_start(h);
    }
}

static void hs_rl_connect(pgpipe_http *h)
{
    hs_rl_watch(h, 0); /* before libpq closes the socket */
    h->rl_broken = 0;
    if (!PQresetStart(h->db)) {
        pp_err_pq(&h->rl_err, h->db, NULL, "http: reloading the tokens: connecting again");
        hs_rl_end(h, 0);
        return;
    }
    h->rl_state = HS_RL_CONNECT;
    hs_rl_watch(h, EPOLLOUT); /* PQconnectPoll's first wish: writable */
}

static void hs_rl_send(pgpipe_http *h)
{
    char sql[512];
    /* the server's side bounded too: a lock held on the table would keep
    ** the backend waiting after this side has given up */
    snprintf(sql, sizeof sql, "SELECT set_config('lock_timeout', '%d', true), "
             "set_config('statement_timeout', '%d', true); %s", h->o.commit_timeout_ms,
             h->o.commit_timeout_ms, pp_http_auth_tokens_sql());
    PQsetnonblocking(h->db, 1);
    if (!PQsendQuery(h->db, sql)) {
        pp_err_pq(&h->rl_err, h->db, NULL, "http: reloading the tokens (pgpipe.http_tokens)");
        h->rl_broken = 1;
        if (!h->rl_retried++) {
            hs_rl_connect(h);
            return;
        }
        hs_rl_end(h, 0);
        return;
    }
    h->rl_state = HS_RL_QUERY;
    h->rl_got = 0;
    hs_rl_watch(h, PQflush(h->db) == 1 ? EPOLLIN | EPOLLOUT : EPOLLIN);
}

static void hs_rl_start(pgpipe_http *h)
{
    if (h->rl_state != HS_RL_IDLE) {
        h->rl_again = 1;
        return;
    }
    pgpipe_error_clear(&h->rl_err);
    h->rl_retried = 0;
    h->rl_deadline = h->now + (int64_t)h->o.commit_timeout_ms * 1000;
    if (h->rl_broken || PQstatus(h->db) != CONNECTION_OK) {
        h->rl_retried = 1;
        hs_rl_connect(h);
    } else {
        hs_rl_send(h);
    }
}

/* The query's results, as far as they have come. */
static void hs_rl_read(pgpipe_http *h)
{
    if (!PQconsumeInput(h->db)) {
        pp_err_pq(&h->rl_err, h->db, NULL, "http: reloading the tokens (pgpipe.http_tokens)");
        goto failed;
    }
    int fl = PQflush(h->db);
    if (fl < 0) {
        pp_err_pq(&h->rl_err, h->db, NULL, "http: reloading the tokens (pgpipe.http_tokens)");
        goto failed;
    }
    while (!PQisBusy(h->db)) {
        PGresult *r = PQgetResult(h->db);
        if (!r) { /* all of them */
            if (h->rl_err.code == PGPIPE_OK && !h->rl_got)
                pp_err(&h->rl_err, PGPIPE_DB, "http: reloading the tokens: no tokens in the answer");
            if (h->rl_err.code != PGPIPE_OK)
                goto failed;
            hs_rl_end(h, 1);
            return;
        }
        ExecStatusType st = PQresultStatus(r);
        if (st == PGRES_TUPLES_OK && PQnfields(r) == 3 && h->rl_err.code == PGPIPE_OK) {
            /* the tokens (the set_config row has 2 columns) */
            h->rl_got = pp_http_auth_reload_result(h->auth, r, &h->rl_err) == PGPIPE_OK;
            continue; /* r is cleared */
        }
        if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK && h->rl_err.code == PGPIPE_OK)
            pp_err_pq(&h->rl_err, h->db, r, "http: reloading the tokens (pgpipe.http_tokens)");
        PQclear(r);
    }
    hs_rl_watch(h, fl == 1 ? EPOLLIN | EPOLLOUT : EPOLLIN);
    return;
failed:
    /* a connection whose server restarted says CONNECTION_OK until a query
    ** fails: connect again and read once more (within the same time), so one
    ** SIGHUP enforces a revocation, not a second or third one */
    if (!h->rl_retried++ && h->rl_err.code != PGPIPE_NOMEM) {
        pp_logf(PGPIPE_LOG_INFO, "http", "reloading the tokens: %s; connecting again",
                h->rl_err.message);
        pgpipe_error_clear(&h->rl_err);
        hs_rl_connect(h);
        return;
    }
    h->rl_broken = 1;
    hs_rl_end(h, 0);
}

/* The connection's socket is ready (or the loop turned with a reload on). */
static void hs_rl_event(pgpipe_http *h)
{
    if (h->rl_state == HS_RL_CONNECT) {
        PostgresPollingStatusType st = PQresetPoll(h->db);
        if (st == PGRES_POLLING_OK) {
            PQsetNoticeProcessor(h->db, pp_notice_to_log, (void *)"http");
            hs_rl_send(h);
        } else if (st == PGRES_POLLING_FAILED) {
            pp_err_pq(&h->rl_err, h->db, NULL, "http: reloading the tokens: connecting again");
            h->rl_broken = 1;
            hs_rl_end(h, 0);
        } else {
            hs_rl_watch(h, st == PGRES_POLLING_READING ? EPOLLIN : EPOLLOUT);
        }
    } else if (h->rl_state == HS_RL_QUERY) {
        hs_rl_read(h);
    }
}

/* The reload's time is up: it gives up; the connection (mid-connect or
** mid-query) is started anew by the next one. */
static void hs_rl_timer(pgpipe_http *h)
{
    if (h->rl_state == HS_RL_IDLE || h->now < h->rl_deadline)
        return;
    pp_err(&h->rl_err, PGPIPE_DB, "the database did not answer within %d ms (commit_timeout_ms)%s",
           h->o.commit_timeout_ms, h->rl_state == HS_RL_CONNECT ? " while connecting" : "");
    h->rl_broken = 1;
    hs_rl_end(h, 0);
}

/* Stop accepting, answer what ingest holds, send, close. */
static void hs_drain(pgpipe_http *h)
{
    h->draining = 1;
    if (h->rl_state != HS_RL_IDLE) { /* a reload in flight is given up: no more of its events */
        hs_rl_watch(h, 0);
        h->rl_state = HS_RL_IDLE;
        h->rl_broken = 1;
        pp_logf(PGPIPE_LOG_INFO, "http", "stopping: the reload of the tokens in progress is given up");
    }
    for (int i = 0; i < h->nlisten; i++) {
        close(h->lfd[i]);
        h->lfd[i] = -1;
    }
    h->nlisten = 0;
    for (int i = 0; i < h->nslots; i++) {
        hs_conn *c = h->conns[i];
        if (!c || c->state == HS_FREE || c->state == HS_WAIT)
            continue;
        if (c->out_off == c->out.len || c->state == HS_LINGER)
            hs_close(h, c);
        else
            c->closing = 1;
    }
    pp_ingest_drain(h->ig);
    h->now = pgpipe_now_us();
    hs_deliver(h);
    /* send what is owed, for at most the idle timeout */
    int64_t until = h->now + h->tl[HS_T_IDLE].dur_us;
    struct epoll_event evs[64];
    while (h->nopen > 0 && h->now < until) {
        int n = epoll_wait(h->ep, evs, 64, 100);
        h->now = pgpipe_now_us();
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag == HS_TAG_WAKE) {
                uint64_t v;
                ssize_t r = read(h->wakefd, &v, sizeof v);
                (void)r;
                hs_deliver(h);
            } else if (tag < HS_TAG_WAKE) {
                hs_conn *c = h->conns[tag];
                if (c && c->state != HS_FREE)
                    hs_conn_event(h, c, evs[i].events);
            }
        }
        for (int i = 0; i < h->nslots; i++) {
            hs_conn *c = h->conns[i];
            if (c && c->state == HS_READ && c->out_off == c->out.len)
                hs_close(h, c);
        }
    }
    for (int i = 0; i < h->nslots; i++)
        if (h->conns[i] && h->conns[i]->state != HS_FREE)
            hs_close(h, h->conns[i]);
}

int pgpipe_http_run(pgpipe_http *h)
{
    if (!h || !h->ig || h->ep < 0)
        return h ? pp_err(&h->h.err, PGPIPE_MISUSE, "pgpipe_http_run: the server is not open")
                 : PGPIPE_MISUSE;
    if (atomic_exchange(&h->running, 1))
        return pp_err(&h->h.err, PGPIPE_MISUSE, "pgpipe_http_run: already running");
    struct epoll_event evs[256];
    h->now = pgpipe_now_us();
    while (!atomic_load(&h->stop)) {
        int n = epoll_wait(h->ep, evs, 256, hs_next_timeout_ms(h));
        if (n < 0 && errno != EINTR) {
            atomic_store(&h->running, 0);
            return pp_err(&h->h.err, PGPIPE_IO, "http: epoll_wait: %s", strerror(errno));
        }
        h->now = pgpipe_now_us();
        int woke = 0;
        unsigned listeners = 0;
        for (int i = 0; i < n; i++) {
            uint64_t tag = evs[i].data.u64;
            if (tag < HS_TAG_WAKE) {
                hs_conn *c = h->conns[tag];
                if (c && c->state != HS_FREE)
                    hs_conn_event(h, c, evs[i].events);
            } else if (tag == HS_TAG_WAKE) {
                uint64_t v;
                ssize_t r = read(h->wakefd, &v, sizeof v);
                (void)r;
                woke = 1;
            } else if (tag == HS_TAG_DB) {
                hs_rl_event(h);
            } else {
                listeners |= 1u << (tag - HS_TAG_LISTEN);
            }
        }
        /* after the connections' events: a slot closed in this batch and
        ** taken again by a new client would get the old one's events */
        for (int i = 0; i < h->nlisten; i++)
            if (listeners & (1u << i))
                hs_accept(h, i);
        if (woke)
            hs_deliver(h);
        hs_timers(h);
        hs_rl_timer(h);
        if (atomic_exchange(&h->reload, 0))
            hs_rl_start(h);
    }
    hs_drain(h);
    atomic_store(&h->running, 0);
    return PGPIPE_OK;
}

int pgpipe_http_stop(pgpipe_http *h)
{
    if (!h || h->wakefd < 0)
        return PGPIPE_MISUSE;
    atomic_store(&h->stop, 1);
    hs_wake(h);
    return PGPIPE_OK;
}

int pgpipe_http_reload(pgpipe_http *h)
{
    if (!h || h->wakefd < 0)
        return PGPIPE_MISUSE;
    atomic_store(&h->reload, 1);
    hs_wake(h);
    return PGPIPE_OK;
}

void pgpipe_http_close(pgpipe_http *h)
{
    if (!h)
        return;
    if (h->ig)
        pp_ingest_close(h->ig); /* its committers may still answer: before the rest */
    for (int i = 0; i < h->nslots && h->conns; i++) {
        hs_conn *c = h->conns[i];
        if (!c)
            continue;
        if (c->state != HS_FREE)
            close(c->fd);
        pp_free(c->rbuf);
        pp_buf_free(&c->out);
        pp_free(c);
    }
    pp_free(h->conns);
    pp_free(h->free_slots);
    for (int i = 0; i < h->nlisten; i++)
        if (h->lfd[i] >= 0)
            close(h->lfd[i]);
    for (size_t i = 0; i < h->ndone; i++)
        pp_http_reply_free(&h->done[i].reply);
    pp_free(h->done);
    pp_free(h->dspare);
    if (h->ep >= 0)
        close(h->ep);
    if (h->wakefd >= 0)
        close(h->wakefd);
    if (h->sparefd >= 0)
        close(h->sparefd);
    if (h->auth)
        pp_http_auth_close(h->auth);
    if (h->db)
        PQfinish(h->db);
    pthread_mutex_destroy(&h->mu);
    pp_free(h->conninfo);
    pp_free(h->listen_s);
    pp_free(h->trusted);
    pp_free(h->spool_dir);
    pp_free(h);
}

#else /* not Linux */

struct pgpipe_http {
    pp_handle h;
};

int pgpipe_http_open(pgpipe_http **out, const pgpipe_http_options *o)
{
    (void)o;
    if (!out)
        return PGPIPE_MISUSE;
    *out = pp_handle_new(sizeof **out);
    if (!*out)
        return PGPIPE_NOMEM;
    return pp_err(&(*out)->h.err, PGPIPE_MISUSE, "the HTTP server needs Linux (epoll)");
}

int pgpipe_http_port(const pgpipe_http *h, int i)
{
    (void)h;
    (void)i;
    return 0;
}

int pgpipe_http_run(pgpipe_http *h)
{
    return pp_err(&h->h.err, PGPIPE_MISUSE, "the HTTP server needs Linux (epoll)");
}

int pgpipe_http_stop(pgpipe_http *h)
{
    (void)h;
    return PGPIPE_MISUSE;
}

int pgpipe_http_reload(pgpipe_http *h)
{
    (void)h;
    return PGPIPE_MISUSE;
}

void pgpipe_http_close(pgpipe_http *h)
{
    pp_free(h);
}

#endif /* __linux__ */

int pgpipe_http_page_write(pgpipe_http_page_reply *out, const void *data, size_t len)
{
    if (!out || !out->priv || (!data && len))
        return PGPIPE_MISUSE;
    return pp_buf_append((pp_buf *)out->priv, data, len);
}
#endif /* PGPIPE_OMIT_HTTP */
