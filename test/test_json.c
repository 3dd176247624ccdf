/* Tests of the JSON parser, writer, accessors and NDJSON reader (src/parse/json.c).
** Every accepted input in this file goes through json_t_accept, which also
** checks validate == parse and parse -> write -> parse -> equal. */

static pgpipe_json_doc *json_t_doc(void)
{
    pgpipe_json_doc *d = NULL;
    PGT_OK(pgpipe_json_doc_open(&d));
    return d;
}

/* Parse must succeed; validate agrees; write -> reparse gives an equal
** document and writing that again gives the same text. Returns the doc. */
static pgpipe_json_doc *json_t_accept_n(const char *s, size_t n)
{
    pgpipe_json_doc *d = json_t_doc(), *d2 = json_t_doc();
    int rc = pgpipe_json_parse(d, s, n);
    PGT_CHECK_MSG(rc == PGPIPE_OK, "rejected %.*s: %s", (int)(n > 200 ? 200 : n), s,
                  pgpipe_errmsg(d));
    PGT_OK(pgpipe_json_validate(s, n, NULL));
    const pgpipe_json_val *root = pgpipe_json_root(d);
    PGT_CHECK(root != NULL);
    char *text = NULL, *text2 = NULL;
    size_t len = 0, len2 = 0;
    PGT_OK(pgpipe_json_write(root, &text, &len));
    PGT_EQ_INT(strlen(text) <= len, 1);
    PGT_OK(pgpipe_json_parse(d2, text, len));
    PGT_CHECK_MSG(pgpipe_json_equal(root, pgpipe_json_root(d2)), "not equal after write: %s", text);
    PGT_OK(pgpipe_json_write(pgpipe_json_root(d2), &text2, &len2));
    PGT_EQ_MEM(text, len, text2, len2);
    pgpipe_free(text);
    pgpipe_free(text2);
    pgpipe_json_doc_close(d2);
    return d;
}

static void json_t_accept(const char *s)
{
    pgpipe_json_doc_close(json_t_accept_n(s, strlen(s)));
}

/* Parse and validate must both fail with code and a message containing
** want; line/column checked when line > 0. */
static void json_t_reject_n(const char *s, size_t n, int code, const char *want, long long line,
                            long long col)
{
    pgpipe_json_doc *d = json_t_doc();
    int rc = pgpipe_json_parse(d, s, n);
    PGT_CHECK_MSG(rc == code, "%.*s: got %d (%s), wanted %d", (int)(n > 200 ? 200 : n), s, rc,
                  pgpipe_errmsg(d), code);
    PGT_CHECK(pgpipe_json_root(d) == NULL);
    const pgpipe_error *e = pgpipe_errinfo(d);
    PGT_EQ_INT(e->code, code);
    if (want)
        PGT_CONTAINS(e->message, want);
    PGT_EQ_STR(e->source, "<buffer>");
    if (line > 0) {
        PGT_EQ_INT(e->line, line);
        PGT_EQ_INT(e->column, col);
    }
    pgpipe_error ve;
    PGT_EQ_INT(pgpipe_json_validate(s, n, &ve), code);
    PGT_EQ_STR(ve.message, e->message);
    PGT_EQ_INT(ve.offset, e->offset);
    PGT_EQ_INT(pgpipe_json_validate(s, n, NULL), code);
    pgpipe_json_doc_close(d);
}

static void json_t_reject(const char *s, const char *want)
{
    json_t_reject_n(s, strlen(s), PGPIPE_PARSE, want, 0, 0);
}

PGT_TEST(json, accept_values)
{
    const char *ok[] = {
        "null", "true", "false", "0", "\"\"", "[]", "{}", "[null,true,false]",
        "{\"a\":1,\"b\":[1,2,{\"c\":null}],\"d\":{}}", "[[[[[]]]]]", "[{},[],{\"x\":[]}]",
        "{\"a\":1,\"a\":2}", "  \t\r\n[ 1 , 2 ]\n\t ", "\"x\"",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        json_t_accept(ok[i]);
}

PGT_TEST(json, numbers_accept_and_reject)
{
    const char *ok[] = {
        "0", "-0", "1", "-1", "10", "0.5", "-0.0", "1e5", "1E5", "1e+5", "1e-5", "1.5E-10",
        "123456789012345678901234567890", "1e400", "-1e400", "1e-400", "0e0", "0E-0",
        "9223372036854775807", "-9223372036854775808", "9223372036854775808",
        "2.2250738585072011e-308", "4.9e-324", "[1,-2,3.25,4e2]", "1.7976931348623157e308",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        json_t_accept(ok[i]);
    json_t_reject("01", "leading zeros");
    json_t_reject("-01", "leading zeros");
    json_t_reject("00", "leading zeros");
    json_t_reject("+1", "expected a value");
    json_t_reject(".5", "expected a value");
    json_t_reject("1.", "digit after the decimal point");
    json_t_reject("1.e5", "digit after the decimal point");
    json_t_reject("1e", "digit in the exponent");
    json_t_reject("1e+", "digit in the exponent");
    json_t_reject("-", "digit after '-'");
    json_t_reject("-a", "digit after '-'");
    json_t_reject("0x10", "unexpected text after the JSON value");
    json_t_reject("NaN", "expected a value");
    json_t_reject("Infinity", "expected a value");
    json_t_reject("-Infinity", "digit after '-'");
    json_t_reject("1 2", "unexpected text after the JSON value");
    json_t_reject("[1.0e]", "digit in the exponent");
    json_t_reject("[01]", "leading zeros");
}

PGT_TEST(json, number_conversions)
{
    pgpipe_json_doc *d = json_t_doc();
    int64_t i;
    double x;
    size_t n;
    PGT_OK(pgpipe_json_parse(d, "9223372036854775807", 19));
    PGT_OK(pgpipe_json_get_int64(pgpipe_json_root(d), &i));
    PGT_CHECK(i == INT64_MAX);
    PGT_OK(pgpipe_json_parse(d, "-9223372036854775808", 20));
    PGT_OK(pgpipe_json_get_int64(pgpipe_json_root(d), &i));
    PGT_CHECK(i == INT64_MIN);
    PGT_OK(pgpipe_json_parse(d, "9223372036854775808", 19));
    PGT_EQ_INT(pgpipe_json_get_int64(pgpipe_json_root(d), &i), PGPIPE_LIMIT);
    PGT_OK(pgpipe_json_parse(d, "-9223372036854775809", 20));
    PGT_EQ_INT(pgpipe_json_get_int64(pgpipe_json_root(d), &i), PGPIPE_LIMIT);
    PGT_OK(pgpipe_json_parse(d, "123456789012345678901234567890", 30));
    PGT_EQ_INT(pgpipe_json_get_int64(pgpipe_json_root(d), &i), PGPIPE_LIMIT);
    PGT_EQ_STR(pgpipe_json_number_text(pgpipe_json_root(d), &n), "123456789012345678901234567890");
    PGT_EQ_INT(n, 30);
    PGT_OK(pgpipe_json_parse(d, "1.5", 3));
    PGT_EQ_INT(pgpipe_json_get_int64(pgpipe_json_root(d), &i), PGPIPE_ERROR);
    PGT_OK(pgpipe_json_parse(d, "\"1\"", 3));
    PGT_EQ_INT(pgpipe_json_get_int64(pgpipe_json_root(d), &i), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_json_get_double(pgpipe_json_root(d), &x), PGPIPE_MISUSE);
    PGT_OK(pgpipe_json_parse(d, "-0", 2));
    PGT_OK(pgpipe_json_get_int64(pgpipe_json_root(d), &i));
    PGT_EQ_INT(i, 0);
    PGT_OK(pgpipe_json_get_double(pgpipe_json_root(d), &x));
    PGT_CHECK(x == 0 && signbit(x));

    /* doubles: correctly rounded, checked against strtod in the C locale */
    const char *nums[] = {
        "0.1", "0.3", "1e23", "8.98846567431158e307", "2.2250738585072011e-308",
        "2.2250738585072012e-308", "9007199254740993", "4.9e-324", "2.4703282292062328e-324",
        "1.7976931348623157e308", "123456.789e3", "0.000001234", "3.141592653589793238462643383",
        "-12.5e-3", "1e22", "1e-22", "123456789012345", "1234567890123456789", "1e-400",
        "7.2057594037927933e16", "100000000000000000000000000000000000000e-30",
    };
    for (size_t k = 0; k < sizeof nums / sizeof nums[0]; k++) {
        PGT_OK(pgpipe_json_parse(d, nums[k], strlen(nums[k])));
        PGT_OK(pgpipe_json_get_double(pgpipe_json_root(d), &x));
        PGT_EQ_DBL(x, strtod(nums[k], NULL));
    }
    PGT_OK(pgpipe_json_parse(d, "1e400", 5));
    PGT_EQ_INT(pgpipe_json_get_double(pgpipe_json_root(d), &x), PGPIPE_LIMIT);
    PGT_CHECK(isinf(x) && x > 0);
    PGT_OK(pgpipe_json_parse(d, "-1.8e308", 8));
    PGT_EQ_INT(pgpipe_json_get_double(pgpipe_json_root(d), &x), PGPIPE_LIMIT);
    PGT_CHECK(isinf(x) && x < 0);
    PGT_OK(pgpipe_json_parse(d, "1e-400", 6));
    PGT_OK(pgpipe_json_get_double(pgpipe_json_root(d), &x));
    PGT_EQ_DBL(x, 0.0);
    pgpipe_json_doc_close(d);
}

PGT_TEST(json, strings_and_escapes)
{
    const char *esc = "\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\"";
    pgpipe_json_doc *d = json_t_accept_n(esc, strlen(esc));
    size_t n;
    const char *s = pgpipe_json_get_str(pgpipe_json_root(d), &n);
    PGT_EQ_MEM(s, n, "a\"b\\c/d\b\f\n\r\t", 12);
    pgpipe_json_doc_close(d);

    d = json_t_accept_n("\"\\u00e9\\u20AC\\ud83d\\ude00\\u0041\"", 32);
    s = pgpipe_json_get_str(pgpipe_json_root(d), &n);
    PGT_EQ_MEM(s, n, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" "A", 10);
    pgpipe_json_doc_close(d);

    /* embedded NUL, in a value and in a key */
    d = json_t_accept_n("{\"k\\u0000ey\":\"a\\u0000b\"}", 24);
    const pgpipe_json_val *v = pgpipe_json_obj_get(pgpipe_json_root(d), "k\0ey", 4);
    PGT_CHECK(v != NULL);
    PGT_CHECK(pgpipe_json_obj_get(pgpipe_json_root(d), "k", 1) == NULL);
    s = pgpipe_json_get_str(v, &n);
    PGT_EQ_MEM(s, n, "a\0b", 3);
    char out[64];
    size_t len;
    PGT_OK(pgpipe_json_write_to(pgpipe_json_root(d), out, sizeof out, &len));
    PGT_EQ_STR(out, "{\"k\\u0000ey\":\"a\\u0000b\"}");
    pgpipe_json_doc_close(d);

    /* raw UTF-8 passes through untouched */
    json_t_accept("\"\xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xef\xbf\xbf\"");
    json_t_accept("{\"\xe6\x97\xa5\":\"\x7f\"}");

    json_t_reject("\"\\x\"", "invalid escape sequence '\\x'");
    json_t_reject("\"\\U0041\"", "invalid escape sequence '\\U'");
    json_t_reject("\"\\u12\"", "expected four hexadecimal digits");
    json_t_reject("\"\\u12g4\"", "expected four hexadecimal digits");
    json_t_reject("\"\\uD800\"", "lone surrogate \\uD800");
    json_t_reject("\"\\uDBFFx\"", "lone surrogate \\uDBFF");
    json_t_reject("\"\\uD800\\u0041\"", "lone surrogate \\uD800");
    json_t_reject("\"\\uD800\\uD800\"", "lone surrogate \\uD800");
    json_t_reject("\"\\uDC00\"", "low surrogate without a high");
    json_t_reject("\"\\ude00\\ud83d\"", "low surrogate without a high");
    json_t_reject("\"a\tb\"", "unescaped control character U+0009");
    json_t_reject("\"a\nb\"", "unescaped control character U+000A");
    json_t_reject_n("\"a\0b\"", 5, PGPIPE_PARSE, "unescaped control character U+0000", 1, 3);
    json_t_reject("\"\x1f\"", "unescaped control character U+001F");
    json_t_reject("\"abc", "unterminated string");
    json_t_reject("\"abc\\", "unterminated string");
    json_t_reject("\"abc\\\"", "unterminated string");
    json_t_reject("'abc'", "expected a value");
}

PGT_TEST(json, utf8_rejects)
{
    struct { const char *s; const char *want; } bad[] = {
        { "\"\xc0\x80\"", "overlong 2-byte" },
        { "\"\xc1\xbf\"", "overlong 2-byte" },
        { "\"\xe0\x80\x80\"", "overlong 3-byte" },
        { "\"\xe0\x9f\xbf\"", "overlong 3-byte" },
        { "\"\xf0\x80\x80\x80\"", "overlong 4-byte" },
        { "\"\xf0\x8f\xbf\xbf\"", "overlong 4-byte" },
        { "\"\xed\xa0\x80\"", "surrogate encoded in UTF-8" },
        { "\"\xed\xbf\xbf\"", "surrogate encoded in UTF-8" },
        { "\"\xf4\x90\x80\x80\"", "above U+10FFFF" },
        { "\"\xf5\x80\x80\x80\"", "above U+10FFFF" },
        { "\"\xf8\x88\x80\x80\x80\"", "never appears" },
        { "\"\xff\"", "never appears" },
        { "\"\x80\"", "unexpected continuation byte 0x80" },
        { "\"a\xbf\"", "unexpected continuation byte 0xBF" },
        { "\"\xc3\"", "truncated" },
        { "\"\xe2\x82\"", "truncated" },
        { "\"\xf0\x9f\x98\"", "truncated" },
        { "\"\xe2\x82x\"", "truncated" },
        { "\"\xc3", "truncated" },
        { "\"\xf0\x9f", "truncated" },
        { "{\"\xc3\x28\":1}", "truncated" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        json_t_reject(bad[i].s, bad[i].want);
    /* the column of an error after multi-byte characters counts characters */
    json_t_reject_n("[\"\xc3\xa9\xc3\xa9\", x]", 11, PGPIPE_PARSE, "expected a value", 1, 8);
    /* the longest-string fast path also finds a bad byte far inside a string */
    char buf[300];
    memset(buf, 'a', sizeof buf);
    buf[0] = '"';
    buf[201] = (char)0xC0;
    buf[202] = (char)0xAF;
    buf[299] = '"';
    json_t_reject_n(buf, sizeof buf, PGPIPE_PARSE, "overlong", 1, 202);
    buf[201] = buf[202] = '\\';
    pgpipe_json_doc_close(json_t_accept_n(buf, sizeof buf));
}

PGT_TEST(json, structure_whitespace_trailing_empty)
{
    json_t_reject_n("", 0, PGPIPE_PARSE, "empty input", 1, 1);
    json_t_reject_n(" \n\t\r ", 5, PGPIPE_PARSE, "empty input", 2, 4);
    json_t_reject_n(NULL, 0, PGPIPE_PARSE, "empty input", 1, 1);
    json_t_reject("[1,2]]", "unexpected text after the JSON value");
    json_t_reject("{} x", "unexpected text after the JSON value, found 'x'");
    json_t_reject("{}{}", "unexpected text after the JSON value");
    json_t_reject("nulll", "unexpected text after the JSON value");
    json_t_reject("[1,]", "trailing commas are not allowed");
    json_t_reject("{\"a\":1,}", "trailing commas are not allowed");
    json_t_reject("[,1]", "expected a value");
    json_t_reject("[1 2]", "expected ',' or ']' after array element, found '2'");
    json_t_reject("[1", "expected ',' or ']' after array element, found the end of the input");
    json_t_reject("[", "expected a value or ']' after '['");
    json_t_reject("{", "expected '\"' to begin an object key");
    json_t_reject("{1:2}", "expected '\"' to begin an object key, found '1'");
    json_t_reject("{\"a\" 1}", "expected ':' after object key, found '1'");
    json_t_reject("{\"a\":}", "expected a value");
    json_t_reject("{\"a\":", "expected a value after ':'");
    json_t_reject("{\"a\":1 \"b\":2}", "expected ',' or '}' after object member");
    json_t_reject("[1,2}", "expected ',' or ']' after array element, found '}'");
    json_t_reject("{\"a\":1]", "expected ',' or '}' after object member, found ']'");
    json_t_reject("tru", "invalid literal");
    json_t_reject("True", "expected a value");
    json_t_reject("nul", "invalid literal");
    json_t_reject("[fals]", "invalid literal");
    /* whitespace: only space, tab, CR, LF */
    json_t_reject("\f1", "found byte 0x0C at line 1, column 1");
    json_t_reject("\v1", "expected a value");
    json_t_reject("[1,\xc2\xa0 2]", "found byte 0xC2");
    json_t_reject("/* c */ 1", "found '/' at line 1, column 1");
    json_t_accept(" \t\n\r{ \t\n\r\"a\" \t\n\r: \t\n\r[ \t\n\r1 \t\n\r, \t\n\r2 \t\n\r] \t\n\r} \t\n\r");
}

PGT_TEST(json, bom_policy)
{
    /* the document parser rejects a BOM (RFC 8259 8.1), saying why */
    json_t_reject_n("\xef\xbb\xbf{}", 5, PGPIPE_PARSE, "byte order mark (BOM)", 1, 1);
    /* the NDJSON reader skips one at the start of its stream only */
    pgpipe_ndjson *r;
    PGT_OK(pgpipe_ndjson_open(&r));
    const char *in = "\xef\xbb\xbf{\"a\":1}\n\xef\xbb\xbf{}\n";
    PGT_OK(pgpipe_ndjson_feed(r, in, strlen(in)));
    PGT_OK(pgpipe_ndjson_finish(r));
    const pgpipe_json_val *v;
    long long line;
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_ROW);
    PGT_EQ_INT(line, 1);
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_PARSE);
    PGT_EQ_INT(line, 2);
    PGT_CONTAINS(pgpipe_errmsg(r), "byte order mark");
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_DONE);
    pgpipe_ndjson_close(r);
}

PGT_TEST(json, nesting_limits)
{
    size_t n = 100000;
    char *deep = malloc(2 * n + 1);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    /* 512 levels are fine, 513 are not */
    pgpipe_json_doc_close(json_t_accept_n(deep + n - 512, 1024));
    json_t_reject_n(deep + n - 513, 1026, PGPIPE_LIMIT, "more than 512 levels", 1, 513);
    /* 100000 levels: an error, not a crash, both ways */
    json_t_reject_n(deep, 2 * n, PGPIPE_LIMIT, "nesting too deep", 1, 513);
    /* objects count too */
    pgpipe_json_doc *d = json_t_doc();
    PGT_OK(pgpipe_json_doc_set_max_depth(d, 3));
    PGT_OK(pgpipe_json_parse(d, "{\"a\":[{}]}", 10));
    PGT_EQ_INT(pgpipe_json_parse(d, "{\"a\":[{\"b\":[]}]}", 16), PGPIPE_LIMIT);
    PGT_CONTAINS(pgpipe_errmsg(d), "more than 3 levels");
    PGT_EQ_INT(pgpipe_json_doc_validate(d, "{\"a\":[{\"b\":[]}]}", 16), PGPIPE_LIMIT);
    PGT_EQ_INT(pgpipe_json_doc_validate(d, "[[[1]]]", 7), PGPIPE_OK);
    PGT_EQ_INT(pgpipe_json_doc_set_max_depth(d, 0), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_json_doc_set_max_depth(d, PGPIPE_JSON_DEPTH_LIMIT + 1), PGPIPE_MISUSE);
    /* the largest depth works */
    PGT_OK(pgpipe_json_doc_set_max_depth(d, PGPIPE_JSON_DEPTH_LIMIT));
    PGT_OK(pgpipe_json_parse(d, deep + n - 60000, 120000));
    PGT_OK(pgpipe_json_doc_validate(d, deep + n - 60000, 120000));
    char *text;
    size_t len;
    PGT_OK(pgpipe_json_write(pgpipe_json_root(d), &text, &len));
    PGT_EQ_MEM(text, len, deep + n - 60000, 120000);
    pgpipe_free(text);
    pgpipe_json_doc_close(d);
    free(deep);
}

PGT_TEST(json, error_location_and_source)
{
    const char *s = "{\n  \"a\": 1,\n  \"b\": 2 \"c\": 3\n}";
    pgpipe_json_doc *d = json_t_doc();
    PGT_OK(pgpipe_json_doc_set_source(d, "events.json"));
    PGT_EQ_INT(pgpipe_json_parse(d, s, strlen(s)), PGPIPE_PARSE);
    const pgpipe_error *e = pgpipe_errinfo(d);
    PGT_EQ_STR(e->message,
               "expected ',' or '}' after object member, found '\"' at line 3, column 10");
    PGT_EQ_STR(e->source, "events.json");
    PGT_EQ_INT(e->line, 3);
    PGT_EQ_INT(e->column, 10);
    PGT_EQ_INT(e->offset, 21);
    char buf[256];
    pgpipe_error_format(e, buf, sizeof buf);
    PGT_CONTAINS(buf, "events.json:3:10: expected ',' or '}'");
    PGT_EQ_INT(pgpipe_json_doc_validate(d, s, strlen(s)), PGPIPE_PARSE);
    PGT_EQ_STR(pgpipe_errinfo(d)->source, "events.json");
    /* success clears the error */
    PGT_OK(pgpipe_json_parse(d, "[]", 2));
    PGT_EQ_INT(pgpipe_errcode(d), PGPIPE_OK);
    /* an unterminated string is reported where it starts */
    PGT_EQ_INT(pgpipe_json_parse(d, "[\n \"abc", 7), PGPIPE_PARSE);
    PGT_EQ_INT(pgpipe_errinfo(d)->line, 2);
    PGT_EQ_INT(pgpipe_errinfo(d)->column, 2);
    pgpipe_json_doc_close(d);
}

PGT_TEST(json, access_iteration_path)
{
    const char *s = "{\"a\":{\"b\":[10,20,{\"c\":\"deep\"}],\"n\":null},\"t\":true,\"f\":false,"
                    "\"x.y\":5,\"arr\":[[1,2],[3]],\"e\":{},\"a\":\"dup\"}";
    pgpipe_json_doc *d = json_t_accept_n(s, strlen(s));
    const pgpipe_json_val *root = pgpipe_json_root(d), *v;
    size_t n;
    PGT_EQ_INT(pgpipe_json_type(root), PGPIPE_JSON_OBJECT);
    PGT_EQ_STR(pgpipe_json_type_name(pgpipe_json_type(root)), "object");
    PGT_EQ_INT(pgpipe_json_len(root), 7);
    v = pgpipe_json_path(root, "a.b[2].c");
    PGT_EQ_MEM(pgpipe_json_get_str(v, &n), n, "deep", 4);
    PGT_EQ_INT(pgpipe_json_type(pgpipe_json_path(root, "a.n")), PGPIPE_JSON_NULL);
    PGT_EQ_INT(pgpipe_json_get_bool(pgpipe_json_path(root, "t")), 1);
    PGT_EQ_INT(pgpipe_json_get_bool(pgpipe_json_path(root, "f")), 0);
    PGT_EQ_INT(pgpipe_json_type(pgpipe_json_path(root, "f")), PGPIPE_JSON_BOOL);
    int64_t i;
    PGT_OK(pgpipe_json_get_int64(pgpipe_json_path(root, "a.b[1]"), &i));
    PGT_EQ_INT(i, 20);
    PGT_OK(pgpipe_json_get_int64(pgpipe_json_path(root, "[\"x.y\"]"), &i));
    PGT_EQ_INT(i, 5);
    PGT_OK(pgpipe_json_get_int64(pgpipe_json_path(root, "arr[1][0]"), &i));
    PGT_EQ_INT(i, 3);
    PGT_CHECK(pgpipe_json_path(root, "") == root);
    PGT_CHECK(pgpipe_json_path(root, "a.b[3]") == NULL);
    PGT_CHECK(pgpipe_json_path(root, "a.zz") == NULL);
    PGT_CHECK(pgpipe_json_path(root, "a..b") == NULL);
    PGT_CHECK(pgpipe_json_path(root, "a.b[x]") == NULL);
    PGT_CHECK(pgpipe_json_path(root, "a.b[1") == NULL);
    PGT_CHECK(pgpipe_json_path(root, ".a") == NULL);
    PGT_CHECK(pgpipe_json_path(root, "t.x") == NULL);
    /* the first of duplicate keys wins */
    PGT_EQ_INT(pgpipe_json_type(pgpipe_json_obj_get(root, "a", 1)), PGPIPE_JSON_OBJECT);
    PGT_CHECK(pgpipe_json_obj_get(root, "nope", 4) == NULL);
    PGT_CHECK(pgpipe_json_arr_get(root, 0) == NULL);
    PGT_EQ_INT(pgpipe_json_len(pgpipe_json_path(root, "e")), 0);

    /* iteration in document order */
    const char *keys[] = { "a", "t", "f", "x.y", "arr", "e", "a" };
    pgpipe_json_iter it;
    PGT_OK(pgpipe_json_iter_init(&it, root));
    const pgpipe_json_val *k;
    size_t count = 0;
    while ((v = pgpipe_json_iter_next(&it, &k)) != NULL) {
        const char *ks = pgpipe_json_get_str(k, &n);
        PGT_EQ_MEM(ks, n, keys[count], strlen(keys[count]));
        count++;
    }
    PGT_EQ_INT(count, 7);
    PGT_OK(pgpipe_json_iter_init(&it, pgpipe_json_path(root, "a.b")));
    int64_t want[] = { 10, 20 };
    for (count = 0; (v = pgpipe_json_iter_next(&it, &k)) != NULL; count++) {
        PGT_CHECK(k == NULL);
        if (count < 2) {
            PGT_OK(pgpipe_json_get_int64(v, &i));
            PGT_EQ_INT(i, want[count]);
            PGT_CHECK(pgpipe_json_arr_get(pgpipe_json_path(root, "a.b"), count) == v);
        }
    }
    PGT_EQ_INT(count, 3);
    PGT_EQ_INT(pgpipe_json_iter_init(&it, pgpipe_json_path(root, "t")), PGPIPE_MISUSE);
    PGT_CHECK(pgpipe_json_iter_next(&it, &k) == NULL);
    /* NULL-safe accessors */
    PGT_EQ_INT(pgpipe_json_type(NULL), PGPIPE_JSON_INVALID);
    PGT_CHECK(pgpipe_json_get_str(NULL, &n) == NULL);
    PGT_CHECK(pgpipe_json_path(NULL, "a") == NULL);
    PGT_EQ_INT(pgpipe_json_len(NULL), 0);
    pgpipe_json_doc_close(d);
}

PGT_TEST(json, writer_and_equal)
{
    const char *s = " { \"s\" : \"q\\\"b\\\\s\\/\\u0001\\u001f\\t\xc3\xa9\" , \"n\" : [ -0.50e+01 , 1 ,"
                    "true,false,null,{},[] ] } ";
    pgpipe_json_doc *d = json_t_accept_n(s, strlen(s));
    const char *want = "{\"s\":\"q\\\"b\\\\s/\\u0001\\u001f\\t\xc3\xa9\",\"n\":[-0.50e+01,1,"
                       "true,false,null,{},[]]}";
    char buf[256], *text;
    size_t len;
    PGT_OK(pgpipe_json_write_to(pgpipe_json_root(d), buf, sizeof buf, &len));
    PGT_EQ_STR(buf, want);
    PGT_EQ_INT(len, strlen(want));
    /* too small: PGPIPE_LIMIT and the size needed */
    PGT_EQ_INT(pgpipe_json_write_to(pgpipe_json_root(d), buf, len, &len), PGPIPE_LIMIT);
    PGT_EQ_INT(len, strlen(want));
    PGT_EQ_INT(pgpipe_json_write_to(pgpipe_json_root(d), NULL, 0, &len), PGPIPE_LIMIT);
    PGT_EQ_INT(len, strlen(want));
    PGT_OK(pgpipe_json_write(pgpipe_json_path(pgpipe_json_root(d), "n"), &text, &len));
    PGT_EQ_STR(text, "[-0.50e+01,1,true,false,null,{},[]]");
    pgpipe_free(text);
    PGT_OK(pgpipe_json_write(pgpipe_json_path(pgpipe_json_root(d), "n[0]"), &text, &len));
    PGT_EQ_STR(text, "-0.50e+01");
    pgpipe_free(text);
    PGT_EQ_INT(pgpipe_json_write(NULL, &text, &len), PGPIPE_MISUSE);
    pgpipe_json_doc_close(d);

    /* equality */
    pgpipe_json_doc *a = json_t_doc(), *b = json_t_doc();
    struct { const char *x, *y; int eq; } cases[] = {
        { "{\"a\":[1,2]}", " { \"a\" : [ 1 , 2 ] } ", 1 },
        { "\"\\u0041\"", "\"A\"", 1 },
        { "1.0", "1", 1 },
        { "1e2", "100", 1 },
        { "-0", "0", 1 },
        { "9007199254740993", "9007199254740992", 0 },
        { "{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}", 0 },
        { "[1,2]", "[1,2,3]", 0 },
        { "[[1],2]", "[[1,2]]", 0 },
        { "true", "false", 0 },
        { "null", "false", 0 },
        { "\"a\"", "\"b\"", 0 },
        { "{}", "[]", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        PGT_OK(pgpipe_json_parse(a, cases[i].x, strlen(cases[i].x)));
        PGT_OK(pgpipe_json_parse(b, cases[i].y, strlen(cases[i].y)));
        PGT_CHECK_MSG(pgpipe_json_equal(pgpipe_json_root(a), pgpipe_json_root(b)) == cases[i].eq,
                      "%s vs %s", cases[i].x, cases[i].y);
    }
    PGT_CHECK(pgpipe_json_equal(NULL, NULL));
    PGT_CHECK(!pgpipe_json_equal(pgpipe_json_root(a), NULL));
    pgpipe_json_doc_close(a);
    pgpipe_json_doc_close(b);
}

/* A counting allocator, to prove what does and does not allocate. */
static long json_t_allocs;
static void *json_t_malloc(void *ud, size_t n) { (void)ud; json_t_allocs++; return malloc(n); }
static void *json_t_realloc(void *ud, void *p, size_t n) { (void)ud; json_t_allocs++; return realloc(p, n); }
static void json_t_free(void *ud, void *p) { (void)ud; free(p); }

PGT_TEST(json, arena_reuse_and_validate_allocate_nothing)
{
    pgpipe_allocator al = { json_t_malloc, json_t_realloc, json_t_free, NULL };
    PGT_OK(pgpipe_config_allocator(&al));
    pgpipe_json_doc *d = json_t_doc();
    char rec[512];
    /* warm up on records of the largest size, then steady state */
    for (int pass = 0; pass < 2; pass++) {
        long before = json_t_allocs;
        for (int i = 0; i < 200; i++) {
            int n = snprintf(rec, sizeof rec,
                             "{\"id\":%d,\"name\":\"user\\u00e9%d\",\"tags\":[\"a\\n\",\"b\",%d],"
                             "\"nested\":{\"x\":[1,2,3,{\"y\":\"esc\\\"aped %d\"}]}}",
                             i, i, i % 7, i);
            PGT_OK(pgpipe_json_parse(d, rec, (size_t)n));
        }
        if (pass == 1)
            PGT_EQ_INT(json_t_allocs - before, 0);
    }
    /* many escaped strings spread over several arena chunks merge into one */
    size_t big = 20000;
    char *s = malloc(big * 6 + 3);
    size_t k = 0;
    s[k++] = '[';
    for (size_t i = 0; i < big; i++) {
        memcpy(s + k, "\"\\n\",", 5);
        k += 5;
    }
    s[k - 1] = ']';
    PGT_OK(pgpipe_json_parse(d, s, k));
    PGT_OK(pgpipe_json_parse(d, s, k));
    long before = json_t_allocs;
    PGT_OK(pgpipe_json_parse(d, s, k));
    PGT_OK(pgpipe_json_parse(d, s, k));
    PGT_EQ_INT(json_t_allocs - before, 0);
    PGT_EQ_INT(pgpipe_json_len(pgpipe_json_root(d)), big);
    PGT_CHECK(pgpipe_json_doc_memory(d) > 0);
    /* validation allocates nothing, whatever the input */
    before = json_t_allocs;
    PGT_OK(pgpipe_json_validate(s, k, NULL));
    PGT_OK(pgpipe_json_doc_validate(d, s, k));
    pgpipe_error e;
    PGT_EQ_INT(pgpipe_json_validate("[1,2", 4, &e), PGPIPE_PARSE);
    PGT_OK(pgpipe_json_validate(rec, strlen(rec), &e));
    PGT_EQ_INT(json_t_allocs - before, 0);
    free(s);
    pgpipe_json_doc_close(d);
    pgpipe_config_allocator(NULL);
}

PGT_TEST(json, copy_option_and_lifetime)
{
    char in[] = "{\"plain\":\"abc\",\"esc\":\"a\\tb\",\"n\":42}";
    pgpipe_json_doc *d = json_t_doc();
    PGT_OK(pgpipe_json_doc_set_copy(d, 1));
    PGT_OK(pgpipe_json_parse(d, in, strlen(in)));
    memset(in, 'X', sizeof in - 1); /* the caller reuses its buffer */
    size_t n;
    const pgpipe_json_val *r = pgpipe_json_root(d);
    PGT_EQ_MEM(pgpipe_json_get_str(pgpipe_json_obj_get(r, "plain", 5), &n), n, "abc", 3);
    PGT_EQ_MEM(pgpipe_json_get_str(pgpipe_json_obj_get(r, "esc", 3), &n), n, "a\tb", 3);
    PGT_EQ_MEM(pgpipe_json_number_text(pgpipe_json_obj_get(r, "n", 1), &n), n, "42", 2);
    /* without copy, plain strings point into the input */
    PGT_OK(pgpipe_json_doc_set_copy(d, 0));
    char in2[] = "[\"zero copy\"]";
    PGT_OK(pgpipe_json_parse(d, in2, strlen(in2)));
    PGT_CHECK(pgpipe_json_get_str(pgpipe_json_arr_get(pgpipe_json_root(d), 0), &n) == in2 + 2);
    /* a failed parse leaves no root */
    PGT_EQ_INT(pgpipe_json_parse(d, "[", 1), PGPIPE_PARSE);
    PGT_CHECK(pgpipe_json_root(d) == NULL);
    PGT_EQ_INT(pgpipe_json_parse(NULL, "1", 1), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_json_parse(d, NULL, 3), PGPIPE_MISUSE);
    pgpipe_json_doc_close(d);
}

PGT_TEST(json, large_input)
{
    /* 4 MB of records: nothing but memory limits the size */
    size_t cap = 4u << 20, k = 0;
    char *s = malloc(cap + 64);
    s[k++] = '[';
    int i = 0;
    while (k < cap) {
        k += (size_t)snprintf(s + k, 64, "{\"i\":%d,\"s\":\"v%d\\n\"},", i, i);
        i++;
    }
    s[k - 1] = ']';
    pgpipe_json_doc *d = json_t_accept_n(s, k);
    PGT_EQ_INT(pgpipe_json_len(pgpipe_json_root(d)), i);
    int64_t v;
    PGT_OK(pgpipe_json_get_int64(pgpipe_json_path(pgpipe_json_root(d), "[12345].i"), &v));
    PGT_EQ_INT(v, 12345);
    pgpipe_json_doc_close(d);
    free(s);
}

/* ---- NDJSON ---- */

typedef struct json_t_rec {
    long long line;
    int rc;
    char text[128];
} json_t_rec;

/* Feed in chunks of `step` bytes (0 = all at once), collect what comes out. */
static size_t json_t_ndjson(const char *in, size_t len, size_t step, json_t_rec *out, size_t max,
                            pgpipe_ndjson **keep)
{
    pgpipe_ndjson *r;
    PGT_OK(pgpipe_ndjson_open(&r));
    PGT_OK(pgpipe_ndjson_set_source(r, "events.ndjson"));
    size_t n = 0, off = 0;
    if (!step)
        step = len ? len : 1;
    for (int last = 0; !last;) {
        if (off < len) {
            size_t m = len - off < step ? len - off : step;
            PGT_OK(pgpipe_ndjson_feed(r, in + off, m));
            off += m;
        } else {
            PGT_OK(pgpipe_ndjson_finish(r));
            last = 1;
        }
        const pgpipe_json_val *v;
        long long line;
        int rc;
        while ((rc = pgpipe_ndjson_next(r, &v, &line)) != PGPIPE_DONE) {
            PGT_CHECK(n < max);
            out[n].line = line;
            out[n].rc = rc;
            size_t tl = 0;
            if (rc == PGPIPE_ROW) {
                PGT_OK(pgpipe_json_write_to(v, out[n].text, sizeof out[n].text, &tl));
            } else {
                PGT_EQ_INT(pgpipe_errinfo(r)->line, line);
                const char *m = pgpipe_errmsg(r);
                size_t ml = strlen(m) < sizeof out[n].text - 1 ? strlen(m) : sizeof out[n].text - 1;
                memcpy(out[n].text, m, ml);
                out[n].text[ml] = '\0';
            }
            n++;
        }
    }
    if (keep)
        *keep = r;
    else
        pgpipe_ndjson_close(r);
    return n;
}

PGT_TEST(json, ndjson_lines_crlf_blank_bad)
{
    const char *in = "{\"a\":1}\r\n"
                     "\n"
                     "   \r\n"
                     "[1,2\n"
                     "{\"b\":\"x\\ny\"}\n"
                     "\t\n"
                     "{\"c\":[true,null]} \r\n"
                     "42";
    json_t_rec want[5] = {
        { 1, PGPIPE_ROW, "{\"a\":1}" },
        { 4, PGPIPE_PARSE, "expected ',' or ']' after array element, found the end of the input "
                           "at line 4, column 5" },
        { 5, PGPIPE_ROW, "{\"b\":\"x\\ny\"}" },
        { 7, PGPIPE_ROW, "{\"c\":[true,null]}" },
        { 8, PGPIPE_ROW, "42" },
    };
    size_t len = strlen(in);
    for (size_t step = 0; step <= len + 1; step++) {
        json_t_rec got[16];
        size_t n = json_t_ndjson(in, len, step, got, 16, NULL);
        PGT_EQ_INT(n, 5);
        for (size_t i = 0; i < 5; i++) {
            PGT_EQ_INT(got[i].line, want[i].line);
            PGT_EQ_INT(got[i].rc, want[i].rc);
            PGT_EQ_STR(got[i].text, want[i].text);
        }
    }
    /* the error names the stream, the line and the stream offset */
    pgpipe_ndjson *r;
    json_t_rec got[16];
    json_t_ndjson("{}\n{\"a\" 1}\n", 11, 3, got, 16, &r);
    PGT_EQ_INT(pgpipe_ndjson_records(r), 1);
    PGT_EQ_INT(pgpipe_ndjson_errors(r), 1);
    const pgpipe_error *e = pgpipe_errinfo(r);
    PGT_EQ_STR(e->source, "events.ndjson");
    PGT_EQ_INT(e->line, 2);
    PGT_EQ_INT(e->column, 6);
    PGT_EQ_INT(e->offset, 8);
    pgpipe_ndjson_close(r);
}

PGT_TEST(json, ndjson_bom_straddles_and_raw_line)
{
    const char *in = "\xef\xbb\xbf[1]\n{\"x\" }\n";
    size_t len = strlen(in);
    for (size_t step = 1; step <= len; step++) {
        json_t_rec got[4];
        PGT_EQ_INT(json_t_ndjson(in, len, step, got, 4, NULL), 2);
        PGT_EQ_STR(got[0].text, "[1]");
        PGT_EQ_INT(got[1].rc, PGPIPE_PARSE);
        PGT_EQ_INT(got[1].line, 2);
    }
    /* a parse error on the first line counts the BOM as one column */
    pgpipe_ndjson *r;
    PGT_OK(pgpipe_ndjson_open(&r));
    PGT_OK(pgpipe_ndjson_feed(r, "\xef\xbb\xbf[1,]\nnext", 12));
    const pgpipe_json_val *v;
    long long line;
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_PARSE);
    PGT_EQ_INT(pgpipe_errinfo(r)->column, 5);
    PGT_EQ_INT(pgpipe_errinfo(r)->offset, 6);
    PGT_EQ_STR(pgpipe_errinfo(r)->source, "<stream>");
    const char *t;
    size_t tl;
    PGT_OK(pgpipe_ndjson_line(r, &t, &tl));
    PGT_EQ_MEM(t, tl, "[1,]", 4);
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_DONE);
    PGT_OK(pgpipe_ndjson_finish(r));
    PGT_EQ_INT(pgpipe_ndjson_feed(r, "x", 1), PGPIPE_MISUSE);
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_PARSE); /* "next" is not JSON */
    PGT_EQ_INT(line, 2);
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_DONE);
    pgpipe_ndjson_close(r);
}

PGT_TEST(json, ndjson_undrained_feed_and_depth)
{
    /* feeding again before draining keeps every line */
    pgpipe_ndjson *r;
    PGT_OK(pgpipe_ndjson_open(&r));
    PGT_OK(pgpipe_ndjson_set_max_depth(r, 2));
    PGT_OK(pgpipe_ndjson_feed(r, "[1]\n[[[2]]]\n[3", 14));
    PGT_OK(pgpipe_ndjson_feed(r, "]\n", 2));
    PGT_OK(pgpipe_ndjson_finish(r));
    const pgpipe_json_val *v;
    long long line;
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_ROW);
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_LIMIT);
    PGT_EQ_INT(line, 2);
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_ROW);
    PGT_EQ_INT(line, 3);
    int64_t x;
    PGT_OK(pgpipe_json_get_int64(pgpipe_json_arr_get(v, 0), &x));
    PGT_EQ_INT(x, 3);
    PGT_EQ_INT(pgpipe_ndjson_next(r, &v, &line), PGPIPE_DONE);
    PGT_EQ_INT(pgpipe_ndjson_set_max_depth(r, -1), PGPIPE_MISUSE);
    pgpipe_ndjson_close(r);
}

PGT_TEST(json, ndjson_memory_bounded_by_longest_line)
{
    /* 20 MB of short records fed in 4 KB chunks: the reader keeps only a
    ** partial line (< 1 KB here) and the document stays small */
    pgpipe_ndjson *r;
    PGT_OK(pgpipe_ndjson_open(&r));
    char chunk[4096], rec[128];
    size_t used = 0, total = 0;
    long long lines = 0, rows = 0;
    const pgpipe_json_val *v;
    long long line;
    int rc;
    while (total < (20u << 20)) {
        int n = snprintf(rec, sizeof rec, "{\"id\":%lld,\"v\":\"r\\u00e9c %lld\",\"ok\":true}\n",
                         lines, lines);
        lines++;
        if (used + (size_t)n > sizeof chunk) {
            PGT_OK(pgpipe_ndjson_feed(r, chunk, used));
            while ((rc = pgpipe_ndjson_next(r, &v, &line)) == PGPIPE_ROW)
                rows++;
            PGT_EQ_INT(rc, PGPIPE_DONE);
            PGT_CHECK(r->carry.cap <= 1024);
            total += used;
            used = 0;
        }
        memcpy(chunk + used, rec, (size_t)n);
        used += (size_t)n;
    }
    PGT_OK(pgpipe_ndjson_feed(r, chunk, used));
    PGT_OK(pgpipe_ndjson_finish(r));
    while ((rc = pgpipe_ndjson_next(r, &v, &line)) == PGPIPE_ROW)
        rows++;
    PGT_EQ_INT(rc, PGPIPE_DONE);
    PGT_EQ_INT(rows, lines);
    PGT_EQ_INT(line, lines);
    PGT_CHECK(pgpipe_json_doc_memory(r->doc) < 16384);
    pgpipe_ndjson_close(r);
}

/* ---- the shared corpora (skipped when ../shared/data is absent) ---- */

static char *json_t_read(const char *name, size_t *len)
{
    const char *top = getenv("PGPIPE_TOP");
    char path[1024];
    snprintf(path, sizeof path, "%s/../shared/data/json/%s", top ? top : ".", name);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

PGT_TEST(json, corpus_roundtrip)
{
    const char *files[] = { "twitter.json", "citm_catalog.json" };
    int found = 0;
    for (size_t i = 0; i < 2; i++) {
        size_t len;
        char *b = json_t_read(files[i], &len);
        if (!b)
            continue;
        found++;
        pgpipe_json_doc *d = json_t_accept_n(b, len);
        const pgpipe_json_val *root = pgpipe_json_root(d);
        if (i == 0) {
            size_t n;
            PGT_EQ_INT(pgpipe_json_len(pgpipe_json_path(root, "statuses")), 100);
            PGT_CHECK(pgpipe_json_get_str(pgpipe_json_path(root, "statuses[0].user.screen_name"),
                                          &n) != NULL);
        } else {
            PGT_EQ_INT(pgpipe_json_type(pgpipe_json_path(root, "events")), PGPIPE_JSON_OBJECT);
        }
        pgpipe_json_doc_close(d);
        free(b);
    }
    size_t len;
    char *b = json_t_read("amazon_cellphones.ndjson", &len);
    if (b) {
        found++;
        /* every line round-trips; the reader agrees line by line */
        pgpipe_ndjson *r;
        PGT_OK(pgpipe_ndjson_open(&r));
        PGT_OK(pgpipe_ndjson_feed(r, b, len));
        PGT_OK(pgpipe_ndjson_finish(r));
        const pgpipe_json_val *v;
        long long line, rows = 0;
        int rc;
        pgpipe_json_doc *d2 = json_t_doc();
        while ((rc = pgpipe_ndjson_next(r, &v, &line)) == PGPIPE_ROW) {
            char *text;
            size_t tl;
            PGT_OK(pgpipe_json_write(v, &text, &tl));
            PGT_OK(pgpipe_json_parse(d2, text, tl));
            PGT_CHECK(pgpipe_json_equal(v, pgpipe_json_root(d2)));
            pgpipe_free(text);
            rows++;
        }
        PGT_EQ_INT(rc, PGPIPE_DONE);
        PGT_EQ_INT(rows, 793);
        pgpipe_json_doc_close(d2);
        pgpipe_ndjson_close(r);
        free(b);
    }
    if (!found)
        PGT_SKIP("../shared/data/json is absent");
}

PGT_TEST(json, utf8_long_runs_of_3_byte_characters)
{
    /* the 5-characters-at-a-time path must agree with the byte-wise one:
    ** valid E0/ED/EF forms inside runs pass, any bad sequence at any place
    ** in a run is found at its character's column */
    const char *good[] = { "\xe0\xa0\x80", "\xed\x9f\xbf", "\xef\xbf\xbf", "\xe1\x80\x80" };
    const char *bad[] = { "\xe0\x80\x80", "\xed\xa0\x80", "\xe6\x97", "\xe6\x28\xa5", "\xc0\xaf",
                          "\x80\x80\x80" };
    char buf[256];
    for (size_t k = 0; k < 40; k++) {
        for (size_t g = 0; g < sizeof good / sizeof good[0]; g++) {
            size_t n = 0;
            buf[n++] = '"';
            for (size_t i = 0; i < 50; i++) {
                memcpy(buf + n, i == k ? good[g] : "\xe6\x97\xa5", 3);
                n += 3;
            }
            buf[n++] = '"';
            pgpipe_json_doc_close(json_t_accept_n(buf, n));
        }
        for (size_t b = 0; b < sizeof bad / sizeof bad[0]; b++) {
            size_t n = 0;
            buf[n++] = '"';
            for (size_t i = 0; i < 50; i++) {
                if (i == k) {
                    memcpy(buf + n, bad[b], strlen(bad[b]));
                    n += strlen(bad[b]);
                } else {
                    memcpy(buf + n, "\xe6\x97\xa5", 3);
                    n += 3;
                }
            }
            buf[n++] = '"';
            json_t_reject_n(buf, n, PGPIPE_PARSE, "invalid UTF-8", 1, (long long)k + 2);
        }
    }
}
