"""The local stack's main job: the restore drill DAG stays paused until a backup exists,
and the drill's verdict, RTO and RPO are printed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from pgops.devstack.stack import DRILL_DAG, Stack

ROOT = Path(__file__).resolve().parents[2]


def fake_stack(tmp_path: Path) -> tuple[Stack, list[tuple[str, ...]]]:
    (tmp_path / "dags").mkdir()
    for dag in sorted((ROOT / "dags").glob("pgops_*.py")):
        shutil.copy(dag, tmp_path / "dags" / dag.name)
    stack = Stack(root=tmp_path)
    calls: list[tuple[str, ...]] = []
    listed = [{"dag_id": p.stem} for p in (tmp_path / "dags").glob("pgops_*.py")]

    def airflow(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        calls.append(args)
        out = json.dumps(listed if args[:2] == ("dags", "list") else [])
        return subprocess.CompletedProcess(args, 0, stdout=out + "\n", stderr="")

    stack._airflow = airflow  # type: ignore[method-assign]
    stack._step = lambda what: None  # type: ignore[method-assign]
    return stack, calls


def unpaused(calls) -> set[str]:
    return {c[2] for c in calls if c[:2] == ("dags", "unpause")}


def test_the_drill_dag_stays_paused_until_a_backup_exists(tmp_path):
    stack, calls = fake_stack(tmp_path)
    stack._wait_dags_listed()
    assert DRILL_DAG not in unpaused(calls)
    assert {"pgops_full_backup", "pgops_wal_shipping"} <= unpaused(calls)

    marker = stack.repository / "backups" / "20261201T010000Z" / "backup.json"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    calls.clear()
    stack._wait_dags_listed()
    assert DRILL_DAG in unpaused(calls)


def test_the_drills_verdict_rto_and_rpo_are_printed(tmp_path):
    stack, _ = fake_stack(tmp_path)
    printed: list[str] = []
    stack._step = printed.append  # type: ignore[method-assign]
    evidence = stack.repository / "backups" / "20261201T010000Z" / "verification" / "20261201T020000Z.json"
    evidence.parent.mkdir(parents=True)
    evidence.write_text(json.dumps({"backup_id": "20261201T010000Z", "verdict": "passed", "rto_s": 3.7,
                                    "rpo": {"achieved_rpo_s": 0.5, "last_replayed_commit": "t1",
                                            "promised_until": "t2"}, "checks": []}))
    stack.print_drill()
    (line,) = printed
    assert "PASSED" in line and "RTO 3.7 s" in line and "RPO 0.5 s" in line and "20261201T010000Z" in line
