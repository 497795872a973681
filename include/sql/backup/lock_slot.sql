-- Serialize the repair of pgops' replication slot between WAL shipping and full backups,
-- which run side by side: a transaction-level advisory lock on the slot's name, released
-- at commit. Parameter: %(slot)s.
-- The two-key form, with pgops' own class key, keeps clear of the application's own
-- single-key advisory locks.
SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('pgops replication slot'), pg_catalog.hashtext(%(slot)s))
