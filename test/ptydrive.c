/*
** ptydrive: runs a program on a pseudo-terminal and plays a script against it,
** as a person at a keyboard would: type keys, wait for text on the screen.
**
**   ptydrive SCRIPT -- PROGRAM [ARGS...]
**
** SCRIPT lines:  send TEXT     type TEXT (escapes: \r \n \t \e \xHH \\)
**                expect TEXT   wait (up to 15 s) until TEXT appears after the
**                              previous match; otherwise print the screen, fail
**                sleep MS      let the program work for MS milliseconds
**                until CMD     run the shell command CMD every 100 ms until it
**                              succeeds (up to 15 s), e.g. to wait until the
**                              server shows a statement as running
**                resize R C    make the terminal R rows by C columns (the
**                              program gets SIGWINCH)
**                exit N        wait for the program to end with status N
** Lines starting with # are comments. Exit status 0 when every step held.
*/
#define _XOPEN_SOURCE 600
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static char screen[1 << 20];
static size_t screen_len, matched;

static size_t unescape(const char *in, char *out)
{
    size_t n = 0;
    for (; *in; in++) {
        if (*in != '\\' || !in[1]) {
            out[n++] = *in;
            continue;
        }
        in++;
        switch (*in) {
        case 'r': out[n++] = '\r'; break;
        case 'n': out[n++] = '\n'; break;
        case 't': out[n++] = '\t'; break;
        case 'e': out[n++] = 27; break;
        case 'x': {
            unsigned v = 0;
            sscanf(in + 1, "%2x", &v);
            out[n++] = (char)v;
            in += 2;
            break;
        }
        default: out[n++] = *in; break;
        }
    }
    return n;
}

static void pump(int fd, int ms)
{
    struct pollfd p = { fd, POLLIN, 0 };
    if (poll(&p, 1, ms) > 0) {
        ssize_t r = read(fd, screen + screen_len, sizeof screen - 1 - screen_len);
        if (r > 0)
            screen_len += (size_t)r;
        screen[screen_len] = '\0';
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void show_screen(void)
{
    fprintf(stderr, "---- screen (%zu bytes, matched up to %zu) ----\n", screen_len, matched);
    for (size_t i = 0; i < screen_len; i++) {
        unsigned char c = (unsigned char)screen[i];
        if (c == 27)
            fputs("\\e", stderr);
        else if (c == '\r')
            fputs("\\r", stderr);
        else
            fputc(c, stderr);
    }
    fprintf(stderr, "\n---- end of screen ----\n");
}

int main(int argc, char **argv)
{
    if (argc < 4 || strcmp(argv[2], "--") != 0) {
        fprintf(stderr, "usage: ptydrive SCRIPT -- PROGRAM [ARGS...]\n");
        return 2;
    }
    FILE *script = fopen(argv[1], "r");
    if (!script) {
        perror(argv[1]);
        return 2;
    }
    int master = posix_openpt(O_RDWR | O_NOCTTY);
    if (master < 0 || grantpt(master) || unlockpt(master)) {
        perror("pty");
        return 2;
    }
    struct winsize ws = { 24, 100, 0, 0 };
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        int slave = open(ptsname(master), O_RDWR);
        if (slave < 0)
            _exit(127);
        ioctl(slave, TIOCSWINSZ, &ws);
        dup2(slave, 0);
        dup2(slave, 1);
        dup2(slave, 2);
        close(master);
        execvp(argv[3], argv + 3);
        _exit(127);
    }
    char line[4096], buf[4096];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, script)) {
        line[strcspn(line, "\n")] = '\0';
        if (!line[0] || line[0] == '#')
            continue;
        if (!strncmp(line, "send ", 5)) {
            size_t n = unescape(line + 5, buf);
            /* type one key at a time, as a person does */
            for (size_t i = 0; i < n; i++) {
                if (write(master, buf + i, 1) != 1)
                    rc = 1;
                pump(master, 2);
            }
        } else if (!strncmp(line, "expect ", 7)) {
            size_t n = unescape(line + 7, buf);
            buf[n] = '\0';
            double deadline = now() + 15;
            char *hit = NULL;
            while (!(hit = strstr(screen + matched, buf)) && now() < deadline)
                pump(master, 50);
            if (!hit) {
                fprintf(stderr, "ptydrive: did not see \"%s\"\n", line + 7);
                show_screen();
                rc = 1;
            } else {
                matched = (size_t)(hit - screen) + n;
            }
        } else if (!strncmp(line, "sleep ", 6)) {
            double until = now() + atoi(line + 6) / 1000.0;
            while (now() < until)
                pump(master, 20);
        } else if (!strncmp(line, "until ", 6)) {
            double deadline = now() + 15;
            int ok = 0;
            while (!ok && now() < deadline) {
                ok = system(line + 6) == 0;
                if (!ok)
                    pump(master, 100);
            }
            if (!ok) {
                fprintf(stderr, "ptydrive: never true: %s\n", line + 6);
                show_screen();
                rc = 1;
            }
        } else if (!strncmp(line, "resize ", 7)) {
            int r = 0, c = 0;
            if (sscanf(line + 7, "%d %d", &r, &c) != 2 || r <= 0 || c <= 0) {
                fprintf(stderr, "ptydrive: bad resize: %s\n", line);
                rc = 2;
            } else {
                struct winsize nw = { (unsigned short)r, (unsigned short)c, 0, 0 };
                ioctl(master, TIOCSWINSZ, &nw);
                pump(master, 20);
            }
        } else if (!strncmp(line, "exit ", 5)) {
            int want = atoi(line + 5), status = 0;
            double deadline = now() + 15;
            pid_t w = 0;
            while ((w = waitpid(pid, &status, WNOHANG)) == 0 && now() < deadline)
                pump(master, 50);
            if (w != pid || !WIFEXITED(status) || WEXITSTATUS(status) != want) {
                fprintf(stderr, "ptydrive: program did not exit with %d\n", want);
                show_screen();
                rc = 1;
            }
            pid = 0;
        } else {
            fprintf(stderr, "ptydrive: bad script line: %s\n", line);
            rc = 2;
        }
    }
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    fclose(script);
    return rc;
}
