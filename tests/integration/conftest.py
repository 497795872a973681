"""Integration fixtures: real PostgreSQL clusters and a real S3-compatible server,
started here, never the ``./dev up`` stack (see servers.py)."""

from __future__ import annotations

import pytest

from pgops.postgres.cluster import free_port

from .servers import make_fixia, start_cluster


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def fixia():
    """A PostgreSQL 15 cluster with the Fixia database at scale 1 (read-mostly: tests
    that change data use their own cluster)."""
    cluster = start_cluster()
    try:
        yield make_fixia(cluster, scale=1)
    finally:
        cluster.destroy()


@pytest.fixture
def fixia_conns(fixia, monkeypatch):
    """Airflow connections for the job roles, as AIRFLOW_CONN_* variables."""
    for key, value in fixia.airflow_conn_env().items():
        monkeypatch.setenv(key, value)
    return fixia


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on a free loopback port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated SQLite metadata database in the tests' own AIRFLOW_HOME."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy(), timeout=600)
