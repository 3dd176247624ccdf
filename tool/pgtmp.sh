#!/bin/sh
# pgtmp: a throwaway PostgreSQL cluster in a directory (sh tool/pgtmp.sh alone
# prints the help). The work is done by tool/pgtmp.c on the library's private
# local server (pgpipe_local_*); this wrapper builds it into build/pgtmp when
# it is missing or older than its sources, then runs it with our arguments.
#
#   sh tool/pgtmp.sh start DIR [--tcp] [--port N] [--owner PID] [--logical]
#   sh tool/pgtmp.sh stop|restart|status|conninfo DIR
#   sh tool/pgtmp.sh run [DIR] -- CMD [ARGS...]
#   sh tool/pgtmp.sh bindir
#
# `bindir` is answered here, in sh, without compiling: tool/deps.sh asks it
# before anything can be built (libpq-dev may still be missing). It searches
# as the library does: $PGTMP_BINDIR, $PGPIPE_PG_BINDIR, $PATH, `pg_config --bindir`, then
# /usr/lib/postgresql/*/bin (newest first).
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)

has_tools() { [ -n "$1" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/initdb" ]; }

if [ "${1:-}" = bindir ]; then
    for b in "${PGTMP_BINDIR:-}" "${PGPIPE_PG_BINDIR:-}"; do has_tools "$b" && { echo "$b"; exit 0; }; done
    IFS=:
    for b in $PATH; do has_tools "$b" && { echo "$b"; exit 0; }; done
    unset IFS
    b=$(pg_config --bindir 2>/dev/null || true)
    if has_tools "$b"; then echo "$b"; exit 0; fi
    for b in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -rn); do
        has_tools "$b" && { echo "$b"; exit 0; }
    done
    echo "pgtmp: no PostgreSQL server binaries (initdb, pg_ctl) found; run: sh tool/deps.sh" >&2
    exit 1
fi

bin=$top/build/pgtmp
src="$top/tool/pgtmp.c $top/pgpipe.c $top/pgpipe.h"
# shellcheck disable=SC2086
if [ ! -x "$bin" ] || [ -n "$(find $src -newer "$bin" 2>/dev/null)" ]; then
    echo "pgtmp: building build/pgtmp" >&2
    mkdir -p "$top/build"
    # a file of our own, renamed into place: concurrent callers may build too
    tmp=$bin.$$
    # shellcheck disable=SC2046
    if ! ${CC:-cc} -std=c11 -O1 -I"$top" $(pkg-config --cflags libpq 2>/dev/null) \
        "$top/tool/pgtmp.c" "$top/pgpipe.c" \
        $(pkg-config --libs libpq 2>/dev/null || echo -lpq) -lpthread -lm \
        -o "$tmp" 2>"$tmp.log"; then
        cat "$tmp.log" >&2
        rm -f "$tmp" "$tmp.log"
        echo "pgtmp: could not build build/pgtmp (errors above)" >&2
        exit 1
    fi
    rm -f "$tmp.log"
    mv -f "$tmp" "$bin"
fi
exec "$bin" "$@"
