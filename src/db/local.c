/*
** Private local server: initdb + pg_ctl in a directory, as the shell's
** --local DIR and `make demo` use it. The directory layout matches
** tool/pgtmp.c (the test clusters), so either can stop what the other started.
*/

#include "pp_db.h"
#include <dirent.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

void pgpipe_local_options_init(pgpipe_local_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
}

static int local_is_exec(const char *dir, const char *name)
{
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, X_OK) == 0;
}

static int local_has_tools(const char *dir)
{
    return dir && *dir && local_is_exec(dir, "pg_ctl") && local_is_exec(dir, "initdb");
}

/* Finds the directory holding initdb and pg_ctl (see pgpipe_local_options). */
static int local_find_bindir(const pgpipe_local_options *opt, char *out, size_t size)
{
    const char *env = getenv("PGPIPE_PG_BINDIR");
    if (opt && local_has_tools(opt->bindir)) {
        snprintf(out, size, "%s", opt->bindir);
        return 1;
    }
    if (local_has_tools(env)) {
        snprintf(out, size, "%s", env);
        return 1;
    }
    const char *path = getenv("PATH");
    if (path) {
        char *copy = pp_strdup(path);
        for (char *save = NULL, *d = copy ? strtok_r(copy, ":", &save) : NULL; d;
             d = strtok_r(NULL, ":", &save)) {
            if (local_has_tools(d)) {
                snprintf(out, size, "%s", d);
                pp_free(copy);
                return 1;
            }
        }
        pp_free(copy);
    }
    FILE *p = popen("pg_config --bindir 2>/dev/null", "r");
    if (p) {
        char line[PATH_MAX] = "";
        if (fgets(line, sizeof line, p))
            line[strcspn(line, "\n")] = '\0';
        pclose(p);
        if (local_has_tools(line)) {
            snprintf(out, size, "%s", line);
            return 1;
        }
    }
    DIR *d = opendir("/usr/lib/postgresql");
    int best = -1;
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            int v = atoi(e->d_name);
            char bin[PATH_MAX];
            snprintf(bin, sizeof bin, "/usr/lib/postgresql/%s/bin", e->d_name);
            if (v > best && local_has_tools(bin)) {
                best = v;
                snprintf(out, size, "%s", bin);
            }
        }
        closedir(d);
    }
    return best >= 0;
}

/* The user the server runs as: NULL when we are not root. */
static const struct passwd *local_server_user(const pgpipe_local_options *opt, pgpipe_error *err,
                                              int *rc)
{
    *rc = PGPIPE_OK;
    if (geteuid() != 0)
        return NULL;
    const char *name = opt && opt->user ? opt->user : getenv("PGPIPE_LOCAL_USER");
    if (!name || !*name)
        name = "postgres";
    const struct passwd *pw = getpwnam(name);
    if (!pw)
        *rc = pp_err(err, PGPIPE_MISUSE,
                     "running as root, and PostgreSQL refuses to: no user '%s' to run the "
                     "server as (create it, or set options.user / PGPIPE_LOCAL_USER)", name);
    return pw;
}

/* Runs argv[0] with its output appended to log; as user pw when given.
** Returns the exit status, or -1 when it could not be run. */
static int local_run(char *const argv[], const struct passwd *pw, const char *log)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        int nul = open("/dev/null", O_RDONLY);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
        }
        if (nul >= 0)
            dup2(nul, STDIN_FILENO);
        if (pw && (setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0))
            _exit(126);
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int local_read_file(const char *path, char *buf, size_t size)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, size - 1, f);
    fclose(f);
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    return n > 0;
}

static int local_write_file(const char *path, const char *text, const struct passwd *pw)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return 0;
    int ok = fputs(text, f) >= 0;
    ok = (fclose(f) == 0) && ok;
    if (pw && chown(path, pw->pw_uid, pw->pw_gid) != 0)
        ok = 0;
    return ok;
}

int pgpipe_local_running(const char *dir)
{
    char pidfile[PATH_MAX], buf[64];
    snprintf(pidfile, sizeof pidfile, "%s/data/postmaster.pid", dir);
    if (!local_read_file(pidfile, buf, sizeof buf))
        return 0;
    long pid = atol(buf);
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* The postmaster's pid from DIR/data/postmaster.pid, 0 when there is none. */
static long local_postmaster_pid(const char *dir)
{
    char pidfile[PATH_MAX + 32], buf[64];
    snprintf(pidfile, sizeof pidfile, "%s/data/postmaster.pid", dir);
    return local_read_file(pidfile, buf, sizeof buf) ? atol(buf) : 0;
}

/* 1 when process PID is gone (a zombie counts as gone: its parent may not
** reap it while it waits for the server this watch stops). */
static int local_gone(long pid)
{
    if (kill((pid_t)pid, 0) != 0)
        return errno == ESRCH;
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] == 'Z';
}

/* See pgpipe_local_options.owner: polls OWNER every second. A missing pid
** file is looked at again 3 s later, as a restart removes it briefly; still
** missing, someone else stopped the server, and a later one is not ours. */
static void local_watch_owner(const char *dir, const pgpipe_local_options *opt, long owner)
{
    for (;;) {
        if (local_gone(owner)) {
            pgpipe_local_stop(dir, opt, NULL);
            return;
        }
        if (local_postmaster_pid(dir) <= 0) {
            sleep(3);
            if (local_postmaster_pid(dir) <= 0)
                return;
        }
        sleep(1);
    }
}

/* See pgpipe_local_options.watchdog and .owner. The watchdog is a grandchild
** in a session of its own, so signals to our process group miss it, and it
** holds none of our descriptors (a caller reading our output to its end must
** not wait for it). Watching this process, it blocks reading a pipe; the read
** returns when every copy of the write end is closed, which is when this
** process ends. It then stops the server if the postmaster is still the one
** started here (a later run may have started another one since). Watching
** another process, it polls (local_watch_owner). */
static void local_watchdog(const char *dir, const pgpipe_local_options *opt, long owner)
{
    long pm = local_postmaster_pid(dir);
    int fds[2] = { -1, -1 };
    if (pm <= 0 || (owner <= 0 && pipe(fds) != 0))
        return;
    if (owner <= 0) {
        fcntl(fds[0], F_SETFD, FD_CLOEXEC);
        fcntl(fds[1], F_SETFD, FD_CLOEXEC);
    }
    pid_t pid = fork();
    if (pid < 0) {
        if (owner <= 0) {
            close(fds[0]);
            close(fds[1]);
        }
        return;
    }
    if (pid == 0) {
        setsid();
        if (fork() != 0)
            _exit(0);
        int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE };
        for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
            signal(sigs[i], SIG_DFL);
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, STDIN_FILENO);
            dup2(nul, STDOUT_FILENO);
            dup2(nul, STDERR_FILENO);
        }
        /* hold nothing of the parent's open: its pipes and sockets must close */
        long maxfd = sysconf(_SC_OPEN_MAX);
        if (maxfd < 0 || maxfd > 65536)
            maxfd = 65536;
        for (int fd = 3; fd < maxfd; fd++)
            if (fd != fds[0])
                close(fd);
        if (owner > 0) {
            local_watch_owner(dir, opt, owner);
            _exit(0);
        }
        char c;
        while (read(fds[0], &c, 1) < 0 && errno == EINTR)
            ;
        if (local_postmaster_pid(dir) == pm)
            pgpipe_local_stop(dir, opt, NULL);
        _exit(0);
    }
    if (owner <= 0)
        close(fds[0]);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    /* fds[1] stays open until this process ends: that is the signal */
}

/* A TCP port on 127.0.0.1 that nothing listens on now, 0 when none is found.
** The system picks it (bind to port 0); the server binds it moments later. */
static int local_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        return 0;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = 0;
    if (bind(s, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(s, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(s);
    return port;
}

int pgpipe_local_start(const char *dir, const pgpipe_local_options *opt, char *conninfo,
                       size_t size, int *started, pgpipe_error *err)
{
    if (started)
        *started = 0;
    if (!dir || !*dir || !conninfo || !size)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_local_start: a directory and a buffer are required");
    char abs[PATH_MAX];
    if (dir[0] == '/') {
        snprintf(abs, sizeof abs, "%s", dir);
    } else {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof cwd))
            return pp_err(err, PGPIPE_IO, "cannot resolve %s: %s", dir, strerror(errno));
        if ((size_t)snprintf(abs, sizeof abs, "%s/%s", cwd, dir) >= sizeof abs)
            return pp_err(err, PGPIPE_MISUSE, "path too long: %s", dir);
    }
    for (size_t n = strlen(abs); n > 1 && abs[n - 1] == '/'; n--)
        abs[n - 1] = '\0';
    if (strchr(abs, '\'') || strlen(abs) > 90)
        return pp_err(err, PGPIPE_MISUSE,
                      "%s cannot hold a Unix socket (a quote in the path, or longer than 90 bytes)",
                      abs);
    if (mkdir(abs, 0755) != 0 && errno != EEXIST)
        return pp_err(err, PGPIPE_IO, "cannot create %s: %s", abs, strerror(errno));
    int rc;
    const struct passwd *pw = local_server_user(opt, err, &rc);
    if (rc)
        return rc;
    char bindir[PATH_MAX];
    if (!local_find_bindir(opt, bindir, sizeof bindir))
        return pp_err(err, PGPIPE_IO,
                      "no PostgreSQL server binaries (initdb, pg_ctl) found on PATH, through "
                      "pg_config or under /usr/lib/postgresql; install the server package "
                      "(Debian: apt-get install postgresql)");
    if (pw && chown(abs, pw->pw_uid, pw->pw_gid) != 0)
        return pp_err(err, PGPIPE_IO, "cannot give %s to user %s: %s", abs, pw->pw_name,
                      strerror(errno));

    char data[PATH_MAX + 8], path[PATH_MAX + 32], log[PATH_MAX + 32], tool[PATH_MAX + 16];
    snprintf(data, sizeof data, "%s/data", abs);
    snprintf(path, sizeof path, "%s/PG_VERSION", data);
    int timeout = opt && opt->timeout_s > 0 ? opt->timeout_s : 60;

    if (access(path, F_OK) != 0) {
        snprintf(log, sizeof log, "%s/initdb.log", abs);
        snprintf(tool, sizeof tool, "%s/initdb", bindir);
        char *argv[] = { tool, (char *)"-D", data, (char *)"-U", (char *)"postgres",
                         (char *)"-A", (char *)"trust", (char *)"-E", (char *)"UTF8",
                         (char *)"--locale=C", (char *)"--no-sync", NULL };
        if (local_run(argv, pw, log) != 0)
            return pp_err(err, PGPIPE_ERROR, "initdb failed for %s (see %s)", data, log);
        snprintf(path, sizeof path, "%s/postgresql.conf", data);
        FILE *f = fopen(path, "a");
        if (!f)
            return pp_err(err, PGPIPE_IO, "cannot write %s: %s", path, strerror(errno));
        fprintf(f, "\n# pgpipe private local server\nunix_socket_directories = '%s'\n"
                   "listen_addresses = ''\nmax_connections = 200\nshared_buffers = 128MB\n"
                   "max_wal_size = 2GB\nlog_min_messages = warning\n"
                   "# staging partitions are queues: vacuum them promptly\n"
                   "autovacuum_naptime = 1s\n", abs);
        if (opt && opt->fast)
            fprintf(f, "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
        fclose(f);
    }

    snprintf(path, sizeof path, "%s/conninfo", abs);
    if (pgpipe_local_running(abs)) {
        if (local_read_file(path, conninfo, size))
            return PGPIPE_OK;
        return pp_err(err, PGPIPE_ERROR, "a server runs in %s but %s is missing", abs, path);
    }

    int port = opt && opt->port > 0 ? opt->port : 5432;
    if (opt && opt->tcp && opt->port <= 0 && (port = local_free_port()) == 0)
        return pp_err(err, PGPIPE_IO, "no free TCP port on 127.0.0.1 for the server in %s", abs);
    char opts[PATH_MAX + 128], portfile[PATH_MAX + 16];
    snprintf(opts, sizeof opts, "-p %d -k '%s'%s%s", port, abs,
             opt && opt->tcp ? " -c listen_addresses=127.0.0.1" : "",
             opt && opt->logical ? " -c wal_level=logical" : "");
    snprintf(portfile, sizeof portfile, "%s/port", abs);
    char portbuf[32];
    snprintf(portbuf, sizeof portbuf, "%d\n", port);
    local_write_file(portfile, portbuf, pw);
    snprintf(path, sizeof path, "%s/opts", abs);
    local_write_file(path, opts, pw);

    snprintf(log, sizeof log, "%s/server.log", abs);
    snprintf(tool, sizeof tool, "%s/pg_ctl", bindir);
    char tmo[16];
    snprintf(tmo, sizeof tmo, "%d", timeout);
    char *argv[] = { tool, (char *)"-D", data, (char *)"-l", log, (char *)"-w", (char *)"-t", tmo,
                     (char *)"-o", opts, (char *)"start", NULL };
    char ctl_log[PATH_MAX + 32];
    snprintf(ctl_log, sizeof ctl_log, "%s/pg_ctl.log", abs);
    if (local_run(argv, pw, ctl_log) != 0)
        return pp_err(err, PGPIPE_ERROR, "the server in %s did not start (see %s)", abs, log);
    if (started)
        *started = 1;
    if (opt && opt->watchdog)
        local_watchdog(abs, opt, 0);
    if (opt && opt->owner > 0)
        local_watchdog(abs, opt, opt->owner);

    char info[PATH_MAX + 128];
    if (opt && opt->tcp)
        snprintf(info, sizeof info, "host=127.0.0.1 port=%d user=postgres dbname=postgres", port);
    else
        snprintf(info, sizeof info, "host=%s port=%d user=postgres dbname=postgres", abs, port);
    snprintf(path, sizeof path, "%s/conninfo", abs);
    char line[PATH_MAX + 136];
    snprintf(line, sizeof line, "%s\n", info);
    local_write_file(path, line, NULL);
    snprintf(conninfo, size, "%s", info);
    pp_logf(PGPIPE_LOG_INFO, "local", "started a private server in %s", abs);
    return PGPIPE_OK;
}

int pgpipe_local_stop(const char *dir, const pgpipe_local_options *opt, pgpipe_error *err)
{
    if (!dir || !*dir)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_local_stop: a directory is required");
    if (!pgpipe_local_running(dir))
        return PGPIPE_OK;
    int rc;
    const struct passwd *pw = local_server_user(opt, err, &rc);
    if (rc)
        return rc;
    char bindir[PATH_MAX], tool[PATH_MAX + 16], data[PATH_MAX + 8], log[PATH_MAX + 16];
    if (!local_find_bindir(opt, bindir, sizeof bindir))
        return pp_err(err, PGPIPE_IO, "no pg_ctl found to stop the server in %s", dir);
    snprintf(tool, sizeof tool, "%s/pg_ctl", bindir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(log, sizeof log, "%s/pg_ctl.log", dir);
    char *fast[] = { tool, (char *)"-D", data, (char *)"-m", (char *)"fast", (char *)"-w",
                     (char *)"-t", (char *)"30", (char *)"stop", NULL };
    if (local_run(fast, pw, log) == 0)
        return PGPIPE_OK;
    char *imm[] = { tool, (char *)"-D", data, (char *)"-m", (char *)"immediate", (char *)"-w",
                    (char *)"-t", (char *)"30", (char *)"stop", NULL };
    if (local_run(imm, pw, log) == 0)
        return PGPIPE_OK;
    return pp_err(err, PGPIPE_ERROR, "could not stop the server in %s (see %s)", dir, log);
}

int pgpipe_local_restart(const char *dir, const pgpipe_local_options *opt, pgpipe_error *err)
{
    if (!dir || !*dir)
        return pp_err(err, PGPIPE_MISUSE, "pgpipe_local_restart: a directory is required");
    char path[PATH_MAX + 16], opts[PATH_MAX + 96];
    snprintf(path, sizeof path, "%s/opts", dir);
    if (!local_read_file(path, opts, sizeof opts))
        return pp_err(err, PGPIPE_MISUSE, "no server was started in %s (no %s)", dir, path);
    int rc;
    const struct passwd *pw = local_server_user(opt, err, &rc);
    if (rc)
        return rc;
    char bindir[PATH_MAX], tool[PATH_MAX + 16], data[PATH_MAX + 8], log[PATH_MAX + 32],
        ctl_log[PATH_MAX + 32], tmo[16];
    if (!local_find_bindir(opt, bindir, sizeof bindir))
        return pp_err(err, PGPIPE_IO, "no pg_ctl found to restart the server in %s", dir);
    snprintf(tool, sizeof tool, "%s/pg_ctl", bindir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(log, sizeof log, "%s/server.log", dir);
    snprintf(ctl_log, sizeof ctl_log, "%s/pg_ctl.log", dir);
    snprintf(tmo, sizeof tmo, "%d", opt && opt->timeout_s > 0 ? opt->timeout_s : 60);
    char *argv[] = { tool, (char *)"-D", data, (char *)"-l", log, (char *)"-m", (char *)"fast",
                     (char *)"-w", (char *)"-t", tmo, (char *)"-o", opts, (char *)"restart", NULL };
    if (local_run(argv, pw, ctl_log) != 0)
        return pp_err(err, PGPIPE_ERROR, "the server in %s did not restart (see %s)", dir, log);
    return PGPIPE_OK;
}
