-- pgpipe built-in schema: least-privilege roles (repeatable: runs again
-- whenever this file changes).
--
-- pgpipe.grant_roles(loader_role, worker_role [, production_schemas
-- [, staging_table]]) grants two existing roles what the COPY loader and the
-- claimer workers need, and nothing more:
--
--   loader  INSERT into the staging table (COPY), INSERT into
--           pgpipe.dead_letters, SELECT/INSERT/UPDATE of its bookkeeping in
--           pgpipe.loads and pgpipe.load_batches, SELECT of pgpipe.migrations
--           (the loader checks that the schema is installed), USAGE of their
--           sequences. It cannot read, update or delete staging rows, and
--           cannot touch production.
--   worker  SELECT/UPDATE of the staging table (claim, complete, retry),
--           INSERT into pgpipe.dead_letters, SELECT/INSERT/UPDATE/DELETE on
--           the tables of the production schemas (and the same on tables
--           created there later by the role that runs this function), USAGE
--           of their sequences. It cannot insert or delete staging rows,
--           cannot write pgpipe.loads, and owns nothing (no DROP, TRUNCATE,
--           ALTER).
--
-- Create the roles first (the owner of the schema, or a superuser, runs
-- this), e.g.:
--   CREATE ROLE pgpipe_loader LOGIN PASSWORD '...';
--   CREATE ROLE pgpipe_worker LOGIN PASSWORD '...';
--   SELECT pgpipe.grant_roles('pgpipe_loader', 'pgpipe_worker');
-- Role and schema names are quoted (format %I), the table is a regclass.
CREATE OR REPLACE FUNCTION pgpipe.grant_roles(
    loader_role name,
    worker_role name,
    production_schemas text[] DEFAULT ARRAY['production'],
    staging_table regclass DEFAULT 'staging.raw_events')
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    s   text;
    seq text;
BEGIN
    IF loader_role IS NULL OR worker_role IS NULL THEN
        RAISE EXCEPTION 'pgpipe.grant_roles: both a loader and a worker role are needed';
    END IF;
    IF loader_role = worker_role THEN
        RAISE EXCEPTION 'pgpipe.grant_roles: use two roles (loader and worker have different rights)';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = loader_role) THEN
        RAISE EXCEPTION 'pgpipe.grant_roles: role % does not exist', quote_ident(loader_role)
            USING ERRCODE = '42704';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = worker_role) THEN
        RAISE EXCEPTION 'pgpipe.grant_roles: role % does not exist', quote_ident(worker_role)
            USING ERRCODE = '42704';
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA pgpipe TO %I, %I', loader_role, worker_role);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I, %I',
                   (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE c.oid = staging_table), loader_role, worker_role);
    seq := pg_get_serial_sequence(staging_table::text, 'id');

    -- the loader
    EXECUTE format('GRANT INSERT ON %s TO %I', staging_table, loader_role);
    IF seq IS NOT NULL THEN
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I', seq, loader_role);
    END IF;
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON pgpipe.loads TO %I', loader_role);
    EXECUTE format('GRANT SELECT, INSERT ON pgpipe.load_batches TO %I', loader_role);
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I',
                   pg_get_serial_sequence('pgpipe.loads', 'id'), loader_role);
    EXECUTE format('GRANT INSERT ON pgpipe.dead_letters TO %I', loader_role);
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I',
                   pg_get_serial_sequence('pgpipe.dead_letters', 'id'), loader_role);
    IF to_regclass('pgpipe.migrations') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT ON pgpipe.migrations TO %I', loader_role);
    END IF;
    IF to_regclass('pgpipe.device_positions') IS NOT NULL THEN
        EXECUTE format('GRANT SELECT, INSERT, UPDATE ON pgpipe.device_positions TO %I', loader_role);
    END IF;

    -- the workers
    EXECUTE format('GRANT SELECT, UPDATE ON %s TO %I', staging_table, worker_role);
    EXECUTE format('GRANT INSERT ON pgpipe.dead_letters TO %I', worker_role);
    EXECUTE format('GRANT USAGE ON SEQUENCE %s TO %I',
                   pg_get_serial_sequence('pgpipe.dead_letters', 'id'), worker_role);
    FOREACH s IN ARRAY coalesce(production_schemas, ARRAY[]::text[]) LOOP
        CONTINUE WHEN NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s);
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s, worker_role);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
                       s, worker_role);
        EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', s, worker_role);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE '
                       'ON TABLES TO %I', s, worker_role);
        EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO %I',
                       s, worker_role);
    END LOOP;
END
$fn$;

COMMENT ON FUNCTION pgpipe.grant_roles(name, name, text[], regclass) IS
    'least-privilege grants: the loader inserts into staging and the DLQ (and its load '
    'bookkeeping); the workers read and update staging, write the production schemas and the DLQ';
