#!/bin/sh
# psql's habits on the command line and in scripts (issue 26): -c in order,
# -f, -1, -t, -A, -F/-R, -X and ~/.pgpipe_rc, -v, -e, -q, a bare database
# name, -l, psql's exit statuses (0 ok, 1 error, 2 connection bad, 3 a script
# stopped by ON_ERROR_STOP); command tags and (N rows); \x, \pset, \o,
# .output, .once, \timing; :name, :'name', :"name" (never inside quotes or
# dollar quotes), \set, \unset, \echo, \if/\elif/\else/\endif, \g, \gx,
# \gset, \watch (bounded), \encoding, the backslash form of a dot command,
# and a clear error for an unknown backslash command.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_psql.XXXXXX")
need_pgpipe
# a developer's own rc file never applies here
export HOME=$tmp
unset PGPIPE_RC PSQL_PAGER PAGER 2>/dev/null

$P "$D" -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS shell_psql" \
    -c "CREATE DATABASE shell_psql" || fail "setup"
DB="$D dbname=shell_psql"
# the same server through PG* variables, for the bare database name
for kv in $D; do
    case $kv in host=*) PGHOST=${kv#host=}; export PGHOST ;; port=*) PGPORT=${kv#port=}; export PGPORT ;;
                user=*) PGUSER=${kv#user=}; export PGUSER ;; esac
done

# ---- -c in order, command tags, (N rows) ------------------------------------
out=$($P "$DB" -c "CREATE TABLE p (id int PRIMARY KEY, name text, note text)" \
      -c "INSERT INTO p VALUES (1, 'a', NULL), (2, 'b', NULL), (3, E'x\ny', 'n')" \
      -c "UPDATE p SET name = name WHERE id < 3" -c "DELETE FROM p WHERE id = 2" \
      -c "SELECT count(*) AS n FROM p") || fail "-c: exit $?"
same "$out" "CREATE TABLE
INSERT 0 3
UPDATE 2
DELETE 1
 n
---
 2
(1 row)" "-c in order with tags"
printf 'CREATE TABLE c (v int);\nCOPY c FROM stdin;\n1\n2\n3\n\\.\n' > "$tmp/copy.sql"
out=$($P "$DB" -f "$tmp/copy.sql") || fail "COPY: exit $?"
has "$out" "COPY 3"
# multi-line values as psql aligns them: '+' where a value goes on
out=$($P "$DB" -c "SELECT id, name FROM p WHERE id = 3")
same "$out" " id | name
----+------
  3 | x   +
    | y   
(1 row)" "multi-line value"

# ---- -t -A -F -R, -e, -q ----------------------------------------------------
same "$($P -tA -F, "$DB" -c "SELECT 1 AS a, 'b' AS b")" "1,b" "-tA -F,"
same "$($P -A "$DB" -c "SELECT 1 AS a, 'b' AS b")" "a|b
1|b
(1 row)" "-A"
same "$($P -t "$DB" -c "SELECT 7 AS abc")" "   7" "-t"
same "$($P -At -R ';' "$DB" -c "SELECT g FROM generate_series(1, 3) g")" "1;2;3;" "-R"
same "$($P -e -tA "$DB" -c "SELECT 5")" "SELECT 5
5" "-e"
same "$($P -q "$DB" -c "UPDATE p SET note = note")" "" "-q hides the tag"

# ---- a bare database name, -d, -l ----------------------------------------------
same "$($P -tA shell_psql -c "SELECT current_database()")" "shell_psql" "bare database name"
same "$($P -tA -c "SELECT current_database()" shell_psql)" "shell_psql" "database name after -c"
same "$($P -tA -d shell_psql -c "SELECT current_database()")" "shell_psql" "-d"
out=$($P -l "$D") || fail "-l: exit $?"
has "$out" "List of databases"
has "$out" " shell_psql "

# ---- the rc file and -X ---------------------------------------------------------
printf '\\set rcv from_rc\n' > "$tmp/.pgpipe_rc"
same "$($P "$DB" -c '\echo :rcv')" "from_rc" "rc file"
same "$($P -X "$DB" -c '\echo :rcv')" ":rcv" "-X skips the rc file"
rm "$tmp/.pgpipe_rc"

# ---- -v and :name, :'name', :"name" ----------------------------------------------
out=$($P "$DB" -tA -v id=1 -v col=name -v "txt=it's" -c 'SELECT :"col" FROM p WHERE id = :id' \
      -c "SELECT :'txt'" -c "SELECT ':id', \$\$:id\$\$, '2'::int -- :id") || fail "-v: exit $?"
same "$out" "a
it's
:id|:id|2" "variables"
# a name no :NAME could refer to is refused, as psql refuses it
$P "$DB" -v 'a b=1' -c 'SELECT 1' >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 2 ] || fail "-v 'a b=1': exit $rc"
has "$(cat "$tmp/err")" 'invalid variable name: "a b"'
out=$($P "$DB" -c '\set a-b 1' 2>&1) && fail "\\set a-b accepted: $out"
has "$out" 'invalid variable name: "a-b"'
$P --local '' -c 'SELECT 1' >/dev/null 2>"$tmp/err"; rc=$?
[ $rc = 2 ] || fail "--local '': exit $rc"
has "$(cat "$tmp/err")" "--local: needs a directory"

# ---- -1 and the exit statuses ---------------------------------------------------------
same "$($P -1 -qtA "$DB" -c "CREATE TEMP TABLE tt (x int) ON COMMIT DROP" -c "INSERT INTO tt VALUES (1)" \
      -c "SELECT count(*) FROM tt")" "1" "-1: one transaction"
printf 'INSERT INTO p VALUES (10);\nINSERT INTO p VALUES (10);\nINSERT INTO p VALUES (11);\n' > "$tmp/dup.sql"
$P -1 -v ON_ERROR_STOP=1 "$DB" -f "$tmp/dup.sql" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 3 ] || fail "-1 ON_ERROR_STOP: exit $rc: $(cat "$tmp/err")"
same "$($P -tA "$DB" -c "SELECT count(*) FROM p WHERE id >= 10")" "0" "-1 rolled back"
$P "$DB" -f "$tmp/dup.sql" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 1 ] || fail "script error: exit $rc"
same "$($P -tA "$DB" -c "SELECT count(*) FROM p WHERE id >= 10")" "2" "without ON_ERROR_STOP the script goes on"
printf '\\set ON_ERROR_STOP on\nSELEC 1;\nSELECT 99;\n' > "$tmp/stop.sql"
$P "$DB" -f "$tmp/stop.sql" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 3 ] || fail "\\set ON_ERROR_STOP: exit $rc"
grep -q 99 "$tmp/out" && fail "ON_ERROR_STOP did not stop"
$P "host=$tmp/nowhere" -c "SELECT 1" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 2 ] || fail "connection bad: exit $rc"

# ---- \x, \pset, \o, .output, .once, \timing ------------------------------------------
out=$($P "$DB" -c '\x' -c "SELECT 1 AS a, 'long' AS bb")
same "$out" "Expanded display is on.
-[ RECORD 1 ]
a  | 1
bb | long" "\\x"
out=$($P "$DB" -c '\pset null (null)' -c '\pset border 2' -c "SELECT NULL AS n")
same "$out" 'Null display is "(null)".
Border style is 2.
+--------+
|   n    |
+--------+
| (null) |
+--------+
(1 row)' "\\pset null, border 2"
out=$($P "$DB" -c '\pset format unaligned' -c '\pset fieldsep ;' -c "SELECT 1 AS a, 2 AS b")
has "$out" "a;b
1;2"
out=$($P "$DB" -c "\\o $tmp/o.txt" -c "SELECT 42 AS answer" -c '\o' -c "SELECT 7 AS seven")
has "$out" " 7"
hasnt "$out" "42"
has "$(cat "$tmp/o.txt")" " 42"
out=$($P "$DB" -c ".once $tmp/once.txt" -c "SELECT 'first' AS f" -c "SELECT 'second' AS s" \
      -c ".output $tmp/out.txt" -c "SELECT 'third' AS t" -c ".output" -c "SELECT 'fourth' AS x")
has "$(cat "$tmp/once.txt")" "first"
hasnt "$(cat "$tmp/once.txt")" "second"
has "$(cat "$tmp/out.txt")" "third"
has "$out" "second"
has "$out" "fourth"
hasnt "$out" "first"
out=$($P "$DB" -c '\o |tr a-z A-Z' -c "SELECT 'hello' AS greet" -c '\o' \
      -c "SELECT 'after' AS x \\g |tr a-z A-Z" -c "SELECT 'plain' AS y")
has "$out" " HELLO"
has "$out" " AFTER"
has "$out" " plain"
has "$($P "$DB" -c '\timing on' -c "SELECT 1")" "Time: "
# an empty file name (a script's unset variable) is no file and not stdout either
for c in ".output ''" ".once ''" "\\o ''" "SELECT 1 \\g ''"; do
    err=$($P "$DB" -c "$c" 2>&1) && fail "$c accepted: $err"
    has "$err" "the file name is empty"
done
err=$($P "$DB" -c '\g' 2>&1) && fail "\\g with no query before it exited 0: $err"
has "$err" "no query to run"

# ---- variables and \if in a script; \g \gx \gset \echo \encoding \watch -------------
cat > "$tmp/script.sql" <<'SQL'
\set name p
\set greeting 'hello world'
SELECT count(*) AS n, count(*) > 0 AS some FROM :name \gset
\echo rows: :n
\if :some
  \echo branch one
\elif true
  \echo wrong
\else
  \echo wrong too
\endif
\if false
  SELEC this is skipped;
\elif yes
  \echo elif taken
\endif
\unset n
\echo after unset: :n
SELECT :'greeting' AS g
\g
SELECT 'x' AS xx \gx
\encoding
SELECT 'w' AS w \watch 0.01 c=2
\version
\frobnicate
SQL
$P "$DB" -f "$tmp/script.sql" >"$tmp/out" 2>"$tmp/err"; rc=$?
[ $rc = 1 ] || fail "script: exit $rc (the unknown command fails it): $(cat "$tmp/err")"
out=$(cat "$tmp/out")
has "$out" "rows: 4"
has "$out" "branch one"
hasnt "$out" "wrong"
has "$out" "elif taken"
has "$out" "after unset: :n"
has "$out" " hello world"
has "$out" "-[ RECORD 1 ]
xx | x"
has "$out" "UTF8"
[ "$(grep -c '(every 0.01s)' "$tmp/out")" = 2 ] || fail "\\watch c=2: $out"
has "$out" ", libpq "
err=$(cat "$tmp/err")
has "$err" "script.sql:25: error: invalid command \\frobnicate"
[ "$(grep -c error "$tmp/err")" = 1 ] || fail "errors: $err"
# an \if left open is an error
printf '\\if true\nSELECT 1;\n' | $P "$DB" >/dev/null 2>"$tmp/err" && fail "open \\if accepted"
has "$(cat "$tmp/err")" "\\if without \\endif"

# \copy: a file, PROGRAM, STDIN (a script's next lines up to \.; with -c the
# shell's standard input), PSTDIN, STDOUT; the options go to the server; a
# quoted name; a (QUERY) with a ) in a string; a failing program commits nothing
$P -q "$DB" -c 'CREATE TABLE "Copy T" (id int, name text)' || fail "copy table"
printf 'id,name\n1,a\n2,"b, c"\n' >"$tmp/in.csv"
out=$($P "$DB" "\\copy \"Copy T\" from '$tmp/in.csv' with (format csv, header)") || fail "\\copy from: $out"
same "$out" "COPY 2" "\\copy FROM a file"
$P -q "$DB" "\\copy \"Copy T\" (id, name) FROM $tmp/in.csv CSV HEADER;" || fail "\\copy old-style options"
printf '\\copy "Copy T" from stdin\n3\tx\n4\ty\n\\.\n\\copy "Copy T" from stdin with (format csv)\n5,"two\nlines"\n\\.\nSELECT count(*) AS n FROM "Copy T";\n' >"$tmp/copy.sql"
out=$($P -tA "$DB" -f "$tmp/copy.sql") || fail "\\copy from stdin in a script: $out"
same "$(printf '%s\n' "$out" | tail -1)" "7" "\\copy FROM STDIN in a script"
printf '6\tp\n' | $P -q "$DB" -c '\copy "Copy T" from stdin' || fail "\\copy from stdin with -c"
printf '7\tq\n' | $P -q "$DB" -c '\copy "Copy T" from pstdin' || fail "\\copy from pstdin"
$P -q "$DB" "\\copy \"Copy T\" from program 'printf \"8\\\\tr\\\\n\"'" || fail "\\copy from program"
$P -q "$DB" "\\copy \"Copy T\" from program 'printf \"9\\\\ts\\\\n\"; exit 3'" 2>"$tmp/err" &&
    fail "a failing program's \\copy succeeded"
has "$(cat "$tmp/err")" "the program failed (exit status 3)"
out=$($P -q "$DB" "\\copy (SELECT ')' AS x, id FROM \"Copy T\" WHERE id IN (5, 8) ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)")
same "$out" 'x,id
),5
),8' "\\copy (QUERY) TO STDOUT"
$P -q "$DB" "\\copy \"Copy T\" to '$tmp/out.txt'" || fail "\\copy to a file"
same "$(wc -l <"$tmp/out.txt" | tr -d ' ')" "10" "\\copy TO a file (not the failed program's row)"
# as psql: no :variables in \copy's line
$P -q "$DB" -c '\set x 5' -c "\\copy (SELECT 1) to '$tmp/:x.out'" || fail "\\copy with a colon"
[ -f "$tmp/:x.out" ] || fail "\\copy interpolated :x in its file name"
$P "$DB" "\\copy \"Copy T\" from $tmp" 2>"$tmp/err" && fail "\\copy from a directory"
has "$(cat "$tmp/err")" "Is a directory"
$P "$DB" '\copy "Copy T"' 2>"$tmp/err" && fail "\\copy without FROM/TO"
has "$(cat "$tmp/err")" 'expected FROM or TO'
$P "$DB" "\\copy \"Copy T\" from '$tmp/nope" 2>"$tmp/err" && fail "\\copy with an open quote"
has "$(cat "$tmp/err")" 'a quote is not closed'

# AUTOCOMMIT off: a BEGIN before the first statement (none before VACUUM);
# ON_ERROR_ROLLBACK on: a failed statement does not fail the transaction
$P -q "$DB" -c "CREATE TABLE ac (id int)" || fail "ac table"
printf '%s\n' '\set AUTOCOMMIT off' 'INSERT INTO ac VALUES (1);' 'ROLLBACK;' 'INSERT INTO ac VALUES (2);' \
    'COMMIT;' 'VACUUM ac;' '\set ON_ERROR_ROLLBACK on' 'INSERT INTO ac VALUES (3);' 'SELECT 1/0;' \
    'INSERT INTO ac VALUES (4);' 'COMMIT;' 'INSERT INTO ac VALUES (5);' >"$tmp/ac.sql"
$P -q "$DB" -f "$tmp/ac.sql" >"$tmp/out" 2>"$tmp/err" && fail "the division by zero was not an error"
has "$(cat "$tmp/err")" "division by zero"
hasnt "$(cat "$tmp/err")" "VACUUM cannot run inside a transaction block"
same "$($P -tA "$DB" "SELECT string_agg(id::text, ',' ORDER BY id) FROM ac")" "2,3,4" \
    "AUTOCOMMIT off / ON_ERROR_ROLLBACK (5: not committed at the end of the script)"
$P "$DB" -c '\set AUTOCOMMIT perhaps' 2>"$tmp/err"
has "$(cat "$tmp/err")" 'unrecognized value "perhaps" for "AUTOCOMMIT"'

# psql's status and connection variables: ERROR, SQLSTATE, ROW_COUNT,
# LAST_ERROR_MESSAGE, LAST_ERROR_SQLSTATE; DBNAME, USER, SERVER_VERSION_NUM
out=$($P -q "$DB" -c 'SELECT 1/0' -c '\echo :ERROR :SQLSTATE :ROW_COUNT :LAST_ERROR_MESSAGE' \
    -c 'SELECT generate_series(1, 3)' -c '\echo :ERROR :SQLSTATE :ROW_COUNT :LAST_ERROR_SQLSTATE' \
    -c '\echo :DBNAME :SERVER_VERSION_NUM' 2>/dev/null)
has "$out" "true 22012 0 division by zero"
has "$out" "false 00000 3 22012"
has "$out" "shell_psql $($P -tA "$DB" -c 'SHOW server_version_num')"
printf '%s\n' 'SELECT 1/0;' '\if :ERROR' '\echo failed as expected' '\endif' >"$tmp/err.sql"
has "$($P -q "$DB" -f "$tmp/err.sql" 2>/dev/null)" "failed as expected"

# \dp / \z (privileges, column privileges, policies), \dT, \dD
$P -q "$DB" -c "CREATE DOMAIN pos_int AS int NOT NULL CHECK (VALUE > 0)" \
    -c "CREATE TYPE feeling AS ENUM ('ok', 'meh')" -c 'GRANT SELECT ON "Copy T" TO PUBLIC' \
    -c 'GRANT UPDATE (name) ON "Copy T" TO PUBLIC' -c 'CREATE POLICY own ON "Copy T" FOR SELECT USING (true)' ||
    fail "describe setup"
out=$($P "$DB" '\dp "Copy T"') || fail "\\dp: $out"
has "$out" "Access privileges"
has "$out" "=r/"
has "$out" "=w/"
has "$out" "own (r)"
same "$($P "$DB" '\z "Copy T"')" "$out" "\\z is \\dp"
has "$($P "$DB" '\dt "Copy T"')" "Copy T"
has "$($P "$DB" '\d public."Copy T"')" 'Table "public.Copy T"'

out=$($P "$DB" '\dT') || fail "\\dT"
has "$out" "feeling"
has "$out" "pos_int"
hasnt "$out" "Copy T"
out=$($P "$DB" '\dD') || fail "\\dD"
has "$out" "CHECK (VALUE > 0)"
has "$out" "not null"

# \cd, \setenv, \getenv
out=$($P -q "$DB" -c "\\cd $tmp" -c '\! pwd' -c '\setenv PGPIPE_T1 "a b"' -c '\getenv v PGPIPE_T1' \
    -c '\echo :v' -c '\setenv PGPIPE_T1' -c '\! echo "[${PGPIPE_T1:-unset}]"')
same "$out" "$(cd "$tmp" && pwd -P)
a b
[unset]" "\\cd, \\setenv, \\getenv"
$P "$DB" "\\cd $tmp/nope" 2>"$tmp/err" && fail "\\cd to no directory"
has "$(cat "$tmp/err")" "could not change directory"

# \gdesc (nothing runs), \sf[+], \! (127: failed)
out=$($P "$DB" "INSERT INTO \"Copy T\" VALUES (100, 'no') RETURNING id, name::varchar(5) AS nm \\gdesc") ||
    fail "\\gdesc: $out"
has "$out" "character varying(5)"
same "$($P -tA "$DB" "SELECT count(*) FROM \"Copy T\" WHERE id = 100")" "0" "\\gdesc ran the statement"
$P -q "$DB" -c 'CREATE FUNCTION add2(a int, b int) RETURNS int LANGUAGE sql AS $$ SELECT a + b $$' ||
    fail "function"
has "$($P "$DB" '\sf add2')" "CREATE OR REPLACE FUNCTION public.add2(a integer, b integer)"
has "$($P "$DB" '\sf+ add2(int, int)')" '1       AS $function$ SELECT a + b $function$'
$P "$DB" '\sf no_such_fn' 2>"$tmp/err" && fail "\\sf of no function"
has "$(cat "$tmp/err")" 'function "no_such_fn" does not exist'
# \ef FUNCTION: its CREATE statement edited in the buffer, run by the ; after it
printf '#!/bin/sh\nsed "s/a + b/a + b + 100/" "$1" > "$1.new" && mv "$1.new" "$1"\n' >"$tmp/editor"
chmod +x "$tmp/editor"
printf '\\ef add2(int, int)\n;\nSELECT add2(1, 2) AS r;\n' >"$tmp/ef.sql"
out=$(EDITOR=$tmp/editor $P -tA "$DB" -f "$tmp/ef.sql") || fail "\\ef: $out"
same "$(printf '%s\n' "$out" | tail -1)" "103" "\\ef"
$P "$DB" '\ef add2' 2>"$tmp/err" && fail "\\ef with -c"
has "$(cat "$tmp/err")" '\ef: only at the prompt or in a script'
same "$($P "$DB" '\! echo from a shell')" "from a shell" "\\!"
$P "$DB" '\! no-such-command-xyz' 2>"$tmp/err" && fail "\\! of no command succeeded"
has "$(cat "$tmp/err")" '\!: command failed'
$P "$D" -q -c "DROP DATABASE shell_psql" || fail "cleanup"
echo "psql habits ok"
