-- Release WAL that is confirmed in the repository: move the slot to %(lsn)s, or leave it
-- where it is when pg_receivewal's feedback already moved it further (moving a slot
-- backwards is an error).
SELECT pg_catalog.pg_replication_slot_advance(s.slot_name, GREATEST(%(lsn)s::pg_lsn, s.restart_lsn))
FROM pg_catalog.pg_replication_slots s
WHERE s.slot_name = %(slot)s AND s.restart_lsn IS NOT NULL
