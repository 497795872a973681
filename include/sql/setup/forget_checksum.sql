-- A downgraded migration's checksum row, deleted if the table still exists. The
-- revision is the setting pgops.revision of this transaction (a bound parameter).
DO $$
BEGIN
    IF pg_catalog.to_regclass('pgops.migration_checksums') IS NOT NULL THEN
        DELETE FROM pgops.migration_checksums WHERE revision = pg_catalog.current_setting('pgops.revision');
    END IF;
END
$$
