/*
** The parse layer's private header: readers of the input formats (JSON, CSV)
** and what they share with the layers above. Parsers touch no database.
** Layer order and rules: src/base/pp_base.h.
**
** @components json csv
*/
#ifndef PP_PARSE_H
#define PP_PARSE_H
#include "../base/pp_base.h"

/* Declarations of a component sit inside its PGPIPE_OMIT_ guard. */
#ifndef PGPIPE_OMIT_CSV
/* Append the COPY text-format escape of data[0..len) (src/parse/csv.c). */
PGPIPE_PRIVATE int csv_copy_escape(pp_buf *b, const char *data, size_t len);
#endif
#ifndef PGPIPE_OMIT_JSON
/* Append the compact JSON text of a value (src/parse/json.c). */
PGPIPE_PRIVATE int json_write_buf(pp_buf *b, const pgpipe_json_val *v);
#endif

#endif /* PP_PARSE_H */
