"""The backup DAGs, parsed from their files and run by Airflow's dag.test()."""

from __future__ import annotations

import pytest
import yaml

from pgops.backup import catalog
from pgops.repository.local import LocalRepository
from tests.conftest import ROOT

from .servers import make_fixia, start_cluster


@pytest.fixture
def backup_env(monkeypatch, tmp_path):
    cluster = start_cluster()
    try:
        server = make_fixia(cluster, scale=None)
        for key, value in server.airflow_conn_env().items():
            monkeypatch.setenv(key, value)
        config = tmp_path / "pgops.yaml"
        config.write_text(yaml.safe_dump({
            "repository": {"url": str(tmp_path / "repo")},
            "backup": {"spool_dir": str(tmp_path / "spool"), "slot_name": "pgops_dag_test"},
        }))
        monkeypatch.setenv("PGOPS_CONFIG", str(config))
        yield server, LocalRepository(tmp_path / "repo")
    finally:
        cluster.destroy()


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / f"{dag_id}.py"))
    assert bag.import_errors == {}
    return bag.get_dag(dag_id)


def states(run) -> dict[str, str]:
    return {ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state) for ti in run.get_task_instances()}


def test_full_backup_dag_commits_a_backup(backup_env, airflow_db):
    _, repo = backup_env
    run = load_dag("pgops_full_backup").test()
    assert run.state == "success"
    (entry,) = catalog.read_catalog(repo)
    assert entry.record is not None and entry.record.status == "complete"

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from pgops.orchestration import FULL_BACKUP_ASSET

    with create_session() as session:
        extras = session.scalars(
            select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == FULL_BACKUP_ASSET)).all()
    assert any(e.get("backup_id") == entry.backup_id and e["stored_size"] == entry.record.stored_size
               and e["start_lsn"] == entry.record.start_lsn for e in extras)


def test_wal_dag_is_red_on_a_chain_break_until_a_full_backup(backup_env, airflow_db):
    server, repo = backup_env
    dag = load_dag("pgops_wal_shipping")
    assert dag.test().state == "success"  # empty repository: the archive starts
    with server.superuser() as conn:  # someone drops the slot: WAL since is lost
        conn.execute("SELECT pg_drop_replication_slot('pgops_dag_test')")
    first = dag.test()
    assert first.state == "failed"
    assert states(first) == {"ship_wal": "success", "announce_chain_break": "success",
                             "fail_on_chain_break": "failed"}
    assert repo.list("wal/00000001")  # what could be shipped was shipped

    second = dag.test()  # the slot is back, the gap is not: still red until a full backup
    assert second.state == "failed"
    assert states(second) == {"ship_wal": "success", "announce_chain_break": "skipped",
                              "fail_on_chain_break": "failed"}  # no second backup asked for
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    from pgops.orchestration import WAL_CHAIN_BREAK_ASSET

    with create_session() as session:
        events = session.scalar(select(func.count()).select_from(AssetEvent).join(
            AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.uri == WAL_CHAIN_BREAK_ASSET))
    assert events == 1

    assert load_dag("pgops_full_backup").test().state == "success"  # what the Asset event starts
    third = dag.test()
    assert third.state == "success"
    assert states(third) == {"ship_wal": "success", "announce_chain_break": "skipped",
                             "fail_on_chain_break": "skipped"}


def test_a_stale_wal_run_does_nothing_and_stays_green(backup_env, airflow_db, monkeypatch):
    from pgops.backup import tasks

    monkeypatch.setattr(tasks, "_guard", lambda context, max_lag: "stale run (simulated)")
    run = load_dag("pgops_wal_shipping").test()
    assert run.state == "success"
    assert states(run) == {"ship_wal": "skipped", "announce_chain_break": "skipped",
                           "fail_on_chain_break": "skipped"}


def test_airflow_itself_refuses_a_backfill_of_the_backup_and_restore_dags(airflow_db):
    """What the UI and the REST API call to create a backfill refuses these DAGs
    (allowed_run_types): no green "Success" runs that took no backup."""
    from datetime import datetime, timezone

    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.exceptions import DagRunTypeNotAllowed
    from airflow.models.backfill import _create_backfill

    sync_bag_to_db(DagBag(dag_folder=str(ROOT / "dags")), "dags-folder", None)
    window = {"from_date": datetime(2026, 11, 1, tzinfo=timezone.utc), "to_date": datetime(2026, 11, 3, tzinfo=timezone.utc),
              "max_active_runs": 1, "reverse": False, "dag_run_conf": None, "triggering_user_name": "test"}
    for dag_id in ("pgops_full_backup", "pgops_wal_shipping", "pgops_restore_verification"):
        with pytest.raises(DagRunTypeNotAllowed, match="does not allow backfill runs"):
            _create_backfill(dag_id=dag_id, **window)
