/*
** The parse layer's private header: readers of the input formats (JSON, CSV),
** the SQL statement splitter, and what they share with the layers above.
** Parsers touch no database. Layer order and rules: src/base/pp_base.h.
**
** @components json csv sqlsplit
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
#ifndef PGPIPE_OMIT_SQLSPLIT
/* SQL words as the statement splitter reads them (src/parse/sqlsplit.c); the
** migration runner uses them to spot transaction control statements. */
PGPIPE_PRIVATE int sqlsplit_is_ident_char(unsigned char c);
PGPIPE_PRIVATE int sqlsplit_word_is(const char *w, size_t n, const char *kw);
#endif

#endif /* PP_PARSE_H */
