/*
** The pipeline layer's private header: a record's way from input to its
** production table (load into staging, claim and transform, dead letters,
** the records store). Layer order and rules: src/base/pp_base.h.
**
** @components load claim dlq records
*/
#ifndef PP_PIPELINE_H
#define PP_PIPELINE_H
#include "../db/pp_db.h"

#endif /* PP_PIPELINE_H */
