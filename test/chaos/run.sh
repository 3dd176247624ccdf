#!/bin/sh
# `make chaos`: load and process records through the fault proxy
# (test/faultproxy.c) while the server restarts and loader and worker
# processes are SIGKILLed; then check record by record that every input
# record is in production exactly once or in the dead letters. See
# test/chaos/chaos.c for what it does and checks.
#
#   CHAOS_SEED=1 CHAOS_SECONDS=120 CHAOS_RECORDS=100000 sh test/chaos/run.sh
#
# CHAOS_FAULTS picks the fault kinds (comma-separated; default all):
#   net        the proxy drops, cuts and stalls connections
#   restart    server restarts            kill  SIGKILLs of loaders and workers
#   dup        second runs of a load beside the running one
#   pgbouncer  pgbouncer in transaction mode between the proxy and the server
#              (skipped with a message when not installed)
#   failover   a streaming replica promoted mid-load after the replication was
#              cut (CHAOS_FAILOVER_LAG_MS of commits are lost with the primary)
# CHAOS_FAULTS=net,restart,kill,dup is the run as it was before the last two.
#
# Other knobs: CHAOS_FILES, CHAOS_LOADERS, CHAOS_WORKERS, CHAOS_DROP,
# CHAOS_CUT, CHAOS_STALL, CHAOS_STALL_MS, CHAOS_EVENT_MS, CHAOS_BOUNCER_POOL,
# CHAOS_FAILOVER_LAG_MS, CHAOS_PGBOUNCER (its path). CHAOS_SAN=0 builds
# without ASan/UBSan (default: with, as in make test), CHAOS_SAN=thread with
# ThreadSanitizer. CHAOS_KEEP=1 keeps the
# scratch directory (input files, one log per loader and worker slot).
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
B=$top/build/chaos
mkdir -p "$B"
make -s pgpipe.c >/dev/null
PGC=$(pkg-config --cflags libpq 2>/dev/null || echo -I"$(pg_config --includedir)")
PGL=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"
[ "${CHAOS_SAN:-1}" = 0 ] && SAN=
[ "${CHAOS_SAN:-1}" = thread ] && SAN="-fsanitize=thread -fno-omit-frame-pointer"
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1 exitcode=66}
# rebuilt when a source or the sanitizer changed
if [ ! -x "$B/chaos" ] || [ "$(cat "$B/chaos.san" 2>/dev/null)" != "$SAN" ] ||
   [ pgpipe.c -nt "$B/chaos" ] || [ test/chaos/chaos.c -nt "$B/chaos" ]; then
    cc -std=c11 -Wall -Wextra -Wpedantic -Werror -O1 -g $SAN $PGC -I"$top" \
        test/chaos/chaos.c $PGL -lpthread -lm -o "$B/chaos"
    echo "$SAN" >"$B/chaos.san"
fi
[ -x "$B/faultproxy" ] && [ "$B/faultproxy" -nt test/faultproxy.c ] ||
    cc -std=c11 -Wall -Wextra -Werror -O2 test/faultproxy.c -o "$B/faultproxy"
export CHAOS_PROXY="$B/faultproxy"
export CHAOS_DIR=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/chaos.XXXXXX")
chmod 755 "$CHAOS_DIR"
# the pooler must be found by pgpipe itself, not told
unset PGPIPE_POOLER
# pg_basebackup beside the server's pg_ctl (its bindir may hold links only)
if [ -z "${CHAOS_PGBIN:-}" ]; then
    CHAOS_PGBIN=$(sh tool/pgtmp.sh bindir 2>/dev/null || true)
    [ -n "$CHAOS_PGBIN" ] && CHAOS_PGBIN=$(dirname "$(readlink -f "$CHAOS_PGBIN/pg_ctl")")
fi
export CHAOS_PGBIN
if [ -z "${CHAOS_PGBOUNCER:-}" ]; then
    CHAOS_PGBOUNCER=${PGPIPE_PGBOUNCER:-$(command -v pgbouncer 2>/dev/null || true)}
    [ -z "$CHAOS_PGBOUNCER" ] && [ -x /usr/sbin/pgbouncer ] && CHAOS_PGBOUNCER=/usr/sbin/pgbouncer
fi
export CHAOS_PGBOUNCER
# what the run starts beside the cluster ends with it, whatever happened
# (chaos stops them itself; this is for a run that was killed)
cleanup() {
    if [ -f "$CHAOS_DIR/bouncer/pgbouncer.pid" ]; then
        kill "$(cat "$CHAOS_DIR/bouncer/pgbouncer.pid")" 2>/dev/null || true
    fi
    if [ -f "$CHAOS_DIR/replica/opts" ]; then
        sh tool/pgtmp.sh stop "$CHAOS_DIR/replica" >/dev/null 2>&1 || true
    fi
}
trap 'cleanup; rm -rf "$CHAOS_DIR"; exit 130' INT TERM
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
set +e
# its own cluster: the run restarts the server
sh tool/pgtmp.sh run -- "$B/chaos"
rc=$?
set -e
cleanup
trap - INT TERM
if [ $rc != 0 ]; then
    for f in "$CHAOS_DIR"/*.log; do
        [ -f "$f" ] || continue
        if grep -q 'ERROR\|Sanitizer\|runtime error' "$f"; then echo "== $f"; grep -B2 -A20 'ERROR\|Sanitizer\|runtime error' "$f" | head -n 60; fi
    done
    # what each loader run said: its warnings and how it ended
    for f in "$CHAOS_DIR"/loader-*.log; do
        [ -f "$f" ] || continue
        grep -E '^loader [0-9]+:|level=warn' "$f" | grep -v 'reconnecting in' |
            sed "s|^|$(basename "$f"): |" | head -n 20
    done
fi
if [ "${CHAOS_KEEP:-0}" = 1 ]; then echo "kept: $CHAOS_DIR"; else rm -rf "$CHAOS_DIR"; fi
exit $rc
