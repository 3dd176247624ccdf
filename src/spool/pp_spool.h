/*
** The spool layer's private header: store-and-forward on the device. When
** the database is away, records go to segment files in a local folder (the
** spool) and a drainer sends them to staging through the loader when it is
** back. Between pipeline (it drains through the loader) and http (the
** server and the runner spool into it). Layer order and rules:
** src/base/pp_base.h.
**
**   spool   segment files: format, append, CRC-32C, fsync policies,
**           recovery of a torn tail, bounded disk, quarantine, the drainer
**           and the offline check
**
** @components spool
*/
#ifndef PP_SPOOL_H
#define PP_SPOOL_H
#include "../pipeline/pp_pipeline.h"

#ifndef PGPIPE_OMIT_SPOOL
/* CRC-32C (Castagnoli, reflected, as iSCSI: RFC 3720), continuing from crc
** (0 to start). The SSE4.2 crc32 instruction on x86-64 CPUs that have it,
** else software, slicing-by-8; PGPIPE_CRC32C=soft in the environment forces
** the software. */
PGPIPE_PRIVATE uint32_t pp_crc32c(uint32_t crc, const void *buf, size_t len);
/* Choose the implementation: 0 as the CPU and PGPIPE_CRC32C say, 1 the
** table, 2 the instruction (the table where there is none). Returns the
** one in use (tests run both). */
PGPIPE_PRIVATE int pp_crc32c_use(int mode);
#endif

#endif /* PP_SPOOL_H */
