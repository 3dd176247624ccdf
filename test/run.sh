#!/bin/sh
# The test driver behind `make test` (build first: make test-build).
#   sh test/run.sh [GROUP ...]
# Starts a throwaway PostgreSQL cluster (tool/pgtmp.sh), runs the C tests
# (build/test/runner) and the script tests (test/sh/GROUP*.sh), stops the
# cluster whatever happens, and ends with the line "N passed, N failed".
# A WORD selects the C tests of group WORD and of test/test_WORD.c (GROUP.NAME
# patterns select C tests by name; see test/pgtest.h) and the script tests
# whose file name starts with WORD (or with the GROUP of a pattern); sh.NAME
# selects the script test test/sh/NAME.sh alone.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

if [ -z "${PGPIPE_TEST_DSN:-}" ] || [ -z "${PGPIPE_TEST_PGDIR:-}" ]; then
    # re-run ourselves inside a throwaway cluster; it is stopped on any exit
    dir=$(mktemp -d /tmp/pgpipe-test.XXXXXX)
    chmod 755 "$dir"
    sh tool/pgtmp.sh run "$dir/pg" -- sh "$0" "$@"
    rc=$?
    rm -rf "$dir"
    exit $rc
fi

run_start=$(date +%s)
export PGPIPE_TEST_TMP=$(mktemp -d /tmp/pgpipe-t.XXXXXX)
chmod 755 "$PGPIPE_TEST_TMP"
trap 'rm -rf "$PGPIPE_TEST_TMP"' EXIT
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:halt_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export PGPIPE_TOP=$top

passed=0; failed=0; skipped=0

# selected NAME [GROUP ...]: 0 when script test NAME is selected by the groups
selected() {
    name=$1; shift
    [ $# -gt 0 ] || return 0
    for g in "$@"; do
        case "$g" in
        sh.*) [ "$name" = "${g#sh.}" ] && return 0 ;; # sh.NAME: that script alone
        *) case "$name" in "${g%%.*}"*) return 0 ;; esac ;;
        esac
    done
    return 1
}

# Script tests that need not the test server (a line "# make test: no
# database" in the script: they compile, cross-compile, run under qemu, fuzz,
# or start their own server, as valgrind's demo does) run in the background
# while the C tests run, one after another at a lower priority: the C tests
# mostly wait on the server, and these use the idle core. Each one's exit
# status lands in bg/NAME.rc; the script loop below reports it in its turn.
bg=$PGPIPE_TEST_TMP/bg
mkdir -p "$bg"
bg_list=
for t in test/sh/*.sh; do
    name=$(basename "$t" .sh)
    selected "$name" "$@" && grep -q '^# make test: no database$' "$t" && bg_list="$bg_list $t"
done
bg_pid=
if [ -n "$bg_list" ]; then
    (
        for t in $bg_list; do
            name=$(basename "$t" .sh)
            start=$(date +%s)
            nice -n 10 sh "$t" >"$bg/$name.log" 2>&1
            echo "$? $(( $(date +%s) - start ))" > "$bg/$name.rc.tmp"
            mv "$bg/$name.rc.tmp" "$bg/$name.rc"
        done
    ) &
    bg_pid=$!
    trap '[ -n "$bg_pid" ] && { pkill -P "$bg_pid" 2>/dev/null; kill "$bg_pid" 2>/dev/null; }; rm -rf "$PGPIPE_TEST_TMP"' EXIT
fi

echo "== C tests (build/test/runner)"
counts=$PGPIPE_TEST_TMP/counts
build/test/runner --counts "$counts" "$@"
if [ -s "$counts" ]; then
    read -r p f s < "$counts"
    passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
else
    echo "FAIL    the C test runner did not finish"
    failed=$((failed + 1))
fi

echo "== script tests (test/sh)"
for t in test/sh/*.sh; do
    [ -f "$t" ] || continue
    name=$(basename "$t" .sh)
    selected "$name" "$@" || continue
    case " $bg_list " in
    *" $t "*) # run in the background: wait for its status
        while [ ! -f "$bg/$name.rc" ] && kill -0 "$bg_pid" 2>/dev/null; do sleep 1; done
        [ -f "$bg/$name.rc" ] && read -r rc secs < "$bg/$name.rc" || { rc=1; secs=0; }
        log=$bg/$name.log ;;
    *)
        log=$PGPIPE_TEST_TMP/$name.log
        start=$(date +%s)
        sh "$t" >"$log" 2>&1
        rc=$?
        secs=$(( $(date +%s) - start )) ;;
    esac
    if [ $rc = 0 ]; then
        passed=$((passed + 1)); echo "ok      sh.$name (${secs} s)"
    elif [ $rc = 77 ]; then
        skipped=$((skipped + 1)); echo "skip    sh.$name: $(tail -n 1 "$log")"
    else
        failed=$((failed + 1)); echo "FAIL    sh.$name (exit $rc)"
        sed 's/^/    /' "$log" | tail -n 40
    fi
done

if [ $# -eq 0 ]; then
    if make -s check-amalgamation >"$PGPIPE_TEST_TMP/amalg.log" 2>&1; then
        passed=$((passed + 1)); echo "ok      check-amalgamation"
    else
        failed=$((failed + 1)); echo "FAIL    check-amalgamation"; sed 's/^/    /' "$PGPIPE_TEST_TMP/amalg.log"
    fi
fi

# the suite's own time (the build before it not counted): make test is to stay
# under 15 minutes on 2 cores, build included
echo "tests ran in $(( $(date +%s) - run_start )) s"
if [ $skipped -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ $failed -eq 0 ]
