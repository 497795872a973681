-- The tablespaces of the cluster besides the two every cluster has (pg_default,
-- pg_global), with their directories. pg_tablespace is readable by every role, so
-- the backup and monitoring roles both can run this.
SELECT t.spcname                                   AS name,
       pg_catalog.pg_tablespace_location(t.oid)    AS location
FROM pg_catalog.pg_tablespace t
WHERE t.spcname NOT IN ('pg_default', 'pg_global')
ORDER BY t.spcname
