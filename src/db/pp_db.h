/*
** The db layer's private header: talking to PostgreSQL (connection pool,
** migrations and schema, the private local server). Layer order and rules:
** src/base/pp_base.h.
**
** @components pool migrate schema local
*/
#ifndef PP_DB_H
#define PP_DB_H
#include "../parse/pp_parse.h"

#endif /* PP_DB_H */
