#!/bin/sh
# `make bench-csv`: pgpipe's CSV reader against libcsv (Debian libcsv-dev, its
# callback API) on three generated profiles of >= 100 MB each: unquoted,
# sparsely quoted (one quoted field with a comma per row), fully quoted (every
# field quoted, some with "" inside). Both readers visit every field (count
# fields, sum decoded lengths) and read the file with read() in 128 KiB blocks.
# Each figure: median of RUNS (default 5) runs after one warm-up run, min and
# max beside it; every run is its own process so peak RSS (getrusage) is per
# reader. Environment: RUNS=N, CSV_BENCH_MB=N (default 105).
#
# Instructions per byte (metric=instr/byte, lower is better), which machine
# noise does not move: callgrind (valgrind) counts the instructions of the
# read loop alone (--toggle-collect on the reader's function) over the first
# CSV_IPB_MB (default 10) MB of each profile, for pgpipe (its best path on this
# CPU), pgpipe with PGPIPE_CSV_SIMD=none (the state machine alone: the reader
# before the fast path, in the same run) and libcsv. perf stat is not used: it
# needs hardware counters that shared and virtual machines often lack.
# CSV_IPB=0 skips them.
set -u
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
out=build/bench
mkdir -p "$out"
runs=${RUNS:-5}
mb=${CSV_BENCH_MB:-105}
CC=${CC:-cc}

# the peer: install it when missing (as root on Debian)
if [ ! -f /usr/include/csv.h ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing libcsv-dev ..."
    apt-get install -y libcsv-dev >/dev/null 2>&1 || \
        { apt-get update >/dev/null 2>&1 && apt-get install -y libcsv-dev >/dev/null 2>&1; }
fi
peer_ok=1
pg_cflags=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
pg_libs=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
if [ -f /usr/include/csv.h ]; then
    $CC -std=c11 -O2 -D_POSIX_C_SOURCE=200809L -I. $pg_cflags test/bench/csv/csvbench.c \
        -o $out/csvbench -lcsv $pg_libs -lpthread -lm || exit 1
else
    echo "libcsv-dev is missing and could not be installed: peer reported as missing"
    peer_ok=0
    $CC -std=c11 -O2 -D_POSIX_C_SOURCE=200809L -DCSVBENCH_NO_LIBCSV -I. $pg_cflags \
        test/bench/csv/csvbench.c -o $out/csvbench $pg_libs -lpthread -lm || exit 1
fi

# inputs (fixed seed); regenerated when missing or smaller than wanted
need=0
for f in csv_unquoted csv_sparse csv_quoted; do
    s=$(wc -c < "$out/$f.csv" 2>/dev/null || echo 0)
    [ "$s" -ge $((mb * 1000000)) ] || need=1
done
if [ $need = 1 ]; then
    echo "generating 3 profiles of ${mb} MB into $out/ ..."
    $out/csvbench gen "$out" "$mb" || exit 1
fi

# one IMPL FILE -> "MB/s rss_kb fields sumlen cpu_MB/s" (wall-clock MB/s of the read
# loop; cpu_MB/s from the process's user+system time, steadier on a busy machine)
one() {
    line=$($out/csvbench "$1" "$out/$2.csv") || { echo "$1 failed on $2" >&2; return 1; }
    echo "$line" | awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
        printf "%.1f %d %s %s %.1f\n", v["bytes"] / v["seconds"] / 1e6, v["maxrss_kb"], v["fields"], v["sumlen"], v["bytes"] / v["cpu"] / 1e6
    }'
}

# stats FILE COLUMN -> "median min max"
stats() {
    awk -v c="$2" '{ print $c }' "$1" | sort -n | awk '{ a[NR] = $1 } END {
        m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
        printf "%s %s %s\n", m, a[1], a[NR] }'
}

printf '%-10s %-14s %-10s %30s %-8s %30s %8s\n' component workload metric \
    "pgpipe median (min-max)" peer "peer median (min-max)" ratio
lines=""
fail=0
for prof in unquoted sparse quoted; do
    f=csv_$prof
    p_res=$out/csv_pgpipe_$prof.txt
    l_res=$out/csv_libcsv_$prof.txt
    : > "$p_res"; : > "$l_res"
    one pgpipe $f >/dev/null || exit 1               # warm-up (page cache, CPU)
    [ $peer_ok = 1 ] && { one libcsv $f >/dev/null || peer_ok=0; }
    i=0
    while [ $i -lt "$runs" ]; do
        one pgpipe $f >> "$p_res" || exit 1
        [ $peer_ok = 1 ] && one libcsv $f >> "$l_res"
        i=$((i + 1))
    done
    set -- $(stats "$p_res" 1); p_med=$1 p_min=$2 p_max=$3
    set -- $(stats "$p_res" 5); pc_med=$1 pc_min=$2 pc_max=$3
    p_rss=$(awk '{ if ($2 > m) m = $2 } END { printf "%.1f", m / 1024 }' "$p_res")
    if [ $peer_ok = 1 ] && [ -s "$l_res" ]; then
        set -- $(stats "$l_res" 1); l_med=$1 l_min=$2 l_max=$3
        set -- $(stats "$l_res" 5); lc_med=$1 lc_min=$2 lc_max=$3
        cratio=$(awk -v a="$pc_med" -v b="$lc_med" 'BEGIN { printf "%.2f", a / b }')
        l_rss=$(awk '{ if ($2 > m) m = $2 } END { printf "%.1f", m / 1024 }' "$l_res")
        ratio=$(awk -v a="$p_med" -v b="$l_med" 'BEGIN { printf "%.2f", a / b }')
        rss_ratio=$(awk -v a="$p_rss" -v b="$l_rss" 'BEGIN { printf "%.2f", b / a }')
        # both readers must have seen the same fields
        pf=$(head -n 1 "$p_res" | awk '{ print $3, $4 }')
        lf=$(head -n 1 "$l_res" | awk '{ print $3, $4 }')
        [ "$pf" = "$lf" ] || { echo "MISMATCH on $prof: pgpipe fields/sumlen $pf, libcsv $lf"; fail=1; }
        lcol="$l_med ($l_min-$l_max)"
        lccol="$lc_med ($lc_min-$lc_max)"
    else
        l_med=missing; l_rss=missing; ratio=missing; rss_ratio=missing; lcol=missing
        lc_med=missing; cratio=missing; lccol=missing
    fi
    printf '%-10s %-14s %-10s %30s %-8s %30s %8s\n' csv "$prof" MB/s \
        "$p_med ($p_min-$p_max)" libcsv "$lcol" "$ratio"
    printf '%-10s %-14s %-10s %30s %-8s %30s %8s\n' csv "$prof" MB/s_cpu \
        "$pc_med ($pc_min-$pc_max)" libcsv "$lccol" "$cratio"
    printf '%-10s %-14s %-10s %30s %-8s %30s %8s\n' csv "$prof" peak_rss_MB \
        "$p_rss" libcsv "$l_rss" "$rss_ratio"
    lines="$lines
bench: component=csv workload=$prof metric=MB/s pgpipe=$p_med peer=libcsv peer_value=$l_med ratio=$ratio
bench: component=csv workload=$prof metric=MB/s_cpu pgpipe=$pc_med peer=libcsv peer_value=$lc_med ratio=$cratio
bench: component=csv workload=$prof metric=peak_rss_MB pgpipe=$p_rss peer=libcsv peer_value=$l_rss ratio=$rss_ratio"
done
# instructions per byte (callgrind), one run each: the count does not vary
ipb_lines=""
if [ "${CSV_IPB:-1}" != 0 ]; then
    if command -v valgrind >/dev/null 2>&1; then
        ipb_mb=${CSV_IPB_MB:-10}
        # ipb IMPL FILE [SIMD] -> instructions per byte of the read loop
        ipb() {
            ir=$(PGPIPE_CSV_SIMD=${3:-} valgrind --tool=callgrind --callgrind-out-file=/dev/null \
                --toggle-collect="run_$1*" $out/csvbench "$1" "$2" 2>&1 | \
                sed -n 's/.*refs: *//p' | tr -d ,)
            [ -n "$ir" ] || { echo missing; return; }
            awk -v i="$ir" -v b="$(wc -c < "$2")" 'BEGIN { printf "%.3f", i / b }'
        }
        best=$(PGPIPE_CSV_SIMD= $out/csvbench simd 2>/dev/null || echo "?")
        printf '\n%-10s %-14s %-12s %14s %14s %14s\n' component workload metric "pgpipe($best)" \
            "state-machine" libcsv
        for prof in unquoted sparse quoted; do
            # a prefix of the profile, cut at a line end
            head -c $((ipb_mb * 1000000)) "$out/csv_$prof.csv" | sed '$d' > "$out/ipb_$prof.csv"
            p=$(ipb pgpipe "$out/ipb_$prof.csv")
            sm=$(ipb pgpipe "$out/ipb_$prof.csv" none)
            if [ $peer_ok = 1 ]; then l=$(ipb libcsv "$out/ipb_$prof.csv"); else l=missing; fi
            r_sm=$(awk -v a="$p" -v b="$sm" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", b / a; else print "missing" }')
            r_l=$(awk -v a="$p" -v b="$l" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", b / a; else print "missing" }')
            printf '%-10s %-14s %-12s %14s %14s %14s\n' csv "$prof" instr/byte "$p" "$sm" "$l"
            ipb_lines="$ipb_lines
bench: component=csv workload=$prof metric=instr/byte pgpipe=$p peer=libcsv peer_value=$l ratio=$r_l
bench: component=csv workload=$prof metric=instr/byte pgpipe=$p peer=pgpipe-state-machine peer_value=$sm ratio=$r_sm"
            rm -f "$out/ipb_$prof.csv"
        done
        echo "(instr/byte: callgrind over the first $ipb_mb MB of each profile, read loop only; pgpipe's path: $best)"
    else
        echo "valgrind is missing: no instructions per byte"
        for prof in unquoted sparse quoted; do
            ipb_lines="$ipb_lines
bench: component=csv workload=$prof metric=instr/byte pgpipe=missing peer=libcsv peer_value=missing ratio=missing"
        done
    fi
fi
echo "$lines$ipb_lines" | sed '/^$/d'
echo "(inputs: $(for f in csv_unquoted csv_sparse csv_quoted; do printf '%s %s bytes; ' $f $(wc -c < $out/$f.csv); done)runs=$runs after 1 warm-up)"
exit $fail
