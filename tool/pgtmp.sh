#!/bin/sh
# pgtmp: a throwaway PostgreSQL cluster in a directory.
#
#   sh tool/pgtmp.sh start DIR [--tcp] [--port N] [--owner PID]
#         initdb (first time) and start a server with its data in DIR/data and
#         its Unix socket in DIR; prints the conninfo. No TCP unless --tcp (then
#         on 127.0.0.1, port N or a free one). With --owner PID a watchdog stops
#         the server as soon as process PID is gone, even after a SIGKILL.
#   sh tool/pgtmp.sh stop DIR        stop the server (fast, then immediate)
#   sh tool/pgtmp.sh restart DIR     pg_ctl restart -m fast
#   sh tool/pgtmp.sh status DIR      exit 0 when running
#   sh tool/pgtmp.sh conninfo DIR    print the conninfo of a started cluster
#   sh tool/pgtmp.sh run [DIR] -- CMD [ARGS...]
#         start a cluster (in DIR, or a new temp dir that is removed after), run
#         CMD with PGPIPE_TEST_DSN, PGPIPE_TEST_PGDIR, PGHOST, PGPORT, PGUSER
#         and PGDATABASE set, then stop the server whatever happened; exits
#         with CMD's status.
#
# Finds initdb/pg_ctl on PATH, through `pg_config --bindir`, or under
# /usr/lib/postgresql/*/bin (newest first). initdb refuses to run as root, so
# as root the server runs as the user `postgres` (or PGTMP_USER).
# PGTMP_DURABLE=1: a new cluster keeps fsync, synchronous_commit and
# full_page_writes on (benchmarks); by default they are off (tests).
set -eu

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

die() { echo "pgtmp: $*" >&2; exit 1; }

find_bindir() {
    if [ -n "${PGTMP_BINDIR:-}" ] && [ -x "$PGTMP_BINDIR/pg_ctl" ]; then
        echo "$PGTMP_BINDIR"; return
    fi
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v pg_ctl)"; return
    fi
    if command -v pg_config >/dev/null 2>&1; then
        b=$(pg_config --bindir 2>/dev/null || true)
        if [ -n "$b" ] && [ -x "$b/pg_ctl" ] && [ -x "$b/initdb" ]; then echo "$b"; return; fi
    fi
    for b in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -rn); do
        if [ -x "$b/pg_ctl" ] && [ -x "$b/initdb" ]; then echo "$b"; return; fi
    done
    die "no PostgreSQL server binaries (initdb, pg_ctl) found; run: sh tool/deps.sh"
}

run_user() {
    if [ "$(id -u)" = 0 ]; then
        if [ -n "${PGTMP_USER:-}" ]; then echo "$PGTMP_USER"
        elif id postgres >/dev/null 2>&1; then echo postgres
        else echo nobody
        fi
    fi
}

# as_server CMD...: run a command as the server's user
as_server() {
    u=$(run_user)
    if [ -z "$u" ]; then "$@"
    elif command -v runuser >/dev/null 2>&1; then runuser -u "$u" -- "$@"
    else su -s /bin/sh "$u" -c "$(printf "'%s' " "$@")"
    fi
}

free_port() {
    p=$(( 20000 + ($$ % 20000) ))
    if command -v ss >/dev/null 2>&1; then
        while ss -Hltn "sport = :$p" 2>/dev/null | grep -q .; do p=$((p + 1)); done
    fi
    echo "$p"
}

abspath() { (cd "$1" && pwd); }

conninfo() {
    d=$1
    [ -f "$d/conninfo" ] || die "no cluster started in $d"
    cat "$d/conninfo"
}

do_start() {
    d=$1; shift
    tcp=0; port=5432; owner=
    while [ $# -gt 0 ]; do
        case "$1" in
        --tcp) tcp=1 ;;
        --port) port=$2; tcp=1; shift ;;
        --owner) owner=$2; shift ;;
        *) die "unknown option $1" ;;
        esac
        shift
    done
    mkdir -p "$d"
    d=$(abspath "$d")
    bindir=$(find_bindir)
    u=$(run_user)
    [ -n "$u" ] && chown "$u" "$d"
    chmod 0755 "$d"
    # a socket path must fit in sun_path (107 bytes)
    [ ${#d} -lt 90 ] || die "directory path too long for a Unix socket: $d"
    if [ ! -f "$d/data/PG_VERSION" ]; then
        as_server "$bindir/initdb" -D "$d/data" -U postgres -A trust -E UTF8 \
            --locale=C --no-sync >"$d/initdb.log" 2>&1 ||
            { cat "$d/initdb.log" >&2; die "initdb failed (log: $d/initdb.log)"; }
        # PGTMP_DURABLE=1 keeps PostgreSQL's durable defaults (benchmarks);
        # otherwise a fast and disposable cluster (tests)
        if [ "${PGTMP_DURABLE:-0}" = 1 ]; then
            dur="# durable: fsync, synchronous_commit and full_page_writes as shipped"
        else
            dur="fsync = off
synchronous_commit = off
full_page_writes = off"
        fi
        cat >>"$d/data/postgresql.conf" <<EOF
# pgpipe throwaway cluster
$dur
max_connections = 200
shared_buffers = 128MB
max_wal_size = 2GB
unix_socket_directories = '$d'
listen_addresses = ''
log_min_messages = warning
EOF
    fi
    if [ "$tcp" = 1 ]; then
        [ "$port" = 5432 ] && port=$(free_port)
        listen="-c listen_addresses=127.0.0.1"
    else
        listen=""
    fi
    echo "$port" >"$d/port"
    echo "-p $port -k $d $listen" >"$d/opts"
    as_server "$bindir/pg_ctl" -D "$d/data" -l "$d/server.log" -w -t 60 \
        -o "$(cat "$d/opts")" start >/dev/null ||
        { tail -n 20 "$d/server.log" >&2 || true; die "server did not start (log: $d/server.log)"; }
    if [ "$tcp" = 1 ]; then
        echo "host=127.0.0.1 port=$port user=postgres dbname=postgres" >"$d/conninfo"
    else
        echo "host=$d port=$port user=postgres dbname=postgres" >"$d/conninfo"
    fi
    if [ -n "$owner" ]; then
        # the watchdog outlives us; it stops the server once the owner is gone
        detach=; command -v setsid >/dev/null 2>&1 && detach=setsid
        # own session: killing the owner's process group does not take it along
        # (a missing pid file is looked at again 3 s later: `restart` removes it briefly)
        $detach nohup sh -c "while kill -0 $owner 2>/dev/null && { [ -f '$d/data/postmaster.pid' ] || { sleep 3; [ -f '$d/data/postmaster.pid' ]; }; }; do sleep 1; done
                     sh '$self' stop '$d' >/dev/null 2>&1" >/dev/null 2>&1 </dev/null &
    fi
    cat "$d/conninfo"
}

do_stop() {
    d=$(abspath "$1")
    [ -f "$d/data/postmaster.pid" ] || return 0
    bindir=$(find_bindir)
    as_server "$bindir/pg_ctl" -D "$d/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
        as_server "$bindir/pg_ctl" -D "$d/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
}

do_restart() {
    d=$(abspath "$1")
    bindir=$(find_bindir)
    as_server "$bindir/pg_ctl" -D "$d/data" -l "$d/server.log" -m fast -w -t 60 \
        -o "$(cat "$d/opts")" restart >/dev/null
}

do_status() {
    d=$(abspath "$1")
    bindir=$(find_bindir)
    as_server "$bindir/pg_ctl" -D "$d/data" status >/dev/null 2>&1
}

do_run() {
    d=
    if [ "$1" != "--" ]; then d=$1; shift; fi
    [ "${1:-}" = "--" ] || die "usage: pgtmp run [DIR] -- CMD [ARGS...]"
    shift
    made=0
    if [ -z "$d" ]; then d=$(mktemp -d /tmp/pgtmp.XXXXXX); made=1; fi
    trap 'sh "$self" stop "$d" >/dev/null 2>&1 || true; [ $made = 1 ] && rm -rf "$d"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    info=$(do_start "$d" --owner $$)
    d=$(abspath "$d")
    port=$(cat "$d/port")
    set +e
    PGPIPE_TEST_DSN=$info PGPIPE_TEST_PGDIR=$d PGHOST=$d PGPORT=$port PGUSER=postgres \
        PGDATABASE=postgres "$@"
    rc=$?
    set -e
    exit $rc
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
start)    [ $# -ge 1 ] || die "usage: pgtmp start DIR"; do_start "$@" ;;
stop)     [ $# -ge 1 ] || die "usage: pgtmp stop DIR"; do_stop "$1" ;;
restart)  [ $# -ge 1 ] || die "usage: pgtmp restart DIR"; do_restart "$1" ;;
status)   [ $# -ge 1 ] || die "usage: pgtmp status DIR"; do_status "$1" ;;
conninfo) [ $# -ge 1 ] || die "usage: pgtmp conninfo DIR"; conninfo "$(abspath "$1")" ;;
run)      [ $# -ge 1 ] || die "usage: pgtmp run [DIR] -- CMD"; do_run "$@" ;;
bindir)   find_bindir ;;
*) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || exit 2 ;;
esac
