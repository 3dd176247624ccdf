/*
** libFuzzer target for the JSON parser: parse, validate and compare (they
** must agree on success, code and error offset), then write -> reparse ->
** equal, write_to with an exact and a short buffer, and walk the accessors.
** Then the text in jsonb's member order (pp_jsonb_order).
** The first byte picks options (max depth, copy) so limits get exercised.
*/
/* only what this target needs: each target compiles the amalgamation,
** and make test builds all of them */
#define PGPIPE_OMIT_POOL 1
#define PGPIPE_OMIT_MIGRATE 1
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_DLQ 1
#include "pgpipe.c"

static pgpipe_json_doc *fj_doc, *fj_doc2;

static void fj_walk(const pgpipe_json_val *v)
{
    pgpipe_json_iter it;
    if (pgpipe_json_iter_init(&it, v) != PGPIPE_OK) {
        int64_t i;
        double d;
        size_t n;
        pgpipe_json_get_int64(v, &i);
        pgpipe_json_get_double(v, &d);
        pgpipe_json_get_str(v, &n);
        return;
    }
    const pgpipe_json_val *k, *x;
    size_t count = 0;
    while ((x = pgpipe_json_iter_next(&it, &k)) != NULL && count < 64) {
        if (k) {
            size_t kl;
            const char *ks = pgpipe_json_get_str(k, &kl);
            if (!ks || !pgpipe_json_obj_get(v, ks, kl))
                __builtin_trap();
        } else if (pgpipe_json_arr_get(v, count) != x) {
            __builtin_trap();
        }
        count++;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!fj_doc) {
        pgpipe_json_doc_open(&fj_doc);
        pgpipe_json_doc_open(&fj_doc2);
    }
    int depth = PGPIPE_JSON_DEPTH_DEFAULT, copy = 0;
    if (size && data[0] == 0xFF) { /* option byte */
        if (size < 2)
            return 0;
        depth = 1 + (data[1] & 15);
        copy = data[1] >> 7;
        data += 2;
        size -= 2;
    }
    /* a heap copy of exactly size bytes so ASan sees any over-read */
    char *buf = malloc(size ? size : 1);
    if (size)
        memcpy(buf, data, size);
    pgpipe_json_doc_set_max_depth(fj_doc, depth);
    pgpipe_json_doc_set_copy(fj_doc, copy);
    int rc = pgpipe_json_parse(fj_doc, buf, size);
    pgpipe_error perr = *pgpipe_errinfo(fj_doc);
    int vrc = pgpipe_json_doc_validate(fj_doc, buf, size);
    const pgpipe_error *verr = pgpipe_errinfo(fj_doc);
    if (rc != vrc)
        __builtin_trap();
    if (rc != PGPIPE_OK && (perr.offset != verr->offset || perr.line != verr->line ||
                            perr.column != verr->column || strcmp(perr.message, verr->message)))
        __builtin_trap();
    if (rc == PGPIPE_PARSE && (perr.line < 1 || perr.column < 1 || perr.offset < 0 ||
                               (size_t)perr.offset > size))
        __builtin_trap();
    if (depth == PGPIPE_JSON_DEPTH_DEFAULT &&
        (pgpipe_json_validate(buf, size, NULL) == PGPIPE_OK) != (rc == PGPIPE_OK))
        __builtin_trap();
    if (rc == PGPIPE_OK) {
        const pgpipe_json_val *root = pgpipe_json_root(fj_doc);
        char *text;
        size_t len;
        if (pgpipe_json_write(root, &text, &len) != PGPIPE_OK)
            __builtin_trap();
        if (strlen(text) > len) /* NUL-terminated at len */
            __builtin_trap();
        pgpipe_json_doc_set_max_depth(fj_doc2, depth);
        if (pgpipe_json_parse(fj_doc2, text, len) != PGPIPE_OK)
            __builtin_trap();
        if (!pgpipe_json_equal(root, pgpipe_json_root(fj_doc2)))
            __builtin_trap();
        /* writing again gives the same bytes */
        char *exact = malloc(len + 1), *again;
        size_t l2, l3;
        if (pgpipe_json_write_to(pgpipe_json_root(fj_doc2), exact, len + 1, &l2) != PGPIPE_OK ||
            l2 != len || memcmp(exact, text, len) != 0)
            __builtin_trap();
        if (len && pgpipe_json_write_to(root, exact, len, &l3) != PGPIPE_LIMIT)
            __builtin_trap();
        if (pgpipe_json_write(pgpipe_json_root(fj_doc2), &again, &l3) != PGPIPE_OK || l3 != len)
            __builtin_trap();
        free(exact);
        pgpipe_free(again);
        pgpipe_free(text);
        /* the text in jsonb's member order: no longer, valid JSON, and
        ** ordering it again changes nothing */
        pp_buf jb = { 0 }, jb2 = { 0 };
        if (pp_jsonb_order(&jb, buf, size) != PGPIPE_OK || jb.len > size ||
            (size && pgpipe_json_validate(jb.data, jb.len, NULL) != PGPIPE_OK) ||
            pp_jsonb_order(&jb2, jb.data, jb.len) != PGPIPE_OK || jb2.len != jb.len ||
            (jb.len && memcmp(jb.data, jb2.data, jb.len) != 0))
            __builtin_trap();
        pp_buf_free(&jb);
        pp_buf_free(&jb2);
        fj_walk(root);
        pgpipe_json_path(root, "a.b[2].c");
        pgpipe_json_path(root, "[0]");
    }
    free(buf);
    return 0;
}
