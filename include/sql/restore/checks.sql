-- Checks the restore verification runs on the scratch server (as its superuser, over
-- the scratch server's private socket).

-- step: recovery_state
-- After promotion the replay functions keep the position and commit time of the last
-- record replayed.
SELECT pg_catalog.pg_is_in_recovery(),
       pg_catalog.pg_last_wal_replay_lsn()::text,
       pg_catalog.pg_last_xact_replay_timestamp()

-- step: sentinel
SELECT written_at FROM pgops.backup_sentinel WHERE token = %(token)s

-- step: sentinels_after
-- Sentinels committed after a time target must not have been replayed.
SELECT count(*) FROM pgops.backup_sentinel WHERE written_at > %(target)s
