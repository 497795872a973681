-- The restore sentinel (see plugins/pgops/backup/sentinel.py). Run in one REPEATABLE
-- READ transaction, just before a full backup or a WAL switch: the counts and the list
-- of relations describe the same snapshot the sentinel row is committed from.

-- step: isolation
SET TRANSACTION ISOLATION LEVEL REPEATABLE READ

-- step: count_timeout
-- Each count below runs under this statement_timeout (milliseconds, as text), for the
-- rest of this transaction only.
SELECT pg_catalog.set_config('statement_timeout', %(ms)s, true)

-- step: relations
-- Every table, partitioned table, index and materialized view outside the system
-- schemas: a restore must bring back exactly this list.
SELECT n.nspname || '.' || c.relname AS name, c.relkind::text AS kind
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'i', 'I', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY 1

-- step: count
-- {table} is a schema-qualified identifier composed with psycopg.sql.Identifier.
SELECT count(*) FROM {table}

-- step: pages
-- The size of a counted table in blocks (all partitions of a partitioned one): from
-- the files' sizes, exact and cheap. Parameter: %(table)s, schema-qualified.
-- (pg_partition_tree has no rows for a table that is not partitioned.)
SELECT greatest(pg_catalog.pg_relation_size(%(table)s::regclass),
                (SELECT coalesce(sum(pg_catalog.pg_relation_size(t.relid)), 0)
                 FROM pg_catalog.pg_partition_tree(%(table)s::regclass) t))
       / pg_catalog.current_setting('block_size')::bigint

-- step: count_sample
-- The rows in a fixed sample of a large table's blocks: SYSTEM sampling picks a block by
-- a hash of its number and the seed alone, so a restored copy (physically the same
-- blocks) is counted over exactly the same blocks. %(pct)s: the percentage recorded
-- with the sentinel. {table} as in count.
SELECT count(*) FROM {table} TABLESAMPLE SYSTEM (%(pct)s) REPEATABLE (0)

-- step: insert
INSERT INTO pgops.backup_sentinel (kind, token) VALUES (%(kind)s, %(token)s)
RETURNING written_at, pg_catalog.pg_current_xact_id()::text

-- step: trim
-- Keep a bounded history: rows older than the PITR and full-backup windows are useless.
DELETE FROM pgops.backup_sentinel
WHERE written_at < pg_catalog.clock_timestamp() - make_interval(days => %(keep_days)s)

-- step: bare_commit
-- When the sentinel row cannot be written: a transaction with an xid, so that its
-- commit record still gives a time target a commit to stop at.
SELECT pg_catalog.pg_current_xact_id()
