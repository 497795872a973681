"""Resolve Airflow connections, the same way inside a task and from the CLI.

The CLI must work while Airflow is down, so it must not need the Airflow API or
metadata database. Airflow's own lookup already tries ``AIRFLOW_CONN_<ID>`` environment
variables and the configured secrets backend first; an on-call engineer exports the
same variables the deployment uses (the local stack writes them to
``var/secrets/pgops.env``) and the CLI finds the same connections as the DAGs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pgops.errors import ConfigError


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
        extra=dict(conn.extra_dejson or {}),
    )
