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

/* Append the compact JSON text of a value (src/parse/json.c). */
PGPIPE_PRIVATE int json_write_buf(pp_buf *b, const pgpipe_json_val *v);

#endif /* PP_PARSE_H */
