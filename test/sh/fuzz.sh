#!/bin/sh
# make test: no database
# Every libFuzzer target (test/fuzz/fuzz_*.c) builds and runs a bounded number
# of inputs from its seeds (test/fuzz/seeds-NAME/) without a crash: a
# regression run, not a fuzzing campaign (that is `make fuzz-NAME SECONDS=...`).
set -u
cd "${PGPIPE_TOP:-.}"
ls test/fuzz/fuzz_*.c >/dev/null 2>&1 || { echo "no fuzz targets yet"; exit 77; }
command -v clang >/dev/null 2>&1 || { echo "clang not installed (sh tool/deps.sh --fuzz)"; exit 77; }
runs=${PGPIPE_FUZZ_RUNS:-20000}
rc=0
# each target compiles the whole amalgamation: build them side by side
targets=$(for f in test/fuzz/fuzz_*.c; do n=$(basename "$f" .c); echo "build/fuzz/$n"; done)
# shellcheck disable=SC2086
make -s -j"$(nproc 2>/dev/null || echo 2)" $targets >/dev/null 2>&1 || true
# one target after another in each of JOBS lanes, the lanes side by side;
# a lane's report goes to its own file, printed in order at the end
jobs=$(nproc 2>/dev/null || echo 2)
dir=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/fuzz.XXXXXX")
lane=0
while [ $lane -lt $jobs ]; do
    (
        i=0; lrc=0
        for f in test/fuzz/fuzz_*.c; do
            i=$((i + 1))
            [ $((i % jobs)) = $lane ] || continue
            name=$(basename "$f" .c)
            name=${name#fuzz_}
            if ! make -s "build/fuzz/fuzz_$name" >/dev/null; then echo "FAIL: fuzz_$name does not build"; lrc=1; continue; fi
            corpus=$(mktemp -d "$dir/corpus.XXXXXX")
            seeds=
            [ -d "test/fuzz/seeds-$name" ] && seeds="test/fuzz/seeds-$name"
            if "build/fuzz/fuzz_$name" -runs="$runs" -seed=1 "$corpus" $seeds >"$corpus.log" 2>&1; then
                echo "fuzz_$name: $runs runs, no crash"
            else
                echo "FAIL: fuzz_$name crashed"; tail -n 30 "$corpus.log"; lrc=1
            fi
        done > "$dir/lane-$lane.out"
        exit $lrc
    ) &
    eval "pid_$lane=\$!"
    lane=$((lane + 1))
done
lane=0
while [ $lane -lt $jobs ]; do
    eval "wait \$pid_$lane" || rc=1
    cat "$dir/lane-$lane.out"
    lane=$((lane + 1))
done
exit $rc
