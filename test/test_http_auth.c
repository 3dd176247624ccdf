/* Tests of who may write to the HTTP server (src/http/http_auth.c): HMAC,
** the three signature forms with deliveries signed the way their senders
** sign them (the expected values come from Python's hmac module and the
** senders' published examples, not from the code under test), tokens in
** the database, trusted proxies. */

/* ---- a request as the parser hands it over ---- */

static void hauth_t_rq(pp_http_request *rq, const char *body)
{
    memset(rq, 0, sizeof *rq);
    rq->method = PP_HTTP_POST;
    rq->body = body;
    rq->body_len = strlen(body);
    snprintf(rq->id, sizeof rq->id, "0190b6a4-0000-7000-8000-000000000001");
}

static void hauth_t_hdr(pp_http_request *rq, const char *name, const char *value)
{
    PGT_CHECK(rq->nheaders < PP_HTTP_MAX_HEADERS);
    pp_http_header *h = &rq->headers[rq->nheaders++];
    h->name = name;
    h->name_len = strlen(name);
    h->value = value;
    h->value_len = strlen(value);
}

/* Open an auth handle over these sources without a database (no tokens). */
static pp_http_auth *hauth_t_open(const pgpipe_http_source *src, int n, const char *proxies)
{
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.sources = src;
    o.nsources = n;
    o.trusted_proxies = proxies;
    pp_http_auth *a = NULL;
    pgpipe_error err;
    pgpipe_error_clear(&err);
    int rc = pp_http_auth_open(&a, &o, NULL, &err);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", err.message);
    return a;
}

/* pp_http_auth_check; the status, and the JSON error's text in msg. */
static int hauth_t_check(pp_http_auth *a, const char *source, const pp_http_request *rq,
                         time_t now, char *msg, size_t size)
{
    pp_http_reply r;
    memset(&r, 0, sizeof r);
    int st = pp_http_auth_check(a, source, rq, now, &r);
    snprintf(msg, size, "%.*s", (int)r.body_len, r.body ? r.body : "");
    if (st)
        PGT_CHECK_MSG(r.status == st && r.body, "status %d, reply %d", st, r.status);
    else
        PGT_CHECK(r.body == NULL);
    pp_http_reply_free(&r);
    return st;
}

static void hauth_t_hex(const unsigned char *d, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

PGT_TEST(http_auth, hmac_rfc4231)
{
    /* RFC 4231 section 4, test cases 1-7 (5: the first 128 bits) */
    unsigned char k1[20], k3[20], k4[25], k5[20], k6[131], d3[50], d4[50];
    memset(k1, 0x0b, sizeof k1);
    memset(k3, 0xaa, sizeof k3);
    for (int i = 0; i < 25; i++)
        k4[i] = (unsigned char)(i + 1);
    memset(k5, 0x0c, sizeof k5);
    memset(k6, 0xaa, sizeof k6);
    memset(d3, 0xdd, sizeof d3);
    memset(d4, 0xcd, sizeof d4);
    const char *t6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    const char *t7 = "This is a test using a larger than block-size key and a larger than "
                     "block-size data. The key needs to be hashed before being used by the "
                     "HMAC algorithm.";
    struct { const void *k; size_t kl; const void *d; size_t dl; const char *want; } v[] = {
        { k1, 20, "Hi There", 8,
          "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7" },
        { "Jefe", 4, "what do ya want for nothing?", 28,
          "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843" },
        { k3, 20, d3, 50, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe" },
        { k4, 25, d4, 50, "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b" },
        { k5, 20, "Test With Truncation", 20, "a3b6167473100ee06e0c796c2955552b" },
        { k6, 131, t6, strlen(t6),
          "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54" },
        { k6, 131, t7, strlen(t7),
          "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2" },
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        unsigned char mac[32];
        char hex[65];
        pp_hmac_sha256(v[i].k, v[i].kl, v[i].d, v[i].dl, mac);
        hauth_t_hex(mac, 32, hex);
        hex[strlen(v[i].want)] = '\0';
        PGT_EQ_STR(hex, v[i].want);
    }
    PGT_CHECK(pp_ct_equal("abcd", "abcd", 4));
    PGT_CHECK(!pp_ct_equal("abcd", "abce", 4));
    PGT_CHECK(!pp_ct_equal("xbcd", "abcd", 4));
}

PGT_TEST(http_auth, base64)
{
    char out[64];
    unsigned char raw[64];
    PGT_EQ_INT(pp_base64_encode(out, sizeof out, "foob", 4, 0), 8);
    PGT_EQ_STR(out, "Zm9vYg==");
    PGT_EQ_INT(pp_base64_encode(out, sizeof out, "foob", 4, 1), 6);
    PGT_EQ_STR(out, "Zm9vYg");
    PGT_EQ_INT(pp_base64_encode(out, sizeof out, "\xfb\xff", 2, 1), 3);
    PGT_EQ_STR(out, "-_8");
    PGT_EQ_INT(pp_base64_encode(out, 4, "foob", 4, 0), 8); /* too small: nothing written */
    PGT_EQ_INT(pp_base64_decode(raw, sizeof raw, "Zm9vYmFy", 8), 6);
    PGT_EQ_MEM(raw, 6, "foobar", 6);
    PGT_EQ_INT(pp_base64_decode(raw, sizeof raw, "Zm9vYg==", 8), 4);
    PGT_EQ_INT(pp_base64_decode(raw, sizeof raw, "Zm9vYg", 6), 4);
    PGT_EQ_INT(pp_base64_decode(raw, sizeof raw, "-_8", 3), 2);
    PGT_EQ_MEM(raw, 2, "\xfb\xff", 2);
    PGT_EQ_INT(pp_base64_decode(raw, sizeof raw, "Zm9v!mFy", 8), -1);
    PGT_EQ_INT(pp_base64_decode(raw, sizeof raw, "Zm9=vYmF", 8), -1);
    PGT_EQ_INT(pp_base64_decode(raw, sizeof raw, "Z", 1), -1);
    PGT_EQ_INT(pp_base64_decode(raw, sizeof raw, "Zh", 2), -1); /* bits no encoder leaves */
    PGT_EQ_INT(pp_base64_decode(raw, 5, "Zm9vYmFy", 8), -1);   /* does not fit */
}

/* GitHub's documented example: secret "It's a Secret to Everybody", body
** "Hello, World!" (docs.github.com, "Validating webhook deliveries"). */
PGT_TEST(http_auth, github)
{
    pgpipe_http_source s = { .name = "gh", .signature = PGPIPE_HTTP_SIG_GITHUB,
                             .secret = "It's a Secret to Everybody" };
    pp_http_auth *a = hauth_t_open(&s, 1, NULL);
    const char *good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    pp_http_request rq;
    char msg[600];
    time_t now = 1700000000;

    hauth_t_rq(&rq, "Hello, World!");
    hauth_t_hdr(&rq, "X-GitHub-Event", "push");
    hauth_t_hdr(&rq, "x-hub-signature-256", good); /* header names are case-insensitive */
    PGT_EQ_INT(hauth_t_check(a, "gh", &rq, now, msg, sizeof msg), 0);

    /* upper-case hex is the same signature */
    hauth_t_rq(&rq, "Hello, World!");
    hauth_t_hdr(&rq, "X-Hub-Signature-256",
                "sha256=757107EA0EB2509FC211221CCE984B8A37570B6D7586C22C46F4379C8B043E17");
    PGT_EQ_INT(hauth_t_check(a, "gh", &rq, now, msg, sizeof msg), 0);

    /* tampered body */
    hauth_t_rq(&rq, "Hello, World?");
    hauth_t_hdr(&rq, "X-Hub-Signature-256", good);
    PGT_EQ_INT(hauth_t_check(a, "gh", &rq, now, msg, sizeof msg), 403);
    PGT_CONTAINS(msg, "\"code\":\"bad_signature\"");
    PGT_CONTAINS(msg, "\"request_id\":\"0190b6a4");

    /* missing, and malformed forms */
    hauth_t_rq(&rq, "Hello, World!");
    PGT_EQ_INT(hauth_t_check(a, "gh", &rq, now, msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "X-Hub-Signature-256 header is missing");
    const char *bad[] = { "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
                          "sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
                          "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1",
                          "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e1z",
                          "sha256=", "" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hauth_t_rq(&rq, "Hello, World!");
        hauth_t_hdr(&rq, "X-Hub-Signature-256", bad[i]);
        PGT_EQ_INT(hauth_t_check(a, "gh", &rq, now, msg, sizeof msg), 401);
        PGT_CONTAINS(msg, "malformed_signature");
    }
    pp_http_auth_close(a);

    /* the same delivery against another secret */
    s.secret = "It's a Secret to Nobody";
    a = hauth_t_open(&s, 1, NULL);
    hauth_t_rq(&rq, "Hello, World!");
    hauth_t_hdr(&rq, "X-Hub-Signature-256", good);
    PGT_EQ_INT(hauth_t_check(a, "gh", &rq, now, msg, sizeof msg), 403);
    /* an unlisted source (no "*" entry) is not signed: no check */
    PGT_EQ_INT(hauth_t_check(a, "other", &rq, now, msg, sizeof msg), 0);
    pp_http_auth_close(a);
}

/* Stripe: "t=<unix>,v1=<hex>" over "t.body"; the values from Python:
** hmac.new(b"whsec_stripe_test_secret", b"1700000000." + body, sha256). */
PGT_TEST(http_auth, stripe)
{
    pgpipe_http_source s = { .name = "stripe", .signature = PGPIPE_HTTP_SIG_STRIPE,
                             .secret = "whsec_stripe_test_secret", .tolerance_s = 300 };
    pp_http_auth *a = hauth_t_open(&s, 1, NULL);
    const char *body = "{\"id\":\"evt_1NG8Du2eZvKYlo2CUI79vXWy\",\"object\":\"event\","
                       "\"type\":\"payment_intent.succeeded\"}";
    const char *v1 = "15027c92e35002d657782fc1a244c16eaec1b212c960f36588b316fb6d05bd4f";
    const char *other = "0483bd85869462c6c15797ed60c20e10c6e29f4f292035367c3cff73aadee15b";
    char hdr[400], msg[600];
    pp_http_request rq;
    time_t now = 1700000000 + 120;

    snprintf(hdr, sizeof hdr, "t=1700000000,v1=%s,v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39", v1);
    hauth_t_rq(&rq, body);
    hauth_t_hdr(&rq, "Stripe-Signature", hdr);
    PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, now, msg, sizeof msg), 0);

    /* several v1 (a secret being rolled): any one may match, in any place */
    snprintf(hdr, sizeof hdr, "t=1700000000, v1=%s, v1=%s", other, v1);
    hauth_t_rq(&rq, body);
    hauth_t_hdr(&rq, "Stripe-Signature", hdr);
    PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, now, msg, sizeof msg), 0);

    /* only the other secret's signature; a tampered body; another timestamp */
    snprintf(hdr, sizeof hdr, "t=1700000000,v1=%s", other);
    hauth_t_rq(&rq, body);
    hauth_t_hdr(&rq, "Stripe-Signature", hdr);
    PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, now, msg, sizeof msg), 403);
    snprintf(hdr, sizeof hdr, "t=1700000000,v1=%s", v1);
    hauth_t_rq(&rq, "{\"id\":\"evt_1NG8Du2eZvKYlo2CUI79vXWy\",\"object\":\"event\","
                    "\"type\":\"payment_intent.failed\"}");
    hauth_t_hdr(&rq, "Stripe-Signature", hdr);
    PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, now, msg, sizeof msg), 403);
    snprintf(hdr, sizeof hdr, "t=1700000001,v1=%s", v1);
    hauth_t_rq(&rq, body);
    hauth_t_hdr(&rq, "Stripe-Signature", hdr);
    PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, now, msg, sizeof msg), 403);

    /* a replay after the tolerance, and a timestamp from the future */
    snprintf(hdr, sizeof hdr, "t=1700000000,v1=%s", v1);
    hauth_t_rq(&rq, body);
    hauth_t_hdr(&rq, "Stripe-Signature", hdr);
    PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, 1700000000 + 301, msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "301 s old");
    PGT_CONTAINS(msg, "tolerance of 300 s");
    PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, 1700000000 + 300, msg, sizeof msg), 0);
    PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, 1700000000 - 400, msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "400 s in the future");

    /* malformed headers */
    char b1[200], b2[200], b3[200];
    snprintf(b1, sizeof b1, "v1=%s", v1);                       /* no t */
    snprintf(b2, sizeof b2, "t=17000x0000,v1=%s", v1);          /* t not a number */
    snprintf(b3, sizeof b3, "t=1700000000,t=1700000000,v1=%s", v1); /* two t */
    const char *bad[] = { b1, b2, b3, "t=1700000000", "t=1700000000,v1=abc", "garbage" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        hauth_t_rq(&rq, body);
        hauth_t_hdr(&rq, "Stripe-Signature", bad[i]);
        PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, now, msg, sizeof msg), 401);
        PGT_CONTAINS(msg, "malformed_signature");
    }
    hauth_t_rq(&rq, body);
    PGT_EQ_INT(hauth_t_check(a, "stripe", &rq, now, msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "Stripe-Signature header is missing");
    pp_http_auth_close(a);
}

/* Standard Webhooks: the specification's own example (secret, id, timestamp,
** payload and signature as published with the spec's reference libraries). */
PGT_TEST(http_auth, standard_webhooks)
{
    pgpipe_http_source s = { .name = "sw", .signature = PGPIPE_HTTP_SIG_STANDARD,
                             .secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" };
    pp_http_auth *a = hauth_t_open(&s, 1, NULL);
    const char *body = "{\"test\": 2432232314}";
    const char *sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
    pp_http_request rq;
    char msg[600];
    time_t now = 1614265330 + 10;

#define SW(b, id, ts, sg) do { hauth_t_rq(&rq, (b)); \
        if (id) hauth_t_hdr(&rq, "webhook-id", (id)); \
        if (ts) hauth_t_hdr(&rq, "webhook-timestamp", (ts)); \
        if (sg) hauth_t_hdr(&rq, "webhook-signature", (sg)); } while (0)

    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", sig);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 0);
    /* several signatures separated by blanks; other versions are skipped */
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
       "v1a,aGVsbG8= v1,Ag0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1O= "
       "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 0);

    /* the id and the timestamp are signed too */
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJel", "1614265330", sig);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 403);
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265331", sig);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 403);
    SW("{\"test\": 2432232315}", "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", sig);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 403);
    PGT_CONTAINS(msg, "bad_signature");

    /* stale and future beyond the default tolerance (300 s) */
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", sig);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, 1614265330 + 3600, msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "3600 s old");
    PGT_CONTAINS(msg, "tolerance of 300 s");
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, 1614265330 - 301, msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "in the future");

    /* missing and malformed */
    SW(body, NULL, "1614265330", sig);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "webhook-id header is missing");
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", NULL, sig);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 401);
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", NULL);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 401);
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", "yesterday", sig);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "malformed_signature");
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330",
       "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 401);
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,not*base64");
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 401);
    pp_http_auth_close(a);

    /* the secret without its prefix is the same key; another secret is not */
    s.secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    a = hauth_t_open(&s, 1, NULL);
    SW(body, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", sig);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 0);
    pp_http_auth_close(a);
    s.secret = "whsec_c2VjcmV0LW9mLWEtcm90YXRlZC1lbmRwb2ludA==";
    a = hauth_t_open(&s, 1, NULL);
    PGT_EQ_INT(hauth_t_check(a, "sw", &rq, now, msg, sizeof msg), 403);
    pp_http_auth_close(a);
#undef SW
}

PGT_TEST(http_auth, sources_and_bad_options)
{
    /* "*" gives the unlisted sources and the unset fields of listed ones */
    pgpipe_http_source s[2] = {
        { .name = "*", .event_type_field = "type", .window_hours = 24,
          .signature = PGPIPE_HTTP_SIG_GITHUB, .secret = "s3cret" },
        { .name = "orders", .event_type_header = "X-Event", .tolerance_s = 60 },
    };
    pp_http_auth *a = hauth_t_open(s, 2, NULL);
    const pgpipe_http_source *o = pp_http_auth_source(a, "orders");
    PGT_EQ_STR(o->name, "orders");
    PGT_EQ_STR(o->event_type_field, "type");
    PGT_EQ_STR(o->event_type_header, "X-Event");
    PGT_EQ_INT(o->window_hours, 24);
    PGT_EQ_INT(o->tolerance_s, 60);
    PGT_EQ_INT(o->signature, PGPIPE_HTTP_SIG_GITHUB);
    const pgpipe_http_source *u = pp_http_auth_source(a, "unlisted");
    PGT_EQ_STR(u->name, "*");
    PGT_EQ_INT(u->tolerance_s, 300);
    PGT_CHECK(u->event_type_header == NULL);
    pp_http_auth_close(a);
    a = hauth_t_open(NULL, 0, NULL);
    PGT_EQ_INT(pp_http_auth_source(a, "x")->window_hours, 72);
    PGT_EQ_INT(pp_http_auth_has_tokens(a), 0);
    pp_http_auth_close(a);

    struct { pgpipe_http_source s; const char *want; } bad[] = {
        { { .name = "gh", .signature = PGPIPE_HTTP_SIG_GITHUB }, "needs a secret" },
        { { .name = "sw", .signature = PGPIPE_HTTP_SIG_STANDARD, .secret = "whsec_***" },
          "not \"whsec_\" and base64" },
        { { .name = "x", .signature = 9 }, "unknown signature kind 9" },
        { { .name = "" }, "\"\" is not a source name" },
        { { .name = "a~b" }, "\"a~b\" is not a source name: a source is 1 to 64" },
        { { .name = "two words" }, "is not a source name" },
        { { .name = "a/b" }, "is not a source name" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pgpipe_http_options op;
        pgpipe_http_options_init(&op);
        op.sources = &bad[i].s;
        op.nsources = 1;
        pgpipe_error err;
        pgpipe_error_clear(&err);
        PGT_EQ_INT(pp_http_auth_open(&a, &op, NULL, &err), PGPIPE_MISUSE);
        PGT_CHECK(a == NULL);
        PGT_CONTAINS(err.message, bad[i].want);
    }
    pgpipe_http_source twice[2] = { { .name = "a" }, { .name = "a" } };
    pgpipe_http_options op;
    pgpipe_http_options_init(&op);
    op.sources = twice;
    op.nsources = 2;
    pgpipe_error err;
    PGT_EQ_INT(pp_http_auth_open(&a, &op, NULL, &err), PGPIPE_MISUSE);
    PGT_CONTAINS(err.message, "\"a\" is listed twice");
}

/* One rule for a source name, the server's path, the options and the tokens. */
PGT_TEST(http_auth, source_names)
{
    const char *good[] = { "a", "orders", "Git-Hub_2.v1", "0", "...", ".a", "..a", "a..",
                           "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234" };
    const char *bad[] = { "", "*", "a~b", "a b", "a/b", "a%20b", "é", "a:b", "a\nb", ".", "..",
                          "abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij12345" };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        PGT_EQ_INT(pgpipe_http_source_valid(good[i]), 1);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        PGT_EQ_INT(pgpipe_http_source_valid(bad[i]), 0);
    PGT_EQ_INT(pgpipe_http_source_valid(NULL), 0);
    PGT_EQ_INT(pp_http_source_ok("ab/c", 2), 1); /* counted: a path segment */
    PGT_EQ_INT(pp_http_source_ok("ab", 0), 0);
    PGT_EQ_INT(pp_http_source_ok("../x", 2), 0); /* a dot-segment, counted */
    PGT_EQ_INT(pp_http_source_ok("..x", 3), 1);
}

PGT_TEST(http_auth, trusted_proxies)
{
    pp_http_auth *a = hauth_t_open(NULL, 0, "127.0.0.1, 10.1.0.0/16,[::1],2001:db8:a0::/44,"
                                           "::ffff:192.168.7.0/120,172.16.0.0/12");
    const char *yes[] = { "127.0.0.1", "10.1.0.1", "10.1.255.255", "::1", "[::1]",
                          "2001:db8:a0::1", "2001:db8:af:ffff::9", "192.168.7.200",
                          "::ffff:127.0.0.1", "::ffff:10.1.2.3", "172.31.255.1" };
    const char *no[] = { "127.0.0.2", "10.2.0.1", "::2", "2001:db8:b0::1", "192.168.8.1",
                         "172.32.0.1", "localhost", "", "10.1.0.1:80", "garbage" };
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++)
        PGT_CHECK_MSG(pp_http_auth_trusted_proxy(a, yes[i]), "%s", yes[i]);
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        PGT_CHECK_MSG(!pp_http_auth_trusted_proxy(a, no[i]), "%s", no[i]);
    pp_http_auth_close(a);
    a = hauth_t_open(NULL, 0, "0.0.0.0/0");
    PGT_CHECK(pp_http_auth_trusted_proxy(a, "203.0.113.9"));
    PGT_CHECK(!pp_http_auth_trusted_proxy(a, "2001:db8::1"));
    pp_http_auth_close(a);
    a = hauth_t_open(NULL, 0, NULL);
    PGT_CHECK(!pp_http_auth_trusted_proxy(a, "127.0.0.1"));
    pp_http_auth_close(a);

    const char *bad[] = { "10.0.0.1/33", "proxy.example.com", "10.0.0/8", "::1/129",
                          "10.0.0.1/", "10.0.0.1/x", "::ffff:1.2.3.4/90" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char list[96];
        snprintf(list, sizeof list, "127.0.0.1,%s", bad[i]);
        pgpipe_http_options op;
        pgpipe_http_options_init(&op);
        op.trusted_proxies = list;
        pgpipe_error err;
        pgpipe_error_clear(&err);
        PGT_EQ_INT(pp_http_auth_open(&a, &op, NULL, &err), PGPIPE_MISUSE);
        char want[80];
        snprintf(want, sizeof want, "\"%s\" is not", bad[i]);
        PGT_CONTAINS(err.message, want);
    }
    pgpipe_http_options op;
    pgpipe_http_options_init(&op);
    op.trusted_proxies = "127.0.0.1,,10.0.0.1";
    pgpipe_error err;
    PGT_EQ_INT(pp_http_auth_open(&a, &op, NULL, &err), PGPIPE_MISUSE);
    PGT_CONTAINS(err.message, "empty entry");
}

/* ---- tokens, against the database ---- */

static pp_http_auth *hauth_t_open_db(PGconn *c, const char *listen, int require, int insecure,
                                     const pgpipe_http_source *src, int n)
{
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    o.listen = listen;
    o.require_tokens = require;
    o.insecure = insecure;
    o.sources = src;
    o.nsources = n;
    pp_http_auth *a = NULL;
    pgpipe_error err;
    pgpipe_error_clear(&err);
    int rc = pp_http_auth_open(&a, &o, c, &err);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "%s", err.message);
    return a;
}

static int hauth_t_bearer(pp_http_auth *a, const char *source, const char *auth, char *msg,
                          size_t size)
{
    pp_http_request rq;
    hauth_t_rq(&rq, "{\"a\":1}");
    if (auth)
        hauth_t_hdr(&rq, "Authorization", auth);
    return hauth_t_check(a, source, &rq, time(NULL), msg, size);
}

PGT_TEST(http_auth, tokens)
{
    PGconn *c = pgt_db_open();
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.http_tokens WHERE source LIKE 'hauth%' "
                        "OR label = 'hauth all'"));
    pgpipe_error err;
    char t1[PGPIPE_HTTP_TOKEN_SIZE], t2[PGPIPE_HTTP_TOKEN_SIZE], small[20], msg[600], bearer[80];
    PGT_EQ_INT(pgpipe_http_token_add(c, "hauth_a", NULL, small, sizeof small, &err), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_http_token_add(c, "", NULL, t1, sizeof t1, &err), PGPIPE_MISUSE);
    /* a source no request could name: refused, nothing stored */
    PGT_EQ_INT(pgpipe_http_token_add(c, "hauth x", NULL, t1, sizeof t1, &err), PGPIPE_MISUSE);
    PGT_CONTAINS(err.message, "\"hauth x\" is not a source name");
    PGT_EQ_INT(pgpipe_http_token_add(c, "hauth~a", NULL, t1, sizeof t1, &err), PGPIPE_MISUSE);
    PGT_EQ_INT(pgt_db_int(c, "SELECT count(*) FROM pgpipe.http_tokens WHERE source LIKE 'hauth%'"),
               0);
    PGT_EQ_INT(pgpipe_http_token_revoke(c, "hauth/a", 1, &err), PGPIPE_MISUSE);
    PGT_CONTAINS(err.message, "pgpipe_http_token_revoke: \"hauth/a\"");
    PGresult *none = NULL;
    PGT_EQ_INT(pgpipe_http_token_list(c, "", &none, &err), PGPIPE_MISUSE);
    PGT_CHECK(none == NULL);
    PGT_OK(pgpipe_http_token_add(c, "hauth_a", "ci deploys", t1, sizeof t1, &err));
    PGT_OK(pgpipe_http_token_add(c, "hauth_b", NULL, t2, sizeof t2, &err));
    PGT_EQ_INT(strlen(t1), PGPIPE_HTTP_TOKEN_SIZE - 1);
    PGT_CHECK(!strncmp(t1, "pgp_", 4));
    PGT_CHECK(strcmp(t1, t2) != 0);
    for (const char *p = t1 + 4; *p; p++)
        PGT_CHECK(isalnum((unsigned char)*p) || *p == '-' || *p == '_');

    /* only the hash is stored; the listing never shows it */
    char hash[65], q[200];
    pgpipe_sha256_hex(t1, strlen(t1), hash);
    snprintf(q, sizeof q, "SELECT count(*) FROM pgpipe.http_tokens WHERE token_sha256 = '%s' "
             "AND source = 'hauth_a' AND hint = '%s'", hash, t1 + strlen(t1) - 4);
    PGT_EQ_INT(pgt_db_int(c, q), 1);
    snprintf(q, sizeof q, "SELECT count(*) FROM pgpipe.http_tokens t WHERE t::text LIKE '%%%s%%'",
             t1 + 4);
    PGT_EQ_INT(pgt_db_int(c, q), 0);
    PGresult *r = NULL;
    PGT_OK(pgpipe_http_token_list(c, "hauth_a", &r, &err));
    PGT_EQ_INT(PQntuples(r), 1);
    PGT_EQ_INT(PQnfields(r), 6);
    PGT_EQ_STR(PQfname(r, 3), "hint");
    PGT_CHECK(!strcmp(PQgetvalue(r, 0, 3) + 3, t1 + strlen(t1) - 4));
    PGT_EQ_STR(PQgetvalue(r, 0, 2), "ci deploys");
    for (int f = 0; f < PQnfields(r); f++)
        PGT_CHECK(!strstr(PQgetvalue(r, 0, f), t1 + 8));
    long long id1 = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    PQclear(r);
    PGT_OK(pgpipe_http_token_list(c, NULL, &r, &err));
    PGT_EQ_INT(PQntuples(r), 2);
    PQclear(r);

    /* auto on loopback: tokens required for the sources that have them */
    pp_http_auth *a = hauth_t_open_db(c, "127.0.0.1:0", -1, 0, NULL, 0);
    PGT_EQ_INT(pp_http_auth_has_tokens(a), 1);
    snprintf(bearer, sizeof bearer, "Bearer %s", t1);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", bearer, msg, sizeof msg), 0);
    snprintf(bearer, sizeof bearer, "bearer   %s", t1); /* the scheme is case-insensitive */
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", bearer, msg, sizeof msg), 0);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", NULL, msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "needs a bearer token");
    {
        pp_http_request rq;
        pp_http_reply r;
        hauth_t_rq(&rq, "{}");
        memset(&r, 0, sizeof r);
        PGT_EQ_INT(pp_http_auth_check(a, "hauth_a", &rq, time(NULL), &r), 401);
        PGT_EQ_STR(r.www_authenticate, "Bearer realm=\"pgpipe\"");
        pp_http_reply_free(&r);
    }
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", "Basic dXNlcjpwYXNz", msg, sizeof msg), 401);
    PGT_CONTAINS(msg, "invalid_request");
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", "Bearer", msg, sizeof msg), 401);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", "Bearer pgp_wrong", msg, sizeof msg), 403);
    PGT_CONTAINS(msg, "invalid_token");
    PGT_CHECK(!strstr(msg, "pgp_wrong"));
    snprintf(bearer, sizeof bearer, "Bearer %s", t2); /* another source's token */
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", bearer, msg, sizeof msg), 403);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_b", bearer, msg, sizeof msg), 0);
    /* a source without tokens, on loopback, in auto: open */
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_c", NULL, msg, sizeof msg), 0);

    /* revoke; the running handle sees it after a reload */
    PGT_EQ_INT(pgpipe_http_token_revoke(c, "hauth_b", id1, &err), PGPIPE_DONE);
    PGT_CONTAINS(err.message, "token");
    PGT_OK(pgpipe_http_token_revoke(c, "hauth_a", id1, &err));
    PGT_EQ_INT(pgpipe_http_token_revoke(c, "hauth_a", id1, &err), PGPIPE_DONE);
    PGT_EQ_INT(pgpipe_http_token_revoke(c, "hauth_a", 999999999, &err), PGPIPE_DONE);
    PGT_CONTAINS(err.message, "999999999");
    snprintf(bearer, sizeof bearer, "Bearer %s", t1);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", bearer, msg, sizeof msg), 0);
    PGT_OK(pp_http_auth_reload(a, c, &err));
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", bearer, msg, sizeof msg), 403);
    PGT_OK(pgpipe_http_token_list(c, "hauth_a", &r, &err));
    PGT_CHECK(!PQgetisnull(r, 0, 5)); /* revoked_at set, the row kept */
    PQclear(r);
    /* with its last token revoked the source still needs one (auto does not
    ** open it up again) */
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_a", NULL, msg, sizeof msg), 401);
    pp_http_auth_close(a);

    /* beyond loopback in auto: every source needs a token, unless insecure */
    a = hauth_t_open_db(c, "0.0.0.0:0", -1, 0, NULL, 0);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_c", NULL, msg, sizeof msg), 401);
    pp_http_auth_close(a);
    a = hauth_t_open_db(c, "127.0.0.1:0,[::]:0", -1, 1, NULL, 0);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_c", NULL, msg, sizeof msg), 0);
    pp_http_auth_close(a);
    /* required: even on loopback; off: not checked at all */
    a = hauth_t_open_db(c, "[::1]:0", 1, 0, NULL, 0);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_c", NULL, msg, sizeof msg), 401);
    pp_http_auth_close(a);
    a = hauth_t_open_db(c, "0.0.0.0:0", 0, 1, NULL, 0);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_b", NULL, msg, sizeof msg), 0);
    pp_http_auth_close(a);

    /* a signed source: the signature is enough; a token sent must be valid */
    pgpipe_http_source gh = { .name = "hauth_b", .signature = PGPIPE_HTTP_SIG_GITHUB,
                              .secret = "It's a Secret to Everybody" };
    a = hauth_t_open_db(c, "127.0.0.1:0", 1, 0, &gh, 1);
    pp_http_request rq;
    hauth_t_rq(&rq, "Hello, World!");
    hauth_t_hdr(&rq, "X-Hub-Signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17");
    PGT_EQ_INT(hauth_t_check(a, "hauth_b", &rq, time(NULL), msg, sizeof msg), 0);
    hauth_t_hdr(&rq, "Authorization", "Bearer pgp_wrong");
    PGT_EQ_INT(hauth_t_check(a, "hauth_b", &rq, time(NULL), msg, sizeof msg), 403);
    pp_http_auth_close(a);

    /* a "*" token is good for every source */
    char t3[PGPIPE_HTTP_TOKEN_SIZE];
    PGT_OK(pgpipe_http_token_add(c, "*", "hauth all", t3, sizeof t3, &err));
    a = hauth_t_open_db(c, "127.0.0.1:0", -1, 0, NULL, 0);
    snprintf(bearer, sizeof bearer, "Bearer %s", t3);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_c", bearer, msg, sizeof msg), 0);
    PGT_EQ_INT(hauth_t_bearer(a, "hauth_c", NULL, msg, sizeof msg), 401);
    pp_http_auth_close(a);
    PQclear(PGT_EXEC(c, "DELETE FROM pgpipe.http_tokens WHERE source LIKE 'hauth%' "
                        "OR label = 'hauth all'"));
    pgt_db_close(c);
}

/* Random and cut-off signature headers: never accepted, never a crash (the
** sanitizers watch the parsing). */
PGT_TEST(http_auth, garbage_headers)
{
    pgpipe_http_source s[3] = {
        { .name = "g", .signature = PGPIPE_HTTP_SIG_GITHUB, .secret = "k" },
        { .name = "s", .signature = PGPIPE_HTTP_SIG_STRIPE, .secret = "k" },
        { .name = "w", .signature = PGPIPE_HTTP_SIG_STANDARD, .secret = "whsec_a2V5" },
    };
    pp_http_auth *a = hauth_t_open(s, 3, NULL);
    const char *seed[] = {
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        "t=1700000000,v1=15027c92e35002d657782fc1a244c16eaec1b212c960f36588b316fb6d05bd4f",
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uF",
    };
    const char *alphabet = "tv1=,. sha256x0123456789abcdef+/=-_\t";
    uint64_t rs = 12345;
    char buf[160], msg[600];
    for (int n = 0; n < 3000; n++) {
        const char *src = n % 3 == 0 ? "g" : n % 3 == 1 ? "s" : "w";
        const char *sd = seed[n % 3];
        size_t len = (size_t)(pp_rand_next(&rs) % sizeof buf);
        if (n % 2) { /* a cut-off or mutated real header */
            snprintf(buf, sizeof buf, "%s", sd);
            len = strlen(buf) ? (size_t)(pp_rand_next(&rs) % (strlen(buf) + 1)) : 0;
            buf[len] = '\0';
            if (len)
                buf[pp_rand_next(&rs) % len] = alphabet[pp_rand_next(&rs) % strlen(alphabet)];
        } else {
            for (size_t i = 0; i < len; i++)
                buf[i] = alphabet[pp_rand_next(&rs) % strlen(alphabet)];
            buf[len] = '\0';
        }
        pp_http_request rq;
        hauth_t_rq(&rq, "{\"a\":1}");
        hauth_t_hdr(&rq, "X-Hub-Signature-256", buf);
        hauth_t_hdr(&rq, "Stripe-Signature", buf);
        hauth_t_hdr(&rq, "webhook-id", "msg_1");
        hauth_t_hdr(&rq, "webhook-timestamp", "1700000000");
        hauth_t_hdr(&rq, "webhook-signature", buf);
        int st = hauth_t_check(a, src, &rq, 1700000000, msg, sizeof msg);
        PGT_CHECK_MSG(st == 401 || st == 403, "%s %s: %d", src, buf, st);
    }
    pp_http_auth_close(a);
}
