-- Serialize the repair of pgops' replication slot between WAL shipping and full backups,
-- which run side by side: a transaction-level advisory lock on the slot's name, released
-- at commit. Parameter: %(slot)s.
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgops replication slot ' || %(slot)s))
