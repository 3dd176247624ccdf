/* A C handler for the runner's .workers --so test (test/test_run_source.c
** builds it as a shared library): each event's payload goes into the table
** named after its event type ("<type>_out"), in the claim's transaction. */
#include <stdio.h>
#include "pgpipe.h"

int rsrc_test_handler(void *ud, PGconn *conn, const pgpipe_event *ev, pgpipe_error *err);

int rsrc_test_handler(void *ud, PGconn *conn, const pgpipe_event *ev, pgpipe_error *err)
{
    (void)ud;
    char sql[256];
    snprintf(sql, sizeof sql, "INSERT INTO public.%s_out (id) VALUES (($1::jsonb->>'id')::bigint)",
             ev->event_type);
    const char *p[1] = { ev->payload };
    PGresult *r = PQexecParams(conn, sql, 1, NULL, p, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
        snprintf(err->message, sizeof err->message, "%s", PQresultErrorMessage(r));
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        snprintf(err->sqlstate, sizeof err->sqlstate, "%s", st ? st : "");
    }
    PQclear(r);
    return ok ? PGPIPE_OK : PGPIPE_DB;
}
