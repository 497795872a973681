-- State of pgops' physical replication slot: wal_status ('reserved', 'extended',
-- 'unreserved', 'lost'), restart_lsn, and how much WAL the slot keeps on the server.
-- Parameter: %(slot)s.
SELECT s.wal_status,
       s.restart_lsn::text,
       CASE WHEN s.restart_lsn IS NULL THEN NULL
            ELSE pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::bigint END
FROM pg_catalog.pg_replication_slots s
WHERE s.slot_name = %(slot)s AND s.slot_type = 'physical'
