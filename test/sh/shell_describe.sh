#!/bin/sh
# psql's describe commands with psql's output shape (issue 26): \d NAME with
# columns, indexes, check and foreign-key constraints, what references it,
# triggers, the partition key and partitions (\d+ lists them); \d, \dt, \di,
# \dv, \dm, \ds, \df, \dn, \du, \dx, \l, with patterns (staging.*) and + for
# sizes; a name that matches nothing says so.
set -u
cd "${PGPIPE_TOP:-.}"
. test/sh/lib/common.sh
P=${PGPIPE_SHELL:-build/test/pgpipe}
D=$PGPIPE_TEST_DSN
tmp=$(mktemp -d "${PGPIPE_TEST_TMP:-/tmp}/shell_describe.XXXXXX")
need_pgpipe
export HOME=$tmp
$P "$D" -q -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS shell_describe" \
    -c "CREATE DATABASE shell_describe" || fail "setup"
DB="$D dbname=shell_describe"
$P -q "$DB" -f - <<'SQL' || fail "schema"
CREATE TABLE customers (id int PRIMARY KEY, email text UNIQUE);
CREATE TABLE orders (
    id int PRIMARY KEY,
    customer_id int REFERENCES customers (id),
    amount numeric NOT NULL DEFAULT 0 CHECK (amount >= 0),
    note text COLLATE "C");
CREATE INDEX orders_amount_idx ON orders (amount);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER orders_trg BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION touch();
CREATE VIEW v_orders AS SELECT id, amount FROM orders;
CREATE MATERIALIZED VIEW mv AS SELECT count(*) AS n FROM orders;
CREATE SEQUENCE seq_x;
CREATE SCHEMA staging;
CREATE TABLE staging.ev (id bigint NOT NULL, ts date NOT NULL, kind text) PARTITION BY RANGE (ts);
CREATE TABLE staging.ev_1 PARTITION OF staging.ev FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE staging.ev_2 PARTITION OF staging.ev FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
SQL

out=$($P "$DB" -c '\d orders') || fail "\\d orders: exit $?"
has "$out" '                 Table "public.orders"
   Column    |  Type   | Collation | Nullable | Default
-------------+---------+-----------+----------+---------'
has "$out" ' amount      | numeric |           | not null | 0'
has "$out" ' note        | text    | C         |          | '
has "$out" 'Indexes:
    "orders_pkey" PRIMARY KEY, btree (id)
    "orders_amount_idx" btree (amount)
Check constraints:
    "orders_amount_check" CHECK (amount >= 0::numeric)
Foreign-key constraints:
    "orders_customer_id_fkey" FOREIGN KEY (customer_id) REFERENCES customers(id)
Triggers:
    orders_trg BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION touch()'
out=$($P "$DB" -c '\d customers')
has "$out" '    "customers_email_key" UNIQUE CONSTRAINT, btree (email)'
has "$out" 'Referenced by:
    TABLE "orders" CONSTRAINT "orders_customer_id_fkey" FOREIGN KEY (customer_id) REFERENCES customers(id)'
out=$($P "$DB" -c '\d staging.ev')
has "$out" 'Partitioned table "staging.ev"'
has "$out" 'Partition key: RANGE (ts)'
has "$out" 'Number of partitions: 2 (Use \d+ to list them.)'
out=$($P "$DB" -c '\d+ staging.ev')
has "$out" "Partitions: staging.ev_1 FOR VALUES FROM ('2026-01-01') TO ('2026-02-01'),
            staging.ev_2 FOR VALUES FROM ('2026-02-01') TO ('2026-03-01')"
has "$out" " Storage "
has "$($P "$DB" -c '\d staging.ev_1')" "Partition of: staging.ev FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')"
has "$($P "$DB" -c '\d+ v_orders')" "View definition:"
has "$($P "$DB" -c '\d orders_pkey')" 'primary key, btree, for table "public.orders"'
has "$($P "$DB" -c '\d seq_x')" ' bigint |     1 |       1 | 9223372036854775807 |         1 | no      |     1'

# the lists: psql's title, columns and row count; the search path unless a pattern says
owner=$($P -tA "$DB" -c "SELECT current_user")
out=$($P "$DB" -c '\dt')
has "$out" "List of relations"
has "$out" " Schema |   Name    | Type  |"
has "$out" " public | customers | table | $owner"
has "$out" "(2 rows)"
hasnt "$out" "staging"
out=$($P "$DB" -c '\dt staging.*')
has "$out" " staging | ev   | partitioned table | $owner"
has "$out" " staging | ev_1 | table             | $owner"
out=$($P "$DB" -c '\dt+ ord*')
has "$out" "| Persistence | Access method |"
has "$out" " orders | table | $owner | permanent   | heap          |"
hasnt "$out" "customers"
has "$($P "$DB" -c '\d')" " public | seq_x     | sequence          | $owner"
has "$($P "$DB" -c '\di')" " public | orders_amount_idx   | index | $owner | orders"
has "$($P "$DB" -c '\dv')" " public | v_orders | view | $owner"
has "$($P "$DB" -c '\dm')" " public | mv   | materialized view | $owner"
has "$($P "$DB" -c '\ds')" " public | seq_x | sequence | $owner"
has "$($P "$DB" -c '\df')" " public | touch | trigger          |                     | func"
has "$($P "$DB" -c '\dn')" " staging | $owner"
has "$($P "$DB" -c '\du')" " $owner "
has "$($P "$DB" -c '\dx')" " plpgsql | 1.0     | pg_catalog | PL/pgSQL procedural language"
has "$($P "$DB" -c '\l')" " shell_describe "
has "$($P "$DB" -c '\l+ shell_describe')" "|  Size   | Tablespace |"
# the same through the unaligned format (the title goes, the rows stay)
has "$($P -tA "$DB" -c '\dt')" "public|orders|table|$owner"
# nothing found
$P "$DB" -c '\dt nosuch' >"$tmp/out" 2>"$tmp/err"
has "$(cat "$tmp/err")" 'Did not find any relation named "nosuch".'
$P "$DB" -c '\d nosuch' >"$tmp/out" 2>"$tmp/err" && fail "\\d nosuch succeeded"
has "$(cat "$tmp/err")" 'Did not find any relation named "nosuch".'
$P "$D" -q -c "DROP DATABASE shell_describe" || fail "cleanup"
echo "describe ok"
