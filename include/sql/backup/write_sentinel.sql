-- step: insert
-- A sentinel row just before a full backup or a WAL switch (see pgops/roles.sql). Run
-- in its own transaction: its commit record carries a time after the caller's reading
-- of clock_timestamp(), so recovery to that time has a commit to stop at.
INSERT INTO pgops.backup_sentinel (kind, token) VALUES (%(kind)s, %(token)s)
RETURNING written_at

-- step: trim
-- Keep a bounded history: rows older than the PITR and full-backup windows are useless.
DELETE FROM pgops.backup_sentinel
WHERE written_at < pg_catalog.clock_timestamp() - make_interval(days => %(keep_days)s)
