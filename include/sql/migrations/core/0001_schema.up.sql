-- core 0001: pgops' first objects, in schema pgops (which `pgops db setup` created).
-- locks: nothing that existed before: it creates new tables in schema pgops and grants on
--        them; no application table is read or locked.
-- Role names are bound parameters, set for this transaction by the migration runner as
-- the settings pgops.backup_role, pgops.monitor_role, pgops.maintenance_role.

-- step: checksums
-- One row per applied migration: the sha256 of its files when it was applied, so that
-- a migration file changed since is refused (pgops.database.migrations).
CREATE TABLE pgops.migration_checksums (
    revision   text PRIMARY KEY,
    sha256     text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
)

-- step: sentinel
-- The restore sentinel: the backup jobs insert a row just before each full backup and
-- each WAL switch; a restore drill finds the newest row it should contain, and its
-- commit is what lets recovery to a time target stop exactly there.
CREATE TABLE pgops.backup_sentinel (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       text NOT NULL CHECK (kind IN ('full_backup', 'wal_switch')),
    token      text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
)

-- step: sentinel_index
CREATE INDEX backup_sentinel_written_at ON pgops.backup_sentinel (written_at)

-- step: grants
-- The job roles may use the schema; the backup role writes and trims the sentinel; the
-- monitoring role reads everything in the schema, now and later (default privileges of
-- the owner, who runs every migration).
DO $$
DECLARE
    backup_role constant text := pg_catalog.current_setting('pgops.backup_role');
    monitor_role constant text := pg_catalog.current_setting('pgops.monitor_role');
    maintenance_role constant text := pg_catalog.current_setting('pgops.maintenance_role');
BEGIN
    EXECUTE 'GRANT USAGE ON SCHEMA pgops TO ' || pg_catalog.quote_ident(backup_role) || ', '
            || pg_catalog.quote_ident(monitor_role) || ', ' || pg_catalog.quote_ident(maintenance_role);
    EXECUTE 'GRANT SELECT, INSERT, DELETE ON pgops.backup_sentinel TO ' || pg_catalog.quote_ident(backup_role);
    EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA pgops TO ' || pg_catalog.quote_ident(monitor_role);
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA pgops GRANT SELECT ON TABLES TO '
            || pg_catalog.quote_ident(monitor_role);
END
$$
