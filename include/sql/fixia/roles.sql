-- The Fixia application's own roles and ownership: part of the reference database the
-- local stack and the tests build (as the application's DBA would), not of pgops.
-- pgops' roles and schema come from `pgops db setup` and `pgops db upgrade`
-- (plugins/pgops/database/), which touch nothing here. Idempotent.
--
--   fixia_owner   NOLOGIN; owns schema fixia and everything in it.
--   fixia_app     NOLOGIN; the application's read-write privileges.
-- Like most applications' roles, they connect through PUBLIC's CONNECT on the database.

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['fixia_owner', 'fixia_app'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = name) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', name);
        END IF;
    END LOOP;
END
$$;

ALTER SCHEMA fixia OWNER TO fixia_owner;
GRANT USAGE ON SCHEMA fixia TO fixia_app;

DO $$
DECLARE
    rel record;
BEGIN
    FOR rel IN SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'fixia' AND c.relkind IN ('r', 'p', 'S', 'm')
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                 WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
                 AND pg_catalog.pg_get_userbyid(c.relowner) <> 'fixia_owner'
    LOOP
        EXECUTE pg_catalog.format('ALTER %s fixia.%I OWNER TO fixia_owner',
                       CASE rel.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                       rel.relname);
    END LOOP;
    FOR rel IN SELECT t.typname FROM pg_catalog.pg_type t
               JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
               WHERE n.nspname = 'fixia' AND t.typtype = 'e'
                 AND pg_catalog.pg_get_userbyid(t.typowner) <> 'fixia_owner'
    LOOP
        EXECUTE pg_catalog.format('ALTER TYPE fixia.%I OWNER TO fixia_owner', rel.typname);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA fixia TO fixia_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA fixia TO fixia_app;
