/*
** The CDC layer's private header: changes of another PostgreSQL database,
** read over a logical replication connection (the built-in pgoutput
** plugin), into staging. Layer order and rules: src/base/pp_base.h.
**
**   cdc_proto   the pgoutput message decoder (protocol versions 1 and 2:
**               transactions, relations, types, row changes, truncate,
**               origins, logical messages, streamed transactions); pure,
**               works on byte buffers
**   cdc         set-up (checks, publication, slot), the replication
**               stream, events into staging.raw_events with the applied
**               LSN in the same transaction; the public API (cdc.h)
**
** Both are left out with PGPIPE_OMIT_CDC (src/pgpipe.h says what it needs).
**
** @components cdc_proto cdc
*/
#ifndef PP_CDC_H
#define PP_CDC_H
#include "../http/pp_http.h"

#ifndef PGPIPE_OMIT_CDC

/* ==== The pgoutput decoder (cdc_proto.c) ================================
** A decoder keeps what the stream told it so far: the relations (the
** 'R' messages, by OID) and whether a streamed block is open (inside one,
** changes carry the xid of their (sub)transaction). pp_cdc_decode takes
** the payload of one XLogData message (one pgoutput message) and fills
** *m; pointers in *m point into buf or into the decoder and stay valid
** until the next call. */
typedef struct pp_cdc_col {
    char *name;
    uint32_t type;              /* the type's OID */
    int32_t typmod;
    int key;                    /* part of the replica identity */
} pp_cdc_col;

typedef struct pp_cdc_rel {
    uint32_t oid;
    char *nsp;                  /* "pg_catalog" when the message says "" */
    char *name;
    char ident;                 /* REPLICA IDENTITY: 'd'efault, 'n'othing, 'f'ull, 'i'ndex */
    int ncols;
    pp_cdc_col *cols;
} pp_cdc_rel;

/* One column of a tuple: kind 'n' NULL, 'u' unchanged TOASTed value (not
** sent: the row's value did not change and is not known here), 't' text,
** 'b' binary (data, len); 'f' is never decoded: a 'u' value cdc.c filled
** in from the row's last image (text, named in the event's "filled"). */
typedef struct pp_cdc_value {
    char kind;
    const char *data;
    uint32_t len;
} pp_cdc_value;

typedef struct pp_cdc_tuple {
    int n;
    int cap;
    pp_cdc_value *v;
} pp_cdc_tuple;

/* Message types: the byte pgoutput sends. */
#define PP_CDC_BEGIN         'B'
#define PP_CDC_COMMIT        'C'
#define PP_CDC_ORIGIN        'O'
#define PP_CDC_RELATION      'R'
#define PP_CDC_TYPE          'Y'
#define PP_CDC_INSERT        'I'
#define PP_CDC_UPDATE        'U'
#define PP_CDC_DELETE        'D'
#define PP_CDC_TRUNCATE      'T'
#define PP_CDC_MESSAGE       'M'
#define PP_CDC_STREAM_START  'S'
#define PP_CDC_STREAM_STOP   'E'
#define PP_CDC_STREAM_COMMIT 'c'
#define PP_CDC_STREAM_ABORT  'A'

typedef struct pp_cdc_msg {
    char type;                  /* PP_CDC_* */
    uint32_t xid;               /* B S c A, and changes inside a streamed block */
    uint32_t subxid;            /* A: the aborted (sub)transaction */
    int first_segment;          /* S */
    uint64_t lsn;               /* B: final LSN; C c: commit LSN; M: the message's; O: commit LSN */
    uint64_t end_lsn;           /* C c: end of the commit record */
    int64_t ts;                 /* B C c: commit time, µs since 2000-01-01 UTC */
    uint8_t flags;              /* C c: flags; M: 1 = transactional; T: 1 CASCADE, 2 RESTART IDENTITY */
    const pp_cdc_rel *rel;      /* R I U D */
    uint32_t oid;               /* Y: the type's OID */
    const char *nsp, *name;     /* Y: the type; O: origin name (name); M: prefix (name) */
    const char *content;        /* M */
    uint32_t content_len;
    char old_kind;              /* U D: 'K' key columns, 'O' the whole old row, 0 none */
    const pp_cdc_tuple *oldt;   /* U D when old_kind */
    const pp_cdc_tuple *newt;   /* I U */
    const uint32_t *relids;     /* T */
    int nrelids;
} pp_cdc_msg;

typedef struct pp_cdc_decoder {
    int in_stream;              /* between Stream Start and Stream Stop */
    pp_cdc_rel *rels;
    int nrels, caprels;
    pp_cdc_tuple oldt, newt;
    uint32_t *relids;
    int caprelids;
} pp_cdc_decoder;

/* Decode one message. PGPIPE_OK, PGPIPE_NOMEM, or PGPIPE_PARSE with err
** naming the message and what is wrong (truncated, unknown type, a change
** for a relation no 'R' message described). */
PGPIPE_PRIVATE int pp_cdc_decode(pp_cdc_decoder *d, const char *buf, size_t len,
                                 pp_cdc_msg *m, pgpipe_error *err);
PGPIPE_PRIVATE const pp_cdc_rel *pp_cdc_rel_find(const pp_cdc_decoder *d, uint32_t oid);
PGPIPE_PRIVATE void pp_cdc_decoder_free(pp_cdc_decoder *d);

/* Big-endian integers of the replication protocol. */
static inline PP_UNUSED uint64_t pp_cdc_get64(const char *p)
{
    const unsigned char *u = (const unsigned char *)p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | u[i];
    return v;
}
static inline PP_UNUSED void pp_cdc_put64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xFF);
        v >>= 8;
    }
}
/* "X/Y" as PostgreSQL writes an LSN; size >= 20. */
PGPIPE_PRIVATE void pp_cdc_lsn_str(uint64_t lsn, char *out, size_t size);
/* Parse "X/Y"; 0 when s is not an LSN. */
PGPIPE_PRIVATE int pp_cdc_lsn_parse(const char *s, uint64_t *lsn);

/* The payload of a change event (cdc.c), as README and cdc.h describe it,
** without the commit's fields and the closing brace: those are known only
** at the commit (pp_cdc_event_end). m is an I, U, D or T message (T: its
** relation i); xid is the top-level transaction's. */
PGPIPE_PRIVATE int pp_cdc_event_json(pp_buf *b, const pp_cdc_decoder *d, const pp_cdc_msg *m,
                                     int i, uint32_t xid);
PGPIPE_PRIVATE int pp_cdc_event_end(pp_buf *b, uint64_t end_lsn, int64_t commit_ts);

#endif /* PGPIPE_OMIT_CDC */
#endif /* PP_CDC_H */
