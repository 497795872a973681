"""The restore sentinel: a row the backup jobs write just before each full backup and
each WAL switch (table ``pgops.backup_sentinel``, created by ``include/sql/pgops/roles.sql``).

Two uses:

* a restore test checks that the newest sentinel the restored data must contain is
  there, with the expected token: proof that the WAL was replayed as far as promised;
* its commit record is timestamped after the time the shipping run records as its
  point, so a point-in-time recovery to any time the catalog calls restorable has a
  commit to stop at (PostgreSQL stops a time target only at a commit or abort record,
  and fails when recovery ends before reaching it).
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from pgops.errors import ConfigError
from pgops.postgres.sqlfiles import steps

TABLE = "pgops.backup_sentinel"


def write_sentinel(conn: psycopg.Connection, kind: str, token: str, keep_days: int = 60) -> datetime:
    """Insert (and commit) one sentinel row; returns its ``written_at``. ``conn`` is in autocommit."""
    sql = dict(steps("backup/write_sentinel.sql"))
    try:
        written_at = conn.execute(sql["insert"], {"kind": kind, "token": token}).fetchone()[0]
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise ConfigError(
            f"{TABLE} does not exist in the database: run include/sql/pgops/roles.sql there as a superuser "
            "(it creates the table and grants pgops_backup INSERT on it)") from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(f"the backup role may not write {TABLE}: re-run include/sql/pgops/roles.sql") from exc
    conn.execute(sql["trim"], {"keep_days": keep_days})
    return written_at
