/*
** pgtmp: the throwaway PostgreSQL clusters of the tests, benchmarks and demo,
** on top of the library's private local server (pgpipe_local_*). Like the
** shell, it uses only pgpipe.h. tool/pgtmp.sh builds it into build/pgtmp and
** runs it; see USAGE below for the command line.
*/
#define _XOPEN_SOURCE 700
#include "pgpipe.h"

#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static const char USAGE[] =
    "pgtmp: a throwaway PostgreSQL cluster in a directory.\n"
    "\n"
    "  sh tool/pgtmp.sh start DIR [--tcp] [--port N] [--owner PID] [--logical]\n"
    "        initdb (first time) and start a server with its data in DIR/data and\n"
    "        its Unix socket in DIR; prints the conninfo. No TCP unless --tcp (then\n"
    "        on 127.0.0.1, port N or a free one). With --owner PID a watchdog stops\n"
    "        the server as soon as process PID is gone, even after a SIGKILL.\n"
    "        --logical: wal_level = logical (a source for CDC), kept on restart.\n"
    "  sh tool/pgtmp.sh stop DIR        stop the server (fast, then immediate)\n"
    "  sh tool/pgtmp.sh restart DIR     restart it (fast) on the same port, same settings\n"
    "  sh tool/pgtmp.sh status DIR      exit 0 when running\n"
    "  sh tool/pgtmp.sh conninfo DIR    print the conninfo of a started cluster\n"
    "  sh tool/pgtmp.sh run [DIR] -- CMD [ARGS...]\n"
    "        start a cluster (in DIR, or a new temp dir that is removed after), run\n"
    "        CMD with PGPIPE_TEST_DSN, PGPIPE_TEST_PGDIR, PGHOST, PGPORT, PGUSER\n"
    "        and PGDATABASE set, then stop the server whatever happened; exits\n"
    "        with CMD's status (SIGINT/SIGTERM: passed on to CMD, then 130/143).\n"
    "  sh tool/pgtmp.sh bindir          print the directory of initdb and pg_ctl\n"
    "\n"
    "Finds initdb/pg_ctl in $PGTMP_BINDIR, on PATH, through `pg_config --bindir`,\n"
    "or under /usr/lib/postgresql/*/bin (newest first). initdb refuses to run as\n"
    "root, so as root the server runs as the user `postgres` (or PGTMP_USER;\n"
    "`nobody` when there is no postgres). PGTMP_DURABLE=1: a new cluster keeps\n"
    "fsync, synchronous_commit and full_page_writes on (benchmarks); by default\n"
    "they are off (tests). Usage errors exit 2, failures 1.\n";

static int usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "pgtmp: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\nusage: sh tool/pgtmp.sh start|stop|restart|status|conninfo DIR, "
                    "run [DIR] -- CMD, bindir (sh tool/pgtmp.sh alone: help)\n");
    return 2;
}

static int fail(const char *what, const char *message)
{
    fprintf(stderr, "pgtmp: %s%s%s\n", what, *message ? ": " : "", message);
    return 1;
}

/* The options every command uses, from the environment (see USAGE). */
static void options_from_env(pgpipe_local_options *opt)
{
    pgpipe_local_options_init(opt);
    const char *durable = getenv("PGTMP_DURABLE");
    opt->fast = !(durable && strcmp(durable, "1") == 0);
    const char *bindir = getenv("PGTMP_BINDIR");
    if (bindir && *bindir)
        opt->bindir = bindir;
    const char *user = getenv("PGTMP_USER");
    if (user && *user)
        opt->user = user;
    else if (geteuid() == 0)
        opt->user = getpwnam("postgres") ? "postgres" : "nobody";
}

/* mkdir -p DIR, then mode 0755: the server's user and the clients reach the
** socket in it. */
static int make_dir(const char *dir)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s", dir) >= (int)sizeof path)
        return fail(dir, "path too long");
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0755) != 0 && errno != EEXIST)
            return fail(path, strerror(errno));
        *p = c;
        if (!c)
            break;
    }
    if (chmod(dir, 0755) != 0)
        return fail(dir, strerror(errno));
    return 0;
}

/* The last lines of DIR/NAME on stderr: why initdb or the server failed. */
static void show_tail(const char *dir, const char *name)
{
    char path[PATH_MAX + 32], buf[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fseek(f, 0, SEEK_END) == 0) {
        long end = ftell(f);
        fseek(f, end > (long)sizeof buf - 1 ? end - (long)sizeof buf + 1 : 0, SEEK_SET);
    }
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *from = buf + n;
    for (int lines = 0; from > buf && lines <= 20; from--)
        if (from[-1] == '\n')
            lines++;
    fputs(from == buf ? from : from + 1, stderr);
}

static int start(const char *dir, pgpipe_local_options *opt, char *info, size_t size)
{
    int rc = make_dir(dir);
    if (rc)
        return rc;
    pgpipe_error err;
    if (pgpipe_local_start(dir, opt, info, size, NULL, &err) != PGPIPE_OK) {
        show_tail(dir, strstr(err.message, "initdb") ? "initdb.log" : "server.log");
        return fail("start", err.message);
    }
    return 0;
}

static int cmd_start(int argc, char **argv)
{
    pgpipe_local_options opt;
    options_from_env(&opt);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--tcp") == 0) {
            opt.tcp = 1;
        } else if (strcmp(a, "--logical") == 0) {
            opt.logical = 1;
        } else if (strcmp(a, "--port") == 0 || strcmp(a, "--owner") == 0) {
            char *end = NULL;
            long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : 0;
            if (i + 1 >= argc || !*argv[i + 1] || *end || v <= 0 ||
                (a[2] == 'p' && v > 65535))
                return usage_error("%s needs a number", a);
            i++;
            if (a[2] == 'p') {
                opt.port = (int)v;
                opt.tcp = 1;
            } else {
                opt.owner = v;
            }
        } else {
            return usage_error("unknown option %s", a);
        }
    }
    char info[1024];
    int rc = start(argv[0], &opt, info, sizeof info);
    if (rc)
        return rc;
    printf("%s\n", info);
    return 0;
}

static int cmd_conninfo(const char *dir)
{
    char path[PATH_MAX + 16], info[1024];
    snprintf(path, sizeof path, "%s/conninfo", dir);
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(info, 1, sizeof info - 1, f) : 0;
    if (f)
        fclose(f);
    info[n] = '\0';
    info[strcspn(info, "\n")] = '\0';
    if (!*info) {
        fprintf(stderr, "pgtmp: no cluster started in %s\n", dir);
        return 1;
    }
    printf("%s\n", info);
    return 0;
}

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
    got_signal = sig;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* run [DIR] -- CMD: the server is stopped however CMD ends; should this
** process be killed outright, the owner watchdog stops it. */
static int cmd_run(int argc, char **argv)
{
    const char *dir = NULL;
    int i = 0;
    if (i < argc && strcmp(argv[i], "--") != 0)
        dir = argv[i++];
    if (i >= argc || strcmp(argv[i], "--") != 0 || i + 1 >= argc)
        return usage_error("run %s", "needs [DIR] -- CMD [ARGS...]");
    char **cmd = argv + i + 1;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    char made[] = "/tmp/pgtmp.XXXXXX";
    if (!dir) {
        if (!mkdtemp(made))
            return fail("cannot create a directory in /tmp", strerror(errno));
        dir = made;
    }
    pgpipe_local_options opt;
    options_from_env(&opt);
    opt.owner = (long)getpid();
    char info[1024], abs[PATH_MAX], path[PATH_MAX + 16], port[32] = "";
    int rc = start(dir, &opt, info, sizeof info);
    if (rc == 0 && !realpath(dir, abs))
        rc = fail(dir, strerror(errno));
    if (rc == 0 && !got_signal) {
        snprintf(path, sizeof path, "%s/port", abs);
        FILE *f = fopen(path, "r");
        if (!f || !fgets(port, sizeof port, f))
            port[0] = '\0';
        if (f)
            fclose(f);
        port[strcspn(port, "\n")] = '\0';
        fflush(NULL);
        pid_t child = fork();
        if (child == 0) {
            setenv("PGPIPE_TEST_DSN", info, 1);
            setenv("PGPIPE_TEST_PGDIR", abs, 1);
            setenv("PGHOST", abs, 1);
            setenv("PGPORT", port, 1);
            setenv("PGUSER", "postgres", 1);
            setenv("PGDATABASE", "postgres", 1);
            execvp(cmd[0], cmd);
            int e = errno;
            fprintf(stderr, "pgtmp: %s: %s\n", cmd[0], strerror(e));
            _exit(e == ENOENT ? 127 : 126);
        }
        if (child < 0) {
            rc = fail("fork", strerror(errno));
        } else {
            int status = 0, passed = 0;
            while (waitpid(child, &status, 0) < 0) {
                if (errno != EINTR) {
                    status = 1 << 8;
                    break;
                }
                if (got_signal && !passed) {
                    kill(child, got_signal);
                    passed = 1;
                }
            }
            rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
    }
    if (got_signal)
        rc = 128 + got_signal;
    pgpipe_error err;
    if (pgpipe_local_stop(dir, &opt, &err) != PGPIPE_OK)
        fail("stop", err.message);
    if (dir == made)
        nftw(made, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return rc;
}

int main(int argc, char **argv)
{
    /* errors reach the user through the messages below, once */
    pgpipe_log_set_level(PGPIPE_LOG_OFF);
    const char *cmd = argc > 1 ? argv[1] : "";
    if (!*cmd || !strcmp(cmd, "help") || !strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (!strcmp(cmd, "run"))
        return cmd_run(argc - 2, argv + 2);
    int known = !strcmp(cmd, "start") || !strcmp(cmd, "stop") || !strcmp(cmd, "restart") ||
                !strcmp(cmd, "status") || !strcmp(cmd, "conninfo");
    if (!known) {
        fprintf(stderr, "pgtmp: unknown command '%s'\n\n%s", cmd, USAGE);
        return 2;
    }
    if (argc < 3 || !*argv[2])
        return usage_error("%s needs a directory", cmd);
    if (strcmp(cmd, "start") != 0 && argc > 3)
        return usage_error("unexpected argument %s", argv[3]);
    const char *dir = argv[2];
    if (!strcmp(cmd, "start"))
        return cmd_start(argc - 2, argv + 2);
    if (!strcmp(cmd, "conninfo"))
        return cmd_conninfo(dir);
    if (!strcmp(cmd, "status"))
        return pgpipe_local_running(dir) ? 0 : 1;
    pgpipe_local_options opt;
    options_from_env(&opt);
    pgpipe_error err;
    if (!strcmp(cmd, "stop")) {
        if (pgpipe_local_stop(dir, &opt, &err) != PGPIPE_OK)
            return fail("stop", err.message);
        return 0;
    }
    if (pgpipe_local_restart(dir, &opt, &err) != PGPIPE_OK)
        return fail("restart", err.message);
    return 0;
}
