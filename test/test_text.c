/* Tests of the text layer (src/base/text.c): escapes, UTF-8, UUIDs, quoting,
** SHA-256. */

/* pp_buf contents as a NUL-terminated string (the tests own b). */
static const char *text_t_str(pp_buf *b)
{
    if (pp_buf_putc(b, '\0') != PGPIPE_OK)
        return "(out of memory)";
    b->len--;
    return b->data;
}

PGT_TEST(text, copy_escape)
{
    pp_buf b = { 0 };
    PGT_OK(pp_copy_escape(&b, "a\tb\nc\rd\\e", 9));
    PGT_EQ_STR(text_t_str(&b), "a\\tb\\nc\\rd\\\\e");
    /* other control bytes, quotes and UTF-8 stay as they are */
    b.len = 0;
    PGT_OK(pp_copy_escape(&b, "\"'\x01\x1f\xc3\xa9", 7));
    PGT_EQ_MEM(b.data, b.len, "\"'\x01\x1f\xc3\xa9", 7);
    /* empty and NULL */
    b.len = 0;
    PGT_OK(pp_copy_escape(&b, NULL, 0));
    PGT_EQ_INT(b.len, 0);
    PGT_OK(pp_copy_field(&b, NULL, 0));
    PGT_OK(pp_copy_field(&b, "", 0));
    PGT_EQ_STR(text_t_str(&b), "\\N");
    /* long text, escapes at every position of the 8-byte words, and a run of
    ** escapes only (the buffer grows while escaping) */
    char in[300], want[600];
    for (int shift = 0; shift < 9; shift++) {
        size_t w = 0;
        for (int i = 0; i < 300; i++) {
            in[i] = (char)((i + shift) % 9 == 0 ? "\t\n\r\\"[i % 4] : 'a' + i % 26);
            if ((i + shift) % 9 == 0) {
                want[w++] = '\\';
                want[w++] = "tnr\\"[i % 4];
            } else {
                want[w++] = in[i];
            }
        }
        pp_buf c = { 0 };
        PGT_OK(pp_copy_escape(&c, in, sizeof in));
        PGT_EQ_MEM(c.data, c.len, want, w);
        pp_buf_free(&c);
    }
    memset(in, '\\', sizeof in);
    b.len = 0;
    PGT_OK(pp_copy_escape(&b, in, sizeof in));
    PGT_EQ_INT(b.len, 600);
    for (size_t i = 0; i < b.len; i++)
        PGT_CHECK(b.data[i] == '\\');
    pp_buf_free(&b);
}

/* pp_jsonb_order(in) as a string */
static const char *text_t_jb(pp_buf *b, const char *in)
{
    b->len = 0;
    if (pp_jsonb_order(b, in, strlen(in)) != PGPIPE_OK)
        return "(out of memory)";
    return text_t_str(b);
}

PGT_TEST(text, jsonb_order)
{
    pp_buf b = { 0 };
    /* shorter keys first, then bytewise (jsonb's order); nested objects and
    ** objects inside arrays too; whitespace between tokens dropped */
    PGT_EQ_STR(text_t_jb(&b, "{\"b\":1,\"a\":2}"), "{\"a\":2,\"b\":1}");
    PGT_EQ_STR(text_t_jb(&b, "{\"aa\":1,\"b\":2}"), "{\"b\":2,\"aa\":1}");
    PGT_EQ_STR(text_t_jb(&b, " { \"z\" : { \"yy\" : 1 , \"x\" : [ { \"d\" : 1 , \"c\" : 2 } , 3 ] } ,\n"
                             "\t\"a\" : 0 } \r\n"),
               "{\"a\":0,\"z\":{\"x\":[{\"c\":2,\"d\":1},3],\"yy\":1}}");
    /* of equal keys the order stays, so the last still wins in jsonb */
    PGT_EQ_STR(text_t_jb(&b, "{\"b\":1,\"a\":1,\"b\":2}"), "{\"a\":1,\"b\":1,\"b\":2}");
    /* strings holding braces, quotes, commas and colons are values, not structure */
    PGT_EQ_STR(text_t_jb(&b, "{\"b\":\"}\\\",{:\",\"a\":\"x]\"}"), "{\"a\":\"x]\",\"b\":\"}\\\",{:\"}");
    /* bytewise: UTF-8 keys by their bytes, "é" (2 bytes) after "z" */
    PGT_EQ_STR(text_t_jb(&b, "{\"\xc3\xa9\":1,\"z\":2,\"\":3}"), "{\"\":3,\"z\":2,\"\xc3\xa9\":1}");
    /* empty containers, scalars, numbers with exponents */
    PGT_EQ_STR(text_t_jb(&b, "{ }"), "{}");
    PGT_EQ_STR(text_t_jb(&b, "[ ]"), "[]");
    PGT_EQ_STR(text_t_jb(&b, "{\"n\":-1.5e+3,\"m\":[true,false,null]}"),
               "{\"m\":[true,false,null],\"n\":-1.5e+3}");
    PGT_EQ_STR(text_t_jb(&b, " 12 "), "12");
    /* an object with a key that holds an escape (its bytes are not the
    ** key's) keeps its order; text that is not JSON is copied as it is */
    PGT_EQ_STR(text_t_jb(&b, "{\"b\\n\":1, \"a\":2}"), "{\"b\\n\":1,\"a\":2}");
    PGT_EQ_STR(text_t_jb(&b, "{\"c\":{\"b\\u0041\":1,\"a\":2},\"a\":0}"),
               "{\"a\":0,\"c\":{\"b\\u0041\":1,\"a\":2}}");
    const char *bad[] = { "{\"a\":1,", "{\"b\":1 \"a\":2}", "{\"b\":1}}", "[1,,2]", "{\"a\"}",
                          "{\"a\":}", "{1:2}", "[1 2]", "\"abc", "{\"a\":\"\\", "" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        PGT_EQ_STR(text_t_jb(&b, bad[i]), bad[i]);
    /* more members than it sorts: as it is */
    char big[1024];
    size_t w = 0;
    big[w++] = '{';
    for (int i = 40; i > 0; i--)
        w += (size_t)snprintf(big + w, sizeof big - w, "%s\"k%02d\":%d", i == 40 ? "" : ",", i, i);
    big[w++] = '}';
    big[w] = '\0';
    PGT_EQ_STR(text_t_jb(&b, big), big);
    /* deeper than it sorts: the deep part as it is, the levels above sorted */
    char deep[400] = "", want[400] = "";
    for (int i = 0; i < 20; i++) {
        strcat(deep, "{\"b\":1,\"a\":");
        strcat(want, i < 16 ? "{\"a\":" : "{\"b\":1,\"a\":");
    }
    strcat(deep, "0");
    strcat(want, "0");
    for (int i = 19; i >= 0; i--) {
        strcat(deep, "}");
        strcat(want, i < 16 ? ",\"b\":1}" : "}");
    }
    PGT_EQ_STR(text_t_jb(&b, deep), want);
    /* COPY-escaped */
    pp_buf s[2] = { { 0 }, { 0 } };
    b.len = 0;
    const char *in = "{\"t\":\"a\\tb\",\n\"a\":\"\\\\\"}";
    PGT_OK(pp_copy_jsonb(&b, s, in, strlen(in)));
    PGT_EQ_STR(text_t_str(&b), "{\"a\":\"\\\\\\\\\",\"t\":\"a\\\\tb\"}");
    pp_buf_free(&s[0]);
    pp_buf_free(&s[1]);
    pp_buf_free(&b);
}

/* the word-at-a-time paths of pp_jsonb_order (16 bytes with SSE2, 8
** elsewhere): quotes, escapes and keys at every offset of a word, keys that
** sort on their first bytes and keys that tie there, objects copied from the
** input in order and objects rewritten after whitespace was dropped */
PGT_TEST(text, jsonb_order_words)
{
    pp_buf b = { 0 };
    char in[256], want[256], body[64];
    /* a value whose quote, or escaped quote, falls at each offset; short
    ** texts end inside the first word, long ones (padded) do not */
    for (int len = 0; len < 40; len++) {
        for (int pad = 0; pad < 2; pad++) {
            for (int q = -1; q < len - 1; q++) {
                for (int i = 0; i < len; i++)
                    body[i] = (char)('a' + i % 26);
                if (q >= 0) {
                    body[q] = '\\';
                    body[q + 1] = '"';
                }
                body[len] = '\0';
                const char *tail = pad ? ",\"zzzzzzzzzzzzzzzzzzzzzzzz\":[1,2,3,4,5,6,7,8,9,10,11,12]" : "";
                snprintf(in, sizeof in, "{\"b\":\"%s\",\"a\":1%s}", body, tail);
                snprintf(want, sizeof want, "{\"a\":1,\"b\":\"%s\"%s}", body, tail);
                PGT_EQ_STR(text_t_jb(&b, in), want);
            }
        }
    }
    /* keys of each length (one spans the word boundary), behind a prefix
    ** that moves them across it; the shorter key first */
    for (int len = 1; len < 40; len++) {
        for (int shift = 0; shift < 17; shift++) {
            char key[48];
            memset(key, 'k', (size_t)len);
            key[len] = '\0';
            snprintf(in, sizeof in, "[\"%.*s\",{\"%s\":1,\"%.*s\":2}]", shift, "................", key,
                     len - 1 > 0 ? len - 1 : 0, "jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj");
            if (len == 1)
                snprintf(want, sizeof want, "[\"%.*s\",{\"\":2,\"k\":1}]", shift, "................");
            else
                snprintf(want, sizeof want, "[\"%.*s\",{\"%.*s\":2,\"%s\":1}]", shift, "................",
                         len - 1, "jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj", key);
            PGT_EQ_STR(text_t_jb(&b, in), want);
        }
    }
    /* keys of one length that share their first bytes: the order is the
    ** bytes' beyond them; equal keys keep their order */
    PGT_EQ_STR(text_t_jb(&b, "{\"abcdeZ\":1,\"abcdeA\":2}"), "{\"abcdeA\":2,\"abcdeZ\":1}");
    PGT_EQ_STR(text_t_jb(&b, "{\"abcdeA\":1,\"abcdeZ\":2}"), "{\"abcdeA\":1,\"abcdeZ\":2}");
    PGT_EQ_STR(text_t_jb(&b, "{\"user_ip\":1,\"user_id\":2,\"user_id\":3,\"a\":4}"),
               "{\"a\":4,\"user_id\":2,\"user_id\":3,\"user_ip\":1}");
    PGT_EQ_STR(text_t_jb(&b, "{\"abcdefghijkZ\":1,\"b\":0,\"abcdefghijkA\":2,\"abcdeZ\":3,\"abcde\":4}"),
               "{\"b\":0,\"abcde\":4,\"abcdeZ\":3,\"abcdefghijkA\":2,\"abcdefghijkZ\":1}");
    PGT_EQ_STR(text_t_jb(&b, "{\"abcd\\u0041\":1,\"abcdeA\":2}"), "{\"abcd\\u0041\":1,\"abcdeA\":2}");
    /* bytes above 0x7F sort after ASCII, a zero length key first */
    PGT_EQ_STR(text_t_jb(&b, "{\"\xff\":1,\"a\":2,\"\":3}"), "{\"\":3,\"a\":2,\"\xff\":1}");
    /* in order but for the last member; in order but for one in the middle */
    PGT_EQ_STR(text_t_jb(&b, "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"0\":7}"),
               "{\"0\":7,\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6}");
    PGT_EQ_STR(text_t_jb(&b, "{\"a\":1,\"c\":3,\"d\":{\"y\":1,\"x\":[]},\"b\":2}"),
               "{\"a\":1,\"b\":2,\"c\":3,\"d\":{\"x\":[],\"y\":1}}");
    /* an object put in order inside one put in order, with and without
    ** whitespace dropped inside either, far from and at the end of the text */
    const char *pad = ",\"pppppppppppppppppppppppppppppppppppppppppp\"";
    for (int ws = 0; ws < 4; ws++) {
        for (int p = 0; p < 2; p++) {
            snprintf(in, sizeof in, "[{\"bb\":{\"d\":%s1,\"c\":2},\"a\":%s3}%s]", ws & 1 ? " " : "",
                     ws & 2 ? "\n" : "", p ? pad : "");
            snprintf(want, sizeof want, "[{\"a\":3,\"bb\":{\"c\":2,\"d\":1}}%s]", p ? pad : "");
            PGT_EQ_STR(text_t_jb(&b, in), want);
        }
    }
    /* numbers and literals of each length up to past a word, then each byte
    ** that ends them */
    for (int len = 1; len < 20; len++) {
        const char *num = "1234567890.12345e+10";
        static const char *const ends[] = { ",", " ,", "\n,", "" };
        for (int k = 0; k < 4; k++) {
            if (!*ends[k])
                snprintf(in, sizeof in, "{\"a\":0,\"c\":-%.*s}", len, num);
            else
                snprintf(in, sizeof in, "{\"c\":-%.*s%s\"a\":0}", len, num, ends[k]);
            snprintf(want, sizeof want, "{\"a\":0,\"c\":-%.*s}", len, num);
            PGT_EQ_STR(text_t_jb(&b, in), want);
        }
        snprintf(in, sizeof in, "[-%.*s]", len, num);
        PGT_EQ_STR(text_t_jb(&b, in), in);
    }
    pp_buf_free(&b);
}

PGT_TEST(text, json_escape)
{
    char out[128];
    size_t n = pp_json_escape(out, sizeof out, "a\"b\\c\b\f\n\r\t\x01\x1f\x7f\xc3\xa9/", 16, 0);
    PGT_EQ_MEM(out, n, "a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\xc3\xa9/", 33);
    /* PP_JSON_COPY doubles every backslash the escape writes */
    n = pp_json_escape(out, sizeof out, "\"\\\n\x02", 4, PP_JSON_COPY);
    PGT_EQ_MEM(out, n, "\\\\\"\\\\\\\\\\\\n\\\\u0002", 17);
    /* the length is the full one when the output is cut; nothing is written
    ** past cap */
    memset(out, '#', sizeof out);
    n = pp_json_escape(out, 5, "ab\"cd\"ef", 8, 0);
    PGT_EQ_INT(n, 10);
    PGT_EQ_MEM(out, 6, "ab\\\"c#", 6);
    PGT_EQ_INT(pp_json_escape(NULL, 0, "\x01", 1, 0), 6);
    PGT_EQ_INT(pp_json_escape(NULL, 0, NULL, 0, 0), 0);

    /* as a literal in a buffer, growing past the first reserve */
    pp_buf b = { 0 };
    char ctl[40];
    for (int i = 0; i < 40; i++)
        ctl[i] = (char)(i % 3 ? 'x' : 1);
    PGT_OK(pp_json_str(&b, ctl, sizeof ctl, 0));
    PGT_EQ_INT(b.len, 2 + 26 + 14 * 6);
    PGT_CHECK(b.data[0] == '"' && b.data[b.len - 1] == '"');
    PGT_CHECK(memcmp(b.data + 1, "\\u0001xx\\u0001", 14) == 0);
    pp_buf_free(&b);

    /* the public form, snprintf-like */
    PGT_EQ_INT(pgpipe_quote_json(out, sizeof out, "tab\there", 8), 11);
    PGT_EQ_STR(out, "\"tab\\there\"");
    PGT_EQ_INT(pgpipe_quote_json(NULL, 0, "x\"", 2), 5);
    PGT_EQ_INT(pgpipe_quote_json(out, 4, "abcdef", 6), 8);
    PGT_EQ_STR(out, "\"ab");
    PGT_EQ_INT(pgpipe_quote_json(out, sizeof out, NULL, 0), 2);
    PGT_EQ_STR(out, "\"\"");
}

/* 1 when the whole of s is valid UTF-8 without NUL. */
static int text_t_utf8(const char *s, size_t n)
{
    return pp_utf8_text_prefix((const unsigned char *)s, n) == n;
}

PGT_TEST(text, utf8)
{
    PGT_CHECK(text_t_utf8("", 0));
    PGT_CHECK(text_t_utf8("plain ascii text, longer than a word", 36));
    PGT_CHECK(text_t_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\xed\x9f\xbf", 16));
    /* overlongs */
    PGT_CHECK(!text_t_utf8("\xc0\xaf", 2));
    PGT_CHECK(!text_t_utf8("\xc1\xbf", 2));
    PGT_CHECK(!text_t_utf8("\xe0\x80\xaf", 3));
    PGT_CHECK(!text_t_utf8("\xf0\x80\x80\xaf", 4));
    /* surrogates U+D800 and U+DFFF */
    PGT_CHECK(!text_t_utf8("\xed\xa0\x80", 3));
    PGT_CHECK(!text_t_utf8("\xed\xbf\xbf", 3));
    /* above U+10FFFF, bytes never in UTF-8, lone continuation */
    PGT_CHECK(!text_t_utf8("\xf4\x90\x80\x80", 4));
    PGT_CHECK(!text_t_utf8("\xf5\x80\x80\x80", 4));
    PGT_CHECK(!text_t_utf8("\xff", 1));
    PGT_CHECK(!text_t_utf8("\x80", 1));
    /* truncated sequences: at the end, and cut by an ASCII byte */
    PGT_CHECK(!text_t_utf8("ab\xe2\x82", 4));
    PGT_CHECK(!text_t_utf8("\xf0\x9f\x98", 3));
    PGT_CHECK(!text_t_utf8("\xc3x", 2));
    /* NUL is not text */
    PGT_CHECK(!text_t_utf8("abc\0defghijk", 12));
    /* the prefix ends at the first bad byte, also after a clean word */
    PGT_EQ_INT(pp_utf8_text_prefix((const unsigned char *)"abcdefgh\xc3\xa9z\xed\xa0\x80", 14), 11);
    PGT_EQ_INT(pp_utf8_text_prefix((const unsigned char *)"abcdefghij\0", 11), 10);

    /* the reasons */
    size_t len = 9;
    PGT_CHECK(pp_utf8_problem((const unsigned char *)"\xe2\x82\xac", 3, &len) == NULL);
    PGT_EQ_INT(len, 3);
    PGT_CONTAINS(pp_utf8_problem((const unsigned char *)"\xc0\x80", 2, &len), "overlong 2-byte");
    PGT_EQ_INT(len, 0);
    PGT_CONTAINS(pp_utf8_problem((const unsigned char *)"\xed\xa0\x80", 3, &len), "surrogate");
    PGT_CONTAINS(pp_utf8_problem((const unsigned char *)"\xe2\x82", 2, &len), "truncated");
    PGT_CONTAINS(pp_utf8_problem((const unsigned char *)"\xbf", 1, &len), "continuation");
}

PGT_TEST(text, quote_ident)
{
    pp_buf b = { 0 };
    PGT_OK(pp_quote_ident(&b, "My \"odd\" name", 13));
    PGT_EQ_STR(text_t_str(&b), "\"My \"\"odd\"\" name\"");
    b.len = 0;
    PGT_OK(pp_quote_ident(&b, "", 0));
    PGT_EQ_STR(text_t_str(&b), "\"\"");

    /* dotted names: each part quoted, quoted parts kept, dots in them too */
    struct { const char *in, *out; int rc; } cases[] = {
        { "events", "\"events\"", PGPIPE_OK },
        { "app.events", "\"app\".\"events\"", PGPIPE_OK },
        { "a.b.c", "\"a\".\"b\".\"c\"", PGPIPE_OK },
        { "\"My.Schema\".t", "\"My.Schema\".\"t\"", PGPIPE_OK },
        { "s.\"x\"\"y\"", "\"s\".\"x\"\"y\"", PGPIPE_OK },
        { "we\"ird.t", "\"we\"\"ird\".\"t\"", PGPIPE_OK },
        { "\"a\"b", NULL, PGPIPE_MISUSE },
        { "", NULL, PGPIPE_MISUSE },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        b.len = 0;
        PGT_EQ_INT(pp_quote_path(&b, cases[i].in), cases[i].rc);
        if (cases[i].out)
            PGT_EQ_STR(text_t_str(&b), cases[i].out);
    }
    pp_buf_free(&b);

    /* the public form: split at the first dot when qualified */
    char out[64];
    PGT_EQ_INT(pgpipe_quote_ident(out, sizeof out, "analytics.daily", 1), 19);
    PGT_EQ_STR(out, "\"analytics\".\"daily\"");
    PGT_EQ_INT(pgpipe_quote_ident(out, sizeof out, "analytics.daily", 0), 17);
    PGT_EQ_STR(out, "\"analytics.daily\"");
    PGT_EQ_INT(pgpipe_quote_ident(out, sizeof out, "a.b.c", 1), 9);
    PGT_EQ_STR(out, "\"a\".\"b.c\"");
    PGT_EQ_INT(pgpipe_quote_ident(out, sizeof out, "x\"y", 0), 6);
    PGT_EQ_STR(out, "\"x\"\"y\"");
    PGT_EQ_INT(pgpipe_quote_ident(out, 3, "abc", 0), 5);
    PGT_EQ_STR(out, "\"a");
    PGT_EQ_INT(pgpipe_quote_ident(NULL, 0, "a.b", 1), 7);
}

PGT_TEST(text, sha256_vectors)
{
    char out[65];
    /* FIPS 180-2, appendix B */
    pgpipe_sha256_hex("abc", 3, out);
    PGT_EQ_STR(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    pgpipe_sha256_hex("", 0, out);
    PGT_EQ_STR(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    pgpipe_sha256_hex(m448, strlen(m448), out);
    PGT_EQ_STR(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* streaming in odd pieces gives the same digest; one million 'a' */
    pp_sha256 s;
    pp_sha256_init(&s);
    for (size_t i = 0; i < strlen(m448); i += 7)
        pp_sha256_update(&s, m448 + i, strlen(m448) - i < 7 ? strlen(m448) - i : 7);
    pp_sha256_hex(&s, out);
    PGT_EQ_STR(out, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    char a[1000];
    memset(a, 'a', sizeof a);
    pp_sha256_init(&s);
    for (int i = 0; i < 1000; i++)
        pp_sha256_update(&s, a, sizeof a);
    pp_sha256_hex(&s, out);
    PGT_EQ_STR(out, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

/* 1 when u is 8-4-4-4-12 lowercase hex digits. */
static int text_t_uuid_shape(const char *u)
{
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (u[i] != '-')
                return 0;
        } else if (!strchr("0123456789abcdef", u[i]) || !u[i]) {
            return 0;
        }
    }
    return u[36] == '\0';
}

PGT_TEST(text, uuid_v4)
{
    char u[37], prev[37] = "";
    for (int i = 0; i < 1000; i++) {
        PGT_OK(pp_uuid_v4(u));
        PGT_CHECK(text_t_uuid_shape(u));
        PGT_CHECK(u[14] == '4');                   /* version */
        PGT_CHECK(strchr("89ab", u[19]) != NULL);  /* variant 10xx */
        PGT_CHECK(strcmp(u, prev) != 0);
        memcpy(prev, u, sizeof u);
    }
}

PGT_TEST(text, uuid_v7_ordered)
{
    enum { N = 10000 };
    char (*ids)[37] = pp_malloc(N * sizeof *ids);
    PGT_CHECK(ids != NULL);
    if (!ids)
        return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned long long ms0 = (unsigned long long)ts.tv_sec * 1000u + (unsigned long long)ts.tv_nsec / 1000000u;
    for (int i = 0; i < N; i++)
        PGT_OK(pp_uuid_v7(ids[i]));
    int ordered = 1, shaped = 1, bits = 1;
    for (int i = 0; i < N; i++) {
        shaped &= text_t_uuid_shape(ids[i]);
        bits &= ids[i][14] == '7' && strchr("89ab", ids[i][19]) != NULL;
        if (i)
            ordered &= strcmp(ids[i - 1], ids[i]) < 0;
    }
    PGT_CHECK(shaped);
    PGT_CHECK(bits);
    PGT_CHECK(ordered); /* strictly increasing, so also all different */
    /* the first 48 bits are the time in ms (a day's slack for clock steps) */
    char hex[13];
    memcpy(hex, ids[0], 8);
    memcpy(hex + 8, ids[0] + 9, 4);
    hex[12] = '\0';
    unsigned long long t = strtoull(hex, NULL, 16);
    PGT_CHECK(t + 86400000ull >= ms0 && t <= ms0 + 86400000ull);
    pp_free(ids);
}

PGT_TEST(text, hash_and_rand)
{
    /* FNV-1a test vectors */
    PGT_CHECK(pp_hash64("") == 0xcbf29ce484222325ull);
    PGT_CHECK(pp_hash64("a") == 0xaf63dc4c8601ec8cull);
    PGT_CHECK(pp_hash64("foobar") == 0x85944171f73967e8ull);
    uint64_t s = 0, t = 0;
    PGT_CHECK(pp_rand_next(&s) == pp_rand_next(&t)); /* deterministic */
    PGT_CHECK(pp_rand_next(&s) != pp_rand_next(&s));
    PGT_CHECK(pp_rand_seed() != 0);
}

PGT_TEST(text, array_elem)
{
    pp_buf b = { 0 };
    PGT_OK(pp_array_elem(&b, "a\"b\\c,d}", 8));
    PGT_EQ_STR(text_t_str(&b), "\"a\\\"b\\\\c,d}\"");
    b.len = 0;
    PGT_OK(pp_array_elem(&b, "", 0));
    PGT_EQ_STR(text_t_str(&b), "\"\"");
    pp_buf_free(&b);
}

/* A forked child never hands out the bytes its parent hands out next: the
** child drops the buffer it inherited (pthread_atfork), with no getpid() per
** draw. And a fork while another thread draws leaves the child a usable
** lock (the handlers hold it across the fork). */
static atomic_int text_t_stop;

static void *text_t_drawer(void *arg)
{
    (void)arg;
    char u[37];
    while (!text_t_stop)
        if (pp_uuid_v4(u) != PGPIPE_OK)
            break;
    return NULL;
}

PGT_TEST(text, random_after_fork)
{
    unsigned char warm[8], mine[32], theirs[32];
    PGT_OK(pp_random_bytes(warm, sizeof warm)); /* the buffer holds unread bytes now */
    int fds[2];
    PGT_CHECK(pipe(fds) == 0);
    pid_t pid = fork();
    PGT_CHECK(pid >= 0);
    if (pid == 0) {
        unsigned char b[32];
        alarm(10);
        int ok = pp_random_bytes(b, sizeof b) == PGPIPE_OK &&
                 write(fds[1], b, sizeof b) == (ssize_t)sizeof b;
        _exit(ok ? 0 : 1);
    }
    close(fds[1]);
    PGT_OK(pp_random_bytes(mine, sizeof mine));
    size_t got = 0;
    while (got < sizeof theirs) {
        ssize_t n = read(fds[0], theirs + got, sizeof theirs - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fds[0]);
    int st = 0;
    PGT_CHECK(waitpid(pid, &st, 0) == pid);
    PGT_CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    PGT_EQ_INT(got, sizeof theirs);
    PGT_CHECK(memcmp(mine, theirs, sizeof mine) != 0);

    /* forks while another thread draws: every child draws and exits */
    pthread_t th;
    text_t_stop = 0;
    PGT_CHECK(pthread_create(&th, NULL, text_t_drawer, NULL) == 0);
    int bad = 0;
    for (int i = 0; i < 30; i++) {
        pid_t c = fork();
        if (c == 0) {
            char u[37];
            alarm(10); /* a child stuck on the lock dies of SIGALRM */
            _exit(pp_uuid_v4(u) == PGPIPE_OK ? 0 : 1);
        }
        if (c < 0 || waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            bad++;
    }
    text_t_stop = 1;
    pthread_join(th, NULL);
    PGT_EQ_INT(bad, 0);
}

/* The COPY row writer (src/base/copyrow.c): the same row in text and in
** binary, byte for byte; uuids in and out of their 16 bytes. */
PGT_TEST(text, copy_row_writer)
{
    static const char id[] = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
    unsigned char bin[16];
    PGT_EQ_INT(pp_uuid_bin(id, bin), 0);
    PGT_EQ_INT(bin[0], 0x01);
    PGT_EQ_INT(bin[15], 0x5b);
    PGT_EQ_INT(bin[6], 0x7e);
    PGT_EQ_INT(pp_uuid_bin("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B", bin), 0); /* upper case */
    PGT_EQ_INT(bin[1], 0x90);
    PGT_EQ_INT(pp_uuid_bin("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g", bin), -1);
    PGT_EQ_INT(pp_uuid_bin("0190a1b2c3d4-7e5f-8a9b-0c1d2e3f4a5b-", bin), -1);
    PGT_EQ_INT(pp_uuid_bin("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5\0", bin), -1);
    /* (a size build writes COPY text only, the JSON as it came) */
    for (int binary = 0; binary < 2 - PGPIPE_SMALL; binary++) {
        pp_copy_w w = { .binary = binary };
        pp_buf b = { 0 }, js[2] = { { 0 }, { 0 } };
        PGT_OK(pp_copy_row_begin(&w, &b, 4));
        PGT_OK(pp_copy_text_field(&w, &b, 0, "a\tb\\", 4));
        PGT_OK(pp_copy_field_begin(&w, &b, 1));
        PGT_OK(pp_copy_put_null(&w, &b));
        pp_copy_field_end(&w, &b);
        PGT_OK(pp_copy_field_begin(&w, &b, 2));
        PGT_OK(pp_copy_put_jsonb(&w, &b, js, "{\"bb\":\"x\\ty\",\"a\":1}", 19));
        pp_copy_field_end(&w, &b);
        PGT_OK(pp_copy_field_begin(&w, &b, 3));
        PGT_OK(pp_copy_put_uuid(&w, &b, id, bin));
        pp_copy_field_end(&w, &b);
        PGT_OK(pp_copy_row_end(&w, &b));
        if (!binary) {
            PGT_EQ_STR(text_t_str(&b), PGPIPE_SMALL
                       ? "a\\tb\\\\\t\\N\t{\"bb\":\"x\\\\ty\",\"a\":1}\t"
                         "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n"
                       : "a\\tb\\\\\t\\N\t{\"a\":1,\"bb\":\"x\\\\ty\"}\t"
                         "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b\n");
        } else {
            static const char want[] =
                "\0\4" "\0\0\0\4a\tb\\" "\xff\xff\xff\xff"
                "\0\0\0\x14\1{\"a\":1,\"bb\":\"x\\ty\"}" "\0\0\0\x10";
            PGT_EQ_INT((long long)b.len, (long long)(sizeof want - 1 + 16));
            PGT_CHECK(memcmp(b.data, want, sizeof want - 1) == 0);
            PGT_CHECK(memcmp(b.data + sizeof want - 1, bin, 16) == 0);
        }
        pp_buf_free(&b);
        pp_buf_free(&js[0]);
        pp_buf_free(&js[1]);
    }
    PGT_EQ_INT(PP_COPY_BIN_HEADER_LEN, 19);
    PGT_EQ_INT((long long)sizeof PP_COPY_BIN_HEADER - 1, PP_COPY_BIN_HEADER_LEN);
    PGT_CHECK(memcmp(PP_COPY_BIN_HEADER, "PGCOPY\n\377\r\n\0\0\0\0\0\0\0\0\0", 19) == 0);
}
