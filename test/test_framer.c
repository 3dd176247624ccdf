/* Tests of the framer (src/parse/framer.c): NDJSON lines, JSON arrays and
** one JSON document cut into records, whatever the chunks. */

/* Records as text: "L<line>:C<col>@<offset>[o][c] <raw>" a line each; a
** broken frame "E<line>@<offset> <message>"; "UNCLOSED" for an array that
** lacks its ']'. */
static int fr_t_dump(void *ud, const pp_frame *r)
{
    pp_buf *out = ud;
    pp_buf_appendf(out, "L%lld:C%lld@%lld%s%s ", r->line, r->col, r->off,
                   r->flags & PP_FRAME_OVERLONG ? "o" : "", r->flags & PP_FRAME_CUT ? "c" : "");
    pp_buf_append(out, r->raw, r->len);
    pp_buf_putc(out, '\n');
    return PGPIPE_OK;
}

/* in fed as chunks: in[0..split), then the rest in pieces of step bytes */
static char *fr_t_run(int kind, size_t max, const char *in, size_t len, size_t split, size_t step)
{
    pp_framer f;
    pp_buf out = { 0 };
    memset(&f, 0, sizeof f);
    framer_begin(&f, kind, max, fr_t_dump, &out);
    int rc = framer_feed(&f, in, split);
    for (size_t i = split; rc == PGPIPE_OK && i < len; i += step)
        rc = framer_feed(&f, in + i, len - i < step ? len - i : step);
    if (rc == PGPIPE_OK)
        rc = framer_end(&f);
    if (rc == PGPIPE_PARSE)
        pp_buf_appendf(&out, "E%lld@%lld %s\n", f.err.line, f.err.offset, f.err.message);
    else if (rc != PGPIPE_OK)
        pp_buf_appendf(&out, "F%d\n", rc);
    if (f.unclosed)
        pp_buf_appendf(&out, "UNCLOSED\n");
    framer_free(&f);
    pp_buf_putc(&out, '\0');
    return out.data;
}

/* The same records whatever the chunks: split at every byte, then byte by byte. */
static void fr_t_expect_n(int kind, size_t max, const char *in, size_t len, const char *want)
{
    for (size_t split = 0; split <= len; split++) {
        char *got = fr_t_run(kind, max, in, len, split, len ? len : 1);
        if (strcmp(got, want) != 0)
            fprintf(stderr, "    split at %zu\n", split);
        PGT_EQ_STR(got, want);
        pp_free(got);
    }
    char *got = fr_t_run(kind, max, in, len, 0, 1);
    PGT_EQ_STR(got, want);
    pp_free(got);
}

#define fr_t_expect(kind, max, in, want) fr_t_expect_n((kind), (max), (in), strlen(in), (want))

PGT_TEST(framer, ndjson_lines_crlf_blank_bom)
{
    fr_t_expect(PP_FRAME_NDJSON, 1000, "{\"a\":1}\n{\"b\":2}\n",
                "L1:C0@0 {\"a\":1}\nL2:C0@8 {\"b\":2}\n");
    /* CRLF line ends, blank lines (spaces, tabs, a lone CR) and no final newline */
    fr_t_expect(PP_FRAME_NDJSON, 1000, "{\"a\":1}\r\n\r\n  \t\n{\"b\":2}",
                "L1:C0@0 {\"a\":1}\nL4:C0@15 {\"b\":2}\n");
    /* a BOM on the first line is not part of the record; elsewhere it is */
    fr_t_expect(PP_FRAME_NDJSON, 1000, "\xEF\xBB\xBF{\"a\":1}\n\xEF\xBB\xBF{}\n",
                "L1:C0@3 {\"a\":1}\nL2:C0@11 \xEF\xBB\xBF{}\n");
    fr_t_expect(PP_FRAME_NDJSON, 1000, "", "");
    fr_t_expect(PP_FRAME_NDJSON, 1000, "\n\n", "");
    /* the framer does not parse: a bad line is a record like any other */
    fr_t_expect(PP_FRAME_NDJSON, 1000, "not json\n{\n", "L1:C0@0 not json\nL2:C0@9 {\n");
}

PGT_TEST(framer, ndjson_overlong)
{
    /* a line past max_record: its first max_record bytes, marked */
    fr_t_expect(PP_FRAME_NDJSON, 4, "{\"a\":12345}\n{}\n", "L1:C0@0o {\"a\"\nL2:C0@12 {}\n");
    fr_t_expect(PP_FRAME_NDJSON, 4, "{\"a\":12345}", "L1:C0@0o {\"a\"\n");
    /* a huge line through small chunks: memory stays at max_record */
    size_t n = 1 << 20;
    char *big = pp_malloc(n + 2);
    memset(big, 'x', n);
    big[0] = '{';
    big[n] = '\n';
    big[n + 1] = '\0';
    char *got = fr_t_run(PP_FRAME_NDJSON, 100, big, n + 1, 0, 4096);
    PGT_CHECK(!strncmp(got, "L1:C0@0o {xxx", 13));
    PGT_EQ_INT((long long)strlen(got), (long long)(strlen("L1:C0@0o ") + 100 + 1));
    pp_free(got);
    got = fr_t_run(PP_FRAME_NDJSON, n + 10, big, n + 1, 7, 4096);
    PGT_EQ_INT((long long)strlen(got), (long long)(strlen("L1:C0@0 ") + n + 1));
    pp_free(got);
    pp_free(big);
}

PGT_TEST(framer, array_elements_positions)
{
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{\"a\":1},\n  {\"b\":[1,{\"c\":2}]} ]\n",
                "L1:C1@1 {\"a\":1}\nL2:C2@12 {\"b\":[1,{\"c\":2}]}\n");
    /* brackets, braces and escaped quotes inside strings do not count */
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{\"s\":\"]}[{\\\"\\\\\"},\"x\\\"]\",[[]]]",
                "L1:C1@1 {\"s\":\"]}[{\\\"\\\\\"}\nL1:C18@18 \"x\\\"]\"\nL1:C25@25 [[]]\n");
    /* scalars end at a delimiter; columns count characters, not bytes */
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[\"\xC3\xA9\xC3\xA9\", 12 ,true,null]",
                "L1:C1@1 \"\xC3\xA9\xC3\xA9\"\nL1:C7@9 12\nL1:C11@13 true\nL1:C16@18 null\n");
    /* a BOM before the array does not count as a column */
    fr_t_expect(PP_FRAME_ARRAY, 1000, "\xEF\xBB\xBF[{}]", "L1:C1@4 {}\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "\r\n [ ]\r\n", "");
    /* an element over lines, CRLF between elements */
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[\r\n{\"a\":\r\n\"x\\ny\"},\r\n{}\r\n]",
                "L2:C0@3 {\"a\":\r\n\"x\\ny\"}\nL4:C0@20 {}\n");
}

PGT_TEST(framer, array_broken_frames)
{
    fr_t_expect(PP_FRAME_ARRAY, 1000, "\"a\"",
                "E1@0 expected '[' to start a JSON array or '{' to start one object, found '\"' at "
                "line 1, column 1 (byte offset 0)\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{},,{}]",
                "L1:C1@1 {}\nE1@4 expected an array element, found ',' at line 1, column 5 (byte offset 4)\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{}\n{}]",
                "L1:C1@1 {}\nE2@4 expected ',' or ']' after an array element, found '{' at line 2, "
                "column 1 (byte offset 4)\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{}]\nx",
                "L1:C1@1 {}\nE2@5 unexpected data after the end of the array, found 'x' at line 2, "
                "column 1 (byte offset 5)\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{},\x01]",
                "L1:C1@1 {}\nL1:C4@4 \x01\n");
    /* columns count characters: before the bad byte, a string and a scalar hold
    ** two-byte characters */
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[\"\xC3\xA9\",\xC3\xA9 x]",
                "L1:C1@1 \"\xC3\xA9\"\nL1:C5@6 \xC3\xA9\nE1@9 expected ',' or ']' after an array "
                "element, found 'x' at line 1, column 8 (byte offset 9)\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{}]\x01",
                "L1:C1@1 {}\nE1@4 unexpected data after the end of the array, found byte 0x01 at "
                "line 1, column 5 (byte offset 4)\n");
    /* the input ends: inside an element (cut), after one, or in a scalar */
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{},\n{\"a\":[1,", "L1:C1@1 {}\nL2:C0@5c {\"a\":[1,\nUNCLOSED\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{}, \"ab", "L1:C1@1 {}\nL1:C5@5c \"ab\nUNCLOSED\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[{}", "L1:C1@1 {}\nUNCLOSED\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "[12", "L1:C1@1 12\nUNCLOSED\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "", "");
}

/* A JSON file that is one object (a saved webhook, pretty-printed): that
** object is the one record, wherever the chunks cut it; data after it is a
** broken frame, an object cut off by the input's end a cut record. */
PGT_TEST(framer, array_framer_takes_one_object)
{
    fr_t_expect(PP_FRAME_ARRAY, 1000, "{\"a\":1}", "L1:C0@0 {\"a\":1}\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "\xEF\xBB\xBF \n{\n  \"a\": [1, \"}\"],\n  \"b\": {}\n}\n\n",
                "L2:C0@5 {\n  \"a\": [1, \"}\"],\n  \"b\": {}\n}\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "{}\n{}",
                "L1:C0@0 {}\nE2@3 unexpected data after the JSON object (a JSON file is one object "
                "or an array; one object a line is NDJSON), found '{' at line 2, column 1 (byte offset 3)\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "{}]", "L1:C0@0 {}\nE1@2 unexpected data after the JSON "
                "object (a JSON file is one object or an array; one object a line is NDJSON), found "
                "']' at line 1, column 3 (byte offset 2)\n");
    fr_t_expect(PP_FRAME_ARRAY, 1000, "{\"a\":\n[1,", "L1:C0@0c {\"a\":\n[1,\n");
    fr_t_expect(PP_FRAME_ARRAY, 5, "{\"abcdef\":1}", "L1:C0@0o {\"abc\n");
}

PGT_TEST(framer, array_overlong)
{
    fr_t_expect(PP_FRAME_ARRAY, 5, "[{\"a\":\"xxxxxxxx\"},{}]", "L1:C1@1o {\"a\":\nL1:C18@18 {}\n");
    /* an element far larger than any chunk */
    size_t n = 1 << 20;
    char *big = pp_malloc(n + 8);
    big[0] = '[';
    big[1] = '"';
    memset(big + 2, 'y', n);
    memcpy(big + 2 + n, "\",1]", 4);
    char *got = fr_t_run(PP_FRAME_ARRAY, n + 2, big, n + 6, 3, 1000);
    PGT_CHECK(!strncmp(got, "L1:C1@1 \"yyy", 12));
    PGT_CONTAINS(got, "y\"\nL1:");
    PGT_CONTAINS(got, "@1048580 1\n");
    pp_free(got);
    got = fr_t_run(PP_FRAME_ARRAY, 10, big, n + 6, 3, 1000);
    PGT_CHECK(!strncmp(got, "L1:C1@1o \"yyyyyyyyy\nL1:", 23));
    pp_free(got);
    pp_free(big);
}

PGT_TEST(framer, one_document)
{
    fr_t_expect(PP_FRAME_ONE, 1000, "\xEF\xBB\xBF {\"a\":\n[1]}\n", "L1:C0@3  {\"a\":\n[1]}\n\n");
    fr_t_expect(PP_FRAME_ONE, 1000, " \n", "");
    fr_t_expect(PP_FRAME_ONE, 4, "{\"a\":1}", "L1:C0@0o {\"a\"\n");
}

/* A callback's failure stops the feed and comes back unchanged. */
static int fr_t_stop(void *ud, const pp_frame *r)
{
    (void)r;
    return ++*(int *)ud == 2 ? PGPIPE_BUSY : PGPIPE_OK;
}

PGT_TEST(framer, callback_stops)
{
    int n = 0;
    pp_framer f;
    memset(&f, 0, sizeof f);
    framer_begin(&f, PP_FRAME_ARRAY, 100, fr_t_stop, &n);
    PGT_EQ_INT(framer_feed(&f, "[1,2,3]", 7), PGPIPE_BUSY);
    PGT_EQ_INT(n, 2);
    n = 0;
    framer_begin(&f, PP_FRAME_NDJSON, 100, fr_t_stop, &n);
    PGT_EQ_INT(framer_feed(&f, "{}\n{}\n{}\n", 9), PGPIPE_BUSY);
    PGT_EQ_INT(n, 2);
    framer_free(&f);
}
