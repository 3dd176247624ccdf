/*
** pgpipe - a PostgreSQL data-pipeline engine in one C file.
**
** This header is the public interface of pgpipe.c. Drop pgpipe.c and pgpipe.h
** into your program and build with:  cc -c pgpipe.c $(pkg-config --cflags libpq)
** then link with -lpq (and -lpthread unless built with -DPGPIPE_OMIT_THREADS).
**
** Conventions: every function returns an int result code (PGPIPE_OK is 0) unless
** documented otherwise; handles are opaque and keep their last error, read with
** pgpipe_errmsg() and friends. Nothing in the library prints except through the
** log callback, and nothing exits or aborts the process.
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
**   PGPIPE_OMIT_<NAME>   leave component NAME out (JSON, CSV, SQLSPLIT, POOL,
**                        MIGRATE, SCHEMA, LOCAL, LOAD, CLAIM, DLQ, RECORDS),
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
/* LOAD needs JSON, CSV, POOL, MIGRATE, SCHEMA and DLQ */
#if defined(PGPIPE_OMIT_JSON) || defined(PGPIPE_OMIT_CSV) || defined(PGPIPE_OMIT_POOL) \
    || defined(PGPIPE_OMIT_MIGRATE) || defined(PGPIPE_OMIT_SCHEMA) || defined(PGPIPE_OMIT_DLQ)
#undef PGPIPE_OMIT_LOAD
#define PGPIPE_OMIT_LOAD 1
#endif
/* CLAIM needs JSON, POOL and DLQ */
#if defined(PGPIPE_OMIT_JSON) || defined(PGPIPE_OMIT_POOL) || defined(PGPIPE_OMIT_DLQ)
#undef PGPIPE_OMIT_CLAIM
#define PGPIPE_OMIT_CLAIM 1
#endif
/* RECORDS needs JSON, CSV and POOL */
#if defined(PGPIPE_OMIT_JSON) || defined(PGPIPE_OMIT_CSV) || defined(PGPIPE_OMIT_POOL)
#undef PGPIPE_OMIT_RECORDS
#define PGPIPE_OMIT_RECORDS 1
#endif

/* @@COMPONENT_HEADERS@@ */

#ifdef __cplusplus
}
#endif
#endif /* PGPIPE_H */
