-- Who the server is: system identifier, version, the timeline it writes WAL on now
-- (from the name of the current WAL file, which follows a promotion at once, unlike
-- the last checkpoint's timeline), and the WAL segment size in bytes.
SELECT c.system_identifier::text,
       pg_catalog.current_setting('server_version_num')::int,
       ('x' || substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int,
       (SELECT s.setting::bigint FROM pg_catalog.pg_settings s WHERE s.name = 'wal_segment_size')
FROM pg_catalog.pg_control_system() c
