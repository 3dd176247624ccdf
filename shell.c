/*
** pgpipe - the interactive shell of the pgpipe engine.
**
**   pgpipe [options] [CONNINFO] [COMMAND ...]
**
** CONNINFO is anything libpq accepts (key=value or a postgresql:// URI); when
** it is left out, libpq's PG* environment variables apply. With COMMANDs it
** runs them and exits; otherwise it reads SQL (ended by ';') and dot commands
** from stdin. The exit status is non-zero when a command failed.
**
** This file uses only the public API in pgpipe.h.
*/
#define _POSIX_C_SOURCE 200809L
#include "pgpipe.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct shell {
    PGconn *conn;
    int bail;      /* stop at the first error */
    int failures;
} shell;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pgpipe [options] [CONNINFO] [COMMAND ...]\n"
            "  CONNINFO     a libpq connection string or URI (default: PG* variables)\n"
            "  COMMAND      SQL or a dot command; run in order, then exit\n"
            "options:\n"
            "  -b, --bail   stop at the first failing command\n"
            "  -h, --help   show this help\n"
            "  -V, --version\n");
}

static int is_conninfo(const char *s)
{
    return strchr(s, '=') != NULL || strncmp(s, "postgres://", 11) == 0 ||
           strncmp(s, "postgresql://", 13) == 0;
}

static void print_result(PGresult *res)
{
    int nf = PQnfields(res), nt = PQntuples(res);
    for (int j = 0; j < nf; j++)
        printf("%s%s", j ? "|" : "", PQfname(res, j));
    if (nf)
        printf("\n");
    for (int i = 0; i < nt; i++) {
        for (int j = 0; j < nf; j++)
            printf("%s%s", j ? "|" : "", PQgetisnull(res, i, j) ? "" : PQgetvalue(res, i, j));
        printf("\n");
    }
}

static int run_sql(shell *sh, const char *sql)
{
    PGresult *res = PQexec(sh->conn, sql);
    ExecStatusType st = PQresultStatus(res);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (st == PGRES_TUPLES_OK)
        print_result(res);
    if (!ok) {
        char msg[2048];
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        pgpipe_conninfo_mask(PQresultErrorMessage(res), msg, sizeof msg);
        fprintf(stderr, "error%s%s%s: %s", state ? " [" : "", state ? state : "",
                state ? "]" : "", msg);
    }
    PQclear(res);
    return ok ? 0 : 1;
}

static int run_dot(shell *sh, const char *line)
{
    (void)sh;
    if (strncmp(line, ".version", 8) == 0) {
        printf("pgpipe %s, libpq %d\n", pgpipe_libversion(), PQlibVersion());
        return 0;
    }
    if (strncmp(line, ".help", 5) == 0) {
        printf(".help        this list\n"
               ".version     library and libpq versions\n"
               ".quit        leave the shell\n"
               "SQL ended by ';' is sent to the server as typed.\n");
        return 0;
    }
    fprintf(stderr, "error: unknown command: %s (try .help)\n", line);
    return 1;
}

/* Runs one command: a dot command or SQL. Returns 0 on success, 1 on failure,
** 2 for .quit. */
static int run_command(shell *sh, const char *cmd)
{
    while (*cmd == ' ' || *cmd == '\t' || *cmd == '\n')
        cmd++;
    if (!*cmd)
        return 0;
    if (strncmp(cmd, ".quit", 5) == 0 || strncmp(cmd, ".exit", 5) == 0)
        return 2;
    int rc = cmd[0] == '.' ? run_dot(sh, cmd) : run_sql(sh, cmd);
    if (rc)
        sh->failures++;
    return rc;
}

/* Reads commands from f: dot commands are one line; SQL runs up to a line
** ending in ';'. */
static int run_stream(shell *sh, FILE *f)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    char *sql = NULL;
    size_t len = 0;
    int rc = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        if (len == 0 && line[0] == '.') {
            rc = run_command(sh, line);
        } else {
            char *grown = realloc(sql, len + (size_t)n + 2);
            if (!grown) {
                fprintf(stderr, "error: out of memory\n");
                rc = 1;
                break;
            }
            sql = grown;
            memcpy(sql + len, line, (size_t)n);
            len += (size_t)n;
            sql[len++] = '\n';
            sql[len] = '\0';
            const char *end = line + n;
            while (end > line && (end[-1] == ' ' || end[-1] == '\t'))
                end--;
            if (end > line && end[-1] == ';') {
                rc = run_command(sh, sql);
                len = 0;
            }
        }
        if (rc == 2 || (rc && sh->bail))
            break;
    }
    if (len && rc != 2 && !(rc && sh->bail))
        run_command(sh, sql);
    free(sql);
    free(line);
    return 0;
}

int main(int argc, char **argv)
{
    shell sh = { NULL, 0, 0 };
    int i = 1;
    for (; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
            printf("pgpipe %s\n", pgpipe_libversion());
            return 0;
        } else if (!strcmp(argv[i], "-b") || !strcmp(argv[i], "--bail")) {
            sh.bail = 1;
        } else if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else {
            fprintf(stderr, "pgpipe: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    const char *conninfo = "";
    if (i < argc && is_conninfo(argv[i]))
        conninfo = argv[i++];

    sh.conn = PQconnectdb(conninfo);
    if (PQstatus(sh.conn) != CONNECTION_OK) {
        char msg[2048];
        pgpipe_conninfo_mask(PQerrorMessage(sh.conn), msg, sizeof msg);
        fprintf(stderr, "pgpipe: cannot connect: %s", msg);
        PQfinish(sh.conn);
        return 1;
    }
    if (i < argc) {
        for (; i < argc; i++) {
            int rc = run_command(&sh, argv[i]);
            if (rc == 2 || (rc && sh.bail))
                break;
        }
    } else {
        run_stream(&sh, stdin);
    }
    PQfinish(sh.conn);
    return sh.failures ? 1 : 0;
}
