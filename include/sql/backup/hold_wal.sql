-- A full backup's temporary physical replication slot (see backup/server.py: hold_wal),
-- on a session of its own that runs nothing else: the server drops a session's
-- temporary slots at its end, and also at any error in it.

-- step: no_idle_timeout
-- The session waits, idle, for the whole backup.
SET idle_session_timeout = 0

-- step: create
-- Reserves WAL at once. Parameter: %(slot)s. Returns the LSN the slot holds WAL from.
SELECT s.lsn::text
FROM pg_catalog.pg_create_physical_replication_slot(%(slot)s, true, true) AS s

-- step: intact
-- Whether this session's temporary slot %(slot)s still holds WAL.
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s
               WHERE s.slot_name = %(slot)s AND s.temporary AND s.restart_lsn IS NOT NULL
                 AND s.wal_status <> 'lost')
