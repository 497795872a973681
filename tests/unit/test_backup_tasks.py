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


def test_a_dry_run_says_why_it_skipped_in_the_task_log(config_env, caplog):
    """Airflow logs only "Skipping task."; the reason must be in the log too."""
    context = {"dag_run": SimpleNamespace(run_type="manual", conf={"dry_run": True}), "data_interval_end": NOW,
               "params": {"dry_run": True}, "dag": SimpleNamespace(params={"dry_run": False})}
    with caplog.at_level("INFO"), pytest.raises(AirflowSkipException):
        tasks.full_backup(context)
    assert any("dry run: no backup is taken" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("task", [tasks.full_backup, tasks.prune, tasks.verify, tasks.ship_wal])
def test_unknown_params_are_refused_before_anything_is_done(config_env, task):
    """A typo (dryrun for dry_run) must not run with the defaults: a real backup and prune."""
    from pgops.errors import ConfigError

    context = {"dag_run": SimpleNamespace(run_type="manual", conf={"dryrun": True}), "data_interval_end": NOW,
               "params": {"dry_run": False, "dryrun": True}, "dag": SimpleNamespace(params={"dry_run": False})}
    with pytest.raises(ConfigError, match="unknown param.*'dryrun'.*'dry_run'"):
        task(context)
    assert not config_env.exists(), "nothing was opened"


def test_a_full_backups_result_carries_the_checksums_of_what_it_stored():
    import hashlib

    from pgops.backup import catalog
    from pgops.config import parse_config

    objects = {role: catalog.StoredObject(key=f"backups/20261201T010000Z/{name}", size=10 + i,
                                          sha256=hashlib.sha256(name.encode()).hexdigest())
               for i, (role, name) in enumerate([("data", "data.tar.zst"), ("index", "data.index.json"),
                                                 ("manifest", "backup_manifest.zst")])}
    record = catalog.BackupRecord(
        id="20261201T010000Z", label="pgops 20261201T010000Z", system_identifier="1", pg_version="15",
        server_version_num=150018, timeline=1, start_lsn="0/2000028", checkpoint_lsn="0/2000060",
        stop_lsn="0/2000138", start_wal_segment="000000010000000000000002",
        stop_wal_segment="000000010000000000000002", start_time=NOW, stop_time=NOW + timedelta(seconds=3),
        raw_size=100, stored_size=33, compression={}, objects=objects, pgops_version="0")
    summary = tasks.backup_summary(parse_config({}), record)
    assert summary["metadata"] == {"key": "backups/20261201T010000Z/backup.json",
                                   "sha256": hashlib.sha256(record.to_json()).hexdigest()}
    assert summary["objects"] == {role: {"key": o.key, "size": o.size, "sha256": o.sha256}
                                  for role, o in objects.items()}
