#!/bin/sh
# Every C example in README.md marked `<!-- example: NAME -->` compiles against
# the amalgamation with the strict flags and runs against the test database;
# where a block marked `<!-- output: NAME -->` follows, its output must match.
set -eu
cd "${PGPIPE_TOP:-.}"
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/readme.XXXXXX")
awk -v dir="$tmp" '
    /^<!-- example: [A-Za-z0-9_]+ -->/ { name = $3; next }
    /^<!-- output: [A-Za-z0-9_]+ -->/ { name = $3; ext = ".out"; next }
    name != "" && /^```/ && !grab { out = dir "/" name (ext ? ext : ".c"); grab = 1; ext = ""; next }
    grab && /^```/ { grab = 0; name = ""; close(out); next }
    grab { print > out }
' README.md
n=0
for f in "$tmp"/*.c; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    name=$(basename "$f" .c)
    cc -std=c11 -Wall -Wextra -Wpedantic -Werror -I build/gen $(pkg-config --cflags libpq) \
        "$f" build/gen/pgpipe.c $(pkg-config --libs libpq) -lpthread -lm -o "$tmp/$name"
    echo "== $name"
    "$tmp/$name" "$PGPIPE_TEST_DSN" > "$tmp/$name.got"
    cat "$tmp/$name.got"
    if [ -f "$tmp/$name.out" ] && ! cmp -s "$tmp/$name.out" "$tmp/$name.got"; then
        echo "output of $name differs from README.md:"; diff "$tmp/$name.out" "$tmp/$name.got"; exit 1
    fi
done
[ $n -gt 0 ] || { echo "no examples found in README.md"; exit 1; }
echo "$n README examples compiled and ran"
