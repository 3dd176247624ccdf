#!/bin/sh
# make install PREFIX=...: header, static library, shell and pgpipe.pc; the
# README example builds against the installed copy with pkg-config alone.
set -eu
cd "${PGPIPE_TOP:-.}"
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/install.XXXXXX")
prefix=$tmp/prefix
# -o: never regenerate the committed amalgamation from inside a test
# its own build dir: -o marks pgpipe.c old, so stale objects in build/ would be used
make -s -o pgpipe.c -o pgpipe.h install PREFIX="$prefix" B="$tmp/build" >/dev/null
for f in include/pgpipe.h lib/libpgpipe.a bin/pgpipe lib/pkgconfig/pgpipe.pc; do
    [ -f "$prefix/$f" ] || { echo "missing $prefix/$f"; exit 1; }
done
"$prefix/bin/pgpipe" --version
awk '/^<!-- example: hello -->/ { want = 1; next }
     want && /^```c/ { grab = 1; next }
     grab && /^```/ { exit }
     grab { print }' README.md > "$tmp/hello.c"
[ -s "$tmp/hello.c" ] || { echo "README has no hello example"; exit 1; }
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cd "$tmp"
cc -std=c11 -Wall -Wextra -Werror hello.c $(pkg-config --cflags --libs pgpipe) -o hello
./hello "$PGPIPE_TEST_DSN"
