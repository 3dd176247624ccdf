/*
** The HTTP/1.1 request parser and the response helpers.
*/

#include "pp_http.h"

#ifndef PGPIPE_OMIT_HTTP
#include <stdio.h>

/* ---- the request parser -------------------------------------------------- */

enum { HP_HEAD, HP_BODY, HP_CH_SIZE, HP_CH_DATA, HP_CH_CRLF, HP_CH_TRAILER, HP_DONE, HP_ERROR };

/* Byte classes: RFC 9110 tchar (names, methods), field value bytes (VCHAR,
** SP, HTAB, obs-text), request-target bytes (VCHAR), host name bytes (RFC
** 3986 reg-name: unreserved and sub-delims; '%' apart). ASCII whatever the
** locale. */
#define HP_TCHAR 1
#define HP_VALUE 2
#define HP_TARGET 4
#define HP_HOST 8
static unsigned char hp_class[256];
static atomic_int hp_class_ready;

static void hp_class_init(void)
{
    if (atomic_load_explicit(&hp_class_ready, memory_order_acquire))
        return;
    /* idempotent: threads racing here write the same bytes */
    static const char tspecial[] = "!#$%&'*+-.^_`|~", hspecial[] = "-._~!$&'()*+,;=";
    unsigned char t[256];
    for (int c = 0; c < 256; c++) {
        unsigned char v = 0;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c && strchr(tspecial, c)))
            v |= HP_TCHAR;
        if (c == '\t' || (c >= 0x20 && c != 0x7f))
            v |= HP_VALUE;
        if (c > 0x20 && c < 0x7f)
            v |= HP_TARGET;
        if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
            (c && strchr(hspecial, c)))
            v |= HP_HOST;
        t[c] = v;
    }
    memcpy(hp_class, t, sizeof t);
    atomic_store_explicit(&hp_class_ready, 1, memory_order_release);
}

PGPIPE_PRIVATE void pp_http_parser_init(pp_http_parser *p, size_t max_header_bytes,
                                        size_t max_body_bytes)
{
    hp_class_init();
    memset(p, 0, sizeof *p);
    p->max_header_bytes = max_header_bytes;
    p->max_body_bytes = max_body_bytes;
}

static int hp_fail(pp_http_parser *p, int status, const char *why)
{
    p->state = HP_ERROR;
    p->status = status;
    p->why = why;
    return PP_HTTP_ERROR;
}

static int hp_ieq(const char *s, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    return n == m && !strncasecmp(s, lit, n);
}

/* Does the comma-separated list s[0..n) hold token tok? */
static int hp_has_token(const char *s, size_t n, const char *tok)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == ','))
            i++;
        size_t b = i;
        while (i < n && s[i] != ',')
            i++;
        size_t e = i;
        while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t'))
            e--;
        if (e > b && hp_ieq(s + b, e - b, tok))
            return 1;
    }
    return 0;
}

/* The methods this server knows (RFC 9110 9.3 and PATCH, RFC 5789): those it
** serves by name, the others PP_HTTP_OTHER (405 where they do not apply);
** 0 for any other method (501, RFC 9110 9.1). */
#define HP_METHOD_MAX 7 /* the longest known method: OPTIONS, CONNECT */
static int hp_method(const char *m, size_t n)
{
    switch (n) {
    case 3:
        if (!memcmp(m, "GET", 3))
            return PP_HTTP_GET;
        if (!memcmp(m, "PUT", 3))
            return PP_HTTP_PUT;
        break;
    case 4:
        if (!memcmp(m, "POST", 4))
            return PP_HTTP_POST;
        if (!memcmp(m, "HEAD", 4))
            return PP_HTTP_HEAD;
        break;
    case 5:
        if (!memcmp(m, "PATCH", 5) || !memcmp(m, "TRACE", 5))
            return PP_HTTP_OTHER;
        break;
    case 6:
        if (!memcmp(m, "DELETE", 6))
            return PP_HTTP_DELETE;
        break;
    case 7:
        if (!memcmp(m, "OPTIONS", 7))
            return PP_HTTP_OPTIONS;
        if (!memcmp(m, "CONNECT", 7))
            return PP_HTTP_OTHER;
        break;
    }
    return 0;
}

/* Judge the method of a request line whose first n bytes are s[0..n) (the
** line may still be coming): a known method followed by SP sets *method and
** *len; a line that cannot start with one fails at once, whatever follows
** (an unknown or over-long method 501, RFC 9110 9.1 and RFC 9112 3; other
** bytes 400: TLS or HTTP/2 bytes on this port are answered, not waited on).
** 0 = so far so good (*method 0 while undecided), or the error recorded. */
static int hp_method_check(pp_http_parser *p, const char *s, size_t n, int *method, size_t *len)
{
    size_t k = 0;
    *method = 0;
    while (k < n && k <= HP_METHOD_MAX && (hp_class[(unsigned char)s[k]] & HP_TCHAR))
        k++;
    if (k > HP_METHOD_MAX)
        return hp_fail(p, 501, "a method this server does not implement");
    if (k == n || (k == 0 && n == 1 && s[0] == '\r'))
        return 0; /* more to come (a lone CR: maybe an empty line before the request) */
    if (s[k] != ' ' || k == 0)
        return hp_fail(p, 400, "a malformed request line (not METHOD SP target SP HTTP/1.1)");
    *method = hp_method(s, k);
    if (!*method)
        return hp_fail(p, 501, "a method this server does not implement");
    *len = k;
    return 0;
}

/* Is s[0..n) a Host value, uri-host [":" port] (RFC 9112 3.2, RFC 3986
** 3.2.2)? Empty is one (a target without an authority). */
static int hp_host_ok(const char *s, size_t n)
{
    size_t i = 0;
    if (n && s[0] == '[') { /* IP-literal, loosely: host bytes, ':' and '%' */
        while (++i < n && s[i] != ']')
            if (!(hp_class[(unsigned char)s[i]] & HP_HOST) && s[i] != ':' && s[i] != '%')
                return 0;
        if (i == n || i == 1)
            return 0;
        i++;
    } else { /* reg-name or IPv4address: unreserved, sub-delims, %HH */
        for (; i < n && s[i] != ':'; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c == '%') {
                if (n - i < 3 || !isxdigit((unsigned char)s[i + 1]) ||
                    !isxdigit((unsigned char)s[i + 2]))
                    return 0;
                i += 2;
            } else if (!(hp_class[c] & HP_HOST)) {
                return 0;
            }
        }
    }
    if (i < n && s[i++] != ':')
        return 0;
    for (; i < n; i++) /* the port: digits, maybe none */
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* One header line's name and value: [b, e) holds the line without its CRLF.
** 0, or the error already recorded. */
static int hp_field(pp_http_parser *p, const char *b, const char *e, pp_http_header *h)
{
    const char *q = b;
    if (*q == ' ' || *q == '\t')
        return hp_fail(p, 400, "obsolete line folding");
    while (q < e && (hp_class[(unsigned char)*q] & HP_TCHAR))
        q++;
    if (q == e || *q != ':')
        return hp_fail(p, 400, q < e && (*q == ' ' || *q == '\t')
                                   ? "whitespace between a header name and its colon"
                                   : "a header line without a valid name and a colon");
    if (q == b)
        return hp_fail(p, 400, "an empty header name");
    h->name = b;
    h->name_len = (size_t)(q - b);
    q++;
    while (q < e && (*q == ' ' || *q == '\t'))
        q++;
    const char *v = q;
    for (; q < e; q++)
        if (PP_UNLIKELY(!(hp_class[(unsigned char)*q] & HP_VALUE)))
            return hp_fail(p, 400, "a control character in a header value");
    while (q > v && (q[-1] == ' ' || q[-1] == '\t'))
        q--;
    h->value = v;
    h->value_len = (size_t)(q - v);
    return 0;
}

/* The request line s[0..le) (le: its CR), method SP request-target SP
** HTTP-version (RFC 9112 3): check it and, unless rq is NULL, fill rq's
** method, target, path, query and minor. Checked as soon as its CRLF is in
** (rq NULL: the buffer may move before the head is complete, and rq's
** pointers must not outlive it), and again once the head is complete. */
static int hp_request_line(pp_http_parser *p, const char *s, const char *le, pp_http_request *rq)
{
    int method;
    size_t mlen = 0;
    if (hp_method_check(p, s, (size_t)(le - s) + 2, &method, &mlen))
        return PP_HTTP_ERROR;
    const char *t = s + mlen + 1, *q = t;
    while (q < le && (hp_class[(unsigned char)*q] & HP_TARGET))
        q++;
    if (q == le) /* "GET /" alone is HTTP/0.9, which has no headers to wait for */
        return hp_fail(p, 400, q == t ? "a request line without a target and an HTTP version"
                                      : "a request line without an HTTP version (HTTP/0.9 "
                                        "is not served; HTTP/1.0 and HTTP/1.1 are)");
    if (q == t)
        return hp_fail(p, 400, "a malformed request line (not METHOD SP target SP HTTP/1.1)");
    if (*q != ' ')
        return hp_fail(p, 400, "a request target with a byte that is not visible ASCII "
                               "(percent-encode it)");
    if (memchr(t, '#', (size_t)(q - t)))
        return hp_fail(p, 400, "a request target with a fragment (#)");
    const char *o = t; /* the origin-form part: path and query */
    if (*t != '/') {
        /* absolute-form (RFC 9112 3.2.2: a server MUST accept it): the path
        ** and query after the authority; the authority is the host */
        size_t sl = (size_t)(q - t) >= 7 && !strncasecmp(t, "http://", 7) ? 7
                    : (size_t)(q - t) >= 8 && !strncasecmp(t, "https://", 8) ? 8 : 0;
        if (!sl)
            return hp_fail(p, 400, "the request target must be a path (origin-form) or an "
                                   "http:// or https:// URI (absolute-form)");
        const char *a = t + sl;
        o = a;
        while (o < q && *o != '/' && *o != '?')
            o++;
        if (o == a)
            return hp_fail(p, 400, "an absolute-form request target without a host");
        if (memchr(a, '@', (size_t)(o - a)))
            return hp_fail(p, 400, "an absolute-form request target with user information");
        if (!hp_host_ok(a, (size_t)(o - a)))
            return hp_fail(p, 400, "an absolute-form request target with a malformed host");
    }
    /* HTTP-version = "HTTP/" DIGIT "." DIGIT; "HTTP/2" and "HTTP/3" as a
    ** client may write them are a version, just not this one */
    const char *v = q + 1;
    size_t vn = (size_t)(le - v);
    if (vn < 6 || memcmp(v, "HTTP/", 5) || v[5] < '0' || v[5] > '9' ||
        (vn != 6 && (vn != 8 || v[6] != '.' || v[7] < '0' || v[7] > '9')))
        return hp_fail(p, 400, "a malformed HTTP version (HTTP/1.1 or HTTP/1.0)");
    if (v[5] != '1')
        return hp_fail(p, 505, "only HTTP/1.0 and HTTP/1.1 are served");
    if (vn == 6)
        return hp_fail(p, 400, "a malformed HTTP version (HTTP/1.1 or HTTP/1.0)");
    if (!rq)
        return 0;
    rq->method = method;
    /* a later 1.x is served as 1.1, the highest this server implements
    ** (RFC 9110 6.2) */
    rq->minor = v[7] > '1' ? 1 : v[7] - '0';
    rq->target = t;
    rq->target_len = (size_t)(q - t);
    const char *qm = memchr(o, '?', (size_t)(q - o));
    rq->path = o;
    rq->path_len = qm ? (size_t)(qm - o) : (size_t)(q - o);
    if (rq->path_len == 0)
        rq->path = "/", rq->path_len = 1; /* "http://host" and "http://host?q" */
    rq->query = qm ? qm + 1 : NULL;
    rq->query_len = qm ? (size_t)(q - qm - 1) : 0;
    return 0;
}

/* The whole head is buf[0..end): check it and fill rq. */
static int hp_head(pp_http_parser *p, char *buf, size_t start, size_t end, pp_http_request *rq)
{
    const char *s = buf + start, *lim = buf + end;
    const char *nl = memchr(s, '\n', (size_t)(lim - s));
    if (hp_request_line(p, s, nl - 1, rq))
        return PP_HTTP_ERROR;
    int ncl = 0, nte = 0, nhost = 0, conn_close = 0, conn_keep = 0, expect = 0;
    uint64_t cl = 0;
    const pp_http_header *te = NULL;
    rq->nheaders = 0;
    for (const char *b = nl + 1; b < lim;) {
        nl = memchr(b, '\n', (size_t)(lim - b));
        const char *le = nl - 1;
        if (le == b)
            break; /* the empty line */
        if (rq->nheaders == PP_HTTP_MAX_HEADERS)
            return hp_fail(p, 431, "too many header fields");
        pp_http_header *h = &rq->headers[rq->nheaders];
        if (hp_field(p, b, le, h))
            return PP_HTTP_ERROR;
        rq->nheaders++;
        b = nl + 1;
        switch (h->name_len) {
        case 4:
            if (hp_ieq(h->name, 4, "host")) {
                if (!hp_host_ok(h->value, h->value_len))
                    return hp_fail(p, 400, "a malformed Host (host[:port])");
                nhost++;
            }
            break;
        case 6:
            if (hp_ieq(h->name, 6, "expect")) {
                if (!hp_ieq(h->value, h->value_len, "100-continue"))
                    return hp_fail(p, 417, "the only expectation served is 100-continue");
                expect = 1;
            }
            break;
        case 10:
            if (hp_ieq(h->name, 10, "connection")) {
                conn_close |= hp_has_token(h->value, h->value_len, "close");
                conn_keep |= hp_has_token(h->value, h->value_len, "keep-alive");
            }
            break;
        case 14:
            if (hp_ieq(h->name, 14, "content-length")) {
                if (ncl++)
                    return hp_fail(p, 400, "more than one Content-Length");
                if (h->value_len == 0 || h->value_len > 18)
                    return hp_fail(p, 400, "a malformed Content-Length");
                for (size_t i = 0; i < h->value_len; i++) {
                    unsigned d = (unsigned)(unsigned char)h->value[i] - '0';
                    if (d > 9)
                        return hp_fail(p, 400, "a malformed Content-Length");
                    cl = cl * 10 + d;
                }
            }
            break;
        case 17:
            if (hp_ieq(h->name, 17, "transfer-encoding")) {
                nte++;
                te = h;
            }
            break;
        }
    }
    if (nte && ncl)
        return hp_fail(p, 400, "both Content-Length and Transfer-Encoding");
    if (nte > 1 || (te && !hp_ieq(te->value, te->value_len, "chunked")))
        return hp_fail(p, 400, "the only Transfer-Encoding served is chunked");
    if (te && rq->minor == 0)
        return hp_fail(p, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (nhost > 1 || (rq->minor == 1 && nhost == 0))
        return hp_fail(p, 400, nhost ? "more than one Host" : "no Host header");
    if (cl > p->max_body_bytes)
        return hp_fail(p, 413, "the body is larger than the limit");
    rq->keep_alive = rq->minor == 1 ? !conn_close : conn_keep && !conn_close;
    p->expect_continue = expect && rq->minor == 1;
    p->length_given = ncl || nte;
    p->chunked = te != NULL;
    p->left = cl;
    rq->body = NULL;
    rq->body_len = 0;
    return 0;
}

/* Find the end of the line that starts at from: the index of its LF, or -1
** (not here yet), or -2 (a bare LF). */
static long hp_line(const char *buf, size_t from, size_t len)
{
    const char *nl = memchr(buf + from, '\n', len - from);
    if (!nl)
        return -1;
    size_t i = (size_t)(nl - buf);
    if (i == from || buf[i - 1] != '\r')
        return -2;
    return (long)i;
}

static int hp_done(pp_http_parser *p, char *buf, size_t end, pp_http_request *rq)
{
    rq->body = buf + p->head_len;
    rq->body_len = p->body_len;
    p->consumed = end;
    p->state = HP_DONE;
    return PP_HTTP_DONE;
}

static int hp_body(pp_http_parser *p, char *buf, size_t len, pp_http_request *rq)
{
    for (;;) {
        switch (p->state) {
        case HP_BODY:
            if (len - p->head_len < p->left)
                return PP_HTTP_MORE;
            p->body_len = (size_t)p->left;
            return hp_done(p, buf, p->head_len + p->body_len, rq);
        case HP_CH_SIZE: {
            long nl = hp_line(buf, p->pos, len);
            if (nl == -1) {
                if (len - p->pos > 1024)
                    return hp_fail(p, 400, "a chunk size line longer than 1024 bytes");
                return PP_HTTP_MORE;
            }
            if (nl == -2 || (size_t)nl - p->pos > 1024)
                return hp_fail(p, 400, "a malformed chunk size line");
            const char *q = buf + p->pos, *e = buf + nl - 1;
            uint64_t n = 0;
            const char *d = q;
            while (q < e && isxdigit((unsigned char)*q)) {
                unsigned v = *q <= '9' ? (unsigned)(*q - '0') : (unsigned)((*q | 0x20) - 'a' + 10);
                n = n * 16 + v;
                if (n > p->max_body_bytes)
                    return hp_fail(p, 413, "the body is larger than the limit");
                q++;
            }
            if (q == d)
                return hp_fail(p, 400, "a malformed chunk size");
            while (q < e && (*q == ' ' || *q == '\t'))
                q++;
            if (q < e) {
                if (*q != ';')
                    return hp_fail(p, 400, "a malformed chunk size");
                for (; q < e; q++) /* extensions are ignored, but must be text */
                    if (!(hp_class[(unsigned char)*q] & HP_VALUE))
                        return hp_fail(p, 400, "a control character in a chunk extension");
            }
            if (p->body_len + n > p->max_body_bytes)
                return hp_fail(p, 413, "the body is larger than the limit");
            p->pos = (size_t)nl + 1;
            p->left = n;
            p->state = n ? HP_CH_DATA : HP_CH_TRAILER;
            break;
        }
        case HP_CH_DATA: {
            size_t n = len - p->pos;
            if (n > p->left)
                n = (size_t)p->left;
            if (n == 0)
                return PP_HTTP_MORE;
            char *to = buf + p->head_len + p->body_len;
            if (to != buf + p->pos)
                memmove(to, buf + p->pos, n);
            p->body_len += n;
            p->pos += n;
            p->left -= n;
            if (p->left)
                return PP_HTTP_MORE;
            p->state = HP_CH_CRLF;
            break;
        }
        case HP_CH_CRLF:
            if (len - p->pos < 2)
                return len > p->pos && buf[p->pos] != '\r'
                           ? hp_fail(p, 400, "chunk data longer than its size")
                           : PP_HTTP_MORE;
            if (buf[p->pos] != '\r' || buf[p->pos + 1] != '\n')
                return hp_fail(p, 400, "chunk data longer than its size");
            p->pos += 2;
            p->state = HP_CH_SIZE;
            break;
        case HP_CH_TRAILER: {
            /* the size first: fed in pieces, a long line is all it sees */
            const char *lf = memchr(buf + p->pos, '\n', len - p->pos);
            size_t upto = lf ? (size_t)(lf - buf) + 1 : len;
            if (p->trailer_bytes + (upto - p->pos) > p->max_header_bytes)
                return hp_fail(p, 431, "the trailer fields are larger than the limit");
            if (!lf)
                return PP_HTTP_MORE;
            long nl = hp_line(buf, p->pos, len);
            if (nl == -2)
                return hp_fail(p, 400, "a bare LF in the trailer fields");
            size_t b = p->pos;
            p->trailer_bytes += (size_t)nl + 1 - b;
            p->pos = (size_t)nl + 1;
            if ((size_t)nl - 1 == b)
                return hp_done(p, buf, p->pos, rq);
            pp_http_header h; /* checked like a header, then dropped */
            if (hp_field(p, buf + b, buf + nl - 1, &h))
                return PP_HTTP_ERROR;
            break;
        }
        default:
            return hp_fail(p, 400, "the parser was not reset");
        }
    }
}

PGPIPE_PRIVATE int pp_http_parse(pp_http_parser *p, char *buf, size_t len, pp_http_request *rq)
{
    if (p->state == HP_ERROR)
        return PP_HTTP_ERROR;
    if (p->state != HP_HEAD)
        return hp_body(p, buf, len, rq);
    /* leading empty lines before the request line are ignored (RFC 9112 2.2) */
    size_t start = 0;
    while (start + 1 < len && buf[start] == '\r' && buf[start + 1] == '\n')
        start += 2;
    if (p->scan < start)
        p->scan = start;
    if (p->scan == start && start < p->max_header_bytes) {
        /* the request line is still coming: judge its method already (on the
        ** bytes within the head limit: fed at once or in pieces, the same
        ** bytes decide, and a head too large is 431 either way) */
        size_t upto = len < p->max_header_bytes ? len : p->max_header_bytes;
        int m;
        size_t mlen;
        if (hp_method_check(p, buf + start, upto - start, &m, &mlen))
            return PP_HTTP_ERROR;
    }
    for (;;) {
        if (p->scan >= len)
            goto more;
        const char *nl = memchr(buf + p->scan, '\n', len - p->scan);
        if (!nl)
            goto more;
        size_t i = (size_t)(nl - buf);
        if (i + 1 > p->max_header_bytes) /* first: fed in pieces, this is all it sees */
            return hp_fail(p, 431, "the head is larger than the limit");
        if (i == p->scan || buf[i - 1] != '\r')
            return hp_fail(p, 400, "a bare LF in the head");
        if (i == p->scan + 1 && p->scan > start) {
            p->head_len = i + 1;
            break;
        }
        if (i == p->scan + 1)
            return hp_fail(p, 400, "a malformed request line");
        /* the request line is judged when it ends, not when the head does:
        ** "GET /\r\n" (HTTP/0.9) is answered at once */
        if (p->scan == start && hp_request_line(p, buf + start, buf + i - 1, NULL))
            return PP_HTTP_ERROR;
        p->scan = i + 1;
    }
    if (hp_head(p, buf, start, p->head_len, rq))
        return PP_HTTP_ERROR;
    if (p->chunked) {
        p->pos = p->head_len;
        p->state = HP_CH_SIZE;
    } else {
        p->state = HP_BODY;
        if (len - p->head_len >= p->left)
            return hp_body(p, buf, len, rq);
        return PP_HTTP_GOT_HEAD;
    }
    int rc = hp_body(p, buf, len, rq);
    return rc == PP_HTTP_MORE ? PP_HTTP_GOT_HEAD : rc;
more:
    if (len > p->max_header_bytes)
        return hp_fail(p, 431, "the head is larger than the limit");
    return PP_HTTP_MORE;
}

PGPIPE_PRIVATE const char *pp_http_header_get(const pp_http_request *rq, const char *name,
                                              size_t *len)
{
    size_t n = strlen(name);
    /* the length and the first letter (ASCII, either case) rule out most
    ** headers before a full compare */
    unsigned char c0 = (unsigned char)(name[0] | 0x20);
    for (int i = 0; i < rq->nheaders; i++) {
        const pp_http_header *h = &rq->headers[i];
        if (h->name_len == n && n && ((unsigned char)(h->name[0] | 0x20)) == c0 &&
            !strncasecmp(h->name, name, n)) {
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
