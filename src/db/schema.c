/*
** The one-call installers of the built-in schema (sql/schema) and the example
** pipeline (sql/example): the migration runner over the embedded folders.
*/

#include "pp_db.h"

static int schema_install_embedded(PGconn *conn, const pgpipe_migrate_options *opt,
                                   const char *folder, pgpipe_error *err)
{
    pgpipe_migrate_options o;
    pgpipe_migrate_options_init(&o);
    if (opt)
        o = *opt;
    o.dir = NULL;
    o.embedded = folder;
    o.scope = folder;
    pgpipe_migrator *m = NULL;
    int rc = pgpipe_migrator_open(&m, conn, &o);
    if (rc == PGPIPE_OK)
        rc = pgpipe_migrate_run(m);
    if (err) {
        if (m)
            *err = *pgpipe_errinfo(m);
        else
            pp_err_nomem(err);
    }
    pgpipe_migrator_close(m);
    return rc;
}

int pgpipe_schema_install(PGconn *conn, const pgpipe_migrate_options *opt, pgpipe_error *err)
{
    return schema_install_embedded(conn, opt, "schema", err);
}

int pgpipe_example_install(PGconn *conn, const pgpipe_migrate_options *opt, pgpipe_error *err)
{
    int rc = schema_install_embedded(conn, opt, "schema", err);
    if (rc == PGPIPE_OK)
        rc = schema_install_embedded(conn, opt, "example", err);
    return rc;
}
