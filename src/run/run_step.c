/*
** One step of a setup or a schedule/task body: a SQL statement, or one of
** the dot commands a pipeline file may use, run by the library itself so a
** C program gets the same pipeline as the shell.
** STUB (lead): SQL only; the dot commands come with the sources helper.
*/
#include "pp_run.h"

#ifndef PGPIPE_OMIT_RUN

PGPIPE_PRIVATE int run_steps_exec(pgpipe_runner *r, PGconn *conn, const pgpipe_pipe_step *steps,
                                  int n, int64_t timeout_ms, long long *rows, pgpipe_error *err)
{
    (void)timeout_ms;
    if (rows)
        *rows = 0;
    for (int i = 0; i < n; i++) {
        const pgpipe_pipe_step *s = &steps[i];
        if (s->kind != PGPIPE_PIPE_SQL)
            return pp_err(err, PGPIPE_ERROR, "%s:%d: %s: dot commands are not run yet", r->path,
                          s->line, s->text);
        PGresult *res = NULL;
        char ctx[512];
        snprintf(ctx, sizeof ctx, "%s:%d", r->path, s->line);
        int rc = pp_exec(conn, s->text, 0, NULL, &res, err, ctx);
        if (rc)
            return rc;
        if (rows && *PQcmdTuples(res))
            *rows += atoll(PQcmdTuples(res));
        PQclear(res);
    }
    return PGPIPE_OK;
}

#endif /* PGPIPE_OMIT_RUN */
