/*
** pgpipe - a PostgreSQL data-pipeline engine in one C file.
**
** This header is the public interface of pgpipe.c. Drop pgpipe.c and pgpipe.h
** into your program and build with:  cc -c pgpipe.c $(pkg-config --cflags libpq)
** then link with -lpq (and -lpthread unless built with -DPGPIPE_OMIT_THREADS).
**
** The components below follow the data through the library: base (result
** codes, errors, memory, logging, retries), the parsers (JSON, CSV, SQL
** scripts), the database layer (pool, migrations, built-in schema, local
** server), then the pipeline (COPY loader, claimer and workers, dead
** letters, record store). Each section
** starts with a banner, what the component is for, its handles and its
** thread-safety rule.
**
** Conventions, the same for every component:
**
**   Results: every function returns an int result code (PGPIPE_OK is 0)
**   unless documented otherwise.
**
**   Handles: each is an opaque pgpipe_X, made by
**       int pgpipe_X_open(pgpipe_X **out, <required arguments>,
**                         const pgpipe_X_options *opt);   (NULL = defaults)
**   (the options argument only where the component has options) and released
**   by
**       void pgpipe_X_close(pgpipe_X *h);                 (NULL is a no-op)
**   *out is set even when the open fails, as soon as a handle could be
**   allocated, so its error can be read: close it all the same. *out is NULL
**   only when memory ran out (pgpipe_errmsg(NULL) then says so). Objects
**   handed out by another handle are given back to it instead of being
**   opened and closed: a pgpipe_conn (pgpipe_pool_acquire/_release), a
**   pgpipe_batch (pgpipe_claim_next/_complete). A handle made from another
**   one (a pipeline on a connection, a cursor of a record store) reports a
**   failed open on that parent and leaves *out NULL. pgpipe_pool_close alone
**   returns a result: the connections it had to leave checked out.
**
**   Memory: strings and buffers the library allocates and hands over are
**   released with pgpipe_free(); a caller-owned struct the library fills
**   (pgpipe_copy_buf) is emptied with its _clear function.
**
**   Errors: a function called on a handle reports its error on that handle
**   (pgpipe_errmsg(h), pgpipe_errinfo(h), ...). A function without one of
**   our handles (it works on a PGconn, or on nothing) takes
**   `pgpipe_error *err` as its last argument (NULL when not wanted); so does
**   pgpipe_batch_doc, since a batch keeps no error. The one exception is
**   pgpipe_pool_acquire_ex: a pool is shared by threads, so its own error
**   slot would race, and the acquire reports to err instead.
**
**   Threads: each section states its rule. Unless it says otherwise a handle
**   is used by one thread at a time, and different handles are independent.
**
** Nothing in the library prints except through the log callback, and nothing
** exits or aborts the process.
*/
#ifndef PGPIPE_H
#define PGPIPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <libpq-fe.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PGPIPE_VERSION        "0.1.0"
#define PGPIPE_VERSION_NUMBER 1000      /* X*1000000 + Y*1000 + Z */

/* ---- Build options ----------------------------------------------------------
** Define these when compiling pgpipe.c, and the same when including pgpipe.h:
**   PGPIPE_OMIT_THREADS  no pthreads: no worker pool, one loader connection
**   PGPIPE_ENABLE_CURL   the API pull's HTTP client (libcurl; link -lcurl);
**                        without it pgpipe_pull_open says "built without libcurl"
**   PGPIPE_OMIT_<NAME>   leave component NAME out (JSON, CSV, FRAMER, SQLSPLIT, POOL,
**                        MIGRATE, SCHEMA, LOCAL, LOAD, CLAIM, DLQ, RECORDS, HTTP,
**                        SPOOL, CDC, PULL, RUN),
**                        with every component that needs it, as the table
**                        below says (in order: a rule may set a later one).
** `make cross` prints the aarch64 size of each configuration. */
/* MIGRATE needs SQLSPLIT */
#if defined(PGPIPE_OMIT_SQLSPLIT)
#undef PGPIPE_OMIT_MIGRATE
#define PGPIPE_OMIT_MIGRATE 1
#endif
/* SCHEMA needs MIGRATE */
#if defined(PGPIPE_OMIT_MIGRATE)
#undef PGPIPE_OMIT_SCHEMA
#define PGPIPE_OMIT_SCHEMA 1
#endif
/* LOAD needs JSON, CSV, FRAMER, POOL, MIGRATE, SCHEMA and DLQ */
#if defined(PGPIPE_OMIT_JSON) || defined(PGPIPE_OMIT_CSV) || defined(PGPIPE_OMIT_FRAMER) \
    || defined(PGPIPE_OMIT_POOL) \
    || defined(PGPIPE_OMIT_MIGRATE) || defined(PGPIPE_OMIT_SCHEMA) || defined(PGPIPE_OMIT_DLQ)
#undef PGPIPE_OMIT_LOAD
#define PGPIPE_OMIT_LOAD 1
#endif
/* CLAIM needs JSON, POOL and DLQ */
#if defined(PGPIPE_OMIT_JSON) || defined(PGPIPE_OMIT_POOL) || defined(PGPIPE_OMIT_DLQ)
#undef PGPIPE_OMIT_CLAIM
#define PGPIPE_OMIT_CLAIM 1
#endif
/* RECORDS needs JSON, CSV, FRAMER (its JSON array import) and POOL */
#if defined(PGPIPE_OMIT_JSON) || defined(PGPIPE_OMIT_CSV) || defined(PGPIPE_OMIT_FRAMER) \
    || defined(PGPIPE_OMIT_POOL)
#undef PGPIPE_OMIT_RECORDS
#define PGPIPE_OMIT_RECORDS 1
#endif
/* SPOOL (store-and-forward) needs LOAD: its drainer loads through it */
#if defined(PGPIPE_OMIT_LOAD)
#undef PGPIPE_OMIT_SPOOL
#define PGPIPE_OMIT_SPOOL 1
#endif
/* HTTP needs LOAD, DLQ and threads */
#if defined(PGPIPE_OMIT_LOAD) || defined(PGPIPE_OMIT_DLQ) || defined(PGPIPE_OMIT_THREADS)
#undef PGPIPE_OMIT_HTTP
#define PGPIPE_OMIT_HTTP 1
#endif
/* CDC (logical replication into staging) needs SCHEMA */
#if defined(PGPIPE_OMIT_SCHEMA)
#undef PGPIPE_OMIT_CDC
#define PGPIPE_OMIT_CDC 1
#endif
/* PULL (HTTP APIs into staging) needs JSON, SCHEMA and DLQ; its HTTP client
** is compiled only with PGPIPE_ENABLE_CURL (link -lcurl) */
#if defined(PGPIPE_OMIT_JSON) || defined(PGPIPE_OMIT_SCHEMA) || defined(PGPIPE_OMIT_DLQ)
#undef PGPIPE_OMIT_PULL
#define PGPIPE_OMIT_PULL 1
#endif
/* RUN (the pipeline runner) needs SQLSPLIT, LOAD, CLAIM and threads: its
** workers and schedules are threads. (Without HTTP it still runs, refusing
** a pipeline with an http source.) */
#if defined(PGPIPE_OMIT_SQLSPLIT) || defined(PGPIPE_OMIT_LOAD) || defined(PGPIPE_OMIT_CLAIM) \
    || defined(PGPIPE_OMIT_THREADS)
#undef PGPIPE_OMIT_RUN
#define PGPIPE_OMIT_RUN 1
#endif

/* @@COMPONENT_HEADERS@@ */

#ifdef __cplusplus
}
#endif
#endif /* PGPIPE_H */
