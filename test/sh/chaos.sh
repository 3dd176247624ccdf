#!/bin/sh
# A short chaos run (make chaos runs a longer one): records loaded and
# processed through the fault proxy while the server restarts and loader and
# worker processes are SIGKILLed; every record must end in production exactly
# once or in the dead letters, and pgpipe.loads must add up.
cd "${PGPIPE_TOP:-.}"
CHAOS_SEED=${CHAOS_SEED:-1} CHAOS_SECONDS=${CHAOS_SECONDS:-15} \
CHAOS_RECORDS=${CHAOS_RECORDS:-6000} exec sh test/chaos/run.sh
