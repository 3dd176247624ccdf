#!/bin/sh
# make test: no database
# The layers of src/ (base -> parse -> db -> pipeline; src/base/pp_base.h):
#  1. a source file includes only its own layer's private header (and system
#     headers), and a layer's private header only the one right below it;
#  2. every src/*/*.c compiles alone with -Werror -Wmissing-prototypes against
#     pgpipe.h and the private headers: no internal function is used or
#     shared without a declaration, and nothing relies on the amalgamation's
#     order;
#  3. a call across layers the wrong way (a parser calling the pool) fails
#     that compile.
set -eu
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/layers.XXXXXX")
layers=$(sed -n 's/^layers="\(.*\)"$/\1/p' tool/amalgamate.sh)
[ -n "$layers" ] || fail "no layers= line in tool/amalgamate.sh"

# 1. includes
prev=""
for l in $layers; do
    [ -d "src/$l" ] || fail "layer folder src/$l is missing"
    for f in src/$l/*.c src/$l/*.h; do
        [ -f "$f" ] || continue
        incs=$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
        for i in $incs; do
            case "$f:$i" in
            src/$l/pp_$l.h:pgpipe.h) [ -z "$prev" ] || fail "$f includes pgpipe.h; only the lowest layer may" ;;
            src/$l/pp_$l.h:../$prev/pp_$prev.h) ;;
            src/$l/pp_$l.h:*) fail "$f includes \"$i\"; it may include only ${prev:+../$prev/pp_$prev.h}${prev:-pgpipe.h}" ;;
            src/$l/*.c:pp_$l.h) ;;
            *) fail "$f includes \"$i\"; a file of layer $l includes only pp_$l.h" ;;
            esac
        done
    done
    for f in src/$l/*.c; do
        grep -q '^#include "pp_'"$l"'\.h"' "$f" || fail "$f does not include pp_$l.h"
    done
    prev=$l
done
echo "includes follow the layers: $layers"

# 2. each file alone (against the public header the sources generate now)
sh tool/amalgamate.sh . "$tmp/gen"
pgcf=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
n=0
for f in src/*/*.c; do
    cc -std=c11 -Wall -Wextra -Wpedantic -Werror -Wmissing-prototypes -Wmissing-declarations \
        $pgcf -I"$tmp/gen" -c "$f" -o "$tmp/one.o" || fail "$f does not compile alone"
    n=$((n + 1))
done
echo "$n source files compile alone with -Werror -Wmissing-prototypes"

# 3. public functions too: a file calls no pgpipe_* function declared in the
#    public header of a higher layer (pgpipe.h declares them all, so the
#    compile above cannot see this)
upcalls() { # $1 = source root; prints "file: name" for each call upwards
    seen=""
    for l in $layers; do
        seen="$seen $l"
        above=""
        past=0
        for m in $layers; do
            [ $past = 1 ] && above="$above $m"
            [ "$m" = "$l" ] && past=1
        done
        [ -n "$above" ] || continue
        names=$(for m in $above; do
                    for h in "$1"/$m/*.h; do
                        case "$h" in */pp_*) continue ;; esac
                        [ -f "$h" ] && sed -n 's/^[a-zA-Z_][^(]*[ *]\(pgpipe_[a-z0-9_]*\)(.*/\1/p' "$h"
                    done
                done | sort -u)
        [ -n "$names" ] || continue
        for f in "$1"/$l/*.c; do
            for n in $names; do
                if grep -q "\\b$n\\b" "$f"; then echo "$f: $n"; fi
            done
        done
    done
}
bad=$(upcalls src)
[ -z "$bad" ] || fail "calls to a higher layer's public functions: $bad"
echo "no file calls a higher layer's public functions"

# 4. the checks can fail: a parser that calls the pool (public) and a
#    function no header declares
cp -r src "$tmp/src"
printf '\nint pp_layers_probe(void);\nint pp_layers_probe(void) { return pgpipe_pool_open != 0; }\n' >> "$tmp/src/parse/csv.c"
bad=$(upcalls "$tmp/src")
case "$bad" in *"parse/csv.c: pgpipe_pool_open"*) ;; *) fail "an upward call was not found: '$bad'" ;; esac
printf '\nint pp_layers_probe2(void);\nint pp_layers_probe2(void) { return pp_undeclared_helper(); }\n' >> "$tmp/src/parse/csv.c"
if cc -std=c11 -Wall -Werror -Wmissing-prototypes $pgcf -I"$tmp/gen" -c "$tmp/src/parse/csv.c" -o "$tmp/bad.o" 2>/dev/null; then
    fail "a call to an undeclared function compiled"
fi
echo "an upward call and an undeclared call are both refused"
