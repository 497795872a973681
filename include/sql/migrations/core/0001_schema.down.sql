-- core 0001, undone: drops the sentinel history and the checksum table.
-- locks: only the tables of schema pgops it drops.

-- step: default_privileges
DO $$
BEGIN
    EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA pgops REVOKE SELECT ON TABLES FROM '
            || pg_catalog.quote_ident(pg_catalog.current_setting('pgops.monitor_role'));
    EXECUTE 'REVOKE USAGE ON SCHEMA pgops FROM '
            || pg_catalog.quote_ident(pg_catalog.current_setting('pgops.backup_role')) || ', '
            || pg_catalog.quote_ident(pg_catalog.current_setting('pgops.monitor_role')) || ', '
            || pg_catalog.quote_ident(pg_catalog.current_setting('pgops.maintenance_role'));
END
$$

-- step: sentinel
DROP TABLE pgops.backup_sentinel

-- step: checksums
DROP TABLE pgops.migration_checksums
