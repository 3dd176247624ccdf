#!/bin/sh
# Every code block of README.md works as pasted.
#
# Each fenced block declares its kind in the info string; an indented code
# block, a fence without a kind or with an unknown one is a failure, so new
# README text cannot slip by untested:
#   sh      shell commands: run in order with `sh -e`, in a scratch directory
#           that looks like a clone where `make` has run (pgpipe.c, pgpipe.h,
#           shell.c, Makefile copied; src, sql, tool, test linked; build/pgpipe
#           is the tested build/test/pgpipe), HOME a scratch directory
#   c       saved as NAME.c in that directory (`<!-- example: NAME -->` before
#           it), compiled with the strict flags against the amalgamation and
#           run with the test database's conninfo as its argument
#   pgpipe  a shell transcript: every `pgpipe> CMD` line runs through the
#           shell against a fresh database of its own (in the scratch
#           directory, so the files earlier sh blocks made are there); the
#           lines after it are its shown output, not compared (trimmed)
#   sql     run as a script by the shell (`pgpipe --bail -f FILE`) against
#           the same database
#   text    output only, not run; `<!-- output: NAME -->` before it makes it
#           the exact output of example NAME
# `<!-- readme: no-run REASON -->` before a block keeps it from running; it is
# still checked: `sh -n` for sh, `cc -fsyntax-only` for c, and for pgpipe
# every dot command must be known (`pgpipe ".help NAME"`).
#
# The one rewrite: the README's private server /tmp/pg becomes one in the
# scratch directory, so that runs in parallel (and the reader's own /tmp/pg)
# are not disturbed. Everything runs against the throwaway cluster of
# `make test` (PG* variables) or that private server; nothing else.
set -u
top=${PGPIPE_TOP:-$(pwd)}
cd "$top"
P=$top/build/test/pgpipe
[ -x "$P" ] && [ -f pgpipe.c ] || { echo "build/test/pgpipe or pgpipe.c missing: make test-build"; exit 1; }
[ -n "${PGPIPE_TEST_DSN:-}" ] || { echo "PGPIPE_TEST_DSN is not set (run through make test)"; exit 1; }
case "${PGHOST:-/}" in
    /*|localhost|127.0.0.1|::1) ;;
    *) echo "PGHOST=$PGHOST is not a local server: refusing to run README commands against it"; exit 1 ;;
esac
README=${README:-README.md}
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/readme.XXXXXX")
chmod 755 "$tmp"
W=$tmp/w            # the reader's clone
H=$tmp/home         # the reader's HOME
B=$tmp/blocks
mkdir -p "$W/build" "$H" "$B"
BLOCK_TIMEOUT=${README_BLOCK_TIMEOUT:-60}
STRICT="-std=c11 -Wall -Wextra -Wpedantic -Werror"
PQ_CFLAGS=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
PQ_LIBS=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
db=readme_$$
dsn_db() { printf '%s dbname=%s' "$PGPIPE_TEST_DSN" "$1"; }
TOUR=$(dsn_db "$db")

cleanup() {
    sh "$top/tool/pgtmp.sh" stop "$tmp/pg" >/dev/null 2>&1 || true
    "$P" "$PGPIPE_TEST_DSN" "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    for r in pgpipe_loader pgpipe_worker; do
        "$P" "$PGPIPE_TEST_DSN" "DROP ROLE IF EXISTS $r" >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- split README.md into blocks --------------------------------------------
# manifest: LINE KIND MODE NAME  (MODE run|norun|example|output; NAME or -)
# blocks/LINE holds the block's text; parse errors go to errors as
# "LINE message".
awk -v dir="$B" '
function err(line, msg) { print line " " msg > (dir "/errors") }
function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }
BEGIN { prevblank = 1; mode = ""; name = "-"; mline = 0 }
{
    if (infence) {
        if ($0 ~ /^ *```+ *$/) {
            close(out); infence = 0; prevblank = 0; next
        }
        line = $0
        for (i = 0; i < findent && substr(line, 1, 1) == " "; i++) line = substr(line, 2)
        print line > out
        next
    }
    if (match($0, /^ *```/)) {
        findent = RLENGTH - 3
        info = trim(substr($0, RLENGTH + 1))
        split(info, w, /[ \t]+/)
        kind = w[1]
        start = NR
        out = dir "/" start
        printf "" > out
        infence = 1
        if (kind == "")
            err(start, "a code block without a kind: give its fence one of sh, c, pgpipe, sql, text")
        else if (kind !~ /^(sh|c|pgpipe|sql|text)$/)
            err(start, "a code block of unknown kind \"" kind "\": use sh, c, pgpipe, sql or text")
        if (mode == "example" && kind != "c") err(start, "<!-- example --> is for a c block, not " kind)
        if (mode == "output" && kind != "" && kind != "text") err(start, "<!-- output --> is for a text block, not " kind)
        if (kind == "c" && mode != "example" && mode != "norun")
            err(start, "a c block needs <!-- example: NAME --> (or <!-- readme: no-run REASON -->) before it")
        print start, (kind == "" ? "none" : kind), (mode == "" ? "run" : mode), name > (dir "/manifest")
        mode = ""; name = "-"
        next
    }
    if (match($0, /^<!-- example: [A-Za-z0-9_]+ -->/)) { mode = "example"; name = $3; mline = NR; next }
    if (match($0, /^<!-- output: [A-Za-z0-9_]+ -->/)) { mode = "output"; name = $3; mline = NR; next }
    if ($0 ~ /^<!-- readme: no-run [^ ]/) { mode = "norun"; name = "-"; mline = NR; next }
    if ($0 ~ /^<!-- readme:/) { err(NR, "unknown marker (known: <!-- readme: no-run REASON -->)"); next }
    if ($0 ~ /^[ \t]*$/) { prevblank = 1; next }
    if (mode != "") { err(mline, "a marker not followed by a code block"); mode = "" ; name = "-" }
    if (prevblank && $0 ~ /^(    |\t)/ && $0 !~ /^ *([-*+]|[0-9]+\.) /)
        err(NR, "an indented code block: fence it with a kind (sh, c, pgpipe, sql, text)")
    prevblank = 0
}
END { if (infence) err(start, "a code block that is never closed") }
' "$README"
touch "$B/manifest" "$B/errors"

pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok    $README:$1 $2${3:+ ($3)}"; }
bad() {  # LINE MESSAGE [LOG]
    fail=$((fail + 1)); echo "FAIL  $README:$1: $2"
    if [ -n "${3:-}" ] && [ -s "$3" ]; then sed 's/^/      | /' "$3" | tail -n 40; fi
}
while read -r line msg; do bad "$line" "$msg"; done < "$B/errors"

# ---- the scratch clone: what a reader has after `make` ----------------------
cp pgpipe.c pgpipe.h Makefile shell.c "$W/"
for d in src sql tool test; do ln -s "$top/$d" "$W/$d"; done
[ -f README.md ] && cp README.md "$W/"
# the library's two objects (the shell's has the pull's HTTP client), built by
# the Makefile's own rules side by side at -O0: the blocks link them, they do
# not time them
if ! make -s -C "$W" -j2 -o pgpipe.c -o pgpipe.h CFLAGS=-O0 build/pgpipe.o build/pgpipe-curl.o \
        > "$tmp/lib.log" 2>&1; then
    bad 0 "pgpipe.c does not compile with the strict flags" "$tmp/lib.log"; exit 1
fi
ar rcs "$W/build/libpgpipe.a" "$W/build/pgpipe.o"
cp "$P" "$W/build/pgpipe"   # newest, so `make install` has nothing to rebuild
if ! "$P" "$PGPIPE_TEST_DSN" "CREATE DATABASE $db" > "$tmp/db.log" 2>&1; then
    bad 0 "cannot create the database for the transcripts" "$tmp/db.log"; exit 1
fi

# the README's private server lives in the scratch directory
rewrite() { sed -e "s|/tmp/pg\\([^A-Za-z0-9_.-]\\)|$tmp/pg\\1|g" -e "s|/tmp/pg\$|$tmp/pg|" "$1"; }
in_clone() {  # run a command in the clone with the reader's HOME and a time limit
    (cd "$W" && HOME=$H PGDATABASE=$db timeout "$BLOCK_TIMEOUT" "$@")
}

run_sh() {  # LINE FILE
    rewrite "$2" > "$2.run"
    if in_clone sh -e -x "$2.run" > "$2.log" 2>&1 < /dev/null; then
        ok "$1" sh
    else
        rc=$?
        # the failing line: the one holding the last command traced (quotes
        # aside), else the block's first line
        last=$(grep '^+ ' "$2.log" | tail -n 1 | cut -c3-)
        at=$(awk -v cmd="$last" 'cmd != "" { l = $0; gsub(/["\047]/, "", l); if (index(l, cmd)) n = NR }
                                 END { print n + 0 }' "$2.run")
        if [ $rc = 124 ]; then
            bad $(($1 + at)) "sh block timed out after $BLOCK_TIMEOUT s" "$2.log"
        else
            bad $(($1 + at)) "sh block failed (exit $rc)${last:+ at: $last}" "$2.log"
        fi
    fi
}

run_c() {  # LINE FILE NAME
    cp "$2" "$W/$3.c"
    if ! cc $STRICT -I"$W" $PQ_CFLAGS "$W/$3.c" "$W/build/pgpipe.o" $PQ_LIBS -lpthread -lm \
            -o "$tmp/$3" > "$2.log" 2>&1; then
        bad "$1" "c example $3 does not compile" "$2.log"; return
    fi
    in_clone "$tmp/$3" "$TOUR" > "$tmp/$3.got" 2> "$2.log"
    rc=$?
    if [ $rc = 0 ]; then
        ok "$1" c "$3"
    else
        cat "$tmp/$3.got" >> "$2.log"; bad "$1" "c example $3 failed (exit $rc)" "$2.log"
    fi
}

check_output() {  # LINE FILE NAME
    if [ ! -f "$tmp/$3.got" ]; then
        bad "$1" "output of $3, but no example $3 ran before it"
    elif cmp -s "$2" "$tmp/$3.got"; then
        ok "$1" text "output of $3"
    else
        diff "$2" "$tmp/$3.got" > "$2.log"; bad "$1" "output of $3 differs from the README (- README, + got)" "$2.log"
    fi
}

# A transcript: every `pgpipe> CMD` runs in its own shell run against the
# transcripts' database, after the .mode and .timer the transcript set.
pg_cmd() {  # MODE TIMER CMD: CMD after the settings the transcript made
    _m=$1; _t=$2; _c=$3
    set --
    [ -z "$_m" ] || set -- "$@" ".mode $_m"
    [ -z "$_t" ] || set -- "$@" ".timer $_t"
    in_clone "$P" "$TOUR" "$@" "$_c" < /dev/null
}

run_pgpipe() {  # LINE FILE
    n=0; failed=0; cmds=0; mode=; timer=
    while IFS= read -r l || [ -n "$l" ]; do
        n=$((n + 1))
        case "$l" in 'pgpipe> '*) ;; *) continue ;; esac
        cmd=${l#pgpipe> }
        cmds=$((cmds + 1))
        if ! pg_cmd "$mode" "$timer" "$cmd" > "$2.log" 2>&1; then
            bad $(($1 + n)) "pgpipe> $cmd: failed" "$2.log"
            failed=1
        fi
        case "$cmd" in
            .mode\ *) mode=${cmd#.mode } ;;
            .timer\ *) timer=${cmd#.timer } ;;
        esac
    done < "$2"
    [ $cmds -gt 0 ] || { bad "$1" "a pgpipe block without a 'pgpipe> ' command"; return; }
    [ $failed = 1 ] || ok "$1" pgpipe "$cmds commands"
}

run_sql() {  # LINE FILE
    in_clone "$P" --bail -f "$2" "$TOUR" > "$2.log" 2>&1 < /dev/null
    rc=$?
    if [ $rc = 0 ]; then ok "$1" sql; else bad "$1" "sql block failed (exit $rc)" "$2.log"; fi
}

check_norun() {  # LINE KIND FILE
    case "$2" in
        sh) if sh -n "$3" > "$3.log" 2>&1; then ok "$1" sh "no-run, sh -n"; else bad "$1" "no-run sh block does not parse" "$3.log"; fi ;;
        c)  if cc $STRICT -fsyntax-only -x c -I"$W" $PQ_CFLAGS "$3" > "$3.log" 2>&1; then ok "$1" c "no-run, syntax"
            else bad "$1" "no-run c block does not compile" "$3.log"; fi ;;
        pgpipe)
            cmds=0; badcmd=
            while IFS= read -r l || [ -n "$l" ]; do
                case "$l" in 'pgpipe> .'*) ;; 'pgpipe> '*) cmds=$((cmds + 1)); continue ;; *) continue ;; esac
                cmds=$((cmds + 1))
                dot=${l#pgpipe> .}; dot=${dot%% *}
                "$P" ".help $dot" > /dev/null 2>> "$3.log" || badcmd="$badcmd .$dot"
            done < "$3"
            if [ $cmds = 0 ]; then bad "$1" "a pgpipe block without a 'pgpipe> ' command"
            elif [ -n "$badcmd" ]; then bad "$1" "no-run transcript names unknown commands:$badcmd" "$3.log"
            else ok "$1" pgpipe "no-run, $cmds commands known"; fi ;;
        sql) ok "$1" sql "no-run" ;;
        *) ok "$1" "$2" "no-run" ;;
    esac
}

counts=""
while read -r line kind mode name; do
    f=$B/$line
    counts="$counts $kind"
    [ "$mode" = norun ] && { counts="$counts norun"; check_norun "$line" "$kind" "$f"; continue; }
    case "$kind" in
        sh) run_sh "$line" "$f" ;;
        c) [ "$mode" = example ] && run_c "$line" "$f" "$name" ;;
        pgpipe) run_pgpipe "$line" "$f" ;;
        sql) run_sql "$line" "$f" ;;
        text) if [ "$mode" = output ]; then check_output "$line" "$f" "$name"; else ok "$line" text "not run"; fi ;;
    esac
done < "$B/manifest"

summary=$(for k in $counts; do echo "$k"; done | sort | uniq -c | awk '{ printf "%s%d %s", sep, $1, $2; sep = ", " }')
echo "blocks: $summary"
echo "$pass passed, $fail failed"
[ $fail = 0 ] && [ $pass -gt 0 ]
