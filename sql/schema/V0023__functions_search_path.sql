-- pgpipe built-in schema: every function in schema pgpipe runs with a fixed
-- search_path (issue 20). Without it a caller's search_path decides what an
-- unqualified name in a function body means: a function or operator in a
-- schema listed first, with a closer argument type than the pg_catalog one
-- (e.g. to_char(date, text)), is called instead. With pg_catalog first and
-- pg_temp last, only built-ins are found unqualified; the bodies name every
-- table and function of their own schema-qualified (pgpipe., staging.).
-- The functions of the repeatable files carry the same SET clause in their
-- CREATE (CREATE OR REPLACE resets it); the test suite checks that every
-- function in schema pgpipe has it.
DO $do$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'pgpipe'::regnamespace AND p.prokind IN ('f', 'p')
             ORDER BY p.oid LOOP
        EXECUTE pg_catalog.format('ALTER ROUTINE %s SET search_path = pg_catalog, pg_temp', f);
    END LOOP;
END
$do$;
