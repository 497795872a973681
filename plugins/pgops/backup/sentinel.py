"""The restore sentinel: a row the backup jobs write just before each full backup and
each WAL switch (table ``pgops.backup_sentinel``, created by the core migrations: ``pgops db upgrade``).

In the same REPEATABLE READ transaction pgops records the row counts of the configured
tables (``restore_verification.count_tables``) and the list of tables and indexes.
Two uses:

* a restore test checks that the newest sentinel the restored data must contain is
  there, with the expected token: proof that the WAL was replayed as far as promised;
  and that the counts and the relation list match what was recorded with it;
* its commit record is timestamped after the time the shipping run records as its
  point, so a point-in-time recovery to any time the catalog calls restorable has a
  commit to stop at (PostgreSQL stops a time target only at a commit or abort record,
  and fails when recovery ends before reaching it).

Counting stays cheap on large tables: a table of more than
``restore_verification.count_max_pages`` blocks is counted over a fixed sample of that
many of its blocks (``TABLESAMPLE SYSTEM … REPEATABLE``, which picks blocks by their
number alone), and the restore test counts the same sample of the restored copy.

Bookkeeping never blocks the data path. Each count runs under its own
``statement_timeout`` (``restore_verification.count_timeout_ms``) in a savepoint, so the
sentinel's snapshot lives for at most the sum of those, and a table that is gone, not
readable or too slow to count is recorded in ``count_errors`` (the restore test's
row_counts check then fails naming it) while the sentinel is still written. When the
sentinel itself cannot be written, :func:`record_sentinel` warns, returns the reason,
and commits an empty transaction instead, so the time target still has its commit.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from pgops.errors import ConfigError, PgopsError, TransientError
from pgops.postgres.sqlfiles import steps

log = logging.getLogger(__name__)

TABLE = "pgops.backup_sentinel"
DEFAULT_COUNT_TIMEOUT_MS = 2000
DEFAULT_COUNT_MAX_PAGES = 12_800  # 100 MiB of 8 KiB blocks


@dataclass(frozen=True)
class Sentinel:
    kind: str
    token: str
    written_at: datetime
    xid: str
    counts: dict[str, int] = field(default_factory=dict)
    relations: list[list[str]] = field(default_factory=list)  # [name, relkind], sorted
    #: tables whose count could not be taken, with the reason (a restore test fails on them)
    count_errors: dict[str, str] = field(default_factory=dict)
    #: large tables counted over a fixed sample of their blocks: table -> percent of blocks
    count_samples: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        out = asdict(self)
        out["written_at"] = self.written_at.isoformat()
        return out

    @classmethod
    def from_json(cls, data: dict) -> Sentinel:
        return cls(data["kind"], data["token"], datetime.fromisoformat(data["written_at"]), str(data["xid"]),
                   {k: int(v) for k, v in data.get("counts", {}).items()}, [list(r) for r in data.get("relations", [])],
                   {k: str(v) for k, v in (data.get("count_errors") or {}).items()},
                   {k: float(v) for k, v in (data.get("count_samples") or {}).items()})


def qualified(name: str) -> sql.Identifier:
    schema, _, table = name.partition(".")
    return sql.Identifier(schema, table)


def _count_error(name: str, exc: psycopg.Error, timeout_ms: int | None) -> str:
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return (f"counting {name} took longer than {timeout_ms} ms (restore_verification.count_timeout_ms), or "
                "waited that long for a lock: raise the timeout or count a smaller table")
    if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)):
        return (f"{name} does not exist (renamed or dropped?): {exc.diag.message_primary}; "
                "fix restore_verification.count_tables")
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return f"the backup role may not read {name}: GRANT SELECT ON {name} TO the backup role"
    return f"counting {name} failed: {type(exc).__name__}: {exc.diag.message_primary or exc}"


@dataclass(frozen=True)
class Facts:
    """What :func:`snapshot_facts` found in one snapshot."""

    counts: dict[str, int]
    relations: list[list[str]]
    count_errors: dict[str, str]
    count_samples: dict[str, float]


def snapshot_facts(conn: psycopg.Connection, count_tables: list[str], *, count_timeout_ms: int | None = None,
                   max_pages: int | None = None, samples: dict[str, float] | None = None) -> Facts:
    """Row counts of ``count_tables``, the relation list, and the tables whose count
    failed (with why), in the caller's transaction. Each count runs in a savepoint, under
    ``count_timeout_ms`` when given, so one bad table neither aborts the transaction nor
    holds its snapshot for long.

    A table of more than ``max_pages`` blocks is counted over a fixed sample of about
    ``max_pages`` of its blocks (recorded in ``count_samples``), so counting stays cheap
    however large it grows; ``samples`` (a restore test's) counts exactly those samples.
    """
    text = dict(steps("backup/write_sentinel.sql"))
    if count_timeout_ms is not None:
        conn.execute(text["count_timeout"], {"ms": str(count_timeout_ms)})
    relations = [[name, kind] for name, kind in conn.execute(text["relations"]).fetchall()]
    counts: dict[str, int] = {}
    errors: dict[str, str] = {}
    sampled: dict[str, float] = {}
    for name in count_tables:
        try:
            with conn.transaction():  # a savepoint: a failed count leaves the transaction usable
                pct = (samples or {}).get(name)
                if samples is None and max_pages is not None:
                    pages = conn.execute(text["pages"], {"table": name}).fetchone()[0]
                    if pages > max_pages:
                        pct = float(f"{100 * max_pages / pages:.6g}")
                if pct is None:
                    counts[name] = conn.execute(sql.SQL(text["count"]).format(table=qualified(name))).fetchone()[0]
                else:
                    counts[name] = conn.execute(sql.SQL(text["count_sample"]).format(table=qualified(name)),
                                                {"pct": pct}).fetchone()[0]
                    sampled[name] = pct
        except (psycopg.errors.QueryCanceled, psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName,
                psycopg.errors.InsufficientPrivilege, psycopg.errors.ObjectNotInPrerequisiteState,
                psycopg.errors.WrongObjectType) as exc:
            errors[name] = _count_error(name, exc, count_timeout_ms)
            log.warning("sentinel: %s; the sentinel is written without this count", errors[name])
    return Facts(counts, relations, errors, sampled)


def write_sentinel(conn: psycopg.Connection, kind: str, token: str, count_tables: list[str] | None = None,
                   keep_days: int = 60, *, count_timeout_ms: int = DEFAULT_COUNT_TIMEOUT_MS,
                   count_max_pages: int | None = DEFAULT_COUNT_MAX_PAGES) -> Sentinel:
    """Record the counts and relations, insert (and commit) one sentinel row. ``conn`` is
    in autocommit. A count that fails is recorded in ``count_errors``; the sentinel row
    itself failing raises (see :func:`record_sentinel` for the caller that must go on)."""
    text = dict(steps("backup/write_sentinel.sql"))
    try:
        with conn.transaction():
            conn.execute(text["isolation"])
            facts = snapshot_facts(conn, count_tables or [], count_timeout_ms=count_timeout_ms,
                                   max_pages=count_max_pages)
            written_at, xid = conn.execute(text["insert"], {"kind": kind, "token": token}).fetchone()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        raise ConfigError(
            f"{exc.diag.message_primary}: pgops is not installed on this database, or not migrated: run "
            f"pgops db setup (as a superuser), then pgops db upgrade; it creates {TABLE} and grants the backup "
            "role what it needs (docs/setup.md)") from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise ConfigError(f"the backup role lacks a privilege ({exc.diag.message_primary}): run pgops db setup "
                          "and pgops db upgrade again (pgops preflight names what is missing)") from exc
    except psycopg.errors.QueryCanceled as exc:
        raise ConfigError(f"writing the sentinel row timed out ({exc.diag.message_primary}): is {TABLE} "
                          "locked?") from exc
    except psycopg.OperationalError as exc:
        raise TransientError(f"lost the connection while writing the sentinel: {exc}") from exc
    except psycopg.Error as exc:
        raise ConfigError(f"writing the sentinel failed: {type(exc).__name__}: {exc}") from exc
    try:  # housekeeping: the sentinel is committed already, whatever happens here
        conn.execute(text["trim"], {"keep_days": keep_days})
    except psycopg.OperationalError as exc:
        raise TransientError(f"lost the connection after writing the sentinel: {exc}") from exc
    except psycopg.Error as exc:
        log.warning("could not remove old rows of %s (%s): they stay until the next run", TABLE, exc)
    return Sentinel(kind, token, written_at, xid, facts.counts, facts.relations, facts.count_errors,
                    facts.count_samples)


def record_sentinel(conn: psycopg.Connection, kind: str, token: str, count_tables: list[str] | None = None, *,
                    count_timeout_ms: int = DEFAULT_COUNT_TIMEOUT_MS,
                    count_max_pages: int | None = DEFAULT_COUNT_MAX_PAGES) -> tuple[Sentinel | None, str | None]:
    """:func:`write_sentinel` for the backup jobs, which must go on whatever happens to it:
    (sentinel, None), or (None, why) after a warning and an empty committed transaction
    (the commit a time target needs). Only a lost connection still raises: then the job
    cannot go on either."""
    try:
        return write_sentinel(conn, kind, token, count_tables, count_timeout_ms=count_timeout_ms,
                              count_max_pages=count_max_pages), None
    except TransientError:
        raise
    except PgopsError as exc:
        reason = f"the sentinel {token} could not be written: {exc}"
        log.warning("%s; going on without it (a restore test that expects this sentinel fails its sentinel "
                    "check naming this)", reason)
        try:
            with conn.transaction():
                conn.execute(dict(steps("backup/write_sentinel.sql"))["bare_commit"])
        except psycopg.Error as bare:
            raise TransientError(f"{reason}; and the empty commit in its place failed too: {bare}") from bare
        return None, reason
