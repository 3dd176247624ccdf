/*
** pgpipe - the interactive shell of the pgpipe engine.
**
**   pgpipe [options] [CONNINFO] [COMMAND ...]
**
** CONNINFO is anything libpq accepts (key=value or a postgresql:// URI); when
** it is left out, libpq's PG* environment variables apply. With COMMANDs it
** runs them and exits; with -f FILE it runs the file; otherwise it reads SQL
** (ended by ';') and dot commands from stdin: interactively, with line editing
** and history, when stdin is a terminal. The exit status is non-zero when a
** command failed.
**
** This file uses only the public API in pgpipe.h (and libpq, which it exposes).
*/
#define _XOPEN_SOURCE 700  /* POSIX 2008 with realpath */
#include "pgpipe.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/select.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

enum { MODE_ALIGNED, MODE_CSV, MODE_JSON, MODE_LINE };
static const char *const mode_names[] = { "aligned", "csv", "json", "line" };

typedef struct shell {
    PGconn *conn;
    int bail;        /* stop a script at the first error */
    int failures;
    int timer;
    int mode;
    int interactive;
    const char *source;  /* script name for error messages */
    int located;         /* 1 while a script runs: errors name source:line */
    int lost;            /* the connection was lost and not yet reset */
    int user_sql;        /* 1 while SQL the user typed runs (not a dot command's) */
    FILE *out;
} shell;

/* ---- small helpers ------------------------------------------------------- */

/* Where the command being run comes from, for error messages: a script's
** name and the line its statement (or dot command) starts on. */
static const char *where_source = NULL;
static long long where_line = 0;

static void errorf(const char *fmt, ...)
{
    char msg[2048], masked[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pgpipe_conninfo_mask(msg, masked, sizeof masked);
    if (where_source && where_line > 0)
        fprintf(stderr, "%s:%lld: error: %s\n", where_source, where_line, masked);
    else
        fprintf(stderr, "error: %s\n", masked);
}

static double now_ms(void) { return (double)pgpipe_now_us() / 1000.0; }

/* Splits "a b 'c d'" into words (single or double quotes group; no escapes).
** Returns the count; words point into buf, which is modified. */
static int split_words(char *buf, char **words, int max)
{
    int n = 0;
    char *p = buf;
    while (*p && n < max) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        char q = (*p == '\'' || *p == '"') ? *p++ : 0;
        words[n++] = p;
        while (*p && (q ? *p != q : !isspace((unsigned char)*p)))
            p++;
        if (*p)
            *p++ = '\0';
    }
    return n;
}

/* Number of terminal columns a UTF-8 string takes (one per code point). */
static size_t display_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            w++;
    return w;
}

/* ---- Ctrl-C ---------------------------------------------------------------- */

/* Ctrl-C while a statement runs cancels the statement (PQcancel is safe in a
** signal handler), as in psql; the shell itself goes on. At the prompt the
** line editor reads Ctrl-C as a key. */
static volatile sig_atomic_t interrupted = 0;
/* the signal (SIGTERM, SIGHUP, SIGQUIT, SIGPIPE) that asked the run to end */
static volatile sig_atomic_t terminating = 0;
static PGcancel *volatile cancel_handle = NULL;

static void on_sigint(int sig)
{
    interrupted = 1;
    if (sig != SIGINT)
        terminating = sig;
    PGcancel *c = cancel_handle;
    if (c) {
        char err[64];
        PQcancel(c, err, sizeof err);
    }
}

/* Replaces the cancel handle the handler uses (NULL: none) with the signals
** blocked, so the handler never sees one being freed. */
static void set_cancel_handle(PGcancel *c)
{
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    PGcancel *prev = cancel_handle;
    cancel_handle = c;
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (prev)
        PQfreeCancel(prev);
}

/* ---- result output ------------------------------------------------------- */

/* Column types printed without quotes in JSON and right-aligned in tables. */
static int is_numeric_type(Oid t)
{
    return t == 20 || t == 21 || t == 23 || t == 26 || t == 700 || t == 701 || t == 1700;
}
static int is_json_type(Oid t) { return t == 114 || t == 3802; }

static void put_json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p == '\n')
            fputs("\\n", f);
        else if (*p == '\r')
            fputs("\\r", f);
        else if (*p == '\t')
            fputs("\\t", f);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void put_csv_field(FILE *f, const char *s)
{
    if (!strpbrk(s, ",\"\r\n") && *s != ' ' && *s) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

/* Display width of the widest line of a value (lines end at '\n'). */
static size_t cell_width(const char *s)
{
    size_t w = 0, cur = 0;
    for (; *s; s++) {
        if (*s == '\n') {
            cur = 0;
            continue;
        }
        if (((unsigned char)*s & 0xC0) != 0x80 && ++cur > w)
            w = cur;
    }
    return w;
}

/* One line of a table cell: s[0..n), other control characters (tab, CR)
** shown as a space so the columns stay aligned. */
static void put_cell(FILE *f, const char *s, size_t n, size_t width, int right)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            w++;
    if (right)
        for (size_t i = w; i < width; i++)
            fputc(' ', f);
    for (size_t i = 0; i < n; i++)
        fputc((unsigned char)s[i] < 0x20 ? ' ' : s[i], f);
    if (!right)
        for (size_t i = w; i < width; i++)
            fputc(' ', f);
}

/* psql's aligned format: a value with newlines takes one output line per
** line, the other columns blank there, and '+' in the separator after each
** line that continues (at the end of the row for the last column). */
static void print_aligned(FILE *f, PGresult *res)
{
    int nf = PQnfields(res), nt = PQntuples(res);
    size_t *w = calloc((size_t)nf + 1, sizeof *w);
    const char **at = calloc((size_t)nf + 1, sizeof *at);
    if (!w || !at) {
        free(w);
        free(at);
        return;
    }
    for (int j = 0; j < nf; j++) {
        w[j] = display_width(PQfname(res, j));
        for (int i = 0; i < nt; i++) {
            size_t cw = cell_width(PQgetvalue(res, i, j));
            if (cw > w[j])
                w[j] = cw;
        }
    }
    for (int j = 0; j < nf; j++) {
        fputs(j ? " | " : " ", f);
        const char *name = PQfname(res, j);
        size_t pad = w[j] - display_width(name);
        for (size_t k = 0; k < pad / 2; k++)
            fputc(' ', f);
        fputs(name, f);
        for (size_t k = 0; k < pad - pad / 2; k++)
            fputc(' ', f);
    }
    fputc('\n', f);
    for (int j = 0; j < nf; j++) {
        fputs(j ? "-+-" : "-", f);
        for (size_t k = 0; k < w[j]; k++)
            fputc('-', f);
    }
    fputs("-\n", f);
    for (int i = 0; i < nt; i++) {
        for (int j = 0; j < nf; j++)
            at[j] = PQgetvalue(res, i, j);
        int more = 1;
        while (more) {
            more = 0;
            int cont_prev = 0;
            for (int j = 0; j < nf; j++) {
                fputs(j ? (cont_prev ? "+| " : " | ") : " ", f);
                const char *s = at[j];
                size_t n = s ? strcspn(s, "\n") : 0;
                put_cell(f, s ? s : "", n, w[j], is_numeric_type(PQftype(res, j)));
                cont_prev = s && s[n] == '\n';
                at[j] = cont_prev ? s + n + 1 : NULL;
                more |= cont_prev;
            }
            if (cont_prev)
                fputc('+', f);
            fputc('\n', f);
        }
    }
    fprintf(f, "(%d row%s)\n", nt, nt == 1 ? "" : "s");
    free(w);
    free(at);
}

static void print_result(shell *sh, PGresult *res)
{
    FILE *f = sh->out;
    int nf = PQnfields(res), nt = PQntuples(res);
    switch (sh->mode) {
    case MODE_ALIGNED:
        print_aligned(f, res);
        break;
    case MODE_CSV:
        for (int j = 0; j < nf; j++) {
            if (j)
                fputc(',', f);
            put_csv_field(f, PQfname(res, j));
        }
        fputc('\n', f);
        for (int i = 0; i < nt; i++) {
            for (int j = 0; j < nf; j++) {
                if (j)
                    fputc(',', f);
                if (!PQgetisnull(res, i, j)) {
                    const char *v = PQgetvalue(res, i, j);
                    /* an empty string is quoted so it differs from NULL */
                    if (!*v)
                        fputs("\"\"", f);
                    else
                        put_csv_field(f, v);
                }
            }
            fputc('\n', f);
        }
        break;
    case MODE_JSON:
        fputc('[', f);
        for (int i = 0; i < nt; i++) {
            fputs(i ? ",\n{" : "{", f);
            for (int j = 0; j < nf; j++) {
                if (j)
                    fputc(',', f);
                put_json_string(f, PQfname(res, j));
                fputc(':', f);
                Oid t = PQftype(res, j);
                const char *v = PQgetvalue(res, i, j);
                if (PQgetisnull(res, i, j))
                    fputs("null", f);
                else if (t == 16)
                    fputs(*v == 't' ? "true" : "false", f);
                else if ((is_numeric_type(t) && strcmp(v, "NaN") && !strstr(v, "Infinity")) ||
                         is_json_type(t))
                    fputs(v, f);
                else
                    put_json_string(f, v);
            }
            fputc('}', f);
        }
        fputs("]\n", f);
        break;
    case MODE_LINE: {
        size_t w = 0;
        for (int j = 0; j < nf; j++)
            if (display_width(PQfname(res, j)) > w)
                w = display_width(PQfname(res, j));
        for (int i = 0; i < nt; i++) {
            if (i)
                fputc('\n', f);
            for (int j = 0; j < nf; j++) {
                const char *name = PQfname(res, j);
                for (size_t k = display_width(name); k < w; k++)
                    fputc(' ', f);
                fprintf(f, "%s = %s\n", name, PQgetisnull(res, i, j) ? "NULL" : PQgetvalue(res, i, j));
            }
        }
        break;
    }
    }
}

static void report_pq_error(PGresult *res, PGconn *conn)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    char text[2048];
    snprintf(text, sizeof text, "%s", msg && *msg ? msg : PQerrorMessage(conn));
    size_t n = strlen(text);
    while (n && text[n - 1] == '\n')
        text[--n] = '\0';
    if (state)
        errorf("[%s] %s", state, text);
    else
        errorf("%s", text);
}

/* The command tag (INSERT 0 3, UPDATE 2, CREATE TABLE) of a statement is
** printed as psql prints it, in the modes a person reads (aligned, line);
** csv and json output stays only data, for programs. */
static int shows_tags(const shell *sh)
{
    return sh->user_sql && (sh->mode == MODE_ALIGNED || sh->mode == MODE_LINE);
}


/* Sends SQL (one or several statements) and prints each result. copy_data,
** when given, feeds a COPY ... FROM STDIN in the SQL (a script's inline data). */
static int run_sql_copy(shell *sh, const char *sql, const char *copy_data, size_t copy_len)
{
    double t0 = now_ms();
    if (!PQsendQuery(sh->conn, sql)) {
        report_pq_error(NULL, sh->conn);
        return 1;
    }
    int failed = 0;
    PGresult *res;
    while ((res = PQgetResult(sh->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_TUPLES_OK) {
            print_result(sh, res);
            /* psql adds the tag of INSERT/UPDATE/DELETE/MERGE ... RETURNING */
            const char *tag = PQcmdStatus(res);
            if (shows_tags(sh) && (!strncmp(tag, "INSERT", 6) || !strncmp(tag, "UPDATE", 6) ||
                                   !strncmp(tag, "DELETE", 6) || !strncmp(tag, "MERGE", 5)))
                fprintf(sh->out, "%s\n", tag);
        } else if (st == PGRES_COMMAND_OK) {
            if (shows_tags(sh) && *PQcmdStatus(res))
                fprintf(sh->out, "%s\n", PQcmdStatus(res));
        } else if (st == PGRES_COPY_IN) {
            if (copy_data) {
                if (copy_len && PQputCopyData(sh->conn, copy_data, (int)copy_len) != 1)
                    failed = 1;
                PQputCopyEnd(sh->conn, NULL);
                copy_data = NULL;
            } else {
                errorf("COPY FROM STDIN needs its data in a script (ended by a line \\.)");
                PQputCopyEnd(sh->conn, "no COPY data in the pgpipe shell");
                failed = 1;
            }
        } else if (st == PGRES_COPY_OUT) {
            errorf("COPY TO STDOUT is not printed here; use .export");
            char *buf;
            while (PQgetCopyData(sh->conn, &buf, 0) > 0)
                PQfreemem(buf);
            failed = 1;
        } else if (st != PGRES_COMMAND_OK && st != PGRES_EMPTY_QUERY) {
            report_pq_error(res, sh->conn);
            failed = 1;
        }
        PQclear(res);
    }
    if (sh->timer)
        fprintf(sh->out, "Time: %.3f ms\n", now_ms() - t0);
    return failed;
}

static int run_sql(shell *sh, const char *sql) { return run_sql_copy(sh, sql, NULL, 0); }

/* SQL the user gave (a statement of a script, the terminal or an argument). */
static int run_user_sql(shell *sh, const char *sql, const char *copy_data, size_t copy_len)
{
    sh->user_sql = 1;
    int rc = run_sql_copy(sh, sql, copy_data, copy_len);
    sh->user_sql = 0;
    return rc;
}

/* Runs SQL and returns the first value of the first row (malloc'd), or NULL
** (with the error printed) when it fails or returns nothing. */
static char *query_value(shell *sh, const char *sql, int nparams, const char *const *params)
{
    PGresult *r = PQexecParams(sh->conn, sql, nparams, NULL, params, NULL, NULL, 0);
    char *v = NULL;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        report_pq_error(r, sh->conn);
    else if (PQntuples(r) > 0 && !PQgetisnull(r, 0, 0))
        v = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

static void print_error(const pgpipe_error *e)
{
    char buf[2048];
    pgpipe_error_format(e, buf, sizeof buf);
    errorf("%s", buf);
}

/* ---- dot commands -------------------------------------------------------- */

typedef struct command {
    const char *name;
    const char *usage;
    const char *help;
    int (*fn)(shell *sh, char **argv, int argc, const char *rest);
} command;



static int cmd_help(shell *sh, char **argv, int argc, const char *rest);
static int cmd_connect(shell *sh, char **argv, int argc, const char *rest);
static int run_command(shell *sh, const char *cmd);
static int is_conninfo(const char *s);

static int cmd_mode(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    if (argc < 2) {
        fprintf(sh->out, "current output mode: %s\n", mode_names[sh->mode]);
        return 0;
    }
    for (int i = 0; i < 4; i++)
        if (!strcmp(argv[1], mode_names[i]) || (!strcmp(argv[1], "table") && i == MODE_ALIGNED)) {
            sh->mode = i;
            return 0;
        }
    errorf("unknown mode '%s': use aligned, csv, json or line", argv[1]);
    return 1;
}

static int cmd_timer(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    if (argc < 2 || (strcmp(argv[1], "on") && strcmp(argv[1], "off"))) {
        errorf("usage: .timer on|off");
        return 1;
    }
    sh->timer = !strcmp(argv[1], "on");
    return 0;
}

static int cmd_version(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    int v = PQserverVersion(sh->conn);
    fprintf(sh->out, "pgpipe %s, libpq %d, server %d.%d\n", pgpipe_libversion(), PQlibVersion(),
            v / 10000, v % 10000);
    return 0;
}

static void describe_conn(PGconn *conn, char *buf, size_t size);
static void conn_error_line(PGconn *conn, char *buf, size_t size);

static int cmd_conninfo(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    char d[1024];
    describe_conn(sh->conn, d, sizeof d);
    if (PQstatus(sh->conn) != CONNECTION_OK) {
        fprintf(sh->out, "not connected: the connection to %s was lost (the next command "
                         "reconnects; .connect CONNINFO opens another)\n", d);
        return 1;
    }
    fprintf(sh->out, "connected to %s\n", d);
    return 0;
}

static int run_stream(shell *sh, FILE *f);

static int cmd_read(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    if (argc < 2) {
        errorf("usage: .read FILE");
        return 1;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        errorf("cannot open %s: %s", argv[1], strerror(errno));
        return 1;
    }
    int before = sh->failures;
    const char *saved = sh->source;
    sh->source = argv[1];
    run_stream(sh, f);
    sh->source = saved;
    fclose(f);
    return sh->failures > before;
}

/* Quotes a possibly schema-qualified name ("analytics.daily") safely. */
static char *quote_qualified(PGconn *conn, const char *name)
{
    char *copy = strdup(name), *out = NULL;
    if (!copy)
        return NULL;
    char *dot = strchr(copy, '.');
    if (dot)
        *dot = '\0';
    char *a = PQescapeIdentifier(conn, copy, strlen(copy));
    char *b = dot ? PQescapeIdentifier(conn, dot + 1, strlen(dot + 1)) : NULL;
    if (a && (!dot || b)) {
        size_t n = strlen(a) + (b ? strlen(b) + 1 : 0) + 1;
        out = malloc(n);
        if (out)
            snprintf(out, n, "%s%s%s", a, b ? "." : "", b ? b : "");
    }
    PQfreemem(a);
    PQfreemem(b);
    free(copy);
    return out;
}

static int cmd_refresh(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    const char *view = NULL;
    int conc = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--concurrently"))
            conc = 1;
        else
            view = argv[i];
    }
    if (!view) {
        errorf("usage: .refresh VIEW [--concurrently]");
        return 1;
    }
    char *q = quote_qualified(sh->conn, view);
    if (!q) {
        errorf("cannot quote view name '%s'", view);
        return 1;
    }
    char sql[1024];
    snprintf(sql, sizeof sql, "REFRESH MATERIALIZED VIEW %s%s", conc ? "CONCURRENTLY " : "", q);
    free(q);
    int rc = run_sql(sh, sql);
    if (!rc)
        fprintf(sh->out, "refreshed %s%s\n", view, conc ? " concurrently" : "");
    return rc;
}

/* .export QUERY FILE [--format csv|ndjson] through COPY TO STDOUT. */
static int cmd_export(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    const char *query = NULL, *file = NULL, *format = "csv";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--format") && i + 1 < argc)
            format = argv[++i];
        else if (!query)
            query = argv[i];
        else if (!file)
            file = argv[i];
    }
    if (!query || !file || (strcmp(format, "csv") && strcmp(format, "ndjson"))) {
        errorf("usage: .export \"QUERY\" FILE [--format csv|ndjson]");
        return 1;
    }
    size_t n = strlen(query) + 128;
    char *sql = malloc(n);
    if (!sql)
        return 1;
    /* ndjson: one row_to_json per line; COPY text escapes are undone below */
    if (!strcmp(format, "csv"))
        snprintf(sql, n, "COPY (%s) TO STDOUT WITH (FORMAT csv, HEADER)", query);
    else
        snprintf(sql, n, "COPY (SELECT row_to_json(q) FROM (%s) q) TO STDOUT", query);
    FILE *f = !strcmp(file, "-") ? stdout : fopen(file, "w");
    if (!f) {
        errorf("cannot write %s: %s", file, strerror(errno));
        free(sql);
        return 1;
    }
    double t0 = now_ms();
    /* the extended protocol runs exactly one statement: QUERY cannot close
    ** the COPY ( ... ) and append a statement of its own */
    PGresult *res = PQexecParams(sh->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    free(sql);
    int rc = 0;
    long rows = 0;
    if (PQresultStatus(res) != PGRES_COPY_OUT) {
        report_pq_error(res, sh->conn);
        rc = 1;
    } else {
        char *buf;
        int len;
        while ((len = PQgetCopyData(sh->conn, &buf, 0)) > 0) {
            if (!strcmp(format, "csv")) {
                fwrite(buf, 1, (size_t)len, f);
            } else {
                for (int i = 0; i < len; i++) {
                    char c = buf[i];
                    if (c == '\\' && i + 1 < len) {
                        c = buf[++i];
                        c = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c;
                    }
                    fputc(c, f);
                }
            }
            rows++;
            PQfreemem(buf);
        }
        PQclear(res);
        res = PQgetResult(sh->conn);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
            report_pq_error(res, sh->conn);
            rc = 1;
        }
    }
    PQclear(res);
    if (f != stdout && fclose(f) != 0) {
        errorf("writing %s: %s", file, strerror(errno));
        rc = 1;
    }
    if (!rc && f != stdout) {
        long data_rows = !strcmp(format, "csv") ? rows - 1 : rows;
        fprintf(sh->out, "exported %ld row%s to %s (%s) in %.1f ms\n", data_rows,
                data_rows == 1 ? "" : "s", file, format, now_ms() - t0);
    }
    return rc;
}


/* .listen CHANNEL [--count N] [--timeout S]: print notifications as they come. */
static int cmd_listen(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    const char *channel = NULL;
    long count = -1, timeout = -1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--count") && i + 1 < argc)
            count = atol(argv[++i]);
        else if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
            timeout = atol(argv[++i]);
        else
            channel = argv[i];
    }
    if (!channel) {
        errorf("usage: .listen CHANNEL [--count N] [--timeout SECONDS]");
        return 1;
    }
    char *ident = PQescapeIdentifier(sh->conn, channel, strlen(channel));
    char sql[512];
    snprintf(sql, sizeof sql, "LISTEN %s", ident ? ident : "\"\"");
    PQfreemem(ident);
    if (run_sql(sh, sql))
        return 1;
    fprintf(sh->out, "listening on \"%s\"%s\n", channel,
            count < 0 && timeout < 0 ? " (Ctrl-C to stop)" : "");
    fflush(sh->out);
    interrupted = 0;
    long got = 0;
    double deadline = timeout >= 0 ? now_ms() + (double)timeout * 1000.0 : 0;
    int sock = PQsocket(sh->conn), rc = 0;
    while (!interrupted && (count < 0 || got < count)) {
        double left = timeout >= 0 ? deadline - now_ms() : 1000.0;
        if (left <= 0)
            break;
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(sock, &fds);
        struct timeval tv = { (time_t)(left / 1000), (suseconds_t)((long)left % 1000) * 1000 };
        if (select(sock + 1, &fds, NULL, NULL, &tv) < 0 && errno != EINTR)
            break;
        if (!PQconsumeInput(sh->conn)) {
            report_pq_error(NULL, sh->conn);
            rc = 1;
            break;
        }
        PGnotify *n;
        while ((n = PQnotifies(sh->conn)) != NULL) {
            fprintf(sh->out, "notification on \"%s\" from pid %d: %s\n", n->relname, n->be_pid,
                    n->extra);
            fflush(sh->out);
            got++;
            PQfreemem(n);
        }
    }
    snprintf(sql, sizeof sql, "UNLISTEN *");
    PQclear(PQexec(sh->conn, sql));
    fprintf(sh->out, "%ld notification%s\n", got, got == 1 ? "" : "s");
    return rc;
}

/* .explain SQL: EXPLAIN (ANALYZE, BUFFERS) and plain notes on what stands out. */
static int cmd_explain(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc;
    while (*rest && isspace((unsigned char)*rest))
        rest++;
    if (!*rest) {
        errorf("usage: .explain SQL");
        return 1;
    }
    size_t n = strlen(rest) + 64;
    char *sql = malloc(n);
    if (!sql)
        return 1;
    snprintf(sql, n, "EXPLAIN (ANALYZE, BUFFERS) %s", rest);
    /* one statement only (extended protocol): "SELECT 1; DROP ..." is refused */
    PGresult *res = PQexecParams(sh->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    free(sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        report_pq_error(res, sh->conn);
        PQclear(res);
        return 1;
    }
    int notes = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *line = PQgetvalue(res, i, 0);
        fprintf(sh->out, "%s\n", line);
    }
    fputc('\n', sh->out);
    for (int i = 0; i < PQntuples(res); i++) {
        const char *line = PQgetvalue(res, i, 0);
        double est = -1, act = -1, loops = 1;
        const char *c = strstr(line, "rows=");
        const char *a = strstr(line, "actual time=");
        if (c)
            est = atof(c + 5);
        if (a && (a = strstr(a, "rows=")) != NULL) {
            act = atof(a + 5);
            const char *l = strstr(a, "loops=");
            if (l)
                loops = atof(l + 6);
        }
        const char *seq = strstr(line, "Seq Scan on ");
        if (seq) {
            /* rows read = rows returned + rows its filter removed (the lines
            ** below the node, up to the next node) */
            double read = act * loops;
            for (int j = i + 1; j < PQntuples(res); j++) {
                const char *l = PQgetvalue(res, j, 0);
                if (strstr(l, "->"))
                    break;
                const char *rm = strstr(l, "Rows Removed by Filter: ");
                if (rm)
                    read += atof(rm + 24) * loops;
            }
            if (read >= 10000) {
                char table[128] = "";
                sscanf(seq + 12, "%127s", table);
                fprintf(sh->out, "note: sequential scan on %s read %.0f rows; an index on the "
                                 "filtered columns may help\n", table, read);
                notes++;
            }
        }
        if (est >= 0 && act >= 0 && (act + 1) / (est + 1) >= 10 && act >= 100) {
            fprintf(sh->out, "note: the planner expected %.0f rows but got %.0f (%.0fx more): "
                             "run ANALYZE, or the statistics miss a correlation\n", est, act,
                    (act + 1) / (est + 1));
            notes++;
        } else if (est >= 0 && act >= 0 && (est + 1) / (act + 1) >= 10 && est >= 100) {
            fprintf(sh->out, "note: the planner expected %.0f rows but got %.0f (%.0fx fewer): "
                             "run ANALYZE\n", est, act, (est + 1) / (act + 1));
            notes++;
        }
    }
    if (!notes)
        fprintf(sh->out, "note: nothing stands out in this plan\n");
    PQclear(res);
    return 0;
}

/* .install [--example]: the built-in schema (and the example pipeline). */
static int cmd_install(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    int example = argc > 1 && !strcmp(argv[1], "--example");
    if (argc > 1 && !example) {
        errorf("usage: .install [--example]");
        return 1;
    }
    pgpipe_error err;
    double t0 = now_ms();
    int rc = example ? pgpipe_example_install(sh->conn, NULL, &err)
                     : pgpipe_schema_install(sh->conn, NULL, &err);
    if (rc != PGPIPE_OK) {
        print_error(&err);
        return 1;
    }
    fprintf(sh->out, "installed the built-in schema%s (%.0f ms)\n",
            example ? " and the example pipeline" : "", now_ms() - t0);
    return 0;
}

/* .migrate [DIR] [--status|--dry-run|--baseline V|--repair] */
static int cmd_migrate(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    pgpipe_migrate_options o;
    pgpipe_migrate_options_init(&o);
    o.dir = "migrations";
    int status = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--status"))
            status = 1;
        else if (!strcmp(argv[i], "--dry-run"))
            o.flags |= PGPIPE_MIGRATE_DRY_RUN;
        else if (!strcmp(argv[i], "--repair"))
            o.flags |= PGPIPE_MIGRATE_REPAIR;
        else if (!strcmp(argv[i], "--baseline") && i + 1 < argc)
            o.baseline_version = argv[++i];
        else if (argv[i][0] != '-')
            o.dir = argv[i];
        else {
            errorf("usage: .migrate [DIR] [--status|--dry-run|--baseline V|--repair]");
            return 1;
        }
    }
    pgpipe_migrator *m = NULL;
    int rc = pgpipe_migrate_open(&m, sh->conn, &o);
    if (rc == PGPIPE_OK)
        rc = status ? pgpipe_migrate_status(m) : pgpipe_migrate_run(m);
    int n = pgpipe_migrate_format(m, NULL, 0);
    char *text = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (text) {
        pgpipe_migrate_format(m, text, (size_t)n + 1);
        fputs(text, sh->out);
        if (n && text[n - 1] != '\n')
            fputc('\n', sh->out);
        free(text);
    }
    if (rc != PGPIPE_OK)
        print_error(pgpipe_errinfo(m));
    pgpipe_migrate_close(m);
    return rc != PGPIPE_OK;
}

/* .partitions [list|ahead N|retain DAYS [--detach-only]] */
static int cmd_partitions(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    const char *what = argc > 1 ? argv[1] : "list";
    if (!strcmp(what, "list"))
        return run_sql(sh, "SELECT partition, bounds, estimated_rows, "
                           "pg_size_pretty(total_bytes) AS size FROM pgpipe.raw_events_partitions");
    if ((!strcmp(what, "ahead") || !strcmp(what, "retain")) && argc > 2 &&
        strspn(argv[2], "0123456789") == strlen(argv[2]) && *argv[2]) {
        const char *params[2] = { argv[2], argc > 3 && !strcmp(argv[3], "--detach-only") ? "t" : "f" };
        int ahead = !strcmp(what, "ahead");
        char *v = query_value(sh, ahead ? "SELECT pgpipe.create_partitions($1::int, (now() AT TIME ZONE 'UTC')::date)"
                                        : "SELECT pgpipe.drop_old_partitions($1::int, $2::bool)",
                              ahead ? 1 : 2, params);
        if (!v)
            return 1;
        if (ahead)
            fprintf(sh->out, "created %s partition%s (daily, %s days ahead)\n", v,
                     strcmp(v, "1") ? "s" : "", argv[2]);
        else
            fprintf(sh->out, "%s %s partition%s older than %s days\n",
                    params[1][0] == 't' ? "detached" : "dropped", v, strcmp(v, "1") ? "s" : "",
                    argv[2]);
        free(v);
        return 0;
    }
    errorf("usage: .partitions [list|ahead DAYS|retain DAYS [--detach-only]]");
    return 1;
}

/* .health: the numbers the source articles watch, each against its target. */
static int cmd_health(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    int warn = 0;
    if (PQstatus(sh->conn) != CONNECTION_OK) {
        char msg[1024];
        conn_error_line(sh->conn, msg, sizeof msg);
        fprintf(sh->out, "FAIL  server              unreachable: %s\n", *msg ? msg : "not connected");
        return 1;
    }
    char *v = query_value(sh,
        "SELECT round(100.0 * sum(blks_hit) / nullif(sum(blks_hit) + sum(blks_read), 0), 2) "
        "FROM pg_stat_database WHERE datname = current_database()", 0, NULL);
    double hit = v ? atof(v) : 0;
    if (!v && PQstatus(sh->conn) != CONNECTION_OK) { /* lost just now */
        fprintf(sh->out, "FAIL  server              unreachable: the connection was lost\n");
        return 1;
    }
    fprintf(sh->out, "%-5s cache hit ratio     %s%% (target >= 95%%)\n",
            v && hit >= 95 ? "ok" : "WARN", v ? v : "n/a");
    warn += !(v && hit >= 95);
    free(v);

    char *conns = query_value(sh,
        "SELECT count(*) || ' of ' || current_setting('max_connections') || ' ('"
        " || round(100.0 * count(*) / current_setting('max_connections')::int) || '%)'"
        " FROM pg_stat_activity WHERE backend_type = 'client backend'", 0, NULL);
    fprintf(sh->out, "%-5s connections         %s\n", "ok", conns ? conns : "n/a");
    free(conns);

    char *has = query_value(sh, "SELECT to_regclass('staging.raw_events') IS NOT NULL AND "
                                "to_regclass('pgpipe.dead_letters') IS NOT NULL", 0, NULL);
    int installed = has && has[0] == 't';
    free(has);
    if (!installed) {
        fprintf(sh->out, "WARN  built-in schema     not installed (.install)\n");
        return 0;
    }
    char *backlog = query_value(sh,
        "SELECT count(*) || ' unprocessed' || coalesce(', oldest ' || "
        "date_trunc('second', now() - min(received_at))::text || ' old', '') "
        "FROM staging.raw_events WHERE NOT processed", 0, NULL);
    char *oldest = query_value(sh,
        "SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0)::bigint "
        "FROM staging.raw_events WHERE NOT processed", 0, NULL);
    int stale = oldest && atol(oldest) > 3600;
    fprintf(sh->out, "%-5s backlog             %s%s\n", stale ? "WARN" : "ok",
            backlog ? backlog : "n/a", stale ? " (older than an hour: are workers running?)" : "");
    warn += stale;
    free(backlog);
    free(oldest);

    char *dl = query_value(sh,
        "SELECT count(*) FILTER (WHERE status = 'dead') || ' dead, ' || "
        "count(*) FILTER (WHERE status = 'dead' AND first_failed_at > now() - interval '1 hour')"
        " || ' new in the last hour, ' || "
        "count(*) FILTER (WHERE status = 'dead' AND first_failed_at > now() - interval '2 hours'"
        " AND first_failed_at <= now() - interval '1 hour') || ' in the hour before' "
        "FROM pgpipe.dead_letters", 0, NULL);
    char *growing = query_value(sh,
        "SELECT count(*) FILTER (WHERE first_failed_at > now() - interval '1 hour') > "
        "2 * greatest(count(*) FILTER (WHERE first_failed_at > now() - interval '2 hours' "
        "AND first_failed_at <= now() - interval '1 hour'), 5) "
        "FROM pgpipe.dead_letters WHERE status = 'dead'", 0, NULL);
    int grow = growing && growing[0] == 't';
    fprintf(sh->out, "%-5s dead letters        %s%s\n", grow ? "WARN" : "ok", dl ? dl : "n/a",
            grow ? " (growing: see .dlq)" : "");
    warn += grow;
    free(dl);
    free(growing);

    char *ahead = query_value(sh,
        "SELECT coalesce(max((regexp_match(partition, '_p([0-9]{8})$'))[1]::date) - "
        "(now() AT TIME ZONE 'UTC')::date, -1) FROM pgpipe.raw_events_partitions", 0, NULL);
    int days = ahead ? atoi(ahead) : -1;
    fprintf(sh->out, "%-5s partitions ahead    %d day%s%s\n", days >= 2 ? "ok" : "WARN", days,
            days == 1 ? "" : "s", days >= 2 ? "" : " (run .partitions ahead 7 daily)");
    warn += days < 2;
    free(ahead);
    fprintf(sh->out, "%d warning%s\n", warn, warn == 1 ? "" : "s");
    return 0;
}

/* The conninfo of the shell's connection as key=value (for a worker pool). */
static char *work_conninfo(PGconn *conn)
{
    PQconninfoOption *opts = PQconninfo(conn);
    if (!opts)
        return NULL;
    size_t cap = 1024, len = 0;
    char *s = malloc(cap);
    if (!s) {
        PQconninfoFree(opts);
        return NULL;
    }
    s[0] = '\0';
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val || !*o->val || !strcmp(o->keyword, "replication"))
            continue;
        size_t need = strlen(o->keyword) + 2 * strlen(o->val) + 8;
        if (len + need >= cap) {
            cap = (len + need) * 2;
            char *t = realloc(s, cap);
            if (!t) {
                free(s);
                PQconninfoFree(opts);
                return NULL;
            }
            s = t;
        }
        len += (size_t)sprintf(s + len, "%s%s='", len ? " " : "", o->keyword);
        for (const char *v = o->val; *v; v++) {
            if (*v == '\'' || *v == '\\')
                s[len++] = '\\';
            s[len++] = *v;
        }
        s[len++] = '\'';
        s[len] = '\0';
    }
    PQconninfoFree(opts);
    return s;
}

/* The SQL of --sql: the text itself, or the contents of the file it names
** (kept until the next call; the shell is single-threaded). */
static const char *sql_arg(const char *v)
{
    static char *file_sql = NULL;
    free(file_sql);
    file_sql = NULL;
    if (strpbrk(v, " \t\n") || access(v, R_OK) != 0)
        return v;
    FILE *f = fopen(v, "r");
    if (!f)
        return v;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    size_t n;
    while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += n;
        if (cap - len < 2) {
            char *g = realloc(buf, cap * 2);
            if (!g) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = g;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf)
        return v;
    buf[len] = '\0';
    while (len && (isspace((unsigned char)buf[len - 1]) || buf[len - 1] == ';'))
        buf[--len] = '\0'; /* a trailing ';' is fine in a file */
    file_sql = buf;
    return file_sql;
}

/* .work: run claimer workers on a staging table until it is empty or Ctrl-C. */
static int cmd_work(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    const char *sql = NULL;
    int until_empty = 0, mark = 0, quiet = !sh->interactive;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (i == 1 && *a && strspn(a, "0123456789") == strlen(a)) wo.threads = atoi(a);
        else if (!strcmp(a, "--sql") && v) sql = sql_arg(v), i++;
        else if (!strcmp(a, "--mark")) mark = 1;
        else if (!strcmp(a, "--table") && v) wo.claim.table = v, i++;
        else if (!strcmp(a, "--workers") && v) wo.threads = atoi(v), i++;
        else if (!strcmp(a, "--batch") && v) wo.claim.batch_size = atoi(v), i++;
        else if (!strcmp(a, "--lease") && v) wo.claim.mode = PGPIPE_CLAIM_LEASE, wo.claim.lease_ms = atoi(v), i++;
        else if (!strcmp(a, "--max-attempts") && v) wo.claim.max_attempts = atoi(v), i++;
        else if (!strcmp(a, "--backoff") && v) wo.claim.backoff_base_ms = atoi(v), i++;
        else if (!strcmp(a, "--source") && v) wo.claim.source = v, i++;
        else if (!strcmp(a, "--event-type") && v) wo.claim.event_type = v, i++;
        else if (!strcmp(a, "--order") && v) wo.claim.order = !strcmp(v, "id"), i++;
        else if (!strcmp(a, "--channel") && v) wo.channel = v, i++;
        else if (!strcmp(a, "--poll") && v) wo.poll_ms = atoi(v), i++;
        else if (!strcmp(a, "--alert") && v) wo.dlq_alert_threshold = atoi(v), i++;
        else if (!strcmp(a, "--until-empty")) until_empty = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else {
            errorf("usage: %s", ".work --sql \"SQL\" | --mark [options] (see .help work)");
            return 1;
        }
    }
    if (!sql && !mark) {
        errorf(".work needs a handler: --sql \"SQL using $1::jsonb\" or --mark");
        return 1;
    }
    pgpipe_handler h = { NULL, NULL, sql ? sql : "SELECT 1 WHERE $1::jsonb IS NOT NULL", NULL };
    char *ci = work_conninfo(sh->conn);
    if (!ci) {
        errorf("out of memory");
        return 1;
    }
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = (wo.threads > 0 ? wo.threads : 2) + 1;
    po.max_overflow = 1;
    pgpipe_pool *pool;
    int rc = pgpipe_pool_open(ci, &po, &pool);
    free(ci);
    if (rc != PGPIPE_OK) {
        errorf("%s", pool ? pgpipe_errmsg(pool) : "out of memory");
        pgpipe_pool_close(pool, NULL);
        return 1;
    }
    pgpipe_workers *w;
    if ((rc = pgpipe_workers_start(&w, pool, &wo, &h)) != PGPIPE_OK) {
        errorf("%s", w ? pgpipe_errmsg(w) : "out of memory");
        pgpipe_workers_free(w);
        pgpipe_pool_close(pool, NULL);
        return 1;
    }
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    interrupted = 0;
    if (!quiet)
        fprintf(sh->out, "working on %s with %d workers%s\n",
                wo.claim.table ? wo.claim.table : "staging.raw_events", wo.threads,
                until_empty ? " until it is empty" : " (Ctrl-C stops)");
    pgpipe_workers_stats st;
    int empty = 0;
    while (!interrupted && !empty && !pgpipe_workers_stopping(w)) {
        if (until_empty)
            empty = pgpipe_workers_run_until_empty(w, 1000) == PGPIPE_OK;
        else
            pgpipe_sleep_ms(1000);
        if (!quiet && !empty) {
            pgpipe_workers_stats_get(w, &st);
            fprintf(sh->out, "  claimed %lld, done %lld, retried %lld, dead-lettered %lld, %.0f events/s\n",
                    st.total.claimed, st.total.done, st.total.retried, st.total.dead, st.recent_per_s);
            fflush(sh->out);
        }
    }
    pgpipe_workers_stop(w);
    int wrc = pgpipe_workers_wait(w);
    pgpipe_workers_stats_get(w, &st);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    fprintf(sh->out, "claimed %lld, done %lld, retried %lld, dead-lettered %lld, fenced %lld in %.1f s"
            " (%.0f events/s)%s\n", st.total.claimed, st.total.done, st.total.retried,
            st.total.dead, st.total.fenced, st.elapsed_s, st.events_per_s,
            interrupted ? ", stopped" : "");
    if (wrc != PGPIPE_OK)
        print_error(pgpipe_errinfo(w));  /* with the SQLSTATE */
    pgpipe_workers_free(w);
    pgpipe_pool_close(pool, NULL);
    return wrc != PGPIPE_OK;
}

/* .records COLLECTION create JSON | get ID | update [--replace] ID JSON | delete ID |
** count [FILTER] | find [--sort P] [--limit N] [--offset N] [FILTER] |
** import FILE [--documents] [--stop-on-error] | export FILE [--fields]:
** the record store (see .help records). JSON and FILTER are the rest of the
** line, so they need no quoting (one pair of outer single quotes is removed). */
static int records_bad_record(void *ud, const pgpipe_error *e)
{
    (void)ud;
    print_error(e);
    return 0;
}

static const char *records_word(const char **p, char *buf, size_t size)
{
    const char *s = *p;
    while (isspace((unsigned char)*s))
        s++;
    size_t n = 0;
    while (s[n] && !isspace((unsigned char)s[n]))
        n++;
    if (n == 0 || n >= size)
        return NULL;
    memcpy(buf, s, n);
    buf[n] = '\0';
    *p = s + n;
    return buf;
}

static int cmd_records(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc;
    char coll[128], sub[32], w[1024];
    const char *p = rest;
    if (!records_word(&p, coll, sizeof coll) || !records_word(&p, sub, sizeof sub)) {
        errorf("usage: .records COLLECTION create|get|update|delete|count|find|import|export ... (.help records)");
        return 1;
    }
    int replace = 0, documents = 0, stop = 0, fields_only = 0;
    pgpipe_records_find_options fo;
    pgpipe_records_find_options_init(&fo);
    char sortbuf[512], num[32];
    for (;;) { /* leading options */
        const char *q = p;
        if (!records_word(&q, w, sizeof w) || strncmp(w, "--", 2) != 0)
            break;
        p = q;
        if (!strcmp(w, "--replace")) replace = 1;
        else if (!strcmp(w, "--documents")) documents = 1;
        else if (!strcmp(w, "--stop-on-error")) stop = 1;
        else if (!strcmp(w, "--fields")) fields_only = 1;
        else if (!strcmp(w, "--sort") && records_word(&p, sortbuf, sizeof sortbuf))
            fo.sort = sortbuf;
        else if ((!strcmp(w, "--limit") || !strcmp(w, "--offset")) && records_word(&p, num, sizeof num))
            *(w[2] == 'l' ? &fo.limit : &fo.offset) = atoll(num);
        else {
            errorf("unknown .records option \"%s\" (.help records)", w);
            return 1;
        }
    }
    while (isspace((unsigned char)*p))
        p++;
    char *arg = strdup(p);
    if (!arg) {
        errorf("out of memory");
        return 1;
    }
    size_t n = strlen(arg);
    while (n && isspace((unsigned char)arg[n - 1]))
        arg[--n] = '\0';
    if (n >= 2 && arg[0] == '\'' && arg[n - 1] == '\'') {
        memmove(arg, arg + 1, n - 2);
        arg[n - 2] = '\0';
    }
    char *ci = work_conninfo(sh->conn);
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = 1;
    po.max_overflow = 0;
    pgpipe_pool *pool = NULL;
    pgpipe_records *h = NULL;
    int rc = ci ? pgpipe_pool_open(ci, &po, &pool) : PGPIPE_NOMEM;
    free(ci);
    if (rc != PGPIPE_OK) {
        errorf("%s", pool ? pgpipe_errmsg(pool) : "out of memory");
        goto out;
    }
    if ((rc = pgpipe_records_open(pool, coll, &h)) != PGPIPE_OK) {
        errorf("%s", h ? pgpipe_errmsg(h) : "out of memory");
        goto out;
    }
    /* the id of get, update, delete; the file of import, export */
    char *second = arg, *cut = NULL;
    while (*second && !isspace((unsigned char)*second))
        second++;
    if (*second) {
        cut = second;
        *second++ = '\0';
    }
    while (isspace((unsigned char)*second))
        second++;
    if (!strcmp(sub, "import") || !strcmp(sub, "export")) { /* options after FILE too */
        const char *q = second;
        while (records_word(&q, w, sizeof w)) {
            if (!strcmp(w, "--documents")) documents = 1;
            else if (!strcmp(w, "--stop-on-error")) stop = 1;
            else if (!strcmp(w, "--fields")) fields_only = 1;
            else {
                errorf("unknown .records %s argument \"%s\" (.help records)", sub, w);
                rc = PGPIPE_MISUSE;
                goto out;
            }
        }
    }
    if (!strcmp(sub, "create")) {
        char id[37];
        /* the whole argument (the split above only cut at the first blank) */
        if (cut)
            *cut = ' ';
        if ((rc = pgpipe_records_create(h, arg, id)) == PGPIPE_OK)
            fprintf(sh->out, "%s\n", id);
    } else if (!strcmp(sub, "get") && *arg) {
        char *doc;
        if ((rc = pgpipe_records_get(h, arg, &doc)) == PGPIPE_OK)
            fprintf(sh->out, "%s\n", doc);
        pgpipe_records_free(doc);
    } else if (!strcmp(sub, "update") && *arg && *second) {
        if ((rc = pgpipe_records_update(h, arg, second, replace ? PGPIPE_RECORDS_REPLACE
                                                                : PGPIPE_RECORDS_MERGE)) == PGPIPE_OK)
            fprintf(sh->out, "updated %s\n", arg);
    } else if (!strcmp(sub, "delete") && *arg) {
        if ((rc = pgpipe_records_delete(h, arg)) == PGPIPE_OK)
            fprintf(sh->out, "deleted %s\n", arg);
    } else if (!strcmp(sub, "count") || !strcmp(sub, "find")) {
        if (cut)
            *cut = ' ';
        pgpipe_records_filter *f = NULL;
        if ((rc = pgpipe_records_filter_parse(arg, &f)) != PGPIPE_OK) {
            if (f)
                print_error(pgpipe_errinfo(f));
            else
                errorf("out of memory");
            pgpipe_records_filter_free(f);
            free(arg);
            pgpipe_records_close(h);
            pgpipe_pool_close(pool, NULL);
            return 1;
        }
        if (sub[0] == 'c') {
            long long cnt = 0;
            if ((rc = pgpipe_records_count(h, f, &cnt)) == PGPIPE_OK)
                fprintf(sh->out, "%lld\n", cnt);
        } else {
            fo.filter = f;
            pgpipe_records_cursor *cur;
            if ((rc = pgpipe_records_find(h, &fo, &cur)) == PGPIPE_OK) {
                const char *doc;
                while (pgpipe_records_cursor_next(cur, &doc, NULL) == PGPIPE_ROW)
                    fprintf(sh->out, "%s\n", doc);
                if (sh->interactive)
                    fprintf(sh->out, "(%lld record%s)\n", pgpipe_records_cursor_count(cur),
                            pgpipe_records_cursor_count(cur) == 1 ? "" : "s");
            }
            pgpipe_records_cursor_free(cur);
        }
        pgpipe_records_filter_free(f);
    } else if (!strcmp(sub, "import") && *arg) {
        pgpipe_records_import_options io;
        pgpipe_records_import_options_init(&io);
        io.documents = documents;
        io.stop_on_error = stop;
        io.on_error = records_bad_record;
        pgpipe_records_import_summary s;
        rc = pgpipe_records_import(h, arg, &io, &s);
        fprintf(sh->out, "imported %lld, skipped %lld%s\n", s.imported, s.skipped,
                rc == PGPIPE_OK ? "" : " (stopped: nothing kept)");
    } else if (!strcmp(sub, "export") && *arg) {
        long long cnt = 0;
        rc = pgpipe_records_export(h, arg, NULL, fields_only, &cnt);
        if (rc == PGPIPE_OK && strcmp(arg, "-"))
            fprintf(sh->out, "exported %lld records to %s\n", cnt, arg);
    } else {
        errorf("usage: .records COLLECTION create JSON | get ID | update [--replace] ID JSON | "
               "delete ID | count [FILTER] | find [--sort P] [--limit N] [--offset N] [FILTER] | "
               "import FILE | export FILE");
        rc = PGPIPE_MISUSE;
        goto out;
    }
    if (rc != PGPIPE_OK)
        print_error(pgpipe_errinfo(h));
out:
    free(arg);
    pgpipe_records_close(h);
    pgpipe_pool_close(pool, NULL);
    return rc != PGPIPE_OK;
}

/* .dlq [list|show ID|counts|replay|purge] [filters]: the dead-letter queue. */
static int cmd_dlq(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    const char *sub = argc >= 2 && argv[1][0] != '-' ? argv[1] : "list";
    int first = argc >= 2 && argv[1][0] != '-' ? 2 : 1;
    pgpipe_dlq_filter f;
    pgpipe_dlq_filter_init(&f);
    const char *table = NULL;
    int all = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--stage") && v) f.stage = v, i++;
        else if (!strcmp(a, "--source") && v) f.source = v, i++;
        else if (!strcmp(a, "--error") && v) f.error_like = v, i++;
        else if (!strcmp(a, "--since") && v) f.since = v, i++;
        else if ((!strcmp(a, "--until") || !strcmp(a, "--older-than")) && v) f.until = v, i++;
        else if (!strcmp(a, "--status") && v) f.status = v, i++;
        else if (!strcmp(a, "--limit") && v) f.limit = atoi(v), i++;
        else if (!strcmp(a, "--table") && v) table = v, i++;
        else if (!strcmp(a, "--all")) all = 1;
        else if (a[0] != '-' && atoll(a) > 0) f.id = atoll(a);
        else {
            errorf("unknown .dlq argument \"%s\" (see .help dlq)", a);
            return 1;
        }
    }
    pgpipe_error err;
    pgpipe_error_clear(&err);
    PGresult *res = NULL;
    int rc;
    if (!strcmp(sub, "list")) {
        rc = pgpipe_dlq_list(sh->conn, &f, &res, &err);
    } else if (!strcmp(sub, "show")) {
        if (f.id <= 0) {
            errorf("usage: .dlq show ID");
            return 1;
        }
        rc = pgpipe_dlq_get(sh->conn, f.id, &res, &err);
    } else if (!strcmp(sub, "counts") || !strcmp(sub, "stats")) {
        rc = pgpipe_dlq_counts(sh->conn, &f, &res, &err);
    } else if (!strcmp(sub, "replay")) {
        if (!all && f.id <= 0 && !f.stage && !f.source && !f.error_like && !f.since && !f.until) {
            errorf(".dlq replay needs an ID, a filter or --all");
            return 1;
        }
        long long ok = 0, bad = 0;
        rc = pgpipe_dlq_replay(sh->conn, &f, table, NULL, &ok, &bad, &err);
        if (rc == PGPIPE_OK)
            fprintf(sh->out, "replayed %lld, refused %lld\n", ok, bad);
    } else if (!strcmp(sub, "purge")) {
        if (all)
            f.status = "any";
        else if (f.status && !strcmp(f.status, "dead") && f.id <= 0 && !f.stage && !f.source &&
                 !f.error_like && !f.since && !f.until) {
            errorf(".dlq purge needs an ID, a filter, --older-than TIME or --all");
            return 1;
        }
        long long n = 0;
        rc = pgpipe_dlq_purge(sh->conn, &f, &n, &err);
        if (rc == PGPIPE_OK)
            fprintf(sh->out, "purged %lld\n", n);
    } else {
        errorf("unknown .dlq command \"%s\" (list, show, counts or stats, replay, purge)", sub);
        return 1;
    }
    if (rc != PGPIPE_OK) {
        print_error(&err);
        return 1;
    }
    if (res) {
        print_result(sh, res);
        PQclear(res);
    }
    return 0;
}

/* .stats: the pipeline's numbers: staging, recent loads, dead letters. */
static int cmd_stats(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    char *has = query_value(sh, "SELECT to_regclass('staging.raw_events') IS NOT NULL AND "
                                "to_regclass('pgpipe.loads') IS NOT NULL", 0, NULL);
    int installed = has && has[0] == 't';
    free(has);
    if (!installed) {
        errorf("the built-in schema is not installed (.install)");
        return 1;
    }
    int rc = run_sql(sh,
        "SELECT event_type, count(*) AS events, count(*) FILTER (WHERE NOT processed) AS pending, "
        "count(*) FILTER (WHERE attempts > 0 AND NOT processed) AS retrying, "
        "min(received_at) FILTER (WHERE NOT processed) AS oldest_pending "
        "FROM staging.raw_events GROUP BY event_type ORDER BY events DESC LIMIT 20");
    rc |= run_sql(sh,
        "SELECT id AS load, source, status, rows_read AS read, rows_loaded AS loaded, "
        "rows_dead_lettered AS dead_lettered, batches, "
        "round(extract(epoch FROM coalesce(finished_at, updated_at) - started_at)::numeric, 1) "
        "AS seconds FROM pgpipe.loads ORDER BY id DESC LIMIT 5");
    rc |= run_sql(sh,
        "SELECT stage, status, count(*) AS dead_letters, max(last_failed_at) AS latest "
        "FROM pgpipe.dead_letters GROUP BY stage, status ORDER BY stage, status");
    return rc;
}

static int cmd_quit(shell *sh, char **argv, int argc, const char *rest)
{
    (void)sh, (void)argv, (void)argc, (void)rest;
    return 2;
}

/* .load progress: a bar on stderr when it is a terminal. */
static int load_progress(void *ud, const pgpipe_load_progress *p)
{
    (void)ud;
    if (isatty(STDERR_FILENO)) {
        double rate = p->seconds > 0 ? (double)p->records_read / p->seconds : 0;
        if (p->bytes_total > 0) {
            double frac = (double)p->bytes_done / (double)p->bytes_total;
            int pct = (int)(100.0 * frac), fill = pct / 5;
            /* the time left at the byte rate so far */
            double eta = frac > 0 ? p->seconds * (1 - frac) / frac : 0;
            fprintf(stderr, "\r[%.*s%*s] %3d%% %lld rows, %lld dead-lettered, %.0f rows/s, ETA %d:%02d ",
                    fill, "####################", 20 - fill, "", pct, p->rows_loaded, p->rows_dead,
                    rate, (int)eta / 60, (int)eta % 60);
        } else {
            fprintf(stderr, "\r%lld rows, %lld dead-lettered, %.1f MB, %.0f rows/s ", p->rows_loaded,
                    p->rows_dead, (double)p->bytes_done / 1048576.0, rate);
        }
        fflush(stderr);
    }
    return interrupted;
}

/* Appends word to buf as the dot-command splitter reads it back: bare when
** it has no blank or quote, else in double quotes (single quotes when it has
** a double quote). */
static void append_word(char *buf, size_t size, const char *word)
{
    size_t n = strlen(buf);
    int plain = *word && !strpbrk(word, " \t\n'\"");
    char q = strchr(word, '"') ? '\'' : '"';
    snprintf(buf + n, size - n, "%s%s%s%s", n ? " " : "", plain ? "" : (q == '"' ? "\"" : "'"), word,
             plain ? "" : (q == '"' ? "\"" : "'"));
}

/* Appends s to buf in single quotes for a POSIX shell. */
static void append_shell_quoted(char *buf, size_t size, const char *s)
{
    size_t n = strlen(buf);
    if (n + 1 < size)
        buf[n++] = '\'';
    for (; *s && n + 5 < size; s++) {
        if (*s == '\'') {
            memcpy(buf + n, "'\\''", 4);
            n += 4;
        } else {
            buf[n++] = *s;
        }
    }
    if (n + 1 < size)
        buf[n++] = '\'';
    buf[n] = '\0';
}

/* After Ctrl-C stopped a .load: the command that resumes it (the same file
** with the same options; the batches committed so far are skipped, as the
** load is found again by its file or --key). */
static void load_resume_hint(shell *sh, char **argv, int argc, const char *file,
                             const pgpipe_load_summary *s)
{
    if (!strcmp(file, "-")) {
        fprintf(stderr, "pgpipe: .load interrupted after %lld batch%s; a load from stdin cannot be "
                        "resumed\n", s->batches, s->batches == 1 ? "" : "es");
        return;
    }
    char dot[4096] = "", full[4096] = "", ci[2048] = "";
    char *abs = realpath(file, NULL);
    for (int i = 0; i < argc; i++)
        append_word(dot, sizeof dot, i == 0 ? ".load" : argv[i] == file && abs ? abs : argv[i]);
    free(abs);
    /* the connection, without its password (libpq finds it again in
    ** PGPASSWORD or ~/.pgpass) */
    const char *keys[4] = { "host", "port", "user", "dbname" };
    const char *vals[4] = { PQhost(sh->conn), PQport(sh->conn), PQuser(sh->conn), PQdb(sh->conn) };
    for (int i = 0; i < 4; i++) {
        if (!vals[i] || !*vals[i])
            continue;
        size_t n = strlen(ci);
        int plain = !strpbrk(vals[i], " \t\n'\\");
        snprintf(ci + n, sizeof ci - n, "%s%s=%s", n ? " " : "", keys[i], plain ? "" : "'");
        for (const char *v = vals[i]; *v && strlen(ci) + 3 < sizeof ci; v++) {
            n = strlen(ci);
            if (*v == '\'' || *v == '\\')
                ci[n++] = '\\';
            ci[n++] = *v;
            ci[n] = '\0';
        }
        if (!plain)
            strcat(ci, "'");
    }
    snprintf(full, sizeof full, "pgpipe ");
    append_shell_quoted(full, sizeof full, ci);
    strcat(full, " ");
    append_shell_quoted(full, sizeof full, dot);
    fprintf(stderr, "pgpipe: .load interrupted: %lld batch%s (%lld rows) committed. Resume it with the "
                    "same command; committed batches are skipped:\n  %s\nor from a shell:\n  %s\n",
            s->batches, s->batches == 1 ? "" : "es", s->rows_loaded, dot, full);
}

/* .load FILE [options]: the COPY loader (see .help load). */
static int cmd_load(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    const char *file = NULL;
    pgpipe_load_column cols[64];
    const char *req[64];
    char *mapbuf = NULL, *reqbuf = NULL;
    int bad = 0;
    for (int i = 1; i < argc && !bad; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-' || !strcmp(a, "-")) {
            if (file) bad = 1;
            file = a;
            continue;
        }
        if (!v) { bad = 1; break; }
        i++;
        if (!strcmp(a, "--format")) {
            o.format = !strcmp(v, "csv") ? PGPIPE_FORMAT_CSV : !strcmp(v, "ndjson") ? PGPIPE_FORMAT_NDJSON
                     : !strcmp(v, "json") ? PGPIPE_FORMAT_JSON : !strcmp(v, "auto") ? PGPIPE_FORMAT_AUTO : -1;
            bad = o.format < 0;
        } else if (!strcmp(a, "--table")) o.target = v;
        else if (!strcmp(a, "--event-type-field")) o.event_type_field = v;
        else if (!strcmp(a, "--event-type") || !strcmp(a, "--type")) o.event_type_value = v;
        else if (!strcmp(a, "--source-field")) o.source_field = v;
        else if (!strcmp(a, "--source")) o.source_value = v;
        else if (!strcmp(a, "--received-at-field")) o.received_at_field = v;
        else if (!strcmp(a, "--payload-field")) o.payload_field = v;
        else if (!strcmp(a, "--name")) o.source_name = v;
        else if (!strcmp(a, "--key")) o.load_key = v;
        else if (!strcmp(a, "--channel")) o.notify_channel = v;
        else if (!strcmp(a, "--batch-rows")) o.batch_rows = atoi(v);
        else if (!strcmp(a, "--batch-bytes")) o.batch_bytes = (size_t)atoll(v);
        else if (!strcmp(a, "--connections")) o.connections = atoi(v);
        else if (!strcmp(a, "--max-record-bytes")) o.max_record_bytes = (size_t)atoll(v);
        else if (!strcmp(a, "--delimiter")) o.csv_delimiter = !strcmp(v, "tab") ? '\t' : v[0];
        else if (!strcmp(a, "--require") || !strcmp(a, "--map")) {
            int map = !strcmp(a, "--map");
            char *buf = strdup(v);
            if (!buf) { bad = 1; break; }
            if (map) { free(mapbuf); mapbuf = buf; } else { free(reqbuf); reqbuf = buf; }
            int n = 0;
            for (char *t = strtok(buf, ","); t && n < 64; t = strtok(NULL, ",")) {
                if (!map) { req[n++] = t; continue; }
                char *eq = strchr(t, '=');
                memset(&cols[n], 0, sizeof cols[n]);
                cols[n].column = t;
                if (eq) {
                    *eq = '\0';
                    /* col=field, col=json:field (validated JSON), col='text' (fixed) */
                    if (eq[1] == '\'') {
                        cols[n].value = eq + 2;
                        size_t k = strlen(eq + 2);
                        if (k && eq[1 + k] == '\'') eq[1 + k] = '\0';
                    } else if (!strncmp(eq + 1, "json:", 5)) {
                        cols[n].field = eq + 6;
                        cols[n].json = 1;
                    } else {
                        cols[n].field = eq + 1;
                    }
                } else {
                    cols[n].field = t;
                }
                n++;
            }
            if (map) { o.columns = cols; o.ncolumns = n; } else { o.required = req; o.nrequired = n; }
        } else bad = 1;
    }
    if (bad || !file) {
        errorf("usage: .load FILE|- [--format csv|ndjson|json] [--table T --map col=field,...] ...  (.help load)");
        free(mapbuf);
        free(reqbuf);
        return 1;
    }
    /* one stream goes through the shell's own connection; more open their
    ** own connections to the same server */
    char *ci = NULL;
    if (o.connections == 1) {
        o.conn = sh->conn;
    } else if (!(ci = work_conninfo(sh->conn))) {
        errorf("out of memory");
        free(mapbuf);
        free(reqbuf);
        return 1;
    } else {
        o.conninfo = ci;
    }
    o.progress = load_progress;
    interrupted = 0;
    pgpipe_loader *l = NULL;
    int rc = pgpipe_loader_open(&o, &l);
    if (rc == PGPIPE_OK)
        rc = pgpipe_loader_load_file(l, file);
    if (isatty(STDERR_FILENO))
        fprintf(stderr, "\r%100s\r", "");
    pgpipe_load_summary s;
    pgpipe_loader_summary(l, &s);
    if (s.load_id > 0) {
        char line[512];
        pgpipe_load_summary_format(&s, line, sizeof line);
        fprintf(sh->out, "load %lld of %s: %s\n", s.load_id, file, line);
        if (isatty(fileno(sh->out)))  /* a person reads it: the same as a table */
            fprintf(sh->out, "  %12s %12s %14s %8s %9s %10s\n"
                             "  %12lld %12lld %14lld %8lld %9.2f %10.0f\n",
                    "read", "loaded", "dead-lettered", "batches", "seconds", "rows/s",
                    s.records_read, s.rows_loaded, s.rows_dead, s.batches, s.seconds,
                    s.rows_per_sec);
    }
    if (rc != PGPIPE_OK && interrupted)
        load_resume_hint(sh, argv, argc, file, &s);
    else if (rc != PGPIPE_OK)
        print_error(pgpipe_errinfo(l));
    pgpipe_loader_close(l);
    free(ci);
    free(mapbuf);
    free(reqbuf);
    return rc == PGPIPE_OK ? 0 : 1;
}

static const command commands[] = {
    { "connect", ".connect [CONNINFO|DBNAME]",
      "open a new connection (a conninfo, or another database with the current settings;\n"
      "none: the same again) and switch to it; when it fails the shell keeps the one it has", cmd_connect },
    { "conninfo", ".conninfo", "show the database, user and host of the connection, or that it was lost", cmd_conninfo },
    { "dlq", ".dlq [list|show ID|counts|stats|replay|purge] [--stage S] [--source S] ...",
      "the dead-letter queue: list (newest first) and filter by --stage load|process, --source,\n"
      "--error TEXT, --since TIME, --until TIME, --status dead|replayed|any, --limit N; show ID;\n"
      "counts (or stats) by error; replay ID|filter|--all [--table T] back to staging as unprocessed;\n"
      "purge ID|filter|--older-than TIME|--all", cmd_dlq },
    { "explain", ".explain SQL",
      "run EXPLAIN (ANALYZE, BUFFERS) on SQL and point out sequential scans of large tables\n"
      "and row estimates far from the actual counts", cmd_explain },
    { "export", ".export \"QUERY\" FILE [--format csv|ndjson]",
      "write the rows of QUERY to FILE (- for stdout) through COPY TO STDOUT", cmd_export },
    { "health", ".health",
      "cache hit ratio against the 95% target, unprocessed backlog and the age of its\n"
      "oldest event, dead letters and their growth, partitions ahead, connections", cmd_health },
    { "help", ".help [COMMAND]", "list the commands, or explain one", cmd_help },
    { "install", ".install [--example]",
      "install (or update) the built-in schema; --example adds the three-layer example\n"
      "pipeline (staging, production, analytics). Idempotent.", cmd_install },
    { "listen", ".listen CHANNEL [--count N] [--timeout SECONDS]",
      "LISTEN on CHANNEL and print notifications as they arrive (Ctrl-C stops)", cmd_listen },
    { "load", ".load FILE|- [--format F] [--table T --map COL=FIELD,...] [...]",
      "load CSV, NDJSON or a JSON array into staging.raw_events (or T) with the COPY loader:\n"
      "validated, batched, bad records to pgpipe.dead_letters, resumable (the same file again\n"
      "skips what was committed). Options: --format csv|ndjson|json, --event-type-field F,\n"
      "--event-type TEXT (or --type), --source-field F, --source TEXT, --payload-field F,\n"
      "--received-at-field F, --require F1,F2, --batch-rows N, --batch-bytes N,\n"
      "--connections N (COPY streams side by side; default 2), --max-record-bytes N (longer records are dead-lettered; default 64 MiB),\n"
      "--channel NAME ('' = no NOTIFY), --key LOADKEY, --name SOURCE, --delimiter C|tab,\n"
      "--table T --map col=field,col=json:field,col='fixed text'", cmd_load },
    { "migrate", ".migrate [DIR] [--status|--dry-run|--baseline V|--repair]",
      "apply the migrations in DIR (default ./migrations): V<version>__<name>.sql once each,\n"
      "in version order, then changed R__<name>.sql; --status shows applied, pending,\n"
      "changed and missing ones; --dry-run changes nothing; --baseline V records versions\n"
      "up to V as applied; --repair accepts edited files", cmd_migrate },
    { "mode", ".mode [aligned|csv|json|line]", "set how query results are printed", cmd_mode },
    { "partitions", ".partitions [list|ahead DAYS|retain DAYS [--detach-only]]",
      "list the daily partitions of staging.raw_events, create them DAYS ahead, or drop\n"
      "(or detach) those older than DAYS", cmd_partitions },
    { "quit", ".quit", "leave the shell (also .exit, Ctrl-D)", cmd_quit },
    { "exit", ".exit", "leave the shell", cmd_quit },
    { "read", ".read FILE", "run the SQL and dot commands in FILE", cmd_read },
    { "records", ".records COLLECTION create JSON|get ID|find FILTER|import FILE|export FILE",
      "the record store: JSON documents in the table records.COLLECTION (made on first use).\n"
      "create JSON (prints the id); get ID; update [--replace] ID JSON (merges top-level keys\n"
      "unless --replace); delete ID; count [FILTER]; find [--sort [-]PATH|@created_at]\n"
      "[--limit N] [--offset N] [FILTER] (one JSON document per line); import FILE\n"
      "[--documents] [--stop-on-error] (NDJSON or a JSON array; bad records are reported with\n"
      "file:line:column and skipped); export FILE|- [--fields] (NDJSON). FILTER:\n"
      "  name = \"Alice\" and age > 30 and tags contains [\"x\"] and address.city in [\"Paris\"]\n"
      "operators = != < <= > >= in exists contains like ilike; paths a.b, \"key.with.dot\",\n"
      "@metadata.KEY; numbers compare numerically (also \"10\" > \"9\"), other values as text", cmd_records },
    { "refresh", ".refresh VIEW [--concurrently]",
      "REFRESH MATERIALIZED VIEW (CONCURRENTLY needs a unique index on the view)", cmd_refresh },
    { "stats", ".stats",
      "events in staging by type (pending, retrying, oldest pending), the last loads,\n"
      "and dead letters by stage and status", cmd_stats },
    { "timer", ".timer on|off", "print the time each statement takes", cmd_timer },
    { "version", ".version", "show the pgpipe, libpq and server versions", cmd_version },
    { "work", ".work [N] --sql \"SQL\"|FILE | --mark [--workers N] [--batch N] [--until-empty] ...",
      "process staging.raw_events with N SKIP LOCKED workers until Ctrl-C (or --until-empty):\n"
      "--sql runs one statement per batch with $1 = the claimed rows as a JSONB array, --mark\n"
      "only marks them processed; --table T, --source S, --event-type E, --order id|received,\n"
      "--lease MS (lease mode), --max-attempts N, --backoff MS, --channel C, --poll MS,\n"
      "--alert N (warn when more than N dead letters arrive within 5 minutes), --quiet", cmd_work },
    { NULL, NULL, NULL, NULL },
};

static int cmd_help(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    if (argc >= 2) {
        const char *name = argv[1][0] == '.' ? argv[1] + 1 : argv[1];
        for (const command *c = commands; c->name; c++)
            if (!strcmp(c->name, name)) {
                fprintf(sh->out, "%s\n\n%s\n", c->usage, c->help);
                return 0;
            }
        errorf("no command .%s (try .help)", name);
        return 1;
    }
    for (const command *c = commands; c->name; c++) {
        const char *nl = strchr(c->help, '\n');
        fprintf(sh->out, "%-52s %.*s\n", c->usage, nl ? (int)(nl - c->help) : (int)strlen(c->help),
                c->help);
    }
    fprintf(sh->out, "\nSQL ended by ';' is sent to the server as typed. .help COMMAND explains one.\n");
    return 0;
}

static int run_dot(shell *sh, const char *line)
{
    char *copy = strdup(line);
    if (!copy)
        return 1;
    /* the rest of the line after the command name, unsplit (for .explain) */
    const char *rest = line + 1;
    while (*rest && !isspace((unsigned char)*rest))
        rest++;
    char *argv[32];
    int argc = split_words(copy, argv, 32);
    int rc = 1;
    const char *name = argv[0] + 1;
    const command *found = NULL;
    for (const command *c = commands; c->name; c++)
        if (!strcmp(c->name, name))
            found = c;
    if (found)
        rc = found->fn(sh, argv, argc, rest);
    else
        errorf("unknown command: .%s (try .help)", name);
    free(copy);
    return rc;
}

/* ---- the connection: lost, reset, switched --------------------------------- */

/* "database "d" as user "u" on host h port p" (or "on socket dir ..."). */
static void describe_conn(PGconn *conn, char *buf, size_t size)
{
    const char *host = PQhost(conn);
    snprintf(buf, size, "database \"%s\" as user \"%s\" on %s%s port %s", PQdb(conn), PQuser(conn),
             host && host[0] == '/' ? "socket dir " : "host ", host ? host : "", PQport(conn));
}

/* The connection is good again (reset or new): the Ctrl-C handler cancels
** on it from now on. */
static void connection_ready(shell *sh)
{
    set_cancel_handle(PQgetCancel(sh->conn));
    sh->lost = 0;
}

static void conn_error_line(PGconn *conn, char *buf, size_t size)
{
    char masked[2048];
    pgpipe_conninfo_mask(PQerrorMessage(conn), masked, sizeof masked);
    for (char *p = masked; *p; p++)
        if (*p == '\n')
            *p = p[1] ? ' ' : '\0';
    size_t n = strlen(masked);
    if (n >= size)
        n = size - 1;
    memcpy(buf, masked, n);
    buf[n] = '\0';
}

/* After a command: a connection that broke during it is said once, and
** reset at once, as psql does; when the reset fails too, the next command
** tries again (ensure_connected). */
static void check_connection(shell *sh)
{
    if (!sh->conn || PQstatus(sh->conn) != CONNECTION_BAD || sh->lost)
        return;
    sh->lost = 1;
    fprintf(stderr, "pgpipe: the connection to the server was lost. Attempting reset: ");
    fflush(stderr);
    PQreset(sh->conn);
    if (PQstatus(sh->conn) == CONNECTION_OK) {
        fprintf(stderr, "succeeded.\n");
        connection_ready(sh);
    } else {
        char msg[1024];
        conn_error_line(sh->conn, msg, sizeof msg);
        fprintf(stderr, "failed (%s); trying again before the next command.\n", msg);
    }
}

/* Before a command that needs the server: 0 when connected (after a reset
** if the connection was lost), 1 with the error said when not. */
static int ensure_connected(shell *sh)
{
    if (PQstatus(sh->conn) == CONNECTION_OK)
        return 0;
    PQreset(sh->conn);
    if (PQstatus(sh->conn) == CONNECTION_OK) {
        char d[1024];
        describe_conn(sh->conn, d, sizeof d);
        fprintf(stderr, "pgpipe: reconnected to %s\n", d);
        connection_ready(sh);
        return 0;
    }
    char msg[1024];
    conn_error_line(sh->conn, msg, sizeof msg);
    sh->lost = 1;
    errorf("not connected to the server (reconnecting failed: %s); the command was not run", msg);
    return 1;
}

/* .connect [CONNINFO|DBNAME]: the new connection is opened first; on success
** the shell switches to it, on failure it keeps the one it has. */
static int cmd_connect(shell *sh, char **argv, int argc, const char *rest)
{
    /* the whole rest of the line is the conninfo (quotes around it optional) */
    char whole[4096];
    while (isspace((unsigned char)*rest))
        rest++;
    snprintf(whole, sizeof whole, "%s", rest);
    size_t wl = strlen(whole);
    while (wl && isspace((unsigned char)whole[wl - 1]))
        whole[--wl] = '\0';
    if (wl >= 2 && (whole[0] == '\'' || whole[0] == '"') && whole[wl - 1] == whole[0]) {
        memmove(whole, whole + 1, wl - 2);
        whole[wl - 2] = '\0';
    }
    int ci = argc >= 2 && is_conninfo(whole);
    if (argc > 2 && !ci) {
        errorf("usage: .connect [CONNINFO|DBNAME]");
        return 1;
    }
    PGconn *nc;
    if (ci) {
        nc = PQconnectdb(whole);
    } else {
        /* the current parameters, with another database when one is named */
        PQconninfoOption *opts = PQconninfo(sh->conn);
        if (!opts) {
            errorf("out of memory");
            return 1;
        }
        const char *keys[64], *vals[64];
        int n = 0;
        for (PQconninfoOption *o = opts; o->keyword && n < 62; o++)
            if (o->val && *o->val && strcmp(o->keyword, "dbname")) {
                keys[n] = o->keyword;
                vals[n++] = o->val;
            }
        keys[n] = "dbname";
        vals[n++] = argc == 2 ? argv[1] : PQdb(sh->conn);
        keys[n] = vals[n] = NULL;
        nc = PQconnectdbParams(keys, vals, 0);
        PQconninfoFree(opts);
    }
    if (!nc) {
        errorf("out of memory");
        return 1;
    }
    if (PQstatus(nc) != CONNECTION_OK) {
        char msg[1024], d[1024];
        conn_error_line(nc, msg, sizeof msg);
        PQfinish(nc);
        if (PQstatus(sh->conn) == CONNECTION_OK) {
            describe_conn(sh->conn, d, sizeof d);
            errorf("cannot connect: %s (still connected to %s)", msg, d);
        } else {
            errorf("cannot connect: %s (and not connected)", msg);
        }
        return 1;
    }
    PGconn *old = sh->conn;
    sh->conn = nc;
    connection_ready(sh);
    PQfinish(old);
    char d[1024];
    describe_conn(sh->conn, d, sizeof d);
    fprintf(sh->out, "connected to %s\n", d);
    return 0;
}

/* Dot commands that work without the server (or report on it themselves). */
static int needs_server(const char *line)
{
    static const char *const local[] = { "help", "mode", "timer", "quit", "exit", "connect",
                                         "conninfo", "read", NULL };
    const char *name = line + 1;
    size_t n = strcspn(name, " \t");
    for (int i = 0; local[i]; i++)
        if (strlen(local[i]) == n && !strncmp(name, local[i], n))
            return 0;
    return 1;
}

/* ---- psql's backslash commands ------------------------------------------- */

/* A backslash command at the start of a statement: those pgpipe has an
** equivalent for run it; the others get one line saying so. */
static int run_backslash(shell *sh, const char *line)
{
    while (isspace((unsigned char)*line))
        line++;
    char *copy = strdup(line + 1);
    if (!copy) {
        errorf("out of memory");
        return 1;
    }
    char *argv[8];
    int argc = split_words(copy, argv, 8);
    const char *name = argc ? argv[0] : "";
    const char *arg = argc > 1 ? argv[1] : NULL;
    char cmd[2048];
    int rc = -1;
    cmd[0] = '\0';
    if (!strcmp(name, "q")) {
        rc = 2;
    } else if (!strcmp(name, "?")) {
        snprintf(cmd, sizeof cmd, ".help");
    } else if (!strcmp(name, "conninfo")) {
        snprintf(cmd, sizeof cmd, ".conninfo");
    } else if ((!strcmp(name, "i") || !strcmp(name, "include") || !strcmp(name, "ir") ||
                !strcmp(name, "include_relative")) && argc == 2) {
        /* \ir: relative to the directory of the script it is in */
        const char *slash = strrchr(sh->source, '/');
        if (name[1] == 'r' && arg[0] != '/' && sh->located && slash)
            snprintf(cmd, sizeof cmd, "%.*s/%s", (int)(slash - sh->source), sh->source, arg);
        else
            snprintf(cmd, sizeof cmd, "%s", arg);
        char *av[2] = { (char *)"read", cmd };
        rc = cmd_read(sh, av, 2, "");
    } else if (!strcmp(name, "i") || !strcmp(name, "include") || !strcmp(name, "ir") ||
               !strcmp(name, "include_relative")) {
        errorf("usage: \\%s FILE", name);
        rc = 1;
    } else if (!strcmp(name, "timing") && argc <= 2) {
        if (arg && strcmp(arg, "on") && strcmp(arg, "off")) {
            errorf("\\timing: use on or off, not \"%s\"", arg);
            rc = 1;
        } else {
            sh->timer = arg ? !strcmp(arg, "on") : !sh->timer;
            fprintf(sh->out, "Timing is %s.\n", sh->timer ? "on" : "off");
            rc = 0;
        }
    } else if (!strcmp(name, "x") && argc <= 2) {
        /* expanded output is .mode line; \x toggles it with aligned */
        if (arg && strcmp(arg, "on") && strcmp(arg, "off")) {
            errorf("\\x: use on or off, not \"%s\"", arg);
            rc = 1;
        } else {
            int on = arg ? !strcmp(arg, "on") : sh->mode != MODE_LINE;
            sh->mode = on ? MODE_LINE : MODE_ALIGNED;
            fprintf(sh->out, "Expanded display is %s.\n", on ? "on (.mode line)" : "off (.mode aligned)");
            rc = 0;
        }
    } else if ((!strcmp(name, "c") || !strcmp(name, "connect")) && argc <= 2) {
        char *av[2] = { (char *)"connect", (char *)arg };
        rc = cmd_connect(sh, av, argc, arg ? arg : "");
    } else if (name[0] == 'd' && strspn(name, "dtivsmnfuEST+ac") == strlen(name)) {
        errorf("\\%s: not available in pgpipe; try .stats, or SELECT ... FROM information_schema.tables",
               name);
        rc = 1;
    } else {
        errorf("invalid command \\%s (try .help)", name);
        rc = 1;
    }
    free(copy);
    if (rc < 0)
        return run_command(sh, cmd);
    if (rc == 1)
        sh->failures++;
    fflush(sh->out);
    return rc;
}

/* Runs one command: a dot command or SQL. 0 success, 1 failure, 2 quit. */
static int run_command(shell *sh, const char *cmd)
{
    while (isspace((unsigned char)*cmd))
        cmd++;
    if (!*cmd)
        return 0;
    int rc;
    if (cmd[0] == '.') {
        int bad = 0;
        if (!strncmp(cmd, ".health", 7) && (!cmd[7] || isspace((unsigned char)cmd[7]))) {
            /* .health says itself that the server is unreachable */
            if (PQstatus(sh->conn) != CONNECTION_OK) {
                PQreset(sh->conn);
                if (PQstatus(sh->conn) == CONNECTION_OK)
                    connection_ready(sh);
            }
        } else {
            bad = needs_server(cmd) && sh->conn && ensure_connected(sh);
        }
        rc = bad ? 1 : run_dot(sh, cmd);
        check_connection(sh);
    } else if (cmd[0] == '\\') {
        return run_backslash(sh, cmd);
    } else {
        rc = ensure_connected(sh) ? 1 : run_user_sql(sh, cmd, NULL, 0);
        check_connection(sh);
    }
    if (rc == 1)
        sh->failures++;
    fflush(sh->out);
    return rc;
}

/* ---- statement assembly -------------------------------------------------- */

/* SQL is gathered line by line until the library's splitter (the one the
** migration runner uses: quotes, $$ bodies, BEGIN ATOMIC, COPY ... FROM stdin
** data ended by \.) says the buffer holds only complete statements; then
** each runs in turn. Returns 1 when the buffer was consumed (run or
** rejected), 0 when more input is needed. */
static int run_buffer(shell *sh, const char *buf, size_t len, long long first_line, int at_eof,
                      int *rc)
{
    pgpipe_sql_split *sp = NULL;
    if (pgpipe_sql_split_open(&sp, buf, len, sh->interactive ? "<stdin>" : sh->source) != PGPIPE_OK) {
        errorf("out of memory");
        pgpipe_sql_split_close(sp);
        *rc = 1;
        return 1;
    }
    pgpipe_sql_stmt st;
    int r;
    while ((r = pgpipe_sql_split_next(sp, &st)) == PGPIPE_ROW)
        ;
    if (!at_eof && pgpipe_sql_split_incomplete(sp)) {
        pgpipe_sql_split_close(sp);
        return 0;
    }
    if (r == PGPIPE_PARSE) {
        pgpipe_error e = *pgpipe_errinfo(sp);
        if (e.line > 0) /* the buffer starts at first_line of the input */
            e.line += first_line - 1;
        where_source = NULL; /* the error names its place itself */
        print_error(&e);
        sh->failures++;
        *rc = 1;
        pgpipe_sql_split_close(sp);
        return 1;
    }
    pgpipe_sql_split_close(sp);
    /* complete: split again and run the statements one by one */
    pgpipe_sql_split_open(&sp, buf, len, sh->source);
    *rc = 0;
    while (pgpipe_sql_split_next(sp, &st) == PGPIPE_ROW) {
        char *sql = strndup(st.sql, st.len);
        if (!sql) {
            *rc = 1;
            break;
        }
        if (sh->located) { /* errors name the statement's first line */
            where_source = sh->source;
            where_line = first_line + st.line - 1;
        }
        int one = ensure_connected(sh) ? 1 : run_user_sql(sh, sql, st.copy_data, st.copy_len);
        check_connection(sh);
        where_source = NULL;
        free(sql);
        fflush(sh->out);
        if (one) {
            sh->failures++;
            *rc = 1;
            if (sh->bail && !sh->interactive)
                break;
        }
        if (interrupted || terminating)
            break;
    }
    pgpipe_sql_split_close(sp);
    return 1;
}

/* A line can only complete a statement when it ends with ';' or is the \.
** that ends COPY data: the buffer is not split again for other lines. */
static int may_complete(const char *line, size_t n)
{
    while (n && isspace((unsigned char)line[n - 1]))
        n--;
    return (n && line[n - 1] == ';') || (n == 2 && line[0] == '\\' && line[1] == '.');
}

/* ---- line editing -------------------------------------------------------- */

#define HISTORY_MAX 500

typedef struct editor {
    struct termios saved;
    int raw;
    char *history[HISTORY_MAX];
    int nhistory;
    char path[1024];
    int cancelled; /* the last line was ended by Ctrl-C */
} editor;

static editor ed;

static void ed_raw(int on)
{
    if (on && !ed.raw) {
        if (tcgetattr(STDIN_FILENO, &ed.saved) != 0)
            return;
        struct termios t = ed.saved;
        t.c_iflag &= (tcflag_t) ~(BRKINT | ICRNL | INPCK | ISTRIP | IXON);
        t.c_lflag &= (tcflag_t) ~(ECHO | ICANON | IEXTEN | ISIG);
        t.c_cc[VMIN] = 1;
        t.c_cc[VTIME] = 0;
        if (tcsetattr(STDIN_FILENO, TCSANOW, &t) == 0)
            ed.raw = 1;
    } else if (!on && ed.raw) {
        tcsetattr(STDIN_FILENO, TCSADRAIN, &ed.saved);
        ed.raw = 0;
    }
}

/* SQL's PASSWORD 'literal' (CREATE/ALTER ROLE ... PASSWORD 'x') with the
** literal replaced by '********', into out (size bytes). */
static void mask_sql_password(const char *in, char *out, size_t size)
{
    size_t o = 0;
    const char *p = in;
    while (*p && o + 1 < size) {
        if ((*p == 'p' || *p == 'P') && !strncasecmp(p, "password", 8) &&
            (p == in || !(isalnum((unsigned char)p[-1]) || p[-1] == '_'))) {
            const char *q = p + 8;
            while (isspace((unsigned char)*q))
                q++;
            if (*q == '\'' || (*q == 'E' && q[1] == '\'') || (*q == 'e' && q[1] == '\'')) {
                /* copy up to the quote, then stars, then skip the literal */
                const char *lit = *q == '\'' ? q : q + 1;
                for (const char *c = p; c <= lit && o + 1 < size; c++)
                    out[o++] = *c;
                for (const char *st = "********'"; *st && o + 1 < size; st++)
                    out[o++] = *st;
                const char *e = lit + 1;
                while (*e && !(*e == '\'' && e[1] != '\'')) {
                    if ((*e == '\'' && e[1] == '\'') || (*e == '\\' && e[1]))
                        e++;
                    e++;
                }
                p = *e ? e + 1 : e;
                continue;
            }
        }
        out[o++] = *p++;
    }
    out[o] = '\0';
}

static void ed_history_add(const char *line)
{
    if (!*line || (ed.nhistory && !strcmp(ed.history[ed.nhistory - 1], line)))
        return;
    /* a password typed into a connection string, or given to CREATE/ALTER
    ** ROLE ... PASSWORD '...', never reaches the history */
    char masked[4096], sqlmasked[4096];
    pgpipe_conninfo_mask(line, sqlmasked, sizeof sqlmasked);
    mask_sql_password(sqlmasked, masked, sizeof masked);
    for (char *p = masked; *p; p++) /* one history line per statement */
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    char *copy = strdup(masked);
    if (!copy)
        return;
    if (ed.nhistory == HISTORY_MAX) {
        free(ed.history[0]);
        memmove(ed.history, ed.history + 1, sizeof ed.history[0] * (HISTORY_MAX - 1));
        ed.nhistory--;
    }
    ed.history[ed.nhistory++] = copy;
}

static void ed_history_load(void)
{
    const char *home = getenv("HOME");
    const char *file = getenv("PGPIPE_HISTORY");
    if (file)
        snprintf(ed.path, sizeof ed.path, "%s", file);
    else if (home)
        snprintf(ed.path, sizeof ed.path, "%s/.pgpipe_history", home);
    FILE *f = ed.path[0] ? fopen(ed.path, "r") : NULL;
    if (!f)
        return;
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        ed_history_add(line);
    }
    fclose(f);
}

static void ed_history_save(void)
{
    FILE *f = ed.path[0] ? fopen(ed.path, "w") : NULL;
    if (f) {
        for (int i = 0; i < ed.nhistory; i++)
            fprintf(f, "%s\n", ed.history[i]);
        fclose(f);
    }
    for (int i = 0; i < ed.nhistory; i++)
        free(ed.history[i]);
    ed.nhistory = 0;
}

static void ed_refresh(const char *prompt, const char *buf, size_t len, size_t pos)
{
    char seq[64];
    fputs("\r", stdout);
    fputs(prompt, stdout);
    fwrite(buf, 1, len, stdout);
    fputs("\x1b[K\r", stdout);
    size_t col = display_width(prompt);
    for (size_t i = 0; i < pos; i++)
        if (((unsigned char)buf[i] & 0xC0) != 0x80)
            col++;
    if (col) {
        snprintf(seq, sizeof seq, "\x1b[%zuC", col);
        fputs(seq, stdout);
    }
    fflush(stdout);
}

/* Reads one line with editing; NULL at end of input. The caller frees it. */
static char *ed_readline(const char *prompt)
{
    size_t cap = 256, len = 0, pos = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    int hist = ed.nhistory; /* index being shown; nhistory = the new line */
    char *draft = NULL;
    ed_raw(1);
    ed_refresh(prompt, buf, len, pos);
    for (;;) {
        unsigned char c;
        ssize_t r = read(STDIN_FILENO, &c, 1);
        if (r <= 0) {
            if (r < 0 && errno == EINTR && !terminating)
                continue;
            if (terminating) {
                free(buf);
                buf = NULL;
                break;
            }
            if (len)
                break;
            free(buf);
            buf = NULL;
            break;
        }
        if (c == '\r' || c == '\n') {
            break;
        } else if (c == 4) { /* Ctrl-D */
            if (len == 0) {
                free(buf);
                buf = NULL;
                break;
            }
            if (pos < len) {
                memmove(buf + pos, buf + pos + 1, len - pos - 1);
                len--;
            }
        } else if (c == 3) { /* Ctrl-C: drop the line (and the caller its buffer) */
            len = pos = 0;
            ed.cancelled = 1;
            fputs("^C", stdout);
            break;
        } else if (c == 127 || c == 8) {
            if (pos > 0) {
                size_t start = pos - 1;
                while (start > 0 && ((unsigned char)buf[start] & 0xC0) == 0x80)
                    start--;
                memmove(buf + start, buf + pos, len - pos);
                len -= pos - start;
                pos = start;
            }
        } else if (c == 1) {
            pos = 0;
        } else if (c == 5) {
            pos = len;
        } else if (c == 11) { /* Ctrl-K */
            len = pos;
        } else if (c == 21) { /* Ctrl-U */
            memmove(buf, buf + pos, len - pos);
            len -= pos;
            pos = 0;
        } else if (c == 23) { /* Ctrl-W */
            size_t start = pos;
            while (start > 0 && buf[start - 1] == ' ')
                start--;
            while (start > 0 && buf[start - 1] != ' ')
                start--;
            memmove(buf + start, buf + pos, len - pos);
            len -= pos - start;
            pos = start;
        } else if (c == 12) { /* Ctrl-L */
            fputs("\x1b[H\x1b[2J", stdout);
        } else if (c == 2 || c == 6) {
            if (c == 2 && pos > 0)
                do pos--; while (pos > 0 && ((unsigned char)buf[pos] & 0xC0) == 0x80);
            if (c == 6 && pos < len)
                do pos++; while (pos < len && ((unsigned char)buf[pos] & 0xC0) == 0x80);
        } else if (c == 27) {
            unsigned char s[3];
            if (read(STDIN_FILENO, &s[0], 1) != 1 || read(STDIN_FILENO, &s[1], 1) != 1)
                continue;
            int key = 0;
            if (s[0] == '[' && s[1] >= '0' && s[1] <= '9') {
                if (read(STDIN_FILENO, &s[2], 1) != 1)
                    continue;
                key = s[1] == '3' ? 'X' : s[1] == '1' || s[1] == '7' ? 'H' : s[1] == '4' || s[1] == '8' ? 'F' : 0;
            } else if (s[0] == '[' || s[0] == 'O') {
                key = s[1];
            }
            if (key == 'D' && pos > 0)
                do pos--; while (pos > 0 && ((unsigned char)buf[pos] & 0xC0) == 0x80);
            else if (key == 'C' && pos < len)
                do pos++; while (pos < len && ((unsigned char)buf[pos] & 0xC0) == 0x80);
            else if (key == 'H')
                pos = 0;
            else if (key == 'F')
                pos = len;
            else if (key == 'X' && pos < len) {
                size_t end = pos + 1;
                while (end < len && ((unsigned char)buf[end] & 0xC0) == 0x80)
                    end++;
                memmove(buf + pos, buf + end, len - end);
                len -= end - pos;
            } else if ((key == 'A' && hist > 0) || (key == 'B' && hist < ed.nhistory)) {
                if (hist == ed.nhistory) {
                    free(draft);
                    draft = strndup(buf, len);
                }
                hist += key == 'A' ? -1 : 1;
                const char *src = hist == ed.nhistory ? (draft ? draft : "") : ed.history[hist];
                size_t n = strlen(src);
                if (n + 1 > cap) {
                    char *g = realloc(buf, n + 1);
                    if (!g)
                        continue;
                    buf = g;
                    cap = n + 1;
                }
                memcpy(buf, src, n);
                len = pos = n;
            }
        } else if (c >= 32 || c == '\t') {
            if (len + 2 > cap) {
                char *g = realloc(buf, cap * 2);
                if (!g)
                    continue;
                buf = g;
                cap *= 2;
            }
            memmove(buf + pos + 1, buf + pos, len - pos);
            buf[pos++] = (char)c;
            len++;
        }
        ed_refresh(prompt, buf, len, pos);
    }
    free(draft);
    if (buf) {
        buf[len] = '\0';
        fputs("\r\n", stdout);
    } else {
        fputs("\r\n", stdout);
    }
    ed_raw(0);
    fflush(stdout);
    return buf;
}

/* ---- input loop ---------------------------------------------------------- */

/* 1 when a line is a backslash command (psql's meta-commands), not the \.
** that ends COPY data. */
static int is_backslash_line(const char *line)
{
    while (isspace((unsigned char)*line))
        line++;
    return line[0] == '\\' && line[1] && line[1] != '.';
}

/* 1 when a backslash line after buf[0..len) is a command, as in psql: the
** buffer does not end inside a quote, comment or dollar quote, nor inside
** COPY ... FROM stdin data (where \N and the like are data). */
static int buffer_takes_meta(const char *buf, size_t len)
{
    pgpipe_sql_split *sp = NULL;
    if (pgpipe_sql_split_open(&sp, buf, len, NULL) != PGPIPE_OK) {
        pgpipe_sql_split_close(sp);
        return 0;
    }
    pgpipe_sql_stmt st;
    int r, in_copy = 0;
    while ((r = pgpipe_sql_split_next(sp, &st)) == PGPIPE_ROW)
        in_copy = st.copy_data && !st.terminated;
    pgpipe_sql_split_close(sp);
    return r == PGPIPE_DONE && !in_copy;
}

/* A backslash line while a statement is being typed: \r clears it, \p
** shows it, \g runs it; any other command runs and the statement is kept. */
static int run_meta_in_buffer(shell *sh, const char *line, char **sql, size_t *len,
                              long long first_line)
{
    while (isspace((unsigned char)*line))
        line++;
    size_t n = strcspn(line + 1, " \t");
    if (n == 1 && line[1] == 'r') {
        *len = 0;
        fprintf(sh->out, "Query buffer reset (cleared).\n");
        return 0;
    }
    if (n == 1 && line[1] == 'p') {
        fwrite(*sql, 1, *len, sh->out);
        return 0;
    }
    if (n == 1 && line[1] == 'g') {
        char *grown = realloc(*sql, *len + 3);
        if (!grown)
            return 1;
        *sql = grown;
        memcpy(*sql + *len, ";\n", 3); /* as if it ended with ';' */
        int rc = 0;
        run_buffer(sh, *sql, *len + 2, first_line, 1, &rc);
        *len = 0;
        return rc;
    }
    return run_command(sh, line);
}

/* Reads commands from f (or the terminal): dot and backslash commands take
** one line at the start of a statement; SQL runs once its statements are
** complete. In a script (not the terminal) errors name source:line, and a
** Ctrl-C ends it. */
static int run_stream(shell *sh, FILE *f)
{
    int tty = sh->interactive && f == stdin;
    int saved_located = sh->located;
    sh->located = !tty;
    char *line = NULL;
    size_t cap = 0;
    char *sql = NULL;
    size_t len = 0;
    int rc = 0;
    long long lineno = 0, first_line = 1;
    for (;;) {
        ssize_t n;
        if (terminating)
            break;
        if (tty) {
            /* a Ctrl-C ended what ran before this prompt; it is done with */
            interrupted = 0;
            free(line);
            line = ed_readline(len ? "   ...> " : "pgpipe> ");
            if (!line)
                break;
            if (ed.cancelled) { /* Ctrl-C at a prompt clears the statement, as in psql */
                ed.cancelled = 0;
                len = 0;
                lineno++;
                continue;
            }
            n = (ssize_t)strlen(line);
        } else {
            n = getline(&line, &cap, f);
            if (n < 0)
                break;
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        lineno++;
        if (len == 0)
            first_line = lineno;
        rc = 0;
        if (len == 0 && (line[0] == '.' || is_backslash_line(line))) {
            if (tty)
                ed_history_add(line);
            if (sh->located) {
                where_source = sh->source;
                where_line = lineno;
            }
            rc = run_command(sh, line);
            where_source = NULL;
        } else if (len && is_backslash_line(line) && buffer_takes_meta(sql, len)) {
            if (tty)
                ed_history_add(line);
            if (sh->located) {
                where_source = sh->source;
                where_line = lineno;
            }
            rc = run_meta_in_buffer(sh, line, &sql, &len, first_line);
            where_source = NULL;
        } else {
            char *grown = realloc(sql, len + (size_t)n + 2);
            if (!grown) {
                errorf("out of memory");
                rc = 1;
                break;
            }
            sql = grown;
            memcpy(sql + len, line, (size_t)n);
            len += (size_t)n;
            sql[len++] = '\n';
            sql[len] = '\0';
            size_t k = 0;
            while (k < len && isspace((unsigned char)sql[k]))
                k++;
            if (k == len) {
                len = 0; /* only blank lines so far */
            } else if (may_complete(line, (size_t)n) &&
                       run_buffer(sh, sql, len, first_line, 0, &rc)) {
                if (tty) {
                    sql[len - 1] = '\0';
                    ed_history_add(sql);
                }
                len = 0;
            }
        }
        if (rc == 2 || (rc && sh->bail && !tty))
            break;
        if ((interrupted && !tty) || terminating) /* Ctrl-C ends a script, as in psql */
            break;
    }
    if (len && rc != 2 && !(rc && sh->bail) && !interrupted && !terminating) {
        size_t k = 0;
        while (k < len && isspace((unsigned char)sql[k]))
            k++;
        if (k < len)
            run_buffer(sh, sql, len, first_line, 1, &rc);
    }
    free(sql);
    free(line);
    sh->located = saved_located;
    return rc == 2 ? 2 : 0;
}

/* ---- main ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pgpipe [options] [CONNINFO] [COMMAND ...] [options]\n"
            "  CONNINFO          a libpq connection string or URI (default: the PG* variables)\n"
            "  COMMAND           SQL or a dot command; run in order, then exit\n"
            "options (anywhere before --; after -- every argument is a COMMAND):\n"
            "  -f, --file FILE   run the SQL and dot commands in FILE (- for stdin), then exit\n"
            "  -b, --bail        stop at the first failing command\n"
            "  -m, --mode MODE   output mode: aligned (default), csv, json, line\n"
            "  --local DIR       no CONNINFO: start (or reuse) a private PostgreSQL server in\n"
            "                    DIR and connect to it; stopped when the run ends (however it\n"
            "                    ends, even killed) if this run started it\n"
            "  --keep            with --local: leave the server running on exit\n"
            "  --fast            with --local: a new cluster runs with fsync off (throwaway data)\n"
            "  -h, --help        show this help\n"
            "  -V, --version     show the version\n"
            "A bad option, or one without its value, exits with status 2 before anything runs.\n"
            "Interactive when stdin is a terminal: SQL may span lines and ends with ';',\n"
            "dot commands take one line (.help lists them), and so do psql's \\q \\x \\timing\n"
            "\\i \\ir \\c \\conninfo \\? (and \\g \\r \\p inside a statement); history in\n"
            "~/.pgpipe_history. In a script an error reads FILE:LINE: error: ... and the exit\n"
            "status is 1. SIGTERM, SIGHUP and SIGQUIT cancel the running statement and end the\n"
            "run (status 128+signal).\n");
}

/* A connection string: a postgres:// URI, or key=value words only (so SQL
** such as "SELECT 1 = 1" and dot commands are never taken for one). */
static int is_conninfo(const char *s)
{
    if (!strncmp(s, "postgres://", 11) || !strncmp(s, "postgresql://", 13))
        return 1;
    if (*s == '.' || !strchr(s, '='))
        return 0;
    const char *p = s;
    while (*p) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        const char *k = p;
        while (isalnum((unsigned char)*p) || *p == '_')
            p++;
        while (isspace((unsigned char)*p))
            p++;
        if (p == k || *p != '=')
            return 0;
        p++;
        while (isspace((unsigned char)*p))
            p++;
        if (*p == '\'') { /* quoted value */
            for (p++; *p && *p != '\''; p++)
                if (*p == '\\' && p[1])
                    p++;
            if (*p)
                p++;
        } else {
            while (*p && !isspace((unsigned char)*p))
                p++;
        }
    }
    return 1;
}

/* The command line: options may come anywhere before "--" (as in psql and
** sqlite3); after "--" every argument is a command. */
typedef struct cli {
    const char *file, *local_dir, *conninfo;
    int keep, fast, help, version;
    char **cmds;  /* the non-option arguments after CONNINFO, in order */
    int ncmds;
} cli;

/* Parses argv into c; an error is one line on stderr and the exit status 2. */
static int parse_cli(shell *sh, cli *c, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    c->conninfo = "";
    c->cmds = calloc((size_t)argc + 1, sizeof *c->cmds);
    if (!c->cmds) {
        fprintf(stderr, "pgpipe: out of memory\n");
        return 2;
    }
    int npos = 0, dashdash = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (dashdash || a[0] != '-' || !a[1]) {
            c->cmds[npos++] = argv[i];
            continue;
        }
        /* options that take a value: "-f FILE", "--file FILE" or "--file=FILE" */
        const char *val = NULL, *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
        char name[64];
        snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
        int takes = !strcmp(name, "-f") || !strcmp(name, "--file") || !strcmp(name, "-m") ||
                    !strcmp(name, "--mode") || !strcmp(name, "--local");
        if (takes) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else {
                fprintf(stderr, "pgpipe: option %s needs a value (pgpipe --help)\n", name);
                return 2;
            }
        } else if (eq) {
            fprintf(stderr, "pgpipe: option %s takes no value (pgpipe --help)\n", name);
            return 2;
        }
        if (!strcmp(name, "--")) {
            dashdash = 1;
        } else if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
            c->help = 1;
        } else if (!strcmp(name, "-V") || !strcmp(name, "--version")) {
            c->version = 1;
        } else if (!strcmp(name, "-b") || !strcmp(name, "--bail")) {
            sh->bail = 1;
        } else if (!strcmp(name, "-f") || !strcmp(name, "--file")) {
            if (c->file) {
                fprintf(stderr, "pgpipe: -f given twice (%s and %s)\n", c->file, val);
                return 2;
            }
            c->file = val;
        } else if (!strcmp(name, "-m") || !strcmp(name, "--mode")) {
            char *mv[2] = { (char *)"mode", (char *)val };
            if (cmd_mode(sh, mv, 2, ""))
                return 2;
        } else if (!strcmp(name, "--local")) {
            c->local_dir = val;
        } else if (!strcmp(name, "--keep")) {
            c->keep = 1;
        } else if (!strcmp(name, "--fast")) {
            c->fast = 1;
        } else {
            fprintf(stderr, "pgpipe: unknown option %s (pgpipe --help lists the options)\n", a);
            return 2;
        }
    }
    int k = 0;
    if (npos > 0 && is_conninfo(c->cmds[0]))
        c->conninfo = c->cmds[k++];
    for (int j = k; j < npos; j++)
        c->cmds[c->ncmds++] = c->cmds[j];
    if (c->file && c->ncmds) {
        fprintf(stderr, "pgpipe: give either -f FILE or COMMANDs, not both (\"%s\")\n", c->cmds[0]);
        return 2;
    }
    if (c->local_dir && *c->conninfo) {
        fprintf(stderr, "pgpipe: give either CONNINFO or --local DIR, not both\n");
        return 2;
    }
    return 0;
}

/* SIGTERM, SIGHUP, SIGQUIT and SIGPIPE end the run through its normal end
** (the running statement is cancelled, a --local server is stopped); SIGINT
** cancels the statement. No SA_RESTART: a blocked read returns EINTR. */
static void install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE };
    for (size_t k = 0; k < sizeof sigs / sizeof sigs[0]; k++)
        sigaction(sigs[k], &sa, NULL);
}

int main(int argc, char **argv)
{
    shell sh;
    memset(&sh, 0, sizeof sh);
    sh.out = stdout;
    sh.source = "<stdin>";
    cli c;
    int rc = parse_cli(&sh, &c, argc, argv);
    if (rc) {
        free(c.cmds);
        return rc;
    }
    if (c.help || c.version) {
        if (c.help)
            usage(stdout);
        else
            printf("pgpipe %s\n", pgpipe_libversion());
        free(c.cmds);
        return 0;
    }

    /* .help needs no server */
    if (!c.file && c.ncmds) {
        int all_help = 1;
        for (int j = 0; j < c.ncmds; j++)
            if (strncmp(c.cmds[j], ".help", 5) != 0 || (c.cmds[j][5] && c.cmds[j][5] != ' '))
                all_help = 0;
        if (all_help) {
            for (int j = 0; j < c.ncmds; j++)
                rc |= run_command(&sh, c.cmds[j]);
            free(c.cmds);
            return rc ? 1 : 0;
        }
    }

    /* the script is opened before anything starts: a missing file runs nothing */
    FILE *script = NULL;
    if (c.file) {
        script = !strcmp(c.file, "-") ? stdin : fopen(c.file, "r");
        if (!script) {
            fprintf(stderr, "pgpipe: cannot open %s: %s\n", c.file, strerror(errno));
            free(c.cmds);
            return 1;
        }
    }
    install_signals();

    const char *conninfo = c.conninfo;
    char local_info[1024];
    int local_started = 0, status = 0;
    pgpipe_local_options lopt;
    pgpipe_local_options_init(&lopt);
    lopt.fast = c.fast;
    lopt.watchdog = !c.keep;
    if (c.local_dir) {
        pgpipe_error err;
        if (pgpipe_local_start(c.local_dir, &lopt, local_info, sizeof local_info, &local_started,
                               &err) != PGPIPE_OK) {
            fprintf(stderr, "pgpipe: %s\n", err.message);
            status = 1;
            goto done;
        }
        conninfo = local_info;
    }

    sh.conn = PQconnectdb(conninfo);
    if (PQstatus(sh.conn) != CONNECTION_OK) {
        char msg[2048];
        pgpipe_conninfo_mask(PQerrorMessage(sh.conn), msg, sizeof msg);
        fprintf(stderr, "pgpipe: cannot connect: %s", msg);
        status = 1;
        goto done;
    }
    set_cancel_handle(PQgetCancel(sh.conn));

    if (terminating || interrupted) {
        /* a signal while starting up */
    } else if (script) {
        sh.source = c.file;
        run_stream(&sh, script);
    } else if (c.ncmds) {
        for (int j = 0; j < c.ncmds && !interrupted && !terminating; j++) {
            int r = run_command(&sh, c.cmds[j]);
            if (r == 2 || (r && sh.bail))
                break;
        }
    } else {
        sh.interactive = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
        if (sh.interactive) {
            printf("pgpipe %s - connected to %s. Type .help for help, .quit to leave.\n",
                   pgpipe_libversion(), PQdb(sh.conn));
            ed_history_load();
        }
        run_stream(&sh, stdin);
        if (sh.interactive)
            ed_history_save();
    }
    /* errors in an interactive session were shown to the person at once */
    status = sh.failures && !sh.interactive ? 1 : 0;
done:
    if (terminating) {
        if (terminating != SIGPIPE) /* the reader went away: nothing to tell */
            fprintf(stderr, "pgpipe: stopped by signal %d\n", (int)terminating);
        status = 128 + (int)terminating;
    }
    set_cancel_handle(NULL);
    PQfinish(sh.conn);
    if (script && script != stdin)
        fclose(script);
    if (local_started && !c.keep) {
        pgpipe_error err;
        if (pgpipe_local_stop(c.local_dir, &lopt, &err) != PGPIPE_OK) {
            fprintf(stderr, "pgpipe: %s\n", err.message);
            status = status ? status : 1;
        }
    }
    free(c.cmds);
    return status;
}
