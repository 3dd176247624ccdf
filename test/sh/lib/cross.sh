# test/sh/lib/cross.sh: what the aarch64-under-qemu tests share
# (test/sh/cross_qemu.sh, the unit tests; test/sh/cross_qemu_e2e.sh, the
# device program against the test server). Sourced after common.sh, from the
# top directory. cross_setup exits 77 (skip) without the cross compiler, qemu
# or an aarch64 libpq (tool/deps.sh --cross installs them).

# cross_setup: sets CC, Q (qemu-aarch64), PQ, SYSROOT, pgcf, link and
# out=build/cross (made)
cross_setup() {
    CC=${CROSS_CC:-aarch64-linux-gnu-gcc}
    Q=$(command -v qemu-aarch64-static || command -v qemu-aarch64) || { echo "qemu-aarch64 not installed (sh tool/deps.sh --cross)"; exit 77; }
    command -v "$CC" >/dev/null 2>&1 || { echo "$CC not installed (sh tool/deps.sh --cross)"; exit 77; }
    PQ=${CROSS_LIBPQ:-/usr/lib/aarch64-linux-gnu/libpq.so.5}
    [ -f "$PQ" ] || { echo "no aarch64 libpq ($PQ: libpq5:arm64, sh tool/deps.sh --cross)"; exit 77; }
    SYSROOT=${CROSS_SYSROOT:-/usr/aarch64-linux-gnu}
    pgcf=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
    link="$PQ -Wl,-rpath-link,$(dirname "$PQ") -lpthread -lm"
    out=build/cross
    mkdir -p $out
}

# cross_run PROGRAM ARG...: run an aarch64 program under qemu (at most 120 s)
cross_run() { QEMU_LD_PREFIX=$SYSROOT timeout 120 "$Q" "$@"; }

# cross_device_program: build $out/device_e2e-aarch64 from test/device_e2e.c
# when it is missing or older than its sources: a single-threaded device
# program (qemu-user cannot start threads here), -Os as on a device
cross_device_program() {
    if [ ! -x $out/device_e2e-aarch64 ] || [ -n "$(find pgpipe.c test/device_e2e.c -newer $out/device_e2e-aarch64 2>/dev/null)" ]; then
        # shellcheck disable=SC2086
        $CC -std=c11 -Wall -Wextra -Wpedantic -Werror -Os -DPGPIPE_OMIT_THREADS $pgcf -I. test/device_e2e.c $link \
            -o $out/device_e2e-aarch64.tmp && mv $out/device_e2e-aarch64.tmp $out/device_e2e-aarch64 ||
            fail "the aarch64 device program does not build"
    fi
}
