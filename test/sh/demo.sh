#!/bin/sh
# make demo, small: the example pipeline run by the pipeline runner (.run,
# through the sanitized shell) on a private server: both files loaded by the
# folder sources, transformed by the workers, the analytics refreshed by the
# schedule, the runner drained by SIGTERM, and the counts add up.
set -u
cd "${PGPIPE_TOP:-.}"
out=$(DEMO_ROWS=3000 PGPIPE_SHELL=build/test/pgpipe sh tool/demo.sh 2>&1); rc=$?
echo "$out" | grep -v NOTICE | tail -n 30
[ $rc = 0 ] || { echo "demo exited $rc"; exit 1; }
for want in 'msg="file loaded"' "source=drop" "source=events" "drained and stopped" \
            "the status page and the HTTP source: http://127.0.0.1:" \
            "expected ',' or '}'" "violates check constraint" "records_in = 3050" \
            "adds_up = yes: nothing lost, nothing twice" "demo finished in"; do
    echo "$out" | grep -qF -- "$want" || { echo "missing: $want"; exit 1; }
done
# .runs' name column is as wide as its longest name: a dlq-replay firing (every 15
# minutes of the wall clock) in the listing pads "analytics"
echo "$out" | grep -Eq '\| schedule +\| analytics +\|' || { echo "missing: the analytics schedule in .runs"; exit 1; }
echo "$out" | grep -q 'ERROR\|^error' && { echo "an error was printed"; exit 1; }
exit 0
