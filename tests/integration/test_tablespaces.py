"""A cluster with a tablespace: pgops does not back tablespaces up, and says so at once
(a ConfigError, exit 2) at preflight and at the start of a full backup, never a retry."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from pgops.backup import basebackup
from pgops.errors import ConfigError
from pgops.monitoring import preflight
from pgops.postgres.cluster import chown_to_server_user

from .servers import fixia_with_local_repo


@pytest.fixture(scope="module")
def with_tablespace(tmp_path_factory):
    with fixia_with_local_repo(tmp_path_factory.mktemp("tablespaces")) as (server, config, repo):
        location = server.cluster.base / "ts_fast"
        location.mkdir()
        chown_to_server_user(location)
        with server.superuser() as conn:
            conn.execute(f"CREATE TABLESPACE ts_fast LOCATION '{location}'")
            conn.execute("CREATE TABLE public.hot (id int) TABLESPACE ts_fast")
        yield server, config, repo, location


def test_preflight_names_the_tablespace(with_tablespace):
    _, config, _, location = with_tablespace
    report = preflight.run(config)
    (check,) = [c for c in report.checks if c.job == "backup" and c.check == "tablespaces"]
    assert check.verdict == "failed" and f"ts_fast ({location})" in check.message, check
    with pytest.raises(ConfigError, match=rf"ts_fast \({location}\)"):
        preflight.enforce(report)


def test_a_full_backup_refuses_at_once_without_a_retry(with_tablespace, tmp_path):
    """Before: pg_basebackup's refusal was a TransientError (exit 75), retried by Airflow."""
    _, config, repo, _ = with_tablespace
    config_file = tmp_path / "pgops.yaml"
    config_file.write_text(yaml.safe_dump({"repository": {"url": str(repo.root)},
                                           "backup": {"spool_dir": str(tmp_path / "spool")}}))
    proc = subprocess.run([sys.executable, "-m", "pgops", "--config", str(config_file), "backup", "full"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "ConfigError: the cluster has tablespaces besides pg_default and pg_global: ts_fast" in proc.stderr
    assert repo.list() == [], "refused before any work: nothing stored, not even the repository identity"


def test_pg_basebackups_own_refusal_is_a_config_error(with_tablespace, monkeypatch):
    """A tablespace created after the check: pg_basebackup refuses, and that is no retry
    either (runs last: it leaves the repository claimed)."""
    _, config, repo, _ = with_tablespace
    monkeypatch.setattr(basebackup, "refuse_tablespaces", lambda conn: None)
    with pytest.raises(ConfigError, match="can only write single tablespace to stdout"):
        basebackup.run_full_backup(config, repo)
