-- The facts `pgops preflight` judges (plugins/pgops/monitoring/preflight.py). Read-only.
-- Runs as the monitoring role: pg_monitor may read every setting, and the has_*_privilege
-- functions answer for any role that exists, so each is guarded by the role's (and the
-- object's) existence rather than raising on a name that is not there.

-- step: server
-- Server settings the backup and monitoring jobs depend on, and where this session is.
SELECT pg_catalog.current_setting('server_version_num')::int                    AS server_version_num,
       pg_catalog.current_database()                                            AS database,
       current_user                                                             AS current_user,
       pg_catalog.host(pg_catalog.inet_client_addr())                           AS client_address,
       pg_catalog.current_setting('wal_level')                                  AS wal_level,
       pg_catalog.current_setting('max_wal_senders')::int                       AS max_wal_senders,
       pg_catalog.current_setting('max_replication_slots')::int                 AS max_replication_slots,
       (SELECT s.setting::bigint FROM pg_catalog.pg_settings s
        WHERE s.name = 'max_slot_wal_keep_size')                                AS max_slot_wal_keep_size_mb,
       pg_catalog.current_setting('max_wal_size')                               AS max_wal_size,
       pg_catalog.current_setting('data_checksums')::boolean                    AS data_checksums,
       pg_catalog.current_setting('data_directory')                             AS data_directory,
       pg_catalog.current_setting('shared_preload_libraries')                   AS shared_preload_libraries,
       EXISTS (SELECT 1 FROM pg_catalog.pg_extension
               WHERE extname = 'pg_stat_statements')                            AS pg_stat_statements_installed,
       -- the average WAL rate since the statistics were reset, when that is over an hour ago:
       -- what a bound on max_slot_wal_keep_size is sized from
       (SELECT CASE WHEN w.stats_reset < pg_catalog.now() - interval '1 hour'
                    THEN (w.wal_bytes::float8 * 3600
                          / extract(epoch FROM pg_catalog.now() - w.stats_reset)::float8) END
        FROM pg_catalog.pg_stat_wal w)                                          AS wal_bytes_per_hour

-- step: roles
-- The attributes of the configured job roles and of the roles the job connections log
-- in as. Parameter: %(roles)s text[].
SELECT r.rolname                                                 AS name,
       r.rolsuper                                                AS superuser,
       r.rolcanlogin                                             AS login,
       r.rolreplication                                          AS replication,
       pg_catalog.pg_has_role(r.oid, 'pg_monitor', 'USAGE')      AS pg_monitor
FROM pg_catalog.pg_roles r
WHERE r.rolname = ANY (%(roles)s::text[])
ORDER BY r.rolname

-- step: privileges
-- What the job roles may do on pgops' objects and the backup functions. Parameters:
-- %(backup_role)s, %(roles)s text[] (the roles whose USAGE on schema pgops is asked),
-- %(functions)s text[] (signatures), %(count_tables)s text[] (schema.table). Tables
-- and schemas are found in the catalog by name, never with to_regclass: that would need
-- USAGE on their schema, which the monitoring role has no reason to hold.
WITH backup AS (
    SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %(backup_role)s) AS role_exists
), pgops AS (
    SELECT n.oid, n.nspowner FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgops'
), sentinel AS (
    SELECT (SELECT c.oid FROM pg_catalog.pg_class c, pgops
            WHERE c.relnamespace = pgops.oid AND c.relname = 'backup_sentinel') AS oid
), counted AS (
    SELECT t.name, t.schema, n.oid AS nsp, c.oid AS rel
    FROM (SELECT name, pg_catalog.split_part(name, '.', 1) AS schema, pg_catalog.split_part(name, '.', 2) AS relname
          FROM pg_catalog.unnest(%(count_tables)s::text[]) AS name) AS t
    LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema
    LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.relname
                                   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
)
SELECT
    (SELECT pg_catalog.json_build_object(
                'owner', pg_catalog.pg_get_userbyid(pgops.nspowner),
                'usage', coalesce((SELECT pg_catalog.json_object_agg(
                                       r.rolname, pg_catalog.has_schema_privilege(r.oid, pgops.oid, 'USAGE'))
                                   FROM pg_catalog.pg_roles r WHERE r.rolname = ANY (%(roles)s::text[])),
                                  '{}'::json))
     FROM pgops)                                                                 AS pgops_schema,
    (SELECT CASE WHEN backup.role_exists THEN coalesce(
                (SELECT pg_catalog.json_object_agg(f, pg_catalog.has_function_privilege(%(backup_role)s, f, 'EXECUTE'))
                 FROM pg_catalog.unnest(%(functions)s::text[]) AS f), '{}'::json) END
     FROM backup)                                                                AS backup_functions,
    (SELECT pg_catalog.json_build_object(
                'exists', sentinel.oid IS NOT NULL,
                'select', CASE WHEN backup.role_exists AND sentinel.oid IS NOT NULL
                               THEN pg_catalog.has_table_privilege(%(backup_role)s, sentinel.oid, 'SELECT') END,
                'insert', CASE WHEN backup.role_exists AND sentinel.oid IS NOT NULL
                               THEN pg_catalog.has_table_privilege(%(backup_role)s, sentinel.oid, 'INSERT') END,
                'delete', CASE WHEN backup.role_exists AND sentinel.oid IS NOT NULL
                               THEN pg_catalog.has_table_privilege(%(backup_role)s, sentinel.oid, 'DELETE') END)
     FROM backup, sentinel)                                                      AS sentinel,
    (SELECT coalesce(pg_catalog.json_object_agg(counted.name, pg_catalog.json_build_object(
                'exists', counted.rel IS NOT NULL,
                'schema', counted.schema,
                'schema_exists', counted.nsp IS NOT NULL,
                'usage', CASE WHEN backup.role_exists AND counted.nsp IS NOT NULL
                              THEN pg_catalog.has_schema_privilege(%(backup_role)s, counted.nsp, 'USAGE') END,
                'select', CASE WHEN backup.role_exists AND counted.rel IS NOT NULL
                               THEN pg_catalog.has_table_privilege(%(backup_role)s, counted.rel, 'SELECT') END)),
                     '{}'::json)
     FROM backup, counted)                                                       AS count_tables

-- step: session
-- Who a job's connection logs in as, and where.
SELECT current_user AS current_user, pg_catalog.current_database() AS database
