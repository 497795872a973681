-- Facts the preflight check judges: server settings backups and monitoring depend on,
-- and the attributes of the pgops job roles. Runs as the monitoring role (pg_monitor
-- may read every setting). Parameter: %(roles)s, the login names of the job connections.
SELECT pg_catalog.current_setting('server_version_num')::int               AS server_version_num,
       pg_catalog.current_setting('wal_level')                             AS wal_level,
       pg_catalog.current_setting('data_checksums')::boolean               AS data_checksums,
       pg_catalog.current_setting('shared_preload_libraries')              AS shared_preload_libraries,
       pg_catalog.current_setting('max_wal_senders')::int                  AS max_wal_senders,
       pg_catalog.current_setting('max_replication_slots')::int            AS max_replication_slots,
       pg_catalog.current_setting('max_slot_wal_keep_size')                AS max_slot_wal_keep_size,
       EXISTS (SELECT 1 FROM pg_catalog.pg_extension
               WHERE extname = 'pg_stat_statements')                       AS pg_stat_statements_installed,
       current_user                                                        AS current_user,
       coalesce((SELECT pg_catalog.json_object_agg(r.rolname, pg_catalog.json_build_object(
                    'superuser', r.rolsuper,
                    'replication', r.rolreplication,
                    'login', r.rolcanlogin,
                    'pg_monitor', pg_catalog.pg_has_role(r.oid, 'pg_monitor', 'MEMBER')))
                 FROM pg_catalog.pg_roles r
                 WHERE r.rolname = ANY (%(roles)s::text[])), '{}'::json)   AS roles
