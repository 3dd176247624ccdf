-- The example pipeline of the init.sql article, as migrations: three layers
-- (staging -> production -> analytics). Install it with
-- pgpipe_example_install(), which installs pgpipe's built-in schema first:
-- the example reuses pgpipe's staging.raw_events (a partitioned superset of
-- the article's table) instead of creating its own.

CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS production;
CREATE SCHEMA IF NOT EXISTS analytics;

DO $$
BEGIN
    IF to_regclass('staging.raw_events') IS NULL THEN
        RAISE EXCEPTION 'the example needs pgpipe''s built-in schema (staging.raw_events)'
            USING HINT = 'install it first: pgpipe_schema_install()';
    END IF;
END
$$;

-- Optional extensions, created only when the server has them installed. UUIDs
-- use the core gen_random_uuid() (PostgreSQL 13+) either way.
DO $$
DECLARE
    ext text;
BEGIN
    FOREACH ext IN ARRAY ARRAY['uuid-ossp', 'postgis'] LOOP
        IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = ext) THEN
            BEGIN
                EXECUTE format('CREATE EXTENSION IF NOT EXISTS %I', ext);
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE 'extension % is available but could not be created: %', ext, SQLERRM;
            END;
        ELSE
            RAISE NOTICE 'extension % is not installed on this server; skipped', ext;
        END IF;
    END LOOP;
END
$$;
