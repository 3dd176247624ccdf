#!/bin/sh
# make test: no database
# The public headers read as a reference (issue 19):
#  1. each src/LAYER/NAME.h starts with a "/* ==== Component ==== */" banner
#     whose paragraph names its handles and states a thread-safety rule;
#  2. each compiles on top of the base layer alone (src/pgpipe.h's includes
#     and the public headers of src/base/, in their @components order): no
#     header depends on the order the others are pasted in;
#  3. pgpipe.h compiles as C99 and C11, pedantic, and as C++ when a C++
#     compiler is there (a type declared twice would fail it);
#  4. the handle conventions of the top comment hold: no pgpipe_*_free or
#     pgpipe_*_new left, every pgpipe_X_open has its pgpipe_X_close.
set -eu
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/headers.XXXXXX")
cc=${CC:-cc}
pgcflags=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")

# the base every component header may rely on: the includes of src/pgpipe.h
# (everything up to the paste marker) and the base component
sed -n '1,/@@COMPONENT_HEADERS@@/p' src/pgpipe.h | grep -v '@@COMPONENT_HEADERS@@' > "$tmp/base.h"
for c in $(sed -n 's/^\*\* @components //p' src/base/pp_base.h); do
    [ ! -f "src/base/$c.h" ] || cat "src/base/$c.h" >> "$tmp/base.h"
done

n=0
for h in src/*/*.h; do
    case "$h" in */pp_*|src/pgpipe.h) continue ;; esac
    n=$((n + 1))
    # 1. banner and thread-safety rule
    head -n 1 "$h" | grep -q '^/\* ==== .* ==== \*/$' || fail "$h does not start with a '/* ==== Name ==== */' banner"
    awk 'NR > 1 && /^\/\* ----/ { exit } { print }' "$h" | grep -q 'Thread safety:' \
        || fail "$h: its first paragraph states no 'Thread safety:' rule"
    # 2. compiles on the base alone
    case "$h" in src/base/*) continue ;; esac
    { cat "$tmp/base.h"; cat "$h"; printf '#ifdef __cplusplus\n}\n#endif\n#endif\n'; } > "$tmp/one.h"
    printf '#include "one.h"\nint pp_headers_probe;\n' > "$tmp/one.c"
    $cc -std=c11 -Wall -Wextra -Wpedantic -Werror -fsyntax-only $pgcflags -I"$tmp" "$tmp/one.c" \
        2> "$tmp/err" || { cat "$tmp/err"; fail "$h does not compile on the base alone"; }
done
[ "$n" -ge 10 ] || fail "only $n public headers found"

# 3. the whole header, C99 and C11 pedantic, and C++
sh tool/amalgamate.sh . "$tmp/gen"
printf '#include "pgpipe.h"\nint pp_headers_probe;\n' > "$tmp/all.c"
for std in c99 c11; do
    $cc -std=$std -Wall -Wextra -Wpedantic -Werror -fsyntax-only $pgcflags -I"$tmp/gen" "$tmp/all.c" \
        2> "$tmp/err" || { cat "$tmp/err"; fail "pgpipe.h does not compile as $std"; }
done
if command -v c++ >/dev/null 2>&1; then
    cp "$tmp/all.c" "$tmp/all.cc"
    c++ -Wall -Wextra -Werror -fsyntax-only $pgcflags -I"$tmp/gen" "$tmp/all.cc" \
        2> "$tmp/err" || { cat "$tmp/err"; fail "pgpipe.h does not compile as C++"; }
fi

# 4. one constructor shape: the declared functions of pgpipe.h
decls=$(sed -n 's/^[a-zA-Z_][^(]*[ *]\(pgpipe_[a-z0-9_]*\)(.*/\1/p' "$tmp/gen/pgpipe.h" | sort -u)
bad=$(printf '%s\n' "$decls" | grep -E '_(free|new)$' | grep -vx 'pgpipe_free' || true)
[ -z "$bad" ] || fail "constructors or destructors outside the open/close shape: $bad"
for o in $(printf '%s\n' "$decls" | grep -E '_open(_[a-z]+)?$'); do
    c=$(printf '%s' "$o" | sed 's/_open\(_[a-z]*\)\{0,1\}$/_close/')
    printf '%s\n' "$decls" | grep -qx "$c" || fail "$o has no $c"
done
echo "ok: $n public headers"
