#!/bin/sh
# Dependency check (also `make deps`): what building and testing pgpipe needs.
#
#   sh tool/deps.sh [--cross] [--fuzz] [--check]
#
# Checks cc, make, pkg-config, the libpq headers and library, and the
# PostgreSQL server binaries (initdb, pg_ctl, postgres), valgrind (for the
# memcheck test); with --cross the
# aarch64 cross compiler, with --fuzz clang with libFuzzer. On Debian as root
# it installs what is missing with apt-get; otherwise (or with --check) it
# prints the exact command to run and exits 1.
set -eu

cross=0; fuzz=0; check_only=0
for a in "$@"; do
    case "$a" in
    --cross) cross=1 ;;
    --fuzz) fuzz=1 ;;
    --check) check_only=1 ;;
    *) echo "usage: $0 [--cross] [--fuzz] [--check]" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
missing=""       # Debian package names
note() { printf '  %-28s %s\n' "$1" "$2"; }

need_cmd() { # command package
    if command -v "$1" >/dev/null 2>&1; then note "$1" ok; else note "$1" "missing ($2)"; missing="$missing $2"; fi
}

echo "pgpipe dependency check"
need_cmd cc gcc
need_cmd make make
need_cmd pkg-config pkg-config
need_cmd awk mawk
need_cmd valgrind valgrind
if pkg-config --exists libpq 2>/dev/null && [ -f "$(pkg-config --variable=includedir libpq)/libpq-fe.h" ]; then
    note "libpq headers" "ok ($(pkg-config --modversion libpq))"
else
    note "libpq headers" "missing (libpq-dev)"; missing="$missing libpq-dev"
fi
if sh "$here/pgtmp.sh" bindir >/dev/null 2>&1; then
    note "PostgreSQL server" "ok ($(sh "$here/pgtmp.sh" bindir))"
else
    note "PostgreSQL server" "missing (postgresql)"; missing="$missing postgresql"
fi
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1 && ! echo "$missing" | grep -q postgresql; then
    note "user postgres" "missing (the server runs as it when tests run as root)"
fi
if [ $cross = 1 ]; then need_cmd aarch64-linux-gnu-gcc gcc-aarch64-linux-gnu; fi
if [ $fuzz = 1 ]; then
    need_cmd clang clang
    if command -v clang >/dev/null 2>&1; then
        if echo 'int LLVMFuzzerTestOneInput(const char*d,unsigned long n){(void)d;(void)n;return 0;}' |
            clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1; then
            note libFuzzer ok
        else
            note libFuzzer "missing (libclang-rt-dev)"; missing="$missing libclang-rt-dev"
        fi
    fi
fi

[ -z "$missing" ] && { echo "all dependencies present"; exit 0; }

cmd="apt-get install -y --no-install-recommends$missing"
if [ $check_only = 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # the Debian server package would create and start a cluster of its own;
    # pgpipe starts throwaway clusters itself, so ask it not to
    if echo "$missing" | grep -q postgresql && [ ! -f /etc/postgresql-common/createcluster.conf ]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    # shellcheck disable=SC2086
    apt-get install -y --no-install-recommends $missing || { apt-get update && apt-get install -y --no-install-recommends $missing; }
    exec sh "$0" --check "$@"
fi
if command -v apt-get >/dev/null 2>&1; then
    echo "missing:$missing"
    echo "run:  sudo $cmd"
else
    echo "missing:$missing (Debian package names; install the equivalents for your system)"
fi
exit 1
