/* ==== Spool: store-and-forward ==== */

/* A local, crash-safe queue of records for when the database is away (a
** device whose network fails first). Records are appended to segment files
** in a folder; pgpipe_spool_drain sends them to staging through the loader
** when the database is back, in order and each exactly once. Handle:
** pgpipe_spool (one per folder: the open takes an exclusive lock on
** DIR/lock, so a second process gets PGPIPE_BUSY).
**
**     pgpipe_spool *s;
**     pgpipe_spool_options so;
**     pgpipe_spool_options_init(&so);
**     so.device_id = "pump-17";
**     if (pgpipe_spool_open(&s, "/var/spool/app", &so) != PGPIPE_OK) ...
**     pgpipe_spool_append(s, "{\"t\":1}", 7, NULL);   (database down)
**     ...
**     pgpipe_loader_options lo;                        (database back)
**     pgpipe_loader_options_init(&lo);
**     lo.conninfo = "host=db dbname=prod";
**     pgpipe_spool_drain(s, &lo, &result);
**     pgpipe_spool_close(s);
**
** On disk: DIR/seg-<first sequence, 16 hex digits>.pps. A segment starts
** with a 128-byte header (magic "PGPSPOL1", version, first sequence,
** creation time, the spool's id, the device id, the header's CRC-32C), then
** records: payload length (4 bytes), CRC-32C (4), sequence (8), append time
** in ms since the epoch (8), payload; the CRC covers the length, sequence,
** time and payload. Integers are little-endian. Every record carries the
** device id (its segment's) and a sequence number that grows by one per
** record for the life of the spool folder. The last segment is the one
** appended to; the others are sealed (fsync'ed, never written again). Open
** writes nothing when the folder has records (so a spool that filled its
** file system opens, to be drained): it seals the last segment, and the
** first append starts the next.
**
** Durability, per fsync policy (every policy writes each record into the
** file with one write() before append returns, so none loses an appended
** record when the PROCESS dies, kill -9 included):
**   PGPIPE_SPOOL_FSYNC_RECORD    append returns 0 only after fdatasync: a
**                                record whose append returned 0 survives a
**                                crash of the machine (power loss), as far
**                                as the storage honours a flush.
**   PGPIPE_SPOOL_FSYNC_INTERVAL  a flusher thread fdatasyncs every
**                                fsync_interval_ms when something was
**                                written: a machine crash loses at most the
**                                records appended in the last interval
**                                (without threads: synced at the next append,
**                                pgpipe_spool_sync or close that finds the
**                                interval passed).
**   PGPIPE_SPOOL_FSYNC_NEVER     the kernel writes back when it likes: a
**                                machine crash may lose any record not yet
**                                in a sealed segment (sealing always syncs).
** A crash that tears the last record (a half-written tail) loses that
** record only: the next open keeps every whole record, truncates the torn
** tail and reports it (pgpipe_spool_stats: recovered_*; logged as a
** warning). A record damaged in the middle of the last segment is dropped
** alone when the records after it are whole (the segment is rewritten
** without it). A sealed segment found damaged (bad header, a record whose
** CRC fails) is quarantined: moved to DIR/quarantine/, counted and logged,
** and the rest drains.
**
** Bounded disk: max_bytes (all segment files) and min_free_bytes (free
** space left on the file system, statvfs) are checked at every append
** against the files as they are (computed from the files at open, so a
** restart keeps the limit). When a record does not fit, full_policy says
** what happens: BLOCK refuses it (PGPIPE_BUSY: the producer waits and tries
** again), DROP_NEWEST drops the new record (append returns PGPIPE_OK with
** *seq = 0), DROP_OLDEST deletes the oldest sealed segments until it fits
** (a logged loss). Each is counted in the stats.
**
** Memory: the handle keeps one small entry per segment; open reads the
** headers of all segments and scans only the last one; the drainer streams
** one segment at a time. Neither depends on how much the spool holds.
**
** Thread safety: a spool may be used by several threads at once (append,
** stats and drain lock it; the drainer reads a sealed segment without the
** lock, so appends go on while it drains). */

typedef struct pgpipe_spool pgpipe_spool;   /* pgpipe_spool_open / _close */
struct pgpipe_loader_options;               /* the loader's options (load) */

#define PGPIPE_SPOOL_FSYNC_RECORD   0
#define PGPIPE_SPOOL_FSYNC_INTERVAL 1
#define PGPIPE_SPOOL_FSYNC_NEVER    2

#define PGPIPE_SPOOL_FULL_BLOCK       0
#define PGPIPE_SPOOL_FULL_DROP_OLDEST 1
#define PGPIPE_SPOOL_FULL_DROP_NEWEST 2

typedef struct pgpipe_spool_options {
    const char *device_id;      /* at most 51 bytes of visible ASCII; default the
                                   host name. Must match the folder's segments. */
    int fsync_policy;           /* PGPIPE_SPOOL_FSYNC_*; INTERVAL */
    int fsync_interval_ms;      /* 1000 */
    long long segment_bytes;    /* a segment is sealed past this size; 16 MiB */
    long long max_bytes;        /* all segments together; 0 = no limit */
    long long min_free_bytes;   /* keep this much free on the file system; 0 = no guard */
    int full_policy;            /* PGPIPE_SPOOL_FULL_*; BLOCK */
} pgpipe_spool_options;

typedef struct pgpipe_spool_status {
    long long segments;         /* segment files (the active one included) */
    long long bytes;            /* their total size */
    long long records;          /* records in them (not yet drained) */
    long long oldest_ms;        /* append time of the oldest record; 0 = none */
    double age_seconds;         /* now - oldest_ms; 0 when empty */
    long long next_seq;         /* the sequence the next record gets */
    long long appended;         /* by this handle */
    long long refused;          /* BLOCK: appends refused (full or low space) */
    long long dropped_newest;   /* DROP_NEWEST: records dropped */
    long long dropped_oldest;   /* DROP_OLDEST: records deleted with their segments */
    long long dropped_segments; /* DROP_OLDEST: segments deleted */
    long long quarantined;      /* segments moved to DIR/quarantine (this handle) */
    long long syncs;            /* fdatasync calls on segments */
    long long drained;          /* records sent to staging by this handle */
    /* what the open's recovery dropped from the last segment */
    long long recovered_records;/* damaged records dropped */
    long long recovered_bytes;  /* bytes dropped */
    long long recovered_offset; /* offset of the first byte dropped; -1 = none */
} pgpipe_spool_status;

void pgpipe_spool_options_init(pgpipe_spool_options *o);
/* Open (creating DIR when missing) and recover the spool: see above. Errors:
** PGPIPE_BUSY (another process has it open), PGPIPE_IO, PGPIPE_MISUSE (bad
** option, or a device id other than the segments'). */
int pgpipe_spool_open(pgpipe_spool **out, const char *dir, const pgpipe_spool_options *o);
/* Append one record (1 byte to 64 MiB; for the drainer, one JSON value:
** line breaks in it are sent as blanks). *seq (may be NULL) receives its
** sequence. PGPIPE_BUSY: refused by the full policy; PGPIPE_IO: the write
** failed (nothing of the record stays in the file). */
int pgpipe_spool_append(pgpipe_spool *s, const void *rec, size_t len, long long *seq);
/* fdatasync the active segment now. */
int pgpipe_spool_sync(pgpipe_spool *s);
int pgpipe_spool_stats(pgpipe_spool *s, pgpipe_spool_status *out);

/* What a drain did. */
typedef struct pgpipe_spool_drain_result {
    long long segments;         /* segments drained and deleted */
    long long records;          /* records read from them */
    long long loaded;           /* rows committed by this drain */
    long long dead;             /* dead-lettered (not valid JSON, refused rows) */
    long long skipped;          /* committed by an earlier, interrupted drain */
    long long quarantined;      /* segments found damaged and moved aside */
} pgpipe_spool_drain_result;

/* Send every record appended before the call to the database, oldest
** first, through a loader made from lo (the connection, target, mapping,
** batch sizes; format, load_key, connections (1, so batches commit in
** order) and, when NULL, source_name ("spool:DEVICE") are the drainer's),
** one load per segment, then delete the segment. The
** active segment is sealed first. Exactly once: a segment's load key is the
** device, the spool's id and the segment's first sequence, so the loader
** books each batch's position in pgpipe.load_batches in the batch's own
** transaction, and a drain interrupted at any point (kill -9, lost
** connection) and run again skips exactly the committed batches. Per
** record: pgpipe.device_positions holds the highest sequence of (device,
** spool id) at staging; records at or below it are not sent (counted in
** skipped: they came by another way, e.g. posted over HTTP with
** Pgpipe-Device / Pgpipe-Seq), and a segment's load moves it. Stops at
** the first segment that fails to load (PGPIPE_DB, ...: it stays, nothing
** of it is loaded twice later). res may be NULL. */
int pgpipe_spool_drain(pgpipe_spool *s, const struct pgpipe_loader_options *lo,
                       pgpipe_spool_drain_result *res);
/* Records to a function of the caller instead of the loader (another
** transport: an HTTP server, a queue): fn gets the records appended before
** the call, oldest first, one at a time (seq, payload, len; the payload is
** valid during the call only), and at the end of each segment once with
** seq 0 and rec NULL: it returns 0 there only when every record handed over
** is safe at the receiver, and then the segment is deleted. A non-zero
** return stops the drain with that code (the segment stays: its records
** are handed over again next time, so the receiver must recognise them:
** the device id, pgpipe_spool_uuid and the sequence are the key). res:
** records and loaded count the records of deleted segments. */
typedef int (*pgpipe_spool_record_fn)(void *ud, long long seq, const void *rec, size_t len);
int pgpipe_spool_drain_to(pgpipe_spool *s, pgpipe_spool_record_fn fn, void *ud,
                          pgpipe_spool_drain_result *res);
/* The device id of the spool's records, and the spool's own id (a UUID,
** new for each new folder: sequences start again at 1 in a new folder). */
const char *pgpipe_spool_device(const pgpipe_spool *s);
const char *pgpipe_spool_uuid(const pgpipe_spool *s);
void pgpipe_spool_close(pgpipe_spool *s);

/* The size and age of a spool folder without opening it (read-only, also
** while another process has it open; for health checks): segments, bytes,
** records (the last segment is scanned, the others counted from their
** headers), oldest_ms, age_seconds and next_seq of out are set, the
** counters are 0. Reads the headers, the first record of the oldest
** segment and the last segment. A segment pgpipe_spool_open would
** quarantine (a header that does not read, a name that is not its first
** sequence, another spool's id) is not counted: out->quarantined is their
** number. PGPIPE_IO when DIR cannot be read. */
int pgpipe_spool_peek(const char *dir, pgpipe_spool_status *out, pgpipe_error *err);

/* One segment as pgpipe_spool_check finds it. */
typedef struct pgpipe_spool_segment_info {
    const char *path;
    int quarantined;            /* it is in DIR/quarantine */
    int header_ok;
    long long first_seq, last_seq;  /* of its whole records; last < first: none */
    long long records;          /* whole records */
    long long bytes;            /* file size */
    long long bad_records;      /* damaged records that a resync skipped */
    long long bad_offset;       /* first damaged byte; -1 = whole */
    long long bad_bytes;        /* bytes that are not whole records */
    const char *device_id;
} pgpipe_spool_segment_info;
typedef void (*pgpipe_spool_check_fn)(void *ud, const pgpipe_spool_segment_info *info);
/* Inspect a spool folder offline, read-only (also while it is open): fn is
** called for each segment, oldest first, then each quarantined one. A
** segment pgpipe_spool_open would quarantine (its header does not read, its
** name is not its first sequence, it carries another spool's id) is
** reported with header_ok 0 and damaged whole. Returns
** PGPIPE_OK when every segment outside quarantine is whole, PGPIPE_PARSE
** when one is not (a torn tail of the last segment included), PGPIPE_IO
** when DIR cannot be read. */
int pgpipe_spool_check(const char *dir, pgpipe_spool_check_fn fn, void *ud, pgpipe_error *err);
