-- A full backup's temporary physical replication slot (see backup/server.py: hold_wal):
-- it reserves WAL at once and is dropped by the server when this session ends.
-- Parameter: %(slot)s. Returns the LSN the slot holds WAL from.
SELECT s.lsn::text
FROM pg_catalog.pg_create_physical_replication_slot(%(slot)s, true, true) AS s
