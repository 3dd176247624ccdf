#!/bin/sh
# make test: no database
# make cross-test (and part of make test when qemu is there): the unit tests
# that need no server, the spool's among them, compiled for aarch64 and run
# under qemu-aarch64; it also builds the aarch64 device program that
# test/sh/cross_qemu_e2e.sh runs against the test server (so this part runs
# beside the C tests, and the server part does not wait on a cross build).
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
. test/sh/lib/cross.sh
cross_setup
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/crossq.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
files="test/test_spool.c test/test_json.c test/test_csv.c test/test_framer.c test/test_sqlsplit.c test/test_text.c test/test_util.c"
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
tests=$(cross_run $out/runner-aarch64 --list) || fail "the runner does not start under qemu"
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

# the device program test/sh/cross_qemu_e2e.sh runs
cross_device_program
