/*
** The spool: store-and-forward on the device (format and promises in
** spool.h).
**
** A segment is written by one handle under its lock, with one writev per
** record at the offset the handle tracks; a failed or short write is cut
** off again (ftruncate), so a file never keeps half a record that append
** reported as failed. A new segment is written as seg-X.pps.tmp (header,
** fdatasync) and renamed into place, so a segment file always has a whole
** header; the old one is fdatasync'ed before (sealing). The sequence
** numbers and the spool's id live in the files and nowhere else, so a last
** segment is kept: open seals the last segment it finds with records and
** writes nothing (a full file system must still open, to be drained); the
** first append starts the next segment. A drain that emptied the folder
** starts the next segment at once; should that fail (the file system still
** full), the folder is empty, and the next open starts a new spool id.
**
** Reading (recovery, the drainer, the check) goes through sp_scan: it walks
** the records of a segment and, at a record that is not whole (length past
** the end, CRC mismatch, a sequence that does not grow), looks for where
** whole records resume: right after the damaged one when its length is
** intact, else at the first later offset that holds a valid record with a
** plausible sequence (the CRC makes a false match a 2^-32 event). Bytes
** from which nothing resumes are a torn tail.
*/
#include "pp_spool.h"
#include <dirent.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <sys/uio.h>

#define SP_MAGIC     "PGPSPOL1"
#define SP_VERSION   1u
#define SP_HDR       128
#define SP_REC       24
#define SP_MAX_REC   (64u << 20)
#define SP_RESYNC    1024         /* how far a sequence may jump over damage */
#define SP_ID_MAX    40           /* spool id field: a UUID and NUL */
#define SP_DEV_MAX   52           /* device id field, NUL included */

/* ---- CRC-32C ------------------------------------------------------------- */

/* slicing by 8 (a size build, PGPIPE_SMALL: a byte at a time, one table) */
#define CRC_TABS (PGPIPE_SMALL ? 1 : 8)
static uint32_t crc_tab[CRC_TABS][256];
static atomic_int crc_ready;
static pp_mutex crc_mu = PP_MUTEX_INIT;

static void crc_init(void)
{
    if (atomic_load_explicit(&crc_ready, memory_order_acquire))
        return;
    pp_mutex_lock(&crc_mu);
    if (!atomic_load_explicit(&crc_ready, memory_order_relaxed)) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++)
                c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
            crc_tab[0][i] = c;
        }
        for (int t = 1; t < CRC_TABS; t++)
            for (int i = 0; i < 256; i++)
                crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
        atomic_store_explicit(&crc_ready, 1, memory_order_release);
    }
    pp_mutex_unlock(&crc_mu);
}

static uint32_t crc_soft(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    crc_init();
    crc = ~crc;
#if !PGPIPE_SMALL
    while (len && ((uintptr_t)p & 7)) {
        crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
        len--;
    }
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24);
        crc = crc_tab[7][lo & 0xff] ^ crc_tab[6][(lo >> 8) & 0xff] ^ crc_tab[5][(lo >> 16) & 0xff] ^
              crc_tab[4][lo >> 24] ^ crc_tab[3][p[4]] ^ crc_tab[2][p[5]] ^ crc_tab[1][p[6]] ^
              crc_tab[0][p[7]];
        p += 8;
        len -= 8;
    }
#endif
    while (len--)
        crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

/* x86-64 with SSE4.2: the crc32 instruction computes CRC-32C (the same
** polynomial), 8 bytes at a time. Chosen at run time (the CPU says whether
** it has it); PGPIPE_CRC32C=soft forces the table (tests run both). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SP_CRC_HW 1
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t c = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
        len--;
    }
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = __builtin_ia32_crc32di(c, w);
        p += 8;
        len -= 8;
    }
    while (len--)
        c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

static atomic_int crc_mode; /* 0: not chosen yet, 1: table, 2: instruction */

PGPIPE_PRIVATE int pp_crc32c_use(int mode)
{
    if (mode < 0 || mode > 2)
        return -1;
    if (mode == 0) {
        const char *e = getenv("PGPIPE_CRC32C");
        mode = 1;
#ifdef SP_CRC_HW
        if (!(e && !strcmp(e, "soft")) && __builtin_cpu_supports("sse4.2"))
            mode = 2;
#else
        (void)e;
#endif
    }
#ifndef SP_CRC_HW
    if (mode == 2)
        mode = 1;
#endif
    atomic_store(&crc_mode, mode);
    return mode;
}

PGPIPE_PRIVATE uint32_t pp_crc32c(uint32_t crc, const void *buf, size_t len)
{
    int m = atomic_load_explicit(&crc_mode, memory_order_relaxed);
    if (!m)
        m = pp_crc32c_use(0);
#ifdef SP_CRC_HW
    if (m == 2)
        return crc_hw(crc, buf, len);
#endif
    return crc_soft(crc, buf, len);
}

/* ---- encoding ------------------------------------------------------------ */

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static long long sp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
static long long sp_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct sp_hdr {
    uint64_t first_seq;
    long long created_ms;
    char id[SP_ID_MAX];
    char dev[SP_DEV_MAX];
} sp_hdr;

static void sp_hdr_encode(unsigned char h[SP_HDR], const sp_hdr *x)
{
    memset(h, 0, SP_HDR);
    memcpy(h, SP_MAGIC, 8);
    put32(h + 8, SP_VERSION);
    put32(h + 12, SP_HDR);
    put64(h + 16, x->first_seq);
    put64(h + 24, (uint64_t)x->created_ms);
    memcpy(h + 32, x->id, strnlen(x->id, SP_ID_MAX - 1));
    memcpy(h + 72, x->dev, strnlen(x->dev, SP_DEV_MAX - 1));
    put32(h + 124, pp_crc32c(0, h, 124));
}

static int sp_hdr_decode(const unsigned char h[SP_HDR], sp_hdr *x)
{
    if (memcmp(h, SP_MAGIC, 8) != 0 || get32(h + 8) != SP_VERSION || get32(h + 12) != SP_HDR ||
        get32(h + 124) != pp_crc32c(0, h, 124) || h[32 + SP_ID_MAX - 1] || h[72 + SP_DEV_MAX - 1])
        return -1;
    x->first_seq = get64(h + 16);
    x->created_ms = (long long)get64(h + 24);
    memcpy(x->id, h + 32, SP_ID_MAX);
    memcpy(x->dev, h + 72, SP_DEV_MAX);
    return x->first_seq ? 0 : -1;
}

/* the CRC of a record whose 24-byte header and payload are at p */
static uint32_t sp_rec_crc(const unsigned char *p, size_t len)
{
    return pp_crc32c(pp_crc32c(0, p, 4), p + 8, 16 + len);
}

/* ---- reading a segment ----------------------------------------------------- */

typedef struct sp_reader {
    int fd;
    long long size;
    unsigned char *buf;
    size_t cap;
    long long boff;     /* the file offset of buf[0] */
    size_t blen;
} sp_reader;

typedef struct sp_rec {
    long long off;
    uint32_t len;
    uint64_t seq;
    long long ms;
    const unsigned char *payload;   /* valid until the next read */
} sp_rec;

/* n bytes at file offset off, NULL on a read error; the caller checked that
** they are inside the file */
static const unsigned char *sp_at(sp_reader *r, long long off, size_t n)
{
    if (off >= r->boff && off + (long long)n <= r->boff + (long long)r->blen)
        return r->buf + (off - r->boff);
    size_t want = n > (256u << 10) ? n : (256u << 10);
    if (want > r->cap) {
        unsigned char *nb = pp_realloc(r->buf, want);
        if (!nb)
            return NULL;
        r->buf = nb;
        r->cap = want;
    }
    long long left = r->size - off;
    size_t get = (long long)r->cap < left ? r->cap : (size_t)left;
    size_t got = 0;
    while (got < get) {
        ssize_t k = pread(r->fd, r->buf + got, get - got, (off_t)(off + (long long)got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return NULL;
        got += (size_t)k;
    }
    r->boff = off;
    r->blen = got;
    return got >= n ? r->buf : NULL;
}

/* 1: a whole record with a sequence in (after, upto] starts at off; 0: not;
** -1: read error */
static int sp_rec_at(sp_reader *r, long long off, uint64_t after, uint64_t upto, sp_rec *out)
{
    if (off + SP_REC > r->size)
        return 0;
    const unsigned char *h = sp_at(r, off, SP_REC);
    if (!h)
        return -1;
    uint32_t len = get32(h);
    uint64_t seq = get64(h + 8);
    if (len == 0 || len > SP_MAX_REC || off + SP_REC + (long long)len > r->size || seq <= after ||
        seq > upto)
        return 0;
    h = sp_at(r, off, SP_REC + (size_t)len);
    if (!h)
        return -1;
    if (sp_rec_crc(h, len) != get32(h + 4))
        return 0;
    out->off = off;
    out->len = len;
    out->seq = seq;
    out->ms = (long long)get64(h + 16);
    out->payload = h + SP_REC;
    return 1;
}

typedef struct sp_scan_result {
    long long records;
    uint64_t first_seq, last_seq;   /* last_seq = the header's first - 1 when none */
    long long end;                  /* end of the last whole record */
    long long first_ms;             /* of the first record; 0 = none */
    long long bad_records;          /* damaged records skipped by a resync */
    long long bad_offset;           /* first damaged byte; -1 = none */
    long long bad_bytes;            /* damaged bytes, the torn tail included */
    int torn;                       /* the segment ends in bytes that are no record */
} sp_scan_result;

typedef int (*sp_rec_fn)(void *ud, const sp_rec *rec);

/* Walk the records of the segment open in r (header already read). fn (may
** be NULL) gets each whole record; a non-zero return stops the walk with
** that code. Returns PGPIPE_OK or PGPIPE_IO. */
static int sp_scan(sp_reader *r, uint64_t first_seq, sp_rec_fn fn, void *ud, sp_scan_result *sc)
{
    memset(sc, 0, sizeof *sc);
    sc->first_seq = first_seq;
    sc->last_seq = first_seq - 1;
    sc->bad_offset = -1;
    long long off = SP_HDR;
    sc->end = off;
    while (off < r->size) {
        sp_rec rec;
        /* a gap in the sequence is a record a recovery dropped */
        int k = sp_rec_at(r, off, sc->last_seq, sc->last_seq + SP_RESYNC, &rec);
        if (k < 0)
            return PGPIPE_IO;
        if (k == 0) {
            /* damage at off: where do whole records resume? */
            long long next = -1;
            if (off + SP_REC <= r->size) {
                const unsigned char *h = sp_at(r, off, SP_REC);
                if (!h)
                    return PGPIPE_IO;
                long long nx = off + SP_REC + (long long)get32(h);
                k = nx < r->size ? sp_rec_at(r, nx, sc->last_seq, sc->last_seq + SP_RESYNC, &rec) : 0;
                if (k < 0)
                    return PGPIPE_IO;
                if (k)
                    next = nx;
            }
            for (long long p = off + 1; next < 0 && p + SP_REC <= r->size; p++) {
                k = sp_rec_at(r, p, sc->last_seq, sc->last_seq + SP_RESYNC, &rec);
                if (k < 0)
                    return PGPIPE_IO;
                if (k)
                    next = p;
            }
            if (sc->bad_offset < 0)
                sc->bad_offset = off;
            if (next < 0) {
                sc->torn = 1;
                sc->bad_bytes += r->size - off;
                break;
            }
            sc->bad_records++;
            sc->bad_bytes += next - off;
            off = next;
            /* rec holds the record at next: deliver it below */
        }
        if (fn) {
            int rc = fn(ud, &rec);
            if (rc)
                return rc;
        }
        if (!sc->records)
            sc->first_ms = rec.ms;
        sc->records++;
        sc->last_seq = rec.seq;
        off += SP_REC + (long long)rec.len;
        sc->end = off;
    }
    return PGPIPE_OK;
}

static int sp_read_hdr(int fd, sp_hdr *x)
{
    unsigned char h[SP_HDR];
    ssize_t k = pread(fd, h, SP_HDR, 0);
    return k == SP_HDR ? sp_hdr_decode(h, x) : -1;
}

/* ---- the handle ------------------------------------------------------------ */

typedef struct sp_seg {
    uint64_t first;
    long long bytes;
    long long records;
    long long first_ms;     /* -1: not read yet; 0: none */
} sp_seg;

struct pgpipe_spool {
    pp_handle h;
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t flusher;
    int has_flusher, stop;
#endif
    pgpipe_spool_options o;
    char *dir;
    int lockfd, dirfd, fd;          /* fd: the active (last) segment; -1 when sealed */
    int opened;                     /* pgpipe_spool_open succeeded */
    int sealed;                     /* no active segment: the next append starts one */
    char open_msg[512];             /* why the open failed */
    char id[SP_ID_MAX];
    char dev[SP_DEV_MAX];
    sp_seg *segs;
    size_t nsegs, capsegs;
    uint64_t next_seq;
    long long total;
    int dirty;
    long long last_sync_ms;
    int draining;
    uint64_t draining_seq;          /* the segment the drainer reads now; 0 = none */
    char poison[600];               /* non-empty: the active segment holds bytes past
                                       what the spool counts (a record whose sync
                                       failed could not be cut off); append, sync
                                       and drain refuse until the spool is closed */
    pgpipe_spool_status st;
};

/* The error "spool: WHAT PATH: " and errno's text (one call, not one per place). */
static int sp_syserr(pgpipe_error *e, int code, const char *what, const char *path)
{
    return pp_err(e, code, "spool: %s%s: %s", what, path, strerror(errno));
}

static void sp_lock(pgpipe_spool *s)
{
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_lock(&s->mu);
#else
    (void)s;
#endif
}
static void sp_unlock(pgpipe_spool *s)
{
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_unlock(&s->mu);
#else
    (void)s;
#endif
}

static void sp_path(char *out, size_t n, const char *dir, const char *sub, uint64_t first, const char *ext)
{
    snprintf(out, n, "%s/%sseg-%016llx.pps%s", dir, sub, (unsigned long long)first, ext);
}

static int sp_sync_dir(pgpipe_spool *s)
{
    return fsync(s->dirfd) == 0 || errno == EINVAL ? 0 : -1;
}

static int sp_datasync(pgpipe_spool *s, int fd)
{
    s->st.syncs++;
    return fdatasync(fd);
}

static int sp_push_seg(pgpipe_spool *s, const sp_seg *g)
{
    if (s->nsegs == s->capsegs) {
        size_t nc = s->capsegs ? s->capsegs * 2 : 16;
        sp_seg *n = pp_realloc(s->segs, nc * sizeof *n);
        if (!n)
            return pp_err_nomem(&s->h.err);
        s->segs = n;
        s->capsegs = nc;
    }
    s->segs[s->nsegs++] = *g;
    return PGPIPE_OK;
}

static void sp_remove_seg(pgpipe_spool *s, uint64_t first)
{
    for (size_t i = 0; i < s->nsegs; i++)
        if (s->segs[i].first == first) {
            s->total -= s->segs[i].bytes;
            memmove(s->segs + i, s->segs + i + 1, (s->nsegs - i - 1) * sizeof *s->segs);
            s->nsegs--;
            return;
        }
}

/* The active segment synced and closed (none is active after). */
static int sp_close_active(pgpipe_spool *s)
{
    if (s->fd >= 0) {
        if (sp_datasync(s, s->fd) != 0)
            return sp_syserr(&s->h.err, PGPIPE_IO, "sync of a segment", "");
        close(s->fd);
        s->fd = -1;
        s->dirty = 0;
    }
    return PGPIPE_OK;
}

/* Make the new last segment (first sequence s->next_seq) and make it the
** active one; the old active segment is sealed (synced) first. */
static int sp_new_segment(pgpipe_spool *s)
{
    char tmp[4096], path[4096];
    int rc = sp_close_active(s);
    if (rc != PGPIPE_OK)
        return rc;
    sp_path(tmp, sizeof tmp, s->dir, "", s->next_seq, ".tmp");
    sp_path(path, sizeof path, s->dir, "", s->next_seq, "");
    sp_hdr x;
    memset(&x, 0, sizeof x);
    x.first_seq = s->next_seq;
    x.created_ms = sp_now_ms();
    memcpy(x.id, s->id, sizeof x.id);
    memcpy(x.dev, s->dev, sizeof x.dev);
    unsigned char h[SP_HDR];
    sp_hdr_encode(h, &x);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return sp_syserr(&s->h.err, PGPIPE_IO, "", tmp);
    if (pwrite(fd, h, SP_HDR, 0) != SP_HDR || sp_datasync(s, fd) != 0 || rename(tmp, path) != 0 ||
        sp_sync_dir(s) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return pp_err(&s->h.err, PGPIPE_IO, "spool: new segment %s: %s", path, strerror(e));
    }
    sp_seg g = { s->next_seq, SP_HDR, 0, 0 };
    if (sp_push_seg(s, &g) != PGPIPE_OK) {
        close(fd);
        return PGPIPE_NOMEM;
    }
    s->total += SP_HDR;
    s->fd = fd;
    s->sealed = 0;
    s->last_sync_ms = sp_mono_ms();
    return PGPIPE_OK;
}

/* Seal the active segment (synced and closed) without starting the next:
** the next append starts it. A full file system can so still be opened and
** drained. */
static int sp_seal(pgpipe_spool *s)
{
    int rc = sp_close_active(s);
    if (rc == PGPIPE_OK)
        s->sealed = 1;
    return rc;
}

/* Move a damaged segment to DIR/quarantine (kept for inspection). */
static void sp_quarantine(pgpipe_spool *s, uint64_t first, const char *why)
{
    char from[4096], to[4096], q[4096];
    snprintf(q, sizeof q, "%s/quarantine", s->dir);
    (void)mkdir(q, 0750);
    sp_path(from, sizeof from, s->dir, "", first, "");
    sp_path(to, sizeof to, s->dir, "quarantine/", first, "");
    if (rename(from, to) != 0)
        (void)unlink(from);
    sp_sync_dir(s);
    s->st.quarantined++;
    pp_logf(PGPIPE_LOG_WARN, "spool", "segment %s is damaged (%s): moved to %s", from, why, to);
}

/* Open's check of one segment of DIR (named for first sequence NAME, in
** name order; LAST: the previous segment that passed, when HAVE): its header
** reads, its first sequence is its name's, it carries the spool id of the
** segments before it and comes after them. 1 when it passes (*x is its
** header); open quarantines one that does not, and pgpipe_spool_peek and
** pgpipe_spool_check apply the same rule. */
static int sp_seg_valid(int fd, uint64_t name, int have, const sp_hdr *last, sp_hdr *x)
{
    return sp_read_hdr(fd, x) == 0 && x->first_seq == name &&
           (!have || (strcmp(x->id, last->id) == 0 && x->first_seq > last->first_seq));
}

static int sp_name_seq(const char *name, uint64_t *first)
{
    unsigned long long v = 0;
    if (strncmp(name, "seg-", 4) != 0 || strlen(name) != 4 + 16 + 4 || strcmp(name + 20, ".pps") != 0)
        return 0;
    for (int i = 4; i < 20; i++) {
        int c = name[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return 0;
        v = v * 16 + (unsigned)d;
    }
    *first = v;
    return v != 0;
}

static int sp_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The first sequences of DIR's segments (sub: "" or "quarantine/"), sorted;
** stale .tmp files of a crashed segment creation are removed when clean. */
static int sp_list(const char *dir, const char *sub, int clean, uint64_t **out, size_t *n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    *out = NULL;
    *n = 0;
    DIR *d = opendir(path);
    if (!d)
        return errno == ENOENT && *sub ? PGPIPE_OK : PGPIPE_IO;
    size_t cap = 0;
    struct dirent *e;
    int rc = PGPIPE_OK;
    while ((e = readdir(d)) != NULL) {
        uint64_t f;
        size_t nl = strlen(e->d_name);
        if (clean && nl > 4 && strcmp(e->d_name + nl - 4, ".tmp") == 0 && strncmp(e->d_name, "seg-", 4) == 0) {
            char t[4096 + 512];
            snprintf(t, sizeof t, "%s/%s", path, e->d_name);
            (void)unlink(t);
            continue;
        }
        if (!sp_name_seq(e->d_name, &f))
            continue;
        if (*n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            uint64_t *m = pp_realloc(*out, nc * sizeof *m);
            if (!m) {
                rc = PGPIPE_NOMEM;
                break;
            }
            *out = m;
            cap = nc;
        }
        (*out)[(*n)++] = f;
    }
    closedir(d);
    if (*n)
        qsort(*out, *n, sizeof **out, sp_cmp_u64);
    return rc;
}

typedef struct sp_copy {
    int fd;
    long long off;
    int err;
} sp_copy;

static int sp_copy_rec(void *ud, const sp_rec *r)
{
    sp_copy *c = ud;
    unsigned char h[SP_REC];
    put32(h, r->len);
    put64(h + 8, r->seq);
    put64(h + 16, (uint64_t)r->ms);
    put32(h + 4, pp_crc32c(pp_crc32c(pp_crc32c(0, h, 4), h + 8, 16), r->payload, r->len));
    if (pwrite(c->fd, h, SP_REC, (off_t)c->off) != SP_REC ||
        pwrite(c->fd, r->payload, r->len, (off_t)(c->off + SP_REC)) != (ssize_t)r->len) {
        c->err = 1;
        return PGPIPE_IO;
    }
    long long k = SP_REC + (long long)r->len;
    c->off += k;
    return 0;
}

/* Recover the last segment: keep every whole record, cut off a torn tail,
** rewrite the segment without a damaged record in its middle. */
static int sp_recover_last(pgpipe_spool *s, sp_seg *g, const sp_hdr *x)
{
    char path[4096], tmp[4096];
    sp_path(path, sizeof path, s->dir, "", g->first, "");
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return sp_syserr(&s->h.err, PGPIPE_IO, "", path);
    sp_reader r = { fd, g->bytes, NULL, 0, 0, 0 };
    sp_scan_result sc;
    int rc = sp_scan(&r, x->first_seq, NULL, NULL, &sc);
    if (rc == PGPIPE_OK && sc.bad_records) {
        sp_path(tmp, sizeof tmp, s->dir, "", g->first, ".tmp");
        sp_copy c = { open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640), SP_HDR, 0 };
        unsigned char h[SP_HDR];
        sp_hdr_encode(h, x);
        if (c.fd < 0 || pwrite(c.fd, h, SP_HDR, 0) != SP_HDR)
            rc = PGPIPE_IO;
        sp_scan_result sc2;
        if (rc == PGPIPE_OK)
            rc = sp_scan(&r, x->first_seq, sp_copy_rec, &c, &sc2);
        if (rc == PGPIPE_OK && (fdatasync(c.fd) != 0 || rename(tmp, path) != 0 || sp_sync_dir(s) != 0))
            rc = PGPIPE_IO;
        if (c.fd >= 0)
            close(c.fd);
        if (rc != PGPIPE_OK)
            unlink(tmp);
        g->bytes = c.off;
    } else if (rc == PGPIPE_OK && sc.torn) {
        if (ftruncate(fd, (off_t)sc.end) != 0 || fdatasync(fd) != 0)
            rc = PGPIPE_IO;
        g->bytes = sc.end;
    }
    pp_free(r.buf);
    close(fd);
    if (rc != PGPIPE_OK)
        return sp_syserr(&s->h.err, PGPIPE_IO, "recovery of ", path);
    g->records = sc.records;
    g->first_ms = sc.first_ms;
    s->next_seq = sc.last_seq + 1;
    if (sc.bad_offset >= 0) {
        s->st.recovered_records = sc.bad_records + sc.torn;
        s->st.recovered_bytes = sc.bad_bytes;
        s->st.recovered_offset = sc.bad_offset;
        pp_logf(PGPIPE_LOG_WARN, "spool",
                "%s: recovery dropped %lld damaged record(s), %lld bytes from offset %lld%s; "
                "kept %lld whole record(s)", path, s->st.recovered_records, sc.bad_bytes,
                sc.bad_offset, sc.torn ? " (a torn tail)" : "", sc.records);
    }
    return PGPIPE_OK;
}

static int sp_visible(const char *v, size_t max)
{
    size_t n = strlen(v);
    if (n == 0 || n >= max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] <= ' ' || v[i] > '~')
            return 0;
    return 1;
}

#ifndef PGPIPE_OMIT_THREADS
static void *sp_flusher_main(void *arg)
{
    pgpipe_spool *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long ns = ts.tv_nsec + (long long)s->o.fsync_interval_ms * 1000000;
        ts.tv_sec += (time_t)(ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
        if (s->dirty && s->fd >= 0) {
            (void)sp_datasync(s, s->fd);
            s->dirty = 0;
            s->last_sync_ms = sp_mono_ms();
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}
#endif

void pgpipe_spool_options_init(pgpipe_spool_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->fsync_policy = PGPIPE_SPOOL_FSYNC_INTERVAL;
    o->fsync_interval_ms = 1000;
    o->segment_bytes = 16LL << 20;
    o->full_policy = PGPIPE_SPOOL_FULL_BLOCK;
}

static int sp_open(pgpipe_spool *s, const char *dir, const pgpipe_spool_options *o)
{
    if (!dir || !*dir)
        return pp_err(&s->h.err, PGPIPE_MISUSE, "spool: no folder given");
    if (o)
        s->o = *o;
    else
        pgpipe_spool_options_init(&s->o);
    s->o.device_id = NULL;
    if (s->o.fsync_policy < 0 || s->o.fsync_policy > 2 || s->o.full_policy < 0 || s->o.full_policy > 2 ||
        s->o.segment_bytes < 0 || s->o.max_bytes < 0 || s->o.min_free_bytes < 0 || s->o.fsync_interval_ms < 0)
        return pp_err(&s->h.err, PGPIPE_MISUSE, "spool: an option is out of range");
    if (s->o.fsync_interval_ms == 0)
        s->o.fsync_interval_ms = 1000;
    if (s->o.segment_bytes == 0)
        s->o.segment_bytes = 16LL << 20;
    if (o && o->device_id) {
        if (!sp_visible(o->device_id, SP_DEV_MAX))
            return pp_err(&s->h.err, PGPIPE_MISUSE, "spool: the device id must be 1 to %d bytes of visible ASCII",
                          SP_DEV_MAX - 1);
        snprintf(s->dev, sizeof s->dev, "%s", o->device_id);
    } else {
        char host[256] = "device";
        (void)gethostname(host, sizeof host - 1);
        host[SP_DEV_MAX - 1] = 0;
        for (char *p = host; *p; p++)
            if (*p <= ' ' || *p > '~')
                *p = '_';
        memcpy(s->dev, *host ? host : "device", *host ? strlen(host) + 1 : 7);
    }
    s->dir = pp_strdup(dir);
    if (!s->dir)
        return pp_err_nomem(&s->h.err);
    if (mkdir(dir, 0750) != 0 && errno != EEXIST)
        return sp_syserr(&s->h.err, PGPIPE_IO, "mkdir ", dir);
    s->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->dirfd < 0)
        return sp_syserr(&s->h.err, PGPIPE_IO, "", dir);
    char path[4096];
    snprintf(path, sizeof path, "%s/lock", dir);
    s->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (s->lockfd < 0)
        return pp_err(&s->h.err, PGPIPE_IO, "spool: %s is not writable (creating %s): %s", dir,
                      path, strerror(errno));
    if (flock(s->lockfd, LOCK_EX | LOCK_NB) != 0)
        return pp_err(&s->h.err, errno == EWOULDBLOCK ? PGPIPE_BUSY : PGPIPE_IO,
                      "spool: %s is in use by another process", dir);
    uint64_t *firsts;
    size_t n;
    int rc = sp_list(dir, "", 1, &firsts, &n);
    if (rc != PGPIPE_OK) {
        pp_free(firsts);
        return pp_err(&s->h.err, rc, "spool: cannot list %s", dir);
    }
    sp_hdr last;
    int have = 0;
    for (size_t i = 0; i < n && rc == PGPIPE_OK; i++) {
        sp_path(path, sizeof path, dir, "", firsts[i], "");
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        sp_hdr x;
        if (fd < 0 || fstat(fd, &sb) != 0) {
            rc = sp_syserr(&s->h.err, PGPIPE_IO, "", path);
        } else if (!sp_seg_valid(fd, firsts[i], have, &last, &x)) {
            sp_quarantine(s, firsts[i], "bad header");
        } else {
            sp_seg g = { x.first_seq, (long long)sb.st_size, 0, -1 };
            /* a sealed segment's records: up to the next one's first sequence */
            if (s->nsegs)
                s->segs[s->nsegs - 1].records = (long long)(x.first_seq - s->segs[s->nsegs - 1].first);
            rc = sp_push_seg(s, &g);
            s->total += g.bytes;
            last = x;
            have = 1;
        }
        if (fd >= 0)
            close(fd);
    }
    pp_free(firsts);
    if (rc != PGPIPE_OK)
        return rc;
    if (have) {
        if (o && o->device_id && strcmp(last.dev, s->dev) != 0)
            return pp_err(&s->h.err, PGPIPE_MISUSE, "spool: %s holds records of device \"%s\", not \"%s\"",
                          dir, last.dev, s->dev);
        memcpy(s->dev, last.dev, sizeof s->dev);
        memcpy(s->id, last.id, sizeof s->id);
        sp_seg *g = &s->segs[s->nsegs - 1];
        long long before = g->bytes;
        if ((rc = sp_recover_last(s, g, &last)) != PGPIPE_OK)
            return rc;
        s->total += g->bytes - before;
        if (g->records == 0) {
            /* an empty last segment is appended to */
            sp_path(path, sizeof path, dir, "", g->first, "");
            s->fd = open(path, O_RDWR | O_CLOEXEC);
            if (s->fd < 0)
                return sp_syserr(&s->h.err, PGPIPE_IO, "", path);
            return PGPIPE_OK;
        }
        /* never append to a recovered segment: it is sealed, and the first
        ** append starts the next (not open: a spool that filled its file
        ** system must open, to be drained) */
        sp_path(path, sizeof path, dir, "", g->first, "");
        s->fd = open(path, O_RDWR | O_CLOEXEC);
        if (s->fd < 0)
            return sp_syserr(&s->h.err, PGPIPE_IO, "", path);
        return sp_seal(s);
    }
    char uuid[37];
    if (pp_uuid_v4(uuid) != PGPIPE_OK)
        return pp_err(&s->h.err, PGPIPE_IO, "spool: no random id");
    snprintf(s->id, sizeof s->id, "%s", uuid);
    s->next_seq = 1;
    return sp_new_segment(s);
}

int pgpipe_spool_open(pgpipe_spool **out, const char *dir, const pgpipe_spool_options *o)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_spool *s = pp_handle_new(sizeof *s);
    *out = s;
    if (!s)
        return PGPIPE_NOMEM;
    s->lockfd = s->dirfd = s->fd = -1;
    s->st.recovered_offset = -1;
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
#endif
    int rc = sp_open(s, dir, o);
#ifndef PGPIPE_OMIT_THREADS
    if (rc == PGPIPE_OK && s->o.fsync_policy == PGPIPE_SPOOL_FSYNC_INTERVAL) {
        if (pthread_create(&s->flusher, NULL, sp_flusher_main, s) != 0)
            rc = pp_err(&s->h.err, PGPIPE_ERROR, "spool: cannot start the flusher thread");
        else
            s->has_flusher = 1;
    }
#endif
    if (rc != PGPIPE_OK) {
        snprintf(s->open_msg, sizeof s->open_msg, "%.500s",
                 s->h.err.message[0] ? s->h.err.message : pgpipe_errstr(rc));
        return rc;
    }
    s->opened = 1;
    return PGPIPE_OK;
}

/* room for need more bytes: the size limit and the free-space guard */
static int sp_fits(pgpipe_spool *s, long long need)
{
    if (s->o.max_bytes && s->total + need > s->o.max_bytes)
        return 0;
    if (s->o.min_free_bytes) {
        struct statvfs v;
        if (fstatvfs(s->dirfd, &v) == 0 &&
            (long long)v.f_bavail * (long long)v.f_frsize - need < s->o.min_free_bytes)
            return 0;
    }
    return 1;
}

/* DROP_OLDEST: delete the oldest sealed segment the drainer is not reading. */
static int sp_drop_oldest(pgpipe_spool *s)
{
    for (size_t i = 0; i + 1 < s->nsegs; i++) {
        sp_seg g = s->segs[i];
        if (g.first == s->draining_seq)
            continue;
        char path[4096];
        sp_path(path, sizeof path, s->dir, "", g.first, "");
        if (unlink(path) != 0 && errno != ENOENT)
            return 0;
        sp_sync_dir(s);
        sp_remove_seg(s, g.first);
        s->st.dropped_oldest += g.records;
        s->st.dropped_segments++;
        pp_logf(PGPIPE_LOG_WARN, "spool", "spool full: deleted the oldest segment %s (%lld records, "
                "%lld bytes)", path, g.records, g.bytes);
        return 1;
    }
    return 0;
}

static int sp_append_locked(pgpipe_spool *s, const void *rec, size_t len, long long *seq)
{
    long long need = SP_REC + (long long)len;
    if (s->sealed || s->nsegs == 0) {
        int rc = sp_new_segment(s);
        if (rc != PGPIPE_OK)
            return rc;
    }
    sp_seg *a = &s->segs[s->nsegs - 1];
    if (a->records && a->bytes + need > s->o.segment_bytes) {
        int rc = sp_new_segment(s);
        if (rc != PGPIPE_OK)
            return rc;
        a = &s->segs[s->nsegs - 1];
    }
    if (!sp_fits(s, need)) {
        if (s->o.full_policy == PGPIPE_SPOOL_FULL_DROP_NEWEST) {
            s->st.dropped_newest++;
            return PGPIPE_OK;
        }
        if (s->o.full_policy == PGPIPE_SPOOL_FULL_DROP_OLDEST) {
            for (;;) {
                if (a->records && s->nsegs == 1) {
                    int rc = sp_new_segment(s);
                    if (rc != PGPIPE_OK)
                        return rc;
                    a = &s->segs[s->nsegs - 1];
                }
                if (!sp_drop_oldest(s))
                    break;
                a = &s->segs[s->nsegs - 1];
                if (sp_fits(s, need))
                    break;
            }
        }
        if (!sp_fits(s, need)) {
            s->st.refused++;
            return pp_err(&s->h.err, PGPIPE_BUSY, "spool full: %lld bytes spooled (limit %lld, keep %lld "
                          "free); record refused", s->total, s->o.max_bytes, s->o.min_free_bytes);
        }
    }
    unsigned char h[SP_REC];
    long long ms = sp_now_ms();
    put32(h, (uint32_t)len);
    put64(h + 8, s->next_seq);
    put64(h + 16, (uint64_t)ms);
    put32(h + 4, pp_crc32c(pp_crc32c(pp_crc32c(0, h, 4), h + 8, 16), rec, len));
    /* one writev at the end of the segment (a short one is finished with pwrite) */
    struct iovec iov[2] = { { h, SP_REC }, { (void *)rec, len } };
    size_t done = 0;
    ssize_t k;
    if (lseek(s->fd, (off_t)a->bytes, SEEK_SET) < 0)
        return sp_syserr(&s->h.err, PGPIPE_IO, "seek", "");
    do
        k = writev(s->fd, iov, 2);
    while (k < 0 && errno == EINTR);
    if (k > 0)
        done = (size_t)k;
    while (k >= 0 && done < (size_t)need) {
        if (done < SP_REC)
            k = pwrite(s->fd, h + done, SP_REC - done, (off_t)(a->bytes + (long long)done));
        else
            k = pwrite(s->fd, (const char *)rec + (done - SP_REC), (size_t)need - done,
                       (off_t)(a->bytes + (long long)done));
        if (k < 0 && errno == EINTR)
            k = 0;
        else if (k <= 0)
            k = -1;
        else
            done += (size_t)k;
    }
    if (done < (size_t)need) {
        int e = errno ? errno : ENOSPC;
        (void)ftruncate(s->fd, (off_t)a->bytes);
        return pp_err(&s->h.err, PGPIPE_IO, "spool: write: %s", strerror(e));
    }
    if (s->o.fsync_policy == PGPIPE_SPOOL_FSYNC_RECORD && sp_datasync(s, s->fd) != 0) {
        /* not durable, so not kept: the caller is told it failed and may
        ** append it again, which must not make it twice */
        int e = errno;
        if (ftruncate(s->fd, (off_t)a->bytes) == 0)
            return pp_err(&s->h.err, PGPIPE_IO, "spool: fdatasync: %s; the record is not kept",
                          strerror(e));
        /* the record stays in the file, uncounted. Spoil its header so that
        ** the next open cuts it off as a torn tail, and refuse this handle
        ** from now on: its file does not end where it counts. */
        int te = errno;
        static const unsigned char zero[SP_REC];
        ssize_t z;
        do
            z = pwrite(s->fd, zero, SP_REC, (off_t)a->bytes);
        while (z < 0 && errno == EINTR);
        snprintf(s->poison, sizeof s->poison,
                 "a record's fdatasync failed (%s) and cutting it off failed (ftruncate: %s)%s",
                 strerror(e), strerror(te),
                 z == SP_REC ? "" : "; its header could not be overwritten either, so it may "
                                    "come back at the next open");
        return pp_err(&s->h.err, PGPIPE_IO, "spool: %s: the record is not kept; %s", s->poison,
                      z == SP_REC ? "the next open drops it as a torn tail. Close the spool and "
                                    "open it again"
                                  : "close the spool and open it again");
    }
    pgpipe_error_clear(&s->h.err); /* the handle holds its last call's error */
    a->bytes += need;
    if (!a->records)
        a->first_ms = ms;
    a->records++;
    s->total += need;
    if (seq)
        *seq = (long long)s->next_seq;
    s->next_seq++;
    s->st.appended++;
    if (s->o.fsync_policy == PGPIPE_SPOOL_FSYNC_RECORD) {
        s->last_sync_ms = sp_mono_ms();
    } else if (s->o.fsync_policy == PGPIPE_SPOOL_FSYNC_INTERVAL) {
        s->dirty = 1;
#ifdef PGPIPE_OMIT_THREADS
        if (sp_mono_ms() - s->last_sync_ms >= s->o.fsync_interval_ms) {
            (void)sp_datasync(s, s->fd);
            s->dirty = 0;
            s->last_sync_ms = sp_mono_ms();
        }
#endif
    }
    return PGPIPE_OK;
}

/* A spool whose open failed refuses every call but close and the error calls. */
static int sp_refuse_unopened(pgpipe_spool *s)
{
    return pp_err(&s->h.err, PGPIPE_MISUSE, "spool: the spool did not open: %s", s->open_msg);
}

/* A poisoned spool (see poison) refuses append, sync and drain. Locked. */
static int sp_refuse_poisoned(pgpipe_spool *s)
{
    return pp_err(&s->h.err, PGPIPE_IO, "spool: unusable since an earlier failure: %s; close "
                  "the spool and open it again", s->poison);
}

int pgpipe_spool_append(pgpipe_spool *s, const void *rec, size_t len, long long *seq)
{
    if (!s)
        return PGPIPE_MISUSE;
    if (!s->opened)
        return sp_refuse_unopened(s);
    if (seq)
        *seq = 0;
    if (!rec || len == 0 || len > SP_MAX_REC)
        return pp_err(&s->h.err, PGPIPE_MISUSE, "spool: a record is 1 byte to 64 MiB");
    sp_lock(s);
    int rc = s->poison[0] ? sp_refuse_poisoned(s) : sp_append_locked(s, rec, len, seq);
    sp_unlock(s);
    return rc;
}

int pgpipe_spool_sync(pgpipe_spool *s)
{
    if (!s)
        return PGPIPE_MISUSE;
    if (!s->opened)
        return sp_refuse_unopened(s);
    sp_lock(s);
    if (s->poison[0]) {
        int prc = sp_refuse_poisoned(s);
        sp_unlock(s);
        return prc;
    }
    int rc = s->fd < 0 || sp_datasync(s, s->fd) == 0
                 ? PGPIPE_OK
                 : sp_syserr(&s->h.err, PGPIPE_IO, "fdatasync", "");
    if (rc == PGPIPE_OK)
        pgpipe_error_clear(&s->h.err);
    s->dirty = 0;
    s->last_sync_ms = sp_mono_ms();
    sp_unlock(s);
    return rc;
}

/* the append time of a segment's first record (0: none) */
static long long sp_first_ms(pgpipe_spool *s, sp_seg *g)
{
    if (g->first_ms >= 0)
        return g->first_ms;
    char path[4096];
    unsigned char h[SP_REC];
    sp_path(path, sizeof path, s->dir, "", g->first, "");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    g->first_ms = 0;
    if (fd >= 0) {
        if (pread(fd, h, SP_REC, SP_HDR) == SP_REC)
            g->first_ms = (long long)get64(h + 16);
        close(fd);
    }
    return g->first_ms;
}

int pgpipe_spool_stats(pgpipe_spool *s, pgpipe_spool_status *out)
{
    if (!s || !out)
        return PGPIPE_MISUSE;
    if (!s->opened)
        return sp_refuse_unopened(s);
    sp_lock(s);
    pgpipe_error_clear(&s->h.err);
    *out = s->st;
    out->segments = (long long)s->nsegs;
    out->bytes = s->total;
    out->records = 0;
    out->oldest_ms = 0;
    for (size_t i = 0; i < s->nsegs; i++) {
        out->records += s->segs[i].records;
        if (!out->oldest_ms && s->segs[i].records)
            out->oldest_ms = sp_first_ms(s, &s->segs[i]);
    }
    out->next_seq = (long long)s->next_seq;
    out->age_seconds = out->oldest_ms ? (double)(sp_now_ms() - out->oldest_ms) / 1000.0 : 0;
    if (out->age_seconds < 0)
        out->age_seconds = 0;
    sp_unlock(s);
    return PGPIPE_OK;
}

/* ---- the drainer ------------------------------------------------------------ */

typedef struct sp_feed {
    pgpipe_loader *l;
    uint64_t after;     /* records up to this sequence are at staging already */
    long long skipped;  /* ... and so not fed */
    long long fed;
    char buf[64 << 10];
    size_t n;
    int rc;
} sp_feed;

static int sp_feed_flush(sp_feed *f)
{
    if (f->n && f->rc == PGPIPE_OK)
        f->rc = pgpipe_loader_feed(f->l, f->buf, f->n);
    f->n = 0;
    return f->rc;
}

/* one record as one NDJSON line: a JSON value's line breaks can only be
** blanks between its tokens */
static int sp_feed_rec(void *ud, const sp_rec *r)
{
    sp_feed *f = ud;
    if (r->seq <= f->after) {
        f->skipped++;
        return 0;
    }
    f->fed++;
    for (uint32_t i = 0; i <= r->len; i++) {
        if (f->n == sizeof f->buf && sp_feed_flush(f) != PGPIPE_OK)
            return f->rc;
        char c = i < r->len ? (char)r->payload[i] : '\n';
        if (i < r->len && (c == '\n' || c == '\r'))
            c = ' ';
        f->buf[f->n++] = c;
    }
    return 0;
}

/* The device's position at staging: the highest sequence of (device, spool
** id) committed there (pgpipe.device_positions, V0034; by this drainer or by
** the HTTP source, Pgpipe-Device / Pgpipe-Seq). 0 when none, or when the
** table is missing (a schema not installed: the load key alone then). */
static uint64_t sp_position(PGconn *conn, const sp_hdr *x)
{
    if (!conn)
        return 0;
    const char *v[2] = { x->dev, x->id };
    PGresult *r = NULL;
    if (pp_exec(conn, "SELECT last_seq FROM pgpipe.device_positions WHERE device = $1 AND spool = $2",
                2, v, &r, NULL, "spool") != PGPIPE_OK)
        return 0;
    uint64_t seq = PQntuples(r) == 1 ? (uint64_t)atoll(PQgetvalue(r, 0, 0)) : 0;
    PQclear(r);
    return seq;
}

/* Load one sealed segment (already checked whole) and delete it. The
** records the device's position says are at staging are not fed; the load
** key names the first record fed, so a drain run again after a crash feeds
** the same records under the same key and the loader skips its committed
** batches. Once loaded, the position moves to the segment's last record. */
static int sp_drain_one(pgpipe_spool *s, int fd, long long size, const sp_hdr *x,
                        const pgpipe_loader_options *lo, int install, pgpipe_spool_drain_result *res)
{
    char key[256], src[128];
    pgpipe_loader_options o = *lo;
    snprintf(src, sizeof src, "spool:%s", x->dev);
    o.format = PGPIPE_FORMAT_NDJSON;
    if (!o.source_name)
        o.source_name = src;
    o.install_schema = install;
    o.connections = 1;   /* in order: one lane commits the batches one after another */
    sp_feed *f = pp_calloc(1, sizeof *f);
    if (!f)
        return pp_err_nomem(&s->h.err);
    int rc = pgpipe_loader_open(&f->l, &o);
    sp_scan_result sc;
    memset(&sc, 0, sizeof sc);
    if (rc == PGPIPE_OK) {
        PGconn *conn = pgpipe_loader_conn(f->l);
        uint64_t pos = sp_position(conn, x);
        f->after = pos;
        uint64_t from = pos >= x->first_seq ? pos + 1 : x->first_seq;
        snprintf(key, sizeof key, "pgpipe-spool/%s/%s/%016llx", x->dev, x->id, (unsigned long long)from);
        o.load_key = key;
        /* the key is the loader's: a new open with it (same connection rules) */
        pgpipe_loader_close(f->l);
        f->l = NULL;
        o.install_schema = 0;
        rc = pgpipe_loader_open(&f->l, &o);
    }
    if (rc == PGPIPE_OK) {
        sp_reader r = { fd, size, NULL, 0, 0, 0 };
        rc = sp_scan(&r, x->first_seq, sp_feed_rec, f, &sc);
        pp_free(r.buf);
        if (rc == PGPIPE_OK)
            rc = sp_feed_flush(f);
        if (rc == PGPIPE_OK && !f->fed) {
            /* every record is at staging already: no load */
            res->records += sc.records;
            res->skipped += f->skipped;
        } else if (rc == PGPIPE_OK && (rc = pgpipe_loader_finish(f->l)) == PGPIPE_OK) {
            pgpipe_load_summary sum;
            pgpipe_loader_summary(f->l, &sum);
            res->records += sc.records;
            res->loaded += sum.rows_loaded;
            res->dead += sum.rows_dead;
            res->skipped += sum.rows_skipped + f->skipped;
        }
    }
    if (rc == PGPIPE_OK && sc.records && sc.last_seq > f->after) {
        /* after the load: a crash before this leaves the load key to skip */
        char seq[24];
        snprintf(seq, sizeof seq, "%llu", (unsigned long long)sc.last_seq);
        const char *v[3] = { x->dev, x->id, seq };
        PGconn *conn = pgpipe_loader_conn(f->l);
        if (conn &&
            pp_exec(conn, "INSERT INTO pgpipe.device_positions (device, spool, last_seq) VALUES "
                          "($1, $2, $3::bigint) ON CONFLICT (device, spool) DO UPDATE SET last_seq = "
                          "greatest(pgpipe.device_positions.last_seq, EXCLUDED.last_seq), "
                          "updated_at = now()", 3, v, NULL, NULL, "spool") != PGPIPE_OK)
            pp_logf(PGPIPE_LOG_WARN, "spool", "the position of device %s could not be recorded "
                    "(pgpipe.device_positions): the load key keeps the drain exactly once", x->dev);
    }
    if (rc != PGPIPE_OK) {
        if (f->l && pgpipe_errcode(f->l) != PGPIPE_OK)
            s->h.err = *pgpipe_errinfo(f->l);
        else
            pp_err(&s->h.err, rc, "spool: drain of segment %016llx failed", (unsigned long long)x->first_seq);
    }
    pgpipe_loader_close(f->l);
    pp_free(f);
    return rc;
}

/* drain_to: one segment's records to the caller's function, then the end
** mark (seq 0) that says the segment is done */
typedef struct sp_to {
    pgpipe_spool_record_fn fn;
    void *ud;
} sp_to;

static int sp_to_rec(void *ud, const sp_rec *r)
{
    sp_to *t = ud;
    return t->fn(t->ud, (long long)r->seq, r->payload, r->len);
}

static int sp_drain_fn(pgpipe_spool *s, int fd, long long size, const sp_hdr *x, pgpipe_spool_record_fn fn,
                       void *ud, pgpipe_spool_drain_result *res)
{
    sp_to t = { fn, ud };
    sp_reader r = { fd, size, NULL, 0, 0, 0 };
    sp_scan_result sc;
    int rc = sp_scan(&r, x->first_seq, sp_to_rec, &t, &sc);
    pp_free(r.buf);
    if (rc == PGPIPE_OK)
        rc = fn(ud, 0, NULL, 0);
    if (rc == PGPIPE_OK) {
        res->records += sc.records;
        res->loaded += sc.records;
    } else if (s->h.err.code == PGPIPE_OK) {
        pp_err(&s->h.err, rc, "spool: drain of segment %016llx stopped by the receiver",
               (unsigned long long)x->first_seq);
    }
    return rc;
}

static int sp_drain(pgpipe_spool *s, const struct pgpipe_loader_options *lo, pgpipe_spool_record_fn fn,
                    void *ud, pgpipe_spool_drain_result *res)
{
    pgpipe_spool_drain_result dummy;
    if (!res)
        res = &dummy;
    memset(res, 0, sizeof *res);
    if (!s || (!lo && !fn))
        return s ? pp_err(&s->h.err, PGPIPE_MISUSE, "spool: drain needs loader options") : PGPIPE_MISUSE;
    if (!s->opened)
        return sp_refuse_unopened(s);
    pgpipe_error_clear(&s->h.err);
    sp_lock(s);
    if (s->poison[0]) {
        int prc = sp_refuse_poisoned(s);
        sp_unlock(s);
        return prc;
    }
    if (s->draining) {
        sp_unlock(s);
        return pp_err(&s->h.err, PGPIPE_BUSY, "spool: a drain is running");
    }
    int rc = PGPIPE_OK;
    /* the active segment is sealed (not followed by a new one: the file
    ** system may be full), so every segment can be drained */
    if (!s->sealed && s->nsegs && s->segs[s->nsegs - 1].records)
        rc = sp_seal(s);
    size_t n = s->sealed ? s->nsegs : s->nsegs ? s->nsegs - 1 : 0;
    uint64_t *todo = pp_malloc((n ? n : 1) * sizeof *todo);
    if (!todo)
        rc = pp_err_nomem(&s->h.err);
    for (size_t i = 0; rc == PGPIPE_OK && i < n; i++)
        todo[i] = s->segs[i].first;
    if (rc == PGPIPE_OK)
        s->draining = 1;
    sp_unlock(s);
    if (rc != PGPIPE_OK) {
        pp_free(todo);
        return rc;
    }
    int install = lo ? lo->install_schema : 0;
    for (size_t i = 0; rc == PGPIPE_OK && i < n; i++) {
        char path[4096];
        sp_path(path, sizeof path, s->dir, "", todo[i], "");
        sp_lock(s);
        s->draining_seq = todo[i];
        sp_unlock(s);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;   /* deleted by DROP_OLDEST meanwhile */
        struct stat sb;
        sp_hdr x;
        sp_scan_result sc;
        const char *bad = NULL;
        if (fstat(fd, &sb) != 0 || sp_read_hdr(fd, &x) != 0 || x.first_seq != todo[i]) {
            bad = "bad header";
        } else {
            sp_reader r = { fd, (long long)sb.st_size, NULL, 0, 0, 0 };
            rc = sp_scan(&r, x.first_seq, NULL, NULL, &sc);
            pp_free(r.buf);
            if (rc != PGPIPE_OK)
                rc = sp_syserr(&s->h.err, PGPIPE_IO, "reading ", path);
            else if (sc.bad_offset >= 0)
                bad = "a record's CRC does not match";
        }
        if (rc == PGPIPE_OK && bad) {
            sp_lock(s);
            sp_quarantine(s, todo[i], bad);
            sp_remove_seg(s, todo[i]);
            sp_unlock(s);
            res->quarantined++;
        } else if (rc == PGPIPE_OK) {
            if (lo)
                rc = sp_drain_one(s, fd, (long long)sb.st_size, &x, lo, install, res);
            else
                rc = sp_drain_fn(s, fd, (long long)sb.st_size, &x, fn, ud, res);
            install = 0;
            if (rc == PGPIPE_OK) {
                sp_lock(s);
                long long recs = 0;
                for (size_t k = 0; k < s->nsegs; k++)
                    if (s->segs[k].first == todo[i])
                        recs = s->segs[k].records;
                if (unlink(path) != 0 && errno != ENOENT)
                    rc = sp_syserr(&s->h.err, PGPIPE_IO, "unlink ", path);
                sp_sync_dir(s);
                sp_remove_seg(s, todo[i]);
                s->st.drained += recs;
                sp_unlock(s);
                res->segments++;
            }
        }
        close(fd);
    }
    pp_free(todo);
    sp_lock(s);
    s->draining = 0;
    s->draining_seq = 0;
    if (s->sealed && s->nsegs == 0) {
        /* all drained: start the next segment now when there is room (else
        ** the next append does); its failure is not the drain's */
        pgpipe_error keep = s->h.err;
        (void)sp_new_segment(s);
        s->h.err = keep;
    }
    sp_unlock(s);
    return rc;
}

int pgpipe_spool_drain(pgpipe_spool *s, const struct pgpipe_loader_options *lo,
                       pgpipe_spool_drain_result *res)
{
    if (s && s->opened && !lo)
        return pp_err(&s->h.err, PGPIPE_MISUSE, "spool: drain needs loader options");
    return sp_drain(s, lo, NULL, NULL, res);
}

int pgpipe_spool_drain_to(pgpipe_spool *s, pgpipe_spool_record_fn fn, void *ud,
                          pgpipe_spool_drain_result *res)
{
    if (s && s->opened && !fn)
        return pp_err(&s->h.err, PGPIPE_MISUSE, "spool: drain_to needs a function");
    return sp_drain(s, NULL, fn, ud, res);
}

const char *pgpipe_spool_device(const pgpipe_spool *s)
{
    return s ? s->dev : NULL;
}

const char *pgpipe_spool_uuid(const pgpipe_spool *s)
{
    return s ? s->id : NULL;
}

void pgpipe_spool_close(pgpipe_spool *s)
{
    if (!s)
        return;
#ifndef PGPIPE_OMIT_THREADS
    if (s->has_flusher) {
        pthread_mutex_lock(&s->mu);
        s->stop = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->flusher, NULL);
    }
#endif
    if (s->fd >= 0) {
        if (s->o.fsync_policy != PGPIPE_SPOOL_FSYNC_NEVER && s->dirty)
            (void)fdatasync(s->fd);
        close(s->fd);
    }
    if (s->lockfd >= 0)
        close(s->lockfd);
    if (s->dirfd >= 0)
        close(s->dirfd);
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
#endif
    pp_free(s->segs);
    pp_free(s->dir);
    s->h.magic = 0;
    pp_free(s);
}

/* ---- the offline check --------------------------------------------------- */

static int sp_check_dir(const char *dir, const char *sub, pgpipe_spool_check_fn fn, void *ud,
                        pgpipe_error *err, int *damaged)
{
    uint64_t *firsts;
    size_t n;
    int rc = sp_list(dir, sub, 0, &firsts, &n);
    if (rc != PGPIPE_OK) {
        pp_free(firsts);
        return sp_syserr(err, rc, "cannot read ", dir);
    }
    sp_hdr last;
    int have = 0;
    for (size_t i = 0; i < n && rc == PGPIPE_OK; i++) {
        char path[4096];
        sp_path(path, sizeof path, dir, sub, firsts[i], "");
        pgpipe_spool_segment_info in;
        memset(&in, 0, sizeof in);
        in.path = path;
        in.quarantined = *sub != 0;
        in.bad_offset = -1;
        in.last_seq = -1;
        in.device_id = "";
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        sp_hdr x;
        if (fd < 0 || fstat(fd, &sb) != 0) {
            rc = sp_syserr(err, PGPIPE_IO, "", path);
        } else {
            in.bytes = (long long)sb.st_size;
            /* outside quarantine, open's rule: a segment open would
            ** quarantine (bad header, a name that is not its first
            ** sequence, another spool's id) is damaged whole */
            int ok = *sub ? sp_read_hdr(fd, &x) == 0 : sp_seg_valid(fd, firsts[i], have, &last, &x);
            if (ok && !*sub) {
                last = x;
                have = 1;
            }
            if (ok) {
                sp_reader r = { fd, (long long)sb.st_size, NULL, 0, 0, 0 };
                sp_scan_result sc;
                rc = sp_scan(&r, x.first_seq, NULL, NULL, &sc);
                pp_free(r.buf);
                if (rc != PGPIPE_OK)
                    rc = sp_syserr(err, rc, "reading ", path);
                in.header_ok = 1;
                in.device_id = x.dev;
                in.first_seq = (long long)x.first_seq;
                in.last_seq = (long long)sc.last_seq;
                in.records = sc.records;
                in.bad_records = sc.bad_records + sc.torn;
                in.bad_offset = sc.bad_offset;
                in.bad_bytes = sc.bad_bytes;
            } else {
                in.bad_offset = 0;
                in.bad_bytes = in.bytes;
            }
            if (rc == PGPIPE_OK) {
                if (!*sub && in.bad_offset >= 0)
                    *damaged = 1;
                if (fn)
                    fn(ud, &in);
            }
        }
        if (fd >= 0)
            close(fd);
    }
    pp_free(firsts);
    return rc;
}

int pgpipe_spool_check(const char *dir, pgpipe_spool_check_fn fn, void *ud, pgpipe_error *err)
{
    if (!dir)
        return pp_err(err, PGPIPE_MISUSE, "spool: no folder given");
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return pp_err(err, PGPIPE_IO, "spool: %s is not a folder", dir);
    int damaged = 0;
    int rc = sp_check_dir(dir, "", fn, ud, err, &damaged);
    if (rc == PGPIPE_OK)
        rc = sp_check_dir(dir, "quarantine/", fn, ud, err, &damaged);
    if (rc == PGPIPE_OK && damaged)
        return pp_err(err, PGPIPE_PARSE, "spool: %s has damaged segments", dir);
    return rc;
}

int pgpipe_spool_peek(const char *dir, pgpipe_spool_status *out, pgpipe_error *err)
{
    if (!dir || !out)
        return pp_err(err, PGPIPE_MISUSE, "spool: no folder given");
    memset(out, 0, sizeof *out);
    out->recovered_offset = -1;
    uint64_t *firsts;
    size_t n;
    int rc = sp_list(dir, "", 0, &firsts, &n);
    if (rc != PGPIPE_OK) {
        pp_free(firsts);
        return sp_syserr(err, rc, "cannot read ", dir);
    }
    /* the segments open keeps (open's rule, sp_seg_valid); the others
    ** open would quarantine: counted in out->quarantined, not in records */
    size_t m = 0;
    sp_hdr last;
    int have = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        sp_path(path, sizeof path, dir, "", firsts[i], "");
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        sp_hdr x;
        if (fd < 0)
            continue;   /* drained or dropped meanwhile */
        if (sp_seg_valid(fd, firsts[i], have, &last, &x)) {
            firsts[m++] = firsts[i];
            last = x;
            have = 1;
        } else {
            out->quarantined++;
        }
        close(fd);
    }
    n = m;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        sp_path(path, sizeof path, dir, "", firsts[i], "");
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0) {
            if (fd >= 0)
                close(fd);
            continue;   /* drained or dropped meanwhile */
        }
        out->segments++;
        out->bytes += (long long)sb.st_size;
        if (i + 1 < n) {
            out->records += (long long)(firsts[i + 1] - firsts[i]);
            unsigned char h[SP_REC];
            if (!out->oldest_ms && firsts[i + 1] > firsts[i] && pread(fd, h, SP_REC, SP_HDR) == SP_REC)
                out->oldest_ms = (long long)get64(h + 16);
        } else {
            sp_hdr x;
            out->next_seq = (long long)firsts[i];
            if (sp_read_hdr(fd, &x) == 0) {
                sp_reader r = { fd, (long long)sb.st_size, NULL, 0, 0, 0 };
                sp_scan_result sc;
                if (sp_scan(&r, x.first_seq, NULL, NULL, &sc) == PGPIPE_OK) {
                    out->records += sc.records;
                    out->next_seq = (long long)sc.last_seq + 1;
                    if (!out->oldest_ms)
                        out->oldest_ms = sc.first_ms;
                }
                pp_free(r.buf);
            }
        }
        close(fd);
    }
    pp_free(firsts);
    if (out->oldest_ms) {
        out->age_seconds = (double)(sp_now_ms() - out->oldest_ms) / 1000.0;
        if (out->age_seconds < 0)
            out->age_seconds = 0;
    }
    return PGPIPE_OK;
}
