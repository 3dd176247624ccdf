/*
** The pull layer's private header: records from HTTP(S) JSON APIs into
** staging, page by page, each page committed with the stream's state.
** Layer order and rules: src/base/pp_base.h.
**
**   pull        requests (libcurl), pagination, records into
**               staging.raw_events with the cursor in the same
**               transaction, politeness (shared rate budget, Retry-After,
**               backoff); the public API (pull.h)
**
** Left out with PGPIPE_OMIT_PULL (src/pgpipe.h says what it needs). The
** HTTP client is compiled only with PGPIPE_ENABLE_CURL.
**
** @components pull
*/
#ifndef PP_PULL_H
#define PP_PULL_H
#include "../cdc/pp_cdc.h"

#endif /* PP_PULL_H */
