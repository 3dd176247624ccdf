#!/bin/sh
# make cross: compile pgpipe.c for aarch64 at -Os in each build configuration
# and print a table: configuration -> text size, and its share of the full
# build. Also checks that a configuration leaves out what it says: no
# pgpipe_NAME_* symbol of an omitted component is defined.
#
#   sh tool/cross.sh [CC]        (default aarch64-linux-gnu-gcc)
set -eu
cc=${1:-aarch64-linux-gnu-gcc}
command -v "$cc" >/dev/null || { echo "$cc missing: run 'sh tool/deps.sh --cross'"; exit 1; }
size=${cc%gcc}size
command -v "$size" >/dev/null || size=size
nm=${cc%gcc}nm
command -v "$nm" >/dev/null || nm=nm
pgcf=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
out=build/cross
mkdir -p $out

# name|flags|symbol prefixes that must be absent
configs='full||
no threads|-DPGPIPE_OMIT_THREADS|pgpipe_workers_
no local server|-DPGPIPE_OMIT_LOCAL|pgpipe_local_
no records store|-DPGPIPE_OMIT_RECORDS|pgpipe_records_
no claimer|-DPGPIPE_OMIT_CLAIM|pgpipe_claimer_ pgpipe_workers_
no loader|-DPGPIPE_OMIT_LOAD|pgpipe_loader_
no migrations|-DPGPIPE_OMIT_MIGRATE|pgpipe_migrate_ pgpipe_loader_ pgpipe_cdc_
no runner|-DPGPIPE_OMIT_RUN|pgpipe_cron_ pgpipe_pipefile_
loader only|-DPGPIPE_OMIT_CLAIM -DPGPIPE_OMIT_RECORDS -DPGPIPE_OMIT_LOCAL|pgpipe_claimer_ pgpipe_records_ pgpipe_local_
loader only, no threads|-DPGPIPE_OMIT_CLAIM -DPGPIPE_OMIT_RECORDS -DPGPIPE_OMIT_LOCAL -DPGPIPE_OMIT_THREADS|pgpipe_claimer_ pgpipe_records_ pgpipe_local_
migrations only|-DPGPIPE_OMIT_JSON -DPGPIPE_OMIT_CSV -DPGPIPE_OMIT_DLQ -DPGPIPE_OMIT_LOCAL -DPGPIPE_OMIT_THREADS|pgpipe_json_ pgpipe_csv_ pgpipe_loader_ pgpipe_claimer_ pgpipe_records_ pgpipe_dlq_
no spool|-DPGPIPE_OMIT_SPOOL|pgpipe_spool_
parse+spool+load|-DPGPIPE_OMIT_CLAIM -DPGPIPE_OMIT_RECORDS -DPGPIPE_OMIT_LOCAL -DPGPIPE_OMIT_HTTP -DPGPIPE_OMIT_CDC -DPGPIPE_OMIT_PULL -DPGPIPE_OMIT_RUN -DPGPIPE_OMIT_THREADS|pgpipe_claimer_ pgpipe_records_ pgpipe_local_ pgpipe_http_ pgpipe_cdc_ pgpipe_pull_ pgpipe_workers_
parsers only|-DPGPIPE_OMIT_POOL -DPGPIPE_OMIT_MIGRATE -DPGPIPE_OMIT_DLQ -DPGPIPE_OMIT_LOCAL -DPGPIPE_OMIT_THREADS|pgpipe_pool_ pgpipe_migrate_ pgpipe_loader_ pgpipe_claimer_ pgpipe_records_ pgpipe_cdc_'

# CROSS_FAST=1 (make test's sh.cross): only the builds whose size matters
# (full, no threads, parse+spool+load) at -Os; the others at -O0, a quarter
# of the time, for the check that they compile and leave their symbols out
fast=${CROSS_FAST:-0}
sized() { [ "$fast" != 1 ] || [ "$1" = full ] || [ "$1" = "no threads" ] || [ "$1" = "parse+spool+load" ]; }

# compile every configuration first, as many at a time as there are cores
jobs=$(nproc 2>/dev/null || echo 2)
echo "$configs" | {
    i=0
    while IFS='|' read -r name flags absent; do
        i=$((i + 1))
        opt=-Os
        sized "$name" || opt=-O0
        # shellcheck disable=SC2086
        { $cc -std=c11 -Wall -Wextra -Wpedantic -Werror $opt $flags $pgcf -c pgpipe.c \
              -o $out/pgpipe-aarch64-$i.o > $out/cc-$i.log 2>&1; echo $? > $out/cc-$i.rc; } &
        [ $((i % jobs)) != 0 ] || wait
    done
    wait
}

full=0
i=0
: > $out/bench.txt
printf '%-26s %10s %7s  %s\n' configuration text share flags
echo "$configs" | while IFS='|' read -r name flags absent; do
    i=$((i + 1))
    o=$out/pgpipe-aarch64-$i.o
    [ "$(cat $out/cc-$i.rc)" = 0 ] ||
        { cat $out/cc-$i.log; echo "cross: '$name' ($flags) does not compile"; exit 1; }
    for p in $absent; do
        if $nm -g --defined-only $o | awk '{print $3}' | grep -q "^$p"; then
            echo "cross: '$name' still defines $p* symbols"; exit 1
        fi
    done
    if ! sized "$name"; then
        printf '%-26s %10s %7s  %s\n' "$name" "-O0" "-" "${flags:--}"
        continue
    fi
    text=$($size $o | awk 'NR == 2 { print $1 }')
    [ $i = 1 ] && full=$text && cp $o $out/pgpipe-aarch64.o
    [ "$name" = "no threads" ] && cp $o $out/pgpipe-aarch64-nothreads.o
    [ "$name" = "parse+spool+load" ] && cp $o $out/pgpipe-aarch64-psl.o
    printf '%-26s %10s %6s%%  %s\n' "$name" "$text" "$((text * 100 / full))" "${flags:--}"
    echo "bench: component=cross workload=$(echo "$name" | tr -s ' ,' '_') metric=text_bytes pgpipe=$text" >> $out/bench.txt
done
# the smallest useful device build: parse + spool + load. Its machine code
# (the .text section; the embedded schema SQL and the unwind tables are read-only
# data besides it) against the 120 KB target.
psl=$out/pgpipe-aarch64-psl.o
for f in pgpipe_spool_append pgpipe_spool_drain pgpipe_loader_open pgpipe_json_parse; do
    $nm -g --defined-only $psl | awk '{print $3}' | grep -qx "$f" || { echo "cross: parse+spool+load lacks $f"; exit 1; }
done
ptext=$($size -A $psl | awk '$1 == ".text" { print $2 }')
prod=$($size -A $psl | awk '$1 ~ /^\.rodata/ { s += $2 } END { print s + 0 }')
echo "parse+spool+load: .text $ptext bytes of aarch64 -Os code (+ $prod bytes of read-only data, mostly the embedded schema SQL)"
echo "bench: component=size workload=parse+spool+load metric=bytes pgpipe=$ptext peer=target peer_value=122880 ratio=$(awk -v a="$ptext" 'BEGIN { printf "%.3f", 122880 / a }')" >> $out/bench.txt
echo "aarch64 object (-Os): $(wc -c < $out/pgpipe-aarch64.o) bytes; single-threaded: $(wc -c < $out/pgpipe-aarch64-nothreads.o) bytes"
cat $out/bench.txt
