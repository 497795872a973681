"""What the backup jobs ask of the server they back up, in one place: who it is, the
environment its client tools (pg_basebackup, pg_receivewal) run with, and the temporary
slot that holds a full backup's WAL while it runs."""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import psycopg

from pgops.config import PgopsConfig
from pgops.connections import ConnectionInfo
from pgops.errors import ConfigError, TransientError
from pgops.postgres.sqlfiles import load as load_sql, steps

log = logging.getLogger(__name__)


class ServerIdentity(NamedTuple):
    system_identifier: str
    major: str
    version_num: int
    timeline: int
    segment_size: int


def server_identity(conn) -> ServerIdentity:
    """The server ``conn`` is on: system identifier, major version, server_version_num,
    the timeline it writes WAL on now, and its WAL segment size."""
    sysid, version_num, timeline, segment_size = conn.execute(load_sql("backup/server_identity.sql")).fetchone()
    return ServerIdentity(sysid, str(version_num // 10000), version_num, timeline, segment_size)


def tool_env(conn: ConnectionInfo, config: PgopsConfig) -> dict[str, str]:
    """The environment of a libpq client tool: the password in PGPASSWORD (never on its
    command line) and the configured connect timeout."""
    return {**os.environ, "PGPASSWORD": conn.password or "",
            "PGCONNECT_TIMEOUT": str(config.database.connect_timeout_s)}


def hold_slot_name(slot: str, backup_id: str) -> str:
    """The temporary slot of one full backup: ``<slot>_b<id>`` (at most 63 characters)."""
    suffix = "_b" + backup_id.lower()
    return slot[: 63 - len(suffix)] + suffix


def hold_wal(conn, name: str) -> str:
    """Make the server keep every WAL segment from now on for as long as ``conn`` lives:
    a temporary physical replication slot, dropped by the server when the session ends
    (also when the worker dies). Returns the LSN it holds from.

    ``pg_basebackup --wal-method fetch`` collects the backup's WAL only at its end. WAL
    shipping runs beside a full backup and moves pgops' own slot on as it ships, so
    without this hold the server could recycle WAL the backup still needs, and a long
    backup would fail at its very end.

    ``conn`` must be a session of its own that runs nothing else: PostgreSQL drops a
    session's temporary slots at any error in it, even one a savepoint caught (a
    sentinel count that timed out would silently end the hold).
    """
    sql = dict(steps("backup/hold_wal.sql"))
    conn.execute(sql["no_idle_timeout"])
    try:
        lsn = conn.execute(sql["create"], {"slot": name}).fetchone()[0]
    except psycopg.errors.ConfigurationLimitExceeded as exc:
        raise ConfigError(
            f"cannot create the full backup's temporary replication slot {name!r}: {exc.diag.message_primary}. "
            "A full backup needs one slot more than WAL shipping uses: raise max_replication_slots "
            "(a restart) or drop unused slots") from exc
    except psycopg.errors.DuplicateObject as exc:
        raise TransientError(f"the temporary replication slot {name!r} exists: another full backup with the same "
                             "id is running; retry") from exc
    log.info("holding the WAL from %s for the backup (temporary replication slot %s)", lsn, name)
    return lsn


def hold_intact(conn, name: str) -> bool:
    """Whether the temporary slot of :func:`hold_wal` still holds WAL (its session alive,
    the slot not invalidated by ``max_slot_wal_keep_size``)."""
    try:
        return bool(conn.execute(dict(steps("backup/hold_wal.sql"))["intact"], {"slot": name}).fetchone()[0])
    except psycopg.Error:
        return False  # the session itself is gone: so is its slot
