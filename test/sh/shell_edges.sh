#!/bin/sh
# The shell at its edges, as a hostile or careless user meets them (each
# case was a defect found by probing): quoting of :'name' that holds a
# backslash, ON_ERROR_STOP's values, a NUL byte in a script, a directory as a
# script, \if levels across \i, self-inclusion, \d with an empty pattern,
# quoted words of backslash commands, \gset with several statements, COPY TO
# STDOUT, output that cannot be written, \watch's interval, -1 with commands
# that commit on their own.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_edges.XXXXXX")
chmod 755 "$tmp"
need_pgpipe
export PGPIPE_RC=/nonexistent
Q() { $P "$D" -X -q "$@"; }

# :'name' holding a backslash stays one literal whatever
# standard_conforming_strings is (it used to end the literal early: injection)
v="\\' as v, current_user as injected --"
out=$(Q -tA -v "x=$v" -c "SET standard_conforming_strings = off" -c "SELECT :'x' AS v" 2>&1) || fail "scs off: $out"
same "$out" "$v" ":'x' with standard_conforming_strings off"
out=$(Q -tA -v 'x=a\b' -c "SELECT :'x' || '|' || length(:'x')" 2>&1) || fail "scs on: $out"
same "$out" 'a\b|3' ":'x' with a backslash"

# ON_ERROR_STOP: a typo is refused (not taken as off); empty is on, as psql
printf 'SELECT 1/0;\nSELECT 7 AS still_ran;\n' >"$tmp/err.sql"
out=$(Q -v ON_ERROR_STOP=ture -f "$tmp/err.sql" 2>&1); rc=$?
[ $rc = 2 ] || fail "ON_ERROR_STOP=ture: exit $rc"
has "$out" 'unrecognized value "ture" for "ON_ERROR_STOP": Boolean expected'
hasnt "$out" "still_ran"
out=$(Q -v ON_ERROR_STOP= -f "$tmp/err.sql" 2>&1); rc=$?
[ $rc = 3 ] || fail "ON_ERROR_STOP empty: exit $rc ($out)"
hasnt "$out" "still_ran"
printf '\\set ON_ERROR_STOP\nSELECT 1/0;\nSELECT 7 AS still_ran;\n' >"$tmp/err2.sql"
out=$(Q -f "$tmp/err2.sql" 2>&1); rc=$?
[ $rc = 3 ] || fail "\\set ON_ERROR_STOP: exit $rc ($out)"
printf '\\set ON_ERROR_STOP maybe\nSELECT 7 AS still_ran;\n' >"$tmp/err3.sql"
out=$(Q -f "$tmp/err3.sql" 2>&1); rc=$?
[ $rc = 1 ] || fail "\\set ON_ERROR_STOP maybe: exit $rc ($out)"
has "$out" 'unrecognized value "maybe"'

# a NUL byte in a script: an error naming the line, and the script stops (the
# statement would have run cut short: a DELETE without its WHERE)
Q -c "DROP TABLE IF EXISTS edge_nul; CREATE TABLE edge_nul (x int); INSERT INTO edge_nul VALUES (1), (2)" || fail "nul table"
printf 'SELECT 1;\nDELETE FROM edge_nul \000WHERE x = 1;\nSELECT 2;\n' >"$tmp/nul.sql"
out=$(Q -f "$tmp/nul.sql" 2>&1); rc=$?
[ $rc = 1 ] || fail "NUL byte: exit $rc"
has "$out" "nul.sql:2: error: a NUL byte at column 22: a script is text; it stops here"
same "$(Q -tA -c "SELECT count(*) FROM edge_nul")" 2 "rows after the NUL script"

# a directory as a script is an error, not an empty script
out=$(Q -f "$tmp" 2>&1); rc=$?
[ $rc = 1 ] || fail "-f DIR: exit $rc ($out)"
has "$out" "Is a directory"
printf '\\i %s\n' "$tmp" >"$tmp/incdir.sql"
out=$(Q -f "$tmp/incdir.sql" 2>&1) && fail "\\i DIR exited 0"
has "$out" "Is a directory"

# \if: \else twice, \elif after \else; an included file's \else is not the
# caller's
printf '\\if true\n\\echo one\n\\else\n\\echo two\n\\else\n\\echo three\n\\endif\n' >"$tmp/else2.sql"
out=$(Q -f "$tmp/else2.sql" 2>&1) && fail "two \\else exited 0"
has "$out" '\else: cannot occur after \else'
printf '\\if false\n\\else\n\\elif true\n\\echo x\n\\endif\n' >"$tmp/elif.sql"
out=$(Q -f "$tmp/elif.sql" 2>&1) && fail "\\elif after \\else exited 0"
has "$out" '\elif: cannot occur after \else'
printf '\\else\n\\echo inc\n' >"$tmp/inc.sql"
printf '\\if true\n\\i %s\n\\echo mid\n\\endif\n\\echo after\n' "$tmp/inc.sql" >"$tmp/caller.sql"
out=$(Q -f "$tmp/caller.sql" 2>&1) && fail "a stray \\else in an include exited 0"
has "$out" '\else: no matching \if'
has "$out" "inc"
has "$out" "mid"
has "$out" "after"

# a script that reads itself ends with an error, not a crash
printf 'SELECT 1 AS once;\n\\i %s\n' "$tmp/self.sql" >"$tmp/self.sql"
out=$(Q -tA -f "$tmp/self.sql" 2>&1); rc=$?
[ $rc = 1 ] || fail "self-inclusion: exit $rc"
has "$out" "scripts read 64 deep (a script that reads itself?)"

# \d with an empty pattern is refused ('' is never "every relation")
out=$(Q -c "\\d ''" 2>&1) && fail "\\d '' exited 0"
has "$out" "the pattern is empty"

# quoted words of backslash commands as psql reads them
out=$(Q -c "\\set x 'it''s'" -c "\\echo :x" -c "\\echo 'a\\\\b' 'x'y" 2>&1) || fail "quotes: $out"
same "$out" "it's
a\\b xy" "backslash command words"

# \gset after several statements takes the last one's row; the others print
printf 'SELECT 1 AS a; SELECT 2 AS b \\gset\n\\echo a=:a b=:b\n' >"$tmp/gset.sql"
out=$(Q -f "$tmp/gset.sql" 2>&1) || fail "gset: $out"
has "$out" "a=:a b=2"
has "$out" " 1"
out=$(Q -c 'SELECT 1 AS "x y" \gset' 2>&1) && fail "\\gset of a bad name exited 0"
has "$out" 'invalid variable name: "x y"'

# COPY ... TO STDOUT writes its rows (the statement ran: they are not lost)
out=$(Q -c "COPY (SELECT g, 'v' || g FROM generate_series(1, 3) g) TO STDOUT" 2>&1) || fail "copy out: $out"
same "$out" "1	v1
2	v2
3	v3" "COPY TO STDOUT"

# output that cannot be written is an error; a pipe whose reader went away is
# said and the script goes on
out=$(Q -c "SELECT 1" 2>&1 >/dev/full) && fail "/dev/full exited 0"
has "$out" "could not write the output: No space left on device"
out=$(Q -c '\o |head -1' -c "SELECT generate_series(1, 100000)" -c '\o' -c "SELECT 'after' AS a" 2>&1); rc=$?
[ $rc = 1 ] || fail "broken \\o pipe: exit $rc ($out)"
has "$out" "could not write the output: Broken pipe"
has "$out" "after"

# \watch's interval: a number of seconds, not nan or inf
for v in nan inf -1 1e9; do
    out=$(Q -c "SELECT 1 \\watch $v" 2>&1) && fail "\\watch $v exited 0"
    has "$out" "expected seconds"
done

# -1 refuses the commands that commit on their own (part of the script would
# stay when the rest is rolled back)
Q -c "DROP TABLE IF EXISTS edge_one; CREATE TABLE edge_one (x int)" || fail "one table"
printf 'x\n5\n' >"$tmp/one.csv"
out=$(Q -1 -v ON_ERROR_STOP=1 -c "INSERT INTO edge_one VALUES (1)" -c ".load $tmp/one.csv --table edge_one --map x=x" 2>&1); rc=$?
[ $rc = 3 ] || fail "-1 .load: exit $rc ($out)"
has "$out" ".load commits on its own, so it cannot be part of -1's one transaction"
same "$(Q -tA -c "SELECT count(*) FROM edge_one")" 0 "rows after -1 with .load"

# a failed .records create or .import leaves no new table
Q -c "DROP TABLE IF EXISTS records.edge_rec, edge_imp" 2>/dev/null
out=$(Q -c '.records edge_rec create {"a":' 2>&1) && fail "bad JSON create exited 0"
same "$(Q -tA -c "SELECT to_regclass('records.edge_rec') IS NULL")" t "collection after a bad create"
printf 'a,b\n1,2,3\n' >"$tmp/bad.csv"
out=$(Q -c ".import $tmp/bad.csv edge_imp" 2>&1) && fail "bad .import exited 0"
same "$(Q -tA -c "SELECT to_regclass('edge_imp') IS NULL")" t "table after a failed .import"

# a \c that fails stops a script (exit 2): it must not go on against the
# database it was already on
printf '\\c edge_no_such_db\nSELECT 7 AS not_run;\n' >"$tmp/c.sql"
out=$(Q -f "$tmp/c.sql" 2>&1); rc=$?
[ $rc = 2 ] || fail "failed \\c: exit $rc ($out)"
hasnt "$out" "not_run"

# wide characters keep aligned output aligned
out=$(Q -c "SELECT '日本' AS a, 1 AS b UNION ALL SELECT 'abcd', 2" 2>&1) || fail "wide: $out"
has "$out" " 日本 | 1"
has "$out" " abcd | 2"

# a known backslash command with the wrong arguments is not "invalid"
out=$(Q -c '\o a b' 2>&1) && fail "\\o a b exited 0"
has "$out" '\o: does not take 2 arguments'

echo "shell edges ok"
