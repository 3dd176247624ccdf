#!/bin/sh
# A short chaos run (make chaos runs a longer one): records loaded and
# processed through the fault proxy while the server restarts and loader and
# worker processes are SIGKILLed; every record must end in production exactly
# once or in the dead letters, and pgpipe.loads must add up.
# On a failure the run's verdict lines come last (the test runner shows the
# last 40 lines of a failing test), after what the loaders said.
cd "${PGPIPE_TOP:-.}"
out=$(mktemp "${PGPIPE_TEST_TMP:-/tmp}/chaos-out.XXXXXX")
CHAOS_SEED=${CHAOS_SEED:-1} CHAOS_SECONDS=${CHAOS_SECONDS:-15} \
CHAOS_RECORDS=${CHAOS_RECORDS:-6000} sh test/chaos/run.sh >"$out" 2>&1
rc=$?
cat "$out"
if [ $rc != 0 ]; then
    echo "== what the loaders said"
    grep -E '^loader-[0-9]+\.log: ' "$out" | cut -c1-300 | tail -n 12
    echo "== the verdict"
    grep -E '^(chaos: (failover|faults stopped|loads complete)|faults injected|fault kinds run|records:|  (MISSING|TWICE|WRONG) |pgpipe.loads|FAIL|loader gave up)' "$out" |
        cut -c1-300 | tail -n 24
fi
rm -f "$out"
exit $rc
