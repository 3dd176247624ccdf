/* Tests of the HTTP server (src/http/http.c) and its request parser
** (src/http/http_proto.c): the parser alone, then a real server on
** 127.0.0.1 / ::1 (port 0) run in a thread against the test cluster, with
** raw sockets as clients. */

#include <fcntl.h>
#include <pthread.h>
#include <poll.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

/* ---- the parser alone ---------------------------------------------------- */

typedef struct http_t_parsed {
    int rc, status, method, keep_alive, expect;
    char body[512];
    size_t body_len, consumed;
} http_t_parsed;

/* Parse text (NUL-terminated) fed in pieces of step bytes (0: at once). */
static http_t_parsed http_t_parse(const char *text, size_t step, size_t max_body)
{
    http_t_parsed r;
    memset(&r, 0, sizeof r);
    size_t n = strlen(text);
    char *buf = malloc(n + 1);
    memcpy(buf, text, n + 1);
    pp_http_parser p;
    pp_http_parser_init(&p, 1024, max_body);
    static pp_http_request rq;
    memset(&rq, 0, sizeof rq);
    size_t len = step ? 0 : n;
    for (;;) {
        int rc = pp_http_parse(&p, buf, len, &rq);
        if (rc == PP_HTTP_GOT_HEAD) {
            r.expect = p.expect_continue;
            continue;
        }
        if (rc == PP_HTTP_MORE && len < n) {
            len = len + step > n ? n : len + step;
            continue;
        }
        r.rc = rc;
        break;
    }
    r.status = p.status;
    r.method = rq.method;
    r.keep_alive = rq.keep_alive;
    if (r.rc == PP_HTTP_DONE) {
        r.body_len = rq.body_len < sizeof r.body ? rq.body_len : sizeof r.body - 1;
        memcpy(r.body, rq.body, r.body_len);
        r.consumed = p.consumed;
        r.expect |= p.expect_continue;
    }
    free(buf);
    return r;
}

#define HTTP_T_POST "POST /v1/events/t HTTP/1.1\r\nHost: x\r\nX-Event-Type: t\r\n"

/* Each of these must be refused with its status, and never reach a body. */
static const struct {
    const char *name, *req;
    int status;
} http_t_bad[] = {
    { "cl_and_te", HTTP_T_POST "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 },
    { "te_and_cl", HTTP_T_POST "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400 },
    { "two_cl_same", HTTP_T_POST "Content-Length: 2\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "two_cl_differ", HTTP_T_POST "Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}x", 400 },
    { "cl_list", HTTP_T_POST "Content-Length: 2, 2\r\n\r\n{}", 400 },
    { "cl_sign", HTTP_T_POST "Content-Length: +2\r\n\r\n{}", 400 },
    { "cl_hex", HTTP_T_POST "Content-Length: 0x2\r\n\r\n{}", 400 },
    { "cl_empty", HTTP_T_POST "Content-Length:\r\n\r\n{}", 400 },
    { "cl_overflow", HTTP_T_POST "Content-Length: 99999999999999999999999\r\n\r\n{}", 400 },
    { "te_gzip", HTTP_T_POST "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400 },
    { "te_chunked_twice", HTTP_T_POST "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 },
    { "te_identity", HTTP_T_POST "Transfer-Encoding: identity\r\n\r\n", 400 },
    { "te_http10", "POST /v1/events/t HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 },
    { "obs_fold", HTTP_T_POST "X-A: 1\r\n  folded\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "space_before_colon", HTTP_T_POST "Content-Length : 2\r\n\r\n{}", 400 },
    { "tab_before_colon", HTTP_T_POST "Content-Length\t: 2\r\n\r\n{}", 400 },
    { "bare_lf", "POST /v1/events/t HTTP/1.1\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "bare_lf_header", HTTP_T_POST "X-A: 1\nContent-Length: 2\r\n\r\n{}", 400 },
    { "bare_cr", HTTP_T_POST "X-A: 1\rX-B: 2\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "ctl_in_value", HTTP_T_POST "X-A: a\001b\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "del_in_value", HTTP_T_POST "X-A: a\177b\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "bad_name_char", HTTP_T_POST "X(A): 1\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "empty_name", HTTP_T_POST ": 1\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "no_colon", HTTP_T_POST "X-A 1\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "no_host", "POST /v1/events/t HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "two_hosts", HTTP_T_POST "Host: y\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "version_2", "POST /v1/events/t HTTP/2.0\r\nHost: x\r\n\r\n", 505 },
    { "version_junk", "POST /v1/events/t HTTX/1.1\r\nHost: x\r\n\r\n", 400 },
    { "two_spaces", "POST  /v1/events/t HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
    { "target_not_path", "POST v1/events/t HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
    { "method_bad", "PO(ST /v1/events/t HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
    { "chunk_size_bad", HTTP_T_POST "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400 },
    { "chunk_size_empty", HTTP_T_POST "Transfer-Encoding: chunked\r\n\r\n\r\n{}\r\n0\r\n\r\n", 400 },
    { "chunk_size_neg", HTTP_T_POST "Transfer-Encoding: chunked\r\n\r\n-2\r\n{}\r\n0\r\n\r\n", 400 },
    { "chunk_too_long", HTTP_T_POST "Transfer-Encoding: chunked\r\n\r\n1\r\n{}\r\n0\r\n\r\n", 400 },
    { "chunk_bare_lf", HTTP_T_POST "Transfer-Encoding: chunked\r\n\r\n2\n{}\r\n0\r\n\r\n", 400 },
    { "chunk_huge", HTTP_T_POST "Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n", 413 },
    { "expect_other", HTTP_T_POST "Expect: 200-ok\r\nContent-Length: 2\r\n\r\n{}", 417 },
    { "body_too_large", HTTP_T_POST "Content-Length: 100000\r\n\r\n{}", 413 },
    /* the request line, judged as soon as it ends (these never send the
    ** empty line that ends a head) */
    { "http09", "GET /healthz\r\n", 400 },
    { "http09_no_target", "GET\r\n", 400 },
    { "version_3_text", "GET /healthz HTTP/3\r\n", 505 },
    { "version_2_line_only", "GET /healthz HTTP/2.0\r\n", 505 },
    { "version_1", "GET /healthz HTTP/1\r\n", 400 },
    { "version_two_digits", "GET /healthz HTTP/1.10\r\n", 400 },
    { "version_lower", "GET /healthz http/1.1\r\n", 400 },
    { "version_trailing_space", "GET /healthz HTTP/1.1 \r\n", 400 },
    { "three_spaces", "GET /a b HTTP/1.1\r\n", 400 },
    { "ctl_in_target", "GET /heal\001thz HTTP/1.1\r\n", 400 },
    { "del_in_target", "GET /heal\177thz HTTP/1.1\r\n", 400 },
    { "tab_in_target", "GET /a\tb HTTP/1.1\r\n", 400 },
    { "high_byte_in_target", "GET /caf\303\251 HTTP/1.1\r\n", 400 },
    { "fragment_in_target", "GET /healthz#top HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
    { "space_first", " GET / HTTP/1.1\r\n", 400 },
    /* the method, judged on its first bytes (TLS or HTTP/2 on this port) */
    { "tls_hello", "\026\003\001\002\000\001", 400 },
    { "h2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 501 },
    { "method_unknown", "FROB /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 501 },
    { "method_lower", "get /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 501 },
    { "method_long", "GETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGETGET", 501 },
    { "method_ctl", "GE\001T / HTTP/1.1\r\n", 400 },
    /* Host: host[:port] (RFC 9112 3.2: an invalid one is 400) */
    { "host_space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400 },
    { "host_slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400 },
    { "host_userinfo", "GET / HTTP/1.1\r\nHost: u@h\r\n\r\n", 400 },
    { "host_port_alpha", "GET / HTTP/1.1\r\nHost: h:8o\r\n\r\n", 400 },
    { "host_two_ports", "GET / HTTP/1.1\r\nHost: h:80:81\r\n\r\n", 400 },
    { "host_bad_pct", "GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", 400 },
    { "host_ipv6_open", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400 },
    { "host_ipv6_empty", "GET / HTTP/1.1\r\nHost: []:80\r\n\r\n", 400 },
    { "host_obs_text", "GET / HTTP/1.1\r\nHost: h\351\r\n\r\n", 400 },
    { "absolute_bad_host", "GET http://a%zz/healthz HTTP/1.1\r\nHost: x\r\n\r\n", 400 },
    /* header names: tchar only, nothing between the name and its colon */
    { "space_in_name", HTTP_T_POST "Content Length: 2\r\n\r\n{}", 400 },
    { "ctl_in_name", HTTP_T_POST "X-\001A: 1\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "high_byte_in_name", HTTP_T_POST "X-\351: 1\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "slash_in_name", HTTP_T_POST "X/A: 1\r\nContent-Length: 2\r\n\r\n{}", 400 },
    { "space_before_colon_host", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400 },
};

PGT_TEST(http, parser_refuses_smuggling_and_malformed)
{
    for (size_t i = 0; i < sizeof http_t_bad / sizeof http_t_bad[0]; i++)
        for (size_t step = 0; step <= 1; step++) {
            http_t_parsed r = http_t_parse(http_t_bad[i].req, step, 4096);
            PGT_CHECK_MSG(r.rc == PP_HTTP_ERROR && r.status == http_t_bad[i].status,
                          "%s (step %zu): rc %d status %d", http_t_bad[i].name, step, r.rc,
                          r.status);
        }
}

PGT_TEST(http, parser_chunked_across_boundaries)
{
    const char *req = HTTP_T_POST "Transfer-Encoding: chunked\r\n\r\n"
                      "3;ext=1;x=\"y\"\r\n{\"a\r\nB\r\n\":12345678}\r\n0\r\nX-Trailer: 1\r\n\r\n"
                      "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    for (size_t step = 0; step <= 13; step++) {
        http_t_parsed r = http_t_parse(req, step, 4096);
        PGT_EQ_INT(r.rc, PP_HTTP_DONE);
        PGT_EQ_MEM(r.body, r.body_len, "{\"a\":12345678}", (size_t)14);
        PGT_EQ_INT(r.method, PP_HTTP_POST);
        PGT_EQ_INT(r.keep_alive, 1);
        /* stops at the end of the first request: the pipelined one follows */
        PGT_EQ_INT(r.consumed, strstr(req, "GET /") - req);
    }
    /* a chunked body over the limit is refused as it grows */
    http_t_parsed r = http_t_parse(HTTP_T_POST "Transfer-Encoding: chunked\r\n\r\n"
                                               "8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n", 1, 12);
    PGT_EQ_INT(r.rc, PP_HTTP_ERROR);
    PGT_EQ_INT(r.status, 413);
}

PGT_TEST(http, parser_keep_alive_and_expect)
{
    http_t_parsed r = http_t_parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0, 10);
    PGT_EQ_INT(r.rc, PP_HTTP_DONE);
    PGT_EQ_INT(r.keep_alive, 0);
    r = http_t_parse("GET / HTTP/1.0\r\n\r\n", 0, 10);
    PGT_EQ_INT(r.rc, PP_HTTP_DONE);
    PGT_EQ_INT(r.keep_alive, 0);
    r = http_t_parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, 10);
    PGT_EQ_INT(r.keep_alive, 1);
    r = http_t_parse("\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: foo, close\r\n\r\n", 0, 10);
    PGT_EQ_INT(r.rc, PP_HTTP_DONE);
    PGT_EQ_INT(r.keep_alive, 0);
    r = http_t_parse(HTTP_T_POST "Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}", 1, 10);
    PGT_EQ_INT(r.rc, PP_HTTP_DONE);
    PGT_EQ_INT(r.expect, 1);
    PGT_EQ_MEM(r.body, r.body_len, "{}", (size_t)2);
    /* the head limit: 431, whether the end of the head came or not */
    char big[2048];
    snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %01500d\r\n\r\n", 0);
    r = http_t_parse(big, 0, 10);
    PGT_EQ_INT(r.status, 431);
    big[1200] = 0;
    r = http_t_parse(big, 7, 10);
    PGT_EQ_INT(r.status, 431);
}

/* What the request line and Host rules still take: the known methods,
** HTTP/1.2 served as 1.1 (RFC 9110 6.2), a query with any visible byte,
** the Host forms of RFC 3986 (an empty one too), leading empty lines. */
PGT_TEST(http, parser_request_line_accepts)
{
    static const struct {
        const char *req;
        int method, minor;
    } ok[] = {
        { "GET / HTTP/1.1\r\nHost: x\r\n\r\n", PP_HTTP_GET, 1 },
        { "OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n", PP_HTTP_OPTIONS, 1 },
        { "PATCH / HTTP/1.1\r\nHost: x\r\n\r\n", PP_HTTP_OTHER, 1 },
        { "TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", PP_HTTP_OTHER, 1 },
        { "DELETE / HTTP/1.0\r\n\r\n", PP_HTTP_DELETE, 0 },
        { "GET / HTTP/1.2\r\nHost: x\r\n\r\n", PP_HTTP_GET, 1 },
        { "GET / HTTP/1.9\r\nHost: x\r\n\r\n", PP_HTTP_GET, 1 },
        { "GET /a?b={\"c\":[1,2]}|x HTTP/1.1\r\nHost: x\r\n\r\n", PP_HTTP_GET, 1 },
        { "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", PP_HTTP_GET, 1 },
        { "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", PP_HTTP_GET, 1 },
        { "GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", PP_HTTP_GET, 1 },
        { "GET / HTTP/1.1\r\nHost: my-host.example_1.com:\r\n\r\n", PP_HTTP_GET, 1 },
        { "GET / HTTP/1.1\r\nHost: xn--caf-dma.example%2Ecom\r\n\r\n", PP_HTTP_GET, 1 },
        { "GET / HTTP/1.1\r\nHost:\r\n\r\n", PP_HTTP_GET, 1 },
        { "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", PP_HTTP_GET, 1 },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        for (size_t step = 0; step <= 1; step++) {
            http_t_parsed r = http_t_parse(ok[i].req, step, 100);
            PGT_CHECK_MSG(r.rc == PP_HTTP_DONE && r.method == ok[i].method,
                          "%s (step %zu): rc %d status %d method %d", ok[i].req, step, r.rc,
                          r.status, r.method);
            pp_http_parser p;
            pp_http_parser_init(&p, 1024, 100);
            pp_http_request rq;
            memset(&rq, 0, sizeof rq);
            char buf[256];
            snprintf(buf, sizeof buf, "%s", ok[i].req);
            PGT_EQ_INT(pp_http_parse(&p, buf, strlen(buf), &rq), PP_HTTP_DONE);
            PGT_EQ_INT(rq.minor, ok[i].minor);
        }
}

/* A request line that cannot be one is refused on the bytes in so far, not
** after the header timeout: the parser says so before the head's end. */
PGT_TEST(http, parser_judges_request_line_early)
{
    static const struct {
        const char *part;
        int status;
    } early[] = {
        { "GET /healthz\r\n", 400 },          /* HTTP/0.9: no headers follow */
        { "GET /healthz HTTP/2.0\r\n", 505 },
        { "GET /x\001", 0 },                  /* only when its line ends ... */
        { "GET /x\001y HTTP/1.1\r\n", 400 }, /* ... then at once */
        { "\026\003", 400 },                 /* TLS: its first byte */
        { "OPTIONSX", 501 },                  /* longer than any method served */
        { "OPTIONS", 0 },
        { "\r", 0 },                          /* maybe an empty line first */
        { "\r\nGE", 0 },
        { "GET / HTTP/1.1\r\nHost: x\r\n", 0 },
    };
    /* empty lines past the head limit, then no method: 431, fed at once
    ** or a byte at a time (the bytes within the limit decide) */
    char blank[1200];
    size_t nb = 0;
    while (nb < 1100)
        blank[nb++] = '\r', blank[nb++] = '\n';
    memcpy(blank + nb, "\r: x\r\n\r\n", sizeof "\r: x\r\n\r\n");
    for (size_t step = 0; step <= 1; step++) {
        http_t_parsed r = http_t_parse(blank, step, 100);
        PGT_EQ_INT(r.status, 431);
    }
    for (size_t i = 0; i < sizeof early / sizeof early[0]; i++) {
        char buf[128];
        size_t n = strlen(early[i].part);
        memcpy(buf, early[i].part, n + 1);
        pp_http_parser p;
        pp_http_parser_init(&p, 1024, 100);
        pp_http_request rq;
        memset(&rq, 0, sizeof rq);
        int rc = pp_http_parse(&p, buf, n, &rq);
        PGT_CHECK_MSG(early[i].status ? rc == PP_HTTP_ERROR && p.status == early[i].status
                                      : rc == PP_HTTP_MORE,
                      "%zu: rc %d status %d", i, rc, p.status);
    }
}

/* Absolute-form targets (RFC 9112 3.2.2: a server MUST accept them): the path
** and query after the authority; other schemes, no host, userinfo: 400. */
PGT_TEST(http, parser_absolute_form)
{
    static const struct {
        const char *target, *path, *query;
    } ok[] = {
        { "http://127.0.0.1:8080/v1/events/t", "/v1/events/t", NULL },
        { "HTTPS://example.com/v1/events/t?a=1&b", "/v1/events/t", "a=1&b" },
        { "http://[::1]:80/healthz", "/healthz", NULL },
        { "http://h", "/", NULL },
        { "http://h?x=1", "/", "x=1" },
        { "/v1/events/t?q", "/v1/events/t", "q" },
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char buf[512];
        int n = snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\nHost: other\r\n\r\n", ok[i].target);
        pp_http_parser p;
        pp_http_parser_init(&p, 1024, 100);
        pp_http_request rq;
        memset(&rq, 0, sizeof rq);
        PGT_EQ_INT(pp_http_parse(&p, buf, (size_t)n, &rq), PP_HTTP_DONE);
        PGT_EQ_MEM(rq.path, rq.path_len, ok[i].path, strlen(ok[i].path));
        if (ok[i].query)
            PGT_EQ_MEM(rq.query, rq.query_len, ok[i].query, strlen(ok[i].query));
        else
            PGT_CHECK(rq.query == NULL);
        PGT_EQ_INT(p.length_given, 0);
    }
    static const char *const bad[] = { "http:///v1/events/t", "http://u:p@h/v1/events/t",
                                       "ftp://h/v1/events/t", "http:/h/x", "http//h/x", "h/x",
                                       "*" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[512];
        snprintf(buf, sizeof buf, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", bad[i]);
        http_t_parsed r = http_t_parse(buf, 0, 100);
        PGT_CHECK_MSG(r.rc == PP_HTTP_ERROR && r.status == 400, "%s: rc %d status %d", bad[i],
                      r.rc, r.status);
    }
    /* the Host rule stays: one Host in an HTTP/1.1 request */
    http_t_parsed r = http_t_parse("GET http://h/healthz HTTP/1.1\r\n\r\n", 0, 100);
    PGT_EQ_INT(r.status, 400);
}

/* ---- a real server --------------------------------------------------------- */

typedef struct http_t_srv {
    pgpipe_http *h;
    pthread_t th;
    int rc;
    int port, port6;
} http_t_srv;

static void *http_t_main(void *arg)
{
    http_t_srv *s = arg;
    s->rc = pgpipe_http_run(s->h);
    return NULL;
}

static void http_t_start(http_t_srv *s, void (*tweak)(pgpipe_http_options *))
{
    memset(s, 0, sizeof *s);
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.conninfo = pgt_dsn();
    o.listen = "127.0.0.1:0,[::1]:0";
    o.access_log = 1;
    if (tweak)
        tweak(&o);
    int rc = pgpipe_http_open(&s->h, &o);
    if (rc != PGPIPE_OK && strstr(pgpipe_errmsg(s->h), "::1"))
        PGT_SKIP("no IPv6 loopback");
    PGT_CHECK_MSG(rc == PGPIPE_OK, "open: %s", pgpipe_errmsg(s->h));
    s->port = pgpipe_http_port(s->h, 0);
    s->port6 = pgpipe_http_port(s->h, 1);
    PGT_CHECK(s->port > 0);
    PGT_CHECK(pthread_create(&s->th, NULL, http_t_main, s) == 0);
}

static void http_t_stop(http_t_srv *s)
{
    PGT_OK(pgpipe_http_stop(s->h));
    PGT_CHECK(pthread_join(s->th, NULL) == 0);
    PGT_OK(s->rc);
}

static int http_t_connect(int port, int v6)
{
    int fd = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    PGT_CHECK(fd >= 0);
    struct timeval tv = { 10, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int rc;
    if (v6) {
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6;
        a.sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, "::1", &a.sin6_addr);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    } else {
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    PGT_CHECK_MSG(rc == 0, "connect: %s", strerror(errno));
    return fd;
}

static void http_t_send(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        PGT_CHECK_MSG(w > 0, "send: %s", strerror(errno));
        s += w;
        n -= (size_t)w;
    }
}
#define http_t_sends(fd, s) http_t_send((fd), (s), strlen(s))

typedef struct http_t_resp {
    int status;
    char head[4096];
    char *body;
    size_t body_len;
} http_t_resp;

static char *http_t_find(char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(hay + i, needle, m))
            return hay + i;
    return NULL;
}

/* Per connection: bytes read past the response just returned. */
static char http_t_rest[1 << 16];
static size_t http_t_nrest;
static int http_t_head_only; /* the request was HEAD: no body follows */

/* Read one response (status line, headers, Content-Length body). 0 when the
** connection ended before one came. */
static int http_t_read(int fd, http_t_resp *r)
{
    memset(r, 0, sizeof *r);
    for (;;) {
        char *end = http_t_nrest ? http_t_find(http_t_rest, http_t_nrest, "\r\n\r\n") : NULL;
        if (end) {
            size_t hl = (size_t)(end - http_t_rest) + 4;
            const char *cl = strstr(http_t_rest, "\r\nContent-Length: ");
            size_t blen = cl && cl < end ? strtoul(cl + 18, NULL, 10) : 0;
            if (!strncmp(http_t_rest, "HTTP/1.1 1", 10) || http_t_head_only)
                blen = 0;
            if (http_t_nrest >= hl + blen) {
                PGT_CHECK(hl < sizeof r->head);
                memcpy(r->head, http_t_rest, hl);
                r->status = atoi(http_t_rest + 9);
                r->body = malloc(blen + 1);
                memcpy(r->body, http_t_rest + hl, blen);
                r->body[blen] = 0;
                r->body_len = blen;
                memmove(http_t_rest, http_t_rest + hl + blen, http_t_nrest - hl - blen);
                http_t_nrest -= hl + blen;
                return r->status;
            }
        }
        PGT_CHECK(http_t_nrest < sizeof http_t_rest - 1);
        ssize_t n = recv(fd, http_t_rest + http_t_nrest, sizeof http_t_rest - 1 - http_t_nrest, 0);
        if (n <= 0) {
            PGT_CHECK_MSG(n == 0 || errno == ECONNRESET, "recv: %s", strerror(errno));
            return 0;
        }
        http_t_nrest += (size_t)n;
        http_t_rest[http_t_nrest] = 0;
    }
}

/* The server closed the connection (EOF within the receive timeout). */
static int http_t_closed(int fd)
{
    char b[256];
    ssize_t n = recv(fd, b, sizeof b, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

/* One request on a new connection: its status; *r keeps the answer. */
static int http_t_ask(int port, const char *req, http_t_resp *r)
{
    int fd = http_t_connect(port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, req);
    int st = http_t_read(fd, r);
    close(fd);
    return st;
}

static void http_t_check_id(const http_t_resp *r)
{
    const char *id = strstr(r->head, "\r\nX-Request-Id: ");
    PGT_CHECK_MSG(id, "no X-Request-Id in %s", r->head);
    PGT_CHECK(id[16 + 14] == '7'); /* a UUIDv7 */
    PGT_CHECK(strstr(r->head, "\r\nDate: "));
}

static void http_t_4k(pgpipe_http_options *o)
{
    o->max_body_bytes = 4096;
}

PGT_TEST(http, server_refuses_smuggling_and_malformed)
{
    http_t_srv s;
    http_t_start(&s, http_t_4k);
    for (size_t i = 0; i < sizeof http_t_bad / sizeof http_t_bad[0]; i++) {
        int fd = http_t_connect(s.port, 0);
        http_t_nrest = 0;
        http_t_sends(fd, http_t_bad[i].req);
        http_t_resp r;
        int st = http_t_read(fd, &r);
        PGT_CHECK_MSG(st == http_t_bad[i].status, "%s: status %d, wanted %d", http_t_bad[i].name,
                      st, http_t_bad[i].status);
        PGT_CONTAINS(r.body, "\"error\"");
        PGT_CONTAINS(r.head, "Connection: close");
        http_t_check_id(&r);
        PGT_CHECK_MSG(http_t_closed(fd), "%s: the connection stays open", http_t_bad[i].name);
        free(r.body);
        close(fd);
    }
    http_t_stop(&s);
    PGT_EQ_INT(s.h->submitted, 0); /* nothing reached ingest */
    pgpipe_http_close(s.h);
}

static void http_t_small(pgpipe_http_options *o)
{
    o->max_header_bytes = 1024;
    o->max_body_bytes = 1000;
}

PGT_TEST(http, limits_413_431)
{
    http_t_srv s;
    http_t_start(&s, http_t_small);
    http_t_resp r;
    /* 413 from Content-Length, before the body is read (it never comes) */
    PGT_EQ_INT(http_t_ask(s.port, HTTP_T_POST "Content-Length: 1001\r\n\r\n", &r), 413);
    PGT_CONTAINS(r.body, "body_too_large");
    free(r.body);
    /* 413 with Expect: the final answer instead of 100 Continue */
    PGT_EQ_INT(http_t_ask(s.port, HTTP_T_POST "Expect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
                          &r), 413);
    free(r.body);
    /* chunked: refused as it grows past the limit, while the client sends */
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, HTTP_T_POST "Transfer-Encoding: chunked\r\n\r\n");
    char chunk[600];
    memset(chunk, 'x', sizeof chunk);
    for (int i = 0; i < 2; i++) {
        http_t_sends(fd, "258\r\n");
        http_t_send(fd, chunk, sizeof chunk);
        http_t_sends(fd, "\r\n");
    }
    PGT_EQ_INT(http_t_read(fd, &r), 413);
    PGT_CHECK(http_t_closed(fd));
    free(r.body);
    close(fd);
    /* 431: a head over the limit, its end never sent */
    char big[3000];
    snprintf(big, sizeof big, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: %02000d", 0);
    PGT_EQ_INT(http_t_ask(s.port, big, &r), 431);
    PGT_CONTAINS(r.body, "headers_too_large");
    free(r.body);
    /* still serving */
    PGT_EQ_INT(http_t_ask(s.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    free(r.body);
    http_t_stop(&s);
    PGT_EQ_INT(s.h->submitted, 0);
    pgpipe_http_close(s.h);
}

PGT_TEST(http, endpoints_healthz_readyz_metrics_404_405)
{
    http_t_srv s;
    http_t_start(&s, NULL);
    http_t_resp r;
    PGT_EQ_INT(http_t_ask(s.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    PGT_CONTAINS(r.body, "\"ok\"");
    http_t_check_id(&r);
    PGT_CONTAINS(r.head, "Content-Type: application/json");
    free(r.body);
    /* over IPv6 as well */
    int fd = http_t_connect(s.port6, 1);
    http_t_nrest = 0;
    http_t_sends(fd, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    http_t_head_only = 1;
    PGT_EQ_INT(http_t_read(fd, &r), 200);
    http_t_head_only = 0;
    PGT_CHECK(!strstr(r.head, "Content-Length: 0\r\n")); /* the length of the GET body */
    free(r.body);
    close(fd);
    int st = http_t_ask(s.port, "GET /readyz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n", &r);
    PGT_CHECK_MSG(st == 200 || st == 503, "readyz: %d", st);
    PGT_CONTAINS(r.body, st == 200 ? "\"ready\"" : "\"reason\"");
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &r), 404);
    PGT_CONTAINS(r.body, "\"not_found\"");
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET /v1/events/ HTTP/1.1\r\nHost: x\r\n\r\n", &r), 404);
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET /v1/events/a/b HTTP/1.1\r\nHost: x\r\n\r\n", &r), 404);
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                          &r), 405);
    PGT_CONTAINS(r.head, "\r\nAllow: GET, HEAD\r\n");
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET /v1/events/src HTTP/1.1\r\nHost: x\r\n\r\n", &r), 405);
    PGT_CONTAINS(r.head, "\r\nAllow: POST\r\n");
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "POST /v1/events/b%20d HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Length: 2\r\n\r\n{}", &r), 400);
    PGT_CONTAINS(r.body, "invalid_source");
    free(r.body);
    char longsrc[200];
    snprintf(longsrc, sizeof longsrc, "POST /v1/events/%065d HTTP/1.1\r\nHost: x\r\n"
                                      "Content-Length: 2\r\n\r\n{}", 0);
    PGT_EQ_INT(http_t_ask(s.port, longsrc, &r), 400);
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    PGT_CONTAINS(r.head, "Content-Type: text/plain; version=0.0.4");
    PGT_CONTAINS(r.body, "# TYPE pgpipe_http_requests_total counter\n");
    PGT_CONTAINS(r.body, "pgpipe_http_requests_total{status=\"404\"} 3\n");
    PGT_CONTAINS(r.body, "pgpipe_http_requests_total{status=\"405\"} 2\n");
    PGT_CONTAINS(r.body, "pgpipe_http_open_connections 1\n");
    PGT_CONTAINS(r.body, "pgpipe_http_connections_accepted_total ");
    PGT_CONTAINS(r.body, "pgpipe_http_connections_refused_total 0\n");
    PGT_CONTAINS(r.body, "pgpipe_http_request_duration_seconds_bucket{le=\"+Inf\"} ");
    PGT_CONTAINS(r.body, "pgpipe_http_received_bytes_total ");
    free(r.body);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
}

PGT_TEST(http, keep_alive_pipelining_in_order)
{
    http_t_srv s;
    http_t_start(&s, NULL);
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    /* four requests in one write, one of them a POST that ingest takes (or
    ** answers at once): the answers come in the order asked */
    http_t_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                     HTTP_T_POST "Content-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                     "{\"k\":\"v1\"}\n"
                     "GET /v1/events/t HTTP/1.1\r\nHost: x\r\n\r\n"
                     "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    http_t_resp r;
    PGT_EQ_INT(http_t_read(fd, &r), 200);
    free(r.body);
    PGT_EQ_INT(http_t_read(fd, &r), 404);
    free(r.body);
    int st = http_t_read(fd, &r);
    PGT_CHECK_MSG(st == 202, "POST: %d %s", st, r.body);
    free(r.body);
    PGT_EQ_INT(http_t_read(fd, &r), 405);
    free(r.body);
    PGT_EQ_INT(http_t_read(fd, &r), 200);
    PGT_CHECK(!strstr(r.head, "Connection: close"));
    free(r.body);
    /* the same connection serves on, then closes when asked */
    http_t_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    PGT_EQ_INT(http_t_read(fd, &r), 200);
    PGT_CONTAINS(r.head, "Connection: close");
    free(r.body);
    PGT_CHECK(http_t_closed(fd));
    close(fd);
    /* HTTP/1.0: closes unless keep-alive is asked for */
    fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    PGT_EQ_INT(http_t_read(fd, &r), 200);
    PGT_CONTAINS(r.head, "Connection: keep-alive");
    free(r.body);
    http_t_sends(fd, "GET /healthz HTTP/1.0\r\n\r\n");
    PGT_EQ_INT(http_t_read(fd, &r), 200);
    free(r.body);
    PGT_CHECK(http_t_closed(fd));
    close(fd);
    http_t_stop(&s);
    PGT_EQ_INT(s.h->submitted, 1);
    pgpipe_http_close(s.h);
}

/* A keep-alive client that waits for each answer costs the loop no
** epoll_ctl: EPOLLIN stays armed while ingest holds the request, and
** EPOLLOUT is only asked for when a send would block. */
PGT_TEST(http, keep_alive_no_epoll_changes)
{
    http_t_srv s;
    http_t_start(&s, NULL);
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_resp r;
    for (int i = 0; i < 20; i++) {
        http_t_sends(fd, HTTP_T_POST "Content-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                                     "{\"k\":\"v3\"}\n");
        int st = http_t_read(fd, &r);
        PGT_CHECK_MSG(st == 202, "POST %d: %d %s", i, st, r.body);
        free(r.body);
        http_t_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        PGT_EQ_INT(http_t_read(fd, &r), 200);
        free(r.body);
    }
    close(fd);
    http_t_stop(&s);
    PGT_EQ_INT(s.h->submitted, 20);
    PGT_EQ_INT(s.h->epoll_mods, 0);
    pgpipe_http_close(s.h);
}

typedef struct http_t_sender {
    int fd;
    const char *data;
    size_t len;
    int ok;
} http_t_sender;

static void *http_t_send_main(void *arg)
{
    http_t_sender *w = arg;
    size_t off = 0;
    while (off < w->len) {
        ssize_t n = send(w->fd, w->data + off, w->len - off, MSG_NOSIGNAL);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    w->ok = off == w->len;
    return NULL;
}

/* A client that pipelines many requests (POSTs among them) and reads its
** answers late: the answers outgrow the socket buffers, so the server waits
** for EPOLLOUT and stops reading at its output limit, while ingest holds a
** POST the client's next requests wait in the socket; every answer still
** comes, complete and in order. */
PGT_TEST(http, slow_reader_pipelined)
{
    enum { N = 30000, EVERY = 3000 };
    http_t_srv s;
    http_t_start(&s, NULL);
    int fd = http_t_connect(s.port, 0);
    /* about 5 MB of answers against a receive buffer of a few hundred KB
    ** (not below two loopback segments: a window that small stalls on the
    ** persist timer) */
    int rcv = 256 << 10;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    http_t_nrest = 0;
    static const char get[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char post[] = HTTP_T_POST "Content-Type: application/json\r\n"
                                           "Content-Length: 11\r\n\r\n{\"k\":\"v4\"}\n";
    pp_buf all = { 0 };
    for (int i = 0; i < N; i++)
        PGT_OK(i % EVERY == EVERY / 2 ? pp_buf_append(&all, post, sizeof post - 1)
                                      : pp_buf_append(&all, get, sizeof get - 1));
    http_t_sender w = { fd, all.data, all.len, 0 };
    pthread_t th;
    PGT_CHECK(pthread_create(&th, NULL, http_t_send_main, &w) == 0);
    pgpipe_sleep_ms(300); /* the client reads late */
    http_t_resp r;
    int bad = 0, posts = 0;
    for (int i = 0; i < N; i++) {
        int want = i % EVERY == EVERY / 2 ? 202 : 200;
        int st = http_t_read(fd, &r);
        if (st != want && bad++ < 5)
            fprintf(stderr, "    answer %d: %d, not %d\n", i, st, want);
        posts += st == 202;
        free(r.body);
        if (!st)
            break;
    }
    PGT_CHECK(pthread_join(th, NULL) == 0);
    PGT_CHECK(w.ok);
    PGT_EQ_INT(bad, 0);
    PGT_EQ_INT(posts, N / EVERY);
    /* and the connection serves on */
    http_t_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    PGT_EQ_INT(http_t_read(fd, &r), 200);
    free(r.body);
    close(fd);
    pp_buf_free(&all);
    http_t_stop(&s);
    PGT_EQ_INT(s.h->submitted, N / EVERY);
    fprintf(stderr, "    EPOLL_CTL_MOD calls: %llu\n", (unsigned long long)s.h->epoll_mods);
    PGT_CHECK(s.h->epoll_mods > 0); /* EPOLLOUT (and EPOLLIN dropped during a POST) */
    pgpipe_http_close(s.h);
}

PGT_TEST(http, expect_100_continue)
{
    http_t_srv s;
    http_t_start(&s, NULL);
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, HTTP_T_POST "Expect: 100-continue\r\nContent-Length: 11\r\n"
                                 "Content-Type: application/json\r\n\r\n");
    http_t_resp r;
    PGT_EQ_INT(http_t_read(fd, &r), 100);
    free(r.body);
    http_t_sends(fd, "{\"k\":\"v2\"}\n");
    int st = http_t_read(fd, &r);
    PGT_CHECK_MSG(st == 202, "POST: %d %s", st, r.body);
    free(r.body);
    close(fd);
    /* a head that cannot be taken gets its final answer, not 100 */
    fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, "POST /v1/nope HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     "Content-Length: 11\r\n\r\n");
    PGT_EQ_INT(http_t_read(fd, &r), 404);
    free(r.body);
    PGT_CHECK(http_t_closed(fd));
    close(fd);
    http_t_stop(&s);
    PGT_EQ_INT(s.h->submitted, 1);
    pgpipe_http_close(s.h);
}

/* What the head alone decides is answered before the body is asked for
** (README: "answered 100 only when the head is acceptable, else the final
** status"): an unknown Content-Type, a bad idempotency key, a header given
** twice; and an absolute-form target is served. */
PGT_TEST(http, head_decides_before_100_continue)
{
    http_t_srv s;
    http_t_start(&s, NULL);
    static const struct {
        const char *head;
        int status;
        const char *code;
    } cases[] = {
        { HTTP_T_POST "Content-Type: text/plain\r\n", 415, "unsupported_media_type" },
        { HTTP_T_POST "Content-Type: application/json\r\nIdempotency-Key: a b\r\n", 400,
          "bad_idempotency_key" },
        { HTTP_T_POST "Content-Type: application/json\r\nPgpipe-Seq: 1\r\n", 400,
          "bad_device_header" },
        { HTTP_T_POST "Content-Type: application/json\r\nIdempotency-Key: k1\r\n"
                      "Idempotency-Key: k2\r\n", 400, "duplicate_header" },
        { HTTP_T_POST "Content-Type: application/json\r\nAuthorization: Bearer a\r\n"
                      "Authorization: Bearer b\r\n", 400, "duplicate_header" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int fd = http_t_connect(s.port, 0);
        http_t_nrest = 0;
        char req[1024];
        snprintf(req, sizeof req, "%sExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
                 cases[i].head);
        http_t_sends(fd, req);
        http_t_resp r;
        int st = http_t_read(fd, &r);
        PGT_CHECK_MSG(st == cases[i].status && strstr(r.body, cases[i].code),
                      "case %zu: %d %s", i, st, r.body);
        free(r.body);
        PGT_CHECK(http_t_closed(fd)); /* the body never asked for is not read */
        close(fd);
        /* and without Expect, the same answer once the body is here */
        snprintf(req, sizeof req, "%sContent-Length: 11\r\n\r\n{\"k\":\"v2\"}\n", cases[i].head);
        st = http_t_ask(s.port, req, &r);
        PGT_CHECK_MSG(st == cases[i].status && strstr(r.body, cases[i].code),
                      "case %zu without Expect: %d %s", i, st, r.body);
        free(r.body);
    }
    /* a POST without a length: 411, and the connection closes (what the
    ** client meant as its body would be read as the next request) */
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, HTTP_T_POST "Content-Type: application/json\r\n\r\n{\"k\":\"v\"}");
    http_t_resp r;
    PGT_EQ_INT(http_t_read(fd, &r), 411);
    PGT_CONTAINS(r.body, "\"code\":\"length_required\"");
    PGT_CONTAINS(r.head, "Length Required");
    free(r.body);
    PGT_CHECK(http_t_closed(fd));
    close(fd);
    /* absolute-form: served like its path */
    char req[512];
    snprintf(req, sizeof req, "POST http://127.0.0.1:%d/v1/events/t HTTP/1.1\r\nHost: "
             "127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
             "{\"k\":\"v3\"}\n", s.port);
    int st = http_t_ask(s.port, req, &r);
    PGT_CHECK_MSG(st == 202, "absolute-form POST: %d %s", st, r.body);
    free(r.body);
    PGT_EQ_INT(http_t_ask(s.port, "GET http://localhost/healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r),
               200);
    free(r.body);
    /* sources "." and "..": dot-segments no client sends as they are */
    st = http_t_ask(s.port, "POST /v1/events/.. HTTP/1.1\r\nHost: x\r\nContent-Type: "
                            "application/json\r\nContent-Length: 2\r\n\r\n{}", &r);
    PGT_CHECK_MSG(st == 400 && strstr(r.body, "invalid_source"), "..: %d %s", st, r.body);
    free(r.body);
    http_t_stop(&s);
    /* ingest saw the 3 complete requests it refuses and the absolute-form
    ** one; no Expect head, no duplicate, no POST without a length */
    PGT_EQ_INT(s.h->submitted, 4);
    pgpipe_http_close(s.h);
}

static void http_t_short_timeouts(pgpipe_http_options *o)
{
    o->header_timeout_ms = 300;
    o->body_timeout_ms = 300;
}

PGT_TEST(http, header_and_body_timeouts)
{
    http_t_srv s;
    http_t_start(&s, http_t_short_timeouts);
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, "GET /healthz HTTP/1.1\r\nHo");
    http_t_resp r;
    PGT_EQ_INT(http_t_read(fd, &r), 408);
    PGT_CONTAINS(r.body, "head");
    free(r.body);
    PGT_CHECK(http_t_closed(fd));
    close(fd);
    fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, HTTP_T_POST "Content-Length: 10\r\n\r\n{\"a\"");
    PGT_EQ_INT(http_t_read(fd, &r), 408);
    PGT_CONTAINS(r.body, "body");
    free(r.body);
    PGT_CHECK(http_t_closed(fd));
    close(fd);
    /* a client that keeps the next request's head coming, one piece every
    ** 50 ms, is never cut: each request has its own deadline */
    fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, "GET /healthz HTTP/1.1\r\nHo");
    for (int i = 0; i < 16; i++) {
        pgpipe_sleep_ms(50);
        http_t_sends(fd, "st: x\r\n\r\nGET /healthz HTTP/1.1\r\nHo");
        PGT_EQ_INT(http_t_read(fd, &r), 200);
        free(r.body);
    }
    close(fd);
    http_t_stop(&s);
    PGT_EQ_INT(s.h->submitted, 0);
    pgpipe_http_close(s.h);
}

/* 1,000 connections that send one byte of a head and stall do not stop
** another client; the stalled ones are closed by the header timeout. */
PGT_TEST(http, slow_loris)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2300 && rl.rlim_max >= 2300) {
        rl.rlim_cur = 2300;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < 2300)
        PGT_SKIP("fewer than 2300 file descriptors");
    http_t_srv s;
    http_t_start(&s, http_t_short_timeouts);
    enum { N = 1000 };
    static int fds[N];
    for (int i = 0; i < N; i++) {
        fds[i] = http_t_connect(s.port, 0);
        http_t_sends(fds[i], "G");
    }
    http_t_resp r;
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    for (int i = 0; i < 20; i++) {
        http_t_sends(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        PGT_EQ_INT(http_t_read(fd, &r), 200);
        free(r.body);
    }
    close(fd);
    /* every stalled one gets its 408 and is closed */
    for (int i = 0; i < N; i++) {
        http_t_nrest = 0;
        PGT_EQ_INT(http_t_read(fds[i], &r), 408);
        free(r.body);
        PGT_CHECK(http_t_closed(fds[i]));
        close(fds[i]);
    }
    http_t_stop(&s);
    pgpipe_http_close(s.h);
}

static void http_t_two_conns(pgpipe_http_options *o)
{
    o->max_connections = 2;
}

/* Past max_connections the operator still sees why: /healthz, /readyz and
** /metrics are answered on a reserve connection (then closed), anything else
** gets 503 at once, and clients that hold reserve connections open are
** closed, oldest first, to make room for the next. */
PGT_TEST(http, max_connections)
{
    http_t_srv s;
    http_t_start(&s, http_t_two_conns);
    int a = http_t_connect(s.port, 0), b = http_t_connect(s.port, 0);
    http_t_resp r;
    /* both served (so both are accepted before the third comes) */
    http_t_nrest = 0;
    http_t_sends(a, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    PGT_EQ_INT(http_t_read(a, &r), 200);
    free(r.body);
    http_t_nrest = 0;
    http_t_sends(b, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    PGT_EQ_INT(http_t_read(b, &r), 200);
    free(r.body);
    /* the limit is reached: the observability paths answer, once per connection */
    static const char *const watch[] = { "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                                         "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
                                         "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n" };
    for (size_t i = 0; i < sizeof watch / sizeof watch[0]; i++) {
        int c = http_t_connect(s.port, 0);
        http_t_nrest = 0;
        http_t_sends(c, watch[i]);
        http_t_head_only = i == 2;
        int st = http_t_read(c, &r);
        http_t_head_only = 0;
        PGT_CHECK_MSG(st == 200 || (i == 1 && st == 503 && strstr(r.body, "\"unready\"")),
                      "%s: %d %s", watch[i], st, r.body);
        PGT_CONTAINS(r.head, "Connection: close");
        PGT_CHECK(http_t_closed(c));
        free(r.body);
        close(c);
    }
    int c = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    PGT_EQ_INT(http_t_read(c, &r), 200);
    PGT_CONTAINS(r.body, "pgpipe_http_max_connections 2\n");
    PGT_CONTAINS(r.body, "pgpipe_http_connections_over_limit_total 4\n");
    PGT_CONTAINS(r.body, "pgpipe_http_connections_refused_total 0\n");
    free(r.body);
    close(c);
    /* anything else: 503 with Retry-After, the body never read */
    static const char *const other[] = {
        HTTP_T_POST "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /healthz/x HTTP/1.1\r\nHost: x\r\n\r\n" };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++) {
        c = http_t_connect(s.port, 0);
        http_t_nrest = 0;
        http_t_sends(c, other[i]);
        PGT_EQ_INT(http_t_read(c, &r), 503);
        PGT_CONTAINS(r.body, "\"connection_limit\"");
        PGT_CONTAINS(r.head, "\r\nRetry-After: 1\r\n");
        PGT_CONTAINS(r.head, "Connection: close");
        PGT_CHECK(http_t_closed(c));
        free(r.body);
        close(c);
    }
    /* clients holding the whole reserve (16) open, sending nothing, do not
    ** keep the operator out: the oldest makes room (24: more than the
    ** reserve and the 7 above, which may still be closing) */
    enum { HOLD = 24 };
    int hold[HOLD];
    for (int i = 0; i < HOLD; i++)
        hold[i] = http_t_connect(s.port, 0);
    c = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    PGT_EQ_INT(http_t_read(c, &r), 200);
    PGT_CHECK(!strstr(r.body, "pgpipe_http_connections_over_limit_evicted_total 0\n"));
    free(r.body);
    close(c);
    PGT_CHECK(http_t_closed(hold[0]));
    for (int i = 0; i < HOLD; i++)
        close(hold[i]);
    PGT_EQ_INT(s.h->submitted, 0);
    /* the two regular connections were never disturbed */
    http_t_nrest = 0;
    http_t_sends(a, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    PGT_EQ_INT(http_t_read(a, &r), 404);
    free(r.body);
    close(a);
    /* a regular slot is free again once the server sees a close (bounded
    ** retries): a path other than the observability ones is served again */
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        c = http_t_connect(s.port, 0);
        http_t_nrest = 0;
        send(c, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", 32, MSG_NOSIGNAL);
        if (http_t_read(c, &r) == 404)
            ok = 1;
        else
            pgpipe_sleep_ms(20);
        free(r.body);
        close(c);
    }
    PGT_CHECK(ok);
    close(b);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
}

/* max_connections above what the open-file limit leaves room for: fewer are
** served as usual, so the reserve and the server's own descriptors still fit
** (a connection accepted past the descriptors would be closed at once). */
PGT_TEST(http, max_connections_within_open_files)
{
    struct rlimit rl, was;
    getrlimit(RLIMIT_NOFILE, &was);
    int probe = open("/dev/null", O_RDONLY);
    PGT_CHECK(probe >= 0);
    close(probe);
    rl = was;
    rl.rlim_cur = (rlim_t)probe + 200;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_cur > rl.rlim_max)
        PGT_SKIP("the open-file limit is too low to lower");
    PGT_CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    http_t_srv s;
    http_t_start(&s, NULL); /* max_connections 4096 */
    http_t_resp r;
    PGT_EQ_INT(http_t_ask(s.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    const char *m = strstr(r.body, "\npgpipe_http_max_connections ");
    PGT_CHECK(m);
    long maxc = strtol(m + 30, NULL, 10);
    PGT_CHECK_MSG(maxc > 0 && maxc < (long)rl.rlim_cur - 16, "max_connections %ld", maxc);
    free(r.body);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
    setrlimit(RLIMIT_NOFILE, &was);
}

PGT_TEST(http, open_checks_options)
{
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.conninfo = pgt_dsn();
    o.listen = "0.0.0.0:0";
    pgpipe_http *h = NULL;
    PGT_EQ_INT(pgpipe_http_open(&h, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "--insecure");
    pgpipe_http_close(h);
    o.insecure = 1;
    PGT_OK(pgpipe_http_open(&h, &o));
    PGT_CHECK(pgpipe_http_port(h, 0) > 0);
    pgpipe_http_close(h);
    o.insecure = 0;
    o.listen = "127.0.0.1";
    PGT_EQ_INT(pgpipe_http_open(&h, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "listen");
    pgpipe_http_close(h);
    o.listen = "127.0.0.1:0";
    o.max_connections = 0;
    PGT_EQ_INT(pgpipe_http_open(&h, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "max_connections");
    pgpipe_http_close(h);
    o.max_connections = 10;
    /* a header limit each connection could fill, outside memory_budget */
    o.max_header_bytes = (1 << 20) + 1;
    PGT_EQ_INT(pgpipe_http_open(&h, &o), PGPIPE_MISUSE);
    PGT_CONTAINS(pgpipe_errmsg(h), "max_header_bytes: 1048577 is not 256..1048576");
    pgpipe_http_close(h);
    o.max_header_bytes = 255;
    PGT_EQ_INT(pgpipe_http_open(&h, &o), PGPIPE_MISUSE);
    pgpipe_http_close(h);
    o.max_header_bytes = 16 << 10;
    o.conninfo = "host=/nonexistent-dir port=1";
    PGT_CHECK(pgpipe_http_open(&h, &o) != PGPIPE_OK);
    PGT_CONTAINS(pgpipe_errmsg(h), "conninfo");
    pgpipe_http_close(h);
}

static void http_t_long_window(pgpipe_http_options *o)
{
    o->group_window_ms = 5000; /* the request waits in ingest until the drain */
}

/* Stop while a request is held by ingest: run answers it before returning. */
PGT_TEST(http, drain_answers_in_flight)
{
    http_t_srv s;
    http_t_start(&s, http_t_long_window);
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, HTTP_T_POST "Content-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                                 "{\"k\":\"v3\"}\n");
    /* wait (bounded) until the request has reached ingest */
    http_t_resp r;
    int seen = 0;
    for (int i = 0; i < 500 && !seen; i++) {
        PGT_EQ_INT(http_t_ask(s.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
        seen = strstr(r.body, "pgpipe_http_ingest_submitted_total 1\n") != NULL;
        free(r.body);
        if (!seen)
            pgpipe_sleep_ms(10);
    }
    PGT_CHECK(seen);
    int idle = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    PGT_OK(pgpipe_http_stop(s.h));
    PGT_CHECK(pthread_join(s.th, NULL) == 0);
    PGT_OK(s.rc);
    int st = http_t_read(fd, &r);
    PGT_CHECK_MSG(st == 202, "POST during drain: %d", st);
    PGT_CONTAINS(r.body, "\"accepted\":1");
    free(r.body);
    PGT_CHECK(http_t_closed(fd));
    PGT_CHECK(http_t_closed(idle));
    close(fd);
    close(idle);
    pgpipe_http_close(s.h);
}

/* The access log: one line per request with its fields, and no header value
** (Authorization, signatures) in it; the peer behind a trusted proxy. */
static pthread_mutex_t http_t_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char http_t_log[1 << 16];
static size_t http_t_log_len;

static void http_t_log_fn(void *ud, int level, const char *component, const char *message,
                          const pgpipe_log_field *f, int n)
{
    (void)ud;
    (void)level;
    pthread_mutex_lock(&http_t_log_mu);
    char line[1024];
    int k = snprintf(line, sizeof line, "%s %s", component, message);
    for (int i = 0; i < n && k > 0 && (size_t)k < sizeof line; i++)
        k += snprintf(line + k, sizeof line - (size_t)k, " %s=%s", f[i].key, f[i].value);
    if (k > 0 && (size_t)k < sizeof line && http_t_log_len + (size_t)k + 2 < sizeof http_t_log) {
        memcpy(http_t_log + http_t_log_len, line, (size_t)k);
        http_t_log_len += (size_t)k;
        http_t_log[http_t_log_len++] = '\n';
        http_t_log[http_t_log_len] = 0;
    }
    pthread_mutex_unlock(&http_t_log_mu);
}

static void http_t_trust_local(pgpipe_http_options *o)
{
    o->trusted_proxies = "127.0.0.1,10.0.0.0/8";
}

PGT_TEST(http, access_log_and_forwarded_peer)
{
    PGT_OK(pgpipe_config_log(http_t_log_fn, NULL));
    pgpipe_log_set_level(PGPIPE_LOG_INFO);
    http_t_srv s;
    http_t_start(&s, http_t_trust_local);
    http_t_resp r;
    PGT_EQ_INT(http_t_ask(s.port, "POST /v1/events/logged HTTP/1.1\r\nHost: x\r\n"
                                  "Authorization: Bearer SECRET-TOKEN-1\r\n"
                                  "X-Hub-Signature-256: sha256=SECRET-SIG-2\r\n"
                                  "X-Forwarded-For: 192.0.2.7, 203.0.113.9, 10.1.2.3\r\n"
                                  "Content-Length: 2\r\n\r\n{}", &r) > 0, 1);
    char id[64] = "";
    const char *p = strstr(r.head, "X-Request-Id: ");
    PGT_CHECK(p);
    memcpy(id, p + 14, 36);
    free(r.body);
    PGT_OK(pgpipe_http_reload(s.h));
    PGT_EQ_INT(http_t_ask(s.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    free(r.body);
    /* the reload runs beside the loop: wait for its end (at most 10 s) */
    int reloaded = 0;
    for (int i = 0; i < 100 && !reloaded; i++) {
        PGT_EQ_INT(http_t_ask(s.port, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
        reloaded = strstr(r.body, "pgpipe_http_token_reloads_total{result=\"ok\"} 1\n") != NULL;
        free(r.body);
        if (!reloaded)
            pgpipe_sleep_ms(100);
    }
    PGT_CHECK(reloaded);
    http_t_stop(&s);
    int trusted = pp_http_auth_trusted_proxy(s.h->auth, "127.0.0.1");
    pgpipe_http_close(s.h);
    pgpipe_config_log(NULL, NULL);
    PGT_CONTAINS(http_t_log, "http request method=POST path=/v1/events/logged status=");
    PGT_CONTAINS(http_t_log, id);
    PGT_CONTAINS(http_t_log, " ms=");
    PGT_CONTAINS(http_t_log, " bytes=");
    PGT_CONTAINS(http_t_log, "http request method=GET path=/healthz status=200");
    PGT_CHECK(!strstr(http_t_log, "SECRET"));
    PGT_CONTAINS(http_t_log, "tokens reloaded");
    /* the right-most address that is not a trusted proxy (with the real
    ** trusted-proxy check; the skeleton trusts nobody) */
    PGT_CONTAINS(http_t_log, trusted ? "peer=203.0.113.9 " : "peer=127.0.0.1 ");
}

/* POSTs over one keep-alive connection, pipelined, in the three body
** framings (Content-Length, chunked, 100-continue): each 202 comes after its
** records committed, so the rows are there when the answer is read. */
PGT_TEST(http, post_acknowledged_after_commit)
{
    PGconn *db = pgt_db_open();
    char src[64], q[256], req[1024];
    snprintf(src, sizeof src, "httpt_%d", (int)getpid());
    snprintf(q, sizeof q, "SELECT count(*) FROM staging.raw_events WHERE source = '%s'", src);
    http_t_srv s;
    http_t_start(&s, NULL);
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_resp r;
    snprintf(req, sizeof req,
             "POST /v1/events/%s HTTP/1.1\r\nHost: x\r\nX-Event-Type: t\r\n"
             "Content-Type: application/json\r\n"
             "Content-Length: 9\r\n\r\n{\"n\":1}\r\n"
             "POST /v1/events/%s HTTP/1.1\r\nHost: x\r\nX-Event-Type: t\r\n"
             "Content-Type: application/json\r\n"
             "Transfer-Encoding: chunked\r\n\r\n4\r\n{\"n\"\r\n3\r\n:2}\r\n0\r\n\r\n",
             src, src);
    http_t_sends(fd, req);
    int st = http_t_read(fd, &r);
    PGT_CHECK_MSG(st == 202, "POST: %d %s", st, r.body);
    PGT_CONTAINS(r.body, "\"accepted\":1");
    free(r.body);
    PGT_CHECK(pgt_db_int(db, q) >= 1);
    PGT_EQ_INT(http_t_read(fd, &r), 202);
    free(r.body);
    PGT_EQ_INT(pgt_db_int(db, q), 2);
    snprintf(req, sizeof req,
             "POST /v1/events/%s HTTP/1.1\r\nHost: x\r\nX-Event-Type: t\r\n"
             "Content-Type: application/json\r\n"
             "Expect: 100-continue\r\nContent-Length: 7\r\n\r\n", src);
    http_t_sends(fd, req);
    PGT_EQ_INT(http_t_read(fd, &r), 100);
    free(r.body);
    http_t_sends(fd, "{\"n\":3}");
    PGT_EQ_INT(http_t_read(fd, &r), 202);
    free(r.body);
    PGT_EQ_INT(pgt_db_int(db, q), 3);
    close(fd);
    http_t_stop(&s);
    PGT_EQ_INT(s.h->submitted, 3);
    pgpipe_http_close(s.h);
    pgt_db_close(db);
}

/* An answer whose ticket names no waiting request (its connection closed, or
** the slot serves another connection now) is dropped, and freed. */
PGT_TEST(http, stale_answer_dropped)
{
    http_t_srv s;
    http_t_start(&s, http_t_long_window);
    http_t_resp r;
    /* a POST whose client leaves before its group commits (with the
    ** skeleton ingest it is answered at once) */
    int gone = http_t_connect(s.port, 0);
    http_t_sends(gone, HTTP_T_POST "Content-Type: application/json\r\nContent-Length: 7\r\n\r\n"
                                   "{\"g\":1}");
    int a = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(a, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    PGT_EQ_INT(http_t_read(a, &r), 200);
    free(r.body);
    close(gone);
    /* answers for tickets nobody waits for, in every slot, from this thread
    ** as a committer would */
    for (int slot = 0; slot < s.h->nslots; slot++) {
        pp_http_reply rep;
        PGT_OK(pp_http_reply_error(&rep, 299, "stale", "x", "never sent"));
        hs_done_cb(s.h, (uint64_t)slot << 32 | 0xfffffff0u, &rep);
        PGT_CHECK(rep.body == NULL);
    }
    http_t_sends(a, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    PGT_EQ_INT(http_t_read(a, &r), 200);
    PGT_CHECK(!strstr(r.body, "stale"));
    free(r.body);
    close(a);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
}

static void http_t_tokens_required(pgpipe_http_options *o)
{
    o->require_tokens = 1;
}

/* A head that auth refuses gets 401 at once: with Expect: 100-continue the
** body is never asked for; without, nothing reaches ingest. */
PGT_TEST(http, unauthorized_before_ingest)
{
    http_t_srv s;
    http_t_start(&s, http_t_tokens_required);
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, HTTP_T_POST "Expect: 100-continue\r\nContent-Length: 7\r\n\r\n");
    http_t_resp r;
    PGT_EQ_INT(http_t_read(fd, &r), 401);
    PGT_CONTAINS(r.head, "WWW-Authenticate: Bearer");
    PGT_CONTAINS(r.head, "Connection: close");
    free(r.body);
    PGT_CHECK(http_t_closed(fd));
    close(fd);
    PGT_EQ_INT(http_t_ask(s.port, HTTP_T_POST "Authorization: Bearer pgp_nope\r\n"
                                  "Content-Length: 7\r\n\r\n{\"a\":1}", &r), 403);
    free(r.body);
    http_t_stop(&s);
    PGT_EQ_INT(s.h->submitted, 0);
    pgpipe_http_close(s.h);
}

/* The head of an answer, checked whole: the status line, then exactly the
** header lines expected in the order written, each ended by CRLF, then the
** empty line; and Content-Length equal to the body sent (or, for HEAD, to
** the body a GET gets, with no body sent). want: the lines after the status
** line other than X-Request-Id and Date, "" separated. */
static void http_t_head_is(const http_t_resp *r, const char *status_line, const char *const *want,
                           size_t get_len)
{
    const char *h = r->head;
    size_t sl = strlen(status_line);
    PGT_CHECK_MSG(!strncmp(h, status_line, sl) && !strncmp(h + sl, "\r\n", 2), "status: %s", h);
    h += sl + 2;
    size_t k = 0;
    for (;;) {
        const char *e = strstr(h, "\r\n");
        PGT_CHECK_MSG(e != NULL, "unended line in %s", r->head);
        if (e == h)
            break; /* the empty line */
        PGT_CHECK_MSG(!memchr(h, '\n', (size_t)(e - h)) && !memchr(h, '\r', (size_t)(e - h)),
                      "bare CR or LF in %s", r->head);
        if (!strncmp(h, "X-Request-Id: ", 14)) {
            PGT_EQ_INT((long long)(e - h), 14 + 36);
        } else if (!strncmp(h, "Date: ", 6)) {
            PGT_CHECK(!strncmp(e - 4, " GMT", 4));
        } else {
            PGT_CHECK_MSG(want[k] != NULL, "unexpected header line in %s", r->head);
            PGT_CHECK_MSG(strlen(want[k]) == (size_t)(e - h) && !strncmp(h, want[k], strlen(want[k])),
                          "want %s in %s", want[k], r->head);
            if (!strncmp(h, "Content-Length: ", 16))
                PGT_EQ_INT(strtoll(h + 16, NULL, 10), (long long)get_len);
            k++;
        }
        h = e + 2;
    }
    PGT_CHECK_MSG(want[k] == NULL, "missing %s in %s", want[k], r->head);
    PGT_EQ_INT((long long)(h + 2 - r->head), (long long)strlen(r->head));
}

PGT_TEST(http, reply_head_exact)
{
    char src[64], req[1024], cl[40];
    snprintf(src, sizeof src, "httpr_%d", (int)getpid());
    http_t_srv s;
    http_t_start(&s, NULL);
    http_t_resp r;
    /* 202 over HTTP/1.1 keep-alive: no Connection header */
    snprintf(req, sizeof req, "POST /v1/events/%s HTTP/1.1\r\nHost: x\r\n"
             "Content-Type: application/x-ndjson\r\nContent-Length: 8\r\n\r\n{\"n\":1}\n", src);
    PGT_EQ_INT(http_t_ask(s.port, req, &r), 202);
    snprintf(cl, sizeof cl, "Content-Length: %zu", r.body_len);
    {
        const char *want[] = { "Content-Type: application/json", cl, NULL };
        http_t_head_is(&r, "HTTP/1.1 202 Accepted", want, r.body_len);
    }
    PGT_CHECK(r.body_len > 40 && r.body[0] == '{' && r.body[r.body_len - 1] == '}');
    PGT_CONTAINS(r.body, "\"accepted\":1,\"dead_lettered\":0,\"errors\":[]}");
    free(r.body);
    /* HTTP/1.0 with keep-alive: said back; with Connection: close: closed */
    snprintf(req, sizeof req, "POST /v1/events/%s HTTP/1.0\r\nConnection: keep-alive\r\n"
             "Content-Type: application/x-ndjson\r\nContent-Length: 8\r\n\r\n{\"n\":2}\n", src);
    PGT_EQ_INT(http_t_ask(s.port, req, &r), 202);
    snprintf(cl, sizeof cl, "Content-Length: %zu", r.body_len);
    {
        const char *want[] = { "Content-Type: application/json", cl, "Connection: keep-alive", NULL };
        http_t_head_is(&r, "HTTP/1.1 202 Accepted", want, r.body_len);
    }
    free(r.body);
    snprintf(req, sizeof req, "POST /v1/events/%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
             "Content-Type: application/x-ndjson\r\nContent-Length: 8\r\n\r\n{\"n\":3}\n", src);
    PGT_EQ_INT(http_t_ask(s.port, req, &r), 202);
    snprintf(cl, sizeof cl, "Content-Length: %zu", r.body_len);
    {
        const char *want[] = { "Content-Type: application/json", cl, "Connection: close", NULL };
        http_t_head_is(&r, "HTTP/1.1 202 Accepted", want, r.body_len);
    }
    free(r.body);
    /* a repeated idempotency key: the same body, and Idempotent-Replayed */
    char first[512];
    for (int i = 0; i < 2; i++) {
        snprintf(req, sizeof req, "POST /v1/events/%s HTTP/1.1\r\nHost: x\r\n"
                 "Idempotency-Key: k-%d\r\nContent-Type: application/x-ndjson\r\n"
                 "Content-Length: 8\r\n\r\n{\"n\":4}\n", src, (int)getpid());
        PGT_EQ_INT(http_t_ask(s.port, req, &r), 202);
        snprintf(cl, sizeof cl, "Content-Length: %zu", r.body_len);
        const char *want0[] = { "Content-Type: application/json", cl, NULL };
        const char *want1[] = { "Content-Type: application/json", cl, "Idempotent-Replayed: true",
                                NULL };
        http_t_head_is(&r, "HTTP/1.1 202 Accepted", i ? want1 : want0, r.body_len);
        if (i == 0)
            snprintf(first, sizeof first, "%s", r.body);
        else
            PGT_EQ_STR(r.body, first);
        free(r.body);
    }
    /* an extra header line (405: Allow) comes before Connection */
    PGT_EQ_INT(http_t_ask(s.port, "POST /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                  "Content-Length: 0\r\n\r\n", &r), 405);
    snprintf(cl, sizeof cl, "Content-Length: %zu", r.body_len);
    {
        const char *want[] = { "Content-Type: application/json", cl, "Allow: GET, HEAD",
                               "Connection: close", NULL };
        http_t_head_is(&r, "HTTP/1.1 405 Method Not Allowed", want, r.body_len);
    }
    free(r.body);
    /* HEAD: the GET body's length, no body */
    PGT_EQ_INT(http_t_ask(s.port, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &r), 200);
    size_t get_len = r.body_len;
    free(r.body);
    int fd = http_t_connect(s.port, 0);
    http_t_nrest = 0;
    http_t_sends(fd, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    http_t_head_only = 1;
    PGT_EQ_INT(http_t_read(fd, &r), 200);
    http_t_head_only = 0;
    snprintf(cl, sizeof cl, "Content-Length: %zu", get_len);
    {
        const char *want[] = { "Content-Type: application/json", cl, NULL };
        http_t_head_is(&r, "HTTP/1.1 200 OK", want, get_len);
    }
    free(r.body);
    /* the next answer on the connection starts right after the HEAD's head */
    PGT_EQ_INT(http_t_read(fd, &r), 200);
    PGT_EQ_INT((long long)r.body_len, (long long)get_len);
    free(r.body);
    close(fd);
    http_t_stop(&s);
    pgpipe_http_close(s.h);
}
