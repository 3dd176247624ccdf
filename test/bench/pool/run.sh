#!/bin/sh
# make bench-pool: the connection pool against a new connection per use
# (16 threads, pool of 4 + 4 overflow, acquire + SELECT 1 + release), pipeline
# mode against one statement at a time, and the prepared-statement cache
# against PQexecParams. The peer is plain libpq (no package to install).
# Builds with -O2 into build/bench/pool and runs on its own throwaway cluster.
#   sh test/bench/pool/run.sh [SECONDS_PER_RUN]     (default 2)
set -eu
top=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$top"
out=build/bench/pool
mkdir -p "$out"
if ! pkg-config --exists libpq 2>/dev/null && [ ! -f /usr/include/postgresql/libpq-fe.h ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y libpq-dev >/dev/null
    else
        echo "bench-pool: libpq headers missing (apt-get install libpq-dev)" >&2; exit 1
    fi
fi
cflags=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
libs=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
${CC:-cc} -std=c11 -O2 -Wall -Wextra -D_POSIX_C_SOURCE=200809L $cflags -I. \
    test/bench/pool/bench_pool.c pgpipe.c $libs -lpthread -lm -o "$out/bench_pool"
nice -n 5 sh tool/pgtmp.sh run -- "$out/bench_pool" "${1:-2}"
