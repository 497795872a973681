"""Open database sessions the pgops way.

Every session sets ``application_name`` (so pg_stat_activity says which pgops job it
is), ``statement_timeout``, and for DDL ``lock_timeout``; passwords go to libpq as
parameters, never into a logged string. Driver errors become pgops errors: an
unreachable server is transient (Airflow retries), bad credentials are a ConfigError.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pgops.connections import ConnectionInfo, get_connection
from pgops.errors import ConfigError, TransientError

if TYPE_CHECKING:
    import psycopg

    from pgops.config import DatabaseConfig

log = logging.getLogger(__name__)

_AUTH_FAILURES = ("password authentication failed", "no pg_hba.conf entry", "role \"", "does not exist")


def libpq_params(conn: ConnectionInfo) -> dict[str, Any]:
    """libpq keyword parameters for an Airflow postgres connection."""
    params: dict[str, Any] = {
        "host": conn.host or "localhost",
        "port": conn.port or 5432,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema or "postgres",
    }
    for key in ("sslmode", "sslrootcert", "sslcert", "sslkey", "target_session_attrs"):
        if key in conn.extra:
            params[key] = conn.extra[key]
    return {k: v for k, v in params.items() if v is not None}


def conninfo_string(conn: ConnectionInfo, application_name: str) -> str:
    """A libpq conninfo string for command-line tools (pg_basebackup, pg_receivewal).

    The password is left out: pass it in PGPASSWORD, never on a command line.
    """
    parts = {k: str(v) for k, v in libpq_params(conn).items() if k not in ("password", "dbname")}
    parts["application_name"] = application_name
    return " ".join(f"{k}={_conninfo_quote(v)}" for k, v in parts.items())


def _conninfo_quote(value: str) -> str:
    if value and not any(ch.isspace() or ch in "'\\" for ch in value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def session_options(
    application_name: str, statement_timeout_s: int, lock_timeout_s: int | None = None
) -> dict[str, Any]:
    """Connection parameters that fix the session settings at connect time."""
    options = f"-c statement_timeout={statement_timeout_s * 1000}"
    if lock_timeout_s is not None:
        options += f" -c lock_timeout={lock_timeout_s * 1000}"
    return {"application_name": application_name[:63], "options": options}


def connect_params(
    params: dict[str, Any],
    *,
    application_name: str,
    statement_timeout_s: int,
    lock_timeout_s: int | None = None,
    connect_timeout_s: int = 10,
    autocommit: bool = True,
) -> psycopg.Connection:
    """Connect with explicit libpq parameters (used by the CLI, the stack and tests)."""
    import psycopg

    all_params = {
        **params,
        **session_options(application_name, statement_timeout_s, lock_timeout_s),
        "connect_timeout": connect_timeout_s,
    }
    where = f"{all_params.get('user')}@{all_params.get('host')}:{all_params.get('port')}/{all_params.get('dbname')}"
    try:
        return psycopg.connect(autocommit=autocommit, **all_params)
    except psycopg.OperationalError as exc:
        text = str(exc)
        if any(marker in text for marker in _AUTH_FAILURES):
            raise ConfigError(f"cannot log in to PostgreSQL as {where}: {text.strip()}") from exc
        raise TransientError(f"cannot reach PostgreSQL at {where}: {text.strip()}") from exc


def connect(
    conn_id: str,
    db: DatabaseConfig,
    *,
    job: str,
    ddl: bool = False,
    autocommit: bool = True,
) -> psycopg.Connection:
    """Open a session for ``job`` through Airflow connection ``conn_id``."""
    info = get_connection(conn_id)
    if info.conn_type not in (None, "postgres", "postgresql"):
        raise ConfigError(f"Airflow connection {conn_id!r} has type {info.conn_type!r}; expected postgres")
    log.info("connecting to PostgreSQL as %s (connection %s) for %s", info.login, conn_id, job)
    return connect_params(
        libpq_params(info),
        application_name=f"{db.application_name}:{job}",
        statement_timeout_s=db.statement_timeout_s,
        lock_timeout_s=db.lock_timeout_s if ddl else None,
        connect_timeout_s=db.connect_timeout_s,
        autocommit=autocommit,
    )
