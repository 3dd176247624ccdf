#!/bin/sh
# sqlite3's habits (issue 26): .tables, .schema [PATTERN], .indexes,
# .headers on|off, .nullvalue, .mode box|markdown|table|insert, .once FILE,
# .changes on, .import FILE TABLE (the table made from the CSV header when
# missing, columns mapped by header name, --map when names differ) and
# .dump [TABLE] (data-only INSERTs that load back to the same rows).
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_sqlite.XXXXXX")
need_pgpipe
export HOME=$tmp
$P "$D" -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS shell_sqlite" \
    -c "CREATE DATABASE shell_sqlite" || fail "setup"
DB="$D dbname=shell_sqlite"
$P -q "$DB" -f - <<'SQL' || fail "schema"
CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric, seen boolean,
                    twice int GENERATED ALWAYS AS (id * 2) STORED);
CREATE INDEX items_name_idx ON items (name);
INSERT INTO items (id, name, price, seen) VALUES (1, 'pen', 1.5, true), (2, 'it''s', NULL, false),
    (3, E'two\nlines', 'NaN', NULL);
CREATE VIEW cheap AS SELECT id FROM items WHERE price < 2;
CREATE SCHEMA side;
CREATE TABLE side.other (k text);
SQL

same "$($P "$DB" .tables)" "cheap       items       side.other" ".tables"
same "$($P "$DB" ".tables it%")" "items" ".tables PATTERN"
same "$($P "$DB" .indexes)" "items_name_idx  items_pkey" ".indexes"
same "$($P "$DB" ".indexes side.%")" "" ".indexes TABLE (a table without indexes)"
same "$($P "$DB" ".indexes ite%")" "items_name_idx  items_pkey" ".indexes TABLE"
same "$($P "$DB" ".tables side.o%")" "side.other" ".tables SCHEMA.PATTERN"
# a pattern is a literal, never SQL
same "$($P "$DB" ".tables \"x' OR true --\"")" "" ".tables with a quote in the pattern"
for c in .tables .schema .indexes; do
    err=$($P "$DB" "$c ''" 2>&1) && fail "$c '' accepted: $err"
    has "$err" "$c: the pattern is empty"
done
out=$($P "$DB" ".schema items")
has "$out" "CREATE TABLE items (
    id integer NOT NULL,
    name text NOT NULL,
    price numeric,
    seen boolean,
    twice integer GENERATED ALWAYS AS ((id * 2)) STORED,
    CONSTRAINT items_pkey PRIMARY KEY (id)
);
CREATE INDEX items_name_idx ON public.items USING btree (name);"
has "$($P "$DB" .schema)" "CREATE VIEW cheap AS"

out=$($P "$DB" ".mode box" "SELECT id, name FROM items WHERE id = 1")
same "$out" "┌────┬──────┐
│ id │ name │
├────┼──────┤
│  1 │ pen  │
└────┴──────┘" ".mode box"
out=$($P "$DB" ".mode markdown" "SELECT id, name FROM items WHERE id = 1")
same "$out" "| id | name |
|----|------|
|  1 | pen  |" ".mode markdown"
out=$($P "$DB" ".mode table" ".headers off" "SELECT id, name FROM items WHERE id = 1")
same "$out" "+---+-----+
| 1 | pen |
+---+-----+" ".mode table, .headers off"
out=$($P "$DB" ".mode insert items" ".nullvalue -" "SELECT id, name, price FROM items WHERE id = 2")
same "$out" "INSERT INTO items VALUES(2,'it''s',NULL);" ".mode insert"
# a TABLE that SQL could not take as written is quoted (the output must run)
out=$($P "$DB" ".mode insert 'order items'" "SELECT 1 AS x")
same "$out" 'INSERT INTO "order items" VALUES(1);' ".mode insert with a blank"
out=$($P "$DB" ".mode insert 'x;DROP TABLE items'" "SELECT 1 AS x")
same "$out" 'INSERT INTO "x;DROP TABLE items" VALUES(1);' ".mode insert with a semicolon"
out=$($P "$DB" ".mode insert public.items" "SELECT 1 AS x")
same "$out" 'INSERT INTO public.items VALUES(1);' ".mode insert schema.table"
out=$($P "$DB" ".nullvalue (none)" "SELECT price FROM items WHERE id = 2")
has "$out" " (none)"
out=$($P "$DB" ".changes on" "UPDATE items SET seen = seen" "DELETE FROM items WHERE id = 99")
has "$out" "changes: 3   total_changes: 3"
has "$out" "changes: 0   total_changes: 3"
out=$($P "$DB" ".once $tmp/once.txt" "SELECT 'a' AS x" "SELECT 'b' AS y")
hasnt "$out" " a"
has "$(cat "$tmp/once.txt")" " a"

# .import: a new table from the header; an existing one by header name
printf 'name,qty,"the note"\nbolt,3,"x, y"\nnut,,z\n' > "$tmp/parts.csv"
out=$($P "$DB" ".import $tmp/parts.csv parts") || fail ".import new: $out"
has "$out" "imported 2 rows into parts (created)"
same "$($P -tA "$DB" "SELECT name || '|' || coalesce(qty, 'NULL') || '|' || \"the note\" FROM parts ORDER BY 1")" "bolt|3|x, y
nut|NULL|z" ".import created"
$P -q "$DB" "CREATE TABLE stock (note text, qty int, id serial, name text)" || fail "stock"
$P "$DB" ".import $tmp/parts.csv stock" >"$tmp/out" 2>"$tmp/err" && fail "unknown header column accepted"
has "$(cat "$tmp/err")" '.import: stock has no column "the note"'
$P "$DB" ".import $tmp/parts.csv public." >"$tmp/out" 2>"$tmp/err" && fail "table public. accepted"
has "$(cat "$tmp/err")" '.import: TABLE "public.": invalid name syntax'
out=$($P "$DB" ".import $tmp/parts.csv stock --map 'the note=note'") || fail ".import --map: $out"
has "$out" "imported 2 rows into stock"
same "$($P -tA "$DB" "SELECT name, qty, note FROM stock ORDER BY id")" "bolt|3|x, y
nut||z" ".import by name"

# a spreadsheet's byte order mark is not part of the first name; a header of
# 800 columns (past what fixed buffers held) makes all 800
printf '\357\273\277name,qty\nbolt,3\n' >"$tmp/bom.csv"
$P -q "$DB" ".import $tmp/bom.csv bom_parts" || fail ".import with a BOM"
same "$($P -tA "$DB" "SELECT name || '|' || qty FROM bom_parts")" "bolt|3" ".import BOM"
awk 'BEGIN { for (i = 0; i < 800; i++) printf "%scolumn_with_a_long_name_%d", i ? "," : "", i;
             print ""; for (i = 0; i < 800; i++) printf "%s%d", i ? "," : "", i; print "" }' >"$tmp/wide.csv"
$P -q "$DB" ".import $tmp/wide.csv wide_parts" || fail ".import 800 columns"
same "$($P -tA "$DB" "SELECT column_with_a_long_name_0 || '|' || column_with_a_long_name_799 FROM wide_parts")" \
    "0|799" ".import 800 columns"

# .dump: INSERTs that give the same rows back
$P "$DB" ".dump items" > "$tmp/dump.sql" || fail ".dump"
has "$(cat "$tmp/dump.sql")" "INSERT INTO public.items VALUES (1, 'pen', 1.5, true, DEFAULT);"
has "$(cat "$tmp/dump.sql")" "INSERT INTO public.items VALUES (2, 'it''s', NULL, false, DEFAULT);"
has "$(cat "$tmp/dump.sql")" "'NaN'"
before=$($P -tA "$DB" "SELECT md5(string_agg(i::text, ',' ORDER BY id)) FROM items i")
$P -q "$DB" "TRUNCATE items" || fail "truncate"
$P -q "$DB" -v ON_ERROR_STOP=1 -f "$tmp/dump.sql" || fail "dump does not load back"
same "$($P -tA "$DB" "SELECT md5(string_agg(i::text, ',' ORDER BY id)) FROM items i")" "$before" ".dump round trip"
has "$($P "$DB" .dump)" "Data for side.other"
$P "$DB" ".dump nosuch" >/dev/null 2>&1 && fail ".dump of no table succeeded"

# .dump as pg_dump --data-only loads back: identity columns GENERATED ALWAYS
# (OVERRIDING SYSTEM VALUE), a parent of inheritance without its children's
# rows, tables in foreign-key order, the sequences' values; a FK cycle warned
$P -q "$D" -c "DROP DATABASE IF EXISTS shell_sqlite2" -c "CREATE DATABASE shell_sqlite2" || fail "db2"
DB2="$D dbname=shell_sqlite2"
$P -q "$DB" -f - <<'SQL' || fail "dump schema"
CREATE TABLE a_child (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, zref int);
CREATE TABLE z_parent (id serial PRIMARY KEY, v text);
ALTER TABLE a_child ADD FOREIGN KEY (zref) REFERENCES z_parent;
CREATE TABLE inh_base (x int);
CREATE TABLE inh_kid () INHERITS (inh_base);
CREATE SEQUENCE lone_seq;
INSERT INTO z_parent (v) VALUES ('p1'), ('p2');
INSERT INTO a_child (zref) VALUES (2), (1), (NULL);
INSERT INTO inh_base VALUES (1);
INSERT INTO inh_kid VALUES (2);
SELECT nextval('lone_seq') FROM generate_series(1, 5);
CREATE TABLE no_cols ();
INSERT INTO no_cols DEFAULT VALUES;
INSERT INTO no_cols DEFAULT VALUES;
SQL
pg_dump --schema-only -d "$DB" >"$tmp/schema2.sql" 2>"$tmp/err" || fail "pg_dump: $(cat "$tmp/err")"
$P -q "$DB2" -v ON_ERROR_STOP=1 -f "$tmp/schema2.sql" >/dev/null 2>"$tmp/err" ||
    fail "schema into db2: $(cat "$tmp/err")"
$P "$DB" .dump >"$tmp/dump2.sql" 2>"$tmp/err" || fail ".dump whole: $(cat "$tmp/err")"
has "$(cat "$tmp/dump2.sql")" "INSERT INTO public.a_child OVERRIDING SYSTEM VALUE VALUES (1, 2);"
has "$(cat "$tmp/dump2.sql")" "SELECT pg_catalog.setval('public.lone_seq', 5, true);"
hasnt "$(cat "$tmp/err")" "cycle"
$P -q "$DB2" -v ON_ERROR_STOP=1 -f "$tmp/dump2.sql" >/dev/null 2>"$tmp/err" ||
    fail ".dump does not load back: $(cat "$tmp/err")"
q="SELECT (SELECT string_agg(id || ':' || coalesce(zref::text, '-'), ',' ORDER BY id) FROM a_child)
    || ' ' || (SELECT string_agg(x::text, ',' ORDER BY x) FROM inh_base)
    || ' ' || (SELECT count(*) FROM ONLY inh_base) || ' ' || nextval('a_child_id_seq')
    || ' ' || nextval('z_parent_id_seq') || ' ' || nextval('lone_seq')
    || ' ' || (SELECT count(*) FROM no_cols)"
same "$($P -tA "$DB2" "$q")" "$($P -tA "$DB" "$q")" ".dump round trip, sequences"
same "$($P -tA "$DB2" "SELECT count(*) FROM ONLY inh_base")" "1" ".dump FROM ONLY"
$P -q "$DB" -c "ALTER TABLE z_parent ADD COLUMN cref int" \
    -c "ALTER TABLE z_parent ADD FOREIGN KEY (cref) REFERENCES a_child" || fail "cycle"
$P "$DB" ".dump %_%" >/dev/null 2>"$tmp/err" || fail ".dump with a cycle failed"
has "$(cat "$tmp/err")" "refer to each other in a cycle of foreign keys"
# \restrict KEY (pg_dump's plain dumps): only SQL runs until \unrestrict KEY
printf '%s\n' '\restrict k3Y' 'SELECT 41 + 1 AS answer;' '\! echo escaped' \
    ".output $tmp/nope" '\if true' '\endif' '\unrestrict wrong' '\unrestrict k3Y' \
    '\echo free again' >"$tmp/restrict.sql"
$P "$D" -f "$tmp/restrict.sql" >"$tmp/out" 2>"$tmp/err" && fail "restricted commands ran"
has "$(cat "$tmp/out")" "42"
has "$(cat "$tmp/out")" "free again"
hasnt "$(cat "$tmp/out")" "escaped"
[ -e "$tmp/nope" ] && fail ".output ran in restricted mode"
has "$(cat "$tmp/err")" '\!: backslash commands are restricted; only \unrestrict is allowed'
has "$(cat "$tmp/err")" '.output: dot commands are restricted'
has "$(cat "$tmp/err")" '\if: backslash commands are restricted'
has "$(cat "$tmp/err")" '\unrestrict: wrong key'
$P "$D" -q -c "DROP DATABASE shell_sqlite2" || fail "cleanup2"
$P "$D" -q -c "DROP DATABASE shell_sqlite" || fail "cleanup"
echo "sqlite habits ok"
