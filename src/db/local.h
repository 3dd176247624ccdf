/* ==== Local server: a private PostgreSQL cluster ==== */

/* Creates, starts and stops a PostgreSQL cluster in a directory, for the
** shell's --local DIR, demos and tests. No handle: the functions take the
** directory and report to a pgpipe_error.
**
** Thread safety: start and stop run initdb and pg_ctl as child processes;
** call them from one thread at a time, and start a watchdog before any
** thread is started (it forks). pgpipe_local_running may be called from
** any thread. */

/* A PostgreSQL cluster that pgpipe creates and runs in a directory of yours,
** for trying things without installing or configuring a server (the shell's
** --local DIR). The layout: DIR/data (the cluster), DIR/server.log, the Unix
** socket in DIR, DIR/conninfo. initdb and pg_ctl are found through
** options.bindir, $PGPIPE_PG_BINDIR, $PATH, `pg_config --bindir`, then
** /usr/lib/postgresql/<newest>/bin. initdb refuses to run as root, so as root
** the server runs as options.user (default "postgres"). */
typedef struct pgpipe_local_options {
    const char *bindir;  /* NULL: search as above */
    const char *user;    /* run the server as this user when root; NULL: "postgres" */
    int port;            /* 0: 5432 (the socket is private to DIR, so no clash),
                            or with tcp a free port that the system picks */
    int tcp;             /* 1: also listen on 127.0.0.1:port */
    int fast;            /* 1: fsync=off etc. (throwaway data: tests, demos) */
    int timeout_s;       /* start/stop wait; 0: 60 */
    int watchdog;        /* 1: when pgpipe_local_start starts the server, a small
                            process of its own session stops it once this process
                            has ended, however it ended (even SIGKILL), unless
                            pgpipe_local_stop stopped it first. It waits on a
                            pipe whose write end this process keeps open (close-
                            on-exec); start it before threads are started. */
    long owner;          /* > 0: when pgpipe_local_start starts the server, a
                            detached process checks every second whether process
                            OWNER still exists, and stops the server once it is
                            gone (even after a SIGKILL). It follows restarts, and
                            ends without stopping anything once the server has
                            been stopped by someone else (no pid file for 3 s).
                            Like watchdog, start it before threads are started. */
    int logical;         /* 1: wal_level = logical (a source for logical replication,
                            CDC); kept on restart. 0: the server's default */
} pgpipe_local_options;

void pgpipe_local_options_init(pgpipe_local_options *opt);
/* Create the cluster if DIR has none, start it unless it runs already, and
** write its conninfo into buf. *started is set to 1 when this call started
** the server, 0 when it was running already (may be NULL). */
int pgpipe_local_start(const char *dir, const pgpipe_local_options *opt, char *conninfo,
                       size_t size, int *started, pgpipe_error *err);
/* Stop the server in DIR (fast shutdown, then immediate). OK if not running. */
int pgpipe_local_stop(const char *dir, const pgpipe_local_options *opt, pgpipe_error *err);
/* Restart the server in DIR (fast shutdown) with the port and settings it was
** started with (DIR/opts), or start it when it is stopped; the conninfo stays
** the same. A cluster pgpipe_local_start never started is an error. */
int pgpipe_local_restart(const char *dir, const pgpipe_local_options *opt, pgpipe_error *err);
/* 1 when a server runs in DIR, 0 otherwise. */
int pgpipe_local_running(const char *dir);
