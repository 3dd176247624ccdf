#!/bin/sh
# make test: no database
# The amalgamation: section markers, standalone compile (gcc and clang, with and
# without threads), only pgpipe_* symbols exported, SQL embedded byte-exactly,
# deterministic output.
set -eu
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
top=$(pwd)
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/amalg.XXXXXX")
gen=$tmp/gen
sh tool/amalgamate.sh . "$gen"


# 1. a marker per source file: every src/LAYER/*.c and pp_*.h in pgpipe.c,
#    every public src/LAYER/*.h in pgpipe.h; no include of a private header
#    is left in (they are pasted)
for f in src/*/*.c src/*/pp_*.h; do
    grep -q "^/\* ==== begin $f ==== \*/" "$gen/pgpipe.c" || fail "no marker for $f in pgpipe.c"
done
for f in src/*/*.h; do
    case "$f" in */pp_*) continue ;; esac
    grep -q "^/\* ==== begin $f ==== \*/" "$gen/pgpipe.h" || fail "no marker for $f in pgpipe.h"
done
if grep -n '^#include "' "$gen/pgpipe.c" | grep -v '"pgpipe.h"'; then fail "pgpipe.c includes a private file"; fi
# a stray file in a layer folder is refused, naming it
mkdir -p "$tmp/stray/tool"
cp -r src sql "$tmp/stray/" && cp tool/amalgamate.sh "$tmp/stray/tool/"
echo 'int x;' > "$tmp/stray/src/parse/stray.c"
if sh "$tmp/stray/tool/amalgamate.sh" "$tmp/stray" "$tmp/stray/out" 2> "$tmp/stray.err"; then
    fail "a file of no component was accepted"
fi
grep -q 'src/parse/stray.c belongs to no component' "$tmp/stray.err" || fail "unclear error: $(cat "$tmp/stray.err")"

# 2. compiles alone, in an empty directory, with each compiler we have
mkdir "$tmp/alone"
cp "$gen/pgpipe.c" "$gen/pgpipe.h" "$tmp/alone/"
cd "$tmp/alone"
pgcf=$(pkg-config --cflags libpq)
seen=
for cc in gcc clang cc; do
    command -v $cc >/dev/null 2>&1 || continue
    # cc is usually gcc under another name: the same compiler is not run twice
    real=$(readlink -f "$(command -v $cc)")
    case " $seen " in *" $real "*) echo "$cc: $real, checked above"; continue ;; esac
    seen="$seen $real"
    # threaded and single-threaded side by side
    $cc -std=c11 -Wall -Wextra -Wpedantic -Werror -c pgpipe.c $pgcf -o t.o > t.log 2>&1 &
    $cc -std=c11 -Wall -Wextra -Wpedantic -Werror -DPGPIPE_OMIT_THREADS -c pgpipe.c $pgcf -o nt.o > nt.log 2>&1 ||
        { cat nt.log; fail "$cc: -DPGPIPE_OMIT_THREADS does not compile"; }
    wait $! || { cat t.log; fail "$cc: pgpipe.c does not compile alone"; }
    bad=$(nm -g --defined-only t.o | awk '{print $3}' | grep -v '^pgpipe_' || true)
    [ -z "$bad" ] || fail "$cc: exported symbols outside pgpipe_*: $bad"
    n=$(nm -g --defined-only t.o | grep -c ' pgpipe_' || true)
    [ "$n" -gt 10 ] || fail "$cc: only $n pgpipe_ symbols exported"
    if nm -u nt.o | grep -q pthread_; then fail "$cc: single-threaded build still uses pthreads"; fi
    echo "$cc: compiles alone, $n exported symbols, all pgpipe_*"
done
# every component can be left out (its dependants go with it: src/pgpipe.h)
omits=$(cd "$top" && for h in src/*/pp_*.h; do
            case "$h" in src/base/*) continue ;; esac
            sed -n 's/^\*\* @components //p' "$h" | tr ' ' '\n'
        done | sed 's/_.*//' | tr 'a-z' 'A-Z' | sort -u)
[ -n "$omits" ] || fail "no components found for the PGPIPE_OMIT_* check"
# (two at a time)
set -- $omits
while [ $# -gt 0 ]; do
    c1=$1; shift
    c2=${1:-}; [ $# -gt 0 ] && shift
    if [ -n "$c2" ]; then
        cc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -DPGPIPE_OMIT_$c2 pgpipe.c $pgcf \
            > omit2.log 2>&1 &
    fi
    cc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only -DPGPIPE_OMIT_$c1 pgpipe.c $pgcf ||
        fail "-DPGPIPE_OMIT_$c1 does not compile"
    if [ -n "$c2" ]; then
        wait $! || { cat omit2.log; fail "-DPGPIPE_OMIT_$c2 does not compile"; }
    fi
done
echo "each PGPIPE_OMIT_* configuration compiles"
cd "$top"

# 3. SQL embedding is byte-exact (quotes, backslashes, tabs, '?' runs that
#    would be trigraphs, UTF-8), CRLF line ends normalized to LF
mkdir -p "$tmp/top/sql/t" "$tmp/top/tool"
cp -r src "$tmp/top/src"
cp tool/amalgamate.sh "$tmp/top/tool/"
printf 'SELECT $$it'"'"'s "x" \\ \\n ??( ??) ??/ ?| ?& %%d é€😀$$;\n\tINSERT INTO t VALUES (E'"'"'a\\tb'"'"');\r\n-- last line\n' > "$tmp/top/sql/t/tricky.sql"
printf 'SELECT $$it'"'"'s "x" \\ \\n ??( ??) ??/ ?| ?& %%d é€😀$$;\n\tINSERT INTO t VALUES (E'"'"'a\\tb'"'"');\n-- last line\n' > "$tmp/want.sql"
sh tool/amalgamate.sh "$tmp/top" "$tmp/out"
cat > "$tmp/out/dump.c" <<'C'
#include "pgpipe.c"
int main(int argc, char **argv) {
    const char *s = pgpipe_sql_file(argv[1]);
    if (!s || pgpipe_sql_file_count() != 1) return 2;
    (void)argc; fputs(s, stdout); return 0;
}
C
cc -std=c11 -Wall -Wextra -Wpedantic -Werror $pgcf -I"$tmp/out" "$tmp/out/dump.c" -lpq -lpthread -o "$tmp/dump" ||
    fail "generated SQL does not compile"
"$tmp/dump" t/tricky.sql > "$tmp/got.sql"
cmp "$tmp/want.sql" "$tmp/got.sql" || { diff "$tmp/want.sql" "$tmp/got.sql" || true; fail "embedded SQL differs from the file"; }
echo "embedded SQL is byte-exact"

# 4. deterministic: generating twice gives the same bytes
sh tool/amalgamate.sh . "$tmp/gen2"
cmp -s "$gen/pgpipe.c" "$tmp/gen2/pgpipe.c" && cmp -s "$gen/pgpipe.h" "$tmp/gen2/pgpipe.h" ||
    fail "two generations differ"
echo "generation is deterministic"
