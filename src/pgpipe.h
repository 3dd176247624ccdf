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

/* @@COMPONENT_HEADERS@@ */

#ifdef __cplusplus
}
#endif
#endif /* PGPIPE_H */
