/*
** The parse layer's private header: readers of the input formats (JSON, CSV),
** the framer that cuts a JSON stream into records, the SQL statement
** splitter, and what they share with the layers above.
** Parsers touch no database. Layer order and rules: src/base/pp_base.h.
**
** @components json json_num csv framer sqlsplit
*/
#ifndef PP_PARSE_H
#define PP_PARSE_H
#include "../base/pp_base.h"

/* Declarations of a component sit inside its PGPIPE_OMIT_ guard. */
#ifndef PGPIPE_OMIT_JSON
/* Append the compact JSON text of a value (src/parse/json.c). */
PGPIPE_PRIVATE int json_write_buf(pp_buf *b, const pgpipe_json_val *v);
/* Does an input that starts with p[0..n1), its first line, hold one value
** written over several lines rather than NDJSON records? The first line is
** JSON that is valid as far as it goes but ends too soon, and the text up
** to n2 (through the second line; n2 <= n1: not known) still is, or is
** whole; a second line that fails at once means the first line was a broken
** record and the second the next record (src/parse/json.c). */
PGPIPE_PRIVATE int json_line_goes_on(const char *p, size_t n1, size_t n2);
/* Numbers (src/parse/json_num.c). The double nearest to the JSON number
** text s (n bytes, as the scanner accepted it): PGPIPE_OK, PGPIPE_LIMIT
** (beyond the double range: +-HUGE_VAL) or PGPIPE_NOMEM. shape says what
** the scanner saw, for a faster path: JSON_NUM_INT (digits only), JSON_NUM_FRAC
** (a fraction, no exponent) or JSON_NUM_ANY (an exponent, or not known). */
enum { JSON_NUM_ANY, JSON_NUM_INT, JSON_NUM_FRAC };
PGPIPE_PRIVATE int json_num_parse(const char *s, size_t n, int shape, double *out);
/* The shortest text that reads back as d, NUL-terminated, into buf (at
** least PGPIPE_JSON_DOUBLE_BUF bytes); 0 and "" when d is not finite. */
PGPIPE_PRIVATE size_t json_num_write(char *buf, double d);
#endif
#ifndef PGPIPE_OMIT_FRAMER
/* The framer (src/parse/framer.c) cuts a stream of NDJSON lines, a JSON
** array or one JSON document, fed in chunks of any size, into records: it
** hands each record's bytes to a callback, with where it starts. It parses
** no record: that is the caller's job (a bad record is a dead letter, a
** broken frame ends the input). The loader, the HTTP ingest and the records
** store's import share it. */
enum { PP_FRAME_NDJSON, PP_FRAME_ARRAY, PP_FRAME_ONE };
/* JSON array states (pp_framer.state) */
enum { PP_FR_START, PP_FR_FIRST, PP_FR_VALUE, PP_FR_ELEM, PP_FR_AFTER, PP_FR_END };
/* pp_frame.flags */
#define PP_FRAME_OVERLONG 1 /* raw is the first max_record bytes of a longer record */
#define PP_FRAME_CUT 2      /* the input ended inside this array element */

typedef struct pp_frame {
    const char *raw;   /* the record (NDJSON: without the line end and a BOM) */
    size_t len;
    long long line;    /* line of its first byte, from 1 */
    long long col;     /* characters before it on that line (array elements) */
    long long off;     /* byte offset of its first byte in the input */
    int flags;
} pp_frame;

/* Returns PGPIPE_OK to go on; anything else stops the feed and is returned. */
typedef int (*pp_frame_fn)(void *ud, const pp_frame *r);

typedef struct pp_framer {
    int kind;
    size_t max_record;
    pp_frame_fn fn;
    void *ud;
    long long fed;        /* input bytes fed so far */
    pp_buf carry;         /* a record straddling chunks */
    long long carry_line, carry_off, carry_col;
    int carry_over;       /* the record went past max_record */
    long long line_no;    /* lines started (NDJSON) / newlines seen (array) */
    int bom_pos;          /* bytes of a UTF-8 BOM matched at the stream start */
    int state;            /* array: PP_FR_*; NDJSON, one: 1 while carrying */
    int depth, instr, esc, scalar;
    long long nl_off;     /* array: offset of the current line's first byte */
    long long cont;       /* array: UTF-8 continuation bytes seen on the current line */
    int unclosed;         /* set by framer_end: the array lacks its ']' */
    int single;           /* array: the input is one object, not an array */
    pgpipe_error err;     /* a broken frame (PGPIPE_PARSE): message, line, offset */
} pp_framer;

/* Start a stream (keeps the carry buffer's memory); max_record > 0. */
PGPIPE_PRIVATE void framer_begin(pp_framer *f, int kind, size_t max_record, pp_frame_fn fn, void *ud);
/* Returns PGPIPE_OK, PGPIPE_NOMEM, PGPIPE_PARSE (a broken frame, f->err;
** the stream cannot go on) or what the callback returned. */
PGPIPE_PRIVATE int framer_feed(pp_framer *f, const char *data, size_t len);
/* The input ended: hands over the record being carried. */
PGPIPE_PRIVATE int framer_end(pp_framer *f);
PGPIPE_PRIVATE void framer_free(pp_framer *f);
/* The column (from 1, in characters) of absolute offset off of a JSON
** array's input, on the line the framer is on (the input's end, after
** framer_end). */
PGPIPE_PRIVATE long long framer_column(const pp_framer *f, long long off);
#endif
#ifndef PGPIPE_OMIT_SQLSPLIT
/* SQL words as the statement splitter reads them (src/parse/sqlsplit.c); the
** migration runner uses them to spot transaction control statements. */
PGPIPE_PRIVATE int sqlsplit_is_ident_char(unsigned char c);
PGPIPE_PRIVATE int sqlsplit_word_is(const char *w, size_t n, const char *kw);
#endif

#endif /* PP_PARSE_H */
