/*
** CDC: set-up (checks, publication, slot), the replication stream and the
** events into staging with the applied LSN in the same transaction. The
** public API is in cdc.h; the messages are decoded by cdc_proto.c.
**
** The events of a transaction are kept until its commit: in memory for a
** transaction pgoutput sends whole (it is at most logical_decoding_work_mem
** of changes, or the server would have streamed it), in a temporary file
** per transaction for one it streams while in progress (no size limit in
** memory). Each record is "event_type TAB payload-without-its-end", both
** already in COPY text form; the commit adds the source, the commit's LSN
** and time, and sends them with COPY into the open target transaction.
**
** Group commit: the target transaction stays open across source commits
** while the stream has more to come, and commits, with the end LSN of its
** last source transaction, when the walsender pings (it does when it has
** caught up and waits for WAL), when the stream stays dry CDC_DRY_US, or
** after CDC_GROUP_EVENTS events or CDC_GROUP_US. Catching up, one target
** commit (its fsync, its round trips) serves dozens of source
** transactions, and the target parses a COPY that never stops while the
** source decodes the next ones. Idle or streaming live, each source
** transaction still commits on its own at once. Nothing is confirmed to
** the source before the group's commit, so exactly once holds as before.
**
** Two threads (see "the writer" below): the caller's reads the stream and
** makes the rows, a writer thread COPYs and commits the groups, a queue
** bounded in bytes between them; with PGPIPE_OMIT_THREADS (or
** options.single_thread) the reader calls the writer's functions itself.
*/
#include "pp_cdc.h"

#ifndef PGPIPE_OMIT_CDC

#include <poll.h>
#ifndef PGPIPE_OMIT_THREADS
#include <sys/socket.h>
#endif

/* What the reader hands a lane of the writer (cdc_w_*), in order: rows of
** the open group ('r', COPY rows, text or binary as the group's), the group's end ('e': its sequence
** number, its last source transaction's end LSN and commit time, its
** counts and its unchanged-TOAST writes). */
typedef struct cdc_item {
    struct cdc_item *next;
    char kind;
    int binary;                 /* the group's COPY is binary (cdc_grp_binary) */
    uint64_t lsn, seq;
    int64_t ts;
    long long txns, events;
    pp_buf data;                /* 'r' */
    pp_buf tru, del, ins;       /* 'e': cdc_toast_build */
} cdc_item;

/* A streamed transaction's records, and where each of its
** subtransactions starts in the file (a subtransaction abort cuts there). */
typedef struct cdc_sub {
    uint32_t xid;
    long off;
} cdc_sub;
typedef struct cdc_spool {
    uint32_t xid;
    FILE *f;
    cdc_sub *subs;
    int nsubs, capsubs;
} cdc_spool;

/* What one change wrote, until it is written to pgpipe.cdc_toast
** (cdc_toast_*): 'i' columns of a row kept or forgotten, 'd' the row
** forgotten (deleted, inserted anew, its key changed), 't' the table
** forgotten (truncated). */
typedef struct cdc_img {
    uint32_t xid;               /* the top-level transaction */
    int done;                   /* it committed on the source: to write (cdc_toast_build) */
    uint64_t grp;               /* the group that writes it (its sequence number); 0: none yet */
    uint64_t commit_lsn;        /* then its commit LSN */
    char kind;
    long off;                   /* streamed: where its record starts in the spool */
    unsigned hash;              /* of table and key */
    int next;                   /* the next older entry of its hash chain; -1 */
    char *table, *key;          /* "schema.table"; key NULL for 't' */
    char *vals;                 /* 'i': per column "col\0" 'S' "value\0" (kept)
                                   or "col\0" 'X' "\0" (forgotten) */
    size_t nvals;
} cdc_img;

/* An LSN the source may be told once the groups up to seq are committed
** and flushed ('a'; 'i' idle: see cdc_w_ack), handed while they were not. */
typedef struct cdc_dack {
    uint64_t seq, lsn;
    char kind;
} cdc_dack;

/* A lane of the writer: a target connection of its own that COPYs and
** commits the groups whose sequence number is its index modulo the lanes'
** count; lane 0's is the handle's tgt (see "the writer" below). */
#define CDC_LANES_MAX 4
typedef struct cdc_lane {
    struct pgpipe_cdc *c;
    int idx;
    PGconn *conn;
    int open;                   /* a group's target transaction with its COPY open */
    int ready;                  /* lanes 1..: the session set up (synchronous_commit) */
    int dead;                   /* its socket was shut: connect again */
    pgpipe_error err;
#ifndef PGPIPE_OMIT_THREADS
    pthread_t thr;
    int running, exited;
    pthread_cond_t cond;        /* items for it, a quit */
    cdc_item *qhead, *qtail;
    size_t qbytes;
#endif
} cdc_lane;

struct pgpipe_cdc {
    pp_handle h;
    char *source, *target, *slot, *publication;
    int status_ms, heartbeat_ms;
    int transient;              /* the last failure may heal: connect again */
    PGconn *src;                /* plain connection to the source: heartbeats */
    PGconn *tgt;                /* the staging database */
    PGconn *repl;               /* replication=database; streaming once started */
    int streaming;
    char sysid[32];
    int self;                   /* the source is the staging database itself:
                                   pgpipe's own schemas are not captured */
    pp_cdc_decoder dec;
    uint64_t applied;           /* pgpipe.cdc_slots.applied_lsn */
    uint64_t ack;               /* what may be confirmed as flushed */
    /* the open transaction pgoutput sends whole */
    int in_txn;
    uint32_t xid;
    pp_buf txn;
    cdc_spool *spools;          /* streamed transactions in progress */
    int nspools, capspools;
    cdc_spool *cur;             /* inside a Stream Start .. Stop block */
    pp_buf js, line, copy, tail; /* scratch */
    uint64_t final_lsn;         /* the open transaction's commit LSN (Begin) */
    /* the target transaction open for a group of source transactions: its
    ** COPY is in progress; grp_end is the end LSN of its last one */
    int grp_open;
    uint64_t grp_end;
    int64_t grp_ts, grp_started_us, dry_since_us;
    long long grp_txns, grp_events;
    /* the target session: set up (tgt_ready) after each connection; its
    ** commits do not wait for the WAL flush (async_commit) unless the
    ** target has synchronous standbys; the groups committed but maybe not
    ** yet flushed there, by their end LSN at the source and the target's
    ** WAL insert position after their commit, oldest first */
    int tgt_ready, async_commit;
    /* staging.raw_events' columns, as the last target session found them:
    ** may the rows (source, event_type, payload) go binary (bin_ok), and
    ** those with their id too (bin_id_ok: id is bigint)? A group's rows
    ** keep the format they were made in (grp_binary, set when it opens);
    ** n_bin_groups counts the groups a lane began in binary */
    int bin_ok, bin_id_ok, grp_binary;
    _Atomic long long n_bin_groups, n_bin_snapshots; /* and the snapshot's tables */
    struct cdc_pend { uint64_t remote, local; } *pend;
    int npend, cappend;
    int64_t last_flush_us;
    /* tables whose snapshot is newer than the stream: their changes that
    ** committed before it are in the snapshot */
    struct cdc_skip { char *table; uint64_t lsn; } *skips;
    int nskips;
    int64_t last_status_us, last_activity_us;
    /* unchanged TOAST values (cdc_toast_*): what the changes not yet
    ** written wrote, by hash of table and key; the tables with kept
    ** values on the target; scratch for a filled tuple */
    cdc_img *imgs;
    int nimgs, capimgs;
    int *heads;
    int nheads;
    size_t img_mem;
    char **ttabs;
    int nttabs, capttabs;
    pp_cdc_tuple tfill;
    PGresult *tres;
    PGconn *tlook;              /* the target, for the table's values: tgt may be in a COPY */
    pp_buf tname, tkey, tokey, tvals;
    /* the reader's side of the group: the end LSN of the last source
    ** transaction handed to the writer (a transaction at or before it is
    ** skipped), the last group's sequence number, the walsender's timeout */
    uint64_t queued_end, seq;
    int wal_timeout_ms;
    int single;                 /* one thread: the reader calls the writer (cdc_w_*) itself */
    /* the writer's lanes (nlanes: options.writers; nrun: this run's, 1
    ** with one thread or when a second connection could not be made) */
    cdc_lane lanes[CDC_LANES_MAX];
    int nlanes, nrun;
    uint64_t grp_bytes;         /* the reader's open group: bytes of rows */
    pgpipe_error werr;          /* the writer's first failure */
    _Atomic uint64_t w_seq;     /* the last group committed: its TOAST images may go */
    uint64_t w_done;            /* the last group committed or given up: the next commits */
    uint64_t w_started;         /* the last group whose target transaction began (qmu) */
    /* more than one lane: the events' ids, taken from staging's sequence
    ** by the reader (on tlook) in blocks, in the stream's order */
    long long *ids;
    int nids, idpos;
    unsigned idseq;             /* the sequence's OID; 0: not known yet */
    cdc_dack *dacks;            /* acks waiting for their groups (qmu) */
    int ndacks, capdacks;
    _Atomic uint64_t st_ack;    /* what the source may be told is flushed (the writer's ack) */
    /* qmu guards the queues, the groups' order (w_done), pend, ack and the
    ** dacks (no mutex at all under PGPIPE_OMIT_THREADS) */
    pp_mutex qmu;
#ifndef PGPIPE_OMIT_THREADS
    /* the lanes' threads and their queues, bounded in bytes */
    int w_running;
    pthread_cond_t rcond, ccond; /* for the reader: room, an exit; for the lanes: a commit */
    int w_quit;
    atomic_int w_failed;
#endif
    atomic_int stop;
    _Atomic long long n_txn, n_events, n_skipped, n_reconnects;
    _Atomic uint64_t st_applied, st_confirmed, st_received;
};

/* The queues to the writer's lanes hold at most this many bytes of rows
** (each its share): a reader ahead of the target by more waits (and
** answers the walsender meanwhile); a transaction of any size goes through
** in pieces. With more than one lane a group ends at half a lane's share
** (about 10,000 small events), so that one lane's backend works on a group
** while the next group fills the other lane. */
#define CDC_QUEUE_BYTES ((size_t)8 * 1024 * 1024)
/* Rows go to the writer in pieces of about this size. */
#define CDC_CHUNK (256 * 1024)
/* Asked to stop, the run waits this long for the writer to commit what it
** was handed; then it gives that up (nothing of it was confirmed). */
#define CDC_STOP_WAIT_US 5000000
/* Internal: the reader gave up waiting for the writer because of a stop. */
#define CDC_STOPPED 1000

/* A group's target transaction commits at the latest after this many
** events or this long (the redo after a failure, the staging latency). */
#define CDC_GROUP_EVENTS 50000
#define CDC_GROUP_US 500000
/* ... and when the stream has had nothing for this long (the walsender's
** ping when it has caught up usually comes first) */
#define CDC_DRY_US 20000

static void cdc_toast_drop(pgpipe_cdc *c, uint32_t xid, long off, int which);
static int cdc_toast_load(pgpipe_cdc *c);
static int cdc_toast_snapshot(pgpipe_cdc *c, PGconn *ss, const char *name, const char *quoted);

/* PostgreSQL's epoch (2000-01-01) in Unix seconds. */
#define CDC_PG_EPOCH 946684800LL

void pgpipe_cdc_options_init(pgpipe_cdc_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->slot = "pgpipe_cdc";
    o->publication = "pgpipe_cdc";
    o->create = 1;
    o->install = 1;
    o->status_interval_ms = 1000;
    o->heartbeat_ms = 10000;
    o->writers = 1;
}

/* ---- the event payload ----------------------------------------------- */

static int is_json_number(const char *s, uint32_t n)
{
    uint32_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n || !isdigit((unsigned char)s[i]))
        return 0;
    for (; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && s[i] != '.' && s[i] != 'e' && s[i] != 'E' &&
            s[i] != '+' && s[i] != '-')
            return 0;
    return 1;
}

/* One value by its type's OID: booleans, numbers and JSON as JSON. */
static int cdc_value(pp_buf *b, const pp_cdc_col *c, const pp_cdc_value *v)
{
    if (v->kind == 'n')
        return pp_buf_append(b, "null", 4);
    if (v->kind == 'b') {
        size_t cap = (v->len + 2) / 3 * 4 + 1;
        if (pp_buf_reserve(b, cap + 2) != PGPIPE_OK)
            return PGPIPE_NOMEM;
        b->data[b->len++] = '"';
        b->len += pp_base64_encode(b->data + b->len, cap, v->data, v->len, 0);
        b->data[b->len++] = '"';
        return PGPIPE_OK;
    }
    switch (c->type) {
    case 16: /* bool */
        return v->len == 1 && v->data[0] == 't' ? pp_buf_append(b, "true", 4)
                                                 : pp_buf_append(b, "false", 5);
    case 20: case 21: case 23: case 26: case 700: case 701: case 1700:
        if (is_json_number(v->data, v->len))
            return pp_buf_append(b, v->data, v->len);
        break; /* NaN, Infinity: a string */
    case 114: case 3802: /* json, jsonb: the server's text is JSON */
        return pp_buf_append(b, v->data, v->len);
    default:
        break;
    }
    return pp_json_str(b, v->data, v->len, 0);
}

/* {"name":value,...} of a tuple; keys_only: the replica identity's columns. */
static int cdc_tuple(pp_buf *b, const pp_cdc_rel *r, const pp_cdc_tuple *t, int keys_only)
{
    int rc = pp_buf_putc(b, '{'), first = 1;
    for (int i = 0; rc == PGPIPE_OK && i < t->n; i++) {
        if (t->v[i].kind == 'u' || (keys_only && !r->cols[i].key))
            continue;
        if (!first)
            rc = pp_buf_putc(b, ',');
        first = 0;
        if (rc == PGPIPE_OK)
            rc = pp_json_str(b, r->cols[i].name, strlen(r->cols[i].name), 0);
        if (rc == PGPIPE_OK)
            rc = pp_buf_putc(b, ':');
        if (rc == PGPIPE_OK)
            rc = cdc_value(b, &r->cols[i], &t->v[i]);
    }
    return rc == PGPIPE_OK ? pp_buf_putc(b, '}') : rc;
}

/* ,"what":["col",..] of the columns of kind in t; nothing when none. */
static int cdc_names(pp_buf *b, const pp_cdc_rel *r, const pp_cdc_tuple *t, char kind,
                     const char *what)
{
    int rc = PGPIPE_OK, first = 1;
    for (int k = 0; rc == PGPIPE_OK && k < t->n; k++) {
        if (t->v[k].kind != kind)
            continue;
        rc = first ? pp_buf_appendf(b, ",\"%s\":[", what) : pp_buf_putc(b, ',');
        first = 0;
        if (rc == PGPIPE_OK)
            rc = pp_json_str(b, r->cols[k].name, strlen(r->cols[k].name), 0);
    }
    return rc == PGPIPE_OK && !first ? pp_buf_putc(b, ']') : rc;
}

PGPIPE_PRIVATE int pp_cdc_event_json(pp_buf *b, const pp_cdc_decoder *d, const pp_cdc_msg *m,
                                     int i, uint32_t xid)
{
    const pp_cdc_rel *r = m->rel;
    const char *op = m->type == 'I' ? "insert" : m->type == 'U' ? "update"
                   : m->type == 'D' ? "delete" : "truncate";
    if (m->type == 'T' && !(r = pp_cdc_rel_find(d, m->relids[i])))
        return PGPIPE_PARSE;
    /* the members in the order jsonb keeps them (shorter keys first, then
    ** bytewise; "lsn" goes after "op" when the commit adds it), so the
    ** server's sort of them has nothing to move */
    int rc = pp_buf_appendf(b, "{\"op\":\"%s\"", op);
    if (rc == PGPIPE_OK && m->type != 'T' && m->oldt) {
        rc = pp_buf_append(b, ",\"old\":", 7);
        if (rc == PGPIPE_OK)
            rc = cdc_tuple(b, r, m->oldt, m->old_kind == 'K');
    }
    if (rc == PGPIPE_OK && m->type != 'T' && m->newt) {
        rc = pp_buf_append(b, ",\"row\":", 7);
        if (rc == PGPIPE_OK)
            rc = cdc_tuple(b, r, m->newt, 0);
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(b, ",\"xid\":%u,\"table\":", xid);
    /* "schema.table": identifiers are at most 63 bytes, so the stack
    ** holds it unless a malformed message says otherwise */
    if (rc == PGPIPE_OK) {
        char nm[256];
        int k = snprintf(nm, sizeof nm, "%s.%s", r->nsp, r->name);
        if (k >= 0 && (size_t)k < sizeof nm) {
            rc = pp_json_str(b, nm, (size_t)k, 0);
        } else {
            pp_buf name = { 0, 0, 0 };
            rc = pp_buf_appendf(&name, "%s.%s", r->nsp, r->name);
            if (rc == PGPIPE_OK)
                rc = pp_json_str(b, name.data, name.len, 0);
            pp_buf_free(&name);
        }
    }
    if (rc != PGPIPE_OK)
        return rc;
    if (m->type == 'T')
        return pp_buf_appendf(b, ",\"cascade\":%s,\"restart_identity\":%s",
                              m->flags & 1 ? "true" : "false", m->flags & 2 ? "true" : "false");
    if (m->newt) {
        rc = cdc_names(b, r, m->newt, 'f', "filled");
        if (rc == PGPIPE_OK)
            rc = cdc_names(b, r, m->newt, 'u', "unchanged");
    }
    return rc;
}

PGPIPE_PRIVATE int pp_cdc_event_end(pp_buf *b, uint64_t end_lsn, int64_t commit_ts)
{
    char lsn[32], when[48];
    pp_cdc_lsn_str(end_lsn, lsn, sizeof lsn);
    int64_t us = commit_ts % 1000000, s = commit_ts / 1000000;
    if (us < 0) {
        us += 1000000;
        s--;
    }
    time_t t = (time_t)(s + CDC_PG_EPOCH);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    return pp_buf_appendf(b, ",\"lsn\":\"%s\",\"commit_time\":\"%s.%06dZ\"}", lsn, when,
                          (int)us);
}

/* ---- connections and set-up ------------------------------------------ */

static int cdc_connect(pgpipe_cdc *c, PGconn **out, const char *conninfo, int replication,
                       const char *what)
{
    const char *keys[] = { "dbname", replication ? "replication" : NULL, NULL };
    const char *vals[] = { conninfo ? conninfo : "", "database", NULL };
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    if (!pg)
        return pp_err_nomem(&c->h.err);
    if (PQstatus(pg) != CONNECTION_OK) {
        const char *m = PQerrorMessage(pg);
        /* a pooler (pgbouncer before 1.23, or in transaction mode) refuses
        ** the replication startup parameter in words of its own */
        int pooler = replication && strstr(m, "unsupported startup parameter") &&
                     strstr(m, "replication");
        int mn = (int)strlen(m);
        while (pooler && mn > 0 && (m[mn - 1] == '\n' || m[mn - 1] == ' '))
            mn--;
        pp_err(&c->h.err, PGPIPE_DB, "cdc: cannot connect to the %s: %.*s%s", what, mn, m,
               pooler ? "; hint: the source conninfo reaches a connection pooler (pgbouncer), "
                        "which does not pass replication connections: give the source "
                        "server's own host and port (the target may stay behind the pooler)"
                      : "");
        snprintf(c->h.err.sqlstate, sizeof c->h.err.sqlstate, "08006");
        PQfinish(pg);
        return PGPIPE_DB;
    }
    PQsetNoticeProcessor(pg, pp_notice_to_log, (void *)"cdc");
    *out = pg;
    return PGPIPE_OK;
}

/* Slot and publication names go into replication commands: keep them to
** what PostgreSQL allows for slots. */
static int cdc_name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '_'))
            return 0;
    return 1;
}

static int cdc_check_source(pgpipe_cdc *c)
{
    PGresult *r = NULL;
    int rc = pp_exec(c->src,
                     "SELECT current_setting('wal_level'), current_user, "
                     "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
                     0, NULL, &r, &c->h.err, "cdc: checking the source");
    if (rc != PGPIPE_OK)
        return rc;
    char level[32], role[128];
    snprintf(level, sizeof level, "%s", PQgetvalue(r, 0, 0));
    snprintf(role, sizeof role, "%s", PQgetvalue(r, 0, 1));
    int repl = strcmp(PQgetvalue(r, 0, 2), "t") == 0;
    PQclear(r);
    if (strcmp(level, "logical") != 0)
        return pp_err(&c->h.err, PGPIPE_ERROR,
                      "cdc: the source has wal_level = %s; logical replication needs "
                      "wal_level = logical (set it in postgresql.conf or with ALTER SYSTEM SET "
                      "wal_level = logical, then restart the source server)", level);
    if (!repl)
        return pp_err(&c->h.err, PGPIPE_ERROR,
                      "cdc: role \"%s\" lacks the REPLICATION attribute needed for a "
                      "replication slot (ALTER ROLE \"%s\" REPLICATION, or connect as a "
                      "superuser)", role, role);
    return PGPIPE_OK;
}

static int cdc_publication(pgpipe_cdc *c, const char *tables, int create)
{
    const char *p[1] = { c->publication };
    PGresult *r = NULL;
    int rc = pp_exec(c->src, "SELECT 1 FROM pg_publication WHERE pubname = $1", 1, p, &r,
                     &c->h.err, "cdc: looking for the publication");
    if (rc != PGPIPE_OK)
        return rc;
    int found = PQntuples(r) == 1;
    PQclear(r);
    if (found)
        return PGPIPE_OK;
    if (!create)
        return pp_err(&c->h.err, PGPIPE_ERROR, "cdc: the source has no publication \"%s\"",
                      c->publication);
    pp_buf q = { 0, 0, 0 };
    rc = pp_buf_appendf(&q, "CREATE PUBLICATION \"%s\" ", c->publication);
    if (rc == PGPIPE_OK && (!tables || !*tables)) {
        rc = pp_buf_appendf(&q, "FOR ALL TABLES");
    } else if (rc == PGPIPE_OK) {
        rc = pp_buf_appendf(&q, "FOR TABLE ");
        const char *s = tables;
        int first = 1;
        while (rc == PGPIPE_OK && *s) {
            while (*s == ' ' || *s == ',')
                s++;
            size_t n = strcspn(s, ", ");
            if (!n)
                break;
            char *one = pp_strndup(s, n);
            if (!one) {
                rc = PGPIPE_NOMEM;
                break;
            }
            if (!first)
                rc = pp_buf_putc(&q, ',');
            if (rc == PGPIPE_OK)
                rc = pp_quote_path(&q, one);
            pp_free(one);
            first = 0;
            s += n;
        }
    }
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(&q, '\0');
    if (rc != PGPIPE_OK) {
        pp_buf_free(&q);
        return rc == PGPIPE_NOMEM ? pp_err_nomem(&c->h.err)
                                  : pp_err(&c->h.err, rc, "cdc: bad table list \"%s\"", tables);
    }
    rc = pp_exec(c->src, q.data, 0, NULL, NULL, &c->h.err, "cdc: creating the publication");
    pp_buf_free(&q);
    return rc;
}

/* Is the source the staging database itself (the same cluster, by its
** system identifier and start time, and the same database)? Then the
** changes pgpipe makes there (staging, its own bookkeeping) must not be
** captured: each would be staged again, and that write captured again,
** without end. */
static int cdc_same_database(pgpipe_cdc *c)
{
    static const char q[] = "SELECT system_identifier::text || '/' || current_database() || '/' ||"
                            " pg_postmaster_start_time()::text FROM pg_control_system()";
    PGresult *rs = NULL, *rt = NULL;
    int rc = pp_exec(c->src, q, 0, NULL, &rs, &c->h.err, "cdc: identifying the source");
    if (rc == PGPIPE_OK)
        rc = pp_exec(c->tgt, q, 0, NULL, &rt, &c->h.err, "cdc: identifying the target");
    if (rc == PGPIPE_OK)
        c->self = strcmp(PQgetvalue(rs, 0, 0), PQgetvalue(rt, 0, 0)) == 0;
    PQclear(rs);
    PQclear(rt);
    if (rc == PGPIPE_OK && c->self)
        pp_logf(PGPIPE_LOG_INFO, "cdc", "the source is the staging database itself: the "
                "changes in schemas pgpipe and staging are not captured");
    return rc;
}

/* The schemas of pgpipe's own tables. */
static int cdc_own_schema(const char *nsp)
{
    return strcmp(nsp, "pgpipe") == 0 || strcmp(nsp, "staging") == 0;
}

/* The slot on the source and its row on the target: create, adopt, or
** refuse (a lost slot, another cluster's slot of the same name). */
static int cdc_slot(pgpipe_cdc *c, int create, int snapshot)
{
    PGresult *r = NULL;
    int rc = pp_exec(c->repl, "IDENTIFY_SYSTEM", 0, NULL, &r, &c->h.err,
                     "cdc: IDENTIFY_SYSTEM on the source");
    if (rc != PGPIPE_OK)
        return rc;
    snprintf(c->sysid, sizeof c->sysid, "%s", PQgetvalue(r, 0, 0));
    char db[128];
    snprintf(db, sizeof db, "%s", PQgetisnull(r, 0, 3) ? "" : PQgetvalue(r, 0, 3));
    PQclear(r);
    if ((rc = cdc_same_database(c)) != PGPIPE_OK)
        return rc;

    const char *p1[1] = { c->slot };
    rc = pp_exec(c->tgt, "SELECT system_id, applied_lsn::text FROM pgpipe.cdc_slots WHERE slot = $1",
                 1, p1, &r, &c->h.err, "cdc: reading the slot's applied LSN");
    if (rc != PGPIPE_OK)
        return rc;
    int known = PQntuples(r) == 1;
    if (known) {
        if (strcmp(PQgetvalue(r, 0, 0), c->sysid) != 0) {
            rc = pp_err(&c->h.err, PGPIPE_ERROR,
                        "cdc: slot \"%s\" on the target belongs to another source cluster "
                        "(system %s, this one is %s); choose another slot name", c->slot,
                        PQgetvalue(r, 0, 0), c->sysid);
            PQclear(r);
            return rc;
        }
        pp_cdc_lsn_parse(PQgetvalue(r, 0, 1), &c->applied);
    }
    PQclear(r);

    rc = pp_exec(c->src,
                 "SELECT plugin, database, coalesce(wal_status, ''), "
                 "coalesce(confirmed_flush_lsn::text, '') FROM pg_replication_slots "
                 "WHERE slot_name = $1", 1, p1, &r, &c->h.err, "cdc: looking for the slot");
    if (rc != PGPIPE_OK)
        return rc;
    uint64_t start = 0;
    if (PQntuples(r) == 1) {
        if (strcmp(PQgetvalue(r, 0, 0), "pgoutput") != 0 || strcmp(PQgetvalue(r, 0, 1), db) != 0)
            rc = pp_err(&c->h.err, PGPIPE_ERROR,
                        "cdc: slot \"%s\" exists with plugin %s on database %s; pgpipe needs a "
                        "pgoutput slot on %s", c->slot, PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1),
                        db);
        else if (strcmp(PQgetvalue(r, 0, 2), "lost") == 0)
            rc = pp_err(&c->h.err, PGPIPE_ERROR,
                        "cdc: slot \"%s\" was invalidated by the source (wal_status lost: it "
                        "kept more WAL than max_slot_wal_keep_size); changes are missing: drop "
                        "it (.cdc drop) and start again", c->slot);
        else
            pp_cdc_lsn_parse(PQgetvalue(r, 0, 3), &start);
        PQclear(r);
        if (rc != PGPIPE_OK)
            return rc;
    } else {
        PQclear(r);
        if (known)
            return pp_err(&c->h.err, PGPIPE_ERROR,
                          "cdc: slot \"%s\" is gone from the source (dropped or invalidated, "
                          "or the source failed over to a standby that lacks it: PostgreSQL 16 "
                          "and older keep logical slots on the primary only) but the target "
                          "staged changes from it; changes since then may be missing: drop its "
                          "state (.cdc drop) and start again", c->slot);
        if (!create)
            return pp_err(&c->h.err, PGPIPE_ERROR, "cdc: the source has no slot \"%s\"",
                          c->slot);
        rc = pp_exec(c->src, "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                     1, p1, &r, &c->h.err, "cdc: creating the replication slot");
        if (rc != PGPIPE_OK)
            return rc;
        pp_cdc_lsn_parse(PQgetvalue(r, 0, 0), &start);
        PQclear(r);
        pp_logf(PGPIPE_LOG_INFO, "cdc", "created replication slot %s", c->slot);
    }
    if (!known) {
        char lsn[32];
        pp_cdc_lsn_str(start, lsn, sizeof lsn);
        const char *p[5] = { c->slot, c->sysid, db, c->publication, lsn };
        /* the slot's row and the tables its snapshot will copy, together */
        rc = pp_exec(c->tgt, PP_BEGIN, 0, NULL, NULL, &c->h.err, "cdc: BEGIN on the target");
        if (rc == PGPIPE_OK)
            rc = pp_exec(c->tgt,
                         "INSERT INTO pgpipe.cdc_slots (slot, system_id, database, publication, "
                         "applied_lsn) VALUES ($1, $2, $3, $4, $5::pg_lsn)",
                         5, p, NULL, &c->h.err, "cdc: recording the slot on the target");
        if (rc == PGPIPE_OK && snapshot) {
            const char *pp[1] = { c->publication };
            rc = pp_exec(c->src, "SELECT schemaname || '.' || tablename FROM pg_publication_tables "
                                 "WHERE pubname = $1", 1, pp, &r, &c->h.err,
                         "cdc: listing the publication's tables");
            for (int i = 0; rc == PGPIPE_OK && i < PQntuples(r); i++) {
                const char *q[2] = { c->slot, PQgetvalue(r, i, 0) };
                rc = pp_exec(c->tgt, "INSERT INTO pgpipe.cdc_snapshot_tables (slot, table_name) "
                                     "VALUES ($1, $2)", 2, q, NULL, &c->h.err,
                             "cdc: recording the snapshot's tables");
            }
            PQclear(r);
        }
        if (rc == PGPIPE_OK)
            rc = pp_exec(c->tgt, "COMMIT", 0, NULL, NULL, &c->h.err, "cdc: COMMIT on the target");
        if (rc != PGPIPE_OK) {
            pp_rollback_open(c->tgt);
            return rc;
        }
        c->applied = start;
    }
    c->ack = c->applied;
    atomic_store(&c->st_ack, c->ack);
    atomic_store(&c->st_applied, c->applied);
    return PGPIPE_OK;
}

/* Whether the groups made from now on may COPY binary rows into staging
** (asked after each connection, outside a transaction): the columns the
** loader writes as they should be (pp_copy_staging_format, which also
** honours PGPIPE_COPY_FORMAT=text), and for the rows with their ids (more
** than one lane) id a bigint too. Any doubt (a refusal) means text. */
static void cdc_bin_check(pgpipe_cdc *c)
{
    c->bin_ok = pp_copy_staging_format(c->tgt, "staging.raw_events") == PP_COPY_BINARY;
    c->bin_id_ok = 0;
    PGresult *r = NULL;
    if (c->bin_ok &&
        pp_exec(c->tgt, "SELECT a.atttypid = 'pg_catalog.int8'::pg_catalog.regtype::oid FROM "
                        "pg_catalog.pg_attribute a WHERE a.attrelid = "
                        "pg_catalog.to_regclass('staging.raw_events') AND a.attname = 'id' AND "
                        "NOT a.attisdropped", 0, NULL, &r, NULL, "cdc") == PGPIPE_OK) {
        c->bin_id_ok = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
    }
}

/* May the groups opened now go binary (their rows carry ids with more than
** one lane)? */
static int cdc_bin_groups(const pgpipe_cdc *c)
{
    return c->nrun > 1 ? c->bin_id_ok : c->bin_ok;
}

/* Append the COPY text s[0..n) unescaped (a binary field's bytes): the
** escapes pp_copy_escape writes and the server's COPY TO writes (\b \f \n
** \r \t \v \\; a backslash before anything else stands for that byte). */
static int cdc_unescape(pp_buf *b, const char *s, size_t n)
{
    const char *e = s + n;
    while (s < e) {
        const char *bs = memchr(s, '\\', (size_t)(e - s));
        if (!bs)
            return pp_buf_append(b, s, (size_t)(e - s));
        if (pp_buf_append(b, s, (size_t)(bs - s)) != PGPIPE_OK)
            return PGPIPE_NOMEM;
        if (bs + 1 == e)
            return pp_buf_putc(b, '\\');
        char ch = bs[1];
        ch = ch == 'b' ? '\b' : ch == 'f' ? '\f' : ch == 'n' ? '\n' : ch == 'r' ? '\r'
           : ch == 't' ? '\t' : ch == 'v' ? '\v' : ch;
        if (pp_buf_putc(b, ch) != PGPIPE_OK)
            return PGPIPE_NOMEM;
        s = bs + 2;
    }
    return PGPIPE_OK;
}

/* One table's rows into staging under the snapshot ss has set, marked
** done in the same target transaction. */
static int cdc_snapshot_table(pgpipe_cdc *c, PGconn *ss, const char *name, const char *quoted,
                              const char *lsn)
{
    pp_buf pre = { 0, 0, 0 }, tmp = { 0, 0, 0 }, q = { 0, 0, 0 }, head = { 0, 0, 0 };
    /* binary rows when the target's columns allow (cdc_bin_check, asked
    ** before the snapshot): the source's COPY text of each row unescaped
    ** into the payload */
    int binary = c->bin_ok;
    int rc = pp_copy_escape(&pre, c->slot, strlen(c->slot));
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&tmp, "%s:insert", name);
    if (rc == PGPIPE_OK && pp_buf_putc(&pre, '\t') == PGPIPE_OK)
        rc = pp_copy_escape(&pre, tmp.data, tmp.len);
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&pre, "\t{\"op\":\"insert\",\"table\":");
    if (rc == PGPIPE_OK)
        rc = pp_json_str(&pre, name, strlen(name), PP_JSON_COPY);
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&pre, ",\"snapshot\":true,\"row\":");
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&head, "{\"op\":\"insert\",\"table\":");
    if (rc == PGPIPE_OK)
        rc = pp_json_str(&head, name, strlen(name), 0);
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&head, ",\"snapshot\":true,\"row\":");
    if (rc == PGPIPE_OK)
        rc = pp_buf_appendf(&q, "COPY (SELECT to_jsonb(t) FROM ONLY %s t) TO STDOUT", quoted);
    if (rc != PGPIPE_OK) {
        pp_buf_free(&pre);
        pp_buf_free(&tmp);
        pp_buf_free(&q);
        pp_buf_free(&head);
        return pp_err_nomem(&c->h.err);
    }
    char end[64];
    int endn = snprintf(end, sizeof end, ",\"lsn\":\"%s\"}\n", lsn);
    pp_copy_w w = { .binary = 1 };
    long long rows = 0;
    rc = pp_exec(c->tgt, PP_BEGIN, 0, NULL, NULL, &c->h.err, "cdc: BEGIN on the target");
    if (rc == PGPIPE_OK)
        rc = pp_copy_in_start(c->tgt, binary ? "COPY staging.raw_events (source, event_type, "
                                               "payload) FROM STDIN (FORMAT binary)"
                                             : "COPY staging.raw_events (source, event_type, "
                                               "payload) FROM STDIN",
                              &c->h.err, "cdc: COPY the snapshot into staging");
    if (rc == PGPIPE_OK && binary &&
        PQputCopyData(c->tgt, PP_COPY_BIN_HEADER, PP_COPY_BIN_HEADER_LEN) != 1)
        rc = pp_err_pq(&c->h.err, c->tgt, NULL, "cdc: COPY the snapshot into staging");
    if (rc == PGPIPE_OK && binary)
        atomic_fetch_add(&c->n_bin_snapshots, 1);
    if (rc == PGPIPE_OK) {
        PGresult *r = PQexec(ss, q.data);
        if (PQresultStatus(r) != PGRES_COPY_OUT)
            rc = pp_err_pq(&c->h.err, ss, r, "cdc: COPY a table of the snapshot");
        PQclear(r);
    }
    c->copy.len = 0;
    while (rc == PGPIPE_OK) {
        char *buf = NULL;
        int n = PQgetCopyData(ss, &buf, 0);
        if (n < 0) {
            PGresult *r = PQgetResult(ss);
            if (n == -2 || PQresultStatus(r) != PGRES_COMMAND_OK)
                rc = pp_err_pq(&c->h.err, ss, r, "cdc: COPY a table of the snapshot");
            PQclear(r);
            while ((r = PQgetResult(ss)) != NULL)
                PQclear(r);
            break;
        }
        if (n > 0 && buf[n - 1] == '\n')
            n--;
        if (binary) {
            pp_buf *b = &c->copy;
            int e = pp_copy_row_begin(&w, b, 3);
            e |= pp_copy_text_field(&w, b, 0, c->slot, strlen(c->slot));
            e |= pp_copy_text_field(&w, b, 1, tmp.data, tmp.len);
            e |= pp_copy_field_begin(&w, b, 2);
            e |= pp_buf_putc(b, 1);
            e |= pp_buf_append(b, head.data, head.len);
            e |= cdc_unescape(b, buf, (size_t)n);
            e |= pp_buf_append(b, end, (size_t)endn - 1); /* not its newline */
            pp_copy_field_end(&w, b);
            e |= pp_copy_row_end(&w, b);
            if (e)
                rc = pp_err_nomem(&c->h.err);
        } else if (pp_buf_append(&c->copy, pre.data, pre.len) ||
                   pp_buf_append(&c->copy, buf, (size_t)n) ||
                   pp_buf_append(&c->copy, end, (size_t)endn)) {
            rc = pp_err_nomem(&c->h.err);
        }
        PQfreemem(buf);
        rows++;
        if (rc == PGPIPE_OK && c->copy.len >= 256 * 1024) {
            if (PQputCopyData(c->tgt, c->copy.data, (int)c->copy.len) != 1)
                rc = pp_err_pq(&c->h.err, c->tgt, NULL, "cdc: COPY the snapshot into staging");
            c->copy.len = 0;
        }
    }
    if (rc == PGPIPE_OK && c->copy.len &&
        PQputCopyData(c->tgt, c->copy.data, (int)c->copy.len) != 1)
        rc = pp_err_pq(&c->h.err, c->tgt, NULL, "cdc: COPY the snapshot into staging");
    c->copy.len = 0;
    if (rc == PGPIPE_OK) {
        if (PQputCopyEnd(c->tgt, NULL) != 1) {
            rc = pp_err_pq(&c->h.err, c->tgt, NULL, "cdc: COPY the snapshot into staging");
        } else {
            PGresult *r;
            while ((r = PQgetResult(c->tgt)) != NULL) {
                if (rc == PGPIPE_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
                    rc = pp_err_pq(&c->h.err, c->tgt, r, "cdc: COPY the snapshot into staging");
                PQclear(r);
            }
        }
    }
    if (rc == PGPIPE_OK) /* the rows are images of unchanged TOAST values */
        rc = cdc_toast_snapshot(c, ss, name, quoted);
    if (rc == PGPIPE_OK) {
        char nrows[32];
        snprintf(nrows, sizeof nrows, "%lld", rows);
        const char *p[4] = { c->slot, name, nrows, lsn };
        rc = pp_exec(c->tgt, "UPDATE pgpipe.cdc_snapshot_tables SET done_at = now(), rows = $3, "
                             "snapshot_lsn = $4::pg_lsn WHERE slot = $1 AND table_name = $2",
                     4, p, NULL, &c->h.err, "cdc: marking a table of the snapshot done");
    }
    if (rc == PGPIPE_OK)
        rc = pp_exec(c->tgt, "COMMIT", 0, NULL, NULL, &c->h.err, "cdc: COMMIT on the target");
    if (rc != PGPIPE_OK)
        pp_rollback_open(c->tgt);
    else
        pp_logf(PGPIPE_LOG_INFO, "cdc", "snapshot of %s: %lld rows at %s", name, rows, lsn);
    pp_buf_free(&pre);
    pp_buf_free(&tmp);
    pp_buf_free(&q);
    pp_buf_free(&head);
    return rc;
}

/* The tables of the snapshot not done yet, read under the snapshot of a
** temporary slot made now (its consistent point is after the slot's own,
** so the stream holds every change after it); then the stream's filter. */
static int cdc_snapshot(pgpipe_cdc *c)
{
    const char *p1[1] = { c->slot };
    PGresult *pend = NULL, *r = NULL;
    int rc = pp_exec(c->tgt, "SELECT table_name FROM pgpipe.cdc_snapshot_tables WHERE slot = $1 "
                             "AND done_at IS NULL ORDER BY table_name", 1, p1, &pend, &c->h.err,
                     "cdc: reading the snapshot's state");
    if (rc != PGPIPE_OK)
        return rc;
    PGconn *rs = NULL, *ss = NULL;
    if (PQntuples(pend) > 0) {
        char q[256], lsn[32];
        cdc_bin_check(c); /* the rows' format (cdc_snapshot_table) */
        snprintf(q, sizeof q, "CREATE_REPLICATION_SLOT \"%.50s_snap\" TEMPORARY LOGICAL pgoutput "
                 "(SNAPSHOT 'export')", c->slot);
        if ((rc = cdc_connect(c, &rs, c->source, 1, "source (snapshot)")) == PGPIPE_OK)
            rc = pp_exec(rs, q, 0, NULL, &r, &c->h.err, "cdc: a temporary slot for the snapshot");
        if (rc == PGPIPE_OK) {
            snprintf(lsn, sizeof lsn, "%s", PQgetvalue(r, 0, 1));
            snprintf(q, sizeof q, "SET TRANSACTION SNAPSHOT '%s'", PQgetvalue(r, 0, 2));
            PQclear(r);
            r = NULL;
            rc = cdc_connect(c, &ss, c->source, 0, "source (snapshot)");
        }
        if (rc == PGPIPE_OK)
            rc = pp_exec(ss, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL, NULL,
                         &c->h.err, "cdc: the snapshot's transaction");
        if (rc == PGPIPE_OK)
            rc = pp_exec(ss, q, 0, NULL, NULL, &c->h.err, "cdc: the snapshot's transaction");
        const char *pp[1] = { c->publication };
        if (rc == PGPIPE_OK)
            rc = pp_exec(ss, "SELECT schemaname || '.' || tablename, quote_ident(schemaname) || "
                             "'.' || quote_ident(tablename) FROM pg_publication_tables "
                             "WHERE pubname = $1", 1, pp, &r, &c->h.err,
                         "cdc: listing the publication's tables");
        for (int i = 0; rc == PGPIPE_OK && i < PQntuples(pend); i++) {
            const char *name = PQgetvalue(pend, i, 0), *quoted = NULL;
            for (int k = 0; k < PQntuples(r) && !quoted; k++)
                if (!strcmp(PQgetvalue(r, k, 0), name))
                    quoted = PQgetvalue(r, k, 1);
            if (!quoted) { /* left the publication meanwhile: nothing to copy */
                const char *p[3] = { c->slot, name, lsn };
                rc = pp_exec(c->tgt, "UPDATE pgpipe.cdc_snapshot_tables SET done_at = now(), rows = 0, "
                                     "snapshot_lsn = $3::pg_lsn WHERE slot = $1 AND table_name = $2",
                             3, p, NULL, &c->h.err, "cdc: marking a table of the snapshot done");
                continue;
            }
            rc = cdc_snapshot_table(c, ss, name, quoted, lsn);
        }
        PQclear(r);
        r = NULL;
        if (ss)
            PQfinish(ss); /* read only: nothing to commit */
        if (rs)
            PQfinish(rs); /* the temporary slot goes with its session */
    }
    PQclear(pend);
    if (rc != PGPIPE_OK)
        return rc;
    char applied[32];
    pp_cdc_lsn_str(c->applied, applied, sizeof applied);
    const char *p2[2] = { c->slot, applied };
    rc = pp_exec(c->tgt, "SELECT table_name, snapshot_lsn::text FROM pgpipe.cdc_snapshot_tables "
                         "WHERE slot = $1 AND snapshot_lsn > $2::pg_lsn", 2, p2, &r, &c->h.err,
                 "cdc: reading the snapshot's state");
    if (rc != PGPIPE_OK)
        return rc;
    int n = PQntuples(r);
    if (n > 0 && !(c->skips = pp_calloc((size_t)n, sizeof *c->skips)))
        rc = pp_err_nomem(&c->h.err);
    for (int i = 0; rc == PGPIPE_OK && i < n; i++) {
        if (!(c->skips[i].table = pp_strdup(PQgetvalue(r, i, 0)))) {
            rc = pp_err_nomem(&c->h.err);
            break;
        }
        pp_cdc_lsn_parse(PQgetvalue(r, i, 1), &c->skips[i].lsn);
        c->nskips = i + 1;
    }
    PQclear(r);
    return rc;
}

int pgpipe_cdc_open(pgpipe_cdc **out, const pgpipe_cdc_options *opt)
{
    if (!out)
        return PGPIPE_MISUSE;
    pgpipe_cdc *c = *out = pp_handle_new(sizeof *c);
    if (!c)
        return PGPIPE_NOMEM;
    pgpipe_cdc_options d;
    if (!opt) {
        pgpipe_cdc_options_init(&d);
        opt = &d;
    }
#ifndef PGPIPE_OMIT_THREADS
    c->single = opt->single_thread != 0;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->qmu, NULL);
    pthread_cond_init(&c->rcond, &ca);
    pthread_cond_init(&c->ccond, &ca);
    for (int i = 0; i < CDC_LANES_MAX; i++)
        pthread_cond_init(&c->lanes[i].cond, &ca);
    pthread_condattr_destroy(&ca);
#else
    c->single = 1;
#endif
    /* "" is not the default: a script's unset $SLOT must not stream (and
    ** later drop) the default slot of another pipeline */
    if ((opt->slot && !*opt->slot) || (opt->publication && !*opt->publication))
        return pp_err(&c->h.err, PGPIPE_MISUSE, "cdc: the %s name is empty; leave it out (NULL) "
                      "for pgpipe_cdc", opt->slot && !*opt->slot ? "slot" : "publication");
    const char *slot = opt->slot ? opt->slot : "pgpipe_cdc";
    const char *pub = opt->publication ? opt->publication : "pgpipe_cdc";
    if (!cdc_name_ok(slot) || !cdc_name_ok(pub))
        return pp_err(&c->h.err, PGPIPE_MISUSE,
                      "cdc: slot and publication names are 1 to 63 of a-z, 0-9 and _ "
                      "(got \"%s\", \"%s\")", slot, pub);
    c->source = pp_strdup(opt->source ? opt->source : "");
    c->target = pp_strdup(opt->target ? opt->target : "");
    c->slot = pp_strdup(slot);
    c->publication = pp_strdup(pub);
    if (!c->source || !c->target || !c->slot || !c->publication)
        return pp_err_nomem(&c->h.err);
    c->status_ms = opt->status_interval_ms > 0 ? opt->status_interval_ms : 1000;
    c->heartbeat_ms = opt->heartbeat_ms > 0 ? opt->heartbeat_ms : 0;
    c->nlanes = opt->writers <= 0 ? 1 : opt->writers > CDC_LANES_MAX ? CDC_LANES_MAX : opt->writers;
    for (int i = 0; i < CDC_LANES_MAX; i++) {
        c->lanes[i].c = c;
        c->lanes[i].idx = i;
    }
    c->nrun = 1;
    int rc;
    if ((rc = cdc_connect(c, &c->src, c->source, 0, "source")) != PGPIPE_OK ||
        (rc = cdc_check_source(c)) != PGPIPE_OK ||
        (rc = cdc_connect(c, &c->tgt, c->target, 0, "target")) != PGPIPE_OK)
        return rc;
    if (opt->install && (rc = pgpipe_schema_install(c->tgt, NULL, &c->h.err)) != PGPIPE_OK)
        return rc;
    if ((rc = cdc_publication(c, opt->tables, opt->create)) != PGPIPE_OK ||
        (rc = cdc_connect(c, &c->repl, c->source, 1, "source (replication)")) != PGPIPE_OK ||
        (rc = cdc_slot(c, opt->create, opt->snapshot)) != PGPIPE_OK ||
        (rc = cdc_snapshot(c)) != PGPIPE_OK ||
        (rc = cdc_toast_load(c)) != PGPIPE_OK)
        return rc;
    return PGPIPE_OK;
}

/* ---- the stream ------------------------------------------------------ */

/* The wall clock in PostgreSQL's terms (µs since 2000-01-01): the
** status message's send time, the walsender's reply_time.
** (pgpipe_now_us is monotonic: the walsender showed 1970.) */
static int64_t cdc_pg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((int64_t)ts.tv_sec - CDC_PG_EPOCH) * 1000000 + ts.tv_nsec / 1000;
}

/* The standby status: the flush position is the writer's ack, an LSN
** whose target transaction committed and reached the target's disk. */
static int cdc_send_status(pgpipe_cdc *c, int reply)
{
    char m[34];
    uint64_t ack = atomic_load(&c->st_ack);
    uint64_t written = atomic_load(&c->st_received);
    if (written < ack)
        written = ack;
    m[0] = 'r';
    pp_cdc_put64(m + 1, written);
    pp_cdc_put64(m + 9, ack);
    pp_cdc_put64(m + 17, ack);
    pp_cdc_put64(m + 25, (uint64_t)cdc_pg_now());
    m[33] = (char)reply;
    if (PQputCopyData(c->repl, m, sizeof m) != 1 || PQflush(c->repl) != 0)
        return pp_err_pq(&c->h.err, c->repl, NULL, "cdc: sending the standby status");
    atomic_store(&c->st_confirmed, ack);
    c->last_status_us = pgpipe_now_us();
    return PGPIPE_OK;
}

static void cdc_spool_free(cdc_spool *s)
{
    if (s->f)
        fclose(s->f);
    pp_free(s->subs);
    memset(s, 0, sizeof *s);
}

static cdc_spool *cdc_spool_find(pgpipe_cdc *c, uint32_t xid)
{
    for (int i = 0; i < c->nspools; i++)
        if (c->spools[i].xid == xid)
            return &c->spools[i];
    return NULL;
}

static void cdc_spool_drop(pgpipe_cdc *c, cdc_spool *s)
{
    if (c->cur == s)
        c->cur = NULL;
    cdc_spool_free(s);
    int i = (int)(s - c->spools);
    c->spools[i] = c->spools[--c->nspools];
    if (c->cur == &c->spools[c->nspools])
        c->cur = &c->spools[i];
}

static void cdc_group_abort(pgpipe_cdc *c, cdc_lane *L);
static void cdc_w_stop(pgpipe_cdc *c);

/* Forget everything in flight: after a failure the stream starts again
** from the applied LSN, and the server sends the relations again. The
** writer is stopped first (what it was handed and did not commit is given
** up: it was not confirmed). Groups committed but not yet known flushed
** are not confirmed now: a later group's flush confirms them. */
static void cdc_reset(pgpipe_cdc *c)
{
    cdc_w_stop(c);
    if (c->lanes[0].open) /* one thread */
        cdc_group_abort(c, &c->lanes[0]);
    c->grp_open = 0;
    c->copy.len = 0;
    if (c->repl)
        PQfinish(c->repl);
    c->repl = NULL;
    c->streaming = 0;
    pp_cdc_decoder_free(&c->dec);
    c->in_txn = 0;
    c->txn.len = 0;
    while (c->nspools)
        cdc_spool_drop(c, &c->spools[c->nspools - 1]);
    c->cur = NULL;
    c->npend = 0;
    c->ndacks = 0;
    c->nids = c->idpos = 0;
    c->queued_end = c->applied;
    cdc_toast_drop(c, 0, 0, 1); /* TOAST images of transactions not staged */
}

/* wal_sender_timeout as SHOW prints it ("60s", "500ms", "1min", "0"), in ms. */
static int cdc_parse_ms(const char *s)
{
    char *end = NULL;
    long v = strtol(s, &end, 10);
    if (!end || end == s || v <= 0)
        return 0;
    long mul = !strcmp(end, "ms") ? 1 : !strcmp(end, "s") || !*end ? 1000 : !strcmp(end, "min") ? 60000
             : !strcmp(end, "h") ? 3600000 : !strcmp(end, "d") ? 86400000 : 1000;
    return v > INT_MAX / mul ? INT_MAX : (int)(v * mul);
}

static int cdc_start(pgpipe_cdc *c)
{
    int rc;
    if (!c->repl && (rc = cdc_connect(c, &c->repl, c->source, 1, "source (replication)")) != PGPIPE_OK)
        return rc;
    /* the walsender's own timeout (a connection may set it): while the
    ** writer stalls the reader stops reading and must still reply in time */
    PGresult *tr = PQexec(c->repl, "SHOW wal_sender_timeout");
    c->wal_timeout_ms = PQresultStatus(tr) == PGRES_TUPLES_OK && PQntuples(tr) == 1
                            ? cdc_parse_ms(PQgetvalue(tr, 0, 0)) : 0;
    PQclear(tr);
    char q[512], lsn[32];
    pp_cdc_lsn_str(c->applied, lsn, sizeof lsn);
    snprintf(q, sizeof q,
             "START_REPLICATION SLOT \"%s\" LOGICAL %s (proto_version '2', "
             "publication_names '\"%s\"', streaming 'on', messages 'true')",
             c->slot, lsn, c->publication);
    /* a consumer that was killed keeps the slot active until its walsender
    ** notices: wait for that a while (SQLSTATE 55006, object in use) */
    for (int attempt = 0;; attempt++) {
        PGresult *r = PQexec(c->repl, q);
        if (PQresultStatus(r) == PGRES_COPY_BOTH) {
            PQclear(r);
            break;
        }
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        int busy = st && strcmp(st, "55006") == 0;
        int gone = st && strcmp(st, "42704") == 0;
        rc = pp_err_pq(&c->h.err, c->repl, r, "cdc: START_REPLICATION");
        PQclear(r);
        if (gone) {
            /* the slot went since the stream started (dropped; or the source
            ** failed over to a standby, which has no logical slots before
            ** PostgreSQL 17): a new slot would start after changes nobody
            ** staged, so this is the end, never a silent new start */
            pp_err(&c->h.err, PGPIPE_ERROR,
                   "cdc: slot \"%s\" is gone from the source (dropped, or the source failed "
                   "over to a standby that lacks it: PostgreSQL 16 and older keep logical slots "
                   "on the primary only) but the target staged changes from it up to %s; "
                   "changes since then may be missing: drop its state (.cdc drop) and start "
                   "again (--snapshot copies the tables' current rows)", c->slot, lsn);
            snprintf(c->h.err.sqlstate, sizeof c->h.err.sqlstate, "42704");
            return PGPIPE_ERROR;
        }
        if (!busy || attempt >= 100 || atomic_load(&c->stop))
            return rc;
        pgpipe_sleep_ms(100);
    }
    c->streaming = 1;
    c->queued_end = c->applied;
    c->last_activity_us = pgpipe_now_us();
    pp_logf(PGPIPE_LOG_INFO, "cdc", "streaming slot %s from %s", c->slot, lsn);
    return PGPIPE_OK;
}

/* A change of nsp.name committed at lsn is in that table's snapshot. */
static int cdc_skipped(pgpipe_cdc *c, const char *nsp, const char *name, uint64_t lsn)
{
    size_t nl = strlen(nsp);
    for (int i = 0; i < c->nskips; i++) {
        const char *t = c->skips[i].table;
        if (lsn < c->skips[i].lsn && !strncmp(t, nsp, nl) && t[nl] == '.' &&
            !strcmp(t + nl + 1, name))
            return 1;
    }
    return 0;
}

/* The same for a spooled record, by its event_type ("schema.table:op",
** COPY-escaped: compared as it is, a table needing escapes is not
** filtered and its early changes may appear twice). */
static int cdc_skipped_line(pgpipe_cdc *c, const char *rec, size_t n, uint64_t lsn)
{
    const char *tab = memchr(rec, '\t', n);
    if (!tab)
        return 0;
    const char *colon = tab;
    while (colon > rec && colon[-1] != ':')
        colon--;
    if (colon == rec)
        return 0;
    size_t len = (size_t)(colon - 1 - rec);
    for (int i = 0; i < c->nskips; i++)
        if (lsn < c->skips[i].lsn && strlen(c->skips[i].table) == len &&
            !memcmp(c->skips[i].table, rec, len))
            return 1;
    return 0;
}

/* ---- unchanged TOAST values: the last staged image of each row --------
** pgoutput does not send a value stored out of line (TOASTed) that an
** update left unchanged (kind 'u'). The change that wrote the value sent
** it in full: pgpipe.cdc_toast keeps, per row (its replica identity key,
** as in "old") and column, the value of the column's last staged write
** when that write may be stored out of line, written in the target
** transaction that stages the change; a 'u' is filled from it ("filled").
**
** Which writes: PostgreSQL moves values out of line only from a row over
** TOAST_TUPLE_THRESHOLD (about 2 kB stored, 8 kB pages), and never one of
** under 24 bytes stored. A row whose written values' text and TOAST
** pointers (24 bytes each) total CDC_TOAST_ROW or more keeps its written
** values of CDC_TOAST_VALUE bytes or more; in a table with kept values
** (ttabs), a smaller row's such values are forgotten. A row never big
** costs nothing; a table with kept values pays one statement per
** transaction for its changes. The text of most types is at least their
** stored size; a value stored larger than its text (arrays of small
** numbers) may go out of line from a row under the threshold: its 'u'
** then stays unchanged (or, if its text is under 24 bytes, may take the
** column's last big value: a very wide row only).
**
** A transaction's writes wait in memory until the target transaction of
** its group writes them (cdc_group_commit), in order, with
** the spool offset of their record (a rolled-back subtransaction takes its
** own away), at most CDC_TOAST_MEM bytes of values: beyond, the column is
** forgotten instead. A 'u' looks at the transaction's own writes first,
** and those of the committed transactions of the open group, newest
** first (two changes of one row in one transaction), then the table (one
** round trip on a connection of its own, tlook, as the group's COPY may be
** in progress on tgt; only for a change with a 'u'). An insert or a
** delete forgets the row first, a changed key moves the row's kept values
** to the new key, a truncate forgets the table. REPLICA IDENTITY FULL: the
** old row holds the value, nothing is kept; NOTHING or no key: nothing to
** key it by, the 'u' stays unchanged. */

#define CDC_TOAST_ROW   1800
#define CDC_TOAST_VALUE 24
#define CDC_TOAST_MEM   ((size_t)64 * 1024 * 1024)

static unsigned cdc_toast_hash(const char *table, const char *key)
{
    unsigned h = 2166136261u;
    for (const char *p = table; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0xFF) * 16777619u;
    for (const char *p = key ? key : ""; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static int cdc_toast_reindex(pgpipe_cdc *c, int need)
{
    if (need > c->nheads / 2 || !c->heads) {
        int n = c->nheads ? c->nheads : 64;
        while (need > n / 2)
            n *= 2;
        int *h = pp_realloc(c->heads, (size_t)n * sizeof *h);
        if (!h)
            return PGPIPE_NOMEM;
        c->heads = h;
        c->nheads = n;
    }
    for (int i = 0; i < c->nheads; i++)
        c->heads[i] = -1;
    for (int i = 0; i < c->nimgs; i++) {
        int *head = &c->heads[c->imgs[i].hash & (unsigned)(c->nheads - 1)];
        c->imgs[i].next = *head;
        *head = i;
    }
    return PGPIPE_OK;
}

static void cdc_img_free(pgpipe_cdc *c, cdc_img *e)
{
    c->img_mem -= e->nvals;
    pp_free(e->table);
    pp_free(e->key);
    pp_free(e->vals);
}

/* Take away images: which 0, those of the open transaction xid from spool
** offset off on (0: all of them); 1 every image; 2 those whose group the
** writer committed (then the target has them). */
static void cdc_toast_drop(pgpipe_cdc *c, uint32_t xid, long off, int which)
{
    int k = 0, gone = 0;
    uint64_t committed = which == 2 ? atomic_load(&c->w_seq) : 0;
    for (int i = 0; i < c->nimgs; i++) {
        cdc_img *e = &c->imgs[i];
        if (which == 1 || (which == 2 && e->done && e->grp && e->grp <= committed) ||
            (which == 0 && !e->done && e->xid == xid && e->off >= off)) {
            cdc_img_free(c, e);
            gone = 1;
        } else {
            c->imgs[k++] = *e;
        }
    }
    c->nimgs = k;
    if (gone)
        cdc_toast_reindex(c, 0); /* shrinking: cannot fail */
}

static int cdc_toast_add(pgpipe_cdc *c, uint32_t xid, char kind, long off, const char *table,
                         const char *key, const char *vals, size_t nvals)
{
    if (c->nimgs == c->capimgs) {
        int cap = c->capimgs ? c->capimgs * 2 : 16;
        cdc_img *n = pp_realloc(c->imgs, (size_t)cap * sizeof *n);
        if (!n)
            return PGPIPE_NOMEM;
        c->imgs = n;
        c->capimgs = cap;
    }
    cdc_img *e = &c->imgs[c->nimgs];
    memset(e, 0, sizeof *e);
    e->xid = xid;
    e->kind = kind;
    e->off = off;
    e->hash = cdc_toast_hash(table, key);
    e->table = pp_strdup(table);
    e->key = key ? pp_strdup(key) : NULL;
    e->vals = nvals ? pp_malloc(nvals) : NULL;
    if (!e->table || (key && !e->key) || (nvals && !e->vals)) {
        pp_free(e->table);
        pp_free(e->key);
        pp_free(e->vals);
        return PGPIPE_NOMEM;
    }
    if (nvals)
        memcpy(e->vals, vals, nvals);
    e->nvals = nvals;
    c->img_mem += nvals;
    c->nimgs++;
    if (c->nimgs > c->nheads / 2)
        return cdc_toast_reindex(c, c->nimgs);
    int *head = &c->heads[e->hash & (unsigned)(c->nheads - 1)];
    e->next = *head;
    *head = c->nimgs - 1;
    return PGPIPE_OK;
}

/* What a change of transaction xid sees: its own writes and those of
** transactions committed before it, not written to the target yet. */
static inline int cdc_img_seen(const cdc_img *e, uint32_t xid)
{
    return e->done || e->xid == xid;
}

/* The newest image xid sees for table and key (key NULL: the table's
** truncate), or -1. */
static int cdc_toast_find(const pgpipe_cdc *c, uint32_t xid, const char *table, const char *key)
{
    if (!c->nimgs)
        return -1;
    unsigned h = cdc_toast_hash(table, key);
    for (int i = c->heads[h & (unsigned)(c->nheads - 1)]; i >= 0; i = c->imgs[i].next) {
        const cdc_img *e = &c->imgs[i];
        if (e->hash == h && cdc_img_seen(e, xid) && !strcmp(e->table, table) &&
            (key ? e->key && !strcmp(e->key, key) : !e->key))
            return i;
    }
    return -1;
}

/* Does the target remember values of nsp.name? */
static int cdc_toast_known(const pgpipe_cdc *c, const char *nsp, const char *name)
{
    size_t nl = strlen(nsp);
    for (int i = 0; i < c->nttabs; i++) {
        const char *t = c->ttabs[i];
        if (!strncmp(t, nsp, nl) && t[nl] == '.' && !strcmp(t + nl + 1, name))
            return 1;
    }
    return 0;
}

static int cdc_toast_know(pgpipe_cdc *c, const char *table)
{
    for (int i = 0; i < c->nttabs; i++)
        if (!strcmp(c->ttabs[i], table))
            return PGPIPE_OK;
    if (c->nttabs == c->capttabs) {
        int cap = c->capttabs ? c->capttabs * 2 : 8;
        char **n = pp_realloc(c->ttabs, (size_t)cap * sizeof *n);
        if (!n)
            return PGPIPE_NOMEM;
        c->ttabs = n;
        c->capttabs = cap;
    }
    if (!(c->ttabs[c->nttabs] = pp_strdup(table)))
        return PGPIPE_NOMEM;
    c->nttabs++;
    return PGPIPE_OK;
}

/* The tables with remembered values of the slot (a skip scan of the key). */
static int cdc_toast_load(pgpipe_cdc *c)
{
    const char *p[1] = { c->slot };
    PGresult *r = NULL;
    int rc = pp_exec(c->tgt,
                     "WITH RECURSIVE t(n) AS (SELECT min(table_name) FROM pgpipe.cdc_toast "
                     "WHERE slot = $1 UNION ALL SELECT (SELECT min(table_name) FROM "
                     "pgpipe.cdc_toast WHERE slot = $1 AND table_name > t.n) FROM t "
                     "WHERE t.n IS NOT NULL) SELECT n FROM t WHERE n IS NOT NULL",
                     1, p, &r, &c->h.err, "cdc: reading the remembered TOAST values");
    for (int i = 0; rc == PGPIPE_OK && i < PQntuples(r); i++)
        if (cdc_toast_know(c, PQgetvalue(r, i, 0)) != PGPIPE_OK)
            rc = pp_err_nomem(&c->h.err);
    PQclear(r);
    return rc;
}

/* The row's key ({"col":value,..} of the replica identity, as in "old")
** into b; 0 when the tuple lacks a key column. */
static int cdc_toast_key(pp_buf *b, const pp_cdc_rel *r, const pp_cdc_tuple *t, int *rc)
{
    b->len = 0;
    for (int i = 0; i < t->n && i < r->ncols; i++)
        if (r->cols[i].key && (t->v[i].kind == 'u' || t->v[i].kind == 'n'))
            return 0;
    *rc = cdc_tuple(b, r, t, 1);
    if (*rc == PGPIPE_OK)
        *rc = pp_buf_putc(b, '\0');
    return *rc == PGPIPE_OK;
}

/* Insert the rows' values of ins (a JSON array) into the open target
** transaction of conn. */
static int cdc_toast_ins(PGconn *conn, const char *slot, const char *ins, pgpipe_error *err)
{
    const char *p[2] = { slot, ins };
    return pp_exec(conn, "INSERT INTO pgpipe.cdc_toast (slot, table_name, key, col, value) "
                         "SELECT $1, e->>0, e->>1, e->>2, e->>3 FROM "
                         "json_array_elements($2::json) e ON CONFLICT (slot, table_name, key, col) "
                         "DO UPDATE SET value = EXCLUDED.value", 2, p, NULL, err,
                   "cdc: remembering TOAST values");
}

/* The same for the values gathered in ins (a JSON array, open), on the
** target connection (the snapshot's, before any writer runs). */
static int cdc_toast_put(pgpipe_cdc *c, pp_buf *ins)
{
    if (!ins->len)
        return PGPIPE_OK;
    if (pp_buf_append(ins, "]", 2) != PGPIPE_OK)
        return pp_err_nomem(&c->h.err);
    int rc = cdc_toast_ins(c->tgt, c->slot, ins->data, &c->h.err);
    ins->len = 0;
    return rc;
}

/* One mention of an image's "col\0" 'S' "value\0" (set) or "col\0" 'X' "\0"
** (forgotten); returns the next. */
static const char *cdc_mention(const char *p, const char **col, char *flag, const char **val,
                               size_t *vl)
{
    *col = p;
    p += strlen(p) + 1;
    *flag = *p++;
    *val = p;
    *vl = strlen(p);
    return p + *vl + 1;
}

/* Fill the 'u' columns of c->tfill an image mentions; a forgotten one
** becomes 'U' (decided: stays unchanged). */
static void cdc_toast_apply(pgpipe_cdc *c, const pp_cdc_rel *r, const char *vals, size_t n)
{
    for (const char *p = vals, *lim = vals + n; p < lim;) {
        const char *col, *val;
        char flag;
        size_t vl;
        p = cdc_mention(p, &col, &flag, &val, &vl);
        for (int k = 0; k < c->tfill.n && k < r->ncols; k++)
            if (c->tfill.v[k].kind == 'u' && !strcmp(r->cols[k].name, col)) {
                c->tfill.v[k].kind = flag == 'S' ? 'f' : 'U';
                c->tfill.v[k].data = val;
                c->tfill.v[k].len = (uint32_t)vl;
            }
    }
}

static int cdc_mention_add(pp_buf *b, const char *col, const char *val, size_t vl)
{
    if (pp_buf_append(b, col, strlen(col) + 1) || pp_buf_putc(b, val ? 'S' : 'X') ||
        (val && pp_buf_append(b, val, vl)) || pp_buf_putc(b, '\0'))
        return PGPIPE_NOMEM;
    return PGPIPE_OK;
}

/* The change m of relation r in transaction xid (streamed: its record
** goes next into the spool s): fill its 'u' columns into *fm (then
** *em = fm) and keep what it wrote. Called by cdc_record before it writes
** the record. What a row's entry holds, per column: the value of its last
** write when that may be stored out of line; a column written otherwise
** in a table with remembered values is forgotten. */
static int cdc_toast_change(pgpipe_cdc *c, const pp_cdc_msg *m, const pp_cdc_rel *r, uint32_t xid,
                            cdc_spool *s, pp_cdc_msg *fm, const pp_cdc_msg **em)
{
    *em = m;
    if (c->tres) {
        PQclear(c->tres);
        c->tres = NULL;
    }
    /* images of groups the target committed: it has them now */
    if (c->nimgs && c->imgs[0].grp && c->imgs[0].grp <= atomic_load(&c->w_seq))
        cdc_toast_drop(c, 0, 0, 2);
    int rc = PGPIPE_OK;
    if (m->type == 'T') {
        if (!cdc_toast_known(c, r->nsp, r->name))
            return PGPIPE_OK;
        long off = s ? ftell(s->f) : 0;
        c->tname.len = 0;
        if (pp_buf_appendf(&c->tname, "%s.%s", r->nsp, r->name) != PGPIPE_OK ||
            cdc_toast_add(c, xid, 't', off, c->tname.data, NULL, NULL, 0) != PGPIPE_OK)
            return pp_err_nomem(&c->h.err);
        return PGPIPE_OK;
    }
    int keyed = 0;
    if (r->ident == 'd' || r->ident == 'i')
        for (int k = 0; k < r->ncols && !keyed; k++)
            keyed = r->cols[k].key;
    const pp_cdc_tuple *nt = m->newt;
    int nu = 0;
    size_t total = 0;
    for (int k = 0; nt && k < nt->n; k++) {
        if (nt->v[k].kind == 'u')
            nu++, total += CDC_TOAST_VALUE; /* in the row: its TOAST pointer */
        else if (nt->v[k].kind != 'n')
            total += nt->v[k].len;
    }
    /* the common case costs these two loops: a table with no remembered
    ** values, a row too small to have any out of line */
    int known = keyed && cdc_toast_known(c, r->nsp, r->name);
    if (!nu && (!keyed || (!known && total < CDC_TOAST_ROW)))
        return PGPIPE_OK;
    c->tname.len = 0;
    if (pp_buf_appendf(&c->tname, "%s.%s", r->nsp, r->name) != PGPIPE_OK)
        return pp_err_nomem(&c->h.err);
    const char *table = c->tname.data;
    long off = s ? ftell(s->f) : 0;
    int oldkey = 0;
    if (keyed && m->oldt && m->old_kind == 'K') {
        oldkey = cdc_toast_key(&c->tokey, r, m->oldt, &rc);
        if (rc != PGPIPE_OK)
            return pp_err_nomem(&c->h.err);
    }
    if (m->type == 'D') {
        if (oldkey && known && cdc_toast_add(c, xid, 'd', off, table, c->tokey.data, NULL, 0))
            return pp_err_nomem(&c->h.err);
        return PGPIPE_OK;
    }

    if (nu) {
        if (c->tfill.cap < nt->n) {
            pp_cdc_value *v = pp_realloc(c->tfill.v, (size_t)nt->n * sizeof *v);
            if (!v)
                return pp_err_nomem(&c->h.err);
            c->tfill.v = v;
            c->tfill.cap = nt->n;
        }
        c->tfill.n = nt->n;
        memcpy(c->tfill.v, nt->v, (size_t)nt->n * sizeof *nt->v);
        if (m->oldt && m->old_kind == 'O') {
            /* REPLICA IDENTITY FULL: the old row has the value in full */
            for (int k = 0; k < nt->n && k < m->oldt->n; k++)
                if (nt->v[k].kind == 'u' && m->oldt->v[k].kind == 't') {
                    c->tfill.v[k] = m->oldt->v[k];
                    c->tfill.v[k].kind = 'f';
                }
        } else if (keyed) {
            /* the row's last image: under its old key when the key changed;
            ** this transaction's own writes first, newest first */
            const char *key = NULL;
            if (oldkey)
                key = c->tokey.data;
            else if (cdc_toast_key(&c->tkey, r, nt, &rc))
                key = c->tkey.data;
            if (rc != PGPIPE_OK)
                return pp_err_nomem(&c->h.err);
            int t = key ? cdc_toast_find(c, xid, table, NULL) : -1, walk = key != NULL;
            int ask = key && t < 0 && known; /* a truncate: nothing older counts */
            unsigned h = key ? cdc_toast_hash(table, key) : 0;
            for (int i = key && c->nimgs ? c->heads[h & (unsigned)(c->nheads - 1)] : -1;
                 i > t && walk; i = c->imgs[i].next) {
                const cdc_img *e = &c->imgs[i];
                if (e->hash != h || !cdc_img_seen(e, xid) || !e->key || strcmp(e->table, table) ||
                    strcmp(e->key, key))
                    continue;
                if (e->kind == 'd')
                    walk = ask = 0; /* forgotten: nothing older counts */
                else
                    cdc_toast_apply(c, r, e->vals, e->nvals);
            }
            int left = 0;
            for (int k = 0; k < c->tfill.n; k++)
                left += c->tfill.v[k].kind == 'u';
            if (ask && left && c->tlook && PQstatus(c->tlook) != CONNECTION_OK) {
                PQfinish(c->tlook);
                c->tlook = NULL;
            }
            if (ask && left && !c->tlook &&
                (rc = cdc_connect(c, &c->tlook, c->target, 0, "target")) != PGPIPE_OK)
                return rc;
            if (ask && left) {
                /* what committed: the open group's writes are still in memory */
                const char *p[3] = { c->slot, table, key };
                rc = pp_exec(c->tlook, "SELECT col, value FROM pgpipe.cdc_toast WHERE slot = $1 "
                                     "AND table_name = $2 AND key = $3", 3, p, &c->tres,
                             &c->h.err, "cdc: reading a row's unchanged TOAST values");
                if (rc != PGPIPE_OK)
                    return rc;
                for (int i = 0; i < PQntuples(c->tres); i++) {
                    const char *col = PQgetvalue(c->tres, i, 0);
                    for (int k = 0; k < c->tfill.n && k < r->ncols; k++)
                        if (c->tfill.v[k].kind == 'u' && !strcmp(r->cols[k].name, col)) {
                            c->tfill.v[k].kind = 'f';
                            c->tfill.v[k].data = PQgetvalue(c->tres, i, 1);
                            c->tfill.v[k].len = (uint32_t)PQgetlength(c->tres, i, 1);
                        }
                }
            }
            for (int k = 0; k < c->tfill.n; k++)
                if (c->tfill.v[k].kind == 'U')
                    c->tfill.v[k].kind = 'u';
        }
        *fm = *m;
        fm->newt = &c->tfill;
        *em = fm;
        nt = &c->tfill;
    }
    if (!keyed || (m->oldt && m->old_kind == 'O'))
        return PGPIPE_OK;

    /* what the change wrote: a value that may be out of line is kept, one
    ** written otherwise forgotten (a table with none kept: nothing to
    ** forget); an unchanged one stays, or moves with a changed key */
    int newkey = cdc_toast_key(&c->tkey, r, nt, &rc);
    if (rc != PGPIPE_OK)
        return pp_err_nomem(&c->h.err);
    int moved = oldkey && (!newkey || strcmp(c->tokey.data, c->tkey.data) != 0);
    if ((moved || (m->type == 'I' && newkey)) && known &&
        cdc_toast_add(c, xid, 'd', off, table, moved ? c->tokey.data : c->tkey.data, NULL, 0))
        return pp_err_nomem(&c->h.err);
    if (!newkey)
        return PGPIPE_OK;
    int big = total >= CDC_TOAST_ROW, kept = 0;
    c->tvals.len = 0;
    for (int k = 0; k < nt->n && k < r->ncols; k++) {
        const pp_cdc_value *v = &nt->v[k];
        const char *col = r->cols[k].name;
        if (v->kind == 'f' && moved)
            rc = cdc_mention_add(&c->tvals, col, v->data, v->len);
        else if (v->kind != 't' || v->len < CDC_TOAST_VALUE)
            continue;
        else if (big && !memchr(v->data, '\0', v->len) &&
                 c->img_mem + c->tvals.len + v->len <= CDC_TOAST_MEM)
            rc = cdc_mention_add(&c->tvals, col, v->data, v->len), kept = 1;
        else if (known || kept)
            rc = cdc_mention_add(&c->tvals, col, NULL, 0);
        if (rc != PGPIPE_OK)
            return pp_err_nomem(&c->h.err);
    }
    if (!c->tvals.len)
        return PGPIPE_OK;
    if (cdc_toast_add(c, xid, 'i', off, table, c->tkey.data, c->tvals.data, c->tvals.len) ||
        cdc_toast_know(c, table))
        return pp_err_nomem(&c->h.err);
    return PGPIPE_OK;
}

/* Add [f0,f1,..] (NULL: null) to the JSON array b. */
static int cdc_json_row(pp_buf *b, const char *const *f, const size_t *n, int nf)
{
    int rc = pp_buf_putc(b, b->len ? ',' : '[');
    for (int k = 0; k < nf && rc == PGPIPE_OK; k++) {
        rc = pp_buf_putc(b, k ? ',' : '[');
        if (rc == PGPIPE_OK)
            rc = f[k] ? pp_json_str(b, f[k], n ? n[k] : strlen(f[k]), 0) : pp_buf_append(b, "null", 4);
    }
    return rc == PGPIPE_OK ? pp_buf_putc(b, ']') : rc;
}

/* Transaction xid committed on the source at commit_lsn: its writes are
** to be written (cdc_toast_build), and seen by later changes until then. */
static void cdc_toast_commit(pgpipe_cdc *c, uint32_t xid, uint64_t commit_lsn)
{
    for (int i = 0; i < c->nimgs; i++)
        if (!c->imgs[i].done && c->imgs[i].xid == xid) {
            c->imgs[i].done = 1;
            c->imgs[i].commit_lsn = commit_lsn;
        }
}

/* What the transactions of group seq wrote (committed, cdc_toast_commit,
** and in no group yet), as the statements' JSON arrays for the writer
** (cdc_toast_exec), which runs them in the target transaction of the group
** (not inside a COPY): per row and column the newest write decides; a
** forgotten row goes, then its newer writes; a truncate forgets the table.
** The images stay, seen by later changes, until the writer committed the
** group (cdc_toast_drop 2): until then the target does not have them. */
static int cdc_toast_build(pgpipe_cdc *c, uint64_t seq, pp_buf *tru_out, pp_buf *del_out,
                           pp_buf *ins_out)
{
    int rc = PGPIPE_OK, n = 0;
    for (int i = 0; i < c->nimgs; i++)
        if (c->imgs[i].done && !c->imgs[i].grp) {
            c->imgs[i].grp = seq;
            n = 1;
        }
    if (!n)
        return PGPIPE_OK;
    pp_buf del = { 0, 0, 0 }, ins = { 0, 0, 0 }, tru = { 0, 0, 0 };
    const char **truncated = pp_calloc((size_t)c->nimgs + 1, sizeof *truncated);
    int ntrunc = 0;
    if (!truncated)
        rc = PGPIPE_NOMEM;
    for (int i = c->nimgs - 1; rc == PGPIPE_OK && i >= 0; i--) {
        const cdc_img *e = &c->imgs[i];
        if (!e->done || e->grp != seq)
            continue;
        /* a table whose snapshot is newer than this commit has it already */
        int skip = 0;
        for (int k = 0; k < c->nskips && !skip; k++)
            skip = e->commit_lsn < c->skips[k].lsn && !strcmp(c->skips[k].table, e->table);
        for (int k = 0; k < ntrunc && !skip; k++)
            skip = !strcmp(truncated[k], e->table);
        if (skip)
            continue;
        if (e->kind == 't') {
            truncated[ntrunc++] = e->table;
            rc = pp_buf_putc(&tru, tru.len ? ',' : '[');
            if (rc == PGPIPE_OK)
                rc = pp_json_str(&tru, e->table, strlen(e->table), 0);
            continue;
        }
        /* the newer writes of the same row */
        int gone = 0;
        for (int k = c->heads[e->hash & (unsigned)(c->nheads - 1)]; k > i && !gone;
             k = c->imgs[k].next) {
            const cdc_img *o = &c->imgs[k];
            gone = o->kind == 'd' && o->done && o->grp == seq && o->hash == e->hash &&
                   !strcmp(o->table, e->table) && !strcmp(o->key, e->key);
        }
        if (gone)
            continue;
        if (e->kind == 'd') {
            const char *f[3] = { e->table, e->key, NULL };
            rc = cdc_json_row(&del, f, NULL, 3);
            continue;
        }
        for (const char *p = e->vals, *lim = e->vals + e->nvals; rc == PGPIPE_OK && p < lim;) {
            const char *col, *val;
            char flag;
            size_t vl;
            p = cdc_mention(p, &col, &flag, &val, &vl);
            int newer = 0;
            for (int k = c->heads[e->hash & (unsigned)(c->nheads - 1)]; k > i && !newer;
                 k = c->imgs[k].next) {
                const cdc_img *o = &c->imgs[k];
                if (o->kind != 'i' || !o->done || o->grp != seq || o->hash != e->hash ||
                    strcmp(o->table, e->table) || strcmp(o->key, e->key))
                    continue;
                for (const char *q = o->vals, *ql = o->vals + o->nvals; q < ql && !newer;) {
                    const char *c2, *v2;
                    char f2;
                    size_t l2;
                    q = cdc_mention(q, &c2, &f2, &v2, &l2);
                    newer = !strcmp(c2, col);
                }
            }
            if (newer)
                continue;
            const char *f[4] = { e->table, e->key, col, val };
            size_t fl[4] = { strlen(e->table), strlen(e->key), strlen(col), vl };
            rc = flag == 'S' ? cdc_json_row(&ins, f, fl, 4) : cdc_json_row(&del, f, fl, 3);
        }
    }
    pp_free(truncated);
    if (rc == PGPIPE_OK && tru.len)
        rc = pp_buf_append(&tru, "]", 2);
    if (rc == PGPIPE_OK && del.len)
        rc = pp_buf_append(&del, "]", 2);
    if (rc == PGPIPE_OK && ins.len)
        rc = pp_buf_append(&ins, "]", 2);
    if (rc != PGPIPE_OK) {
        pp_buf_free(&tru);
        pp_buf_free(&del);
        pp_buf_free(&ins);
        return pp_err_nomem(&c->h.err);
    }
    *tru_out = tru;
    *del_out = del;
    *ins_out = ins;
    return PGPIPE_OK;
}

/* A lane of the writer: the statements cdc_toast_build made, on its
** connection conn in the group's transaction. */
static int cdc_toast_exec(pgpipe_cdc *c, PGconn *conn, const cdc_item *it, pgpipe_error *err)
{
    int rc = PGPIPE_OK;
    if (it->tru.len) {
        const char *p[2] = { c->slot, it->tru.data };
        rc = pp_exec(conn, "DELETE FROM pgpipe.cdc_toast WHERE slot = $1 AND table_name IN "
                             "(SELECT json_array_elements_text($2::json))", 2, p, NULL, err,
                     "cdc: forgetting a truncated table's TOAST values");
    }
    if (rc == PGPIPE_OK && it->del.len) {
        /* [table, key, column or null for the whole row] */
        const char *p[2] = { c->slot, it->del.data };
        rc = pp_exec(conn, "DELETE FROM pgpipe.cdc_toast t USING (SELECT e->>0 tb, e->>1 k, "
                             "e->>2 col FROM json_array_elements($2::json) e) u WHERE t.slot = $1 "
                             "AND t.table_name = u.tb AND t.key = u.k AND (u.col IS NULL OR "
                             "t.col = u.col)", 2, p, NULL, err,
                     "cdc: forgetting rows' TOAST values");
    }
    if (rc == PGPIPE_OK && it->ins.len)
        rc = cdc_toast_ins(conn, c->slot, it->ins.data, err);
    return rc;
}

/* The snapshot's rows are images too: under the same snapshot (ss), the
** values of the rows of one table that may be stored out of line (stored
** over CDC_TOAST_ROW bytes: pg_column_size reads no TOAST) go into
** pgpipe.cdc_toast in the target transaction that stages the table.
** Called by cdc_snapshot_table after the COPY. */
static int cdc_toast_snapshot(pgpipe_cdc *c, PGconn *ss, const char *name, const char *quoted)
{
    const char *p[1] = { quoted };
    PGresult *cat = NULL;
    int rc = pp_exec(ss,
                     "SELECT quote_ident(a.attname), a.attlen, a.attnum = ANY (i.indkey::int2[]), "
                     "c.relreplident FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
                     "LEFT JOIN pg_index i ON i.indrelid = c.oid AND ((c.relreplident = 'd' AND "
                     "i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)) "
                     "WHERE c.oid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped "
                     "ORDER BY a.attnum", 1, p, &cat, &c->h.err,
                     "cdc: the snapshot table's columns");
    if (rc != PGPIPE_OK)
        return rc;
    int n = PQntuples(cat), keys = 0, wide = 0;
    long fixed = 0;
    pp_buf q = { 0, 0, 0 }, cond = { 0, 0, 0 };
    for (int i = 0; i < n; i++) {
        int len = atoi(PQgetvalue(cat, i, 1));
        keys += !strcmp(PQgetvalue(cat, i, 2), "t");
        if (len > 0) {
            fixed += len;
        } else {
            wide++;
            rc |= pp_buf_appendf(&cond, "%scoalesce(pg_column_size(%s), 0)", cond.len ? " + " : "",
                                 PQgetvalue(cat, i, 0));
        }
        rc |= pp_buf_appendf(&q, "%s%s", i ? ", " : "SELECT ", PQgetvalue(cat, i, 0));
    }
    const char *ident = n ? PQgetvalue(cat, 0, 3) : "n";
    if (!keys || !wide || (ident[0] != 'd' && ident[0] != 'i')) {
        /* FULL: the old row has the values; NOTHING, no key: no image */
        PQclear(cat);
        pp_buf_free(&q);
        pp_buf_free(&cond);
        return PGPIPE_OK;
    }
    rc |= pp_buf_appendf(&q, " FROM ONLY %s WHERE %s >= %ld", quoted, cond.data,
                         (long)CDC_TOAST_ROW - fixed);
    rc |= pp_buf_putc(&q, '\0');
    pp_buf_free(&cond);
    if (rc != PGPIPE_OK) {
        PQclear(cat);
        pp_buf_free(&q);
        return pp_err_nomem(&c->h.err);
    }
    if (!PQsendQuery(ss, q.data) || !PQsetSingleRowMode(ss))
        rc = pp_err_pq(&c->h.err, ss, NULL, "cdc: reading the snapshot's TOAST values");
    pp_buf_free(&q);
    pp_cdc_rel rel;
    memset(&rel, 0, sizeof rel);
    pp_cdc_tuple tup = { 0, 0, NULL };
    pp_buf ins = { 0, 0, 0 };
    long long rows = 0;
    if (rc == PGPIPE_OK && (!(rel.cols = pp_calloc((size_t)n, sizeof *rel.cols)) ||
                            !(tup.v = pp_calloc((size_t)n, sizeof *tup.v))))
        rc = pp_err_nomem(&c->h.err);
    rel.ncols = tup.n = tup.cap = n;
    PGresult *r;
    while (rc == PGPIPE_OK && (r = PQgetResult(ss)) != NULL) {
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            PQclear(r);
            continue;
        }
        if (PQresultStatus(r) != PGRES_SINGLE_TUPLE) {
            rc = pp_err_pq(&c->h.err, ss, r, "cdc: reading the snapshot's TOAST values");
            PQclear(r);
            break;
        }
        for (int i = 0; i < n; i++) {
            rel.cols[i].name = PQfname(r, i);
            rel.cols[i].type = PQftype(r, i);
            rel.cols[i].key = !strcmp(PQgetvalue(cat, i, 2), "t");
            tup.v[i].kind = PQgetisnull(r, 0, i) ? 'n' : 't';
            tup.v[i].data = PQgetvalue(r, 0, i);
            tup.v[i].len = (uint32_t)PQgetlength(r, 0, i);
        }
        if (cdc_toast_key(&c->tkey, &rel, &tup, &rc)) {
            for (int i = 0; rc == PGPIPE_OK && i < n; i++) {
                if (tup.v[i].kind != 't' || tup.v[i].len < CDC_TOAST_VALUE)
                    continue;
                const char *f[4] = { name, c->tkey.data, rel.cols[i].name, tup.v[i].data };
                rc = pp_buf_putc(&ins, ins.len ? ',' : '[');
                for (int k = 0; k < 4 && rc == PGPIPE_OK; k++) {
                    rc = pp_buf_putc(&ins, k ? ',' : '[');
                    if (rc == PGPIPE_OK)
                        rc = pp_json_str(&ins, f[k], k == 3 ? tup.v[i].len : strlen(f[k]), 0);
                }
                if (rc == PGPIPE_OK)
                    rc = pp_buf_putc(&ins, ']');
            }
            rows++;
        }
        PQclear(r);
        if (rc != PGPIPE_OK)
            rc = pp_err_nomem(&c->h.err);
        if (rc == PGPIPE_OK && ins.len >= 8 * 1024 * 1024)
            rc = cdc_toast_put(c, &ins);
    }
    if (rc != PGPIPE_OK)
        while ((r = PQgetResult(ss)) != NULL)
            PQclear(r);
    if (rc == PGPIPE_OK)
        rc = cdc_toast_put(c, &ins);
    if (rc == PGPIPE_OK && rows && cdc_toast_know(c, name) != PGPIPE_OK)
        rc = pp_err_nomem(&c->h.err);
    pp_buf_free(&ins);
    pp_free(rel.cols);
    pp_free(tup.v);
    PQclear(cat);
    return rc;
}

static void cdc_toast_free(pgpipe_cdc *c)
{
    cdc_toast_drop(c, 0, 0, 1);
    pp_free(c->imgs);
    pp_free(c->heads);
    for (int i = 0; i < c->nttabs; i++)
        pp_free(c->ttabs[i]);
    pp_free(c->ttabs);
    pp_free(c->tfill.v);
    PQclear(c->tres);
    if (c->tlook)
        PQfinish(c->tlook);
    pp_buf_free(&c->tname);
    pp_buf_free(&c->tkey);
    pp_buf_free(&c->tokey);
    pp_buf_free(&c->tvals);
}

/* One record of the open transaction (or of the streamed one). */
static int cdc_record(pgpipe_cdc *c, const pp_cdc_msg *m, int i)
{
    c->js.len = 0;
    c->line.len = 0;
    cdc_spool *s = NULL;
    uint32_t xid = c->xid;
    if (c->dec.in_stream) {
        if (!(s = c->cur))
            return pp_err(&c->h.err, PGPIPE_PARSE, "cdc: a streamed change outside a stream block");
        xid = s->xid;
    } else if (!c->in_txn) {
        return pp_err(&c->h.err, PGPIPE_PARSE, "pgoutput: a change outside a transaction");
    }
    const pp_cdc_rel *r = m->type == 'T' ? pp_cdc_rel_find(&c->dec, m->relids[i]) : m->rel;
    if (!r)
        return pp_err(&c->h.err, PGPIPE_PARSE,
                      "pgoutput: TRUNCATE of relation %u, not described by a Relation message",
                      m->relids[i]);
    if (c->self && cdc_own_schema(r->nsp))
        return PGPIPE_OK;
    const char *op = m->type == 'I' ? "insert" : m->type == 'U' ? "update"
                   : m->type == 'D' ? "delete" : "truncate";
    if (!s && c->nskips && cdc_skipped(c, r->nsp, r->name, c->final_lsn))
        return PGPIPE_OK;
    /* unchanged TOAST values: filled from the row's last image (cdc_toast_change) */
    pp_cdc_msg fm;
    const pp_cdc_msg *em = m;
    int rc = cdc_toast_change(c, m, r, xid, s, &fm, &em);
    if (rc != PGPIPE_OK)
        return rc;
    rc = pp_buf_appendf(&c->js, "%s.%s:%s", r->nsp, r->name, op);
    if (rc == PGPIPE_OK)
        rc = pp_copy_escape(&c->line, c->js.data, c->js.len);
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(&c->line, '\t');
    c->js.len = 0;
    if (rc == PGPIPE_OK)
        rc = pp_cdc_event_json(&c->js, &c->dec, em, i, xid);
    if (rc == PGPIPE_OK)
        rc = pp_copy_escape(&c->line, c->js.data, c->js.len);
    if (rc == PGPIPE_OK)
        rc = pp_buf_putc(&c->line, '\n');
    if (rc != PGPIPE_OK)
        return pp_err_nomem(&c->h.err);
    if (!s)
        return pp_buf_append(&c->txn, c->line.data, c->line.len) == PGPIPE_OK
                   ? PGPIPE_OK : pp_err_nomem(&c->h.err);
    /* where this subtransaction's records start, for its abort */
    int known = 0;
    for (int k = 0; k < s->nsubs && !known; k++)
        known = s->subs[k].xid == m->xid;
    if (!known) {
        if (s->nsubs == s->capsubs) {
            int cap = s->capsubs ? s->capsubs * 2 : 8;
            cdc_sub *n = pp_realloc(s->subs, (size_t)cap * sizeof *n);
            if (!n)
                return pp_err_nomem(&c->h.err);
            s->subs = n;
            s->capsubs = cap;
        }
        s->subs[s->nsubs].xid = m->xid;
        s->subs[s->nsubs++].off = ftell(s->f);
    }
    if (fwrite(c->line.data, 1, c->line.len, s->f) != c->line.len)
        return pp_err(&c->h.err, PGPIPE_IO, "cdc: writing a streamed transaction's spool file: %s",
                      strerror(errno));
    return PGPIPE_OK;
}

/* ---- the writer: groups into the target -------------------------------
** The reader (the thread running pgpipe_cdc_run: it reads the stream,
** answers the walsender, decodes, makes the COPY rows) hands the writer
** what to do in order (cdc_item); the writer COPYs a group's rows into
** staging.raw_events, stores its last LSN in pgpipe.cdc_slots and commits.
** So the source is read while the target works on the last group, and the
** target is fed while the source decodes the next.
**
** The writer has lanes (options.writers, 1 by default): a thread each, with
** a target connection of its own (lane 0's is the handle's tgt) and a
** queue of at most CDC_QUEUE_BYTES / lanes; group n goes to lane n % lanes.
** So while one target backend parses and indexes a group's rows, the next
** group's rows go to another backend, and the target uses a second core.
** The commits stay in the order of the groups: a lane sends its group's
** LSN update and COMMIT only after the group before it committed (w_done;
** the slot row's lock would hold it back too, but a rollback of the group
** before must not let it through), and its unchanged-TOAST writes only
** then as well (two groups' writes of one row in order). So what the
** target holds is always a prefix of the groups, and its applied LSN says
** which: a crash of any side at any point loses nothing and stages nothing
** twice. The events stay in the stream's order in staging: by id (drawn
** by the reader, cdc_next_id) and by received_at, id (a lane begins its
** group's transaction, whose start time is received_at, only after the
** group before began). The source is told only LSNs whose groups (and all before them)
** committed and were found flushed (st_ack); a failure of any lane gives up
** every group not committed, as with one.
**
** A target slower than the source fills a lane's queue, and the reader
** then stops reading the stream (the walsender waits on its socket) but
** still sends its standby status in time, so the walsender does not time
** out. With PGPIPE_OMIT_THREADS or options.single_thread there is one lane
** and the reader calls its functions itself (each waits for the other). */

static void cdc_item_free(cdc_item *it)
{
    if (!it)
        return;
    pp_buf_free(&it->data);
    pp_buf_free(&it->tru);
    pp_buf_free(&it->del);
    pp_buf_free(&it->ins);
    pp_free(it);
}

/* A lane failed (its err says why): the writer's first failure is the
** run's; every lane and the reader hear of it. Under qmu. */
static void cdc_lane_fail(pgpipe_cdc *c, cdc_lane *L)
{
    if (c->single || c->werr.code == PGPIPE_OK)
        c->werr = L->err;
    if (c->werr.code == PGPIPE_OK)
        c->werr.code = PGPIPE_DB;
#ifndef PGPIPE_OMIT_THREADS
    atomic_store(&c->w_failed, 1);
    pthread_cond_broadcast(&c->rcond);
    pthread_cond_broadcast(&c->ccond);
    for (int i = 0; i < c->nrun; i++)
        pthread_cond_broadcast(&c->lanes[i].cond);
#endif
}

/* The target's WAL is flushed to flushed: the groups committed before it
** are durable there and may be confirmed to the source. Under qmu. */
static void cdc_flushed(pgpipe_cdc *c, uint64_t flushed)
{
    int k = 0;
    while (k < c->npend && c->pend[k].local <= flushed) {
        if (c->pend[k].remote > c->ack)
            c->ack = c->pend[k].remote;
        k++;
    }
    if (k) {
        memmove(c->pend, c->pend + k, (size_t)(c->npend - k) * sizeof *c->pend);
        c->npend -= k;
    }
    atomic_store(&c->st_ack, c->ack);
    c->last_flush_us = pgpipe_now_us();
}

/* Lane L asks the target how far its WAL is flushed (waiting for it:
** durable makes it so first, with one synchronous commit, which flushes
** all the WAL before it). */
static int cdc_flush_check(pgpipe_cdc *c, cdc_lane *L, int durable)
{
    int rc = PGPIPE_OK;
    pgpipe_error *err = &L->err;
    if (durable) {
        const char *p1[1] = { c->slot };
        rc = pp_exec(L->conn, PP_BEGIN "; SET LOCAL synchronous_commit = on", 0, NULL, NULL, err,
                     "cdc: flushing the target's WAL");
        if (rc == PGPIPE_OK)
            rc = pp_exec(L->conn, "UPDATE pgpipe.cdc_slots SET updated_at = now() WHERE slot = $1",
                         1, p1, NULL, err, "cdc: flushing the target's WAL");
        if (rc == PGPIPE_OK)
            rc = pp_exec(L->conn, "COMMIT", 0, NULL, NULL, err, "cdc: flushing the target's WAL");
        if (rc != PGPIPE_OK) {
            pp_rollback_open(L->conn);
            return rc;
        }
    }
    PGresult *r = NULL;
    uint64_t flushed = 0;
    rc = pp_exec(L->conn, "SELECT pg_current_wal_flush_lsn()::text", 0, NULL, &r, err,
                 "cdc: reading the target's WAL position");
    if (rc == PGPIPE_OK && !pp_cdc_lsn_parse(PQgetvalue(r, 0, 0), &flushed))
        rc = pp_err(err, PGPIPE_DB, "cdc: the target's WAL position is not an LSN");
    PQclear(r);
    if (rc == PGPIPE_OK) {
        pp_mutex_lock(&c->qmu);
        cdc_flushed(c, flushed);
        pp_mutex_unlock(&c->qmu);
    }
    return rc;
}

/* Set the target session up after each connection (before the writer
** runs): commits that do not wait for the WAL flush, as PostgreSQL's own
** subscriptions commit (the source is told only what cdc_flushed found
** durable), unless synchronous standbys are configured (a failover must
** not lose what was confirmed); and the applied LSN read again, as a crash
** of the target loses the commits it had not flushed. */
static int cdc_target_session(pgpipe_cdc *c)
{
    PGresult *r = NULL;
    const char *p1[1] = { c->slot };
    int rc = pp_exec(c->tgt, "SELECT current_setting('synchronous_standby_names') = '', "
                             "(SELECT applied_lsn::text FROM pgpipe.cdc_slots WHERE slot = $1)",
                     1, p1, &r, &c->h.err, "cdc: setting the target session up");
    if (rc != PGPIPE_OK)
        return rc;
    uint64_t applied = 0;
    int async = PQgetvalue(r, 0, 0)[0] == 't';
    if (PQgetisnull(r, 0, 1) || !pp_cdc_lsn_parse(PQgetvalue(r, 0, 1), &applied))
        rc = pp_err(&c->h.err, PGPIPE_ERROR, "cdc: slot \"%s\" is gone from pgpipe.cdc_slots on the "
                    "target", c->slot);
    PQclear(r);
    if (rc != PGPIPE_OK)
        return rc;
    if (applied != c->applied) {
        pp_logf(PGPIPE_LOG_WARN, "cdc", "slot %s: the target's applied LSN went back; resuming "
                "from there", c->slot);
        c->applied = applied;
        atomic_store(&c->st_applied, applied);
    }
    if (c->ack > c->applied)
        c->ack = c->applied;
    atomic_store(&c->st_ack, c->ack);
    c->queued_end = c->applied;
    c->async_commit = async;
    cdc_bin_check(c);
    c->tgt_ready = 1;
    /* the other lanes' sessions follow this one's */
    for (int i = 1; i < CDC_LANES_MAX; i++)
        c->lanes[i].ready = 0;
    return PGPIPE_OK;
}

/* Lane L gives up its open group: ends its COPY (a ROLLBACK cannot be
** sent while one is in progress) and rolls the target transaction back. */
static void cdc_group_abort(pgpipe_cdc *c, cdc_lane *L)
{
    (void)c;
    if (L->conn && PQstatus(L->conn) == CONNECTION_OK) {
        PGresult *r = PQgetResult(L->conn);
        int copying = r && PQresultStatus(r) == PGRES_COPY_IN;
        PQclear(r);
        if (copying && PQputCopyEnd(L->conn, "cdc: the group was given up") == 1)
            while ((r = PQgetResult(L->conn)) != NULL)
                PQclear(r);
        else
            while (r && (r = PQgetResult(L->conn)) != NULL)
                PQclear(r);
        pp_rollback_open(L->conn);
    }
    L->open = 0;
}

/* Lane L waits until the group before seq began (its transaction's start
** time is received_at: the groups' events stay in order by it) or, done 1,
** committed (its turn to commit); an error when the writer failed or quits
** meanwhile (that group is given up). */
static int cdc_w_wait(pgpipe_cdc *c, cdc_lane *L, uint64_t seq, int done)
{
    int ok = 1;
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_lock(&c->qmu);
    while ((done ? c->w_done : c->w_started) + 1 < seq && !c->w_quit &&
           !atomic_load(&c->w_failed)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&c->ccond, &c->qmu, &ts);
    }
    ok = (done ? c->w_done : c->w_started) + 1 >= seq;
    pthread_mutex_unlock(&c->qmu);
#else
    (void)c;
    (void)seq;
    (void)done;
#endif
    return ok ? PGPIPE_OK
              : pp_err(&L->err, PGPIPE_ERROR, "cdc: a group before this one was not staged");
}

/* Lane L: group seq's target transaction and its COPY, one round trip,
** after the group before began. With more than one lane the rows carry
** their ids (cdc_copy_record). */
static int cdc_w_open(pgpipe_cdc *c, cdc_lane *L, uint64_t seq, int binary)
{
    int rc = cdc_w_wait(c, L, seq, 0);
    /* the commit that need not wait for the WAL flush is the transaction's
    ** own (SET LOCAL), never the session's: behind a transaction-mode
    ** pooler a session setting would stay on the server connection and make
    ** other clients' commits asynchronous */
    static const char *const open_sql[2][2][2] = {
        { { PP_BEGIN "; COPY staging.raw_events (source, event_type, payload) FROM STDIN",
            PP_BEGIN "; SET LOCAL synchronous_commit = off; "
            "COPY staging.raw_events (source, event_type, payload) FROM STDIN" },
          { PP_BEGIN "; COPY staging.raw_events (id, source, event_type, payload) FROM STDIN",
            PP_BEGIN "; SET LOCAL synchronous_commit = off; "
            "COPY staging.raw_events (id, source, event_type, payload) FROM STDIN" } },
        { { PP_BEGIN "; COPY staging.raw_events (source, event_type, payload) FROM STDIN "
            "(FORMAT binary)",
            PP_BEGIN "; SET LOCAL synchronous_commit = off; "
            "COPY staging.raw_events (source, event_type, payload) FROM STDIN (FORMAT binary)" },
          { PP_BEGIN "; COPY staging.raw_events (id, source, event_type, payload) FROM STDIN "
            "(FORMAT binary)",
            PP_BEGIN "; SET LOCAL synchronous_commit = off; "
            "COPY staging.raw_events (id, source, event_type, payload) FROM STDIN "
            "(FORMAT binary)" } },
    };
    if (rc == PGPIPE_OK)
        rc = pp_copy_in_start(L->conn, open_sql[binary != 0][c->nrun > 1][c->async_commit != 0],
                              &L->err, "cdc: COPY into staging");
    /* a binary COPY's rows follow its header (sent after each start) */
    if (rc == PGPIPE_OK && binary &&
        PQputCopyData(L->conn, PP_COPY_BIN_HEADER, PP_COPY_BIN_HEADER_LEN) != 1)
        rc = pp_err_pq(&L->err, L->conn, NULL, "cdc: COPY into staging");
    if (rc == PGPIPE_OK && binary)
        atomic_fetch_add(&c->n_bin_groups, 1);
    if (rc != PGPIPE_OK) {
        cdc_group_abort(c, L);
        return rc;
    }
    L->open = 1;
    pp_mutex_lock(&c->qmu);
    if (seq > c->w_started)
        c->w_started = seq;
#ifndef PGPIPE_OMIT_THREADS
    pthread_cond_broadcast(&c->ccond);
#endif
    pp_mutex_unlock(&c->qmu);
    return PGPIPE_OK;
}

/* Lane L: rows of its open group seq (it is started when none is). */
static int cdc_w_rows(pgpipe_cdc *c, cdc_lane *L, uint64_t seq, int binary, const char *data,
                      size_t len)
{
    int rc = L->open ? PGPIPE_OK : cdc_w_open(c, L, seq, binary);
    if (rc != PGPIPE_OK)
        return rc;
    if ((len && PQputCopyData(L->conn, data, (int)len) != 1) || PQflush(L->conn) != 0) {
        rc = pp_err_pq(&L->err, L->conn, NULL, "cdc: COPY into staging");
        cdc_group_abort(c, L);
    }
    return rc;
}

/* lsn is confirmable now that everything handed before it is committed
** (with the last committed group once that is flushed, or at once); idle
** ('i', the walsender's position when it pings, a heartbeat): only when
** nothing committed waits for its flush. Under qmu. */
static void cdc_w_ack(pgpipe_cdc *c, uint64_t lsn, int idle)
{
    if (c->npend) {
        if (idle)
            return;
        if (lsn > c->pend[c->npend - 1].remote)
            c->pend[c->npend - 1].remote = lsn;
    } else if (lsn > c->ack) {
        c->ack = lsn;
        atomic_store(&c->st_ack, c->ack);
    }
}

/* Lane L commits its group it: the end of its COPY; its TOAST writes; then
** (its turn come) one simple query: the end LSN of its last source
** transaction into pgpipe.cdc_slots (an error when the row is at or past
** it already: the division by zero rolls the transaction back), COMMIT,
** and where the target's WAL is (inserted past the commit, flushed); then
** the group may be confirmed to the source once that WAL is flushed. */
static int cdc_w_end(pgpipe_cdc *c, cdc_lane *L, const cdc_item *it)
{
    pgpipe_error *err = &L->err;
    int rc = L->open ? PGPIPE_OK : cdc_w_open(c, L, it->seq, it->binary);
    if (rc != PGPIPE_OK)
        return rc;
    if (PQputCopyEnd(L->conn, NULL) != 1) {
        rc = pp_err_pq(err, L->conn, NULL, "cdc: COPY into staging");
    } else {
        PGresult *r;
        while ((r = PQgetResult(L->conn)) != NULL) {
            if (rc == PGPIPE_OK && PQresultStatus(r) != PGRES_COMMAND_OK)
                rc = pp_err_pq(err, L->conn, r, "cdc: COPY into staging");
            PQclear(r);
        }
    }
    /* unchanged TOAST values: the writes, in this transaction, after those
    ** of the groups before (committed) */
    if (rc == PGPIPE_OK && (it->tru.len || it->del.len || it->ins.len) &&
        (rc = cdc_w_wait(c, L, it->seq, 1)) == PGPIPE_OK) {
        rc = cdc_toast_exec(c, L->conn, it, err);
    }
    if (rc == PGPIPE_OK)
        rc = cdc_w_wait(c, L, it->seq, 1);
    char lsn[32], q[1024];
    pp_cdc_lsn_str(it->lsn, lsn, sizeof lsn);
    /* the slot name is [a-z0-9_]; the rest are numbers and an LSN */
    snprintf(q, sizeof q,
             "WITH u AS (UPDATE pgpipe.cdc_slots SET applied_lsn = '%s', "
             "commit_time = timestamptz '2000-01-01 00:00:00+00' + %lld * interval '1 microsecond', "
             "transactions = transactions + %lld, events = events + %lld, updated_at = now() "
             "WHERE slot = '%s' AND applied_lsn < '%s' RETURNING 1) SELECT 1 / count(*)::int FROM u; "
             "COMMIT; SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text",
             lsn, (long long)it->ts, it->txns, it->events, c->slot, lsn);
    uint64_t local = 0, flushed = 0;
    if (rc == PGPIPE_OK && !PQsendQuery(L->conn, q))
        rc = pp_err_pq(err, L->conn, NULL, "cdc: storing the applied LSN");
    if (rc == PGPIPE_OK) {
        PGresult *r;
        int k = 0, got = 0;
        while ((r = PQgetResult(L->conn)) != NULL) {
            ExecStatusType st = PQresultStatus(r);
            const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
            if (rc != PGPIPE_OK) {
                /* the rest of the answer */
            } else if (st == PGRES_FATAL_ERROR && k == 0 && state && !strcmp(state, "22012")) {
                rc = pp_err(err, PGPIPE_ERROR,
                            "cdc: slot \"%s\" on the target is at or past %s already: another "
                            "process consumes the same slot", c->slot, lsn);
            } else if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
                rc = pp_err_pq(err, L->conn, r, k == 0 ? "cdc: storing the applied LSN"
                                                       : "cdc: COMMIT on the target");
            } else if (k == 2) {
                if (PQntuples(r) != 1 || !pp_cdc_lsn_parse(PQgetvalue(r, 0, 0), &local) ||
                    !pp_cdc_lsn_parse(PQgetvalue(r, 0, 1), &flushed))
                    rc = pp_err(err, PGPIPE_DB, "cdc: the target's WAL position is not an LSN");
                else
                    got = 1;
            }
            PQclear(r);
            k++;
        }
        if (rc == PGPIPE_OK && !got)
            rc = pp_err(err, PGPIPE_DB, "cdc: COMMIT on the target: no answer");
    }
    if (rc != PGPIPE_OK) {
        cdc_group_abort(c, L);
        return rc;
    }
    L->open = 0;
    /* committed: the next group's turn; the acks that waited for this one */
    pp_mutex_lock(&c->qmu);
    c->applied = it->lsn;
    c->w_done = it->seq;
    if (!c->async_commit) {
        if (it->lsn > c->ack)
            c->ack = it->lsn;
        atomic_store(&c->st_ack, c->ack);
    } else {
        if (c->npend == c->cappend) {
            int cap = c->cappend ? c->cappend * 2 : 64;
            struct cdc_pend *n = pp_realloc(c->pend, (size_t)cap * sizeof *n);
            if (n) {
                c->pend = n;
                c->cappend = cap;
            }
        }
        /* no memory: committed, only its confirmation waits for the next */
        if (c->npend < c->cappend) {
            c->pend[c->npend].remote = it->lsn;
            c->pend[c->npend++].local = local;
        }
        cdc_flushed(c, flushed);
    }
    int k = 0;
    while (k < c->ndacks && c->dacks[k].seq <= it->seq) {
        cdc_w_ack(c, c->dacks[k].lsn, c->dacks[k].kind == 'i');
        k++;
    }
    if (k) {
        memmove(c->dacks, c->dacks + k, (size_t)(c->ndacks - k) * sizeof *c->dacks);
        c->ndacks -= k;
    }
    atomic_store(&c->st_applied, it->lsn);
    atomic_store(&c->w_seq, it->seq);
    atomic_fetch_add(&c->n_txn, it->txns);
    atomic_fetch_add(&c->n_events, it->events);
#ifndef PGPIPE_OMIT_THREADS
    pthread_cond_broadcast(&c->ccond);
    pthread_cond_broadcast(&c->rcond);
#endif
    pp_mutex_unlock(&c->qmu);
    return PGPIPE_OK;
}

static int cdc_w_apply(pgpipe_cdc *c, cdc_lane *L, const cdc_item *it)
{
    return it->kind == 'r' ? cdc_w_rows(c, L, it->seq, it->binary, it->data.data, it->data.len)
                           : cdc_w_end(c, L, it);
}

/* The writer's failure, as the handle's error. */
static int cdc_w_error(pgpipe_cdc *c)
{
    pp_mutex_lock(&c->qmu);
    c->h.err = c->werr;
    pp_mutex_unlock(&c->qmu);
    return c->h.err.code != PGPIPE_OK ? c->h.err.code : PGPIPE_DB;
}

#ifndef PGPIPE_OMIT_THREADS
/* A lane's target connection (lanes 1..: made when missing, connected
** again when lost, its session set up as lane 0's); lane 0 is tgt, which
** cdc_run_once keeps. Only the threaded writers have lanes of their own. */
static int cdc_lane_conn(pgpipe_cdc *c, cdc_lane *L)
{
    if (L->idx == 0) {
        L->conn = c->tgt;
        return PGPIPE_OK;
    }
    if (L->conn && (L->dead || PQstatus(L->conn) != CONNECTION_OK)) {
        PQreset(L->conn);
        L->ready = 0;
    }
    L->dead = 0;
    if (!L->conn && cdc_connect(c, &L->conn, c->target, 0, "target") != PGPIPE_OK)
        return PGPIPE_DB;
    if (PQstatus(L->conn) != CONNECTION_OK)
        return pp_err(&c->h.err, PGPIPE_DB, "cdc: cannot connect to the target: %s",
                      PQerrorMessage(L->conn));
    L->ready = 1; /* (synchronous_commit is set per transaction: cdc_w_open) */
    return PGPIPE_OK;
}

static size_t cdc_item_bytes(const cdc_item *it)
{
    return it->data.cap + it->tru.cap + it->del.cap + it->ins.cap + sizeof *it;
}

/* While the reader waits for the writer: the walsender, whose messages
** are not read now, still gets a status in time (every status interval,
** at least 4 times per wal_sender_timeout); asked to stop, the reader
** waits CDC_STOP_WAIT_US, then gives up (CDC_STOPPED). */
static int cdc_stall_tick(pgpipe_cdc *c, int64_t *stop_since)
{
    int64_t now = pgpipe_now_us();
    int64_t every = (int64_t)c->status_ms * 1000;
    if (c->wal_timeout_ms > 0 && (int64_t)c->wal_timeout_ms * 250 < every)
        every = (int64_t)c->wal_timeout_ms * 250;
    if (c->streaming && c->repl && now - c->last_status_us >= every) {
        int rc = cdc_send_status(c, 0);
        if (rc != PGPIPE_OK)
            return rc;
    }
    if (atomic_load(&c->stop)) {
        if (!*stop_since) {
            *stop_since = now;
        } else if (now - *stop_since >= CDC_STOP_WAIT_US) {
            pp_logf(PGPIPE_LOG_WARN, "cdc", "slot %s: stopped while the target had not taken "
                    "the changes handed to it; they are read again next time", c->slot);
            return CDC_STOPPED;
        }
    }
    return PGPIPE_OK;
}

static void cdc_deadline(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    ts->tv_sec += ms / 1000 + ts->tv_nsec / 1000000000L;
    ts->tv_nsec %= 1000000000L;
}

/* A lane's thread: its queue's items in order until a failure (its own or
** another lane's) or the quit; lane 0, idle with groups not known flushed,
** asks the target every 100 ms. */
static void *cdc_lane_main(void *arg)
{
    cdc_lane *L = arg;
    pgpipe_cdc *c = L->c;
    pthread_mutex_lock(&c->qmu);
    while (!c->w_quit && !atomic_load(&c->w_failed)) {
        cdc_item *it = L->qhead;
        if (!it) {
            struct timespec ts;
            int64_t due = L->idx == 0 && c->npend && !L->open
                              ? c->last_flush_us + 100000 - pgpipe_now_us() : 1000000;
            if (due <= 0) {
                pthread_mutex_unlock(&c->qmu);
                int rc = cdc_flush_check(c, L, 0);
                pthread_mutex_lock(&c->qmu);
                if (rc != PGPIPE_OK) {
                    cdc_lane_fail(c, L);
                    break;
                }
                continue;
            }
            cdc_deadline(&ts, (int)(due / 1000) + 1);
            pthread_cond_timedwait(&L->cond, &c->qmu, &ts);
            continue;
        }
        L->qhead = it->next;
        if (!L->qhead)
            L->qtail = NULL;
        L->qbytes -= cdc_item_bytes(it);
        pthread_cond_broadcast(&c->rcond);
        pthread_mutex_unlock(&c->qmu);
        int rc = cdc_w_apply(c, L, it);
        cdc_item_free(it);
        pthread_mutex_lock(&c->qmu);
        if (rc != PGPIPE_OK) {
            if (!c->w_quit)
                cdc_lane_fail(c, L);
            break;
        }
    }
    int abandon = L->open;
    pthread_mutex_unlock(&c->qmu);
    if (abandon)
        cdc_group_abort(c, L);
    pthread_mutex_lock(&c->qmu);
    L->exited = 1;
    pthread_cond_broadcast(&c->rcond);
    pthread_mutex_unlock(&c->qmu);
    return NULL;
}

/* Stop the lanes: each leaves after the item at hand; one that does not
** within a second (blocked on the target: a lock, a dead network) has its
** socket shut, and the target is connected again next time. The queues'
** items are given up. */
static void cdc_w_stop(pgpipe_cdc *c)
{
    if (!c->w_running)
        return;
    pthread_mutex_lock(&c->qmu);
    c->w_quit = 1;
    pthread_cond_broadcast(&c->ccond);
    for (int i = 0; i < c->nrun; i++)
        pthread_cond_broadcast(&c->lanes[i].cond);
    for (int t = 0; t < 20; t++) {
        int all = 1;
        for (int i = 0; i < c->nrun; i++)
            all &= !c->lanes[i].running || c->lanes[i].exited;
        if (all)
            break;
        struct timespec ts;
        cdc_deadline(&ts, 50);
        pthread_cond_timedwait(&c->rcond, &c->qmu, &ts);
    }
    for (int i = 0; i < c->nrun; i++) {
        cdc_lane *L = &c->lanes[i];
        if (L->running && !L->exited && L->conn && PQsocket(L->conn) >= 0) {
            shutdown(PQsocket(L->conn), SHUT_RDWR);
            L->dead = 1;
        }
    }
    pthread_mutex_unlock(&c->qmu);
    for (int i = 0; i < c->nrun; i++) {
        cdc_lane *L = &c->lanes[i];
        if (L->running)
            pthread_join(L->thr, NULL);
        L->running = 0;
        while (L->qhead) {
            cdc_item *n = L->qhead->next;
            cdc_item_free(L->qhead);
            L->qhead = n;
        }
        L->qtail = NULL;
        L->qbytes = 0;
    }
    c->w_running = 0;
}
#endif

/* Before a run: the lanes' connections and threads. A second connection
** that cannot be made leaves the run with fewer lanes (logged). */
static int cdc_w_start(pgpipe_cdc *c)
{
#ifndef PGPIPE_OMIT_THREADS
    if (c->w_running)
        return PGPIPE_OK;
#endif
    c->w_done = c->w_started = c->seq; /* every group before committed or given up */
    c->nids = c->idpos = 0;
    c->ndacks = 0;
    pgpipe_error_clear(&c->werr);
    c->nrun = 1;
    c->lanes[0].conn = c->tgt;
#ifndef PGPIPE_OMIT_THREADS
    if (c->single)
        return PGPIPE_OK;
    c->w_quit = 0;
    atomic_store(&c->w_failed, 0);
    for (int i = 1; i < c->nlanes; i++) {
        pgpipe_error keep = c->h.err;
        if (cdc_lane_conn(c, &c->lanes[i]) != PGPIPE_OK) {
            pp_logf(PGPIPE_LOG_WARN, "cdc", "slot %s: %s; writing with %d target connection%s",
                    c->slot, c->h.err.message, i, i > 1 ? "s" : "");
            c->h.err = keep;
            break;
        }
        c->nrun = i + 1;
    }
    for (int i = 0; i < c->nrun; i++) {
        cdc_lane *L = &c->lanes[i];
        L->qhead = L->qtail = NULL;
        L->qbytes = 0;
        L->exited = 0;
        L->open = 0;
        pgpipe_error_clear(&L->err);
        int e = pthread_create(&L->thr, NULL, cdc_lane_main, L);
        if (e != 0) {
            if (i == 0)
                return pp_err(&c->h.err, PGPIPE_ERROR, "cdc: cannot start the writer thread: %s",
                              strerror(e));
            c->nrun = i;
            break;
        }
        L->running = 1;
        c->w_running = 1;
    }
#endif
    return PGPIPE_OK;
}

#ifdef PGPIPE_OMIT_THREADS
static void cdc_w_stop(pgpipe_cdc *c)
{
    (void)c;
}
#endif

/* Hand lane k an item (it takes it): into its queue, waiting while the
** queue is full; one thread: done at once. */
static int cdc_hand(pgpipe_cdc *c, int k, cdc_item *it)
{
    cdc_lane *L = &c->lanes[k];
#ifndef PGPIPE_OMIT_THREADS
    if (!c->single) {
        size_t n = cdc_item_bytes(it), cap = CDC_QUEUE_BYTES / (size_t)c->nrun;
        int64_t since = 0;
        int rc = PGPIPE_OK;
        pthread_mutex_lock(&c->qmu);
        while (rc == PGPIPE_OK && L->qbytes && L->qbytes + n > cap &&
               !atomic_load(&c->w_failed) && !L->exited) {
            struct timespec ts;
            cdc_deadline(&ts, 50);
            pthread_cond_timedwait(&c->rcond, &c->qmu, &ts);
            pthread_mutex_unlock(&c->qmu);
            rc = cdc_stall_tick(c, &since);
            pthread_mutex_lock(&c->qmu);
        }
        if (rc == PGPIPE_OK && (atomic_load(&c->w_failed) || L->exited))
            rc = -1;
        if (rc == PGPIPE_OK) {
            it->next = NULL;
            if (L->qtail)
                L->qtail->next = it;
            else
                L->qhead = it;
            L->qtail = it;
            L->qbytes += n;
            pthread_cond_signal(&L->cond);
            it = NULL;
        }
        pthread_mutex_unlock(&c->qmu);
        cdc_item_free(it);
        return rc == -1 ? cdc_w_error(c) : rc;
    }
#endif
    int rc = cdc_w_apply(c, L, it);
    cdc_item_free(it);
    if (rc != PGPIPE_OK) {
        cdc_lane_fail(c, L);
        return cdc_w_error(c);
    }
    return rc;
}

/* The lane of the open group (its number is the next). */
static int cdc_grp_lane(const pgpipe_cdc *c)
{
    return (int)((c->seq + 1) % (uint64_t)c->nrun);
}

/* The rows made so far (c->copy) to the writer. */
static int cdc_push_rows(pgpipe_cdc *c)
{
    if (!c->copy.len)
        return PGPIPE_OK;
    c->grp_bytes += c->copy.len;
    if (c->single) {
        cdc_lane *L = &c->lanes[0];
        int rc = cdc_w_rows(c, L, c->seq + 1, c->grp_binary, c->copy.data, c->copy.len);
        c->copy.len = 0;
        if (rc != PGPIPE_OK) {
            cdc_lane_fail(c, L);
            return cdc_w_error(c);
        }
        return rc;
    }
    cdc_item *it = pp_calloc(1, sizeof *it);
    if (!it)
        return pp_err_nomem(&c->h.err);
    it->kind = 'r';
    it->binary = c->grp_binary;
    it->seq = c->seq + 1;
    it->data = c->copy;
    memset(&c->copy, 0, sizeof c->copy);
    if (pp_buf_reserve(&c->copy, CDC_CHUNK + 64 * 1024) != PGPIPE_OK) {
        cdc_item_free(it);
        return pp_err_nomem(&c->h.err);
    }
    return cdc_hand(c, cdc_grp_lane(c), it);
}

/* The reader ends its group: the rest of its rows, then its end. */
static int cdc_end_group(pgpipe_cdc *c)
{
    if (!c->grp_open)
        return PGPIPE_OK;
    int rc = cdc_push_rows(c);
    if (rc != PGPIPE_OK)
        return rc;
    c->grp_open = 0;
    cdc_item *it = pp_calloc(1, sizeof *it);
    if (!it)
        return pp_err_nomem(&c->h.err);
    int k = cdc_grp_lane(c);
    it->kind = 'e';
    it->binary = c->grp_binary;
    it->seq = ++c->seq;
    it->lsn = c->grp_end;
    it->ts = c->grp_ts;
    it->txns = c->grp_txns;
    it->events = c->grp_events;
    if ((rc = cdc_toast_build(c, it->seq, &it->tru, &it->del, &it->ins)) != PGPIPE_OK) {
        cdc_item_free(it);
        return rc;
    }
    return cdc_hand(c, k, it);
}

/* lsn may be confirmed once what was handed before it is (idle: see
** cdc_w_ack): now when every group handed is committed, else when the
** last of them is (cdc_w_end). No group is open here. */
static int cdc_confirmable(pgpipe_cdc *c, uint64_t lsn, int idle)
{
    int rc = PGPIPE_OK;
    char kind = idle ? 'i' : 'a';
    pp_mutex_lock(&c->qmu);
    if (c->w_done >= c->seq) {
        cdc_w_ack(c, lsn, idle);
    } else if (c->ndacks && c->dacks[c->ndacks - 1].seq == c->seq &&
               c->dacks[c->ndacks - 1].kind == kind) {
        if (lsn > c->dacks[c->ndacks - 1].lsn)
            c->dacks[c->ndacks - 1].lsn = lsn;
    } else {
        if (c->ndacks == c->capdacks) {
            int cap = c->capdacks ? c->capdacks * 2 : 16;
            cdc_dack *n = pp_realloc(c->dacks, (size_t)cap * sizeof *n);
            if (n) {
                c->dacks = n;
                c->capdacks = cap;
            }
        }
        if (c->ndacks < c->capdacks) {
            c->dacks[c->ndacks].seq = c->seq;
            c->dacks[c->ndacks].lsn = lsn;
            c->dacks[c->ndacks++].kind = kind;
        } else {
            rc = pp_err_nomem(&c->h.err);
        }
    }
    pp_mutex_unlock(&c->qmu);
    return rc;
}

/* The end of a run: the lanes commit what they were handed and stop;
** what is committed is made durable and confirmable; the reader keeps the
** walsender answered meanwhile. */
static int cdc_finish(pgpipe_cdc *c)
{
    int rc = PGPIPE_OK;
#ifndef PGPIPE_OMIT_THREADS
    if (!c->single) {
        int64_t since = 0;
        pthread_mutex_lock(&c->qmu);
        while (rc == PGPIPE_OK && c->w_done < c->seq && !atomic_load(&c->w_failed)) {
            struct timespec ts;
            cdc_deadline(&ts, 50);
            pthread_cond_timedwait(&c->rcond, &c->qmu, &ts);
            pthread_mutex_unlock(&c->qmu);
            rc = cdc_stall_tick(c, &since);
            pthread_mutex_lock(&c->qmu);
        }
        int failed = atomic_load(&c->w_failed);
        pthread_mutex_unlock(&c->qmu);
        if (rc != PGPIPE_OK)
            return rc;
        if (failed)
            return cdc_w_error(c);
        cdc_w_stop(c);
        if (atomic_load(&c->w_failed))
            return cdc_w_error(c);
    }
#endif
    if (c->npend) {
        cdc_lane *L = &c->lanes[0];
        if ((rc = cdc_flush_check(c, L, 1)) != PGPIPE_OK) {
            cdc_lane_fail(c, L);
            return cdc_w_error(c);
        }
    }
    return rc;
}

/* More than one lane: the next event's id. The lanes' COPYs overlap, so
** ids the server drew would interleave between groups; the reader draws
** them from staging's sequence instead, CDC_ID_BLOCK at a time on tlook,
** in the stream's order (a sequence's values only grow), so staging's ids
** keep the source's commit order as with one lane. Unused ones are gaps,
** as a rolled-back insert leaves. */
#define CDC_ID_BLOCK 4096
static int cdc_next_id(pgpipe_cdc *c, long long *id)
{
    if (c->idpos < c->nids) {
        *id = c->ids[c->idpos++];
        return PGPIPE_OK;
    }
    int rc = PGPIPE_OK;
    if (c->tlook && PQstatus(c->tlook) != CONNECTION_OK) {
        PQfinish(c->tlook);
        c->tlook = NULL;
    }
    if (!c->tlook && (rc = cdc_connect(c, &c->tlook, c->target, 0, "target")) != PGPIPE_OK)
        return rc;
    PGresult *r = NULL;
    if (!c->idseq) {
        rc = pp_exec(c->tlook, "SELECT pg_get_serial_sequence('staging.raw_events', 'id')::regclass::oid",
                     0, NULL, &r, &c->h.err, "cdc: finding staging's id sequence");
        if (rc == PGPIPE_OK && (PQntuples(r) != 1 || PQgetisnull(r, 0, 0)))
            rc = pp_err(&c->h.err, PGPIPE_ERROR, "cdc: staging.raw_events.id has no sequence");
        if (rc == PGPIPE_OK)
            c->idseq = (unsigned)strtoul(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
        r = NULL;
        if (rc != PGPIPE_OK)
            return rc;
    }
    if (!c->ids && !(c->ids = pp_malloc(CDC_ID_BLOCK * sizeof *c->ids)))
        return pp_err_nomem(&c->h.err);
    char q[160];
    snprintf(q, sizeof q, "SELECT nextval(%u::oid::regclass) FROM generate_series(1, %d)", c->idseq,
             CDC_ID_BLOCK);
    /* binary: 8 bytes each, no text to make or parse */
    r = PQexecParams(c->tlook, q, 0, NULL, NULL, NULL, NULL, 1);
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = pp_err_pq(&c->h.err, c->tlook, r, "cdc: drawing ids from staging's sequence");
    else if (PQntuples(r) != CDC_ID_BLOCK || PQnfields(r) != 1 || PQftype(r, 0) != 20)
        rc = pp_err(&c->h.err, PGPIPE_DB, "cdc: drawing ids from staging's sequence: %d of %d",
                    PQntuples(r), CDC_ID_BLOCK);
    for (int i = 0; rc == PGPIPE_OK && i < CDC_ID_BLOCK; i++) {
        if (PQgetlength(r, i, 0) != 8)
            rc = pp_err(&c->h.err, PGPIPE_DB, "cdc: drawing ids from staging's sequence: not a bigint");
        else
            c->ids[i] = (long long)pp_cdc_get64(PQgetvalue(r, i, 0));
    }
    PQclear(r);
    if (rc != PGPIPE_OK)
        return rc;
    c->nids = CDC_ID_BLOCK;
    c->idpos = 1;
    *id = c->ids[0];
    return PGPIPE_OK;
}

/* One binary COPY row of a record (cdc_copy_record: the record's two
** fields are COPY text, head is where "lsn" goes), with its id when id_bin
** is not NULL: the same values as the text row. */
static int cdc_binary_row(pgpipe_cdc *c, pp_buf *b, const unsigned char *id_bin, const char *rec,
                          size_t n, size_t tab, size_t head, const char *end, size_t endn,
                          size_t lsnn)
{
    pp_copy_w w = { .binary = 1 };
    int i = 0, rc = pp_copy_row_begin(&w, b, id_bin ? 4 : 3);
    if (id_bin) {
        rc |= pp_copy_field_begin(&w, b, i++);
        rc |= pp_buf_append(b, (const char *)id_bin, 8);
        pp_copy_field_end(&w, b);
    }
    rc |= pp_copy_text_field(&w, b, i++, c->slot, strlen(c->slot));
    rc |= pp_copy_field_begin(&w, b, i++);
    rc |= cdc_unescape(b, rec, tab);
    pp_copy_field_end(&w, b);
    /* jsonb: its version byte and the JSON text (its keys in jsonb's order) */
    rc |= pp_copy_field_begin(&w, b, i);
    rc |= pp_buf_putc(b, 1);
    rc |= cdc_unescape(b, rec + tab + 1, head - tab - 1);
    rc |= pp_buf_append(b, end, lsnn);
    rc |= cdc_unescape(b, rec + head, n - head);
    rc |= pp_buf_append(b, end + lsnn, endn - lsnn);
    pp_copy_field_end(&w, b);
    rc |= pp_copy_row_end(&w, b);
    return rc ? PGPIPE_NOMEM : PGPIPE_OK;
}

/* Append one record, finished with the commit's fields, to the COPY (in
** the open group's format). */
static int cdc_copy_record(pgpipe_cdc *c, const char *rec, size_t n, const char *end,
                           size_t endn, size_t lsnn, long long *count, uint64_t commit_lsn,
                           int filter)
{
    if (n && rec[n - 1] == '\n')
        n--;
    if (!n || (filter && cdc_skipped_line(c, rec, n, commit_lsn)))
        return PGPIPE_OK;
    /* "lsn" goes right after "op": the keys then come in the order jsonb
    ** stores them (shorter first), so the server's sort of them finds them
    ** sorted; that sort was a tenth of the target's time */
    const char *tab = memchr(rec, '\t', n);
    const char *comma = tab ? memchr(tab, ',', n - (size_t)(tab - rec)) : NULL;
    size_t head = comma ? (size_t)(comma - rec) : n;
    if (!comma)
        lsnn = 0;
    pp_buf *b = &c->copy;
    if (c->grp_binary) {
        if (!tab)
            return pp_err(&c->h.err, PGPIPE_PARSE, "cdc: a record without its event type");
        unsigned char id_bin[8];
        if (c->nrun > 1) {
            long long id = 0;
            int rc = cdc_next_id(c, &id);
            if (rc != PGPIPE_OK)
                return rc;
            uint64_t u = (uint64_t)id;
            for (int k = 7; k >= 0; k--, u >>= 8)
                id_bin[k] = (unsigned char)(u & 0xFF);
        }
        if (cdc_binary_row(c, b, c->nrun > 1 ? id_bin : NULL, rec, n, (size_t)(tab - rec), head,
                           end, endn, lsnn) != PGPIPE_OK)
            return pp_err_nomem(&c->h.err);
        (*count)++;
        return b->len >= CDC_CHUNK ? cdc_push_rows(c) : PGPIPE_OK;
    }
    if (c->nrun > 1) {
        long long id = 0;
        int rc = cdc_next_id(c, &id);
        if (rc != PGPIPE_OK)
            return rc;
        char num[24];
        char *p = num + sizeof num;
        unsigned long long u = id < 0 ? 0 - (unsigned long long)id : (unsigned long long)id;
        *--p = '\t';
        do
            *--p = (char)('0' + u % 10);
        while ((u /= 10) != 0);
        if (id < 0)
            *--p = '-';
        if (pp_buf_append(b, p, (size_t)(num + sizeof num - p)) != PGPIPE_OK)
            return pp_err_nomem(&c->h.err);
    }
    /* slot names are [a-z0-9_]: nothing to escape */
    if (pp_buf_append(b, c->slot, strlen(c->slot)) || pp_buf_putc(b, '\t') ||
        pp_buf_append(b, rec, head) || pp_buf_append(b, end, lsnn) ||
        pp_buf_append(b, rec + head, n - head) || pp_buf_append(b, end + lsnn, endn - lsnn) ||
        pp_buf_putc(b, '\n'))
        return pp_err_nomem(&c->h.err);
    (*count)++;
    return b->len >= CDC_CHUNK ? cdc_push_rows(c) : PGPIPE_OK;
}

/* A committed source transaction: its records (mem, or the spool file f)
** into the open group, which is started when none is. The group ends here
** when it is full; otherwise when the stream runs dry (cdc_run_once). */
static int cdc_commit(pgpipe_cdc *c, const pp_buf *mem, FILE *f, uint64_t commit_lsn,
                      uint64_t end_lsn, int64_t ts)
{
    /* unchanged TOAST values: the transaction whose writes to keep (cdc_toast_*) */
    uint32_t txid = c->xid;
    for (int k = 0; f && k < c->nspools; k++)
        if (c->spools[k].f == f)
            txid = c->spools[k].xid;
    if (end_lsn <= c->queued_end) {
        cdc_toast_drop(c, txid, 0, 0);
        atomic_fetch_add(&c->n_skipped, 1);
        return PGPIPE_OK;
    }
    if ((mem && mem->len == 0) || (f && ftell(f) == 0)) {
        cdc_toast_drop(c, txid, 0, 0);
        /* nothing to stage: confirmable with the open group, or after
        ** what was handed to the writer before */
        if (c->grp_open) {
            c->grp_end = c->queued_end = end_lsn;
            c->grp_ts = ts;
            return PGPIPE_OK;
        }
        return cdc_confirmable(c, end_lsn, 0);
    }
    cdc_toast_commit(c, txid, commit_lsn); /* written with the group (cdc_toast_build) */
    /* every record ends with the commit's fields and the brace */
    c->tail.len = 0;
    if (pp_cdc_event_end(&c->tail, end_lsn, ts) != PGPIPE_OK)
        return pp_err_nomem(&c->h.err);
    const char *end = c->tail.data;
    size_t endn = c->tail.len;
    /* the "lsn" member, the start of the end (cdc_copy_record moves it) */
    const char *ct = strstr(end, ",\"commit_time\"");
    size_t lsnn = ct ? (size_t)(ct - end) : 0;

    int rc = PGPIPE_OK;
    if (!c->grp_open) {
        c->grp_open = 1;
        c->grp_binary = cdc_bin_groups(c);
        c->copy.len = 0;
        c->grp_txns = c->grp_events = 0;
        c->grp_bytes = 0;
        c->grp_started_us = pgpipe_now_us();
    }
    long long count = 0;
    if (mem) {
        const char *p = mem->data, *lim = mem->data + mem->len;
        while (rc == PGPIPE_OK && p < lim) {
            const char *nl = memchr(p, '\n', (size_t)(lim - p));
            size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(lim - p);
            rc = cdc_copy_record(c, p, n, end, endn, lsnn, &count, commit_lsn, 0);
            p += n;
        }
    } else {
        char *ln = NULL;
        size_t cap = 0;
        ssize_t n;
        rewind(f);
        while (rc == PGPIPE_OK && (n = getline(&ln, &cap, f)) > 0)
            rc = cdc_copy_record(c, ln, (size_t)n, end, endn, lsnn, &count, commit_lsn,
                                 c->nskips > 0);
        free(ln);
        if (rc == PGPIPE_OK && ferror(f))
            rc = pp_err(&c->h.err, PGPIPE_IO, "cdc: reading a spool file: %s", strerror(errno));
    }
    if (rc != PGPIPE_OK)
        return rc;
    c->grp_end = c->queued_end = end_lsn;
    c->grp_ts = ts;
    c->grp_txns++;
    c->grp_events += count;
    if (c->grp_events >= CDC_GROUP_EVENTS || pgpipe_now_us() - c->grp_started_us >= CDC_GROUP_US ||
        (c->nrun > 1 && c->grp_bytes + c->copy.len >= CDC_QUEUE_BYTES / (size_t)c->nrun / 2))
        return cdc_end_group(c);
    return PGPIPE_OK;
}

static int cdc_message(pgpipe_cdc *c, const char *data, size_t len)
{
    pp_cdc_msg m;
    int rc = pp_cdc_decode(&c->dec, data, len, &m, &c->h.err);
    if (rc != PGPIPE_OK)
        return rc;
    switch (m.type) {
    case 'B':
        c->in_txn = 1;
        c->xid = m.xid;
        c->final_lsn = m.lsn;
        c->txn.len = 0;
        return PGPIPE_OK;
    case 'C':
        if (!c->in_txn)
            return pp_err(&c->h.err, PGPIPE_PARSE, "pgoutput: COMMIT without BEGIN");
        c->in_txn = 0;
        rc = cdc_commit(c, &c->txn, NULL, m.lsn, m.end_lsn, m.ts);
        c->txn.len = 0;
        if (c->txn.cap > 16 * 1024 * 1024) {
            pp_buf_free(&c->txn);
        }
        return rc;
    case 'I': case 'U': case 'D':
        return cdc_record(c, &m, 0);
    case 'T':
        for (int i = 0; i < m.nrelids && rc == PGPIPE_OK; i++)
            rc = cdc_record(c, &m, i);
        return rc;
    case 'S': {
        cdc_spool *s = cdc_spool_find(c, m.xid);
        if (!s) {
            if (c->nspools == c->capspools) {
                int cap = c->capspools ? c->capspools * 2 : 4;
                cdc_spool *n = pp_realloc(c->spools, (size_t)cap * sizeof *n);
                if (!n)
                    return pp_err_nomem(&c->h.err);
                c->spools = n;
                c->capspools = cap;
            }
            s = &c->spools[c->nspools];
            memset(s, 0, sizeof *s);
            s->xid = m.xid;
            if (!(s->f = tmpfile()))
                return pp_err(&c->h.err, PGPIPE_IO,
                              "cdc: no temporary file for a streamed transaction: %s",
                              strerror(errno));
            c->nspools++;
        }
        c->cur = s;
        return PGPIPE_OK;
    }
    case 'E':
        c->cur = NULL;
        return PGPIPE_OK;
    case 'c': {
        cdc_spool *s = cdc_spool_find(c, m.xid);
        pp_buf none = { 0, 0, 0 };
        if (!s) /* nothing of it was sent: nothing to stage */
            return cdc_commit(c, &none, NULL, m.lsn, m.end_lsn, m.ts);
        if (fflush(s->f) != 0)
            return pp_err(&c->h.err, PGPIPE_IO, "cdc: spool file: %s", strerror(errno));
        rc = ftell(s->f) == 0 ? cdc_commit(c, &none, NULL, m.lsn, m.end_lsn, m.ts)
                              : cdc_commit(c, NULL, s->f, m.lsn, m.end_lsn, m.ts);
        cdc_spool_drop(c, s);
        return rc;
    }
    case 'A': {
        cdc_spool *s = cdc_spool_find(c, m.xid);
        if (!s)
            return PGPIPE_OK;
        if (m.subxid == m.xid) {
            cdc_toast_drop(c, m.xid, 0, 0); /* its TOAST images */
            cdc_spool_drop(c, s);
            return PGPIPE_OK;
        }
        for (int k = 0; k < s->nsubs; k++) {
            if (s->subs[k].xid != m.subxid)
                continue;
            /* the subtransaction and what follows it are cut off */
            if (fflush(s->f) != 0 || ftruncate(fileno(s->f), s->subs[k].off) != 0 ||
                fseek(s->f, s->subs[k].off, SEEK_SET) != 0)
                return pp_err(&c->h.err, PGPIPE_IO, "cdc: spool file: %s", strerror(errno));
            s->nsubs = k;
            cdc_toast_drop(c, m.xid, s->subs[k].off, 0); /* its TOAST images */
            break;
        }
        return PGPIPE_OK;
    }
    case 'M':
        /* a message outside any transaction (our heartbeat): every commit
        ** before it is staged, so the slot may advance to it */
        if (!(m.flags & 1) && !c->in_txn && !c->dec.in_stream && c->nspools == 0 &&
            !c->grp_open && m.lsn > c->queued_end)
            return cdc_confirmable(c, m.lsn, 1);
        return PGPIPE_OK;
    default: /* R Y O: the decoder keeps what matters */
        return PGPIPE_OK;
    }
}

static int cdc_heartbeat(pgpipe_cdc *c)
{
    /* a non-transactional message: decoded at once, so an idle database's
    ** slot advances, and needs no table on the source */
    int rc = pp_exec(c->src, "SELECT pg_logical_emit_message(false, 'pgpipe.heartbeat', '')", 0,
                     NULL, NULL, &c->h.err, "cdc: heartbeat on the source");
    c->last_activity_us = pgpipe_now_us();
    return rc;
}

/* A lane's connection (other than tgt) is lost. */
static int cdc_lanes_bad(const pgpipe_cdc *c)
{
    for (int i = 1; i < CDC_LANES_MAX; i++)
        if (c->lanes[i].conn && PQstatus(c->lanes[i].conn) == CONNECTION_BAD)
            return 1;
    return 0;
}

/* Stream until the deadline, a stop or the first failure. */
static int cdc_run_once(pgpipe_cdc *c, int64_t deadline)
{
    int rc = PGPIPE_OK, ended = 0;
    c->transient = 0;
    /* after a failure (a server restarted, the network cut): connect again;
    ** the stream resumes from the applied LSN */
    if (c->tgt && (c->lanes[0].dead || PQstatus(c->tgt) != CONNECTION_OK)) {
        PQreset(c->tgt);
        c->tgt_ready = 0;
        c->lanes[0].dead = 0;
    }
    /* another lane's connection lost: a commit of it may be unknown too
    ** (cdc_lane_conn connects it again) */
    for (int i = 1; i < CDC_LANES_MAX; i++)
        if (c->lanes[i].conn && (c->lanes[i].dead || PQstatus(c->lanes[i].conn) != CONNECTION_OK))
            c->tgt_ready = 0;
    if (c->src && PQstatus(c->src) != CONNECTION_OK)
        PQreset(c->src);
    if (c->tgt && PQstatus(c->tgt) != CONNECTION_OK) {
        c->transient = 1; /* a target restarting: try again */
        return pp_err(&c->h.err, PGPIPE_DB, "cdc: cannot connect to the target: %s",
                      PQerrorMessage(c->tgt));
    }
    if (!c->tgt_ready) {
        /* the stream must start from what the target holds now */
        if (c->streaming)
            cdc_reset(c);
        if ((rc = cdc_target_session(c)) != PGPIPE_OK) {
            c->transient = PQstatus(c->tgt) == CONNECTION_BAD;
            return rc;
        }
    }
    /* a source still down is a failure like any other: judged below */
    if (!c->streaming)
        rc = cdc_start(c);
    /* the target connection is the writer's from here to the run's end */
    if (rc == PGPIPE_OK)
        rc = cdc_w_start(c);
    while (rc == PGPIPE_OK && !atomic_load(&c->stop)) {
        int64_t now = pgpipe_now_us();
        if (now >= deadline)
            break;
#ifndef PGPIPE_OMIT_THREADS
        if (!c->single && atomic_load(&c->w_failed)) {
            rc = cdc_w_error(c);
            break;
        }
#endif
        char *buf = NULL;
        int n = PQgetCopyData(c->repl, &buf, 1);
        if (n > 0) {
            c->dry_since_us = 0;
            if (buf[0] == 'w' && n >= 25) {
                uint64_t wal_end = pp_cdc_get64(buf + 9);
                if (wal_end > atomic_load(&c->st_received))
                    atomic_store(&c->st_received, wal_end);
                rc = cdc_message(c, buf + 25, (size_t)n - 25);
                c->last_activity_us = now;
            } else if (buf[0] == 'k' && n >= 18) {
                uint64_t wal_end = pp_cdc_get64(buf + 1);
                if (wal_end > atomic_load(&c->st_received))
                    atomic_store(&c->st_received, wal_end);
                /* the walsender pings when it has caught up and waits for
                ** WAL (or when it wants an answer): the group ends */
                if (c->grp_open)
                    rc = cdc_end_group(c);
                /* idle: everything committed before wal_end has been received
                ** and handed to the writer, so the slot may advance to it
                ** once that is staged */
                if (rc == PGPIPE_OK && !c->in_txn && c->nspools == 0 && !c->grp_open &&
                    wal_end > c->queued_end)
                    rc = cdc_confirmable(c, wal_end, 1);
                if (rc == PGPIPE_OK && buf[17])
                    rc = cdc_send_status(c, 0);
            } else {
                rc = pp_err(&c->h.err, PGPIPE_PARSE,
                            "cdc: unknown replication message 0x%02x", (unsigned char)buf[0]);
            }
            PQfreemem(buf);
            if (rc == PGPIPE_OK && now - c->last_status_us >= (int64_t)c->status_ms * 1000)
                rc = cdc_send_status(c, 0);
            continue;
        }
        if (n == 0) {
            /* nothing more buffered. Catching up, the walsender is decoding
            ** the next transaction: the group stays open (its rows go to the
            ** writer now, which works on them meanwhile) until the walsender
            ** pings, having caught up, or the stream stays dry CDC_DRY_US */
            if (c->grp_open) {
                if (!c->dry_since_us)
                    c->dry_since_us = now;
                if (now - c->dry_since_us >= CDC_DRY_US) {
                    if ((rc = cdc_end_group(c)) != PGPIPE_OK)
                        break;
                } else if ((rc = cdc_push_rows(c)) != PGPIPE_OK) {
                    break;
                }
            }
            /* one thread: the writer's check of the target's flush is here */
            if (c->single && c->npend && !c->lanes[0].open && now - c->last_flush_us >= 100000 &&
                (rc = cdc_flush_check(c, &c->lanes[0], 0)) != PGPIPE_OK) {
                cdc_lane_fail(c, &c->lanes[0]);
                rc = cdc_w_error(c);
                break;
            }
            if (now - c->last_status_us >= (int64_t)c->status_ms * 1000 &&
                (rc = cdc_send_status(c, 0)) != PGPIPE_OK)
                break;
            if (c->heartbeat_ms && !c->in_txn &&
                now - c->last_activity_us >= (int64_t)c->heartbeat_ms * 1000 &&
                (rc = cdc_heartbeat(c)) != PGPIPE_OK)
                break;
            int64_t wait = (deadline - now) / 1000;
            if (wait > (c->grp_open ? CDC_DRY_US / 1000 : 100))
                wait = c->grp_open ? CDC_DRY_US / 1000 : 100;
            struct pollfd p = { PQsocket(c->repl), POLLIN, 0 };
            if (poll(&p, 1, (int)(wait < 1 ? 1 : wait)) < 0 && errno != EINTR)
                rc = pp_err(&c->h.err, PGPIPE_IO, "cdc: poll: %s", strerror(errno));
            else if (PQconsumeInput(c->repl) != 1)
                rc = pp_err_pq(&c->h.err, c->repl, NULL, "cdc: reading the replication stream");
            continue;
        }
        if (n == -1) {
            /* the walsender ends the stream when its server shuts down */
            PGresult *r = PQgetResult(c->repl);
            if (r && PQresultStatus(r) == PGRES_FATAL_ERROR)
                rc = pp_err_pq(&c->h.err, c->repl, r, "cdc: the source ended the replication stream");
            else
                rc = pp_err(&c->h.err, PGPIPE_DB, "cdc: the source ended the replication stream "
                            "(its server shutting down?)");
            PQclear(r);
            ended = 1;
        } else {
            rc = pp_err_pq(&c->h.err, c->repl, NULL, "cdc: reading the replication stream");
        }
    }
    /* leaving: the open group ends, and what is staged is made durable
    ** and confirmed */
    if (rc == PGPIPE_OK)
        rc = cdc_end_group(c);
    if (rc == PGPIPE_OK)
        rc = cdc_finish(c);
    if (rc == PGPIPE_OK)
        rc = cdc_send_status(c, 0);
    if (rc == CDC_STOPPED) {
        /* asked to stop while the target took nothing: what the writer
        ** had not committed was not confirmed, and is read again */
        cdc_reset(c);
        return PGPIPE_OK;
    }
    if (rc != PGPIPE_OK) {
        /* the writer first: its connection's state is judged below */
        cdc_w_stop(c);
        /* worth another try: a lost connection or a server going down, not
        ** a refusal (an invalidated slot, a malformed message). A database
        ** error without a SQLSTATE is libpq's own: a write to a connection
        ** the server closed reports that while the status stays OK (the next
        ** use finds it BAD and connects again) */
        c->transient = ended || pgpipe_sqlstate_class(c->h.err.sqlstate) == PGPIPE_SQLSTATE_RETRY ||
                       (rc == PGPIPE_DB && !c->h.err.sqlstate[0]) ||
                       (c->repl && PQstatus(c->repl) == CONNECTION_BAD) ||
                       (c->tgt && PQstatus(c->tgt) == CONNECTION_BAD) || cdc_lanes_bad(c) ||
                       (c->src && PQstatus(c->src) == CONNECTION_BAD);
        cdc_reset(c);
        /* the target refused binary rows (staging.raw_events altered while
        ** the stream ran: a column that is no longer jsonb, text or bigint):
        ** ask again, and when the rows must now go as text that is worth
        ** another try; an answer that did not change is a refusal as before */
        if (!c->transient && c->bin_ok && c->tgt && PQstatus(c->tgt) == CONNECTION_OK &&
            PQtransactionStatus(c->tgt) == PQTRANS_IDLE) {
            int was = cdc_bin_groups(c);
            cdc_bin_check(c);
            if (was && !cdc_bin_groups(c)) {
                pp_logf(PGPIPE_LOG_WARN, "cdc", "slot %s: staging.raw_events no longer takes "
                        "binary rows (%s); writing text from here", c->slot, c->h.err.message);
                c->transient = 1;
            }
        }
        /* the target may have lost commits not yet flushed: go by what it
        ** holds when the stream starts again */
        if (c->transient)
            c->tgt_ready = 0;
    }
    return rc;
}

int pgpipe_cdc_run(pgpipe_cdc *c, int timeout_ms)
{
    if (!c)
        return PGPIPE_MISUSE;
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : pgpipe_now_us() + (int64_t)timeout_ms * 1000;
    int backoff_ms = 100, rc;
    for (;;) {
        uint64_t applied = atomic_load(&c->st_applied);
        rc = cdc_run_once(c, deadline);
        if (rc == PGPIPE_OK || !c->transient || atomic_load(&c->stop) ||
            pgpipe_now_us() >= deadline)
            break;
        /* it staged since the last failure: a new failure, the shortest wait */
        if (atomic_load(&c->st_applied) != applied)
            backoff_ms = 100;
        /* nothing unconfirmed was acknowledged: connect again and resume
        ** from the applied LSN */
        atomic_fetch_add(&c->n_reconnects, 1);
        pp_logf(PGPIPE_LOG_WARN, "cdc", "%s; connecting again in %d ms", c->h.err.message,
                backoff_ms);
        for (int waited = 0; waited < backoff_ms && !atomic_load(&c->stop) &&
                             pgpipe_now_us() < deadline; waited += 50)
            pgpipe_sleep_ms(50);
        if (backoff_ms < 10000)
            backoff_ms *= 2;
    }
    atomic_store(&c->stop, 0);
    return rc;
}

void pgpipe_cdc_stop(pgpipe_cdc *c)
{
    if (c)
        atomic_store(&c->stop, 1);
}

void pgpipe_cdc_stats_get(pgpipe_cdc *c, pgpipe_cdc_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!c)
        return;
    out->transactions = atomic_load(&c->n_txn);
    out->events = atomic_load(&c->n_events);
    out->skipped = atomic_load(&c->n_skipped);
    out->reconnects = atomic_load(&c->n_reconnects);
    out->applied_lsn = atomic_load(&c->st_applied);
    out->confirmed_lsn = atomic_load(&c->st_confirmed);
    out->received_lsn = atomic_load(&c->st_received);
}

int pgpipe_cdc_slot_info_get(const char *source, const char *slot, pgpipe_cdc_slot_info *out,
                             pgpipe_error *err)
{
    if (!out || !slot)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_cdc_slot_info_get: a slot and out are required");
    memset(out, 0, sizeof *out);
    out->safe_wal_size = -1;
    PGconn *pg = PQconnectdb(source ? source : "");
    if (!pg)
        return pp_err_nomem(err);
    if (PQstatus(pg) != CONNECTION_OK) {
        int rc = pp_err(err, PGPIPE_DB, "cdc: cannot connect to the source: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return rc;
    }
    const char *p[1] = { slot };
    PGresult *r = NULL;
    int rc = pp_exec(pg,
                     "SELECT active, coalesce(wal_status, ''), coalesce(confirmed_flush_lsn::text, ''), "
                     "coalesce(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::bigint, "
                     "coalesce(pg_current_wal_lsn() - restart_lsn, 0)::bigint, "
                     "coalesce(safe_wal_size, -1) FROM pg_replication_slots WHERE slot_name = $1",
                     1, p, &r, err, "cdc: reading pg_replication_slots");
    if (rc == PGPIPE_OK && PQntuples(r) == 1) {
        out->exists = 1;
        out->active = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
        snprintf(out->wal_status, sizeof out->wal_status, "%s", PQgetvalue(r, 0, 1));
        snprintf(out->confirmed_flush, sizeof out->confirmed_flush, "%s", PQgetvalue(r, 0, 2));
        out->lag_bytes = strtoll(PQgetvalue(r, 0, 3), NULL, 10);
        out->retained_bytes = strtoll(PQgetvalue(r, 0, 4), NULL, 10);
        out->safe_wal_size = strtoll(PQgetvalue(r, 0, 5), NULL, 10);
    }
    PQclear(r);
    PQfinish(pg);
    return rc;
}

int pgpipe_cdc_drop(const char *source, const char *target, const char *slot,
                    const char *publication, pgpipe_error *err)
{
    if (!slot || !cdc_name_ok(slot) || (publication && !cdc_name_ok(publication)))
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_cdc_drop: a valid slot name is required");
    const char *p[1] = { slot };
    int rc = PGPIPE_OK;
    PGconn *pg = PQconnectdb(source ? source : "");
    if (!pg)
        return pp_err_nomem(err);
    if (PQstatus(pg) != CONNECTION_OK) {
        rc = pp_err(err, PGPIPE_DB, "cdc: cannot connect to the source: %s", PQerrorMessage(pg));
    } else {
        /* a stream that just stopped leaves its walsender holding the slot
        ** for a moment: wait for it (5 s), then say who holds it */
        PGresult *r = NULL;
        for (int i = 0; rc == PGPIPE_OK && i < 50; i++) {
            PQclear(r);
            r = NULL;
            rc = pp_exec(pg, "SELECT coalesce(active_pid::text, '') FROM pg_replication_slots "
                             "WHERE slot_name = $1", 1, p, &r, err, "cdc: looking for the slot");
            if (rc != PGPIPE_OK || PQntuples(r) == 0 || !*PQgetvalue(r, 0, 0))
                break;
            pgpipe_sleep_ms(100);
        }
        if (rc == PGPIPE_OK && PQntuples(r) == 1 && *PQgetvalue(r, 0, 0))
            rc = pp_err(err, PGPIPE_BUSY, "cdc: slot \"%s\" is in use by the source's process "
                        "%s (a running .cdc start?): stop that first", slot, PQgetvalue(r, 0, 0));
        PQclear(r);
        if (rc == PGPIPE_OK)
            rc = pp_exec(pg, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                             "WHERE slot_name = $1", 1, p, NULL, err, "cdc: dropping the slot");
        if (rc == PGPIPE_OK && publication) {
            char q[128];
            snprintf(q, sizeof q, "DROP PUBLICATION IF EXISTS \"%s\"", publication);
            rc = pp_exec(pg, q, 0, NULL, NULL, err, "cdc: dropping the publication");
        }
    }
    PQfinish(pg);
    if (rc != PGPIPE_OK || !target)
        return rc;
    pg = PQconnectdb(target);
    if (!pg)
        return pp_err_nomem(err);
    if (PQstatus(pg) != CONNECTION_OK)
        rc = pp_err(err, PGPIPE_DB, "cdc: cannot connect to the target: %s", PQerrorMessage(pg));
    else
        rc = pp_exec(pg, "DELETE FROM pgpipe.cdc_slots WHERE slot = $1", 1, p, NULL, err,
                     "cdc: forgetting the slot on the target");
    PQfinish(pg);
    return rc;
}

void pgpipe_cdc_close(pgpipe_cdc *c)
{
    if (!c)
        return;
    cdc_reset(c);
    if (c->src)
        PQfinish(c->src);
    if (c->tgt)
        PQfinish(c->tgt);
    for (int i = 1; i < CDC_LANES_MAX; i++)
        if (c->lanes[i].conn)
            PQfinish(c->lanes[i].conn);
    pp_free(c->spools);
    for (int i = 0; i < c->nskips; i++)
        pp_free(c->skips[i].table);
    pp_free(c->skips);
    cdc_toast_free(c);
    pp_buf_free(&c->txn);
    pp_buf_free(&c->js);
    pp_buf_free(&c->line);
    pp_buf_free(&c->copy);
    pp_buf_free(&c->tail);
    pp_free(c->pend);
    pp_free(c->dacks);
    pp_free(c->ids);
#ifndef PGPIPE_OMIT_THREADS
    pthread_mutex_destroy(&c->qmu);
    pthread_cond_destroy(&c->ccond);
    for (int i = 0; i < CDC_LANES_MAX; i++)
        pthread_cond_destroy(&c->lanes[i].cond);
    pthread_cond_destroy(&c->rcond);
#endif
    pp_free(c->source);
    pp_free(c->target);
    pp_free(c->slot);
    pp_free(c->publication);
    pp_free(c);
}

#endif /* PGPIPE_OMIT_CDC */
