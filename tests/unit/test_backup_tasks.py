"""The backup DAGs' task entry points: what they refuse before touching anything."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
import yaml
from airflow.sdk.exceptions import AirflowSkipException

from pgops.backup import tasks
from pgops.errors import UnsafeOperation

NOW = datetime.now(timezone.utc)


@pytest.fixture
def config_env(tmp_path, monkeypatch):
    config = tmp_path / "pgops.yaml"
    config.write_text(yaml.safe_dump({"repository": {"url": str(tmp_path / "repo")}}))
    monkeypatch.setenv("PGOPS_CONFIG", str(config))
    return tmp_path / "repo"


@pytest.mark.parametrize("context, words", [
    ({"dag_run": SimpleNamespace(run_type="backfill"), "data_interval_end": NOW}, "backfill"),
    ({"dag_run": SimpleNamespace(run_type="manual"), "data_interval_end": NOW - timedelta(days=3)}, "ended at"),
])
def test_prune_does_nothing_in_backfills_and_stale_runs(config_env, context, words):
    with pytest.raises(AirflowSkipException, match=words):
        tasks.prune(context)
    assert not config_env.exists(), "a skipped prune must not even open the repository"


def test_prune_plans_against_the_run_time_never_the_wall_clock():
    due = datetime(2026, 11, 20, 3, 0, tzinfo=timezone.utc)
    assert tasks.run_time({"data_interval_end": due, "dag_run": SimpleNamespace(run_after=NOW)}) == due
    assert tasks.run_time({"data_interval_end": None, "dag_run": SimpleNamespace(run_after=due)}) == due
    with pytest.raises(UnsafeOperation, match="wall clock"):
        tasks.run_time({"data_interval_end": None, "dag_run": SimpleNamespace()})


def test_a_dry_run_takes_no_backup(config_env):
    context = {"dag_run": SimpleNamespace(run_type="manual"), "data_interval_end": NOW,
               "params": {"dry_run": True}}
    with pytest.raises(AirflowSkipException, match="dry run"):
        tasks.full_backup(context)
    assert not config_env.exists()
