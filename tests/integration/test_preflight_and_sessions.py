"""Preflight and session handling against real servers."""

from __future__ import annotations

import json
import subprocess

import pytest

from pgops.config import PgopsConfig, parse_config
from pgops.connections import get_connection
from pgops.errors import ConfigError, TransientError
from pgops.monitoring import preflight
from pgops.postgres.cluster import find_bindir, free_port
from pgops.postgres.session import connect, conninfo_string


def test_preflight_passes_on_the_fixia_server(fixia_conns, tmp_path):
    """Each failing case, built on a real server, is in test_preflight_jobs.py."""
    config = parse_config({"setup": {"lines": ["core", "fixia"]},
                           "restore_verification": {"scratch_dir": str(tmp_path / "scratch")}})
    report = preflight.run(config)
    assert report.ok, report.table()
    assert {c.verdict for c in report.checks} == {"passed", "not_applicable"}


def test_wrong_password_is_a_config_error(fixia, monkeypatch):
    env = json.loads(fixia.airflow_conn_env()["AIRFLOW_CONN_PGOPS_MONITOR"])
    env["password"] = "wrong-password"
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_MONITOR", json.dumps(env))
    with pytest.raises(ConfigError, match="password authentication failed"):
        connect("pgops_monitor", PgopsConfig().database, job="test")


def test_unreachable_server_is_transient(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_MONITOR", json.dumps({
        "conn_type": "postgres", "host": "127.0.0.1", "port": free_port(),
        "login": "pgops_monitor", "password": "x", "schema": "fixia"}))
    with pytest.raises(TransientError, match="cannot reach PostgreSQL"):
        connect("pgops_monitor", PgopsConfig().database, job="test")


def test_sessions_carry_application_name_and_timeouts(fixia_conns):
    with connect("pgops_maintenance", PgopsConfig().database, job="partitions", ddl=True) as conn:
        name, stmt, lock = conn.execute(
            "SELECT current_setting('application_name'), current_setting('statement_timeout'),"
            " current_setting('lock_timeout')").fetchone()
    assert (name, stmt, lock) == ("pgops:partitions", "5min", "5s")


def test_a_connections_libpq_extras_reach_the_session(fixia, monkeypatch):
    """Extras are passed on, not dropped: the connection's own options (a value with an
    escaped space) arrive, and pgops's timeouts still apply on top of them; a value with
    a space, a quote and a backslash is quoted for libpq."""
    env = json.loads(fixia.airflow_conn_env()["AIRFLOW_CONN_PGOPS_MONITOR"])
    env["extra"] = {"options": "-c DateStyle=SQL,\\ DMY -c statement_timeout=1", "keepalives_idle": 30,
                    "sslmode": "disable", "sslrootcert": "/nonexistent/it's a \\ dir/root.crt"}
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_MONITOR", json.dumps(env))
    with connect("pgops_monitor", PgopsConfig().database, job="test") as conn:
        style, stmt = conn.execute("SELECT current_setting('DateStyle'), current_setting('statement_timeout')").fetchone()
        params = conn.info.get_parameters()
    assert (style, stmt) == ("SQL, DMY", "5min")
    assert (params["keepalives_idle"], params["sslrootcert"]) == ("30", "/nonexistent/it's a \\ dir/root.crt")
    # the client tools' libpq (PostgreSQL 15's) takes the same conninfo (pg_isready: 3 if it cannot parse it)
    conninfo = conninfo_string(get_connection("pgops_monitor"), "pgops:test")
    assert subprocess.run([find_bindir() / "pg_isready", "--dbname", conninfo]).returncode == 0


def test_the_preflight_dag_runs_green_end_to_end(fixia_conns, airflow_db):
    """The DAG, parsed from its file and run by Airflow's in-process dag.test()."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    dagbag = DagBag(dag_folder=str(ROOT / "dags" / "pgops_preflight.py"))
    assert dagbag.import_errors == {}
    run = dagbag.get_dag("pgops_preflight").test()
    assert run.state == "success"


def test_the_preflight_dag_run_is_red_when_the_database_is_unfit(fixia, airflow_db, monkeypatch):
    """Same DAG, but the backup role lost REPLICATION: the run fails, without retries."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    for key, value in fixia.airflow_conn_env().items():
        monkeypatch.setenv(key, value)
    with fixia.superuser() as conn:
        conn.execute("ALTER ROLE pgops_backup NOREPLICATION")
    try:
        dag = DagBag(dag_folder=str(ROOT / "dags" / "pgops_preflight.py")).get_dag("pgops_preflight")
        run = dag.test()
        assert run.state == "failed"
        (ti,) = run.get_task_instances()
        assert ti.try_number == 1, "a config problem must not be retried"
    finally:
        with fixia.superuser() as conn:
            conn.execute("ALTER ROLE pgops_backup REPLICATION")
