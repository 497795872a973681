-- What `pgops db setup` and `pgops db teardown` plan from: pgops' roles as they are,
-- the privileges pgops grants, schema pgops, and the pg_hba.conf rules. Read-only.
-- Parameters: %(roles)s the four role names (setup.*_role), %(backup_role)s,
-- %(count_tables)s the counted tables (schema.table), %(functions)s the signatures of
-- the functions the backup role runs.

-- step: facts
-- (Settings from pg_settings: a role that may not read one gets NULL, not an error.)
SELECT
    pg_catalog.current_database()                                           AS database,
    pg_catalog.current_setting('server_version_num')::int                   AS server_version_num,
    (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user) AS superuser,
    pg_catalog.host(pg_catalog.inet_client_addr())                          AS client_address,
    pg_catalog.family(pg_catalog.inet_client_addr())                        AS client_family,
    coalesce((SELECT pg_catalog.json_object_agg(r.rolname, pg_catalog.json_build_object(
                 'superuser', r.rolsuper, 'login', r.rolcanlogin, 'replication', r.rolreplication,
                 'createdb', r.rolcreatedb, 'createrole', r.rolcreaterole, 'bypassrls', r.rolbypassrls,
                 'comment', pg_catalog.shobj_description(r.oid, 'pg_authid'),
                 'pg_monitor', EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m
                                       WHERE m.member = r.oid AND m.roleid = 'pg_monitor'::regrole),
                 'connect', EXISTS (SELECT 1 FROM pg_catalog.pg_database d,
                                    LATERAL pg_catalog.aclexplode(d.datacl) a
                                    WHERE d.datname = pg_catalog.current_database()
                                      AND a.grantee = r.oid AND a.privilege_type = 'CONNECT')))
              FROM pg_catalog.pg_roles r WHERE r.rolname = ANY (%(roles)s::text[])), '{}'::json) AS roles,
    (SELECT pg_catalog.pg_get_userbyid(n.nspowner) FROM pg_catalog.pg_namespace n
     WHERE n.nspname = 'pgops')                                              AS pgops_schema_owner,
    coalesce((SELECT pg_catalog.json_object_agg(f, pg_catalog.has_function_privilege(%(backup_role)s, f, 'EXECUTE'))
              FROM pg_catalog.unnest(%(functions)s::text[]) AS f
              WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %(backup_role)s)),
             '{}'::json)                                                     AS backup_functions,
    -- Looked up in the catalog by name (to_regclass would need USAGE on the schema).
    coalesce((SELECT pg_catalog.json_object_agg(t.name, pg_catalog.json_build_object(
                 'exists', c.oid IS NOT NULL,
                 'schema', t.schema,
                 'usage', CASE WHEN b.oid IS NOT NULL AND n.oid IS NOT NULL
                          THEN pg_catalog.has_schema_privilege(b.oid, n.oid, 'USAGE') END,
                 'select', CASE WHEN b.oid IS NOT NULL AND c.oid IS NOT NULL
                           THEN pg_catalog.has_table_privilege(b.oid, c.oid, 'SELECT') END))
              FROM (SELECT x AS name, pg_catalog.split_part(x, '.', 1) AS schema,
                           pg_catalog.split_part(x, '.', 2) AS relname
                    FROM pg_catalog.unnest(%(count_tables)s::text[]) AS x) t
              LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = t.schema
              LEFT JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.relname
              LEFT JOIN pg_catalog.pg_roles b ON b.rolname = %(backup_role)s), '{}'::json) AS count_tables,
    (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'wal_level')                                  AS wal_level,
    (SELECT s.setting::int FROM pg_catalog.pg_settings s WHERE s.name = 'max_wal_senders')                       AS max_wal_senders,
    (SELECT s.setting::int FROM pg_catalog.pg_settings s WHERE s.name = 'max_replication_slots')                 AS max_replication_slots,
    (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'max_slot_wal_keep_size')                     AS max_slot_wal_keep_size,
    (SELECT s.setting FROM pg_catalog.pg_settings s WHERE s.name = 'shared_preload_libraries')                   AS shared_preload_libraries

-- step: hba
-- pg_hba.conf as the server has loaded it (readable by superusers only; set-up reads it
-- to print the lines pgops' connections need, and goes on without it otherwise).
SELECT type, database, user_name, address, netmask, auth_method, error
FROM pg_catalog.pg_hba_file_rules
ORDER BY line_number

-- step: owned_elsewhere
-- Objects outside schema pgops that a pgops role owns (teardown refuses to drop them).
SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS object,
       pg_catalog.pg_get_userbyid(d.refobjid)                         AS role
FROM pg_catalog.pg_shdepend d
JOIN pg_catalog.pg_database db ON db.oid = d.dbid AND db.datname = pg_catalog.current_database()
WHERE d.deptype = 'o' AND d.refclassid = 'pg_catalog.pg_authid'::regclass
  AND pg_catalog.pg_get_userbyid(d.refobjid) = ANY (%(roles)s::text[])
  AND NOT (d.classid = 'pg_catalog.pg_namespace'::regclass
           AND d.objid = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pgops'))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND c.oid = d.objid
                    AND c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pgops'))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type t
                  WHERE d.classid = 'pg_catalog.pg_type'::regclass AND t.oid = d.objid
                    AND t.typnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pgops'))
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_proc f
                  WHERE d.classid = 'pg_catalog.pg_proc'::regclass AND f.oid = d.objid
                    AND f.pronamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pgops'))
  AND NOT (d.classid = 'pg_catalog.pg_default_acl'::regclass)
ORDER BY 1

-- step: depends_on_pgops
-- Objects outside schema pgops that depend on an object in it (a view on the sentinel
-- table, a foreign key into it): DROP SCHEMA pgops CASCADE would drop them too, so
-- teardown refuses while there are any.
SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) AS object
FROM pg_catalog.pg_depend d
CROSS JOIN LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, d.objsubid) AS obj
WHERE d.deptype IN ('n', 'a')
  AND ((d.refclassid = 'pg_catalog.pg_class'::regclass
        AND d.refobjid IN (SELECT c.oid FROM pg_catalog.pg_class c
                           WHERE c.relnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pgops')))
    OR (d.refclassid = 'pg_catalog.pg_type'::regclass
        AND d.refobjid IN (SELECT t.oid FROM pg_catalog.pg_type t
                           WHERE t.typnamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pgops')))
    OR (d.refclassid = 'pg_catalog.pg_proc'::regclass
        AND d.refobjid IN (SELECT p.oid FROM pg_catalog.pg_proc p
                           WHERE p.pronamespace = (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = 'pgops'))))
  -- the schema of the dependent: a column default, trigger, rule or policy has none of its
  -- own (pg_identify_object says NULL); theirs is their table's
  AND coalesce(obj.schema, (SELECT n.nspname FROM pg_catalog.pg_class c
                            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                            WHERE c.oid = CASE d.classid
                                WHEN 'pg_catalog.pg_attrdef'::regclass
                                    THEN (SELECT a.adrelid FROM pg_catalog.pg_attrdef a WHERE a.oid = d.objid)
                                WHEN 'pg_catalog.pg_trigger'::regclass
                                    THEN (SELECT t.tgrelid FROM pg_catalog.pg_trigger t WHERE t.oid = d.objid)
                                WHEN 'pg_catalog.pg_rewrite'::regclass
                                    THEN (SELECT r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.oid = d.objid)
                                WHEN 'pg_catalog.pg_policy'::regclass
                                    THEN (SELECT p.polrelid FROM pg_catalog.pg_policy p WHERE p.oid = d.objid)
                            END)) IS DISTINCT FROM 'pgops'
ORDER BY 1
