/*
** The test runner's main(): runs every registered test (or those matching the
** arguments: GROUP, FILE, GROUP.NAME, or shell patterns such as 'json.*num*')
** each in a forked child, prints one line per test and the closing count line.
** A pattern without a dot also selects the tests of test/test_PATTERN.c,
** whatever their groups (see pgtest.h: groups and files).
**   --list            print the test names and exit
**   --counts FILE     also write "passed failed skipped" to FILE
**   --nofork          run the selected tests in this process, one after
**                     another (where fork does not work: qemu-user); the first
**                     failure or skip ends the run with its exit status; sets
**                     PGT_NOFORK=1 so tests that fork skip themselves
** PGT_TIMEOUT (seconds, default 300) bounds each test.
*/
#include <fnmatch.h>
#include <signal.h>
#include <sys/wait.h>

static int pgt_selected(const pgt_case *tc, int argc, char **argv, int first)
{
    if (first >= argc)
        return 1;
    char full[256];
    snprintf(full, sizeof full, "%s.%s", tc->group, tc->name);
    for (int i = first; i < argc; i++) {
        const char *pat = argv[i];
        if (!*pat || fnmatch(pat, full, 0) == 0 || fnmatch(pat, tc->group, 0) == 0 ||
            (!strchr(pat, '.') && fnmatch(pat, tc->file, 0) == 0))
            return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *counts_file = NULL;
    int first = 1, list = 0, nofork = 0;
    while (first < argc && argv[first][0] == '-' && argv[first][1] == '-') {
        if (strcmp(argv[first], "--list") == 0) {
            list = 1;
            first++;
        } else if (strcmp(argv[first], "--nofork") == 0) {
            nofork = 1;
            setenv("PGT_NOFORK", "1", 1);
            first++;
        } else if (strcmp(argv[first], "--counts") == 0 && first + 1 < argc) {
            counts_file = argv[first + 1];
            first += 2;
        } else {
            fprintf(stderr, "usage: %s [--list] [--nofork] [--counts FILE] [PATTERN ...]\n", argv[0]);
            return 2;
        }
    }
    int timeout = getenv("PGT_TIMEOUT") ? atoi(getenv("PGT_TIMEOUT")) : 300;
    if (timeout <= 0)
        timeout = 300;

    int passed = 0, failed = 0, skipped = 0;
    for (size_t i = 0; i < pgt_ncases; i++) {
        const pgt_case *tc = &pgt_cases[i];
        if (!pgt_selected(tc, argc, argv, first))
            continue;
        if (list) {
            printf("%s.%s\n", tc->group, tc->name);
            continue;
        }
        fflush(stdout);
        fflush(stderr);
        int64_t t0 = pgpipe_now_us();
        if (nofork) {
            tc->fn();
            passed++;
            printf("ok      %s.%s (%.0f ms)\n", tc->group, tc->name, (double)(pgpipe_now_us() - t0) / 1000.0);
            continue;
        }
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            alarm((unsigned)timeout);
            tc->fn();
            fflush(stdout);
            fflush(stderr);
            _exit(0);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0)
            ;
        double ms = (double)(pgpipe_now_us() - t0) / 1000.0;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
            passed++;
            printf("ok      %s.%s (%.0f ms)\n", tc->group, tc->name, ms);
        } else if (WIFEXITED(status) && WEXITSTATUS(status) == PGT_EXIT_SKIP) {
            skipped++;
            printf("skip    %s.%s\n", tc->group, tc->name);
        } else {
            failed++;
            if (WIFSIGNALED(status))
                printf("FAIL    %s.%s (%s%s)\n", tc->group, tc->name,
                       WTERMSIG(status) == SIGALRM ? "timed out after " : "killed by signal ",
                       WTERMSIG(status) == SIGALRM ? "the test timeout" : strsignal(WTERMSIG(status)));
            else
                printf("FAIL    %s.%s (exit %d)\n", tc->group, tc->name, WEXITSTATUS(status));
        }
    }
    if (list)
        return 0;
    if (counts_file) {
        FILE *f = fopen(counts_file, "w");
        if (f) {
            fprintf(f, "%d %d %d\n", passed, failed, skipped);
            fclose(f);
        }
    }
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
