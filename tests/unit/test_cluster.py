from __future__ import annotations

from pathlib import Path

import pytest

from pgops.errors import ConfigError
from pgops.postgres import cluster
from pgops.postgres.cluster import LocalCluster, _conf_value
from pgops.postgres.session import libpq_params, session_options
from pgops.connections import ConnectionInfo


def test_server_commands_run_as_postgres_when_root(monkeypatch):
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 0)
    assert cluster.as_server_user(["pg_ctl", "status"]) == ["runuser", "-u", "postgres", "--", "pg_ctl", "status"]
    monkeypatch.setattr(cluster.os, "geteuid", lambda: 1000)
    assert cluster.as_server_user(["pg_ctl", "status"]) == ["pg_ctl", "status"]


def test_conf_values_are_quoted_safely():
    assert _conf_value(True) == "on"
    assert _conf_value(5) == "5"
    assert _conf_value("it's") == "'it''s'"


def test_missing_binaries_say_what_to_install(monkeypatch):
    monkeypatch.setenv("PGOPS_PG_BINDIR", "/nonexistent")
    with pytest.raises(ConfigError, match="install Debian's postgresql-99"):
        cluster.find_bindir(99)


def test_layout_of_a_cluster_directory(tmp_path: Path):
    c = LocalCluster(tmp_path, 5999)
    assert c.datadir == tmp_path / "data"
    assert c.superuser_params()["host"] == str(tmp_path / "run")


def test_session_settings_are_fixed_at_connect():
    opts = session_options("pgops:backup", 300, 5)
    assert opts["application_name"] == "pgops:backup"
    assert opts["options"] == "-c statement_timeout=300000 -c lock_timeout=5000"
    assert "lock_timeout" not in session_options("x", 1)["options"]


def test_libpq_params_from_an_airflow_connection():
    info = ConnectionInfo("c", "postgres", "db.example", 6432, "u", "secret", "fixia", {"sslmode": "require"})
    params = libpq_params(info)
    assert params == {"host": "db.example", "port": 6432, "user": "u", "password": "secret",
                      "dbname": "fixia", "sslmode": "require"}
    assert "secret" not in repr(info)
