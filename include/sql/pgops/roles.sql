-- Least-privilege roles, one per pgops job, and the Fixia owner roles. Idempotent.
-- Run by the set-up (as superuser) in the Fixia database after schema.sql. Passwords are
-- set separately from client-side SCRAM hashes, never written here.
--
--   pgops_backup       LOGIN REPLICATION; may run the backup and WAL-switch functions.
--   pgops_monitor      LOGIN, member of pg_monitor (pg_stat_*, pg_stat_statements, settings).
--   pgops_maintenance  LOGIN; owns the large time-based tables (to partition them and
--                      prune old partitions) and may create objects in schema fixia
--                      (materialized views).
--   fixia_owner        NOLOGIN; owns the rest of the Fixia schema.
--   fixia_app          NOLOGIN; the application's read-write privileges.
-- None of them is a superuser; no DAG connects as one.

DO $$
DECLARE
    spec record;
BEGIN
    FOR spec IN SELECT * FROM (VALUES
        ('fixia_owner', 'NOLOGIN'),
        ('fixia_app', 'NOLOGIN'),
        ('pgops_backup', 'LOGIN REPLICATION'),
        ('pgops_monitor', 'LOGIN'),
        ('pgops_maintenance', 'LOGIN')) AS r (name, attrs)
    LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = spec.name) THEN
            EXECUTE format('CREATE ROLE %I %s', spec.name, spec.attrs);
        ELSE
            EXECUTE format('ALTER ROLE %I %s NOSUPERUSER NOCREATEDB NOCREATEROLE', spec.name, spec.attrs);
        END IF;
    END LOOP;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO pgops_backup, pgops_monitor, pgops_maintenance',
                   current_database());
    EXECUTE format('REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
END
$$;

GRANT pg_monitor TO pgops_monitor;

GRANT EXECUTE ON FUNCTION pg_catalog.pg_backup_start(text, boolean),
                          pg_catalog.pg_backup_stop(boolean),
                          pg_catalog.pg_switch_wal(),
                          pg_catalog.pg_create_restore_point(text)
    TO pgops_backup;

ALTER SCHEMA fixia OWNER TO fixia_owner;
GRANT USAGE ON SCHEMA fixia TO fixia_app, pgops_maintenance, pgops_monitor;
GRANT CREATE ON SCHEMA fixia TO pgops_maintenance;

DO $$
DECLARE
    rel record;
    maintained constant text[] := ARRAY['payments', 'notifications', 'user_activity', 'reviews'];
BEGIN
    FOR rel IN SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'fixia' AND c.relkind IN ('r', 'p', 'S', 'm')
                 AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                 WHERE d.objid = c.oid AND d.deptype IN ('a', 'i'))
    LOOP
        EXECUTE format('ALTER %s fixia.%I OWNER TO %I',
                       CASE rel.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                       rel.relname,
                       CASE WHEN rel.relname = ANY (maintained) OR rel.relkind = 'm'
                            THEN 'pgops_maintenance' ELSE 'fixia_owner' END);
    END LOOP;
    FOR rel IN SELECT t.typname FROM pg_catalog.pg_type t
               JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
               WHERE n.nspname = 'fixia' AND t.typtype = 'e'
    LOOP
        EXECUTE format('ALTER TYPE fixia.%I OWNER TO fixia_owner', rel.typname);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA fixia TO fixia_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA fixia TO fixia_app;
-- The maintenance role references users from the tables it owns (foreign keys need it).
GRANT REFERENCES ON ALL TABLES IN SCHEMA fixia TO pgops_maintenance;
GRANT SELECT ON ALL TABLES IN SCHEMA fixia TO pgops_maintenance;

-- The restore sentinel: the backup jobs insert a row just before each full backup and
-- each WAL switch; a restore test finds the newest row it should contain, and its
-- commit (after the shipping point's time) is what lets recovery to any
-- restorable time stop exactly there. Only pgops_backup writes it.
CREATE SCHEMA IF NOT EXISTS pgops AUTHORIZATION fixia_owner;
CREATE TABLE IF NOT EXISTS pgops.backup_sentinel (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('full_backup', 'wal_switch')),
    token      text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
ALTER TABLE pgops.backup_sentinel OWNER TO fixia_owner;
GRANT USAGE ON SCHEMA pgops TO pgops_backup, pgops_monitor;
-- With each sentinel the backup role counts the rows of the tables the restore test
-- compares (restore_verification.count_tables). It already reads every data file
-- through the replication protocol, so SELECT gives it nothing new.
GRANT USAGE ON SCHEMA fixia TO pgops_backup;
GRANT SELECT ON ALL TABLES IN SCHEMA fixia TO pgops_backup;
GRANT SELECT, INSERT, DELETE ON pgops.backup_sentinel TO pgops_backup;
GRANT SELECT ON pgops.backup_sentinel TO pgops_monitor;
