#!/bin/sh
# What building, running and testing pgpipe needs (also `make deps`; `make demo`
# and `make test` run it first with --demo / --test --quiet).
#
#   sh tool/deps.sh [--demo|--test] [--bench-http] [--bench-run] [--bench-cdc] [--bench-pull] [--cross]
#                   [--fuzz] [--valgrind] [--tsan] [--check] [--quiet]
#
#   --demo      the build and the server: a C compiler that compiles, links and
#               runs a libpq program with the project's flags (make, cc, the C
#               library headers, pkg-config, libpq), and the PostgreSQL server
#               binaries (initdb, pg_ctl, postgres)
#   --test      (the default) --demo, plus what `make test` runs so that no
#               test is skipped: an ASan+UBSan build of that program, --cross,
#               --fuzz, --valgrind, openssl, groff (the man page), ps, ss,
#               pgbouncer (the pooler tests run it in session and transaction
#               mode in front of the throwaway cluster), and for the HTTP
#               ingest tests: curl, wrk, nginx (TLS in front of the server)
#               and for the API pull: libcurl (libcurl4-openssl-dev; the
#               shell and the tests are built with it when it is present),
#               and python3 (the urllib/http.client clients), and for the
#               runner's status page a real headless browser: chromium,
#               chromium-driver and python3-selenium (test/sh/run_browser.sh)
#   --bench-http  (make bench-http runs it first) --demo, wrk, and the peers
#               the HTTP benchmark compares with: FastAPI + uvicorn (with
#               uvloop and httptools, as `uvicorn[standard]` installs it) +
#               asyncpg from Debian, and fastify + pg from npm, installed into
#               build/bench/http/npm (never by --test)
#   --bench-run (make bench-run runs it first) --demo, and the peer the
#               runner's benchmark compares with: pg_cron for the server
#               the throwaway clusters run (postgresql-NN-cron)
#   --bench-pull (make bench-pull runs it first) --demo, libcurl, and the
#               peer the pull benchmark compares with: httpx + asyncpg for
#               Debian's python3 (python3-httpx, python3-asyncpg)
#   --bench-cdc (make bench-cdc runs it first) --demo, and the plugin of
#               the CDC benchmark's ceiling, pg_recvlogical with wal2json
#               (postgresql-NN-wal2json)
#   --cross     the aarch64 cross compiler and its C library (pgpipe.c with
#               <stdint.h> and libpq-fe.h compiles for aarch64); for make
#               cross-test qemu-user-static and libpq5:arm64 (adds the arm64
#               architecture to dpkg), for make cross-arm32 gcc-arm-linux-gnueabihf
#   --fuzz      clang with libFuzzer and its sanitizer runtimes
#   --valgrind  valgrind
#   --tsan      a ThreadSanitizer build runs (make test-tsan)
#   --check     only check, never install
#   --quiet     print nothing when everything is present
#
# Capabilities are checked (a program is compiled, linked and run), not only
# that commands exist. As root on Debian what is missing is installed with
# apt-get, then checked again; otherwise the one command to run is printed and
# the exit status is 1.
set -eu

demo=0; test=0; bench_http=0; bench_run=0; bench_cdc=0; cross=0; fuzz=0; valgrind=0; tsan=0; check_only=0; quiet=0; modes=""
for a in "$@"; do
    case "$a" in
    --demo) demo=1; modes="$modes $a" ;;
    --test) test=1; modes="$modes $a" ;;
    --bench-http) bench_http=1; modes="$modes $a" ;;
    --bench-run) bench_run=1; modes="$modes $a" ;;
    --bench-cdc) bench_cdc=1; modes="$modes $a" ;;
    --bench-pull) bench_pull=1; modes="$modes $a" ;;
    --cross) cross=1; modes="$modes $a" ;;
    --fuzz) fuzz=1; modes="$modes $a" ;;
    --valgrind) valgrind=1; modes="$modes $a" ;;
    --tsan) tsan=1; modes="$modes $a" ;;
    --check) check_only=1 ;;
    --quiet) quiet=1 ;;
    *) echo "usage: $0 [--demo|--test] [--bench-http] [--bench-run] [--bench-cdc] [--bench-pull] [--cross] [--fuzz] [--valgrind] [--tsan] [--check] [--quiet]" >&2; exit 2 ;;
    esac
done
[ -n "$modes" ] || { test=1; modes=" --test"; }
if [ $test = 1 ]; then demo=1; cross=1; fuzz=1; valgrind=1; fi
[ $bench_http = 0 ] || demo=1
[ $bench_run = 0 ] || demo=1
[ $bench_cdc = 0 ] || demo=1
bench_pull=${bench_pull:-0}
[ $bench_pull = 0 ] || demo=1

here=$(cd "$(dirname "$0")" && pwd)
CC=${CC:-cc}
CLANG=${CLANG:-clang}
CROSS_CC=${CROSS_CC:-aarch64-linux-gnu-gcc}
STRICT="-std=c11 -Wall -Wextra -Wpedantic -Werror"
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/pgpipe-deps.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export tmp

missing=""       # Debian package names
problems=""      # what failed although no package is known to be missing
report=""
note() { report="$report$(printf '  %-22s %s' "$1" "$2")
"; }
want() { # package: add once
    case " $missing " in *" $1 "*) ;; *) missing="$missing $1" ;; esac
}
have() { command -v "$1" >/dev/null 2>&1; }
need_cmd() { # command package [what]
    if have "$1"; then note "${3:-$1}" ok; else note "${3:-$1}" "missing ($2)"; want "$2"; fi
}
# job NAME CMD...: run CMD in the background (the checks run side by side),
# its output in $tmp/NAME.log; ok NAME: it succeeded (after `wait`)
job() { n=$1; shift; { "$@" >"$tmp/$n.log" 2>&1; echo $? >"$tmp/$n.rc"; } & }
ok() { [ "$(cat "$tmp/$1.rc" 2>/dev/null)" = 0 ]; }
last() { grep -h . "$tmp/$1.log" 2>/dev/null | head -n 1; }

cat >"$tmp/pq.c" <<'EOF'
#include <stdint.h>
#include <stdio.h>
#include <libpq-fe.h>
int main(void) {
    uint32_t v = (uint32_t)PQlibVersion();
    printf("%u\n", (unsigned)v);
    return v > 0 ? 0 : 1;
}
EOF
cat >"$tmp/fuzz.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }
EOF
cat >"$tmp/tsan.c" <<'EOF'
#include <pthread.h>
static void *run(void *p) { return p; }
int main(void) { pthread_t t; if (pthread_create(&t, 0, run, 0)) return 1; return pthread_join(t, 0); }
EOF

# ---- start the compile-and-run checks side by side -------------------------------
pq_cflags=""; pq_libs="-lpq"
if have pkg-config && pkg-config --exists libpq 2>/dev/null &&
        [ -f "$(pkg-config --variable=includedir libpq)/libpq-fe.h" ]; then
    pq_cflags=$(pkg-config --cflags libpq); pq_libs=$(pkg-config --libs libpq)
fi
printf '#include <stdint.h>\n#include <stdio.h>\nint main(void) { return (int)INT8_C(0); }\n' >"$tmp/libc.c"
printf '#include <stdint.h>\n#include <stdio.h>\n#include <libpq-fe.h>\nint f(void);\nint f(void) { return (int)INT8_C(1) + (PQlibVersion() > 0); }\n' >"$tmp/cross.c"
have "$CC" && job libc "$CC" $STRICT "$tmp/libc.c" -o "$tmp/libc"
if have "$CC" && [ -n "$pq_cflags" ]; then
    # shellcheck disable=SC2086
    job pq sh -c '"$@" && "$tmp/pq"' - "$CC" $STRICT -O2 $pq_cflags "$tmp/pq.c" $pq_libs -lpthread -lm -o "$tmp/pq"
    # shellcheck disable=SC2086
    [ $test = 0 ] || job san sh -c '"$@" && "$tmp/pqsan"' - "$CC" $STRICT -O1 -g $SAN $pq_cflags "$tmp/pq.c" $pq_libs -lpthread -lm -o "$tmp/pqsan"
fi
[ $tsan = 1 ] && have "$CC" && job tsan sh -c '"$@" && "$tmp/tsanp"' - "$CC" -O1 -fsanitize=thread "$tmp/tsan.c" -lpthread -o "$tmp/tsanp"
# shellcheck disable=SC2086
[ $cross = 1 ] && have "$CROSS_CC" && [ -n "$pq_cflags" ] && job cross "$CROSS_CC" $STRICT -Os $pq_cflags -c "$tmp/cross.c" -o "$tmp/cross.o"
[ $fuzz = 1 ] && have "$CLANG" && job fuzz sh -c '"$@" && "$tmp/fuzzp" -runs=10' - "$CLANG" -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined "$tmp/fuzz.c" -o "$tmp/fuzzp"
bindir=$(sh "$here/pgtmp.sh" bindir 2>/dev/null) || bindir=""
wait

# ---- the build: make, cc, libc headers, pkg-config, libpq ---------------------
need_cmd make make
cc_ok=0
if ! have "$CC"; then
    note "$CC" "missing (gcc, libc6-dev)"; want gcc; want libc6-dev
elif ok libc; then
    note "$CC" ok; cc_ok=1
else
    note "$CC" "cannot compile a C program (libc6-dev): $(last libc)"; want libc6-dev
fi
need_cmd pkg-config pkg-config
need_cmd awk mawk
if [ -n "$pq_cflags" ]; then
    note "libpq" "ok ($(pkg-config --modversion libpq))"
else
    note "libpq" "missing (libpq-dev)"; want libpq-dev
fi
pq_ok=0
if [ $cc_ok = 1 ] && [ -n "$pq_cflags" ]; then
    if ok pq; then
        note "libpq program" "compiles, links and runs (PQlibVersion $(tail -n 1 "$tmp/pq.log"))"; pq_ok=1
    else
        note "libpq program" "FAILS: $(last pq)"
        problems="$problems libpq-program"
    fi
fi
if [ $demo = 1 ]; then
    if [ -n "$bindir" ]; then
        note "PostgreSQL server" "ok ($bindir)"
    else
        note "PostgreSQL server" "missing (postgresql)"; want postgresql
    fi
    if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
        # as root the throwaway servers run as postgres (the package creates it)
        case " $missing " in *" postgresql "*) ;; *)
            note "user postgres" "missing (reinstall postgresql-common)"; want postgresql-common ;;
        esac
    fi
fi

# ---- the tests -----------------------------------------------------------------
if [ $test = 1 ] && [ $pq_ok = 1 ]; then
    if ok san; then
        note "ASan+UBSan" "ok"
    else
        note "ASan+UBSan" "FAILS (libasan8, libubsan1): $(last san)"
        want libasan8; want libubsan1
    fi
fi
if [ $test = 1 ]; then
    need_cmd openssl openssl
    need_cmd groff groff-base
    need_cmd ps procps
    need_cmd ss iproute2
    # pgbouncer lives in /usr/sbin, often not on a user's PATH; the tests
    # find it the same way (test/pgtest.h, test/chaos/run.sh)
    bouncer=$(command -v pgbouncer 2>/dev/null || true)
    [ -n "$bouncer" ] || [ ! -x /usr/sbin/pgbouncer ] || bouncer=/usr/sbin/pgbouncer
    if [ -z "$bouncer" ]; then
        note pgbouncer "missing (pgbouncer)"; want pgbouncer
    elif v=$("$bouncer" --version 2>&1 | head -n 1) && [ -n "$v" ]; then
        note pgbouncer "ok ($v)"
    else
        note pgbouncer "FAILS (pgbouncer): $("$bouncer" --version 2>&1 | head -n 1)"; want pgbouncer
    fi
    # the HTTP ingest tests: real clients against the running server, and
    # nginx (in /usr/sbin) terminating TLS in front of it
    need_cmd curl curl
    need_cmd python3 python3
    nginx=$(command -v nginx 2>/dev/null || true)
    [ -n "$nginx" ] || [ ! -x /usr/sbin/nginx ] || nginx=/usr/sbin/nginx
    if [ -z "$nginx" ]; then
        note nginx "missing (nginx)"; want nginx
    elif "$nginx" -V 2>&1 | grep -q -- --with-http_ssl_module; then
        note nginx "ok ($("$nginx" -v 2>&1 | sed 's/.*: //'), with TLS)"
    else
        note nginx "FAILS: built without http_ssl_module (nginx)"; want nginx
    fi
    # the status page of `pgpipe run` is tested in a real headless browser
    # (test/sh/run_browser.sh): Debian's chromium, its WebDriver and
    # Selenium for Debian's python3
    need_cmd chromium chromium
    need_cmd chromedriver chromium-driver
    if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import selenium' 2>/dev/null; then
        note "python3 selenium" ok
    else
        note "python3 selenium" "missing (python3-selenium)"; want python3-selenium
    fi
fi
if [ $test = 1 ] || [ $bench_http = 1 ]; then
    need_cmd wrk wrk
fi
# the API pull's HTTP client (optional for the library, wanted for the
# shell, the tests and bench-pull)
if [ $test = 1 ] || [ $bench_pull = 1 ]; then
    if v=$(pkg-config --modversion libcurl 2>/dev/null); then
        note libcurl "ok ($v)"
    else
        note libcurl "missing (libcurl4-openssl-dev)"; want libcurl4-openssl-dev
    fi
fi
if [ $bench_pull = 1 ]; then
    for m in httpx:python3-httpx asyncpg:python3-asyncpg; do
        if [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import ${m%%:*}" 2>/dev/null; then
            note "python3 ${m%%:*}" ok
        else
            note "python3 ${m%%:*}" "missing (${m#*:})"; want "${m#*:}"
        fi
    done
fi
npm_dir="$(cd "$here/.." && pwd)/build/bench/http/npm"
npm_missing=0
# the npm peers go into the project's build folder (any user may install them)
npm_install() {
    mkdir -p "$npm_dir" || return 1
    [ -f "$npm_dir/package.json" ] || echo '{"name":"pgpipe-http-bench-peers","private":true}' >"$npm_dir/package.json"
    echo "npm install fastify@4 pg@8 (into $npm_dir)"
    (cd "$npm_dir" && npm install --no-audit --no-fund fastify@4 pg@8 >npm.log 2>&1) ||
        { tail -n 20 "$npm_dir/npm.log"; return 1; }
}
if [ $bench_http = 1 ]; then
    # Debian's python3 (its packages are not on another python3's path)
    if [ ! -x /usr/bin/python3 ]; then
        note "FastAPI peer" "missing (python3-fastapi, python3-uvicorn, python3-asyncpg, python3-uvloop, python3-httptools)"
        want python3-fastapi; want python3-uvicorn; want python3-asyncpg; want python3-uvloop; want python3-httptools
    else
        for m in fastapi:python3-fastapi uvicorn:python3-uvicorn asyncpg:python3-asyncpg \
                 uvloop:python3-uvloop httptools:python3-httptools; do
            if /usr/bin/python3 -c "import ${m%%:*}" 2>/dev/null; then
                note "python3 ${m%%:*}" ok
            else
                note "python3 ${m%%:*}" "missing (${m#*:})"; want "${m#*:}"
            fi
        done
    fi
    need_cmd node nodejs
    need_cmd npm npm
    # fastify 4 runs on Debian 12's Node 18 (5 needs Node 20)
    if [ -f "$npm_dir/node_modules/fastify/package.json" ] && [ -f "$npm_dir/node_modules/pg/package.json" ]; then
        note "npm fastify, pg" "ok ($npm_dir)"
    else
        note "npm fastify, pg" "missing (npm install fastify@4 pg@8 into $npm_dir)"
        npm_missing=1
        # npm is there: install them now (apt-get below brings npm otherwise)
        if [ $check_only = 0 ] && have npm && npm_install; then
            note "npm fastify, pg" "installed ($npm_dir)"; npm_missing=0
        fi
    fi
fi
# server_plugin LABEL LIB PKG: the extension LIB.so built for the server the
# throwaway clusters run, from Debian's postgresql-NN-PKG (NN: its major version)
server_plugin() {
    if [ -n "$bindir" ] && pgmajor=$("$bindir/postgres" -V 2>/dev/null | sed -n 's/.*PostgreSQL) \([0-9][0-9]*\).*/\1/p') &&
            [ -n "$pgmajor" ]; then
        # where the server really is (bindir may hold links to it)
        pgbin=$(dirname "$(readlink -f "$bindir/postgres")")
        pglib=$("$pgbin/pg_config" --pkglibdir 2>/dev/null || echo "${pgbin%/bin}/lib")
        if [ -f "$pglib/$2.so" ]; then
            note "$1" "ok ($pglib/$2.so)"
        else
            note "$1" "missing (postgresql-$pgmajor-$3)"; want "postgresql-$pgmajor-$3"
        fi
    else
        note "$1" "checked once the PostgreSQL server is there"
    fi
}
[ $bench_run = 0 ] || server_plugin pg_cron pg_cron cron
[ $bench_cdc = 0 ] || server_plugin wal2json wal2json wal2json
if [ $tsan = 1 ] && [ $cc_ok = 1 ]; then
    if ok tsan; then
        note "ThreadSanitizer" ok
    else
        note "ThreadSanitizer" "FAILS (libtsan2): $(last tsan)"
        want libtsan2
    fi
fi
[ $valgrind = 0 ] || need_cmd valgrind valgrind
if [ $cross = 1 ]; then
    if ! have "$CROSS_CC"; then
        note "$CROSS_CC" "missing (gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)"
        want gcc-aarch64-linux-gnu; want libc6-dev-arm64-cross
    elif [ -z "$pq_cflags" ]; then
        note "$CROSS_CC" "present (checked once libpq-dev is there)"
    elif ok cross; then
        note "$CROSS_CC" ok
    else
        note "$CROSS_CC" "cannot compile (libc6-dev-arm64-cross): $(last cross)"
        want libc6-dev-arm64-cross
    fi
fi
# make cross-test: qemu-aarch64 and an aarch64 libpq to link and run against
# (libpq5:arm64 from Debian's arm64 architecture: only the library; the
# headers are the host's, since libpq-dev:arm64 would replace libpq-dev);
# the 32-bit ARM compiler for make cross-arm32
if [ $cross = 1 ]; then
    if have qemu-aarch64-static || have qemu-aarch64; then note "qemu-aarch64" ok
    else note "qemu-aarch64" "missing (qemu-user-static)"; want qemu-user-static; fi
    if [ -f /usr/lib/aarch64-linux-gnu/libpq.so.5 ]; then note "libpq5:arm64" ok
    else note "libpq5:arm64" "missing (dpkg --add-architecture arm64)"; want libpq5:arm64; fi
    if have arm-linux-gnueabihf-gcc; then note "arm-linux-gnueabihf-gcc" ok
    else note "arm-linux-gnueabihf-gcc" "missing (gcc-arm-linux-gnueabihf)"; want gcc-arm-linux-gnueabihf; want libc6-dev-armhf-cross; fi
fi
if [ $fuzz = 1 ]; then
    if ! have "$CLANG"; then
        note "$CLANG" "missing (clang, libclang-rt-dev)"; want clang; want libclang-rt-dev
    elif ok fuzz; then
        note "clang libFuzzer" ok
    else
        note "clang libFuzzer" "FAILS (libclang-rt-dev): $(last fuzz)"
        want libclang-rt-dev
    fi
fi

[ $npm_missing = 0 ] || problems="$problems npm-packages"
if [ -z "$missing" ] && [ -z "$problems" ]; then
    [ $quiet = 1 ] || { echo "pgpipe dependency check:$modes"; printf '%s' "$report"; echo "all dependencies present"; }
    exit 0
fi
echo "pgpipe dependency check:$modes"
printf '%s' "$report"
if [ -z "$missing" ]; then
    case "$problems" in *libpq-program*)
        echo "the libpq test program fails although every package is present:"
        sed "s/^/    /" "$tmp/pq.log" | tail -n 20 ;;
    esac
    case "$problems" in *npm-packages*)
        echo "run:  (cd $npm_dir && npm install fastify@4 pg@8)" ;;
    esac
    exit 1
fi

opts="-y --no-install-recommends -o DPkg::Lock::Timeout=600"
if [ $check_only = 0 ] && [ "$(id -u)" = 0 ] && have apt-get; then
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # the Debian server package would create and start a cluster of its own;
    # pgpipe starts throwaway clusters itself, so ask it not to
    if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
        mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    fi
    # a fresh system may have no package lists yet: update first then, and
    # once more when the install fails (lists too old)
    update() {
        echo "apt-get update"
        apt-get update -o DPkg::Lock::Timeout=600 >"$tmp/update.log" 2>&1 || { cat "$tmp/update.log"; exit 1; }
    }
    ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1 || update
    # libpq5:arm64 (make cross-test) comes from Debian's arm64 architecture
    case " $missing " in *":arm64 "*)
        dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64 && update; } ;;
    esac
    # nginx's package starts a server on port 80 where no policy says
    # otherwise; the tests start their own, so keep it from starting
    policy=""
    case " $missing " in *" nginx "*)
        if [ ! -e /usr/sbin/policy-rc.d ]; then
            policy=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\n# tool/deps.sh: no service starts while it installs\nexit 101\n' >"$policy"
            chmod 755 "$policy"
            trap 'rm -f "$policy"; rm -rf "$tmp"' EXIT
        fi ;;
    esac
    # shellcheck disable=SC2086
    if ! apt-get install $opts $missing >"$tmp/apt.log" 2>&1; then
        update
        # shellcheck disable=SC2086
        apt-get install $opts $missing >"$tmp/apt.log" 2>&1 || { tail -n 20 "$tmp/apt.log"; exit 1; }
    fi
    echo "installed $(grep -c '^Setting up' "$tmp/apt.log") packages (apt-get install $opts$missing)"
    [ -z "$policy" ] || rm -f "$policy"
    if [ $npm_missing = 1 ] && have npm; then npm_install || exit 1; fi
    # shellcheck disable=SC2086
    sh "$0" --check $modes
    exit $?
fi
if have apt-get; then
    echo "missing:$missing"
    if [ "$(id -u)" = 0 ]; then
        echo "run:  sh $0$modes    (apt-get install$missing)"
    elif have sudo; then
        echo "run:  sudo sh $0$modes    (apt-get install$missing)"
    else
        echo "run as root:  sh $0$modes    (apt-get install$missing)"
    fi
else
    echo "missing:$missing (Debian package names; install the equivalents for your system)"
fi
exit 1
