#!/bin/sh
# make test: no database
# .help COMMAND shows every option of every dot command (and sub-command)
# with an example, and the examples cannot drift from the parsers:
# `.help --check-examples` parses each one with its command's own parser
# (nothing runs) and fails, naming the row, for an option without an example,
# an example that does not give its option, or one the parser refuses. A
# copy of shell.c with broken rows, compiled here, shows that it does. No
# server is needed.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
top=$(pwd)
P=${PGPIPE_SHELL:-$top/build/test/pgpipe}
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_help.XXXXXX")
chmod 755 "$tmp"
need_pgpipe
# no server anywhere: .help must not need one
export PGHOST=/nonexistent PGPORT=1
mkdir "$tmp/cwd"

# examples OPTIONS HELP: "OPT<TAB>EXAMPLE" for each option line of .help
# output HELP (an option line: two blanks then --; its e.g. line and the e.g.
# line's continuations joined with one blank)
examples() {
    printf '%s\n' "$1" | awk '
        /^  --/ { if (opt != "") print opt "\t" ex; opt = $1; sub(/,$/, "", opt); ex = ""; inex = 0; next }
        /^[^ ]/ || /^$/ { if (opt != "") print opt "\t" ex; opt = ""; ex = ""; inex = 0; next }
        opt != "" && /^                            e\.g\. / { s = $0; sub(/^ *e\.g\. /, "", s); ex = s; inex = 1; next }
        opt != "" && inex && /^                                 [^ ]/ { s = $0; sub(/^ */, "", s); ex = ex " " s; next }
        { inex = 0 }
        END { if (opt != "") print opt "\t" ex }'
}

# ---- .help work: an example line for every option of .work -----------------
h=$($P ".help work") || fail ".help work: exit $?"
opts=$($P ".help --options work") || fail ".help --options work"
ex=$(examples "$h")
n=0
for o in $opts; do
    n=$((n + 1))
    line=$(printf '%s\n' "$ex" | awk -F'\t' -v o="$o" '$1 == o')
    [ -n "$line" ] || fail ".help work does not list $o:
$h"
    e=$(printf '%s\n' "$line" | cut -f2)
    case "$e" in
    ".work "*) ;;
    *) fail ".help work: $o has no example line (e.g. .work ...): '$e'" ;;
    esac
    case " $e " in
    *" $o "*|*" $o="*) ;;
    *) fail ".help work: the example of $o does not name it: $e" ;;
    esac
done
[ $n -ge 16 ] || fail ".help --options work lists $n options"
[ "$(printf '%s\n' "$h" | grep -c '^ *e\.g\. \.work ')" = $n ] || fail ".help work: not one example per option:
$h"
has "$h" "e.g. .work --mark --workers 4"
# the wrapped example lines stay within 79 columns, as the rest
awk 'length($0) > 79 { bad = 1 } END { exit bad }' <<EOF || fail ".help work has lines over 79 columns"
$h
EOF
echo ".help work: $n options, each with its example"

# ---- .help dlq: every sub-command's options, with examples of that sub-command
h=$($P ".help dlq") || fail ".help dlq: exit $?"
printf '%s\n' "$h" | awk -v F="$tmp/dlq" '
    /^\.dlq [a-z]+.*: / { sub(/:.*/, ""); split($0, w, " "); sub_ = w[2]; next }
    /^$/ { next }
    sub_ != "" && /^  --/ { o = $1; sub(/,$/, "", o); print sub_ "\t" o > F; next }' || fail "awk"
count=0
for s in list counts stats replay purge; do
    grep -q "^$s	" "$tmp/dlq" || fail ".help dlq shows no options of $s:
$h"
done
# each sub-command block: as many e.g. lines as options, each a line of .dlq
# (stats shares the table of counts, so its examples are .dlq counts lines)
for s in list counts stats replay purge; do
    block=$(printf '%s\n' "$h" | awk -v s="$s" '
        /^\.dlq [a-z]+.*: / { on = ($2 == s || $2 == s ":") ; next } on')
    nopt=$(printf '%s\n' "$block" | grep -c '^  --')
    nex=$(printf '%s\n' "$block" | grep -c '^ *e\.g\. \.dlq ')
    [ "$nopt" -gt 0 ] && [ "$nopt" = "$nex" ] || fail ".dlq $s: $nopt options, $nex examples:
$block"
    want=$s
    [ $s = stats ] && want=counts
    other=$(printf '%s\n' "$block" | grep '^ *e\.g\. \.dlq ' | grep -v "e\.g\. \.dlq $want " || true)
    [ -z "$other" ] || fail ".dlq $s: examples of another sub-command: $other"
    count=$((count + nopt))
done
has "$h" "e.g. .dlq purge --status discarded"
has "$h" "e.g. .dlq list --error 23505"
echo ".help dlq: $count sub-command options, each with its example"

# ---- every command's .help: one example per option row ---------------------
for c in $($P ".help" | awk '/^\./ { sub(/^\./, "", $1); print $1 }' | sort -u); do
    h=$($P ".help $c") || fail ".help $c: exit $?"
    nopt=$(printf '%s\n' "$h" | grep -c '^  --')
    nex=$(printf '%s\n' "$h" | grep -c "^ *e\.g\. \.$c\( \|\$\)")
    [ "$nopt" = "$nex" ] || fail ".help $c: $nopt option lines but $nex examples:
$h"
    long=$(printf '%s\n' "$h" | awk 'length($0) > 79')
    [ -z "$long" ] || fail ".help $c: lines over 79 columns: $long"
done
echo "every command: one example per option, within 79 columns"

# ---- the drift check: every example parses with its command's own parser ----
out=$(cd "$tmp/cwd" && $P ".help --check-examples" 2>"$tmp/err") || fail ".help --check-examples failed:
$(cat "$tmp/err")"
[ -s "$tmp/err" ] && fail ".help --check-examples wrote errors: $(cat "$tmp/err")"
printf '%s\n' "$out" | grep -Eq '^[0-9]+ examples of [0-9]+ commands: ' || fail "no summary: $out"
nrows=$(printf '%s\n' "$out" | awk '{ print $1 }')
[ "$nrows" -ge 150 ] || fail "only $nrows examples checked: $out"
[ -z "$(ls -A "$tmp/cwd")" ] || fail ".help --check-examples made files: $(ls -A "$tmp/cwd")"
for c in work dlq records load pull serve cdc help; do
    out=$($P ".help --check-examples $c") || fail ".help --check-examples $c: exit $?"
    has "$out" "examples of 1 command: "
done
out=$($P ".help --check-examples .records") || fail ".help --check-examples .records"
has "$out" "examples of 1 command: "
out=$($P ".help --check-examples quit") || fail ".help --check-examples quit"
has "$out" ".quit takes no options: no examples to check"
# as -c, as the man page and README show it
(cd "$tmp/cwd" && $P -X -c ".help --check-examples" </dev/null) >/dev/null 2>&1 || fail "the check with -c failed"
echo ".help --check-examples: $nrows examples parse"

# ---- hostile .help lines -----------------------------------------------------
bad() { # LINE EXPECTED: exit non-zero, one error line holding EXPECTED, nothing on stdout
    (cd "$tmp/cwd" && $P "$1") >"$tmp/out" 2>"$tmp/err" && fail "exit 0 for: $1"
    [ -s "$tmp/out" ] && fail "output for: $1: $(cat "$tmp/out")"
    [ "$(wc -l <"$tmp/err")" = 1 ] || fail "not one error line for: $1: $(cat "$tmp/err")"
    grep -qF -- "$2" "$tmp/err" || fail "expected '$2' for: $1: $(cat "$tmp/err")"
    grep -q "Sanitizer\|runtime error" "$tmp/err" && fail "sanitizer on: $1"
    return 0
}
bad ".help nosuch" "error: .help: no command .nosuch (try .help)"
bad ".help .nosuch" "no command .nosuch"
bad ".help WORK" "no command .WORK"
bad ".help ." "no command ."
bad ".help work extra" '.help: unexpected argument "extra"'
bad ".help --check-examples nosuch" "no command .nosuch"
bad ".help --check-examples work extra" 'unexpected argument "extra"'
bad ".help --check-examples --options work" "--check-examples does not go with --options"
bad ".help --check-examples=yes" "--check-examples: takes no value"
bad ".help --check-example" "unknown option (did you mean --check-examples?)"
bad ".help 'work" "a quote is not closed"
# .help .work (a leading dot) is .help work
[ "$($P ".help .work")" = "$($P ".help work")" ] || fail ".help .work differs from .help work"
[ "$($P '.help "work"')" = "$($P ".help work")" ] || fail ".help \"work\" differs from .help work"
# .help alone: the list, no examples in it
h=$($P ".help") || fail ".help: exit $?"
printf '%s\n' "$h" | grep -q 'e\.g\.' && fail ".help (the list) shows examples"
has "$h" ".help COMMAND explains one, with all its options"
has "$($P ".help help")" "e.g. .help --check-examples"
echo "hostile .help lines: ok"

# ---- the man page carries the examples ---------------------------------------
sh tool/manpage.sh "$P" >"$tmp/pgpipe.1" || fail "manpage.sh failed"
grep -q 'e\.g\. \.work \\-\\-mark \\-\\-workers 4' "$tmp/pgpipe.1" || fail "the man page lacks the examples"

# ---- the check fails when a row is broken: a copy of shell.c with bad rows ---
# (each mutation must apply; the copy is compiled as the Makefile compiles
# the shell, without the sanitizers, and run with no server)
CC=${CC:-cc}
PQ_CFLAGS=$(pkg-config --cflags libpq 2>/dev/null || echo "-I$(pg_config --includedir)")
PQ_LIBS=$(pkg-config --libs libpq 2>/dev/null || echo -lpq)
STRICT="-std=c11 -Wall -Wextra -Wpedantic -Werror"
mutate() { # FROM TO: replace the first FROM in $tmp/m.c, which must hold it
    grep -qF -- "$1" "$tmp/m.c" || fail "mutation: '$1' is not in shell.c"
    FROM=$1 TO=$2 awk 'BEGIN { from = ENVIRON["FROM"]; to = ENVIRON["TO"]; done = 0 }
        !done && (i = index($0, from)) { $0 = substr($0, 1, i - 1) to substr($0, i + length(from)); done = 1 }
        { print }' "$tmp/m.c" >"$tmp/m2.c" && mv "$tmp/m2.c" "$tmp/m.c"
}
cp shell.c "$tmp/m.c"
mutate '".work --mark --workers 4"' '".work --mark --workers four"'                 # a bad number
mutate '".top --interval 5"' 'NULL'                                                # no example
mutate '".install --example"' '".install"'                                         # does not give it
mutate '".export \"SELECT * FROM analytics.daily_user_metrics\" metrics.ndjson --format ndjson"' \
       '".export \"SELECT * FROM analytics.daily_user_metrics\" metrics.ndjson --format xml"'  # a bad choice
mutate 'DLQ_OPT_STAGE(".dlq list --stage process")' 'DLQ_OPT_STAGE(".dlq counts --stage process")' # another sub-command
mutate '--token-file /run/secrets/crm_token"' "--token-file ''\""                # an empty file name
mutate '".records users find --limit 10 name like \"A%\""' '".records users find --limit ten name like \"A%\""' # .records' own parser
mutate '".listen pgpipe_events --count 1"' '".listen --count 1"'                   # the positional left out
mutate '".refresh analytics.daily_user_metrics --concurrently"' '".refres analytics.daily_user_metrics --concurrently"' # another command
cmp -s shell.c "$tmp/m.c" && fail "no mutation applied"
$CC $STRICT -O0 $PQ_CFLAGS -I"$top" -o "$tmp/mpgpipe" "$tmp/m.c" "$top/pgpipe.c" $PQ_LIBS -lpthread -lm \
    >"$tmp/cc.log" 2>&1 || fail "the mutated shell does not compile: $(head -20 "$tmp/cc.log")"
(cd "$tmp/cwd" && "$tmp/mpgpipe" ".help --check-examples") >"$tmp/out" 2>"$tmp/err" &&
    fail "the check passed with broken rows: $(cat "$tmp/out")"
[ -s "$tmp/out" ] && fail "the failing check printed a summary: $(cat "$tmp/out")"
expect() { grep -qxF -- "error: $1" "$tmp/err" || fail "expected the line 'error: $1' in:
$(cat "$tmp/err")"; }
expect '.work --workers: example ".work --mark --workers four" fails: .work: --workers: expected an integer from 1 to 256, got "four"'
expect '.top --interval: no example'
expect '.install --example: example ".install" does not give --example'
expect '.export --format: example ".export "SELECT * FROM analytics.daily_user_metrics" metrics.ndjson --format xml" fails: .export: --format: expected csv or ndjson, got "xml"'
expect '.dlq list --stage: example ".dlq counts --stage process" is a line of .dlq counts, whose options are not these'
expect ".pull --token-file: example \".pull https://api.example.com/v1/contacts --source crm --token-file ''\" fails: .pull: --token-file: cannot open \"\": empty file name"
expect '.records find --limit: example ".records users find --limit ten name like "A%"" fails: .records find: --limit: expected a non-negative integer, got "ten"'
expect '.listen --count: example ".listen --count 1" fails: .listen: missing CHANNEL (usage: .listen CHANNEL; .help listen)'
expect '.refresh --concurrently: example ".refres analytics.daily_user_metrics --concurrently" fails: it is not a line of .refresh'
[ "$(wc -l <"$tmp/err")" = 9 ] || fail "expected 9 failing rows, got:
$(cat "$tmp/err")"
[ -z "$(ls -A "$tmp/cwd")" ] || fail "the failing check made files: $(ls -A "$tmp/cwd")"
# the unbroken rows of the same commands still pass alone
"$tmp/mpgpipe" ".help --check-examples serve" >/dev/null 2>&1 || fail "the check of .serve failed in the copy"
# a row added without the example field does not even compile
cp shell.c "$tmp/m.c"
mutate '    { "--quiet", NULL, OPT_FLAG,' '    { "--loud", NULL, OPT_FLAG, NULL, 0, 0, NULL, "print more" },
    { "--quiet", NULL, OPT_FLAG,'
LC_ALL=C $CC $STRICT -O0 $PQ_CFLAGS -I"$top" -fsyntax-only "$tmp/m.c" >"$tmp/cc.log" 2>&1 &&
    fail "a row without an example compiled"
# (gcc: missing initializer for field 'ex'; clang: missing field 'ex' initializer)
grep "missing.*initializer" "$tmp/cc.log" | grep -q "'ex'" ||
    fail "not refused for the missing example: $(head -5 "$tmp/cc.log")"
echo "broken rows: each reported by the check, a row without the field refused by the compiler"

rm -rf "$tmp"
echo "shell_help ok"
