"""Real servers for integration tests: PostgreSQL 15 clusters in temporary directories on
free ports (run as the postgres OS user) and an S3-compatible HTTP server (moto in
server mode) on a free loopback port. They never use the ``./dev up`` stack."""

from __future__ import annotations

import json
import secrets
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pgops.devstack import seed
from pgops.postgres.cluster import FIXIA_HBA_LINES, FIXIA_SERVER_SETTINGS, LocalCluster, free_port
from pgops.postgres.session import connect_params

ANCHOR = datetime(2026, 11, 1, tzinfo=timezone.utc)


@dataclass
class FixiaServer:
    cluster: LocalCluster
    dbname: str
    passwords: dict[str, str] = field(repr=False)

    def superuser(self, dbname: str | None = None):
        return connect_params(self.cluster.superuser_params(dbname or self.dbname),
                              application_name="pgops:test", statement_timeout_s=600)

    def as_role(self, role: str):
        return connect_params(
            {"host": "127.0.0.1", "port": self.cluster.port, "user": role,
             "password": self.passwords[role], "dbname": self.dbname},
            application_name="pgops:test", statement_timeout_s=60)

    def airflow_conn_env(self) -> dict[str, str]:
        return {
            f"AIRFLOW_CONN_{role.upper()}": json.dumps({
                "conn_type": "postgres", "host": "127.0.0.1", "port": self.cluster.port,
                "login": role, "password": password, "schema": self.dbname,
            })
            for role, password in self.passwords.items()
        }


def start_cluster(settings=None, hba=None) -> LocalCluster:
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="pgops-test-pg-")), free_port())
    cluster.initdb()
    cluster.configure(FIXIA_SERVER_SETTINGS if settings is None else settings,
                      FIXIA_HBA_LINES if hba is None else hba)
    cluster.start()
    return cluster


#: The configuration Fixia's servers are installed with: both migration lines.
FIXIA_SETUP = {"setup": {"lines": ["core", "fixia"]}}


def make_fixia(cluster: LocalCluster, scale: int | None) -> FixiaServer:
    """The Fixia reference database (application schema, roles, data at ``scale``), with
    pgops installed on it as an operator would: ``pgops db setup`` and ``upgrade``."""
    from pgops.config import parse_config

    with connect_params(cluster.superuser_params(), application_name="pgops:test", statement_timeout_s=60) as admin:
        seed.create_database(admin, "fixia")
    config = parse_config(FIXIA_SETUP)
    passwords = {role: secrets.token_urlsafe(16) for role in config.setup.roles().values()}
    server = FixiaServer(cluster, "fixia", passwords)
    with server.superuser() as conn:
        seed.apply_schema(conn)
        if scale:
            seed.generate(conn, scale, ANCHOR)
            seed.apply_schema(conn)
    seed.install_pgops(cluster.superuser_params("fixia"), config, passwords)
    return server




@contextmanager
def fixia_with_local_repo(tmp: Path):
    """A Fixia cluster of its own (schema and roles, no data), its job connections in
    the environment, and a config/repository under ``tmp``; all undone afterwards.
    For module-scoped fixtures, where pytest's monkeypatch is not available."""
    import os

    from pgops.config import parse_config
    from pgops.repository.local import LocalRepository

    cluster = start_cluster()
    saved = dict(os.environ)
    try:
        server = make_fixia(cluster, scale=None)
        os.environ.update(server.airflow_conn_env())
        config = parse_config({"repository": {"url": str(tmp / "repo")}, "backup": {"spool_dir": str(tmp / "spool")}})
        yield server, config, LocalRepository(tmp / "repo")
    finally:
        os.environ.clear()
        os.environ.update(saved)
        cluster.destroy()
