"""Tablespaces: pgops refuses a cluster that has any.

A full backup is one tar stream, ``pg_basebackup -D - -Ft`` on stdout, and
pg_basebackup writes only a single tablespace there: with another tablespace it stops
("can only write single tablespace to stdout"). pgops does not back tablespaces up, and
retrying cannot change that, so it is a :class:`~pgops.errors.ConfigError` that says so:
at preflight, at the start of every full backup (before any work), and should the
refusal come from pg_basebackup itself (a tablespace created after the check).
"""

from __future__ import annotations

from pgops.errors import ConfigError
from pgops.postgres.sqlfiles import load as load_sql

#: pg_basebackup's message when asked to write a cluster with tablespaces to stdout
BASEBACKUP_REFUSAL = "can only write single tablespace to stdout"

_WHY = ("pgops streams a full backup as one tar stream (pg_basebackup -D -), which cannot carry them, and "
        "does not back tablespaces up. Move their objects into pg_default (ALTER TABLE / INDEX / MATERIALIZED "
        "VIEW ... SET TABLESPACE pg_default, ALTER DATABASE ... SET TABLESPACE pg_default) and drop them, or "
        "back this cluster up with another tool")


def user_tablespaces(conn) -> list[tuple[str, str]]:
    """(name, directory) of every tablespace besides pg_default and pg_global."""
    return [(name, location) for name, location in conn.execute(load_sql("postgres/tablespaces.sql")).fetchall()]


def refusal(tablespaces: list[tuple[str, str]]) -> str | None:
    """Why pgops cannot back this cluster up, or None when it has no tablespaces (pure)."""
    if not tablespaces:
        return None
    named = ", ".join(f"{name} ({location})" for name, location in tablespaces)
    return f"the cluster has tablespaces besides pg_default and pg_global: {named}. {_WHY}"


def refuse_tablespaces(conn) -> None:
    """Raise ConfigError when the cluster ``conn`` is on has tablespaces."""
    message = refusal(user_tablespaces(conn))
    if message:
        raise ConfigError(message)


def basebackup_refusal(stderr: str) -> ConfigError | None:
    """The ConfigError for pg_basebackup's own tablespace refusal in ``stderr``, if it is there."""
    if BASEBACKUP_REFUSAL not in stderr:
        return None
    return ConfigError(f"pg_basebackup refused: {stderr.strip()[-500:]}\n"
                       f"The cluster has a tablespace besides pg_default and pg_global. {_WHY}")
