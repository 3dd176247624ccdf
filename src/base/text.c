/*
** The text layer: the one implementation of each text transformation the
** library needs, so every component escapes, validates and generates the
** same way.
**   - COPY text-format escaping (the loader, the CSV writer, the record store);
**   - JSON string escaping (the JSON writer, the loader's JSON columns, the
**     log writer, the record store, the shell through pgpipe_quote_json);
**   - UTF-8 validation (Unicode table 3-7: no overlongs, no surrogates,
**     nothing above U+10FFFF);
**   - random bytes and UUIDs (version 4, and version 7 monotonic within the
**     process);
**   - SQL identifier and schema.table quoting, array-literal elements;
**   - SHA-256 (migration checksums), FNV-1a and a small PRNG for jitter.
*/

#include "pp_base.h"

static const char pp_hexdig[] = "0123456789abcdef";

/* ---- Word-at-a-time scanning ------------------------------------------- */

#define PP_ONES 0x0101010101010101ull
#define PP_HIGH 0x8080808080808080ull
/* nonzero when some byte of w is below n (n <= 128) */
#define PP_HAS_LESS(w, n) (((w) - PP_ONES * (n)) & ~(w) & PP_HIGH)
/* nonzero when some byte of w equals c */
#define PP_HAS_BYTE(w, c) PP_HAS_LESS((w) ^ (PP_ONES * (c)), 1)

static inline uint64_t pp_load8(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* snprintf-style output: what passes cap is counted, not written. */
typedef struct pp_bounded {
    char *dst;
    size_t cap, len;
} pp_bounded;

static inline void pp_bput(pp_bounded *o, const void *s, size_t n)
{
    if (n && o->len < o->cap)
        memcpy(o->dst + o->len, s, o->cap - o->len < n ? o->cap - o->len : n);
    o->len += n;
}

/* NUL-terminate (cutting the last byte when full); the full length. */
static size_t pp_bend(pp_bounded *o)
{
    if (o->cap)
        o->dst[o->len < o->cap ? o->len : o->cap - 1] = '\0';
    return o->len;
}

/* ---- COPY text format ---------------------------------------------------- */

/* The letter after the backslash of each byte's COPY escape; 0 = none. */
static const unsigned char pp_copy_esc_tab[256] = {
    ['\\'] = '\\', ['\t'] = 't', ['\n'] = 'n', ['\r'] = 'r',
};

PGPIPE_PRIVATE int pp_copy_escape(pp_buf *b, const char *s, size_t n)
{
    if (!n)
        return PGPIPE_OK;
    if (n <= 64) {
        /* a short field (a source, an event type) mostly has nothing to
        ** escape: one look, then a plain copy */
        size_t i = 0;
        while (i < n && !pp_copy_esc_tab[(unsigned char)s[i]])
            i++;
        if (i == n)
            return pp_buf_append(b, s, n);
    }
    if (n > (SIZE_MAX - 64) / 2 || pp_buf_reserve(b, n + 16) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    const unsigned char *p = (const unsigned char *)s, *e = p + n, *run = p;
    char *o = b->data + b->len;
    /* room for the rest unescaped is reserved; each escape adds one byte and
    ** checks for it, so text without escapes never checks */
    size_t spare = b->cap - b->len - n;
    for (;;) {
        /* 8 bytes at a time while none is below 14 (tab, LF, CR and rare
        ** control bytes) or a backslash; then at most 8 one by one */
        while (!PGPIPE_SMALL && e - p >= 8) {
            uint64_t w = pp_load8(p);
            if (PP_HAS_LESS(w, 0x0E) | PP_HAS_BYTE(w, '\\'))
                break;
            p += 8;
        }
        const unsigned char *lim = e - p > 8 ? p + 8 : e;
        while (p < lim && !pp_copy_esc_tab[*p])
            p++;
        if (p == lim && p != e)
            continue;
        memcpy(o, run, (size_t)(p - run));
        o += p - run;
        if (p == e)
            break;
        if (PP_UNLIKELY(!spare)) {
            b->len = (size_t)(o - b->data);
            size_t left = (size_t)(e - p);
            if (pp_buf_reserve(b, left + left / 2 + 16) != PGPIPE_OK)
                return PGPIPE_NOMEM;
            o = b->data + b->len;
            spare = b->cap - b->len - left;
        }
        spare--;
        *o++ = '\\';
        *o++ = (char)pp_copy_esc_tab[*p];
        run = ++p;
    }
    b->len = (size_t)(o - b->data);
    return PGPIPE_OK;
}

/* ---- The public COPY text writer (pgpipe_copy_buf) ----------------------- */

void pgpipe_copy_buf_clear(pgpipe_copy_buf *o)
{
    if (!o)
        return;
    pp_free(o->data);
    o->data = NULL;
    o->len = o->cap = 0;
}

int pgpipe_copy_text_field(pgpipe_copy_buf *out, const char *data, size_t len)
{
    if (!out)
        return PGPIPE_MISUSE;
    pp_buf b = pp_buf_of_copy(out);
    int rc = pp_copy_field(&b, data, len);
    pp_copy_of_buf(out, &b);
    return rc;
}

int pgpipe_copy_text_row(pgpipe_copy_buf *out, int n, const char *const *values,
                         const size_t *lens)
{
    if (!out || n < 0 || (n > 0 && !values))
        return PGPIPE_MISUSE;
    pp_buf b = pp_buf_of_copy(out);
    int rc = PGPIPE_OK;
    for (int i = 0; i < n && rc == PGPIPE_OK; i++) {
        if (i)
            rc = pp_buf_putc(&b, '\t');
        if (rc == PGPIPE_OK)
            rc = pp_copy_field(&b, values[i],
                               values[i] ? (lens ? lens[i] : strlen(values[i])) : 0);
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(&b, '\n');
    pp_copy_of_buf(out, &b);
    return rc;
}

/* ---- JSON strings ------------------------------------------------------- */

/* The letter after the backslash of each byte's escape; 'u' is \u00XX and 0
** means the byte stands as it is. \b and \f take their short forms. */
static const unsigned char pp_json_esc_tab[256] = {
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'b', 't', 'n', 'u', 'f', 'r', 'u', 'u',
    'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u', 'u',
    ['"'] = '"', ['\\'] = '\\',
};

PGPIPE_PRIVATE size_t pp_json_escape(char *dst, size_t cap, const char *s, size_t n, int flags)
{
    if (!n)
        return 0;
    pp_bounded o = { dst, cap, 0 };
    const unsigned char *p = (const unsigned char *)s, *e = p + n, *run = p;
    for (;;) {
        while (!PGPIPE_SMALL && e - p >= 8) {
            uint64_t w = pp_load8(p);
            if (PP_HAS_LESS(w, 0x20) | PP_HAS_BYTE(w, '"') | PP_HAS_BYTE(w, '\\'))
                break;
            p += 8;
        }
        while (p < e && !pp_json_esc_tab[*p])
            p++;
        pp_bput(&o, run, (size_t)(p - run));
        if (p == e)
            return o.len;
        unsigned char c = *p, x = pp_json_esc_tab[c];
        char esc[7];
        size_t el = 0;
        esc[el++] = '\\';
        if (flags & PP_JSON_COPY)
            esc[el++] = '\\';
        esc[el++] = (char)x;
        if (x == 'u') {
            esc[el++] = '0';
            esc[el++] = '0';
            esc[el++] = pp_hexdig[c >> 4];
            esc[el++] = pp_hexdig[c & 15];
        } else if (x == '\\' && (flags & PP_JSON_COPY)) {
            esc[el++] = '\\';
        }
        pp_bput(&o, esc, el);
        run = ++p;
    }
}

PGPIPE_PRIVATE int pp_json_str(pp_buf *b, const char *s, size_t n, int flags)
{
    if (n > SIZE_MAX / 8 || pp_buf_reserve(b, n + 2) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    b->data[b->len++] = '"';
    size_t room = b->cap - b->len;
    size_t k = pp_json_escape(b->data + b->len, room, s, n, flags);
    if (k + 1 > room) {
        if (pp_buf_reserve(b, k + 1) != PGPIPE_OK)
            return PGPIPE_NOMEM;
        pp_json_escape(b->data + b->len, k, s, n, flags);
    }
    b->len += k;
    b->data[b->len++] = '"';
    return PGPIPE_OK;
}

size_t pgpipe_quote_json(char *dst, size_t cap, const char *s, size_t n)
{
    pp_bounded o = { dst, dst ? cap : 0, 0 };
    pp_bput(&o, "\"", 1);
    size_t room = o.len < o.cap ? o.cap - o.len : 0;
    o.len += pp_json_escape(room ? o.dst + o.len : NULL, room, s, s ? n : 0, 0);
    pp_bput(&o, "\"", 1);
    return pp_bend(&o);
}

/* ---- JSON text in jsonb's member order -------------------------------------- */

/* jsonb keeps an object's members sorted (shorter keys first, then bytewise)
** and sorts them itself on input; text that already comes in that order
** leaves the server's sort nothing to move (about a tenth of COPYing a row of
** staging.raw_events). One pass, without recursion, copies the text in
** spans (pp_jb_run); an object found out of order is then rewritten, from
** the input when none of its whitespace was dropped, else from a copy. An
** object keeps its order when a key holds an escape
** (its bytes are not the key's) or it has more than PP_JB_MEMBERS members;
** below PP_JB_DEPTH levels values are copied as they are; text that is not
** JSON is copied whole. jsonb reads each of these the same, only sorts it
** itself. */
#define PP_JB_MEMBERS 32
#define PP_JB_DEPTH 16

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define PP_JB_NOINLINE __attribute__((noinline))
#if !PGPIPE_SMALL /* a size build scans and copies a byte at a time */
#define PP_JB_SWAR 1
#if defined(__SSE2__)
#include <emmintrin.h>
#define PP_JB_SSE2 1
#endif
#endif
#endif
#ifndef PP_JB_NOINLINE
#define PP_JB_NOINLINE
#endif

/* An open object or array. An object's members are recorded for the sort:
** each key's sort value (pp_jb_sortval), where the member starts in the
** output, and the key's bytes in the input for ties. */
typedef struct pp_jb_level {
    size_t start;             /* its '{' in the output */
    const unsigned char *src; /* and in the input */
    int nm;                   /* members recorded; -1: the object keeps its order */
    unsigned char close, sorted;
    uint64_t kv[PP_JB_MEMBERS];
    size_t out[PP_JB_MEMBERS + 1];
    const unsigned char *kp[PP_JB_MEMBERS];
    uint32_t kl[PP_JB_MEMBERS];
} pp_jb_level;

/* The whitespace dropped between tokens. */
static const unsigned char pp_jb_wst[256] = { [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1 };

/* The bytes that end a number, true, false or null. */
static const unsigned char pp_jb_stop[256] = {
    [','] = 1, [':'] = 1, ['}'] = 1, [']'] = 1, ['{'] = 1, ['['] = 1, ['"'] = 1,
    [' '] = 1, ['\t'] = 1, ['\n'] = 1, ['\r'] = 1,
};

/* p is past a string's opening quote: its closing quote, or NULL when it is
** not closed; *esc set when the string holds a backslash. */
static inline const unsigned char *pp_jb_str(const unsigned char *p, const unsigned char *e, int *esc)
{
#ifdef PP_JB_SSE2
    const __m128i q = _mm_set1_epi8('"'), bs = _mm_set1_epi8('\\');
#endif
    for (;;) {
#ifdef PP_JB_SSE2
        /* sixteen bytes at a time */
        while (e - p >= 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
            unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, q), _mm_cmpeq_epi8(v, bs)));
            if (m) {
                p += __builtin_ctz(m);
                goto found;
            }
            p += 16;
        }
#elif defined(PP_JB_SWAR)
        /* eight bytes at a time; the lowest byte flagged is a quote or a
        ** backslash (only bytes above a match can be flagged falsely) */
        while (e - p >= 8) {
            uint64_t w = pp_load8(p);
            uint64_t m = PP_HAS_BYTE(w, '"') | PP_HAS_BYTE(w, '\\');
            if (m) {
                p += (unsigned)__builtin_ctzll(m) >> 3;
                goto found;
            }
            p += 8;
        }
#endif
        while (p < e && *p != '"' && *p != '\\')
            p++;
        if (p >= e)
            return NULL;
#if defined(PP_JB_SSE2) || defined(PP_JB_SWAR)
    found:
#endif
        if (*p == '"')
            return p;
        *esc = 1;
        p += 2; /* the backslash and the byte it escapes */
        if (p > e)
            return NULL;
    }
}

/* Past the value at p, taken as it is (a value deeper than PP_JB_DEPTH), or
** NULL when it is cut off or empty. */
static PP_JB_NOINLINE const unsigned char *pp_jb_skip_value(const unsigned char *p, const unsigned char *e)
{
    const unsigned char *a = p;
    size_t depth = 0;
    int esc = 0;
    while (p < e) {
        unsigned char c = *p;
        if (c == '"') {
            if (!(p = pp_jb_str(p + 1, e, &esc)))
                return NULL;
            p++;
            if (!depth)
                break;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (!depth)
                break; /* the end of the container around a scalar */
            if (--depth == 0) {
                p++;
                break;
            }
        } else if (!depth && (c == ',' || c == ':' || pp_jb_wst[c])) {
            break;
        }
        p++;
    }
    return depth || p == a ? NULL : p;
}

/* The sort value of member i, its key of klen bytes at k: the key's length
** (up to 0xFFFF), its first five bytes, then i. Values compare as the keys
** do in jsonb's order, the member first of equal keys first, except where
** two keys of more than five bytes share their length and first five bytes
** (a tie: pp_jb_tie). */
static inline uint64_t pp_jb_sortval(const unsigned char *k, size_t klen, const unsigned char *e, int i)
{
    uint64_t v = 0;
#ifdef PP_JB_SWAR
    if (e - k >= 8) {
        v = __builtin_bswap64(pp_load8(k)); /* k[0] in the top byte */
        v &= klen >= 5 ? ~(uint64_t)0 << 24 : ~(~(uint64_t)0 >> (8 * klen));
        v >>= 16;
    } else
#endif
    {
        (void)e;
        for (size_t j = 0; j < 5; j++)
            v = v << 8 | (j < klen ? k[j] : 0);
        v <<= 8;
    }
    return (uint64_t)(klen < 0xFFFF ? klen : 0xFFFF) << 48 | v | (uint64_t)i;
}

/* Sort values a and b tie: their keys' order needs their bytes. */
static inline int pp_jb_tie(uint64_t a, uint64_t b)
{
    return ((a ^ b) >> 8) == 0 && (a >> 48) > 5;
}

/* Member a's key comes before member b's in jsonb's order (by their bytes). */
static int pp_jb_before(const pp_jb_level *L, int a, int b)
{
    if (L->kl[a] != L->kl[b])
        return L->kl[a] < L->kl[b];
    return memcmp(L->kp[a], L->kp[b], L->kl[a]) < 0;
}

/* Copy n bytes 16 at a time (up to 15 bytes past the end of both). */
static inline void pp_jb_copy16(char *q, const char *f, size_t n)
{
#if PGPIPE_SMALL
    memcpy(q, f, n);
#else
    for (size_t k = 0; k < n; k += 16)
        memcpy(q + k, f + k, 16);
#endif
}

/* n bytes of the input at f to q: short spans in 16-byte words when the
** input goes on for 16 bytes past them (q has the room) */
static inline void pp_jb_put(char *q, const unsigned char *f, size_t n, const unsigned char *e)
{
#if PGPIPE_SMALL
    (void)e;
    memcpy(q, f, n);
#else
    if (n <= 64 && e - f >= (ptrdiff_t)n + 16)
        pp_jb_copy16(q, (const char *)f, n);
    else if (n < 8)
        while (n--)
            *q++ = (char)*f++;
    else
        memcpy(q, f, n);
#endif
}

/* Past the whitespace at p. */
static inline const unsigned char *pp_jb_skip_ws(const unsigned char *p, const unsigned char *e)
{
#ifdef PP_JB_SSE2
    const __m128i sp = _mm_set1_epi8(' '), nl = _mm_set1_epi8('\n'), ht = _mm_set1_epi8('\t'),
                  cr = _mm_set1_epi8('\r');
    while (e - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i m = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, sp), _mm_cmpeq_epi8(v, nl)),
                                 _mm_or_si128(_mm_cmpeq_epi8(v, ht), _mm_cmpeq_epi8(v, cr)));
        unsigned k = ~(unsigned)_mm_movemask_epi8(m) & 0xFFFF;
        if (k)
            return p + __builtin_ctz(k);
        p += 16;
    }
#elif defined(PP_JB_SWAR)
    while (e - p >= 8 && pp_load8(p) == PP_ONES * ' ') /* indentation */
        p += 8;
#endif
    while (p < e && pp_jb_wst[*p])
        p++;
    return p;
}

/* The object L, its members written up to the output's position end (out +
** w on, the input from run), written in jsonb's order up to end. When none of it is
** written yet (no whitespace was dropped, no object put in order inside it)
** its members are copied from the input; otherwise they are copied aside to
** tmp first. The output has 16 bytes of room past its end. */
static PP_JB_NOINLINE int pp_jb_sort(char *out, size_t w, const unsigned char *run, const unsigned char *e,
                                      size_t end, pp_jb_level *L, pp_buf *tmp)
{
    uint64_t v[PP_JB_MEMBERS];
    int nm = L->nm, tie = 0;
    /* insertion sort of the sort values (stable: they end in the index) */
    v[0] = L->kv[0];
    for (int a = 1; a < nm; a++) {
        uint64_t t = L->kv[a];
        int b = a;
        while (b > 0 && t < v[b - 1]) {
            v[b] = v[b - 1];
            b--;
        }
        v[b] = t;
    }
    for (int a = 1; a < nm; a++)
        tie |= pp_jb_tie(v[a], v[a - 1]);
    if (tie) {
        /* ties run next to each other: again by the keys' bytes (stable) */
        for (int a = 1; a < nm; a++) {
            uint64_t t = v[a];
            int b = a;
            while (b > 0 && pp_jb_before(L, (unsigned char)t, (unsigned char)v[b - 1])) {
                v[b] = v[b - 1];
                b--;
            }
            v[b] = t;
        }
    }
    size_t body = L->start + 1;
    const char *from; /* where out + body's bytes are */
    int safe = 1;     /* 16 bytes readable past each member there */
    if (run <= L->src) {
        pp_jb_put(out + w, run, body - w, e); /* up to the '{' */
        from = (const char *)run + (body - w);
        safe = e - (run + (end - w)) >= 16;
    } else {
        size_t len = end - body;
        pp_jb_put(out + w, run, end - w, e);
        tmp->len = 0;
        if (pp_buf_reserve(tmp, len + 16) != PGPIPE_OK)
            return PGPIPE_NOMEM;
        memcpy(tmp->data, out + body, len);
        from = tmp->data;
    }
    L->out[nm] = end + 1; /* member i ends before out[i + 1]'s comma */
    char *q = out + body;
    for (int a = 0; a < nm; a++) {
        int i = (unsigned char)v[a];
        size_t at = L->out[i], n = L->out[i + 1] - 1 - at;
        const char *f = from + (at - body);
        if (a)
            *q++ = ',';
        if (safe || (size_t)((const char *)e - f) >= n + 15)
            pp_jb_copy16(q, f, n);
        else
            memcpy(q, f, n);
        q += n;
    }
    return PGPIPE_OK;
}

/* One pass over the text. Output is written lazily: the input from run to
** p is the output's next bytes, copied when whitespace is dropped, when an
** object is put in order and at the end, so text without whitespace whose
** objects are in order is one copy. Whitespace is looked for only where
** the next byte is not the one expected. The output has room for n + 16
** bytes (it is never longer than the input). */
static int pp_jb_run(pp_buf *o, pp_buf *tmp, const char *str, size_t n)
{
    const unsigned char *p = (const unsigned char *)str, *e = p + n, *run = p;
    char *out = o->data;
    size_t w = o->len; /* out[0..w) written; next, the input from run to p */
    pp_jb_level st[PP_JB_DEPTH], *L = NULL;
    int d = 0; /* open objects and arrays; L is the innermost */
    int esc;

/* past whitespace at p, the bytes before it copied */
#define PP_JB_WS()                                                                                 \
    do {                                                                                           \
        if (p < e && pp_jb_wst[*p]) {                                                              \
            pp_jb_put(out + w, run, (size_t)(p - run), e);                                         \
            w += (size_t)(p - run);                                                                \
            p = pp_jb_skip_ws(p + 1, e);                                                           \
            run = p;                                                                               \
        }                                                                                          \
    } while (0)
#define PP_JB_POS() (w + (size_t)(p - run))

value:
    if (p == e)
        return PGPIPE_PARSE;
    if (d >= PP_JB_DEPTH) {
        PP_JB_WS();
        if (!(p = pp_jb_skip_value(p, e)))
            return PGPIPE_PARSE;
        goto after;
    }
    switch (*p) {
    case ' ':
    case '\t':
    case '\n':
    case '\r':
        PP_JB_WS();
        goto value;
    case '{': {
        size_t at = PP_JB_POS();
        const unsigned char *open = p++;
        if (p == e || *p != '"') {
            PP_JB_WS();
            if (p < e && *p == '}') {
                p++;
                goto after;
            }
        }
        L = &st[d++];
        L->start = at;
        L->src = open;
        L->nm = 0;
        L->close = '}';
        L->sorted = 1;
        goto key;
    }
    case '[':
        p++;
        PP_JB_WS();
        if (p < e && *p == ']') {
            p++;
            goto after;
        }
        L = &st[d++];
        L->close = ']';
        L->sorted = 1; /* nothing to sort */
        goto value;
    case '"':
        if (!(p = pp_jb_str(p + 1, e, &esc)))
            return PGPIPE_PARSE;
        p++;
        goto after;
    default: {
        const unsigned char *a = p;
#ifdef PP_JB_SWAR
        /* digits, '-', '.' and '/' eight at a time (none ends a value) */
        while (e - p >= 8) {
            uint64_t x = pp_load8(p);
            if (PP_HAS_LESS(x, 0x2D) | (((x + PP_ONES * (127 - 0x39)) | x) & PP_HIGH))
                break;
            p += 8;
        }
#endif
        while (p < e && !pp_jb_stop[*p])
            p++;
        if (p == a)
            return PGPIPE_PARSE;
        goto after;
    }
    }

key: /* at the key's quote */
    if (p == e || *p != '"')
        return PGPIPE_PARSE;
    {
        size_t at = PP_JB_POS(), klen;
        const unsigned char *k = p + 1;
        esc = 0;
        if (!(p = pp_jb_str(k, e, &esc)))
            return PGPIPE_PARSE;
        klen = (size_t)(p - k);
        p++;
        int nm = L->nm;
        if ((unsigned)nm >= PP_JB_MEMBERS || esc || klen > UINT32_MAX) {
            L->nm = -1; /* this object keeps its order */
        } else {
            uint64_t kv = pp_jb_sortval(k, klen, e, nm);
            L->kv[nm] = kv;
            L->kl[nm] = (uint32_t)klen;
            L->kp[nm] = k;
            L->out[nm] = at;
            if (nm && L->sorted &&
                (kv < L->kv[nm - 1] || (pp_jb_tie(kv, L->kv[nm - 1]) && pp_jb_before(L, nm, nm - 1))))
                L->sorted = 0;
            L->nm = nm + 1;
        }
    }
    if (p == e || *p != ':') {
        PP_JB_WS();
        if (p == e || *p != ':')
            return PGPIPE_PARSE;
    }
    p++;
    goto value;

after: /* past a value */
    if (!d)
        goto done;
    if (p == e)
        return PGPIPE_PARSE;
    if (*p == ',') {
        p++;
        if (L->close == ']')
            goto value;
        if (p == e || *p != '"')
            PP_JB_WS();
        goto key;
    }
    if (*p == L->close) {
        if (!L->sorted && L->nm > 1) {
            size_t end = PP_JB_POS();
            if (pp_jb_sort(out, w, run, e, end, L, tmp) != PGPIPE_OK)
                return PGPIPE_NOMEM;
            w = end; /* the object is written, up to its '}' */
            run = p;
        }
        p++;
        d--;
        L = d ? &st[d - 1] : NULL;
        goto after;
    }
    if (!pp_jb_wst[*p])
        return PGPIPE_PARSE;
    PP_JB_WS();
    goto after;

done:
    PP_JB_WS();
    if (p != e)
        return PGPIPE_PARSE;
    pp_jb_put(out + w, run, (size_t)(p - run), e);
    o->len = w + (size_t)(p - run);
    return PGPIPE_OK;
#undef PP_JB_WS
#undef PP_JB_POS
}

PGPIPE_PRIVATE int pp_jsonb_order_buf(pp_buf *o, pp_buf *tmp, const char *s, size_t n)
{
    size_t start = o->len;
    if (n > SIZE_MAX / 2 || pp_buf_reserve(o, n + 32) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    int rc = pp_jb_run(o, tmp, s, n);
    if (rc == PGPIPE_PARSE) {
        o->len = start;
        rc = pp_buf_append(o, s, n);
    }
    return rc;
}

PGPIPE_PRIVATE int pp_jsonb_order(pp_buf *o, const char *s, size_t n)
{
    pp_buf tmp = { 0 };
    int rc = pp_jsonb_order_buf(o, &tmp, s, n);
    pp_buf_free(&tmp);
    return rc;
}

PGPIPE_PRIVATE int pp_copy_jsonb(pp_buf *b, pp_buf scratch[2], const char *s, size_t n)
{
    scratch[0].len = 0;
    if (pp_jsonb_order_buf(&scratch[0], &scratch[1], s, n) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    return pp_copy_escape(b, scratch[0].data, scratch[0].len);
}

/* ---- UTF-8 ---------------------------------------------------------------- */

PGPIPE_PRIVATE size_t pp_utf8_text_prefix(const unsigned char *s, size_t n)
{
    size_t i = 0;
    for (;;) {
        /* ASCII without NUL: 8 bytes at a time, then one by one */
        while (!PGPIPE_SMALL && n - i >= 8) {
            uint64_t w = pp_load8(s + i);
            if ((w & PP_HIGH) | PP_HAS_LESS(w, 1))
                break;
            i += 8;
        }
        while (i < n && s[i] - 1u < 0x7Fu)
            i++;
        if (i == n || !s[i])
            return i;
        size_t k = pp_utf8_is3(s + i, n - i) ? 3 : pp_utf8_is2(s + i, n - i) ? 2 : 0;
        if (!k && pp_utf8_problem(s + i, n - i, &k))
            return i;
        i += k;
    }
}

/* ---- Random bytes and UUIDs ---------------------------------------------- */

/* One buffer of /dev/urandom output for the process, refilled a block at a
** time; a forked child drops what its parent read so the two never hand out
** the same bytes. With threads the child learns of the fork from a
** pthread_atfork handler (registered before the first draw), not from a getpid()
** per draw: a UUID per HTTP request would pay a system call each. The
** handlers hold the mutex across fork(), so a child never inherits it locked
** by a thread that does not exist in the child. (A raw clone() without
** fork() bypasses the handlers; nothing here does that.) */
static pp_mutex pp_text_mutex = PP_MUTEX_INIT;
static unsigned char pp_rnd[4096];
static size_t pp_rnd_left;
#ifndef PGPIPE_OMIT_THREADS
static pthread_once_t pp_rnd_once = PTHREAD_ONCE_INIT;

static void pp_rnd_prepare(void)
{
    pthread_mutex_lock(&pp_text_mutex);
}

static void pp_rnd_parent(void)
{
    pthread_mutex_unlock(&pp_text_mutex);
}

static void pp_rnd_child(void)
{
    memset(pp_rnd, 0, sizeof pp_rnd);
    pp_rnd_left = 0;
    pthread_mutex_unlock(&pp_text_mutex);
}

static void pp_rnd_atfork(void)
{
    pthread_atfork(pp_rnd_prepare, pp_rnd_parent, pp_rnd_child);
}

/* Called before the lock is taken: no draw holds it before the handlers
** cover fork(). */
#define pp_rnd_ready() pthread_once(&pp_rnd_once, pp_rnd_atfork)
#else
static pid_t pp_rnd_pid;
#define pp_rnd_ready() ((void)0)
#endif

static int pp_rnd_fill_locked(void)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return PGPIPE_IO;
    size_t got = 0;
    while (got < sizeof pp_rnd) {
        ssize_t k = read(fd, pp_rnd + got, sizeof pp_rnd - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int saved = k < 0 ? errno : EIO;
            close(fd);
            errno = saved;
            return PGPIPE_IO;
        }
        got += (size_t)k;
    }
    close(fd);
    pp_rnd_left = sizeof pp_rnd;
#ifdef PGPIPE_OMIT_THREADS
    pp_rnd_pid = getpid();
#endif
    return PGPIPE_OK;
}

static int pp_random_locked(unsigned char *out, size_t n)
{
#ifdef PGPIPE_OMIT_THREADS
    if (pp_rnd_left && pp_rnd_pid != getpid())
        pp_rnd_left = 0;
#endif
    while (n) {
        if (!pp_rnd_left && pp_rnd_fill_locked() != PGPIPE_OK)
            return PGPIPE_IO;
        size_t k = n < pp_rnd_left ? n : pp_rnd_left;
        unsigned char *src = pp_rnd + sizeof pp_rnd - pp_rnd_left;
        memcpy(out, src, k);
        memset(src, 0, k); /* bytes handed out are not kept */
        pp_rnd_left -= k;
        out += k;
        n -= k;
    }
    return PGPIPE_OK;
}

PGPIPE_PRIVATE int pp_random_bytes(void *out, size_t n)
{
    pp_rnd_ready();
    pp_mutex_lock(&pp_text_mutex);
    int rc = pp_random_locked(out, n);
    pp_mutex_unlock(&pp_text_mutex);
    return rc;
}

static void pp_uuid_format(const unsigned char u[16], char out[37])
{
    char *w = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *w++ = '-';
        *w++ = pp_hexdig[u[i] >> 4];
        *w++ = pp_hexdig[u[i] & 15];
    }
    *w = '\0';
}

PGPIPE_PRIVATE int pp_uuid_v4(char out[37])
{
    unsigned char u[16];
    if (pp_random_bytes(u, sizeof u) != PGPIPE_OK)
        return PGPIPE_IO;
    u[6] = (unsigned char)(0x40 | (u[6] & 0x0F));
    u[8] = (unsigned char)(0x80 | (u[8] & 0x3F));
    pp_uuid_format(u, out);
    return PGPIPE_OK;
}

/* The last version 7 UUID of the process: its time and its 74 bits after the
** time (12 of rand_a, 62 of rand_b) read as one counter. */
static uint64_t pp_v7_ms, pp_v7_hi, pp_v7_lo;

PGPIPE_PRIVATE int pp_uuid_v7(char out[37])
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    unsigned char r[14];
    pp_rnd_ready();
    pp_mutex_lock(&pp_text_mutex);
    if (pp_random_locked(r, sizeof r) != PGPIPE_OK) {
        pp_mutex_unlock(&pp_text_mutex);
        return PGPIPE_IO;
    }
    uint64_t hi = ((uint64_t)r[0] << 8 | r[1]) & 0xFFF, lo = 0;
    for (int i = 2; i < 10; i++)
        lo = lo << 8 | r[i];
    lo &= 0x3FFFFFFFFFFFFFFFull;
    if (ms <= pp_v7_ms) {
        /* the same millisecond (or the clock went back): one more than the
        ** last, by a random step so ids stay hard to guess */
        uint64_t step = 1 + ((uint64_t)r[10] << 24 | (uint64_t)r[11] << 16 |
                             (uint64_t)r[12] << 8 | r[13]);
        ms = pp_v7_ms;
        hi = pp_v7_hi;
        lo = pp_v7_lo + step;
        if (lo > 0x3FFFFFFFFFFFFFFFull) {
            lo &= 0x3FFFFFFFFFFFFFFFull;
            if (++hi > 0xFFF) { /* the counter is spent: borrow the next ms */
                ms++;
                hi = 0;
            }
        }
    }
    pp_v7_ms = ms;
    pp_v7_hi = hi;
    pp_v7_lo = lo;
    pp_mutex_unlock(&pp_text_mutex);
    unsigned char u[16];
    for (int i = 0; i < 6; i++)
        u[i] = (unsigned char)(ms >> (40 - 8 * i));
    u[6] = (unsigned char)(0x70 | (hi >> 8));
    u[7] = (unsigned char)hi;
    u[8] = (unsigned char)(0x80 | (lo >> 56));
    for (int i = 9; i < 16; i++)
        u[i] = (unsigned char)(lo >> (8 * (15 - i)));
    pp_uuid_format(u, out);
    return PGPIPE_OK;
}

/* ---- SQL identifiers ---------------------------------------------------- */

PGPIPE_PRIVATE int pp_quote_ident(pp_buf *b, const char *s, size_t n)
{
    if (n > SIZE_MAX / 2 - 4 || pp_buf_reserve(b, n + 2) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    b->data[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' && pp_buf_putc(b, '"') != PGPIPE_OK)
            return PGPIPE_NOMEM;
        if (pp_buf_putc(b, s[i]) != PGPIPE_OK)
            return PGPIPE_NOMEM;
    }
    return pp_buf_putc(b, '"');
}

PGPIPE_PRIVATE int pp_quote_path(pp_buf *out, const char *name)
{
    const char *p = name;
    int parts = 0;
    while (*p) {
        if (parts++ && pp_buf_putc(out, '.') != PGPIPE_OK)
            return PGPIPE_NOMEM;
        if (*p == '"') { /* a quoted part: "" stands for " and ends nothing */
            const char *q = ++p;
            while (*q && !(*q == '"' && q[1] != '"'))
                q += *q == '"' ? 2 : 1;
            if (pp_buf_putc(out, '"') != PGPIPE_OK ||
                pp_buf_append(out, p, (size_t)(q - p)) != PGPIPE_OK ||
                pp_buf_putc(out, '"') != PGPIPE_OK)
                return PGPIPE_NOMEM;
            p = *q ? q + 1 : q;
        } else {
            size_t k = strcspn(p, ".");
            if (pp_quote_ident(out, p, k) != PGPIPE_OK)
                return PGPIPE_NOMEM;
            p += k;
        }
        if (*p == '.')
            p++;
        else if (*p)
            return PGPIPE_MISUSE;
    }
    return parts ? PGPIPE_OK : PGPIPE_MISUSE;
}

size_t pgpipe_quote_ident(char *dst, size_t cap, const char *name, int qualified)
{
    pp_bounded o = { dst, dst ? cap : 0, 0 };
    if (!name)
        name = "";
    const char *dot = qualified ? strchr(name, '.') : NULL;
    pp_bput(&o, "\"", 1);
    for (const char *s = name; *s; s++) {
        if (s == dot)
            pp_bput(&o, "\".\"", 3);
        else if (*s == '"')
            pp_bput(&o, "\"\"", 2);
        else
            pp_bput(&o, s, 1);
    }
    pp_bput(&o, "\"", 1);
    return pp_bend(&o);
}

/* ---- PostgreSQL array literals ------------------------------------------ */

PGPIPE_PRIVATE int pp_array_elem(pp_buf *b, const char *s, size_t n)
{
    if (n > SIZE_MAX / 2 - 4 || pp_buf_reserve(b, n + 2) != PGPIPE_OK)
        return PGPIPE_NOMEM;
    b->data[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        if ((s[i] == '"' || s[i] == '\\') && pp_buf_putc(b, '\\') != PGPIPE_OK)
            return PGPIPE_NOMEM;
        if (pp_buf_putc(b, s[i]) != PGPIPE_OK)
            return PGPIPE_NOMEM;
    }
    return pp_buf_putc(b, '"');
}

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------ */

static const uint32_t pp_sha_k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u,
    0x923f82a4u, 0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u,
    0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u,
    0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u,
    0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u,
    0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au,
    0x5b9cca4fu, 0x682e6ff3u, 0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u,
    0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

#define PP_ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

PGPIPE_PRIVATE void pp_sha256_init(pp_sha256 *s)
{
    static const uint32_t iv[8] = { 0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                    0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u };
    memcpy(s->h, iv, sizeof iv);
    s->total = 0;
    s->fill = 0;
}

static void pp_sha256_block(pp_sha256 *s, const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = PP_ROR(w[i - 15], 7) ^ PP_ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = PP_ROR(w[i - 2], 17) ^ PP_ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (PP_ROR(e, 6) ^ PP_ROR(e, 11) ^ PP_ROR(e, 25)) +
                      ((e & f) ^ (~e & g)) + pp_sha_k[i] + w[i];
        uint32_t t2 = (PP_ROR(a, 2) ^ PP_ROR(a, 13) ^ PP_ROR(a, 22)) +
                      ((a & b) ^ (a & c) ^ (b & c));
        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

PGPIPE_PRIVATE void pp_sha256_update(pp_sha256 *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->total += n;
    while (n) {
        if (s->fill == 0 && n >= 64) {
            pp_sha256_block(s, p);
            p += 64;
            n -= 64;
            continue;
        }
        size_t k = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->block + s->fill, p, k);
        s->fill += k;
        p += k;
        n -= k;
        if (s->fill == 64) {
            pp_sha256_block(s, s->block);
            s->fill = 0;
        }
    }
}

PGPIPE_PRIVATE void pp_sha256_final(pp_sha256 *s, unsigned char out[32])
{
    uint64_t bits = s->total * 8;
    unsigned char pad[72];
    size_t padlen = (s->fill < 56 ? 56 : 120) - s->fill;
    memset(pad, 0, sizeof pad);
    pad[0] = 0x80;
    for (int i = 0; i < 8; i++)
        pad[padlen + (size_t)i] = (unsigned char)(bits >> (56 - 8 * i));
    uint64_t keep = s->total;
    pp_sha256_update(s, pad, padlen + 8);
    s->total = keep;
    for (int i = 0; i < 32; i++)
        out[i] = (unsigned char)(s->h[i / 4] >> (24 - 8 * (i % 4)));
}

PGPIPE_PRIVATE void pp_sha256_hex(pp_sha256 *s, char out[65])
{
    unsigned char d[32];
    pp_sha256_final(s, d);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = pp_hexdig[d[i] >> 4];
        out[2 * i + 1] = pp_hexdig[d[i] & 15];
    }
    out[64] = '\0';
}

void pgpipe_sha256_hex(const void *data, size_t len, char out[65])
{
    pp_sha256 s;
    pp_sha256_init(&s);
    pp_sha256_update(&s, data, len);
    pp_sha256_hex(&s, out);
}

/* ---- Base64 (RFC 4648) ------------------------------------------------------ */

PGPIPE_PRIVATE size_t pp_base64_encode(char *dst, size_t cap, const void *data, size_t n, int url)
{
    static const char std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static const char safe[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const char *al = url ? safe : std;
    const unsigned char *p = data;
    size_t len = url ? (n * 4 + 2) / 3 : (n + 2) / 3 * 4;
    if (len >= cap)
        return len;
    size_t w = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        size_t k = n - i < 3 ? n - i : 3;
        if (k > 1)
            v |= (uint32_t)p[i + 1] << 8;
        if (k > 2)
            v |= p[i + 2];
        dst[w++] = al[v >> 18];
        dst[w++] = al[(v >> 12) & 63];
        if (k > 1)
            dst[w++] = al[(v >> 6) & 63];
        else if (!url)
            dst[w++] = '=';
        if (k > 2)
            dst[w++] = al[v & 63];
        else if (!url)
            dst[w++] = '=';
    }
    dst[w] = '\0';
    return w;
}

static int pp_base64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

PGPIPE_PRIVATE long pp_base64_decode(unsigned char *dst, size_t cap, const char *s, size_t n)
{
    while (n && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    size_t out = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (out > cap)
        return -1;
    uint32_t acc = 0;
    size_t w = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = pp_base64_value((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            dst[w++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) /* bits left over that no encoder writes */
        return -1;
    return (long)w;
}

/* ---- Hashing and jitter ---------------------------------------------------- */

PGPIPE_PRIVATE uint64_t pp_hash64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

PGPIPE_PRIVATE uint64_t pp_rand_next(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

PGPIPE_PRIVATE uint64_t pp_rand_seed(void)
{
    static uint64_t counter = 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^
                 ((uint64_t)getpid() << 40);
    s ^= (uint64_t)(uintptr_t)&s; /* differs between threads */
    pp_mutex_lock(&pp_text_mutex);
    s += 0x9E3779B97F4A7C15ull * ++counter;
    pp_mutex_unlock(&pp_text_mutex);
    return s ? s : 1;
}
