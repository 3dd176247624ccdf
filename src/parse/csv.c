/*
** CSV reader: a streaming pull parser for RFC 4180 and real-world CSV, which
** can also hand a record on as a COPY text row (pgpipe_csv_copy_row).
**
** Design. Input is read (or fed) into one buffer that is grown only when a
** single record is longer than it. After the last byte of data the buffer
** always holds a '\n' sentinel followed by CSV_PAD bytes of slack, so the
** scanners can load 64 bytes at a time and need no end check in their loop:
** they stop at the sentinel at the latest. The parser finds the next special
** byte (delimiter, quote, CR, LF) from a 64-bit mask computed for 64 bytes at
** a time with SSE2 (or 8-byte SWAR), and a field is a
** span of the buffer: unquoted fields and quoted fields without "" are never
** copied. Fields holding "" (or, in lenient mode, text after a closing quote)
** are decoded when the record is complete into a per-record scratch buffer,
** so the raw record stays intact for a dead-letter queue.
**
** When a record straddles the end of the data, the parser saves its state
** (which field, quoted or not, where to resume scanning) and returns; the
** partial record is moved to the front of the buffer, more data is read, and
** parsing resumes where it stopped, so no byte is scanned twice however small
** the chunks are. Physical lines are counted at record ends and inside quoted
** fields only; the column of an error is computed when the error happens by
** rescanning the record from its start.
*/

#include "pp_parse.h"

/* A size build (PGPIPE_SMALL) keeps the state machine alone, with its
** SWAR scan; the fast path and its block classifiers are for speed only. */
#if PGPIPE_SMALL
#define CSV_FAST 0
#else
#define CSV_FAST 1
#endif

#if defined(__SSE2__) && !defined(PGPIPE_CSV_NO_SSE2) && CSV_FAST
#include <emmintrin.h>
#define CSV_SSE2 1
#elif defined(__GNUC__) && defined(__BYTE_ORDER__) && \
      __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ && !defined(PGPIPE_CSV_NO_SWAR)
#define CSV_SWAR 1
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(PGPIPE_CSV_NO_AVX2) && CSV_FAST
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON) && CSV_FAST
#include <arm_neon.h>
#endif

#define CSV_PAD 64                         /* slack after the sentinel */
#define CSV_NB 4                           /* blocks the fast path classifies at once */
#define CSV_DEFAULT_BUFFER (128u * 1024u)
#define CSV_DEFAULT_MAX_FIELD ((size_t)64 * 1024 * 1024)

/* parser states kept across refills */
enum { CSV_ST_FIELD, CSV_ST_UNQ, CSV_ST_QUO };
/* internal field flags, in pgpipe_csv_span.quoted until the record ends */
#define CSV_F_QUOTED 1
#define CSV_F_DECODE 2 /* raw span (quotes included) that needs decoding */
/* row error kinds */
enum { CSV_E_NONE, CSV_E_STRAY, CSV_E_AFTERQ, CSV_E_UNTERM, CSV_E_LARGE, CSV_E_COUNT };
enum { CSV_SRC_FD, CSV_SRC_FILE, CSV_SRC_FEED };

/* ---- the structural fast path ------------------------------------------ */

/* A record of well-formed CSV (every quote opens a field, closes it, or is
** half of a "" pair) is split without a branch per quote: a classifier marks
** the quotes, separators (delimiter, CR, LF) and line breaks of 64-byte
** blocks in bit masks, plus the running XOR of the quote bits (the in-quote
** mask, by carry-less multiply or a shift-xor ladder); the separators outside
** quotes are the field ends, taken one by one with count-trailing-zeros. The
** same masks show, with a few bit operations, any quote that breaks the
** rules (one inside an unquoted field, text after a closing quote); then the
** record is parsed again by the state machine below, which reports the error
** (or keeps the text, lenient) exactly as before. Records that reach the end
** of the data, or hold a field longer than max_field_size, go to the state
** machine too. Classifiers: AVX2 with PCLMUL (chosen at run time), NEON on
** aarch64, and SSE2 and a portable one (SWAR or bytewise) that only a test
** or PGPIPE_CSV_SIMD asks for: on an x86 CPU without AVX2 the state machine
** alone (which scans with SSE2) is the default, being cheaper there.
** PGPIPE_CSV_SIMD=none|scalar|sse2|avx2|neon forces a path (the tests run
** every one); an unknown or unsupported name means the best this CPU has. */

/* the four masks of a block at m[0..3]: quotes, separators, CR/LF, and the
** inclusive prefix XOR of the quotes (bit i: odd number of quotes in 0..i) */
typedef void (*csv_cls_fn)(const unsigned char *p, int nb, unsigned char qc, unsigned char dl,
                           uint64_t *m);

#if CSV_FAST

static inline uint64_t csv_pxor_ladder(uint64_t x)
{
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    return x;
}

#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
/* 0x80 in exactly the bytes of v that are zero */
static inline uint64_t csv_swar_zero(uint64_t v)
{
    const uint64_t lo7 = 0x7F7F7F7F7F7F7F7Full;
    return ~(((v & lo7) + lo7) | v | lo7);
}

/* the high bits of the 8 bytes of z, as 8 bits */
static inline uint64_t csv_swar_gather(uint64_t z)
{
    return ((z >> 7) * 0x0102040810204080ull) >> 56;
}

static void csv_cls_scalar(const unsigned char *p, int nb, unsigned char qc, unsigned char dl,
                           uint64_t *m)
{
    const uint64_t ones = 0x0101010101010101ull;
    const uint64_t vq = ones * qc, vd = ones * dl, vcr = ones * '\r', vlf = ones * '\n';
    for (int b = 0; b < nb; b++, p += 64, m += 4) {
        uint64_t q = 0, s = 0, n = 0;
        for (int i = 0; i < 8; i++) {
            uint64_t w;
            memcpy(&w, p + 8 * i, 8);
            uint64_t zn = csv_swar_zero(w ^ vcr) | csv_swar_zero(w ^ vlf);
            q |= csv_swar_gather(csv_swar_zero(w ^ vq)) << (8 * i);
            s |= csv_swar_gather(zn | csv_swar_zero(w ^ vd)) << (8 * i);
            n |= csv_swar_gather(zn) << (8 * i);
        }
        m[0] = q;
        m[1] = s;
        m[2] = n;
        m[3] = q ? csv_pxor_ladder(q) : 0;
    }
}
#else
static void csv_cls_scalar(const unsigned char *p, int nb, unsigned char qc, unsigned char dl,
                           uint64_t *m)
{
    for (int b = 0; b < nb; b++, p += 64, m += 4) {
        uint64_t q = 0, s = 0, n = 0;
        for (int i = 0; i < 64; i++) {
            uint64_t bit = (uint64_t)1 << i;
            unsigned char c = p[i];
            if (c == qc)
                q |= bit;
            else if (c == dl)
                s |= bit;
            else if (c == '\r' || c == '\n') {
                s |= bit;
                n |= bit;
            }
        }
        m[0] = q;
        m[1] = s;
        m[2] = n;
        m[3] = q ? csv_pxor_ladder(q) : 0;
    }
}
#endif

#if defined(__SSE2__) && (defined(__x86_64__) || defined(__i386__))
#define CSV_HAVE_SSE2 1
static void csv_cls_sse2(const unsigned char *p, int nb, unsigned char qc, unsigned char dl,
                         uint64_t *m)
{
    const __m128i vq = _mm_set1_epi8((char)qc), vd = _mm_set1_epi8((char)dl),
                  vcr = _mm_set1_epi8('\r'), vlf = _mm_set1_epi8('\n');
    for (int b = 0; b < nb; b++, p += 64, m += 4) {
        uint64_t q = 0, s = 0, n = 0;
        for (int i = 0; i < 4; i++) {
            __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i));
            __m128i en = _mm_or_si128(_mm_cmpeq_epi8(x, vcr), _mm_cmpeq_epi8(x, vlf));
            q |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, vq)) << (16 * i);
            s |= (uint64_t)(unsigned)_mm_movemask_epi8(_mm_or_si128(en, _mm_cmpeq_epi8(x, vd)))
                 << (16 * i);
            n |= (uint64_t)(unsigned)_mm_movemask_epi8(en) << (16 * i);
        }
        m[0] = q;
        m[1] = s;
        m[2] = n;
        m[3] = q ? csv_pxor_ladder(q) : 0;
    }
}
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(PGPIPE_CSV_NO_AVX2)
#define CSV_HAVE_AVX2 1
__attribute__((target("avx2,pclmul")))
static void csv_cls_avx2(const unsigned char *p, int nb, unsigned char qc, unsigned char dl,
                         uint64_t *m)
{
    const __m256i vq = _mm256_set1_epi8((char)qc), vd = _mm256_set1_epi8((char)dl),
                  vcr = _mm256_set1_epi8('\r'), vlf = _mm256_set1_epi8('\n');
    const __m128i all = _mm_set1_epi8((char)0xFF);
    for (int b = 0; b < nb; b++, p += 64, m += 4) {
        __m256i x0 = _mm256_loadu_si256((const __m256i *)(const void *)p);
        __m256i x1 = _mm256_loadu_si256((const __m256i *)(const void *)(p + 32));
        __m256i n0 = _mm256_or_si256(_mm256_cmpeq_epi8(x0, vcr), _mm256_cmpeq_epi8(x0, vlf));
        __m256i n1 = _mm256_or_si256(_mm256_cmpeq_epi8(x1, vcr), _mm256_cmpeq_epi8(x1, vlf));
        uint64_t q = (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x0, vq)) |
                     (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_cmpeq_epi8(x1, vq)) << 32;
        uint64_t s =
            (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_or_si256(n0, _mm256_cmpeq_epi8(x0, vd))) |
            (uint64_t)(uint32_t)_mm256_movemask_epi8(_mm256_or_si256(n1, _mm256_cmpeq_epi8(x1, vd)))
                << 32;
        uint64_t n = (uint64_t)(uint32_t)_mm256_movemask_epi8(n0) |
                     (uint64_t)(uint32_t)_mm256_movemask_epi8(n1) << 32;
        m[0] = q;
        m[1] = s;
        m[2] = n;
        m[3] = (uint64_t)_mm_cvtsi128_si64(
            _mm_clmulepi64_si128(_mm_set_epi64x(0, (long long)q), all, 0));
    }
}
#endif

#if defined(__aarch64__) && defined(__ARM_NEON)
#define CSV_HAVE_NEON 1
/* 64 lanes of 0xFF/0x00 (four vectors) as a 64-bit mask, lane i at bit i */
static inline uint64_t csv_neon_bits(uint8x16_t a, uint8x16_t b, uint8x16_t c, uint8x16_t d)
{
    static const uint8_t wt[16] = { 1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128 };
    const uint8x16_t w = vld1q_u8(wt);
    uint8x16_t x = vpaddq_u8(vandq_u8(a, w), vandq_u8(b, w));
    uint8x16_t y = vpaddq_u8(vandq_u8(c, w), vandq_u8(d, w));
    x = vpaddq_u8(x, y);
    x = vpaddq_u8(x, x);
    return vgetq_lane_u64(vreinterpretq_u64_u8(x), 0);
}

static void csv_cls_neon(const unsigned char *p, int nb, unsigned char qc, unsigned char dl,
                         uint64_t *m)
{
    const uint8x16_t vq = vdupq_n_u8(qc), vd = vdupq_n_u8(dl), vcr = vdupq_n_u8('\r'),
                     vlf = vdupq_n_u8('\n');
    for (int b = 0; b < nb; b++, p += 64, m += 4) {
        uint8x16_t x[4], eq[4], en[4], es[4];
        for (int i = 0; i < 4; i++) {
            x[i] = vld1q_u8(p + 16 * i);
            eq[i] = vceqq_u8(x[i], vq);
            en[i] = vorrq_u8(vceqq_u8(x[i], vcr), vceqq_u8(x[i], vlf));
            es[i] = vorrq_u8(en[i], vceqq_u8(x[i], vd));
        }
        uint64_t q = csv_neon_bits(eq[0], eq[1], eq[2], eq[3]);
        m[0] = q;
        m[1] = csv_neon_bits(es[0], es[1], es[2], es[3]);
        m[2] = csv_neon_bits(en[0], en[1], en[2], en[3]);
        m[3] = q ? csv_pxor_ladder(q) : 0;
    }
}
#endif
#endif /* CSV_FAST */

/* The classifier PGPIPE_CSV_SIMD asks for (or the best one), and its name. */
static csv_cls_fn csv_pick_cls(const char **name)
{
#if !CSV_FAST
    *name = "none";
    return NULL;
#else
    const char *want = getenv("PGPIPE_CSV_SIMD");
    if (!want)
        want = "";
    if (strcmp(want, "none") == 0) {
        *name = "none";
        return NULL;
    }
    if (strcmp(want, "scalar") == 0) {
        *name = "scalar";
        return csv_cls_scalar;
    }
#if defined(CSV_HAVE_SSE2)
    if (strcmp(want, "sse2") == 0) {
        *name = "sse2";
        return csv_cls_sse2;
    }
#endif
#if defined(CSV_HAVE_AVX2)
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("pclmul")) {
        *name = "avx2";
        return csv_cls_avx2;
    }
#endif
#if defined(CSV_HAVE_NEON)
    *name = "neon";
    return csv_cls_neon;
#else
    /* Without AVX2 the state machine alone is the default: its own SSE2 (or
    ** SWAR) scan costs fewer instructions on unquoted and sparsely quoted
    ** CSV than the SSE2 or portable classifier plus the fast path (measured
    ** with callgrind: 6.4 / 6.6 / 8.9 against 6.8 / 7.5 / 8.1 instructions
    ** per byte for unquoted / sparse / quoted); those stay for the tests. */
    *name = "none";
    return NULL;
#endif
#endif /* CSV_FAST */
}

/* where the fast path stands: the masks of the block at buffer offset bo
** (block k of the classified ones) not yet consumed, and what it hands on
** to the next block */
typedef struct csv_fst {
    size_t bo;
    int k;
    uint64_t sep, pair, nin, bad;
    uint64_t csq, ccl, cq, par;
} csv_fst;

struct pgpipe_csv {
    pp_handle hdr;
    int src;
    int fd;
    FILE *fp;
    char *source;
    unsigned char dl, qc;
    int strict, skip_empty, want_header, check_names;
    int expected;             /* fields per record, 0 = any */
    size_t maxf;

    unsigned char *buf;       /* cap bytes of data + sentinel + CSV_PAD */
    size_t cap, len;          /* data is buf[0..len), buf[len] == '\n' */
    size_t pos;               /* first byte not consumed by a finished record */
    long long boff;           /* input offset of buf[0] */
    int eof;                  /* no more input will come */
    int fatal;                /* sticky result code of a failed reader */
    int bom_done, skip_lf;

    /* the record being parsed or last returned */
    int in_record;
    int state;
    size_t scan, fstart;      /* resume point, start of the current field */
    int fflags;
    int discard;              /* a field outgrew max_field_size: bytes dropped */
    int need_decode;
    size_t rec_start, raw_len;
    int raw_ok;
    long long line;           /* physical line at the scan position */
    long long rec_line, rec_offset;
    long long nrec;

    pgpipe_csv_span *f;
    int nf, fcap;

    /* first problem of the current record */
    int ekind, efield;
    long long eline, ecol, eoff;
    int last_efield;

    char **names;
    int nnames, header_done;
    pp_buf scratch;

    /* the fast path: its classifier (NULL: state machine only) and the masks
    ** of the blocks from buffer offset cbase on, valid while cgen == gen
    ** (gen moves whenever the buffer's bytes move or grow) */
    csv_cls_fn cls;
    const char *simd;
    uint64_t cm[4 * CSV_NB];
    size_t cbase;
    int cnb;
    unsigned gen, cgen;
    csv_fst fst;              /* kept from the last record of the fast path */
    size_t fnext;             /* ... valid for a record from there on */
    unsigned fgen;
    int fok;
    long long nfast;          /* records the fast path took (for the tests) */
};

/* ---- scanning --------------------------------------------------------- */

/* Every scanner returns a 64-bit mask with bit i set when p[i] is the
** delimiter, the quote, CR or LF. p[0..63] must be readable (the buffer has
** CSV_PAD bytes of slack after the sentinel). */
#if defined(CSV_SSE2)
typedef __m128i csv_vec;
#define csv_splat(c) _mm_set1_epi8((char)(c))

static inline uint64_t csv_mask64(const unsigned char *p, csv_vec a, csv_vec b, csv_vec cr,
                                  csv_vec lf)
{
    uint64_t m = 0;
    for (int i = 0; i < 4; i++) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * i));
        __m128i e = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(x, a), _mm_cmpeq_epi8(x, b)),
                                 _mm_or_si128(_mm_cmpeq_epi8(x, cr), _mm_cmpeq_epi8(x, lf)));
        m |= (uint64_t)(unsigned)_mm_movemask_epi8(e) << (16 * i);
    }
    return m;
}
#define csv_ctz64(m) ((unsigned)__builtin_ctzll(m))
#elif defined(CSV_SWAR)
typedef uint64_t csv_vec;
#define csv_splat(c) ((uint64_t)(unsigned char)(c) * 0x0101010101010101ull)

/* 0x80 in exactly the bytes of v that are zero */
static inline uint64_t csv_zero_bytes(uint64_t v)
{
    const uint64_t lo7 = 0x7F7F7F7F7F7F7F7Full;
    return ~(((v & lo7) + lo7) | v | lo7);
}

static inline uint64_t csv_mask64(const unsigned char *p, csv_vec a, csv_vec b, csv_vec cr,
                                  csv_vec lf)
{
    uint64_t m = 0;
    for (int i = 0; i < 8; i++) {
        uint64_t w;
        memcpy(&w, p + 8 * i, 8);
        uint64_t z = csv_zero_bytes(w ^ a) | csv_zero_bytes(w ^ b) |
                     csv_zero_bytes(w ^ cr) | csv_zero_bytes(w ^ lf);
        /* gather the 8 high bits into one byte (little-endian byte order) */
        m |= (((z >> 7) * 0x0102040810204080ull) >> 56) << (8 * i);
    }
    return m;
}
#define csv_ctz64(m) ((unsigned)__builtin_ctzll(m))
#else
typedef unsigned char csv_vec;
#define csv_splat(c) ((unsigned char)(c))

static inline uint64_t csv_mask64(const unsigned char *p, csv_vec a, csv_vec b, csv_vec cr,
                                  csv_vec lf)
{
    uint64_t m = 0;
    for (int i = 0; i < 64; i++)
        if (p[i] == a || p[i] == b || p[i] == cr || p[i] == lf)
            m |= (uint64_t)1 << i;
    return m;
}

static inline unsigned csv_ctz64(uint64_t m)
{
    unsigned n = 0;
    while (!(m & 1)) {
        m >>= 1;
        n++;
    }
    return n;
}
#endif

/* ---- options and opening ---------------------------------------------- */

void pgpipe_csv_options_init(pgpipe_csv_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->delimiter = ',';
    o->quote = '"';
    o->header = 0;
    o->strict = 1;
    o->skip_empty_lines = 1;
    o->expected_fields = 0;
    o->max_field_size = CSV_DEFAULT_MAX_FIELD;
    o->buffer_size = CSV_DEFAULT_BUFFER;
    o->source = NULL;
}

static int csv_alloc_buf(pgpipe_csv *r, size_t cap)
{
    unsigned char *b = pp_malloc(cap + 1 + CSV_PAD);
    if (!b)
        return PGPIPE_NOMEM;
    memset(b, '\n', cap + 1 + CSV_PAD);
    r->buf = b;
    r->cap = cap;
    return PGPIPE_OK;
}

static pgpipe_csv *csv_open(int src, int fd, FILE *fp, const pgpipe_csv_options *opts)
{
    pgpipe_csv_options o;
    if (opts)
        o = *opts;
    else
        pgpipe_csv_options_init(&o);
    pgpipe_csv *r = pp_handle_new(sizeof *r);
    if (!r)
        return NULL;
    r->src = src;
    r->fd = fd;
    r->fp = fp;
    r->source = pp_strdup(o.source && *o.source ? o.source : "<input>");
    size_t cap = o.buffer_size ? o.buffer_size : CSV_DEFAULT_BUFFER;
    if (cap > ((size_t)1 << 30))
        cap = (size_t)1 << 30;
    if (!r->source || csv_alloc_buf(r, cap) != PGPIPE_OK) {
        pp_free(r->source);
        pp_free(r);
        return NULL;
    }
    r->line = 1;
    r->cls = csv_pick_cls(&r->simd);
    r->gen = 1;
    r->strict = o.strict != 0;
    r->skip_empty = o.skip_empty_lines != 0;
    r->want_header = o.header != 0;
    r->check_names = o.check_names != 0;
    r->header_done = !r->want_header;
    r->expected = o.expected_fields > 0 ? o.expected_fields : 0;
    r->maxf = o.max_field_size ? o.max_field_size : CSV_DEFAULT_MAX_FIELD;
    if (o.expected_fields < 0)
        r->expected = -1; /* never derive it from the header */
    if (o.delimiter < 0 || o.delimiter > 255 || o.delimiter == '\r' || o.delimiter == '\n')
        r->fatal = pp_err(&r->hdr.err, PGPIPE_MISUSE,
                          "csv: the delimiter must be a byte other than CR and LF");
    else if (o.quote < 0 || o.quote > 255 || o.quote == '\r' || o.quote == '\n')
        r->fatal = pp_err(&r->hdr.err, PGPIPE_MISUSE,
                          "csv: the quote must be a byte other than CR and LF");
    else if (o.quote == o.delimiter)
        r->fatal = pp_err(&r->hdr.err, PGPIPE_MISUSE,
                          "csv: the quote and the delimiter must differ");
    else if (src == CSV_SRC_FD && fd < 0)
        r->fatal = pp_err(&r->hdr.err, PGPIPE_MISUSE, "csv: bad file descriptor");
    else if (src == CSV_SRC_FILE && !fp)
        r->fatal = pp_err(&r->hdr.err, PGPIPE_MISUSE, "csv: NULL FILE");
    r->dl = (unsigned char)o.delimiter;
    r->qc = (unsigned char)o.quote;
    return r;
}

/* The reader is returned even when the options are bad, so its error can be
** read; pgpipe_csv_next() then keeps returning that code. */
static int csv_open_out(pgpipe_csv **out, pgpipe_csv *r)
{
    if (!out) {
        pgpipe_csv_close(r);
        return PGPIPE_MISUSE;
    }
    *out = r;
    return r ? r->fatal : PGPIPE_NOMEM;
}

int pgpipe_csv_open_fd(pgpipe_csv **out, int fd, const pgpipe_csv_options *opts)
{
    return csv_open_out(out, csv_open(CSV_SRC_FD, fd, NULL, opts));
}

int pgpipe_csv_open_file(pgpipe_csv **out, FILE *fp, const pgpipe_csv_options *opts)
{
    return csv_open_out(out, csv_open(CSV_SRC_FILE, -1, fp, opts));
}

int pgpipe_csv_open_feed(pgpipe_csv **out, const pgpipe_csv_options *opts)
{
    return csv_open_out(out, csv_open(CSV_SRC_FEED, -1, NULL, opts));
}

void pgpipe_csv_close(pgpipe_csv *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nnames; i++)
        pp_free(r->names[i]);
    pp_free(r->names);
    pp_free(r->f);
    pp_free(r->buf);
    pp_free(r->source);
    pp_buf_free(&r->scratch);
    r->hdr.magic = 0;
    pp_free(r);
}

/* ---- buffer management ------------------------------------------------- */

/* Drop the bytes before the first one still needed and, when the buffer is
** full, double it, keeping the fields of a record in progress valid. After
** this, at least `want` bytes are free at the end of the buffer. */
static int csv_make_room(pgpipe_csv *r, size_t want)
{
    size_t keep = r->pos;
    if (r->in_record) {
        if (r->discard) {
            /* the record is lost anyway: keep only what is left to scan */
            r->nf = 0;
            r->rec_start = r->fstart = r->scan;
        }
        keep = r->rec_start;
    }
    size_t live = r->len - keep;
    size_t cap = r->cap;
    while (cap - live < want) {
        if (cap > SIZE_MAX / 4)
            return PGPIPE_NOMEM;
        cap *= 2;
    }
    unsigned char *old = r->buf, *nb = old;
    if (cap != r->cap) {
        nb = pp_malloc(cap + 1 + CSV_PAD);
        if (!nb)
            return PGPIPE_NOMEM;
        memcpy(nb, old + keep, live);
        memset(nb + live, '\n', cap + 1 + CSV_PAD - live);
    } else if (keep) {
        memmove(nb, old + keep, live);
    } else {
        return PGPIPE_OK;
    }
    if (r->in_record && !r->discard) {
        for (int i = 0; i < r->nf; i++)
            r->f[i].data = (const char *)nb + ((const unsigned char *)r->f[i].data - (old + keep));
    }
    if (nb != old) {
        pp_free(old);
        r->buf = nb;
        r->cap = cap;
    }
    r->boff += (long long)keep;
    r->len = live;
    r->pos -= keep < r->pos ? keep : r->pos;
    if (r->in_record) {
        r->rec_start -= keep;
        r->scan -= keep;
        r->fstart -= keep;
    }
    r->buf[r->len] = '\n';
    r->gen++;
    return PGPIPE_OK;
}

/* Get more input for a fd or FILE reader. */
static int csv_fill(pgpipe_csv *r)
{
    if (r->eof)
        return PGPIPE_OK;
    size_t want = r->cap / 2 ? r->cap / 2 : 1;
    if (csv_make_room(r, want) != PGPIPE_OK)
        return r->fatal = pp_err_nomem(&r->hdr.err);
    size_t room = r->cap - r->len;
    if (r->src == CSV_SRC_FD) {
        ssize_t n;
        do {
            n = read(r->fd, r->buf + r->len, room);
        } while (n < 0 && errno == EINTR);
        if (n < 0)
            return r->fatal = pp_err(&r->hdr.err, PGPIPE_IO, "%s: read failed: %s", r->source,
                                     strerror(errno));
        if (n == 0)
            r->eof = 1;
        r->len += (size_t)n;
    } else {
        size_t n = fread(r->buf + r->len, 1, room, r->fp);
        if (n == 0) {
            if (ferror(r->fp))
                return r->fatal = pp_err(&r->hdr.err, PGPIPE_IO, "%s: read failed", r->source);
            r->eof = 1;
        }
        r->len += n;
    }
    r->buf[r->len] = '\n';
    r->gen++;
    return PGPIPE_OK;
}

int pgpipe_csv_feed(pgpipe_csv *r, const void *data, size_t len)
{
    if (!r || r->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (r->fatal)
        return r->fatal;
    if (r->src != CSV_SRC_FEED || r->eof)
        return pp_err(&r->hdr.err, PGPIPE_MISUSE,
                      r->eof ? "csv: feed after feed_end" : "csv: not a feed reader");
    if (len == 0)
        return PGPIPE_OK;
    if (!data)
        return pp_err(&r->hdr.err, PGPIPE_MISUSE, "csv: NULL chunk");
    if (r->cap - r->len < len && csv_make_room(r, len) != PGPIPE_OK)
        return r->fatal = pp_err_nomem(&r->hdr.err);
    memcpy(r->buf + r->len, data, len);
    r->len += len;
    r->buf[r->len] = '\n';
    r->gen++;
    return PGPIPE_OK;
}

int pgpipe_csv_feed_end(pgpipe_csv *r)
{
    if (!r || r->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (r->src != CSV_SRC_FEED)
        return pp_err(&r->hdr.err, PGPIPE_MISUSE, "csv: not a feed reader");
    r->eof = 1;
    return PGPIPE_OK;
}

/* ---- errors ------------------------------------------------------------ */

/* Record the first problem of the current record at buffer position at. The
** line and column are found by rescanning the record from its start. */
static void csv_rowerr(pgpipe_csv *r, int kind, const unsigned char *at, int field)
{
    /* The report must not depend on how the input was chunked: a too-large
    ** field wins (the record is dropped, and may be partly discarded
    ** already), otherwise the problem nearest the start of the record. */
    long long off = r->boff + (long long)(at - r->buf);
    if (r->ekind == CSV_E_LARGE)
        return;
    if (r->ekind != CSV_E_NONE && kind != CSV_E_LARGE && off >= r->eoff)
        return;
    r->ekind = kind;
    r->efield = field;
    const unsigned char *p = r->buf + r->rec_start, *ls = p;
    long long line = r->rec_line;
    if (r->discard || at < p) {
        /* should not happen: the first error comes before any discard */
        p = ls = at;
        line = r->line;
    }
    for (; p < at; p++) {
        if (*p == '\n' || (*p == '\r' && p[1] != '\n')) {
            line++;
            ls = p + 1;
        }
    }
    r->eline = line;
    r->ecol = (long long)(at - ls) + 1;
    r->eoff = off;
}

static int csv_report(pgpipe_csv *r)
{
    const char *what = "malformed record";
    switch (r->ekind) {
    case CSV_E_STRAY: what = "quote character inside an unquoted field"; break;
    case CSV_E_AFTERQ: what = "unexpected character after a closing quote"; break;
    case CSV_E_UNTERM: what = "unterminated quoted field at end of input"; break;
    case CSV_E_LARGE: what = "field too large"; break;
    default: break;
    }
    r->last_efield = r->efield;
    if (r->ekind == CSV_E_COUNT)
        return pp_err_at(&r->hdr.err, PGPIPE_PARSE, r->source, r->eline, r->ecol, r->eoff,
                         "record starting at line %lld has %d fields, expected %d "
                         "(field %d)", r->rec_line, r->nf, r->expected, r->efield);
    if (r->ekind == CSV_E_LARGE)
        return pp_err_at(&r->hdr.err, PGPIPE_PARSE, r->source, r->eline, r->ecol, r->eoff,
                         "%s: field %d of the record starting at line %lld is longer "
                         "than %zu bytes", what, r->efield, r->rec_line, r->maxf);
    if (r->ekind == CSV_E_UNTERM)
        return pp_err_at(&r->hdr.err, PGPIPE_PARSE, r->source, r->eline, r->ecol, r->eoff,
                         "%s: field %d of the record starting at line %lld opens a quote "
                         "here that is never closed", what, r->efield, r->rec_line);
    return pp_err_at(&r->hdr.err, PGPIPE_PARSE, r->source, r->eline, r->ecol, r->eoff,
                     "%s (field %d of the record starting at line %lld)", what, r->efield,
                     r->rec_line);
}

/* ---- the parser ---------------------------------------------------------- */

static int csv_grow_fields(pgpipe_csv *r)
{
    int ncap = r->fcap ? r->fcap * 2 : 64;
    if (ncap > INT_MAX / 2)
        return PGPIPE_NOMEM;
    pgpipe_csv_span *nf = pp_realloc(r->f, (size_t)ncap * sizeof *nf);
    if (!nf)
        return PGPIPE_NOMEM;
    r->f = nf;
    r->fcap = ncap;
    return PGPIPE_OK;
}

#if CSV_FAST
/* Classify the blocks from buffer offset at on (as many as CSV_NB, none past
** the sentinel) into r->cm. */
static void csv_fast_fill(pgpipe_csv *r, size_t at)
{
    size_t left = r->len - at; /* > 0 */
    int nb = left >= (size_t)64 * CSV_NB ? CSV_NB : (int)((left + 63) / 64);
    r->cls(r->buf + at, nb, r->qc, r->dl, r->cm);
    r->cbase = at;
    r->cnb = nb;
    r->cgen = r->gen;
}

/* Count the line breaks at the bits of m (inside quotes): CR LF is one. */
static long long csv_fast_lines(const unsigned char *blk, uint64_t m)
{
    long long n = 0;
    while (m) {
        unsigned j = csv_ctz64(m);
        m &= m - 1;
        n += !(blk[j] == '\r' && blk[j + 1] == '\n');
    }
    return n;
}

/* The fast path over a record that begins at r->rec_start (nothing of it
** parsed yet). Returns 1 when the record is complete (as csv_parse_record),
** 0 to let the state machine parse it from its start, -1 when out of
** memory. Nothing of the reader's state that the state machine uses changes
** unless it returns 1. The masks of the block where a record ends are kept
** (r->fst) for the next record, which begins at an even quote count. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static int csv_fast_record(pgpipe_csv *r)
{
    unsigned char *const base = r->buf;
    const size_t len = r->len, rs = r->rec_start;
    const unsigned char qc = r->qc, dl = r->dl;
    /* the block's masks not yet consumed, and what it hands on to the next */
    uint64_t sep, pair, nin, bad;
    csv_fst *const st = &r->fst; /* the carries, the block's place */
    const uint64_t *m;
    uint64_t valid;

/* the masks of the block at m that the field loop needs, from its raw masks,
** the bits that hold data (valid) and what the block before hands on */
#define CSV_DERIVE() do { \
        uint64_t q_ = m[0], s_ = m[1]; \
        if (!(q_ | st->par | st->ccl)) { \
            /* no quote in the block, none open, none just closed */ \
            sep = s_ & valid; \
            bad = pair = nin = 0; \
            st->csq = sep >> 63; \
            st->cq = 0; \
        } else { \
            uint64_t inq_ = m[3] ^ st->par, qv_ = q_ & valid; \
            uint64_t open_ = qv_ & inq_, close_ = qv_ & ~inq_; \
            sep = s_ & ~inq_ & valid; \
            uint64_t sepq_ = sep | qv_; \
            /* an opening quote not at a field start (nor the second of a ""), \
            ** or text outside quotes right after a closing quote */ \
            bad = (open_ & ~((sepq_ << 1) | st->csq)) | \
                  (valid & ~(q_ | s_ | inq_) & ((close_ << 1) | st->ccl)); \
            pair = open_ & ((qv_ << 1) | st->cq); /* the second quote of a "" */ \
            nin = m[2] & inq_ & valid;        /* line breaks inside quotes */ \
            st->csq = sepq_ >> 63; \
            st->ccl = close_ >> 63; \
            st->cq = qv_ >> 63; \
            st->par = (uint64_t)0 - (inq_ >> 63); \
        } \
    } while (0)

    if (r->fok && r->fgen == r->gen && rs >= r->fnext && rs - st->bo < 64) {
        uint64_t above = ~(uint64_t)0 << (rs - st->bo);
        sep = st->sep & above;
        pair = st->pair & above;
        nin = st->nin & above;
        bad = st->bad;
    } else {
        size_t bo;
        int k;
        if (r->cgen == r->gen && r->cnb && rs >= r->cbase &&
            rs - r->cbase < (size_t)64 * r->cnb) {
            k = (int)((rs - r->cbase) / 64);
            bo = r->cbase + (size_t)64 * (size_t)k;
        } else {
            csv_fast_fill(r, rs);
            k = 0;
            bo = rs;
        }
        unsigned sh = (unsigned)(rs - bo);
        m = r->cm + 4 * k;
        valid = ~(uint64_t)0 << sh;
        if (len - bo < 64)
            valid &= ((uint64_t)1 << (len - bo)) - 1;
        st->bo = bo;
        st->k = k;
        st->par = sh ? (uint64_t)0 - ((m[3] >> (sh - 1)) & 1) : 0; /* even at rs */
        st->csq = (uint64_t)1 << sh; /* the record start acts as a separator */
        st->ccl = 0;
        st->cq = 0;
        CSV_DERIVE();
    }
    r->fok = 0;
    if (PP_UNLIKELY(r->fcap == 0) && csv_grow_fields(r) != PGPIPE_OK)
        return -1;
    const unsigned char *fs = base + rs, *blk = base + st->bo;
    int need_decode = 0;
    long long lines = 0;
    pgpipe_csv_span *fa = r->f, *x = fa, *xend = fa + r->fcap;
    for (;;) {
        uint64_t cur = sep;
        if (PP_UNLIKELY(bad))
            cur &= (bad & (0 - bad)) - 1; /* the record must end before it */
        while (cur) {
            size_t j = csv_ctz64(cur);
            uint64_t upto = cur ^ (cur - 1); /* bits 0..j */
            cur &= cur - 1;
            if (PP_UNLIKELY(x == xend)) {
                size_t nx = (size_t)(x - fa);
                if (csv_grow_fields(r) != PGPIPE_OK)
                    return -1;
                fa = r->f;
                x = fa + nx;
                xend = fa + r->fcap;
            }
            const unsigned char *e = blk + j;
            size_t l = (size_t)(e - fs);
            if (*fs == qc) {
                if (PP_UNLIKELY(pair & upto)) {
                    /* it holds "" (or a marker at its end when it began in
                    ** an earlier block): raw, decoded at the end */
                    pair &= ~upto;
                    x->data = (const char *)fs;
                    x->len = l;
                    x->quoted = CSV_F_QUOTED | CSV_F_DECODE;
                    need_decode = 1;
                } else {
                    x->data = (const char *)fs + 1;
                    x->len = l - 2;
                    x->quoted = CSV_F_QUOTED;
                }
            } else {
                x->data = (const char *)fs;
                x->len = l;
                x->quoted = 0;
            }
            x++;
            fs = e + 1;
            if (PP_LIKELY(*e == dl))
                continue;
            /* the CR or LF that ends the record */
            int nf = (int)(x - fa);
            if (PP_UNLIKELY(nin & upto))
                lines += csv_fast_lines(blk, nin & upto);
            size_t raw = (size_t)(e - (base + rs));
            if (PP_UNLIKELY(raw > r->maxf)) {
                for (int i = 0; i < nf; i++)
                    if (fa[i].len > r->maxf)
                        return 0;
            }
            const unsigned char *end = base + len;
            r->nf = nf;
            r->need_decode = need_decode;
            r->raw_len = raw;
            r->line += lines + 1;
            if (*e == '\r') {
                if (e + 1 < end)
                    e += e[1] == '\n' ? 2 : 1;
                else {
                    e++;
                    r->skip_lf = !r->eof;
                }
            } else {
                e++;
            }
            r->pos = (size_t)(e - base);
            st->sep = sep & ~upto;
            st->pair = pair & ~upto;
            st->nin = nin & ~upto;
            st->bad = bad;
            r->fnext = r->pos;
            r->fgen = r->gen;
            r->fok = 1;
            r->nfast++;
            return 1;
        }
        if (bad)
            return 0;
        if (PP_UNLIKELY(nin))
            lines += csv_fast_lines(blk, nin);
        size_t bo = st->bo + 64;
        if (bo >= len)
            return 0; /* the record reaches the end of the data */
        st->bo = bo;
        int k = st->k + 1;
        if (k == r->cnb) {
            csv_fast_fill(r, bo);
            k = 0;
        }
        st->k = k;
        blk = base + bo;
        m = r->cm + 4 * k;
        valid = len - bo < 64 ? ((uint64_t)1 << (len - bo)) - 1 : ~(uint64_t)0;
        uint64_t pending = pair; /* the field going on holds "" */
        CSV_DERIVE();
        if (PP_UNLIKELY(pending))
            pair |= sep ? sep & (0 - sep) : (uint64_t)1 << 63;
    }
#undef CSV_DERIVE
}
#else
static int csv_fast_record(pgpipe_csv *r) /* never called: r->cls is NULL */
{
    (void)r;
    return 0;
}
#endif

/* Set up the next record: skip a BOM at the very start, the LF of a CRLF
** split across chunks, and empty lines. Returns PGPIPE_OK when a record
** begins, PGPIPE_DONE at the end of input, PGPIPE_BUSY when more input is
** needed to decide. */
static int csv_begin(pgpipe_csv *r)
{
    const unsigned char *b = r->buf;
    size_t p = r->pos, n = r->len;
    if (!r->bom_done) {
        if (n - p < 3 && !r->eof)
            return PGPIPE_BUSY;
        if (n - p >= 3 && b[p] == 0xEF && b[p + 1] == 0xBB && b[p + 2] == 0xBF)
            p += 3;
        r->bom_done = 1;
    }
    for (;;) {
        if (r->skip_lf) {
            if (p < n) {
                if (b[p] == '\n')
                    p++;
                r->skip_lf = 0;
            } else if (!r->eof) {
                r->pos = p;
                return PGPIPE_BUSY;
            } else {
                r->skip_lf = 0;
            }
        }
        if (p == n) {
            r->pos = p;
            return r->eof ? PGPIPE_DONE : PGPIPE_BUSY;
        }
        if (r->skip_empty && (b[p] == '\n' || b[p] == '\r')) {
            r->skip_lf = b[p] == '\r';
            p++;
            r->line++;
            continue;
        }
        break;
    }
    r->pos = r->rec_start = r->scan = r->fstart = p;
    r->rec_line = r->line;
    r->rec_offset = r->boff + (long long)p;
    r->nf = 0;
    r->state = CSV_ST_FIELD;
    r->fflags = 0;
    r->ekind = CSV_E_NONE;
    r->efield = 0;
    r->discard = 0;
    r->need_decode = 0;
    r->in_record = 1;
    return PGPIPE_OK;
}

#if !CSV_FAST
/* Field nf of the record (the state machine's CSV_PUSH in a size build). */
static int csv_push(pgpipe_csv *r, int nf, const char *d, size_t l, int flags)
{
    if (nf == r->fcap) {
        r->nf = nf;
        if (csv_grow_fields(r) != PGPIPE_OK)
            return PGPIPE_NOMEM;
    }
    r->f[nf].data = d;
    r->f[nf].len = l;
    r->f[nf].quoted = flags;
    return PGPIPE_OK;
}
#endif

/* Parse from the saved state to the end of the record. Returns 1 when the
** record is complete, 0 when more input is needed (state saved), -1 when out
** of memory. */
static int csv_parse_record(pgpipe_csv *r)
{
    unsigned char *const base = r->buf;
    const unsigned char *const end = base + r->len; /* *end == '\n' */
    const unsigned char *p = base + r->scan, *fs = base + r->fstart, *q;
    const unsigned char dl = r->dl, qc = r->qc;
    const csv_vec vd = csv_splat(dl), vq = csv_splat(qc), vcr = csv_splat('\r'),
                  vlf = csv_splat('\n');
    const size_t maxf = r->maxf;
    const int strict = r->strict;
    if (CSV_FAST && r->cls && r->state == CSV_ST_FIELD && r->scan == r->rec_start && r->nf == 0) {
        int rc = csv_fast_record(r);
        if (rc)
            return rc;
    }
#if CSV_FAST
    pgpipe_csv_span *fa = r->f;
    int fcap = r->fcap;
#endif
    int nf = r->nf;
    int fl = r->fflags;
    /* the special bytes of the 64-byte block at blk, not yet passed */
    const unsigned char *blk = p;
    uint64_t bits = csv_mask64(blk, vd, vq, vcr, vlf);

/* q = the first special byte at or after from (the sentinel stops it) */
#define CSV_NEXT(from) do { \
        size_t d_ = (size_t)((from) - blk); \
        uint64_t m_; \
        if (PP_LIKELY(d_ < 64)) { \
            m_ = bits & (~(uint64_t)0 << d_); \
        } else { \
            blk = (from); \
            m_ = bits = csv_mask64(blk, vd, vq, vcr, vlf); \
        } \
        while (!m_) { \
            blk += 64; \
            m_ = bits = csv_mask64(blk, vd, vq, vcr, vlf); \
        } \
        q = blk + csv_ctz64(m_); \
    } while (0)

#if CSV_FAST
#define CSV_PUSH(d, l, flags) do { \
        if (PP_UNLIKELY(nf == fcap)) { \
            r->nf = nf; \
            if (csv_grow_fields(r) != PGPIPE_OK) return -1; \
            fa = r->f; fcap = r->fcap; \
        } \
        fa[nf].data = (const char *)(d); fa[nf].len = (l); fa[nf].quoted = (flags); nf++; \
    } while (0)
#else /* one call in a size build */
#define CSV_PUSH(d, l, flags) do { \
        if (csv_push(r, nf, (const char *)(d), (l), (flags)) != PGPIPE_OK) return -1; \
        nf++; \
    } while (0)
#endif

    switch (r->state) {
    case CSV_ST_UNQ: goto unquoted;
    case CSV_ST_QUO: goto quoted;
    default: break;
    }

field:
    fs = p;
    if (*p == qc) {
        fl = CSV_F_QUOTED;
        p++;
        goto quoted;
    }
    fl = 0;
unquoted:
    for (;;) {
        CSV_NEXT(p);
        if (PP_LIKELY(*q == dl)) {
            size_t l = (size_t)(q - fs);
            if (PP_UNLIKELY(l > maxf) && l - (size_t)(fl & CSV_F_QUOTED) > maxf)
                csv_rowerr(r, CSV_E_LARGE, fs + (fl & CSV_F_QUOTED) + maxf, nf + 1);
            CSV_PUSH(fs, l, fl);
            p = q + 1;
            goto field;
        }
        if (*q == qc) {
            /* a stray quote (q < end: the sentinel is LF) */
            if (strict)
                csv_rowerr(r, fl ? CSV_E_AFTERQ : CSV_E_STRAY, q, nf + 1);
            p = q + 1;
            continue;
        }
        if (q == end && !r->eof) {
            /* an empty field so far may still turn out to be quoted */
            r->state = q == fs && !fl ? CSV_ST_FIELD : CSV_ST_UNQ;
            p = q;
            goto need_more;
        }
        size_t l = (size_t)(q - fs);
        if (PP_UNLIKELY(l > maxf) && l - (size_t)(fl & CSV_F_QUOTED) > maxf)
            csv_rowerr(r, CSV_E_LARGE, fs + (fl & CSV_F_QUOTED) + maxf, nf + 1);
        CSV_PUSH(fs, l, fl);
        if (fl & CSV_F_DECODE)
            r->need_decode = 1;
        goto record_end;
    }

quoted:
    for (;;) {
        CSV_NEXT(p);
        if (*q == qc) {
            if (PP_UNLIKELY(q + 1 == end)) {
                if (!r->eof) {
                    r->state = CSV_ST_QUO;
                    p = q;
                    goto need_more;
                }
                size_t l = (size_t)(q + 1 - fs);
                if (PP_UNLIKELY(l - 2 > maxf))
                    csv_rowerr(r, CSV_E_LARGE, fs + 1 + maxf, nf + 1);
                if (fl & CSV_F_DECODE) {
                    CSV_PUSH(fs, l, fl);
                    r->need_decode = 1;
                } else {
                    CSV_PUSH(fs + 1, l - 2, fl);
                }
                q = end;
                goto record_end;
            }
            unsigned char n = q[1];
            if (n == qc) {
                fl |= CSV_F_DECODE;
                p = q + 2;
                continue;
            }
            size_t l = (size_t)(q + 1 - fs);
            if (n == dl || n == '\n' || n == '\r') {
                if (PP_UNLIKELY(l - 2 > maxf))
                    csv_rowerr(r, CSV_E_LARGE, fs + 1 + maxf, nf + 1);
                if (fl & CSV_F_DECODE) {
                    CSV_PUSH(fs, l, fl);
                    r->need_decode = 1;
                } else {
                    CSV_PUSH(fs + 1, l - 2, fl);
                }
                if (n == dl) {
                    p = q + 2;
                    goto field;
                }
                q++;
                goto record_end;
            }
            /* text after the closing quote: kept (lenient) or an error */
            if (strict)
                csv_rowerr(r, CSV_E_AFTERQ, q + 1, nf + 1);
            fl |= CSV_F_DECODE;
            r->need_decode = 1;
            p = q + 1;
            goto unquoted;
        }
        if (q == end) {
            if (!r->eof) {
                r->state = CSV_ST_QUO;
                p = q;
                goto need_more;
            }
            if ((size_t)(end - fs) - 1 > maxf)
                csv_rowerr(r, CSV_E_LARGE, fs + 1 + maxf, nf + 1);
            csv_rowerr(r, CSV_E_UNTERM, fs, nf + 1);
            CSV_PUSH(fs, (size_t)(end - fs), fl | CSV_F_DECODE);
            r->need_decode = 1;
            goto record_end;
        }
        if (*q == dl) {
            /* a delimiter inside quotes */
            p = q + 1;
            continue;
        }
        /* a line break inside quotes */
        if (*q == '\r') {
            if (q + 1 == end && !r->eof) {
                r->state = CSV_ST_QUO;
                p = q;
                goto need_more;
            }
            if (q[1] == '\n' && q + 1 < end)
                q++;
        }
        r->line++;
        p = q + 1;
    }

need_more:
    /* p is where scanning resumes; fs the start of the current field */
    if (!r->discard) {
        /* the field so far: unquoted from fs, quoted from after its quote */
        size_t q1 = (fl & CSV_F_QUOTED) ? 1 : 0;
        if ((size_t)(p - fs) - q1 > maxf) {
            r->nf = nf;
            csv_rowerr(r, CSV_E_LARGE, fs + q1 + maxf, nf + 1);
            r->discard = 1;
        }
    }
    r->scan = (size_t)(p - base);
    r->fstart = (size_t)(fs - base);
    r->fflags = fl;
    r->nf = nf;
    return 0;

record_end:
    /* q is at the CR or LF that ends the record, or at the end of input */
    r->nf = nf;
    r->raw_len = (size_t)(q - (base + r->rec_start));
    if (q == end) {
        r->pos = r->len;
    } else {
        r->line++;
        if (*q == '\r') {
            if (q + 1 < end)
                q += q[1] == '\n' ? 2 : 1;
            else {
                q++;
                r->skip_lf = !r->eof;
            }
        } else {
            q++;
        }
        r->pos = (size_t)(q - base);
    }
    return 1;
#undef CSV_PUSH
#undef CSV_NEXT
}

/* Decode a raw quoted span: drop the opening quote, turn "" into ", drop the
** closing quote, keep everything after it literally (lenient mode). */
static size_t csv_decode(char *dst, const unsigned char *s, size_t n, unsigned char qc)
{
    const unsigned char *const e = s + n;
    size_t o = 0;
    if (n && *s == qc) {
        s++;
        for (;;) {
            const unsigned char *x = memchr(s, qc, (size_t)(e - s));
            if (!x)
                break; /* never closed: the rest as it is */
            memcpy(dst + o, s, (size_t)(x - s));
            o += (size_t)(x - s);
            if (x + 1 < e && x[1] == qc) {
                dst[o++] = (char)qc;
                s = x + 2;
                continue;
            }
            s = x + 1; /* the closing quote */
            break;
        }
    }
    memcpy(dst + o, s, (size_t)(e - s));
    return o + (size_t)(e - s);
}

/* The record is parsed: check it, decode its fields, set the result. */
static int csv_finish(pgpipe_csv *r)
{
    r->in_record = 0;
    if (r->discard || r->ekind == CSV_E_LARGE) {
        /* a record with a too-large field is dropped, not kept */
        r->nf = 0;
        r->raw_ok = 0;
        r->need_decode = 0;
    } else {
        r->raw_ok = 1;
    }
    if (r->ekind == CSV_E_NONE && r->expected > 0 && r->nf != r->expected && r->header_done) {
        if (r->nf > r->expected) {
            const pgpipe_csv_span *x = &r->f[r->expected];
            const unsigned char *at = (const unsigned char *)x->data;
            if (x->quoted == CSV_F_QUOTED)
                at--; /* a plain quoted span starts after its quote */
            csv_rowerr(r, CSV_E_COUNT, at, r->expected + 1);
        } else {
            csv_rowerr(r, CSV_E_COUNT, r->buf + r->rec_start + r->raw_len, r->nf + 1);
        }
    }
    if (r->need_decode) {
        size_t total = 0;
        for (int i = 0; i < r->nf; i++)
            if (r->f[i].quoted & CSV_F_DECODE)
                total += r->f[i].len;
        r->scratch.len = 0;
        if (pp_buf_reserve(&r->scratch, total + 1) != PGPIPE_OK)
            return r->fatal = pp_err_nomem(&r->hdr.err);
        for (int i = 0; i < r->nf; i++) {
            pgpipe_csv_span *x = &r->f[i];
            if (x->quoted & CSV_F_DECODE) {
                char *dst = r->scratch.data + r->scratch.len;
                size_t n = csv_decode(dst, (const unsigned char *)x->data, x->len, r->qc);
                r->scratch.len += n;
                x->data = dst;
                x->len = n;
                x->quoted = CSV_F_QUOTED;
            }
        }
    }
    if (r->ekind != CSV_E_NONE)
        return csv_report(r);
    return PGPIPE_ROW;
}

/* Decode the fields of a record the fast path took that hold "" (a quoted
** field whose inner quotes all come in pairs) into the scratch area. */
static int csv_fast_decode(pgpipe_csv *r)
{
    if (!CSV_FAST)
        return PGPIPE_OK;
    const unsigned char qc = r->qc;
    r->scratch.len = 0;
    if (r->scratch.cap < r->raw_len + 1 &&
        pp_buf_reserve(&r->scratch, r->raw_len + 1) != PGPIPE_OK)
        return r->fatal = pp_err_nomem(&r->hdr.err);
    char *dst = r->scratch.data;
    pgpipe_csv_span *x = r->f, *xe = r->f + r->nf;
    for (; x < xe; x++) {
        if (!(x->quoted & CSV_F_DECODE))
            continue;
        /* between the enclosing quotes */
        const unsigned char *s = (const unsigned char *)x->data + 1;
        const unsigned char *e = (const unsigned char *)x->data + x->len - 1;
        char *o = dst;
        for (;;) {
            const unsigned char *q = memchr(s, qc, (size_t)(e - s));
            if (!q) {
                memcpy(o, s, (size_t)(e - s));
                o += e - s;
                break;
            }
            memcpy(o, s, (size_t)(q - s));
            o += q - s;
            *o++ = (char)qc;
            s = q + 2;
        }
        x->data = dst;
        x->len = (size_t)(o - dst);
        x->quoted = CSV_F_QUOTED;
        dst = o;
    }
    r->scratch.len = (size_t)(dst - r->scratch.data);
    return PGPIPE_OK;
}

/* A column name and its position, to find names given twice. */
typedef struct csv_name {
    const char *s;
    size_t len;
    int idx;
} csv_name;

/* by name: bytes, then length */
static int csv_name_cmp(const void *a, const void *b)
{
    const csv_name *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* by name, equal names by position */
static int csv_name_order(const void *a, const void *b)
{
    int c = csv_name_cmp(a, b);
    return c ? c : ((const csv_name *)a)->idx - ((const csv_name *)b)->idx;
}

/* Where byte at of the header row (the current record) is: its line, byte
** column and input offset, and the 1-based number of the column name it
** belongs to (delimiters outside quotes counted from the record's start). */
static void csv_header_where(const pgpipe_csv *r, const unsigned char *at, long long *line,
                             long long *col, long long *off, int *field)
{
    const unsigned char *p = r->buf + r->rec_start, *ls = p;
    int quoted = 0;
    *line = r->rec_line;
    *field = 1;
    for (; p < at; p++) {
        if (*p == r->qc)
            quoted = !quoted;
        else if (*p == r->dl && !quoted)
            ++*field;
        if (*p == '\n' || (*p == '\r' && p[1] != '\n')) {
            ++*line;
            ls = p + 1;
        }
    }
    *col = (long long)(at - ls) + 1;
    *off = r->boff + (long long)(at - r->buf);
}

/* The first byte of column name i (0-based) in the header row. */
static const unsigned char *csv_header_field_at(const pgpipe_csv *r, int i)
{
    const unsigned char *p = r->buf + r->rec_start, *end = p + r->raw_len;
    int quoted = 0;
    for (; p < end && i > 0; p++) {
        if (*p == r->qc)
            quoted = !quoted;
        else if (*p == r->dl && !quoted)
            i--;
    }
    return p;
}

/* Column names are keys (of the record's JSON object, of a mapping): each
** must be UTF-8 text without NUL, not empty, and named once. The first
** problem fails the header, naming where it is. */
static int csv_check_header(pgpipe_csv *r)
{
    long long line, col, off;
    int field;
    const unsigned char *raw = r->buf + r->rec_start;
    size_t ok = pp_utf8_text_prefix(raw, r->raw_len);
    if (ok < r->raw_len) {
        csv_header_where(r, raw + ok, &line, &col, &off, &field);
        if (raw[ok] == 0)
            return pp_err_at(&r->hdr.err, PGPIPE_ERROR, r->source, line, col, off,
                             "header row: the name of column %d holds a NUL byte", field);
        return pp_err_at(&r->hdr.err, PGPIPE_ERROR, r->source, line, col, off,
                         "header row: the name of column %d is not valid UTF-8 (byte 0x%02X; the file "
                         "must be UTF-8: convert it, e.g. iconv -f LATIN1 -t UTF-8)", field,
                         (unsigned)raw[ok]);
    }
    for (int i = 0; i < r->nf; i++) {
        if (r->f[i].len == 0) {
            csv_header_where(r, csv_header_field_at(r, i), &line, &col, &off, &field);
            return pp_err_at(&r->hdr.err, PGPIPE_ERROR, r->source, line, col, off,
                             "header row: column %d has no name", i + 1);
        }
    }
    /* a name twice: sorted by name, then position, equal names are
    ** neighbours; the one reported is the first repeat in the row */
    csv_name *by = pp_malloc((size_t)(r->nf ? r->nf : 1) * sizeof *by);
    if (!by)
        return pp_err_nomem(&r->hdr.err);
    for (int i = 0; i < r->nf; i++) {
        by[i].s = r->f[i].data;
        by[i].len = r->f[i].len;
        by[i].idx = i;
    }
    qsort(by, (size_t)r->nf, sizeof *by, csv_name_order);
    int first = -1, again = -1;
    for (int k = 1; k < r->nf; k++) {
        /* by[k] the second of its name: the first repeat of by[k - 1] */
        if (csv_name_cmp(&by[k - 1], &by[k]) == 0 &&
            (k == 1 || csv_name_cmp(&by[k - 2], &by[k - 1]) != 0) &&
            (again < 0 || by[k].idx < again)) {
            again = by[k].idx;
            first = by[k - 1].idx;
        }
    }
    pp_free(by);
    if (again < 0)
        return PGPIPE_OK;
    const pgpipe_csv_span *x = &r->f[again];
    csv_header_where(r, csv_header_field_at(r, again), &line, &col, &off, &field);
    return pp_err_at(&r->hdr.err, PGPIPE_ERROR, r->source, line, col, off,
                     "header row: column %d is named \"%.*s\" like column %d: column names must "
                     "differ", again + 1, x->len > 200 ? 200 : (int)x->len, x->data, first + 1);
}

static int csv_take_header(pgpipe_csv *r, int rc)
{
    if (rc != PGPIPE_ROW) {
        char msg[sizeof r->hdr.err.message];
        snprintf(msg, sizeof msg, "%s", r->hdr.err.message);
        pgpipe_error *e = &r->hdr.err;
        pp_err_at(e, PGPIPE_ERROR, r->source, e->line, e->column, e->offset,
                  "header row: %s", msg);
        return r->fatal = PGPIPE_ERROR;
    }
    if (r->check_names && csv_check_header(r) != PGPIPE_OK)
        return r->fatal = PGPIPE_ERROR;
    r->names = pp_calloc((size_t)(r->nf ? r->nf : 1), sizeof *r->names);
    if (!r->names)
        return r->fatal = pp_err_nomem(&r->hdr.err);
    for (int i = 0; i < r->nf; i++) {
        r->names[i] = pp_strndup(r->f[i].data, r->f[i].len);
        if (!r->names[i])
            return r->fatal = pp_err_nomem(&r->hdr.err);
        r->nnames = i + 1;
    }
    r->header_done = 1;
    if (r->expected == 0)
        r->expected = r->nf;
    return PGPIPE_OK;
}

int pgpipe_csv_next(pgpipe_csv *r)
{
    if (!r || r->hdr.magic != PP_HANDLE_MAGIC)
        return PGPIPE_MISUSE;
    if (r->fatal)
        return r->fatal;
    if (CSV_FAST && r->fok && !r->in_record && r->pos == r->fnext && r->fgen == r->gen &&
        r->pos < r->len && r->header_done && !r->skip_lf && r->buf[r->pos] != '\n' &&
        r->buf[r->pos] != '\r') {
        /* the lane of the fast path: the record goes on from where the last
        ** one ended, so csv_begin has nothing to skip; when the fast path
        ** declines, the loop below begins the record as usual */
        size_t p = r->pos;
        r->rec_start = p;
        r->rec_line = r->line;
        r->rec_offset = r->boff + (long long)p;
        int rc = csv_fast_record(r);
        if (rc > 0) {
            r->ekind = CSV_E_NONE;
            r->discard = 0;
            if (PP_UNLIKELY(r->expected > 0 && r->nf != r->expected)) {
                /* a row error: csv_finish below reports it */
                r->in_record = 1;
                goto finish;
            }
            r->raw_ok = 1;
            if (r->need_decode) {
                r->need_decode = 0;
                if (csv_fast_decode(r) != PGPIPE_OK)
                    return r->fatal;
            }
            r->nrec++;
            if (r->hdr.err.code != PGPIPE_OK)
                pgpipe_error_clear(&r->hdr.err);
            return PGPIPE_ROW;
        }
        if (rc < 0)
            return r->fatal = pp_err_nomem(&r->hdr.err);
        r->rec_start = r->pos;
    }
    for (;;) {
        int rc;
        if (!r->in_record) {
            rc = csv_begin(r);
            if (rc == PGPIPE_DONE) {
                r->nf = 0;
                r->raw_ok = 0;
                return PGPIPE_DONE;
            }
            if (rc == PGPIPE_BUSY) {
                if (r->src == CSV_SRC_FEED)
                    return PGPIPE_BUSY;
                if (csv_fill(r) != PGPIPE_OK)
                    return r->fatal;
                continue;
            }
        }
        rc = csv_parse_record(r);
        if (rc == 0) {
            if (r->src == CSV_SRC_FEED)
                return PGPIPE_BUSY;
            if (csv_fill(r) != PGPIPE_OK)
                return r->fatal;
            continue;
        }
        if (rc < 0)
            return r->fatal = pp_err_nomem(&r->hdr.err);
    finish:
        rc = csv_finish(r);
        if (r->fatal)
            return r->fatal;
        if (!r->header_done) {
            if (csv_take_header(r, rc) != PGPIPE_OK)
                return r->fatal;
            continue;
        }
        r->nrec++;
        if (rc == PGPIPE_ROW && r->hdr.err.code != PGPIPE_OK)
            pgpipe_error_clear(&r->hdr.err);
        return rc;
    }
}

/* ---- accessors ------------------------------------------------------------ */

const pgpipe_csv_span *pgpipe_csv_fields(const pgpipe_csv *r, int *count)
{
    if (!r || r->in_record) {
        if (count)
            *count = 0;
        return NULL;
    }
    if (count)
        *count = r->nf;
    return r->f;
}

int pgpipe_csv_field_count(const pgpipe_csv *r)
{
    return r && !r->in_record ? r->nf : 0;
}

int pgpipe_csv_field(const pgpipe_csv *r, int i, const char **data, size_t *len, int *quoted)
{
    if (!r || r->in_record || i < 0 || i >= r->nf) {
        if (data)
            *data = NULL;
        if (len)
            *len = 0;
        if (quoted)
            *quoted = 0;
        return PGPIPE_MISUSE;
    }
    if (data)
        *data = r->f[i].data;
    if (len)
        *len = r->f[i].len;
    if (quoted)
        *quoted = r->f[i].quoted;
    return PGPIPE_OK;
}

int pgpipe_csv_raw_record(const pgpipe_csv *r, const char **data, size_t *len)
{
    if (data)
        *data = NULL;
    if (len)
        *len = 0;
    if (!r || r->in_record)
        return PGPIPE_MISUSE;
    if (!r->raw_ok)
        return PGPIPE_LIMIT;
    if (data)
        *data = (const char *)r->buf + r->rec_start;
    if (len)
        *len = r->raw_len;
    return PGPIPE_OK;
}

long long pgpipe_csv_record_line(const pgpipe_csv *r) { return r ? r->rec_line : 0; }
long long pgpipe_csv_record_offset(const pgpipe_csv *r) { return r ? r->rec_offset : 0; }
long long pgpipe_csv_record_count(const pgpipe_csv *r) { return r ? r->nrec : 0; }
int pgpipe_csv_error_field(const pgpipe_csv *r) { return r ? r->last_efield : 0; }

int pgpipe_csv_header_count(const pgpipe_csv *r) { return r ? r->nnames : 0; }

const char *pgpipe_csv_header_name(const pgpipe_csv *r, int i)
{
    if (!r || i < 0 || i >= r->nnames)
        return NULL;
    return r->names[i];
}

int pgpipe_csv_column_index(const pgpipe_csv *r, const char *name)
{
    if (!r || !name)
        return -1;
    for (int i = 0; i < r->nnames; i++)
        if (strcmp(r->names[i], name) == 0)
            return i;
    return -1;
}

/* ---- the record as a COPY text row ------------------------------------ */

/* The current record as a COPY text row into b (the loader's path). */
static int csv_copy_row_buf(const pgpipe_csv *r, pp_buf *b)
{
    int rc = PGPIPE_OK;
    for (int i = 0; i < r->nf && rc == PGPIPE_OK; i++) {
        const pgpipe_csv_span *x = &r->f[i];
        if (i)
            rc = pp_buf_putc(b, '\t');
        if (rc == PGPIPE_OK)
            rc = pp_copy_field(b, x->len || x->quoted ? x->data : NULL, x->len);
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(b, '\n');
    return rc;
}

int pgpipe_csv_copy_row(const pgpipe_csv *r, pgpipe_copy_buf *out)
{
    if (!r || !out || r->in_record)
        return PGPIPE_MISUSE;
    pp_buf b = pp_buf_of_copy(out);
    int rc = csv_copy_row_buf(r, &b);
    pp_copy_of_buf(out, &b);
    return rc;
}
