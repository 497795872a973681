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


def test_backup_work_shares_the_one_slot_pool(dagbag):
    """WAL shipping, full backups, pruning and verification never run over each other:
    every task of the backup DAGs takes the one slot of the pgops_backup pool."""
    from pgops.orchestration import BACKUP_POOL

    for dag_id in ("pgops_full_backup", "pgops_wal_shipping"):
        dag = dagbag.dags[dag_id]
        assert {t.pool for t in dag.tasks} == {BACKUP_POOL}, dag_id
        assert {t.pool_slots for t in dag.tasks} == {1}, dag_id
    assert [t.task_id for t in dagbag.dags["pgops_full_backup"].topological_sort()] == \
        ["full_backup", "prune", "verify"]
