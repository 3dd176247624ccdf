#!/bin/sh
# README's comparison of the shell with psql and sqlite3 (issue 26) holds:
# every row of test/shell_habits.md marked "yes" runs its example (exit 0,
# no error on stderr), or names the test script that types it on a terminal;
# and README.md, once it carries the table, carries it as it is here.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_habits.XXXXXX")
need_pgpipe
export HOME=$tmp
table=test/shell_habits.md
$P "$D" -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS shell_habits" \
    -c "CREATE DATABASE shell_habits" || fail "setup"
DB="$D dbname=shell_habits"
for kv in $D; do
    case $kv in host=*) PGHOST=${kv#host=}; export PGHOST ;; port=*) PGPORT=${kv#port=}; export PGPORT ;;
                user=*) PGUSER=${kv#user=}; export PGUSER ;; esac
done
pgpipe() {
    case "${1:-}" in
        DB) shift; "$P" "$DB" "$@" ;;
        DBNAME) shift; "$P" shell_habits "$@" ;;
        *) "$P" "$@" ;;
    esac
}
rows=0
while IFS= read -r line; do
    case "$line" in "| Habit "*|"|---"*) continue ;; esac
    # the cells (no cell holds a |): | habit | psql | sqlite3 | pgpipe | try |
    cell() { printf '%s' "$line" | awk -F '|' -v k="$1" '{ gsub(/^ +| +$/, "", $k); print $k }'; }
    habit=$(cell 2)
    mark=$(cell 5)
    try=$(cell 6)
    case "$mark" in yes*) ;; *) continue ;; esac
    rows=$((rows + 1))
    case "$try" in
        "("*".sh)")
            script=test/sh/$(printf '%s' "$try" | tr -d '()')
            [ -f "$script" ] || fail "$habit: $script is missing" ;;
        '`pgpipe '*'`')
            cmd=$(printf '%s' "$try" | sed 's/^`//; s/`$//')
            (eval "$cmd") >"$tmp/out" 2>"$tmp/err" </dev/null || fail "$habit: $cmd: exit $?: $(cat "$tmp/err")"
            grep -qi 'error' "$tmp/err" && fail "$habit: $cmd: $(cat "$tmp/err")" ;;
        *) fail "$habit: marked yes without an example: $try" ;;
    esac
done < "$table"
[ $rows -ge 28 ] || fail "only $rows rows marked yes"
# README.md, when it has the table, has this one
if grep -q '^| Habit | psql | sqlite3 | pgpipe | Try it |$' README.md; then
    sed -n '/^| Habit | psql | sqlite3 | pgpipe | Try it |$/,/^$/p' README.md | sed '/^$/d' > "$tmp/readme"
    diff "$table" "$tmp/readme" >"$tmp/diff" || fail "README's table differs from $table:
$(cat "$tmp/diff")"
fi
$P "$D" -q -c "DROP DATABASE shell_habits" || fail "cleanup"
echo "shell habits ok ($rows rows)"
