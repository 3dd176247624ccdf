#!/bin/sh
# make fresh-check: the README's two set-up commands on a fresh machine.
#
#   sh tool/fresh-check.sh        (as root; FRESH_KEEP=1 keeps the root)
#
# Builds a minimal Debian bookworm root (mmdebstrap, else debootstrap;
# --variant=minbase plus git, make and ca-certificates, as someone who has just
# cloned a project has), with the package sources of this machine's own apt
# configuration (/etc/apt/sources.list, /etc/apt/sources.list.d/*.list and
# *.sources; nothing is written into the project). A clean clone of HEAD
# (uncommitted changes do not count) goes into it, and `make demo` then
# `make test` run there: first as root (they install what they need), then as
# an unprivileged user with what the root run installed. Each runs in its own
# mount and PID namespace (unshare) chrooted into the root, with /proc, /sys,
# /dev, /dev/pts and /dev/shm; when a command ends, so do its processes and
# mounts. Prints the packages the root run added, how long each command took
# and its last lines (full logs in build/fresh-check/). Not part of `make test`:
# it downloads packages. Exits non-zero when a command fails, or, saying why,
# when this machine cannot build the root.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
suite=bookworm
logs=$top/build/fresh-check
die() { echo "fresh-check: $*" >&2; exit 1; }
t() { date +%s; }

[ "$(id -u)" = 0 ] || die "needs root (to build a root file system and chroot into it): run  sudo make fresh-check"
command -v git >/dev/null 2>&1 || die "needs git"
command -v unshare >/dev/null 2>&1 && command -v chroot >/dev/null 2>&1 || die "needs unshare and chroot (util-linux, coreutils)"
sha=$(git -C "$top" rev-parse HEAD 2>/dev/null) || die "$top is not a git repository"
dirty=$(git -C "$top" status --porcelain --untracked-files=no 2>/dev/null | wc -l)

# ---- the tool that builds the root -----------------------------------------------
tool=
if command -v mmdebstrap >/dev/null 2>&1; then tool=mmdebstrap
elif command -v debootstrap >/dev/null 2>&1; then tool=debootstrap
elif command -v apt-get >/dev/null 2>&1; then
    echo "installing mmdebstrap (apt-get)"
    if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap >/dev/null 2>&1 ||
       { apt-get update >/dev/null 2>&1 &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mmdebstrap >/dev/null 2>&1; }; then
        tool=mmdebstrap
    elif DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends debootstrap >/dev/null 2>&1; then
        tool=debootstrap
    else
        die "neither mmdebstrap nor debootstrap is installed, and apt-get could not install them (no network to the package mirror?)"
    fi
else
    die "neither mmdebstrap nor debootstrap is installed, and there is no apt-get to install them"
fi

work=$(mktemp -d /tmp/pgpipe-fresh.XXXXXX)
root=$work/root
# rm -rf only what nothing is mounted under (the mounts live in namespaces
# that are gone once their command ends; this is a second look)
cleanup() {
    rc=$?
    if grep -q " $root" /proc/self/mountinfo 2>/dev/null; then
        echo "fresh-check: something is still mounted under $root; not removing $work" >&2
    elif [ "${FRESH_KEEP:-0}" = 1 ]; then
        echo "root kept: $root  (chroot $root /bin/bash; remove: rm -rf $work)"
    else
        rm -rf "$work"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# ---- this machine's package sources, for bookworm ---------------------------------
# entries of its own suite (codename, codename-updates, codename-security ...);
# a machine of another release gets its suite names swapped for bookworm
host=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
[ -n "$host" ] || host=$suite
mkdir -p "$work/sources"
n=0
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    n=$((n + 1))
    case "$f" in
    *.sources) out=$work/sources/$n.sources
        awk -v h="$host" -v s="$suite" '
            function flush() { if (keep && buf != "") printf "%s\n", buf; buf = ""; keep = 0 }
            /^[[:space:]]*$/ { flush(); next }
            /^[Ss]uites:/ { line = ""; for (i = 2; i <= NF; i++) { w = $i
                                if (w == h || index(w, h "-") == 1) { keep = 1; w = s substr(w, length(h) + 1) }
                                line = line " " w }
                            $0 = "Suites:" line }
            { buf = buf $0 "\n" }
            END { flush() }' "$f" >"$out" ;;
    *) out=$work/sources/$n.list
        awk -v h="$host" -v s="$suite" '
            /^[[:space:]]*deb[[:space:]]/ {
                # the suite is the field after the URI (options in [...] may precede it)
                j = 2; if ($2 ~ /^\[/) { while (j <= NF && $j !~ /\]$/) j++; j++ }
                u = j + 1
                if ($u == h || index($u, h "-") == 1) { $u = s substr($u, length(h) + 1); print } }' "$f" >"$out" ;;
    esac
    [ -s "$out" ] || rm -f "$out"
done
ls "$work/sources/"* >/dev/null 2>&1 ||
    die "no package sources for '$host' in /etc/apt/sources.list or /etc/apt/sources.list.d/ to build a $suite root from"
echo "== fresh-check of $sha$( [ "$dirty" = 0 ] || echo " (HEAD; $dirty uncommitted changes are not part of it)")"
echo "package sources (from this machine's apt configuration):"
grep -hE '^(deb |URIs:|Suites:)' "$work/sources/"* | sed 's/^/    /'

# ---- the root ------------------------------------------------------------------------
mkdir -p "$logs"
s0=$(t)
echo "== building a minimal $suite root with $tool (minbase + git, make, ca-certificates) in $root"
if [ "$tool" = mmdebstrap ]; then
    # shellcheck disable=SC2046
    mmdebstrap --variant=minbase --include=git,make,ca-certificates "$suite" "$root" \
        $(ls "$work/sources/"*) >"$logs/bootstrap.log" 2>&1 ||
        { tail -n 20 "$logs/bootstrap.log"; die "$tool could not build the root (no network to the package mirror?); log: $logs/bootstrap.log"; }
else
    mirror=$(grep -hE '^(deb |URIs:)' "$work/sources/"* | head -n 1 | awk '{ for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }')
    [ -n "$mirror" ] || die "no mirror URI in the package sources"
    debootstrap --variant=minbase --include=git,make,ca-certificates "$suite" "$root" "$mirror" \
        >"$logs/bootstrap.log" 2>&1 ||
        { tail -n 20 "$logs/bootstrap.log"; die "$tool could not build the root (no network to $mirror?); log: $logs/bootstrap.log"; }
    rm -f "$root/etc/apt/sources.list"
    cp "$work/sources/"* "$root/etc/apt/sources.list.d/"
    chroot "$root" apt-get clean >/dev/null 2>&1 || true
    rm -rf "$root/var/lib/apt/lists/"*_* 2>/dev/null || true
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
echo "root built in $(( $(t) - s0 )) s: $(chroot "$root" dpkg-query -W -f '.\n' | wc -l) packages, $(du -sh "$root" | cut -f1)"
chroot "$root" dpkg-query -W -f '${Package}\n' | sort >"$work/before"

# ---- the clones and the user ---------------------------------------------------------
clone() { # DIR
    git clone -q --no-checkout "$top" "$1" && git -C "$1" checkout -q --detach "$sha"
}
clone "$root/root/pgpipe" || die "git clone of $top failed"
chroot "$root" useradd -m -s /bin/bash pgdev || die "useradd in the root failed"
clone "$root/home/pgdev/pgpipe" || die "git clone of $top failed"
uid=$(chroot "$root" id -u pgdev)
chown -R "$uid:$uid" "$root/home/pgdev/pgpipe"

# in_root USER DIR CMD: run CMD in the project clone DIR inside the root, in a
# new mount and PID namespace (its mounts and processes end with it), with a
# clean environment as a login would give
in_root() {
    user=$1; dir=$2; cmd=$3
    if [ "$user" = root ]; then home=/root; spec=; else home=/home/$user; spec="--userspec=$uid:$uid --groups=$uid"; fi
    unshare --mount --pid --fork --propagation private sh -c '
        set -e
        r=$1; shift
        mount -t proc proc "$r/proc"
        mount -t sysfs sysfs "$r/sys"
        mount --bind /dev "$r/dev"
        mount --bind /dev/pts "$r/dev/pts"
        mount -t tmpfs -o mode=1777,nosuid,nodev shm "$r/dev/shm"
        exec chroot "$@"' - "$root" $spec "$root" \
        /usr/bin/env -i HOME="$home" USER="$user" LOGNAME="$user" SHELL=/bin/bash TERM=dumb \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        /bin/sh -c "cd '$dir' && $cmd"
}

failed=0
summary=""
run() { # USER DIR NAME CMD
    user=$1; dir=$2; name=$3; cmd=$4
    log=$logs/$name.log
    echo
    echo "== $user: $cmd   (in $dir)"
    s=$(t)
    if in_root "$user" "$dir" "$cmd" >"$log" 2>&1; then rc=0; else rc=$?; fi
    secs=$(( $(t) - s ))
    tail -n "${FRESH_TAIL:-25}" "$log" | sed 's/^/    /'
    if [ $rc = 0 ]; then res=ok; else res="FAILED (exit $rc)"; failed=$((failed + 1)); fi
    echo "-- $user: $cmd: $res in ${secs} s (log: $log)"
    summary="$summary$(printf '  %-6s %-10s %5d s  %s' "$user" "$cmd" "$secs" "$res")
"
}

run root /root/pgpipe root-demo "make demo"
chroot "$root" dpkg-query -W -f '${Package}\n' | sort >"$work/after-demo"
run root /root/pgpipe root-test "make test"
chroot "$root" dpkg-query -W -f '${Package}\n' | sort >"$work/after"
run pgdev /home/pgdev/pgpipe user-demo "make demo"
run pgdev /home/pgdev/pgpipe user-test "make test"

echo
echo "== packages the root run installed"
added_demo=$(comm -13 "$work/before" "$work/after-demo")
added_test=$(comm -13 "$work/after-demo" "$work/after")
echo "by make demo ($(echo "$added_demo" | grep -c . || true)):"
echo "$added_demo" | grep . | tr '\n' ' ' | fold -s -w 100 | sed 's/^/    /'; echo
echo "by make test ($(echo "$added_test" | grep -c . || true) more):"
echo "$added_test" | grep . | tr '\n' ' ' | fold -s -w 100 | sed 's/^/    /'; echo
echo "root: $(chroot "$root" dpkg-query -W -f '.\n' | wc -l) packages, $(du -sh "$root" | cut -f1) after the runs"
echo
echo "== summary ($sha)"
printf '%s' "$summary"
for n in root-test user-test; do
    printf '  %-10s %s\n' "$n:" "$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$logs/$n.log" | tail -n 1)"
done
[ $failed = 0 ] && echo "fresh-check passed" || echo "fresh-check: $failed of 4 commands failed"
[ $failed = 0 ]
