#!/bin/sh
# make bench-spool: the spool with a big backlog: write SPOOL_MB MiB (default
# 1024; SPOOL_MB=10240 for the 10 GB check) of ~360-byte records, then
# reopen it and peek it, each in its own process: peak RSS and time. Memory
# must not grow with the backlog (one entry per 64 MiB segment). Then drain
# it into staging of a throwaway cluster of its own (tool/pgtmp.sh): the
# drainer's peak RSS (VmHWM) must not grow with it either. Needs twice
# SPOOL_MB plus a little free in SPOOL_DIR's file system (default
# build/bench): the spool and the cluster's copy.
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
mb=${SPOOL_MB:-1024}
base=${SPOOL_DIR:-build/bench}
mkdir -p build/bench "$base"
free=$(df -Pk "$base" | awk 'NR == 2 { print int($4 / 1024) }')
[ "$free" -gt $((mb * 3 + 1024)) ] || { echo "bench-spool: $mb MiB wanted, $free MiB free in $base"; exit 1; }
pgcf=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
libs=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
# shellcheck disable=SC2086
cc -std=c11 -O2 $pgcf -I. test/bench/spool/big.c $libs -lpthread -lm -o build/bench/spool-big
dir=$base/spool-big.$$
pg=$base/spool-pg.$$
trap 'sh tool/pgtmp.sh stop "$pg" >/dev/null 2>&1; rm -rf "$dir" "$pg"' EXIT
w=$(build/bench/spool-big write "$dir" "$mb"); echo "$w"
r=$(build/bench/spool-big reopen "$dir" "$mb"); echo "$r"
p=$(build/bench/spool-big peek "$dir" "$mb"); echo "$p"
db=$(sh tool/pgtmp.sh start "$pg" --owner $$)
d=$(SPOOL_DB=$db build/bench/spool-big drain "$dir" "$mb"); echo "$d"
val() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
echo "bench: component=spool workload=append_${mb}MiB metric=MiB_per_s pgpipe=$(val "$w" mib_per_s)"
echo "bench: component=spool workload=reopen_${mb}MiB metric=peak_rss_kb pgpipe=$(val "$r" peak_rss_kb)"
echo "bench: component=spool workload=reopen_${mb}MiB metric=seconds pgpipe=$(val "$r" seconds)"
echo "bench: component=spool workload=drain_${mb}MiB metric=peak_rss_kb pgpipe=$(val "$d" peak_rss_kb)"
echo "bench: component=spool workload=drain_${mb}MiB metric=MiB_per_s pgpipe=$(val "$d" mib_per_s)"
