"""Every DAG file imports cleanly and follows the pgops conventions."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((ROOT / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_dag_file_defines_a_dag(dagbag):
    assert DAG_FILES, "no DAG files found"
    defined = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    assert defined == {path.name for path in DAG_FILES}


def test_dag_ids_match_file_names(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert Path(dag.fileloc).stem == dag_id


def test_dag_conventions(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert "pgops" in dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 200, f"{dag_id}: doc_md is its runbook"
        assert dag.catchup is False, f"{dag_id}: catchup must be off"
        # Every pgops DAG reads or changes the database or the repository: one run at a time.
        assert dag.max_active_runs == 1, dag_id


def test_task_conventions(dagbag):
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            where = f"{dag_id}.{task.task_id}"
            assert task.owner == "pgops", where
            assert task.execution_timeout is not None, where
            assert task.retries >= 1, where
            assert task.retry_policy is not None, where


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_files_do_no_heavy_imports_at_parse_time(path):
    """psycopg and boto3 belong inside task functions, never at a DAG file's top level."""
    import ast

    tree = ast.parse(path.read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = set()
    for node in top_level:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        else:
            names.add(node.module or "")
    heavy = {n for n in names if n.split(".")[0] in {"psycopg", "psycopg2", "boto3", "botocore", "zstandard"}}
    assert heavy == set()
    airflow_imports = {n for n in names if n.startswith("airflow")}
    assert airflow_imports <= {"airflow.sdk"}, "authoring imports come only from airflow.sdk"


def test_wal_shipping_has_a_pool_of_its_own(dagbag):
    """Full backups, pruning and verification share the one slot of pgops_backup; WAL
    shipping has its own pool, so it keeps its schedule while a long full backup runs."""
    from pgops.orchestration import BACKUP_POOL, WAL_POOL

    assert BACKUP_POOL != WAL_POOL
    full, wal = dagbag.dags["pgops_full_backup"], dagbag.dags["pgops_wal_shipping"]
    assert {t.pool for t in full.tasks} == {BACKUP_POOL}
    assert {t.pool for t in wal.tasks} == {WAL_POOL}
    assert {t.pool_slots for t in full.tasks + wal.tasks} == {1}
    assert [t.task_id for t in full.topological_sort()] == ["full_backup", "prune", "verify"]


STATEFUL_TASKS = {
    "pgops_wal_shipping": {"ship_wal"},  # the spool
    "pgops_restore_verification": {"prepare_scratch", "verify_restore", "cleanup_scratch"},  # the scratch server
}


def test_every_stateful_task_runs_on_the_configured_queue(dagbag):
    """Tasks whose state lives on the worker's disk run on workers.stateful_queue, so a
    retry on the Celery executor finds its spool or scratch server; the rest do not."""
    from pgops.config import load_config

    queue = load_config().workers.stateful_queue
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            stateful = task.task_id in STATEFUL_TASKS.get(dag_id, set())
            assert (task.queue == queue) == stateful, f"{dag_id}.{task.task_id} on queue {task.queue!r}"


def test_backup_and_restore_dags_refuse_backfills(dagbag):
    """A backfill of a backup DAG would make green runs that took no backup: the UI
    offers none and the API refuses them."""
    for dag_id in ("pgops_full_backup", "pgops_wal_shipping", "pgops_restore_verification"):
        allowed = {str(getattr(t, "value", t)) for t in dagbag.dags[dag_id].allowed_run_types or ()}
        assert allowed, f"{dag_id} allows every run type"
        assert "backfill" not in allowed and {"scheduled", "manual"} <= allowed, dag_id


def test_target_time_param_is_a_date_time(dagbag):
    """The trigger form checks target_time as a JSON-schema date-time before the run starts."""
    from airflow.sdk.definitions.param import ParamValidationError

    params = dagbag.dags["pgops_restore_verification"].params
    assert params.get_param("target_time").schema.get("format") == "date-time"
    params.get_param("target_time").resolve("2026-11-25T03:00:00+00:00")
    with pytest.raises(ParamValidationError):
        params.get_param("target_time").resolve("yesterday at three")


def test_the_migration_dag_runs_only_when_asked(dagbag):
    """pgops_db_migrate changes the database's objects: manual runs only (no schedule, no
    backfill), and its action is one of the three the form offers."""
    dag = dagbag.dags["pgops_db_migrate"]
    assert type(dag.timetable).__name__ == "NullTimetable"
    assert {str(getattr(t, "value", t)) for t in dag.allowed_run_types} == {"manual"}
    assert dag.params.get_param("action").schema["enum"] == ["upgrade", "downgrade", "current"]
    assert dag.params["action"] == "upgrade" and dag.params["revision"] is None
