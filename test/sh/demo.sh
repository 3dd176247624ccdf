#!/bin/sh
# make demo, small: the whole pipeline on a private server (through the
# sanitized shell), and its counts add up.
set -u
cd "${PGPIPE_TOP:-.}"
out=$(DEMO_ROWS=3000 PGPIPE_SHELL=build/test/pgpipe sh tool/demo.sh 2>&1); rc=$?
echo "$out" | grep -v NOTICE | tail -n 30
[ $rc = 0 ] || { echo "demo exited $rc"; exit 1; }
for want in "installed the built-in schema and the example pipeline" \
            "read 3000, loaded" "claimed" "refreshed analytics.daily_user_metrics concurrently" \
            "expected ',' or '}'" "violates check constraint" "records_in = 3050" \
            "adds_up = yes: nothing lost, nothing twice" "demo finished in"; do
    echo "$out" | grep -qF -- "$want" || { echo "missing: $want"; exit 1; }
done
echo "$out" | grep -q 'ERROR\|^error' && { echo "an error was printed"; exit 1; }
exit 0
