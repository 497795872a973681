"""Open database sessions the pgops way.

Every session sets ``application_name`` (so pg_stat_activity says which pgops job it
is), ``statement_timeout``, and for DDL ``lock_timeout``; passwords go to libpq as
parameters, never into a logged string. Driver errors become pgops errors: an
unreachable server is transient (Airflow retries), bad credentials are a ConfigError.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from pgops.connections import ConnectionInfo, get_connection
from pgops.errors import ConfigError, TransientError

if TYPE_CHECKING:
    import psycopg

    from pgops.config import DatabaseConfig

log = logging.getLogger(__name__)

_AUTH_FAILURES = ("password authentication failed", "no pg_hba.conf entry", "role \"", "does not exist")


#: libpq keywords pgops sets itself, so a connection's extra may not: what sets each
_SET_BY_PGOPS = {
    "host": "the connection's host",
    "port": "the connection's port",
    "user": "the connection's login",
    "password": "the connection's password",
    "dbname": "the connection's schema",
    "application_name": "pgops, per job from database.application_name",
    "connect_timeout": "database.connect_timeout_s",
    "replication": "pg_basebackup and pg_receivewal",
}


# Keywords the libpq bundled with psycopg knows but PostgreSQL 15's does not: the same
# conninfo also goes to PostgreSQL 15's pg_basebackup and pg_receivewal, which would stop
# on them ("invalid connection option") after pgops had accepted them.
_NEWER_THAN_LIBPQ_15 = frozenset({
    "require_auth", "sslcertmode", "load_balance_hosts", "gssdelegation",  # 16
    "sslnegotiation",  # 17
    "min_protocol_version", "max_protocol_version", "sslkeylogfile", "scram_client_key", "scram_server_key",
    "oauth_issuer", "oauth_client_id", "oauth_client_secret", "oauth_scope",  # 18
})


@functools.cache
def _libpq_keywords() -> dict[str, str]:
    """Every connection keyword both the linked libpq and PostgreSQL 15's know, with its
    display character ("*": a secret such as sslpassword, "D": a debug option)."""
    from psycopg import pq

    return {opt.keyword.decode(): opt.dispchar.decode() for opt in pq.Conninfo.get_defaults()
            if opt.keyword.decode() not in _NEWER_THAN_LIBPQ_15}


def _extra_params(conn: ConnectionInfo) -> dict[str, str]:
    """The connection's extra as libpq keywords, each passed on (sslmode, sslrootcert,
    target_session_attrs, options, keepalives_idle, ...). An extra libpq does not know,
    one pgops sets itself, or a secret (it would show on pg_basebackup's command line) is
    refused, naming it: never dropped."""
    known = _libpq_keywords()
    params: dict[str, str] = {}
    refused = []
    for key, value in sorted(conn.extra.items()):
        if key not in known:
            refused.append(f"{key} (not a libpq connection parameter)")
        elif key in _SET_BY_PGOPS:
            refused.append(f"{key} (set by {_SET_BY_PGOPS[key]})")
        elif known[key] in ("*", "D"):
            refused.append(f"{key} (a secret or debug parameter)")
        elif isinstance(value, (dict, list)):
            refused.append(f"{key} (not a single value)")
        elif value is not None:
            params[key] = str(value)
    if refused:
        raise ConfigError(f"Airflow connection {conn.conn_id!r} has extras pgops cannot pass to libpq: "
                          f"{'; '.join(refused)}. Remove them from its extra (libpq's parameters: "
                          "https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-PARAMKEYWORDS)")
    return params


def libpq_params(conn: ConnectionInfo) -> dict[str, Any]:
    """libpq keyword parameters for an Airflow postgres connection: its fields, then
    every libpq parameter in its extra (see :func:`_extra_params`)."""
    params: dict[str, Any] = {
        "host": conn.host or "localhost",
        "port": conn.port or 5432,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema or "postgres",
        **_extra_params(conn),
    }
    return {k: v for k, v in params.items() if v is not None}


def conninfo_string(conn: ConnectionInfo, application_name: str) -> str:
    """A libpq conninfo string for command-line tools (pg_basebackup, pg_receivewal),
    quoted by psycopg's ``make_conninfo``.

    The password is left out: pass it in PGPASSWORD, never on a command line. So is the
    database: a physical replication connection has none.
    """
    from psycopg.conninfo import make_conninfo

    params = {k: v for k, v in libpq_params(conn).items() if k not in ("password", "dbname")}
    return make_conninfo(**params, application_name=application_name)


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

    session = session_options(application_name, statement_timeout_s, lock_timeout_s)
    if params.get("options"):  # the connection's own options first: pgops's timeouts win
        session["options"] = f"{params['options']} {session['options']}"
    all_params = {**params, **session, "connect_timeout": connect_timeout_s}
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
