#!/bin/sh
# `make bench`: run every component's benchmark (test/bench/NAME/run.sh) and
# print one table of all their figures, from the "bench: ..." lines they print.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
mkdir -p build/bench
all=build/bench/all.txt
: >"$all"
for b in "$@"; do
    echo "== bench-$b"
    sh "test/bench/$b/run.sh" 2>&1 | tee -a "$all"
done
echo
echo "== all benchmarks"
printf '%-10s %-28s %-12s %12s %-14s %12s %8s\n' component workload metric pgpipe peer peer_value ratio
grep '^bench: ' "$all" | sed 's/^bench: //' | awk '{
    delete f
    for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = substr($i, length(kv[1]) + 2) }
    printf "%-10s %-28s %-12s %12s %-14s %12s %8s\n", f["component"], f["workload"], f["metric"], f["pgpipe"], f["peer"], f["peer_value"], f["ratio"]
}'
