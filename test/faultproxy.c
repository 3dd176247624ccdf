/*
** faultproxy: a TCP proxy on loopback between a client and PostgreSQL that
** injects the faults networks and servers produce: a connection dropped,
** a connection cut in the middle of a message, a connection stalled.
**
**   faultproxy --upstream unix:/dir/.s.PGSQL.5432 | tcp:127.0.0.1:5432
**              [--port N] [--seed N] [--duration S]
**              [--drop P] [--cut P] [--stall P] [--stall-ms MS] [--max-faults N]
**              [--after BYTES]
**
** It listens on 127.0.0.1 (port N, or one the kernel picks), prints
** "listening on 127.0.0.1:PORT" and then forwards every connection. For every
** chunk it forwards it rolls the dice (deterministic with --seed): with
** probability P_drop it closes both sides, P_cut forwards half of the chunk and
** closes both sides, P_stall stops forwarding that connection for --stall-ms.
** No fault before a connection has carried --after bytes (default 0), so
** startup and authentication can be spared. At most --max-faults faults.
** It stops by itself after --duration seconds (default 300), or on SIGTERM or
** SIGINT, and prints a line of counts:
**   faultproxy: connections=N bytes=N drops=N cuts=N stalls=N
** Only loopback addresses are used: it never listens on or connects to
** anything else.
*/
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAXPAIRS 256
#define CHUNK 16384

typedef struct pair {
    int fd[2];            /* 0 = client, 1 = upstream */
    long long carried;    /* bytes forwarded */
    double stalled_until; /* monotonic seconds */
} pair;

static pair pairs[MAXPAIRS];
static int npairs;
static volatile sig_atomic_t stop;
static uint64_t rng = 88172645463325252ull;
static long long n_conn, n_bytes, n_drop, n_cut, n_stall;
static long long max_faults = -1;

static void on_signal(int s) { (void)s; stop = 1; }

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double roll(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

static int faults_left(void)
{
    return max_faults < 0 || n_drop + n_cut + n_stall < max_faults;
}

static int connect_upstream(const char *spec)
{
    if (!strncmp(spec, "unix:", 5)) {
        struct sockaddr_un a;
        memset(&a, 0, sizeof a);
        a.sun_family = AF_UNIX;
        if (strlen(spec + 5) >= sizeof a.sun_path)
            return -1;
        strcpy(a.sun_path, spec + 5);
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(fd);
            fd = -1;
        }
        return fd;
    }
    if (!strncmp(spec, "tcp:", 4)) {
        char host[64];
        int port = 0;
        if (sscanf(spec + 4, "%63[^:]:%d", host, &port) != 2)
            return -1;
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &a.sin_addr) != 1 || (ntohl(a.sin_addr.s_addr) >> 24) != 127)
            return -1; /* loopback only */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
            close(fd);
            fd = -1;
        }
        return fd;
    }
    return -1;
}

static void close_pair(int i)
{
    close(pairs[i].fd[0]);
    close(pairs[i].fd[1]);
    pairs[i] = pairs[--npairs];
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *upstream = NULL;
    int port = 0;
    double duration = 300, p_drop = 0, p_cut = 0, p_stall = 0;
    int stall_ms = 2000;
    long long after = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            goto usage;
        if (!strcmp(a, "--upstream")) upstream = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--seed")) rng = (uint64_t)strtoull(v, NULL, 10) * 2654435761u + 1;
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--drop")) p_drop = atof(v);
        else if (!strcmp(a, "--cut")) p_cut = atof(v);
        else if (!strcmp(a, "--stall")) p_stall = atof(v);
        else if (!strcmp(a, "--stall-ms")) stall_ms = atoi(v);
        else if (!strcmp(a, "--max-faults")) max_faults = atoll(v);
        else if (!strcmp(a, "--after")) after = atoll(v);
        else goto usage;
        i++;
    }
    if (!upstream)
        goto usage;

    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in la;
    memset(&la, 0, sizeof la);
    la.sin_family = AF_INET;
    la.sin_port = htons((uint16_t)port);
    la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(ls, (struct sockaddr *)&la, sizeof la) != 0 || listen(ls, 64) != 0) {
        perror("faultproxy: listen");
        return 1;
    }
    socklen_t ll = sizeof la;
    getsockname(ls, (struct sockaddr *)&la, &ll);
    printf("listening on 127.0.0.1:%d\n", ntohs(la.sin_port));
    fflush(stdout);

    double end = now() + duration;
    char buf[CHUNK];
    while (!stop && now() < end) {
        struct pollfd pf[1 + 2 * MAXPAIRS];
        int n = 0;
        pf[n].fd = ls;
        pf[n++].events = POLLIN;
        double t = now();
        for (int i = 0; i < npairs; i++)
            for (int s = 0; s < 2; s++) {
                pf[n].fd = pairs[i].fd[s];
                pf[n++].events = pairs[i].stalled_until > t ? 0 : POLLIN;
            }
        if (poll(pf, (nfds_t)n, 100) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pf[0].revents & POLLIN) {
            int c = accept(ls, NULL, NULL);
            if (c >= 0) {
                int u = npairs < MAXPAIRS ? connect_upstream(upstream) : -1;
                if (u < 0) {
                    close(c);
                } else {
                    pairs[npairs].fd[0] = c;
                    pairs[npairs].fd[1] = u;
                    pairs[npairs].carried = 0;
                    pairs[npairs].stalled_until = 0;
                    npairs++;
                    n_conn++;
                }
            }
        }
        /* walk the pairs that existed when poll() was set up, newest first, so
        ** closing one (which moves the last into its place) skips nothing */
        int polled = (n - 1) / 2;
        for (int i = polled - 1; i >= 0; i--) {
            for (int s = 0; s < 2; s++) {
                short re = pf[1 + 2 * i + s].revents;
                if (!(re & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                ssize_t r = read(pairs[i].fd[s], buf, sizeof buf);
                if (r <= 0) {
                    close_pair(i);
                    break;
                }
                pair *p = &pairs[i];
                int eligible = p->carried >= after && faults_left();
                double d = roll();
                if (eligible && d < p_drop) {
                    n_drop++;
                    close_pair(i);
                    break;
                }
                if (eligible && d < p_drop + p_cut) {
                    n_cut++;
                    write_all(p->fd[1 - s], buf, (size_t)r / 2);
                    close_pair(i);
                    break;
                }
                if (write_all(p->fd[1 - s], buf, (size_t)r) != 0) {
                    close_pair(i);
                    break;
                }
                p->carried += r;
                n_bytes += r;
                if (eligible && d < p_drop + p_cut + p_stall) {
                    n_stall++;
                    p->stalled_until = now() + stall_ms / 1000.0;
                }
            }
        }
    }
    while (npairs)
        close_pair(npairs - 1);
    printf("faultproxy: connections=%lld bytes=%lld drops=%lld cuts=%lld stalls=%lld\n", n_conn,
           n_bytes, n_drop, n_cut, n_stall);
    return 0;
usage:
    fprintf(stderr, "usage: faultproxy --upstream unix:PATH|tcp:127.0.0.1:PORT [--port N] [--seed N]\n"
                    "       [--duration S] [--drop P] [--cut P] [--stall P] [--stall-ms MS]\n"
                    "       [--max-faults N] [--after BYTES]\n");
    return 2;
}
