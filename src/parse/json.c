/*
** JSON: an RFC 8259 parser into a flat document, a validator that allocates
** nothing, accessors, a compact writer, deep equality and an NDJSON reader.
**
** The document is a tape: one contiguous array of 16-byte nodes in document
** order. A scalar is one node; a container node is followed by its subtree
** and records how many nodes the subtree spans (itself included), so skipping
** a value is O(1). An object's children alternate key node, value node.
** Strings without escapes and numbers point into the input (zero copy); only
** strings with escapes are decoded, into an arena of chunks owned by the
** document. Open containers during the parse are chained through their nodes
** (a node holds its parent's index until it is closed) and the kind of each
** open container is one bit in a fixed bit stack, so nothing recurses and
** the depth limit bounds the bit stack (PGPIPE_JSON_DEPTH_LIMIT bits).
**
** The validator is the same scanner specialised with build = 0 (the node and
** arena code drops out), so the two can never disagree.
*/

#include "pp_parse.h"

#if defined(__GNUC__) || defined(__clang__)
#if PGPIPE_SMALL /* one scanner for the parser and the validator, not two */
#define JSON_INLINE static inline
#else
#define JSON_INLINE static inline __attribute__((always_inline))
#endif
#define JSON_NOINLINE static __attribute__((noinline))
#else
#define JSON_INLINE static inline
#define JSON_NOINLINE static
#endif

#if (defined(__GNUC__) || defined(__clang__)) && defined(__BYTE_ORDER__) && \
    __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && !PGPIPE_SMALL
#define JSON_SWAR 1
#if defined(__SSE2__)
#include <emmintrin.h>
#define JSON_SSE2 1
#endif
#endif

struct pgpipe_json_val {
    uint64_t tag; /* type | flag | (string/number length or container count) << 8 */
    union {
        const char *str; /* strings and numbers: their bytes */
        size_t skip;     /* containers: nodes in the subtree, itself included */
    } u;
};
typedef struct pgpipe_json_val json_node;

#define JSON_TYPE(n) ((int)((n)->tag & 7u))
/* bool: true; string: decoded from escapes (may need escaping when written);
** number: integer syntax (no fraction, no exponent) */
#define JSON_FLAG 8u
/* number: an exponent (neither JSON_FLAG nor this: a fraction without one) */
#define JSON_FLAG_EXP 16u
#define JSON_SHIFT 8
#define JSON_LEN(n) ((size_t)((n)->tag >> JSON_SHIFT))
#define JSON_NONE ((size_t)-1)
#define JSON_VSTACK_WORDS (PGPIPE_JSON_DEPTH_LIMIT / 64 + 1)

static inline size_t json_size(const json_node *n)
{
    return JSON_TYPE(n) >= PGPIPE_JSON_ARRAY ? n->u.skip : 1;
}

/* ---- the document handle --------------------------------------------- */

typedef struct json_chunk {
    struct json_chunk *next;
    size_t cap, used;
} json_chunk;

struct pgpipe_json_doc {
    pp_handle hdr;
    json_node *nodes;
    size_t ncap, nused;
    json_chunk *arena;  /* newest chunk first */
    char *copy;         /* the input copy (copy option) */
    size_t copy_cap;
    size_t max_depth;
    int copy_on;
    int ok;             /* the last parse succeeded */
    char *source;
};

static const char json_default_source[] = "<buffer>";

int pgpipe_json_doc_open(pgpipe_json_doc **out)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_json_doc *d = *out = pp_handle_new(sizeof *d);
    if (!d)
        return PGPIPE_NOMEM;
    d->max_depth = PGPIPE_JSON_DEPTH_DEFAULT;
    return PGPIPE_OK;
}

static void json_arena_free(json_chunk *c)
{
    while (c) {
        json_chunk *n = c->next;
        pp_free(c);
        c = n;
    }
}

void pgpipe_json_doc_close(pgpipe_json_doc *d)
{
    if (!d)
        return;
    json_arena_free(d->arena);
    pp_free(d->nodes);
    pp_free(d->copy);
    pp_free(d->source);
    d->hdr.magic = 0;
    pp_free(d);
}

int pgpipe_json_doc_set_max_depth(pgpipe_json_doc *d, int max_depth)
{
    if (!d)
        return PGPIPE_MISUSE;
    if (max_depth < 1 || max_depth > PGPIPE_JSON_DEPTH_LIMIT)
        return pp_err(&d->hdr.err, PGPIPE_MISUSE, "max depth %d is outside 1..%d", max_depth,
                      PGPIPE_JSON_DEPTH_LIMIT);
    d->max_depth = (size_t)max_depth;
    return PGPIPE_OK;
}

int pgpipe_json_doc_set_source(pgpipe_json_doc *d, const char *source)
{
    if (!d)
        return PGPIPE_MISUSE;
    char *s = NULL;
    if (source && !(s = pp_strdup(source)))
        return pp_err_nomem(&d->hdr.err);
    pp_free(d->source);
    d->source = s;
    return PGPIPE_OK;
}

int pgpipe_json_doc_set_copy(pgpipe_json_doc *d, int copy)
{
    if (!d)
        return PGPIPE_MISUSE;
    d->copy_on = copy != 0;
    return PGPIPE_OK;
}

static const char *json_source(const pgpipe_json_doc *d)
{
    return d->source ? d->source : json_default_source;
}

size_t pgpipe_json_doc_memory(const pgpipe_json_doc *d)
{
    if (!d)
        return 0;
    size_t n = sizeof *d + d->ncap * sizeof(json_node) + d->copy_cap;
    for (const json_chunk *c = d->arena; c; c = c->next)
        n += sizeof *c + c->cap;
    return n;
}

/* Forget the last document but keep the memory; several arena chunks are
** merged into one, so a steady stream ends up allocating nothing. */
static void json_doc_reset(pgpipe_json_doc *d)
{
    d->nused = 0;
    d->ok = 0;
    json_chunk *c = d->arena;
    if (c && c->next) {
        size_t total = 0;
        for (json_chunk *x = c; x; x = x->next)
            total += x->cap;
        json_arena_free(c);
        d->arena = pp_malloc(sizeof(json_chunk) + total);
        if (d->arena) {
            d->arena->next = NULL;
            d->arena->cap = total;
        }
        c = d->arena;
    }
    if (c)
        c->used = 0;
}

static char *json_arena_alloc(pgpipe_json_doc *d, size_t n)
{
    json_chunk *c = d->arena;
    if (c && c->cap - c->used >= n) {
        char *r = (char *)(c + 1) + c->used;
        c->used += n;
        return r;
    }
    size_t cap = c ? c->cap * 2 : 4096;
    if (cap < n)
        cap = n;
    if (cap > SIZE_MAX - sizeof(json_chunk))
        return NULL;
    json_chunk *x = pp_malloc(sizeof(json_chunk) + cap);
    if (!x)
        return NULL;
    x->next = c;
    x->cap = cap;
    x->used = n;
    d->arena = x;
    return (char *)(x + 1);
}

/* ---- scanning helpers -------------------------------------------------- */

static const unsigned char json_ws_tab[256] = {
    [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1,
};
#define JSON_WS(ch) (json_ws_tab[(unsigned char)(ch)])
#define JSON_DIGIT(ch) ((unsigned)((ch) - '0') < 10u)

#ifdef JSON_SWAR
#define JSON_ONES 0x0101010101010101ull
#define JSON_HIGH 0x8080808080808080ull
static inline uint64_t json_load8(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}
#ifndef JSON_SSE2
/* High bit set in every byte that is '"', '\' or < 0x20 (exact for the
** lowest such byte, which is all we use). */
static inline uint64_t json_str_mask(uint64_t w)
{
    uint64_t q = w ^ (JSON_ONES * '"');
    uint64_t b = w ^ (JSON_ONES * '\\');
    return (((q - JSON_ONES) & ~q) | ((b - JSON_ONES) & ~b) | ((w - JSON_ONES * 0x20) & ~w)) &
           JSON_HIGH;
}
#endif
#endif

static inline const unsigned char *json_skip_digits(const unsigned char *p, const unsigned char *end)
{
#ifdef JSON_SWAR
    /* eight bytes at a time; the first that is not a digit ends it (the
    ** high bit of each byte of m: its high nibble is not 3, or it is above '9') */
    while (end - p >= 8) {
        uint64_t w = json_load8(p), hi = 0xF0F0F0F0F0F0F0F0ull, d = JSON_ONES * 0x30;
        uint64_t y = ((w & hi) ^ d) | (((w + JSON_ONES * 6) & hi) ^ d);
        uint64_t m = ((y >> 4) + JSON_ONES * 0x7F) & JSON_HIGH;
        if (m)
            return p + ((unsigned)__builtin_ctzll(m) >> 3);
        p += 8;
    }
#endif
    while (p < end && JSON_DIGIT(*p))
        p++;
    return p;
}

/* Skip JSON whitespace; pretty-printed input has long runs of spaces, taken
** eight at a time. */
JSON_INLINE const unsigned char *json_skip_ws(const unsigned char *p, const unsigned char *end)
{
    if (PP_LIKELY(p < end && *p > ' '))
        return p;
    if (end - p >= 2 && p[0] == ' ' && p[1] > ' ') /* ": " */
        return p + 1;
#ifdef JSON_SSE2
    if (end - p >= 17 && *p == '\n') { /* a line end and its indentation */
        unsigned bits = ~(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(
                            _mm_loadu_si128((const __m128i *)(const void *)(p + 1)),
                            _mm_set1_epi8(' '))) & 0xFFFFu;
        if (bits) {
            const unsigned char *q = p + 1 + __builtin_ctz(bits);
            if (*q > ' ')
                return q;
            p = q;
        }
    }
    {
        const __m128i s = _mm_set1_epi8(' '), n = _mm_set1_epi8('\n');
        const __m128i r = _mm_set1_epi8('\r'), t = _mm_set1_epi8('\t');
        while (end - p >= 16) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
            __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, s), _mm_cmpeq_epi8(x, n)),
                                     _mm_or_si128(_mm_cmpeq_epi8(x, r), _mm_cmpeq_epi8(x, t)));
            unsigned bits = ~(unsigned)_mm_movemask_epi8(m) & 0xFFFFu;
            if (bits)
                return p + __builtin_ctz(bits);
            p += 16;
        }
    }
#endif
#ifdef JSON_SWAR
    while (end - p >= 8) {
        uint64_t x = json_load8(p) ^ (JSON_ONES * ' ');
        if (x == 0) {
            p += 8;
            continue;
        }
        p += (unsigned)__builtin_ctzll(x) >> 3;
        if (!JSON_WS(*p))
            return p;
        p++;
    }
#endif
    while (p < end && JSON_WS(*p))
        p++;
    return p;
}

static int json_hex4(const unsigned char *p, const unsigned char *end)
{
    if (end - p < 4)
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], x;
        if (c - '0' < 10u)
            x = c - '0';
        else if ((c | 0x20) - 'a' < 6u)
            x = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v * 16 + (int)x;
    }
    return v;
}

typedef struct json_ctx {
    const unsigned char *beg, *end;
    size_t max_depth;
    pgpipe_json_doc *doc;
    const unsigned char *err_pos;
    const char *err_fmt; /* printf format with at most one int argument */
    int err_arg;
    int err_code;
    int err_found;       /* append a description of the byte at err_pos */
} json_ctx;

JSON_NOINLINE void json_set_err(json_ctx *c, const unsigned char *pos, int code, const char *fmt,
                                int arg, int found)
{
    c->err_pos = pos;
    c->err_code = code;
    c->err_fmt = fmt;
    c->err_arg = arg;
    c->err_found = found;
}

/* Length of the valid UTF-8 sequence at p (p[0] >= 0x80), 0 after setting
** the error (the checks are pp_utf8_problem's). */
JSON_NOINLINE size_t json_utf8_bad(json_ctx *c, const unsigned char *p)
{
    size_t need;
    const char *why = pp_utf8_problem(p, (size_t)(c->end - p), &need);
    if (!why)
        return need;
    json_set_err(c, p, PGPIPE_PARSE, why, (int)p[0], 0);
    return 0;
}

/* One escape sequence; p at the backslash. Returns the byte after it or NULL. */
JSON_NOINLINE const unsigned char *json_escape(json_ctx *c, const unsigned char *p,
                                               const unsigned char *open)
{
    const unsigned char *end = c->end, *bs = p;
    p++;
    if (p >= end) {
        json_set_err(c, open, PGPIPE_PARSE,
                     "unterminated string: the input ends before its closing '\"'", 0, 0);
        return NULL;
    }
    switch (*p) {
    case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
        return p + 1;
    case 'u': {
        int u = json_hex4(p + 1, end);
        if (u < 0) {
            json_set_err(c, bs, PGPIPE_PARSE,
                         "invalid \\u escape in string: expected four hexadecimal digits", 0, 0);
            return NULL;
        }
        p += 5;
        if (u >= 0xD800 && u <= 0xDBFF) {
            if (end - p >= 6 && p[0] == '\\' && p[1] == 'u') {
                int lo = json_hex4(p + 2, end);
                if (lo >= 0xDC00 && lo <= 0xDFFF)
                    return p + 6;
            }
            json_set_err(c, bs, PGPIPE_PARSE,
                         "lone surrogate \\u%04X in string: a high surrogate must be followed "
                         "by a low surrogate escape \\uDC00-\\uDFFF", u, 0);
            return NULL;
        }
        if (u >= 0xDC00 && u <= 0xDFFF) {
            json_set_err(c, bs, PGPIPE_PARSE,
                         "lone surrogate \\u%04X in string: a low surrogate without a high "
                         "surrogate before it", u, 0);
            return NULL;
        }
        return p;
    }
    default:
        if (*p >= 0x20 && *p < 0x7F)
            json_set_err(c, bs, PGPIPE_PARSE,
                         "invalid escape sequence '\\%c' in string (valid are \\\" \\\\ \\/ \\b "
                         "\\f \\n \\r \\t \\uXXXX)", *p, 0);
        else
            json_set_err(c, bs, PGPIPE_PARSE,
                         "invalid escape sequence in string: backslash followed by byte 0x%02X",
                         *p, 0);
        return NULL;
    }
}

#ifdef JSON_SSE2
/* 1 when the 15 bytes at p (16 readable) are five 3-byte characters with
** lead bytes E1..EC or EE..EF (E0 and ED, which restrict their second byte,
** are left to the byte-wise check). */
static inline int json_utf8_five3(const unsigned char *p)
{
    const __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
    unsigned cont = (unsigned)_mm_movemask_epi8(
        _mm_cmpeq_epi8(_mm_and_si128(x, _mm_set1_epi8((char)0xC0)), _mm_set1_epi8((char)0x80)));
    unsigned lead = (unsigned)_mm_movemask_epi8(
        _mm_cmpeq_epi8(_mm_and_si128(x, _mm_set1_epi8((char)0xF0)), _mm_set1_epi8((char)0xE0)));
    unsigned odd = (unsigned)_mm_movemask_epi8(_mm_or_si128(
        _mm_cmpeq_epi8(x, _mm_set1_epi8((char)0xE0)), _mm_cmpeq_epi8(x, _mm_set1_epi8((char)0xED))));
    return (cont & 0x7FFFu) == 0x6DB6u && (lead & 0x7FFFu) == 0x1249u && !(odd & 0x1249u);
}
#endif

/* Check the UTF-8 of a string segment [p, e); e is at a '"', '\', control
** byte or the input end, so no valid sequence crosses it. 1 = valid. */
static int json_utf8_check(json_ctx *c, const unsigned char *p, const unsigned char *e)
{
    for (;;) {
#ifdef JSON_SSE2
        while (e - p >= 16) {
            unsigned m = (unsigned)_mm_movemask_epi8(_mm_loadu_si128((const __m128i *)(const void *)p));
            if (m) {
                p += __builtin_ctz(m);
                goto high;
            }
            p += 16;
        }
#endif
        while (p < e && *p < 0x80)
            p++;
        if (p >= e)
            return 1;
#ifdef JSON_SSE2
    high:
#endif
        do { /* a run of non-ASCII characters; 3- and 2-byte ones inline */
            size_t avail = (size_t)(c->end - p);
            if (pp_utf8_is3(p, avail)) {
                p += 3;
#ifdef JSON_SSE2
                while (e - p >= 16 && json_utf8_five3(p)) /* CJK text, 5 at a time */
                    p += 15;
#endif
            } else if (pp_utf8_is2(p, avail)) {
                p += 2;
            } else {
                size_t n = json_utf8_bad(c, p);
                if (!n)
                    return 0;
                p += n;
            }
        } while (p < e && *p >= 0x80);
        if (p >= e)
            return 1;
    }
}

/* Scan a string body; p is just past the opening quote (at open). Returns the
** closing quote, or NULL with the error set. *esc = 1 when escapes occur.
** The fast loops stop only at '"', '\' and control bytes; non-ASCII bytes
** are noted and the UTF-8 of the segment is checked before the stop byte is
** acted on, so the first problem in the string is the one reported. */
JSON_INLINE const unsigned char *json_scan_str(json_ctx *c, const unsigned char *p,
                                             const unsigned char *open, int *esc)
{
    const unsigned char *end = c->end, *seg = p;
    unsigned high = 0;
    for (;;) {
#ifdef JSON_SSE2
        {
            const __m128i q = _mm_set1_epi8('"'), b = _mm_set1_epi8('\\');
            const __m128i ctl = _mm_set1_epi8(0x1F);
            while (end - p >= 16) {
                __m128i x = _mm_loadu_si128((const __m128i *)(const void *)p);
                __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, q), _mm_cmpeq_epi8(x, b)),
                                         _mm_cmpeq_epi8(_mm_max_epu8(x, ctl), ctl));
                unsigned bits = (unsigned)_mm_movemask_epi8(m);
                high |= (unsigned)_mm_movemask_epi8(x);
                if (bits) {
                    p += __builtin_ctz(bits);
                    goto special;
                }
                p += 16;
            }
        }
#elif defined(JSON_SWAR)
        while (end - p >= 8) {
            uint64_t w = json_load8(p);
            uint64_t m = json_str_mask(w);
            high |= (w & JSON_HIGH) != 0;
            if (m) {
                p += (unsigned)__builtin_ctzll(m) >> 3;
                goto special;
            }
            p += 8;
        }
#endif
        for (; p < end && *p >= 0x20 && *p != '"' && *p != '\\'; p++)
            high |= *p & 0x80;
        if (PP_UNLIKELY(p >= end)) {
            if (high && !json_utf8_check(c, seg, p))
                return NULL;
            json_set_err(c, open, PGPIPE_PARSE,
                         "unterminated string: the input ends before its closing '\"'", 0, 0);
            return NULL;
        }
#if defined(JSON_SSE2) || defined(JSON_SWAR)
    special:
#endif
        if (PP_UNLIKELY(high)) {
            if (!json_utf8_check(c, seg, p))
                return NULL;
            high = 0;
        }
        if (PP_LIKELY(*p == '"'))
            return p;
        if (*p == '\\') {
            *esc = 1;
            if (!(p = json_escape(c, p, open)))
                return NULL;
            seg = p;
        } else {
            json_set_err(c, p, PGPIPE_PARSE,
                         "unescaped control character U+%04X in string (write it as an escape "
                         "such as \\n or \\u0001)", *p, 0);
            return NULL;
        }
    }
}

static size_t json_put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decode a validated string body [s, e) into out (at most e - s bytes). */
static size_t json_decode(char *out, const unsigned char *s, const unsigned char *e)
{
    char *o = out;
    while (s < e) {
        const unsigned char *b = memchr(s, '\\', (size_t)(e - s));
        if (!b)
            b = e;
        memcpy(o, s, (size_t)(b - s));
        o += b - s;
        s = b;
        if (s >= e)
            break;
        s++;
        switch (*s++) {
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            unsigned u = (unsigned)json_hex4(s, e);
            s += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {
                unsigned lo = (unsigned)json_hex4(s + 2, e);
                s += 6;
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
            }
            o += json_put_utf8(o, u);
            break;
        }
        default: *o++ = (char)s[-1]; break; /* " \ / */
        }
    }
    return (size_t)(o - out);
}

JSON_NOINLINE int json_grow(json_ctx *c, json_node **nb, json_node **np, json_node **ne)
{
    pgpipe_json_doc *d = c->doc;
    size_t used = (size_t)(*np - *nb);
    size_t cap = d->ncap ? d->ncap * 2 : 64;
    if (cap > SIZE_MAX / sizeof(json_node))
        return PGPIPE_NOMEM;
    json_node *n = pp_realloc(d->nodes, cap * sizeof(json_node));
    if (!n)
        return PGPIPE_NOMEM;
    d->nodes = n;
    d->ncap = cap;
    *nb = n;
    *np = n + used;
    *ne = n + cap;
    return PGPIPE_OK;
}

/* Was the last non-blank byte before p a ','? (for a better message) */
static int json_after_comma(const json_ctx *c, const unsigned char *p)
{
    while (p > c->beg && JSON_WS(p[-1]))
        p--;
    return p > c->beg && p[-1] == ',';
}

/* The scanner. build = 1 fills c->doc; build = 0 only validates. */
JSON_INLINE int json_scan(json_ctx *c, const int build)
{
    const unsigned char *p = c->beg;
    const unsigned char *const end = c->end;
    size_t depth = 0, open = JSON_NONE;
    const size_t max_depth = c->max_depth;
    int in_obj = 0;
    uint64_t vstack[JSON_VSTACK_WORDS];
    json_node *nb = NULL, *np = NULL, *ne = NULL;
    if (build) {
        nb = np = c->doc->nodes;
        ne = nb + c->doc->ncap;
    }

#define JSON_SKIP_WS() do { p = json_skip_ws(p, end); } while (0)
#define JSON_FAIL(pos, code, fmt, arg, found) do { \
        json_set_err(c, (pos), (code), (fmt), (arg), (found)); goto fail; } while (0)
#define JSON_NEED_NODE() do { \
        if (build && PP_UNLIKELY(np == ne) && json_grow(c, &nb, &np, &ne)) goto nomem; \
    } while (0)
#define JSON_COUNT() do { if (build) nb[open].tag += (uint64_t)1 << JSON_SHIFT; } while (0)

    JSON_SKIP_WS();
    if (PP_UNLIKELY(p >= end))
        JSON_FAIL(p, PGPIPE_PARSE, "empty input: expected a JSON value", 0, 0);

value:
    if (PP_LIKELY(*p == '"'))
        goto string_value;
    switch (*p) {
    case '"':
    string_value: {
        int esc = 0;
        const unsigned char *s = p + 1, *q = json_scan_str(c, s, p, &esc);
        if (!q)
            goto fail;
        if (build) {
            JSON_NEED_NODE();
            size_t n = (size_t)(q - s);
            const char *str = (const char *)s;
            if (esc) {
                char *o = json_arena_alloc(c->doc, n);
                if (!o)
                    goto nomem;
                n = json_decode(o, s, q);
                str = o;
            }
            np->tag = (uint64_t)PGPIPE_JSON_STRING | (esc ? JSON_FLAG : 0) |
                      ((uint64_t)n << JSON_SHIFT);
            np->u.str = str;
            np++;
        }
        p = q + 1;
        goto after_value;
    }
    case '-': case '0': case '1': case '2': case '3': case '4':
    case '5': case '6': case '7': case '8': case '9': {
        const unsigned char *s = p;
        unsigned isint = JSON_FLAG;
        if (*p == '-') {
            p++;
            if (p >= end || !JSON_DIGIT(*p))
                JSON_FAIL(p, PGPIPE_PARSE, "invalid number: expected a digit after '-'", 0, 1);
        }
        if (*p == '0') {
            p++;
            if (p < end && JSON_DIGIT(*p))
                JSON_FAIL(s, PGPIPE_PARSE,
                          "invalid number: leading zeros are not allowed", 0, 0);
        } else {
            p = json_skip_digits(p + 1, end);
        }
        if (p < end && *p == '.') {
            isint = 0;
            p++;
            if (p >= end || !JSON_DIGIT(*p))
                JSON_FAIL(p, PGPIPE_PARSE,
                          "invalid number: expected a digit after the decimal point", 0, 1);
            p = json_skip_digits(p + 1, end);
        }
        if (p < end && (*p | 0x20) == 'e') {
            isint = JSON_FLAG_EXP;
            p++;
            if (p < end && (*p == '+' || *p == '-'))
                p++;
            if (p >= end || !JSON_DIGIT(*p))
                JSON_FAIL(p, PGPIPE_PARSE,
                          "invalid number: expected a digit in the exponent", 0, 1);
            p = json_skip_digits(p + 1, end);
        }
        if (build) {
            JSON_NEED_NODE();
            np->tag = (uint64_t)PGPIPE_JSON_NUMBER | isint | ((uint64_t)(p - s) << JSON_SHIFT);
            np->u.str = (const char *)s;
            np++;
        }
        goto after_value;
    }
    case '{':
    case '[': {
        int obj = *p == '{';
        if (PP_UNLIKELY(++depth > max_depth))
            JSON_FAIL(p, PGPIPE_LIMIT,
                      "nesting too deep: more than %d levels of arrays and objects",
                      (int)max_depth, 0);
        uint64_t bit = (uint64_t)1 << (depth & 63);
        if (obj)
            vstack[depth >> 6] |= bit;
        else
            vstack[depth >> 6] &= ~bit;
        in_obj = obj;
        if (build) {
            JSON_NEED_NODE();
            np->tag = (uint64_t)(obj ? PGPIPE_JSON_OBJECT : PGPIPE_JSON_ARRAY);
            np->u.skip = open;
            open = (size_t)(np - nb);
            np++;
        }
        p++;
        JSON_SKIP_WS();
        if (p < end && *p == (obj ? '}' : ']')) {
            p++;
            goto close;
        }
        if (obj)
            goto key;
        if (p >= end)
            JSON_FAIL(p, PGPIPE_PARSE, "expected a value or ']' after '['", 0, 1);
        JSON_COUNT();
        goto value;
    }
    case 't':
        if (end - p >= 4 && memcmp(p, "true", 4) == 0) {
            if (build) {
                JSON_NEED_NODE();
                np->tag = PGPIPE_JSON_BOOL | JSON_FLAG;
                np++;
            }
            p += 4;
            goto after_value;
        }
        goto bad_literal;
    case 'f':
        if (end - p >= 5 && memcmp(p, "false", 5) == 0) {
            if (build) {
                JSON_NEED_NODE();
                np->tag = PGPIPE_JSON_BOOL;
                np++;
            }
            p += 5;
            goto after_value;
        }
        goto bad_literal;
    case 'n':
        if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
            if (build) {
                JSON_NEED_NODE();
                np->tag = PGPIPE_JSON_NULL;
                np++;
            }
            p += 4;
            goto after_value;
        }
        goto bad_literal;
    default:
        if ((*p == ']' || *p == '}') && json_after_comma(c, p))
            JSON_FAIL(p, PGPIPE_PARSE,
                      "expected a value after ',' (trailing commas are not allowed)", 0, 1);
        if (p == c->beg && end - p >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
            JSON_FAIL(p, PGPIPE_PARSE,
                      "byte order mark (BOM) at the start of the input: RFC 8259 JSON text "
                      "must not begin with one", 0, 0);
        JSON_FAIL(p, PGPIPE_PARSE,
                  "expected a value (object, array, string, number, true, false or null)", 0, 1);
    }

bad_literal:
    JSON_FAIL(p, PGPIPE_PARSE, "invalid literal: expected true, false or null", 0, 0);

key:
    if (PP_UNLIKELY(p >= end || *p != '"')) {
        if (p < end && *p == '}' && json_after_comma(c, p))
            JSON_FAIL(p, PGPIPE_PARSE,
                      "expected an object key after ',' (trailing commas are not allowed)", 0, 1);
        JSON_FAIL(p, PGPIPE_PARSE, "expected '\"' to begin an object key", 0, 1);
    }
    JSON_COUNT();
    {
        int esc = 0;
        const unsigned char *s = p + 1, *q = json_scan_str(c, s, p, &esc);
        if (!q)
            goto fail;
        if (build) {
            JSON_NEED_NODE();
            size_t n = (size_t)(q - s);
            const char *str = (const char *)s;
            if (esc) {
                char *o = json_arena_alloc(c->doc, n);
                if (!o)
                    goto nomem;
                n = json_decode(o, s, q);
                str = o;
            }
            np->tag = (uint64_t)PGPIPE_JSON_STRING | (esc ? JSON_FLAG : 0) |
                      ((uint64_t)n << JSON_SHIFT);
            np->u.str = str;
            np++;
        }
        p = q + 1;
    }
    if (PP_LIKELY(p < end && *p == ':')) {
        p++;
    } else {
        JSON_SKIP_WS();
        if (p >= end || *p != ':')
            JSON_FAIL(p, PGPIPE_PARSE, "expected ':' after object key", 0, 1);
        p++;
    }
    JSON_SKIP_WS();
    if (PP_UNLIKELY(p >= end))
        JSON_FAIL(p, PGPIPE_PARSE, "expected a value after ':'", 0, 1);
    goto value;

close:
    if (build) {
        json_node *n = nb + open;
        open = n->u.skip;
        n->u.skip = (size_t)(np - n);
    }
    depth--;
    in_obj = depth ? (int)((vstack[depth >> 6] >> (depth & 63)) & 1) : 0;
    /* fall through */

after_value:
    if (PP_UNLIKELY(depth == 0))
        goto done;
    JSON_SKIP_WS();
    if (PP_LIKELY(p < end)) {
        if (*p == ',') {
            p++;
            JSON_SKIP_WS();
            if (in_obj)
                goto key;
            if (PP_UNLIKELY(p >= end))
                JSON_FAIL(p, PGPIPE_PARSE, "expected a value after ','", 0, 1);
            JSON_COUNT();
            goto value;
        }
        if (*p == (in_obj ? '}' : ']')) {
            p++;
            goto close;
        }
    }
    if (in_obj)
        JSON_FAIL(p, PGPIPE_PARSE, "expected ',' or '}' after object member", 0, 1);
    JSON_FAIL(p, PGPIPE_PARSE, "expected ',' or ']' after array element", 0, 1);

done:
    JSON_SKIP_WS();
    if (PP_UNLIKELY(p != end))
        JSON_FAIL(p, PGPIPE_PARSE, "unexpected text after the JSON value", 0, 1);
    if (build)
        c->doc->nused = (size_t)(np - nb);
    return PGPIPE_OK;

nomem:
    c->err_code = PGPIPE_NOMEM;
    return PGPIPE_NOMEM;
fail:
    return c->err_code;

#undef JSON_SKIP_WS
#undef JSON_FAIL
#undef JSON_NEED_NODE
#undef JSON_COUNT
}

JSON_NOINLINE int json_scan_build(json_ctx *c) { return json_scan(c, 1); }
JSON_NOINLINE int json_scan_validate(json_ctx *c) { return json_scan(c, 0); }

/* Fill e with the context's error: line and column of err_pos counted from
** beg (line0 is the line number of beg; col_extra is added to columns on
** that first line; off_base to the offset). */
static int json_report(const json_ctx *c, pgpipe_error *e, const char *source, long long line0,
                       long long col_extra, long long off_base)
{
    if (!e)
        return c->err_code;
    const unsigned char *ls = c->beg, *q;
    long long line = line0, col = 1;
    while ((q = memchr(ls, '\n', (size_t)(c->err_pos - ls))) != NULL) {
        line++;
        ls = q + 1;
    }
    for (q = ls; q < c->err_pos; q++)
        col += (*q & 0xC0) != 0x80;
    if (ls == c->beg)
        col += col_extra;
    char msg[512], found[48] = "";
    snprintf(msg, sizeof msg, c->err_fmt, c->err_arg);
    if (c->err_found) {
        if (c->err_pos >= c->end)
            snprintf(found, sizeof found, ", found the end of the input");
        else if (*c->err_pos >= 0x21 && *c->err_pos < 0x7F)
            snprintf(found, sizeof found, ", found '%c'", *c->err_pos);
        else
            snprintf(found, sizeof found, ", found byte 0x%02X", *c->err_pos);
    }
    return pp_err_at(e, c->err_code, source, line, col, off_base + (c->err_pos - c->beg),
                     "%s%s at line %lld, column %lld", msg, found, line, col);
}

/* Parse into d; errors go to e (the doc's own or a reader's). */
static int json_parse_into(pgpipe_json_doc *d, const char *buf, size_t len, pgpipe_error *e,
                           const char *source, long long line0, long long col_extra,
                           long long off_base)
{
    json_doc_reset(d);
    if (d->copy_on) {
        if (len > d->copy_cap) {
            char *n = pp_realloc(d->copy, len);
            if (!n)
                return pp_err_nomem(e);
            d->copy = n;
            d->copy_cap = len;
        }
        if (len)
            memcpy(d->copy, buf, len);
        buf = d->copy;
    }
    if (d->ncap < 64) {
        json_node *n = pp_realloc(d->nodes, 64 * sizeof(json_node));
        if (!n)
            return pp_err_nomem(e);
        d->nodes = n;
        d->ncap = 64;
    }
    json_ctx c;
    c.beg = (const unsigned char *)(buf ? buf : "");
    c.end = c.beg + len;
    c.max_depth = d->max_depth;
    c.doc = d;
    int rc = json_scan_build(&c);
    if (rc == PGPIPE_NOMEM)
        return pp_err_nomem(e);
    if (rc != PGPIPE_OK)
        return json_report(&c, e, source, line0, col_extra, off_base);
    d->ok = 1;
    if (e->code != PGPIPE_OK)
        pgpipe_error_clear(e);
    return PGPIPE_OK;
}

int pgpipe_json_parse(pgpipe_json_doc *d, const char *buf, size_t len)
{
    if (!d)
        return PGPIPE_MISUSE;
    if (!buf && len) {
        d->ok = 0;
        return pp_err(&d->hdr.err, PGPIPE_MISUSE, "pgpipe_json_parse: NULL buffer");
    }
    return json_parse_into(d, buf, len, &d->hdr.err, json_source(d), 1, 0, 0);
}

const pgpipe_json_val *pgpipe_json_root(const pgpipe_json_doc *d)
{
    return d && d->ok && d->nused ? d->nodes : NULL;
}

static int json_validate_at(const char *buf, size_t len, size_t max_depth, pgpipe_error *e,
                            const char *source)
{
    json_ctx c;
    c.beg = (const unsigned char *)(buf ? buf : "");
    c.end = c.beg + len;
    c.max_depth = max_depth;
    c.doc = NULL;
    int rc = json_scan_validate(&c);
    if (rc != PGPIPE_OK)
        return json_report(&c, e, source, 1, 0, 0);
    if (e && e->code != PGPIPE_OK)
        pgpipe_error_clear(e);
    return PGPIPE_OK;
}

/* Valid as far as it goes but ends too soon (or whole: ok_whole)? */
static int json_prefix_goes_on(const char *p, size_t n, int ok_whole)
{
    while (n && (p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\n'))
        n--;
    pgpipe_error e;
    int rc = pgpipe_json_validate(p, n, &e);
    return rc == PGPIPE_OK ? ok_whole : rc == PGPIPE_PARSE && e.offset >= (long long)n;
}

PGPIPE_PRIVATE int json_line_goes_on(const char *p, size_t n1, size_t n2)
{
    if (!json_prefix_goes_on(p, n1, 0))
        return 0;
    /* the next line carries the value on (or ends it), or fails at once:
    ** then the first line was a broken record and the next one the next
    ** record ({"a":1 then {"b":2} fails at the second '{') */
    return n2 <= n1 || json_prefix_goes_on(p, n2, 1);
}

int pgpipe_json_validate(const char *buf, size_t len, pgpipe_error *err)
{
    if (!buf && len)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_json_validate: NULL buffer");
    return json_validate_at(buf, len, PGPIPE_JSON_DEPTH_DEFAULT, err, json_default_source);
}

int pgpipe_json_doc_validate(pgpipe_json_doc *d, const char *buf, size_t len)
{
    if (!d)
        return PGPIPE_MISUSE;
    if (!buf && len)
        return pp_err(&d->hdr.err, PGPIPE_MISUSE, "pgpipe_json_doc_validate: NULL buffer");
    return json_validate_at(buf, len, d->max_depth, &d->hdr.err, json_source(d));
}

/* ---- reading values ---------------------------------------------------- */

int pgpipe_json_type(const pgpipe_json_val *v) { return v ? JSON_TYPE(v) : PGPIPE_JSON_INVALID; }

const char *pgpipe_json_type_name(int type)
{
    switch (type) {
    case PGPIPE_JSON_NULL: return "null";
    case PGPIPE_JSON_BOOL: return "bool";
    case PGPIPE_JSON_NUMBER: return "number";
    case PGPIPE_JSON_STRING: return "string";
    case PGPIPE_JSON_ARRAY: return "array";
    case PGPIPE_JSON_OBJECT: return "object";
    default: return "invalid";
    }
}

int pgpipe_json_get_bool(const pgpipe_json_val *v)
{
    return v && JSON_TYPE(v) == PGPIPE_JSON_BOOL && (v->tag & JSON_FLAG);
}

const char *pgpipe_json_get_str(const pgpipe_json_val *v, size_t *len)
{
    if (!v || JSON_TYPE(v) != PGPIPE_JSON_STRING) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = JSON_LEN(v);
    return v->u.str;
}

const char *pgpipe_json_number_text(const pgpipe_json_val *v, size_t *len)
{
    if (!v || JSON_TYPE(v) != PGPIPE_JSON_NUMBER) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = JSON_LEN(v);
    return v->u.str;
}

int pgpipe_json_get_int64(const pgpipe_json_val *v, int64_t *out)
{
    int64_t dummy;
    if (!out)
        out = &dummy;
    *out = 0;
    if (!v || JSON_TYPE(v) != PGPIPE_JSON_NUMBER)
        return PGPIPE_MISUSE;
    if (!(v->tag & JSON_FLAG))
        return PGPIPE_ERROR;
    const char *s = v->u.str, *e = s + JSON_LEN(v);
    int neg = *s == '-';
    s += neg;
    uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, acc = 0;
    for (; s < e; s++) {
        unsigned dg = (unsigned)(*s - '0');
        if (acc > (limit - dg) / 10) {
            *out = neg ? INT64_MIN : INT64_MAX;
            return PGPIPE_LIMIT;
        }
        acc = acc * 10 + dg;
    }
    if (neg)
        *out = acc == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)acc;
    else
        *out = (int64_t)acc;
    return PGPIPE_OK;
}

int pgpipe_json_get_double(const pgpipe_json_val *v, double *out)
{
    double dummy;
    if (!out)
        out = &dummy;
    *out = 0;
    if (!v || JSON_TYPE(v) != PGPIPE_JSON_NUMBER)
        return PGPIPE_MISUSE;
    int shape = (v->tag & JSON_FLAG) ? JSON_NUM_INT : (v->tag & JSON_FLAG_EXP) ? JSON_NUM_ANY
                                                                                : JSON_NUM_FRAC;
    return json_num_parse(v->u.str, JSON_LEN(v), shape, out);
}

size_t pgpipe_json_len(const pgpipe_json_val *v)
{
    return v && JSON_TYPE(v) >= PGPIPE_JSON_ARRAY ? JSON_LEN(v) : 0;
}

const pgpipe_json_val *pgpipe_json_arr_get(const pgpipe_json_val *a, size_t i)
{
    if (!a || JSON_TYPE(a) != PGPIPE_JSON_ARRAY || i >= JSON_LEN(a))
        return NULL;
    const json_node *n = a + 1;
    while (i--)
        n += json_size(n);
    return n;
}

const pgpipe_json_val *pgpipe_json_obj_get(const pgpipe_json_val *o, const char *key,
                                           size_t keylen)
{
    if (!o || JSON_TYPE(o) != PGPIPE_JSON_OBJECT || (!key && keylen))
        return NULL;
    const json_node *n = o + 1;
    for (size_t i = JSON_LEN(o); i > 0; i--) {
        if (JSON_LEN(n) == keylen && (keylen == 0 || memcmp(n->u.str, key, keylen) == 0))
            return n + 1;
        n += 1 + json_size(n + 1);
    }
    return NULL;
}

const pgpipe_json_val *pgpipe_json_path(const pgpipe_json_val *v, const char *path)
{
    if (!v || !path)
        return NULL;
    const char *p = path;
    char keybuf[256];
    while (*p && v) {
        if (*p == '[') {
            p++;
            if (*p == '"') {
                /* ["quoted name"] */
                size_t n = 0;
                char *heap = NULL, *k = keybuf;
                size_t cap = sizeof keybuf;
                for (p++; *p && *p != '"'; p++) {
                    if (*p == '\\' && (p[1] == '"' || p[1] == '\\'))
                        p++;
                    if (n == cap) {
                        char *nk = pp_realloc(heap, cap * 2);
                        if (!nk) {
                            pp_free(heap);
                            return NULL;
                        }
                        if (!heap)
                            memcpy(nk, keybuf, n);
                        heap = k = nk;
                        cap *= 2;
                    }
                    k[n++] = *p;
                }
                if (p[0] != '"' || p[1] != ']') {
                    pp_free(heap);
                    return NULL;
                }
                p += 2;
                v = pgpipe_json_obj_get(v, k, n);
                pp_free(heap);
            } else {
                if (!JSON_DIGIT(*p))
                    return NULL;
                size_t i = 0;
                for (; JSON_DIGIT(*p); p++) {
                    if (i > (SIZE_MAX - 9) / 10)
                        return NULL;
                    i = i * 10 + (size_t)(*p - '0');
                }
                if (*p++ != ']')
                    return NULL;
                v = pgpipe_json_arr_get(v, i);
            }
        } else {
            if (*p == '.') {
                if (p == path)
                    return NULL;
                p++;
            } else if (p != path) {
                return NULL;
            }
            const char *s = p;
            while (*p && *p != '.' && *p != '[')
                p++;
            if (p == s)
                return NULL;
            v = pgpipe_json_obj_get(v, s, (size_t)(p - s));
        }
    }
    return v;
}

int pgpipe_json_iter_init(pgpipe_json_iter *it, const pgpipe_json_val *v)
{
    if (!it)
        return PGPIPE_MISUSE;
    it->next = NULL;
    it->left = 0;
    it->object = 0;
    if (!v || JSON_TYPE(v) < PGPIPE_JSON_ARRAY)
        return PGPIPE_MISUSE;
    it->next = v + 1;
    it->left = JSON_LEN(v);
    it->object = JSON_TYPE(v) == PGPIPE_JSON_OBJECT;
    return PGPIPE_OK;
}

const pgpipe_json_val *pgpipe_json_iter_next(pgpipe_json_iter *it, const pgpipe_json_val **key)
{
    if (!it || !it->left) {
        if (key)
            *key = NULL;
        return NULL;
    }
    const json_node *n = it->next;
    if (it->object) {
        if (key)
            *key = n;
        n++;
    } else if (key) {
        *key = NULL;
    }
    it->next = n + json_size(n);
    it->left--;
    return n;
}

static int json_num_equal(const json_node *a, const json_node *b)
{
    if (JSON_LEN(a) == JSON_LEN(b) && memcmp(a->u.str, b->u.str, JSON_LEN(a)) == 0)
        return 1;
    int64_t ia, ib;
    if ((a->tag & JSON_FLAG) && (b->tag & JSON_FLAG)) {
        int ra = pgpipe_json_get_int64(a, &ia), rb = pgpipe_json_get_int64(b, &ib);
        if (ra == PGPIPE_OK && rb == PGPIPE_OK)
            return ia == ib;
    }
    double da, db;
    if (pgpipe_json_get_double(a, &da) != PGPIPE_OK || pgpipe_json_get_double(b, &db) != PGPIPE_OK)
        return 0;
    return da == db;
}

int pgpipe_json_equal(const pgpipe_json_val *a, const pgpipe_json_val *b)
{
    if (!a || !b)
        return a == b;
    size_t n = json_size(a);
    if (json_size(b) != n)
        return 0;
    for (size_t i = 0; i < n; i++, a++, b++) {
        int t = JSON_TYPE(a);
        if (t != JSON_TYPE(b))
            return 0;
        switch (t) {
        case PGPIPE_JSON_NULL:
            break;
        case PGPIPE_JSON_BOOL:
            if ((a->tag ^ b->tag) & JSON_FLAG)
                return 0;
            break;
        case PGPIPE_JSON_STRING:
            if (JSON_LEN(a) != JSON_LEN(b) || memcmp(a->u.str, b->u.str, JSON_LEN(a)) != 0)
                return 0;
            break;
        case PGPIPE_JSON_NUMBER:
            if (!json_num_equal(a, b))
                return 0;
            break;
        default:
            if (a->tag != b->tag || a->u.skip != b->u.skip)
                return 0;
            break;
        }
    }
    return 1;
}

/* ---- writer ------------------------------------------------------------ */

typedef struct json_out {
    char *buf;
    size_t len, cap;
    int grow;  /* may realloc buf; else only count past cap */
    int nomem;
} json_out;

JSON_NOINLINE int json_out_grow(json_out *o, size_t n)
{
    if (!o->grow || o->nomem)
        return 0;
    size_t need = o->len + n + 1, cap = o->cap ? o->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *b = pp_realloc(o->buf, cap);
    if (!b) {
        o->nomem = 1;
        return 0;
    }
    o->buf = b;
    o->cap = cap;
    return 1;
}

JSON_INLINE void json_put(json_out *o, const void *s, size_t n)
{
    if (PP_LIKELY(o->len <= o->cap && o->cap - o->len >= n) || json_out_grow(o, n))
        memcpy(o->buf + o->len, s, n);
    o->len += n;
}

JSON_INLINE void json_putc(json_out *o, char ch)
{
    if (PP_LIKELY(o->len < o->cap) || json_out_grow(o, 1))
        o->buf[o->len] = ch;
    o->len++;
}

static void json_put_string(json_out *o, const json_node *n)
{
    const char *s = n->u.str;
    size_t len = JSON_LEN(n);
    json_putc(o, '"');
    if (!(n->tag & JSON_FLAG)) { /* came from the input without escapes */
        json_put(o, s, len);
    } else {
        size_t room = o->len <= o->cap ? o->cap - o->len : 0;
        size_t k = pp_json_escape(room ? o->buf + o->len : NULL, room, s, len, 0);
        if (k > room && json_out_grow(o, k))
            pp_json_escape(o->buf + o->len, k, s, len, 0);
        o->len += k;
    }
    json_putc(o, '"');
}

typedef struct json_wframe {
    const json_node *end;
    int obj;
} json_wframe;

static int json_write_out(json_out *o, const json_node *v)
{
    json_wframe local[64], *st = local;
    size_t sp = 0, scap = 64;
    const json_node *n = v;
    for (;;) {
        /* write the value at n */
        switch (JSON_TYPE(n)) {
        case PGPIPE_JSON_NULL: json_put(o, "null", 4); n++; break;
        case PGPIPE_JSON_BOOL:
            if (n->tag & JSON_FLAG)
                json_put(o, "true", 4);
            else
                json_put(o, "false", 5);
            n++;
            break;
        case PGPIPE_JSON_NUMBER: json_put(o, n->u.str, JSON_LEN(n)); n++; break;
        case PGPIPE_JSON_STRING: json_put_string(o, n); n++; break;
        default: {
            int obj = JSON_TYPE(n) == PGPIPE_JSON_OBJECT;
            json_putc(o, obj ? '{' : '[');
            if (JSON_LEN(n) == 0) {
                json_putc(o, obj ? '}' : ']');
                n++;
                break;
            }
            if (sp == scap) {
                json_wframe *ns = pp_malloc(scap * 2 * sizeof *ns);
                if (!ns) {
                    o->nomem = 1;
                    goto out;
                }
                memcpy(ns, st, sp * sizeof *st);
                if (st != local)
                    pp_free(st);
                st = ns;
                scap *= 2;
            }
            st[sp].end = n + n->u.skip;
            st[sp].obj = obj;
            sp++;
            n++;
            if (obj) {
                json_put_string(o, n);
                json_putc(o, ':');
                n++;
            }
            continue;
        }
        }
        /* close finished containers, then a separator */
        while (sp && n == st[sp - 1].end) {
            sp--;
            json_putc(o, st[sp].obj ? '}' : ']');
        }
        if (!sp)
            break;
        json_putc(o, ',');
        if (st[sp - 1].obj) {
            json_put_string(o, n);
            json_putc(o, ':');
            n++;
        }
    }
out:
    if (st != local)
        pp_free(st);
    return o->nomem ? PGPIPE_NOMEM : PGPIPE_OK;
}

/* Append the compact text of v to b (for the other components). */
PGPIPE_PRIVATE int json_write_buf(pp_buf *b, const json_node *v)
{
    json_out o = { b->data, b->len, b->cap, 1, 0 };
    int rc = json_write_out(&o, v);
    b->data = o.buf;
    b->cap = o.cap;
    if (rc == PGPIPE_OK) {
        b->len = o.len;
        if (b->len < b->cap)
            b->data[b->len] = '\0';
    }
    return rc;
}

int pgpipe_json_write(const pgpipe_json_val *v, char **out, size_t *len)
{
    if (out)
        *out = NULL;
    if (len)
        *len = 0;
    if (!v || !out)
        return PGPIPE_MISUSE;
    pp_buf b = { NULL, 0, 0 };
    int rc = json_write_buf(&b, v);
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(&b, '\0');
    if (rc != PGPIPE_OK) {
        pp_buf_free(&b);
        return PGPIPE_NOMEM;
    }
    *out = b.data;
    if (len)
        *len = b.len - 1;
    return PGPIPE_OK;
}

int pgpipe_json_write_to(const pgpipe_json_val *v, char *buf, size_t cap, size_t *len)
{
    if (len)
        *len = 0;
    if (!v || (!buf && cap))
        return PGPIPE_MISUSE;
    json_out o = { buf, 0, cap, 0, 0 };
    int rc = json_write_out(&o, v);
    if (len)
        *len = o.len;
    if (rc != PGPIPE_OK)
        return rc;
    if (o.len >= cap) {
        if (cap)
            buf[0] = '\0';
        return PGPIPE_LIMIT;
    }
    buf[o.len] = '\0';
    return PGPIPE_OK;
}

/* ---- NDJSON ------------------------------------------------------------ */

struct pgpipe_ndjson {
    pp_handle hdr;
    pgpipe_json_doc *doc;
    char *source;
    const char *chunk;      /* borrowed, unread part [pos, len) */
    size_t chunk_len, chunk_pos;
    pp_buf carry;           /* a line that straddles chunks */
    size_t carry_off;       /* consumed prefix of carry */
    size_t carry_scan;      /* no '\n' in carry before this */
    long long next_line;    /* line number of the next line */
    long long next_off;     /* stream offset of the next line */
    const char *line;       /* the line last returned */
    size_t line_len;
    long long records, errors;
    int finished;
    int at_start;           /* nothing read yet: a BOM may follow */
};

int pgpipe_ndjson_open(pgpipe_ndjson **out)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_ndjson *r = *out = pp_handle_new(sizeof *r);
    if (!r)
        return PGPIPE_NOMEM;
    if (pgpipe_json_doc_open(&r->doc) != PGPIPE_OK) {
        pp_free(r);
        *out = NULL;
        return PGPIPE_NOMEM;
    }
    r->next_line = 1;
    r->at_start = 1;
    return PGPIPE_OK;
}

void pgpipe_ndjson_close(pgpipe_ndjson *r)
{
    if (!r)
        return;
    pgpipe_json_doc_close(r->doc);
    pp_buf_free(&r->carry);
    pp_free(r->source);
    r->hdr.magic = 0;
    pp_free(r);
}

int pgpipe_ndjson_set_source(pgpipe_ndjson *r, const char *source)
{
    if (!r)
        return PGPIPE_MISUSE;
    char *s = NULL;
    if (source && !(s = pp_strdup(source)))
        return pp_err_nomem(&r->hdr.err);
    pp_free(r->source);
    r->source = s;
    return PGPIPE_OK;
}

int pgpipe_ndjson_set_max_depth(pgpipe_ndjson *r, int max_depth)
{
    if (!r)
        return PGPIPE_MISUSE;
    int rc = pgpipe_json_doc_set_max_depth(r->doc, max_depth);
    if (rc != PGPIPE_OK)
        return pp_err(&r->hdr.err, rc, "%s", pgpipe_errmsg(r->doc));
    return PGPIPE_OK;
}

/* Move the unread rest of the chunk into carry. */
static int ndjson_keep_rest(pgpipe_ndjson *r)
{
    size_t rest = r->chunk_len - r->chunk_pos;
    if (!rest)
        return PGPIPE_OK;
    if (r->carry_off) {
        memmove(r->carry.data, r->carry.data + r->carry_off, r->carry.len - r->carry_off);
        r->carry.len -= r->carry_off;
        r->carry_scan -= r->carry_off;
        r->carry_off = 0;
    }
    if (pp_buf_append(&r->carry, r->chunk + r->chunk_pos, rest) != PGPIPE_OK)
        return pp_err_nomem(&r->hdr.err);
    r->chunk_pos = r->chunk_len;
    return PGPIPE_OK;
}

int pgpipe_ndjson_feed(pgpipe_ndjson *r, const char *chunk, size_t len)
{
    if (!r)
        return PGPIPE_MISUSE;
    if ((!chunk && len) || r->finished)
        return pp_err(&r->hdr.err, PGPIPE_MISUSE,
                      r->finished ? "pgpipe_ndjson_feed after pgpipe_ndjson_finish"
                                  : "pgpipe_ndjson_feed: NULL chunk");
    int rc = ndjson_keep_rest(r); /* the caller did not drain the last chunk */
    if (rc != PGPIPE_OK)
        return rc;
    r->chunk = chunk;
    r->chunk_len = len;
    r->chunk_pos = 0;
    return PGPIPE_OK;
}

int pgpipe_ndjson_finish(pgpipe_ndjson *r)
{
    if (!r)
        return PGPIPE_MISUSE;
    r->finished = 1;
    return PGPIPE_OK;
}

/* The next complete line: 1 with the line and its length (without '\n'), *nl = 1 when a
** '\n' ended it; 0 when none is complete; -1 on out of memory. */
static int ndjson_get_line(pgpipe_ndjson *r, const char **line, size_t *len, int *nl)
{
    if (r->carry.len > r->carry_off) {
        char *base = r->carry.data;
        char *hit = memchr(base + r->carry_scan, '\n', r->carry.len - r->carry_scan);
        if (!hit) {
            r->carry_scan = r->carry.len;
            if (r->chunk_pos < r->chunk_len) {
                const char *c = r->chunk + r->chunk_pos;
                size_t rest = r->chunk_len - r->chunk_pos;
                const char *h = memchr(c, '\n', rest);
                size_t take = h ? (size_t)(h - c) + 1 : rest;
                if (r->carry_off) {
                    memmove(r->carry.data, r->carry.data + r->carry_off,
                            r->carry.len - r->carry_off);
                    r->carry.len -= r->carry_off;
                    r->carry_scan = r->carry.len;
                    r->carry_off = 0;
                }
                if (pp_buf_append(&r->carry, c, take) != PGPIPE_OK)
                    return -1;
                r->chunk_pos += take;
                base = r->carry.data;
                if (h)
                    hit = base + r->carry.len - 1;
                else
                    r->carry_scan = r->carry.len;
            }
        }
        if (hit) {
            *line = base + r->carry_off;
            *len = (size_t)(hit - *line);
            *nl = 1;
            r->carry_off = r->carry_scan = (size_t)(hit - base) + 1;
            return 1;
        }
        if (!r->finished)
            return 0;
        *line = base + r->carry_off;
        *len = r->carry.len - r->carry_off;
        *nl = 0;
        r->carry_off = r->carry_scan = r->carry.len;
        return 1;
    }
    r->carry.len = r->carry_off = r->carry_scan = 0;
    if (r->chunk_pos >= r->chunk_len)
        return 0;
    const char *c = r->chunk + r->chunk_pos;
    size_t rest = r->chunk_len - r->chunk_pos;
    const char *h = memchr(c, '\n', rest);
    if (h) {
        *line = c;
        *len = (size_t)(h - c);
        *nl = 1;
        r->chunk_pos += *len + 1;
        return 1;
    }
    if (r->finished) {
        *line = c;
        *len = rest;
        *nl = 0;
        r->chunk_pos = r->chunk_len;
        return 1;
    }
    if (pp_buf_append(&r->carry, c, rest) != PGPIPE_OK)
        return -1;
    r->carry_scan = r->carry.len;
    r->chunk_pos = r->chunk_len;
    return 0;
}

int pgpipe_ndjson_next(pgpipe_ndjson *r, const pgpipe_json_val **root, long long *line_no)
{
    if (root)
        *root = NULL;
    if (!r)
        return PGPIPE_MISUSE;
    for (;;) {
        const char *line;
        size_t len;
        int nl;
        int got = ndjson_get_line(r, &line, &len, &nl);
        if (got < 0)
            return pp_err_nomem(&r->hdr.err);
        if (got == 0) {
            r->line = NULL;
            r->line_len = 0;
            return PGPIPE_DONE;
        }
        long long lno = r->next_line++, off = r->next_off;
        r->next_off += (long long)len + nl;
        long long col_extra = 0;
        if (r->at_start) {
            r->at_start = 0;
            if (len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
                line += 3;
                len -= 3;
                off += 3;
                col_extra = 1;
            }
        }
        if (len && line[len - 1] == '\r')
            len--;
        size_t i = 0;
        while (i < len && JSON_WS(line[i]))
            i++;
        if (i == len)
            continue; /* blank line */
        r->line = line;
        r->line_len = len;
        if (line_no)
            *line_no = lno;
        int rc = json_parse_into(r->doc, line, len, &r->hdr.err,
                                 r->source ? r->source : "<stream>", lno, col_extra, off);
        if (rc != PGPIPE_OK) {
            r->errors++;
            return rc;
        }
        r->records++;
        if (root)
            *root = r->doc->nodes;
        return PGPIPE_ROW;
    }
}

int pgpipe_ndjson_line(const pgpipe_ndjson *r, const char **text, size_t *len)
{
    if (!r || !r->line) {
        if (text)
            *text = NULL;
        if (len)
            *len = 0;
        return PGPIPE_MISUSE;
    }
    if (text)
        *text = r->line;
    if (len)
        *len = r->line_len;
    return PGPIPE_OK;
}

long long pgpipe_ndjson_records(const pgpipe_ndjson *r) { return r ? r->records : 0; }
long long pgpipe_ndjson_errors(const pgpipe_ndjson *r) { return r ? r->errors : 0; }
