#!/bin/sh
# make install PREFIX=...: header, static and shared library (soname
# libpgpipe.so.MAJOR, only pgpipe_* exported), shell, man page and pgpipe.pc;
# the README example builds against the installed copy with pkg-config alone,
# linked with the shared library and with the static one, and both run; shell.c
# builds on the installed header and library alone.
set -eu
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
top=$(pwd)
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/install.XXXXXX")
prefix=$tmp/prefix
version=$(sed -n 's/^#define PGPIPE_VERSION *"\(.*\)"/\1/p' pgpipe.h)
major=${version%%.*}
# -o: never regenerate the committed amalgamation from inside a test
# its own build dir: -o marks pgpipe.c old, so stale objects in build/ would be used
make -s -j"$(nproc 2>/dev/null || echo 2)" -o pgpipe.c -o pgpipe.h install PREFIX="$prefix" B="$tmp/build" >"$tmp/make.log" 2>&1 ||
    { cat "$tmp/make.log"; fail "make install"; }
for f in include/pgpipe.h lib/libpgpipe.a "lib/libpgpipe.so.$version" bin/pgpipe lib/pkgconfig/pgpipe.pc \
         share/man/man1/pgpipe.1; do
    [ -f "$prefix/$f" ] || fail "missing $prefix/$f"
done
[ "$(readlink "$prefix/lib/libpgpipe.so.$major")" = "libpgpipe.so.$version" ] || fail "libpgpipe.so.$major is not a link to libpgpipe.so.$version"
[ "$(readlink "$prefix/lib/libpgpipe.so")" = "libpgpipe.so.$major" ] || fail "libpgpipe.so is not a link to libpgpipe.so.$major"
"$prefix/bin/pgpipe" --version

# the shared library: its soname, and nothing but pgpipe_* exported
readelf -d "$prefix/lib/libpgpipe.so.$version" | grep -q "Library soname: \[libpgpipe.so.$major\]" ||
    fail "no SONAME libpgpipe.so.$major: $(readelf -d "$prefix/lib/libpgpipe.so.$version" | grep -i soname)"
nm -D --defined-only "$prefix/lib/libpgpipe.so.$version" | awk '{ print $NF }' >"$tmp/exports"
bad=$(grep -v '^pgpipe_' "$tmp/exports" || true)
[ -z "$bad" ] || fail "exported from libpgpipe.so besides pgpipe_*: $bad"
[ "$(wc -l <"$tmp/exports")" -gt 10 ] || fail "only $(wc -l <"$tmp/exports") symbols exported"
grep -qx pgpipe_libversion "$tmp/exports" || fail "pgpipe_libversion not exported"
echo "libpgpipe.so.$version: SONAME libpgpipe.so.$major, $(wc -l <"$tmp/exports") symbols exported, all pgpipe_*"

awk '/^<!-- example: hello -->/ { want = 1; next }
     want && /^```c/ { grab = 1; next }
     grab && /^```/ { exit }
     grab { print }' README.md > "$tmp/hello.c"
[ -s "$tmp/hello.c" ] || fail "README has no hello example"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cd "$tmp"
# shared: pkg-config --cflags --libs pgpipe
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror hello.c $(pkg-config --cflags --libs pgpipe) -o hello-shared
readelf -d hello-shared | grep -q "NEEDED.*\[libpgpipe.so.$major\]" || fail "hello-shared does not need libpgpipe.so.$major"
LD_LIBRARY_PATH=$prefix/lib ./hello-shared "$PGPIPE_TEST_DSN" >out-shared || fail "hello-shared: $(cat out-shared)"
LD_LIBRARY_PATH=$prefix/lib ldd ./hello-shared | grep -q "libpgpipe.so.$major => $prefix/lib/" || fail "hello-shared did not load $prefix/lib/libpgpipe.so.$major"
grep -q "^pgpipe $version" out-shared || fail "hello-shared printed: $(cat out-shared)"
grep -q PostgreSQL out-shared || fail "hello-shared printed: $(cat out-shared)"
# without the library path the shared one must not start (it really is dynamic)
if env -u LD_LIBRARY_PATH ./hello-shared "$PGPIPE_TEST_DSN" >/dev/null 2>&1; then fail "hello-shared runs without libpgpipe.so"; fi
echo "shared: $(head -n 1 out-shared)"

# static: the archive, with pkg-config --static for what it needs
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror hello.c $(pkg-config --cflags pgpipe) -Wl,-Bstatic -lpgpipe -Wl,-Bdynamic \
    $(pkg-config --static --libs pgpipe) -o hello-static
if readelf -d hello-static | grep -q 'NEEDED.*libpgpipe'; then fail "hello-static needs libpgpipe.so"; fi
./hello-static "$PGPIPE_TEST_DSN" >out-static || fail "hello-static: $(cat out-static)"
grep -q "^pgpipe $version" out-static || fail "hello-static printed: $(cat out-static)"
echo "static: $(head -n 1 out-static)"

# the man page: a section per command of .help, and it renders without warnings
man1=$prefix/share/man/man1/pgpipe.1
for s in NAME SYNOPSIS DESCRIPTION OPTIONS COMMANDS ENVIRONMENT FILES "EXIT STATUS"; do
    grep -q "^\.SH \"*$s" "$man1" || fail "man page has no section $s"
done
sed -n 's/^\.SS "*\\&\([^ "]*\).*/\1/p' "$man1" >"$tmp/man-cmds"
# OPTIONS holds every option of --help (it was once empty when --help's wording changed)
for o in file bail mode local keep fast help version; do
    sed -n '/^\.SH OPTIONS/,/^\.SH COMMANDS/p' "$man1" | grep -qF -- '\-\-'"$o" ||
        fail "man page OPTIONS lacks --$o"
done
n=0
for c in $("$prefix/bin/pgpipe" .help | awk '/^\./ { print $1 }'); do
    n=$((n + 1))
    grep -qxF -- "$c" "$tmp/man-cmds" || fail "man page has no section for $c (it has: $(tr '\n' ' ' <"$tmp/man-cmds"))"
done
[ $n -gt 10 ] || fail "only $n commands in .help"
grep -v '^\.\\"' "$man1" | grep -q -- '--help' && fail "an unescaped hyphen in the man page: $(grep -n -- '--help' "$man1" | head -n 1)"
if command -v groff >/dev/null 2>&1; then
    groff -man -Tutf8 -ww -z "$man1" >"$tmp/groff.log" 2>&1 || fail "groff: $(cat "$tmp/groff.log")"
    [ ! -s "$tmp/groff.log" ] || fail "groff warns: $(cat "$tmp/groff.log")"
    groff -man -Tutf8 -P-cbou "$man1" 2>/dev/null | grep -q 'EXIT STATUS' || fail "the rendered page lacks EXIT STATUS"
    echo "man page: $n command sections, renders with groff -ww without a warning"
else
    echo "man page: $n command sections (groff not installed: not rendered)"
fi

# the shell is a client of the public API alone: shell.c, copied into an empty
# directory, builds against the installed header and library, nothing else
mkdir "$tmp/shellonly"
cp "$top/shell.c" "$tmp/shellonly/"
cd "$tmp/shellonly"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Wpedantic -Werror shell.c $(pkg-config --cflags --libs pgpipe) -o pgpipe-shell ||
    fail "shell.c does not build against the installed pgpipe.h and library alone"
LD_LIBRARY_PATH=$prefix/lib ./pgpipe-shell --version >/dev/null || fail "the shell built on the installed library does not run"
echo "shell.c builds on the installed pgpipe.h alone"
