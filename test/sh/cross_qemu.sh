#!/bin/sh
# make cross-test (and part of make test when qemu is there): the unit tests
# that need no server, the spool's among them, compiled for aarch64 and run
# under qemu-aarch64; then, with a test server (PGPIPE_TEST_DSN), the aarch64
# shell loads a file with the loader and spools + drains another, over TCP
# (test/faultproxy.c on loopback in front of the server's Unix socket).
# Skips (77) without the cross compiler, qemu or an aarch64 libpq
# (tool/deps.sh --cross installs them).
#
# qemu-user 7.2 (Debian 12) on this kernel hangs the child of a fork() and a
# new thread (any clone but posix_spawn's), so each test runs in its own qemu
# process (runner --nofork, one test each), the tests that fork or start
# threads are left out (NOQEMU; the spool's skip themselves), and the device
# program is built with -DPGPIPE_OMIT_THREADS.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
CC=${CROSS_CC:-aarch64-linux-gnu-gcc}
Q=$(command -v qemu-aarch64-static || command -v qemu-aarch64) || { echo "qemu-aarch64 not installed (sh tool/deps.sh --cross)"; exit 77; }
command -v "$CC" >/dev/null 2>&1 || { echo "$CC not installed (sh tool/deps.sh --cross)"; exit 77; }
PQ=${CROSS_LIBPQ:-/usr/lib/aarch64-linux-gnu/libpq.so.5}
[ -f "$PQ" ] || { echo "no aarch64 libpq ($PQ: libpq5:arm64, sh tool/deps.sh --cross)"; exit 77; }
SYSROOT=${CROSS_SYSROOT:-/usr/aarch64-linux-gnu}
pgcf=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
out=build/cross
mkdir -p $out
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/crossq.XXXXXX")
files="test/test_spool.c test/test_json.c test/test_csv.c test/test_framer.c test/test_sqlsplit.c test/test_text.c test/test_util.c"
link="$PQ -Wl,-rpath-link,$(dirname "$PQ") -lpthread -lm"
wrap="-Wl,--wrap=fdatasync -Wl,--wrap=ftruncate" # as the Makefile's TEST_WRAP: test_spool.c makes syncs and cuts fail

# the test runner (rebuilt when a source is newer)
sh test/gen_registry.sh $files > $tmp/cross_tests.c || exit 1
if ! cmp -s $tmp/cross_tests.c $out/cross_tests.c; then cp $tmp/cross_tests.c $out/cross_tests.c; fi
if [ ! -x $out/runner-aarch64 ] || [ -n "$(find pgpipe.c test/pgtest.h test/runner.c $files $out/cross_tests.c -newer $out/runner-aarch64 2>/dev/null)" ]; then
    # shellcheck disable=SC2086
    $CC -std=c11 -Wall -Wextra -Wpedantic -Werror -Wno-unused-function -O1 -DSPT_NO_HTTP $pgcf -I. -Itest \
        $out/cross_tests.c $wrap $link -o $out/runner-aarch64 || fail "the aarch64 test runner does not build"
fi
readelf -h $out/runner-aarch64 | grep -q 'AArch64' || fail "not an aarch64 program"
run() { QEMU_LD_PREFIX=$SYSROOT timeout 120 "$Q" "$@"; }
tests=$(run $out/runner-aarch64 --list) || fail "the runner does not start under qemu"
NOQEMU="csv.fd_and_file_readers text.random_after_fork"
# one qemu process per test, as many side by side as there are cores: lane L
# runs every JOBS-th test and appends "RC TEST" lines to $tmp/lane-L
jobs=$(nproc 2>/dev/null || echo 2)
lane=0
while [ $lane -lt $jobs ]; do
    (
        i=0
        for t in $tests; do
            i=$((i + 1))
            [ $((i % jobs)) = $lane ] || continue
            case " $NOQEMU " in *" $t "*) echo "77 $t"; continue ;; esac
            env -u PGPIPE_TEST_DSN QEMU_LD_PREFIX=$SYSROOT timeout 120 "$Q" $out/runner-aarch64 --nofork "$t" \
                >$tmp/$t.log 2>&1
            echo "$? $t"
        done > $tmp/lane-$lane
    ) &
    lane=$((lane + 1))
done
wait
passed=0; skipped=0; failed=0
while read -r rc t; do
    case $rc in
    0) passed=$((passed + 1)) ;;
    77) skipped=$((skipped + 1)) ;;
    *) failed=$((failed + 1)); echo "FAIL (aarch64) $t"; sed 's/^/    /' $tmp/$t.log | tail -n 20 ;;
    esac
done <<EOF2
$(cat $tmp/lane-*)
EOF2
echo "aarch64 under qemu: $passed passed, $failed failed, $skipped skipped (no server, no fork, no threads)"
[ $failed = 0 ] || exit 1
[ $passed -gt 50 ] || fail "too few tests ran"

# end to end: the aarch64 shell, the loader and the spool drainer over TCP
[ -n "${PGPIPE_TEST_DSN:-}" ] && [ -n "${PGPIPE_TEST_PGDIR:-}" ] || { echo "no test server: end-to-end run skipped"; exit 0; }
# a single-threaded device program (qemu-user cannot start threads here
# either): the loader loads FILE, then the records of FILE go into a spool and
# the drainer sends them
cat > $tmp/e2e.c <<'C'
#include "pgpipe.c"
int main(int argc, char **argv)
{
    if (argc != 5)
        return 2;
    const char *dsn = argv[1], *file = argv[2], *dir = argv[3], *src = argv[4];
    char name[256];
    pgpipe_loader_options lo;
    pgpipe_loader_options_init(&lo);
    lo.conninfo = dsn;
    snprintf(name, sizeof name, "%s-load", src);
    lo.source_value = name;
    pgpipe_loader *l = NULL;
    if (pgpipe_loader_open(&l, &lo) != PGPIPE_OK || pgpipe_loader_load_file(l, file) != PGPIPE_OK) {
        fprintf(stderr, "load: %s\n", pgpipe_errmsg(l));
        return 1;
    }
    pgpipe_load_summary sum;
    pgpipe_loader_summary(l, &sum);
    pgpipe_loader_close(l);
    printf("loaded %lld\n", sum.rows_loaded);
    pgpipe_spool_options so;
    pgpipe_spool_options_init(&so);
    so.device_id = "arm64dev";
    so.fsync_policy = PGPIPE_SPOOL_FSYNC_RECORD;
    pgpipe_spool *s = NULL;
    if (pgpipe_spool_open(&s, dir, &so) != PGPIPE_OK) {
        fprintf(stderr, "spool: %s\n", pgpipe_errmsg(s));
        return 1;
    }
    FILE *f = fopen(file, "r");
    char line[4096];
    long long n = 0;
    while (f && fgets(line, sizeof line, f))
        if (pgpipe_spool_append(s, line, strcspn(line, "\n"), NULL) == PGPIPE_OK)
            n++;
    if (f)
        fclose(f);
    snprintf(name, sizeof name, "%s-spool", src);
    lo.source_value = name;
    lo.batch_rows = 100;
    lo.install_schema = 0;
    pgpipe_spool_drain_result r;
    int rc = pgpipe_spool_drain(s, &lo, &r);
    printf("spooled %lld, drained %lld records, %lld loaded\n", n, r.records, r.loaded);
    if (rc != PGPIPE_OK)
        fprintf(stderr, "drain: %s\n", pgpipe_errmsg(s));
    pgpipe_spool_close(s);
    return rc != PGPIPE_OK;
}
C
# shellcheck disable=SC2086
$CC -std=c11 -Wall -Wextra -Wpedantic -Werror -Os -DPGPIPE_OMIT_THREADS $pgcf -I. $tmp/e2e.c $link -o $out/e2e-aarch64 ||
    fail "the aarch64 device program does not build"
cc -std=c11 -Wall -Wextra -Werror test/faultproxy.c -o "$tmp/faultproxy" || exit 1
sock=$PGPIPE_TEST_PGDIR/.s.PGSQL.$(cat "$PGPIPE_TEST_PGDIR/port")
"$tmp/faultproxy" --upstream "unix:$sock" --duration 120 >"$tmp/proxy" 2>&1 &
ppid=$!
trap 'kill $ppid 2>/dev/null; rm -rf "$tmp"' EXIT
i=0; port=
while [ -z "$port" ] && [ $i -lt 300 ] && kill -0 $ppid 2>/dev/null; do
    port=$(sed -n 's/^listening on 127.0.0.1:\([0-9][0-9]*\)$/\1/p' "$tmp/proxy")
    [ -n "$port" ] || sleep 0.1
    i=$((i + 1))
done
[ -n "$port" ] || fail "the TCP proxy did not start"
tcp="$PGPIPE_TEST_DSN host=127.0.0.1 port=$port"
src="cross-$$"
i=1
while [ $i -le 500 ]; do printf '{"event_type":"x","i":%d}\n' $i; i=$((i + 1)); done > $tmp/in.ndjson
o=$(run $out/e2e-aarch64 "$tcp" $tmp/in.ndjson $tmp/spool "$src" 2>&1) || fail "aarch64 device program: $o"
echo "$o" | grep -q "loaded 500" || fail "the aarch64 load said: $o"
echo "$o" | grep -q "spooled 500, drained 500 records, 500 loaded" || fail "the aarch64 drain said: $o"
n=$(build/test/pgpipe -m csv "$PGPIPE_TEST_DSN" "SELECT count(*) FILTER (WHERE source = '$src-load') AS l, count(DISTINCT payload->>'i') FILTER (WHERE source = '$src-spool') AS s FROM staging.raw_events" | tail -n 1)
[ "$n" = "500,500" ] || fail "staging after the aarch64 load and drain: $n (want 500,500)"
grep -q 'listening' "$tmp/proxy" || fail "no proxy"
echo "aarch64 end to end over TCP: loader 500 rows, spool (fsync per record) + drain 500 records"
