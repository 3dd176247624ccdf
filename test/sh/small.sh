#!/bin/sh
# make test: no database
# The size build's code paths (PGPIPE_SMALL, on by default at -Os: the device
# builds of make cross). It leaves out what exists only for speed (the SIMD
# and SWAR scans of the JSON and CSV parsers, the CSV fast path, slicing-by-8
# CRC-32C, the Eisel-Lemire number parse); the plain code left must give the
# same results. So the parser, text, spool and number tests are built here
# with PGPIPE_SMALL=1 (at -O0: a third of -Os's build time; the optimisation
# level changes no path), with the sanitizers, and run natively; a probe
# checks that -Os itself turns PGPIPE_SMALL on.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
out=build/small
mkdir -p $out
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/small.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
pgcf=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
pgl=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
files="test/test_json.c test/test_jsonnum.c test/test_csv.c test/test_text.c test/test_framer.c test/test_sqlsplit.c test/test_util.c test/test_spool.c"
sh test/gen_registry.sh $files > $tmp/small_tests.c || exit 1
if ! cmp -s $tmp/small_tests.c $out/small_tests.c; then cp $tmp/small_tests.c $out/small_tests.c; fi
if [ ! -x $out/runner ] || [ -n "$(find pgpipe.c pgpipe.h test/pgtest.h test/runner.c $files $out/small_tests.c -newer $out/runner 2>/dev/null)" ]; then
    # shellcheck disable=SC2086
    ${CC:-cc} -std=c11 -Wall -Wextra -Wpedantic -Werror -Wno-unused-function -O0 -DPGPIPE_SMALL=1 \
        -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined \
        -DSPT_NO_HTTP $pgcf -I. -Itest $out/small_tests.c \
        -Wl,--wrap=fdatasync -Wl,--wrap=ftruncate $pgl -lpthread -lm -o $out/runner ||
        fail "the -Os test runner does not build"
fi
# the build is the size build: the CSV reader has no fast path
cat > $tmp/probe.c <<'C'
#include "pgpipe.c"
int main(void) { return PGPIPE_SMALL == 1 ? 0 : 1; }
C
# shellcheck disable=SC2086
${CC:-cc} -std=c11 -Os $pgcf -I. $tmp/probe.c $pgl -lpthread -lm -o $tmp/probe && $tmp/probe ||
    fail "-Os does not turn PGPIPE_SMALL on"
o=$($out/runner json jsonnum csv text framer sqlsplit util spool 2>&1)
rc=$?
echo "$o" | tail -n 3
[ $rc = 0 ] || { echo "$o" | grep -v '^ok\|^  ok\|PASS' | tail -n 40; fail "the size build's tests failed"; }
n=$(echo "$o" | sed -n 's/^\([0-9][0-9]*\) passed, 0 failed.*/\1/p' | tail -n 1)
[ -n "$n" ] && [ "$n" -gt 90 ] || fail "too few tests ran in the size build: '$n'"
echo "size build (PGPIPE_SMALL): $n tests passed"
