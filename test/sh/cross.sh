#!/bin/sh
# make cross: pgpipe.c compiles for aarch64 at -Os, threaded and single-threaded.
set -u
cd "${PGPIPE_TOP:-.}"
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || { echo "aarch64-linux-gnu-gcc not installed (sh tool/deps.sh --cross)"; exit 77; }
out=$(make -s -o pgpipe.c -o pgpipe.h cross 2>&1) || { echo "$out"; exit 1; }
echo "$out"
echo "$out" | grep -q 'aarch64 object (-Os): [0-9]* bytes' || exit 1
readelf -h build/cross/pgpipe-aarch64.o | grep -q 'AArch64' || { echo "not an aarch64 object"; exit 1; }
readelf -h build/cross/pgpipe-aarch64-nothreads.o | grep -q 'AArch64' || exit 1
