"""The restore sentinel: a row the backup jobs write just before each full backup and
each WAL switch (table ``pgops.backup_sentinel``, created by ``include/sql/pgops/roles.sql``).

In the same REPEATABLE READ transaction pgops records the row counts of the configured
tables (``restore_verification.count_tables``) and the list of tables and indexes.
Three uses:

* a restore test checks that the newest sentinel the restored data must contain is
  there, with the expected token: proof that the WAL was replayed as far as promised;
  and that the counts and the relation list match what was recorded with it;
* its commit record is timestamped after the time the shipping run records as its
  point, so a point-in-time recovery to any time the catalog calls restorable has a
  commit to stop at (PostgreSQL stops a time target only at a commit or abort record,
  and fails when recovery ends before reaching it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from pgops.errors import ConfigError
from pgops.postgres.sqlfiles import steps

TABLE = "pgops.backup_sentinel"


@dataclass(frozen=True)
class Sentinel:
    kind: str
    token: str
    written_at: datetime
    xid: str
    counts: dict[str, int] = field(default_factory=dict)
    relations: list[list[str]] = field(default_factory=list)  # [name, relkind], sorted

    def to_json(self) -> dict:
        out = asdict(self)
        out["written_at"] = self.written_at.isoformat()
        return out

    @classmethod
    def from_json(cls, data: dict) -> Sentinel:
        return cls(data["kind"], data["token"], datetime.fromisoformat(data["written_at"]), str(data["xid"]),
                   {k: int(v) for k, v in data.get("counts", {}).items()}, [list(r) for r in data.get("relations", [])])


def relations_digest(relations: list[list[str]]) -> str:
    return hashlib.sha256(json.dumps(relations).encode()).hexdigest()


def qualified(name: str) -> sql.Identifier:
    schema, _, table = name.partition(".")
    return sql.Identifier(schema, table)


def snapshot_facts(conn: psycopg.Connection, count_tables: list[str]) -> tuple[dict[str, int], list[list[str]]]:
    """Row counts of ``count_tables`` and the relation list, in the caller's transaction."""
    text = dict(steps("backup/write_sentinel.sql"))
    relations = [[name, kind] for name, kind in conn.execute(text["relations"]).fetchall()]
    counts = {}
    for name in count_tables:
        counts[name] = conn.execute(sql.SQL(text["count"]).format(table=qualified(name))).fetchone()[0]
    return counts, relations


def write_sentinel(conn: psycopg.Connection, kind: str, token: str, count_tables: list[str] | None = None,
                   keep_days: int = 60) -> Sentinel:
    """Record the counts and relations, insert (and commit) one sentinel row. ``conn`` is in autocommit."""
    text = dict(steps("backup/write_sentinel.sql"))
    try:
        with conn.transaction():
            conn.execute(text["isolation"])
            counts, relations = snapshot_facts(conn, count_tables or [])
            written_at, xid = conn.execute(text["insert"], {"kind": kind, "token": token}).fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise ConfigError(
            f"{exc.diag.message_primary}: run include/sql/pgops/roles.sql in the database as a superuser "
            f"(it creates {TABLE} and grants pgops_backup what it needs); check restore_verification.count_tables"
        ) from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(f"the backup role lacks a privilege ({exc.diag.message_primary}): re-run "
                          "include/sql/pgops/roles.sql") from exc
    conn.execute(text["trim"], {"keep_days": keep_days})
    return Sentinel(kind, token, written_at, xid, counts, relations)
