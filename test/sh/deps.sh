#!/bin/sh
# tool/deps.sh finds everything the build and the tests need on this machine,
# and where something is missing it says so with the one command to run:
# a PATH without cc; compilers that exist but cannot compile (no C library
# headers, no cross C library, no libFuzzer runtime) are named by the package
# that is missing, not passed. Nothing is installed (--check), nothing is
# removed: the missing pieces are simulated. The Makefile's libpq flags with
# neither pkg-config nor pg_config on PATH have no bare -I. The browser (for
# the status page test) and pg_cron (make bench-run) are named by package.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/deps.XXXXXX")
chmod 755 "$tmp"

# 1. here everything is present
out=$(sh tool/deps.sh --check 2>&1); rc=$?
echo "$out"
[ $rc = 0 ] || fail "deps.sh --check exit $rc"
has "$out" "all dependencies present"
has "$out" "libpq program          compiles, links and runs"
has "$out" "ASan+UBSan             ok"
[ -z "$(sh tool/deps.sh --check --quiet 2>&1)" ] || fail "--quiet printed something with all present"

# bin_without CMD...: a directory of links to every command on PATH but CMD...
bin_without() {
    d=$tmp/bin-$(echo "$*" | tr ' ' '-')
    mkdir -p "$d"
    dirs=$(echo "$PATH" | tr ':' '\n')
    for p in $dirs; do
        for f in "$p"/*; do
            [ -x "$f" ] && [ ! -d "$f" ] || continue
            b=${f##*/}
            [ -e "$d/$b" ] && continue
            skip=0; for x in "$@"; do [ "$b" = "$x" ] && skip=1; done
            [ $skip = 1 ] || ln -s "$f" "$d/$b"
        done
    done
    echo "$d"
}

# 2. no cc on PATH: gcc and libc6-dev are missing, and the command is named
nocc=$(bin_without cc)
out=$(PATH=$nocc sh tool/deps.sh --demo --check 2>&1); rc=$?
echo "$out"
[ $rc = 1 ] || fail "deps.sh without cc: exit $rc"
has "$out" "cc                     missing (gcc, libc6-dev)"
has "$out" "missing: gcc libc6-dev"
if [ "$(id -u)" = 0 ]; then
    has "$out" "run:  sh tool/deps.sh --demo    (apt-get install gcc libc6-dev)"
    # and as a user: sudo, or as root
    if command -v runuser >/dev/null 2>&1 && id nobody >/dev/null 2>&1; then
        cp -r tool "$tmp/tool"; chmod -R a+rX "$tmp/tool"; mkdir "$tmp/t"; chmod 1777 "$tmp/t"
        out=$(cd "$tmp" && PATH=$nocc TMPDIR=$tmp/t runuser -u nobody -- sh tool/deps.sh --demo 2>&1); rc=$?
        echo "$out"
        [ $rc = 1 ] || fail "deps.sh as a user without cc: exit $rc"
        if command -v sudo >/dev/null 2>&1; then
            has "$out" "run:  sudo sh tool/deps.sh --demo    (apt-get install gcc libc6-dev)"
        else
            has "$out" "run as root:  sh tool/deps.sh --demo    (apt-get install gcc libc6-dev)"
        fi
    fi
else
    has "$out" "sh tool/deps.sh --demo    (apt-get install gcc libc6-dev)"
fi

# 3. a cc that cannot find the C library headers (what gcc without libc6-dev
# is): named as libc6-dev, not "ok"
printf '#!/bin/sh\nexec cc -nostdinc "$@"\n' >"$tmp/cc-nolibc"; chmod +x "$tmp/cc-nolibc"
out=$(CC=$tmp/cc-nolibc sh tool/deps.sh --demo --check 2>&1); rc=$?
echo "$out"
[ $rc = 1 ] || fail "deps.sh with a cc that cannot compile: exit $rc"
has "$out" "cannot compile a C program (libc6-dev)"
has "$out" "missing: libc6-dev"

# 4. the same for the aarch64 compiler and clang's libFuzzer runtime
if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
    printf '#!/bin/sh\nexec aarch64-linux-gnu-gcc -nostdinc "$@"\n' >"$tmp/cross-nolibc"; chmod +x "$tmp/cross-nolibc"
    out=$(CROSS_CC=$tmp/cross-nolibc sh tool/deps.sh --cross --check 2>&1); rc=$?
    echo "$out"
    [ $rc = 1 ] || fail "deps.sh with a cross compiler without its libc: exit $rc"
    has "$out" "cannot compile (libc6-dev-arm64-cross)"
fi
if command -v clang >/dev/null 2>&1; then
    printf '#!/bin/sh\nexec clang -resource-dir=%s "$@"\n' "$tmp/none" >"$tmp/clang-nort"; chmod +x "$tmp/clang-nort"
    out=$(CLANG=$tmp/clang-nort sh tool/deps.sh --fuzz --check 2>&1); rc=$?
    echo "$out"
    [ $rc = 1 ] || fail "deps.sh with clang without its runtime: exit $rc"
    has "$out" "clang libFuzzer        FAILS (libclang-rt-dev)"
fi

# 5. neither pkg-config nor pg_config: the compile line has no bare -I (it
# would swallow the next argument)
nopc=$(bin_without pkg-config pg_config)
line=$(PATH=$nopc make -s -n -B -o pgpipe.c -o pgpipe.h B="$tmp/b" "$tmp/b/pgpipe.o" 2>&1)
echo "$line"
has "$line" "-c pgpipe.c"
case " $line " in *" -I "*) fail "bare -I in: $line" ;; esac
echo "$line" | grep -qE -- '-I( |$)' && fail "bare -I in: $line"
echo "ok: no bare -I without pkg-config and pg_config"

# 6. the status page's browser test needs chromium and its driver: without
# them on PATH, --test names both packages
nobrowser=$(bin_without chromium chromedriver)
out=$(PATH=$nobrowser sh tool/deps.sh --test --check 2>&1); rc=$?
echo "$out"
[ $rc = 1 ] || fail "deps.sh --test without chromium: exit $rc"
has "$out" "chromium               missing (chromium)"
has "$out" "chromedriver           missing (chromium-driver)"

# 7. --bench-run: pg_cron is looked for beside the server the clusters run,
# and named for its major version (a server here without pg_cron.so)
fake=$tmp/pgbin
mkdir -p "$fake/lib"
printf '#!/bin/sh\necho "postgres (PostgreSQL) 15.99"\n' >"$fake/postgres"
printf '#!/bin/sh\n[ "$1" = --pkglibdir ] && echo %s\n' "$fake/lib" >"$fake/pg_config"
printf '#!/bin/sh\nexit 0\n' >"$fake/pg_ctl"; cp "$fake/pg_ctl" "$fake/initdb"
chmod +x "$fake"/*
out=$(PGTMP_BINDIR=$fake sh tool/deps.sh --bench-run --check 2>&1); rc=$?
echo "$out"
[ $rc = 1 ] || fail "deps.sh --bench-run without pg_cron: exit $rc"
has "$out" "pg_cron                missing (postgresql-15-cron)"
touch "$fake/lib/pg_cron.so"
out=$(PGTMP_BINDIR=$fake sh tool/deps.sh --bench-run --check 2>&1); rc=$?
echo "$out"
[ $rc = 0 ] || fail "deps.sh --bench-run with pg_cron: exit $rc"
has "$out" "pg_cron                ok ($fake/lib/pg_cron.so)"
echo "ok: chromium and pg_cron are named by their packages"
