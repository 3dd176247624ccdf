/*
** libFuzzer target for the pgoutput decoder (src/cdc/cdc_proto.c) and the
** event payload built from what it decodes (pp_cdc_event_json, _end in
** src/cdc/cdc.c). The input is a sequence of messages, each a 4-byte
** big-endian length and that many bytes (a length past the end takes the
** rest), fed to one decoder in order, as a replication stream would: its
** relations and its streamed-block state carry from one message to the next.
** Invariants: no crash or sanitizer report; a message is accepted or refused
** with PGPIPE_PARSE (PGPIPE_NOMEM aside) and an error text; an accepted row
** change names a known relation and carries tuples exactly as wide as it;
** its payload builds (or, for a TRUNCATE of a relation never described,
** is refused) into {"op":..}. The seeds (test/fuzz/seeds-cdc/)
** are messages a real PostgreSQL server sent.
*/
/* only what this target needs: each target compiles the amalgamation,
** and make test builds all of them */
#define PGPIPE_OMIT_JSON 1
#define PGPIPE_OMIT_CSV 1
#define PGPIPE_OMIT_FRAMER 1
#define PGPIPE_OMIT_POOL 1
#define PGPIPE_OMIT_LOCAL 1
#define PGPIPE_OMIT_DLQ 1
#include "pgpipe.c"

static void fc_check_tuple(const pp_cdc_msg *m, const pp_cdc_tuple *t)
{
    if (!t || !m->rel || t->n != m->rel->ncols)
        __builtin_trap();
    for (int i = 0; i < t->n; i++) {
        const pp_cdc_value *v = &t->v[i];
        if (v->kind == 't' || v->kind == 'b') {
            if (v->len && !v->data)
                __builtin_trap();
        } else if (v->kind != 'n' && v->kind != 'u') {
            __builtin_trap();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pp_cdc_decoder d;
    memset(&d, 0, sizeof d);
    pp_buf b = { 0, 0, 0 };
    pgpipe_error err;
    const char *p = (const char *)data, *end = p + size;
    while (end - p >= 4) {
        const unsigned char *u = (const unsigned char *)p;
        size_t n = (size_t)u[0] << 24 | (size_t)u[1] << 16 | (size_t)u[2] << 8 | u[3];
        p += 4;
        if (n > (size_t)(end - p))
            n = (size_t)(end - p);
        /* a copy of its own: reading past the message is then an ASan report */
        char *msg = malloc(n ? n : 1);
        if (!msg)
            break;
        memcpy(msg, p, n);
        p += n;
        pgpipe_error_clear(&err);
        pp_cdc_msg m;
        int rc = pp_cdc_decode(&d, msg, n, &m, &err);
        if (rc == PGPIPE_PARSE) {
            if (!err.message[0])
                __builtin_trap();
        } else if (rc == PGPIPE_OK) {
            switch (m.type) {
            case 'I':
                fc_check_tuple(&m, m.newt);
                break;
            case 'U':
                fc_check_tuple(&m, m.newt);
                if (m.old_kind)
                    fc_check_tuple(&m, m.oldt);
                break;
            case 'D':
                if (!m.old_kind)
                    __builtin_trap();
                fc_check_tuple(&m, m.oldt);
                break;
            case 'R':
                if (!m.rel || pp_cdc_rel_find(&d, m.rel->oid) != m.rel)
                    __builtin_trap();
                break;
            default:
                break;
            }
            int nev = m.type == 'T' ? m.nrelids : (m.type == 'I' || m.type == 'U' || m.type == 'D');
            for (int i = 0; i < nev; i++) {
                b.len = 0;
                int jr = pp_cdc_event_json(&b, &d, &m, i, m.xid);
                int known = m.type != 'T' || pp_cdc_rel_find(&d, m.relids[i]) != NULL;
                if (jr == PGPIPE_OK && known)
                    jr = pp_cdc_event_end(&b, m.end_lsn, m.ts);
                /* values of json, jsonb and number types are the server's
                ** text as it is: only the frame is checked */
                if (jr == PGPIPE_OK && (b.len < 16 || memcmp(b.data, "{\"op\":\"", 7) != 0 ||
                                        b.data[b.len - 1] != '}'))
                    __builtin_trap();
                if (jr != PGPIPE_OK && jr != PGPIPE_NOMEM && !(jr == PGPIPE_PARSE && !known))
                    __builtin_trap();
            }
            if (m.type == 'B' || m.type == 'C' || m.type == 'c') {
                b.len = 0;
                if (pp_cdc_event_end(&b, m.end_lsn, m.ts) != PGPIPE_OK)
                    __builtin_trap();
            }
        } else if (rc != PGPIPE_NOMEM) {
            __builtin_trap();
        }
        free(msg);
    }
    pp_buf_free(&b);
    pp_cdc_decoder_free(&d);
    return 0;
}
