/*
** pgpipe - the interactive shell of the pgpipe engine.
**
**   pgpipe [options] [CONNINFO|DBNAME] [COMMAND ...]
**
** CONNINFO is anything libpq accepts (key=value or a postgresql:// URI), or a
** bare database name as psql takes it; when it is left out, libpq's PG*
** environment variables apply. Its command line, backslash commands, output
** and describe commands are psql's; .tables, .schema, .mode box and the
** like are sqlite3's. With COMMANDs it
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
#include <dirent.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* aligned is psql's table; table, box and markdown are sqlite3's; insert
** prints INSERT statements; unaligned is psql's -A. */
enum { MODE_ALIGNED, MODE_CSV, MODE_JSON, MODE_LINE, MODE_TABLE, MODE_BOX, MODE_MARKDOWN,
       MODE_INSERT, MODE_UNALIGNED };
static const char *const mode_names[] = { "aligned", "csv", "json", "line", "table", "box",
                                          "markdown", "insert", "unaligned" };
#define MODE_CHOICES "aligned|csv|json|line|table|box|markdown|insert|unaligned"

/* \if nesting: a branch that runs, one not (yet) taken, one after the taken
** branch, and one inside a branch that does not run. */
enum { COND_TRUE, COND_FALSE, COND_DONE, COND_IGNORED };
#define COND_MAX 64

typedef struct shvar {
    char *name, *value;
} shvar;

/* \i and .read nest at most this deep (a script that reads itself would
** otherwise end in a stack overflow) */
#define READ_DEPTH_MAX 64

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
    int tx_open;         /* a transaction was open when the last command began */
    int single;          /* -1: the -c/-f commands run in one transaction */
    int script_fatal;    /* a script stopped: its connection was lost, or a \c failed (exit 2) */
    int user_sql;        /* 1 while SQL the user typed runs (not a dot command's) */
    /* what the user's last statement left, for psql's ERROR, SQLSTATE,
    ** ROW_COUNT, LAST_ERROR_MESSAGE and LAST_ERROR_SQLSTATE */
    char last_state[6];
    long long last_rows;
    char *last_error;
    PGresult *last_error_res; /* the user's last failed statement's result (\errverbose) */
    /* FETCH_COUNT: a result printed a page at a time; the printers leave the
    ** header to the first page and the footer (with the total) to the last */
    int chunked, chunk_first, chunk_last;
    long long chunk_base, chunk_total;
    int watching;        /* \watch runs its query now (FETCH_COUNT does not apply) */
    /* \crosstabview [colV [colH [colD [sortcolH]]]]: its arguments as typed
    ** (double quotes kept), while its query runs */
    int crosstab, ct_argc;
    char *ct_argv[4];
    FILE *out;
    /* psql's and sqlite3's output settings */
    int tuples_only;     /* -t, \t: no header, no footer */
    int headers_off;     /* .headers off: no header line */
    int footer_off;      /* \pset footer off */
    int expanded;        /* \x: 0 off, 1 on, 2 auto (when wider than the terminal) */
    int gx;              /* \gx: this one result expanded */
    int border;          /* \pset border 0..2 */
    int pager;           /* \pset pager: 0 off, 1 on (taller than the terminal), 2 always */
    int quiet;           /* -q: no banner, no command tags, no "Timing is on." */
    int echo;            /* -e: print each statement before it runs */
    int changes;         /* .changes on */
    long long total_changes;
    char *nullstr;       /* \pset null, .nullvalue */
    char *fieldsep, *recordsep; /* -F, -R (unaligned) */
    char *insert_table;  /* .mode insert TABLE */
    const char *title;   /* a describe command's title over the next table */
    const char *footer;  /* ... and its footer instead of (N rows) */
    FILE *outfile;       /* \o FILE, .output FILE (sh->out points at it) */
    int outpipe;         /* outfile came from popen (\o |cmd) */
    FILE *oncefile;      /* .once FILE: the next command's output */
    const char *gset;    /* \gset PREFIX: store the row in variables, print nothing */
    char *last_sql;      /* the last statement run (\g, \watch with an empty buffer) */
    char *last_dot;      /* the last dot command run, when it came after last_sql (\watch) */
    int stop_exit;       /* ON_ERROR_STOP ended a script: exit status 3 */
    shvar *vars;         /* \set, -v */
    int nvars;
    int cond[COND_MAX];  /* \if stack */
    unsigned char cond_else[COND_MAX]; /* the level has had its \else */
    int cond_base;       /* levels of the scripts that \i'd this one: not its own */
    int read_depth;      /* scripts reading scripts (\i, .read) now */
    int ncond;
    /* \restrict KEY (pg_dump's plain dumps since PostgreSQL 17.6, 16.10, 15.14):
    ** until \unrestrict KEY, no backslash or dot command runs, only SQL */
    char restrict_key[128];
} shell;

/* ---- small helpers ------------------------------------------------------- */

/* Where the command being run comes from, for error messages: a script's
** name and the line its statement (or dot command) starts on. */
static const char *where_source = NULL;
static long long where_line = 0;

/* .help --check-examples: while it parses the examples, the parsers' error
** lines go to error_capture (the first one), and files are not opened. */
static int examples_checking;
static char *error_capture;
static size_t error_capture_size;

static void errorf(const char *fmt, ...)
{
    char msg[2048], masked[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    pgpipe_conninfo_mask(msg, masked, sizeof masked);
    if (error_capture) {
        if (!*error_capture)
            snprintf(error_capture, error_capture_size, "%s", masked);
    } else if (where_source && where_line > 0)
        fprintf(stderr, "%s:%lld: error: %s\n", where_source, where_line, masked);
    else
        fprintf(stderr, "error: %s\n", masked);
}

static double now_ms(void) { return (double)pgpipe_now_us() / 1000.0; }

/* One word of a backslash command as psql reads it, from *pp to unquoted
** white space, written over itself at o: inside single quotes '' is a quote
** and \n \t \r \b \f are escapes, a backslash before anything else takes it
** as it is (\\ a backslash, \' a quote); double quotes are taken off, what
** is between them kept as it is. -2 for a quote not closed. */
static int psql_word(char **pp, char *o)
{
    char *p = *pp;
    while (*p && !isspace((unsigned char)*p)) {
        if (*p == '\'') {
            for (p++;;) {
                if (!*p)
                    return -2;
                if (*p == '\'' && p[1] == '\'') {
                    *o++ = '\'';
                    p += 2;
                } else if (*p == '\'') {
                    p++;
                    break;
                } else if (*p == '\\' && p[1]) {
                    char c = p[1];
                    *o++ = c == 'n' ? '\n' : c == 't' ? '\t' : c == 'r' ? '\r' : c == 'b' ? '\b' :
                           c == 'f' ? '\f' : c;
                    p += 2;
                } else {
                    *o++ = *p++;
                }
            }
        } else if (*p == '"') {
            for (p++; *p != '"'; )
                if (!*p)
                    return -2;
                else
                    *o++ = *p++;
            p++;
        } else {
            *o++ = *p++;
        }
    }
    int end = *p != '\0';
    *o = '\0';
    *pp = end ? p + 1 : p;
    return 0;
}

/* Splits "a b 'c d'" into words: for a dot command single or double quotes
** group a word and there are no escapes; for a backslash command (psql) as
** psql_word reads them (\set x 'it''s'). Returns the count (-1: more than
** max words, -2: a quote not closed); words point into buf, which is
** modified. */
static int split_words_as(char *buf, char **words, int max, int psql)
{
    int n = 0;
    char *p = buf;
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (!*p)
            break;
        if (n >= max)
            return -1;
        if (psql) {
            words[n++] = p;
            if (psql_word(&p, p) < 0)
                return -2;
            continue;
        }
        char q = (*p == '\'' || *p == '"') ? *p++ : 0;
        words[n++] = p;
        while (*p && (q ? *p != q : !isspace((unsigned char)*p)))
            p++;
        if (q && !*p)
            return -2;
        if (*p)
            *p++ = '\0';
    }
    return n;
}

static int split_words(char *buf, char **words, int max) { return split_words_as(buf, words, max, 0); }

/* Terminal columns of a code point: 2 for the East Asian wide and
** fullwidth ranges and the emoji shown wide (Unicode's EastAsianWidth W and
** F, in blocks), 0 for combining marks and zero-width characters, else 1. */
static int cp_width(unsigned long c)
{
    static const unsigned long zero[][2] = {
        { 0x0300, 0x036F }, { 0x0483, 0x0489 }, { 0x0591, 0x05BD }, { 0x0610, 0x061A },
        { 0x064B, 0x065F }, { 0x0E31, 0x0E31 }, { 0x0E34, 0x0E3A }, { 0x0E47, 0x0E4E },
        { 0x1AB0, 0x1AFF }, { 0x1DC0, 0x1DFF }, { 0x200B, 0x200F }, { 0x202A, 0x202E },
        { 0x2060, 0x2064 }, { 0x20D0, 0x20FF }, { 0xFE00, 0xFE0F }, { 0xFE20, 0xFE2F },
        { 0xFEFF, 0xFEFF }, { 0xE0100, 0xE01EF },
    };
    static const unsigned long wide[][2] = {
        { 0x1100, 0x115F }, { 0x231A, 0x231B }, { 0x2329, 0x232A }, { 0x23E9, 0x23EC },
        { 0x23F0, 0x23F0 }, { 0x23F3, 0x23F3 }, { 0x25FD, 0x25FE }, { 0x2614, 0x2615 },
        { 0x2648, 0x2653 }, { 0x267F, 0x267F }, { 0x2693, 0x2693 }, { 0x26A1, 0x26A1 },
        { 0x26AA, 0x26AB }, { 0x26BD, 0x26BE }, { 0x26C4, 0x26C5 }, { 0x26CE, 0x26CE },
        { 0x26D4, 0x26D4 }, { 0x26EA, 0x26EA }, { 0x26F2, 0x26F3 }, { 0x26F5, 0x26F5 },
        { 0x26FA, 0x26FA }, { 0x26FD, 0x26FD }, { 0x2705, 0x2705 }, { 0x270A, 0x270B },
        { 0x2728, 0x2728 }, { 0x274C, 0x274C }, { 0x274E, 0x274E }, { 0x2753, 0x2755 },
        { 0x2757, 0x2757 }, { 0x2795, 0x2797 }, { 0x27B0, 0x27B0 }, { 0x27BF, 0x27BF },
        { 0x2B1B, 0x2B1C }, { 0x2B50, 0x2B50 }, { 0x2B55, 0x2B55 }, { 0x2E80, 0x303E },
        { 0x3041, 0x33FF }, { 0x3400, 0x4DBF }, { 0x4E00, 0x9FFF }, { 0xA000, 0xA4CF },
        { 0xA960, 0xA97F }, { 0xAC00, 0xD7A3 }, { 0xF900, 0xFAFF }, { 0xFE10, 0xFE19 },
        { 0xFE30, 0xFE6F }, { 0xFF00, 0xFF60 }, { 0xFFE0, 0xFFE6 }, { 0x16FE0, 0x16FE4 },
        { 0x17000, 0x18CFF }, { 0x1B000, 0x1B2FF }, { 0x1F004, 0x1F004 }, { 0x1F0CF, 0x1F0CF },
        { 0x1F18E, 0x1F18E }, { 0x1F191, 0x1F19A }, { 0x1F200, 0x1F251 }, { 0x1F300, 0x1F64F },
        { 0x1F680, 0x1F6FF }, { 0x1F7E0, 0x1F7EB }, { 0x1F90C, 0x1F9FF }, { 0x1FA70, 0x1FAFF },
        { 0x20000, 0x2FFFD }, { 0x30000, 0x3FFFD },
    };
    if (c < 0x300)
        return 1;
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++)
        if (c >= zero[i][0] && c <= zero[i][1])
            return 0;
    for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
        if (c >= wide[i][0] && c <= wide[i][1])
            return 2;
    return 1;
}

/* Terminal columns of s[0..n) as UTF-8 (a stray byte counts one). */
static size_t utf8_width(const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        unsigned char b = (unsigned char)s[i];
        unsigned long c = b;
        int k = b < 0x80 ? 0 : (b & 0xE0) == 0xC0 ? 1 : (b & 0xF0) == 0xE0 ? 2 : (b & 0xF8) == 0xF0 ? 3 : -1;
        if (k > 0)
            c = b & (0x3F >> k);
        int ok = k >= 0;
        for (int j = 1; j <= k; j++) {
            if (i + (size_t)j >= n || ((unsigned char)s[i + j] & 0xC0) != 0x80) {
                ok = 0;
                break;
            }
            c = (c << 6) | ((unsigned char)s[i + j] & 0x3F);
        }
        if (!ok) {
            w++, i++;
            continue;
        }
        w += (size_t)cp_width(c);
        i += (size_t)k + 1;
    }
    return w;
}

/* Number of terminal columns a UTF-8 string takes. */
static size_t display_width(const char *s)
{
    return utf8_width(s, strlen(s));
}

/* ---- Ctrl-C ---------------------------------------------------------------- */

/* Ctrl-C while a statement runs cancels the statement (PQcancel is safe in a
** signal handler), as in psql; the shell itself goes on. At the prompt the
** line editor reads Ctrl-C as a key. */
static volatile sig_atomic_t interrupted = 0;
/* the signal (SIGTERM, SIGHUP, SIGQUIT, SIGPIPE) that asked the run to end */
static volatile sig_atomic_t terminating = 0;
static PGcancel *volatile cancel_handle = NULL;
/* The .load or .work running now: Ctrl-C cancels what their connections run
** (a COMMIT stuck waiting for a synchronous standby, say), not only the
** shell's own statement. cancel_loader_at points at the loader variable of
** .load, set as soon as pgpipe_loader_open makes the handle. */
static pgpipe_loader *volatile *volatile cancel_loader_at = NULL;
static pgpipe_workers *volatile cancel_workers = NULL;
/* the output is a command's pipe (\o |COMMAND): a reader that went away is
** a write error said once (psql's "Broken pipe"), not the end of the run */
static volatile sig_atomic_t output_is_pipe = 0;

static void on_sigint(int sig)
{
    if (sig == SIGPIPE && (output_is_pipe || terminating))
        return; /* the write fails with EPIPE; said, or already ending */
    interrupted = 1;
    if (sig != SIGINT)
        terminating = sig;
    PGcancel *c = cancel_handle;
    if (c) {
        char err[64];
        PQcancel(c, err, sizeof err);
    }
    pgpipe_loader *volatile *at = cancel_loader_at;
    pgpipe_loader *l = at ? *at : NULL;
    if (l)
        pgpipe_loader_cancel(l);
    pgpipe_workers *w = cancel_workers;
    if (w)
        pgpipe_workers_cancel(w);
}

/* The handlers of a long-running command (.work, .cdc start, .pull, .serve,
** run): fn takes SIGINT and SIGTERM, and SIGHUP too when hup is set; SIGPIPE
** is ignored when ignore_pipe is set (a client gone while its answer is
** written is the command's to handle, not the end of the shell's run).
** signals_restore puts back what was there. */
typedef struct {
    struct sigaction old_int, old_term, old_hup, old_pipe;
    int hup, pipe;
} saved_signals;

static void signals_catch(saved_signals *s, void (*fn)(int), int hup, int ignore_pipe)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = fn;
    s->hup = hup;
    s->pipe = ignore_pipe;
    sigaction(SIGINT, &sa, &s->old_int);
    sigaction(SIGTERM, &sa, &s->old_term);
    if (hup)
        sigaction(SIGHUP, &sa, &s->old_hup);
    if (ignore_pipe) {
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, &s->old_pipe);
    }
}

static void signals_restore(const saved_signals *s)
{
    sigaction(SIGINT, &s->old_int, NULL);
    sigaction(SIGTERM, &s->old_term, NULL);
    if (s->hup)
        sigaction(SIGHUP, &s->old_hup, NULL);
    if (s->pipe)
        sigaction(SIGPIPE, &s->old_pipe, NULL);
}

/* Sets what the handler reads with the signals blocked (this thread: the
** library's threads have ended whenever the handle is cleared). */
static void set_cancel_targets(pgpipe_loader *volatile *l, pgpipe_workers *w)
{
    sigset_t all, old;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, &old);
    cancel_loader_at = l;
    cancel_workers = w;
    sigprocmask(SIG_SETMASK, &old, NULL);
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

/* ---- variables (\set, -v, :name) ------------------------------------------ */

static const char *var_get(const shell *sh, const char *name, size_t n)
{
    for (int i = 0; i < sh->nvars; i++)
        if (strlen(sh->vars[i].name) == n && !strncmp(sh->vars[i].name, name, n))
            return sh->vars[i].value;
    return NULL;
}

/* psql's booleans: a prefix of true/false/yes/no, on/off, 1/0 (any case);
** -1 when it is none of them. */
static int parse_bool(const char *v)
{
    size_t n = strlen(v);
    if (!n)
        return -1;
    if (!strncasecmp(v, "true", n) || !strncasecmp(v, "yes", n) || !strcasecmp(v, "on") ||
        !strcmp(v, "1"))
        return 1;
    if (!strncasecmp(v, "false", n) || !strncasecmp(v, "no", n) || (n >= 2 && !strncasecmp(v, "off", n)) ||
        !strcmp(v, "0"))
        return 0;
    return -1;
}

/* Sets NAME (value NULL: unsets it); 1 when out of memory, or (said) when
** the value is not one the variable takes: ON_ERROR_STOP is a boolean, as in
** psql, and set without a value it is on (a typo must not turn it off). */
static int var_set(shell *sh, const char *name, const char *value)
{
    if (value && !strcmp(name, "ON_ERROR_ROLLBACK") && *value && parse_bool(value) < 0 &&
        strcasecmp(value, "interactive")) {
        fprintf(stderr, "pgpipe: unrecognized value \"%s\" for \"%s\"\nAvailable values are: on, "
                "off, interactive; it is unchanged\n", value, name);
        return 1;
    }
    if (value && !strcmp(name, "AUTOCOMMIT") && parse_bool(value) < 0) {
        fprintf(stderr, "pgpipe: unrecognized value \"%s\" for \"%s\": Boolean expected "
                "(on, off, true, false, 1, 0); it is unchanged\n", value, name);
        return 1;
    }
    /* psql's VERBOSITY and SHOW_CONTEXT: one of their words (unset: the
    ** default again); they apply to the connection at once */
    if (!strcmp(name, "VERBOSITY") || !strcmp(name, "SHOW_CONTEXT")) {
        int verb = name[0] == 'V';
        static const char *const vw[] = { "default", "verbose", "terse", "sqlstate", NULL };
        static const char *const cw[] = { "never", "errors", "always", NULL };
        const char *const *w = verb ? vw : cw;
        int k = 0;
        if (!value)
            value = verb ? "default" : "errors";
        while (w[k] && strcasecmp(w[k], value))
            k++;
        if (!w[k]) {
            fprintf(stderr, "pgpipe: unrecognized value \"%s\" for \"%s\"\nAvailable values are: %s; "
                    "it is unchanged\n", value, name,
                    verb ? "default, verbose, terse, sqlstate" : "never, errors, always");
            return 1;
        }
        value = w[k];
        if (sh->conn && verb)
            PQsetErrorVerbosity(sh->conn, k == 0 ? PQERRORS_DEFAULT : k == 1 ? PQERRORS_VERBOSE :
                                          k == 2 ? PQERRORS_TERSE : PQERRORS_SQLSTATE);
        else if (sh->conn)
            PQsetErrorContextVisibility(sh->conn, k == 0 ? PQSHOW_CONTEXT_NEVER :
                                                  k == 1 ? PQSHOW_CONTEXT_ERRORS : PQSHOW_CONTEXT_ALWAYS);
    }
    if (value && !strcmp(name, "FETCH_COUNT") && *value) {
        char *e;
        errno = 0;
        long v = strtol(value, &e, 10);
        if (*e || errno || v > INT_MAX || v < INT_MIN) {
            fprintf(stderr, "pgpipe: invalid value \"%s\" for \"%s\": integer expected; it is "
                    "unchanged\n", value, name);
            return 1;
        }
    }
    if (value && !strcmp(name, "ON_ERROR_STOP")) {
        if (!*value) {
            value = "on";
        } else if (parse_bool(value) < 0) {
            fprintf(stderr, "pgpipe: unrecognized value \"%s\" for \"%s\": Boolean expected "
                    "(on, off, true, false, 1, 0); it is unchanged\n", value, name);
            return 1;
        }
    }
    for (int i = 0; i < sh->nvars; i++)
        if (!strcmp(sh->vars[i].name, name)) {
            if (!value) {
                free(sh->vars[i].name);
                free(sh->vars[i].value);
                sh->vars[i] = sh->vars[--sh->nvars];
                return 0;
            }
            char *v = strdup(value);
            if (!v)
                return 1;
            free(sh->vars[i].value);
            sh->vars[i].value = v;
            return 0;
        }
    if (!value)
        return 0;
    shvar *g = realloc(sh->vars, sizeof *g * (size_t)(sh->nvars + 1));
    if (!g)
        return 1;
    sh->vars = g;
    g[sh->nvars].name = strdup(name);
    g[sh->nvars].value = strdup(value);
    if (!g[sh->nvars].name || !g[sh->nvars].value) {
        free(g[sh->nvars].name);
        free(g[sh->nvars].value);
        return 1;
    }
    sh->nvars++;
    return 0;
}


/* An error in a script ends it: -b (--bail) or ON_ERROR_STOP (then the
** exit status is 3, as psql's). */
static int stops(shell *sh)
{
    const char *v = var_get(sh, "ON_ERROR_STOP", 13);
    if (v && parse_bool(v) == 1) {
        sh->stop_exit = 1;
        return 1;
    }
    return sh->bail;
}

static int is_var_char(int c) { return isalnum(c) || c == '_' || c >= 0x80; }
/* a name :NAME can refer to (psql's rule): one or more of those */
static int var_name_ok(const char *name)
{
    if (!*name)
        return 0;
    for (const char *p = name; *p; p++)
        if (!is_var_char((unsigned char)*p))
            return 0;
    return 1;
}

/* The text with psql's :name, :'name' (a quoted literal) and :"name" (a
** quoted identifier) replaced by the variables' values, and :{?name} by
** TRUE or FALSE; never inside quotes, comments or dollar quotes (sql), or
** inside single quotes (a dot command's line); :: (a cast) and undefined
** names stay as they are. Returns malloc'd text, or NULL when out of memory. */
/* interpolate's modes: the text is a dot command, SQL, or a backslash
** command (whose words are read as psql reads them) */
enum { INTERP_DOT, INTERP_SQL, INTERP_BACKSLASH };

static char *interpolate(const shell *sh, const char *in, int mode)
{
    int sql = mode == INTERP_SQL;
    size_t cap = strlen(in) + 64, o = 0;
    char *out = malloc(cap);
    if (!out)
        return NULL;
#define PUT(str, n)                                                                       \
    do {                                                                                  \
        size_t n_ = (n);                                                                  \
        if (o + n_ + 1 > cap) {                                                           \
            cap = (o + n_ + 1) * 2;                                                       \
            char *g_ = realloc(out, cap);                                                 \
            if (!g_) {                                                                    \
                free(out);                                                                \
                return NULL;                                                              \
            }                                                                             \
            out = g_;                                                                     \
        }                                                                                 \
        memcpy(out + o, (str), n_);                                                       \
        o += n_;                                                                          \
    } while (0)
    const char *p = in;
    while (*p) {
        if (*p == '\'' || (sql && *p == '"')) {
            /* a quoted literal or identifier: copied whole ('' and "" stay inside;
            ** an E'' literal's backslash escapes too) */
            char q = *p;
            int esc = q == '\'' && p > in && (p[-1] == 'E' || p[-1] == 'e') &&
                      (p - 1 == in || !is_var_char((unsigned char)p[-2]));
            const char *e = p + 1;
            while (*e) {
                if (esc && *e == '\\' && e[1]) {
                    e += 2;
                    continue;
                }
                if (*e == q) {
                    if (e[1] == q) {
                        e += 2;
                        continue;
                    }
                    break;
                }
                e++;
            }
            if (*e)
                e++;
            PUT(p, (size_t)(e - p));
            p = e;
        } else if (sql && p[0] == '-' && p[1] == '-') {
            size_t n = strcspn(p, "\n");
            PUT(p, n);
            p += n;
        } else if (sql && p[0] == '/' && p[1] == '*') {
            const char *e = p + 2;
            int depth = 1;
            while (*e && depth) {
                if (e[0] == '/' && e[1] == '*')
                    depth++, e++;
                else if (e[0] == '*' && e[1] == '/')
                    depth--, e++;
                e++;
            }
            PUT(p, (size_t)(e - p));
            p = e;
        } else if (sql && *p == '$' && (p == in || !is_var_char((unsigned char)p[-1]))) {
            /* $tag$ ... $tag$ */
            const char *t = p + 1;
            while (is_var_char((unsigned char)*t) && !isdigit((unsigned char)p[1]))
                t++;
            if (*t != '$') {
                PUT(p, 1);
                p++;
                continue;
            }
            size_t tl = (size_t)(t - p) + 1;
            const char *e = t + 1;
            while (*e && strncmp(e, p, tl))
                e++;
            e = *e ? e + tl : e;
            PUT(p, (size_t)(e - p));
            p = e;
        } else if (*p == ':' && p[1] == ':') {
            PUT(p, 2);
            p += 2;
            while (*p == ':') {
                PUT(p, 1);
                p++;
            }
        } else if (*p == ':' && (p[1] == '\'' || p[1] == '"') && is_var_char((unsigned char)p[2])) {
            char q = p[1];
            const char *n = p + 2, *e = n;
            while (is_var_char((unsigned char)*e))
                e++;
            const char *v = *e == q ? var_get(sh, n, (size_t)(e - n)) : NULL;
            if (!v) {
                PUT(p, 1);
                p++;
                continue;
            }
            /* a literal holding a backslash is written E'...' with the
            ** backslashes doubled (as PQescapeLiteral does): read the same
            ** whatever standard_conforming_strings is, so a value cannot end
            ** the literal early */
            int bs = (sql || mode == INTERP_BACKSLASH) && q == '\'' && strchr(v, '\\');
            if (bs && sql)
                PUT(" E", 2);
            PUT(&q, 1);
            for (const char *c = v; *c; c++) {
                if (*c == q || (bs && *c == '\\'))
                    PUT(c, 1);
                PUT(c, 1);
            }
            PUT(&q, 1);
            p = e + 1;
        } else if (*p == ':' && p[1] == '{' && p[2] == '?') {
            const char *n = p + 3, *e = n;
            while (is_var_char((unsigned char)*e))
                e++;
            if (*e != '}') {
                PUT(p, 1);
                p++;
                continue;
            }
            const char *r = var_get(sh, n, (size_t)(e - n)) ? "TRUE" : "FALSE";
            PUT(r, strlen(r));
            p = e + 1;
        } else if (*p == ':' && is_var_char((unsigned char)p[1]) &&
                   (p == in || !is_var_char((unsigned char)p[-1]) || !sql)) {
            const char *n = p + 1, *e = n;
            while (is_var_char((unsigned char)*e))
                e++;
            const char *v = var_get(sh, n, (size_t)(e - n));
            if (!v) {
                PUT(p, (size_t)(e - p));
            } else if (mode == INTERP_BACKSLASH && v[strcspn(v, " \t\n\r'\"\\")]) {
                /* one word as it is, as psql substitutes it: quoted, so that
                ** the command's own words are not split again from it */
                PUT("'", 1);
                for (const char *c = v; *c; c++) {
                    if (*c == '\'' || *c == '\\')
                        PUT(c, 1);
                    PUT(c, 1);
                }
                PUT("'", 1);
            } else {
                PUT(v, strlen(v));
            }
            p = e;
        } else {
            PUT(p, 1);
            p++;
        }
    }
    PUT("", 1);
#undef PUT
    return out;
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
    char small[256], *buf = small;
    size_t n = strlen(s), k = pgpipe_quote_json(small, sizeof small, s, n);
    if (k >= sizeof small) {
        if ((buf = malloc(k + 1)) != NULL)
            pgpipe_quote_json(buf, k + 1, s, n);
        else /* out of memory: what fits */
            buf = small, k = sizeof small - 1;
    }
    fwrite(buf, 1, k, f);
    if (buf != small)
        free(buf);
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
    size_t w = 0;
    for (;;) {
        size_t n = strcspn(s, "\n"), cur = utf8_width(s, n);
        if (cur > w)
            w = cur;
        if (!s[n])
            return w;
        s += n + 1;
    }
}

/* One line of a table cell: s[0..n), other control characters (tab, CR)
** shown as a space so the columns stay aligned. */
static void put_cell(FILE *f, const char *s, size_t n, size_t width, int right)
{
    size_t w = utf8_width(s, n);
    if (right)
        for (size_t i = w; i < width; i++)
            fputc(' ', f);
    for (size_t i = 0; i < n; i++)
        fputc((unsigned char)s[i] < 0x20 ? ' ' : s[i], f);
    if (!right)
        for (size_t i = w; i < width; i++)
            fputc(' ', f);
}

/* A value as printed: NULL shows as \pset null (.nullvalue), else empty. */
static const char *cell_text(const shell *sh, PGresult *res, int i, int j)
{
    if (PQgetisnull(res, i, j))
        return sh->nullstr ? sh->nullstr : "";
    return PQgetvalue(res, i, j);
}

/* The frame of a table: psql's aligned format with border 0, 1 or 2, and
** sqlite3's table, box and markdown. A row is l CELL m CELL ... r; a rule
** is the same with fill in the cells (NULL: no such rule). */
typedef struct grid_style {
    const char *l, *m, *r;           /* a row */
    const char *hl, *hm, *hr, *fill; /* the rule under the header */
    const char *tl, *tm, *tr;        /* the rule on top */
    const char *bl, *bm, *br;        /* the rule at the bottom */
    int plus;                        /* psql's '+' where a value continues */
} grid_style;

static const grid_style grid_psql0 = { "", " ", "", "", " ", "", "-", NULL, NULL, NULL,
                                       NULL, NULL, NULL, 1 };
static const grid_style grid_psql1 = { " ", " | ", "", "-", "-+-", "-", "-", NULL, NULL, NULL,
                                       NULL, NULL, NULL, 1 };
static const grid_style grid_psql2 = { "| ", " | ", " |", "+-", "-+-", "-+", "-", "+-", "-+-", "-+",
                                       "+-", "-+-", "-+", 1 };
static const grid_style grid_table = { "| ", " | ", " |", "+-", "-+-", "-+", "-", "+-", "-+-", "-+",
                                       "+-", "-+-", "-+", 0 };
static const grid_style grid_box = { "\xe2\x94\x82 ", " \xe2\x94\x82 ", " \xe2\x94\x82",
                                     "\xe2\x94\x9c\xe2\x94\x80", "\xe2\x94\x80\xe2\x94\xbc\xe2\x94\x80",
                                     "\xe2\x94\x80\xe2\x94\xa4", "\xe2\x94\x80",
                                     "\xe2\x94\x8c\xe2\x94\x80", "\xe2\x94\x80\xe2\x94\xac\xe2\x94\x80",
                                     "\xe2\x94\x80\xe2\x94\x90",
                                     "\xe2\x94\x94\xe2\x94\x80", "\xe2\x94\x80\xe2\x94\xb4\xe2\x94\x80",
                                     "\xe2\x94\x80\xe2\x94\x98", 0 };
static const grid_style grid_markdown = { "| ", " | ", " |", "|-", "-|-", "-|", "-", NULL, NULL,
                                          NULL, NULL, NULL, NULL, 0 };

static void grid_rule(FILE *f, const char *l, const char *m, const char *r, const char *fill,
                      const size_t *w, int nf)
{
    if (!l)
        return;
    for (int j = 0; j < nf; j++) {
        fputs(j ? m : l, f);
        for (size_t k = 0; k < w[j]; k++)
            fputs(fill, f);
    }
    fputs(r, f);
    fputc('\n', f);
}

/* Total width of a row: the cells and the frame between them. */
static size_t grid_width(const grid_style *g, const size_t *w, int nf)
{
    size_t t = display_width(g->l) + display_width(g->r);
    for (int j = 0; j < nf; j++)
        t += w[j] + (j ? display_width(g->m) : 0);
    return t;
}

/* Column widths: the widest line of the name and of every value. */
static size_t *grid_widths(const shell *sh, PGresult *res, int headers)
{
    int nf = PQnfields(res), nt = PQntuples(res);
    size_t *w = calloc((size_t)nf + 1, sizeof *w);
    if (!w)
        return NULL;
    for (int j = 0; j < nf; j++) {
        w[j] = headers ? cell_width(PQfname(res, j)) : 0;
        for (int i = 0; i < nt; i++) {
            size_t cw = cell_width(cell_text(sh, res, i, j));
            if (cw > w[j])
                w[j] = cw;
        }
    }
    return w;
}

/* A table: a value with newlines takes one output line per line, the other
** columns blank there, and (psql) '+' in the separator after each line that
** continues (at the end of the row for the last column). */
static void print_grid(shell *sh, FILE *f, PGresult *res, const grid_style *g, int psql)
{
    int nf = PQnfields(res), nt = PQntuples(res);
    int headers = !sh->tuples_only && !sh->headers_off;
    /* psql -t keeps the widths the names give (sqlite3's .headers off does not) */
    size_t *w = grid_widths(sh, res, headers || (psql && sh->tuples_only));
    const char **at = calloc((size_t)nf + 1, sizeof *at);
    if (!w || !at) {
        free(w);
        free(at);
        return;
    }
    /* FETCH_COUNT's pages: the header on the first, the footer on the last */
    int head = !sh->chunked || sh->chunk_first, foot = !sh->chunked || sh->chunk_last;
    long long total = sh->chunked ? sh->chunk_total : nt;
    if (head && psql && sh->title && !sh->tuples_only) {
        size_t tw = grid_width(g, w, nf), tl = display_width(sh->title);
        for (size_t k = 0; tl < tw && k < (tw - tl) / 2; k++)
            fputc(' ', f);
        fprintf(f, "%s\n", sh->title);
    }
    if (head)
        grid_rule(f, g->tl, g->tm, g->tr, g->fill, w, nf);
    if (head && headers) {
        for (int j = 0; j < nf; j++) {
            fputs(j ? g->m : g->l, f);
            const char *name = PQfname(res, j);
            size_t pad = w[j] - display_width(name);
            for (size_t k = 0; k < pad / 2; k++)
                fputc(' ', f);
            fputs(name, f);
            for (size_t k = 0; k < pad - pad / 2; k++)
                fputc(' ', f);
        }
        fputs(g->r, f);
        fputc('\n', f);
        grid_rule(f, g->hl, g->hm, g->hr, g->fill, w, nf);
    }
    for (int i = 0; i < nt; i++) {
        for (int j = 0; j < nf; j++)
            at[j] = cell_text(sh, res, i, j);
        int more = 1;
        while (more) {
            more = 0;
            int cont_prev = 0;
            for (int j = 0; j < nf; j++) {
                const char *sep = j ? g->m : g->l;
                if (j && cont_prev && g->plus) {
                    fputc('+', f);
                    sep++;
                }
                fputs(sep, f);
                const char *s = at[j];
                size_t n = s ? strcspn(s, "\n") : 0;
                put_cell(f, s ? s : "", n, w[j], is_numeric_type(PQftype(res, j)));
                cont_prev = s && s[n] == '\n';
                at[j] = cont_prev ? s + n + 1 : NULL;
                more |= cont_prev;
            }
            if (cont_prev && g->plus) {
                fputc('+', f);
                fputs(*g->r ? g->r + 1 : "", f);
            } else {
                fputs(g->r, f);
            }
            fputc('\n', f);
        }
    }
    if (foot)
        grid_rule(f, g->bl, g->bm, g->br, g->fill, w, nf);
    if (foot && psql && sh->footer && !sh->tuples_only)
        fputs(sh->footer, f);
    else if (foot && psql && !sh->tuples_only && !sh->footer_off)
        fprintf(f, "(%lld row%s)\n", total, total == 1 ? "" : "s");
    free(w);
    free(at);
}

/* psql's expanded format (\x): one "-[ RECORD N ]" block per row, a line
** per column. */
static void print_expanded(shell *sh, FILE *f, PGresult *res)
{
    int nf = PQnfields(res), nt = PQntuples(res);
    size_t nw = 0, vw = 0;
    for (int j = 0; j < nf; j++) {
        if (display_width(PQfname(res, j)) > nw)
            nw = display_width(PQfname(res, j));
        for (int i = 0; i < nt; i++)
            if (cell_width(cell_text(sh, res, i, j)) > vw)
                vw = cell_width(cell_text(sh, res, i, j));
    }
    long long base = sh->chunked ? sh->chunk_base : 0;
    if (sh->title && !sh->tuples_only && (!sh->chunked || sh->chunk_first))
        fprintf(f, "%s\n", sh->title);
    if (nt == 0 && !base && !sh->tuples_only && (!sh->chunked || sh->chunk_last))
        fputs("(0 rows)\n", f);
    for (int i = 0; i < nt; i++) {
        if (sh->tuples_only) {
            if (i || base)
                fputc('\n', f);
        } else {
            char head[64];
            int hn = snprintf(head, sizeof head, "-[ RECORD %lld ]", base + i + 1);
            fputs(head, f);
            size_t total = nw + 3 + vw;
            for (size_t k = (size_t)hn; k < total; k++)
                fputc(k == nw + 1 && (size_t)hn <= nw ? '+' : '-', f);
            fputc('\n', f);
        }
        for (int j = 0; j < nf; j++) {
            const char *s = cell_text(sh, res, i, j);
            const char *name = PQfname(res, j);
            for (int first = 1;; first = 0) {
                size_t n = strcspn(s, "\n");
                int cont = s[n] == '\n';
                fputs(first ? name : "", f);
                for (size_t k = first ? display_width(name) : 0; k < nw; k++)
                    fputc(' ', f);
                fputs(" | ", f);
                put_cell(f, s, n, cont ? vw : 0, 0);
                fputs(cont ? "+\n" : "\n", f);
                if (!cont)
                    break;
                s += n + 1;
            }
        }
    }
}

static void print_unaligned(shell *sh, FILE *f, PGresult *res, int expanded)
{
    int nf = PQnfields(res), nt = PQntuples(res);
    const char *fs = sh->fieldsep ? sh->fieldsep : "|";
    const char *rs = sh->recordsep ? sh->recordsep : "\n";
    long long base = sh->chunked ? sh->chunk_base : 0, total = sh->chunked ? sh->chunk_total : nt;
    int head = !sh->chunked || sh->chunk_first, foot = !sh->chunked || sh->chunk_last;
    if (expanded) {
        for (int i = 0; i < nt; i++) {
            if (i || base)
                fputs(rs, f);
            for (int j = 0; j < nf; j++)
                fprintf(f, "%s%s%s%s", PQfname(res, j), fs, cell_text(sh, res, i, j), rs);
        }
        return;
    }
    if (head && !sh->tuples_only && !sh->headers_off) {
        for (int j = 0; j < nf; j++)
            fprintf(f, "%s%s", j ? fs : "", PQfname(res, j));
        fputs(rs, f);
    }
    for (int i = 0; i < nt; i++) {
        for (int j = 0; j < nf; j++)
            fprintf(f, "%s%s", j ? fs : "", cell_text(sh, res, i, j));
        fputs(rs, f);
    }
    if (foot && !sh->tuples_only && !sh->footer_off && !sh->footer)
        fprintf(f, "(%lld row%s)%s", total, total == 1 ? "" : "s", rs);
    else if (foot && sh->footer && !sh->tuples_only)
        fputs(sh->footer, f);
}

/* sqlite3's insert mode: INSERT INTO tbl VALUES(...); per row. */
static void print_inserts(shell *sh, FILE *f, PGresult *res)
{
    int nf = PQnfields(res), nt = PQntuples(res);
    for (int i = 0; i < nt; i++) {
        fprintf(f, "INSERT INTO %s VALUES(", sh->insert_table ? sh->insert_table : "tbl");
        for (int j = 0; j < nf; j++) {
            if (j)
                fputc(',', f);
            const char *v = PQgetvalue(res, i, j);
            Oid t = PQftype(res, j);
            if (PQgetisnull(res, i, j)) {
                fputs("NULL", f);
            } else if (is_numeric_type(t) && strcmp(v, "NaN") && !strstr(v, "Infinity")) {
                fputs(v, f);
            } else {
                fputc('\'', f);
                for (; *v; v++) {
                    if (*v == '\'')
                        fputc('\'', f);
                    fputc(*v, f);
                }
                fputc('\'', f);
            }
        }
        fputs(");\n", f);
    }
}

/* The terminal's size (0 when not a terminal). */
static void term_size(int fd, int *rows, int *cols)
{
    struct winsize ws;
    *rows = *cols = 0;
    if (isatty(fd) && ioctl(fd, TIOCGWINSZ, &ws) == 0) {
        *rows = ws.ws_row;
        *cols = ws.ws_col;
    }
}

static void print_result_to(shell *sh, FILE *f, PGresult *res)
{
    int nf = PQnfields(res), nt = PQntuples(res);
    int expanded = sh->gx || sh->expanded == 1;
    if (sh->expanded == 2 && !sh->gx && (sh->mode == MODE_ALIGNED || sh->mode == MODE_UNALIGNED)) {
        /* \x auto: expanded when the table is wider than the terminal */
        int rows, cols;
        term_size(STDOUT_FILENO, &rows, &cols);
        size_t *w = grid_widths(sh, res, 1);
        if (w && cols > 0 && nt > 0 && grid_width(&grid_psql1, w, nf) > (size_t)cols)
            expanded = 1;
        free(w);
    }
    switch (sh->mode) {
    case MODE_ALIGNED:
        if (expanded)
            print_expanded(sh, f, res);
        else
            print_grid(sh, f, res, sh->border == 0 ? &grid_psql0 : sh->border == 2 ? &grid_psql2 :
                                                                                 &grid_psql1, 1);
        break;
    case MODE_TABLE:
        print_grid(sh, f, res, &grid_table, 0);
        break;
    case MODE_BOX:
        print_grid(sh, f, res, &grid_box, 0);
        break;
    case MODE_MARKDOWN:
        print_grid(sh, f, res, &grid_markdown, 0);
        break;
    case MODE_INSERT:
        print_inserts(sh, f, res);
        break;
    case MODE_UNALIGNED:
        print_unaligned(sh, f, res, expanded);
        break;
    case MODE_CSV:
        if ((!sh->chunked || sh->chunk_first) && !sh->tuples_only && !sh->headers_off) {
            for (int j = 0; j < nf; j++) {
                if (j)
                    fputc(',', f);
                put_csv_field(f, PQfname(res, j));
            }
            fputc('\n', f);
        }
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
                } else if (sh->nullstr) {
                    put_csv_field(f, sh->nullstr);
                }
            }
            fputc('\n', f);
        }
        break;
    case MODE_JSON:
        if (!sh->chunked || sh->chunk_first)
            fputc('[', f);
        for (int i = 0; i < nt; i++) {
            fputs(i || (sh->chunked && sh->chunk_base) ? ",\n{" : "{", f);
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
        if (!sh->chunked || sh->chunk_last)
            fputs("]\n", f);
        break;
    case MODE_LINE: {
        size_t w = 0;
        for (int j = 0; j < nf; j++)
            if (display_width(PQfname(res, j)) > w)
                w = display_width(PQfname(res, j));
        for (int i = 0; i < nt; i++) {
            if (i || (sh->chunked && sh->chunk_base))
                fputc('\n', f);
            for (int j = 0; j < nf; j++) {
                const char *name = PQfname(res, j);
                for (size_t k = display_width(name); k < w; k++)
                    fputc(' ', f);
                fprintf(f, "%s = %s\n", name, PQgetisnull(res, i, j) ?
                        (sh->nullstr ? sh->nullstr : "NULL") : PQgetvalue(res, i, j));
            }
        }
        break;
    }
    }
}

/* Prints a result where the output goes; on the terminal, output taller
** than it goes through the pager ($PSQL_PAGER, $PAGER, else less), as in
** psql (\pset pager). */
static void print_result(shell *sh, PGresult *res)
{
    FILE *f = sh->out;
    if (!sh->pager || f != stdout || !sh->interactive || !isatty(STDOUT_FILENO)) {
        print_result_to(sh, f, res);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&text, &len);
    if (!m) {
        print_result_to(sh, f, res);
        return;
    }
    print_result_to(sh, m, res);
    fclose(m);
    int rows, cols, lines = 0;
    size_t wide = 0, cur = 0;
    term_size(STDOUT_FILENO, &rows, &cols);
    for (size_t i = 0; i < len; i++) {
        if (text[i] == '\n') {
            lines++;
            cur = 0;
        } else if (((unsigned char)text[i] & 0xC0) != 0x80 && ++cur > wide) {
            wide = cur;
        }
    }
    const char *pager = getenv("PSQL_PAGER");
    if (!pager || !*pager)
        pager = getenv("PAGER");
    if (!pager || !*pager)
        pager = "less";
    FILE *p = NULL;
    struct sigaction ign, old_pipe, old_int;
    if (sh->pager == 2 || (rows > 0 && lines >= rows - 1)) {
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, &old_pipe);
        sigaction(SIGINT, &ign, &old_int);
        fflush(stdout);
        p = popen(pager, "w");
        if (p) {
            fwrite(text, 1, len, p);
            pclose(p);
        }
        sigaction(SIGPIPE, &old_pipe, NULL);
        sigaction(SIGINT, &old_int, NULL);
    }
    if (!p)
        fwrite(text, 1, len, f);
    free(text);
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
    return sh->user_sql && !sh->quiet &&
           (sh->mode == MODE_ALIGNED || sh->mode == MODE_LINE || sh->mode == MODE_UNALIGNED);
}

/* \gset: the one row of a result into variables PREFIXcolumn (NULL unsets). */
static int gset_row(shell *sh, PGresult *res)
{
    if (PQntuples(res) != 1) {
        errorf(PQntuples(res) ? "more than one row returned for \\gset" :
                                "no rows returned for \\gset");
        return 1;
    }
    for (int j = 0; j < PQnfields(res); j++) {
        char name[256];
        snprintf(name, sizeof name, "%s%s", sh->gset, PQfname(res, j));
        if (!var_name_ok(name)) {
            errorf("\\gset: invalid variable name: \"%s\" (name the column AS a word)", name);
            return 1;
        }
        if (var_set(sh, name, PQgetisnull(res, 0, j) ? NULL : PQgetvalue(res, 0, j)))
            return 1;
    }
    return 0;
}

/* .changes on: sqlite3's count of the rows a statement changed. */
static void say_changes(shell *sh, PGresult *res)
{
    const char *tag = PQcmdStatus(res);
    if (!sh->changes || !sh->user_sql ||
        !(!strncmp(tag, "INSERT", 6) || !strncmp(tag, "UPDATE", 6) || !strncmp(tag, "DELETE", 6) ||
          !strncmp(tag, "MERGE", 5) || !strncmp(tag, "COPY", 4)))
        return;
    long long n = atoll(PQcmdTuples(res));
    sh->total_changes += n;
    fprintf(sh->out, "changes: %lld   total_changes: %lld\n", n, sh->total_changes);
}


/* The output could not be written (a full disk, a closed pipe): 1 after
** saying so once for what was written since the last check. Standard output
** whose reader went away ends the run instead (SIGPIPE), as in psql. */
static int output_failed(shell *sh)
{
    errno = 0;
    if (fflush(sh->out) == 0 && !ferror(sh->out))
        return 0;
    int e = errno;
    clearerr(sh->out);
    if (terminating == SIGPIPE)
        return 1;
    errorf("could not write the output: %s", e ? strerror(e) : "write error");
    return 1;
}

/* ---- \crosstabview (psql's: a result turned into a grid) --------------------- */

static const PGresult *ct_sort_res; /* qsort's context (the shell has one thread) */
static int ct_sort_col;

static int ct_cmp_rows(const void *a, const void *b)
{
    int ra = *(const int *)a, rb = *(const int *)b;
    int na = PQgetisnull(ct_sort_res, ra, ct_sort_col), nb = PQgetisnull(ct_sort_res, rb, ct_sort_col);
    int c = na != nb ? nb - na : na ? 0 : strcmp(PQgetvalue(ct_sort_res, ra, ct_sort_col),
                                                 PQgetvalue(ct_sort_res, rb, ct_sort_col));
    return c ? c : (ra > rb) - (ra < rb);
}

static int ct_cmp_ints(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Rows a and b hold the same value in col (NULL is the same as NULL). */
static int ct_same(const PGresult *res, int col, int a, int b)
{
    int na = PQgetisnull(res, a, col);
    return na == PQgetisnull(res, b, col) &&
           (na || !strcmp(PQgetvalue(res, a, col), PQgetvalue(res, b, col)));
}

/* The distinct values of a column, numbered in the order they first appear:
** ids[row] is its value's number; first[number] the row it first appears
** in. Returns the count, -1 when out of memory. */
static int ct_distinct(const PGresult *res, int col, int *ids, int *first)
{
    int n = PQntuples(res), nd = 0;
    int *idx = malloc(sizeof *idx * (size_t)(n ? n : 1));
    if (!idx)
        return -1;
    for (int i = 0; i < n; i++)
        idx[i] = i;
    ct_sort_res = res;
    ct_sort_col = col;
    qsort(idx, (size_t)n, sizeof *idx, ct_cmp_rows);
    /* each group's first row (the smallest: ties sort by row) stands for it */
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && ct_same(res, col, idx[i], idx[j]))
            j++;
        first[nd++] = idx[i];
        i = j;
    }
    /* numbered by first appearance */
    qsort(first, (size_t)nd, sizeof *first, ct_cmp_ints);
    for (int i = 0; i < n;) {
        int j = i + 1;
        while (j < n && ct_same(res, col, idx[i], idx[j]))
            j++;
        int lo = 0, hi = nd - 1, at = 0;
        while (lo <= hi) { /* the group's first row among first[] */
            int mid = (lo + hi) / 2;
            if (first[mid] == idx[i]) {
                at = mid;
                break;
            }
            if (first[mid] < idx[i])
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        for (int k = i; k < j; k++)
            ids[idx[k]] = at;
        i = j;
    }
    free(idx);
    return nd;
}

/* A column named as psql takes it: a number from 1, else a name (folded to
** lower case unless in double quotes). -1 (said) when there is none. */
static int ct_column(const PGresult *res, const char *arg)
{
    int nf = PQnfields(res);
    if (*arg && strspn(arg, "0123456789") == strlen(arg)) {
        long n = strlen(arg) < 10 ? strtol(arg, NULL, 10) : 0;
        if (n < 1 || n > nf) {
            errorf("\\crosstabview: column number %s is out of range 1..%d", arg, nf);
            return -1;
        }
        return (int)n - 1;
    }
    char name[512];
    size_t o = 0;
    for (const char *p = arg; *p && o + 1 < sizeof name; p++) {
        if (*p == '"') {
            for (p++; *p && o + 1 < sizeof name; p++) {
                if (*p == '"' && p[1] == '"')
                    name[o++] = *p++;
                else if (*p == '"')
                    break;
                else
                    name[o++] = *p;
            }
            if (!*p)
                break;
        } else {
            name[o++] = (char)tolower((unsigned char)*p);
        }
    }
    name[o] = '\0';
    int found = -1;
    for (int j = 0; j < nf; j++)
        if (!strcmp(PQfname(res, j), name)) {
            if (found >= 0) {
                errorf("\\crosstabview: ambiguous column name: \"%s\"", name);
                return -1;
            }
            found = j;
        }
    if (found < 0)
        errorf("\\crosstabview: column name not found: \"%s\"", name);
    return found;
}

static long long ct_sort_key(const PGresult *res, int row, int col, int *bad)
{
    const char *v = PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col);
    char *e;
    errno = 0;
    long long k = strtoll(v, &e, 10);
    if (!*v || *e || errno)
        *bad = 1;
    return k;
}

static const long long *ct_keys;
static int ct_cmp_keys(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return ct_keys[x] != ct_keys[y] ? (ct_keys[x] > ct_keys[y]) - (ct_keys[x] < ct_keys[y])
                                    : (x > y) - (x < y);
}

/* Prints res as psql's \crosstabview: colV's values down, colH's across,
** colD's in the cells. 1 (said) when the result does not make one. */
static int print_crosstab(shell *sh, PGresult *res)
{
    int nf = PQnfields(res), n = PQntuples(res);
    if (nf < 3) {
        errorf("\\crosstabview: query must return at least three columns");
        return 1;
    }
    int cv = sh->ct_argc > 0 ? ct_column(res, sh->ct_argv[0]) : 0;
    int ch = sh->ct_argc > 1 ? ct_column(res, sh->ct_argv[1]) : 1;
    if (cv < 0 || ch < 0)
        return 1;
    if (cv == ch) {
        errorf("\\crosstabview: vertical and horizontal headers must be different columns");
        return 1;
    }
    int cd;
    if (sh->ct_argc > 2) {
        cd = ct_column(res, sh->ct_argv[2]);
        if (cd < 0)
            return 1;
    } else if (nf != 3) {
        errorf("\\crosstabview: data column must be specified when query returns more than "
               "three columns");
        return 1;
    } else {
        cd = 3 - cv - ch;
    }
    int cs = sh->ct_argc > 3 ? ct_column(res, sh->ct_argv[3]) : -1;
    if (sh->ct_argc > 3 && cs < 0)
        return 1;
    size_t rows = (size_t)(n ? n : 1);
    int *idv = malloc(sizeof(int) * rows), *fv = malloc(sizeof(int) * rows);
    int *idh = malloc(sizeof(int) * rows), *fh = malloc(sizeof(int) * rows);
    int *pos = malloc(sizeof(int) * rows), *order = malloc(sizeof(int) * rows);
    long long *keys = malloc(sizeof(long long) * rows);
    int *cell = NULL, rc = 1, nv = -1, nh = -1;
    PGresult *out = NULL;
    PGresAttDesc *att = NULL;
    if (!idv || !fv || !idh || !fh || !pos || !order || !keys)
        goto oom;
    nv = ct_distinct(res, cv, idv, fv);
    nh = ct_distinct(res, ch, idh, fh);
    if (nv < 0 || nh < 0)
        goto oom;
    if (nh > 1600) {
        errorf("\\crosstabview: maximum number of columns (%d) exceeded", 1600);
        goto done;
    }
    /* the horizontal values in their order: as they appear, or by sortcolH */
    for (int k = 0; k < nh; k++)
        order[k] = k;
    if (cs >= 0) {
        int bad = 0;
        for (int k = 0; k < nh; k++)
            keys[k] = ct_sort_key(res, fh[k], cs, &bad);
        if (bad) {
            errorf("\\crosstabview: the values of the sort column \"%s\" must be integers",
                   PQfname(res, cs));
            goto done;
        }
        ct_keys = keys;
        qsort(order, (size_t)nh, sizeof *order, ct_cmp_keys);
    }
    for (int k = 0; k < nh; k++)
        pos[order[k]] = k;
    cell = malloc(sizeof(int) * (size_t)(nv ? nv : 1) * (size_t)(nh ? nh : 1));
    att = calloc((size_t)nh + 1, sizeof *att);
    if (!cell || !att)
        goto oom;
    for (size_t k = 0; k < (size_t)nv * (size_t)nh; k++)
        cell[k] = -1;
    for (int r = 0; r < n; r++) {
        int *c = &cell[(size_t)idv[r] * (size_t)nh + (size_t)pos[idh[r]]];
        if (*c >= 0) {
            errorf("\\crosstabview: query result contains multiple data values for row \"%s\", "
                   "column \"%s\"", PQgetisnull(res, r, cv) ? "(null)" : PQgetvalue(res, r, cv),
                   PQgetisnull(res, r, ch) ? "(null)" : PQgetvalue(res, r, ch));
            goto done;
        }
        *c = r;
    }
    att[0].name = PQfname(res, cv);
    att[0].typid = PQftype(res, cv);
    att[0].typlen = -1;
    att[0].atttypmod = -1;
    for (int k = 0; k < nh; k++) {
        int r = fh[order[k]];
        att[k + 1].name = PQgetisnull(res, r, ch) ? (sh->nullstr ? sh->nullstr : (char *)"")
                                                  : PQgetvalue(res, r, ch);
        att[k + 1].typid = PQftype(res, cd);
        att[k + 1].typlen = -1;
        att[k + 1].atttypmod = -1;
    }
    out = PQmakeEmptyPGresult(sh->conn, PGRES_TUPLES_OK);
    if (!out || !PQsetResultAttrs(out, nh + 1, att))
        goto oom;
    for (int i = 0; i < nv; i++) {
        int r = fv[i];
        int isnull = PQgetisnull(res, r, cv);
        if (!PQsetvalue(out, i, 0, isnull ? NULL : PQgetvalue(res, r, cv), isnull ? -1 :
                        PQgetlength(res, r, cv)))
            goto oom;
        for (int k = 0; k < nh; k++) {
            int d = cell[(size_t)i * (size_t)nh + (size_t)k];
            /* no row for it: empty; a NULL value: NULL (shown as \pset null) */
            int dn = d >= 0 && PQgetisnull(res, d, cd);
            if (!PQsetvalue(out, i, k + 1, d < 0 ? (char *)"" : dn ? NULL : PQgetvalue(res, d, cd),
                            d < 0 ? 0 : dn ? -1 : PQgetlength(res, d, cd)))
                goto oom;
        }
    }
    print_result(sh, out);
    rc = 0;
    goto done;
oom:
    errorf("\\crosstabview: out of memory");
done:
    PQclear(out);
    free(att);
    free(cell);
    free(idv);
    free(fv);
    free(idh);
    free(fh);
    free(pos);
    free(order);
    free(keys);
    return rc;
}

/* The user's statement failed: said, its SQLSTATE and message kept for
** psql's variables, and the result itself for \errverbose (res is taken). */
static void keep_error(shell *sh, PGresult *res)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    report_pq_error(res, sh->conn);
    snprintf(sh->last_state, sizeof sh->last_state, "%s", state ? state : "XX000");
    free(sh->last_error);
    sh->last_error = strdup(msg ? msg : PQerrorMessage(sh->conn));
    sh->last_rows = 0;
    if (res) {
        PQclear(sh->last_error_res);
        sh->last_error_res = res;
    }
}

/* A page of a paged result (FETCH_COUNT): its rows so far, printed when it
** holds the page's count or the result ends. */
typedef struct page {
    PGresult *rows; /* the rows of this page (NULL before the first) */
    int n;          /* rows in it */
    int on;         /* a result is being paged (single rows came) */
} page;

/* Prints the page held (the last one of its result when last) and empties it;
** stub gives the columns when no row is held (an empty last page). */
static void page_print(shell *sh, page *pg, PGresult *stub, int last)
{
    sh->chunk_last = last;
    sh->chunk_total = sh->chunk_base + pg->n;
    print_result_to(sh, sh->out, pg->rows ? pg->rows : stub);
    PQclear(pg->rows);
    pg->rows = NULL;
    sh->chunk_first = 0;
    sh->chunk_base += pg->n;
    pg->n = 0;
}

/* Adds the one row of a PGRES_SINGLE_TUPLE result to the page; 0 when done. */
static int page_add(page *pg, const PGresult *one)
{
    if (!pg->rows && !(pg->rows = PQcopyResult(one, PG_COPYRES_ATTRS)))
        return 1;
    for (int j = 0; j < PQnfields(one); j++) {
        int null = PQgetisnull(one, 0, j);
        if (!PQsetvalue(pg->rows, pg->n, j, null ? NULL : PQgetvalue(one, 0, j),
                        null ? -1 : PQgetlength(one, 0, j)))
            return 1;
    }
    pg->n++;
    return 0;
}

/* Asks the server to stop the statement running on the shell's connection. */
static void cancel_running(shell *sh)
{
    PGcancel *c = PQgetCancel(sh->conn);
    char err[256];
    if (c) {
        PQcancel(c, err, sizeof err);
        PQfreeCancel(c);
    }
}

/* Sends SQL (one or several statements) and prints each result. copy_data,
** when given, feeds a COPY ... FROM STDIN in the SQL (a script's inline data).
** fetch > 0 (FETCH_COUNT, as psql 17 does it): the SQL is sent as it is, in
** libpq's single-row mode, and each result that returns rows is printed
** fetch rows at a time, never more than one page held; the header goes on
** the first page and the footer with the total on the last. An error in the
** middle: the pages before it stay printed, the page in progress is dropped
** (as psql 17, whose libpq drops the chunk in progress), the error said.
** Ctrl-C (or output that cannot be written) cancels the statement; the rows
** still coming are read and dropped, so the connection stays usable. */
static int run_sql_paged(shell *sh, const char *sql, const char *copy_data, size_t copy_len,
                         int fetch)
{
    double t0 = now_ms();
    if (!PQsendQuery(sh->conn, sql)) {
        report_pq_error(NULL, sh->conn);
        return 1;
    }
    if (fetch > 0 && !PQsetSingleRowMode(sh->conn))
        fetch = 0;
    int failed = 0, stopped = 0;
    page pg = { NULL, 0, 0 };
    PGresult *res;
    while ((res = PQgetResult(sh->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE) {
            if (!pg.on) { /* the first row of a result */
                pg.on = 1;
                sh->chunked = 1;
                sh->chunk_first = 1;
                sh->chunk_base = 0;
            }
            if (!stopped && page_add(&pg, res)) {
                errorf("out of memory");
                stopped = failed = 1;
                cancel_running(sh);
            }
            PQclear(res);
            if (!stopped && pg.n >= fetch) {
                page_print(sh, &pg, NULL, 0);
                if (output_failed(sh) || interrupted) {
                    stopped = failed = 1;
                    cancel_running(sh);
                }
            }
            continue;
        }
        int paged = pg.on;
        if (pg.on) { /* the end of a paged result: its last page, or its error */
            pg.on = 0;
            if (st == PGRES_TUPLES_OK && !stopped)
                page_print(sh, &pg, res, 1);
            PQclear(pg.rows);
            pg.rows = NULL;
            pg.n = 0;
            sh->chunked = 0;
        }
        if (sh->user_sql && (st == PGRES_FATAL_ERROR || st == PGRES_NONFATAL_ERROR)) {
            keep_error(sh, res);
            failed = 1;
            continue;
        } else if (sh->user_sql && (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK)) {
            memcpy(sh->last_state, "00000", 6);
            sh->last_rows = atoll(PQcmdTuples(res));
        }
        if (stopped && st == PGRES_TUPLES_OK) {
            /* the statement ended before the cancel reached it: the rows
            ** after the stop, and the results after it, are not shown */
            if (paged)
                errorf("the output stopped after %lld row%s", sh->chunk_base,
                       sh->chunk_base == 1 ? "" : "s");
            if (sh->user_sql) {
                memcpy(sh->last_state, "57014", 6);
                free(sh->last_error);
                sh->last_error = strdup("the output stopped");
                sh->last_rows = 0;
            }
        } else if (st == PGRES_TUPLES_OK && sh->gset) {
            failed |= gset_row(sh, res);
        } else if (st == PGRES_TUPLES_OK && sh->crosstab) {
            failed |= print_crosstab(sh, res);
        } else if (st == PGRES_COMMAND_OK && sh->crosstab) {
            errorf("\\crosstabview: statement did not return a result set");
            failed = 1;
        } else if (st == PGRES_TUPLES_OK) {
            if (!paged)
                print_result(sh, res);
            /* psql adds the tag of INSERT/UPDATE/DELETE/MERGE ... RETURNING */
            const char *tag = PQcmdStatus(res);
            if (shows_tags(sh) && (!strncmp(tag, "INSERT", 6) || !strncmp(tag, "UPDATE", 6) ||
                                   !strncmp(tag, "DELETE", 6) || !strncmp(tag, "MERGE", 5)))
                fprintf(sh->out, "%s\n", tag);
            say_changes(sh, res);
        } else if (st == PGRES_COMMAND_OK) {
            if (shows_tags(sh) && *PQcmdStatus(res))
                fprintf(sh->out, "%s\n", PQcmdStatus(res));
            say_changes(sh, res);
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
            /* COPY ... TO STDOUT: its data to the output, as psql writes it
            ** (the statement has run: its rows must not be lost) */
            char *buf;
            int k;
            while ((k = PQgetCopyData(sh->conn, &buf, 0)) > 0) {
                fwrite(buf, 1, (size_t)k, sh->out);
                PQfreemem(buf);
            }
            if (k == -2) {
                report_pq_error(NULL, sh->conn);
                failed = 1;
            }
        } else if (st != PGRES_COMMAND_OK && st != PGRES_EMPTY_QUERY) {
            report_pq_error(res, sh->conn);
            failed = 1;
        }
        PQclear(res);
    }
    PQclear(pg.rows);
    sh->chunked = 0;
    if (sh->timer)
        fprintf(sh->out, "Time: %.3f ms\n", now_ms() - t0);
    return output_failed(sh) || failed;
}

static int run_sql_copy(shell *sh, const char *sql, const char *copy_data, size_t copy_len)
{
    return run_sql_paged(sh, sql, copy_data, copy_len, 0);
}

static int run_sql(shell *sh, const char *sql) { return run_sql_copy(sh, sql, NULL, 0); }

/* ---- AUTOCOMMIT off, ON_ERROR_ROLLBACK (psql's variables) ------------------ */

/* The first words of a statement, upper-cased, after spaces and comments:
** "CREATE UNIQUE INDEX CONCURRENTLY" and the like, for the checks below. */
static void leading_words(const char *sql, char *out, size_t size, int words)
{
    size_t o = 0;
    const char *p = sql;
    for (int w = 0; w < words && o + 2 < size;) {
        for (;;) { /* spaces and comments */
            while (isspace((unsigned char)*p))
                p++;
            if (p[0] == '-' && p[1] == '-')
                p += strcspn(p, "\n");
            else if (p[0] == '/' && p[1] == '*') {
                const char *e = strstr(p + 2, "*/");
                p = e ? e + 2 : p + strlen(p);
            } else
                break;
        }
        if (!isalpha((unsigned char)*p))
            break;
        if (w++)
            out[o++] = ' ';
        while (isalpha((unsigned char)*p) && o + 1 < size)
            out[o++] = (char)toupper((unsigned char)*p++);
    }
    out[o] = '\0';
}

static int starts_with_words(const char *w, const char *prefix)
{
    size_t n = strlen(prefix);
    return !strncmp(w, prefix, n) && (w[n] == '\0' || w[n] == ' ');
}

/* A statement psql's AUTOCOMMIT off does not open a transaction for: those
** that end or start one, and those that cannot run inside one. */
static int no_begin(const char *sql)
{
    static const char *const list[] = {
        "ABORT", "BEGIN", "START", "COMMIT", "END", "ROLLBACK", "PREPARE TRANSACTION",
        "VACUUM", "CREATE DATABASE", "DROP DATABASE", "CREATE TABLESPACE", "DROP TABLESPACE",
        "ALTER SYSTEM", "REINDEX DATABASE", "REINDEX SYSTEM", "CREATE INDEX CONCURRENTLY",
        "CREATE UNIQUE INDEX CONCURRENTLY", "DROP INDEX CONCURRENTLY", "DISCARD ALL", NULL };
    char w[96];
    leading_words(sql, w, sizeof w, 4);
    for (int i = 0; list[i]; i++)
        if (starts_with_words(w, list[i]))
            return 1;
    /* CLUSTER alone (every table), REINDEX ... CONCURRENTLY */
    return !strcmp(w, "CLUSTER") || (starts_with_words(w, "REINDEX") && strstr(sql, "CONCURRENTLY"));
}

/* Before SQL the user gives: with AUTOCOMMIT off, a BEGIN when no transaction
** is open; with ON_ERROR_ROLLBACK on (or interactive, at the prompt) inside a
** transaction, a savepoint the statement's failure goes back to. Returns
** -1 when the BEGIN failed, else 1 when a savepoint was made. */
static int autocommit_before(shell *sh, const char *sql)
{
    const char *ac = var_get(sh, "AUTOCOMMIT", 10), *oer = var_get(sh, "ON_ERROR_ROLLBACK", 17);
    if (!sh->conn || PQstatus(sh->conn) != CONNECTION_OK)
        return 0;
    if (ac && parse_bool(ac) == 0 && PQtransactionStatus(sh->conn) == PQTRANS_IDLE &&
        !no_begin(sql)) {
        PGresult *r = PQexec(sh->conn, "BEGIN");
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            report_pq_error(r, sh->conn);
        PQclear(r);
        if (!ok)
            return -1;
    }
    if (!oer || !(parse_bool(oer) == 1 || (!strcasecmp(oer, "interactive") && sh->interactive)) ||
        PQtransactionStatus(sh->conn) != PQTRANS_INTRANS || no_begin(sql))
        return 0;
    PGresult *r = PQexec(sh->conn, "SAVEPOINT pg_psql_temporary_savepoint");
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok;
}

/* After it: back to the savepoint when the statement failed, else released
** (not when the statement was the user's own SAVEPOINT, RELEASE or ROLLBACK:
** theirs may have replaced or removed it). */
static void autocommit_after(shell *sh, const char *sql, int savepoint)
{
    if (savepoint <= 0 || PQstatus(sh->conn) != CONNECTION_OK)
        return;
    char w[32];
    leading_words(sql, w, sizeof w, 1);
    PGTransactionStatusType ts = PQtransactionStatus(sh->conn);
    const char *q = ts == PQTRANS_INERROR ? "ROLLBACK TO pg_psql_temporary_savepoint"
                  : ts == PQTRANS_INTRANS && strcmp(w, "SAVEPOINT") && strcmp(w, "RELEASE") &&
                    strcmp(w, "ROLLBACK") ? "RELEASE pg_psql_temporary_savepoint" : NULL;
    if (q)
        PQclear(PQexec(sh->conn, q));
}

/* ---- FETCH_COUNT (psql 17's: any result read a page at a time) ------------ */

/* FETCH_COUNT when it applies: its value (> 0), else 0. Not for \gset (one
** row), \crosstabview (the whole result makes the grid) or \watch, as in psql. */
static int fetch_count(shell *sh)
{
    const char *v = var_get(sh, "FETCH_COUNT", 11);
    long n = v ? strtol(v, NULL, 10) : 0;
    if (n <= 0 || sh->gset || sh->crosstab || sh->watching)
        return 0;
    return n > INT_MAX ? INT_MAX : (int)n;
}

/* SQL the user gave (a statement of a script, the terminal or an argument). */
static int run_user_sql(shell *sh, const char *sql, const char *copy_data, size_t copy_len)
{
    int sp = autocommit_before(sh, sql);
    if (sp < 0)
        return 1;
    sh->user_sql = 1;
    memcpy(sh->last_state, "00000", 6);
    sh->last_rows = 0;
    int rc = run_sql_paged(sh, sql, copy_data, copy_len, fetch_count(sh));
    sh->user_sql = 0;
    if (rc && !strcmp(sh->last_state, "00000")) /* failed in the client (a lost connection) */
        memcpy(sh->last_state, PQstatus(sh->conn) == CONNECTION_OK ? "XX000" : "08006", 6);
    autocommit_after(sh, sql, sp);
    /* psql's status variables */
    char rows[32];
    int failed = strcmp(sh->last_state, "00000") != 0;
    snprintf(rows, sizeof rows, "%lld", sh->last_rows);
    var_set(sh, "ERROR", failed ? "true" : "false");
    var_set(sh, "SQLSTATE", sh->last_state);
    var_set(sh, "ROW_COUNT", rows);
    if (failed) {
        var_set(sh, "LAST_ERROR_SQLSTATE", sh->last_state);
        var_set(sh, "LAST_ERROR_MESSAGE", sh->last_error ? sh->last_error : "");
    }
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

/* ---- dot-command arguments ----------------------------------------------- */

/* Every dot command declares its options once, in a table. A command line is
** checked against the table before the command does anything: an unknown
** option, a missing value, a bad number, an unknown choice, an unreadable
** file or an argument too many each get one error line naming the command
** and the option, and nothing runs. .help lists the same tables. */
/* OPT_LIST: text that may be given more than once (.serve --source); the
** values, in order, are in optset.list. */
enum { OPT_FLAG, OPT_INT, OPT_ENUM, OPT_TEXT, OPT_FILE, OPT_SQL, OPT_LIST };

typedef struct optdef {
    const char *name;   /* "--workers" */
    const char *alias;  /* another spelling, or NULL */
    int kind;           /* OPT_* */
    const char *arg;    /* the value in .help ("N"); OPT_ENUM: the choices "a|b|c" */
    long long min, max; /* OPT_INT */
    const char *def;    /* the default, for .help (NULL = none) */
    const char *help;
    const char *ex;     /* an example: a whole command line using it, shown by .help
                        ** and checked against the parser (.help --check-examples) */
} optdef;

/* A sub-command (.dlq list, .records get) or a whole command. */
typedef struct argspec {
    const char *sub;     /* sub-command name; NULL for a command's own spec */
    const char *args;    /* positional arguments in .help ("QUERY FILE"), or NULL */
    int minpos, maxpos;
    const optdef *opts;  /* ended by a row with name NULL; may be NULL */
    const char *summary; /* one line */
} argspec;

#define OPT_MAX 40
#define POS_MAX 8
#define LIST_MAX 64

typedef struct optset {
    char cmd[64];                 /* ".work", ".dlq purge": for messages */
    const optdef *defs;
    const char *val[OPT_MAX];     /* the value given (a flag: ""), NULL = not given */
    long long num[OPT_MAX];       /* OPT_INT: the number; OPT_ENUM: the index of the choice */
    char *owned[OPT_MAX];         /* OPT_SQL read from a file */
    const char *pos[POS_MAX];
    int npos;
    const char *list[LIST_MAX];   /* the values of OPT_LIST options, in order */
    int nlist;
    const char *sub;              /* the sub-command chosen, or NULL */
} optset;

/* The parsed arguments of the command running now (the shell is single-threaded). */
static optset cur;

static void opt_reset(optset *o)
{
    for (int i = 0; i < OPT_MAX; i++)
        free(o->owned[i]);
    memset(o, 0, sizeof *o);
}

static int opt_count(const optdef *d)
{
    int n = 0;
    while (d && d[n].name)
        n++;
    return n;
}

static int opt_lookup(const optdef *d, const char *w, size_t n)
{
    for (int i = 0; d && d[i].name; i++)
        if ((strlen(d[i].name) == n && !strncmp(d[i].name, w, n)) ||
            (d[i].alias && strlen(d[i].alias) == n && !strncmp(d[i].alias, w, n)))
            return i;
    return -1;
}

/* Edit distance, for "did you mean". */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), row[64];
    if (la >= 63 || lb >= 63)
        return 99;
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* A whole-string integer in [min, max]; otherwise one error line. */
static int parse_num(const char *cmd, const char *what, const char *v, long long min,
                     long long max, long long *out)
{
    char *end = NULL;
    errno = 0;
    long long x = (*v == '-' || isdigit((unsigned char)*v)) ? strtoll(v, &end, 10) : 0;
    int whole = end && end != v && *end == '\0';
    if (whole && errno == 0 && x >= min && x <= max) {
        *out = x;
        return 0;
    }
    char want[96];
    if (min == 1 && max >= INT_MAX)
        snprintf(want, sizeof want, "a positive integer");
    else if (min == 0 && max >= INT_MAX)
        snprintf(want, sizeof want, "a non-negative integer");
    else
        snprintf(want, sizeof want, "an integer from %lld to %lld", min, max);
    errorf("%s: %s: expected %s, got \"%s\"%s", cmd, what, want, v,
           whole && (errno == ERANGE || x > max) ? " (too large)" : "");
    return 1;
}

/* The index of v among "a|b|c", else one error line. */
static int parse_choice(const char *cmd, const char *what, const char *v, const char *choices,
                        long long *out)
{
    long long k = 0;
    for (const char *p = choices; *p; k++) {
        size_t n = strcspn(p, "|");
        if (strlen(v) == n && !strncmp(p, v, n)) {
            *out = k;
            return 0;
        }
        p += n + (p[n] == '|');
    }
    char want[256] = "";
    size_t len = 0;
    for (const char *p = choices; *p && len < sizeof want - 32;) {
        size_t n = strcspn(p, "|");
        int last = p[n] != '|';
        len += (size_t)snprintf(want + len, sizeof want - len, "%s%.*s",
                                p == choices ? "" : last ? " or " : ", ", (int)n, p);
        p += n + !last;
    }
    errorf("%s: %s: expected %s, got \"%s\"", cmd, what, want, v);
    return 1;
}

/* A file that can be opened for reading (not a directory). */
static int check_readable(const char *cmd, const char *what, const char *path)
{
    if (examples_checking && *path) /* an example's file is the reader's, not here */
        return 0;
    struct stat st;
    if (!*path || stat(path, &st) != 0) {
        errorf("%s: %s: cannot open \"%s\": %s", cmd, what, path,
               *path ? strerror(errno) : "empty file name");
        return 1;
    }
    if (S_ISDIR(st.st_mode)) {
        errorf("%s: %s: \"%s\" is a directory, not a file", cmd, what, path);
        return 1;
    }
    /* a FIFO, a process substitution (<(zcat f.gz)) or a device is not
    ** opened here: that would take its writer, and its data, from the
    ** command that reads it */
    if (!S_ISREG(st.st_mode)) {
        if (access(path, R_OK) != 0) {
            errorf("%s: %s: cannot open \"%s\": %s", cmd, what, path, strerror(errno));
            return 1;
        }
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        errorf("%s: %s: cannot open \"%s\": %s", cmd, what, path, strerror(errno));
        return 1;
    }
    fclose(f);
    return 0;
}

/* The contents of a file (malloc'd), trailing blanks and ';' removed. */
static char *read_sql_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0, n;
    char *buf = malloc(cap);
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
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        return NULL;
    }
    buf[len] = '\0';
    while (len && (isspace((unsigned char)buf[len - 1]) || buf[len - 1] == ';'))
        buf[--len] = '\0'; /* a trailing ';' is fine in a file */
    return buf;
}

static int opt_value(optset *o, int k, const char *v)
{
    const optdef *d = &o->defs[k];
    switch (d->kind) {
    case OPT_INT:
        return parse_num(o->cmd, d->name, v, d->min, d->max, &o->num[k]);
    case OPT_ENUM:
        return parse_choice(o->cmd, d->name, v, d->arg, &o->num[k]);
    case OPT_TEXT:
    case OPT_LIST:
        /* an empty value (a script's unset variable) is refused unless the
        ** option says what '' means (--channel '' = none): it would
        ** otherwise be taken as "any" or as the default without a word */
        if (!*v && !strstr(d->help, "''")) {
            errorf("%s: %s: empty (leave the option out%s%s)", o->cmd, d->name,
                   d->def ? " for the default, " : "", d->def ? d->def : "");
            return 1;
        }
        return 0;
    case OPT_FILE:
        return check_readable(o->cmd, d->name, v);
    case OPT_SQL:
        /* SQL text has a blank somewhere; one word is a file name */
        if (strpbrk(v, " \t\r\n"))
            return 0;
        if (check_readable(o->cmd, d->name, v))
            return 1;
        if (examples_checking)
            return 0;
        if (!(o->owned[k] = read_sql_file(v))) {
            errorf("%s: %s: cannot read \"%s\": %s", o->cmd, d->name, v, strerror(errno));
            return 1;
        }
        if (!*o->owned[k]) {
            errorf("%s: %s: \"%s\" holds no SQL", o->cmd, d->name, v);
            return 1;
        }
        return 0;
    default:
        return 0;
    }
}

/* Parses argv (the words after the command, or its sub-command) against
** spec into o. 0, or 1 with one error line printed. "--" ends the options;
** "--opt=value" is "--opt value". */
static int opt_parse(optset *o, const char *cmd, const argspec *spec, char **argv, int argc)
{
    opt_reset(o);
    snprintf(o->cmd, sizeof o->cmd, "%s", cmd);
    o->defs = spec->opts;
    int nopts = opt_count(spec->opts), ended = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!ended && !strcmp(a, "--")) {
            ended = 1;
            continue;
        }
        if (ended || a[0] != '-' || !a[1] || isdigit((unsigned char)a[1])) {
            if (o->npos >= spec->maxpos || o->npos >= POS_MAX) {
                if (spec->maxpos == 0)
                    errorf("%s: unexpected argument \"%s\" (it takes none%s)", cmd, a,
                           nopts ? ", only options" : "");
                else
                    errorf("%s: unexpected argument \"%s\" (expected %s%s)", cmd, a, spec->args,
                           strchr(a, ' ') || spec->maxpos < 2 ? "" : "; quote an argument holding blanks");
                return 1;
            }
            o->pos[o->npos++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t n = eq ? (size_t)(eq - a) : strlen(a);
        int k = opt_lookup(spec->opts, a, n);
        if (k < 0) {
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(n < 60 ? n : 60), a);
            const char *best = NULL;
            size_t bd = 3;
            for (int j = 0; j < nopts; j++) {
                size_t e = edit_distance(name, spec->opts[j].name);
                if (n >= 4 && !strncmp(name, spec->opts[j].name, n))
                    e = 1; /* the start of a longer name */
                if (e < bd)
                    bd = e, best = spec->opts[j].name;
            }
            if (best)
                errorf("%s: %s: unknown option (did you mean %s?)", cmd, name, best);
            else if (nopts)
                errorf("%s: %s: unknown option (.help %.*s lists them)", cmd, name,
                       (int)strcspn(cmd + 1, " "), cmd + 1);
            else
                errorf("%s: %s: unknown option (%s takes no options)", cmd, name, cmd);
            return 1;
        }
        const optdef *d = &spec->opts[k];
        if (o->val[k] && d->kind != OPT_LIST) {
            errorf("%s: %s: given twice", cmd, d->name);
            return 1;
        }
        const char *v = "";
        if (d->kind == OPT_FLAG) {
            if (eq) {
                errorf("%s: %s: takes no value", cmd, d->name);
                return 1;
            }
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc && !(argv[i + 1][0] == '-' && argv[i + 1][1] == '-' &&
                                     opt_lookup(spec->opts, argv[i + 1], strcspn(argv[i + 1], "=")) >= 0)) {
            v = argv[++i];
        } else {
            errorf("%s: %s: missing value (%s)", cmd, d->name, d->arg);
            return 1;
        }
        if (opt_value(o, k, v))
            return 1;
        o->val[k] = v;
        if (d->kind == OPT_LIST) {
            if (o->nlist >= LIST_MAX) {
                errorf("%s: %s: given more than %d times", cmd, d->name, LIST_MAX);
                return 1;
            }
            o->list[o->nlist++] = v;
        }
    }
    if (o->npos < spec->minpos) {
        errorf("%s: missing %s (usage: %s %s; .help %.*s)", cmd, spec->args, cmd, spec->args,
               (int)strcspn(cmd + 1, " "), cmd + 1);
        return 1;
    }
    return 0;
}

static int opt_index(const optset *o, const char *name)
{
    int k = opt_lookup(o->defs, name, strlen(name));
    return k;
}
/* Was the option given? */
static int opt_has(const optset *o, const char *name)
{
    int k = opt_index(o, name);
    return k >= 0 && o->val[k] != NULL;
}
/* Its text (OPT_SQL: the SQL, read from the file when one was named), or dflt. */
static const char *opt_str(const optset *o, const char *name, const char *dflt)
{
    int k = opt_index(o, name);
    if (k < 0 || !o->val[k])
        return dflt;
    return o->owned[k] ? o->owned[k] : o->val[k];
}
/* Its number (OPT_INT) or choice index (OPT_ENUM), or dflt. */
static long long opt_num(const optset *o, const char *name, long long dflt)
{
    int k = opt_index(o, name);
    return k >= 0 && o->val[k] ? o->num[k] : dflt;
}

/* ---- .help text from the tables ------------------------------------------ */

/* Writes text word by word from column *col, wrapping at width with indent;
** a newline in text starts a new (indented) line. */
static void put_wrapped(FILE *f, const char *text, int *col, int indent, int width)
{
    int sp = 0;
    for (const char *p = text; *p;) {
        if (*p == '\n') {
            fprintf(f, "\n%*s", indent, "");
            *col = indent;
            sp = 0;
            for (p++; *p == ' '; p++) { /* an indented line keeps its indent */
                fputc(' ', f);
                (*col)++;
            }
            continue;
        }
        if (*p == ' ') {
            p++;
            continue;
        }
        size_t n = strcspn(p, " \n");
        if (sp && *col + 1 + (int)n > width) {
            fprintf(f, "\n%*s", indent, "");
            *col = indent;
            sp = 0;
        }
        if (sp) {
            fputc(' ', f);
            (*col)++;
        }
        fwrite(p, 1, n, f);
        *col += (int)n;
        p += n;
        sp = 1;
    }
}

/* A segment of a usage line that is never broken: "[--workers N]". */
static void put_segment(FILE *f, const char *seg, int *col, int indent, int width)
{
    int n = (int)strlen(seg);
    if (*col > indent && *col + 1 + n > width) {
        fprintf(f, "\n%*s", indent, "");
        *col = indent;
    } else if (*col > 0) {
        fputc(' ', f);
        (*col)++;
    }
    fputs(seg, f);
    *col += n;
}

/* ".dlq purge [ID] [--stage load|process] ...": the whole usage, wrapped,
** the command's name at column 0. */
static void print_usage(FILE *f, const char *name, const argspec *s)
{
    char seg[256];
    int col = 0;
    const char *args = s->args;
    if (s->sub && args && !strncmp(args, "COLLECTION", 10)) { /* .records COLLECTION sub ... */
        snprintf(seg, sizeof seg, ".%s COLLECTION %s", name, s->sub);
        args += 10;
    } else {
        snprintf(seg, sizeof seg, ".%s%s%s", name, s->sub && *s->sub ? " " : "",
                 s->sub ? s->sub : "");
    }
    put_segment(f, seg, &col, 4, 79);
    if (args) {
        /* the positional part, word by word but brackets kept together */
        const char *p = args;
        while (*p) {
            while (*p == ' ')
                p++;
            size_t n = 0;
            int depth = 0;
            while (p[n] && (depth > 0 || p[n] != ' ')) {
                depth += p[n] == '[' ? 1 : p[n] == ']' ? -1 : 0;
                n++;
            }
            if (!n)
                break;
            snprintf(seg, sizeof seg, "%.*s", (int)n, p);
            put_segment(f, seg, &col, 4, 79);
            p += n;
        }
    }
    for (const optdef *d = s->opts; d && d->name; d++) {
        snprintf(seg, sizeof seg, "[%s%s%s%s%s]", d->name, d->alias ? "|" : "",
                 d->alias ? d->alias : "", d->kind == OPT_FLAG ? "" : " ",
                 d->kind == OPT_FLAG ? "" : d->arg);
        put_segment(f, seg, &col, 4, 79);
    }
    fputc('\n', f);
}

/* The length of the word at p: up to a blank outside quotes. */
static size_t example_word(const char *p)
{
    size_t n = 0;
    for (char q = 0; p[n] && (q || p[n] != ' '); n++) {
        if (!q && (p[n] == '\'' || p[n] == '"'))
            q = p[n];
        else if (p[n] == q)
            q = 0;
    }
    return n;
}

/* An option's example on a line of its own, "e.g. " at column 28, continued
** at column 33: a line breaks only between words, never inside quotes, nor
** between an option and its value when the two fit on a line. */
static void put_example(FILE *f, const char *ex)
{
    enum { AT = 28, MORE = 33, WIDTH = 79 };
    fprintf(f, "\n%*se.g.", AT, "");
    int col = AT + 4;
    for (const char *p = ex; *p;) {
        while (*p == ' ')
            p++;
        size_t n = example_word(p);
        if (!n)
            break;
        if (!strncmp(p, "--", 2) && p[n] == ' ' && p[n + 1] && p[n + 1] != ' ' && p[n + 1] != '-') {
            size_t m = example_word(p + n + 1);
            if (n + 1 + m <= WIDTH - MORE)
                n += 1 + m;
        }
        if (col > MORE && col + 1 + (int)n > WIDTH) {
            fprintf(f, "\n%*s", MORE, "");
            col = MORE;
        } else {
            fputc(' ', f);
            col++;
        }
        fwrite(p, 1, n, f);
        col += (int)n;
        p += n;
    }
}

/* The options of a spec, one each: name, value, meaning, range, default. */
static void print_options(FILE *f, const argspec *s)
{
    for (const optdef *d = s->opts; d && d->name; d++) {
        char left[160], extra[160] = "";
        snprintf(left, sizeof left, "  %s%s%s%s%s", d->name, d->alias ? ", " : "",
                 d->alias ? d->alias : "", d->kind == OPT_FLAG ? "" : " ",
                 d->kind == OPT_FLAG ? "" : d->arg);
        size_t e = 0;
        if (d->kind == OPT_INT)
            e += (size_t)snprintf(extra + e, sizeof extra - e, d->max >= INT_MAX ? " (%lld or more" :
                                  " (%lld to %lld", d->min, d->max);
        if (d->def)
            e += (size_t)snprintf(extra + e, sizeof extra - e, "%sdefault %s", e ? "; " : " (",
                                  d->def);
        if (e)
            snprintf(extra + e, sizeof extra - e, ")");
        int col = (int)strlen(left);
        fputs(left, f);
        if (col >= 28) {
            fprintf(f, "\n%*s", 28, "");
        } else {
            fprintf(f, "%*s", 28 - col, "");
        }
        col = 28;
        char text[1024];
        snprintf(text, sizeof text, "%s%s", d->help, extra);
        put_wrapped(f, text, &col, 28, 79);
        if (d->ex && *d->ex)
            put_example(f, d->ex);
        fputc('\n', f);
    }
}

/* A dot command. With spec, its line is checked against spec before fn runs
** (fn reads the result in cur); spec with sub set is a list of sub-commands
** (the first is the default), ended by a row with sub NULL. self: fn checks
** its line itself against spec (it needs the unsplit rest of the line). */
typedef struct command {
    const char *name;
    const char *usage;
    const char *help;
    int (*fn)(shell *sh, char **argv, int argc, const char *rest);
    const argspec *spec;
    int self;
} command;



static int cmd_help(shell *sh, char **argv, int argc, const char *rest);
static int check_examples(shell *sh, const command *only);
static int cmd_connect(shell *sh, char **argv, int argc, const char *rest);
static int run_command(shell *sh, const char *cmd);
static int is_slash_copy(const char *line);
static int is_conninfo(const char *s);

static const argspec spec_mode[] = { { NULL, "[" MODE_CHOICES "] [TABLE]", 0, 2, NULL,
                                        "set how query results are printed (insert: INTO TABLE)" } };
/* (main calls it too, for -m, with argv = { "mode", MODE }) */

/* Quotes a possibly schema-qualified name ("analytics.daily") safely. */
static char *quote_qualified(const char *name)
{
    size_t n = pgpipe_quote_ident(NULL, 0, name, 1);
    char *out = malloc(n + 1);
    if (out)
        pgpipe_quote_ident(out, n + 1, name, 1);
    return out;
}

/* .mode insert TABLE: the name as the INSERTs will spell it. A name written
** as SQL would write it (words of letters, digits, '_' and '$' joined by dots,
** or with its own double quotes) is kept; anything else ("order items",
** "x;y") is quoted, split at its first dot, so the output is valid SQL. */
static char *insert_table_name(const char *name)
{
    int plain = *name && !isdigit((unsigned char)*name) && *name != '.';
    for (const char *p = name; *p && plain; p++)
        plain = isalnum((unsigned char)*p) || *p == '_' || *p == '$' ||
                (*p == '.' && p[1] && p[1] != '.');
    if (plain || strchr(name, '"'))
        return strdup(name);
    return quote_qualified(name);
}
static int cmd_mode(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    if (argc < 2) {
        fprintf(sh->out, "current output mode: %s\n", mode_names[sh->mode]);
        return 0;
    }
    long long k;
    if (parse_choice(".mode", "MODE", argv[1], MODE_CHOICES, &k))
        return 1;
    if (argc > 2 && k != MODE_INSERT) {
        errorf(".mode: unexpected argument \"%s\" (only insert takes a TABLE)", argv[2]);
        return 1;
    }
    sh->mode = (int)k;
    if (k == MODE_INSERT) {
        free(sh->insert_table);
        sh->insert_table = argc > 2 ? insert_table_name(argv[2]) : NULL;
    }
    return 0;
}

static const argspec spec_timer[] = { { NULL, "on|off", 1, 1, NULL,
                                         "print the time each statement takes" } };
static int cmd_timer(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    long long k;
    if (parse_choice(".timer", "on|off", cur.pos[0], "on|off", &k))
        return 1;
    sh->timer = k == 0;
    return 0;
}

/* .log LEVEL: what of pgpipe's own log reaches stderr. pgpipe's schema
** installs run with their server NOTICEs sent to this log (level info, shown
** by .log notice or info), not to the terminal; a user's own SQL shows its
** NOTICEs as psql does. */
static const char log_levels[] = "debug|info|notice|warn|error|off";
static const argspec spec_log[] = { { NULL, "[debug|info|notice|warn|error|off]", 0, 1, NULL,
                                       "show or set the level of pgpipe's log on stderr" } };
static int cmd_log(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    static const int lv[] = { PGPIPE_LOG_DEBUG, PGPIPE_LOG_INFO, PGPIPE_LOG_INFO,
                              PGPIPE_LOG_WARN, PGPIPE_LOG_ERROR, PGPIPE_LOG_OFF };
    if (cur.npos == 0) {
        int l = pgpipe_log_get_level();
        fprintf(sh->out, "log level: %s\n", l <= PGPIPE_LOG_DEBUG ? "debug" : l <= PGPIPE_LOG_INFO ?
                "info (shows the NOTICEs of pgpipe's own installs)" : l <= PGPIPE_LOG_WARN ? "warn" :
                l <= PGPIPE_LOG_ERROR ? "error" : "off");
        return 0;
    }
    long long k;
    if (parse_choice(".log", "LEVEL", cur.pos[0], log_levels, &k))
        return 1;
    pgpipe_log_set_level(lv[k]);
    return 0;
}

/* Server NOTICEs of pgpipe's own work on the shell's connection (schema
** installs, migrations) go to the log at level info instead of stderr. */
static void notice_to_log(void *arg, const char *message)
{
    (void)arg;
    int n = (int)strlen(message);
    while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == ' '))
        n--;
    char line[1024];
    snprintf(line, sizeof line, "server: %.*s", n, message);
    pgpipe_log(PGPIPE_LOG_INFO, "shell", line, NULL, 0);
}

static PQnoticeProcessor quiet_notices(PGconn *conn)
{
    return PQsetNoticeProcessor(conn, notice_to_log, NULL);
}

static void restore_notices(PGconn *conn, PQnoticeProcessor old)
{
    if (old)
        PQsetNoticeProcessor(conn, old, NULL);
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

static const argspec spec_conninfo[] = { { NULL, NULL, 0, 0, NULL,
                                            "the database, user and host of the connection" } };
static const argspec spec_version[] = { { NULL, NULL, 0, 0, NULL,
                                           "the pgpipe, libpq and server versions" } };
static const argspec spec_health[] = { { NULL, NULL, 0, 0, NULL,
                                          "the pipeline's health numbers, each against its target" } };
static const argspec spec_stats[] = { { NULL, NULL, 0, 0, NULL,
                                         "events in staging, the last loads and the dead letters" } };
static const argspec spec_quit[] = { { NULL, NULL, 0, 0, NULL, "leave the shell" } };
static const argspec spec_read[] = { { NULL, "FILE", 1, 1, NULL,
                                        "run the SQL and dot commands in FILE" } };
static int run_stream(shell *sh, FILE *f);
static int exec_quiet(PGconn *conn, const char *sql);

static int cmd_read(shell *sh, char **argv, int argc, const char *rest)
{
    (void)rest;
    if (argc < 2) {
        errorf("usage: .read FILE");
        return 1;
    }
    if (sh->read_depth >= READ_DEPTH_MAX) {
        errorf("cannot read \"%s\": scripts read %d deep (a script that reads itself?)", argv[1],
               READ_DEPTH_MAX);
        return 1;
    }
    FILE *f = fopen(argv[1], "r");
    if (!f) {
        errorf("cannot open \"%s\": %s", argv[1], strerror(errno));
        return 1;
    }
    int before = sh->failures;
    const char *saved = sh->source;
    sh->source = argv[1];
    sh->read_depth++;
    run_stream(sh, f);
    sh->read_depth--;
    sh->source = saved;
    fclose(f);
    return sh->failures > before;
}

/* ---- psql's describe commands and sqlite3's schema commands ---------------- */

/* psql's name pattern: [SCHEMA.]NAME, * any text, ? one character, "..."
** taken as written (else lower case), as anchored regular expressions. */
typedef struct name_pattern {
    char ns[512], name[512];
    int has_ns;
} name_pattern;

static void pattern_parse(const char *pat, name_pattern *np)
{
    char *part = np->ns;
    size_t o = 0;
    int inq = 0, which = 0;
    np->has_ns = 0;
    np->ns[0] = np->name[0] = '\0';
    for (const char *p = pat; *p && o + 4 < sizeof np->ns; p++) {
        if (*p == '"') {
            if (inq && p[1] == '"') {
                part[o++] = '"';
                p++;
            } else {
                inq = !inq;
            }
            continue;
        }
        if (!inq && *p == '.' && which == 0) {
            part[o] = '\0';
            which = 1;
            part = np->name;
            o = 0;
            continue;
        }
        if (!inq && *p == '*') {
            part[o++] = '.';
            part[o++] = '*';
        } else if (!inq && *p == '?') {
            part[o++] = '.';
        } else {
            if (strchr("|*+?()[]{}.^$\\", *p))
                part[o++] = '\\';
            part[o++] = inq ? *p : (char)tolower((unsigned char)*p);
        }
    }
    part[o] = '\0';
    if (which) {
        np->has_ns = 1;
    } else {
        memcpy(np->name, np->ns, sizeof np->name);
        np->ns[0] = '\0';
    }
}

/* Appends " AND nsp ~ '^(..)$' AND name ~ '^(..)$'" for a pattern; without
** one, pg_catalog, information_schema and pg_toast are left out (unless
** system). visible (when not NULL) limits an unqualified name to what the
** search path shows, as psql does. */
static int pattern_cond(shell *sh, char *out, size_t size, const char *pat, const char *nsp,
                        const char *name, const char *visible, int system)
{
    size_t o = strlen(out);
    if (!pat || !*pat) {
        if (nsp && !system)
            o += (size_t)snprintf(out + o, size - o, " AND %s <> 'pg_catalog' AND %s <> "
                                  "'information_schema' AND %s !~ '^pg_toast'", nsp, nsp, nsp);
        if (visible && o < size)
            snprintf(out + o, size - o, " AND %s", visible);
        return 0;
    }
    name_pattern np;
    pattern_parse(pat, &np);
    char re[600];
    if (np.has_ns && nsp && *np.ns) {
        snprintf(re, sizeof re, "^(%s)$", np.ns);
        char *lit = PQescapeLiteral(sh->conn, re, strlen(re));
        if (!lit)
            return 1;
        o += (size_t)snprintf(out + o, o < size ? size - o : 0, " AND %s ~ %s", nsp, lit);
        PQfreemem(lit);
    }
    if (*np.name) {
        snprintf(re, sizeof re, "^(%s)$", np.name);
        char *lit = PQescapeLiteral(sh->conn, re, strlen(re));
        if (!lit)
            return 1;
        o += (size_t)snprintf(out + o, o < size ? size - o : 0, " AND %s ~ %s", name, lit);
        PQfreemem(lit);
    }
    if (!np.has_ns && visible && o < size)
        snprintf(out + o, size - o, " AND %s", visible);
    return 0;
}

/* Runs a catalog query and prints it as a table under title (footer, when
** given, instead of the row count); none: empty (when not NULL) on stderr.
** Returns the row count, -1 on error. */
static int show_query(shell *sh, const char *sql, const char *title, const char *footer,
                      const char *empty)
{
    PGresult *r = PQexec(sh->conn, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        report_pq_error(r, sh->conn);
        PQclear(r);
        return -1;
    }
    int n = PQntuples(r);
    if (!n && empty) {
        fprintf(stderr, "%s\n", empty);
    } else {
        sh->title = title;
        sh->footer = footer;
        print_result(sh, r);
        sh->title = sh->footer = NULL;
        if (sh->mode == MODE_ALIGNED && title && !sh->tuples_only)
            fputc('\n', sh->out);
    }
    PQclear(r);
    return n;
}

/* One relation in detail: \d NAME. */
static int describe_one(shell *sh, const char *oid, const char *nsp, const char *rel, char kind,
                        int plus)
{
    char sql[8192], title[600];
    const char *what = kind == 'r' ? "Table" : kind == 'p' ? "Partitioned table" : kind == 'v' ?
                       "View" : kind == 'm' ? "Materialized view" : kind == 'S' ? "Sequence" :
                       kind == 'f' ? "Foreign table" : kind == 'i' ? "Index" : kind == 'I' ?
                       "Partitioned index" : kind == 'c' ? "Composite type" : "Relation";
    snprintf(title, sizeof title, "%s \"%s.%s\"", what, nsp, rel);
    if (kind == 'S') {
        snprintf(sql, sizeof sql,
                 "SELECT format_type(s.seqtypid, NULL) AS \"Type\", s.seqstart AS \"Start\", "
                 "s.seqmin AS \"Minimum\", s.seqmax AS \"Maximum\", s.seqincrement AS \"Increment\", "
                 "CASE WHEN s.seqcycle THEN 'yes' ELSE 'no' END AS \"Cycles?\", s.seqcache AS \"Cache\" "
                 "FROM pg_sequence s WHERE s.seqrelid = %s", oid);
        return show_query(sh, sql, title, "", NULL) < 0;
    }
    /* the footer: partitions, indexes, constraints, triggers, view definition */
    snprintf(sql, sizeof sql,
        "SELECT concat_ws(E'\\n',"
        " (SELECT 'Partition of: ' || i.inhparent::regclass || ' ' || pg_get_expr(c.relpartbound, c.oid)"
        "    FROM pg_inherits i WHERE c.relispartition AND i.inhrelid = c.oid),"
        " CASE WHEN c.relkind = 'p' THEN 'Partition key: ' || pg_get_partkeydef(c.oid) END,"
        " (SELECT E'Indexes:\\n' || string_agg('    \"' || ic.relname || '\"' ||"
        "    CASE WHEN x.indisprimary THEN ' PRIMARY KEY,' WHEN k.contype = 'u' THEN ' UNIQUE CONSTRAINT,'"
        "    WHEN x.indisunique THEN ' UNIQUE,' ELSE '' END || ' ' ||"
        "    regexp_replace(pg_get_indexdef(x.indexrelid), '^.* USING ', ''), E'\\n'"
        "    ORDER BY NOT x.indisprimary, NOT x.indisunique, ic.relname)"
        "    FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid LEFT JOIN pg_constraint k"
        "    ON k.conindid = x.indexrelid AND k.conrelid = c.oid AND k.contype IN ('p', 'u', 'x')"
        "    WHERE x.indrelid = c.oid HAVING count(*) > 0),"
        " (SELECT E'Check constraints:\\n' || string_agg('    \"' || conname || '\" ' ||"
        "    pg_get_constraintdef(oid, true), E'\\n' ORDER BY conname) FROM pg_constraint"
        "    WHERE conrelid = c.oid AND contype = 'c' HAVING count(*) > 0),"
        " (SELECT E'Foreign-key constraints:\\n' || string_agg('    \"' || conname || '\" ' ||"
        "    pg_get_constraintdef(oid, true), E'\\n' ORDER BY conname) FROM pg_constraint"
        "    WHERE conrelid = c.oid AND contype = 'f' HAVING count(*) > 0),"
        " (SELECT E'Referenced by:\\n' || string_agg('    TABLE \"' || conrelid::regclass::text ||"
        "    '\" CONSTRAINT \"' || conname || '\" ' || pg_get_constraintdef(oid, true), E'\\n'"
        "    ORDER BY conname) FROM pg_constraint WHERE confrelid = c.oid AND contype = 'f'"
        "    HAVING count(*) > 0),"
        " (SELECT E'Triggers:\\n' || string_agg('    ' || regexp_replace(pg_get_triggerdef(t.oid, true),"
        "    '^CREATE (CONSTRAINT )?TRIGGER ', ''), E'\\n' ORDER BY t.tgname) FROM pg_trigger t"
        "    WHERE t.tgrelid = c.oid AND NOT t.tgisinternal HAVING count(*) > 0),"
        " (SELECT CASE WHEN %s THEN E'Partitions: ' || string_agg(i.inhrelid::regclass || ' ' ||"
        "    pg_get_expr(pc.relpartbound, pc.oid), E',\\n            ' ORDER BY pc.relname)"
        "    ELSE 'Number of partitions: ' || count(*) || ' (Use \\d+ to list them.)' END"
        "    FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhrelid"
        "    WHERE i.inhparent = c.oid AND c.relkind = 'p' HAVING count(*) > 0),"
        " CASE WHEN %s AND c.relkind IN ('v', 'm') THEN E'View definition:\\n' || pg_get_viewdef(c.oid, true) END,"
        " CASE WHEN c.relkind IN ('i', 'I') THEN (SELECT concat_ws(', ', CASE WHEN x.indisprimary"
        "    THEN 'primary key' WHEN x.indisunique THEN 'unique' END, am.amname, 'for table \"' ||"
        "    (SELECT tn.nspname || '.' || tc.relname FROM pg_class tc JOIN pg_namespace tn ON"
        "    tn.oid = tc.relnamespace WHERE tc.oid = x.indrelid) || '\"')"
        "    FROM pg_index x JOIN pg_am am ON am.oid = c.relam"
        "    WHERE x.indexrelid = c.oid) END)"
        " FROM pg_class c WHERE c.oid = %s", plus ? "true" : "false", plus ? "true" : "false", oid);
    char *footer = query_value(sh, sql, 0, NULL);
    char *foot = footer && *footer ? malloc(strlen(footer) + 2) : NULL;
    if (foot)
        sprintf(foot, "%s\n", footer);
    free(footer);
    if (kind == 'i' || kind == 'I')
        snprintf(sql, sizeof sql,
                 "SELECT a.attname AS \"Column\", format_type(a.atttypid, a.atttypmod) AS \"Type\", "
                 "CASE WHEN a.attnum <= x.indnkeyatts THEN 'yes' ELSE 'no' END AS \"Key?\", "
                 "pg_get_indexdef(a.attrelid, a.attnum, true) AS \"Definition\" FROM pg_attribute a "
                 "JOIN pg_index x ON x.indexrelid = a.attrelid WHERE a.attrelid = %s AND a.attnum > 0 "
                 "ORDER BY a.attnum", oid);
    else
        snprintf(sql, sizeof sql,
                 "SELECT a.attname AS \"Column\", format_type(a.atttypid, a.atttypmod) AS \"Type\", "
                 "coalesce((SELECT co.collname FROM pg_collation co JOIN pg_type ty ON ty.oid = a.atttypid "
                 "WHERE co.oid = a.attcollation AND a.attcollation <> ty.typcollation), '') AS \"Collation\", "
                 "CASE WHEN a.attnotnull THEN 'not null' ELSE '' END AS \"Nullable\", "
                 "coalesce(CASE WHEN a.attidentity = 'a' THEN 'generated always as identity' "
                 "WHEN a.attidentity = 'd' THEN 'generated by default as identity' "
                 "WHEN a.attgenerated = 's' THEN 'generated always as (' || pg_get_expr(d.adbin, d.adrelid) "
                 "|| ') stored' ELSE pg_get_expr(d.adbin, d.adrelid) END, '') AS \"Default\"%s "
                 "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
                 "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                 plus ? ", CASE a.attstorage WHEN 'p' THEN 'plain' WHEN 'm' THEN 'main' WHEN 'x' THEN "
                        "'extended' WHEN 'e' THEN 'external' END AS \"Storage\", "
                        "col_description(a.attrelid, a.attnum) AS \"Description\"" : "", oid);
    int n = show_query(sh, sql, title, foot ? foot : "", NULL);
    free(foot);
    return n < 0;
}

/* psql's \d family: \d [NAME], \dt \di \dv \dm \ds \dE (and mixes: \dtv),
** \df, \dn, \du (\dg), \dx, \l; + adds sizes and descriptions, S system
** objects. cmd is the command without its backslash. */
static int describe(shell *sh, const char *cmd, const char *pat)
{
    if (pat && !*pat) {
        errorf("\\%s: the pattern is empty; give none for every relation", cmd);
        return 1;
    }
    char letters[16] = "", sql[8192];
    int plus = 0, system = 0;
    size_t nl = 0;
    const char *p = cmd + 1; /* after the d (or the l) */
    if (cmd[0] == 'l')
        p = cmd + (!strncmp(cmd, "list", 4) ? 4 : 1);
    for (; *p; p++) {
        if (*p == '+')
            plus = 1;
        else if (*p == 'S')
            system = 1;
        else if (nl + 1 < sizeof letters)
            letters[nl++] = *p;
    }
    letters[nl] = '\0';
    if (cmd[0] == 'z') /* \z is \dp */
        snprintf(letters, sizeof letters, "p");
    if (cmd[0] == 'l') {
        if (nl) {
            errorf("invalid command \\%s (\\? lists the commands)", cmd);
            return 1;
        }
        snprintf(sql, sizeof sql,
                 "SELECT d.datname AS \"Name\", pg_get_userbyid(d.datdba) AS \"Owner\", "
                 "pg_encoding_to_char(d.encoding) AS \"Encoding\", d.datcollate AS \"Collate\", "
                 "d.datctype AS \"Ctype\", array_to_string(d.datacl, E'\\n') AS \"Access privileges\"%s "
                 "FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace WHERE true",
                 plus ? ", CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN "
                        "pg_size_pretty(pg_database_size(d.oid)) ELSE 'No Access' END AS \"Size\", "
                        "t.spcname AS \"Tablespace\", shobj_description(d.oid, 'pg_database') AS "
                        "\"Description\"" : "");
        if (pattern_cond(sh, sql, sizeof sql, pat, NULL, "d.datname", NULL, 1))
            return 1;
        strncat(sql, " ORDER BY 1", sizeof sql - strlen(sql) - 1);
        return show_query(sh, sql, "List of databases", NULL, NULL) < 0;
    }
    if (!strcmp(letters, "") && pat) {
        snprintf(sql, sizeof sql,
                 "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n "
                 "ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','v','m','S','f','i','I','c')");
        if (pattern_cond(sh, sql, sizeof sql, pat, "n.nspname", "c.relname",
                         "pg_table_is_visible(c.oid)", 1))
            return 1;
        strncat(sql, " ORDER BY 2, 3", sizeof sql - strlen(sql) - 1);
        PGresult *r = PQexec(sh->conn, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            report_pq_error(r, sh->conn);
            PQclear(r);
            return 1;
        }
        int rc = 0;
        if (!PQntuples(r)) {
            errorf("Did not find any relation named \"%s\".", pat);
            rc = 1;
        }
        for (int i = 0; i < PQntuples(r) && !rc; i++)
            rc = describe_one(sh, PQgetvalue(r, i, 0), PQgetvalue(r, i, 1), PQgetvalue(r, i, 2),
                              PQgetvalue(r, i, 3)[0], plus);
        PQclear(r);
        return rc;
    }
    if (!strcmp(letters, "f")) {
        snprintf(sql, sizeof sql,
                 "SELECT n.nspname AS \"Schema\", p.proname AS \"Name\", pg_get_function_result(p.oid) "
                 "AS \"Result data type\", pg_get_function_arguments(p.oid) AS \"Argument data types\", "
                 "CASE p.prokind WHEN 'a' THEN 'agg' WHEN 'w' THEN 'window' WHEN 'p' THEN 'proc' "
                 "ELSE 'func' END AS \"Type\"%s FROM pg_proc p JOIN pg_namespace n ON n.oid = "
                 "p.pronamespace JOIN pg_language l ON l.oid = p.prolang WHERE true",
                 plus ? ", CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE "
                        "'volatile' END AS \"Volatility\", pg_get_userbyid(p.proowner) AS \"Owner\", "
                        "l.lanname AS \"Language\", obj_description(p.oid, 'pg_proc') AS "
                        "\"Description\"" : "");
        if (pattern_cond(sh, sql, sizeof sql, pat, "n.nspname", "p.proname",
                         "pg_function_is_visible(p.oid)", system))
            return 1;
        strncat(sql, " ORDER BY 1, 2, 4", sizeof sql - strlen(sql) - 1);
        return show_query(sh, sql, "List of functions", NULL, NULL) < 0;
    }
    if (!strcmp(letters, "n")) {
        snprintf(sql, sizeof sql,
                 "SELECT n.nspname AS \"Name\", pg_get_userbyid(n.nspowner) AS \"Owner\"%s "
                 "FROM pg_namespace n WHERE true%s",
                 plus ? ", array_to_string(n.nspacl, E'\\n') AS \"Access privileges\", "
                        "obj_description(n.oid, 'pg_namespace') AS \"Description\"" : "",
                 pat || system ? "" : " AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'");
        if (pattern_cond(sh, sql, sizeof sql, pat, NULL, "n.nspname", NULL, 1))
            return 1;
        strncat(sql, " ORDER BY 1", sizeof sql - strlen(sql) - 1);
        return show_query(sh, sql, "List of schemas", NULL, NULL) < 0;
    }
    if (!strcmp(letters, "u") || !strcmp(letters, "g")) {
        snprintf(sql, sizeof sql,
                 "SELECT r.rolname AS \"Role name\", concat_ws(E'\\n', nullif(concat_ws(', ', "
                 "CASE WHEN r.rolsuper THEN 'Superuser' END, CASE WHEN NOT r.rolinherit THEN "
                 "'No inheritance' END, CASE WHEN r.rolcreaterole THEN 'Create role' END, "
                 "CASE WHEN r.rolcreatedb THEN 'Create DB' END, CASE WHEN NOT r.rolcanlogin THEN "
                 "'Cannot login' END, CASE WHEN r.rolreplication THEN 'Replication' END, "
                 "CASE WHEN r.rolbypassrls THEN 'Bypass RLS' END), ''), CASE WHEN r.rolconnlimit >= 0 "
                 "THEN r.rolconnlimit || ' connection' || CASE WHEN r.rolconnlimit <> 1 THEN 's' ELSE '' "
                 "END END, 'Password valid until ' || r.rolvaliduntil) AS \"Attributes\", "
                 "ARRAY(SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid "
                 "WHERE m.member = r.oid ORDER BY 1) AS \"Member of\"%s FROM pg_roles r WHERE true%s",
                 plus ? ", shobj_description(r.oid, 'pg_authid') AS \"Description\"" : "",
                 pat || system ? "" : " AND r.rolname !~ '^pg_'");
        if (pattern_cond(sh, sql, sizeof sql, pat, NULL, "r.rolname", NULL, 1))
            return 1;
        strncat(sql, " ORDER BY 1", sizeof sql - strlen(sql) - 1);
        return show_query(sh, sql, "List of roles", NULL, NULL) < 0;
    }
    if (!strcmp(letters, "p")) {
        /* \dp, \z: the privileges of tables, views, sequences */
        snprintf(sql, sizeof sql,
                 "SELECT n.nspname AS \"Schema\", c.relname AS \"Name\", CASE c.relkind WHEN 'r' "
                 "THEN 'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view' WHEN 'm' THEN "
                 "'materialized view' WHEN 'S' THEN 'sequence' WHEN 'f' THEN 'foreign table' END AS "
                 "\"Type\", array_to_string(c.relacl, E'\\n') AS \"Access privileges\", "
                 "array_to_string(ARRAY(SELECT a.attname || E':\\n  ' || array_to_string(a.attacl, "
                 "E'\\n  ') FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT "
                 "a.attisdropped AND a.attacl IS NOT NULL ORDER BY a.attnum), E'\\n') AS \"Column "
                 "privileges\", array_to_string(ARRAY(SELECT pol.polname || CASE pol.polcmd WHEN 'r' "
                 "THEN ' (r)' WHEN 'a' THEN ' (a)' WHEN 'w' THEN ' (w)' WHEN 'd' THEN ' (d)' ELSE '' "
                 "END FROM pg_policy pol WHERE pol.polrelid = c.oid ORDER BY 1), E'\\n') AS "
                 "\"Policies\" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
                 "c.relkind IN ('r','p','v','m','S','f')");
        if (pattern_cond(sh, sql, sizeof sql, pat, "n.nspname", "c.relname",
                         "pg_table_is_visible(c.oid)", system))
            return 1;
        strncat(sql, " ORDER BY 1, 2", sizeof sql - strlen(sql) - 1);
        return show_query(sh, sql, "Access privileges", NULL, NULL) < 0;
    }
    if (!strcmp(letters, "T") || !strcmp(letters, "D")) {
        /* \dT: data types (not row types of tables, not arrays); \dD: domains */
        int dom = letters[0] == 'D';
        snprintf(sql, sizeof sql,
                 "SELECT n.nspname AS \"Schema\", %s FROM pg_type t JOIN pg_namespace n ON n.oid = "
                 "t.typnamespace WHERE %s",
                 dom ? "t.typname AS \"Name\", format_type(t.typbasetype, t.typtypmod) AS \"Type\", "
                       "CASE WHEN t.typnotnull THEN 'not null' END AS \"Nullable\", t.typdefault AS "
                       "\"Default\", array_to_string(ARRAY(SELECT pg_get_constraintdef(k.oid, true) "
                       "FROM pg_constraint k WHERE k.contypid = t.oid ORDER BY k.conname), E'\\n') AS "
                       "\"Check\", obj_description(t.oid, 'pg_type') AS \"Description\""
                     : "format_type(t.oid, NULL) AS \"Name\", obj_description(t.oid, 'pg_type') AS "
                       "\"Description\"",
                 dom ? "t.typtype = 'd'"
                     : "(t.typrelid = 0 OR (SELECT c.relkind = 'c' FROM pg_class c WHERE c.oid = "
                       "t.typrelid)) AND NOT EXISTS (SELECT 1 FROM pg_type el WHERE el.oid = "
                       "t.typelem AND el.typarray = t.oid)");
        if (pattern_cond(sh, sql, sizeof sql, pat, "n.nspname", "t.typname",
                         "pg_type_is_visible(t.oid)", system))
            return 1;
        strncat(sql, " ORDER BY 1, 2", sizeof sql - strlen(sql) - 1);
        return show_query(sh, sql, dom ? "List of domains" : "List of data types", NULL, NULL) < 0;
    }
    if (!strcmp(letters, "x")) {
        snprintf(sql, sizeof sql,
                 "SELECT e.extname AS \"Name\", e.extversion AS \"Version\", n.nspname AS \"Schema\", "
                 "obj_description(e.oid, 'pg_extension') AS \"Description\" FROM pg_extension e "
                 "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE true");
        if (pattern_cond(sh, sql, sizeof sql, pat, NULL, "e.extname", NULL, 1))
            return 1;
        strncat(sql, " ORDER BY 1", sizeof sql - strlen(sql) - 1);
        return show_query(sh, sql, "List of installed extensions", NULL, NULL) < 0;
    }
    /* relations: \d (all of them), \dt \di \dv \dm \ds \dE and their mixes */
    char kinds[64] = "";
    int index = 0;
    if (!*letters)
        snprintf(kinds, sizeof kinds, "'r','p','v','m','S','f'");
    for (const char *l = letters; *l; l++) {
        const char *k = *l == 't' ? "'r','p'" : *l == 'i' ? "'i','I'" : *l == 'v' ? "'v'" :
                        *l == 'm' ? "'m'" : *l == 's' ? "'S'" : *l == 'E' ? "'f'" : NULL;
        if (!k) {
            errorf("invalid command \\%s (\\? lists the describe commands pgpipe has)", cmd);
            return 1;
        }
        index |= *l == 'i';
        snprintf(kinds + strlen(kinds), sizeof kinds - strlen(kinds), "%s%s", *kinds ? "," : "", k);
    }
    snprintf(sql, sizeof sql,
             "SELECT n.nspname AS \"Schema\", c.relname AS \"Name\", CASE c.relkind WHEN 'r' THEN "
             "'table' WHEN 'p' THEN 'partitioned table' WHEN 'v' THEN 'view' WHEN 'm' THEN "
             "'materialized view' WHEN 'i' THEN 'index' WHEN 'I' THEN 'partitioned index' WHEN 'S' "
             "THEN 'sequence' WHEN 'f' THEN 'foreign table' END AS \"Type\", "
             "pg_get_userbyid(c.relowner) AS \"Owner\"%s%s FROM pg_class c JOIN pg_namespace n ON "
             "n.oid = c.relnamespace LEFT JOIN pg_am am ON am.oid = c.relam%s WHERE c.relkind IN (%s)",
             index ? ", t.relname AS \"Table\"" : "",
             plus ? ", CASE c.relpersistence WHEN 'p' THEN 'permanent' WHEN 't' THEN 'temporary' "
                    "ELSE 'unlogged' END AS \"Persistence\", am.amname AS \"Access method\", "
                    "pg_size_pretty(pg_table_size(c.oid)) AS \"Size\", obj_description(c.oid, "
                    "'pg_class') AS \"Description\"" : "",
             index ? " LEFT JOIN pg_index x ON x.indexrelid = c.oid LEFT JOIN pg_class t ON "
                     "t.oid = x.indrelid" : "", kinds);
    if (pattern_cond(sh, sql, sizeof sql, pat, "n.nspname", "c.relname", "pg_table_is_visible(c.oid)",
                     system))
        return 1;
    strncat(sql, " ORDER BY 1, 2", sizeof sql - strlen(sql) - 1);
    char none[600];
    if (pat)
        snprintf(none, sizeof none, "Did not find any relation named \"%s\".", pat);
    else
        snprintf(none, sizeof none, "Did not find any relations.");
    return show_query(sh, sql, "List of relations", NULL, none) < 0;
}

/* sqlite3's way of listing names: in columns across an 80-column screen. */
static int print_names(shell *sh, const char *sql)
{
    PGresult *r = PQexec(sh->conn, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        report_pq_error(r, sh->conn);
        PQclear(r);
        return 1;
    }
    int n = PQntuples(r);
    size_t w = 1;
    for (int i = 0; i < n; i++)
        if (display_width(PQgetvalue(r, i, 0)) > w)
            w = display_width(PQgetvalue(r, i, 0));
    int ncol = (int)(80 / (w + 2));
    if (ncol < 1)
        ncol = 1;
    int nrow = (n + ncol - 1) / ncol;
    for (int i = 0; i < nrow; i++) {
        for (int j = 0; j < ncol; j++) {
            int k = j * nrow + i;
            if (k >= n)
                break;
            const char *v = PQgetvalue(r, k, 0);
            int last = j == ncol - 1 || (j + 1) * nrow + i >= n;
            fputs(v, sh->out);
            for (size_t s = display_width(v); !last && s < w + 2; s++)
                fputc(' ', sh->out);
        }
        fputc('\n', sh->out);
    }
    PQclear(r);
    return 0;
}

/* " AND (name LIKE pat OR schema.name LIKE pat)" for sqlite3's PATTERN. */
static int like_cond(shell *sh, char *sql, size_t size, const char *pat, const char *nsp,
                     const char *name)
{
    if (!pat)
        return 0;
    if (!*pat) {
        errorf("%s: the pattern is empty; give none for every relation", cur.cmd);
        return 1;
    }
    char *lit = PQescapeLiteral(sh->conn, pat, strlen(pat));
    if (!lit)
        return 1;
    size_t o = strlen(sql);
    snprintf(sql + o, size - o, " AND (%s LIKE %s OR %s || '.' || %s LIKE %s)", name, lit, nsp,
             name, lit);
    PQfreemem(lit);
    return 0;
}

/* Where user relations are: not the catalogs, not partitions. */
#define USER_RELS "n.nspname NOT IN ('pg_catalog', 'information_schema') AND " \
                  "n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp' AND NOT c.relispartition"

static const argspec spec_tables[] = { { NULL, "[PATTERN]", 0, 1, NULL,
                                          "the tables and views (LIKE PATTERN), as sqlite3 lists them" } };
/* The names a query gives, of the relations c (schema n) LIKE the command's
** pattern when it has one, in order. */
static int list_names(shell *sh, const char *query)
{
    char sql[2048];
    snprintf(sql, sizeof sql, "%s", query);
    if (like_cond(sh, sql, sizeof sql, cur.npos ? cur.pos[0] : NULL, "n.nspname", "c.relname"))
        return 1;
    strncat(sql, " ORDER BY 1", sizeof sql - strlen(sql) - 1);
    return print_names(sh, sql);
}

static int cmd_tables(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    return list_names(sh,
        "SELECT CASE WHEN pg_table_is_visible(c.oid) THEN c.relname ELSE n.nspname || '.' || "
        "c.relname END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE "
        "c.relkind IN ('r', 'p', 'v', 'm', 'f') AND " USER_RELS);
}

static const argspec spec_indexes[] = { { NULL, "[TABLE]", 0, 1, NULL,
                                           "the indexes (of the tables LIKE TABLE)" } };
static int cmd_indexes(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    return list_names(sh,
        "SELECT CASE WHEN pg_table_is_visible(i.oid) THEN i.relname ELSE n.nspname || '.' || "
        "i.relname END FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c "
        "ON c.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE " USER_RELS);
}

static const argspec spec_schema[] = { { NULL, "[PATTERN]", 0, 1, NULL,
                                          "the CREATE statements of the tables and views (LIKE PATTERN)" } };
static int cmd_schema(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    char sql[8192];
    snprintf(sql, sizeof sql,
        "SELECT CASE WHEN c.relkind IN ('v', 'm') THEN 'CREATE ' || CASE c.relkind WHEN 'm' THEN "
        "'MATERIALIZED ' ELSE '' END || 'VIEW ' || c.oid::regclass || E' AS\\n' || "
        "rtrim(pg_get_viewdef(c.oid, true), ';') || ';' ELSE 'CREATE TABLE ' || c.oid::regclass || "
        "E' (\\n' || coalesce((SELECT string_agg('    ' || quote_ident(a.attname) || ' ' || "
        "format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attidentity = 'a' THEN "
        "' GENERATED ALWAYS AS IDENTITY' WHEN a.attidentity = 'd' THEN ' GENERATED BY DEFAULT AS "
        "IDENTITY' WHEN a.attgenerated = 's' THEN ' GENERATED ALWAYS AS (' || pg_get_expr(d.adbin, "
        "d.adrelid) || ') STORED' ELSE coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') "
        "END || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END, E',\\n' ORDER BY a.attnum) "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '') || "
        "coalesce((SELECT E',\\n' || string_agg('    CONSTRAINT ' || quote_ident(k.conname) || ' ' || "
        "pg_get_constraintdef(k.oid), E',\\n' ORDER BY k.contype DESC, k.conname) FROM pg_constraint k "
        "WHERE k.conrelid = c.oid AND k.contype IN ('p', 'u', 'c', 'f', 'x')), '') || E'\\n)' || "
        "CASE WHEN c.relkind = 'p' THEN ' PARTITION BY ' || pg_get_partkeydef(c.oid) ELSE '' END || ';' "
        "|| coalesce((SELECT string_agg(E'\\n' || pg_get_indexdef(x.indexrelid) || ';', '' ORDER BY "
        "x.indexrelid) FROM pg_index x WHERE x.indrelid = c.oid AND NOT EXISTS (SELECT 1 FROM "
        "pg_constraint k WHERE k.conindid = x.indexrelid AND k.contype IN ('p', 'u', 'x'))), '') END "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN "
        "('r', 'p', 'v', 'm') AND " USER_RELS);
    if (like_cond(sh, sql, sizeof sql, cur.npos ? cur.pos[0] : NULL, "n.nspname", "c.relname"))
        return 1;
    strncat(sql, " ORDER BY n.nspname, c.relname", sizeof sql - strlen(sql) - 1);
    PGresult *r = PQexec(sh->conn, sql);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        report_pq_error(r, sh->conn);
        PQclear(r);
        return 1;
    }
    for (int i = 0; i < PQntuples(r); i++)
        fprintf(sh->out, "%s\n", PQgetvalue(r, i, 0));
    PQclear(r);
    return 0;
}

/* ---- where output goes (\o, .output, .once) ---------------------------------- */

/* Closes what \o or .output opened; output goes to stdout again. */
static void output_close(shell *sh)
{
    if (sh->outfile) {
        if (sh->outpipe)
            pclose(sh->outfile);
        else
            fclose(sh->outfile);
    }
    sh->outfile = NULL;
    sh->outpipe = 0;
    output_is_pipe = 0;
    sh->out = stdout;
}

/* Output to FILE, to the command after '|', or (NULL, "-", "stdout") to stdout. */
static int output_open(shell *sh, const char *cmd, const char *target)
{
    if (target && !*target) { /* '' (a script's unset variable) is no file, nor stdout */
        errorf("%s: the file name is empty; %s", cmd,
               strcmp(cmd, ".output") && strcmp(cmd, "\\o") ? "name a file"
                                                             : "give none to go back to stdout");
        return 1;
    }
    fflush(sh->out);
    output_close(sh);
    if (!target || !strcmp(target, "-") || !strcmp(target, "stdout"))
        return 0;
    FILE *f = target[0] == '|' ? popen(target + 1, "w") : fopen(target, "w");
    if (!f) {
        errorf("%s: cannot open \"%s\": %s", cmd, target, strerror(errno));
        return 1;
    }
    sh->outfile = sh->out = f;
    sh->outpipe = target[0] == '|';
    output_is_pipe = sh->outpipe;
    return 0;
}

static const argspec spec_output[] = { { NULL, "[FILE|'|COMMAND']", 0, 1, NULL,
                                          "send the output to FILE (none: back to stdout), as \\o" } };
static int cmd_output(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    return output_open(sh, ".output", cur.npos ? cur.pos[0] : NULL);
}

static const argspec spec_once[] = { { NULL, "FILE", 1, 1, NULL,
                                        "send the output of the next command only to FILE" } };
static int cmd_once(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    if (output_open(sh, ".once", cur.pos[0]))
        return 1;
    sh->oncefile = sh->outfile;
    return 0;
}

static const argspec spec_onoff_headers[] = { { NULL, "on|off", 1, 1, NULL,
                                                 "print the column names over the rows (default on)" } };
static int cmd_headers(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    long long k;
    if (parse_choice(".headers", "on|off", cur.pos[0], "on|off", &k))
        return 1;
    sh->headers_off = k == 1;
    return 0;
}

static const argspec spec_changes[] = { { NULL, "on|off", 1, 1, NULL,
                                           "after each INSERT, UPDATE, DELETE: the rows it changed" } };
static int cmd_changes(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    long long k;
    if (parse_choice(".changes", "on|off", cur.pos[0], "on|off", &k))
        return 1;
    sh->changes = k == 0;
    return 0;
}

static int set_nullstr(shell *sh, const char *v)
{
    char *d = strdup(v);
    if (!d)
        return 1;
    free(sh->nullstr);
    sh->nullstr = d;
    return 0;
}

static const argspec spec_nullvalue[] = { { NULL, "TEXT", 1, 1, NULL,
                                             "show NULL as TEXT (as \\pset null)" } };
static int cmd_nullvalue(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    return set_nullstr(sh, cur.pos[0]);
}

/* One CSV field of a header line at *p (quotes allowed), into out. */
static const char *csv_header_field(const char *p, char *out, size_t size)
{
    size_t o = 0;
    if (*p == '"') {
        for (p++; *p; p++) {
            if (*p == '"' && p[1] == '"')
                p++;
            else if (*p == '"') {
                p++;
                break;
            }
            if (o + 1 < size)
                out[o++] = *p;
        }
    } else {
        for (; *p && *p != ',' && *p != '\n' && *p != '\r'; p++)
            if (o + 1 < size)
                out[o++] = *p;
    }
    out[o] = '\0';
    return p;
}

static const optdef opts_import[] = {
    { "--map", NULL, OPT_TEXT, "CSVNAME=COLUMN,...", 0, 0, NULL,
      "header names that differ from the table's columns (the others map by name)",
      ".import customers.csv crm.customers --map email_address=email,zip=postal_code" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_import[] = { { NULL, "FILE TABLE", 2, 2, opts_import,
    "load a CSV file with a header into TABLE (made, all text, when missing), by column name" } };

/* .import FILE TABLE: sqlite3's import of a CSV file with a header line. A
** missing TABLE is created from the header (text columns); an existing one
** takes the columns by header name (--map renames). COPY does the work. */
static int cmd_import(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    const char *file = cur.pos[0], *table = cur.pos[1], *map = opt_str(&cur, "--map", NULL);
    FILE *f = fopen(file, "r");
    if (!f) {
        errorf(".import: cannot open \"%s\": %s", file, strerror(errno));
        return 1;
    }
    char *line = NULL, *cols = NULL, *create = NULL, *sql = NULL;
    size_t cap = 0;
    int rc = 1, ncol = 0, own_tx = 0;
    PGresult *r = NULL;
    if (getline(&line, &cap, f) < 0) {
        errorf(".import: %s is empty (it needs a header line)", file);
        goto out;
    }
    /* the column lists, as long as the header needs (quoting at most doubles
    ** a name; --map may lengthen one) */
    size_t room = 4 * (strlen(line) + (map ? strlen(map) : 0)) + 64;
    cols = calloc(room, 1);
    create = calloc(room + 6 * strlen(line), 1);
    sql = malloc(2 * room + 6 * strlen(line) + strlen(table) + 128);
    if (!cols || !create || !sql) {
        errorf("out of memory");
        goto out;
    }
    const char *tl = table;
    const char *tparams[1] = { tl };
    r = PQexecParams(sh->conn, "SELECT to_regclass($1)::oid", 1, NULL, tparams, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        const char *m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
        errorf(".import: TABLE \"%s\": %s", table, m ? m : PQerrorMessage(sh->conn));
        goto out;
    }
    int exists = !PQgetisnull(r, 0, 0);
    char oid[32];
    snprintf(oid, sizeof oid, "%s", exists ? PQgetvalue(r, 0, 0) : "0");
    PQclear(r);
    r = NULL;
    /* a UTF-8 byte order mark (spreadsheets write one) is not part of the first name */
    const char *hdr = strncmp(line, "\xef\xbb\xbf", 3) ? line : line + 3;
    for (const char *p = hdr; *p && *p != '\n' && *p != '\r';) {
        char name[256], quoted[600];
        p = csv_header_field(p, name, sizeof name);
        if (*p == ',')
            p++;
        /* --map CSVNAME=COLUMN renames */
        for (const char *m = map; m && *m;) {
            size_t n = strcspn(m, ",");
            const char *eq = memchr(m, '=', n);
            if (eq && (size_t)(eq - m) == strlen(name) && !strncmp(m, name, (size_t)(eq - m))) {
                snprintf(name, sizeof name, "%.*s", (int)(n - (size_t)(eq - m) - 1), eq + 1);
                break;
            }
            m += n + (m[n] == ',');
        }
        if (!*name) {
            errorf(".import: %s: column %d of the header has no name", file, ncol + 1);
            goto out;
        }
        char *qi = PQescapeIdentifier(sh->conn, name, strlen(name));
        if (!qi)
            goto out;
        snprintf(quoted, sizeof quoted, "%s", qi);
        PQfreemem(qi);
        if (exists) {
            const char *params[2] = { oid, name };
            r = PQexecParams(sh->conn, "SELECT 1 FROM pg_attribute WHERE attrelid = $1::oid AND "
                             "attname = $2 AND attnum > 0 AND NOT attisdropped", 2, NULL, params,
                             NULL, NULL, 0);
            int found = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
            PQclear(r);
            r = NULL;
            if (!found) {
                errorf(".import: %s has no column \"%s\" (from the header of %s; --map %s=COLUMN "
                       "names its column)", table, name, file, name);
                goto out;
            }
        }
        strcat(strcat(cols, ncol ? ", " : ""), quoted);
        strcat(strcat(strcat(create, ncol ? ", " : ""), quoted), " text");
        ncol++;
    }
    if (!exists) {
        /* the table it makes and the rows go together: a COPY that fails
        ** leaves no new empty table (inside the user's own transaction, its
        ** rollback takes both) */
        own_tx = PQtransactionStatus(sh->conn) == PQTRANS_IDLE;
        if (own_tx && exec_quiet(sh->conn, "BEGIN")) {
            own_tx = 0;
            goto out;
        }
        sprintf(sql, "CREATE TABLE %s (%s)", table, create);
        if (exec_quiet(sh->conn, sql))
            goto out;
    }
    sprintf(sql, "COPY %s (%s) FROM STDIN WITH (FORMAT csv, HEADER true)", table, cols);
    r = PQexec(sh->conn, sql);
    if (PQresultStatus(r) != PGRES_COPY_IN) {
        report_pq_error(r, sh->conn);
        goto out;
    }
    PQclear(r);
    rewind(f);
    char buf[65536];
    size_t n;
    int ok = 1;
    while (ok && (n = fread(buf, 1, sizeof buf, f)) > 0)
        ok = PQputCopyData(sh->conn, buf, (int)n) == 1;
    PQputCopyEnd(sh->conn, ok ? NULL : "the file could not be sent");
    r = PQgetResult(sh->conn);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        report_pq_error(r, sh->conn);
    } else {
        char rows[32];
        snprintf(rows, sizeof rows, "%s", PQcmdTuples(r));
        PQclear(r);
        while ((r = PQgetResult(sh->conn)) != NULL)
            PQclear(r);
        if (own_tx) {
            own_tx = 0;
            if (exec_quiet(sh->conn, "COMMIT"))
                goto out;
        }
        if (!sh->quiet)
            fprintf(sh->out, "imported %s row%s into %s%s\n", rows, strcmp(rows, "1") ? "s" : "",
                    table, exists ? "" : " (created)");
        rc = 0;
    }
    PQclear(r);
    while ((r = PQgetResult(sh->conn)) != NULL)
        PQclear(r);
out:
    if (own_tx)
        exec_quiet(sh->conn, "ROLLBACK");
    PQclear(r);
    free(line);
    free(cols);
    free(create);
    free(sql);
    fclose(f);
    return rc;
}

static const argspec spec_dump[] = { { NULL, "[TABLE]", 0, 1, NULL,
    "the rows of every table (or those LIKE TABLE) as INSERT statements (pg_dump --data-only "
    "--inserts)" } };

/* .dump [TABLE]: data only, as INSERT statements: the schema is pg_dump's
** (or .schema's) job; partitions are dumped under their own names, a parent
** of inheritance without its children's rows (FROM ONLY). As pg_dump
** --data-only: one snapshot for every table (REPEATABLE READ, when no
** transaction is open), tables in foreign-key order (a referenced table
** before the tables referring to it; a cycle is said on stderr), identity
** columns GENERATED ALWAYS written with OVERRIDING SYSTEM VALUE, and the
** sequences' values (those the dumped tables own; every one for a whole
** dump) as setval at the end. Rows are streamed (single-row mode), so a large
** table is not held in memory. */

/* The dumped tables in the order they load back: each after the tables its
** foreign keys refer to (of those dumped), else by name. *cyclic is set when
** some tables refer to each other in a cycle; they come last, by name. */
static int *dump_order(PGresult *tables, PGresult *edges, int *cyclic)
{
    int n = PQntuples(tables), ne = PQntuples(edges);
    int *order = malloc(sizeof(int) * (size_t)(n ? n : 1));
    int *child = malloc(sizeof(int) * (size_t)(ne ? ne : 1));
    int *parent = malloc(sizeof(int) * (size_t)(ne ? ne : 1));
    char *done = calloc((size_t)(n ? n : 1), 1);
    if (!order || !child || !parent || !done) {
        free(order), free(child), free(parent), free(done);
        return NULL;
    }
    /* the edges between dumped tables, as indexes into tables */
    int m = 0;
    for (int e = 0; e < ne; e++) {
        int c = -1, p = -1;
        for (int i = 0; i < n && (c < 0 || p < 0); i++) {
            if (!strcmp(PQgetvalue(edges, e, 0), PQgetvalue(tables, i, 0)))
                c = i;
            if (!strcmp(PQgetvalue(edges, e, 1), PQgetvalue(tables, i, 0)))
                p = i;
        }
        if (c >= 0 && p >= 0 && c != p)
            child[m] = c, parent[m] = p, m++;
    }
    int k = 0;
    *cyclic = 0;
    while (k < n) {
        int pick = -1;
        for (int i = 0; i < n && pick < 0; i++) {
            if (done[i])
                continue;
            int ready = 1;
            for (int e = 0; e < m && ready; e++)
                if (child[e] == i && !done[parent[e]])
                    ready = 0;
            if (ready)
                pick = i;
        }
        if (pick < 0) { /* a cycle: the rest by name */
            *cyclic = 1;
            for (int i = 0; i < n; i++)
                if (!done[i])
                    done[i] = 1, order[k++] = i;
            break;
        }
        done[pick] = 1;
        order[k++] = pick;
    }
    free(child), free(parent), free(done);
    return order;
}

/* The rows of one table (oid, quoted name) as INSERT statements, streamed. */
static int dump_table(shell *sh, const char *oid, const char *name)
{
    const char *params[1] = { oid };
    /* each column's value as SQL text: numbers bare, NULL, DEFAULT for a
    ** generated column, everything else a quoted literal; then whether an
    ** identity column is GENERATED ALWAYS */
    PGresult *c = PQexecParams(sh->conn,
        "SELECT coalesce(string_agg(CASE WHEN a.attgenerated <> '' THEN '''DEFAULT''' "
        "WHEN a.atttypid IN (20, 21, 23, 26, 700, 701, 1700) THEN format('CASE WHEN %1$I::text "
        "IN (''NaN'', ''Infinity'', ''-Infinity'') THEN quote_literal(%1$I::text) ELSE "
        "coalesce(%1$I::text, ''NULL'') END', a.attname) WHEN a.atttypid = 16 THEN "
        "format('coalesce(%I::text, ''NULL'')', a.attname) ELSE format('quote_nullable(%I::text)', "
        "a.attname) END, ', ' ORDER BY a.attnum), ''), coalesce(bool_or(a.attidentity = 'a'), "
        "false) FROM pg_attribute a WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT "
        "a.attisdropped", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(c) != PGRES_TUPLES_OK) {
        report_pq_error(c, sh->conn);
        PQclear(c);
        return 1;
    }
    const char *head = !strcmp(PQgetvalue(c, 0, 1), "t") ? " OVERRIDING SYSTEM VALUE VALUES ("
                                                         : " VALUES (";
    char *q = malloc(strlen(PQgetvalue(c, 0, 0)) + 2 * strlen(name) + 256);
    char *lit = PQescapeLiteral(sh->conn, name, strlen(name));
    if (!q || !lit) {
        free(q);
        PQfreemem(lit);
        PQclear(c);
        return 1;
    }
    /* (an array, not concat_ws: a function takes at most 100 arguments) */
    if (*PQgetvalue(c, 0, 0))
        sprintf(q, "SELECT 'INSERT INTO ' || %s || '%s' || array_to_string(ARRAY[%s]::text[], "
                   "', ') || ');' FROM ONLY %s", lit, head, PQgetvalue(c, 0, 0), name);
    else
        sprintf(q, "SELECT 'INSERT INTO ' || %s || ' DEFAULT VALUES;' FROM ONLY %s", lit, name);
    PQfreemem(lit);
    PQclear(c);
    int rc = 0;
    if (!PQsendQuery(sh->conn, q) || !PQsetSingleRowMode(sh->conn)) {
        errorf(".dump: %s: %s", name, PQerrorMessage(sh->conn));
        rc = 1;
    }
    free(q);
    if (!rc)
        fprintf(sh->out, "\n--\n-- Data for %s\n--\n\n", name);
    PGresult *d;
    while (!rc && (d = PQgetResult(sh->conn)) != NULL) {
        ExecStatusType st = PQresultStatus(d);
        if (st == PGRES_SINGLE_TUPLE)
            fprintf(sh->out, "%s\n", PQgetvalue(d, 0, 0));
        else if (st != PGRES_TUPLES_OK) {
            report_pq_error(d, sh->conn);
            rc = 1;
        }
        PQclear(d);
    }
    while ((d = PQgetResult(sh->conn)) != NULL) /* after an error: the rest */
        PQclear(d);
    return rc;
}

static int cmd_dump(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    const char *pat = cur.npos ? cur.pos[0] : NULL;
    char sql[4096];
    snprintf(sql, sizeof sql,
             "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) FROM pg_class c "
             "JOIN pg_namespace n ON n.oid = "
             "c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', "
             "'information_schema') AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp'");
    if (like_cond(sh, sql, sizeof sql, pat, "n.nspname", "c.relname"))
        return 1;
    strncat(sql, " ORDER BY n.nspname, c.relname", sizeof sql - strlen(sql) - 1);
    /* one snapshot for every table, unless the user's own transaction is it */
    int own_tx = PQtransactionStatus(sh->conn) == PQTRANS_IDLE;
    if (own_tx && exec_quiet(sh->conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        return 1;
    int rc = 1, cyclic = 0;
    int *order = NULL;
    char *oids = NULL;
    PGresult *edges = NULL, *seq = NULL;
    PGresult *t = PQexec(sh->conn, sql);
    if (PQresultStatus(t) != PGRES_TUPLES_OK) {
        report_pq_error(t, sh->conn);
        goto out;
    }
    if (pat && PQntuples(t) == 0) {
        errorf(".dump: no table like \"%s\"", pat);
        goto out;
    }
    /* foreign keys, a partitioned table standing for its partitions */
    edges = PQexec(sh->conn,
        "SELECT DISTINCT c.l, p.l FROM pg_constraint k CROSS JOIN LATERAL (SELECT k.conrelid "
        "UNION SELECT relid FROM pg_partition_tree(k.conrelid) WHERE isleaf) c(l) CROSS JOIN "
        "LATERAL (SELECT k.confrelid UNION SELECT relid FROM pg_partition_tree(k.confrelid) "
        "WHERE isleaf) p(l) WHERE k.contype = 'f' AND k.conparentid = 0");
    if (PQresultStatus(edges) != PGRES_TUPLES_OK) {
        report_pq_error(edges, sh->conn);
        goto out;
    }
    if (!(order = dump_order(t, edges, &cyclic)))
        goto out;
    if (cyclic)
        fprintf(stderr, "warning: .dump: some tables refer to each other in a cycle of foreign "
                        "keys; to load the dump, defer the constraints or load it with SET "
                        "session_replication_role = replica\n");
    size_t olen = 3;
    for (int i = 0; i < PQntuples(t); i++)
        olen += strlen(PQgetvalue(t, i, 0)) + 1;
    if (!(oids = malloc(olen)))
        goto out;
    strcpy(oids, "{");
    rc = 0;
    for (int i = 0; i < PQntuples(t) && !rc && !interrupted; i++) {
        int k = order[i];
        rc = dump_table(sh, PQgetvalue(t, k, 0), PQgetvalue(t, k, 1));
        strcat(oids, i ? "," : "");
        strcat(oids, PQgetvalue(t, k, 0));
    }
    strcat(oids, "}");
    if (rc || interrupted) {
        rc = 1;
        goto out;
    }
    /* the sequences: those the dumped tables own (serial, identity), and every
    ** one when the whole database is dumped */
    const char *sp[2] = { oids, pat ? "f" : "t" };
    seq = PQexecParams(sh->conn,
        "SELECT CASE WHEN has_sequence_privilege(s.oid, 'SELECT,USAGE') THEN format('SELECT "
        "pg_catalog.setval(%L, %s, %s);', quote_ident(n.nspname) || '.' || quote_ident(s.relname), "
        "coalesce(q.last_value, q.start_value), CASE WHEN q.last_value IS NULL THEN 'false' ELSE "
        "'true' END) ELSE format('-- %I.%I: no privilege to read its value', n.nspname, "
        "s.relname) END FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace JOIN "
        "pg_sequences q ON q.schemaname = n.nspname AND q.sequencename = s.relname WHERE "
        "s.relkind = 'S' AND ($2::bool AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname !~ '^pg_temp' OR EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = "
        "'pg_class'::regclass AND d.objid = s.oid AND d.refclassid = 'pg_class'::regclass AND "
        "d.refobjid = ANY ($1::oid[]) AND d.deptype IN ('a', 'i'))) ORDER BY n.nspname, s.relname",
        2, NULL, sp, NULL, NULL, 0);
    if (PQresultStatus(seq) != PGRES_TUPLES_OK) {
        report_pq_error(seq, sh->conn);
        rc = 1;
        goto out;
    }
    if (PQntuples(seq)) {
        fprintf(sh->out, "\n--\n-- Sequence values\n--\n\n");
        for (int i = 0; i < PQntuples(seq); i++)
            fprintf(sh->out, "%s\n", PQgetvalue(seq, i, 0));
    }
out:
    if (own_tx && PQtransactionStatus(sh->conn) != PQTRANS_IDLE)
        exec_quiet(sh->conn, rc ? "ROLLBACK" : "COMMIT");
    free(order);
    free(oids);
    PQclear(t);
    PQclear(edges);
    PQclear(seq);
    return rc;
}

/* ---- .top: the pipeline, live ------------------------------------------------- */

static const optdef opts_top[] = {
    { "--interval", NULL, OPT_INT, "SECONDS", 1, 3600, "2", "seconds between refreshes",
      ".top --interval 5" },
    { "--count", NULL, OPT_INT, "N", 1, 1000000, NULL, "stop after N refreshes",
      ".top --interval 1 --count 10" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_top[] = { { NULL, NULL, 0, 0, opts_top,
    "a refreshing view of the pipeline: backlog, rates, workers, dead letters (q leaves)" } };

/* Per event type: the backlog, its oldest age, what arrived and what was
** processed in the last minute, the workers holding leases. */
#define TOP_EVENTS \
    "SELECT event_type, count(*) FILTER (WHERE NOT processed) AS backlog, " \
    "coalesce(to_char(now() - min(received_at) FILTER (WHERE NOT processed), 'HH24:MI:SS'), '') AS oldest, " \
    "count(*) FILTER (WHERE received_at > now() - interval '1 minute') AS in_1m, " \
    "count(*) FILTER (WHERE processed_at > now() - interval '1 minute') AS done_1m, " \
    "count(DISTINCT claimed_by) FILTER (WHERE lease_expires_at > now()) AS workers " \
    "FROM staging.raw_events GROUP BY event_type ORDER BY backlog DESC, event_type LIMIT 15"
/* The dead letters' growth by error (its text up to the first colon). */
#define TOP_DEAD \
    "SELECT substring(error_message FROM '^[^:\n]{1,60}') AS error, " \
    "count(*) FILTER (WHERE last_failed_at > now() - interval '1 minute') AS new_1m, " \
    "count(*) FILTER (WHERE last_failed_at > now() - interval '1 hour') AS new_1h, count(*) AS dead " \
    "FROM pgpipe.dead_letters WHERE status = 'dead' GROUP BY 1 ORDER BY 2 DESC, 3 DESC, 4 DESC LIMIT 8"
#define TOP_LINE \
    "SELECT format('backlog %s, oldest %s, in %s/min, processed %s/min, workers %s, dead %s (+%s/min)', " \
    "count(*) FILTER (WHERE NOT processed), coalesce(to_char(now() - min(received_at) FILTER " \
    "(WHERE NOT processed), 'HH24:MI:SS'), '-'), count(*) FILTER (WHERE received_at > now() - " \
    "interval '1 minute'), count(*) FILTER (WHERE processed_at > now() - interval '1 minute'), " \
    "count(DISTINCT claimed_by) FILTER (WHERE lease_expires_at > now()), " \
    "(SELECT count(*) FROM pgpipe.dead_letters WHERE status = 'dead'), " \
    "(SELECT count(*) FROM pgpipe.dead_letters WHERE status = 'dead' AND last_failed_at > " \
    "now() - interval '1 minute')) FROM staging.raw_events"

static const argspec spec_status[] = { { NULL, NULL, 0, 0, NULL,
    "the pipeline in one line: backlog, oldest, rates, workers, dead letters (\\watch it)" } };
static int cmd_status(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    char *has = query_value(sh, "SELECT to_regclass('staging.raw_events') IS NOT NULL AND "
                                "to_regclass('pgpipe.dead_letters') IS NOT NULL", 0, NULL);
    int installed = has && has[0] == 't';
    free(has);
    if (!installed) {
        errorf(".status: the built-in schema is not installed (.install)");
        return 1;
    }
    char *line = query_value(sh, TOP_LINE, 0, NULL);
    if (!line)
        return 1;
    fprintf(sh->out, "%s\n", line);
    free(line);
    return 0;
}

static int spool_health(FILE *out);

/* .top's sections for the sources that run: CDC slots (what the target
** holds: the last staged commit and how far behind now it is), API pulls,
** the runner's schedules with their next slot, and the spool of
** $PGPIPE_SPOOL_DIR. A section whose table is missing or empty is left out.
** Returns -1 on a failed query. */
static int top_sources(shell *sh)
{
    char *n = query_value(sh, "SELECT concat_ws(',', CASE WHEN to_regclass('pgpipe.cdc_slots') IS NOT "
                              "NULL AND EXISTS (SELECT FROM pgpipe.cdc_slots) THEN 'cdc' END, "
                              "CASE WHEN to_regclass('pgpipe.pull_state') IS NOT NULL AND EXISTS "
                              "(SELECT FROM pgpipe.pull_state) THEN 'pull' END, CASE WHEN "
                              "to_regclass('pgpipe.run_schedules') IS NOT NULL AND EXISTS (SELECT "
                              "FROM pgpipe.run_schedules) THEN 'run' END)", 0, NULL);
    if (!n)
        return -1;
    int rc = 0;
    if (strstr(n, "cdc") &&
        show_query(sh, "SELECT slot, applied_lsn, coalesce(to_char(now() - commit_time, "
                       "'HH24:MI:SS'), '') AS behind, events, to_char(now() - updated_at, "
                       "'HH24:MI:SS') AS since_update FROM pgpipe.cdc_slots ORDER BY slot LIMIT 8",
                   "CDC slots", NULL, NULL) < 0)
        rc = -1;
    if (rc == 0 && strstr(n, "pull") &&
        show_query(sh, "SELECT source, stream, records, dead_lettered, coalesce(last_status, '') AS "
                       "status, coalesce(to_char(now() - updated_at, 'HH24:MI:SS'), '') AS since "
                       "FROM pgpipe.pull_state WHERE scope = '' ORDER BY 1, 2 LIMIT 8",
                   "API pulls", NULL, NULL) < 0)
        rc = -1;
    if (rc == 0 && strstr(n, "run")) {
        PGresult *r = PQexec(sh->conn, "SELECT pipeline, schedule, expr, tz, "
                                       "extract(epoch FROM coalesce(last_slot, now()))::bigint, "
                                       "coalesce(running_instance, '') FROM pgpipe.run_schedules "
                                       "ORDER BY 1, 2 LIMIT 12");
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            report_pq_error(r, sh->conn);
            rc = -1;
        } else {
            /* the next slot after the last one claimed, by the runner's own cron */
            fprintf(sh->out, "Schedules\n %-20s | %-16s | %-20s | %s\n", "pipeline", "schedule",
                    "next slot (UTC)", "running on");
            for (int i = 0; i < PQntuples(r); i++) {
                pgpipe_cron cr;
                int64_t next = 0;
                char when[32] = "?";
                if (pgpipe_cron_parse(&cr, PQgetvalue(r, i, 2), NULL) == PGPIPE_OK &&
                    pgpipe_cron_next(&cr, strtoll(PQgetvalue(r, i, 4), NULL, 10),
                                     PQgetvalue(r, i, 3), &next, NULL) == PGPIPE_OK) {
                    time_t t = (time_t)next;
                    struct tm tm;
                    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
                }
                fprintf(sh->out, " %-20s | %-16s | %-20s | %s\n", PQgetvalue(r, i, 0),
                        PQgetvalue(r, i, 1), when, PQgetvalue(r, i, 5));
            }
            fputc('\n', sh->out);
        }
        PQclear(r);
    }
    const char *spool = getenv("PGPIPE_SPOOL_DIR");
    if (rc == 0 && spool && *spool) {
        spool_health(sh->out);
        fputc('\n', sh->out);
    }
    free(n);
    return rc;
}

/* .top: the screen redrawn every --interval seconds (ANSI only) until q or
** Ctrl-C; not on a terminal, one line per refresh. */
static int cmd_top(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    char *has = query_value(sh, "SELECT to_regclass('staging.raw_events') IS NOT NULL AND "
                                "to_regclass('pgpipe.dead_letters') IS NOT NULL", 0, NULL);
    int installed = has && has[0] == 't';
    free(has);
    if (!installed) {
        errorf(".top: the built-in schema is not installed (.install)");
        return 1;
    }
    long long every = opt_num(&cur, "--interval", 2), count = opt_num(&cur, "--count", -1);
    int screen = sh->interactive && sh->out == stdout && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
    struct termios saved, raw;
    if (screen && tcgetattr(STDIN_FILENO, &saved) == 0) {
        raw = saved;
        raw.c_lflag &= (tcflag_t) ~(ECHO | ICANON);
        raw.c_cc[VMIN] = 0;
        raw.c_cc[VTIME] = 0;
        tcsetattr(STDIN_FILENO, TCSANOW, &raw);
        fputs("\x1b[?1049h", stdout); /* the alternate screen, as top has */
    }
    interrupted = 0;
    int rc = 0;
    for (long long n = 0; (count < 0 || n < count) && !interrupted && !terminating; n++) {
        char when[64];
        time_t now = time(NULL);
        strftime(when, sizeof when, "%H:%M:%S", localtime(&now));
        if (screen) {
            fputs("\x1b[H\x1b[2J", stdout);
            printf("pgpipe .top - %s - %s (every %llds; q leaves)\n\n", PQdb(sh->conn), when, every);
            int saved_mode = sh->mode, saved_pager = sh->pager;
            sh->mode = MODE_ALIGNED;
            sh->pager = 0;
            int bad = show_query(sh, TOP_EVENTS, "Backlog by event type", NULL, NULL) < 0 ||
                      show_query(sh, TOP_DEAD, "Dead letters by error", NULL, NULL) < 0 ||
                      top_sources(sh) < 0;
            sh->mode = saved_mode;
            sh->pager = saved_pager;
            fflush(stdout);
            if (bad) {
                rc = 1;
                break;
            }
        } else {
            char *line = query_value(sh, TOP_LINE, 0, NULL);
            if (!line) {
                rc = 1;
                break;
            }
            fprintf(sh->out, "%s %s\n", when, line);
            fflush(sh->out);
            free(line);
        }
        if (count >= 0 && n + 1 >= count)
            break;
        /* wait for the next refresh, or q */
        double until = now_ms() + (double)every * 1000.0;
        int quit = 0;
        while (!quit && !interrupted && !terminating && now_ms() < until) {
            fd_set fds;
            FD_ZERO(&fds);
            struct timeval tv = { 0, 200000 };
            if (screen)
                FD_SET(STDIN_FILENO, &fds);
            if (select(screen ? STDIN_FILENO + 1 : 0, &fds, NULL, NULL, &tv) > 0) {
                char k;
                if (read(STDIN_FILENO, &k, 1) == 1 && (k == 'q' || k == 'Q' || k == 27))
                    quit = 1;
            }
        }
        if (quit)
            break;
    }
    if (screen) {
        fputs("\x1b[?1049l", stdout);
        fflush(stdout);
        tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    }
    interrupted = 0;
    return rc;
}

static const optdef opts_refresh[] = {
    { "--concurrently", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "readers are not blocked while it runs (needs a unique index on the view)",
      ".refresh analytics.daily_user_metrics --concurrently" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_refresh[] = { { NULL, "VIEW", 1, 1, opts_refresh,
                                           "REFRESH MATERIALIZED VIEW" } };
static int cmd_refresh(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    const char *view = cur.pos[0];
    int conc = opt_has(&cur, "--concurrently");
    char *q = quote_qualified(view);
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

/* Read and check a pipeline file (pgpipe run, .run): each problem as
** FILE:LINE[:COLUMN]: message on stdout and 1, or with check the summary
** and 0; without check, 2: the runner is not built yet. */
static int run_check_file(const char *file, int check)
{
    pgpipe_pipefile *pf = NULL;
    int rc = pgpipe_pipefile_open(&pf, file, NULL, 0);
    if (rc == PGPIPE_PARSE) {
        for (int i = 0; i < pgpipe_pipefile_diag_count(pf); i++) {
            const pgpipe_pipe_diag *d = pgpipe_pipefile_diag(pf, i);
            if (d->column > 0)
                printf("%s:%d:%d: %s\n", d->file, d->line, d->column, d->message);
            else
                printf("%s:%d: %s\n", d->file, d->line, d->message);
        }
        pgpipe_pipefile_close(pf);
        return 1;
    }
    if (rc) {
        fprintf(stderr, "pgpipe run: %s\n", pgpipe_errmsg(pf));
        pgpipe_pipefile_close(pf);
        return 1;
    }
    const pgpipe_pipe_def *p = pgpipe_pipefile_def(pf);
    if (check)
        printf("pipeline %s OK: %d source%s, %d worker%s, %d schedule%s, %d task%s, %d alert%s\n", p->name,
               p->nsources, p->nsources == 1 ? "" : "s", p->nworkers, p->nworkers == 1 ? "" : "s",
               p->nschedules, p->nschedules == 1 ? "" : "s", p->ntasks, p->ntasks == 1 ? "" : "s",
               p->nalerts, p->nalerts == 1 ? "" : "s");
    pgpipe_pipefile_close(pf);
    return 0;
}

/* "90", "30s", "5m", "2h", "1d" -> milliseconds (a bare number is seconds);
** -1 when malformed. */
static long long run_parse_duration(const char *s)
{
    char *end;
    errno = 0;
    long long n = strtoll(s, &end, 10);
    if (errno || end == s || n < 0 || n > 10LL * 365 * 86400)
        return -1;
    long long unit = !*end || !strcmp(end, "s") ? 1000 : !strcmp(end, "m") ? 60000
                   : !strcmp(end, "h") ? 3600000 : !strcmp(end, "d") ? 86400000 : -1;
    return unit < 0 ? -1 : n * unit;
}

/* The runner being run (for the signal handler) and how many stop signals
** it has had: the first drains, a second stops at once. */
static pgpipe_runner *volatile runner_handle = NULL;
static volatile sig_atomic_t runner_stops = 0;
/* a SIGHUP while the runner opens (it reloads once it is open) */
static volatile sig_atomic_t runner_hup = 0;

static void on_runner_signal(int sig)
{
    pgpipe_runner *r = runner_handle;
    if (sig == SIGHUP) {
        if (r)
            pgpipe_runner_reload(r);
        else
            runner_hup = 1;
        return;
    }
    if (runner_stops++ == 0) {
        if (r) /* (while it opens: it stops as soon as it is open) */
            pgpipe_runner_stop(r);
        const char *m = "pgpipe: run: draining: workers finish their batch, no new firing "
                        "starts (a second Ctrl-C or SIGTERM stops at once)\n";
        ssize_t w = write(STDERR_FILENO, m, strlen(m));
        (void)w;
        return;
    }
    const char *m = "pgpipe: run: stopped at once: claimed batches come back to the other "
                    "workers (their transaction rolled back or their lease expires)\n";
    ssize_t w = write(STDERR_FILENO, m, strlen(m));
    (void)w;
    _exit(1);
}

/* Run a pipeline until SIGTERM/SIGINT (drain, status 0) or run_for_ms;
** SIGHUP reloads the file. 0, or 1 with the error on stderr. */
static int run_pipeline(const char *conninfo, const char *file, const pgpipe_run_options *base)
{
    pgpipe_run_options o = *base;
    o.conninfo = conninfo;
    pgpipe_runner *r = NULL;
    int old_level = pgpipe_log_get_level();
    if (!getenv("PGPIPE_LOG") && old_level > PGPIPE_LOG_INFO)
        pgpipe_log_set_level(PGPIPE_LOG_INFO); /* a service says what it does */
    /* the signals are the runner's from the start: a SIGTERM or SIGHUP that
    ** comes while it reads the file and sets up must not kill it */
    saved_signals sig;
    runner_stops = 0;
    runner_hup = 0;
    runner_handle = NULL;
    signals_catch(&sig, on_runner_signal, 1, 1);
    if (pgpipe_runner_open(&r, file, &o) != PGPIPE_OK) {
        signals_restore(&sig);
        fprintf(stderr, "pgpipe run: %s\n", r ? pgpipe_errmsg(r) : "out of memory");
        pgpipe_runner_close(r);
        pgpipe_log_set_level(old_level);
        return 1;
    }
    runner_handle = r;
    if (runner_stops)
        pgpipe_runner_stop(r);
    else if (runner_hup)
        pgpipe_runner_reload(r);
    int rc = pgpipe_runner_run(r);
    signals_restore(&sig);
    runner_handle = NULL;
    if (rc)
        fprintf(stderr, "pgpipe run: %s\n", pgpipe_errmsg(r));
    else
        fprintf(stderr, "pgpipe: run: drained and stopped\n");
    pgpipe_runner_close(r);
    pgpipe_log_set_level(old_level);
    return rc ? 1 : 0;
}

static const optdef opts_run[] = {
    { "--check", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "validate the file without the database: FILE:LINE: message per problem, or a summary",
      ".run --check hello.pgpipe" },
    { "--for", NULL, OPT_TEXT, "DURATION", 0, 0, NULL,
      "stop by itself after this long (90, 30s, 5m, 2h): a bounded run",
      ".run hello.pgpipe --for 3s" },
    { "--instance", NULL, OPT_TEXT, "NAME", 0, 0, NULL,
      "this instance's name in the history (default HOST:PID)",
      ".run hello.pgpipe --instance etl-1" },
    { "--on-alert", NULL, OPT_TEXT, "CMD", 0, 0, NULL,
      "run CMD (sh -c) for every alert, the alert as JSON on its stdin",
      ".run hello.pgpipe --on-alert 'logger -t pgpipe'" },
    { "--token-env", NULL, OPT_TEXT, "VAR", 0, 0, NULL,
      "the status page's actions need the bearer token in this environment variable",
      ".run hello.pgpipe --token-env PGPIPE_TOKEN" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_run[] = { { NULL, "FILE", 1, 1, opts_run,
                                       "run a pipeline file, or check it" } };
static char *work_conninfo(PGconn *conn);
static int cmd_run(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    fflush(stdout);
    if (opt_has(&cur, "--check"))
        return run_check_file(cur.pos[0], 1) != 0;
    pgpipe_run_options o;
    pgpipe_run_options_init(&o);
    const char *f = opt_str(&cur, "--for", NULL);
    if (f && (o.run_for_ms = run_parse_duration(f)) <= 0) {
        errorf(".run: --for: \"%s\" is not a duration (90, 30s, 5m, 2h, 1d)", f);
        return 1;
    }
    o.instance = opt_str(&cur, "--instance", NULL);
    o.on_alert = opt_str(&cur, "--on-alert", NULL);
    const char *tv = opt_str(&cur, "--token-env", NULL);
    if (tv && (!(o.http_token = getenv(tv)) || !*o.http_token)) {
        errorf(".run: --token-env: the environment variable %s is not set", tv);
        return 1;
    }
    char *ci = work_conninfo(sh->conn);
    if (!ci) {
        errorf("out of memory");
        return 1;
    }
    int rc = run_pipeline(ci, cur.pos[0], &o);
    free(ci);
    return rc;
}

/* .runs [NAME] [--pipeline P] [--status S] [--since T] [--limit N]: the
** run history of the pipeline runner (pgpipe_runs_list). */
static const optdef opts_runs[] = {
    { "--pipeline", NULL, OPT_TEXT, "NAME", 0, 0, "every pipeline", "runs of this pipeline",
      ".runs --pipeline hello" },
    { "--status", NULL, OPT_ENUM, "ok|failed|skipped|missed|lost|timeout", 0, 0, "any",
      "runs that ended so",
      ".runs --status failed" },
    { "--since", NULL, OPT_TEXT, "TIME", 0, 0, NULL,
      "runs started since an interval ago ('1 day') or a timestamp",
      ".runs --since '1 day'" },
    { "--limit", NULL, OPT_INT, "N", 1, 100000, "50", "at most N runs (newest first)",
      ".runs tick --limit 3" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_runs[] = { { NULL, "[NAME]", 0, 1, opts_runs,
                                        "task and schedule runs, newest first" } };
static int cmd_runs(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    pgpipe_runs_filter f;
    memset(&f, 0, sizeof f);
    f.name = cur.npos ? cur.pos[0] : NULL;
    f.pipeline = opt_str(&cur, "--pipeline", NULL);
    f.status = opt_str(&cur, "--status", NULL);
    f.since = opt_str(&cur, "--since", NULL);
    f.limit = (int)opt_num(&cur, "--limit", 50);
    pgpipe_error err;
    pgpipe_error_clear(&err);
    PGresult *res = NULL;
    if (pgpipe_runs_list(sh->conn, &f, &res, &err) != PGPIPE_OK) {
        print_error(&err);
        return 1;
    }
    print_result(sh, res);
    PQclear(res);
    return 0;
}

/* .export QUERY FILE [--format csv|ndjson] through COPY TO STDOUT. */
static const optdef opts_export[] = {
    { "--format", NULL, OPT_ENUM, "csv|ndjson", 0, 0, "csv",
      "csv with a header row, or one JSON object per line",
      ".export \"SELECT * FROM analytics.daily_user_metrics\" metrics.ndjson --format ndjson" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_export[] = { { NULL, "\"QUERY\" FILE", 2, 2, opts_export,
                                          "write the rows of a query to a file" } };
static int cmd_export(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    const char *query = cur.pos[0], *file = cur.pos[1];
    const char *format = opt_str(&cur, "--format", "csv");
    if (!*query) {
        errorf(".export: QUERY: empty");
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
    double t0 = now_ms();
    /* the extended protocol runs exactly one statement: QUERY cannot close
    ** the COPY ( ... ) and append a statement of its own */
    PGresult *res = PQexecParams(sh->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    free(sql);
    int rc = 0;
    long rows = 0;
    /* the file is made only once the query runs: a bad query leaves none.
    ** A regular file (or a new one) is written under a temporary name beside
    ** it and renamed at the end, so a query that fails half way (or Ctrl-C)
    ** leaves the file as it was, not the first half of the rows (a symbolic
    ** link, a device or a pipe is written in place). */
    FILE *f = NULL;
    char *tmpname = NULL;
    if (PQresultStatus(res) == PGRES_COPY_OUT) {
        struct stat st;
        int regular = strcmp(file, "-") && (lstat(file, &st) != 0 ? errno == ENOENT
                                                                   : S_ISREG(st.st_mode));
        if (regular && (tmpname = malloc(strlen(file) + 16)) != NULL) {
            sprintf(tmpname, "%s.pgpipe-XXXXXX", file);
            int fd = mkstemp(tmpname);
            if (fd >= 0) {
                /* the mode a new file would have had, or the old file's */
                mode_t um = umask(0);
                umask(um);
                if (fchmod(fd, stat(file, &st) == 0 ? st.st_mode & 07777 : 0666 & ~um) != 0 ||
                    !(f = fdopen(fd, "w"))) {
                    close(fd);
                    unlink(tmpname);
                }
            }
            if (!f) {
                free(tmpname);
                tmpname = NULL;
            }
        }
        if (!f)
            f = !strcmp(file, "-") ? stdout : fopen(file, "w");
        if (!f) {
            errorf(".export: cannot write \"%s\": %s", file, strerror(errno));
            char *buf;
            while (PQgetCopyData(sh->conn, &buf, 0) > 0)
                PQfreemem(buf);
            PQclear(res);
            while ((res = PQgetResult(sh->conn)) != NULL)
                PQclear(res);
            return 1;
        }
    }
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
    if (f && f != stdout && fclose(f) != 0) {
        errorf("writing %s: %s", file, strerror(errno));
        rc = 1;
    }
    if (tmpname) {
        if (rc) {
            unlink(tmpname);
        } else if (rename(tmpname, file) != 0) {
            errorf(".export: cannot write \"%s\": %s", file, strerror(errno));
            unlink(tmpname);
            rc = 1;
        }
        free(tmpname);
    }
    if (!rc && f && f != stdout) {
        long data_rows = !strcmp(format, "csv") ? rows - 1 : rows;
        fprintf(sh->out, "exported %ld row%s to %s (%s) in %.1f ms\n", data_rows,
                data_rows == 1 ? "" : "s", file, format, now_ms() - t0);
    }
    return rc;
}


/* .listen CHANNEL [--count N] [--timeout S]: print notifications as they come. */
static const optdef opts_listen[] = {
    { "--count", NULL, OPT_INT, "N", 1, INT_MAX, "no limit", "stop after N notifications",
      ".listen pgpipe_events --count 1" },
    { "--timeout", NULL, OPT_INT, "SECONDS", 0, 86400 * 365, "none (Ctrl-C stops)",
      "stop after SECONDS",
      ".listen pgpipe_events --timeout 60" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_listen[] = { { NULL, "CHANNEL", 1, 1, opts_listen,
                                          "print the notifications of a channel" } };
static int cmd_listen(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    const char *channel = cur.pos[0];
    long count = (long)opt_num(&cur, "--count", -1), timeout = (long)opt_num(&cur, "--timeout", -1);
    char sql[512];
    memcpy(sql, "LISTEN ", 7);
    pgpipe_quote_ident(sql + 7, sizeof sql - 7, channel, 0);
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
/* A statement the shell runs for itself; 0 when it succeeded. */
static int exec_quiet(PGconn *conn, const char *sql)
{
    PGresult *r = PQexec(conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok)
        report_pq_error(r, conn);
    PQclear(r);
    return !ok;
}

static const argspec spec_connect[] = { { NULL, "[CONNINFO|DBNAME]", 0, 1, NULL,
                                           "switch to a new connection" } };

static const argspec spec_explain[] = { { NULL, "SQL", 1, 1, NULL,
                                           "show how a statement runs, without changing data" } };
/* EXPLAIN ANALYZE executes the statement: .explain runs it inside a
** transaction (a savepoint when one is open) that is rolled back, so an
** UPDATE, DELETE, INSERT or MERGE (or a function with side effects) changes
** nothing. Plain SQL "EXPLAIN ANALYZE ..." still executes, as in psql. */
static int cmd_explain(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc;
    while (*rest && isspace((unsigned char)*rest))
        rest++;
    if (!*rest) {
        errorf(".explain: missing SQL (usage: .explain SQL)");
        return 1;
    }
    PGTransactionStatusType ts = PQtransactionStatus(sh->conn);
    if (ts == PQTRANS_INERROR) {
        errorf(".explain: the current transaction is aborted: ROLLBACK first");
        return 1;
    }
    int nested = ts == PQTRANS_INTRANS;
    size_t n = strlen(rest) + 64;
    char *sql = malloc(n);
    if (!sql)
        return 1;
    snprintf(sql, n, "EXPLAIN (ANALYZE, BUFFERS) %s", rest);
    if (exec_quiet(sh->conn, nested ? "SAVEPOINT pgpipe_explain" : "BEGIN")) {
        free(sql);
        return 1;
    }
    /* one statement only (extended protocol): "SELECT 1; DROP ..." is refused */
    PGresult *res = PQexecParams(sh->conn, sql, 0, NULL, NULL, NULL, NULL, 0);
    free(sql);
    int undone = !exec_quiet(sh->conn, nested ? "ROLLBACK TO SAVEPOINT pgpipe_explain" : "ROLLBACK");
    if (undone && nested)
        undone = !exec_quiet(sh->conn, "RELEASE SAVEPOINT pgpipe_explain");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        report_pq_error(res, sh->conn);
        PQclear(res);
        return 1;
    }
    if (!undone) {
        errorf(".explain: could not roll the statement back");
        PQclear(res);
        return 1;
    }
    int notes = 0, writes = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *l = PQgetvalue(res, i, 0);
        while (*l == ' ' || *l == '-' || *l == '>')
            l++;
        writes |= !strncmp(l, "Insert on ", 10) || !strncmp(l, "Update on ", 10) ||
                  !strncmp(l, "Delete on ", 10) || !strncmp(l, "Merge on ", 9);
    }
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
    if (writes)
        fprintf(sh->out, "(run inside a transaction that was rolled back: no data changed)\n");
    PQclear(res);
    return 0;
}

/* .install [--example]: the built-in schema (and the example pipeline). */
static const optdef opts_install[] = {
    { "--example", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "also the three-layer example pipeline (staging, production, analytics)",
      ".install --example" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_install[] = { { NULL, NULL, 0, 0, opts_install,
                                           "install or update pgpipe's built-in schema" } };
static int cmd_install(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    int example = opt_has(&cur, "--example");
    pgpipe_error err;
    double t0 = now_ms();
    PQnoticeProcessor old = quiet_notices(sh->conn);
    int rc = example ? pgpipe_example_install(sh->conn, NULL, &err)
                     : pgpipe_schema_install(sh->conn, NULL, &err);
    restore_notices(sh->conn, old);
    if (rc != PGPIPE_OK) {
        print_error(&err);
        return 1;
    }
    fprintf(sh->out, "installed the built-in schema%s (%.0f ms)\n",
            example ? " and the example pipeline" : "", now_ms() - t0);
    return 0;
}

/* .migrate [DIR] [--status|--dry-run|--baseline V|--repair|--resume-from N|--redo N] */
static const optdef opts_migrate[] = {
    { "--status", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "show applied, pending, changed and missing migrations; change nothing",
      ".migrate migrations --status" },
    { "--dry-run", NULL, OPT_FLAG, NULL, 0, 0, NULL, "say what would run; change nothing",
      ".migrate migrations --dry-run" },
    { "--baseline", NULL, OPT_TEXT, "V", 0, 0, NULL,
      "record the versions up to V as applied without running them (a history with none applied)",
      ".migrate migrations --baseline 3" },
    { "--to", NULL, OPT_TEXT, "V", 0, 0, NULL,
      "apply the versioned migrations up to V only; the later ones stay pending",
      ".migrate migrations --to 5" },
    { "--repair", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "accept edited or renamed files of applied migrations (record their new checksums "
      "and names)",
      ".migrate migrations --repair" },
    { "--resume-from", NULL, OPT_INT, "N", 1, 1000000000, NULL,
      "a no-transaction file stopped at a statement whose outcome is unknown (a run cut off "
      "between its start and its end): it took effect; go on with statement N, after it",
      ".migrate migrations --resume-from 4" },
    { "--redo", NULL, OPT_INT, "N", 1, 1000000000, NULL,
      "that statement N did not take effect (or may run twice): run it again and go on",
      ".migrate migrations --redo 3" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_migrate[] = { { NULL, "[DIR]", 0, 1, opts_migrate,
                                           "apply the migrations of a directory" } };
static int cmd_migrate(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    pgpipe_migrate_options o;
    pgpipe_migrate_options_init(&o);
    o.dir = cur.npos ? cur.pos[0] : "migrations";
    int status = opt_has(&cur, "--status");
    if (opt_has(&cur, "--dry-run"))
        o.flags |= PGPIPE_MIGRATE_DRY_RUN;
    if (opt_has(&cur, "--repair"))
        o.flags |= PGPIPE_MIGRATE_REPAIR;
    o.baseline_version = opt_str(&cur, "--baseline", NULL);
    o.target_version = opt_str(&cur, "--to", NULL);
    o.resume_from = (int)opt_num(&cur, "--resume-from", 0);
    o.redo = (int)opt_num(&cur, "--redo", 0);
    if (o.resume_from && o.redo) {
        errorf(".migrate: --resume-from and --redo: one or the other (the statement in doubt "
               "took effect, or it runs again)");
        return 1;
    }
    if (o.baseline_version && (!*o.baseline_version ||
                               strspn(o.baseline_version, "0123456789") != strlen(o.baseline_version))) {
        errorf(".migrate: --baseline: expected a version number (digits), got \"%s\"",
               o.baseline_version);
        return 1;
    }
    if (o.target_version && (!*o.target_version ||
                             strspn(o.target_version, "0123456789") != strlen(o.target_version))) {
        errorf(".migrate: --to: expected a version number (digits), got \"%s\"", o.target_version);
        return 1;
    }
    if (status + !!(o.flags & PGPIPE_MIGRATE_DRY_RUN) + !!(o.flags & PGPIPE_MIGRATE_REPAIR) +
        !!o.baseline_version + !!o.resume_from + !!o.redo > 1 && status) {
        errorf(".migrate: --status: changes nothing, so it does not go with --dry-run, --repair, "
               "--baseline, --resume-from or --redo");
        return 1;
    }
    /* the directory: said once when it is not there (not every file as missing) */
    struct stat st;
    if (stat(o.dir, &st) != 0) {
        errorf(".migrate: no such directory: \"%s\"", o.dir);
        return 1;
    }
    if (!S_ISDIR(st.st_mode)) {
        errorf(".migrate: not a directory: %s", o.dir);
        return 1;
    }
    DIR *dh = opendir(o.dir);
    if (!dh) {
        errorf(".migrate: cannot read the directory %s: %s", o.dir, strerror(errno));
        return 1;
    }
    int files = 0;
    for (struct dirent *de; (de = readdir(dh)) != NULL;) {
        size_t n = strlen(de->d_name);
        files += (de->d_name[0] == 'V' || de->d_name[0] == 'R') && n > 4 &&
                 !strcmp(de->d_name + n - 4, ".sql");
    }
    closedir(dh);
    if (!files) {
        fprintf(sh->out, "no migrations in %s\n", o.dir);
        return 0;
    }
    pgpipe_migrator *m = NULL;
    PQnoticeProcessor old = quiet_notices(sh->conn);
    int rc = pgpipe_migrator_open(&m, sh->conn, &o);
    if (rc == PGPIPE_OK)
        rc = status ? pgpipe_migrate_status(m) : pgpipe_migrate_run(m);
    restore_notices(sh->conn, old);
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
    pgpipe_migrator_close(m);
    return rc != PGPIPE_OK;
}

/* .partitions [list|ahead N|retain DAYS [--detach-only]] */
static const optdef opts_retain[] = {
    { "--detach-only", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "detach the old partitions (kept as tables) instead of dropping them",
      ".partitions retain 30 --detach-only" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_partitions[] = {
    { "list", NULL, 0, 0, NULL, "the daily partitions of staging.raw_events" },
    { "ahead", "DAYS", 1, 1, NULL, "create the daily partitions of the next DAYS days" },
    { "retain", "DAYS", 1, 1, opts_retain, "drop (or detach) the partitions older than DAYS days" },
    { NULL, NULL, 0, 0, NULL, NULL },
};
static int cmd_partitions(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    const char *what = cur.sub;
    if (!strcmp(what, "list"))
        return run_sql(sh, "SELECT partition, bounds, estimated_rows, "
                           "pg_size_pretty(total_bytes) AS size FROM pgpipe.raw_events_partitions");
    long long days;
    if (parse_num(!strcmp(what, "ahead") ? ".partitions ahead" : ".partitions retain", "DAYS",
                  cur.pos[0], 1, !strcmp(what, "ahead") ? PGPIPE_PARTITIONS_AHEAD_MAX : 36500,
                  &days))
        return 1;
    {
        const char *params[2] = { cur.pos[0], opt_has(&cur, "--detach-only") ? "t" : "f" };
        int ahead = !strcmp(what, "ahead");
        char *v = query_value(sh, ahead ? "SELECT pgpipe.create_partitions($1::int, (now() AT TIME ZONE 'UTC')::date)"
                                        : "SELECT pgpipe.drop_old_partitions($1::int, $2::bool)",
                              ahead ? 1 : 2, params);
        if (!v)
            return 1;
        if (ahead)
            fprintf(sh->out, "created %s partition%s (daily, %s days ahead)\n", v,
                     strcmp(v, "1") ? "s" : "", cur.pos[0]);
        else
            fprintf(sh->out, "%s %s partition%s older than %s days\n",
                    params[1][0] == 't' ? "detached" : "dropped", v, strcmp(v, "1") ? "s" : "",
                    cur.pos[0]);
        free(v);
        return 0;
    }
}

/* .health: each signal an operator watches (cache hit ratio, staging backlog, DLQ
** growth, partitions ahead, ...) against its target: ok or WARN; FAIL only when the
** server is unreachable. */
#ifndef PGPIPE_OMIT_SPOOL
static int spool_health(FILE *out);
#endif
static int cmd_health(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    int warn = 0;
#ifndef PGPIPE_OMIT_SPOOL
    warn += spool_health(sh->out); /* first: it matters most when the server is away */
#endif
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

    /* a replication slot nobody reads (a stopped CDC consumer) keeps WAL until
    ** the disk is full, unless max_slot_wal_keep_size invalidates it first */
    char *slots = query_value(sh,
        "SELECT count(*) FILTER (WHERE NOT active OR wal_status IN ('unreserved', 'lost')) || '|' "
        "|| count(*) || '|' || coalesce(string_agg(format('%s %s, retains %s%s', slot_name, "
        "CASE WHEN active THEN 'active' ELSE 'inactive' END, pg_size_pretty(coalesce(CASE WHEN "
        "pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END - "
        "restart_lsn, 0)), CASE WHEN wal_status IN ('unreserved', 'lost') THEN ' (wal_status ' "
        "|| wal_status || ')' ELSE '' END), '; ' ORDER BY slot_name) FILTER (WHERE NOT active "
        "OR wal_status IN ('unreserved', 'lost')), '') FROM pg_replication_slots", 0, NULL);
    if (slots) {
        int bad = atoi(slots), all = 0;
        const char *bar = strchr(slots, '|');
        if (bar)
            all = atoi(bar + 1);
        const char *detail = bar ? strchr(bar + 1, '|') : NULL;
        if (bad)
            fprintf(sh->out, "WARN  replication slots   %d of %d unread: %s (a stopped consumer "
                    "keeps WAL: .cdc start resumes, .cdc stop drops)\n", bad, all,
                    detail ? detail + 1 : "");
        else
            fprintf(sh->out, "ok    replication slots   %d, none unread\n", all);
        warn += bad > 0;
        free(slots);
    }

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

    pgpipe_dlq_health dh;
    pgpipe_error err;
    int dl_ok = pgpipe_dlq_health_get(sh->conn, &dh, &err) == PGPIPE_OK;
    if (!dl_ok)
        print_error(&err);
    char dl[128] = "n/a";
    if (dl_ok)
        snprintf(dl, sizeof dl, "%lld dead, %lld new in the last hour, %lld in the hour before",
                 dh.dead, dh.last_hour, dh.hour_before);
    int grow = dl_ok && dh.growing;
    fprintf(sh->out, "%-5s dead letters        %s%s\n", grow ? "WARN" : "ok", dl,
            grow ? " (growing: see .dlq)" : "");
    warn += grow;

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

/* .work: run claimer workers on a staging table until it is empty or Ctrl-C. */
static const optdef opts_work[] = {
    { "--sql", NULL, OPT_SQL, "SQL|FILE", 0, 0, NULL,
      "the handler: one statement run per batch with $1 = the claimed rows as a JSONB array; "
      "SQL text (it has a blank) or a FILE holding it",
      ".work 2 --sql transform.sql --event-type transaction" },
    { "--mark", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "the handler that only marks the rows processed (instead of --sql)",
      ".work --mark --event-type buy --until-empty" },
    { "--workers", NULL, OPT_INT, "N", 1, 256, "2", "worker threads, each on its own connection",
      ".work --mark --workers 4" },
    { "--batch", NULL, OPT_INT, "N", 1, 1000000, "100", "rows per claim",
      ".work --mark --batch 500" },
    { "--table", NULL, OPT_TEXT, "T", 0, 0, "staging.raw_events", "the table to process",
      ".work --sql transform.sql --table staging.orders" },
    { "--source", NULL, OPT_TEXT, "S", 0, 0, "any", "only rows of this source",
      ".work --mark --source shop" },
    { "--event-type", NULL, OPT_TEXT, "E", 0, 0, "any", "only rows of this event_type",
      ".work --sql transform.sql --event-type transaction" },
    { "--order", NULL, OPT_ENUM, "received|id", 0, 0, "received",
      "claim in arrival order, or by id",
      ".work --mark --order id" },
    { "--lease", NULL, OPT_INT, "MS", 1, INT_MAX, "transactional mode",
      "lease mode: a claim is held MS milliseconds and the handler runs outside the claim's "
      "transaction",
      ".work --sql transform.sql --lease 30000" },
    { "--max-attempts", NULL, OPT_INT, "N", 1, 1000000, "5", "attempts before a row is dead-lettered",
      ".work --sql transform.sql --max-attempts 3" },
    { "--backoff", NULL, OPT_INT, "MS", 0, INT_MAX, "1000", "first retry delay (doubles each attempt)",
      ".work --sql transform.sql --backoff 5000" },
    { "--channel", NULL, OPT_TEXT, "C", 0, 0, "pgpipe_events", "LISTEN channel that wakes idle workers "
      "('' = poll only)",
      ".work --mark --channel orders_events" },
    { "--poll", NULL, OPT_INT, "MS", 1, INT_MAX, "1000", "fallback poll interval when idle",
      ".work --mark --poll 250" },
    { "--alert", NULL, OPT_INT, "N", 0, INT_MAX, "0 = off",
      "warn when more than N dead letters arrive within 5 minutes",
      ".work --sql transform.sql --alert 10" },
    { "--until-empty", NULL, OPT_FLAG, NULL, 0, 0, NULL, "stop when nothing is left to claim "
      "(else Ctrl-C stops)",
      ".work --mark --until-empty" },
    { "--quiet", NULL, OPT_FLAG, NULL, 0, 0, "quiet in scripts", "print only the final line",
      ".work --mark --until-empty --quiet" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_work[] = { { NULL, "[N]", 0, 1, opts_work,
                                        "process staging events with SKIP LOCKED workers" } };
static int cmd_work(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    pgpipe_workers_options wo;
    pgpipe_workers_options_init(&wo);
    const char *sql = opt_str(&cur, "--sql", NULL);
    int mark = opt_has(&cur, "--mark");
    int until_empty = opt_has(&cur, "--until-empty");
    int quiet = !sh->interactive || opt_has(&cur, "--quiet");
    long long n;
    if (cur.npos && parse_num(".work", "N", cur.pos[0], 1, 256, &n))
        return 1;
    if (cur.npos && opt_has(&cur, "--workers")) {
        errorf(".work: --workers: the number of workers is given twice (N and --workers)");
        return 1;
    }
    if (!sql && !mark) {
        errorf(".work: needs a handler: --sql \"SQL using $1::jsonb\" or --mark");
        return 1;
    }
    if (sql && mark) {
        errorf(".work: --mark: does not go with --sql (one handler)");
        return 1;
    }
    wo.threads = (int)(cur.npos ? n : opt_num(&cur, "--workers", wo.threads));
    wo.claim.batch_size = (int)opt_num(&cur, "--batch", wo.claim.batch_size);
    wo.claim.table = opt_str(&cur, "--table", wo.claim.table);
    wo.claim.source = opt_str(&cur, "--source", wo.claim.source);
    wo.claim.event_type = opt_str(&cur, "--event-type", wo.claim.event_type);
    if (opt_has(&cur, "--order"))
        wo.claim.order = opt_num(&cur, "--order", 0) == 1 ? PGPIPE_CLAIM_ORDER_ID
                                                          : PGPIPE_CLAIM_ORDER_RECEIVED;
    if (opt_has(&cur, "--lease")) {
        wo.claim.mode = PGPIPE_CLAIM_LEASE;
        wo.claim.lease_ms = (int)opt_num(&cur, "--lease", 0);
    }
    wo.claim.max_attempts = (int)opt_num(&cur, "--max-attempts", wo.claim.max_attempts);
    wo.claim.backoff_base_ms = (int)opt_num(&cur, "--backoff", wo.claim.backoff_base_ms);
    wo.channel = opt_str(&cur, "--channel", wo.channel);
    wo.poll_ms = (int)opt_num(&cur, "--poll", wo.poll_ms);
    wo.dlq_alert_threshold = (int)opt_num(&cur, "--alert", wo.dlq_alert_threshold);
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
    int rc = pgpipe_pool_open(&pool, ci, &po);
    free(ci);
    if (rc != PGPIPE_OK) {
        errorf("%s", pool ? pgpipe_errmsg(pool) : "out of memory");
        pgpipe_pool_close(pool, NULL);
        return 1;
    }
    pgpipe_workers *w;
    if ((rc = pgpipe_workers_open(&w, pool, &h, &wo)) != PGPIPE_OK) {
        errorf("%s", w ? pgpipe_errmsg(w) : "out of memory");
        pgpipe_workers_close(w);
        pgpipe_pool_close(pool, NULL);
        return 1;
    }
    saved_signals sig;
    signals_catch(&sig, on_sigint, 0, 0);
    interrupted = 0;
    set_cancel_targets(NULL, w);
    if (!quiet)
        fprintf(sh->out, "working on %s with %d workers%s\n",
                wo.claim.table ? wo.claim.table : "staging.raw_events", wo.threads,
                until_empty ? " until it is empty" : " (Ctrl-C stops)");
    /* the library says it at info; shown here at the default level too (also
    ** in scripts: it explains a slower pick-up), unless .log shows it anyway */
    if (!opt_has(&cur, "--quiet") && wo.channel && *wo.channel &&
        pgpipe_log_get_level() > PGPIPE_LOG_INFO &&
        pgpipe_pool_pooler(pool) == PGPIPE_POOLER_TRANSACTION)
        fprintf(stderr, "pgpipe: NOTIFY wake-ups are off behind a transaction pooler: the "
                "workers poll every %d ms (--poll)\n", wo.poll_ms);
    pgpipe_workers_stats st;
    int empty = 0;
    while (!interrupted && !empty && !pgpipe_workers_stopping(w)) {
        if (until_empty)
            empty = pgpipe_workers_run_until_empty(w, 1000) == PGPIPE_OK;
        else
            pgpipe_sleep_ms(1000);
        if (!quiet && !empty) {
            pgpipe_workers_stats_get(w, &st);
            fprintf(sh->out, "  claimed %lld, done %lld, retried %lld, dead-lettered %lld, fenced %lld,"
                    " released %lld, abandoned %lld, %.0f events/s\n", st.total.claimed,
                    st.total.done, st.total.retried, st.total.dead, st.total.fenced,
                    st.total.released, st.total.abandoned, st.recent_per_s);
            fflush(sh->out);
        }
    }
    int busy = 0;
    if (interrupted) {
        /* Ctrl-C cancelled what the workers ran (the handler did); one may
        ** be stuck in the next statement (the release of its claim, a
        ** COMMIT waiting for a synchronous standby): cancel again while any
        ** still runs */
        pgpipe_workers_stats_get(w, &st);
        busy = st.threads - st.idle;
        pgpipe_workers_cancel(w);
        for (int i = 1; pgpipe_workers_running(w) > 0; i++) {
            pgpipe_sleep_ms(100);
            if (i % 20 == 0)
                pgpipe_workers_cancel(w);
        }
    }
    pgpipe_workers_stop(w);
    int wrc = pgpipe_workers_wait(w);
    set_cancel_targets(NULL, NULL);
    pgpipe_workers_stats_get(w, &st);
    signals_restore(&sig);
    fprintf(sh->out, "claimed %lld, done %lld, retried %lld, dead-lettered %lld, fenced %lld,"
            " released %lld, abandoned %lld in %.1f s (%.0f events/s)%s\n", st.total.claimed,
            st.total.done, st.total.retried, st.total.dead, st.total.fenced, st.total.released,
            st.total.abandoned, st.elapsed_s, st.events_per_s, interrupted ? ", stopped" : "");
    if (interrupted && (busy > 0 || until_empty))
        fprintf(stderr, "pgpipe: .work interrupted%s: the %lld events counted done are committed. "
                        "The statements in flight were cancelled: what they did is rolled back and "
                        "their events stay pending (a leased claim is released at once, not "
                        "charged an attempt), except a COMMIT cancelled while it waited for a synchronous standby: "
                        "the server keeps it committed (its WARNING says so) and it is counted done, "
                        "but that standby may not have it.\n",
                busy > 0 ? " with work in flight" : " before the table was empty", st.total.done);
    if (wrc != PGPIPE_OK)
        print_error(pgpipe_errinfo(w));  /* with the SQLSTATE */
    pgpipe_workers_close(w);
    pgpipe_pool_close(pool, NULL);
    return wrc != PGPIPE_OK || (interrupted && (busy > 0 || until_empty));
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
    /* 'a b' or "a b" is one word without its quotes (a FILE with a blank,
    ** an empty COLLECTION said as such), as everywhere else in the shell */
    if ((*s == '\'' || *s == '"') && strchr(s + 1, *s)) {
        const char *e = strchr(s + 1, *s);
        size_t n = (size_t)(e - s - 1);
        if (n >= size)
            return NULL;
        memcpy(buf, s + 1, n);
        buf[n] = '\0';
        *p = e + 1;
        return buf;
    }
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

/* Runs a checked .records command: arg is the JSON (create, update) or the
** parsed filter f (count, find); the ID or FILE is cur.pos[0]. */
static int records_run(shell *sh, const char *coll, const char *sub, const char *arg,
                       pgpipe_records_filter *f)
{
    const char *one = cur.npos ? cur.pos[0] : "";
    /* only create and import make a collection: a read, update or delete of
    ** a mistyped name must not leave a new empty table behind */
    if (strcmp(sub, "create") && strcmp(sub, "import")) {
        char tname[160];
        snprintf(tname, sizeof tname, "%s%s", strchr(coll, '.') ? "" : "records.", coll);
        char *q = quote_qualified(tname);
        const char *params[1] = { q };
        char *there = q ? query_value(sh, "SELECT to_regclass($1) IS NOT NULL", 1, params) : NULL;
        int missing = there && !strcmp(there, "f");
        free(there);
        if (missing) {
            errorf(".records %s: no collection %s (table %s does not exist; .records %s create "
                   "JSON or import FILE makes it)", sub, coll, q, coll);
            free(q);
            return 1;
        }
        free(q);
    }
    /* and create makes it only with a document it can store: one that is
    ** no JSON object leaves nothing (import's FILE is checked before) */
    if (!strcmp(sub, "create")) {
        pgpipe_json_doc *d = NULL;
        int jr = pgpipe_json_doc_open(&d);
        if (jr == PGPIPE_OK) {
            pgpipe_json_doc_set_source(d, "the document");
            jr = pgpipe_json_parse(d, arg, strlen(arg));
            if (jr != PGPIPE_OK)
                print_error(pgpipe_errinfo(d));
            else if (pgpipe_json_type(pgpipe_json_root(d)) != PGPIPE_JSON_OBJECT)
                errorf(".records %s create: the document is a JSON %s, not an object", coll,
                       pgpipe_json_type_name(pgpipe_json_type(pgpipe_json_root(d))));
            jr = jr != PGPIPE_OK ||
                 pgpipe_json_type(pgpipe_json_root(d)) != PGPIPE_JSON_OBJECT;
        }
        pgpipe_json_doc_close(d);
        if (jr)
            return 1;
    }
    char *ci = work_conninfo(sh->conn);
    pgpipe_pool_options po;
    pgpipe_pool_options_init(&po);
    po.pool_size = 1;
    po.max_overflow = 0;
    pgpipe_pool *pool = NULL;
    pgpipe_records *h = NULL;
    int rc = ci ? pgpipe_pool_open(&pool, ci, &po) : PGPIPE_NOMEM;
    free(ci);
    if (rc != PGPIPE_OK) {
        errorf("%s", pool ? pgpipe_errmsg(pool) : "out of memory");
        goto out;
    }
    if ((rc = pgpipe_records_open(&h, pool, coll)) != PGPIPE_OK) {
        errorf("%s", h ? pgpipe_errmsg(h) : "out of memory");
        goto out;
    }
    if (!strcmp(sub, "create")) {
        char id[37];
        if ((rc = pgpipe_records_create(h, arg, id)) == PGPIPE_OK)
            fprintf(sh->out, "%s\n", id);
    } else if (!strcmp(sub, "get")) {
        char *doc;
        if ((rc = pgpipe_records_get(h, one, &doc)) == PGPIPE_OK)
            fprintf(sh->out, "%s\n", doc);
        pgpipe_free(doc);
    } else if (!strcmp(sub, "update")) {
        if ((rc = pgpipe_records_update(h, one, arg, opt_has(&cur, "--replace")
                                                         ? PGPIPE_RECORDS_REPLACE
                                                         : PGPIPE_RECORDS_MERGE)) == PGPIPE_OK)
            fprintf(sh->out, "updated %s\n", one);
    } else if (!strcmp(sub, "delete")) {
        if ((rc = pgpipe_records_delete(h, one)) == PGPIPE_OK)
            fprintf(sh->out, "deleted %s\n", one);
    } else if (!strcmp(sub, "count")) {
        long long cnt = 0;
        if ((rc = pgpipe_records_count(h, f, &cnt)) == PGPIPE_OK)
            fprintf(sh->out, "%lld\n", cnt);
    } else if (!strcmp(sub, "find")) {
        pgpipe_records_find_options fo;
        pgpipe_records_find_options_init(&fo);
        fo.filter = f;
        fo.sort = opt_str(&cur, "--sort", NULL);
        fo.limit = opt_num(&cur, "--limit", fo.limit);
        fo.offset = opt_num(&cur, "--offset", fo.offset);
        pgpipe_records_cursor *c;
        if ((rc = pgpipe_records_find(h, &fo, &c)) == PGPIPE_OK) {
            const char *doc;
            while (pgpipe_records_cursor_next(c, &doc, NULL) == PGPIPE_ROW)
                fprintf(sh->out, "%s\n", doc);
            if (sh->interactive)
                fprintf(sh->out, "(%lld record%s)\n", pgpipe_records_cursor_count(c),
                        pgpipe_records_cursor_count(c) == 1 ? "" : "s");
        }
        pgpipe_records_cursor_close(c);
    } else if (!strcmp(sub, "import")) {
        pgpipe_records_import_options io;
        pgpipe_records_import_options_init(&io);
        io.documents = opt_has(&cur, "--documents");
        io.stop_on_error = opt_has(&cur, "--stop-on-error");
        io.on_error = records_bad_record;
        pgpipe_records_import_summary s;
        rc = pgpipe_records_import(h, one, &io, &s);
        fprintf(sh->out, "imported %lld, skipped %lld%s\n", s.imported, s.skipped,
                rc == PGPIPE_OK ? "" : " (stopped: nothing kept)");
    } else { /* export */
        long long cnt = 0;
        rc = pgpipe_records_export(h, one, NULL, opt_has(&cur, "--fields"), &cnt);
        if (rc == PGPIPE_OK && strcmp(one, "-"))
            fprintf(sh->out, "exported %lld records to %s\n", cnt, one);
    }
    if (rc != PGPIPE_OK)
        print_error(pgpipe_errinfo(h));
out:
    pgpipe_records_close(h);
    pgpipe_pool_close(pool, NULL);
    return rc != PGPIPE_OK;
}

static const optdef opts_rec_update[] = {
    { "--replace", NULL, OPT_FLAG, NULL, 0, 0, NULL, "replace the document (default: merge its top-level keys)",
      ".records users update --replace 3f6c1b52-8a3e-4d5b-9a77-0c2f4e8d9b10 {\"name\": \"Alice\", "
      "\"age\": 32}" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const optdef opts_rec_find[] = {
    { "--sort", NULL, OPT_TEXT, "[-]PATH", 0, 0, "@created_at",
      "order by a path (- for descending), or @created_at",
      ".records users find --sort -age age > 30" },
    { "--limit", NULL, OPT_INT, "N", 0, LLONG_MAX, "no limit", "at most N documents",
      ".records users find --limit 10 name like \"A%\"" },
    { "--offset", NULL, OPT_INT, "N", 0, LLONG_MAX, "0", "skip the first N",
      ".records users find --sort name --limit 10 --offset 20" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const optdef opts_rec_import[] = {
    { "--documents", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "each record is a whole document with id and metadata (as export writes them)",
      ".records users import --documents users.ndjson" },
    { "--stop-on-error", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "stop at the first bad record and keep nothing (default: skip bad records)",
      ".records users import --stop-on-error users.ndjson" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const optdef opts_rec_export[] = {
    { "--fields", NULL, OPT_FLAG, NULL, 0, 0, NULL, "the documents' fields only (no id, metadata)",
      ".records users export users.ndjson --fields" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
/* For .records, args name what follows the sub-command; JSON and FILTER are
** the rest of the line (no quoting needed). */
static const argspec spec_records[] = {
    { "create", "COLLECTION JSON", 1, 1, NULL, "store a document, print its id" },
    { "get", "COLLECTION ID", 1, 1, NULL, "print one document" },
    { "update", "COLLECTION ID JSON", 2, 2, opts_rec_update, "merge into (or replace) a document" },
    { "delete", "COLLECTION ID", 1, 1, NULL, "delete a document" },
    { "count", "COLLECTION [FILTER]", 0, 1, NULL, "count the (matching) documents" },
    { "find", "COLLECTION [FILTER]", 0, 1, opts_rec_find, "print the matching documents, one per line" },
    { "import", "COLLECTION FILE", 1, 1, opts_rec_import,
      "store the records of an NDJSON file or a JSON array" },
    { "export", "COLLECTION FILE|-", 1, 1, opts_rec_export, "write the documents as NDJSON" },
    { NULL, NULL, 0, 0, NULL, NULL },
};

/* Where the JSON or FILTER of a .records command that starts at p ends: at
** a word outside quotes that starts with "--" and a letter (an option, as in
** find age > 30 --limit 5; neither JSON nor a filter has such a word), or at
** the end of the line. */
static const char *records_text_end(const char *p)
{
    char quote = 0;
    for (const char *c = p; *c; c++) {
        if (quote) {
            if (*c == '\\' && quote == '"' && c[1])
                c++;
            else if (*c == quote)
                quote = 0;
        } else if (*c == '"' || *c == '\'') {
            quote = *c;
        } else if (c[0] == '-' && c[1] == '-' && isalpha((unsigned char)c[2]) && c > p &&
                   isspace((unsigned char)c[-1])) {
            const char *e = c;
            while (e > p && isspace((unsigned char)e[-1]))
                e--;
            return e == p ? c : e;
        }
    }
    return p + strlen(p);
}

/* .records COLLECTION SUB [options] ARGS: every argument is checked before
** the collection is opened (opening makes it). The options come before the
** ARGS, or after them (the FILE of import and export, the JSON or FILTER). */
static int cmd_records(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc;
    char coll[128] = "", sub[32] = "", w[1024], name[64];
    const char *p = rest;
    if (!records_word(&p, coll, sizeof coll) || !records_word(&p, sub, sizeof sub)) {
        errorf(".records: missing %s (usage: .records COLLECTION create|get|update|delete|count|"
               "find|import|export ...; .help records)", coll[0] ? "the sub-command" :
               "COLLECTION and the sub-command");
        return 1;
    }
    /* the name is checked first (the library checks it again when it opens) */
    int okname = 1, dots = 0;
    for (const char *c = coll, *start = coll; *c; c++) {
        if (*c == '.') {
            okname &= c > start && ++dots == 1;
            start = c + 1;
        } else if (c == start) {
            okname &= isalpha((unsigned char)*c) || *c == '_';
        } else {
            okname &= isalnum((unsigned char)*c) || *c == '_' || *c == '-';
        }
    }
    if (!okname || !coll[0] || coll[strlen(coll) - 1] == '.') {
        errorf(".records: COLLECTION: bad collection name \"%.80s\": use \"name\" or \"schema.name\", "
               "each a letter or '_' then letters, digits, '_' or '-'", coll);
        return 1;
    }
    const argspec *sp = NULL;
    for (const argspec *a = spec_records; a->sub; a++)
        if (!strcmp(a->sub, sub))
            sp = a;
    if (!sp) {
        errorf(".records: unknown sub-command \"%s\" (create, get, update, delete, count, find, "
               "import or export)", sub);
        return 1;
    }
    snprintf(name, sizeof name, ".records %s", sub);
    /* the option words, then the arguments: ID and FILE are one word; JSON
    ** and FILTER the rest of the line */
    char *words[48];
    char *wbuf[48] = { 0 };
    int nw = 0, rc = 1;
    int textual = !strcmp(sub, "create") || !strcmp(sub, "update") || !strcmp(sub, "count") ||
                  !strcmp(sub, "find");
    const char *text = NULL;
    int onearg = !strcmp(sub, "update") ? 1 : !strcmp(sub, "create") ? 0 : textual ? 0 : 99;
    int positional = 0;
    const char *text_end = NULL;
    argspec s = *sp;
    s.args = strchr(sp->args, ' ') + 1;
    s.minpos = textual ? onearg : sp->minpos;
    s.maxpos = textual ? onearg : sp->maxpos;
    for (;;) {
        const char *q = p;
        while (isspace((unsigned char)*q))
            q++;
        if (!*q)
            break;
        const char *at = q;
        /* a word too long for w is not the end of the line: a long FILTER
        ** or JSON is still the text, anything else is refused */
        int got = records_word(&q, w, sizeof w) != NULL;
        if (!got)
            snprintf(w, sizeof w, "%.40s...", at);
        int is_opt = at[0] == '-' && at[1] == '-';
        if (!is_opt && textual && positional >= onearg) {
            if (text) {
                /* an unknown option before it is the likelier mistake: said first */
                if (!opt_parse(&cur, name, &s, words, nw))
                    errorf("%s: unexpected \"%s\" after the options (the %s comes first or "
                           "last, in one piece)", name, w, !strcmp(sub, "find") ||
                           !strcmp(sub, "count") ? "FILTER" : "JSON");
                goto done;
            }
            /* JSON or FILTER: the rest of the line, up to options after it */
            text = p;
            text_end = records_text_end(p);
            if (!*text_end)
                break;
            p = text_end;
            continue;
        }
        if (!got) {
            errorf("%s: argument too long: \"%s\" (%d bytes at most)", name, w,
                   (int)sizeof w - 1);
            goto done;
        }
        if (nw >= 47) {
            errorf("%s: too many arguments", name);
            goto done;
        }
        if (!(wbuf[nw] = strdup(w))) {
            errorf("out of memory");
            goto done;
        }
        words[nw] = wbuf[nw];
        nw++;
        positional += !is_opt;
        p = q;
        /* an option's value is the next word */
        int k = is_opt ? opt_lookup(sp->opts, w, strcspn(w, "=")) : -1;
        if (k >= 0 && sp->opts[k].kind != OPT_FLAG && !strchr(w, '=') &&
            records_word(&q, w, sizeof w) && nw < 47) {
            if (!(wbuf[nw] = strdup(w))) {
                errorf("out of memory");
                goto done;
            }
            words[nw] = wbuf[nw];
            nw++;
            p = q;
        } else if (k >= 0 && sp->opts[k].kind != OPT_FLAG && !strchr(w, '=') && nw < 47 &&
                   q[strspn(q, " \t\r\n")]) { /* a value records_word found too long */
            errorf("%s: %s: value too long (%d bytes at most)", name, sp->opts[k].name,
                   (int)sizeof w - 1);
            goto done;
        }
    }
    if (opt_parse(&cur, name, &s, words, nw))
        goto done;
    while (text && isspace((unsigned char)*text))
        text++;
    char *arg = text ? strndup(text, text_end ? (size_t)(text_end - text) : strlen(text)) : strdup("");
    if (!arg) {
        errorf("out of memory");
        goto done;
    }
    size_t n = strlen(arg);
    while (n && isspace((unsigned char)arg[n - 1]))
        arg[--n] = '\0';
    if (n >= 2 && arg[0] == '\'' && arg[n - 1] == '\'') {
        memmove(arg, arg + 1, n - 2);
        arg[n - 2] = '\0';
    }
    if ((!strcmp(sub, "create") || !strcmp(sub, "update")) && !*arg) {
        errorf("%s: missing JSON (usage: .records %s; .help records)", name, sp->args);
        free(arg);
        goto done;
    }
    if (!strcmp(sub, "import") && check_readable(name, "FILE", cur.pos[0])) {
        free(arg);
        goto done;
    }
    /* a FILTER is checked before anything opens */
    pgpipe_records_filter *f = NULL;
    if ((!strcmp(sub, "count") || !strcmp(sub, "find")) &&
        pgpipe_records_filter_open(&f, arg) != PGPIPE_OK) {
        if (f) {
            char buf[1024];
            pgpipe_error_format(pgpipe_errinfo(f), buf, sizeof buf);
            errorf("%s: FILTER: %s", name, buf);
        } else
            errorf("out of memory");
        pgpipe_records_filter_close(f);
        free(arg);
        goto done;
    }
    rc = examples_checking ? 0 : records_run(sh, coll, sub, arg, f); /* checked: run nothing */
    pgpipe_records_filter_close(f);
    free(arg);
done:
    for (int i = 0; i < nw; i++)
        free(wbuf[i]);
    return rc;
}

/* The filters the dead-letter sub-commands share; EX: the row's example,
** a command line of the sub-command whose table holds the row. */
#define DLQ_OPT_STAGE(EX) { "--stage", NULL, OPT_ENUM, "load|process", 0, 0, "any", \
                           "only dead letters of this stage", EX }
#define DLQ_OPT_SOURCE(EX) { "--source", NULL, OPT_TEXT, "S", 0, 0, "any", \
                            "only this source (the load's source name, or the event's source)", EX }
#define DLQ_OPT_ERROR(EX) { "--error", NULL, OPT_TEXT, "TEXT", 0, 0, NULL, \
                           "only errors containing TEXT (any case)", EX }
#define DLQ_OPT_SINCE(EX) { "--since", NULL, OPT_TEXT, "TIME", 0, 0, NULL, \
                           "only those that last failed at or after TIME (a timestamp, or an interval back " \
                           "from now: '1 day')", EX }
#define DLQ_OPT_UNTIL(EX) { "--until", NULL, OPT_TEXT, "TIME", 0, 0, NULL, \
                           "only those that last failed before TIME (a timestamp or an interval ago)", EX }
#define DLQ_OPT_STATUS(EX) { "--status", NULL, OPT_ENUM, "dead|replayed|discarded|any", 0, 0, "dead", \
                            "only dead letters in this state", EX }
#define DLQ_OPT_END { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL }
static const optdef opts_dlq_list[] = {
    DLQ_OPT_STAGE(".dlq list --stage process"),
    DLQ_OPT_SOURCE(".dlq list --source shop"),
    DLQ_OPT_ERROR(".dlq list --error 23505"),
    DLQ_OPT_SINCE(".dlq list --since '2 hours'"),
    DLQ_OPT_UNTIL(".dlq list --until '2026-11-02 12:00'"),
    DLQ_OPT_STATUS(".dlq list --status replayed"),
    { "--limit", NULL, OPT_INT, "N", 1, INT_MAX, "100", "list at most N (newest first)",
      ".dlq list --source shop --limit 3" },
    DLQ_OPT_END,
};
static const optdef opts_dlq_counts[] = {
    DLQ_OPT_STAGE(".dlq counts --stage load"),
    DLQ_OPT_SOURCE(".dlq counts --source shop"),
    DLQ_OPT_ERROR(".dlq counts --error \"invalid json\""),
    DLQ_OPT_SINCE(".dlq counts --since '2026-11-30 08:00'"),
    DLQ_OPT_UNTIL(".dlq counts --until 2026-12-01"),
    DLQ_OPT_STATUS(".dlq counts --status any"),
    DLQ_OPT_END,
};
static const optdef opts_dlq_replay[] = {
    DLQ_OPT_STAGE(".dlq replay --stage process"),
    DLQ_OPT_SOURCE(".dlq replay --source shop"),
    DLQ_OPT_ERROR(".dlq replay --stage process --error status"),
    DLQ_OPT_SINCE(".dlq replay --stage load --since 2026-11-01"),
    DLQ_OPT_UNTIL(".dlq replay --stage load --since 2026-11-01 --until 2026-11-02"),
    { "--all", NULL, OPT_FLAG, NULL, 0, 0, NULL, "every dead letter (when no ID or filter)",
      ".dlq replay --all" },
    { "--table", NULL, OPT_TEXT, "T", 0, 0, "staging.raw_events", "the staging table to replay into",
      ".dlq replay --stage process --table staging.orders" },
    DLQ_OPT_END,
};
static const optdef opts_dlq_purge[] = {
    DLQ_OPT_STAGE(".dlq purge --stage load --older-than 2026-11-01"),
    DLQ_OPT_SOURCE(".dlq purge --source shop --status replayed"),
    DLQ_OPT_ERROR(".dlq purge --error \"invalid json\""),
    DLQ_OPT_SINCE(".dlq purge --status replayed --since 2026-11-01"),
    { "--until", "--older-than", OPT_TEXT, "TIME", 0, 0, NULL,
      "only those that last failed before TIME (a timestamp, or an interval back from now)",
      ".dlq purge --stage load --older-than '30 days'" },
    DLQ_OPT_STATUS(".dlq purge --status discarded"),
    { "--all", NULL, OPT_FLAG, NULL, 0, 0, NULL, "every dead letter, whatever its state",
      ".dlq purge --all" },
    DLQ_OPT_END,
};
static const argspec spec_dlq[] = {
    { "list", "[ID]", 0, 1, opts_dlq_list, "list dead letters, newest first" },
    { "show", "ID", 1, 1, NULL, "one dead letter with its raw text, payload and context" },
    { "counts", NULL, 0, 0, opts_dlq_counts, "counts by stage and error" },
    { "stats", NULL, 0, 0, opts_dlq_counts, "the same as counts" },
    { "replay", "[ID]", 0, 1, opts_dlq_replay,
      "validate dead letters again and put those that pass back into staging as unprocessed" },
    { "purge", "[ID]", 0, 1, opts_dlq_purge, "delete dead letters" },
    { NULL, NULL, 0, 0, NULL, NULL },
};

/* .dlq [list|show ID|counts|replay|purge] [filters]: the dead-letter queue. */
/* .dlq replay ID / .dlq purge ID touched nothing: an ID that does not exist
** is an error (a mistyped ID in a script must not pass as done): 1 after
** saying so. One that exists but is not in the status the command takes is
** said on stderr: 0. */
static int dlq_id_untouched(shell *sh, const char *name, long long id, const char *status)
{
    pgpipe_error err;
    pgpipe_error_clear(&err);
    PGresult *res = NULL;
    if (pgpipe_dlq_get(sh->conn, id, &res, &err) != PGPIPE_OK) {
        errorf("%s: %s", name, err.message);
        return 1;
    }
    int col = PQfnumber(res, "status");
    fprintf(stderr, "pgpipe: %s: dead letter %lld is %s, not %s (.dlq show %lld)\n", name, id,
            col >= 0 ? PQgetvalue(res, 0, col) : "?", status && *status ? status : "dead", id);
    PQclear(res);
    return 0;
}

static int cmd_dlq(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    const char *sub = cur.sub;
    char name[32];
    snprintf(name, sizeof name, ".dlq %s", sub);
    pgpipe_dlq_filter f;
    pgpipe_dlq_filter_init(&f);
    if (cur.npos && parse_num(name, "ID", cur.pos[0], 1, LLONG_MAX, &f.id))
        return 1;
    f.stage = opt_str(&cur, "--stage", NULL);
    f.source = opt_str(&cur, "--source", NULL);
    f.error_like = opt_str(&cur, "--error", NULL);
    f.since = opt_str(&cur, "--since", NULL);
    f.until = opt_str(&cur, "--until", NULL);
    f.status = opt_str(&cur, "--status", f.status);
    f.limit = (int)opt_num(&cur, "--limit", f.limit);
    const char *table = opt_str(&cur, "--table", NULL);
    int all = opt_has(&cur, "--all");
    int filtered = f.id > 0 || f.stage || f.source || f.error_like || f.since || f.until ||
                   opt_has(&cur, "--status");
    if (all && filtered) {
        errorf("%s: --all: does not go with an ID or a filter", name);
        return 1;
    }
    pgpipe_error err;
    pgpipe_error_clear(&err);
    PGresult *res = NULL;
    int rc;
    if (!strcmp(sub, "list")) {
        rc = pgpipe_dlq_list(sh->conn, &f, &res, &err);
    } else if (!strcmp(sub, "show")) {
        rc = pgpipe_dlq_get(sh->conn, f.id, &res, &err);
    } else if (!strcmp(sub, "counts") || !strcmp(sub, "stats")) {
        rc = pgpipe_dlq_counts(sh->conn, &f, &res, &err);
    } else if (!strcmp(sub, "replay")) {
        if (!all && !filtered) {
            errorf(".dlq replay: needs an ID, a filter or --all");
            return 1;
        }
        long long ok = 0, bad = 0;
        rc = pgpipe_dlq_replay(sh->conn, &f, table, NULL, &ok, &bad, &err);
        if (rc == PGPIPE_OK && f.id > 0 && ok + bad == 0 &&
            dlq_id_untouched(sh, name, f.id, f.status))
            return 1;
        if (rc == PGPIPE_OK) {
            fprintf(sh->out, "replayed %lld, refused %lld%s\n", ok, bad,
                    bad ? " (still dead-lettered, with the reason: .dlq list)" : "");
            if (bad) { /* a script must see that not everything went back */
                errorf(".dlq replay: %lld of %lld dead letters refused", bad, ok + bad);
                return 1;
            }
        }
    } else { /* purge */
        if (!all && !filtered) {
            errorf(".dlq purge: needs an ID, a filter, --older-than TIME or --all");
            return 1;
        }
        if (all)
            f.status = "any";
        long long n = 0;
        rc = pgpipe_dlq_purge(sh->conn, &f, &n, &err);
        if (rc == PGPIPE_OK && f.id > 0 && n == 0 &&
            dlq_id_untouched(sh, name, f.id, f.status))
            return 1;
        if (rc == PGPIPE_OK)
            fprintf(sh->out, "purged %lld\n", n);
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
    double t0 = now_ms();
    PGresult *res = NULL;
    pgpipe_error err;
    if (pgpipe_dlq_totals(sh->conn, &res, &err) == PGPIPE_OK) {
        print_result(sh, res);
        PQclear(res);
    } else {
        print_error(&err);
        rc = 1;
    }
    if (sh->timer)
        fprintf(sh->out, "Time: %.3f ms\n", now_ms() - t0);
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

/* After Ctrl-C stopped a .load: what is committed and what is not. */
static void load_cancel_report(const pgpipe_load_summary *s)
{
    if (s->batches_at_cancel)
        fprintf(stderr, "pgpipe: %lld of the committed batches committed while Ctrl-C cancelled "
                        "them: a COMMIT cancelled while waiting for a synchronous standby stays "
                        "committed on the server (its WARNING says so), but that standby may not "
                        "have it\n", s->batches_at_cancel);
    long long open = s->records_read - s->rows_loaded - s->rows_dead - s->rows_skipped - s->rows_missing;
    fprintf(stderr, "pgpipe: not committed: %lld record%s read in the batches in flight (cancelled "
                    "and rolled back), and the rest of the input\n", open > 0 ? open : 0,
            open == 1 ? "" : "s");
}

/* .load FILE [options]: the COPY loader (see .help load). */
static const optdef opts_load[] = {
    { "--format", NULL, OPT_ENUM, "csv|ndjson|json|auto", 0, 0, "auto (by extension, else the first byte)",
      "CSV with a header row, one JSON object per line, or one JSON array of objects",
      ".load events.json --format json" },
    { "--event-type-field", NULL, OPT_TEXT, "F", 0, 0, "event_type", "event_type from this field",
      ".load clicks.csv --source web --event-type-field kind" },
    { "--event-type", "--type", OPT_TEXT, "TEXT", 0, 0, NULL, "this event_type for every record",
      ".load /data/events.ndjson --event-type click" },
    { "--source-field", NULL, OPT_TEXT, "F", 0, 0, NULL, "source from this field",
      ".load events.ndjson --source-field origin" },
    { "--source", NULL, OPT_TEXT, "TEXT", 0, 0, "the source name",
      "this source for every record (kept by a replay of its dead letters)",
      ".load clicks.csv --source web" },
    { "--payload-field", NULL, OPT_TEXT, "F", 0, 0, "the whole record", "payload from this field (JSON)",
      ".load events.ndjson --payload-field data" },
    { "--received-at-field", NULL, OPT_TEXT, "F", 0, 0, "now()", "received_at from this field",
      ".load events.ndjson --received-at-field ts" },
    { "--require", NULL, OPT_TEXT, "F1,F2", 0, 0, NULL,
      "fields that must be present and not null or empty (else dead-lettered)",
      ".load orders.ndjson --require order_id,amount" },
    { "--table", NULL, OPT_TEXT, "T", 0, 0, "staging.raw_events", "load into another table (needs --map)",
      ".load events.ndjson --table events --map id,doc=json:$record" },
    { "--map", NULL, OPT_TEXT, "COL=FIELD,...", 0, 0, NULL,
      "the columns of --table: col=field, col=json:field (validated JSON), col='fixed text', "
      "or col (= the field of that name)",
      ".load users.csv --table crm.users --map id,email,name=full_name" },
    { "--name", NULL, OPT_TEXT, "SOURCE", 0, 0, "the file path", "the source name recorded for the load",
      ".load - --name orders-export" },
    { "--key", NULL, OPT_TEXT, "LOADKEY", 0, 0, "path, size and mtime",
      "loads with the same key are one load (resumed, never loaded twice)",
      ".load events.ndjson --key events-2026-11-30" },
    { "--channel", NULL, OPT_TEXT, "NAME", 0, 0, "pgpipe_events", "NOTIFY after each batch ('' = none)",
      ".load events.ndjson --channel orders_loaded" },
    { "--batch-rows", NULL, OPT_INT, "N", 1, INT_MAX, "10000", "records per batch",
      ".load /data/events.ndjson --batch-rows 5000" },
    { "--batch-bytes", NULL, OPT_INT, "N", 1, LLONG_MAX, "4194304", "input bytes per batch",
      ".load events.ndjson --batch-bytes 16777216" },
    { "--connections", NULL, OPT_INT, "N", 1, 8, "2", "COPY streams side by side",
      ".load events.ndjson --connections 4" },
    { "--max-record-bytes", NULL, OPT_INT, "N", 1, LLONG_MAX, "67108864",
      "longer records are dead-lettered",
      ".load events.ndjson --max-record-bytes 1048576" },
    { "--delimiter", NULL, OPT_TEXT, "C|tab", 0, 0, ",", "the CSV delimiter: one character, or tab",
      ".load sales.tsv --delimiter tab" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_load[] = { { NULL, "FILE|-", 1, 1, opts_load,
                                        "load a file into staging with the COPY loader" } };

/* Splits a comma list (in place) into at most max parts; 0 or 1 with an error. */
static int split_list(const char *opt, char *buf, char **parts, int max, int *n)
{
    *n = 0;
    for (char *t = buf, *next; t; t = next) {
        next = strchr(t, ',');
        if (next)
            *next++ = '\0';
        if (!*t) {
            errorf(".load: %s: an empty entry in the list", opt);
            return 1;
        }
        if (*n >= max) {
            errorf(".load: %s: more than %d entries", opt, max);
            return 1;
        }
        parts[(*n)++] = t;
    }
    return 0;
}

static int cmd_load(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    pgpipe_loader_options o;
    pgpipe_loader_options_init(&o);
    const char *file = cur.pos[0];
    pgpipe_load_column cols[64];
    const char *req[64];
    char *parts[64];
    char *mapbuf = NULL, *reqbuf = NULL;
    int n = 0, rc = 1;
    if (strcmp(file, "-") && check_readable(".load", "FILE", file))
        return 1;
    if (opt_has(&cur, "--format")) {
        static const int fmt[] = { PGPIPE_FORMAT_CSV, PGPIPE_FORMAT_NDJSON, PGPIPE_FORMAT_JSON,
                                   PGPIPE_FORMAT_AUTO };
        o.format = fmt[opt_num(&cur, "--format", 3)];
    }
    o.target = opt_str(&cur, "--table", NULL);
    o.event_type_field = opt_str(&cur, "--event-type-field", NULL);
    o.event_type_value = opt_str(&cur, "--event-type", NULL);
    o.source_field = opt_str(&cur, "--source-field", NULL);
    o.source_value = opt_str(&cur, "--source", NULL);
    o.received_at_field = opt_str(&cur, "--received-at-field", NULL);
    o.payload_field = opt_str(&cur, "--payload-field", NULL);
    o.source_name = opt_str(&cur, "--name", NULL);
    o.load_key = opt_str(&cur, "--key", NULL);
    o.notify_channel = opt_str(&cur, "--channel", o.notify_channel);
    o.batch_rows = (int)opt_num(&cur, "--batch-rows", o.batch_rows);
    o.batch_bytes = (size_t)opt_num(&cur, "--batch-bytes", (long long)o.batch_bytes);
    o.connections = (int)opt_num(&cur, "--connections", o.connections);
    o.max_record_bytes = (size_t)opt_num(&cur, "--max-record-bytes", (long long)o.max_record_bytes);
    const char *delim = opt_str(&cur, "--delimiter", NULL);
    if (delim) {
        if (!strcmp(delim, "tab"))
            o.csv_delimiter = '\t';
        else if (strlen(delim) == 1 && delim[0] != '"' && delim[0] != '\n' && delim[0] != '\r')
            o.csv_delimiter = (unsigned char)delim[0];
        else {
            errorf(".load: --delimiter: expected one character or tab, got \"%s\"", delim);
            return 1;
        }
        /* a delimiter means CSV, and wins over the name's guess (x.tsv
        ** that is comma-separated: --delimiter ,) */
        if (o.format == PGPIPE_FORMAT_AUTO)
            o.format = PGPIPE_FORMAT_CSV;
        else if (o.format != PGPIPE_FORMAT_CSV) {
            errorf(".load: --delimiter: only for --format csv");
            return 1;
        }
    }
    /* options that only mean something together */
    static const char *const staging_only[] = { "--event-type-field", "--event-type", "--source-field",
                                                "--source", "--payload-field", "--received-at-field" };
    if (o.target && !opt_has(&cur, "--map")) {
        errorf(".load: --table: needs --map (which column gets which field)");
        return 1;
    }
    if (!o.target && opt_has(&cur, "--map")) {
        errorf(".load: --map: needs --table (staging.raw_events has its own mapping)");
        return 1;
    }
    for (size_t i = 0; o.target && i < sizeof staging_only / sizeof *staging_only; i++)
        if (opt_has(&cur, staging_only[i])) {
            errorf(".load: %s: is for staging.raw_events; with --table use --map", staging_only[i]);
            return 1;
        }
    if (o.source_field && o.source_value) {
        errorf(".load: --source: does not go with --source-field");
        return 1;
    }
    if (o.event_type_field && o.event_type_value) {
        errorf(".load: --event-type: does not go with --event-type-field");
        return 1;
    }
    if (opt_has(&cur, "--require")) {
        if (!(reqbuf = strdup(opt_str(&cur, "--require", ""))) ||
            split_list("--require", reqbuf, parts, 64, &n))
            goto out;
        for (int i = 0; i < n; i++)
            req[i] = parts[i];
        o.required = req;
        o.nrequired = n;
    }
    if (opt_has(&cur, "--map")) {
        if (!(mapbuf = strdup(opt_str(&cur, "--map", ""))) ||
            split_list("--map", mapbuf, parts, 64, &n))
            goto out;
        for (int i = 0; i < n; i++) {
            char *t = parts[i], *eq = strchr(t, '=');
            memset(&cols[i], 0, sizeof cols[i]);
            cols[i].column = t;
            if (eq) {
                *eq = '\0';
                /* col=field, col=json:field (validated JSON), col='text' (fixed) */
                if (eq[1] == '\'') {
                    cols[i].value = eq + 2;
                    size_t k = strlen(eq + 2);
                    if (k && eq[1 + k] == '\'') eq[1 + k] = '\0';
                } else if (!strncmp(eq + 1, "json:", 5)) {
                    cols[i].field = eq + 6;
                    cols[i].json = 1;
                } else {
                    cols[i].field = eq + 1;
                }
                if (!*t || (!cols[i].value && !*cols[i].field)) {
                    errorf(".load: --map: \"%s=%s\": expected col=field, col=json:field or "
                           "col='text'", t, eq + 1);
                    goto out;
                }
            } else {
                cols[i].field = t;
            }
        }
        o.columns = cols;
        o.ncolumns = n;
    }
    /* one stream goes through the shell's own connection; more open their
    ** own connections to the same server */
    char *ci = NULL;
    if (o.connections == 1) {
        o.conn = sh->conn;
    } else if (!(ci = work_conninfo(sh->conn))) {
        errorf("out of memory");
        goto out;
    } else {
        o.conninfo = ci;
    }
    o.progress = load_progress;
    interrupted = 0;
    pgpipe_loader *volatile lv = NULL;
    set_cancel_targets(&lv, NULL);
    /* the schema install's NOTICEs (on the shell's connection) go to the log */
    PQnoticeProcessor old = quiet_notices(sh->conn);
    rc = pgpipe_loader_open((pgpipe_loader **)&lv, &o);
    pgpipe_loader *l = lv;
    if (rc == PGPIPE_OK)
        rc = pgpipe_loader_load_file(l, file);
    set_cancel_targets(NULL, NULL);
    restore_notices(sh->conn, old);
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
    if (rc != PGPIPE_OK && interrupted) {
        load_resume_hint(sh, argv, argc, file, &s);
        load_cancel_report(&s);
    } else if (rc != PGPIPE_OK) {
        print_error(pgpipe_errinfo(l));
    }
    pgpipe_loader_close(l);
    free(ci);
    rc = rc == PGPIPE_OK ? 0 : 1;
out:
    free(mapbuf);
    free(reqbuf);
    return rc;
}

/* ---- .cdc: changes of another PostgreSQL database into staging ------------- */

static const optdef opts_cdc_start[] = {
    { "--source", NULL, OPT_TEXT, "CONNINFO", 0, 0, NULL,
      "the source database (wal_level = logical; a role with REPLICATION)",
      ".cdc start --source \"host=src dbname=app user=repl\"" },
    { "--slot", NULL, OPT_TEXT, "NAME", 0, 0, "pgpipe_cdc",
      "the replication slot (a-z 0-9 _), also the events' source",
      ".cdc start --source \"host=src dbname=app user=repl\" --slot app" },
    { "--publication", NULL, OPT_TEXT, "NAME", 0, 0, "the slot's name", "the publication",
      ".cdc start --source \"host=src dbname=app user=repl\" --slot app --publication app_pub" },
    { "--tables", NULL, OPT_TEXT, "LIST", 0, 0, "all tables",
      "\"t1, s.t2\": the tables of a publication this creates",
      ".cdc start --source \"host=src dbname=app user=repl\" --slot app --tables \"orders, "
      "customers\"" },
    { "--no-create", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "refuse when the publication or the slot is missing instead of creating it",
      ".cdc start --source \"host=src dbname=app user=repl\" --slot app --no-create" },
    { "--snapshot", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "a new slot: stage the tables' current rows first (resumable per table)",
      ".cdc start --source \"host=src dbname=app user=repl\" --slot app --snapshot" },
    { "--heartbeat", NULL, OPT_INT, "MS", 0, 86400000, "10000",
      "idle this long: pg_logical_emit_message on the source so the slot advances (0: never)",
      ".cdc start --source \"host=src dbname=app user=repl\" --heartbeat 30000" },
    { "--for", NULL, OPT_TEXT, "DURATION", 0, 0, NULL,
      "stop by itself after this long (90, 30s, 5m): a bounded run",
      ".cdc start --source \"host=src dbname=app user=repl\" --for 5m" },
    { "--writers", NULL, OPT_INT, "N", 1, 4, "1",
      "target connections that stage groups side by side, committed in order",
      ".cdc start --source \"host=src dbname=app user=repl\" --writers 2" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const optdef opts_cdc_status[] = {
    { "--source", NULL, OPT_TEXT, "CONNINFO", 0, 0, NULL,
      "also the slot's lag and retained WAL on the source (pg_replication_slots)",
      ".cdc status --source \"host=src dbname=app user=repl\"" },
    { "--slot", NULL, OPT_TEXT, "NAME", 0, 0, "every slot", "only this slot",
      ".cdc status --slot app" },
    { "--max-lag", NULL, OPT_INT, "BYTES", 0, LLONG_MAX, "1073741824",
      "with --source: ALERT and exit status 1 when the slot lags more",
      ".cdc status --source \"host=src dbname=app user=repl\" --max-lag 536870912" },
    { "--max-retained", NULL, OPT_INT, "BYTES", 0, LLONG_MAX, "10737418240",
      "with --source: ALERT and exit status 1 when the slot keeps more WAL",
      ".cdc status --source \"host=src dbname=app user=repl\" --max-retained 21474836480" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const optdef opts_cdc_stop[] = {
    { "--source", NULL, OPT_TEXT, "CONNINFO", 0, 0, NULL, "the source database",
      ".cdc stop --source \"host=src dbname=app user=repl\"" },
    { "--slot", NULL, OPT_TEXT, "NAME", 0, 0, "pgpipe_cdc", "the replication slot",
      ".cdc stop --source \"host=src dbname=app user=repl\" --slot app" },
    { "--publication", NULL, OPT_TEXT, "NAME", 0, 0, "the slot's name", "the publication",
      ".cdc stop --source \"host=src dbname=app user=repl\" --slot app --publication app_pub" },
    { "--keep-publication", NULL, OPT_FLAG, NULL, 0, 0, NULL, "drop the slot only",
      ".cdc stop --source \"host=src dbname=app user=repl\" --slot app --keep-publication" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_cdc[] = {
    { "start", NULL, 0, 0, opts_cdc_start,
      "stream the source's changes into staging.raw_events until Ctrl-C, SIGTERM or --for" },
    { "status", NULL, 0, 0, opts_cdc_status,
      "the slots' applied LSN and counts here; with --source their lag and retained WAL" },
    { "stop", NULL, 0, 0, opts_cdc_stop,
      "end capture for good: drop the slot (and publication) on the source, forget it here" },
    { NULL, NULL, 0, 0, NULL, NULL },
};

static pgpipe_cdc *volatile cdc_handle;
static void on_cdc_signal(int sig)
{
    (void)sig;
    pgpipe_cdc *c = cdc_handle;
    if (c)
        pgpipe_cdc_stop(c);
}

static void cdc_bytes(char *buf, size_t size, long long n)
{
    if (n >= 1LL << 30)
        snprintf(buf, size, "%.1f GB", (double)n / (1 << 30));
    else if (n >= 1LL << 20)
        snprintf(buf, size, "%.1f MB", (double)n / (1 << 20));
    else if (n >= 1024)
        snprintf(buf, size, "%.1f kB", (double)n / 1024);
    else
        snprintf(buf, size, "%lld bytes", n);
}

static int cdc_slot_name_ok(const char *s)
{
    if (!*s || strlen(s) > 63)
        return 0;
    for (; *s; s++)
        if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '_')
            return 0;
    return 1;
}

static int cdc_start(shell *sh)
{
    pgpipe_cdc_options o;
    pgpipe_cdc_options_init(&o);
    o.source = opt_str(&cur, "--source", NULL);
    if (!o.source) {
        errorf(".cdc start: --source CONNINFO is required");
        return 1;
    }
    o.slot = opt_str(&cur, "--slot", o.slot);
    o.publication = opt_str(&cur, "--publication", o.slot);
    o.tables = opt_str(&cur, "--tables", NULL);
    o.create = !opt_has(&cur, "--no-create");
    o.snapshot = opt_has(&cur, "--snapshot");
    o.heartbeat_ms = (int)opt_num(&cur, "--heartbeat", o.heartbeat_ms);
    o.writers = (int)opt_num(&cur, "--writers", o.writers);
    const char *f = opt_str(&cur, "--for", NULL);
    long long for_ms = -1;
    if (f && (for_ms = run_parse_duration(f)) <= 0) {
        errorf(".cdc start: --for: \"%s\" is not a duration (90, 30s, 5m, 2h, 1d)", f);
        return 1;
    }
    char *ci = work_conninfo(sh->conn);
    if (!ci) {
        errorf("out of memory");
        return 1;
    }
    o.target = ci;
    pgpipe_cdc *c = NULL;
    int rc = pgpipe_cdc_open(&c, &o);
    free(ci);
    if (rc != PGPIPE_OK) {
        errorf(".cdc start: %s", c ? pgpipe_errmsg(c) : "out of memory");
        pgpipe_cdc_close(c);
        return 1;
    }
    saved_signals sig;
    cdc_handle = c;
    signals_catch(&sig, on_cdc_signal, 0, 0);
    fprintf(stderr, "cdc: streaming slot %s into staging.raw_events (Ctrl-C stops)\n", o.slot);
    fflush(stderr);
    rc = pgpipe_cdc_run(c, for_ms > INT32_MAX ? INT32_MAX : (int)for_ms);
    signals_restore(&sig);
    cdc_handle = NULL;
    pgpipe_cdc_stats st;
    pgpipe_cdc_stats_get(c, &st);
    if (rc != PGPIPE_OK)
        errorf(".cdc start: %s", pgpipe_errmsg(c));
    fprintf(stderr, "cdc: stopped: %lld transactions, %lld events staged; applied LSN %X/%X\n",
            st.transactions, st.events, (unsigned)(st.applied_lsn >> 32),
            (unsigned)(st.applied_lsn & 0xFFFFFFFFu));
    pgpipe_cdc_close(c);
    return rc != PGPIPE_OK;
}

static int cdc_status(shell *sh)
{
    const char *slot = opt_str(&cur, "--slot", NULL);
    const char *source = opt_str(&cur, "--source", NULL);
    if (slot && !cdc_slot_name_ok(slot)) {
        errorf(".cdc status: --slot \"%s\": a slot name is 1 to 63 of a-z, 0-9 and _", slot);
        return 1;
    }
    char *has = query_value(sh, "SELECT to_regclass('pgpipe.cdc_slots') IS NOT NULL", 0, NULL);
    int installed = has && has[0] == 't';
    free(has);
    int rc = 0;
    if (installed) {
        char sql[512];
        snprintf(sql, sizeof sql,
                 "SELECT slot, publication, applied_lsn, commit_time AS last_commit, transactions, "
                 "events, updated_at FROM pgpipe.cdc_slots%s%s%s ORDER BY slot",
                 slot ? " WHERE slot = '" : "", slot ? slot : "", slot ? "'" : "");
        rc = run_sql(sh, sql);
    } else if (!source) {
        errorf(".cdc status: no CDC slot here yet (pgpipe.cdc_slots does not exist)");
        return 1;
    }
    if (!source)
        return rc;
    pgpipe_cdc_slot_info si;
    pgpipe_error err;
    const char *name = slot ? slot : "pgpipe_cdc";
    if (pgpipe_cdc_slot_info_get(source, name, &si, &err) != PGPIPE_OK) {
        print_error(&err);
        return 1;
    }
    if (!si.exists) {
        fprintf(sh->out, "slot %s: not on the source\n", name);
        return rc;
    }
    char lag[32], kept[32], safe[48];
    cdc_bytes(lag, sizeof lag, si.lag_bytes);
    cdc_bytes(kept, sizeof kept, si.retained_bytes);
    if (si.safe_wal_size < 0)
        snprintf(safe, sizeof safe, "unlimited");
    else
        cdc_bytes(safe, sizeof safe, si.safe_wal_size);
    fprintf(sh->out, "slot %s: %s, wal_status %s, confirmed flush %s\n", name,
            si.active ? "active" : "INACTIVE (no consumer)", si.wal_status, si.confirmed_flush);
    fprintf(sh->out, "  lag %s (pg_current_wal_lsn - confirmed_flush_lsn)\n", lag);
    fprintf(sh->out, "  retained WAL %s (pg_current_wal_lsn - restart_lsn); before the slot is "
            "lost: %s\n", kept, safe);
    if (si.safe_wal_size < 0)
        fprintf(sh->out, "  warning: max_slot_wal_keep_size is unlimited on the source: a slot "
                "nobody reads keeps WAL until the disk is full; set it (ALTER SYSTEM SET "
                "max_slot_wal_keep_size = '10GB')\n");
    if (!si.active)
        fprintf(sh->out, "  warning: no consumer reads this slot and the source keeps WAL for "
                "it: .cdc start resumes it, .cdc stop drops it\n");
    long long max_lag = opt_num(&cur, "--max-lag", 1LL << 30);
    long long max_kept = opt_num(&cur, "--max-retained", 10LL << 30);
    if (si.lag_bytes > max_lag) {
        fprintf(sh->out, "ALERT slot %s lags %s behind the source (over --max-lag %lld)\n", name,
                lag, max_lag);
        rc = 1;
    }
    if (si.retained_bytes > max_kept) {
        fprintf(sh->out, "ALERT slot %s keeps %s of WAL on the source (over --max-retained %lld)\n",
                name, kept, max_kept);
        rc = 1;
    }
    if (!strcmp(si.wal_status, "unreserved") || !strcmp(si.wal_status, "lost")) {
        fprintf(sh->out, "ALERT slot %s has wal_status %s: %s\n", name, si.wal_status,
                !strcmp(si.wal_status, "lost") ? "it was invalidated, changes are missing "
                "(.cdc stop, then .cdc start --snapshot)" : "the source is about to invalidate it");
        rc = 1;
    }
    return rc;
}

static int cdc_stop(shell *sh)
{
    const char *source = opt_str(&cur, "--source", NULL);
    if (!source) {
        errorf(".cdc stop: --source CONNINFO is required");
        return 1;
    }
    const char *slot = opt_str(&cur, "--slot", "pgpipe_cdc");
    const char *pub = opt_has(&cur, "--keep-publication") ? NULL
                                                          : opt_str(&cur, "--publication", slot);
    char *ci = work_conninfo(sh->conn);
    if (!ci) {
        errorf("out of memory");
        return 1;
    }
    char *has = query_value(sh, "SELECT to_regclass('pgpipe.cdc_slots') IS NOT NULL", 0, NULL);
    int installed = has && has[0] == 't';
    free(has);
    pgpipe_error err;
    int rc = pgpipe_cdc_drop(source, installed ? ci : NULL, slot, pub, &err);
    free(ci);
    if (rc != PGPIPE_OK) {
        print_error(&err);
        return 1;
    }
    fprintf(sh->out, "cdc: slot %s dropped%s%s%s; the source keeps no WAL for it\n", slot,
            pub ? " with publication " : "", pub ? pub : "", installed ? ", forgotten here" : "");
    return 0;
}

/* .cdc start|status|stop [options] */
static int cmd_cdc(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    if (!strcmp(cur.sub, "start"))
        return cdc_start(sh);
    if (!strcmp(cur.sub, "status"))
        return cdc_status(sh);
    return cdc_stop(sh);
}

/* ---- .pull: pages of an HTTP(S) JSON API into staging ----------------------- */

static const optdef opts_pull[] = {
    { "--source", NULL, OPT_TEXT, "NAME", 0, 0, NULL, "the API's name: the events' source (required)",
      ".pull https://api.example.com/v1/contacts --source crm" },
    { "--stream", NULL, OPT_TEXT, "NAME", 0, 0, "default", "the stream: its cursor, the default event type",
      ".pull https://api.example.com/v1/contacts --source crm --stream contacts" },
    { "--method", NULL, OPT_ENUM, "GET|POST", 0, 0, "GET", "the request method",
      ".pull https://api.example.com/v1/search --source crm --method POST --body '{\"type\": "
      "\"contact\"}'" },
    { "--body", NULL, OPT_TEXT, "JSON", 0, 0, NULL, "the request body (POST)",
      ".pull https://api.example.com/v1/search --source crm --method POST --body '{\"type\": "
      "\"contact\"}'" },
    { "--header", NULL, OPT_LIST, "\"NAME: VALUE\"", 0, 0, NULL, "a request header (repeatable)",
      ".pull https://api.example.com/v1/contacts --source crm --header \"Accept: application/json\"" },
    { "--records", NULL, OPT_TEXT, "PATH", 0, 0, "the body", "JSON path of the record array ($.data.items, data.items)",
      ".pull https://api.example.com/v1/contacts --source crm --records data.items" },
    { "--event-type", NULL, OPT_TEXT, "TYPE", 0, 0, "the stream", "the events' type",
      ".pull https://api.example.com/v1/contacts --source crm --event-type contact" },
    { "--event-type-field", NULL, OPT_TEXT, "PATH", 0, 0, NULL, "the record's field holding its type",
      ".pull https://api.example.com/v1/contacts --source crm --event-type-field type" },
    { "--paginate", NULL, OPT_ENUM, "none|link|cursor|offset|page", 0, 0, "none",
      "Link rel=next, a cursor in the body, offset/limit, or page numbers",
      ".pull https://api.example.com/v1/contacts --source crm --paginate link" },
    { "--cursor-path", NULL, OPT_TEXT, "PATH", 0, 0, NULL, "cursor: the body's next cursor",
      ".pull https://api.example.com/v1/contacts --source crm --paginate cursor --cursor-path "
      "meta.next_cursor" },
    { "--cursor-param", NULL, OPT_TEXT, "NAME", 0, 0, "cursor", "cursor: the query parameter",
      ".pull https://api.example.com/v1/contacts --source crm --paginate cursor --cursor-path "
      "meta.next_cursor --cursor-param after" },
    { "--more-path", NULL, OPT_TEXT, "PATH", 0, 0, NULL, "cursor: the body's \"more pages\" boolean",
      ".pull https://api.example.com/v1/contacts --source crm --paginate cursor --cursor-path "
      "meta.next_cursor --more-path meta.has_more" },
    { "--limit", NULL, OPT_TEXT, "N", 0, 0, "100", "offset (and page with --limit-param): records per page",
      ".pull https://api.example.com/v1/contacts --source crm --paginate offset --limit 500" },
    { "--offset-param", NULL, OPT_TEXT, "NAME", 0, 0, "offset", "offset: the query parameter",
      ".pull https://api.example.com/v1/contacts --source crm --paginate offset --offset-param skip" },
    { "--limit-param", NULL, OPT_TEXT, "NAME", 0, 0, "limit", "the page size's query parameter",
      ".pull https://api.example.com/v1/contacts --source crm --paginate page --limit 100 "
      "--limit-param per_page" },
    { "--page-param", NULL, OPT_TEXT, "NAME", 0, 0, "page", "page: the query parameter",
      ".pull https://api.example.com/v1/contacts --source crm --paginate page --page-param p" },
    { "--first-page", NULL, OPT_TEXT, "N", 0, 0, "1", "page: the first page's number",
      ".pull https://api.example.com/v1/contacts --source crm --paginate page --first-page 0" },
    { "--total-path", NULL, OPT_TEXT, "PATH", 0, 0, NULL, "the body's total record count (checked)",
      ".pull https://api.example.com/v1/contacts --source crm --paginate offset --total-path "
      "meta.total" },
    { "--pages-path", NULL, OPT_TEXT, "PATH", 0, 0, NULL, "the body's page count (checked)",
      ".pull https://api.example.com/v1/contacts --source crm --paginate page --pages-path meta.pages" },
    { "--max-pages", NULL, OPT_TEXT, "N", 0, 0, "no limit", "pages per run; the next run continues",
      ".pull https://api.example.com/v1/contacts --source crm --max-pages 50" },
    { "--since-field", NULL, OPT_TEXT, "PATH", 0, 0, NULL, "the record field of the incremental cursor",
      ".pull https://api.example.com/v1/contacts --source crm --since-field updated_at "
      "--since-param updated_since" },
    { "--since-param", NULL, OPT_TEXT, "NAME", 0, 0, "since", "the query parameter receiving the cursor",
      ".pull https://api.example.com/v1/contacts --source crm --since-field updated_at "
      "--since-param updated_since" },
    { "--since-initial", NULL, OPT_TEXT, "VALUE", 0, 0, NULL, "the cursor before the first run",
      ".pull https://api.example.com/v1/contacts --source crm --since-field updated_at "
      "--since-initial 2026-01-01T00:00:00Z" },
    { "--backfill", NULL, OPT_TEXT, "FROM..TO", 0, 0, NULL, "load a range; the incremental cursor stays",
      ".pull https://api.example.com/v1/contacts --source crm --since-field updated_at --backfill "
      "2026-01-01..2026-02-01" },
    { "--until-param", NULL, OPT_TEXT, "NAME", 0, 0, "until", "backfill: the range's end parameter",
      ".pull https://api.example.com/v1/contacts --source crm --since-field updated_at --backfill "
      "2026-01-01..2026-02-01 --until-param updated_before" },
    { "--token-env", NULL, OPT_TEXT, "VAR", 0, 0, NULL, "bearer token from the environment",
      ".pull https://api.example.com/v1/contacts --source crm --token-env CRM_TOKEN" },
    { "--token-file", NULL, OPT_FILE, "PATH", 0, 0, NULL, "bearer token from a file",
      ".pull https://api.example.com/v1/contacts --source crm --token-file /run/secrets/crm_token" },
    { "--basic-env", NULL, OPT_TEXT, "VAR", 0, 0, NULL, "basic auth \"user:password\" from the environment",
      ".pull https://api.example.com/v1/contacts --source crm --basic-env CRM_BASIC" },
    { "--basic-file", NULL, OPT_FILE, "PATH", 0, 0, NULL, "basic auth from a file",
      ".pull https://api.example.com/v1/contacts --source crm --basic-file /run/secrets/crm_basic" },
    { "--api-key-header", NULL, OPT_TEXT, "NAME", 0, 0, NULL, "the API key's header (X-Api-Key)",
      ".pull https://api.example.com/v1/contacts --source crm --api-key-header X-Api-Key "
      "--api-key-env CRM_KEY" },
    { "--api-key-env", NULL, OPT_TEXT, "VAR", 0, 0, NULL, "the API key from the environment",
      ".pull https://api.example.com/v1/contacts --source crm --api-key-header X-Api-Key "
      "--api-key-env CRM_KEY" },
    { "--api-key-file", NULL, OPT_FILE, "PATH", 0, 0, NULL, "the API key from a file",
      ".pull https://api.example.com/v1/contacts --source crm --api-key-header X-Api-Key "
      "--api-key-file /run/secrets/crm_key" },
    { "--rate", NULL, OPT_TEXT, "N", 0, 0, "no limit", "requests per second",
      ".pull https://api.example.com/v1/contacts --source crm --rate 5" },
    { "--concurrency", NULL, OPT_TEXT, "N", 0, 0, "1",
      "requests in flight at once (1 to 64); pages written side by side",
      ".pull https://api.example.com/v1/contacts --source crm --paginate offset --concurrency 4" },
    { "--max-body", NULL, OPT_TEXT, "BYTES", 0, 0, "64M",
      "the largest response body, decoded (512k, 64M, 1G); a larger page fails",
      ".pull https://api.example.com/v1/contacts --source crm --max-body 256M" },
    { "--body-budget", NULL, OPT_TEXT, "BYTES", 0, 0, "twice --max-body",
      "the bodies of all requests in flight at once; pages ahead wait for room",
      ".pull https://api.example.com/v1/contacts --source crm --paginate offset --concurrency 8 "
      "--body-budget 32M --max-body 8M" },
    { "--connect-timeout", NULL, OPT_TEXT, "DURATION", 0, 0, "10s", "connecting",
      ".pull https://api.example.com/v1/contacts --source crm --connect-timeout 5s" },
    { "--timeout", NULL, OPT_TEXT, "DURATION", 0, 0, "60s", "a whole request",
      ".pull https://api.example.com/v1/contacts --source crm --timeout 30s" },
    { "--retry-budget", NULL, OPT_TEXT, "DURATION", 0, 0, "5m", "retrying a page gives up after this long",
      ".pull https://api.example.com/v1/contacts --source crm --retry-budget 10m" },
    { "--ca-file", NULL, OPT_FILE, "PATH", 0, 0, NULL, "CA certificates for HTTPS",
      ".pull https://api.example.com/v1/contacts --source crm --ca-file "
      "/etc/ssl/certs/internal-ca.pem" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_pull[] = { { NULL, "URL", 1, 1, opts_pull,
                                       "pull the pages of a JSON API into staging.raw_events" } };

static pgpipe_pull *volatile pull_handle;
static void on_pull_signal(int sig)
{
    (void)sig;
    pgpipe_pull *p = pull_handle;
    if (p)
        pgpipe_pull_stop(p);
}

static void pull_show(void *ud, const pgpipe_pull_progress *pr)
{
    int64_t *last = ud, now = pgpipe_now_us();
    if (!pr->done && now - *last < 1000000)
        return;
    *last = now;
    fprintf(stderr, "pull: %lld pages, %lld records, %lld dead-lettered, %.0f records/s%s%s\n",
            pr->pages, pr->records, pr->dead_lettered, pr->records_per_s,
            pr->retries ? ", retries: " : "", pr->retries ? "yes" : "");
    fflush(stderr);
}

/* .pull URL --source NAME [options] */
static int cmd_pull(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    pgpipe_pull_options o;
    pgpipe_pull_options_init(&o);
    pgpipe_error err;
    pgpipe_error_clear(&err);
    int bad = pgpipe_pull_set(&o, "url", cur.pos[0], &err);
    for (int k = 0; !bad && opts_pull[k].name; k++) {
        if (!cur.val[k] || opts_pull[k].kind == OPT_LIST)
            continue;
        bad = pgpipe_pull_set(&o, opts_pull[k].name, cur.val[k], &err);
    }
    for (int i = 0; !bad && i < cur.nlist; i++)
        bad = pgpipe_pull_set(&o, "header", cur.list[i], &err);
    if (!bad && !o.source) {
        errorf(".pull: --source NAME is required");
        return 1;
    }
    if (bad) {
        errorf(".pull: %s", err.message);
        return 1;
    }
    char *ci = work_conninfo(sh->conn);
    if (!ci) {
        errorf("out of memory");
        return 1;
    }
    int64_t last = 0;
    o.conninfo = ci;
    o.progress = pull_show;
    o.progress_ud = &last;
    pgpipe_pull *p = NULL;
    int rc = pgpipe_pull_open(&p, &o);
    free(ci);
    if (rc != PGPIPE_OK) {
        errorf(".pull: %s", p ? pgpipe_errmsg(p) : "out of memory");
        pgpipe_pull_close(p);
        return 1;
    }
    saved_signals sig;
    pull_handle = p;
    signals_catch(&sig, on_pull_signal, 0, 0);
    rc = pgpipe_pull_run(p);
    signals_restore(&sig);
    pull_handle = NULL;
    if (rc != PGPIPE_OK)
        errorf(".pull: %s", pgpipe_errmsg(p));
    pgpipe_pull_close(p);
    return rc != PGPIPE_OK;
}

/* ---- .serve: the HTTP ingest server ---------------------------------------- */

/* The server being run (for the signal handler) and how many stop signals
** it has had: the first drains, a second stops at once. */
static pgpipe_http *volatile serve_handle = NULL;
static volatile sig_atomic_t serve_stops = 0;

static void serve_say(const char *msg)
{
    ssize_t w = write(STDERR_FILENO, msg, strlen(msg));
    (void)w;
}

static void on_serve_signal(int sig)
{
    pgpipe_http *h = serve_handle;
    if (!h)
        return;
    if (sig == SIGHUP) {
        pgpipe_http_reload(h);
        return;
    }
    if (serve_stops++ == 0) {
        pgpipe_http_stop(h);
        serve_say("pgpipe: .serve: draining: no new connections; the requests in flight are "
                  "answered after their commit (a second Ctrl-C or SIGTERM stops at once)\n");
        return;
    }
    serve_say("pgpipe: .serve: stopped at once: the requests in flight were not answered. "
              "None of them was acknowledged, so their senders retry them: those that "
              "committed are not added twice when they carry an idempotency key "
              "(Idempotency-Key or the source's delivery id), the others are added then\n");
    _exit(1);
}

#define SERVE_SOURCES_MAX LIST_MAX
typedef struct serve_sources {
    pgpipe_http_source src[SERVE_SOURCES_MAX + 1];
    char *text[SERVE_SOURCES_MAX + 1];   /* the specs, cut in place */
    char *secret[SERVE_SOURCES_MAX + 1]; /* read from the environment or a file */
    int n;
} serve_sources;

static void serve_sources_free(serve_sources *ss)
{
    for (int i = 0; i < ss->n; i++) {
        free(ss->text[i]);
        if (ss->secret[i]) {
            memset(ss->secret[i], 0, strlen(ss->secret[i]));
            free(ss->secret[i]);
        }
    }
    memset(ss, 0, sizeof *ss);
}

/* The secret in file path (its first line, blanks at the end removed). */
static char *serve_read_secret(const char *spec, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        errorf(".serve: --source %s: secret-file: cannot open \"%s\": %s", spec, path,
               strerror(errno));
        return NULL;
    }
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    n = strlen(buf);
    while (n && isspace((unsigned char)buf[n - 1]))
        buf[--n] = '\0';
    if (!n) {
        errorf(".serve: --source %s: secret-file: \"%s\" is empty", spec, path);
        return NULL;
    }
    char *s = strdup(buf);
    memset(buf, 0, sizeof buf);
    return s;
}

/* One --source 'NAME[:key=value,...]' into ss; 0, or 1 with one error line. */
static int serve_source_parse(serve_sources *ss, const char *spec)
{
    if (ss->n >= SERVE_SOURCES_MAX) {
        errorf(".serve: --source: more than %d sources", SERVE_SOURCES_MAX);
        return 1;
    }
    int i = ss->n;
    char *t = strdup(spec);
    if (!t) {
        errorf("out of memory");
        return 1;
    }
    ss->text[i] = t;
    ss->n++;
    pgpipe_http_source *s = &ss->src[i];
    memset(s, 0, sizeof *s);
    char *colon = strchr(t, ':');
    if (colon)
        *colon = '\0';
    s->name = t;
    if (strcmp(t, "*") && !pgpipe_http_source_valid(t)) {
        errorf(".serve: --source \"%s\": the name must be " PGPIPE_HTTP_SOURCE_RULE
               " (the {source} of POST /v1/events/{source}) or * (every other source)", spec);
        return 1;
    }
    for (int j = 0; j < i; j++)
        if (!strcmp(ss->src[j].name, t)) {
            errorf(".serve: --source \"%s\": source %s is given twice", spec, t);
            return 1;
        }
    const char *secret_env = NULL, *secret_file = NULL;
    char *p = colon ? colon + 1 : NULL;
    while (p && *p) {
        char *item = p;
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        p = comma ? comma + 1 : NULL;
        char *eq = strchr(item, '=');
        if (!eq || eq == item || !eq[1]) {
            errorf(".serve: --source \"%s\": \"%s\": expected key=value", spec, item);
            return 1;
        }
        *eq = '\0';
        const char *k = item, *v = eq + 1;
        long long num;
        char what[64];
        snprintf(what, sizeof what, "--source %s: %s", t, k);
        if (!strcmp(k, "secret")) {
            errorf(".serve: --source \"%s\": secret=: a secret on the command line is seen by "
                   "every user of the machine (ps, /proc) and kept in shell history: use "
                   "secret-env=VAR or secret-file=PATH", t);
            return 1;
        } else if (!strcmp(k, "signature")) {
            if (parse_choice(".serve", what, v, "github|stripe|standard", &num))
                return 1;
            s->signature = num == 0 ? PGPIPE_HTTP_SIG_GITHUB
                         : num == 1 ? PGPIPE_HTTP_SIG_STRIPE : PGPIPE_HTTP_SIG_STANDARD;
        } else if (!strcmp(k, "secret-env")) {
            secret_env = v;
        } else if (!strcmp(k, "secret-file")) {
            secret_file = v;
        } else if (!strcmp(k, "tolerance")) {
            if (parse_num(".serve", what, v, 1, 86400 * 7, &num))
                return 1;
            s->tolerance_s = (int)num;
        } else if (!strcmp(k, "window")) {
            if (parse_num(".serve", what, v, 1, 24 * 366, &num))
                return 1;
            s->window_hours = (int)num;
        } else if (!strcmp(k, "event-type-field")) {
            s->event_type_field = v;
        } else if (!strcmp(k, "event-type-header")) {
            s->event_type_header = v;
        } else if (!strcmp(k, "event-type")) {
            s->event_type_value = v;
        } else if (!strcmp(k, "idempotency-header")) {
            s->idempotency_header = v;
        } else if (!strcmp(k, "idempotency-field")) {
            s->idempotency_field = v;
        } else {
            errorf(".serve: --source \"%s\": %s: unknown key (signature, secret-env, secret-file, "
                   "tolerance, window, event-type-field, event-type-header, event-type, "
                   "idempotency-header, idempotency-field)", t, k);
            return 1;
        }
    }
    if (secret_env && secret_file) {
        errorf(".serve: --source \"%s\": secret-env and secret-file: give one", t);
        return 1;
    }
    if (secret_env) {
        const char *e = getenv(secret_env);
        if (!e || !*e) {
            errorf(".serve: --source \"%s\": secret-env: $%s is not set or empty", t, secret_env);
            return 1;
        }
        if (!(ss->secret[i] = strdup(e))) {
            errorf("out of memory");
            return 1;
        }
    } else if (secret_file && !(ss->secret[i] = serve_read_secret(t, secret_file))) {
        return 1;
    }
    s->secret = ss->secret[i];
    if (s->signature != PGPIPE_HTTP_SIG_NONE && !s->secret) {
        errorf(".serve: --source \"%s\": signature needs its secret: secret-env=VAR or "
               "secret-file=PATH", t);
        return 1;
    }
    if (s->signature == PGPIPE_HTTP_SIG_NONE && s->secret) {
        errorf(".serve: --source \"%s\": a secret without signature=github|stripe|standard "
               "would check nothing", t);
        return 1;
    }
    return 0;
}

/* Writes port to path through a temporary file and a rename, so a reader
** never sees it half written. */
static int serve_port_file(const char *path, int port)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f && fprintf(f, "%d\n", port) > 0;
    if (f && fclose(f) != 0)
        ok = 0;
    if (ok && rename(tmp, path) != 0)
        ok = 0;
    if (!ok) {
        errorf(".serve: --port-file: cannot write \"%s\": %s", path, strerror(errno));
        unlink(tmp);
        return 1;
    }
    return 0;
}

static int serve_token(shell *sh)
{
    const char *what = cur.pos[0];
    pgpipe_error err;
    pgpipe_error_clear(&err);
    int add = !strcmp(what, "add"), list = !strcmp(what, "list"), revoke = !strcmp(what, "revoke");
    if (!add && !list && !revoke) {
        errorf(".serve token: unknown sub-command \"%s\" (add, list or revoke)", what);
        return 1;
    }
    if ((add && (cur.npos < 2 || cur.npos > 3)) || (list && cur.npos > 2) ||
        (revoke && cur.npos != 3)) {
        errorf(".serve token %s: expected %s", what, add ? "SOURCE [LABEL]" : list ? "[SOURCE]"
               : "SOURCE ID");
        return 1;
    }
    if (cur.npos > 1 && strcmp(cur.pos[1], "*") && !pgpipe_http_source_valid(cur.pos[1])) {
        errorf(".serve token %s: SOURCE \"%s\": a source is " PGPIPE_HTTP_SOURCE_RULE
               " (the {source} of POST /v1/events/{source}), or * for every source", what,
               cur.pos[1]);
        return 1;
    }
    long long id = 0;
    if (revoke && parse_num(".serve token revoke", "ID", cur.pos[2], 1, LLONG_MAX, &id))
        return 1;
    /* the table is part of the built-in schema */
    PQnoticeProcessor old = quiet_notices(sh->conn);
    int rc = pgpipe_schema_install(sh->conn, NULL, &err);
    restore_notices(sh->conn, old);
    if (rc != PGPIPE_OK) {
        print_error(&err);
        return 1;
    }
    if (add) {
        char tok[PGPIPE_HTTP_TOKEN_SIZE], hash[65];
        if (pgpipe_http_token_add(sh->conn, cur.pos[1], cur.npos > 2 ? cur.pos[2] : NULL, tok,
                                  sizeof tok, &err) != PGPIPE_OK) {
            print_error(&err);
            return 1;
        }
        pgpipe_sha256_hex(tok, strlen(tok), hash);
        const char *params[1] = { hash };
        char *tid = query_value(sh, "SELECT id FROM pgpipe.http_tokens WHERE token_sha256 = $1",
                                1, params);
        fprintf(sh->out, "%s\n", tok);
        fflush(sh->out);
        fprintf(stderr, "pgpipe: token %s for source \"%s\": store it now, it is not shown again "
                "(only its SHA-256 is kept). Senders send it as \"Authorization: Bearer "
                "<token>\"; a running .serve takes it on SIGHUP.\n", tid ? tid : "?", cur.pos[1]);
        free(tid);
        memset(tok, 0, sizeof tok);
        return 0;
    }
    if (revoke) {
        if (pgpipe_http_token_revoke(sh->conn, cur.pos[1], id, &err) != PGPIPE_OK) {
            print_error(&err);
            return 1;
        }
        fprintf(sh->out, "revoked token %lld of source \"%s\" (a running .serve refuses it after "
                "SIGHUP)\n", id, cur.pos[1]);
        return 0;
    }
    PGresult *res = NULL;
    if (pgpipe_http_token_list(sh->conn, cur.npos > 1 ? cur.pos[1] : NULL, &res, &err) !=
        PGPIPE_OK) {
        print_error(&err);
        return 1;
    }
    print_result(sh, res);
    PQclear(res);
    return 0;
}

static const optdef opts_serve[] = {
    { "--listen", NULL, OPT_TEXT, "ADDR[,ADDR]", 0, 0, "127.0.0.1:8080",
      "HOST:PORT to listen on, [::1]:PORT for IPv6; port 0 picks a free one. Beyond loopback "
      "only with tokens (or --insecure)",
      ".serve --listen 127.0.0.1:8080" },
    { "--port-file", NULL, OPT_TEXT, "FILE", 0, 0, NULL,
      "write the first port to FILE once bound (for scripts with port 0)",
      ".serve --listen 127.0.0.1:0 --port-file http.port" },
    { "--insecure", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "listen beyond loopback with no token in the database",
      ".serve --listen 0.0.0.0:8080 --insecure" },
    { "--tokens", NULL, OPT_ENUM, "auto|required|off", 0, 0, "auto",
      "bearer tokens: auto = required for a source that has tokens, and for every source "
      "when listening beyond loopback; required; off. A signed source needs its signature "
      "instead",
      ".serve --tokens required" },
    { "--source", NULL, OPT_LIST, "'NAME[:key=value,...]'", 0, 0, NULL,
      "settings of a source (again for each; NAME * = every other source). Keys: "
      "signature=github|stripe|standard, secret-env=VAR, secret-file=PATH (never secret=: "
      "the command line is visible to every user), tolerance=SECONDS (300), window=HOURS, "
      "event-type-field=F, event-type-header=H, event-type=VALUE, idempotency-header=H, "
      "idempotency-field=F",
      ".serve --source github:signature=github,secret-env=GH_SECRET" },
    { "--event-type-field", NULL, OPT_TEXT, "F", 0, 0, NULL,
      "event_type from this payload field (sources without their own)",
      ".serve --event-type-field type" },
    { "--event-type-header", NULL, OPT_TEXT, "H", 0, 0, NULL,
      "else from this request header (sources without their own)",
      ".serve --event-type-header X-Event-Type" },
    { "--group-window", NULL, OPT_INT, "MS", 0, 60000, "0",
      "group commit: wait at most MS for more requests",
      ".serve --group-window 5" },
    { "--group-records", NULL, OPT_INT, "N", 1, 10000000, "5000",
      "group commit: commit at N records",
      ".serve --group-records 1000" },
    { "--committers", NULL, OPT_INT, "N", 1, 64, "2", "connections committing groups",
      ".serve --committers 4" },
    { "--max-header", NULL, OPT_INT, "BYTES", 256, 1048576, "16384",
      "request line and headers",
      ".serve --max-header 32768" },
    { "--max-body", NULL, OPT_INT, "BYTES", 1, LLONG_MAX, "8388608", "a request's body (413)",
      ".serve --max-body 1048576" },
    { "--max-records", NULL, OPT_INT, "N", 1, INT_MAX, "10000", "records in one request (413)",
      ".serve --max-records 1000" },
    { "--max-connections", NULL, OPT_INT, "N", 1, 1000000, "4096", "open connections",
      ".serve --max-connections 1024" },
    { "--header-timeout", NULL, OPT_INT, "MS", 1, INT_MAX, "10000",
      "to receive a request's head",
      ".serve --header-timeout 5000" },
    { "--body-timeout", NULL, OPT_INT, "MS", 1, INT_MAX, "30000", "to receive its body",
      ".serve --body-timeout 10000" },
    { "--idle-timeout", NULL, OPT_INT, "MS", 1, INT_MAX, "60000",
      "a keep-alive connection idle",
      ".serve --idle-timeout 30000" },
    { "--commit-timeout", NULL, OPT_INT, "MS", 1, INT_MAX, "30000",
      "for the database to commit a group (then 503, nothing acknowledged, reconnect)",
      ".serve --commit-timeout 10000" },
    { "--memory-budget", NULL, OPT_INT, "BYTES", 1, LLONG_MAX, "67108864",
      "accepted, uncommitted request bytes before 503 Retry-After",
      ".serve --memory-budget 134217728" },
    { "--window", NULL, OPT_INT, "HOURS", 1, 24 * 366, "72",
      "idempotency keys are kept this long (sources without window=)",
      ".serve --window 24" },
    { "--trusted-proxies", NULL, OPT_TEXT, "LIST", 0, 0, "none",
      "addresses and CIDRs (comma-separated) whose X-Forwarded-For is believed",
      ".serve --listen 10.0.0.5:8080 --trusted-proxies 10.0.0.1,10.0.1.0/24" },
    { "--access-log", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "one log line per request (component http; at least .log info)",
      ".serve --access-log" },
    { "--spool", NULL, OPT_TEXT, "DIR", 0, 0, NULL,
      "store and forward: while the database is away (or the memory budget is full) a valid "
      "request goes to the spool folder DIR, answered 202 {\"spooled\":N}, and is drained into "
      "staging, in order and once, when the database is back",
      ".serve --spool /var/lib/pgpipe/spool" },
    { "--spool-fsync", NULL, OPT_ENUM, "record|interval|never", 0, 0, "record",
      "when a spooled request is synced to disk: record = before its 202 (survives a power "
      "loss), interval = within a second, never = by the kernel",
      ".serve --spool /var/lib/pgpipe/spool --spool-fsync interval" },
    { "--spool-max", NULL, OPT_INT, "BYTES", 0, LLONG_MAX, "0",
      "the spool's size limit: beyond it 503 Retry-After; 0 = none",
      ".serve --spool /var/lib/pgpipe/spool --spool-max 1073741824" },
    { "--spool-device", NULL, OPT_TEXT, "ID", 0, 0, "the host name",
      "the device id the spool's records carry",
      ".serve --spool /var/lib/pgpipe/spool --spool-device pump-17" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_serve[] = {
    { "", NULL, 0, 0, opts_serve,
      "take webhooks and API pushes into staging.raw_events (Ctrl-C or SIGTERM drains)" },
    { "token", "add SOURCE [LABEL] | list [SOURCE] | revoke SOURCE ID", 1, 3, NULL,
      "bearer tokens: add prints a new one once; list; revoke" },
    { NULL, NULL, 0, 0, NULL, NULL },
};

static int cmd_serve(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    if (cur.sub && !strcmp(cur.sub, "token"))
        return serve_token(sh);
    pgpipe_http_options o;
    pgpipe_http_options_init(&o);
    serve_sources ss;
    memset(&ss, 0, sizeof ss);
    int rc = 1;
    char *ci = NULL;
    pgpipe_http *h = NULL;
    for (int i = 0; i < cur.nlist; i++)
        if (serve_source_parse(&ss, cur.list[i]))
            goto out;
    /* --event-type-field/--event-type-header: the "*" entry's, unless it has its own */
    const char *etf = opt_str(&cur, "--event-type-field", NULL);
    const char *eth = opt_str(&cur, "--event-type-header", NULL);
    if (etf || eth) {
        pgpipe_http_source *star = NULL;
        for (int i = 0; i < ss.n; i++)
            if (!strcmp(ss.src[i].name, "*"))
                star = &ss.src[i];
        if (!star) {
            star = &ss.src[ss.n++];
            memset(star, 0, sizeof *star);
            star->name = "*";
        }
        if (etf && !star->event_type_field)
            star->event_type_field = etf;
        if (eth && !star->event_type_header)
            star->event_type_header = eth;
    }
    o.sources = ss.src;
    o.nsources = ss.n;
    o.listen = opt_str(&cur, "--listen", o.listen);
    if (!*o.listen) {
        errorf(".serve: --listen: empty");
        goto out;
    }
    o.insecure = opt_has(&cur, "--insecure");
    if (opt_has(&cur, "--tokens")) {
        long long k = opt_num(&cur, "--tokens", 0);
        o.require_tokens = k == 0 ? -1 : k == 1 ? 1 : 0;
    }
    o.group_window_ms = (int)opt_num(&cur, "--group-window", o.group_window_ms);
    o.group_records = (int)opt_num(&cur, "--group-records", o.group_records);
    o.committers = (int)opt_num(&cur, "--committers", o.committers);
    o.max_header_bytes = (size_t)opt_num(&cur, "--max-header", (long long)o.max_header_bytes);
    o.max_body_bytes = (size_t)opt_num(&cur, "--max-body", (long long)o.max_body_bytes);
    o.max_records = (int)opt_num(&cur, "--max-records", o.max_records);
    o.max_connections = (int)opt_num(&cur, "--max-connections", o.max_connections);
    o.header_timeout_ms = (int)opt_num(&cur, "--header-timeout", o.header_timeout_ms);
    o.body_timeout_ms = (int)opt_num(&cur, "--body-timeout", o.body_timeout_ms);
    o.commit_timeout_ms = (int)opt_num(&cur, "--commit-timeout", o.commit_timeout_ms);
    o.idle_timeout_ms = (int)opt_num(&cur, "--idle-timeout", o.idle_timeout_ms);
    o.memory_budget = (size_t)opt_num(&cur, "--memory-budget", (long long)o.memory_budget);
    o.window_hours = (int)opt_num(&cur, "--window", o.window_hours);
    o.trusted_proxies = opt_str(&cur, "--trusted-proxies", NULL);
    o.access_log = opt_has(&cur, "--access-log");
    o.spool_dir = opt_str(&cur, "--spool", NULL);
    o.spool = o.spool_dir && *o.spool_dir;
    o.spool_fsync = (int)opt_num(&cur, "--spool-fsync", 0); /* record, interval, never */
    o.spool_max_bytes = opt_num(&cur, "--spool-max", 0);
    o.spool_device = opt_str(&cur, "--spool-device", NULL);
    const char *port_file = opt_str(&cur, "--port-file", NULL);
    if (!(ci = work_conninfo(sh->conn))) {
        errorf("out of memory");
        goto out;
    }
    o.conninfo = ci;
    int old_level = pgpipe_log_get_level();
    if (o.access_log && old_level > PGPIPE_LOG_INFO)
        pgpipe_log_set_level(PGPIPE_LOG_INFO);
    if (pgpipe_http_open(&h, &o) != PGPIPE_OK) {
        errorf(".serve: %s", h ? pgpipe_errmsg(h) : "out of memory");
        pgpipe_log_set_level(old_level);
        goto out;
    }
    /* the secrets are copied into the server: ours go now */
    serve_sources_free(&ss);
    /* the handlers first: a script may signal as soon as it reads the port */
    saved_signals sig;
    serve_stops = 0;
    serve_handle = h;
    signals_catch(&sig, on_serve_signal, 1, 1);
    int run = PGPIPE_OK;
    if (port_file && serve_port_file(port_file, pgpipe_http_port(h, 0)))
        run = -1;
    const char *p = run == PGPIPE_OK ? o.listen : "";
    for (int i = 0; *p; i++) {
        size_t n = strcspn(p, ",");
        const char *e = p + n, *colon = e;
        while (colon > p && colon[-1] != ':' && colon[-1] != ']')
            colon--;
        size_t hostlen = colon > p && colon[-1] == ':' ? (size_t)(colon - 1 - p) : n;
        fprintf(stderr, "serving on http://%.*s:%d\n", (int)hostlen, p, pgpipe_http_port(h, i));
        p = *e ? e + 1 : e;
    }
    fflush(stderr);
    if (run == PGPIPE_OK)
        run = pgpipe_http_run(h);
    signals_restore(&sig);
    serve_handle = NULL;
    pgpipe_log_set_level(old_level);
    if (run != PGPIPE_OK) {
        if (run > 0)
            print_error(pgpipe_errinfo(h));
        goto out;
    }
    fprintf(stderr, "pgpipe: .serve: drained and stopped\n");
    rc = 0;
out:
    pgpipe_http_close(h);
    serve_sources_free(&ss);
    free(ci);
    return rc;
}

/* ---- .spool: the store-and-forward spool (pgpipe.h, spool) ---------------- */
#ifndef PGPIPE_OMIT_SPOOL
static int ensure_connected(shell *sh);
static const optdef opts_spool_drain[] = {
    { "--source", NULL, OPT_TEXT, "NAME", 0, 0, "spool:DEVICE", "raw_events.source of the drained records",
      ".spool drain /var/lib/app/spool --source spool:gw-17" },
    { "--batch", NULL, OPT_INT, "N", 1, 1000000, "10000", "records per batch (transaction)",
      ".spool drain /var/lib/app/spool --batch 1000" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const optdef opts_spool_add[] = {
    { "--device", NULL, OPT_TEXT, "ID", 0, 0, "the host name", "the device id of a new spool",
      ".spool add /var/lib/app/spool readings.ndjson --device gw-17" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_spool[] = {
    { "check", "DIR", 1, 1, NULL, "inspect a spool offline: each segment whole or where it is damaged" },
    { "status", "DIR", 1, 1, NULL, "open the spool (recovering a torn tail) and show its size, age and counters" },
    { "add", "DIR FILE|-", 2, 2, opts_spool_add, "append each line of FILE (NDJSON) as one record" },
    { "drain", "DIR", 1, 1, opts_spool_drain, "send the spooled records to staging, exactly once, and delete them" },
    { NULL, NULL, 0, 0, NULL, NULL },
};

static void spool_check_line(void *ud, const pgpipe_spool_segment_info *in)
{
    FILE *out = ud;
    if (!in->header_ok)
        fprintf(out, "%s: damaged header, %lld bytes%s\n", in->path, in->bytes,
                in->quarantined ? " (quarantined)" : "");
    else if (in->bad_offset < 0)
        fprintf(out, "%s: whole, %lld records (%lld..%lld), %lld bytes, device %s%s\n", in->path,
                in->records, in->first_seq, in->last_seq, in->bytes, in->device_id,
                in->quarantined ? " (quarantined)" : "");
    else
        fprintf(out, "%s: %lld whole records, %lld damaged: %lld bytes from offset %lld, device %s%s\n",
                in->path, in->records, in->bad_records, in->bad_bytes, in->bad_offset, in->device_id,
                in->quarantined ? " (quarantined)" : "");
}

/* .health's line for the spool named by $PGPIPE_SPOOL_DIR (none: no line):
** its size and the age of its oldest record; WARN while it holds records */
static int spool_health(FILE *out)
{
    const char *dir = getenv("PGPIPE_SPOOL_DIR");
    if (!dir || !*dir)
        return 0;
    pgpipe_spool_status st;
    pgpipe_error err;
    if (pgpipe_spool_peek(dir, &st, &err) != PGPIPE_OK) {
        fprintf(out, "WARN  spool               %s: %s\n", dir, err.message);
        return 1;
    }
    fprintf(out, "%-5s spool               %lld records, %lld bytes, oldest %.0f s ago (%s)\n",
            st.records ? "WARN" : "ok", st.records, st.bytes, st.age_seconds, dir);
    return st.records > 0;
}

/* .spool add: every line of f must be JSON (the drain would dead-letter any
** other), checked before one is spooled, so a wrong file changes nothing.
** Returns what to read the records from: f again from where it was, or for
** stdin and other input that cannot seek, an unnamed temporary copy made
** while checking (the caller closes it); NULL after saying what is wrong. */
static FILE *spool_add_check(FILE *f, const char *file)
{
    FILE *copy = NULL;
    off_t start = ftello(f); /* where it is: stdin may be a script read so far */
    if (start < 0 && !(copy = tmpfile())) {
        errorf(".spool add: %s: a temporary copy: %s", file, strerror(errno));
        return NULL;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    long long lineno = 0;
    int bad = 0;
    while (!bad && (n = getline(&line, &cap, f)) > 0) {
        lineno++;
        if (copy && fwrite(line, 1, (size_t)n, copy) != (size_t)n) {
            errorf(".spool add: %s: a temporary copy: %s", file, strerror(errno));
            bad = 1;
            break;
        }
        while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            n--;
        pgpipe_error err;
        if (n && pgpipe_json_validate(line, (size_t)n, &err) != PGPIPE_OK) {
            char *at = strstr(err.message, " at line 1, column ");
            if (at)
                *at = '\0';
            errorf(".spool add: %s:%lld:%lld: %s (each line must be one JSON record; nothing was "
                   "spooled)", strcmp(file, "-") ? file : "<stdin>", lineno, err.column, err.message);
            bad = 1;
        }
    }
    free(line);
    if (!bad && ferror(f)) {
        errorf(".spool add: %s: %s", file, strerror(errno));
        bad = 1;
    }
    if (f == stdin)
        clearerr(stdin); /* an interactive shell reads on after Ctrl-D */
    FILE *from = copy ? copy : f;
    if (bad || fseeko(from, copy ? 0 : start, SEEK_SET) != 0) {
        if (!bad)
            errorf(".spool add: %s: %s", file, strerror(errno));
        if (copy)
            fclose(copy);
        return NULL;
    }
    return from;
}

/* .spool check DIR | status DIR | add DIR FILE | drain DIR; also `pgpipe spool check DIR` */
static int spool_command(FILE *out, PGconn *conn, const char *what, const char *dir, const char *file,
                         const char *device, const char *source, long long batch)
{
    if (!strcmp(what, "check")) {
        pgpipe_error err;
        pgpipe_error_clear(&err);
        int rc = pgpipe_spool_check(dir, spool_check_line, out, &err);
        if (rc == PGPIPE_OK)
            fprintf(out, "%s: every segment is whole\n", dir);
        else
            print_error(&err);
        return rc != PGPIPE_OK;
    }
    struct stat dst;
    if (strcmp(what, "add") && stat(dir, &dst) != 0) { /* status and drain make no spool */
        errorf(".spool %s: no spool at \"%s\": %s (.spool add makes one)", what, dir, strerror(errno));
        return 1;
    }
    FILE *in = NULL, *f = NULL; /* .spool add: the input, and what the records are read from */
    if (!strcmp(what, "add")) {
        in = strcmp(file, "-") ? fopen(file, "r") : stdin;
        if (!in) {
            errorf(".spool add: %s: %s", file, strerror(errno));
            return 1;
        }
        f = spool_add_check(in, file);
        if (in != stdin && in != f)
            fclose(in);
        if (!f)
            return 1;
    }
    pgpipe_spool_options so;
    pgpipe_spool_options_init(&so);
    so.device_id = device;
    pgpipe_spool *s = NULL;
    int rc = pgpipe_spool_open(&s, dir, &so);
    if (rc == PGPIPE_OK && !strcmp(what, "add")) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        long long added = 0, seq = 0;
        while (rc == PGPIPE_OK && (n = getline(&line, &cap, f)) > 0) {
            while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                n--;
            if (n && (rc = pgpipe_spool_append(s, line, (size_t)n, &seq)) == PGPIPE_OK)
                added++;
        }
        free(line);
        if (rc == PGPIPE_OK)
            rc = pgpipe_spool_sync(s);
        if (rc == PGPIPE_OK)
            fprintf(out, "spooled %lld record%s (last sequence %lld)\n", added, added == 1 ? "" : "s", seq);
    } else if (rc == PGPIPE_OK && !strcmp(what, "drain")) {
        pgpipe_loader_options lo;
        pgpipe_loader_options_init(&lo);
        lo.conn = conn;
        lo.source_name = source;
        if (batch > 0)
            lo.batch_rows = (int)batch;
        pgpipe_spool_drain_result r;
        rc = pgpipe_spool_drain(s, &lo, &r);
        fprintf(out, "drained %lld segment%s: %lld records, %lld loaded, %lld already loaded, %lld "
                "dead-lettered, %lld segment%s quarantined\n", r.segments, r.segments == 1 ? "" : "s",
                r.records, r.loaded, r.skipped, r.dead, r.quarantined, r.quarantined == 1 ? "" : "s");
    }
    if (rc == PGPIPE_OK) {
        pgpipe_spool_status st;
        pgpipe_spool_stats(s, &st);
        fprintf(out, "spool %s: %lld records in %lld segment%s, %lld bytes, oldest %.0f s ago; next "
                "sequence %lld%s\n", dir, st.records, st.segments, st.segments == 1 ? "" : "s", st.bytes,
                st.age_seconds, st.next_seq, st.quarantined ? ", a damaged segment was quarantined" : "");
        if (st.recovered_offset >= 0)
            fprintf(out, "recovery dropped %lld damaged record%s: %lld bytes from offset %lld\n",
                    st.recovered_records, st.recovered_records == 1 ? "" : "s", st.recovered_bytes,
                    st.recovered_offset);
    } else {
        print_error(pgpipe_errinfo(s));
    }
    pgpipe_spool_close(s);
    if (f && f != stdin)
        fclose(f);
    return rc != PGPIPE_OK;
}

static int cmd_spool(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    if (!strcmp(cur.sub, "drain") && ensure_connected(sh))
        return 1;
    return spool_command(sh->out, sh->conn, cur.sub, cur.pos[0], cur.npos > 1 ? cur.pos[1] : NULL,
                         opt_str(&cur, "--device", NULL), opt_str(&cur, "--source", NULL),
                         opt_num(&cur, "--batch", 0));
}

#define SPOOL_USAGE "usage: pgpipe spool check|status DIR | add DIR FILE|- [--device ID] | " \
    "drain DIR [--db CONNINFO] [--source NAME] [--batch N]\n"
/* pgpipe spool ...: the .spool commands as a program (check, status and add need no server) */
static int spool_main(int argc, char **argv)
{
    const char *pos[3] = { NULL, NULL, NULL }, *device = NULL, *source = NULL, *db = "";
    long long batch = 0;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--device") || !strcmp(a, "--source") || !strcmp(a, "--db") || !strcmp(a, "--batch")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "pgpipe spool: %s needs a value\n" SPOOL_USAGE, a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--device"))
                device = v;
            else if (!strcmp(a, "--source"))
                source = v;
            else if (!strcmp(a, "--db"))
                db = v;
            else if ((batch = atoll(v)) < 1 || batch > 1000000) {
                fprintf(stderr, "pgpipe spool: --batch: 1 to 1000000\n");
                return 2;
            }
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(SPOOL_USAGE
                  "The store-and-forward spool, without the shell (.help spool says more):\n"
                  "  check DIR        inspect it offline: each segment whole, or where it is\n"
                  "                   damaged\n"
                  "  status DIR       open it (a torn tail is cut off and reported): size, age\n"
                  "  add DIR FILE|-   append each line of an NDJSON FILE (or stdin) as a record\n"
                  "  drain DIR        send the records to staging.raw_events, each exactly once,\n"
                  "                   and delete them\n"
                  "check, status and add need no server; drain connects to --db (default: the\n"
                  "PG* variables).\n", stdout);
            return 0;
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "pgpipe spool: unknown option %s\n" SPOOL_USAGE, a);
            return 2;
        } else if (npos < 3) {
            pos[npos++] = a;
        } else {
            npos = 4;
        }
    }
    int want = !pos[0] ? -1 : !strcmp(pos[0], "add") ? 3
             : !strcmp(pos[0], "check") || !strcmp(pos[0], "status") || !strcmp(pos[0], "drain") ? 2 : -1;
    if (npos != want) {
        fprintf(stderr, SPOOL_USAGE);
        return 2;
    }
    PGconn *conn = NULL;
    if (!strcmp(pos[0], "drain")) {
        conn = PQconnectdb(db);
        if (PQstatus(conn) != CONNECTION_OK) {
            fprintf(stderr, "pgpipe spool drain: cannot connect: %s", PQerrorMessage(conn));
            PQfinish(conn);
            return 1;
        }
    }
    int rc = spool_command(stdout, conn, pos[0], pos[1], pos[2], device, source, batch);
    PQfinish(conn);
    return rc;
}
#endif

static const optdef opts_help[] = {
    { "--options", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "only the option names of COMMAND, one per line (for scripts)",
      ".help --options load" },
    { "--check-examples", NULL, OPT_FLAG, NULL, 0, 0, NULL,
      "check the example of every option of every command (or of COMMAND): it is a line of its "
      "command naming the option, and that command's own parser takes it (nothing runs)",
      ".help --check-examples" },
    { NULL, NULL, 0, NULL, 0, 0, NULL, NULL, NULL },
};
static const argspec spec_help[] = { { NULL, "[COMMAND]", 0, 1, opts_help,
                                        "list the commands, or explain one with all its options" } };

static const command commands[] = {
    { "cdc", ".cdc start|status|stop [options]",
      "change data capture: the row changes of another PostgreSQL database (logical\n"
      "replication, pgoutput) as events in staging.raw_events: source = the slot, event_type\n"
      "= schema.table:insert|update|delete|truncate, payload = the row as JSON with the old\n"
      "key, LSN and commit time. Exactly once: a transaction's events commit with its LSN\n"
      "(pgpipe.cdc_slots), and the source hears of it only after that commit. start creates\n"
      "or adopts the publication and slot (it refuses a source without wal_level = logical or\n"
      "a role without REPLICATION, naming the setting) and streams until Ctrl-C; status shows\n"
      "the applied LSN and, with --source, the slot's lag and retained WAL; stop drops the\n"
      "slot so the source keeps no WAL for it. Set max_slot_wal_keep_size on the source.",
      cmd_cdc, spec_cdc, 0 },
    { "changes", ".changes on|off", "after each INSERT, UPDATE, DELETE, MERGE or COPY: the rows it\n"
      "changed and the total so far (sqlite3's .changes)", cmd_changes, spec_changes, 0 },
    { "connect", ".connect [CONNINFO|DBNAME]",
      "open a new connection (a conninfo, or another database with the current settings;\n"
      "none: the same again) and switch to it; when it fails the shell keeps the one it has",
      cmd_connect, spec_connect, 1 },
    { "conninfo", ".conninfo", "show the database, user and host of the connection, or that it was lost", cmd_conninfo,
      spec_conninfo, 0 },
    { "dlq", ".dlq [list|show ID|counts|stats|replay|purge] [options]",
      "the dead-letter queue (pgpipe.dead_letters). Without a sub-command: list.\n"
      "replay validates each dead letter again: stage 'process' sets the staging row back to\n"
      "unprocessed; stage 'load' goes through the checks and the field mapping its load used\n"
      "(--source, --event-type-field, --require, ...) and lands with the load's source; one\n"
      "that still fails stays dead-lettered (attempt_count + 1, the new error) and is counted\n"
      "as refused. purge deletes (status dead unless --status or --all).", cmd_dlq, spec_dlq, 0 },
    { "dump", ".dump [TABLE]",
      "the rows of every table (or of the tables LIKE TABLE) as INSERT statements, as pg_dump\n"
      "--data-only --inserts writes them (the schema: .schema, or pg_dump). Partitions are\n"
      "dumped under their own names; a generated column is written DEFAULT. One snapshot for\n"
      "every table; tables in foreign-key order; the sequences' values (setval) at the end.",
      cmd_dump, spec_dump, 0 },
    { "exit", ".exit", "leave the shell", cmd_quit, spec_quit, 0 },
    { "explain", ".explain SQL",
      "run EXPLAIN (ANALYZE, BUFFERS) on SQL and point out sequential scans of large tables\n"
      "and row estimates far from the actual counts. The statement runs inside a transaction\n"
      "(a savepoint inside yours) that is rolled back: .explain never changes data. (SQL typed\n"
      "as EXPLAIN ANALYZE ... executes, as in psql.)", cmd_explain, spec_explain, 1 },
    { "export", ".export \"QUERY\" FILE [--format csv|ndjson]",
      "write the rows of QUERY to FILE (- for stdout) through COPY TO STDOUT; quote a QUERY\n"
      "that has blanks. The file is written only when the query runs.", cmd_export, spec_export, 0 },
    { "headers", ".headers on|off", "print the column names over the rows (default on)", cmd_headers,
      spec_onoff_headers, 0 },
    { "health", ".health",
      "cache hit ratio against the 95% target, unprocessed backlog and the age of its\n"
      "oldest event, dead letters and their growth, partitions ahead, connections; with\n"
      "$PGPIPE_SPOOL_DIR the spool's records, bytes and oldest record's age (also when the\n"
      "connection was lost)", cmd_health,
      spec_health, 0 },
    { "help", ".help [COMMAND]", "list the commands, or explain one with all its options, each with an\n"
      "example (a line that the command's parser takes: --check-examples checks them all)", cmd_help,
      spec_help, 0 },
    { "import", ".import FILE TABLE [--map CSVNAME=COLUMN,...]",
      "load a CSV file whose first line names the columns into TABLE with COPY. A missing\n"
      "TABLE is created from the header (text columns); an existing one takes the columns by\n"
      "header name, and --map names the column of a header name that differs.", cmd_import,
      spec_import, 0 },
    { "indexes", ".indexes [TABLE]", "the indexes, of the tables LIKE TABLE when given", cmd_indexes,
      spec_indexes, 0 },
    { "install", ".install [--example]",
      "install (or update) the built-in schema; --example adds the three-layer example\n"
      "pipeline (staging, production, analytics). Idempotent. The server's NOTICEs go to\n"
      "the log (.log notice shows them).", cmd_install, spec_install, 0 },
    { "listen", ".listen CHANNEL [--count N] [--timeout SECONDS]",
      "LISTEN on CHANNEL and print notifications as they arrive (Ctrl-C stops)", cmd_listen,
      spec_listen, 0 },
    { "load", ".load FILE|- [options]",
      "load CSV, NDJSON or a JSON array into staging.raw_events (or T) with the COPY loader:\n"
      "validated, batched, bad records to pgpipe.dead_letters, resumable (the same file again\n"
      "skips what was committed). Batches a failover lost are loaded again from the file (else\n"
      "the load fails naming them). Ctrl-C cancels the statements in flight, even a COMMIT\n"
      "stuck waiting for a synchronous standby, and says what is committed.", cmd_load, spec_load, 0 },
    { "log", ".log [debug|info|notice|warn|error|off]",
      "show or set what of pgpipe's log reaches stderr (default warn, or $PGPIPE_LOG). notice\n"
      "(the same as info) also shows the server NOTICEs of pgpipe's own schema installs\n"
      "(.install, .migrate, the install at .load); NOTICEs of your own SQL are always shown.",
      cmd_log, spec_log, 0 },
    { "migrate", ".migrate [DIR] [--status|--dry-run|--baseline V|--repair|--resume-from N|--redo N]",
      "apply the migrations in DIR (default ./migrations): V<version>__<name>.sql once each,\n"
      "in version order, then changed R__<name>.sql. A no-transaction file cut off while a\n"
      "statement ran outside a transaction stops the next runs, naming the statement: check\n"
      "what it did, then --resume-from N (the statement after it) or --redo N (it again).",
      cmd_migrate, spec_migrate, 0 },
    { "mode", ".mode [aligned|csv|json|line]", "set how query results are printed", cmd_mode,
      spec_mode, 0 },
    { "nullvalue", ".nullvalue TEXT", "show NULL as TEXT (as \\pset null)", cmd_nullvalue,
      spec_nullvalue, 0 },
    { "once", ".once FILE", "send the output of the next command only to FILE", cmd_once, spec_once, 0 },
    { "output", ".output [FILE|'|COMMAND']",
      "send the output to FILE, or to COMMAND's input; none (or stdout): back to the\n"
      "terminal (as \\o)", cmd_output, spec_output, 0 },
    { "partitions", ".partitions [list|ahead DAYS|retain DAYS [--detach-only]]",
      "list the daily partitions of staging.raw_events, create them DAYS ahead, or drop\n"
      "(or detach) those older than DAYS", cmd_partitions, spec_partitions, 0 },
    { "pull", ".pull URL --source NAME [options]",
      "pull the pages of an HTTP(S) JSON API into staging.raw_events (source = --source,\n"
      "event_type = --event-type-field, --event-type or the stream, payload = the record).\n"
      "Each page commits with the stream's cursor (pgpipe.pull_state): a run stopped or\n"
      "killed anywhere resumes at the next page, none skipped or loaded twice; the next run\n"
      "starts from the incremental cursor. Bad records go to the dead letters with the URL\n"
      "and their position; a cursor or Link that repeats or goes backwards, or a total that\n"
      "disagrees, is an error naming the page. 429/503 Retry-After, X-RateLimit-* and\n"
      "backoff with jitter on 5xx and network errors within --retry-budget. Secrets come\n"
      "from --token-env/--token-file (basic, API key alike), never as values; they are\n"
      "masked in every message. --concurrency N: up to N requests in flight (next pages\n"
      "fetched while pages are written, up to 4 written side by side, committed in page\n"
      "order). Progress on stderr; Ctrl-C stops, rolling back the pages not committed.\n"
      "Needs a shell built with libcurl.", cmd_pull, spec_pull, 0 },
    { "quit", ".quit", "leave the shell (also .exit, Ctrl-D)", cmd_quit, spec_quit, 0 },
    { "read", ".read FILE", "run the SQL and dot commands in FILE", cmd_read, spec_read, 0 },
    { "records", ".records COLLECTION create JSON|get ID|find FILTER|import FILE|export FILE",
      "the record store: JSON documents in the table records.COLLECTION (made on first use).\n"
      "JSON and FILTER are the rest of the line (no quoting needed). FILTER:\n"
      "  name = \"Alice\" and age > 30 and tags contains [\"x\"]\n"
      "  and address.city in [\"Paris\"]\n"
      "operators = != < <= > >= in exists contains like ilike; paths a.b, \"key.with.dot\",\n"
      "@metadata.KEY; numbers compare numerically (also \"10\" > \"9\"), other values as text.\n"
      "import reports bad records with file:line:column and skips them.", cmd_records,
      spec_records, 1 },
    { "refresh", ".refresh VIEW [--concurrently]",
      "REFRESH MATERIALIZED VIEW (CONCURRENTLY needs a unique index on the view)", cmd_refresh,
      spec_refresh, 0 },
    { "run", ".run FILE [--for DURATION] [--instance NAME] [--on-alert CMD] | .run --check FILE",
      "run a pipeline file on this connection until Ctrl-C or SIGTERM (they drain it; SIGHUP\n"
      "reloads the file), or with --check validate it without touching the database: one\n"
      "FILE:LINE: message per problem, or a summary. The format: README, pgpipe.h (run_file).\n"
      "As a service: pgpipe run --db CONNINFO PIPELINE.",
      cmd_run, spec_run, 0 },
    { "runs", ".runs [NAME] [--pipeline P] [--status S] [--since TIME] [--limit N]",
      "the pipeline runner's history (pgpipe.run_history): one row per schedule firing and\n"
      "task run, newest first: pipeline, kind, name, slot (when it was due), started_at,\n"
      "finished_at, status (ok failed skipped missed lost timeout), attempts, rows, error,\n"
      "instance.", cmd_runs, spec_runs, 0 },
    { "schema", ".schema [PATTERN]",
      "the CREATE statements of the tables and views LIKE PATTERN (all without one): columns,\n"
      "constraints, indexes", cmd_schema, spec_schema, 0 },
    { "serve", ".serve [options] | .serve token add|list|revoke ...",
      "the HTTP ingest server: POST /v1/events/{source} with one JSON object, a JSON array,\n"
      "NDJSON (application/x-ndjson) or CSV (text/csv) goes into staging.raw_events and is\n"
      "answered 202 only after its records are committed (group commit); bad records go to\n"
      "the dead-letter queue. GET /healthz, /readyz, /metrics. Who may write: a bearer token\n"
      "(.serve token add SOURCE prints one; only its SHA-256 is stored) or, for a source with\n"
      "signature=, the sender's HMAC-SHA256 signature (GitHub X-Hub-Signature-256, Stripe\n"
      "Stripe-Signature, Standard Webhooks). Missing or malformed credentials or a stale\n"
      "signed timestamp: 401; a token or signature that is not valid: 403; nothing is written.\n"
      "Prints \"serving on http://ADDR:PORT\" per address on stderr. SIGTERM or Ctrl-C drains\n"
      "(the requests in flight are answered after their commit) and ends with status 0; a\n"
      "second one stops at once. SIGHUP reloads the tokens. TLS: put nginx in front\n"
      "(tool/nginx/pgpipe-http.conf) and name it in --trusted-proxies.", cmd_serve, spec_serve, 0 },
#ifndef PGPIPE_OMIT_SPOOL
    { "spool", ".spool check|status|add|drain DIR [FILE] [options]",
      "the store-and-forward spool (a folder of segment files; pgpipe.h, spool): check inspects\n"
      "it offline (also `pgpipe spool check DIR`): each segment whole, or the offset and bytes\n"
      "that are damaged; status opens it (a torn tail is cut off and reported) and shows its\n"
      "size and age (status and drain need the spool to exist); add appends each line of an\n"
      "NDJSON FILE, all checked as JSON first (a bad line: FILE:LINE:COLUMN, nothing\n"
      "spooled); drain sends the records to\n"
      "staging.raw_events on this connection, each exactly once even after a crash, and\n"
      "deletes them. A damaged segment is quarantined (DIR/quarantine) and the rest drains.",
      cmd_spool, spec_spool, 0 },
#endif
    { "stats", ".stats",
      "events in staging by type (pending, retrying, oldest pending), the last loads,\n"
      "and dead letters by stage and status", cmd_stats, spec_stats, 0 },
    { "status", ".status",
      "the pipeline in one line: the backlog, its oldest event, what arrived and what was\n"
      "processed in the last minute, the workers holding leases, the dead letters and their\n"
      "growth. \\watch 2 after it runs it every 2 seconds; .top shows more.", cmd_status,
      spec_status, 0 },
    { "tables", ".tables [PATTERN]", "the tables and views (LIKE PATTERN), in columns as sqlite3 lists them;\n"
      "schema-qualified when not on the search path", cmd_tables, spec_tables, 0 },
    { "timer", ".timer on|off", "print the time each statement takes", cmd_timer, spec_timer, 0 },
    { "top", ".top [--interval SECONDS] [--count N]",
      "a live view of the pipeline, redrawn every --interval seconds until q (or Ctrl-C): per\n"
      "event type the backlog, the age of its oldest pending event, what arrived and what was\n"
      "processed in the last minute and the workers holding leases; the dead letters' growth\n"
      "by error. ANSI only (any terminal, over SSH); not on a terminal, one line per refresh.",
      cmd_top, spec_top, 0 },
    { "version", ".version", "show the pgpipe, libpq and server versions", cmd_version, spec_version, 0 },
    { "work", ".work [N] --sql \"SQL\"|FILE | --mark [options]",
      "process staging.raw_events with N SKIP LOCKED workers until Ctrl-C (or --until-empty),\n"
      "with one handler: --sql or --mark. Behind a transaction-mode pooler (pgbouncer; see\n"
      "pgpipe --pooler, $PGPIPE_POOLER) NOTIFY cannot wake them: they poll every --poll MS.\n"
      "Ctrl-C cancels the statements in flight (even a COMMIT stuck waiting for a synchronous\n"
      "standby) and says what is committed; the exit status is then non-zero when work was in\n"
      "flight or --until-empty had not finished.",
      cmd_work, spec_work, 0 },
    { NULL, NULL, NULL, NULL, NULL, 0 },
};

static const command *find_command(const char *name)
{
    if (name[0] == '.')
        name++;
    for (const command *c = commands; c->name; c++)
        if (!strcmp(c->name, name))
            return c;
    return NULL;
}

static int cmd_help(shell *sh, char **argv, int argc, const char *rest)
{
    (void)argv, (void)argc, (void)rest;
    if (opt_has(&cur, "--check-examples")) {
        const command *only = cur.npos ? find_command(cur.pos[0]) : NULL;
        if (opt_has(&cur, "--options")) {
            errorf(".help: --check-examples does not go with --options");
            return 1;
        }
        if (cur.npos && !only) {
            errorf(".help: no command %s%s (try .help)", cur.pos[0][0] == '.' ? "" : ".", cur.pos[0]);
            return 1;
        }
        return check_examples(sh, only);
    }
    if (cur.npos) {
        const command *c = find_command(cur.pos[0]);
        if (!c) {
            errorf(".help: no command %s%s (try .help)", cur.pos[0][0] == '.' ? "" : ".", cur.pos[0]);
            return 1;
        }
        const argspec *sp = c->spec;
        if (opt_has(&cur, "--options")) {
            for (int k = 0; sp && (k == 0 || sp[k].sub); k++) {
                const char *sub = sp[k].sub ? sp[k].sub : "", *gap = *sub ? " " : "";
                for (const optdef *d = sp[k].opts; d && d->name; d++) {
                    fprintf(sh->out, "%s%s%s\n", sub, gap, d->name);
                    if (d->alias)
                        fprintf(sh->out, "%s%s%s\n", sub, gap, d->alias);
                }
                if (!sp[k].sub)
                    break;
            }
            return 0;
        }
        if (!sp) {
            fprintf(sh->out, "%s\n\n%s\n", c->usage, c->help);
            return 0;
        }
        for (int k = 0; k == 0 || sp[k].sub; k++) {
            print_usage(sh->out, c->name, &sp[k]);
            if (!sp[k].sub)
                break;
        }
        /* the description reflowed to the width: a line break stays only
        ** before an indented line */
        char *text = strdup(c->help);
        if (text) {
            int indented = text[0] == ' ';
            for (char *q = text; *q; q++)
                if (*q == '\n') {
                    if (q[1] != ' ' && !indented)
                        *q = ' ';
                    indented = q[1] == ' ';
                }
            int col = 0;
            fputc('\n', sh->out);
            put_wrapped(sh->out, text, &col, 0, 79);
            fputc('\n', sh->out);
            free(text);
        }
        for (int k = 0; k == 0 || sp[k].sub; k++) {
            if (sp[k].sub) {
                int coll = sp[k].args && !strncmp(sp[k].args, "COLLECTION", 10);
                char head[512];
                snprintf(head, sizeof head, ".%s%s%s%s%s%s: %s", c->name, *sp[k].sub ? " " : "",
                         coll ? "COLLECTION " : "", sp[k].sub, sp[k].args ? " " : "",
                         sp[k].args ? sp[k].args + (coll ? 11 : 0) : "", sp[k].summary);
                int col = 0;
                fputc('\n', sh->out);
                put_wrapped(sh->out, head, &col, 4, 79);
                fputc('\n', sh->out);
                print_options(sh->out, &sp[k]);
            } else if (sp[k].opts) {
                fprintf(sh->out, "\noptions:\n");
                print_options(sh->out, &sp[k]);
            }
            if (!sp[k].sub)
                break;
        }
        return 0;
    }
    for (const command *c = commands; c->name; c++) {
        const argspec *sp = c->spec;
        int col = 4;
        if (!sp) {
            fprintf(sh->out, "%s\n", c->usage);
        } else {
            for (int k = 0; k == 0 || sp[k].sub; k++) {
                print_usage(sh->out, c->name, &sp[k]);
                if (!sp[k].sub)
                    break;
            }
        }
        const char *nl = strchr(c->help, '\n');
        char summary[256];
        snprintf(summary, sizeof summary, "%.*s", nl ? (int)(nl - c->help) : (int)strlen(c->help),
                 c->help);
        if (sp && !sp[0].sub && sp[0].summary)
            snprintf(summary, sizeof summary, "%s", sp[0].summary);
        else if (sp && sp[0].sub)
            snprintf(summary, sizeof summary, "%s", c->name[0] == 'd' ? "the dead-letter queue" :
                     c->name[0] == 'p' ? "the daily partitions of staging.raw_events" :
                     c->name[0] == 's' ? "the HTTP ingest server and its tokens" :
                     "the record store: JSON documents in records.COLLECTION");
        fputs("    ", sh->out);
        put_wrapped(sh->out, summary, &col, 4, 79);
        fputc('\n', sh->out);
    }
    fprintf(sh->out, "\nSQL ended by ';' is sent to the server as typed.\n"
                     ".help COMMAND explains one, with all its options; \\? lists psql's\n"
                     "backslash commands, and every dot command runs as \\NAME too.\n");
    return 0;
}

/* Checks a dot command's words against its spec (the sub-command's, when
** it has them) into cur: 0, or 1 with one error line. */
static int parse_checked(const command *c, char **argv, int argc)
{
    const argspec *sp = c->spec;
    char name[64];
    int first = 1;
    snprintf(name, sizeof name, ".%s", c->name);
    if (sp[0].sub) {
        const argspec *pick = &sp[0];
        if (argc > 1 && argv[1][0] != '-') {
            pick = NULL;
            for (int k = 0; sp[k].sub; k++)
                if (*sp[k].sub && !strcmp(sp[k].sub, argv[1]))
                    pick = &sp[k];
            if (!pick) {
                char list[160] = "";
                for (int k = 0; sp[k].sub; k++)
                    if (*sp[k].sub) /* the unnamed default has no name to give */
                        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                                 *list ? (sp[k + 1].sub ? ", " : " or ") : "", sp[k].sub);
                errorf("%s: unknown sub-command \"%s\" (%s)", name, argv[1], list);
                return 1;
            }
            first = 2;
        }
        snprintf(name, sizeof name, ".%s%s%s", c->name, *pick->sub ? " " : "", pick->sub);
        sp = pick;
    }
    if (opt_parse(&cur, name, sp, argv + first, argc - first))
        return 1;
    cur.sub = sp->sub;
    return 0;
}

/* Checks a dot command's words against its spec, then runs it. */
static int run_checked(shell *sh, const command *c, char **argv, int argc, const char *rest)
{
    if (!c->spec || c->self)
        return c->fn(sh, argv, argc, rest);
    if (parse_checked(c, argv, argc))
        return 1;
    return c->fn(sh, argv, argc, rest);
}

/* The example of option row k of table (a table of command c): a line of c
** that c's own parser takes (nothing runs), with this very option in it, and
** parsed with the table the row is in (not another sub-command's). 0, or 1
** with the problem in why. */
static int check_example(shell *sh, const command *c, const optdef *table, int k, char *why,
                         size_t size)
{
    const optdef *d = &table[k];
    if (!d->ex || !*d->ex) {
        snprintf(why, size, "no example");
        return 1;
    }
    char want[64], err[1024] = "";
    snprintf(want, sizeof want, ".%s", c->name);
    size_t wl = strlen(want);
    if (strncmp(d->ex, want, wl) || (d->ex[wl] && d->ex[wl] != ' ')) {
        snprintf(why, size, "example \"%s\" fails: it is not a line of %s", d->ex, want);
        return 1;
    }
    if (c->self && c->fn != cmd_records) { /* it would run: only .records can parse alone */
        snprintf(why, size, "example \"%s\" cannot be checked: %s parses its own line as it runs",
                 d->ex, want);
        return 1;
    }
    char *copy = strdup(d->ex);
    if (!copy) {
        snprintf(why, size, "out of memory");
        return 1;
    }
    char *argv[64];
    int argc = split_words(copy, argv, 64), bad;
    error_capture = err;
    error_capture_size = sizeof err;
    examples_checking = 1;
    if (argc < 0)
        bad = 1, snprintf(err, sizeof err, "%s: %s", want,
                          argc == -1 ? "too many arguments" : "a quote is not closed");
    else if (c->self)
        bad = cmd_records(sh, argv, argc, d->ex + wl);
    else
        bad = parse_checked(c, argv, argc);
    examples_checking = 0;
    error_capture = NULL;
    int rc = 1;
    if (bad) {
        snprintf(why, size, "example \"%s\" fails: %s", d->ex, *err ? err : "(no message)");
    } else if (cur.defs != table) {
        snprintf(why, size, "example \"%s\" is a line of %s, whose options are not these", d->ex,
                 cur.cmd);
    } else if (!cur.val[k]) {
        snprintf(why, size, "example \"%s\" does not give %s", d->ex, d->name);
    } else {
        rc = 0;
    }
    opt_reset(&cur);
    free(copy);
    return rc;
}

/* .help --check-examples [COMMAND]: check_example on every option row of
** every command (or of COMMAND), each table once. One error line per row
** that fails, then 1; else a summary and 0. */
static int check_examples(shell *sh, const command *only)
{
    int rows = 0, cmds = 0, failed = 0;
    for (const command *c = commands; c->name; c++) {
        if (only && c != only)
            continue;
        const argspec *sp = c->spec;
        int any = 0;
        for (int s = 0; sp && (s == 0 || sp[s].sub); s++) {
            int seen = 0; /* .dlq stats has the table of .dlq counts */
            for (int t = 0; t < s; t++)
                seen |= sp[t].opts == sp[s].opts;
            for (int k = 0; !seen && sp[s].opts && sp[s].opts[k].name; k++) {
                char why[2048];
                rows++;
                any = 1;
                if (check_example(sh, c, sp[s].opts, k, why, sizeof why)) {
                    failed++;
                    errorf(".%s%s%s %s: %s", c->name, sp[s].sub && *sp[s].sub ? " " : "",
                           sp[s].sub ? sp[s].sub : "", sp[s].opts[k].name, why);
                }
            }
            if (!sp[s].sub)
                break;
        }
        cmds += any;
    }
    if (failed)
        return 1;
    if (only && !rows) {
        fprintf(sh->out, ".%s takes no options: no examples to check\n", only->name);
        return 0;
    }
    fprintf(sh->out, "%d example%s of %d command%s: each a line of its command, naming its option, "
                     "that the command's parser takes\n", rows, rows == 1 ? "" : "s", cmds,
            cmds == 1 ? "" : "s");
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
    char *argv[64];
    int argc = split_words(copy, argv, 64);
    int rc = 1;
    const char *name = argv[0] + 1;
    const command *found = NULL;
    for (const command *c = commands; c->name; c++)
        if (!strcmp(c->name, name))
            found = c;
    /* -1 promises one transaction: a command that commits on its own (its
    ** own connections, or transactions it begins and ends) would make part
    ** of the script stay when the rest is rolled back */
    static const char *const own_commits[] = { "cdc", "install", "load", "migrate", "pull",
                                               "records", "run", "serve", "spool", "work", NULL };
    for (int k = 0; found && sh->single && own_commits[k]; k++)
        if (!strcmp(name, own_commits[k])) {
            errorf(".%s commits on its own, so it cannot be part of -1's one transaction; run "
                   "it without -1", name);
            free(copy);
            return 1;
        }
    if (found && found->self) /* it reads the unsplit rest of the line */
        rc = found->fn(sh, argv, argc < 0 ? 1 : argc, rest);
    else if (argc < 0)
        errorf(".%s: %s", name, argc == -1 ? "too many arguments" : "a quote is not closed");
    else if (found)
        rc = run_checked(sh, found, argv, argc, rest);
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
    /* VERBOSITY and SHOW_CONTEXT hold for every connection (set again: a
    ** new one starts with libpq's defaults) */
    const char *vb = var_get(sh, "VERBOSITY", 9), *sc = var_get(sh, "SHOW_CONTEXT", 12);
    char *vbc = strdup(vb ? vb : "default"), *scc = strdup(sc ? sc : "errors");
    if (vbc)
        var_set(sh, "VERBOSITY", vbc);
    if (scc)
        var_set(sh, "SHOW_CONTEXT", scc);
    free(vbc);
    free(scc);
    /* psql's connection variables */
    char num[32];
    const char *host = PQhost(sh->conn), *ver = PQparameterStatus(sh->conn, "server_version");
    var_set(sh, "DBNAME", PQdb(sh->conn));
    var_set(sh, "USER", PQuser(sh->conn));
    var_set(sh, "HOST", host ? host : "");
    var_set(sh, "PORT", PQport(sh->conn));
    var_set(sh, "ENCODING", pg_encoding_to_char(PQclientEncoding(sh->conn)));
    var_set(sh, "SERVER_VERSION_NAME", ver ? ver : "");
    snprintf(num, sizeof num, "%d", PQserverVersion(sh->conn));
    var_set(sh, "SERVER_VERSION_NUM", num);
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
** tries again (ensure_connected). A script does not go on past a lost
** connection when a transaction was open (the server rolled it back: what
** follows would run outside it, each statement committed on its own), under
** -1, or when it stops at errors (ON_ERROR_STOP, -b): it ends with exit
** status 2, as psql's does. */
static void check_connection(shell *sh)
{
    if (!sh->conn || PQstatus(sh->conn) != CONNECTION_BAD || sh->lost)
        return;
    sh->lost = 1;
    int in_tx = sh->tx_open || sh->single;
    const char *oes = var_get(sh, "ON_ERROR_STOP", 13);
    if (!sh->interactive && (in_tx || sh->bail || (oes && parse_bool(oes) == 1))) {
        fprintf(stderr, "pgpipe: the connection to the server was lost%s; the script stops here\n",
                in_tx ? " inside a transaction (the server rolled it back)" : "");
        sh->script_fatal = 1;
        return;
    }
    if (in_tx)
        fprintf(stderr, "pgpipe: the transaction that was open is gone: the server rolled it "
                "back\n");
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
    if (sh->script_fatal)
        return 1;
    if (PQstatus(sh->conn) == CONNECTION_OK) {
        PGTransactionStatusType ts = PQtransactionStatus(sh->conn);
        sh->tx_open = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;
        return 0;
    }
    sh->tx_open = 0;
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
        /* a script does not go on against another database than the one
        ** it asked for: it stops, exit 2, as psql's */
        if (!sh->interactive) {
            fprintf(stderr, "pgpipe: the script stops here (its connection did not switch)\n");
            sh->script_fatal = 1;
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
                                         "conninfo", "read", "output", "once", "headers",
                                         "nullvalue", "changes", "spool", NULL };
    const char *name = line + 1;
    size_t n = strcspn(name, " \t");
    for (int i = 0; local[i]; i++)
        if (strlen(local[i]) == n && !strncmp(name, local[i], n))
            return 0;
    return 1;
}

/* ---- psql's backslash commands ------------------------------------------- */

static int run_buffer(shell *sh, const char *buf, size_t len, long long first_line, int at_eof,
                      int *rc);

/* \watch [i=]SECONDS [c=COUNT]: the query again every SECONDS (default 2)
** until Ctrl-C, or COUNT times; each run under a line naming the time. */
static int watch_query(shell *sh, const char *sql, const char *dot, char **argv, int argc)
{
    double every = 2;
    long count = -1;
    for (int k = 1; k < argc; k++) {
        const char *a = argv[k];
        char *end;
        if (!strncmp(a, "c=", 2) || !strncmp(a, "count=", 6)) {
            count = strtol(strchr(a, '=') + 1, &end, 10);
            if (*end || count < 1) {
                errorf("\\watch: %s: expected a positive count", a);
                return 1;
            }
            continue;
        }
        const char *v = !strncmp(a, "i=", 2) ? a + 2 : !strncmp(a, "interval=", 9) ? a + 9 : a;
        every = strtod(v, &end);
        if (*end || end == v || !(every >= 0 && every <= 86400 * 365.0)) { /* (and not NaN) */
            errorf("\\watch: %s: expected seconds (0 to a year)", a);
            return 1;
        }
    }
    if ((!sql || !*sql) && !dot) {
        errorf("\\watch cannot be used with an empty query");
        return 1;
    }
    interrupted = 0;
    for (long n = 0; count < 0 || n < count; n++) {
        char when[64];
        time_t now = time(NULL);
        strftime(when, sizeof when, "%c", localtime(&now));
        fprintf(sh->out, "%s (every %gs)\n\n", when, every);
        sh->watching = 1;
        int one = dot ? run_command(sh, dot) != 0 : run_user_sql(sh, sql, NULL, 0);
        sh->watching = 0;
        fputc('\n', sh->out);
        fflush(sh->out);
        if (one)
            return 1;
        if (interrupted || terminating || (count >= 0 && n + 1 >= count))
            break;
        struct timespec ts = { (time_t)every, (long)((every - (double)(time_t)every) * 1e9) };
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !interrupted && !terminating)
            ;
        if (interrupted || terminating)
            break;
    }
    interrupted = 0;
    return 0;
}

/* Runs SQL as \g, \gx or \gset do: once, with its result shown expanded or
** stored in variables. */
static int run_g(shell *sh, const char *name, const char *target, char **sql, size_t *len,
                 long long first_line)
{
    int rc = 0;
    const char *prefix = target ? target : "";
    if (!strcmp(name, "gx"))
        sh->gx = 1;
    if (!strcmp(name, "gset"))
        sh->gset = prefix;
    if (!strcmp(name, "g") && target && output_open(sh, "\\g", target)) {
        sh->failures++; /* the caller returns this rc uncounted */
        return 1;
    }
    if (!strcmp(name, "g") && target)
        sh->oncefile = sh->outfile;
    if (sql && *len) {
        char *grown = realloc(*sql, *len + 3);
        if (!grown)
            return 1;
        *sql = grown;
        memcpy(*sql + *len, ";\n", 3); /* as if it ended with ';' */
        run_buffer(sh, *sql, *len + 2, first_line, 1, &rc);
        *len = 0;
    } else if (sh->last_sql) {
        /* an empty buffer: the last query again, as in psql */
        char *again = strdup(sh->last_sql);
        rc = again ? run_user_sql(sh, again, NULL, 0) : 1;
        free(again);
        if (rc)
            sh->failures++;
    } else {
        errorf("\\%s: no query to run (type one first)", name);
        rc = 1;
        sh->failures++;
    }
    sh->gx = 0;
    sh->gset = NULL;
    return rc;
}

/* \pset OPTION [VALUE]: psql's output settings. */
static int pset(shell *sh, const char *opt, const char *val)
{
    if (!opt) {
        fprintf(sh->out, "border                   %d\nexpanded                 %s\nfieldsep                 '%s'\n"
                "footer                   %s\nformat                   %s\nnull                     '%s'\n"
                "pager                    %d\nrecordsep                '%s'\ntuples_only              %s\n",
                sh->border, sh->expanded == 2 ? "auto" : sh->expanded ? "on" : "off",
                sh->fieldsep ? sh->fieldsep : "|", sh->footer_off ? "off" : "on", mode_names[sh->mode],
                sh->nullstr ? sh->nullstr : "", sh->pager, sh->recordsep ? sh->recordsep : "\\n",
                sh->tuples_only ? "on" : "off");
        return 0;
    }
    int b = val ? parse_bool(val) : -1;
    if (val && b < 0 && strcmp(opt, "null") && strcmp(opt, "format") && strcmp(opt, "border") &&
        strcmp(opt, "fieldsep") && strcmp(opt, "recordsep") && strcmp(opt, "title") &&
        !(!strcmp(opt, "expanded") && !strcmp(val, "auto")) &&
        !(!strcmp(opt, "pager") && !strcmp(val, "always"))) {
        errorf("\\pset: %s: unrecognized value \"%s\"; use on or off", opt, val);
        return 1;
    }
    if (!strcmp(opt, "null")) {
        if (val && set_nullstr(sh, val))
            return 1;
        if (!sh->quiet)
            fprintf(sh->out, "Null display is \"%s\".\n", sh->nullstr ? sh->nullstr : "");
    } else if (!strcmp(opt, "border")) {
        if (val)
            sh->border = atoi(val) < 0 ? 0 : atoi(val) > 2 ? 2 : atoi(val);
        if (!sh->quiet)
            fprintf(sh->out, "Border style is %d.\n", sh->border);
    } else if (!strcmp(opt, "format")) {
        if (val) {
            long long k;
            if (parse_choice("\\pset format", "FORMAT", val, MODE_CHOICES, &k))
                return 1;
            sh->mode = (int)k;
        }
        if (!sh->quiet)
            fprintf(sh->out, "Output format is %s.\n", mode_names[sh->mode]);
    } else if (!strcmp(opt, "expanded") || !strcmp(opt, "x")) {
        sh->expanded = !val ? !sh->expanded : !strcmp(val, "auto") ? 2 : b;
        if (!sh->quiet)
            fprintf(sh->out, "Expanded display is %s.\n",
                    sh->expanded == 2 ? "used automatically" : sh->expanded ? "on" : "off");
    } else if (!strcmp(opt, "pager")) {
        sh->pager = !val ? !sh->pager : !strcmp(val, "always") ? 2 : b;
        if (!sh->quiet)
            fprintf(sh->out, "%s\n", sh->pager == 2 ? "Pager is always used." :
                    sh->pager ? "Pager is used for long output." : "Pager usage is off.");
    } else if (!strcmp(opt, "tuples_only") || !strcmp(opt, "t")) {
        sh->tuples_only = !val ? !sh->tuples_only : b;
        if (!sh->quiet)
            fprintf(sh->out, "%s\n", sh->tuples_only ? "Tuples only is on." : "Tuples only is off.");
    } else if (!strcmp(opt, "footer")) {
        sh->footer_off = !val ? !sh->footer_off : !b;
        if (!sh->quiet)
            fprintf(sh->out, "Default footer is %s.\n", sh->footer_off ? "off" : "on");
    } else if (!strcmp(opt, "fieldsep") || !strcmp(opt, "recordsep")) {
        char **slot = opt[0] == 'f' ? &sh->fieldsep : &sh->recordsep;
        if (val) {
            free(*slot);
            *slot = strdup(val);
        }
        if (!sh->quiet)
            fprintf(sh->out, "%s separator is \"%s\".\n", opt[0] == 'f' ? "Field" : "Record",
                    *slot ? *slot : opt[0] == 'f' ? "|" : "\\n");
    } else {
        errorf("\\pset: unknown option: %s (border, expanded, fieldsep, footer, format, null, "
               "pager, recordsep, tuples_only)", opt);
        return 1;
    }
    return 0;
}

/* \e: the buffer (or the last query) in $PSQL_EDITOR, $EDITOR or vi; what
** the editor leaves becomes the buffer (it runs when it ends with ';'). */
static int edit_buffer(shell *sh, char **sql, size_t *len)
{
    char path[] = "/tmp/pgpipe_edit_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        errorf("\\e: cannot make a temporary file: %s", strerror(errno));
        return 1;
    }
    const char *text = *len ? *sql : sh->last_sql ? sh->last_sql : "";
    size_t n = *len ? *len : strlen(text);
    if (write(fd, text, n) != (ssize_t)n) {
        close(fd);
        unlink(path);
        return 1;
    }
    close(fd);
    const char *editor = getenv("PSQL_EDITOR");
    if (!editor || !*editor)
        editor = getenv("EDITOR");
    if (!editor || !*editor)
        editor = "vi";
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "%s '%s'", editor, path);
    int st = system(cmd);
    FILE *f = fopen(path, "r");
    unlink(path);
    if (st != 0 || !f) {
        if (f)
            fclose(f);
        errorf("\\e: the editor (%s) failed", editor);
        return 1;
    }
    char *grown = NULL;
    size_t cap = 0, got = 0, r;
    char chunk[4096];
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
        char *g = realloc(grown, cap = got + r + 3);
        if (!g)
            break;
        grown = g;
        memcpy(grown + got, chunk, r);
        got += r;
    }
    fclose(f);
    free(*sql);
    *sql = grown;
    *len = got;
    if (grown) {
        while (*len && isspace((unsigned char)grown[*len - 1]))
            (*len)--;
        grown[(*len)++] = '\n';
        grown[*len] = '\0';
        fwrite(grown, 1, *len, stdout);
    }
    (void)cap;
    return 0;
}

/* \? : psql's backslash commands pgpipe has, then the dot commands. */
static const char backslash_help[] =
    "psql's backslash commands:\n"
    "  \\q                      quit\n"
    "  \\?                      this list, then the dot commands\n"
    "Query buffer (the statement being typed, else the last one run)\n"
    "  \\g [FILE]               run it (the result to FILE)\n"
    "  \\gx                     run it, the result expanded\n"
    "  \\gset [PREFIX]          run it, its one row into variables PREFIXcolumn\n"
    "  \\watch [i=]SEC [c=N]    run it every SEC seconds (N times; Ctrl-C stops)\n"
    "  \\e                      edit it in $PSQL_EDITOR or $EDITOR\n"
    "  \\ef FUNCTION[(TYPES)]   edit a function's CREATE statement in it\n"
    "  \\p  \\r                  show it, clear it\n"
    "  \\gdesc                  the names and types of its result, without running it\n"
    "  \\crosstabview [COLV [COLH [COLD [SORTCOLH]]]]  run it, its result as a grid\n"
    "Input and output\n"
    "  \\i FILE  \\ir FILE       run FILE (\\ir: relative to this script)\n"
    "  \\o [FILE|'|CMD']        send the output to FILE (none: the terminal again)\n"
    "  \\echo [-n] TEXT         print TEXT (\\qecho: to the \\o output; \\warn: to stderr)\n"
    "  \\! [COMMAND]            run COMMAND in a shell (none: an interactive shell)\n"
    "  \\cd [DIR]  \\setenv NAME [VALUE]  \\getenv VAR ENVVAR   the directory, the environment\n"
    "Conditionals (in scripts and at the prompt)\n"
    "  \\if EXPR  \\elif EXPR  \\else  \\endif\n"
    "Informational (+ adds sizes and descriptions, S system objects; PATTERN as\n"
    "psql's: [SCHEMA.]NAME with * and ?)\n"
    "  \\d [NAME]               the relations, or NAME in detail (columns, indexes,\n"
    "                          constraints, partitions, triggers)\n"
    "  \\dt \\di \\dv \\dm \\ds \\dE [PATTERN]  tables, indexes, views, materialized views,\n"
    "                          sequences, foreign tables (and mixes: \\dtv)\n"
    "  \\df \\dn \\du \\dx [PATTERN]  functions, schemas, roles, extensions\n"
    "  \\dp \\z \\dT \\dD [PATTERN]  privileges of tables (and their policies), data types,\n"
    "                          domains\n"
    "  \\sf[+] FUNCTION[(TYPES)]  a function's CREATE statement (+: lines numbered)\n"
    "  \\l [PATTERN]            databases\n"
    "Formatting\n"
    "  \\x [on|off|auto]  \\a  \\t [on|off]  \\f [SEP]  \\timing [on|off]\n"
    "  \\pset [border|expanded|fieldsep|footer|format|null|pager|recordsep|tuples_only [VALUE]]\n"
    "Connection and variables\n"
    "  \\c [DBNAME|CONNINFO]  \\conninfo  \\encoding [ENCODING]\n"
    "  \\set [NAME [VALUE]]  \\unset NAME   (:NAME, :'NAME', :\"NAME\" in SQL and commands)\n"
    "  \\prompt [TEXT] NAME     a line from the terminal (a script's: standard input) into NAME\n"
    "  \\password [USER]       change a password (asked twice, encrypted before it is sent)\n"
    "  \\errverbose            the last error again, with everything the server said\n"
    "  (VERBOSITY default|verbose|terse|sqlstate, SHOW_CONTEXT never|errors|always,\n"
    "  FETCH_COUNT N: a result's rows N at a time, a page at a time)\n"
    "Large objects\n"
    "  \\lo_import FILE [COMMENT]  \\lo_export OID FILE  \\lo_list[+]  \\lo_unlink OID\n"
    "  \\copy TABLE [(COLUMNS)] FROM 'FILE'|PROGRAM 'CMD'|STDIN|PSTDIN [WITH (OPTIONS)]\n"
    "  \\copy TABLE|(QUERY) TO 'FILE'|PROGRAM 'CMD'|STDOUT|PSTDOUT [WITH (OPTIONS)]\n"
    "  \\restrict KEY  \\unrestrict KEY   (as in pg_dump's plain dumps: until \\unrestrict, only SQL runs)\n"
    "Every dot command also runs as \\NAME (\\stats is .stats). The dot commands:\n\n";

/* \gdesc: the columns (names and types) the statement in the buffer (or the
** last one) would return, without running it: prepared, then described. */
static int run_gdesc(shell *sh, char **sql, size_t *len)
{
    char *q = sql && *len ? strndup(*sql, *len) : sh->last_sql ? strdup(sh->last_sql) : NULL;
    if (sql && *len)
        *len = 0;
    if (!q) {
        errorf("\\gdesc: no query to describe (type one first)");
        return 1;
    }
    size_t n = strlen(q);
    while (n && (isspace((unsigned char)q[n - 1]) || q[n - 1] == ';'))
        q[--n] = '\0';
    free(sh->last_sql);
    sh->last_sql = strdup(q);
    if (ensure_connected(sh)) {
        free(q);
        return 1;
    }
    PGresult *r = PQprepare(sh->conn, "", q, 0, NULL);
    free(q);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        report_pq_error(r, sh->conn);
        PQclear(r);
        return 1;
    }
    PQclear(r);
    r = PQdescribePrepared(sh->conn, "");
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        report_pq_error(r, sh->conn);
        PQclear(r);
        return 1;
    }
    int nf = PQnfields(r), rc = 0;
    if (nf == 0) {
        fprintf(sh->out, "The command has no result, or the result has no columns.\n");
    } else {
        /* the names as literals, the types named by the server */
        size_t cap = 128;
        for (int i = 0; i < nf; i++)
            cap += 2 * strlen(PQfname(r, i)) + 64;
        char *d = malloc(cap);
        if (!d) {
            PQclear(r);
            return 1;
        }
        size_t o = (size_t)sprintf(d, "SELECT \"Column\", format_type(t, m) AS \"Type\" FROM (VALUES ");
        for (int i = 0; i < nf; i++) {
            char *lit = PQescapeLiteral(sh->conn, PQfname(r, i), strlen(PQfname(r, i)));
            if (!lit) {
                free(d);
                PQclear(r);
                return 1;
            }
            o += (size_t)sprintf(d + o, "%s(%d, %s, %u::oid, %d)", i ? ", " : "", i, lit,
                                 PQftype(r, i), PQfmod(r, i));
            PQfreemem(lit);
        }
        sprintf(d + o, ") AS v(k, \"Column\", t, m) ORDER BY k");
        rc = run_sql(sh, d);
        free(d);
    }
    PQclear(r);
    return rc;
}

/* A function's CREATE statement (malloc'd), or NULL with the error said. */
static char *function_def(shell *sh, const char *name)
{
    if (ensure_connected(sh))
        return NULL;
    const char *params[1] = { name };
    PGresult *r = PQexecParams(sh->conn, strchr(name, '(')
                               ? "SELECT pg_get_functiondef($1::regprocedure)"
                               : "SELECT pg_get_functiondef($1::regproc)",
                               1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        report_pq_error(r, sh->conn);
        PQclear(r);
        return NULL;
    }
    char *def = strdup(PQgetvalue(r, 0, 0));
    PQclear(r);
    return def;
}

/* \sf[+] FUNCTION[(ARGTYPES)]: its CREATE statement (+: lines numbered). */
static int show_function(shell *sh, const char *name, int numbered)
{
    char *def = function_def(sh, name);
    if (!def)
        return 1;
    if (!numbered) {
        fputs(def, sh->out);
    } else {
        /* as psql: the header lines unnumbered, the body from AS on numbered */
        int k = 0, body = 0;
        for (const char *p = def; *p;) {
            size_t n = strcspn(p, "\n");
            if (!body && (!strncmp(p, "AS ", 3) || !strncmp(p, " AS ", 4) || !strncmp(p, "BEGIN", 5)))
                body = 1;
            if (body)
                fprintf(sh->out, "%-7d %.*s\n", ++k, (int)n, p);
            else
                fprintf(sh->out, "        %.*s\n", (int)n, p);
            p += n + (p[n] == '\n');
        }
    }
    free(def);
    return 0;
}

/* ---- \copy: psql's client-side COPY ---------------------------------------- */

/* One token of \copy's line: a word (quoted parts "..." kept as they are, for
** names) or, with sq, a '...' string (its '' undone). Returns the position
** after it, NULL when a quote is not closed. */
static const char *copy_token(const char *p, char *out, size_t size, int sq)
{
    size_t o = 0;
    if (sq && *p == '\'') {
        for (p++;; p++) {
            if (!*p)
                return NULL;
            if (*p == '\'' && p[1] == '\'')
                p++;
            else if (*p == '\'')
                break;
            if (o + 1 < size)
                out[o++] = *p;
        }
        out[o] = '\0';
        return p + 1;
    }
    while (*p && !isspace((unsigned char)*p) && *p != '(') {
        if (*p == '"') {
            const char *q = p + 1;
            while (*q && !(*q == '"' && q[1] != '"'))
                q += *q == '"' ? 2 : 1;
            if (!*q)
                return NULL;
            for (; p <= q; p++)
                if (o + 1 < size)
                    out[o++] = *p;
            continue;
        }
        if (o + 1 < size)
            out[o++] = *p;
        p++;
    }
    out[o] = '\0';
    return p;
}

/* A balanced ( ... ) from p (quotes inside skipped): its end, or NULL. */
static const char *copy_parens(const char *p)
{
    int depth = 0;
    for (; *p; p++) {
        if (*p == '\'' || *p == '"') {
            char q = *p;
            for (p++; *p && !(*p == q && p[1] != q); p += *p == q ? 2 : 1)
                ;
            if (!*p)
                return NULL;
        } else if (*p == '(') {
            depth++;
        } else if (*p == ')' && --depth == 0) {
            return p + 1;
        }
    }
    return NULL;
}

/* \copy TABLE [(COLUMNS)] FROM {'FILE' | PROGRAM 'CMD' | STDIN | PSTDIN} [OPTIONS]
** \copy {TABLE [(COLUMNS)] | (QUERY)} TO {'FILE' | PROGRAM 'CMD' | STDOUT | PSTDOUT} [OPTIONS]
** As psql: a COPY ... FROM STDIN / TO STDOUT whose data the shell reads or
** writes; the rest of the line (WITH (...), old-style CSV HEADER, WHERE) goes
** to the server as it is. FROM STDIN in a script (or at the prompt) takes
** the lines after it up to \. (they are put in sql/len, as the COPY
** statement a script may hold); with -c it reads the shell's standard input. */
static int slash_copy(shell *sh, const char *args, char **sql, size_t *len)
{
    char target[4096] = "", word[4096];
    const char *p = args;
    while (isspace((unsigned char)*p))
        p++;
    const char *t0 = p;
    if (*p == '(') { /* (QUERY) */
        p = copy_parens(p);
    } else {
        p = copy_token(p, word, sizeof word, 0);
        while (p && isspace((unsigned char)*p))
            p++;
        if (p && *p == '(') /* (COLUMNS) */
            p = copy_parens(p);
    }
    if (!p || p == t0) {
        errorf("\\copy: %s", p ? "usage: \\copy TABLE FROM 'FILE' | \\copy TABLE|(QUERY) TO 'FILE' "
                                 "[WITH (OPTIONS)]" : "a quote or parenthesis is not closed");
        return 1;
    }
    snprintf(target, sizeof target, "%.*s", (int)(p - t0), t0);
    while (isspace((unsigned char)*p))
        p++;
    p = copy_token(p, word, sizeof word, 0);
    int from = p && !strcasecmp(word, "from"), to = p && !strcasecmp(word, "to");
    if (!from && !to) {
        errorf("\\copy: expected FROM or TO after \"%s\"", target);
        return 1;
    }
    while (isspace((unsigned char)*p))
        p++;
    /* where the data comes from or goes to */
    enum { C_FILE, C_PROGRAM, C_STDIN, C_PSTD, C_STDOUT } kind = C_FILE;
    const char *w0 = p;
    p = copy_token(p, word, sizeof word, 1);
    if (p && *w0 != '\'' && !strcasecmp(word, "program")) {
        kind = C_PROGRAM;
        while (isspace((unsigned char)*p))
            p++;
        if (*p != '\'') {
            errorf("\\copy: PROGRAM takes its command in single quotes");
            return 1;
        }
        p = copy_token(p, word, sizeof word, 1);
    } else if (p && *w0 != '\'') {
        kind = !strcasecmp(word, "stdin") ? (from ? C_STDIN : C_FILE)
             : !strcasecmp(word, "stdout") ? (to ? C_STDOUT : C_FILE)
             : !strcasecmp(word, from ? "pstdin" : "pstdout") ? C_PSTD : C_FILE;
    }
    if (!p || !*word) {
        errorf("\\copy: %s", p ? "no file after FROM or TO" : "a quote is not closed");
        return 1;
    }
    if (kind == C_FILE && word[0] == '~' && (word[1] == '/' || !word[1]) && getenv("HOME")) {
        char home[4096];
        snprintf(home, sizeof home, "%s%s", getenv("HOME"), word + 1);
        snprintf(word, sizeof word, "%s", home);
    }
    /* the options, as they are (a ; at the end is not one) */
    size_t rn = strlen(p);
    while (rn && (isspace((unsigned char)p[rn - 1]) || p[rn - 1] == ';'))
        rn--;
    size_t qn = strlen(target) + rn + 64;
    char *q = malloc(qn);
    if (!q) {
        errorf("out of memory");
        return 1;
    }
    snprintf(q, qn, "COPY %s %s%.*s", target, from ? "FROM STDIN" : "TO STDOUT", (int)rn, p);
    if (kind == C_STDIN && sql && len) {
        /* the lines after it are the data: the statement waits in the buffer */
        if (*len) {
            errorf("\\copy ... FROM STDIN: a statement is being typed (end it first)");
            free(q);
            return 1;
        }
        char *grown = realloc(*sql, strlen(q) + 3);
        if (!grown) {
            free(q);
            return 1;
        }
        *sql = grown;
        *len = (size_t)sprintf(*sql, "%s;\n", q);
        free(q);
        return 0;
    }
    if (ensure_connected(sh)) {
        free(q);
        return 1;
    }
    FILE *f = NULL;
    if (kind == C_STDIN || kind == C_PSTD)
        f = from ? stdin : stdout;
    else if (kind == C_STDOUT)
        f = sh->out;
    else if (kind == C_PROGRAM) {
        fflush(NULL);
        f = popen(word, from ? "r" : "w");
    } else
        f = fopen(word, from ? "r" : "w");
    struct stat fst;
    if (f && kind == C_FILE && from && fstat(fileno(f), &fst) == 0 && S_ISDIR(fst.st_mode)) {
        fclose(f);
        f = NULL;
        errno = EISDIR;
    }
    if (!f) {
        errorf("\\copy: %s %s: %s", kind == C_PROGRAM ? "cannot run" : "cannot open", word,
               strerror(errno));
        free(q);
        return 1;
    }
    int failed = 0;
    PGresult *r = PQexec(sh->conn, q);
    free(q);
    if (from && PQresultStatus(r) == PGRES_COPY_IN) {
        char buf[65536];
        size_t n;
        const char *why = NULL;
        while (!why && (n = fread(buf, 1, sizeof buf, f)) > 0)
            if (interrupted)
                why = "canceled by the user";
            else if (PQputCopyData(sh->conn, buf, (int)n) != 1)
                why = "the data could not be sent";
        if (!why && ferror(f))
            why = strerror(errno ? errno : EIO);
        char status[64];
        if (kind == C_PROGRAM) {
            /* a program that failed (a truncated gzip, say) commits nothing */
            int st = pclose(f);
            f = NULL;
            if (st != 0 && !why) {
                snprintf(status, sizeof status, "the program failed (%s %d)",
                         WIFEXITED(st) ? "exit status" : "signal",
                         WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
                why = status;
            }
        }
        if (why)
            errorf("\\copy: %s: %s", word, why);
        PQputCopyEnd(sh->conn, why ? "\\copy stopped reading its input" : NULL);
        failed = why != NULL;
        PQclear(r);
        r = PQgetResult(sh->conn);
    } else if (to && PQresultStatus(r) == PGRES_COPY_OUT) {
        char *buf;
        int k;
        while ((k = PQgetCopyData(sh->conn, &buf, 0)) > 0) {
            if (!failed && fwrite(buf, 1, (size_t)k, f) != (size_t)k) {
                errorf("\\copy: writing %s: %s", word, strerror(errno));
                failed = 1;
            }
            PQfreemem(buf);
        }
        PQclear(r);
        r = PQgetResult(sh->conn);
    }
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        /* (after a failure said above, the server's echo of it is not) */
        if (!failed && PQresultStatus(r) != PGRES_COPY_IN && PQresultStatus(r) != PGRES_COPY_OUT)
            report_pq_error(r, sh->conn);
        failed = 1;
    } else if (!failed && !sh->quiet) {
        fprintf(sh->out, "%s\n", PQcmdStatus(r));
    }
    PQclear(r);
    while ((r = PQgetResult(sh->conn)) != NULL)
        PQclear(r);
    if (kind == C_PROGRAM && f) {
        int st = pclose(f);
        if (st != 0 && !failed) {
            errorf("\\copy: program \"%s\" failed (%s %d)", word,
                   WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st)
                                                                          : WTERMSIG(st));
            failed = 1;
        }
    } else if (kind == C_FILE && fclose(f) != 0 && !failed) {
        errorf("\\copy: writing %s: %s", word, strerror(errno));
        failed = 1;
    } else if (kind != C_FILE) {
        fflush(f);
    }
    check_connection(sh);
    return failed;
}

/* ---- \prompt, \password, \lo_* ------------------------------------------ */

/* 1 while a script file runs (-f FILE, \i): psql's \prompt then reads
** standard input, not the terminal. */
static int in_script_file(const shell *sh)
{
    return sh->located && sh->source && strcmp(sh->source, "<stdin>");
}

static void wipe(char *s)
{
    if (s)
        for (volatile char *p = s; *p; p++)
            *p = '\0';
}

/* A line (without its newline, malloc'd; NULL at the end of the input) as
** psql reads one for \prompt and \password: from the terminal (/dev/tty),
** the prompt on it, not echoed when !echo; without a terminal (or, for
** \prompt, while a script file runs: from_stdin) from standard input, the
** prompt on standard output (from_stdin) or standard error. */
static char *read_reply(const char *prompt, int echo, int from_stdin)
{
    FILE *tty = from_stdin ? NULL : fopen("/dev/tty", "r+");
    FILE *in = tty ? tty : stdin, *po = tty ? tty : from_stdin ? stdout : stderr;
    struct termios old, t;
    int restore = 0;
    /* echo off before the prompt: nothing typed after it is shown */
    if (tty && !echo && tcgetattr(fileno(tty), &old) == 0) {
        t = old;
        t.c_lflag &= ~(tcflag_t)ECHO;
        restore = tcsetattr(fileno(tty), TCSAFLUSH, &t) == 0;
    }
    if (prompt) {
        fputs(prompt, po);
        fflush(po);
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, in);
    if (restore) {
        tcsetattr(fileno(tty), TCSAFLUSH, &old);
        fputc('\n', tty); /* the Enter that was not echoed */
    }
    if (tty)
        fclose(tty);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    return line;
}

/* \password [USER]: the new password asked twice, never echoed, encrypted
** here (as the server's password_encryption says) so the clear text never
** reaches the server or its logs. */
static int change_password(shell *sh, const char *user)
{
    char *cur = NULL;
    if (!user) {
        cur = query_value(sh, "SELECT current_user", 0, NULL);
        if (!cur)
            return 1;
        user = cur;
    }
    char prompt[600];
    snprintf(prompt, sizeof prompt, "Enter new password for user \"%s\": ", user);
    char *p1 = read_reply(prompt, 0, 0);
    char *p2 = p1 ? read_reply("Enter it again: ", 0, 0) : NULL;
    int rc = 1;
    if (!p1 || !p2) {
        errorf("\\password: could not read the password; it is unchanged");
    } else if (strcmp(p1, p2)) {
        errorf("\\password: Passwords didn't match; it is unchanged");
    } else if (!*p1) {
        errorf("\\password: an empty password is not set; it is unchanged (ALTER USER ... "
               "PASSWORD NULL removes one)");
    } else {
        char *enc = PQencryptPasswordConn(sh->conn, p1, user, NULL);
        char *id = enc ? PQescapeIdentifier(sh->conn, user, strlen(user)) : NULL;
        char *lit = id ? PQescapeLiteral(sh->conn, enc, strlen(enc)) : NULL;
        char *sql = lit ? malloc(strlen(id) + strlen(lit) + 32) : NULL;
        if (!sql) {
            char msg[1024];
            conn_error_line(sh->conn, msg, sizeof msg);
            errorf("\\password: %s", *msg ? msg : "out of memory");
        } else {
            sprintf(sql, "ALTER USER %s PASSWORD %s", id, lit);
            PGresult *r = PQexec(sh->conn, sql);
            if (PQresultStatus(r) == PGRES_COMMAND_OK)
                rc = 0;
            else
                report_pq_error(r, sh->conn);
            PQclear(r);
        }
        free(sql);
        PQfreemem(lit);
        PQfreemem(id);
        PQfreemem(enc);
    }
    wipe(p1);
    wipe(p2);
    free(p1);
    free(p2);
    free(cur);
    return rc;
}

/* psql's large-object commands run inside a transaction: the open one, else
** one of their own (committed after, unless AUTOCOMMIT is off). */
static int lo_begin(shell *sh, const char *op, int *own)
{
    *own = 0;
    switch (PQtransactionStatus(sh->conn)) {
    case PQTRANS_INTRANS:
        return 0;
    case PQTRANS_IDLE: {
        PGresult *r = PQexec(sh->conn, "BEGIN");
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (!ok)
            report_pq_error(r, sh->conn);
        PQclear(r);
        *own = ok;
        return !ok;
    }
    case PQTRANS_INERROR:
        errorf("%s: current transaction is aborted", op);
        return 1;
    default:
        errorf("%s: unknown transaction status", op);
        return 1;
    }
}

static int lo_end(shell *sh, int own, int ok)
{
    const char *ac = var_get(sh, "AUTOCOMMIT", 10);
    if (!own || (ok && ac && parse_bool(ac) == 0))
        return !ok;
    PGresult *r = PQexec(sh->conn, ok ? "COMMIT" : "ROLLBACK");
    if (ok && PQresultStatus(r) != PGRES_COMMAND_OK) {
        report_pq_error(r, sh->conn);
        ok = 0;
    }
    PQclear(r);
    return !ok;
}

/* A large object's OID as given: digits, not 0. */
static int lo_oid(const char *op, const char *s, Oid *oid)
{
    char *e;
    errno = 0;
    unsigned long v = s && isdigit((unsigned char)*s) ? strtoul(s, &e, 10) : 0;
    if (!v || *e || errno || v > 4294967295UL) {
        errorf("%s: invalid large object OID \"%s\"", op, s ? s : "");
        return 1;
    }
    *oid = (Oid)v;
    return 0;
}

static int large_object(shell *sh, const char *name, char **argv, int argc)
{
    char op[32];
    snprintf(op, sizeof op, "\\%s", name);
    if (!strcmp(name, "lo_list") || !strcmp(name, "lo_list+")) {
        if (argc > 1) {
            errorf("%s: takes no argument", op);
            return 1;
        }
        if (ensure_connected(sh))
            return 1;
        return show_query(sh, name[7] ? "SELECT oid AS \"ID\", pg_catalog.pg_get_userbyid(lomowner) "
                          "AS \"Owner\", pg_catalog.array_to_string(lomacl, E'\\n') AS "
                          "\"Access privileges\", pg_catalog.obj_description(oid, "
                          "'pg_largeobject') AS \"Description\" FROM "
                          "pg_catalog.pg_largeobject_metadata ORDER BY oid"
                          : "SELECT oid AS \"ID\", pg_catalog.pg_get_userbyid(lomowner) AS "
                          "\"Owner\", pg_catalog.obj_description(oid, 'pg_largeobject') AS "
                          "\"Description\" FROM pg_catalog.pg_largeobject_metadata ORDER BY oid",
                          "Large objects", NULL, NULL) < 0;
    }
    int imp = !strcmp(name, "lo_import"), exp = !strcmp(name, "lo_export");
    if ((imp && (argc < 2 || argc > 3)) || (exp && argc != 3) || (!imp && !exp && argc != 2)) {
        errorf(imp ? "usage: \\lo_import FILE [COMMENT]" : exp ? "usage: \\lo_export OID FILE"
                                                              : "usage: \\lo_unlink OID");
        return 1;
    }
    Oid oid = 0;
    if (!imp && lo_oid(op, argv[1], &oid))
        return 1;
    int own;
    if (ensure_connected(sh) || lo_begin(sh, op, &own))
        return 1;
    int ok = 1;
    char msg[1024];
    if (imp) {
        oid = lo_import(sh->conn, argv[1]);
        ok = oid != 0;
        if (ok && argc == 3) {
            char *lit = PQescapeLiteral(sh->conn, argv[2], strlen(argv[2]));
            char sql[128];
            snprintf(sql, sizeof sql, "COMMENT ON LARGE OBJECT %u IS ", oid);
            char *q = lit ? malloc(strlen(sql) + strlen(lit) + 1) : NULL;
            PGresult *r = NULL;
            if (q) {
                sprintf(q, "%s%s", sql, lit);
                r = PQexec(sh->conn, q);
            }
            ok = PQresultStatus(r) == PGRES_COMMAND_OK;
            if (!ok)
                report_pq_error(r, sh->conn);
            PQclear(r);
            free(q);
            PQfreemem(lit);
            if (!ok) {
                lo_end(sh, own, 0);
                return 1;
            }
        }
    } else if (exp) {
        ok = lo_export(sh->conn, oid, argv[2]) == 1;
    } else {
        ok = lo_unlink(sh->conn, oid) >= 0;
    }
    if (!ok) {
        conn_error_line(sh->conn, msg, sizeof msg);
        errorf("%s: %s", op, msg);
        lo_end(sh, own, 0);
        return 1;
    }
    if (lo_end(sh, own, 1))
        return 1;
    if (imp) {
        char num[16];
        snprintf(num, sizeof num, "%u", oid);
        var_set(sh, "LASTOID", num);
    }
    if (!sh->quiet) {
        if (exp)
            fprintf(sh->out, "lo_export\n");
        else
            fprintf(sh->out, "%s %u\n", name, oid);
    }
    return 0;
}

/* A backslash command (psql's meta-commands); sql/len is the statement
** being typed (\g \gx \gset \watch \e \p \r use it), NULL for a command
** alone. Returns 0, 1 (failed, counted) or 2 (quit); -1 for unknown. */
/* psql's backslash commands the shell knows (besides every dot command's
** backslash form): for completion, and to tell a known one given wrong
** arguments from an unknown one. */
static const char *const backslash_names[] = {
    "q", "?", "g", "gx", "gset", "watch", "e", "p", "r", "i", "ir", "o", "echo", "qecho", "warn",
    "if", "elif", "else", "endif", "d", "d+", "dt", "dt+", "di", "dv", "dm", "ds", "dE", "df",
    "dn", "du", "dg", "dx", "dp", "z", "dT", "dD", "l", "l+", "x", "a", "t", "f", "pset", "timing", "c", "conninfo",
    "encoding", "set", "unset", "restrict", "unrestrict", "copy", "gdesc", "sf", "sf+", "ef", "!", "setenv", "getenv", "cd",
    "errverbose", "prompt", "password", "crosstabview", "lo_import", "lo_export", "lo_list", "lo_unlink", NULL };

static int run_backslash_in(shell *sh, const char *line, char **sql, size_t *len,
                            long long first_line)
{
    while (isspace((unsigned char)*line))
        line++;
    char *copy = strdup(line + 1);
    if (!copy) {
        errorf("out of memory");
        return 1;
    }
    char *argv[64];
    int argc = split_words_as(copy, argv, 64, 1);
    if (argc < 0) {
        errorf("\\%s: %s", line + 1, argc == -1 ? "too many arguments" : "a quote is not closed");
        free(copy);
        sh->failures++;
        return 1;
    }
    static const char no_name[2] = ""; /* (name + 1 stays inside it) */
    const char *name = argc ? argv[0] : no_name;
    const char *arg = argc > 1 ? argv[1] : NULL;
    /* \o |COMMAND, \g |COMMAND: the rest of the line is the command */
    const char *pipe_rest = line + 1 + strcspn(line + 1, " \t");
    pipe_rest += strspn(pipe_rest, " \t");
    if (*pipe_rest != '|')
        pipe_rest = NULL;
    char cmd[2048];
    size_t zero = 0;
    if (!len)
        len = &zero;
    int rc = -1;
    cmd[0] = '\0';
    if (sh->restrict_key[0] && strcmp(name, "unrestrict")) {
        /* a plain dump's SQL cannot run commands on the machine restoring it */
        errorf("\\%s: backslash commands are restricted; only \\unrestrict is allowed", name);
        rc = 1;
    } else if (!strcmp(name, "restrict") || !strcmp(name, "unrestrict")) {
        if (argc != 2 || !*arg || strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                              "0123456789") != strlen(arg) ||
            strlen(arg) >= sizeof sh->restrict_key) {
            errorf("\\%s: the key must be one word of letters and digits", name);
            rc = 1;
        } else if (name[0] == 'r' && sh->restrict_key[0]) {
            errorf("\\restrict: already in restricted mode");
            rc = 1;
        } else if (name[0] == 'u' && !sh->restrict_key[0]) {
            errorf("\\unrestrict: not currently in restricted mode");
            rc = 1;
        } else if (name[0] == 'u' && strcmp(arg, sh->restrict_key)) {
            errorf("\\unrestrict: wrong key");
            rc = 1;
        } else {
            snprintf(sh->restrict_key, sizeof sh->restrict_key, "%s", name[0] == 'r' ? arg : "");
            rc = 0;
        }
    } else if (!strcmp(name, "crosstabview")) {
        /* the arguments as typed: a "Quoted" column name keeps its case */
        char *raw = strdup(line + 1 + strlen(name)), *p = raw;
        int n = 0;
        while (p && *p) {
            while (isspace((unsigned char)*p))
                p++;
            if (!*p)
                break;
            char *w = p;
            for (int inq = 0; *p && (inq || !isspace((unsigned char)*p)); p++)
                inq ^= *p == '"';
            if (*p)
                *p++ = '\0';
            if (n < 4)
                sh->ct_argv[n] = w;
            n++;
        }
        if (!raw) {
            errorf("out of memory");
            rc = 1;
        } else if (n > 4) {
            errorf("usage: \\crosstabview [colV [colH [colD [sortcolH]]]]");
            rc = 1;
        } else {
            sh->crosstab = 1;
            sh->ct_argc = n;
            rc = run_g(sh, name, NULL, sql, len, first_line);
            sh->crosstab = 0;
            sh->ct_argc = 0;
            free(raw);
            free(copy);
            return rc;
        }
        free(raw);
    } else if (!strcmp(name, "errverbose")) {
        /* the last error of the user's SQL again, with all libpq has of it */
        for (int k = 1; k < argc; k++)
            fprintf(stderr, "pgpipe: \\errverbose: extra argument \"%s\" ignored\n", argv[k]);
        if (!sh->last_error_res) {
            fprintf(sh->out, "There is no previous error.\n");
        } else {
            char *m = PQresultVerboseErrorMessage(sh->last_error_res, PQERRORS_VERBOSE,
                                                  PQSHOW_CONTEXT_ALWAYS);
            fputs(m ? m : "out of memory\n", stderr);
            PQfreemem(m);
        }
        rc = 0;
    } else if (!strcmp(name, "prompt")) {
        /* \prompt [TEXT] NAME */
        const char *var = argc > 2 ? argv[2] : arg;
        for (int k = 3; k < argc; k++)
            fprintf(stderr, "pgpipe: \\prompt: extra argument \"%s\" ignored\n", argv[k]);
        rc = 1;
        if (!var) {
            errorf("\\prompt: missing required argument");
        } else if (!var_name_ok(var)) {
            errorf("\\prompt: invalid variable name: \"%s\"", var);
        } else {
            char *v = read_reply(argc > 2 ? arg : NULL, 1, in_script_file(sh));
            if (!v)
                errorf("\\prompt: could not read value for variable \"%s\"; it is unchanged", var);
            else
                rc = var_set(sh, var, v);
            free(v);
        }
    } else if (!strcmp(name, "password") && argc <= 2) {
        rc = ensure_connected(sh) ? 1 : change_password(sh, arg);
    } else if (!strncmp(name, "lo_", 3) && (!strcmp(name, "lo_import") || !strcmp(name, "lo_export") ||
                                            !strcmp(name, "lo_unlink") || !strcmp(name, "lo_list") ||
                                            !strcmp(name, "lo_list+"))) {
        rc = large_object(sh, name, argv, argc);
    } else if (!strcmp(name, "gdesc") && argc == 1) {
        rc = run_gdesc(sh, len == &zero ? NULL : sql, len);
    } else if (!strcmp(name, "ef") && argc >= 2 && len != &zero) {
        /* \ef FUNCTION: its CREATE statement into the buffer, edited (it runs
        ** when it ends with ;, or with \g) */
        const char *fn = line + 3;
        while (isspace((unsigned char)*fn))
            fn++;
        char *def = function_def(sh, fn);
        rc = 1;
        if (def) {
            free(*sql);
            *sql = def;
            *len = strlen(def);
            rc = edit_buffer(sh, sql, len);
        }
    } else if (!strcmp(name, "ef")) {
        errorf(argc < 2 ? "usage: \\ef FUNCTION[(TYPES)]" : "\\ef: only at the prompt or in a script");
        rc = 1;
    } else if ((!strcmp(name, "sf") || !strcmp(name, "sf+")) && argc >= 2) {
        /* the rest of the line is the name, spaces in its argument types too */
        const char *fn = line + 1 + strlen(name);
        while (isspace((unsigned char)*fn))
            fn++;
        char *f = strdup(fn);
        size_t fl = f ? strlen(f) : 0;
        while (fl && isspace((unsigned char)f[fl - 1]))
            f[--fl] = '\0';
        rc = f ? show_function(sh, f, name[2] == '+') : 1;
        free(f);
    } else if (!strcmp(name, "!")) {
        /* \! [COMMAND]: a shell command (none: an interactive shell) */
        const char *c = line + 2;
        while (isspace((unsigned char)*c))
            c++;
        const char *shell_path = getenv("SHELL");
        if (!*c) {
            snprintf(cmd, sizeof cmd, "exec %s", shell_path && *shell_path ? shell_path : "/bin/sh");
            c = cmd;
        }
        fflush(NULL);
        int st = system(c);
        cmd[0] = '\0';
        if (st == -1 || (WIFEXITED(st) && WEXITSTATUS(st) == 127)) {
            errorf("\\!: command failed");
            rc = 1;
        } else {
            rc = 0;
        }
    } else if (!strcmp(name, "copy")) {
        rc = slash_copy(sh, line + 5, len == &zero ? NULL : sql, len == &zero ? NULL : len);
    } else if (!strcmp(name, "q") || !strcmp(name, "quit")) {
        rc = 2;
    } else if (!strcmp(name, "?")) {
        fputs(backslash_help, sh->out);
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
        if (arg && parse_bool(arg) < 0) {
            errorf("\\timing: use on or off, not \"%s\"", arg);
            rc = 1;
        } else {
            sh->timer = arg ? parse_bool(arg) : !sh->timer;
            if (!sh->quiet)
                fprintf(sh->out, "Timing is %s.\n", sh->timer ? "on" : "off");
            rc = 0;
        }
    } else if (!strcmp(name, "x") && argc <= 2) {
        rc = pset(sh, "expanded", arg);
    } else if (!strcmp(name, "pset") && argc <= 3) {
        rc = pset(sh, arg, argc > 2 ? argv[2] : NULL);
    } else if (!strcmp(name, "a") && argc == 1) {
        sh->mode = sh->mode == MODE_UNALIGNED ? MODE_ALIGNED : MODE_UNALIGNED;
        rc = pset(sh, "format", NULL);
    } else if (!strcmp(name, "t") && argc <= 2) {
        rc = pset(sh, "tuples_only", arg);
    } else if (!strcmp(name, "f") && argc <= 2) {
        rc = pset(sh, "fieldsep", arg);
    } else if ((!strcmp(name, "o") || !strcmp(name, "out")) && (argc <= 2 || pipe_rest)) {
        rc = output_open(sh, "\\o", pipe_rest ? pipe_rest : arg);
    } else if ((!strcmp(name, "c") || !strcmp(name, "connect")) && argc <= 2) {
        char *av[2] = { (char *)"connect", (char *)arg };
        rc = cmd_connect(sh, av, argc, arg ? arg : "");
    } else if ((!strcmp(name, "z") && argc <= 2) ||
               (name[0] == 'd' && strspn(name + 1, "tivmsEfnugxpTDS+") == strlen(name + 1) &&
                argc <= 2) || ((!strcmp(name, "l") || !strcmp(name, "l+") || !strcmp(name, "list")) &&
                               argc <= 2)) {
        /* the pattern as typed: its double quotes keep case and spaces, as psql's */
        char *pat = NULL;
        if (arg) {
            const char *a = line + 1 + strcspn(line + 1, " \t");
            a += strspn(a, " \t");
            const char *e = a;
            for (int inq = 0; *e && (inq || !isspace((unsigned char)*e)); e++)
                inq ^= *e == '"';
            if (*a != '\'') /* ('single quotes': the word as split) */
                pat = strndup(a, (size_t)(e - a));
        }
        rc = ensure_connected(sh) ? 1 : describe(sh, name, pat ? pat : arg);
        free(pat);
    } else if (!strcmp(name, "set")) {
        if (argc == 1) {
            for (int i = 0; i < sh->nvars; i++)
                fprintf(sh->out, "%s = '%s'\n", sh->vars[i].name, sh->vars[i].value);
            rc = 0;
        } else if (!var_name_ok(arg)) {
            errorf("\\set: invalid variable name: \"%s\"", arg);
            rc = 1;
        } else {
            size_t vl = 1;
            for (int k = 2; k < argc; k++)
                vl += strlen(argv[k]);
            char *v = calloc(vl, 1);
            for (int k = 2; v && k < argc; k++)
                strcat(v, argv[k]);
            rc = !v || var_set(sh, arg, v);
            free(v);
        }
    } else if (!strcmp(name, "setenv") && (argc == 2 || argc == 3)) {
        rc = argc == 3 ? setenv(arg, argv[2], 1) != 0 : unsetenv(arg) != 0;
        if (rc)
            errorf("\\setenv: %s: %s", arg, strerror(errno));
    } else if (!strcmp(name, "getenv") && argc == 3) {
        if (!var_name_ok(argv[1])) {
            errorf("\\getenv: invalid variable name: \"%s\"", argv[1]);
            rc = 1;
        } else {
            rc = var_set(sh, argv[1], getenv(argv[2]));
        }
    } else if (!strcmp(name, "cd") && argc <= 2) {
        const char *dir = arg ? arg : getenv("HOME");
        rc = !dir || chdir(dir) != 0;
        if (rc)
            errorf("\\cd: could not change directory to \"%s\": %s", dir ? dir : "(no HOME)",
                   strerror(errno));
    } else if (!strcmp(name, "unset") && argc == 2) {
        rc = var_set(sh, arg, NULL);
    } else if (!strcmp(name, "echo") || !strcmp(name, "qecho") || !strcmp(name, "warn")) {
        FILE *f = name[0] == 'w' ? stderr : name[0] == 'q' ? sh->out : stdout;
        int k = 1, nl = 1;
        if (argc > 1 && !strcmp(argv[1], "-n"))
            nl = 0, k = 2;
        for (int first = k; k < argc; k++)
            fprintf(f, "%s%s", k > first ? " " : "", argv[k]);
        if (nl)
            fputc('\n', f);
        rc = 0;
    } else if (!strcmp(name, "encoding") && argc <= 2) {
        if (arg && PQsetClientEncoding(sh->conn, arg) != 0) {
            errorf("\\encoding: invalid encoding name or conversion procedure not found: %s", arg);
            rc = 1;
        } else {
            if (!arg)
                fprintf(sh->out, "%s\n", pg_encoding_to_char(PQclientEncoding(sh->conn)));
            rc = 0;
        }
    } else if (!strcmp(name, "g") || !strcmp(name, "gx") || !strcmp(name, "gset")) {
        rc = run_g(sh, name, pipe_rest ? pipe_rest : arg, sql, len, first_line);
        free(copy);
        return rc;
    } else if (!strcmp(name, "watch")) {
        char *q = sql && *len ? strndup(*sql, *len) : sh->last_sql ? strdup(sh->last_sql) : NULL;
        if (q && sql && *len) {
            /* the statement typed before \watch, without a trailing ';' */
            size_t n = strlen(q);
            while (n && (isspace((unsigned char)q[n - 1]) || q[n - 1] == ';'))
                q[--n] = '\0';
            *len = 0;
            free(sh->last_sql);
            sh->last_sql = strdup(q);
        }
        /* with nothing typed, the last command again: SQL, or a dot command (.status) */
        char *dot = !(sql && *len) && sh->last_dot ? strdup(sh->last_dot) : NULL;
        rc = watch_query(sh, q, dot, argv, argc);
        free(dot);
        free(q);
    } else if (!strcmp(name, "r") || !strcmp(name, "reset")) {
        *len = 0;
        if (!sh->quiet)
            fprintf(sh->out, "Query buffer reset (cleared).\n");
        rc = 0;
    } else if (!strcmp(name, "p") || !strcmp(name, "print")) {
        if (*len)
            fwrite(*sql, 1, *len, sh->out);
        else if (sh->last_sql)
            fprintf(sh->out, "%s\n", sh->last_sql);
        else
            fprintf(sh->out, "Query buffer is empty.\n");
        rc = 0;
    } else if (!strcmp(name, "e") || !strcmp(name, "edit")) {
        if (!sql) {
            errorf("\\e: only at the prompt or in a script");
            rc = 1;
        } else {
            rc = edit_buffer(sh, sql, len);
        }
    } else if (!strcmp(name, "if") || !strcmp(name, "elif") || !strcmp(name, "else") ||
               !strcmp(name, "endif")) {
        errorf("\\%s: only in a script or at the prompt, one per line", name);
        rc = 1;
    } else if (*name && find_command(name)) {
        /* every dot command has its backslash form: \stats is .stats */
        snprintf(cmd, sizeof cmd, ".%s", line + 1);
    } else {
        int known = 0;
        for (int k = 0; backslash_names[k] && !known; k++)
            known = !strcmp(backslash_names[k], name);
        if (known)
            errorf("\\%s: does not take %d argument%s (\\? shows how it is used; quote a name "
                   "with spaces)", name, argc - 1, argc == 2 ? "" : "s");
        else
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

static int run_backslash(shell *sh, const char *line)
{
    return run_backslash_in(sh, line, NULL, NULL, 0);
}

/* .once FILE ends with the command after it. */
static void once_done(shell *sh, FILE *once)
{
    if (once && sh->oncefile == once) {
        output_close(sh);
        sh->oncefile = NULL;
    }
}

static int run_command_now(shell *sh, const char *cmd);
static ssize_t trailing_meta(const char *sql, size_t len, const char *line);

/* Runs one command: a dot command or SQL, after :variables are replaced.
** 0 success, 1 failure, 2 quit. */
static int run_command(shell *sh, const char *cmd)
{
    while (isspace((unsigned char)*cmd))
        cmd++;
    FILE *once = sh->oncefile;
    char *expanded = is_slash_copy(cmd) ? NULL
                   : interpolate(sh, cmd, cmd[0] == '.' ? INTERP_DOT : cmd[0] == '\\'
                                                                  ? INTERP_BACKSLASH : INTERP_SQL);
    int rc = run_command_now(sh, expanded ? expanded : cmd);
    free(expanded);
    once_done(sh, once);
    return rc;
}

static int run_command_now(shell *sh, const char *cmd)
{
    if (!*cmd)
        return 0;
    int rc;
    if (cmd[0] == '.' && sh->restrict_key[0]) {
        errorf("%.*s: dot commands are restricted (\\restrict); only \\unrestrict is allowed",
               (int)strcspn(cmd, " \t"), cmd);
        rc = 1;
    } else if (cmd[0] == '.') {
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
        free(sh->last_dot);
        sh->last_dot = strdup(cmd);
    } else if (cmd[0] == '\\') {
        return run_backslash(sh, cmd);
    } else {
        ssize_t meta = strchr(cmd, '\\') ? trailing_meta("", 0, cmd) : -1;
        if (meta > 0) {
            /* -c "SELECT ... \gset": the SQL, then the command on it */
            size_t len = (size_t)meta;
            char *sql = strndup(cmd, len);
            if (!sql)
                return 1;
            rc = run_backslash_in(sh, cmd + meta, &sql, &len, 1);
            free(sql);
            return rc;
        }
        if (sh->echo)
            fprintf(sh->out, "%s\n", cmd);
        free(sh->last_sql);
        sh->last_sql = strdup(cmd);
        free(sh->last_dot);
        sh->last_dot = NULL;
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
    FILE *once = sh->oncefile;
    if (pgpipe_sql_split_open(&sp, buf, len, sh->interactive ? "<stdin>" : sh->source) != PGPIPE_OK) {
        errorf("out of memory");
        pgpipe_sql_split_close(sp);
        *rc = 1;
        return 1;
    }
    pgpipe_sql_stmt st;
    int r, nstmt = 0;
    while ((r = pgpipe_sql_split_next(sp, &st)) == PGPIPE_ROW)
        nstmt++;
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
    /* \gset and \gx take the last statement's result, as in psql: the ones
    ** before it run as they would without them */
    const char *gset = sh->gset;
    int gx = sh->gx;
    for (int i = 0; pgpipe_sql_split_next(sp, &st) == PGPIPE_ROW; i++) {
        sh->gset = i == nstmt - 1 ? gset : NULL;
        sh->gx = i == nstmt - 1 ? gx : 0;
        char *raw = strndup(st.sql, st.len);
        char *sql = raw ? interpolate(sh, raw, INTERP_SQL) : NULL;
        free(raw);
        if (!sql) {
            *rc = 1;
            break;
        }
        if (sh->echo)
            fprintf(sh->out, "%s\n", sql);
        free(sh->last_sql);
        sh->last_sql = strdup(sql);
        free(sh->last_dot);
        sh->last_dot = NULL;
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
            if (!sh->interactive && stops(sh))
                break;
        }
        if (interrupted || terminating || sh->script_fatal)
            break;
    }
    sh->gset = gset;
    sh->gx = gx;
    pgpipe_sql_split_close(sp);
    once_done(sh, once);
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

/* The line may take several terminal rows: the cursor's row (from the
** line's first row) is kept so a redraw starts from the top, and the width
** is read each time, so a resized terminal (SIGWINCH) redraws right. */
static int ed_crow = 0;
static volatile sig_atomic_t winched = 0;

static void on_winch(int sig)
{
    (void)sig;
    winched = 1;
}

static size_t ed_width(const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)s[i] & 0xC0) != 0x80)
            w++;
    return w;
}

static void ed_refresh(const char *prompt, const char *buf, size_t len, size_t pos)
{
    int rows, cols;
    term_size(STDOUT_FILENO, &rows, &cols);
    if (cols <= 0)
        cols = 80;
    size_t plen = display_width(prompt);
    size_t total = plen + ed_width(buf, len), at = plen + ed_width(buf, pos);
    if (ed_crow > 0)
        printf("\x1b[%dA", ed_crow);
    fputs("\r", stdout);
    fputs(prompt, stdout);
    fwrite(buf, 1, len, stdout);
    fputs("\x1b[J", stdout);
    size_t endrow = total / (size_t)cols;
    if (total && total % (size_t)cols == 0)
        fputs("\r\n", stdout); /* past the last column: on to the next row */
    size_t crow = at / (size_t)cols, ccol = at % (size_t)cols;
    if (endrow > crow)
        printf("\x1b[%zuA", endrow - crow);
    fputs("\r", stdout);
    if (ccol)
        printf("\x1b[%zuC", ccol);
    ed_crow = (int)crow;
    fflush(stdout);
}

/* ---- tab completion ---------------------------------------------------------- */

static shell *ed_shell; /* the shell the editor completes for (its connection) */

typedef struct cands {
    char **v;
    int n, cap;
} cands;

static void cand_add(cands *c, const char *s, size_t n)
{
    for (int i = 0; i < c->n; i++)
        if (strlen(c->v[i]) == n && !strncmp(c->v[i], s, n))
            return;
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 32;
        char **g = realloc(c->v, sizeof *g * (size_t)cap);
        if (!g)
            return;
        c->v = g;
        c->cap = cap;
    }
    char *d = strndup(s, n);
    if (d)
        c->v[c->n++] = d;
}

static void cands_free(cands *c)
{
    for (int i = 0; i < c->n; i++)
        free(c->v[i]);
    free(c->v);
}

static const char *const sql_words[] = {
    "SELECT", "FROM", "WHERE", "INSERT", "INTO", "VALUES", "UPDATE", "SET", "DELETE", "CREATE",
    "TABLE", "INDEX", "VIEW", "DROP", "ALTER", "BEGIN", "COMMIT", "ROLLBACK", "EXPLAIN",
    "ANALYZE", "WITH", "GROUP", "ORDER", "BY", "LIMIT", "JOIN", "LEFT", "ON", "AND", "OR",
    "NOT", "NULL", "TRUNCATE", "COPY", "VACUUM", "RETURNING", "DISTINCT", "HAVING", NULL };


/* Files and directories starting with word (a directory gets its '/'). */
static void complete_files(cands *c, const char *word, size_t wl)
{
    char dir[1024], pre[1024];
    const char *slash = NULL;
    for (size_t i = 0; i < wl; i++)
        if (word[i] == '/')
            slash = word + i;
    if (slash) {
        snprintf(dir, sizeof dir, "%.*s", slash == word ? 1 : (int)(slash - word), word);
        snprintf(pre, sizeof pre, "%.*s", (int)(wl - (size_t)(slash + 1 - word)), slash + 1);
    } else {
        snprintf(dir, sizeof dir, ".");
        snprintf(pre, sizeof pre, "%.*s", (int)wl, word);
    }
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    size_t pl = strlen(pre);
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, pre, pl) || !strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") ||
            (e->d_name[0] == '.' && !pl))
            continue;
        char full[2100], path[2100];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        int isdir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
        snprintf(full, sizeof full, "%.*s%s%s", slash ? (int)(slash + 1 - word) : 0, word,
                 e->d_name, isdir ? "/" : "");
        cand_add(c, full, strlen(full));
    }
    closedir(d);
}

/* Adds the first column of sql's rows ($1: the LIKE pattern of word). */
static void complete_query(cands *c, const char *word, size_t wl, const char *sql)
{
    if (!ed_shell || !ed_shell->conn || PQstatus(ed_shell->conn) != CONNECTION_OK ||
        PQtransactionStatus(ed_shell->conn) != PQTRANS_IDLE)
        return;
    char pat[600];
    size_t o = 0;
    for (size_t i = 0; i < wl && o + 3 < sizeof pat; i++) {
        if (word[i] == '%' || word[i] == '_' || word[i] == '\\')
            pat[o++] = '\\';
        pat[o++] = word[i];
    }
    pat[o++] = '%';
    pat[o] = '\0';
    const char *params[1] = { pat };
    /* a pipeline table that is not there (no schema yet) is no error to show */
    PQnoticeProcessor old = PQsetNoticeProcessor(ed_shell->conn, notice_to_log, NULL);
    PGresult *r = PQexecParams(ed_shell->conn, sql, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        for (int i = 0; i < PQntuples(r); i++)
            if (!PQgetisnull(r, i, 0))
                cand_add(c, PQgetvalue(r, i, 0), strlen(PQgetvalue(r, i, 0)));
    PQclear(r);
    PQsetNoticeProcessor(ed_shell->conn, old, NULL);
}

/* What the pipeline knows after an option: event types, sources, the
** dead letters' errors (their first word). 1 when the option is one. */
static int complete_pipeline(cands *c, const char *opt, const char *word, size_t wl)
{
    if (!strcmp(opt, "--event-type") || !strcmp(opt, "--type")) {
        complete_query(c, word, wl,
            "SELECT DISTINCT v FROM (SELECT event_type AS v FROM (SELECT event_type FROM "
            "staging.raw_events ORDER BY received_at DESC LIMIT 20000) r UNION ALL SELECT event_type "
            "FROM pgpipe.dead_letters) x WHERE v LIKE $1 ORDER BY 1 LIMIT 200");
        return 1;
    }
    if (!strcmp(opt, "--source")) {
        complete_query(c, word, wl,
            "SELECT DISTINCT v FROM (SELECT source AS v FROM (SELECT source FROM "
            "staging.raw_events ORDER BY received_at DESC LIMIT 20000) r UNION ALL SELECT "
            "source_name FROM pgpipe.dead_letters) x WHERE v LIKE $1 ORDER BY 1 LIMIT 200");
        return 1;
    }
    if (!strcmp(opt, "--error")) {
        complete_query(c, word, wl,
            "SELECT v FROM (SELECT substring(error_message FROM '^[^ :,]+') AS v, count(*) AS n "
            "FROM pgpipe.dead_letters GROUP BY 1) x WHERE v LIKE $1 ORDER BY n DESC, 1 LIMIT 200");
        return 1;
    }
    return 0;
}

/* After .migrate's --to and --baseline: the versions of the V files in the
** line's DIR (the first word after the command that is not an option or an
** option's value; default "migrations"). */
static void complete_versions(cands *c, const char *line, size_t n, const char *word, size_t wl)
{
    char dir[1024] = "migrations", w[1024], before[64] = "";
    size_t k = 0;
    k += strcspn(line, " \t"); /* the command */
    while (k < n) {
        k += strspn(line + k, " \t");
        size_t l = strcspn(line + k, " \t");
        if (k + l > n)
            break;
        snprintf(w, sizeof w, "%.*s", (int)l, line + k);
        if (w[0] && w[0] != '-' && !(before[0] == '-' && strcmp(before, "--status") &&
                                     strcmp(before, "--dry-run") && strcmp(before, "--repair"))) {
            snprintf(dir, sizeof dir, "%s", w);
            break;
        }
        snprintf(before, sizeof before, "%.63s", w);
        k += l;
    }
    DIR *dh = opendir(dir);
    if (!dh)
        return;
    for (struct dirent *de; (de = readdir(dh)) != NULL;) {
        const char *v = de->d_name, *us = strstr(v, "__");
        size_t len = strlen(v);
        if (v[0] != 'V' || !us || len < 5 || strcmp(v + len - 4, ".sql"))
            continue;
        size_t vl = (size_t)(us - v - 1);
        if (vl && strspn(v + 1, "0123456789") == vl && vl >= wl && !strncmp(v + 1, word, wl))
            cand_add(c, v + 1, vl);
    }
    closedir(dh);
}

/* Names from the catalog starting with word: schemas, tables and views (as
** the search path shows them, or qualified), and columns of tables. */
static void complete_names(cands *c, const char *word, size_t wl)
{
    if (!ed_shell || !ed_shell->conn || PQstatus(ed_shell->conn) != CONNECTION_OK ||
        PQtransactionStatus(ed_shell->conn) != PQTRANS_IDLE)
        return;
    char pat[600];
    size_t o = 0;
    for (size_t i = 0; i < wl && o + 3 < sizeof pat; i++) {
        if (word[i] == '%' || word[i] == '_' || word[i] == '\\')
            pat[o++] = '\\';
        pat[o++] = word[i];
    }
    pat[o++] = '%';
    pat[o] = '\0';
    const char *params[1] = { pat };
    PGresult *r = PQexecParams(ed_shell->conn,
        "SELECT name FROM ("
        " SELECT nspname || '.' AS name FROM pg_namespace WHERE nspname !~ '^pg_' AND"
        "   nspname <> 'information_schema'"
        " UNION SELECT CASE WHEN pg_table_is_visible(c.oid) THEN c.relname ELSE n.nspname || '.' ||"
        "   c.relname END FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE"
        "   c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname !~ '^pg_' AND"
        "   n.nspname <> 'information_schema'"
        " UNION SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON"
        "   n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND"
        "   n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND $1 LIKE '%.%'"
        " UNION SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN"
        "   pg_namespace n ON n.oid = c.relnamespace WHERE a.attnum > 0 AND NOT a.attisdropped AND"
        "   c.relkind IN ('r', 'p', 'v', 'm', 'f') AND n.nspname !~ '^pg_' AND"
        "   n.nspname <> 'information_schema'"
        ") x WHERE name LIKE $1 ORDER BY 1 LIMIT 500", 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
        for (int i = 0; i < PQntuples(r); i++)
            cand_add(c, PQgetvalue(r, i, 0), strlen(PQgetvalue(r, i, 0)));
    PQclear(r);
}

/* What the word before the cursor could be: a dot or backslash command, an
** option of the dot command, a file name (after .load, .read, .import, \i,
** \o, .output, .once), or a schema, table or column name (and a few SQL
** words at the start of a statement). */
static void complete_candidates(const char *buf, size_t pos, size_t start, cands *c)
{
    const char *word = buf + start;
    size_t wl = pos - start;
    size_t lead = 0;
    while (lead < start && isspace((unsigned char)buf[lead]))
        lead++;
    const char *first = buf + lead;
    size_t fl = strcspn(first, " \t");
    if (fl > pos - lead)
        fl = pos - lead;
    int first_word = start <= lead;
    if (first_word && wl && word[0] == '.') {
        for (const command *k = commands; k->name; k++)
            if (!strncmp(k->name, word + 1, wl - 1)) {
                char n[64];
                snprintf(n, sizeof n, ".%s", k->name);
                cand_add(c, n, strlen(n));
            }
        return;
    }
    if (first_word && wl && word[0] == '\\') {
        for (int i = 0; backslash_names[i]; i++)
            if (!strncmp(backslash_names[i], word + 1, wl - 1)) {
                char n[64];
                snprintf(n, sizeof n, "\\%s", backslash_names[i]);
                cand_add(c, n, strlen(n));
            }
        return;
    }
    if (first_word) {
        for (int i = 0; sql_words[i]; i++)
            if (wl && !strncasecmp(sql_words[i], word, wl))
                cand_add(c, sql_words[i], strlen(sql_words[i]));
        return;
    }
    char cmd[64], prev[64] = "";
    snprintf(cmd, sizeof cmd, "%.*s", (int)fl, first);
    int words = 0; /* words before the one completed */
    for (size_t k = lead; k < start; k++)
        if (!isspace((unsigned char)buf[k]) && (k == lead || isspace((unsigned char)buf[k - 1]))) {
            words++;
            snprintf(prev, sizeof prev, "%.*s", (int)strcspn(buf + k, " \t"), buf + k);
        }
    const command *dot = cmd[0] == '.' ? find_command(cmd + 1) : NULL;
    if (dot && !strcmp(dot->name, "migrate") && (!strcmp(prev, "--to") || !strcmp(prev, "--baseline"))) {
        complete_versions(c, buf + lead, start - lead, word, wl);
        return;
    }
    if (dot && prev[0] == '-' && prev[1] == '-') {
        /* the value of an option: its choices, or what the pipeline has */
        if (complete_pipeline(c, prev, word, wl))
            return;
        for (int s = 0; dot->spec && (s == 0 || dot->spec[s].sub); s++) {
            for (const optdef *d = dot->spec[s].opts; d && d->name; d++)
                if (d->kind == OPT_ENUM && (!strcmp(d->name, prev) || (d->alias && !strcmp(d->alias, prev))))
                    for (const char *ch = d->arg; *ch;) {
                        size_t n = strcspn(ch, "|");
                        if (n >= wl && !strncmp(ch, word, wl))
                            cand_add(c, ch, n);
                        ch += n + (ch[n] == '|');
                    }
            if (!dot->spec[s].sub)
                break;
        }
        if (c->n)
            return;
    }
    if (dot && words == 1 && (wl == 0 || word[0] != '-') && dot->spec) {
        /* the second word: a sub-command, or one of the choices the usage lists */
        if (dot->spec[0].sub) {
            for (int s = 0; dot->spec[s].sub; s++)
                if (*dot->spec[s].sub && !strncmp(dot->spec[s].sub, word, wl))
                    cand_add(c, dot->spec[s].sub, strlen(dot->spec[s].sub));
            if (c->n)
                return;
        } else if (dot->spec[0].args && strcspn(dot->spec[0].args, "|") <
                                            strcspn(dot->spec[0].args, " ")) {
            /* the first argument's choices: "[a|b|c] [TABLE]" */
            char first_arg[256];
            snprintf(first_arg, sizeof first_arg, "%.*s", (int)strcspn(dot->spec[0].args, " "),
                     dot->spec[0].args);
            for (const char *ch = first_arg; *ch;) {
                ch += strspn(ch, "[");
                size_t n = strcspn(ch, "|]");
                if (n >= wl && !strncmp(ch, word, wl))
                    cand_add(c, ch, n);
                ch += n;
                ch += strspn(ch, "|]");
            }
            return;
        }
    }
    if (cmd[0] == '.' && wl >= 1 && word[0] == '-') {
        const command *k = find_command(cmd + 1);
        for (int s = 0; k && k->spec && (s == 0 || k->spec[s].sub); s++) {
            for (const optdef *d = k->spec[s].opts; d && d->name; d++)
                if (!strncmp(d->name, word, wl))
                    cand_add(c, d->name, strlen(d->name));
            if (!k->spec[s].sub)
                break;
        }
        return;
    }
    static const char *const file_cmds[] = { ".load", ".read", ".import", ".once", ".output",
                                             ".run", "\\i", "\\ir", "\\include", "\\o", "\\e", NULL };
    for (int i = 0; file_cmds[i]; i++)
        if (!strcmp(cmd, file_cmds[i])) {
            /* .import FILE TABLE: the second word is a table */
            if (!strcmp(cmd, ".import") && words >= 2)
                break;
            complete_files(c, word, wl);
            return;
        }
    for (int i = 0; sql_words[i]; i++)
        if (wl && !strncasecmp(sql_words[i], word, wl) && isupper((unsigned char)word[0]))
            cand_add(c, sql_words[i], strlen(sql_words[i]));
    complete_names(c, word, wl);
}

/* Tab: the word before the cursor completed (one candidate: the whole of it
** and a space; several: what they share); a second Tab lists them. */
static void ed_complete(const char *prompt, char **bufp, size_t *cap, size_t *len, size_t *pos,
                        int again)
{
    char *buf = *bufp;
    size_t start = *pos;
    while (start > 0 && !isspace((unsigned char)buf[start - 1]) && buf[start - 1] != '(' &&
           buf[start - 1] != ',' && buf[start - 1] != '=')
        start--;
    buf[*len] = '\0';
    cands c = { NULL, 0, 0 };
    complete_candidates(buf, *pos, start, &c);
    if (c.n == 0) {
        cands_free(&c);
        return;
    }
    size_t common = strlen(c.v[0]);
    for (int i = 1; i < c.n; i++) {
        size_t k = 0;
        while (k < common && c.v[i][k] == c.v[0][k])
            k++;
        common = k;
    }
    size_t wl = *pos - start;
    const char *add = c.v[0] + (common >= wl ? wl : common);
    size_t addn = common > wl ? common - wl : 0;
    int space = c.n == 1 && c.v[0][strlen(c.v[0]) - 1] != '/' && c.v[0][strlen(c.v[0]) - 1] != '.';
    if (c.n > 1 && !addn && again) {
        /* the choices, in columns under the line; then the line again */
        size_t w = 0;
        for (int i = 0; i < c.n; i++)
            if (strlen(c.v[i]) > w)
                w = strlen(c.v[i]);
        int rows, cols;
        term_size(STDOUT_FILENO, &rows, &cols);
        int per = cols > 0 ? (int)((size_t)cols / (w + 2)) : 4;
        if (per < 1)
            per = 1;
        ed_refresh(prompt, buf, *len, *len);
        fputs("\r\n", stdout);
        for (int i = 0; i < c.n; i++)
            printf("%-*s%s", (int)w + 2, c.v[i], (i + 1) % per == 0 || i + 1 == c.n ? "\r\n" : "");
        ed_crow = 0;
    }
    if (addn || space) {
        size_t need = *len + addn + 2;
        if (need > *cap) {
            char *g = realloc(buf, need * 2);
            if (!g) {
                cands_free(&c);
                return;
            }
            buf = *bufp = g;
            *cap = need * 2;
        }
        memmove(buf + *pos + addn + (size_t)space, buf + *pos, *len - *pos);
        memcpy(buf + *pos, add, addn);
        if (space)
            buf[*pos + addn] = ' ';
        *len += addn + (size_t)space;
        *pos += addn + (size_t)space;
    }
    cands_free(&c);
}

/* Ctrl-R: psql's (readline's) reverse search of the history. Typing narrows
** it, Ctrl-R again finds an older match, Backspace widens it; Enter takes
** the line found (and runs it), Ctrl-G or Esc leaves the line as it was, any
** other key takes the line found for editing. Returns 1 when Enter ended it. */
static int ed_search(char **bufp, size_t *cap, size_t *len, size_t *pos)
{
    char q[256] = "";
    size_t ql = 0;
    int at = ed.nhistory, found = -1;
    char *saved = strndup(*bufp, *len);
    for (;;) {
        char prompt[400];
        const char *shown = found >= 0 ? ed.history[found] : "";
        snprintf(prompt, sizeof prompt, "(%sreverse-i-search)`%s': ",
                 ql && found < 0 ? "failed " : "", q);
        const char *hit = found >= 0 && ql ? strstr(shown, q) : NULL;
        ed_refresh(prompt, shown, strlen(shown), hit ? (size_t)(hit - shown) : strlen(shown));
        unsigned char k;
        ssize_t r = read(STDIN_FILENO, &k, 1);
        if (r < 0 && errno == EINTR && !terminating)
            continue;
        if (r <= 0 || k == 7 || k == 27 || k == 3) { /* Ctrl-G, Esc, Ctrl-C: as it was */
            if (saved) {
                free(*bufp);
                *bufp = saved;
                *len = *pos = strlen(saved);
                *cap = *len + 1;
            }
            return 0;
        }
        if (k == 18 || ((k == 127 || k == 8) && ql) || (k >= 32 && k < 127 && ql + 1 < sizeof q)) {
            int from = at;
            if (k == 127 || k == 8) {
                q[--ql] = '\0';
                from = ed.nhistory;
            } else if (k != 18) {
                q[ql++] = (char)k;
                q[ql] = '\0';
                from = found >= 0 ? found + 1 : ed.nhistory;
            }
            found = -1;
            for (int i = from - 1; i >= 0 && ql; i--)
                if (strstr(ed.history[i], q)) {
                    found = i;
                    break;
                }
            if (found >= 0)
                at = found;
            continue;
        }
        /* any other key: the line found is taken */
        const char *take = found >= 0 ? ed.history[found] : saved ? saved : "";
        size_t n = strlen(take);
        char *g = malloc(n + 256);
        if (g) {
            memcpy(g, take, n + 1);
            free(*bufp);
            *bufp = g;
            *cap = n + 256;
            *len = *pos = n;
        }
        free(saved);
        return k == '\r' || k == '\n';
    }
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
    int last_tab = 0;
    ed_crow = 0;
    /* while a line is edited a resize redraws it (no SA_RESTART: read returns) */
    struct sigaction wsa, old_winch;
    memset(&wsa, 0, sizeof wsa);
    wsa.sa_handler = on_winch;
    sigemptyset(&wsa.sa_mask);
    sigaction(SIGWINCH, &wsa, &old_winch);
    ed_raw(1);
    ed_refresh(prompt, buf, len, pos);
    for (;;) {
        unsigned char c;
        ssize_t r = read(STDIN_FILENO, &c, 1);
        if (r <= 0) {
            if (r < 0 && errno == EINTR && !terminating) {
                if (winched) { /* the terminal was resized: draw the line again */
                    winched = 0;
                    ed_refresh(prompt, buf, len, pos);
                }
                continue;
            }
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
        /* Tab completes after a word, or anywhere in a dot or backslash command
        ** (a tab pasted into SQL stays a tab) */
        int tab = c == '\t' && pos > 0 &&
                  (!isspace((unsigned char)buf[pos - 1]) || buf[0] == '.' || buf[0] == '\\');
        if (c == '\r' || c == '\n') {
            break;
        } else if (tab) {
            ed_complete(prompt, &buf, &cap, &len, &pos, last_tab);
        } else if (c == 18) { /* Ctrl-R */
            if (ed_search(&buf, &cap, &len, &pos))
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
        last_tab = tab;
        ed_refresh(prompt, buf, len, pos);
    }
    free(draft);
    if (buf) {
        buf[len] = '\0';
        if (!ed.cancelled)
            ed_refresh(prompt, buf, len, len); /* below the whole line */
        fputs("\r\n", stdout);
    } else {
        fputs("\r\n", stdout);
    }
    sigaction(SIGWINCH, &old_winch, NULL);
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
** shows it, \g (\gx, \gset) runs it; any other command runs and the
** statement is kept. */
/* psql's \copy takes the rest of its line as it is: no :variables */
static int is_slash_copy(const char *line)
{
    while (isspace((unsigned char)*line))
        line++;
    return !strncmp(line, "\\copy", 5) && (!line[5] || isspace((unsigned char)line[5]));
}

static int run_meta_in_buffer(shell *sh, const char *line, char **sql, size_t *len,
                              long long first_line)
{
    if (is_slash_copy(line))
        return run_backslash_in(sh, line, sql, len, first_line);
    char *expanded = interpolate(sh, line, INTERP_BACKSLASH);
    if (!expanded)
        return 1;
    int rc = run_backslash_in(sh, expanded, sql, len, first_line);
    free(expanded);
    return rc;
}

/* \if EXPR, \elif EXPR, \else, \endif: 1 when line is one of them (done
** here), 0 otherwise. */
static int cond_line(shell *sh, const char *line, int *rc)
{
    while (isspace((unsigned char)*line))
        line++;
    if (line[0] != '\\')
        return 0;
    size_t n = strcspn(line + 1, " \t");
    const char *name = line + 1;
    int is_if = n == 2 && !strncmp(name, "if", 2), is_elif = n == 4 && !strncmp(name, "elif", 4);
    int is_else = n == 4 && !strncmp(name, "else", 4), is_endif = n == 5 && !strncmp(name, "endif", 5);
    if ((!is_if && !is_elif && !is_else && !is_endif) || sh->restrict_key[0])
        return 0; /* (restricted: refused as any other backslash command) */
    int top = sh->ncond ? sh->cond[sh->ncond - 1] : COND_TRUE;
    if ((is_elif || is_else || is_endif) && sh->ncond <= sh->cond_base) {
        /* (an \if of the script that included this one is not this one's) */
        errorf("\\%.*s: no matching \\if", (int)n, name);
        sh->failures++;
        *rc = 1;
        return 1;
    }
    if ((is_elif || is_else) && sh->cond_else[sh->ncond - 1]) {
        errorf("\\%.*s: cannot occur after \\else", (int)n, name);
        sh->failures++;
        *rc = 1;
        return 1;
    }
    int evaluate = (is_if && top == COND_TRUE) || (is_elif && top == COND_FALSE);
    int value = 0;
    *rc = 0;
    if (evaluate) {
        char *text = interpolate(sh, name + n, INTERP_DOT), *argv[8];
        int argc = text ? split_words(text, argv, 8) : -1;
        if (argc != 1 || (value = parse_bool(argv[0])) < 0) {
            errorf("\\%.*s: expected one boolean (true, false, on, off, 1, 0), got \"%s\"", (int)n,
                   name, argc >= 1 ? argv[0] : "");
            value = 0;
            *rc = 1;
            sh->failures++;
        }
        free(text);
    }
    if (is_if) {
        if (sh->ncond == COND_MAX) {
            errorf("\\if: nested too deep");
            *rc = 1;
            return 1;
        }
        sh->cond_else[sh->ncond] = 0;
        sh->cond[sh->ncond++] = top != COND_TRUE ? COND_IGNORED : value ? COND_TRUE : COND_FALSE;
    } else if (is_elif) {
        int *c = &sh->cond[sh->ncond - 1];
        *c = *c == COND_FALSE ? (value ? COND_TRUE : COND_FALSE) :
             *c == COND_TRUE ? COND_DONE : *c;
    } else if (is_else) {
        sh->cond_else[sh->ncond - 1] = 1;
        int *c = &sh->cond[sh->ncond - 1];
        *c = *c == COND_FALSE ? COND_TRUE : *c == COND_TRUE ? COND_DONE : *c;
    } else {
        sh->ncond--;
    }
    return 1;
}

/* The position of a backslash command at the end of a SQL line ("SELECT 1
** \gset"), when the buffer before it is outside quotes and comments, else -1. */
static ssize_t trailing_meta(const char *sql, size_t len, const char *line)
{
    for (const char *p = line; (p = strchr(p, '\\')) != NULL; p++) {
        if (!isalpha((unsigned char)p[1]) && p[1] != '?')
            continue;
        size_t k = (size_t)(p - line);
        char *both = malloc(len + k + 1);
        if (!both)
            return -1;
        memcpy(both, sql, len);
        memcpy(both + len, line, k);
        int takes = buffer_takes_meta(both, len + k);
        free(both);
        if (takes)
            return (ssize_t)k;
    }
    return -1;
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
    int saved_ncond = sh->ncond, saved_base = sh->cond_base;
    sh->cond_base = sh->ncond;
    for (;;) {
        ssize_t n;
        if (terminating)
            break;
        if (tty) {
            /* a Ctrl-C ended what ran before this prompt; it is done with */
            interrupted = 0;
            free(line);
            /* psql's %x: * inside a transaction, ! in a failed one */
            PGTransactionStatusType ts = sh->conn ? PQtransactionStatus(sh->conn) : PQTRANS_IDLE;
            const char *x = ts == PQTRANS_INTRANS ? "*" : ts == PQTRANS_INERROR ? "!" : "";
            char prompt[64];
            if (len)
                snprintf(prompt, sizeof prompt, "   ...%s> ", x);
            else
                snprintf(prompt, sizeof prompt, "pgpipe%s> ", x);
            line = ed_readline(prompt);
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
            errno = 0;
            n = getline(&line, &cap, f);
            if (n < 0) {
                if (ferror(f) && errno) { /* a directory, an I/O error: not an end */
                    errorf("cannot read %s: %s", sh->source, strerror(errno));
                    sh->failures++;
                    rc = 1;
                }
                break;
            }
            const char *nul = memchr(line, '\0', (size_t)n);
            if (nul) {
                /* the rest of the line would be cut off unseen: a statement
                ** run short (a DELETE without its WHERE) */
                where_source = sh->source;
                where_line = lineno + 1;
                errorf("a NUL byte at column %lld: a script is text; it stops here",
                       (long long)(nul - line) + 1);
                where_source = NULL;
                sh->failures++;
                rc = 1;
                len = 0;
                break;
            }
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
            line[--n] = '\0';
        lineno++;
        /* a UTF-8 byte order mark opening a script (Windows editors write
        ** one) is not SQL: skipped, as psql and the migrations skip it */
        if (lineno == 1 && !tty && n >= 3 && !memcmp(line, "\xEF\xBB\xBF", 3)) {
            memmove(line, line + 3, (size_t)n - 2);
            n -= 3;
        }
        if (len == 0)
            first_line = lineno;
        rc = 0;
        if (sh->located) {
            where_source = sh->source;
            where_line = lineno;
        }
        int conditional = (len == 0 || buffer_takes_meta(sql, len)) && cond_line(sh, line, &rc);
        where_source = NULL;
        if (conditional) {
            if (tty)
                ed_history_add(line);
            if (rc && !tty && stops(sh))
                break;
            continue;
        }
        if (sh->ncond && sh->cond[sh->ncond - 1] != COND_TRUE)
            continue; /* a branch of \if that does not run */
        ssize_t meta = -1;
        if (!(len == 0 && (line[0] == '.' || is_backslash_line(line))) && strchr(line, '\\') &&
            (meta = trailing_meta(sql ? sql : "", len, line)) > 0) {
            /* "SELECT ... \gset": the SQL joins the buffer, then the command runs */
            char *grown = realloc(sql, len + (size_t)meta + 2);
            if (!grown) {
                rc = 1;
                break;
            }
            sql = grown;
            memcpy(sql + len, line, (size_t)meta);
            len += (size_t)meta;
            sql[len++] = '\n';
            sql[len] = '\0';
            memmove(line, line + meta, strlen(line + meta) + 1);
            n = (ssize_t)strlen(line);
        }
        if (len == 0 && (line[0] == '.' || is_backslash_line(line))) {
            if (tty)
                ed_history_add(line);
            if (sh->located) {
                where_source = sh->source;
                where_line = lineno;
            }
            if (line[0] == '.') {
                rc = run_command(sh, line);
            } else {
                FILE *once = sh->oncefile;
                rc = run_meta_in_buffer(sh, line, &sql, &len, first_line);
                once_done(sh, once);
            }
            where_source = NULL;
            if (len && may_complete(sql, len) && run_buffer(sh, sql, len, first_line, 0, &rc))
                len = 0; /* \e left a complete statement: it runs */
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
        if (rc == 2 || (rc && !tty && stops(sh)) || sh->script_fatal)
            break;
        if ((interrupted && !tty) || terminating) /* Ctrl-C ends a script, as in psql */
            break;
    }
    if (len && rc != 2 && !(rc && !tty && stops(sh)) && !interrupted && !terminating &&
        !sh->script_fatal) {
        size_t k = 0;
        while (k < len && isspace((unsigned char)sql[k]))
            k++;
        if (k < len)
            run_buffer(sh, sql, len, first_line, 1, &rc);
    }
    if (sh->ncond > saved_ncond) {
        if (sh->located) {
            where_source = sh->source;
            where_line = lineno;
        }
        errorf("\\if without \\endif at the end of %s", tty ? "the input" : sh->source);
        where_source = NULL;
        sh->failures++;
    }
    sh->ncond = saved_ncond;
    sh->cond_base = saved_base;
    free(sql);
    free(line);
    sh->located = saved_located;
    return rc == 2 ? 2 : 0;
}

/* ---- main ---------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pgpipe [options] [CONNINFO|DBNAME] [COMMAND ...] [options]\n"
            "  CONNINFO          a libpq connection string or URI (default: the PG* variables);\n"
            "                    a bare name is a database (pgpipe mydb, as psql mydb)\n"
            "  COMMAND           SQL or a dot command; run in order, then exit\n"
            "options (anywhere before --; after -- every argument is a COMMAND):\n"
            "  -c, --command CMD run CMD (SQL, a dot or a backslash command); -c and -f may be\n"
            "                    given several times and run in the order given, then exit\n"
            "  -f, --file FILE   run the SQL and dot commands in FILE (- for stdin), then exit\n"
            "  -d, --dbname DB   the database (a name or a CONNINFO)\n"
            "  -l, --list        list the databases and exit\n"
            "  -1, --single-transaction\n"
            "                    run the -c/-f commands in one transaction (rolled back when\n"
            "                    ON_ERROR_STOP stopped them)\n"
            "  -v, --set NAME=VALUE\n"
            "                    set a variable (:NAME in SQL; ON_ERROR_STOP=1 stops a script\n"
            "                    at its first error, exit status 3)\n"
            "  -t, --tuples-only rows only: no column names, no row count\n"
            "  -A, --no-align    unaligned output (.mode unaligned): fields joined by -F\n"
            "  -F, --field-separator SEP\n"
            "                    between fields with -A (default |)\n"
            "  -R, --record-separator SEP\n"
            "                    after each row with -A (default newline)\n"
            "  -e, --echo-queries\n"
            "                    print each statement before it runs\n"
            "  -q, --quiet       no banner, no command tags, no \"Timing is on.\"\n"
            "  -X, --no-psqlrc   do not run the rc file ($PGPIPE_RC, else ~/.pgpipe_rc), which\n"
            "                    otherwise runs first (its errors are said, not fatal)\n"
            "  -b, --bail        stop at the first failing command\n");
    fprintf(f,
            "  -m, --mode MODE   output mode: aligned (default), csv, json, line, table, box,\n"
            "                    markdown, insert, unaligned\n"
            "  --local DIR       no CONNINFO: start (or reuse) a private PostgreSQL server in\n"
            "                    DIR and connect to it; stopped when the run ends (however it\n"
            "                    ends, even killed) if this run started it\n"
            "  --keep            with --local: leave the server running on exit\n"
            "  --fast            with --local: a new cluster runs with fsync off (throwaway data)\n"
            "  --pooler MODE     what sits between pgpipe and the server: session (a direct\n"
            "                    connection or a session-mode pooler), transaction (pgbouncer\n"
            "                    pool_mode = transaction: unnamed statements, no LISTEN, the\n"
            "                    workers poll) or auto (default: a pooler is detected and taken\n"
            "                    for transaction mode); sets $PGPIPE_POOLER for .load, .work,\n"
            "                    .migrate and every other component\n"
            "  -h, --help        show this help\n"
            "  -V, --version     show the version\n"
            "pgpipe run [--db CONNINFO] [--for DURATION] [--instance NAME] [--on-alert CMD]\n"
            "           [--token-env VAR] PIPELINE\n"
            "                    the pipeline runner: runs the file's setup, sources, workers,\n"
            "                    schedules and alerts as a service (the database: --db, else the\n"
            "                    PG* variables) until SIGTERM or Ctrl-C, which drain it (status\n"
            "                    0; a second one stops at once, status 1); SIGHUP reloads the\n"
            "                    file; --for stops it after a time (90, 30s, 5m, 2h); the\n"
            "                    status page's actions need the bearer token in $VAR\n"
            "pgpipe spool check|status DIR | add DIR FILE [--device ID] | drain DIR [--db CONNINFO]\n"
            "                    the store-and-forward spool without the shell (.help spool)\n"
            "pgpipe run --check PIPELINE\n"
            "                    validate the pipeline file without a database: FILE:LINE:\n"
            "                    message per problem (status 1) or a summary (status 0)\n"
            "A bad option, or one without its value, exits with status 2 before anything runs.\n"
            "Exit status (as psql's): 0 ok, 1 a command failed, 2 the connection could not be\n"
            "made, 3 a script stopped by ON_ERROR_STOP (-b stops with 1, as sqlite3's -bail).\n"
            "Interactive when stdin is a terminal: SQL may span lines and ends with ';',\n"
            "dot commands take one line (.help lists them), and so do psql's backslash commands\n"
            "(\\? lists them; every dot command has its backslash form too: \\stats); history in\n"
            "~/.pgpipe_history. In a script an error reads FILE:LINE: error: ... and the exit\n"
            "status is 1. SIGTERM, SIGHUP and SIGQUIT cancel the running statement and end the\n"
            "run (status 128+signal).\n"
            "As a service: pgpipe CONNINFO '.serve --listen 127.0.0.1:8080' runs the HTTP ingest\n"
            "server (.help serve); there SIGTERM drains it and ends with status 0, and SIGHUP\n"
            "reloads its tokens.\n");
}

#define RUN_USAGE "usage: pgpipe run [--check] [--db CONNINFO] [--for DURATION] " \
                  "[--instance NAME] [--on-alert CMD] [--token-env VAR] PIPELINE\n"

/* pgpipe run [options] PIPELINE: run the pipeline as a service (the
** database from --db, else the PG* variables); with --check the file is
** read and checked offline (no connection is made). */
static int run_main(int argc, char **argv)
{
    int check = 0;
    const char *file = NULL, *db = "";
    pgpipe_run_options o;
    pgpipe_run_options_init(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--check")) {
            check = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            fputs(RUN_USAGE
                  "Runs the pipeline file's setup, sources, workers, schedules and alerts as a\n"
                  "service until SIGTERM or Ctrl-C, which drain it (status 0; a second one stops\n"
                  "at once, status 1). SIGHUP reloads the file (a file with problems is refused\n"
                  "and the running pipeline kept).\n"
                  "  --check          read and check the file only, offline: FILE:LINE: message\n"
                  "                   per problem (status 1) or a summary (status 0)\n"
                  "  --db CONNINFO    the database (default: the PG* variables)\n"
                  "  --for DURATION   stop by itself after this long (90, 30s, 5m, 2h, 1d)\n"
                  "  --instance NAME  this instance's name in the history (default HOST:PID)\n"
                  "  --on-alert CMD   run CMD (sh -c) for every alert, the alert as JSON on stdin\n"
                  "  --token-env VAR  the status page's actions need the bearer token in $VAR\n"
                  "Directly to PostgreSQL or through a session-mode pooler (PGPIPE_POOLER=session):\n"
                  "the runner holds session advisory locks, and refuses a transaction-mode one.\n",
                  stdout);
            return 0;
        } else if (!strcmp(a, "--db") || !strcmp(a, "--for") || !strcmp(a, "--instance") ||
                   !strcmp(a, "--on-alert") || !strcmp(a, "--token-env")) {
            if (!has) {
                fprintf(stderr, "pgpipe run: %s needs a value\n" RUN_USAGE, a);
                return 2;
            }
            const char *v = argv[++i];
            if (!strcmp(a, "--db")) {
                db = v;
            } else if (!strcmp(a, "--for")) {
                if ((o.run_for_ms = run_parse_duration(v)) <= 0) {
                    fprintf(stderr, "pgpipe run: --for: \"%s\" is not a duration (90, 30s, "
                            "5m, 2h, 1d)\n", v);
                    return 2;
                }
            } else if (!strcmp(a, "--instance")) {
                o.instance = v;
            } else if (!strcmp(a, "--token-env")) {
                if (!(o.http_token = getenv(v)) || !*o.http_token) {
                    fprintf(stderr, "pgpipe run: --token-env: the environment variable %s is "
                            "not set\n", v);
                    return 2;
                }
            } else {
                o.on_alert = v;
            }
        } else if (a[0] == '-' && a[1]) {
            fprintf(stderr, "pgpipe run: unknown option %s\n" RUN_USAGE, a);
            return 2;
        } else if (!file) {
            file = a;
        } else {
            fprintf(stderr, "pgpipe run: one PIPELINE file, got \"%s\" too\n", a);
            return 2;
        }
    }
    if (!file) {
        fputs(RUN_USAGE, stderr);
        return 2;
    }
    if (check)
        return run_check_file(file, 1);
    return run_pipeline(db, file, &o);
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

/* A bare database name as CONNINFO (pgpipe mydb, as psql mydb): one word
** of name characters that is not a statement complete on its own. */
static int is_dbname(const char *s)
{
    static const char *const alone[] = { "begin", "commit", "rollback", "end", "abort",
                                         "checkpoint", "vacuum", "analyze", "analyse",
                                         "cluster", "listen", "discard", NULL };
    if (!isalpha((unsigned char)*s) && *s != '_')
        return 0;
    for (const char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '$')
            return 0;
    for (int i = 0; alone[i]; i++)
        if (!strcasecmp(s, alone[i]))
            return 0;
    return 1;
}

/* The command line: options may come anywhere before "--" (as in psql and
** sqlite3); after "--" every argument is a command. -c COMMAND and -f FILE
** run in the order given, as in psql. */
typedef struct cli {
    const char *file, *local_dir, *conninfo;
    int keep, fast, help, version, list, norc, single;
    char **cmds;  /* the commands, in order: -c and plain arguments ("\x01FILE": -f FILE) */
    int ncmds;
    int nfiles, npos;
    char dbinfo[1024]; /* dbname=NAME for a bare database name or -d */
} cli;

static void shell_free(shell *sh)
{
    fflush(sh->out);
    output_close(sh);
    for (int i = 0; i < sh->nvars; i++) {
        free(sh->vars[i].name);
        free(sh->vars[i].value);
    }
    free(sh->vars);
    free(sh->last_sql);
    free(sh->last_error);
    PQclear(sh->last_error_res);
    sh->last_error_res = NULL;
    free(sh->last_dot);
    free(sh->nullstr);
    free(sh->fieldsep);
    free(sh->recordsep);
    free(sh->insert_table);
    sh->vars = NULL;
    sh->nvars = 0;
}

static void cli_free(cli *c)
{
    for (int j = 0; c->cmds && j < c->ncmds; j++)
        if (c->cmds[j][0] == '\x01')
            free(c->cmds[j]);
    free(c->cmds);
}

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
    int dashdash = 0, first_pos = -1;
    const char *dbopt = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!dashdash && a[0] == '-' && a[1] != '-' && a[2] && strspn(a + 1, "tAXeqlb1") == strlen(a + 1)) {
            /* psql's bundled flags: -tA, -qX */
            for (const char *f = a + 1; *f; f++) {
                char one[3] = { '-', *f, '\0' };
                char *av[3] = { argv[0], one, NULL };
                cli sub;
                shell probe = *sh;
                if (parse_cli(&probe, &sub, 2, av)) {
                    cli_free(&sub);
                    return 2;
                }
                *sh = probe;
                c->norc |= sub.norc;
                c->list |= sub.list;
                c->single |= sub.single;
                cli_free(&sub);
            }
            continue;
        }
        if (dashdash || a[0] != '-' || !a[1]) {
            if (first_pos < 0)
                first_pos = c->ncmds;
            c->npos++;
            c->cmds[c->ncmds++] = argv[i];
            continue;
        }
        /* options that take a value: "-f FILE", "-fFILE", "--file FILE" or "--file=FILE" */
        const char *val = NULL, *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
        char name[64];
        snprintf(name, sizeof name, "%.*s", eq ? (int)(eq - a) : (int)strlen(a), a);
        static const char *const with_value[] = {
            "-f", "--file", "-m", "--mode", "--local", "--pooler", "-c", "--command", "-F",
            "--field-separator", "-R", "--record-separator", "-v", "--set", "--variable", "-d",
            "--dbname", NULL };
        int takes = 0;
        for (int k = 0; with_value[k]; k++)
            if (!strcmp(name, with_value[k]))
                takes = 1;
        if (!takes && a[1] != '-' && a[2] && strchr("cfFRvdm", a[1])) {
            /* psql's glued form: -cSELECT, -vX=1 */
            name[2] = '\0';
            val = a + 2;
        } else if (takes) {
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
        } else if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "-?")) {
            c->help = 1;
        } else if (!strcmp(name, "-V") || !strcmp(name, "--version")) {
            c->version = 1;
        } else if (!strcmp(name, "-b") || !strcmp(name, "--bail")) {
            sh->bail = 1;
        } else if (!strcmp(name, "-f") || !strcmp(name, "--file")) {
            char *tagged = malloc(strlen(val) + 2);
            if (!tagged)
                return 2;
            tagged[0] = '\x01';
            strcpy(tagged + 1, val);
            c->cmds[c->ncmds++] = tagged;
            c->nfiles++;
            c->file = val;
        } else if (!strcmp(name, "-c") || !strcmp(name, "--command")) {
            c->cmds[c->ncmds++] = (char *)val;
        } else if (!strcmp(name, "-m") || !strcmp(name, "--mode")) {
            char *mv[2] = { (char *)"mode", (char *)val };
            if (cmd_mode(sh, mv, 2, ""))
                return 2;
        } else if (!strcmp(name, "-t") || !strcmp(name, "--tuples-only")) {
            sh->tuples_only = 1;
        } else if (!strcmp(name, "-A") || !strcmp(name, "--no-align")) {
            sh->mode = MODE_UNALIGNED;
        } else if (!strcmp(name, "-F") || !strcmp(name, "--field-separator")) {
            free(sh->fieldsep);
            sh->fieldsep = strdup(val);
        } else if (!strcmp(name, "-R") || !strcmp(name, "--record-separator")) {
            free(sh->recordsep);
            sh->recordsep = strdup(val);
        } else if (!strcmp(name, "-v") || !strcmp(name, "--set") || !strcmp(name, "--variable")) {
            const char *e = strchr(val, '=');
            char vn[256];
            if (!e || e == val || (size_t)(e - val) >= sizeof vn) {
                fprintf(stderr, "pgpipe: %s %s: expected NAME=VALUE\n", name, val);
                return 2;
            }
            snprintf(vn, sizeof vn, "%.*s", (int)(e - val), val);
            if (!var_name_ok(vn)) {
                fprintf(stderr, "pgpipe: %s %s: invalid variable name: \"%s\" (letters, digits "
                        "and _)\n", name, val, vn);
                return 2;
            }
            if (var_set(sh, vn, e + 1))
                return 2;
        } else if (!strcmp(name, "-d") || !strcmp(name, "--dbname")) {
            dbopt = val;
        } else if (!strcmp(name, "-e") || !strcmp(name, "--echo-queries")) {
            sh->echo = 1;
        } else if (!strcmp(name, "-q") || !strcmp(name, "--quiet")) {
            sh->quiet = 1;
        } else if (!strcmp(name, "-X") || !strcmp(name, "--no-psqlrc") || !strcmp(name, "--no-rc")) {
            c->norc = 1;
        } else if (!strcmp(name, "-1") || !strcmp(name, "--single-transaction")) {
            c->single = 1;
        } else if (!strcmp(name, "-l") || !strcmp(name, "--list")) {
            c->list = 1;
        } else if (!strcmp(name, "--local")) {
            if (!*val) {
                fprintf(stderr, "pgpipe: --local: needs a directory (the server's data and "
                        "socket)\n");
                return 2;
            }
            c->local_dir = val;
        } else if (!strcmp(name, "--pooler")) {
            if (strcmp(val, "session") && strcmp(val, "transaction") && strcmp(val, "auto")) {
                fprintf(stderr, "pgpipe: --pooler %s: expected session, transaction or auto\n",
                        val);
                return 2;
            }
            /* every component the shell opens reads it (pgpipe_pooler_mode) */
            setenv("PGPIPE_POOLER", val, 1);
        } else if (!strcmp(name, "--keep")) {
            c->keep = 1;
        } else if (!strcmp(name, "--fast")) {
            c->fast = 1;
        } else {
            fprintf(stderr, "pgpipe: unknown option %s (pgpipe --help lists the options)\n", a);
            return 2;
        }
    }
    /* the first plain argument is CONNINFO when it is one (or a database name) */
    if (first_pos >= 0 && !dbopt) {
        const char *w = c->cmds[first_pos];
        if (is_conninfo(w))
            c->conninfo = w;
        else if (is_dbname(w))
            dbopt = w;
        if (is_conninfo(w) || dbopt) {
            memmove(c->cmds + first_pos, c->cmds + first_pos + 1,
                    sizeof *c->cmds * (size_t)(c->ncmds - first_pos));
            c->ncmds--;
            c->npos--;
        }
    }
    if (dbopt) {
        if (is_conninfo(dbopt)) {
            c->conninfo = dbopt;
        } else {
            /* quoted for libpq: backslashes and quotes escaped */
            size_t o = (size_t)snprintf(c->dbinfo, sizeof c->dbinfo, "dbname='");
            for (const char *p = dbopt; *p && o + 4 < sizeof c->dbinfo; p++) {
                if (*p == '\'' || *p == '\\')
                    c->dbinfo[o++] = '\\';
                c->dbinfo[o++] = *p;
            }
            c->dbinfo[o++] = '\'';
            c->dbinfo[o] = '\0';
            c->conninfo = c->dbinfo;
        }
    }
    if (c->nfiles && c->npos) {
        for (int j = 0; j < c->ncmds; j++)
            if (c->cmds[j][0] != '\x01') {
                fprintf(stderr, "pgpipe: give either -f FILE or COMMANDs, not both (\"%s\")\n",
                        c->cmds[j]);
                break;
            }
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
    sh.border = 1;
    sh.pager = 1;
    if (argc > 1 && !strcmp(argv[1], "run"))
        return run_main(argc - 1, argv + 1);
#ifndef PGPIPE_OMIT_SPOOL
    if (argc > 1 && !strcmp(argv[1], "spool"))
        return spool_main(argc - 1, argv + 1);
#endif
    cli c;
    int rc = parse_cli(&sh, &c, argc, argv);
    if (rc) {
        cli_free(&c);
        shell_free(&sh);
        return rc;
    }
    if (c.help || c.version) {
        if (c.help)
            usage(stdout);
        else
            printf("pgpipe %s\n", pgpipe_libversion());
        cli_free(&c);
        shell_free(&sh);
        return 0;
    }

    /* .help needs no server */
    if (!c.nfiles && c.ncmds && !c.list) {
        int all_help = 1;
        for (int j = 0; j < c.ncmds; j++)
            if ((strncmp(c.cmds[j], ".help", 5) != 0 || (c.cmds[j][5] && c.cmds[j][5] != ' ')) &&
                strcmp(c.cmds[j], "\\?"))
                all_help = 0;
        if (all_help) {
            for (int j = 0; j < c.ncmds; j++)
                rc |= run_command(&sh, c.cmds[j]);
            cli_free(&c);
            shell_free(&sh);
            return rc ? 1 : 0;
        }
    }

    /* the scripts are checked before anything starts: a missing file runs nothing */
    FILE *script = NULL;
    for (int j = 0; j < c.ncmds; j++)
        if (c.cmds[j][0] == '\x01' && strcmp(c.cmds[j] + 1, "-")) {
            FILE *t = fopen(c.cmds[j] + 1, "r");
            if (!t) {
                fprintf(stderr, "pgpipe: cannot open %s: %s\n", c.cmds[j] + 1, strerror(errno));
                cli_free(&c);
                shell_free(&sh);
                return 1;
            }
            fclose(t);
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
            status = 2;
            goto done;
        }
        conninfo = local_info;
    }

    sh.conn = PQconnectdb(conninfo);
    if (PQstatus(sh.conn) != CONNECTION_OK) {
        char msg[2048];
        pgpipe_conninfo_mask(PQerrorMessage(sh.conn), msg, sizeof msg);
        fprintf(stderr, "pgpipe: cannot connect: %s", msg);
        status = 2; /* as psql: the connection to the server went bad */
        goto done;
    }
    connection_ready(&sh);
    sh.interactive = !c.ncmds && !c.list && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);

    /* the rc file (~/.pgpipe_rc, or $PGPIPE_RC), unless -X: its errors are
    ** said but do not make the run fail */
    if (!c.norc && !terminating && !interrupted) {
        char rcpath[1024] = "";
        const char *env = getenv("PGPIPE_RC"), *home = getenv("HOME");
        if (env && *env)
            snprintf(rcpath, sizeof rcpath, "%s", env);
        else if (home && *home)
            snprintf(rcpath, sizeof rcpath, "%s/.pgpipe_rc", home);
        FILE *rf = *rcpath ? fopen(rcpath, "r") : NULL;
        if (rf) {
            int saved_failures = sh.failures, saved_inter = sh.interactive;
            sh.source = rcpath;
            sh.interactive = 0;
            run_stream(&sh, rf);
            fclose(rf);
            sh.source = "<stdin>";
            sh.failures = saved_failures;
            sh.interactive = saved_inter;
            sh.script_fatal = 0; /* (a \c there that failed: the session goes on) */
        }
    }

    if (terminating || interrupted) {
        /* a signal while starting up */
    } else if (c.list) {
        run_command(&sh, "\\l");
    } else if (c.ncmds) {
        sh.single = c.single;
        if (c.single)
            exec_quiet(sh.conn, "BEGIN");
        for (int j = 0; j < c.ncmds && !interrupted && !terminating; j++) {
            int before = sh.failures, r;
            if (c.cmds[j][0] == '\x01') {
                const char *name = c.cmds[j] + 1;
                script = !strcmp(name, "-") ? stdin : fopen(name, "r");
                if (!script) {
                    fprintf(stderr, "pgpipe: cannot open %s: %s\n", name, strerror(errno));
                    sh.failures++;
                    break;
                }
                sh.source = name;
                r = run_stream(&sh, script);
                if (script != stdin)
                    fclose(script);
                script = NULL;
                sh.source = "<stdin>";
            } else {
                r = run_command(&sh, c.cmds[j]);
            }
            if (r == 2 || (sh.failures > before && stops(&sh)) || sh.script_fatal)
                break;
        }
        if (c.single && PQstatus(sh.conn) == CONNECTION_OK) {
            PGTransactionStatusType ts = PQtransactionStatus(sh.conn);
            if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR)
                exec_quiet(sh.conn, sh.failures && sh.stop_exit ? "ROLLBACK" : "COMMIT");
        }
    } else {
        ed_shell = &sh;
        if (sh.interactive) {
            if (!sh.quiet)
                printf("pgpipe %s - connected to %s. Type .help for help (or \\?), .quit to leave.\n",
                       pgpipe_libversion(), PQdb(sh.conn));
            ed_history_load();
        }
        run_stream(&sh, stdin);
        if (sh.interactive)
            ed_history_save();
    }
    /* errors in an interactive session were shown to the person at once;
    ** a script ended by ON_ERROR_STOP exits 3, as psql's */
    status = sh.failures && !sh.interactive ? (sh.stop_exit ? 3 : 1) : 0;
    if (sh.script_fatal)
        status = 2; /* as psql: the connection to the server went bad */
done:
    if (terminating) {
        if (terminating != SIGPIPE) /* the reader went away: nothing to tell */
            fprintf(stderr, "pgpipe: stopped by signal %d\n", (int)terminating);
        status = 128 + (int)terminating;
    }
    set_cancel_handle(NULL);
    PQfinish(sh.conn);
    shell_free(&sh);
    if (script && script != stdin)
        fclose(script);
    if (local_started && !c.keep) {
        pgpipe_error err;
        if (pgpipe_local_stop(c.local_dir, &lopt, &err) != PGPIPE_OK) {
            fprintf(stderr, "pgpipe: %s\n", err.message);
            status = status ? status : 1;
        }
    }
    cli_free(&c);
    return status;
}
