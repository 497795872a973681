"""Resolve Airflow connections, the same way inside a task and from the CLI.

The CLI must work while Airflow is down, so it must not need the Airflow API or
metadata database. Airflow's own lookup already tries ``AIRFLOW_CONN_<ID>`` environment
variables and the configured secrets backend first; an on-call engineer exports the
same variables the deployment uses (the local stack writes them to
``var/secrets/pgops.env``) and the CLI finds the same connections as the DAGs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgops.errors import ConfigError

if TYPE_CHECKING:
    from airflow.sdk import Connection


@dataclass(frozen=True)
class ConnectionInfo:
    """The parts of an Airflow connection pgops uses. ``repr`` never shows the password."""

    conn_id: str
    conn_type: str | None
    host: str | None
    port: int | None
    login: str | None
    password: str | None = field(repr=False)
    schema: str | None
    extra: dict[str, Any] = field(default_factory=dict)


def get_connection(conn_id: str) -> ConnectionInfo:
    """Look up ``conn_id`` through Airflow; a missing connection is a ConfigError."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException as exc:
        raise ConfigError(
            f"Airflow connection {conn_id!r} is not defined; define it in Airflow or export "
            f"AIRFLOW_CONN_{conn_id.upper()} (see README, 'Connections')"
        ) from exc
    return ConnectionInfo(
        conn_id=conn_id,
        conn_type=conn.conn_type,
        host=conn.host,
        port=conn.port,
        login=conn.login,
        password=conn.password,
        schema=conn.schema,
        extra=_extra(conn_id, conn),
    )


def _extra(conn_id: str, conn: Connection) -> dict[str, Any]:
    """The connection's extra. One that is not a JSON object is a ConfigError: Airflow
    would log it and return {}, silently dropping every setting in it."""
    if conn.extra:
        try:
            parsed = json.loads(conn.extra)
        except ValueError as exc:
            raise ConfigError(f"Airflow connection {conn_id!r}: its extra is not JSON ({exc})") from exc
        if not isinstance(parsed, dict):
            raise ConfigError(f"Airflow connection {conn_id!r}: its extra must be a JSON object, not "
                              f"{type(parsed).__name__}")
    return dict(conn.extra_dejson or {})  # Airflow's own parse, which also masks its secrets in logs
