#!/bin/sh
# The shell as a script runner: arguments, stdin scripts, exit status, errors.
set -u
cd "${PGPIPE_TOP:-.}"
sh_=build/test/pgpipe
fail() { echo "FAIL: $*"; exit 1; }
out=$($sh_ "$PGPIPE_TEST_DSN" "SELECT 1 AS a, 'x' AS b" ".version") || fail "exit status $?"
printf '%s\n' "$out" | grep -q '^a|b$' || fail "no header: $out"
printf '%s\n' "$out" | grep -q '^1|x$' || fail "no row: $out"
printf '%s\n' "$out" | grep -q "^pgpipe $(sed -n 's/^#define PGPIPE_VERSION *"\(.*\)"/\1/p' pgpipe.h)," || fail "no version: $out"
err=$($sh_ "$PGPIPE_TEST_DSN" "SELEC 1" 2>&1) && fail "bad SQL exited 0"
printf '%s\n' "$err" | grep -q '42601' || fail "no SQLSTATE in: $err"
out=$(printf 'SELECT 2\n  + 3;\n.version\nSELECT 7;\n' | $sh_ "$PGPIPE_TEST_DSN") || fail "script failed"
printf '%s\n' "$out" | grep -q '^5$' || fail "multi-line SQL: $out"
printf '%s\n' "$out" | grep -q '^7$' || fail "script did not go on: $out"
out=$(printf 'SELEC 1;\nSELECT 8;\n' | $sh_ --bail "$PGPIPE_TEST_DSN" 2>/dev/null) && fail "--bail script exited 0"
printf '%s\n' "$out" | grep -q '^8$' && fail "--bail did not stop at the first error"
err=$($sh_ "host=/nonexistent password=sekrit123" "SELECT 1" 2>&1) && fail "bad conninfo exited 0"
printf '%s\n' "$err" | grep -q sekrit123 && fail "password printed: $err"
echo "shell ok"
